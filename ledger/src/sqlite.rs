//! SQLite backend: the embedded default. Money is canonical decimal TEXT, summed with the
//! exact `decimal_sum()` aggregate; timestamps are `YYYY-MM-DDTHH:MM:SSZ` TEXT.

use std::collections::BTreeSet;
use std::str::FromStr;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use costledger_core::{
    ChargeCategory, ChargeClass, ChargeLine, FOCUS_TEXT_COUNT, RowError, SpentLines, canonical, format_ts,
    parse_timestamp,
};
use futures::StreamExt;
use futures::stream::BoxStream;
use rust_decimal::Decimal;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteRow, SqliteSynchronous};
use sqlx::{AssertSqlSafe, Row, SqlitePool};

use super::contexts::{CONTEXT_COLUMNS, ContextKey, Contexts, context_texts};
use super::kinds::{KIND_COLUMNS, KIND_COUNT, KindKey, Kinds, focus_kind_slots, kind_texts};
use super::load_sql::Dialect;
use super::query_sql::{GroupDialect, GroupedTable, Summed, grouped_row, grouped_sql, rollup_where};
use super::sqlite_bulk::{BulkConn, Rendered, Staged};
use super::*;

/// Rows per multi-row INSERT (62 values each: 31,000, under SQLite's limit of 32,766 bound
/// variables).
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

/// How SQLite spells a grouped read's sums, timestamps and join.
const GROUPED: GroupDialect = GroupDialect {
    sum: ("decimal_sum(", ")"),
    text_sum: ("decimal_sum(", ")"),
    ts_text: ("", ""),
    month_text: ("substr(", ", 1, 7)"),
    charges_of_l: charges_of_l!(),
};

/// Each charge context's rank in the export order (`ORDER_COLUMNS` in `lib.rs`): `r1` over billing
/// period, provider, billing account and sub account, `r2` over the service (equal values,
/// equal rank; text in byte order, NULL first — SQLite's own order of those columns). The
/// export sorts by these integers and the charge's own columns instead of six texts per row:
/// the sorter compares integers first (as PostgreSQL's export does, `postgres.rs`).
pub(crate) const CONTEXT_RANKS: &str = "(SELECT id, \
     rank() OVER (ORDER BY billing_period_start, provider_name, billing_account_id, sub_account_id) AS r1, \
     rank() OVER (ORDER BY service_name) AS r2 FROM charge_contexts)";

/// Delete the charges of load `?1`.
const DELETE_LOAD_CHARGES: &str =
    "DELETE FROM charge_rows WHERE id BETWEEN ?1 * 4294967296 AND ?1 * 4294967296 + 4294967295";

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
    /// Context ids by value for the sqlx staging path (the bulk connection keeps its own).
    contexts: tokio::sync::Mutex<Contexts>,
    /// Kind ids by value for the sqlx staging path (the bulk connection keeps its own).
    kinds: tokio::sync::Mutex<Kinds>,
}

fn ts(s: &str) -> Result<DateTime<Utc>> {
    parse_timestamp(s).map_err(|e| LedgerError::Corrupt(e.to_string()))
}

fn opt_ts(s: Option<String>) -> Result<Option<DateTime<Utc>>> {
    s.as_deref().map(ts).transpose()
}

fn now() -> String {
    format_ts(Utc::now())
}

