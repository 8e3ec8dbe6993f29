//! Integrity regressions: no bill doubled, dropped, truncated or poisoned, whatever the import
//! layout, and one behaviour on both backends. Each test is named for the failure it pins.

use std::path::{Path, PathBuf};

use crate::common::keyed::{KeyMode, Keyed};
use crate::common::*;
use costledger::ingest::{LoadOutcome, LoadReport, ingest_source};
use costledger::ledger::{ChargeFilter, LedgerStore, LoadFilter, LoadState};
use costledger_core::{Connector, Context, PeriodWindow};
use costledger_focus::FocusConnector;
use futures::StreamExt;

const HEAD: &str = "BilledCost,BillingCurrency,BillingAccountId,BillingPeriodStart,BillingPeriodEnd,ChargePeriodStart,ChargePeriodEnd,ChargeCategory,ChargeDescription";

fn window() -> PeriodWindow {
    PeriodWindow { from: "2026-10".parse().expect("p"), to: "2026-10".parse().expect("p") }
}

fn write(p: &Path, text: &str) -> PathBuf {
    std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
    std::fs::write(p, text).expect("write");
    p.to_path_buf()
}

fn bill(account: &str, amounts: &[&str]) -> String {
    let mut s = format!("{HEAD}\n");
    for (i, a) in amounts.iter().enumerate() {
        s.push_str(&format!(
            "{a},USD,{account},2026-10-01,2026-11-01,2026-10-0{d},2026-10-0{e},Usage,line {i}\n",
            d = i % 8 + 1,
            e = i % 8 + 2
        ));
    }
    s
}

async fn import(s: &dyn LedgerStore, c: &dyn Connector) -> Vec<LoadReport> {
    ingest_source(s, "import-focus", c, window(), &Context::new("import-focus"), None)
        .await
        .expect("listing")
        .into_iter()
        .map(|r| r.expect("load"))
        .collect()
}

async fn usd(s: &dyn LedgerStore) -> String {
    total(s, "USD").await.to_string()
}

/// `import y/bills/oct.csv`, then `import y`: the file is one scope (its canonical path), so
/// the second import skips it instead of loading the same bill again.
async fn same_bill_by_file_then_directory_counts_once(s: Box<dyn LedgerStore>) {
    let dir = tempfile::tempdir().expect("tmp");
    let f = write(&dir.path().join("y/bills/oct.csv"), &bill("A1", &["10.26", "10.26"]));
    let first = import(s.as_ref(), &FocusConnector::ad_hoc(vec![f.clone()])).await;
    assert!(matches!(first[0].outcome, LoadOutcome::Created { superseded: None, .. }), "{first:?}");
    let second = import(s.as_ref(), &FocusConnector::ad_hoc(vec![dir.path().join("y")])).await;
    assert!(matches!(second[0].outcome, LoadOutcome::Skipped { .. }), "{second:?}");
    // Relative and dotted spellings of the same file are the same scope too.
    let dotted = dir.path().join("y/./bills/../bills/oct.csv");
    let third = import(s.as_ref(), &FocusConnector::ad_hoc(vec![dotted])).await;
    assert!(matches!(third[0].outcome, LoadOutcome::Skipped { .. }), "{third:?}");
    assert_eq!(usd(s.as_ref()).await, "20.52");
    assert_eq!(first[0].scope, std::fs::canonicalize(&f).expect("canon").display().to_string());
}

/// `x/aws/2024-10.csv` then `x/azure/2024-10.csv`: two bills with one file name both stay
/// current (before, the second "restated" the first and the AWS bill left the ledger).
async fn two_bills_with_one_file_name_both_stay_current(s: Box<dyn LedgerStore>) {
    let dir = tempfile::tempdir().expect("tmp");
    let aws = write(&dir.path().join("x/aws/2024-10.csv"), &bill("AWS1", &["5"]));
    let azure = write(&dir.path().join("x/azure/2024-10.csv"), &bill("AZ1", &["7"]));
    let a = import(s.as_ref(), &FocusConnector::ad_hoc(vec![aws])).await;
    let b = import(s.as_ref(), &FocusConnector::ad_hoc(vec![azure])).await;
    assert!(matches!(a[0].outcome, LoadOutcome::Created { superseded: None, .. }));
    assert!(matches!(b[0].outcome, LoadOutcome::Created { superseded: None, .. }), "{b:?}");
    assert_eq!(usd(s.as_ref()).await, "12");
    let current = s.loads(&LoadFilter { state: Some(LoadState::Current), ..Default::default() }).await.expect("l");
    assert_eq!(current.len(), 2);
}

