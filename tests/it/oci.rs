//! OCI connectors against loopback servers that speak the real wire protocol and **verify every
//! request's signature** with the test key's public half (a request signed wrongly gets 401, so
//! these tests fail if signing breaks). Loaded into a real SQLite ledger.

use std::io::Write;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use crate::common::ocimock::*;
use crate::common::*;
use chrono::{DateTime, TimeZone, Utc};
use costledger::ingest::{IngestError, LoadOutcome, LoadReport, ingest_source};
use costledger::ledger::{ChargeFilter, LedgerStore};
use costledger_core::{Connector, Context, PeriodWindow};
use costledger_oci::{
    Credentials, ObjectStorageParams, ReportParams, RetryParams, UsageParams, build_reports, build_usage,
};

fn creds(key: &str) -> Credentials {
    Credentials {
        tenancy: Some(TENANCY.into()),
        user: Some(USER.into()),
        fingerprint: Some(FP.into()),
        key_file: Some(oci_fixture(key)),
        ..Default::default()
    }
}

fn fast_retry() -> RetryParams {
    RetryParams { attempts: 4, base_delay_ms: 10, max_delay_ms: 5_000 }
}

fn march_2() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2024, 3, 2, 12, 0, 0).single().expect("t")
}

const MARCH: PeriodWindow = PeriodWindow {
    from: costledger_core::BillingPeriod { year: 2024, month: 3 },
    to: costledger_core::BillingPeriod { year: 2024, month: 3 },
};

async fn ingest(s: &dyn LedgerStore, c: &dyn Connector) -> Result<Vec<Result<LoadReport, IngestError>>, IngestError> {
    ingest_source(s, "oci", c, MARCH, &Context::new("oci"), None).await
}

