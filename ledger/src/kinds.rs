//! Charge kinds (migration 0016): the low-cardinality texts of a charge line that do not depend
//! on its account — charge category and class, charge frequency, region id and name,
//! availability zone, pricing and consumed units, pricing category and currency, resource type,
//! service subcategory, the two account types, the commitment discount's category, type, status
//! and unit, the capacity reservation's status — stored once in `charge_kinds` and named by each
//! row of `charge_rows` through `kind_id`, as contexts are ([`crate::contexts`]). Reads see the
//! `charges` view, which joins them back, so only the writers know about this table.
//!
//! A writer keeps a [`Kinds`] cache from a kind's value ([`KindKey`]) to its id. On its first
//! miss it loads the stored kinds (at most [`MAX_CACHED`]), and stores the kinds still missing.
//! Kinds are found by value, never changed and never deleted: two writers storing the same kind
//! at once make two rows with equal values, which read the same.

use costledger_core::{ChargeLine, FOCUS_TEXT_COUNT};
use rustc_hash::FxHashMap;

/// Columns of a kind.
pub(crate) const KIND_COUNT: usize = 19;

/// The kind columns, in `charge_kinds`' order.
pub(crate) const KIND_COLUMNS: [&str; KIND_COUNT] = [
    "charge_category",
    "charge_class",
    "charge_frequency",
    "region_id",
    "region_name",
    "availability_zone",
    "pricing_unit",
    "consumed_unit",
    "pricing_category",
    "pricing_currency",
    "resource_type",
    "service_subcategory",
    "billing_account_type",
    "sub_account_type",
    "commitment_discount_category",
    "commitment_discount_type",
    "commitment_discount_status",
    "commitment_discount_unit",
    "capacity_reservation_status",
];

/// Whether `column` of the `charges` view is stored in `charge_kinds`.
pub(crate) fn is_kind_column(column: &str) -> bool {
    KIND_COLUMNS.contains(&column)
}

/// Which of the FOCUS text columns (in `FocusColumns::TEXT` order) are kind columns, and for
/// each of those, its place in [`KIND_COLUMNS`].
pub(crate) fn focus_kind_slots() -> &'static [Option<usize>; FOCUS_TEXT_COUNT] {
    static SLOTS: std::sync::OnceLock<[Option<usize>; FOCUS_TEXT_COUNT]> = std::sync::OnceLock::new();
    SLOTS.get_or_init(|| {
        std::array::from_fn(|i| {
            let column = crate::CHARGE_COLUMNS[crate::FOCUS_AT + i];
            KIND_COLUMNS.iter().position(|k| *k == column)
        })
    })
}

/// The kind columns of a line, in [`KIND_COLUMNS`]' order.
pub(crate) fn kind_texts(l: &ChargeLine) -> [Option<&str>; KIND_COUNT] {
    let mut t: [Option<&str>; KIND_COUNT] = [None; KIND_COUNT];
    t[0] = Some(l.charge_category.as_str());
    t[1] = l.charge_class.map(|c| c.as_str());
    t[3] = l.region_id.as_deref();
    t[6] = l.pricing_unit.as_deref();
    t[7] = l.consumed_unit.as_deref();
    if let Some(f) = l.focus.as_deref() {
        for (v, slot) in f.texts().into_iter().zip(focus_kind_slots()) {
            if let Some(k) = slot {
                t[*k] = v;
            }
        }
    }
    t
}

/// For each column of `CHARGE_COLUMNS` (and any column after them), its place in
/// [`KIND_COLUMNS`] when it is a kind column.
fn charge_column_kind_slots() -> &'static [Option<usize>] {
    static SLOTS: std::sync::OnceLock<Vec<Option<usize>>> = std::sync::OnceLock::new();
    SLOTS.get_or_init(|| crate::CHARGE_COLUMNS.iter().map(|c| KIND_COLUMNS.iter().position(|k| k == c)).collect())
}

/// A charge row read without its kind columns (`charge_select_without_kinds`), with them
/// filled from the kind the row names.
pub(crate) struct KindFilled<'a, R> {
    pub(crate) row: &'a R,
    pub(crate) kind: &'a [Option<String>; KIND_COUNT],
}

impl<R: crate::ChargeRow> crate::ChargeRow for KindFilled<'_, R> {
    fn text(&self, i: usize) -> crate::Result<Option<&str>> {
        match charge_column_kind_slots().get(i).copied().flatten() {
            Some(k) => Ok(self.kind[k].as_deref()),
            None => self.row.text(i),
        }
    }

    fn int(&self, i: usize) -> crate::Result<i64> {
        self.row.int(i)
    }
}

/// Kinds cached per writer before the cache starts over (a bill has tens to thousands).
pub(crate) const MAX_CACHED: usize = 50_000;

/// A kind's value as bytes (`push_key_texts`). Equal bytes, equal kind.
#[derive(Default)]
pub(crate) struct KindKey(Vec<u8>);

impl KindKey {
    pub(crate) fn set(&mut self, texts: &[Option<&str>; KIND_COUNT]) -> &[u8] {
        self.0.clear();
        crate::contexts::push_key_texts(&mut self.0, texts);
        &self.0
    }

    pub(crate) fn bytes(&self) -> &[u8] {
        &self.0
    }
}

