//! Daemon runs in process: retries of a throttled source against a loopback OCI server while
//! another source runs unaffected; overlap skipped; a run cancelled at shutdown.

use std::collections::HashSet;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use crate::common::ocimock::*;
use crate::common::*;
use costledger::config::Config;
use costledger::daemon::job_specs;
use costledger::daemon::jobs::{JobSpec, Shared, run_tick};
use costledger::ledger::{LedgerStore, RunRow};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

fn shared(store: Box<dyn LedgerStore>, cfg: Config) -> Arc<Shared> {
    Arc::new(Shared {
        store: Arc::from(store),
        config: Arc::new(RwLock::new(Arc::new(cfg))),
        running: Mutex::new(HashSet::new()),
        stopping: CancellationToken::new(),
        abort: CancellationToken::new(),
        tracker: TaskTracker::new(),
    })
}

fn spec(cfg: &Config, key: &str) -> Arc<JobSpec> {
    Arc::new(job_specs(cfg).expect("specs").into_iter().find(|s| s.key() == key).expect("job"))
}

fn config(oci_endpoint: &str, bills: &std::path::Path) -> Config {
    let text = format!(
        r#"
daemon: {{ retry: {{ attempts: 4, base_delay_secs: 1, max_delay_secs: 5 }} }}
sources:
  - name: oci
    type: oci_usage_api
    schedule: "0 0 * * * *"
    endpoint: "{oci_endpoint}"
    credentials:
      tenancy: "{TENANCY}"
      user: "{USER}"
      fingerprint: "{FP}"
      key_file: "{}"
    retry: {{ attempts: 1 }}
  - name: files
    type: focus
    path: "{}"
    schedule: "0 0 * * * *"
"#,
        oci_fixture("oracle_test_key.pem").display(),
        bills.display()
    );
    Config::parse(&text, &|_| None).expect("config")
}

async fn runs(s: &dyn LedgerStore) -> Vec<RunRow> {
    s.runs(100).await.expect("runs")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_throttled_source_is_retried_and_others_are_not_delayed() {
    let (mock, url) = serve().await;
    *mock.pages.lock().expect("lock") = vec![vec![usage_item(1, "COMPUTE", "1.25")]];
    mock.faults.lock().expect("lock").extend([(429, "TooManyRequests", Some(1)), (500, "InternalServerError", None)]);
    let dir = tempfile::tempdir().expect("tmp");
    let bills = dir.path().join("bills");
    std::fs::create_dir_all(&bills).expect("mkdir");
    std::fs::copy(fixture("reconcile/bill-2026-10.csv"), bills.join("b.csv")).expect("copy");
    let (store, _d) = sqlite_store().await;
    let cfg = config(&url, &bills);
    let sh = shared(store, cfg.clone());
    let tick = chrono::Utc::now();
    let t0 = Instant::now();
    let oci = tokio::spawn(run_tick(sh.clone(), spec(&cfg, "ingest:oci"), tick));
    let files = tokio::spawn(run_tick(sh.clone(), spec(&cfg, "ingest:files"), tick));
    files.await.expect("files");
    let files_done = t0.elapsed();
    oci.await.expect("oci");
    let oci_done = t0.elapsed();
    assert!(files_done < Duration::from_secs(1), "the other source was not held up: {files_done:?}");
    assert!(oci_done >= Duration::from_secs(3), "Retry-After 1 s, then a 2 s backoff were waited: {oci_done:?}");
    let r = runs(sh.store.as_ref()).await;
    let oci_run = r.iter().find(|r| r.job == "ingest" && r.source.as_deref() == Some("oci")).expect("oci run");
    assert_eq!(oci_run.outcome.status.as_str(), "ok", "{oci_run:?}");
    assert_eq!(oci_run.outcome.attempts, 3, "429, 500, then success");
    let files_run = r.iter().find(|r| r.job == "ingest" && r.source.as_deref() == Some("files")).expect("files run");
    assert_eq!(files_run.outcome.status.as_str(), "ok");
    // Two months in the window, one item each; nothing counted twice.
    assert_eq!(total(sh.store.as_ref(), "USD").await.to_string(), "1178.5700251999999999993");
    // The same tick again (another replica, or a restart) does not run twice.
    run_tick(sh.clone(), spec(&cfg, "ingest:files"), tick).await;
    let again = runs(sh.store.as_ref()).await;
    assert_eq!(again.iter().filter(|r| r.source.as_deref() == Some("files") && r.job == "ingest").count(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_still_running_makes_its_next_tick_skip() {
    let dir = tempfile::tempdir().expect("tmp");
    let (store, _d) = sqlite_store().await;
    let cfg = config("http://127.0.0.1:9", dir.path());
    let sh = shared(store, cfg.clone());
    sh.running.lock().expect("lock").insert("retention".into());
    run_tick(sh.clone(), spec(&cfg, "retention"), chrono::Utc::now()).await;
    let r = runs(sh.store.as_ref()).await;
    assert_eq!(r.len(), 1);
    assert_eq!(r[0].outcome.status.as_str(), "skipped");
    assert_eq!(r[0].outcome.error.as_deref(), Some("the previous run was still going"));
    // Shutdown before the run starts: recorded as cancelled, nothing runs.
    sh.running.lock().expect("lock").clear();
    sh.stopping.cancel();
    run_tick(sh.clone(), spec(&cfg, "retention"), chrono::Utc::now() + chrono::Duration::seconds(5)).await;
    let r = runs(sh.store.as_ref()).await;
    assert_eq!(r.len(), 2);
    // Newest first.
    assert_eq!((r[0].outcome.status.as_str(), r[1].outcome.status.as_str()), ("cancelled", "skipped"), "{r:?}");
    assert_eq!(r[0].outcome.error.as_deref(), Some("shutdown before the run started"));
}
