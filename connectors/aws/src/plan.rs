//! Which deliveries a root holds (IO thin: one listing, then the manifests; the planning is
//! pure and works on keys, so a directory and a bucket behave the same).
//!
//! - Legacy CUR: a month-level manifest `<report>/<yyyymmdd-yyyymmdd>/<report>-Manifest.json`
//!   names the current assembly: one delivery, scope `<report>/<YYYY-MM>`, key = `assemblyId`,
//!   items = its `reportKeys`. Every other file under that month (older assemblies) is never read.
//! - Data Exports (CUR 2.0, FOCUS): `…/<export>/metadata/BILLING_PERIOD=YYYY-MM/…Manifest.json`
//!   names the execution: scope `<export>/<YYYY-MM>`, key = `executionId`, items = `dataFiles`.
//!   Without a manifest, the files of `…/data/BILLING_PERIOD=YYYY-MM/` are one delivery keyed by
//!   their names and versions (ETag or SHA-256); if they sit in several execution folders, that
//!   is refused rather than summed.
//! - Any other `.csv`/`.csv.gz` file is its own delivery, keyed by its version: an object whose
//!   ETag was already loaded is skipped before it is downloaded.

use std::collections::{BTreeMap, BTreeSet};

use costledger_core::{BillingPeriod, ConnectorError, Delivery};
use serde::Deserialize;
use sha2::{Digest, Sha256};

use costledger_files::object::{ObjectInfo, ObjectRoot};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// Legacy CUR (month manifests) and loose files.
    Cur,
    /// Data Exports (BILLING_PERIOD partitions) and loose files.
    DataExports,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LegacyManifest {
    pub assembly_id: String,
    pub report_name: Option<String>,
    #[serde(default)]
    pub report_keys: Vec<String>,
    pub billing_period: Option<ManifestPeriod>,
}

