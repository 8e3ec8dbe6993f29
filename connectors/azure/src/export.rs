//! Azure cost export rows → ledger lines (pure). One reader for the EA, MCA and pay-as-you-go
//! column sets: columns are found by header name, case-insensitively, among the alternates each
//! agreement uses (`ALTERNATES` below), the UTF-8 BOM is stripped, dates are read in every shape
//! the exports write (`9/2/2023`, `09/01/2023`, `2019-07-29 00:00:00`, ISO 8601) and tags as
//! JSON or the brace-less EA form (`"a": "b","c": "d"`). A FOCUS export (`FocusCost`) is read by
//! the FOCUS normaliser ([`AzureAuto`] picks by header).
//!
//! Cost: an **ActualCost** export is the invoice basis: BilledCost = EffectiveCost = the cost
//! column, except a reservation or savings plan purchase, whose EffectiveCost is 0 (FOCUS: its
//! cost is amortised over the usage it covers). An **AmortizedCost** export spreads commitment purchases over usage: EffectiveCost =
//! the cost column; BilledCost = the cost on on-demand rows and 0 on commitment-covered usage and
//! unused-commitment rows (the purchase itself is billed in the ActualCost export). Load the
//! ActualCost export for invoice totals.
//!
//! ChargeType: Usage, UnusedReservation, UnusedSavingsPlan → Usage; Purchase → Purchase; Refund
//! → Credit with ChargeClass Correction; Tax → Tax; Credit → Credit; RoundingAdjustment and
//! anything else → Adjustment (kept, never dropped).

use std::collections::BTreeMap;

use chrono::{DateTime, Duration, NaiveDate, Utc};
use costledger_core::currency::is_iso4217;
use costledger_core::text::clip;
use costledger_core::{
    BillingPeriod, ChargeCategory, ChargeClass, ChargeLine, RowError, parse_amount, parse_timestamp,
};
use costledger_files::reader::RecordFormat;
use costledger_files::record::first_non_utf8_field;
use costledger_focus::normalize::ColumnMap;
use rust_decimal::Decimal;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum C {
    Date,
    Cost,
    Currency,
    BillingAccount,
    BillingAccountName,
    Subscription,
    SubscriptionName,
    ResourceGroup,
    ResourceId,
    ResourceName,
    Location,
    MeterCategory,
    ServiceName,
    ConsumedService,
    MeterId,
    Product,
    Quantity,
    Unit,
    ChargeType,
    PricingModel,
    PublisherType,
    PublisherName,
    Tags,
    InvoiceId,
    BpStart,
    BpEnd,
    PayGPrice,
    ReservationId,
    ServiceFamily,
    Frequency,
    ReservationName,
    AvailabilityZone,
    UnitPrice,
    MeterName,
    PricingCurrency,
    AdditionalInfo,
}

const N: usize = 36;

/// Each concept's header names (lower case), in order of preference.
const ALTERNATES: [(C, &[&str]); N] = [
    (C::Date, &["date", "usagedatetime", "usagedate"]),
    (C::Cost, &["costinbillingcurrency", "cost", "pretaxcost"]),
    (C::Currency, &["billingcurrencycode", "billingcurrency", "currency"]),
    (C::BillingAccount, &["billingaccountid"]),
    (C::BillingAccountName, &["billingaccountname"]),
    (C::Subscription, &["subscriptionid", "subscriptionguid"]),
    (C::SubscriptionName, &["subscriptionname"]),
    (C::ResourceGroup, &["resourcegroup", "resourcegroupname"]),
    (C::ResourceId, &["resourceid", "instancename", "instanceid"]),
    (C::ResourceName, &["resourcename"]),
    (C::Location, &["resourcelocation", "location", "meterregion"]),
    (C::MeterCategory, &["metercategory"]),
    (C::ServiceName, &["servicename"]),
    (C::ConsumedService, &["consumedservice"]),
    (C::MeterId, &["meterid"]),
    (C::Product, &["productname", "product", "metername"]),
    (C::Quantity, &["quantity", "usagequantity"]),
    (C::Unit, &["unitofmeasure"]),
    (C::ChargeType, &["chargetype"]),
    (C::PricingModel, &["pricingmodel"]),
    (C::PublisherType, &["publishertype"]),
    (C::PublisherName, &["publishername"]),
    (C::Tags, &["tags"]),
    (C::InvoiceId, &["invoiceid"]),
    (C::BpStart, &["billingperiodstartdate"]),
    (C::BpEnd, &["billingperiodenddate"]),
    (C::PayGPrice, &["paygprice"]),
    (C::ReservationId, &["reservationid", "benefitid"]),
    (C::ServiceFamily, &["servicefamily"]),
    (C::Frequency, &["frequency"]),
    (C::ReservationName, &["reservationname", "benefitname"]),
    (C::AvailabilityZone, &["availabilityzone"]),
    (C::UnitPrice, &["unitprice"]),
    (C::MeterName, &["metername"]),
    (C::PricingCurrency, &["pricingcurrencycode", "pricingcurrency"]),
    (C::AdditionalInfo, &["additionalinfo"]),
];

