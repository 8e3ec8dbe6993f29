//! One conformance suite, run against SQLite and PostgreSQL (ARCHITECTURE.md: two backends, one behaviour). PostgreSQL
//! runs when COSTLEDGER_TEST_POSTGRES_URL is set (CI sets it) and fails if it is unreachable.

use std::path::Path;
use std::time::Duration;

use crate::common::keyed::{KeyMode, Keyed};
use crate::common::*;
use chrono::Utc;
use costledger::ingest::{LoadOutcome, ingest_source, sweep_stale};
use costledger::ledger::{
    ChargeFilter, CommitOutcome, Dim, LedgerStore, LoadFilter, LoadState, LoadSummary, RunOutcome, RunStatus,
};
use costledger_core::{ChargeLine, Context, PeriodWindow, Totals, format_ts, parse_timestamp};
use costledger_focus::FocusConnector;
use futures::StreamExt;

async fn million_tiny_amounts_sum_exactly(s: Box<dyn LedgerStore>) {
    let src = s.ensure_source("t", "test").await.expect("source");
    let one = line("0.0000000001", "USD");
    let batch: Vec<ChargeLine> = vec![one; 10_000];
    let id = s.begin_load(&new_load(src, "big", "k1", "test:1:1")).await.expect("begin");
    for i in 0..100 {
        s.stage_lines(id, i * 10_000, batch.clone(), None).await.expect("stage");
    }
    let mut sm = summary_of(&batch);
    sm.row_count = 1_000_000;
    s.commit_load(id, &sm).await.expect("commit");
    assert_eq!(s.count_charges(&ChargeFilter::default()).await.expect("count"), 1_000_000);
    assert_eq!(total(s.as_ref(), "USD").await.to_string(), "0.0001");
}

async fn large_totals_stay_exact(s: Box<dyn LedgerStore>) {
    let src = s.ensure_source("t", "test").await.expect("source");
    let lines: Vec<ChargeLine> = (0..10).map(|_| line("123456789012.3456789012", "USD")).collect();
    load_lines(s.as_ref(), src, "a", "k", &lines).await;
    assert_eq!(total(s.as_ref(), "USD").await.to_string(), "1234567890123.456789012");
}

async fn wide_amounts_sum_beyond_a_decimal(s: Box<dyn LedgerStore>) {
    let src = s.ensure_source("t", "test").await.expect("source");
    let lines: Vec<ChargeLine> = (0..1000).map(|_| line("1234567.1234567890123456789012", "EUR")).collect();
    load_lines(s.as_ref(), src, "a", "k", &lines).await;
    assert_eq!(total(s.as_ref(), "EUR").await.to_string(), "1234567123.4567890123456789012");
    // A sum that needs more than 28 significant digits: 999,999 × (1 + 1e-28).
    let src2 = s.ensure_source("t2", "test").await.expect("source");
    let batch: Vec<ChargeLine> = vec![line("1.0000000000000000000000000001", "GBP"); 999_999 / 9];
    let id = s.begin_load(&new_load(src2, "b", "k", "test:1:1")).await.expect("begin");
    for i in 0..9 {
        s.stage_lines(id, i * (999_999 / 9), batch.clone(), None).await.expect("stage");
    }
    s.commit_load(id, &summary_of(&batch)).await.expect("commit");
    assert_eq!(total(s.as_ref(), "GBP").await.to_string(), "999999.0000000000000000000000999999");
}

async fn credits_stay_negative_and_currencies_apart(s: Box<dyn LedgerStore>) {
    let src = s.ensure_source("t", "test").await.expect("source");
    let lines = vec![line("10.00", "USD"), line("-3.25", "USD"), line("-0.00000001", "USD"), line("7", "EUR")];
    load_lines(s.as_ref(), src, "a", "k", &lines).await;
    let rows = s.totals(&ChargeFilter::default(), &[Dim::ChargeCategory]).await.expect("totals");
    let got: Vec<(String, String, String)> = rows
        .iter()
        .map(|r| (r.keys[0].clone().unwrap_or_default(), r.currency.clone(), r.billed_cost.to_string()))
        .collect();
    assert_eq!(
        got,
        vec![
            ("Credit".into(), "USD".into(), "-3.25000001".into()),
            ("Usage".into(), "EUR".into(), "7".into()),
            ("Usage".into(), "USD".into(), "10".into()),
        ]
    );
    let back: Vec<_> = s.charges(&ChargeFilter::default()).collect().await;
    let negatives = back.iter().filter(|r| r.as_ref().expect("row").line.billed_cost.is_sign_negative()).count();
    assert_eq!(negatives, 2);
}

async fn lines_round_trip_exactly(s: Box<dyn LedgerStore>) {
    let src = s.ensure_source("t", "test").await.expect("source");
    let mut l = line("0.0000000000000000000000000001", "USD");
    l.list_cost = Some(dec("79228162514264.337593543950335"));
    l.pricing_quantity = Some(dec("1.5"));
    l.charge_class = Some(costledger_core::ChargeClass::Correction);
    l.tags.insert("Tab\tKey".into(), "line\nbreak \\ back".into());
    l.charge_description = Some("=HYPERLINK(\"x\")\ttab".into());
    // Amounts at every edge of the binary NUMERIC encoding (PostgreSQL) and of the canonical
    // text (SQLite): negative with 22 places, zero, whole base-10000 groups, the largest
    // mantissa, and a timestamp with microseconds.
    let mut m = line("-1234567.1234567890123456789012", "EUR");
    m.effective_cost = Some(dec("0.000"));
    m.contracted_cost = Some(dec("100000000"));
    m.list_cost = Some(dec("-0.0001"));
    m.consumed_quantity = Some(dec("79228162514264337593543950335"));
    m.pricing_quantity = Some(dec("-7.9228162514264337593543950335"));
    m.charge_period_end = parse_timestamp("2026-10-06T00:00:00.123456Z").expect("ts");
    m.source_ref = Some("test:2".into());
    load_lines(s.as_ref(), src, "a", "k", &[l.clone(), m.clone()]).await;
    let back: Vec<_> = s.charges(&ChargeFilter::default()).collect().await;
    assert_eq!(back.len(), 2);
    let mut back = back.into_iter().map(|r| r.expect("row"));
    let got = back.next().expect("first");
    assert_eq!(got.source, "t");
    assert_eq!(got.line, l);
    let got = back.next().expect("second");
    assert_eq!(got.line, m);
    assert_eq!(got.line.billed_cost.to_string(), "-1234567.1234567890123456789012");
    assert_eq!(got.line.list_cost.map(|d| d.normalize().to_string()).as_deref(), Some("-0.0001"));
}

async fn same_delivery_twice_changes_nothing(s: Box<dyn LedgerStore>) {
    let dir = tempfile::tempdir().expect("tmp");
    let f = dir.path().join("oct.csv");
    std::fs::copy(fixture("focus/focus_sample.csv"), &f).expect("copy");
    let c = FocusConnector::new(vec![f.clone()]);
    let cx = Context::new("drop");
    let w = PeriodWindow { from: "2026-10".parse().expect("p"), to: "2026-10".parse().expect("p") };
    let first = ingest_source(s.as_ref(), "drop", &c, w, &cx, None).await.expect("ingest");
    assert!(matches!(first[0].as_ref().expect("ok").outcome, LoadOutcome::Created { superseded: None, .. }));
    let before = (s.count_charges(&ChargeFilter::default()).await.expect("n"), total(s.as_ref(), "USD").await);
    let second = ingest_source(s.as_ref(), "drop", &c, w, &cx, None).await.expect("ingest");
    assert!(matches!(second[0].as_ref().expect("ok").outcome, LoadOutcome::Skipped { .. }));
    let after = (s.count_charges(&ChargeFilter::default()).await.expect("n"), total(s.as_ref(), "USD").await);
    assert_eq!(before, after);
    assert_eq!(after.0, 1000);
    assert_eq!(after.1.to_string(), "20.52022672899");
    // The key computed while loading is the file's SHA-256, and the second run (which staged
    // alongside hashing, then found the key current) left no load behind.
    let loads = s.loads(&LoadFilter::default()).await.expect("loads");
    assert_eq!(loads.len(), 1);
    assert_eq!(loads[0].delivery_key, costledger_files::file_sha256(&f).expect("sha"));
    assert!(loads[0].delivery_key.starts_with("sha256:"), "{}", loads[0].delivery_key);
}

