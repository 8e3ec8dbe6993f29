//! Finance CSV: RFC 4180, FOCUS column names plus lineage columns, deterministic
//! order (the ledger's), amounts in canonical fixed notation (no exponent, no locale, no
//! trailing zeros), text cells neutralised against spreadsheet formula injection, streamed.

use std::borrow::Cow;
use std::collections::BTreeSet;
use std::io::Write;

use costledger_core::{FOCUS_COLUMNS, Totals};
use futures::StreamExt;
use rust_decimal::Decimal;

use crate::allocation::{Allocator, Decision, StoredBasis};
use crate::ledger::{ChargeColumns, ChargeFilter, ChargeRecord, LedgerError, LedgerStore};

/// Lineage columns written after the FOCUS columns.
pub const LINEAGE_COLUMNS: [&str; 5] = ["x_owner", "x_allocation_reason", "x_load_id", "x_source", "x_source_ref"];

#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error(transparent)]
    Ledger(#[from] LedgerError),
    #[error("writing the CSV failed: {0}")]
    Write(#[from] csv::Error),
    #[error("writing the CSV failed: {0}")]
    Io(#[from] std::io::Error),
    #[error("{0}")]
    Money(#[from] costledger_core::MoneyError),
    #[error("writing the Parquet file failed: {0}")]
    Parquet(#[from] parquet::errors::ParquetError),
    /// A value the output format cannot hold exactly (what, where, what to do).
    #[error("{0}")]
    NotExact(String),
    /// FOCUS 1.3 splits shared charges as the reconciler did: a period it has not allocated
    /// cannot be split.
    #[error(
        "billing period {0} has charges a shared allocation rule splits, but it has not been reconciled: \
         run `costledger reconcile` first (FOCUS 1.3's Allocated* columns are the reconciled shared-cost splits)"
    )]
    NotReconciled(String),
}

#[derive(Debug, Default, Clone)]
pub struct ExportStats {
    /// Rows written (a split charge writes one row per owner).
    pub rows: u64,
    pub totals: Totals,
    /// Charges written as one row per owner's share (FOCUS 1.3's split cost allocation).
    pub split_charges: u64,
    /// Commitment purchases whose unused share was written as a row of its own (FOCUS export).
    pub unused_commitment_rows: u64,
}

/// A text cell beginning with `=`, `+`, `-`, `@`, tab or CR is prefixed with `'` so a
/// spreadsheet shows it as text instead of evaluating it.
pub fn neutralise(s: &str) -> Cow<'_, str> {
    if formula_like(s) { Cow::Owned(format!("'{s}")) } else { Cow::Borrowed(s) }
}

/// Whether a spreadsheet would evaluate a cell beginning like `s` ([`neutralise`]).
fn formula_like(s: &str) -> bool {
    matches!(s.as_bytes().first(), Some(b'=' | b'+' | b'-' | b'@' | b'\t' | b'\r'))
}

/// `x_owner` and `x_allocation_reason` of one charge: an owner and how it was
/// decided (`tag:team`, `rule:NAME`); `shared` and the split rule; or no owner and the reason
/// code.
pub fn allocation_columns(alloc: &Allocator, line: &costledger_core::ChargeLine) -> (String, String) {
    let tags = alloc.tags(line);
    match alloc.decide(line, &tags) {
        Decision::Owner { owner, basis } => (owner, alloc.basis_text(basis)),
        Decision::Shared(rule) => ("shared".to_string(), alloc.shared_text(rule)),
        Decision::Unallocated(r) => (String::new(), r.as_str().to_string()),
    }
}

/// (billing period, currency, basis) of the proportional splits the reconciler made evenly
/// because no owner had direct spend: the export says so too.
type Fallbacks = BTreeSet<(String, String, String)>;

/// The finance CSV's `x_owner` and `x_allocation_reason` of each line: the allocator's decision,
/// with a proportional split relabelled when the reconciler had to split it evenly. Queries
/// grouping by owner or allocation use the same, so they agree with the CSV.
pub struct LineAllocation<'a> {
    alloc: &'a Allocator,
    fallbacks: Fallbacks,
}

