//! A loopback BigQuery REST server, wire-exact for what `google-cloud-bigquery` 0.19 sends
//! (the BigQuery v2 REST API: jobs.query and jobs.getQueryResults): `POST …/queries` (jobs.query), `GET …/queries/{job}` for polls and
//! `pageToken` pages, f/v rows, always a `jobReference`, Google's error envelope. It does not
//! run SQL: it recognises the connector's two queries (partition listing, one partition's rows)
//! and answers from its tables.
#![allow(dead_code)]

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use axum::body::Body;
use axum::http::{Request, Response};

/// Scalar columns of the connector's row query, in order (then `labels`, `project_labels`,
/// `credits` as REPEATED RECORDs, rendered from the row's `*_json` values).
pub const ROW_COLUMNS: [&str; 28] = [
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
    "labels_json",
    "project_labels_json",
    "credits_json",
];

pub type Row = BTreeMap<&'static str, Option<String>>;

struct Job {
    columns: Vec<&'static str>,
    /// Pre-rendered f/v cells per row.
    rows: Vec<Vec<String>>,
    polls_left: u32,
    nested: bool,
}

const SCALARS: usize = 25;

/// `[{"key":"team","value":"x"}]` JSON → a REPEATED RECORD cell in f/v form.
fn repeated(json_text: &Option<String>, fields: &[&str]) -> String {
    let items: Vec<serde_json::Map<String, serde_json::Value>> =
        json_text.as_deref().and_then(|t| serde_json::from_str(t).ok()).unwrap_or_default();
    let elems: Vec<String> = items
        .iter()
        .map(|m| {
            let f: Vec<String> = fields
                .iter()
                .map(|k| match m.get(*k) {
                    None | Some(serde_json::Value::Null) => "{\"v\":null}".to_string(),
                    Some(serde_json::Value::String(s)) => format!("{{\"v\":{}}}", serde_json::to_string(s).expect("j")),
                    Some(other) => format!("{{\"v\":{}}}", serde_json::to_string(&other.to_string()).expect("j")),
                })
                .collect();
            format!("{{\"v\":{{\"f\":[{}]}}}}", f.join(","))
        })
        .collect();
    format!("{{\"v\":[{}]}}", elems.join(","))
}

