//! `gcp_billing_export` through `google-cloud-bigquery`: one delivery per (invoice month ×
//! partition day), keyed by the partition's `MAX(export_time)`, so late rows (credits,
//! adjustments) replace that day instead of adding to it. Every query filters on
//! `_PARTITIONTIME` (never a full scan) and its bytes processed are logged.

use chrono::{DateTime, Duration, NaiveDate, Utc};
use costledger_core::{Batch, BillingPeriod, ConnectorError, Context, Delivery, PeriodWindow};
use futures::stream::BoxStream;
use google_cloud_bigquery::client::BigQuery;
use google_cloud_bigquery::error::QueryError;
use tracing::info;

use crate::files::flat_row;
use crate::normalize::{Credit, row_lines};

fn scalar(v: Option<&serde_json::Value>) -> Option<String> {
    match v? {
        serde_json::Value::String(s) => Some(s.clone()),
        serde_json::Value::Null => None,
        other => Some(other.to_string()),
    }
}

/// A REPEATED RECORD<key, value> cell.
fn nested_kv(v: Option<serde_json::Value>) -> Vec<(String, String)> {
    let Some(serde_json::Value::Array(items)) = v else { return Vec::new() };
    items.iter().filter_map(|i| Some((scalar(i.get("key"))?, scalar(i.get("value")).unwrap_or_default()))).collect()
}

/// The credits REPEATED RECORD cell.
fn nested_credits(v: Option<serde_json::Value>) -> Vec<Credit> {
    let Some(serde_json::Value::Array(items)) = v else { return Vec::new() };
    items
        .iter()
        .map(|i| Credit {
            name: scalar(i.get("name")),
            full_name: scalar(i.get("full_name")),
            id: scalar(i.get("id")),
            kind: scalar(i.get("type")),
            amount: scalar(i.get("amount")),
        })
        .collect()
}

pub struct BigQueryExport {
    pub(crate) client: BigQuery,
    pub(crate) project: String,
    pub(crate) table: String,
    pub(crate) location: Option<String>,
    pub(crate) max_bytes_billed: Option<i64>,
    pub(crate) lookback_days: Option<u32>,
    /// The FOCUS view (deliveries by charge day and content fingerprint) instead of the export table.
    pub(crate) focus: bool,
    pub(crate) attempts: u32,
    pub(crate) base_delay: std::time::Duration,
    pub(crate) now: fn() -> DateTime<Utc>,
    pub(crate) calls: std::sync::atomic::AtomicU64,
}

/// An RPC failure → what the scheduler should do about it.
fn map_rpc(source: &google_cloud_gax::error::Error, shown: &str, table: &str) -> ConnectorError {
    let e = shown;
    match source.http_status_code() {
        Some(429) => ConnectorError::RateLimited { retry_after: None },
        Some(401) | Some(403) => ConnectorError::Auth(format!(
            "BigQuery refused the query on {table} ({e}). Check the credentials (credentials_file or application \
             default credentials) and that they may run jobs in the project and read the table"
        )),
        Some(404) => ConnectorError::input(table, format!("not found: {e}"), "check project, dataset and table names"),
        Some(s) if s >= 500 => ConnectorError::Transient(format!("BigQuery: {e}")),
        None if source.is_io() || source.is_connect() || source.is_timeout() || source.is_transport() => {
            ConnectorError::Transient(format!("BigQuery: {e}"))
        }
        _ => ConnectorError::input(table, e.to_string(), "check the source's configuration"),
    }
}

fn map_row_err(e: google_cloud_bigquery::error::RowError, table: &str) -> ConnectorError {
    match &e {
        google_cloud_bigquery::error::RowError::Rpc { source, .. } => map_rpc(source, &e.to_string(), table),
        _ => ConnectorError::input(table, format!("unreadable result row: {e}"), "check the table's schema"),
    }
}