fn insert_sql(rows: usize) -> String {
    let cols = row_columns().join(", ");
    let one = format!("({})", vec!["?"; row_columns().len() + 1].join(", "));
    let mut sql = format!("INSERT INTO charge_rows ({cols}, id) VALUES ");
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

impl ChargeRow for SqliteRow {
    fn text(&self, i: usize) -> Result<Option<&str>> {
        Ok(self.try_get::<Option<&str>, _>(i)?)
    }
    fn int(&self, i: usize) -> Result<i64> {
        Ok(self.try_get::<i64, _>(i)?)
    }
}

fn dec_str(s: Option<&str>) -> Result<Option<Decimal>> {
    s.map(|s| Decimal::from_str_exact(s).map_err(|e| LedgerError::Corrupt(format!("amount '{s}': {e}")))).transpose()
}

/// One charge row; `with_focus`: the read selected the FOCUS columns beyond the core
/// ([`ChargeColumns::reads_focus`]), else they are NULL and not decoded.
pub(crate) fn charge_record<R: ChargeRow>(r: &R, with_focus: bool) -> Result<ChargeRecord> {
    let s = |i: usize| -> Result<Option<String>> { Ok(r.text(i)?.map(str::to_owned)) };
    let req_str = |i: usize| -> Result<&str> {
        r.text(i)?.ok_or_else(|| LedgerError::Corrupt(format!("NULL in required column {}", CHARGE_COLUMNS[i])))
    };
    let req = |i: usize| -> Result<String> { req_str(i).map(str::to_owned) };
    let tags = |i: usize| parse_tags(r.text(i)?);
    let line = ChargeLine {
        billing_account_id: req(0)?,
        billing_account_name: s(1)?,
        sub_account_id: s(2)?,
        sub_account_name: s(3)?,
        billing_period_start: ts(req_str(4)?)?,
        billing_period_end: ts(req_str(5)?)?,
        charge_period_start: ts(req_str(6)?)?,
        charge_period_end: ts(req_str(7)?)?,
        charge_category: ChargeCategory::from_str(req_str(8)?).map_err(LedgerError::Corrupt)?,
        charge_class: r.text(9)?.map(ChargeClass::from_str).transpose().map_err(LedgerError::Corrupt)?,
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
        billed_cost: dec_str(Some(req_str(20)?))?.unwrap_or_default(),
        effective_cost: dec_str(r.text(21)?)?,
        list_cost: dec_str(r.text(22)?)?,
        contracted_cost: dec_str(r.text(23)?)?,
        billing_currency: req(24)?,
        pricing_quantity: dec_str(r.text(25)?)?,
        pricing_unit: s(26)?,
        consumed_quantity: dec_str(r.text(27)?)?,
        consumed_unit: s(28)?,
        commitment_discount_id: s(29)?,
        invoice_id: s(30)?,
        tags: tags(31)?,
        focus: match with_focus {
            true => focus_columns(
                std::array::from_fn(|i| s(FOCUS_AT + i)),
                std::array::from_fn(|i| dec_str(r.text(FOCUS_AT + FOCUS_TEXT_COUNT + i)?)),
            )?,
            false => None,
        },
        x_extra: tags(32)?,
        source_ref: s(33)?,
    };
    Ok(ChargeRecord { load_id: r.int(34)?, row_no: r.int(35)?, source: req(SOURCE_AT)?, line })
}

impl SqliteLedger {
    /// A load ended without its commit: nothing of SQLite's staging outlives a batch.
    fn end_staging(&self, _load: LoadId) {}

    /// Every line of a load is staged: nothing of SQLite's staging outlives a batch.
    async fn finish_staging(&self, _load: LoadId) -> Result<()> {
        Ok(())
    }

    pub async fn connect(url: &str) -> Result<Self> {
        let memory = url.contains(":memory:") || url.contains("mode=memory");
        let opts = SqliteConnectOptions::from_str(url)?
            .create_if_missing(true)
            // 16 KiB pages for a new ledger (an existing one keeps its own: the pragma only
            // applies before the first table): a charge row is ~700 bytes, so 4 KiB pages left
            // ~8% of each page empty and wrote four page headers, WAL frames and checksums where
            // one does. Measured on 1M `sample` lines: file 4% smaller, import ~5% faster.
            .page_size(16384)
            .journal_mode(if memory { SqliteJournalMode::Memory } else { SqliteJournalMode::Wal })
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(Duration::from_secs(30))
            .foreign_keys(true);
        let pool = SqlitePoolOptions::new()
            // An in-memory database exists per connection: keep exactly one.
            .max_connections(if memory { 1 } else { 4 })
            .after_connect(|conn, _| Box::pin(async move { super::decimal_sum::register(conn).await }))
            // SQLite rolls a transaction back by itself when a statement fails with SQLITE_FULL,
            // SQLITE_IOERR or SQLITE_NOMEM; the driver's own ROLLBACK then fails and it keeps
            // counting the connection as inside a transaction, so every later `BEGIN` on it
            // would fail ("begin_with at non-zero transaction depth"). Such a connection is
            // closed instead of going back to the pool. The ping waits until the rollback
            // queued by a dropped transaction has run.
            .after_release(|conn, _| {
                Box::pin(async move {
                    use sqlx::Connection;
                    conn.ping().await?;
                    Ok(!conn.is_in_transaction())
                })
            })
            .connect_with(opts.clone())
            .await?;
        let bulk = (!memory).then(|| (opts.get_filename().to_path_buf(), Arc::new(Mutex::new(None))));
        Ok(Self { pool, bulk, contexts: Default::default(), kinds: Default::default() })
    }

    pub fn pool(&self) -> &SqlitePool {
        &self.pool
    }

    /// A grouped read: through the C-API reader on a file, sqlx in memory.
    fn grouped_read<'a>(
        &'a self,
        table: GroupedTable,
        by: &[GroupColumn],
        sums: Summed,
        w: String,
        binds: Vec<String>,
    ) -> BoxStream<'a, Result<GroupedRow>> {
        let sql = match grouped_sql(&GROUPED, table, by, sums, &w) {
            Ok(sql) => sql,
            Err(e) => return Box::pin(futures::stream::once(async move { Err(e) })),
        };
        let n = by.len();
        match &self.bulk {
            Some((path, _)) => Box::pin(super::sqlite_read::rows(path.clone(), sql, binds, move |r| grouped_row(r, n))),
            None => Box::pin(
                futures::stream::once(async move {
                    let mut q = sqlx::query(AssertSqlSafe(sql));
                    for b in binds {
                        q = q.bind(b);
                    }
                    q.fetch(&self.pool).map(move |r| r.map_err(LedgerError::from).and_then(|row| grouped_row(&row, n)))
                })
                .flatten(),
            ),
        }
    }

    /// The sqlx path (multi-row VALUES), used for in-memory databases.
    async fn stage_lines_sqlx(&self, load: LoadId, first_row: u64, lines: &[ChargeLine]) -> Result<()> {
        let mut row_no = to_i64(first_row);
        let mut cache = self.contexts.lock().await;
        let mut kinds = self.kinds.lock().await;
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        let staged = async {
            let ctx = context_ids_sqlx(&mut tx, &mut cache, lines).await?;
            let kind = kind_ids_sqlx(&mut tx, &mut kinds, lines).await?;
            let rows = lines.chunks(ROWS_PER_INSERT).zip(ctx.chunks(ROWS_PER_INSERT)).zip(kind.chunks(ROWS_PER_INSERT));
            for ((chunk, ctx), kind) in rows {
                let owned;
                let sql: &str = if chunk.len() == ROWS_PER_INSERT {
                    full_insert_sql()
                } else {
                    owned = insert_sql(chunk.len());
                    &owned
                };
                let mut q = sqlx::query(AssertSqlSafe(sql));
                for ((l, ctx), kind) in chunk.iter().zip(ctx).zip(kind) {
                    q = q
                        .bind(format_ts(l.charge_period_start))
                        .bind(format_ts(l.charge_period_end))
                        .bind(&l.charge_description)
                        .bind(&l.resource_id)
                        .bind(&l.resource_name)
                        .bind(&l.sku_id)
                        .bind(canonical(l.billed_cost))
                        .bind(l.effective_cost.map(canonical))
                        .bind(l.list_cost.map(canonical))
                        .bind(l.contracted_cost.map(canonical))
                        .bind(l.pricing_quantity.map(canonical))
                        .bind(l.consumed_quantity.map(canonical))
                        .bind(&l.commitment_discount_id)
                        .bind(l.tags_json())
                        .bind(l.x_extra_json())
                        .bind(&l.source_ref)
                        .bind(load)
                        .bind(row_no);
                    let texts = l.focus.as_deref().map(|f| f.texts()).unwrap_or_default();
                    for (t, k) in texts.into_iter().zip(focus_kind_slots()) {
                        if k.is_none() {
                            q = q.bind(t.map(str::to_string));
                        }
                    }
                    let decimals = l.focus.as_deref().map(|f| f.decimals()).unwrap_or_default();
                    for d in decimals {
                        q = q.bind(d.map(canonical));
                    }
                    q = q.bind(*ctx).bind(*kind).bind(charge_key(load, row_no).map_err(LedgerError::Bulk)?);
                    row_no += 1;
                }
                q.execute(&mut *tx).await?;
            }
            heartbeat(&mut tx, load).await
        }
        .await;
        let done = match staged {
            Ok(()) => tx.commit().await.map_err(LedgerError::from),
            Err(e) => Err(e),
        };
        if done.is_err() {
            // Contexts and kinds inserted by this transaction rolled back with it.
            cache.clear();
            kinds.clear();
        }
        done
    }
}

