//! SQLite backend: the embedded default. Money is canonical decimal TEXT, summed with the
//! exact `decimal_sum()` aggregate; timestamps are `YYYY-MM-DDTHH:MM:SSZ` TEXT.

use std::collections::BTreeSet;
use std::str::FromStr;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use costledger_core::{
    ChargeCategory, ChargeClass, ChargeLine, RowError, SpentLines, canonical, format_ts, parse_timestamp,
};
use futures::StreamExt;
use futures::stream::BoxStream;
use rust_decimal::Decimal;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteRow, SqliteSynchronous};
use sqlx::{AssertSqlSafe, Row, SqlitePool};

use super::sqlite_bulk::{BulkConn, Rendered, Staged};
use super::*;

/// Rows per multi-row INSERT (35 values each; well under SQLite's bind-variable limit).
const ROWS_PER_INSERT: usize = 500;

/// A charge's rowid is `load_id * 2^32 + row_no` (migration 0004), so the rows of one load are
/// one contiguous rowid range: that range is how SQLite finds them, as there is no index on
/// `load_id`. Every join of `charges c` to `loads l` says both, so the planner can take either
/// table first.
macro_rules! charges_of_l {
    () => {
        "c.load_id = l.id AND c.id BETWEEN l.id * 4294967296 AND l.id * 4294967296 + 4294967295"
    };
}

/// Delete the charges of load `?1`.
const DELETE_LOAD_CHARGES: &str =
    "DELETE FROM charges WHERE id BETWEEN ?1 * 4294967296 AND ?1 * 4294967296 + 4294967295";

/// Rows per load in the key space (the low 32 bits of a charge's rowid).
const KEY_SPAN: i64 = 1 << 32;

/// The rowid of row `row_no` of `load`.
pub(crate) fn charge_key(load: LoadId, row_no: i64) -> std::result::Result<i64, String> {
    if !(0..KEY_SPAN).contains(&row_no) || !(1..1 << 31).contains(&load) {
        return Err(format!(
            "load {load} row {row_no} is outside the ledger's key space (2^31 loads of 2^32 rows): split the delivery"
        ));
    }
    Ok(load * KEY_SPAN + row_no)
}

pub struct SqliteLedger {
    pool: SqlitePool,
    /// The raw bulk-staging connection (file databases only; opened at the first batch).
    bulk: Option<(std::path::PathBuf, Arc<Mutex<Option<BulkConn>>>)>,
}

fn ts(s: &str) -> Result<DateTime<Utc>> {
    parse_timestamp(s).map_err(|e| LedgerError::Corrupt(e.to_string()))
}

fn opt_ts(s: Option<String>) -> Result<Option<DateTime<Utc>>> {
    s.as_deref().map(ts).transpose()
}

fn dec(s: Option<String>) -> Result<Option<Decimal>> {
    s.map(|s| Decimal::from_str_exact(&s).map_err(|e| LedgerError::Corrupt(format!("amount '{s}': {e}")))).transpose()
}

fn now() -> String {
    format_ts(Utc::now())
}

fn insert_sql(rows: usize) -> String {
    let cols = CHARGE_COLUMNS.join(", ");
    let one = format!("({})", vec!["?"; CHARGE_COLUMNS.len() + 1].join(", "));
    let mut sql = format!("INSERT INTO charges ({cols}, id) VALUES ");
    sql.push_str(&vec![one; rows].join(", "));
    sql
}

fn full_insert_sql() -> &'static str {
    static SQL: OnceLock<String> = OnceLock::new();
    SQL.get_or_init(|| insert_sql(ROWS_PER_INSERT))
}

const LOAD_SELECT: &str = "SELECT l.id, s.name, l.scope, l.billing_period, l.delivery_key, l.description, l.state, \
     l.owner, l.started_at, l.heartbeat_at, l.finished_at, l.row_count, l.quarantined_count, l.rounded_count, \
     l.totals, l.quarantined_totals, l.superseded_by, l.error, l.attempts FROM loads l JOIN sources s ON s.id = l.source_id";

fn load_row(r: &SqliteRow) -> Result<LoadRow> {
    Ok(LoadRow {
        id: r.try_get(0)?,
        source: r.try_get(1)?,
        scope: r.try_get(2)?,
        billing_period: r.try_get(3)?,
        delivery_key: r.try_get(4)?,
        description: r.try_get(5)?,
        state: LoadState::parse(r.try_get::<&str, _>(6)?)?,
        owner: r.try_get(7)?,
        started_at: ts(r.try_get(8)?)?,
        heartbeat_at: ts(r.try_get(9)?)?,
        finished_at: opt_ts(r.try_get(10)?)?,
        row_count: to_u64(r.try_get(11)?),
        quarantined_count: to_u64(r.try_get(12)?),
        rounded_count: to_u64(r.try_get(13)?),
        totals: parse_totals(r.try_get(14)?)?,
        quarantined_totals: parse_totals(r.try_get(15)?)?,
        superseded_by: r.try_get(16)?,
        error: r.try_get(17)?,
        attempts: u32::try_from(r.try_get::<i64, _>(18)?).unwrap_or(u32::MAX),
    })
}