/// The same bytes under another path of the same source (a copy, a re-synced folder) are
/// skipped, and the outcome names the load and scope that already hold them.
async fn same_bytes_under_another_path_are_skipped_and_say_where(s: Box<dyn LedgerStore>) {
    let dir = tempfile::tempdir().expect("tmp");
    let text = bill("A1", &["1.5", "2.25"]);
    let a = write(&dir.path().join("drop/oct.csv"), &text);
    let b = write(&dir.path().join("copy/october-bill.csv"), &text);
    let first = import(s.as_ref(), &FocusConnector::ad_hoc(vec![a.clone()])).await;
    let LoadOutcome::Created { load, .. } = first[0].outcome else { panic!("{first:?}") };
    let second = import(s.as_ref(), &FocusConnector::ad_hoc(vec![b])).await;
    let want_scope = std::fs::canonicalize(&a).expect("canon").display().to_string();
    assert_eq!(second[0].outcome, LoadOutcome::SameBytesElsewhere { existing: load, scope: want_scope });
    assert_eq!(usd(s.as_ref()).await, "3.75");
    // In a configured directory source too: two copies inside it load once.
    let src_dir = dir.path().join("src");
    write(&src_dir.join("2026/oct.csv"), &text);
    write(&src_dir.join("backup/oct.csv"), &text);
    let out =
        ingest_source(s.as_ref(), "dir", &FocusConnector::new(vec![src_dir]), window(), &Context::new("dir"), None)
            .await
            .expect("listing");
    let outcomes: Vec<_> = out.into_iter().map(|r| r.expect("load").outcome).collect();
    assert!(matches!(outcomes[0], LoadOutcome::Created { .. }), "{outcomes:?}");
    assert!(matches!(outcomes[1], LoadOutcome::SameBytesElsewhere { .. }), "{outcomes:?}");
    let dir_total = s.totals(&ChargeFilter { source: Some("dir".into()), ..Default::default() }, &[]).await.expect("t");
    assert_eq!(dir_total[0].billed_cost.to_string(), "3.75");
}

async fn source_total(s: &dyn LedgerStore, source: &str) -> String {
    let f = ChargeFilter { source: Some(source.into()), ..Default::default() };
    s.totals(&f, &[]).await.expect("totals")[0].billed_cost.to_string()
}

/// The key committed is the key of the bytes parsed: when another read of the file hashes
/// differently, the file changed under the reader, and nothing is committed. (The second
/// read runs where the scope already holds a load: a redelivery is then found before the
/// whole file is staged.)
async fn a_file_that_changed_while_read_commits_nothing(s: Box<dyn LedgerStore>) {
    let dir = tempfile::tempdir().expect("tmp");
    let f = write(&dir.path().join("oct.csv"), &bill("A1", &["1"]));
    let c = Keyed::new(FocusConnector::ad_hoc(vec![f.clone()]), KeyMode::Fixed(format!("sha256:{}", "0".repeat(64))));
    // An empty scope is staged alone: its key is the hash of the bytes read.
    let r = ingest_source(s.as_ref(), "drop", &c, window(), &Context::new("drop"), None).await.expect("listing");
    assert!(matches!(r[0].as_ref().expect("first load").outcome, LoadOutcome::Created { .. }), "{r:?}");
    write(&f, &bill("A1", &["4"]));
    let r = ingest_source(s.as_ref(), "drop", &c, window(), &Context::new("drop"), None).await.expect("listing");
    let err = r[0].as_ref().expect_err("changed").to_string();
    assert!(err.contains("the file changed while it was read"), "{err}");
    assert_eq!(source_total(s.as_ref(), "drop").await, "1");
    // The file, read whole, then restates the first bill under the hash of its bytes.
    let ok = ingest_source(s.as_ref(), "drop", &c.inner, window(), &Context::new("drop"), None).await.expect("listing");
    assert!(
        matches!(ok[0].as_ref().expect("load").outcome, LoadOutcome::Created { superseded: Some(_), .. }),
        "{ok:?}"
    );
    assert_eq!(source_total(s.as_ref(), "drop").await, "4");
    let cur = s.loads(&LoadFilter { state: Some(LoadState::Current), ..Default::default() }).await.expect("l");
    assert_eq!(cur.len(), 1);
    assert_eq!(cur[0].delivery_key, costledger_files::file_sha256(&f).expect("hash"));
}

