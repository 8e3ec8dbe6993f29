//! OCI cost report normalisation from fixtures: one `check` helper per format.

use std::collections::BTreeMap;
use std::path::PathBuf;

use costledger_core::{Batch, ChargeClass, ExactSum, Totals};
use costledger_files::reader::{RecordFormat, stream_files_as};
use costledger_oci::cost_report::CostReportColumns;
use costledger_oci::usage::{UsageQuery, item_line};
use futures::StreamExt;

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name)
}

async fn read(path: PathBuf) -> Result<Vec<Batch>, costledger_core::ConnectorError> {
    let mut cx = costledger_core::Context::new("t");
    cx.batch_rows = 100;
    let mut s = stream_files_as::<CostReportColumns>(vec![path], &cx);
    let mut out = Vec::new();
    while let Some(b) = s.next().await {
        out.push(b?);
    }
    Ok(out)
}

fn totals(batches: &[Batch]) -> (Totals, usize, usize) {
    let mut t = Totals::default();
    let (mut lines, mut errors) = (0, 0);
    for b in batches {
        for l in &b.lines {
            t.add(&l.billing_currency, l.billed_cost).expect("add");
        }
        lines += b.lines.len();
        errors += b.errors.len();
    }
    (t, lines, errors)
}

const HEADER: &str = "lineItem/referenceNo,lineItem/tenantId,lineItem/intervalUsageStart,lineItem/intervalUsageEnd,product/service,product/compartmentId,product/compartmentName,product/region,product/availabilityDomain,product/resourceId,usage/billedQuantity,usage/billedQuantityOverage,cost/subscriptionId,cost/productSku,product/Description,cost/unitPrice,cost/unitPriceOverage,cost/myCost,cost/myCostOverage,cost/currencyCode,cost/billingUnitReadable,cost/skuUnitDescription,cost/overageFlag,lineItem/isCorrection,lineItem/backreferenceNo,tags/Oracle-Tags.CreatedBy,tags/free-form";

/// One CSV body → the lines' (BilledCost, class, tags) and the row errors' reasons.
async fn check(body: &str) -> (Vec<(String, Option<ChargeClass>, BTreeMap<String, String>)>, Vec<String>) {
    let dir = tempfile::tempdir().expect("tmp");
    let p = dir.path().join("report.csv");
    std::fs::write(&p, format!("{HEADER}\n{body}")).expect("write");
    let batches = read(p).await.expect("readable");
    let mut lines = Vec::new();
    let mut errors = Vec::new();
    for b in batches {
        for l in b.lines {
            lines.push((l.billed_cost.to_string(), l.charge_class, l.tags));
        }
        errors.extend(b.errors.into_iter().map(|e| e.reason));
    }
    (lines, errors)
}

fn row(reference: &str, start: &str, cost: &str, currency: &str, correction: &str, backref: &str) -> String {
    format!(
        "{reference},ocid1.tenancy.oc1..t,{start},2023-11-13T11:00:00Z,COMPUTE,ocid1.compartment.oc1..c,payments,us-ashburn-1,AD-1,ocid1.instance.oc1..i,2,,,B1,Compute,0.5,,{cost},,{currency},1 HOURS,Hours,false,{correction},{backref},default/ana@example.com,blue\n"
    )
}

#[tokio::test]
async fn the_public_oci_cost_report_totals_exactly() {
    let batches = read(fixture("reports_cost-csv_0000000030000269.csv")).await.expect("read");
    let (t, lines, errors) = totals(&batches);
    assert_eq!((lines, errors), (506, 0));
    assert_eq!(t.get("USD"), "2.523589325400648027".parse::<ExactSum>().expect("sum"));
    let first = &batches[0].lines[0];
    assert_eq!(first.charge_period_start.to_rfc3339(), "2023-11-13T10:00:00+00:00", "start without seconds");
    assert_eq!(first.billing_period_start.to_rfc3339(), "2023-11-01T00:00:00+00:00");
    assert!(first.billing_account_id.starts_with("ocid1.organizationssubscription."), "subscription = billing account");
    assert_eq!(
        first.sub_account_id.as_deref(),
        Some("ocid1.tenancy.oc1..aaaaaaaadsyhydp66mjpsohqocfcgzaabtrit47ex2igzu2j6lhuadrrglca")
    );
    assert_eq!(first.tags.get("Oracle-Tags.CreatedBy").map(String::as_str), Some("default/user.two@example.com"));
    assert_eq!(first.x_extra.get("oci_CompartmentName").map(String::as_str), Some("platformpm2022"));
    // E-notation amounts parse exactly (row 2: 2.323760000E-9).
    let second = &batches[0].lines[1];
    assert_eq!(second.billed_cost.to_string(), "0.000000002323760000");
    // A tag key with a backslash survives.
    let keys: std::collections::BTreeSet<&String> =
        batches.iter().flat_map(|b| b.lines.iter()).flat_map(|l| l.tags.keys()).collect();
    assert!(keys.iter().any(|k| k.contains('\\')), "{keys:?}");
}

