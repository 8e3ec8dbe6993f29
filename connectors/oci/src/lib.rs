//! Oracle Cloud Infrastructure connectors. No Rust SDK offers the Usage API, so requests are
//! signed here ([`signer`], verified against Oracle's published test vectors).
//!
//! - `oci_usage_api` ([`usage`]): RequestSummarizedUsages, DAILY, per month, paged.
//! - `oci_cost_report` ([`reports`]): cost reports and FOCUS reports from Object Storage or a
//!   directory; cost report rows are normalised by [`cost_report`].
//!
//! Config → typed params ([`UsageParams`], [`ReportParams`], `deny_unknown_fields`) →
//! [`build_usage`] / [`build_reports`] (reads the key file) → a running connector.

pub mod client;
pub mod cost_report;
pub mod focus_tables;
pub mod params;
pub mod reports;
pub mod signer;
pub mod usage;

use costledger_core::ConnectorError;

pub use crate::params::*;

use crate::client::OciClient;
use crate::reports::{ObjectStore, OciReportConnector, ReportKind, ReportSource};
use crate::usage::{DEFAULT_GROUP_BY, OciUsageConnector, UsageQuery};

fn endpoint(
    explicit: &Option<String>,
    region: Option<&str>,
    service: &str,
    what: &str,
) -> Result<String, ConnectorError> {
    if let Some(e) = explicit {
        return Ok(e.trim_end_matches('/').to_string());
    }
    let r = region.ok_or_else(|| {
        ConnectorError::input(
            what,
            "no region: set region (or endpoint) in the source or region in the OCI config file",
            "",
        )
    })?;
    Ok(match service {
        "usage" => format!("https://usageapi.{r}.oci.oraclecloud.com"),
        _ => format!("https://objectstorage.{r}.oraclecloud.com"),
    })
}

pub fn build_usage(p: &UsageParams) -> Result<OciUsageConnector, ConnectorError> {
    let auth = p.credentials.resolve()?;
    let base = endpoint(&p.endpoint, p.region.as_deref().or(auth.region.as_deref()), "usage", "oci_usage_api")?;
    let client = OciClient::new(&base, auth.signer()?, p.retry.policy())?;
    let query = UsageQuery {
        tenancy: p.tenancy.clone().unwrap_or(auth.tenancy.clone()),
        billing_account_id: p.billing_account_id.clone(),
        group_by: p.group_by.clone().unwrap_or_else(|| DEFAULT_GROUP_BY.iter().map(|s| s.to_string()).collect()),
        group_by_tag: p.group_by_tag.as_ref().map(|t| (t.namespace.clone(), t.key.clone())),
        query_type: p.query_type.clone().unwrap_or_else(|| "COST".into()),
        page_limit: p.page_limit,
    };
    Ok(OciUsageConnector::new(client, query))
}

pub fn build_reports(p: &ReportParams) -> Result<OciReportConnector, ConnectorError> {
    let kind = p.kind().unwrap_or(ReportKind::Cost);
    let source = match (&p.path, &p.object_storage) {
        (Some(path), _) => ReportSource::Directory(vec![path.clone()]),
        (None, Some(o)) => {
            let auth = p.credentials.resolve()?;
            let base = endpoint(
                &o.endpoint,
                o.region.as_deref().or(auth.region.as_deref()),
                "objectstorage",
                "oci_cost_report",
            )?;
            let client = OciClient::new(&base, auth.signer()?, p.retry.policy())?;
            ReportSource::ObjectStorage(Box::new(ObjectStore {
                client,
                namespace: o.namespace.clone().unwrap_or_else(|| "bling".into()),
                bucket: o.bucket.clone().unwrap_or(auth.tenancy),
                prefix: o.prefix.clone().unwrap_or_else(|| kind.default_prefix().to_string()),
            }))
        }
        (None, None) => {
            return Err(ConnectorError::input("oci_cost_report", "no path and no object_storage", "configure one"));
        }
    };
    Ok(OciReportConnector::new(kind, source))
}
