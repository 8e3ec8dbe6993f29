//! `azure_cost_query`: POST `{scope}/providers/Microsoft.CostManagement/query` through
//! `azure_core`'s pipeline with an `azure_identity` credential (bearer token policy).
//!
//! One delivery per month in the window (scope `query/<YYYY-MM>`, key = SHA-256 of the
//! normalised rows), DAILY, Custom time period (month start to the end of today). With both
//! ActualCost and AmortizedCost configured, the two answers are joined per (day, group, currency):
//! BilledCost from ActualCost, EffectiveCost from AmortizedCost. `nextLink` is followed with the
//! same body. Rows are positional JSON arrays mapped by `columns[].name`; numbers are read as raw
//! JSON text (never an f64) and parsed as decimals.
//!
//! Throttling: Cost Management answers 429 with `x-ms-ratelimit-microsoft.costmanagement-*-retry-after`
//! headers in **seconds** (azure_core's retry policy would read non-standard headers as
//! milliseconds), so the pipeline's own retries are off and 429/5xx are retried here: the
//! longest of those headers (or `Retry-After`) is waited, capped by `max_wait_secs`.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use azure_core::http::{Context as AzContext, Method, Pipeline, Request, Url};
use chrono::{DateTime, NaiveDate, Utc};
use costledger_core::currency::is_iso4217;
use costledger_core::{
    Batch, BillingPeriod, ChargeCategory, ChargeLine, Connector, ConnectorError, Context, Delivery, PeriodWindow,
    RowError, parse_amount,
};
use costledger_files::spool::{SpoolWriter, Spools, stream_lines};
use futures::stream::BoxStream;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

pub const API_VERSION: &str = "2023-11-01";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuerySpec {
    /// `subscriptions/<id>`, `…/resourceGroups/<rg>`, `providers/Microsoft.Billing/billingAccounts/<id>`, …
    pub scope: String,
    pub actual: bool,
    pub amortized: bool,
    /// Dimensions to group by.
    pub group_by: Vec<String>,
    pub tag_keys: Vec<String>,
    /// The aggregated cost column (`Cost`, `PreTaxCost`).
    pub cost_column: String,
    pub billing_account_id: Option<String>,
    pub attempts: u32,
    pub max_wait: Duration,
    pub client_type: Option<String>,
}

pub type Clock = Arc<dyn Fn() -> DateTime<Utc> + Send + Sync>;

pub struct AzureQueryConnector {
    pipeline: Pipeline,
    /// `https://management.azure.com`
    endpoint: String,
    spec: QuerySpec,
    now: Clock,
    calls: AtomicU64,
    spools: Spools,
}

#[derive(Deserialize)]
struct Envelope {
    properties: Option<QueryProps>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct QueryProps {
    next_link: Option<String>,
    #[serde(default)]
    columns: Vec<Column>,
    #[serde(default)]
    rows: Vec<Vec<Box<RawValue>>>,
}

#[derive(Deserialize)]
struct Column {
    name: String,
}

/// One normalised row of the spool: a day, its group values, both amounts as raw text.
#[derive(Debug, Serialize, Deserialize, PartialEq, Eq)]
struct Row {
    day: String,
    currency: String,
    dims: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    actual: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    amortized: Option<String>,
}

fn raw_text(v: &RawValue) -> String {
    let s = v.get();
    match serde_json::from_str::<String>(s) {
        Ok(t) => t,
        Err(_) if s == "null" => String::new(),
        Err(_) => s.to_string(),
    }
}

/// Cost Management's wait, in seconds, from a 429/503 answer.
pub fn wait_of(headers: &[(String, String)]) -> Option<Duration> {
    headers
        .iter()
        .filter(|(k, _)| {
            let k = k.to_ascii_lowercase();
            (k.starts_with("x-ms-ratelimit-microsoft.costmanagement-") && k.ends_with("-retry-after"))
                || k == "x-ms-ratelimit-microsoft.consumption-retry-after"
                || k == "retry-after"
        })
        .filter_map(|(_, v)| v.trim().parse::<u64>().ok())
        .max()
        .map(Duration::from_secs)
}

impl AzureQueryConnector {
    /// A connector on a ready pipeline (production: bearer-token policy over `azure_identity`;
    /// tests may pass their own policies).
    pub fn new(pipeline: Pipeline, endpoint: String, spec: QuerySpec) -> Self {
        AzureQueryConnector {
            pipeline,
            endpoint,
            spec,
            now: Arc::new(Utc::now),
            calls: AtomicU64::new(0),
            spools: Spools::default(),
        }
    }