/// A date in any shape the exports use: `M/D/YYYY` (EA), `MM/DD/YYYY` (MCA), ISO 8601 with or
/// without a time (`2019-07-29 00:00:00`, `2024-03-01T00:00:00.0000000Z`).
pub fn parse_date(s: &str) -> Option<DateTime<Utc>> {
    let t = s.trim();
    if t.contains('/') {
        let mut it = t.split(['/', ' ']);
        let m: u32 = it.next()?.parse().ok()?;
        let d: u32 = it.next()?.parse().ok()?;
        let y: i32 = it.next()?.parse().ok()?;
        return NaiveDate::from_ymd_opt(y, m, d)?.and_hms_opt(0, 0, 0).map(|x| x.and_utc());
    }
    parse_timestamp(t).ok()
}

/// Tags as a JSON object, or the brace-less EA form `"a": "b","c": "d"` (wrapped in braces and
/// parsed by the shared FOCUS tag parser, so a value containing `","` survives).
pub fn parse_tags(cell: &str) -> Result<BTreeMap<String, String>, String> {
    let t = cell.trim();
    let text = if t.is_empty() || t.starts_with('{') { t.to_string() } else { format!("{{{t}}}") };
    costledger_core::text::parse_tags_json(&text)
        .map_err(|e| format!("Tags is neither a JSON object nor \"key\": \"value\" pairs: {e}"))
}

/// The on-demand capacity reservation an AdditionalInfo cell names (`VMCapacityReservationId`),
/// pure. The cell is a JSON object, or its brace-less EA form; only a cell that mentions the key
/// is parsed (most rows do not), and such a cell that is not JSON is an error.
pub fn capacity_reservation_id(info: &str) -> Result<Option<String>, String> {
    const KEY: &str = "VMCapacityReservationId";
    if !info.contains(KEY) {
        return Ok(None);
    }
    let t = info.trim();
    let text = if t.starts_with('{') { t.to_string() } else { format!("{{{t}}}") };
    let map: serde_json::Map<String, serde_json::Value> =
        serde_json::from_str(&text).map_err(|e| format!("not a JSON object ({e}), yet it names {KEY}"))?;
    Ok(map.get(KEY).and_then(|v| v.as_str()).map(str::trim).filter(|v| !v.is_empty()).map(str::to_string))
}

/// CapacityReservationStatus of a line in a capacity reservation (pure): `Unused` when the
/// line is billed to the reservation itself (its resource is a
/// `Microsoft.Compute/capacityReservationGroups/…/capacityReservations/…`: capacity no VM used),
/// else `Used` (a VM consumed it).
pub fn capacity_reservation_status(resource_id: Option<&str>) -> &'static str {
    let id = resource_id.unwrap_or("").to_ascii_lowercase();
    match id.split_once("/providers/microsoft.compute/capacityreservationgroups/") {
        Some((_, rest)) if rest.contains("/capacityreservations/") => "Unused",
        _ => "Used",
    }
}

#[derive(Debug, Clone)]
pub struct AzureColumns<const AMORTIZED: bool> {
    names: Vec<String>,
    idx: [Option<usize>; N],
}

pub type ActualColumns = AzureColumns<false>;
pub type AmortizedColumns = AzureColumns<true>;

