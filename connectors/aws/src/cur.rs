//! AWS Cost and Usage Report rows → ledger lines (pure). Legacy CUR (`lineItem/UnblendedCost`,
//! dynamic columns) and CUR 2.0 (`line_item_unblended_cost`, map columns as JSON text) are read
//! by header name, case-insensitively; CUR 2.0 names are translated to the legacy ones.
//!
//! BilledCost = `lineItem/UnblendedCost` (its sum over a month is the invoice). EffectiveCost is
//! the amortised cost (AWS's amortisation guidance): `reservation/EffectiveCost` for
//! DiscountedUsage, `savingsPlan/SavingsPlanEffectiveCost` for SavingsPlanCoveredUsage, 0 for
//! SavingsPlanNegation, SavingsPlanUpfrontFee and RI upfront Fees (their cost is spread over the
//! covered usage), the unused part for RIFee (`reservation/UnusedAmortizedUpfrontFeeForBillingPeriod`
//! plus `reservation/UnusedRecurringFee`) and SavingsPlanRecurringFee
//! (`savingsPlan/TotalCommitmentToDate` − `savingsPlan/UsedCommitment`), else UnblendedCost.
//! ChargeCategory: Usage, DiscountedUsage, SavingsPlanCoveredUsage, SavingsPlanNegation → Usage;
//! Tax → Tax; Credit and the discount types → Credit; Refund → Credit with ChargeClass
//! Correction; Fee, RIFee, SavingsPlanUpfrontFee, SavingsPlanRecurringFee → Purchase; any other
//! type → Adjustment (kept, never dropped).
//!
//! ContractedCost = UnblendedCost (private pricing is already in the unblended rate), except on
//! a SavingsPlanNegation line, whose ContractedCost and ListCost are 0 (it only cancels the
//! billed on-demand cost of covered usage whose list and contracted cost are on the covered
//! line: counting them again would halve a plan's coverage), and on usage a reservation
//! covered (DiscountedUsage, billed 0), whose ContractedCost is its on-demand cost
//! (`pricing/publicOnDemandCost`): the cost before commitment discounts. FOCUS
//! columns beyond the core: ChargeFrequency, PricingCategory and the commitment columns from the
//! line type ([`focus_columns`]); ServiceCategory/Subcategory from the product code and
//! RegionName from the region code where `product/location` is absent
//! ([`crate::focus_tables`]); PricingUnit in FOCUS unit format; SkuMeter = `lineItem/UsageType`;
//! ListUnitPrice = `pricing/publicOnDemandRate`; AvailabilityZone; ResourceType from the resource
//! id ([`crate::focus_tables::resource_type`]); CommitmentDiscountQuantity/Unit
//! ([`commitment_quantity`]); ContractedUnitPrice where the rate prices the line exactly
//! ([`costledger_core::exact_unit_price`]); on a USD bill the pricing
//! currency's amounts (AWS prices in USD). A tax line has no PricingQuantity or PricingUnit.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use costledger_core::currency::is_iso4217;
use costledger_core::text::clip;
use costledger_core::{ChargeCategory, ChargeClass, ChargeLine, RowError, parse_amount, parse_timestamp};
use costledger_files::reader::RecordFormat;
use costledger_files::record::first_non_utf8_field;
use rust_decimal::Decimal;

