//! The reconciler and the weekly report, on SQLite and PostgreSQL (one suite, both backends).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::common::*;
use costledger::config::Config;
use costledger::ingest::ingest_source;
use costledger::ledger::{AllocationRow, Finding, FxRate, InvoiceRow, LedgerStore};
use costledger::reconcile::reconcile;
use costledger::report::{build_weekly, parse_week, render_csvs, render_html, render_markdown, week_totals};
use costledger_core::{ChargeCategory, Context, ExactSum, PeriodWindow, Totals};
use costledger_focus::FocusConnector;

fn config() -> Config {
    let text = std::fs::read_to_string(fixture("reconcile/costledger.yaml")).expect("config");
    Config::parse(&text, &|_| None).expect("valid config")
}

fn bill() -> PathBuf {
    fixture("reconcile/bill-2026-10.csv")
}

async fn import(s: &dyn LedgerStore, source: &str, path: &Path) {
    let c = FocusConnector::new(vec![path.to_path_buf()]);
    let w = PeriodWindow { from: "2026-10".parse().expect("p"), to: "2026-10".parse().expect("p") };
    let r = ingest_source(s, source, &c, w, &Context::new(source), None).await.expect("ingest");
    for x in r {
        x.expect("delivery loads");
    }
}

fn sum_rows(rows: &[AllocationRow], pred: impl Fn(&AllocationRow) -> bool) -> BTreeMap<String, ExactSum> {
    let mut m: BTreeMap<String, ExactSum> = BTreeMap::new();
    for r in rows.iter().filter(|r| pred(r)) {
        m.entry(r.currency.clone()).or_default().merge(&r.amount).expect("sum");
    }
    m
}

fn of_check<'a>(f: &'a [Finding], check: &str) -> Vec<&'a Finding> {
    f.iter().filter(|x| x.check.as_str() == check).collect()
}

/// Allocated + shared + unallocated equals the billed cost per currency, exactly, and every
/// unallocated amount has a reason.
async fn conservation_and_reasons_on_the_fixture(s: Box<dyn LedgerStore>) {
    import(s.as_ref(), "aws", &bill()).await;
    let cfg = config();
    let sum = reconcile(s.as_ref(), &cfg, None, false).await.expect("reconcile");
    assert_eq!(sum.periods.len(), 1);
    let p = &sum.periods[0];
    let mut all = p.allocated.clone();
    all.merge(&p.shared).expect("m");
    all.merge(&p.unallocated).expect("m");
    assert_eq!(all, p.billed, "allocated + shared + unallocated = billed");
    let rows = s.allocations(None).await.expect("rows");
    assert!(
        rows.iter().filter(|r| r.owner.is_none()).all(|r| r.reason.is_some()),
        "every unallocated row has a reason"
    );
    let reasons: std::collections::BTreeSet<&str> = rows.iter().filter_map(|r| r.reason.as_deref()).collect();
    assert_eq!(
        reasons.into_iter().collect::<Vec<_>>(),
        vec!["commitment_purchase", "no_owner_tag", "shared_no_rule", "unknown_owner", "untaggable_charge"]
    );
    // The alias and case rules: "Team", "TEAM"/"Data" and cost_center all reach their owner.
    let owners = |o: &str| sum_rows(&rows, |r| r.owner.as_deref() == Some(o) && !r.basis.starts_with("shared"));
    assert_eq!(owners("data")["USD"].to_string(), "107.1", "21 days × 5.10 (TEAM=Data)");
    assert_eq!(owners("search")["EUR"].to_string(), "91", "cost_center alias → cost-center");
    assert_eq!(owners("platform")["USD"].to_string(), "147", "the staging rule wins over tags");
    // Untaggable: the marketplace fee. (The credits carry team=payments: they reduce payments.)
    let untaggable = sum_rows(&rows, |r| r.reason.as_deref() == Some("untaggable_charge"));
    assert_eq!(untaggable["USD"].to_string(), "42", "the 42.00 Datadog marketplace fee");
    let pay_tag = sum_rows(&rows, |r| r.owner.as_deref() == Some("payments") && r.basis == "tag:team");
    assert_eq!(pay_tag["USD"].to_string(), "417.75", "EC2 7 × (10.25 + 20.25 + 30.25) less 3 credits of 2.50");
    // Support (fixed 50/25/25) and tax (proportional) are shared in full.
    let shared = sum_rows(&rows, |r| r.basis.starts_with("shared:"));
    assert_eq!(shared["USD"].to_string(), "65.97", "3 × 12.00 tax + 3 × 9.99 support");
    // 9.99 at 50/25/25 is 4.995/2.4975/2.4975: rounded down 4.99/2.49/2.49 and the two cents
    // left go to the largest dropped fractions (0.75 each: data, search), not to payments (0.5).
    let support =
        |o: &str| sum_rows(&rows, |r| r.basis == "shared:fixed:rule:support" && r.owner.as_deref() == Some(o));
    assert_eq!(support("payments")["USD"].to_string(), "14.97", "3 × 4.99");
    assert_eq!(support("data")["USD"].to_string(), "7.5", "3 × 2.50");
    assert_eq!(support("search")["USD"].to_string(), "7.5", "3 × 2.50");
    // Nothing changed: the allocation is not recomputed.
    let again = reconcile(s.as_ref(), &cfg, None, false).await.expect("reconcile");
    assert!(!again.periods[0].recomputed);
    assert_eq!(s.allocations(None).await.expect("rows"), rows);
    // The rules change: recomputed.
    let mut cfg2 = cfg.clone();
    cfg2.allocation.rules.remove(0);
    cfg2.allocation.canonical.push_str("changed");
    let third = reconcile(s.as_ref(), &cfg2, None, false).await.expect("reconcile");
    assert!(third.periods[0].recomputed);
    assert_ne!(s.allocations(None).await.expect("rows"), rows);
}

