//! Allocation of one billing period: every current charge to an owner, a shared split or an
//! unallocated reason, summed per ISO week and group. The split weights are pure.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use chrono::{DateTime, Utc};
use costledger_core::{BillingPeriod, ChargeCategory, ExactSum};
use futures::StreamExt;
use rust_decimal::Decimal;
use rustc_hash::FxHashMap;

use super::ReconcileError;
use crate::allocation::{Allocator, Decision, Reason, RuleAction, SharedSplit, StoredBasis, split_exact};
use crate::config::Config;
use crate::ledger::{AllocationRow, ChargeColumns, ChargeFilter, LedgerStore};

/// A group's texts are interned (`Interner`): a period of 10M lines had 167,614 allocation
/// keys before the resource cap, each holding a dozen strings of its own (131 MB).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct GroupKey {
    week: Arc<str>,
    provider: Option<Arc<str>>,
    billing_account: Arc<str>,
    sub_account: Option<Arc<str>>,
    service: Option<Arc<str>>,
    category: ChargeCategory,
    currency: Arc<str>,
}

/// One shared copy of each text the allocation keys hold (weeks, accounts, services,
/// currencies, owners, bases, resource ids): a key is a handful of pointers.
#[derive(Default)]
struct Interner(rustc_hash::FxHashSet<Arc<str>>);

impl Interner {
    fn get(&mut self, s: &str) -> Arc<str> {
        if let Some(a) = self.0.get(s) {
            return a.clone();
        }
        let a: Arc<str> = Arc::from(s);
        self.0.insert(a.clone());
        a
    }

    fn opt(&mut self, s: Option<&str>) -> Option<Arc<str>> {
        s.map(|s| self.get(s))
    }
}

