//! FOCUS 1.0–1.2 files (CSV, plain or gzip, or Parquet), from a file or a directory.
//!
//! IO is thin (`costledger_files::reader`: open, gunzip, records, batches over a bounded
//! channel); normalisation is pure ([`normalize`]: header → column map, record → `ChargeLine`
//! or a row error) and tested from fixtures.

pub mod normalize;

use std::path::{Path, PathBuf};

use async_trait::async_trait;
use costledger_core::{Batch, ChargeLine, Connector, ConnectorError, Context, Delivery, PeriodWindow, RowError};
use costledger_files::reader::{RecordFormat, stream_files_as};
use costledger_files::{Scoping, file_sha256, list_files};
use futures::stream::BoxStream;

use crate::normalize::{ColumnMap, normalize_record};

impl RecordFormat for ColumnMap {
    const HEADER_HINT: &'static str = "export the data as FOCUS 1.0, 1.1 or 1.2 CSV with a header row";
    fn from_header(header: &csv::ByteRecord) -> Result<Self, String> {
        ColumnMap::from_header(header)
    }
    fn width(&self) -> usize {
        ColumnMap::width(self)
    }
    fn column_name(&self, i: usize) -> &str {
        self.name(i)
    }
    fn raw_amount(&self, rec: &csv::ByteRecord) -> Option<String> {
        ColumnMap::raw_amount(self, rec)
    }
    fn raw_currency(&self, rec: &csv::ByteRecord) -> Option<String> {
        ColumnMap::raw_currency(self, rec)
    }
    fn normalize(&self, rec: &csv::ByteRecord, location: &str) -> Result<(ChargeLine, u64), RowError> {
        normalize_record(self, rec, location)
    }
}

/// FOCUS files, in order, as batches.
pub fn stream_files(paths: Vec<PathBuf>, cx: &Context) -> BoxStream<'static, Result<Batch, ConnectorError>> {
    stream_files_as::<ColumnMap>(paths, cx)
}

/// Where a FOCUS source reads: files and/or directories (searched recursively for `.csv`,
/// `.csv.gz` and `.parquet`). A newer file at the same scope (see [`Scoping`]) replaces the
/// older one.
#[derive(Debug, Clone)]
pub struct FocusConnector {
    paths: Vec<PathBuf>,
    scoping: Scoping,
}

impl FocusConnector {
    /// A configured source: scopes relative to the configured paths.
    pub fn new(paths: Vec<PathBuf>) -> Self {
        Self { paths, scoping: Scoping::Relative }
    }

    /// Files imported by hand: scopes are canonical absolute paths.
    pub fn ad_hoc(paths: Vec<PathBuf>) -> Self {
        Self { paths, scoping: Scoping::Absolute }
    }

    /// (scope, file) for every file to load, sorted by scope. Two files with one scope are an
    /// error: one would silently replace the other.
    pub fn files(&self) -> Result<Vec<(String, PathBuf)>, ConnectorError> {
        list_files(&self.paths, is_bill_file, self.scoping)
    }
}

fn is_bill_file(p: &Path) -> bool {
    let n = p.file_name().map(|n| n.to_string_lossy().to_ascii_lowercase()).unwrap_or_default();
    n.ends_with(".csv") || n.ends_with(".csv.gz") || n.ends_with(".parquet")
}

#[async_trait]
impl Connector for FocusConnector {
    fn kind(&self) -> &'static str {
        "focus"
    }

    async fn check(&self, _cx: &Context) -> Result<(), ConnectorError> {
        let this = self.clone();
        tokio::task::spawn_blocking(move || {
            for (_, f) in this.files()? {
                std::fs::File::open(&f).map_err(|e| ConnectorError::io(f.display().to_string(), e))?;
            }
            Ok(())
        })
        .await
        .map_err(|e| ConnectorError::Transient(format!("check task failed: {e}")))?
    }

    async fn deliveries(&self, _window: PeriodWindow, _cx: &Context) -> Result<Vec<Delivery>, ConnectorError> {
        let this = self.clone();
        tokio::task::spawn_blocking(move || {
            let mut out = Vec::new();
            for (scope, f) in this.files()? {
                out.push(Delivery {
                    scope,
                    // The file's SHA-256, computed by `delivery_key` while the file is loaded.
                    delivery_key: String::new(),
                    billing_period: None,
                    description: f.display().to_string(),
                    items: vec![f.display().to_string()],
                    final_periods: false,
                    key_pending: true,
                });
            }
            Ok(out)
        })
        .await
        .map_err(|e| ConnectorError::Transient(format!("listing task failed: {e}")))?
    }

    fn fetch<'a>(&'a self, d: &'a Delivery, cx: &'a Context) -> BoxStream<'a, Result<Batch, ConnectorError>> {
        let paths: Vec<PathBuf> = d.items.iter().map(PathBuf::from).collect();
        stream_files(paths, cx)
    }

    async fn delivery_key(&self, d: &Delivery, _cx: &Context) -> Result<String, ConnectorError> {
        let paths: Vec<PathBuf> = d.items.iter().map(PathBuf::from).collect();
        tokio::task::spawn_blocking(move || match paths.as_slice() {
            [one] => file_sha256(one),
            _ => Err(ConnectorError::Transient(format!("a FOCUS delivery is one file, not {}", paths.len()))),
        })
        .await
        .map_err(|e| ConnectorError::Transient(format!("hashing task failed: {e}")))?
    }
}