/// A new file is read once (its key is the hash of the bytes parsed); a redelivery of a file
/// already loaded is still skipped without staging it, and a copy under another path is
/// still found as the same bill.
async fn a_new_file_is_hashed_once_and_a_redelivery_is_still_skipped(s: Box<dyn LedgerStore>) {
    let dir = tempfile::tempdir().expect("tmp");
    let text = bill("A1", &["1.5", "1.25"]);
    let f = write(&dir.path().join("drop/oct.csv"), &text);
    let c = Keyed::new(FocusConnector::ad_hoc(vec![f.clone()]), KeyMode::Real);
    let first = import(s.as_ref(), &c).await;
    assert!(matches!(first[0].outcome, LoadOutcome::Created { superseded: None, .. }), "{first:?}");
    assert_eq!(c.key_calls(), 0, "a new file is not hashed by a second read");
    let again = import(s.as_ref(), &c).await;
    assert!(matches!(again[0].outcome, LoadOutcome::Skipped { .. }), "{again:?}");
    assert_eq!(c.key_calls(), 1, "a scope holding a load is hashed beside staging");
    let copy = write(&dir.path().join("copy/oct-again.csv"), &text);
    let c2 = Keyed::new(FocusConnector::ad_hoc(vec![copy]), KeyMode::Real);
    let elsewhere = import(s.as_ref(), &c2).await;
    assert!(matches!(elsewhere[0].outcome, LoadOutcome::SameBytesElsewhere { .. }), "{elsewhere:?}");
    assert_eq!(c2.key_calls(), 0);
    assert_eq!(usd(s.as_ref()).await, "2.75");
    let all = s.loads(&LoadFilter::default()).await.expect("loads");
    assert_eq!(all.len(), 1, "the copy left no load behind: {all:?}");
}

/// A file appended to while its reader is part-way through fails with a clear message; the
/// reader never reports a key for rows it did not all read.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_appended_mid_read_fails_the_stream() {
    let dir = tempfile::tempdir().expect("tmp");
    let amounts: Vec<String> = (0..40_000).map(|i| format!("{}.01", i % 97)).collect();
    let refs: Vec<&str> = amounts.iter().map(String::as_str).collect();
    let f = write(&dir.path().join("big.csv"), &bill("A1", &refs));
    let c = FocusConnector::ad_hoc(vec![f.clone()]);
    let mut cx = Context::new("t");
    cx.batch_rows = 100;
    let ds = c.deliveries(window(), &cx).await.expect("list");
    let mut stream = c.fetch(&ds[0], &cx);
    let first = stream.next().await.expect("a batch").expect("ok");
    assert_eq!(first.lines.len(), 100);
    // The reader is blocked on the bounded channel, far from the end of the 2 MB file.
    std::fs::OpenOptions::new()
        .append(true)
        .open(&f)
        .and_then(|mut w| {
            std::io::Write::write_all(&mut w, b"1,USD,A1,2026-10-01,2026-11-01,2026-10-02,2026-10-03,Usage,late\n")
        })
        .expect("append");
    let mut last = None;
    while let Some(item) = stream.next().await {
        match item {
            Ok(b) => assert!(b.content_key.is_none(), "no key for bytes that changed"),
            Err(e) => last = Some(e.to_string()),
        }
    }
    let e = last.expect("the stream fails");
    assert!(e.contains("the file changed while it was read"), "{e}");
}

