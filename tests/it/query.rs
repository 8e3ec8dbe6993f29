//! `costledger query` end to end on real SQLite (and PostgreSQL when
//! COSTLEDGER_TEST_POSTGRES_URL is set): exact sums checked against hand-computed values of
//! `tests/fixtures/query/charges.csv`, tag aliases, grains, FX conversion, top N + others,
//! and the errors bad input gets.

use crate::common::*;

fn setup(db: &str) -> String {
    let cfg = fixture("query/config.yaml").display().to_string();
    let charges = fixture("query/charges.csv").display().to_string();
    let (code, _, err) = run(db, &["--config", &cfg, "import", "--format", "focus", "--source", "bill", &charges]);
    assert_eq!(code, 0, "import: {err}");
    let fx = fixture("query/fx.csv").display().to_string();
    let (code, _, err) = run(db, &["fx", "import", &fx]);
    assert_eq!(code, 0, "fx import: {err}");
    cfg
}

fn query(db: &str, cfg: &str, args: &[&str]) -> String {
    let mut all = vec!["--config", cfg, "query"];
    all.extend_from_slice(args);
    let (code, out, err) = run(db, &all);
    assert_eq!(code, 0, "query {args:?}: {err}");
    out
}

fn query_err(db: &str, cfg: &str, args: &[&str]) -> String {
    let mut all = vec!["--config", cfg, "query"];
    all.extend_from_slice(args);
    let (code, out, err) = run(db, &all);
    assert_eq!(code, 2, "query {args:?} should fail with exit 2: {out}");
    err
}

/// Every query behaviour on one backend.
fn check_backend(db: &str) {
    let cfg = setup(db);

    // Service by billing month, exact to the last digit, CSV with FOCUS metric names.
    assert_eq!(
        query(db, &cfg, &["--group-by", "service", "--grain", "billing_period", "--format", "csv"]),
        "service,billing_period,currency,BilledCost\r\n\
         Virtual Machines,2026-10,EUR,100\r\n\
         Amazon EC2,2026-10,USD,10.0050001\r\n\
         Amazon S3,2026-10,USD,-0.75\r\n\
         Amazon EC2,2026-11,USD,7.123456789\r\n"
    );

    // Tags after aliases and case folding (Team, Squad and TEAM are all `team`); a line
    // without the tag is its own (none) group.
    assert_eq!(
        query(db, &cfg, &["--group-by", "tag:Team", "--where", "provider=aws", "--format", "csv"]),
        "tag:team,currency,BilledCost\r\n\
         payments,USD,17.128456889\r\n\
         search,USD,1.5\r\n\
         ,USD,-2.25\r\n"
    );
    assert_eq!(
        query(db, &cfg, &["--where", "tag:team=(none)", "--format", "csv", "--metric", "BilledCost,lines"]),
        "currency,BilledCost,lines\r\nUSD,-2.25,1\r\n"
    );

    // Owner and allocation, as the finance CSV's x_owner / x_allocation_reason say (the
    // allocator's decision per line; no reconcile needed); unallocated lines have no owner.
    assert_eq!(
        query(db, &cfg, &["--group-by", "owner,allocation", "--format", "csv"]),
        "owner,allocation,currency,BilledCost\r\n\
         data,tag:team,EUR,100\r\n\
         payments,tag:team,USD,17.128456889\r\n\
         search,tag:team,USD,1.5\r\n\
         ,untaggable_charge,USD,-2.25\r\n"
    );
    assert_eq!(
        query(
            db,
            &cfg,
            &["--where", "owner=(none)", "--group-by", "allocation", "--metric", "BilledCost,lines", "--format", "csv"]
        ),
        "allocation,currency,BilledCost,lines\r\nuntaggable_charge,USD,-2.25,1\r\n"
    );

    // Day grain and a range: --to is inclusive of the day it names.
    assert_eq!(
        query(db, &cfg, &["--grain", "day", "--from", "2026-10-02", "--to", "2026-10-09", "--format", "csv"]),
        "day,currency,BilledCost\r\n2026-10-02,USD,10.0050001\r\n2026-10-09,USD,-0.75\r\n"
    );

    // Several metrics; a metric no line of a group has is empty, not zero.
    assert_eq!(
        query(
            db,
            &cfg,
            &[
                "--group-by",
                "region",
                "--metric",
                "EffectiveCost,PricingQuantity",
                "--where",
                "service=amazon ec2",
                "--format",
                "csv"
            ]
        ),
        "region,currency,EffectiveCost,PricingQuantity\r\nus-east-1,USD,16.5,26\r\n"
    );

    // Converted to USD: each billing period at its month's rate (100 EUR × 1.08).
    let json = query(db, &cfg, &["--group-by", "provider", "--currency", "usd", "--format", "json"]);
    let v: serde_json::Value = serde_json::from_str(&json).expect("json");
    assert_eq!(v["converted_to"], "USD");
    assert_eq!(v["totals"][0]["currency"], "USD");
    assert_eq!(v["totals"][0]["values"][0], "124.378456889", "amounts are exact strings: {json}");
    assert_eq!(v["rows"][0]["keys"][0], "Microsoft");
    assert_eq!(v["rows"][0]["values"][0], "108");
    let rate = v["rates_used"][0].as_str().unwrap_or_default();
    assert!(rate.starts_with("2026-10 1 EUR = 1.08 USD (") && rate.ends_with("fx.csv:2)"), "{json}");
    let err = query_err(db, &cfg, &["--currency", "GBP"]);
    assert!(err.contains("no exchange rate from EUR to GBP for 2026-10"), "{err}");

    // Top 1 + others adds back to the total exactly.
    let csv = query(db, &cfg, &["--group-by", "resource", "--top", "1", "--where", "provider=AWS", "--format", "csv"]);
    assert_eq!(csv, "resource,currency,BilledCost\r\ni-1,USD,17.128456789\r\n(others),USD,-0.7499999\r\n");

    // Bad input: what is wrong, and what is allowed; exit 2.
    for (args, want) in [
        (&["--group-by", "colour"][..], "unknown dimension 'colour': use one of provider, billing_account"),
        (&["--metric", "Cost"][..], "unknown metric 'Cost': use one of BilledCost, EffectiveCost"),
        (&["--from", "2026-13"][..], "bad date '2026-13' for --from"),
        (&["--from", "2026-11", "--to", "2026-10"][..], "--from 2026-11 is after --to 2026-10"),
        (&["--currency", "dollars"][..], "bad currency 'DOLLARS'"),
        (&["--where", "service"][..], "bad filter 'service'"),
        (&["--grain", "hour"][..], "unknown grain 'hour'"),
    ] {
        let err = query_err(db, &cfg, args);
        assert!(err.contains(want), "{args:?}: {err}");
    }
}

