//! Allocation rules (pure): each matcher, rule order, tag aliases and case, reason codes,
//! validation errors; and a property test of conservation through the real reconciler.

use std::collections::BTreeMap;

use crate::common::{dec, line, load_lines};
use chrono::{DateTime, Utc};
use costledger::allocation::{Allocator, Decision, Reason};
use costledger::config::Config;
use costledger::ledger::FirstSeen;
use costledger::reconcile::reconcile;
use costledger_core::{ChargeCategory, ChargeLine, ExactSum, parse_timestamp};
use proptest::prelude::*;

const RULES: &str = r#"
allocation:
  owners: [payments, search, platform, data]
  owner_tags: [team, cost-center]
  tag_aliases: { cost_center: cost-center, Squad: team }
  rules:
    - name: by-provider
      match: { provider: "gcp*" }
      owner: data
    - name: by-billing-account
      match: { billing_account_id: "B-9*" }
      owner: search
    - name: by-sub-account
      match: { sub_account_id: ["S-PLAT", "S-OPS"] }
      owner: platform
    - name: by-service-and-region
      match: { service: "*search*", region: "eu-*" }
      owner: search
    - name: by-category
      match: { charge_category: [Tax] }
      shared: even
    - name: by-resource
      match: { resource_id: "arn:aws:rds:*:db/pay-[0-9]*" }
      owner: payments
    - name: by-tag
      match: { tags: { app: "checkout-*" } }
      owner: payments
    - name: order-loses
      match: { tags: { app: "checkout-web" } }
      owner: data
"#;

fn cfg() -> Config {
    Config::parse(RULES, &|_| None).expect("valid rules")
}

fn ts(s: &str) -> DateTime<Utc> {
    parse_timestamp(s).expect("ts")
}

fn base() -> ChargeLine {
    let mut l = line("10", "USD");
    l.tags.clear();
    l.resource_id = Some("r-1".into());
    l
}

fn alloc_with(first_seen: Vec<FirstSeen>) -> Allocator {
    Allocator::new(cfg().allocation, first_seen)
}

fn decide(l: &ChargeLine) -> Decision {
    let a = alloc_with(Vec::new());
    let tags = a.tags(l);
    a.decide(l, &tags)
}

fn owner_by(l: &ChargeLine) -> (String, String) {
    let a = alloc_with(Vec::new());
    let tags = a.tags(l);
    match a.decide(l, &tags) {
        Decision::Owner { owner, basis } => (owner, a.basis_text(basis)),
        other => panic!("expected an owner, got {other:?}"),
    }
}

#[test]
fn each_matcher_decides() {
    let mut l = base();
    l.provider_name = Some("GCP".into());
    assert_eq!(owner_by(&l), ("data".into(), "rule:by-provider".into()), "provider glob, case-insensitive");

    let mut l = base();
    l.billing_account_id = "B-900".into();
    assert_eq!(owner_by(&l), ("search".into(), "rule:by-billing-account".into()));

    let mut l = base();
    l.sub_account_id = Some("S-OPS".into());
    assert_eq!(owner_by(&l), ("platform".into(), "rule:by-sub-account".into()), "any of a list");

    let mut l = base();
    l.service_name = Some("Elasticsearch Service".into());
    l.region_id = Some("eu-west-1".into());
    assert_eq!(owner_by(&l), ("search".into(), "rule:by-service-and-region".into()));
    l.region_id = Some("us-east-1".into());
    assert!(matches!(decide(&l), Decision::Unallocated(Reason::NoOwnerTag)), "every matcher of a rule must match");

    let mut l = base();
    l.charge_category = ChargeCategory::Tax;
    let a = alloc_with(Vec::new());
    assert_eq!(decide(&l), Decision::Shared(4));
    assert_eq!(a.shared_text(4), "shared:even:rule:by-category");

    let mut l = base();
    l.resource_id = Some("arn:aws:rds:us-east-1:1:db/pay-7-main".into());
    assert_eq!(owner_by(&l), ("payments".into(), "rule:by-resource".into()));
    l.resource_id = Some("arn:aws:rds:us-east-1:1:db/pay-x".into());
    assert!(matches!(decide(&l), Decision::Unallocated(_)), "character class [0-9]");

    let mut l = base();
    l.tags = BTreeMap::from([("App".into(), "Checkout-Web".into())]);
    assert_eq!(owner_by(&l), ("payments".into(), "rule:by-tag".into()), "first matching rule wins over a later one");
}

