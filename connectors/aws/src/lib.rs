//! AWS connectors.
//!
//! - `aws_cur` and `aws_data_exports` ([`AwsFileConnector`]): legacy CUR by manifest, CUR 2.0
//!   and AWS FOCUS Data Exports by `BILLING_PERIOD` partition (see [`files`] for the delivery
//!   rules), read from a local directory or from S3 through `aws-sdk-s3` ([`store`]); rows are
//!   normalised by [`cur`] (CUR) or the FOCUS normaliser.
//! - `aws_cost_explorer` ([`ce::CostExplorerConnector`]): GetCostAndUsage through
//!   `aws-sdk-costexplorer`.
//!
//! Config → typed params ([`FileParams`], [`CostExplorerParams`], `deny_unknown_fields`,
//! validated without IO) → [`build_files`] / [`build_cost_explorer`] (credentials resolved, no
//! request sent) → a running connector; `Connector::check` is the connectivity test.

pub mod ce;
pub mod cur;
pub mod files;
pub mod focus_tables;
pub mod store;

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use async_trait::async_trait;
use aws_config::BehaviorVersion;
use aws_credential_types::provider::SharedCredentialsProvider;
use costledger_core::{Batch, Connector, ConnectorError, Context, Delivery, PeriodWindow};
use costledger_files::reader::stream_files_as;
use costledger_focus::normalize::ColumnMap;
use futures::StreamExt;
use futures::stream::BoxStream;
use serde::Deserialize;

use crate::cur::CurColumns;
use crate::files::{Layout, discover, parse_item};
use crate::store::{Root, S3Store};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AwsFormat {
    /// Legacy Cost and Usage Report.
    Cur,
    /// CUR 2.0 (Data Exports).
    Cur2,
    /// AWS FOCUS 1.0/1.2 export (Data Exports).
    Focus,
}

/// Credentials: the standard AWS chain (environment, `~/.aws`, web identity, ECS, IMDS) unless
/// a profile or keys are given; `role_arn` is then assumed through STS. Secrets belong in
/// `${ENV}` references.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Credentials {
    pub profile: Option<String>,
    pub role_arn: Option<String>,
    pub external_id: Option<String>,
    pub access_key_id: Option<String>,
    pub secret_access_key: Option<String>,
    pub session_token: Option<String>,
}

impl Credentials {
    pub fn validate(&self, path: &str) -> Vec<(String, String)> {
        let mut out = Vec::new();
        if self.access_key_id.is_some() != self.secret_access_key.is_some() {
            out.push((format!("{path}.access_key_id"), "give access_key_id and secret_access_key together".into()));
        }
        if self.access_key_id.is_some() && self.profile.is_some() {
            out.push((format!("{path}.profile"), "give either a profile or keys, not both".into()));
        }
        if let Some(r) = &self.role_arn
            && !(r.starts_with("arn:aws") && r.contains(":role/"))
        {
            out.push((
                format!("{path}.role_arn"),
                format!("'{r}' is not an IAM role ARN (arn:aws:iam::123456789012:role/name)"),
            ));
        }
        if self.external_id.is_some() && self.role_arn.is_none() {
            out.push((format!("{path}.external_id"), "only makes sense with role_arn".into()));
        }
        out
    }
}

/// Where the SDK sends requests: an AWS region, or an S3-compatible endpoint.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct S3Params {
    pub bucket: Option<String>,
    #[serde(default)]
    pub prefix: String,
    pub region: Option<String>,
    /// A custom endpoint (S3-compatible storage, or a local test server).
    pub endpoint_url: Option<String>,
    /// Path-style addressing (`endpoint/bucket/key`); default: on with `endpoint_url`.
    pub force_path_style: Option<bool>,
}

/// `aws_cur` and `aws_data_exports`: files from a directory or from S3.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct FileParams {
    /// A synced copy of the bucket (or one file).
    pub path: Option<PathBuf>,
    #[serde(default)]
    pub paths: Vec<PathBuf>,
    pub s3: Option<S3Params>,
    #[serde(default)]
    pub credentials: Credentials,
    /// `aws_data_exports` only: `cur2` (default) or `focus`.
    pub format: Option<AwsFormat>,
}

