//! GCP billing export through `google-cloud-bigquery` against a wire-exact loopback BigQuery
//! server, into a real SQLite ledger; and extract files by hand.

use std::sync::atomic::Ordering;

use crate::common::bqmock::*;
use crate::common::*;
use chrono::{DateTime, TimeZone, Utc};
use costledger::ingest::{LoadOutcome, ingest_source};
use costledger::ledger::{ChargeFilter, Dim, LedgerStore};
use costledger_core::{BillingPeriod, Connector, Context, PeriodWindow};
use costledger_gcp::{GcpExportConnector, GcpParams, build};

fn params(url: &str) -> GcpParams {
    GcpParams {
        project: "acme-billing".into(),
        table: "acme-billing.billing.gcp_billing_export_v1_0123AB_CDEF45_6789AB".into(),
        anonymous: true,
        endpoint: Some(url.into()),
        location: Some("US".into()),
        max_bytes_billed: Some(10_000_000_000),
        attempts: 4,
        base_delay_ms: 10,
        ..Default::default()
    }
}

fn april_3() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2024, 4, 3, 12, 0, 0).single().expect("t")
}

const WINDOW: PeriodWindow =
    PeriodWindow { from: BillingPeriod { year: 2024, month: 3 }, to: BillingPeriod { year: 2024, month: 4 } };

async fn connector(url: &str) -> GcpExportConnector {
    build(&params(url)).await.expect("client").with_clock(april_3)
}

async fn ingest(s: &dyn LedgerStore, c: &dyn Connector) -> Vec<LoadOutcome> {
    ingest_source(s, "gcp", c, WINDOW, &Context::new("gcp"), None)
        .await
        .expect("ingest")
        .into_iter()
        .map(|r| r.expect("delivery").outcome)
        .collect()
}

async fn period_totals(s: &dyn LedgerStore) -> Vec<String> {
    s.totals(&ChargeFilter::default(), &[Dim::BillingPeriod, Dim::ChargeCategory])
        .await
        .expect("totals")
        .into_iter()
        .map(|r| {
            format!(
                "{} {} {} {}",
                r.keys[0].clone().unwrap_or_default(),
                r.keys[1].clone().unwrap_or_default(),
                r.currency,
                r.billed_cost
            )
        })
        .collect()
}

