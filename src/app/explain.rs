//! Explain a change of cost between two periods: one query per period through the query
//! engine (so the rollups, filters, owner allocation and tag aliases are the same as
//! `costledger query`), its rows turned into facts, and the pure decomposition of `explain`.

use costledger_core::ExactSum;

use crate::config::Config;
use crate::explain::{self, ExplainError, Explanation, Fact, Period, Spec};
use crate::ledger::{LedgerError, LedgerStore};
use crate::query::aggregate::AggregateError;
use crate::query::{Dimension, Filter, Grain, Metric, Query, Range, RangeBy};

use super::query::{QueryRunError, tag_normaliser};

#[derive(Debug, thiserror::Error)]
pub enum ExplainRunError {
    #[error(transparent)]
    Explain(#[from] ExplainError),
    #[error(transparent)]
    Query(#[from] QueryRunError),
    #[error(transparent)]
    Ledger(#[from] LedgerError),
}

/// An explain question as every edge receives it (CLI flags, HTTP parameters, MCP arguments).
#[derive(Debug, Clone, Default)]
pub struct ExplainText {
    pub from: String,
    pub to: String,
    /// Dimensions, comma-separated or repeated; default `service`.
    pub by: Vec<String>,
    pub metric: Option<String>,
    pub filters: Vec<String>,
    pub currency: Option<String>,
    pub top: Option<usize>,
}

/// A parsed explain question.
#[derive(Debug, Clone)]
pub struct ExplainQuestion {
    pub spec: Spec,
    pub by: Vec<Dimension>,
    pub filters: Vec<Filter>,
}

/// Parse and check an explain question.
pub fn parse(config: &Config, t: &ExplainText) -> Result<ExplainQuestion, ExplainError> {
    let norm = tag_normaliser(config);
    let from = Period::parse(&t.from, "--from")?;
    let to = Period::parse(&t.to, "--to")?;
    explain::check_periods(&from, &to)?;
    let metric = explain::check_metric(match &t.metric {
        Some(m) => Metric::parse(m)?,
        None => Metric::BilledCost,
    })?;
    // The query parser checks the dimensions, filters, currency and top once for every edge.
    let text = crate::query::QueryText {
        group_by: if t.by.iter().all(|s| s.trim().is_empty()) { vec!["service".into()] } else { t.by.clone() },
        filters: t.filters.clone(),
        currency: t.currency.clone(),
        top: t.top,
        ..Default::default()
    };
    let q = text.parse(&norm)?;
    let spec = Spec {
        by: q.group_by.iter().map(Dimension::name).collect(),
        metric,
        from,
        to,
        currency: q.currency.clone(),
        top: q.top,
    };
    Ok(ExplainQuestion { spec, by: q.group_by, filters: q.filters })
}

/// The dimensions every explain query adds after the `--by` ones.
const INNER: [Dimension; 4] = [Dimension::Service, Dimension::Sku, Dimension::PricingUnit, Dimension::ChargeCategory];

/// The facts of one period: the metric and PricingQuantity per group, service, SKU, pricing
/// unit, charge category, currency and billing month.
async fn facts(
    store: &dyn LedgerStore,
    config: &Config,
    q: &ExplainQuestion,
    p: &Period,
) -> Result<Vec<Fact>, ExplainRunError> {
    let mut group_by = q.by.clone();
    group_by.extend(INNER.iter().cloned());
    let query = Query {
        metrics: vec![q.spec.metric, Metric::PricingQuantity],
        group_by,
        grain: Grain::BillingPeriod,
        filters: q.filters.clone(),
        range: Range { by: RangeBy::ChargePeriod, from: Some(p.start), to: Some(p.end()) },
        currency: None,
        top: None,
    };
    let r = super::query::query(store, config, &query).await?;
    let n = q.by.len();
    let corrupt = |what: &str| QueryRunError::Aggregate(AggregateError::Corrupt(format!("query row without {what}")));
    let mut out = Vec::with_capacity(r.rows.len());
    for row in r.rows {
        let month = row.bucket.as_deref().and_then(|b| b.parse().ok()).ok_or_else(|| corrupt("a billing period"))?;
        let category = row.keys[n + 3].as_deref().unwrap_or_default();
        out.push(Fact {
            keys: row.keys[..n].to_vec(),
            service: row.keys[n].clone(),
            sku: row.keys[n + 1].clone(),
            pricing_unit: row.keys[n + 2].clone(),
            priced_category: matches!(category, "Usage" | "Purchase"),
            currency: row.currency,
            month,
            cost: row.values[0].unwrap_or(ExactSum::ZERO),
            quantity: row.values[1],
        });
    }
    Ok(out)
}

/// Explain the change between the two periods of `q`, exactly.
pub async fn explain(
    store: &dyn LedgerStore,
    config: &Config,
    q: &ExplainQuestion,
) -> Result<Explanation, ExplainRunError> {
    let a = facts(store, config, q, &q.spec.from).await?;
    let b = facts(store, config, q, &q.spec.to).await?;
    let rates = match q.spec.currency {
        Some(_) => store.fx_rates().await?,
        None => Vec::new(),
    };
    let stored = stored_before(store, q, &a).await?;
    Ok(explain::decompose_with(&q.spec, &a, &b, &rates, stored.as_ref())?)
}

/// What the last reconcile stored for period A per owner, when it differs from today's
/// allocation of the same charges (the rules changed since): only for `--by owner`, BilledCost
/// (what the reconciler allocates), an ISO week (what it stores), no filters or conversion.
/// `None` when nothing is stored or when the stored totals differ from today's (the charges
/// changed, not the rules: a reconcile brings them level).
async fn stored_before(
    store: &dyn LedgerStore,
    q: &ExplainQuestion,
    a: &[Fact],
) -> Result<Option<explain::StoredBefore>, ExplainRunError> {
    let s = &q.spec;
    if q.by != [Dimension::Owner]
        || s.metric != Metric::BilledCost
        || s.currency.is_some()
        || !q.filters.is_empty()
        || s.from.kind != explain::PeriodKind::Week
    {
        return Ok(None);
    }
    let week = s.from.start.to_string();
    let rows = store.allocations(Some((&week, &week))).await?;
    if rows.is_empty() {
        return Ok(None);
    }
    let mut stored = explain::StoredBefore::new();
    let mut stored_total: std::collections::BTreeMap<String, ExactSum> = Default::default();
    for r in rows.iter().filter(|r| r.week == week) {
        // The query's owner of a shared rule's charges is `shared`; the reconciler splits them.
        let owner = if crate::allocation::StoredBasis::is_shared(&r.basis) {
            Some("shared".to_string())
        } else {
            r.owner.clone()
        };
        stored.entry((vec![owner], r.currency.clone())).or_default().merge(&r.amount).map_err(ExplainError::from)?;
        stored_total.entry(r.currency.clone()).or_default().merge(&r.amount).map_err(ExplainError::from)?;
    }
    let mut today: std::collections::BTreeMap<(Vec<Option<String>>, String), ExactSum> = Default::default();
    let mut today_total: std::collections::BTreeMap<String, ExactSum> = Default::default();
    for f in a {
        today.entry((f.keys.clone(), f.currency.clone())).or_default().merge(&f.cost).map_err(ExplainError::from)?;
        today_total.entry(f.currency.clone()).or_default().merge(&f.cost).map_err(ExplainError::from)?;
    }
    let same_charges = stored_total == today_total;
    let moved = stored.iter().any(|(k, v)| today.get(k) != Some(v)) || today.keys().any(|k| !stored.contains_key(k));
    Ok((same_charges && moved).then_some(stored))
}
