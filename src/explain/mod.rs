//! Why a cost changed between two periods: the change of each group split into **volume**,
//! **rate**, **mix**, **new**, **gone**, **no quantity** and **FX**, so that
//!
//! ```text
//! volume + rate + mix + new − gone + no_quantity + fx + allocation = after − before   (exactly)
//! ```
//!
//! Pure: [`decompose`] takes the facts of the two periods (sums per group, unit class, SKU,
//! currency and billing month, as the query engine answers them) and returns the
//! [`Explanation`]. The IO (two queries, FX rates) is in `app::explain`. `docs/explain.md` states
//! the method in words.
//!
//! Inside a group, charges with a usable quantity (Usage or Purchase lines whose summed
//! PricingQuantity is not zero) are split by **unit class** (service × pricing unit, the unit
//! their quantities are counted in) and by SKU (SkuId; the unit class alone without one).
//! For a unit class priced in both periods (quantity sums `Q_A`, `Q_B`, costs `C_A`, `C_B`):
//! - volume = (Q_B − Q_A) × C_A / Q_A (more or less usage at the old average price);
//! - rate = Σ over SKUs priced in both periods of C_B,s − C_A,s − (Q_B,s − Q_A,s) × C_A,s / Q_A,s
//!   (the same SKUs' usage at a different price);
//! - mix = what remains of the unit class's change (shift between its SKUs, SKUs swapped).
//!
//! A unit class priced in only one period is **new** (its cost in B) or **gone** (its cost in
//! A); lines without a usable quantity (credits, tax, fees, zero-quantity lines) are **no
//! quantity** (their change). The two divisions are rounded half-to-even to the amounts' own
//! decimal places (at least 2); rate and mix are remainders, so the parts add back to the
//! change exactly. When money is converted to one currency, every part is converted at the
//! reference rate (the month `--from` starts in) and **fx** is what the actual month rates add.
//! When period A is an ISO week already reconciled and explained by owner, `before` is what
//! that reconcile stored and **allocation** is what today's rules move between owners.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::Write;

use chrono::{Datelike, Duration, NaiveDate};
use costledger_core::{BillingPeriod, ExactSum, MoneyError};
use rust_decimal::{Decimal, RoundingStrategy};
use serde::Serialize;

use crate::fx::FxError;
use crate::ledger::FxRate;
use crate::query::{MISSING, Metric, QueryError, parse_span};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ExplainError {
    #[error(transparent)]
    Query(#[from] QueryError),
    #[error(transparent)]
    Fx(#[from] FxError),
    #[error("{0}")]
    Money(#[from] MoneyError),
    #[error(
        "bad period '{0}' for {1}: use a month (2026-11), an ISO week (2026-W45), a day (2026-11-03) or a day range \
         (2026-11-01..2026-11-07)"
    )]
    BadPeriod(String, &'static str),
    #[error(
        "--from {from} is a {a} and --to {to} a {b}: compare periods of the same kind (two months, two ISO weeks or \
         two day ranges of equal length)"
    )]
    DifferentGrains { from: String, to: String, a: String, b: String },
    #[error("--from {from} must end before --to {to} starts: the periods overlap or are in the wrong order")]
    Overlap { from: String, to: String },
    #[error("--metric {0} is not a cost: explain takes BilledCost, EffectiveCost, ListCost or ContractedCost")]
    NotMoney(String),
    #[error("{what} of '{group}' has too many digits to decompose exactly (more than 28 significant digits)")]
    TooWide { what: &'static str, group: String },
    #[error("--top must be at least 1")]
    ZeroTop,
}

/// The kind of a compared period.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PeriodKind {
    Month,
    Week,
    /// A range of this many days.
    Days(i64),
}

impl std::fmt::Display for PeriodKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PeriodKind::Month => f.write_str("month"),
            PeriodKind::Week => f.write_str("ISO week"),
            PeriodKind::Days(1) => f.write_str("day"),
            PeriodKind::Days(n) => write!(f, "range of {n} days"),
        }
    }
}

