//! `import --format gcp-export`: the rows a BigQuery extract job writes — newline-delimited
//! JSON of the export table (nested records, as the table is) or CSV of the flattened query
//! (`labels_json`, `credits_json` columns). Numbers are read as their text (never through a
//! float). Files stream on a blocking thread in bounded batches.

use std::collections::BTreeMap;
use std::io::BufRead;
use std::path::PathBuf;

use costledger_core::{Batch, ConnectorError};
use futures::stream::BoxStream;
use serde_json::value::RawValue;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::normalize::{Credit, ExportRow, parse_credits_json, parse_kv_json, row_lines};

type Obj = BTreeMap<String, Box<RawValue>>;

fn obj(raw: &RawValue) -> Option<Obj> {
    serde_json::from_str(raw.get()).ok()
}

/// A scalar's text: strings unquoted, numbers as written, null → None.
fn text(raw: Option<&RawValue>) -> Option<String> {
    let t = raw?.get().trim();
    if t == "null" {
        return None;
    }
    Some(serde_json::from_str::<String>(t).unwrap_or_else(|_| t.to_string()))
}

fn field(o: &Obj, path: &[&str]) -> Option<String> {
    let mut cur: Option<Obj> = None;
    for (i, k) in path.iter().enumerate() {
        let src = cur.as_ref().unwrap_or(o);
        let v = src.get(*k)?;
        if i + 1 == path.len() {
            return text(Some(v));
        }
        cur = Some(obj(v)?);
    }
    None
}

fn kv_list(o: &Obj, path: &[&str]) -> Vec<(String, String)> {
    let mut cur: &Obj = o;
    let mut holder;
    for k in &path[..path.len() - 1] {
        match cur.get(*k).and_then(|v| obj(v)) {
            Some(x) => {
                holder = x;
                cur = &holder;
            }
            None => return Vec::new(),
        }
    }
    let Some(arr) = cur.get(path[path.len() - 1]) else { return Vec::new() };
    let items: Vec<Box<RawValue>> = serde_json::from_str(arr.get()).unwrap_or_default();
    items
        .iter()
        .filter_map(|i| {
            let m = obj(i)?;
            Some((
                text(m.get("key").map(|b| b.as_ref()))?,
                text(m.get("value").map(|b| b.as_ref())).unwrap_or_default(),
            ))
        })
        .collect()
}

/// One JSON line of the (nested) export table → an export row.
pub fn json_row(line: &str) -> Result<ExportRow, String> {
    let o: Obj = serde_json::from_str(line).map_err(|e| format!("not a JSON object: {e}"))?;
    let credits: Vec<Box<RawValue>> =
        o.get("credits").and_then(|c| serde_json::from_str(c.get()).ok()).unwrap_or_default();
    Ok(ExportRow {
        invoice_month: field(&o, &["invoice", "month"]),
        cost_type: field(&o, &["cost_type"]),
        billing_account_id: field(&o, &["billing_account_id"]),
        service_id: field(&o, &["service", "id"]),
        service_description: field(&o, &["service", "description"]),
        sku_id: field(&o, &["sku", "id"]),
        sku_description: field(&o, &["sku", "description"]),
        project_id: field(&o, &["project", "id"]),
        project_name: field(&o, &["project", "name"]),
        region: field(&o, &["location", "region"]),
        location: field(&o, &["location", "location"]),
        resource_name: field(&o, &["resource", "name"]),
        resource_global_name: field(&o, &["resource", "global_name"]),
        usage_start_time: field(&o, &["usage_start_time"]),
        usage_end_time: field(&o, &["usage_end_time"]),
        export_time: field(&o, &["export_time"]),
        currency: field(&o, &["currency"]),
        currency_conversion_rate: field(&o, &["currency_conversion_rate"]),
        cost: field(&o, &["cost"]),
        usage_amount: field(&o, &["usage", "amount"]),
        usage_unit: field(&o, &["usage", "unit"]),
        usage_pricing_amount: field(&o, &["usage", "amount_in_pricing_units"]),
        usage_pricing_unit: field(&o, &["usage", "pricing_unit"]),
        labels: kv_list(&o, &["labels"]),
        project_labels: kv_list(&o, &["project", "labels"]),
        credits: credits
            .iter()
            .filter_map(|c| obj(c))
            .map(|m| Credit {
                name: text(m.get("name").map(|b| b.as_ref())),
                full_name: text(m.get("full_name").map(|b| b.as_ref())),
                id: text(m.get("id").map(|b| b.as_ref())),
                kind: text(m.get("type").map(|b| b.as_ref())),
                amount: text(m.get("amount").map(|b| b.as_ref())),
            })
            .collect(),
    })
}

/// The flattened query's columns (also the CSV header of an extract of it).
pub const FLAT_COLUMNS: [&str; 27] = [
    "invoice_month",
    "cost_type",
    "billing_account_id",
    "service_id",
    "service_description",
    "sku_id",
    "sku_description",
    "project_id",
    "project_name",
    "region",
    "location",
    "resource_name",
    "resource_global_name",
    "usage_start_time",
    "usage_end_time",
    "export_time",
    "currency",
    "currency_conversion_rate",
    "cost",
    "usage_amount",
    "usage_unit",
    "usage_pricing_amount",
    "usage_pricing_unit",
    "labels_json",
    "project_labels_json",
    "credits_json",
    "credits_total",
];