/// WHERE clause and binds for a charge filter (aliases: c charges, l loads, s sources).
fn filter_sql(f: &ChargeFilter) -> (String, Vec<String>) {
    let mut w = Vec::new();
    let mut binds = Vec::new();
    match f.load {
        Some(id) => {
            w.push("l.id = ?".to_string());
            binds.push(id.to_string());
        }
        None => w.push("l.state = 'current'".to_string()),
    }
    if f.primary_only() {
        w.push("s.role = 'primary'".to_string());
    }
    if let Some(s) = &f.source {
        w.push("s.name = ?".to_string());
        binds.push(s.clone());
    }
    if let Some(t) = f.from {
        w.push("c.charge_period_start >= ?".to_string());
        binds.push(format_ts(t));
    }
    if let Some(t) = f.to {
        w.push("c.charge_period_start < ?".to_string());
        binds.push(format_ts(t));
    }
    if let Some(p) = f.period {
        w.push("c.billing_period_start >= ? AND c.billing_period_start < ?".to_string());
        binds.push(format_ts(p.start()));
        binds.push(format_ts(p.end()));
    }
    (w.join(" AND "), binds)
}

fn dim_sql(d: Dim) -> &'static str {
    match d {
        Dim::BillingPeriod => "substr(c.billing_period_start, 1, 7)",
        Dim::Load => "CAST(l.id AS TEXT)",
        Dim::ChargeDay => "substr(c.charge_period_start, 1, 10)",
        other => dim_column(other),
    }
}

fn charge_record(r: &SqliteRow) -> Result<ChargeRecord> {
    let s = |i: usize| -> Result<Option<String>> { Ok(r.try_get::<Option<String>, _>(i)?) };
    let req = |i: usize| -> Result<String> {
        s(i)?.ok_or_else(|| LedgerError::Corrupt(format!("NULL in required column {}", CHARGE_COLUMNS[i])))
    };
    let line = ChargeLine {
        billing_account_id: req(0)?,
        billing_account_name: s(1)?,
        sub_account_id: s(2)?,
        sub_account_name: s(3)?,
        billing_period_start: ts(&req(4)?)?,
        billing_period_end: ts(&req(5)?)?,
        charge_period_start: ts(&req(6)?)?,
        charge_period_end: ts(&req(7)?)?,
        charge_category: ChargeCategory::from_str(&req(8)?).map_err(LedgerError::Corrupt)?,
        charge_class: s(9)?.map(|c| ChargeClass::from_str(&c)).transpose().map_err(LedgerError::Corrupt)?,
        charge_description: s(10)?,
        service_name: s(11)?,
        service_category: s(12)?,
        provider_name: s(13)?,
        publisher_name: s(14)?,
        invoice_issuer_name: s(15)?,
        region_id: s(16)?,
        resource_id: s(17)?,
        resource_name: s(18)?,
        sku_id: s(19)?,
        billed_cost: dec(Some(req(20)?))?.unwrap_or_default(),
        effective_cost: dec(s(21)?)?,
        list_cost: dec(s(22)?)?,
        contracted_cost: dec(s(23)?)?,
        billing_currency: req(24)?,
        pricing_quantity: dec(s(25)?)?,
        pricing_unit: s(26)?,
        consumed_quantity: dec(s(27)?)?,
        consumed_unit: s(28)?,
        commitment_discount_id: s(29)?,
        invoice_id: s(30)?,
        tags: parse_tags(s(31)?)?,
        x_extra: parse_tags(s(32)?)?,
        source_ref: s(33)?,
    };
    Ok(ChargeRecord { load_id: r.try_get(34)?, row_no: r.try_get(35)?, source: r.try_get(36)?, line })
}

impl SqliteLedger {
    pub async fn connect(url: &str) -> Result<Self> {
        let memory = url.contains(":memory:") || url.contains("mode=memory");
        let opts = SqliteConnectOptions::from_str(url)?
            .create_if_missing(true)
            .journal_mode(if memory { SqliteJournalMode::Memory } else { SqliteJournalMode::Wal })
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(Duration::from_secs(30))
            .foreign_keys(true);
        let pool = SqlitePoolOptions::new()
            // An in-memory database exists per connection: keep exactly one.
            .max_connections(if memory { 1 } else { 4 })
            .after_connect(|conn, _| Box::pin(async move { super::decimal_sum::register(conn).await }))
            .connect_with(opts.clone())
            .await?;
        let bulk = (!memory).then(|| (opts.get_filename().to_path_buf(), Arc::new(Mutex::new(None))));
        Ok(Self { pool, bulk })
    }

    pub fn pool(&self) -> &SqlitePool {
        &self.pool
    }

