//! Finance CSV: RFC 4180, FOCUS column names plus lineage columns, deterministic
//! order (the ledger's), amounts in canonical fixed notation (no exponent, no locale, no
//! trailing zeros), text cells neutralised against spreadsheet formula injection, streamed.

use std::borrow::Cow;
use std::collections::BTreeSet;
use std::io::Write;

use costledger_core::{FOCUS_COLUMNS, Totals, canonical, format_ts};
use futures::StreamExt;
use rust_decimal::Decimal;

use crate::allocation::{Allocator, Decision, StoredBasis};
use crate::ledger::{ChargeFilter, ChargeRecord, LedgerError, LedgerStore};

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
    match s.as_bytes().first() {
        Some(b'=' | b'+' | b'-' | b'@' | b'\t' | b'\r') => Cow::Owned(format!("'{s}")),
        _ => Cow::Borrowed(s),
    }
}

fn text(v: &Option<String>) -> Cow<'_, str> {
    v.as_deref().map(neutralise).unwrap_or(Cow::Borrowed(""))
}

fn amount(v: Option<Decimal>) -> String {
    v.map(canonical).unwrap_or_default()
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

fn record<'a>(r: &'a ChargeRecord, alloc: Option<&LineAllocation<'_>>) -> Vec<Cow<'a, str>> {
    let (owner, reason) = alloc.map(|a| a.columns(&r.line)).unwrap_or_default();
    let l = &r.line;
    vec![
        neutralise(&l.billing_account_id),
        text(&l.billing_account_name),
        text(&l.sub_account_id),
        text(&l.sub_account_name),
        Cow::Owned(format_ts(l.billing_period_start)),
        Cow::Owned(format_ts(l.billing_period_end)),
        Cow::Owned(format_ts(l.charge_period_start)),
        Cow::Owned(format_ts(l.charge_period_end)),
        Cow::Borrowed(l.charge_category.as_str()),
        Cow::Borrowed(l.charge_class.map(|c| c.as_str()).unwrap_or_default()),
        text(&l.charge_description),
        text(&l.service_name),
        text(&l.service_category),
        text(&l.provider_name),
        text(&l.publisher_name),
        text(&l.invoice_issuer_name),
        text(&l.region_id),
        text(&l.resource_id),
        text(&l.resource_name),
        text(&l.sku_id),
        Cow::Owned(canonical(l.billed_cost)),
        Cow::Owned(amount(l.effective_cost)),
        Cow::Owned(amount(l.list_cost)),
        Cow::Owned(amount(l.contracted_cost)),
        neutralise(&l.billing_currency),
        Cow::Owned(amount(l.pricing_quantity)),
        text(&l.pricing_unit),
        Cow::Owned(amount(l.consumed_quantity)),
        text(&l.consumed_unit),
        text(&l.commitment_discount_id),
        text(&l.invoice_id),
        Cow::Owned(l.tags_json().unwrap_or_default()),
        Cow::Owned(neutralise(&owner).into_owned()),
        Cow::Owned(reason),
        Cow::Owned(r.load_id.to_string()),
        neutralise(&r.source),
        text(&l.source_ref),
    ]
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
    let mut rows = store.charges(filter);
    while let Some(r) = rows.next().await {
        let r = r?;
        w.write_record(record(&r, line_alloc.as_ref()).iter().map(|c| c.as_bytes()))?;
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