impl<const A: bool> AzureColumns<A> {
    fn get<'r>(&self, rec: &'r csv::ByteRecord, c: C) -> Option<&'r str> {
        let v = std::str::from_utf8(rec.get(self.idx[c as usize]?)?).ok()?.trim();
        if v.is_empty() || v.eq_ignore_ascii_case("null") { None } else { Some(v) }
    }

    fn name(&self, c: C) -> &str {
        self.idx[c as usize].and_then(|i| self.names.get(i)).map(String::as_str).unwrap_or(ALTERNATES[c as usize].1[0])
    }
}

fn header_names(header: &csv::ByteRecord) -> Result<Vec<String>, String> {
    let mut names = Vec::with_capacity(header.len());
    for (i, raw) in header.iter().enumerate() {
        let s = std::str::from_utf8(raw).map_err(|_| format!("header column {} is not valid UTF-8", i + 1))?;
        let s = if i == 0 { s.trim_start_matches('\u{feff}') } else { s };
        names.push(s.trim().to_string());
    }
    Ok(names)
}

/// A header name as matched against the alternates: lower case, and for a localized header
/// that carries the English name in parentheses (`Kosten (PreTaxCost)`, `PreTaxCost (PreTaxCost)`,
/// as some portals write them), that name.
fn header_key(name: &str) -> String {
    let t = name.trim();
    if let Some(inner) = t.strip_suffix(')').and_then(|r| r.rsplit_once(" (")).map(|(_, inner)| inner.trim())
        && !inner.is_empty()
    {
        return inner.to_ascii_lowercase();
    }
    t.to_ascii_lowercase()
}

impl<const A: bool> RecordFormat for AzureColumns<A> {
    const HEADER_HINT: &'static str =
        "this is not an Azure cost export (EA, MCA or pay-as-you-go cost details, or a FOCUS export)";

    fn from_header(header: &csv::ByteRecord) -> Result<Self, String> {
        let names = header_names(header)?;
        let lower: Vec<String> = names.iter().map(|n| header_key(n)).collect();
        let mut seen = BTreeMap::new();
        for (i, n) in lower.iter().enumerate() {
            if let Some(j) = seen.insert(n.clone(), i) {
                return Err(format!("duplicate column '{}' (columns {} and {})", names[i], j + 1, i + 1));
            }
        }
        let mut idx = [None; N];
        for (c, alts) in ALTERNATES {
            idx[c as usize] = alts.iter().find_map(|a| lower.iter().position(|n| n == a));
        }
        let missing: Vec<String> = [C::Date, C::Cost, C::Currency]
            .iter()
            .filter(|c| idx[**c as usize].is_none())
            .map(|c| ALTERNATES[*c as usize].1.join(" or "))
            .collect();
        if !missing.is_empty() {
            return Err(format!("missing required column(s): {}", missing.join("; ")));
        }
        if idx[C::BillingAccount as usize].is_none() && idx[C::Subscription as usize].is_none() {
            return Err("missing required column: BillingAccountId or SubscriptionId".into());
        }
        Ok(AzureColumns { names, idx })
    }

    fn width(&self) -> usize {
        self.names.len()
    }

    fn column_name(&self, i: usize) -> &str {
        self.names.get(i).map(String::as_str).unwrap_or("?")
    }

