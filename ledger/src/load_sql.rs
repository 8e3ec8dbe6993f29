//! The load and run bookkeeping (sources, loads, the commit/supersede transaction, failures,
//! quarantine, billing periods, runs), written once for both backends.
//!
//! The SQL text is shared; a [`Dialect`] renders the few places where SQLite and PostgreSQL
//! differ: placeholders (`?` → `$n`), the current time (`{NOW}`: `now()` on PostgreSQL, the
//! `YYYY-MM-DDTHH:MM:SS.sssZ` text SQLite stores), row locks (`{FOR_UPDATE}`, nothing on
//! SQLite, whose `BEGIN IMMEDIATE` already makes the writer exclusive) and byte-order collation
//! (`{C}`). The decisions (duplicate or supersede, merge a repeated failure, the next period
//! state) are pure functions, tested on their own below and in `lib.rs`.
//!
//! [`ledger_store_impl!`] writes each backend's `impl LedgerStore`; the backend module
//! provides the hooks it names: `D` (its dialect), `CHARGES_OF_L` (how `charges c` joins
//! `loads l`), `DELETE_LOAD_CHARGES` (delete the charges of load `?1`), `begin_write` (a write
//! transaction), `scope_lock` (serialise commits of one source scope), `after_commit` (upkeep
//! once a load is current), `load_row`, `row_ts`,
//! `row_opt_ts` (timestamp columns) and `ts_param` (a timestamp as a bind value).

use crate::LoadId;

/// How one backend spells the parts of SQL the two disagree on.
pub(crate) struct Dialect {
    /// `$1, $2, …` placeholders (PostgreSQL) rather than `?`.
    numbered: bool,
    now: &'static str,
    for_update: &'static str,
    for_update_of_p: &'static str,
    collate_c: &'static str,
}

impl Dialect {
    pub(crate) const SQLITE: Dialect = Dialect {
        numbered: false,
        now: "strftime('%Y-%m-%dT%H:%M:%fZ', 'now')",
        for_update: "",
        for_update_of_p: "",
        collate_c: "",
    };
    pub(crate) const POSTGRES: Dialect = Dialect {
        numbered: true,
        now: "now()",
        for_update: " FOR UPDATE",
        for_update_of_p: " FOR UPDATE OF p",
        collate_c: " COLLATE \"C\"",
    };

    /// The SQL text for this backend: tokens replaced, placeholders numbered where needed
    /// (`?N` keeps its number; bare `?` are numbered in order). Our SQL has no `?` or braces
    /// inside string literals.
    pub(crate) fn render(&self, sql: &str) -> String {
        let sql = sql
            .replace("{NOW}", self.now)
            .replace("{FOR_UPDATE}", self.for_update)
            .replace("{FOR_UPDATE_OF_P}", self.for_update_of_p)
            .replace("{C}", self.collate_c);
        if !self.numbered {
            return sql;
        }
        let mut out = String::with_capacity(sql.len() + 16);
        let mut n = 0;
        let mut chars = sql.chars().peekable();
        while let Some(c) = chars.next() {
            if c != '?' {
                out.push(c);
                continue;
            }
            out.push('$');
            if chars.peek().is_some_and(char::is_ascii_digit) {
                while let Some(d) = chars.next_if(char::is_ascii_digit) {
                    out.push(d);
                }
            } else {
                n += 1;
                out.push_str(&n.to_string());
            }
        }
        out
    }
}

/// What committing a staged load does to its scope.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CommitDecision {
    /// The scope's current load holds the same delivery (another process committed it
    /// first): the staged load fails and its rows go.
    Duplicate { existing: LoadId },
    /// The staged load becomes current, superseding the scope's current load if there is one.
    Supersede { old: Option<LoadId> },
}

/// Decide a commit from the scope's current load (id, delivery key) and the staged load's key.
pub fn commit_decision(current: Option<(LoadId, &str)>, key: &str) -> CommitDecision {
    match current {
        Some((existing, k)) if k == key => CommitDecision::Duplicate { existing },
        other => CommitDecision::Supersede { old: other.map(|(id, _)| id) },
    }
}

/// The columns of a rollup row after `load_id`, in the order they are bound and read.
pub(crate) const ROLLUP_COLUMNS: &str = "day, billing_period, provider_name, billing_account_id, sub_account_id, \
     service_name, service_category, region_id, charge_category, charge_class, pricing_unit, billing_currency, tags, \
     lines, billed_cost, effective_cost, list_cost, contracted_cost, pricing_quantity, consumed_quantity, kind, sku_id, \
     pricing_category, commitment_discount_id, commitment_discount_type, commitment_discount_category, \
     commitment_discount_status";

/// The scope's previous finished load, as `record_failure` sees it.
pub(crate) struct PreviousLoad {
    pub id: LoadId,
    pub failed: bool,
    pub error: Option<String>,
    pub delivery_key: String,
}

