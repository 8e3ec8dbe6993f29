//! The weekly report job, for every edge: reconcile where needed, build the report, write its
//! files, remember what it said (for the restatement check), and record the run.

use std::path::{Path, PathBuf};

use chrono::{Datelike, Duration, NaiveDate, Utc};
use costledger_core::Totals;

use crate::config::{Config, ReportFormat};
use crate::ledger::{LedgerError, LedgerStore, RunOutcome, RunStatus};
use crate::reconcile::{ReconcileError, reconcile_with};
use crate::report::{Report, ReportError, build_weekly, default_week, week_totals, write_report};

#[derive(Debug, thiserror::Error)]
pub enum WeeklyError {
    #[error(transparent)]
    Reconcile(#[from] ReconcileError),
    #[error(transparent)]
    Report(#[from] ReportError),
    #[error(transparent)]
    Ledger(#[from] LedgerError),
    #[error(transparent)]
    Explain(#[from] super::explain::ExplainRunError),
    #[error(transparent)]
    Commitments(#[from] super::commitments::CommitmentsError),
    #[error(transparent)]
    Budgets(#[from] super::budgets::BudgetsError),
    #[error(transparent)]
    Query(#[from] super::query::QueryRunError),
    #[error(transparent)]
    UnitCost(#[from] super::unit_costs::UnitCostRunError),
}

/// How many changes per currency the report's "why it changed" table shows.
pub const WHY_TOP: usize = 5;

/// Build the weekly report of the week starting `monday` (reconciled beforehand): the stored
/// allocation's tables plus "why it changed" (previous week → this week by service, `explain`)
/// and, when the week has commitment lines, commitment utilisation and coverage.
pub async fn build(
    store: &dyn LedgerStore,
    config: &Config,
    monday: NaiveDate,
    currency: Option<&str>,
) -> Result<Report, WeeklyError> {
    let mut report = build_weekly(store, config, monday, currency).await?;
    let label = |d: NaiveDate| {
        let w = d.iso_week();
        format!("{}-W{:02}", w.year(), w.week())
    };
    let text = super::explain::ExplainText {
        from: label(monday - Duration::days(7)),
        to: label(monday),
        by: vec!["service".into()],
        metric: Some(config.report.metric.name().to_string()),
        currency: currency.map(str::to_string),
        ..Default::default()
    };
    let q = super::explain::parse(config, &text).map_err(super::explain::ExplainRunError::from)?;
    let e = super::explain::explain(store, config, &q).await?;
    let at = report.tables.iter().position(|t| t.name == "summary").map_or(0, |i| i + 1);
    report.tables.insert(at, crate::report::why_it_changed(&e, WHY_TOP));
    // The owners in the report's metric when it is not BilledCost (the allocation tables are
    // BilledCost): this week and the previous one, from the query engine's owner dimension.
    if config.report.metric != crate::query::Metric::BilledCost {
        let by_owner = crate::query::QueryText {
            metrics: vec![config.report.metric.name().to_string()],
            group_by: vec!["owner".into()],
            grain: Some("week".into()),
            from: Some(label(monday - Duration::days(7))),
            to: Some(label(monday)),
            ..Default::default()
        };
        let q = super::query::parse(config, &by_owner).map_err(super::query::QueryRunError::from)?;
        let r = super::query::query(store, config, &q).await?;
        let t = crate::report::owners_in_metric(&r, &label(monday - Duration::days(7)), &label(monday))
            .map_err(ReportError::from)?;
        report.tables.insert(at + 1, t);
    }
    // BilledCost and EffectiveCost side by side where they differ (commitments, credits).
    let both = crate::query::QueryText {
        metrics: vec!["BilledCost,EffectiveCost".into()],
        group_by: vec!["service".into()],
        from: Some(label(monday)),
        to: Some(label(monday)),
        ..Default::default()
    };
    let q = super::query::parse(config, &both).map_err(super::query::QueryRunError::from)?;
    let r = super::query::query(store, config, &q).await?;
    if let Some(t) = crate::report::billed_vs_amortised(&r) {
        report.tables.insert(at + 1, t);
    }
    // Unit costs of the week (report.unit_costs).
    for (i, u) in config.report.unit_costs.iter().enumerate() {
        let text = crate::query::QueryText {
            metrics: vec![u.cost.name().to_string()],
            group_by: u.by.clone(),
            from: Some(label(monday)),
            to: Some(label(monday)),
            ..Default::default()
        };
        let q = super::query::parse(config, &text).map_err(super::query::QueryRunError::from)?;
        let uc = super::unit_costs::unit_costs(store, config, &q, &u.metric, u.per, u.places).await?;
        report.tables.push(crate::report::unit_cost_table(&uc, i));
    }
    // Budgets as they stood at the end of the week.
    if !config.budgets.is_empty() {
        let statuses = super::budgets::statuses(store, config, monday + Duration::days(7)).await?;
        report.tables.insert(at + 1, crate::report::budget_table(&statuses));
    }
    // Commitments, when the week has any commitment lines.
    let week = label(monday);
    let text = super::commitments::CommitmentsText {
        from: Some(week.clone()),
        to: Some(week),
        by: vec!["service".into()],
        ..Default::default()
    };
    let c = super::commitments::commitments(store, config, &text).await?;
    if !c.utilisation.is_empty() {
        report.tables.extend(crate::report::commitment_tables(&c, WHY_TOP * 2));
    }
    Ok(report)
}

/// Which week a report covers when none is asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DefaultWeek {
    pub monday: NaiveDate,
    /// True when the ledger's data ends before last week, so the week is the last complete
    /// week with data rather than last week.
    pub by_data: bool,
}

/// The week a report covers by default: last week, or the last complete week with data when
/// the ledger's data ends before it.
pub async fn default_report_week(store: &dyn LedgerStore, config: &Config) -> Result<DefaultWeek, LedgerError> {
    let today = Utc::now().with_timezone(&config.timezone).date_naive();
    let data_end = store
        .source_data_end()
        .await?
        .into_iter()
        .map(|(_, _, end)| end.with_timezone(&config.timezone).date_naive())
        .max();
    let (monday, by_data) = default_week(today, data_end);
    Ok(DefaultWeek { monday, by_data })
}

/// What the weekly report job wrote.
#[derive(Debug, Clone)]
pub struct Written {
    pub paths: Vec<PathBuf>,
    /// BilledCost of the week, per currency (empty: the ledger has no charges that week).
    pub totals: Totals,
}

/// Reconcile where needed, build the weekly report of the week starting `monday`, write it to
/// `dir` in `formats`, remember what it said; the run is recorded as `report`.
pub async fn weekly(
    store: &dyn LedgerStore,
    config: &Config,
    monday: NaiveDate,
    dir: &Path,
    formats: &[ReportFormat],
    currency: Option<&str>,
) -> Result<Written, WeeklyError> {
    let run = store.start_run("report", None).await?;
    let result: Result<Written, WeeklyError> = async {
        let extra = super::budgets::extra_findings(store, config).await?;
        reconcile_with(store, config, None, false, extra).await?;
        let report = build(store, config, monday, currency).await?;
        let paths = write_report(&report, dir, formats)?;
        let totals = week_totals(&report);
        store.record_reported_week(&monday.to_string(), &totals).await?;
        Ok(Written { paths, totals })
    }
    .await;
    let outcome = match &result {
        Ok(_) => RunOutcome { status: RunStatus::Ok, attempts: 1, ..Default::default() },
        Err(e) => {
            RunOutcome { status: RunStatus::Failed, attempts: 1, error: Some(e.to_string()), ..Default::default() }
        }
    };
    store.finish_run(run, &outcome).await?;
    result
}
