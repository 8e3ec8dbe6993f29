//! `aws_cost_explorer`: GetCostAndUsage through `aws-sdk-costexplorer`, DAILY, one delivery per
//! month (scope `ce/<YYYY-MM>`, key = SHA-256 of the normalised groups, so an unchanged answer is
//! a no-op and a changed one replaces the month).
//!
//! Grouping: LINKED_ACCOUNT × SERVICE. Cost Explorer allows two group keys, so with a tag key
//! configured the month is asked once by LINKED_ACCOUNT × SERVICE (to learn the accounts) and
//! then once per account by SERVICE × TAG, filtered on that account; the lines come from the
//! per-account answers (each page is billed: the calls are counted and logged).
//!
//! Pages are followed by hand on `NextPageToken` (the SDK has no paginator for this call) and
//! spooled to a temporary file as normalised JSON lines; amounts are the API's strings, parsed
//! as decimals. The month-to-date and the previous month are pulled. `Estimated = false` on
//! every day of a closed month makes the period final; a month the ledger holds as final
//! (`Context::final_periods`) is not asked again.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use aws_sdk_costexplorer::Client;
use aws_sdk_costexplorer::types::{
    DateInterval, Dimension, DimensionValues, Expression, Granularity, GroupDefinition, GroupDefinitionType,
};
use chrono::{DateTime, Duration, NaiveDate, Utc};
use costledger_core::currency::is_iso4217;
use costledger_core::{
    Batch, BillingPeriod, ChargeCategory, ChargeLine, Connector, ConnectorError, Context, Delivery, PeriodWindow,
    RowError, parse_amount,
};
use costledger_files::spool::{SpoolWriter, Spools, stream_lines};
use futures::stream::BoxStream;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// What to ask for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CeQuery {
    /// Invoice-basis metric → BilledCost (`UnblendedCost` by default).
    pub billed_metric: String,
    /// Amortised metric → EffectiveCost (`AmortizedCost` by default; `None`: EffectiveCost = BilledCost).
    pub effective_metric: Option<String>,
    /// A cost allocation tag key to split by (e.g. `team`).
    pub tag_key: Option<String>,
    /// BillingAccountId of every line (the payer account); the linked account when absent.
    pub billing_account_id: Option<String>,
}

pub type Clock = Arc<dyn Fn() -> DateTime<Utc> + Send + Sync>;

pub struct CostExplorerConnector {
    client: Client,
    query: CeQuery,
    now: Clock,
    calls: Arc<AtomicU64>,
    /// Spool files of the deliveries listed by the last `deliveries` call.
    spools: Spools,
}

/// One normalised group of one day (a spool line).
#[derive(Debug, Serialize, Deserialize, PartialEq, Eq)]
struct Row {
    start: String,
    end: String,
    account: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    account_name: Option<String>,
    service: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    tag: Option<String>,
    billed: Option<(String, String)>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    effective: Option<(String, String)>,
    estimated: bool,
    page: u32,
}

/// The calls made by a client: one per HTTP attempt (each is billed).
#[derive(Debug)]
pub struct CallCounter(pub Arc<AtomicU64>);

impl aws_sdk_costexplorer::config::Intercept for CallCounter {
    fn name(&self) -> &'static str {
        "costledger-call-counter"
    }

    fn read_before_attempt(
        &self,
        _context: &aws_sdk_costexplorer::config::interceptors::BeforeTransmitInterceptorContextRef<'_>,
        _runtime_components: &aws_sdk_costexplorer::config::RuntimeComponents,
        _cfg: &mut aws_sdk_costexplorer::config::ConfigBag,
    ) -> Result<(), aws_sdk_costexplorer::error::BoxError> {
        self.0.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }
}