/// A flattened row (by column name) → an export row.
pub fn flat_row(get: &dyn Fn(&str) -> Option<String>) -> Result<ExportRow, String> {
    Ok(ExportRow {
        invoice_month: get("invoice_month"),
        cost_type: get("cost_type"),
        billing_account_id: get("billing_account_id"),
        service_id: get("service_id"),
        service_description: get("service_description"),
        sku_id: get("sku_id"),
        sku_description: get("sku_description"),
        project_id: get("project_id"),
        project_name: get("project_name"),
        region: get("region"),
        location: get("location"),
        resource_name: get("resource_name"),
        resource_global_name: get("resource_global_name"),
        usage_start_time: get("usage_start_time"),
        usage_end_time: get("usage_end_time"),
        export_time: get("export_time"),
        currency: get("currency"),
        currency_conversion_rate: get("currency_conversion_rate"),
        cost: get("cost"),
        usage_amount: get("usage_amount"),
        usage_unit: get("usage_unit"),
        usage_pricing_amount: get("usage_pricing_amount"),
        usage_pricing_unit: get("usage_pricing_unit"),
        labels: parse_kv_json(&get("labels_json").unwrap_or_default())?,
        project_labels: parse_kv_json(&get("project_labels_json").unwrap_or_default())?,
        credits: parse_credits_json(&get("credits_json").unwrap_or_default())?,
    })
}

fn push_row(batch: &mut Batch, row: Result<ExportRow, String>, location: &str, raw: &str) {
    batch.records += 1;
    let r = row.and_then(|r| row_lines(&r, location, raw).map_err(|e| e.reason));
    match r {
        Ok((lines, rounded)) => {
            batch.rounded_amounts += rounded;
            batch.lines.extend(lines);
        }
        Err(reason) => batch.errors.push(costledger_core::RowError {
            location: location.to_string(),
            reason,
            raw: costledger_core::text::clip(raw, 4096),
            raw_amount: None,
            currency: None,
        }),
    }
}

fn read_file(
    path: &std::path::Path,
    batch_rows: usize,
    tx: &mpsc::Sender<Result<Batch, ConnectorError>>,
    cancel: &CancellationToken,
) -> Result<(), ConnectorError> {
    let file = path.display().to_string();
    let (input, _) = costledger_focus::reader::open_detect(path)?;
    let mut buf = std::io::BufReader::new(input);
    // JSON lines or CSV: look at the first non-blank byte.
    let first = match buf.fill_buf().map_err(|e| ConnectorError::io(&file, e))?.first() {
        None => return Err(ConnectorError::input(format!("{file}:1"), "the file is empty", "export the table again")),
        Some(c) => *c,
    };
    let mut batch = Batch::default();
    let flush = |batch: &mut Batch, force: bool| -> Result<(), ConnectorError> {
        if (force && batch.records > 0) || batch.lines.len() + batch.errors.len() >= batch_rows {
            tx.blocking_send(Ok(std::mem::take(batch))).map_err(|_| ConnectorError::Cancelled)?;
        }
        Ok(())
    };
    if first == b'{' {
        for (i, line) in buf.lines().enumerate() {
            if cancel.is_cancelled() {
                return Err(ConnectorError::Cancelled);
            }
            let line =
                line.map_err(|e| ConnectorError::input(format!("{file}:{}", i + 1), e.to_string(), "check the file"))?;
            if line.trim().is_empty() {
                continue;
            }
            push_row(&mut batch, json_row(&line), &format!("{file}:{}", i + 1), &line);
            flush(&mut batch, false)?;
        }
    } else {
        let mut rdr = csv::ReaderBuilder::new().flexible(true).from_reader(buf);
        let header: Vec<String> = rdr
            .headers()
            .map_err(|e| ConnectorError::input(format!("{file}:1"), e.to_string(), "check the file"))?
            .iter()
            .map(|h| h.trim().trim_start_matches('\u{feff}').to_ascii_lowercase())
            .collect();
        for need in ["invoice_month", "cost", "currency", "usage_start_time", "billing_account_id"] {
            if !header.iter().any(|h| h == need) {
                return Err(ConnectorError::input(
                    format!("{file}:1"),
                    format!("missing column '{need}'"),
                    "extract the flattened query (see README, GCP) as CSV, or the export table as JSON lines",
                ));
            }
        }
        for rec in rdr.records() {
            if cancel.is_cancelled() {
                return Err(ConnectorError::Cancelled);
            }
            let rec = rec.map_err(|e| ConnectorError::input(&file, e.to_string(), "check the file"))?;
            let line = rec.position().map(|p| p.line()).unwrap_or(0);
            let get = |name: &str| -> Option<String> {
                let i = header.iter().position(|h| h == name)?;
                rec.get(i).map(str::to_string).filter(|v| !v.is_empty())
            };
            let raw = rec.iter().collect::<Vec<_>>().join(",");
            push_row(&mut batch, flat_row(&get), &format!("{file}:{line}"), &raw);
            flush(&mut batch, false)?;
        }
    }
    flush(&mut batch, true)
}

pub fn stream_files(
    paths: Vec<PathBuf>,
    batch_rows: usize,
    cancel: CancellationToken,
) -> BoxStream<'static, Result<Batch, ConnectorError>> {
    let (tx, rx) = mpsc::channel(2);
    tokio::task::spawn_blocking(move || {
        for p in paths {
            if let Err(e) = read_file(&p, batch_rows.max(1), &tx, &cancel) {
                let _ = tx.blocking_send(Err(e));
                return;
            }
        }
    });
    Box::pin(futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|i| (i, rx)) }))
}