#[test]
fn owner_tags_aliases_and_case() {
    for (key, value) in [("team", "payments"), ("Team", "Payments"), ("TEAM", "PAYMENTS"), ("squad", "payments")] {
        let mut l = base();
        l.tags = BTreeMap::from([(key.into(), value.into())]);
        assert_eq!(owner_by(&l), ("payments".into(), "tag:team".into()), "{key}={value}");
    }
    // cost_center is an alias of cost-center, the second owner tag.
    let mut l = base();
    l.tags = BTreeMap::from([("cost_center".into(), "data".into())]);
    assert_eq!(owner_by(&l), ("data".into(), "tag:cost-center".into()));
    // Priority: team before cost-center.
    l.tags.insert("team".into(), "search".into());
    assert_eq!(owner_by(&l).0, "search");
    // An empty value does not count.
    l.tags.insert("team".into(), " ".into());
    assert_eq!(owner_by(&l).0, "data");
}

#[test]
fn every_reason_code() {
    let reason = |l: &ChargeLine, seen: Vec<FirstSeen>| {
        let a = alloc_with(seen);
        let tags = a.tags(l);
        match a.decide(l, &tags) {
            Decision::Unallocated(r) => r,
            other => panic!("expected unallocated, got {other:?}"),
        }
    };
    let mut l = base();
    l.tags = BTreeMap::from([("team".into(), "paymnets".into())]);
    assert_eq!(reason(&l, vec![]), Reason::UnknownOwner);

    assert_eq!(reason(&base(), vec![]), Reason::NoOwnerTag);

    let mut l = base();
    l.resource_id = None;
    assert_eq!(reason(&l, vec![]), Reason::SharedNoRule);

    let mut l = base();
    l.charge_category = ChargeCategory::Purchase;
    l.commitment_discount_id = Some("sp-1".into());
    assert_eq!(reason(&l, vec![]), Reason::CommitmentPurchase);

    for f in [
        |l: &mut ChargeLine| l.charge_category = ChargeCategory::Credit,
        |l: &mut ChargeLine| l.charge_category = ChargeCategory::Adjustment,
        |l: &mut ChargeLine| l.service_name = Some("AWS Support (Business)".into()),
        |l: &mut ChargeLine| {
            l.provider_name = Some("AWS".into());
            l.publisher_name = Some("Datadog, Inc.".into());
        },
    ] {
        let mut l = base();
        f(&mut l);
        assert_eq!(reason(&l, vec![]), Reason::UntaggableCharge, "{l:?}");
    }
    // AWS's own services are not marketplace charges.
    let mut l = base();
    l.provider_name = Some("AWS".into());
    l.publisher_name = Some("Amazon Web Services, Inc.".into());
    assert_eq!(reason(&l, vec![]), Reason::NoOwnerTag);

    // S1 appeared after its billing account's first complete billing period (September):
    // new for 30 days.
    let seen = |acct: &str, at: &str| FirstSeen {
        provider: Some("TestCloud".into()),
        billing_account_id: "A1".into(),
        account: acct.into(),
        at: ts(at),
    };
    let history = vec![seen("A1", "2026-09-01T00:00:00Z"), seen("S1", "2026-10-02T00:00:00Z")];
    assert_eq!(reason(&base(), history.clone()), Reason::NewAccount, "charge on 10-05, 3 days after");
    let mut late = base();
    late.charge_period_start = ts("2026-11-05T00:00:00Z");
    assert_eq!(reason(&late, history), Reason::NoOwnerTag, "34 days later it is no longer new");
    // Present from the start: not new.
    assert_eq!(reason(&base(), vec![seen("S1", "2026-09-01T00:00:00Z")]), Reason::NoOwnerTag);
}

