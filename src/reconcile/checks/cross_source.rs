//! The cross-source check (a `check` source against the primary ones) and the overlap check
//! (two loads billing the same account and day).

use std::collections::{BTreeMap, BTreeSet};

use costledger_core::{BillingPeriod, ExactSum, Totals};
use serde_json::json;

use super::{ACCOUNT, DAY, LOAD, PROVIDER, PeriodTotals, SOURCE, exceeds};
use crate::config::Config;
use crate::ledger::{CheckKind, Finding, LedgerStore, LoadState};
use crate::reconcile::ReconcileError;

pub(super) fn cross_source(
    cfg: &Config,
    p: BillingPeriod,
    totals: &PeriodTotals,
) -> Result<Vec<Finding>, ReconcileError> {
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
pub(super) async fn overlap(
    store: &dyn LedgerStore,
    p: BillingPeriod,
    totals: &PeriodTotals,
) -> Result<Vec<Finding>, ReconcileError> {
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
