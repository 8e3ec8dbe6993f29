//! Answer a cost query: read the current charges the query's range can touch and aggregate
//! them exactly (`query::aggregate`). Every edge (CLI, HTTP API, MCP) calls [`query`].

use futures::StreamExt;

use crate::allocation::normalise_key;
use crate::config::Config;
use crate::ledger::{ChargeColumns, ChargeFilter, LedgerError, LedgerStore, LoadId, Summed};
use crate::query::aggregate::{
    AggregateError, Aggregator, AnsweredFrom, QueryResult, grouped_columns, grouped_rollup_columns,
};
use crate::query::rollup::{RollupBuilder, RollupSpec};
use crate::query::{Query, QueryError, QueryText, RangeBy};

#[derive(Debug, thiserror::Error)]
pub enum QueryRunError {
    #[error(transparent)]
    Query(#[from] QueryError),
    #[error(transparent)]
    Aggregate(#[from] AggregateError),
    #[error(transparent)]
    Ledger(#[from] LedgerError),
}

/// A tag key as the config normalises it (aliases, then lower case).
pub fn tag_normaliser(config: &Config) -> impl Fn(&str) -> String + Sync + '_ {
    move |k: &str| normalise_key(&config.allocation.tag_aliases, k)
}

/// Parse a query's text the way every edge receives it.
pub fn parse(config: &Config, text: &QueryText) -> Result<Query, QueryError> {
    text.parse(&tag_normaliser(config))
}

/// Where a query reads from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadPath {
    /// The rollups when they hold every dimension asked for and every current load has one
    /// built with today's spec; else the charges.
    Auto,
    /// Every current charge line, one by one (tests prove the rollups and the grouped reads
    /// against this).
    Charges,
    /// The charges grouped and summed by the database (tests).
    Grouped,
    /// The rollups, whatever the spec, row by row (tests).
    Rollups,
    /// The rollups grouped and summed by the database, whatever the spec (tests).
    GroupedRollups,
}

/// Run `q` over the current charges of primary sources, from the rollups when they can answer.
pub async fn query(store: &dyn LedgerStore, config: &Config, q: &Query) -> Result<QueryResult, QueryRunError> {
    query_via(store, config, q, ReadPath::Auto).await
}

/// Whether the rollups can answer `q` exactly.
pub async fn rollups_answer(store: &dyn LedgerStore, config: &Config, q: &Query) -> Result<bool, LedgerError> {
    let spec = RollupSpec::from_config(config);
    let dims_held = q.group_by.iter().chain(q.filters.iter().map(|f| &f.dimension)).all(|d| spec.holds(d));
    Ok(dims_held && store.loads_without_rollup(&spec.fingerprint()).await?.is_empty())
}

pub async fn query_via(
    store: &dyn LedgerStore,
    config: &Config,
    q: &Query,
    path: ReadPath,
) -> Result<QueryResult, QueryRunError> {
    let norm = tag_normaliser(config);
    let rates = match q.currency {
        Some(_) => store.fx_rates().await?,
        None => Vec::new(),
    };
    // The database sums only the amounts the query shows.
    let sums = Summed::of(q.metrics.iter().filter_map(|m| m.column()));
    let use_rollups = match path {
        ReadPath::Auto => rollups_answer(store, config, q).await?,
        ReadPath::Charges | ReadPath::Grouped => false,
        ReadPath::Rollups | ReadPath::GroupedRollups => true,
    };
    if use_rollups {
        let mut agg = Aggregator::new(q, config.timezone, &norm);
        let day = |d: chrono::NaiveDate| d.format("%Y-%m-%d").to_string();
        let (from, to) = match q.range.by {
            RangeBy::ChargePeriod => (q.range.from.map(day), q.range.to.map(day)),
            RangeBy::BillingPeriod => (None, None),
        };
        match grouped_rollup_columns(q) {
            // The database groups the rollup rows too.
            Some(cols) if path != ReadPath::Rollups => {
                let mut rows = store.grouped_rollups(from, to, &cols, sums);
                while let Some(r) = rows.next().await {
                    agg.add_grouped(&r?, &cols, true)?;
                }
            }
            _ => {
                let mut rows = store.rollups(from, to);
                while let Some(r) = rows.next().await {
                    agg.add_rollup(&r?)?;
                }
            }
        }
        return Ok(agg.finish(&rates, AnsweredFrom::Rollups)?);
    }
    if path != ReadPath::Charges
        && let Some(cols) = grouped_columns(q, config.timezone)
    {
        // The database groups and sums; each group is one fact for the aggregator.
        let mut agg = Aggregator::new(q, config.timezone, &norm);
        let (from, to) = q.range.charge_bounds(config.timezone);
        let filter = ChargeFilter { from, to, unordered: true, ..Default::default() };
        let mut rows = store.grouped(&filter, &cols, sums);
        while let Some(r) = rows.next().await {
            agg.add_grouped(&r?, &cols, false)?;
        }
        return Ok(agg.finish(&rates, AnsweredFrom::Charges)?);
    }
    // Owner and allocation come from the allocator, as the finance CSV has them.
    let allocator = match q.needs_allocation() {
        true => Some(super::allocator(store, config).await?),
        false => None,
    };
    let line_alloc = match &allocator {
        Some(a) => Some(crate::export::LineAllocation::new(store, a).await?),
        None => None,
    };
    let columns = |l: &costledger_core::ChargeLine| line_alloc.as_ref().map(|a| a.columns(l)).unwrap_or_default();
    let mut agg = Aggregator::new(q, config.timezone, &norm);
    if line_alloc.is_some() {
        agg = agg.with_allocation(&columns);
    }
    let (from, to) = q.range.charge_bounds(config.timezone);
    // The allocator reads the publisher (marketplace charges) and the commitment dimensions
    // their columns, which a lean read leaves out.
    let columns = match line_alloc.is_none() && !q.needs_full_rows() {
        true => ChargeColumns::Lean,
        false => ChargeColumns::All,
    };
    let filter = ChargeFilter { from, to, unordered: true, columns, ..Default::default() };
    let mut charges = store.charges(&filter);
    while let Some(rec) = charges.next().await {
        let rec = rec?;
        agg.add_line(&rec.line, &rec.source)?;
    }
    Ok(agg.finish(&rates, AnsweredFrom::Charges)?)
}

/// What [`build_missing_rollups`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RollupBuild {
    /// Loads whose rollup was built.
    pub built: Vec<LoadId>,
    /// Loads whose lines are nearly all distinct per day and dimension: no rollup (it would
    /// not be smaller than the charges); queries over them read the charges.
    pub not_worth_it: Vec<LoadId>,
}

