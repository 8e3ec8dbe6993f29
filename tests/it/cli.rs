//! End-to-end tests of the `costledger` binary on real SQLite (and PostgreSQL when
//! COSTLEDGER_TEST_POSTGRES_URL is set).

use std::io::Write;
use std::path::Path;
use std::str::FromStr;

use crate::common::*;
use costledger::ledger::{self, LoadFilter, LoadState};
use costledger_core::Totals;
use rust_decimal::Decimal;

const HEAD: &str = "BilledCost,BillingCurrency,BillingAccountId,BillingPeriodStart,BillingPeriodEnd,ChargePeriodStart,ChargePeriodEnd,ChargeCategory,ChargeDescription";

fn row(amount: &str, currency: &str, desc: &str) -> String {
    format!("{amount},{currency},A1,2026-10-01,2026-11-01,2026-10-02,2026-10-03,Usage,{desc}\n")
}

fn export(db: &str) -> String {
    let (code, out, err) = run(db, &["export", "csv"]);
    assert_eq!(code, 0, "export failed: {err}");
    out
}

async fn loads(db: &str) -> Vec<costledger::ledger::LoadRow> {
    let s = ledger::open(db).await.expect("open");
    s.loads(&LoadFilter::default()).await.expect("loads")
}

#[test]
fn example_config_parses_and_validates() {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/costledger.example.yaml");
    let c = costledger::config::Config::load(&p).expect("example config is valid");
    assert_eq!(
        c.sources.iter().map(|s| s.params.kind()).collect::<Vec<_>>(),
        [
            "focus",
            "aws_cost_explorer",
            "aws_cur",
            "aws_data_exports",
            "azure_cost_query",
            "azure_cost_export",
            "gcp_billing_export",
            "oci_usage_api",
            "oci_cost_report"
        ]
    );
    assert_eq!(c.retention.superseded_loads_days, 90);
    assert_eq!(c.allocation.owners, ["payments", "search", "platform", "data"]);
    assert_eq!(c.allocation.rules.len(), 4);
    assert_eq!(c.allocation.owner_tags, ["team", "cost-center", "owner"]);
    assert_eq!(c.checks.cross_source_tolerance, Decimal::from_str("0.01").expect("d"));
    assert_eq!(c.report.schedule, "0 0 6 * * Mon");
    let out = bin().arg("--config").arg(&p).arg("check-config").output().expect("run");
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("OK (9 source(s)"));
}

#[test]
fn check_config_reports_every_problem_and_exits_2() {
    let dir = tempfile::tempdir().expect("tmp");
    let p = dir.path().join("bad.yaml");
    std::fs::write(&p, "sources:\n  - name: x\n    type: focus\n  - name: y\n    type: nope\n    path: /a\nretention: { superseded_loads_days: -1 }\n")
        .expect("write");
    let out = bin().arg("--config").arg(&p).arg("check-config").output().expect("run");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2));
    assert!(err.contains("3 problem(s)"), "{err}");
    assert!(err.contains("sources[0].path: is required"), "{err}");
    assert!(err.contains("sources[1].type: unknown source type 'nope'"), "{err}");
    assert!(err.contains("retention: invalid value"), "{err}");
}

#[test]
fn importing_the_same_file_twice_changes_nothing() {
    let dir = tempfile::tempdir().expect("tmp");
    let db = sqlite_url(dir.path());
    let f = fixture("focus/focus_sample.csv");
    let (code, out, err) = run(&db, &["import", "--format", "focus", f.to_str().expect("utf8")]);
    assert_eq!(code, 0, "{err}");
    // An ad hoc import's scope is the file's canonical absolute path.
    let scope = std::fs::canonicalize(&f).expect("canon").display().to_string();
    assert!(
        out.contains(&format!("loaded    {scope} → load 1: 1000 rows, 0 quarantined; BilledCost USD 20.52022672899")),
        "{out}"
    );
    let first = export(&db);
    let (code, out, _) = run(&db, &["import", "--format", "focus", f.to_str().expect("utf8")]);
    assert_eq!(code, 0);
    assert!(out.contains(&format!("skipped   {scope} (already current as load 1)")), "{out}");
    assert_eq!(export(&db), first, "a re-delivered file must change nothing");
    assert_eq!(first.lines().count(), 1001);
    let (_, out, _) = run(&db, &["loads"]);
    assert_eq!(out.lines().count(), 2, "{out}");
    let (_, out, _) = run(&db, &["runs"]);
    assert_eq!(out.lines().count(), 2, "{out}");
    // The same bytes under another name: skipped, saying where they already are.
    let copy = dir.path().join("copy-of-sample.csv");
    std::fs::copy(&f, &copy).expect("copy");
    let (code, out, _) = run(&db, &["import", "--format", "focus", copy.to_str().expect("utf8")]);
    assert_eq!(code, 0);
    assert!(out.contains(&format!("(the same bytes are already current as load 1, {scope})")), "{out}");
    assert_eq!(export(&db), first, "the same bytes under another name change nothing");
}