/// The context id of each line ([`crate::contexts`]) inside the staging transaction: cached,
/// else found among the stored contexts of its billing period (read once), else inserted.
async fn context_ids_sqlx(
    tx: &mut sqlx::SqliteConnection,
    cache: &mut Contexts,
    lines: &[ChargeLine],
) -> Result<Vec<i64>> {
    let mut key = ContextKey::default();
    let mut ids = Vec::with_capacity(lines.len());
    for l in lines {
        let (start, end) = (format_ts(l.billing_period_start), format_ts(l.billing_period_end));
        let texts = context_texts(l);
        if let Some(id) = cache.get(key.set(start.as_bytes(), end.as_bytes(), &texts)) {
            ids.push(id);
            continue;
        }
        if !cache.period_loaded(key.period()) {
            let sql = format!(
                "SELECT id, {} FROM charge_contexts WHERE billing_period_start = ?",
                CONTEXT_COLUMNS.join(", ")
            );
            let rows = sqlx::query(AssertSqlSafe(sql)).bind(&start).fetch_all(&mut *tx).await?;
            let mut k = ContextKey::default();
            for r in &rows {
                let v = |i: usize| r.try_get::<Option<&str>, _>(i + 1);
                let texts = [v(0)?, v(1)?, v(2)?, v(3)?, v(6)?, v(7)?, v(8)?, v(9)?, v(10)?, v(11)?, v(12)?];
                let (s, e) = (v(4)?.unwrap_or_default(), v(5)?.unwrap_or_default());
                cache.insert(k.set(s.as_bytes(), e.as_bytes(), &texts), r.try_get(0)?);
            }
            cache.mark_period_loaded(key.period());
            if let Some(id) = cache.get(key.bytes()) {
                ids.push(id);
                continue;
            }
        }
        let sql = format!(
            "INSERT INTO charge_contexts ({}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING id",
            CONTEXT_COLUMNS.join(", ")
        );
        let t = texts;
        let id: i64 = sqlx::query_scalar(AssertSqlSafe(sql))
            .bind(t[0])
            .bind(t[1])
            .bind(t[2])
            .bind(t[3])
            .bind(&start)
            .bind(&end)
            .bind(t[4])
            .bind(t[5])
            .bind(t[6])
            .bind(t[7])
            .bind(t[8])
            .bind(t[9])
            .bind(t[10])
            .fetch_one(&mut *tx)
            .await?;
        cache.insert(key.bytes(), id);
        ids.push(id);
    }
    Ok(ids)
}

