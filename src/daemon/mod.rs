//! `costledger run`: tokio-cron-scheduler fires one ingest job per scheduled
//! source, the weekly report and the retention job; an axum server answers `/healthz`,
//! `/readyz` and `/metrics`; SIGTERM/SIGINT stop cleanly within the grace period, SIGHUP
//! reloads the config (a broken one is rejected, the running one stays).
//!
//! Exactly once across replicas: each firing claims its tick in `runs` (unique per job, source
//! and tick) and takes the job's lock (PostgreSQL advisory lock) before running. SQLite: one
//! daemon per ledger file (a file lock).
//!
//! DST: tokio-cron-scheduler freezes a zone's UTC offset when a job is created; a watcher
//! re-creates the jobs whenever the configured zone's offset changes, so 06:00 stays 06:00.

pub mod http;
pub mod jobs;
pub mod schedule;

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use anyhow::{Context as _, bail};
use chrono::{Offset, TimeZone, Utc};
use tokio::signal::unix::{SignalKind, signal};
use tokio_cron_scheduler::{Job, JobScheduler};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{error, info, warn};
use uuid::Uuid;

use crate::config::Config;
use crate::ledger::{DatabaseUrl, LedgerStore};
use jobs::{JobKind, JobSpec, Shared};
use schedule::Schedule;

/// The jobs a config asks for.
pub fn job_specs(cfg: &Config) -> Result<Vec<JobSpec>, String> {
    let mut out = Vec::new();
    for s in &cfg.sources {
        if let Some(text) = &s.schedule {
            out.push(JobSpec {
                name: "ingest",
                source: Some(s.name.clone()),
                schedule: Schedule::new(text, cfg.timezone)?,
                jitter_secs: s.jitter_secs,
                kind: JobKind::Ingest(Box::new(s.clone())),
            });
        }
    }
    out.push(JobSpec {
        name: "report",
        source: None,
        schedule: Schedule::new(&cfg.report.schedule, cfg.timezone)?,
        jitter_secs: 0,
        kind: JobKind::Report,
    });
    out.push(JobSpec {
        name: "retention",
        source: None,
        schedule: Schedule::new(&cfg.daemon.retention_schedule, cfg.timezone)?,
        jitter_secs: 0,
        kind: JobKind::Retention,
    });
    Ok(out)
}

/// Holds the SQLite ledger's daemon lock for the life of the process.
pub struct FileLock {
    _file: std::fs::File,
    /// The database file itself, locked too (by inode: a hard link finds it). `flock` is
    /// independent of SQLite's own `fcntl` locks; this descriptor stays open until the daemon
    /// exits (closing another descriptor of the file would drop SQLite's locks).
    _db: Option<std::fs::File>,
}

/// One daemon per SQLite file: an exclusive lock on `<db>.daemon-lock`.
pub fn lock_sqlite(url: &str) -> anyhow::Result<Option<FileLock>> {
    let Some(path) = url.strip_prefix("sqlite://") else { return Ok(None) };
    let path = path.split('?').next().unwrap_or(path);
    if path.is_empty() || path.contains(":memory:") {
        return Ok(None);
    }
    // The lock sits beside the real file: a symlink (or another spelling of the same path)
    // to the same database finds the same lock.
    let real = canonical_db_path(Path::new(path));
    let lock_path = PathBuf::from(format!("{}.daemon-lock", real.display()));
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .with_context(|| format!("cannot create the daemon lock file {}", lock_path.display()))?;
    let held = |what: &Path| {
        anyhow::anyhow!(
            "another costledger daemon is already running on the SQLite ledger {path} (it holds {}). Stop it \
             first; to run several replicas, use PostgreSQL",
            what.display()
        )
    };
    match file.try_lock() {
        Ok(()) => {}
        Err(std::fs::TryLockError::WouldBlock) => return Err(held(&lock_path)),
        Err(std::fs::TryLockError::Error(e)) => {
            return Err(e).with_context(|| format!("cannot lock {}", lock_path.display()));
        }
    }
    // The same file under another name (a hard link) has another lock file: lock the
    // database's inode as well.
    let db = match std::fs::File::open(&real) {
        Ok(db) => match db.try_lock() {
            Ok(()) => Some(db),
            Err(std::fs::TryLockError::WouldBlock) => return Err(held(&real)),
            Err(std::fs::TryLockError::Error(e)) => {
                return Err(e).with_context(|| format!("cannot lock {}", real.display()));
            }
        },
        // Not created yet: the daemon creates it; the lock file above guards it.
        Err(_) => None,
    };
    Ok(Some(FileLock { _file: file, _db: db }))
}

/// The database file's canonical path; for a file not created yet, its canonical directory
/// joined with its name.
fn canonical_db_path(path: &Path) -> PathBuf {
    if let Ok(p) = std::fs::canonicalize(path) {
        return p;
    }
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    match (std::fs::canonicalize(dir), path.file_name()) {
        (Ok(d), Some(n)) => d.join(n),
        _ => path.to_path_buf(),
    }
}

