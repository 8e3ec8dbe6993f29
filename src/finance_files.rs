//! Files finance hands us: invoice totals (`reconcile --invoices FILE`) and exchange rates
//! (`fx import FILE`). Both are all-or-nothing: every bad line is reported (file:line, what,
//! what to do) and nothing is stored unless the whole file is good.

use std::collections::BTreeMap;
use std::path::Path;

use costledger_core::{BillingPeriod, currency::is_iso4217, parse_amount};
use rust_decimal::Decimal;

use crate::ledger::{BusinessMetric, FxRate, InvoiceRow};

#[derive(Debug, thiserror::Error)]
pub enum FileError {
    #[error("cannot read {path}: {source}")]
    Read { path: String, source: std::io::Error },
    #[error("{path}: {} problem(s); nothing was stored:\n{}", .problems.len(), .problems.iter().map(|p| format!("  - {p}")).collect::<Vec<_>>().join("\n"))]
    Invalid { path: String, problems: Vec<String> },
}

struct Table {
    path: String,
    cols: BTreeMap<String, usize>,
    rows: Vec<(u64, csv::StringRecord)>,
}

fn read_table(path: &Path, required: &[&str], optional: &[&str]) -> Result<Table, FileError> {
    read_table_with(path, required, optional, &|_| false)
}

/// [`read_table`], also taking the columns `extra` accepts.
fn read_table_with(
    path: &Path,
    required: &[&str],
    optional: &[&str],
    extra: &dyn Fn(&str) -> bool,
) -> Result<Table, FileError> {
    let p = path.display().to_string();
    let bytes = std::fs::read(path).map_err(|source| FileError::Read { path: p.clone(), source })?;
    let text = String::from_utf8(bytes).map_err(|e| FileError::Invalid {
        path: p.clone(),
        problems: vec![format!("not UTF-8 text (byte {}); save the file as UTF-8 CSV", e.utf8_error().valid_up_to())],
    })?;
    let text = text.strip_prefix('\u{feff}').unwrap_or(&text);
    let mut rdr = csv::ReaderBuilder::new().flexible(true).from_reader(text.as_bytes());
    let invalid = |m: String| FileError::Invalid { path: p.clone(), problems: vec![m] };
    let header = rdr.headers().map_err(|e| invalid(format!("cannot read the header: {e}")))?.clone();
    let mut cols = BTreeMap::new();
    for (i, h) in header.iter().enumerate() {
        let k = h.trim().to_ascii_lowercase();
        if !required.contains(&k.as_str()) && !optional.contains(&k.as_str()) && !extra(&k) {
            return Err(invalid(format!(
                "line 1: unknown column '{h}' (columns: {}{})",
                required.join(", "),
                if optional.is_empty() { String::new() } else { format!("; optional: {}", optional.join(", ")) }
            )));
        }
        if cols.insert(k, i).is_some() {
            return Err(invalid(format!("line 1: column '{h}' appears twice")));
        }
    }
    let missing: Vec<&str> = required.iter().filter(|c| !cols.contains_key(**c)).copied().collect();
    if !missing.is_empty() {
        return Err(invalid(format!("line 1: missing column(s) {}", missing.join(", "))));
    }
    let mut rows = Vec::new();
    for rec in rdr.records() {
        let rec = rec.map_err(|e| invalid(format!("{e}")))?;
        let line = rec.position().map(|p| p.line()).unwrap_or(0);
        if rec.iter().all(|f| f.trim().is_empty()) {
            continue;
        }
        rows.push((line, rec));
    }
    Ok(Table { path: p, cols, rows })
}

impl Table {
    fn get<'a>(&self, rec: &'a csv::StringRecord, col: &str) -> &'a str {
        self.cols.get(col).and_then(|i| rec.get(*i)).map(str::trim).unwrap_or("")
    }
}

fn decimal(s: &str) -> Option<Decimal> {
    parse_amount(s).ok().flatten().map(|a| a.value)
}

/// A decimal as finance wrote it, keeping its decimal places (`4227.00` stays 2 places: the
/// invoice check compares at the invoice's own precision).
pub fn decimal_text(s: &str) -> Option<Decimal> {
    let d = decimal(s)?;
    let places = s.trim().split_once('.').map(|(_, f)| f.len() as u32).unwrap_or(0);
    let mut d = d;
    if places > d.scale() && places <= 28 {
        d.rescale(places);
    }
    Some(d)
}

