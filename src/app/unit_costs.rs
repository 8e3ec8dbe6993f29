//! Unit costs: the cost query's answer divided by a stored business metric (`unit_costs`).

use rust_decimal::Decimal;

use crate::config::Config;
use crate::ledger::{BusinessMetric, LedgerError, LedgerStore};
use crate::query::Query;
use crate::unit_costs::{self, UnitCostError, UnitCosts};

use super::query::QueryRunError;

#[derive(Debug, thiserror::Error)]
pub enum UnitCostRunError {
    #[error(transparent)]
    Query(#[from] QueryRunError),
    #[error(transparent)]
    UnitCost(#[from] UnitCostError),
    #[error(transparent)]
    Ledger(#[from] LedgerError),
}

/// Store a metrics file's values (all or nothing; the file was checked whole by
/// `finance_files::read_metrics`).
pub async fn import(store: &dyn LedgerStore, rows: &[BusinessMetric]) -> Result<u64, LedgerError> {
    store.upsert_business_metrics(rows).await
}

/// The cost of `q` (its first metric) per `per` of business metric `name`, rounded to `places`.
pub async fn unit_costs(
    store: &dyn LedgerStore,
    config: &Config,
    q: &Query,
    name: &str,
    per: Decimal,
    places: u32,
) -> Result<UnitCosts, UnitCostRunError> {
    let values = store.business_metrics(name).await?;
    if values.is_empty() {
        let names = store.business_metric_names().await?;
        let known = if names.is_empty() { String::new() } else { format!("; stored: {}", names.join(", ")) };
        return Err(UnitCostError::UnknownMetric { name: name.to_string(), known }.into());
    }
    let r = super::query::query(store, config, q).await?;
    Ok(unit_costs::divide(q, &r, name, &values, per, places)?)
}
