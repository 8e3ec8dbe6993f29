//! `oci_cost_report`: cost reports (`reports/cost-csv/`) or FOCUS reports (`FOCUS Reports/`)
//! from Oracle's Object Storage (namespace `bling`, bucket = the tenancy OCID; signed list and
//! get) or from a local directory.
//!
//! Reports are append-only files: each object is one delivery whose scope and key are the
//! object name (a directory file: its relative path and content hash), so a file is never
//! summed twice. A downloaded object is spooled to a temporary file and parsed from there
//! with the shared CSV reader (bounded memory).

use std::collections::BTreeMap;
use std::path::PathBuf;

use costledger_core::{Batch, ConnectorError, Context, Delivery, PeriodWindow};
use costledger_files::file_sha256;
use costledger_files::object::{ObjectBytes, ObjectInfo, RemoteStore, download};
use costledger_files::reader::stream_files_as;
use costledger_focus::FocusConnector;
use costledger_focus::normalize::ColumnMap;
use futures::StreamExt;
use futures::stream::BoxStream;
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use reqwest::Method;
use serde::Deserialize;

use crate::client::OciClient;
use crate::cost_report::CostReportColumns;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReportKind {
    /// `reports/cost-csv/…` (Oracle's cost report columns).
    Cost,
    /// `FOCUS Reports/YYYY/MM/DD/…` (FOCUS columns with OCI's names).
    Focus,
}

impl ReportKind {
    pub fn default_prefix(&self) -> &'static str {
        match self {
            ReportKind::Cost => "reports/cost-csv/",
            ReportKind::Focus => "FOCUS Reports/",
        }
    }
}

pub struct ObjectStore {
    pub client: OciClient,
    pub namespace: String,
    pub bucket: String,
    pub prefix: String,
}

pub enum ReportSource {
    Directory(Vec<PathBuf>),
    ObjectStorage(Box<ObjectStore>),
}

pub struct OciReportConnector {
    kind: ReportKind,
    source: ReportSource,
    /// Directory scopes are canonical absolute paths (files imported by hand).
    absolute_scopes: bool,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ListObjects {
    #[serde(default)]
    objects: Vec<ObjectSummary>,
    next_start_with: Option<String>,
}

#[derive(Deserialize)]
struct ObjectSummary {
    name: String,
}

/// Path segments are percent-encoded except the unreserved characters.
const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'.').remove(b'_').remove(b'~');

fn is_report(name: &str) -> bool {
    let n = name.to_ascii_lowercase();
    n.ends_with(".csv.gz") || n.ends_with(".csv")
}

impl ObjectStore {
    fn base_path(&self) -> String {
        format!(
            "/n/{}/b/{}/o",
            utf8_percent_encode(&self.namespace, SEGMENT),
            utf8_percent_encode(&self.bucket, SEGMENT)
        )
    }
}

#[async_trait::async_trait]
impl RemoteStore for ObjectStore {
    /// Every report object under the prefix (paged with `start`).
    async fn list(&self) -> Result<Vec<ObjectInfo>, ConnectorError> {
        let mut out = Vec::new();
        let mut start: Option<String> = None;
        loop {
            let mut path = format!(
                "{}?prefix={}&fields=name,size,timeCreated",
                self.base_path(),
                utf8_percent_encode(&self.prefix, SEGMENT)
            );
            if let Some(s) = &start {
                path.push_str(&format!("&start={}", utf8_percent_encode(s, SEGMENT)));
            }
            let resp = self.client.send(Method::GET, &path, None).await?;
            let bytes = resp.bytes().await.map_err(|e| ConnectorError::Transient(format!("listing objects: {e}")))?;
            let page: ListObjects = serde_json::from_slice(&bytes).map_err(|e| {
                ConnectorError::input(&path, format!("not an object listing: {e}"), "check the endpoint URL")
            })?;
            out.extend(page.objects.into_iter().filter(|o| is_report(&o.name)).map(|o| ObjectInfo {
                key: o.name,
                etag: None,
                modified: None,
            }));
            match page.next_start_with.filter(|s| !s.is_empty()) {
                Some(s) => start = Some(s),
                None => break,
            }
        }
        out.sort_by(|a, b| a.key.cmp(&b.key));
        out.dedup_by(|a, b| a.key == b.key);
        Ok(out)
    }

    /// One object's bytes, streamed.
    async fn get(&self, name: &str) -> Result<ObjectBytes<'_>, ConnectorError> {
        let path = format!("{}/{}", self.base_path(), utf8_percent_encode(name, SEGMENT));
        let resp = self.client.send(Method::GET, &path, None).await?;
        let name = name.to_string();
        let chunks = futures::stream::unfold(Some(resp), move |resp| {
            let name = name.clone();
            async move {
                let mut resp = resp?;
                match resp.chunk().await {
                    Ok(Some(c)) => Some((Ok(c.to_vec()), Some(resp))),
                    Ok(None) => None,
                    Err(e) => Some((Err(ConnectorError::Transient(format!("downloading {name}: {e}"))), None)),
                }
            }
        });
        Ok(Box::pin(chunks))
    }

    fn url(&self, key: &str) -> String {
        format!("oci://{}/{}/{key}", self.namespace, self.bucket)
    }

    fn api_calls(&self) -> u64 {
        self.client.calls()
    }
}

impl OciReportConnector {
    pub fn new(kind: ReportKind, source: ReportSource) -> Self {
        OciReportConnector { kind, source, absolute_scopes: false }
    }

    /// Report files imported by hand: scopes are canonical absolute paths.
    pub fn ad_hoc(kind: ReportKind, paths: Vec<PathBuf>) -> Self {
        OciReportConnector { kind, source: ReportSource::Directory(paths), absolute_scopes: true }
    }

