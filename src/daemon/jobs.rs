//! One scheduled run: claim the tick (exactly once across replicas), take the job's lock
//! (never two at once), wait the jitter, execute with retries, record the run and metrics.
//! The lock is released on every path: the work runs in its own task, so a panic is caught
//! and reported, and a cancelled run still releases (or its connection closes).

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{Instrument, error, info, info_span, warn};

use super::schedule::{Backoff, Schedule, jitter};
use crate::app;
use crate::config::{Config, SourceConfig};
use crate::ledger::{LedgerStore, RunOutcome, RunStatus};

#[derive(Debug, Clone)]
pub enum JobKind {
    Ingest(Box<SourceConfig>),
    Report,
    Retention,
}

#[derive(Debug, Clone)]
pub struct JobSpec {
    /// `ingest`, `report`, `retention` (the `runs.job` column).
    pub name: &'static str,
    pub source: Option<String>,
    pub schedule: Schedule,
    pub jitter_secs: u64,
    pub kind: JobKind,
}

impl JobSpec {
    /// The job's identity for locks and overlap: `ingest:aws-payer`, `report`.
    pub fn key(&self) -> String {
        match &self.source {
            Some(s) => format!("{}:{s}", self.name),
            None => self.name.to_string(),
        }
    }
}

/// State every run shares.
pub struct Shared {
    pub store: Arc<dyn LedgerStore>,
    pub config: crate::api::ConfigCell,
    /// Jobs running in this process (a tick that finds its job here is skipped).
    pub running: Mutex<HashSet<String>>,
    /// Cancelled at shutdown: no new run starts, jitter and backoff waits end.
    pub stopping: CancellationToken,
    /// Cancelled when the grace period is over: running loads abort (atomically).
    pub abort: CancellationToken,
    pub tracker: TaskTracker,
}

impl Shared {
    pub fn config(&self) -> Arc<Config> {
        self.config.read().map(|c| c.clone()).unwrap_or_else(|p| p.into_inner().clone())
    }
}

/// Removes a job from `running` when the run ends, however it ends.
struct Running<'a> {
    set: &'a Mutex<HashSet<String>>,
    key: String,
}

impl Drop for Running<'_> {
    fn drop(&mut self) {
        if let Ok(mut s) = self.set.lock() {
            s.remove(&self.key);
        }
    }
}

fn outcome(status: RunStatus, error: Option<String>) -> RunOutcome {
    RunOutcome { status, attempts: 1, error, ..Default::default() }
}

/// Called by the scheduler at each firing.
pub async fn on_tick(shared: Arc<Shared>, spec: Arc<JobSpec>) {
    if shared.stopping.is_cancelled() {
        return;
    }
    let now = chrono::SubsecRound::trunc_subsecs(Utc::now(), 0);
    let tick = spec.schedule.tick_at_or_before(now).unwrap_or(now);
    let span = info_span!("job", job = spec.name, source = spec.source.as_deref().unwrap_or("-"), tick = %tick);
    run_tick(shared, spec, tick).instrument(span).await
}

