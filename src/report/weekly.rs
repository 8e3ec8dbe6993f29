//! The weekly report's tables, each built by its own function from the week's allocation rows
//! (and, where a table needs them, the findings, periods and FX rates). [`build_weekly`] only
//! reads the ledger and puts the tables in their order.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{Duration, NaiveDate};
use costledger_core::{ExactSum, MoneyError, format_ts, iso_week_label};

use super::{Cell, Chart, Report, ReportError, Series, Table, add, convert, pct_change, top};
use crate::allocation::{Reason, StoredBasis};
use crate::config::Config;
use crate::ledger::{AllocationRow, CheckKind, Finding, LedgerStore};

/// The allocation rows a week's tables read.
struct Week<'a> {
    monday: NaiveDate,
    sunday: NaiveDate,
    label: String,
    /// The last 8 weeks (the trend).
    rows: &'a [AllocationRow],
    this: Vec<&'a AllocationRow>,
    before: Vec<&'a AllocationRow>,
}

/// Per currency: total, allocated, shared, unallocated of the week.
type CurrencySplit = BTreeMap<String, [ExactSum; 4]>;
/// (reason, currency) → (amount, charges) of the week's unallocated spend.
type ByReason = BTreeMap<(String, String), (ExactSum, u64)>;
/// (currency, owner) → amount per week of the last 8.
type Trend = BTreeMap<(String, String), Vec<ExactSum>>;

/// Build the report of the ISO week starting `monday` from the stored allocation and findings.
pub async fn build_weekly(
    store: &dyn LedgerStore,
    cfg: &Config,
    monday: NaiveDate,
    convert_to: Option<&str>,
) -> Result<Report, ReportError> {
    let week = monday.to_string();
    let prev = (monday - Duration::days(7)).to_string();
    let first = (monday - Duration::days(49)).to_string();
    let rows = store.allocations(Some((&first, &week))).await?;
    let w = Week {
        monday,
        sunday: monday + Duration::days(6),
        label: iso_week_label(monday),
        rows: &rows,
        this: rows.iter().filter(|r| r.week == week).collect(),
        before: rows.iter().filter(|r| r.week == prev).collect(),
    };
    let mut tables = Vec::new();
    let (summary, per_currency) = summary(&w)?;
    tables.push(summary);
    if let Some(target) = convert_to {
        let rates = store.fx_rates().await?;
        tables.push(converted_total(&w, &rates, target)?);
    }
    tables.push(spend_by_provider(&w)?);
    tables.push(spend_by_owner(&w)?);
    let (by_reason_table, by_reason) = unallocated_by_reason(&w, &per_currency)?;
    tables.push(by_reason_table);
    tables.extend(unallocated_tops(&w)?);
    tables.push(tag_coverage(&w, cfg)?);
    let (lo, hi) = period_range(&w);
    let findings: Vec<Finding> = store.findings(None).await?;
    tables.extend(findings_tables(&w, &findings, &lo, &hi));
    let ends = store.source_data_end().await?;
    let periods = store.billing_periods().await?;
    tables.push(data_as_of(&periods, &ends, &lo, &hi));
    let (trend_table, trend, weeks) = owner_trend(&w)?;
    tables.push(trend_table);
    let charts = charts(&w, &trend, &weeks, &by_reason);
    Ok(Report { week: monday, label: w.label, tables, charts })
}

fn owner_of(r: &AllocationRow) -> String {
    r.owner.clone().unwrap_or_else(|| "(unallocated)".into())
}

fn none(s: &Option<String>) -> String {
    s.clone().unwrap_or_else(|| "(none)".into())
}

