//! The read side's catalogue: sources with their freshness, loads, billing periods, findings,
//! allocation by owner and reason, the distinct values of a dimension. Each function returns
//! serialisable views (amounts as exact decimal strings) that the HTTP API, the MCP server and
//! the web page show as they are; none of them formats for a terminal.

use std::collections::BTreeMap;

use chrono::{DateTime, SubsecRound, Utc};
use costledger_core::{ExactSum, Totals};
use serde::Serialize;
use utoipa::ToSchema;

use crate::config::Config;
use crate::ledger::{LedgerError, LedgerStore, LoadFilter, LoadRow, LoadState};
use crate::query::aggregate::{AggregateError, QueryResult};
use crate::query::{Dimension, Grain, Metric, Query, Range, RangeBy};

use super::query::QueryRunError;

fn ts(t: DateTime<Utc>) -> String {
    t.trunc_subsecs(0).format("%Y-%m-%dT%H:%M:%SZ").to_string()
}

/// Per currency, the exact amount as a decimal string (`{"EUR": "12.30", "USD": "1.005"}`).
pub fn amounts(t: &Totals) -> BTreeMap<String, String> {
    t.0.iter().map(|(c, s)| (c.clone(), s.to_string())).collect()
}

/// A source of the config or of the ledger, with how fresh its data is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct SourceView {
    pub name: String,
    /// The source type of the config (`aws_cur`, `focus` …); absent for a source only the
    /// ledger knows (loaded by `import`, or removed from the config).
    pub kind: Option<String>,
    /// `primary` (summed: the bill) or `check` (a cross-check, never summed).
    pub role: String,
    /// The cron schedule in the config, if the daemon runs it.
    pub schedule: Option<String>,
    /// The latest ChargePeriodEnd among its current charges ("data as of").
    pub data_end: Option<String>,
    /// Its newest load.
    pub last_load: Option<LoadView>,
}

/// One load (a delivery of a source's bill for one scope).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct LoadView {
    pub id: i64,
    pub source: String,
    pub scope: String,
    pub billing_period: Option<String>,
    /// `staging`, `current`, `superseded` or `failed`.
    pub state: String,
    pub started_at: String,
    pub finished_at: Option<String>,
    pub rows: u64,
    pub quarantined: u64,
    /// BilledCost of its lines per currency.
    pub totals: BTreeMap<String, String>,
    /// BilledCost of its quarantined rows per currency.
    pub quarantined_totals: BTreeMap<String, String>,
    pub superseded_by: Option<i64>,
    pub error: Option<String>,
}

impl From<LoadRow> for LoadView {
    fn from(l: LoadRow) -> Self {
        LoadView {
            id: l.id,
            source: l.source,
            scope: l.scope,
            billing_period: l.billing_period,
            state: l.state.as_str().to_string(),
            started_at: ts(l.started_at),
            finished_at: l.finished_at.map(ts),
            rows: l.row_count,
            quarantined: l.quarantined_count,
            totals: amounts(&l.totals),
            quarantined_totals: amounts(&l.quarantined_totals),
            superseded_by: l.superseded_by,
            error: l.error,
        }
    }
}

/// A billing period of one source.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct PeriodView {
    pub source: String,
    /// `YYYY-MM`.
    pub period: String,
    /// `open`, `final` or `corrected`.
    pub state: String,
    pub invoice_ids: Vec<String>,
    pub current_load: Option<i64>,
    pub totals: BTreeMap<String, String>,
}

/// A finding of the last reconcile.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct FindingView {
    /// The check that found it (`invoice_mismatch`, `unallocated` …).
    pub check: String,
    pub period: String,
    pub billing_account_id: Option<String>,
    pub currency: Option<String>,
    pub amount: Option<String>,
    pub subject: Option<String>,
    pub message: String,
    /// The check's evidence (JSON).
    #[schema(value_type = Object)]
    pub evidence: serde_json::Value,
}

/// Allocated (or unallocated) spend of one period, owner and basis.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct AllocationView {
    pub period: String,
    /// Absent when unallocated.
    pub owner: Option<String>,
    /// How the owner was decided (`tag:team`, `rule:NAME`, `shared:…`) or `unallocated`.
    pub basis: String,
    /// Why a charge has no owner (unallocated rows only).
    pub reason: Option<String>,
    /// What to do about that reason.
    pub remedy: Option<String>,
    pub currency: String,
    /// BilledCost, exact.
    pub amount: String,
    pub rows: u64,
}

