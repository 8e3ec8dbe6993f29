//! `import --format gcp-export`: the rows a BigQuery extract job writes — newline-delimited
//! JSON of the export table (nested records, as the table is) or CSV of the flattened query
//! (`labels_json`, `credits_json` columns). Numbers are read as their text (never through a
//! float). Files stream on a blocking thread in bounded batches.

use std::collections::BTreeMap;
use std::io::BufRead;
use std::path::PathBuf;

use costledger_core::{Batch, ConnectorError, Context, ReadLimits};
use futures::stream::BoxStream;
use serde_json::value::RawValue;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::normalize::{Credit, ExportRow, parse_kv_json, row_lines};

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

/// The `credits` of a row: the export's array of credit objects, or a single credit object
/// (some extract tools unwrap one-element arrays), or null. Anything else, or a credit that
/// is not an object or has no amount, is an error: the row is quarantined, never loaded
/// without its credits.
pub fn credits_of(raw: Option<&RawValue>) -> Result<Vec<Credit>, String> {
    let Some(raw) = raw else { return Ok(Vec::new()) };
    let t = raw.get().trim();
    let items: Vec<Box<RawValue>> = match t.as_bytes().first() {
        None => return Ok(Vec::new()),
        Some(b'n') if t == "null" => return Ok(Vec::new()),
        Some(b'[') => serde_json::from_str(t).map_err(|e| format!("credits: {e}"))?,
        Some(b'{') => vec![RawValue::from_string(t.to_string()).map_err(|e| format!("credits: {e}"))?],
        _ => return Err(format!("credits is neither a list of credits nor one credit: {}", clip(t))),
    };
    items
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let m = obj(c).ok_or_else(|| format!("credit {} is not an object: {}", i + 1, clip(c.get())))?;
            let credit = Credit {
                name: text(m.get("name").map(|b| b.as_ref())),
                full_name: text(m.get("full_name").map(|b| b.as_ref())),
                id: text(m.get("id").map(|b| b.as_ref())),
                kind: text(m.get("type").map(|b| b.as_ref())),
                amount: text(m.get("amount").map(|b| b.as_ref())),
            };
            if credit.amount.is_none() {
                return Err(format!("credit {} has no amount: {}", i + 1, clip(c.get())));
            }
            Ok(credit)
        })
        .collect()
}

fn clip(s: &str) -> String {
    costledger_core::text::clip(s, 200)
}

/// One JSON line of the (nested) export table → an export row.
pub fn json_row(line: &str) -> Result<ExportRow, String> {
    let o: Obj = serde_json::from_str(line).map_err(|e| format!("not a JSON object: {e}"))?;
    let credits = credits_of(o.get("credits").map(|b| b.as_ref()))?;
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
        zone: field(&o, &["location", "zone"]),
        resource_name: field(&o, &["resource", "name"]),
        resource_global_name: field(&o, &["resource", "global_name"]),
        usage_start_time: field(&o, &["usage_start_time"]),
        usage_end_time: field(&o, &["usage_end_time"]),
        export_time: field(&o, &["export_time"]),
        currency: field(&o, &["currency"]),
        currency_conversion_rate: field(&o, &["currency_conversion_rate"]),
        cost: field(&o, &["cost"]),
        cost_at_list: field(&o, &["cost_at_list"]),
        usage_amount: field(&o, &["usage", "amount"]),
        usage_unit: field(&o, &["usage", "unit"]),
        usage_pricing_amount: field(&o, &["usage", "amount_in_pricing_units"]),
        usage_pricing_unit: field(&o, &["usage", "pricing_unit"]),
        price_effective_price: field(&o, &["price", "effective_price"]),
        price_unit: field(&o, &["price", "unit"]),
        price_pricing_unit_quantity: field(&o, &["price", "pricing_unit_quantity"]),
        labels: kv_list(&o, &["labels"]),
        project_labels: kv_list(&o, &["project", "labels"]),
        credits,
    })
}

/// The cost and currency of a JSON line that could not become a row (for the quarantine).
fn json_amount(line: &str) -> (Option<String>, Option<String>) {
    match serde_json::from_str::<Obj>(line) {
        Ok(o) => (field(&o, &["cost"]), field(&o, &["currency"])),
        Err(_) => (None, None),
    }
}

