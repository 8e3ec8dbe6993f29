//! Migrations are embedded in the binary; the two dialects share one numbering (a test checks
//! that the files on disk and this list agree).

use sqlx::SqlSafeStr;
use sqlx::migrate::{Migration, MigrationType, Migrator};

use super::Backend;

/// (version, description, SQLite SQL, PostgreSQL SQL)
pub const MIGRATIONS: &[(i64, &str, &str, &str)] = &[
    (
        1,
        "ledger",
        include_str!("../../migrations/sqlite/0001_ledger.sql"),
        include_str!("../../migrations/postgres/0001_ledger.sql"),
    ),
    (
        2,
        "reconcile",
        include_str!("../../migrations/sqlite/0002_reconcile.sql"),
        include_str!("../../migrations/postgres/0002_reconcile.sql"),
    ),
    (
        3,
        "run_ticks",
        include_str!("../../migrations/sqlite/0003_run_ticks.sql"),
        include_str!("../../migrations/postgres/0003_run_ticks.sql"),
    ),
    (
        4,
        "charge_keys",
        include_str!("../../migrations/sqlite/0004_charge_keys.sql"),
        include_str!("../../migrations/postgres/0004_charge_keys.sql"),
    ),
    (
        5,
        "source_roles",
        include_str!("../../migrations/sqlite/0005_source_roles.sql"),
        include_str!("../../migrations/postgres/0005_source_roles.sql"),
    ),
    (
        6,
        "failures_and_run_owners",
        include_str!("../../migrations/sqlite/0006_failures_and_run_owners.sql"),
        include_str!("../../migrations/postgres/0006_failures_and_run_owners.sql"),
    ),
    (
        7,
        "rollups",
        include_str!("../../migrations/sqlite/0007_rollups.sql"),
        include_str!("../../migrations/postgres/0007_rollups.sql"),
    ),
    (
        8,
        "focus_columns",
        include_str!("../../migrations/sqlite/0008_focus_columns.sql"),
        include_str!("../../migrations/postgres/0008_focus_columns.sql"),
    ),
    (
        9,
        "business_metrics",
        include_str!("../../migrations/sqlite/0009_business_metrics.sql"),
        include_str!("../../migrations/postgres/0009_business_metrics.sql"),
    ),
    (
        10,
        "rollups_without_sku",
        include_str!("../../migrations/sqlite/0010_rollups_without_sku.sql"),
        include_str!("../../migrations/postgres/0010_rollups_without_sku.sql"),
    ),
    (
        11,
        "load_period_data_end",
        include_str!("../../migrations/sqlite/0011_load_period_data_end.sql"),
        include_str!("../../migrations/postgres/0011_load_period_data_end.sql"),
    ),
    (
        12,
        "load_day_totals",
        include_str!("../../migrations/sqlite/0012_load_day_totals.sql"),
        include_str!("../../migrations/postgres/0012_load_day_totals.sql"),
    ),
    (
        13,
        "pricing_rollups",
        include_str!("../../migrations/sqlite/0013_pricing_rollups.sql"),
        include_str!("../../migrations/postgres/0013_pricing_rollups.sql"),
    ),
    (
        14,
        "charge_contexts",
        include_str!("../../migrations/sqlite/0014_charge_contexts.sql"),
        include_str!("../../migrations/postgres/0014_charge_contexts.sql"),
    ),
    (
        15,
        "charge_statistics",
        include_str!("../../migrations/sqlite/0015_charge_statistics.sql"),
        include_str!("../../migrations/postgres/0015_charge_statistics.sql"),
    ),
    (
        16,
        "charge_kinds",
        include_str!("../../migrations/sqlite/0016_charge_kinds.sql"),
        include_str!("../../migrations/postgres/0016_charge_kinds.sql"),
    ),
];

pub fn migrator(backend: Backend) -> Migrator {
    migrator_upto(backend, latest())
}

/// The migrations up to `version` only (upgrade tests start from an older schema).
pub fn migrator_upto(backend: Backend, version: i64) -> Migrator {
    let list = MIGRATIONS
        .iter()
        .filter(|m| m.0 <= version)
        .map(|(v, d, lite, pg)| {
            let sql = match backend {
                Backend::Sqlite => *lite,
                Backend::Postgres => *pg,
            };
            Migration::new(*v, (*d).into(), MigrationType::Simple, sql.into_sql_str(), false)
        })
        .collect();
    Migrator::with_migrations(list)
}

/// The latest version this binary knows.
pub fn latest() -> i64 {
    MIGRATIONS.iter().map(|m| m.0).max().unwrap_or(0)
}
