//! Daily rollups, two kinds ([`RollupKind`]): the daily rollup sums a load's lines per local day
//! over every query dimension but the resource id, the SKU and the commitment columns, with only
//! the configured tag keys; the pricing rollup sums them per local day over the provider,
//! service, SKU, pricing unit, charge category and class, pricing category and commitment
//! columns (no accounts, regions or tags: what explanations and commitment questions group by).
//! The loader feeds every staged line to one [`RollupBuilder`] per kind; the ledger writes the
//! rows in the load's commit transaction. Pure.

use std::collections::BTreeMap;

use chrono::{DateTime, Datelike, NaiveDate, Utc};
use costledger_core::text::{push_key_opt as key_opt, push_key_text as key_text};
use costledger_core::{BillingPeriod, ChargeLine, ExactSum, MoneyError};
use indexmap::{IndexMap, IndexSet};
use rustc_hash::{FxBuildHasher, FxHashMap};

use super::Dimension;
use crate::allocation::normalise_key;
use crate::config::Config;
use crate::ledger::{Rollup, RollupKind, RollupRow};

/// What a rollup is built with. A rollup built with another spec (another time zone, other
/// tag keys or aliases) is not read: queries scan the charges until it is rebuilt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RollupSpec {
    pub kind: RollupKind,
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
        RollupSpec { kind: RollupKind::Daily, tz: config.timezone, tag_keys, aliases }
    }

    /// The pricing rollup's spec: the time zone only (it holds no tags).
    pub fn pricing(config: &Config) -> RollupSpec {
        RollupSpec { kind: RollupKind::Pricing, tz: config.timezone, tag_keys: Vec::new(), aliases: BTreeMap::new() }
    }

    /// Every kind's spec, in [`RollupKind::ALL`]'s order (the order a query tries them in).
    pub fn all(config: &Config) -> Vec<RollupSpec> {
        RollupKind::ALL
            .iter()
            .map(|k| match k {
                RollupKind::Daily => RollupSpec::from_config(config),
                RollupKind::Pricing => RollupSpec::pricing(config),
            })
            .collect()
    }

    /// The text stored with a load's rollup.
    pub fn fingerprint(&self) -> String {
        match self.kind {
            RollupKind::Daily => {
                let aliases: Vec<String> = self.aliases.iter().map(|(a, k)| format!("{a}>{k}")).collect();
                format!("v2 tz={} tags={} aliases={}", self.tz.name(), self.tag_keys.join(","), aliases.join(","))
            }
            RollupKind::Pricing => format!("p1 tz={}", self.tz.name()),
        }
    }

    /// Whether the rollup holds dimension `d`. The daily rollup holds everything but the
    /// resource id, the SKU, the allocation, the commitment columns and other tags. It leaves the
    /// SKU out because beside the accounts, regions and tags it has nearly the cardinality of a
    /// resource on real bills (an AWS account bills thousands of SKUs, an Azure one thousands of
    /// meters): with it, a rollup is barely smaller than the charges and is given up (measured on
    /// 1M `sample` lines: 972,852 rows with the SKU, 36,875 without).
    ///
    /// The pricing rollup holds the SKU without the accounts, regions and tags that multiply it
    /// (on the same 1M lines, 120 SKUs: 30,578 rows; on 10M, 39,733), and the commitment columns
    /// without the tags and accounts that split every key into covered and on-demand rows.
    pub fn holds(&self, d: &Dimension) -> bool {
        match self.kind {
            RollupKind::Daily => {
                if d.needs_full_rows() {
                    return false;
                }
                match d {
                    Dimension::Resource | Dimension::Sku | Dimension::Owner | Dimension::Allocation => false,
                    Dimension::Tag(k) => self.tag_keys.binary_search(k).is_ok(),
                    _ => true,
                }
            }
            RollupKind::Pricing => matches!(
                d,
                Dimension::Provider
                    | Dimension::ServiceCategory
                    | Dimension::Service
                    | Dimension::Sku
                    | Dimension::PricingUnit
                    | Dimension::ChargeCategory
                    | Dimension::ChargeClass
                    | Dimension::PricingCategory
                    | Dimension::Commitment
                    | Dimension::CommitmentType
                    | Dimension::CommitmentCategory
                    | Dimension::CommitmentStatus
                    | Dimension::Source
            ),
        }
    }
}

