//! The application layer: every job costledger does, written once for every edge. The edges
//! (`cli`, `daemon`; the HTTP API and the MCP server after them) parse their protocol, call a
//! function here and print or serialise what it returns. Nothing here prints, reads arguments
//! or knows which edge called it; errors are typed (`thiserror`), never `anyhow`.
//!
//! | job | function |
//! |---|---|
//! | ingest one source (window, context, retries, tally) | [`ingest::ingest`] |
//! | build the connector of a config source or of `import --format` | [`crate::registry`] |
//! | retention (stale staging sweep, superseded lines GC, abandoned runs) | [`retention`] |
//! | reconcile, recorded as a run | [`reconcile::run`] |
//! | the weekly report, recorded as a run | [`report::weekly`] |
//! | the allocator of the reconciler and the finance CSV | [`allocator`] |
//! | a cost query (metrics × dimensions × grain, filters, FX, top N) | [`query::query`] |
//! | budgets as of a day, their forecast, budget and commitment findings | [`budgets`] |
//! | business metrics and unit costs (cost per 1,000 requests …) | [`unit_costs`] |
//! | commitment utilisation and coverage | [`commitments::commitments`] |
//! | why a cost changed between two periods (volume, rate, mix, new, gone, FX) | [`explain::explain`] |
//! | sources and freshness, loads, periods, findings, allocation, dimension values | [`read`] |

pub mod budgets;
pub mod commitments;
pub mod explain;
pub mod ingest;
pub mod query;
pub mod read;
pub mod reconcile;
pub mod report;
pub mod retention;
pub mod unit_costs;

use crate::allocation::Allocator;
use crate::config::Config;
use crate::ledger::{LedgerError, LedgerStore};

/// The allocator the reconciler and the finance CSV use: the config's rules plus each billing
/// account's first appearance in the ledger.
pub async fn allocator(store: &dyn LedgerStore, config: &Config) -> Result<Allocator, LedgerError> {
    Ok(Allocator::new(config.allocation.clone(), store.account_first_seen().await?))
}
