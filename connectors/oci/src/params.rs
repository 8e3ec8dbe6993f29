//! The OCI sources' config: typed params (`deny_unknown_fields`), each validated without IO
//! (credentials are resolved from the config file only when a connector is built).

use std::path::PathBuf;
use std::time::Duration;

use costledger_core::ConnectorError;
use serde::Deserialize;

use crate::client::{OciAuth, RetryPolicy, read_config_file};
use crate::reports::ReportKind;

/// How to authenticate: a profile of an OCI config file (default `~/.oci/config`, profile
/// `DEFAULT`) or explicit values (all four of tenancy, user, fingerprint, key_file).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Credentials {
    pub config_file: Option<PathBuf>,
    pub profile: Option<String>,
    pub tenancy: Option<String>,
    pub user: Option<String>,
    pub fingerprint: Option<String>,
    pub key_file: Option<PathBuf>,
}

impl Credentials {
    /// Problems that need no IO (missing values, bad OCIDs or fingerprints).
    pub fn validate(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        let explicit =
            [self.tenancy.is_some(), self.user.is_some(), self.fingerprint.is_some(), self.key_file.is_some()];
        let n = explicit.iter().filter(|x| **x).count();
        if n > 0 && n < 4 {
            out.push((
                "credentials".to_string(),
                "give all of tenancy, user, fingerprint and key_file, or none (then config_file/profile is read)"
                    .into(),
            ));
        }
        if n == 4 && (self.config_file.is_some() || self.profile.is_some()) {
            out.push(("credentials".into(), "give either config_file/profile or explicit keys, not both".into()));
        }
        for (k, v, prefix) in [("tenancy", &self.tenancy, "ocid1.tenancy."), ("user", &self.user, "ocid1.user.")] {
            if let Some(v) = v
                && !v.starts_with(prefix)
            {
                out.push((format!("credentials.{k}"), format!("'{v}' is not a {k} OCID ({prefix}…)")));
            }
        }
        if let Some(f) = &self.fingerprint {
            let ok = f.split(':').count() == 16
                && f.split(':').all(|b| b.len() == 2 && b.chars().all(|c| c.is_ascii_hexdigit()));
            if !ok {
                out.push((
                    "credentials.fingerprint".into(),
                    format!("'{f}' is not a key fingerprint like 20:3b:97:…:3a:34"),
                ));
            }
        }
        out
    }

    pub fn resolve(&self) -> Result<OciAuth, ConnectorError> {
        match (&self.tenancy, &self.user, &self.fingerprint, &self.key_file) {
            (Some(t), Some(u), Some(f), Some(k)) => Ok(OciAuth {
                tenancy: t.clone(),
                user: u.clone(),
                fingerprint: f.clone(),
                key_file: k.clone(),
                region: None,
            }),
            _ => {
                let path = self.config_file.clone().unwrap_or_else(|| {
                    std::env::var_os("HOME").map(PathBuf::from).unwrap_or_default().join(".oci/config")
                });
                read_config_file(&path, self.profile.as_deref().unwrap_or("DEFAULT"))
            }
        }
    }
}

/// Retries of failed calls (429, 5xx, connection errors).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetryParams {
    #[serde(default = "default_attempts")]
    pub attempts: u32,
    #[serde(default = "default_base_ms")]
    pub base_delay_ms: u64,
    #[serde(default = "default_max_ms")]
    pub max_delay_ms: u64,
}

fn default_attempts() -> u32 {
    6
}
fn default_base_ms() -> u64 {
    1_000
}
fn default_max_ms() -> u64 {
    60_000
}

impl Default for RetryParams {
    fn default() -> Self {
        RetryParams { attempts: default_attempts(), base_delay_ms: default_base_ms(), max_delay_ms: default_max_ms() }
    }
}