fn seed(bq: &Bq) {
    let mut p = bq.partitions.lock().expect("lock");
    let credits = r#"[{"name":"Sustained usage discount","full_name":null,"id":"sud-1","type":"SUSTAINED_USAGE_DISCOUNT","amount":"-0.219370"},{"name":"Free tier","id":"ft","type":"FREE_TIER","amount":"-1.0E-5"}]"#;
    p.insert(
        ("2024-03-01".into(), "202403".into()),
        vec![
            bq_row(
                "2024-03-01",
                0,
                "Compute Engine",
                "0.731234",
                1_709_262_000_123_456,
                &[("credits_json", credits), ("zone", "us-central1-a"), ("cost_at_list", "0.950604")],
            ),
            bq_row(
                "2024-03-01",
                1,
                "Cloud Storage",
                "0.000004",
                1_709_262_000_123_456,
                &[(
                    "labels_json",
                    r#"[{"key":"team","value":"payments"},{"key":"cost-center/π","value":"ünïcode, \"quoted\""}]"#,
                )],
            ),
            bq_row(
                "2024-03-01",
                2,
                "Invoice",
                "1.52",
                1_709_262_000_123_456,
                &[("cost_type", "tax"), ("project_id", "")],
            ),
            bq_row("2024-03-01", 3, "Compute Engine", "-0.05", 1_709_262_000_123_456, &[("cost_type", "adjustment")]),
            bq_row(
                "2024-03-01",
                4,
                "Compute Engine",
                "0.000000001",
                1_709_262_000_123_456,
                &[("cost_type", "rounding_error")],
            ),
        ],
    );
    // Usage on the last UTC hours of March, invoiced in April (Pacific time).
    p.insert(
        ("2024-03-31".into(), "202404".into()),
        vec![bq_row("2024-03-31", 23, "BigQuery", "2.50", 1_711_933_200_000_000, &[("invoice_month", "202404")])],
    );
    p.insert(
        ("2024-04-02".into(), "202404".into()),
        vec![bq_row("2024-04-02", 5, "Vertex AI", "7.25", 1_712_100_000_000_000, &[("currency", "EUR")])],
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pages_cost_types_credits_and_the_invoice_month_crossover() {
    let (bq, url) = serve_bq().await;
    seed(&bq);
    let (s, _d) = sqlite_store().await;
    let c = connector(&url).await;
    let out = ingest(s.as_ref(), &c).await;
    assert_eq!(out.len(), 3, "three (invoice month, partition day) deliveries");
    assert!(out.iter().all(|o| matches!(o, LoadOutcome::Created { .. })));
    assert_eq!(
        period_totals(s.as_ref()).await,
        vec![
            "2024-03 Adjustment USD -0.049999999",
            "2024-03 Credit USD -0.21938",
            "2024-03 Tax USD 1.52",
            "2024-03 Usage USD 0.731238",
            "2024-04 Usage EUR 7.25",
            "2024-04 Usage USD 2.5",
        ],
        "credits are their own lines; usage of 2024-03-31 23:00 UTC belongs to invoice month 2024-04"
    );
    // Cost after credits for March: 0.731234 + 0.000004 + 1.52 − 0.05 + 0.000000001 − 0.21937 − 0.00001
    assert_eq!(total(s.as_ref(), "USD").await.to_string(), "4.481858001");
    // Labels with unusual characters survive; a project-less tax line has no sub account.
    let recs: Vec<_> = {
        use futures::StreamExt;
        let f = ChargeFilter::default();
        s.charges(&f).map(|r| r.expect("row")).collect::<Vec<_>>().await
    };
    assert!(recs.iter().any(|r| r.line.tags.get("cost-center/π").map(String::as_str) == Some("ünïcode, \"quoted\"")));
    // ListCost from `cost_at_list` (null where the row has none); a credit's is its amount;
    // AvailabilityZone from `location.zone`.
    let engine = recs
        .iter()
        .find(|r| {
            r.line.service_name.as_deref() == Some("Compute Engine")
                && r.line.charge_category == costledger_core::ChargeCategory::Usage
        })
        .expect("compute engine");
    assert_eq!(engine.line.list_cost.map(|d| d.to_string()).as_deref(), Some("0.950604"));
    assert_eq!(engine.line.focus.as_deref().and_then(|f| f.text("AvailabilityZone")), Some("us-central1-a"));
    let sud = recs
        .iter()
        .find(|r| {
            r.line.commitment_discount_id.is_none()
                && r.line.x_extra.get("gcp_credit_id").map(String::as_str) == Some("sud-1")
        })
        .expect("credit");
    assert_eq!(sud.line.list_cost, Some(sud.line.billed_cost), "a credit's ListCost is its amount");
    let storage = recs.iter().find(|r| r.line.service_name.as_deref() == Some("Cloud Storage")).expect("storage");
    assert_eq!(storage.line.list_cost, None, "no cost_at_list, no ListCost");
    let tax = recs.iter().find(|r| r.line.charge_category == costledger_core::ChargeCategory::Tax).expect("tax");
    assert_eq!(tax.line.sub_account_id, None);
    assert_eq!(tax.line.billing_period_start.to_rfc3339(), "2024-03-01T08:00:00+00:00", "Pacific invoice month");
    // Every query was partition-filtered; pages were fetched (page size 2, 5 rows on day 1).
    let queries = bq.queries.lock().expect("lock").clone();
    assert!(queries.iter().all(|q| q.contains("_PARTITIONTIME")), "{queries:?}");
    assert!(bq.calls.load(Ordering::SeqCst) >= 1 + 3 + 2, "listing, three partitions, two more pages");
    // Again: nothing changed, nothing loads.
    let again = ingest(s.as_ref(), &c).await;
    assert!(again.iter().all(|o| matches!(o, LoadOutcome::Skipped { .. })));
    assert_eq!(total(s.as_ref(), "USD").await.to_string(), "4.481858001");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_credit_replaces_only_its_partition_day() {
    let (bq, url) = serve_bq().await;
    seed(&bq);
    let (s, _d) = sqlite_store().await;
    let c = connector(&url).await;
    ingest(s.as_ref(), &c).await;
    bq.partitions.lock().expect("lock").get_mut(&("2024-03-01".into(), "202403".into())).expect("day").push(bq_row(
        "2024-03-01",
        6,
        "Compute Engine",
        "0",
        1_709_600_000_000_000,
        &[("credits_json", r#"[{"name":"Promotion","type":"PROMOTION","amount":"-0.4"}]"#)],
    ));
    let out = ingest(s.as_ref(), &c).await;
    let created = out.iter().filter(|o| matches!(o, LoadOutcome::Created { superseded: Some(_), .. })).count();
    let skipped = out.iter().filter(|o| matches!(o, LoadOutcome::Skipped { .. })).count();
    assert_eq!((created, skipped), (1, 2), "only day 2024-03-01 is restated: {out:?}");
    assert_eq!(total(s.as_ref(), "USD").await.to_string(), "4.081858001", "the new truth, not old + new");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn polls_throttling_and_server_errors_then_success() {
    let (bq, url) = serve_bq().await;
    seed(&bq);
    *bq.polls.lock().expect("lock") = 2;
    bq.faults.lock().expect("lock").extend([(429, "rateLimitExceeded"), (503, "backendError")]);
    let (s, _d) = sqlite_store().await;
    let c = connector(&url).await;
    let out = ingest(s.as_ref(), &c).await;
    assert_eq!(out.len(), 3);
    assert_eq!(total(s.as_ref(), "USD").await.to_string(), "4.481858001", "nothing lost or doubled by the retries");
    assert!(bq.faults.lock().expect("lock").is_empty(), "the 429 and the 503 were served and survived");
    // 4 queries + 2 faulted attempts + 2 polls per query before completion.
    assert!(bq.calls.load(Ordering::SeqCst) >= 4 + 2 + 8, "{}", bq.calls.load(Ordering::SeqCst));
    assert!(c.api_calls() >= 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_auth_error_says_what_to_check() {
    let (bq, url) = serve_bq().await;
    seed(&bq);
    bq.faults.lock().expect("lock").push_back((401, "unauthorized"));
    let (s, _d) = sqlite_store().await;
    let c = connector(&url).await;
    let e =
        ingest_source(s.as_ref(), "gcp", &c, WINDOW, &Context::new("gcp"), None).await.expect_err("401").to_string();
    assert!(e.contains("authentication failed: BigQuery refused the query"), "{e}");
    assert!(e.contains("Check the credentials"), "{e}");
}

#[test]
fn import_gcp_export_files_json_lines_and_csv() {
    let dir = tempfile::tempdir().expect("tmp");
    let db = sqlite_url(dir.path());
    let jsonl = fixture("gcp/export-2024-03.jsonl");
    let (code, out, err) = run(&db, &["import", "--format", "gcp-export", jsonl.to_str().expect("utf8")]);
    assert_eq!(code, 0, "{err}");
    // 0.731234 − 0.21937 (credit) + 1.52 (tax) + 0.000004; the non-USD row separately.
    assert!(out.contains("5 rows, 0 quarantined; BilledCost EUR 7.25, USD 2.031868"), "{out}");
    let csv = fixture("gcp/export-2024-03.csv");
    let (code, out, err) =
        run(&db, &["import", "--format", "gcp-export", "--source", "csv", csv.to_str().expect("utf8")]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("5 rows, 1 quarantined; BilledCost EUR 7.25, USD 2.031868"), "{out}");
    assert!(out.contains("see the quarantined rows"), "{out}");
}

#[test]
fn gcp_config_is_validated() {
    let text = "sources:\n  - name: g\n    type: gcp_billing_export\n    project: \"acme billing\"\n    table: billing.export\n    endpoint: ftp://x\n";
    let e = costledger::config::Config::parse(text, &|_| None).expect_err("invalid");
    let t: Vec<String> = e.iter().map(|i| i.to_string()).collect();
    assert!(t.iter().any(|x| x.contains("sources[0].project: 'acme billing' is not a GCP project id")), "{t:?}");
    assert!(t.iter().any(|x| x.contains("sources[0].table: 'billing.export' must be project.dataset.table")), "{t:?}");
    assert!(t.iter().any(|x| x.contains("sources[0].endpoint: 'ftp://x' must be an http(s)")), "{t:?}");
}

fn focus_row(day: &str, hour: u32, service: &str, cost: &str, tags: &str) -> String {
    let start = chrono::NaiveDate::parse_from_str(day, "%Y-%m-%d").expect("day").and_hms_opt(hour, 0, 0).expect("h");
    // Raw JSON numbers: exact digits must survive (TO_JSON_STRING writes NUMERIC as numbers).
    let v = format!(
        r#"{{"BilledCost":{cost},"EffectiveCost":{cost},"BillingAccountId":"0123AB-CDEF45-6789AB","BillingCurrency":"USD",
        "BillingPeriodStart":"2024-03-01T08:00:00Z","BillingPeriodEnd":"2024-04-01T07:00:00Z","ChargeCategory":"Usage",
        "ChargePeriodStart":"{}Z","ChargePeriodEnd":"{}Z","ProviderName":"Google Cloud","ServiceName":"{service}",
        "SubAccountId":"payments-prod","Tags":{tags},"x_ServiceId":"6F81-5844-456A"}}"#,
        start.format("%Y-%m-%dT%H:%M:%S"),
        (start + chrono::Duration::hours(1)).format("%Y-%m-%dT%H:%M:%S")
    );
    v.replace('\n', " ")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_focus_view_loads_by_charge_day_and_restates_a_changed_day() {
    let (bq, url) = serve_bq().await;
    *bq.focus_rows.lock().expect("lock") = vec![
        focus_row("2024-03-01", 0, "Compute Engine", "0.7312340000000000001", r#"[{"key":"team","value":"payments"}]"#),
        focus_row("2024-03-01", 1, "Cloud Storage", "4E-6", "[]"),
        focus_row("2024-03-02", 0, "Compute Engine", "1.25", r#"[{"key":"team","value":"search"}]"#),
    ];
    let (s, _d) = sqlite_store().await;
    let mut p = params(&url);
    p.table = "acme-billing.billing_focus.gcp_billing_export_focus_0123AB_CDEF45_6789AB".into();
    assert!(p.is_focus(), "a FOCUS table by its name");
    let c = build(&p).await.expect("client").with_clock(april_3);
    let out = ingest(s.as_ref(), &c).await;
    assert_eq!(out.len(), 2, "one delivery per charge day: {out:?}");
    assert_eq!(total(s.as_ref(), "USD").await.to_string(), "1.9812380000000000001");
    let queries = bq.queries.lock().expect("lock").clone();
    assert!(queries.iter().all(|q| q.contains("ChargePeriodStart") && !q.contains("_PARTITIONTIME")), "{queries:?}");
    let recs: Vec<_> = {
        use futures::StreamExt;
        s.charges(&ChargeFilter::default()).map(|r| r.expect("row")).collect::<Vec<_>>().await
    };
    assert!(recs.iter().any(|r| r.line.tags.get("team").map(String::as_str) == Some("search")), "Tags → tags");
    // Unchanged: skipped. A late row on 2024-03-02: only that day is restated.
    let again = ingest(s.as_ref(), &c).await;
    assert!(again.iter().all(|o| matches!(o, LoadOutcome::Skipped { .. })), "{again:?}");
    bq.focus_rows.lock().expect("lock").push(focus_row("2024-03-02", 5, "Cloud Storage", "-0.25", "[]"));
    let out = ingest(s.as_ref(), &c).await;
    let created = out.iter().filter(|o| matches!(o, LoadOutcome::Created { superseded: Some(_), .. })).count();
    let skipped = out.iter().filter(|o| matches!(o, LoadOutcome::Skipped { .. })).count();
    assert_eq!((created, skipped), (1, 1), "{out:?}");
    assert_eq!(total(s.as_ref(), "USD").await.to_string(), "1.7312380000000000001");
}

/// Regression: a JSON-lines extract hung at its end (the hashing thread waited for the
/// reader, which was still open). The import must finish, within a deadline.
#[test]
fn a_json_lines_import_finishes_at_the_end_of_the_file() {
    let dir = tempfile::tempdir().expect("tmp");
    let db = sqlite_url(dir.path());
    let jsonl = fixture("gcp/export-2024-03.jsonl");
    let mut child = bin()
        .args(["--database", &db, "import", "--format", "gcp-export"])
        .arg(&jsonl)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn");
    let start = std::time::Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait") {
            break s;
        }
        if start.elapsed() > std::time::Duration::from_secs(60) {
            let _ = child.kill();
            panic!("the import of a JSON-lines extract did not finish within 60 s");
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    assert!(status.success());
}