#[test]
fn a_restated_file_replaces_the_old_one_and_loads_lists_both() {
    let dir = tempfile::tempdir().expect("tmp");
    let db = sqlite_url(dir.path());
    let f = dir.path().join("bill.csv");
    std::fs::write(&f, format!("{HEAD}\n{}{}", row("10", "USD", "a"), row("5.5", "USD", "b"))).expect("w");
    assert_eq!(run(&db, &["import", "--format", "focus", f.to_str().expect("p")]).0, 0);
    std::fs::write(&f, format!("{HEAD}\n{}{}", row("10", "USD", "a"), row("6.25", "USD", "b"))).expect("w");
    let (code, out, _) = run(&db, &["import", "--format", "focus", f.to_str().expect("p")]);
    assert_eq!(code, 0);
    let scope = std::fs::canonicalize(&f).expect("canon").display().to_string();
    assert!(out.contains(&format!("restated  {scope} → load 2 replaces load 1")), "{out}");
    let (_, out, _) = run(&db, &["loads"]);
    assert!(out.contains("superseded") && out.contains("superseded by load 2"), "{out}");
    assert!(out.lines().any(|l| l.contains("current") && l.contains("USD 16.25")), "{out}");
    let csv = export(&db);
    assert_eq!(csv.lines().count(), 3);
    assert!(csv.contains(",6.25,") && !csv.contains(",5.5,"));
}

#[tokio::test]
async fn bad_input_gives_a_clear_message_or_quarantine_never_a_partial_load() {
    struct Case {
        name: &'static str,
        file: &'static str,
        bytes: Vec<u8>,
        exit: i32,
        says: &'static str,
        quarantined: u64,
    }
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(HEAD.as_bytes()).expect("w");
    gz.write_all(b"\n").expect("w");
    for i in 0..5000 {
        gz.write_all(row(&format!("{i}.25"), "USD", "line").as_bytes()).expect("w");
    }
    let full = gz.finish().expect("gz");
    let mut utf8 = format!("{HEAD}\n").into_bytes();
    utf8.extend_from_slice(b"1,USD,A1,2026-10-01,2026-11-01,2026-10-02,2026-10-03,Usage,caf\xe9\n");
    utf8.extend_from_slice(row("2", "USD", "ok").as_bytes());
    let cases = vec![
        Case {
            name: "truncated gzip",
            file: "t.csv.gz",
            bytes: full[..full.len() / 2].to_vec(),
            exit: 2,
            says: "truncated or corrupt",
            quarantined: 0,
        },
        Case {
            name: "non-numeric amount",
            file: "n.csv",
            bytes: format!("{HEAD}\n{}{}", row("1,0", "USD", "x").replacen("1,0", "\"1,0\"", 1), row("2", "USD", "ok"))
                .into_bytes(),
            exit: 0,
            says: "1 quarantined",
            quarantined: 1,
        },
        Case {
            name: "missing required column",
            file: "m.csv",
            bytes: b"BillingCurrency,ChargeCategory\nUSD,Usage\n".to_vec(),
            exit: 2,
            says: "missing required FOCUS column(s): BilledCost, BillingAccountId",
            quarantined: 0,
        },
        Case { name: "invalid UTF-8", file: "u.csv", bytes: utf8, exit: 0, says: "1 quarantined", quarantined: 1 },
        Case {
            name: "empty file",
            file: "e.csv",
            bytes: Vec::new(),
            exit: 2,
            says: "the file is empty (no header line)",
            quarantined: 0,
        },
        Case {
            name: "10 MB field",
            file: "b.csv",
            bytes: format!("{HEAD}\n{}{}", row("1", "USD", &"y".repeat(10 << 20)), row("2", "USD", "ok")).into_bytes(),
            exit: 0,
            says: "1 quarantined",
            quarantined: 1,
        },
        Case {
            name: "header only",
            file: "h.csv",
            bytes: format!("{HEAD}\n").into_bytes(),
            exit: 0,
            says: "has a header but no data rows",
            quarantined: 0,
        },
        Case {
            name: "duplicate headers",
            file: "d.csv",
            bytes: format!("{HEAD},BillingCurrency\n").into_bytes(),
            exit: 2,
            says: "duplicate column 'BillingCurrency' (columns 2 and 10)",
            quarantined: 0,
        },
        Case {
            name: "unknown currency",
            file: "c.csv",
            bytes: format!("{HEAD}\n{}{}", row("1", "XYZ", "x"), row("2", "USD", "ok")).into_bytes(),
            exit: 0,
            says: "1 quarantined",
            quarantined: 1,
        },
    ];
    for c in cases {
        let dir = tempfile::tempdir().expect("tmp");
        let db = sqlite_url(dir.path());
        // A good bill first, so "unchanged" means something.
        let good = dir.path().join("good.csv");
        std::fs::write(&good, format!("{HEAD}\n{}", row("100", "USD", "good"))).expect("w");
        assert_eq!(run(&db, &["import", "--format", "focus", good.to_str().expect("p")]).0, 0);
        let before = export(&db);
        let p = dir.path().join(c.file);
        std::fs::write(&p, &c.bytes).expect("w");
        let (code, out, err) = run(&db, &["import", "--format", "focus", p.to_str().expect("p")]);
        let all = format!("{out}{err}");
        assert_eq!(code, c.exit, "{}: exit code\n{all}", c.name);
        assert!(all.contains(c.says), "{}: expected '{}' in\n{all}", c.name, c.says);
        assert!(!all.contains("panicked"), "{}: panicked\n{all}", c.name);
        let after = export(&db);
        if c.exit == 2 {
            assert!(all.contains(c.file), "{}: the message names the file\n{all}", c.name);
            assert_eq!(after, before, "{}: a failed file must leave the ledger unchanged", c.name);
            let l = loads(&db).await;
            assert!(l.iter().all(|l| l.state != LoadState::Staging), "{}: no staging load left", c.name);
        } else {
            let l = loads(&db).await;
            let last = l.last().expect("load");
            assert_eq!(last.quarantined_count, c.quarantined, "{}", c.name);
            if c.quarantined > 0 {
                let (_, q, _) = run(&db, &["quarantine", "--load", &last.id.to_string()]);
                assert!(q.contains(&format!("{}:2: ", p.display())), "{}: quarantine names file:line\n{q}", c.name);
            }
        }
    }
}

