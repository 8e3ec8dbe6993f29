//! AWS connectors.
//!
//! - `aws_cur` and `aws_data_exports` ([`AwsFileConnector`]): legacy CUR by manifest, CUR 2.0
//!   and AWS FOCUS Data Exports by `BILLING_PERIOD` partition (see [`plan`] for the delivery
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
pub mod focus_tables;
pub mod params;
pub mod plan;
pub mod store;

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use async_trait::async_trait;
use aws_config::BehaviorVersion;
use aws_credential_types::provider::SharedCredentialsProvider;
use costledger_core::{Batch, Connector, ConnectorError, Context, Delivery, PeriodWindow};
use costledger_files::reader::stream_files_as;
use costledger_focus::normalize::ColumnMap;
use futures::StreamExt;
use futures::stream::BoxStream;

pub use crate::params::*;

use crate::cur::CurColumns;
use crate::plan::{Layout, discover, parse_item};
use crate::store::S3Store;
use costledger_files::object::ObjectRoot;

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
    roots: Vec<ObjectRoot>,
    /// Scopes start with the root's canonical absolute path (files imported by hand).
    absolute_scopes: bool,
}

impl AwsFileConnector {
    /// Each path a directory (laid out as AWS delivers) or a file; scopes relative to it.
    pub fn new(format: AwsFormat, paths: Vec<PathBuf>) -> Self {
        let roots = paths.into_iter().map(ObjectRoot::local).collect();
        AwsFileConnector { format, roots, absolute_scopes: false }
    }

    /// Files imported by hand: every scope starts with the canonical absolute path of the
    /// directory it was found in, so two payers' `cur/2024-03` (or two `bill.csv`) in
    /// different folders never replace each other.
    pub fn ad_hoc(format: AwsFormat, paths: Vec<PathBuf>) -> Self {
        AwsFileConnector { absolute_scopes: true, ..Self::new(format, paths) }
    }

    pub fn with_roots(format: AwsFormat, roots: Vec<ObjectRoot>) -> Self {
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
        self.roots.iter().map(ObjectRoot::api_calls).sum()
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
                vec![ObjectRoot::Remote(Box::new(S3Store::new(client, bucket, s3.prefix.clone())))],
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