async fn restated_file_replaces_the_old_one(s: Box<dyn LedgerStore>) {
    let dir = tempfile::tempdir().expect("tmp");
    let f = dir.path().join("bill.csv");
    let v1 = "BilledCost,BillingCurrency,BillingAccountId,BillingPeriodStart,BillingPeriodEnd,ChargePeriodStart,ChargePeriodEnd,ChargeCategory,ServiceName\n\
              10.50,USD,A1,2026-10-01,2026-11-01,2026-10-02,2026-10-03,Usage,Compute\n\
              2.25,USD,A1,2026-10-01,2026-11-01,2026-10-02,2026-10-03,Usage,Storage\n";
    let v2 = "BilledCost,BillingCurrency,BillingAccountId,BillingPeriodStart,BillingPeriodEnd,ChargePeriodStart,ChargePeriodEnd,ChargeCategory,ServiceName\n\
              10.50,USD,A1,2026-10-01,2026-11-01,2026-10-02,2026-10-03,Usage,Compute\n\
              2.30,USD,A1,2026-10-01,2026-11-01,2026-10-02,2026-10-03,Usage,Storage\n\
              -1.00,USD,A1,2026-10-01,2026-11-01,2026-10-02,2026-10-03,Credit,Compute\n";
    let c = FocusConnector::new(vec![f.clone()]);
    let cx = Context::new("drop");
    let w = PeriodWindow { from: "2026-10".parse().expect("p"), to: "2026-10".parse().expect("p") };
    std::fs::write(&f, v1).expect("write");
    let r1 = ingest_source(s.as_ref(), "drop", &c, w, &cx, None).await.expect("ingest");
    let LoadOutcome::Created { load: l1, .. } = r1[0].as_ref().expect("ok").outcome else { panic!("not created") };
    assert_eq!(total(s.as_ref(), "USD").await.to_string(), "12.75");
    std::fs::write(&f, v2).expect("write");
    let r2 = ingest_source(s.as_ref(), "drop", &c, w, &cx, None).await.expect("ingest");
    let LoadOutcome::Created { load: l2, superseded } = r2[0].as_ref().expect("ok").outcome else {
        panic!("not created")
    };
    assert_eq!(superseded, Some(l1));
    assert_eq!(total(s.as_ref(), "USD").await.to_string(), "11.8");
    assert_eq!(s.count_charges(&ChargeFilter::default()).await.expect("n"), 3);
    let loads = s.loads(&LoadFilter::default()).await.expect("loads");
    let states: Vec<(i64, LoadState, Option<i64>)> = loads.iter().map(|l| (l.id, l.state, l.superseded_by)).collect();
    assert_eq!(states, vec![(l1, LoadState::Superseded, Some(l2)), (l2, LoadState::Current, None)]);
    assert_eq!(loads[1].delivery_key, costledger_files::file_sha256(&f).expect("sha"));
    assert_ne!(loads[0].delivery_key, loads[1].delivery_key);
    // The same bytes written again (a new mtime) are the same delivery.
    std::fs::write(&f, v2).expect("write");
    let r3 = ingest_source(s.as_ref(), "drop", &c, w, &cx, None).await.expect("ingest");
    assert!(matches!(r3[0].as_ref().expect("ok").outcome, LoadOutcome::Skipped { existing } if existing == l2));
    assert_eq!(s.loads(&LoadFilter::default()).await.expect("loads").len(), 2);
    // The superseded load's lines are still there for the restatement report, but not visible.
    let old = ChargeFilter { load: Some(l1), ..Default::default() };
    assert_eq!(s.count_charges(&old).await.expect("n"), 2);
    // Retention: collected once past the cut-off, the current load untouched.
    assert_eq!(s.gc_superseded(Utc::now() - chrono::Duration::days(1)).await.expect("gc"), 0);
    assert_eq!(s.gc_superseded(Utc::now() + chrono::Duration::seconds(5)).await.expect("gc"), 1);
    assert_eq!(s.count_charges(&old).await.expect("n"), 0);
    assert_eq!(total(s.as_ref(), "USD").await.to_string(), "11.8");
}

async fn staging_is_invisible_and_failure_leaves_nothing(s: Box<dyn LedgerStore>) {
    let src = s.ensure_source("t", "test").await.expect("source");
    load_lines(s.as_ref(), src, "a", "k1", &[line("5", "USD")]).await;
    let id = s.begin_load(&new_load(src, "a", "k2", "test:1:1")).await.expect("begin");
    s.stage_lines(id, 0, vec![line("100", "USD"), line("200", "USD")], None).await.expect("stage");
    assert_eq!(total(s.as_ref(), "USD").await.to_string(), "5", "staged lines must be invisible");
    assert!(s.fail_load(id, "boom").await.expect("fail"));
    assert!(!s.fail_load(id, "again").await.expect("fail twice is a no-op"));
    assert_eq!(s.count_charges(&ChargeFilter { load: Some(id), ..Default::default() }).await.expect("n"), 0);
    assert_eq!(total(s.as_ref(), "USD").await.to_string(), "5");
    let err = s.commit_load(id, &LoadSummary::default()).await.expect_err("failed load cannot commit");
    assert!(err.to_string().contains("not staging"), "{err}");
    let failed = s.loads(&LoadFilter { state: Some(LoadState::Failed), ..Default::default() }).await.expect("loads");
    assert_eq!(failed[0].error.as_deref(), Some("boom"));
}

async fn a_discarded_load_leaves_no_trace(s: Box<dyn LedgerStore>) {
    let src = s.ensure_source("t", "test").await.expect("source");
    load_lines(s.as_ref(), src, "a", "k1", &[line("5", "USD")]).await;
    let id = s.begin_load(&new_load(src, "a", "pending:x", "test:1:1")).await.expect("begin");
    s.stage_lines(id, 0, vec![line("100", "USD")], None).await.expect("stage");
    s.discard_load(id).await.expect("discard");
    let loads = s.loads(&LoadFilter::default()).await.expect("loads");
    assert_eq!(loads.iter().map(|l| l.id).collect::<Vec<_>>(), vec![id - 1], "only the first load is left");
    assert_eq!(s.count_charges(&ChargeFilter { load: Some(id), ..Default::default() }).await.expect("n"), 0);
    assert_eq!(total(s.as_ref(), "USD").await.to_string(), "5");
    // A current load is never discarded.
    s.discard_load(id - 1).await.expect("discard a current load: no-op");
    assert_eq!(total(s.as_ref(), "USD").await.to_string(), "5");
}

/// The separate hash runs where the scope already holds a load (a new scope is keyed by the
/// bytes its parser read): when it fails, the restatement commits nothing.
async fn a_failed_pending_key_commits_nothing(s: Box<dyn LedgerStore>) {
    let dir = tempfile::tempdir().expect("tmp");
    let f = dir.path().join("oct.csv");
    std::fs::copy(fixture("focus/focus_sample.csv"), &f).expect("copy");
    let w = PeriodWindow { from: "2026-10".parse().expect("p"), to: "2026-10".parse().expect("p") };
    let plain = FocusConnector::new(vec![f.clone()]);
    let first = ingest_source(s.as_ref(), "drop", &plain, w, &Context::new("drop"), None).await.expect("listing");
    first[0].as_ref().expect("first load");
    let before = s.count_charges(&ChargeFilter::default()).await.expect("n");
    let totals_before = s.totals(&ChargeFilter::default(), &[]).await.expect("totals");
    // The bill is re-delivered with one more line; its key cannot be computed.
    let mut text = std::fs::read_to_string(&f).expect("read");
    let last = text.lines().last().expect("a line").to_string();
    text.push_str(&last);
    text.push('\n');
    std::fs::write(&f, text).expect("write");
    let c = Keyed::new(FocusConnector::new(vec![f]), KeyMode::Fails("reading the file to hash it failed".into()));
    let r = ingest_source(s.as_ref(), "drop", &c, w, &Context::new("drop"), None).await.expect("listing");
    let err = r[0].as_ref().expect_err("no key, no load");
    assert!(err.to_string().contains("reading the file to hash it failed"), "{err}");
    assert_eq!(s.count_charges(&ChargeFilter::default()).await.expect("n"), before);
    assert_eq!(s.totals(&ChargeFilter::default(), &[]).await.expect("totals"), totals_before);
    let loads = s.loads(&LoadFilter::default()).await.expect("loads");
    let mut states: Vec<_> = loads.iter().map(|l| l.state).collect();
    states.sort_by_key(|s| s.as_str());
    assert_eq!(states, vec![LoadState::Current, LoadState::Failed]);
    let failed = loads.iter().find(|l| l.state == LoadState::Failed).expect("failed load");
    assert_eq!(s.count_charges(&ChargeFilter { load: Some(failed.id), ..Default::default() }).await.expect("n"), 0);
}

async fn concurrent_same_delivery_commits_once(s: Box<dyn LedgerStore>) {
    let src = s.ensure_source("t", "test").await.expect("source");
    let lines = vec![line("1.5", "USD")];
    let a = s.begin_load(&new_load(src, "a", "same", "test:1:1")).await.expect("begin");
    let b = s.begin_load(&new_load(src, "a", "same", "test:2:2")).await.expect("begin");
    s.stage_lines(a, 0, lines.clone(), None).await.expect("stage");
    s.stage_lines(b, 0, lines.clone(), None).await.expect("stage");
    assert_eq!(
        s.commit_load(a, &summary_of(&lines)).await.expect("commit"),
        CommitOutcome::Current { superseded: None }
    );
    assert_eq!(s.commit_load(b, &summary_of(&lines)).await.expect("commit"), CommitOutcome::Duplicate { existing: a });
    assert_eq!(total(s.as_ref(), "USD").await.to_string(), "1.5");
    assert_eq!(s.count_charges(&ChargeFilter { load: Some(b), ..Default::default() }).await.expect("n"), 0);
}

