//! Azure connectors.
//!
//! - `azure_cost_export` ([`AzureExportConnector`]): cost exports (EA, MCA, pay-as-you-go,
//!   FOCUS; new-style with `manifest.json` or old-style single CSVs) from a Blob container
//!   ([`blob`], through `azure_core`'s pipeline) or a directory; deliveries per [`files`], rows
//!   per [`export`].
//! - `azure_cost_query` ([`query::AzureQueryConnector`]): the Cost Management Query API.
//!
//! Config → typed params (`deny_unknown_fields`, validated without IO) → `build_*` (credentials
//! resolved, nothing sent) → a running connector; `Connector::check` is the connectivity test.

pub mod blob;
pub mod export;
pub mod files;
pub mod focus_tables;
pub mod query;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use async_trait::async_trait;
use azure_core::http::{ClientOptions, Pipeline};
use costledger_core::{Batch, Connector, ConnectorError, Context, Delivery, PeriodWindow};
use costledger_files::file_sha256;
use costledger_files::reader::stream_files_as;
use futures::StreamExt;
use futures::stream::BoxStream;
use serde::Deserialize;

use crate::blob::{BlobContainer, SharedKeyPolicy};
use crate::export::AzureAuto;
use crate::files::{CostType, Manifest, Object, Plan, is_manifest, parse_item, plan};

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

/// Blob storage location and its authentication.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct BlobParams {
    pub account: Option<String>,
    pub container: Option<String>,
    #[serde(default)]
    pub prefix: String,
    /// Default `https://<account>.blob.core.windows.net`; azurite:
    /// `http://127.0.0.1:10000/devstoreaccount1`.
    pub endpoint: Option<String>,
    /// The storage account key (Shared Key authorization). Use `${ENV}`.
    pub account_key: Option<String>,
    /// A SAS token with list and read permissions. Use `${ENV}`.
    pub sas_token: Option<String>,
}

/// `azure_cost_export`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct ExportParams {
    pub path: Option<PathBuf>,
    #[serde(default)]
    pub paths: Vec<PathBuf>,
    pub blob: Option<BlobParams>,
    /// `actual` or `amortized` for exports without a manifest (default: by name, else actual).
    pub cost_type: Option<CostType>,
}

impl ExportParams {
    pub fn all_paths(&self) -> Vec<PathBuf> {
        self.path.iter().cloned().chain(self.paths.iter().cloned()).collect()
    }

    pub fn validate(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        match (&self.blob, self.all_paths().is_empty()) {
            (None, true) => {
                out.push(("path".into(), "is required: a directory (or file), unless blob is given".into()))
            }
            (Some(_), false) => out.push(("blob".into(), "give either path(s) or blob, not both".into())),
            _ => {}
        }
        if let Some(b) = &self.blob {
            match &b.account {
                None => out.push(("blob.account".into(), "is required".into())),
                Some(a)
                    if !(3..=24).contains(&a.len())
                        || !a.bytes().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit()) =>
                {
                    out.push((
                        "blob.account".into(),
                        format!("'{a}' is not a storage account name (3-24 lower-case letters and digits)"),
                    ))
                }
                _ => {}
            }
            if b.container.as_deref().is_none_or(str::is_empty) {
                out.push(("blob.container".into(), "is required".into()));
            }
            if let Some(e) = &b.endpoint
                && let Err(m) = costledger_core::text::valid_endpoint(e)
            {
                out.push(("blob.endpoint".into(), m));
            }
            match (&b.account_key, &b.sas_token) {
                (None, None) => out.push(("blob".into(), "give account_key or sas_token".into())),
                (Some(_), Some(_)) => out.push(("blob".into(), "give account_key or sas_token, not both".into())),
                (Some(k), None) if SharedKeyPolicy::new("a", k).is_err() => out.push((
                    "blob.account_key".into(),
                    "is not base64 (copy it from the storage account's Access keys)".into(),
                )),
                _ => {}
            }
        }
        out
    }
}

pub enum Root {
    Dir(PathBuf),
    File(PathBuf),
    Blob(Box<BlobContainer>),
}

impl Root {
    fn display(&self, key: &str) -> String {
        match self {
            Root::Dir(d) => d.join(key).display().to_string(),
            Root::File(f) => f.display().to_string(),
            Root::Blob(b) => b.display(key),
        }
    }

    /// The canonical absolute directory (with a trailing `/`) a local root's keys are relative
    /// to; `None` for Blob storage.
    fn scope_prefix(&self) -> Result<Option<String>, ConnectorError> {
        let dir = match self {
            Root::Dir(d) => d.clone(),
            Root::File(f) => f.parent().map(PathBuf::from).unwrap_or_default(),
            Root::Blob(_) => return Ok(None),
        };
        let dir = if dir.as_os_str().is_empty() { PathBuf::from(".") } else { dir };
        let abs = std::fs::canonicalize(&dir).map_err(|e| ConnectorError::io(dir.display().to_string(), e))?;
        Ok(Some(format!("{}/", abs.display().to_string().trim_end_matches('/'))))
    }

