//! Answer a [`Query`] from charges, exactly: every sum is an [`ExactSum`], conversion multiplies
//! a group's exact sum by the month's rate, and "others" is the exact remainder of the top N.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use chrono::NaiveDate;
use costledger_core::{BillingPeriod, ChargeLine, ExactSum, MoneyError};
use rust_decimal::Decimal;
use serde::Serialize;

use super::{Dimension, Grain, Metric, MetricKind, Query, RangeBy};
use crate::ledger::{FxRate, GroupColumn, GroupedRow, RollupKind, RollupRecord, RollupRow};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AggregateError {
    #[error(transparent)]
    Fx(#[from] crate::fx::FxError),
    #[error("{0}")]
    Money(#[from] MoneyError),
    #[error("the ledger holds a {0}")]
    Corrupt(String),
    #[error(
        "the answer would have more than {limit} groups: narrow the range (--from/--to), add filters \
         (--where), group by fewer or coarser dimensions, or use a coarser --grain"
    )]
    TooManyGroups { limit: usize },
}

/// The most groups (rows before top N) one answer may hold: a query such as "by resource and
/// day over a year" is refused with a message instead of filling memory (about 300 bytes a group).
pub const MAX_GROUPS: usize = 1_000_000;

/// One answer row. `keys` follow `group_by`; `None` is a missing value (shown as `(none)`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct QueryRow {
    /// The time bucket (absent with grain none).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bucket: Option<String>,
    pub keys: Vec<Option<String>>,
    /// The row sums the groups beyond the top N.
    pub others: bool,
    pub currency: String,
    /// One per metric, an exact decimal string; `null` when no line of the row has a value for it.
    #[serde(serialize_with = "amounts")]
    #[schema(value_type = Vec<Option<String>>)]
    pub values: Vec<Option<ExactSum>>,
}

/// Totals of the whole answer per currency (the rows add up to them exactly).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct TotalRow {
    pub currency: String,
    /// One per metric, an exact decimal string.
    #[serde(serialize_with = "amounts")]
    #[schema(value_type = Vec<Option<String>>)]
    pub values: Vec<Option<ExactSum>>,
}

/// Which store answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum AnsweredFrom {
    /// Every current charge line was read.
    Charges,
    /// The daily rollups were read (every dimension asked for is in them).
    Rollups,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct QueryResult {
    pub group_by: Vec<String>,
    #[schema(value_type = Vec<String>)]
    pub metrics: Vec<&'static str>,
    #[schema(value_type = String)]
    pub grain: &'static str,
    /// The currency money was converted to, if any.
    pub converted_to: Option<String>,
    pub rows: Vec<QueryRow>,
    pub totals: Vec<TotalRow>,
    /// The FX rates conversion used (`2026-11 1 EUR = 1.08 USD (ecb)`).
    pub rates_used: Vec<String>,
    /// Charge lines that matched the filters and range.
    pub lines: u64,
    pub answered_from: AnsweredFrom,
}

fn amounts<S: serde::Serializer>(v: &[Option<ExactSum>], s: S) -> Result<S::Ok, S::Error> {
    use serde::ser::SerializeSeq;
    let mut seq = s.serialize_seq(Some(v.len()))?;
    for x in v {
        seq.serialize_element(&x.map(|a| a.to_string()))?;
    }
    seq.end()
}

/// Ordered month, currency first: a missing rate is reported for the earliest month and the
/// first currency, whatever order the lines came in.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
struct GroupKey {
    /// The billing period whose rate converts this group (only when converting).
    fx_month: Option<BillingPeriod>,
    currency: String,
    bucket: Option<String>,
    keys: Vec<Option<String>>,
}

type Sums = Vec<Option<ExactSum>>;
/// (bucket, keys, currency) of an answer row.
type RowKey = (Option<String>, Vec<Option<String>>, String);
/// (keys, total of the first metric) of one group, for ranking.
type Ranked<'a> = (&'a Vec<Option<String>>, ExactSum);

fn merge_into(sums: &mut Sums, other: &Sums) -> Result<(), MoneyError> {
    for (s, v) in sums.iter_mut().zip(other) {
        if let Some(v) = v {
            s.get_or_insert(ExactSum::ZERO).merge(v)?;
        }
    }
    Ok(())
}

