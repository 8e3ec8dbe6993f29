//! Retention, for every edge: staging loads of dead or silent processes are failed (their rows
//! deleted), runs of dead processes are closed as abandoned, and the lines of loads superseded
//! longer ago than `retention.superseded_loads_days` are deleted (the load rows stay, for
//! history).

use std::time::Duration;

use chrono::Utc;

use crate::config::Config;
use crate::ingest::{sweep_abandoned_runs, sweep_stale};
use crate::ledger::{LedgerError, LedgerStore, LoadId};

/// Fail staging loads left by an interrupted run (see [`sweep_stale`]).
pub async fn sweep(store: &dyn LedgerStore, config: &Config) -> Result<Vec<LoadId>, LedgerError> {
    let stale = Duration::from_secs(u64::from(config.retention.stale_staging_minutes) * 60);
    sweep_stale(store, stale).await
}

/// Close runs left `running` by a process that is gone.
pub async fn abandoned_runs(store: &dyn LedgerStore) -> Result<Vec<i64>, LedgerError> {
    sweep_abandoned_runs(store).await
}

/// Delete the lines of loads superseded longer ago than configured; returns the loads emptied.
pub async fn gc(store: &dyn LedgerStore, config: &Config) -> Result<u64, LedgerError> {
    let keep = chrono::Duration::days(i64::from(config.retention.superseded_loads_days));
    store.gc_superseded(Utc::now() - keep).await
}

/// What a retention run did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Retention {
    pub swept: Vec<LoadId>,
    pub superseded_removed: u64,
}

/// The retention job: sweep, then GC.
pub async fn run(store: &dyn LedgerStore, config: &Config) -> Result<Retention, LedgerError> {
    let swept = sweep(store, config).await?;
    let superseded_removed = gc(store, config).await?;
    Ok(Retention { swept, superseded_removed })
}
