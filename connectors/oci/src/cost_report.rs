//! OCI cost report CSV (`reports/cost-csv/*.csv.gz`) → ledger lines. Pure; columns by header
//! name (case-insensitive); tags from `tags/<namespace>.<key>` columns.
//!
//! Mapping (aligned with Oracle's own FOCUS reports): BillingAccountId = `cost/subscriptionId`
//! (else the tenancy), SubAccountId = `lineItem/tenantId`, charge period =
//! `lineItem/intervalUsageStart/End` (the start has no seconds), billing period = the month of
//! the start (UTC), BilledCost = EffectiveCost = `cost/myCost`, ChargeCategory Usage, and
//! ChargeClass Correction when `lineItem/isCorrection` is true (the correcting amount is its
//! own line, so totals equal Oracle's). Compartment, reference numbers, overage and unit price
//! are kept in `x_extra`.
//!
//! FOCUS beyond the core: ContractedCost = the cost (it is at the customer's unit price) and
//! ContractedUnitPrice = `cost/unitPrice`; ChargeFrequency Usage-Based; ServiceCategory and
//! Subcategory, RegionName and ResourceType (from the OCID) from [`crate::focus_tables`];
//! AvailabilityZone = `product/availabilityDomain`; units in FOCUS's format; ConsumedQuantity =
//! the billed quantity. The report has no list price: ListCost stays null.

use std::collections::BTreeMap;

use chrono::{DateTime, Datelike, TimeZone, Utc};
use costledger_core::currency::is_iso4217;
use costledger_core::text::clip;
use costledger_core::{ChargeCategory, ChargeClass, ChargeLine, RowError, parse_amount, parse_timestamp};
use costledger_files::reader::RecordFormat;
use costledger_files::record::first_non_utf8_field;
use rust_decimal::Decimal;

pub const PROVIDER: &str = "Oracle";

const COLUMNS: [&str; 25] = [
    "lineItem/referenceNo",
    "lineItem/tenantId",
    "lineItem/intervalUsageStart",
    "lineItem/intervalUsageEnd",
    "product/service",
    "product/compartmentId",
    "product/compartmentName",
    "product/region",
    "product/availabilityDomain",
    "product/resourceId",
    "usage/billedQuantity",
    "usage/billedQuantityOverage",
    "cost/subscriptionId",
    "cost/productSku",
    "product/Description",
    "cost/unitPrice",
    "cost/unitPriceOverage",
    "cost/myCost",
    "cost/myCostOverage",
    "cost/currencyCode",
    "cost/billingUnitReadable",
    "cost/skuUnitDescription",
    "cost/overageFlag",
    "lineItem/isCorrection",
    "lineItem/backreferenceNo",
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum C {
    ReferenceNo,
    TenantId,
    Start,
    End,
    Service,
    CompartmentId,
    CompartmentName,
    Region,
    Ad,
    ResourceId,
    BilledQuantity,
    BilledQuantityOverage,
    SubscriptionId,
    ProductSku,
    Description,
    UnitPrice,
    UnitPriceOverage,
    MyCost,
    MyCostOverage,
    Currency,
    BillingUnitReadable,
    SkuUnitDescription,
    OverageFlag,
    IsCorrection,
    BackreferenceNo,
}

const REQUIRED: [C; 5] = [C::TenantId, C::Start, C::End, C::MyCost, C::Currency];

/// Header → positions of the known columns, tag columns and the rest.
#[derive(Debug, Clone)]
pub struct CostReportColumns {
    names: Vec<String>,
    idx: [Option<usize>; 25],
    /// (column, tag key `namespace.key` or `key`)
    tags: Vec<(usize, String)>,
}

impl CostReportColumns {
    fn get<'r>(&self, rec: &'r csv::ByteRecord, c: C) -> Option<&'r str> {
        let i = self.idx[c as usize]?;
        let v = std::str::from_utf8(rec.get(i)?).ok()?.trim();
        if v.is_empty() { None } else { Some(v) }
    }
}

fn utf8_check(rec: &csv::ByteRecord, names: &[String]) -> Result<(), String> {
    if let Some(i) = first_non_utf8_field(rec) {
        return Err(format!("column {} is not valid UTF-8", names.get(i).map(String::as_str).unwrap_or("?")));
    }
    Ok(())
}