fn map_err(e: QueryError, table: &str) -> ConnectorError {
    match &e {
        QueryError::Rpc { source, .. } => map_rpc(source, &e.to_string(), table),
        QueryError::JobFailed { errors, .. } => {
            let reasons: Vec<String> = errors.iter().map(|x| format!("{}: {}", x.reason, x.message)).collect();
            let retriable = !errors.is_empty()
                && errors
                    .iter()
                    .all(|x| matches!(x.reason.as_str(), "backendError" | "internalError" | "rateLimitExceeded"));
            if retriable {
                ConnectorError::Transient(format!("BigQuery job failed: {}", reasons.join("; ")))
            } else {
                ConnectorError::input(
                    table,
                    format!("the query failed: {}", reasons.join("; ")),
                    "check the table's schema",
                )
            }
        }
        _ => ConnectorError::input(table, e.to_string(), "check the source's configuration"),
    }
}

/// The row query: scalars flattened (money as NUMERIC text, timestamps as microseconds);
/// labels, project labels and credits stay REPEATED RECORDs (credit amounts cast to NUMERIC,
/// so they arrive as exact decimal text).
pub fn rows_sql(table: &str, detailed: bool, day: NaiveDate, invoice_month: &str) -> String {
    let resource = if detailed {
        "resource.name AS resource_name, resource.global_name AS resource_global_name, \
         CAST(price.effective_price AS STRING) AS price_effective_price, price.unit AS price_unit, \
         CAST(price.pricing_unit_quantity AS STRING) AS price_pricing_unit_quantity,"
    } else {
        "CAST(NULL AS STRING) AS resource_name, CAST(NULL AS STRING) AS resource_global_name,"
    };
    format!(
        "SELECT invoice.month AS invoice_month, cost_type, billing_account_id, service.id AS service_id, \
         service.description AS service_description, sku.id AS sku_id, sku.description AS sku_description, \
         project.id AS project_id, project.name AS project_name, location.region AS region, \
         location.location AS location, location.zone AS zone, {resource} \
         CAST(UNIX_MICROS(usage_start_time) AS STRING) AS usage_start_time, \
         CAST(UNIX_MICROS(usage_end_time) AS STRING) AS usage_end_time, \
         CAST(UNIX_MICROS(export_time) AS STRING) AS export_time, currency, \
         CAST(currency_conversion_rate AS STRING) AS currency_conversion_rate, \
         CAST(CAST(cost AS NUMERIC) AS STRING) AS cost, \
         CAST(CAST(cost_at_list AS NUMERIC) AS STRING) AS cost_at_list, CAST(usage.amount AS STRING) AS usage_amount, \
         usage.unit AS usage_unit, CAST(usage.amount_in_pricing_units AS STRING) AS usage_pricing_amount, \
         usage.pricing_unit AS usage_pricing_unit, labels, project.labels AS project_labels, \
         ARRAY(SELECT AS STRUCT c.name, c.full_name, c.id, c.type, CAST(c.amount AS NUMERIC) AS amount \
         FROM UNNEST(credits) c) AS credits \
         FROM `{table}` WHERE DATE(_PARTITIONTIME) = '{day}' AND invoice.month = '{invoice_month}'"
    )
}

/// Partition days and their latest export time, per invoice month.
pub fn partitions_sql(table: &str, from: NaiveDate, to: NaiveDate, months: &[String]) -> String {
    let list: Vec<String> = months.iter().map(|m| format!("'{m}'")).collect();
    format!(
        "SELECT CAST(DATE(_PARTITIONTIME) AS STRING) AS day, invoice.month AS invoice_month, \
         CAST(UNIX_MICROS(MAX(export_time)) AS STRING) AS max_export_time, CAST(COUNT(*) AS STRING) AS row_count \
         FROM `{table}` WHERE DATE(_PARTITIONTIME) BETWEEN '{from}' AND '{to}' AND invoice.month IN ({}) \
         GROUP BY 1, 2 ORDER BY 1, 2",
        list.join(", ")
    )
}

impl BigQueryExport {
    fn detailed(&self) -> bool {
        self.table.contains("_resource_")
    }

