//! `oci_usage_api`: POST /20200107/usage (RequestSummarizedUsages), DAILY, per billing month.
//!
//! One delivery per month in the window: every page (`opc-next-page`, no row cap) is spooled
//! to a temporary file while its bytes are hashed; the hash is the delivery key, so an
//! unchanged month is skipped and a changed one restates the month. `fetch` streams the spool.
//! Amounts are JSON numbers: they are read as raw text (`RawValue`) and parsed as decimals,
//! never through a float.

use std::collections::BTreeMap;

use chrono::{DateTime, Duration, Utc};
use costledger_core::currency::is_iso4217;
use costledger_core::text::clip;
use costledger_core::{
    Batch, BillingPeriod, ChargeCategory, ChargeLine, ConnectorError, Context, Delivery, PeriodWindow, RowError,
    parse_amount, parse_timestamp,
};
use costledger_files::spool::{SpoolWriter, Spools};
use futures::stream::BoxStream;
use reqwest::Method;
use serde::Deserialize;
use serde_json::value::RawValue;

use crate::client::OciClient;
use crate::cost_report::PROVIDER;

/// What to ask the Usage API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsageQuery {
    pub tenancy: String,
    /// BillingAccountId of the lines (default: the tenancy). Set it to the subscription id to
    /// compare with cost reports.
    pub billing_account_id: Option<String>,
    pub group_by: Vec<String>,
    /// One tag to group by: (namespace, key).
    pub group_by_tag: Option<(String, String)>,
    /// COST (default), or a credit query type.
    pub query_type: String,
    /// Items per page (`limit`); `None` lets the service choose.
    pub page_limit: Option<u32>,
}

pub const DEFAULT_GROUP_BY: [&str; 5] = ["service", "compartmentName", "region", "skuPartNumber", "resourceId"];

pub struct OciUsageConnector {
    client: OciClient,
    query: UsageQuery,
    spools: Spools,
    /// "Now", for the end of the current month's window (tests pin it).
    now: fn() -> DateTime<Utc>,
}

#[derive(Deserialize)]
struct Page<'a> {
    #[serde(borrow, default)]
    items: Vec<&'a RawValue>,
}

#[derive(Deserialize, Debug, Default)]
#[serde(rename_all = "camelCase", default)]
pub struct UsageItem<'a> {
    tenant_id: Option<String>,
    tenant_name: Option<String>,
    compartment_id: Option<String>,
    compartment_name: Option<String>,
    compartment_path: Option<String>,
    service: Option<String>,
    resource_name: Option<String>,
    resource_id: Option<String>,
    region: Option<String>,
    ad: Option<String>,
    sku_part_number: Option<String>,
    sku_name: Option<String>,
    unit: Option<String>,
    time_usage_started: Option<String>,
    time_usage_ended: Option<String>,
    #[serde(borrow)]
    computed_amount: Option<&'a RawValue>,
    #[serde(borrow)]
    computed_quantity: Option<&'a RawValue>,
    currency: Option<String>,
    subscription_id: Option<String>,
    is_forecast: Option<bool>,
    tags: Option<Vec<ItemTag>>,
}

#[derive(Deserialize, Debug, Default)]
#[serde(default)]
struct ItemTag {
    namespace: Option<String>,
    key: Option<String>,
    value: Option<String>,
}

fn raw_number(v: Option<&RawValue>) -> Option<String> {
    let t = v?.get().trim();
    if t == "null" {
        return None;
    }
    Some(t.trim_matches('"').to_string())
}