/// `invoice_id,billing_account_id,billing_period,currency,amount` (invoice_id may be empty
/// or absent: then the amount is the account's total for the period).
pub fn read_invoices(path: &Path) -> Result<Vec<InvoiceRow>, FileError> {
    let t = read_table(path, &["billing_account_id", "billing_period", "currency", "amount"], &["invoice_id"])?;
    let mut out = Vec::new();
    let mut problems = Vec::new();
    let mut seen = BTreeMap::new();
    for (line, rec) in &t.rows {
        let at = format!("line {line}");
        let account = t.get(rec, "billing_account_id");
        let period = t.get(rec, "billing_period");
        let currency = t.get(rec, "currency");
        let amount = t.get(rec, "amount");
        let invoice_id = t.get(rec, "invoice_id");
        let before = problems.len();
        if account.is_empty() {
            problems.push(format!("{at}: billing_account_id is empty"));
        }
        if period.parse::<BillingPeriod>().is_err() {
            problems.push(format!("{at}: billing_period '{period}' is not YYYY-MM"));
        }
        if !is_iso4217(currency) {
            problems.push(format!("{at}: currency '{currency}' is not an ISO 4217 code"));
        }
        let value = decimal_text(amount);
        if value.is_none() {
            problems
                .push(format!("{at}: amount '{amount}' is not a decimal number (use '.' and no thousands separators)"));
        }
        if problems.len() > before {
            continue;
        }
        let key = (invoice_id.to_string(), account.to_string(), period.to_string(), currency.to_string());
        if let Some(first) = seen.insert(key, *line) {
            problems.push(format!("{at}: the same invoice/account/period/currency as line {first}"));
            continue;
        }
        out.push(InvoiceRow {
            invoice_id: invoice_id.to_string(),
            billing_account_id: account.to_string(),
            period: period.to_string(),
            currency: currency.to_string(),
            amount: value.unwrap_or_default(),
            provenance: format!("{}:{line}", t.path),
        });
    }
    if problems.is_empty() { Ok(out) } else { Err(FileError::Invalid { path: t.path, problems }) }
}

/// `month,from,to,rate[,source]`: 1 `from` = `rate` `to` for the month (YYYY-MM).
pub fn read_fx(path: &Path) -> Result<Vec<FxRate>, FileError> {
    let t = read_table(path, &["month", "from", "to", "rate"], &["source"])?;
    let mut out = Vec::new();
    let mut problems = Vec::new();
    for (line, rec) in &t.rows {
        let at = format!("line {line}");
        let month = t.get(rec, "month");
        let from = t.get(rec, "from");
        let to = t.get(rec, "to");
        let rate = t.get(rec, "rate");
        let before = problems.len();
        if month.parse::<BillingPeriod>().is_err() {
            problems.push(format!("{at}: month '{month}' is not YYYY-MM"));
        }
        for (name, c) in [("from", from), ("to", to)] {
            if !is_iso4217(c) {
                problems.push(format!("{at}: {name} '{c}' is not an ISO 4217 code"));
            }
        }
        let r = decimal(rate).filter(|r| *r > Decimal::ZERO);
        if r.is_none() {
            problems.push(format!("{at}: rate '{rate}' must be a decimal number greater than 0"));
        }
        if problems.len() > before {
            continue;
        }
        let src = t.get(rec, "source");
        out.push(FxRate {
            month: month.to_string(),
            from: from.to_string(),
            to: to.to_string(),
            rate: r.unwrap_or_default(),
            provenance: if src.is_empty() {
                format!("{}:{line}", t.path)
            } else {
                format!("{src} ({}:{line})", t.path)
            },
        });
    }
    if problems.is_empty() { Ok(out) } else { Err(FileError::Invalid { path: t.path, problems }) }
}

