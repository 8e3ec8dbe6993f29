//! One ingest run of one source, for every edge: the window, the [`Context`] from the config,
//! the load contract ([`crate::ingest`]) and one tally of what happened into a [`RunOutcome`].
//! The CLI prints the reports; the daemon retries, records metrics and reconciles.

use std::time::Duration;

use chrono::{DateTime, Utc};
use costledger_core::{BillingPeriod, Connector, ConnectorError, Context, PeriodWindow, Totals};
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::ingest::{IngestError, LoadOutcome, LoadReport, Progress, ingest_source_with};
use crate::ledger::{LedgerStore, RunOutcome, RunStatus};

/// The billing periods a run asks connectors for: the previous and the current month (bills
/// are restated into the following month).
pub fn window(now: DateTime<Utc>) -> PeriodWindow {
    let now = BillingPeriod::of(now);
    PeriodWindow { from: now.prev(), to: now }
}

/// How a run differs between edges.
#[derive(Default)]
pub struct Options<'a> {
    /// Cancelled: the run stops between batches and nothing partial is kept.
    pub cancel: CancellationToken,
    /// Back-off for a delivery that failed the same way before (the daemon sets it; a command
    /// typed by hand always retries).
    pub failed_backoff: Option<Duration>,
    /// Called with each delivery and its record count as it loads.
    pub progress: Option<Progress<'a>>,
}

/// The connector context for `source` from the config.
pub fn context(config: &Config, source: &str, opts: &Options<'_>) -> Context {
    let mut cx = Context::new(source);
    cx.batch_rows = config.batch_rows;
    cx.date_bounds = config.date_bounds;
    cx.read_limits = config.read_limits;
    cx.failed_backoff = opts.failed_backoff;
    cx.cancel = opts.cancel.clone();
    cx
}

/// What one attempt at a source gave: its deliveries' reports, or the source-level error.
pub type Attempt = Result<Vec<Result<LoadReport, IngestError>>, IngestError>;

/// Load every delivery `connector` offers for `source` in the current window, once.
pub async fn ingest(
    store: &dyn LedgerStore,
    config: &Config,
    source: &str,
    connector: &dyn Connector,
    opts: &Options<'_>,
) -> Attempt {
    let cx = context(config, source, opts);
    let specs = crate::query::rollup::RollupSpec::all(config);
    ingest_source_with(store, source, connector, window(Utc::now()), &cx, opts.progress, &specs).await
}

/// For a retrying edge: `Some(retry_after)` when the source, or one of its deliveries, failed
/// in a way worth retrying.
pub fn retry_hint(attempt: &Attempt) -> Option<Option<Duration>> {
    match attempt {
        Err(e) if e.is_retriable() => Some(e.retry_after()),
        Ok(reports) => {
            reports.iter().find_map(|x| x.as_ref().err().filter(|e| e.is_retriable()).map(|e| e.retry_after()))
        }
        _ => None,
    }
}

/// Everything a run loaded, summed.
#[derive(Debug, Clone, Default)]
pub struct Tally {
    pub outcome: RunOutcome,
    /// BilledCost of the loads created.
    pub totals: Totals,
    pub quarantined: u64,
    /// Parsable amounts of the quarantined rows.
    pub quarantined_totals: Totals,
    /// One message per failed delivery (or the source's own error).
    pub errors: Vec<String>,
}

impl Tally {
    pub fn ok(&self) -> bool {
        self.errors.is_empty()
    }
}

fn is_cancel(e: &IngestError) -> bool {
    matches!(
        e,
        IngestError::Connector { error: ConnectorError::Cancelled, .. }
            | IngestError::Listing { error: ConnectorError::Cancelled, .. }
    )
}