    fn raw_amount(&self, rec: &csv::ByteRecord) -> Option<String> {
        self.get(rec, C::Cost).map(str::to_string)
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
        if let Some(i) = first_non_utf8_field(rec) {
            return Err(fail(format!("column {} is not valid UTF-8", self.column_name(i))));
        }
        let s = |c: C| self.get(rec, c).map(str::to_string);
        let date_of = |c: C| -> Result<Option<DateTime<Utc>>, RowError> {
            match self.get(rec, c) {
                None => Ok(None),
                Some(v) => {
                    parse_date(v).map(Some).ok_or_else(|| fail(format!("{}: '{v}' is not a date", self.name(c))))
                }
            }
        };
        let day = date_of(C::Date)?.ok_or_else(|| fail(format!("{} is empty", self.name(C::Date))))?;
        let (bp_start, bp_end) = match (date_of(C::BpStart)?, date_of(C::BpEnd)?) {
            // The export's end date is the last day, inclusive.
            (Some(s), Some(e)) => (s, e + Duration::days(1)),
            _ => {
                let p = BillingPeriod::of(day);
                (p.start(), p.end())
            }
        };
        let mut rounded = 0u64;
        let mut amt = |c: C| -> Result<Option<Decimal>, RowError> {
            match self.get(rec, c) {
                None => Ok(None),
                Some(v) => match parse_amount(v) {
                    Ok(a) => Ok(a.map(|a| {
                        rounded += u64::from(a.rounded);
                        a.value
                    })),
                    Err(e) => Err(fail(format!("{}: {e}", self.name(c)))),
                },
            }
        };
        let cost = amt(C::Cost)?.ok_or_else(|| fail(format!("{} is empty", self.name(C::Cost))))?;
        let quantity = amt(C::Quantity)?;
        let payg = amt(C::PayGPrice)?;
        let currency = s(C::Currency).unwrap_or_default().to_ascii_uppercase();
        if !is_iso4217(&currency) {
            return Err(fail(format!("{} '{currency}' is not an ISO 4217 currency code", self.name(C::Currency))));
        }
        let charge_type = s(C::ChargeType).unwrap_or_else(|| "Usage".into());
        let pricing = s(C::PricingModel).unwrap_or_default();
        let (category, class) = match charge_type.to_ascii_lowercase().as_str() {
            "usage" | "unusedreservation" | "unusedsavingsplan" => (ChargeCategory::Usage, None),
            "purchase" => (ChargeCategory::Purchase, None),
            "refund" => (ChargeCategory::Credit, Some(ChargeClass::Correction)),
            "tax" => (ChargeCategory::Tax, None),
            "credit" => (ChargeCategory::Credit, None),
            _ => (ChargeCategory::Adjustment, None),
        };
        let commitment_row = matches!(pricing.to_ascii_lowercase().as_str(), "reservation" | "savingsplan")
            || charge_type.to_ascii_lowercase().starts_with("unused");
        let billed = if A && commitment_row && category == ChargeCategory::Usage { Decimal::ZERO } else { cost };
        // A commitment purchase covers future usage: its own EffectiveCost is 0 (FOCUS); the
        // AmortizedCost export spreads it over the usage it covers.
        let effective = if commitment_row && category == ChargeCategory::Purchase { Decimal::ZERO } else { cost };
        let tags = match self.get(rec, C::Tags) {
            None => BTreeMap::new(),
            Some(t) => parse_tags(t).map_err(fail)?,
        };
        let list = match (payg, quantity) {
            (Some(p), Some(q)) => costledger_core::exact_product(p, q),
            _ => None,
        };
        let marketplace = s(C::PublisherType).is_some_and(|p| p.eq_ignore_ascii_case("marketplace"));
        let mut x_extra = BTreeMap::new();
        x_extra.insert("azure_cost_type".to_string(), if A { "AmortizedCost" } else { "ActualCost" }.to_string());
        for (c, key) in [
            (C::ChargeType, "azure_ChargeType"),
            (C::PricingModel, "azure_PricingModel"),
            (C::ResourceGroup, "azure_ResourceGroup"),
            (C::ConsumedService, "azure_ConsumedService"),
            (C::ServiceFamily, "azure_ServiceFamily"),
            (C::MeterId, "azure_MeterId"),
        ] {
            if c == C::MeterId && category != ChargeCategory::Tax {
                continue;
            }
            if let Some(v) = s(c) {
                x_extra.insert(key.to_string(), v);
            }
        }
        let subscription = s(C::Subscription);
        let meter_category = s(C::MeterCategory);
        let (service_category, service_subcategory) = crate::focus_tables::service_category(meter_category.as_deref());
        let unit = s(C::Unit).map(|u| crate::focus_tables::focus_unit(&u));
        let unit_price = amt(C::UnitPrice)?;
        // Cost at the agreement's prices before commitment benefits: UnitPrice × Quantity
        // (null when a Decimal cannot hold the product exactly); without a unit price, the cost
        // itself on a row no commitment covers, and unknown (null) on one it does.
        let contracted = match (unit_price, quantity) {
            (Some(p), Some(q)) => costledger_core::exact_product(p, q),
            _ if !commitment_row => Some(cost),
            _ => None,
        };
        let mut focus =
            focus_columns(&charge_type, &pricing, s(C::Frequency).as_deref(), s(C::ReservationId).is_some());
        focus.commitment_discount_name = s(C::ReservationName).filter(|_| s(C::ReservationId).is_some());
        focus.availability_zone = s(C::AvailabilityZone);
        focus.region_name = s(C::Location).as_deref().and_then(crate::focus_tables::region_name).map(str::to_string);
        focus.service_subcategory = Some(service_subcategory.to_string());
        focus.sku_meter = s(C::MeterName);
        focus.resource_type = s(C::ResourceId).as_deref().and_then(crate::focus_tables::resource_type);
        // A VM in an on-demand capacity reservation names it in AdditionalInfo; the
        // reservation's own (unused) capacity is billed to the reservation resource.
        if category == ChargeCategory::Usage
            && let Some(info) = self.get(rec, C::AdditionalInfo)
        {
            let id =
                capacity_reservation_id(info).map_err(|e| fail(format!("{}: {e}", self.name(C::AdditionalInfo))))?;
            if let Some(id) = id {
                focus.capacity_reservation_status =
                    Some(capacity_reservation_status(s(C::ResourceId).as_deref()).to_string());
                focus.capacity_reservation_id = Some(id);
            }
        }
        focus.contracted_unit_price = unit_price;
        focus.list_unit_price = payg;
        // EA prices are in the billing currency; an MCA export names its pricing currency, and
        // when that differs the pricing currency's amounts are not in the row.
        if s(C::PricingCurrency).is_none_or(|p| p.eq_ignore_ascii_case(&currency)) {
            focus.pricing_currency = Some(currency.clone());
            focus.pricing_currency_effective_cost = Some(effective);
            focus.pricing_currency_contracted_unit_price = unit_price;
            focus.pricing_currency_list_unit_price = payg;
        }
        let line = ChargeLine {
            billing_account_id: s(C::BillingAccount).or_else(|| subscription.clone()).unwrap_or_default(),
            billing_account_name: s(C::BillingAccountName),
            sub_account_id: subscription,
            sub_account_name: s(C::SubscriptionName),
            billing_period_start: bp_start,
            billing_period_end: bp_end,
            charge_period_start: day,
            charge_period_end: day + Duration::days(1),
            charge_category: category,
            charge_class: class,
            charge_description: s(C::Product),
            service_name: meter_category.or_else(|| s(C::ServiceName)).or_else(|| s(C::ConsumedService)),
            service_category: Some(service_category.to_string()),
            provider_name: Some("Microsoft".into()),
            publisher_name: Some(if marketplace {
                s(C::PublisherName).unwrap_or_else(|| "Marketplace".into())
            } else {
                "Microsoft".into()
            }),
            invoice_issuer_name: Some("Microsoft".into()),
            region_id: s(C::Location),
            resource_id: s(C::ResourceId),
            resource_name: s(C::ResourceName),
            // FOCUS: a tax line has no SkuId (kept in x_extra when the export names a meter).
            sku_id: s(C::MeterId).filter(|_| category != ChargeCategory::Tax),
            billed_cost: billed,
            effective_cost: Some(effective),
            list_cost: list,
            contracted_cost: contracted,
            billing_currency: currency,
            pricing_quantity: quantity,
            pricing_unit: unit.clone(),
            consumed_quantity: quantity.filter(|_| category == ChargeCategory::Usage),
            consumed_unit: unit.filter(|_| category == ChargeCategory::Usage && quantity.is_some()),
            commitment_discount_id: s(C::ReservationId),
            invoice_id: s(C::InvoiceId),
            tags,
            focus: focus.boxed(),
            x_extra,
            source_ref: Some(location.to_string()),
        };
        Ok((line, rounded))
    }
}

