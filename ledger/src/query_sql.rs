//! Grouped charge reads (a query pushed down to the database): the charges a filter selects,
//! grouped by raw columns and summed exactly in SQL — `decimal_sum()` over SQLite's decimal
//! TEXT, `SUM(numeric)` on PostgreSQL — so a query that needs neither the allocation nor the
//! FOCUS columns reads one row per group instead of one per charge. The SQL is written once;
//! the [`GroupDialect`] renders the three places the backends differ.

use costledger_core::ExactSum;

use crate::{LedgerError, Result, RollupKind};

/// A column a grouped read can group by. `ChargePeriodStart` (charges only) comes back as
/// `YYYY-MM-DDTHH:MM:SSZ` text on both backends; `Day` (rollups only) is the rollup's local day
/// `YYYY-MM-DD`; `BillingPeriod` is `YYYY-MM`; `Tags` is the tag JSON as stored (a charge's
/// tags, or a rollup row's normalised rollup tags).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum GroupColumn {
    ChargePeriodStart,
    Day,
    BillingPeriod,
    Provider,
    BillingAccount,
    SubAccount,
    Service,
    ServiceCategory,
    Region,
    ChargeCategory,
    ChargeClass,
    Sku,
    Resource,
    PricingUnit,
    Tags,
    Source,
    /// CommitmentDiscountId.
    Commitment,
    /// The FOCUS commitment and pricing columns (charges and pricing rollups).
    CommitmentStatus,
    CommitmentCategory,
    CommitmentType,
    PricingCategory,
}

impl GroupColumn {
    /// Whether rollups of `kind` hold this column (see [`RollupKind`]).
    pub fn in_rollups(self, kind: RollupKind) -> bool {
        use GroupColumn as G;
        match kind {
            RollupKind::Daily => !matches!(
                self,
                G::ChargePeriodStart
                    | G::Sku
                    | G::Resource
                    | G::Commitment
                    | G::CommitmentStatus
                    | G::CommitmentCategory
                    | G::CommitmentType
                    | G::PricingCategory
            ),
            RollupKind::Pricing => matches!(
                self,
                G::Day
                    | G::BillingPeriod
                    | G::Provider
                    | G::Service
                    | G::ServiceCategory
                    | G::ChargeCategory
                    | G::ChargeClass
                    | G::Sku
                    | G::PricingUnit
                    | G::Source
                    | G::Commitment
                    | G::CommitmentStatus
                    | G::CommitmentCategory
                    | G::CommitmentType
                    | G::PricingCategory
            ),
        }
    }
}

/// What a grouped read reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum GroupedTable {
    /// `charges c`.
    Charges,
    /// `rollups r` of one kind.
    Rollups(RollupKind),
}

impl GroupColumn {
    /// The column's SQL, or `None` when `table` does not hold it.
    fn sql(self, d: &GroupDialect, table: GroupedTable) -> Option<String> {
        let rollups = matches!(table, GroupedTable::Rollups(_));
        let plain = |c: &str| Some(format!("{}.{c}", if rollups { "r" } else { "c" }));
        match self {
            _ if matches!(table, GroupedTable::Rollups(k) if !self.in_rollups(k)) => None,
            GroupColumn::ChargePeriodStart => Some(format!("{}c.charge_period_start{}", d.ts_text.0, d.ts_text.1)),
            GroupColumn::Day if rollups => Some("r.day".into()),
            GroupColumn::Day => None,
            GroupColumn::BillingPeriod if rollups => Some("r.billing_period".into()),
            GroupColumn::BillingPeriod => Some(format!("{}c.billing_period_start{}", d.month_text.0, d.month_text.1)),
            GroupColumn::Provider => plain("provider_name"),
            GroupColumn::BillingAccount => plain("billing_account_id"),
            GroupColumn::SubAccount => plain("sub_account_id"),
            GroupColumn::Service => plain("service_name"),
            GroupColumn::ServiceCategory => plain("service_category"),
            GroupColumn::Region => plain("region_id"),
            GroupColumn::ChargeCategory => plain("charge_category"),
            GroupColumn::ChargeClass => plain("charge_class"),
            GroupColumn::Sku => plain("sku_id"),
            GroupColumn::Resource => plain("resource_id"),
            GroupColumn::PricingUnit => plain("pricing_unit"),
            GroupColumn::Tags => plain("tags"),
            GroupColumn::Source => Some("s.name".into()),
            GroupColumn::Commitment => plain("commitment_discount_id"),
            GroupColumn::CommitmentStatus => plain("commitment_discount_status"),
            GroupColumn::CommitmentCategory => plain("commitment_discount_category"),
            GroupColumn::CommitmentType => plain("commitment_discount_type"),
            GroupColumn::PricingCategory => plain("pricing_category"),
        }
    }
}

/// One group of a grouped read: the keys in the order asked for, the currency, the number of
/// charge lines and each amount's exact sum (`None` when no line of the group has a value).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupedRow {
    pub keys: Vec<Option<String>>,
    pub currency: String,
    pub lines: u64,
    /// `None` when not summed ([`Summed`]); a summed BilledCost is never `None`.
    pub billed_cost: Option<ExactSum>,
    pub effective_cost: Option<ExactSum>,
    pub list_cost: Option<ExactSum>,
    pub contracted_cost: Option<ExactSum>,
    pub pricing_quantity: Option<ExactSum>,
    pub consumed_quantity: Option<ExactSum>,
}

