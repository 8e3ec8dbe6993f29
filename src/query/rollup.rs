//! Daily rollups: a load's lines summed per local day over every query dimension but the
//! resource id and the SKU, with only the configured tag keys. The loader feeds every staged
//! line to a [`RollupBuilder`]; the ledger writes the rows in the load's commit transaction.
//! Pure.

use std::collections::BTreeMap;

use chrono::{DateTime, Datelike, NaiveDate, Utc};
use costledger_core::{BillingPeriod, ChargeLine, ExactSum, MoneyError};
use rustc_hash::FxHashMap;

use super::Dimension;
use crate::allocation::normalise_key;
use crate::config::Config;
use crate::ledger::{Rollup, RollupRow};

/// What a rollup is built with. A rollup built with another spec (another time zone, other
/// tag keys or aliases) is not read: queries scan the charges until it is rebuilt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RollupSpec {
    pub tz: chrono_tz::Tz,
    /// Normalised tag keys kept, sorted.
    pub tag_keys: Vec<String>,
    aliases: BTreeMap<String, String>,
}

impl RollupSpec {
    /// `query.rollup_tags` plus the allocation's owner tags, normalised like every tag key.
    pub fn from_config(config: &Config) -> RollupSpec {
        let aliases = config.allocation.tag_aliases.clone();
        let mut tag_keys: Vec<String> = config
            .rollup_tags
            .iter()
            .chain(&config.allocation.owner_tags)
            .map(|k| normalise_key(&aliases, k))
            .filter(|k| !k.is_empty())
            .collect();
        tag_keys.sort();
        tag_keys.dedup();
        RollupSpec { tz: config.timezone, tag_keys, aliases }
    }

    /// The text stored with a load's rollup.
    pub fn fingerprint(&self) -> String {
        let aliases: Vec<String> = self.aliases.iter().map(|(a, k)| format!("{a}>{k}")).collect();
        format!("v2 tz={} tags={} aliases={}", self.tz.name(), self.tag_keys.join(","), aliases.join(","))
    }

    /// Whether the rollup holds dimension `d` (everything but the resource id, the SKU, the
    /// allocation, the commitment columns and other tags). The SKU is left out because it has
    /// nearly the cardinality of a resource on real bills (an AWS account bills thousands of
    /// SKUs, an Azure one thousands of meters): with it, a rollup is barely smaller than the
    /// charges and is given up (measured on 1M `sample` lines: 972,852 rows with the SKU, 36,875
    /// without). SKU questions are answered by the database's grouped read of the charges.
    pub fn holds(&self, d: &Dimension) -> bool {
        if d.needs_full_rows() {
            return false;
        }
        match d {
            Dimension::Resource | Dimension::Sku | Dimension::Owner | Dimension::Allocation => false,
            Dimension::Tag(k) => self.tag_keys.binary_search(k).is_ok(),
            _ => true,
        }
    }
}

/// At most this many rows are held in memory for one load (about 1.2 KB each with their index):
/// past it they are written out as a chunk of the load's rollup and summing starts afresh, so
/// memory stays bounded whatever the bill.
pub const MAX_ROLLUP_ROWS: usize = 20_000;

/// Charge starts whose local day is remembered (a month of hourly starts is 744).
const DAY_CACHE: usize = 8_192;

/// Sums lines into rollup rows; memory grows with the distinct day × dimension combinations
/// (up to [`MAX_ROLLUP_ROWS`]), not with the lines.
pub struct RollupBuilder<'s> {
    spec: &'s RollupSpec,
    /// A row's key, written as one contiguous byte string (see [`write_key`]) → the row's index:
    /// a line that joins a row costs one hash and one comparison of its key bytes, instead of a
    /// dozen comparisons of strings scattered over the heap.
    index: FxHashMap<Box<[u8]>, usize>,
    /// The current line's key (reused).
    key: Vec<u8>,
    rows: Vec<RollupRow>,
    /// Raw tag key → normalised key, when it is a kept key.
    keys: FxHashMap<String, Option<String>>,
    last_day: Option<(DateTime<Utc>, NaiveDate)>,
    /// Local day of each charge start seen (hourly bills repeat a few hundred starts a month;
    /// the time-zone conversion was the builder's largest cost). Cleared past [`DAY_CACHE`].
    days: FxHashMap<DateTime<Utc>, NaiveDate>,
    /// The last billing period start and its `(year, month)`.
    last_period: Option<(DateTime<Utc>, BillingPeriod)>,
    /// Rows held before [`is_full`](Self::is_full) says to write them out.
    cap: usize,
    /// Lines added so far.
    lines: u64,
    /// Chunks handed out by [`take_rows`](Self::take_rows).
    chunks: u64,
    /// Lines per row the first `cap` rows must reach for the rollup to be worth keeping.
    min_compression: u64,
    /// The rollup would not be much smaller than the charges: given up (no rollup).
    gave_up: bool,
}