/// The FOCUS columns an Azure charge type, pricing model and `Frequency` decide (pure):
/// - ChargeFrequency: the export's `Frequency` (`UsageBased`, `OneTime`, `Recurring`) in FOCUS
///   spelling; without it, usage types → Usage-Based, others → One-Time.
/// - PricingCategory (usage only): OnDemand → Standard, Spot → Dynamic, Reservation and
///   SavingsPlan → Committed.
/// - Commitment columns on rows of a reservation or savings plan: Category Usage / Spend, Type
///   Reservation / Savings Plan; Status Used on covered usage, Unused on `Unused…` rows.
pub fn focus_columns(
    charge_type: &str,
    pricing_model: &str,
    frequency: Option<&str>,
    has_benefit_id: bool,
) -> costledger_core::FocusColumns {
    let ct = charge_type.to_ascii_lowercase();
    let pm = pricing_model.to_ascii_lowercase();
    let usage = matches!(ct.as_str(), "usage" | "unusedreservation" | "unusedsavingsplan");
    let frequency = match frequency.map(str::to_ascii_lowercase).as_deref() {
        Some("usagebased") => "Usage-Based",
        Some("recurring") => "Recurring",
        Some("onetime") => "One-Time",
        _ if usage => "Usage-Based",
        _ => "One-Time",
    };
    let mut f = costledger_core::FocusColumns { charge_frequency: Some(frequency.to_string()), ..Default::default() };
    if usage {
        f.pricing_category = match pm.as_str() {
            "ondemand" => Some("Standard"),
            "spot" => Some("Dynamic"),
            "reservation" | "savingsplan" => Some("Committed"),
            _ => None,
        }
        .map(str::to_string);
    }
    let (category, kind) = match pm.as_str() {
        "reservation" => (Some("Usage"), Some("Reservation")),
        "savingsplan" => (Some("Spend"), Some("Savings Plan")),
        _ if ct == "unusedreservation" => (Some("Usage"), Some("Reservation")),
        _ if ct == "unusedsavingsplan" => (Some("Spend"), Some("Savings Plan")),
        _ => (None, None),
    };
    if category.is_some() && (has_benefit_id || ct.starts_with("unused")) {
        f.commitment_discount_category = category.map(str::to_string);
        f.commitment_discount_type = kind.map(str::to_string);
        if usage {
            f.commitment_discount_status = Some(if ct.starts_with("unused") { "Unused" } else { "Used" }.to_string());
        }
    }
    f
}

