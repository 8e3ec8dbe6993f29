//! Budgets and their period-end forecast. Pure: the daily costs come from a cost query
//! (`app::budgets`); the periods, the forecast and the threshold decisions are here.
//!
//! **Forecast** of a budget period (a month or a quarter) as of a day `as_of` (the first day
//! not yet complete): the actual cost of `[start, as_of)` plus, for each remaining day, a daily
//! rate from the complete days before `as_of`:
//! - with at least 28 days of history (from the first day with data in the scope): the
//!   weekday's rate, the mean of the last 4 same weekdays (weekday seasonality: weekends cost
//!   differently);
//! - with fewer: the mean of the last 7 complete days (or of all of them when fewer than 7);
//! - with none: no forecast beyond the actual.
//!
//! Each daily rate is rounded half-to-even to 4 decimal places; the forecast is the actual plus
//! the exact sum of the rates of the remaining days. Percentages of the budget are rounded
//! half-to-even to 2 places.

use std::collections::BTreeMap;

use chrono::{Datelike, Duration, NaiveDate};
use costledger_core::{ExactSum, MoneyError};
use rust_decimal::{Decimal, RoundingStrategy};
use serde::Serialize;

/// The length of a budget.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BudgetPeriod {
    Month,
    Quarter,
}

impl BudgetPeriod {
    pub fn parse(s: &str) -> Option<BudgetPeriod> {
        match s.trim().to_ascii_lowercase().as_str() {
            "month" | "monthly" => Some(BudgetPeriod::Month),
            "quarter" | "quarterly" => Some(BudgetPeriod::Quarter),
            _ => None,
        }
    }

    /// The period holding `day`: `[start, end)` and its label (`2026-11`, `2026-Q4`).
    pub fn containing(self, day: NaiveDate) -> (NaiveDate, NaiveDate, String) {
        let first_month = match self {
            BudgetPeriod::Month => day.month(),
            BudgetPeriod::Quarter => (day.month() - 1) / 3 * 3 + 1,
        };
        let months = match self {
            BudgetPeriod::Month => 1,
            BudgetPeriod::Quarter => 3,
        };
        let start = NaiveDate::from_ymd_opt(day.year(), first_month, 1).unwrap_or(day);
        let end = start.checked_add_months(chrono::Months::new(months)).unwrap_or(start);
        let label = match self {
            BudgetPeriod::Month => format!("{:04}-{:02}", day.year(), day.month()),
            BudgetPeriod::Quarter => format!("{:04}-Q{}", day.year(), (first_month - 1) / 3 + 1),
        };
        (start, end, label)
    }
}

/// How the rest of the period was forecast.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ForecastMethod {
    /// The mean of the last 4 same weekdays, per remaining day.
    WeekdaySeasonality,
    /// The mean of the last complete days (up to 7).
    RunRate,
    /// No complete day before `as_of`: the forecast is the actual.
    NoHistory,
    /// The period has ended: the forecast is the actual.
    PeriodEnded,
}

/// The forecast of one period.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Forecast {
    pub actual: ExactSum,
    pub forecast: ExactSum,
    pub method: ForecastMethod,
    /// Complete days the rates were taken from.
    pub history_days: u32,
}

fn rate(sum: &ExactSum, days: u32) -> Result<Decimal, MoneyError> {
    let d = sum.to_exact_decimal().ok_or(MoneyError::SumOverflow)?;
    let r = d.checked_div(Decimal::from(days)).ok_or(MoneyError::SumOverflow)?;
    Ok(r.round_dp_with_strategy(4, RoundingStrategy::MidpointNearestEven))
}