fn month_start(t: DateTime<Utc>) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(t.year(), t.month(), 1, 0, 0, 0).single().unwrap_or(t)
}

fn next_month(t: DateTime<Utc>) -> DateTime<Utc> {
    let (y, m) = if t.month() == 12 { (t.year() + 1, 1) } else { (t.year(), t.month() + 1) };
    Utc.with_ymd_and_hms(y, m, 1, 0, 0, 0).single().unwrap_or(t)
}

impl RecordFormat for CostReportColumns {
    const HEADER_HINT: &'static str =
        "this is not an OCI cost report (reports/cost-csv/…): use --format oci-focus for FOCUS reports";

    fn from_header(header: &csv::ByteRecord) -> Result<Self, String> {
        let mut names = Vec::with_capacity(header.len());
        for (i, raw) in header.iter().enumerate() {
            let s = std::str::from_utf8(raw).map_err(|_| format!("header column {} is not valid UTF-8", i + 1))?;
            let s = if i == 0 { s.trim_start_matches('\u{feff}') } else { s };
            names.push(s.trim().to_string());
        }
        let mut seen = BTreeMap::new();
        for (i, n) in names.iter().enumerate() {
            if let Some(j) = seen.insert(n.to_ascii_lowercase(), i) {
                return Err(format!("duplicate column '{n}' (columns {} and {})", j + 1, i + 1));
            }
        }
        let mut idx = [None; 25];
        let mut tags = Vec::new();
        for (i, n) in names.iter().enumerate() {
            if let Some(k) = COLUMNS.iter().position(|c| c.eq_ignore_ascii_case(n)) {
                idx[k] = Some(i);
            } else if n.len() > 5 && n[..5].eq_ignore_ascii_case("tags/") {
                tags.push((i, n[5..].to_string()));
            }
        }
        // The unit column was renamed: read either.
        let missing: Vec<&str> =
            REQUIRED.iter().filter(|c| idx[**c as usize].is_none()).map(|c| COLUMNS[*c as usize]).collect();
        if !missing.is_empty() {
            return Err(format!("missing required column(s): {}", missing.join(", ")));
        }
        Ok(CostReportColumns { names, idx, tags })
    }

    fn width(&self) -> usize {
        self.names.len()
    }

    fn column_name(&self, i: usize) -> &str {
        self.names.get(i).map(String::as_str).unwrap_or("?")
    }

    fn raw_amount(&self, rec: &csv::ByteRecord) -> Option<String> {
        self.get(rec, C::MyCost).map(str::to_string)
    }

    fn raw_currency(&self, rec: &csv::ByteRecord) -> Option<String> {
        self.get(rec, C::Currency).map(str::to_string)
    }

