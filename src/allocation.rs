//! Allocation: config → validated rules → a pure [`Allocator`] that decides, for
//! one charge, its owner (and why) or why it is unallocated; and [`split`], which divides a
//! shared amount among owners exactly.
//!
//! Decision order for a charge:
//! 1. the rules, in order; the first whose every matcher matches decides: an owner, or a
//!    shared split;
//! 2. else the owner tags (`owner_tags`, in priority order, keys normalised): the first
//!    non-empty value; a value in `owners` (case-insensitively) is the owner, any other value
//!    is `unknown_owner`;
//! 3. else a reason code, the first that applies:
//!    - `commitment_purchase`: a Purchase charge (savings plan / reservation fees) — bought for
//!      the whole organisation, it needs a rule;
//!    - `untaggable_charge`: a charge the provider cannot tag: Tax, Credit, Adjustment, a
//!      support plan (service name containing "Support"), or a marketplace charge (publisher
//!      differs from provider) with no rule;
//!    - `new_account`: the sub account first appeared after its billing account's first
//!      *complete* billing period in the ledger (the month its data begins, if it begins on the
//!      1st, else the next month), less than `new_account_days` (default 30) before the charge:
//!      tagging and rules usually lag behind a new account. (In a first import every sub
//!      account appears hours after its billing account; none of them is new.)
//!    - `shared_no_rule`: a charge with no resource id (account-level, e.g. data transfer or
//!      a flat fee): shared by nature, but no rule says how to split it;
//!    - `no_owner_tag`: a resource charge without any owner tag.

use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, Duration, Utc};
use costledger_core::{ChargeCategory, ChargeLine, ExactSum};
use ethnum::I256;
use rust_decimal::Decimal;
use serde::Deserialize;
use serde_yaml::Value;

use crate::config::ConfigIssue;
use crate::ledger::FirstSeen;

/// Why a charge is unallocated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Reason {
    NoOwnerTag,
    UnknownOwner,
    UntaggableCharge,
    SharedNoRule,
    NewAccount,
    CommitmentPurchase,
}

impl Reason {
    pub const ALL: [Reason; 6] = [
        Reason::NoOwnerTag,
        Reason::UnknownOwner,
        Reason::UntaggableCharge,
        Reason::SharedNoRule,
        Reason::NewAccount,
        Reason::CommitmentPurchase,
    ];

    pub fn as_str(&self) -> &'static str {
        match self {
            Reason::NoOwnerTag => "no_owner_tag",
            Reason::UnknownOwner => "unknown_owner",
            Reason::UntaggableCharge => "untaggable_charge",
            Reason::SharedNoRule => "shared_no_rule",
            Reason::NewAccount => "new_account",
            Reason::CommitmentPurchase => "commitment_purchase",
        }
    }

    /// What a manager should do about it.
    pub fn advice(&self) -> &'static str {
        match self {
            Reason::NoOwnerTag => "resources without an owner tag: tag them, or add a rule",
            Reason::UnknownOwner => {
                "owner tag values that are not a known owner (typos?): fix the tags or add an alias"
            }
            Reason::UntaggableCharge => "tax, credits, support and marketplace fees: add a shared or owner rule",
            Reason::SharedNoRule => "account-level charges with no resource: add a shared rule",
            Reason::NewAccount => "accounts first seen recently: add a rule for the account",
            Reason::CommitmentPurchase => "savings plan / reservation purchases: add a shared rule",
        }
    }
}

/// How a shared charge is divided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SharedSplit {
    /// By the owners' direct spend in the same billing period and currency.
    Proportional,
    /// Evenly across all owners.
    Even,
    /// Fixed percentages (summing to 100), by owner.
    Fixed(Vec<(String, Decimal)>),
}

