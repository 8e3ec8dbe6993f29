//! Commitment utilisation and coverage: two cost queries through the query engine (answered
//! from the pricing rollups, which hold the commitment dimensions, or from the charges when the
//! coverage groups need an account, region, tag or owner), their rows handed to the pure
//! arithmetic of `commitments`.

use crate::commitments::{self, Basis, Commitments};
use crate::config::Config;
use crate::query::{Dimension, Filter, Grain, Metric, Query, QueryError, QueryText};

use super::query::{QueryRunError, tag_normaliser};

#[derive(Debug, thiserror::Error)]
pub enum CommitmentsError {
    #[error(transparent)]
    Query(#[from] QueryRunError),
    #[error("unknown basis '{0}': use ContractedCost (the default) or ListCost")]
    BadBasis(String),
    #[error("{0}")]
    Money(#[from] costledger_core::MoneyError),
}

impl From<QueryError> for CommitmentsError {
    fn from(e: QueryError) -> Self {
        CommitmentsError::Query(e.into())
    }
}

/// The question as every edge receives it.
#[derive(Debug, Clone, Default)]
pub struct CommitmentsText {
    pub from: Option<String>,
    pub to: Option<String>,
    pub grain: Option<String>,
    /// Coverage groups (default `service`).
    pub by: Vec<String>,
    pub basis: Option<String>,
    pub filters: Vec<String>,
}

/// The parsed question: the basis and the base query (groups, grain, filters, range).
fn parse(config: &Config, t: &CommitmentsText) -> Result<(Basis, Query), CommitmentsError> {
    let norm = tag_normaliser(config);
    let basis = match &t.basis {
        None => Basis::default(),
        Some(b) => Basis::parse(b).ok_or_else(|| CommitmentsError::BadBasis(b.clone()))?,
    };
    let base = QueryText {
        group_by: if t.by.iter().all(|s| s.trim().is_empty()) { vec!["service".into()] } else { t.by.clone() },
        grain: t.grain.clone(),
        filters: t.filters.clone(),
        from: t.from.clone(),
        to: t.to.clone(),
        ..Default::default()
    }
    .parse(&norm)?;
    Ok((basis, base))
}

/// Utilisation per commitment over the range, exactly: one grouped read of the commitments'
/// usage and purchase lines (what the reconciler's commitment findings need; coverage, which
/// reads every usage line, is not computed).
pub async fn utilisation(
    store: &dyn crate::ledger::LedgerStore,
    config: &Config,
    t: &CommitmentsText,
) -> Result<Vec<commitments::UtilisationRow>, CommitmentsError> {
    let (_, base) = parse(config, t)?;
    let rows = utilisation_rows(store, config, &base).await?;
    Ok(commitments::utilisation(&rows, config.checks.commitment_utilization_min)?)
}

async fn utilisation_rows(
    store: &dyn crate::ledger::LedgerStore,
    config: &Config,
    base: &Query,
) -> Result<Vec<crate::query::aggregate::QueryRow>, CommitmentsError> {
    let norm = tag_normaliser(config);
    // Utilisation reads a commitment's usage lines and its purchase lines: a purchase's
    // EffectiveCost is 0 in FOCUS, but a CUR keeps a commitment's unused share there.
    let mut uf = base.filters.clone();
    uf.push(Filter::parse("charge_category=Usage,Purchase", &norm)?);
    uf.push(Filter::parse("commitment!=(none)", &norm)?);
    let u = Query {
        metrics: vec![Metric::EffectiveCost],
        group_by: vec![
            Dimension::Commitment,
            Dimension::CommitmentType,
            Dimension::CommitmentCategory,
            Dimension::CommitmentStatus,
            Dimension::ChargeCategory,
        ],
        grain: base.grain,
        filters: uf,
        range: base.range,
        currency: None,
        top: None,
    };
    Ok(super::query::query(store, config, &u).await?.rows)
}

/// Utilisation per commitment and coverage per group over the range, exactly.
pub async fn commitments(
    store: &dyn crate::ledger::LedgerStore,
    config: &Config,
    t: &CommitmentsText,
) -> Result<Commitments, CommitmentsError> {
    let norm = tag_normaliser(config);
    let (basis, base) = parse(config, t)?;
    let u = utilisation_rows(store, config, &base).await?;

    let usage = Filter::parse("charge_category=Usage", &norm)?;
    let mut filters = base.filters.clone();
    filters.push(usage);
    let mut group_by = base.group_by.clone();
    group_by.push(Dimension::CommitmentStatus);
    let c = Query {
        metrics: vec![basis.metric()],
        group_by,
        grain: base.grain,
        filters,
        range: base.range,
        currency: None,
        top: None,
    };
    let c = super::query::query(store, config, &c).await?;
    Ok(Commitments {
        grain: if base.grain == Grain::None { "none" } else { base.grain.name() },
        from: t.from.clone(),
        to: t.to.clone(),
        basis: basis.metric().name(),
        by: base.group_by.iter().map(Dimension::name).collect(),
        utilisation_minimum_percent: config.checks.commitment_utilization_min,
        utilisation: commitments::utilisation(&u, config.checks.commitment_utilization_min)?,
        coverage: commitments::coverage(&c.rows, base.group_by.len())?,
    })
}