#[derive(Debug, Deserialize)]
pub struct ManifestPeriod {
    pub start: String,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ExportManifest {
    pub execution_id: String,
    #[serde(default)]
    pub export_arn: Option<String>,
    #[serde(default)]
    pub data_files: Vec<String>,
}

fn base(key: &str) -> &str {
    key.rsplit('/').next().unwrap_or(key)
}

fn parent(key: &str) -> &str {
    key.rsplit_once('/').map(|x| x.0).unwrap_or("")
}

fn is_range_dir(name: &str) -> bool {
    name.len() == 17
        && name.as_bytes()[8] == b'-'
        && name.bytes().enumerate().all(|(i, b)| i == 8 || b.is_ascii_digit())
}

pub fn is_data_file(key: &str) -> bool {
    let n = base(key).to_ascii_lowercase();
    n.ends_with(".csv") || n.ends_with(".csv.gz") || n.ends_with(".parquet")
}

/// `20240301T000000.000Z` or `20240301-20240401` → 2024-03.
fn manifest_period(s: &str) -> Option<BillingPeriod> {
    let y: i32 = s.get(..4)?.parse().ok()?;
    let m: u32 = s.get(4..6)?.parse().ok()?;
    BillingPeriod::new(y, m)
}

/// `a/b/data/BILLING_PERIOD=2024-03/x.csv` → ("a/b", "data", period, "a/b/data/BILLING_PERIOD=2024-03").
fn partition(key: &str) -> Option<(String, String, BillingPeriod, String)> {
    let parts: Vec<&str> = key.split('/').collect();
    for (i, p) in parts.iter().enumerate() {
        if let Some(v) = p.strip_prefix("BILLING_PERIOD=") {
            let period: BillingPeriod = v.parse().ok()?;
            let kind = if i > 0 { parts[i - 1].to_string() } else { String::new() };
            let export = if i > 1 { parts[..i - 1].join("/") } else { String::new() };
            return Some((export, kind, period, parts[..=i].join("/")));
        }
    }
    None
}

/// A manifest names a file by its full S3 key or `s3://bucket/key`; a directory may hold a
/// sync of only part of the bucket: the longest suffix of the key that was listed wins.
fn resolve(listed: &BTreeSet<&str>, key: &str) -> Option<String> {
    let key = key.strip_prefix("s3://").map(|k| k.split_once('/').map(|x| x.1).unwrap_or(k)).unwrap_or(key);
    let parts: Vec<&str> = key.split('/').filter(|p| !p.is_empty()).collect();
    (0..parts.len()).map(|i| parts[i..].join("/")).find(|k| listed.contains(k.as_str()))
}

fn export_name(export: &str) -> String {
    if export.is_empty() { "export".into() } else { export.to_string() }
}

/// Items of a delivery are `<root index>\t<key>`.
pub fn item(root: usize, key: &str) -> String {
    format!("{root}\t{key}")
}

pub fn parse_item(s: &str) -> (usize, &str) {
    match s.split_once('\t') {
        Some((i, k)) => (i.parse().unwrap_or(0), k),
        None => (0, s),
    }
}

/// Every delivery under one root.
pub async fn discover(ri: usize, root: &ObjectRoot, layout: Layout) -> Result<Vec<Delivery>, ConnectorError> {
    let objects = root.list().await?;
    let listed: BTreeSet<&str> = objects.iter().map(|o| o.key.as_str()).collect();
    let by_key: BTreeMap<&str, &ObjectInfo> = objects.iter().map(|o| (o.key.as_str(), o)).collect();
    let mut claimed: BTreeSet<String> = BTreeSet::new();
    let mut out = Vec::new();
    let missing = |manifest: &str, k: &str| {
        ConnectorError::input(
            root.display(manifest),
            format!("the manifest lists {k}, which is not there"),
            "the delivery is incomplete: sync the whole delivery (every file the manifest lists) and run again",
        )
    };
    if layout == Layout::Cur {
        for o in &objects {
            let name = base(&o.key);
            let dir = parent(&o.key);
            if !name.ends_with("-Manifest.json") || !is_range_dir(base(dir)) {
                continue;
            }
            let bytes = root.read_small(&o.key).await?;
            let m: LegacyManifest = serde_json::from_slice(&bytes).map_err(|e| {
                ConnectorError::input(
                    root.display(&o.key),
                    format!("not a CUR manifest: {e}"),
                    "check the file; AWS rewrites it on every delivery",
                )
            })?;
            let report = m.report_name.clone().unwrap_or_else(|| name.trim_end_matches("-Manifest.json").to_string());
            let month_prefix = format!("{dir}/");
            for k in listed.iter().filter(|k| k.starts_with(&month_prefix)) {
                claimed.insert(k.to_string());
            }
            let period = m
                .billing_period
                .as_ref()
                .and_then(|p| manifest_period(&p.start))
                .or_else(|| manifest_period(base(dir)));
            let mut items = Vec::new();
            for k in &m.report_keys {
                let key = resolve(&listed, k).ok_or_else(|| missing(&o.key, k))?;
                claimed.insert(key.clone());
                items.push(item(ri, &key));
            }
            out.push(Delivery {
                scope: format!("{report}/{}", period.map(|p| p.to_string()).unwrap_or_else(|| base(dir).to_string())),
                delivery_key: m.assembly_id.clone(),
                billing_period: period,
                description: format!("{} (assembly {}, {} file(s))", root.display(&o.key), m.assembly_id, items.len()),
                items,
                final_periods: false,
                key_pending: false,
            });
        }
    } else {
        // Data Exports with manifests.
        let mut with_manifest: BTreeSet<(String, BillingPeriod)> = BTreeSet::new();
        for o in &objects {
            let Some((export, kind, period, _)) = partition(&o.key) else { continue };
            if kind != "metadata" || !base(&o.key).ends_with("Manifest.json") {
                continue;
            }
            claimed.insert(o.key.clone());
            let bytes = root.read_small(&o.key).await?;
            let m: ExportManifest = serde_json::from_slice(&bytes).map_err(|e| {
                ConnectorError::input(
                    root.display(&o.key),
                    format!("not a Data Exports manifest: {e}"),
                    "check the file",
                )
            })?;
            let mut items = Vec::new();
            for k in &m.data_files {
                let key = resolve(&listed, k).ok_or_else(|| missing(&o.key, k))?;
                items.push(item(ri, &key));
            }
            // Every file of the partition belongs to this execution or an older one.
            let data_prefix =
                format!("{}{}data/BILLING_PERIOD={period}/", export, if export.is_empty() { "" } else { "/" });
            for k in listed.iter().filter(|k| k.starts_with(&data_prefix)) {
                claimed.insert(k.to_string());
            }
            with_manifest.insert((export.clone(), period));
            out.push(Delivery {
                scope: format!("{}/{period}", export_name(&export)),
                delivery_key: m.execution_id.clone(),
                billing_period: Some(period),
                description: format!(
                    "{} (execution {}, {} file(s))",
                    root.display(&o.key),
                    m.execution_id,
                    items.len()
                ),
                items,
                final_periods: false,
                key_pending: false,
            });
        }
        // Partitions without a manifest: the files as they are.
        let mut parts: BTreeMap<(String, BillingPeriod), (String, Vec<&ObjectInfo>)> = BTreeMap::new();
        for o in objects.iter().filter(|o| !claimed.contains(&o.key) && is_data_file(&o.key)) {
            if let Some((export, kind, period, dir)) = partition(&o.key)
                && kind == "data"
                && !with_manifest.contains(&(export.clone(), period))
            {
                parts.entry((export, period)).or_insert_with(|| (dir, Vec::new())).1.push(o);
            }
        }
        for ((export, period), (dir, files)) in parts {
            let folders: BTreeSet<&str> = files.iter().map(|o| parent(&o.key)).collect();
            if folders.len() > 1 {
                return Err(ConnectorError::input(
                    root.display(&dir),
                    format!("{} execution folders and no manifest: they would be summed", folders.len()),
                    "sync the export's metadata/ folder too (its Manifest.json names the current execution)",
                ));
            }
            let mut h = Sha256::new();
            for o in &files {
                claimed.insert(o.key.clone());
                h.update(o.key.as_bytes());
                h.update(b"\0");
                h.update(root.version(o).await?.as_bytes());
                h.update(b"\n");
            }
            let key: String = h.finalize().iter().map(|b| format!("{b:02x}")).collect();
            out.push(Delivery {
                scope: format!("{}/{period}", export_name(&export)),
                delivery_key: format!("sha256:{key}"),
                billing_period: Some(period),
                description: format!("{} ({} file(s), no manifest)", root.display(&dir), files.len()),
                items: files.iter().map(|o| item(ri, &o.key)).collect(),
                final_periods: false,
                key_pending: false,
            });
        }
    }
    // Loose files.
    for o in objects.iter().filter(|o| !claimed.contains(&o.key) && is_data_file(&o.key)) {
        if let Some(o) = by_key.get(o.key.as_str()) {
            // A local file is keyed by the bytes its reader parses (hashed as they are read,
            // and again alongside to skip early: see `Connector::delivery_key`); an S3 object by
            // its ETag.
            let local = o.etag.is_none() && root.is_local();
            out.push(Delivery {
                scope: o.key.clone(),
                delivery_key: if local { String::new() } else { root.version(o).await? },
                billing_period: None,
                description: root.display(&o.key),
                items: vec![item(ri, &o.key)],
                final_periods: false,
                key_pending: local,
            });
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partitions_and_resolution() {
        let p = partition("cur/exp/data/BILLING_PERIOD=2024-03/x-1.csv.gz").expect("partition");
        assert_eq!(
            (p.0.as_str(), p.1.as_str(), p.2.to_string(), p.3.as_str()),
            ("cur/exp", "data", "2024-03".into(), "cur/exp/data/BILLING_PERIOD=2024-03")
        );
        let listed: BTreeSet<&str> = ["exp/data/BILLING_PERIOD=2024-03/x-1.csv.gz"].into_iter().collect();
        assert_eq!(
            resolve(&listed, "s3://bucket/cur/exp/data/BILLING_PERIOD=2024-03/x-1.csv.gz").as_deref(),
            Some("exp/data/BILLING_PERIOD=2024-03/x-1.csv.gz")
        );
        assert_eq!(resolve(&listed, "s3://bucket/cur/exp/data/BILLING_PERIOD=2024-04/x-1.csv.gz"), None);
        assert!(is_range_dir("20240301-20240401") && !is_range_dir("a-1111"));
        assert_eq!(manifest_period("20240301T000000.000Z").map(|p| p.to_string()).as_deref(), Some("2024-03"));
    }
}
