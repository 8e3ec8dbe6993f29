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

    /// `None` when empty: a line without any of these columns carries no allocation for them.
    pub fn boxed(self) -> Option<Box<FocusColumns>> {
        (!self.is_empty()).then(|| Box::new(self))
    }
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