/// Map a Cost Explorer error to what the scheduler should do with it.
pub fn ce_error<E>(e: aws_sdk_costexplorer::error::SdkError<E>) -> ConnectorError
where
    E: aws_sdk_costexplorer::error::ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    use aws_sdk_costexplorer::error::{ProvideErrorMetadata as _, SdkError};
    let status = e.raw_response().map(|r| r.status().as_u16());
    let code = e.code().map(str::to_string);
    let detail = match (&code, e.message()) {
        (Some(c), Some(m)) => format!("{c}: {m}"),
        (Some(c), None) => c.clone(),
        _ => format!("{}", aws_sdk_costexplorer::error::DisplayErrorContext(&e)),
    };
    let retry_after = e
        .raw_response()
        .and_then(|r| r.headers().get("x-amz-retry-after"))
        .and_then(|v| v.parse::<u64>().ok())
        .map(std::time::Duration::from_millis);
    match (&e, code.as_deref(), status) {
        (_, Some("ThrottlingException" | "LimitExceededException" | "TooManyRequestsException"), _)
        | (_, _, Some(429)) => ConnectorError::RateLimited { retry_after },
        (
            _,
            Some(
                "UnrecognizedClientException"
                | "AccessDeniedException"
                | "InvalidClientTokenId"
                | "ExpiredTokenException"
                | "InvalidSignatureException",
            ),
            _,
        )
        | (_, _, Some(401 | 403)) => ConnectorError::Auth(format!(
            "Cost Explorer refused the credentials ({detail}); check the source's credentials (profile, role_arn or keys) and that they allow ce:GetCostAndUsage"
        )),
        (SdkError::DispatchFailure(_) | SdkError::TimeoutError(_) | SdkError::ResponseError(_), _, _) => {
            ConnectorError::Transient(format!("Cost Explorer: {detail}"))
        }
        (_, _, Some(s)) if s >= 500 => ConnectorError::Transient(format!("Cost Explorer: {detail}")),
        _ => ConnectorError::input("Cost Explorer GetCostAndUsage", detail, "check the source's metrics and tag_key"),
    }
}

fn day(d: NaiveDate) -> String {
    d.format("%Y-%m-%d").to_string()
}

impl CostExplorerConnector {
    pub fn new(client: Client, query: CeQuery, calls: Arc<AtomicU64>, now: Clock) -> Self {
        CostExplorerConnector { client, query, now, calls, spools: Spools::default() }
    }

    /// Tests pin "now" (the month-to-date end and which months are closed).
    pub fn with_clock(mut self, now: Clock) -> Self {
        self.now = now;
        self
    }

    fn metrics(&self) -> Vec<String> {
        let mut m = vec![self.query.billed_metric.clone()];
        if let Some(e) = &self.query.effective_metric
            && e != &self.query.billed_metric
        {
            m.push(e.clone());
        }
        m
    }

    /// Every page of one query, each group handed to `each`.
    async fn pages(
        &self,
        start: &str,
        end: &str,
        group_by: [GroupDefinition; 2],
        account: Option<&str>,
        cx: &Context,
        each: &mut (dyn FnMut(Row) -> Result<(), ConnectorError> + Send),
    ) -> Result<u32, ConnectorError> {
        let period = DateInterval::builder()
            .start(start)
            .end(end)
            .build()
            .map_err(|e| ConnectorError::input("Cost Explorer request", e.to_string(), "report this bug"))?;
        let filter = account.map(|a| {
            Expression::builder()
                .dimensions(DimensionValues::builder().key(Dimension::LinkedAccount).values(a).build())
                .build()
        });
        let mut token: Option<String> = None;
        let mut pages = 0u32;
        loop {
            if cx.cancel.is_cancelled() {
                return Err(ConnectorError::Cancelled);
            }
            let mut req = self
                .client
                .get_cost_and_usage()
                .time_period(period.clone())
                .granularity(Granularity::Daily)
                .set_filter(filter.clone())
                .set_group_by(Some(group_by.to_vec()))
                .set_next_page_token(token.clone());
            for m in self.metrics() {
                req = req.metrics(m);
            }
            let out = req.send().await.map_err(ce_error)?;
            pages += 1;
            let names: BTreeMap<&str, &str> = out
                .dimension_value_attributes()
                .iter()
                .filter_map(|d| {
                    let v = d.value()?;
                    let a = d.attributes()?;
                    a.get("description").map(|n| (v, n.as_str()))
                })
                .collect();
            for r in out.results_by_time() {
                let (Some(tp), estimated) = (r.time_period(), r.estimated()) else { continue };
                for g in r.groups() {
                    let keys = g.keys();
                    let metric = |name: &str| {
                        g.metrics().and_then(|m| m.get(name)).map(|v| {
                            (v.amount().unwrap_or_default().to_string(), v.unit().unwrap_or_default().to_string())
                        })
                    };
                    let (acct, service, tag) = match account {
                        None => {
                            (keys.first().cloned().unwrap_or_default(), keys.get(1).cloned().unwrap_or_default(), None)
                        }
                        Some(a) => {
                            let tag = keys.get(1).map(|k| k.split_once('$').map(|x| x.1).unwrap_or(k).to_string());
                            (a.to_string(), keys.first().cloned().unwrap_or_default(), tag.filter(|t| !t.is_empty()))
                        }
                    };
                    each(Row {
                        start: tp.start().to_string(),
                        end: tp.end().to_string(),
                        account_name: names.get(acct.as_str()).map(|n| n.to_string()),
                        account: acct,
                        service,
                        tag,
                        billed: metric(&self.query.billed_metric),
                        effective: self.query.effective_metric.as_deref().and_then(metric),
                        estimated,
                        page: pages,
                    })?;
                }
            }
            match out.next_page_token() {
                Some(t) if !t.is_empty() => token = Some(t.to_string()),
                _ => break,
            }
        }
        Ok(pages)
    }

