//! The invoice check: every stored invoice against the ledger's exact total.

use std::collections::{BTreeMap, BTreeSet};

use costledger_core::{BillingPeriod, ExactSum};
use rust_decimal::Decimal;
use serde_json::json;

use super::exceeds;
use crate::config::{Config, InvoicePrecision};
use crate::ledger::{ChargeFilter, CheckKind, Dim, Finding, LedgerStore};
use crate::reconcile::{ReconcileError, parse_period};

/// An invoice the ledger matches (shown by `reconcile`, so a match is confirmed, not silent).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvoiceMatch {
    pub period: BillingPeriod,
    /// `invoice ID` or `billing account ID`.
    pub what: String,
    pub currency: String,
    /// The invoice amount, as finance wrote it.
    pub amount: Decimal,
    /// The ledger's exact total.
    pub ledger: ExactSum,
}

/// Every stored invoice of the selected periods (all, when `selected` is `None`) against the
/// ledger: a finding when they differ beyond `checks.invoice_tolerance` — comparing the
/// ledger rounded half-to-even to the invoice amount's own decimal places unless
/// `checks.invoice_precision: exact` — or when the ledger has no bill at all for the
/// invoice's period (a missing bill); a confirmation when they match. Returns the findings,
/// the matches and the periods of invoices that have no ledger data (their findings are stored
/// under those periods).
pub async fn invoices(
    store: &dyn LedgerStore,
    cfg: &Config,
    ledger_periods: &[BillingPeriod],
    selected: Option<&[BillingPeriod]>,
) -> Result<(Vec<Finding>, Vec<InvoiceMatch>, Vec<BillingPeriod>), ReconcileError> {
    let mut invoices = Vec::new();
    for inv in store.invoices().await? {
        let p = parse_period(&inv.period)?;
        if selected.is_none_or(|sel| sel.contains(&p)) {
            invoices.push((p, inv));
        }
    }
    let mut out = Vec::new();
    let mut matched = Vec::new();
    let mut missing_periods: BTreeSet<BillingPeriod> = BTreeSet::new();
    type Sums = BTreeMap<(String, String), ExactSum>;
    let mut cache: BTreeMap<BillingPeriod, (Sums, Sums)> = BTreeMap::new();
    for (p, inv) in invoices {
        let what = if inv.invoice_id.is_empty() {
            format!("billing account {}", inv.billing_account_id)
        } else {
            format!("invoice {}", inv.invoice_id)
        };
        let expected = ExactSum::from(inv.amount);
        let evidence = |ledger: Option<&ExactSum>| {
            json!({
                "invoice_id": inv.invoice_id,
                "ledger": ledger.map(|l| l.to_string()),
                "invoice": inv.amount.to_string(),
                "provenance": inv.provenance,
            })
            .to_string()
        };
        let finding = |amount: ExactSum, message: String, evidence: String| Finding {
            check: CheckKind::Invoice,
            period: p.to_string(),
            billing_account_id: Some(inv.billing_account_id.clone()),
            currency: Some(inv.currency.clone()),
            amount: Some(amount),
            subject: Some(if inv.invoice_id.is_empty() {
                inv.billing_account_id.clone()
            } else {
                inv.invoice_id.clone()
            }),
            message,
            evidence,
        };
        if !ledger_periods.contains(&p) {
            missing_periods.insert(p);
            out.push(finding(
                ExactSum::default().checked_sub(&expected)?,
                format!(
                    "{what} of billing account {} for {p} says {} {cur}, but the ledger has no bill for {p} at all: \
                     import or ingest that month's bill",
                    inv.billing_account_id,
                    inv.amount,
                    cur = inv.currency
                ),
                evidence(None),
            ));
            continue;
        }
        if let std::collections::btree_map::Entry::Vacant(slot) = cache.entry(p) {
            let filter = ChargeFilter { period: Some(p), ..Default::default() };
            let mut by_invoice = Sums::new();
            for t in store.totals(&filter, &[Dim::InvoiceId]).await? {
                if let Some(id) = &t.keys[0] {
                    by_invoice.insert((id.clone(), t.currency), t.billed_cost);
                }
            }
            let mut by_account = Sums::new();
            for t in store.totals(&filter, &[Dim::BillingAccount]).await? {
                by_account.insert((t.keys[0].clone().unwrap_or_default(), t.currency), t.billed_cost);
            }
            slot.insert((by_invoice, by_account));
        }
        let (by_invoice, by_account) = &cache[&p];
        let actual = if inv.invoice_id.is_empty() {
            by_account.get(&(inv.billing_account_id.clone(), inv.currency.clone())).copied().unwrap_or_default()
        } else {
            by_invoice.get(&(inv.invoice_id.clone(), inv.currency.clone())).copied().unwrap_or_default()
        };
        let (compared, how) = match cfg.checks.invoice_precision {
            InvoicePrecision::Invoice => (
                actual.round_dp(inv.amount.scale()),
                format!(" (exactly {actual}, compared at the invoice's {} decimal places)", inv.amount.scale()),
            ),
            InvoicePrecision::Exact => (actual, String::new()),
        };
        let delta = compared.checked_sub(&expected)?;
        if exceeds(&delta, cfg.checks.invoice_tolerance) {
            out.push(finding(
                delta,
                format!(
                    "{what}: the ledger has {compared} {cur}{how}, the invoice says {} {cur} (difference {delta}, tolerance {tol})",
                    inv.amount,
                    cur = inv.currency,
                    tol = cfg.checks.invoice_tolerance
                ),
                evidence(Some(&actual)),
            ));
        } else {
            matched.push(InvoiceMatch {
                period: p,
                what,
                currency: inv.currency.clone(),
                amount: inv.amount,
                ledger: actual,
            });
        }
    }
    Ok((out, matched, missing_periods.into_iter().collect()))
}