impl<'a> LineAllocation<'a> {
    /// Reads which proportional splits the last reconcile made evenly.
    pub async fn new(store: &dyn LedgerStore, alloc: &'a Allocator) -> Result<LineAllocation<'a>, LedgerError> {
        let mut fallbacks = Fallbacks::new();
        for a in store.allocations(None).await? {
            if matches!(
                StoredBasis::parse(&a.basis),
                StoredBasis::Shared { mode: crate::reconcile::EVEN_NO_DIRECT_SPEND, .. }
            ) {
                fallbacks.insert((a.period, a.currency, a.basis));
            }
        }
        Ok(LineAllocation { alloc, fallbacks })
    }

    /// (owner — empty when unallocated —, allocation reason) of one line.
    pub fn columns(&self, line: &costledger_core::ChargeLine) -> (String, String) {
        let (owner, mut reason) = allocation_columns(self.alloc, line);
        if !self.fallbacks.is_empty()
            && let StoredBasis::Shared { mode: "proportional", rule } = StoredBasis::parse(&reason)
        {
            let even = StoredBasis::Shared { mode: crate::reconcile::EVEN_NO_DIRECT_SPEND, rule }.to_string();
            let period = costledger_core::BillingPeriod::of(line.billing_period_start).to_string();
            if self.fallbacks.contains(&(period, line.billing_currency.clone(), even.clone())) {
                reason = even;
            }
        }
        (owner, reason)
    }
}

/// Whether a CSV cell needs quotes (RFC 4180: it holds the delimiter, the quote, CR or LF).
/// Eight bytes at a time (a word compared with each of the four bytes at once: the classic
/// test for a zero byte in `word ^ repeated byte`, exact for "any"), the last word overlapping
/// the one before rather than copying the tail; cells shorter than a word byte by byte.
fn needs_quotes(cell: &[u8]) -> bool {
    const ONES: u64 = u64::from_ne_bytes([0x01; 8]);
    const HIGHS: u64 = u64::from_ne_bytes([0x80; 8]);
    const SPECIAL: [u8; 4] = [b',', b'"', b'\r', b'\n'];
    fn any_special(word: u64) -> u64 {
        SPECIAL.iter().fold(0, |m, &b| {
            let x = word ^ (ONES * u64::from(b));
            m | (x.wrapping_sub(ONES) & !x & HIGHS)
        })
    }
    if cell.len() < 8 {
        return cell.iter().any(|b| SPECIAL.contains(b));
    }
    let word = |c: &[u8]| u64::from_le_bytes(c.try_into().expect("8 bytes"));
    let mut chunks = cell.chunks_exact(8);
    let mut any = 0;
    for c in &mut chunks {
        any |= any_special(word(c));
    }
    if !chunks.remainder().is_empty() {
        any |= any_special(word(&cell[cell.len() - 8..]));
    }
    any != 0
}

/// The finance CSV's rows, written straight into one output buffer (flushed to the writer
/// every [`RowCells::FLUSH_AT`] bytes): no allocation and no CSV state machine per cell. A text
/// is tested for the bytes that need quotes where it is (not after it was copied: reading back
/// bytes just written stalled on every word) and written quoted, quotes doubled, as RFC 4180
/// and the `csv` crate do, only when it holds one; each row ends in CRLF. The bytes are those
/// of `neutralise` / `format_ts` / `canonical` / the tag JSON, as the golden files hold them.
#[derive(Default)]
struct RowCells {
    buf: Vec<u8>,
    /// A cell built before it is written (the tag JSON; reused).
    scratch: Vec<u8>,
}

impl RowCells {
    const FLUSH_AT: usize = 1 << 16;

    /// Appends one cell — `prefix` then `cell` — quoted when `cell` needs quotes, and the
    /// delimiter.
    fn cell(&mut self, prefix: &[u8], cell: &[u8]) {
        if needs_quotes(cell) {
            self.buf.push(b'"');
            self.buf.extend_from_slice(prefix);
            // A run at a time, each up to and including a quote, which is doubled.
            for run in cell.split_inclusive(|&b| b == b'"') {
                self.buf.extend_from_slice(run);
                if run.last() == Some(&b'"') {
                    self.buf.push(b'"');
                }
            }
            self.buf.push(b'"');
        } else {
            self.buf.extend_from_slice(prefix);
            self.buf.extend_from_slice(cell);
        }
        self.buf.push(b',');
    }

