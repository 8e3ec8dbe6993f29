//! The `allocation:` config: parsed and validated (every problem reported with its path), owner
//! names canonicalised, tag keys normalised.

use std::collections::BTreeMap;

use costledger_core::ChargeCategory;
use rust_decimal::Decimal;
use serde::Deserialize;
use serde_yaml::Value;

use super::*;
use crate::config_issue::ConfigIssue;

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
    pub(super) fn matches(&self, v: Option<&str>) -> bool {
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
