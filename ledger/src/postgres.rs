//! PostgreSQL backend: money is NUMERIC, bulk staging is `COPY … FROM STDIN`, the commit
//! serialises per (source, scope) with a transaction-scoped advisory lock so replicas can
//! load concurrently.

use std::collections::BTreeSet;
use std::str::FromStr;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use costledger_core::{ChargeCategory, ChargeClass, ChargeLine, FOCUS_TEXT_COUNT, RowError, SpentLines};
use futures::StreamExt;
use futures::stream::BoxStream;
use rust_decimal::Decimal;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions, PgRow};
use sqlx::{AssertSqlSafe, PgPool, Row};
use std::sync::Arc;

use super::contexts::{CONTEXT_COLUMNS, ContextKey, ContextValues, Contexts, MAX_CACHED, context_texts, pg_ts_key};
use super::kinds::{KIND_COLUMNS, KIND_COUNT, KindKey, Kinds, kind_texts};
use super::load_sql::Dialect;
use super::pg_binary::CopyBuf;
use super::query_sql::{GroupDialect, GroupedTable, Summed, grouped_row, grouped_sql, rollup_where};
use super::*;

pub struct PgLedger {
    pool: PgPool,
    opts: PgConnectOptions,
    /// COPY payload buffers of staged batches, kept for the next batches: a fresh multi-MB
    /// buffer per batch meant new pages from the kernel (zeroed) and a regrowth copy each time.
    /// Holds at most what was in flight at once.
    copy_bufs: Arc<std::sync::Mutex<Vec<Vec<u8>>>>,
    /// Context ids by value ([`crate::contexts`]), shared by the batches being staged.
    contexts: Arc<tokio::sync::Mutex<Contexts>>,
    /// Kind ids by value ([`crate::kinds`]), shared by the batches being staged.
    kinds: Arc<tokio::sync::Mutex<Kinds>>,
    /// The COPY lanes of each load being staged by this process ([`Lanes`]).
    staging: Arc<std::sync::Mutex<rustc_hash::FxHashMap<LoadId, Arc<Lanes>>>>,
}

/// A session advisory lock on a connection of its own: closing the connection (release, drop,
/// a crashed process) releases it on the server.
struct PgJobLock {
    conn: Option<sqlx::PgConnection>,
    key: String,
}

#[async_trait]
impl JobLock for PgJobLock {
    async fn release(mut self: Box<Self>) -> Result<()> {
        if let Some(mut c) = self.conn.take() {
            sqlx::query("SELECT pg_advisory_unlock(hashtext($1))").bind(&self.key).execute(&mut c).await?;
            use sqlx::Connection;
            c.close().await?;
        }
        Ok(())
    }
}

const LOAD_SELECT: &str = "SELECT l.id, s.name, l.scope, l.billing_period, l.delivery_key, l.description, l.state, \
     l.owner, l.started_at, l.heartbeat_at, l.finished_at, l.row_count, l.quarantined_count, l.rounded_count, \
     l.totals, l.quarantined_totals, l.superseded_by, l.error, l.attempts FROM loads l JOIN sources s ON s.id = l.source_id";

fn load_row(r: &PgRow) -> Result<LoadRow> {
    Ok(LoadRow {
        id: r.try_get(0)?,
        source: r.try_get(1)?,
        scope: r.try_get(2)?,
        billing_period: r.try_get(3)?,
        delivery_key: r.try_get(4)?,
        description: r.try_get(5)?,
        state: LoadState::parse(r.try_get::<&str, _>(6)?)?,
        owner: r.try_get(7)?,
        started_at: r.try_get(8)?,
        heartbeat_at: r.try_get(9)?,
        finished_at: r.try_get(10)?,
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

enum Bind {
    I(i64),
    S(String),
    T(DateTime<Utc>),
}

fn filter_sql(f: &ChargeFilter) -> (String, Vec<Bind>) {
    let mut w = Vec::new();
    let mut binds = Vec::new();
    match f.load {
        Some(id) => {
            binds.push(Bind::I(id));
            w.push(format!("l.id = ${}", binds.len()));
        }
        None => w.push("l.state = 'current'".to_string()),
    }
    if f.primary_only() {
        w.push("s.role = 'primary'".to_string());
    }
    if let Some(s) = &f.source {
        binds.push(Bind::S(s.clone()));
        w.push(format!("s.name = ${}", binds.len()));
    }
    if let Some(t) = f.from {
        binds.push(Bind::T(t));
        w.push(format!("c.charge_period_start >= ${}", binds.len()));
    }
    if let Some(t) = f.to {
        binds.push(Bind::T(t));
        w.push(format!("c.charge_period_start < ${}", binds.len()));
    }
    if let Some(p) = f.period {
        binds.push(Bind::T(p.start()));
        binds.push(Bind::T(p.end()));
        w.push(format!("c.billing_period_start >= ${} AND c.billing_period_start < ${}", binds.len() - 1, binds.len()));
    }
    (w.join(" AND "), binds)
}

fn bind_all<'q>(
    mut q: sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments>,
    binds: Vec<Bind>,
) -> sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments> {
    for b in binds {
        q = match b {
            Bind::I(i) => q.bind(i),
            Bind::S(s) => q.bind(s),
            Bind::T(t) => q.bind(t),
        };
    }
    q
}

fn dim_sql(d: Dim) -> &'static str {
    match d {
        Dim::BillingPeriod => "to_char(c.billing_period_start AT TIME ZONE 'UTC', 'YYYY-MM')",
        Dim::Load => "l.id::text",
        Dim::ChargeDay => "to_char(c.charge_period_start AT TIME ZONE 'UTC', 'YYYY-MM-DD')",
        other => dim_column(other),
    }
}

/// How PostgreSQL spells a grouped read's sums, timestamps and join.
const GROUPED: GroupDialect = GroupDialect {
    sum: ("SUM(", ")::text"),
    text_sum: ("SUM(", "::numeric)::text"),
    ts_text: ("to_char(", " AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"')"),
    month_text: ("to_char(", " AT TIME ZONE 'UTC', 'YYYY-MM')"),
    charges_of_l: "l.id = c.load_id",
};

impl PgLedger {
    fn grouped_read<'a>(
        &'a self,
        table: GroupedTable,
        by: &[GroupColumn],
        sums: Summed,
        w: String,
        binds: Vec<Bind>,
    ) -> BoxStream<'a, Result<GroupedRow>> {
        let sql = match grouped_sql(&GROUPED, table, by, sums, &w) {
            Ok(sql) => sql,
            Err(e) => return Box::pin(futures::stream::once(async move { Err(e) })),
        };
        let n = by.len();
        if matches!(table, GroupedTable::Rollups(_)) {
            return hashed_rollup_read(self.pool.clone(), sql, binds, n);
        }
        let pool = &self.pool;
        Box::pin(
            futures::stream::once(async move {
                bind_all(sqlx::query(AssertSqlSafe(sql)), binds)
                    .fetch(pool)
                    .map(move |r| r.map_err(LedgerError::from).and_then(|row| grouped_row(&row, n)))
            })
            .flatten(),
        )
    }
}

/// Rows a hashed rollup read keeps ready ahead of its reader.
const HASHED_READ_AHEAD: usize = 256;