/// A proportional split with no direct spend to be proportional to falls back to an even split,
/// and both the allocation and the finance export say so (both said `shared:proportional`).
async fn proportional_split_without_direct_spend_says_even(s: Box<dyn LedgerStore>) {
    let src = s.ensure_source("t", "test").await.expect("source");
    let mut tax = line("100.00", "USD");
    tax.charge_category = ChargeCategory::Tax;
    tax.tags.clear();
    load_lines(s.as_ref(), src, "x", "k", &[tax]).await;
    let cfg = Config::parse(
        "allocation:\n  owners: [payments, search, data]\n  rules:\n    - name: tax\n      match: { charge_category: Tax }\n      shared: proportional\n",
        &|_| None,
    )
    .expect("config");
    reconcile(s.as_ref(), &cfg, None, false).await.expect("reconcile");
    let rows = s.allocations(None).await.expect("rows");
    let shares: Vec<(String, String, String)> =
        rows.iter().map(|r| (r.owner.clone().unwrap_or_default(), r.basis.clone(), r.amount.to_string())).collect();
    let basis = "shared:even(no direct spend):rule:tax".to_string();
    assert_eq!(
        shares,
        vec![
            ("data".into(), basis.clone(), "33.34".into()),
            ("payments".into(), basis.clone(), "33.33".into()),
            ("search".into(), basis.clone(), "33.33".into())
        ]
    );
    let alloc =
        costledger::allocation::Allocator::new(cfg.allocation.clone(), s.account_first_seen().await.expect("fs"));
    let mut out = Vec::new();
    costledger::export::export_csv(s.as_ref(), &Default::default(), Some(&alloc), &mut out).await.expect("export");
    let text = String::from_utf8(out).expect("utf-8");
    assert!(text.contains(",shared,shared:even(no direct spend):rule:tax,"), "{text}");
}

/// A proportional split of 100.00 across three owners with equal direct spend gives 33.34 to
/// the alphabetically first owner and 33.33 to the others: exactly 100.00 in all.
async fn proportional_thirds_sum_back_exactly(s: Box<dyn LedgerStore>) {
    let src = s.ensure_source("t", "test").await.expect("source");
    let mut lines = Vec::new();
    for team in ["search", "payments", "data"] {
        let mut l = line("10.00", "USD");
        l.tags = BTreeMap::from([("team".into(), team.into())]);
        l.resource_id = Some(format!("r-{team}"));
        lines.push(l);
    }
    let mut tax = line("100.00", "USD");
    tax.charge_category = ChargeCategory::Tax;
    tax.tags.clear();
    lines.push(tax);
    load_lines(s.as_ref(), src, "x", "k", &lines).await;
    let cfg = Config::parse(
        "allocation:\n  owners: [payments, search, data]\n  rules:\n    - match: { charge_category: Tax }\n      shared: proportional\n",
        &|_| None,
    )
    .expect("config");
    reconcile(s.as_ref(), &cfg, None, false).await.expect("reconcile");
    let rows = s.allocations(None).await.expect("rows");
    let shares: Vec<(String, String)> = rows
        .iter()
        .filter(|r| r.basis.starts_with("shared:"))
        .map(|r| (r.owner.clone().unwrap_or_default(), r.amount.to_string()))
        .collect();
    assert_eq!(
        shares,
        vec![("data".into(), "33.34".into()), ("payments".into(), "33.33".into()), ("search".into(), "33.33".into())]
    );
}