/// One compared period: `[start, end)` in local days of ChargePeriodStart.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Period {
    /// As given (`2026-11`, `2026-W45`, `2026-11-01..2026-11-07`).
    pub label: String,
    /// First day.
    #[schema(value_type = String)]
    pub start: NaiveDate,
    /// Last day (inclusive).
    #[schema(value_type = String)]
    pub last: NaiveDate,
    #[serde(skip)]
    #[schema(ignore)]
    pub kind: PeriodKind,
}

impl Period {
    /// Parse `--from`/`--to`: a month, an ISO week, a day or `DAY..DAY` (inclusive).
    pub fn parse(s: &str, arg: &'static str) -> Result<Period, ExplainError> {
        let t = s.trim();
        let bad = || ExplainError::BadPeriod(s.to_string(), arg);
        let span = |x: &str| parse_span(x, arg).map_err(|_| bad());
        let is_day = |x: &str| NaiveDate::parse_from_str(x.trim(), "%Y-%m-%d").is_ok();
        let (start, end, kind) = if let Some((a, b)) = t.split_once("..") {
            if !is_day(a) || !is_day(b) {
                return Err(bad());
            }
            let (start, _) = span(a)?;
            let (_, end) = span(b)?;
            if end <= start {
                return Err(bad());
            }
            (start, end, PeriodKind::Days((end - start).num_days()))
        } else {
            let (start, end) = span(t)?;
            let kind = if is_day(t) {
                PeriodKind::Days(1)
            } else if t.to_ascii_uppercase().contains("-W") {
                PeriodKind::Week
            } else {
                PeriodKind::Month
            };
            (start, end, kind)
        };
        Ok(Period { label: t.to_string(), start, last: end - Duration::days(1), kind })
    }

    /// The exclusive end day.
    pub fn end(&self) -> NaiveDate {
        self.last + Duration::days(1)
    }

    /// The billing month the period starts in: its rate is the reference rate of a conversion.
    pub fn reference_month(&self) -> BillingPeriod {
        BillingPeriod::new(self.start.year(), self.start.month())
            .unwrap_or_else(|| BillingPeriod::of(Default::default()))
    }
}

/// Check that two periods are comparable: same kind (and length), A before B.
pub fn check_periods(a: &Period, b: &Period) -> Result<(), ExplainError> {
    let same = match (a.kind, b.kind) {
        (PeriodKind::Days(x), PeriodKind::Days(y)) => x == y,
        (x, y) => x == y,
    };
    if !same {
        return Err(ExplainError::DifferentGrains {
            from: a.label.clone(),
            to: b.label.clone(),
            a: a.kind.to_string(),
            b: b.kind.to_string(),
        });
    }
    if a.end() > b.start {
        return Err(ExplainError::Overlap { from: a.label.clone(), to: b.label.clone() });
    }
    Ok(())
}

/// The metrics a change can be explained in (money only).
pub fn check_metric(m: Metric) -> Result<Metric, ExplainError> {
    match m {
        Metric::BilledCost | Metric::EffectiveCost | Metric::ListCost | Metric::ContractedCost => Ok(m),
        other => Err(ExplainError::NotMoney(other.name().to_string())),
    }
}

/// One summed fact of one period: a group (the `--by` values), where inside it, a currency
/// and billing month, a cost and the PricingQuantity summed over the same lines.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fact {
    pub keys: Vec<Option<String>>,
    pub service: Option<String>,
    pub sku: Option<String>,
    pub pricing_unit: Option<String>,
    /// The lines are Usage or Purchase charges (the only ones whose quantity prices them).
    pub priced_category: bool,
    pub currency: String,
    pub month: BillingPeriod,
    pub cost: ExactSum,
    /// `None` when no line had a PricingQuantity.
    pub quantity: Option<ExactSum>,
}

/// The parts of one change. `gone` is the cost in A that has no counterpart in B (subtracted).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Parts {
    #[serde(serialize_with = "crate::json::exact")]
    #[schema(value_type = String)]
    pub volume: ExactSum,
    #[serde(serialize_with = "crate::json::exact")]
    #[schema(value_type = String)]
    pub rate: ExactSum,
    #[serde(serialize_with = "crate::json::exact")]
    #[schema(value_type = String)]
    pub mix: ExactSum,
    #[serde(serialize_with = "crate::json::exact")]
    #[schema(value_type = String)]
    pub new: ExactSum,
    #[serde(serialize_with = "crate::json::exact")]
    #[schema(value_type = String)]
    pub gone: ExactSum,
    #[serde(serialize_with = "crate::json::exact")]
    #[schema(value_type = String)]
    pub no_quantity: ExactSum,
    #[serde(serialize_with = "crate::json::exact")]
    #[schema(value_type = String)]
    pub fx: ExactSum,
    /// The same charges of period A given to another group by today's allocation rules than
    /// by the rules its reconcile used (`before` is then what that reconcile stored).
    #[serde(serialize_with = "crate::json::exact")]
    #[schema(value_type = String)]
    pub allocation: ExactSum,
}

