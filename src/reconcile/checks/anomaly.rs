//! Anomalies: a group's daily or weekly cost far from its usual.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{Duration, NaiveDate};
use costledger_core::{BillingPeriod, ExactSum};
use rust_decimal::Decimal;
use serde_json::json;

use super::{is_selected, month_of};
use crate::config::Config;
use crate::ledger::{AllocationRow, CheckKind, Finding};
use costledger_core::iso_week_label;

use crate::reconcile::ReconcileError;

/// Week-over-week change per owner and per service beyond the thresholds, for weeks starting
/// in the reconciled periods, when both weeks lie wholly inside the ledger's data (a partial
/// first or last week is not an anomaly).
/// How much an anomaly matters: its change as a share of the week's spend in its currency.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Severity {
    /// Under 3% of the week's spend.
    Low,
    /// 3% to under 10%.
    Medium,
    /// 10% or more (or no spend to compare with).
    High,
}

impl Severity {
    pub fn of(share_percent: Option<Decimal>) -> Severity {
        match share_percent {
            None => Severity::High,
            Some(s) if s >= Decimal::from(10) => Severity::High,
            Some(s) if s >= Decimal::from(3) => Severity::Medium,
            Some(_) => Severity::Low,
        }
    }

    pub fn as_str(&self) -> &'static str {
        match self {
            Severity::Low => "low",
            Severity::Medium => "medium",
            Severity::High => "high",
        }
    }
}

pub(super) fn anomalies(
    cfg: &Config,
    periods: &[BillingPeriod],
    rows: &[AllocationRow],
    spans: &[(NaiveDate, NaiveDate)],
) -> Result<Vec<Finding>, ReconcileError> {
    // Every day of the week lies inside the data of some billing period ([start, end)).
    let covered = |monday: NaiveDate| {
        (0..7).all(|i| {
            let d = monday + Duration::days(i);
            spans.iter().any(|(s, e)| *s <= d && d < *e)
        })
    };
    // (kind, name, currency, week) → amount
    let mut m: BTreeMap<(&str, String, String, String), ExactSum> = BTreeMap::new();
    let mut weeks = BTreeSet::new();
    for r in rows {
        weeks.insert(r.week.clone());
        let owner = r.owner.clone().unwrap_or_else(|| "(unallocated)".into());
        m.entry(("owner", owner, r.currency.clone(), r.week.clone())).or_default().merge(&r.amount)?;
        let svc = r.service_name.clone().unwrap_or_else(|| "(none)".into());
        m.entry(("service", svc, r.currency.clone(), r.week.clone())).or_default().merge(&r.amount)?;
    }
    let subjects: BTreeSet<(&str, String, String)> = m.keys().map(|(k, n, c, _)| (*k, n.clone(), c.clone())).collect();
    // (currency, week) → the week's whole spend (every owner, allocated or not).
    let mut week_total: BTreeMap<(String, String), ExactSum> = BTreeMap::new();
    for ((kind, _, cur, week), amt) in &m {
        if *kind == "owner" {
            week_total.entry((cur.clone(), week.clone())).or_default().merge(amt)?;
        }
    }
    let mut out = Vec::new();
    for week in &weeks {
        let Ok(monday) = NaiveDate::parse_from_str(week, "%Y-%m-%d") else { continue };
        if !is_selected(periods, &month_of(week)) || !covered(monday) || !covered(monday - Duration::days(7)) {
            continue;
        }
        let prev = (monday - Duration::days(7)).to_string();
        if !weeks.contains(&prev) {
            continue;
        }
        for (kind, name, cur) in &subjects {
            let this = m.get(&(*kind, name.clone(), cur.clone(), week.clone())).copied().unwrap_or_default();
            let before = m.get(&(*kind, name.clone(), cur.clone(), prev.clone())).copied().unwrap_or_default();
            let delta = this.checked_sub(&before)?;
            if delta.abs() < ExactSum::from(cfg.checks.anomaly_min_amount_for(cur)) || delta.is_zero() {
                continue;
            }
            let pct = delta.percent_of(&before.abs());
            if pct.is_some_and(|p| p.abs() < cfg.checks.anomaly_percent) {
                continue;
            }
            // The change as a share of the week's whole spend in the currency (the larger of
            // this week and the last): a big jump of a small line is noise.
            let whole = [week, &prev]
                .iter()
                .map(|w| week_total.get(&(cur.clone(), (*w).clone())).copied().unwrap_or_default().abs())
                .max()
                .unwrap_or_default();
            let share = delta.abs().percent_of(&whole);
            if share.is_some_and(|s| s < cfg.checks.anomaly_min_share_percent) {
                continue;
            }
            let severity = Severity::of(share);
            let label = iso_week_label(monday);
            let change = pct.map(|p| format!("{p}% week over week")).unwrap_or_else(|| "new this week".into());
            let share_text = share.map(|s| format!(", {s}% of the week's {cur} spend")).unwrap_or_default();
            out.push(Finding {
                check: CheckKind::Anomaly,
                period: month_of(week),
                billing_account_id: None,
                currency: Some(cur.clone()),
                amount: Some(delta),
                subject: Some(format!("{kind} {name} {label}")),
                message: format!(
                    "{} severity: {kind} {name}: {before} -> {this} {cur} in week {label} ({change}{share_text})",
                    severity.as_str()
                ),
                evidence: json!({
                    "kind": kind,
                    "name": name,
                    "week": week,
                    "previous": before.to_string(),
                    "this": this.to_string(),
                    "severity": severity.as_str(),
                    "share_percent": share.map(|s| s.to_string()),
                })
                .to_string(),
            });
        }
    }
    Ok(out)
}
