//! The reconciler's tables (migration 0002) hold only TEXT and integers on both backends, so
//! their SQL is the same text on SQLite and PostgreSQL except for placeholders. This macro
//! writes it once; each backend instantiates it with its pool type and a placeholder rewriter
//! (`?` stays `?` on SQLite and becomes `$1, $2, …` on PostgreSQL).

/// Rewrite `?` placeholders to PostgreSQL's `$n` (our SQL has no `?` inside literals).
pub(crate) fn dollar(sql: &str) -> String {
    let mut out = String::with_capacity(sql.len() + 16);
    let mut n = 0;
    for c in sql.chars() {
        if c == '?' {
            n += 1;
            out.push('$');
            out.push_str(&n.to_string());
        } else {
            out.push(c);
        }
    }
    out
}

pub(crate) fn same(sql: &str) -> String {
    sql.to_string()
}

/// Rows per multi-row INSERT (15 binds each: well under both backends' bind limits).
pub(crate) const INSERT_CHUNK: usize = 1_000;

macro_rules! reconcile_sql {
    ($db:ty, $pool:ty, $ph:path, $charges_of_l:expr) => {
        use super::reconcile_sql::INSERT_CHUNK;
        use super::{AllocationRow, BusinessMetric, Finding, FxRate, InvoiceRow, ReconcileState};
        use sqlx::QueryBuilder;

        fn q(sql: &str) -> sqlx::AssertSqlSafe<String> {
            sqlx::AssertSqlSafe($ph(sql))
        }

        fn now_text() -> String {
            costledger_core::format_ts(chrono::Utc::now())
        }

        fn sum_text(s: Option<String>) -> Result<Option<costledger_core::ExactSum>> {
            s.map(|t| t.parse().map_err(|e| LedgerError::Corrupt(format!("amount {t}: {e}")))).transpose()
        }

        fn dec_text(t: String) -> Result<rust_decimal::Decimal> {
            t.parse().map_err(|e| LedgerError::Corrupt(format!("amount {t}: {e}")))
        }

        pub(crate) async fn rec_replace_allocations(
            pool: &$pool,
            state: &ReconcileState,
            rows: &[AllocationRow],
        ) -> Result<()> {
            let mut tx = pool.begin().await?;
            sqlx::query(q("DELETE FROM allocations WHERE period = ?")).bind(&state.period).execute(&mut *tx).await?;
            for chunk in rows.chunks(INSERT_CHUNK) {
                let mut b: QueryBuilder<$db> = QueryBuilder::new(
                    "INSERT INTO allocations (period, week, provider_name, billing_account_id, sub_account_id, \
                     service_name, charge_category, currency, owner, basis, reason, resource_id, coverage, rows, amount) ",
                );
                b.push_values(chunk, |mut v, r| {
                    v.push_bind(r.period.clone())
                        .push_bind(r.week.clone())
                        .push_bind(r.provider_name.clone())
                        .push_bind(r.billing_account_id.clone())
                        .push_bind(r.sub_account_id.clone())
                        .push_bind(r.service_name.clone())
                        .push_bind(r.charge_category.clone())
                        .push_bind(r.currency.clone())
                        .push_bind(r.owner.clone())
                        .push_bind(r.basis.clone())
                        .push_bind(r.reason.clone())
                        .push_bind(r.resource_id.clone())
                        .push_bind(r.coverage.clone())
                        .push_bind(to_i64(r.rows))
                        .push_bind(r.amount.to_string());
                });
                b.build().execute(&mut *tx).await?;
            }
            sqlx::query(q("DELETE FROM reconcile_state WHERE period = ?"))
                .bind(&state.period)
                .execute(&mut *tx)
                .await?;
            sqlx::query(q(
                "INSERT INTO reconcile_state (period, fingerprint, data_start, data_end, updated_at) VALUES (?, ?, ?, ?, ?)",
            ))
            .bind(&state.period)
            .bind(&state.fingerprint)
            .bind(&state.data_start)
            .bind(&state.data_end)
            .bind(now_text())
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
            Ok(())
        }

        pub(crate) async fn rec_allocations(pool: &$pool, weeks: Option<(&str, &str)>) -> Result<Vec<AllocationRow>> {
            let mut sql = "SELECT period, week, provider_name, billing_account_id, sub_account_id, service_name, \
                 charge_category, currency, owner, basis, reason, resource_id, coverage, rows, amount \
                 FROM allocations"
                .to_string();
            if weeks.is_some() {
                sql.push_str(" WHERE week >= ? AND week <= ?");
            }
            let mut query = sqlx::query(q(&sql));
            if let Some((a, b)) = weeks {
                query = query.bind(a.to_string()).bind(b.to_string());
            }
            let mut out = query
                .fetch_all(pool)
                .await?
                .iter()
                .map(|r| {
                    Ok(AllocationRow {
                        period: r.try_get(0)?,
                        week: r.try_get(1)?,
                        provider_name: r.try_get(2)?,
                        billing_account_id: r.try_get(3)?,
                        sub_account_id: r.try_get(4)?,
                        service_name: r.try_get(5)?,
                        charge_category: r.try_get(6)?,
                        currency: r.try_get(7)?,
                        owner: r.try_get(8)?,
                        basis: r.try_get(9)?,
                        reason: r.try_get(10)?,
                        resource_id: r.try_get(11)?,
                        coverage: r.try_get(12)?,
                        rows: to_u64(r.try_get(13)?),
                        amount: sum_text(r.try_get(14)?)?.unwrap_or_default(),
                    })
                })
                .collect::<Result<Vec<_>>>()?;
            out.sort();
            Ok(out)
        }

        pub(crate) async fn rec_states(pool: &$pool) -> Result<Vec<ReconcileState>> {
            sqlx::query(q("SELECT period, fingerprint, data_start, data_end FROM reconcile_state ORDER BY period"))
                .fetch_all(pool)
                .await?
                .iter()
                .map(|r| {
                    Ok(ReconcileState {
                        period: r.try_get(0)?,
                        fingerprint: r.try_get(1)?,
                        data_start: r.try_get(2)?,
                        data_end: r.try_get(3)?,
                    })
                })
                .collect()
        }

        pub(crate) async fn rec_replace_findings(pool: &$pool, periods: &[String], findings: &[Finding]) -> Result<()> {
            let mut tx = pool.begin().await?;
            for p in periods {
                sqlx::query(q("DELETE FROM findings WHERE period = ?")).bind(p).execute(&mut *tx).await?;
            }
            for f in findings {
                sqlx::query(q("INSERT INTO findings (check_name, period, billing_account_id, currency, amount, \
                     subject, message, evidence) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"))
                .bind(f.check.as_str())
                .bind(&f.period)
                .bind(&f.billing_account_id)
                .bind(&f.currency)
                .bind(f.amount.map(|a| a.to_string()))
                .bind(&f.subject)
                .bind(&f.message)
                .bind(&f.evidence)
                .execute(&mut *tx)
                .await?;
            }
            tx.commit().await?;
            Ok(())
        }

        pub(crate) async fn rec_findings(pool: &$pool, period: Option<&str>) -> Result<Vec<Finding>> {
            let mut sql = "SELECT check_name, period, billing_account_id, currency, amount, subject, message, evidence \
                 FROM findings"
                .to_string();
            if period.is_some() {
                sql.push_str(" WHERE period = ?");
            }
            let mut query = sqlx::query(q(&sql));
            if let Some(p) = period {
                query = query.bind(p.to_string());
            }
            let mut out = query
                .fetch_all(pool)
                .await?
                .iter()
                .map(|r| {
                    Ok(Finding {
                        check: CheckKind::parse(&r.try_get::<String, _>(0)?)?,
                        period: r.try_get(1)?,
                        billing_account_id: r.try_get(2)?,
                        currency: r.try_get(3)?,
                        amount: sum_text(r.try_get(4)?)?,
                        subject: r.try_get(5)?,
                        message: r.try_get(6)?,
                        evidence: r.try_get(7)?,
                    })
                })
                .collect::<Result<Vec<_>>>()?;
            out.sort();
            Ok(out)
        }

        pub(crate) async fn rec_upsert_invoices(pool: &$pool, rows: &[InvoiceRow]) -> Result<u64> {
            let mut tx = pool.begin().await?;
            for r in rows {
                sqlx::query(q("DELETE FROM invoices WHERE invoice_id = ? AND billing_account_id = ? AND period = ? \
                     AND currency = ?"))
                .bind(&r.invoice_id)
                .bind(&r.billing_account_id)
                .bind(&r.period)
                .bind(&r.currency)
                .execute(&mut *tx)
                .await?;
                sqlx::query(q("INSERT INTO invoices (invoice_id, billing_account_id, period, currency, amount, \
                     provenance) VALUES (?, ?, ?, ?, ?, ?)"))
                .bind(&r.invoice_id)
                .bind(&r.billing_account_id)
                .bind(&r.period)
                .bind(&r.currency)
                // As finance wrote it (`4227.60` keeps its two places): the invoice check
                // compares at the invoice's own precision.
                .bind(r.amount.to_string())
                .bind(&r.provenance)
                .execute(&mut *tx)
                .await?;
            }
            tx.commit().await?;
            Ok(rows.len() as u64)
        }

        pub(crate) async fn rec_invoices(pool: &$pool) -> Result<Vec<InvoiceRow>> {
            sqlx::query(q("SELECT invoice_id, billing_account_id, period, currency, amount, provenance FROM invoices \
                 ORDER BY period, billing_account_id, invoice_id, currency"))
            .fetch_all(pool)
            .await?
            .iter()
            .map(|r| {
                Ok(InvoiceRow {
                    invoice_id: r.try_get(0)?,
                    billing_account_id: r.try_get(1)?,
                    period: r.try_get(2)?,
                    currency: r.try_get(3)?,
                    amount: dec_text(r.try_get(4)?)?,
                    provenance: r.try_get(5)?,
                })
            })
            .collect()
        }

        pub(crate) async fn rec_upsert_fx(pool: &$pool, rows: &[FxRate]) -> Result<u64> {
            let mut tx = pool.begin().await?;
            for r in rows {
                sqlx::query(q("DELETE FROM fx_rates WHERE month = ? AND from_currency = ? AND to_currency = ?"))
                    .bind(&r.month)
                    .bind(&r.from)
                    .bind(&r.to)
                    .execute(&mut *tx)
                    .await?;
                sqlx::query(q("INSERT INTO fx_rates (month, from_currency, to_currency, rate, provenance) \
                     VALUES (?, ?, ?, ?, ?)"))
                .bind(&r.month)
                .bind(&r.from)
                .bind(&r.to)
                .bind(costledger_core::canonical(r.rate))
                .bind(&r.provenance)
                .execute(&mut *tx)
                .await?;
            }
            tx.commit().await?;
            Ok(rows.len() as u64)
        }

        pub(crate) async fn rec_fx(pool: &$pool) -> Result<Vec<FxRate>> {
            sqlx::query(q("SELECT month, from_currency, to_currency, rate, provenance FROM fx_rates \
                 ORDER BY month, from_currency, to_currency"))
            .fetch_all(pool)
            .await?
            .iter()
            .map(|r| {
                Ok(FxRate {
                    month: r.try_get(0)?,
                    from: r.try_get(1)?,
                    to: r.try_get(2)?,
                    rate: dec_text(r.try_get(3)?)?,
                    provenance: r.try_get(4)?,
                })
            })
            .collect()
        }

        pub(crate) async fn rec_upsert_metrics(pool: &$pool, rows: &[BusinessMetric]) -> Result<u64> {
            let mut tx = pool.begin().await?;
            for r in rows {
                let dims = serde_json::to_string(&r.dimensions).map_err(|e| LedgerError::Corrupt(e.to_string()))?;
                let owner = r.owner.clone().unwrap_or_default();
                sqlx::query(q("DELETE FROM business_metrics WHERE name = ? AND day = ? AND owner = ? AND dimensions = ?"))
                    .bind(&r.name)
                    .bind(&r.day)
                    .bind(&owner)
                    .bind(&dims)
                    .execute(&mut *tx)
                    .await?;
                sqlx::query(q("INSERT INTO business_metrics (name, day, owner, dimensions, value, provenance) \
                     VALUES (?, ?, ?, ?, ?, ?)"))
                .bind(&r.name)
                .bind(&r.day)
                .bind(&owner)
                .bind(&dims)
                .bind(costledger_core::canonical(r.value))
                .bind(&r.provenance)
                .execute(&mut *tx)
                .await?;
            }
            tx.commit().await?;
            Ok(rows.len() as u64)
        }

        pub(crate) async fn rec_metrics(pool: &$pool, name: &str) -> Result<Vec<BusinessMetric>> {
            sqlx::query(q("SELECT name, day, owner, dimensions, value, provenance FROM business_metrics \
                 WHERE name = ? ORDER BY day, owner, dimensions"))
            .bind(name)
            .fetch_all(pool)
            .await?
            .iter()
            .map(|r| {
                let owner: String = r.try_get(2)?;
                let dims: String = r.try_get(3)?;
                Ok(BusinessMetric {
                    name: r.try_get(0)?,
                    day: r.try_get(1)?,
                    owner: (!owner.is_empty()).then_some(owner),
                    dimensions: serde_json::from_str(&dims)
                        .map_err(|e| LedgerError::Corrupt(format!("business_metrics.dimensions '{dims}': {e}")))?,
                    value: dec_text(r.try_get(4)?)?,
                    provenance: r.try_get(5)?,
                })
            })
            .collect()
        }

        pub(crate) async fn rec_metric_names(pool: &$pool) -> Result<Vec<String>> {
            sqlx::query(q("SELECT DISTINCT name FROM business_metrics ORDER BY name"))
                .fetch_all(pool)
                .await?
                .iter()
                .map(|r| Ok(r.try_get(0)?))
                .collect()
        }

        pub(crate) async fn rec_record_week(pool: &$pool, week: &str, totals: &costledger_core::Totals) -> Result<()> {
            let mut tx = pool.begin().await?;
            sqlx::query(q("DELETE FROM reported_weeks WHERE week = ?")).bind(week).execute(&mut *tx).await?;
            sqlx::query(q("INSERT INTO reported_weeks (week, totals) VALUES (?, ?)"))
                .bind(week)
                .bind(totals.to_json())
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
            Ok(())
        }

        pub(crate) async fn rec_reported_weeks(pool: &$pool) -> Result<Vec<(String, costledger_core::Totals)>> {
            sqlx::query(q("SELECT week, totals FROM reported_weeks ORDER BY week"))
                .fetch_all(pool)
                .await?
                .iter()
                .map(|r| Ok((r.try_get(0)?, parse_totals(r.try_get(1)?)?)))
                .collect()
        }

        pub(crate) async fn rec_current_load_ids(pool: &$pool) -> Result<Vec<LoadId>> {
            Ok(sqlx::query_scalar(q("SELECT l.id FROM loads l JOIN sources s ON s.id = l.source_id \
                 WHERE l.state = 'current' AND s.role = 'primary' ORDER BY l.id"))
            .fetch_all(pool)
            .await?)
        }

        pub(crate) async fn rec_period_history(pool: &$pool) -> Result<Vec<super::PeriodLoad>> {
            sqlx::query(q(&format!("SELECT s.name, lp.period, COALESCE(bp.state, 'open'), l.id, l.state, l.delivery_key, \
                 l.superseded_by, lp.row_count, lp.totals, CASE WHEN lp.all_invoiced THEN 1 ELSE 0 END, \
                 CASE WHEN EXISTS (SELECT 1 FROM charges c WHERE {}) THEN 1 ELSE 0 END \
                 FROM load_periods lp JOIN loads l ON l.id = lp.load_id JOIN sources s ON s.id = l.source_id \
                 LEFT JOIN billing_periods bp ON bp.source_id = l.source_id AND bp.period = lp.period \
                 WHERE l.state IN ('current', 'superseded') ORDER BY s.name, lp.period, l.id", $charges_of_l)))
            .fetch_all(pool)
            .await?
            .iter()
            .map(|r| {
                Ok(super::PeriodLoad {
                    source: r.try_get(0)?,
                    period: r.try_get(1)?,
                    period_state: r.try_get(2)?,
                    load_id: r.try_get(3)?,
                    state: LoadState::parse(&r.try_get::<String, _>(4)?)?,
                    delivery_key: r.try_get(5)?,
                    superseded_by: r.try_get(6)?,
                    rows: to_u64(r.try_get(7)?),
                    totals: parse_totals(r.try_get(8)?)?,
                    all_invoiced: r.try_get::<i32, _>(9)? == 1,
                    lines_kept: r.try_get::<i32, _>(10)? == 1,
                })
            })
            .collect()
        }
    };
}