/// At most this many rows are held in memory per kind for one load (about 250 bytes each: sums
/// and index slot, plus their dimensions' key bytes, shared by the rows of every day): past it
/// they are written out as a chunk of the load's rollup and summing starts afresh, so memory
/// stays bounded whatever the bill. A bill in no particular order (the `sample` bills are
/// shuffled across the month) with more distinct keys than this writes each key once per chunk:
/// 20,000 made 315,870 daily and 2,436,801 pricing rows of 26,871 and 39,733 keys on 10M lines.
pub const MAX_ROLLUP_ROWS: usize = 50_000;

/// Charge starts whose local day is remembered (a month of hourly starts is 744).
const DAY_CACHE: usize = 8_192;

/// Sums lines into rollup rows; memory grows with the distinct day × dimension combinations
/// (up to [`MAX_ROLLUP_ROWS`]), not with the lines.
pub struct RollupBuilder<'s> {
    spec: &'s RollupSpec,
    /// A row's dimensions but its day, written as one contiguous byte string (see
    /// [`write_key`]), interned: a line costs one hash and one comparison of its key bytes in a
    /// table of the distinct dimension sets, which repeat over the days and so number a few
    /// thousand where the rows number tens of thousands. That table stays in the CPU's cache;
    /// one table of every row's key bytes and sums did not, and its lookups (two or three cache
    /// misses a line on shuffled bills) were a fifth of the client's import time. Texts are decoded
    /// from these bytes when rows are taken.
    dims: IndexSet<Box<[u8]>, FxBuildHasher>,
    /// A row's key ([`row_key`]: its day and its dimensions' index in `dims`) → its sums, in the
    /// order rows first appeared.
    rows: IndexMap<u64, RowSums, FxBuildHasher>,
    /// The current line's dimension key (reused).
    key: Vec<u8>,
    /// Raw tag key → the index of its normalised key in the spec's `tag_keys`, when it is a
    /// kept key (an index, so one lookup per tag both fills and reads this).
    keys: FxHashMap<String, Option<usize>>,
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
    /// The early look at two fifths of the cap was taken.
    probed: bool,
}

/// When a builder first holds two fifths of its cap, before anything is written, it gives up
/// if its lines so far number fewer than 1.28 per row: in a bill whose lines come in no
/// particular order, that many rows after that few lines means more distinct keys than the cap
/// (K keys shuffled show `K·(1 − e^(−L/K))` after L lines; K ≤ cap needs L ≥ cap·ln(5/3) =
/// 1.277 × two fifths of the cap), so the rollup would be written in chunks of rows that sum
/// fewer than [`MIN_ROLLUP_COMPRESSION`] lines each. Giving up there holds 20,000 rows instead of
/// 50,000: a CUR month with hundreds of thousands of day × SKU keys no longer fills the pricing
/// builder to its cap first (10 to 25 MB of peak RSS).
pub const PROBE_LINES_PER_100_ROWS: u64 = 128;

/// A rollup whose first [`MAX_ROLLUP_ROWS`] rows sum fewer than this many lines each is given up
/// before anything is written: reading it would cost about as much as reading the charges, and
/// writing it would double the import (measured: 1M synthetic lines made 972,852 rollup rows).
pub const MIN_ROLLUP_COMPRESSION: u64 = 4;