#[tokio::test]
async fn corrections_are_their_own_lines_so_totals_equal_oracles() {
    let body = [
        row("ref-1", "2023-11-13T10:00Z", "10.00", "USD", "false", ""),
        row("ref-2", "2023-11-13T10:00Z", "-2.50", "USD", "true", "ref-1"),
        row("ref-3", "2023-11-13T10:00Z", "1.2E-3", "USD", "FALSE", ""),
    ]
    .concat();
    let (lines, errors) = check(&body).await;
    assert!(errors.is_empty(), "{errors:?}");
    assert_eq!(lines[0].0, "10.00");
    assert_eq!((lines[1].0.as_str(), lines[1].1), ("-2.50", Some(ChargeClass::Correction)));
    assert_eq!(lines[2].0, "0.0012");
    assert_eq!(lines[0].2.get("free-form").map(String::as_str), Some("blue"), "free-form tag without namespace");
}

#[tokio::test]
async fn bad_rows_are_quarantined_with_the_reason() {
    let body = [
        row("ref-1", "2023-11-13T10:00Z", "abc", "USD", "false", ""),
        row("ref-2", "2023-11-13T10:00Z", "1", "XYZ", "false", ""),
        row("ref-3", "2023-13-13T10:00Z", "1", "USD", "false", ""),
        row("ref-4", "2023-11-13T10:00Z", "1", "USD", "maybe", ""),
        row("ref-5", "2023-11-13T10:00Z", "", "USD", "false", ""),
        row("ref-6", "2023-11-13T10:00Z", "3", "USD", "false", ""),
    ]
    .concat();
    let (lines, errors) = check(&body).await;
    assert_eq!(lines.len(), 1);
    assert_eq!(errors.len(), 5, "{errors:?}");
    assert!(errors[0].starts_with("cost/myCost:"), "{}", errors[0]);
    assert!(errors[1].contains("'XYZ' is not an ISO 4217"), "{}", errors[1]);
    assert!(errors[2].starts_with("lineItem/intervalUsageStart:"), "{}", errors[2]);
    assert!(errors[3].contains("isCorrection 'maybe'"), "{}", errors[3]);
    assert_eq!(errors[4], "cost/myCost is empty");
}

#[test]
fn a_report_without_required_columns_is_refused() {
    let header = csv::ByteRecord::from(vec!["lineItem/referenceNo", "cost/myCost"]);
    let e = CostReportColumns::from_header(&header).expect_err("missing");
    assert_eq!(
        e,
        "missing required column(s): lineItem/tenantId, lineItem/intervalUsageStart, lineItem/intervalUsageEnd, cost/currencyCode"
    );
    let dup = csv::ByteRecord::from(vec!["cost/myCost", "COST/MYCOST"]);
    assert!(CostReportColumns::from_header(&dup).expect_err("dup").contains("duplicate column"));
}

fn query() -> UsageQuery {
    UsageQuery {
        tenancy: "ocid1.tenancy.oc1..t".into(),
        billing_account_id: None,
        group_by: vec!["service".into()],
        group_by_tag: None,
        query_type: "COST".into(),
        page_limit: None,
    }
}

#[test]
fn usage_items_keep_json_numbers_exact() {
    let item = r#"{"tenantId":null,"compartmentName":"payments","service":"OBJECTSTORE","region":"us-ashburn-1","timeUsageStarted":"2024-03-01T00:00:00.000Z","timeUsageEnded":"2024-03-02T00:00:00.000Z","computedAmount":6.2660900E-12,"computedQuantity":0.1000000000000000055511151231257827,"currency":"USD","isForecast":false,"tags":[{"namespace":"Finance","key":"team","value":"payments"}]}"#;
    let (l, _) = item_line(&query(), item, "page 1 item 1").expect("ok").expect("not forecast");
    assert_eq!(l.billed_cost.to_string(), "0.0000000000062660900");
    // A float would have given 0.1: the 34 digits survive (rounded only beyond 28 places).
    assert_eq!(l.pricing_quantity.map(|q| q.to_string()).as_deref(), Some("0.1000000000000000055511151231"));
    assert_eq!(l.tags.get("Finance.team").map(String::as_str), Some("payments"));
    assert_eq!(l.sub_account_id.as_deref(), Some("ocid1.tenancy.oc1..t"));
    assert_eq!(l.billing_period_start.to_rfc3339(), "2024-03-01T00:00:00+00:00");
    let forecast = item.replace("\"isForecast\":false", "\"isForecast\":true");
    assert!(item_line(&query(), &forecast, "x").expect("ok").is_none());
    let bad = item.replace("\"currency\":\"USD\"", "\"currency\":null");
    assert!(item_line(&query(), &bad, "page 2 item 3").expect_err("bad").reason.contains("currency ''"));
    let missing = item.replace("\"computedAmount\":6.2660900E-12,", "");
    let e = item_line(&query(), &missing, "page 2 item 4").expect_err("bad");
    assert_eq!((e.reason.as_str(), e.location.as_str()), ("computedAmount is missing", "page 2 item 4"));
}
