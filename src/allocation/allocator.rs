//! The allocator: for one charge, its owner and why (a rule or an owner tag), a shared rule,
//! or the reason it is unallocated. Pure.

use std::collections::HashMap;

use chrono::{DateTime, Duration, Utc};
use costledger_core::{ChargeCategory, ChargeLine};

use super::*;
use crate::ledger::FirstSeen;

pub struct Allocator {
    pub cfg: AllocationConfig,
    /// (provider, billing account, account) → first appearance.
    first_seen: HashMap<(Option<String>, String, String), DateTime<Utc>>,
    /// (provider, billing account) → when the billing account's data begins.
    billing_start: HashMap<(Option<String>, String), DateTime<Utc>>,
}

impl Allocator {
    /// `first_seen`: when each account first appears in the ledger.
    pub fn new(cfg: AllocationConfig, first_seen: Vec<FirstSeen>) -> Allocator {
        let mut billing_start: HashMap<(Option<String>, String), DateTime<Utc>> = HashMap::new();
        for f in &first_seen {
            let e = billing_start.entry((f.provider.clone(), f.billing_account_id.clone())).or_insert(f.at);
            *e = (*e).min(f.at);
        }
        let first_seen =
            first_seen.into_iter().map(|f| ((f.provider, f.billing_account_id, f.account), f.at)).collect();
        Allocator { cfg, first_seen, billing_start }
    }

    pub fn basis_text(&self, b: Basis) -> String {
        match b {
            Basis::Tag(i) => StoredBasis::Tag(&self.cfg.owner_tags[i]).to_string(),
            Basis::Rule(i) => StoredBasis::Rule(&self.cfg.rules[i].name).to_string(),
        }
    }

    pub fn shared_text(&self, rule: usize) -> String {
        let r = &self.cfg.rules[rule];
        match &r.action {
            RuleAction::Shared(s) => StoredBasis::Shared { mode: s.as_str(), rule: &r.name }.to_string(),
            RuleAction::Owner(_) => StoredBasis::Rule(&r.name).to_string(),
        }
    }

    /// Normalised tags of a line (later duplicates after normalisation lose to the first).
    pub fn tags<'a>(&self, line: &'a ChargeLine) -> Vec<(String, &'a str)> {
        let mut out: Vec<(String, &str)> = Vec::with_capacity(line.tags.len());
        for (k, v) in &line.tags {
            let nk = normalise_key(&self.cfg.tag_aliases, k);
            if !out.iter().any(|(x, _)| *x == nk) {
                out.push((nk, v.as_str()));
            }
        }
        out
    }

    /// Every required tag present with a non-empty value.
    pub fn is_tagged(&self, tags: &[(String, &str)]) -> bool {
        self.cfg.required_tags.iter().all(|k| tags.iter().any(|(t, v)| t == k && !v.trim().is_empty()))
    }

    pub fn decide(&self, line: &ChargeLine, tags: &[(String, &str)]) -> Decision {
        for (i, r) in self.cfg.rules.iter().enumerate() {
            if rule_matches(&r.matcher, line, tags) {
                return match &r.action {
                    RuleAction::Owner(o) => Decision::Owner { owner: o.clone(), basis: Basis::Rule(i) },
                    RuleAction::Shared(_) => Decision::Shared(i),
                };
            }
        }
        for (i, key) in self.cfg.owner_tags.iter().enumerate() {
            if let Some((_, v)) = tags.iter().find(|(k, v)| k == key && !v.trim().is_empty()) {
                return match canonical_owner(&self.cfg.owners, v) {
                    Some(owner) => Decision::Owner { owner, basis: Basis::Tag(i) },
                    None => Decision::Unallocated(Reason::UnknownOwner),
                };
            }
        }
        Decision::Unallocated(self.reason(line))
    }

    fn reason(&self, line: &ChargeLine) -> Reason {
        if line.charge_category == ChargeCategory::Purchase {
            return Reason::CommitmentPurchase;
        }
        let support = line.service_name.as_deref().is_some_and(|s| s.to_lowercase().contains("support"));
        let marketplace = match (&line.publisher_name, &line.provider_name) {
            (Some(p), Some(v)) => !p.eq_ignore_ascii_case(v) && !same_vendor(p, v),
            _ => false,
        };
        if matches!(line.charge_category, ChargeCategory::Tax | ChargeCategory::Credit | ChargeCategory::Adjustment)
            || support
            || marketplace
        {
            return Reason::UntaggableCharge;
        }
        let account = line.sub_account_id.clone().unwrap_or_else(|| line.billing_account_id.clone());
        // New: the account appeared after its billing account's first complete billing period
        // (accounts present from the start are not new), and the charge is within
        // new_account_days of that.
        let ba = (line.provider_name.clone(), line.billing_account_id.clone());
        if let Some(first) = self.first_seen.get(&(ba.0.clone(), ba.1.clone(), account))
            && self.billing_start.get(&ba).is_some_and(|s| *first >= first_complete_period_end(*s))
            && line.charge_period_start - *first < Duration::days(i64::from(self.cfg.new_account_days))
        {
            return Reason::NewAccount;
        }
        if line.resource_id.as_deref().is_none_or(|r| r.trim().is_empty()) {
            return Reason::SharedNoRule;
        }
        Reason::NoOwnerTag
    }
}

/// The end of the first whole billing month of data that begins at `start`: that month when
/// the data begins at its very start, else the next.
fn first_complete_period_end(start: DateTime<Utc>) -> DateTime<Utc> {
    let p = costledger_core::BillingPeriod::of(start);
    if p.start() == start { p.end() } else { p.next().end() }
}

/// "Amazon Web Services, Inc." publishes for provider "AWS": the provider's own services are
/// not marketplace charges.
fn same_vendor(publisher: &str, provider: &str) -> bool {
    let p = publisher.to_lowercase();
    let v = provider.to_lowercase();
    let initials: String = p.split(|c: char| !c.is_alphanumeric()).filter_map(|w| w.chars().next()).collect();
    p.contains(&v) || v.contains(&p) || initials.starts_with(&v)
}

fn rule_matches(m: &Match, l: &ChargeLine, tags: &[(String, &str)]) -> bool {
    let f = |g: &Option<AnyGlob>, v: Option<&str>| g.as_ref().is_none_or(|g| g.matches(v));
    f(&m.provider, l.provider_name.as_deref())
        && f(&m.billing_account_id, Some(&l.billing_account_id))
        && f(&m.sub_account_id, l.sub_account_id.as_deref())
        && f(&m.service, l.service_name.as_deref())
        && f(&m.region, l.region_id.as_deref())
        && m.charge_category.as_ref().is_none_or(|c| c.contains(&l.charge_category))
        && f(&m.resource_id, l.resource_id.as_deref())
        && m.tags.iter().all(|(k, g)| g.matches(tags.iter().find(|(t, _)| t == k).map(|(_, v)| *v)))
}
