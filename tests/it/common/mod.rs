//! Shared test helpers: ledgers on both backends, charge-line builders, running the binary.
#![allow(dead_code)]

pub mod azurite;
pub mod bqmock;
pub mod cur;
pub mod keyed;
pub mod moto;
pub mod ocimock;
pub mod serve;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Output};
use std::str::FromStr;
use std::sync::atomic::{AtomicU32, Ordering};

use costledger::ledger::{self, ChargeFilter, CommitOutcome, LedgerStore, LoadSummary, NewLoad, PeriodContribution};
use costledger_core::{BillingPeriod, ChargeCategory, ChargeLine, ExactSum, parse_timestamp};
use rust_decimal::Decimal;
use sqlx::Connection;

/// The PostgreSQL server for the conformance suite. Unset: PostgreSQL tests are skipped.
/// Set but unreachable: they fail.
pub const PG_ENV: &str = "COSTLEDGER_TEST_POSTGRES_URL";

pub fn pg_url() -> Option<String> {
    std::env::var(PG_ENV).ok().filter(|s| !s.is_empty())
}

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// A ledger on a fresh SQLite file (the TempDir must outlive it).
pub async fn sqlite_store() -> (Box<dyn LedgerStore>, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("tempdir");
    let url = format!("sqlite://{}", dir.path().join("ledger.db").display());
    let store = ledger::open(&url).await.expect("open sqlite");
    store.migrate().await.expect("migrate sqlite");
    (store, dir)
}

/// A fresh schema in the test database, as a ledger URL (search_path set to it).
pub async fn pg_schema_url() -> Option<String> {
    let base = pg_url()?;
    let schema = format!(
        "cl_t{}_{}_{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::SeqCst),
        chrono::Utc::now().timestamp_micros() % 1_000_000_000
    );
    let mut conn = sqlx::PgConnection::connect(&base)
        .await
        .unwrap_or_else(|e| panic!("{PG_ENV} is set but PostgreSQL is unreachable: {e}"));
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE SCHEMA {schema}")))
        .execute(&mut conn)
        .await
        .expect("create schema");
    let sep = if base.contains('?') { '&' } else { '?' };
    Some(format!("{base}{sep}options[search_path]={schema}"))
}

pub async fn pg_store() -> Option<Box<dyn LedgerStore>> {
    let url = pg_schema_url().await?;
    let store = ledger::open(&url).await.expect("open postgres");
    store.migrate().await.expect("migrate postgres");
    Some(store)
}

pub fn dec(s: &str) -> Decimal {
    Decimal::from_str(s).expect("decimal")
}

/// A minimal valid line: October 2026, account A1, the given amount and currency.
pub fn line(amount: &str, currency: &str) -> ChargeLine {
    let t = |s: &str| parse_timestamp(s).expect("ts");
    ChargeLine {
        billing_account_id: "A1".into(),
        billing_account_name: Some("Acme".into()),
        sub_account_id: Some("S1".into()),
        sub_account_name: None,
        billing_period_start: t("2026-10-01T00:00:00Z"),
        billing_period_end: t("2026-11-01T00:00:00Z"),
        charge_period_start: t("2026-10-05T00:00:00Z"),
        charge_period_end: t("2026-10-06T00:00:00Z"),
        charge_category: if amount.starts_with('-') { ChargeCategory::Credit } else { ChargeCategory::Usage },
        charge_class: None,
        charge_description: Some("test line".into()),
        service_name: Some("Compute".into()),
        service_category: None,
        provider_name: Some("TestCloud".into()),
        publisher_name: None,
        invoice_issuer_name: None,
        region_id: None,
        resource_id: None,
        resource_name: None,
        sku_id: None,
        billed_cost: dec(amount),
        effective_cost: Some(dec(amount)),
        list_cost: None,
        contracted_cost: None,
        billing_currency: currency.into(),
        pricing_quantity: None,
        pricing_unit: None,
        consumed_quantity: None,
        consumed_unit: None,
        commitment_discount_id: None,
        invoice_id: None,
        tags: BTreeMap::from([("team".to_string(), "payments".to_string())]),
        focus: None,
        x_extra: BTreeMap::new(),
        source_ref: Some("test:1".into()),
    }
}

pub fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_costledger"));
    c.env_remove("COSTLEDGER_CONFIG").env_remove("COSTLEDGER_DATABASE_URL").env("RUST_LOG", "warn");
    c
}

/// Run the binary with `args` against `db`; returns (exit code, stdout, stderr).
pub fn run(db: &str, args: &[&str]) -> (i32, String, String) {
    let out: Output = bin().arg("--database").arg(db).args(args).output().expect("run costledger");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

pub fn sqlite_url(dir: &Path) -> String {
    format!("sqlite://{}", dir.join("ledger.db").display())
}

pub fn fixture(rel: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(rel)
}

pub fn summary_of(lines: &[ChargeLine]) -> LoadSummary {
    let mut s = LoadSummary { row_count: lines.len() as u64, ..Default::default() };
    for l in lines {
        s.totals.add(&l.billing_currency, l.billed_cost).expect("add");
        let p = s
            .periods
            .entry(BillingPeriod::of(l.billing_period_start).to_string())
            .or_insert_with(|| PeriodContribution { all_invoiced: true, ..Default::default() });
        p.rows += 1;
        p.data_end = Some(p.data_end.map_or(l.charge_period_end, |e| e.max(l.charge_period_end)));
        p.totals.add(&l.billing_currency, l.billed_cost).expect("add");
        p.days.add(l).expect("add");
        match &l.invoice_id {
            Some(i) => {
                p.invoice_ids.insert(i.clone());
            }
            None => p.all_invoiced = false,
        }
    }
    s
}

pub fn new_load(source_id: i64, scope: &str, key: &str, owner: &str) -> NewLoad {
    NewLoad {
        source_id,
        scope: scope.into(),
        billing_period: Some("2026-10".into()),
        delivery_key: key.into(),
        description: format!("{scope}@{key}"),
        owner: owner.into(),
    }
}

/// Stage `lines` (in batches) under a new load and commit it.
pub async fn load_lines(
    s: &dyn LedgerStore,
    source_id: i64,
    scope: &str,
    key: &str,
    lines: &[ChargeLine],
) -> CommitOutcome {
    let id = s.begin_load(&new_load(source_id, scope, key, "test:1:1")).await.expect("begin");
    for (i, chunk) in lines.chunks(5_000).enumerate() {
        s.stage_lines(id, i as u64 * 5_000, chunk.to_vec(), None).await.expect("stage");
    }
    s.commit_load(id, &summary_of(lines)).await.expect("commit")
}

pub async fn total(s: &dyn LedgerStore, currency: &str) -> ExactSum {
    s.totals(&ChargeFilter::default(), &[])
        .await
        .expect("totals")
        .into_iter()
        .find(|r| r.currency == currency)
        .map(|r| r.billed_cost)
        .unwrap_or_default()
}

/// Run each `async fn NAME(store: Box<dyn LedgerStore>)` against SQLite and PostgreSQL.
#[allow(unused_macros)]
macro_rules! conformance {
    ($($name:ident),* $(,)?) => {
        mod sqlite_backend {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let (s, _dir) = crate::common::sqlite_store().await;
                    super::$name(s).await;
                }
            )*
        }
        mod postgres_backend {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    match crate::common::pg_store().await {
                        Some(s) => super::$name(s).await,
                        None => eprintln!("skipped: {} is not set", crate::common::PG_ENV),
                    }
                }
            )*
        }
    };
}
