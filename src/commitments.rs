//! Commitment utilisation and coverage (reservations, savings plans, committed use discounts),
//! from the FOCUS commitment columns. Pure: the rows come from two cost queries
//! (`app::commitments`), the arithmetic is here.
//!
//! - **Utilisation** of a commitment = used ÷ (used + unused), where used is the EffectiveCost of
//!   the Usage lines it covered (CommitmentDiscountStatus `Used`) and unused the EffectiveCost of
//!   its unused share: its `Unused` lines, plus the EffectiveCost of its Purchase lines (0 in
//!   FOCUS, where the unused share is a Usage line of its own; an AWS CUR keeps it on the
//!   reservation's RIFee and the Savings Plan's recurring fee line), per period bucket and
//!   currency. Below
//!   `checks.commitment_utilization_min` (default 80%) a commitment is flagged.
//! - **Coverage** of a group (service, owner, …) = the usage commitments covered ÷ all its usage,
//!   both on one basis: ContractedCost (the default: the negotiated price before commitment
//!   discounts, an on-demand equivalent) or ListCost. Unused commitment lines are not usage and
//!   are left out of both sides.
//!
//! Percentages are rounded half-to-even to 2 places; the amounts beside them are exact.

use std::collections::BTreeMap;
use std::io::Write;

use costledger_core::{ChargeCategory, ExactSum, MoneyError};
use rust_decimal::Decimal;
use serde::Serialize;

use crate::query::aggregate::QueryRow;
use crate::query::{MISSING, Metric};

/// The basis coverage is measured on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Basis {
    #[default]
    ContractedCost,
    ListCost,
}

impl Basis {
    pub fn parse(s: &str) -> Option<Basis> {
        match s.trim().to_ascii_lowercase().replace(['_', '-'], "").as_str() {
            "contractedcost" | "contracted" => Some(Basis::ContractedCost),
            "listcost" | "list" => Some(Basis::ListCost),
            _ => None,
        }
    }

    pub fn metric(self) -> Metric {
        match self {
            Basis::ContractedCost => Metric::ContractedCost,
            Basis::ListCost => Metric::ListCost,
        }
    }
}

/// One commitment in one bucket and currency.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct UtilisationRow {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bucket: Option<String>,
    pub commitment: String,
    pub commitment_type: Option<String>,
    pub commitment_category: Option<String>,
    pub currency: String,
    /// EffectiveCost of the usage it covered.
    #[serde(serialize_with = "crate::json::exact")]
    #[schema(value_type = String)]
    pub used: ExactSum,
    /// EffectiveCost of its unused share.
    #[serde(serialize_with = "crate::json::exact")]
    #[schema(value_type = String)]
    pub unused: ExactSum,
    /// used ÷ (used + unused) in percent, 2 places; null when both are zero.
    #[schema(value_type = Option<String>)]
    pub utilisation_percent: Option<Decimal>,
    /// Below `checks.commitment_utilization_min`.
    pub below_minimum: bool,
}

/// One group's coverage in one bucket and currency.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct CoverageRow {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bucket: Option<String>,
    /// The `--by` values; null is a missing value.
    pub keys: Vec<Option<String>>,
    pub currency: String,
    /// Usage covered by commitments, on the basis.
    #[serde(serialize_with = "crate::json::exact")]
    #[schema(value_type = String)]
    pub covered: ExactSum,
    /// All usage, on the basis (covered included).
    #[serde(serialize_with = "crate::json::exact")]
    #[schema(value_type = String)]
    pub eligible: ExactSum,
    /// covered ÷ eligible in percent, 2 places; null when eligible is zero.
    #[schema(value_type = Option<String>)]
    pub coverage_percent: Option<Decimal>,
    /// Usage lines without a value on the basis (they count as zero on both sides).
    pub lines_without_basis: bool,
}