/// A grouped read of the rollups, hashed rather than sorted: the groups (a few thousand at
/// most, however many rollup rows) fit in memory, but the planner chose a sort of every rollup
/// row — on disk past `work_mem` — both before ANALYZE (375 ms for 315,870 rows) and after it
/// (245 ms), against 150 ms hashed. `enable_sort` is off for this
/// statement only (`SET LOCAL` in its own transaction); the rows come through a bounded channel
/// from the task that owns the transaction.
fn hashed_rollup_read(pool: PgPool, sql: String, binds: Vec<Bind>, n: usize) -> BoxStream<'static, Result<GroupedRow>> {
    let (send, recv) = tokio::sync::mpsc::channel::<Result<GroupedRow>>(HASHED_READ_AHEAD);
    tokio::spawn(async move {
        let read = async {
            let mut tx = pool.begin().await?;
            sqlx::query("SET LOCAL enable_sort = off").execute(&mut *tx).await?;
            {
                let mut rows = bind_all(sqlx::query(AssertSqlSafe(sql)), binds).fetch(&mut *tx);
                while let Some(r) = rows.next().await {
                    let row = r.map_err(LedgerError::from).and_then(|row| grouped_row(&row, n));
                    if send.send(row).await.is_err() {
                        // The reader is gone: stop reading (the transaction rolls back).
                        return Ok(());
                    }
                }
            }
            tx.commit().await?;
            Ok::<(), LedgerError>(())
        };
        if let Err(e) = read.await {
            let _ = send.send(Err(e)).await;
        }
    });
    Box::pin(futures::stream::unfold(recv, |mut recv| async move { recv.recv().await.map(|r| (r, recv)) }))
}

impl ChargeRow for PgRow {
    fn text(&self, i: usize) -> Result<Option<&str>> {
        Ok(self.try_get::<Option<&str>, _>(i)?)
    }
    fn int(&self, i: usize) -> Result<i64> {
        Ok(self.try_get::<i64, _>(i)?)
    }
}

/// A NUMERIC read by [`super::pg_binary::read_numeric`] (sqlx's conversion for what it
/// cannot read): the same `Decimal`, a tenth of an export's client time less.
struct FastNumeric(Decimal);

impl sqlx::Type<sqlx::Postgres> for FastNumeric {
    fn type_info() -> sqlx::postgres::PgTypeInfo {
        <Decimal as sqlx::Type<sqlx::Postgres>>::type_info()
    }
    fn compatible(ty: &sqlx::postgres::PgTypeInfo) -> bool {
        <Decimal as sqlx::Type<sqlx::Postgres>>::compatible(ty)
    }
}

impl<'r> sqlx::Decode<'r, sqlx::Postgres> for FastNumeric {
    fn decode(value: sqlx::postgres::PgValueRef<'r>) -> std::result::Result<Self, sqlx::error::BoxDynError> {
        if value.format() == sqlx::postgres::PgValueFormat::Binary
            && let Some(d) = super::pg_binary::read_numeric(value.as_bytes()?)
        {
            return Ok(FastNumeric(d));
        }
        Ok(FastNumeric(<Decimal as sqlx::Decode<'r, sqlx::Postgres>>::decode(value)?))
    }
}

/// Where each of [`CONTEXT_COLUMNS`] is in a read of the `charges` view (its place in
/// [`CHARGE_COLUMNS`]; checked by a test).
const VIEW_CONTEXT_AT: [usize; 13] = [0, 1, 2, 3, 4, 5, 11, 12, 13, 14, 15, 24, 30];
/// Where each of [`CONTEXT_COLUMNS`] is in `SELECT id, <CONTEXT_COLUMNS> FROM charge_contexts`.
const TABLE_CONTEXT_AT: [usize; 13] = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13];
/// Where an ordered charge read has the row's `ctx_id` (after the source name).
const CTX_AT: usize = SOURCE_AT + 1;

/// A context's values from a row holding [`CONTEXT_COLUMNS`] at `at`.
fn context_values(r: &PgRow, at: [usize; 13]) -> Result<ContextValues> {
    let s = |i: usize| -> Result<Option<String>> { Ok(r.try_get_unchecked::<Option<String>, _>(at[i])?) };
    Ok(ContextValues {
        billing_account_id: r.try_get(at[0])?,
        billing_account_name: s(1)?,
        sub_account_id: s(2)?,
        sub_account_name: s(3)?,
        billing_period_start: r.try_get(at[4])?,
        billing_period_end: r.try_get(at[5])?,
        service_name: s(6)?,
        service_category: s(7)?,
        provider_name: s(8)?,
        publisher_name: s(9)?,
        invoice_issuer_name: s(10)?,
        billing_currency: r.try_get(at[11])?,
        invoice_id: s(12)?,
    })
}

/// The contexts an ordered charge read names by id ([`crate::contexts`]), read on a
/// connection of their own (the read's holds its result stream; a second connection from the
/// pool could wait on the pool forever when every pooled connection is such a read). A miss
/// loads every context of that id's billing period — the read is ordered by billing period
/// first, so each period is loaded once; at most [`MAX_CACHED`] contexts are kept. The lookup
/// runs after the read's statement began, so it sees every context the read's rows name
/// (contexts are committed before the rows naming them, and never deleted).
struct ContextReader {
    opts: PgConnectOptions,
    conn: Option<sqlx::PgConnection>,
    by_id: rustc_hash::FxHashMap<i64, ContextValues>,
}

impl ContextReader {
    fn new(opts: PgConnectOptions) -> Self {
        Self { opts, conn: None, by_id: Default::default() }
    }

    async fn get(&mut self, id: i64) -> Result<&ContextValues> {
        if !self.by_id.contains_key(&id) {
            self.load_period_of(id).await?;
        }
        self.by_id
            .get(&id)
            .ok_or_else(|| LedgerError::Corrupt(format!("a charge row names context {id}, which does not exist")))
    }

    async fn load_period_of(&mut self, id: i64) -> Result<()> {
        use sqlx::Connection;
        let conn = match &mut self.conn {
            Some(c) => c,
            None => self.conn.insert(sqlx::PgConnection::connect_with(&self.opts).await?),
        };
        if self.by_id.len() >= MAX_CACHED {
            self.by_id.clear();
        }
        let sql = format!(
            "SELECT id, {} FROM charge_contexts WHERE billing_period_start = \
             (SELECT billing_period_start FROM charge_contexts WHERE id = $1)",
            CONTEXT_COLUMNS.join(", ")
        );
        for r in sqlx::query(AssertSqlSafe(sql)).bind(id).fetch_all(conn).await? {
            self.by_id.insert(r.try_get(0)?, context_values(&r, TABLE_CONTEXT_AT)?);
        }
        Ok(())
    }

