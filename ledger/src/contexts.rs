//! Charge contexts (migration 0014): the part of a charge line that repeats across a bill —
//! billing account and sub account, billing period, service, provider, publisher, invoice
//! issuer, currency and invoice id — stored once in `charge_contexts` and named by each row of
//! `charge_rows` through `ctx_id`. Reads see the `charges` view, which joins them back, so only
//! the writers know about this table.
//!
//! A writer keeps a [`Contexts`] cache from a context's value ([`ContextKey`]) to its id. On a
//! miss it loads the stored contexts of that billing period once, and inserts the contexts still
//! missing. Contexts are found by value, never changed and never deleted: two writers storing
//! the same context at once make two rows with equal values, which read the same.

use chrono::{DateTime, Utc};
use costledger_core::ChargeLine;
use rustc_hash::{FxHashMap, FxHashSet};

/// The context columns, in `charge_contexts`' order (the two timestamps are the 5th and 6th).
pub(crate) const CONTEXT_COLUMNS: [&str; 13] = [
    "billing_account_id",
    "billing_account_name",
    "sub_account_id",
    "sub_account_name",
    "billing_period_start",
    "billing_period_end",
    "service_name",
    "service_category",
    "provider_name",
    "publisher_name",
    "invoice_issuer_name",
    "billing_currency",
    "invoice_id",
];

/// Whether `column` of the `charges` view is stored in `charge_contexts`.
pub(crate) fn is_context_column(column: &str) -> bool {
    CONTEXT_COLUMNS.contains(&column)
}

/// The text columns of a context, in [`CONTEXT_COLUMNS`]' order without the two timestamps.
pub(crate) fn context_texts(l: &ChargeLine) -> [Option<&str>; 11] {
    [
        Some(l.billing_account_id.as_str()),
        l.billing_account_name.as_deref(),
        l.sub_account_id.as_deref(),
        l.sub_account_name.as_deref(),
        l.service_name.as_deref(),
        l.service_category.as_deref(),
        l.provider_name.as_deref(),
        l.publisher_name.as_deref(),
        l.invoice_issuer_name.as_deref(),
        Some(l.billing_currency.as_str()),
        l.invoice_id.as_deref(),
    ]
}

/// A context's values as read back: what a read that names contexts by id fills a line's
/// context fields from.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct ContextValues {
    pub(crate) billing_account_id: String,
    pub(crate) billing_account_name: Option<String>,
    pub(crate) sub_account_id: Option<String>,
    pub(crate) sub_account_name: Option<String>,
    pub(crate) billing_period_start: DateTime<Utc>,
    pub(crate) billing_period_end: DateTime<Utc>,
    pub(crate) service_name: Option<String>,
    pub(crate) service_category: Option<String>,
    pub(crate) provider_name: Option<String>,
    pub(crate) publisher_name: Option<String>,
    pub(crate) invoice_issuer_name: Option<String>,
    pub(crate) billing_currency: String,
    pub(crate) invoice_id: Option<String>,
}

/// Contexts cached per writer before the cache starts over (a bill has hundreds; this bounds
/// the memory of a ledger with years of periods at a few MB).
pub(crate) const MAX_CACHED: usize = 50_000;

/// A context's value as bytes: both timestamps in the backend's stored form (`start`, `end`),
/// then each text with a presence byte and its length. Equal bytes, equal context.
#[derive(Default)]
pub(crate) struct ContextKey(Vec<u8>);

impl ContextKey {
    pub(crate) fn set(&mut self, start: &[u8], end: &[u8], texts: &[Option<&str>; 11]) -> &[u8] {
        let k = &mut self.0;
        k.clear();
        for t in [start, end] {
            k.extend_from_slice(&(t.len() as u32).to_le_bytes());
            k.extend_from_slice(t);
        }
        push_key_texts(k, texts);
        k
    }

    pub(crate) fn bytes(&self) -> &[u8] {
        &self.0
    }

