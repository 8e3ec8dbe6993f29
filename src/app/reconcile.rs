//! A reconcile run, for every edge: allocate where needed, check, store findings, and record
//! the run (`runs.job = reconcile`) whatever the result.

use crate::config::Config;
use crate::ledger::{LedgerStore, RunOutcome, RunStatus};
use crate::reconcile::{ReconcileError, ReconcileSummary, reconcile_with};

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Reconcile(#[from] ReconcileError),
    #[error(transparent)]
    Budgets(#[from] super::budgets::BudgetsError),
}

/// Reconcile the selected billing periods (all when `None`); `force` recomputes allocations
/// whose fingerprint is unchanged; budgets and commitments that crossed their thresholds are
/// findings too. The run is recorded as `ok` (rows = findings) or `failed`.
pub async fn run(
    store: &dyn LedgerStore,
    config: &Config,
    selected: Option<&[costledger_core::BillingPeriod]>,
    force: bool,
) -> Result<ReconcileSummary, RunError> {
    let run = store.start_run("reconcile", None).await.map_err(ReconcileError::from)?;
    let result: Result<ReconcileSummary, RunError> = async {
        let extra = super::budgets::extra_findings(store, config).await?;
        Ok(reconcile_with(store, config, selected, force, extra).await?)
    }
    .await;
    let outcome = match &result {
        Ok(s) => RunOutcome { status: RunStatus::Ok, attempts: 1, rows: s.findings.len() as u64, ..Default::default() },
        Err(e) => {
            RunOutcome { status: RunStatus::Failed, attempts: 1, error: Some(e.to_string()), ..Default::default() }
        }
    };
    store.finish_run(run, &outcome).await.map_err(ReconcileError::from)?;
    result
}
