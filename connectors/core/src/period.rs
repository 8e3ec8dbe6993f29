//! Billing periods (calendar months, UTC) and timestamp parsing for every format providers use.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Datelike, NaiveDate, NaiveDateTime, SecondsFormat, TimeZone, Timelike, Utc};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TimeError {
    #[error(
        "'{0}' is not a timestamp (expected ISO 8601 like 2026-10-01T00:00:00Z, 2026-10-01 00:00:00 or 2026-10-01)"
    )]
    Invalid(String),
    #[error("'{0}' is not a billing period (expected YYYY-MM, e.g. 2026-10)")]
    Period(String),
}

/// A billing month, e.g. `2026-10`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct BillingPeriod {
    pub year: i32,
    pub month: u32,
}

impl BillingPeriod {
    pub fn new(year: i32, month: u32) -> Option<Self> {
        ((1..=12).contains(&month) && (1970..=9999).contains(&year)).then_some(Self { year, month })
    }

    /// The period containing `t`.
    pub fn of(t: DateTime<Utc>) -> Self {
        Self { year: t.year(), month: t.month() }
    }

    pub fn start(&self) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(self.year, self.month, 1, 0, 0, 0).single().unwrap_or_default()
    }

    /// Exclusive end: the first instant of the next month.
    pub fn end(&self) -> DateTime<Utc> {
        self.next().start()
    }

    pub fn next(&self) -> Self {
        if self.month == 12 {
            Self { year: self.year + 1, month: 1 }
        } else {
            Self { year: self.year, month: self.month + 1 }
        }
    }

    pub fn prev(&self) -> Self {
        if self.month == 1 {
            Self { year: self.year - 1, month: 12 }
        } else {
            Self { year: self.year, month: self.month - 1 }
        }
    }
}

impl fmt::Display for BillingPeriod {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:04}-{:02}", self.year, self.month)
    }
}

impl FromStr for BillingPeriod {
    type Err = TimeError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || TimeError::Period(s.to_string());
        let (y, m) = s.trim().split_once('-').ok_or_else(bad)?;
        if y.len() != 4 || m.len() != 2 {
            return Err(bad());
        }
        BillingPeriod::new(y.parse().map_err(|_| bad())?, m.parse().map_err(|_| bad())?).ok_or_else(bad)
    }
}

/// Parse a UTC timestamp in any of the shapes billing files use:
/// RFC 3339 with `Z` or an offset, with or without fractional seconds; `T` or space separated;
/// without seconds (`2023-11-13T10:00Z`); naive (taken as UTC); a trailing ` UTC`; a bare date.
pub fn parse_timestamp(s: &str) -> Result<DateTime<Utc>, TimeError> {
    let t = s.trim();
    if let Some(d) = parse_plain_utc(t.as_bytes()) {
        return Ok(d);
    }
    if let Ok(d) = DateTime::parse_from_rfc3339(t) {
        return Ok(d.with_timezone(&Utc));
    }
    let mut n = t.replacen(' ', "T", 1);
    if let Some(stripped) = n.strip_suffix("TUTC").or_else(|| n.strip_suffix(" UTC")) {
        n = stripped.to_string();
    }
    if let Ok(d) = DateTime::parse_from_rfc3339(&n) {
        return Ok(d.with_timezone(&Utc));
    }
    // Offsets written +00 or +0000 (PostgreSQL style).
    for f in ["%Y-%m-%dT%H:%M:%S%.f%#z", "%Y-%m-%dT%H:%M%#z"] {
        if let Ok(d) = DateTime::parse_from_str(&n, f) {
            return Ok(d.with_timezone(&Utc));
        }
    }
    let naive = n.strip_suffix('Z').unwrap_or(&n);
    for f in ["%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%dT%H:%M"] {
        if let Ok(d) = NaiveDateTime::parse_from_str(naive, f) {
            return Ok(Utc.from_utc_datetime(&d));
        }
    }
    if let Ok(d) = NaiveDate::parse_from_str(naive, "%Y-%m-%d") {
        return Ok(Utc.from_utc_datetime(&d.and_hms_opt(0, 0, 0).unwrap_or_default()));
    }
    Err(TimeError::Invalid(crate::text::clip(t, 64)))
}

/// The ledger's own shape, `YYYY-MM-DDTHH:MM:SSZ` (also with a space for the `T`), parsed by
/// hand: the shape of almost every timestamp in a bill, four per line. `None` for anything
/// else (including an invalid date), which the general parser then handles or rejects.
fn parse_plain_utc(b: &[u8]) -> Option<DateTime<Utc>> {
    if b.len() != 20
        || b[4] != b'-'
        || b[7] != b'-'
        || !matches!(b[10], b'T' | b' ')
        || b[13] != b':'
        || b[16] != b':'
        || b[19] != b'Z'
    {
        return None;
    }
    let num = |r: std::ops::Range<usize>| -> Option<u32> {
        b[r].iter().try_fold(0u32, |n, c| c.is_ascii_digit().then(|| n * 10 + u32::from(c - b'0')))
    };
    let date = NaiveDate::from_ymd_opt(num(0..4)? as i32, num(5..7)?, num(8..10)?)?;
    let t = date.and_hms_opt(num(11..13)?, num(14..16)?, num(17..19)?)?;
    Some(Utc.from_utc_datetime(&t))
}

/// The one text form of a timestamp in the ledger and in exports: `2026-10-01T00:00:00Z`
/// (fractional seconds only when present). Sorts lexicographically in time order.
pub fn format_ts(t: DateTime<Utc>) -> String {
    let mut s = Vec::with_capacity(20);
    write_ts(&mut s, t);
    String::from_utf8(s).unwrap_or_default()
}

