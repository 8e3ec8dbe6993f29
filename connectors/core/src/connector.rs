//! The one seam every provider implements.

use async_trait::async_trait;
use futures::stream::BoxStream;
use tokio_util::sync::CancellationToken;

use crate::error::{ConnectorError, RowError};
use crate::line::ChargeLine;
use crate::period::BillingPeriod;

/// Everything a connector may use at run time. Connectors never see the ledger.
#[derive(Debug, Clone)]
pub struct Context {
    /// The source name from the config (for messages and logs).
    pub source: String,
    /// Upper bound on lines per [`Batch`] (memory stays bounded by batch × channel depth).
    pub batch_rows: usize,
    pub cancel: CancellationToken,
    /// Billing periods the ledger already holds as `final` for this source (filled by the
    /// loader before `deliveries`). An API connector need not ask the provider for them again.
    pub final_periods: std::collections::BTreeSet<BillingPeriod>,
    /// The years a line's dates must fall in (the loader quarantines a line outside them).
    pub date_bounds: crate::line::DateBounds,
    /// How much a reader holds of one record and how far a compressed file may expand.
    pub read_limits: ReadLimits,
    /// When set (the daemon), a delivery that failed on the same input is not retried before
    /// this much time, doubled per failed attempt; unset (a command run by hand), at once.
    pub failed_backoff: Option<std::time::Duration>,
}

/// Bounds on what one file may make a reader hold, whatever its content (`ingest.*` in the
/// config): memory stays bounded on a hostile or broken file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReadLimits {
    /// One record's bytes (`ingest.max_record_bytes`). A longer record is quarantined with its
    /// line and skipped up to the next line break, never held whole.
    pub max_record_bytes: usize,
    /// Decompressed bytes per compressed byte of one file (`ingest.max_decompression_ratio`),
    /// checked once the output passes [`ReadLimits::RATIO_FLOOR`]: a bill compresses 5–50×, a
    /// "zip bomb" 1000×.
    pub max_decompression_ratio: u64,
}

impl ReadLimits {
    /// Output below this size is never refused for its ratio.
    pub const RATIO_FLOOR: u64 = 64 << 20;
}

impl Default for ReadLimits {
    fn default() -> Self {
        ReadLimits { max_record_bytes: 8 << 20, max_decompression_ratio: 200 }
    }
}

impl Context {
    pub fn new(source: impl Into<String>) -> Self {
        Self {
            source: source.into(),
            batch_rows: 5_000,
            cancel: CancellationToken::new(),
            final_periods: Default::default(),
            date_bounds: Default::default(),
            read_limits: Default::default(),
            failed_backoff: None,
        }
    }
}

/// Billing periods an API connector should pull (inclusive). File connectors may ignore it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeriodWindow {
    pub from: BillingPeriod,
    pub to: BillingPeriod,
}

/// One unit of loading: what it replaces (`scope`) and which version it is (`delivery_key`).
/// The ledger keeps exactly one current load per (source, scope); the same key again is a no-op.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    /// What a newer delivery replaces: e.g. `2026-10`, `2026-10/2026-10-03`, a file name.
    pub scope: String,
    /// The version: assemblyId, manifest id, max(export_time), content hash, ETag…
    pub delivery_key: String,
    /// The billing period the scope covers, when it is one period.
    pub billing_period: Option<BillingPeriod>,
    /// Human description for `loads` and logs.
    pub description: String,
    /// Connector-private locators (file paths, object keys) to fetch.
    pub items: Vec<String>,
    /// The provider says the periods in this delivery are final (invoiced).
    pub final_periods: bool,
    /// `delivery_key` is not known yet (it is empty): it is a content hash. The load commits
    /// under the key of the bytes the reader parsed ([`Batch::content_key`]). Only when the
    /// scope already holds a load does the loader also ask [`Connector::delivery_key`] beside
    /// staging, so a re-delivered file is skipped without being staged; a new scope's file is
    /// read once. Either way the key is checked before the commit (a delivery already current,
    /// here or under another scope, is discarded).
    pub key_pending: bool,
}

/// A bounded slice of a delivery: normalised lines plus the rows that failed.
#[derive(Debug, Default)]
pub struct Batch {
    pub lines: Vec<ChargeLine>,
    pub errors: Vec<RowError>,
    /// Amounts whose digits beyond 28 places (or dust below 1e-28) were rounded.
    pub rounded_amounts: u64,
    /// Source records read in this batch (lines + errors; for progress).
    pub records: u64,
    /// Where the loader hands the lines back once they are written, so they are freed on the
    /// thread that allocated them (a free from another thread costs several times more).
    /// `None`: the loader drops them itself.
    pub spent: Option<SpentLines>,
    /// On the last batch of a file: the key (`sha256:<hex>`) of exactly the bytes the parser
    /// read, checked against the file's size and modification time when reading ended. The
    /// loader commits a `key_pending` delivery under this key and nothing else, so a load's key
    /// always describes its rows.
    pub content_key: Option<String>,
}

/// The way back for written lines: a small bounded queue to the producing thread, which drops
/// what it finds there between batches. Never blocks: when the queue is full or its reader
/// is gone, the lines are dropped on the spot.
#[derive(Debug, Clone)]
pub struct SpentLines(std::sync::mpsc::SyncSender<Vec<ChargeLine>>);

impl SpentLines {
    /// A queue of `depth` batches and the producer's end.
    pub fn channel(depth: usize) -> (SpentLines, std::sync::mpsc::Receiver<Vec<ChargeLine>>) {
        let (tx, rx) = std::sync::mpsc::sync_channel(depth);
        (SpentLines(tx), rx)
    }

    pub fn give(&self, lines: Vec<ChargeLine>) {
        // Full or disconnected: the lines come back in the error and are dropped here.
        let _ = self.0.try_send(lines);
    }
}

#[async_trait]
pub trait Connector: Send + Sync {
    /// The source type, as written in the config (`focus`, `aws_cur`, …).
    fn kind(&self) -> &'static str;
    /// Cheap connectivity/readability check; no data is loaded.
    async fn check(&self, cx: &Context) -> Result<(), ConnectorError>;
    /// What there is to load in `window`.
    async fn deliveries(&self, window: PeriodWindow, cx: &Context) -> Result<Vec<Delivery>, ConnectorError>;
    /// Stream one delivery in bounded batches. An `Err` item fails the whole delivery (nothing
    /// of it becomes visible); row-level problems travel inside the batches.
    fn fetch<'a>(&'a self, d: &'a Delivery, cx: &'a Context) -> BoxStream<'a, Result<Batch, ConnectorError>>;
    /// The key of a delivery listed with `key_pending` (e.g. the SHA-256 of its file), computed
    /// by a separate read while it is being fetched, when its scope already holds a load (see
    /// [`Delivery::key_pending`]). Connectors that list keys up front need not implement it.
    async fn delivery_key(&self, d: &Delivery, _cx: &Context) -> Result<String, ConnectorError> {
        Ok(d.delivery_key.clone())
    }
    /// Provider API calls made so far (they can cost money; the daemon reports them).
    fn api_calls(&self) -> u64 {
        0
    }
}