async fn final_period_changed_becomes_corrected(s: Box<dyn LedgerStore>) {
    let src = s.ensure_source("t", "test").await.expect("source");
    let mut l = line("40", "USD");
    l.invoice_id = Some("INV-1".into());
    load_lines(s.as_ref(), src, "2026-10", "k1", std::slice::from_ref(&l)).await;
    let p = s.billing_periods().await.expect("periods");
    assert_eq!((p[0].period.as_str(), p[0].state.as_str()), ("2026-10", "final"));
    assert_eq!(p[0].invoice_ids, vec!["INV-1".to_string()]);
    // Re-delivered unchanged: still final.
    load_lines(s.as_ref(), src, "2026-10", "k2", std::slice::from_ref(&l)).await;
    assert_eq!(s.billing_periods().await.expect("periods")[0].state.as_str(), "final");
    l.billed_cost = dec("41");
    load_lines(s.as_ref(), src, "2026-10", "k3", std::slice::from_ref(&l)).await;
    let p = s.billing_periods().await.expect("periods");
    assert_eq!(p[0].state.as_str(), "corrected");
    assert_eq!(p[0].totals, Totals::from_json(r#"{"USD":"41"}"#).expect("t"));
}

async fn stale_staging_loads_are_swept(s: Box<dyn LedgerStore>) {
    let src = s.ensure_source("t", "test").await.expect("source");
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").map(|h| h.trim().to_string()).unwrap_or_default();
    let dead = s.begin_load(&new_load(src, "a", "k1", &format!("{host}:4000000000:1"))).await.expect("begin");
    let alive =
        s.begin_load(&new_load(src, "b", "k1", &format!("{host}:{}:1", std::process::id()))).await.expect("begin");
    let remote = s.begin_load(&new_load(src, "c", "k1", "elsewhere:1:1")).await.expect("begin");
    s.stage_lines(dead, 0, vec![line("9", "USD")], None).await.expect("stage");
    let swept = sweep_stale(s.as_ref(), Duration::from_secs(3600)).await.expect("sweep");
    assert_eq!(swept, vec![dead]);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let swept = sweep_stale(s.as_ref(), Duration::from_secs(1)).await.expect("sweep");
    assert_eq!(swept, vec![alive, remote]);
    let failed = s.loads(&LoadFilter { state: Some(LoadState::Failed), ..Default::default() }).await.expect("loads");
    assert!(failed[0].error.as_deref().unwrap_or_default().contains("is gone"), "{:?}", failed[0].error);
    assert_eq!(s.count_charges(&ChargeFilter { load: Some(dead), ..Default::default() }).await.expect("n"), 0);
}

async fn runs_are_recorded(s: Box<dyn LedgerStore>) {
    let id = s.start_run("import", Some("drop")).await.expect("start");
    let o =
        RunOutcome { status: RunStatus::Ok, attempts: 2, error: None, rows: 12, loads_created: 1, loads_skipped: 3 };
    s.finish_run(id, &o).await.expect("finish");
    let runs = s.runs(10).await.expect("runs");
    assert_eq!(runs.len(), 1);
    assert_eq!(runs[0].outcome, o);
    assert_eq!(runs[0].source.as_deref(), Some("drop"));
    assert!(runs[0].finished_at.is_some());
}

async fn filters_by_time_and_source(s: Box<dyn LedgerStore>) {
    let a = s.ensure_source("a", "test").await.expect("source");
    let b = s.ensure_source("b", "test").await.expect("source");
    let mut early = line("1", "USD");
    early.charge_period_start = costledger_core::parse_timestamp("2026-10-01T00:00:00Z").expect("t");
    let mut late = line("2", "USD");
    late.charge_period_start = costledger_core::parse_timestamp("2026-10-20T00:00:00Z").expect("t");
    load_lines(s.as_ref(), a, "x", "k", &[early.clone(), late.clone()]).await;
    load_lines(s.as_ref(), b, "x", "k", &[late]).await;
    let from = costledger_core::parse_timestamp("2026-10-10").ok();
    let f = ChargeFilter { from, ..Default::default() };
    assert_eq!(s.count_charges(&f).await.expect("n"), 2);
    let f = ChargeFilter { to: from, ..Default::default() };
    assert_eq!(s.count_charges(&f).await.expect("n"), 1);
    let f = ChargeFilter { source: Some("a".into()), ..Default::default() };
    assert_eq!(s.count_charges(&f).await.expect("n"), 2);
    let by_source = s.totals(&ChargeFilter::default(), &[Dim::Source, Dim::BillingPeriod]).await.expect("t");
    let got: Vec<String> = by_source
        .iter()
        .map(|r| {
            format!(
                "{}|{}|{}|{}",
                r.keys[0].clone().unwrap_or_default(),
                r.keys[1].clone().unwrap_or_default(),
                r.currency,
                r.billed_cost
            )
        })
        .collect();
    assert_eq!(got, vec!["a|2026-10|USD|3", "b|2026-10|USD|2"]);
    assert!(s.ensure_source("a", "other").await.is_err(), "a source keeps its kind");
}

/// The export order (billing period, provider, billing account, sub account, charge period,
/// service, load, row; NULL first, text byte-wise) over lines whose stored contexts (migration
/// 0014) differ in every context column, in case and in NULL against empty: PostgreSQL sorts by
/// the contexts' ranks, SQLite by the text; both must give this order. Every value reads back
/// as written.
async fn exports_in_the_documented_order_across_contexts(s: Box<dyn LedgerStore>) {
    let t = |s: &str| parse_timestamp(s).expect("ts");
    let providers = [None, Some("AWS"), Some("aws"), Some("Azure")];
    let accounts = ["b", "A", "a"];
    let subs = [None, Some(""), Some("x"), Some("X")];
    let services = [None, Some("S3"), Some("ec2")];
    let mut lines = Vec::new();
    for (i, p) in providers.iter().enumerate() {
        for (j, a) in accounts.iter().enumerate() {
            for (k, sub) in subs.iter().enumerate() {
                let mut l = line(&format!("{}.{}{}", i + 1, j, k), "USD");
                l.provider_name = p.map(str::to_string);
                l.billing_account_id = a.to_string();
                l.sub_account_id = sub.map(str::to_string);
                l.sub_account_name = if k % 2 == 0 { None } else { Some(String::new()) };
                l.service_name = services[(i + j + k) % 3].map(str::to_string);
                l.invoice_issuer_name = (j == 1).then(|| "Issuer".to_string());
                l.billing_account_name = (k != 1).then(|| format!("Account {a}"));
                l.service_category = (i != 2).then(|| format!("Category {i}"));
                l.publisher_name = (j != 0).then(|| format!("Publisher {j}"));
                l.invoice_id = (k != 3).then(|| format!("INV-{i}{k}"));
                if j == 2 {
                    l.billing_currency = "EUR".into();
                }
                l.charge_period_start = t(&format!("2026-10-{:02}T00:00:00Z", 28 - (i * 7 + j * 3 + k) % 27));
                if (i + k) % 2 == 1 {
                    l.billing_period_start = t("2026-09-01T00:00:00Z");
                    l.billing_period_end = t("2026-10-01T00:00:00Z");
                }
                lines.push(l);
            }
        }
    }
    // The same lines again (every context repeats) in a second load of another source.
    let src = s.ensure_source("a", "test").await.expect("source");
    load_lines(s.as_ref(), src, "a", "k1", &lines).await;
    let mut second = lines.clone();
    second.reverse();
    let src2 = s.ensure_source("b", "test").await.expect("source");
    load_lines(s.as_ref(), src2, "b", "k2", &second).await;
    let rows: Vec<_> = s.charges(&ChargeFilter::default()).collect().await;
    let rows: Vec<_> = rows.into_iter().map(|r| r.expect("row")).collect();
    assert_eq!(rows.len(), lines.len() * 2);
    let bytes = |v: &Option<String>| v.as_ref().map(|s| s.as_bytes().to_vec());
    let key = |l: &ChargeLine, load: i64, row: i64| {
        (
            l.billing_period_start,
            bytes(&l.provider_name),
            l.billing_account_id.as_bytes().to_vec(),
            bytes(&l.sub_account_id),
            l.charge_period_start,
            bytes(&l.service_name),
            load,
            row,
        )
    };
    let got: Vec<_> = rows.iter().map(|r| key(&r.line, r.load_id, r.row_no)).collect();
    let mut want = got.clone();
    want.sort();
    assert_eq!(got, want, "the charges come in the export order");
    for r in &rows {
        let source = if r.load_id == rows.iter().map(|r| r.load_id).min().unwrap_or(0) { &lines } else { &second };
        let l = &source[r.row_no as usize];
        assert_eq!(
            (&r.line.provider_name, &r.line.billing_account_id, &r.line.sub_account_id, &r.line.sub_account_name),
            (&l.provider_name, &l.billing_account_id, &l.sub_account_id, &l.sub_account_name)
        );
        assert_eq!((&r.line.service_name, &r.line.invoice_issuer_name), (&l.service_name, &l.invoice_issuer_name));
        assert_eq!((r.line.billing_period_start, r.line.billed_cost), (l.billing_period_start, l.billed_cost));
        // Every other context column too (PostgreSQL's ordered read fills them from the context
        // its row names, not from the row).
        let rest = |l: &ChargeLine| {
            (
                l.billing_account_name.clone(),
                l.billing_period_end,
                l.service_category.clone(),
                l.publisher_name.clone(),
                l.billing_currency.clone(),
                l.invoice_id.clone(),
            )
        };
        assert_eq!(rest(&r.line), rest(l));
    }
}

/// A context and a kind first seen in a batch that rolls back (its load is no longer staging)
/// are not remembered by the writer: the next load with the same context and kind stores them
/// again and reads them back (SQLite inserts both in the batch's transaction).
async fn a_context_from_a_rolled_back_batch_is_stored_again(s: Box<dyn LedgerStore>) {
    let src = s.ensure_source("t", "test").await.expect("source");
    let mut l = line("2.5", "USD");
    l.billing_account_id = "ONLY-IN-A-FAILED-BATCH".into();
    l.service_name = Some("Rolled back".into());
    l.region_id = Some("rolled-back-1".into());
    let gone = s.begin_load(&new_load(src, "a", "k1", "test:1:1")).await.expect("begin");
    s.fail_load(gone, "failed before staging").await.expect("fail");
    assert!(s.stage_lines(gone, 0, vec![l.clone()], None).await.is_err(), "a failed load takes no lines");
    load_lines(s.as_ref(), src, "b", "k2", std::slice::from_ref(&l)).await;
    let rows: Vec<_> = s.charges(&ChargeFilter::default()).collect().await;
    let rows: Vec<_> = rows.into_iter().map(|r| r.expect("row").line).collect();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].billing_account_id, "ONLY-IN-A-FAILED-BATCH");
    assert_eq!(rows[0].service_name.as_deref(), Some("Rolled back"));
    assert_eq!(rows[0].region_id.as_deref(), Some("rolled-back-1"));
    assert_eq!(total(s.as_ref(), "USD").await.to_string(), "2.5");
}