    pub fn with_clock(mut self, now: Clock) -> Self {
        self.now = now;
        self
    }

    fn body(&self, kind: &str, from: &str, to: &str) -> Vec<u8> {
        let mut grouping: Vec<serde_json::Value> =
            self.spec.group_by.iter().map(|d| serde_json::json!({"type": "Dimension", "name": d})).collect();
        grouping.extend(self.spec.tag_keys.iter().map(|t| serde_json::json!({"type": "TagKey", "name": t})));
        serde_json::json!({
            "type": kind,
            "timeframe": "Custom",
            "timePeriod": {"from": from, "to": to},
            "dataset": {
                "granularity": "Daily",
                "aggregation": {"totalCost": {"name": self.spec.cost_column, "function": "Sum"}},
                "grouping": grouping
            }
        })
        .to_string()
        .into_bytes()
    }

    /// POST with our own 429/5xx handling; the answer's body on success.
    async fn post(&self, url: &str, body: &[u8], cx: &Context) -> Result<Vec<u8>, ConnectorError> {
        let parsed =
            Url::parse(url).map_err(|e| ConnectorError::input(url, format!("not a URL: {e}"), "check endpoint"))?;
        let mut attempt = 0u32;
        let mut backoff = Duration::from_secs(1);
        loop {
            attempt += 1;
            if cx.cancel.is_cancelled() {
                return Err(ConnectorError::Cancelled);
            }
            let mut req = Request::new(parsed.clone(), Method::Post);
            req.insert_header("content-type", "application/json");
            if let Some(c) = &self.spec.client_type {
                req.insert_header("clienttype", c.clone());
            }
            req.set_body(body.to_vec());
            self.calls.fetch_add(1, Ordering::Relaxed);
            let what = url.split('?').next().unwrap_or(url);
            let resp = self
                .pipeline
                .send(
                    &AzContext::new(),
                    &mut req,
                    Some(azure_core::http::PipelineSendOptions { skip_checks: true, ..Default::default() }),
                )
                .await;
            let resp = match resp {
                Ok(r) => r,
                Err(e) => {
                    let err = crate::http_error(what, e);
                    if err.is_retriable() && attempt < self.spec.attempts {
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(self.spec.max_wait);
                        continue;
                    }
                    return Err(err);
                }
            };
            let status = u16::from(resp.status());
            let headers: Vec<(String, String)> =
                resp.headers().iter().map(|(k, v)| (k.as_str().to_string(), v.as_str().to_string())).collect();
            let bytes = resp.into_body().to_vec();
            match status {
                200..=299 => return Ok(bytes),
                429 | 500..=599 => {
                    let asked = wait_of(&headers);
                    tracing::warn!(source = %cx.source, status, wait_secs = asked.map(|d| d.as_secs()), attempt, "Cost Management throttled or failed");
                    if attempt >= self.spec.attempts {
                        return Err(if status == 429 {
                            ConnectorError::RateLimited { retry_after: asked }
                        } else {
                            ConnectorError::Transient(format!("{what}: HTTP {status}"))
                        });
                    }
                    let wait = asked.unwrap_or(backoff).min(self.spec.max_wait);
                    tokio::time::sleep(wait).await;
                    backoff = (backoff * 2).min(self.spec.max_wait);
                }
                401 | 403 => {
                    let detail = String::from_utf8_lossy(&bytes);
                    return Err(ConnectorError::Auth(format!(
                        "Cost Management refused the request (HTTP {status}: {}); check the credentials (tenant, client id, secret) and that the identity has Cost Management Reader on {}",
                        costledger_core::text::clip(detail.trim(), 300),
                        self.spec.scope
                    )));
                }
                _ => {
                    let detail = String::from_utf8_lossy(&bytes);
                    return Err(ConnectorError::input(
                        what,
                        format!("HTTP {status}: {}", costledger_core::text::clip(detail.trim(), 500)),
                        "check the scope, group_by and tag_keys in the source's config",
                    ));
                }
            }
        }
    }