    /// The stored form of the billing period start, as given to [`set`](Self::set).
    pub(crate) fn period(&self) -> &[u8] {
        let n = u32::from_le_bytes([self.0[0], self.0[1], self.0[2], self.0[3]]) as usize;
        &self.0[4..4 + n]
    }
}

/// Append `texts` to a key: each with a presence byte and its length, so that a missing value,
/// an empty one and a value split differently across fields all make different keys.
pub(crate) fn push_key_texts(k: &mut Vec<u8>, texts: &[Option<&str>]) {
    for t in texts {
        match t {
            None => k.push(0),
            Some(t) => {
                k.push(1);
                k.extend_from_slice(&(t.len() as u32).to_le_bytes());
                k.extend_from_slice(t.as_bytes());
            }
        }
    }
}

/// A PostgreSQL timestamp's stored form in a key: microseconds since 2000 (what the server
/// keeps), so a context read back from the table has the key the loader computed.
pub(crate) fn pg_ts_key(t: DateTime<Utc>) -> [u8; 8] {
    crate::pg_binary::pg_micros(t).to_le_bytes()
}

/// A writer's cache of context ids by value.
#[derive(Default)]
pub(crate) struct Contexts {
    ids: FxHashMap<Box<[u8]>, i64>,
    /// Billing periods (stored form of their start) whose stored contexts are in `ids`.
    periods: FxHashSet<Box<[u8]>>,
}

impl Contexts {
    pub(crate) fn get(&self, key: &[u8]) -> Option<i64> {
        self.ids.get(key).copied()
    }

    pub(crate) fn insert(&mut self, key: &[u8], id: i64) {
        if self.ids.len() >= MAX_CACHED {
            self.clear();
        }
        self.ids.insert(key.into(), id);
    }

    pub(crate) fn period_loaded(&self, period: &[u8]) -> bool {
        self.periods.contains(period)
    }

    pub(crate) fn mark_period_loaded(&mut self, period: &[u8]) {
        self.periods.insert(period.into());
    }

    /// Forget everything (a transaction that inserted contexts rolled back).
    pub(crate) fn clear(&mut self) {
        self.ids.clear();
        self.periods.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_tell_a_missing_value_from_an_empty_one_and_split_fields_unambiguously() {
        let mut texts: [Option<&str>; 11] = [Some("a"); 11];
        let mut k = ContextKey::default();
        let base = k.set(b"2026-10", b"2026-11", &texts).to_vec();
        texts[2] = None;
        let missing = k.set(b"2026-10", b"2026-11", &texts).to_vec();
        texts[2] = Some("");
        let empty = k.set(b"2026-10", b"2026-11", &texts).to_vec();
        texts[2] = Some("a");
        texts[1] = Some("ab");
        texts[2] = Some("");
        let shifted = k.set(b"2026-10", b"2026-11", &texts).to_vec();
        texts[1] = Some("a");
        texts[2] = Some("ba");
        let other = k.set(b"2026-10", b"2026-11", &texts).to_vec();
        let all = [&base, &missing, &empty, &shifted, &other];
        for (i, a) in all.iter().enumerate() {
            for b in &all[i + 1..] {
                assert_ne!(a, b);
            }
        }
        assert_eq!(k.period(), b"2026-10");
    }

    #[test]
    fn the_cache_starts_over_past_its_bound() {
        let mut c = Contexts::default();
        c.mark_period_loaded(b"p");
        for i in 0..MAX_CACHED as i64 {
            c.insert(&i.to_le_bytes(), i);
        }
        assert!(c.period_loaded(b"p"));
        c.insert(b"one more", 7);
        assert_eq!(c.get(b"one more"), Some(7));
        assert_eq!(c.get(&0i64.to_le_bytes()), None);
        assert!(!c.period_loaded(b"p"), "a period is only loaded while all its contexts are cached");
    }
}
