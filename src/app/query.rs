//! Answer a cost query: read the current charges the query's range can touch and aggregate
//! them exactly (`query::aggregate`). Every edge (CLI, HTTP API, MCP) calls [`query`].

use futures::StreamExt;

use crate::allocation::normalise_key;
use crate::config::Config;
use crate::ledger::{ChargeColumns, ChargeFilter, LedgerError, LedgerStore, LoadId, RollupKind, Summed};
use crate::query::aggregate::{
    AggregateError, Aggregator, AnsweredFrom, QueryResult, grouped_columns, grouped_rollup_columns,
};
use crate::query::rollup::{ROLLUP_PIECE, RollupBuilder, RollupSpec};
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
    /// The rollups of a kind, whatever the spec, row by row (tests).
    Rollups(RollupKind),
    /// The rollups of a kind grouped and summed by the database, whatever the spec (tests).
    GroupedRollups(RollupKind),
}

/// Run `q` over the current charges of primary sources, from the rollups when they can answer.
pub async fn query(store: &dyn LedgerStore, config: &Config, q: &Query) -> Result<QueryResult, QueryRunError> {
    query_via(store, config, q, ReadPath::Auto).await
}

/// The first kind of rollup that can answer `q` exactly: it holds every dimension `q` groups
/// or filters by, and every current load has one built with today's spec.
pub async fn rollups_answer(
    store: &dyn LedgerStore,
    config: &Config,
    q: &Query,
) -> Result<Option<RollupKind>, LedgerError> {
    for spec in RollupSpec::all(config) {
        let dims_held = q.group_by.iter().chain(q.filters.iter().map(|f| &f.dimension)).all(|d| spec.holds(d));
        if dims_held && store.loads_without_rollup(spec.kind, &spec.fingerprint()).await?.is_empty() {
            return Ok(Some(spec.kind));
        }
    }
    Ok(None)
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
        ReadPath::Charges | ReadPath::Grouped => None,
        ReadPath::Rollups(k) | ReadPath::GroupedRollups(k) => Some(k),
    };
    if let Some(kind) = use_rollups {
        let mut agg = Aggregator::new(q, config.timezone, &norm);
        let day = |d: chrono::NaiveDate| d.format("%Y-%m-%d").to_string();
        let (from, to) = match q.range.by {
            RangeBy::ChargePeriod => (q.range.from.map(day), q.range.to.map(day)),
            RangeBy::BillingPeriod => (None, None),
        };
        match grouped_rollup_columns(q, kind) {
            // The database groups the rollup rows too.
            Some(cols) if !matches!(path, ReadPath::Rollups(_)) => {
                let mut rows = store.grouped_rollups(kind, from, to, &cols, sums);
                while let Some(r) = rows.next().await {
                    agg.add_grouped(&r?, &cols, true)?;
                }
            }
            _ => {
                let mut rows = store.rollups(kind, from, to);
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
    /// Loads whose rollup of a kind was built.
    pub built: Vec<(LoadId, RollupKind)>,
    /// Loads whose lines are nearly all distinct per day and the kind's dimensions: no rollup
    /// of that kind (it would not be smaller than the charges); queries that need it read the
    /// charges.
    pub not_worth_it: Vec<(LoadId, RollupKind)>,
}

/// Build the rollups of every current load that has none of a kind built with today's spec (a
/// ledger from before rollups or before that kind, or a changed time zone, tag list or alias):
/// each load's old rollup of those kinds is cleared, its charges are read once for all of them,
/// and the rows written in chunks of at most `MAX_ROLLUP_ROWS`; each kind's spec is recorded with
/// its last chunk, so until then queries that need it read the charges (an interrupted build is
/// redone the next time).
pub async fn build_missing_rollups(store: &dyn LedgerStore, config: &Config) -> Result<RollupBuild, QueryRunError> {
    let specs = RollupSpec::all(config);
    // Load → the kinds it lacks.
    let mut missing: std::collections::BTreeMap<LoadId, Vec<&RollupSpec>> = Default::default();
    for spec in &specs {
        for load in store.loads_without_rollup(spec.kind, &spec.fingerprint()).await? {
            missing.entry(load).or_default().push(spec);
        }
    }
    let mut out = RollupBuild::default();
    for (load, specs) in missing {
        let mut builders = Vec::with_capacity(specs.len());
        for spec in specs {
            store.clear_rollup(load, spec.kind).await?;
            builders.push(RollupBuilder::new(spec));
        }
        // The pricing rollup reads the commitment and pricing columns a lean read leaves out.
        let columns = match builders.iter().all(|b| b.kind() == RollupKind::Daily) {
            true => ChargeColumns::Lean,
            false => ChargeColumns::All,
        };
        let filter = ChargeFilter { load: Some(load), unordered: true, columns, ..Default::default() };
        {
            // Chunks are written while the charges stream (a second connection: WAL on SQLite).
            let mut charges = store.charges(&filter);
            while let Some(rec) = charges.next().await {
                let rec = rec?;
                for b in builders.iter_mut() {
                    b.add(&rec.line).map_err(AggregateError::from)?;
                    if b.is_full() {
                        for piece in b.take_held().into_pieces(ROLLUP_PIECE) {
                            store.append_rollup(load, &piece).await?;
                        }
                    }
                }
            }
        }
        for b in builders {
            let kind = b.kind();
            match b.finish_held() {
                Some((rollup, held)) => {
                    for piece in held.into_pieces(ROLLUP_PIECE) {
                        store.append_rollup(load, &piece).await?;
                    }
                    if store.complete_rollup(load, &rollup).await? {
                        out.built.push((load, kind));
                    }
                }
                None => out.not_worth_it.push((load, kind)),
            }
        }
    }
    Ok(out)
}