/// The legacy columns the ledger reads.
const COLS: [&str; 53] = [
    "identity/LineItemId",
    "bill/InvoiceId",
    "bill/InvoicingEntity",
    "bill/BillingEntity",
    "bill/BillType",
    "bill/PayerAccountId",
    "bill/PayerAccountName",
    "bill/BillingPeriodStartDate",
    "bill/BillingPeriodEndDate",
    "lineItem/UsageAccountId",
    "lineItem/UsageAccountName",
    "lineItem/LineItemType",
    "lineItem/UsageStartDate",
    "lineItem/UsageEndDate",
    "lineItem/ProductCode",
    "lineItem/UsageType",
    "lineItem/Operation",
    "lineItem/ResourceId",
    "lineItem/UsageAmount",
    "lineItem/CurrencyCode",
    "lineItem/UnblendedCost",
    "lineItem/LineItemDescription",
    "product/ProductName",
    "product/region",
    "product/regionCode",
    "product/sku",
    "pricing/publicOnDemandCost",
    "pricing/unit",
    "reservation/EffectiveCost",
    "reservation/UnusedAmortizedUpfrontFeeForBillingPeriod",
    "reservation/UnusedRecurringFee",
    "reservation/ReservationARN",
    "savingsPlan/SavingsPlanEffectiveCost",
    "savingsPlan/TotalCommitmentToDate",
    "savingsPlan/UsedCommitment",
    "savingsPlan/SavingsPlanARN",
    "product/productFamily",
    "pricing/term",
    "pricing/publicOnDemandRate",
    "lineItem/AvailabilityZone",
    "product/location",
    "pricing/RateCode",
    "reservation/NumberOfReservations",
    "reservation/StartTime",
    "reservation/EndTime",
    "reservation/UnusedQuantity",
    "lineItem/UnblendedRate",
    "product/instanceType",
    "product/vcpu",
    "product/memory",
    "product/operatingSystem",
    "product/gpu",
    "product/storageClass",
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum C {
    LineItemId,
    InvoiceId,
    InvoicingEntity,
    BillingEntity,
    BillType,
    Payer,
    PayerName,
    BpStart,
    BpEnd,
    Account,
    AccountName,
    Type,
    Start,
    End,
    ProductCode,
    UsageType,
    Operation,
    ResourceId,
    UsageAmount,
    Currency,
    Unblended,
    Description,
    ProductName,
    Region,
    RegionCode,
    Sku,
    PublicCost,
    PricingUnit,
    RiEffective,
    RiUnusedUpfront,
    RiUnusedRecurring,
    RiArn,
    SpEffective,
    SpCommitment,
    SpUsed,
    SpArn,
    ProductFamily,
    PricingTerm,
    PublicRate,
    AvailabilityZone,
    Location,
    RateCode,
    RiCount,
    RiStart,
    RiEnd,
    RiUnusedQuantity,
    UnblendedRate,
    InstanceType,
    Vcpu,
    Memory,
    OperatingSystem,
    Gpu,
    StorageClass,
}

const REQUIRED: [C; 7] = [C::Payer, C::BpStart, C::BpEnd, C::Type, C::Start, C::Currency, C::Unblended];

/// `lineItem/UnblendedCost` → `line_item_unblended_cost` (CUR 2.0 naming; `ARN` → `a_r_n`).
pub fn snake(legacy: &str) -> String {
    let mut out = String::new();
    for (i, ch) in legacy.replace('/', "_").chars().enumerate() {
        if ch.is_ascii_uppercase() {
            if i > 0 && !out.ends_with('_') {
                out.push('_');
            }
            out.push(ch.to_ascii_lowercase());
        } else {
            out.push(ch);
        }
    }
    out
}

#[derive(Debug, Clone)]
pub struct CurColumns {
    names: Vec<String>,
    idx: [Option<usize>; COLS.len()],
    /// (column, tag key)
    tags: Vec<(usize, String)>,
    /// CUR 2.0 `resource_tags` map column (JSON text).
    tag_map: Option<usize>,
    /// CUR 2.0 `product` map column (JSON text): the product attributes without a column of
    /// their own (`vcpu`, `memory`, `operating_system`, …).
    product_map: Option<usize>,
    /// SkuPriceDetails already worked out, by the exact text they come from (the `product` map
    /// and the attribute columns): a CUR 2.0 map, the same on every line of a SKU, is parsed
    /// once per distinct text, not once per line. A map that does not parse is never cached,
    /// so every line carrying it fails alike. Bounded: cleared past [`MAX_CACHED_PRODUCTS`].
    details_by_text: std::cell::RefCell<rustc_hash::FxHashMap<Box<str>, Option<String>>>,
}

/// Distinct product texts whose SkuPriceDetails a reader keeps (a month's CUR has a few
/// thousand SKUs).
const MAX_CACHED_PRODUCTS: usize = 20_000;

impl CurColumns {
    /// The product attribute columns SkuPriceDetails reads.
    const ATTRS: [C; 6] = [C::InstanceType, C::Vcpu, C::Memory, C::OperatingSystem, C::Gpu, C::StorageClass];

    /// The product attributes that describe a SKU price: the legacy CUR's columns, else CUR
    /// 2.0's `product_instance_type` column and its `product` map.
    fn product_attributes(&self, rec: &csv::ByteRecord) -> Result<ProductAttributes, serde_json::Error> {
        if self.product_map.is_none() && Self::ATTRS.iter().all(|c| self.idx[*c as usize].is_none()) {
            return Ok(ProductAttributes::default());
        }
        let mut p = match self.product_map.and_then(|i| rec.get(i)).and_then(|v| std::str::from_utf8(v).ok()) {
            Some(text) if !text.trim().is_empty() => serde_json::from_str::<ProductMap>(text)?.attributes(),
            _ => ProductAttributes::default(),
        };
        let col = |c: C| self.get(rec, c).map(str::to_string);
        p.instance_type = col(C::InstanceType).or(p.instance_type);
        p.vcpu = col(C::Vcpu).or(p.vcpu);
        p.memory = col(C::Memory).or(p.memory);
        p.operating_system = col(C::OperatingSystem).or(p.operating_system);
        p.gpu = col(C::Gpu).or(p.gpu);
        p.storage_class = col(C::StorageClass).or(p.storage_class);
        Ok(p)
    }

    /// [`sku_price_details`] of a line's product, through [`Self::details_by_text`] when the
    /// file has a `product` map (a legacy CUR's few columns are cheaper to read than to look up).
    fn cached_sku_price_details(&self, rec: &csv::ByteRecord) -> Result<Option<String>, serde_json::Error> {
        let Some(map) = self.product_map else { return Ok(sku_price_details(&self.product_attributes(rec)?)) };
        let mut key = Vec::with_capacity(rec.get(map).map_or(0, <[u8]>::len) + 64);
        for i in std::iter::once(Some(map)).chain(Self::ATTRS.iter().map(|c| self.idx[*c as usize])) {
            key.extend_from_slice(i.and_then(|i| rec.get(i)).unwrap_or_default());
            key.push(0x1f);
        }
        let key = String::from_utf8_lossy(&key);
        if let Some(d) = self.details_by_text.borrow().get(key.as_ref()) {
            return Ok(d.clone());
        }
        let d = sku_price_details(&self.product_attributes(rec)?);
        let mut cache = self.details_by_text.borrow_mut();
        if cache.len() >= MAX_CACHED_PRODUCTS {
            cache.clear();
        }
        cache.insert(key.into(), d.clone());
        Ok(d)
    }

    fn get<'r>(&self, rec: &'r csv::ByteRecord, c: C) -> Option<&'r str> {
        let v = std::str::from_utf8(rec.get(self.idx[c as usize]?)?).ok()?.trim();
        if v.is_empty() { None } else { Some(v) }
    }
}

fn ts(v: &str) -> Option<DateTime<Utc>> {
    parse_timestamp(v).ok()
}