/// One distinct value of a dimension.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct DimensionValue {
    /// Absent: lines without a value (`(none)` in filters).
    pub value: Option<String>,
    pub lines: u64,
}

/// A dimension and its meaning (the dimension table).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct DimensionView {
    pub name: String,
    pub column: String,
    pub meaning: String,
}

/// Every dimension a query can use (`tag:KEY` besides them).
pub fn dimensions() -> Vec<DimensionView> {
    crate::query::DIMENSIONS
        .iter()
        .map(|d| DimensionView { name: d.name.into(), column: d.column.into(), meaning: d.meaning.into() })
        .collect()
}

/// Sources of the config and of the ledger, sorted by name.
pub async fn sources(store: &dyn LedgerStore, config: &Config) -> Result<Vec<SourceView>, LedgerError> {
    let mut out: BTreeMap<String, SourceView> = BTreeMap::new();
    for (name, role) in store.source_roles().await? {
        out.insert(
            name.clone(),
            SourceView {
                name,
                kind: None,
                role: role.as_str().into(),
                schedule: None,
                data_end: None,
                last_load: None,
            },
        );
    }
    for s in &config.sources {
        let v = out.entry(s.name.clone()).or_insert_with(|| SourceView {
            name: s.name.clone(),
            kind: None,
            role: s.role.as_str().into(),
            schedule: None,
            data_end: None,
            last_load: None,
        });
        v.kind = Some(s.params.kind().to_string());
        v.schedule = s.schedule.clone();
    }
    for (source, _period, end) in store.source_data_end().await? {
        if let Some(v) = out.get_mut(&source) {
            let end = ts(end);
            if v.data_end.as_ref().is_none_or(|d| *d < end) {
                v.data_end = Some(end);
            }
        }
    }
    for v in out.values_mut() {
        let f = LoadFilter { source: Some(v.name.clone()), limit: Some(1), ..Default::default() };
        v.last_load = store.loads(&f).await?.into_iter().next().map(LoadView::from);
    }
    Ok(out.into_values().collect())
}

/// Loads, newest first.
pub async fn loads(
    store: &dyn LedgerStore,
    source: Option<String>,
    state: Option<LoadState>,
    limit: u32,
) -> Result<Vec<LoadView>, LedgerError> {
    let f = LoadFilter { source, state, limit: Some(limit), ..Default::default() };
    Ok(store.loads(&f).await?.into_iter().map(LoadView::from).collect())
}

/// Billing periods per source, sorted by source then period.
pub async fn periods(store: &dyn LedgerStore) -> Result<Vec<PeriodView>, LedgerError> {
    Ok(store
        .billing_periods()
        .await?
        .into_iter()
        .map(|p| PeriodView {
            source: p.source,
            period: p.period,
            state: p.state.as_str().into(),
            invoice_ids: p.invoice_ids,
            current_load: p.current_load,
            totals: amounts(&p.totals),
        })
        .collect())
}

/// Findings of the last reconcile (of one period, or all).
pub async fn findings(store: &dyn LedgerStore, period: Option<&str>) -> Result<Vec<FindingView>, LedgerError> {
    Ok(store
        .findings(period)
        .await?
        .into_iter()
        .map(|f| FindingView {
            check: f.check.as_str().into(),
            period: f.period,
            billing_account_id: f.billing_account_id,
            currency: f.currency,
            amount: f.amount.map(|a| a.to_string()),
            subject: f.subject,
            message: f.message,
            evidence: serde_json::from_str(&f.evidence).unwrap_or(serde_json::Value::String(f.evidence)),
        })
        .collect())
}

/// The reconciler's allocation summed per period, owner, basis, reason and currency (of one
/// period, or all), largest first within a period. Empty before the first reconcile.
pub async fn allocation(store: &dyn LedgerStore, period: Option<&str>) -> Result<Vec<AllocationView>, LedgerError> {
    let sums = allocation_sums(store, period).await?;
    let mut rows: Vec<(Key, ExactSum, u64)> = sums.into_iter().map(|(k, (a, n))| (k, a, n)).collect();
    // Largest first within a period, compared as exact sums.
    rows.sort_by(|(a, x, _), (b, y, _)| a.0.cmp(&b.0).then(y.cmp(x)).then(a.1.cmp(&b.1)).then(a.2.cmp(&b.2)));
    Ok(rows.into_iter().map(|(k, amount, rows)| allocation_view(k, amount, rows)).collect())
}