impl Parts {
    /// volume + rate + mix + new − gone + no_quantity + fx + allocation.
    pub fn sum(&self) -> Result<ExactSum, MoneyError> {
        let mut s = ExactSum::ZERO;
        for v in [&self.volume, &self.rate, &self.mix, &self.new, &self.no_quantity, &self.fx, &self.allocation] {
            s.merge(v)?;
        }
        s.checked_sub(&self.gone)
    }

    fn merge(&mut self, o: &Parts) -> Result<(), MoneyError> {
        self.volume.merge(&o.volume)?;
        self.rate.merge(&o.rate)?;
        self.mix.merge(&o.mix)?;
        self.new.merge(&o.new)?;
        self.gone.merge(&o.gone)?;
        self.no_quantity.merge(&o.no_quantity)?;
        self.fx.merge(&o.fx)?;
        self.allocation.merge(&o.allocation)
    }

    /// Every part but fx multiplied by `rate` exactly (a conversion at the reference rate).
    fn times(&self, rate: Decimal, group: &str) -> Result<Parts, ExplainError> {
        let m = |v: &ExactSum| -> Result<ExactSum, ExplainError> {
            let d = to_decimal(v, "a part", group)?;
            costledger_core::exact_product(d, rate)
                .map(ExactSum::from)
                .ok_or(ExplainError::TooWide { what: "a converted part", group: group.to_string() })
        };
        Ok(Parts {
            volume: m(&self.volume)?,
            rate: m(&self.rate)?,
            mix: m(&self.mix)?,
            new: m(&self.new)?,
            gone: m(&self.gone)?,
            no_quantity: m(&self.no_quantity)?,
            fx: ExactSum::ZERO,
            allocation: ExactSum::ZERO,
        })
    }
}

/// The quantity of a group with a single unit class in both periods.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct QuantityChange {
    pub pricing_unit: Option<String>,
    #[serde(serialize_with = "crate::json::exact")]
    #[schema(value_type = String)]
    pub before: ExactSum,
    #[serde(serialize_with = "crate::json::exact")]
    #[schema(value_type = String)]
    pub after: ExactSum,
    /// Percent change, 2 places half-to-even; null when `before` is zero.
    #[schema(value_type = Option<String>)]
    pub percent: Option<Decimal>,
}

/// The change of one group (or of the groups beyond the top N, `others`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct GroupChange {
    /// The `--by` values; null is a missing value.
    pub keys: Vec<Option<String>>,
    /// The row sums the groups beyond the top N.
    pub others: bool,
    pub currency: String,
    #[serde(serialize_with = "crate::json::exact")]
    #[schema(value_type = String)]
    pub before: ExactSum,
    #[serde(serialize_with = "crate::json::exact")]
    #[schema(value_type = String)]
    pub after: ExactSum,
    #[serde(serialize_with = "crate::json::exact")]
    #[schema(value_type = String)]
    pub change: ExactSum,
    /// Percent change, 2 places half-to-even; null when `before` is zero.
    #[schema(value_type = Option<String>)]
    pub percent: Option<Decimal>,
    pub parts: Parts,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub quantity: Option<QuantityChange>,
    /// One line a manager can read: the change and its largest parts.
    pub sentence: String,
}

impl GroupChange {
    fn empty(keys: Vec<Option<String>>, currency: String, others: bool) -> GroupChange {
        GroupChange {
            keys,
            others,
            currency,
            before: ExactSum::ZERO,
            after: ExactSum::ZERO,
            change: ExactSum::ZERO,
            percent: None,
            parts: Parts::default(),
            quantity: None,
            sentence: String::new(),
        }
    }
}

