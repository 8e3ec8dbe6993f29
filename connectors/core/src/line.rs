//! The normalised charge line: FOCUS 1.2 columns (ARCHITECTURE.md, "Bird's-eye view"). Absent values are `None`,
//! never zero or empty text.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;

/// The FOCUS columns a [`ChargeLine`] carries, in the order exports write them.
pub const FOCUS_COLUMNS: [&str; 32] = [
    "BillingAccountId",
    "BillingAccountName",
    "SubAccountId",
    "SubAccountName",
    "BillingPeriodStart",
    "BillingPeriodEnd",
    "ChargePeriodStart",
    "ChargePeriodEnd",
    "ChargeCategory",
    "ChargeClass",
    "ChargeDescription",
    "ServiceName",
    "ServiceCategory",
    "ProviderName",
    "PublisherName",
    "InvoiceIssuerName",
    "RegionId",
    "ResourceId",
    "ResourceName",
    "SkuId",
    "BilledCost",
    "EffectiveCost",
    "ListCost",
    "ContractedCost",
    "BillingCurrency",
    "PricingQuantity",
    "PricingUnit",
    "ConsumedQuantity",
    "ConsumedUnit",
    "CommitmentDiscountId",
    "InvoiceId",
    "Tags",
];

/// Tag key → value, sorted (deterministic JSON). A key with no value maps to "".
pub type Tags = BTreeMap<String, String>;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ChargeCategory {
    Usage,
    Purchase,
    Tax,
    Credit,
    Adjustment,
}

impl ChargeCategory {
    pub const ALL: [ChargeCategory; 5] = [Self::Usage, Self::Purchase, Self::Tax, Self::Credit, Self::Adjustment];

    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Usage => "Usage",
            Self::Purchase => "Purchase",
            Self::Tax => "Tax",
            Self::Credit => "Credit",
            Self::Adjustment => "Adjustment",
        }
    }
}

impl fmt::Display for ChargeCategory {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for ChargeCategory {
    type Err = String;
    /// Case-insensitive; the FOCUS values only.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let t = s.trim();
        Self::ALL
            .into_iter()
            .find(|c| c.as_str().eq_ignore_ascii_case(t))
            .ok_or_else(|| format!("ChargeCategory '{t}' is not one of Usage, Purchase, Tax, Credit, Adjustment"))
    }
}

/// FOCUS `ChargeClass`: null, or `Correction` for a line that corrects an earlier period.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ChargeClass {
    Correction,
}

impl ChargeClass {
    pub fn as_str(&self) -> &'static str {
        "Correction"
    }
}

impl FromStr for ChargeClass {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.trim().eq_ignore_ascii_case("correction") {
            Ok(Self::Correction)
        } else {
            Err(format!("ChargeClass '{}' is not Correction (or empty)", s.trim()))
        }
    }
}

/// The `x_extra` key under which a commitment purchase line keeps its commitment's unused
/// quantity for the fee's period, where the bill has it on that line (an AWS CUR's RIFee:
/// `reservation/UnusedQuantity`, hours). The FOCUS export writes it on the line's Unused row.
pub const X_UNUSED_COMMITMENT_QUANTITY: &str = "aws_UnusedQuantity";

/// One normalised charge. Money is `Decimal`; `billed_cost` (the invoice basis) and the
/// currency are required, every other amount may be absent.
#[derive(Debug, Clone, PartialEq)]
pub struct ChargeLine {
    pub billing_account_id: String,
    pub billing_account_name: Option<String>,
    pub sub_account_id: Option<String>,
    pub sub_account_name: Option<String>,
    pub billing_period_start: DateTime<Utc>,
    pub billing_period_end: DateTime<Utc>,
    pub charge_period_start: DateTime<Utc>,
    pub charge_period_end: DateTime<Utc>,
    pub charge_category: ChargeCategory,
    pub charge_class: Option<ChargeClass>,
    pub charge_description: Option<String>,
    pub service_name: Option<String>,
    pub service_category: Option<String>,
    pub provider_name: Option<String>,
    pub publisher_name: Option<String>,
    pub invoice_issuer_name: Option<String>,
    pub region_id: Option<String>,
    pub resource_id: Option<String>,
    pub resource_name: Option<String>,
    pub sku_id: Option<String>,
    pub billed_cost: Decimal,
    pub effective_cost: Option<Decimal>,
    pub list_cost: Option<Decimal>,
    pub contracted_cost: Option<Decimal>,
    pub billing_currency: String,
    pub pricing_quantity: Option<Decimal>,
    pub pricing_unit: Option<String>,
    pub consumed_quantity: Option<Decimal>,
    pub consumed_unit: Option<String>,
    pub commitment_discount_id: Option<String>,
    pub invoice_id: Option<String>,
    pub tags: Tags,
    /// The FOCUS 1.2 columns beyond the core above (commitment detail, unit prices, types…);
    /// `None` when the bill carried none of them (most lines of most bills: no allocation).
    pub focus: Option<Box<crate::FocusValues>>,
    /// Provider columns worth keeping that FOCUS has no column for.
    pub x_extra: BTreeMap<String, String>,
    /// Lineage: where the line came from (`file:line`, `page 3 row 7`).
    pub source_ref: Option<String>,
}

