//! GCP billing export rows → ledger lines (pure). One [`ExportRow`] shape is filled from three
//! inputs: BigQuery query results, JSON-lines extracts (nested, as the table is) and CSV
//! extracts of the flattened query.
//!
//! Mapping: BillingAccountId = `billing_account_id`; SubAccount = the project (id, name);
//! ServiceName = `service.description`; SkuId/ChargeDescription = `sku.id`/`sku.description`;
//! RegionId = `location.region` else `location.location`; ResourceId = `resource.global_name`
//! else `resource.name` (detailed table); Tags = project labels overlaid by resource labels;
//! BilledCost = EffectiveCost = `cost` (before credits); **each credit becomes its own Credit
//! line** (negative, with its type and name), so Σ BilledCost = the console's "cost after
//! credits"; `cost_type` regular → Usage, tax → Tax, adjustment and rounding_error →
//! Adjustment (any other value → Adjustment, kept in x_extra); billing period = `invoice.month`
//! in US Pacific time (the invoice month, not the UTC month of usage).
//!
//! FOCUS beyond the core: ContractedCost = `cost` (the account's prices, before credits; a
//! credit line's is its amount); ChargeFrequency from the cost type; PricingCategory Dynamic
//! for spot/preemptible SKUs, else Standard (usage only); ServiceCategory/Subcategory and
//! RegionName from [`crate::focus_tables`]; committed use discount credits carry the commitment
//! (category Usage, or Spend for the dollar-based kind; type Committed Use Discount; id and
//! name); tax lines have no pricing quantity. ListCost = `cost_at_list` where the export has it
//! (null where it does not: an older export or extract), a credit's its amount;
//! AvailabilityZone = `location.zone`; ContractedUnitPrice on usage from the detailed export's
//! tier price ([`contracted_unit_price`]: only where it prices the row exactly).

use std::collections::BTreeMap;

use chrono::{DateTime, TimeZone, Utc};
use costledger_core::currency::is_iso4217;
use costledger_core::{ChargeCategory, ChargeLine, RowError, parse_amount, parse_timestamp};
use rust_decimal::Decimal;

pub const PROVIDER: &str = "Google Cloud";

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Credit {
    pub name: Option<String>,
    pub full_name: Option<String>,
    pub id: Option<String>,
    pub kind: Option<String>,
    /// Decimal text as the source wrote it.
    pub amount: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExportRow {
    pub invoice_month: Option<String>,
    pub cost_type: Option<String>,
    pub billing_account_id: Option<String>,
    pub service_id: Option<String>,
    pub service_description: Option<String>,
    pub sku_id: Option<String>,
    pub sku_description: Option<String>,
    pub project_id: Option<String>,
    pub project_name: Option<String>,
    pub region: Option<String>,
    pub location: Option<String>,
    /// `location.zone` (`us-central1-a`): the AvailabilityZone.
    pub zone: Option<String>,
    pub resource_name: Option<String>,
    pub resource_global_name: Option<String>,
    /// Timestamps: microseconds since the epoch, RFC 3339, or `2024-03-01 00:00:00 UTC`.
    pub usage_start_time: Option<String>,
    pub usage_end_time: Option<String>,
    pub export_time: Option<String>,
    pub currency: Option<String>,
    pub currency_conversion_rate: Option<String>,
    pub cost: Option<String>,
    /// `cost_at_list`: the cost at list prices (the ListCost), where the export has it.
    pub cost_at_list: Option<String>,
    pub usage_amount: Option<String>,
    pub usage_unit: Option<String>,
    pub usage_pricing_amount: Option<String>,
    pub usage_pricing_unit: Option<String>,
    /// The detailed export's `price.effective_price`: the price of the SKU tier the row was
    /// charged at, per `price.pricing_unit_quantity` of `price.unit` (absent from the standard
    /// export).
    pub price_effective_price: Option<String>,
    pub price_unit: Option<String>,
    pub price_pricing_unit_quantity: Option<String>,
    pub labels: Vec<(String, String)>,
    pub project_labels: Vec<(String, String)>,
    pub credits: Vec<Credit>,
}

/// A timestamp as BigQuery writes it: integer microseconds, float seconds, or text.
pub fn parse_bq_time(s: &str) -> Option<DateTime<Utc>> {
    let t = s.trim();
    if !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit()) {
        let micros: i64 = t.parse().ok()?;
        return Utc.timestamp_micros(micros).single();
    }
    parse_timestamp(t).ok()
}

