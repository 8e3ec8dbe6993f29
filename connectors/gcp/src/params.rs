//! The GCP source's config: typed params (`deny_unknown_fields`), validated without IO.

use std::path::PathBuf;

use serde::Deserialize;

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
