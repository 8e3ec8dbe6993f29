//! The load contract (ARCHITECTURE.md, "Bird's-eye view"): for each delivery, skip it if it is already current;
//! otherwise stage its lines in bounded batches under a new load, then make it current in one
//! short transaction. Any error fails the load (its staged rows are deleted) and leaves the
//! ledger exactly as it was. Stale staging loads left by a crash are swept on the next start.

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::Utc;
use costledger_core::{
    Batch, BillingPeriod, ChargeLine, Connector, ConnectorError, Context, DateBounds, Delivery, MoneyError,
    PeriodWindow, RowError, Totals, format_ts, parse_amount,
};
use futures::future::BoxFuture;
use futures::stream::FuturesUnordered;
use futures::{StreamExt, TryStreamExt};
use sha2::{Digest, Sha256};
use tracing::Instrument as _;
use tracing::{info, info_span, warn};

use crate::ledger::{
    CommitOutcome, LedgerError, LedgerStore, LoadFilter, LoadId, LoadRow, LoadState, LoadSummary, NewLoad,
    PeriodContribution, PeriodState, SourceRole,
};
use crate::query::rollup::{HeldRows, ROLLUP_PIECE, RollupBuilder, RollupSpec};

#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    #[error("source '{source_name}', delivery '{scope}': {error}")]
    Connector { source_name: String, scope: String, error: ConnectorError },
    #[error("source '{source_name}', delivery '{scope}': {error}")]
    Ledger { source_name: String, scope: String, error: LedgerError },
    #[error("source '{source_name}', delivery '{scope}': {error}")]
    Money { source_name: String, scope: String, error: MoneyError },
    #[error("source '{source_name}': cannot list deliveries: {error}")]
    Listing { source_name: String, error: ConnectorError },
    #[error(
        "source '{source_name}', delivery '{scope}': not retried before {retry_at}: the same input failed the same \
         way {attempts} time(s) (load {load}: {error}); fix the input or replace the file, or run `import` by hand to retry now"
    )]
    BackingOff { source_name: String, scope: String, load: LoadId, attempts: u32, retry_at: String, error: String },
    #[error("ledger: {0}")]
    Store(#[from] LedgerError),
}

impl IngestError {
    pub fn is_retriable(&self) -> bool {
        match self {
            IngestError::Connector { error, .. } | IngestError::Listing { error, .. } => error.is_retriable(),
            IngestError::Ledger { .. } | IngestError::Store(_) => true,
            IngestError::Money { .. } | IngestError::BackingOff { .. } => false,
        }
    }

