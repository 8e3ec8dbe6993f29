//! FOCUS 1.2 `SkuPriceDetails`: the FOCUS-defined SKU price properties (one table) and the
//! key-value JSON text a connector stores for a line.
//!
//! FOCUS asks for a JSON object of properties shared by every charge with the same
//! `SkuPriceId`: FOCUS-defined keys spelled exactly as the spec does, with values of the
//! property's type (numbers for the numeric ones, in the property's unit, for one pricing
//! unit); custom keys start with `x_`. The column MUST be null when `SkuPriceId` is.
//! Connectors set only what their bill states; a value that does not parse as its property's
//! type (AWS writes `NA` for an unknown memory size) is left out, never guessed.

use std::collections::BTreeMap;
use std::str::FromStr;

use rust_decimal::Decimal;

use crate::line::write_json_str;
use crate::money::write_canonical;

/// The value type of a FOCUS-defined SKU price property.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PropertyKind {
    /// A JSON number, in the unit the spec names for the property.
    Numeric,
    /// A JSON string.
    Text,
}

macro_rules! sku_price_properties {
    ($($v:ident => $kind:ident, $unit:literal,)*) => {
        /// The FOCUS-defined SKU price properties (FOCUS 1.2, SkuPriceDetails).
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub enum SkuPriceProperty {
            $($v,)*
        }

        impl SkuPriceProperty {
            /// Every property, in the spec's (alphabetical) order.
            pub const ALL: &'static [SkuPriceProperty] = &[$(SkuPriceProperty::$v,)*];

            /// The key, spelled and cased as FOCUS defines it.
            pub fn key(self) -> &'static str {
                match self {
                    $(SkuPriceProperty::$v => stringify!($v),)*
                }
            }

            /// The value type FOCUS gives the property.
            pub fn kind(self) -> PropertyKind {
                match self {
                    $(SkuPriceProperty::$v => PropertyKind::$kind,)*
                }
            }

            /// The unit of a numeric property (empty for text ones).
            pub fn unit(self) -> &'static str {
                match self {
                    $(SkuPriceProperty::$v => $unit,)*
                }
            }
        }
    };
}

sku_price_properties! {
    CoreCount => Numeric, "cores",
    DiskMaxIops => Numeric, "IOPS",
    DiskSpace => Numeric, "GiB",
    DiskType => Text, "",
    GpuCount => Numeric, "GPUs",
    InstanceSeries => Text, "",
    InstanceType => Text, "",
    MemorySize => Numeric, "GiB",
    NetworkMaxIops => Numeric, "IOPS",
    NetworkMaxThroughput => Numeric, "Mbps",
    OperatingSystem => Text, "",
    Redundancy => Text, "",
    StorageClass => Text, "",
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Value {
    Number(Decimal),
    Text(String),
}

/// The properties of one line's SKU price, written as FOCUS key-value JSON (keys sorted, so the
/// same properties always give the same text).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SkuPriceDetails {
    values: BTreeMap<&'static str, Value>,
}

impl SkuPriceDetails {
    pub fn new() -> Self {
        Self::default()
    }

    /// Set `property` from the bill's text: trimmed; empty is absent; a numeric property takes
    /// an exact decimal (`2`, `0.5`) with, when `unit_suffix` is given, that suffix after it
    /// (`8 GiB`). Returns whether the value was taken (text that is not of the property's type
    /// is left out).
    pub fn set(&mut self, property: SkuPriceProperty, raw: Option<&str>, unit_suffix: Option<&str>) -> bool {
        let Some(raw) = raw.map(str::trim).filter(|v| !v.is_empty()) else { return false };
        let value = match property.kind() {
            PropertyKind::Text => Value::Text(raw.to_string()),
            PropertyKind::Numeric => {
                let number = match unit_suffix {
                    Some(unit) => match raw.strip_suffix(unit) {
                        Some(n) => n.trim_end(),
                        None => return false,
                    },
                    None => raw,
                };
                match Decimal::from_str(number) {
                    Ok(d) if d >= Decimal::ZERO => Value::Number(d),
                    _ => return false,
                }
            }
        };
        self.values.insert(property.key(), value);
        true
    }

    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }

    /// The JSON object text (`None` when no property is set): numbers in their canonical exact
    /// form, strings JSON-escaped, keys in sorted order.
    pub fn to_json(&self) -> Option<String> {
        if self.values.is_empty() {
            return None;
        }
        let mut out = vec![b'{'];
        for (i, (k, v)) in self.values.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            write_json_str(&mut out, k);
            out.push(b':');
            match v {
                Value::Number(d) => write_canonical(&mut out, *d),
                Value::Text(s) => write_json_str(&mut out, s),
            }
        }
        out.push(b'}');
        // Only JSON punctuation, escaped UTF-8 text and ASCII digits were written.
        String::from_utf8(out).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_the_specs_spelling_and_kinds_its_types() {
        let keys: Vec<&str> = SkuPriceProperty::ALL.iter().map(|p| p.key()).collect();
        let mut sorted = keys.clone();
        sorted.sort_unstable();
        assert_eq!(keys, sorted, "the table is in the spec's alphabetical order");
        assert_eq!(keys.len(), 13);
        assert!(keys.contains(&"NetworkMaxThroughput") && keys.contains(&"InstanceSeries"));
        assert_eq!(SkuPriceProperty::MemorySize.kind(), PropertyKind::Numeric);
        assert_eq!(SkuPriceProperty::MemorySize.unit(), "GiB");
        assert_eq!(SkuPriceProperty::OperatingSystem.kind(), PropertyKind::Text);
    }

    #[test]
    fn numbers_are_exact_json_numbers_and_text_is_escaped() {
        let mut d = SkuPriceDetails::new();
        assert!(d.set(SkuPriceProperty::InstanceType, Some(" m5.large "), None));
        assert!(d.set(SkuPriceProperty::CoreCount, Some("2"), None));
        assert!(d.set(SkuPriceProperty::MemorySize, Some("0.50 GiB"), Some("GiB")));
        assert!(d.set(SkuPriceProperty::OperatingSystem, Some("Linux \"x\""), None));
        assert_eq!(
            d.to_json().as_deref(),
            Some(r#"{"CoreCount":2,"InstanceType":"m5.large","MemorySize":0.5,"OperatingSystem":"Linux \"x\""}"#)
        );
        let parsed: serde_json::Value = serde_json::from_str(&d.to_json().unwrap_or_default()).expect("valid JSON");
        assert_eq!(parsed["MemorySize"], serde_json::json!(0.5));
    }

    #[test]
    fn values_not_of_the_propertys_type_are_left_out() {
        let mut d = SkuPriceDetails::new();
        assert!(!d.set(SkuPriceProperty::MemorySize, Some("NA"), Some("GiB")));
        assert!(!d.set(SkuPriceProperty::MemorySize, Some("8 GB"), Some("GiB")));
        assert!(!d.set(SkuPriceProperty::CoreCount, Some("two"), None));
        assert!(!d.set(SkuPriceProperty::GpuCount, Some("-1"), None));
        assert!(!d.set(SkuPriceProperty::StorageClass, Some("  "), None));
        assert!(!d.set(SkuPriceProperty::StorageClass, None, None));
        assert!(d.is_empty());
        assert_eq!(d.to_json(), None);
    }
}