    async fn close(&mut self) {
        if let Some(c) = self.conn.take() {
            let _ = sqlx::Connection::close(c).await;
        }
    }
}

/// One charge row; `with_focus` as for SQLite's (`ChargeColumns::reads_focus`). `ctx`: the
/// row's context when the read named it by id (its columns then read NULL), else the context
/// columns are read from the row.
fn charge_record(r: &PgRow, with_focus: bool, ctx: Option<&ContextValues>) -> Result<ChargeRecord> {
    // Unchecked: the statement is ours (`charge_select`: TEXT and NUMERIC columns, or NULL), so
    // sqlx's per-value type-compatibility check — a tenth of an export's client time — can go.
    let s = |i: usize| -> Result<Option<String>> { Ok(r.try_get_unchecked::<Option<String>, _>(i)?) };
    let d =
        |i: usize| -> Result<Option<Decimal>> { Ok(r.try_get_unchecked::<Option<FastNumeric>, _>(i)?.map(|n| n.0)) };
    let c = match ctx {
        Some(c) => c.clone(),
        None => context_values(r, VIEW_CONTEXT_AT)?,
    };
    let line = ChargeLine {
        billing_account_id: c.billing_account_id,
        billing_account_name: c.billing_account_name,
        sub_account_id: c.sub_account_id,
        sub_account_name: c.sub_account_name,
        billing_period_start: c.billing_period_start,
        billing_period_end: c.billing_period_end,
        charge_period_start: r.try_get(6)?,
        charge_period_end: r.try_get(7)?,
        charge_category: ChargeCategory::from_str(r.try_get(8)?).map_err(LedgerError::Corrupt)?,
        charge_class: s(9)?.map(|c| ChargeClass::from_str(&c)).transpose().map_err(LedgerError::Corrupt)?,
        charge_description: s(10)?,
        service_name: c.service_name,
        service_category: c.service_category,
        provider_name: c.provider_name,
        publisher_name: c.publisher_name,
        invoice_issuer_name: c.invoice_issuer_name,
        region_id: s(16)?,
        resource_id: s(17)?,
        resource_name: s(18)?,
        sku_id: s(19)?,
        billed_cost: r.try_get::<FastNumeric, _>(20)?.0,
        effective_cost: d(21)?,
        list_cost: d(22)?,
        contracted_cost: d(23)?,
        billing_currency: c.billing_currency,
        pricing_quantity: d(25)?,
        pricing_unit: s(26)?,
        consumed_quantity: d(27)?,
        consumed_unit: s(28)?,
        commitment_discount_id: s(29)?,
        invoice_id: c.invoice_id,
        tags: parse_tags(s(31)?.as_deref())?,
        focus: match with_focus {
            true => focus_columns(
                std::array::from_fn(|i| s(FOCUS_AT + i)),
                std::array::from_fn(|i| d(FOCUS_AT + FOCUS_TEXT_COUNT + i)),
            )?,
            false => None,
        },
        x_extra: parse_tags(s(32)?.as_deref())?,
        source_ref: s(33)?,
    };
    Ok(ChargeRecord { load_id: r.try_get(34)?, row_no: r.try_get(35)?, source: r.try_get(SOURCE_AT)?, line })
}

impl PgLedger {
    /// Connect, failing within the URL's `connect_timeout` (default 10 s) with the real cause
    /// ("connection refused", a rejected login) rather than a pool timeout.
    pub async fn connect(url: &super::DatabaseUrl) -> Result<Self> {
        let (driver_url, timeout) = url.for_driver().map_err(LedgerError::Config)?;
        let opts = PgConnectOptions::from_str(&driver_url)?.application_name("costledger");
        let target = match opts.get_socket() {
            Some(sock) => sock.display().to_string(),
            None => format!("{}:{}", opts.get_host(), opts.get_port()),
        };
        let connect_error = |message: String| LedgerError::Connect { target: target.clone(), message };
        let first = tokio::time::timeout(timeout, <sqlx::PgConnection as sqlx::Connection>::connect_with(&opts))
            .await
            .map_err(|_| {
                connect_error(format!(
                    "no answer within {} s (connect_timeout in the URL sets the limit); is the host reachable?",
                    timeout.as_secs()
                ))
            })?
            .map_err(|e| connect_error(describe_connect_error(&e)))?;
        let _ = sqlx::Connection::close(first).await;
        let pool = PgPoolOptions::new()
            .max_connections(4)
            .acquire_timeout(timeout.max(std::time::Duration::from_secs(30)))
            .connect_with(opts.clone())
            .await?;
        Ok(Self {
            pool,
            opts,
            copy_bufs: Default::default(),
            contexts: Default::default(),
            kinds: Default::default(),
            staging: Default::default(),
        })
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// A load this process was staging ended without its commit (failed): its COPY lanes, if
    /// any, are dropped — each aborts its COPY and rolls its rows back.
    fn end_staging(&self, load: LoadId) {
        let lanes = self.staging.lock().ok().and_then(|mut s| s.remove(&load));
        drop(lanes);
    }

    /// Every line of a load is staged: its COPY lanes, if any, end and commit ([`Lanes::finish`]).
    async fn finish_staging(&self, load: LoadId) -> Result<()> {
        let lanes = self.staging.lock().ok().and_then(|mut s| s.remove(&load));
        match lanes {
            Some(lanes) => lanes.finish().await,
            None => Ok(()),
        }
    }
}

/// The cause of a failed first connection, in words that say what to do.
fn describe_connect_error(e: &sqlx::Error) -> String {
    match e {
        sqlx::Error::Io(io) if io.kind() == std::io::ErrorKind::ConnectionRefused => {
            "connection refused: is PostgreSQL running and listening there? Check the host and port of the database URL"
                .into()
        }
        sqlx::Error::Io(io) => format!("{io}: check the host and port of the database URL"),
        sqlx::Error::Tls(t) => format!("TLS failed ({t}): check sslmode and the certificates in the database URL"),
        sqlx::Error::Database(db) => {
            format!("the server refused: {} (check the user, password and database name)", db.message())
        }
        other => other.to_string(),
    }
}

mod rec {
    use super::*;
    super::super::reconcile_sql::reconcile_sql!(
        sqlx::Postgres,
        PgPool,
        super::super::reconcile_sql::dollar,
        "c.load_id = l.id"
    );
}

super::reconcile_sql::reconcile_impl!(PgLedger);

// Hooks of the shared load/run SQL (`load_sql.rs`).
const D: Dialect = Dialect::POSTGRES;
const CHARGES_OF_L: &str = "c.load_id = l.id";
/// Each charge context's rank in the export order (`ORDER_COLUMNS` in `lib.rs`): `r1` over billing
/// period, provider, billing account and sub account, `r2` over the service (equal values, equal
/// rank; text in byte order, NULL first). The export sorts the charge rows by these integers
/// instead of their text — the sort then carries and compares no context text (the planner joins
/// the contexts back after sorting, in parallel workers): `export csv` of 1M lines ~40% faster.
/// Computed in the export's own statement, so its snapshot is the rows'.
pub(crate) const CONTEXT_RANKS: &str = "unnest(\
     (SELECT array_agg(id ORDER BY id) FROM charge_contexts), \
     (SELECT array_agg(r ORDER BY id) FROM (SELECT id, rank() OVER (ORDER BY billing_period_start, \
        provider_name COLLATE \"C\" NULLS FIRST, billing_account_id COLLATE \"C\", \
        sub_account_id COLLATE \"C\" NULLS FIRST) AS r FROM charge_contexts) z), \
     (SELECT array_agg(r ORDER BY id) FROM (SELECT id, rank() OVER (ORDER BY service_name COLLATE \"C\" NULLS FIRST) AS r \
        FROM charge_contexts) z))";

const DELETE_LOAD_CHARGES: &str = "DELETE FROM charge_rows WHERE load_id = ?1";

/// The context id of each line ([`crate::contexts`]): cached, else found among the stored
/// contexts of its billing period (read once), else stored — every context a batch misses in
/// one statement. Stored contexts commit at once (their own statement): a context is never
/// deleted, so a batch that fails after it leaves an unreferenced row, never a dangling id.
async fn context_ids(pool: &PgPool, contexts: &tokio::sync::Mutex<Contexts>, lines: &[ChargeLine]) -> Result<Vec<i64>> {
    let mut cache = contexts.lock().await;
    let mut key = ContextKey::default();
    let line_key = |key: &mut ContextKey, l: &ChargeLine| {
        let (start, end) = (pg_ts_key(l.billing_period_start), pg_ts_key(l.billing_period_end));
        key.set(&start, &end, &context_texts(l));
    };
    let (mut ids, misses) = cached_or_missing(lines, |l| {
        line_key(&mut key, l);
        cache.get(key.bytes())
    });
    if misses.is_empty() {
        return Ok(ids);
    }
    // This batch's contexts by value, beside the cache (which may start over while filled).
    let mut found: rustc_hash::FxHashMap<Box<[u8]>, i64> = Default::default();
    let mut k = ContextKey::default();
    for &n in &misses {
        let l = &lines[n];
        line_key(&mut key, l);
        if cache.period_loaded(key.period()) {
            continue;
        }
        let sql =
            format!("SELECT id, {} FROM charge_contexts WHERE billing_period_start = $1", CONTEXT_COLUMNS.join(", "));
        for r in &sqlx::query(AssertSqlSafe(sql)).bind(l.billing_period_start).fetch_all(pool).await? {
            let id: i64 = r.try_get(0)?;
            context_row_key(&mut k, r)?;
            cache.insert(k.bytes(), id);
            found.insert(k.bytes().into(), id);
        }
        cache.mark_period_loaded(key.period());
    }
    // The contexts still missing, each once.
    let mut new: Vec<usize> = Vec::new();
    let mut seen: rustc_hash::FxHashSet<Vec<u8>> = Default::default();
    for &n in &misses {
        line_key(&mut key, &lines[n]);
        if !found.contains_key(key.bytes()) && seen.insert(key.bytes().to_vec()) {
            new.push(n);
        }
    }
    if !new.is_empty() {
        let cols = CONTEXT_COLUMNS.join(", ");
        let arrays: Vec<String> = CONTEXT_COLUMNS
            .iter()
            .enumerate()
            .map(|(i, c)| {
                format!("${}::{}[]", i + 1, if c.starts_with("billing_period_") { "timestamptz" } else { "text" })
            })
            .collect();
        let sql = format!(
            "INSERT INTO charge_contexts ({cols}) SELECT * FROM unnest({}) RETURNING id, {cols}",
            arrays.join(", ")
        );
        let texts: Vec<[Option<&str>; 11]> = new.iter().map(|&n| context_texts(&lines[n])).collect();
        let mut q = sqlx::query(AssertSqlSafe(sql));
        let mut t = 0;
        for c in CONTEXT_COLUMNS {
            q = match c {
                "billing_period_start" => {
                    q.bind(new.iter().map(|&n| lines[n].billing_period_start).collect::<Vec<_>>())
                }
                "billing_period_end" => q.bind(new.iter().map(|&n| lines[n].billing_period_end).collect::<Vec<_>>()),
                _ => {
                    t += 1;
                    q.bind(texts.iter().map(|v| v[t - 1]).collect::<Vec<Option<&str>>>())
                }
            };
        }
        // Each stored context is matched back by its values (the order of RETURNING is not
        // promised).
        for r in &q.fetch_all(pool).await? {
            let id: i64 = r.try_get(0)?;
            context_row_key(&mut k, r)?;
            cache.insert(k.bytes(), id);
            found.insert(k.bytes().into(), id);
        }
    }
    for n in misses {
        line_key(&mut key, &lines[n]);
        ids[n] = *found.get(key.bytes()).ok_or_else(|| {
            LedgerError::State("a charge context stored for this batch was not returned by the server".into())
        })?;
    }
    Ok(ids)
}

/// Each line's id as `cached` finds it (0 where it does not), and the lines it does not find.
fn cached_or_missing(
    lines: &[ChargeLine],
    mut cached: impl FnMut(&ChargeLine) -> Option<i64>,
) -> (Vec<i64>, Vec<usize>) {
    let mut ids = Vec::with_capacity(lines.len());
    let mut misses = Vec::new();
    for (n, l) in lines.iter().enumerate() {
        match cached(l) {
            Some(id) => ids.push(id),
            None => {
                ids.push(0);
                misses.push(n);
            }
        }
    }
    (ids, misses)
}

/// The key of a row `id, <CONTEXT_COLUMNS>` (the two timestamps at 5 and 6).
fn context_row_key(k: &mut ContextKey, r: &PgRow) -> Result<()> {
    let v = |i: usize| r.try_get::<Option<&str>, _>(i);
    let texts = [v(1)?, v(2)?, v(3)?, v(4)?, v(7)?, v(8)?, v(9)?, v(10)?, v(11)?, v(12)?, v(13)?];
    k.set(&pg_ts_key(r.try_get(5)?), &pg_ts_key(r.try_get(6)?), &texts);
    Ok(())
}

/// The kind id of each line ([`crate::kinds`]): cached, else found among the stored kinds
/// (read once), else stored — every kind a batch misses in one statement. Stored kinds commit
/// at once (their own statement): a kind is never deleted, so a batch that fails after it
/// leaves an unreferenced row, never a dangling id.
async fn kind_ids(pool: &PgPool, kinds: &tokio::sync::Mutex<Kinds>, lines: &[ChargeLine]) -> Result<Vec<i64>> {
    let mut cache = kinds.lock().await;
    let mut key = KindKey::default();
    let (mut ids, misses) = cached_or_missing(lines, |l| cache.get(key.set(&kind_texts(l))));
    if misses.is_empty() {
        return Ok(ids);
    }
    // This batch's kinds by value, beside the cache (which may start over while filled).
    let mut found: rustc_hash::FxHashMap<Box<[u8]>, i64> = Default::default();
    if !cache.loaded() {
        let rows = sqlx::query(AssertSqlSafe(super::kinds::select_stored_sql())).fetch_all(pool).await?;
        for r in &rows {
            let texts: [Option<&str>; KIND_COUNT] = kind_row_texts(r)?;
            let k = key.set(&texts);
            cache.insert(k, r.try_get(0)?);
            found.insert(k.into(), r.try_get(0)?);
        }
        cache.mark_loaded();
    }
    // The kinds still missing, each once.
    let mut new: Vec<[Option<&str>; KIND_COUNT]> = Vec::new();
    let mut seen: rustc_hash::FxHashSet<Vec<u8>> = Default::default();
    for &n in &misses {
        let texts = kind_texts(&lines[n]);
        let k = key.set(&texts);
        if !found.contains_key(k) && seen.insert(k.to_vec()) {
            new.push(texts);
        }
    }
    if !new.is_empty() {
        let cols = KIND_COLUMNS.join(", ");
        let arrays: Vec<String> = (1..=KIND_COUNT).map(|i| format!("${i}::text[]")).collect();
        let sql = format!(
            "INSERT INTO charge_kinds ({cols}) SELECT * FROM unnest({}) RETURNING id, {cols}",
            arrays.join(", ")
        );
        let mut q = sqlx::query(AssertSqlSafe(sql));
        for c in 0..KIND_COUNT {
            q = q.bind(new.iter().map(|t| t[c]).collect::<Vec<Option<&str>>>());
        }
        // Each stored kind is matched back by its values (the order of RETURNING is not promised).
        for r in &q.fetch_all(pool).await? {
            let texts = kind_row_texts(r)?;
            let k = key.set(&texts);
            cache.insert(k, r.try_get(0)?);
            found.insert(k.into(), r.try_get(0)?);
        }
    }
    for n in misses {
        let k = key.set(&kind_texts(&lines[n]));
        ids[n] = *found.get(k).ok_or_else(|| {
            LedgerError::State("a charge kind stored for this batch was not returned by the server".into())
        })?;
    }
    Ok(ids)
}

/// The kind columns of a row `id, <KIND_COLUMNS>`.
fn kind_row_texts(r: &PgRow) -> Result<[Option<&str>; KIND_COUNT]> {
    let mut t: [Option<&str>; KIND_COUNT] = [None; KIND_COUNT];
    for (i, slot) in t.iter_mut().enumerate() {
        *slot = r.try_get::<Option<&str>, _>(i + 1)?;
    }
    Ok(t)
}

/// What a staged batch needs of the ledger, owned, to be written on a task of its own.
struct BatchWriter {
    pool: PgPool,
    copy_bufs: Arc<std::sync::Mutex<Vec<Vec<u8>>>>,
    contexts: Arc<tokio::sync::Mutex<Contexts>>,
    kinds: Arc<tokio::sync::Mutex<Kinds>>,
    lanes: Arc<Lanes>,
}

impl BatchWriter {
    /// Resolve the lines' contexts, encode them as binary COPY rows, hand the lines back to be
    /// freed where they were made, and send the rows down one of the load's COPY lanes.
    async fn write(
        self,
        load: LoadId,
        first_row: u64,
        lines: Vec<ChargeLine>,
        spent: Option<SpentLines>,
    ) -> Result<()> {
        let ctx = context_ids(&self.pool, &self.contexts, &lines).await?;
        let kind = kind_ids(&self.pool, &self.kinds, &lines).await?;
        let spare = self.copy_bufs.lock().ok().and_then(|mut b| b.pop());
        let mut buf = CopyBuf::rows_reusing(spare, lines.len());
        for (n, ((l, ctx), kind)) in lines.iter().zip(ctx).zip(kind).enumerate() {
            buf.line(l, load, first_row + n as u64, ctx, kind);
        }
        match spent {
            Some(spent) => spent.give(lines),
            None => drop(lines),
        }
        let buf = self.lanes.send(buf.into_rows()).await?;
        if let Ok(mut spare) = self.copy_bufs.lock() {
            spare.push(buf);
        }
        self.lanes.heartbeat_now_and_then(&self.pool).await
    }
}

/// COPY lanes per load being staged: each batch used to be a COPY statement and transaction
/// of its own (250 for 1M lines), and the server's work per statement — 4 ms of CPU each, in
/// setting up and ending the COPY and its transaction — was a sixth of its share of the import.
/// Now a load streams its rows through at most this many COPY statements, each on a connection
/// of its own that stays in one COPY (and one transaction) until every line is staged.
const COPY_LANES: usize = 3;

/// Heartbeats of a staging load while its rows stream (they no longer come with each batch's
/// commit): far within the sweep's 15 minutes.
const HEARTBEAT_EVERY: std::time::Duration = std::time::Duration::from_secs(20);

/// A load's COPY lanes (see [`COPY_LANES`]). A lane is a task holding a connection of its own
/// (outside the pool, so a load's lanes never starve the pool the batches resolve their contexts
/// and write their rollup chunks with), in one transaction, in one `COPY charge_rows … FROM
/// STDIN (FORMAT binary)`. A batch takes an idle lane, sends its rows and gives the lane back.
/// [`finish`](Self::finish) ends each COPY, checks the load is still staging (its heartbeat) and
/// commits; dropping the lanes instead (a failed load, a dropped import) aborts every COPY and
/// rolls its rows back: nothing of the lanes is ever visible unless every line was sent.
struct Lanes {
    load: LoadId,
    opts: PgConnectOptions,
    /// Lanes not in use by a batch, longest idle first: a batch takes the lane whose server
    /// has had the longest to work through what it was sent (a batch's rows are in the socket,
    /// not yet inserted, when its lane comes back; the most recent lane first left the other
    /// servers idle).
    idle: std::sync::Mutex<std::collections::VecDeque<Lane>>,
    /// Lanes opened so far (at most [`COPY_LANES`]).
    opened: std::sync::atomic::AtomicUsize,
    /// A lane went back to `idle`.
    freed: tokio::sync::Notify,
    /// When this process last heartbeat the load (none yet: the first batch does).
    last_heartbeat: std::sync::Mutex<Option<std::time::Instant>>,
}

struct Lane {
    to: tokio::sync::mpsc::Sender<LaneMsg>,
}

enum LaneMsg {
    /// Rows to send; the buffer comes back (to be reused) with the outcome.
    Rows(Vec<u8>, tokio::sync::oneshot::Sender<(Vec<u8>, Result<()>)>),
    /// End the COPY, heartbeat and commit.
    Finish(tokio::sync::oneshot::Sender<Result<()>>),
}

fn lane_stopped(load: LoadId) -> LedgerError {
    LedgerError::State(format!(
        "a COPY of staging load {load} stopped before its rows were all sent; nothing of the load was committed: \
         run the import again"
    ))
}

impl Lanes {
    fn new(load: LoadId, opts: PgConnectOptions) -> Self {
        Lanes {
            load,
            opts,
            idle: Default::default(),
            opened: Default::default(),
            freed: Default::default(),
            last_heartbeat: std::sync::Mutex::new(None),
        }
    }

