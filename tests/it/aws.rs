//! AWS connectors against real servers on loopback: moto's server for S3 (buckets laid out as
//! AWS delivers CUR and Data Exports) and Cost Explorer (answers queued through moto's
//! `/moto-api/static/ce/cost-and-usage-results`), and a loopback server that throttles, for the
//! retry path. Loaded into a real SQLite ledger through the load contract.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::common::cur::*;
use crate::common::*;
use chrono::{DateTime, TimeZone, Utc};
use costledger::ingest::{IngestError, LoadOutcome, LoadReport, ingest_source};
use costledger::ledger::LedgerStore;
use costledger_aws::{
    AwsFormat, CostExplorerParams, Credentials, FileParams, RetryParams, S3Params, build_cost_explorer, build_files,
};
use costledger_core::{BillingPeriod, Connector, ConnectorError, Context, PeriodWindow};
use serde_json::json;

const MARCH: PeriodWindow =
    PeriodWindow { from: BillingPeriod { year: 2024, month: 3 }, to: BillingPeriod { year: 2024, month: 3 } };
const FEB_MAR: PeriodWindow =
    PeriodWindow { from: BillingPeriod { year: 2024, month: 2 }, to: BillingPeriod { year: 2024, month: 3 } };

fn keys() -> Credentials {
    Credentials {
        access_key_id: Some("AKIDTEST".into()),
        secret_access_key: Some("secret".into()),
        ..Default::default()
    }
}

fn s3_source(url: &str, bucket: &str, prefix: &str) -> FileParams {
    FileParams {
        s3: Some(S3Params {
            bucket: Some(bucket.into()),
            prefix: prefix.into(),
            region: Some("us-east-1".into()),
            endpoint_url: Some(url.into()),
            force_path_style: None,
        }),
        credentials: keys(),
        ..Default::default()
    }
}

async fn ingest(
    s: &dyn LedgerStore,
    c: &dyn Connector,
    w: PeriodWindow,
) -> Result<Vec<Result<LoadReport, IngestError>>, IngestError> {
    ingest_source(s, "aws", c, w, &Context::new("aws"), None).await
}

fn only(r: &[Result<LoadReport, IngestError>]) -> &LoadReport {
    assert_eq!(r.len(), 1, "one delivery: {r:?}");
    r[0].as_ref().expect("loaded")
}

