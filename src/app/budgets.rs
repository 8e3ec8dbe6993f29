//! Budgets as of a day: each budget's daily costs from one cost query (its scope as filters,
//! converted to its currency), the pure forecast of `budgets`, and the findings a reconcile
//! stores for budgets and commitments that crossed their thresholds.

use std::collections::BTreeMap;

use chrono::{Duration, NaiveDate, Utc};
use costledger_core::ExactSum;

use crate::budgets::{self, BudgetStatus};
use crate::config::{BudgetConfig, Config};
use crate::ledger::{CheckKind, Finding, LedgerError, LedgerStore};
use crate::query::aggregate::AggregateError;
use crate::query::{Filter, Grain, Query, Range, RangeBy};

use super::query::{QueryRunError, tag_normaliser};

#[derive(Debug, thiserror::Error)]
pub enum BudgetsError {
    #[error("budget '{name}': {source}")]
    Query { name: String, source: QueryRunError },
    #[error(transparent)]
    Ledger(#[from] LedgerError),
    #[error("budget '{name}': {source}")]
    Money { name: String, source: costledger_core::MoneyError },
    #[error(transparent)]
    Commitments(#[from] super::commitments::CommitmentsError),
}

/// The day budgets are evaluated as of by default: the day after the last day with data in
/// the ledger (bills arrive a day or two late), at most today.
pub async fn default_as_of(store: &dyn LedgerStore, config: &Config) -> Result<NaiveDate, LedgerError> {
    let today = Utc::now().with_timezone(&config.timezone).date_naive();
    let last = store
        .source_data_end()
        .await?
        .into_iter()
        .map(|(_, _, end)| (end - Duration::seconds(1)).with_timezone(&config.timezone).date_naive())
        .max();
    Ok(last.map_or(today, |d| (d + Duration::days(1)).min(today)))
}

/// One budget as of `as_of` (the first day not counted as actual).
pub async fn status(
    store: &dyn LedgerStore,
    config: &Config,
    b: &BudgetConfig,
    as_of: NaiveDate,
) -> Result<BudgetStatus, BudgetsError> {
    let norm = tag_normaliser(config);
    let (start, end, label) = b.period.containing(as_of - Duration::days(1));
    let history_start = start.min(as_of - Duration::days(35));
    let filters = b
        .scope
        .iter()
        .map(|f| Filter::parse(f, &norm))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| BudgetsError::Query { name: b.name.clone(), source: e.into() })?;
    let q = Query {
        metrics: vec![b.metric],
        group_by: Vec::new(),
        grain: Grain::Day,
        filters,
        range: Range { by: RangeBy::ChargePeriod, from: Some(history_start), to: Some(end) },
        currency: Some(b.currency.clone()),
        top: None,
    };
    let r = super::query::query(store, config, &q)
        .await
        .map_err(|source| BudgetsError::Query { name: b.name.clone(), source })?;
    let money = |source| BudgetsError::Money { name: b.name.clone(), source };
    let mut daily: BTreeMap<NaiveDate, ExactSum> = BTreeMap::new();
    for row in &r.rows {
        let Some(day) = row.bucket.as_deref().and_then(|d| NaiveDate::parse_from_str(d, "%Y-%m-%d").ok()) else {
            continue;
        };
        daily.entry(day).or_default().merge(&row.values[0].unwrap_or_default()).map_err(money)?;
    }
    let first_day = daily.keys().next().copied();
    let f = budgets::forecast(&daily, first_day, start, end, as_of).map_err(money)?;
    let actual_percent = budgets::percent(&f.actual, b.amount);
    let forecast_percent = budgets::percent(&f.forecast, b.amount);
    Ok(BudgetStatus {
        name: b.name.clone(),
        scope: b.scope.clone(),
        metric: b.metric.name(),
        period: label,
        start,
        last: end - Duration::days(1),
        as_of,
        currency: b.currency.clone(),
        amount: b.amount,
        actual: f.actual,
        forecast: f.forecast,
        actual_percent,
        forecast_percent,
        method: f.method,
        history_days: f.history_days,
        actual_crossed: budgets::crossed(actual_percent, &b.thresholds),
        forecast_crossed: budgets::crossed(forecast_percent, &b.thresholds),
    })
}

/// Every configured budget as of `as_of`, in config order.
pub async fn statuses(
    store: &dyn LedgerStore,
    config: &Config,
    as_of: NaiveDate,
) -> Result<Vec<BudgetStatus>, BudgetsError> {
    let mut out = Vec::with_capacity(config.budgets.len());
    for b in &config.budgets {
        out.push(status(store, config, b, as_of).await?);
    }
    Ok(out)
}

/// The findings of budgets that reached a threshold (actual or forecast), in the billing
/// period of their last complete day.
pub fn budget_findings(statuses: &[BudgetStatus]) -> Vec<Finding> {
    statuses
        .iter()
        .filter_map(|s| {
            let message = budgets::message(s)?;
            let day = s.as_of - Duration::days(1);
            let evidence = serde_json::json!({
                "amount": s.amount.to_string(),
                "actual": s.actual.to_string(),
                "forecast": s.forecast.to_string(),
                "actual_percent": s.actual_percent.map(|p| p.to_string()),
                "forecast_percent": s.forecast_percent.map(|p| p.to_string()),
                "budget_period": s.period,
                "as_of": s.as_of.to_string(),
                "method": s.method,
            });
            Some(Finding {
                check: CheckKind::Budget,
                period: day.format("%Y-%m").to_string(),
                billing_account_id: None,
                currency: Some(s.currency.clone()),
                amount: Some(s.actual),
                subject: Some(s.name.clone()),
                message,
                evidence: evidence.to_string(),
            })
        })
        .collect()
}

/// The findings of commitments used less than `checks.commitment_utilization_min` in the
/// month of `as_of`'s last complete day and the month before.
pub async fn commitment_findings(
    store: &dyn LedgerStore,
    config: &Config,
    as_of: NaiveDate,
) -> Result<Vec<Finding>, BudgetsError> {
    let last = as_of - Duration::days(1);
    let (start, _, _) = budgets::BudgetPeriod::Month.containing(last);
    let prev = start - Duration::days(1);
    let text = super::commitments::CommitmentsText {
        from: Some(prev.format("%Y-%m").to_string()),
        to: Some(last.format("%Y-%m").to_string()),
        grain: Some("month".into()),
        ..Default::default()
    };
    let minimum = config.checks.commitment_utilization_min;
    let utilisation = super::commitments::utilisation(store, config, &text).await?;
    Ok(utilisation
        .iter()
        .filter(|u| u.below_minimum)
        .map(|u| Finding {
            check: CheckKind::CommitmentUtilization,
            period: u.bucket.clone().unwrap_or_default(),
            billing_account_id: None,
            currency: Some(u.currency.clone()),
            amount: Some(u.unused),
            subject: Some(u.commitment.clone()),
            message: format!(
                "commitment {} ({}) used {}% of its cost, below the {}% minimum: {} {} unused",
                u.commitment,
                u.commitment_type.as_deref().unwrap_or("commitment"),
                u.utilisation_percent.map(|p| p.to_string()).unwrap_or_default(),
                minimum,
                u.unused.to_fixed(2),
                u.currency
            ),
            evidence: serde_json::json!({
                "used": u.used.to_string(),
                "unused": u.unused.to_string(),
                "utilisation_percent": u.utilisation_percent.map(|p| p.to_string()),
            })
            .to_string(),
        })
        .collect())
}

/// Findings the application layer adds to a reconcile: budgets and commitments, as of the
/// default day.
///
/// A budget that cannot be evaluated for want of an exchange rate is itself a finding (what is
/// missing and what to do), so one missing rate never stops the reconcile.
pub async fn extra_findings(store: &dyn LedgerStore, config: &Config) -> Result<Vec<Finding>, BudgetsError> {
    let as_of = default_as_of(store, config).await?;
    let mut evaluated = Vec::new();
    let mut out = Vec::new();
    for b in &config.budgets {
        match status(store, config, b, as_of).await {
            Ok(s) => evaluated.push(s),
            Err(e @ BudgetsError::Query { source: QueryRunError::Aggregate(AggregateError::Fx(_)), .. }) => {
                out.push(Finding {
                    check: CheckKind::Budget,
                    period: (as_of - Duration::days(1)).format("%Y-%m").to_string(),
                    billing_account_id: None,
                    currency: Some(b.currency.clone()),
                    amount: None,
                    subject: Some(b.name.clone()),
                    message: format!("cannot be evaluated: {e}"),
                    evidence: serde_json::json!({"error": e.to_string()}).to_string(),
                });
            }
            Err(e) => return Err(e),
        }
    }
    out.extend(budget_findings(&evaluated));
    out.extend(commitment_findings(store, config, as_of).await?);
    Ok(out)
}
