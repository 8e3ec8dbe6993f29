//! Restatements (a period's bill replaced) and weeks already reported that changed since.

use std::collections::{BTreeMap, BTreeSet};

use chrono::NaiveDate;
use costledger_core::{BillingPeriod, ExactSum, Totals};
use serde_json::json;

use super::{is_selected, month_of};
use crate::ledger::{AllocationRow, ChargeFilter, CheckKind, Dim, Finding, LedgerStore, LoadState};
use costledger_core::iso_week_label;

use crate::reconcile::ReconcileError;

/// A load that made its period final (every line invoiced) was superseded by one with other
/// totals: the invoiced bill was restated.
pub(super) async fn restatements(
    store: &dyn LedgerStore,
    periods: &[BillingPeriod],
) -> Result<Vec<Finding>, ReconcileError> {
    let history = store.period_history().await?;
    let mut out = Vec::new();
    for old in history.iter().filter(|h| h.state == LoadState::Superseded && h.all_invoiced) {
        if !is_selected(periods, &old.period) {
            continue;
        }
        let Some(new_id) = old.superseded_by else { continue };
        let new = history.iter().find(|h| h.load_id == new_id && h.period == old.period);
        let empty = Totals::default();
        let new_totals = new.map(|n| &n.totals).unwrap_or(&empty);
        let currencies: BTreeSet<&String> = old.totals.0.keys().chain(new_totals.0.keys()).collect();
        for cur in currencies {
            let before = old.totals.get(cur);
            let after = new_totals.get(cur);
            let delta = after.checked_sub(&before)?;
            if delta.is_zero() {
                continue;
            }
            let changes = if old.lines_kept && new.is_some_and(|n| n.lines_kept) {
                what_changed(store, old.load_id, new_id, &old.period, cur).await?
            } else {
                json!("the lines of the superseded load were removed by retention")
            };
            // The largest account × service changes, in the message itself, so `findings` and
            // the report show what changed (the evidence keeps the top 10).
            let largest = match changes.as_array() {
                Some(list) if !list.is_empty() => format!(
                    "; largest changes (billing account × service): {}",
                    list.iter()
                        .take(3)
                        .map(|c| {
                            let t = |k: &str| c.get(k).and_then(|v| v.as_str()).unwrap_or("");
                            let change = t("change");
                            let sign = if change.starts_with('-') { "" } else { "+" };
                            format!(
                                "{} × {} {sign}{change} ({} → {})",
                                t("billing_account_id"),
                                t("service"),
                                t("before"),
                                t("after")
                            )
                        })
                        .collect::<Vec<_>>()
                        .join("; ")
                ),
                Some(_) => String::new(),
                None => {
                    "; the lines of the superseded load were removed by retention, so what changed is not known".into()
                }
            };
            out.push(Finding {
                check: CheckKind::Restatement,
                period: old.period.clone(),
                billing_account_id: None,
                currency: Some(cur.clone()),
                amount: Some(delta),
                subject: Some(format!("{} load {} -> {}", old.source, old.load_id, new_id)),
                message: format!(
                    "final period {} of source {} was restated: {before} {cur} -> {after} {cur} (change {delta}); load {} (delivery {}) replaced load {} (delivery {}){largest}",
                    old.period,
                    old.source,
                    new_id,
                    new.map(|n| n.delivery_key.as_str()).unwrap_or("?"),
                    old.load_id,
                    old.delivery_key
                ),
                evidence: json!({
                    "source": old.source,
                    "old_load": old.load_id,
                    "new_load": new_id,
                    "old_total": before.to_string(),
                    "new_total": after.to_string(),
                    "old_rows": old.rows,
                    "new_rows": new.map(|n| n.rows),
                    "changes": changes,
                })
                .to_string(),
            });
        }
    }
    Ok(out)
}

/// The (billing account, service) totals that differ between two loads, largest first (top 10).
async fn what_changed(
    store: &dyn LedgerStore,
    old: i64,
    new: i64,
    period: &str,
    cur: &str,
) -> Result<serde_json::Value, ReconcileError> {
    let bp: Option<BillingPeriod> = period.parse().ok();
    let by = [Dim::BillingAccount, Dim::Service];
    let mut diff: BTreeMap<(String, String), (ExactSum, ExactSum)> = BTreeMap::new();
    for (load, is_new) in [(old, false), (new, true)] {
        let f = ChargeFilter { load: Some(load), period: bp, ..Default::default() };
        for t in store.totals(&f, &by).await? {
            if t.currency != cur {
                continue;
            }
            let k = (t.keys[0].clone().unwrap_or_default(), t.keys[1].clone().unwrap_or_default());
            let e = diff.entry(k).or_default();
            if is_new {
                e.1 = t.billed_cost;
            } else {
                e.0 = t.billed_cost;
            }
        }
    }
    let mut changed: Vec<(ExactSum, String, String, ExactSum, ExactSum)> = Vec::new();
    for ((acct, svc), (a, b)) in diff {
        let d = b.checked_sub(&a)?;
        if !d.is_zero() {
            changed.push((d, acct, svc, a, b));
        }
    }
    changed.sort_by(|x, y| y.0.abs().cmp(&x.0.abs()).then(x.1.cmp(&y.1)).then(x.2.cmp(&y.2)));
    Ok(serde_json::Value::Array(
        changed
            .into_iter()
            .take(10)
            .map(|(d, acct, svc, a, b)| {
                json!({"billing_account_id": acct, "service": svc, "before": a.to_string(), "after": b.to_string(), "change": d.to_string()})
            })
            .collect(),
    ))
}

fn week_totals(rows: &[AllocationRow], week: &str) -> Result<Totals, ReconcileError> {
    let mut t = Totals::default();
    for r in rows.iter().filter(|r| r.week == week) {
        t.0.entry(r.currency.clone()).or_default().merge(&r.amount)?;
    }
    Ok(t)
}

/// A week a weekly report already described has changed since.
pub(super) async fn reported_weeks(
    store: &dyn LedgerStore,
    periods: &[BillingPeriod],
    rows: &[AllocationRow],
) -> Result<Vec<Finding>, ReconcileError> {
    let mut out = Vec::new();
    for (week, reported) in store.reported_weeks().await? {
        let period = month_of(&week);
        if !is_selected(periods, &period) {
            continue;
        }
        let now = week_totals(rows, &week)?;
        let currencies: BTreeSet<&String> = reported.0.keys().chain(now.0.keys()).collect();
        let label = NaiveDate::parse_from_str(&week, "%Y-%m-%d").map(iso_week_label).unwrap_or(week.clone());
        for cur in currencies {
            let delta = now.get(cur).checked_sub(&reported.get(cur))?;
            if delta.is_zero() {
                continue;
            }
            out.push(Finding {
                check: CheckKind::Restatement,
                period: period.clone(),
                billing_account_id: None,
                currency: Some(cur.clone()),
                amount: Some(delta),
                subject: Some(format!("week {label}")),
                message: format!(
                    "week {label} changed after it was reported: {} {cur} reported, {} {cur} now (change {delta})",
                    reported.get(cur),
                    now.get(cur)
                ),
                evidence:
                    json!({"week": week, "reported": reported.get(cur).to_string(), "now": now.get(cur).to_string()})
                        .to_string(),
            });
        }
    }
    Ok(out)
}
