//! A query's answer as text: an aligned table, CSV (RFC 4180) or JSON. Pure: every edge that
//! returns a query (CLI, HTTP CSV download) renders through here, so the bytes agree.

use std::io::Write;

use costledger_core::ExactSum;

use super::MISSING;
use super::aggregate::QueryResult;
use crate::export::neutralise;

/// The text a row shows for the groups beyond the top N.
pub const OTHERS: &str = "(others)";

fn headers(r: &QueryResult) -> Vec<String> {
    let mut h: Vec<String> = r.group_by.clone();
    if r.grain != "none" {
        h.push(r.grain.to_string());
    }
    h.push("currency".into());
    h.extend(r.metrics.iter().map(|m| m.to_string()));
    h
}

/// The cells of each row; `missing` is what a missing key or value shows.
fn cells(r: &QueryResult, missing: &str) -> Vec<Vec<String>> {
    let amount = |v: &Option<ExactSum>| v.map(|a| a.to_string()).unwrap_or_default();
    let mut out = Vec::with_capacity(r.rows.len());
    for row in &r.rows {
        let mut c: Vec<String> = row
            .keys
            .iter()
            .map(|k| match (row.others, k) {
                (true, _) => OTHERS.to_string(),
                (false, Some(k)) => k.clone(),
                (false, None) => missing.to_string(),
            })
            .collect();
        if let Some(b) = &row.bucket {
            c.push(b.clone());
        }
        c.push(row.currency.clone());
        c.extend(row.values.iter().map(amount));
        out.push(c);
    }
    out
}

/// CSV: a header of the dimension names, the grain, `currency` and the FOCUS metric names; a
/// missing key is empty; text that a spreadsheet would run as a formula is prefixed with `'`
/// (amounts never are: they are numbers).
pub fn write_csv(r: &QueryResult, out: impl Write) -> Result<(), csv::Error> {
    let mut w = csv::WriterBuilder::new().terminator(csv::Terminator::CRLF).from_writer(out);
    w.write_record(headers(r))?;
    let texts = r.group_by.len() + usize::from(r.grain != "none") + 1;
    for row in cells(r, "") {
        let rec: Vec<std::borrow::Cow<'_, str>> = row
            .iter()
            .enumerate()
            .map(|(i, c)| if i < texts { neutralise(c) } else { std::borrow::Cow::Borrowed(c.as_str()) })
            .collect();
        w.write_record(rec.iter().map(|c| c.as_ref()))?;
    }
    w.flush()?;
    Ok(())
}

/// JSON: the whole answer, amounts as decimal strings, missing keys as null.
pub fn write_json(r: &QueryResult, mut out: impl Write) -> std::io::Result<()> {
    serde_json::to_writer_pretty(&mut out, r)?;
    out.write_all(b"\n")
}

/// An aligned table: text left, amounts right, then a total line per currency.
pub fn write_table(r: &QueryResult, mut out: impl Write) -> std::io::Result<()> {
    let h = headers(r);
    let mut rows = cells(r, MISSING);
    let keys = h.len() - r.metrics.len();
    for t in &r.totals {
        let mut c = vec![String::new(); keys];
        c[0] = "total".into();
        c[keys - 1] = t.currency.clone();
        c.extend(t.values.iter().map(|v| v.map(|a| a.to_string()).unwrap_or_default()));
        rows.push(c);
    }
    let data = rows.len() - r.totals.len();
    write_aligned(&mut out, &h, &rows, keys, Some(data))?;
    if r.rows.is_empty() {
        writeln!(out, "(no charges match)")?;
    }
    Ok(())
}

/// An aligned text table: the first `text_cols` columns left-aligned, the rest (numbers)
/// right-aligned, two spaces between columns, a rule of dashes before row `rule_at` (totals).
pub fn write_aligned(
    mut out: impl Write,
    headers: &[String],
    rows: &[Vec<String>],
    text_cols: usize,
    rule_at: Option<usize>,
) -> std::io::Result<()> {
    let mut width: Vec<usize> = headers.iter().map(|s| s.chars().count()).collect();
    for row in rows {
        for (w, c) in width.iter_mut().zip(row) {
            *w = (*w).max(c.chars().count());
        }
    }
    let line = |cells: &[String]| -> String {
        let mut s = String::new();
        for (i, (c, w)) in cells.iter().zip(&width).enumerate() {
            if i > 0 {
                s.push_str("  ");
            }
            let pad = w - c.chars().count();
            if i >= text_cols {
                s.push_str(&" ".repeat(pad));
                s.push_str(c);
            } else {
                s.push_str(c);
                if i + 1 < cells.len() {
                    s.push_str(&" ".repeat(pad));
                }
            }
        }
        s
    };
    writeln!(out, "{}", line(headers))?;
    for (i, row) in rows.iter().enumerate() {
        if Some(i) == rule_at {
            let rule: Vec<String> = width.iter().map(|w| "-".repeat(*w)).collect();
            writeln!(out, "{}", line(&rule))?;
        }
        writeln!(out, "{}", line(row))?;
    }
    Ok(())
}

/// RFC 4180 CSV of a header and rows of cells, CRLF: text a spreadsheet would run as a formula
/// is neutralised, a decimal number never is (`-2.25` stays a number, `=HYPERLINK(…)` or
/// `-1+2` become text).
pub fn write_cells_csv(out: impl Write, headers: &[String], rows: &[Vec<String>]) -> Result<(), csv::Error> {
    let mut w = csv::WriterBuilder::new().terminator(csv::Terminator::CRLF).from_writer(out);
    w.write_record(headers)?;
    for r in rows {
        let cells: Vec<std::borrow::Cow<'_, str>> = r
            .iter()
            .map(|x| {
                if x.parse::<rust_decimal::Decimal>().is_ok() {
                    std::borrow::Cow::Borrowed(x.as_str())
                } else {
                    neutralise(x)
                }
            })
            .collect();
        w.write_record(cells.iter().map(|x| x.as_ref()))?;
    }
    w.flush()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cells_csv_neutralises_formulas_but_never_numbers() {
        let mut out = Vec::new();
        let rows =
            vec![vec!["=HYPERLINK(\"x\")".to_string(), "-300".into(), "-1+2".into(), "0.0771".into(), "".into()]];
        write_cells_csv(&mut out, &["a", "b", "c", "d", "e"].map(String::from), &rows).expect("csv");
        assert_eq!(
            String::from_utf8(out).expect("utf8"),
            "a,b,c,d,e\r\n\"'=HYPERLINK(\"\"x\"\")\",-300,'-1+2,0.0771,\r\n"
        );
    }
}