/// Year 0, year 9999, a charge ending before it starts, a billing period ending before it
/// starts: each row is quarantined with its reason and amount, the rest loads.
async fn impossible_dates_are_quarantined_at_the_door(s: Box<dyn LedgerStore>) {
    let dir = tempfile::tempdir().expect("tmp");
    let text = format!(
        "{HEAD}\n\
         1,USD,A1,2026-10-01,2026-11-01,2026-10-02,2026-10-03,Usage,good\n\
         2,USD,A1,0000-01-01,0000-02-01,2026-10-02,2026-10-03,Usage,year zero\n\
         4,USD,A1,2026-10-01,2026-11-01,9999-10-02,9999-10-03,Usage,year 9999\n\
         8,USD,A1,2026-10-01,2026-11-01,2026-10-05,2026-10-03,Usage,backwards charge\n\
         16,USD,A1,2026-11-01,2026-10-01,2026-10-02,2026-10-03,Usage,backwards period\n"
    );
    let f = write(&dir.path().join("dates.csv"), &text);
    let r = import(s.as_ref(), &FocusConnector::ad_hoc(vec![f])).await;
    let LoadOutcome::Created { load, .. } = r[0].outcome else { panic!("{r:?}") };
    assert_eq!((r[0].rows, r[0].quarantined), (1, 4));
    assert_eq!(usd(s.as_ref()).await, "1");
    assert_eq!(r[0].quarantined_totals.display(), "USD 30");
    let q = s.quarantine_rows(load).await.expect("q");
    let reasons: Vec<(String, String)> = q.iter().map(|q| (q.location.clone(), q.reason.clone())).collect();
    assert!(reasons[0].0.ends_with("dates.csv:3") && reasons[0].1.contains("BillingPeriodStart"), "{reasons:?}");
    assert!(reasons[0].1.contains("outside the years 2000–2100"), "{reasons:?}");
    assert!(reasons[1].1.contains("ChargePeriodStart 9999-10-02T00:00:00Z is outside"), "{reasons:?}");
    assert!(reasons[2].1.contains("ChargePeriodEnd 2026-10-03T00:00:00Z is before ChargePeriodStart"), "{reasons:?}");
    assert!(reasons[3].1.contains("BillingPeriodEnd 2026-10-01T00:00:00Z is not after"), "{reasons:?}");
    // The bounds are configurable.
    let mut cx = Context::new("wide");
    cx.date_bounds = costledger_core::DateBounds { first_year: 1, last_year: 9999 };
    let g = write(&dir.path().join("wide.csv"), &text.replace("0000-0", "0001-0"));
    let r = ingest_source(s.as_ref(), "wide", &FocusConnector::ad_hoc(vec![g]), window(), &cx, None).await.expect("l");
    let r = r[0].as_ref().expect("load");
    assert_eq!((r.rows, r.quarantined), (3, 2));
}

/// A NUL byte in a field: the row is quarantined alike on both backends (PostgreSQL used to
/// refuse the whole file, SQLite to load it), with the column named.
async fn a_nul_byte_is_quarantined_alike_on_both_backends(s: Box<dyn LedgerStore>) {
    let dir = tempfile::tempdir().expect("tmp");
    let text = format!(
        "{HEAD}\n\
         1,USD,A1,2026-10-01,2026-11-01,2026-10-02,2026-10-03,Usage,fine\n\
         2,USD,A1,2026-10-01,2026-11-01,2026-10-02,2026-10-03,Usage,nul\u{0}here\n\
         3,USD,A1,2026-10-01,2026-11-01,2026-10-02,2026-10-03,Usage,also fine\n"
    );
    let f = write(&dir.path().join("nul.csv"), &text);
    let r = import(s.as_ref(), &FocusConnector::ad_hoc(vec![f])).await;
    let LoadOutcome::Created { load, .. } = r[0].outcome else { panic!("{r:?}") };
    assert_eq!((r[0].rows, r[0].quarantined), (2, 1));
    assert_eq!(usd(s.as_ref()).await, "4");
    let q = s.quarantine_rows(load).await.expect("q");
    assert_eq!(q.len(), 1);
    assert!(q[0].location.ends_with("nul.csv:3"), "{:?}", q[0]);
    assert_eq!(q[0].reason, "column ChargeDescription contains a NUL byte (0x00), which no ledger column can store");
    assert!(q[0].raw.contains("nul\u{2400}here"), "{:?}", q[0].raw);
    assert_eq!(q[0].raw_amount.as_deref(), Some("2"));
}