/// A rollup whose first [`MAX_ROLLUP_ROWS`] rows sum fewer than this many lines each is given up
/// before anything is written: reading it would cost about as much as reading the charges, and
/// writing it would double the import (measured: 1M synthetic lines made 972,852 rollup rows).
pub const MIN_ROLLUP_COMPRESSION: u64 = 4;

impl<'s> RollupBuilder<'s> {
    pub fn new(spec: &'s RollupSpec) -> RollupBuilder<'s> {
        RollupBuilder {
            spec,
            index: FxHashMap::default(),
            key: Vec::new(),
            rows: Vec::new(),
            keys: FxHashMap::default(),
            last_day: None,
            days: FxHashMap::default(),
            last_period: None,
            cap: MAX_ROLLUP_ROWS,
            lines: 0,
            chunks: 0,
            min_compression: MIN_ROLLUP_COMPRESSION,
            gave_up: false,
        }
    }

    /// Another give-up threshold (tests: 0 keeps every rollup).
    pub fn with_min_compression(mut self, lines_per_row: u64) -> Self {
        self.min_compression = lines_per_row;
        self
    }

    /// A smaller chunk size (tests: several chunks from a few lines).
    pub fn with_cap(mut self, cap: usize) -> Self {
        self.cap = cap.max(1);
        self
    }

    pub fn add(&mut self, l: &ChargeLine) -> Result<(), MoneyError> {
        if self.gave_up {
            return Ok(());
        }
        self.lines += 1;
        let day = match self.last_day {
            Some((t, d)) if t == l.charge_period_start => d,
            _ => {
                if self.days.len() >= DAY_CACHE {
                    self.days.clear();
                }
                let tz = self.spec.tz;
                let d = *self
                    .days
                    .entry(l.charge_period_start)
                    .or_insert_with(|| l.charge_period_start.with_timezone(&tz).date_naive());
                self.last_day = Some((l.charge_period_start, d));
                d
            }
        };
        let bp = match self.last_period {
            Some((t, bp)) if t == l.billing_period_start => bp,
            _ => {
                let bp = BillingPeriod::of(l.billing_period_start);
                self.last_period = Some((l.billing_period_start, bp));
                bp
            }
        };
        let mut tags: Vec<(&str, &str)> = Vec::new();
        if !self.spec.tag_keys.is_empty() {
            for k in l.tags.keys() {
                if !self.keys.contains_key(k.as_str()) {
                    let n = normalise_key(&self.spec.aliases, k);
                    let keep = self.spec.tag_keys.binary_search(&n).is_ok().then_some(n);
                    self.keys.insert(k.clone(), keep);
                }
            }
            for (k, v) in &l.tags {
                // The first tag of a normalised key wins (as the allocator reads them).
                if let Some(Some(nk)) = self.keys.get(k.as_str())
                    && !tags.iter().any(|(x, _)| x == nk)
                {
                    tags.push((nk.as_str(), v.as_str()));
                }
            }
            tags.sort_unstable();
        }
        let class = l.charge_class.map(|c| c.as_str());
        write_key(&mut self.key, day, bp, l, class, &tags);
        let i = match self.index.get(self.key.as_slice()) {
            Some(&i) => i,
            None => {
                let json = (!tags.is_empty()).then(|| {
                    let m: BTreeMap<&str, &str> = tags.iter().copied().collect();
                    serde_json::to_string(&m).unwrap_or_default()
                });
                self.rows.push(RollupRow {
                    day: day.format("%Y-%m-%d").to_string(),
                    billing_period: bp.to_string(),
                    provider_name: l.provider_name.clone(),
                    billing_account_id: l.billing_account_id.clone(),
                    sub_account_id: l.sub_account_id.clone(),
                    service_name: l.service_name.clone(),
                    service_category: l.service_category.clone(),
                    region_id: l.region_id.clone(),
                    charge_category: l.charge_category.as_str().to_string(),
                    charge_class: class.map(str::to_string),
                    pricing_unit: l.pricing_unit.clone(),
                    billing_currency: l.billing_currency.clone(),
                    tags: json,
                    ..Default::default()
                });
                let i = self.rows.len() - 1;
                self.index.insert(self.key.as_slice().into(), i);
                i
            }
        };
        let r = &mut self.rows[i];
        r.lines += 1;
        r.billed_cost.add(l.billed_cost)?;
        for (sum, v) in [
            (&mut r.effective_cost, l.effective_cost),
            (&mut r.list_cost, l.list_cost),
            (&mut r.contracted_cost, l.contracted_cost),
            (&mut r.pricing_quantity, l.pricing_quantity),
            (&mut r.consumed_quantity, l.consumed_quantity),
        ] {
            if let Some(v) = v {
                sum.get_or_insert(ExactSum::ZERO).add(v)?;
            }
        }
        Ok(())
    }

    /// At least [`MAX_ROLLUP_ROWS`] rows are held: time to [`take_rows`](Self::take_rows) and
    /// write them out.
    pub fn is_full(&mut self) -> bool {
        if self.gave_up || self.rows.len() < self.cap {
            return false;
        }
        let rows = self.rows.len() as u64;
        if self.chunks == 0 && self.lines < self.min_compression.saturating_mul(rows) {
            // Nothing written yet: give up now, with nothing to undo.
            self.gave_up = true;
            self.take_rows();
            self.chunks = 0;
            return false;
        }
        true
    }

    /// The rows so far, sorted, and start afresh. Rollup rows are additive (a query sums every
    /// row of a key), so a load's rollup may hold one key in several chunks: memory stays
    /// bounded by [`MAX_ROLLUP_ROWS`] whatever the bill.
    pub fn take_rows(&mut self) -> Vec<RollupRow> {
        self.chunks += 1;
        self.index.clear();
        let mut rows = std::mem::take(&mut self.rows);
        rows.sort();
        rows
    }

    /// The remaining rows, sorted (deterministic), with the spec they were built with; `None`
    /// when the rollup was given up (see [`MIN_ROLLUP_COMPRESSION`]).
    pub fn finish(mut self) -> Option<Rollup> {
        if self.gave_up {
            return None;
        }
        Some(Rollup { spec: self.spec.fingerprint(), rows: self.take_rows() })
    }
}

/// A rollup row's key as one byte string: the day, the billing period, then each dimension
/// (absent and empty told apart) and the kept tags, every text length-prefixed so no two keys
/// write the same bytes.
fn write_key(
    out: &mut Vec<u8>,
    day: NaiveDate,
    bp: BillingPeriod,
    l: &ChargeLine,
    class: Option<&str>,
    tags: &[(&str, &str)],
) {
    fn text(out: &mut Vec<u8>, s: &str) {
        out.extend_from_slice(&(s.len() as u64).to_le_bytes());
        out.extend_from_slice(s.as_bytes());
    }
    fn opt(out: &mut Vec<u8>, s: Option<&str>) {
        match s {
            Some(s) => {
                out.push(1);
                text(out, s);
            }
            None => out.push(0),
        }
    }
    out.clear();
    out.extend_from_slice(&day.num_days_from_ce().to_le_bytes());
    out.extend_from_slice(&bp.year.to_le_bytes());
    out.extend_from_slice(&bp.month.to_le_bytes());
    opt(out, l.provider_name.as_deref());
    text(out, &l.billing_account_id);
    opt(out, l.sub_account_id.as_deref());
    opt(out, l.service_name.as_deref());
    opt(out, l.service_category.as_deref());
    opt(out, l.region_id.as_deref());
    text(out, l.charge_category.as_str());
    opt(out, class);
    opt(out, l.pricing_unit.as_deref());
    text(out, &l.billing_currency);
    out.extend_from_slice(&(tags.len() as u64).to_le_bytes());
    for (k, v) in tags {
        text(out, k);
        text(out, v);
    }
}