#[tokio::test]
async fn source_total_equals_ledger_plus_quarantine() {
    let dir = tempfile::tempdir().expect("tmp");
    let db = sqlite_url(dir.path());
    let f = dir.path().join("mixed.csv");
    let mut text = format!("{HEAD}\n");
    let mut source = Totals::default();
    for i in 0..300u32 {
        let amount = format!("{}.{:04}", i * 7, i);
        // Every 17th row is bad (unknown category), every 23rd has a bad currency, but their
        // amounts still count in the source total.
        let line = row(&amount, if i % 23 == 0 { "EURO" } else { "EUR" }, "x");
        let line = if i % 17 == 0 { line.replace(",Usage,", ",Support,") } else { line };
        source.add(if i % 23 == 0 { "EURO" } else { "EUR" }, Decimal::from_str(&amount).expect("d")).expect("add");
        text.push_str(&line);
    }
    std::fs::write(&f, text).expect("w");
    let (code, out, err) = run(&db, &["import", "--format", "focus", f.to_str().expect("p")]);
    assert_eq!(code, 0, "{out}{err}");
    let l = loads(&db).await;
    let load = &l[0];
    assert_eq!(load.row_count + load.quarantined_count, 300);
    assert!(load.quarantined_count > 20);
    let mut ledger_plus_quarantine = load.totals.clone();
    ledger_plus_quarantine.merge(&load.quarantined_totals).expect("merge");
    assert_eq!(ledger_plus_quarantine, source, "source total = charges + quarantine");
    // And the ledger's own aggregation agrees with the load's totals.
    let s = ledger::open(&db).await.expect("open");
    let t = s.totals(&Default::default(), &[]).await.expect("t");
    assert_eq!(t[0].billed_cost, load.totals.get("EUR"));
}