impl RecordFormat for CurColumns {
    const HEADER_HINT: &'static str = "this is not an AWS Cost and Usage Report (legacy CUR or CUR 2.0); for an AWS FOCUS export use --format aws-focus";

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
        let mut idx = [None; COLS.len()];
        let mut tags = Vec::new();
        let mut tag_map = None;
        let mut product_map = None;
        for (i, n) in names.iter().enumerate() {
            let lower = n.to_ascii_lowercase();
            if let Some(k) = COLS.iter().position(|c| c.eq_ignore_ascii_case(n) || snake(c) == lower) {
                if idx[k].is_none() {
                    idx[k] = Some(i);
                }
            } else if lower.starts_with("resourcetags/") {
                tags.push((i, n["resourceTags/".len()..].to_string()));
            } else if lower == "resource_tags" {
                tag_map = Some(i);
            } else if lower == "product" {
                product_map = Some(i);
            }
        }
        let missing: Vec<&str> =
            REQUIRED.iter().filter(|c| idx[**c as usize].is_none()).map(|c| COLS[*c as usize]).collect();
        if !missing.is_empty() {
            return Err(format!("missing required column(s): {}", missing.join(", ")));
        }
        Ok(CurColumns { names, idx, tags, tag_map, product_map, details_by_text: Default::default() })
    }

    fn width(&self) -> usize {
        self.names.len()
    }

    fn column_name(&self, i: usize) -> &str {
        self.names.get(i).map(String::as_str).unwrap_or("?")
    }

    fn raw_amount(&self, rec: &csv::ByteRecord) -> Option<String> {
        self.get(rec, C::Unblended).map(str::to_string)
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
        let time = |c: C| -> Result<DateTime<Utc>, RowError> {
            let v = self.get(rec, c).ok_or_else(|| fail(format!("{} is empty", COLS[c as usize])))?;
            ts(v).ok_or_else(|| fail(format!("{}: '{v}' is not a timestamp", COLS[c as usize])))
        };
        let bp_start = time(C::BpStart)?;
        let bp_end = time(C::BpEnd)?;
        // A CUR billing period is a calendar month (UTC): anything else is a broken row.
        let month = costledger_core::BillingPeriod::of(bp_start);
        if bp_start != month.start() || bp_end != month.end() {
            return Err(fail(format!(
                "bill/BillingPeriodStartDate..EndDate is {}..{}, not a calendar month as the CUR's billing period always is",
                costledger_core::format_ts(bp_start),
                costledger_core::format_ts(bp_end)
            )));
        }
        let start = time(C::Start)?;
        let end = if self.get(rec, C::End).is_some() { time(C::End)? } else { start };
        let mut rounded = 0u64;
        let mut amt = |c: C| -> Result<Option<Decimal>, RowError> {
            match self.get(rec, c) {
                None => Ok(None),
                Some(v) => match parse_amount(v) {
                    Ok(a) => Ok(a.map(|a| {
                        rounded += u64::from(a.rounded);
                        a.value
                    })),
                    Err(e) => Err(fail(format!("{}: {e}", COLS[c as usize]))),
                },
            }
        };
        let cost = amt(C::Unblended)?.ok_or_else(|| fail("lineItem/UnblendedCost is empty".into()))?;
        let kind = s(C::Type).unwrap_or_default();
        let zero = Decimal::ZERO;
        let effective = match kind.as_str() {
            "DiscountedUsage" => amt(C::RiEffective)?.unwrap_or(cost),
            "SavingsPlanCoveredUsage" => amt(C::SpEffective)?.unwrap_or(cost),
            "SavingsPlanNegation" | "SavingsPlanUpfrontFee" => zero,
            "Fee" if s(C::RiArn).is_some() || s(C::BillType).as_deref() == Some("Purchase") => zero,
            "RIFee" => amt(C::RiUnusedUpfront)?.unwrap_or(zero) + amt(C::RiUnusedRecurring)?.unwrap_or(zero),
            "SavingsPlanRecurringFee" => match (amt(C::SpCommitment)?, amt(C::SpUsed)?) {
                (Some(t), Some(u)) => t - u,
                _ => cost,
            },
            _ => cost,
        };
        // A Savings Plan's negation line cancels the billed on-demand cost of the usage the plan
        // covered; that usage's list and contracted cost are on its covered-usage line, so the
        // negation adds none (else coverage and list-cost views would count it away).
        let negation = kind == "SavingsPlanNegation";
        let list = if negation { Some(zero) } else { amt(C::PublicCost)? };
        // Usage a reservation covered is billed 0 (its cost is the RIFee's); before commitment
        // discounts it costs its on-demand price, the only one the CUR gives for it.
        let contracted = match kind.as_str() {
            "SavingsPlanNegation" => zero,
            "DiscountedUsage" => list.unwrap_or(cost),
            _ => cost,
        };
        let quantity = amt(C::UsageAmount)?;
        let (category, class) = match kind.as_str() {
            "Usage" | "DiscountedUsage" | "SavingsPlanCoveredUsage" | "SavingsPlanNegation" => {
                (ChargeCategory::Usage, None)
            }
            "Tax" => (ChargeCategory::Tax, None),
            "Credit" | "BundledDiscount" | "EdpDiscount" | "PrivateRateDiscount" | "DistributorDiscount" => {
                (ChargeCategory::Credit, None)
            }
            "Refund" => (ChargeCategory::Credit, Some(ChargeClass::Correction)),
            "Fee" | "RIFee" | "SavingsPlanUpfrontFee" | "SavingsPlanRecurringFee" => (ChargeCategory::Purchase, None),
            _ => (ChargeCategory::Adjustment, None),
        };
        let currency = s(C::Currency).unwrap_or_default();
        if !is_iso4217(&currency) {
            return Err(fail(format!("lineItem/CurrencyCode '{currency}' is not an ISO 4217 currency code")));
        }
        let mut tags = BTreeMap::new();
        for (i, key) in &self.tags {
            let v = rec.get(*i).and_then(|v| std::str::from_utf8(v).ok()).map(str::trim).unwrap_or("");
            if !v.is_empty() {
                let k = key.strip_prefix("user:").unwrap_or(key);
                tags.insert(k.to_string(), v.to_string());
            }
        }
        if let Some(i) = self.tag_map {
            let text = rec.get(i).and_then(|v| std::str::from_utf8(v).ok()).unwrap_or("").trim();
            if !text.is_empty() {
                let m: BTreeMap<String, Option<String>> =
                    serde_json::from_str(text).map_err(|e| fail(format!("resource_tags is not a JSON object: {e}")))?;
                for (k, v) in m {
                    if let Some(v) = v.filter(|v| !v.is_empty()) {
                        let key = k
                            .strip_prefix("user_")
                            .map(str::to_string)
                            .unwrap_or_else(|| k.strip_prefix("aws_").map(|r| format!("aws:{r}")).unwrap_or(k.clone()));
                        tags.insert(key, v);
                    }
                }
            }
        }
        let mut x_extra = BTreeMap::new();
        for (c, key) in [
            (C::Type, "aws_LineItemType"),
            (C::UsageType, "aws_UsageType"),
            (C::Operation, "aws_Operation"),
            (C::BillType, "aws_BillType"),
            (C::ProductCode, "aws_ProductCode"),
            (C::LineItemId, "aws_LineItemId"),
            (C::ProductFamily, "aws_ProductFamily"),
            (C::RiUnusedQuantity, costledger_core::line::X_UNUSED_COMMITMENT_QUANTITY),
        ] {
            if let Some(v) = s(c) {
                x_extra.insert(key.to_string(), v);
            }
        }
        if category == ChargeCategory::Tax
            && let Some(sku) = s(C::Sku)
        {
            x_extra.insert("aws_ProductSku".to_string(), sku);
        }
        let marketplace = s(C::BillingEntity).is_some_and(|e| e.contains("Marketplace"));
        let mut focus = focus_columns(
            &kind,
            s(C::PricingTerm).as_deref(),
            s(C::UsageType).as_deref(),
            s(C::RiArn).is_some(),
            s(C::SpArn).is_some(),
        );
        if category == ChargeCategory::Usage || category == ChargeCategory::Purchase {
            let term_hours = match (self.get(rec, C::RiStart).and_then(ts), self.get(rec, C::RiEnd).and_then(ts)) {
                // Whole hours only: a term that is not cannot be given exactly in hours.
                (Some(a), Some(b)) if b > a && (b - a).num_seconds() % 3600 == 0 => {
                    Some(Decimal::from((b - a).num_seconds() / 3600))
                }
                _ => None,
            };
            let held = CommitmentAmounts {
                usage_amount: quantity,
                cost,
                sp_effective: amt(C::SpEffective)?,
                sp_commitment: amt(C::SpCommitment)?,
                reservations: amt(C::RiCount)?,
                term_hours,
            };
            let (q, unit) = commitment_quantity(&kind, s(C::RiArn).is_some(), s(C::SpArn).is_some(), &held, &currency);
            focus.commitment_discount_quantity = q;
            focus.commitment_discount_unit = unit;
        }
        focus.availability_zone = s(C::AvailabilityZone);
        focus.resource_type = self
            .get(rec, C::ResourceId)
            .and_then(|id| crate::focus_tables::resource_type(id, self.get(rec, C::ProductCode)));
        let region_id = s(C::RegionCode).or_else(|| s(C::Region));
        // The price list's name when the line has one, else AWS's name for the code.
        focus.region_name = s(C::Location)
            .filter(|l| region_id.is_some() && l != "Any")
            .or_else(|| region_id.as_deref().and_then(crate::focus_tables::region_name).map(str::to_string));
        focus.list_unit_price = amt(C::PublicRate)?;
        // The negotiated unit price of usage and purchases: the rate the line was billed at (for
        // covered usage, billed 0, the on-demand rate its ContractedCost was priced at), only
        // where rate × quantity is exactly the ContractedCost — a CUR's rate can average tiers.
        if matches!(category, ChargeCategory::Usage | ChargeCategory::Purchase) && !negation {
            let rate = if kind == "DiscountedUsage" { focus.list_unit_price } else { amt(C::UnblendedRate)? };
            focus.contracted_unit_price = costledger_core::exact_unit_price(rate, quantity, contracted);
        }
        let (service_category, service_subcategory) =
            crate::focus_tables::service_category(s(C::ProductCode).as_deref());
        focus.service_subcategory = Some(service_subcategory.to_string());
        // FOCUS: a tax line has no pricing quantity (nor unit).
        let (quantity, pricing_unit) = if category == ChargeCategory::Tax {
            (None, None)
        } else {
            (quantity, s(C::PricingUnit).map(|u| crate::focus_tables::focus_unit(&u)))
        };
        // The usage type is the meter that measured the line (`USW2-TimedStorage-ByteHrs`).
        focus.sku_meter = s(C::UsageType);
        // The rate code (`SKU.OfferTermCode.RateCode`) names the SKU's price the line was billed
        // at: its SkuPriceId (FOCUS: null on tax).
        focus.sku_price_id = s(C::RateCode).filter(|_| category != ChargeCategory::Tax);
        // The product's attributes describe that price (FOCUS: only beside a SkuPriceId).
        if focus.sku_price_id.is_some() {
            focus.sku_price_details =
                self.cached_sku_price_details(rec).map_err(|e| fail(format!("product is not a JSON object: {e}")))?;
        }
        // AWS's public prices are in USD: on a bill in USD the pricing currency's amounts are
        // the billing currency's. On a bill in another currency they are not known here.
        if currency == "USD" {
            focus.pricing_currency = Some(currency.clone());
            focus.pricing_currency_effective_cost = Some(effective);
            focus.pricing_currency_list_unit_price = focus.list_unit_price;
            focus.pricing_currency_contracted_unit_price = focus.contracted_unit_price;
        }
        let line = ChargeLine {
            billing_account_id: s(C::Payer).unwrap_or_default(),
            billing_account_name: s(C::PayerName),
            sub_account_id: s(C::Account),
            sub_account_name: s(C::AccountName),
            billing_period_start: bp_start,
            billing_period_end: bp_end,
            charge_period_start: start,
            charge_period_end: end,
            charge_category: category,
            charge_class: class,
            charge_description: s(C::Description),
            service_name: s(C::ProductName).or_else(|| s(C::ProductCode)),
            service_category: Some(service_category.to_string()),
            provider_name: Some("AWS".into()),
            publisher_name: Some(if marketplace {
                "AWS Marketplace".into()
            } else {
                "Amazon Web Services, Inc.".into()
            }),
            invoice_issuer_name: s(C::InvoicingEntity).or_else(|| Some("Amazon Web Services, Inc.".into())),
            region_id,
            resource_id: s(C::ResourceId),
            resource_name: None,
            // FOCUS: a tax line has no SkuId (a CUR may name one; it is kept in x_extra).
            sku_id: s(C::Sku).filter(|_| category != ChargeCategory::Tax),
            billed_cost: cost,
            effective_cost: Some(effective),
            list_cost: list,
            // The CUR has no separate negotiated-rate cost: private and enterprise pricing is
            // already in the unblended rate, so the contracted cost is the unblended cost.
            contracted_cost: Some(contracted),
            billing_currency: currency,
            pricing_quantity: quantity,
            pricing_unit,
            consumed_quantity: None,
            consumed_unit: None,
            commitment_discount_id: s(C::RiArn).or_else(|| s(C::SpArn)),
            invoice_id: s(C::InvoiceId),
            tags,
            focus: focus.boxed(),
            x_extra,
            source_ref: Some(location.to_string()),
        };
        Ok((line, rounded))
    }
}