    fn local(&self, key: &str) -> PathBuf {
        match self {
            Root::Dir(d) => d.join(key),
            Root::File(f) => f.clone(),
            Root::Blob(_) => PathBuf::from(key),
        }
    }

    async fn list(&self) -> Result<Vec<Object>, ConnectorError> {
        let mut out = match self {
            Root::Dir(d) => {
                let d = d.clone();
                tokio::task::spawn_blocking(move || {
                    costledger_files::walk_keys(&d).map(|v| {
                        v.into_iter()
                            .map(|(key, p)| {
                                let modified = std::fs::metadata(&p)
                                    .and_then(|m| m.modified())
                                    .ok()
                                    .map(|t| chrono::DateTime::<chrono::Utc>::from(t).to_rfc3339());
                                Object { key, etag: None, modified }
                            })
                            .collect::<Vec<_>>()
                    })
                })
                .await
                .map_err(|e| ConnectorError::Transient(format!("listing task failed: {e}")))??
            }
            Root::File(f) => vec![Object {
                key: f.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default(),
                etag: None,
                modified: None,
            }],
            Root::Blob(b) => b
                .list()
                .await?
                .into_iter()
                .map(|i| Object { key: i.name, etag: i.etag, modified: i.modified })
                .collect(),
        };
        out.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(out)
    }

    async fn read_small(&self, key: &str) -> Result<Vec<u8>, ConnectorError> {
        match self {
            Root::Blob(b) => b.read_small(key).await,
            _ => {
                let p = self.local(key);
                tokio::fs::read(&p).await.map_err(|e| ConnectorError::io(p.display().to_string(), e))
            }
        }
    }

    fn version(&self, o: &Object) -> Result<String, ConnectorError> {
        match (&o.etag, self) {
            (Some(e), _) => Ok(format!("etag:{e}")),
            (None, _) => file_sha256(&self.local(&o.key)),
        }
    }

    fn api_calls(&self) -> u64 {
        match self {
            Root::Blob(b) => b.calls.load(Ordering::Relaxed),
            _ => 0,
        }
    }
}

enum Local {
    Borrowed(PathBuf),
    Temp(tempfile::TempPath),
}

impl Local {
    fn path(&self) -> &std::path::Path {
        match self {
            Local::Borrowed(p) => p,
            Local::Temp(t) => t,
        }
    }
}

pub struct AzureExportConnector {
    roots: Vec<Root>,
    cost_type: Option<CostType>,
    /// Scopes start with the root's canonical absolute path (files imported by hand).
    absolute_scopes: bool,
}

impl AzureExportConnector {
    /// Files by hand: each path a directory laid out as Azure exports, or a file.
    pub fn new(paths: Vec<PathBuf>, cost_type: Option<CostType>) -> Self {
        let roots = paths.into_iter().map(|p| if p.is_file() { Root::File(p) } else { Root::Dir(p) }).collect();
        AzureExportConnector { roots, cost_type, absolute_scopes: false }
    }

    /// Files imported by hand: every scope starts with the canonical absolute path of the
    /// directory it was found in, so two exports of one name in different folders never
    /// replace each other.
    pub fn ad_hoc(paths: Vec<PathBuf>, cost_type: Option<CostType>) -> Self {
        AzureExportConnector { absolute_scopes: true, ..Self::new(paths, cost_type) }
    }

    async fn discover(&self, ri: usize, root: &Root) -> Result<Vec<Delivery>, ConnectorError> {
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
        plan(&p, &mut |o| root.version(o))
    }
}