    /// The sqlx path (multi-row VALUES), used for in-memory databases.
    async fn stage_lines_sqlx(&self, load: LoadId, first_row: u64, lines: &[ChargeLine]) -> Result<()> {
        let mut row_no = to_i64(first_row);
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        for chunk in lines.chunks(ROWS_PER_INSERT) {
            let owned;
            let sql: &str = if chunk.len() == ROWS_PER_INSERT {
                full_insert_sql()
            } else {
                owned = insert_sql(chunk.len());
                &owned
            };
            let mut q = sqlx::query(AssertSqlSafe(sql));
            for l in chunk {
                q = q
                    .bind(&l.billing_account_id)
                    .bind(&l.billing_account_name)
                    .bind(&l.sub_account_id)
                    .bind(&l.sub_account_name)
                    .bind(format_ts(l.billing_period_start))
                    .bind(format_ts(l.billing_period_end))
                    .bind(format_ts(l.charge_period_start))
                    .bind(format_ts(l.charge_period_end))
                    .bind(l.charge_category.as_str())
                    .bind(l.charge_class.map(|c| c.as_str()))
                    .bind(&l.charge_description)
                    .bind(&l.service_name)
                    .bind(&l.service_category)
                    .bind(&l.provider_name)
                    .bind(&l.publisher_name)
                    .bind(&l.invoice_issuer_name)
                    .bind(&l.region_id)
                    .bind(&l.resource_id)
                    .bind(&l.resource_name)
                    .bind(&l.sku_id)
                    .bind(canonical(l.billed_cost))
                    .bind(l.effective_cost.map(canonical))
                    .bind(l.list_cost.map(canonical))
                    .bind(l.contracted_cost.map(canonical))
                    .bind(&l.billing_currency)
                    .bind(l.pricing_quantity.map(canonical))
                    .bind(&l.pricing_unit)
                    .bind(l.consumed_quantity.map(canonical))
                    .bind(&l.consumed_unit)
                    .bind(&l.commitment_discount_id)
                    .bind(&l.invoice_id)
                    .bind(l.tags_json())
                    .bind(l.x_extra_json())
                    .bind(&l.source_ref)
                    .bind(load)
                    .bind(row_no)
                    .bind(charge_key(load, row_no).map_err(LedgerError::Bulk)?);
                row_no += 1;
            }
            q.execute(&mut *tx).await?;
        }
        heartbeat(&mut tx, load).await?;
        tx.commit().await?;
        Ok(())
    }
}

mod rec {
    use super::*;
    super::super::reconcile_sql::reconcile_sql!(
        sqlx::Sqlite,
        SqlitePool,
        super::super::reconcile_sql::same,
        charges_of_l!()
    );
}

super::reconcile_sql::reconcile_impl!(SqliteLedger);

#[async_trait]
impl LedgerStore for SqliteLedger {
    async fn source_data_end(&self) -> Result<Vec<(String, String, DateTime<Utc>)>> {
        sqlx::query(concat!(
            "SELECT s.name, substr(c.billing_period_start, 1, 7), MAX(c.charge_period_end) \
             FROM charges c JOIN loads l ON ",
            charges_of_l!(),
            " JOIN sources s ON s.id = l.source_id WHERE l.state = 'current' GROUP BY 1, 2 ORDER BY 1, 2",
        ))
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(|r| Ok((r.try_get(0)?, r.try_get(1)?, ts(&r.try_get::<String, _>(2)?)?)))
        .collect()
    }

    async fn account_first_seen(&self) -> Result<Vec<FirstSeen>> {
        let mut v = sqlx::query(concat!(
            "SELECT c.provider_name, c.billing_account_id, COALESCE(c.sub_account_id, c.billing_account_id), \
             MIN(c.charge_period_start) FROM charges c JOIN loads l ON ",
            charges_of_l!(),
            " JOIN sources s ON s.id = l.source_id WHERE l.state = 'current' AND s.role = 'primary' GROUP BY 1, 2, 3",
        ))
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(|r| {
            Ok(FirstSeen {
                provider: r.try_get(0)?,
                billing_account_id: r.try_get(1)?,
                account: r.try_get(2)?,
                at: ts(&r.try_get::<String, _>(3)?)?,
            })
        })
        .collect::<Result<Vec<_>>>()?;
        v.sort();
        Ok(v)
    }

    fn backend(&self) -> Backend {
        Backend::Sqlite
    }

    async fn migrate(&self) -> Result<()> {
        migrations::migrator(Backend::Sqlite).run(&self.pool).await?;
        Ok(())
    }

    async fn applied_migrations(&self) -> Result<Vec<i64>> {
        let exists: Option<String> =
            sqlx::query_scalar("SELECT name FROM sqlite_master WHERE type = 'table' AND name = '_sqlx_migrations'")
                .fetch_optional(&self.pool)
                .await?;
        if exists.is_none() {
            return Ok(Vec::new());
        }
        Ok(sqlx::query_scalar("SELECT version FROM _sqlx_migrations WHERE success ORDER BY version")
            .fetch_all(&self.pool)
            .await?)
    }

