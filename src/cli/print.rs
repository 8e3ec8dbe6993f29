//! Printing what the application returned: load reports, reconcile summaries, findings.

use std::io::{IsTerminal, Write};
use std::process::ExitCode;
use std::time::Duration;

use costledger_core::{Connector, Delivery};
use indicatif::{ProgressBar, ProgressStyle};

use crate::app;
use crate::config::Config;
use crate::ingest::{IngestError, LoadOutcome, LoadReport};
use crate::ledger::{Finding, LedgerStore};
use crate::reconcile::ReconcileError;

pub(super) fn print_findings(findings: &[Finding]) {
    if findings.is_empty() {
        println!("no findings");
    }
    for f in findings {
        println!(
            "  [{}] {} {}{}: {}",
            f.check,
            f.period,
            f.billing_account_id.as_deref().map(|a| format!("account {a} ")).unwrap_or_default(),
            f.currency.as_deref().unwrap_or(""),
            f.message
        );
    }
}

pub(super) async fn reconcile_and_print(
    store: &dyn LedgerStore,
    config: &Config,
    selected: Option<&[costledger_core::BillingPeriod]>,
    force: bool,
) -> anyhow::Result<ExitCode> {
    let summary = match app::reconcile::run(store, config, selected, force).await {
        Ok(s) => s,
        Err(e) => {
            if let app::reconcile::RunError::Reconcile(ReconcileError::Conservation(_)) = &e {
                print_findings(&store.findings(None).await?);
            }
            return Err(e.into());
        }
    };
    if summary.periods.is_empty() {
        println!(
            "nothing to reconcile: the ledger has no billing periods{}",
            if selected.is_some() { " in that range" } else { "" }
        );
    }
    for p in &summary.periods {
        println!(
            "period {}{}: billed {}",
            p.period,
            if p.recomputed { " (allocation recomputed)" } else { " (allocation unchanged)" },
            p.billed.display()
        );
        println!("  allocated   {}", p.allocated.display());
        println!("  shared      {}", p.shared.display());
        println!("  unallocated {}", p.unallocated.display());
        for ((reason, cur), amt) in &p.by_reason {
            println!("    {reason:<20} {amt} {cur}");
        }
        println!("  conservation: allocated + shared + unallocated = billed, exactly");
    }
    for m in &summary.invoices_matched {
        println!(
            "invoice check: {} {} matches the ledger: {} {} (ledger {})",
            m.period, m.what, m.amount, m.currency, m.ledger
        );
    }
    println!("findings: {}", summary.findings.len());
    print_findings(&summary.findings);
    Ok(if summary.findings.is_empty() { ExitCode::SUCCESS } else { ExitCode::from(1) })
}

fn progress_bar() -> Option<ProgressBar> {
    if !std::io::stderr().is_terminal() {
        return None;
    }
    let pb = ProgressBar::new_spinner();
    pb.set_style(ProgressStyle::with_template("{spinner} {msg} {human_pos} records ({per_sec})").ok()?);
    pb.enable_steady_tick(Duration::from_millis(120));
    Some(pb)
}

/// Ingest one source and print what happened. Returns false when a delivery failed.
pub(super) async fn ingest_and_print(
    store: &dyn LedgerStore,
    config: &Config,
    source: &str,
    connector: &dyn Connector,
    job: &str,
) -> anyhow::Result<bool> {
    let swept = app::retention::sweep(store, config).await?;
    if !swept.is_empty() {
        println!("swept {} stale staging load(s) left by an interrupted run: {:?}", swept.len(), swept);
    }
    let run = store.start_run(job, Some(source)).await?;
    let pb = progress_bar();
    let progress = |d: &Delivery, n: u64| {
        if let Some(pb) = &pb {
            pb.set_message(d.scope.clone());
            pb.set_position(n);
        }
    };
    let opts = app::ingest::Options { progress: Some(&progress), ..Default::default() };
    let attempt = app::ingest::ingest(store, config, source, connector, &opts).await;
    if let Some(pb) = &pb {
        pb.finish_and_clear();
    }
    let tally = app::ingest::tally(&attempt, 1, false);
    store.finish_run(run, &tally.outcome).await?;
    let reports = attempt?;
    print_reports(source, &reports, &tally);
    let removed = app::retention::gc(store, config).await?;
    if removed > 0 {
        println!(
            "retention: deleted the lines of {removed} load(s) superseded more than {} days ago",
            config.retention.superseded_loads_days
        );
    }
    Ok(tally.ok())
}

