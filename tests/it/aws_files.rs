//! AWS bill files from a directory laid out as AWS delivers them (legacy CUR by manifest, CUR 2.0
//! Data Exports by BILLING_PERIOD), imported into a real SQLite ledger.

use std::path::Path;

use crate::common::cur::*;
use crate::common::*;

fn manifest(root: &Path, assembly: &str) {
    let m = format!(
        r#"{{"assemblyId":"{assembly}","account":"111122223333","charset":"UTF-8","compression":"GZIP","contentType":"text/csv","reportName":"daily-cur","billingPeriod":{{"start":"20240301T000000.000Z","end":"20240401T000000.000Z"}},"bucket":"acme-billing-reports","reportKeys":["cur/daily-cur/20240301-20240401/{assembly}/daily-cur-1.csv.gz"]}}"#
    );
    let p = root.join("cur/daily-cur/20240301-20240401/daily-cur-Manifest.json");
    std::fs::create_dir_all(p.parent().expect("dir")).expect("mkdir");
    std::fs::write(p, m).expect("manifest");
}

fn line_of<'a>(out: &'a str, what: &str) -> &'a str {
    out.lines().find(|l| l.contains(what)).unwrap_or_else(|| panic!("no line with {what} in {out}"))
}

#[test]
fn the_public_cur_sample_totals_exactly() {
    let dir = tempfile::tempdir().expect("tmp");
    let db = sqlite_url(dir.path());
    let sample = fixture("aws/sample-anonymous-aws-export-dataset.csv");
    let (code, out, err) = run(&db, &["import", "--format", "aws-cur", sample.to_str().expect("utf8")]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("1281 rows, 0 quarantined; BilledCost USD 1.6823086974"), "{out}");
}

#[test]
fn a_newer_assembly_supersedes_the_month_and_line_item_types_map() {
    let dir = tempfile::tempdir().expect("tmp");
    let root = dir.path().join("bucket");
    let db = sqlite_url(dir.path());
    // Two assemblies of March in the synced bucket; the manifest names the first.
    gz(&root.join("cur/daily-cur/20240301-20240401/a-1111/daily-cur-1.csv.gz"), &format!("{HEADER}\n{}", rows("")));
    let second = format!(
        "{HEADER}\n{}",
        rows("").replace(",0.0960000000,0.0960000000,0.0960000000,", ",0.0960000000,0.1000000000,0.0960000000,")
    );
    gz(&root.join("cur/daily-cur/20240301-20240401/b-2222/daily-cur-1.csv.gz"), &second);
    manifest(&root, "a-1111");
    let (code, out, err) =
        run(&db, &["import", "--format", "aws-cur", "--source", "cur", root.to_str().expect("utf8")]);
    assert_eq!(code, 0, "{err}");
    let l = line_of(&out, "daily-cur/2024-03");
    assert!(l.contains("loaded") && l.contains("9 rows"), "{out}");
    // Σ UnblendedCost: 0.096 + 0 + 0.136 − 0.136 + 0.0000048 + 43.8246575424 − 25 + 3.918 − 7.5
    assert!(l.contains("BilledCost USD 15.3386623424"), "{out}");
    // The same manifest again: nothing changes.
    let (_, out, _) = run(&db, &["import", "--format", "aws-cur", "--source", "cur", root.to_str().expect("utf8")]);
    assert!(line_of(&out, "daily-cur/2024-03").contains("skipped"), "{out}");
    // AWS delivers a new assembly: it replaces the month (totals are the second's, not the sum).
    manifest(&root, "b-2222");
    let (_, out, _) = run(&db, &["import", "--format", "aws-cur", "--source", "cur", root.to_str().expect("utf8")]);
    let l = line_of(&out, "daily-cur/2024-03");
    assert!(l.contains("restated") && l.contains("BilledCost USD 15.3426623424"), "{out}");
    let (_, csv, _) = run(&db, &["export", "csv"]);
    let mut rdr = csv::Reader::from_reader(csv.as_bytes());
    let h = rdr.headers().expect("h").clone();
    let col = |n: &str| h.iter().position(|x| x == n).expect("col");
    let (cat, class, billed, eff, desc) =
        (col("ChargeCategory"), col("ChargeClass"), col("BilledCost"), col("EffectiveCost"), col("ChargeDescription"));
    let mut by: Vec<(String, String, String, String)> = Vec::new();
    for r in rdr.records() {
        let r = r.expect("row");
        by.push((
            r[desc].chars().take(22).collect(),
            format!("{}/{}", &r[cat], &r[class]),
            r[billed].to_string(),
            r[eff].to_string(),
        ));
    }
    let find = |d: &str| by.iter().find(|x| x.0.starts_with(d)).cloned().unwrap_or_else(|| panic!("{d} in {by:?}"));
    assert_eq!(find("Linux/UNIX (Amazon").1, "Usage/");
    assert_eq!(find("Linux/UNIX (Amazon").3, "0.0589041096", "DiscountedUsage: reservation/EffectiveCost");
    assert_eq!(find("Savings Plan covered").3, "0.0884", "SP covered: SavingsPlanEffectiveCost");
    assert_eq!(find("SavingsPlanNegation").3, "0", "negation: not part of amortised cost");
    assert_eq!(find("USD 0.0589041096 hour").1, "Purchase/");
    assert_eq!(find("USD 0.0589041096 hour").3, "3.75", "RIFee: the unused part");
    assert_eq!(find("AWS Activate Credits").1, "Credit/");
    assert_eq!(find("Tax for product code").1, "Tax/");
    assert_eq!(find("Refund for February").1, "Credit/Correction");
    assert_eq!(find("$0.0004 per 1,000 GET").2, "0.0000048", "E-notation amounts exact");
    assert!(
        csv.contains("\"{\"\"Cost Center\"\":\"\"CC-1001\"\",\"\"team\"\":\"\"payments\"\"}\""),
        "resourceTags/user:* → tags"
    );
}