    async fn ensure_source(&self, name: &str, kind: &str) -> Result<i64> {
        sqlx::query("INSERT INTO sources (name, kind, created_at) VALUES (?, ?, ?) ON CONFLICT (name) DO NOTHING")
            .bind(name)
            .bind(kind)
            .bind(now())
            .execute(&self.pool)
            .await?;
        let (id, existing): (i64, String) =
            sqlx::query_as("SELECT id, kind FROM sources WHERE name = ?").bind(name).fetch_one(&self.pool).await?;
        if existing != kind {
            return Err(LedgerError::State(format!(
                "source '{name}' already holds '{existing}' data in this ledger, not '{kind}'; use another source name"
            )));
        }
        Ok(id)
    }

    async fn current_load(&self, source_id: i64, scope: &str) -> Result<Option<LoadRow>> {
        let sql = format!("{LOAD_SELECT} WHERE l.source_id = ? AND l.scope = ? AND l.state = 'current'");
        let row = sqlx::query(AssertSqlSafe(sql)).bind(source_id).bind(scope).fetch_optional(&self.pool).await?;
        row.as_ref().map(load_row).transpose()
    }

    async fn set_source_role(&self, source_id: i64, role: SourceRole) -> Result<()> {
        sqlx::query("UPDATE sources SET role = ? WHERE id = ?")
            .bind(role.as_str())
            .bind(source_id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn source_roles(&self) -> Result<Vec<(String, SourceRole)>> {
        sqlx::query("SELECT name, role FROM sources ORDER BY name")
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(|r| {
                let role: String = r.try_get(1)?;
                let role =
                    SourceRole::parse(&role).ok_or_else(|| LedgerError::Corrupt(format!("source role '{role}'")))?;
                Ok((r.try_get(0)?, role))
            })
            .collect()
    }

    async fn current_load_with_key(&self, source_id: i64, key: &str) -> Result<Option<LoadRow>> {
        let sql = format!(
            "{LOAD_SELECT} WHERE l.source_id = ? AND l.delivery_key = ? AND l.state = 'current' ORDER BY l.id LIMIT 1"
        );
        let row = sqlx::query(AssertSqlSafe(sql)).bind(source_id).bind(key).fetch_optional(&self.pool).await?;
        row.as_ref().map(load_row).transpose()
    }

    async fn begin_load(&self, l: &NewLoad) -> Result<LoadId> {
        let t = now();
        let id: i64 = sqlx::query_scalar(
            "INSERT INTO loads (source_id, scope, billing_period, delivery_key, description, state, owner, started_at, heartbeat_at) \
             VALUES (?, ?, ?, ?, ?, 'staging', ?, ?, ?) RETURNING id",
        )
        .bind(l.source_id)
        .bind(&l.scope)
        .bind(&l.billing_period)
        .bind(&l.delivery_key)
        .bind(&l.description)
        .bind(&l.owner)
        .bind(&t)
        .bind(&t)
        .fetch_one(&self.pool)
        .await?;
        Ok(id)
    }

    async fn stage_lines(
        &self,
        load: LoadId,
        first_row: u64,
        lines: Vec<ChargeLine>,
        spent: Option<SpentLines>,
    ) -> Result<()> {
        if let Some((path, conn)) = &self.bulk {
            let (path, conn) = (path.clone(), conn.clone());
            // Formatting happens on this thread, binding and stepping on the staging thread.
            let rendered = Rendered::new(&lines).map_err(LedgerError::Bulk)?;
            let staged = tokio::task::spawn_blocking(move || {
                let staged = (|| {
                    let mut guard = conn.lock().map_err(|_| "bulk connection lock poisoned".to_string())?;
                    if guard.is_none() {
                        *guard = Some(BulkConn::open(&path)?);
                    }
                    match guard.as_mut() {
                        Some(c) => c.stage(load, to_i64(first_row), &lines, &rendered, &now()),
                        None => Err("bulk connection missing".to_string()),
                    }
                })();
                if let Some(spent) = spent {
                    spent.give(lines);
                }
                staged
            })
            .await
            .map_err(|e| LedgerError::Bulk(e.to_string()))?;
            return match staged.map_err(LedgerError::Bulk)? {
                Staged::Done => Ok(()),
                Staged::NotStaging => Err(not_staging(load)),
            };
        }
        self.stage_lines_sqlx(load, first_row, &lines).await
    }

    async fn stage_quarantine(&self, load: LoadId, rows: &[RowError]) -> Result<()> {
        if rows.is_empty() {
            return Ok(());
        }
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        for r in rows {
            sqlx::query("INSERT INTO quarantine (load_id, location, reason, raw, raw_amount, currency) VALUES (?, ?, ?, ?, ?, ?)")
                .bind(load)
                .bind(&r.location)
                .bind(&r.reason)
                .bind(&r.raw)
                .bind(&r.raw_amount)
                .bind(&r.currency)
                .execute(&mut *tx)
                .await?;
        }
        heartbeat(&mut tx, load).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn commit_load(&self, load: LoadId, sm: &LoadSummary) -> Result<CommitOutcome> {
        let t = now();
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        let (state, source_id, scope, key): (String, i64, String, String) =
            sqlx::query_as("SELECT state, source_id, scope, delivery_key FROM loads WHERE id = ?")
                .bind(load)
                .fetch_one(&mut *tx)
                .await?;
        if state != "staging" {
            return Err(LedgerError::State(format!(
                "load {load} is {state}, not staging: it was swept as stale or failed; run the import again"
            )));
        }
        let key = match &sm.delivery_key {
            Some(k) => {
                sqlx::query("UPDATE loads SET delivery_key = ? WHERE id = ?")
                    .bind(k)
                    .bind(load)
                    .execute(&mut *tx)
                    .await?;
                k.clone()
            }
            None => key,
        };
        let cur: Option<(i64, String)> = sqlx::query_as(
            "SELECT id, delivery_key FROM loads WHERE source_id = ? AND scope = ? AND state = 'current'",
        )
        .bind(source_id)
        .bind(&scope)
        .fetch_optional(&mut *tx)
        .await?;
        if let Some((existing, k)) = &cur
            && *k == key
        {
            sqlx::query("UPDATE loads SET state = 'failed', finished_at = ?, error = ? WHERE id = ?")
                .bind(&t)
                .bind(format!("the same delivery was committed concurrently as load {existing}"))
                .bind(load)
                .execute(&mut *tx)
                .await?;
            sqlx::query(DELETE_LOAD_CHARGES).bind(load).execute(&mut *tx).await?;
            sqlx::query("DELETE FROM quarantine WHERE load_id = ?").bind(load).execute(&mut *tx).await?;
            tx.commit().await?;
            return Ok(CommitOutcome::Duplicate { existing: *existing });
        }
        let old = cur.map(|c| c.0);
        if let Some(old) = old {
            sqlx::query("UPDATE loads SET state = 'superseded', superseded_by = ?, superseded_at = ? WHERE id = ?")
                .bind(load)
                .bind(&t)
                .bind(old)
                .execute(&mut *tx)
                .await?;
        }
        sqlx::query(
            "UPDATE loads SET state = 'current', finished_at = ?, heartbeat_at = ?, row_count = ?, quarantined_count = ?, \
             rounded_count = ?, totals = ?, quarantined_totals = ?, checksum = ? WHERE id = ?",
        )
        .bind(&t)
        .bind(&t)
        .bind(to_i64(sm.row_count))
        .bind(to_i64(sm.quarantined_count))
        .bind(to_i64(sm.rounded_count))
        .bind(sm.totals.to_json())
        .bind(sm.quarantined_totals.to_json())
        .bind(&sm.checksum)
        .bind(load)
        .execute(&mut *tx)
        .await?;
        for (p, c) in &sm.periods {
            sqlx::query("INSERT INTO load_periods (load_id, period, row_count, totals, invoice_ids, all_invoiced) VALUES (?, ?, ?, ?, ?, ?)")
                .bind(load)
                .bind(p)
                .bind(to_i64(c.rows))
                .bind(c.totals.to_json())
                .bind(set_json(&c.invoice_ids))
                .bind(c.all_invoiced)
                .execute(&mut *tx)
                .await?;
        }
        let mut affected: BTreeSet<String> = sm.periods.keys().cloned().collect();
        if let Some(old) = old {
            let olds: Vec<String> = sqlx::query_scalar("SELECT period FROM load_periods WHERE load_id = ?")
                .bind(old)
                .fetch_all(&mut *tx)
                .await?;
            affected.extend(olds);
        }
        for p in affected {
            let parts: Vec<(String, Option<String>, bool)> = sqlx::query_as(
                "SELECT lp.totals, lp.invoice_ids, lp.all_invoiced FROM load_periods lp JOIN loads l ON l.id = lp.load_id \
                 WHERE l.source_id = ? AND l.state = 'current' AND lp.period = ?",
            )
            .bind(source_id)
            .bind(&p)
            .fetch_all(&mut *tx)
            .await?;
            let merged = merge_parts(&parts)?;
            let prev: Option<(String, Option<String>)> =
                sqlx::query_as("SELECT state, totals FROM billing_periods WHERE source_id = ? AND period = ?")
                    .bind(source_id)
                    .bind(&p)
                    .fetch_optional(&mut *tx)
                    .await?;
            let prev_totals = prev.as_ref().map(|(_, t)| parse_totals(t.clone())).transpose()?;
            let prev_state = prev.as_ref().map(|(s, _)| PeriodState::parse(s)).transpose()?;
            let prev_ref = prev_state.zip(prev_totals.as_ref());
            let state = next_period_state(prev_ref, &merged.totals, sm.final_periods || merged.all_invoiced);
            sqlx::query(
                "INSERT INTO billing_periods (source_id, period, state, invoice_ids, current_load_id, totals, updated_at) \
                 VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (source_id, period) DO UPDATE SET state = excluded.state, \
                 invoice_ids = excluded.invoice_ids, current_load_id = excluded.current_load_id, totals = excluded.totals, \
                 updated_at = excluded.updated_at",
            )
            .bind(source_id)
            .bind(&p)
            .bind(state.as_str())
            .bind(set_json(&merged.invoice_ids))
            .bind(load)
            .bind(merged.totals.to_json())
            .bind(&t)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(CommitOutcome::Current { superseded: old })
    }

    async fn fail_load(&self, load: LoadId, error: &str) -> Result<bool> {
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        let n = sqlx::query(
            "UPDATE loads SET state = 'failed', finished_at = ?, error = ? WHERE id = ? AND state = 'staging'",
        )
        .bind(now())
        .bind(error)
        .bind(load)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if n > 0 {
            sqlx::query(DELETE_LOAD_CHARGES).bind(load).execute(&mut *tx).await?;
            sqlx::query("DELETE FROM quarantine WHERE load_id = ?").bind(load).execute(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(n > 0)
    }

    async fn last_load(&self, source_id: i64, scope: &str) -> Result<Option<LoadRow>> {
        let sql = format!(
            "{LOAD_SELECT} WHERE l.source_id = ? AND l.scope = ? AND l.state <> 'staging' ORDER BY l.id DESC LIMIT 1"
        );
        let row = sqlx::query(AssertSqlSafe(sql)).bind(source_id).bind(scope).fetch_optional(&self.pool).await?;
        row.as_ref().map(load_row).transpose()
    }

    async fn record_failure(&self, load: LoadId, error: &str, fingerprint: &str) -> Result<Option<LoadId>> {
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        let n = sqlx::query(
            "UPDATE loads SET state = 'failed', finished_at = ?, error = ?, delivery_key = ? WHERE id = ? AND state = 'staging'",
        )
        .bind(now())
        .bind(error)
        .bind(fingerprint)
        .bind(load)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        let mut merged = None;
        if n > 0 {
            sqlx::query(DELETE_LOAD_CHARGES).bind(load).execute(&mut *tx).await?;
            sqlx::query("DELETE FROM quarantine WHERE load_id = ?").bind(load).execute(&mut *tx).await?;
            // The scope's previous load, when it failed the same way on the same input.
            let prev: Option<(i64, String, Option<String>, String)> = sqlx::query_as(
                "SELECT p.id, p.state, p.error, p.delivery_key FROM loads p JOIN loads l ON l.source_id = p.source_id \
                 AND l.scope = p.scope WHERE l.id = ? AND p.id <> l.id AND p.state <> 'staging' ORDER BY p.id DESC LIMIT 1",
            )
            .bind(load)
            .fetch_optional(&mut *tx)
            .await?;
            if let Some((id, state, err, key)) = prev
                && state == "failed"
                && err.as_deref() == Some(error)
                && key == fingerprint
            {
                sqlx::query("UPDATE loads SET attempts = attempts + 1, finished_at = ? WHERE id = ?")
                    .bind(now())
                    .bind(id)
                    .execute(&mut *tx)
                    .await?;
                sqlx::query("DELETE FROM loads WHERE id = ?").bind(load).execute(&mut *tx).await?;
                merged = Some(id);
            }
        }
        tx.commit().await?;
        Ok(merged)
    }

    async fn discard_load(&self, load: LoadId) -> Result<()> {
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        let staging: Option<i64> = sqlx::query_scalar("SELECT id FROM loads WHERE id = ? AND state = 'staging'")
            .bind(load)
            .fetch_optional(&mut *tx)
            .await?;
        if staging.is_some() {
            sqlx::query(DELETE_LOAD_CHARGES).bind(load).execute(&mut *tx).await?;
            sqlx::query("DELETE FROM quarantine WHERE load_id = ?").bind(load).execute(&mut *tx).await?;
            sqlx::query("DELETE FROM loads WHERE id = ?").bind(load).execute(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn gc_superseded(&self, before: DateTime<Utc>) -> Result<u64> {
        let ids: Vec<i64> = sqlx::query_scalar(concat!(
            "SELECT l.id FROM loads l WHERE l.state = 'superseded' AND l.superseded_at < ? \
             AND EXISTS (SELECT 1 FROM charges c WHERE ",
            charges_of_l!(),
            ")",
        ))
        .bind(format_ts(before))
        .fetch_all(&self.pool)
        .await?;
        for id in &ids {
            let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
            sqlx::query(DELETE_LOAD_CHARGES).bind(id).execute(&mut *tx).await?;
            sqlx::query("DELETE FROM quarantine WHERE load_id = ?").bind(id).execute(&mut *tx).await?;
            tx.commit().await?;
        }
        Ok(ids.len() as u64)
    }

    async fn loads(&self, f: &LoadFilter) -> Result<Vec<LoadRow>> {
        let mut sql = format!("{LOAD_SELECT} WHERE 1 = 1");
        let mut binds: Vec<String> = Vec::new();
        if let Some(id) = f.id {
            sql.push_str(&format!(" AND l.id = {id}"));
        }
        if let Some(s) = &f.source {
            sql.push_str(" AND s.name = ?");
            binds.push(s.clone());
        }
        if let Some(st) = f.state {
            sql.push_str(" AND l.state = ?");
            binds.push(st.as_str().to_string());
        }
        sql.push_str(" ORDER BY l.id");
        if let Some(n) = f.limit {
            sql = format!("SELECT * FROM ({sql} DESC LIMIT {n}) ORDER BY 1");
        }
        let mut q = sqlx::query(AssertSqlSafe(sql));
        for b in binds {
            q = q.bind(b);
        }
        q.fetch_all(&self.pool).await?.iter().map(load_row).collect()
    }

    async fn totals(&self, f: &ChargeFilter, by: &[Dim]) -> Result<Vec<TotalRow>> {
        let (w, binds) = filter_sql(f);
        let dims: Vec<&str> = by.iter().map(|d| dim_sql(*d)).collect();
        let mut group: Vec<String> = dims.iter().map(|d| d.to_string()).collect();
        group.push("c.billing_currency".to_string());
        let select = group.join(", ");
        let order: Vec<String> = group.iter().map(|g| format!("{g} NULLS FIRST")).collect();
        let sql = format!(
            "SELECT {select}, COUNT(*), decimal_sum(c.billed_cost), decimal_sum(c.effective_cost) \
             FROM charges c JOIN loads l ON {j} JOIN sources s ON s.id = l.source_id \
             WHERE {w} GROUP BY {select} ORDER BY {}",
            order.join(", "),
            j = charges_of_l!()
        );
        let mut q = sqlx::query(AssertSqlSafe(sql));
        for b in binds {
            q = q.bind(b);
        }
        let n = dims.len();
        q.fetch_all(&self.pool)
            .await?
            .iter()
            .map(|r| {
                let mut keys = Vec::with_capacity(n);
                for i in 0..n {
                    keys.push(r.try_get::<Option<String>, _>(i)?);
                }
                Ok(TotalRow {
                    keys,
                    currency: r.try_get(n)?,
                    rows: to_u64(r.try_get(n + 1)?),
                    billed_cost: parse_sum(r.try_get(n + 2)?)?,
                    effective_cost: parse_sum(r.try_get(n + 3)?)?,
                })
            })
            .collect()
    }

    async fn count_charges(&self, f: &ChargeFilter) -> Result<u64> {
        let (w, binds) = filter_sql(f);
        let sql = format!(
            "SELECT COUNT(*) FROM charges c JOIN loads l ON {j} JOIN sources s ON s.id = l.source_id WHERE {w}",
            j = charges_of_l!()
        );
        let mut q = sqlx::query_scalar::<_, i64>(AssertSqlSafe(sql));
        for b in binds {
            q = q.bind(b);
        }
        Ok(to_u64(q.fetch_one(&self.pool).await?))
    }

    async fn quarantine_rows(&self, load: LoadId) -> Result<Vec<QuarantineRow>> {
        let rows: Vec<(i64, String, String, String, Option<String>, Option<String>)> = sqlx::query_as(
            "SELECT load_id, location, reason, raw, raw_amount, currency FROM quarantine WHERE load_id = ? ORDER BY id",
        )
        .bind(load)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .map(|(load_id, location, reason, raw, raw_amount, currency)| QuarantineRow {
                load_id,
                location,
                reason,
                raw,
                raw_amount,
                currency,
            })
            .collect())
    }

    async fn billing_periods(&self) -> Result<Vec<PeriodRow>> {
        let rows: Vec<(String, String, String, Option<String>, Option<i64>, Option<String>)> = sqlx::query_as(
            "SELECT s.name, p.period, p.state, p.invoice_ids, p.current_load_id, p.totals FROM billing_periods p \
             JOIN sources s ON s.id = p.source_id ORDER BY s.name, p.period",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter()
            .map(|(source, period, state, inv, current_load, totals)| {
                Ok(PeriodRow {
                    source,
                    period,
                    state: PeriodState::parse(&state)?,
                    invoice_ids: parse_ids(inv)?,
                    current_load,
                    totals: parse_totals(totals)?,
                })
            })
            .collect()
    }

    fn charges<'a>(&'a self, f: &'a ChargeFilter) -> BoxStream<'a, Result<ChargeRecord>> {
        let (w, binds) = filter_sql(f);
        let cols: Vec<String> = CHARGE_COLUMNS.iter().map(|c| format!("c.{c}")).collect();
        let order: Vec<String> = ORDER_COLUMNS.iter().map(|c| format!("c.{c} NULLS FIRST")).collect();
        let sql = format!(
            "SELECT {}, s.name FROM charges c JOIN loads l ON {j} JOIN sources s ON s.id = l.source_id \
             WHERE {w} ORDER BY {}",
            cols.join(", "),
            order.join(", "),
            j = charges_of_l!()
        );
        Box::pin(async_stream_rows(&self.pool, sql, binds))
    }

    async fn start_run(&self, job: &str, source: Option<&str>) -> Result<i64> {
        Ok(sqlx::query_scalar(
            "INSERT INTO runs (job, source, started_at, status, owner) VALUES (?, ?, ?, 'running', ?) RETURNING id",
        )
        .bind(job)
        .bind(source)
        .bind(now())
        .bind(super::process_owner())
        .fetch_one(&self.pool)
        .await?)
    }

    async fn claim_run(&self, job: &str, source: Option<&str>, tick: DateTime<Utc>) -> Result<Option<i64>> {
        Ok(sqlx::query_scalar(
            "INSERT INTO runs (job, source, started_at, status, tick, owner) VALUES (?, ?, ?, 'running', ?, ?) \
             ON CONFLICT DO NOTHING RETURNING id",
        )
        .bind(job)
        .bind(source)
        .bind(now())
        .bind(format_ts(tick))
        .bind(super::process_owner())
        .fetch_optional(&self.pool)
        .await?)
    }

    async fn try_job_lock(&self, _key: &str) -> Result<Option<Box<dyn JobLock>>> {
        // One daemon owns a SQLite ledger (it holds the file lock): in-process exclusion suffices.
        Ok(Some(Box::new(ProcessLock)))
    }

    async fn finish_run(&self, run: i64, o: &RunOutcome) -> Result<()> {
        sqlx::query(
            "UPDATE runs SET finished_at = ?, status = ?, attempts = ?, error = ?, rows = ?, loads_created = ?, loads_skipped = ? WHERE id = ?",
        )
        .bind(now())
        .bind(o.status.as_str())
        .bind(i64::from(o.attempts))
        .bind(&o.error)
        .bind(to_i64(o.rows))
        .bind(to_i64(o.loads_created))
        .bind(to_i64(o.loads_skipped))
        .bind(run)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn running_runs(&self) -> Result<Vec<(i64, Option<String>, DateTime<Utc>)>> {
        let rows: Vec<(i64, Option<String>, String)> =
            sqlx::query_as("SELECT id, owner, started_at FROM runs WHERE status = 'running' ORDER BY id")
                .fetch_all(&self.pool)
                .await?;
        rows.into_iter().map(|(id, o, t)| Ok((id, o, ts(&t)?))).collect()
    }

    async fn abandon_run(&self, run: i64, reason: &str) -> Result<bool> {
        let n = sqlx::query(
            "UPDATE runs SET status = 'abandoned', finished_at = ?, error = ? WHERE id = ? AND status = 'running'",
        )
        .bind(now())
        .bind(reason)
        .bind(run)
        .execute(&self.pool)
        .await?
        .rows_affected();
        Ok(n > 0)
    }

    async fn runs(&self, limit: u32) -> Result<Vec<RunRow>> {
        let sql = format!(
            "SELECT id, job, source, started_at, finished_at, status, attempts, error, rows, loads_created, loads_skipped \
             FROM runs ORDER BY id DESC LIMIT {limit}"
        );
        sqlx::query(AssertSqlSafe(sql))
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(|r| {
                Ok(RunRow {
                    id: r.try_get(0)?,
                    job: r.try_get(1)?,
                    source: r.try_get(2)?,
                    started_at: ts(r.try_get(3)?)?,
                    finished_at: opt_ts(r.try_get(4)?)?,
                    outcome: RunOutcome {
                        status: super::run_status(r.try_get(5)?)?,
                        attempts: u32::try_from(r.try_get::<i64, _>(6)?).unwrap_or(0),
                        error: r.try_get(7)?,
                        rows: to_u64(r.try_get(8)?),
                        loads_created: to_u64(r.try_get(9)?),
                        loads_skipped: to_u64(r.try_get(10)?),
                    },
                })
            })
            .collect()
    }
}

fn async_stream_rows(
    pool: &SqlitePool,
    sql: String,
    binds: Vec<String>,
) -> impl futures::Stream<Item = Result<ChargeRecord>> + Send + '_ {
    futures::stream::once(async move {
        let stream = sqlx::query(AssertSqlSafe(sql));
        let mut q = stream;
        for b in binds {
            q = q.bind(b);
        }
        q.fetch(pool).map(|r| r.map_err(LedgerError::from).and_then(|row| charge_record(&row)))
    })
    .flatten()
}

async fn heartbeat(tx: &mut sqlx::Transaction<'_, sqlx::Sqlite>, load: LoadId) -> Result<()> {
    let n = sqlx::query("UPDATE loads SET heartbeat_at = ? WHERE id = ? AND state = 'staging'")
        .bind(now())
        .bind(load)
        .execute(&mut **tx)
        .await?
        .rows_affected();
    if n == 0 {
        return Err(not_staging(load));
    }
    Ok(())
}

fn not_staging(load: LoadId) -> LedgerError {
    LedgerError::State(format!(
        "load {load} is no longer staging (swept as stale by another process?); nothing of it was committed"
    ))
}
