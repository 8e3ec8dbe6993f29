//! The Azure sources' config: typed params (`deny_unknown_fields`), each validated without IO.

use std::path::PathBuf;

use serde::Deserialize;

use crate::plan::CostType;
use crate::query;
use crate::store::SharedKeyPolicy;

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