/// CRLF and CR-only files: the quarantine and every line's `x_source_ref` give the physical
/// line; the quarantine keeps the record's original bytes; a short record's amount is not
/// guessed from the wrong column; an unterminated quote names the line it opened on.
async fn line_numbers_are_physical_lines_for_crlf_and_cr(s: Box<dyn LedgerStore>) {
    let dir = tempfile::tempdir().expect("tmp");
    let rows = [
        "1,USD,A1,2026-10-01,2026-11-01,2026-10-02,2026-10-03,Usage,good",
        "x1,USD,A1,2026-10-01,2026-11-01,2026-10-02,2026-10-03,Usage,  \"bad\"\"amount\"  ",
        "2,USD,A1,2026-10-01,2026-11-01",
        "4,USD,A1,2026-10-01,2026-11-01,2026-10-02,2026-10-03,Usage,\"open",
        "8,USD,A1,2026-10-01,2026-11-01,2026-10-02,2026-10-03,Usage,swallowed",
    ];
    for (name, eol) in [("crlf.csv", "\r\n"), ("cr.csv", "\r"), ("lf.csv", "\n")] {
        let text = format!("{HEAD}{eol}{}{eol}", rows.join(eol));
        let f = write(&dir.path().join(name), &text);
        let r = import(s.as_ref(), &FocusConnector::ad_hoc(vec![f])).await;
        let LoadOutcome::Created { load, .. } = r[0].outcome else { panic!("{r:?}") };
        assert_eq!((r[0].rows, r[0].quarantined), (1, 3), "{name}");
        let good: Vec<_> = s.charges(&ChargeFilter { load: Some(load), ..Default::default() }).collect().await;
        let good = good.into_iter().next().expect("one").expect("row");
        assert!(good.line.source_ref.as_deref().expect("ref").ends_with(&format!("{name}:2")), "{:?}", good.line);
        let q = s.quarantine_rows(load).await.expect("q");
        let at: Vec<String> = q.iter().map(|q| q.location.rsplit(':').next().expect("line").to_string()).collect();
        assert_eq!(at, ["3", "4", "5"], "{name}: {q:?}");
        assert_eq!(q[0].raw, rows[1], "{name}: the original bytes");
        assert_eq!(q[0].raw_amount.as_deref(), Some("x1"));
        assert_eq!(q[1].raw_amount, None, "{name}: a short record's amount is not guessed");
        assert!(
            q[2].reason.contains("a quoted field opened on line 5 is never closed: it swallowed the 2 line break(s)"),
            "{name}: {}",
            q[2].reason
        );
    }
}

/// A file that fails the same way every tick is one `failed` load counting its attempts, not a
/// row per tick; with a back-off (the daemon) it is not retried before its time, unless the
/// file changes.
async fn a_broken_file_is_recorded_once_and_retried_with_backoff(s: Box<dyn LedgerStore>) {
    let dir = tempfile::tempdir().expect("tmp");
    let f = write(&dir.path().join("broken.csv"), "Nothing,Like,A,Bill\n1,2,3,4\n");
    let c = FocusConnector::ad_hoc(vec![f.clone()]);
    let run = |cx: Context| {
        let s = s.as_ref();
        let c = &c;
        async move { ingest_source(s, "drop", c, window(), &cx, None).await.expect("listing") }
    };
    for _ in 0..3 {
        let r = run(Context::new("drop")).await;
        assert!(r[0].is_err(), "{r:?}");
    }
    let failed = s.loads(&LoadFilter { state: Some(LoadState::Failed), ..Default::default() }).await.expect("l");
    assert_eq!(failed.len(), 1, "one row for three identical failures: {failed:?}");
    assert_eq!(failed[0].attempts, 3);
    // The daemon's back-off: not retried now, and nothing recorded.
    let mut cx = Context::new("drop");
    cx.failed_backoff = Some(std::time::Duration::from_secs(3600));
    let r = run(cx.clone()).await;
    let e = r[0].as_ref().expect_err("backing off").to_string();
    assert!(e.contains("not retried before") && e.contains("3 time(s)"), "{e}");
    let failed = s.loads(&LoadFilter { state: Some(LoadState::Failed), ..Default::default() }).await.expect("l");
    assert_eq!((failed.len(), failed[0].attempts), (1, 3));
    // The file changes (still broken, differently): tried at once, a new row.
    std::fs::write(&f, "Still,Not,A,Bill,At,All\n").expect("write");
    let r = run(cx.clone()).await;
    assert!(r[0].as_ref().is_err_and(|e| !e.to_string().contains("not retried")), "{r:?}");
    let failed = s.loads(&LoadFilter { state: Some(LoadState::Failed), ..Default::default() }).await.expect("l");
    assert_eq!(failed.len(), 2, "{failed:?}");
    // Fixed: it loads at once, whatever the back-off.
    std::fs::write(&f, bill("A1", &["1.25"])).expect("write");
    let r = run(cx).await;
    assert!(matches!(r[0].as_ref().expect("load").outcome, LoadOutcome::Created { .. }), "{r:?}");
}