#[test]
fn an_invoiced_month_is_final() {
    let dir = tempfile::tempdir().expect("tmp");
    let db = sqlite_url(dir.path());
    let f = dir.path().join("march.csv");
    std::fs::write(&f, format!("{HEADER}\n{}", rows("2024-0123"))).expect("write");
    let (code, _, err) = run(&db, &["import", "--format", "aws-cur", f.to_str().expect("utf8")]);
    assert_eq!(code, 0, "{err}");
    let (_, periods, _) = run(&db, &["periods"]);
    assert!(periods.contains("2024-03  final") && periods.contains("invoices: 2024-0123"), "{periods}");
}

#[test]
fn wide_deliveries_whose_column_sets_differ_both_load() {
    let dir = tempfile::tempdir().expect("tmp");
    let db = sqlite_url(dir.path());
    let body = rows("");
    for (name, extra) in [("a.csv", 170), ("b.csv", 185)] {
        let cols: Vec<String> = (0..extra).map(|i| format!("product/attr{i}_{name}")).collect();
        let header = format!("{HEADER},{}", cols.join(","));
        let pad = ",".repeat(extra);
        let text: String = body.lines().map(|l| format!("{l}{pad}\n")).collect();
        std::fs::write(dir.path().join(name), format!("{header}\n{text}")).expect("write");
        assert!(header.split(',').count() >= 190 || name == "a.csv");
    }
    let (code, out, err) = run(
        &db,
        &[
            "import",
            "--format",
            "aws-cur",
            dir.path().join("a.csv").to_str().expect("p"),
            dir.path().join("b.csv").to_str().expect("p"),
        ],
    );
    assert_eq!(code, 0, "{err}");
    assert_eq!(out.matches("9 rows, 0 quarantined").count(), 2, "{out}");
}