/// The flattened query's columns (also the CSV header of an extract of it). `zone`,
/// `cost_at_list` and the detailed export's `price_*` are read when present (older extracts and
/// the standard export do not have them).
pub const FLAT_COLUMNS: [&str; 32] = [
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
    "zone",
    "resource_name",
    "resource_global_name",
    "usage_start_time",
    "usage_end_time",
    "export_time",
    "currency",
    "currency_conversion_rate",
    "cost",
    "cost_at_list",
    "usage_amount",
    "usage_unit",
    "usage_pricing_amount",
    "usage_pricing_unit",
    "price_effective_price",
    "price_unit",
    "price_pricing_unit_quantity",
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
        zone: get("zone"),
        resource_name: get("resource_name"),
        resource_global_name: get("resource_global_name"),
        usage_start_time: get("usage_start_time"),
        usage_end_time: get("usage_end_time"),
        export_time: get("export_time"),
        currency: get("currency"),
        currency_conversion_rate: get("currency_conversion_rate"),
        cost: get("cost"),
        cost_at_list: get("cost_at_list"),
        usage_amount: get("usage_amount"),
        usage_unit: get("usage_unit"),
        usage_pricing_amount: get("usage_pricing_amount"),
        usage_pricing_unit: get("usage_pricing_unit"),
        price_effective_price: get("price_effective_price"),
        price_unit: get("price_unit"),
        price_pricing_unit_quantity: get("price_pricing_unit_quantity"),
        labels: labels_of(&get("labels_json").unwrap_or_default())?,
        project_labels: labels_of(&get("project_labels_json").unwrap_or_default())?,
        credits: {
            let c = get("credits_json").unwrap_or_default();
            let t = c.trim();
            if t.is_empty() || t == "null" || t == "[]" {
                Vec::new()
            } else {
                let json =
                    if t.contains('\'') || t.contains("None") { python_literal_to_json(t)? } else { t.to_string() };
                let raw = RawValue::from_string(json).map_err(|e| format!("credits: {e}"))?;
                credits_of(Some(&raw))?
            }
        },
    })
}

/// Labels as the export's key/value list (`[{"key":…,"value":…}]`) or an object
/// (`{"team":"x"}`), in JSON or as a Python literal (single quotes, `None`).
fn labels_of(s: &str) -> Result<Vec<(String, String)>, String> {
    let t = s.trim();
    if t.is_empty() || t == "null" || t == "[]" || t == "{}" {
        return Ok(Vec::new());
    }
    let json = if t.contains('\'') || t.contains("None") { python_literal_to_json(t)? } else { t.to_string() };
    if json.starts_with('{') {
        let m: BTreeMap<String, serde_json::Value> = serde_json::from_str(&json).map_err(|e| format!("labels: {e}"))?;
        return Ok(m
            .into_iter()
            .map(|(k, v)| {
                let v = match v {
                    serde_json::Value::String(s) => s,
                    serde_json::Value::Null => String::new(),
                    other => other.to_string(),
                };
                (k, v)
            })
            .collect());
    }
    parse_kv_json(&json)
}

/// A Python literal (what `str()` of a list of dicts prints: single-quoted strings, `None`,
/// `True`, `False`) as JSON text. Numbers are copied as written, so amounts keep their exact
/// text (`-5e-06`).
pub fn python_literal_to_json(s: &str) -> Result<String, String> {
    let mut out = String::with_capacity(s.len() + 8);
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\'' | '"' => {
                let quote = c;
                let mut text = String::new();
                loop {
                    match chars.next() {
                        None => return Err(format!("unterminated string in '{}'", clip(s))),
                        Some('\\') => match chars.next() {
                            Some('n') => text.push('\n'),
                            Some('t') => text.push('\t'),
                            Some('r') => text.push('\r'),
                            Some(other) => text.push(other),
                            None => return Err(format!("unterminated string in '{}'", clip(s))),
                        },
                        Some(ch) if ch == quote => break,
                        Some(ch) => text.push(ch),
                    }
                }
                out.push_str(&serde_json::Value::String(text).to_string());
            }
            c if c.is_ascii_alphabetic() || c == '_' => {
                let mut word = String::from(c);
                while let Some(&n) = chars.peek() {
                    if n.is_ascii_alphanumeric() || n == '_' {
                        word.push(n);
                        chars.next();
                    } else {
                        break;
                    }
                }
                match word.as_str() {
                    "None" | "null" => out.push_str("null"),
                    "True" | "true" => out.push_str("true"),
                    "False" | "false" => out.push_str("false"),
                    // Exponent markers inside numbers (1e-06) and anything else: as written.
                    other => out.push_str(other),
                }
            }
            other => out.push(other),
        }
    }
    Ok(out)
}

