//! Pure normalisation of FOCUS records: header → [`ColumnMap`], record → `ChargeLine` or a
//! row error that says which column and why.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use costledger_core::currency::is_iso4217;
use costledger_core::text::{clip, opt, parse_tags_json};
use costledger_core::{
    ChargeCategory, ChargeClass, ChargeLine, FOCUS_COLUMNS, FocusColumns, FocusValues, RowError, parse_amount,
    parse_timestamp,
};
use costledger_files::record::raw_record;
use rust_decimal::Decimal;

/// The FOCUS columns the ledger keeps, declared in `FOCUS_COLUMNS` order (the discriminant is
/// the index).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Col {
    BillingAccountId,
    BillingAccountName,
    SubAccountId,
    SubAccountName,
    BillingPeriodStart,
    BillingPeriodEnd,
    ChargePeriodStart,
    ChargePeriodEnd,
    ChargeCategory,
    ChargeClass,
    ChargeDescription,
    ServiceName,
    ServiceCategory,
    ProviderName,
    PublisherName,
    InvoiceIssuerName,
    RegionId,
    ResourceId,
    ResourceName,
    SkuId,
    BilledCost,
    EffectiveCost,
    ListCost,
    ContractedCost,
    BillingCurrency,
    PricingQuantity,
    PricingUnit,
    ConsumedQuantity,
    ConsumedUnit,
    CommitmentDiscountId,
    InvoiceId,
    Tags,
}

/// Pre-1.0 names some exporters still write (OCI's FOCUS reports among them): 0.5's `Region`
/// and `AmortizedCost`, 1.0-preview's `UsageQuantity`/`UsageUnit` and the names without `Name`.
const ALIASES: [(&str, Col); 7] = [
    ("Provider", Col::ProviderName),
    ("Publisher", Col::PublisherName),
    ("InvoiceIssuer", Col::InvoiceIssuerName),
    ("Region", Col::RegionId),
    ("UsageQuantity", Col::ConsumedQuantity),
    ("UsageUnit", Col::ConsumedUnit),
    ("AmortizedCost", Col::EffectiveCost),
];

/// Columns a file must have for its lines to be loadable.
pub const REQUIRED: [Col; 8] = [
    Col::BilledCost,
    Col::BillingCurrency,
    Col::BillingAccountId,
    Col::BillingPeriodStart,
    Col::BillingPeriodEnd,
    Col::ChargePeriodStart,
    Col::ChargePeriodEnd,
    Col::ChargeCategory,
];

/// The FOCUS name of a column (`Col` is declared in `FOCUS_COLUMNS` order).
pub fn col_name(c: Col) -> &'static str {
    FOCUS_COLUMNS[c as usize]
}

/// One of the [`FocusColumns`]: text column `k` or decimal column `k`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FocusCol {
    Text(usize),
    Decimal(usize),
}

/// Header → column positions (by name, case-insensitively; BOM stripped).
#[derive(Debug, Clone)]
pub struct ColumnMap {
    names: Vec<String>,
    idx: [Option<usize>; 32],
    /// The [`FocusColumns`] the file has: (position in the record, which column).
    focus: Vec<(usize, FocusCol)>,
    extra: Vec<usize>,
}

impl ColumnMap {
    pub fn from_header(header: &csv::ByteRecord) -> Result<ColumnMap, String> {
        let mut names = Vec::with_capacity(header.len());
        for (i, raw) in header.iter().enumerate() {
            let s = std::str::from_utf8(raw).map_err(|_| format!("header column {} is not valid UTF-8", i + 1))?;
            let s = if i == 0 { s.trim_start_matches('\u{feff}') } else { s };
            names.push(s.trim().to_string());
        }
        if names.len() == 1 && names[0].is_empty() {
            return Err("the header line is blank".to_string());
        }
        let mut seen: BTreeMap<String, usize> = BTreeMap::new();
        for (i, n) in names.iter().enumerate() {
            if let Some(j) = seen.insert(n.to_ascii_lowercase(), i) {
                return Err(format!("duplicate column '{}' (columns {} and {})", n, j + 1, i + 1));
            }
        }
        let mut idx = [None; 32];
        let mut focus = Vec::new();
        let mut extra = Vec::new();
        let find = |names: &[&str], n: &str| names.iter().position(|name| name.eq_ignore_ascii_case(n));
        for (i, n) in names.iter().enumerate() {
            let known = find(&FOCUS_COLUMNS, n)
                .or_else(|| ALIASES.iter().find(|(a, _)| a.eq_ignore_ascii_case(n)).map(|(_, c)| *c as usize));
            match known {
                Some(k) if idx[k].is_none() => idx[k] = Some(i),
                Some(_) => extra.push(i),
                None => {
                    if let Some(k) = find(FocusColumns::TEXT, n) {
                        focus.push((i, FocusCol::Text(k)));
                    } else if let Some(k) = find(FocusColumns::DECIMAL, n) {
                        focus.push((i, FocusCol::Decimal(k)));
                    } else {
                        extra.push(i);
                    }
                }
            }
        }
        let missing: Vec<&str> =
            REQUIRED.iter().filter(|c| idx[**c as usize].is_none()).map(|c| col_name(*c)).collect();
        if !missing.is_empty() {
            return Err(format!("missing required FOCUS column(s): {}", missing.join(", ")));
        }
        Ok(ColumnMap { names, idx, focus, extra })
    }

