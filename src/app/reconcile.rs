//! A reconcile run, for every edge: allocate where needed, check, store findings, and record
//! the run (`runs.job = reconcile`) whatever the result.

use crate::config::Config;
use crate::ledger::{LedgerStore, RunOutcome, RunStatus};
use crate::reconcile::{ReconcileError, ReconcileSummary, reconcile};

/// Reconcile the selected billing periods (all when `None`); `force` recomputes allocations
/// whose fingerprint is unchanged. The run is recorded as `ok` (rows = findings) or `failed`.
pub async fn run(
    store: &dyn LedgerStore,
    config: &Config,
    selected: Option<&[String]>,
    force: bool,
) -> Result<ReconcileSummary, ReconcileError> {
    let run = store.start_run("reconcile", None).await?;
    let result = reconcile(store, config, selected, force).await;
    let outcome = match &result {
        Ok(s) => RunOutcome { status: RunStatus::Ok, attempts: 1, rows: s.findings.len() as u64, ..Default::default() },
        Err(e) => {
            RunOutcome { status: RunStatus::Failed, attempts: 1, error: Some(e.to_string()), ..Default::default() }
        }
    };
    store.finish_run(run, &outcome).await?;
    result
}