fn cur_manifest(assembly: &str, files: &[&str]) -> Vec<u8> {
    let keys: Vec<String> = files.iter().map(|f| format!("cur/daily-cur/20240301-20240401/{assembly}/{f}")).collect();
    json!({
        "assemblyId": assembly, "account": "111122223333", "charset": "UTF-8", "compression": "GZIP",
        "contentType": "text/csv", "reportName": "daily-cur",
        "billingPeriod": {"start": "20240301T000000.000Z", "end": "20240401T000000.000Z"},
        "bucket": "acme-cur", "reportKeys": keys
    })
    .to_string()
    .into_bytes()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cur_from_s3_a_new_assembly_replaces_the_month() {
    let Some(moto) = moto::start() else { return };
    moto.bucket("acme-cur").await;
    let month = "cur/daily-cur/20240301-20240401";
    let first = format!("{HEADER}\n{}", rows(""));
    moto.put("acme-cur", &format!("{month}/a-1111/daily-cur-1.csv.gz"), gz_bytes(&first)).await;
    // The assembly-level copy of the manifest is not the month's manifest: never read as such.
    moto.put(
        "acme-cur",
        &format!("{month}/a-1111/daily-cur-Manifest.json"),
        cur_manifest("a-1111", &["daily-cur-1.csv.gz"]),
    )
    .await;
    moto.put("acme-cur", &format!("{month}/daily-cur-Manifest.json"), cur_manifest("a-1111", &["daily-cur-1.csv.gz"]))
        .await;
    // Noise outside the prefix is not listed.
    moto.put("acme-cur", "other/unrelated.csv", b"a,b\n1,2\n".to_vec()).await;

    let (s, _dir) = sqlite_store().await;
    let c = build_files(&s3_source(&moto.url, "acme-cur", "cur/"), false).await.expect("build");
    let r = ingest(s.as_ref(), &c, MARCH).await.expect("ingest");
    let r = only(&r);
    assert_eq!(r.scope, "daily-cur/2024-03");
    assert!(matches!(r.outcome, LoadOutcome::Created { superseded: None, .. }), "{r:?}");
    assert_eq!((r.rows, r.quarantined), (9, 0));
    assert_eq!(total(s.as_ref(), "USD").await.to_string(), "15.3386623424");
    assert_eq!(c.api_calls(), 3, "list, month manifest, one data object");

    // The same manifest again: skipped without downloading the data.
    let r = ingest(s.as_ref(), &c, MARCH).await.expect("ingest");
    assert!(matches!(only(&r).outcome, LoadOutcome::Skipped { .. }));
    assert_eq!(c.api_calls(), 5, "list and manifest only");

    // AWS delivers assembly b-2222 in two files: it replaces the month, it is not added to it.
    let changed =
        rows("").replace(",0.0960000000,0.0960000000,0.0960000000,", ",0.0960000000,0.1000000000,0.0960000000,");
    let lines: Vec<&str> = changed.lines().collect();
    let part1 = format!("{HEADER}\n{}\n", lines[..4].join("\n"));
    let part2 = format!("{HEADER}\n{}\n", lines[4..].join("\n"));
    moto.put("acme-cur", &format!("{month}/b-2222/daily-cur-1.csv.gz"), gz_bytes(&part1)).await;
    moto.put("acme-cur", &format!("{month}/b-2222/daily-cur-2.csv.gz"), gz_bytes(&part2)).await;
    moto.put(
        "acme-cur",
        &format!("{month}/daily-cur-Manifest.json"),
        cur_manifest("b-2222", &["daily-cur-1.csv.gz", "daily-cur-2.csv.gz"]),
    )
    .await;
    let r = ingest(s.as_ref(), &c, MARCH).await.expect("ingest");
    let r = only(&r);
    assert!(matches!(r.outcome, LoadOutcome::Created { superseded: Some(_), .. }), "{r:?}");
    assert_eq!(r.rows, 9);
    assert_eq!(total(s.as_ref(), "USD").await.to_string(), "15.3426623424", "the second assembly, not the sum");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cur_manifest_naming_a_missing_file_fails_and_changes_nothing() {
    let Some(moto) = moto::start() else { return };
    moto.bucket("acme-cur").await;
    let month = "cur/daily-cur/20240301-20240401";
    moto.put("acme-cur", &format!("{month}/daily-cur-Manifest.json"), cur_manifest("c-3333", &["daily-cur-1.csv.gz"]))
        .await;
    let (s, _dir) = sqlite_store().await;
    let c = build_files(&s3_source(&moto.url, "acme-cur", "cur/"), false).await.expect("build");
    let e = ingest(s.as_ref(), &c, MARCH).await.expect_err("incomplete delivery");
    let msg = e.to_string();
    assert!(
        msg.contains("s3://acme-cur/cur/daily-cur/20240301-20240401/daily-cur-Manifest.json")
            && msg.contains("c-3333/daily-cur-1.csv.gz, which is not there")
            && msg.contains("sync the whole delivery"),
        "{msg}"
    );
    assert_eq!(total(s.as_ref(), "USD").await.to_string(), "0");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_errors_say_what_to_do() {
    let Some(moto) = moto::start() else { return };
    let (s, _dir) = sqlite_store().await;
    let c = build_files(&s3_source(&moto.url, "no-such-bucket", ""), false).await.expect("build");
    let e = c.check(&Context::new("aws")).await.expect_err("no bucket");
    assert!(!e.is_retriable(), "{e}");
    assert!(e.to_string().contains("NoSuchBucket") && e.to_string().contains("check s3.bucket"), "{e}");
    let e = ingest(s.as_ref(), &c, MARCH).await.expect_err("listing fails");
    assert!(e.to_string().starts_with("source 'aws': cannot list deliveries: s3://no-such-bucket/"), "{e}");
    // Nothing listening: a transient error the daemon retries.
    let port = std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("a").port();
    let c = build_files(&s3_source(&format!("http://127.0.0.1:{port}"), "acme-cur", ""), false).await.expect("build");
    let e = c.check(&Context::new("aws")).await.expect_err("refused");
    assert!(e.is_retriable(), "{e}");
}

fn cur2_header() -> &'static str {
    "bill_payer_account_id,bill_billing_period_start_date,bill_billing_period_end_date,line_item_usage_account_id,line_item_line_item_type,line_item_usage_start_date,line_item_usage_end_date,line_item_product_code,line_item_currency_code,line_item_unblended_cost,resource_tags"
}

fn cur2_row(cost: &str) -> String {
    format!(
        "111122223333,2024-03-01T00:00:00Z,2024-04-01T00:00:00Z,444455556666,Usage,2024-03-05T10:00:00Z,2024-03-05T11:00:00Z,AmazonEC2,USD,{cost},\"{{\"\"user_team\"\":\"\"payments\"\"}}\"\n"
    )
}

fn de_manifest(exec: &str, files: &[String]) -> Vec<u8> {
    json!({
        "version": "1.0", "executionId": exec,
        "exportArn": "arn:aws:bcm-data-exports:us-east-1:111122223333:export/cur2-0123",
        "columns": [{"name": "line_item_unblended_cost", "type": "double"}],
        "dataFiles": files.iter().map(|f| format!("s3://acme-de/{f}")).collect::<Vec<_>>(),
        "billingPeriod": {"start": "2024-03-01T00:00:00.000Z", "end": "2024-04-01T00:00:00.000Z"}
    })
    .to_string()
    .into_bytes()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_exports_from_s3_follow_the_manifest_execution() {
    let Some(moto) = moto::start() else { return };
    moto.bucket("acme-de").await;
    let data = "exports/cur2/data/BILLING_PERIOD=2024-03";
    let meta = "exports/cur2/metadata/BILLING_PERIOD=2024-03/cur2-Manifest.json";
    let f1 = format!("{data}/exec-1/cur2-00001.csv.gz");
    let f2 = format!("{data}/exec-1/cur2-00002.csv.gz");
    moto.put("acme-de", &f1, gz_bytes(&format!("{}\n{}{}", cur2_header(), cur2_row("1.25"), cur2_row("2.5E-1")))).await;
    moto.put("acme-de", &f2, gz_bytes(&format!("{}\n{}", cur2_header(), cur2_row("3")))).await;
    moto.put("acme-de", meta, de_manifest("exec-1", &[f1.clone(), f2.clone()])).await;
    let (s, _dir) = sqlite_store().await;
    let c = build_files(&s3_source(&moto.url, "acme-de", "exports/"), true).await.expect("build");
    assert_eq!(c.kind(), "aws_data_exports");
    let r = ingest(s.as_ref(), &c, MARCH).await.expect("ingest");
    let r = only(&r);
    assert_eq!(r.scope, "exports/cur2/2024-03");
    assert_eq!(r.rows, 3);
    assert_eq!(total(s.as_ref(), "USD").await.to_string(), "4.5");

    // A refresh: a new execution folder and manifest. The old execution's files stay in the
    // bucket and are not read again.
    let g1 = format!("{data}/exec-2/cur2-00001.csv.gz");
    moto.put("acme-de", &g1, gz_bytes(&format!("{}\n{}{}", cur2_header(), cur2_row("1.25"), cur2_row("4")))).await;
    moto.put("acme-de", meta, de_manifest("exec-2", std::slice::from_ref(&g1))).await;
    let r = ingest(s.as_ref(), &c, MARCH).await.expect("ingest");
    assert!(matches!(only(&r).outcome, LoadOutcome::Created { superseded: Some(_), .. }));
    assert_eq!(total(s.as_ref(), "USD").await.to_string(), "5.25", "the new execution replaces the period");
    let r = ingest(s.as_ref(), &c, MARCH).await.expect("ingest");
    assert!(matches!(only(&r).outcome, LoadOutcome::Skipped { .. }));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aws_focus_export_and_loose_objects_keyed_by_etag() {
    let Some(moto) = moto::start() else { return };
    moto.bucket("acme-de").await;
    // A FOCUS export period without a manifest: its files as they are, keyed by their ETags.
    let sample = std::fs::read(fixture("focus/focus_sample.csv")).expect("focus sample");
    moto.put(
        "acme-de",
        "focus/aws-focus/data/BILLING_PERIOD=2024-09/aws-focus-00001.csv.gz",
        gz_bytes(&String::from_utf8(sample).expect("utf8")),
    )
    .await;
    let (s, _dir) = sqlite_store().await;
    let mut p = s3_source(&moto.url, "acme-de", "focus/");
    p.format = Some(AwsFormat::Focus);
    let c = build_files(&p, true).await.expect("build");
    let r = ingest(s.as_ref(), &c, MARCH).await.expect("ingest");
    let r = only(&r);
    assert_eq!((r.scope.as_str(), r.rows), ("focus/aws-focus/2024-09", 1000));
    assert_eq!(total(s.as_ref(), "USD").await.to_string(), "20.52022672899");
    let calls = c.api_calls();
    let r = ingest(s.as_ref(), &c, MARCH).await.expect("ingest");
    assert!(matches!(only(&r).outcome, LoadOutcome::Skipped { .. }));
    assert_eq!(c.api_calls(), calls + 1, "the unchanged ETag is skipped after one listing, nothing downloaded");

    // A loose CUR object: its own delivery; rewritten, it replaces itself.
    let (s, _dir2) = sqlite_store().await;
    moto.put("acme-de", "loose/march.csv", format!("{HEADER}\n{}", rows("")).into_bytes()).await;
    let c = build_files(&s3_source(&moto.url, "acme-de", "loose/"), false).await.expect("build");
    let r = ingest(s.as_ref(), &c, MARCH).await.expect("ingest");
    assert_eq!(only(&r).scope, "loose/march.csv");
    let r = ingest(s.as_ref(), &c, MARCH).await.expect("ingest");
    assert!(matches!(only(&r).outcome, LoadOutcome::Skipped { .. }));
    moto.put("acme-de", "loose/march.csv", format!("{HEADER}\n{}", rows("2024-0123")).into_bytes()).await;
    let r = ingest(s.as_ref(), &c, MARCH).await.expect("ingest");
    assert!(matches!(only(&r).outcome, LoadOutcome::Created { superseded: Some(_), .. }));
    assert_eq!(total(s.as_ref(), "USD").await.to_string(), "15.3386623424");
}

// ---------------------------------------------------------------------------------------------
// Cost Explorer

fn march_2() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2024, 3, 2, 12, 0, 0).single().expect("t")
}

fn ce_params(url: &str) -> CostExplorerParams {
    CostExplorerParams {
        region: "us-east-1".into(),
        endpoint_url: Some(url.into()),
        credentials: keys(),
        billed_metric: "UnblendedCost".into(),
        effective_metric: "AmortizedCost".into(),
        tag_key: None,
        billing_account_id: Some("111122223333".into()),
        retry: RetryParams { attempts: 4, initial_backoff_ms: 10, max_backoff_ms: 5_000 },
    }
}

fn group(keys: &[&str], unblended: &str, amortized: &str) -> serde_json::Value {
    json!({"Keys": keys, "Metrics": {
        "UnblendedCost": {"Amount": unblended, "Unit": "USD"},
        "AmortizedCost": {"Amount": amortized, "Unit": "USD"}}})
}

fn day_result(start: &str, end: &str, groups: Vec<serde_json::Value>, estimated: bool) -> serde_json::Value {
    json!({"TimePeriod": {"Start": start, "End": end}, "Total": {}, "Groups": groups, "Estimated": estimated})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cost_explorer_pages_months_and_estimated_flag() {
    let Some(moto) = moto::start() else { return };
    let names = json!([{"Value": "111122223333", "Attributes": {"description": "payer"}},
                       {"Value": "444455556666", "Attributes": {"description": "payments-prod"}}]);
    moto.queue_ce(vec![
        // February, page 1 of 2 (closed month, no longer estimated).
        json!({"GroupDefinitions": [], "ResultsByTime": [
            day_result("2024-02-01", "2024-02-02", vec![
                group(&["111122223333", "Amazon Elastic Compute Cloud - Compute"], "41.2307691200", "38.9901200000"),
                group(&["111122223333", "Tax"], "3.918", "3.918")], false)],
            "DimensionValueAttributes": names, "NextPageToken": "page-2"}),
        // February, page 2: the same day continues with other groups.
        json!({"ResultsByTime": [
            day_result("2024-02-01", "2024-02-02", vec![
                group(&["444455556666", "Amazon Simple Storage Service"], "0.0000023419", "0.0000023419"),
                group(&["444455556666", "Amazon Relational Database Service"], "-7.5", "-7.5")], false)],
            "DimensionValueAttributes": names}),
        // March to date (estimated).
        json!({"ResultsByTime": [
            day_result("2024-03-01", "2024-03-02", vec![
                group(&["444455556666", "Amazon Elastic Compute Cloud - Compute"], "1E-10", "0")], true),
            day_result("2024-03-02", "2024-03-03", vec![], true)],
            "DimensionValueAttributes": names}),
    ])
    .await;
    let (s, _dir) = sqlite_store().await;
    let c = build_cost_explorer(&ce_params(&moto.url)).await.with_clock(Arc::new(march_2));
    let r = ingest(s.as_ref(), &c, FEB_MAR).await.expect("ingest");
    assert_eq!(r.len(), 2, "{r:?}");
    let feb = r[0].as_ref().expect("feb");
    let mar = r[1].as_ref().expect("mar");
    assert_eq!((feb.scope.as_str(), feb.rows), ("ce/2024-02", 4));
    assert_eq!((mar.scope.as_str(), mar.rows), ("ce/2024-03", 1));
    assert_eq!(total(s.as_ref(), "USD").await.to_string(), "37.648771462", "exact decimal strings, pages merged");
    assert_eq!(c.api_calls(), 3, "two pages of February, one of March");
    let periods = s.billing_periods().await.expect("periods");
    let state =
        |p: &str| periods.iter().find(|x| x.period == p).map(|x| x.state.as_str().to_string()).unwrap_or_default();
    assert_eq!(state("2024-02"), "final", "{periods:?}");
    assert_eq!(state("2024-03"), "open", "{periods:?}");

    // Next run (a new connector, as the daemon builds one per run): the ledger holds February
    // as final, so it is not asked again; March's answer is unchanged: skipped.
    let c = build_cost_explorer(&ce_params(&moto.url)).await.with_clock(Arc::new(march_2));
    let r = ingest(s.as_ref(), &c, FEB_MAR).await.expect("ingest");
    assert_eq!(r.len(), 1);
    assert!(matches!(r[0].as_ref().expect("mar").outcome, LoadOutcome::Skipped { .. }));
    assert_eq!(c.api_calls(), 1, "one call, for March only");
    assert_eq!(total(s.as_ref(), "USD").await.to_string(), "37.648771462");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cost_explorer_tag_split_and_untagged_cost() {
    let Some(moto) = moto::start() else { return };
    moto.queue_ce(vec![
        // Which accounts March has (LINKED_ACCOUNT x SERVICE).
        json!({"ResultsByTime": [day_result("2024-03-01", "2024-03-02", vec![
            group(&["444455556666", "Amazon Elastic Compute Cloud - Compute"], "10", "10"),
            group(&["777788889999", "Amazon Simple Storage Service"], "0.5", "0.5")], true)],
            "DimensionValueAttributes": [{"Value": "444455556666", "Attributes": {"description": "payments-prod"}}]}),
        // 444455556666 by SERVICE x TAG team.
        json!({"ResultsByTime": [day_result("2024-03-01", "2024-03-02", vec![
            group(&["Amazon Elastic Compute Cloud - Compute", "team$payments"], "7.25", "7.25"),
            group(&["Amazon Elastic Compute Cloud - Compute", "team$"], "2.75", "2.75")], true)]}),
        // 777788889999.
        json!({"ResultsByTime": [day_result("2024-03-01", "2024-03-02", vec![
            group(&["Amazon Simple Storage Service", "team$search"], "0.5", "0.5")], true)]}),
    ])
    .await;
    let (s, _dir) = sqlite_store().await;
    let mut p = ce_params(&moto.url);
    p.tag_key = Some("team".into());
    let c = build_cost_explorer(&p).await.with_clock(Arc::new(march_2));
    let r = ingest(s.as_ref(), &c, MARCH).await.expect("ingest");
    assert_eq!(only(&r).rows, 3);
    assert_eq!(c.api_calls(), 3, "accounts, then one call per account");
    assert_eq!(total(s.as_ref(), "USD").await.to_string(), "10.5");
    let db = format!("sqlite://{}", _dir.path().join("ledger.db").display());
    let (_, csv, _) = run(&db, &["export", "csv"]);
    assert!(csv.contains("\"{\"\"team\"\":\"\"payments\"\"}\""), "{csv}");
    assert!(csv.contains("\"{\"\"team\"\":\"\"search\"\"}\""), "{csv}");
    assert!(!csv.contains("\"\"team\"\":\"\"\"\""), "team$ is an absent tag, not an empty one: {csv}");
    assert!(csv.contains("payments-prod"), "account names from DimensionValueAttributes: {csv}");
}

/// A loopback Cost Explorer that answers ThrottlingException (with `x-amz-retry-after`) a given
/// number of times, then one page.
async fn throttling_ce(throttles: usize) -> (String, Arc<Mutex<Vec<Instant>>>) {
    use axum::http::{HeaderMap, StatusCode};
    use axum::response::IntoResponse;
    let seen: Arc<Mutex<Vec<Instant>>> = Arc::default();
    let n = Arc::new(AtomicUsize::new(0));
    let (seen2, n2) = (seen.clone(), n.clone());
    let app = axum::Router::new().route(
        "/",
        axum::routing::post(move |h: HeaderMap, _body: String| {
            let (seen, n) = (seen2.clone(), n2.clone());
            async move {
                seen.lock().expect("lock").push(Instant::now());
                assert_eq!(
                    h.get("x-amz-target").and_then(|v| v.to_str().ok()),
                    Some("AWSInsightsIndexService.GetCostAndUsage")
                );
                let ct = [("content-type", "application/x-amz-json-1.1")];
                if n.fetch_add(1, Ordering::SeqCst) < throttles {
                    return (
                        StatusCode::BAD_REQUEST,
                        [("content-type", "application/x-amz-json-1.1"), ("x-amz-retry-after", "700")],
                        r#"{"__type":"com.amazon.coral.availability#ThrottlingException","message":"Rate exceeded"}"#,
                    )
                        .into_response();
                }
                let body = json!({"ResultsByTime": [day_result("2024-03-01", "2024-03-02", vec![
                    group(&["444455556666", "Amazon Elastic Compute Cloud - Compute"], "12.5", "12.5")], true)]});
                (StatusCode::OK, ct, body.to_string()).into_response()
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(listener, app).await.expect("serve") });
    (format!("http://{addr}"), seen)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cost_explorer_throttling_is_retried_with_the_waits_asked_for() {
    let (url, seen) = throttling_ce(2).await;
    let (s, _dir) = sqlite_store().await;
    let c = build_cost_explorer(&ce_params(&url)).await.with_clock(Arc::new(march_2));
    let r = ingest(s.as_ref(), &c, MARCH).await.expect("ingest");
    assert_eq!(only(&r).rows, 1);
    assert_eq!(total(s.as_ref(), "USD").await.to_string(), "12.5", "loaded once, not once per attempt");
    let t = seen.lock().expect("lock").clone();
    assert_eq!(t.len(), 3, "two throttled attempts, then success");
    assert_eq!(c.api_calls(), 3, "every attempt is counted (each is billed)");
    for w in t.windows(2) {
        assert!(w[1] - w[0] >= Duration::from_millis(700), "x-amz-retry-after honoured: {:?}", w[1] - w[0]);
    }

    // Throttled beyond the retry budget: a rate-limit error the daemon backs off on, nothing loaded.
    let (url, _seen) = throttling_ce(10).await;
    let (s, _dir) = sqlite_store().await;
    let mut p = ce_params(&url);
    p.retry.attempts = 2;
    let c = build_cost_explorer(&p).await.with_clock(Arc::new(march_2));
    let e = ingest(s.as_ref(), &c, MARCH).await.expect_err("throttled");
    match &e {
        IngestError::Listing { error: ConnectorError::RateLimited { retry_after }, .. } => {
            assert_eq!(*retry_after, Some(Duration::from_millis(700)))
        }
        other => panic!("{other:?}"),
    }
    assert!(e.is_retriable());
    assert_eq!(total(s.as_ref(), "USD").await.to_string(), "0");
}

#[test]
fn check_config_reports_bad_aws_settings_at_once() {
    let dir = tempfile::tempdir().expect("tmp");
    let cfg = dir.path().join("c.yaml");
    std::fs::write(
        &cfg,
        r#"
sources:
  - name: cur
    type: aws_cur
    s3: { prefix: cur/, region: us-east-1 }
  - name: de
    type: aws_data_exports
    s3: { bucket: acme-de, region: eu_central_1, endpoint_url: "localhost:9000" }
  - name: ce
    type: aws_cost_explorer
    endpoint_url: "http://127.0.0.1:port"
    region: moon-1
    billed_metric: Dollars
"#,
    )
    .expect("write");
    let out = bin().arg("--config").arg(&cfg).arg("check-config").output().expect("run");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    for want in [
        "sources[0].s3.bucket: is required",
        "sources[1].s3.region: 'eu_central_1' is not an AWS region",
        "sources[1].s3.endpoint_url: 'localhost:9000' must start with http:// or https://",
        "sources[2].endpoint_url: 'http://127.0.0.1:port' has an invalid port 'port'",
        "sources[2].region: 'moon-1' is not an AWS region",
        "sources[2].billed_metric: 'Dollars' is not one of",
    ] {
        assert!(err.contains(want), "missing '{want}' in:\n{err}");
    }
}