    async fn month(&self, month: BillingPeriod, cx: &Context) -> Result<Option<Delivery>, ConnectorError> {
        let now = (self.now)();
        let first = month.start().date_naive();
        let tomorrow = now.date_naive() + Duration::days(1);
        let last = month.end().date_naive().min(tomorrow);
        if first >= last {
            return Ok(None);
        }
        let (start, end) = (day(first), day(last));
        let mut spool = SpoolWriter::new("Cost Explorer")?;
        let mut seen: HashSet<[u8; 32]> = HashSet::new();
        let mut rows = 0u64;
        let mut duplicates = 0u64;
        let mut any_estimated = false;
        let mut days: BTreeSet<String> = BTreeSet::new();
        let mut write = |r: Row| -> Result<(), ConnectorError> {
            let id: [u8; 32] = Sha256::digest(format!("{}\0{}\0{}\0{:?}", r.start, r.account, r.service, r.tag)).into();
            if !seen.insert(id) {
                duplicates += 1;
                return Ok(());
            }
            any_estimated |= r.estimated;
            days.insert(r.start.clone());
            let text = serde_json::to_string(&r).map_err(|e| ConnectorError::Transient(e.to_string()))?;
            // The key covers the content, not the page numbering.
            let mut keyed = r;
            keyed.page = 0;
            let keyed = serde_json::to_string(&keyed).map_err(|e| ConnectorError::Transient(e.to_string()))?;
            spool.write(&text, &keyed)?;
            rows += 1;
            Ok(())
        };
        let dim = |d: &str| GroupDefinition::builder().r#type(GroupDefinitionType::Dimension).key(d).build();
        let before = self.calls.load(Ordering::Relaxed);
        let mut pages = 0;
        match &self.query.tag_key {
            None => {
                pages +=
                    self.pages(&start, &end, [dim("LINKED_ACCOUNT"), dim("SERVICE")], None, cx, &mut write).await?;
            }
            Some(tag) => {
                let mut accounts: BTreeMap<String, Option<String>> = BTreeMap::new();
                let mut collect = |r: Row| -> Result<(), ConnectorError> {
                    let name = accounts.entry(r.account).or_default();
                    if name.is_none() {
                        *name = r.account_name;
                    }
                    Ok(())
                };
                pages +=
                    self.pages(&start, &end, [dim("LINKED_ACCOUNT"), dim("SERVICE")], None, cx, &mut collect).await?;
                let tag_group = GroupDefinition::builder().r#type(GroupDefinitionType::Tag).key(tag).build();
                for (a, name) in &accounts {
                    let mut named = |mut r: Row| {
                        r.account_name = name.clone();
                        write(r)
                    };
                    pages +=
                        self.pages(&start, &end, [dim("SERVICE"), tag_group.clone()], Some(a), cx, &mut named).await?;
                }
            }
        }
        if duplicates > 0 {
            tracing::warn!(source = %cx.source, month = %month, duplicates, "Cost Explorer repeated groups across pages; kept the first");
        }
        let closed = month.end().date_naive() <= now.date_naive();
        let settled = closed && !any_estimated && !days.is_empty();
        let (path, key) = spool.finish()?;
        let item = self.spools.keep(path);
        tracing::info!(
            source = %cx.source, month = %month, pages, rows, estimated = any_estimated,
            api_calls = self.calls.load(Ordering::Relaxed) - before,
            "Cost Explorer month fetched"
        );
        Ok(Some(Delivery {
            scope: format!("ce/{month}"),
            delivery_key: key,
            billing_period: Some(month),
            description: format!(
                "Cost Explorer {month}: {rows} groups in {pages} page(s){}",
                if any_estimated { ", estimated" } else { "" }
            ),
            items: vec![item],
            final_periods: settled,
            key_pending: false,
        }))
    }
}

fn date(s: &str) -> Option<DateTime<Utc>> {
    NaiveDate::parse_from_str(s.get(..10)?, "%Y-%m-%d").ok()?.and_hms_opt(0, 0, 0).map(|d| d.and_utc())
}