impl ChargeLine {
    /// Tags as deterministic JSON text (`None` when there are none).
    pub fn tags_json(&self) -> Option<String> {
        map_json(&self.tags)
    }

    pub fn x_extra_json(&self) -> Option<String> {
        map_json(&self.x_extra)
    }
}

/// The years a line's dates must fall in to enter the ledger (inclusive). A bill dated in year 0
/// or 9999 is a broken export, not a charge: accepted, it would break every later period
/// computation (ISO weeks, month arithmetic) for the whole ledger.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DateBounds {
    pub first_year: i32,
    pub last_year: i32,
}

impl Default for DateBounds {
    fn default() -> Self {
        Self { first_year: 2000, last_year: 2100 }
    }
}

impl ChargeLine {
    /// What the loader checks of every line, whatever its connector: the four dates inside
    /// `bounds`, no period ending before it starts, and no NUL byte in any text (PostgreSQL
    /// cannot store one, so both backends refuse it alike). `Err` is the quarantine reason.
    pub fn check(&self, bounds: &DateBounds) -> Result<(), String> {
        use chrono::Datelike;
        for (name, t) in [
            ("BillingPeriodStart", self.billing_period_start),
            ("BillingPeriodEnd", self.billing_period_end),
            ("ChargePeriodStart", self.charge_period_start),
            ("ChargePeriodEnd", self.charge_period_end),
        ] {
            // The UTC calendar year straight from the stored instant (no offset arithmetic).
            let y = t.naive_utc().year();
            if y < bounds.first_year || y > bounds.last_year {
                return Err(format!(
                    "{name} {} is outside the years {}–{} that bills are accepted for \
                     (ingest.valid_years in the config)",
                    crate::format_ts(t),
                    bounds.first_year,
                    bounds.last_year
                ));
            }
        }
        if self.charge_period_end < self.charge_period_start {
            return Err(format!(
                "ChargePeriodEnd {} is before ChargePeriodStart {}",
                crate::format_ts(self.charge_period_end),
                crate::format_ts(self.charge_period_start)
            ));
        }
        if self.billing_period_end <= self.billing_period_start {
            return Err(format!(
                "BillingPeriodEnd {} is not after BillingPeriodStart {}",
                crate::format_ts(self.billing_period_end),
                crate::format_ts(self.billing_period_start)
            ));
        }
        if let Some(col) = self.nul_column() {
            return Err(format!("{col} contains a NUL byte (0x00), which no ledger column can store"));
        }
        Ok(())
    }

    /// The first column whose text holds a NUL byte.
    fn nul_column(&self) -> Option<&'static str> {
        let texts: [(&'static str, Option<&str>); 19] = [
            ("BillingAccountId", Some(self.billing_account_id.as_str())),
            ("BillingAccountName", self.billing_account_name.as_deref()),
            ("SubAccountId", self.sub_account_id.as_deref()),
            ("SubAccountName", self.sub_account_name.as_deref()),
            ("ChargeDescription", self.charge_description.as_deref()),
            ("ServiceName", self.service_name.as_deref()),
            ("ServiceCategory", self.service_category.as_deref()),
            ("ProviderName", self.provider_name.as_deref()),
            ("PublisherName", self.publisher_name.as_deref()),
            ("InvoiceIssuerName", self.invoice_issuer_name.as_deref()),
            ("RegionId", self.region_id.as_deref()),
            ("ResourceId", self.resource_id.as_deref()),
            ("ResourceName", self.resource_name.as_deref()),
            ("SkuId", self.sku_id.as_deref()),
            ("BillingCurrency", Some(self.billing_currency.as_str())),
            ("PricingUnit", self.pricing_unit.as_deref()),
            ("ConsumedUnit", self.consumed_unit.as_deref()),
            ("CommitmentDiscountId", self.commitment_discount_id.as_deref()),
            ("InvoiceId", self.invoice_id.as_deref()),
        ];
        let focus = self.focus.as_ref().map(|f| f.texts());
        // Every line is checked and nearly none holds a NUL: one pass folds the smallest byte
        // of every text (no call or early exit per text); only a 0 there looks for the column
        // to name.
        let mut m = u8::MAX;
        for t in texts.iter().filter_map(|(_, t)| *t) {
            m = min_byte(m, t);
        }
        for t in focus.iter().flatten().flatten() {
            m = min_byte(m, t);
        }
        if let Some(t) = &self.source_ref {
            m = min_byte(m, t);
        }
        for (k, v) in self.tags.iter().chain(&self.x_extra) {
            m = min_byte(min_byte(m, k), v);
        }
        if m != 0 {
            return None;
        }
        let has = |s: &str| s.as_bytes().contains(&0);
        if let Some((name, _)) = texts.iter().find(|(_, t)| t.is_some_and(has)) {
            return Some(name);
        }
        if let Some(i) = focus.and_then(|f| f.iter().position(|t| t.is_some_and(has))) {
            return Some(crate::FocusColumns::TEXT[i]);
        }
        if self.tags.iter().any(|(k, v)| has(k) || has(v)) {
            return Some("Tags");
        }
        if self.x_extra.iter().any(|(k, v)| has(k) || has(v)) {
            return Some("a provider column kept in x_extra");
        }
        if self.source_ref.as_deref().is_some_and(has) {
            return Some("the source reference");
        }
        None
    }
}