/// Spend this week per currency: total, previous week, change, allocated, shared, unallocated.
fn summary(w: &Week<'_>) -> Result<(Table, CurrencySplit), ReportError> {
    let mut cur_this: CurrencySplit = BTreeMap::new();
    for r in &w.this {
        let e = cur_this.entry(r.currency.clone()).or_default();
        e[0].merge(&r.amount)?;
        let i = match (&r.owner, StoredBasis::is_shared(&r.basis)) {
            (None, _) => 3,
            (Some(_), true) => 2,
            (Some(_), false) => 1,
        };
        e[i].merge(&r.amount)?;
    }
    let mut cur_prev: BTreeMap<String, ExactSum> = BTreeMap::new();
    for r in &w.before {
        cur_prev.entry(r.currency.clone()).or_default().merge(&r.amount)?;
    }
    let currencies: BTreeSet<String> = cur_this.keys().chain(cur_prev.keys()).cloned().collect();
    let mut rows = Vec::new();
    for c in &currencies {
        let t = cur_this.get(c).copied().unwrap_or_default();
        let p = cur_prev.get(c).copied().unwrap_or_default();
        rows.push(vec![
            Cell::text(c),
            Cell::Money(t[0]),
            Cell::Money(p),
            Cell::Money(t[0].checked_sub(&p)?),
            Cell::Pct(pct_change(&t[0], &p)?),
            Cell::Money(t[1]),
            Cell::Money(t[2]),
            Cell::Money(t[3]),
            Cell::Pct(t[3].percent_of(&t[0])),
        ]);
    }
    let table = Table {
        name: "summary",
        title: "Spend this week".into(),
        note: Some(
            "BilledCost (the invoice view), as every table built from the allocation. Allocated + shared + \
             unallocated = total, exactly (the conservation check proves it per billing account). Currencies are \
             never added together."
                .into(),
        ),
        headers: vec![
            "currency",
            "this week",
            "previous week",
            "change",
            "change %",
            "allocated",
            "shared",
            "unallocated",
            "unallocated %",
        ],
        rows,
    };
    Ok((table, cur_this))
}

/// This week and the previous one converted to `target`, each period at its month's rate.
fn converted_total(w: &Week<'_>, rates: &[crate::ledger::FxRate], target: &str) -> Result<Table, ReportError> {
    let mut total = [ExactSum::ZERO; 2];
    let mut used = BTreeSet::new();
    for (i, set) in [&w.this, &w.before].into_iter().enumerate() {
        for r in set {
            let converted = convert(rates, &r.amount, &r.currency, target, &r.period, &mut used)?;
            total[i].merge(&converted)?;
        }
    }
    Ok(Table {
        name: "converted_total",
        title: format!("Total converted to {target}"),
        note: Some(format!(
            "Each billing period's amounts converted at that month's rate: {}.",
            if used.is_empty() {
                "no conversion needed".to_string()
            } else {
                used.into_iter().collect::<Vec<_>>().join("; ")
            }
        )),
        headers: vec!["currency", "this week", "previous week", "change", "change %"],
        rows: vec![vec![
            Cell::text(target),
            Cell::Money(total[0]),
            Cell::Money(total[1]),
            Cell::Money(total[0].checked_sub(&total[1])?),
            Cell::Pct(pct_change(&total[0], &total[1])?),
        ]],
    })
}

/// Week-over-week rows keyed by `key`: the key's cells, this week, previous week, change, %.
fn week_over_week(w: &Week<'_>, key: &dyn Fn(&AllocationRow) -> Vec<String>) -> Result<Vec<Vec<Cell>>, MoneyError> {
    let mut a = BTreeMap::new();
    let mut b = BTreeMap::new();
    for r in &w.this {
        add(&mut a, key(r), &r.amount)?;
    }
    for r in &w.before {
        add(&mut b, key(r), &r.amount)?;
    }
    let keys: BTreeSet<&Vec<String>> = a.keys().chain(b.keys()).collect();
    let mut out = Vec::new();
    for k in keys {
        let t = a.get(k).copied().unwrap_or_default();
        let p = b.get(k).copied().unwrap_or_default();
        let mut row: Vec<Cell> = k.iter().map(Cell::text).collect();
        row.extend([Cell::Money(t), Cell::Money(p), Cell::Money(t.checked_sub(&p)?), Cell::Pct(pct_change(&t, &p)?)]);
        out.push(row);
    }
    Ok(out)
}

fn spend_by_provider(w: &Week<'_>) -> Result<Table, ReportError> {
    Ok(Table {
        name: "spend_by_provider",
        title: "Spend by provider".into(),
        note: None,
        headers: vec!["provider", "currency", "this week", "previous week", "change", "change %"],
        rows: week_over_week(w, &|r| vec![none(&r.provider_name), r.currency.clone()])?,
    })
}