/// The whole change per currency (the rows add up to it exactly).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct ChangeTotal {
    pub currency: String,
    #[serde(serialize_with = "crate::json::exact")]
    #[schema(value_type = String)]
    pub before: ExactSum,
    #[serde(serialize_with = "crate::json::exact")]
    #[schema(value_type = String)]
    pub after: ExactSum,
    #[serde(serialize_with = "crate::json::exact")]
    #[schema(value_type = String)]
    pub change: ExactSum,
    #[schema(value_type = Option<String>)]
    pub percent: Option<Decimal>,
    pub parts: Parts,
}

/// The answer of `costledger explain` (and `/api/v1/explain`, `explain_change`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Explanation {
    pub by: Vec<String>,
    #[schema(value_type = String)]
    pub metric: &'static str,
    pub from: Period,
    pub to: Period,
    pub converted_to: Option<String>,
    /// The largest changes first (by absolute change), then `others`.
    pub groups: Vec<GroupChange>,
    pub totals: Vec<ChangeTotal>,
    /// The FX rates used (`2026-10 1 EUR = 1.08 USD (fx.csv:2)`); the first month's is the reference.
    pub rates_used: Vec<String>,
    /// How the parts are computed and rounded, in one sentence.
    pub method: String,
}

/// The method sentence every answer carries.
pub const METHOD: &str = "volume = (Q_B − Q_A) × C_A / Q_A per unit class (service × pricing unit) priced in both periods; \
     rate = the same SKUs' change beyond their own volume; mix = the rest of the unit class's change; new/gone = unit \
     classes priced in one period only; no_quantity = lines without a usable PricingQuantity (credits, tax, fees); \
     divisions rounded half-to-even to the amounts' decimal places (at least 2), so the parts add back exactly; \
     converted parts use the rate of the month --from starts in, fx is the rest; allocation = period A's charges moved \
     between owners by today's rules against those of its reconcile (by owner, ISO weeks)";

/// How the two periods are compared.
#[derive(Debug, Clone)]
pub struct Spec {
    pub by: Vec<String>,
    pub metric: Metric,
    pub from: Period,
    pub to: Period,
    /// Convert to this currency; the rates and the reference month's rate apply.
    pub currency: Option<String>,
    pub top: Option<usize>,
}

/// Sums of one SKU in one period.
#[derive(Debug, Clone, Copy, Default)]
struct SkuSums {
    cost: ExactSum,
    quantity: ExactSum,
}

/// One unit class of one group and currency: SKUs → sums per period.
#[derive(Debug, Default)]
struct UnitClass {
    a: BTreeMap<Option<String>, SkuSums>,
    b: BTreeMap<Option<String>, SkuSums>,
}

/// One (group, currency): its unit classes, no-quantity costs and actual converted totals.
#[derive(Debug, Default)]
struct Cell {
    classes: BTreeMap<(Option<String>, Option<String>), UnitClass>,
    no_quantity_a: ExactSum,
    no_quantity_b: ExactSum,
    before: ExactSum,
    after: ExactSum,
}

fn to_decimal(v: &ExactSum, what: &'static str, group: &str) -> Result<Decimal, ExplainError> {
    v.to_exact_decimal().ok_or_else(|| ExplainError::TooWide { what, group: group.to_string() })
}

/// `n × c / q` rounded half-to-even to `dp` places (`q` not zero).
fn scaled(n: Decimal, c: Decimal, q: Decimal, dp: u32, group: &str) -> Result<Decimal, ExplainError> {
    let wide = || ExplainError::TooWide { what: "a volume", group: group.to_string() };
    let v = match n.checked_mul(c) {
        Some(p) => p.checked_div(q),
        None => n.checked_div(q).and_then(|x| x.checked_mul(c)),
    }
    .ok_or_else(wide)?;
    Ok(v.round_dp_with_strategy(dp, RoundingStrategy::MidpointNearestEven))
}

fn label(keys: &[Option<String>]) -> String {
    if keys.is_empty() {
        return "all".into();
    }
    keys.iter().map(|k| k.as_deref().unwrap_or(MISSING)).collect::<Vec<_>>().join(" / ")
}