/// How a backend spells the parts of a grouped read the two disagree on.
pub(crate) struct GroupDialect {
    /// An exact sum of a decimal column (charges: the backend's decimal type).
    pub sum: (&'static str, &'static str),
    /// An exact sum of decimal TEXT (rollups store their sums as text on both backends).
    pub text_sum: (&'static str, &'static str),
    /// A timestamp as `YYYY-MM-DDTHH:MM:SSZ`.
    pub ts_text: (&'static str, &'static str),
    /// A timestamp's UTC month as `YYYY-MM`.
    pub month_text: (&'static str, &'static str),
    /// How `charges c` joins `loads l`.
    pub charges_of_l: &'static str,
}

/// The amounts a grouped read can sum, in the order they are selected after the currency and
/// the count.
const SUMMED: [&str; 6] =
    ["billed_cost", "effective_cost", "list_cost", "contracted_cost", "pricing_quantity", "consumed_quantity"];

/// Which of [`SUMMED`] a grouped read sums; the others are selected as NULL and come back as
/// `None` (each exact sum costs a decimal parse per row: a query sums only what it shows).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Summed(pub [bool; 6]);

impl Summed {
    /// The amounts named (column names of [`SUMMED`]); an unknown name is ignored.
    pub fn of<'a>(names: impl IntoIterator<Item = &'a str>) -> Summed {
        let mut s = [false; 6];
        for n in names {
            if let Some(i) = SUMMED.iter().position(|c| *c == n) {
                s[i] = true;
            }
        }
        Summed(s)
    }
}

/// The grouped read's SQL: `w` is the WHERE clause (the backend's charge filter, or the
/// rollups' state, role and day conditions). A column `table` does not hold is an error.
pub(crate) fn grouped_sql(
    d: &GroupDialect,
    table: GroupedTable,
    by: &[GroupColumn],
    sums: Summed,
    w: &str,
) -> Result<String> {
    let mut group = Vec::with_capacity(by.len() + 1);
    for c in by {
        group.push(
            c.sql(d, table)
                .ok_or_else(|| LedgerError::State(format!("a grouped read of {table:?} cannot group by {c:?}")))?,
        );
    }
    let (alias, count, sum, from) = match table {
        GroupedTable::Charges => {
            ("c", "COUNT(*)".to_string(), d.sum, format!("charges c JOIN loads l ON {}", d.charges_of_l))
        }
        GroupedTable::Rollups(_) => (
            "r",
            "CAST(SUM(r.lines) AS BIGINT)".to_string(),
            d.text_sum,
            "rollups r JOIN loads l ON l.id = r.load_id".to_string(),
        ),
    };
    group.push(format!("{alias}.billing_currency"));
    // Timestamps are grouped by their stored value and formatted once per group, not per row
    // (PostgreSQL's `to_char` on every one of 10M charges took 20 s of a 20.4 s read); the
    // text of two values that differ only below a second is merged by the caller's sums.
    let positions: Vec<String> = by
        .iter()
        .map(|c| match (c, table) {
            (GroupColumn::ChargePeriodStart, GroupedTable::Charges) => Some("c.charge_period_start".to_string()),
            (GroupColumn::BillingPeriod, GroupedTable::Charges) => Some("c.billing_period_start".to_string()),
            _ => None,
        })
        .chain(std::iter::once(None))
        .enumerate()
        .map(|(i, raw)| raw.unwrap_or_else(|| (i + 1).to_string()))
        .collect();
    let sums: Vec<String> = SUMMED
        .iter()
        .zip(sums.0)
        .map(|(c, on)| if on { format!("{}{alias}.{c}{}", sum.0, sum.1) } else { "NULL".to_string() })
        .collect();
    Ok(format!(
        "SELECT {}, {count}, {} FROM {from} JOIN sources s ON s.id = l.source_id WHERE {w} GROUP BY {}",
        group.join(", "),
        sums.join(", "),
        positions.join(", ")
    ))
}

/// The WHERE clause (`?` placeholders) and binds of a grouped rollup read: rollups of `kind` of
/// current loads of primary sources, rollup days in `[from, to)` (`YYYY-MM-DD`).
pub(crate) fn rollup_where(kind: RollupKind, from: Option<String>, to: Option<String>) -> (String, Vec<String>) {
    let mut w = format!("l.state = 'current' AND s.role = 'primary' AND r.kind = {}", kind.code());
    let mut binds = Vec::new();
    for (cond, v) in [(" AND r.day >= ?", from), (" AND r.day < ?", to)] {
        if let Some(v) = v {
            w.push_str(cond);
            binds.push(v);
        }
    }
    (w, binds)
}

/// Decode one row of [`grouped_sql`] with `n` group columns.
pub(crate) fn grouped_row<R: crate::ChargeRow>(r: &R, n: usize) -> Result<GroupedRow> {
    let sum = |i: usize| -> Result<Option<ExactSum>> {
        r.text(i)?.map(|s| s.parse::<ExactSum>().map_err(|e| LedgerError::Corrupt(format!("sum {s}: {e}")))).transpose()
    };
    let mut keys = Vec::with_capacity(n);
    for i in 0..n {
        keys.push(r.text(i)?.map(str::to_owned));
    }
    Ok(GroupedRow {
        keys,
        currency: r.text(n)?.ok_or_else(|| LedgerError::Corrupt("NULL billing currency".into()))?.to_owned(),
        lines: u64::try_from(r.int(n + 1)?).unwrap_or(0),
        billed_cost: sum(n + 2)?,
        effective_cost: sum(n + 3)?,
        list_cost: sum(n + 4)?,
        contracted_cost: sum(n + 5)?,
        pricing_quantity: sum(n + 6)?,
        consumed_quantity: sum(n + 7)?,
    })
}