    /// What to do about it, in one sentence (input, database, provider or cancellation).
    pub fn advice(&self) -> &'static str {
        match self {
            IngestError::Connector { error, .. } | IngestError::Listing { error, .. } => match error {
                ConnectorError::Input { .. } => "fix the input as the message says and run again",
                ConnectorError::Io { .. } => "check that the path exists and is readable, then run again",
                ConnectorError::Auth(_) => "check the source's credentials, then run again",
                ConnectorError::RateLimited { .. } | ConnectorError::Transient(_) => {
                    "the provider or the network failed; run again later"
                }
                ConnectorError::Cancelled => "the run was stopped; run again to load it",
            },
            IngestError::Ledger { .. } | IngestError::Store(_) => {
                "the ledger's database failed (the message says how); the bill was not changed, run again once it is fixed"
            }
            IngestError::Money { .. } => "fix the amounts the message names and run again",
            IngestError::BackingOff { .. } => "replace the file, or run `import` by hand to retry now",
        }
    }

    /// How long the provider asked us to wait, if it did.
    pub fn retry_after(&self) -> Option<std::time::Duration> {
        match self {
            IngestError::Connector { error, .. } | IngestError::Listing { error, .. } => error.retry_after(),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LoadOutcome {
    /// A new load is current; `superseded` is the load it replaced (a restatement).
    Created { load: LoadId, superseded: Option<LoadId> },
    /// The same delivery is already current: nothing changed.
    Skipped { existing: LoadId },
    /// Another process committed the same delivery at the same time: nothing changed.
    Duplicate { existing: LoadId },
    /// A file (a delivery keyed by its content) new to its scope whose bytes are already
    /// current in this source under another scope (another path): loading them would count
    /// the bill twice.
    SameBytesElsewhere { existing: LoadId, scope: String },
}

#[derive(Debug, Clone)]
pub struct LoadReport {
    pub scope: String,
    pub description: String,
    pub outcome: LoadOutcome,
    pub records: u64,
    pub rows: u64,
    pub quarantined: u64,
    pub rounded: u64,
    pub totals: Totals,
    pub quarantined_totals: Totals,
}

/// What computing a pending delivery key found.
enum Keyed {
    Key(String),
    /// The delivery is already current as this load.
    Current(Box<LoadRow>),
    /// The same bytes are current under another scope of the source.
    Elsewhere(Box<LoadRow>),
    /// Staging failed or was cancelled first; the key no longer matters.
    Moot,
}

/// Called after every staged batch with the running record count of the current delivery.
pub type Progress<'a> = &'a (dyn Fn(&Delivery, u64) + Sync);

/// Batches being written at once by one load (bounded: memory stays at a few batches). On
/// PostgreSQL a batch waits until its rows are sent down one of the load's COPY lanes (each a
/// connection, and a server core, of its own; see `Lanes` in the ledger): with two in flight the
/// parser and the import loop slept a third of the time waiting for a slot, three took 1M lines
/// from 6.6–8.3 s to 6.1–7.5 s (same hour, alternating runs, before the lanes) at 127–135 MB.
/// SQLite writes one batch at a time: a third batch held only adds memory (139 → 150–158 MB).
fn stages_in_flight(backend: crate::ledger::Backend) -> usize {
    match backend {
        crate::ledger::Backend::Postgres => 3,
        crate::ledger::Backend::Sqlite => 2,
    }
}

/// Pieces of a load's last rollup rows written at once on PostgreSQL: the client has nothing
/// else to do then, and each piece waits on the server's per-row work and round trips. With
/// the statistics refresh beside them, within its pool of 4 connections. SQLite has one writer
/// at a time, so a second connection gained nothing but its own prepared rollup INSERT and page
/// cache: with 1,000-row INSERTs the import's peak RSS came at its very end, +15 to +18 MB
/// (10M lines: 148–164 MB; it now writes 100-row INSERTs).
fn last_rollup_writers(backend: crate::ledger::Backend) -> usize {
    match backend {
        crate::ledger::Backend::Postgres => 3,
        crate::ledger::Backend::Sqlite => 1,
    }
}

/// `host:pid:nonce`: identifies the process staging a load (or running a job).
pub fn owner_id() -> String {
    crate::ledger::process_owner()
}

use crate::ledger::owner_is_dead;

/// A run left `running` by a process on another host is taken as abandoned after this long
/// (on this host, as soon as its process is gone).
pub const RUN_ABANDONED_AFTER: chrono::Duration = chrono::Duration::hours(24);

/// Which of the `running` runs (id, owner, started) are abandoned, with the reason: the owner's
/// process is gone (`is_dead`, same host), or the run started more than
/// [`RUN_ABANDONED_AFTER`] before `now` (another host, or recorded before runs had owners).
pub fn abandoned_runs(
    running: &[(i64, Option<String>, chrono::DateTime<Utc>)],
    now: chrono::DateTime<Utc>,
    is_dead: impl Fn(&str) -> bool,
) -> Vec<(i64, String)> {
    let cutoff = now - RUN_ABANDONED_AFTER;
    running
        .iter()
        .filter_map(|(id, owner, started)| match owner {
            Some(o) if is_dead(o) => Some((*id, format!("abandoned: the process that ran it ({o}) is gone"))),
            _ if *started < cutoff => {
                Some((*id, format!("abandoned: still 'running' long after it started at {}", format_ts(*started))))
            }
            _ => None,
        })
        .collect()
}

/// Close runs left `running` by a dead process as `abandoned` (see [`abandoned_runs`]).
/// Returns the runs closed.
pub async fn sweep_abandoned_runs(store: &dyn LedgerStore) -> Result<Vec<i64>, LedgerError> {
    let running = store.running_runs().await?;
    let mut closed = Vec::new();
    for (id, why) in abandoned_runs(&running, Utc::now(), owner_is_dead) {
        if store.abandon_run(id, &why).await? {
            warn!(run = id, reason = %why, "run closed as abandoned");
            closed.push(id);
        }
    }
    Ok(closed)
}

/// Fail staging loads whose process died (same host, pid gone) or whose heartbeat is older
/// than `stale_after` (another host, or a hung process). Returns the loads swept.
pub async fn sweep_stale(store: &dyn LedgerStore, stale_after: Duration) -> Result<Vec<LoadId>, LedgerError> {
    let staging = store.loads(&LoadFilter { state: Some(LoadState::Staging), ..Default::default() }).await?;
    let cutoff = Utc::now() - chrono::Duration::from_std(stale_after).unwrap_or_else(|_| chrono::Duration::minutes(15));
    let mut swept = Vec::new();
    for l in staging {
        let dead = owner_is_dead(&l.owner);
        if dead || l.heartbeat_at < cutoff {
            let why = if dead {
                format!("swept: the process that staged it ({}) is gone", l.owner)
            } else {
                format!("swept: no heartbeat since {}", format_ts(l.heartbeat_at))
            };
            if store.fail_load(l.id, &why).await? {
                warn!(load = l.id, source = %l.source, scope = %l.scope, reason = %why, "stale staging load swept");
                swept.push(l.id);
            }
        }
    }
    Ok(swept)
}

/// Record a source's role (creating the source if it is new) before it is loaded, so its
/// charges are never visible under the wrong role.
pub async fn set_source_role(
    store: &dyn LedgerStore,
    source: &str,
    kind: &str,
    role: SourceRole,
) -> Result<(), LedgerError> {
    let id = store.ensure_source(source, kind).await?;
    store.set_source_role(id, role).await
}

/// Load every delivery the connector offers. Each delivery is independent: one failing does
/// not stop the others; the results come back in order.
pub async fn ingest_source(
    store: &dyn LedgerStore,
    source: &str,
    connector: &dyn Connector,
    window: PeriodWindow,
    cx: &Context,
    progress: Option<Progress<'_>>,
) -> Result<Vec<Result<LoadReport, IngestError>>, IngestError> {
    ingest_source_with(store, source, connector, window, cx, progress, &[]).await
}

/// [`ingest_source`], building each load's rollups with `rollups`, one per kind (a kind not
/// built: queries that need it scan these loads' charges until `costledger rollup` builds it).
pub async fn ingest_source_with(
    store: &dyn LedgerStore,
    source: &str,
    connector: &dyn Connector,
    window: PeriodWindow,
    cx: &Context,
    progress: Option<Progress<'_>>,
    rollups: &[RollupSpec],
) -> Result<Vec<Result<LoadReport, IngestError>>, IngestError> {
    let span = info_span!("ingest", source = %source, kind = connector.kind());
    async move {
        let source_id = store.ensure_source(source, connector.kind()).await?;
        // What the ledger already holds as final lets API connectors skip paid calls.
        let mut cx = cx.clone();
        cx.final_periods = store
            .billing_periods()
            .await?
            .into_iter()
            .filter(|p| p.source == source && p.state == PeriodState::Final)
            .filter_map(|p| p.period.parse::<BillingPeriod>().ok())
            .collect();
        let cx = &cx;
        let deliveries = tokio::select! {
            d = connector.deliveries(window, cx) => d,
            // A listing waiting on an unreachable endpoint stops when the run is cancelled.
            _ = cx.cancel.cancelled() => Err(ConnectorError::Cancelled),
        }
        .map_err(|error| IngestError::Listing { source_name: source.to_string(), error })?;
        let owner = owner_id();
        let mut out = Vec::with_capacity(deliveries.len());
        for d in &deliveries {
            out.push(load_delivery(store, source, source_id, connector, d, cx, &owner, progress, rollups).await);
        }
        Ok(out)
    }
    .instrument(span)
    .await
}

#[allow(clippy::too_many_arguments)]
pub async fn load_delivery(
    store: &dyn LedgerStore,
    source: &str,
    source_id: i64,
    connector: &dyn Connector,
    d: &Delivery,
    cx: &Context,
    owner: &str,
    progress: Option<Progress<'_>>,
    rollups: &[RollupSpec],
) -> Result<LoadReport, IngestError> {
    let ledger_err =
        |error: LedgerError| IngestError::Ledger { source_name: source.to_string(), scope: d.scope.clone(), error };
    let skipped = |cur: LoadRow| LoadReport {
        scope: d.scope.clone(),
        description: d.description.clone(),
        outcome: LoadOutcome::Skipped { existing: cur.id },
        records: cur.row_count + cur.quarantined_count,
        rows: cur.row_count,
        quarantined: cur.quarantined_count,
        rounded: cur.rounded_count,
        totals: cur.totals,
        quarantined_totals: cur.quarantined_totals,
    };
    let elsewhere = |cur: LoadRow| {
        info!(scope = %d.scope, load = cur.id, current_scope = %cur.scope, "the same bytes are already current under another scope; nothing to do");
        LoadReport {
            outcome: LoadOutcome::SameBytesElsewhere { existing: cur.id, scope: cur.scope.clone() },
            ..skipped(cur)
        }
    };
    if !d.key_pending
        && let Some(cur) = store.current_load(source_id, &d.scope).await.map_err(ledger_err)?
        && cur.delivery_key == d.delivery_key
    {
        info!(scope = %d.scope, load = cur.id, "delivery already current; nothing to do");
        return Ok(skipped(cur));
    }
    // A delivery that failed on the same input is retried only after its back-off (when the
    // caller asks for one: the daemon), or as soon as its input changes.
    let fingerprint = failure_fingerprint(d);
    if let Some(base) = cx.failed_backoff
        && let Some(prev) = store.last_load(source_id, &d.scope).await.map_err(ledger_err)?
        && prev.state == LoadState::Failed
        && prev.delivery_key == fingerprint
    {
        let retry_at = prev.finished_at.unwrap_or(prev.started_at) + failure_backoff(base, prev.attempts);
        if Utc::now() < retry_at {
            return Err(IngestError::BackingOff {
                source_name: source.to_string(),
                scope: d.scope.clone(),
                load: prev.id,
                attempts: prev.attempts,
                retry_at: format_ts(retry_at),
                error: prev.error.unwrap_or_default(),
            });
        }
    }
    let load = store
        .begin_load(&NewLoad {
            source_id,
            scope: d.scope.clone(),
            billing_period: d.billing_period.map(|p| p.to_string()),
            // A pending key is set when the load commits.
            delivery_key: if d.key_pending { format!("pending:{owner}") } else { d.delivery_key.clone() },
            description: d.description.clone(),
            owner: owner.to_string(),
        })
        .await
        .map_err(ledger_err)?;
    // A file keyed by its content is hashed by a second read beside staging only where that
    // can save the staging: when its scope already holds a load, the same bytes again are
    // found as soon as the hash is known. A scope that holds nothing is staged alone, and its
    // key is the hash of the bytes the parser read: one read of the file, not two.
    let hash_beside = d.key_pending && store.current_load(source_id, &d.scope).await.map_err(ledger_err)?.is_some();
    let (staged, key) = if hash_beside {
        info!(scope = %d.scope, load, "staging delivery while its key is computed");
        // The key (a content hash) is computed alongside staging; when that delivery turns out
        // to be current already, staging is stopped and the load discarded.
        let stop = cx.cancel.child_token();
        let mut staging_cx = cx.clone();
        staging_cx.cancel = stop.clone();
        let staging = async {
            let r = stage(store, source, load, connector, d, &staging_cx, progress, rollups).await;
            if r.is_err() {
                // A failed (or cancelled) load needs no key: stop waiting for it.
                stop.cancel();
            }
            r
        };
        let keying = async {
            let key = tokio::select! {
                k = connector.delivery_key(d, cx) => k,
                _ = stop.cancelled() => return Ok(Keyed::Moot),
            };
            let key = match key {
                Ok(k) => k,
                Err(error) => {
                    stop.cancel();
                    return Err(IngestError::Connector {
                        source_name: source.to_string(),
                        scope: d.scope.clone(),
                        error,
                    });
                }
            };
            // A file whose bytes are already current under another path of the source is the
            // same bill twice, unless this path already holds a bill (then the new bytes
            // restate it, and reconcile's overlap check flags the double).
            let found = match store.current_load(source_id, &d.scope).await {
                Ok(Some(cur)) if cur.delivery_key == key => Ok(Some(Keyed::Current(Box::new(cur)))),
                Ok(Some(_)) => Ok(None),
                Ok(None) => match store.current_load_with_key(source_id, &key).await {
                    Ok(Some(cur)) => Ok(Some(Keyed::Elsewhere(Box::new(cur)))),
                    Ok(None) => Ok(None),
                    Err(e) => Err(e),
                },
                Err(e) => Err(e),
            };
            match found {
                Ok(Some(k)) => {
                    stop.cancel();
                    Ok(k)
                }
                Ok(None) => Ok(Keyed::Key(key)),
                Err(e) => {
                    stop.cancel();
                    Err(ledger_err(e))
                }
            }
        };
        let (staged, key) = tokio::join!(staging, keying);
        match key {
            Ok(Keyed::Current(cur)) => {
                if let Err(e) = store.discard_load(load).await {
                    warn!(load, error = %e, "could not discard the load; the next start sweeps it");
                }
                info!(scope = %d.scope, load = cur.id, "delivery already current; nothing to do");
                return Ok(skipped(*cur));
            }
            Ok(Keyed::Elsewhere(cur)) => {
                if let Err(e) = store.discard_load(load).await {
                    warn!(load, error = %e, "could not discard the load; the next start sweeps it");
                }
                return Ok(elsewhere(*cur));
            }
            Ok(Keyed::Key(key)) => (staged, Some(key)),
            // Staging failed, or the run was cancelled after staging and before the key:
            // either way nothing may be committed without its key.
            Ok(Keyed::Moot) => (
                staged.and(Err(IngestError::Connector {
                    source_name: source.to_string(),
                    scope: d.scope.clone(),
                    error: ConnectorError::Cancelled,
                })),
                None,
            ),
            Err(e) => (Err(e), None),
        }
    } else {
        if d.key_pending {
            info!(scope = %d.scope, load, "staging delivery; its key is the hash of the bytes read");
        } else {
            info!(scope = %d.scope, load, key = %d.delivery_key, "staging delivery");
        }
        (stage(store, source, load, connector, d, cx, progress, rollups).await, None)
    };
    // A pending key is the key of the bytes the parser read (reported by the stream), never
    // a separate read's: when the two differ, the file changed while it was read.
    let staged = staged.and_then(|(mut s, records, read_keys)| {
        if !d.key_pending {
            return Ok((s, records));
        }
        let changed = |message: String| IngestError::Connector {
            source_name: source.to_string(),
            scope: d.scope.clone(),
            error: ConnectorError::input(
                d.description.clone(),
                message,
                "nothing from this file was loaded; wait until whatever writes it has finished, then import again",
            ),
        };
        let read = match read_keys.as_slice() {
            [one] => one.clone(),
            other => {
                return Err(changed(format!(
                    "the reader reported {} content keys for one file (expected exactly one)",
                    other.len()
                )));
            }
        };
        if let Some(k) = &key
            && *k != read
        {
            return Err(changed(format!(
                "the file changed while it was read: the bytes parsed hash to {read}, the file on disk to {k}"
            )));
        }
        s.delivery_key = Some(read);
        Ok((s, records))
    });
    let (summary, records) = match staged {
        Ok(sr) => sr,
        Err(e) => {
            // A cancelled load is not a failure of its input: no fingerprint, no back-off.
            let cancelled = matches!(&e, IngestError::Connector { error: ConnectorError::Cancelled, .. });
            let recorded = if cancelled {
                store.fail_load(load, &e.to_string()).await.map(|_| None)
            } else {
                store.record_failure(load, &e.to_string(), &fingerprint).await
            };
            match recorded {
                Ok(Some(into)) => info!(load = into, "the same input failed the same way again; counted on that load"),
                Ok(None) => {}
                Err(fe) => warn!(load, error = %fe, "could not mark the load failed; the next start sweeps it"),
            }
            return Err(e);
        }
    };
    // Staged alone (see `hash_beside`): the same bytes current under another path of the
    // source are the same bill twice, found now that the key is known.
    if d.key_pending
        && !hash_beside
        && let Some(read) = &summary.delivery_key
    {
        match store.current_load_with_key(source_id, read).await {
            Ok(Some(cur)) if cur.scope != d.scope => {
                if let Err(e) = store.discard_load(load).await {
                    warn!(load, error = %e, "could not discard the load; the next start sweeps it");
                }
                return Ok(elsewhere(cur));
            }
            Ok(_) => {}
            Err(e) => {
                let _ = store.fail_load(load, &e.to_string()).await;
                return Err(ledger_err(e));
            }
        }
    }
    let outcome = match store.commit_load(load, &summary).await {
        Ok(CommitOutcome::Current { superseded }) => LoadOutcome::Created { load, superseded },
        Ok(CommitOutcome::Duplicate { existing }) => LoadOutcome::Duplicate { existing },
        Err(e) => {
            let _ = store.fail_load(load, &e.to_string()).await;
            return Err(ledger_err(e));
        }
    };
    info!(scope = %d.scope, load, rows = summary.row_count, quarantined = summary.quarantined_count,
          totals = %summary.totals.display(), ?outcome, "delivery loaded");
    Ok(LoadReport {
        scope: d.scope.clone(),
        description: d.description.clone(),
        outcome,
        records,
        rows: summary.row_count,
        quarantined: summary.quarantined_count,
        rounded: summary.rounded_count,
        totals: summary.totals,
        quarantined_totals: summary.quarantined_totals,
    })
}

/// What a failed load read, to know whether a retry would read the same: the delivery key,
/// or for a file keyed by its content (not known when it fails) its size and modification
/// time.
pub fn failure_fingerprint(d: &Delivery) -> String {
    if !d.key_pending {
        return d.delivery_key.clone();
    }
    let mut fp = String::from("stat");
    for item in &d.items {
        match std::fs::metadata(item) {
            Ok(m) => {
                let mtime = m
                    .modified()
                    .ok()
                    .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                    .map(|d| d.as_nanos())
                    .unwrap_or(0);
                fp.push_str(&format!(":{}@{}", m.len(), mtime));
            }
            Err(_) => fp.push_str(":unreadable"),
        }
    }
    fp
}

/// The daemon's first wait before retrying a delivery that failed on unchanged input.
pub const FAILED_RETRY_BASE: Duration = Duration::from_secs(300);

/// Wait before retrying a delivery that failed `attempts` times the same way: `base` doubled
/// per attempt, at most six hours.
pub fn failure_backoff(base: Duration, attempts: u32) -> chrono::Duration {
    let factor = 1u32 << attempts.saturating_sub(1).min(16);
    let wait = base.saturating_mul(factor).min(Duration::from_secs(6 * 3600));
    chrono::Duration::from_std(wait).unwrap_or_else(|_| chrono::Duration::hours(6))
}

/// The door every line passes, whatever its connector: a line that fails
/// [`ChargeLine::check`] (dates out of bounds, a period ending before it starts, a NUL byte)
/// moves to the quarantine with its amount, so nothing the loader accepts can break a later
/// reconcile or report, and money is still conserved. Quarantined text has any NUL byte
/// shown as `␀`, so both backends store the same text.
pub fn screen(batch: &mut Batch, bounds: &DateBounds) {
    let mut bad = Vec::new();
    batch.lines.retain(|l| match l.check(bounds) {
        Ok(()) => true,
        Err(reason) => {
            bad.push(RowError {
                location: l.source_ref.clone().unwrap_or_else(|| "(no source reference)".into()),
                reason,
                raw: describe_line(l),
                raw_amount: Some(costledger_core::canonical(l.billed_cost)),
                currency: Some(l.billing_currency.clone()),
            });
            false
        }
    });
    batch.errors.extend(bad);
    for e in &mut batch.errors {
        for t in [&mut e.location, &mut e.reason, &mut e.raw] {
            if t.contains('\0') {
                *t = t.replace('\0', "\u{2400}");
            }
        }
        for t in [&mut e.raw_amount, &mut e.currency].into_iter().flatten() {
            if t.contains('\0') {
                *t = t.replace('\0', "\u{2400}");
            }
        }
    }
}

/// A line as text for the quarantine, when the connector's raw record is not at hand.
fn describe_line(l: &ChargeLine) -> String {
    format!(
        "BillingAccountId={} BillingPeriod={}..{} ChargePeriod={}..{} ChargeCategory={} ServiceName={} BilledCost={} BillingCurrency={}",
        l.billing_account_id,
        format_ts(l.billing_period_start),
        format_ts(l.billing_period_end),
        format_ts(l.charge_period_start),
        format_ts(l.charge_period_end),
        l.charge_category,
        l.service_name.as_deref().unwrap_or(""),
        costledger_core::canonical(l.billed_cost),
        l.billing_currency,
    )
}

#[allow(clippy::too_many_arguments)]
async fn stage(
    store: &dyn LedgerStore,
    source: &str,
    load: LoadId,
    connector: &dyn Connector,
    d: &Delivery,
    cx: &Context,
    progress: Option<Progress<'_>>,
    rollups: &[RollupSpec],
) -> Result<(LoadSummary, u64, Vec<String>), IngestError> {
    let mut builders: Vec<RollupBuilder<'_>> = rollups.iter().map(RollupBuilder::new).collect();
    let money =
        |error: MoneyError| IngestError::Money { source_name: source.to_string(), scope: d.scope.clone(), error };
    let mut sm = LoadSummary { final_periods: d.final_periods, ..Default::default() };
    let mut periods: BTreeMap<BillingPeriod, PeriodContribution> = BTreeMap::new();
    let mut hasher = Sha256::new();
    let mut scratch: Vec<u8> = Vec::with_capacity(128);
    let mut last_period: Option<(chrono::DateTime<chrono::Utc>, BillingPeriod)> = None;
    let mut last_invoice: Option<(BillingPeriod, String)> = None;
    let mut records = 0u64;
    let mut read_keys: Vec<String> = Vec::new();
    let ledger_err =
        |error: LedgerError| IngestError::Ledger { source_name: source.to_string(), scope: d.scope.clone(), error };
    let mut stream = connector.fetch(d, cx);
    // Up to `stages_in_flight` batches are being written while the next one is read and
    // summarised, so encoding one batch overlaps the database working on the previous one.
    let mut in_flight: FuturesUnordered<BoxFuture<'_, Result<(), LedgerError>>> = FuturesUnordered::new();
    let mut failure: Option<IngestError> = None;
    loop {
        while in_flight.len() >= stages_in_flight(store.backend()) {
            if let Some(Err(e)) = in_flight.next().await {
                failure = Some(ledger_err(e));
                break;
            }
        }
        if failure.is_some() {
            break;
        }
        let item = if in_flight.is_empty() {
            stream.next().await
        } else {
            tokio::select! {
                biased;
                r = in_flight.next() => {
                    if let Some(Err(e)) = r {
                        failure = Some(ledger_err(e));
                        break;
                    }
                    continue;
                }
                item = stream.next() => item,
                // A connector waiting on the network stops here when the run is cancelled.
                _ = cx.cancel.cancelled() => Some(Err(ConnectorError::Cancelled)),
            }
        };
        let Some(item) = item else { break };
        if cx.cancel.is_cancelled() {
            failure = Some(IngestError::Connector {
                source_name: source.to_string(),
                scope: d.scope.clone(),
                error: ConnectorError::Cancelled,
            });
            break;
        }
        let mut batch = match item {
            Ok(b) => b,
            Err(error) => {
                failure =
                    Some(IngestError::Connector { source_name: source.to_string(), scope: d.scope.clone(), error });
                break;
            }
        };
        if let Some(k) = batch.content_key.take() {
            read_keys.push(k);
            if batch.records == 0 && batch.lines.is_empty() && batch.errors.is_empty() {
                continue;
            }
        }
        screen(&mut batch, &cx.date_bounds);
        for l in &batch.lines {
            if let Err(e) = sm.totals.add(&l.billing_currency, l.billed_cost) {
                failure = Some(money(e));
                break;
            }
            if let Some(e) = builders.iter_mut().find_map(|r| r.add(l).err()) {
                failure = Some(money(e));
                break;
            }
            // Lines of one file almost always share their billing period and invoice: both
            // are looked up only when they change.
            let period = match last_period {
                Some((start, p)) if start == l.billing_period_start => p,
                _ => {
                    let p = BillingPeriod::of(l.billing_period_start);
                    last_period = Some((l.billing_period_start, p));
                    p
                }
            };
            let p = periods
                .entry(period)
                .or_insert_with(|| PeriodContribution { all_invoiced: true, ..Default::default() });
            p.rows += 1;
            p.data_end = Some(p.data_end.map_or(l.charge_period_end, |e| e.max(l.charge_period_end)));
            if let Err(e) = p.totals.add(&l.billing_currency, l.billed_cost).and_then(|()| p.days.add(l)) {
                failure = Some(money(e));
                break;
            }
            match &l.invoice_id {
                Some(id) => {
                    if last_invoice.as_ref().is_none_or(|(pp, last)| *pp != period || last != id) {
                        if !p.invoice_ids.contains(id) {
                            p.invoice_ids.insert(id.clone());
                        }
                        last_invoice = Some((period, id.clone()));
                    }
                }
                None => p.all_invoiced = false,
            }
            // Content checksum over what the ledger keeps of each line's money and identity,
            // gathered into one buffer per line (one hasher call instead of six).
            scratch.clear();
            scratch.extend_from_slice(l.billing_account_id.as_bytes());
            scratch.push(0);
            scratch.extend_from_slice(&l.charge_period_start.timestamp().to_le_bytes());
            scratch.extend_from_slice(&l.billed_cost.normalize().serialize());
            scratch.extend_from_slice(l.billing_currency.as_bytes());
            scratch.push(1);
            hasher.update(&scratch);
        }
        for e in &batch.errors {
            if let (Some(raw), Some(cur)) = (&e.raw_amount, &e.currency)
                && let Ok(Some(a)) = parse_amount(raw)
                && let Err(e) = sm.quarantined_totals.add(cur, a.value)
            {
                failure = Some(money(e));
                break;
            }
        }
        let first_row = sm.row_count;
        sm.row_count += batch.lines.len() as u64;
        sm.quarantined_count += batch.errors.len() as u64;
        sm.rounded_count += batch.rounded_amounts;
        records += batch.records;
        if failure.is_some() {
            break;
        }
        let (lines, errors, spent) = (batch.lines, batch.errors, batch.spent);
        // A full rollup builder writes its rows out as a chunk (rollup rows are additive).
        let mut chunk: Vec<HeldRows> = Vec::new();
        for r in builders.iter_mut() {
            if r.is_full() {
                chunk.push(r.take_held());
            }
        }
        in_flight.push(Box::pin(async move {
            if !lines.is_empty() {
                store.stage_lines(load, first_row, lines, spent).await?;
            }
            for held in chunk {
                for piece in held.into_pieces(ROLLUP_PIECE) {
                    store.append_rollup(load, &piece).await?;
                }
            }
            store.stage_quarantine(load, &errors).await
        }));
        if let Some(p) = progress {
            p(d, records);
        }
    }
    // Let every write in flight finish (even after a failure, so no connection is left
    // mid-COPY), then report the first problem.
    while let Some(r) = in_flight.next().await {
        if let (Err(e), None) = (r, &failure) {
            failure = Some(ledger_err(e));
        }
    }
    if let Some(f) = failure {
        return Err(f);
    }
    sm.periods = periods.into_iter().map(|(p, c)| (p.to_string(), c)).collect();
    let mut last_rows = Vec::new();
    for b in builders {
        let kind = b.kind();
        match b.finish_held() {
            Some((r, held)) => {
                last_rows.push(held);
                sm.rollups.push(r)
            }
            None => tracing::info!(
                source,
                scope = %d.scope,
                "no {} rollup for this load: its lines are nearly all distinct per day and dimension \
                 (a rollup would not be {} times smaller than its charges; see docs/query.md), so \
                 queries that need it read the charges",
                kind.name(),
                crate::query::rollup::MIN_ROLLUP_COMPRESSION
            ),
        }
    }
    // The last rows are written before the commit (a staging load's rollup rows are not read
    // until the commit records its spec), a piece at a time, as many pieces at once as staged
    // batches (rollup rows are additive, each piece its own transaction): the database's
    // per-row insert work is the floor here, and one connection at a time left a core idle.
    // Beside them, the backend's upkeep of the staged lines (PostgreSQL: ANALYZE of the charges,
    // which the import otherwise waited for after the commit): the client is mostly idle here.
    let last = futures::stream::iter(last_rows.into_iter().flat_map(|held| held.into_pieces(ROLLUP_PIECE)))
        .map(|piece| async move { store.append_rollup(load, &piece).await })
        .buffer_unordered(last_rollup_writers(store.backend()))
        .try_collect::<()>();
    let (last, staged) = tokio::join!(last, store.lines_staged(load));
    staged.map_err(ledger_err)?;
    last.map_err(ledger_err)?;
    let digest = hasher.finalize();
    sm.checksum = format!("sha256:{}", digest.iter().map(|b| format!("{b:02x}")).collect::<String>());
    Ok((sm, records, read_keys))
}

#[cfg(test)]
mod run_tests {
    use super::*;

    #[test]
    fn a_run_of_a_dead_process_or_a_very_old_run_is_abandoned() {
        let now = Utc::now();
        let running = vec![
            (1, Some("h:1:1".to_string()), now),
            (2, Some("h:2:1".to_string()), now),
            (3, None, now - chrono::Duration::hours(25)),
            (4, None, now - chrono::Duration::hours(1)),
        ];
        let got = abandoned_runs(&running, now, |o| o == "h:1:1");
        assert_eq!(got.iter().map(|g| g.0).collect::<Vec<_>>(), [1, 3]);
        assert!(got[0].1.contains("(h:1:1) is gone"), "{}", got[0].1);
    }

    #[test]
    fn a_pid_that_no_longer_exists_on_this_host_is_dead() {
        let mut child = std::process::Command::new("true").spawn().expect("spawn");
        let pid = child.id();
        child.wait().expect("wait");
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname").expect("hostname").trim().to_string();
        assert!(owner_is_dead(&format!("{host}:{pid}:7")));
        assert!(!owner_is_dead(&crate::ledger::process_owner()), "this process is alive");
        assert!(!owner_is_dead(&format!("another-host-entirely:{pid}:7")), "nothing is known of another host");
    }
}
