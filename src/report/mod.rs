//! The weekly governance report: one data model ([`Report`]: tables and chart
//! series) rendered three ways — Markdown, one self-contained HTML page with SVG charts, and a
//! CSV per table. Deterministic: the same ledger gives the same bytes (no clock inside; weeks
//! are passed in). Markdown and HTML show amounts rounded half-to-even to 2 places; the CSVs
//! carry the exact amounts.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use chrono::{Duration, NaiveDate};
use costledger_core::{ExactSum, MoneyError};
use rust_decimal::Decimal;

use crate::config::ReportFormat;
use crate::ledger::{FxRate, LedgerError};

mod chart;
mod weekly;

pub use weekly::build_weekly;

#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error(transparent)]
    Ledger(#[from] LedgerError),
    #[error("{0}")]
    Money(#[from] MoneyError),
    #[error(transparent)]
    Fx(#[from] crate::fx::FxError),
    #[error("cannot write {path}: {source}")]
    Write { path: String, source: std::io::Error },
    #[error("drawing a chart failed: {0}")]
    Chart(String),
    #[error("'{0}' is not an ISO week such as 2026-W47")]
    Week(String),
}

/// Parse `2026-W47` to the Monday of that ISO week.
pub fn parse_week(s: &str) -> Result<NaiveDate, ReportError> {
    let bad = || ReportError::Week(s.to_string());
    let (y, w) = s.trim().split_once("-W").ok_or_else(bad)?;
    let y: i32 = y.parse().map_err(|_| bad())?;
    let w: u32 = w.parse().map_err(|_| bad())?;
    NaiveDate::from_isoywd_opt(y, w, chrono::Weekday::Mon).ok_or_else(bad)
}

/// The last complete ISO week before `today`.
pub fn last_complete_week(today: NaiveDate) -> NaiveDate {
    use chrono::Datelike;
    today - Duration::days(i64::from(today.weekday().num_days_from_monday()) + 7)
}

/// The week `report weekly` describes when none is given: the last complete calendar week,
/// unless the ledger's data ends before it — then the last week wholly covered by data
/// (`data_end` is the latest ChargePeriodEnd, exclusive). `true` when the data chose it.
pub fn default_week(today: NaiveDate, data_end: Option<NaiveDate>) -> (NaiveDate, bool) {
    use chrono::Datelike;
    let calendar = last_complete_week(today);
    let Some(end) = data_end else { return (calendar, false) };
    // The latest Monday whose week (Monday..next Monday) ends by `end`.
    let last_full = end - Duration::days(7);
    let by_data = last_full - Duration::days(i64::from(last_full.weekday().num_days_from_monday()));
    if by_data < calendar { (by_data, true) } else { (calendar, false) }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cell {
    Text(String),
    Money(ExactSum),
    /// A percentage (2 places); `None` shows as n/a.
    Pct(Option<Decimal>),
    Int(u64),
}

impl Cell {
    fn text(s: impl Into<String>) -> Cell {
        Cell::Text(s.into())
    }
    fn display(&self) -> String {
        match self {
            Cell::Text(s) => s.clone(),
            Cell::Money(m) => m.to_fixed(2),
            Cell::Pct(Some(p)) => format!("{p}%"),
            Cell::Pct(None) => "n/a".into(),
            Cell::Int(i) => i.to_string(),
        }
    }
    fn exact(&self) -> String {
        match self {
            Cell::Text(s) => s.clone(),
            Cell::Money(m) => m.to_string(),
            Cell::Pct(Some(p)) => p.to_string(),
            Cell::Pct(None) => String::new(),
            Cell::Int(i) => i.to_string(),
        }
    }
    fn numeric(&self) -> bool {
        !matches!(self, Cell::Text(_))
    }
}

#[derive(Debug, Clone)]
pub struct Table {
    /// File stem of its CSV.
    pub name: &'static str,
    pub title: String,
    pub note: Option<String>,
    pub headers: Vec<&'static str>,
    pub rows: Vec<Vec<Cell>>,
}

/// One line of a chart: a name and a value per point.
#[derive(Debug, Clone)]
pub struct Series {
    pub name: String,
    pub values: Vec<ExactSum>,
}

#[derive(Debug, Clone)]
pub struct Chart {
    pub title: String,
    pub currency: String,
    /// X labels (weeks) for line charts; bar labels for bar charts.
    pub labels: Vec<String>,
    pub series: Vec<Series>,
    pub bars: bool,
}

#[derive(Debug, Clone)]
pub struct Report {
    pub week: NaiveDate,
    pub label: String,
    pub tables: Vec<Table>,
    pub charts: Vec<Chart>,
}

pub(crate) fn pct_change(this: &ExactSum, prev: &ExactSum) -> Result<Option<Decimal>, MoneyError> {
    Ok(this.checked_sub(prev)?.percent_of(&prev.abs()))
}

pub(crate) fn add(m: &mut BTreeMap<Vec<String>, ExactSum>, k: Vec<String>, v: &ExactSum) -> Result<(), MoneyError> {
    m.entry(k).or_default().merge(v)
}

pub(crate) fn top(mut v: Vec<(Vec<String>, ExactSum)>, n: usize) -> Vec<(Vec<String>, ExactSum)> {
    v.sort_by(|a, b| b.1.abs().cmp(&a.1.abs()).then(a.0.cmp(&b.0)));
    v.truncate(n);
    v
}

/// `amount` converted at `month`'s rate, noting the rate used.
pub(crate) fn convert(
    rates: &[FxRate],
    amount: &ExactSum,
    from: &str,
    to: &str,
    month: &str,
    used: &mut BTreeSet<String>,
) -> Result<ExactSum, ReportError> {
    let (converted, rate) = crate::fx::convert(rates, amount, from, to, month)?;
    used.extend(rate.map(crate::fx::describe));
    Ok(converted)
}

// ---------------------------------------------------------------------------------------------
// Renderers
// ---------------------------------------------------------------------------------------------

/// The "why it changed" table: the largest changes per currency between the previous week and
/// this one, each split into volume, rate, mix, new, gone, no quantity and FX (`explain`).
pub fn why_it_changed(e: &crate::explain::Explanation, top: usize) -> Table {
    let mut rows = Vec::new();
    let mut shown: BTreeMap<&str, usize> = BTreeMap::new();
    for g in e.groups.iter().filter(|g| !g.others && !g.change.is_zero()) {
        let n = shown.entry(g.currency.as_str()).or_default();
        if *n == top {
            continue;
        }
        *n += 1;
        let mut row: Vec<Cell> =
            g.keys.iter().map(|k| Cell::text(k.clone().unwrap_or_else(|| crate::query::MISSING.into()))).collect();
        row.push(Cell::text(&g.currency));
        let p = &g.parts;
        for v in [g.before, g.after, g.change, p.volume, p.rate, p.mix, p.new, p.gone, p.no_quantity, p.fx] {
            row.push(Cell::Money(v));
        }
        rows.push(row);
    }
    let mut headers: Vec<&'static str> = vec!["service"];
    headers.extend([
        "currency",
        "previous week",
        "this week",
        "change",
        "volume",
        "rate",
        "mix",
        "new",
        "gone",
        "no quantity",
        "fx",
    ]);
    Table {
        name: "why_it_changed",
        title: format!("Why it changed: {} → {}, by service ({}, `report.metric`)", e.from.label, e.to.label, e.metric),
        note: Some(format!(
            "The {top} largest changes per currency. volume + rate + mix + new − gone + no quantity + fx = change, \
             exactly: volume is more or less usage at last week's price, rate the same SKUs at a different price, mix \
             a shift between SKUs, new and gone services (or units) billed in one week only, no quantity credits, tax \
             and fees. `costledger explain --from {} --to {}` shows every group.",
            e.from.label, e.to.label
        )),
        headers,
        rows,
    }
}

/// The commitments section: utilisation per commitment (the least used first) and coverage per
/// service (the largest usage first, at most `top` rows per currency).
pub fn commitment_tables(c: &crate::commitments::Commitments, top: usize) -> Vec<Table> {
    let pct = |p: Option<Decimal>| Cell::Pct(p);
    let utilisation = c
        .utilisation
        .iter()
        .map(|u| {
            vec![
                Cell::text(&u.commitment),
                Cell::text(u.commitment_type.clone().unwrap_or_default()),
                Cell::text(&u.currency),
                Cell::Money(u.used),
                Cell::Money(u.unused),
                pct(u.utilisation_percent),
                Cell::text(if u.below_minimum { "below minimum" } else { "" }),
            ]
        })
        .collect();
    let mut shown: BTreeMap<&str, usize> = BTreeMap::new();
    let mut coverage = Vec::new();
    for v in &c.coverage {
        let n = shown.entry(v.currency.as_str()).or_default();
        if *n == top {
            continue;
        }
        *n += 1;
        let mut row: Vec<Cell> =
            v.keys.iter().map(|k| Cell::text(k.clone().unwrap_or_else(|| crate::query::MISSING.into()))).collect();
        row.extend([Cell::text(&v.currency), Cell::Money(v.covered), Cell::Money(v.eligible), pct(v.coverage_percent)]);
        coverage.push(row);
    }
    vec![
        Table {
            name: "commitment_utilisation",
            title: "Commitment utilisation".into(),
            note: Some(format!(
                "Used ÷ (used + unused) EffectiveCost per commitment (reservation, savings plan, committed use \
                 discount); below {}% (`checks.commitment_utilization_min`) is flagged.",
                c.utilisation_minimum_percent
            )),
            headers: vec!["commitment", "type", "currency", "used", "unused", "utilisation", "flag"],
            rows: utilisation,
        },
        Table {
            name: "commitment_coverage",
            title: format!("Commitment coverage by service ({})", c.basis),
            note: Some(format!(
                "Usage covered by commitments ÷ all usage, both on {} (unused commitment lines are not usage); the \
                 {top} largest services per currency.",
                c.basis
            )),
            headers: vec!["service", "currency", "covered", "usage", "coverage"],
            rows: coverage,
        },
    ]
}

/// Spend by owner in the report's metric (`report.metric`, e.g. EffectiveCost) from a query by
/// owner and ISO week over the previous week and this one. Shared rules' charges are the owner
/// `shared` here (the allocation tables split them).
pub fn owners_in_metric(r: &crate::query::aggregate::QueryResult, prev: &str, this: &str) -> Result<Table, MoneyError> {
    let mut by: BTreeMap<(String, String), [ExactSum; 2]> = BTreeMap::new();
    for row in &r.rows {
        let owner = row.keys[0].clone().unwrap_or_else(|| "(unallocated)".into());
        let e = by.entry((row.currency.clone(), owner)).or_default();
        let v = row.values[0].unwrap_or_default();
        match row.bucket.as_deref() {
            Some(b) if b == this => e[0].merge(&v)?,
            Some(b) if b == prev => e[1].merge(&v)?,
            _ => {}
        }
    }
    let mut rows = Vec::new();
    for ((currency, owner), [t, p]) in by {
        rows.push(vec![
            Cell::text(owner),
            Cell::text(currency),
            Cell::Money(t),
            Cell::Money(p),
            Cell::Money(t.checked_sub(&p)?),
            Cell::Pct(pct_change(&t, &p)?),
        ]);
    }
    let metric = r.metrics.first().copied().unwrap_or("BilledCost");
    Ok(Table {
        name: "owners_by_metric",
        title: format!("Spend by owner ({metric}, `report.metric`)"),
        note: Some(format!(
            "{metric} by the owner the allocation rules give each charge; a shared rule's charges are the owner \
             `shared` (the BilledCost tables split them)."
        )),
        headers: vec!["owner", "currency", "this week", "previous week", "change", "change %"],
        rows,
    })
}

/// BilledCost (cash) and EffectiveCost (amortised) by service, for the services where they
/// differ (answer of a query with those two metrics by service); `None` when none differ.
pub fn billed_vs_amortised(r: &crate::query::aggregate::QueryResult) -> Option<Table> {
    let mut rows = Vec::new();
    for row in &r.rows {
        let billed = row.values[0].unwrap_or_default();
        let Some(effective) = row.values[1] else { continue };
        if billed == effective {
            continue;
        }
        let diff = effective.checked_sub(&billed).ok()?;
        rows.push(vec![
            Cell::text(row.keys[0].clone().unwrap_or_else(|| crate::query::MISSING.into())),
            Cell::text(&row.currency),
            Cell::Money(billed),
            Cell::Money(effective),
            Cell::Money(diff),
        ]);
    }
    if rows.is_empty() {
        return None;
    }
    Some(Table {
        name: "billed_vs_amortised",
        title: "Billed and amortised cost by service".into(),
        note: Some(
            "BilledCost is what the invoice charges this week; EffectiveCost spreads commitment purchases over the \
             usage they cover and applies discounts. Only services where the two differ are listed."
                .into(),
        ),
        headers: vec!["service", "currency", "BilledCost", "EffectiveCost", "difference"],
        rows,
    })
}

/// The CSV names of the report's unit-cost tables (at most this many: `report.unit_costs`).
pub const UNIT_COST_TABLES: [&str; 4] = ["unit_costs", "unit_costs_2", "unit_costs_3", "unit_costs_4"];

/// A unit cost of the week (`report.unit_costs`): cost, the metric's sum, their quotient.
pub fn unit_cost_table(u: &crate::unit_costs::UnitCosts, index: usize) -> Table {
    let rows = u
        .rows
        .iter()
        .map(|r| {
            let mut c: Vec<Cell> =
                r.keys.iter().map(|k| Cell::text(k.clone().unwrap_or_else(|| crate::query::MISSING.into()))).collect();
            c.push(Cell::text(&r.currency));
            c.push(Cell::Money(r.cost));
            c.push(Cell::text(r.quantity.map(|q| q.to_string()).unwrap_or_default()));
            c.push(r.unit_cost.map(|x| Cell::text(x.to_string())).unwrap_or_else(|| Cell::text("n/a")));
            c
        })
        .collect();
    // Headers are static names: a dimension's own, `tag` for a tag key.
    let mut headers: Vec<&'static str> = u
        .group_by
        .iter()
        .map(|g| crate::query::DIMENSIONS.iter().find(|d| d.name == g.as_str()).map_or("tag", |d| d.name))
        .collect();
    headers.extend(["currency", "cost", "quantity", "unit cost"]);
    Table {
        name: UNIT_COST_TABLES.get(index).copied().unwrap_or("unit_costs"),
        title: format!("Unit cost: {} per {} {}", u.cost_metric, u.per, u.per_metric),
        note: Some(format!(
            "The week's {} divided by the {} imported with `costledger metrics import`, per {}; unit costs rounded \
             half-to-even to {} places, the cost and the quantity exact in the CSV.",
            u.cost_metric,
            u.per_metric,
            if u.group_by.is_empty() { "the whole week".to_string() } else { u.group_by.join(", ") },
            u.places
        )),
        headers,
        rows,
    }
}

/// The budgets section: each budget as of the end of the report's week.
pub fn budget_table(statuses: &[crate::budgets::BudgetStatus]) -> Table {
    let rows = statuses
        .iter()
        .map(|s| {
            let reached = match (s.actual_crossed, s.forecast_crossed) {
                (Some(a), _) => format!("{a}% reached"),
                (None, Some(f)) => format!("{f}% forecast"),
                (None, None) => String::new(),
            };
            vec![
                Cell::text(&s.name),
                Cell::text(&s.period),
                Cell::text(&s.currency),
                Cell::Money(ExactSum::from(s.amount)),
                Cell::Money(s.actual),
                Cell::Pct(s.actual_percent),
                Cell::Money(s.forecast),
                Cell::Pct(s.forecast_percent),
                Cell::text(reached),
            ]
        })
        .collect();
    Table {
        name: "budgets",
        title: "Budgets".into(),
        note: statuses.first().map(|s| {
            format!(
                "Actual to {} and the forecast to the period's end (each remaining day at the mean of the last 4 same \
                 weekdays with 4 weeks of history, else of the last 7 days).",
                s.as_of - Duration::days(1)
            )
        }),
        headers: vec![
            "budget",
            "period",
            "currency",
            "amount",
            "actual",
            "actual %",
            "forecast",
            "forecast %",
            "threshold",
        ],
        rows,
    }
}

fn md_escape(s: &str) -> String {
    s.replace('|', "\\|").replace('\n', " ")
}

pub fn render_markdown(r: &Report) -> String {
    let mut s = String::new();
    let sunday = r.week + Duration::days(6);
    let _ = writeln!(s, "# Weekly cost governance report — {}\n", r.label);
    let _ = writeln!(
        s,
        "Week {} to {} (charges by ChargePeriodStart). Amounts rounded to 2 places; the CSV files carry every digit.\n",
        r.week, sunday
    );
    for t in &r.tables {
        let _ = writeln!(s, "## {}\n", t.title);
        if let Some(n) = &t.note {
            let _ = writeln!(s, "{n}\n");
        }
        if t.rows.is_empty() {
            let _ = writeln!(s, "_None._\n");
            continue;
        }
        let _ = writeln!(s, "| {} |", t.headers.join(" | "));
        let align: Vec<&str> = t
            .headers
            .iter()
            .enumerate()
            .map(|(i, _)| if t.rows[0].get(i).is_some_and(Cell::numeric) { "---:" } else { "---" })
            .collect();
        let _ = writeln!(s, "| {} |", align.join(" | "));
        for row in &t.rows {
            let cells: Vec<String> = row.iter().map(|c| md_escape(&c.display())).collect();
            let _ = writeln!(s, "| {} |", cells.join(" | "));
        }
        s.push('\n');
    }
    s
}

/// One CSV per table: (file name, bytes). Exact amounts, CRLF, RFC 4180.
pub fn render_csvs(r: &Report) -> Result<Vec<(String, Vec<u8>)>, csv::Error> {
    let mut out = Vec::new();
    for t in &r.tables {
        let mut w = csv::WriterBuilder::new().terminator(csv::Terminator::CRLF).from_writer(Vec::new());
        w.write_record(&t.headers)?;
        for row in &t.rows {
            // Formula neutralisation is for text: a number (a negative amount) stays a number.
            w.write_record(row.iter().map(|c| match c {
                Cell::Text(t) => crate::export::neutralise(t).into_owned(),
                other => other.exact(),
            }))?;
        }
        let bytes = w.into_inner().map_err(|e| csv::Error::from(e.into_error()))?;
        out.push((format!("{}.csv", t.name), bytes));
    }
    Ok(out)
}

pub fn xml_escape(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&#39;"),
            c => o.push(c),
        }
    }
    o
}

const CSS: &str = "body{font-family:system-ui,-apple-system,'Segoe UI',sans-serif;margin:2em auto;max-width:1100px;\
color:#1d2433;padding:0 1em}h1{font-size:1.6em}h2{font-size:1.2em;margin-top:1.6em;border-bottom:1px solid #d0d5dd}\
table{border-collapse:collapse;margin:.5em 0;font-size:.9em}th,td{border:1px solid #d0d5dd;padding:.25em .6em}\
th{background:#f2f4f7;text-align:left}td.n{text-align:right;font-variant-numeric:tabular-nums}\
p.note{color:#475467;font-size:.9em}figure{margin:1em 0}figcaption{font-weight:600;margin-bottom:.3em}\
@media print{body{margin:0;max-width:none}h2{page-break-after:avoid}table,figure{page-break-inside:avoid}}";

pub fn render_html(r: &Report) -> Result<String, ReportError> {
    let mut s = String::new();
    let title = format!("Weekly cost governance report — {}", r.label);
    let _ = write!(
        s,
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\"/>\n<title>{}</title>\n<style>{CSS}</style>\n</head>\n<body>\n",
        xml_escape(&title)
    );
    let _ = writeln!(s, "<h1>{}</h1>", xml_escape(&title));
    let _ = writeln!(
        s,
        "<p class=\"note\">Week {} to {} (charges by ChargePeriodStart). Amounts rounded to 2 places; the CSV files carry every digit.</p>",
        r.week,
        r.week + Duration::days(6)
    );
    for (i, t) in r.tables.iter().enumerate() {
        // The charts follow the summary: the first thing a manager reads.
        if i == 1 && !r.charts.is_empty() {
            let _ = writeln!(s, "<h2>Charts</h2>");
            for c in &r.charts {
                let svg = chart::render_svg(c).map_err(ReportError::Chart)?;
                let _ = writeln!(s, "<figure>\n<figcaption>{}</figcaption>\n{}\n</figure>", xml_escape(&c.title), svg);
            }
        }
        let _ = writeln!(s, "<h2>{}</h2>", xml_escape(&t.title));
        if let Some(n) = &t.note {
            let _ = writeln!(s, "<p class=\"note\">{}</p>", xml_escape(n));
        }
        if t.rows.is_empty() {
            let _ = writeln!(s, "<p><em>None.</em></p>");
            continue;
        }
        s.push_str("<table>\n<thead><tr>");
        for h in &t.headers {
            let _ = write!(s, "<th>{}</th>", xml_escape(h));
        }
        s.push_str("</tr></thead>\n<tbody>\n");
        for row in &t.rows {
            s.push_str("<tr>");
            for c in row {
                let class = if c.numeric() { " class=\"n\"" } else { "" };
                let _ = write!(s, "<td{class}>{}</td>", xml_escape(&c.display()));
            }
            s.push_str("</tr>\n");
        }
        s.push_str("</tbody>\n</table>\n");
    }
    s.push_str("</body>\n</html>\n");
    Ok(s)
}

fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), ReportError> {
    crate::outfile::write_bytes(path, bytes)
        .map_err(|source| ReportError::Write { path: path.display().to_string(), source })
}