    pub fn width(&self) -> usize {
        self.names.len()
    }

    pub fn name(&self, i: usize) -> &str {
        self.names.get(i).map(String::as_str).unwrap_or("?")
    }

    fn pos(&self, c: Col) -> Option<usize> {
        self.idx[c as usize]
    }

    fn lossy(&self, rec: &csv::ByteRecord, c: Col) -> Option<String> {
        let f = rec.get(self.pos(c)?)?;
        opt(&String::from_utf8_lossy(f)).map(|s| clip(s, 256))
    }

    /// The raw BilledCost text of a record, whatever its state (for quarantine).
    pub fn raw_amount(&self, rec: &csv::ByteRecord) -> Option<String> {
        self.lossy(rec, Col::BilledCost)
    }

    pub fn raw_currency(&self, rec: &csv::ByteRecord) -> Option<String> {
        self.lossy(rec, Col::BillingCurrency)
    }
}

struct Row<'r> {
    cols: &'r ColumnMap,
    rec: &'r csv::ByteRecord,
    /// The whole record as text when it is valid UTF-8 (checked once, not per field).
    all: Option<&'r str>,
    rounded: u64,
}

impl<'r> Row<'r> {
    fn new(cols: &'r ColumnMap, rec: &'r csv::ByteRecord) -> Row<'r> {
        Row { cols, rec, all: std::str::from_utf8(rec.as_slice()).ok(), rounded: 0 }
    }

    /// Field `i` as text, or which column is not UTF-8.
    fn field(&self, i: usize, name: &str) -> Result<Option<&'r str>, String> {
        if let Some(all) = self.all {
            // Fields start and end at ASCII delimiters, so they are char boundaries.
            return Ok(self.rec.range(i).and_then(|r| all.get(r)));
        }
        let Some(raw) = self.rec.get(i) else { return Ok(None) };
        std::str::from_utf8(raw)
            .map(Some)
            .map_err(|e| format!("column {name} is not valid UTF-8 (at byte {})", e.valid_up_to()))
    }

    fn text(&self, c: Col) -> Result<Option<&'r str>, String> {
        let Some(i) = self.cols.pos(c) else { return Ok(None) };
        Ok(self.field(i, col_name(c))?.and_then(opt))
    }

    fn string(&self, c: Col) -> Result<Option<String>, String> {
        Ok(self.text(c)?.map(str::to_string))
    }

    fn required(&self, c: Col) -> Result<&'r str, String> {
        self.text(c)?.ok_or_else(|| format!("{} is empty", col_name(c)))
    }

    fn amount(&mut self, c: Col) -> Result<Option<Decimal>, String> {
        let Some(t) = self.text(c)? else { return Ok(None) };
        match parse_amount(t) {
            Ok(Some(a)) => {
                self.rounded += u64::from(a.rounded);
                Ok(Some(a.value))
            }
            Ok(None) => Ok(None),
            Err(e) => Err(format!("{}: {e}", col_name(c))),
        }
    }

    /// The FOCUS columns beyond the core (`None` when the file has none of them or they are
    /// all empty on this row).
    fn focus(&mut self) -> Result<Option<Box<FocusValues>>, String> {
        let cols = self.cols;
        if cols.focus.is_empty() {
            return Ok(None);
        }
        let mut f = FocusValues::default();
        for &(i, col) in &cols.focus {
            match col {
                FocusCol::Text(k) => {
                    if let Some(v) = self.field(i, FocusColumns::TEXT[k])?.and_then(opt) {
                        f.push_text(k, v.into());
                    }
                }
                FocusCol::Decimal(k) => {
                    let name = FocusColumns::DECIMAL[k];
                    let Some(t) = self.field(i, name)?.and_then(opt) else { continue };
                    match parse_amount(t) {
                        Ok(Some(a)) => {
                            self.rounded += u64::from(a.rounded);
                            f.push_decimal(k, a.value);
                        }
                        Ok(None) => {}
                        Err(e) => return Err(format!("{name}: {e}")),
                    }
                }
            }
        }
        Ok((!f.is_empty()).then(|| Box::new(f)))
    }

    fn ts(&self, c: Col) -> Result<DateTime<Utc>, String> {
        parse_timestamp(self.required(c)?).map_err(|e| format!("{}: {e}", col_name(c)))
    }
}