#[derive(Default)]
pub struct BqState {
    /// (partition day, invoice month) → rows.
    pub partitions: Mutex<BTreeMap<(String, String), Vec<Row>>>,
    /// Rows of a FOCUS view, as the JSON text `TO_JSON_STRING(t)` returns (kept as text so
    /// numbers keep every digit).
    pub focus_rows: Mutex<Vec<String>>,
    /// Faults served first: (status, reason).
    pub faults: Mutex<VecDeque<(u16, &'static str)>>,
    /// Polls a new job needs before it completes.
    pub polls: Mutex<u32>,
    pub page_size: Mutex<usize>,
    jobs: Mutex<BTreeMap<String, Job>>,
    pub calls: AtomicU64,
    pub queries: Mutex<Vec<String>>,
}

pub type Bq = Arc<BqState>;

fn json(status: u16, body: String) -> Response<Body> {
    Response::builder().status(status).header("content-type", "application/json").body(Body::from(body)).expect("r")
}

fn error(status: u16, reason: &str, message: &str) -> Response<Body> {
    let st = match status {
        401 => "UNAUTHENTICATED",
        403 => "PERMISSION_DENIED",
        429 => "RESOURCE_EXHAUSTED",
        404 => "NOT_FOUND",
        _ => "INTERNAL",
    };
    json(
        status,
        format!(
            "{{\"error\":{{\"code\":{status},\"message\":\"{message}\",\"errors\":[{{\"message\":\"{message}\",\"domain\":\"global\",\"reason\":\"{reason}\"}}],\"status\":\"{st}\"}}}}"
        ),
    )
}

fn cell(v: &Option<String>) -> String {
    match v {
        None => "{\"v\":null}".into(),
        Some(s) => format!("{{\"v\":{}}}", serde_json::to_string(s).expect("json")),
    }
}

fn page(job_id: &str, job: &Job, start: usize, size: usize, kind: &str, with_rows: bool) -> String {
    let mut fields: Vec<String> =
        job.columns.iter().map(|c| format!("{{\"name\":\"{c}\",\"type\":\"STRING\",\"mode\":\"NULLABLE\"}}")).collect();
    if job.nested {
        let kv = "[{\"name\":\"key\",\"type\":\"STRING\",\"mode\":\"NULLABLE\"},{\"name\":\"value\",\"type\":\"STRING\",\"mode\":\"NULLABLE\"}]";
        fields.push(format!("{{\"name\":\"labels\",\"type\":\"RECORD\",\"mode\":\"REPEATED\",\"fields\":{kv}}}"));
        fields
            .push(format!("{{\"name\":\"project_labels\",\"type\":\"RECORD\",\"mode\":\"REPEATED\",\"fields\":{kv}}}"));
        fields.push("{\"name\":\"credits\",\"type\":\"RECORD\",\"mode\":\"REPEATED\",\"fields\":[{\"name\":\"name\",\"type\":\"STRING\"},{\"name\":\"full_name\",\"type\":\"STRING\"},{\"name\":\"id\",\"type\":\"STRING\"},{\"name\":\"type\",\"type\":\"STRING\"},{\"name\":\"amount\",\"type\":\"NUMERIC\"}]}".to_string());
    }
    let end = (start + size).min(job.rows.len());
    let rows: Vec<String> = if with_rows {
        job.rows[start..end].iter().map(|r| format!("{{\"f\":[{}]}}", r.join(","))).collect()
    } else {
        Vec::new()
    };
    let next = if with_rows { end } else { start };
    let token = if next < job.rows.len() { format!(",\"pageToken\":\"t{next}\"") } else { String::new() };
    format!(
        "{{\"kind\":\"bigquery#{kind}\",\"schema\":{{\"fields\":[{}]}},\"jobReference\":{{\"projectId\":\"acme-billing\",\"jobId\":\"{job_id}\",\"location\":\"US\"}},\"totalRows\":\"{}\",\"rows\":[{}]{token},\"totalBytesProcessed\":\"1048576\",\"jobComplete\":true,\"cacheHit\":false}}",
        fields.join(","),
        job.rows.len(),
        rows.join(",")
    )
}

fn between<'a>(q: &'a str, a: &str, b: &str) -> Option<&'a str> {
    let i = q.find(a)? + a.len();
    let j = q[i..].find(b)? + i;
    Some(&q[i..j])
}

/// (charge day, billing month `YYYYMM`) of a FOCUS row.
fn focus_key(text: &str) -> (String, String) {
    let r: serde_json::Value = serde_json::from_str(text).unwrap_or_default();
    let day = r["ChargePeriodStart"].as_str().unwrap_or("").get(..10).unwrap_or("").to_string();
    let bp = r["BillingPeriodStart"].as_str().unwrap_or("");
    (day, format!("{}{}", bp.get(..4).unwrap_or(""), bp.get(5..7).unwrap_or("")))
}

fn answer_focus(s: &BqState, sql: &str) -> Job {
    let rows = s.focus_rows.lock().expect("lock");
    if sql.contains("FARM_FINGERPRINT") {
        let mut groups: BTreeMap<(String, String), (u64, usize)> = BTreeMap::new();
        for r in rows.iter() {
            use sha2::Digest;
            let h = sha2::Sha256::digest(r.as_bytes());
            let fp = u64::from_be_bytes([h[0], h[1], h[2], h[3], h[4], h[5], h[6], h[7]]);
            let e = groups.entry(focus_key(r)).or_insert((0, 0));
            e.0 ^= fp;
            e.1 += 1;
        }
        let rows = groups
            .into_iter()
            .map(|((day, month), (fp, n))| {
                [Some(day), Some(month), Some((fp as i64).to_string()), Some(n.to_string())].iter().map(cell).collect()
            })
            .collect();
        Job { columns: vec!["day", "invoice_month", "fingerprint", "row_count"], rows, polls_left: 0, nested: false }
    } else {
        let day = between(sql, "DATE(t.ChargePeriodStart) = '", "'").unwrap_or("").to_string();
        let month = between(sql, "FORMAT_TIMESTAMP('%Y%m', t.BillingPeriodStart) = '", "'").unwrap_or("").to_string();
        let rows = rows
            .iter()
            .filter(|r| focus_key(r) == (day.clone(), month.clone()))
            .map(|r| vec![cell(&Some(r.clone()))])
            .collect();
        Job { columns: vec!["row"], rows, polls_left: 0, nested: false }
    }
}

