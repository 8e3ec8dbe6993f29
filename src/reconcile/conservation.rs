//! Conservation: for one billing period, the stored allocation (owners, shared splits and
//! unallocated rows) summed per billing account and currency must equal an independent sum of
//! the charges' BilledCost, to the digit. A difference is a finding and fails the reconcile.

use std::collections::{BTreeMap, BTreeSet};

use costledger_core::{BillingPeriod, ExactSum};

use super::{PeriodSummary, ReconcileError};
use crate::allocation::StoredBasis;
use crate::ledger::{AllocationRow, CheckKind, Finding};

/// Check period `p`: fills `ps` (billed, allocated, shared, unallocated, by reason) and returns
/// the findings and the broken sums (each a line of the error).
pub(super) fn check_period(
    p: BillingPeriod,
    rows: &[AllocationRow],
    billed_map: &BTreeMap<(String, String), ExactSum>,
    ps: &mut PeriodSummary,
) -> Result<(Vec<Finding>, Vec<String>), ReconcileError> {
    let mut findings = Vec::new();
    let mut broken = Vec::new();
    // Conservation, per billing account and currency: the stored allocation against an
    // independent SQL sum of the charges.
    let mut alloc_sum: BTreeMap<(String, String), ExactSum> = BTreeMap::new();
    let key = p.to_string();
    for r in rows.iter().filter(|r| r.period == key) {
        alloc_sum.entry((r.billing_account_id.clone(), r.currency.clone())).or_default().merge(&r.amount)?;
        let t = match (&r.owner, StoredBasis::is_shared(&r.basis)) {
            (None, _) => &mut ps.unallocated,
            (Some(_), true) => &mut ps.shared,
            (Some(_), false) => &mut ps.allocated,
        };
        t.0.entry(r.currency.clone()).or_default().merge(&r.amount)?;
        if let Some(reason) = &r.reason {
            ps.by_reason.entry((reason.clone(), r.currency.clone())).or_default().merge(&r.amount)?;
        }
    }
    for ((_, currency), amount) in billed_map {
        ps.billed.0.entry(currency.clone()).or_default().merge(amount)?;
    }
    let keys: BTreeSet<&(String, String)> = alloc_sum.keys().chain(billed_map.keys()).collect();
    for k in keys {
        let a = alloc_sum.get(k).copied().unwrap_or_default();
        let b = billed_map.get(k).copied().unwrap_or_default();
        if a != b {
            let delta = a.checked_sub(&b)?;
            broken.push(format!("{p} account {} {}: allocated+unallocated {a} vs billed {b}", k.0, k.1));
            findings.push(Finding {
                check: CheckKind::Conservation,
                period: p.to_string(),
                billing_account_id: Some(k.0.clone()),
                currency: Some(k.1.clone()),
                amount: Some(delta),
                subject: None,
                message: format!("allocated + unallocated is {a} but the billed cost is {b}"),
                evidence: serde_json::json!({"allocated_plus_unallocated": a.to_string(), "billed": b.to_string()})
                    .to_string(),
            });
        }
    }
    Ok((findings, broken))
}