/// Rows of `charge_kinds` in the ledger at `url`.
async fn kinds_stored(url: &str) -> i64 {
    use sqlx::Connection;
    let sql = "SELECT count(*) FROM charge_kinds";
    if url.starts_with("postgres") {
        let mut c = sqlx::PgConnection::connect(url).await.expect("postgres");
        sqlx::query_scalar::<_, i64>(sql).fetch_one(&mut c).await.expect("count")
    } else {
        let mut c = sqlx::SqliteConnection::connect(url).await.expect("sqlite");
        sqlx::query_scalar::<_, i64>(sql).fetch_one(&mut c).await.expect("count")
    }
}

/// Charge kinds (migration 0016): lines that differ only in their kind columns — NULL against
/// empty, case, one column at a time, core fields and FOCUS columns — read back exactly as
/// written, from one batch that stores every kind at once; a second load through a new ledger
/// handle (a writer with an empty cache) finds the stored kinds instead of storing them again.
/// On SQLite files (the C-API bulk path), in memory (the sqlx path) and PostgreSQL.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kinds_keep_every_value_apart_and_are_stored_once() {
    use costledger_core::{ChargeClass, FocusColumns};
    let focus_at = |name: &str| FocusColumns::TEXT.iter().position(|c| *c == name).expect("FOCUS column");
    let mut lines = Vec::new();
    let values = [None, Some(""), Some("x"), Some("X")];
    for (i, v) in values.iter().enumerate() {
        let v = v.map(str::to_string);
        let mut l = line(&format!("{}.5", i + 1), "USD");
        l.region_id = v.clone();
        lines.push(l);
        let mut l = line(&format!("-{}.25", i + 1), "USD");
        l.pricing_unit = v.clone();
        l.charge_class = (i % 2 == 1).then_some(ChargeClass::Correction);
        lines.push(l);
        let mut l = line(&format!("{}.125", i + 1), "USD");
        l.consumed_unit = v.clone();
        l.pricing_unit = Some("Hours".into());
        lines.push(l);
        for name in
            ["RegionName", "AvailabilityZone", "CommitmentDiscountStatus", "SubAccountType", "ServiceSubcategory"]
        {
            let mut l = line(&format!("{}.0625", i + 1), "USD");
            let mut texts: [Option<String>; costledger_core::FOCUS_TEXT_COUNT] = Default::default();
            texts[focus_at(name)] = v.clone();
            // A FOCUS column that is not a kind column, kept in the row beside them.
            texts[focus_at("SkuMeter")] = Some(format!("meter {name}"));
            l.focus = FocusColumns::from_columns(texts, Default::default()).boxed();
            lines.push(l);
        }
    }
    // Distinct kinds: the plain line's kind, and each variation's own (a NULL one equals the
    // plain kind only where nothing else differs).
    let kind_of = |l: &ChargeLine| {
        let f = l.focus.as_deref().map(|f| f.texts()).unwrap_or_default();
        let focus: Vec<Option<String>> = f
            .iter()
            .enumerate()
            .filter(|(k, _)| FocusColumns::TEXT[*k] != "SkuMeter")
            .map(|(_, t)| t.map(str::to_string))
            .collect();
        (
            l.charge_category.as_str(),
            l.charge_class.map(|c| c.as_str()),
            l.region_id.clone(),
            l.pricing_unit.clone(),
            l.consumed_unit.clone(),
            focus,
        )
    };
    let distinct: std::collections::BTreeSet<_> = lines.iter().map(kind_of).collect();
    assert!(distinct.len() > 20, "{}", distinct.len());
    let check = |rows: Vec<costledger::ledger::Result<costledger::ledger::ChargeRecord>>, lines: &[ChargeLine]| {
        let mut rows: Vec<_> = rows.into_iter().map(|r| r.expect("row")).collect();
        rows.sort_by_key(|r| (r.load_id, r.row_no));
        assert_eq!(rows.len(), lines.len() * 2);
        for (r, l) in rows.iter().zip(lines.iter().chain(lines)) {
            assert_eq!(&r.line, l, "row {} of load {}", r.row_no, r.load_id);
        }
    };
    let dir = tempfile::tempdir().expect("tmp");
    let mut urls = vec![format!("sqlite://{}", dir.path().join("kinds.db").display()), "sqlite::memory:".to_string()];
    if let Some(pg) = pg_schema_url().await {
        urls.push(pg);
    }
    for url in urls {
        let memory = url.contains(":memory:");
        let kinds_stored = || kinds_stored(&url);
        let s = costledger::ledger::open(&url).await.expect("open");
        s.migrate().await.expect("migrate");
        let src = s.ensure_source("a", "test").await.expect("source");
        load_lines(s.as_ref(), src, "a", "k1", &lines).await;
        if !memory {
            assert_eq!(kinds_stored().await, distinct.len() as i64, "{url}: one kind per distinct value");
        }
        // The same lines again: through a new handle (its cache empty), except in memory, where
        // a new handle would be a new database.
        let second = if memory { s } else { costledger::ledger::open(&url).await.expect("reopen") };
        let src = second.ensure_source("b", "test").await.expect("source");
        load_lines(second.as_ref(), src, "b", "k2", &lines).await;
        if !memory {
            assert_eq!(
                kinds_stored().await,
                distinct.len() as i64,
                "{url}: the stored kinds were found, not stored again"
            );
        }
        check(second.charges(&ChargeFilter::default()).collect().await, &lines);
    }
}

conformance!(
    million_tiny_amounts_sum_exactly,
    large_totals_stay_exact,
    wide_amounts_sum_beyond_a_decimal,
    credits_stay_negative_and_currencies_apart,
    lines_round_trip_exactly,
    same_delivery_twice_changes_nothing,
    restated_file_replaces_the_old_one,
    staging_is_invisible_and_failure_leaves_nothing,
    a_discarded_load_leaves_no_trace,
    a_failed_pending_key_commits_nothing,
    concurrent_same_delivery_commits_once,
    final_period_changed_becomes_corrected,
    stale_staging_loads_are_swept,
    runs_are_recorded,
    filters_by_time_and_source,
    exports_in_the_documented_order_across_contexts,
    a_context_from_a_rolled_back_batch_is_stored_again,
);

/// PostgreSQL's ordered charge read fills each row's context from the context it names: a
/// context deleted by hand makes the read fail with what is wrong, never a line with empty
/// account or currency.
#[tokio::test]
async fn postgres_reports_a_charge_naming_a_missing_context() {
    use sqlx::Connection;
    let Some(url) = pg_schema_url().await else { return };
    let s = costledger::ledger::open(&url).await.expect("open");
    s.migrate().await.expect("migrate");
    let src = s.ensure_source("a", "test").await.expect("source");
    let mut other = line("2", "EUR");
    other.billing_account_id = "B".into();
    load_lines(s.as_ref(), src, "a", "k1", &[line("1", "USD"), other]).await;
    let rows: Vec<_> = s.charges(&ChargeFilter::default()).collect().await;
    assert_eq!(rows.len(), 2);
    let mut c = sqlx::PgConnection::connect(&url).await.expect("connect");
    let gone: i64 = sqlx::query_scalar("DELETE FROM charge_contexts WHERE billing_account_id = 'B' RETURNING id")
        .fetch_one(&mut c)
        .await
        .expect("delete a context");
    let rows: Vec<_> = s.charges(&ChargeFilter::default()).collect().await;
    let err = rows.into_iter().find_map(|r| r.err()).expect("the read fails").to_string();
    assert_eq!(
        err,
        format!(
            "ledger data is not what costledger wrote (a charge row names context {gone}, which does not exist); \
             was the database changed by hand?"
        )
    );
}