/// The smallest byte of `b` folded into `m` (a NUL makes it 0): a loop the compiler vectorises.
fn min_byte(m: u8, b: &str) -> u8 {
    b.as_bytes().iter().fold(m, |m, &c| m.min(c))
}

fn map_json(m: &BTreeMap<String, String>) -> Option<String> {
    let mut out = Vec::new();
    write_map_json(&mut out, m).then(|| String::from_utf8(out).unwrap_or_default())
}

/// Append `m` as a JSON object to `out`, byte for byte what `serde_json::to_string` writes (keys
/// in order, no spaces, the same escapes), without an intermediate string. `false`, and
/// nothing written, when `m` is empty (the ledger stores no empty objects).
pub fn write_map_json(out: &mut Vec<u8>, m: &BTreeMap<String, String>) -> bool {
    if m.is_empty() {
        return false;
    }
    out.push(b'{');
    for (i, (k, v)) in m.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        write_json_str(out, k);
        out.push(b':');
        write_json_str(out, v);
    }
    out.push(b'}');
    true
}

/// `s` as a JSON string (quoted, escaped) appended to `out`.
pub(crate) fn write_json_str(out: &mut Vec<u8>, s: &str) {
    out.push(b'"');
    let mut start = 0;
    for (i, b) in s.bytes().enumerate() {
        let esc: &str = match b {
            b'"' => "\\\"",
            b'\\' => "\\\\",
            b'\n' => "\\n",
            b'\r' => "\\r",
            b'\t' => "\\t",
            0x08 => "\\b",
            0x0c => "\\f",
            0..0x20 => "",
            _ => continue,
        };
        out.extend_from_slice(&s.as_bytes()[start..i]);
        if esc.is_empty() {
            const HEX: &[u8; 16] = b"0123456789abcdef";
            out.extend_from_slice(b"\\u00");
            out.push(HEX[usize::from(b >> 4)]);
            out.push(HEX[usize::from(b & 0xf)]);
        } else {
            out.extend_from_slice(esc.as_bytes());
        }
        start = i + 1;
    }
    out.extend_from_slice(&s.as_bytes()[start..]);
    out.push(b'"');
}

#[cfg(test)]
mod json_tests {
    use super::*;

    #[test]
    fn map_json_is_serde_jsons_text() {
        let every_ascii: String = (0u8..0x80).map(char::from).collect();
        let cases: Vec<(&str, &str)> = vec![
            ("team", "platform"),
            ("a\"b", "c\\d"),
            ("ctl", &every_ascii),
            ("ünïcödé ✓", "日本語\u{2028}\u{1F600}"),
            ("", ""),
        ];
        let m: BTreeMap<String, String> = cases.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        let want = serde_json::to_string(&m).expect("json");
        let mut got = b"prefix:".to_vec();
        assert!(write_map_json(&mut got, &m));
        assert_eq!(String::from_utf8(got).expect("utf-8"), format!("prefix:{want}"));
        assert_eq!(map_json(&m).as_deref(), Some(want.as_str()));
        let mut none = Vec::new();
        assert!(!write_map_json(&mut none, &BTreeMap::new()));
        assert!(none.is_empty());
    }
}

#[cfg(test)]
mod check_tests {
    use super::*;
    use chrono::TimeZone;