/// Allocate one billing period's current charges. Pure given the store's charges and config.
pub async fn allocate_period(
    store: &dyn LedgerStore,
    cfg: &Config,
    alloc: &Allocator,
    period: BillingPeriod,
) -> Result<(Vec<AllocationRow>, Option<(DateTime<Utc>, DateTime<Utc>)>), ReconcileError> {
    let p = period.to_string();
    // (group, owner, basis, reason, resource, coverage) → (rows, amount)
    let mut direct: BTreeMap<DirectKey, (u64, ExactSum)> = BTreeMap::new();
    // (group, rule) → (rows, amount, coverage-tagged amount / untagged)
    let mut shared: BTreeMap<(GroupKey, usize, Option<bool>), (u64, ExactSum)> = BTreeMap::new();
    // ISO week (its Monday, as text) of each charge start seen: formatting it per line was a
    // visible cost. Bounded: cleared past 8,192 starts.
    let mut weeks: FxHashMap<DateTime<Utc>, Arc<str>> = FxHashMap::default();
    let mut texts = Interner::default();
    let unallocated: Arc<str> = Arc::from(StoredBasis::Unallocated.to_string());
    let no_basis: Arc<str> = Arc::from("");
    let mut span: Option<(DateTime<Utc>, DateTime<Utc>)> = None;
    // Only the columns the allocator and the groups read, in whatever order the database reads.
    let filter = ChargeFilter {
        period: Some(period),
        unordered: true,
        columns: ChargeColumns::Allocation,
        ..Default::default()
    };
    let mut stream = store.charges(&filter);
    while let Some(rec) = stream.next().await {
        let rec = rec?;
        let l = &rec.line;
        span = Some(span.map_or((l.charge_period_start, l.charge_period_end), |(a, b)| {
            (a.min(l.charge_period_start), b.max(l.charge_period_end))
        }));
        let tags = alloc.tags(l);
        let coverage = (l.charge_category == ChargeCategory::Usage).then(|| alloc.is_tagged(&tags));
        if weeks.len() >= 8_192 {
            weeks.clear();
        }
        let week = weeks
            .entry(l.charge_period_start)
            .or_insert_with(|| Arc::from(costledger_core::week_of(l.charge_period_start, &cfg.timezone).to_string()))
            .clone();
        let g = GroupKey {
            week,
            provider: texts.opt(l.provider_name.as_deref()),
            billing_account: texts.get(&l.billing_account_id),
            sub_account: texts.opt(l.sub_account_id.as_deref()),
            service: texts.opt(l.service_name.as_deref()),
            category: l.charge_category,
            currency: texts.get(&l.billing_currency),
        };
        let (key, slot) = match alloc.decide(l, &tags) {
            Decision::Owner { owner, basis } => {
                let basis = texts.get(&alloc.basis_text(basis));
                ((g, Some(texts.get(&owner)), basis, None, None, coverage), None)
            }
            Decision::Unallocated(r) => {
                let res = texts.opt(l.resource_id.as_deref());
                ((g, None, unallocated.clone(), Some(r), res, coverage), None)
            }
            Decision::Shared(rule) => {
                ((g.clone(), None, no_basis.clone(), None, None, None), Some((g, rule, coverage)))
            }
        };
        match slot {
            Some(k) => {
                let e = shared.entry(k).or_default();
                e.0 += 1;
                e.1.add(l.billed_cost)?;
            }
            None => {
                let e = direct.entry(key).or_default();
                e.0 += 1;
                e.1.add(l.billed_cost)?;
            }
        }
    }
    drop(stream);
    drop(texts);

    // Owners' direct spend per currency (the weights of proportional splits).
    let mut direct_spend: DirectSpend = BTreeMap::new();
    for ((g, owner, ..), (_, amt)) in &direct {
        if let Some(o) = owner {
            direct_spend.entry(g.currency.to_string()).or_default().entry(o.to_string()).or_default().merge(amt)?;
        }
    }
    let mut out: Vec<AllocationRow> = Vec::with_capacity(direct.len() + shared.len() * 4);
    let row = |g: &GroupKey,
               owner: Option<String>,
               basis: String,
               reason: Option<Reason>,
               res: Option<String>,
               cov: Option<bool>,
               rows: u64,
               amount: ExactSum| {
        AllocationRow {
            period: p.clone(),
            week: g.week.to_string(),
            provider_name: g.provider.as_deref().map(str::to_owned),
            billing_account_id: g.billing_account.to_string(),
            sub_account_id: g.sub_account.as_deref().map(str::to_owned),
            service_name: g.service.as_deref().map(str::to_owned),
            charge_category: g.category.as_str().to_string(),
            currency: g.currency.to_string(),
            owner,
            basis,
            reason: reason.map(|r| r.as_str().to_string()),
            resource_id: res,
            coverage: cov.map(|t: bool| if t { "tagged".to_string() } else { "untagged".to_string() }),
            rows,
            amount,
        }
    };
    let direct = cap_resources(direct)?;
    for ((g, owner, basis, reason, res, cov), (rows, amt)) in direct {
        let text = |s: Option<Arc<str>>| s.as_deref().map(str::to_owned);
        out.push(row(&g, text(owner), basis.to_string(), reason, text(res), cov, rows, amt));
    }
    for ((g, rule, cov), (rows, amt)) in shared {
        let r = &alloc.cfg.rules[rule];
        let RuleAction::Shared(how) = &r.action else { continue };
        let (weights, mode) = shared_weights(alloc, how, &direct_spend, &g.currency);
        if weights.is_empty() {
            out.push(row(
                &g,
                None,
                StoredBasis::Unallocated.to_string(),
                Some(Reason::SharedNoRule),
                None,
                cov,
                rows,
                amt,
            ));
            continue;
        }
        let shares =
            split_exact(amt, &weights).map_err(|msg| ReconcileError::Split { period, rule: r.name.clone(), msg })?;
        let basis = StoredBasis::Shared { mode, rule: &r.name }.to_string();
        for (owner, share) in shares {
            out.push(row(&g, Some(owner), basis.clone(), None, None, cov, rows, share));
        }
    }
    out.sort();
    Ok((out, span))
}

/// Owners' direct spend in one billing period: currency → owner → amount.
pub type DirectSpend = BTreeMap<String, BTreeMap<String, ExactSum>>;

/// The weights a shared charge in `currency` is split by under `how`, and the split's name in
/// the basis (`proportional`, `even`, `fixed`, or [`EVEN_NO_DIRECT_SPEND`]), given the owners'
/// direct spend in the charge's billing period. Empty weights: nobody to split to (the charge
/// stays unallocated, `shared_no_rule`). Pure: the reconciler and the FOCUS 1.3 export's
/// Allocated* columns split by the same weights.
pub fn shared_weights(
    alloc: &Allocator,
    how: &SharedSplit,
    direct_spend: &DirectSpend,
    currency: &str,
) -> (Vec<(String, ExactSum)>, &'static str) {
    let even = || -> Vec<(String, ExactSum)> {
        if alloc.cfg.owners.is_empty() {
            direct_spend
                .values()
                .flat_map(|m| m.keys())
                .collect::<BTreeSet<_>>()
                .into_iter()
                .map(|o| (o.clone(), ExactSum::from(Decimal::ONE)))
                .collect()
        } else {
            alloc.cfg.owners.iter().map(|o| (o.clone(), ExactSum::from(Decimal::ONE))).collect()
        }
    };
    match how {
        SharedSplit::Fixed(parts) => (parts.iter().map(|(o, p)| (o.clone(), ExactSum::from(*p))).collect(), "fixed"),
        SharedSplit::Even => (even(), "even"),
        SharedSplit::Proportional => {
            let w: Vec<(String, ExactSum)> = direct_spend
                .get(currency)
                .map(|m| {
                    m.iter().filter(|(_, v)| !v.is_negative() && !v.is_zero()).map(|(o, v)| (o.clone(), *v)).collect()
                })
                .unwrap_or_default();
            // No owner has direct spend in this period and currency: split evenly instead,
            // and say so in the basis.
            if w.is_empty() { (even(), EVEN_NO_DIRECT_SPEND) } else { (w, "proportional") }
        }
    }
}