fn answer(s: &BqState, sql: &str) -> Job {
    if sql.contains("ChargePeriodStart") {
        return answer_focus(s, sql);
    }
    let parts = s.partitions.lock().expect("lock");
    if sql.contains("MAX(export_time)") {
        let from = between(sql, "BETWEEN '", "'").unwrap_or("").to_string();
        let to = between(sql, "' AND '", "'").unwrap_or("").to_string();
        let months = between(sql, "invoice.month IN (", ")").unwrap_or("");
        let mut rows = Vec::new();
        for ((day, month), rs) in parts.iter() {
            if *day < from || *day > to || !months.contains(&format!("'{month}'")) {
                continue;
            }
            let max = rs
                .iter()
                .filter_map(|r| r.get("export_time").cloned().flatten())
                .max_by_key(|t| t.parse::<i64>().unwrap_or(0));
            rows.push(
                [Some(day.clone()), Some(month.clone()), max, Some(rs.len().to_string())].iter().map(cell).collect(),
            );
        }
        Job {
            columns: vec!["day", "invoice_month", "max_export_time", "row_count"],
            rows,
            polls_left: 0,
            nested: false,
        }
    } else {
        let day = between(sql, "DATE(_PARTITIONTIME) = '", "'").unwrap_or("").to_string();
        let month = between(sql, "invoice.month = '", "'").unwrap_or("").to_string();
        let rows = parts
            .get(&(day, month))
            .map(|rs| {
                rs.iter()
                    .map(|r| {
                        let mut cells: Vec<String> =
                            ROW_COLUMNS[..SCALARS].iter().map(|c| cell(&r.get(c).cloned().flatten())).collect();
                        cells.push(repeated(&r.get("labels_json").cloned().flatten(), &["key", "value"]));
                        cells.push(repeated(&r.get("project_labels_json").cloned().flatten(), &["key", "value"]));
                        cells.push(repeated(
                            &r.get("credits_json").cloned().flatten(),
                            &["name", "full_name", "id", "type", "amount"],
                        ));
                        cells
                    })
                    .collect()
            })
            .unwrap_or_default();
        Job { columns: ROW_COLUMNS[..SCALARS].to_vec(), rows, polls_left: 0, nested: true }
    }
}