#[test]
fn cur2_data_exports_overwrite_per_period() {
    let dir = tempfile::tempdir().expect("tmp");
    let db = sqlite_url(dir.path());
    let root = dir.path().join("bucket");
    let header = "bill_payer_account_id,bill_billing_period_start_date,bill_billing_period_end_date,line_item_usage_account_id,line_item_line_item_type,line_item_usage_start_date,line_item_usage_end_date,line_item_product_code,line_item_currency_code,line_item_unblended_cost,savings_plan_savings_plan_effective_cost,resource_tags";
    let row = |cost: &str| {
        format!(
            "111122223333,2024-03-01T00:00:00Z,2024-04-01T00:00:00Z,444455556666,Usage,2024-03-05T10:00:00Z,2024-03-05T11:00:00Z,AmazonEC2,USD,{cost},,\"{{\"\"user_team\"\":\"\"payments\"\",\"\"aws_createdBy\"\":\"\"ci\"\"}}\"\n"
        )
    };
    let data = root.join("exports/cur2/data/BILLING_PERIOD=2024-03");
    gz(&data.join("part-0.csv.gz"), &format!("{header}\n{}{}", row("1.25"), row("2.5E-1")));
    gz(&data.join("part-1.csv.gz"), &format!("{header}\n{}", row("3")));
    let (code, out, err) =
        run(&db, &["import", "--format", "aws-cur2", "--source", "de", root.to_str().expect("utf8")]);
    assert_eq!(code, 0, "{err}");
    assert!(line_of(&out, "cur2/2024-03").contains("3 rows, 0 quarantined; BilledCost USD 4.5"), "{out}");
    // The export refreshes the period: the new files replace the old ones.
    gz(&data.join("part-1.csv.gz"), &format!("{header}\n{}", row("4")));
    let (_, out, _) = run(&db, &["import", "--format", "aws-cur2", "--source", "de", root.to_str().expect("utf8")]);
    assert!(line_of(&out, "cur2/2024-03").contains("restated"), "{out}");
    let (_, csv, _) = run(&db, &["export", "csv"]);
    assert!(csv.contains("\"{\"\"aws:createdBy\"\":\"\"ci\"\",\"\"team\"\":\"\"payments\"\"}\""), "{csv}");
    let mut rdr = csv::Reader::from_reader(csv.as_bytes());
    let billed = rdr.headers().expect("h").iter().position(|h| h == "BilledCost").expect("col");
    let total: rust_decimal::Decimal =
        rdr.records().map(|r| r.expect("row")[billed].parse::<rust_decimal::Decimal>().expect("amount")).sum();
    assert_eq!(total, dec("5.5"), "the refreshed period, not old + new");
}

/// A CUR row whose billing period is not a calendar month (a broken export, or a date column
/// shifted into it) is quarantined with the reason; the rest of the month loads.
#[test]
fn a_cur_billing_period_that_is_not_a_month_is_quarantined() {
    let dir = tempfile::tempdir().expect("tmp");
    let db = sqlite_url(dir.path());
    let f = dir.path().join("cur.csv");
    let broken = rows("")
        .lines()
        .next()
        .expect("row")
        .replace("2024-04-01T00:00:00.000Z,444455556666", "2024-03-15T00:00:00.000Z,444455556666");
    std::fs::write(&f, format!("{HEADER}\n{}{broken}\n", rows(""))).expect("w");
    let (code, out, err) = run(&db, &["import", "--format", "aws-cur", f.to_str().expect("utf8")]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("9 rows, 1 quarantined"), "{out}");
    let (_, q, _) = run(&db, &["quarantine", "--load", "1"]);
    assert!(q.contains("not a calendar month as the CUR's billing period always is"), "{q}");
}

/// Two payers' reports with the same name (`daily-cur/2024-03`) in different folders, imported
/// by hand one after the other: each scope starts with its folder's absolute path, so the
/// second does not replace the first (it used to: the first payer's bill left the ledger).
#[test]
fn two_payers_reports_of_one_name_imported_by_hand_both_stay_current() {
    let dir = tempfile::tempdir().expect("tmp");
    let db = sqlite_url(dir.path());
    for payer in ["payer1", "payer2"] {
        let root = dir.path().join(payer);
        gz(&root.join("cur/daily-cur/20240301-20240401/a-1111/daily-cur-1.csv.gz"), &format!("{HEADER}\n{}", rows("")));
        manifest(&root, "a-1111");
    }
    let p = |n: &str| dir.path().join(n).to_str().expect("utf8").to_string();
    let (code, out, err) = run(&db, &["import", "--format", "aws-cur", &p("payer1")]);
    assert_eq!(code, 0, "{out}{err}");
    let (code, out, err) = run(&db, &["import", "--format", "aws-cur", &p("payer2")]);
    assert_eq!(code, 0, "{out}{err}");
    let l = line_of(&out, "daily-cur/2024-03");
    assert!(l.contains("loaded") && !l.contains("replaces"), "{out}");
    let (_, loads, _) = run(&db, &["loads"]);
    assert_eq!(loads.lines().filter(|l| l.contains("current")).count(), 2, "{loads}");
    // Importing the first again: skipped, not a restatement.
    let (_, out, _) = run(&db, &["import", "--format", "aws-cur", &p("payer1")]);
    assert!(line_of(&out, "daily-cur/2024-03").contains("skipped"), "{out}");
}