    fn line() -> ChargeLine {
        let t = |d: u32| Utc.with_ymd_and_hms(2026, 10, d, 0, 0, 0).single().expect("date");
        let s = |v: &str| Some(v.to_string());
        let mut focus = crate::FocusValues::default();
        focus.push_text(0, "focus text".into());
        ChargeLine {
            billing_account_id: "acct".into(),
            billing_account_name: s("name"),
            sub_account_id: s("sub"),
            sub_account_name: s("sub name"),
            billing_period_start: t(1),
            billing_period_end: t(31),
            charge_period_start: t(2),
            charge_period_end: t(3),
            charge_category: ChargeCategory::Usage,
            charge_class: None,
            charge_description: s("a description long enough to span more than one vector block"),
            service_name: s("svc"),
            service_category: s("Compute"),
            provider_name: s("AWS"),
            publisher_name: s("AWS"),
            invoice_issuer_name: s("AWS"),
            region_id: s("eu-west-1"),
            resource_id: s("i-1"),
            resource_name: s("web"),
            sku_id: s("sku"),
            billed_cost: Decimal::ONE,
            effective_cost: None,
            list_cost: None,
            contracted_cost: None,
            billing_currency: "USD".into(),
            pricing_quantity: None,
            pricing_unit: s("Hours"),
            consumed_quantity: None,
            consumed_unit: s("Hours"),
            commitment_discount_id: s("sp-1"),
            invoice_id: s("inv"),
            tags: [("team".to_string(), "web".to_string())].into(),
            focus: Some(Box::new(focus)),
            x_extra: [("x".to_string(), "y".to_string())].into(),
            source_ref: s("bill.csv:2"),
        }
    }

    /// The one-pass NUL scan finds a NUL in every text a line has, wherever in the text, and
    /// the check then names the column.
    #[test]
    fn a_nul_byte_in_any_text_is_found_and_named() {
        assert_eq!(line().check(&DateBounds::default()), Ok(()));
        type Put = fn(&mut ChargeLine, String);
        let cases: Vec<(&str, Put)> = vec![
            ("BillingAccountId", |l, v| l.billing_account_id = v),
            ("BillingAccountName", |l, v| l.billing_account_name = Some(v)),
            ("SubAccountId", |l, v| l.sub_account_id = Some(v)),
            ("SubAccountName", |l, v| l.sub_account_name = Some(v)),
            ("ChargeDescription", |l, v| l.charge_description = Some(v)),
            ("ServiceName", |l, v| l.service_name = Some(v)),
            ("ServiceCategory", |l, v| l.service_category = Some(v)),
            ("ProviderName", |l, v| l.provider_name = Some(v)),
            ("PublisherName", |l, v| l.publisher_name = Some(v)),
            ("InvoiceIssuerName", |l, v| l.invoice_issuer_name = Some(v)),
            ("RegionId", |l, v| l.region_id = Some(v)),
            ("ResourceId", |l, v| l.resource_id = Some(v)),
            ("ResourceName", |l, v| l.resource_name = Some(v)),
            ("SkuId", |l, v| l.sku_id = Some(v)),
            ("BillingCurrency", |l, v| l.billing_currency = v),
            ("PricingUnit", |l, v| l.pricing_unit = Some(v)),
            ("ConsumedUnit", |l, v| l.consumed_unit = Some(v)),
            ("CommitmentDiscountId", |l, v| l.commitment_discount_id = Some(v)),
            ("InvoiceId", |l, v| l.invoice_id = Some(v)),
            (crate::FocusColumns::TEXT[0], |l, v| {
                let mut f = crate::FocusValues::default();
                f.push_text(0, v.into());
                l.focus = Some(Box::new(f));
            }),
            ("Tags", |l, v| {
                l.tags.insert("owner".into(), v);
            }),
            ("Tags", |l, v| {
                l.tags.insert(v, "x".into());
            }),
            ("a provider column kept in x_extra", |l, v| {
                l.x_extra.insert("k".into(), v);
            }),
            ("the source reference", |l, v| l.source_ref = Some(v)),
        ];
        for (name, put) in cases {
            for text in ["\0", "a\0", "\0b", "a text of more than thirty-two bytes, then\0 a NUL"] {
                let mut l = line();
                put(&mut l, text.to_string());
                assert_eq!(
                    l.check(&DateBounds::default()),
                    Err(format!("{name} contains a NUL byte (0x00), which no ledger column can store")),
                    "{name} = {text:?}"
                );
            }
        }
    }

    #[test]
    fn dates_outside_the_accepted_years_are_refused_at_the_year_boundary() {
        let bounds = DateBounds { first_year: 2026, last_year: 2026 };
        let mut l = line();
        assert_eq!(l.check(&bounds), Ok(()));
        l.charge_period_end = Utc.with_ymd_and_hms(2027, 1, 1, 0, 0, 0).single().expect("date");
        assert!(l.check(&bounds).is_err_and(|e| e.starts_with("ChargePeriodEnd 2027-01-01T00:00:00Z is outside")));
        l.charge_period_end = Utc.with_ymd_and_hms(2026, 12, 31, 23, 59, 59).single().expect("date");
        assert_eq!(l.check(&bounds), Ok(()));
    }
}