/// One source row into the batch: its lines, or a quarantined row that keeps the row's raw
/// amount and currency (`fallback` when the row could not even be read), so the quarantine
/// total still conserves money.
fn push_row(
    batch: &mut Batch,
    row: Result<ExportRow, String>,
    location: &str,
    raw: &str,
    fallback: impl FnOnce() -> (Option<String>, Option<String>),
) {
    batch.records += 1;
    match row {
        Ok(r) => match row_lines(&r, location, raw) {
            Ok((lines, rounded)) => {
                batch.rounded_amounts += rounded;
                batch.lines.extend(lines);
            }
            Err(e) => batch.errors.push(e),
        },
        Err(reason) => {
            let (raw_amount, currency) = fallback();
            batch.errors.push(costledger_core::RowError {
                location: location.to_string(),
                reason,
                raw: costledger_core::text::clip(raw, 4096),
                raw_amount,
                currency,
            })
        }
    }
}

/// A CSV header name as the flattened query's column: lower case, the export's dotted names
/// (`invoice.month`, `location.region`; what nise and Koku write) mapped to the flat names.
fn flat_name(h: &str) -> String {
    let n = h.trim().trim_start_matches('\u{feff}').to_ascii_lowercase().replace('.', "_");
    match n.as_str() {
        "location_region" => "region".into(),
        "location_location" => "location".into(),
        "location_zone" => "zone".into(),
        "location_country" => "location_country".into(),
        "usage_amount_in_pricing_units" => "usage_pricing_amount".into(),
        "labels" => "labels_json".into(),
        "project_labels" => "project_labels_json".into(),
        "credits" => "credits_json".into(),
        _ => n,
    }
}

