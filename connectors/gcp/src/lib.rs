//! Google Cloud: the Cloud Billing export in BigQuery (`gcp_billing_export`, through the
//! `google-cloud-bigquery` crate) and the same rows from extract files
//! (`import --format gcp-export`). Normalisation is pure ([`normalize`]).

pub mod bigquery;
pub mod files;
pub mod focus;
pub mod focus_tables;
pub mod normalize;

use std::path::{Path, PathBuf};
use std::time::Duration;

use async_trait::async_trait;
use costledger_core::{Batch, Connector, ConnectorError, Context, Delivery, PeriodWindow};
use costledger_files::{Scoping, file_sha256, list_files};
use futures::stream::BoxStream;
use serde::Deserialize;

use crate::bigquery::BigQueryExport;

/// `type: gcp_billing_export`
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct GcpParams {
    /// Project the queries run (and are billed) in.
    pub project: String,
    /// `project.dataset.gcp_billing_export_v1_XXXXXX_XXXXXX_XXXXXX` (or the `_resource_v1_`
    /// detailed table).
    pub table: String,
    /// A service account key file; without it, application default credentials are used.
    pub credentials_file: Option<PathBuf>,
    /// No credentials at all (emulators and tests).
    #[serde(default)]
    pub anonymous: bool,
    /// Endpoint override (default https://bigquery.googleapis.com).
    pub endpoint: Option<String>,
    /// Dataset location, e.g. `US` or `EU`.
    pub location: Option<String>,
    /// Refuse queries that would bill more bytes than this.
    pub max_bytes_billed: Option<i64>,
    /// Only list partitions of the last N days (default: the whole window of months).
    pub lookback_days: Option<u32>,
    /// `standard` (the export table, standard or detailed) or `focus` (the FOCUS view). Default:
    /// `focus` when the table name contains "focus", else `standard`.
    pub schema: Option<GcpSchema>,
    /// Retries of a query answered 429 or 5xx.
    #[serde(default = "default_attempts")]
    pub attempts: u32,
    #[serde(default = "default_base_ms")]
    pub base_delay_ms: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GcpSchema {
    Standard,
    Focus,
}

impl GcpParams {
    pub fn is_focus(&self) -> bool {
        match self.schema {
            Some(s) => s == GcpSchema::Focus,
            None => self.table.to_ascii_lowercase().contains("focus"),
        }
    }
}

fn default_attempts() -> u32 {
    5
}
fn default_base_ms() -> u64 {
    1000
}

fn valid_ident(s: &str) -> bool {
    !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || "_-:".contains(c))
}

impl GcpParams {
    pub fn validate(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        if !valid_ident(&self.project) {
            out.push(("project".into(), format!("'{}' is not a GCP project id", self.project)));
        }
        let parts: Vec<&str> = self.table.split('.').collect();
        if parts.len() != 3 || !parts.iter().all(|p| valid_ident(p)) {
            out.push((
                "table".into(),
                format!(
                    "'{}' must be project.dataset.table (e.g. acme.billing.gcp_billing_export_v1_0123AB_CDEF45_6789AB)",
                    self.table
                ),
            ));
        }
        if let Some(e) = &self.endpoint
            && !(e.starts_with("http://") || e.starts_with("https://"))
        {
            out.push(("endpoint".into(), format!("'{e}' must be an http(s)://HOST[:PORT] URL")));
        }
        if self.anonymous && self.credentials_file.is_some() {
            out.push(("anonymous".into(), "give either anonymous or credentials_file, not both".into()));
        }
        if self.max_bytes_billed.is_some_and(|b| b <= 0) {
            out.push(("max_bytes_billed".into(), "must be a positive number of bytes".into()));
        }
        out
    }
}

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