/// `invoice.month` (`YYYYMM`) → the billing period: that month in US Pacific time.
pub fn invoice_period(month: &str) -> Option<(DateTime<Utc>, DateTime<Utc>)> {
    let m = month.trim();
    if m.len() != 6 || !m.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let y: i32 = m[..4].parse().ok()?;
    let mo: u32 = m[4..].parse().ok()?;
    let (ny, nm) = if mo == 12 { (y + 1, 1) } else { (y, mo + 1) };
    let pt = chrono_tz::America::Los_Angeles;
    let start = pt.with_ymd_and_hms(y, mo, 1, 0, 0, 0).single()?.with_timezone(&Utc);
    let end = pt.with_ymd_and_hms(ny, nm, 1, 0, 0, 0).single()?.with_timezone(&Utc);
    Some((start, end))
}

fn amount(text: &Option<String>, what: &str, rounded: &mut u64) -> Result<Option<Decimal>, String> {
    match text.as_deref().map(str::trim) {
        None | Some("") => Ok(None),
        Some(t) => match parse_amount(t) {
            Ok(Some(a)) => {
                *rounded += u64::from(a.rounded);
                Ok(Some(a.value))
            }
            Ok(None) => Ok(None),
            Err(e) => Err(format!("{what}: {e}")),
        },
    }
}

fn some(s: &Option<String>) -> Option<String> {
    s.as_ref().map(|v| v.trim().to_string()).filter(|v| !v.is_empty())
}

/// ContractedUnitPrice of a usage row from its tier's price (pure): `price` per `per` units
/// of `price_unit`, only when that unit is the row's pricing unit, the price per one unit is
/// exact, and it times the PricingQuantity is exactly the row's cost (`cost` is at the
/// account's prices before credits, the ContractedCost). A row whose cost spans tiers or was
/// rounded from the price gets none: never a rounded guess.
pub fn contracted_unit_price(
    price: Option<Decimal>,
    per: Option<Decimal>,
    price_unit: Option<&str>,
    pricing_unit: Option<&str>,
    pricing_quantity: Option<Decimal>,
    cost: Decimal,
) -> Option<Decimal> {
    let (price, per, quantity) = (price?, per?, pricing_quantity?);
    if price_unit? != pricing_unit? || per <= Decimal::ZERO {
        return None;
    }
    let unit = price.checked_div(per)?;
    if costledger_core::exact_product(unit, per)? != price {
        return None;
    }
    costledger_core::exact_unit_price(Some(unit), Some(quantity), cost).map(|u| u.normalize())
}

