//! Reconcile: allocate every current charge of each billing period, store the
//! allocation (aggregated), then run the checks and store their findings.
//!
//! A period's allocation is recomputed only when its inputs changed: the fingerprint is the
//! allocation config, the time zone and the set of current loads. Findings are recomputed on
//! every run (they read the stored allocation and a few SQL totals).

use std::collections::{BTreeMap, BTreeSet};

use costledger_core::{BillingPeriod, ExactSum, MoneyError, Totals, format_ts};
use sha2::{Digest, Sha256};

use crate::allocation::Allocator;
use crate::config::Config;
pub mod allocate;
pub mod checks;
mod conservation;

pub use allocate::{DirectSpend, EVEN_NO_DIRECT_SPEND, TOP_RESOURCES, allocate_period, shared_weights};

use crate::ledger::{Finding, LedgerError, LedgerStore, ReconcileState};

#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    #[error(transparent)]
    Ledger(#[from] LedgerError),
    #[error("{0}")]
    Money(#[from] MoneyError),
    #[error("period {period}: splitting shared charges of rule '{rule}' failed: {msg}")]
    Split { period: BillingPeriod, rule: String, msg: String },
    #[error(
        "conservation check failed (allocated + unallocated ≠ billed cost): {0}. This is a bug in costledger: \
         please report it with the output of `costledger findings`"
    )]
    Conservation(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeriodSummary {
    pub period: BillingPeriod,
    pub recomputed: bool,
    pub billed: Totals,
    pub allocated: Totals,
    pub shared: Totals,
    pub unallocated: Totals,
    /// (reason, currency) → amount
    pub by_reason: BTreeMap<(String, String), ExactSum>,
}

impl PeriodSummary {
    pub fn new(period: BillingPeriod, recomputed: bool) -> PeriodSummary {
        PeriodSummary {
            period,
            recomputed,
            billed: Totals::default(),
            allocated: Totals::default(),
            shared: Totals::default(),
            unallocated: Totals::default(),
            by_reason: BTreeMap::new(),
        }
    }
}

#[derive(Debug, Default, Clone)]
pub struct ReconcileSummary {
    pub periods: Vec<PeriodSummary>,
    pub findings: Vec<Finding>,
    /// Invoices the ledger matches.
    pub invoices_matched: Vec<checks::InvoiceMatch>,
}

/// The fingerprint of everything a period's allocation depends on.
pub fn fingerprint(cfg: &Config, current_loads: &[i64]) -> String {
    let mut h = Sha256::new();
    h.update(cfg.allocation.canonical.as_bytes());
    h.update(b"\0");
    h.update(cfg.timezone.name().as_bytes());
    h.update(b"\0");
    for id in current_loads {
        h.update(id.to_le_bytes());
    }
    let d = h.finalize();
    d.iter().map(|b| format!("{b:02x}")).collect()
}

/// Which periods exist in the ledger (any source), ascending. The ledger stores a period as
/// text (`2026-10`); it is parsed here, once, and a malformed one is a corrupt ledger.
pub async fn ledger_periods(store: &dyn LedgerStore) -> Result<Vec<BillingPeriod>, ReconcileError> {
    let mut set: BTreeSet<BillingPeriod> = BTreeSet::new();
    for p in store.billing_periods().await? {
        set.insert(parse_period(&p.period)?);
    }
    Ok(set.into_iter().collect())
}

/// A period as the ledger stores it, parsed.
pub(crate) fn parse_period(p: &str) -> Result<BillingPeriod, LedgerError> {
    p.parse().map_err(|e| LedgerError::Corrupt(format!("period {p}: {e}")))
}

/// Recompute the allocation of every selected period whose inputs changed (or all with
/// `force`). Returns the periods recomputed.
pub async fn ensure_allocated(
    store: &dyn LedgerStore,
    cfg: &Config,
    periods: &[BillingPeriod],
    force: bool,
) -> Result<Vec<BillingPeriod>, ReconcileError> {
    let loads = store.current_load_ids().await?;
    let fp = fingerprint(cfg, &loads);
    let states: BTreeMap<String, ReconcileState> =
        store.reconcile_states().await?.into_iter().map(|s| (s.period.clone(), s)).collect();
    let stale: Vec<BillingPeriod> = periods
        .iter()
        .copied()
        .filter(|p| force || states.get(&p.to_string()).is_none_or(|s| s.fingerprint != fp))
        .collect();
    if stale.is_empty() {
        return Ok(Vec::new());
    }
    let alloc = Allocator::new(cfg.allocation.clone(), store.account_first_seen().await?);
    let mut done = Vec::new();
    for p in stale {
        let span = tracing::info_span!("allocate", period = %p);
        let _g = span.enter();
        let (rows, span) = allocate_period(store, cfg, &alloc, p).await?;
        tracing::info!(rows = rows.len(), "allocation computed");
        let state = ReconcileState {
            period: p.to_string(),
            fingerprint: fp.clone(),
            data_start: span.map(|s| format_ts(s.0)),
            data_end: span.map(|s| format_ts(s.1)),
        };
        store.replace_allocations(&state, &rows).await?;
        done.push(p);
    }
    Ok(done)
}

/// Allocate (where needed), check, store findings. A conservation failure is an error.
pub async fn reconcile(
    store: &dyn LedgerStore,
    cfg: &Config,
    selected: Option<&[BillingPeriod]>,
    force: bool,
) -> Result<ReconcileSummary, ReconcileError> {
    reconcile_with(store, cfg, selected, force, Vec::new()).await
}

/// [`reconcile`], storing `extra` findings (budgets, commitments: worked out by the
/// application layer) with the reconciler's own; those of periods not reconciled are dropped.
pub async fn reconcile_with(
    store: &dyn LedgerStore,
    cfg: &Config,
    selected: Option<&[BillingPeriod]>,
    force: bool,
    extra: Vec<Finding>,
) -> Result<ReconcileSummary, ReconcileError> {
    let all = ledger_periods(store).await?;
    let periods: Vec<BillingPeriod> = match selected {
        Some(sel) => all.iter().filter(|p| sel.contains(p)).copied().collect(),
        None => all.clone(),
    };
    let recomputed = ensure_allocated(store, cfg, &periods, force).await?;
    let rows = store.allocations(None).await?;
    let mut summary = ReconcileSummary::default();
    let mut findings = Vec::new();
    let mut broken = Vec::new();
    let mut period_totals = BTreeMap::new();
    for &p in &periods {
        let mut ps = PeriodSummary::new(p, recomputed.contains(&p));
        let totals = checks::PeriodTotals::read(store, p).await?;
        let (f, b) = conservation::check_period(p, &rows, &totals.billed_by_account()?, &mut ps)?;
        findings.extend(f);
        broken.extend(b);
        period_totals.insert(p, totals);
        summary.periods.push(ps);
    }
    findings.extend(checks::run_checks(store, cfg, &periods, &period_totals, &rows).await?);
    let (invoice_findings, matched, without_bill) = checks::invoices(store, cfg, &all, selected).await?;
    findings.extend(invoice_findings);
    let mut finding_periods: Vec<String> = periods.iter().map(BillingPeriod::to_string).collect();
    finding_periods.extend(without_bill.iter().map(BillingPeriod::to_string));
    findings.extend(extra.into_iter().filter(|f| finding_periods.contains(&f.period)));
    findings.sort();
    store.replace_findings(&finding_periods, &findings).await?;
    summary.findings = findings;
    summary.invoices_matched = matched;
    if !broken.is_empty() {
        return Err(ReconcileError::Conservation(broken.join("; ")));
    }
    Ok(summary)
}