impl<'s> RollupBuilder<'s> {
    pub fn new(spec: &'s RollupSpec) -> RollupBuilder<'s> {
        RollupBuilder {
            spec,
            dims: IndexSet::default(),
            rows: IndexMap::default(),
            key: Vec::new(),
            keys: FxHashMap::default(),
            last_day: None,
            days: FxHashMap::default(),
            last_period: None,
            cap: MAX_ROLLUP_ROWS,
            lines: 0,
            chunks: 0,
            min_compression: MIN_ROLLUP_COMPRESSION,
            gave_up: false,
            probed: false,
        }
    }

    pub fn kind(&self) -> RollupKind {
        self.spec.kind
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
        if self.spec.kind == RollupKind::Daily && !self.spec.tag_keys.is_empty() {
            let spec = self.spec;
            for (k, v) in &l.tags {
                let keep = match self.keys.get(k.as_str()) {
                    Some(keep) => *keep,
                    None => {
                        let keep = spec.tag_keys.binary_search(&normalise_key(&spec.aliases, k)).ok();
                        self.keys.insert(k.clone(), keep);
                        keep
                    }
                };
                // The first tag of a normalised key wins (as the allocator reads them).
                if let Some(nk) = keep.map(|i| spec.tag_keys[i].as_str())
                    && !tags.iter().any(|(x, _)| *x == nk)
                {
                    tags.push((nk, v.as_str()));
                }
            }
            tags.sort_unstable();
        }
        let class = l.charge_class.map(|c| c.as_str());
        match self.spec.kind {
            RollupKind::Daily => write_key(&mut self.key, bp, l, class, &tags),
            RollupKind::Pricing => write_pricing_key(&mut self.key, bp, l, class),
        }
        let dims = match self.dims.get_index_of(self.key.as_slice()) {
            Some(i) => i,
            None => self.dims.insert_full(self.key.as_slice().into()).0,
        };
        let r = self.rows.entry(row_key(day, dims)).or_default();
        r.lines += 1;
        r.sums[0].add(l.billed_cost)?;
        for (i, v) in [l.effective_cost, l.list_cost, l.contracted_cost, l.pricing_quantity, l.consumed_quantity]
            .into_iter()
            .enumerate()
        {
            if let Some(v) = v {
                r.present |= 1 << i;
                r.sums[i + 1].add(v)?;
            }
        }
        Ok(())
    }

    /// At least [`MAX_ROLLUP_ROWS`] rows are held: time to [`take_rows`](Self::take_rows) and
    /// write them out.
    pub fn is_full(&mut self) -> bool {
        if self.gave_up {
            return false;
        }
        let rows = self.rows.len() as u64;
        // The early look (see [`PROBE_LINES_PER_100_ROWS`]): at two fifths of the cap, lines
        // nearly all distinct so far mean more distinct keys than the cap holds.
        if self.chunks == 0
            && self.min_compression > 0
            && !self.probed
            && rows.saturating_mul(5) >= (self.cap as u64).saturating_mul(2)
        {
            self.probed = true;
            if self.lines.saturating_mul(100) < rows.saturating_mul(PROBE_LINES_PER_100_ROWS) {
                self.gave_up = true;
                self.release();
                return false;
            }
        }
        if self.rows.len() < self.cap {
            return false;
        }
        if self.chunks == 0 && self.lines < self.min_compression.saturating_mul(rows) {
            // Nothing written yet: give up now, with nothing to undo.
            self.gave_up = true;
            self.release();
            return false;
        }
        true
    }

    /// Frees what a given-up builder held.
    fn release(&mut self) {
        self.dims = IndexSet::default();
        self.rows = IndexMap::default();
    }

    /// The rows so far, sorted, and start afresh. Rollup rows are additive (a query sums every
    /// row of a key), so a load's rollup may hold one key in several chunks: memory stays
    /// bounded by [`MAX_ROLLUP_ROWS`] whatever the bill.
    pub fn take_rows(&mut self) -> Vec<RollupRow> {
        let mut rows: Vec<RollupRow> = self.take_held().into_pieces(usize::MAX).flatten().collect();
        rows.sort();
        rows
    }

    /// The rows so far as they are held (compact), and start afresh: the caller writes them in
    /// pieces ([`HeldRows::into_pieces`]), so a chunk is never decoded whole.
    pub fn take_held(&mut self) -> HeldRows {
        self.chunks += 1;
        HeldRows { kind: self.spec.kind, dims: std::mem::take(&mut self.dims), rows: std::mem::take(&mut self.rows) }
    }

    /// The remaining rows, sorted (deterministic), with the spec they were built with; `None`
    /// when the rollup was given up (see [`MIN_ROLLUP_COMPRESSION`]).
    pub fn finish(mut self) -> Option<Rollup> {
        if self.gave_up {
            return None;
        }
        Some(Rollup { kind: self.spec.kind, spec: self.spec.fingerprint(), rows: self.take_rows() })
    }

    /// The remaining rows as they are held, and the rollup to record at commit (its spec, no
    /// rows: the caller appends the held rows in pieces first); `None` when given up.
    pub fn finish_held(mut self) -> Option<(Rollup, HeldRows)> {
        if self.gave_up {
            return None;
        }
        let held = self.take_held();
        Some((Rollup { kind: self.spec.kind, spec: self.spec.fingerprint(), rows: Vec::new() }, held))
    }
}

/// How many rollup rows are decoded and written at a time ([`HeldRows::into_pieces`]).
pub const ROLLUP_PIECE: usize = 2_000;

/// A builder's rows, moved out compact (key bytes and sums) to be written.
pub struct HeldRows {
    kind: RollupKind,
    dims: IndexSet<Box<[u8]>, FxBuildHasher>,
    rows: IndexMap<u64, RowSums, FxBuildHasher>,
}

impl HeldRows {
    pub fn len(&self) -> usize {
        self.rows.len()
    }

    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// The rows decoded, at most `n` at a time (in the order they first appeared: deterministic):
    /// only one piece is ever decoded at once.
    pub fn into_pieces(self, n: usize) -> impl Iterator<Item = Vec<RollupRow>> + Send {
        let (kind, dims) = (self.kind, self.dims);
        let mut it = self.rows.into_iter();
        std::iter::from_fn(move || {
            let piece: Vec<RollupRow> = it
                .by_ref()
                .take(n)
                .map(|(k, s)| {
                    let (day, i) = split_row_key(k);
                    s.row(decode_key(kind, day, dims.get_index(i).map_or(&[][..], |d| &d[..])))
                })
                .collect();
            (!piece.is_empty()).then_some(piece)
        })
    }
}

/// One held row's amounts: the line count, BilledCost, then EffectiveCost, ListCost,
/// ContractedCost, PricingQuantity and ConsumedQuantity, each present when a line had it.
#[derive(Default)]
struct RowSums {
    lines: u64,
    /// Bit `i`: `sums[i + 1]` had a value.
    present: u8,
    sums: [ExactSum; 6],
}

impl RowSums {
    /// The row of these sums, its dimensions decoded from its key.
    fn row(&self, mut r: RollupRow) -> RollupRow {
        let opt = |i: usize| (self.present & (1 << (i - 1)) != 0).then_some(self.sums[i]);
        r.lines = self.lines;
        r.billed_cost = self.sums[0];
        r.effective_cost = opt(1);
        r.list_cost = opt(2);
        r.contracted_cost = opt(3);
        r.pricing_quantity = opt(4);
        r.consumed_quantity = opt(5);
        r
    }
}

/// Reads back what [`write_key`] and [`write_pricing_key`] wrote (the builder's own bytes: a
/// short key reads as empty, never panics).
struct KeyReader<'a>(&'a [u8]);