/// One record → a line (and how many amounts were rounded), or the reason it cannot be one.
pub fn normalize_record(
    cols: &ColumnMap,
    rec: &csv::ByteRecord,
    location: &str,
) -> Result<(ChargeLine, u64), RowError> {
    let mut row = Row::new(cols, rec);
    match build(&mut row) {
        Ok(line) => {
            let mut line = line;
            line.source_ref = Some(location.to_string());
            Ok((line, row.rounded))
        }
        Err(reason) => Err(RowError {
            location: location.to_string(),
            reason,
            raw: raw_record(rec),
            raw_amount: cols.raw_amount(rec),
            currency: cols.raw_currency(rec),
        }),
    }
}

fn build(row: &mut Row<'_>) -> Result<ChargeLine, String> {
    let billed_cost = row.amount(Col::BilledCost)?.ok_or("BilledCost is empty")?;
    let currency = row.required(Col::BillingCurrency)?.to_ascii_uppercase();
    if !is_iso4217(&currency) {
        return Err(format!("BillingCurrency '{}' is not an ISO 4217 currency code", clip(&currency, 32)));
    }
    let charge_category: ChargeCategory = row.required(Col::ChargeCategory)?.parse()?;
    let charge_class = match row.text(Col::ChargeClass)? {
        Some(t) => Some(t.parse::<ChargeClass>()?),
        None => None,
    };
    let tags = match row.text(Col::Tags)? {
        Some(t) => parse_tags_json(t)?,
        None => BTreeMap::new(),
    };
    let focus = row.focus()?;
    let mut x_extra = BTreeMap::new();
    for &i in &row.cols.extra {
        let Some(s) = row.field(i, row.cols.name(i))? else { continue };
        if let Some(v) = opt(s) {
            x_extra.insert(row.cols.name(i).to_string(), v.to_string());
        }
    }
    Ok(ChargeLine {
        billing_account_id: row.required(Col::BillingAccountId)?.to_string(),
        billing_account_name: row.string(Col::BillingAccountName)?,
        sub_account_id: row.string(Col::SubAccountId)?,
        sub_account_name: row.string(Col::SubAccountName)?,
        billing_period_start: row.ts(Col::BillingPeriodStart)?,
        billing_period_end: row.ts(Col::BillingPeriodEnd)?,
        charge_period_start: row.ts(Col::ChargePeriodStart)?,
        charge_period_end: row.ts(Col::ChargePeriodEnd)?,
        charge_category,
        charge_class,
        charge_description: row.string(Col::ChargeDescription)?,
        service_name: row.string(Col::ServiceName)?,
        service_category: row.string(Col::ServiceCategory)?,
        provider_name: row.string(Col::ProviderName)?,
        publisher_name: row.string(Col::PublisherName)?,
        invoice_issuer_name: row.string(Col::InvoiceIssuerName)?,
        region_id: row.string(Col::RegionId)?,
        resource_id: row.string(Col::ResourceId)?,
        resource_name: row.string(Col::ResourceName)?,
        sku_id: row.string(Col::SkuId)?,
        billed_cost,
        effective_cost: row.amount(Col::EffectiveCost)?,
        list_cost: row.amount(Col::ListCost)?,
        contracted_cost: row.amount(Col::ContractedCost)?,
        billing_currency: currency,
        pricing_quantity: row.amount(Col::PricingQuantity)?,
        pricing_unit: row.string(Col::PricingUnit)?,
        consumed_quantity: row.amount(Col::ConsumedQuantity)?,
        consumed_unit: row.string(Col::ConsumedUnit)?,
        commitment_discount_id: row.string(Col::CommitmentDiscountId)?,
        invoice_id: row.string(Col::InvoiceId)?,
        tags,
        focus,
        x_extra,
        source_ref: None,
    })
}