/// The product attributes of a CUR line that FOCUS defines SKU price properties for, as the
/// bill's text.
#[derive(Debug, Default)]
pub struct ProductAttributes {
    pub instance_type: Option<String>,
    pub vcpu: Option<String>,
    pub memory: Option<String>,
    pub operating_system: Option<String>,
    pub gpu: Option<String>,
    pub storage_class: Option<String>,
}

/// A CUR 2.0 `product` map's keys that FOCUS defines properties for (snake case, or as the
/// legacy columns spell them; other keys ignored). Values are kept as their JSON text, so a
/// number is never read through a float.
#[derive(Debug, Default, serde::Deserialize)]
struct ProductMap {
    #[serde(default, alias = "instanceType")]
    instance_type: Option<Box<serde_json::value::RawValue>>,
    #[serde(default)]
    vcpu: Option<Box<serde_json::value::RawValue>>,
    #[serde(default)]
    memory: Option<Box<serde_json::value::RawValue>>,
    #[serde(default, alias = "operatingSystem")]
    operating_system: Option<Box<serde_json::value::RawValue>>,
    #[serde(default)]
    gpu: Option<Box<serde_json::value::RawValue>>,
    #[serde(default, alias = "storageClass")]
    storage_class: Option<Box<serde_json::value::RawValue>>,
}