/// A failure merges into the scope's previous load when that load failed with the same error
/// on the same input (same fingerprint): the attempt is counted there instead of adding a row.
pub(crate) fn merge_failure_into(prev: Option<&PreviousLoad>, error: &str, fingerprint: &str) -> Option<LoadId> {
    prev.filter(|p| p.failed && p.error.as_deref() == Some(error) && p.delivery_key == fingerprint).map(|p| p.id)
}

/// A backend's `impl LedgerStore`: its own methods (`$own`) plus the load/run methods written
/// once here (see the module docs for the hooks). The methods are spliced into one impl block
/// so that `#[async_trait]` sees them all.
macro_rules! ledger_store_impl {
    ($ty:ty, { $($own:tt)* }) => {
        #[async_trait]
        impl LedgerStore for $ty {
        $($own)*
        async fn ensure_source(&self, name: &str, kind: &str) -> Result<i64> {
            sqlx::query(q("INSERT INTO sources (name, kind, created_at) VALUES (?, ?, {NOW}) ON CONFLICT (name) DO NOTHING"))
                .bind(name)
                .bind(kind)
                .execute(&self.pool)
                .await?;
            let (id, existing): (i64, String) =
                sqlx::query_as(q("SELECT id, kind FROM sources WHERE name = ?")).bind(name).fetch_one(&self.pool).await?;
            if existing != kind {
                return Err(LedgerError::State(format!(
                    "source '{name}' already holds '{existing}' data in this ledger, not '{kind}'; use another source name"
                )));
            }
            Ok(id)
        }

        async fn current_load(&self, source_id: i64, scope: &str) -> Result<Option<LoadRow>> {
            let sql = format!("{LOAD_SELECT} WHERE l.source_id = ? AND l.scope = ? AND l.state = 'current'");
            let row = sqlx::query(q(&sql)).bind(source_id).bind(scope).fetch_optional(&self.pool).await?;
            row.as_ref().map(load_row).transpose()
        }

        async fn set_source_role(&self, source_id: i64, role: SourceRole) -> Result<()> {
            sqlx::query(q("UPDATE sources SET role = ? WHERE id = ?"))
                .bind(role.as_str())
                .bind(source_id)
                .execute(&self.pool)
                .await?;
            Ok(())
        }

        async fn source_data_end(&self) -> Result<Vec<(String, String, chrono::DateTime<chrono::Utc>)>> {
            // Each current load's own latest ChargePeriodEnd per period (written at commit,
            // migration 0011): a few rows per load instead of a scan of every charge; the latest
            // per source is taken here, comparing instants rather than text.
            let rows = sqlx::query(q(
                "SELECT s.name, lp.period, lp.data_end FROM load_periods lp JOIN loads l ON l.id = lp.load_id \
                 JOIN sources s ON s.id = l.source_id WHERE l.state = 'current' AND lp.data_end IS NOT NULL",
            ))
            .fetch_all(&self.pool)
            .await?;
            let mut latest: std::collections::BTreeMap<(String, String), chrono::DateTime<chrono::Utc>> =
                std::collections::BTreeMap::new();
            for r in rows {
                let end: String = r.try_get(2)?;
                let end = costledger_core::parse_timestamp(&end)
                    .map_err(|e| LedgerError::Corrupt(format!("load_periods.data_end '{end}': {e}")))?;
                let e = latest.entry((r.try_get(0)?, r.try_get(1)?)).or_insert(end);
                *e = (*e).max(end);
            }
            Ok(latest.into_iter().map(|((s, p), t)| (s, p, t)).collect())
        }

        async fn current_load_periods(&self) -> Result<Vec<String>> {
            let mut periods: Vec<String> = sqlx::query_scalar(q(
                "SELECT DISTINCT lp.period FROM load_periods lp JOIN loads l ON l.id = lp.load_id WHERE l.state = 'current'",
            ))
            .fetch_all(&self.pool)
            .await?;
            periods.sort();
            Ok(periods)
        }

        async fn load_day_totals(&self, period: Option<&str>) -> Result<Option<Vec<crate::LoadDayTotals>>> {
            let mut sql = "SELECT s.name, s.role, l.id, lp.period, lp.day_totals FROM load_periods lp \
                 JOIN loads l ON l.id = lp.load_id JOIN sources s ON s.id = l.source_id WHERE l.state = 'current'"
                .to_string();
            if period.is_some() {
                sql.push_str(" AND lp.period = ?");
            }
            sql.push_str(" ORDER BY s.name{C}, lp.period{C}, l.id");
            let mut query = sqlx::query(q(&sql));
            if let Some(p) = period {
                query = query.bind(p);
            }
            let mut out = Vec::new();
            for r in query.fetch_all(&self.pool).await? {
                let Some(text) = r.try_get::<Option<String>, _>(4)? else { return Ok(None) };
                let role: String = r.try_get(1)?;
                out.push(crate::LoadDayTotals {
                    source: r.try_get(0)?,
                    role: SourceRole::parse(&role)
                        .ok_or_else(|| LedgerError::Corrupt(format!("source role '{role}'")))?,
                    load: r.try_get(2)?,
                    period: r.try_get(3)?,
                    rows: crate::day_totals::parse_day_totals(&text)?,
                });
            }
            Ok(Some(out))
        }

        async fn source_roles(&self) -> Result<Vec<(String, SourceRole)>> {
            sqlx::query(q("SELECT name, role FROM sources ORDER BY name{C}"))
                .fetch_all(&self.pool)
                .await?
                .iter()
                .map(|r| {
                    let role: String = r.try_get(1)?;
                    let role = SourceRole::parse(&role)
                        .ok_or_else(|| LedgerError::Corrupt(format!("source role '{role}'")))?;
                    Ok((r.try_get(0)?, role))
                })
                .collect()
        }

        async fn current_load_with_key(&self, source_id: i64, key: &str) -> Result<Option<LoadRow>> {
            let sql = format!(
                "{LOAD_SELECT} WHERE l.source_id = ? AND l.delivery_key = ? AND l.state = 'current' ORDER BY l.id LIMIT 1"
            );
            let row = sqlx::query(q(&sql)).bind(source_id).bind(key).fetch_optional(&self.pool).await?;
            row.as_ref().map(load_row).transpose()
        }

        async fn begin_load(&self, l: &NewLoad) -> Result<LoadId> {
            Ok(sqlx::query_scalar(q(
                "INSERT INTO loads (source_id, scope, billing_period, delivery_key, description, state, owner, \
                 started_at, heartbeat_at) VALUES (?, ?, ?, ?, ?, 'staging', ?, {NOW}, {NOW}) RETURNING id",
            ))
            .bind(l.source_id)
            .bind(&l.scope)
            .bind(&l.billing_period)
            .bind(&l.delivery_key)
            .bind(&l.description)
            .bind(&l.owner)
            .fetch_one(&self.pool)
            .await?)
        }

        async fn stage_quarantine(&self, load: LoadId, rows: &[RowError]) -> Result<()> {
            if rows.is_empty() {
                return Ok(());
            }
            let mut tx = begin_write(&self.pool).await?;
            let sql = D.render("INSERT INTO quarantine (load_id, location, reason, raw, raw_amount, currency) VALUES (?, ?, ?, ?, ?, ?)");
            for r in rows {
                sqlx::query(sqlx::AssertSqlSafe(sql.as_str()))
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
            // Whatever still streams the load's lines ends (and commits) first: a load commits
            // with every line it staged, whether or not `lines_staged` was called.
            self.finish_staging(load).await?;
            let mut tx = begin_write(&self.pool).await?;
            let (state, source_id, scope, key): (String, i64, String, String) =
                sqlx::query_as(q("SELECT state, source_id, scope, delivery_key FROM loads WHERE id = ?{FOR_UPDATE}"))
                    .bind(load)
                    .fetch_one(&mut *tx)
                    .await?;
            if state != LoadState::Staging.as_str() {
                return Err(LedgerError::State(format!(
                    "load {load} is {state}, not staging: it was swept as stale or failed; run the import again"
                )));
            }
            scope_lock(&mut tx, source_id, &scope).await?;
            let key = match &sm.delivery_key {
                Some(k) => {
                    sqlx::query(q("UPDATE loads SET delivery_key = ? WHERE id = ?"))
                        .bind(k)
                        .bind(load)
                        .execute(&mut *tx)
                        .await?;
                    k.clone()
                }
                None => key,
            };
            let cur: Option<(i64, String)> = sqlx::query_as(q(
                "SELECT id, delivery_key FROM loads WHERE source_id = ? AND scope = ? AND state = 'current'{FOR_UPDATE}",
            ))
            .bind(source_id)
            .bind(&scope)
            .fetch_optional(&mut *tx)
            .await?;
            let old = match crate::load_sql::commit_decision(cur.as_ref().map(|(id, k)| (*id, k.as_str())), &key) {
                crate::load_sql::CommitDecision::Duplicate { existing } => {
                    sqlx::query(q("UPDATE loads SET state = 'failed', finished_at = {NOW}, error = ? WHERE id = ?"))
                        .bind(format!("the same delivery was committed concurrently as load {existing}"))
                        .bind(load)
                        .execute(&mut *tx)
                        .await?;
                    delete_load_rows(&mut tx, load).await?;
                    tx.commit().await?;
                    return Ok(CommitOutcome::Duplicate { existing });
                }
                crate::load_sql::CommitDecision::Supersede { old } => old,
            };
            if let Some(old) = old {
                sqlx::query(q(
                    "UPDATE loads SET state = 'superseded', superseded_by = ?, superseded_at = {NOW} WHERE id = ?",
                ))
                .bind(load)
                .bind(old)
                .execute(&mut *tx)
                .await?;
                sqlx::query(q("DELETE FROM rollups WHERE load_id = ?")).bind(old).execute(&mut *tx).await?;
            }
            for r in &sm.rollups {
                insert_rollup(&mut tx, load, r).await?;
            }
            sqlx::query(q(
                "UPDATE loads SET state = 'current', finished_at = {NOW}, heartbeat_at = {NOW}, row_count = ?, \
                 quarantined_count = ?, rounded_count = ?, totals = ?, quarantined_totals = ?, checksum = ? WHERE id = ?",
            ))
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
                sqlx::query(q(
                    "INSERT INTO load_periods (load_id, period, row_count, totals, invoice_ids, all_invoiced, data_end, \
                     day_totals) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                ))
                .bind(load)
                .bind(p)
                .bind(to_i64(c.rows))
                .bind(c.totals.to_json())
                .bind(set_json(&c.invoice_ids))
                .bind(c.all_invoiced)
                .bind(c.data_end.map(costledger_core::format_ts))
                .bind(c.days.to_json())
                .execute(&mut *tx)
                .await?;
            }
            let mut affected: BTreeSet<String> = sm.periods.keys().cloned().collect();
            if let Some(old) = old {
                let olds: Vec<String> = sqlx::query_scalar(q("SELECT period FROM load_periods WHERE load_id = ?"))
                    .bind(old)
                    .fetch_all(&mut *tx)
                    .await?;
                affected.extend(olds);
            }
            for p in affected {
                let parts: Vec<(String, Option<String>, bool)> = sqlx::query_as(q(
                    "SELECT lp.totals, lp.invoice_ids, lp.all_invoiced FROM load_periods lp JOIN loads l ON l.id = lp.load_id \
                     WHERE l.source_id = ? AND l.state = 'current' AND lp.period = ?",
                ))
                .bind(source_id)
                .bind(&p)
                .fetch_all(&mut *tx)
                .await?;
                let merged = merge_parts(&parts)?;
                let prev: Option<(String, Option<String>)> = sqlx::query_as(q(
                    "SELECT state, totals FROM billing_periods WHERE source_id = ? AND period = ?{FOR_UPDATE}",
                ))
                .bind(source_id)
                .bind(&p)
                .fetch_optional(&mut *tx)
                .await?;
                let prev_totals = prev.as_ref().map(|(_, t)| parse_totals(t.clone())).transpose()?;
                let prev_state = prev.as_ref().map(|(s, _)| PeriodState::parse(s)).transpose()?;
                let prev_ref = prev_state.zip(prev_totals.as_ref());
                let state = next_period_state(prev_ref, &merged.totals, sm.final_periods || merged.all_invoiced);
                sqlx::query(q(
                    "INSERT INTO billing_periods (source_id, period, state, invoice_ids, current_load_id, totals, updated_at) \
                     VALUES (?, ?, ?, ?, ?, ?, {NOW}) ON CONFLICT (source_id, period) DO UPDATE SET state = excluded.state, \
                     invoice_ids = excluded.invoice_ids, current_load_id = excluded.current_load_id, \
                     totals = excluded.totals, updated_at = excluded.updated_at",
                ))
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
            after_commit(&self.pool).await;
            Ok(CommitOutcome::Current { superseded: old })
        }

        async fn fail_load(&self, load: LoadId, error: &str) -> Result<bool> {
            self.end_staging(load);
            let mut tx = begin_write(&self.pool).await?;
            let n = sqlx::query(q(
                "UPDATE loads SET state = 'failed', finished_at = {NOW}, error = ? WHERE id = ? AND state = 'staging'",
            ))
            .bind(error)
            .bind(load)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            if n > 0 {
                delete_load_rows(&mut tx, load).await?;
            }
            tx.commit().await?;
            Ok(n > 0)
        }

        async fn last_load(&self, source_id: i64, scope: &str) -> Result<Option<LoadRow>> {
            let sql = format!(
                "{LOAD_SELECT} WHERE l.source_id = ? AND l.scope = ? AND l.state <> 'staging' ORDER BY l.id DESC LIMIT 1"
            );
            let row = sqlx::query(q(&sql)).bind(source_id).bind(scope).fetch_optional(&self.pool).await?;
            row.as_ref().map(load_row).transpose()
        }

        async fn record_failure(&self, load: LoadId, error: &str, fingerprint: &str) -> Result<Option<LoadId>> {
            self.end_staging(load);
            let mut tx = begin_write(&self.pool).await?;
            let n = sqlx::query(q(
                "UPDATE loads SET state = 'failed', finished_at = {NOW}, error = ?, delivery_key = ? \
                 WHERE id = ? AND state = 'staging'",
            ))
            .bind(error)
            .bind(fingerprint)
            .bind(load)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            let mut merged = None;
            if n > 0 {
                delete_load_rows(&mut tx, load).await?;
                // The scope's previous load, when it failed the same way on the same input.
                let prev: Option<(i64, String, Option<String>, String)> = sqlx::query_as(q(
                    "SELECT p.id, p.state, p.error, p.delivery_key FROM loads p JOIN loads l ON l.source_id = p.source_id \
                     AND l.scope = p.scope WHERE l.id = ? AND p.id <> l.id AND p.state <> 'staging' \
                     ORDER BY p.id DESC LIMIT 1{FOR_UPDATE_OF_P}",
                ))
                .bind(load)
                .fetch_optional(&mut *tx)
                .await?;
                let prev = prev.map(|(id, state, error, delivery_key)| crate::load_sql::PreviousLoad {
                    id,
                    failed: state == LoadState::Failed.as_str(),
                    error,
                    delivery_key,
                });
                if let Some(id) = crate::load_sql::merge_failure_into(prev.as_ref(), error, fingerprint) {
                    sqlx::query(q("UPDATE loads SET attempts = attempts + 1, finished_at = {NOW} WHERE id = ?"))
                        .bind(id)
                        .execute(&mut *tx)
                        .await?;
                    sqlx::query(q("DELETE FROM loads WHERE id = ?")).bind(load).execute(&mut *tx).await?;
                    merged = Some(id);
                }
            }
            tx.commit().await?;
            Ok(merged)
        }

        async fn discard_load(&self, load: LoadId) -> Result<()> {
            self.end_staging(load);
            let mut tx = begin_write(&self.pool).await?;
            let staging: Option<i64> =
                sqlx::query_scalar(q("SELECT id FROM loads WHERE id = ? AND state = 'staging'{FOR_UPDATE}"))
                    .bind(load)
                    .fetch_optional(&mut *tx)
                    .await?;
            if staging.is_some() {
                delete_load_rows(&mut tx, load).await?;
                sqlx::query(q("DELETE FROM loads WHERE id = ?")).bind(load).execute(&mut *tx).await?;
            }
            tx.commit().await?;
            Ok(())
        }

        async fn gc_superseded(&self, before: DateTime<Utc>) -> Result<u64> {
            let sql = format!(
                "SELECT l.id FROM loads l WHERE l.state = 'superseded' AND l.superseded_at < ? \
                 AND EXISTS (SELECT 1 FROM charges c WHERE {CHARGES_OF_L})"
            );
            let ids: Vec<i64> = sqlx::query_scalar(q(&sql)).bind(ts_param(before)).fetch_all(&self.pool).await?;
            for id in &ids {
                let mut tx = begin_write(&self.pool).await?;
                delete_load_rows(&mut tx, *id).await?;
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
                sql = format!("SELECT * FROM ({sql} DESC LIMIT {n}) AS t ORDER BY 1");
            }
            let mut query = sqlx::query(q(&sql));
            for b in binds {
                query = query.bind(b);
            }
            query.fetch_all(&self.pool).await?.iter().map(load_row).collect()
        }

        async fn quarantine_rows(&self, load: LoadId) -> Result<Vec<QuarantineRow>> {
            let rows: Vec<(i64, String, String, String, Option<String>, Option<String>)> = sqlx::query_as(q(
                "SELECT load_id, location, reason, raw, raw_amount, currency FROM quarantine WHERE load_id = ? ORDER BY id",
            ))
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
            let rows: Vec<(String, String, String, Option<String>, Option<i64>, Option<String>)> = sqlx::query_as(q(
                "SELECT s.name, p.period, p.state, p.invoice_ids, p.current_load_id, p.totals FROM billing_periods p \
                 JOIN sources s ON s.id = p.source_id ORDER BY s.name{C}, p.period{C}",
            ))
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

        async fn start_run(&self, job: &str, source: Option<&str>) -> Result<i64> {
            Ok(sqlx::query_scalar(q(
                "INSERT INTO runs (job, source, started_at, status, owner) VALUES (?, ?, {NOW}, 'running', ?) RETURNING id",
            ))
            .bind(job)
            .bind(source)
            .bind(crate::process_owner())
            .fetch_one(&self.pool)
            .await?)
        }

        async fn claim_run(&self, job: &str, source: Option<&str>, tick: DateTime<Utc>) -> Result<Option<i64>> {
            Ok(sqlx::query_scalar(q(
                "INSERT INTO runs (job, source, started_at, status, tick, owner) VALUES (?, ?, {NOW}, 'running', ?, ?) \
                 ON CONFLICT DO NOTHING RETURNING id",
            ))
            .bind(job)
            .bind(source)
            .bind(costledger_core::format_ts(tick))
            .bind(crate::process_owner())
            .fetch_optional(&self.pool)
            .await?)
        }

        async fn finish_run(&self, run: i64, o: &RunOutcome) -> Result<()> {
            sqlx::query(q(
                "UPDATE runs SET finished_at = {NOW}, status = ?, attempts = ?, error = ?, rows = ?, loads_created = ?, \
                 loads_skipped = ? WHERE id = ?",
            ))
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
            sqlx::query(q("SELECT id, owner, started_at FROM runs WHERE status = 'running' ORDER BY id"))
                .fetch_all(&self.pool)
                .await?
                .iter()
                .map(|r| Ok((r.try_get(0)?, r.try_get(1)?, row_ts(r, 2)?)))
                .collect()
        }

        async fn abandon_run(&self, run: i64, reason: &str) -> Result<bool> {
            let n = sqlx::query(q(
                "UPDATE runs SET status = 'abandoned', finished_at = {NOW}, error = ? WHERE id = ? AND status = 'running'",
            ))
            .bind(reason)
            .bind(run)
            .execute(&self.pool)
            .await?
            .rows_affected();
            Ok(n > 0)
        }

        fn rollups<'a>(
            &'a self,
            kind: RollupKind,
            from: Option<String>,
            to: Option<String>,
        ) -> BoxStream<'a, Result<RollupRecord>> {
            let mut sql = format!(
                "SELECT s.name, {ROLLUP_COLUMNS_R} FROM rollups r JOIN loads l ON l.id = r.load_id \
                 JOIN sources s ON s.id = l.source_id WHERE l.state = 'current' AND s.role = 'primary' AND r.kind = {}",
                kind.code()
            );
            let mut binds = Vec::new();
            if let Some(f) = from {
                sql.push_str(" AND r.day >= ?");
                binds.push(f);
            }
            if let Some(t) = to {
                sql.push_str(" AND r.day < ?");
                binds.push(t);
            }
            let pool = &self.pool;
            Box::pin(
                futures::stream::once(async move {
                    let mut query = sqlx::query(q(&sql));
                    for b in binds {
                        query = query.bind(b);
                    }
                    query.fetch(pool).map(|r| r.map_err(LedgerError::from).and_then(|row| rollup_record(&row)))
                })
                .flatten(),
            )
        }

        async fn loads_without_rollup(&self, kind: RollupKind, spec: &str) -> Result<Vec<LoadId>> {
            let c = kind.spec_column();
            Ok(sqlx::query_scalar(q(&format!(
                "SELECT id FROM loads WHERE state = 'current' AND ({c} IS NULL OR {c} <> ?) ORDER BY id"
            )))
            .bind(spec)
            .fetch_all(&self.pool)
            .await?)
        }

        async fn append_rollup(&self, load: LoadId, rows: &[RollupRow]) -> Result<()> {
            let mut tx = begin_write(&self.pool).await?;
            insert_rollup_rows(&mut tx, load, rows).await?;
            tx.commit().await?;
            Ok(())
        }

        async fn clear_rollup(&self, load: LoadId, kind: RollupKind) -> Result<()> {
            let mut tx = begin_write(&self.pool).await?;
            sqlx::query(q("DELETE FROM rollups WHERE load_id = ? AND kind = ?"))
                .bind(load)
                .bind(kind.code())
                .execute(&mut *tx)
                .await?;
            sqlx::query(q(&format!("UPDATE loads SET {} = NULL WHERE id = ?", kind.spec_column())))
                .bind(load)
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
            Ok(())
        }

        async fn complete_rollup(&self, load: LoadId, rollup: &Rollup) -> Result<bool> {
            let mut tx = begin_write(&self.pool).await?;
            let current: Option<i64> =
                sqlx::query_scalar(q("SELECT id FROM loads WHERE id = ? AND state = 'current'{FOR_UPDATE}"))
                    .bind(load)
                    .fetch_optional(&mut *tx)
                    .await?;
            if current.is_none() {
                return Ok(false);
            }
            insert_rollup(&mut tx, load, rollup).await?;
            tx.commit().await?;
            Ok(true)
        }

        async fn runs(&self, limit: u32) -> Result<Vec<RunRow>> {
            let sql = format!(
                "SELECT id, job, source, started_at, finished_at, status, CAST(attempts AS BIGINT), error, rows, \
                 loads_created, loads_skipped FROM runs ORDER BY id DESC LIMIT {limit}"
            );
            sqlx::query(q(&sql))
                .fetch_all(&self.pool)
                .await?
                .iter()
                .map(|r| {
                    Ok(RunRow {
                        id: r.try_get(0)?,
                        job: r.try_get(1)?,
                        source: r.try_get(2)?,
                        started_at: row_ts(r, 3)?,
                        finished_at: row_opt_ts(r, 4)?,
                        outcome: RunOutcome {
                            status: crate::run_status(r.try_get(5)?)?,
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
    };
}

pub(crate) use ledger_store_impl;

/// Rollup rows written as multi-row INSERTs of [`ROLLUP_CHUNK`] rows (SQLite; PostgreSQL writes
/// them by binary COPY).
macro_rules! rollup_inserts {
    ($db:ty) => {
        /// Rollup rows per multi-row INSERT (28 binds a row). SQLite compiles each statement into
        /// a program that grows with its binds and keeps it, prepared, per connection: a
        /// 1,000-row INSERT held ~15 MB, which came on top of the import's peak RSS when the
        /// load's last rollup rows were written; 100 rows hold a tenth of it.
        const ROLLUP_CHUNK: usize = 100;

        async fn insert_rollup_rows(
            tx: &mut sqlx::Transaction<'_, $db>,
            load: LoadId,
            rows: &[crate::RollupRow],
        ) -> Result<()> {
            let full = ROLLUP_CHUNK;
            for chunk in rows.chunks(full) {
                let mut b: sqlx::QueryBuilder<$db> = sqlx::QueryBuilder::new(format!(
                    "INSERT INTO rollups (load_id, {}) ",
                    crate::load_sql::ROLLUP_COLUMNS
                ));
                b.push_values(chunk, |mut v, x| {
                    let opt = |s: &Option<costledger_core::ExactSum>| s.map(|a| a.to_string());
                    v.push_bind(load)
                        .push_bind(x.day.clone())
                        .push_bind(x.billing_period.clone())
                        .push_bind(x.provider_name.clone())
                        .push_bind(x.billing_account_id.clone())
                        .push_bind(x.sub_account_id.clone())
                        .push_bind(x.service_name.clone())
                        .push_bind(x.service_category.clone())
                        .push_bind(x.region_id.clone())
                        .push_bind(x.charge_category.clone())
                        .push_bind(x.charge_class.clone())
                        .push_bind(x.pricing_unit.clone())
                        .push_bind(x.billing_currency.clone())
                        .push_bind(x.tags.clone())
                        .push_bind(to_i64(x.lines))
                        .push_bind(x.billed_cost.to_string())
                        .push_bind(opt(&x.effective_cost))
                        .push_bind(opt(&x.list_cost))
                        .push_bind(opt(&x.contracted_cost))
                        .push_bind(opt(&x.pricing_quantity))
                        .push_bind(opt(&x.consumed_quantity))
                        .push_bind(x.kind.code())
                        .push_bind(x.sku_id.clone())
                        .push_bind(x.pricing_category.clone())
                        .push_bind(x.commitment_discount_id.clone())
                        .push_bind(x.commitment_discount_type.clone())
                        .push_bind(x.commitment_discount_category.clone())
                        .push_bind(x.commitment_discount_status.clone());
                });
                // A chunk of the full size is prepared once and kept; a shorter last chunk (any
                // length) is not kept, or each length would hold a prepared statement of its own.
                b.build().persistent(chunk.len() == full).execute(&mut **tx).await?;
            }
            Ok(())
        }
    };
}

pub(crate) use rollup_inserts;

/// Module-level helpers the methods share (expanded once per backend, beside its hooks).
macro_rules! load_helpers {
    ($db:ty) => {
        /// This backend's SQL text for `sql` (see [`crate::load_sql::Dialect::render`]).
        fn q(sql: &str) -> sqlx::AssertSqlSafe<String> {
            sqlx::AssertSqlSafe(D.render(sql))
        }

        /// Keep a staging load alive; fails when it was swept meanwhile.
        async fn heartbeat(tx: &mut sqlx::Transaction<'_, $db>, load: LoadId) -> Result<()> {
            let n = sqlx::query(q("UPDATE loads SET heartbeat_at = {NOW} WHERE id = ? AND state = 'staging'"))
                .bind(load)
                .execute(&mut **tx)
                .await?
                .rows_affected();
            if n == 0 {
                return Err(not_staging(load));
            }
            Ok(())
        }

        /// Add the last rows of `load`'s rollup (earlier chunks may be there already: rollup rows
        /// are additive) and record the spec it was built with.
        async fn insert_rollup(tx: &mut sqlx::Transaction<'_, $db>, load: LoadId, r: &Rollup) -> Result<()> {
            insert_rollup_rows(tx, load, &r.rows).await?;
            sqlx::query(q(&format!("UPDATE loads SET {} = ? WHERE id = ?", r.kind.spec_column())))
                .bind(&r.spec)
                .bind(load)
                .execute(&mut **tx)
                .await?;
            Ok(())
        }

        const ROLLUP_COLUMNS_R: &str = "r.day, r.billing_period, r.provider_name, r.billing_account_id, r.sub_account_id, \
             r.service_name, r.service_category, r.region_id, r.charge_category, r.charge_class, r.pricing_unit, \
             r.billing_currency, r.tags, r.lines, r.billed_cost, r.effective_cost, r.list_cost, r.contracted_cost, \
             r.pricing_quantity, r.consumed_quantity, CAST(r.kind AS BIGINT), r.sku_id, r.pricing_category, \
             r.commitment_discount_id, r.commitment_discount_type, r.commitment_discount_category, \
             r.commitment_discount_status";

        fn rollup_record<R: sqlx::Row>(r: &R) -> Result<RollupRecord>
        where
            usize: sqlx::ColumnIndex<R>,
            for<'r> String: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
            for<'r> Option<String>: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
            for<'r> i64: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
        {
            let sum = |t: String| -> Result<costledger_core::ExactSum> {
                t.parse().map_err(|e| LedgerError::Corrupt(format!("rollup amount {t}: {e}")))
            };
            let opt = |i: usize| -> Result<Option<costledger_core::ExactSum>> { r.try_get::<Option<String>, _>(i)?.map(sum).transpose() };
            Ok(RollupRecord {
                source: r.try_get(0)?,
                row: RollupRow {
                    day: r.try_get(1)?,
                    billing_period: r.try_get(2)?,
                    provider_name: r.try_get(3)?,
                    billing_account_id: r.try_get(4)?,
                    sub_account_id: r.try_get(5)?,
                    service_name: r.try_get(6)?,
                    service_category: r.try_get(7)?,
                    region_id: r.try_get(8)?,
                    charge_category: r.try_get(9)?,
                    charge_class: r.try_get(10)?,
                    pricing_unit: r.try_get(11)?,
                    billing_currency: r.try_get(12)?,
                    tags: r.try_get(13)?,
                    lines: to_u64(r.try_get(14)?),
                    billed_cost: sum(r.try_get(15)?)?,
                    effective_cost: opt(16)?,
                    list_cost: opt(17)?,
                    contracted_cost: opt(18)?,
                    pricing_quantity: opt(19)?,
                    consumed_quantity: opt(20)?,
                    kind: match r.try_get::<i64, _>(21)? {
                        0 => RollupKind::Daily,
                        1 => RollupKind::Pricing,
                        k => return Err(LedgerError::Corrupt(format!("rollup row of unknown kind {k}"))),
                    },
                    sku_id: r.try_get(22)?,
                    pricing_category: r.try_get(23)?,
                    commitment_discount_id: r.try_get(24)?,
                    commitment_discount_type: r.try_get(25)?,
                    commitment_discount_category: r.try_get(26)?,
                    commitment_discount_status: r.try_get(27)?,
                },
            })
        }

        /// Delete a load's charges and quarantined rows (the load row itself stays).
        async fn delete_load_rows(tx: &mut sqlx::Transaction<'_, $db>, load: LoadId) -> Result<()> {
            sqlx::query(q(DELETE_LOAD_CHARGES)).bind(load).execute(&mut **tx).await?;
            sqlx::query(q("DELETE FROM quarantine WHERE load_id = ?")).bind(load).execute(&mut **tx).await?;
            sqlx::query(q("DELETE FROM rollups WHERE load_id = ?")).bind(load).execute(&mut **tx).await?;
            Ok(())
        }
    };
}

pub(crate) use load_helpers;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn postgres_numbers_placeholders_and_keeps_numbered_ones() {
        let d = Dialect::POSTGRES;
        assert_eq!(d.render("a = ? AND b = ? AND c = {NOW}"), "a = $1 AND b = $2 AND c = now()");
        assert_eq!(d.render("id BETWEEN ?1 * 2 AND ?1 * 2 + 1"), "id BETWEEN $1 * 2 AND $1 * 2 + 1");
        assert_eq!(d.render("x = ?{FOR_UPDATE}"), "x = $1 FOR UPDATE");
        assert_eq!(d.render("ORDER BY s.name{C}"), "ORDER BY s.name COLLATE \"C\"");
    }

    #[test]
    fn sqlite_keeps_question_marks_and_has_no_row_locks() {
        let d = Dialect::SQLITE;
        assert_eq!(d.render("x = ?{FOR_UPDATE} LIMIT 1{FOR_UPDATE_OF_P}"), "x = ? LIMIT 1");
        assert_eq!(d.render("t = {NOW}"), "t = strftime('%Y-%m-%dT%H:%M:%fZ', 'now')");
    }

    #[test]
    fn a_commit_of_the_current_delivery_is_a_duplicate() {
        assert_eq!(commit_decision(Some((7, "k")), "k"), CommitDecision::Duplicate { existing: 7 });
    }

    #[test]
    fn a_commit_of_another_delivery_supersedes_the_current_load() {
        assert_eq!(commit_decision(Some((7, "k")), "k2"), CommitDecision::Supersede { old: Some(7) });
        assert_eq!(commit_decision(None, "k"), CommitDecision::Supersede { old: None });
    }

    fn prev(failed: bool, error: &str, key: &str) -> PreviousLoad {
        PreviousLoad { id: 3, failed, error: Some(error.into()), delivery_key: key.into() }
    }

    #[test]
    fn a_repeated_failure_merges_only_with_the_same_error_on_the_same_input() {
        assert_eq!(merge_failure_into(Some(&prev(true, "bad", "f")), "bad", "f"), Some(3));
        assert_eq!(merge_failure_into(Some(&prev(true, "bad", "f")), "worse", "f"), None);
        assert_eq!(merge_failure_into(Some(&prev(true, "bad", "f")), "bad", "g"), None);
        assert_eq!(merge_failure_into(Some(&prev(false, "bad", "f")), "bad", "f"), None);
        assert_eq!(merge_failure_into(None, "bad", "f"), None);
    }
}