/// One export row → its lines: the charge, then one Credit line per credit. `raw` is kept for
/// quarantine.
pub fn row_lines(r: &ExportRow, location: &str, raw: &str) -> Result<(Vec<ChargeLine>, u64), RowError> {
    let fail = |reason: String| RowError {
        location: location.to_string(),
        reason,
        raw: costledger_core::text::clip(raw, 4096),
        raw_amount: r.cost.clone(),
        currency: r.currency.clone(),
    };
    let month = some(&r.invoice_month).ok_or_else(|| fail("invoice.month is empty".into()))?;
    let (bp_start, bp_end) =
        invoice_period(&month).ok_or_else(|| fail(format!("invoice.month '{month}' is not YYYYMM")))?;
    let time = |v: &Option<String>, what: &str| -> Result<DateTime<Utc>, RowError> {
        let s = some(v).ok_or_else(|| fail(format!("{what} is empty")))?;
        parse_bq_time(&s).ok_or_else(|| fail(format!("{what} '{s}' is not a timestamp")))
    };
    let start = time(&r.usage_start_time, "usage_start_time")?;
    let end = time(&r.usage_end_time, "usage_end_time")?;
    let currency = some(&r.currency).unwrap_or_default();
    if !is_iso4217(&currency) {
        return Err(fail(format!("currency '{currency}' is not an ISO 4217 currency code")));
    }
    let account = some(&r.billing_account_id).ok_or_else(|| fail("billing_account_id is empty".into()))?;
    let mut rounded = 0u64;
    let cost = amount(&r.cost, "cost", &mut rounded).map_err(fail)?.ok_or_else(|| fail("cost is empty".into()))?;
    let usage = amount(&r.usage_amount, "usage.amount", &mut rounded).map_err(fail)?;
    let pricing = amount(&r.usage_pricing_amount, "usage.amount_in_pricing_units", &mut rounded).map_err(fail)?;
    let list = amount(&r.cost_at_list, "cost_at_list", &mut rounded).map_err(fail)?;
    let price = amount(&r.price_effective_price, "price.effective_price", &mut rounded).map_err(fail)?;
    let price_per =
        amount(&r.price_pricing_unit_quantity, "price.pricing_unit_quantity", &mut rounded).map_err(fail)?;
    let cost_type = some(&r.cost_type).unwrap_or_else(|| "regular".into());
    let category = match cost_type.as_str() {
        "regular" => ChargeCategory::Usage,
        "tax" => ChargeCategory::Tax,
        _ => ChargeCategory::Adjustment,
    };
    let mut tags: BTreeMap<String, String> = r.project_labels.iter().cloned().collect();
    tags.extend(r.labels.iter().cloned());
    let mut x_extra = BTreeMap::new();
    for (k, v) in [
        ("gcp_cost_type", Some(cost_type.clone())),
        ("gcp_invoice_month", Some(month.clone())),
        ("gcp_service_id", some(&r.service_id)),
        ("gcp_currency_conversion_rate", some(&r.currency_conversion_rate)),
        ("gcp_export_time", some(&r.export_time)),
        ("gcp_location", some(&r.location)),
    ] {
        if let Some(v) = v {
            x_extra.insert(k.to_string(), v);
        }
    }
    if category == ChargeCategory::Tax
        && let Some(sku) = some(&r.sku_id)
    {
        x_extra.insert("gcp_sku_id".to_string(), sku);
    }
    let service = some(&r.service_description);
    let (service_category, service_subcategory) = crate::focus_tables::service_category(service.as_deref());
    let region = some(&r.region).or_else(|| some(&r.location));
    let sku_text = some(&r.sku_description).unwrap_or_default().to_ascii_lowercase();
    let usage_line = category == ChargeCategory::Usage;
    let focus = costledger_core::FocusColumns {
        charge_frequency: Some(
            match category {
                ChargeCategory::Usage => "Usage-Based",
                ChargeCategory::Tax => "Recurring",
                _ => "One-Time",
            }
            .to_string(),
        ),
        // Spot and preemptible SKUs are priced dynamically; other usage at the standard price.
        pricing_category: usage_line
            .then(|| if sku_text.contains("spot") || sku_text.contains("preemptible") { "Dynamic" } else { "Standard" })
            .map(str::to_string),
        region_name: region.as_deref().and_then(crate::focus_tables::region_name).map(str::to_string),
        service_subcategory: Some(service_subcategory.to_string()),
        availability_zone: some(&r.zone),
        contracted_unit_price: if usage_line {
            contracted_unit_price(
                price,
                price_per,
                some(&r.price_unit).as_deref(),
                some(&r.usage_pricing_unit).as_deref(),
                pricing,
                cost,
            )
        } else {
            None
        },
        ..Default::default()
    };
    let (pricing, pricing_unit) = if category == ChargeCategory::Tax {
        (None, None)
    } else {
        (pricing, some(&r.usage_pricing_unit).map(|u| crate::focus_tables::focus_unit(&u)))
    };
    let base = ChargeLine {
        billing_account_id: account,
        billing_account_name: None,
        sub_account_id: some(&r.project_id),
        sub_account_name: some(&r.project_name),
        billing_period_start: bp_start,
        billing_period_end: bp_end,
        charge_period_start: start,
        charge_period_end: end,
        charge_category: category,
        charge_class: None,
        charge_description: some(&r.sku_description),
        service_name: service,
        service_category: Some(service_category.to_string()),
        provider_name: Some(PROVIDER.into()),
        publisher_name: Some(PROVIDER.into()),
        invoice_issuer_name: Some("Google".into()),
        region_id: region,
        resource_id: some(&r.resource_global_name).or_else(|| some(&r.resource_name)),
        resource_name: some(&r.resource_name),
        // FOCUS: a tax line has no SkuId (kept in x_extra when the export names one).
        sku_id: some(&r.sku_id).filter(|_| category != ChargeCategory::Tax),
        billed_cost: cost,
        effective_cost: Some(cost),
        list_cost: list,
        // `cost` is at the account's prices, before credits: the contracted cost.
        contracted_cost: Some(cost),
        billing_currency: currency,
        pricing_quantity: pricing,
        pricing_unit,
        consumed_quantity: usage.filter(|_| usage_line),
        consumed_unit: some(&r.usage_unit).filter(|_| usage_line).map(|u| crate::focus_tables::focus_unit(&u)),
        commitment_discount_id: None,
        invoice_id: None,
        tags,
        focus: focus.boxed(),
        x_extra,
        source_ref: Some(location.to_string()),
    };
    let mut out = Vec::with_capacity(1 + r.credits.len());
    for (i, c) in r.credits.iter().enumerate() {
        let a = amount(&c.amount, &format!("credits[{i}].amount"), &mut rounded)
            .map_err(fail)?
            .ok_or_else(|| fail(format!("credits[{i}].amount is empty")))?;
        let mut l = base.clone();
        l.charge_category = ChargeCategory::Credit;
        l.billed_cost = a;
        l.effective_cost = Some(a);
        l.pricing_quantity = None;
        l.pricing_unit = None;
        l.consumed_quantity = None;
        l.consumed_unit = None;
        l.contracted_cost = Some(a);
        // A credit's ListCost is its amount (FOCUS: a charge not calculated from others).
        l.list_cost = Some(a);
        let mut f = l.focus.as_deref().map(|f| f.to_columns()).unwrap_or_default();
        f.pricing_category = None;
        f.contracted_unit_price = None;
        // A committed use discount credit is the commitment's discount on this usage.
        let kind = some(&c.kind).unwrap_or_default();
        if kind.starts_with("COMMITTED_USAGE_DISCOUNT") {
            f.commitment_discount_category =
                Some(if kind == "COMMITTED_USAGE_DISCOUNT_DOLLAR_BASE" { "Spend" } else { "Usage" }.to_string());
            f.commitment_discount_type = Some("Committed Use Discount".to_string());
            f.commitment_discount_name = some(&c.full_name).or_else(|| some(&c.name));
            l.commitment_discount_id = some(&c.id);
        }
        l.focus = f.boxed();
        l.charge_description = some(&c.full_name).or_else(|| some(&c.name)).or_else(|| some(&c.kind));
        for (k, v) in [("gcp_credit_type", &c.kind), ("gcp_credit_id", &c.id), ("gcp_credit_name", &c.name)] {
            if let Some(v) = some(v) {
                l.x_extra.insert(k.to_string(), v);
            }
        }
        l.source_ref = Some(format!("{location} credit {}", i + 1));
        out.push(l);
    }
    out.insert(0, base);
    Ok((out, rounded))
}