impl ProductMap {
    /// A value's text: a JSON string unquoted, a number as written, `null` absent.
    fn text(v: &Option<Box<serde_json::value::RawValue>>) -> Option<String> {
        let raw = v.as_deref()?.get().trim();
        match raw.as_bytes().first() {
            Some(b'"') => serde_json::from_str::<String>(raw).ok(),
            Some(b'n') | None => None,
            Some(_) => Some(raw.to_string()),
        }
    }

    fn attributes(&self) -> ProductAttributes {
        ProductAttributes {
            instance_type: Self::text(&self.instance_type),
            vcpu: Self::text(&self.vcpu),
            memory: Self::text(&self.memory),
            operating_system: Self::text(&self.operating_system),
            gpu: Self::text(&self.gpu),
            storage_class: Self::text(&self.storage_class),
        }
    }
}

/// SkuPriceDetails from the product's attributes (pure): InstanceType and InstanceSeries (the
/// family part of `m5.large`, `db.r6g.xlarge` → `r6g`), CoreCount (`vcpu`), MemorySize (`8 GiB`
/// → 8), GpuCount, OperatingSystem, StorageClass. `None` when the product states none of them.
pub fn sku_price_details(p: &ProductAttributes) -> Option<String> {
    use costledger_core::SkuPriceProperty as P;
    let mut d = costledger_core::SkuPriceDetails::new();
    let instance_type = p.instance_type.as_deref();
    d.set(P::InstanceType, instance_type, None);
    // `m5.large` → `m5`; RDS, ElastiCache and SageMaker prefix it (`db.`, `cache.`, `ml.`).
    let series = instance_type.and_then(|t| {
        let parts: Vec<&str> = t.split('.').collect();
        (parts.len() >= 2).then(|| parts[parts.len() - 2].to_string())
    });
    d.set(P::InstanceSeries, series.as_deref(), None);
    d.set(P::CoreCount, p.vcpu.as_deref(), None);
    d.set(P::MemorySize, p.memory.as_deref(), Some("GiB"));
    d.set(P::GpuCount, p.gpu.as_deref(), None);
    d.set(P::OperatingSystem, p.operating_system.as_deref(), None);
    d.set(P::StorageClass, p.storage_class.as_deref(), None);
    d.to_json()
}

/// What a CUR line says about the commitment it belongs to (the amounts of its row).
#[derive(Debug, Clone, Default)]
pub struct CommitmentAmounts {
    /// `lineItem/UsageAmount`.
    pub usage_amount: Option<Decimal>,
    /// `lineItem/UnblendedCost`.
    pub cost: Decimal,
    /// `savingsPlan/SavingsPlanEffectiveCost`.
    pub sp_effective: Option<Decimal>,
    /// `savingsPlan/TotalCommitmentToDate`.
    pub sp_commitment: Option<Decimal>,
    /// `reservation/NumberOfReservations`.
    pub reservations: Option<Decimal>,
    /// Hours from `reservation/StartTime` to `reservation/EndTime` (the term).
    pub term_hours: Option<Decimal>,
}