fn usage_params(endpoint: &str, key: &str) -> UsageParams {
    UsageParams {
        endpoint: Some(endpoint.into()),
        credentials: creds(key),
        group_by: Some(vec!["service".into(), "compartmentName".into()]),
        page_limit: Some(2),
        retry: fast_retry(),
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn usage_api_pages_load_exactly_once_and_restate() {
    let (mock, url) = serve().await;
    *mock.pages.lock().expect("lock") = vec![
        vec![usage_item(1, "COMPUTE", "12.448203125"), usage_item(1, "OBJECTSTORE", "6.2660900E-12")],
        vec![usage_item(2, "COMPUTE", "12.448203125"), usage_item(2, "NETWORK", "0.1")],
        vec![usage_item(2, "OBJECTSTORE", "1E-28")],
    ];
    let (s, _dir) = sqlite_store().await;
    let c = build_usage(&usage_params(&url, "oracle_test_key.pem")).expect("build").with_clock(march_2);
    let r = ingest(s.as_ref(), &c).await.expect("ingest");
    let r = r[0].as_ref().expect("loaded");
    assert!(matches!(r.outcome, LoadOutcome::Created { superseded: None, .. }));
    assert_eq!(r.rows, 5);
    assert_eq!(total(s.as_ref(), "USD").await.to_string(), "24.9964062500062660900000000001");
    assert_eq!(c.api_calls(), 3, "three pages, three calls");
    let body = mock.bodies.lock().expect("lock")[0].clone();
    assert!(
        body.contains("\"timeUsageStarted\":\"2024-03-01T00:00:00Z\"")
            && body.contains("\"timeUsageEnded\":\"2024-03-03T00:00:00Z\""),
        "{body}"
    );
    assert!(body.contains("\"granularity\":\"DAILY\"") && body.contains("\"queryType\":\"COST\""), "{body}");
    // The FOCUS columns the answer carries, mapped as for a cost report.
    let recs: Vec<_> = {
        use futures::StreamExt;
        s.charges(&ChargeFilter::default()).map(|r| r.expect("row")).collect::<Vec<_>>().await
    };
    let compute = recs.iter().find(|r| r.line.service_name.as_deref() == Some("COMPUTE")).expect("compute");
    assert_eq!(compute.line.service_category.as_deref(), Some("Compute"));
    let f = compute.line.focus.as_deref().expect("focus columns");
    assert_eq!(
        (f.text("ChargeFrequency"), f.text("ServiceSubcategory"), f.text("RegionName")),
        (Some("Usage-Based"), Some("Virtual Machines"), Some("US East (Ashburn)"))
    );
    // Same answer again: nothing changes.
    let again = ingest(s.as_ref(), &c).await.expect("ingest");
    assert!(matches!(again[0].as_ref().expect("ok").outcome, LoadOutcome::Skipped { .. }));
    assert_eq!(total(s.as_ref(), "USD").await.to_string(), "24.9964062500062660900000000001");
    // A late credit appears: the month is restated, not added to.
    mock.pages.lock().expect("lock")[2].push(usage_item(2, "COMPUTE", "-2.5"));
    let third = ingest(s.as_ref(), &c).await.expect("ingest");
    assert!(matches!(third[0].as_ref().expect("ok").outcome, LoadOutcome::Created { superseded: Some(_), .. }));
    assert_eq!(total(s.as_ref(), "USD").await.to_string(), "22.4964062500062660900000000001");
    assert_eq!(s.count_charges(&ChargeFilter::default()).await.expect("n"), 6);
    assert_eq!(mock.rejected.load(Ordering::SeqCst), 0, "every request was signed correctly");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn throttling_and_server_errors_are_retried_honouring_retry_after() {
    let (mock, url) = serve().await;
    *mock.pages.lock().expect("lock") =
        vec![vec![usage_item(1, "COMPUTE", "1.5")], vec![usage_item(2, "COMPUTE", "2.5")]];
    mock.faults.lock().expect("lock").extend([(429, "TooManyRequests", Some(1)), (500, "InternalServerError", None)]);
    let (s, _dir) = sqlite_store().await;
    let c = build_usage(&usage_params(&url, "oracle_test_key.pem")).expect("build").with_clock(march_2);
    let t0 = Instant::now();
    let r = ingest(s.as_ref(), &c).await.expect("ingest");
    assert!(r[0].is_ok(), "{:?}", r[0].as_ref().err());
    assert!(t0.elapsed() >= Duration::from_secs(1), "Retry-After: 1 was honoured");
    assert_eq!(c.api_calls(), 4, "429, 500, then two pages");
    assert_eq!(total(s.as_ref(), "USD").await.to_string(), "4", "nothing counted twice");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unauthorized_and_a_wrong_key_fail_with_a_clear_message() {
    let (mock, url) = serve().await;
    *mock.pages.lock().expect("lock") = vec![vec![usage_item(1, "COMPUTE", "1")]];
    mock.faults.lock().expect("lock").push_back((401, "NotAuthenticated", None));
    let (s, _dir) = sqlite_store().await;
    let c = build_usage(&usage_params(&url, "oracle_test_key.pem")).expect("build").with_clock(march_2);
    let e = ingest(s.as_ref(), &c).await.expect_err("401").to_string();
    assert!(e.contains("answered 401 NotAuthenticated"), "{e}");
    assert!(e.contains("Check tenancy, user, fingerprint and key_file"), "{e}");
    assert_eq!(c.api_calls(), 1, "401 is not retried");
    // A request signed with another key is rejected by the server's signature check.
    let wrong = build_usage(&usage_params(&url, "other_test_key.pem")).expect("build").with_clock(march_2);
    let e = ingest(s.as_ref(), &wrong).await.expect_err("rejected").to_string();
    assert!(e.contains("the signature does not verify"), "{e}");
    assert_eq!(mock.rejected.load(Ordering::SeqCst), 1);
    assert_eq!(total(s.as_ref(), "USD").await.to_string(), "0");
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(bytes).expect("gz");
    e.finish().expect("gz")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cost_reports_from_object_storage_load_each_object_once() {
    let (mock, url) = serve().await;
    let report = std::fs::read(oci_fixture("reports_cost-csv_0000000030000269.csv")).expect("fixture");
    let header = String::from_utf8_lossy(&report).lines().next().expect("header").to_string();
    let first_row = String::from_utf8_lossy(&report).lines().nth(1).expect("row").to_string();
    let cols: Vec<&str> = header.split(',').collect();
    let idx = |n: &str| cols.iter().position(|c| *c == n).expect("column");
    // A correction of the first row: -0.012264277499950943, pointing back at it.
    let mut fields: Vec<String> = first_row.split(',').map(str::to_string).collect();
    fields[idx("lineItem/referenceNo")] = "corr-1".into();
    fields[idx("cost/myCost")] = "-0.012264277499950943".into();
    fields[idx("lineItem/isCorrection")] = "true".into();
    fields[idx("lineItem/backreferenceNo")] = "7108a1f83bdbad70487bf0cf99cbe260".into();
    let correction = format!("{header}\n{}\n", fields.join(","));
    {
        let mut o = mock.objects.lock().expect("lock");
        o.insert("reports/cost-csv/0000000030000269.csv.gz".into(), gzip(&report));
        o.insert("reports/cost-csv/0000000030000270.csv.gz".into(), gzip(correction.as_bytes()));
        o.insert("reports/cost-csv/0000000030000271.csv.gz".into(), gzip(format!("{header}\n").as_bytes()));
        o.insert("reports/usage-csv/0000000030000269.csv.gz".into(), b"not a cost report".to_vec());
    }
    let params = ReportParams {
        object_storage: Some(ObjectStorageParams {
            namespace: None,
            bucket: Some(TENANCY.into()),
            prefix: None,
            region: None,
            endpoint: Some(url.clone()),
        }),
        credentials: creds("oracle_test_key.pem"),
        retry: fast_retry(),
        ..Default::default()
    };
    let (s, _dir) = sqlite_store().await;
    let c = build_reports(&params).expect("build");
    let r = ingest(s.as_ref(), &c).await.expect("ingest");
    assert_eq!(r.len(), 3, "three cost reports (the usage-csv prefix is not read)");
    for x in &r {
        assert!(matches!(x.as_ref().expect("ok").outcome, LoadOutcome::Created { .. }));
    }
    // 2.523589325400648027 − 0.012264277499950943: the correction is its own line.
    assert_eq!(total(s.as_ref(), "USD").await.to_string(), "2.511325047900697084");
    let all = ChargeFilter::default();
    let rec = s.charges(&all);
    use futures::StreamExt;
    let refs: Vec<String> = rec.filter_map(|r| async move { r.ok().and_then(|r| r.line.source_ref) }).collect().await;
    assert!(
        refs.iter().all(|r| r.starts_with(&format!("oci://bling/{TENANCY}/reports/cost-csv/"))),
        "{:?}",
        &refs[..2]
    );
    // Listing again: every object is skipped, no download.
    let before = mock.calls.load(Ordering::SeqCst);
    let again = ingest(s.as_ref(), &c).await.expect("ingest");
    assert!(again.iter().all(|x| matches!(x.as_ref().expect("ok").outcome, LoadOutcome::Skipped { .. })));
    assert_eq!(mock.calls.load(Ordering::SeqCst) - before, 2, "two list pages, no object downloads");
    assert_eq!(total(s.as_ref(), "USD").await.to_string(), "2.511325047900697084");
    // A new object arrives: only it loads.
    mock.objects
        .lock()
        .expect("lock")
        .insert("reports/cost-csv/0000000030000272.csv.gz".into(), gzip(correction.as_bytes()));
    let third = ingest(s.as_ref(), &c).await.expect("ingest");
    let created =
        third.iter().filter(|x| matches!(x.as_ref().expect("ok").outcome, LoadOutcome::Created { .. })).count();
    assert_eq!(created, 1);
    assert_eq!(mock.rejected.load(Ordering::SeqCst), 0);
}

#[test]
fn oci_config_is_validated_with_paths() {
    let text = r#"
sources:
  - name: u
    type: oci_usage_api
    region: US_EAST
    endpoint: "ftp://x"
    group_by: [service, team]
    credentials: { tenancy: "ocid1.compartment.oc1..x", user: "ocid1.user.oc1..u" }
  - name: r
    type: oci_cost_report
    format: parquet
  - name: ok
    type: oci_cost_report
    object_storage: { region: us-ashburn-1, bucket: "ocid1.tenancy.oc1..t" }
    credentials: { config_file: /etc/oci/config, profile: FINOPS }
"#;
    let e = costledger::config::Config::parse(text, &|_| None).expect_err("invalid");
    let text: Vec<String> = e.iter().map(|i| i.to_string()).collect();
    let has = |needle: &str| assert!(text.iter().any(|t| t.contains(needle)), "missing '{needle}' in {text:#?}");
    has("sources[0].region: 'US_EAST' is not an OCI region identifier");
    has("sources[0].endpoint: 'ftp://x' must be an http(s)://HOST[:PORT] URL");
    has("sources[0].group_by[1]: 'team' is not one of");
    has("sources[0].credentials: give all of tenancy, user, fingerprint and key_file, or none");
    has("sources[0].credentials.tenancy: 'ocid1.compartment.oc1..x' is not a tenancy OCID");
    has("sources[1].format: 'parquet' is not cost or focus");
    has("sources[1].path: is required: a directory of reports, or object_storage");
    assert_eq!(text.len(), 7, "{text:#?}");
}

#[test]
fn import_oci_cost_and_focus_reports_by_hand() {
    let dir = tempfile::tempdir().expect("tmp");
    let db = sqlite_url(dir.path());
    let cost = oci_fixture("reports_cost-csv_0000000030000269.csv");
    let (code, out, err) = run(&db, &["import", "--format", "oci-cost", cost.to_str().expect("utf8")]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("506 rows, 0 quarantined; BilledCost USD 2.523589325400648027"), "{out}");
    let focus = oci_fixture("oci_focus_report.csv");
    let (code, out, err) = run(&db, &["import", "--format", "oci-focus", focus.to_str().expect("utf8")]);
    assert_eq!(code, 0, "{err}");
    // 1.0536 + 0.00000030217 − 0.1536
    assert!(out.contains("3 rows, 0 quarantined; BilledCost USD 0.90000030217"), "{out}");
    let (_, csv, _) = run(&db, &["export", "csv", "--source", "import-oci-focus"]);
    assert!(
        csv.contains(",Oracle,Oracle,Oracle,us-ashburn-1,"),
        "aliases Provider/Publisher/InvoiceIssuer/Region: {csv}"
    );
    assert!(csv.contains("2024-03-01T00:00:00Z,2024-03-01T01:00:00Z"), "timestamps without seconds");
    // The wrong format for a file is a clear error, not a panic.
    let (code, out, _) = run(&db, &["import", "--format", "oci-cost", focus.to_str().expect("utf8")]);
    assert_eq!(code, 2);
    assert!(out.contains("missing required column(s): lineItem/tenantId"), "{out}");
    assert!(out.contains("use --format oci-focus for FOCUS reports"), "{out}");
}

/// A bucket synced as Oracle lays it out: cost reports, usage reports and FOCUS reports side by
/// side. `--format oci-cost` on the root loads the cost reports and skips the others with a
/// note (it used to fail with exit 2 on the usage reports).
#[test]
fn a_synced_bucket_with_usage_reports_beside_cost_reports_loads_the_cost_reports() {
    let dir = tempfile::tempdir().expect("tmp");
    let db = sqlite_url(dir.path());
    let root = dir.path().join("bling");
    let cost = root.join("reports/cost-csv");
    let usage = root.join("reports/usage-csv");
    let focus = root.join("FOCUS Reports/2024/03/01");
    for d in [&cost, &usage, &focus] {
        std::fs::create_dir_all(d).expect("mkdir");
    }
    std::fs::copy(oci_fixture("reports_cost-csv_0000000030000269.csv"), cost.join("0000000030000269.csv")).expect("cp");
    std::fs::write(
        usage.join("0000000030000270.csv"),
        "lineItem/referenceNo,lineItem/tenantId,usage/consumedQuantity\n1,ocid1.tenancy.oc1..x,3\n",
    )
    .expect("usage");
    std::fs::copy(oci_fixture("oci_focus_report.csv"), focus.join("focus.csv")).expect("cp");
    let (code, out, err) = run(&db, &["import", "--format", "oci-cost", root.to_str().expect("utf8")]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("source 'import-oci-cost': 1 delivery"), "{out}");
    assert!(out.contains("506 rows, 0 quarantined; BilledCost USD 2.523589325400648027"), "{out}");
    assert!(err.contains("skipped 1 OCI usage report(s)"), "{err}");
    assert!(err.contains("skipped 1 OCI FOCUS report(s) (import them with --format oci-focus)"), "{err}");
    let (code, out, err) = run(&db, &["import", "--format", "oci-focus", root.to_str().expect("utf8")]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("3 rows, 0 quarantined; BilledCost USD 0.90000030217"), "{out}");
}