    /// Ends a cell written into the buffer that cannot hold a byte needing quotes (amounts,
    /// timestamps, ids, enum names).
    fn end_plain_cell(&mut self) {
        self.buf.push(b',');
    }

    /// Replaces the last cell's delimiter by the row's CRLF.
    fn end_row(&mut self) {
        self.buf.pop();
        self.buf.extend_from_slice(b"\r\n");
    }

    /// Writes the buffered rows once they pass [`Self::FLUSH_AT`] bytes (or always with `all`).
    fn flush_to(&mut self, out: &mut impl Write, all: bool) -> std::io::Result<()> {
        if all || self.buf.len() >= Self::FLUSH_AT {
            out.write_all(&self.buf)?;
            self.buf.clear();
        }
        Ok(())
    }

    fn text(&mut self, s: &str) {
        let prefix: &[u8] = if formula_like(s) { b"'" } else { b"" };
        self.cell(prefix, s.as_bytes());
    }

    fn opt(&mut self, s: &Option<String>) {
        self.text(s.as_deref().unwrap_or_default());
    }

    /// A cell written as is (no formula prefix): names costledger makes.
    fn raw(&mut self, s: &str) {
        self.cell(b"", s.as_bytes());
    }

    fn ts(&mut self, t: chrono::DateTime<chrono::Utc>) {
        costledger_core::write_ts(&mut self.buf, t);
        self.end_plain_cell();
    }

    fn amount(&mut self, d: Option<Decimal>) {
        if let Some(d) = d {
            costledger_core::write_canonical(&mut self.buf, d);
        }
        self.end_plain_cell();
    }

    /// The tags as a JSON object (built aside, then written as a cell: it holds quotes).
    fn tags(&mut self, tags: &std::collections::BTreeMap<String, String>) {
        let mut json = std::mem::take(&mut self.scratch);
        json.clear();
        costledger_core::write_map_json(&mut json, tags);
        self.cell(b"", &json);
        self.scratch = json;
    }

    /// The header row: the column names as they are.
    fn header(&mut self, names: impl IntoIterator<Item = &'static str>) {
        for n in names {
            self.raw(n);
        }
        self.end_row();
    }

