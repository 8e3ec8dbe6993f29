//! The reconciler's checks besides conservation: invoice, cross-source,
//! restatement, tag coverage and anomaly. Each returns findings; none changes the ledger.
//! Percentages are computed exactly and rounded half-to-even to 0.01.

use std::collections::{BTreeMap, BTreeSet};

use chrono::NaiveDate;
use costledger_core::{BillingPeriod, ExactSum};
use rust_decimal::Decimal;

use crate::config::Config;
use crate::ledger::{AllocationRow, ChargeFilter, Dim, Finding, LedgerStore, LoadDayTotals, SourceRole, TotalRow};
use crate::reconcile::ReconcileError;

mod anomaly;
mod cross_source;
mod invoice;
mod restatement;
mod tag_coverage;

pub use anomaly::Severity;
use anomaly::anomalies;
use cross_source::{cross_source, overlap};
pub use invoice::{InvoiceMatch, invoices};
use restatement::{reported_weeks, restatements};
use tag_coverage::tag_coverage;

/// One billing period's charge totals per provider × billing account × source × load × UTC
/// charge day × currency, `check` sources included: the conservation, cross-source and overlap
/// checks all read these (one grouped scan of the period's charges instead of three).
pub struct PeriodTotals {
    rows: Vec<TotalRow>,
    /// Sources whose role is `check` (compared, never summed).
    check_sources: BTreeSet<String>,
}

/// The key positions of a [`PeriodTotals`] row.
const BY: [Dim; 5] = [Dim::Provider, Dim::BillingAccount, Dim::Source, Dim::Load, Dim::ChargeDay];
const PROVIDER: usize = 0;
const ACCOUNT: usize = 1;
const SOURCE: usize = 2;
const LOAD: usize = 3;
const DAY: usize = 4;

impl PeriodTotals {
    pub async fn read(store: &dyn LedgerStore, bp: BillingPeriod) -> Result<PeriodTotals, ReconcileError> {
        match store.load_day_totals(Some(&bp.to_string())).await? {
            Some(loads) => {
                Ok(PeriodTotals { rows: Self::from_day_totals(&loads)?, check_sources: check_sources(store).await? })
            }
            // A load committed before the ledger kept day totals: the grouped scan.
            None => Self::read_scan(store, bp).await,
        }
    }

    /// [`PeriodTotals::read`] by a grouped scan of the period's charges.
    pub async fn read_scan(store: &dyn LedgerStore, bp: BillingPeriod) -> Result<PeriodTotals, ReconcileError> {
        let filter = ChargeFilter { period: Some(bp), include_check_sources: true, ..Default::default() };
        Ok(PeriodTotals { rows: store.totals(&filter, &BY).await?, check_sources: check_sources(store).await? })
    }

    /// The rows: totals per provider × billing account × source × load × UTC charge day ×
    /// currency, sorted by those keys.
    pub fn rows(&self) -> &[TotalRow] {
        &self.rows
    }

    /// The rows the grouped scan of the period's charges gives (same keys, same order), from
    /// the current loads' day totals of that period.
    pub fn from_day_totals(loads: &[LoadDayTotals]) -> Result<Vec<TotalRow>, ReconcileError> {
        // (keys, currency) → (lines, BilledCost, EffectiveCost)
        type Sums = (u64, ExactSum, ExactSum);
        let mut by: BTreeMap<(Vec<Option<String>>, String), Sums> = BTreeMap::new();
        for l in loads {
            let load = l.load.to_string();
            for (k, t) in &l.rows {
                let mut keys = vec![None; BY.len()];
                keys[PROVIDER] = k.provider.clone();
                keys[ACCOUNT] = Some(k.billing_account_id.clone());
                keys[SOURCE] = Some(l.source.clone());
                keys[LOAD] = Some(load.clone());
                keys[DAY] = Some(k.day.clone());
                let e = by.entry((keys, k.currency.clone())).or_default();
                e.0 += t.rows;
                e.1.merge(&t.billed_cost)?;
                if let Some(eff) = &t.effective_cost {
                    e.2.merge(eff)?;
                }
            }
        }
        Ok(by
            .into_iter()
            .map(|((keys, currency), (rows, billed_cost, effective_cost))| TotalRow {
                keys,
                currency,
                rows,
                billed_cost,
                effective_cost,
            })
            .collect())
    }

    fn key(t: &TotalRow, i: usize) -> &str {
        t.keys[i].as_deref().unwrap_or_default()
    }

    /// The rows of primary sources (what the ledger sums).
    fn primary(&self) -> impl Iterator<Item = &TotalRow> {
        self.rows.iter().filter(|t| !self.check_sources.contains(Self::key(t, SOURCE)))
    }

    /// BilledCost of primary sources per (billing account, currency), exactly.
    pub fn billed_by_account(&self) -> Result<BTreeMap<(String, String), ExactSum>, ReconcileError> {
        let mut out: BTreeMap<(String, String), ExactSum> = BTreeMap::new();
        for t in self.primary() {
            out.entry((Self::key(t, ACCOUNT).to_string(), t.currency.clone())).or_default().merge(&t.billed_cost)?;
        }
        Ok(out)
    }
}

/// The sources whose role is `check`.
async fn check_sources(store: &dyn LedgerStore) -> Result<BTreeSet<String>, ReconcileError> {
    Ok(store.source_roles().await?.into_iter().filter(|(_, r)| *r == SourceRole::Check).map(|(n, _)| n).collect())
}

pub async fn run_checks(
    store: &dyn LedgerStore,
    cfg: &Config,
    periods: &[BillingPeriod],
    totals: &BTreeMap<BillingPeriod, PeriodTotals>,
    rows: &[AllocationRow],
) -> Result<Vec<Finding>, ReconcileError> {
    let mut out = Vec::new();
    for &p in periods {
        if let Some(t) = totals.get(&p) {
            out.extend(cross_source(cfg, p, t)?);
            out.extend(overlap(store, p, t).await?);
        }
        out.extend(tag_coverage(cfg, p, rows)?);
    }
    out.extend(restatements(store, periods).await?);
    out.extend(reported_weeks(store, periods, rows).await?);
    let day = |e: &Option<String>| e.as_deref().and_then(|e| NaiveDate::parse_from_str(e.get(..10)?, "%Y-%m-%d").ok());
    let spans: Vec<(NaiveDate, NaiveDate)> =
        store.reconcile_states().await?.iter().filter_map(|s| Some((day(&s.data_start)?, day(&s.data_end)?))).collect();
    out.extend(anomalies(cfg, periods, rows, &spans)?);
    Ok(out)
}

/// Whether a period as the ledger writes it (`2026-10`) is one of `periods`.
fn is_selected(periods: &[BillingPeriod], text: &str) -> bool {
    text.parse::<BillingPeriod>().is_ok_and(|p| periods.contains(&p))
}

fn exceeds(delta: &ExactSum, tolerance: Decimal) -> bool {
    delta.abs() > ExactSum::from(tolerance)
}

fn month_of(monday: &str) -> String {
    monday.get(..7).unwrap_or(monday).to_string()
}