/// The kind id of each line ([`crate::kinds`]) inside the staging transaction: cached, else
/// found among the stored kinds (read once), else inserted.
async fn kind_ids_sqlx(tx: &mut sqlx::SqliteConnection, cache: &mut Kinds, lines: &[ChargeLine]) -> Result<Vec<i64>> {
    let mut key = KindKey::default();
    let mut ids = Vec::with_capacity(lines.len());
    for l in lines {
        let texts = kind_texts(l);
        if let Some(id) = cache.get(key.set(&texts)) {
            ids.push(id);
            continue;
        }
        if !cache.loaded() {
            let rows = sqlx::query(AssertSqlSafe(super::kinds::select_stored_sql())).fetch_all(&mut *tx).await?;
            let mut k = KindKey::default();
            for r in &rows {
                let mut t: [Option<&str>; KIND_COUNT] = [None; KIND_COUNT];
                for (i, slot) in t.iter_mut().enumerate() {
                    *slot = r.try_get::<Option<&str>, _>(i + 1)?;
                }
                cache.insert(k.set(&t), r.try_get(0)?);
            }
            cache.mark_loaded();
            if let Some(id) = cache.get(key.bytes()) {
                ids.push(id);
                continue;
            }
        }
        let marks = vec!["?"; KIND_COUNT].join(", ");
        let sql = format!("INSERT INTO charge_kinds ({}) VALUES ({marks}) RETURNING id", KIND_COLUMNS.join(", "));
        let mut q = sqlx::query_scalar(AssertSqlSafe(sql));
        for t in texts {
            q = q.bind(t);
        }
        let id: i64 = q.fetch_one(&mut *tx).await?;
        cache.insert(key.bytes(), id);
        ids.push(id);
    }
    Ok(ids)
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

// Hooks of the shared load/run SQL (`load_sql.rs`).
const D: Dialect = Dialect::SQLITE;
const CHARGES_OF_L: &str = charges_of_l!();

/// SQLite has one writer at a time: take the write lock when the transaction starts, so two
/// writers queue on the busy timeout instead of failing to upgrade a read lock.
async fn begin_write(pool: &SqlitePool) -> Result<sqlx::Transaction<'static, sqlx::Sqlite>> {
    Ok(pool.begin_with("BEGIN IMMEDIATE").await?)
}