    /// Every page of one query type, rows handed to `each`.
    async fn pages(
        &self,
        kind: &str,
        from: &str,
        to: &str,
        cx: &Context,
        each: &mut (dyn FnMut(String, String, BTreeMap<String, String>, String) + Send),
    ) -> Result<u32, ConnectorError> {
        let body = self.body(kind, from, to);
        let mut url = format!(
            "{}/{}/providers/Microsoft.CostManagement/query?api-version={API_VERSION}",
            self.endpoint.trim_end_matches('/'),
            self.spec.scope.trim_matches('/')
        );
        let mut pages = 0u32;
        loop {
            let bytes = self.post(&url, &body, cx).await?;
            pages += 1;
            if bytes.iter().all(u8::is_ascii_whitespace) {
                break; // 204 No Content: no rows
            }
            let env: Envelope = serde_json::from_slice(&bytes).map_err(|e| {
                ConnectorError::input(
                    format!("{url} page {pages}"),
                    format!("not a query result: {e}"),
                    "check endpoint",
                )
            })?;
            let Some(props) = env.properties else { break };
            let names: Vec<String> = props.columns.iter().map(|c| c.name.to_ascii_lowercase()).collect();
            let col = |n: &str| names.iter().position(|x| x == n);
            let cost_i =
                col(&self.spec.cost_column.to_ascii_lowercase()).or_else(|| col("cost")).or_else(|| col("pretaxcost"));
            let (Some(cost_i), Some(date_i)) = (cost_i, col("usagedate")) else {
                return Err(ConnectorError::input(
                    format!("{url} page {pages}"),
                    format!(
                        "the answer has no {} or UsageDate column (columns: {})",
                        self.spec.cost_column,
                        names.join(", ")
                    ),
                    "check cost_column",
                ));
            };
            let cur_i = col("currency");
            for row in &props.rows {
                let get = |i: usize| row.get(i).map(|v| raw_text(v)).unwrap_or_default();
                let mut dims = BTreeMap::new();
                for (i, c) in props.columns.iter().enumerate() {
                    if i != cost_i && i != date_i && Some(i) != cur_i {
                        dims.insert(c.name.clone(), get(i));
                    }
                }
                each(get(date_i), cur_i.map(get).unwrap_or_default(), dims, get(cost_i));
            }
            match props.next_link.filter(|l| !l.is_empty()) {
                Some(l) => url = l,
                None => break,
            }
        }
        Ok(pages)
    }

    async fn month(&self, month: BillingPeriod, cx: &Context) -> Result<Option<Delivery>, ConnectorError> {
        let now = (self.now)();
        let first = month.start().date_naive();
        let last = month.end().date_naive().pred_opt().unwrap_or(first).min(now.date_naive());
        if first > last {
            return Ok(None);
        }
        let from = format!("{}T00:00:00+00:00", first.format("%Y-%m-%d"));
        let to = format!("{}T23:59:59+00:00", last.format("%Y-%m-%d"));
        type Key = (String, BTreeMap<String, String>, String);
        let mut joined: BTreeMap<Key, (Option<String>, Option<String>)> = BTreeMap::new();
        let mut pages = 0;
        if self.spec.actual {
            pages += self
                .pages("ActualCost", &from, &to, cx, &mut |d, c, dims, cost| {
                    joined.entry((d, dims, c)).or_default().0 = Some(cost);
                })
                .await?;
        }
        if self.spec.amortized {
            pages += self
                .pages("AmortizedCost", &from, &to, cx, &mut |d, c, dims, cost| {
                    joined.entry((d, dims, c)).or_default().1 = Some(cost);
                })
                .await?;
        }
        let mut spool = SpoolWriter::new("Cost Management")?;
        let rows = joined.len();
        for ((day, dims, currency), (actual, amortized)) in joined {
            let text = serde_json::to_string(&Row { day, currency, dims, actual, amortized })
                .map_err(|e| ConnectorError::Transient(e.to_string()))?;
            spool.write(&text, &text)?;
        }
        let (path, key) = spool.finish()?;
        let item = self.spools.keep(path);
        tracing::info!(source = %cx.source, month = %month, pages, rows, "Cost Management month fetched");
        Ok(Some(Delivery {
            scope: format!("query/{month}"),
            delivery_key: key,
            billing_period: Some(month),
            description: format!("Cost Management {month}: {rows} rows in {pages} page(s)"),
            items: vec![item],
            final_periods: false,
            key_pending: false,
        }))
    }
}

fn day(s: &str) -> Option<DateTime<Utc>> {
    let t = s.trim();
    let d = if t.len() == 8 && t.bytes().all(|b| b.is_ascii_digit()) {
        NaiveDate::parse_from_str(t, "%Y%m%d").ok()?
    } else {
        NaiveDate::parse_from_str(t.get(..10)?, "%Y-%m-%d").ok()?
    };
    d.and_hms_opt(0, 0, 0).map(|x| x.and_utc())
}

fn dim<'a>(r: &'a Row, names: &[&str]) -> Option<&'a str> {
    r.dims
        .iter()
        .find(|(k, _)| names.iter().any(|n| k.eq_ignore_ascii_case(n)))
        .map(|(_, v)| v.as_str())
        .filter(|v| !v.is_empty())
}