async fn invoice_check_finds_exactly_the_cent(s: Box<dyn LedgerStore>) {
    import(s.as_ref(), "aws", &bill()).await;
    let cfg = config();
    // The fixture's USD lines all carry INV-2026-10-A; EUR lines EA-INV-10.
    let totals = reconcile(s.as_ref(), &cfg, None, false).await.expect("reconcile").periods[0].billed.clone();
    let usd = totals.get("USD").to_decimal().expect("fits").0;
    let eur = totals.get("EUR").to_decimal().expect("fits").0;
    let inv = |id: &str, acct: &str, cur: &str, amount| InvoiceRow {
        invoice_id: id.into(),
        billing_account_id: acct.into(),
        period: "2026-10".into(),
        currency: cur.into(),
        amount,
        provenance: "test".into(),
    };
    s.upsert_invoices(&[inv("INV-2026-10-A", "111111111111", "USD", usd), inv("", "ea-1", "EUR", eur)])
        .await
        .expect("invoices");
    let f = reconcile(s.as_ref(), &cfg, None, false).await.expect("reconcile").findings;
    assert!(of_check(&f, "invoice").is_empty(), "matching invoices: no finding: {f:#?}");
    s.upsert_invoices(&[inv("INV-2026-10-A", "111111111111", "USD", usd + dec("0.01"))]).await.expect("invoices");
    let f = reconcile(s.as_ref(), &cfg, None, false).await.expect("reconcile").findings;
    let inv = of_check(&f, "invoice");
    assert_eq!(inv.len(), 1, "{f:#?}");
    assert_eq!(inv[0].amount.map(|a| a.to_string()).as_deref(), Some("-0.01"));
    assert_eq!(inv[0].subject.as_deref(), Some("INV-2026-10-A"));
    // With a tolerance of 0.01 the cent is accepted.
    let mut tolerant = cfg.clone();
    tolerant.checks.invoice_tolerance = dec("0.01");
    let f = reconcile(s.as_ref(), &tolerant, None, false).await.expect("reconcile").findings;
    assert!(of_check(&f, "invoice").is_empty());
}

/// Invoices are cent-rounded, the ledger is exact: by default the ledger is rounded to the
/// invoice's own decimal places (4227.6244090406 matches 4227.62, and the match is reported);
/// `invoice_precision: exact` compares exactly; an invoice stated as `4227.00` keeps its two
/// places; an invoice for a month the ledger has no bill for is a finding, not silence.
async fn invoices_compare_at_their_precision_and_a_missing_bill_is_found(s: Box<dyn LedgerStore>) {
    use costledger::config::InvoicePrecision;
    let src = s.ensure_source("t", "test").await.expect("source");
    let mut a = line("4227.6244090406", "USD");
    a.invoice_id = Some("INV-1".into());
    let mut b = line("4227.4", "USD");
    b.invoice_id = Some("INV-2".into());
    load_lines(s.as_ref(), src, "x", "k", &[a, b]).await;
    let inv = |id: &str, period: &str, amount: &str| InvoiceRow {
        invoice_id: id.into(),
        billing_account_id: "A1".into(),
        period: period.into(),
        currency: "USD".into(),
        amount: costledger::finance_files::decimal_text(amount).expect("decimal"),
        provenance: "test".into(),
    };
    s.upsert_invoices(&[
        inv("INV-1", "2026-10", "4227.62"),
        inv("INV-2", "2026-10", "4227.00"),
        inv("INV-9", "2026-09", "12.5"),
    ])
    .await
    .expect("invoices");
    let cfg = Config::default();
    let sum = reconcile(s.as_ref(), &cfg, None, false).await.expect("reconcile");
    let f = of_check(&sum.findings, "invoice");
    assert_eq!(f.len(), 2, "{:#?}", sum.findings);
    let missing = f.iter().find(|x| x.period == "2026-09").expect("missing bill");
    assert!(missing.message.contains("the ledger has no bill for 2026-09 at all"), "{}", missing.message);
    assert_eq!(missing.amount.map(|a| a.to_string()).as_deref(), Some("-12.5"));
    let two = f.iter().find(|x| x.subject.as_deref() == Some("INV-2")).expect("INV-2");
    assert_eq!(two.amount.map(|a| a.to_string()).as_deref(), Some("0.4"), "4227.40 vs 4227.00: {}", two.message);
    assert_eq!(sum.invoices_matched.len(), 1);
    assert_eq!(sum.invoices_matched[0].what, "invoice INV-1");
    assert_eq!(sum.invoices_matched[0].ledger.to_string(), "4227.6244090406");
    // Findings of the bill-less period are stored and shown like any other.
    assert_eq!(of_check(&s.findings(Some("2026-09")).await.expect("f"), "invoice").len(), 1);
    let mut exact = cfg.clone();
    exact.checks.invoice_precision = InvoicePrecision::Exact;
    let sum = reconcile(s.as_ref(), &exact, None, false).await.expect("reconcile");
    let one = of_check(&sum.findings, "invoice").into_iter().find(|x| x.subject.as_deref() == Some("INV-1")).cloned();
    assert_eq!(one.and_then(|x| x.amount).map(|a| a.to_string()).as_deref(), Some("0.0044090406"));
    // Only the selected period's invoices when a period is selected.
    let sel = vec!["2026-10".parse::<costledger_core::BillingPeriod>().expect("period")];
    let sum = reconcile(s.as_ref(), &cfg, Some(&sel), false).await.expect("reconcile");
    assert!(of_check(&sum.findings, "invoice").iter().all(|x| x.period == "2026-10"));
}

