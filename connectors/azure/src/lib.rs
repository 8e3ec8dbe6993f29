//! Azure connectors.
//!
//! - `azure_cost_export` ([`AzureExportConnector`]): cost exports (EA, MCA, pay-as-you-go,
//!   FOCUS; new-style with `manifest.json` or old-style single CSVs) from a Blob container
//!   ([`store`], through `azure_core`'s pipeline) or a directory; deliveries per [`plan`], rows
//!   per [`export`].
//! - `azure_cost_query` ([`query::AzureQueryConnector`]): the Cost Management Query API.
//!
//! Config → typed params (`deny_unknown_fields`, validated without IO) → `build_*` (credentials
//! resolved, nothing sent) → a running connector; `Connector::check` is the connectivity test.

pub mod export;
pub mod focus_tables;
pub mod params;
pub mod plan;
pub mod query;
pub mod store;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use async_trait::async_trait;
use azure_core::http::{ClientOptions, Pipeline};
use costledger_core::{Batch, Connector, ConnectorError, Context, Delivery, PeriodWindow};
use costledger_files::reader::stream_files_as;
use futures::StreamExt;
use futures::stream::BoxStream;

pub use crate::params::*;

use crate::export::AzureAuto;
use crate::plan::{CostType, Manifest, Plan, is_manifest, parse_item, plan};
use crate::store::{BlobContainer, SharedKeyPolicy};
use costledger_files::object::ObjectRoot;

/// An azure_core error → what the scheduler should do with it.
pub fn http_error(what: &str, e: azure_core::Error) -> ConnectorError {
    use azure_core::error::ErrorKind;
    match e.kind() {
        ErrorKind::HttpResponse { status, error_code, .. } => {
            let code = u16::from(*status);
            let detail = format!("HTTP {code}{}", error_code.as_deref().map(|c| format!(" ({c})")).unwrap_or_default());
            match code {
                401 | 403 => ConnectorError::Auth(format!(
                    "{what}: {detail}; check the source's credentials (key, SAS token or service principal) and its role assignment"
                )),
                404 => {
                    ConnectorError::input(what, detail, "check the account, container and scope in the source's config")
                }
                429 => ConnectorError::RateLimited { retry_after: None },
                c if c >= 500 => ConnectorError::Transient(format!("{what}: {detail}")),
                _ => ConnectorError::input(what, detail, "check the source's config"),
            }
        }
        ErrorKind::Io | ErrorKind::Connection => ConnectorError::Transient(format!("{what}: {e}")),
        ErrorKind::Credential => ConnectorError::Auth(format!("{what}: {e}; check the source's credentials")),
        _ => ConnectorError::Transient(format!("{what}: {e}")),
    }
}

pub struct AzureExportConnector {
    roots: Vec<ObjectRoot>,
    cost_type: Option<CostType>,
    /// Scopes start with the root's canonical absolute path (files imported by hand).
    absolute_scopes: bool,
}

impl AzureExportConnector {
    /// Files by hand: each path a directory laid out as Azure exports, or a file.
    pub fn new(paths: Vec<PathBuf>, cost_type: Option<CostType>) -> Self {
        let roots = paths.into_iter().map(ObjectRoot::local).collect();
        AzureExportConnector { roots, cost_type, absolute_scopes: false }
    }

    /// Files imported by hand: every scope starts with the canonical absolute path of the
    /// directory it was found in, so two exports of one name in different folders never
    /// replace each other.
    pub fn ad_hoc(paths: Vec<PathBuf>, cost_type: Option<CostType>) -> Self {
        AzureExportConnector { absolute_scopes: true, ..Self::new(paths, cost_type) }
    }

    async fn discover(&self, ri: usize, root: &ObjectRoot) -> Result<Vec<Delivery>, ConnectorError> {
        let objects = root.list().await?;
        let mut manifests = BTreeMap::new();
        for o in objects.iter().filter(|o| is_manifest(&o.key)) {
            let bytes = root.read_small(&o.key).await?;
            let text = String::from_utf8_lossy(&bytes);
            let m: Manifest = serde_json::from_str(text.trim_start_matches('\u{feff}')).map_err(|e| {
                ConnectorError::input(root.display(&o.key), format!("not an export manifest: {e}"), "check the file")
            })?;
            manifests.insert(o.key.clone(), m);
        }
        let display = |k: &str| root.display(k);
        let p =
            Plan { root: ri, objects: &objects, manifests: &manifests, cost_type: self.cost_type, display: &display };
        plan(&p, &mut |o| root.version_now(o))
    }
}