/// CommitmentDiscountQuantity and CommitmentDiscountUnit of a usage or purchase line of a
/// reservation or Savings Plan (pure; `None` for every other line).
///
/// A reservation is measured in hours of the reserved instance (`Hours`; size flexibility is
/// not normalised): the hours its covered usage consumed (`DiscountedUsage`: UsageAmount), the
/// hours its monthly fee makes available (`RIFee`: UsageAmount) and, on its upfront fee, the
/// hours of the whole term for every reservation bought (NumberOfReservations × term hours).
/// A Savings Plan is a commitment to spend, measured in the bill's currency (`USD`): the
/// commitment its covered usage consumed (SavingsPlanEffectiveCost), the commitment its
/// recurring fee makes available for the fee's period (TotalCommitmentToDate), and the upfront
/// fee itself (the commitment paid upfront). A negation line (which cancels the covered
/// usage's on-demand cost) consumes nothing: quantity 0, so summing the consumed quantity of a
/// plan does not count its usage twice.
pub fn commitment_quantity(
    kind: &str,
    reservation: bool,
    savings_plan: bool,
    a: &CommitmentAmounts,
    currency: &str,
) -> (Option<Decimal>, Option<String>) {
    let quantity = if reservation {
        match kind {
            "DiscountedUsage" | "RIFee" => a.usage_amount,
            "Fee" => match (a.reservations, a.term_hours) {
                (Some(n), Some(h)) => n.checked_mul(h),
                _ => None,
            },
            _ => None,
        }
    } else if savings_plan {
        match kind {
            "SavingsPlanCoveredUsage" => a.sp_effective,
            "SavingsPlanNegation" => Some(Decimal::ZERO),
            "SavingsPlanRecurringFee" => a.sp_commitment,
            "SavingsPlanUpfrontFee" => Some(a.cost),
            _ => None,
        }
    } else {
        None
    };
    let unit = match quantity {
        None => None,
        Some(_) if reservation => Some("Hours".to_string()),
        Some(_) => Some(currency.to_string()),
    };
    (quantity.map(|q| q.normalize()), unit)
}

/// The FOCUS columns a CUR line type and its pricing term decide (pure):
/// - ChargeFrequency: usage types → Usage-Based; RIFee and SavingsPlanRecurringFee → Recurring;
///   every other type (fees, upfront fees, tax, credits, refunds, discounts) → One-Time.
/// - PricingCategory (usage only): covered by a reservation or Savings Plan → Committed; spot
///   usage → Dynamic; `pricing/term` OnDemand → Standard; otherwise unknown (null).
/// - CommitmentDiscountCategory/Type on lines of a reservation (Usage, Reserved Instance) or a
///   Savings Plan (Spend, Savings Plan); CommitmentDiscountStatus Used on the usage they cover.
pub fn focus_columns(
    kind: &str,
    term: Option<&str>,
    usage_type: Option<&str>,
    reservation: bool,
    savings_plan: bool,
) -> costledger_core::FocusColumns {
    let usage = matches!(kind, "Usage" | "DiscountedUsage" | "SavingsPlanCoveredUsage" | "SavingsPlanNegation");
    let mut f = costledger_core::FocusColumns {
        charge_frequency: Some(
            match kind {
                _ if usage => "Usage-Based",
                "RIFee" | "SavingsPlanRecurringFee" => "Recurring",
                _ => "One-Time",
            }
            .to_string(),
        ),
        ..Default::default()
    };
    if usage {
        f.pricing_category = match (kind, term) {
            ("DiscountedUsage" | "SavingsPlanCoveredUsage", _) => Some("Committed"),
            _ if usage_type.is_some_and(|u| u.contains("SpotUsage")) || term == Some("Spot") => Some("Dynamic"),
            (_, Some("OnDemand")) => Some("Standard"),
            (_, Some("Reserved")) => Some("Committed"),
            _ => None,
        }
        .map(str::to_string);
    }
    let (category, kind_name) = if reservation {
        (Some("Usage"), Some("Reserved Instance"))
    } else if savings_plan {
        (Some("Spend"), Some("Savings Plan"))
    } else {
        (None, None)
    };
    f.commitment_discount_category = category.map(str::to_string);
    f.commitment_discount_type = kind_name.map(str::to_string);
    if category.is_some() && matches!(kind, "DiscountedUsage" | "SavingsPlanCoveredUsage") {
        f.commitment_discount_status = Some("Used".to_string());
    }
    f
}

#[cfg(test)]
mod tests {
    use super::{focus_columns, snake};

    #[test]
    fn line_types_and_terms_decide_frequency_pricing_category_and_commitment() {
        let f = focus_columns("Usage", Some("OnDemand"), Some("BoxUsage:m5.large"), false, false);
        assert_eq!(f.charge_frequency.as_deref(), Some("Usage-Based"));
        assert_eq!(f.pricing_category.as_deref(), Some("Standard"));
        assert_eq!(f.commitment_discount_category, None);
        let f = focus_columns("Usage", None, Some("EUW1-SpotUsage:c5.xlarge"), false, false);
        assert_eq!(f.pricing_category.as_deref(), Some("Dynamic"));
        let f = focus_columns("DiscountedUsage", Some("Reserved"), None, true, false);
        assert_eq!(
            (
                f.pricing_category.as_deref(),
                f.commitment_discount_category.as_deref(),
                f.commitment_discount_type.as_deref(),
                f.commitment_discount_status.as_deref()
            ),
            (Some("Committed"), Some("Usage"), Some("Reserved Instance"), Some("Used"))
        );
        let f = focus_columns("SavingsPlanCoveredUsage", None, None, false, true);
        assert_eq!(
            (
                f.commitment_discount_category.as_deref(),
                f.commitment_discount_type.as_deref(),
                f.commitment_discount_status.as_deref()
            ),
            (Some("Spend"), Some("Savings Plan"), Some("Used"))
        );
        // The fee of a reservation: recurring, a commitment line, no usage status, no pricing category.
        let f = focus_columns("RIFee", None, None, true, false);
        assert_eq!(f.charge_frequency.as_deref(), Some("Recurring"));
        assert_eq!((f.pricing_category, f.commitment_discount_status), (None, None));
        assert_eq!(f.commitment_discount_category.as_deref(), Some("Usage"));
        for one_time in ["Fee", "SavingsPlanUpfrontFee", "Tax", "Credit", "Refund", "EdpDiscount"] {
            assert_eq!(focus_columns(one_time, None, None, false, false).charge_frequency.as_deref(), Some("One-Time"));
        }
    }