impl KeyReader<'_> {
    fn bytes<const N: usize>(&mut self) -> [u8; N] {
        let mut out = [0u8; N];
        if let Some((head, rest)) = self.0.split_first_chunk::<N>() {
            out = *head;
            self.0 = rest;
        }
        out
    }
    fn i32(&mut self) -> i32 {
        i32::from_le_bytes(self.bytes())
    }
    fn u32(&mut self) -> u32 {
        u32::from_le_bytes(self.bytes())
    }
    fn text(&mut self) -> String {
        let n = (self.u32() as usize).min(self.0.len());
        let (t, rest) = self.0.split_at(n);
        self.0 = rest;
        String::from_utf8_lossy(t).into_owned()
    }
    fn opt(&mut self) -> Option<String> {
        match self.bytes::<1>() {
            [1] => Some(self.text()),
            _ => None,
        }
    }
}

/// A row's key in the builder's row table: its local day (days from the Common Era) and the
/// index of its dimensions in the builder's interned dimension keys.
fn row_key(day: NaiveDate, dims: usize) -> u64 {
    (u64::from(day.num_days_from_ce() as u32) << 32) | (dims as u64 & 0xffff_ffff)
}

/// [`row_key`]'s day and dimension index.
fn split_row_key(k: u64) -> (NaiveDate, usize) {
    let day = NaiveDate::from_num_days_from_ce_opt((k >> 32) as u32 as i32).unwrap_or_default();
    (day, (k & 0xffff_ffff) as usize)
}

