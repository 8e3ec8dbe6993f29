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

/// One CSV row's cells, written into one buffer reused from row to row (ends of each cell in
/// `ends`): no allocation per cell. The bytes are those of `neutralise` / `format_ts` /
/// `canonical` / the tag JSON, as the golden files hold them.
#[derive(Default)]
struct RowCells {
    buf: Vec<u8>,
    ends: Vec<usize>,
}

impl RowCells {
    fn end_cell(&mut self) {
        self.ends.push(self.buf.len());
    }

    fn text(&mut self, s: &str) {
        if formula_like(s) {
            self.buf.push(b'\'');
        }
        self.buf.extend_from_slice(s.as_bytes());
        self.end_cell();
    }

    fn opt(&mut self, s: &Option<String>) {
        self.text(s.as_deref().unwrap_or_default());
    }

    fn raw(&mut self, s: &str) {
        self.buf.extend_from_slice(s.as_bytes());
        self.end_cell();
    }

    fn ts(&mut self, t: chrono::DateTime<chrono::Utc>) {
        costledger_core::write_ts(&mut self.buf, t);
        self.end_cell();
    }

    fn amount(&mut self, d: Option<Decimal>) {
        if let Some(d) = d {
            costledger_core::write_canonical(&mut self.buf, d);
        }
        self.end_cell();
    }

    fn cells(&self) -> impl Iterator<Item = &[u8]> {
        let mut start = 0;
        self.ends.iter().map(move |&end| {
            let c = &self.buf[start..end];
            start = end;
            c
        })
    }

    fn fill(&mut self, r: &ChargeRecord, alloc: Option<&LineAllocation<'_>>) {
        self.buf.clear();
        self.ends.clear();
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
        self.raw(l.charge_category.as_str());
        self.raw(l.charge_class.map(|c| c.as_str()).unwrap_or_default());
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
        costledger_core::write_map_json(&mut self.buf, &l.tags);
        self.end_cell();
        self.text(&owner);
        self.raw(&reason);
        let _ = write!(self.buf, "{}", r.load_id);
        self.end_cell();
        self.text(&r.source);
        self.opt(&l.source_ref);
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
    let mut w = csv::WriterBuilder::new().terminator(csv::Terminator::CRLF).from_writer(out);
    w.write_record(FOCUS_COLUMNS.iter().chain(LINEAGE_COLUMNS.iter()))?;
    let mut stats = ExportStats::default();
    let line_alloc = match alloc {
        Some(a) => Some(LineAllocation::new(store, a).await?),
        None => None,
    };
    // The finance CSV writes the line's core and lineage only: the FOCUS columns beyond the
    // core are not read (PostgreSQL then sorts narrower rows, costledger decodes fewer).
    let filter = ChargeFilter { columns: ChargeColumns::Core, ..filter.clone() };
    let mut rows = store.charges(&filter);
    let mut cells = RowCells::default();
    while let Some(r) = rows.next().await {
        let r = r?;
        cells.fill(&r, line_alloc.as_ref());
        w.write_record(cells.cells())?;
        stats.rows += 1;
        stats.totals.add(&r.line.billing_currency, r.line.billed_cost)?;
    }
    w.flush()?;
    Ok(stats)
}

#[cfg(test)]
mod tests {
    use super::neutralise;

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