impl SharedSplit {
    pub fn as_str(&self) -> &'static str {
        match self {
            SharedSplit::Proportional => "proportional",
            SharedSplit::Even => "even",
            SharedSplit::Fixed(_) => "fixed",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RuleAction {
    Owner(String),
    Shared(SharedSplit),
}

/// A field matcher: any of the globs matches (case-insensitive).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AnyGlob(pub Vec<Glob>);

impl AnyGlob {
    fn matches(&self, v: Option<&str>) -> bool {
        v.is_some_and(|v| self.0.iter().any(|g| g.matches(v)))
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Match {
    pub provider: Option<AnyGlob>,
    pub billing_account_id: Option<AnyGlob>,
    pub sub_account_id: Option<AnyGlob>,
    pub service: Option<AnyGlob>,
    pub region: Option<AnyGlob>,
    pub charge_category: Option<Vec<ChargeCategory>>,
    pub resource_id: Option<AnyGlob>,
    /// Normalised tag key → value globs.
    pub tags: Vec<(String, AnyGlob)>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    /// `name` from config, else `#N` (1-based position).
    pub name: String,
    pub matcher: Match,
    pub action: RuleAction,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AllocationConfig {
    /// Valid owners. Empty: any owner tag value is accepted as an owner.
    pub owners: Vec<String>,
    /// Normalised owner tag keys, in priority order.
    pub owner_tags: Vec<String>,
    /// Lower-cased alias → normalised key.
    pub tag_aliases: BTreeMap<String, String>,
    pub rules: Vec<Rule>,
    /// Normalised keys a Usage charge must carry to count as tagged (tag coverage).
    pub required_tags: Vec<String>,
    pub new_account_days: u32,
    /// The config text of this section, canonicalised (part of the reconcile fingerprint).
    pub canonical: String,
}

impl Default for AllocationConfig {
    fn default() -> Self {
        AllocationConfig {
            owners: Vec::new(),
            owner_tags: vec!["team".into(), "owner".into(), "cost-center".into()],
            tag_aliases: BTreeMap::new(),
            rules: Vec::new(),
            required_tags: vec!["team".into()],
            new_account_days: 30,
            canonical: String::new(),
        }
    }
}

/// Normalise a tag key: alias (case-insensitive) or the key itself, trimmed and lower-cased.
pub fn normalise_key(aliases: &BTreeMap<String, String>, key: &str) -> String {
    let lc = key.trim().to_lowercase();
    aliases.get(&lc).cloned().unwrap_or(lc)
}

// ---------------------------------------------------------------------------------------------
// Config parsing and validation
// ---------------------------------------------------------------------------------------------

#[derive(Deserialize)]
#[serde(untagged)]
enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

impl OneOrMany {
    fn list(self) -> Vec<String> {
        match self {
            OneOrMany::One(s) => vec![s],
            OneOrMany::Many(v) => v,
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAllocation {
    #[serde(default)]
    owners: Vec<String>,
    owner_tags: Option<Vec<String>>,
    #[serde(default)]
    tag_aliases: BTreeMap<String, String>,
    #[serde(default)]
    rules: Vec<Value>,
    required_tags: Option<Vec<String>>,
    new_account_days: Option<u32>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRule {
    name: Option<String>,
    #[serde(rename = "match", default)]
    matcher: Option<RawMatch>,
    owner: Option<String>,
    shared: Option<Value>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawMatch {
    provider: Option<OneOrMany>,
    billing_account_id: Option<OneOrMany>,
    sub_account_id: Option<OneOrMany>,
    service: Option<OneOrMany>,
    region: Option<OneOrMany>,
    charge_category: Option<OneOrMany>,
    resource_id: Option<OneOrMany>,
    #[serde(default)]
    tags: BTreeMap<String, OneOrMany>,
}

fn push(issues: &mut Vec<ConfigIssue>, path: String, message: String) {
    issues.push(ConfigIssue { path, message });
}

fn yaml_err(e: serde_yaml::Error) -> String {
    e.to_string()
}

/// Parse and validate the `allocation:` section. Every problem is pushed with its path.
pub fn parse_allocation(v: Value, issues: &mut Vec<ConfigIssue>) -> AllocationConfig {
    let canonical = serde_json::to_string(&v).unwrap_or_default();
    let raw: RawAllocation = match serde_yaml::from_value(v) {
        Ok(r) => r,
        Err(e) => {
            push(issues, "allocation".into(), yaml_err(e));
            return AllocationConfig::default();
        }
    };
    let mut cfg = AllocationConfig { canonical, ..AllocationConfig::default() };
    let mut seen = std::collections::BTreeSet::new();
    for (i, o) in raw.owners.iter().enumerate() {
        let t = o.trim();
        if t.is_empty() {
            push(issues, format!("allocation.owners[{i}]"), "must not be empty".into());
        } else if !seen.insert(t.to_lowercase()) {
            push(issues, format!("allocation.owners[{i}]"), format!("'{t}' is listed twice"));
        } else {
            cfg.owners.push(t.to_string());
        }
    }
    for (alias, key) in &raw.tag_aliases {
        let k = key.trim().to_lowercase();
        if k.is_empty() {
            push(issues, format!("allocation.tag_aliases.{alias}"), "must name a tag key".into());
        }
        cfg.tag_aliases.insert(alias.trim().to_lowercase(), k);
    }
    if let Some(t) = raw.owner_tags {
        if t.is_empty() {
            push(issues, "allocation.owner_tags".into(), "must list at least one tag key".into());
        }
        cfg.owner_tags = t.iter().map(|k| normalise_key(&cfg.tag_aliases, k)).collect();
    }
    if let Some(t) = raw.required_tags {
        cfg.required_tags = t.iter().map(|k| normalise_key(&cfg.tag_aliases, k)).collect();
    }
    if let Some(d) = raw.new_account_days {
        cfg.new_account_days = d;
    }
    let mut names = std::collections::BTreeSet::new();
    for (i, rv) in raw.rules.into_iter().enumerate() {
        let path = format!("allocation.rules[{i}]");
        let r: RawRule = match serde_yaml::from_value(rv) {
            Ok(r) => r,
            Err(e) => {
                push(issues, path, yaml_err(e));
                continue;
            }
        };
        let name = r.name.clone().unwrap_or_else(|| format!("#{}", i + 1));
        if !names.insert(name.clone()) {
            push(issues, format!("{path}.name"), format!("'{name}' is used by an earlier rule"));
        }
        let before = issues.len();
        let matcher = parse_match(r.matcher.unwrap_or_default(), &cfg.tag_aliases, &format!("{path}.match"), issues);
        let action = match (r.owner, r.shared) {
            (Some(o), None) => match canonical_owner(&cfg.owners, &o) {
                Some(c) => Some(RuleAction::Owner(c)),
                None => {
                    push(issues, format!("{path}.owner"), unknown_owner_msg(&o, &cfg.owners));
                    None
                }
            },
            (None, Some(s)) => parse_shared(s, &cfg.owners, &format!("{path}.shared"), issues).map(RuleAction::Shared),
            (Some(_), Some(_)) => {
                push(issues, path.clone(), "give either owner or shared, not both".into());
                None
            }
            (None, None) => {
                push(
                    issues,
                    path.clone(),
                    "needs an owner (owner: NAME) or a split (shared: proportional|even|{OWNER: PERCENT…})".into(),
                );
                None
            }
        };
        if issues.len() == before
            && let Some(action) = action
        {
            cfg.rules.push(Rule { name, matcher, action });
        }
    }
    cfg
}

fn unknown_owner_msg(o: &str, owners: &[String]) -> String {
    format!("unknown owner '{o}' (allocation.owners: {})", owners.join(", "))
}

/// The configured spelling of an owner (case-insensitive). With no owners configured, any name.
pub fn canonical_owner(owners: &[String], o: &str) -> Option<String> {
    let t = o.trim();
    if t.is_empty() {
        return None;
    }
    if owners.is_empty() {
        return Some(t.to_string());
    }
    owners.iter().find(|x| x.eq_ignore_ascii_case(t) || x.to_lowercase() == t.to_lowercase()).cloned()
}

fn globs(v: Option<OneOrMany>, path: &str, issues: &mut Vec<ConfigIssue>) -> Option<AnyGlob> {
    let list = v?.list();
    if list.is_empty() {
        push(issues, path.to_string(), "must not be an empty list".into());
        return None;
    }
    let mut out = Vec::new();
    for (i, p) in list.iter().enumerate() {
        match Glob::new(p) {
            Ok(g) => out.push(g),
            Err(e) => push(issues, if list.len() > 1 { format!("{path}[{i}]") } else { path.to_string() }, e),
        }
    }
    Some(AnyGlob(out))
}

fn parse_match(m: RawMatch, aliases: &BTreeMap<String, String>, path: &str, issues: &mut Vec<ConfigIssue>) -> Match {
    let charge_category = m.charge_category.map(|c| {
        c.list()
            .iter()
            .filter_map(|s| match s.parse::<ChargeCategory>() {
                Ok(c) => Some(c),
                Err(e) => {
                    push(
                        issues,
                        format!("{path}.charge_category"),
                        format!("{e}; support plans are matched by service, e.g. service: \"*Support*\""),
                    );
                    None
                }
            })
            .collect()
    });
    let mut tags = Vec::new();
    for (k, v) in m.tags {
        if let Some(g) = globs(Some(v), &format!("{path}.tags.{k}"), issues) {
            tags.push((normalise_key(aliases, &k), g));
        }
    }
    Match {
        provider: globs(m.provider, &format!("{path}.provider"), issues),
        billing_account_id: globs(m.billing_account_id, &format!("{path}.billing_account_id"), issues),
        sub_account_id: globs(m.sub_account_id, &format!("{path}.sub_account_id"), issues),
        service: globs(m.service, &format!("{path}.service"), issues),
        region: globs(m.region, &format!("{path}.region"), issues),
        charge_category,
        resource_id: globs(m.resource_id, &format!("{path}.resource_id"), issues),
        tags,
    }
}

fn parse_shared(v: Value, owners: &[String], path: &str, issues: &mut Vec<ConfigIssue>) -> Option<SharedSplit> {
    match v {
        Value::String(s) if s == "proportional" => Some(SharedSplit::Proportional),
        Value::String(s) if s == "even" => {
            if owners.is_empty() {
                push(issues, path.to_string(), "an even split needs allocation.owners".into());
            }
            Some(SharedSplit::Even)
        }
        Value::Mapping(m) => {
            let mut parts = Vec::new();
            let mut total = Decimal::ZERO;
            for (k, pv) in m {
                let owner = k.as_str().unwrap_or_default().to_string();
                let pct = match &pv {
                    Value::Number(n) => n.to_string().parse::<Decimal>().ok(),
                    Value::String(s) => s.trim().trim_end_matches('%').parse::<Decimal>().ok(),
                    _ => None,
                };
                let Some(pct) = pct.filter(|p| *p > Decimal::ZERO) else {
                    push(issues, format!("{path}.{owner}"), "must be a percentage greater than 0".into());
                    continue;
                };
                match canonical_owner(owners, &owner) {
                    Some(c) => parts.push((c, pct)),
                    None => push(issues, format!("{path}.{owner}"), unknown_owner_msg(&owner, owners)),
                }
                total += pct;
            }
            if total != Decimal::ONE_HUNDRED {
                push(issues, path.to_string(), format!("percentages sum to {total}, not 100"));
            }
            parts.sort();
            Some(SharedSplit::Fixed(parts))
        }
        other => {
            push(
                issues,
                path.to_string(),
                format!(
                    "must be proportional, even, or a map of owner: percentage (got {})",
                    serde_yaml::to_string(&other).unwrap_or_default().trim()
                ),
            );
            None
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Glob patterns
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone, PartialEq, Eq)]
enum Tok {
    Lit(char),
    Any,
    Star,
    Class { negated: bool, ranges: Vec<(char, char)> },
}

/// A case-insensitive glob: `*` any run, `?` one character, `[abc]`, `[a-z]`, `[!x]`;
/// `\` escapes the next character.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Glob {
    pattern: String,
    toks: Vec<Tok>,
}

impl Glob {
    pub fn new(p: &str) -> Result<Glob, String> {
        let mut toks = Vec::new();
        let mut it = p.chars().flat_map(char::to_lowercase).peekable();
        while let Some(c) = it.next() {
            match c {
                '*' => {
                    if toks.last() != Some(&Tok::Star) {
                        toks.push(Tok::Star);
                    }
                }
                '?' => toks.push(Tok::Any),
                '\\' => match it.next() {
                    Some(e) => toks.push(Tok::Lit(e)),
                    None => return Err(format!("bad pattern '{p}': it ends with an escaping '\\'")),
                },
                '[' => {
                    let negated = it.next_if(|c| *c == '!' || *c == '^').is_some();
                    let mut ranges = Vec::new();
                    let mut closed = false;
                    while let Some(c) = it.next() {
                        if c == ']' && !ranges.is_empty() {
                            closed = true;
                            break;
                        }
                        if it.peek() == Some(&'-') {
                            it.next();
                            match it.next() {
                                Some(']') => {
                                    ranges.push((c, c));
                                    ranges.push(('-', '-'));
                                    closed = true;
                                    break;
                                }
                                Some(hi) if hi >= c => ranges.push((c, hi)),
                                Some(hi) => {
                                    return Err(format!("bad pattern '{p}': range {c}-{hi} is reversed"));
                                }
                                None => break,
                            }
                        } else {
                            ranges.push((c, c));
                        }
                    }
                    if !closed {
                        return Err(format!("bad pattern '{p}': '[' has no closing ']'"));
                    }
                    toks.push(Tok::Class { negated, ranges });
                }
                c => toks.push(Tok::Lit(c)),
            }
        }
        Ok(Glob { pattern: p.to_string(), toks })
    }

    pub fn as_str(&self) -> &str {
        &self.pattern
    }

    pub fn matches(&self, s: &str) -> bool {
        let text: Vec<char> = s.chars().flat_map(char::to_lowercase).collect();
        // Iterative wildcard matching with one backtrack point per star.
        let (mut ti, mut pi) = (0usize, 0usize);
        let mut star: Option<(usize, usize)> = None;
        while ti < text.len() {
            let ok = match self.toks.get(pi) {
                Some(Tok::Lit(c)) => *c == text[ti],
                Some(Tok::Any) => true,
                Some(Tok::Class { negated, ranges }) => {
                    ranges.iter().any(|(lo, hi)| (*lo..=*hi).contains(&text[ti])) != *negated
                }
                Some(Tok::Star) => {
                    star = Some((pi, ti));
                    pi += 1;
                    continue;
                }
                None => false,
            };
            if ok {
                ti += 1;
                pi += 1;
            } else if let Some((sp, st)) = star {
                pi = sp + 1;
                ti = st + 1;
                star = Some((sp, st + 1));
            } else {
                return false;
            }
        }
        self.toks[pi..].iter().all(|t| *t == Tok::Star)
    }
}

// ---------------------------------------------------------------------------------------------
// The allocator
// ---------------------------------------------------------------------------------------------

/// How an allocated charge's owner was decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Basis {
    /// Index into `owner_tags`.
    Tag(usize),
    /// Index into `rules`.
    Rule(usize),
}

/// An allocation row's basis as the ledger stores it (text, one closed set): `tag:KEY` (the
/// owner tag that decided), `rule:NAME` (an owner rule), `shared:MODE:rule:NAME` (a shared
/// rule's split; MODE is `proportional`, `even`, `fixed` or
/// [`EVEN_NO_DIRECT_SPEND`](crate::reconcile::EVEN_NO_DIRECT_SPEND)) and `unallocated`. Parsed
/// and written only here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoredBasis<'a> {
    Tag(&'a str),
    Rule(&'a str),
    Shared {
        mode: &'a str,
        rule: &'a str,
    },
    Unallocated,
    /// Text this version does not write (kept as is).
    Other(&'a str),
}

impl<'a> StoredBasis<'a> {
    pub fn parse(s: &'a str) -> StoredBasis<'a> {
        if s == "unallocated" {
            return StoredBasis::Unallocated;
        }
        if let Some(rest) = s.strip_prefix("shared:")
            && let Some((mode, rule)) = rest.split_once(":rule:")
        {
            return StoredBasis::Shared { mode, rule };
        }
        if let Some(k) = s.strip_prefix("tag:") {
            return StoredBasis::Tag(k);
        }
        if let Some(r) = s.strip_prefix("rule:") {
            return StoredBasis::Rule(r);
        }
        StoredBasis::Other(s)
    }

    /// A share of a shared rule's charges (an owner's split, not its direct spend).
    pub fn is_shared(s: &str) -> bool {
        matches!(StoredBasis::parse(s), StoredBasis::Shared { .. })
    }
}

impl std::fmt::Display for StoredBasis<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StoredBasis::Tag(k) => write!(f, "tag:{k}"),
            StoredBasis::Rule(r) => write!(f, "rule:{r}"),
            StoredBasis::Shared { mode, rule } => write!(f, "shared:{mode}:rule:{rule}"),
            StoredBasis::Unallocated => f.write_str("unallocated"),
            StoredBasis::Other(s) => f.write_str(s),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    Owner {
        owner: String,
        basis: Basis,
    },
    /// Index of the shared rule.
    Shared(usize),
    Unallocated(Reason),
}

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

// ---------------------------------------------------------------------------------------------
// Exact splitting
// ---------------------------------------------------------------------------------------------

/// Split `amount` among owners in proportion to `weights` (non-negative, at least one
/// positive), exactly: every share is a multiple of 10^-s where s = max(2, the amount's own
/// number of decimal places), and the shares sum to `amount`.
///
/// The remainder: each owner first gets its share rounded toward zero; the units left over go
/// one each to the owners with the largest dropped fraction, ties to the owner first in
/// alphabetical order. So 100.00 split three ways is 33.34 (the alphabetically first owner),
/// 33.33, 33.33.
pub fn split_exact(amount: ExactSum, weights: &[(String, ExactSum)]) -> Result<Vec<(String, ExactSum)>, String> {
    let mut ws: Vec<(String, I256)> =
        weights.iter().map(|(o, w)| (o.clone(), units(w))).filter(|(_, w)| *w > I256::ZERO).collect();
    ws.sort_by(|a, b| a.0.cmp(&b.0));
    if ws.is_empty() {
        return Err("no owner has a positive weight to split by".into());
    }
    // Weights only need relative precision: keep them under 2^100 so products fit in 256 bits.
    let max_bits = ws.iter().map(|(_, w)| 256 - w.leading_zeros()).max().unwrap_or(0);
    if max_bits > 100 {
        let shift = max_bits - 100;
        for w in ws.iter_mut() {
            w.1 >>= shift;
        }
        ws.retain(|(_, w)| *w > I256::ZERO);
    }
    let total_w: I256 = ws.iter().map(|w| w.1).fold(I256::ZERO, |a, b| a + b);
    // The amount in units of 10^-s.
    let raw = units(&amount);
    let mut drop = 0u32; // decimal places below s
    let mut probe = raw;
    while drop < MAX_SCALE - 2 && probe != I256::ZERO && probe % I256::from(10u8) == I256::ZERO {
        probe /= I256::from(10u8);
        drop += 1;
    }
    if probe == I256::ZERO {
        drop = MAX_SCALE - 2;
    }
    let unit = pow10(drop);
    let scaled = raw / unit;
    let neg = scaled < I256::ZERO;
    let abs = if neg { -scaled } else { scaled };
    let mut shares = Vec::with_capacity(ws.len());
    for (i, (_, w)) in ws.iter().enumerate() {
        let p = abs.checked_mul(*w).ok_or_else(|| format!("amount {amount} is too large to split"))?;
        shares.push((i, p / total_w, p % total_w));
    }
    let given: I256 = shares.iter().map(|s| s.1).fold(I256::ZERO, |a, b| a + b);
    let mut left = abs - given;
    let mut order: Vec<usize> = (0..shares.len()).collect();
    order.sort_by(|a, b| shares[*b].2.cmp(&shares[*a].2).then(a.cmp(b)));
    for i in order {
        if left <= I256::ZERO {
            break;
        }
        shares[i].1 += I256::ONE;
        left -= I256::ONE;
    }
    Ok(shares
        .into_iter()
        .map(|(i, u, _)| {
            let u = if neg { -u } else { u };
            (ws[i].0.clone(), ExactSum::from_le_bytes((u * unit).to_le_bytes()))
        })
        .collect())
}

/// [`split_exact`] for `Decimal` amounts and weights.
pub fn split(amount: Decimal, weights: &[(String, Decimal)]) -> Result<Vec<(String, Decimal)>, String> {
    let w: Vec<(String, ExactSum)> = weights.iter().map(|(o, w)| (o.clone(), ExactSum::from(*w))).collect();
    split_by(amount, &w)
}

/// [`split_exact`] for a `Decimal` amount: each share at the amount's scale (at least 2).
pub fn split_by(amount: Decimal, weights: &[(String, ExactSum)]) -> Result<Vec<(String, Decimal)>, String> {
    let s = split_exact(ExactSum::from(amount), weights)?;
    // Shares are multiples of 10^-max(2, scale of amount): they fit a Decimal at that scale.
    let scale = amount.scale().max(2);
    s.into_iter()
        .map(|(o, x)| {
            let (d, _) = x.to_decimal().ok_or_else(|| format!("share of {amount} out of range"))?;
            let mut d = d;
            d.rescale(scale);
            Ok((o, d))
        })
        .collect()
}

const MAX_SCALE: u32 = 28;

fn units(x: &ExactSum) -> I256 {
    I256::from_le_bytes(x.to_le_bytes())
}

fn pow10(n: u32) -> I256 {
    let mut v = I256::ONE;
    for _ in 0..n {
        v *= I256::from(10u8);
    }
    v
}

#[cfg(test)]
mod tests {

    /// Every stored basis reads back as what wrote it, including rule names with colons and
    /// the `even(no direct spend)` fallback; only `shared:…:rule:…` counts as shared.
    #[test]
    fn stored_basis_round_trips_and_only_splits_are_shared() {
        let cases = [
            StoredBasis::Tag("team"),
            StoredBasis::Rule("platform:net"),
            StoredBasis::Shared { mode: "proportional", rule: "support" },
            StoredBasis::Shared { mode: crate::reconcile::EVEN_NO_DIRECT_SPEND, rule: "a:rule:b" },
            StoredBasis::Unallocated,
        ];
        for b in cases {
            let text = b.to_string();
            assert_eq!(StoredBasis::parse(&text), b, "{text}");
        }
        assert_eq!(StoredBasis::Shared { mode: "fixed", rule: "tax" }.to_string(), "shared:fixed:rule:tax");
        assert!(StoredBasis::is_shared("shared:even:rule:x"));
        assert!(!StoredBasis::is_shared("rule:shared:x"));
        assert!(!StoredBasis::is_shared("tag:team"));
        assert!(!StoredBasis::is_shared("unallocated"));
        assert_eq!(StoredBasis::parse("shared:oops"), StoredBasis::Other("shared:oops"));
    }

    use super::*;

    fn d(s: &str) -> Decimal {
        s.parse().expect("decimal")
    }

    #[test]
    fn thirds_of_100_sum_back_exactly_and_the_cent_goes_to_the_first_owner() {
        let w = vec![("search".into(), d("1")), ("data".into(), d("1")), ("payments".into(), d("1"))];
        let s = split(d("100.00"), &w).expect("split");
        assert_eq!(
            s,
            vec![("data".into(), d("33.34")), ("payments".into(), d("33.33")), ("search".into(), d("33.33"))]
        );
        let neg = split(d("-100.00"), &w).expect("split");
        assert_eq!(neg.iter().map(|x| x.1).sum::<Decimal>(), d("-100.00"));
        assert_eq!(neg[0].1, d("-33.34"));
    }

    #[test]
    fn proportional_split_keeps_the_amounts_scale_and_largest_remainders_win() {
        let w = vec![("a".into(), d("2")), ("b".into(), d("1"))];
        // 11 units of 10^-6: a gets 7 (drops 1/3), b gets 3 (drops 2/3) + the remainder unit.
        let s = split(d("0.000011"), &w).expect("split");
        assert_eq!(s, vec![("a".into(), d("0.000007")), ("b".into(), d("0.000004"))]);
        let z = split(d("0"), &w).expect("split");
        assert_eq!(z.iter().map(|x| x.1).sum::<Decimal>(), Decimal::ZERO);
        assert!(split(d("1"), &[("a".into(), Decimal::ZERO)]).is_err());
    }

    #[test]
    fn globs() {
        let g = |p: &str| Glob::new(p).expect("glob");
        assert!(g("checkout-*").matches("Checkout-API"));
        assert!(!g("checkout-*").matches("checkou"));
        assert!(g("*").matches(""));
        assert!(g("a?c").matches("abc"));
        assert!(g("i-[0-9a-f]*").matches("i-0abc"));
        assert!(!g("i-[!0-9]*").matches("i-0abc"));
        assert!(g("*-prod-*").matches("db-prod-eu"));
        assert!(g("a\\*").matches("a*") && !g("a\\*").matches("ab"));
        assert!(Glob::new("arn:[abc").expect_err("bad").contains("no closing"));
        assert!(Glob::new("[z-a]").expect_err("bad").contains("reversed"));
    }
}