#[test]
fn query_answers_exactly_on_sqlite() {
    let dir = tempfile::tempdir().expect("tempdir");
    check_backend(&sqlite_url(dir.path()));
}

#[tokio::test]
async fn query_answers_exactly_on_postgres() {
    let Some(url) = pg_schema_url().await else { return };
    tokio::task::spawn_blocking(move || check_backend(&url)).await.expect("join");
}

// --- Rollups answer exactly what the charges answer ------------------------------------------

use std::collections::BTreeMap;

use chrono::Duration;
use costledger::app::query::{ReadPath, build_missing_rollups, query_via};
use costledger::config::Config;
use costledger::ledger::{FxRate, LedgerStore, Rollup, RollupKind, RollupRow};
use costledger::query::QueryText;
use costledger::query::aggregate::{AnsweredFrom, QueryResult};
use costledger::query::rollup::{RollupBuilder, RollupSpec};
use costledger_core::{ChargeCategory, ChargeClass, ChargeLine, ExactSum};
use futures::StreamExt;
use proptest::prelude::*;
use rust_decimal::Decimal;

/// Tag aliases, an extra rollup tag and a time zone east of UTC (days differ from UTC days).
fn rollup_config() -> Config {
    let mut c = Config { timezone: chrono_tz::Europe::Berlin, rollup_tags: vec!["Env".into()], ..Config::default() };
    c.allocation.tag_aliases = BTreeMap::from([("squad".to_string(), "team".to_string())]);
    c
}

prop_compose! {
    fn arb_line()(
        provider in 0..3usize, account in 0..2usize, service in 0..3usize, region in 0..3usize,
        hour in 0..(24 * 70i64), mantissa in -5_000_000_000i64..5_000_000_000, scale in 0..9u32,
        effective in proptest::option::of(-1_000_000i64..1_000_000), quantity in proptest::option::of(0..100_000i64),
        team in 0..6usize, env in 0..3usize, eur in any::<bool>(), class in any::<bool>(), resource in 0..4usize,
        commitment in 0..4usize,
    ) -> ChargeLine {
        let mut l = line("1", if eur { "EUR" } else { "USD" });
        let amount = rust_decimal::Decimal::new(mantissa, scale);
        l.billed_cost = amount;
        l.charge_category = if amount.is_sign_negative() { ChargeCategory::Credit } else { ChargeCategory::Usage };
        l.charge_class = class.then_some(ChargeClass::Correction);
        l.effective_cost = effective.map(|e| rust_decimal::Decimal::new(e, 4));
        l.pricing_quantity = quantity.map(|q| rust_decimal::Decimal::new(q, 2));
        l.pricing_unit = quantity.map(|_| ["Hours", "GB-Mo"][resource % 2].to_string());
        l.provider_name = [Some("AWS"), Some("Microsoft"), None][provider].map(str::to_string);
        l.billing_account_id = ["B-1", "B-2"][account].to_string();
        l.sub_account_id = [Some("S-1"), None, Some("S-2")][region].map(str::to_string);
        l.service_name = [Some("Amazon EC2"), Some("Storage"), None][service].map(str::to_string);
        l.service_category = Some(["Compute", "Storage", "Other"][service].to_string());
        l.region_id = [Some("eu-west-1"), Some("us-east-1"), None][region].map(str::to_string);
        l.sku_id = Some(format!("SKU-{}", (service + region) % 4));
        l.resource_id = [Some("r-1"), Some("r-2"), Some("r-3"), None][resource].map(str::to_string);
        // Late-evening UTC hours fall on the next day in Berlin; the days cross a month.
        l.charge_period_start = line("1", "USD").billing_period_start + Duration::hours(hour);
        l.charge_period_end = l.charge_period_start + Duration::hours(1);
        let p = costledger_core::BillingPeriod::of(l.charge_period_start);
        l.billing_period_start = p.start();
        l.billing_period_end = p.end();
        l.tags = BTreeMap::new();
        match team {
            0 => {}
            1 => { l.tags.insert("team".into(), "payments".into()); }
            2 => { l.tags.insert("Team".into(), "search".into()); }
            3 => { l.tags.insert("Squad".into(), "payments".into()); }
            4 => { l.tags.insert("squad".into(), "data".into()); l.tags.insert("TEAM".into(), "search".into()); }
            _ => { l.tags.insert("team".into(), String::new()); }
        }
        if env > 0 {
            l.tags.insert(["", "env", "ENV"][env].into(), ["", "prod", "dev"][env].into());
        }
        l.tags.insert("Name".into(), format!("host-{hour}"));
        // Commitment and pricing columns (FOCUS): a savings plan, a reservation's unused share,
        // on demand, or nothing.
        let mut f = costledger_core::FocusColumns::default();
        let set = |f: &mut costledger_core::FocusColumns, c: &str, v: &str| {
            *f.text_mut(c).expect("a FOCUS text column") = Some(v.to_string());
        };
        match commitment {
            1 => {
                l.commitment_discount_id = Some("sp-1".into());
                set(&mut f, "CommitmentDiscountStatus", "Used");
                set(&mut f, "CommitmentDiscountCategory", "Spend");
                set(&mut f, "CommitmentDiscountType", "Compute Savings Plan");
                set(&mut f, "PricingCategory", "Committed");
            }
            2 => {
                l.commitment_discount_id = Some("ri-1".into());
                set(&mut f, "CommitmentDiscountStatus", "Unused");
                set(&mut f, "CommitmentDiscountCategory", "Usage");
                set(&mut f, "CommitmentDiscountType", "Reserved Instance");
            }
            3 => set(&mut f, "PricingCategory", "Standard"),
            _ => {}
        }
        l.focus = f.boxed();
        l
    }
}

/// Stage and commit `lines` as one load of `scope`, with the rollup the loader would build.
async fn load_with_rollup(s: &dyn LedgerStore, specs: &[RollupSpec], scope: &str, key: &str, lines: &[ChargeLine]) {
    let source = s.ensure_source("bill", "focus").await.expect("source");
    let id = s.begin_load(&new_load(source, scope, key, "test:1:1")).await.expect("begin");
    s.stage_lines(id, 0, lines.to_vec(), None).await.expect("stage");
    let mut sm = summary_of(lines);
    for spec in specs {
        // Chunks of 3 rows, appended while staging as the loader does past its cap: a key may
        // be in several chunks, and answers must not change.
        let mut b = RollupBuilder::new(spec).with_cap(3).with_min_compression(0);
        for l in lines {
            b.add(l).expect("add");
            if b.is_full() {
                s.append_rollup(id, &b.take_rows()).await.expect("append");
            }
        }
        sm.rollups.extend(b.finish());
    }
    s.commit_load(id, &sm).await.expect("commit");
}