/// Retries of throttled and failed calls, done by the SDK's standard retry strategy
/// (exponential backoff with jitter; `x-amz-retry-after` honoured).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetryParams {
    #[serde(default = "default_attempts")]
    pub attempts: u32,
    #[serde(default = "default_initial_ms")]
    pub initial_backoff_ms: u64,
    #[serde(default = "default_max_ms")]
    pub max_backoff_ms: u64,
}

fn default_attempts() -> u32 {
    5
}
fn default_initial_ms() -> u64 {
    1_000
}
fn default_max_ms() -> u64 {
    20_000
}

impl Default for RetryParams {
    fn default() -> Self {
        RetryParams {
            attempts: default_attempts(),
            initial_backoff_ms: default_initial_ms(),
            max_backoff_ms: default_max_ms(),
        }
    }
}

impl RetryParams {
    fn config(&self) -> aws_smithy_types::retry::RetryConfig {
        aws_smithy_types::retry::RetryConfig::standard()
            .with_max_attempts(self.attempts.max(1))
            .with_initial_backoff(Duration::from_millis(self.initial_backoff_ms))
            .with_max_backoff(Duration::from_millis(self.max_backoff_ms.max(self.initial_backoff_ms)))
    }
}

/// `aws_cost_explorer`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CostExplorerParams {
    /// Signing region of the Cost Explorer endpoint (us-east-1 for the aws partition).
    #[serde(default = "default_ce_region")]
    pub region: String,
    pub endpoint_url: Option<String>,
    #[serde(default)]
    pub credentials: Credentials,
    #[serde(default = "default_billed")]
    pub billed_metric: String,
    /// `AmortizedCost` (default), `NetAmortizedCost`, or `none` (EffectiveCost = BilledCost).
    #[serde(default = "default_effective")]
    pub effective_metric: String,
    pub tag_key: Option<String>,
    /// The payer account: BillingAccountId of every line (default: the linked account).
    pub billing_account_id: Option<String>,
    #[serde(default)]
    pub retry: RetryParams,
}

fn default_ce_region() -> String {
    "us-east-1".into()
}
fn default_billed() -> String {
    "UnblendedCost".into()
}
fn default_effective() -> String {
    "AmortizedCost".into()
}

/// `us-east-1`, `eu-central-1`, `us-gov-west-1`, `cn-north-1`, `ap-southeast-2`…
pub fn valid_region(r: &str) -> bool {
    let parts: Vec<&str> = r.split('-').collect();
    parts.len() >= 3
        && parts[0].len() == 2
        && parts[0].bytes().all(|b| b.is_ascii_lowercase())
        && parts[1..parts.len() - 1].iter().all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_lowercase()))
        && parts.last().is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
}

/// S3 bucket naming rules: 3–63 characters of a-z, 0-9, '.', '-', starting and ending with a
/// letter or digit.
pub fn valid_bucket(b: &str) -> bool {
    (3..=63).contains(&b.len())
        && b.bytes().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'.' || c == b'-')
        && b.bytes().next().is_some_and(|c| c.is_ascii_alphanumeric())
        && b.bytes().last().is_some_and(|c| c.is_ascii_alphanumeric())
}

impl FileParams {
    pub fn all_paths(&self) -> Vec<PathBuf> {
        self.path.iter().cloned().chain(self.paths.iter().cloned()).collect()
    }