    #[test]
    fn every_commitment_line_has_its_quantity_and_unit() {
        use super::{CommitmentAmounts, commitment_quantity};
        use rust_decimal::Decimal;
        let d = |s: &str| s.parse::<Decimal>().expect("decimal");
        let a = CommitmentAmounts {
            usage_amount: Some(d("744")),
            cost: d("219"),
            sp_effective: Some(d("0.1380")),
            sp_commitment: Some(d("0.15")),
            reservations: Some(d("2")),
            term_hours: Some(d("8760")),
        };
        let q = |kind: &str, ri: bool, sp: bool| {
            let (q, u) = commitment_quantity(kind, ri, sp, &a, "USD");
            (q.map(|q| q.to_string()), u)
        };
        let hours = |v: &str| (Some(v.to_string()), Some("Hours".to_string()));
        let usd = |v: &str| (Some(v.to_string()), Some("USD".to_string()));
        assert_eq!(q("DiscountedUsage", true, false), hours("744"));
        assert_eq!(q("RIFee", true, false), hours("744"));
        // Upfront: every reservation bought, for its whole term.
        assert_eq!(q("Fee", true, false), hours("17520"));
        assert_eq!(q("SavingsPlanCoveredUsage", false, true), usd("0.138"));
        assert_eq!(q("SavingsPlanNegation", false, true), usd("0"));
        assert_eq!(q("SavingsPlanRecurringFee", false, true), usd("0.15"));
        assert_eq!(q("SavingsPlanUpfrontFee", false, true), usd("219"));
        // No commitment, or a line type that carries none: both null.
        assert_eq!(q("Usage", false, false), (None, None));
        assert_eq!(q("Fee", false, false), (None, None));
        assert_eq!(q("Refund", true, false), (None, None));
        // An upfront fee without its term: unknown, null (never a guess).
        let partial = CommitmentAmounts { term_hours: None, ..a.clone() };
        assert_eq!(commitment_quantity("Fee", true, false, &partial, "USD"), (None, None));
    }

    #[test]
    fn cur2_names() {
        assert_eq!(snake("product/instanceType"), "product_instance_type");
        assert_eq!(snake("lineItem/UnblendedCost"), "line_item_unblended_cost");
        assert_eq!(snake("bill/BillingPeriodStartDate"), "bill_billing_period_start_date");
        assert_eq!(snake("savingsPlan/SavingsPlanARN"), "savings_plan_savings_plan_a_r_n");
        assert_eq!(snake("pricing/publicOnDemandCost"), "pricing_public_on_demand_cost");
    }

    fn normalized(csv_text: &str) -> Result<costledger_core::ChargeLine, costledger_core::RowError> {
        use costledger_files::reader::RecordFormat;
        let mut r = csv::ReaderBuilder::new().has_headers(false).from_reader(csv_text.as_bytes());
        let mut recs = r.byte_records().map(|r| r.expect("record"));
        let header = recs.next().expect("header");
        let cols = super::CurColumns::from_header(&header).expect("a CUR header");
        cols.normalize(&recs.next().expect("row"), "cur.csv:2").map(|(l, _)| l)
    }

    /// A line's product attributes are its SKU price's details (FOCUS-defined keys, numbers in
    /// the spec's units), from the legacy columns and from CUR 2.0's `product` map alike; a tax
    /// line, which has no SkuPriceId, has none.
    #[test]
    fn product_attributes_become_sku_price_details() {
        let legacy = "bill/PayerAccountId,bill/BillingPeriodStartDate,bill/BillingPeriodEndDate,lineItem/LineItemType,lineItem/UsageStartDate,lineItem/CurrencyCode,lineItem/UnblendedCost,pricing/RateCode,product/instanceType,product/vcpu,product/memory,product/operatingSystem,product/gpu\n\
            1,2026-10-01T00:00:00Z,2026-11-01T00:00:00Z,Usage,2026-10-05T00:00:00Z,USD,1.5,SKU1.TERM.RATE,db.r6g.xlarge,4,32 GiB,Linux,NA\n";
        let line = normalized(legacy).expect("normalized");
        let f = line.focus.as_ref().map(|f| f.to_columns()).unwrap_or_default();
        assert_eq!(
            f.sku_price_details.as_deref(),
            Some(
                r#"{"CoreCount":4,"InstanceSeries":"r6g","InstanceType":"db.r6g.xlarge","MemorySize":32,"OperatingSystem":"Linux"}"#
            )
        );
        let cur2 = "bill_payer_account_id,bill_billing_period_start_date,bill_billing_period_end_date,line_item_line_item_type,line_item_usage_start_date,line_item_currency_code,line_item_unblended_cost,pricing_rate_code,product_instance_type,product\n\
            1,2026-10-01T00:00:00Z,2026-11-01T00:00:00Z,Usage,2026-10-05T00:00:00Z,USD,1.5,SKU1.TERM.RATE,m5.large,\"{\"\"vcpu\"\":\"\"2\"\",\"\"memory\"\":\"\"0.5 GiB\"\",\"\"operating_system\"\":\"\"Windows\"\",\"\"storage_class\"\":null,\"\"region\"\":\"\"eu-west-1\"\"}\"\n";
        let line = normalized(cur2).expect("normalized");
        let f = line.focus.as_ref().map(|f| f.to_columns()).unwrap_or_default();
        assert_eq!(
            f.sku_price_details.as_deref(),
            Some(
                r#"{"CoreCount":2,"InstanceSeries":"m5","InstanceType":"m5.large","MemorySize":0.5,"OperatingSystem":"Windows"}"#
            )
        );
        let tax = legacy.replace("Usage,2026", "Tax,2026");
        let line = normalized(&tax).expect("normalized");
        let f = line.focus.as_ref().map(|f| f.to_columns()).unwrap_or_default();
        assert_eq!((f.sku_price_id, f.sku_price_details), (None, None));
    }