/// The parts of one (group, currency) in its own currency, and its single unit class's
/// quantity change when it has exactly one.
fn decompose_cell(c: &Cell, group: &str) -> Result<(Parts, Option<QuantityChange>), ExplainError> {
    let mut p = Parts::default();
    let mut only: Vec<QuantityChange> = Vec::new();
    for ((_, unit), uc) in &c.classes {
        let total = |m: &BTreeMap<Option<String>, SkuSums>| -> Result<SkuSums, MoneyError> {
            let mut s = SkuSums::default();
            for v in m.values() {
                s.cost.merge(&v.cost)?;
                s.quantity.merge(&v.quantity)?;
            }
            Ok(s)
        };
        let (ta, tb) = (total(&uc.a)?, total(&uc.b)?);
        let priced_a = !uc.a.is_empty() && !ta.quantity.is_zero();
        let priced_b = !uc.b.is_empty() && !tb.quantity.is_zero();
        if !(priced_a && priced_b) {
            p.new.merge(&tb.cost)?;
            p.gone.merge(&ta.cost)?;
            continue;
        }
        only.push(QuantityChange {
            pricing_unit: unit.clone(),
            before: ta.quantity,
            after: tb.quantity,
            percent: tb.quantity.checked_sub(&ta.quantity)?.percent_of(&ta.quantity.abs()),
        });
        let d = |v: &ExactSum, what| to_decimal(v, what, group);
        let (ca, cb, qa, qb) = (
            d(&ta.cost, "a cost")?,
            d(&tb.cost, "a cost")?,
            d(&ta.quantity, "a quantity")?,
            d(&tb.quantity, "a quantity")?,
        );
        let dp = ca.normalize().scale().max(cb.normalize().scale()).max(2);
        let volume = scaled(qb - qa, ca, qa, dp, group)?;
        // Rate: per SKU priced in both periods, its change beyond its own volume.
        let mut rate = ExactSum::ZERO;
        for (sku, sa) in &uc.a {
            let Some(sb) = uc.b.get(sku) else { continue };
            if sa.quantity.is_zero() || sb.quantity.is_zero() {
                continue;
            }
            let sca = d(&sa.cost, "a cost")?;
            let (sqa, sqb) = (d(&sa.quantity, "a quantity")?, d(&sb.quantity, "a quantity")?);
            let own_volume = scaled(sqb - sqa, sca, sqa, dp, group)?;
            let mut r = sb.cost.checked_sub(&sa.cost)?;
            r = r.checked_sub(&ExactSum::from(own_volume))?;
            rate.merge(&r)?;
        }
        let change = tb.cost.checked_sub(&ta.cost)?;
        let volume = ExactSum::from(volume);
        let mix = change.checked_sub(&volume)?.checked_sub(&rate)?;
        p.volume.merge(&volume)?;
        p.rate.merge(&rate)?;
        p.mix.merge(&mix)?;
    }
    p.no_quantity = c.no_quantity_b.checked_sub(&c.no_quantity_a)?;
    let quantity = if only.len() == 1 { only.pop() } else { None };
    Ok((p, quantity))
}

/// Explain the change from the facts of period A to those of period B. `rates` are the stored
/// FX rates (used only when `spec.currency` is set).
pub fn decompose(spec: &Spec, a: &[Fact], b: &[Fact], rates: &[FxRate]) -> Result<Explanation, ExplainError> {
    decompose_with(spec, a, b, rates, None)
}

/// Period A's cost per (group, currency) as its reconcile stored it (the allocation rules of
/// that time), when it differs from today's allocation of the same charges.
pub type StoredBefore = BTreeMap<(Vec<Option<String>>, String), ExactSum>;