/// `date,metric,value[,owner][,DIMENSION…]`: a business metric's value for a day (requests,
/// active users …), per owner and any further query dimension (`service`, `region`, `tag:env` …).
pub fn read_metrics(path: &Path) -> Result<Vec<BusinessMetric>, FileError> {
    let is_dimension = |c: &str| {
        !matches!(c, "owner" | "allocation")
            && crate::query::Dimension::parse(c, &|k: &str| k.trim().to_lowercase()).is_ok()
    };
    let t = read_table_with(path, &["date", "metric", "value"], &["owner"], &is_dimension)?;
    let dims: Vec<(String, String)> = t
        .cols
        .keys()
        .filter(|c| !matches!(c.as_str(), "date" | "metric" | "value" | "owner"))
        .map(|c| {
            let name = crate::query::Dimension::parse(c, &|k: &str| k.trim().to_lowercase())
                .map(|d| d.name())
                .unwrap_or_else(|_| c.clone());
            (c.clone(), name)
        })
        .collect();
    let mut out = Vec::new();
    let mut problems = Vec::new();
    let mut seen = BTreeMap::new();
    for (line, rec) in &t.rows {
        let at = format!("line {line}");
        let date = t.get(rec, "date");
        let name = t.get(rec, "metric");
        let value = t.get(rec, "value");
        let before = problems.len();
        if chrono::NaiveDate::parse_from_str(date, "%Y-%m-%d").is_err() {
            problems.push(format!("{at}: date '{date}' is not YYYY-MM-DD"));
        }
        if name.is_empty() {
            problems.push(format!("{at}: the metric name is empty"));
        }
        let v = decimal(value).filter(|v| !v.is_sign_negative());
        if v.is_none() {
            problems.push(format!("{at}: value '{value}' must be a decimal number of at least 0"));
        }
        if problems.len() > before {
            continue;
        }
        let owner = t.get(rec, "owner");
        let dimensions: std::collections::BTreeMap<String, String> = dims
            .iter()
            .map(|(col, name)| (name.clone(), t.get(rec, col).to_string()))
            .filter(|(_, v)| !v.is_empty())
            .collect();
        let key = (name.to_string(), date.to_string(), owner.to_string(), dimensions.clone());
        if let Some(first) = seen.insert(key, *line) {
            problems.push(format!("{at}: the same metric, date, owner and dimensions as line {first}"));
            continue;
        }
        out.push(BusinessMetric {
            name: name.to_string(),
            day: date.to_string(),
            owner: (!owner.is_empty()).then(|| owner.to_string()),
            dimensions,
            value: v.unwrap_or_default(),
            provenance: format!("{}:{line}", t.path),
        });
    }
    if problems.is_empty() { Ok(out) } else { Err(FileError::Invalid { path: t.path, problems }) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_invoice_file_reports_every_line_and_stores_nothing() {
        let dir = tempfile::tempdir().expect("tmp");
        let p = dir.path().join("inv.csv");
        std::fs::write(
            &p,
            "invoice_id,billing_account_id,billing_period,currency,amount\n\
             INV-1,111,2026-10,USD,10.00\n\
             INV-2,111,2026-13,USD,1\n\
             INV-3,,2026-10,XXY,1,5\n\
             INV-4,111,2026-10,USD,1e3x\n",
        )
        .expect("write");
        let e = read_invoices(&p).expect_err("bad").to_string();
        assert!(e.contains("3 problem(s)") || e.contains("4 problem(s)") || e.contains("5 problem(s)"), "{e}");
        assert!(e.contains("line 3: billing_period '2026-13' is not YYYY-MM"), "{e}");
        assert!(e.contains("line 4: billing_account_id is empty"), "{e}");
        assert!(e.contains("line 4: currency 'XXY'"), "{e}");
        assert!(e.contains("line 5: amount '1e3x'"), "{e}");
    }

    #[test]
    fn fx_file_parses_with_provenance() {
        let dir = tempfile::tempdir().expect("tmp");
        let p = dir.path().join("fx.csv");
        std::fs::write(&p, "month,from,to,rate,source\n2026-10,EUR,USD,1.0831,ECB reference rate\n").expect("write");
        let r = read_fx(&p).expect("ok");
        assert_eq!(r[0].rate, "1.0831".parse::<Decimal>().expect("d"));
        assert!(r[0].provenance.starts_with("ECB reference rate ("), "{}", r[0].provenance);
        std::fs::write(&p, "month,from,to\n").expect("write");
        assert!(read_fx(&p).expect_err("bad").to_string().contains("missing column(s) rate"));
    }
}