/// Spend by owner, week over week, with this week's direct and shared parts.
fn spend_by_owner(w: &Week<'_>) -> Result<Table, ReportError> {
    let mut by_owner = week_over_week(w, &|r| vec![owner_of(r), r.currency.clone()])?;
    // "(unallocated)" last, then by owner name.
    by_owner.sort_by_key(|row| (row[0] == Cell::text("(unallocated)"), row[0].exact(), row[1].exact()));
    let mut split: BTreeMap<(String, String), [ExactSum; 2]> = BTreeMap::new();
    for r in &w.this {
        if let Some(o) = &r.owner {
            let e = split.entry((o.clone(), r.currency.clone())).or_default();
            e[usize::from(StoredBasis::is_shared(&r.basis))].merge(&r.amount)?;
        }
    }
    for row in by_owner.iter_mut() {
        let k = (row[0].exact(), row[1].exact());
        if k.0 == "(unallocated)" {
            row.insert(2, Cell::text(""));
            row.insert(3, Cell::text(""));
            continue;
        }
        let s = split.get(&k).copied().unwrap_or_default();
        row.insert(2, Cell::Money(s[0]));
        row.insert(3, Cell::Money(s[1]));
    }
    Ok(Table {
        name: "spend_by_owner",
        title: "Spend by owner".into(),
        note: Some("Shared costs are split by the allocation rules (see README, Allocation).".into()),
        headers: vec!["owner", "currency", "direct", "shared", "this week", "previous week", "change", "change %"],
        rows: by_owner,
    })
}

fn unallocated<'w, 'a>(w: &'w Week<'a>) -> impl Iterator<Item = &'w &'a AllocationRow> {
    w.this.iter().filter(|r| r.owner.is_none())
}

/// Unallocated spend by reason, with its share of the week's spend and what to do about it.
fn unallocated_by_reason(w: &Week<'_>, per_currency: &CurrencySplit) -> Result<(Table, ByReason), ReportError> {
    let mut by_reason: ByReason = BTreeMap::new();
    for r in unallocated(w) {
        let e = by_reason.entry((r.reason.clone().unwrap_or_default(), r.currency.clone())).or_default();
        e.0.merge(&r.amount)?;
        e.1 += r.rows;
    }
    let mut rows = Vec::new();
    for ((reason, cur), (amt, n)) in &by_reason {
        let total = per_currency.get(cur).map(|t| t[0]).unwrap_or_default();
        let advice = Reason::ALL.iter().find(|x| x.as_str() == reason).map(|x| x.advice()).unwrap_or("");
        rows.push(vec![
            Cell::text(reason),
            Cell::text(cur),
            Cell::Money(*amt),
            Cell::Int(*n),
            Cell::Pct(amt.percent_of(&total)),
            Cell::text(advice),
        ]);
    }
    let table = Table {
        name: "unallocated_by_reason",
        title: "Unallocated spend by reason".into(),
        note: None,
        headers: vec!["reason", "currency", "amount", "charges", "% of spend", "what to do"],
        rows,
    };
    Ok((table, by_reason))
}

/// The ten largest unallocated accounts, services and resources.
fn unallocated_tops(w: &Week<'_>) -> Result<Vec<Table>, ReportError> {
    let top_table = |name: &'static str,
                     title: &str,
                     headers: Vec<&'static str>,
                     key: &dyn Fn(&AllocationRow) -> Vec<String>|
     -> Result<Table, MoneyError> {
        let mut m = BTreeMap::new();
        for r in unallocated(w) {
            add(&mut m, key(r), &r.amount)?;
        }
        let rows = top(m.into_iter().collect(), 10)
            .into_iter()
            .map(|(k, v)| {
                let mut row: Vec<Cell> = k.into_iter().map(Cell::Text).collect();
                row.push(Cell::Money(v));
                row
            })
            .collect();
        Ok(Table { name, title: title.into(), note: None, headers, rows })
    };
    Ok(vec![
        top_table(
            "unallocated_top_accounts",
            "Top unallocated accounts",
            vec!["provider", "billing account", "sub account", "currency", "amount"],
            &|r| {
                vec![none(&r.provider_name), r.billing_account_id.clone(), none(&r.sub_account_id), r.currency.clone()]
            },
        )?,
        top_table(
            "unallocated_top_services",
            "Top unallocated services",
            vec!["service", "currency", "amount"],
            &|r| vec![none(&r.service_name), r.currency.clone()],
        )?,
        top_table(
            "unallocated_top_resources",
            "Top unallocated resources",
            vec!["resource", "reason", "currency", "amount"],
            &|r| vec![none(&r.resource_id), r.reason.clone().unwrap_or_default(), r.currency.clone()],
        )?,
    ])
}

