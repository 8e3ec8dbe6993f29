//! Google Cloud: the Cloud Billing export in BigQuery (`gcp_billing_export`, through the
//! `google-cloud-bigquery` crate) and the same rows from extract files
//! (`import --format gcp-export`). Normalisation is pure ([`normalize`]).

pub mod bigquery;
pub mod files;
pub mod focus;
pub mod focus_tables;
pub mod normalize;
pub mod params;

use std::path::{Path, PathBuf};
use std::time::Duration;

use async_trait::async_trait;
use costledger_core::{Batch, Connector, ConnectorError, Context, Delivery, PeriodWindow};
use costledger_files::{Scoping, file_sha256, list_files};
use futures::stream::BoxStream;

pub use crate::params::*;

use crate::bigquery::BigQueryExport;

pub struct GcpExportConnector {
    inner: BigQueryExport,
}

impl GcpExportConnector {
    /// Pin "now" (tests).
    pub fn with_clock(mut self, now: fn() -> chrono::DateTime<chrono::Utc>) -> Self {
        self.inner.now = now;
        self
    }
}

pub async fn build(p: &GcpParams) -> Result<GcpExportConnector, ConnectorError> {
    use google_cloud_bigquery::client::BigQuery;
    let mut b = BigQuery::builder().with_project_id(p.project.clone());
    if let Some(e) = &p.endpoint {
        b = b.with_endpoint(e.clone());
    }
    if p.anonymous {
        b = b.with_credentials(google_cloud_auth::credentials::anonymous::Builder::new().build());
    } else if let Some(f) = &p.credentials_file {
        let loc = f.display().to_string();
        let text = std::fs::read_to_string(f).map_err(|e| ConnectorError::io(&loc, e))?;
        let json: serde_json::Value = serde_json::from_str(&text).map_err(|e| {
            ConnectorError::input(&loc, format!("not a service account key (JSON): {e}"), "download a key")
        })?;
        let creds = google_cloud_auth::credentials::service_account::Builder::new(json)
            .build()
            .map_err(|e| ConnectorError::Auth(format!("{loc}: {e}")))?;
        b = b.with_credentials(creds);
    }
    let client = b.build().await.map_err(|e| {
        ConnectorError::Auth(format!(
            "cannot set up the BigQuery client: {e}. Give credentials_file, or set up application default credentials"
        ))
    })?;
    Ok(GcpExportConnector {
        inner: BigQueryExport {
            client,
            project: p.project.clone(),
            table: p.table.clone(),
            location: p.location.clone(),
            max_bytes_billed: p.max_bytes_billed,
            lookback_days: p.lookback_days,
            focus: p.is_focus(),
            attempts: p.attempts.max(1),
            base_delay: Duration::from_millis(p.base_delay_ms),
            now: chrono::Utc::now,
            calls: Default::default(),
        },
    })
}

#[async_trait]
impl Connector for GcpExportConnector {
    fn kind(&self) -> &'static str {
        "gcp_billing_export"
    }

    async fn check(&self, cx: &Context) -> Result<(), ConnectorError> {
        let now = costledger_core::BillingPeriod::of(chrono::Utc::now());
        self.inner.deliveries(PeriodWindow { from: now, to: now }, cx).await.map(|_| ())
    }

    async fn deliveries(&self, window: PeriodWindow, cx: &Context) -> Result<Vec<Delivery>, ConnectorError> {
        self.inner.deliveries(window, cx).await
    }

    fn fetch<'a>(&'a self, d: &'a Delivery, cx: &'a Context) -> BoxStream<'a, Result<Batch, ConnectorError>> {
        self.inner.fetch(d, cx)
    }

    fn api_calls(&self) -> u64 {
        self.inner.api_calls()
    }
}

/// Extract files (JSON lines or CSV, plain or gzip) from a directory (recursively) or by hand.
pub struct GcpFileConnector {
    paths: Vec<PathBuf>,
    scoping: Scoping,
}

impl GcpFileConnector {
    /// A configured source: scopes relative to the configured directory.
    pub fn new(paths: Vec<PathBuf>) -> Self {
        GcpFileConnector { paths, scoping: Scoping::Relative }
    }

    /// Files imported by hand: scopes are canonical absolute paths.
    pub fn ad_hoc(paths: Vec<PathBuf>) -> Self {
        GcpFileConnector { paths, scoping: Scoping::Absolute }
    }

    /// (scope, file) of every extract, sorted by scope.
    pub fn files(&self) -> Result<Vec<(String, PathBuf)>, ConnectorError> {
        list_files(&self.paths, is_extract_file, self.scoping)
    }
}

/// `.json`, `.jsonl`, `.ndjson` or `.csv`, each plain or `.gz`.
fn is_extract_file(p: &Path) -> bool {
    let n = p.file_name().map(|n| n.to_string_lossy().to_ascii_lowercase()).unwrap_or_default();
    let n = n.strip_suffix(".gz").unwrap_or(&n);
    [".json", ".jsonl", ".ndjson", ".csv"].iter().any(|x| n.ends_with(x))
}

#[async_trait]
impl Connector for GcpFileConnector {
    fn kind(&self) -> &'static str {
        "gcp_export_files"
    }

    async fn check(&self, _cx: &Context) -> Result<(), ConnectorError> {
        for (_, f) in self.files()? {
            std::fs::File::open(&f).map_err(|e| ConnectorError::io(f.display().to_string(), e))?;
        }
        Ok(())
    }

    async fn deliveries(&self, _window: PeriodWindow, _cx: &Context) -> Result<Vec<Delivery>, ConnectorError> {
        let mut out = Vec::new();
        for (scope, f) in self.files()? {
            out.push(Delivery {
                scope,
                // The SHA-256 of the bytes parsed, reported by the reader (and computed
                // alongside by `delivery_key`, so a file already current is skipped early).
                delivery_key: String::new(),
                billing_period: None,
                description: f.display().to_string(),
                items: vec![f.display().to_string()],
                final_periods: false,
                key_pending: true,
            });
        }
        Ok(out)
    }

    async fn delivery_key(&self, d: &Delivery, _cx: &Context) -> Result<String, ConnectorError> {
        let paths: Vec<PathBuf> = d.items.iter().map(PathBuf::from).collect();
        tokio::task::spawn_blocking(move || match paths.as_slice() {
            [one] => file_sha256(one),
            _ => Err(ConnectorError::Transient(format!("a GCP extract delivery is one file, not {}", paths.len()))),
        })
        .await
        .map_err(|e| ConnectorError::Transient(format!("hashing task failed: {e}")))?
    }

    fn fetch<'a>(&'a self, d: &'a Delivery, cx: &'a Context) -> BoxStream<'a, Result<Batch, ConnectorError>> {
        files::stream_files(d.items.iter().map(PathBuf::from).collect(), cx)
    }
}