/// A first import: every sub account appears hours after its billing account's first line.
/// None of them is new (99% of a first month's unallocated spend was labelled `new_account`):
/// only a sub account first seen after the billing account's first *complete* billing period is.
#[test]
fn sub_accounts_of_a_first_import_are_not_new_accounts() {
    let seen = |acct: &str, at: &str| FirstSeen {
        provider: Some("TestCloud".into()),
        billing_account_id: "A1".into(),
        account: acct.into(),
        at: ts(at),
    };
    let mut l = line("10", "USD");
    l.tags.clear();
    l.provider_name = Some("TestCloud".into());
    l.resource_id = Some("r-1".into());
    l.charge_period_start = ts("2026-10-03T00:00:00Z");
    let reason = |seen: Vec<FirstSeen>| match alloc_with(seen).decide(&l, &[]) {
        Decision::Unallocated(r) => r,
        other => panic!("{other:?}"),
    };
    // The first month is complete (data from the 1st): S1 seen five hours in is not new.
    assert_eq!(
        reason(vec![seen("A1", "2026-10-01T00:00:00Z"), seen("S1", "2026-10-01T05:00:00Z")]),
        Reason::NoOwnerTag
    );
    // The data begins mid-September: September is partial, October is the first complete
    // period, so S1 first seen on October 2 is not new either.
    assert_eq!(
        reason(vec![seen("A1", "2026-09-15T00:00:00Z"), seen("S1", "2026-10-02T00:00:00Z")]),
        Reason::NoOwnerTag
    );
    // First seen after that complete period: new.
    let mut nov = l.clone();
    nov.charge_period_start = ts("2026-11-03T00:00:00Z");
    let d = alloc_with(vec![seen("A1", "2026-09-15T00:00:00Z"), seen("S1", "2026-11-02T00:00:00Z")]).decide(&nov, &[]);
    assert!(matches!(d, Decision::Unallocated(Reason::NewAccount)), "{d:?}");
}

#[test]
fn validation_reports_every_problem_with_its_path() {
    let bad = r#"
allocation:
  owners: [payments, search, payments]
  rules:
    - match: { tags: { app: "checkout-[" } }
      owner: payments
    - match: { service: "x" }
      owner: marketing
    - match: { charge_category: [Tax, Support] }
      shared: proportional
    - match: { service: "y" }
      shared: { payments: 60, search: 30 }
    - match: { service: "z" }
      owner: payments
      shared: even
    - match: { service: "w" }
    - match: { servce: "v" }
      owner: search
    - match: { region: "eu-[z-a]" }
      shared: sometimes
"#;
    let e = Config::parse(bad, &|_| None).expect_err("invalid");
    let text: Vec<String> = e.iter().map(|i| i.to_string()).collect();
    let has = |needle: &str| assert!(text.iter().any(|t| t.contains(needle)), "missing '{needle}' in {text:#?}");
    has("allocation.owners[2]: 'payments' is listed twice");
    has("allocation.rules[0].match.tags.app: bad pattern 'checkout-[': '[' has no closing ']'");
    has("allocation.rules[1].owner: unknown owner 'marketing' (allocation.owners: payments, search)");
    has(
        "allocation.rules[2].match.charge_category: ChargeCategory 'Support' is not one of Usage, Purchase, Tax, Credit, Adjustment",
    );
    has("allocation.rules[3].shared: percentages sum to 90, not 100");
    has("allocation.rules[4]: give either owner or shared, not both");
    has("allocation.rules[5]: needs an owner");
    has("allocation.rules[6]: unknown field `servce`");
    has("allocation.rules[7].match.region: bad pattern 'eu-[z-a]': range z-a is reversed");
    has("allocation.rules[7].shared: must be proportional, even, or a map of owner: percentage");
    assert_eq!(text.len(), 10, "{text:#?}");
}

// --- Property: conservation for random charges and rules -------------------------------------