fn offset_now(tz: chrono_tz::Tz) -> i32 {
    tz.offset_from_utc_datetime(&Utc::now().naive_utc()).fix().local_minus_utc()
}

struct Scheduled {
    ids: Vec<Uuid>,
    offset: i32,
}

async fn add_jobs(sched: &JobScheduler, shared: &Arc<Shared>, specs: Vec<JobSpec>) -> anyhow::Result<Vec<Uuid>> {
    let mut ids = Vec::new();
    for spec in specs {
        let spec = Arc::new(spec);
        let sh = shared.clone();
        let tz = spec.schedule.tz;
        let text = spec.schedule.text.clone();
        let job = Job::new_async_tz(text.as_str(), tz, move |_id, _l| {
            let sh = sh.clone();
            let spec = spec.clone();
            Box::pin(async move {
                let t = sh.tracker.spawn(jobs::on_tick(sh.clone(), spec));
                let _ = t.await;
            })
        })
        .with_context(|| format!("cannot schedule '{text}'"))?;
        ids.push(sched.add(job).await.context("cannot add a job to the scheduler")?);
    }
    Ok(ids)
}

async fn remove_jobs(sched: &JobScheduler, ids: &[Uuid]) {
    for id in ids {
        if let Err(e) = sched.remove(id).await {
            warn!(error = %e, "removing a job failed");
        }
    }
}

/// Run the daemon until SIGTERM/SIGINT.
/// `costledger serve`: the HTTP server (health, metrics, the read API and the page) without
/// schedules, until SIGTERM or SIGINT. It opens the ledger read-only in spirit: it applies
/// pending migrations like every command, and writes nothing else.
pub async fn serve(config: Config, database: DatabaseUrl) -> anyhow::Result<()> {
    crate::api::check_exposure(&config)?;
    let store: Arc<dyn LedgerStore> = Arc::from(
        crate::ledger::open(database.clone()).await.with_context(|| format!("cannot open the ledger at {database}"))?,
    );
    crate::ledger::ensure_schema(store.as_ref()).await.with_context(|| format!("ledger at {database}"))?;
    let metrics = http::install_metrics()?;
    let stop = CancellationToken::new();
    let bind = config.server_bind;
    let limits = config.server_limits;
    let api = crate::api::ApiState::new(store, Arc::new(RwLock::new(Arc::new(config))));
    let server = http::serve(bind, api, metrics, stop.clone(), limits).await?;
    info!(bind = %bind, database = %database, "costledger API serving (no schedules)");
    let mut term = signal(SignalKind::terminate()).context("cannot listen for SIGTERM")?;
    let mut int = signal(SignalKind::interrupt()).context("cannot listen for SIGINT")?;
    tokio::select! {
        _ = term.recv() => info!("SIGTERM: stopping"),
        _ = int.recv() => info!("SIGINT: stopping"),
    }
    stop.cancel();
    let _ = server.await;
    Ok(())
}