fn questions() -> Vec<QueryText> {
    let q = |group_by: &str, grain: &str| QueryText {
        metrics: vec!["BilledCost,EffectiveCost,ListCost,PricingQuantity,lines".into()],
        group_by: vec![group_by.into()],
        grain: Some(grain.into()),
        ..Default::default()
    };
    let mut out = Vec::new();
    for (g, grain) in [
        ("provider", "none"),
        ("billing_account,service", "day"),
        ("region,tag:team", "week"),
        ("tag:env,charge_category,charge_class", "month"),
        ("sub_account,pricing_unit", "billing_period"),
        ("service_category,source", "day"),
    ] {
        out.push(q(g, grain));
    }
    out.push(QueryText { filters: vec!["tag:squad=(none)".into()], ..q("service", "month") });
    out.push(QueryText { filters: vec!["provider!=aws".into(), "tag:env=p*".into()], ..q("tag:team", "day") });
    out.push(QueryText { top: Some(2), ..q("billing_account,tag:team", "week") });
    out.push(QueryText { from: Some("2026-10-20".into()), to: Some("2026-11".into()), ..q("region", "day") });
    out.push(QueryText { from: Some("2026-11".into()), range_by_billing_period: true, ..q("provider", "month") });
    out.push(QueryText { currency: Some("USD".into()), ..q("service", "billing_period") });
    out
}

/// Questions the pricing rollups answer (SKUs, commitments, pricing categories: what explain
/// and the commitment reports ask), and the charges otherwise.
fn pricing_questions() -> Vec<QueryText> {
    let q = |group_by: &str, grain: &str| QueryText {
        metrics: vec!["BilledCost,EffectiveCost,ListCost,PricingQuantity,lines".into()],
        group_by: vec![group_by.into()],
        grain: Some(grain.into()),
        ..Default::default()
    };
    vec![
        q("commitment,commitment_type,commitment_category,commitment_status", "month"),
        QueryText {
            filters: vec!["commitment!=(none)".into(), "charge_category=Usage,Purchase".into()],
            ..q("commitment,commitment_status", "day")
        },
        q("service,pricing_category", "none"),
        q("sku", "week"),
        // What `explain` asks for each of its two periods.
        QueryText {
            from: Some("2026-10-20".into()),
            to: Some("2026-11-03".into()),
            ..q("service,sku,pricing_unit,charge_category", "billing_period")
        },
        // What commitment coverage asks.
        QueryText { filters: vec!["charge_category=Usage".into()], ..q("service,commitment_status,provider", "week") },
        QueryText { currency: Some("USD".into()), ..q("sku,charge_class,service_category", "month") },
    ]
}

/// Questions no rollup answers (the resource; the region with a pricing category): the
/// database's grouped read must equal the line-by-line scan.
fn charge_questions() -> Vec<QueryText> {
    let q = |group_by: &str, grain: &str| QueryText {
        metrics: vec!["BilledCost,EffectiveCost,lines".into()],
        group_by: vec![group_by.into()],
        grain: Some(grain.into()),
        ..Default::default()
    };
    vec![
        QueryText { filters: vec!["pricing_category=(none)".into()], ..q("region", "billing_period") },
        q("resource,sku", "week"),
    ]
}

async fn charge_answers(s: &dyn LedgerStore, cfg: &Config, path: ReadPath) -> Vec<QueryResult> {
    let mut out = Vec::new();
    for t in charge_questions() {
        let q = costledger::app::query::parse(cfg, &t).expect("query parses");
        let r = query_via(s, cfg, &q, path).await.unwrap_or_else(|e| panic!("{t:?}: {e}"));
        assert_eq!(r.answered_from, AnsweredFrom::Charges);
        out.push(r);
    }
    out
}

async fn answers_to(
    s: &dyn LedgerStore,
    cfg: &Config,
    path: ReadPath,
    questions: Vec<QueryText>,
    from_rollups: bool,
) -> Vec<QueryResult> {
    let mut out = Vec::new();
    for t in questions {
        let q = costledger::app::query::parse(cfg, &t).expect("query parses");
        let mut r = query_via(s, cfg, &q, path).await.unwrap_or_else(|e| panic!("{t:?}: {e}"));
        let want = if from_rollups { AnsweredFrom::Rollups } else { AnsweredFrom::Charges };
        assert_eq!(r.answered_from, want, "{t:?} by {path:?}");
        r.answered_from = AnsweredFrom::Charges;
        out.push(r);
    }
    out
}

async fn answers(s: &dyn LedgerStore, cfg: &Config, path: ReadPath) -> Vec<QueryResult> {
    let rollups = matches!(path, ReadPath::Rollups(_) | ReadPath::GroupedRollups(_));
    answers_to(s, cfg, path, questions(), rollups).await
}

async fn pricing_answers(s: &dyn LedgerStore, cfg: &Config, path: ReadPath, from_rollups: bool) -> Vec<QueryResult> {
    answers_to(s, cfg, path, pricing_questions(), from_rollups).await
}

/// Every way of answering gives the charges' answers, for the daily rollup's questions, the
/// pricing rollup's and those no rollup holds.
async fn every_path(s: &dyn LedgerStore, cfg: &Config) {
    let scanned = answers(s, cfg, ReadPath::Charges).await;
    assert_eq!(answers(s, cfg, ReadPath::Rollups(RollupKind::Daily)).await, scanned);
    // The database's grouped sums (of charges, of rollup rows) give the same answers as the
    // line-by-line scan.
    assert_eq!(answers(s, cfg, ReadPath::Grouped).await, scanned);
    assert_eq!(answers(s, cfg, ReadPath::GroupedRollups(RollupKind::Daily)).await, scanned);
    // SKU, commitment and pricing questions, from the pricing rollups (row by row, grouped by
    // the database, and as `query` picks them).
    let scanned = pricing_answers(s, cfg, ReadPath::Charges, false).await;
    assert_eq!(pricing_answers(s, cfg, ReadPath::Grouped, false).await, scanned);
    assert_eq!(pricing_answers(s, cfg, ReadPath::Rollups(RollupKind::Pricing), true).await, scanned);
    assert_eq!(pricing_answers(s, cfg, ReadPath::GroupedRollups(RollupKind::Pricing), true).await, scanned);
    assert_eq!(pricing_answers(s, cfg, ReadPath::Auto, true).await, scanned);
    let scanned = charge_answers(s, cfg, ReadPath::Charges).await;
    assert_eq!(charge_answers(s, cfg, ReadPath::Grouped).await, scanned);
    assert_eq!(charge_answers(s, cfg, ReadPath::Auto).await, scanned);
}