/// One spooled group → a ledger line (pure).
fn normalize(row: &Row, location: &str, query: &CeQuery) -> Result<(ChargeLine, u64), RowError> {
    let raw = || costledger_core::text::clip(&serde_json::to_string(row).unwrap_or_default(), 4096);
    let fail = |reason: String| RowError {
        location: location.to_string(),
        reason,
        raw: raw(),
        raw_amount: row.billed.as_ref().map(|b| b.0.clone()),
        currency: row.billed.as_ref().map(|b| b.1.clone()),
    };
    let start = date(&row.start).ok_or_else(|| fail(format!("TimePeriod.Start '{}' is not a date", row.start)))?;
    let end = date(&row.end).ok_or_else(|| fail(format!("TimePeriod.End '{}' is not a date", row.end)))?;
    let period = BillingPeriod::of(start);
    let mut rounded = 0u64;
    let mut amount = |m: &(String, String), name: &str| -> Result<rust_decimal::Decimal, RowError> {
        match parse_amount(&m.0) {
            Ok(Some(a)) => {
                rounded += u64::from(a.rounded);
                Ok(a.value)
            }
            Ok(None) => Err(fail(format!("{name} amount is empty"))),
            Err(e) => Err(fail(format!("{name}: {e}"))),
        }
    };
    let billed_m =
        row.billed.as_ref().ok_or_else(|| fail(format!("the group has no {} metric", query.billed_metric)))?;
    let billed = amount(billed_m, &query.billed_metric)?;
    let currency = billed_m.1.clone();
    if !is_iso4217(&currency) {
        return Err(fail(format!("{} unit '{currency}' is not an ISO 4217 currency code", query.billed_metric)));
    }
    let effective = match &row.effective {
        Some(m) => {
            if m.1 != currency {
                return Err(fail(format!("metrics in two currencies ({currency} and {})", m.1)));
            }
            Some(amount(m, query.effective_metric.as_deref().unwrap_or("EffectiveCost"))?)
        }
        None => Some(billed),
    };
    let category = if row.service == "Tax" { ChargeCategory::Tax } else { ChargeCategory::Usage };
    let mut tags = BTreeMap::new();
    if let (Some(k), Some(v)) = (&query.tag_key, &row.tag) {
        tags.insert(k.clone(), v.clone());
    }
    let mut x_extra = BTreeMap::new();
    x_extra.insert("aws_ce_estimated".to_string(), row.estimated.to_string());
    Ok((
        ChargeLine {
            billing_account_id: query.billing_account_id.clone().unwrap_or_else(|| row.account.clone()),
            billing_account_name: None,
            sub_account_id: Some(row.account.clone()).filter(|a| !a.is_empty()),
            sub_account_name: row.account_name.clone(),
            billing_period_start: period.start(),
            billing_period_end: period.end(),
            charge_period_start: start,
            charge_period_end: end,
            charge_category: category,
            charge_class: None,
            charge_description: None,
            service_name: Some(row.service.clone()).filter(|s| !s.is_empty()),
            service_category: None,
            provider_name: Some("AWS".into()),
            publisher_name: Some("Amazon Web Services, Inc.".into()),
            invoice_issuer_name: Some("Amazon Web Services, Inc.".into()),
            region_id: None,
            resource_id: None,
            resource_name: None,
            sku_id: None,
            billed_cost: billed,
            effective_cost: effective,
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
            // What Cost Explorer carries of the FOCUS columns: how often the charge recurs.
            focus: costledger_core::FocusColumns {
                charge_frequency: Some(
                    if category == ChargeCategory::Tax { "Recurring" } else { "Usage-Based" }.to_string(),
                ),
                ..Default::default()
            }
            .boxed(),
            x_extra,
            source_ref: Some(location.to_string()),
        },
        rounded,
    ))
}