    fn parse(&self, paths: Vec<PathBuf>, cx: &Context) -> BoxStream<'static, Result<Batch, ConnectorError>> {
        match self.kind {
            ReportKind::Cost => stream_files_as::<CostReportColumns>(paths, cx),
            ReportKind::Focus => stream_files_as::<ColumnMap>(paths, cx),
        }
    }
}

/// A file of another OCI report type, in a directory synced from Oracle's bucket (which keeps
/// `reports/cost-csv/`, `reports/usage-csv/` and `FOCUS Reports/` side by side): what it is,
/// or `None` when it is this source's kind. Usage reports (quantities, no cost) are not read
/// yet.
fn other_report(kind: ReportKind, scope: &str) -> Option<&'static str> {
    let parts: Vec<String> = scope.split('/').map(|p| p.to_ascii_lowercase()).collect();
    let has = |name: &str| parts.iter().any(|p| p == name);
    if has("usage-csv") {
        return Some("OCI usage report(s) (reports/usage-csv: quantities without cost; not read yet)");
    }
    match kind {
        ReportKind::Cost if has("focus reports") => Some("OCI FOCUS report(s) (import them with --format oci-focus)"),
        ReportKind::Focus if has("cost-csv") => Some("OCI cost report(s) (import them with --format oci-cost)"),
        _ => None,
    }
}

#[async_trait::async_trait]
impl costledger_core::Connector for OciReportConnector {
    fn kind(&self) -> &'static str {
        "oci_cost_report"
    }

    fn api_calls(&self) -> u64 {
        match &self.source {
            ReportSource::Directory(_) => 0,
            ReportSource::ObjectStorage(s) => s.client.calls(),
        }
    }

    async fn check(&self, cx: &Context) -> Result<(), ConnectorError> {
        match &self.source {
            ReportSource::Directory(paths) => FocusConnector::new(paths.clone()).check(cx).await,
            ReportSource::ObjectStorage(s) => {
                let path = format!("{}?prefix={}&limit=1", s.base_path(), utf8_percent_encode(&s.prefix, SEGMENT));
                s.client.send(Method::GET, &path, None).await.map(|_| ())
            }
        }
    }

    async fn deliveries(&self, window: PeriodWindow, cx: &Context) -> Result<Vec<Delivery>, ConnectorError> {
        match &self.source {
            ReportSource::Directory(paths) => {
                let files = if self.absolute_scopes {
                    FocusConnector::ad_hoc(paths.clone()).files()?
                } else {
                    FocusConnector::new(paths.clone()).files()?
                };
                let mut out = Vec::new();
                let mut skipped: BTreeMap<&'static str, u64> = BTreeMap::new();
                for (scope, f) in files {
                    if let Some(other) = other_report(self.kind, &scope) {
                        *skipped.entry(other).or_default() += 1;
                        continue;
                    }
                    out.push(Delivery {
                        scope,
                        // The SHA-256 of the bytes parsed (see `delivery_key`).
                        delivery_key: String::new(),
                        billing_period: None,
                        description: f.display().to_string(),
                        items: vec![f.display().to_string()],
                        final_periods: false,
                        key_pending: true,
                    });
                }
                for (what, n) in skipped {
                    tracing::warn!(source = %cx.source, files = n, "skipped {n} {what} in the directory: not this source's format");
                }
                let _ = window;
                Ok(out)
            }
            ReportSource::ObjectStorage(s) => {
                let before = s.client.calls();
                let names: Vec<String> = s.list().await?.into_iter().map(|o| o.key).collect();
                tracing::info!(source = %cx.source, objects = names.len(), api_calls = s.client.calls() - before, "OCI report objects listed");
                Ok(names
                    .into_iter()
                    .map(|n| Delivery {
                        scope: n.clone(),
                        delivery_key: n.clone(),
                        billing_period: None,
                        description: s.url(&n),
                        items: vec![n],
                        final_periods: false,
                        key_pending: false,
                    })
                    .collect())
            }
        }
    }

    async fn delivery_key(&self, d: &Delivery, _cx: &Context) -> Result<String, ConnectorError> {
        match (&self.source, d.items.as_slice()) {
            (ReportSource::Directory(_), [one]) => {
                let path = PathBuf::from(one);
                tokio::task::spawn_blocking(move || file_sha256(&path))
                    .await
                    .map_err(|e| ConnectorError::Transient(format!("hashing task failed: {e}")))?
            }
            _ => Ok(d.delivery_key.clone()),
        }
    }

    fn fetch<'a>(&'a self, d: &'a Delivery, cx: &'a Context) -> BoxStream<'a, Result<Batch, ConnectorError>> {
        match &self.source {
            ReportSource::Directory(_) => self.parse(d.items.iter().map(PathBuf::from).collect(), cx),
            ReportSource::ObjectStorage(s) => {
                let name = d.items.first().cloned().unwrap_or_default();
                let label = s.url(&name);
                Box::pin(futures::stream::once(async move { download(s.as_ref(), &name).await }).flat_map(move |r| {
                    match r {
                        Ok(tmp) => {
                            let tmp_str = tmp.display().to_string();
                            let label = label.clone();
                            let stream = self.parse(vec![tmp.to_path_buf()], cx);
                            // `tmp` lives as long as the stream: the file is deleted after parsing.
                            stream
                                .map(move |b| {
                                    let _keep = &tmp;
                                    b.map(|b| costledger_files::spool::relabel(b, &tmp_str, &label))
                                })
                                .boxed()
                        }
                        Err(e) => futures::stream::once(async move { Err(e) }).boxed(),
                    }
                }))
            }
        }
    }
}