/// Every question answered from the rollups (and from the database's grouped sums) equals the
/// charges' answer, to the digit, after
/// two loads, a superseding load, and a load whose rollup was built afterwards.
async fn rollup_equals_scan(s: &dyn LedgerStore, lines: Vec<ChargeLine>) {
    let cfg = rollup_config();
    let specs = RollupSpec::all(&cfg);
    let rates: Vec<FxRate> = ["2026-10", "2026-11", "2026-12"]
        .iter()
        .map(|m| FxRate {
            month: m.to_string(),
            from: "EUR".into(),
            to: "USD".into(),
            rate: dec("1.0837"),
            provenance: "test".into(),
        })
        .collect();
    s.upsert_fx_rates(&rates).await.expect("fx");
    let (a, b) = lines.split_at(lines.len() / 2);
    load_with_rollup(s, &specs, "a", "a1", a).await;
    load_with_rollup(s, &specs, "b", "b1", b).await;
    // Superseded: scope a now holds its lines twice over; the old rollup must go with it.
    let twice: Vec<ChargeLine> = a.iter().chain(a).cloned().collect();
    load_with_rollup(s, &specs, "a", "a2", &twice).await;
    every_path(s, &cfg).await;
    // A load without rollups (an older ledger): no rollup answers until they are built.
    load_with_rollup(s, &[], "c", "c1", b).await;
    let q = costledger::app::query::parse(&cfg, &QueryText::default()).expect("q");
    let sku = costledger::app::query::parse(&cfg, &QueryText { group_by: vec!["sku".into()], ..Default::default() })
        .expect("q");
    assert_eq!(costledger::app::query::rollups_answer(s, &cfg, &q).await.expect("check"), None);
    assert_eq!(costledger::app::query::rollups_answer(s, &cfg, &sku).await.expect("check"), None);
    let built = build_missing_rollups(s, &cfg).await.expect("build");
    assert_eq!(built.built.len(), 2, "both kinds of the one load: {built:?}");
    assert_eq!(costledger::app::query::rollups_answer(s, &cfg, &q).await.expect("check"), Some(RollupKind::Daily));
    assert_eq!(costledger::app::query::rollups_answer(s, &cfg, &sku).await.expect("check"), Some(RollupKind::Pricing));
    every_path(s, &cfg).await;
    // Another time zone is another spec: nothing is answered from the old rollups.
    let other = Config { timezone: chrono_tz::UTC, ..rollup_config() };
    assert_eq!(costledger::app::query::rollups_answer(s, &other, &q).await.expect("check"), None);
    assert_eq!(costledger::app::query::rollups_answer(s, &other, &sku).await.expect("check"), None);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 10, ..ProptestConfig::default() })]

    #[test]
    fn rollup_answers_equal_charge_answers_on_sqlite(lines in prop::collection::vec(arb_line(), 2..120)) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
        rt.block_on(async move {
            let (s, _dir) = sqlite_store().await;
            rollup_equals_scan(s.as_ref(), lines).await;
        });
    }

    #[test]
    fn rollup_answers_equal_charge_answers_on_postgres(lines in prop::collection::vec(arb_line(), 2..120)) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
        rt.block_on(async move {
            let Some(s) = pg_store().await else { return };
            rollup_equals_scan(s.as_ref(), lines).await;
        });
    }
}

/// Rollup rows go to SQLite in 100-row INSERTs and a shorter last one, not kept prepared, and to
/// PostgreSQL by binary COPY: a load's rows of any count around those sizes, appended while
/// staging and written at commit, are each counted once.
async fn rollup_rows_of_any_count_are_written_once(s: &dyn LedgerStore) {
    let cfg = rollup_config();
    let spec = RollupSpec::from_config(&cfg);
    let source = s.ensure_source("bill", "focus").await.expect("source");
    let mut loaded = 0;
    for (i, n) in [1usize, 99, 100, 101, 999, 1_000, 1_001, 2_345].into_iter().enumerate() {
        // One rollup row per line: each line its own sub account.
        let lines: Vec<ChargeLine> = (0..n)
            .map(|j| {
                let mut l = line(&format!("0.{:04}", j % 10_000 + 1), "USD");
                l.sub_account_id = Some(format!("S{i}-{j}"));
                l
            })
            .collect();
        let id = s.begin_load(&new_load(source, &format!("s{i}"), "k", "test:1:1")).await.expect("begin");
        s.stage_lines(id, 0, lines.clone(), None).await.expect("stage");
        let (staged, last) = lines.split_at(n / 3);
        let mut b = RollupBuilder::new(&spec).with_min_compression(0);
        for l in staged {
            b.add(l).expect("add");
        }
        s.append_rollup(id, &b.take_rows()).await.expect("append");
        for l in last {
            b.add(l).expect("add");
        }
        let mut sm = summary_of(&lines);
        sm.rollups.extend(b.finish());
        s.commit_load(id, &sm).await.expect("commit");
        loaded += n as u64;
        let q = costledger::app::query::parse(
            &cfg,
            &QueryText {
                metrics: vec!["BilledCost,lines".into()],
                group_by: vec!["sub_account".into()],
                ..Default::default()
            },
        )
        .expect("query");
        let want = query_via(s, &cfg, &q, ReadPath::Charges).await.expect("charges");
        assert_eq!(want.lines, loaded);
        for path in [ReadPath::Rollups(RollupKind::Daily), ReadPath::GroupedRollups(RollupKind::Daily)] {
            let mut got = query_via(s, &cfg, &q, path).await.expect("rollups");
            assert_eq!(got.answered_from, AnsweredFrom::Rollups, "{n} rows by {path:?}");
            got.answered_from = AnsweredFrom::Charges;
            assert_eq!(got, want, "{n} rows by {path:?}");
        }
    }
}

