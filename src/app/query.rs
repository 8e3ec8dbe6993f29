//! Answer a cost query: read the current charges the query's range can touch and aggregate
//! them exactly (`query::aggregate`). Every edge (CLI, HTTP API, MCP) calls [`query`].

use futures::StreamExt;

use crate::allocation::normalise_key;
use crate::config::Config;
use crate::ledger::{ChargeFilter, LedgerError, LedgerStore};
use crate::query::aggregate::{AggregateError, Aggregator, QueryResult};
use crate::query::{Query, QueryError, QueryText};

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
pub fn tag_normaliser(config: &Config) -> impl Fn(&str) -> String + '_ {
    move |k: &str| normalise_key(&config.allocation.tag_aliases, k)
}

/// Parse a query's text the way every edge receives it.
pub fn parse(config: &Config, text: &QueryText) -> Result<Query, QueryError> {
    text.parse(&tag_normaliser(config))
}

/// Run `q` over the current charges of primary sources.
pub async fn query(store: &dyn LedgerStore, config: &Config, q: &Query) -> Result<QueryResult, QueryRunError> {
    let norm = tag_normaliser(config);
    let (from, to) = q.range.charge_bounds(config.timezone);
    let filter = ChargeFilter { from, to, unordered: true, ..Default::default() };
    let rates = match q.currency {
        Some(_) => store.fx_rates().await?,
        None => Vec::new(),
    };
    let mut agg = Aggregator::new(q, config.timezone, &norm);
    let mut charges = store.charges(&filter);
    while let Some(rec) = charges.next().await {
        let rec = rec?;
        agg.add_line(&rec.line, &rec.source)?;
    }
    Ok(agg.finish(&rates)?)
}
