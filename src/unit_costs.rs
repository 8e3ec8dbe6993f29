//! Unit costs: a cost divided by a business metric (`costledger metrics import`), e.g. the
//! EffectiveCost per 1,000 requests per owner per week. Pure: the query answer and the metric's
//! values come from `app::unit_costs`.
//!
//! For each row of the cost query (time bucket × group), the denominator is the sum of the
//! metric's values whose day falls in the bucket and whose owner and dimensions equal the row's
//! group values; the unit cost is `cost × per ÷ denominator`, rounded half-to-even to `places`
//! decimal places. The exact numerator and denominator are kept beside it. A row without a
//! denominator (or with zero) has no unit cost.

use std::collections::BTreeMap;
use std::io::Write;

use chrono::{Datelike, NaiveDate};
use costledger_core::{BillingPeriod, ExactSum, MoneyError};
use rust_decimal::{Decimal, RoundingStrategy};
use serde::Serialize;

use crate::ledger::BusinessMetric;
use crate::query::aggregate::QueryResult;
use crate::query::{Dimension, MISSING, Query};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UnitCostError {
    #[error(
        "no business metric '{name}' is stored: import one with `costledger metrics import FILE` (columns date,metric,value[,owner][,DIMENSION…]){known}"
    )]
    UnknownMetric { name: String, known: String },
    #[error(
        "business metric '{name}' has no {dimension} on every value ({provenance} has none): group by dimensions the \
         metric file has (owner or its own columns), or add the column"
    )]
    MissingDimension { name: String, dimension: String, provenance: String },
    #[error("the unit (per_unit, --per-unit) must be a number above 0, not '{0}'")]
    BadUnit(String),
    #[error("{0}")]
    Money(#[from] MoneyError),
}

/// One row: a cost, the metric's sum over the same bucket and group, and their quotient.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct UnitCostRow {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bucket: Option<String>,
    pub keys: Vec<Option<String>>,
    pub currency: String,
    #[serde(serialize_with = "crate::json::exact")]
    #[schema(value_type = String)]
    pub cost: ExactSum,
    /// The metric's exact sum (null: no value for this bucket and group).
    #[serde(serialize_with = "crate::json::opt_exact")]
    #[schema(value_type = Option<String>)]
    pub quantity: Option<ExactSum>,
    /// cost × per ÷ quantity, rounded half-to-even to `places`.
    #[schema(value_type = Option<String>)]
    pub unit_cost: Option<Decimal>,
}

/// The answer of `costledger query --per METRIC`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct UnitCosts {
    /// The cost metric (the query's first).
    #[schema(value_type = String)]
    pub cost_metric: &'static str,
    /// The business metric divided by.
    pub per_metric: String,
    /// The unit cost is per this many of the metric (1, 1000 …).
    #[schema(value_type = String)]
    pub per: Decimal,
    pub places: u32,
    pub group_by: Vec<String>,
    #[schema(value_type = String)]
    pub grain: &'static str,
    pub rows: Vec<UnitCostRow>,
}

/// The unit a unit cost is per, as the API and MCP receive it (`None`: 1); the CLI's
/// `--per-unit` is parsed by clap and checked by [`divide`].
pub fn parse_per_unit(s: Option<&str>) -> Result<Decimal, UnitCostError> {
    match s {
        None => Ok(Decimal::ONE),
        Some(u) => u
            .trim()
            .parse::<Decimal>()
            .ok()
            .filter(|d| *d > Decimal::ZERO)
            .ok_or_else(|| UnitCostError::BadUnit(u.to_string())),
    }
}

/// The value of group dimension `d` on a metric value.
fn metric_key(m: &BusinessMetric, d: &Dimension) -> Option<String> {
    match d {
        Dimension::Owner => m.owner.clone(),
        other => m.dimensions.get(&other.name()).cloned(),
    }
}

/// Divide the cost answer `r` of query `q` by the metric's `values`.
pub fn divide(
    q: &Query,
    r: &QueryResult,
    name: &str,
    values: &[BusinessMetric],
    per: Decimal,
    places: u32,
) -> Result<UnitCosts, UnitCostError> {
    if per <= Decimal::ZERO {
        return Err(UnitCostError::BadUnit(per.to_string()));
    }
    // Every group dimension must be on every value, or the denominator would be partial.
    for d in &q.group_by {
        if let Some(m) = values.iter().find(|m| metric_key(m, d).is_none()) {
            return Err(UnitCostError::MissingDimension {
                name: name.to_string(),
                dimension: d.name(),
                provenance: m.provenance.clone(),
            });
        }
    }
    let mut denominators: BTreeMap<(Option<String>, Vec<Option<String>>), ExactSum> = BTreeMap::new();
    for m in values {
        let Ok(day) = NaiveDate::parse_from_str(&m.day, "%Y-%m-%d") else { continue };
        let Some(period) = BillingPeriod::new(day.year(), day.month()) else { continue };
        if !q.range.contains(day, period) {
            continue;
        }
        let keys: Vec<Option<String>> = q.group_by.iter().map(|d| metric_key(m, d)).collect();
        denominators.entry((q.grain.bucket(day, period), keys)).or_default().add(m.value)?;
    }
    let mut rows = Vec::new();
    for row in r.rows.iter().filter(|row| !row.others) {
        let cost = row.values[0].unwrap_or_default();
        let quantity = denominators.get(&(row.bucket.clone(), row.keys.clone())).copied();
        let unit_cost = match quantity {
            Some(qty) if !qty.is_zero() => {
                let c = cost.to_exact_decimal().ok_or(MoneyError::SumOverflow)?;
                let n = qty.to_exact_decimal().ok_or(MoneyError::SumOverflow)?;
                c.checked_mul(per).and_then(|x| x.checked_div(n)).map(|x| {
                    // Rounded, then shown with exactly `places` decimals.
                    let mut r = x.round_dp_with_strategy(places, RoundingStrategy::MidpointNearestEven);
                    r.rescale(places);
                    r
                })
            }
            _ => None,
        };
        rows.push(UnitCostRow {
            bucket: row.bucket.clone(),
            keys: row.keys.clone(),
            currency: row.currency.clone(),
            cost,
            quantity,
            unit_cost,
        });
    }
    Ok(UnitCosts {
        cost_metric: q.metrics[0].name(),
        per_metric: name.to_string(),
        per,
        places,
        group_by: r.group_by.clone(),
        grain: r.grain,
        rows,
    })
}