#[async_trait]
impl Connector for AzureExportConnector {
    fn kind(&self) -> &'static str {
        "azure_cost_export"
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
            let mut found = self.discover(i, r).await?;
            if self.absolute_scopes
                && let Some(prefix) = r.scope_prefix()?
            {
                for d in &mut found {
                    d.scope = format!("{prefix}{}", d.scope);
                }
            }
            out.extend(found);
        }
        if self.api_calls() != before {
            tracing::info!(source = %cx.source, deliveries = out.len(), api_calls = self.api_calls() - before, "blob container listed");
        }
        Ok(out)
    }

    async fn delivery_key(&self, d: &Delivery, _cx: &Context) -> Result<String, ConnectorError> {
        if !d.key_pending {
            return Ok(d.delivery_key.clone());
        }
        let [it] = d.items.as_slice() else {
            return Err(ConnectorError::Transient(format!(
                "a local export file delivery is one file, not {}",
                d.items.len()
            )));
        };
        let (ri, _, key) = parse_item(it);
        let root =
            self.roots.get(ri).ok_or_else(|| ConnectorError::input(it.clone(), "unknown root", "report this bug"))?;
        root.local_sha256(key).await
    }

    fn fetch<'a>(&'a self, d: &'a Delivery, cx: &'a Context) -> BoxStream<'a, Result<Batch, ConnectorError>> {
        Box::pin(futures::stream::iter(d.items.iter()).flat_map(move |it| {
            let (ri, cost, key) = parse_item(it);
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
                        let path = local.path().to_path_buf();
                        let s = match cost {
                            CostType::Actual => stream_files_as::<AzureAuto<false>>(vec![path], cx),
                            CostType::Amortized => stream_files_as::<AzureAuto<true>>(vec![path], cx),
                        };
                        s.map(move |b| {
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

/// `azure_cost_export` from its params (a pipeline is configured; nothing is sent).
pub fn build_export(p: &ExportParams) -> Result<AzureExportConnector, ConnectorError> {
    let Some(b) = &p.blob else {
        return Ok(AzureExportConnector::new(p.all_paths(), p.cost_type));
    };
    let account = b.account.clone().unwrap_or_default();
    let endpoint = b.endpoint.clone().unwrap_or_else(|| format!("https://{account}.blob.core.windows.net"));
    let container_url = format!("{}/{}", endpoint.trim_end_matches('/'), b.container.clone().unwrap_or_default());
    let mut per_try: Vec<Arc<dyn azure_core::http::policies::Policy>> = Vec::new();
    if let Some(k) = &b.account_key {
        let policy = SharedKeyPolicy::new(&account, k).map_err(|m| {
            ConnectorError::input("blob.account_key", m, "copy the key from the storage account's Access keys")
        })?;
        per_try.push(Arc::new(policy));
    }
    let pipeline = Pipeline::new(
        Some("costledger"),
        Some(env!("CARGO_PKG_VERSION")),
        ClientOptions::default(),
        Vec::new(),
        per_try,
        None,
    );
    Ok(AzureExportConnector {
        roots: vec![ObjectRoot::Remote(Box::new(BlobContainer {
            pipeline,
            container_url,
            prefix: b.prefix.clone(),
            sas: b.sas_token.clone(),
            calls: AtomicU64::new(0),
        }))],
        cost_type: p.cost_type,
        absolute_scopes: false,
    })
}

/// `azure_cost_query` from its params: the credential and the bearer-token pipeline are built;
/// nothing is sent.
pub fn build_query(p: &QueryParams) -> Result<query::AzureQueryConnector, ConnectorError> {
    use azure_core::credentials::TokenCredential;
    let c = &p.credentials;
    let mut options = ClientOptions::default();
    if let Some(a) = &p.authority_host {
        let mut custom = azure_core::cloud::CustomConfiguration::default();
        custom.authority_host = a.clone();
        options.cloud = Some(Arc::new(azure_core::cloud::CloudConfiguration::Custom(custom)));
    }
    let cred_err = |e: azure_core::Error| ConnectorError::Auth(format!("cannot set up the Azure credential: {e}"));
    let credential: Arc<dyn TokenCredential> =
        if let (Some(t), Some(id), Some(s)) = (&c.tenant_id, &c.client_id, &c.client_secret) {
            let o = azure_identity::ClientSecretCredentialOptions { client_options: options.clone() };
            azure_identity::ClientSecretCredential::new(t, id.clone(), s.clone().into(), Some(o)).map_err(cred_err)?
        } else if c.managed_identity {
            azure_identity::ManagedIdentityCredential::new(None).map_err(cred_err)?
        } else if c.workload_identity {
            azure_identity::WorkloadIdentityCredential::new(None).map_err(cred_err)?
        } else {
            azure_identity::AzureCliCredential::new(None).map_err(cred_err)?
        };
    let auth: Arc<dyn azure_core::http::policies::Policy> =
        Arc::new(azure_core::http::policies::auth::BearerTokenAuthorizationPolicy::new(
            credential,
            ["https://management.azure.com/.default"],
        ));
    let opts = ClientOptions { retry: azure_core::http::RetryOptions::none(), ..Default::default() };
    let pipeline =
        Pipeline::new(Some("costledger"), Some(env!("CARGO_PKG_VERSION")), opts, vec![auth], Vec::new(), None);
    let endpoint = p.endpoint.clone().unwrap_or_else(|| "https://management.azure.com".into());
    Ok(query::AzureQueryConnector::new(pipeline, endpoint, p.spec()))
}