fn read_file(
    path: &std::path::Path,
    batch_rows: usize,
    limits: &ReadLimits,
    tx: &mpsc::Sender<Result<Batch, ConnectorError>>,
    cancel: &CancellationToken,
) -> Result<(), ConnectorError> {
    use costledger_files::reader::{BoundedLine, oversized_error, oversized_quoted, read_line_bounded};
    let file = path.display().to_string();
    // The raw bytes are hashed as they are read: the load's key is the key of these bytes.
    let (input, _, tap) = costledger_files::reader::open_tapped(path, limits)?;
    let mut buf = std::io::BufReader::new(input);
    let read_error = |at: String, e: std::io::Error| match costledger_files::reader::limit_message(&e) {
        Some(m) => ConnectorError::input(at, m, "nothing from this file was loaded; check the file"),
        None => ConnectorError::input(at, e.to_string(), "check the file"),
    };
    // JSON lines or CSV: look at the first non-blank byte.
    // Leading blank lines (and a byte-order mark) say nothing about the format.
    let first = match buf
        .fill_buf()
        .map_err(|e| ConnectorError::io(&file, e))?
        .iter()
        .copied()
        .find(|c| !c.is_ascii_whitespace() && *c != 0xef && *c != 0xbb && *c != 0xbf)
    {
        None => return Err(ConnectorError::input(format!("{file}:1"), "the file is empty", "export the table again")),
        Some(c) => c,
    };
    let mut batch = Batch::default();
    let flush = |batch: &mut Batch, force: bool| -> Result<(), ConnectorError> {
        if (force && batch.records > 0) || batch.lines.len() + batch.errors.len() >= batch_rows {
            tx.blocking_send(Ok(std::mem::take(batch))).map_err(|_| ConnectorError::Cancelled)?;
        }
        Ok(())
    };
    if first == b'{' {
        let mut bytes = Vec::new();
        let mut n = 0u64;
        loop {
            if cancel.is_cancelled() {
                return Err(ConnectorError::Cancelled);
            }
            n += 1;
            let at = format!("{file}:{n}");
            match read_line_bounded(&mut buf, &mut bytes, limits.max_record_bytes)
                .map_err(|e| read_error(at.clone(), e))?
            {
                BoundedLine::End => break,
                BoundedLine::Oversized(skipped) => {
                    let o = costledger_files::fastcsv::Oversized { line: n, bytes: skipped, quoted: false };
                    batch.records += 1;
                    batch.errors.push(oversized_error(&file, &o, limits.max_record_bytes));
                }
                BoundedLine::Line => {
                    let line = match std::str::from_utf8(&bytes) {
                        Ok(l) => l,
                        Err(e) => {
                            batch.records += 1;
                            batch.errors.push(costledger_core::RowError {
                                location: at,
                                reason: format!("the line is not valid UTF-8 ({e})"),
                                raw: costledger_core::text::clip(&String::from_utf8_lossy(&bytes), 4096),
                                raw_amount: None,
                                currency: None,
                            });
                            flush(&mut batch, false)?;
                            continue;
                        }
                    };
                    let line = line.strip_suffix('\r').unwrap_or(line);
                    if line.trim().is_empty() {
                        continue;
                    }
                    push_row(&mut batch, json_row(line), &at, line, || json_amount(line));
                }
            }
            flush(&mut batch, false)?;
        }
        // Every byte is hashed once the reader is done with it.
        drop(buf);
    } else {
        let mut rdr = costledger_files::fastcsv::FastCsv::with_limit(buf, limits.max_record_bytes);
        let mut rec = csv::ByteRecord::new();
        let read = |rdr: &mut costledger_files::fastcsv::FastCsv<_>, rec: &mut csv::ByteRecord, line: u64| {
            rdr.read_byte_record(rec).map_err(|e| match rdr.oversized() {
                Some(o) => oversized_quoted(&file, &o, limits.max_record_bytes),
                None => match e.into_kind() {
                    csv::ErrorKind::Io(io) => read_error(format!("{file}:{line}"), io),
                    other => ConnectorError::input(format!("{file}:{line}"), format!("{other:?}"), "check the file"),
                },
            })
        };
        if !read(&mut rdr, &mut rec, 1)? || rdr.oversized().is_some() {
            return Err(ConnectorError::input(
                format!("{file}:1"),
                "no usable header line",
                "extract the flattened query (see README, GCP) as CSV, or the export table as JSON lines",
            ));
        }
        let header: Vec<String> = rec.iter().map(|h| flat_name(&String::from_utf8_lossy(h))).collect();
        for need in ["invoice_month", "cost", "currency", "usage_start_time", "billing_account_id"] {
            if !header.iter().any(|h| h == need) {
                return Err(ConnectorError::input(
                    format!("{file}:1"),
                    format!("missing column '{need}'"),
                    "extract the flattened query (see README, GCP) as CSV, or the export table as JSON lines",
                ));
            }
        }
        loop {
            if cancel.is_cancelled() {
                return Err(ConnectorError::Cancelled);
            }
            let next = rdr.position().line();
            if !read(&mut rdr, &mut rec, next)? {
                break;
            }
            let line = rec.position().map(|p| p.line()).unwrap_or(next);
            if let Some(o) = rdr.oversized() {
                batch.records += 1;
                batch.errors.push(oversized_error(&file, &o, limits.max_record_bytes));
                flush(&mut batch, false)?;
                continue;
            }
            let fields: Vec<std::borrow::Cow<'_, str>> = rec.iter().map(String::from_utf8_lossy).collect();
            let utf8 = fields.iter().all(|f| matches!(f, std::borrow::Cow::Borrowed(_)));
            let get = |name: &str| -> Option<String> {
                let i = header.iter().position(|h| h == name)?;
                fields.get(i).map(|v| v.to_string()).filter(|v| !v.is_empty())
            };
            let raw = fields.join(",");
            let row = if utf8 { flat_row(&get) } else { Err("the record is not valid UTF-8".to_string()) };
            push_row(&mut batch, row, &format!("{file}:{line}"), &raw, || (get("cost"), get("currency")));
            flush(&mut batch, false)?;
        }
    }
    flush(&mut batch, true)?;
    let key = tap.finish()?;
    tx.blocking_send(Ok(Batch { content_key: Some(key), ..Batch::default() })).map_err(|_| ConnectorError::Cancelled)
}

pub fn stream_files(paths: Vec<PathBuf>, cx: &Context) -> BoxStream<'static, Result<Batch, ConnectorError>> {
    let (tx, rx) = mpsc::channel(2);
    let (batch_rows, cancel, limits) = (cx.batch_rows, cx.cancel.clone(), cx.read_limits);
    tokio::task::spawn_blocking(move || {
        for p in paths {
            if let Err(e) = read_file(&p, batch_rows.max(1), &limits, &tx, &cancel) {
                let _ = tx.blocking_send(Err(e));
                return;
            }
        }
    });
    Box::pin(futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|i| (i, rx)) }))
}
