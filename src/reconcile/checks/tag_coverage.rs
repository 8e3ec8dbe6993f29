//! Tag coverage: the share of usage cost carrying an owner tag.

use std::collections::BTreeMap;

use costledger_core::{BillingPeriod, ExactSum};
use serde_json::json;

use crate::config::Config;
use crate::ledger::{AllocationRow, CheckKind, Finding};
use crate::reconcile::ReconcileError;

/// Tag coverage per billing account and currency: the share of Usage cost carrying every
/// required tag.
pub(super) fn tag_coverage(
    cfg: &Config,
    p: BillingPeriod,
    rows: &[AllocationRow],
) -> Result<Vec<Finding>, ReconcileError> {
    let key = p.to_string();
    let mut acc: BTreeMap<(String, String), (ExactSum, ExactSum)> = BTreeMap::new();
    for r in rows.iter().filter(|r| r.period == key) {
        let Some(c) = &r.coverage else { continue };
        let e = acc.entry((r.billing_account_id.clone(), r.currency.clone())).or_default();
        e.1.merge(&r.amount)?;
        if c == "tagged" {
            e.0.merge(&r.amount)?;
        }
    }
    let target = cfg.checks.tag_coverage_target_percent;
    let mut out = Vec::new();
    for ((acct, cur), (tagged, total)) in acc {
        if total.is_negative() || total.is_zero() {
            continue;
        }
        let Some(pct) = tagged.percent_of(&total) else { continue };
        if pct < target {
            let untagged = total.checked_sub(&tagged)?;
            out.push(Finding {
                check: CheckKind::TagCoverage,
                period: p.to_string(),
                billing_account_id: Some(acct.clone()),
                currency: Some(cur.clone()),
                amount: Some(untagged),
                subject: Some(format!("{pct}%")),
                message: format!(
                    "tag coverage of billing account {acct} is {pct}% of Usage cost (target {target}%): {untagged} {cur} lacks a required tag ({})",
                    cfg.allocation.required_tags.join(", ")
                ),
                evidence: json!({"tagged": tagged.to_string(), "usage_total": total.to_string(), "required_tags": cfg.allocation.required_tags})
                    .to_string(),
            });
        }
    }
    Ok(out)
}
