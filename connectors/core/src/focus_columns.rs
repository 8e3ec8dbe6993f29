//! The FOCUS 1.2 Cost and Usage columns a [`crate::ChargeLine`] carries beyond its core
//! (commitments, pricing detail, capacity reservations, types and subcategories): one table,
//! written once, that the connectors fill, both ledger backends store (one column each, named
//! in snake case) and the FOCUS export writes.

use rust_decimal::Decimal;

macro_rules! focus_columns {
    (text { $($t:ident => $tn:literal,)* } decimal { $($d:ident => $dn:literal,)* }) => {
        /// Number of text columns in [`FocusColumns`].
        pub const FOCUS_TEXT_COUNT: usize = [$($tn,)*].len();
        /// Number of decimal columns in [`FocusColumns`].
        pub const FOCUS_DECIMAL_COUNT: usize = [$($dn,)*].len();

        /// The FOCUS 1.2 columns beyond a charge line's core, each absent (`None`) unless the
        /// bill carried it. Decimal columns are exact like every amount.
        #[derive(Debug, Clone, Default, PartialEq, Eq)]
        pub struct FocusColumns {
            $(pub $t: Option<String>,)*
            $(pub $d: Option<Decimal>,)*
        }

        impl FocusColumns {
            /// FOCUS names of the text columns, in [`Self::texts`] order.
            pub const TEXT: &'static [&'static str] = &[$($tn,)*];
            /// FOCUS names of the decimal columns, in [`Self::decimals`] order.
            pub const DECIMAL: &'static [&'static str] = &[$($dn,)*];
            /// Ledger column names of the text columns, in [`Self::texts`] order.
            pub const TEXT_SQL: &'static [&'static str] = &[$(stringify!($t),)*];
            /// Ledger column names of the decimal columns, in [`Self::decimals`] order.
            pub const DECIMAL_SQL: &'static [&'static str] = &[$(stringify!($d),)*];

            pub fn texts(&self) -> [Option<&str>; FOCUS_TEXT_COUNT] {
                [$(self.$t.as_deref(),)*]
            }

            pub fn decimals(&self) -> [Option<Decimal>; FOCUS_DECIMAL_COUNT] {
                [$(self.$d,)*]
            }

            /// The text column `name` (FOCUS name), to be filled.
            pub fn text_mut(&mut self, name: &str) -> Option<&mut Option<String>> {
                match name {
                    $($tn => Some(&mut self.$t),)*
                    _ => None,
                }
            }

            /// The decimal column `name` (FOCUS name), to be filled.
            pub fn decimal_mut(&mut self, name: &str) -> Option<&mut Option<Decimal>> {
                match name {
                    $($dn => Some(&mut self.$d),)*
                    _ => None,
                }
            }

            /// Built from the ledger's columns, in [`Self::texts`] and [`Self::decimals`] order.
            pub fn from_columns(
                texts: [Option<String>; FOCUS_TEXT_COUNT],
                decimals: [Option<Decimal>; FOCUS_DECIMAL_COUNT],
            ) -> Self {
                let [$($t,)*] = texts;
                let [$($d,)*] = decimals;
                FocusColumns { $($t,)* $($d,)* }
            }
        }
    };
}

focus_columns! {
    text {
        availability_zone => "AvailabilityZone",
        billing_account_type => "BillingAccountType",
        capacity_reservation_id => "CapacityReservationId",
        capacity_reservation_status => "CapacityReservationStatus",
        charge_frequency => "ChargeFrequency",
        commitment_discount_category => "CommitmentDiscountCategory",
        commitment_discount_name => "CommitmentDiscountName",
        commitment_discount_status => "CommitmentDiscountStatus",
        commitment_discount_type => "CommitmentDiscountType",
        commitment_discount_unit => "CommitmentDiscountUnit",
        pricing_category => "PricingCategory",
        pricing_currency => "PricingCurrency",
        region_name => "RegionName",
        resource_type => "ResourceType",
        service_subcategory => "ServiceSubcategory",
        sku_meter => "SkuMeter",
        sku_price_details => "SkuPriceDetails",
        sku_price_id => "SkuPriceId",
        sub_account_type => "SubAccountType",
    }
    decimal {
        commitment_discount_quantity => "CommitmentDiscountQuantity",
        contracted_unit_price => "ContractedUnitPrice",
        list_unit_price => "ListUnitPrice",
        pricing_currency_contracted_unit_price => "PricingCurrencyContractedUnitPrice",
        pricing_currency_effective_cost => "PricingCurrencyEffectiveCost",
        pricing_currency_list_unit_price => "PricingCurrencyListUnitPrice",
    }
}