/// Nothing to keep up after a commit on SQLite (its planner reads no table statistics we
/// maintain).
async fn after_commit(_pool: &SqlitePool) {}

/// `BEGIN IMMEDIATE` already serialises every commit.
async fn scope_lock(_tx: &mut sqlx::Transaction<'_, sqlx::Sqlite>, _source_id: i64, _scope: &str) -> Result<()> {
    Ok(())
}

fn ts_param(t: DateTime<Utc>) -> String {
    format_ts(t)
}

fn row_ts(r: &SqliteRow, i: usize) -> Result<DateTime<Utc>> {
    ts(r.try_get(i)?)
}

fn row_opt_ts(r: &SqliteRow, i: usize) -> Result<Option<DateTime<Utc>>> {
    opt_ts(r.try_get(i)?)
}

super::load_sql::load_helpers!(sqlx::Sqlite);
super::load_sql::rollup_inserts!(sqlx::Sqlite);

super::load_sql::ledger_store_impl!(SqliteLedger, {
    async fn account_first_seen_scan(&self) -> Result<Vec<FirstSeen>> {
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
        q.fetch_all(&self.pool).await?.iter().map(|r| total_row(r, n)).collect()
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

    async fn columns_with_values(&self, f: &ChargeFilter) -> Result<BTreeSet<&'static str>> {
        let (w, binds) = filter_sql(f);
        let sql = format!(
            "SELECT {} FROM charges c JOIN loads l ON {j} JOIN sources s ON s.id = l.source_id WHERE {w}",
            count_values_select(),
            j = charges_of_l!()
        );
        let mut q = sqlx::query(AssertSqlSafe(sql));
        for b in binds {
            q = q.bind(b);
        }
        let row = q.fetch_one(&self.pool).await?;
        counted_columns_of(&row)
    }

    async fn max_decimal_scale(&self, f: &ChargeFilter) -> Result<u32> {
        let (w, binds) = filter_sql(f);
        // Amounts are canonical text: the scale is the number of digits after the point.
        let select: Vec<String> = DECIMAL_COLUMNS
            .iter()
            .map(|c| format!("MAX(CASE WHEN instr(c.{c}, '.') > 0 THEN length(c.{c}) - instr(c.{c}, '.') ELSE 0 END)"))
            .collect();
        let sql = format!(
            "SELECT {} FROM charges c JOIN loads l ON {j} JOIN sources s ON s.id = l.source_id WHERE {w}",
            select.join(", "),
            j = charges_of_l!()
        );
        let mut q = sqlx::query(AssertSqlSafe(sql));
        for b in binds {
            q = q.bind(b);
        }
        let row = q.fetch_one(&self.pool).await?;
        max_scale_of(&row)
    }

    fn charges<'a>(&'a self, f: &'a ChargeFilter) -> BoxStream<'a, Result<ChargeRecord>> {
        let (w, binds) = filter_sql(f);
        let cols = charge_select(f.columns, "NULL");
        let sql = if f.unordered {
            format!(
                "SELECT {cols}, s.name FROM charges c JOIN loads l ON {j} JOIN sources s ON s.id = l.source_id \
                 WHERE {w}",
                j = charges_of_l!()
            )
        } else {
            // A file's read names each row's kind by id and fills its columns itself
            // (`KindReader`): SQLite's sort of every row then carries no kind text (with the
            // kinds joined, `export csv` of 1M lines took ~12% longer than before kinds existed;
            // filled here, 100k lines take 3.5% fewer instructions than joined).
            let (cols, kind_id) = match self.bulk {
                Some(_) => (charge_select_without_kinds(f.columns, "NULL"), ", c.kind_id"),
                None => (cols, ""),
            };
            format!(
                "SELECT {cols}, s.name{kind_id} FROM charges c LEFT JOIN {CONTEXT_RANKS} k ON k.id = c.ctx_id \
                 JOIN loads l ON {j} JOIN sources s ON s.id = l.source_id \
                 WHERE {w} ORDER BY {RANKED_EXPORT_ORDER}",
                j = charges_of_l!()
            )
        };
        let focus = f.columns.reads_focus();
        match &self.bulk {
            // A file: the C-API reader (no per-value copies).
            Some((path, _)) if f.unordered => {
                Box::pin(super::sqlite_read::rows(path.clone(), sql, binds, move |r| charge_record(r, focus)))
            }
            Some((path, _)) => {
                let kinds = super::sqlite_read::KindReader::new(path.clone());
                Box::pin(super::sqlite_read::rows(path.clone(), sql, binds, move |r| {
                    kinds.decode(r, r.int(SOURCE_AT + 1)?, |r| charge_record(r, focus))
                }))
            }
            None => Box::pin(async_stream_rows(&self.pool, sql, binds, focus)),
        }
    }

    fn grouped<'a>(
        &'a self,
        f: &'a ChargeFilter,
        by: &'a [GroupColumn],
        sums: Summed,
    ) -> BoxStream<'a, Result<GroupedRow>> {
        let (w, binds) = filter_sql(f);
        self.grouped_read(GroupedTable::Charges, by, sums, w, binds)
    }

    fn grouped_rollups<'a>(
        &'a self,
        kind: RollupKind,
        from: Option<String>,
        to: Option<String>,
        by: &'a [GroupColumn],
        sums: Summed,
    ) -> BoxStream<'a, Result<GroupedRow>> {
        let (w, binds) = rollup_where(kind, from, to);
        self.grouped_read(GroupedTable::Rollups(kind), by, sums, w, binds)
    }

    async fn try_job_lock(&self, _key: &str) -> Result<Option<Box<dyn JobLock>>> {
        // One daemon owns a SQLite ledger (it holds the file lock): in-process exclusion suffices.
        Ok(Some(Box::new(ProcessLock)))
    }
});

fn async_stream_rows(
    pool: &SqlitePool,
    sql: String,
    binds: Vec<String>,
    focus: bool,
) -> impl futures::Stream<Item = Result<ChargeRecord>> + Send + '_ {
    futures::stream::once(async move {
        let stream = sqlx::query(AssertSqlSafe(sql));
        let mut q = stream;
        for b in binds {
            q = q.bind(b);
        }
        q.fetch(pool).map(move |r| r.map_err(LedgerError::from).and_then(|row| charge_record(&row, focus)))
    })
    .flatten()
}

fn not_staging(load: LoadId) -> LedgerError {
    LedgerError::State(format!(
        "load {load} is no longer staging (swept as stale by another process?); nothing of it was committed"
    ))
}