    /// Problems that need no IO, as (key, message).
    pub fn validate(&self, data_exports: bool) -> Vec<(String, String)> {
        let mut out = Vec::new();
        match (&self.s3, self.all_paths().is_empty()) {
            (None, true) => out.push(("path".into(), "is required: a directory (or file), unless s3 is given".into())),
            (Some(_), false) => out.push(("s3".into(), "give either path(s) or s3, not both".into())),
            _ => {}
        }
        if let Some(s3) = &self.s3 {
            match &s3.bucket {
                None => out.push(("s3.bucket".into(), "is required".into())),
                Some(b) if !valid_bucket(b) => out.push((
                    "s3.bucket".into(),
                    format!("'{b}' is not a valid bucket name (3-63 characters: a-z, 0-9, '.', '-')"),
                )),
                _ => {}
            }
            if let Some(r) = &s3.region
                && !valid_region(r)
            {
                out.push(("s3.region".into(), format!("'{r}' is not an AWS region (like us-east-1)")));
            }
            if let Some(u) = &s3.endpoint_url
                && let Err(m) = costledger_core::text::valid_endpoint(u)
            {
                out.push(("s3.endpoint_url".into(), m));
            }
        }
        out.extend(self.credentials.validate("credentials"));
        match (data_exports, self.format) {
            (false, Some(_)) => out.push(("format".into(), "only applies to aws_data_exports".into())),
            (true, Some(AwsFormat::Cur)) => {
                out.push(("format".into(), "must be cur2 or focus (legacy CUR is the aws_cur type)".into()))
            }
            _ => {}
        }
        out
    }
}

impl CostExplorerParams {
    pub fn validate(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        if !valid_region(&self.region) {
            out.push(("region".into(), format!("'{}' is not an AWS region (like us-east-1)", self.region)));
        }
        if let Some(u) = &self.endpoint_url
            && let Err(m) = costledger_core::text::valid_endpoint(u)
        {
            out.push(("endpoint_url".into(), m));
        }
        const BILLED: [&str; 4] = ["UnblendedCost", "NetUnblendedCost", "BlendedCost", "AmortizedCost"];
        if !BILLED.contains(&self.billed_metric.as_str()) {
            out.push(("billed_metric".into(), format!("'{}' is not one of {}", self.billed_metric, BILLED.join(", "))));
        }
        const EFFECTIVE: [&str; 3] = ["AmortizedCost", "NetAmortizedCost", "none"];
        if !EFFECTIVE.contains(&self.effective_metric.as_str()) {
            out.push((
                "effective_metric".into(),
                format!("'{}' is not one of {}", self.effective_metric, EFFECTIVE.join(", ")),
            ));
        }
        if let Some(t) = &self.tag_key
            && (t.is_empty() || t.contains('$'))
        {
            out.push(("tag_key".into(), "must be a non-empty tag key without '$'".into()));
        }
        if self.retry.attempts == 0 {
            out.push(("retry.attempts".into(), "must be at least 1".into()));
        }
        out.extend(self.credentials.validate("credentials"));
        out
    }
}

/// The SDK configuration for a region, endpoint and credentials. No request is sent.
async fn sdk_config(region: &str, endpoint_url: Option<&str>, c: &Credentials) -> aws_config::SdkConfig {
    let mut loader =
        aws_config::defaults(BehaviorVersion::latest()).region(aws_config::Region::new(region.to_string()));
    if let Some(p) = &c.profile {
        loader = loader.profile_name(p);
    }
    if let (Some(k), Some(s)) = (&c.access_key_id, &c.secret_access_key) {
        loader = loader.credentials_provider(aws_credential_types::Credentials::new(
            k,
            s,
            c.session_token.clone(),
            None,
            "costledger-config",
        ));
    }
    if let Some(u) = endpoint_url {
        loader = loader.endpoint_url(u);
    }
    let conf = loader.load().await;
    match &c.role_arn {
        None => conf,
        Some(role) => {
            let mut b = aws_config::sts::AssumeRoleProvider::builder(role).session_name("costledger");
            if let Some(x) = &c.external_id {
                b = b.external_id(x);
            }
            let provider = b.configure(&conf).build().await;
            conf.into_builder().credentials_provider(SharedCredentialsProvider::new(provider)).build()
        }
    }
}