/// Build the rollup of every current load that has none built with today's spec (a ledger
/// from before rollups, or a changed time zone, tag list or alias): each load's old rollup is
/// cleared, its charges are read once, and its rows written in chunks of at most
/// `MAX_ROLLUP_ROWS`; the spec is recorded with the last chunk, so until then queries read the
/// charges (an interrupted build is redone the next time).
pub async fn build_missing_rollups(store: &dyn LedgerStore, config: &Config) -> Result<RollupBuild, QueryRunError> {
    let spec = RollupSpec::from_config(config);
    let mut out = RollupBuild::default();
    for load in store.loads_without_rollup(&spec.fingerprint()).await? {
        store.clear_rollup(load).await?;
        let mut b = RollupBuilder::new(&spec);
        let filter =
            ChargeFilter { load: Some(load), unordered: true, columns: ChargeColumns::Lean, ..Default::default() };
        {
            // Chunks are written while the charges stream (a second connection: WAL on SQLite).
            let mut charges = store.charges(&filter);
            while let Some(rec) = charges.next().await {
                b.add(&rec?.line).map_err(AggregateError::from)?;
                if b.is_full() {
                    store.append_rollup(load, &b.take_rows()).await?;
                }
            }
        }
        match b.finish() {
            Some(rollup) => {
                if store.complete_rollup(load, &rollup).await? {
                    out.built.push(load);
                }
            }
            None => out.not_worth_it.push(load),
        }
    }
    Ok(out)
}