    /// An idle lane, a new one while fewer than [`COPY_LANES`] are open, else the next freed.
    async fn take(&self) -> Result<Lane> {
        use std::sync::atomic::Ordering;
        loop {
            let freed = self.freed.notified();
            if let Some(l) = self.idle.lock().ok().and_then(|mut i| i.pop_front()) {
                return Ok(l);
            }
            if self.opened.fetch_add(1, Ordering::SeqCst) < COPY_LANES {
                let opened = self.open().await;
                if opened.is_err() {
                    self.opened.fetch_sub(1, Ordering::SeqCst);
                    self.freed.notify_one();
                }
                return opened;
            }
            self.opened.fetch_sub(1, Ordering::SeqCst);
            freed.await;
        }
    }

    fn give_back(&self, lane: Lane) {
        if let Ok(mut i) = self.idle.lock() {
            i.push_back(lane);
        }
        self.freed.notify_one();
    }

    /// Open a lane: its task connects, begins, starts the COPY and says when it is ready.
    async fn open(&self) -> Result<Lane> {
        let (to, from) = tokio::sync::mpsc::channel(1);
        let (ready, is_ready) = tokio::sync::oneshot::channel();
        tokio::spawn(run_lane(self.opts.clone(), self.load, from, ready));
        is_ready.await.map_err(|_| lane_stopped(self.load))??;
        Ok(Lane { to })
    }