/// A held row from its day and its dimension key (amounts zero).
fn decode_key(kind: RollupKind, day: NaiveDate, key: &[u8]) -> RollupRow {
    let mut k = KeyReader(key);
    let (year, month) = (k.i32(), k.u32());
    let period = BillingPeriod::new(year, month).map(|p| p.to_string()).unwrap_or_default();
    let mut r =
        RollupRow { kind, day: day.format("%Y-%m-%d").to_string(), billing_period: period, ..Default::default() };
    match kind {
        RollupKind::Daily => {
            r.provider_name = k.opt();
            r.billing_account_id = k.text();
            r.sub_account_id = k.opt();
            r.service_name = k.opt();
            r.service_category = k.opt();
            r.region_id = k.opt();
            r.charge_category = k.text();
            r.charge_class = k.opt();
            r.pricing_unit = k.opt();
            r.billing_currency = k.text();
            let n = k.u32();
            let mut tags = BTreeMap::new();
            for _ in 0..n {
                let key = k.text();
                tags.insert(key, k.text());
            }
            r.tags = (!tags.is_empty()).then(|| serde_json::to_string(&tags).unwrap_or_default());
        }
        RollupKind::Pricing => {
            r.billing_currency = k.text();
            r.provider_name = k.opt();
            r.service_name = k.opt();
            r.service_category = k.opt();
            r.charge_category = k.text();
            r.charge_class = k.opt();
            r.sku_id = k.opt();
            r.pricing_unit = k.opt();
            r.commitment_discount_id = k.opt();
            r.pricing_category = k.opt();
            r.commitment_discount_type = k.opt();
            r.commitment_discount_category = k.opt();
            r.commitment_discount_status = k.opt();
        }
    }
    r
}

/// The FOCUS columns the pricing rollup holds beyond a line's core, in key order.
const PRICING_FOCUS: [&str; 4] =
    ["PricingCategory", "CommitmentDiscountType", "CommitmentDiscountCategory", "CommitmentDiscountStatus"];

/// Their indices in [`FocusColumns::TEXT`](costledger_core::FocusColumns::TEXT), looked up once.
fn pricing_focus_index() -> &'static [usize; 4] {
    static INDEX: std::sync::OnceLock<[usize; 4]> = std::sync::OnceLock::new();
    INDEX.get_or_init(|| {
        PRICING_FOCUS
            .map(|name| costledger_core::FocusColumns::TEXT.iter().position(|c| *c == name).unwrap_or(usize::MAX))
    })
}