async fn handle(s: Bq, req: Request<Body>) -> Response<Body> {
    s.calls.fetch_add(1, Ordering::SeqCst);
    let method = req.method().as_str().to_string();
    let path = req.uri().path().to_string();
    let query = req.uri().query().unwrap_or("").to_string();
    let body = axum::body::to_bytes(req.into_body(), 1 << 20).await.unwrap_or_default();
    if let Some((status, reason)) = s.faults.lock().expect("lock").pop_front() {
        let msg = if status == 401 { "Request had invalid authentication credentials." } else { "injected fault" };
        return error(status, reason, msg);
    }
    let size = (*s.page_size.lock().expect("lock")).max(1);
    if method == "POST" && path.ends_with("/queries") {
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
        let sql = v["query"].as_str().unwrap_or("").to_string();
        s.queries.lock().expect("lock").push(sql.clone());
        let mut job = answer(&s, &sql);
        job.polls_left = *s.polls.lock().expect("lock");
        let id = format!("job_{}", s.calls.load(Ordering::SeqCst));
        let resp = if job.polls_left > 0 {
            format!(
                "{{\"kind\":\"bigquery#queryResponse\",\"jobReference\":{{\"projectId\":\"acme-billing\",\"jobId\":\"{id}\",\"location\":\"US\"}},\"jobComplete\":false}}"
            )
        } else {
            page(&id, &job, 0, size, "queryResponse", true)
        };
        s.jobs.lock().expect("lock").insert(id, job);
        return json(200, resp);
    }
    if method == "GET" && path.contains("/queries/") {
        let id = path.rsplit('/').next().unwrap_or("").to_string();
        let mut jobs = s.jobs.lock().expect("lock");
        let Some(job) = jobs.get_mut(&id) else { return error(404, "notFound", "Not found: Job") };
        let param = |k: &str| query.split('&').find_map(|kv| kv.strip_prefix(&format!("{k}=")).map(str::to_string));
        if param("maxResults").as_deref() == Some("0") {
            if job.polls_left > 0 {
                job.polls_left -= 1;
            }
            if job.polls_left > 0 {
                return json(
                    200,
                    format!(
                        "{{\"kind\":\"bigquery#getQueryResultsResponse\",\"jobReference\":{{\"projectId\":\"acme-billing\",\"jobId\":\"{id}\",\"location\":\"US\"}},\"jobComplete\":false}}"
                    ),
                );
            }
            // Complete: no rows in the poll answer, a page token for the first page.
            return json(200, page(&id, job, 0, size, "getQueryResultsResponse", false));
        }
        let start: usize = param("pageToken").and_then(|t| t.trim_start_matches('t').parse().ok()).unwrap_or(0);
        return json(200, page(&id, job, start, size, "getQueryResultsResponse", true));
    }
    error(404, "notFound", "no such route")
}

pub async fn serve_bq() -> (Bq, String) {
    let s: Bq = Arc::new(BqState::default());
    *s.page_size.lock().expect("lock") = 2;
    let app = axum::Router::new().fallback({
        let s = s.clone();
        move |req: Request<Body>| handle(s.clone(), req)
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(listener, app).await.expect("serve") });
    (s, format!("http://{addr}"))
}

/// A row of the export (strings as BigQuery sends them).
pub fn bq_row(
    day: &str,
    hour: u32,
    service: &str,
    cost: &str,
    export_micros: i64,
    extra: &[(&'static str, &str)],
) -> Row {
    let start =
        chrono::NaiveDate::parse_from_str(day, "%Y-%m-%d").expect("day").and_hms_opt(hour, 0, 0).expect("h").and_utc();
    let mut r: Row = ROW_COLUMNS.iter().map(|c| (*c, None)).collect();
    let set = |r: &mut Row, k: &'static str, v: &str| {
        r.insert(k, Some(v.to_string()));
    };
    set(&mut r, "invoice_month", &start.format("%Y%m").to_string());
    set(&mut r, "cost_type", "regular");
    set(&mut r, "billing_account_id", "0123AB-CDEF45-6789AB");
    set(&mut r, "service_description", service);
    set(&mut r, "sku_description", &format!("{service} SKU"));
    set(&mut r, "project_id", "payments-prod");
    set(&mut r, "region", "us-central1");
    set(&mut r, "usage_start_time", &start.timestamp_micros().to_string());
    set(&mut r, "usage_end_time", &(start + chrono::Duration::hours(1)).timestamp_micros().to_string());
    set(&mut r, "export_time", &export_micros.to_string());
    set(&mut r, "currency", "USD");
    set(&mut r, "cost", cost);
    set(&mut r, "labels_json", "[{\"key\":\"team\",\"value\":\"payments\"}]");
    set(&mut r, "project_labels_json", "[]");
    set(&mut r, "credits_json", "[]");
    for (k, v) in extra {
        r.insert(k, Some(v.to_string()));
    }
    r
}