impl RetryParams {
    pub(crate) fn policy(&self) -> RetryPolicy {
        RetryPolicy {
            attempts: self.attempts.max(1),
            base_delay: Duration::from_millis(self.base_delay_ms),
            max_delay: Duration::from_millis(self.max_delay_ms),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TagGroup {
    pub namespace: String,
    pub key: String,
}

/// `type: oci_usage_api`
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct UsageParams {
    /// Tenancy OCID to query (default: the credentials' tenancy).
    pub tenancy: Option<String>,
    /// Region of the Usage API endpoint (default: the credentials' region).
    pub region: Option<String>,
    /// Endpoint override (default `https://usageapi.{region}.oci.oraclecloud.com`).
    pub endpoint: Option<String>,
    #[serde(default)]
    pub credentials: Credentials,
    /// Dimensions to group by (default: service, compartmentName, region, skuPartNumber, resourceId).
    pub group_by: Option<Vec<String>>,
    /// One defined tag to group by (its values become the lines' tags).
    pub group_by_tag: Option<TagGroup>,
    /// COST (default) or CREDIT.
    pub query_type: Option<String>,
    /// BillingAccountId for the lines (default: the tenancy).
    pub billing_account_id: Option<String>,
    /// Items per page.
    pub page_limit: Option<u32>,
    #[serde(default)]
    pub retry: RetryParams,
}

const GROUP_BY: [&str; 16] = [
    "tagNamespace",
    "tagKey",
    "tagValue",
    "service",
    "skuName",
    "skuPartNumber",
    "unit",
    "compartmentName",
    "compartmentPath",
    "compartmentId",
    "platform",
    "region",
    "logicalAd",
    "resourceId",
    "tenantId",
    "tenantName",
];

fn validate_region(r: &str) -> bool {
    let parts: Vec<&str> = r.split('-').collect();
    parts.len() >= 3 && r.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
}

fn validate_endpoint(e: &str) -> Option<String> {
    match reqwest::Url::parse(e) {
        Ok(u) if (u.scheme() == "https" || u.scheme() == "http") && u.host_str().is_some() => None,
        Ok(_) => Some(format!("'{e}' must be an http(s)://HOST[:PORT] URL")),
        Err(err) => Some(format!("'{e}' is not a URL: {err}")),
    }
}

impl UsageParams {
    /// Problems that need no IO, as (relative path, message).
    pub fn validate(&self) -> Vec<(String, String)> {
        let mut out = self.credentials.validate();
        if let Some(t) = &self.tenancy
            && !t.starts_with("ocid1.tenancy.")
        {
            out.push(("tenancy".into(), format!("'{t}' is not a tenancy OCID (ocid1.tenancy.…)")));
        }
        if let Some(r) = &self.region
            && !validate_region(r)
        {
            out.push(("region".into(), format!("'{r}' is not an OCI region identifier like us-ashburn-1")));
        }
        if let Some(e) = &self.endpoint
            && let Some(m) = validate_endpoint(e)
        {
            out.push(("endpoint".into(), m));
        }
        for (i, g) in self.group_by.iter().flatten().enumerate() {
            if !GROUP_BY.contains(&g.as_str()) {
                out.push((format!("group_by[{i}]"), format!("'{g}' is not one of {}", GROUP_BY.join(", "))));
            }
        }
        if let Some(q) = &self.query_type
            && !["COST", "USAGE", "CREDIT", "EXPIREDCREDIT", "ALLCREDIT", "USAGE_ONLY"].contains(&q.as_str())
        {
            out.push(("query_type".into(), format!("'{q}' is not COST, CREDIT, EXPIREDCREDIT or ALLCREDIT")));
        }
        out
    }
}

/// `type: oci_cost_report`
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct ReportParams {
    /// `cost` (reports/cost-csv, default) or `focus` (FOCUS Reports).
    pub format: Option<String>,
    /// A local directory or file (instead of `object_storage`).
    pub path: Option<PathBuf>,
    pub object_storage: Option<ObjectStorageParams>,
    #[serde(default)]
    pub credentials: Credentials,
    #[serde(default)]
    pub retry: RetryParams,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ObjectStorageParams {
    /// Default `bling` (Oracle's namespace for usage reports).
    pub namespace: Option<String>,
    /// Default: the tenancy OCID.
    pub bucket: Option<String>,
    /// Default: `reports/cost-csv/` or `FOCUS Reports/`.
    pub prefix: Option<String>,
    /// The tenancy's home region.
    pub region: Option<String>,
    /// Endpoint override (default `https://objectstorage.{region}.oraclecloud.com`).
    pub endpoint: Option<String>,
}

impl ReportParams {
    pub fn kind(&self) -> Option<ReportKind> {
        match self.format.as_deref().unwrap_or("cost") {
            "cost" => Some(ReportKind::Cost),
            "focus" => Some(ReportKind::Focus),
            _ => None,
        }
    }

    pub fn validate(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        if self.kind().is_none() {
            out.push(("format".into(), format!("'{}' is not cost or focus", self.format.clone().unwrap_or_default())));
        }
        match (&self.path, &self.object_storage) {
            (Some(_), Some(_)) => out.push(("path".into(), "give either path or object_storage, not both".into())),
            (None, None) => out.push(("path".into(), "is required: a directory of reports, or object_storage".into())),
            (None, Some(o)) => {
                out.extend(self.credentials.validate());
                if let Some(r) = &o.region
                    && !validate_region(r)
                {
                    out.push((
                        "object_storage.region".into(),
                        format!("'{r}' is not an OCI region identifier like us-ashburn-1"),
                    ));
                }
                if let Some(e) = &o.endpoint
                    && let Some(m) = validate_endpoint(e)
                {
                    out.push(("object_storage.endpoint".into(), m));
                }
                if let Some(b) = &o.bucket
                    && b.trim().is_empty()
                {
                    out.push(("object_storage.bucket".into(), "must not be empty".into()));
                }
            }
            (Some(_), None) => {}
        }
        out
    }
}