/// Forecast `[start, end)` as of `as_of` from daily costs (`daily`; a day without an entry
/// cost nothing) with data from `first_day` on.
pub fn forecast(
    daily: &BTreeMap<NaiveDate, ExactSum>,
    first_day: Option<NaiveDate>,
    start: NaiveDate,
    end: NaiveDate,
    as_of: NaiveDate,
) -> Result<Forecast, MoneyError> {
    let day = |d: NaiveDate| daily.get(&d).copied().unwrap_or_default();
    let mut actual = ExactSum::ZERO;
    let mut d = start;
    while d < end.min(as_of) {
        actual.merge(&day(d))?;
        d += Duration::days(1);
    }
    if as_of >= end {
        return Ok(Forecast { actual, forecast: actual, method: ForecastMethod::PeriodEnded, history_days: 0 });
    }
    let history = match first_day {
        Some(f) if f < as_of => u32::try_from((as_of - f).num_days()).unwrap_or(u32::MAX),
        _ => 0,
    };
    if history == 0 {
        return Ok(Forecast { actual, forecast: actual, method: ForecastMethod::NoHistory, history_days: 0 });
    }
    let remaining: Vec<NaiveDate> = {
        let mut v = Vec::new();
        let mut d = as_of.max(start);
        while d < end {
            v.push(d);
            d += Duration::days(1);
        }
        v
    };
    let mut rest = ExactSum::ZERO;
    let (method, used) = if history >= 28 {
        // The last 4 of each weekday before as_of.
        let mut by_weekday: BTreeMap<u32, Decimal> = BTreeMap::new();
        for back in 1..=7 {
            let last = as_of - Duration::days(back);
            let mut s = ExactSum::ZERO;
            for w in 0..4 {
                s.merge(&day(last - Duration::weeks(w)))?;
            }
            by_weekday.insert(last.weekday().num_days_from_monday(), rate(&s, 4)?);
        }
        for d in &remaining {
            rest.add(by_weekday.get(&d.weekday().num_days_from_monday()).copied().unwrap_or_default())?;
        }
        (ForecastMethod::WeekdaySeasonality, 28)
    } else {
        let n = history.min(7);
        let mut s = ExactSum::ZERO;
        for back in 1..=i64::from(n) {
            s.merge(&day(as_of - Duration::days(back)))?;
        }
        let r = rate(&s, n)?;
        for _ in &remaining {
            rest.add(r)?;
        }
        (ForecastMethod::RunRate, n)
    };
    let mut forecast = actual;
    forecast.merge(&rest)?;
    Ok(Forecast { actual, forecast, method, history_days: used })
}

/// A budget as it stands on `as_of`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct BudgetStatus {
    pub name: String,
    /// The query filters that scope it.
    pub scope: Vec<String>,
    #[schema(value_type = String)]
    pub metric: &'static str,
    /// `2026-11` or `2026-Q4`.
    pub period: String,
    #[schema(value_type = String)]
    pub start: NaiveDate,
    /// Last day of the period.
    #[schema(value_type = String)]
    pub last: NaiveDate,
    /// The first day not counted as actual.
    #[schema(value_type = String)]
    pub as_of: NaiveDate,
    pub currency: String,
    #[schema(value_type = String)]
    pub amount: Decimal,
    #[serde(serialize_with = "crate::json::exact")]
    #[schema(value_type = String)]
    pub actual: ExactSum,
    #[serde(serialize_with = "crate::json::exact")]
    #[schema(value_type = String)]
    pub forecast: ExactSum,
    #[schema(value_type = Option<String>)]
    pub actual_percent: Option<Decimal>,
    #[schema(value_type = Option<String>)]
    pub forecast_percent: Option<Decimal>,
    pub method: ForecastMethod,
    pub history_days: u32,
    /// The highest threshold (percent) the actual cost has reached.
    #[schema(value_type = Option<String>)]
    pub actual_crossed: Option<Decimal>,
    /// The highest threshold the forecast reaches.
    #[schema(value_type = Option<String>)]
    pub forecast_crossed: Option<Decimal>,
}

/// The highest of `thresholds` that `percent` reaches.
pub fn crossed(percent: Option<Decimal>, thresholds: &[Decimal]) -> Option<Decimal> {
    let p = percent?;
    thresholds.iter().copied().filter(|t| p >= *t).max()
}