#[test]
fn export_is_deterministic_neutralised_and_filtered() {
    let dir = tempfile::tempdir().expect("tmp");
    let db = sqlite_url(dir.path());
    let f = dir.path().join("x.csv");
    std::fs::write(
        &f,
        format!(
            "{HEAD}\n{}{}{}",
            row("-1.50", "USD", "=HYPERLINK(\"http://evil\")"),
            row("2", "USD", "@SUM(A1)"),
            row("3.0E-3", "USD", "plain")
        ),
    )
    .expect("w");
    assert_eq!(run(&db, &["import", "--format", "focus", f.to_str().expect("p")]).0, 0);
    let out_file = dir.path().join("finance.csv");
    let (code, _, err) = run(&db, &["export", "csv", "--out", out_file.to_str().expect("p")]);
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("exported 3 lines (BilledCost: USD 0.503)"), "{err}");
    let a = std::fs::read_to_string(&out_file).expect("read");
    assert_eq!(a, export(&db), "file and stdout exports are the same bytes");
    assert!(a.contains(",-1.5,"), "amounts stay numeric: {a}");
    assert!(a.contains(",0.003,"), "no exponent in output: {a}");
    assert!(a.contains("\"'=HYPERLINK(\"\"http://evil\"\")\""), "{a}");
    assert!(a.contains(",'@SUM(A1),"), "{a}");
    assert!(a.contains("\r\n"), "RFC 4180 line ends");
    let (_, none, _) = run(&db, &["export", "csv", "--from", "2026-11-01"]);
    assert_eq!(none.lines().count(), 1, "only the header: {none}");
    let (_, oct, _) = run(&db, &["export", "csv", "--from", "2026-10-01", "--to", "2026-11-01"]);
    assert_eq!(oct.lines().count(), 4);
}

#[test]
fn sample_is_deterministic_and_its_totals_match_the_ledger() {
    let dir = tempfile::tempdir().expect("tmp");
    let a = dir.path().join("a.csv.gz");
    let b = dir.path().join("b.csv.gz");
    let (code, out_a, _) =
        run("sqlite::memory:", &["sample", "--rows", "3000", "--seed", "9", "--out", a.to_str().expect("p")]);
    assert_eq!(code, 0);
    run("sqlite::memory:", &["sample", "--rows", "3000", "--seed", "9", "--out", b.to_str().expect("p")]);
    assert_eq!(std::fs::read(&a).expect("a"), std::fs::read(&b).expect("b"));
    let totals = out_a.split("BilledCost: ").nth(1).expect("totals printed").trim().trim_end_matches(')').to_string();
    let db = sqlite_url(dir.path());
    let (code, out, _) = run(&db, &["import", "--format", "focus", a.to_str().expect("p")]);
    assert_eq!(code, 0);
    assert!(out.contains(&format!("3000 rows, 0 quarantined; BilledCost {totals}")), "{out}\n{totals}");
}

#[test]
fn demo_runs_and_is_idempotent() {
    let dir = tempfile::tempdir().expect("tmp");
    let d = dir.path().join("demo");
    let out = bin().args(["demo", "--rows", "2000", "--dir", d.to_str().expect("p")]).output().expect("run");
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{text}{}", String::from_utf8_lossy(&out.stderr));
    assert!(text.contains("loaded    focus-sample-data-1.0.csv"), "{text}");
    assert!(text.contains("4. reconcile"), "{text}");
    assert!(text.contains("conservation: allocated + shared + unallocated = billed, exactly"), "{text}");
    assert!(text.contains("5. weekly governance report for 2026-W43"), "{text}");
    assert!(text.contains("6. finance CSV with x_owner and x_allocation_reason"), "{text}");
    assert!(text.contains("7. FOCUS 1.2 dataset"), "{text}");
    let focus1 = std::fs::read(d.join("focus-1.2.csv")).expect("focus csv");
    let parquet1 = std::fs::read(d.join("focus-1.2.parquet")).expect("focus parquet");
    assert!(focus1.starts_with(b"AvailabilityZone,BilledCost,"), "every FOCUS column, in the specification's order");
    // FOCUS 1.3 with the demo's shared tax split per team.
    assert!(text.contains("FOCUS 1.3 dataset,"), "{text}");
    let focus13 = std::fs::read_to_string(d.join("focus-1.3.csv")).expect("focus 1.3 csv");
    assert!(focus13.starts_with("AllocatedMethodDetails,AllocatedMethodId,"), "{focus13:.200}");
    assert!(focus13.contains("shared:proportional:rule:tax-shared"), "the demo's tax is split per owner");
    let html = d.join("reports/weekly-2026-W43.html");
    assert!(text.contains(&format!("open the HTML report in a browser: {}", html.display())), "{text}");
    let csv1 = std::fs::read(d.join("finance.csv")).expect("csv");
    let md1 = std::fs::read(d.join("reports/weekly-2026-W43.md")).expect("md");
    let html1 = std::fs::read(&html).expect("html");
    let out = bin().args(["demo", "--rows", "2000", "--dir", d.to_str().expect("p")]).output().expect("run");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("skipped   synthetic-2026-10.csv"), "{text}");
    assert!(text.contains("(allocation unchanged)"), "{text}");
    assert_eq!(std::fs::read(d.join("finance.csv")).expect("csv"), csv1);
    assert_eq!(std::fs::read(d.join("reports/weekly-2026-W43.md")).expect("md"), md1, "same ledger, same bytes");
    assert_eq!(std::fs::read(&html).expect("html"), html1, "same ledger, same bytes");
    assert_eq!(std::fs::read(d.join("focus-1.2.csv")).expect("focus csv"), focus1, "same ledger, same bytes");
    assert_eq!(std::fs::read(d.join("focus-1.2.parquet")).expect("parquet"), parquet1, "same ledger, same bytes");
    assert_eq!(
        std::fs::read_to_string(d.join("focus-1.3.csv")).expect("focus 1.3"),
        focus13,
        "same ledger, same bytes"
    );
}