    /// Send `rows` down a lane; the buffer comes back to be reused.
    async fn send(&self, rows: Vec<u8>) -> Result<Vec<u8>> {
        let lane = self.take().await?;
        let (done, outcome) = tokio::sync::oneshot::channel();
        if lane.to.send(LaneMsg::Rows(rows, done)).await.is_err() {
            self.opened.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
            self.freed.notify_one();
            return Err(lane_stopped(self.load));
        }
        let stopped = |e: LedgerError| {
            // This lane is gone: another may be opened in its place (a batch waiting for a
            // lane then gets one, or the error of opening it).
            self.opened.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
            self.freed.notify_one();
            e
        };
        let (rows, r) = outcome.await.map_err(|_| stopped(lane_stopped(self.load)))?;
        r.map_err(stopped)?;
        self.give_back(lane);
        Ok(rows)
    }

    /// The load's heartbeat, on the pool, when the last one is [`HEARTBEAT_EVERY`] old: the
    /// load stays live for the stale sweep, and a load failed meanwhile (swept, or failed by
    /// another process) stops its import here rather than at its end.
    async fn heartbeat_now_and_then(&self, pool: &PgPool) -> Result<()> {
        {
            let Ok(mut last) = self.last_heartbeat.lock() else { return Ok(()) };
            if last.is_some_and(|t| t.elapsed() < HEARTBEAT_EVERY) {
                return Ok(());
            }
            *last = Some(std::time::Instant::now());
        }
        let mut tx = pool.begin().await?;
        heartbeat(&mut tx, self.load).await?;
        tx.commit().await?;
        Ok(())
    }