/// Usage cost carrying every required tag, per billing account, against the target.
fn tag_coverage(w: &Week<'_>, cfg: &Config) -> Result<Table, ReportError> {
    let mut cov: BTreeMap<(String, String), [ExactSum; 2]> = BTreeMap::new();
    for r in &w.this {
        if let Some(c) = &r.coverage {
            let e = cov.entry((r.billing_account_id.clone(), r.currency.clone())).or_default();
            e[1].merge(&r.amount)?;
            if c == "tagged" {
                e[0].merge(&r.amount)?;
            }
        }
    }
    let target = cfg.checks.tag_coverage_target_percent;
    let rows = cov
        .into_iter()
        .map(|((acct, cur), [tagged, total])| {
            let pct = tagged.percent_of(&total);
            let status = match pct {
                Some(p) if p >= target => "ok",
                Some(_) => "below target",
                None => "n/a",
            };
            vec![
                Cell::Text(acct),
                Cell::Text(cur),
                Cell::Money(total),
                Cell::Money(tagged),
                Cell::Pct(pct),
                Cell::Pct(Some(target)),
                Cell::text(status),
            ]
        })
        .collect();
    Ok(Table {
        name: "tag_coverage",
        title: "Tag coverage".into(),
        note: Some(format!(
            "Share of Usage cost carrying every required tag ({}).",
            cfg.allocation.required_tags.join(", ")
        )),
        headers: vec!["billing account", "currency", "usage cost", "tagged cost", "coverage", "target", "status"],
        rows,
    })
}

/// The billing periods (`YYYY-MM`, first and last) the week and the 8-week trend fall in.
fn period_range(w: &Week<'_>) -> (String, String) {
    let months: BTreeSet<String> =
        [w.monday, w.sunday, w.monday - Duration::days(49)].iter().map(|d| d.format("%Y-%m").to_string()).collect();
    (months.iter().next().cloned().unwrap_or_default(), months.iter().last().cloned().unwrap_or_default())
}

/// Findings of the week's billing periods (anomalies of this week only), then restatements of
/// the last 8 weeks' periods.
fn findings_tables(w: &Week<'_>, findings: &[Finding], lo: &str, hi: &str) -> [Table; 2] {
    let finding_row = |f: &Finding| {
        vec![
            Cell::text(f.check.as_str()),
            Cell::text(&f.period),
            Cell::text(f.billing_account_id.clone().unwrap_or_default()),
            Cell::text(f.currency.clone().unwrap_or_default()),
            f.amount.map(Cell::Money).unwrap_or(Cell::text("")),
            Cell::text(&f.message),
        ]
    };
    let this_months = [w.monday.format("%Y-%m").to_string(), w.sunday.format("%Y-%m").to_string()];
    [
        Table {
            name: "findings",
            title: "Findings".into(),
            note: Some("Checks of the billing periods this week falls in (restatements are listed below).".into()),
            headers: vec!["check", "period", "billing account", "currency", "amount", "detail"],
            rows: findings
                .iter()
                .filter(|f| f.check != CheckKind::Restatement && this_months.contains(&f.period))
                // Anomalies of other weeks belong to those weeks' reports.
                .filter(|f| {
                    f.check != CheckKind::Anomaly || f.subject.as_deref().is_some_and(|s| s.ends_with(&w.label))
                })
                .map(finding_row)
                .collect(),
        },
        Table {
            name: "restatements",
            title: "Restatements".into(),
            note: Some(
                "Final billing periods or reported weeks that changed afterwards, in the last 8 weeks' periods.".into(),
            ),
            headers: vec!["check", "period", "billing account", "currency", "change", "detail"],
            rows: findings
                .iter()
                .filter(|f| f.check == CheckKind::Restatement && f.period.as_str() >= lo && f.period.as_str() <= hi)
                .map(finding_row)
                .collect(),
        },
    ]
}

