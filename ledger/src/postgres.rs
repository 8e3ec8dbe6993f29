//! PostgreSQL backend: money is NUMERIC, bulk staging is `COPY … FROM STDIN`, the commit
//! serialises per (source, scope) with a transaction-scoped advisory lock so replicas can
//! load concurrently.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::str::FromStr;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use costledger_core::{ChargeCategory, ChargeClass, ChargeLine, RowError, SpentLines};
use futures::StreamExt;
use futures::stream::BoxStream;
use rust_decimal::Decimal;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions, PgRow};
use sqlx::{AssertSqlSafe, PgPool, Row};

use super::pg_binary::CopyBuf;
use super::*;

pub struct PgLedger {
    pool: PgPool,
    opts: PgConnectOptions,
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

fn charge_record(r: &PgRow) -> Result<ChargeRecord> {
    let s = |i: usize| -> Result<Option<String>> { Ok(r.try_get::<Option<String>, _>(i)?) };
    let d = |i: usize| -> Result<Option<Decimal>> { Ok(r.try_get::<Option<Decimal>, _>(i)?) };
    let line = ChargeLine {
        billing_account_id: r.try_get(0)?,
        billing_account_name: s(1)?,
        sub_account_id: s(2)?,
        sub_account_name: s(3)?,
        billing_period_start: r.try_get(4)?,
        billing_period_end: r.try_get(5)?,
        charge_period_start: r.try_get(6)?,
        charge_period_end: r.try_get(7)?,
        charge_category: ChargeCategory::from_str(r.try_get(8)?).map_err(LedgerError::Corrupt)?,
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
        billed_cost: r.try_get(20)?,
        effective_cost: d(21)?,
        list_cost: d(22)?,
        contracted_cost: d(23)?,
        billing_currency: r.try_get(24)?,
        pricing_quantity: d(25)?,
        pricing_unit: s(26)?,
        consumed_quantity: d(27)?,
        consumed_unit: s(28)?,
        commitment_discount_id: s(29)?,
        invoice_id: s(30)?,
        tags: parse_tags(s(31)?)?,
        x_extra: parse_tags(s(32)?)?,
        source_ref: s(33)?,
    };
    Ok(ChargeRecord { load_id: r.try_get(34)?, row_no: r.try_get(35)?, source: r.try_get(36)?, line })
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
        Ok(Self { pool, opts })
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
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

#[async_trait]
impl LedgerStore for PgLedger {
    async fn source_data_end(&self) -> Result<Vec<(String, String, DateTime<Utc>)>> {
        let mut rows: Vec<(String, String, DateTime<Utc>)> = sqlx::query(
            "SELECT s.name, to_char(c.billing_period_start AT TIME ZONE 'UTC', 'YYYY-MM'), MAX(c.charge_period_end) \
             FROM charges c JOIN loads l ON l.id = c.load_id JOIN sources s ON s.id = l.source_id \
             WHERE l.state = 'current' GROUP BY 1, 2",
        )
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(|r| Ok((r.try_get(0)?, r.try_get(1)?, r.try_get(2)?)))
        .collect::<Result<_>>()?;
        rows.sort();
        Ok(rows)
    }

    async fn account_first_seen(&self) -> Result<Vec<FirstSeen>> {
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

    async fn ensure_source(&self, name: &str, kind: &str) -> Result<i64> {
        sqlx::query(
            "INSERT INTO sources (name, kind, created_at) VALUES ($1, $2, now()) ON CONFLICT (name) DO NOTHING",
        )
        .bind(name)
        .bind(kind)
        .execute(&self.pool)
        .await?;
        let (id, existing): (i64, String) =
            sqlx::query_as("SELECT id, kind FROM sources WHERE name = $1").bind(name).fetch_one(&self.pool).await?;
        if existing != kind {
            return Err(LedgerError::State(format!(
                "source '{name}' already holds '{existing}' data in this ledger, not '{kind}'; use another source name"
            )));
        }
        Ok(id)
    }

    async fn current_load(&self, source_id: i64, scope: &str) -> Result<Option<LoadRow>> {
        let sql = format!("{LOAD_SELECT} WHERE l.source_id = $1 AND l.scope = $2 AND l.state = 'current'");
        let row = sqlx::query(AssertSqlSafe(sql)).bind(source_id).bind(scope).fetch_optional(&self.pool).await?;
        row.as_ref().map(load_row).transpose()
    }

    async fn set_source_role(&self, source_id: i64, role: SourceRole) -> Result<()> {
        sqlx::query("UPDATE sources SET role = $1 WHERE id = $2")
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
            "{LOAD_SELECT} WHERE l.source_id = $1 AND l.delivery_key = $2 AND l.state = 'current' ORDER BY l.id LIMIT 1"
        );
        let row = sqlx::query(AssertSqlSafe(sql)).bind(source_id).bind(key).fetch_optional(&self.pool).await?;
        row.as_ref().map(load_row).transpose()
    }

    async fn begin_load(&self, l: &NewLoad) -> Result<LoadId> {
        Ok(sqlx::query_scalar(
            "INSERT INTO loads (source_id, scope, billing_period, delivery_key, description, state, owner, started_at, heartbeat_at) \
             VALUES ($1, $2, $3, $4, $5, 'staging', $6, now(), now()) RETURNING id",
        )
        .bind(l.source_id)
        .bind(&l.scope)
        .bind(&l.billing_period)
        .bind(&l.delivery_key)
        .bind(&l.description)
        .bind(&l.owner)
        .fetch_one(&self.pool)
        .await?)
    }

    async fn stage_lines(
        &self,
        load: LoadId,
        first_row: u64,
        lines: Vec<ChargeLine>,
        spent: Option<SpentLines>,
    ) -> Result<()> {
        let mut buf = CopyBuf::with_capacity(lines.len());
        for (n, l) in lines.iter().enumerate() {
            buf.line(l, load, first_row + n as u64);
        }
        match spent {
            Some(spent) => spent.give(lines),
            None => drop(lines),
        }
        let buf = buf.finish();
        let mut tx = self.pool.begin().await?;
        // Staged rows need no flush of their own: the load only becomes visible through the
        // (synchronous) commit_load transaction, whose WAL flush covers every earlier record.
        sqlx::query("SET LOCAL synchronous_commit = off").execute(&mut *tx).await?;
        let stmt = format!("COPY charges ({}) FROM STDIN (FORMAT binary)", CHARGE_COLUMNS.join(", "));
        let mut copy = tx.copy_in_raw(&stmt).await?;
        if let Err(e) = copy.send(buf.as_slice()).await {
            let _ = copy.abort(e.to_string()).await;
            return Err(e.into());
        }
        copy.finish().await?;
        heartbeat(&mut tx, load).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn stage_quarantine(&self, load: LoadId, rows: &[RowError]) -> Result<()> {
        if rows.is_empty() {
            return Ok(());
        }
        let mut tx = self.pool.begin().await?;
        for r in rows {
            sqlx::query("INSERT INTO quarantine (load_id, location, reason, raw, raw_amount, currency) VALUES ($1, $2, $3, $4, $5, $6)")
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
        let mut tx = self.pool.begin().await?;
        let (state, source_id, scope, key): (String, i64, String, String) =
            sqlx::query_as("SELECT state, source_id, scope, delivery_key FROM loads WHERE id = $1 FOR UPDATE")
                .bind(load)
                .fetch_one(&mut *tx)
                .await?;
        if state != "staging" {
            return Err(LedgerError::State(format!(
                "load {load} is {state}, not staging: it was swept as stale or failed; run the import again"
            )));
        }
        // Serialise commits of one (source, scope) across processes and replicas.
        sqlx::query("SELECT pg_advisory_xact_lock($1, hashtext($2))")
            .bind(i32::try_from(source_id % i64::from(i32::MAX)).unwrap_or_default())
            .bind(&scope)
            .execute(&mut *tx)
            .await?;
        let key = match &sm.delivery_key {
            Some(k) => {
                sqlx::query("UPDATE loads SET delivery_key = $1 WHERE id = $2")
                    .bind(k)
                    .bind(load)
                    .execute(&mut *tx)
                    .await?;
                k.clone()
            }
            None => key,
        };
        let cur: Option<(i64, String)> = sqlx::query_as(
            "SELECT id, delivery_key FROM loads WHERE source_id = $1 AND scope = $2 AND state = 'current' FOR UPDATE",
        )
        .bind(source_id)
        .bind(&scope)
        .fetch_optional(&mut *tx)
        .await?;
        if let Some((existing, k)) = &cur
            && *k == key
        {
            sqlx::query("UPDATE loads SET state = 'failed', finished_at = now(), error = $1 WHERE id = $2")
                .bind(format!("the same delivery was committed concurrently as load {existing}"))
                .bind(load)
                .execute(&mut *tx)
                .await?;
            sqlx::query("DELETE FROM charges WHERE load_id = $1").bind(load).execute(&mut *tx).await?;
            sqlx::query("DELETE FROM quarantine WHERE load_id = $1").bind(load).execute(&mut *tx).await?;
            tx.commit().await?;
            return Ok(CommitOutcome::Duplicate { existing: *existing });
        }
        let old = cur.map(|c| c.0);
        if let Some(old) = old {
            sqlx::query(
                "UPDATE loads SET state = 'superseded', superseded_by = $1, superseded_at = now() WHERE id = $2",
            )
            .bind(load)
            .bind(old)
            .execute(&mut *tx)
            .await?;
        }
        sqlx::query(
            "UPDATE loads SET state = 'current', finished_at = now(), heartbeat_at = now(), row_count = $1, \
             quarantined_count = $2, rounded_count = $3, totals = $4, quarantined_totals = $5, checksum = $6 WHERE id = $7",
        )
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
            sqlx::query(
                "INSERT INTO load_periods (load_id, period, row_count, totals, invoice_ids, all_invoiced) VALUES ($1, $2, $3, $4, $5, $6)",
            )
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
            let olds: Vec<String> = sqlx::query_scalar("SELECT period FROM load_periods WHERE load_id = $1")
                .bind(old)
                .fetch_all(&mut *tx)
                .await?;
            affected.extend(olds);
        }
        for p in affected {
            let parts: Vec<(String, Option<String>, bool)> = sqlx::query_as(
                "SELECT lp.totals, lp.invoice_ids, lp.all_invoiced FROM load_periods lp JOIN loads l ON l.id = lp.load_id \
                 WHERE l.source_id = $1 AND l.state = 'current' AND lp.period = $2",
            )
            .bind(source_id)
            .bind(&p)
            .fetch_all(&mut *tx)
            .await?;
            let merged = merge_parts(&parts)?;
            let prev: Option<(String, Option<String>)> = sqlx::query_as(
                "SELECT state, totals FROM billing_periods WHERE source_id = $1 AND period = $2 FOR UPDATE",
            )
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
                 VALUES ($1, $2, $3, $4, $5, $6, now()) ON CONFLICT (source_id, period) DO UPDATE SET state = excluded.state, \
                 invoice_ids = excluded.invoice_ids, current_load_id = excluded.current_load_id, totals = excluded.totals, \
                 updated_at = excluded.updated_at",
            )
            .bind(source_id)
            .bind(&p)
            .bind(state.as_str())
            .bind(set_json(&merged.invoice_ids))
            .bind(load)
            .bind(merged.totals.to_json())
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(CommitOutcome::Current { superseded: old })
    }

    async fn fail_load(&self, load: LoadId, error: &str) -> Result<bool> {
        let mut tx = self.pool.begin().await?;
        let n = sqlx::query(
            "UPDATE loads SET state = 'failed', finished_at = now(), error = $1 WHERE id = $2 AND state = 'staging'",
        )
        .bind(error)
        .bind(load)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if n > 0 {
            sqlx::query("DELETE FROM charges WHERE load_id = $1").bind(load).execute(&mut *tx).await?;
            sqlx::query("DELETE FROM quarantine WHERE load_id = $1").bind(load).execute(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(n > 0)
    }

    async fn last_load(&self, source_id: i64, scope: &str) -> Result<Option<LoadRow>> {
        let sql = format!(
            "{LOAD_SELECT} WHERE l.source_id = $1 AND l.scope = $2 AND l.state <> 'staging' ORDER BY l.id DESC LIMIT 1"
        );
        let row = sqlx::query(AssertSqlSafe(sql)).bind(source_id).bind(scope).fetch_optional(&self.pool).await?;
        row.as_ref().map(load_row).transpose()
    }

    async fn record_failure(&self, load: LoadId, error: &str, fingerprint: &str) -> Result<Option<LoadId>> {
        let mut tx = self.pool.begin().await?;
        // One writer per scope at a time (as commits are serialised per scope).
        let n = sqlx::query(
            "UPDATE loads SET state = 'failed', finished_at = now(), error = $1, delivery_key = $2 WHERE id = $3 AND state = 'staging'",
        )
        .bind(error)
        .bind(fingerprint)
        .bind(load)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        let mut merged = None;
        if n > 0 {
            sqlx::query("DELETE FROM charges WHERE load_id = $1").bind(load).execute(&mut *tx).await?;
            sqlx::query("DELETE FROM quarantine WHERE load_id = $1").bind(load).execute(&mut *tx).await?;
            let prev: Option<(i64, String, Option<String>, String)> = sqlx::query_as(
                "SELECT p.id, p.state, p.error, p.delivery_key FROM loads p JOIN loads l ON l.source_id = p.source_id \
                 AND l.scope = p.scope WHERE l.id = $1 AND p.id <> l.id AND p.state <> 'staging' ORDER BY p.id DESC LIMIT 1 \
                 FOR UPDATE OF p",
            )
            .bind(load)
            .fetch_optional(&mut *tx)
            .await?;
            if let Some((id, state, err, key)) = prev
                && state == "failed"
                && err.as_deref() == Some(error)
                && key == fingerprint
            {
                sqlx::query("UPDATE loads SET attempts = attempts + 1, finished_at = now() WHERE id = $1")
                    .bind(id)
                    .execute(&mut *tx)
                    .await?;
                sqlx::query("DELETE FROM loads WHERE id = $1").bind(load).execute(&mut *tx).await?;
                merged = Some(id);
            }
        }
        tx.commit().await?;
        Ok(merged)
    }

    async fn discard_load(&self, load: LoadId) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        let staging: Option<i64> =
            sqlx::query_scalar("SELECT id FROM loads WHERE id = $1 AND state = 'staging' FOR UPDATE")
                .bind(load)
                .fetch_optional(&mut *tx)
                .await?;
        if staging.is_some() {
            sqlx::query("DELETE FROM charges WHERE load_id = $1").bind(load).execute(&mut *tx).await?;
            sqlx::query("DELETE FROM quarantine WHERE load_id = $1").bind(load).execute(&mut *tx).await?;
            sqlx::query("DELETE FROM loads WHERE id = $1").bind(load).execute(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn gc_superseded(&self, before: DateTime<Utc>) -> Result<u64> {
        let ids: Vec<i64> = sqlx::query_scalar(
            "SELECT id FROM loads WHERE state = 'superseded' AND superseded_at < $1 \
             AND EXISTS (SELECT 1 FROM charges WHERE load_id = loads.id)",
        )
        .bind(before)
        .fetch_all(&self.pool)
        .await?;
        for id in &ids {
            let mut tx = self.pool.begin().await?;
            sqlx::query("DELETE FROM charges WHERE load_id = $1").bind(id).execute(&mut *tx).await?;
            sqlx::query("DELETE FROM quarantine WHERE load_id = $1").bind(id).execute(&mut *tx).await?;
            tx.commit().await?;
        }
        Ok(ids.len() as u64)
    }

    async fn loads(&self, f: &LoadFilter) -> Result<Vec<LoadRow>> {
        let mut sql = format!("{LOAD_SELECT} WHERE 1 = 1");
        let mut binds: Vec<Bind> = Vec::new();
        if let Some(id) = f.id {
            sql.push_str(&format!(" AND l.id = {id}"));
        }
        if let Some(s) = &f.source {
            binds.push(Bind::S(s.clone()));
            let _ = write!(sql, " AND s.name = ${}", binds.len());
        }
        if let Some(st) = f.state {
            binds.push(Bind::S(st.as_str().to_string()));
            let _ = write!(sql, " AND l.state = ${}", binds.len());
        }
        sql.push_str(" ORDER BY l.id");
        if let Some(n) = f.limit {
            sql = format!("SELECT * FROM ({sql} DESC LIMIT {n}) AS t ORDER BY 1");
        }
        bind_all(sqlx::query(AssertSqlSafe(sql)), binds).fetch_all(&self.pool).await?.iter().map(load_row).collect()
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
            "SELECT COUNT(*) FROM charges c JOIN loads l ON l.id = c.load_id JOIN sources s ON s.id = l.source_id WHERE {w}"
        );
        let row = bind_all(sqlx::query(AssertSqlSafe(sql)), binds).fetch_one(&self.pool).await?;
        Ok(to_u64(row.try_get(0)?))
    }

    async fn quarantine_rows(&self, load: LoadId) -> Result<Vec<QuarantineRow>> {
        let rows: Vec<(i64, String, String, String, Option<String>, Option<String>)> = sqlx::query_as(
            "SELECT load_id, location, reason, raw, raw_amount, currency FROM quarantine WHERE load_id = $1 ORDER BY id",
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
             JOIN sources s ON s.id = p.source_id ORDER BY s.name COLLATE \"C\", p.period COLLATE \"C\"",
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
        let order: Vec<String> = ORDER_COLUMNS
            .iter()
            .map(|c| match *c {
                "billing_period_start" | "charge_period_start" | "load_id" | "row_no" => format!("c.{c} NULLS FIRST"),
                _ => format!("c.{c} COLLATE \"C\" NULLS FIRST"),
            })
            .collect();
        let sql = format!(
            "SELECT {}, s.name FROM charges c JOIN loads l ON l.id = c.load_id JOIN sources s ON s.id = l.source_id \
             WHERE {w} ORDER BY {}",
            cols.join(", "),
            order.join(", ")
        );
        let pool = &self.pool;
        Box::pin(
            futures::stream::once(async move {
                bind_all(sqlx::query(AssertSqlSafe(sql)), binds)
                    .fetch(pool)
                    .map(|r| r.map_err(LedgerError::from).and_then(|row| charge_record(&row)))
            })
            .flatten(),
        )
    }

    async fn start_run(&self, job: &str, source: Option<&str>) -> Result<i64> {
        Ok(sqlx::query_scalar(
            "INSERT INTO runs (job, source, started_at, status, owner) VALUES ($1, $2, now(), 'running', $3) RETURNING id",
        )
        .bind(job)
        .bind(source)
        .bind(super::process_owner())
        .fetch_one(&self.pool)
        .await?)
    }

    async fn claim_run(&self, job: &str, source: Option<&str>, tick: DateTime<Utc>) -> Result<Option<i64>> {
        Ok(sqlx::query_scalar(
            "INSERT INTO runs (job, source, started_at, status, tick, owner) VALUES ($1, $2, now(), 'running', $3, $4) \
             ON CONFLICT DO NOTHING RETURNING id",
        )
        .bind(job)
        .bind(source)
        .bind(costledger_core::format_ts(tick))
        .bind(super::process_owner())
        .fetch_optional(&self.pool)
        .await?)
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

    async fn finish_run(&self, run: i64, o: &RunOutcome) -> Result<()> {
        sqlx::query(
            "UPDATE runs SET finished_at = now(), status = $1, attempts = $2, error = $3, rows = $4, loads_created = $5, \
             loads_skipped = $6 WHERE id = $7",
        )
        .bind(o.status.as_str())
        .bind(i32::try_from(o.attempts).unwrap_or(i32::MAX))
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
        Ok(sqlx::query_as("SELECT id, owner, started_at FROM runs WHERE status = 'running' ORDER BY id")
            .fetch_all(&self.pool)
            .await?)
    }

    async fn abandon_run(&self, run: i64, reason: &str) -> Result<bool> {
        let n = sqlx::query(
            "UPDATE runs SET status = 'abandoned', finished_at = now(), error = $1 WHERE id = $2 AND status = 'running'",
        )
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
                    started_at: r.try_get(3)?,
                    finished_at: r.try_get(4)?,
                    outcome: RunOutcome {
                        status: super::run_status(r.try_get(5)?)?,
                        attempts: u32::try_from(r.try_get::<i32, _>(6)?).unwrap_or(0),
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

async fn heartbeat(tx: &mut sqlx::Transaction<'_, sqlx::Postgres>, load: LoadId) -> Result<()> {
    let n = sqlx::query("UPDATE loads SET heartbeat_at = now() WHERE id = $1 AND state = 'staging'")
        .bind(load)
        .execute(&mut **tx)
        .await?
        .rows_affected();
    if n == 0 {
        return Err(LedgerError::State(format!(
            "load {load} is no longer staging (swept as stale by another process?); nothing of it was committed"
        )));
    }
    Ok(())
}