pub async fn run(config_path: Option<PathBuf>, config: Config, database: DatabaseUrl) -> anyhow::Result<()> {
    let specs = job_specs(&config).map_err(|e| anyhow::anyhow!("invalid schedule: {e}"))?;
    let _file_lock = lock_sqlite(database.expose())?;
    let store: Arc<dyn LedgerStore> = Arc::from(
        crate::ledger::open(database.clone()).await.with_context(|| format!("cannot open the ledger at {database}"))?,
    );
    crate::ledger::ensure_schema(store.as_ref()).await.with_context(|| format!("ledger at {database}"))?;
    let swept = crate::app::retention::sweep(store.as_ref(), &config).await?;
    let abandoned = crate::app::retention::abandoned_runs(store.as_ref()).await?;
    if !abandoned.is_empty() {
        info!(runs = ?abandoned, "closed runs left 'running' by a process that is gone");
    }
    if !swept.is_empty() {
        info!(loads = ?swept, "swept stale staging loads left by an interrupted run");
    }
    let metrics = http::install_metrics()?;
    let shared = Arc::new(Shared {
        store: store.clone(),
        config: Arc::new(RwLock::new(Arc::new(config.clone()))),
        running: Mutex::new(HashSet::new()),
        stopping: CancellationToken::new(),
        abort: CancellationToken::new(),
        tracker: TaskTracker::new(),
    });
    crate::api::check_exposure(&config)?;
    let api = crate::api::ApiState::new(store.clone(), shared.config.clone());
    let server = http::serve(config.server_bind, api, metrics, shared.stopping.clone(), config.server_limits).await?;

    let sched = JobScheduler::new().await.context("cannot start the scheduler")?;
    let ids = add_jobs(&sched, &shared, specs).await?;
    let mut scheduled = Scheduled { ids, offset: offset_now(config.timezone) };
    sched.start().await.context("cannot start the scheduler")?;
    info!(
        bind = %config.server_bind,
        jobs = scheduled.ids.len(),
        database = %database,
        "costledger daemon started"
    );
    let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Ready]);
    let mut usec = 0u64;
    let watchdog = sd_notify::watchdog_enabled(false, &mut usec).then(|| {
        // Ping at half the WatchdogSec interval.
        let period = Duration::from_micros(usec / 2);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(period).await;
                let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Watchdog]);
            }
        })
    });

    let mut term = signal(SignalKind::terminate()).context("cannot listen for SIGTERM")?;
    let mut int = signal(SignalKind::interrupt()).context("cannot listen for SIGINT")?;
    let mut hup = signal(SignalKind::hangup()).context("cannot listen for SIGHUP")?;
    let mut dst = tokio::time::interval(Duration::from_secs(300));
    loop {
        tokio::select! {
            _ = term.recv() => { info!("SIGTERM: stopping"); break; }
            _ = int.recv() => { info!("SIGINT: stopping"); break; }
            _ = hup.recv() => {
                reload(config_path.as_deref(), &database, &sched, &shared, &mut scheduled).await;
            }
            _ = dst.tick() => {
                let tz = shared.config().timezone;
                let now = offset_now(tz);
                if now != scheduled.offset {
                    info!(zone = %tz.name(), from = scheduled.offset, to = now, "UTC offset changed (DST): re-creating the jobs");
                    let cfg = shared.config();
                    if let Ok(specs) = job_specs(&cfg) {
                        remove_jobs(&sched, &scheduled.ids).await;
                        match add_jobs(&sched, &shared, specs).await {
                            Ok(ids) => scheduled = Scheduled { ids, offset: now },
                            Err(e) => error!(error = %e, "re-creating the jobs failed"),
                        }
                    }
                }
            }
        }
    }

    // Shutdown: stop scheduling, let running jobs finish within the grace period, then abort
    // them (loads are atomic: an aborted load leaves the ledger as before).
    let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Stopping]);
    shared.stopping.cancel();
    let mut sched = sched;
    if let Err(e) = sched.shutdown().await {
        warn!(error = %e, "scheduler shutdown");
    }
    shared.tracker.close();
    let grace = Duration::from_secs(shared.config().daemon.shutdown_grace_secs);
    let mut abandoned = Vec::new();
    if tokio::time::timeout(grace, shared.tracker.wait()).await.is_err() {
        warn!(grace_secs = grace.as_secs(), "running jobs did not finish within the grace period: cancelling them");
        shared.abort.cancel();
        if tokio::time::timeout(Duration::from_secs(10), shared.tracker.wait()).await.is_err() {
            abandoned = abandon_own_runs(store.as_ref()).await;
            error!(runs = ?abandoned, "jobs did not stop after cancellation; their runs are closed as abandoned \
                   (their staging loads are swept at the next start)");
        }
    }
    if let Some(w) = watchdog {
        w.abort();
    }
    let _ = server.await;
    if !abandoned.is_empty() {
        bail!("{} job run(s) did not stop and were abandoned at shutdown (runs {abandoned:?})", abandoned.len());
    }
    info!("costledger daemon stopped");
    Ok(())
}

/// Close this process's runs that are still `running` as abandoned.
async fn abandon_own_runs(store: &dyn LedgerStore) -> Vec<i64> {
    let me = crate::ledger::process_owner();
    let prefix: String = me.rsplitn(2, ':').last().unwrap_or_default().to_string() + ":";
    let mut out = Vec::new();
    if let Ok(runs) = store.running_runs().await {
        for (id, owner, _) in runs {
            if owner.is_some_and(|o| o.starts_with(&prefix))
                && let Ok(true) = store.abandon_run(id, "abandoned: the daemon stopped before the job did").await
            {
                out.push(id);
            }
        }
    }
    out
}

async fn reload(
    path: Option<&Path>,
    database: &DatabaseUrl,
    sched: &JobScheduler,
    shared: &Arc<Shared>,
    scheduled: &mut Scheduled,
) {
    let Some(path) = path else {
        warn!("SIGHUP: no config file to reload (started without --config)");
        return;
    };
    let new = match Config::load(path) {
        Ok(c) => c,
        Err(e) => {
            error!(error = %e, "SIGHUP: the new config is invalid; keeping the running one");
            return;
        }
    };
    let specs = match job_specs(&new) {
        Ok(s) => s,
        Err(e) => {
            error!(error = %e, "SIGHUP: the new config's schedules are invalid; keeping the running one");
            return;
        }
    };
    if new.database.as_ref().is_some_and(|d| d != database) {
        warn!("SIGHUP: the database URL changed; that takes effect at the next restart");
    }
    remove_jobs(sched, &scheduled.ids).await;
    let offset = offset_now(new.timezone);
    if let Ok(mut c) = shared.config.write() {
        *c = Arc::new(new);
    }
    match add_jobs(sched, shared, specs).await {
        Ok(ids) => {
            info!(jobs = ids.len(), "SIGHUP: config reloaded");
            *scheduled = Scheduled { ids, offset };
        }
        Err(e) => error!(error = %e, "SIGHUP: scheduling the new jobs failed"),
    }
}