/// SQLite's ordered charge read fills each row's kind columns from the kind it names
/// (`KindReader`): a kind deleted by hand makes the read fail with what is wrong, never a line
/// with an empty category or region.
#[tokio::test]
async fn sqlite_reports_a_charge_naming_a_missing_kind() {
    use sqlx::Connection;
    let (s, dir) = sqlite_store().await;
    let src = s.ensure_source("a", "test").await.expect("source");
    let mut other = line("2", "EUR");
    other.region_id = Some("gone-1".into());
    load_lines(s.as_ref(), src, "a", "k1", &[line("1", "USD"), other]).await;
    let rows: Vec<_> = s.charges(&ChargeFilter::default()).collect().await;
    let regions: Vec<_> = rows.into_iter().map(|r| r.expect("row").line.region_id).collect();
    assert_eq!(regions, vec![None, Some("gone-1".to_string())]);
    let url = format!("sqlite://{}", dir.path().join("ledger.db").display());
    let mut c = sqlx::SqliteConnection::connect(&url).await.expect("connect");
    let gone: i64 = sqlx::query_scalar("DELETE FROM charge_kinds WHERE region_id = 'gone-1' RETURNING id")
        .fetch_one(&mut c)
        .await
        .expect("delete a kind");
    let rows: Vec<_> = s.charges(&ChargeFilter::default()).collect().await;
    let err = rows.into_iter().find_map(|r| r.err()).expect("the read fails").to_string();
    assert_eq!(
        err,
        format!(
            "ledger data is not what costledger wrote (a charge row names kind {gone}, which does not exist); \
             was the database changed by hand?"
        )
    );
}

/// A PostgreSQL charge read that its reader stops early (a consumer that failed, a cancelled
/// request) gives its connections back — the pooled one of its statement and the context
/// reader's own: more early stops than the pool has connections, then full reads in both
/// orders, each with every charge, in the ledger's order, exactly.
#[tokio::test]
async fn postgres_charge_reads_stopped_early_give_their_connection_back() {
    let Some(url) = pg_schema_url().await else { return };
    let s = costledger::ledger::open(&url).await.expect("open");
    s.migrate().await.expect("migrate");
    let src = s.ensure_source("a", "test").await.expect("source");
    // More lines than one handed-over batch, in an order the read must restore.
    let lines: Vec<ChargeLine> = (0..1_500)
        .map(|i| {
            let mut l = line(&format!("{}.{:03}", i % 7, i), if i % 3 == 0 { "EUR" } else { "USD" });
            l.billing_account_id = format!("acct-{}", 2 - i % 3);
            l
        })
        .collect();
    load_lines(s.as_ref(), src, "a", "k1", &lines).await;
    let within = |what: &'static str| move || panic!("{what} did not finish within 60 s: a read kept its connection");
    for unordered in [false, true] {
        let filter = ChargeFilter { unordered, ..ChargeFilter::default() };
        for _ in 0..10 {
            let first: Vec<_> = tokio::time::timeout(Duration::from_secs(60), s.charges(&filter).take(3).collect())
                .await
                .unwrap_or_else(|_| within("an early-stopped read")());
            assert_eq!(first.len(), 3);
            assert!(first.iter().all(|r| r.is_ok()));
        }
    }
    let all = |unordered: bool| {
        let filter = ChargeFilter { unordered, ..ChargeFilter::default() };
        let s = &s;
        async move {
            let rows: Vec<_> = tokio::time::timeout(Duration::from_secs(60), s.charges(&filter).collect::<Vec<_>>())
                .await
                .unwrap_or_else(|_| within("a full read")());
            rows.into_iter().map(|r| r.expect("a charge")).collect::<Vec<_>>()
        }
    };
    let ordered = all(false).await;
    let mut unordered = all(true).await;
    assert_eq!(ordered.len(), 1_500);
    // The ledger's order: billing account first, then the row's place in the load.
    let keys: Vec<_> = ordered.iter().map(|r| (r.line.billing_account_id.clone(), r.row_no)).collect();
    let mut sorted = keys.clone();
    sorted.sort();
    assert_eq!(keys, sorted);
    unordered.sort_by_key(|r| r.row_no);
    let mut by_row = ordered.clone();
    by_row.sort_by_key(|r| r.row_no);
    for (a, b) in by_row.iter().zip(&unordered) {
        assert_eq!(a.line, b.line);
        assert_eq!(a.line, lines[a.row_no as usize]);
    }
    for currency in ["EUR", "USD"] {
        let mut read = costledger_core::ExactSum::ZERO;
        let mut loaded = costledger_core::ExactSum::ZERO;
        for r in ordered.iter().filter(|r| r.line.billing_currency == currency) {
            read.add(r.line.billed_cost).expect("sum");
        }
        for l in lines.iter().filter(|l| l.billing_currency == currency) {
            loaded.add(l.billed_cost).expect("sum");
        }
        assert_eq!(read, loaded, "{currency}");
        assert_eq!(total(s.as_ref(), currency).await, loaded, "{currency}");
    }
}