    /// Appends one charge's row.
    fn fill(&mut self, r: &ChargeRecord, alloc: Option<&LineAllocation<'_>>) {
        let (owner, reason) = alloc.map(|a| a.columns(&r.line)).unwrap_or_default();
        let l = &r.line;
        self.text(&l.billing_account_id);
        self.opt(&l.billing_account_name);
        self.opt(&l.sub_account_id);
        self.opt(&l.sub_account_name);
        self.ts(l.billing_period_start);
        self.ts(l.billing_period_end);
        self.ts(l.charge_period_start);
        self.ts(l.charge_period_end);
        self.buf.extend_from_slice(l.charge_category.as_str().as_bytes());
        self.end_plain_cell();
        self.buf.extend_from_slice(l.charge_class.map(|c| c.as_str()).unwrap_or_default().as_bytes());
        self.end_plain_cell();
        self.opt(&l.charge_description);
        self.opt(&l.service_name);
        self.opt(&l.service_category);
        self.opt(&l.provider_name);
        self.opt(&l.publisher_name);
        self.opt(&l.invoice_issuer_name);
        self.opt(&l.region_id);
        self.opt(&l.resource_id);
        self.opt(&l.resource_name);
        self.opt(&l.sku_id);
        self.amount(Some(l.billed_cost));
        self.amount(l.effective_cost);
        self.amount(l.list_cost);
        self.amount(l.contracted_cost);
        self.text(&l.billing_currency);
        self.amount(l.pricing_quantity);
        self.opt(&l.pricing_unit);
        self.amount(l.consumed_quantity);
        self.opt(&l.consumed_unit);
        self.opt(&l.commitment_discount_id);
        self.opt(&l.invoice_id);
        self.tags(&l.tags);
        self.text(&owner);
        self.raw(&reason);
        let _ = write!(self.buf, "{}", r.load_id);
        self.end_plain_cell();
        self.text(&r.source);
        self.opt(&l.source_ref);
        self.end_row();
    }
}

/// Stream the filtered current charges to `out` as CSV. With an allocator, `x_owner` and
/// `x_allocation_reason` are filled (the same decision the reconciler stores).
pub async fn export_csv<W: Write>(
    store: &dyn LedgerStore,
    filter: &ChargeFilter,
    alloc: Option<&Allocator>,
    out: W,
) -> Result<ExportStats, ExportError> {
    let mut out = out;
    let mut cells = RowCells::default();
    cells.header(FOCUS_COLUMNS.iter().chain(LINEAGE_COLUMNS.iter()).copied());
    let mut stats = ExportStats::default();
    let line_alloc = match alloc {
        Some(a) => Some(LineAllocation::new(store, a).await?),
        None => None,
    };
    // The finance CSV writes the line's core and lineage only: the FOCUS columns beyond the
    // core are not read (PostgreSQL then sorts narrower rows, costledger decodes fewer).
    let filter = ChargeFilter { columns: ChargeColumns::Core, ..filter.clone() };
    let mut rows = store.charges(&filter);
    while let Some(r) = rows.next().await {
        let r = r?;
        cells.fill(&r, line_alloc.as_ref());
        cells.flush_to(&mut out, false)?;
        stats.rows += 1;
        stats.totals.add(&r.line.billing_currency, r.line.billed_cost)?;
    }
    cells.flush_to(&mut out, true)?;
    out.flush()?;
    Ok(stats)
}

#[cfg(test)]
mod tests {
    use super::{RowCells, neutralise};

    /// The hand-written row writer quotes exactly as the `csv` crate does (RFC 4180, CRLF).
    #[test]
    fn rows_are_quoted_as_the_csv_crate_quotes_them() {
        let rows: [&[&str]; 4] = [
            &["plain", "", "a,b", "say \"hi\"", "line\nbreak", "cr\rhere", "{\"team\":\"x\"}", "é,ü"],
            &["", "", ""],
            &["\"", ",", "\r\n", "\"\""],
            &["trailing", ""],
        ];
        let mut ours = RowCells::default();
        let mut theirs =
            csv::WriterBuilder::new().terminator(csv::Terminator::CRLF).flexible(true).from_writer(Vec::new());
        for row in rows {
            for cell in row {
                ours.raw(cell);
            }
            ours.end_row();
            theirs.write_record(row).expect("csv writes");
        }
        let mut out = Vec::new();
        ours.flush_to(&mut out, true).expect("ours writes");
        let theirs = theirs.into_inner().expect("csv flushes");
        assert_eq!(String::from_utf8_lossy(&out), String::from_utf8_lossy(&theirs));
    }

    /// Every length around the 16-byte blocks, the special byte at every place, and none.
    #[test]
    fn a_cell_needs_quotes_exactly_when_it_holds_a_delimiter_quote_or_line_break() {
        for len in 0..50 {
            assert!(!super::needs_quotes(&vec![b'a'; len]), "plain, {len} bytes");
            for at in 0..len {
                for special in [b',', b'"', b'\r', b'\n'] {
                    let mut cell = vec![b'a'; len];
                    cell[at] = special;
                    assert!(super::needs_quotes(&cell), "{:?} at {at} of {len}", special as char);
                }
            }
        }
    }

    #[test]
    fn formula_injection_is_neutralised() {
        for s in ["=HYPERLINK(\"x\")", "+1", "-2+3", "@SUM(A1)", "\tx", "\rx"] {
            assert_eq!(neutralise(s), format!("'{s}"));
        }
        for s in ["payments", "arn:aws:ec2", "", "1.5"] {
            assert_eq!(neutralise(s), s);
        }
    }
}