pub async fn run_tick(shared: Arc<Shared>, spec: Arc<JobSpec>, tick: DateTime<Utc>) {
    let key = spec.key();
    let store = shared.store.clone();
    let source = spec.source.as_deref();
    let fresh = shared.running.lock().map(|mut s| s.insert(key.clone())).unwrap_or(false);
    if !fresh {
        warn!("skipped: the previous run of this job is still going");
        metrics::counter!("costledger_runs_total", "job" => spec.name, "status" => RunStatus::Skipped.as_str())
            .increment(1);
        if let Ok(Some(id)) = store.claim_run(spec.name, source, tick).await {
            let _ = store
                .finish_run(id, &outcome(RunStatus::Skipped, Some("the previous run was still going".into())))
                .await;
        }
        return;
    }
    let _running = Running { set: &shared.running, key: key.clone() };
    let run_id = match store.claim_run(spec.name, source, tick).await {
        Ok(Some(id)) => id,
        Ok(None) => {
            info!("tick already claimed by another replica");
            return;
        }
        Err(e) => {
            error!(error = %e, "cannot record the run (database unreachable?); skipping this tick");
            metrics::counter!("costledger_runs_total", "job" => spec.name, "status" => RunStatus::Failed.as_str())
                .increment(1);
            return;
        }
    };
    let lock = match store.try_job_lock(&key).await {
        Ok(Some(l)) => l,
        Ok(None) => {
            warn!("skipped: this job is still running on another replica");
            let _ = store
                .finish_run(run_id, &outcome(RunStatus::Skipped, Some("still running on another replica".into())))
                .await;
            metrics::counter!("costledger_runs_total", "job" => spec.name, "status" => RunStatus::Skipped.as_str())
                .increment(1);
            return;
        }
        Err(e) => {
            let _ = store
                .finish_run(run_id, &outcome(RunStatus::Failed, Some(format!("cannot take the job lock: {e}"))))
                .await;
            metrics::counter!("costledger_runs_total", "job" => spec.name, "status" => RunStatus::Failed.as_str())
                .increment(1);
            return;
        }
    };
    let wait = jitter(&key, tick, spec.jitter_secs);
    // Biased, shutdown first: with no jitter both branches are ready at once, and an unbiased
    // select started the job after shutdown half the time (`a_job_still_running_makes_its_next_tick_skip` flaked).
    let cancelled = tokio::select! {
        biased;
        _ = shared.stopping.cancelled() => true,
        _ = tokio::time::sleep(wait) => false,
    };
    let started = Instant::now();
    let result = if cancelled {
        outcome(RunStatus::Cancelled, Some("shutdown before the run started".into()))
    } else {
        let (sh, sp) = (shared.clone(), spec.clone());
        let span = tracing::Span::current();
        match tokio::spawn(async move { execute(sh, sp).await }.instrument(span)).await {
            Ok(o) => o,
            Err(e) => outcome(RunStatus::Failed, Some(format!("the job panicked: {e}"))),
        }
    };
    if let Err(e) = lock.release().await {
        warn!(error = %e, "releasing the job lock failed (it is released when its connection closes)");
    }
    let elapsed = started.elapsed();
    metrics::histogram!("costledger_run_duration_seconds", "job" => spec.name).record(elapsed.as_secs_f64());
    metrics::counter!("costledger_runs_total", "job" => spec.name, "status" => result.status.as_str()).increment(1);
    if let Some(s) = &spec.source {
        let ok = if result.status == RunStatus::Ok { 1.0 } else { 0.0 };
        metrics::gauge!("costledger_source_last_run_ok", "source" => s.clone()).set(ok);
        if result.status == RunStatus::Ok {
            let ts = Utc::now().timestamp();
            metrics::gauge!("costledger_source_last_success_timestamp_seconds", "source" => s.clone()).set(ts as f64);
        }
    }
    match result.status {
        RunStatus::Ok => info!(
            rows = result.rows,
            loads_created = result.loads_created,
            loads_skipped = result.loads_skipped,
            attempts = result.attempts,
            elapsed_ms = elapsed.as_millis() as u64,
            "run finished"
        ),
        other => warn!(
            status = other.as_str(),
            error = result.error.as_deref().unwrap_or(""),
            attempts = result.attempts,
            "run did not succeed"
        ),
    }
    if let Err(e) = store.finish_run(run_id, &result).await {
        error!(error = %e, "cannot record the run's outcome");
    }
}

fn backoff(cfg: &Config) -> Backoff {
    Backoff {
        attempts: cfg.daemon.retry_attempts.max(1),
        base: Duration::from_secs(cfg.daemon.retry_base_secs),
        max: Duration::from_secs(cfg.daemon.retry_max_secs),
    }
}

async fn execute(shared: Arc<Shared>, spec: Arc<JobSpec>) -> RunOutcome {
    let cfg = shared.config();
    match &spec.kind {
        JobKind::Ingest(source) => ingest_job(&shared, &cfg, source).await,
        JobKind::Report => {
            let monday = crate::report::last_complete_week(Utc::now().with_timezone(&cfg.timezone).date_naive());
            let r = app::report::weekly(
                shared.store.as_ref(),
                &cfg,
                monday,
                &cfg.report.out_dir,
                &cfg.report.formats,
                cfg.report.currency.as_deref(),
            )
            .await;
            match r {
                Ok(w) => {
                    info!(week = %costledger_core::iso_week_label(monday), files = w.paths.len(), "weekly report written");
                    outcome(RunStatus::Ok, None)
                }
                Err(e) => outcome(RunStatus::Failed, Some(e.to_string())),
            }
        }
        JobKind::Retention => match app::retention::run(shared.store.as_ref(), &cfg).await {
            Ok(r) => {
                info!(swept = r.swept.len(), superseded_removed = r.superseded_removed, "retention done");
                outcome(RunStatus::Ok, None)
            }
            Err(e) => outcome(RunStatus::Failed, Some(e.to_string())),
        },
    }
}