/// `running_runs` lists what is still running with its owner; `abandon_run` closes one with
/// the reason, once.
async fn runs_left_running_can_be_closed_as_abandoned(s: Box<dyn LedgerStore>) {
    let a = s.start_run("ingest", Some("drop")).await.expect("run");
    let b = s.start_run("ingest", Some("other")).await.expect("run");
    let running = s.running_runs().await.expect("running");
    assert_eq!(running.iter().map(|r| r.0).collect::<Vec<_>>(), [a, b]);
    let me = format!(":{}:", std::process::id());
    assert!(running.iter().all(|r| r.1.as_deref().is_some_and(|o| o.contains(&me))), "{running:?}");
    assert!(s.abandon_run(b, "abandoned: test").await.expect("abandon"));
    assert!(!s.abandon_run(b, "abandoned: again").await.expect("abandon"), "only a running run is closed");
    let runs = s.runs(10).await.expect("runs");
    let get = |id: i64| runs.iter().find(|r| r.id == id).expect("run").clone();
    assert_eq!(get(b).outcome.status.as_str(), "abandoned");
    assert_eq!(get(b).outcome.error.as_deref(), Some("abandoned: test"));
    assert!(get(b).finished_at.is_some());
    assert_eq!(get(a).outcome.status.as_str(), "running");
}

conformance!(
    a_broken_file_is_recorded_once_and_retried_with_backoff,
    runs_left_running_can_be_closed_as_abandoned,
    same_bill_by_file_then_directory_counts_once,
    two_bills_with_one_file_name_both_stay_current,
    same_bytes_under_another_path_are_skipped_and_say_where,
    a_file_that_changed_while_read_commits_nothing,
    a_new_file_is_hashed_once_and_a_redelivery_is_still_skipped,
    impossible_dates_are_quarantined_at_the_door,
    a_nul_byte_is_quarantined_alike_on_both_backends,
    line_numbers_are_physical_lines_for_crlf_and_cr,
    gcp_credits_blank_lines_and_nested_extracts_are_read_exactly,
    gcp_dotted_csv_with_python_credits_loads_exactly,
);

fn gcp_json(cost: &str, credits: &str) -> String {
    format!(
        r#"{{"billing_account_id":"0123AB","service":{{"id":"6F81","description":"Compute Engine"}},"sku":{{"id":"2E27","description":"N2 core"}},"usage_start_time":"2024-03-01 00:00:00 UTC","usage_end_time":"2024-03-01 01:00:00 UTC","project":{{"id":"payments-prod","name":"Payments"}},"cost":{cost},"currency":"USD","credits":{credits},"invoice":{{"month":"202403"}},"cost_type":"regular"}}"#
    )
}

async fn gcp_import(s: &dyn LedgerStore, paths: Vec<PathBuf>) -> Vec<LoadReport> {
    let c = costledger_gcp::GcpFileConnector::ad_hoc(paths);
    ingest_source(s, "import-gcp-export", &c, window(), &Context::new("import-gcp-export"), None)
        .await
        .expect("listing")
        .into_iter()
        .map(|r| r.expect("load"))
        .collect()
}