/// A line's [`PRICING_FOCUS`] values.
fn pricing_focus(l: &ChargeLine) -> [Option<&str>; 4] {
    match &l.focus {
        None => [None; 4],
        Some(f) => pricing_focus_index().map(|k| f.text_at(k)),
    }
}

/// A pricing rollup row's dimension key, written like [`write_key`]'s: the billing period, the
/// currency, then each dimension the pricing rollup holds.
fn write_pricing_key(out: &mut Vec<u8>, bp: BillingPeriod, l: &ChargeLine, class: Option<&str>) {
    out.clear();
    out.extend_from_slice(&bp.year.to_le_bytes());
    out.extend_from_slice(&bp.month.to_le_bytes());
    key_text(out, &l.billing_currency);
    key_opt(out, l.provider_name.as_deref());
    key_opt(out, l.service_name.as_deref());
    key_opt(out, l.service_category.as_deref());
    key_text(out, l.charge_category.as_str());
    key_opt(out, class);
    key_opt(out, l.sku_id.as_deref());
    key_opt(out, l.pricing_unit.as_deref());
    key_opt(out, l.commitment_discount_id.as_deref());
    for v in pricing_focus(l) {
        key_opt(out, v);
    }
}

/// A rollup row's dimensions but its day as one byte string: the billing period, then each
/// dimension (absent and empty told apart) and the kept tags, every text length-prefixed so no
/// two keys write the same bytes.
fn write_key(out: &mut Vec<u8>, bp: BillingPeriod, l: &ChargeLine, class: Option<&str>, tags: &[(&str, &str)]) {
    let text = key_text;
    let opt = key_opt;
    out.clear();
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
    out.extend_from_slice(&(tags.len() as u32).to_le_bytes());
    for (k, v) in tags {
        text(out, k);
        text(out, v);
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;
    use costledger_core::{ChargeCategory, ChargeClass, FocusColumns};
    use rust_decimal::Decimal;

    use super::*;

    fn line(amount: &str) -> ChargeLine {
        let d = |s: &str| Decimal::from_str_exact(s).expect("decimal");
        let start = chrono::DateTime::parse_from_rfc3339("2026-10-31T23:30:00Z").expect("ts").to_utc();
        let period = chrono::DateTime::parse_from_rfc3339("2026-10-01T00:00:00Z").expect("ts").to_utc();
        let f = FocusColumns {
            pricing_category: Some("Committed".into()),
            commitment_discount_type: Some("Compute Savings Plan".into()),
            commitment_discount_status: Some("Used".into()),
            // Present and empty: told apart from absent.
            commitment_discount_category: Some(String::new()),
            ..Default::default()
        };
        ChargeLine {
            billing_account_id: "B-1".into(),
            billing_account_name: None,
            sub_account_id: Some(String::new()),
            sub_account_name: None,
            billing_period_start: period,
            billing_period_end: period,
            charge_period_start: start,
            charge_period_end: start,
            charge_category: ChargeCategory::Usage,
            charge_class: Some(ChargeClass::Correction),
            charge_description: None,
            service_name: Some("Amazon EC2".into()),
            service_category: Some("Compute".into()),
            provider_name: Some("AWS".into()),
            publisher_name: None,
            invoice_issuer_name: None,
            region_id: None,
            resource_id: Some("i-1".into()),
            resource_name: None,
            sku_id: Some("SKU-ü-1".into()),
            billed_cost: d(amount),
            effective_cost: Some(d("0.5")),
            list_cost: None,
            contracted_cost: None,
            billing_currency: "EUR".into(),
            pricing_quantity: Some(d("2")),
            pricing_unit: Some("Hours".into()),
            consumed_quantity: None,
            consumed_unit: None,
            commitment_discount_id: Some("sp-1".into()),
            invoice_id: None,
            tags: [("Team".to_string(), "payments".to_string()), ("Name".to_string(), "web".to_string())].into(),
            focus: f.boxed(),
            x_extra: Default::default(),
            source_ref: None,
        }
    }

    fn spec(kind: RollupKind) -> RollupSpec {
        let config =
            Config { timezone: chrono_tz::Europe::Berlin, rollup_tags: vec!["team".into()], ..Config::default() };
        match kind {
            RollupKind::Daily => RollupSpec::from_config(&config),
            RollupKind::Pricing => RollupSpec::pricing(&config),
        }
    }

    /// Rows are held as key bytes and decoded when taken: every text a kind holds comes back
    /// as the line had it (absent and empty told apart, non-ASCII intact), the local day and
    /// the billing period from the key, the amounts summed exactly.
    #[test]
    fn held_rows_decode_to_the_lines_dimensions_and_sums() {
        let s = spec(RollupKind::Daily);
        let mut b = RollupBuilder::new(&s).with_min_compression(0);
        b.add(&line("1.25")).expect("add");
        b.add(&line("0.0000001")).expect("add");
        let rows = b.finish().expect("kept").rows;
        let want = RollupRow {
            kind: RollupKind::Daily,
            // 23:30 UTC on the 31st is 1 November in Berlin; the billing period stays October.
            day: "2026-11-01".into(),
            billing_period: "2026-10".into(),
            provider_name: Some("AWS".into()),
            billing_account_id: "B-1".into(),
            sub_account_id: Some(String::new()),
            service_name: Some("Amazon EC2".into()),
            service_category: Some("Compute".into()),
            region_id: None,
            charge_category: "Usage".into(),
            charge_class: Some("Correction".into()),
            pricing_unit: Some("Hours".into()),
            billing_currency: "EUR".into(),
            tags: Some(r#"{"team":"payments"}"#.into()),
            lines: 2,
            billed_cost: "1.2500001".parse().expect("sum"),
            effective_cost: Some("1.0".parse().expect("sum")),
            pricing_quantity: Some("4".parse().expect("sum")),
            ..Default::default()
        };
        assert_eq!(rows, vec![want]);

        let s = spec(RollupKind::Pricing);
        let mut b = RollupBuilder::new(&s).with_min_compression(0);
        b.add(&line("1.25")).expect("add");
        let mut other = line("2");
        other.focus = None;
        b.add(&other).expect("add");
        let rows = b.finish().expect("kept").rows;
        assert_eq!(rows.len(), 2, "the FOCUS columns are part of the key: {rows:?}");
        let with = rows.iter().find(|r| r.pricing_category.is_some()).expect("the committed line's row");
        let want = RollupRow {
            kind: RollupKind::Pricing,
            day: "2026-11-01".into(),
            billing_period: "2026-10".into(),
            provider_name: Some("AWS".into()),
            service_name: Some("Amazon EC2".into()),
            service_category: Some("Compute".into()),
            charge_category: "Usage".into(),
            charge_class: Some("Correction".into()),
            pricing_unit: Some("Hours".into()),
            billing_currency: "EUR".into(),
            sku_id: Some("SKU-ü-1".into()),
            pricing_category: Some("Committed".into()),
            commitment_discount_id: Some("sp-1".into()),
            commitment_discount_type: Some("Compute Savings Plan".into()),
            commitment_discount_category: Some(String::new()),
            commitment_discount_status: Some("Used".into()),
            lines: 1,
            billed_cost: "1.25".parse().expect("sum"),
            effective_cost: Some("0.5".parse().expect("sum")),
            pricing_quantity: Some("2".parse().expect("sum")),
            ..Default::default()
        };
        assert_eq!(with, &want);
        let without = rows.iter().find(|r| r.pricing_category.is_none()).expect("the other row");
        assert_eq!(
            (&without.commitment_discount_type, &without.commitment_discount_status, &without.billed_cost),
            (&None, &None, &"2".parse().expect("sum"))
        );
    }

    /// Rows of the same dimensions on different days share one interned key, and each row
    /// decodes to its own day: three days of two services hold two keys and six rows.
    #[test]
    fn rows_of_one_dimension_set_share_its_key_across_days() {
        let s = spec(RollupKind::Daily);
        let mut b = RollupBuilder::new(&s).with_min_compression(0);
        let mut l = line("1");
        for day in 1..=3 {
            for service in ["Amazon EC2", "Amazon S3"] {
                l.charge_period_start = Utc.with_ymd_and_hms(2026, 10, day, 12, 0, 0).single().expect("start");
                l.service_name = Some(service.into());
                b.add(&l).expect("add");
                b.add(&l).expect("add");
            }
        }
        assert_eq!((b.dims.len(), b.rows.len()), (2, 6));
        let rows = b.finish().expect("kept").rows;
        let got: Vec<(&str, Option<&str>, u64)> =
            rows.iter().map(|r| (r.day.as_str(), r.service_name.as_deref(), r.lines)).collect();
        assert_eq!(
            got,
            vec![
                ("2026-10-01", Some("Amazon EC2"), 2),
                ("2026-10-01", Some("Amazon S3"), 2),
                ("2026-10-02", Some("Amazon EC2"), 2),
                ("2026-10-02", Some("Amazon S3"), 2),
                ("2026-10-03", Some("Amazon EC2"), 2),
                ("2026-10-03", Some("Amazon S3"), 2),
            ]
        );
        assert!(rows.iter().all(|r| r.billed_cost == "2".parse().expect("sum")));
    }

    /// Held rows are written a piece at a time; the pieces hold every row once.
    #[test]
    fn held_rows_come_out_in_pieces_that_hold_every_row_once() {
        let s = spec(RollupKind::Pricing);
        let mut b = RollupBuilder::new(&s).with_min_compression(0);
        let mut l = line("1");
        for i in 0..25 {
            l.sku_id = Some(format!("SKU-{i}"));
            b.add(&l).expect("add");
        }
        let (rollup, held) = b.finish_held().expect("kept");
        assert!(rollup.rows.is_empty());
        assert_eq!((rollup.kind, rollup.spec.as_str()), (RollupKind::Pricing, "p1 tz=Europe/Berlin"));
        assert_eq!(held.len(), 25);
        let pieces: Vec<Vec<RollupRow>> = held.into_pieces(10).collect();
        assert_eq!(pieces.iter().map(Vec::len).collect::<Vec<_>>(), vec![10, 10, 5]);
        let mut skus: Vec<String> = pieces.iter().flatten().filter_map(|r| r.sku_id.clone()).collect();
        skus.sort();
        skus.dedup();
        assert_eq!(skus.len(), 25);
    }

    /// Each kind holds the dimensions its rows carry, and only those.
    #[test]
    fn each_kind_holds_what_its_rows_carry() {
        let (daily, pricing) = (spec(RollupKind::Daily), spec(RollupKind::Pricing));
        for d in [Dimension::Sku, Dimension::Commitment, Dimension::CommitmentStatus, Dimension::PricingCategory] {
            assert!(!daily.holds(&d) && pricing.holds(&d), "{d:?}");
        }
        for d in [Dimension::BillingAccount, Dimension::SubAccount, Dimension::Region, Dimension::Tag("team".into())] {
            assert!(daily.holds(&d) && !pricing.holds(&d), "{d:?}");
        }
        for d in [Dimension::Service, Dimension::Provider, Dimension::ChargeCategory, Dimension::PricingUnit] {
            assert!(daily.holds(&d) && pricing.holds(&d), "{d:?}");
        }
        for d in [Dimension::Resource, Dimension::Owner, Dimension::Allocation] {
            assert!(!daily.holds(&d) && !pricing.holds(&d), "{d:?}");
        }
    }
}