pub struct AwsFileConnector {
    format: AwsFormat,
    roots: Vec<Root>,
    /// Scopes start with the root's canonical absolute path (files imported by hand).
    absolute_scopes: bool,
}

impl AwsFileConnector {
    /// Each path a directory (laid out as AWS delivers) or a file; scopes relative to it.
    pub fn new(format: AwsFormat, paths: Vec<PathBuf>) -> Self {
        let roots = paths.into_iter().map(|p| if p.is_file() { Root::File(p) } else { Root::Dir(p) }).collect();
        AwsFileConnector { format, roots, absolute_scopes: false }
    }

    /// Files imported by hand: every scope starts with the canonical absolute path of the
    /// directory it was found in, so two payers' `cur/2024-03` (or two `bill.csv`) in
    /// different folders never replace each other.
    pub fn ad_hoc(format: AwsFormat, paths: Vec<PathBuf>) -> Self {
        AwsFileConnector { absolute_scopes: true, ..Self::new(format, paths) }
    }

    pub fn with_roots(format: AwsFormat, roots: Vec<Root>) -> Self {
        AwsFileConnector { format, roots, absolute_scopes: false }
    }

    fn layout(&self) -> Layout {
        match self.format {
            AwsFormat::Cur => Layout::Cur,
            AwsFormat::Cur2 | AwsFormat::Focus => Layout::DataExports,
        }
    }

    fn parse(&self, path: PathBuf, cx: &Context) -> BoxStream<'static, Result<Batch, ConnectorError>> {
        match self.format {
            AwsFormat::Cur | AwsFormat::Cur2 => stream_files_as::<CurColumns>(vec![path], cx),
            AwsFormat::Focus => stream_files_as::<ColumnMap>(vec![path], cx),
        }
    }
}

#[async_trait]
impl Connector for AwsFileConnector {
    fn kind(&self) -> &'static str {
        match self.format {
            AwsFormat::Cur => "aws_cur",
            AwsFormat::Cur2 | AwsFormat::Focus => "aws_data_exports",
        }
    }

    fn api_calls(&self) -> u64 {
        self.roots.iter().map(Root::api_calls).sum()
    }

    async fn check(&self, _cx: &Context) -> Result<(), ConnectorError> {
        for r in &self.roots {
            r.list().await?;
        }
        Ok(())
    }

    async fn deliveries(&self, _window: PeriodWindow, cx: &Context) -> Result<Vec<Delivery>, ConnectorError> {
        let before = self.api_calls();
        let mut out = Vec::new();
        for (i, r) in self.roots.iter().enumerate() {
            let mut found = discover(i, r, self.layout()).await?;
            if self.absolute_scopes
                && let Some(prefix) = r.scope_prefix()?
            {
                for d in &mut found {
                    d.scope = format!("{prefix}{}", d.scope);
                }
            }
            out.extend(found);
        }
        if before != self.api_calls() {
            tracing::info!(source = %cx.source, deliveries = out.len(), api_calls = self.api_calls() - before, "S3 listed");
        }
        Ok(out)
    }

    async fn delivery_key(&self, d: &Delivery, _cx: &Context) -> Result<String, ConnectorError> {
        if !d.key_pending {
            return Ok(d.delivery_key.clone());
        }
        let [it] = d.items.as_slice() else {
            return Err(ConnectorError::Transient(format!("a loose file delivery is one file, not {}", d.items.len())));
        };
        let (ri, key) = parse_item(it);
        let root =
            self.roots.get(ri).ok_or_else(|| ConnectorError::input(it.clone(), "unknown root", "report this bug"))?;
        root.local_sha256(key).await
    }

    fn fetch<'a>(&'a self, d: &'a Delivery, cx: &'a Context) -> BoxStream<'a, Result<Batch, ConnectorError>> {
        Box::pin(futures::stream::iter(d.items.iter()).flat_map(move |it| {
            let (ri, key) = parse_item(it);
            let Some(root) = self.roots.get(ri) else {
                return futures::stream::once(async move {
                    Err(ConnectorError::input(it.clone(), "unknown root", "report this bug"))
                })
                .boxed();
            };
            let label = root.display(key);
            futures::stream::once(async move { root.local_copy(key).await })
                .flat_map(move |r| match r {
                    Ok(local) => {
                        let tmp = local.path().display().to_string();
                        let label = label.clone();
                        self.parse(local.path().to_path_buf(), cx)
                            .map(move |b| {
                                // The temporary copy lives as long as its batches are read.
                                let _keep = &local;
                                b.map(|b| costledger_files::spool::relabel(b, &tmp, &label))
                            })
                            .boxed()
                    }
                    Err(e) => futures::stream::once(async move { Err(e) }).boxed(),
                })
                .boxed()
        }))
    }
}