/// Write the report in the given formats into `dir`; returns the paths written.
pub fn write_report(r: &Report, dir: &Path, formats: &[ReportFormat]) -> Result<Vec<PathBuf>, ReportError> {
    std::fs::create_dir_all(dir).map_err(|source| ReportError::Write { path: dir.display().to_string(), source })?;
    let stem = format!("weekly-{}", r.label);
    let mut out = Vec::new();
    for f in formats {
        match f {
            ReportFormat::Md => {
                let p = dir.join(format!("{stem}.md"));
                write_atomic(&p, render_markdown(r).as_bytes())?;
                out.push(p);
            }
            ReportFormat::Html => {
                let p = dir.join(format!("{stem}.html"));
                write_atomic(&p, render_html(r)?.as_bytes())?;
                out.push(p);
            }
            ReportFormat::Csv => {
                let d = dir.join(format!("{stem}-csv"));
                std::fs::create_dir_all(&d)
                    .map_err(|source| ReportError::Write { path: d.display().to_string(), source })?;
                for (name, bytes) in render_csvs(r).map_err(|e| ReportError::Write {
                    path: d.display().to_string(),
                    source: std::io::Error::other(e.to_string()),
                })? {
                    write_atomic(&d.join(name), &bytes)?;
                }
                out.push(d);
            }
        }
    }
    Ok(out)
}