/// `v` as a percentage of `amount`, 2 places half-to-even (`None` for a zero budget).
pub fn percent(v: &ExactSum, amount: Decimal) -> Option<Decimal> {
    v.percent_of(&ExactSum::from(amount))
}

/// The sentence a finding and the report say about a budget that crossed a threshold.
pub fn message(s: &BudgetStatus) -> Option<String> {
    if s.actual_crossed.is_none() && s.forecast_crossed.is_none() {
        return None;
    }
    let pct = |p: Option<Decimal>| p.map(|p| format!("{p}%")).unwrap_or_else(|| "n/a".into());
    let mut m = format!(
        "budget {} ({} {} for {}): actual {} {} is {} of it",
        s.name,
        s.amount,
        s.currency,
        s.period,
        s.actual.to_fixed(2),
        s.currency,
        pct(s.actual_percent)
    );
    if let Some(t) = s.actual_crossed {
        m.push_str(&format!(" (threshold {t}% reached)"));
    }
    m.push_str(&format!(
        "; forecast {} {} by {} is {}",
        s.forecast.to_fixed(2),
        s.currency,
        s.last,
        pct(s.forecast_percent)
    ));
    if let Some(t) = s.forecast_crossed {
        m.push_str(&format!(" (threshold {t}% forecast)"));
    }
    Some(m)
}

/// Headers and exact cells of the budget table.
pub fn cells(statuses: &[BudgetStatus]) -> (Vec<String>, Vec<Vec<String>>) {
    let h = [
        "budget",
        "period",
        "as_of",
        "currency",
        "amount",
        "actual",
        "actual_percent",
        "forecast",
        "forecast_percent",
        "method",
        "threshold_reached",
        "threshold_forecast",
    ]
    .map(String::from)
    .to_vec();
    let opt = |p: Option<Decimal>| p.map(|p| p.to_string()).unwrap_or_default();
    let rows = statuses
        .iter()
        .map(|s| {
            vec![
                s.name.clone(),
                s.period.clone(),
                s.as_of.to_string(),
                s.currency.clone(),
                s.amount.to_string(),
                s.actual.to_string(),
                opt(s.actual_percent),
                s.forecast.to_string(),
                opt(s.forecast_percent),
                serde_json::to_value(s.method).ok().and_then(|v| v.as_str().map(String::from)).unwrap_or_default(),
                opt(s.actual_crossed),
                opt(s.forecast_crossed),
            ]
        })
        .collect();
    (h, rows)
}

/// CSV (RFC 4180): one row per budget, exact amounts.
pub fn write_csv(statuses: &[BudgetStatus], out: impl std::io::Write) -> Result<(), csv::Error> {
    let (h, rows) = cells(statuses);
    crate::query::render::write_cells_csv(out, &h, &rows)
}