/// The value of `m` on one line.
pub fn metric_value(line: &ChargeLine, m: Metric) -> Option<Decimal> {
    match m {
        Metric::BilledCost => Some(line.billed_cost),
        Metric::EffectiveCost => line.effective_cost,
        Metric::ListCost => line.list_cost,
        Metric::ContractedCost => line.contracted_cost,
        Metric::PricingQuantity => line.pricing_quantity,
        Metric::ConsumedQuantity => line.consumed_quantity,
        Metric::Lines => Some(Decimal::ONE),
    }
}

/// The value of `m` on one rollup row.
fn rollup_value(r: &RollupRow, m: Metric) -> Option<ExactSum> {
    match m {
        Metric::BilledCost => Some(r.billed_cost),
        Metric::EffectiveCost => r.effective_cost,
        Metric::ListCost => r.list_cost,
        Metric::ContractedCost => r.contracted_cost,
        Metric::PricingQuantity => r.pricing_quantity,
        Metric::ConsumedQuantity => r.consumed_quantity,
        Metric::Lines => Some(ExactSum::from(Decimal::from(r.lines))),
    }
}

/// The value of dimension `d` on one line. Tags: the first of the line's tags whose key
/// normalises to the dimension's key (as the allocator reads them).
pub fn dimension_value<'a>(
    line: &'a ChargeLine,
    source: &'a str,
    d: &Dimension,
    normalise_tag: &dyn Fn(&str) -> String,
) -> Option<&'a str> {
    let s = |v: &'a Option<String>| v.as_deref();
    match d {
        Dimension::Provider => s(&line.provider_name),
        Dimension::BillingAccount => Some(&line.billing_account_id),
        Dimension::SubAccount => s(&line.sub_account_id),
        Dimension::Service => s(&line.service_name),
        Dimension::ServiceCategory => s(&line.service_category),
        Dimension::Region => s(&line.region_id),
        Dimension::ChargeCategory => Some(line.charge_category.as_str()),
        Dimension::ChargeClass => line.charge_class.map(|c| c.as_str()),
        Dimension::Sku => s(&line.sku_id),
        Dimension::Resource => s(&line.resource_id),
        Dimension::PricingUnit => s(&line.pricing_unit),
        Dimension::Source => Some(source),
        // From the allocator, which `Aggregator::add_line` consults.
        Dimension::Owner | Dimension::Allocation => None,
        Dimension::Commitment => s(&line.commitment_discount_id),
        Dimension::CommitmentStatus => focus_text(line, "CommitmentDiscountStatus"),
        Dimension::CommitmentCategory => focus_text(line, "CommitmentDiscountCategory"),
        Dimension::CommitmentType => focus_text(line, "CommitmentDiscountType"),
        Dimension::PricingCategory => focus_text(line, "PricingCategory"),
        Dimension::Tag(k) => line.tags.iter().find(|(key, _)| normalise_tag(key) == *k).map(|(_, v)| v.as_str()),
    }
}

/// The raw column a dimension's value is in, for a grouped read; `None` for the dimensions a
/// grouped read cannot give (owner and allocation come from the allocator). Tags are read from
/// the tag JSON.
pub fn group_column(d: &Dimension) -> Option<GroupColumn> {
    Some(match d {
        Dimension::Provider => GroupColumn::Provider,
        Dimension::BillingAccount => GroupColumn::BillingAccount,
        Dimension::SubAccount => GroupColumn::SubAccount,
        Dimension::Service => GroupColumn::Service,
        Dimension::ServiceCategory => GroupColumn::ServiceCategory,
        Dimension::Region => GroupColumn::Region,
        Dimension::ChargeCategory => GroupColumn::ChargeCategory,
        Dimension::ChargeClass => GroupColumn::ChargeClass,
        Dimension::Sku => GroupColumn::Sku,
        Dimension::Resource => GroupColumn::Resource,
        Dimension::PricingUnit => GroupColumn::PricingUnit,
        Dimension::Source => GroupColumn::Source,
        Dimension::Tag(_) => GroupColumn::Tags,
        Dimension::Commitment => GroupColumn::Commitment,
        Dimension::CommitmentStatus => GroupColumn::CommitmentStatus,
        Dimension::CommitmentCategory => GroupColumn::CommitmentCategory,
        Dimension::CommitmentType => GroupColumn::CommitmentType,
        Dimension::PricingCategory => GroupColumn::PricingCategory,
        Dimension::Owner | Dimension::Allocation => return None,
    })
}