/// A writer's cache of kind ids by value.
#[derive(Default)]
pub(crate) struct Kinds {
    ids: FxHashMap<Box<[u8]>, i64>,
    /// Whether the stored kinds (up to [`MAX_CACHED`]) are in `ids`.
    loaded: bool,
}

impl Kinds {
    pub(crate) fn get(&self, key: &[u8]) -> Option<i64> {
        self.ids.get(key).copied()
    }

    pub(crate) fn insert(&mut self, key: &[u8], id: i64) {
        if self.ids.len() >= MAX_CACHED {
            self.clear();
        }
        self.ids.insert(key.into(), id);
    }

    pub(crate) fn loaded(&self) -> bool {
        self.loaded
    }

    pub(crate) fn mark_loaded(&mut self) {
        self.loaded = true;
    }

    /// Forget everything (a transaction that stored kinds rolled back).
    pub(crate) fn clear(&mut self) {
        self.ids.clear();
        self.loaded = false;
    }
}

/// The statement reading the stored kinds into a cache (oldest first, at most [`MAX_CACHED`]).
pub(crate) fn select_stored_sql() -> String {
    format!("SELECT id, {} FROM charge_kinds ORDER BY id LIMIT {MAX_CACHED}", KIND_COLUMNS.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;
    use costledger_core::{ChargeCategory, FocusColumns};

    #[test]
    fn keys_tell_a_missing_value_from_an_empty_one_and_split_fields_unambiguously() {
        let mut texts: [Option<&str>; KIND_COUNT] = [Some("a"); KIND_COUNT];
        let mut k = KindKey::default();
        let base = k.set(&texts).to_vec();
        texts[2] = None;
        let missing = k.set(&texts).to_vec();
        texts[2] = Some("");
        let empty = k.set(&texts).to_vec();
        texts[1] = Some("ab");
        let shifted = k.set(&texts).to_vec();
        texts[1] = Some("a");
        texts[2] = Some("ba");
        let other = k.set(&texts).to_vec();
        let all = [&base, &missing, &empty, &shifted, &other];
        for (i, a) in all.iter().enumerate() {
            for b in &all[i + 1..] {
                assert_ne!(a, b);
            }
        }
    }

    #[test]
    fn every_kind_column_is_a_charge_column_and_a_line_fills_each_from_its_own_field() {
        for c in KIND_COLUMNS {
            assert!(crate::CHARGE_COLUMNS.contains(&c), "{c}");
        }
        let focus: Vec<&str> = focus_kind_slots().iter().flatten().map(|k| KIND_COLUMNS[*k]).collect();
        // Five kind columns are core fields of a line, the other fourteen FOCUS columns.
        assert_eq!(focus.len(), KIND_COUNT - 5, "{focus:?}");
        // Each FOCUS kind column set to its own name: the kind holds each name in its place.
        let mut values: [Option<String>; FOCUS_TEXT_COUNT] = std::array::from_fn(|_| None);
        for (i, slot) in focus_kind_slots().iter().enumerate() {
            if let Some(k) = slot {
                values[i] = Some(KIND_COLUMNS[*k].to_string());
            }
        }
        let t0 = chrono::DateTime::UNIX_EPOCH;
        let line = ChargeLine {
            billing_account_id: "a".into(),
            billing_account_name: None,
            sub_account_id: None,
            sub_account_name: None,
            billing_period_start: t0,
            billing_period_end: t0,
            charge_period_start: t0,
            charge_period_end: t0,
            charge_category: ChargeCategory::Usage,
            charge_class: None,
            charge_description: Some("not a kind".into()),
            service_name: None,
            service_category: None,
            provider_name: None,
            publisher_name: None,
            invoice_issuer_name: None,
            region_id: Some("region_id".into()),
            resource_id: Some("not a kind".into()),
            resource_name: None,
            sku_id: None,
            billed_cost: rust_decimal::Decimal::ONE,
            effective_cost: None,
            list_cost: None,
            contracted_cost: None,
            billing_currency: "USD".into(),
            pricing_quantity: None,
            pricing_unit: Some("pricing_unit".into()),
            consumed_quantity: None,
            consumed_unit: Some("consumed_unit".into()),
            commitment_discount_id: None,
            invoice_id: None,
            tags: Default::default(),
            focus: FocusColumns::from_columns(values, Default::default()).boxed(),
            x_extra: Default::default(),
            source_ref: None,
        };
        let t = kind_texts(&line);
        for (k, c) in KIND_COLUMNS.iter().enumerate() {
            match *c {
                "charge_category" => assert_eq!(t[k], Some("Usage")),
                "charge_class" => assert_eq!(t[k], None),
                c => assert_eq!(t[k], Some(c), "{c}"),
            }
        }
    }

    #[test]
    fn the_cache_starts_over_past_its_bound() {
        let mut c = Kinds::default();
        c.mark_loaded();
        for i in 0..MAX_CACHED as i64 {
            c.insert(&i.to_le_bytes(), i);
        }
        assert!(c.loaded());
        c.insert(b"one more", 7);
        assert_eq!(c.get(b"one more"), Some(7));
        assert_eq!(c.get(&0i64.to_le_bytes()), None);
        assert!(!c.loaded(), "the stored kinds are only loaded while all of them are cached");
    }
}