/// One Usage API item → a ledger line (pure). `None` for forecast items.
pub fn item_line(q: &UsageQuery, raw: &str, location: &str) -> Result<Option<(ChargeLine, u64)>, RowError> {
    let amount_text = |it: &UsageItem| raw_number(it.computed_amount);
    let fail = |reason: String, it: Option<&UsageItem>| RowError {
        location: location.to_string(),
        reason,
        raw: clip(raw, 4096),
        raw_amount: it.and_then(amount_text),
        currency: it.and_then(|i| i.currency.clone()),
    };
    let it: UsageItem = serde_json::from_str(raw).map_err(|e| fail(format!("not a UsageSummary: {e}"), None))?;
    if it.is_forecast == Some(true) {
        return Ok(None);
    }
    let ts = |v: &Option<String>, name: &str| -> Result<DateTime<Utc>, RowError> {
        let s = v.as_deref().ok_or_else(|| fail(format!("{name} is missing"), Some(&it)))?;
        parse_timestamp(s).map_err(|e| fail(format!("{name}: {e}"), Some(&it)))
    };
    let start = ts(&it.time_usage_started, "timeUsageStarted")?;
    let end = ts(&it.time_usage_ended, "timeUsageEnded")?;
    let text = amount_text(&it).ok_or_else(|| fail("computedAmount is missing".into(), Some(&it)))?;
    let amount = parse_amount(&text)
        .map_err(|e| fail(format!("computedAmount: {e}"), Some(&it)))?
        .ok_or_else(|| fail("computedAmount is empty".into(), Some(&it)))?;
    let mut rounded = u64::from(amount.rounded);
    let quantity = match raw_number(it.computed_quantity) {
        None => None,
        Some(t) => match parse_amount(&t) {
            Ok(Some(a)) => {
                rounded += u64::from(a.rounded);
                Some(a.value)
            }
            Ok(None) => None,
            Err(e) => return Err(fail(format!("computedQuantity: {e}"), Some(&it))),
        },
    };
    let currency = it.currency.clone().unwrap_or_default();
    if !is_iso4217(&currency) {
        return Err(fail(format!("currency '{currency}' is not an ISO 4217 currency code"), Some(&it)));
    }
    let period = BillingPeriod::of(start);
    let mut tags = BTreeMap::new();
    for t in it.tags.iter().flatten() {
        if let (Some(k), Some(v)) = (&t.key, &t.value)
            && !v.is_empty()
        {
            let key = match t.namespace.as_deref() {
                Some(ns) if !ns.is_empty() => format!("{ns}.{k}"),
                _ => k.clone(),
            };
            tags.insert(key, v.clone());
        }
    }
    let mut x_extra = BTreeMap::new();
    for (k, v) in [
        ("oci_CompartmentId", &it.compartment_id),
        ("oci_CompartmentName", &it.compartment_name),
        ("oci_CompartmentPath", &it.compartment_path),
        ("oci_AvailabilityDomain", &it.ad),
        ("oci_SubscriptionId", &it.subscription_id),
    ] {
        if let Some(v) = v.as_ref().filter(|v| !v.is_empty()) {
            x_extra.insert(k.to_string(), v.clone());
        }
    }
    let category = if q.query_type.contains("CREDIT") { ChargeCategory::Credit } else { ChargeCategory::Usage };
    // The FOCUS columns the answer carries, mapped as for a cost report (the service by its
    // cost-report key: `Block Storage` → `BLOCK_STORAGE`).
    let service_key = it.service.as_deref().map(|s| s.trim().to_ascii_uppercase().replace([' ', '-'], "_"));
    let (service_category, service_subcategory) = crate::focus_tables::service_category(service_key.as_deref());
    let focus = costledger_core::FocusColumns {
        charge_frequency: Some(if category == ChargeCategory::Usage { "Usage-Based" } else { "One-Time" }.to_string()),
        service_subcategory: Some(service_subcategory.to_string()),
        region_name: it.region.as_deref().and_then(crate::focus_tables::region_name).map(str::to_string),
        resource_type: it.resource_id.as_deref().and_then(crate::focus_tables::resource_type),
        availability_zone: it.ad.clone().filter(|a| !a.is_empty()),
        ..Default::default()
    };
    let line = ChargeLine {
        billing_account_id: q.billing_account_id.clone().unwrap_or_else(|| q.tenancy.clone()),
        billing_account_name: None,
        sub_account_id: Some(it.tenant_id.clone().unwrap_or_else(|| q.tenancy.clone())),
        sub_account_name: it.tenant_name.clone(),
        billing_period_start: period.start(),
        billing_period_end: period.end(),
        charge_period_start: start,
        charge_period_end: end,
        charge_category: category,
        charge_class: None,
        charge_description: it.sku_name.clone(),
        service_name: it.service.clone(),
        service_category: Some(service_category.to_string()),
        provider_name: Some(PROVIDER.into()),
        publisher_name: Some(PROVIDER.into()),
        invoice_issuer_name: Some(PROVIDER.into()),
        region_id: it.region.clone(),
        resource_id: it.resource_id.clone().filter(|r| !r.is_empty()),
        resource_name: it.resource_name.clone(),
        sku_id: it.sku_part_number.clone(),
        billed_cost: amount.value,
        effective_cost: Some(amount.value),
        list_cost: None,
        contracted_cost: None,
        billing_currency: currency,
        pricing_quantity: quantity,
        pricing_unit: it.unit.clone(),
        consumed_quantity: None,
        consumed_unit: None,
        commitment_discount_id: None,
        invoice_id: None,
        tags,
        focus: focus.boxed(),
        x_extra,
        source_ref: Some(location.to_string()),
    };
    Ok(Some((line, rounded)))
}

impl OciUsageConnector {
    pub fn new(client: OciClient, query: UsageQuery) -> Self {
        OciUsageConnector { client, query, spools: Spools::default(), now: Utc::now }
    }

    /// Pin "now" (tests).
    pub fn with_clock(mut self, now: fn() -> DateTime<Utc>) -> Self {
        self.now = now;
        self
    }

    pub fn api_calls(&self) -> u64 {
        self.client.calls()
    }