async fn restated_final_period_is_a_finding_with_the_exact_delta(s: Box<dyn LedgerStore>) {
    let dir = tempfile::tempdir().expect("tmp");
    let f = dir.path().join("bill.csv");
    std::fs::copy(bill(), &f).expect("copy");
    import(s.as_ref(), "aws", &f).await;
    let cfg = config();
    let first = reconcile(s.as_ref(), &cfg, None, false).await.expect("reconcile");
    assert!(of_check(&first.findings, "restatement").is_empty());
    // The provider restates: one EC2 line 10.25 → 10.26 and a new 0.000001 line.
    let text = std::fs::read_to_string(&f).expect("read");
    let changed = text.replacen(",10.25,10.25,", ",10.26,10.26,", 1);
    let extra = text.lines().nth(4).expect("a line").replace(",0.0000012,0.0000012,", ",0.000001,0.000001,");
    std::fs::write(&f, format!("{changed}{extra}\n")).expect("write");
    import(s.as_ref(), "aws", &f).await;
    let second = reconcile(s.as_ref(), &cfg, None, false).await.expect("reconcile");
    assert!(second.periods[0].recomputed);
    let r = of_check(&second.findings, "restatement");
    assert_eq!(r.len(), 1, "{:#?}", second.findings);
    assert_eq!(r[0].currency.as_deref(), Some("USD"));
    assert_eq!(r[0].amount.map(|a| a.to_string()).as_deref(), Some("0.010001"));
    // What changed, largest first: EC2 +0.01, then Lambda +0.000001.
    let ec2 = r[0].evidence.find("\"change\":\"0.01\",\"service\":\"Amazon Elastic Compute Cloud\"");
    let lambda = r[0].evidence.find("\"change\":\"0.000001\",\"service\":\"AWS Lambda\"");
    assert!(ec2.is_some() && lambda.is_some() && ec2 < lambda, "{}", r[0].evidence);
    // ...and the message (what `findings` and the report show) names them too.
    assert!(
        r[0].message.contains(
            "largest changes (billing account × service): 111111111111 × Amazon Elastic Compute Cloud +0.01 ("
        ),
        "{}",
        r[0].message
    );
    assert!(r[0].message.contains("× AWS Lambda +0.000001 ("), "{}", r[0].message);
}

async fn cross_source_disagreement_is_a_finding(s: Box<dyn LedgerStore>) {
    let a = s.ensure_source("cur", "test").await.expect("source");
    let b = s.ensure_source("cost-explorer", "test").await.expect("source");
    load_lines(s.as_ref(), a, "x", "k", &[line("100.00", "USD")]).await;
    load_lines(s.as_ref(), b, "x", "k", &[line("99.98", "USD")]).await;
    let cfg = Config::default();
    let f = reconcile(s.as_ref(), &cfg, None, false).await.expect("reconcile").findings;
    let x = of_check(&f, "cross_source");
    assert_eq!(x.len(), 1, "{f:#?}");
    assert_eq!(x[0].amount.map(|a| a.to_string()).as_deref(), Some("0.02"));
    assert_eq!(x[0].subject.as_deref(), Some("cur vs cost-explorer"));
}