type Key = (String, Option<String>, String, Option<String>, String);

fn allocation_view((period, owner, basis, reason, currency): Key, amount: ExactSum, rows: u64) -> AllocationView {
    AllocationView {
        remedy: reason.as_deref().and_then(|r| {
            crate::allocation::Reason::ALL.iter().find(|x| x.as_str() == r).map(|x| x.advice().to_string())
        }),
        period,
        owner,
        basis,
        reason,
        currency,
        amount: amount.to_string(),
        rows,
    }
}

/// The `top` largest unallocated amounts after the last reconcile (of one period, or all),
/// by period, reason and currency, largest first (compared exactly).
pub async fn top_unallocated(
    store: &dyn LedgerStore,
    period: Option<&str>,
    top: usize,
) -> Result<Vec<AllocationView>, LedgerError> {
    let mut rows: Vec<(Key, ExactSum, u64)> = allocation_sums(store, period)
        .await?
        .into_iter()
        .filter(|(k, _)| k.1.is_none())
        .map(|(k, (a, n))| (k, a, n))
        .collect();
    rows.sort_by(|(a, x, _), (b, y, _)| y.cmp(x).then(a.0.cmp(&b.0)).then(a.3.cmp(&b.3)).then(a.4.cmp(&b.4)));
    rows.truncate(top);
    Ok(rows.into_iter().map(|(k, amount, rows)| allocation_view(k, amount, rows)).collect())
}

/// The reconciler's allocation rows summed per (period, owner, basis, reason, currency).
async fn allocation_sums(
    store: &dyn LedgerStore,
    period: Option<&str>,
) -> Result<BTreeMap<Key, (ExactSum, u64)>, LedgerError> {
    let mut sums: BTreeMap<Key, (ExactSum, u64)> = BTreeMap::new();
    for r in store.allocations(None).await? {
        if period.is_some_and(|p| p != r.period) {
            continue;
        }
        let e = sums.entry((r.period, r.owner, r.basis, r.reason, r.currency)).or_insert((ExactSum::ZERO, 0));
        e.0.merge(&r.amount).map_err(|e| LedgerError::Corrupt(format!("allocation sum: {e}")))?;
        e.1 += r.rows;
    }
    Ok(sums)
}

/// The distinct values of dimension `name` among the current charges of the range (for
/// pickers), with their line counts, sorted by value (missing last).
pub async fn dimension_values(
    store: &dyn LedgerStore,
    config: &Config,
    name: &str,
    from: Option<&str>,
    to: Option<&str>,
) -> Result<Vec<DimensionValue>, QueryRunError> {
    let dim = Dimension::parse(name, &super::query::tag_normaliser(config))?;
    let q = Query {
        metrics: vec![Metric::Lines],
        group_by: vec![dim],
        grain: Grain::None,
        range: Range::parse(RangeBy::ChargePeriod, from, to)?,
        ..Default::default()
    };
    let r: QueryResult = super::query::query(store, config, &q).await?;
    let mut by: BTreeMap<Option<String>, u64> = BTreeMap::new();
    for row in r.rows {
        // The line count is a whole number by construction; anything else is a bug, not a zero.
        let lines = row
            .values
            .first()
            .copied()
            .flatten()
            .and_then(|s| s.to_decimal())
            .and_then(|(d, _)| rust_decimal::prelude::ToPrimitive::to_u64(&d))
            .ok_or_else(|| AggregateError::Corrupt(format!("line count of {:?}", row.keys)))?;
        *by.entry(row.keys.into_iter().next().flatten()).or_default() += lines;
    }
    let mut out: Vec<DimensionValue> =
        by.iter().filter(|(v, _)| v.is_some()).map(|(v, n)| DimensionValue { value: v.clone(), lines: *n }).collect();
    if let Some(n) = by.get(&None) {
        out.push(DimensionValue { value: None, lines: *n });
    }
    Ok(out)
}
