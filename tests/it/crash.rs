//! Crash safety: kill (SIGKILL) an import child process at several points of a restating
//! load; after each kill the ledger must show the old bill exactly; the next run sweeps the
//! stale staging loads and lands the new bill exactly.

use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use crate::common::*;
use costledger::ledger::{self, ChargeFilter, LedgerStore, LoadFilter, LoadState};

const ROWS: u64 = 100_000;

fn sample(path: &std::path::Path, seed: &str) {
    let out = bin()
        .args(["sample", "--rows", &ROWS.to_string(), "--seed", seed, "--out", path.to_str().expect("p")])
        .output()
        .expect("sample");
    assert!(out.status.success());
}

fn spawn_import(db: &str, file: &std::path::Path) -> Child {
    bin()
        .args(["--database", db, "import", "--format", "focus", "--source", "bills", file.to_str().expect("p")])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn")
}

async fn snapshot(s: &dyn LedgerStore) -> (u64, String) {
    let n = s.count_charges(&ChargeFilter::default()).await.expect("count");
    let t = s.totals(&ChargeFilter::default(), &[]).await.expect("totals");
    (n, t.iter().map(|r| format!("{} {}", r.currency, r.billed_cost)).collect::<Vec<_>>().join(", "))
}

/// Wait until the child has staged at least `min_rows` lines of its staging load, then SIGKILL
/// it. Returns false if the child finished first. Staged lines are counted as the rows of the
/// child's own load (its owner names the child's pid: a load left by an earlier killed run does
/// not count) that are visible — SQLite commits them batch by batch — plus, on PostgreSQL, the
/// rows its COPY lanes have sent into this schema's `charge_rows` (uncommitted until every line
/// is staged: `pg_stat_progress_copy`).
async fn kill_when_staged(s: &dyn LedgerStore, db: &str, child: &mut Child, min_rows: u64) -> bool {
    use sqlx::Connection;
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut pg = match db.starts_with("postgres") {
        true => Some(sqlx::PgConnection::connect(db).await.expect("postgres")),
        false => None,
    };
    let pid = format!(":{}:", child.id());
    loop {
        if child.try_wait().expect("wait").is_some() {
            return false;
        }
        let staging =
            s.loads(&LoadFilter { state: Some(LoadState::Staging), ..Default::default() }).await.expect("loads");
        if let Some(l) = staging.iter().filter(|l| l.owner.contains(&pid)).max_by_key(|l| l.id) {
            let mut staged =
                s.count_charges(&ChargeFilter { load: Some(l.id), ..Default::default() }).await.expect("n");
            if let Some(c) = pg.as_mut() {
                let sending: i64 = sqlx::query_scalar(
                    "SELECT COALESCE(sum(tuples_processed), 0)::bigint FROM pg_stat_progress_copy \
                     WHERE relid = 'charge_rows'::regclass",
                )
                .fetch_one(&mut *c)
                .await
                .expect("copy progress");
                staged += u64::try_from(sending).unwrap_or(0);
            }
            if staged >= min_rows {
                child.kill().expect("SIGKILL");
                child.wait().expect("reap");
                return true;
            }
        }
        assert!(Instant::now() < deadline, "child made no progress");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

async fn crash_during_restatement(db: String) {
    let dir = tempfile::tempdir().expect("tmp");
    let v1 = dir.path().join("v1").join("bill-2026-10.csv");
    let v2 = dir.path().join("v2").join("bill-2026-10.csv");
    std::fs::create_dir_all(v1.parent().expect("dir")).expect("mkdir");
    std::fs::create_dir_all(v2.parent().expect("dir")).expect("mkdir");
    sample(&v1, "1");
    sample(&v2, "2");
    let store = ledger::open(&db).await.expect("open");
    store.migrate().await.expect("migrate");

    let mut c = spawn_import(&db, &v1);
    assert!(c.wait().expect("wait").success());
    let old = snapshot(store.as_ref()).await;
    assert_eq!(old.0, ROWS);
    // The provider's restated bill arrives at the same path (an ad hoc import's scope is the
    // file's canonical path).
    std::fs::copy(&v2, &v1).expect("restate");

    let mut kills = 0;
    for min_rows in [1, ROWS / 3, (ROWS * 2) / 3] {
        let mut child = spawn_import(&db, &v1);
        if kill_when_staged(store.as_ref(), &db, &mut child, min_rows).await {
            kills += 1;
            assert_eq!(
                snapshot(store.as_ref()).await,
                old,
                "after a kill at {min_rows} staged rows the ledger must be unchanged"
            );
        }
    }
    assert!(kills >= 2, "the import finished before it could be killed; make ROWS larger");
    let staging =
        store.loads(&LoadFilter { state: Some(LoadState::Staging), ..Default::default() }).await.expect("loads");
    // Each new run sweeps the staging load the previous killed run left (its process is gone),
    // so exactly one, the last, remains; readers ignore it.
    assert_eq!(staging.len(), 1);

    let out = bin()
        .args(["--database", &db, "import", "--format", "focus", "--source", "bills", v1.to_str().expect("p")])
        .output()
        .expect("run");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("swept 1 stale staging load(s)"), "{text}");
    assert!(text.contains("replaces load 1"), "{text}");
    let new = snapshot(store.as_ref()).await;
    assert_eq!(new.0, ROWS);
    assert_ne!(new.1, old.1);
    let expected = String::from_utf8_lossy(
        &bin()
            .args(["sample", "--rows", &ROWS.to_string(), "--seed", "2", "--out", v2.to_str().expect("p")])
            .output()
            .expect("s")
            .stdout,
    )
    .split("BilledCost: ")
    .nth(1)
    .expect("totals")
    .trim()
    .trim_end_matches(')')
    .to_string();
    assert_eq!(new.1, expected, "the new bill landed exactly");
    let all = store.loads(&LoadFilter::default()).await.expect("loads");
    assert_eq!(all.iter().filter(|l| l.state == LoadState::Current).count(), 1);
    assert_eq!(all.iter().filter(|l| l.state == LoadState::Staging).count(), 0);
    let failed: Vec<_> = all.iter().filter(|l| l.state == LoadState::Failed).collect();
    assert_eq!(failed.len(), kills);
    assert!(failed.iter().all(|l| l.error.as_deref().unwrap_or_default().contains("is gone")));
    for l in failed {
        assert_eq!(store.count_charges(&ChargeFilter { load: Some(l.id), ..Default::default() }).await.expect("n"), 0);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_mid_load_leaves_the_ledger_as_it_was_sqlite() {
    let dir = tempfile::tempdir().expect("tmp");
    crash_during_restatement(sqlite_url(dir.path())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_mid_load_leaves_the_ledger_as_it_was_postgres() {
    match pg_schema_url().await {
        Some(url) => crash_during_restatement(url).await,
        None => eprintln!("skipped: {PG_ENV} is not set"),
    }
}