#[test]
fn export_is_byte_identical_on_sqlite_and_postgres() {
    let Some(_) = pg_url() else {
        eprintln!("skipped: {PG_ENV} is not set");
        return;
    };
    let rt = tokio::runtime::Runtime::new().expect("rt");
    let pg = rt.block_on(pg_schema_url()).expect("pg");
    let dir = tempfile::tempdir().expect("tmp");
    let lite = sqlite_url(dir.path());
    let sample = dir.path().join("synthetic.csv");
    run(&lite, &["sample", "--rows", "5000", "--seed", "3", "--out", sample.to_str().expect("p")]);
    let focus = fixture("focus/focus_sample.csv");
    for db in [&lite, &pg] {
        for f in [&focus, &sample] {
            let (code, out, err) = run(db, &["import", "--format", "focus", "--source", "s", f.to_str().expect("p")]);
            assert_eq!(code, 0, "{out}{err}");
        }
    }
    let a = export(&lite);
    let b = export(&pg);
    assert_eq!(a.lines().count(), 6001);
    assert!(a == b, "SQLite and PostgreSQL exports differ");
}

#[test]
fn errors_name_what_and_where_and_exit_2() {
    let (code, _, err) = run("mysql://x", &["loads"]);
    assert_eq!(code, 2);
    assert!(err.contains("unsupported database URL scheme 'mysql'"), "{err}");
    let dir = tempfile::tempdir().expect("tmp");
    let db = sqlite_url(dir.path());
    let (code, _, err) = run(&db, &["import", "--format", "focus", "/nonexistent/bill.csv"]);
    assert_eq!(code, 2);
    assert!(err.contains("/nonexistent/bill.csv"), "{err}");
    let (code, _, err) = run("postgres://nobody:sekret@127.0.0.1:1/x", &["loads"]);
    assert_eq!(code, 2);
    assert!(err.contains("postgres://nobody:***@127.0.0.1:1/x"), "{err}");
    assert!(!err.contains("sekret"), "passwords are never printed: {err}");
}

// --- Reconcile, findings, report, export with allocation (issue 8) ---------------------------

fn reconcile_fixture(db: &str) -> std::path::PathBuf {
    let bill = fixture("reconcile/bill-2026-10.csv");
    let (code, _, err) = run(db, &["import", "--format", "focus", "--source", "aws", bill.to_str().expect("utf8")]);
    assert_eq!(code, 0, "{err}");
    fixture("reconcile/costledger.yaml")
}