/// Append [`format_ts`]'s text (ASCII) to `out` without allocating (hot path of bulk loading).
pub fn write_ts(out: &mut Vec<u8>, t: DateTime<Utc>) {
    if t.timestamp_subsec_nanos() != 0 || !(0..=9999).contains(&t.year()) {
        out.extend_from_slice(t.to_rfc3339_opts(SecondsFormat::AutoSi, true).as_bytes());
        return;
    }
    // Hand-formatted (this runs four times per staged line on SQLite), from one conversion
    // to the calendar (each accessor of `DateTime` converts again).
    let (d, tm) = (t.date_naive(), t.time());
    let two = |v: u32| [b'0' + (v / 10) as u8, b'0' + (v % 10) as u8];
    let y = d.year() as u32;
    let mut b = [0u8; 20];
    b[..4].copy_from_slice(&[
        b'0' + (y / 1000) as u8,
        b'0' + (y / 100 % 10) as u8,
        b'0' + (y / 10 % 10) as u8,
        b'0' + (y % 10) as u8,
    ]);
    b[4] = b'-';
    b[5..7].copy_from_slice(&two(d.month()));
    b[7] = b'-';
    b[8..10].copy_from_slice(&two(d.day()));
    b[10] = b'T';
    b[11..13].copy_from_slice(&two(tm.hour()));
    b[13] = b':';
    b[14..16].copy_from_slice(&two(tm.minute()));
    b[16] = b':';
    b[17..19].copy_from_slice(&two(tm.second()));
    b[19] = b'Z';
    out.extend_from_slice(&b);
}

/// The Monday (in time zone `tz`) of the ISO week containing `t`: the week a charge is
/// reported and allocated in.
pub fn week_of<Z: TimeZone>(t: DateTime<Utc>, tz: &Z) -> NaiveDate {
    let d = t.with_timezone(tz).date_naive();
    d - chrono::Duration::days(i64::from(d.weekday().num_days_from_monday()))
}

/// `2026-W47` for a Monday (the ISO week-numbering year, which differs from the calendar year
/// around New Year: 2024-12-30 is `2025-W01`).
pub fn iso_week_label(monday: NaiveDate) -> String {
    let w = monday.iso_week();
    format!("{}-W{:02}", w.year(), w.week())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// ISO weeks: the label's year is the ISO year around New Year, and the week's Monday is
    /// taken in the given time zone (a Sunday-evening charge in UTC is Monday in Tokyo).
    #[test]
    fn iso_weeks_cross_new_year_and_follow_the_time_zone() {
        let d = |s: &str| NaiveDate::parse_from_str(s, "%Y-%m-%d").expect("date");
        assert_eq!(iso_week_label(d("2024-12-30")), "2025-W01");
        assert_eq!(iso_week_label(d("2021-01-04")), "2021-W01");
        assert_eq!(iso_week_label(d("2020-12-28")), "2020-W53");
        let sunday_evening = parse_timestamp("2026-11-22T20:00:00Z").expect("ts");
        assert_eq!(week_of(sunday_evening, &Utc), d("2026-11-16"));
        let tokyo = chrono::FixedOffset::east_opt(9 * 3600).expect("offset");
        assert_eq!(week_of(sunday_evening, &tokyo), d("2026-11-23"));
    }

    #[test]
    fn every_shape_parses_to_the_same_instant() {
        let want = Utc.with_ymd_and_hms(2023, 11, 13, 10, 0, 0).single().expect("t");
        for s in [
            "2023-11-13T10:00:00Z",
            "2023-11-13T10:00:00.000Z",
            "2023-11-13T10:00Z",
            "2023-11-13 10:00:00",
            "2023-11-13T10:00:00",
            "2023-11-13 10:00:00 UTC",
            "2023-11-13T12:00:00+02:00",
            "2023-11-13 10:00:00+00",
            " 2023-11-13T10:00 ",
        ] {
            assert_eq!(parse_timestamp(s).expect(s), want, "{s}");
        }
        assert_eq!(format_ts(parse_timestamp("2024-09-01").expect("d")), "2024-09-01T00:00:00Z");
        assert_eq!(format_ts(parse_timestamp("2024-09-01T10:11:12.5Z").expect("d")), "2024-09-01T10:11:12.500Z");
        assert_eq!(format_ts(parse_timestamp("2024-12-31T23:59:59Z").expect("d")), "2024-12-31T23:59:59Z");
        assert_eq!(format_ts(parse_timestamp("2024-02-29 23:59:59Z").expect("leap day")), "2024-02-29T23:59:59Z");
        for bad in [
            "",
            "9/2/2023",
            "2023-13-01",
            "yesterday",
            "2023-11-31",
            "2023-02-29T00:00:00Z",
            "2023-11-13T24:00:00Z",
            "2023-11-13T10:60:00Z",
            "2023-1a-13T10:00:00Z",
            "2023-11-13X10:00:00Z",
        ] {
            assert!(parse_timestamp(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn periods() {
        let p: BillingPeriod = "2026-12".parse().expect("p");
        assert_eq!(p.next().to_string(), "2027-01");
        assert_eq!(p.prev().to_string(), "2026-11");
        assert_eq!(format_ts(p.end()), "2027-01-01T00:00:00Z");
        assert!("2026-13".parse::<BillingPeriod>().is_err());
        assert!("26-1".parse::<BillingPeriod>().is_err());
        let t = parse_timestamp("2026-10-31T23:59:59Z").expect("t");
        assert_eq!(BillingPeriod::of(t).to_string(), "2026-10");
    }
}