/// Tally an attempt into the run's outcome: `ok` when every delivery loaded or was skipped,
/// `cancelled` when the run was cancelled, `failed` otherwise (with every error).
pub fn tally(attempt: &Attempt, attempts: u32, cancelled: bool) -> Tally {
    let mut t =
        Tally { outcome: RunOutcome { status: RunStatus::Ok, attempts, ..Default::default() }, ..Default::default() };
    match attempt {
        Err(e) => {
            t.outcome.status = if cancelled || is_cancel(e) { RunStatus::Cancelled } else { RunStatus::Failed };
            t.errors.push(e.to_string());
        }
        Ok(reports) => {
            for r in reports {
                match r {
                    Ok(r) => {
                        if let LoadOutcome::Created { .. } = r.outcome {
                            t.outcome.loads_created += 1;
                            t.outcome.rows += r.rows;
                            t.quarantined += r.quarantined;
                            let _ = t.totals.merge(&r.totals);
                            let _ = t.quarantined_totals.merge(&r.quarantined_totals);
                        } else {
                            t.outcome.loads_skipped += 1;
                        }
                    }
                    Err(e) => t.errors.push(e.to_string()),
                }
            }
            if !t.errors.is_empty() {
                t.outcome.status = if cancelled { RunStatus::Cancelled } else { RunStatus::Failed };
            }
        }
    }
    if !t.errors.is_empty() {
        t.outcome.error = Some(t.errors.join("; "));
    }
    t
}

#[cfg(test)]
mod tests {
    use super::*;
    use rust_decimal::Decimal;

    fn report(outcome: LoadOutcome, rows: u64, quarantined: u64, usd: &str) -> Result<LoadReport, IngestError> {
        let mut totals = Totals::default();
        totals.add("USD", usd.parse::<Decimal>().expect("decimal")).expect("add");
        Ok(LoadReport {
            scope: "s".into(),
            description: "d".into(),
            outcome,
            records: rows + quarantined,
            rows,
            quarantined,
            rounded: 0,
            totals,
            quarantined_totals: Totals::default(),
        })
    }

    fn failed(scope: &str) -> Result<LoadReport, IngestError> {
        Err(IngestError::Connector {
            source_name: "src".into(),
            scope: scope.into(),
            error: ConnectorError::input(format!("{scope}:3"), "bad", "fix it"),
        })
    }

    #[test]
    fn created_loads_are_summed_skipped_ones_counted_and_failures_listed() {
        let attempt: Attempt = Ok(vec![
            report(LoadOutcome::Created { load: 1, superseded: None }, 10, 2, "1.10"),
            report(LoadOutcome::Skipped { existing: 1 }, 99, 0, "1000"),
            report(LoadOutcome::Created { load: 2, superseded: Some(1) }, 5, 0, "0.000000000000000000000000001"),
        ]);
        let t = tally(&attempt, 2, false);
        assert_eq!(t.outcome.status, RunStatus::Ok);
        assert_eq!((t.outcome.loads_created, t.outcome.loads_skipped, t.outcome.rows, t.quarantined), (2, 1, 15, 2));
        assert_eq!(t.outcome.attempts, 2);
        assert_eq!(t.totals.display(), "USD 1.100000000000000000000000001");
        assert!(t.ok() && t.outcome.error.is_none());

        let attempt: Attempt =
            Ok(vec![failed("a.csv"), report(LoadOutcome::Created { load: 3, superseded: None }, 1, 0, "2")]);
        let t = tally(&attempt, 1, false);
        assert_eq!(t.outcome.status, RunStatus::Failed);
        assert_eq!(t.outcome.loads_created, 1, "the other delivery still loaded");
        assert!(t.outcome.error.as_deref().is_some_and(|e| e.contains("a.csv")), "{:?}", t.outcome.error);
        assert_eq!(tally(&attempt, 1, true).outcome.status, RunStatus::Cancelled);
    }

    #[test]
    fn a_source_level_error_fails_the_run_and_a_cancelled_listing_cancels_it() {
        let listing = |error| -> Attempt { Err(IngestError::Listing { source_name: "src".into(), error }) };
        let t = tally(&listing(ConnectorError::Cancelled), 1, false);
        assert_eq!(t.outcome.status, RunStatus::Cancelled);
        let t = tally(&listing(ConnectorError::input("x", "no such bucket", "check it")), 3, false);
        assert_eq!(t.outcome.status, RunStatus::Failed);
        assert_eq!(t.outcome.attempts, 3);
        assert!(!t.ok());
    }
}