/// One spooled row → a ledger line (pure).
fn normalize(r: &Row, location: &str, spec: &QuerySpec) -> Result<(ChargeLine, u64), RowError> {
    let fail = |reason: String| RowError {
        location: location.to_string(),
        reason,
        raw: costledger_core::text::clip(&serde_json::to_string(r).unwrap_or_default(), 4096),
        raw_amount: r.actual.clone().or_else(|| r.amortized.clone()),
        currency: Some(r.currency.clone()),
    };
    let start = day(&r.day).ok_or_else(|| fail(format!("UsageDate '{}' is not a date", r.day)))?;
    let mut rounded = 0u64;
    let mut amount = |v: &Option<String>, what: &str| -> Result<Option<rust_decimal::Decimal>, RowError> {
        match v {
            None => Ok(None),
            Some(t) => match parse_amount(t) {
                Ok(a) => Ok(a.map(|a| {
                    rounded += u64::from(a.rounded);
                    a.value
                })),
                Err(e) => Err(fail(format!("{what}: {e}"))),
            },
        }
    };
    let actual = amount(&r.actual, "ActualCost")?;
    let amortized = amount(&r.amortized, "AmortizedCost")?;
    // A row only in the amortised answer was not billed that day (a share of an earlier
    // purchase); a row only in the actual answer (the purchase itself) is no amortised cost.
    let billed = actual.unwrap_or(rust_decimal::Decimal::ZERO);
    let effective = if spec.amortized { amortized.unwrap_or(rust_decimal::Decimal::ZERO) } else { billed };
    let currency = r.currency.to_ascii_uppercase();
    if !is_iso4217(&currency) {
        return Err(fail(format!("Currency '{}' is not an ISO 4217 currency code", r.currency)));
    }
    let charge_type = dim(r, &["ChargeType"]).unwrap_or("Usage");
    let category = match charge_type.to_ascii_lowercase().as_str() {
        "purchase" => ChargeCategory::Purchase,
        "refund" | "credit" => ChargeCategory::Credit,
        "tax" => ChargeCategory::Tax,
        "usage" | "unusedreservation" | "unusedsavingsplan" => ChargeCategory::Usage,
        _ => ChargeCategory::Adjustment,
    };
    let mut tags = BTreeMap::new();
    for k in &spec.tag_keys {
        // A TagKey grouping comes back as the columns TagKey / TagValue.
        if let (Some(key), Some(v)) = (dim(r, &["TagKey"]), dim(r, &["TagValue"]))
            && key.eq_ignore_ascii_case(k)
        {
            tags.insert(k.clone(), v.to_string());
        }
    }
    let mut x_extra = BTreeMap::new();
    for (k, v) in &r.dims {
        if !v.is_empty() && !k.eq_ignore_ascii_case("TagKey") && !k.eq_ignore_ascii_case("TagValue") {
            x_extra.insert(format!("azure_{k}"), v.clone());
        }
    }
    let subscription = dim(r, &["SubscriptionId", "SubscriptionGuid"]).map(str::to_string);
    let period = BillingPeriod::of(start);
    // The FOCUS columns the answer carries, mapped as for a cost export: ChargeFrequency and
    // PricingCategory from the charge type (and PricingModel / Frequency when grouped by them),
    // the service's category, region name, resource type.
    let service = dim(r, &["ServiceName", "MeterCategory"]);
    let (service_category, service_subcategory) = crate::focus_tables::service_category(service);
    let mut focus = crate::export::focus_columns(
        charge_type,
        dim(r, &["PricingModel"]).unwrap_or(""),
        dim(r, &["Frequency", "ChargeFrequency"]),
        false,
    );
    focus.service_subcategory = Some(service_subcategory.to_string());
    focus.region_name = dim(r, &["ResourceLocation"]).and_then(crate::focus_tables::region_name).map(str::to_string);
    focus.resource_type = dim(r, &["ResourceId"]).and_then(crate::focus_tables::resource_type);
    Ok((
        ChargeLine {
            billing_account_id: spec
                .billing_account_id
                .clone()
                .or_else(|| subscription.clone())
                .unwrap_or_else(|| spec.scope.clone()),
            billing_account_name: None,
            sub_account_id: subscription,
            sub_account_name: dim(r, &["SubscriptionName"]).map(str::to_string),
            billing_period_start: period.start(),
            billing_period_end: period.end(),
            charge_period_start: start,
            charge_period_end: start + chrono::Duration::days(1),
            charge_category: category,
            charge_class: None,
            charge_description: dim(r, &["Meter", "MeterSubCategory"]).map(str::to_string),
            service_name: service.map(str::to_string),
            service_category: Some(service_category.to_string()),
            provider_name: Some("Microsoft".into()),
            publisher_name: Some("Microsoft".into()),
            invoice_issuer_name: Some("Microsoft".into()),
            region_id: dim(r, &["ResourceLocation"]).map(str::to_string),
            resource_id: dim(r, &["ResourceId"]).map(str::to_string),
            resource_name: None,
            sku_id: None,
            billed_cost: billed,
            effective_cost: Some(effective),
            list_cost: None,
            contracted_cost: None,
            billing_currency: currency,
            pricing_quantity: None,
            pricing_unit: None,
            consumed_quantity: None,
            consumed_unit: None,
            commitment_discount_id: None,
            invoice_id: None,
            tags,
            focus: focus.boxed(),
            x_extra,
            source_ref: Some(location.to_string()),
        },
        rounded,
    ))
}