/// The split a `shared: proportional` rule falls back to when no owner has direct spend in the
/// period and currency: even, and the basis says why (`shared:even(no direct spend):rule:NAME`).
pub const EVEN_NO_DIRECT_SPEND: &str = "even(no direct spend)";

/// Unallocated resources kept by name per ISO week and currency (the report lists the top 10).
pub const TOP_RESOURCES: usize = 100;

type DirectKey = (GroupKey, Option<Arc<str>>, Arc<str>, Option<Reason>, Option<Arc<str>>, Option<bool>);

/// Keep resource ids only for the `TOP_RESOURCES` unallocated resources with the largest
/// absolute amount per week and currency; the others are merged into rows without a resource
/// id. Bounds the allocation table whatever the number of resources; amounts are unchanged and
/// the kept resources' totals stay exact (all of their rows are kept).
fn cap_resources(
    direct: BTreeMap<DirectKey, (u64, ExactSum)>,
) -> Result<BTreeMap<DirectKey, (u64, ExactSum)>, ReconcileError> {
    type Res = (Arc<str>, Arc<str>, Arc<str>);
    let mut per_res: BTreeMap<Res, ExactSum> = BTreeMap::new();
    for (k, (_, amt)) in &direct {
        if let Some(r) = &k.4 {
            per_res.entry((k.0.week.clone(), k.0.currency.clone(), r.clone())).or_default().merge(amt)?;
        }
    }
    // (week, currency) → (|amount|, resource)
    type Ranked<'a> = Vec<(ExactSum, &'a Arc<str>)>;
    let mut groups: BTreeMap<(&Arc<str>, &Arc<str>), Ranked<'_>> = BTreeMap::new();
    for ((w, c, r), amt) in &per_res {
        groups.entry((w, c)).or_default().push((amt.abs(), r));
    }
    if groups.values().all(|v| v.len() <= TOP_RESOURCES) {
        return Ok(direct);
    }
    let mut keep: std::collections::HashSet<Res> = std::collections::HashSet::new();
    for ((w, c), mut v) in groups {
        v.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(b.1)));
        for (_, r) in v.into_iter().take(TOP_RESOURCES) {
            keep.insert((w.clone(), c.clone(), r.clone()));
        }
    }
    let mut out: BTreeMap<DirectKey, (u64, ExactSum)> = BTreeMap::new();
    for (mut k, (n, amt)) in direct {
        if let Some(r) = &k.4
            && !keep.contains(&(k.0.week.clone(), k.0.currency.clone(), r.clone()))
        {
            k.4 = None;
        }
        let e = out.entry(k).or_default();
        e.0 += n;
        e.1.merge(&amt)?;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(resource: String) -> DirectKey {
        let g = GroupKey {
            week: "2026-10-19".into(),
            provider: Some("AWS".into()),
            billing_account: "1".into(),
            sub_account: None,
            service: Some("EC2".into()),
            category: ChargeCategory::Usage,
            currency: "USD".into(),
        };
        (g, None, "unallocated".into(), Some(Reason::NoOwnerTag), Some(resource.into()), Some(false))
    }

    #[test]
    fn only_the_top_resources_keep_their_id_and_amounts_are_unchanged() {
        let mut direct = BTreeMap::new();
        let mut total = ExactSum::ZERO;
        for i in 0..250u32 {
            let amt = ExactSum::from(Decimal::new(i64::from(i) * 3 + 1, 2));
            total.merge(&amt).expect("sum");
            direct.insert(key(format!("r-{i:03}")), (2, amt));
        }
        let capped = cap_resources(direct).expect("cap");
        let named: Vec<&Arc<str>> = capped.keys().filter_map(|k| k.4.as_ref()).collect();
        assert_eq!(named.len(), TOP_RESOURCES);
        assert_eq!(named.first().map(|s| s.as_ref()), Some("r-150"), "the 100 largest: r-150 … r-249");
        let mut after = ExactSum::ZERO;
        let mut rows = 0;
        for (n, a) in capped.values() {
            after.merge(a).expect("sum");
            rows += n;
        }
        assert_eq!(after, total);
        assert_eq!(rows, 500);
        assert_eq!(capped.len(), TOP_RESOURCES + 1, "the rest merged into one row without a resource id");
    }
}