fn print_reports(source: &str, reports: &[Result<LoadReport, IngestError>], tally: &app::ingest::Tally) {
    let mut advice: Vec<&'static str> = Vec::new();
    println!("source '{source}': {} deliver{}", reports.len(), if reports.len() == 1 { "y" } else { "ies" });
    if reports.is_empty() {
        println!("  nothing to load (no deliveries found: no .csv or .csv.gz files, or no objects or months)");
    }
    for r in reports {
        match r {
            Ok(r) => {
                let what = match &r.outcome {
                    LoadOutcome::Created { load, superseded: None } => format!("loaded    {} → load {load}", r.scope),
                    LoadOutcome::Created { load, superseded: Some(old) } => {
                        format!("restated  {} → load {load} replaces load {old}", r.scope)
                    }
                    LoadOutcome::Skipped { existing } => {
                        format!("skipped   {} (already current as load {existing})", r.scope)
                    }
                    LoadOutcome::Duplicate { existing } => {
                        format!("skipped   {} (loaded concurrently as load {existing})", r.scope)
                    }
                    LoadOutcome::SameBytesElsewhere { existing, scope } => {
                        format!(
                            "skipped   {} (the same bytes are already current as load {existing}, {scope})",
                            r.scope
                        )
                    }
                };
                println!("  {what}: {} rows, {} quarantined; BilledCost {}", r.rows, r.quarantined, r.totals.display());
                if r.records == 0 && matches!(r.outcome, LoadOutcome::Created { .. }) {
                    println!(
                        "    warning: {} has a header but no data rows; it now stands as an empty bill for its scope",
                        r.description
                    );
                }
                if r.rounded > 0 {
                    println!(
                        "    note: {} amount(s) had more than 28 decimal places and were rounded half-to-even",
                        r.rounded
                    );
                }
                if let LoadOutcome::Created { load, .. } = &r.outcome
                    && r.quarantined > 0
                {
                    println!("    see the quarantined rows with: costledger quarantine --load {load}");
                }
            }
            Err(e) => {
                println!("  FAILED    {e}");
                if !advice.contains(&e.advice()) {
                    advice.push(e.advice());
                }
            }
        }
    }
    if tally.outcome.loads_created > 0 {
        println!("loaded lines: BilledCost {}", tally.totals.display());
    } else if tally.ok() {
        println!("nothing new to load: every delivery is already current");
    }
    if tally.quarantined > 0 {
        println!("quarantined: {} rows (parsable amounts: {})", tally.quarantined, tally.quarantined_totals.display());
    }
    let failed = tally.errors.len();
    if failed > 0 {
        println!(
            "{failed} deliver{} failed; nothing of {} was loaded: {}.",
            if failed == 1 { "y" } else { "ies" },
            if failed == 1 { "it" } else { "them" },
            advice.join("; ")
        );
    }
    let _ = std::io::stdout().flush();
}

/// A query's answer on stdout in the chosen format (a table on a terminal, else CSV), with a
/// line on stderr saying what was read.
/// An answer printed in one of the read formats: the table on a terminal, else CSV; JSON as
/// the API serves it (amounts as strings).
fn print_answer<T: serde::Serialize + ?Sized>(
    value: &T,
    format: Option<super::QueryFormat>,
    table: impl FnOnce(&mut dyn Write) -> std::io::Result<()>,
    csv: impl FnOnce(&mut dyn Write) -> Result<(), csv::Error>,
) -> anyhow::Result<()> {
    use super::QueryFormat;
    let stdout = std::io::stdout();
    let format = format.unwrap_or(if stdout.is_terminal() { QueryFormat::Table } else { QueryFormat::Csv });
    let mut out = std::io::BufWriter::new(stdout.lock());
    match format {
        QueryFormat::Table => table(&mut out)?,
        QueryFormat::Csv => csv(&mut out)?,
        QueryFormat::Json => {
            serde_json::to_writer_pretty(&mut out, value)?;
            out.write_all(b"\n")?;
        }
    }
    out.flush()?;
    Ok(())
}