#[async_trait::async_trait]
impl Connector for AzureQueryConnector {
    fn kind(&self) -> &'static str {
        "azure_cost_query"
    }

    fn api_calls(&self) -> u64 {
        self.calls.load(Ordering::Relaxed)
    }

    async fn check(&self, cx: &Context) -> Result<(), ConnectorError> {
        let today = (self.now)().date_naive();
        let d = today.format("%Y-%m-%d");
        let body = self.body(
            if self.spec.actual { "ActualCost" } else { "AmortizedCost" },
            &format!("{d}T00:00:00+00:00"),
            &format!("{d}T23:59:59+00:00"),
        );
        let url = format!(
            "{}/{}/providers/Microsoft.CostManagement/query?api-version={API_VERSION}&$top=1",
            self.endpoint.trim_end_matches('/'),
            self.spec.scope.trim_matches('/')
        );
        self.post(&url, &body, cx).await.map(|_| ())
    }

    async fn deliveries(&self, window: PeriodWindow, cx: &Context) -> Result<Vec<Delivery>, ConnectorError> {
        self.spools.clear();
        let before = self.api_calls();
        let mut out = Vec::new();
        let mut m = window.from;
        while m <= window.to {
            if let Some(d) = self.month(m, cx).await? {
                out.push(d);
            }
            m = m.next();
        }
        tracing::info!(source = %cx.source, api_calls = self.api_calls() - before, "Cost Management calls this run");
        Ok(out)
    }

    fn fetch<'a>(&'a self, d: &'a Delivery, cx: &'a Context) -> BoxStream<'a, Result<Batch, ConnectorError>> {
        let path = d.items.first().cloned().unwrap_or_default();
        let spec = self.spec.clone();
        let label = d.scope.clone();
        let spool = path.clone();
        stream_lines(path, cx.batch_rows, cx.cancel.clone(), move |line, n| {
            let row: Row = serde_json::from_str(line)
                .map_err(|e| ConnectorError::input(&spool, format!("spool line {n}: {e}"), "report this bug"))?;
            Ok(Some(normalize(&row, &format!("{label} row {n}"), &spec)))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_are_seconds_and_the_longest_wins() {
        let h = |k: &str, v: &str| (k.to_string(), v.to_string());
        let w = wait_of(&[
            h("x-ms-ratelimit-microsoft.costmanagement-qpu-retry-after", "20"),
            h("x-ms-ratelimit-microsoft.costmanagement-entity-retry-after", "41"),
            h("x-ms-request-id", "7"),
        ]);
        assert_eq!(w, Some(Duration::from_secs(41)));
        assert_eq!(wait_of(&[h("Retry-After", "3")]), Some(Duration::from_secs(3)));
        assert_eq!(wait_of(&[h("x-ms-request-id", "99")]), None);
    }

    #[test]
    fn raw_json_numbers_stay_exact() {
        let v: Vec<Box<RawValue>> =
            serde_json::from_str(r#"[19.545363672276512, 1.5E-7, 20240301, "Virtual Machines", null]"#).expect("json");
        let texts: Vec<String> = v.iter().map(|x| raw_text(x)).collect();
        assert_eq!(texts, ["19.545363672276512", "1.5E-7", "20240301", "Virtual Machines", ""]);
        assert_eq!(
            parse_amount(&texts[0]).expect("ok").map(|a| a.value.to_string()).as_deref(),
            Some("19.545363672276512")
        );
    }
}