async fn ingest_job(shared: &Arc<Shared>, cfg: &Config, source: &SourceConfig) -> RunOutcome {
    let connector = match crate::registry::build(&source.params).await {
        Ok(c) => c,
        Err(e) => return outcome(RunStatus::Failed, Some(format!("source '{}' cannot be set up: {e}", source.name))),
    };
    if let Err(e) =
        crate::ingest::set_source_role(shared.store.as_ref(), &source.name, connector.kind(), source.role).await
    {
        return outcome(RunStatus::Failed, Some(format!("source '{}': cannot record its role: {e}", source.name)));
    }
    let opts = app::ingest::Options {
        cancel: shared.abort.child_token(),
        failed_backoff: Some(crate::ingest::FAILED_RETRY_BASE),
        progress: None,
    };
    let policy = backoff(cfg);
    let calls_before = connector.api_calls();
    let seed = source.name.bytes().map(u64::from).sum::<u64>();
    let (attempt, attempts) = super::schedule::retrying(policy, seed, &shared.stopping, |n| {
        let (store, connector, opts) = (shared.store.clone(), connector.as_ref(), &opts);
        async move {
            let r = app::ingest::ingest(store.as_ref(), cfg, &source.name, connector, opts)
                .instrument(info_span!("ingest", attempt = n))
                .await;
            let retry = app::ingest::retry_hint(&r);
            (r, retry)
        }
    })
    .await;
    let calls = connector.api_calls() - calls_before;
    metrics::counter!("costledger_api_calls_total", "source" => source.name.clone()).increment(calls);
    if calls > 0 {
        info!(api_calls = calls, "provider API calls this run");
    }
    let tally = app::ingest::tally(&attempt, attempts, opts.cancel.is_cancelled());
    metrics::counter!("costledger_rows_ingested_total", "source" => source.name.clone()).increment(tally.outcome.rows);
    metrics::counter!("costledger_rows_quarantined_total", "source" => source.name.clone())
        .increment(tally.quarantined);
    let o = tally.outcome;
    if o.loads_created > 0 {
        reconcile_after_ingest(shared, cfg).await;
    }
    o
}

/// `costledger_budget_ratio{budget, kind}`: each budget's actual and forecast cost as a share
/// of its amount (1.0 = the whole budget), as of the day after the last day with data.
async fn budget_metrics(shared: &Arc<Shared>, cfg: &Config) {
    if cfg.budgets.is_empty() {
        return;
    }
    let store = shared.store.as_ref();
    let as_of = match app::budgets::default_as_of(store, cfg).await {
        Ok(d) => d,
        Err(e) => {
            error!(error = %e, "budgets could not be evaluated");
            return;
        }
    };
    // Each budget on its own: one without an exchange rate (a finding of the reconcile) does
    // not hide the others.
    for b in &cfg.budgets {
        match app::budgets::status(store, cfg, b, as_of).await {
            Ok(s) => {
                for (kind, pct) in [("actual", s.actual_percent), ("forecast", s.forecast_percent)] {
                    let ratio: f64 = pct
                        .and_then(|p| p.checked_div(rust_decimal::Decimal::ONE_HUNDRED))
                        .map(|r| r.to_string().parse().unwrap_or(0.0))
                        .unwrap_or(0.0);
                    metrics::gauge!("costledger_budget_ratio", "budget" => s.name.clone(), "kind" => kind).set(ratio);
                }
            }
            Err(e) => error!(budget = %b.name, error = %e, "a budget could not be evaluated"),
        }
    }
}

/// A reconcile job after each ingest that changed the ledger; its findings become metrics.
async fn reconcile_after_ingest(shared: &Arc<Shared>, cfg: &Config) {
    let started = Instant::now();
    let r = app::reconcile::run(shared.store.as_ref(), cfg, None, false).instrument(info_span!("reconcile")).await;
    metrics::histogram!("costledger_run_duration_seconds", "job" => "reconcile")
        .record(started.elapsed().as_secs_f64());
    let status = match r {
        Ok(sum) => {
            let mut unallocated = costledger_core::Totals::default();
            for p in &sum.periods {
                let _ = unallocated.merge(&p.unallocated);
            }
            for (cur, amt) in &unallocated.0 {
                let v: f64 = amt.to_fixed(2).parse().unwrap_or(0.0);
                metrics::gauge!("costledger_unallocated_amount", "currency" => cur.clone()).set(v);
            }
            metrics::gauge!("costledger_findings").set(sum.findings.len() as f64);
            info!(findings = sum.findings.len(), "reconciled");
            budget_metrics(shared, cfg).await;
            RunStatus::Ok
        }
        Err(e) => {
            error!(error = %e, "reconcile failed");
            RunStatus::Failed
        }
    };
    metrics::counter!("costledger_runs_total", "job" => "reconcile", "status" => status.as_str()).increment(1);
}