/// Charges written under schema 15 (the kind columns in each row) keep every value after
/// migration 16 moves them into `charge_kinds`: NULL apart from empty, case apart, equal kinds
/// stored once; a kind stored after the upgrade gets an id past the moved ones.
#[tokio::test]
async fn upgrade_to_charge_kinds_keeps_every_value() {
    use costledger::ledger::Backend;
    use costledger::ledger::migrations::migrator_upto;
    use sqlx::Connection;
    // row_no, then charge_class, region_id, RegionName, pricing_unit, CommitmentDiscountStatus.
    type Row = (
        i64,
        Option<&'static str>,
        Option<&'static str>,
        Option<&'static str>,
        Option<&'static str>,
        Option<&'static str>,
    );
    let rows: [Row; 6] = [
        (0, None, None, Some(""), Some("Hours"), None),
        (1, Some("Correction"), Some(""), None, Some("hours"), None),
        (2, None, Some("x"), None, None, Some("Used")),
        (3, None, Some("X"), None, None, Some("Used")),
        (4, None, None, None, None, None),
        (5, None, None, Some(""), Some("Hours"), None),
    ];
    let sql_text = |v: Option<&str>| v.map_or("NULL".to_string(), |v| format!("'{v}'"));
    let legacy = |sqlite: bool| {
        let values: Vec<String> = rows
            .iter()
            .map(|(n, class, region, name, unit, status)| {
                format!(
                    "({}1, 1, {n}, '2026-10-0{}T00:00:00Z', '2026-10-0{}T01:00:00Z', 'Usage', '1.{n}', {}, {}, {}, {}, {})",
                    if sqlite { format!("{}, ", 4294967296i64 + n) } else { String::new() },
                    n + 1,
                    n + 1,
                    sql_text(*class),
                    sql_text(*region),
                    sql_text(*name),
                    sql_text(*unit),
                    sql_text(*status)
                )
            })
            .collect();
        vec![
            "INSERT INTO sources (name, kind, created_at) VALUES ('legacy', 'focus', '2026-10-01T00:00:00Z')".to_string(),
            "INSERT INTO loads (source_id, scope, delivery_key, state, owner, started_at, heartbeat_at, row_count) \
             VALUES (1, 'a.csv', 'k1', 'current', 'o', '2026-10-01T00:00:00Z', '2026-10-01T00:00:00Z', 6)"
                .to_string(),
            // The first context of a fresh database: id 1 on both backends.
            "INSERT INTO charge_contexts (billing_account_id, billing_period_start, billing_period_end, billing_currency) \
             VALUES ('acct', '2026-10-01T00:00:00Z', '2026-11-01T00:00:00Z', 'USD')"
                .to_string(),
            format!(
                "INSERT INTO charge_rows ({}load_id, ctx_id, row_no, charge_period_start, charge_period_end, \
                 charge_category, billed_cost, charge_class, region_id, region_name, pricing_unit, \
                 commitment_discount_status) VALUES {}",
                if sqlite { "id, " } else { "" },
                values.join(", ")
            ),
        ]
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let lite = format!("sqlite://{}?mode=rwc", dir.path().join("v15.db").display());
    let mut c = sqlx::SqliteConnection::connect(&lite).await.expect("sqlite");
    // Migration 12 sums with the ledger's exact aggregate.
    costledger::ledger::decimal_sum::register(&mut c).await.expect("decimal_sum");
    migrator_upto(Backend::Sqlite, 15).run(&mut c).await.expect("schema 15");
    for q in legacy(true) {
        sqlx::query(sqlx::AssertSqlSafe(q.clone())).execute(&mut c).await.expect(&q);
    }
    c.close().await.expect("close");
    let mut urls = vec![lite.clone()];
    if let Some(pg) = pg_schema_url().await {
        let mut c = sqlx::PgConnection::connect(&pg).await.expect("postgres");
        migrator_upto(Backend::Postgres, 15).run(&mut c).await.expect("schema 15");
        for q in legacy(false) {
            sqlx::query(sqlx::AssertSqlSafe(q.clone())).execute(&mut c).await.expect(&q);
        }
        urls.push(pg);
    }
    for url in urls {
        let kinds_stored = || kinds_stored(&url);
        let s = costledger::ledger::open(&url).await.expect("open");
        s.migrate().await.expect("migrate to the latest schema");
        let read: Vec<_> = s.charges(&ChargeFilter::default()).collect().await;
        let mut read: Vec<_> = read.into_iter().map(|r| r.expect("row")).collect();
        read.sort_by_key(|r| r.row_no);
        let o = |v: Option<&str>| v.map(str::to_string);
        let got: Vec<_> = read
            .iter()
            .map(|r| {
                let f = |name: &str| o(r.line.focus.as_deref().and_then(|f| f.text(name)));
                let l = &r.line;
                (
                    r.row_no,
                    o(l.charge_class.map(|c| c.as_str())),
                    l.region_id.clone(),
                    f("RegionName"),
                    l.pricing_unit.clone(),
                    f("CommitmentDiscountStatus"),
                )
            })
            .collect();
        let want: Vec<_> = rows.iter().map(|(n, a, b, c, d, e)| (*n, o(*a), o(*b), o(*c), o(*d), o(*e))).collect();
        assert_eq!(got, want, "{url}");
        assert_eq!(total(s.as_ref(), "USD").await.to_string(), "7.5", "{url}");
        assert_eq!(kinds_stored().await, 5, "{url}: rows 0 and 5 share their kind");
        // A kind new after the upgrade is stored beside the moved ones; a moved one is found.
        let mut new = line("3", "USD");
        new.region_id = Some("new".into());
        let src = s.ensure_source("other", "test").await.expect("source");
        load_lines(s.as_ref(), src, "b", "k2", &[new, line("4", "USD")]).await;
        assert_eq!(kinds_stored().await, 6, "{url}");
        assert_eq!(total(s.as_ref(), "USD").await.to_string(), "14.5", "{url}");
    }
}

/// Charges written under schema 3 (keyed by a (load_id, row_no) primary key) are all still
/// there, found, summed and deletable after migration 4 re-keys them.
#[tokio::test]
async fn upgrade_to_charge_keys_keeps_every_charge() {
    use costledger::ledger::Backend;
    use costledger::ledger::migrations::migrator_upto;
    use sqlx::Connection;
    let legacy = [
        // The first source and load of a fresh database: id 1 on both backends.
        "INSERT INTO sources (name, kind, created_at) VALUES ('legacy', 'focus', '2026-10-01T00:00:00Z')",
        "INSERT INTO loads (source_id, scope, delivery_key, state, owner, started_at, heartbeat_at, row_count) \
         VALUES (1, 'a.csv', 'k1', 'current', 'o', '2026-10-01T00:00:00Z', '2026-10-01T00:00:00Z', 2)",
        "INSERT INTO charges (load_id, row_no, billing_account_id, billing_period_start, billing_period_end, \
         charge_period_start, charge_period_end, charge_category, billed_cost, billing_currency) VALUES \
         (1, 0, 'acct', '2026-10-01T00:00:00Z', '2026-11-01T00:00:00Z', '2026-10-02T00:00:00Z', \
          '2026-10-02T01:00:00Z', 'Usage', '1.25', 'USD'), \
         (1, 1, 'acct', '2026-10-01T00:00:00Z', '2026-11-01T00:00:00Z', '2026-10-03T00:00:00Z', \
          '2026-10-03T01:00:00Z', 'Credit', '-0.0000000001', 'USD')",
    ];
    let dir = tempfile::tempdir().expect("tempdir");
    let lite = format!("sqlite://{}?mode=rwc", dir.path().join("old.db").display());
    let mut c = sqlx::SqliteConnection::connect(&lite).await.expect("sqlite");
    migrator_upto(Backend::Sqlite, 3).run(&mut c).await.expect("schema 3");
    for q in legacy {
        sqlx::query(q).execute(&mut c).await.expect(q);
    }
    c.close().await.expect("close");
    let mut urls = vec![lite.clone()];
    if let Some(pg) = pg_schema_url().await {
        let mut c = sqlx::PgConnection::connect(&pg).await.expect("postgres");
        migrator_upto(Backend::Postgres, 3).run(&mut c).await.expect("schema 3");
        for q in legacy {
            sqlx::query(q).execute(&mut c).await.expect(q);
        }
        urls.push(pg);
    }
    for url in urls {
        let s = costledger::ledger::open(&url).await.expect("open");
        s.migrate().await.expect("migrate to the latest schema");
        assert_eq!(s.count_charges(&ChargeFilter::default()).await.expect("count"), 2, "{url}");
        assert_eq!(total(s.as_ref(), "USD").await.to_string(), "1.2499999999", "{url}");
        let rows: Vec<_> = s.charges(&ChargeFilter::default()).collect().await;
        let rows: Vec<(i64, i64)> = rows.into_iter().map(|r| r.expect("row")).map(|r| (r.load_id, r.row_no)).collect();
        assert_eq!(rows, vec![(1, 0), (1, 1)], "{url}");
        // New loads stage and supersede the legacy one as usual.
        let src = s.ensure_source("legacy", "focus").await.expect("source");
        assert_eq!(src, 1);
        let out = load_lines(s.as_ref(), src, "a.csv", "k8", &[line("3", "USD")]).await;
        assert!(matches!(out, CommitOutcome::Current { superseded: Some(1) }), "{url}: {out:?}");
        assert_eq!(total(s.as_ref(), "USD").await.to_string(), "3", "{url}");
        assert_eq!(s.gc_superseded(Utc::now() + chrono::Duration::days(1)).await.expect("gc"), 1, "{url}");
        let legacy_left = ChargeFilter { load: Some(1), ..Default::default() };
        assert_eq!(s.count_charges(&legacy_left).await.expect("count"), 0, "{url}");
    }
}

/// Upgrade (migration 11): loads committed before `load_periods.data_end` existed get it from
/// their charges, so "data as of" (`source_data_end`) is the same before and after, on both
/// backends; new loads write it at commit.
#[tokio::test]
async fn upgrade_fills_each_load_periods_data_end_and_day_totals_from_its_charges() {
    use costledger::ledger::Backend;
    use costledger::ledger::migrations::migrator_upto;
    use sqlx::Connection;
    let common = [
        "INSERT INTO sources (name, kind, created_at) VALUES ('legacy', 'focus', '2026-10-01T00:00:00Z')",
        "INSERT INTO loads (source_id, scope, delivery_key, state, owner, started_at, heartbeat_at, row_count) \
         VALUES (1, 'a.csv', 'k1', 'current', 'o', '2026-10-01T00:00:00Z', '2026-10-01T00:00:00Z', 3)",
        "INSERT INTO load_periods (load_id, period, row_count, totals, all_invoiced) VALUES \
         (1, '2026-10', 2, '{}', false), (1, '2026-11', 1, '{}', false)",
    ];
    let charges = |id: bool| {
        let row = |n: u64, bp: &str, bp_end: &str, end: &str| {
            let key = if id { format!("{}, ", 4_294_967_296u64 + n) } else { String::new() };
            // Amounts with decimals (1.05, 1.15, 1.25) and one EffectiveCost, so the migration's
            // exact sums are checked, not just counted.
            let effective = if n == 1 { "'0.3'" } else { "NULL" };
            format!(
                "({key}1, {n}, 'acct', '{bp}', '{bp_end}', '2026-10-02T00:00:00Z', '{end}', 'Usage', '1.{n}5', \
                 {effective}, 'USD')"
            )
        };
        format!(
            "INSERT INTO charges ({}load_id, row_no, billing_account_id, billing_period_start, billing_period_end, \
             charge_period_start, charge_period_end, charge_category, billed_cost, effective_cost, billing_currency) \
             VALUES {}, {}, {}",
            if id { "id, " } else { "" },
            row(0, "2026-10-01T00:00:00Z", "2026-11-01T00:00:00Z", "2026-10-30T23:00:00Z"),
            row(1, "2026-10-01T00:00:00Z", "2026-11-01T00:00:00Z", "2026-10-31T01:00:00Z"),
            row(2, "2026-11-01T00:00:00Z", "2026-12-01T00:00:00Z", "2026-11-03T00:00:00Z"),
        )
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let lite = format!("sqlite://{}?mode=rwc", dir.path().join("old.db").display());
    let mut c = sqlx::SqliteConnection::connect(&lite).await.expect("sqlite");
    migrator_upto(Backend::Sqlite, 10).run(&mut c).await.expect("schema 10");
    for q in common.iter().map(|q| q.to_string()).chain([charges(true)]) {
        sqlx::query(sqlx::AssertSqlSafe(q.clone())).execute(&mut c).await.expect(&q);
    }
    c.close().await.expect("close");
    let mut urls = vec![lite];
    if let Some(pg) = pg_schema_url().await {
        let mut c = sqlx::PgConnection::connect(&pg).await.expect("postgres");
        migrator_upto(Backend::Postgres, 10).run(&mut c).await.expect("schema 10");
        for q in common.iter().map(|q| q.to_string()).chain([charges(false)]) {
            sqlx::query(sqlx::AssertSqlSafe(q.clone())).execute(&mut c).await.expect(&q);
        }
        urls.push(pg);
    }
    for url in urls {
        let s = costledger::ledger::open(&url).await.expect("open");
        s.migrate().await.expect("migrate to the latest schema");
        let ends: Vec<(String, String, String)> =
            s.source_data_end().await.expect("ends").into_iter().map(|(a, p, t)| (a, p, format_ts(t))).collect();
        let want = vec![
            ("legacy".to_string(), "2026-10".to_string(), "2026-10-31T01:00:00Z".to_string()),
            ("legacy".to_string(), "2026-11".to_string(), "2026-11-03T00:00:00Z".to_string()),
        ];
        assert_eq!(ends, want, "{url}");
        // Migration 0012 fills the day totals of the loads already there, summed exactly from
        // their charges: first appearance (and the reconciler's totals) read them.
        let days = s.load_day_totals(None).await.expect("day totals").expect("filled by the migration");
        let got: Vec<(String, Vec<String>)> = days
            .iter()
            .map(|l| {
                let rows = l.rows.iter().map(|(k, t)| {
                    format!(
                        "{:?} {} {:?} {} {} {} {} {:?} {}",
                        k.provider,
                        k.billing_account_id,
                        k.sub_account_id,
                        k.day,
                        k.currency,
                        t.rows,
                        t.billed_cost,
                        t.effective_cost.map(|e| e.to_string()),
                        format_ts(t.first_start)
                    )
                });
                (l.period.clone(), rows.collect())
            })
            .collect();
        assert_eq!(
            got,
            [
                (
                    "2026-10".to_string(),
                    vec!["None acct None 2026-10-02 USD 2 2.2 Some(\"0.3\") 2026-10-02T00:00:00Z".to_string()]
                ),
                (
                    "2026-11".to_string(),
                    vec!["None acct None 2026-10-02 USD 1 1.25 None 2026-10-02T00:00:00Z".to_string()]
                ),
            ],
            "{url}"
        );
        let seen = s.account_first_seen().await.expect("first seen");
        assert_eq!(seen, s.account_first_seen_scan().await.expect("scan"), "{url}");
        assert_eq!(
            seen.iter().map(|f| (f.account.as_str(), format_ts(f.at))).collect::<Vec<_>>(),
            [("acct", "2026-10-02T00:00:00Z".to_string())],
            "{url}"
        );
        // A new load of another source writes its own at commit.
        let src = s.ensure_source("fresh", "focus").await.expect("source");
        let mut l = line("2", "USD");
        l.charge_period_end = costledger_core::parse_timestamp("2026-10-15T06:00:00Z").expect("ts");
        l.charge_period_start = l.charge_period_end - chrono::Duration::hours(1);
        load_lines(s.as_ref(), src, "b.csv", "k2", &[l]).await;
        let ends = s.source_data_end().await.expect("ends");
        assert!(
            ends.iter().any(|(n, p, t)| n == "fresh" && p == "2026-10" && format_ts(*t) == "2026-10-15T06:00:00Z"),
            "{url}: {ends:?}"
        );
        assert_eq!(s.load_day_totals(Some("2026-10")).await.expect("day totals").map(|d| d.len()), Some(2), "{url}");
        let seen = s.account_first_seen().await.expect("first seen");
        assert_eq!(seen.len(), 2, "{url}: {seen:?}");
        assert_eq!(seen, s.account_first_seen_scan().await.expect("scan"), "{url}");
        // A current load without day totals (none in a migrated ledger; written by hand here):
        // its readers fall back to the charges, with the same answer.
        let clear = "UPDATE load_periods SET day_totals = NULL WHERE load_id = 1";
        if url.starts_with("sqlite:") {
            let mut c = sqlx::SqliteConnection::connect(&url).await.expect("sqlite");
            sqlx::query(clear).execute(&mut c).await.expect("clear");
        } else {
            let mut c = sqlx::PgConnection::connect(&url).await.expect("postgres");
            sqlx::query(clear).execute(&mut c).await.expect("clear");
        }
        assert_eq!(s.load_day_totals(Some("2026-10")).await.expect("day totals"), None, "{url}");
        assert_eq!(s.account_first_seen().await.expect("first seen"), seen, "{url}: from the scan");
    }
}

#[test]
fn migrations_have_the_same_versions_on_both_backends() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("migrations");
    let versions = |dir: &str| -> Vec<(i64, String)> {
        let mut v: Vec<(i64, String)> = std::fs::read_dir(root.join(dir))
            .expect("dir")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".sql"))
            .map(|n| {
                let (num, rest) = n.split_once('_').expect("NNNN_name.sql");
                (num.parse().expect("numeric version"), rest.to_string())
            })
            .collect();
        v.sort();
        v
    };
    let lite = versions("sqlite");
    let pg = versions("postgres");
    assert!(!lite.is_empty());
    assert_eq!(lite, pg, "migrations/sqlite and migrations/postgres must have the same versions and names");
    let embedded: Vec<i64> = costledger::ledger::migrations::MIGRATIONS.iter().map(|m| m.0).collect();
    assert_eq!(embedded, lite.iter().map(|v| v.0).collect::<Vec<_>>(), "embedded list out of date");
}