/// An aligned table, then a sentence per budget that reached a threshold.
pub fn write_table(statuses: &[BudgetStatus], mut out: impl std::io::Write) -> std::io::Result<()> {
    let (h, rows) = cells(statuses);
    crate::query::render::write_aligned(&mut out, &h, &rows, 4, None)?;
    if statuses.is_empty() {
        writeln!(out, "(no budgets configured: add `budgets:` to the config)")?;
    }
    for m in statuses.iter().filter_map(message) {
        writeln!(out, "- {m}")?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(s: &str) -> NaiveDate {
        NaiveDate::parse_from_str(s, "%Y-%m-%d").expect("date")
    }

    fn days(from: &str, n: i64, amount: impl Fn(NaiveDate) -> &'static str) -> BTreeMap<NaiveDate, ExactSum> {
        (0..n).map(|i| d(from) + Duration::days(i)).map(|x| (x, amount(x).parse().expect("amount"))).collect()
    }

    #[test]
    fn periods_are_months_or_quarters() {
        assert_eq!(
            BudgetPeriod::Month.containing(d("2026-11-15")),
            (d("2026-11-01"), d("2026-12-01"), "2026-11".to_string())
        );
        assert_eq!(
            BudgetPeriod::Quarter.containing(d("2026-11-15")),
            (d("2026-10-01"), d("2027-01-01"), "2026-Q4".to_string())
        );
        assert_eq!(BudgetPeriod::parse("Quarterly"), Some(BudgetPeriod::Quarter));
        assert_eq!(BudgetPeriod::parse("week"), None);
    }

    #[test]
    fn a_short_history_forecasts_at_the_run_rate_of_the_last_days() {
        // 10 days of 3.00 a day from 2026-11-01: actual 30, 20 days left at 3.0000 → 90.
        let daily = days("2026-11-01", 10, |_| "3.00");
        let f = forecast(&daily, Some(d("2026-11-01")), d("2026-11-01"), d("2026-12-01"), d("2026-11-11")).expect("f");
        assert_eq!((f.actual.to_string(), f.forecast.to_string()), ("30".into(), "90".into()));
        assert_eq!((f.method, f.history_days), (ForecastMethod::RunRate, 7));
        // A rate that does not divide: 1.00 over 3 days = 0.3333 a day (4 places, half-even).
        let daily = days("2026-11-01", 3, |x| if x.day() == 1 { "1.00" } else { "0" });
        let f = forecast(&daily, Some(d("2026-11-01")), d("2026-11-01"), d("2026-12-01"), d("2026-11-04")).expect("f");
        assert_eq!(f.forecast.to_string(), "9.9991", "1 + 27 × 0.3333");
    }

    #[test]
    fn four_weeks_of_history_forecast_each_weekday_at_its_own_rate() {
        // Weekdays 10, weekends 2, from 2026-10-01; as of Monday 2026-11-09 (history 39 days).
        let daily = days("2026-10-01", 39, |x| if x.weekday().number_from_monday() >= 6 { "2" } else { "10" });
        let f = forecast(&daily, Some(d("2026-10-01")), d("2026-11-01"), d("2026-12-01"), d("2026-11-09")).expect("f");
        assert_eq!(f.method, ForecastMethod::WeekdaySeasonality);
        // Actual: Nov 1 (Sun) 2, Nov 2–6 50, Nov 7–8 4 → 56. Remaining Nov 9–30: 16 weekdays, 6 weekend days.
        assert_eq!(f.actual.to_string(), "56");
        assert_eq!(f.forecast.to_string(), (56 + 16 * 10 + 6 * 2).to_string());
    }

    #[test]
    fn no_history_or_an_ended_period_forecast_the_actual() {
        let f = forecast(&BTreeMap::new(), None, d("2026-11-01"), d("2026-12-01"), d("2026-11-01")).expect("f");
        assert_eq!((f.method, f.forecast), (ForecastMethod::NoHistory, ExactSum::ZERO));
        let daily = days("2026-11-01", 30, |_| "1");
        let f = forecast(&daily, Some(d("2026-11-01")), d("2026-11-01"), d("2026-12-01"), d("2026-12-05")).expect("f");
        assert_eq!((f.method, f.forecast.to_string()), (ForecastMethod::PeriodEnded, "30".into()));
    }

    #[test]
    fn thresholds_reached_are_the_highest_crossed() {
        let t = [Decimal::from(50), Decimal::from(80), Decimal::from(100)];
        assert_eq!(crossed(Some(Decimal::new(8000, 2)), &t), Some(Decimal::from(80)));
        assert_eq!(crossed(Some(Decimal::new(7999, 2)), &t), Some(Decimal::from(50)));
        assert_eq!(crossed(Some(Decimal::new(4999, 2)), &t), None);
        assert_eq!(crossed(None, &t), None);
        assert_eq!(percent(&"82.5".parse().expect("sum"), Decimal::from(100)), Some(Decimal::new(8250, 2)));
    }
}