pub(crate) use reconcile_sql;

macro_rules! reconcile_impl {
    ($ty:ty) => {
        #[async_trait]
        impl ReconcileStore for $ty {
            async fn current_load_ids(&self) -> Result<Vec<LoadId>> {
                rec::rec_current_load_ids(&self.pool).await
            }
            async fn period_history(&self) -> Result<Vec<PeriodLoad>> {
                rec::rec_period_history(&self.pool).await
            }
            async fn replace_allocations(&self, state: &ReconcileState, rows: &[AllocationRow]) -> Result<()> {
                rec::rec_replace_allocations(&self.pool, state, rows).await
            }
            async fn allocations(&self, weeks: Option<(&str, &str)>) -> Result<Vec<AllocationRow>> {
                rec::rec_allocations(&self.pool, weeks).await
            }
            async fn reconcile_states(&self) -> Result<Vec<ReconcileState>> {
                rec::rec_states(&self.pool).await
            }
            async fn replace_findings(&self, periods: &[String], findings: &[Finding]) -> Result<()> {
                rec::rec_replace_findings(&self.pool, periods, findings).await
            }
            async fn findings(&self, period: Option<&str>) -> Result<Vec<Finding>> {
                rec::rec_findings(&self.pool, period).await
            }
            async fn upsert_invoices(&self, rows: &[InvoiceRow]) -> Result<u64> {
                rec::rec_upsert_invoices(&self.pool, rows).await
            }
            async fn invoices(&self) -> Result<Vec<InvoiceRow>> {
                rec::rec_invoices(&self.pool).await
            }
            async fn upsert_fx_rates(&self, rows: &[FxRate]) -> Result<u64> {
                rec::rec_upsert_fx(&self.pool, rows).await
            }
            async fn fx_rates(&self) -> Result<Vec<FxRate>> {
                rec::rec_fx(&self.pool).await
            }
            async fn upsert_business_metrics(&self, rows: &[BusinessMetric]) -> Result<u64> {
                rec::rec_upsert_metrics(&self.pool, rows).await
            }
            async fn business_metrics(&self, name: &str) -> Result<Vec<BusinessMetric>> {
                rec::rec_metrics(&self.pool, name).await
            }
            async fn business_metric_names(&self) -> Result<Vec<String>> {
                rec::rec_metric_names(&self.pool).await
            }
            async fn record_reported_week(&self, week: &str, totals: &Totals) -> Result<()> {
                rec::rec_record_week(&self.pool, week, totals).await
            }
            async fn reported_weeks(&self) -> Result<Vec<(String, Totals)>> {
                rec::rec_reported_weeks(&self.pool).await
            }
        }
    };
}

pub(crate) use reconcile_impl;