/// [`decompose`]; with `stored`, each group's `before` is what period A's reconcile stored and
/// the **allocation** part is today's allocation of A minus it (the same charges, another owner).
pub fn decompose_with(
    spec: &Spec,
    a: &[Fact],
    b: &[Fact],
    rates: &[FxRate],
    stored: Option<&StoredBefore>,
) -> Result<Explanation, ExplainError> {
    if spec.top == Some(0) {
        return Err(ExplainError::ZeroTop);
    }
    let mut used = std::collections::BTreeSet::new();
    let mut convert = |v: &ExactSum, from: &str, month: BillingPeriod| -> Result<ExactSum, ExplainError> {
        match &spec.currency {
            Some(to) if to != from => {
                let (c, r) = crate::fx::convert(rates, v, from, to, &month.to_string())?;
                used.extend(r.map(crate::fx::describe));
                Ok(c)
            }
            _ => Ok(*v),
        }
    };
    // 1. Facts into cells per (group, fact currency).
    let mut cells: BTreeMap<(Vec<Option<String>>, String), Cell> = BTreeMap::new();
    for (facts, in_b) in [(a, false), (b, true)] {
        for f in facts {
            let cell = cells.entry((f.keys.clone(), f.currency.clone())).or_default();
            let actual = convert(&f.cost, &f.currency, f.month)?;
            if in_b {
                cell.after.merge(&actual)?
            } else {
                cell.before.merge(&actual)?
            }
            let quantity = f.quantity.filter(|q| f.priced_category && !q.is_zero());
            match quantity {
                None => {
                    if in_b {
                        cell.no_quantity_b.merge(&f.cost)?
                    } else {
                        cell.no_quantity_a.merge(&f.cost)?
                    }
                }
                Some(q) => {
                    let uc = cell.classes.entry((f.service.clone(), f.pricing_unit.clone())).or_default();
                    let side = if in_b { &mut uc.b } else { &mut uc.a };
                    let s = side.entry(f.sku.clone()).or_default();
                    s.cost.merge(&f.cost)?;
                    s.quantity.merge(&q)?;
                }
            }
        }
    }
    // 2. Each cell decomposed in its own currency, then converted at the reference rate.
    let reference = spec.from.reference_month();
    let mut rows: BTreeMap<(Vec<Option<String>>, String), GroupChange> = BTreeMap::new();
    let mut cells_per_row: BTreeMap<(Vec<Option<String>>, String), usize> = BTreeMap::new();
    for ((keys, currency), cell) in &cells {
        let group = label(keys);
        let (mut parts, quantity) = decompose_cell(cell, &group)?;
        let out_currency = spec.currency.clone().unwrap_or_else(|| currency.clone());
        if out_currency != *currency {
            let (_, r) = crate::fx::convert(rates, &ExactSum::ZERO, currency, &out_currency, &reference.to_string())?;
            let rate = r.map(|r| r.rate).unwrap_or(Decimal::ONE);
            used.extend(r.map(crate::fx::describe));
            parts = parts.times(rate, &group)?;
        }
        let e = rows
            .entry((keys.clone(), out_currency.clone()))
            .or_insert_with(|| GroupChange::empty(keys.clone(), out_currency, false));
        e.before.merge(&cell.before)?;
        e.after.merge(&cell.after)?;
        e.parts.merge(&parts)?;
        // A quantity is shown only for a group in one currency (one cell).
        let n = cells_per_row.entry((keys.clone(), e.currency.clone())).or_default();
        *n += 1;
        e.quantity = if *n == 1 { quantity } else { None };
    }
    // 2b. A stored baseline: groups it has and today's allocation does not, and the allocation part.
    if let Some(stored) = stored {
        for ((keys, currency), then) in stored {
            let e = rows
                .entry((keys.clone(), currency.clone()))
                .or_insert_with(|| GroupChange::empty(keys.clone(), currency.clone(), false));
            e.parts.allocation = e.before.checked_sub(then)?;
            e.before = *then;
        }
        for ((keys, currency), e) in rows.iter_mut() {
            if !stored.contains_key(&(keys.clone(), currency.clone())) {
                // Nothing stored for this group: today's rules gave it all of its A cost.
                e.parts.allocation = e.before;
                e.before = ExactSum::ZERO;
            }
        }
    }
    // 3. Change, fx as the remainder, percent.
    let mut groups: Vec<GroupChange> = Vec::with_capacity(rows.len());
    for (_, mut g) in rows {
        g.change = g.after.checked_sub(&g.before)?;
        g.parts.fx = ExactSum::ZERO;
        g.parts.fx = g.change.checked_sub(&g.parts.sum()?)?;
        g.percent = g.change.percent_of(&g.before.abs());
        groups.push(g);
    }
    groups.sort_by(|x, y| {
        x.currency.cmp(&y.currency).then_with(|| y.change.abs().cmp(&x.change.abs())).then_with(|| x.keys.cmp(&y.keys))
    });
    // 4. Top N per currency; the rest in one exact "others" row.
    if let Some(n) = spec.top {
        let mut kept = Vec::new();
        let mut others: BTreeMap<String, GroupChange> = BTreeMap::new();
        let mut seen: BTreeMap<String, usize> = BTreeMap::new();
        for g in groups {
            let k = seen.entry(g.currency.clone()).or_default();
            *k += 1;
            if *k <= n {
                kept.push(g);
                continue;
            }
            let o = others
                .entry(g.currency.clone())
                .or_insert_with(|| GroupChange::empty(vec![None; spec.by.len()], g.currency.clone(), true));
            o.before.merge(&g.before)?;
            o.after.merge(&g.after)?;
            o.change.merge(&g.change)?;
            o.parts.merge(&g.parts)?;
        }
        for (_, mut o) in others {
            o.percent = o.change.percent_of(&o.before.abs());
            kept.push(o);
        }
        kept.sort_by(|x, y| x.currency.cmp(&y.currency).then_with(|| x.others.cmp(&y.others)));
        groups = kept;
    }
    // 5. Totals per currency and the sentences.
    let mut totals: BTreeMap<String, ChangeTotal> = BTreeMap::new();
    for g in &mut groups {
        let t = totals.entry(g.currency.clone()).or_insert_with(|| ChangeTotal {
            currency: g.currency.clone(),
            before: ExactSum::ZERO,
            after: ExactSum::ZERO,
            change: ExactSum::ZERO,
            percent: None,
            parts: Parts::default(),
        });
        t.before.merge(&g.before)?;
        t.after.merge(&g.after)?;
        t.change.merge(&g.change)?;
        t.parts.merge(&g.parts)?;
        g.sentence = sentence(g);
    }
    let totals = totals
        .into_values()
        .map(|mut t| {
            t.percent = t.change.percent_of(&t.before.abs());
            t
        })
        .collect();
    Ok(Explanation {
        by: spec.by.clone(),
        metric: spec.metric.name(),
        from: spec.from.clone(),
        to: spec.to.clone(),
        converted_to: spec.currency.clone(),
        groups,
        totals,
        rates_used: used.into_iter().collect(),
        method: METHOD.to_string(),
    })
}