    /// Regression: a CUR tax line that names a SKU (`product/sku`) kept it as its SkuId, which
    /// FOCUS forbids on tax (SkuId-C-004-C failed on every such line). The SKU stays in x_extra.
    #[test]
    fn a_tax_line_has_no_sku_id_and_keeps_the_curs_sku_in_x_extra() {
        let cur = "bill/PayerAccountId,bill/BillingPeriodStartDate,bill/BillingPeriodEndDate,lineItem/LineItemType,lineItem/UsageStartDate,lineItem/CurrencyCode,lineItem/UnblendedCost,product/sku\n\
            1,2026-10-01T00:00:00Z,2026-11-01T00:00:00Z,Tax,2026-10-01T00:00:00Z,USD,1.5,TAXSKU01\n";
        let line = normalized(cur).expect("normalized");
        assert_eq!(line.charge_category, costledger_core::ChargeCategory::Tax);
        assert_eq!(line.sku_id, None);
        assert_eq!(line.x_extra.get("aws_ProductSku").map(String::as_str), Some("TAXSKU01"));
        let usage = normalized(&cur.replace("Tax,2026", "Usage,2026")).expect("normalized");
        assert_eq!(usage.sku_id.as_deref(), Some("TAXSKU01"));
        assert!(!usage.x_extra.contains_key("aws_ProductSku"));
    }

    /// A CUR 2.0 `product` map that is not JSON is a clear row error, not dropped details.
    #[test]
    fn a_product_map_that_is_not_json_names_the_column() {
        let cur2 = "bill_payer_account_id,bill_billing_period_start_date,bill_billing_period_end_date,line_item_line_item_type,line_item_usage_start_date,line_item_currency_code,line_item_unblended_cost,pricing_rate_code,product\n\
            1,2026-10-01T00:00:00Z,2026-11-01T00:00:00Z,Usage,2026-10-05T00:00:00Z,USD,1.5,SKU1.TERM.RATE,{vcpu: 2}\n";
        let e = normalized(cur2).expect_err("a bad map");
        assert!(e.reason.starts_with("product is not a JSON object"), "{}", e.reason);
        assert_eq!(e.location, "cur.csv:2");
    }

    /// CUR 2.0 `product` maps are parsed once per distinct text: a repeated map gives the same
    /// details, another SKU's map its own, and a broken map fails on every line that carries
    /// it, even after a good map of the same SKU (the cache never hides a bad row).
    #[test]
    fn product_maps_are_parsed_once_per_text_and_a_bad_one_always_fails() {
        use costledger_files::reader::RecordFormat;
        let header = "bill_payer_account_id,bill_billing_period_start_date,bill_billing_period_end_date,line_item_line_item_type,line_item_usage_start_date,line_item_currency_code,line_item_unblended_cost,pricing_rate_code,product_sku,product";
        let row = |sku: &str, map: &str| {
            format!(
                "1,2026-10-01T00:00:00Z,2026-11-01T00:00:00Z,Usage,2026-10-05T00:00:00Z,USD,1.5,{sku}.T.R,{sku},\"{}\"",
                map.replace('"', "\"\"")
            )
        };
        let text = [
            header.to_string(),
            row("A", r#"{"vcpu":"2"}"#),
            row("A", r#"{"vcpu":"2"}"#),
            // A number in the map is read as its text, never through a float.
            row("B", r#"{"vcpu":8,"gpu":"1","memory":0.75,"operating_system":null}"#),
            row("A", r#"{"vcpu":"2""#),
            row("A", r#"{"vcpu":"2""#),
        ]
        .join("\n");
        let mut r = csv::ReaderBuilder::new().has_headers(false).from_reader(text.as_bytes());
        let mut recs = r.byte_records().map(|r| r.expect("record"));
        let cols = super::CurColumns::from_header(&recs.next().expect("header")).expect("a CUR header");
        let details: Vec<Result<Option<String>, String>> = recs
            .enumerate()
            .map(|(i, rec)| {
                cols.normalize(&rec, &format!("cur.csv:{}", i + 2))
                    .map(|(l, _)| l.focus.and_then(|f| f.to_columns().sku_price_details))
                    .map_err(|e| e.reason)
            })
            .collect();
        assert_eq!(details[0], Ok(Some(r#"{"CoreCount":2}"#.to_string())));
        assert_eq!(details[1], details[0]);
        assert_eq!(details[2], Ok(Some(r#"{"CoreCount":8,"GpuCount":1}"#.to_string())));
        // Two distinct map texts were parsed and kept; the broken one never was kept.
        assert_eq!(cols.details_by_text.borrow().len(), 2);
        for bad in &details[3..] {
            assert!(bad.as_ref().is_err_and(|e| e.starts_with("product is not a JSON object")), "{bad:?}");
        }
    }
}
