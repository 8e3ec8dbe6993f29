//! Which deliveries an export location holds (pure over a listing, plus the manifests).
//!
//! - New-style exports: a `manifest.json` (or `*_manifest.json`) names the run (`runInfo.runId`)
//!   and its `blobs[]`: scope `<exportName>/<YYYY-MM>` (the month of `runInfo.startDate`, else of
//!   the `YYYYMMDD-YYYYMMDD` folder), key = the run id. Month-to-date exports overwrite: of
//!   several runs of one month (CreateNewReport keeps them all) the newest `submittedTime` is
//!   the delivery, and every file under that month's folder belongs to one run or another.
//! - Old-style exports: `<exportName>/<YYYYMMDD-YYYYMMDD>/<exportName>_<guid>.csv`: the newest
//!   file of the month folder (by last-modified time, then name) is the delivery, keyed by its
//!   ETag (blob) or content hash (directory).
//! - Any other `.csv`/`.csv.gz` is its own delivery keyed by its version.
//!
//! The cost type of a delivery (ActualCost or AmortizedCost) comes from the manifest's
//! `exportConfig.type`, else from the source's `cost_type`, else from the name (a path
//! containing "amortized").

use std::collections::{BTreeMap, BTreeSet};

use costledger_core::{BillingPeriod, ConnectorError, Delivery};
use costledger_files::object::ObjectInfo;
use serde::Deserialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum CostType {
    #[default]
    Actual,
    Amortized,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Manifest {
    #[serde(default)]
    pub export_config: ExportConfig,
    #[serde(default)]
    pub run_info: RunInfo,
    #[serde(default)]
    pub blobs: Vec<ManifestBlob>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct ExportConfig {
    pub export_name: Option<String>,
    #[serde(rename = "type")]
    pub kind: Option<String>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct RunInfo {
    pub run_id: Option<String>,
    pub submitted_time: Option<String>,
    pub start_date: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ManifestBlob {
    pub blob_name: String,
}

fn base(key: &str) -> &str {
    key.rsplit('/').next().unwrap_or(key)
}

pub fn is_manifest(key: &str) -> bool {
    base(key).to_ascii_lowercase().ends_with("manifest.json")
}

pub fn is_data_file(key: &str) -> bool {
    let n = base(key).to_ascii_lowercase();
    n.ends_with(".csv") || n.ends_with(".csv.gz") || n.ends_with(".parquet")
}

fn is_range_dir(name: &str) -> bool {
    name.len() == 17
        && name.as_bytes()[8] == b'-'
        && name.bytes().enumerate().all(|(i, b)| i == 8 || b.is_ascii_digit())
}

/// The nearest `YYYYMMDD-YYYYMMDD` folder of a key: (its path with a trailing `/`, the export
/// name above it, the month).
fn month_folder(key: &str) -> Option<(String, String, BillingPeriod)> {
    let parts: Vec<&str> = key.split('/').collect();
    let i = (0..parts.len().saturating_sub(1)).rev().find(|i| is_range_dir(parts[*i]))?;
    let y: i32 = parts[i].get(..4)?.parse().ok()?;
    let m: u32 = parts[i].get(4..6)?.parse().ok()?;
    let export = if i > 0 { parts[i - 1].to_string() } else { "export".into() };
    Some((format!("{}/", parts[..=i].join("/")), export, BillingPeriod::new(y, m)?))
}

fn resolve(listed: &BTreeSet<&str>, name: &str) -> Option<String> {
    let parts: Vec<&str> = name.split('/').filter(|p| !p.is_empty()).collect();
    (0..parts.len()).map(|i| parts[i..].join("/")).find(|k| listed.contains(k.as_str()))
}

/// Items are `<root>\t<a|c>\t<key>` (a = AmortizedCost rows).
pub fn item(root: usize, cost: CostType, key: &str) -> String {
    format!("{root}\t{}\t{key}", if cost == CostType::Amortized { "a" } else { "c" })
}

pub fn parse_item(s: &str) -> (usize, CostType, &str) {
    let mut it = s.splitn(3, '\t');
    match (it.next(), it.next(), it.next()) {
        (Some(r), Some(c), Some(k)) => {
            (r.parse().unwrap_or(0), if c == "a" { CostType::Amortized } else { CostType::Actual }, k)
        }
        _ => (0, CostType::Actual, s),
    }
}

fn cost_of(configured: Option<CostType>, key: &str) -> CostType {
    configured.unwrap_or(if key.to_ascii_lowercase().contains("amortized") {
        CostType::Amortized
    } else {
        CostType::Actual
    })
}

/// What the planner needs besides the listing.
pub struct Plan<'a> {
    pub root: usize,
    pub objects: &'a [ObjectInfo],
    /// The manifests' parsed contents by key.
    pub manifests: &'a BTreeMap<String, Manifest>,
    pub cost_type: Option<CostType>,
    pub display: &'a dyn Fn(&str) -> String,
}

/// The deliveries of one root. `version` gives a key's content version for old-style files.
pub fn plan(
    p: &Plan<'_>,
    version: &mut dyn FnMut(&ObjectInfo) -> Result<String, ConnectorError>,
) -> Result<Vec<Delivery>, ConnectorError> {
    let listed: BTreeSet<&str> = p.objects.iter().map(|o| o.key.as_str()).collect();
    let mut claimed: BTreeSet<String> = BTreeSet::new();
    let mut out = Vec::new();
    // New-style: the newest run per (export, month).
    let mut runs: BTreeMap<String, (String, &str, &Manifest, String, BillingPeriod)> = BTreeMap::new();
    for (key, m) in p.manifests {
        claimed.insert(key.clone());
        let folder = month_folder(key);
        let export = m
            .export_config
            .export_name
            .clone()
            .or_else(|| folder.as_ref().map(|f| f.1.clone()))
            .unwrap_or_else(|| "export".into());
        let month = m
            .run_info
            .start_date
            .as_deref()
            .and_then(|d| costledger_core::parse_timestamp(d).ok())
            .map(BillingPeriod::of)
            .or(folder.as_ref().map(|f| f.2));
        let Some(month) = month else {
            return Err(ConnectorError::input(
                (p.display)(key),
                "the manifest says neither runInfo.startDate nor sits in a YYYYMMDD-YYYYMMDD folder",
                "check the export's layout",
            ));
        };
        let prefix = folder
            .map(|f| f.0)
            .unwrap_or_else(|| key.rsplit_once('/').map(|x| format!("{}/", x.0)).unwrap_or_default());
        let scope = format!("{export}/{month}");
        let submitted = m.run_info.submitted_time.clone().unwrap_or_default();
        let newer = runs.get(&scope).is_none_or(|(s, k, ..)| (submitted.as_str(), key.as_str()) > (s.as_str(), *k));
        // Every file of the month folder belongs to some run.
        for k in listed.iter().filter(|k| k.starts_with(&prefix)) {
            claimed.insert(k.to_string());
        }
        if newer {
            runs.insert(scope, (submitted, key.as_str(), m, prefix, month));
        }
    }
    for (scope, (_, key, m, _, month)) in runs {
        let cost = match m.export_config.kind.as_deref().map(str::to_ascii_lowercase).as_deref() {
            Some("amortizedcost") => CostType::Amortized,
            Some(_) => CostType::Actual,
            None => cost_of(p.cost_type, key),
        };
        let mut items = Vec::new();
        for b in &m.blobs {
            let k = resolve(&listed, &b.blob_name).ok_or_else(|| {
                ConnectorError::input(
                    (p.display)(key),
                    format!("the manifest lists {}, which is not there", b.blob_name),
                    "the run is incomplete: wait for the export to finish (or sync every blob it lists) and run again",
                )
            })?;
            items.push(item(p.root, cost, &k));
        }
        let run = m.run_info.run_id.clone().unwrap_or_else(|| key.to_string());
        out.push(Delivery {
            scope,
            delivery_key: format!("run:{run}"),
            billing_period: Some(month),
            description: format!("{} (run {run}, {} file(s))", (p.display)(key), items.len()),
            items,
            final_periods: false,
            key_pending: false,
        });
    }
    // Old-style: the newest file per month folder.
    let mut months: BTreeMap<String, (String, BillingPeriod, &ObjectInfo)> = BTreeMap::new();
    let unclaimed: Vec<&ObjectInfo> =
        p.objects.iter().filter(|o| !claimed.contains(&o.key) && is_data_file(&o.key)).collect();
    for o in unclaimed {
        if let Some((prefix, export, month)) = month_folder(&o.key) {
            claimed.insert(o.key.clone());
            let e = months.entry(prefix).or_insert((export, month, o));
            if (o.modified.as_deref(), o.key.as_str()) > (e.2.modified.as_deref(), e.2.key.as_str()) {
                e.2 = o;
            }
        }
    }
    // A single local file (no ETag) is keyed by the bytes its reader parses (pending, see
    // `Connector::delivery_key`); a blob by its ETag.
    for (_, (export, month, o)) in months {
        let local = o.etag.is_none();
        out.push(Delivery {
            scope: format!("{export}/{month}"),
            delivery_key: if local { String::new() } else { version(o)? },
            billing_period: Some(month),
            description: format!("{} (newest of its month)", (p.display)(&o.key)),
            items: vec![item(p.root, cost_of(p.cost_type, &o.key), &o.key)],
            final_periods: false,
            key_pending: local,
        });
    }
    for o in p.objects.iter().filter(|o| !claimed.contains(&o.key) && is_data_file(&o.key)) {
        let local = o.etag.is_none();
        out.push(Delivery {
            scope: o.key.clone(),
            delivery_key: if local { String::new() } else { version(o)? },
            billing_period: None,
            description: (p.display)(&o.key),
            items: vec![item(p.root, cost_of(p.cost_type, &o.key), &o.key)],
            final_periods: false,
            key_pending: local,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn obj(key: &str, modified: &str) -> ObjectInfo {
        ObjectInfo { key: key.into(), etag: Some(format!("e-{key}")), modified: Some(modified.into()) }
    }

    fn manifest(run: &str, submitted: &str, blobs: &[&str]) -> Manifest {
        serde_json::from_value(serde_json::json!({
            "exportConfig": {"exportName": "daily-actual", "type": "ActualCost"},
            "runInfo": {"runId": run, "submittedTime": submitted, "startDate": "2024-03-01T00:00:00"},
            "blobs": blobs.iter().map(|b| serde_json::json!({"blobName": b})).collect::<Vec<_>>()
        }))
        .expect("manifest")
    }

    #[test]
    fn newest_run_wins_and_old_style_newest_file() {
        let m = "exports/daily-actual/20240301-20240331";
        let objects = vec![
            obj(&format!("{m}/r1/manifest.json"), "2024-03-04T04:00:00Z"),
            obj(&format!("{m}/r1/part_0_0001.csv.gz"), "2024-03-04T04:00:00Z"),
            obj(&format!("{m}/r2/manifest.json"), "2024-03-05T04:00:00Z"),
            obj(&format!("{m}/r2/part_0_0001.csv.gz"), "2024-03-05T04:00:00Z"),
            obj("old/ea-actual/20240201-20240229/ea-actual_aaa.csv", "2024-02-10T00:00:00Z"),
            obj("old/ea-actual/20240201-20240229/ea-actual_bbb.csv", "2024-02-11T00:00:00Z"),
            obj("loose/amortized-march.csv", "2024-03-01T00:00:00Z"),
        ];
        let mut manifests = BTreeMap::new();
        manifests.insert(
            format!("{m}/r1/manifest.json"),
            manifest("r1", "2024-03-04T04:11:09Z", &[&format!("{m}/r1/part_0_0001.csv.gz")]),
        );
        manifests.insert(
            format!("{m}/r2/manifest.json"),
            manifest("r2", "2024-03-05T04:11:09Z", &[&format!("{m}/r2/part_0_0001.csv.gz")]),
        );
        let display = |k: &str| k.to_string();
        let plan_in = Plan { root: 0, objects: &objects, manifests: &manifests, cost_type: None, display: &display };
        let d = plan(&plan_in, &mut |o: &ObjectInfo| Ok(o.etag.clone().unwrap_or_default())).expect("plan");
        let summary: Vec<(String, String, Vec<String>)> =
            d.iter().map(|d| (d.scope.clone(), d.delivery_key.clone(), d.items.clone())).collect();
        assert_eq!(
            summary,
            vec![
                ("daily-actual/2024-03".into(), "run:r2".into(), vec![format!("0\tc\t{m}/r2/part_0_0001.csv.gz")]),
                (
                    "ea-actual/2024-02".into(),
                    "e-old/ea-actual/20240201-20240229/ea-actual_bbb.csv".into(),
                    vec!["0\tc\told/ea-actual/20240201-20240229/ea-actual_bbb.csv".into()]
                ),
                (
                    "loose/amortized-march.csv".into(),
                    "e-loose/amortized-march.csv".into(),
                    vec!["0\ta\tloose/amortized-march.csv".into()]
                ),
            ]
        );
    }
}