/// Headers and cells (exact) of the unit-cost table.
pub fn cells(u: &UnitCosts) -> (Vec<String>, Vec<Vec<String>>) {
    let mut h = u.group_by.clone();
    if u.grain != "none" {
        h.push(u.grain.to_string());
    }
    h.push("currency".into());
    h.push(u.cost_metric.to_string());
    h.push(u.per_metric.clone());
    h.push(format!("{} per {} {}", u.cost_metric, u.per, u.per_metric));
    let rows = u
        .rows
        .iter()
        .map(|r| {
            let mut c: Vec<String> = r.keys.iter().map(|k| k.clone().unwrap_or_default()).collect();
            c.extend(r.bucket.clone());
            c.push(r.currency.clone());
            c.push(r.cost.to_string());
            c.push(r.quantity.map(|q| q.to_string()).unwrap_or_default());
            c.push(r.unit_cost.map(|x| x.to_string()).unwrap_or_default());
            c
        })
        .collect();
    (h, rows)
}

pub fn write_csv(u: &UnitCosts, out: impl Write) -> Result<(), csv::Error> {
    let (h, rows) = cells(u);
    crate::query::render::write_cells_csv(out, &h, &rows)
}

pub fn write_table(u: &UnitCosts, mut out: impl Write) -> std::io::Result<()> {
    let (h, mut rows) = cells(u);
    let text = h.len() - 3;
    for r in &mut rows {
        for c in r.iter_mut().take(text) {
            if c.is_empty() {
                *c = MISSING.into();
            }
        }
    }
    crate::query::render::write_aligned(&mut out, &h, &rows, text, None)?;
    writeln!(
        out,
        "(unit costs rounded half-to-even to {} places; the cost and the {} sum are exact)",
        u.places, u.per_metric
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::query::QueryText;
    use crate::query::aggregate::{AnsweredFrom, QueryRow};

    fn metric(day: &str, owner: Option<&str>, value: &str) -> BusinessMetric {
        BusinessMetric {
            name: "requests".into(),
            day: day.into(),
            owner: owner.map(str::to_string),
            dimensions: BTreeMap::new(),
            value: value.parse().expect("value"),
            provenance: format!("m.csv:{day}"),
        }
    }

    fn answer(rows: &[(&str, &str, &str)]) -> QueryResult {
        QueryResult {
            group_by: vec!["owner".into()],
            metrics: vec!["EffectiveCost"],
            grain: "week",
            converted_to: None,
            rows: rows
                .iter()
                .map(|(week, owner, cost)| QueryRow {
                    bucket: Some(week.to_string()),
                    keys: vec![Some(owner.to_string())],
                    others: false,
                    currency: "USD".into(),
                    values: vec![Some(cost.parse().expect("cost"))],
                })
                .collect(),
            totals: Vec::new(),
            rates_used: Vec::new(),
            lines: 0,
            answered_from: AnsweredFrom::Charges,
        }
    }

    fn query() -> Query {
        let t = QueryText {
            metrics: vec!["EffectiveCost".into()],
            group_by: vec!["owner".into()],
            grain: Some("week".into()),
            ..Default::default()
        };
        t.parse(&|k: &str| k.to_lowercase()).expect("query")
    }

    #[test]
    fn cost_per_thousand_requests_per_owner_and_week() {
        let values = [
            metric("2026-11-02", Some("payments"), "1000000"),
            metric("2026-11-03", Some("payments"), "500000"),
            metric("2026-11-02", Some("search"), "3"),
            metric("2026-11-09", Some("payments"), "7"),
        ];
        let r = answer(&[("2026-W45", "payments", "300"), ("2026-W45", "search", "10"), ("2026-W45", "data", "5")]);
        let u = divide(&query(), &r, "requests", &values, Decimal::from(1000), 4).expect("divides");
        let got: Vec<(String, Option<String>, Option<String>)> = u
            .rows
            .iter()
            .map(|r| {
                (
                    r.keys[0].clone().unwrap_or_default(),
                    r.quantity.map(|q| q.to_string()),
                    r.unit_cost.map(|c| c.to_string()),
                )
            })
            .collect();
        assert_eq!(
            got,
            vec![
                ("payments".into(), Some("1500000".into()), Some("0.2000".into())),
                ("search".into(), Some("3".into()), Some("3333.3333".into())),
                ("data".into(), None, None),
            ]
        );
    }

    #[test]
    fn a_group_dimension_the_metric_lacks_is_refused() {
        let values = [metric("2026-11-02", None, "5")];
        let r = answer(&[("2026-W45", "payments", "300")]);
        let e = divide(&query(), &r, "requests", &values, Decimal::ONE, 4).expect_err("no owner");
        assert!(e.to_string().contains("business metric 'requests' has no owner on every value"), "{e}");
    }
}