/// `[{"key":"team","value":"payments"}, …]` (as `TO_JSON_STRING` writes it).
pub fn parse_kv_json(s: &str) -> Result<Vec<(String, String)>, String> {
    let t = s.trim();
    if t.is_empty() || t == "null" {
        return Ok(Vec::new());
    }
    let v: Vec<BTreeMap<String, serde_json::Value>> = serde_json::from_str(t).map_err(|e| format!("labels: {e}"))?;
    Ok(v.into_iter()
        .filter_map(|m| {
            let k = m.get("key")?.as_str()?.to_string();
            let val = m.get("value").and_then(|v| v.as_str()).unwrap_or("").to_string();
            Some((k, val))
        })
        .collect())
}

/// `[{"name":…,"amount":-0.2,"type":…}, …]`; amounts kept as their JSON text (number or string).
pub fn parse_credits_json(s: &str) -> Result<Vec<Credit>, String> {
    let t = s.trim();
    if t.is_empty() || t == "null" {
        return Ok(Vec::new());
    }
    let v: Vec<BTreeMap<String, Box<serde_json::value::RawValue>>> =
        serde_json::from_str(t).map_err(|e| format!("credits: {e}"))?;
    let text = |m: &BTreeMap<String, Box<serde_json::value::RawValue>>, k: &str| -> Option<String> {
        let raw = m.get(k)?.get().trim();
        if raw == "null" {
            return None;
        }
        Some(serde_json::from_str::<String>(raw).unwrap_or_else(|_| raw.to_string()))
    };
    Ok(v.iter()
        .map(|m| Credit {
            name: text(m, "name"),
            full_name: text(m, "full_name"),
            id: text(m, "id"),
            kind: text(m, "type"),
            amount: text(m, "amount"),
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A regular usage row of one hour on 2024-03-01 in `currency`, costing `cost`.
    fn usage_row(currency: &str, cost: &str) -> ExportRow {
        ExportRow {
            invoice_month: Some("202403".into()),
            cost_type: Some("regular".into()),
            billing_account_id: Some("0123AB-CDEF45-6789AB".into()),
            usage_start_time: Some("1709251200000000".into()),
            usage_end_time: Some("1709254800000000".into()),
            currency: Some(currency.into()),
            cost: Some(cost.into()),
            ..Default::default()
        }
    }

    #[test]
    fn every_credit_type_is_its_own_credit_line() {
        let types = [
            "COMMITTED_USAGE_DISCOUNT",
            "COMMITTED_USAGE_DISCOUNT_DOLLAR_BASE",
            "DISCOUNT",
            "FREE_TIER",
            "PROMOTION",
            "RESELLER_MARGIN",
            "SUBSCRIPTION_BENEFIT",
            "SUSTAINED_USAGE_DISCOUNT",
            "FEE_UTILIZATION_OFFSET",
        ];
        let row = ExportRow {
            credits: types
                .iter()
                .map(|t| Credit { kind: Some(t.to_string()), amount: Some("-1.5".into()), ..Default::default() })
                .collect(),
            ..usage_row("JPY", "1000")
        };
        let (lines, _) = row_lines(&row, "t:1", "").expect("lines");
        assert_eq!(lines.len(), 10);
        assert_eq!(lines[0].charge_category, ChargeCategory::Usage);
        let credits: Decimal = lines[1..].iter().map(|l| l.billed_cost).sum();
        assert_eq!(credits, Decimal::new(-135, 1));
        assert!(lines[1..].iter().all(|l| l.charge_category == ChargeCategory::Credit && l.billing_currency == "JPY"));
        let kinds: Vec<&str> =
            lines[1..].iter().filter_map(|l| l.x_extra.get("gcp_credit_type").map(String::as_str)).collect();
        assert_eq!(kinds, types);
        // Committed use discounts carry their commitment; other credits do not.
        let commitment = |l: &ChargeLine| {
            let f = l.focus.as_deref();
            (
                f.and_then(|f| f.text("CommitmentDiscountCategory")).map(str::to_string),
                f.and_then(|f| f.text("CommitmentDiscountType")).map(str::to_string),
            )
        };
        assert_eq!(commitment(&lines[1]), (Some("Usage".into()), Some("Committed Use Discount".into())));
        assert_eq!(commitment(&lines[2]), (Some("Spend".into()), Some("Committed Use Discount".into())));
        assert_eq!(commitment(&lines[3]), (None, None));
        assert!(lines[1..].iter().all(|l| l.contracted_cost == Some(l.billed_cost) && l.pricing_unit.is_none()));
        assert_eq!(lines[0].focus.as_deref().and_then(|f| f.text("PricingCategory")), Some("Standard"));
        let bad = ExportRow { cost: Some("1e".into()), ..row.clone() };
        assert!(row_lines(&bad, "t:2", "").expect_err("bad").reason.starts_with("cost:"));
        let unknown = ExportRow { cost_type: Some("marketplace_fee".into()), credits: vec![], ..row };
        let (l, _) = row_lines(&unknown, "t:3", "").expect("kept");
        assert_eq!(l[0].charge_category, ChargeCategory::Adjustment, "unknown cost types are kept, not dropped");
        assert_eq!(l[0].x_extra.get("gcp_cost_type").map(String::as_str), Some("marketplace_fee"));
    }

    /// The detailed export's tier price is the ContractedUnitPrice (per one pricing unit) only
    /// where it prices the row exactly; credits never carry it.
    #[test]
    fn a_tier_price_that_prices_the_row_exactly_is_its_contracted_unit_price() {
        let d = |s: &str| Decimal::from_str_exact(s).expect("decimal");
        let cup = |price: &str, per: &str, unit: &str, q: &str, cost: &str| {
            contracted_unit_price(Some(d(price)), Some(d(per)), Some(unit), Some("gibibyte hour"), Some(d(q)), d(cost))
        };
        // 0.04 per 1 GiB-hour, 120 GiB-hours, cost 4.8: exact.
        assert_eq!(cup("0.04", "1", "gibibyte hour", "120", "4.8"), Some(d("0.04")));
        // 1 per 1000000 units → 0.000001 a unit, exact.
        assert_eq!(cup("1", "1000000", "gibibyte hour", "2500000", "2.5"), Some(d("0.000001")));
        // A cost spanning two tiers (or rounded) is not price × quantity: none.
        assert_eq!(cup("0.04", "1", "gibibyte hour", "120", "4.75"), None);
        // A price in another unit than the row's pricing unit: none.
        assert_eq!(cup("0.04", "1", "hour", "120", "4.8"), None);
        // A price per 3 units has no exact price per unit: none.
        assert_eq!(cup("1", "3", "gibibyte hour", "3", "1"), None);
        assert_eq!(contracted_unit_price(None, Some(d("1")), Some("h"), Some("h"), Some(d("1")), d("1")), None);

        let row = ExportRow {
            usage_pricing_amount: Some("120".into()),
            usage_pricing_unit: Some("gibibyte hour".into()),
            price_effective_price: Some("0.04".into()),
            price_unit: Some("gibibyte hour".into()),
            price_pricing_unit_quantity: Some("1".into()),
            credits: vec![Credit { kind: Some("FREE_TIER".into()), amount: Some("-0.8".into()), ..Default::default() }],
            ..usage_row("USD", "4.8")
        };
        let (lines, _) = row_lines(&row, "t:1", "").expect("lines");
        let cup_of = |l: &ChargeLine| l.focus.as_deref().and_then(|f| f.decimal("ContractedUnitPrice"));
        assert_eq!(cup_of(&lines[0]), Some(d("0.04")));
        assert_eq!(cup_of(&lines[1]), None, "a credit has no unit price");
        let bad = ExportRow { price_effective_price: Some("cheap".into()), ..row };
        assert!(row_lines(&bad, "t:2", "").expect_err("bad").reason.starts_with("price.effective_price:"));
    }

    /// FOCUS: a tax line has no SkuId; the export's SKU id stays in x_extra.
    #[test]
    fn a_tax_row_has_no_sku_id() {
        let tax = ExportRow { cost_type: Some("tax".into()), sku_id: Some("TAX-SKU".into()), ..usage_row("USD", "1") };
        let (lines, _) = row_lines(&tax, "t:1", "").expect("lines");
        assert_eq!((lines[0].charge_category, lines[0].sku_id.as_deref()), (ChargeCategory::Tax, None));
        assert_eq!(lines[0].x_extra.get("gcp_sku_id").map(String::as_str), Some("TAX-SKU"));
        let usage = ExportRow { sku_id: Some("CPU-SKU".into()), ..usage_row("USD", "1") };
        assert_eq!(row_lines(&usage, "t:2", "").expect("lines").0[0].sku_id.as_deref(), Some("CPU-SKU"));
    }

    #[test]
    fn invoice_month_is_pacific() {
        let (s, e) = invoice_period("202403").expect("month");
        assert_eq!(s.to_rfc3339(), "2024-03-01T08:00:00+00:00");
        assert_eq!(e.to_rfc3339(), "2024-04-01T07:00:00+00:00", "DST starts in March");
        assert!(invoice_period("2024-03").is_none());
        assert_eq!(
            parse_bq_time("1709251200000000").map(|t| t.to_rfc3339()).as_deref(),
            Some("2024-03-01T00:00:00+00:00")
        );
        assert_eq!(
            parse_bq_time("2024-03-01 00:00:00 UTC").map(|t| t.to_rfc3339()).as_deref(),
            Some("2024-03-01T00:00:00+00:00")
        );
    }
}
