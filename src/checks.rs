//! The reconciler's checks besides conservation: invoice, cross-source,
//! restatement, tag coverage and anomaly. Each returns findings; none changes the ledger.
//! Percentages are computed exactly and rounded half-to-even to 0.01.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{Duration, NaiveDate};
use costledger_core::{BillingPeriod, ExactSum, Totals};
use rust_decimal::Decimal;
use serde_json::json;

use crate::config::{Config, InvoicePrecision};
use crate::ledger::{
    AllocationRow, ChargeFilter, CheckKind, Dim, Finding, LedgerError, LedgerStore, LoadState, SourceRole, TotalRow,
};
use crate::reconcile::{ReconcileError, iso_week_label};

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
        let check_sources =
            store.source_roles().await?.into_iter().filter(|(_, r)| *r == SourceRole::Check).map(|(n, _)| n).collect();
        let filter = ChargeFilter { period: Some(bp), include_check_sources: true, ..Default::default() };
        Ok(PeriodTotals { rows: store.totals(&filter, &BY).await?, check_sources })
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

pub async fn run_checks(
    store: &dyn LedgerStore,
    cfg: &Config,
    periods: &[String],
    totals: &BTreeMap<String, PeriodTotals>,
    rows: &[AllocationRow],
) -> Result<Vec<Finding>, ReconcileError> {
    let mut out = Vec::new();
    for p in periods {
        if let Some(t) = totals.get(p) {
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

fn exceeds(delta: &ExactSum, tolerance: Decimal) -> bool {
    delta.abs() > ExactSum::from(tolerance)
}

/// An invoice the ledger matches (shown by `reconcile`, so a match is confirmed, not silent).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvoiceMatch {
    pub period: String,
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
    ledger_periods: &[String],
    selected: Option<&[String]>,
) -> Result<(Vec<Finding>, Vec<InvoiceMatch>, Vec<String>), ReconcileError> {
    let invoices: Vec<_> =
        store.invoices().await?.into_iter().filter(|i| selected.is_none_or(|sel| sel.contains(&i.period))).collect();
    let mut out = Vec::new();
    let mut matched = Vec::new();
    let mut missing_periods: BTreeSet<String> = BTreeSet::new();
    type Sums = BTreeMap<(String, String), ExactSum>;
    let mut cache: BTreeMap<String, (Sums, Sums)> = BTreeMap::new();
    for inv in invoices {
        let p = inv.period.clone();
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
            period: p.clone(),
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
            missing_periods.insert(p.clone());
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
        if !cache.contains_key(&p) {
            let bp: BillingPeriod = p.parse().map_err(|e| LedgerError::Corrupt(format!("invoice period {p}: {e}")))?;
            let filter = ChargeFilter { period: Some(bp), ..Default::default() };
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
            cache.insert(p.clone(), (by_invoice, by_account));
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

fn cross_source(cfg: &Config, p: &str, totals: &PeriodTotals) -> Result<Vec<Finding>, ReconcileError> {
    // The one reader of `check` sources: they are compared, never summed.
    let mut groups: BTreeMap<(String, String), BTreeMap<String, ExactSum>> = BTreeMap::new();
    for t in &totals.rows {
        let acct = PeriodTotals::key(t, ACCOUNT).to_string();
        let src = PeriodTotals::key(t, SOURCE).to_string();
        groups.entry((acct, t.currency.clone())).or_default().entry(src).or_default().merge(&t.billed_cost)?;
    }
    let mut out = Vec::new();
    for ((acct, cur), sources) in groups {
        let mut it = sources.iter();
        let Some((first, base)) = it.next() else { continue };
        for (other, amt) in it {
            let delta = amt.checked_sub(base)?;
            if exceeds(&delta, cfg.checks.cross_source_tolerance) {
                out.push(Finding {
                    check: CheckKind::CrossSource,
                    period: p.to_string(),
                    billing_account_id: Some(acct.clone()),
                    currency: Some(cur.clone()),
                    amount: Some(delta),
                    subject: Some(format!("{other} vs {first}")),
                    message: format!(
                        "sources disagree on billing account {acct} in {p}: {other} has {amt} {cur}, {first} has {base} {cur} (difference {delta})"
                    ),
                    evidence: json!({ "sources": { first.clone(): base.to_string(), other.clone(): amt.to_string() } })
                        .to_string(),
                });
            }
        }
    }
    Ok(out)
}

/// What one current load holds of one provider × billing account in a period.
#[derive(Debug, Default)]
struct Cover {
    source: String,
    days: BTreeSet<String>,
    totals: Totals,
}

/// Two primary current loads that cover the same provider × billing account × billing period
/// are the same bill counted twice: from two sources (a CUR and Cost Explorer both primary), or
/// from one source when the two loads share a charge day (a restated file saved under a new
/// path; a copy). Loads of one source on disjoint days (daily files) are a split bill, not an
/// overlap. One finding per provider × account, naming every load involved and its amounts.
async fn overlap(store: &dyn LedgerStore, p: &str, totals: &PeriodTotals) -> Result<Vec<Finding>, ReconcileError> {
    let mut groups: BTreeMap<(String, String), BTreeMap<i64, Cover>> = BTreeMap::new();
    for t in totals.primary() {
        let key = |i: usize| PeriodTotals::key(t, i).to_string();
        let load: i64 = key(LOAD).parse().unwrap_or_default();
        let c = groups.entry((key(PROVIDER), key(ACCOUNT))).or_default().entry(load).or_default();
        c.source = key(SOURCE);
        c.days.insert(key(DAY));
        c.totals.0.entry(t.currency.clone()).or_default().merge(&t.billed_cost)?;
    }
    let mut scopes: Option<BTreeMap<i64, String>> = None;
    let mut out = Vec::new();
    for ((provider, acct), loads) in groups {
        let ids: Vec<i64> = loads.keys().copied().collect();
        let mut involved: BTreeSet<i64> = BTreeSet::new();
        for (i, a) in ids.iter().enumerate() {
            for b in &ids[i + 1..] {
                let (ca, cb) = (&loads[a], &loads[b]);
                if ca.source != cb.source || !ca.days.is_disjoint(&cb.days) {
                    involved.insert(*a);
                    involved.insert(*b);
                }
            }
        }
        if involved.is_empty() {
            continue;
        }
        if scopes.is_none() {
            let current = store
                .loads(&crate::ledger::LoadFilter { state: Some(LoadState::Current), ..Default::default() })
                .await?;
            scopes = Some(current.into_iter().map(|l| (l.id, l.scope)).collect());
        }
        let scope_of = |id: i64| scopes.as_ref().and_then(|s| s.get(&id).cloned()).unwrap_or_default();
        let sources: BTreeSet<&str> = involved.iter().map(|id| loads[id].source.as_str()).collect();
        let listed: Vec<String> = involved
            .iter()
            .map(|id| {
                format!("source {} load {id} ({}): {}", loads[id].source, scope_of(*id), loads[id].totals.display())
            })
            .collect();
        // The bill counted more than once: every involved load after the first, in the first
        // load's main currency.
        let first = involved.iter().next().copied().unwrap_or_default();
        let currency = loads[&first].totals.0.keys().next().cloned();
        let mut extra = ExactSum::default();
        if let Some(cur) = &currency {
            for id in involved.iter().skip(1) {
                extra.merge(&loads[id].totals.get(cur))?;
            }
        }
        let hint = if sources.len() > 1 {
            format!(
                "if one of {} is a cross-check of the other, set `role: check` on it in the config (or import it with --role check); otherwise remove one of them",
                sources.iter().copied().collect::<Vec<_>>().join(", ")
            )
        } else {
            "the same days are loaded twice from one source (a copy, or a restated file saved under a new path): keep one file per bill, at one path".to_string()
        };
        out.push(Finding {
            check: CheckKind::Overlap,
            period: p.to_string(),
            billing_account_id: Some(acct.clone()),
            currency: currency.clone(),
            amount: Some(extra),
            subject: Some(involved.iter().map(|id| format!("load {id}")).collect::<Vec<_>>().join(", ")),
            message: format!(
                "billing account {acct} ({provider}) in {p} is covered by {} current loads, so it is counted {} times: {}; {hint}",
                involved.len(),
                involved.len(),
                listed.join("; ")
            ),
            evidence: json!({
                "provider": provider,
                "loads": involved.iter().map(|id| json!({
                    "load": id,
                    "source": loads[id].source,
                    "scope": scope_of(*id),
                    "totals": loads[id].totals.0.iter().map(|(c, s)| (c.clone(), s.to_string())).collect::<BTreeMap<_, _>>(),
                })).collect::<Vec<_>>(),
            })
            .to_string(),
        });
    }
    Ok(out)
}

/// A load that made its period final (every line invoiced) was superseded by one with other
/// totals: the invoiced bill was restated.
async fn restatements(store: &dyn LedgerStore, periods: &[String]) -> Result<Vec<Finding>, ReconcileError> {
    let history = store.period_history().await?;
    let mut out = Vec::new();
    for old in history.iter().filter(|h| h.state == LoadState::Superseded && h.all_invoiced) {
        if !periods.contains(&old.period) {
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

fn month_of(monday: &str) -> String {
    monday.get(..7).unwrap_or(monday).to_string()
}

/// A week a weekly report already described has changed since.
async fn reported_weeks(
    store: &dyn LedgerStore,
    periods: &[String],
    rows: &[AllocationRow],
) -> Result<Vec<Finding>, ReconcileError> {
    let mut out = Vec::new();
    for (week, reported) in store.reported_weeks().await? {
        let period = month_of(&week);
        if !periods.contains(&period) {
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

/// Tag coverage per billing account and currency: the share of Usage cost carrying every
/// required tag.
fn tag_coverage(cfg: &Config, p: &str, rows: &[AllocationRow]) -> Result<Vec<Finding>, ReconcileError> {
    let mut acc: BTreeMap<(String, String), (ExactSum, ExactSum)> = BTreeMap::new();
    for r in rows.iter().filter(|r| r.period == p) {
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

fn anomalies(
    cfg: &Config,
    periods: &[String],
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
        if !periods.contains(&month_of(week)) || !covered(monday) || !covered(monday - Duration::days(7)) {
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