fn amount() -> impl Strategy<Value = String> {
    (-5_000_000i64..50_000_000, 0u32..12).prop_map(|(m, s)| rust_decimal::Decimal::new(m, s).to_string())
}

#[derive(Debug, Clone)]
struct Charge {
    amount: String,
    currency: &'static str,
    account: &'static str,
    category: ChargeCategory,
    team: Option<&'static str>,
    resource: bool,
    day: u32,
}

fn charge() -> impl Strategy<Value = Charge> {
    (
        amount(),
        prop::sample::select(vec!["USD", "EUR"]),
        prop::sample::select(vec!["S1", "S2", "S3"]),
        prop::sample::select(vec![
            ChargeCategory::Usage,
            ChargeCategory::Usage,
            ChargeCategory::Tax,
            ChargeCategory::Credit,
            ChargeCategory::Purchase,
        ]),
        prop::option::of(prop::sample::select(vec!["payments", "search", "data", "Payments", "nobody"])),
        any::<bool>(),
        1u32..29,
    )
        .prop_map(|(amount, currency, account, category, team, resource, day)| Charge {
            amount,
            currency,
            account,
            category,
            team,
            resource,
            day,
        })
}

fn rules() -> impl Strategy<Value = String> {
    let pool = vec![
        "    - match: { charge_category: Tax }\n      shared: proportional\n",
        "    - match: { charge_category: [Tax, Credit] }\n      shared: even\n",
        "    - match: { sub_account_id: S2 }\n      owner: search\n",
        "    - match: { charge_category: Purchase }\n      shared: { payments: 33.33, search: 33.33, data: 33.34 }\n",
        "    - match: { sub_account_id: \"S[13]\", charge_category: Credit }\n      shared: proportional\n",
    ];
    prop::sample::subsequence(pool, 0..=5).prop_map(|rs| {
        let mut s = String::from("allocation:\n  owners: [payments, search, data]\n  rules:\n");
        if rs.is_empty() {
            s = String::from("allocation:\n  owners: [payments, search, data]\n");
        }
        for r in rs {
            s.push_str(r);
        }
        s
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn allocated_plus_unallocated_is_the_bill_exactly(charges in prop::collection::vec(charge(), 1..40), rules in rules()) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
        rt.block_on(async move {
            let s = costledger::ledger::open("sqlite::memory:").await.expect("open");
            s.migrate().await.expect("migrate");
            let src = s.ensure_source("p", "test").await.expect("source");
            let mut want: BTreeMap<String, ExactSum> = BTreeMap::new();
            let lines: Vec<ChargeLine> = charges
                .iter()
                .map(|c| {
                    let mut l = line(&c.amount, c.currency);
                    l.billed_cost = dec(&c.amount);
                    l.charge_category = c.category;
                    l.sub_account_id = Some(c.account.into());
                    l.tags = c.team.map(|t| BTreeMap::from([("team".to_string(), t.to_string())])).unwrap_or_default();
                    l.resource_id = c.resource.then(|| "r".to_string());
                    l.charge_period_start = ts(&format!("2026-10-{:02}T00:00:00Z", c.day));
                    l.charge_period_end = ts(&format!("2026-10-{:02}T00:00:00Z", c.day + 1));
                    want.entry(c.currency.to_string()).or_default().add(l.billed_cost).expect("add");
                    l
                })
                .collect();
            load_lines(s.as_ref(), src, "x", "k", &lines).await;
            let cfg = Config::parse(&rules, &|_| None).expect("rules");
            // reconcile fails with ReconcileError::Conservation if any account breaks it.
            let sum = reconcile(s.as_ref(), &cfg, None, false).await.expect("conservation holds");
            let rows = s.allocations(None).await.expect("rows");
            let mut got: BTreeMap<String, ExactSum> = BTreeMap::new();
            for r in &rows {
                got.entry(r.currency.clone()).or_default().merge(&r.amount).expect("merge");
                assert!(r.owner.is_some() || r.reason.is_some(), "unallocated without a reason: {r:?}");
            }
            assert_eq!(got, want);
            assert_eq!(sum.periods[0].billed.0, want);
        });
    }
}