impl FocusColumns {
    /// `true` when no column holds a value.
    pub fn is_empty(&self) -> bool {
        self.texts().iter().all(Option::is_none) && self.decimals().iter().all(Option::is_none)
    }

    /// The values a line keeps: `None` when empty (a line without any of these columns carries
    /// no allocation for them), else only the columns that hold a value.
    pub fn boxed(self) -> Option<Box<FocusValues>> {
        if self.is_empty() {
            return None;
        }
        let mut v = FocusValues::default();
        for (k, t) in self.texts().iter().enumerate() {
            if let Some(t) = t {
                v.push_text(k, (*t).into());
            }
        }
        for (k, d) in self.decimals().iter().enumerate() {
            if let Some(d) = d {
                v.push_decimal(k, *d);
            }
        }
        Some(Box::new(v))
    }
}

/// The FOCUS columns a line holds, compactly: only the columns with a value, by their index in
/// [`FocusColumns::TEXT`] and [`FocusColumns::DECIMAL`] (a line of a bill that fills four of
/// the 25 keeps four entries, not 25 slots). Built from [`FocusColumns::boxed`] or pushed
/// directly by a reader; read back as the same arrays [`FocusColumns`] gives.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FocusValues {
    texts: Vec<(u8, Box<str>)>,
    decimals: Vec<(u8, Decimal)>,
}

impl FocusValues {
    /// Set text column `k` (index in [`FocusColumns::TEXT`]); a later push of the same column
    /// replaces it.
    pub fn push_text(&mut self, k: usize, v: Box<str>) {
        let k = k as u8;
        match self.texts.iter_mut().find(|(c, _)| *c == k) {
            Some(slot) => slot.1 = v,
            None => self.texts.push((k, v)),
        }
    }