/// The columns a grouped read of `q` groups by, or `None` when the database cannot answer it
/// (a dimension needs the allocator). The charge day is read only when
/// the grain needs it or the range cannot be applied exactly by the database (a local midnight
/// that does not exist); the billing period when the grain, the range or a conversion needs it.
pub fn grouped_columns(q: &Query, tz: chrono_tz::Tz) -> Option<Vec<GroupColumn>> {
    let mut cols = Vec::new();
    for d in q.group_by.iter().chain(q.filters.iter().map(|f| &f.dimension)) {
        cols.push(group_column(d)?);
    }
    let (from, to) = q.range.charge_bounds(tz);
    let range_in_sql = q.range.by == RangeBy::ChargePeriod
        && (q.range.from.is_none() || from.is_some())
        && (q.range.to.is_none() || to.is_some());
    if matches!(q.grain, Grain::Day | Grain::Week | Grain::Month)
        || (q.range.by == RangeBy::ChargePeriod && !range_in_sql)
    {
        cols.push(GroupColumn::ChargePeriodStart);
    }
    Some(with_period(q, cols))
}

/// The columns a grouped read of the rollups groups by for `q` (whose dimensions the rollups
/// hold, see `RollupSpec::holds`): the rollups' local day when the grain needs it (the range on
/// days is applied by the database exactly).
pub fn grouped_rollup_columns(q: &Query, kind: RollupKind) -> Option<Vec<GroupColumn>> {
    let mut cols = Vec::new();
    for d in q.group_by.iter().chain(q.filters.iter().map(|f| &f.dimension)) {
        match group_column(d)? {
            c if !c.in_rollups(kind) => return None,
            c => cols.push(c),
        }
    }
    if matches!(q.grain, Grain::Day | Grain::Week | Grain::Month) {
        cols.push(GroupColumn::Day);
    }
    Some(with_period(q, cols))
}

/// Add the billing period when the grain, the range or a conversion needs it; sorted.
fn with_period(q: &Query, mut cols: Vec<GroupColumn>) -> Vec<GroupColumn> {
    if q.grain == Grain::BillingPeriod || q.range.by == RangeBy::BillingPeriod || q.currency.is_some() {
        cols.push(GroupColumn::BillingPeriod);
    }
    cols.sort();
    cols.dedup();
    cols
}

fn focus_text<'a>(line: &'a ChargeLine, column: &str) -> Option<&'a str> {
    line.focus.as_ref().and_then(|f| f.text(column))
}

/// Sums charges into the query's groups; [`Aggregator::finish`] converts, ranks and sorts.
pub struct Aggregator<'q> {
    q: &'q Query,
    tz: chrono_tz::Tz,
    normalise_tag: &'q (dyn Fn(&str) -> String + Sync),
    groups: HashMap<GroupKey, Sums>,
    lines: u64,
    max_groups: usize,
    /// (owner, allocation) of a line, when the query groups or filters by them.
    allocate: Option<&'q Allocate<'q>>,
}

/// A line's owner (empty when unallocated) and allocation reason, as the finance CSV has them.
pub type Allocate<'a> = dyn Fn(&ChargeLine) -> (String, String) + Sync + 'a;