/// The week's total per currency (what the report said; a later change is a restatement).
pub fn week_totals(r: &Report) -> costledger_core::Totals {
    let mut t = costledger_core::Totals::default();
    if let Some(summary) = r.tables.iter().find(|t| t.name == "summary") {
        for row in &summary.rows {
            if let (Cell::Text(c), Cell::Money(m)) = (&row[0], &row[1]) {
                t.0.insert(c.clone(), *m);
            }
        }
    }
    t
}

#[cfg(test)]
mod csv_tests {
    use super::*;

    #[test]
    fn the_default_week_is_the_last_complete_week_with_data() {
        let d = |s: &str| NaiveDate::parse_from_str(s, "%Y-%m-%d").expect("date");
        // Fresh data: the last complete calendar week.
        assert_eq!(default_week(d("2026-12-03"), Some(d("2026-12-03"))), (d("2026-11-23"), false));
        // Data ending Sunday night (exclusive end Monday 00:00): that week is complete.
        assert_eq!(default_week(d("2026-12-03"), Some(d("2026-11-02"))), (d("2026-10-26"), true));
        // Data ending on a Saturday: that week is not complete, the one before is.
        assert_eq!(default_week(d("2026-12-03"), Some(d("2026-11-01"))), (d("2026-10-19"), true));
        assert_eq!(default_week(d("2026-12-03"), None), (d("2026-11-23"), false));
    }

    /// Report CSVs neutralise text cells against formula injection, never numbers: a negative
    /// amount stays `-76.72` (it was written `'-76.72`, which a spreadsheet reads as text).
    #[test]
    fn negative_amounts_stay_numbers_and_text_is_neutralised() {
        let r = Report {
            week: NaiveDate::from_ymd_opt(2026, 10, 5).expect("date"),
            label: "2026-W41".into(),
            tables: vec![Table {
                name: "t",
                title: "t".into(),
                note: None,
                headers: vec!["owner", "amount", "change"],
                rows: vec![vec![
                    Cell::text("-cmd|' /C calc'!A0"),
                    Cell::Money(ExactSum::from(Decimal::new(-7672, 2))),
                    Cell::Pct(Some(Decimal::new(-1250, 2))),
                ]],
            }],
            charts: Vec::new(),
        };
        let csvs = render_csvs(&r).expect("csv");
        let text = String::from_utf8(csvs[0].1.clone()).expect("utf-8");
        assert_eq!(text, "owner,amount,change\r\n'-cmd|' /C calc'!A0,-76.72,-12.50\r\n");
    }
}