    /// Set decimal column `k` (index in [`FocusColumns::DECIMAL`]).
    pub fn push_decimal(&mut self, k: usize, v: Decimal) {
        let k = k as u8;
        match self.decimals.iter_mut().find(|(c, _)| *c == k) {
            Some(slot) => slot.1 = v,
            None => self.decimals.push((k, v)),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.texts.is_empty() && self.decimals.is_empty()
    }

    /// The text columns in [`FocusColumns::TEXT`] order.
    pub fn texts(&self) -> [Option<&str>; FOCUS_TEXT_COUNT] {
        let mut out = [None; FOCUS_TEXT_COUNT];
        for (k, v) in &self.texts {
            if let Some(slot) = out.get_mut(usize::from(*k)) {
                *slot = Some(&**v);
            }
        }
        out
    }

    /// The decimal columns in [`FocusColumns::DECIMAL`] order.
    pub fn decimals(&self) -> [Option<Decimal>; FOCUS_DECIMAL_COUNT] {
        let mut out = [None; FOCUS_DECIMAL_COUNT];
        for (k, v) in &self.decimals {
            if let Some(slot) = out.get_mut(usize::from(*k)) {
                *slot = Some(*v);
            }
        }
        out
    }

    /// Text column `k` (index in [`FocusColumns::TEXT`]): for a caller that reads one column
    /// of every line and looked its index up once.
    pub fn text_at(&self, k: usize) -> Option<&str> {
        self.texts.iter().find(|(c, _)| usize::from(*c) == k).map(|(_, v)| &**v)
    }

    /// Text column `name` (FOCUS name).
    pub fn text(&self, name: &str) -> Option<&str> {
        let k = FocusColumns::TEXT.iter().position(|c| *c == name)? as u8;
        self.texts.iter().find(|(c, _)| *c == k).map(|(_, v)| &**v)
    }

    /// Decimal column `name` (FOCUS name).
    pub fn decimal(&self, name: &str) -> Option<Decimal> {
        let k = FocusColumns::DECIMAL.iter().position(|c| *c == name)? as u8;
        self.decimals.iter().find(|(c, _)| *c == k).map(|(_, v)| *v)
    }

    /// Every column by name, to change some and [`FocusColumns::boxed`] again.
    pub fn to_columns(&self) -> FocusColumns {
        FocusColumns::from_columns(self.texts().map(|t| t.map(str::to_string)), self.decimals())
    }
}

/// A table of a provider's services: (key, FOCUS ServiceCategory, FOCUS ServiceSubcategory),
/// sorted by key (each connector's `focus_tables` has one and tests it is sorted).
pub type ServiceTable = [(&'static str, &'static str, &'static str)];

/// The FOCUS category of a service a table does not list: never guessed from its name.
pub const OTHER_SERVICE: (&str, &str) = ("Other", "Other (Other)");

/// (ServiceCategory, ServiceSubcategory) of `key` in a sorted [`ServiceTable`], else
/// [`OTHER_SERVICE`].
pub fn service_category_in(table: &ServiceTable, key: Option<&str>) -> (&'static str, &'static str) {
    key.and_then(|k| table.binary_search_by(|(c, _, _)| (*c).cmp(k)).ok())
        .map(|i| (table[i].1, table[i].2))
        .unwrap_or(OTHER_SERVICE)
}

/// The name `key` has in a sorted (code, name) table.
pub fn name_in(table: &[(&'static str, &'static str)], key: &str) -> Option<&'static str> {
    table.binary_search_by(|(c, _)| (*c).cmp(key)).ok().map(|i| table[i].1)
}

/// Whether a table's keys are strictly increasing (what [`service_category_in`] and [`name_in`]
/// need).
pub fn keys_sorted<T>(table: &[T], key: impl Fn(&T) -> &str) -> bool {
    table.windows(2).all(|w| key(&w[0]) < key(&w[1]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_column_round_trips_through_its_name_and_the_column_arrays() {
        let mut f = FocusColumns::default();
        assert!(f.is_empty() && f.clone().boxed().is_none());
        for (i, name) in FocusColumns::TEXT.iter().enumerate() {
            *f.text_mut(name).expect("text column") = Some(format!("v{i}"));
        }
        for (i, name) in FocusColumns::DECIMAL.iter().enumerate() {
            *f.decimal_mut(name).expect("decimal column") = Some(Decimal::new(i as i64 + 1, 3));
        }
        let texts = f.texts().map(|t| t.map(str::to_string));
        let back = FocusColumns::from_columns(texts, f.decimals());
        assert_eq!(back, f);
        // The compact form gives the same arrays and values by name, and converts back.
        let compact = f.clone().boxed().expect("not empty");
        assert_eq!(compact.texts(), f.texts());
        assert_eq!(compact.decimals(), f.decimals());
        assert_eq!(compact.text("AvailabilityZone"), Some("v0"));
        assert_eq!(compact.decimal("ListUnitPrice"), f.list_unit_price);
        assert_eq!(compact.to_columns(), f);
        let mut only = FocusValues::default();
        only.push_text(3, "a".into());
        only.push_text(3, "b".into());
        assert_eq!(only.texts()[3], Some("b"), "a later push replaces");
        assert_eq!(only.texts().iter().flatten().count(), 1);
        assert_eq!(f.texts()[0], Some("v0"));
        assert_eq!(f.decimals()[5], Some(Decimal::new(6, 3)));
        assert!(f.text_mut("BilledCost").is_none() && f.decimal_mut("Tags").is_none());
        // Ledger names are the FOCUS names in snake case.
        for (sql, focus) in FocusColumns::TEXT_SQL
            .iter()
            .zip(FocusColumns::TEXT)
            .chain(FocusColumns::DECIMAL_SQL.iter().zip(FocusColumns::DECIMAL))
        {
            assert_eq!(sql.replace('_', ""), focus.to_lowercase(), "{sql} / {focus}");
        }
    }
}