/// The answer of `costledger commitments`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Commitments {
    #[schema(value_type = String)]
    pub grain: &'static str,
    pub from: Option<String>,
    pub to: Option<String>,
    /// ContractedCost or ListCost.
    #[schema(value_type = String)]
    pub basis: &'static str,
    pub by: Vec<String>,
    #[schema(value_type = String)]
    pub utilisation_minimum_percent: Decimal,
    /// The least used first.
    pub utilisation: Vec<UtilisationRow>,
    /// The largest usage first.
    pub coverage: Vec<CoverageRow>,
}

/// The status of a commitment line.
fn status(s: Option<&str>) -> Option<bool> {
    match s.map(str::trim) {
        Some(x) if x.eq_ignore_ascii_case("used") => Some(true),
        Some(x) if x.eq_ignore_ascii_case("unused") => Some(false),
        _ => None,
    }
}

/// Utilisation from rows grouped by commitment, commitment type, commitment category,
/// commitment status and charge category (metric EffectiveCost; the Usage and Purchase lines
/// of a commitment).
pub fn utilisation(rows: &[QueryRow], minimum: Decimal) -> Result<Vec<UtilisationRow>, MoneyError> {
    let mut by: BTreeMap<(Option<String>, String, String), UtilisationRow> = BTreeMap::new();
    for r in rows.iter().filter(|r| !r.others) {
        let Some(id) = r.keys[0].clone() else { continue };
        let e = by.entry((r.bucket.clone(), id.clone(), r.currency.clone())).or_insert_with(|| UtilisationRow {
            bucket: r.bucket.clone(),
            commitment: id,
            commitment_type: None,
            commitment_category: None,
            currency: r.currency.clone(),
            used: ExactSum::ZERO,
            unused: ExactSum::ZERO,
            utilisation_percent: None,
            below_minimum: false,
        });
        if e.commitment_type.is_none() {
            e.commitment_type = r.keys[1].clone();
        }
        if e.commitment_category.is_none() {
            e.commitment_category = r.keys[2].clone();
        }
        let v = r.values[0].unwrap_or_default();
        let purchase = r.keys.get(4).and_then(|c| c.as_deref()) == Some(ChargeCategory::Purchase.as_str());
        match status(r.keys[3].as_deref()) {
            _ if purchase => e.unused.merge(&v)?,
            Some(true) => e.used.merge(&v)?,
            Some(false) => e.unused.merge(&v)?,
            None => {}
        }
    }
    let mut out = Vec::with_capacity(by.len());
    for (_, mut u) in by {
        let mut whole = u.used;
        whole.merge(&u.unused)?;
        u.utilisation_percent = u.used.percent_of(&whole);
        u.below_minimum = u.utilisation_percent.is_some_and(|p| p < minimum);
        out.push(u);
    }
    out.sort_by(|a, b| {
        a.bucket
            .cmp(&b.bucket)
            .then_with(|| a.currency.cmp(&b.currency))
            .then_with(|| a.utilisation_percent.cmp(&b.utilisation_percent))
            .then_with(|| a.commitment.cmp(&b.commitment))
    });
    Ok(out)
}

/// (bucket, group keys, currency) of a coverage row.
type RowKey = (Option<String>, Vec<Option<String>>, String);

/// Coverage from rows grouped by the `--by` dimensions then commitment status (metric: the
/// basis; Usage lines only).
pub fn coverage(rows: &[QueryRow], by: usize) -> Result<Vec<CoverageRow>, MoneyError> {
    let mut groups: BTreeMap<RowKey, CoverageRow> = BTreeMap::new();
    for r in rows.iter().filter(|r| !r.others) {
        let st = status(r.keys[by].as_deref());
        if st == Some(false) {
            continue;
        }
        let keys = r.keys[..by].to_vec();
        let e = groups.entry((r.bucket.clone(), keys.clone(), r.currency.clone())).or_insert_with(|| CoverageRow {
            bucket: r.bucket.clone(),
            keys,
            currency: r.currency.clone(),
            covered: ExactSum::ZERO,
            eligible: ExactSum::ZERO,
            coverage_percent: None,
            lines_without_basis: false,
        });
        let Some(v) = r.values[0] else {
            e.lines_without_basis = true;
            continue;
        };
        e.eligible.merge(&v)?;
        if st == Some(true) {
            e.covered.merge(&v)?;
        }
    }
    let mut out: Vec<CoverageRow> = groups
        .into_values()
        .map(|mut c| {
            c.coverage_percent = c.covered.percent_of(&c.eligible);
            c
        })
        .collect();
    out.sort_by(|a, b| {
        a.bucket
            .cmp(&b.bucket)
            .then_with(|| a.currency.cmp(&b.currency))
            .then_with(|| b.eligible.cmp(&a.eligible))
            .then_with(|| a.keys.cmp(&b.keys))
    });
    Ok(out)
}