    pub fn api_calls(&self) -> u64 {
        self.calls.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Run a query (retrying 429/5xx, which the crate does not retry for jobs.query) and return
    /// its row iterator.
    async fn run(&self, sql: String) -> Result<google_cloud_bigquery::query::RowIterator, ConnectorError> {
        let mut attempt = 0u32;
        loop {
            attempt += 1;
            self.calls.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let mut q = self.client.query(sql.clone()).with_project_id(self.project.clone());
            if let Some(l) = &self.location {
                q = q.set_location(l.clone());
            }
            if let Some(b) = self.max_bytes_billed {
                q = q.set_maximum_bytes_billed(b);
            }
            match q.until_done().await {
                Ok(done) => {
                    let bytes = done.metadata().total_bytes_processed.map(|b| b.to_string()).unwrap_or_default();
                    info!(table = %self.table, bytes_processed = %bytes, "BigQuery query done");
                    return Ok(done.read());
                }
                Err(e) => {
                    let err = map_err(e, &self.table);
                    if err.is_retriable() && attempt < self.attempts {
                        let wait = self.base_delay * 2u32.pow((attempt - 1).min(6));
                        tracing::warn!(error = %err, attempt, wait_ms = wait.as_millis() as u64, "BigQuery query failed; retrying");
                        tokio::time::sleep(wait).await;
                        continue;
                    }
                    return Err(err);
                }
            }
        }
    }

    pub async fn deliveries(&self, window: PeriodWindow, cx: &Context) -> Result<Vec<Delivery>, ConnectorError> {
        let mut months = Vec::new();
        let mut m = window.from;
        while m <= window.to {
            months.push(format!("{:04}{:02}", m.year, m.month));
            m = m.next();
        }
        let today = (self.now)().date_naive();
        // Rows of an invoice month sit in partitions from the day before it starts (Pacific
        // time) to some days after it ends; the window's months reach up to today.
        let mut from = window.from.start().date_naive() - Duration::days(1);
        if let Some(n) = self.lookback_days {
            from = from.max(today - Duration::days(i64::from(n)));
        }
        let sql = if self.focus {
            crate::focus::partitions_sql(&self.table, from, today, &months)
        } else {
            partitions_sql(&self.table, from, today, &months)
        };
        let mut rows = self.run(sql).await?;
        let mut out = Vec::new();
        while let Some(r) = rows.next().await {
            let r = r.map_err(|e| map_row_err(e, &self.table))?;
            let get = |c: &str| r.get::<Option<String>>(c).ok().flatten();
            let key = if self.focus {
                get("fingerprint").map(|f| format!("fingerprint:{f}:{}", get("row_count").unwrap_or_default()))
            } else {
                get("max_export_time").map(|k| format!("export_time:{k}"))
            };
            let (Some(day), Some(month), Some(key)) = (get("day"), get("invoice_month"), key) else {
                continue;
            };
            let period: Option<BillingPeriod> =
                format!("{}-{}", month.get(..4).unwrap_or(""), month.get(4..).unwrap_or("")).parse().ok();
            out.push(Delivery {
                scope: format!("{}/{day}", period.map(|p| p.to_string()).unwrap_or_else(|| month.clone())),
                delivery_key: key,
                billing_period: period,
                description: format!(
                    "{} invoice month {month}, partition {day} ({} rows)",
                    self.table,
                    get("row_count").unwrap_or_default()
                ),
                items: vec![day, month],
                final_periods: false,
                key_pending: false,
            });
        }
        info!(source = %cx.source, partitions = out.len(), "BigQuery partitions listed");
        Ok(out)
    }

    pub fn fetch<'a>(&'a self, d: &'a Delivery, cx: &'a Context) -> BoxStream<'a, Result<Batch, ConnectorError>> {
        let batch_rows = cx.batch_rows.max(1);
        let cancel = cx.cancel.clone();
        let stream = async_stream(self, d, batch_rows, cancel);
        Box::pin(stream)
    }
}

struct FetchState<'a> {
    src: &'a BigQueryExport,
    d: &'a Delivery,
    rows: Option<google_cloud_bigquery::query::RowIterator>,
    n: u64,
    done: bool,
    batch_rows: usize,
    cancel: tokio_util::sync::CancellationToken,
    focus_rows: crate::focus::FocusRows,
}