/// An Azure export file: FOCUS columns (a `FocusCost` export) go to the FOCUS normaliser,
/// anything else to [`AzureColumns`].
#[derive(Debug, Clone)]
pub enum AzureAuto<const AMORTIZED: bool> {
    Cost(AzureColumns<AMORTIZED>),
    Focus(ColumnMap),
}

impl<const A: bool> RecordFormat for AzureAuto<A> {
    const HEADER_HINT: &'static str = AzureColumns::<A>::HEADER_HINT;

    fn from_header(header: &csv::ByteRecord) -> Result<Self, String> {
        let names = header_names(header)?;
        let focus = ["billedcost", "chargeperiodstart"].iter().all(|c| names.iter().any(|n| n.eq_ignore_ascii_case(c)));
        if focus {
            ColumnMap::from_header(header).map(AzureAuto::Focus)
        } else {
            AzureColumns::from_header(header).map(AzureAuto::Cost)
        }
    }

    fn width(&self) -> usize {
        match self {
            AzureAuto::Cost(c) => c.width(),
            AzureAuto::Focus(f) => RecordFormat::width(f),
        }
    }

    fn column_name(&self, i: usize) -> &str {
        match self {
            AzureAuto::Cost(c) => c.column_name(i),
            AzureAuto::Focus(f) => RecordFormat::column_name(f, i),
        }
    }

    fn raw_amount(&self, rec: &csv::ByteRecord) -> Option<String> {
        match self {
            AzureAuto::Cost(c) => c.raw_amount(rec),
            AzureAuto::Focus(f) => RecordFormat::raw_amount(f, rec),
        }
    }

    fn raw_currency(&self, rec: &csv::ByteRecord) -> Option<String> {
        match self {
            AzureAuto::Cost(c) => c.raw_currency(rec),
            AzureAuto::Focus(f) => RecordFormat::raw_currency(f, rec),
        }
    }