impl<'q> Aggregator<'q> {
    pub fn new(q: &'q Query, tz: chrono_tz::Tz, normalise_tag: &'q (dyn Fn(&str) -> String + Sync)) -> Aggregator<'q> {
        Aggregator { q, tz, normalise_tag, groups: HashMap::new(), lines: 0, max_groups: MAX_GROUPS, allocate: None }
    }

    /// The allocator's answer per line, for the owner and allocation dimensions.
    pub fn with_allocation(mut self, allocate: &'q Allocate<'q>) -> Self {
        self.allocate = Some(allocate);
        self
    }

    /// A lower group limit (tests).
    pub fn with_max_groups(mut self, n: usize) -> Self {
        self.max_groups = n;
        self
    }

    /// Add one charge line (of source `source`); lines outside the range or filters are skipped.
    pub fn add_line(&mut self, line: &ChargeLine, source: &str) -> Result<(), AggregateError> {
        let day: NaiveDate = line.charge_period_start.with_timezone(&self.tz).date_naive();
        let period = BillingPeriod::of(line.billing_period_start);
        let norm = self.normalise_tag;
        let values = self.q.metrics.iter().map(|m| metric_value(line, *m).map(ExactSum::from)).collect();
        let alloc = self.allocate.filter(|_| self.q.needs_allocation()).map(|f| f(line));
        let dim = |d: &Dimension| match (d, &alloc) {
            (Dimension::Owner, Some((owner, _))) => (!owner.is_empty()).then_some(owner.as_str()),
            (Dimension::Allocation, Some((_, reason))) => (!reason.is_empty()).then_some(reason.as_str()),
            _ => dimension_value(line, source, d, norm),
        };
        self.add_fact(Some(day), Some(period), &line.billing_currency, dim, values, 1)
    }

    /// Add one rollup row (its tags are already normalised and limited to the rollup's keys).
    pub fn add_rollup(&mut self, rec: &RollupRecord) -> Result<(), AggregateError> {
        let r = &rec.row;
        let bad = |what: &str| {
            AggregateError::Corrupt(format!(
                "rollup row with {what} (edited by hand?): set its load's {} to NULL and run `costledger rollup`",
                match r.kind {
                    RollupKind::Daily => "rollup_spec",
                    RollupKind::Pricing => "pricing_rollup_spec",
                }
            ))
        };
        let day = NaiveDate::parse_from_str(&r.day, "%Y-%m-%d").map_err(|_| bad("a bad day"))?;
        let period: BillingPeriod = r.billing_period.parse().map_err(|_| bad("a bad billing period"))?;
        let tags: BTreeMap<String, String> = match &r.tags {
            Some(t) => serde_json::from_str(t).map_err(|_| bad("bad tags"))?,
            None => BTreeMap::new(),
        };
        let values = self.q.metrics.iter().map(|m| rollup_value(r, *m)).collect();
        fn s(v: &Option<String>) -> Option<&str> {
            v.as_deref()
        }
        let dim = |d: &Dimension| -> Option<&str> {
            match d {
                Dimension::Provider => s(&r.provider_name),
                Dimension::BillingAccount => Some(r.billing_account_id.as_str()),
                Dimension::SubAccount => s(&r.sub_account_id),
                Dimension::Service => s(&r.service_name),
                Dimension::ServiceCategory => s(&r.service_category),
                Dimension::Region => s(&r.region_id),
                Dimension::ChargeCategory => Some(r.charge_category.as_str()),
                Dimension::ChargeClass => s(&r.charge_class),
                // Pricing rollups only (`RollupSpec::holds`).
                Dimension::Sku => s(&r.sku_id),
                Dimension::Commitment => s(&r.commitment_discount_id),
                Dimension::CommitmentStatus => s(&r.commitment_discount_status),
                Dimension::CommitmentCategory => s(&r.commitment_discount_category),
                Dimension::CommitmentType => s(&r.commitment_discount_type),
                Dimension::PricingCategory => s(&r.pricing_category),
                Dimension::PricingUnit => s(&r.pricing_unit),
                Dimension::Source => Some(rec.source.as_str()),
                // No rollup holds the resource or the allocation (`RollupSpec::holds`).
                Dimension::Resource | Dimension::Owner | Dimension::Allocation => None,
                Dimension::Tag(k) => tags.get(k).map(String::as_str),
            }
        };
        self.add_fact(Some(day), Some(period), &r.billing_currency, dim, values, r.lines)
    }

    /// Add one group of a grouped read (`cols` are the columns it was grouped by, from
    /// [`grouped_columns`]): the range was applied by the database where the day is not read.
    /// Rollup groups carry normalised tag keys; charge groups the keys as billed.
    pub fn add_grouped(
        &mut self,
        row: &GroupedRow,
        cols: &[GroupColumn],
        tags_normalised: bool,
    ) -> Result<(), AggregateError> {
        let at = |c: GroupColumn| cols.iter().position(|x| *x == c).and_then(|i| row.keys[i].as_deref());
        let bad = |what: &str, v: &str| AggregateError::Corrupt(format!("{what} '{v}' in a grouped read"));
        let day = match (at(GroupColumn::ChargePeriodStart), at(GroupColumn::Day)) {
            (Some(t), _) => Some(
                costledger_core::parse_timestamp(t)
                    .map_err(|_| bad("timestamp", t))?
                    .with_timezone(&self.tz)
                    .date_naive(),
            ),
            (None, Some(d)) => Some(NaiveDate::parse_from_str(d, "%Y-%m-%d").map_err(|_| bad("day", d))?),
            (None, None) => None,
        };
        let period = at(GroupColumn::BillingPeriod)
            .map(|p| p.parse::<BillingPeriod>().map_err(|_| bad("billing period", p)))
            .transpose()?;
        let tags: BTreeMap<String, String> = match at(GroupColumn::Tags) {
            Some(t) => serde_json::from_str(t).map_err(|_| bad("tags", t))?,
            None => BTreeMap::new(),
        };
        let norm = self.normalise_tag;
        let values = self
            .q
            .metrics
            .iter()
            .map(|m| match m {
                Metric::BilledCost => row.billed_cost,
                Metric::EffectiveCost => row.effective_cost,
                Metric::ListCost => row.list_cost,
                Metric::ContractedCost => row.contracted_cost,
                Metric::PricingQuantity => row.pricing_quantity,
                Metric::ConsumedQuantity => row.consumed_quantity,
                Metric::Lines => Some(ExactSum::from(Decimal::from(row.lines))),
            })
            .collect();
        let dim = |d: &Dimension| -> Option<&str> {
            match d {
                Dimension::Tag(k) if tags_normalised => tags.get(k).map(String::as_str),
                Dimension::Tag(k) => tags.iter().find(|(key, _)| norm(key) == *k).map(|(_, v)| v.as_str()),
                other => group_column(other).and_then(at),
            }
        };
        self.add_fact(day, period, &row.currency, dim, values, row.lines)
    }

    /// `day` and `period` are `None` only when the grouped read left them out (see
    /// [`grouped_columns`]): the database applied the range, and the grain does not need them.
    fn add_fact<'a>(
        &mut self,
        day: Option<NaiveDate>,
        period: Option<BillingPeriod>,
        currency: &str,
        dim: impl Fn(&Dimension) -> Option<&'a str>,
        values: Sums,
        lines: u64,
    ) -> Result<(), AggregateError> {
        let when = match self.q.range.by {
            RangeBy::ChargePeriod => day,
            RangeBy::BillingPeriod => period.map(|p| p.start().date_naive()),
        };
        if when.is_some_and(|d| !self.q.range.contains_date(d)) {
            return Ok(());
        }
        let missing = |what: &str| AggregateError::Corrupt(format!("grouped read without the {what} (a bug)"));
        let bucket = match self.q.grain {
            Grain::None => None,
            Grain::BillingPeriod => Some(period.ok_or_else(|| missing("billing period"))?.to_string()),
            g => g.bucket(day.ok_or_else(|| missing("charge day"))?, BillingPeriod::of(chrono::DateTime::UNIX_EPOCH)),
        };
        let fx_month = match self.q.currency.as_ref().filter(|c| *c != currency) {
            Some(_) => Some(period.ok_or_else(|| missing("billing period"))?),
            None => None,
        };
        for f in &self.q.filters {
            if !f.matches(dim(&f.dimension)) {
                return Ok(());
            }
        }
        self.lines += lines;
        let key = GroupKey {
            bucket,
            keys: self.q.group_by.iter().map(|d| dim(d).map(str::to_string)).collect(),
            currency: currency.to_string(),
            fx_month,
        };
        if self.groups.len() >= self.max_groups && !self.groups.contains_key(&key) {
            return Err(AggregateError::TooManyGroups { limit: self.max_groups });
        }
        let sums = self.groups.entry(key).or_insert_with(|| vec![None; self.q.metrics.len()]);
        merge_into(sums, &values)?;
        Ok(())
    }

    pub fn finish(self, rates: &[FxRate], answered_from: AnsweredFrom) -> Result<QueryResult, AggregateError> {
        let q = self.q;
        let mut used = BTreeSet::new();
        // 1. Conversion: each (group, month) sum times that month's rate, merged per group.
        let mut merged: BTreeMap<RowKey, Sums> = BTreeMap::new();
        let mut groups: Vec<(GroupKey, Sums)> = self.groups.into_iter().collect();
        groups.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        for (k, sums) in groups {
            let (currency, sums) = match (&q.currency, k.fx_month) {
                (Some(target), Some(month)) => {
                    (target.clone(), convert(q, &sums, &k.currency, target, month, rates, &mut used)?)
                }
                _ => (k.currency, sums),
            };
            let e = merged.entry((k.bucket, k.keys, currency)).or_insert_with(|| vec![None; q.metrics.len()]);
            merge_into(e, &sums)?;
        }
        // 2. Top N per currency, ranked by the first metric over the whole range.
        let keep: Option<BTreeSet<(Vec<Option<String>>, String)>> = match q.top {
            None => None,
            Some(n) => {
                let mut rank: BTreeMap<(Vec<Option<String>>, String), ExactSum> = BTreeMap::new();
                for ((_, keys, cur), sums) in &merged {
                    let e = rank.entry((keys.clone(), cur.clone())).or_default();
                    if let Some(v) = &sums[0] {
                        e.merge(v)?;
                    }
                }
                let mut by_currency: BTreeMap<&str, Vec<Ranked<'_>>> = BTreeMap::new();
                for ((keys, cur), v) in &rank {
                    by_currency.entry(cur.as_str()).or_default().push((keys, *v));
                }
                let mut keep = BTreeSet::new();
                for (cur, mut groups) in by_currency {
                    groups.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(b.0)));
                    for (keys, _) in groups.into_iter().take(n) {
                        keep.insert((keys.clone(), cur.to_string()));
                    }
                }
                Some(keep)
            }
        };
        let mut rows = Vec::new();
        let mut others: BTreeMap<(Option<String>, String), Sums> = BTreeMap::new();
        let mut totals: BTreeMap<String, Sums> = BTreeMap::new();
        for ((bucket, keys, currency), sums) in merged {
            merge_into(totals.entry(currency.clone()).or_insert_with(|| vec![None; q.metrics.len()]), &sums)?;
            if let Some(keep) = &keep
                && !keep.contains(&(keys.clone(), currency.clone()))
            {
                let e = others.entry((bucket, currency)).or_insert_with(|| vec![None; q.metrics.len()]);
                merge_into(e, &sums)?;
                continue;
            }
            rows.push(QueryRow { bucket, keys, others: false, currency, values: sums });
        }
        for ((bucket, currency), values) in others {
            rows.push(QueryRow { bucket, keys: vec![None; q.group_by.len()], others: true, currency, values });
        }
        // 3. Deterministic order: bucket, currency, the largest first, others last, then keys.
        rows.sort_by(|a, b| {
            a.bucket
                .cmp(&b.bucket)
                .then_with(|| a.currency.cmp(&b.currency))
                .then_with(|| a.others.cmp(&b.others))
                .then_with(|| b.values[0].unwrap_or_default().cmp(&a.values[0].unwrap_or_default()))
                .then_with(|| a.keys.cmp(&b.keys))
        });
        Ok(QueryResult {
            group_by: q.group_by.iter().map(Dimension::name).collect(),
            metrics: q.metrics.iter().map(|m| m.name()).collect(),
            grain: q.grain.name(),
            converted_to: q.currency.clone(),
            rows,
            totals: totals.into_iter().map(|(currency, values)| TotalRow { currency, values }).collect(),
            rates_used: used.into_iter().collect(),
            lines: self.lines,
            answered_from,
        })
    }
}

/// Money metrics of one group converted at `month`'s rate; quantities and counts kept.
fn convert(
    q: &Query,
    sums: &Sums,
    from: &str,
    to: &str,
    month: BillingPeriod,
    rates: &[FxRate],
    used: &mut BTreeSet<String>,
) -> Result<Sums, AggregateError> {
    let month = month.to_string();
    let mut out = sums.clone();
    for (m, v) in q.metrics.iter().zip(out.iter_mut()) {
        if m.kind() != MetricKind::Money {
            continue;
        }
        if let Some(s) = v {
            let (converted, rate) = crate::fx::convert(rates, s, from, to, &month)?;
            used.extend(rate.map(crate::fx::describe));
            *v = Some(converted);
        }
    }
    Ok(out)
}