pub(super) fn print_query(
    r: &crate::query::aggregate::QueryResult,
    format: Option<super::QueryFormat>,
) -> anyhow::Result<()> {
    use crate::query::render;
    print_answer(r, format, |o| render::write_table(r, o), |o| render::write_csv(r, o))?;
    let from = match r.answered_from {
        crate::query::aggregate::AnsweredFrom::Rollups => "daily rollups",
        crate::query::aggregate::AnsweredFrom::Charges => "charges",
    };
    eprintln!(
        "{} charge lines matched ({from}); {} rows{}",
        r.lines,
        r.rows.len(),
        if r.rates_used.is_empty() { String::new() } else { format!("; rates: {}", r.rates_used.join("; ")) }
    );
    Ok(())
}

pub(super) fn print_explanation(
    e: &crate::explain::Explanation,
    format: Option<super::QueryFormat>,
) -> anyhow::Result<()> {
    use crate::explain::{write_csv, write_table};
    print_answer(e, format, |o| write_table(e, o), |o| write_csv(e, o))?;
    if !e.rates_used.is_empty() {
        eprintln!("rates: {}", e.rates_used.join("; "));
    }
    Ok(())
}

pub(super) fn print_unit_costs(
    u: &crate::unit_costs::UnitCosts,
    format: Option<super::QueryFormat>,
) -> anyhow::Result<()> {
    use crate::unit_costs::{write_csv, write_table};
    print_answer(u, format, |o| write_table(u, o), |o| write_csv(u, o))
}

pub(super) fn print_budgets(
    statuses: &[crate::budgets::BudgetStatus],
    format: Option<super::QueryFormat>,
) -> anyhow::Result<()> {
    use crate::budgets::{write_csv, write_table};
    print_answer(statuses, format, |o| write_table(statuses, o), |o| write_csv(statuses, o))
}

pub(super) fn print_commitments(
    c: &crate::commitments::Commitments,
    view: super::args::CommitmentView,
    format: Option<super::QueryFormat>,
) -> anyhow::Result<()> {
    use crate::commitments::{View, write_csv, write_table};
    let view = match view {
        super::args::CommitmentView::Utilisation => View::Utilisation,
        super::args::CommitmentView::Coverage => View::Coverage,
    };
    print_answer(c, format, |o| write_table(c, view, o), |o| write_csv(c, view, o))?;
    let low = c.utilisation.iter().filter(|u| u.below_minimum).count();
    if low > 0 {
        eprintln!("{low} commitment(s) below {}% utilisation", c.utilisation_minimum_percent);
    }
    Ok(())
}

/// What `rollup` (or `migrate`) built, and which loads are not worth a rollup.
pub(super) fn print_rollup_build(r: &app::query::RollupBuild) {
    for kind in crate::ledger::RollupKind::ALL {
        let built = r.built.iter().filter(|(_, k)| *k == kind).count();
        println!("built the {} rollups of {built} load(s)", kind.name());
        let skipped: Vec<String> =
            r.not_worth_it.iter().filter(|(_, k)| *k == kind).map(|(l, _)| l.to_string()).collect();
        if !skipped.is_empty() {
            println!(
                "no {} rollup for load(s) {}: their lines are nearly all distinct per day and dimension (a \
                 rollup would not be {} times smaller than their charges), so queries that need it read the charges",
                kind.name(),
                skipped.join(", "),
                crate::query::rollup::MIN_ROLLUP_COMPRESSION
            );
        }
    }
}