    fn normalize(&self, rec: &csv::ByteRecord, location: &str) -> Result<(ChargeLine, u64), RowError> {
        let fail = |reason: String| RowError {
            location: location.to_string(),
            reason,
            raw: clip(&String::from_utf8_lossy(rec.as_slice()), 4096),
            raw_amount: self.raw_amount(rec),
            currency: self.raw_currency(rec),
        };
        utf8_check(rec, &self.names).map_err(fail)?;
        let s = |c: C| self.get(rec, c).map(str::to_string);
        let ts = |c: C| -> Result<DateTime<Utc>, RowError> {
            let v = self.get(rec, c).ok_or_else(|| fail(format!("{} is empty", COLUMNS[c as usize])))?;
            parse_timestamp(v).map_err(|e| fail(format!("{}: {e}", COLUMNS[c as usize])))
        };
        let start = ts(C::Start)?;
        let end = ts(C::End)?;
        if end < start {
            return Err(fail(format!("lineItem/intervalUsageEnd {end} is before the start {start}")));
        }
        let mut rounded = 0u64;
        let mut amount = |c: C, required: bool| -> Result<Option<Decimal>, RowError> {
            match self.get(rec, c) {
                None if required => Err(fail(format!("{} is empty", COLUMNS[c as usize]))),
                None => Ok(None),
                Some(v) => match parse_amount(v) {
                    Ok(Some(a)) => {
                        rounded += u64::from(a.rounded);
                        Ok(Some(a.value))
                    }
                    Ok(None) if required => Err(fail(format!("{} is empty", COLUMNS[c as usize]))),
                    Ok(None) => Ok(None),
                    Err(e) => Err(fail(format!("{}: {e}", COLUMNS[c as usize]))),
                },
            }
        };
        let cost = amount(C::MyCost, true)?.unwrap_or_default();
        let quantity = amount(C::BilledQuantity, false)?;
        let currency = s(C::Currency).unwrap_or_default();
        if !is_iso4217(&currency) {
            return Err(fail(format!("cost/currencyCode '{currency}' is not an ISO 4217 currency code")));
        }
        let tenant = s(C::TenantId).unwrap_or_default();
        let correction = match self.get(rec, C::IsCorrection).map(str::to_ascii_lowercase).as_deref() {
            None | Some("false") | Some("n") | Some("no") => false,
            Some("true") | Some("y") | Some("yes") => true,
            Some(other) => return Err(fail(format!("lineItem/isCorrection '{other}' is not true or false"))),
        };
        let mut tags = BTreeMap::new();
        for (i, key) in &self.tags {
            let v = rec.get(*i).and_then(|v| std::str::from_utf8(v).ok()).map(str::trim).unwrap_or("");
            if !v.is_empty() {
                tags.insert(key.clone(), v.to_string());
            }
        }
        let mut x_extra = BTreeMap::new();
        for (c, key) in [
            (C::ReferenceNo, "oci_ReferenceNumber"),
            (C::BackreferenceNo, "oci_BackReferenceNumber"),
            (C::CompartmentId, "oci_CompartmentId"),
            (C::CompartmentName, "oci_CompartmentName"),
            (C::Ad, "oci_AvailabilityDomain"),
            (C::SubscriptionId, "oci_SubscriptionId"),
            (C::UnitPrice, "oci_UnitPrice"),
            (C::UnitPriceOverage, "oci_UnitPriceOverage"),
            (C::MyCostOverage, "oci_CostOverage"),
            (C::BilledQuantityOverage, "oci_BilledQuantityOverage"),
            (C::OverageFlag, "oci_OverageFlag"),
        ] {
            if let Some(v) = s(c) {
                x_extra.insert(key.to_string(), v);
            }
        }
        let service = s(C::Service);
        let (service_category, service_subcategory) = crate::focus_tables::service_category(service.as_deref());
        let unit =
            s(C::SkuUnitDescription).or_else(|| s(C::BillingUnitReadable)).map(|u| crate::focus_tables::focus_unit(&u));
        let region = s(C::Region);
        let unit_price = amount(C::UnitPrice, false)?;
        let focus = costledger_core::FocusColumns {
            charge_frequency: Some("Usage-Based".to_string()),
            availability_zone: s(C::Ad),
            region_name: region.as_deref().and_then(crate::focus_tables::region_name).map(str::to_string),
            resource_type: s(C::ResourceId).as_deref().and_then(crate::focus_tables::resource_type),
            service_subcategory: Some(service_subcategory.to_string()),
            contracted_unit_price: unit_price,
            ..Default::default()
        };
        let line = ChargeLine {
            billing_account_id: s(C::SubscriptionId).unwrap_or_else(|| tenant.clone()),
            billing_account_name: None,
            sub_account_id: Some(tenant),
            sub_account_name: None,
            billing_period_start: month_start(start),
            billing_period_end: next_month(start),
            charge_period_start: start,
            charge_period_end: end,
            charge_category: ChargeCategory::Usage,
            charge_class: correction.then_some(ChargeClass::Correction),
            charge_description: s(C::Description),
            service_name: service,
            service_category: Some(service_category.to_string()),
            provider_name: Some(PROVIDER.into()),
            publisher_name: Some(PROVIDER.into()),
            invoice_issuer_name: Some(PROVIDER.into()),
            region_id: region,
            resource_id: s(C::ResourceId),
            resource_name: None,
            sku_id: s(C::ProductSku),
            billed_cost: cost,
            effective_cost: Some(cost),
            list_cost: None,
            // The cost report's cost is at the customer's unit price: the contracted cost.
            contracted_cost: Some(cost),
            billing_currency: currency,
            pricing_quantity: quantity,
            pricing_unit: unit.clone(),
            consumed_quantity: quantity,
            consumed_unit: unit.filter(|_| quantity.is_some()),
            commitment_discount_id: None,
            invoice_id: None,
            tags,
            focus: focus.boxed(),
            x_extra,
            source_ref: Some(location.to_string()),
        };
        Ok((line, rounded))
    }
}