/// Per source and billing period in range: state and the latest charge end.
fn data_as_of(
    periods: &[crate::ledger::PeriodRow],
    ends: &[(String, String, chrono::DateTime<chrono::Utc>)],
    lo: &str,
    hi: &str,
) -> Table {
    let mut rows = Vec::new();
    for p in periods {
        if p.period.as_str() < lo || p.period.as_str() > hi {
            continue;
        }
        let end = ends.iter().find(|(s, per, _)| *s == p.source && *per == p.period).map(|e| format_ts(e.2));
        rows.push(vec![
            Cell::text(&p.source),
            Cell::text(&p.period),
            Cell::text(p.state.as_str()),
            Cell::text(end.unwrap_or_else(|| "-".into())),
            Cell::text(p.current_load.map(|l| l.to_string()).unwrap_or_else(|| "-".into())),
        ]);
    }
    Table {
        name: "data_as_of",
        title: "Data as of".into(),
        note: Some("Per source and billing period: state (open, final, corrected) and the latest charge end.".into()),
        headers: vec!["source", "period", "state", "data through", "current load"],
        rows,
    }
}

/// Spend by owner over the last 8 weeks (the table behind the trend chart).
fn owner_trend(w: &Week<'_>) -> Result<(Table, Trend, Vec<NaiveDate>), ReportError> {
    let weeks: Vec<NaiveDate> = (0..8).rev().map(|i| w.monday - Duration::days(7 * i)).collect();
    let mut trend: Trend = BTreeMap::new();
    for r in w.rows {
        let Some(i) = weeks.iter().position(|d| d.to_string() == r.week) else { continue };
        let e = trend.entry((r.currency.clone(), owner_of(r))).or_insert_with(|| vec![ExactSum::ZERO; 8]);
        e[i].merge(&r.amount)?;
    }
    let mut rows = Vec::new();
    for ((cur, owner), vals) in &trend {
        for (i, v) in vals.iter().enumerate() {
            rows.push(vec![Cell::text(iso_week_label(weeks[i])), Cell::text(owner), Cell::text(cur), Cell::Money(*v)]);
        }
    }
    let table = Table {
        name: "owner_trend",
        title: "Spend by owner, last 8 weeks".into(),
        note: None,
        headers: vec!["week", "owner", "currency", "amount"],
        rows,
    };
    Ok((table, trend, weeks))
}

/// One trend chart per currency, then one bar chart of unallocated spend by reason per currency.
fn charts(w: &Week<'_>, trend: &Trend, weeks: &[NaiveDate], by_reason: &ByReason) -> Vec<Chart> {
    let labels: Vec<String> = weeks.iter().map(|d| iso_week_label(*d)).collect();
    let mut charts = Vec::new();
    let trend_currencies: BTreeSet<&String> = trend.keys().map(|k| &k.0).collect();
    for cur in trend_currencies {
        let series = trend
            .iter()
            .filter(|((c, _), _)| c == cur)
            .map(|((_, o), v)| Series { name: o.clone(), values: v.clone() })
            .collect();
        charts.push(Chart {
            title: format!("Spend by owner over the last 8 weeks ({cur})"),
            currency: cur.clone(),
            labels: labels.clone(),
            series,
            bars: false,
        });
    }
    let reason_currencies: BTreeSet<&String> = by_reason.keys().map(|k| &k.1).collect();
    for cur in reason_currencies {
        let items: Vec<(&String, ExactSum)> =
            by_reason.iter().filter(|((_, c), _)| c == cur).map(|((r, _), (a, _))| (r, *a)).collect();
        charts.push(Chart {
            title: format!("Unallocated by reason, {} ({cur})", w.label),
            currency: cur.clone(),
            labels: items.iter().map(|(r, _)| (*r).clone()).collect(),
            series: vec![Series { name: "unallocated".into(), values: items.iter().map(|(_, a)| *a).collect() }],
            bars: true,
        });
    }
    charts
}