fn async_stream<'a>(
    src: &'a BigQueryExport,
    d: &'a Delivery,
    batch_rows: usize,
    cancel: tokio_util::sync::CancellationToken,
) -> impl futures::Stream<Item = Result<Batch, ConnectorError>> + Send + 'a {
    let st = FetchState { src, d, rows: None, n: 0, done: false, batch_rows, cancel, focus_rows: Default::default() };
    futures::stream::unfold(st, |mut st| async move {
        if st.done {
            return None;
        }
        if st.rows.is_none() {
            let day = st.d.items.first().cloned().unwrap_or_default();
            let month = st.d.items.get(1).cloned().unwrap_or_default();
            let Ok(date) = NaiveDate::parse_from_str(&day, "%Y-%m-%d") else {
                st.done = true;
                return Some((
                    Err(ConnectorError::input(&st.d.scope, "bad partition day", "report this as a bug")),
                    st,
                ));
            };
            let sql = if st.src.focus {
                crate::focus::rows_sql(&st.src.table, date, &month)
            } else {
                rows_sql(&st.src.table, st.src.detailed(), date, &month)
            };
            match st.src.run(sql).await {
                Ok(r) => st.rows = Some(r),
                Err(e) => {
                    st.done = true;
                    return Some((Err(e), st));
                }
            }
        }
        let mut batch = Batch::default();
        let table = st.src.table.clone();
        let scope = st.d.scope.clone();
        let rows = st.rows.as_mut()?;
        while batch.lines.len() + batch.errors.len() < st.batch_rows {
            if st.cancel.is_cancelled() {
                st.done = true;
                return Some((Err(ConnectorError::Cancelled), st));
            }
            match rows.next().await {
                None => {
                    st.done = true;
                    break;
                }
                Some(Err(e)) => {
                    st.done = true;
                    return Some((Err(map_row_err(e, &table)), st));
                }
                Some(Ok(r)) => {
                    st.n += 1;
                    let get = |c: &str| r.get::<Option<String>>(c).ok().flatten();
                    let nested = |c: &str| r.get::<Option<serde_json::Value>>(c).ok().flatten();
                    let location = format!("{table} {scope} row {}", st.n);
                    batch.records += 1;
                    if st.src.focus {
                        let json = get("row").unwrap_or_default();
                        match st.focus_rows.line(&json, &location) {
                            Ok((l, rounded)) => {
                                batch.rounded_amounts += rounded;
                                batch.lines.push(l);
                            }
                            Err(e) => batch.errors.push(e),
                        }
                        continue;
                    }
                    let raw = get("cost").unwrap_or_default();
                    let row = flat_row(&get).map(|mut x| {
                        x.labels = nested_kv(nested("labels"));
                        x.project_labels = nested_kv(nested("project_labels"));
                        x.credits = nested_credits(nested("credits"));
                        x
                    });
                    match row.and_then(|x| row_lines(&x, &location, &raw).map_err(|e| e.reason)) {
                        Ok((lines, rounded)) => {
                            batch.rounded_amounts += rounded;
                            batch.lines.extend(lines);
                        }
                        Err(reason) => batch.errors.push(costledger_core::RowError {
                            location,
                            reason,
                            raw,
                            raw_amount: get("cost"),
                            currency: get("currency"),
                        }),
                    }
                }
            }
        }
        if batch.records == 0 && st.done {
            return None;
        }
        Some((Ok(batch), st))
    })
}

#[cfg(test)]
mod tests {
    use super::rows_sql;
    use crate::files::FLAT_COLUMNS;

    /// The detailed export's price columns are selected, under the names the row reader maps
    /// (`FLAT_COLUMNS`), from a detailed table only (the standard export has no `price` record:
    /// selecting it would fail the query).
    #[test]
    fn the_row_query_selects_price_columns_from_detailed_tables_only() {
        let day = chrono::NaiveDate::from_ymd_opt(2024, 3, 1).expect("date");
        let detailed = rows_sql("p.d.gcp_billing_export_resource_v1_X", true, day, "202403");
        let standard = rows_sql("p.d.gcp_billing_export_v1_X", false, day, "202403");
        for c in ["price_effective_price", "price_unit", "price_pricing_unit_quantity"] {
            assert!(FLAT_COLUMNS.contains(&c));
            assert!(detailed.contains(&format!(" AS {c}")), "{c} in {detailed}");
            assert!(!standard.contains(c), "{c} in {standard}");
        }
        assert!(!standard.contains("price."), "{standard}");
    }
}