    /// End every lane's COPY and commit it (after its heartbeat: a load no longer staging
    /// commits nothing). Every batch has been sent: all lanes are idle.
    async fn finish(&self) -> Result<()> {
        let lanes = self.idle.lock().map(|mut i| std::mem::take(&mut *i)).unwrap_or_default();
        if lanes.len() != self.opened.load(std::sync::atomic::Ordering::SeqCst) {
            // A batch still holds a lane: its rows would be left out of the commit.
            return Err(LedgerError::State(format!(
                "load {} was asked to commit while a batch of its lines was still being sent; \
                 nothing of it was committed: commit a load only after every staged batch returned",
                self.load
            )));
        }
        let mut first = None;
        for lane in lanes {
            let (done, outcome) = tokio::sync::oneshot::channel();
            let r = match lane.to.send(LaneMsg::Finish(done)).await {
                Ok(()) => outcome.await.unwrap_or_else(|_| Err(lane_stopped(self.load))),
                Err(_) => Err(lane_stopped(self.load)),
            };
            if let (Err(e), None) = (r, &first) {
                first = Some(e);
            }
        }
        first.map_or(Ok(()), Err)
    }
}

/// A lane left without a batch this long (an import dropped without failing its load) aborts
/// its COPY and closes its connection rather than hold a transaction open until the stale
/// sweep. A batch after that fails its load with [`lane_stopped`]'s message.
const LANE_IDLE: std::time::Duration = std::time::Duration::from_secs(300);

/// A lane's task (see [`Lanes`]): one connection, one transaction, one COPY, until told to
/// finish, or aborted when its sender is dropped.
async fn run_lane(
    opts: PgConnectOptions,
    load: LoadId,
    mut from: tokio::sync::mpsc::Receiver<LaneMsg>,
    ready: tokio::sync::oneshot::Sender<Result<()>>,
) {
    use sqlx::Connection;
    static STMT: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    let stmt =
        STMT.get_or_init(|| format!("COPY charge_rows ({}) FROM STDIN (FORMAT binary)", row_columns().join(", ")));
    let mut conn = match sqlx::PgConnection::connect_with(&opts).await {
        Ok(c) => c,
        Err(e) => {
            let _ = ready.send(Err(e.into()));
            return;
        }
    };
    let begun: Result<sqlx::Transaction<'_, sqlx::Postgres>> = async {
        let mut tx = conn.begin().await?;
        // Staged rows need no flush of their own: the load only becomes visible through the
        // (synchronous) commit_load transaction, whose WAL flush covers every earlier record.
        sqlx::query("SET LOCAL synchronous_commit = off").execute(&mut *tx).await?;
        Ok(tx)
    }
    .await;
    let mut tx = match begun {
        Ok(tx) => tx,
        Err(e) => {
            let _ = ready.send(Err(e));
            return;
        }
    };
    let mut copy = match tx.copy_in_raw(stmt).await {
        Ok(c) => c,
        Err(e) => {
            let _ = ready.send(Err(e.into()));
            return;
        }
    };
    if let Err(e) = copy.send(super::pg_binary::HEADER).await {
        let _ = ready.send(Err(e.into()));
        return;
    }
    if ready.send(Ok(())).is_err() {
        let _ = copy.abort("the import stopped").await;
        return;
    }
    loop {
        let Ok(msg) = tokio::time::timeout(LANE_IDLE, from.recv()).await else {
            tracing::warn!(load, "no staged batch for {} s: the load's COPY is aborted", LANE_IDLE.as_secs());
            let _ = copy.abort("no staged batch came for too long").await;
            return;
        };
        match msg {
            Some(LaneMsg::Rows(rows, done)) => match send_pieces(&mut copy, &rows).await {
                Ok(()) => {
                    let _ = done.send((rows, Ok(())));
                }
                Err(e) => {
                    let _ = copy.abort(e.to_string()).await;
                    let _ = done.send((rows, Err(e.into())));
                    return;
                }
            },
            Some(LaneMsg::Finish(done)) => {
                let ended = async {
                    copy.send(super::pg_binary::TRAILER).await?;
                    copy.finish().await?;
                    Ok::<(), LedgerError>(())
                }
                .await;
                let committed = match ended {
                    Ok(()) => match heartbeat(&mut tx, load).await {
                        Ok(()) => tx.commit().await.map_err(LedgerError::from),
                        Err(e) => Err(e),
                    },
                    Err(e) => Err(e),
                };
                let _ = done.send(committed);
                return;
            }
            None => {
                // The load failed or its import was dropped: abort, and roll back on return.
                let _ = copy.abort("the load stopped before its rows were all sent").await;
                return;
            }
        }
    }
}

async fn begin_write(pool: &PgPool) -> Result<sqlx::Transaction<'static, sqlx::Postgres>> {
    Ok(pool.begin().await?)
}

/// Rows changed since a table's last ANALYZE before a commit refreshes its statistics (and at
/// least this share of its rows, in tenths).
const STALE_STATS_ROWS: i64 = 50_000;
const STALE_STATS_TENTHS: i64 = 1;

/// The tables a load fills, whose statistics [`refresh_stats`] keeps fresh.
const LOAD_TABLES: &[&str] = &["charge_contexts", "charge_kinds", "charge_rows", "load_periods", "loads", "rollups"];

/// Refresh the planner's statistics of the tables a load fills when they are stale (at least
/// [`STALE_STATS_ROWS`] and a tenth of the rows changed since the last ANALYZE). Autovacuum
/// would do it, but later (or never, where it is off), and until then the planner believes a
/// freshly filled table is nearly empty: it sorted 10M charges on disk to group them (report
/// weekly 32.9 s at 10M lines, 11 s after ANALYZE, which took 0.9 s). Best effort: a failure
/// (e.g. a role that does not own the tables) is logged, never an error of the commit.
async fn after_commit(pool: &PgPool) {
    refresh_stats(pool, LOAD_TABLES).await;
}

/// Every line of a load is staged: its charge rows are what they will be when it commits, so
/// their statistics are refreshed now, beside the load's last rollup rows, instead of after the
/// commit (where the import waited for it: 0.7 s of an 11 s import of 1M lines on a slow
/// hour). The charge rows are then no longer stale when the commit looks.
async fn lines_staged(pool: &PgPool) {
    refresh_stats(pool, &["charge_rows"]).await;
}

/// ANALYZE those of `tables` that are stale; with `charge_rows`, also the small tables the
/// charge reads join.
async fn refresh_stats(pool: &PgPool, tables: &[&str]) {
    let stale: Result<Vec<String>> = sqlx::query_scalar(
        "SELECT relname::text FROM pg_stat_user_tables \
         WHERE schemaname = current_schema() AND relname = ANY($3) \
           AND n_mod_since_analyze >= $1 AND n_mod_since_analyze * 10 >= $2 * GREATEST(n_live_tup, 1) \
         ORDER BY relname",
    )
    .bind(STALE_STATS_ROWS)
    .bind(STALE_STATS_TENTHS)
    .bind(tables)
    .fetch_all(pool)
    .await
    .map_err(LedgerError::from);
    // The small tables the charge reads join (contexts, kinds, loads, sources) never reach the
    // threshold, but without their statistics the planner sorted the export's rows with their
    // context text again (19.7 s against 14.5 s on 1M lines): refreshed with the charges (ms).
    let stale = stale.map(|mut t| {
        if t.iter().any(|t| t == "charge_rows") {
            t.extend(["charge_contexts", "charge_kinds", "loads", "sources"].map(String::from));
            t.sort();
            t.dedup();
        }
        t
    });
    match stale {
        Ok(tables) => {
            for t in tables {
                let started = std::time::Instant::now();
                match analyze(pool, &t).await {
                    Ok(_) => {
                        tracing::info!(table = %t, ms = started.elapsed().as_millis() as u64, "planner statistics refreshed")
                    }
                    Err(e) => {
                        tracing::warn!(table = %t, error = %e, "could not refresh the planner statistics (ANALYZE); queries may be slower until autovacuum does")
                    }
                }
            }
        }
        Err(e) => tracing::warn!(error = %e, "could not read the tables' statistics state"),
    }
}