fn pct(p: Option<Decimal>) -> String {
    p.map(|p| p.to_string()).unwrap_or_default()
}

/// Which table a CSV or table output shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum View {
    Utilisation,
    Coverage,
}

/// Headers and exact cells of one view.
pub fn cells(c: &Commitments, view: View) -> (Vec<String>, Vec<Vec<String>>) {
    let bucket = c.grain != "none";
    let mut h: Vec<String> = Vec::new();
    if bucket {
        h.push(c.grain.to_string());
    }
    let mut rows = Vec::new();
    match view {
        View::Utilisation => {
            h.extend(
                [
                    "commitment",
                    "commitment_type",
                    "commitment_category",
                    "currency",
                    "used",
                    "unused",
                    "utilisation_percent",
                    "below_minimum",
                ]
                .map(String::from),
            );
            for u in &c.utilisation {
                let mut r: Vec<String> = u.bucket.iter().cloned().collect();
                r.push(u.commitment.clone());
                r.push(u.commitment_type.clone().unwrap_or_default());
                r.push(u.commitment_category.clone().unwrap_or_default());
                r.push(u.currency.clone());
                r.push(u.used.to_string());
                r.push(u.unused.to_string());
                r.push(pct(u.utilisation_percent));
                r.push(u.below_minimum.to_string());
                rows.push(r);
            }
        }
        View::Coverage => {
            h.extend(c.by.iter().cloned());
            h.extend(["currency", "covered", "eligible", "coverage_percent"].map(String::from));
            for v in &c.coverage {
                let mut r: Vec<String> = v.bucket.iter().cloned().collect();
                r.extend(v.keys.iter().map(|k| k.clone().unwrap_or_default()));
                r.push(v.currency.clone());
                r.push(v.covered.to_string());
                r.push(v.eligible.to_string());
                r.push(pct(v.coverage_percent));
                rows.push(r);
            }
        }
    }
    (h, rows)
}

/// CSV of one view (RFC 4180, exact amounts, text neutralised against formulas).
pub fn write_csv(c: &Commitments, view: View, out: impl Write) -> Result<(), csv::Error> {
    let (h, rows) = cells(c, view);
    crate::query::render::write_cells_csv(out, &h, &rows)
}