/// Two primary sources over one bill: counted twice, and reconcile says so (`overlap`, with
/// the loads and the excess). Marked `check`, the second source is compared by the
/// cross-source check and never summed: totals, allocation and the charges readers see are
/// the bill once.
async fn a_check_source_is_compared_never_summed(s: Box<dyn LedgerStore>) {
    use costledger::ledger::{ChargeFilter, SourceRole};
    let a = s.ensure_source("cur", "test").await.expect("source");
    let b = s.ensure_source("cost-explorer", "test").await.expect("source");
    load_lines(s.as_ref(), a, "x", "k", &[line("100.00", "USD")]).await;
    load_lines(s.as_ref(), b, "x", "k", &[line("99.98", "USD")]).await;
    let cfg = Config::default();
    assert_eq!(total(s.as_ref(), "USD").await.to_string(), "199.98");
    let f = reconcile(s.as_ref(), &cfg, None, false).await.expect("reconcile").findings;
    let o = of_check(&f, "overlap");
    assert_eq!(o.len(), 1, "{f:#?}");
    assert_eq!(o[0].amount.map(|a| a.to_string()).as_deref(), Some("99.98"));
    assert_eq!(o[0].billing_account_id.as_deref(), Some("A1"));
    assert!(o[0].message.contains("is covered by 2 current loads, so it is counted 2 times"), "{}", o[0].message);
    assert!(o[0].message.contains("source cur load 1 (x): USD 100"), "{}", o[0].message);
    assert!(o[0].message.contains("set `role: check` on it"), "{}", o[0].message);

    costledger::ingest::set_source_role(s.as_ref(), "cost-explorer", "test", SourceRole::Check).await.expect("role");
    assert_eq!(total(s.as_ref(), "USD").await.to_string(), "100");
    assert_eq!(s.count_charges(&ChargeFilter::default()).await.expect("n"), 1);
    let named = ChargeFilter { source: Some("cost-explorer".into()), ..Default::default() };
    assert_eq!(s.count_charges(&named).await.expect("n"), 1, "a source named explicitly is read whatever its role");
    let sum = reconcile(s.as_ref(), &cfg, None, false).await.expect("reconcile");
    assert!(of_check(&sum.findings, "overlap").is_empty(), "{:#?}", sum.findings);
    let x = of_check(&sum.findings, "cross_source");
    assert_eq!(x.len(), 1, "the check source is still compared: {:#?}", sum.findings);
    assert_eq!(x[0].amount.map(|a| a.to_string()).as_deref(), Some("0.02"));
    assert_eq!(sum.periods[0].billed.display(), "USD 100");
    let rows = s.allocations(None).await.expect("rows");
    assert_eq!(sum_rows(&rows, |_| true).get("USD").map(|a| a.to_string()).as_deref(), Some("100"));
}

/// Loads of one source on disjoint days (daily files) are a split bill, not an overlap; a
/// second load over the same days (a copy under a new path) is.
async fn one_sources_loads_overlap_only_on_shared_days(s: Box<dyn LedgerStore>) {
    let src = s.ensure_source("drop", "test").await.expect("source");
    let day = |d: &str, amount: &str| {
        let mut l = line(amount, "USD");
        l.charge_period_start = costledger_core::parse_timestamp(&format!("2026-10-{d}T00:00:00Z")).expect("ts");
        l.charge_period_end = costledger_core::parse_timestamp(&format!("2026-10-{d}T01:00:00Z")).expect("ts");
        l
    };
    load_lines(s.as_ref(), src, "day05.csv", "k1", &[day("05", "1.5")]).await;
    load_lines(s.as_ref(), src, "day06.csv", "k2", &[day("06", "2.5")]).await;
    let cfg = Config::default();
    let f = reconcile(s.as_ref(), &cfg, None, false).await.expect("reconcile").findings;
    assert!(of_check(&f, "overlap").is_empty(), "{f:#?}");
    load_lines(s.as_ref(), src, "restated/day05.csv", "k3", &[day("05", "1.75")]).await;
    let f = reconcile(s.as_ref(), &cfg, None, false).await.expect("reconcile").findings;
    let o = of_check(&f, "overlap");
    assert_eq!(o.len(), 1, "{f:#?}");
    assert_eq!(o[0].subject.as_deref(), Some("load 1, load 3"));
    assert_eq!(o[0].amount.map(|a| a.to_string()).as_deref(), Some("1.75"));
    assert!(o[0].message.contains("the same days are loaded twice from one source"), "{}", o[0].message);
}