#[test]
fn the_public_cur_sample_fills_the_focus_columns_the_cur_carries() {
    let dir = tempfile::tempdir().expect("tmp");
    let db = sqlite_url(dir.path());
    let sample = fixture("aws/sample-anonymous-aws-export-dataset.csv");
    let (code, _, err) = run(&db, &["import", "--format", "aws-cur", sample.to_str().expect("utf8")]);
    assert_eq!(code, 0, "{err}");
    let (code, csv, err) = run(&db, &["export", "focus"]);
    assert_eq!(code, 0, "{err}");
    let mut rdr = csv::Reader::from_reader(csv.as_bytes());
    let h = rdr.headers().expect("h").clone();
    let col = |n: &str| h.iter().position(|x| x == n).unwrap_or_else(|| panic!("no {n} in {h:?}"));
    let (cat, freq, pricing, region, list) = (
        col("ChargeCategory"),
        col("ChargeFrequency"),
        col("PricingCategory"),
        col("RegionName"),
        col("ListUnitPrice"),
    );
    let (service, category, sub, unit, qty, contracted, billed) = (
        col("ServiceName"),
        col("ServiceCategory"),
        col("ServiceSubcategory"),
        col("PricingUnit"),
        col("PricingQuantity"),
        col("ContractedCost"),
        col("BilledCost"),
    );
    let mut counts: std::collections::BTreeMap<(String, String, String), u32> = Default::default();
    let mut services: std::collections::BTreeSet<(String, String, String)> = Default::default();
    let mut units: std::collections::BTreeSet<String> = Default::default();
    let (mut named, mut priced) = (0, 0);
    for r in rdr.records() {
        let r = r.expect("row");
        *counts.entry((r[cat].to_string(), r[freq].to_string(), r[pricing].to_string())).or_default() += 1;
        named += u32::from(!r[region].is_empty());
        priced += u32::from(!r[list].is_empty());
        services.insert((r[service].to_string(), r[category].to_string(), r[sub].to_string()));
        units.insert(r[unit].to_string());
        assert_eq!(&r[contracted], &r[billed], "ContractedCost is the unblended cost");
        if &r[cat] == "Tax" {
            assert!(r[qty].is_empty() && r[unit].is_empty(), "a tax line has no pricing quantity or unit");
        }
    }
    assert!(services.contains(&("Amazon Simple Storage Service".into(), "Storage".into(), "Object Storage".into())));
    assert!(
        services.iter().all(|(_, c, s)| !c.is_empty() && !s.is_empty()),
        "every line has a ServiceCategory and Subcategory: {services:?}"
    );
    assert!(units.contains("GB-Months") && units.contains("Obj-Months") && !units.contains("GB-Mo"), "{units:?}");
    // 901 OnDemand usage lines, 368 usage lines without a term, 12 tax lines (the file's counts).
    let want: std::collections::BTreeMap<(String, String, String), u32> = [
        (("Tax", "One-Time", ""), 12),
        (("Usage", "Usage-Based", ""), 368),
        (("Usage", "Usage-Based", "Standard"), 901),
    ]
    .into_iter()
    .map(|((a, b, c), n)| ((a.to_string(), b.to_string(), c.to_string()), n))
    .collect();
    assert_eq!(counts, want);
    // Every line with a region has its name (product/location, else AWS's name for the code);
    // pricing/publicOnDemandRate is on 1269 lines.
    assert_eq!((named, priced), (1269, 1269));
}