#[test]
fn reconcile_exits_1_with_findings_and_stores_them() {
    let dir = tempfile::tempdir().expect("tmp");
    let db = sqlite_url(dir.path());
    let cfg = reconcile_fixture(&db);
    let cfg = cfg.to_str().expect("utf8");
    let (code, out, err) = run(&db, &["--config", cfg, "reconcile"]);
    assert_eq!(code, 1, "findings need attention: {out}{err}");
    assert!(
        out.contains("period 2026-10 (allocation recomputed): billed EUR 91, USD 1176.0700251999999999993"),
        "{out}"
    );
    assert!(out.contains("conservation: allocated + shared + unallocated = billed, exactly"), "{out}");
    assert!(out.contains("[tag_coverage] 2026-10 account ea-1 EUR"), "{out}");
    let (code, again, _) = run(&db, &["--config", cfg, "reconcile"]);
    assert_eq!(code, 1);
    assert!(again.contains("(allocation unchanged)"), "{again}");
    let (code, listed, _) = run(&db, &["findings", "--period", "2026-10"]);
    assert_eq!(code, 1);
    assert!(listed.contains("[tag_coverage] 2026-10 account ea-1 EUR"), "{listed}");
    // A config with no findings to make: lower target, high anomaly thresholds.
    let quiet = dir.path().join("quiet.yaml");
    let text = std::fs::read_to_string(cfg).expect("read").replace(
        "checks:\n  anomaly_percent: 50\n  anomaly_min_amount: \"20\"",
        "checks:\n  anomaly_min_amount: 1000000\n  tag_coverage_target_percent: 0",
    );
    std::fs::write(&quiet, text).expect("write");
    let (code, out, err) = run(&db, &["--config", quiet.to_str().expect("utf8"), "reconcile"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("findings: 0"), "{out}");
}

#[test]
fn reconcile_with_an_invoice_file() {
    let dir = tempfile::tempdir().expect("tmp");
    let db = sqlite_url(dir.path());
    let cfg = reconcile_fixture(&db);
    let inv = dir.path().join("invoices.csv");
    std::fs::write(
        &inv,
        "invoice_id,billing_account_id,billing_period,currency,amount\r\n\
         INV-2026-10-A,111111111111,2026-10,USD,1176.0700251999999999993\r\n\
         EA-INV-10,ea-1,2026-10,EUR,91.01\r\n",
    )
    .expect("write");
    let (_, out, err) =
        run(&db, &["--config", cfg.to_str().expect("utf8"), "reconcile", "--invoices", inv.to_str().expect("utf8")]);
    assert!(out.contains("stored 2 invoice total(s)"), "{out}{err}");
    let invoice_findings: Vec<&str> = out.lines().filter(|l| l.contains("[invoice]")).collect();
    assert_eq!(invoice_findings.len(), 1, "{out}");
    assert!(
        out.contains("invoice check: 2026-10 invoice INV-2026-10-A matches the ledger: 1176.0700251999999999993 USD"),
        "a match is confirmed: {out}"
    );
    assert!(
        invoice_findings[0].contains(
            "invoice EA-INV-10: the ledger has 91 EUR (exactly 91, compared at the invoice's 2 decimal places), the invoice says 91.01 EUR (difference -0.01, tolerance 0)"
        ),
        "{out}"
    );
    // A bad file: every problem, nothing stored, exit 2.
    std::fs::write(&inv, "invoice_id,billing_account_id,billing_period,currency,amount\nX,1,2026-1,USD,abc\n")
        .expect("w");
    let (code, _, err) =
        run(&db, &["--config", cfg.to_str().expect("utf8"), "reconcile", "--invoices", inv.to_str().expect("utf8")]);
    assert_eq!(code, 2);
    assert!(err.contains("2 problem(s); nothing was stored"), "{err}");
    assert!(err.contains("line 2: billing_period '2026-1' is not YYYY-MM"), "{err}");
    assert!(err.contains("line 2: amount 'abc' is not a decimal number"), "{err}");
}

#[test]
fn export_carries_owner_and_reason() {
    let dir = tempfile::tempdir().expect("tmp");
    let db = sqlite_url(dir.path());
    let cfg = reconcile_fixture(&db);
    let (code, out, err) = run(&db, &["--config", cfg.to_str().expect("utf8"), "export", "csv"]);
    assert_eq!(code, 0, "{err}");
    let mut rdr = csv::Reader::from_reader(out.as_bytes());
    let h = rdr.headers().expect("h").clone();
    let col = |n: &str| h.iter().position(|x| x == n).expect("column");
    let (owner, reason, res, cat) =
        (col("x_owner"), col("x_allocation_reason"), col("ResourceId"), col("ChargeCategory"));
    let mut seen = std::collections::BTreeMap::new();
    for r in rdr.records() {
        let r = r.expect("row");
        seen.insert((r[res].to_string(), r[cat].to_string()), (r[owner].to_string(), r[reason].to_string()));
    }
    let get = |res: &str, cat: &str| seen.get(&(res.to_string(), cat.to_string())).cloned().expect("row");
    assert_eq!(get("db-data", "Usage"), ("data".into(), "tag:team".into()));
    assert_eq!(get("i-stage-0", "Usage"), ("platform".into(), "rule:staging".into()));
    assert_eq!(get("", "Tax"), ("shared".into(), "shared:proportional:rule:tax".into()));
    assert_eq!(get("log-group-x", "Usage"), ("".into(), "unknown_owner".into()));
    assert_eq!(get("dd-1", "Usage"), ("".into(), "untaggable_charge".into()));
}

#[test]
fn report_weekly_writes_markdown_html_and_csv() {
    let dir = tempfile::tempdir().expect("tmp");
    let db = sqlite_url(dir.path());
    let cfg = reconcile_fixture(&db);
    let out_dir = dir.path().join("reports");
    let (code, out, err) = run(
        &db,
        &[
            "--config",
            cfg.to_str().expect("utf8"),
            "report",
            "weekly",
            "--week",
            "2026-W43",
            "--out",
            out_dir.to_str().expect("utf8"),
        ],
    );
    assert_eq!(code, 0, "{out}{err}");
    let md = std::fs::read(out_dir.join("weekly-2026-W43.md")).expect("md");
    assert_eq!(md, std::fs::read(fixture("../golden/weekly-2026-W43.md")).expect("golden"), "CLI output = golden");
    let html = std::fs::read_to_string(out_dir.join("weekly-2026-W43.html")).expect("html");
    assert!(html.starts_with("<!DOCTYPE html>") && html.contains("<svg"));
    assert!(out_dir.join("weekly-2026-W43-csv/unallocated_by_reason.csv").exists());
    let (code, _, err) = run(&db, &["report", "weekly", "--week", "2026-W99"]);
    assert_eq!(code, 2);
    assert!(err.contains("'2026-W99' is not an ISO week such as 2026-W47"), "{err}");
    // The report remembered week 43; reconcile sees no change.
    let (_, out, _) = run(&db, &["--config", cfg.to_str().expect("utf8"), "reconcile"]);
    assert!(!out.contains("[restatement]"), "{out}");
}

/// Render the HTML report headless in Chromium (Debian's package) and check the PNG. CI sets
/// COSTLEDGER_TEST_CHROMIUM=1 after installing it; elsewhere the test is skipped when Chromium
/// is missing.
#[test]
fn html_report_renders_in_chromium() {
    let chromium = ["/usr/bin/chromium", "/usr/bin/chromium-browser"].into_iter().find(|p| Path::new(p).exists());
    let required = std::env::var("COSTLEDGER_TEST_CHROMIUM").is_ok_and(|v| v == "1");
    let Some(chromium) = chromium else {
        assert!(!required, "COSTLEDGER_TEST_CHROMIUM=1 but Chromium is not installed");
        eprintln!("skipped: Chromium is not installed");
        return;
    };
    let dir = tempfile::tempdir().expect("tmp");
    let db = sqlite_url(dir.path());
    let cfg = reconcile_fixture(&db);
    let out_dir = dir.path().join("reports");
    let (code, _, err) = run(
        &db,
        &[
            "--config",
            cfg.to_str().expect("utf8"),
            "report",
            "weekly",
            "--week",
            "2026-W43",
            "--out",
            out_dir.to_str().expect("utf8"),
            "--format",
            "html",
        ],
    );
    assert_eq!(code, 0, "{err}");
    let png = dir.path().join("report.png");
    let status = std::process::Command::new(chromium)
        .args(["--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--window-size=1200,1600"])
        .arg(format!("--screenshot={}", png.display()))
        .arg(format!("file://{}", out_dir.join("weekly-2026-W43.html").display()))
        .env("HOME", dir.path())
        .output()
        .expect("run chromium");
    assert!(status.status.success(), "{}", String::from_utf8_lossy(&status.stderr));
    let bytes = std::fs::read(&png).expect("png written");
    assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n", "a PNG");
    // A blank 1200×1600 page compresses to a few KB; tables and charts make it much larger.
    assert!(bytes.len() > 40_000, "the page has content ({} bytes)", bytes.len());
}

/// The README's cross-check layout: the same bill imported as the bill and as a `check`
/// source. Before roles, both were summed (every total 2×) with no finding; now the check
/// source is compared only, and two primary sources over one bill raise an `overlap`.
#[test]
fn a_check_source_is_compared_never_summed_and_a_doubled_bill_is_a_finding() {
    let dir = tempfile::tempdir().expect("tmp");
    let db = sqlite_url(dir.path());
    let bill = dir.path().join("bill.csv");
    std::fs::write(&bill, format!("{HEAD}\n{}{}", row("10", "USD", "a"), row("5.5", "USD", "b"))).expect("w");
    let other = dir.path().join("ce.csv");
    std::fs::write(&other, format!("{HEAD}\n{}", row("15.5", "USD", "from cost explorer"))).expect("w");
    let p = |p: &Path| p.to_str().expect("utf8").to_string();
    assert_eq!(run(&db, &["import", "--format", "focus", &p(&bill)]).0, 0);
    let (code, _, err) = run(&db, &["import", "--format", "focus", "--source", "ce", "--role", "check", &p(&other)]);
    assert_eq!(code, 0, "{err}");
    let csv = export(&db);
    assert_eq!(csv.lines().count(), 3, "the check source is not exported: {csv}");
    assert!(!csv.contains("from cost explorer"));
    let (code, out, err) = run(&db, &["reconcile"]);
    assert!(out.contains("billed USD 15.5\n"), "the check source is not summed: {out}{err}");
    assert_eq!(code, 1, "untagged spend is a finding: {out}{err}");
    let (_, out, _) = run(&db, &["findings"]);
    assert!(!out.contains("[overlap]") && !out.contains("[cross_source]"), "the sources agree: {out}");
    // The same file as a second primary source: a doubled bill, and reconcile says so.
    let (code, _, _) = run(&db, &["import", "--format", "focus", "--source", "ce", "--role", "primary", &p(&other)]);
    assert_eq!(code, 0);
    let (code, out, _) = run(&db, &["reconcile"]);
    assert_eq!(code, 1, "{out}");
    let (_, out, _) = run(&db, &["findings"]);
    assert!(out.contains("[overlap] 2026-10 account A1 USD"), "{out}");
    assert!(out.contains("is covered by 2 current loads, so it is counted 2 times"), "{out}");
    let (code, _, err) = run(&db, &["import", "--format", "focus", "--role", "bogus", &p(&other)]);
    assert_eq!(code, 2);
    assert!(err.contains("expected primary (the bill) or check"), "{err}");
}

/// Rows dated in year 0 or 9999, or ending before they start, are quarantined at the door,
/// so `reconcile` and `report weekly` still work for every period (year 0 used to make both
/// fail on the whole ledger).
#[test]
fn impossible_dates_never_break_reconcile_or_the_report() {
    let dir = tempfile::tempdir().expect("tmp");
    let db = sqlite_url(dir.path());
    let f = dir.path().join("dates.csv");
    let text = format!(
        "{HEAD}\n{}\
         2,USD,A1,0000-01-01,0000-02-01,0000-01-02,0000-01-03,Usage,year zero\n\
         4,USD,A1,2026-10-01,2026-11-01,9999-10-02,9999-10-03,Usage,year 9999\n\
         8,USD,A1,2026-10-01,2026-11-01,2026-10-05,2026-10-03,Usage,backwards\n",
        row("1", "USD", "good")
    );
    std::fs::write(&f, text).expect("w");
    let (code, out, err) = run(&db, &["import", "--format", "focus", f.to_str().expect("p")]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("1 rows, 3 quarantined"), "{out}");
    let (code, out, err) = run(&db, &["reconcile"]);
    assert!(code == 0 || code == 1, "{out}{err}");
    let (code, out, err) =
        run(&db, &["report", "weekly", "--week", "2026-W40", "--out", dir.path().join("r").to_str().expect("p")]);
    assert_eq!(code, 0, "{out}{err}");
}

/// `report weekly` without `--week` on a ledger whose data ends before last week describes the
/// last complete week *with data*, and says which; a chosen week without charges is warned
/// about (it used to write `_None._` sections with exit 0 and no word).
#[test]
fn report_weekly_defaults_to_the_last_complete_week_with_data() {
    let dir = tempfile::tempdir().expect("tmp");
    let db = sqlite_url(dir.path());
    let f = dir.path().join("bill.csv");
    let mut text = format!("{HEAD}\n");
    for day in 5..12 {
        text.push_str(&format!(
            "1.25,USD,A1,2026-10-01,2026-11-01,2026-10-{day:02},2026-10-{:02},Usage,day {day}\n",
            day + 1
        ));
    }
    std::fs::write(&f, text).expect("w");
    assert_eq!(run(&db, &["import", "--format", "focus", f.to_str().expect("p")]).0, 0);
    let out_dir = dir.path().join("r");
    let (code, out, err) = run(&db, &["report", "weekly", "--out", out_dir.to_str().expect("p"), "--format", "md"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("report for 2026-W41: the last complete week with data"), "{out}");
    assert!(!err.contains("warning"), "{err}");
    let md = std::fs::read_to_string(out_dir.join("weekly-2026-W41.md")).expect("report");
    assert!(md.contains("8.75"), "the week's 7 × 1.25: {md}");
    let (code, _, err) =
        run(&db, &["report", "weekly", "--week", "2026-W30", "--out", out_dir.to_str().expect("p"), "--format", "md"]);
    assert_eq!(code, 0);
    assert!(err.contains("warning: the ledger has no charges in 2026-W30"), "{err}");
}