    fn normalize(&self, rec: &csv::ByteRecord, location: &str) -> Result<(ChargeLine, u64), RowError> {
        match self {
            AzureAuto::Cost(c) => c.normalize(rec, location),
            AzureAuto::Focus(f) => RecordFormat::normalize(f, rec, location),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_in_every_shape() {
        let d = |s: &str| parse_date(s).map(|d| d.format("%Y-%m-%d").to_string());
        assert_eq!(d("9/2/2023").as_deref(), Some("2023-09-02"));
        assert_eq!(d("09/01/2023").as_deref(), Some("2023-09-01"));
        assert_eq!(d("2019-07-29 00:00:00").as_deref(), Some("2019-07-29"));
        assert_eq!(d("2019-07-29").as_deref(), Some("2019-07-29"));
        assert_eq!(d("2024-03-01T00:00:00.0000000Z").as_deref(), Some("2024-03-01"));
        assert_eq!(d("13/45/2023"), None);
        assert_eq!(d("yesterday"), None);
    }

    #[test]
    fn capacity_reservations_from_additional_info() {
        use super::{capacity_reservation_id, capacity_reservation_status};
        let vm = r#"{"UsageType":"ComputeHR","VCPUs":2,"VMCapacityReservationId":"/subscriptions/s/resourceGroups/rg/providers/Microsoft.Compute/capacityReservationGroups/g/capacityReservations/cr1"}"#;
        let id = capacity_reservation_id(vm).expect("parsed");
        assert_eq!(
            id.as_deref(),
            Some(
                "/subscriptions/s/resourceGroups/rg/providers/Microsoft.Compute/capacityReservationGroups/g/capacityReservations/cr1"
            )
        );
        assert_eq!(capacity_reservation_id(r#""VMCapacityReservationId": "cr2","VCPUs": 4"#), Ok(Some("cr2".into())));
        assert_eq!(capacity_reservation_id(r#"{"UsageType":"ComputeHR","VCPUs":2}"#), Ok(None));
        assert_eq!(capacity_reservation_id(r#"{"VMCapacityReservationId":""}"#), Ok(None));
        let e = capacity_reservation_id("VMCapacityReservationId=cr3").expect_err("not JSON");
        assert!(e.contains("not a JSON object") && e.contains("VMCapacityReservationId"), "{e}");
        assert_eq!(
            capacity_reservation_status(Some(
                "/subscriptions/s/resourceGroups/RG/providers/Microsoft.Compute/capacityReservationGroups/g/capacityReservations/cr1"
            )),
            "Unused"
        );
        assert_eq!(
            capacity_reservation_status(Some(
                "/subscriptions/s/resourceGroups/rg/providers/Microsoft.Compute/virtualMachines/vm1"
            )),
            "Used"
        );
        assert_eq!(capacity_reservation_status(None), "Used");
    }

    /// FOCUS: a tax line has no SkuId; a meter the export names on it stays in x_extra.
    #[test]
    fn a_tax_line_has_no_sku_id() {
        use costledger_files::reader::RecordFormat;
        let text = "Date,CostInBillingCurrency,BillingCurrencyCode,SubscriptionId,MeterId,ChargeType\n\
                    2026-10-01,1.50,USD,sub-1,meter-9,Tax\n\
                    2026-10-01,2.50,USD,sub-1,meter-9,Usage\n";
        let mut r = csv::ReaderBuilder::new().has_headers(false).from_reader(text.as_bytes());
        let mut recs = r.byte_records().map(|r| r.expect("record"));
        let cols = super::ActualColumns::from_header(&recs.next().expect("header")).expect("header");
        let (tax, _) = cols.normalize(&recs.next().expect("tax"), "a.csv:2").expect("tax line");
        assert_eq!((tax.charge_category, tax.sku_id.as_deref()), (costledger_core::ChargeCategory::Tax, None));
        assert_eq!(tax.x_extra.get("azure_MeterId").map(String::as_str), Some("meter-9"));
        let (usage, _) = cols.normalize(&recs.next().expect("usage"), "a.csv:3").expect("usage line");
        assert_eq!(usage.sku_id.as_deref(), Some("meter-9"));
        assert!(!usage.x_extra.contains_key("azure_MeterId"));
    }

    #[test]
    fn tags_json_and_braceless() {
        let t = parse_tags(r#""tagA": "valueA","tagB": "val,""ue""#);
        assert!(t.is_err(), "a broken brace-less list is an error, not a guess");
        let t = parse_tags(r#""tagA": "valueA","tagB": "a\",\"b""#).expect("brace-less");
        assert_eq!(t.get("tagA").map(String::as_str), Some("valueA"));
        assert_eq!(t.get("tagB").map(String::as_str), Some("a\",\"b"), "a value containing \",\" survives");
        let t = parse_tags(r#"{"project":"p1","n":3}"#).expect("json");
        assert_eq!(t.get("n").map(String::as_str), Some("3"));
        assert!(parse_tags("").expect("empty").is_empty());
    }
}