/// Anomalies have a severity (the change's share of the week's spend in its currency) and
/// thresholds per currency and by share, so a two-month ledger does not drown in findings.
async fn anomalies_have_a_severity_and_thresholds_per_currency_and_share(s: Box<dyn LedgerStore>) {
    import(s.as_ref(), "aws", &bill()).await;
    let mut cfg = config();
    let all = reconcile(s.as_ref(), &cfg, None, false).await.expect("reconcile").findings;
    let names = |f: &[Finding]| -> Vec<String> {
        of_check(f, "anomaly")
            .iter()
            .map(|x| {
                format!(
                    "{} {}",
                    x.currency.clone().unwrap_or_default(),
                    x.amount.map(|a| a.to_string()).unwrap_or_default()
                )
            })
            .collect()
    };
    let usd: Vec<String> = names(&all).into_iter().filter(|n| n.starts_with("USD")).collect();
    assert!(names(&all).iter().any(|n| n.starts_with("EUR")), "{all:#?}");
    let datadog = of_check(&all, "anomaly").into_iter().find(|x| x.message.contains("Datadog")).expect("datadog");
    assert!(datadog.message.starts_with("medium severity: "), "{}", datadog.message);
    assert!(
        datadog.evidence.contains("\"severity\":\"medium\"") && datadog.evidence.contains("\"share_percent\":\"6.09\""),
        "{}",
        datadog.evidence
    );
    // A higher bar for EUR only: the EUR changes (28 and 35) go, USD stays as it was.
    cfg.checks.anomaly_min_amount_by_currency.insert("EUR".into(), dec("50"));
    let f = reconcile(s.as_ref(), &cfg, None, true).await.expect("reconcile").findings;
    assert_eq!(names(&f), usd);
    // Changes under 10% of the week's spend are noise: Datadog (6.09%) goes, the rest are high.
    cfg.checks.anomaly_min_share_percent = dec("10");
    let f = reconcile(s.as_ref(), &cfg, None, true).await.expect("reconcile").findings;
    let left = of_check(&f, "anomaly");
    assert!(!left.is_empty() && left.len() < usd.len(), "{left:#?}");
    assert!(left.iter().all(|x| x.message.starts_with("high severity: ")), "{left:#?}");
}

/// The same ledger gives the same bytes, on both backends: golden Markdown and CSV files.
async fn weekly_report_matches_the_golden_files(s: Box<dyn LedgerStore>) {
    import(s.as_ref(), "aws", &bill()).await;
    let cfg = config();
    reconcile(s.as_ref(), &cfg, None, false).await.expect("reconcile");
    let monday = parse_week("2026-W43").expect("week");
    let r = costledger::app::report::build(s.as_ref(), &cfg, monday, None).await.expect("report");
    let golden = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden");
    let mut files = vec![("weekly-2026-W43.md".to_string(), render_markdown(&r).into_bytes())];
    for (name, bytes) in render_csvs(&r).expect("csv") {
        files.push((format!("weekly-2026-W43-csv/{name}"), bytes));
    }
    for (name, bytes) in files {
        let p = golden.join(&name);
        if std::env::var("UPDATE_GOLDEN").is_ok() {
            std::fs::create_dir_all(p.parent().expect("dir")).expect("mkdir");
            std::fs::write(&p, &bytes).expect("write golden");
        }
        let want = std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e} (UPDATE_GOLDEN=1 writes it)", p.display()));
        assert!(want == bytes, "{name} differs from the golden file:\n{}", String::from_utf8_lossy(&bytes));
    }
    // Same ledger, same bytes.
    let again = costledger::app::report::build(s.as_ref(), &cfg, monday, None).await.expect("report");
    assert_eq!(render_markdown(&again), render_markdown(&r));
    assert_eq!(render_html(&again).expect("html"), render_html(&r).expect("html"));
}