/// GCP extracts: credits as one object are loaded (they were dropped with exit 0); a
/// malformed credit quarantines its row with the row's cost; a leading blank line does not
/// turn JSON lines into "CSV without invoice_month"; `.json` files in subdirectories and with
/// colons in their names are found.
async fn gcp_credits_blank_lines_and_nested_extracts_are_read_exactly(s: Box<dyn LedgerStore>) {
    let dir = tempfile::tempdir().expect("tmp");
    let root = dir.path().join("extracts");
    let object =
        gcp_json("10.5", r#"{"name":"FreeTrial","amount":-1.25,"full_name":null,"id":"ft","type":"FREE_TIER"}"#);
    let array = gcp_json("2", r#"[{"name":"SUD","amount":-0.5,"type":"SUSTAINED_USAGE_DISCOUNT"}]"#);
    let bad = gcp_json("7", r#"[{"name":"broken"}]"#);
    let not_a_list = gcp_json("3", r#""oops""#);
    write(&root.join("2024/03/part:000.json"), &format!("\n\n{object}\n\n{array}\n"));
    write(&root.join("2024/03/deeper/part:001.json"), &format!("{bad}\r\n{not_a_list}\r\n"));
    let r = gcp_import(s.as_ref(), vec![root.clone()]).await;
    assert_eq!(r.len(), 2, "both nested .json extracts found: {r:?}");
    let (good, broken) = (&r[1], &r[0]);
    assert!(good.scope.ends_with("03/part:000.json") && broken.scope.ends_with("deeper/part:001.json"), "{r:?}");
    assert_eq!((good.rows, good.quarantined), (4, 0), "{r:?}");
    assert_eq!(good.totals.display(), "USD 10.75");
    assert_eq!((broken.rows, broken.quarantined), (0, 2), "{r:?}");
    // Source total = ledger + quarantine: the quarantined rows keep their cost.
    assert_eq!(broken.quarantined_totals.display(), "USD 10");
    let loads = s.loads(&LoadFilter { state: Some(LoadState::Current), ..Default::default() }).await.expect("l");
    let second = loads.iter().find(|l| l.scope.ends_with("part:001.json")).expect("load");
    let q = s.quarantine_rows(second.id).await.expect("q");
    assert!(q[0].reason.contains("credit 1 has no amount"), "{:?}", q[0]);
    assert!(q[0].location.ends_with("part:001.json:1"), "{:?}", q[0]);
    assert!(q[1].reason.contains("credits is neither a list of credits nor one credit"), "{:?}", q[1]);
    assert_eq!(q[1].raw_amount.as_deref(), Some("3"));
}

/// A CSV extract with the export's dotted column names, labels as JSON and credits as a
/// Python literal (what nise and Koku write) loads, amounts exact from their text.
async fn gcp_dotted_csv_with_python_credits_loads_exactly(s: Box<dyn LedgerStore>) {
    let dir = tempfile::tempdir().expect("tmp");
    let text = "billing_account_id,service.id,service.description,sku.id,sku.description,usage_start_time,usage_end_time,project.id,project.name,labels,location.region,cost,currency,usage.amount,usage.unit,usage.amount_in_pricing_units,usage.pricing_unit,credits,invoice.month,cost_type\n\
        0123AB,6F81,Compute Engine,2E27,N2 core,2024-03-01T00:00:00Z,2024-03-01T01:00:00Z,payments-prod,Payments,\"[{'key': 'team', 'value': 'payments'}]\",us-central1,0.731234,USD,3600,seconds,1,hour,\"[{'name': 'FreeTrial', 'amount': -5e-06, 'full_name': None, 'id': 'ft', 'type': 'FREE_TIER'}]\",202403,regular\n\
        0123AB,6F81,Compute Engine,2E27,N2 core,2024-03-01T01:00:00Z,2024-03-01T02:00:00Z,payments-prod,Payments,{},us-central1,1.1,USD,3600,seconds,1,hour,[],202403,regular\n";
    let f = write(&dir.path().join("nise-gcp.csv"), text);
    let r = gcp_import(s.as_ref(), vec![f]).await;
    assert_eq!((r[0].rows, r[0].quarantined), (3, 0), "{r:?}");
    assert_eq!(r[0].totals.display(), "USD 1.831229");
    let rows: Vec<_> = s.charges(&ChargeFilter::default()).collect().await;
    let lines: Vec<_> = rows.into_iter().map(|r| r.expect("row").line).collect();
    let credit = lines.iter().find(|l| l.billed_cost.is_sign_negative()).expect("credit line");
    assert_eq!(credit.billed_cost.to_string(), "-0.000005");
    assert_eq!(lines[0].tags.get("team").map(String::as_str), Some("payments"));
    assert_eq!(lines[0].region_id.as_deref(), Some("us-central1"));
}