/// The statistics target of the ANALYZE a load runs: a sample of 300 × 30 = 9,000 rows (the
/// server's default of 100 samples 30,000). The plans of costledger's reads rest on row counts,
/// distinct counts and the most common values of low-cardinality columns, which that sample
/// gives; at 100 the ANALYZE of 1M charges took 0.42–0.48 s (the import waited for it at its
/// end), at 30 0.10 s. Columns with a target of their own (migration 0015) keep it.
const STATS_TARGET: i32 = 30;

/// ANALYZE `table` (a name from the fixed lists above) with [`STATS_TARGET`].
async fn analyze(pool: &PgPool, table: &str) -> Result<()> {
    let mut tx = pool.begin().await?;
    sqlx::query(AssertSqlSafe(format!("SET LOCAL default_statistics_target = {STATS_TARGET}")))
        .execute(&mut *tx)
        .await?;
    sqlx::query(AssertSqlSafe(format!("ANALYZE {table}"))).execute(&mut *tx).await?;
    tx.commit().await?;
    Ok(())
}

/// Serialise commits of one (source, scope) across processes and replicas.
async fn scope_lock(tx: &mut sqlx::Transaction<'_, sqlx::Postgres>, source_id: i64, scope: &str) -> Result<()> {
    sqlx::query("SELECT pg_advisory_xact_lock($1, hashtext($2))")
        .bind(i32::try_from(source_id % i64::from(i32::MAX)).unwrap_or_default())
        .bind(scope)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

fn ts_param(t: DateTime<Utc>) -> DateTime<Utc> {
    t
}

fn row_ts(r: &PgRow, i: usize) -> Result<DateTime<Utc>> {
    Ok(r.try_get(i)?)
}

fn row_opt_ts(r: &PgRow, i: usize) -> Result<Option<DateTime<Utc>>> {
    Ok(r.try_get(i)?)
}

fn not_staging(load: LoadId) -> LedgerError {
    LedgerError::State(format!(
        "load {load} is no longer staging (swept as stale by another process?); nothing of it was committed"
    ))
}

super::load_sql::load_helpers!(sqlx::Postgres);

/// Rollup rows by binary COPY: a load's last rollup rows are written while the import waits
/// (tens of thousands for a month's bill); as multi-row INSERTs of bound parameters they took
/// 0.45–0.67 s of a 7 s import of 1M lines.
async fn insert_rollup_rows(
    tx: &mut sqlx::Transaction<'_, sqlx::Postgres>,
    load: LoadId,
    rows: &[crate::RollupRow],
) -> Result<()> {
    if rows.is_empty() {
        return Ok(());
    }
    static STMT: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    let stmt = STMT.get_or_init(|| {
        format!("COPY rollups (load_id, {}) FROM STDIN (FORMAT binary)", crate::load_sql::ROLLUP_COLUMNS)
    });
    let buf = CopyBuf::rollup_rows(load, rows);
    copy_payload(tx.copy_in_raw(stmt).await?, &buf).await
}

/// CopyData messages of at most this many bytes. sqlx copies a message into the connection's
/// write buffer before sending it and keeps the buffer's capacity: a batch sent as one message
/// grew the buffer of every pooled connection to the batch's size (megabytes each).
const COPY_PIECE: usize = 256 << 10;

/// Send a binary COPY payload in [`COPY_PIECE`]s and finish the COPY (abort it on a failed send).
async fn copy_payload<C>(mut copy: sqlx::postgres::PgCopyIn<C>, payload: &[u8]) -> Result<()>
where
    C: std::ops::DerefMut<Target = sqlx::PgConnection>,
{
    if let Err(e) = send_pieces(&mut copy, payload).await {
        let _ = copy.abort(e.to_string()).await;
        return Err(e.into());
    }
    copy.finish().await?;
    Ok(())
}

/// Send `payload` down a COPY in [`COPY_PIECE`]s.
async fn send_pieces<C>(copy: &mut sqlx::postgres::PgCopyIn<C>, payload: &[u8]) -> std::result::Result<(), sqlx::Error>
where
    C: std::ops::DerefMut<Target = sqlx::PgConnection>,
{
    for piece in payload.chunks(COPY_PIECE) {
        copy.send(piece).await?;
    }
    Ok(())
}

super::load_sql::ledger_store_impl!(PgLedger, {
    async fn account_first_seen_scan(&self) -> Result<Vec<FirstSeen>> {
        let mut v = sqlx::query(
            "SELECT c.provider_name, c.billing_account_id, COALESCE(c.sub_account_id, c.billing_account_id), \
             MIN(c.charge_period_start) \
             FROM charges c JOIN loads l ON l.id = c.load_id JOIN sources s ON s.id = l.source_id \
             WHERE l.state = 'current' AND s.role = 'primary' GROUP BY 1, 2, 3",
        )
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(|r| {
            Ok(FirstSeen {
                provider: r.try_get(0)?,
                billing_account_id: r.try_get(1)?,
                account: r.try_get(2)?,
                at: r.try_get(3)?,
            })
        })
        .collect::<Result<Vec<_>>>()?;
        v.sort();
        Ok(v)
    }

    fn backend(&self) -> Backend {
        Backend::Postgres
    }

    async fn migrate(&self) -> Result<()> {
        migrations::migrator(Backend::Postgres).run(&self.pool).await?;
        Ok(())
    }

    async fn applied_migrations(&self) -> Result<Vec<i64>> {
        let exists: Option<String> =
            sqlx::query_scalar("SELECT to_regclass('_sqlx_migrations')::text").fetch_one(&self.pool).await?;
        if exists.is_none() {
            return Ok(Vec::new());
        }
        Ok(sqlx::query_scalar("SELECT version FROM _sqlx_migrations WHERE success ORDER BY version")
            .fetch_all(&self.pool)
            .await?)
    }

    async fn lines_staged(&self, load: LoadId) -> Result<()> {
        self.finish_staging(load).await?;
        lines_staged(&self.pool).await;
        Ok(())
    }

    async fn stage_lines(
        &self,
        load: LoadId,
        first_row: u64,
        lines: Vec<ChargeLine>,
        spent: Option<SpentLines>,
    ) -> Result<()> {
        // The batch is encoded and sent on a task of its own: the socket is then written as
        // fast as the server reads it, not only when the import's loop (busy summing the next
        // batch) next polls this future, and the encoding runs beside that loop. Its rows go
        // down one of the load's COPY lanes ([`Lanes`]), uncommitted until every line is
        // staged: if this future is dropped, nothing of the load is ever visible (its lanes
        // abort when the load fails, or after `LANE_IDLE` without a batch).
        let lanes = match self.staging.lock() {
            Ok(mut s) => s.entry(load).or_insert_with(|| Arc::new(Lanes::new(load, self.opts.clone()))).clone(),
            Err(_) => return Err(LedgerError::State("the staging lanes' lock was poisoned by a panic".into())),
        };
        let writer = BatchWriter {
            pool: self.pool.clone(),
            copy_bufs: self.copy_bufs.clone(),
            contexts: self.contexts.clone(),
            kinds: self.kinds.clone(),
            lanes,
        };
        let written = tokio::spawn(writer.write(load, first_row, lines, spent)).await.map_err(|e| {
            LedgerError::State(format!(
                "the COPY of a staged batch of load {load} stopped ({e}); nothing of the load was committed: run the import again"
            ))
        });
        let written = written.and_then(|w| w);
        if written.is_err() {
            // The load cannot commit now: its lanes end (their rows roll back) here, whether or
            // not the caller goes on to fail the load.
            self.end_staging(load);
        }
        written
    }

    async fn totals(&self, f: &ChargeFilter, by: &[Dim]) -> Result<Vec<TotalRow>> {
        let (w, binds) = filter_sql(f);
        let mut group: Vec<String> = by.iter().map(|d| dim_sql(*d).to_string()).collect();
        group.push("c.billing_currency".to_string());
        let select = group.join(", ");
        let order: Vec<String> = group.iter().map(|g| format!("{g} COLLATE \"C\" NULLS FIRST")).collect();
        let sql = format!(
            "SELECT {select}, COUNT(*), SUM(c.billed_cost)::text, SUM(c.effective_cost)::text \
             FROM charges c JOIN loads l ON l.id = c.load_id JOIN sources s ON s.id = l.source_id \
             WHERE {w} GROUP BY {select} ORDER BY {}",
            order.join(", ")
        );
        let n = by.len();
        bind_all(sqlx::query(AssertSqlSafe(sql)), binds)
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(|r| total_row(r, n))
            .collect()
    }

    async fn count_charges(&self, f: &ChargeFilter) -> Result<u64> {
        let (w, binds) = filter_sql(f);
        let sql = format!(
            "SELECT COUNT(*) FROM charges c JOIN loads l ON l.id = c.load_id JOIN sources s ON s.id = l.source_id WHERE {w}"
        );
        let row = bind_all(sqlx::query(AssertSqlSafe(sql)), binds).fetch_one(&self.pool).await?;
        Ok(to_u64(row.try_get(0)?))
    }

    async fn columns_with_values(&self, f: &ChargeFilter) -> Result<BTreeSet<&'static str>> {
        let (w, binds) = filter_sql(f);
        let sql = format!(
            "SELECT {} FROM charges c JOIN loads l ON l.id = c.load_id JOIN sources s ON s.id = l.source_id WHERE {w}",
            count_values_select()
        );
        let row = bind_all(sqlx::query(AssertSqlSafe(sql)), binds).fetch_one(&self.pool).await?;
        counted_columns_of(&row)
    }

    async fn max_decimal_scale(&self, f: &ChargeFilter) -> Result<u32> {
        let (w, binds) = filter_sql(f);
        let select: Vec<String> = DECIMAL_COLUMNS.iter().map(|c| format!("MAX(scale(c.{c}))::bigint")).collect();
        let sql = format!(
            "SELECT {} FROM charges c JOIN loads l ON l.id = c.load_id JOIN sources s ON s.id = l.source_id WHERE {w}",
            select.join(", ")
        );
        let row = bind_all(sqlx::query(AssertSqlSafe(sql)), binds).fetch_one(&self.pool).await?;
        max_scale_of(&row)
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
        let w = Dialect::POSTGRES.render(&w);
        let binds = binds.into_iter().map(Bind::S).collect();
        self.grouped_read(GroupedTable::Rollups(kind), by, sums, w, binds)
    }

    fn charges<'a>(&'a self, f: &'a ChargeFilter) -> BoxStream<'a, Result<ChargeRecord>> {
        let (w, binds) = filter_sql(f);
        let pool = &self.pool;
        let focus = f.columns.reads_focus();
        if f.unordered {
            let cols = charge_select(f.columns, "NULL::text");
            let sql = format!(
                "SELECT {cols}, s.name FROM charges c JOIN loads l ON l.id = c.load_id \
                 JOIN sources s ON s.id = l.source_id WHERE {w}"
            );
            return Box::pin(
                futures::stream::once(async move {
                    bind_all(sqlx::query(AssertSqlSafe(sql)), binds)
                        .fetch(pool)
                        .map(move |r| r.map_err(LedgerError::from).and_then(|row| charge_record(&row, focus, None)))
                })
                .flatten(),
            );
        }
        // In the export order, by each context's rank; the rows name their context by id and
        // the client fills its columns (`ContextReader`): no context text is sent per row and
        // the server joins no contexts after its sort (an export's client time ~15% less). A
        // LEFT JOIN on the ranks: a row whose context is missing (a ledger changed by hand) still
        // comes, last, and the reader reports it, rather than the row silently dropping out.
        let cols = charge_select_without_contexts(f.columns, "NULL::text");
        let sql = format!(
            "SELECT {cols}, s.name, c.ctx_id FROM charges c LEFT JOIN {CONTEXT_RANKS} AS k(id, r1, r2) ON k.id = c.ctx_id \
             JOIN loads l ON l.id = c.load_id JOIN sources s ON s.id = l.source_id \
             WHERE {w} ORDER BY {RANKED_EXPORT_ORDER}"
        );
        let reader = ContextReader::new(self.opts.clone());
        Box::pin(
            futures::stream::once(async move {
                let rows = bind_all(sqlx::query(AssertSqlSafe(sql)), binds).fetch(pool);
                // The state boxed: it moves in and out of each row's future, and the context
                // reader (its connection options, its connection) is large — copying it twice
                // per row was a thirtieth of an export's client instructions.
                futures::stream::unfold(Box::new((rows, reader)), move |mut state| async move {
                    let (rows, reader) = &mut *state;
                    let Some(row) = rows.next().await else {
                        reader.close().await;
                        return None;
                    };
                    let rec = async {
                        let row = row?;
                        let ctx = reader.get(row.try_get(CTX_AT)?).await?;
                        charge_record(&row, focus, Some(ctx))
                    }
                    .await;
                    Some((rec, state))
                })
            })
            .flatten(),
        )
    }

    async fn try_job_lock(&self, key: &str) -> Result<Option<Box<dyn JobLock>>> {
        use sqlx::Connection;
        let mut conn = sqlx::PgConnection::connect_with(&self.opts).await?;
        let got: bool =
            sqlx::query_scalar("SELECT pg_try_advisory_lock(hashtext($1))").bind(key).fetch_one(&mut conn).await?;
        if got {
            Ok(Some(Box::new(PgJobLock { conn: Some(conn), key: key.to_string() })))
        } else {
            conn.close().await?;
            Ok(None)
        }
    }
});

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn context_columns_are_where_the_reads_look_for_them() {
        for (i, c) in CONTEXT_COLUMNS.iter().enumerate() {
            assert_eq!(CHARGE_COLUMNS[VIEW_CONTEXT_AT[i]], *c, "view read");
            assert_eq!(TABLE_CONTEXT_AT[i], i + 1, "SELECT id, <CONTEXT_COLUMNS>");
        }
        let ordered = charge_select_without_contexts(ChargeColumns::All, "NULL");
        for (i, c) in CHARGE_COLUMNS.iter().enumerate() {
            let want = if VIEW_CONTEXT_AT.contains(&i) { "NULL".to_string() } else { format!("c.{c}") };
            assert_eq!(ordered.split(", ").nth(i), Some(want.as_str()));
        }
    }
}