/// The HTML is well-formed XML and its SVG charts carry the owners' names and values.
async fn html_report_is_well_formed_with_charts(s: Box<dyn LedgerStore>) {
    import(s.as_ref(), "aws", &bill()).await;
    let cfg = config();
    reconcile(s.as_ref(), &cfg, None, false).await.expect("reconcile");
    let r = build_weekly(s.as_ref(), &cfg, parse_week("2026-W43").expect("w"), None).await.expect("report");
    let html = render_html(&r).expect("html");
    let mut reader = quick_xml::Reader::from_str(&html);
    let mut depth = 0i32;
    let mut svgs = 0;
    loop {
        match reader.read_event() {
            Ok(quick_xml::events::Event::Eof) => break,
            Ok(quick_xml::events::Event::Start(e)) => {
                depth += 1;
                if e.name().as_ref() == b"svg" {
                    svgs += 1;
                }
            }
            Ok(quick_xml::events::Event::End(_)) => depth -= 1,
            Ok(_) => {}
            Err(e) => panic!("HTML not well-formed at {}: {e}", reader.buffer_position()),
        }
    }
    assert_eq!(depth, 0, "every element closed");
    assert_eq!(svgs, 3, "owner trend USD and EUR, unallocated by reason USD (EUR has none)");
    let usd_owner = &html[html.find("Spend by owner over the last 8 weeks (USD)").expect("usd chart")..];
    let usd_svg = &usd_owner[..usd_owner.find("</svg>").expect("end")];
    for owner in ["payments", "search", "platform", "data", "(unallocated)"] {
        assert!(usd_svg.contains(owner), "owner chart names {owner}");
    }
    let pay = r.tables.iter().find(|t| t.name == "owner_trend").expect("trend");
    let pay_w43 = pay
        .rows
        .iter()
        .find(|row| {
            matches!((&row[0], &row[1], &row[2]), (costledger::report::Cell::Text(w), costledger::report::Cell::Text(o), costledger::report::Cell::Text(c)) if w == "2026-W43" && o == "payments" && c == "USD")
        })
        .expect("row");
    let costledger::report::Cell::Money(v) = &pay_w43[3] else { panic!("money") };
    assert!(usd_svg.contains(&format!("payments: {}", v.to_fixed(2))), "value {} in the SVG legend", v.to_fixed(2));
    assert!(html.contains("no_owner_tag"), "unallocated reasons are named");
}

async fn reported_week_that_changes_is_a_restatement(s: Box<dyn LedgerStore>) {
    let dir = tempfile::tempdir().expect("tmp");
    let f = dir.path().join("bill.csv");
    // Without invoice ids the period stays open: only the reported-week check can fire.
    let text = std::fs::read_to_string(bill()).expect("read").replace("INV-2026-10-A", "").replace("EA-INV-10", "");
    std::fs::write(&f, &text).expect("write");
    import(s.as_ref(), "aws", &f).await;
    let cfg = config();
    reconcile(s.as_ref(), &cfg, None, false).await.expect("reconcile");
    let monday = parse_week("2026-W42").expect("w");
    let r = build_weekly(s.as_ref(), &cfg, monday, None).await.expect("report");
    s.record_reported_week(&monday.to_string(), &week_totals(&r)).await.expect("record");
    assert!(of_check(&reconcile(s.as_ref(), &cfg, None, false).await.expect("r").findings, "restatement").is_empty());
    // A late line for 2026-10-14 (week 42) arrives.
    let late =
        text.lines().nth(1).expect("line").replace("2026-10-05T", "2026-10-14T").replace("2026-10-06T", "2026-10-15T");
    std::fs::write(&f, format!("{text}{late}\n")).expect("write");
    import(s.as_ref(), "aws", &f).await;
    let f = reconcile(s.as_ref(), &cfg, None, false).await.expect("reconcile").findings;
    let r = of_check(&f, "restatement");
    assert_eq!(r.len(), 1, "{f:#?}");
    assert_eq!(r[0].subject.as_deref(), Some("week 2026-W42"));
    assert_eq!(r[0].amount.map(|a| a.to_string()).as_deref(), Some("10.25"));
}

async fn converted_totals_need_a_rate_per_month(s: Box<dyn LedgerStore>) {
    import(s.as_ref(), "aws", &bill()).await;
    let cfg = config();
    reconcile(s.as_ref(), &cfg, None, false).await.expect("reconcile");
    let monday = parse_week("2026-W43").expect("w");
    let e = build_weekly(s.as_ref(), &cfg, monday, Some("USD")).await.expect_err("no rate");
    assert_eq!(
        e.to_string(),
        "no exchange rate from EUR to USD for 2026-10: import one with `costledger fx import FILE` (columns month,from,to,rate)"
    );
    let rate = FxRate {
        month: "2026-10".into(),
        from: "EUR".into(),
        to: "USD".into(),
        rate: dec("1.1"),
        provenance: "t".into(),
    };
    s.upsert_fx_rates(&[rate]).await.expect("fx");
    let r = build_weekly(s.as_ref(), &cfg, monday, Some("USD")).await.expect("report");
    let t = r.tables.iter().find(|t| t.name == "converted_total").expect("table");
    let summary = r.tables.iter().find(|t| t.name == "summary").expect("summary");
    let (costledger::report::Cell::Money(eur), costledger::report::Cell::Money(usd)) =
        (&summary.rows[0][1], &summary.rows[1][1])
    else {
        panic!("money")
    };
    let mut want = Totals::default();
    want.add("USD", usd.to_decimal().expect("d").0).expect("a");
    want.add("USD", eur.to_decimal().expect("d").0 * dec("1.1")).expect("a");
    assert_eq!(t.rows[0][1], costledger::report::Cell::Money(want.get("USD")));
}