/// `sqlite::memory:` stages through sqlx (multi-row VALUES) instead of the C-API bulk path; the
/// same contract must hold there too.
#[tokio::test]
async fn in_memory_sqlite_stages_through_sqlx_with_the_same_results() {
    let s = costledger::ledger::open("sqlite::memory:").await.expect("open");
    s.migrate().await.expect("migrate");
    let src = s.ensure_source("m", "test").await.expect("source");
    // 1,201 lines: more than two full 500-row statements plus a partial one.
    let lines: Vec<ChargeLine> = (0..1201).map(|_| line("0.0000000001", "USD")).collect();
    load_lines(s.as_ref(), src, "a", "k1", &lines).await;
    assert_eq!(total(s.as_ref(), "USD").await.to_string(), "0.0000001201");
    let rows: Vec<i64> = s.charges(&ChargeFilter::default()).map(|r| r.expect("row").row_no).collect().await;
    assert_eq!(rows, (0..1201).collect::<Vec<i64>>(), "row numbers follow the load's order");
    let out = load_lines(s.as_ref(), src, "a", "k2", &[line("-2.5", "USD")]).await;
    assert!(matches!(out, CommitOutcome::Current { superseded: Some(_) }));
    assert_eq!(total(s.as_ref(), "USD").await.to_string(), "-2.5");
}

/// Regression (CI, full-disk test): SQLite rolls a transaction back by itself when a statement
/// fails with SQLITE_FULL; sqlx's ROLLBACK on drop then failed, the connection went back to the
/// pool still counted as inside a transaction, and every later write on it failed with
/// "attempted to call begin_with at non-zero transaction depth" (so a failed load could not even
/// be marked failed). A `ROLLBACK` run inside the transaction reproduces that state exactly.
#[tokio::test]
async fn a_transaction_sqlite_ended_by_itself_does_not_poison_the_pool() {
    use sqlx::Connection as _;
    let dir = tempfile::tempdir().expect("tmp");
    let url = format!("sqlite://{}", dir.path().join("l.db").display());
    let lite = costledger::ledger::sqlite::SqliteLedger::connect(&url).await.expect("open");
    lite.migrate().await.expect("migrate");
    {
        let mut tx = lite.pool().begin_with("BEGIN IMMEDIATE").await.expect("begin");
        sqlx::query("ROLLBACK").execute(&mut *tx).await.expect("the engine ends the transaction");
        assert!(tx.is_in_transaction(), "the driver still counts the transaction");
        // Dropped here: the driver's ROLLBACK fails ("no transaction is active").
    }
    // Every later write transaction works, whichever pooled connection it gets.
    let src = lite.ensure_source("m", "test").await.expect("source");
    for i in 0..6 {
        load_lines(&lite, src, "a", &format!("k{i}"), &[line("1.25", "USD")]).await;
    }
    assert_eq!(total(&lite, "USD").await.to_string(), "1.25");
}

/// A new SQLite ledger is made of 16 KiB pages (smaller file, fewer WAL frames per import); a
/// ledger made before keeps its 4 KiB pages and opens and loads as before.
#[tokio::test]
async fn a_new_sqlite_ledger_has_16k_pages_and_an_old_one_keeps_its_own() {
    let dir = tempfile::tempdir().expect("tmp");
    let page_size = |lite: &costledger::ledger::sqlite::SqliteLedger| {
        let pool = lite.pool().clone();
        async move { sqlx::query_scalar::<_, i64>("PRAGMA page_size").fetch_one(&pool).await.expect("pragma") }
    };
    let url = format!("sqlite://{}", dir.path().join("new.db").display());
    let lite = costledger::ledger::sqlite::SqliteLedger::connect(&url).await.expect("open");
    lite.migrate().await.expect("migrate");
    assert_eq!(page_size(&lite).await, 16384);
    // An existing file with 4 KiB pages (made as before this change).
    let old = dir.path().join("old.db");
    {
        let opts = sqlx::sqlite::SqliteConnectOptions::new()
            .filename(&old)
            .create_if_missing(true)
            .page_size(4096)
            .journal_mode(sqlx::sqlite::SqliteJournalMode::Wal);
        let mut c = <sqlx::SqliteConnection as sqlx::Connection>::connect_with(&opts).await.expect("create");
        sqlx::query("CREATE TABLE before_upgrade (x)").execute(&mut c).await.expect("table");
        sqlx::Connection::close(c).await.expect("close");
    }
    let lite = costledger::ledger::sqlite::SqliteLedger::connect(&format!("sqlite://{}", old.display()))
        .await
        .expect("open old");
    lite.migrate().await.expect("migrate old");
    assert_eq!(page_size(&lite).await, 4096);
    let src = lite.ensure_source("m", "test").await.expect("source");
    load_lines(&lite, src, "a", "k1", &[line("1.25", "USD"), line("2", "USD")]).await;
    assert_eq!(total(&lite, "USD").await.to_string(), "3.25");
}