#[async_trait::async_trait]
impl Connector for CostExplorerConnector {
    fn kind(&self) -> &'static str {
        "aws_cost_explorer"
    }

    fn api_calls(&self) -> u64 {
        self.calls.load(Ordering::Relaxed)
    }

    async fn check(&self, _cx: &Context) -> Result<(), ConnectorError> {
        // One small query: yesterday, ungrouped (billed like any other call).
        let today = (self.now)().date_naive();
        let period = DateInterval::builder()
            .start(day(today - Duration::days(1)))
            .end(day(today))
            .build()
            .map_err(|e| ConnectorError::input("Cost Explorer request", e.to_string(), "report this bug"))?;
        self.client
            .get_cost_and_usage()
            .time_period(period)
            .granularity(Granularity::Daily)
            .metrics(&self.query.billed_metric)
            .send()
            .await
            .map(|_| ())
            .map_err(ce_error)
    }

    async fn deliveries(&self, window: PeriodWindow, cx: &Context) -> Result<Vec<Delivery>, ConnectorError> {
        self.spools.clear();
        let before = self.calls.load(Ordering::Relaxed);
        let current = BillingPeriod::of((self.now)());
        let mut out = Vec::new();
        let mut m = window.from;
        while m <= window.to {
            if cx.final_periods.contains(&m) && m < current {
                tracing::info!(source = %cx.source, month = %m, "Cost Explorer month is final; not asked again");
            } else if let Some(d) = self.month(m, cx).await? {
                out.push(d);
            }
            m = m.next();
        }
        tracing::info!(source = %cx.source, api_calls = self.calls.load(Ordering::Relaxed) - before, "Cost Explorer calls this run (each is billed)");
        Ok(out)
    }

    fn fetch<'a>(&'a self, d: &'a Delivery, cx: &'a Context) -> BoxStream<'a, Result<Batch, ConnectorError>> {
        let path = d.items.first().cloned().unwrap_or_default();
        let query = self.query.clone();
        let label = d.scope.clone();
        let spool = path.clone();
        stream_lines(path, cx.batch_rows, cx.cancel.clone(), move |line, n| {
            let row: Row = serde_json::from_str(line)
                .map_err(|e| ConnectorError::input(&spool, format!("spool line {n}: {e}"), "report this bug"))?;
            Ok(Some(normalize(&row, &format!("{label} page {} group {n}", row.page), &query)))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(tag: Option<&str>) -> CeQuery {
        CeQuery {
            billed_metric: "UnblendedCost".into(),
            effective_metric: Some("AmortizedCost".into()),
            tag_key: tag.map(str::to_string),
            billing_account_id: Some("111122223333".into()),
        }
    }

    fn row(billed: &str, eff: &str, tag: Option<&str>, service: &str) -> Row {
        Row {
            start: "2024-03-01".into(),
            end: "2024-03-02".into(),
            account: "444455556666".into(),
            account_name: Some("payments-prod".into()),
            service: service.into(),
            tag: tag.map(str::to_string),
            billed: Some((billed.into(), "USD".into())),
            effective: Some((eff.into(), "USD".into())),
            estimated: true,
            page: 1,
        }
    }

    #[test]
    fn amounts_are_exact_strings_and_untagged_is_absent() {
        let (l, _) =
            normalize(&row("0.0000023419", "1E-10", None, "Amazon Simple Storage Service"), "x", &q(Some("team")))
                .expect("line");
        assert_eq!(l.billed_cost.to_string(), "0.0000023419");
        assert_eq!(l.effective_cost.map(|d| d.to_string()).as_deref(), Some("0.0000000001"));
        assert!(l.tags.is_empty(), "team$ is no tag, not an empty one");
        assert_eq!(l.billing_account_id, "111122223333");
        assert_eq!(l.sub_account_name.as_deref(), Some("payments-prod"));
        assert_eq!(l.billing_period_start.to_rfc3339(), "2024-03-01T00:00:00+00:00");
        let freq = |l: &ChargeLine| l.focus.as_deref().and_then(|f| f.text("ChargeFrequency")).map(str::to_string);
        assert_eq!(freq(&l).as_deref(), Some("Usage-Based"));
        let (l, _) = normalize(&row("41.23", "38.99", Some("payments"), "Tax"), "x", &q(Some("team"))).expect("line");
        assert_eq!(l.tags.get("team").map(String::as_str), Some("payments"));
        assert_eq!(l.charge_category, ChargeCategory::Tax);
        assert_eq!(freq(&l).as_deref(), Some("Recurring"));
    }

    #[test]
    fn bad_amounts_and_units_are_row_errors() {
        let e = normalize(&row("12,5", "1", None, "EC2"), "ce/2024-03 page 1 group 3", &q(None)).expect_err("bad");
        assert!(e.reason.starts_with("UnblendedCost:"), "{}", e.reason);
        assert_eq!(e.location, "ce/2024-03 page 1 group 3");
        let mut r = row("1", "1", None, "EC2");
        r.billed = Some(("1".into(), "N/A".into()));
        let e = normalize(&r, "x", &q(None)).expect_err("unit");
        assert!(e.reason.contains("'N/A' is not an ISO 4217"), "{}", e.reason);
    }
}