#[async_trait]
impl Connector for AzureExportConnector {
    fn kind(&self) -> &'static str {
        "azure_cost_export"
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
        let path = root.local(key);
        tokio::task::spawn_blocking(move || file_sha256(&path))
            .await
            .map_err(|e| ConnectorError::Transient(format!("hashing task failed: {e}")))?
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
            futures::stream::once(async move {
                match root {
                    Root::Blob(b) => b.download(key).await.map(Local::Temp),
                    _ => Ok(Local::Borrowed(root.local(key))),
                }
            })
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
        roots: vec![Root::Blob(Box::new(BlobContainer {
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

/// How `azure_cost_query` authenticates (azure_identity): a service principal with a client
/// secret, a managed identity, workload identity (Kubernetes), or the Azure CLI's login.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct QueryCredentials {
    pub tenant_id: Option<String>,
    pub client_id: Option<String>,
    /// Use `${ENV}`.
    pub client_secret: Option<String>,
    #[serde(default)]
    pub managed_identity: bool,
    #[serde(default)]
    pub workload_identity: bool,
    #[serde(default)]
    pub azure_cli: bool,
}

/// `azure_cost_query`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QueryParams {
    /// `subscriptions/<id>`, `subscriptions/<id>/resourceGroups/<rg>`,
    /// `providers/Microsoft.Billing/billingAccounts/<id>`,
    /// `providers/Microsoft.Management/managementGroups/<id>`.
    pub scope: Option<String>,
    /// `ActualCost` and/or `AmortizedCost` (default: both).
    #[serde(default = "default_types")]
    pub types: Vec<String>,
    #[serde(default = "default_group_by")]
    pub group_by: Vec<String>,
    #[serde(default)]
    pub tag_keys: Vec<String>,
    #[serde(default = "default_cost_column")]
    pub cost_column: String,
    pub billing_account_id: Option<String>,
    /// ARM endpoint (default `https://management.azure.com`).
    pub endpoint: Option<String>,
    /// Entra ID authority (default `https://login.microsoftonline.com`).
    pub authority_host: Option<String>,
    #[serde(default)]
    pub credentials: QueryCredentials,
    #[serde(default = "default_attempts")]
    pub attempts: u32,
    #[serde(default = "default_max_wait")]
    pub max_wait_secs: u64,
    /// Sent as `ClientType` (its own throttling bucket).
    pub client_type: Option<String>,
}

fn default_types() -> Vec<String> {
    vec!["ActualCost".into(), "AmortizedCost".into()]
}
fn default_group_by() -> Vec<String> {
    ["SubscriptionId", "ResourceGroupName", "ServiceName", "MeterCategory", "ChargeType"].map(String::from).to_vec()
}
fn default_cost_column() -> String {
    "Cost".into()
}
fn default_attempts() -> u32 {
    6
}
fn default_max_wait() -> u64 {
    120
}

impl QueryParams {
    pub fn validate(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        match &self.scope {
            None => out.push(("scope".into(), "is required (e.g. subscriptions/<id>)".into())),
            Some(s) => {
                let l = s.trim_matches('/').to_ascii_lowercase();
                if !(l.starts_with("subscriptions/")
                    || l.starts_with("providers/microsoft.billing/")
                    || l.starts_with("providers/microsoft.management/managementgroups/"))
                {
                    out.push((
                        "scope".into(),
                        format!(
                            "'{s}' is not a subscription, resource group, billing account or management group scope"
                        ),
                    ));
                }
            }
        }
        if self.types.is_empty() {
            out.push(("types".into(), "give ActualCost and/or AmortizedCost".into()));
        }
        for t in &self.types {
            if t != "ActualCost" && t != "AmortizedCost" {
                out.push(("types".into(), format!("'{t}' is not ActualCost or AmortizedCost")));
            }
        }
        for (k, v) in [("endpoint", &self.endpoint), ("authority_host", &self.authority_host)] {
            if let Some(u) = v
                && let Err(m) = costledger_core::text::valid_endpoint(u)
            {
                out.push((k.into(), m));
            }
        }
        if let Some(a) = &self.authority_host
            && !a.starts_with("https://")
        {
            out.push(("authority_host".into(), "must be https:// (Entra ID refuses anything else)".into()));
        }
        let c = &self.credentials;
        let sp = [c.tenant_id.is_some(), c.client_id.is_some(), c.client_secret.is_some()];
        let modes = [sp.iter().any(|x| *x), c.managed_identity, c.workload_identity, c.azure_cli]
            .iter()
            .filter(|x| **x)
            .count();
        if sp.iter().any(|x| *x) && !sp.iter().all(|x| *x) {
            out.push(("credentials".into(), "a service principal needs tenant_id, client_id and client_secret".into()));
        }
        if modes != 1 {
            out.push((
                "credentials".into(),
                "choose one: tenant_id/client_id/client_secret, managed_identity, workload_identity or azure_cli"
                    .into(),
            ));
        }
        if self.attempts == 0 {
            out.push(("attempts".into(), "must be at least 1".into()));
        }
        out
    }

    pub fn spec(&self) -> query::QuerySpec {
        query::QuerySpec {
            scope: self.scope.clone().unwrap_or_default(),
            actual: self.types.iter().any(|t| t == "ActualCost"),
            amortized: self.types.iter().any(|t| t == "AmortizedCost"),
            group_by: self.group_by.clone(),
            tag_keys: self.tag_keys.clone(),
            cost_column: self.cost_column.clone(),
            billing_account_id: self.billing_account_id.clone(),
            attempts: self.attempts.max(1),
            max_wait: std::time::Duration::from_secs(self.max_wait_secs),
            client_type: self.client_type.clone(),
        }
    }
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