/// `aws_cur` / `aws_data_exports` from their params (an S3 client is configured; nothing is sent).
pub async fn build_files(p: &FileParams, data_exports: bool) -> Result<AwsFileConnector, ConnectorError> {
    let format = if data_exports { p.format.unwrap_or(AwsFormat::Cur2) } else { AwsFormat::Cur };
    match &p.s3 {
        None => Ok(AwsFileConnector::new(format, p.all_paths())),
        Some(s3) => {
            let region = s3.region.clone().unwrap_or_else(|| "us-east-1".into());
            let conf = sdk_config(&region, s3.endpoint_url.as_deref(), &p.credentials).await;
            let s3conf = aws_sdk_s3::config::Builder::from(&conf)
                .force_path_style(s3.force_path_style.unwrap_or(s3.endpoint_url.is_some()))
                .build();
            let client = aws_sdk_s3::Client::from_conf(s3conf);
            let bucket = s3.bucket.clone().ok_or_else(|| {
                ConnectorError::input("s3.bucket", "is missing", "set s3.bucket in the source's config")
            })?;
            Ok(AwsFileConnector::with_roots(
                format,
                vec![Root::S3(Box::new(S3Store::new(client, bucket, s3.prefix.clone())))],
            ))
        }
    }
}

/// `aws_cost_explorer` from its params.
pub async fn build_cost_explorer(p: &CostExplorerParams) -> ce::CostExplorerConnector {
    let conf = sdk_config(&p.region, p.endpoint_url.as_deref(), &p.credentials).await;
    let calls = Arc::new(AtomicU64::new(0));
    let ceconf = aws_sdk_costexplorer::config::Builder::from(&conf)
        .retry_config(p.retry.config())
        .interceptor(ce::CallCounter(calls.clone()))
        .build();
    let client = aws_sdk_costexplorer::Client::from_conf(ceconf);
    let query = ce::CeQuery {
        billed_metric: p.billed_metric.clone(),
        effective_metric: (p.effective_metric != "none").then(|| p.effective_metric.clone()),
        tag_key: p.tag_key.clone(),
        billing_account_id: p.billing_account_id.clone(),
    };
    ce::CostExplorerConnector::new(client, query, calls, Arc::new(chrono::Utc::now))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn regions_buckets_endpoints() {
        for r in ["us-east-1", "eu-central-1", "us-gov-west-1", "ap-southeast-2", "cn-north-1"] {
            assert!(valid_region(r), "{r}");
        }
        for r in ["us-east", "US-EAST-1", "useast1", "us-east-1a", ""] {
            assert!(!valid_region(r), "{r}");
        }
        assert!(valid_bucket("acme-cur.2024") && !valid_bucket("Acme") && !valid_bucket("ab") && !valid_bucket("-ab"));
        assert!(costledger_core::text::valid_endpoint("http://127.0.0.1:5000").is_ok());
        assert!(costledger_core::text::valid_endpoint("https://s3.eu-central-1.amazonaws.com").is_ok());
        assert!(costledger_core::text::valid_endpoint("127.0.0.1:5000").is_err());
        assert!(costledger_core::text::valid_endpoint("http://:5000").is_err());
        assert!(costledger_core::text::valid_endpoint("http://localhost:port").is_err());
    }
}