/// `1234567.891` → `1,234,567.89`; signed with `+` when `signed` (presentation only).
pub fn grouped(v: &ExactSum, signed: bool) -> String {
    let s = v.to_fixed(2);
    let (neg, digits) = match s.strip_prefix('-') {
        Some(d) => (true, d),
        None => (false, s.as_str()),
    };
    let (int, frac) = digits.split_once('.').unwrap_or((digits, ""));
    let mut out = String::new();
    if neg {
        out.push('−');
    } else if signed {
        out.push('+');
    }
    for (i, ch) in int.chars().enumerate() {
        if i > 0 && (int.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(ch);
    }
    if !frac.is_empty() {
        out.push('.');
        out.push_str(frac);
    }
    out
}

fn sentence(g: &GroupChange) -> String {
    let name = if g.others { "(others)".to_string() } else { label(&g.keys) };
    let mut s = format!(
        "{name}: {} {} ({} → {})",
        grouped(&g.change, true),
        g.currency,
        grouped(&g.before, false),
        grouped(&g.after, false)
    );
    let p = &g.parts;
    let mut named: Vec<(&str, ExactSum, String)> = Vec::new();
    let volume_note = match &g.quantity {
        Some(q) => match q.percent {
            Some(pct) => {
                let sign = if pct.is_sign_negative() { "−" } else { "+" };
                format!(" ({sign}{}% {})", pct.abs(), q.pricing_unit.as_deref().unwrap_or("units"))
            }
            None => String::new(),
        },
        None => String::new(),
    };
    named.push(("volume", p.volume, volume_note));
    named.push(("rate", p.rate, String::new()));
    named.push(("mix", p.mix, String::new()));
    named.push(("new", p.new, String::new()));
    let gone = ExactSum::ZERO.checked_sub(&p.gone).unwrap_or_default();
    named.push(("gone", gone, String::new()));
    named.push(("no quantity", p.no_quantity, String::new()));
    named.push(("FX", p.fx, String::new()));
    named.push(("allocation rules", p.allocation, String::new()));
    let shown: Vec<String> = named
        .into_iter()
        .filter(|(_, v, _)| !v.round_dp(2).is_zero())
        .map(|(n, v, note)| format!("{n} {}{note}", grouped(&v, true)))
        .collect();
    if !shown.is_empty() {
        let _ = write!(s, ", of which {}", shown.join(", "));
    }
    s
}

/// The parts' column names in every format, in order.
pub const PART_NAMES: [&str; 8] = ["volume", "rate", "mix", "new", "gone", "no_quantity", "fx", "allocation"];

fn part_values(p: &Parts) -> [ExactSum; 8] {
    [p.volume, p.rate, p.mix, p.new, p.gone, p.no_quantity, p.fx, p.allocation]
}

fn headers(e: &Explanation) -> Vec<String> {
    let mut h = e.by.clone();
    h.extend(["currency", "before", "after", "change", "change_percent"].map(String::from));
    h.extend(PART_NAMES.map(String::from));
    h
}

/// CSV (RFC 4180): one row per group, exact amounts, text neutralised against formulas.
pub fn write_csv(e: &Explanation, out: impl Write) -> Result<(), csv::Error> {
    let rows: Vec<Vec<String>> = e
        .groups
        .iter()
        .map(|g| {
            let mut rec: Vec<String> = g
                .keys
                .iter()
                .map(|k| if g.others { "(others)".to_string() } else { k.clone().unwrap_or_default() })
                .collect();
            rec.push(g.currency.clone());
            rec.extend([g.before, g.after, g.change].iter().map(ExactSum::to_string));
            rec.push(g.percent.map(|p| p.to_string()).unwrap_or_default());
            rec.extend(part_values(&g.parts).iter().map(ExactSum::to_string));
            rec
        })
        .collect();
    crate::query::render::write_cells_csv(out, &headers(e), &rows)
}

/// JSON: the whole explanation, amounts as decimal strings.
pub fn write_json(e: &Explanation, mut out: impl Write) -> std::io::Result<()> {
    serde_json::to_writer_pretty(&mut out, e)?;
    out.write_all(b"\n")
}

/// An aligned table (amounts to 2 places; exact values in CSV and JSON), the totals, then the
/// top drivers as sentences.
pub fn write_table(e: &Explanation, mut out: impl Write) -> std::io::Result<()> {
    let h = headers(e);
    let keys = e.by.len() + 1;
    let pct = |p: Option<Decimal>| p.map(|p| format!("{p}%")).unwrap_or_else(|| "n/a".into());
    let mut rows: Vec<Vec<String>> = Vec::new();
    for g in &e.groups {
        let mut r: Vec<String> = g
            .keys
            .iter()
            .map(|k| if g.others { "(others)".into() } else { k.clone().unwrap_or_else(|| MISSING.into()) })
            .collect();
        r.push(g.currency.clone());
        r.extend([g.before, g.after, g.change].iter().map(|v| v.to_fixed(2)));
        r.push(pct(g.percent));
        r.extend(part_values(&g.parts).iter().map(|v| v.to_fixed(2)));
        rows.push(r);
    }
    let data = rows.len();
    for t in &e.totals {
        let mut r = vec![String::new(); keys];
        r[0] = "total".into();
        r[keys - 1] = t.currency.clone();
        r.extend([t.before, t.after, t.change].iter().map(|v| v.to_fixed(2)));
        r.push(pct(t.percent));
        r.extend(part_values(&t.parts).iter().map(|v| v.to_fixed(2)));
        rows.push(r);
    }
    writeln!(out, "{} {} → {} ({})", e.metric, e.from.label, e.to.label, e.by.join(", "))?;
    crate::query::render::write_aligned(&mut out, &h, &rows, keys, Some(data))?;
    if e.groups.is_empty() {
        writeln!(out, "(no charges in either period)")?;
        return Ok(());
    }
    writeln!(out)?;
    writeln!(out, "Top drivers:")?;
    for g in e.groups.iter().filter(|g| !g.others).take(5) {
        writeln!(out, "- {}", g.sentence)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests;