/// Every column of a rollup row reads back as it was written, through both writes (appended
/// while staging, and with the commit), on each backend: PostgreSQL's binary COPY names the
/// columns in one order and encodes them in another place. Sums past 2^128 units (the slow path
/// of their text) included.
async fn rollup_rows_read_back_column_for_column(s: &dyn LedgerStore) {
    let source = s.ensure_source("bill", "focus").await.expect("source");
    let id = s.begin_load(&new_load(source, "r", "k", "test:1:1")).await.expect("begin");
    let l = line("1", "USD");
    s.stage_lines(id, 0, vec![l.clone()], None).await.expect("stage");
    let sum = |d: &[&str]| {
        let mut e = ExactSum::ZERO;
        for v in d {
            e.add(v.parse::<Decimal>().expect("decimal")).expect("sum");
        }
        e
    };
    let row = |n: u8, kind: RollupKind| RollupRow {
        kind,
        day: format!("2026-10-0{n}"),
        billing_period: "2026-10".into(),
        provider_name: Some(format!("provider {n}")),
        billing_account_id: format!("account {n}"),
        sub_account_id: Some(format!("sub {n}")),
        service_name: Some(format!("service {n}")),
        service_category: Some(format!("category {n}")),
        region_id: Some(format!("region {n}")),
        charge_category: "Usage".into(),
        charge_class: Some("Correction".into()),
        pricing_unit: Some(format!("unit {n}")),
        billing_currency: "USD".into(),
        tags: Some(format!(r#"{{"team":"t{n}"}}"#)),
        sku_id: Some(format!("sku {n}")),
        pricing_category: Some(format!("pricing {n}")),
        commitment_discount_id: Some(format!("commitment {n}")),
        commitment_discount_type: Some(format!("type {n}")),
        commitment_discount_category: Some(format!("commitment category {n}")),
        commitment_discount_status: Some(format!("status {n}")),
        lines: 7 + u64::from(n),
        billed_cost: sum(&["-12.5", "0.0000000000000000000000000001"]),
        effective_cost: Some(sum(&["79228162514264337593543950335", "79228162514264337593543950335"])),
        list_cost: Some(sum(&["3"])),
        contracted_cost: None,
        pricing_quantity: Some(sum(&["0.25"])),
        consumed_quantity: Some(sum(&["-0"])),
    };
    let (daily, pricing) = (RollupKind::Daily, RollupKind::Pricing);
    let appended = row(1, daily);
    s.append_rollup(id, std::slice::from_ref(&appended)).await.expect("append");
    let mut sm = summary_of(&[l]);
    let committed = row(2, pricing);
    sm.rollups.push(Rollup { kind: pricing, spec: "test".into(), rows: vec![committed.clone()] });
    s.commit_load(id, &sm).await.expect("commit");
    for (kind, want) in [(daily, appended), (pricing, committed)] {
        let got: Vec<_> = s.rollups(kind, None, None).map(|r| r.expect("row").row).collect().await;
        assert_eq!(got, vec![want], "{kind:?}");
    }
}

#[tokio::test]
async fn rollup_rows_read_back_column_for_column_on_sqlite() {
    let (s, _dir) = sqlite_store().await;
    rollup_rows_read_back_column_for_column(s.as_ref()).await;
}

#[tokio::test]
async fn rollup_rows_read_back_column_for_column_on_postgres() {
    let Some(s) = pg_store().await else { return };
    rollup_rows_read_back_column_for_column(s.as_ref()).await;
}

#[tokio::test]
async fn rollup_rows_of_any_count_are_written_once_on_sqlite() {
    let (s, _dir) = sqlite_store().await;
    rollup_rows_of_any_count_are_written_once(s.as_ref()).await;
}

#[tokio::test]
async fn rollup_rows_of_any_count_are_written_once_on_postgres() {
    let Some(s) = pg_store().await else { return };
    rollup_rows_of_any_count_are_written_once(s.as_ref()).await;
}

/// A load that crashed mid-staging has no rollup rows, and queries never see its lines.
#[tokio::test]
async fn a_load_that_never_committed_leaves_no_rollup() {
    let (s, _dir) = sqlite_store().await;
    let cfg = rollup_config();
    load_with_rollup(s.as_ref(), &RollupSpec::all(&cfg), "a", "a1", &[line("10.5", "USD")]).await;
    let source = s.ensure_source("bill", "focus").await.expect("source");
    let id = s.begin_load(&new_load(source, "b", "b1", "test:1:1")).await.expect("begin");
    s.stage_lines(id, 0, vec![line("99", "USD")], None).await.expect("stage");
    // (the process dies here: the load stays staging)
    for path in [ReadPath::Rollups(RollupKind::Daily), ReadPath::Rollups(RollupKind::Pricing), ReadPath::Charges] {
        let q = costledger::app::query::parse(&cfg, &QueryText::default()).expect("q");
        let r = query_via(s.as_ref(), &cfg, &q, path).await.expect("query");
        assert_eq!(r.totals[0].values[0].map(|v| v.to_string()).as_deref(), Some("10.5"), "{path:?}");
    }
}

/// Past its cap the builder hands its rows out as a chunk and starts afresh: memory stays
/// bounded, and every line and amount is in exactly one chunk (conservation).
#[test]
fn a_rollup_past_its_row_cap_is_written_in_chunks_that_add_up() {
    use costledger::query::rollup::MAX_ROLLUP_ROWS;
    let spec = RollupSpec::from_config(&Config::default());
    let mut l = line("1.25", "USD");
    let mut b = RollupBuilder::new(&spec).with_min_compression(0);
    let mut chunks = Vec::new();
    for i in 0..(MAX_ROLLUP_ROWS * 2 + 7) {
        l.sub_account_id = Some(format!("S-{}", i % (MAX_ROLLUP_ROWS + 5)));
        b.add(&l).expect("add");
        if b.is_full() {
            chunks.push(b.take_rows());
        }
    }
    chunks.push(b.finish().expect("kept").rows);
    assert!(chunks.len() >= 3, "{} chunks", chunks.len());
    assert!(chunks.iter().all(|c| c.len() <= MAX_ROLLUP_ROWS), "no chunk holds more than the cap");
    let lines: u64 = chunks.iter().flatten().map(|r| r.lines).sum();
    assert_eq!(lines, u64::try_from(MAX_ROLLUP_ROWS * 2 + 7).expect("n"));
    let mut total = costledger_core::ExactSum::ZERO;
    for r in chunks.iter().flatten() {
        total.merge(&r.billed_cost).expect("sum");
    }
    assert_eq!(
        total.to_string(),
        (dec("1.25") * rust_decimal::Decimal::from(MAX_ROLLUP_ROWS * 2 + 7)).normalize().to_string()
    );
}

/// Rollup chunks of a load that fails are deleted with its lines; a rebuild clears the old
/// rollup first, so nothing is counted twice.
#[tokio::test]
async fn failed_loads_leave_no_rollup_chunks_and_rebuilds_do_not_double() {
    let (s, _dir) = sqlite_store().await;
    let cfg = rollup_config();
    let spec = RollupSpec::from_config(&cfg);
    let lines: Vec<ChargeLine> = (0..10)
        .map(|i| {
            let mut l = line("2.5", "USD");
            l.sub_account_id = Some(format!("S{i}"));
            l
        })
        .collect();
    load_with_rollup(s.as_ref(), std::slice::from_ref(&spec), "a", "a1", &lines).await;
    let source = s.ensure_source("bill", "focus").await.expect("source");
    let id = s.begin_load(&new_load(source, "b", "b1", "test:1:1")).await.expect("begin");
    s.stage_lines(id, 0, lines.clone(), None).await.expect("stage");
    let mut b = RollupBuilder::new(&spec);
    for l in &lines {
        b.add(l).expect("add");
    }
    s.append_rollup(id, &b.take_rows()).await.expect("append");
    assert!(s.fail_load(id, "the source failed").await.expect("fail"));
    let q = costledger::app::query::parse(&cfg, &QueryText::default()).expect("q");
    let want = query_via(s.as_ref(), &cfg, &q, ReadPath::Charges).await.expect("charges");
    assert_eq!(want.totals[0].values[0].map(|v| v.to_string()).as_deref(), Some("25"));
    let mut got = query_via(s.as_ref(), &cfg, &q, ReadPath::Rollups(RollupKind::Daily)).await.expect("rollups");
    assert_eq!(got.answered_from, AnsweredFrom::Rollups);
    got.answered_from = AnsweredFrom::Charges;
    assert_eq!(got, want, "the failed load's chunk is gone");
    // A changed spec rebuilds: the old chunks are cleared first, so the sum stays 25.
    let other = Config { timezone: chrono_tz::UTC, ..rollup_config() };
    let built = build_missing_rollups(s.as_ref(), &other).await.expect("build");
    assert_eq!(built.built.len(), 2, "the daily and the pricing rollup of load a: {built:?}");
    let r = query_via(s.as_ref(), &other, &q, ReadPath::Rollups(RollupKind::Daily)).await.expect("rollups");
    assert_eq!(r.totals[0].values[0].map(|v| v.to_string()).as_deref(), Some("25"));
    assert_eq!(r.lines, 10);
}

/// A query with more groups than the limit is refused with a message that says what to do,
/// instead of growing without bound; a line joining an existing group is still counted.
#[test]
fn too_many_groups_is_refused_with_what_to_do() {
    use costledger::query::aggregate::{AggregateError, Aggregator};
    let norm = |k: &str| k.to_lowercase();
    let q = QueryText { group_by: vec!["resource".into()], ..Default::default() }.parse(&norm).expect("query");
    let mut agg = Aggregator::new(&q, chrono_tz::UTC, &norm).with_max_groups(2);
    let mut l = line("1.5", "USD");
    for r in ["i-1", "i-2", "i-1"] {
        l.resource_id = Some(r.into());
        agg.add_line(&l, "bill").expect("within the limit");
    }
    l.resource_id = Some("i-3".into());
    let e = agg.add_line(&l, "bill").expect_err("a third group");
    assert_eq!(e, AggregateError::TooManyGroups { limit: 2 });
    assert!(e.to_string().contains("more than 2 groups: narrow the range (--from/--to), add filters"), "{e}");
}

/// Regression (`bench/query.sh`: 1M CUR lines over 5,000 SKUs gave their rollup up, so every
/// query read the charges): the SKU is not a rollup dimension, so a bill with a new SKU on every
/// line still compresses; a SKU question reads the charges and equals the scan.
#[tokio::test]
async fn a_bill_with_a_sku_per_line_keeps_its_rollup_and_sku_questions_read_the_charges() {
    use costledger::query::rollup::{MAX_ROLLUP_ROWS, MIN_ROLLUP_COMPRESSION};
    let cfg = rollup_config();
    let spec = RollupSpec::from_config(&cfg);
    let mut l = line("0.5", "USD");
    let mut b = RollupBuilder::new(&spec);
    let n = MAX_ROLLUP_ROWS * usize::try_from(MIN_ROLLUP_COMPRESSION).expect("n") + 1;
    for i in 0..n {
        l.sku_id = Some(format!("SKU-{i}"));
        b.add(&l).expect("add");
        assert!(!b.is_full(), "one row whatever the SKUs");
    }
    let rollup = b.finish().expect("a rollup is kept");
    assert_eq!(rollup.rows.len(), 1);
    assert_eq!(rollup.rows[0].lines, u64::try_from(n).expect("n"));

    let (s, _dir) = sqlite_store().await;
    let lines: Vec<ChargeLine> = (0..12)
        .map(|i| {
            let mut l = line(&format!("1.{i}"), "USD");
            l.sku_id = Some(format!("SKU-{}", i % 5));
            l
        })
        .collect();
    load_with_rollup(s.as_ref(), std::slice::from_ref(&spec), "a", "a1", &lines).await;
    let ask = |g: &str| {
        let t = QueryText { group_by: vec![g.into()], ..Default::default() };
        costledger::app::query::parse(&cfg, &t).expect("query parses")
    };
    let by_service = query_via(s.as_ref(), &cfg, &ask("service"), ReadPath::Auto).await.expect("q");
    assert_eq!(by_service.answered_from, AnsweredFrom::Rollups);
    let mut by_sku = query_via(s.as_ref(), &cfg, &ask("sku"), ReadPath::Auto).await.expect("q");
    assert_eq!(by_sku.answered_from, AnsweredFrom::Charges, "the rollups do not hold the SKU");
    let scanned = query_via(s.as_ref(), &cfg, &ask("sku"), ReadPath::Charges).await.expect("q");
    by_sku.answered_from = scanned.answered_from;
    assert_eq!(by_sku, scanned);
    assert_eq!(by_sku.rows.len(), 5, "{by_sku:?}");
}

/// The builder keys a row by one byte string of its dimensions: texts that would read the same
/// run together ("ab" + "c", "a" + "bc"), and an empty text beside a missing one, stay apart.
#[test]
fn rollup_keys_keep_adjacent_and_empty_dimensions_apart() {
    let spec = RollupSpec::from_config(&rollup_config());
    let mut b = RollupBuilder::new(&spec).with_min_compression(0);
    let shapes: [(Option<&str>, Option<&str>, Option<&str>); 5] = [
        (Some("ab"), Some("c"), None),
        (Some("a"), Some("bc"), None),
        (Some("a"), Some("bc"), Some("")),
        (Some(""), Some("abc"), None),
        (None, Some("abc"), None),
    ];
    for (service, region, provider) in shapes {
        let mut l = line("1", "USD");
        l.service_name = service.map(str::to_string);
        l.region_id = region.map(str::to_string);
        l.provider_name = provider.map(str::to_string);
        b.add(&l).expect("add");
        b.add(&l).expect("add");
    }
    let rows = b.finish().expect("kept").rows;
    assert_eq!(rows.len(), 5, "{rows:#?}");
    assert!(rows.iter().all(|r| r.lines == 2));
}

/// Upgrade (migration 10): a rollup built with the SKU under schema 9 ("v1") is still read after
/// the migration drops the column (its rows are finer, and rollup rows are summed), with answers
/// equal to the charges', on both backends.
#[tokio::test]
async fn a_rollup_built_with_the_sku_is_still_read_after_the_upgrade() {
    use costledger::ledger::Backend;
    use costledger::ledger::migrations::migrator_upto;
    use sqlx::Connection;
    let dir = tempfile::tempdir().expect("tmp");
    let lite = format!("sqlite://{}?mode=rwc", dir.path().join("old.db").display());
    let mut urls = vec![(Backend::Sqlite, lite)];
    if let Some(pg) = pg_schema_url().await {
        urls.push((Backend::Postgres, pg));
    }
    let cfg = rollup_config();
    let spec = RollupSpec::from_config(&cfg);
    let lines: Vec<ChargeLine> = (0..9)
        .map(|i| {
            let mut l = line(&format!("0.00{i}"), "USD");
            l.sku_id = Some(format!("SKU-{}", i % 3));
            l
        })
        .collect();
    for (backend, url) in urls {
        match backend {
            Backend::Sqlite => {
                let mut c = sqlx::SqliteConnection::connect(&url).await.expect("sqlite");
                migrator_upto(backend, 9).run(&mut c).await.expect("schema 9");
            }
            Backend::Postgres => {
                let mut c = sqlx::PgConnection::connect(&url).await.expect("postgres");
                migrator_upto(backend, 9).run(&mut c).await.expect("schema 9");
            }
        }
        let exec = |sql: String| {
            let (backend, url) = (backend, url.clone());
            async move {
                match backend {
                    Backend::Sqlite => {
                        let mut c = sqlx::SqliteConnection::connect(&url).await.expect("sqlite");
                        sqlx::query(sqlx::AssertSqlSafe(sql)).execute(&mut c).await.expect("sql");
                    }
                    Backend::Postgres => {
                        let mut c = sqlx::PgConnection::connect(&url).await.expect("postgres");
                        sqlx::query(sqlx::AssertSqlSafe(sql)).execute(&mut c).await.expect("sql");
                    }
                }
            }
        };
        let exec_many = |sql: String| {
            let (backend, url) = (backend, url.clone());
            async move {
                match backend {
                    Backend::Sqlite => {
                        let mut c = sqlx::SqliteConnection::connect(&url).await.expect("sqlite");
                        sqlx::raw_sql(sqlx::AssertSqlSafe(sql)).execute(&mut c).await.expect("sql");
                    }
                    Backend::Postgres => {
                        let mut c = sqlx::PgConnection::connect(&url).await.expect("postgres");
                        sqlx::raw_sql(sqlx::AssertSqlSafe(sql)).execute(&mut c).await.expect("sql");
                    }
                }
            }
        };
        // Today's loader also writes `load_periods.data_end` (migration 11): the column is added
        // for the commit below and dropped again before migrating, so the ledger is schema 9's.
        exec("ALTER TABLE load_periods ADD COLUMN data_end TEXT".into()).await;
        // …and `load_periods.day_totals` (migration 12).
        exec("ALTER TABLE load_periods ADD COLUMN day_totals TEXT".into()).await;
        // …and the rollup kind and pricing columns (migration 13).
        const PRICING: [&str; 5] = [
            "pricing_category",
            "commitment_discount_id",
            "commitment_discount_type",
            "commitment_discount_category",
            "commitment_discount_status",
        ];
        exec("ALTER TABLE rollups ADD COLUMN kind SMALLINT NOT NULL DEFAULT 0".into()).await;
        exec("ALTER TABLE loads ADD COLUMN pricing_rollup_spec TEXT".into()).await;
        for c in PRICING {
            exec(format!("ALTER TABLE rollups ADD COLUMN {c} TEXT")).await;
        }
        // …and charge contexts and kinds (migrations 14 and 16): schema 9's `charges` table is
        // set aside, empty contexts, kinds and rows behind a `charges` view are made by those
        // migrations' own text, and the rows go back into the table before migrating.
        let (contexts_sql, kinds_sql, id_col) = match backend {
            Backend::Sqlite => (
                include_str!("../../migrations/sqlite/0014_charge_contexts.sql"),
                include_str!("../../migrations/sqlite/0016_charge_kinds.sql"),
                "id, ",
            ),
            Backend::Postgres => (
                include_str!("../../migrations/postgres/0014_charge_contexts.sql"),
                include_str!("../../migrations/postgres/0016_charge_kinds.sql"),
                "",
            ),
        };
        exec_many("ALTER TABLE charges RENAME TO charges_v9".into()).await;
        exec_many(format!("CREATE TABLE charges AS SELECT * FROM charges_v9 WHERE 1 = 0; {contexts_sql}; {kinds_sql}"))
            .await;
        let s = costledger::ledger::open(url.as_str()).await.expect("open");
        // What a schema-9 costledger wrote: one rollup row per day × dimension × SKU, spec v1.
        let source = s.ensure_source("bill", "focus").await.expect("source");
        let id = s.begin_load(&new_load(source, "a", "a1", "test:1:1")).await.expect("begin");
        s.stage_lines(id, 0, lines.clone(), None).await.expect("stage");
        for k in 0..3 {
            let sku = format!("SKU-{k}");
            let mut b = RollupBuilder::new(&spec).with_min_compression(0);
            for l in lines.iter().filter(|l| l.sku_id.as_deref() == Some(sku.as_str())) {
                b.add(l).expect("add");
            }
            s.append_rollup(id, &b.take_rows()).await.expect("append");
            exec(format!("UPDATE rollups SET sku_id = '{sku}' WHERE sku_id IS NULL")).await;
        }
        let mut sm = summary_of(&lines);
        let v1 = spec.fingerprint().replacen("v2 ", "v1 ", 1);
        sm.rollups = vec![costledger::ledger::Rollup { kind: RollupKind::Daily, spec: v1, rows: Vec::new() }];
        s.commit_load(id, &sm).await.expect("commit");
        let q =
            costledger::app::query::parse(&cfg, &QueryText { group_by: vec!["service".into()], ..Default::default() })
                .expect("q");
        let before = query_via(s.as_ref(), &cfg, &q, ReadPath::Auto).await.expect("query");
        assert_eq!(before.answered_from, AnsweredFrom::Charges, "{backend:?}: a v1 rollup is not read by this build");
        let cols = costledger::ledger::charge_columns().join(", ");
        exec_many(format!(
            "INSERT INTO charges_v9 ({id_col}{cols}) SELECT {id_col}{cols} FROM charges; DROP VIEW charges; \
             DROP TABLE charge_rows; DROP TABLE charge_contexts; DROP TABLE charge_kinds; \
             ALTER TABLE charges_v9 RENAME TO charges"
        ))
        .await;
        exec("ALTER TABLE load_periods DROP COLUMN data_end".into()).await;
        exec("ALTER TABLE load_periods DROP COLUMN day_totals".into()).await;
        exec("ALTER TABLE rollups DROP COLUMN kind".into()).await;
        exec("ALTER TABLE loads DROP COLUMN pricing_rollup_spec".into()).await;
        for c in PRICING {
            exec(format!("ALTER TABLE rollups DROP COLUMN {c}")).await;
        }
        s.migrate().await.expect("migrate to 10");
        let mut after = query_via(s.as_ref(), &cfg, &q, ReadPath::Auto).await.expect("query");
        assert_eq!(after.answered_from, AnsweredFrom::Rollups, "{backend:?}: the upgraded rollup is read");
        after.answered_from = AnsweredFrom::Charges;
        assert_eq!(after, before, "{backend:?}");
        assert_eq!(after.totals[0].values[0].map(|v| v.to_string()).as_deref(), Some("0.036"), "{backend:?}");
    }
}

/// A load whose lines are nearly all distinct per day and dimension gets no rollup (it would
/// be as large as the charges: importing it would cost twice and queries gain nothing); a load
/// that compresses keeps its rollup, in chunks past the cap.
#[test]
fn a_rollup_that_would_not_compress_is_given_up_before_anything_is_written() {
    use costledger::query::rollup::{MAX_ROLLUP_ROWS, MIN_ROLLUP_COMPRESSION};
    let spec = RollupSpec::from_config(&Config::default());
    let mut l = line("1", "USD");
    let mut b = RollupBuilder::new(&spec);
    for i in 0..=MAX_ROLLUP_ROWS {
        l.sub_account_id = Some(format!("S-{i}"));
        b.add(&l).expect("add");
        assert!(!b.is_full(), "nothing is written for a rollup that does not compress");
    }
    assert!(b.finish().is_none(), "one line per row: no rollup");
    // Compressible: the first MAX_ROLLUP_ROWS - 1 keys repeat (in runs of two) for
    // MIN_ROLLUP_COMPRESSION × the cap lines, then a new key fills the builder: it is written as
    // a chunk, and kept.
    let mut b = RollupBuilder::new(&spec);
    let per = usize::try_from(MIN_ROLLUP_COMPRESSION).expect("n");
    let mut chunks = 0;
    for i in 0..=(MAX_ROLLUP_ROWS * per) {
        let key = if i == MAX_ROLLUP_ROWS * per { MAX_ROLLUP_ROWS } else { (i / 2) % (MAX_ROLLUP_ROWS - 1) };
        l.sub_account_id = Some(format!("S-{key}"));
        b.add(&l).expect("add");
        if b.is_full() {
            chunks += 1;
            assert_eq!(b.take_rows().len(), MAX_ROLLUP_ROWS);
        }
    }
    assert_eq!(chunks, 1);
    assert!(b.finish().is_some(), "{MIN_ROLLUP_COMPRESSION} lines per row: kept ({chunks} chunks)");
}

/// Regression (`bench/aws_cur.sh`: the pricing builder of a CUR month with hundreds of thousands
/// of day × SKU keys filled to its 50,000-row cap before giving up, 10–25 MB of peak RSS): lines
/// nearly all distinct at two fifths of the cap give up there. A shuffled bill with fewer keys
/// than the cap (the `sample` bills: 39,733 pricing keys over 10M lines) passes that look and is
/// kept whole.
#[test]
fn a_bill_with_more_keys_than_the_cap_gives_up_at_two_fifths_of_it() {
    use costledger::query::rollup::MAX_ROLLUP_ROWS;
    let spec = RollupSpec::from_config(&Config::default());
    let mut l = line("1", "USD");
    let mut b = RollupBuilder::new(&spec);
    for i in 0..(MAX_ROLLUP_ROWS * 2 / 5 + 10) {
        l.sub_account_id = Some(format!("S-{i}"));
        b.add(&l).expect("add");
        assert!(!b.is_full());
    }
    assert!(b.finish().is_none(), "given up at two fifths of the cap");
    // Fewer keys than the cap, drawn at random with replacement (xorshift): kept, one row per key.
    let keys = MAX_ROLLUP_ROWS * 4 / 5;
    let mut b = RollupBuilder::new(&spec);
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    for _ in 0..keys * 10 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        l.sub_account_id = Some(format!("S-{}", x % keys as u64));
        b.add(&l).expect("add");
        assert!(!b.is_full(), "the keys fit under the cap");
    }
    let rows = b.finish().expect("kept").rows;
    assert!(rows.len() <= keys && rows.len() > keys * 99 / 100, "{} rows for {keys} keys", rows.len());
    assert_eq!(rows.iter().map(|r| r.lines).sum::<u64>(), keys as u64 * 10);
}

/// The loader's own chunking: a bill whose rollup passes the 20,000-row cap but compresses
/// (5 lines per row) is rolled up in chunks written while staging; answers from the rollups
/// equal answers from the charges, on SQLite and PostgreSQL.
fn chunked_rollup_through_the_loader(db: &str) {
    use std::fmt::Write as _;
    let dir = tempfile::tempdir().expect("tmp");
    let cfg = fixture("query/config.yaml").display().to_string();
    let mut csv = String::from(
        "BilledCost,BillingCurrency,BillingAccountId,ProviderName,ServiceName,BillingPeriodStart,BillingPeriodEnd,\
         ChargePeriodStart,ChargePeriodEnd,ChargeCategory,SubAccountId,ResourceId\n",
    );
    let skus = costledger::query::rollup::MAX_ROLLUP_ROWS + 10;
    for i in 0..skus * 5 {
        let sku = i / 5;
        writeln!(
            csv,
            "0.{:03},USD,P1,AWS,Svc{},2026-10-01,2026-11-01,2026-10-02T00:00:00Z,2026-10-02T01:00:00Z,Usage,S{sku},r{i}",
            i % 997,
            sku % 7
        )
        .expect("write");
    }
    let bill = dir.path().join("bill.csv");
    std::fs::write(&bill, csv).expect("write");
    let (code, _, err) =
        run(db, &["--config", &cfg, "import", "--format", "focus", "--source", "big", bill.to_str().expect("p")]);
    assert_eq!(code, 0, "{err}");
    let ask = |extra: &[&str]| {
        let mut a = vec!["--config", cfg.as_str(), "query", "--group-by", "service", "--metric", "BilledCost,lines"];
        a.extend_from_slice(extra);
        a.extend_from_slice(&["--format", "csv"]);
        let (code, out, err) = run(db, &a);
        assert_eq!(code, 0, "{err}");
        (out, err)
    };
    let (from_rollups, how) = ask(&[]);
    assert!(how.contains("(daily rollups)"), "the load has a rollup: {how}");
    let (from_charges, how) = ask(&["--where", "resource!=none-such"]);
    assert!(how.contains("(charges)"), "{how}");
    assert_eq!(from_rollups, from_charges);
    let lines: usize = from_rollups
        .lines()
        .skip(1)
        .map(|l| l.rsplit(',').next().expect("lines").parse::<usize>().expect("a count"))
        .sum();
    assert_eq!(lines, skus * 5, "every line is in exactly one chunk: {from_rollups}");
}

#[test]
fn the_loader_writes_a_large_rollup_in_chunks_on_sqlite() {
    let dir = tempfile::tempdir().expect("tmp");
    chunked_rollup_through_the_loader(&sqlite_url(dir.path()));
}

#[tokio::test]
async fn the_loader_writes_a_large_rollup_in_chunks_on_postgres() {
    let Some(url) = pg_schema_url().await else { return };
    tokio::task::spawn_blocking(move || chunked_rollup_through_the_loader(&url)).await.expect("join");
}