    fn body(&self, start: DateTime<Utc>, end: DateTime<Utc>) -> Vec<u8> {
        let mut b = serde_json::json!({
            "tenantId": self.query.tenancy,
            "timeUsageStarted": start.format("%Y-%m-%dT%H:%M:%SZ").to_string(),
            "timeUsageEnded": end.format("%Y-%m-%dT%H:%M:%SZ").to_string(),
            "granularity": "DAILY",
            "queryType": self.query.query_type,
            "groupBy": self.query.group_by,
        });
        if let Some((ns, key)) = &self.query.group_by_tag {
            b["groupByTag"] = serde_json::json!([{ "namespace": ns, "key": key }]);
        }
        serde_json::to_vec(&b).unwrap_or_default()
    }

    /// Fetch every page of one month into a spool file; returns (delivery, items).
    async fn month(&self, month: BillingPeriod, cx: &Context) -> Result<Option<Delivery>, ConnectorError> {
        let start = month.start();
        let now = (self.now)();
        // DAILY queries need whole UTC days: up to the end of today.
        let tomorrow = (now.date_naive() + Duration::days(1)).and_hms_opt(0, 0, 0).map(|d| d.and_utc()).unwrap_or(now);
        let end = month.end().min(tomorrow);
        if start >= end {
            return Ok(None);
        }
        let body = self.body(start, end);
        let mut spool = SpoolWriter::new("the OCI Usage API")?;
        let mut page_token: Option<String> = None;
        let mut pages = 0u32;
        let mut items = 0u64;
        loop {
            if cx.cancel.is_cancelled() {
                return Err(ConnectorError::Cancelled);
            }
            let mut path = "/20200107/usage".to_string();
            let mut q = Vec::new();
            if let Some(l) = self.query.page_limit {
                q.push(format!("limit={l}"));
            }
            if let Some(t) = &page_token {
                q.push(format!(
                    "page={}",
                    percent_encoding::utf8_percent_encode(t, percent_encoding::NON_ALPHANUMERIC)
                ));
            }
            if !q.is_empty() {
                path = format!("{path}?{}", q.join("&"));
            }
            let resp = self.client.send(Method::POST, &path, Some(&body)).await?;
            let next = resp.headers().get("opc-next-page").and_then(|v| v.to_str().ok()).map(str::to_string);
            let bytes =
                resp.bytes().await.map_err(|e| ConnectorError::Transient(format!("reading a Usage API page: {e}")))?;
            pages += 1;
            let page: Page = serde_json::from_slice(&bytes).map_err(|e| {
                ConnectorError::input(
                    format!("{path} page {pages}"),
                    format!("the Usage API answer is not a UsageAggregation: {e}"),
                    "check the endpoint URL",
                )
            })?;
            for (i, item) in page.items.iter().enumerate() {
                let raw = item.get();
                // The key covers the items, not the page numbering.
                spool.write(&format!("page {pages} item {}\t{raw}", i + 1), raw)?;
                items += 1;
            }
            match next.filter(|n| !n.is_empty()) {
                Some(n) => page_token = Some(n),
                None => break,
            }
        }
        let (path, key) = spool.finish()?;
        let item = self.spools.keep(path);
        tracing::info!(source = %cx.source, month = %month, pages, items, "OCI Usage API month fetched");
        Ok(Some(Delivery {
            scope: format!("usage/{month}"),
            delivery_key: key,
            billing_period: Some(month),
            description: format!("OCI Usage API {month}: {items} items in {pages} page(s)"),
            items: vec![item],
            final_periods: false,
            key_pending: false,
        }))
    }
}

#[async_trait::async_trait]
impl costledger_core::Connector for OciUsageConnector {
    fn kind(&self) -> &'static str {
        "oci_usage_api"
    }

    fn api_calls(&self) -> u64 {
        self.client.calls()
    }

    async fn check(&self, _cx: &Context) -> Result<(), ConnectorError> {
        // One small signed query: yesterday, one page of one item.
        let now = (self.now)();
        let end = BillingPeriod::of(now).start();
        let body = self.body(end - Duration::days(1), end);
        self.client.send(Method::POST, "/20200107/usage?limit=1", Some(&body)).await.map(|_| ())
    }

    async fn deliveries(&self, window: PeriodWindow, cx: &Context) -> Result<Vec<Delivery>, ConnectorError> {
        let before = self.client.calls();
        let mut out = Vec::new();
        let mut m = window.from;
        while m <= window.to {
            if let Some(d) = self.month(m, cx).await? {
                out.push(d);
            }
            m = m.next();
        }
        tracing::info!(source = %cx.source, api_calls = self.client.calls() - before, "OCI Usage API calls this run");
        Ok(out)
    }

    fn fetch<'a>(&'a self, d: &'a Delivery, cx: &'a Context) -> BoxStream<'a, Result<Batch, ConnectorError>> {
        let path = d.items.first().cloned().unwrap_or_default();
        let q = self.query.clone();
        costledger_files::spool::stream_lines(path, cx.batch_rows, cx.cancel.clone(), move |line, _| {
            let (loc, raw) = line.split_once('\t').unwrap_or(("?", line));
            Ok(item_line(&q, raw, &format!("usage API {loc}")).transpose())
        })
    }
}