/// The reconciler's period totals and the accounts' first appearance are read from the loads'
/// day totals (written at commit) instead of a grouped scan of the charges: the same rows, to
/// the digit, over primary and check sources, several accounts, sub accounts, days (the UTC day
/// boundary), currencies, credits, lines without EffectiveCost and a superseded load.
async fn day_totals_give_the_scans_totals_and_first_seen(s: Box<dyn LedgerStore>) {
    use costledger::ledger::SourceRole;
    use costledger::reconcile::checks::PeriodTotals;
    import(s.as_ref(), "aws", &bill()).await;
    let varied = |n: usize| {
        let t = |x: &str| costledger_core::parse_timestamp(x).expect("ts");
        let mut out = Vec::new();
        for i in 0..n {
            let mut l =
                line(if i % 7 == 3 { "-0.0000000003" } else { "12.3456789" }, if i % 5 == 0 { "EUR" } else { "USD" });
            l.billing_account_id = format!("B{}", i % 3);
            l.sub_account_id = if i % 4 == 0 { None } else { Some(format!("S{}", i % 2)) };
            l.provider_name = if i % 6 == 0 { None } else { Some("TestCloud".into()) };
            l.charge_period_start = t(["2026-10-05T23:59:59Z", "2026-10-06T00:00:00Z", "2026-10-01T00:00:00Z"][i % 3]);
            l.charge_period_end = l.charge_period_start + chrono::Duration::hours(1);
            if i % 2 == 1 {
                l.effective_cost = None;
            }
            out.push(l);
        }
        out
    };
    let cur = s.ensure_source("drop", "test").await.expect("source");
    load_lines(s.as_ref(), cur, "x.csv", "k1", &varied(40)).await;
    // The same scope again, changed: the first load is superseded and no longer counts.
    load_lines(s.as_ref(), cur, "x.csv", "k2", &varied(37)).await;
    let chk = s.ensure_source("explorer", "test").await.expect("source");
    let mut checked = varied(11);
    checked[4].billing_account_id = "C9".into();
    load_lines(s.as_ref(), chk, "y", "k3", &checked).await;
    costledger::ingest::set_source_role(s.as_ref(), "explorer", "test", SourceRole::Check).await.expect("role");

    let p: costledger_core::BillingPeriod = "2026-10".parse().expect("p");
    assert!(s.load_day_totals(Some("2026-10")).await.expect("day totals").is_some(), "every load keeps them");
    let fast = PeriodTotals::read(s.as_ref(), p).await.expect("read");
    let scan = PeriodTotals::read_scan(s.as_ref(), p).await.expect("scan");
    assert!(fast.rows().len() > 20, "{}", fast.rows().len());
    assert_eq!(fast.rows(), scan.rows());
    assert_eq!(fast.billed_by_account().expect("b"), scan.billed_by_account().expect("b"));
    let seen = s.account_first_seen().await.expect("first seen");
    assert!(seen.len() >= 6, "{seen:?}");
    assert_eq!(seen, s.account_first_seen_scan().await.expect("scan"));
    assert!(!seen.iter().any(|f| f.billing_account_id == "C9"), "a check source's accounts are not the ledger's");
}

conformance!(
    day_totals_give_the_scans_totals_and_first_seen,
    conservation_and_reasons_on_the_fixture,
    proportional_thirds_sum_back_exactly,
    proportional_split_without_direct_spend_says_even,
    invoice_check_finds_exactly_the_cent,
    invoices_compare_at_their_precision_and_a_missing_bill_is_found,
    restated_final_period_is_a_finding_with_the_exact_delta,
    cross_source_disagreement_is_a_finding,
    a_check_source_is_compared_never_summed,
    one_sources_loads_overlap_only_on_shared_days,
    weekly_report_matches_the_golden_files,
    anomalies_have_a_severity_and_thresholds_per_currency_and_share,
    html_report_is_well_formed_with_charts,
    reported_week_that_changes_is_a_restatement,
    converted_totals_need_a_rate_per_month,
);