/// An aligned table of one view (missing keys shown as `(none)`).
pub fn write_table(c: &Commitments, view: View, mut out: impl Write) -> std::io::Result<()> {
    let (h, mut rows) = cells(c, view);
    let text_cols = match view {
        View::Utilisation => h.len() - 4,
        View::Coverage => h.len() - 3,
    };
    for r in &mut rows {
        for x in r.iter_mut().take(text_cols) {
            if x.is_empty() {
                *x = MISSING.into();
            }
        }
    }
    let title = match view {
        View::Utilisation => format!(
            "Commitment utilisation (EffectiveCost used ÷ used + unused; flagged below {}%)",
            c.utilisation_minimum_percent
        ),
        View::Coverage => format!("Commitment coverage ({} covered ÷ all usage)", c.basis),
    };
    writeln!(out, "{title}")?;
    crate::query::render::write_aligned(&mut out, &h, &rows, text_cols, None)?;
    if rows.is_empty() {
        writeln!(out, "(no commitment lines in range)")?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(keys: &[Option<&str>], currency: &str, v: Option<&str>) -> QueryRow {
        QueryRow {
            bucket: None,
            keys: keys.iter().map(|k| k.map(str::to_string)).collect(),
            others: false,
            currency: currency.into(),
            values: vec![v.map(|x| x.parse().expect("amount"))],
        }
    }

    #[test]
    fn utilisation_is_used_over_used_plus_unused_and_flags_the_low_ones() {
        let ri = [Some("ri-1"), Some("Reserved Instance"), Some("Usage")];
        let sp = [Some("sp-1"), Some("Savings Plan"), Some("Spend")];
        let rows = [
            row(&[ri[0], ri[1], ri[2], Some("Used")], "USD", Some("60")),
            row(&[ri[0], ri[1], ri[2], Some("Unused")], "USD", Some("40")),
            row(&[sp[0], sp[1], sp[2], Some("used")], "USD", Some("90.005")),
            row(&[sp[0], sp[1], sp[2], Some("Unused")], "USD", Some("9.995")),
            row(&[Some("cud-1"), None, None, Some("Used")], "USD", Some("0")),
        ];
        let u = utilisation(&rows, Decimal::from(80)).expect("sums");
        let got: Vec<(&str, Option<String>, bool)> = u
            .iter()
            .map(|r| (r.commitment.as_str(), r.utilisation_percent.map(|p| p.to_string()), r.below_minimum))
            .collect();
        assert_eq!(
            got,
            vec![("cud-1", None, false), ("ri-1", Some("60.00".into()), true), ("sp-1", Some("90.00".into()), false)]
        );
        assert_eq!((u[1].used.to_string(), u[1].unused.to_string()), ("60".into(), "40".into()));
    }

    /// Regression: an AWS CUR keeps a reservation's unused share on its RIFee (a Purchase line
    /// with no status); it was left out, so every CUR reservation showed 100% utilisation.
    #[test]
    fn a_purchase_lines_effective_cost_is_its_commitments_unused_share() {
        let ri = [Some("ri-1"), Some("Reserved Instance"), Some("Usage")];
        let rows = [
            row(&[ri[0], ri[1], ri[2], Some("Used"), Some("Usage")], "USD", Some("1.512")),
            row(&[ri[0], ri[1], ri[2], None, Some("Purchase")], "USD", Some("43.68")),
            // An upfront fee is amortised into the covered usage: EffectiveCost 0.
            row(&[ri[0], ri[1], ri[2], None, Some("Purchase")], "USD", Some("0")),
            // A usage line without status (a Savings Plan's negation) is neither.
            row(&[ri[0], ri[1], ri[2], None, Some("Usage")], "USD", Some("0")),
        ];
        let u = utilisation(&rows, Decimal::from(80)).expect("sums");
        assert_eq!(u.len(), 1);
        assert_eq!((u[0].used.to_string(), u[0].unused.to_string()), ("1.512".into(), "43.68".into()));
        assert_eq!(u[0].utilisation_percent.map(|p| p.to_string()), Some("3.35".into()));
        assert!(u[0].below_minimum);
    }

    #[test]
    fn coverage_is_covered_over_all_usage_without_the_unused_share() {
        let rows = [
            row(&[Some("EC2"), Some("Used")], "USD", Some("100")),
            row(&[Some("EC2"), None], "USD", Some("50")),
            row(&[Some("EC2"), Some("Unused")], "USD", Some("40")),
            row(&[Some("Savings Plans"), Some("Unused")], "USD", Some("9")),
            row(&[Some("RDS"), None], "USD", Some("30")),
            row(&[Some("S3"), None], "USD", None),
        ];
        let c = coverage(&rows, 1).expect("sums");
        type Got<'a> = (Option<&'a str>, String, String, Option<String>, bool);
        let got: Vec<Got<'_>> = c
            .iter()
            .map(|r| {
                (
                    r.keys[0].as_deref(),
                    r.covered.to_string(),
                    r.eligible.to_string(),
                    r.coverage_percent.map(|p| p.to_string()),
                    r.lines_without_basis,
                )
            })
            .collect();
        assert_eq!(
            got,
            vec![
                (Some("EC2"), "100".into(), "150".into(), Some("66.67".into()), false),
                (Some("RDS"), "0".into(), "30".into(), Some("0.00".into()), false),
                (Some("S3"), "0".into(), "0".into(), None, true),
            ]
        );
    }
}