/// PostgreSQL: a commit that fills a table by more than a tenth (and at least 50,000 rows)
/// refreshes its planner statistics, so the next grouped read is planned for what is there
/// (unanalysed, the planner took 10M freshly copied charges for a nearly empty table and sorted
/// them on disk to group them: `report weekly` 32.9 s instead of 11 s). A small commit into a
/// large table does not pay for an ANALYZE.
#[tokio::test]
async fn a_large_commit_refreshes_the_planner_statistics_on_postgres() {
    use sqlx::Connection;
    let Some(url) = pg_schema_url().await else {
        eprintln!("skipped: {PG_ENV} is not set");
        return;
    };
    let s = costledger::ledger::open(&url).await.expect("open");
    s.migrate().await.expect("migrate");
    let analysed = || async {
        let mut c = sqlx::PgConnection::connect(&url).await.expect("postgres");
        let n: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM pg_stat_user_tables WHERE schemaname = current_schema() \
             AND relname = 'charge_rows' AND last_analyze IS NOT NULL",
        )
        .fetch_one(&mut c)
        .await
        .expect("stats");
        n == 1
    };
    let src = s.ensure_source("big", "test").await.expect("source");
    load_lines(s.as_ref(), src, "small.csv", "k0", &[line("1", "USD")]).await;
    assert!(!analysed().await, "one line is not worth an ANALYZE");
    let lines: Vec<ChargeLine> = (0..50_000).map(|i| line(&format!("0.{i:05}"), "USD")).collect();
    load_lines(s.as_ref(), src, "big.csv", "k1", &lines).await;
    // The counters of the staging transactions reach the statistics system asynchronously.
    let mut fresh = analysed().await;
    for _ in 0..20 {
        if fresh {
            break;
        }
        load_lines(s.as_ref(), src, "tiny.csv", &format!("k{}", Utc::now().timestamp_micros()), &[line("1", "USD")])
            .await;
        fresh = analysed().await;
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert!(fresh, "the charges' statistics were refreshed after the large commit");
}

/// PostgreSQL: once every line of a load is staged (`lines_staged`), the charges' statistics
/// are refreshed before the commit — beside the load's last rollup rows, instead of making the
/// import wait for them after it — and they leave out the columns no read filters, joins or
/// groups on (migration 0015: amounts, free text, lineage), while keeping those reads group on.
#[tokio::test]
async fn staged_lines_refresh_the_charges_statistics_before_the_commit_on_postgres() {
    use sqlx::Connection;
    let Some(url) = pg_schema_url().await else {
        eprintln!("skipped: {PG_ENV} is not set");
        return;
    };
    let s = costledger::ledger::open(&url).await.expect("open");
    s.migrate().await.expect("migrate");
    let columns_with_stats = || async {
        let mut c = sqlx::PgConnection::connect(&url).await.expect("postgres");
        let cols: Vec<String> = sqlx::query_scalar(
            "SELECT attname::text FROM pg_stats WHERE schemaname = current_schema() \
             AND tablename = 'charge_rows' ORDER BY attname",
        )
        .fetch_all(&mut c)
        .await
        .expect("stats");
        cols
    };
    let src = s.ensure_source("big", "test").await.expect("source");
    let load = s.begin_load(&new_load(src, "big.csv", "k1", "test:1:1")).await.expect("begin");
    // 60 resources, equally frequent (so none is "most common"): the default statistics target
    // (100) gives them a histogram of 60 bounds, the load's (30) one of 31.
    let lines: Vec<ChargeLine> = (0..50_000)
        .map(|i| ChargeLine { resource_id: Some(format!("r-{:02}", i % 60)), ..line(&format!("0.{i:05}"), "USD") })
        .collect();
    for (i, chunk) in lines.chunks(5_000).enumerate() {
        s.stage_lines(load, i as u64 * 5_000, chunk.to_vec(), None).await.expect("stage");
    }
    // The counters of the staging transactions reach the statistics system asynchronously.
    let mut cols = Vec::new();
    for _ in 0..40 {
        s.lines_staged(load).await.expect("every line staged");
        cols = columns_with_stats().await;
        if !cols.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert!(cols.iter().any(|c| c == "charge_period_start"), "refreshed before the commit: {cols:?}");
    assert!(cols.iter().any(|c| c == "ctx_id") && cols.iter().any(|c| c == "load_id"), "{cols:?}");
    for left_out in ["billed_cost", "effective_cost", "x_source_ref", "tags", "row_no", "charge_description"] {
        assert!(!cols.iter().any(|c| c == left_out), "{left_out} has statistics: {cols:?}");
    }
    // The load's ANALYZE samples with a statistics target of 30 (0.1 s instead of 0.45 s for
    // 1M lines, at the import's end).
    let mut c = sqlx::PgConnection::connect(&url).await.expect("postgres");
    let bounds: Option<i32> = sqlx::query_scalar(
        "SELECT array_length(histogram_bounds::text::text[], 1) FROM pg_stats \
         WHERE schemaname = current_schema() AND tablename = 'charge_rows' AND attname = 'resource_id'",
    )
    .fetch_one(&mut c)
    .await
    .expect("resource_id statistics");
    assert_eq!(bounds, Some(31), "histogram bounds of the resource ids (statistics target 30)");
    assert!(matches!(s.commit_load(load, &summary_of(&lines)).await.expect("commit"), CommitOutcome::Current { .. }));
    assert_eq!(total(s.as_ref(), "USD").await.to_string(), "12499.75");
}

/// PostgreSQL streams a load's rows through COPY lanes that stay open until every line is
/// staged (one COPY per lane, not one per batch): the rows are invisible until then, a load
/// committed without `lines_staged` still keeps every line, and a failed load's lanes roll
/// back and close their connections (no transaction left open on the charges).
#[tokio::test]
async fn copy_lanes_commit_with_their_load_and_roll_back_with_its_failure_on_postgres() {
    use sqlx::Connection;
    let Some(url) = pg_schema_url().await else {
        eprintln!("skipped: {PG_ENV} is not set");
        return;
    };
    let s = costledger::ledger::open(&url).await.expect("open");
    s.migrate().await.expect("migrate");
    let mut probe = sqlx::PgConnection::connect(&url).await.expect("postgres");
    // Backends holding a lock on this test's own `charge_rows` (its schema): the open lanes.
    // `settle`: poll until none is left (lanes abort on their own tasks), for up to 10 s.
    let mut lanes = async |settle: bool| -> i64 {
        for _ in 0..100 {
            let open: i64 = sqlx::query_scalar(
                "SELECT count(DISTINCT l.pid) FROM pg_locks l JOIN pg_class c ON c.oid = l.relation \
                 WHERE c.relname = 'charge_rows' AND c.relnamespace = current_schema()::regnamespace",
            )
            .fetch_one(&mut probe)
            .await
            .expect("locks");
            if !settle || open == 0 {
                return open;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("lanes still open after 10 s")
    };
    let src = s.ensure_source("t", "test").await.expect("source");
    let lines: Vec<ChargeLine> = (0..3_000).map(|i| line(&format!("0.{i:04}"), "USD")).collect();
    let stage_three_at_once = async |load| {
        let (a, b, c) = tokio::join!(
            s.stage_lines(load, 0, lines[..1_000].to_vec(), None),
            s.stage_lines(load, 1_000, lines[1_000..2_000].to_vec(), None),
            s.stage_lines(load, 2_000, lines[2_000..].to_vec(), None),
        );
        a.and(b).and(c).expect("stage");
    };
    // The rows of a load any transaction can see (whatever the load's state).
    let mut reader = sqlx::PgConnection::connect(&url).await.expect("postgres");
    let mut visible = async |load: i64| -> i64 {
        sqlx::query_scalar("SELECT count(*) FROM charge_rows WHERE load_id = $1")
            .bind(load)
            .fetch_one(&mut reader)
            .await
            .expect("count")
    };

    let failed = s.begin_load(&new_load(src, "a", "k1", "test:1:1")).await.expect("begin");
    stage_three_at_once(failed).await;
    assert_eq!(lanes(false).await, 3, "three batches at once stream through three lanes");
    assert_eq!(visible(failed).await, 0, "nothing is visible while staging");
    assert!(s.fail_load(failed, "boom").await.expect("fail"));
    assert_eq!(lanes(true).await, 0, "a failed load's lanes roll back and close");
    assert_eq!(visible(failed).await, 0);
    // A batch staged into the failed load opens a lane, fails on the load's heartbeat, and its
    // lane is closed with it (no caller is left to fail the load again).
    let err = s.stage_lines(failed, 3_000, lines[..10].to_vec(), None).await.expect_err("a failed load takes no lines");
    assert!(err.to_string().contains("is no longer staging"), "{err}");
    assert_eq!(lanes(true).await, 0, "the lane of a failed batch is closed");
    assert_eq!(visible(failed).await, 0);

    let load = s.begin_load(&new_load(src, "a", "k2", "test:1:1")).await.expect("begin");
    stage_three_at_once(load).await;
    s.commit_load(load, &summary_of(&lines)).await.expect("commit without lines_staged");
    assert_eq!(visible(load).await, 3_000, "every line of every lane");
    assert_eq!(total(s.as_ref(), "USD").await.to_string(), "449.85");
    assert_eq!(lanes(false).await, 0, "the committed lanes are closed");
}
