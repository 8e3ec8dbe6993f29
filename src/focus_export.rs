//! The ledger as a FOCUS dataset (`costledger export focus`): the Cost and Usage columns of the
//! FOCUS specification by their column ids, in the specification's (alphabetical) order, dates
//! as `YYYY-MM-DDTHH:mm:ssZ`, decimals in canonical fixed notation (never an exponent, never a
//! float), absent values as empty cells (nulls), `Tags` as a JSON object. Streamed in the
//! ledger's order, so the same ledger always gives the same bytes.
//!
//! Unlike the finance CSV, text is written as the bill had it: a FOCUS dataset is read by
//! tools, not spreadsheets, and a prefixed `'` would change the value a validator checks.

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::sync::Arc;

use costledger_core::line::X_UNUSED_COMMITMENT_QUANTITY;
use costledger_core::{BillingPeriod, ChargeCategory, ChargeLine, ExactSum, FocusColumns, canonical, format_ts};
use futures::StreamExt;
use rust_decimal::Decimal;

use crate::allocation::{Allocator, Decision, RuleAction, StoredBasis, split_by, split_exact};
use crate::export::{ExportError, ExportStats, LINEAGE_COLUMNS, LineAllocation};
use crate::ledger::{ChargeFilter, ChargeRecord, LedgerStore};
use crate::reconcile::{DirectSpend, shared_weights};

/// The FOCUS version a dataset is written for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum FocusVersion {
    #[value(name = "1.2")]
    V1_2,
    /// 1.2's columns and the eight 1.3 added ([`FOCUS_1_3_ADDED`]).
    #[value(name = "1.3")]
    V1_3,
}

impl FocusVersion {
    pub fn as_str(self) -> &'static str {
        match self {
            FocusVersion::V1_2 => "1.2",
            FocusVersion::V1_3 => "1.3",
        }
    }

    /// The dataset's columns, in order.
    pub fn columns(self) -> &'static [&'static str] {
        match self {
            FocusVersion::V1_2 => &FOCUS_1_2_COLUMNS,
            FocusVersion::V1_3 => &FOCUS_1_3_COLUMNS,
        }
    }
}

/// Every column of the FOCUS 1.2 Cost and Usage dataset, in the specification's order.
pub const FOCUS_1_2_COLUMNS: [&str; 57] = [
    "AvailabilityZone",
    "BilledCost",
    "BillingAccountId",
    "BillingAccountName",
    "BillingAccountType",
    "BillingCurrency",
    "BillingPeriodEnd",
    "BillingPeriodStart",
    "CapacityReservationId",
    "CapacityReservationStatus",
    "ChargeCategory",
    "ChargeClass",
    "ChargeDescription",
    "ChargeFrequency",
    "ChargePeriodEnd",
    "ChargePeriodStart",
    "CommitmentDiscountCategory",
    "CommitmentDiscountId",
    "CommitmentDiscountName",
    "CommitmentDiscountQuantity",
    "CommitmentDiscountStatus",
    "CommitmentDiscountType",
    "CommitmentDiscountUnit",
    "ConsumedQuantity",
    "ConsumedUnit",
    "ContractedCost",
    "ContractedUnitPrice",
    "EffectiveCost",
    "InvoiceId",
    "InvoiceIssuerName",
    "ListCost",
    "ListUnitPrice",
    "PricingCategory",
    "PricingCurrency",
    "PricingCurrencyContractedUnitPrice",
    "PricingCurrencyEffectiveCost",
    "PricingCurrencyListUnitPrice",
    "PricingQuantity",
    "PricingUnit",
    "ProviderName",
    "PublisherName",
    "RegionId",
    "RegionName",
    "ResourceId",
    "ResourceName",
    "ResourceType",
    "ServiceCategory",
    "ServiceName",
    "ServiceSubcategory",
    "SkuId",
    "SkuMeter",
    "SkuPriceDetails",
    "SkuPriceId",
    "SubAccountId",
    "SubAccountName",
    "SubAccountType",
    "Tags",
];

/// The Cost and Usage columns FOCUS 1.3 added to 1.2's (1.3 keeps `ProviderName` and
/// `PublisherName`, deprecated in favour of `ServiceProviderName` and `HostProviderName`).
pub const FOCUS_1_3_ADDED: [&str; 8] = [
    "AllocatedMethodDetails",
    "AllocatedMethodId",
    "AllocatedResourceId",
    "AllocatedResourceName",
    "AllocatedTags",
    "ContractApplied",
    "HostProviderName",
    "ServiceProviderName",
];

/// Every column of the FOCUS 1.3 Cost and Usage dataset, in alphabetical order: 1.2's and
/// [`FOCUS_1_3_ADDED`], merged when compiled (a test checks the list is exactly their union).
pub const FOCUS_1_3_COLUMNS: [&str; 65] = merge_sorted(&FOCUS_1_2_COLUMNS, &FOCUS_1_3_ADDED);

/// `a < b` by bytes, in a constant.
const fn str_lt(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    let mut i = 0;
    while i < a.len() && i < b.len() {
        if a[i] != b[i] {
            return a[i] < b[i];
        }
        i += 1;
    }
    a.len() < b.len()
}

/// Two sorted column lists as one sorted list, in a constant (`N` must be `A + B`).
const fn merge_sorted<const A: usize, const B: usize, const N: usize>(
    a: &[&'static str; A],
    b: &[&'static str; B],
) -> [&'static str; N] {
    assert!(A + B == N, "the merged list holds both lists");
    let mut out = [""; N];
    let (mut i, mut j, mut k) = (0, 0, 0);
    while k < N {
        if j >= B || (i < A && str_lt(a[i], b[j])) {
            out[k] = a[i];
            i += 1;
        } else {
            out[k] = b[j];
            j += 1;
        }
        k += 1;
    }
    out
}

/// The FOCUS 1.2 columns that are optional but, when present, must never be null
/// (Recommended or Conditional columns with an unconditional "MUST NOT be null" rule). Each is
/// written only when at least one exported charge has a value for it; every other column of the
/// version is always written, so exports of different bills share one schema.
pub const NON_NULL_WHEN_PRESENT: [&str; 4] =
    ["ChargeFrequency", "PricingCurrency", "PricingCurrencyEffectiveCost", "ServiceSubcategory"];

/// The ledger's column for FOCUS column `name` (`BillingAccountId` → `billing_account_id`).
pub fn ledger_column(name: &str) -> String {
    let mut out = String::with_capacity(name.len() + 4);
    for (i, ch) in name.chars().enumerate() {
        if ch.is_ascii_uppercase() {
            if i > 0 {
                out.push('_');
            }
            out.push(ch.to_ascii_lowercase());
        } else {
            out.push(ch);
        }
    }
    out
}

/// The columns a dataset of the filtered charges has, in the specification's order: every column
/// of `version` but those of [`NON_NULL_WHEN_PRESENT`] no charge has a value for.
pub async fn dataset_columns(
    store: &dyn LedgerStore,
    filter: &ChargeFilter,
    version: FocusVersion,
) -> Result<Vec<&'static str>, ExportError> {
    let with_values = store.columns_with_values(filter).await?;
    Ok(version
        .columns()
        .iter()
        .copied()
        .filter(|c| !NON_NULL_WHEN_PRESENT.contains(c) || with_values.contains(ledger_column(c).as_str()))
        .collect())
}

/// The file format of a FOCUS dataset.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum FocusFormat {
    /// RFC 4180 CSV, CRLF line ends.
    #[default]
    Csv,
    /// Apache Parquet: amounts DECIMAL(38, s) (s: the most decimal places of any exported amount),
    /// dates TIMESTAMP (UTC, microseconds), text UTF-8.
    Parquet,
}

/// What `export focus` writes: version, file format, and whether the lineage columns follow.
#[derive(Debug, Clone, Copy)]
pub struct FocusExportOptions {
    pub version: FocusVersion,
    pub format: FocusFormat,
    /// Append costledger's `x_` lineage and allocation columns.
    pub lineage: bool,
}

/// The value of FOCUS column `name` on `l` (`None`: null). Every column of
/// [`FOCUS_1_2_COLUMNS`] has an arm; a test checks it.
pub fn value<'a>(l: &'a ChargeLine, name: &str) -> Option<Cow<'a, str>> {
    let t = |v: &'a Option<String>| v.as_deref().map(Cow::Borrowed);
    let d = |v: Option<rust_decimal::Decimal>| v.map(|d| Cow::Owned(canonical(d)));
    Some(match name {
        "BilledCost" => Cow::Owned(canonical(l.billed_cost)),
        "BillingAccountId" => Cow::Borrowed(l.billing_account_id.as_str()),
        "BillingAccountName" => return t(&l.billing_account_name),
        "BillingCurrency" => Cow::Borrowed(l.billing_currency.as_str()),
        "BillingPeriodEnd" => Cow::Owned(format_ts(l.billing_period_end)),
        "BillingPeriodStart" => Cow::Owned(format_ts(l.billing_period_start)),
        "ChargeCategory" => Cow::Borrowed(l.charge_category.as_str()),
        "ChargeClass" => return l.charge_class.map(|c| Cow::Borrowed(c.as_str())),
        "ChargeDescription" => return t(&l.charge_description),
        "ChargePeriodEnd" => Cow::Owned(format_ts(l.charge_period_end)),
        "ChargePeriodStart" => Cow::Owned(format_ts(l.charge_period_start)),
        "CommitmentDiscountId" => return t(&l.commitment_discount_id),
        "ConsumedQuantity" => return d(l.consumed_quantity),
        "ConsumedUnit" => return t(&l.consumed_unit),
        "ContractedCost" => return d(l.contracted_cost),
        "EffectiveCost" => return d(l.effective_cost),
        "InvoiceId" => return t(&l.invoice_id),
        "InvoiceIssuerName" => return t(&l.invoice_issuer_name),
        "ListCost" => return d(l.list_cost),
        "PricingQuantity" => return d(l.pricing_quantity),
        "PricingUnit" => return t(&l.pricing_unit),
        "ProviderName" => return t(&l.provider_name),
        "PublisherName" => return t(&l.publisher_name),
        "RegionId" => return t(&l.region_id),
        "ResourceId" => return t(&l.resource_id),
        "ResourceName" => return t(&l.resource_name),
        "ServiceCategory" => return t(&l.service_category),
        "ServiceName" => return t(&l.service_name),
        "SkuId" => return t(&l.sku_id),
        "SubAccountId" => return t(&l.sub_account_id),
        "SubAccountName" => return t(&l.sub_account_name),
        "Tags" => return l.tags_json().map(Cow::Owned),
        other => {
            let f = l.focus.as_deref()?;
            if let Some(i) = FocusColumns::TEXT.iter().position(|c| *c == other) {
                return f.texts()[i].map(Cow::Borrowed);
            }
            let i = FocusColumns::DECIMAL.iter().position(|c| *c == other)?;
            return d(f.decimals()[i]);
        }
    })
}

/// The lineage column `name` ([`LINEAGE_COLUMNS`]) of a charge and its allocation (owner,
/// reason); `None` (an empty cell, a Parquet null) when it has none.
fn lineage_value(name: &str, r: &ChargeRecord, alloc: Option<&(String, String)>) -> Option<String> {
    match name {
        "x_owner" => alloc.map(|a| a.0.clone()).filter(|o| !o.is_empty()),
        "x_allocation_reason" => alloc.map(|a| a.1.clone()).filter(|o| !o.is_empty()),
        "x_load_id" => Some(r.load_id.to_string()),
        "x_source" => Some(r.source.clone()),
        "x_source_ref" => r.line.source_ref.clone(),
        _ => None,
    }
}

/// One owner's share of a charge that a shared allocation rule splits: FOCUS 1.3's Allocated*
/// columns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Share {
    /// `AllocatedMethodId`: the allocation basis, as the reconciler and the finance CSV name it
    /// (`shared:proportional:rule:NAME`, `shared:even:rule:NAME`, `shared:fixed:rule:NAME`,
    /// `shared:even(no direct spend):rule:NAME`).
    pub method_id: String,
    /// `AllocatedMethodDetails`: `{"Elements":[{"AllocatedRatio":R}]}`, R the owner's weight over
    /// all weights to [`RATIO_PLACES`] places; the ratios of one charge sum to exactly 1.
    pub details: String,
    /// `AllocatedResourceId` and `AllocatedResourceName`: the owner the share is allocated to.
    pub owner: String,
}

/// Decimal places of an `AllocatedRatio` (the ratios are split like an amount, so they sum to 1).
pub const RATIO_PLACES: u32 = 14;

/// The tag key `AllocatedTags` names a share's owner with (`{"costledger/owner":"payments"}`).
pub const OWNER_TAG_KEY: &str = "costledger/owner";

/// One row of a dataset: a charge, or (FOCUS 1.3) one owner's share of a charge a shared rule
/// splits, its amounts and quantities that owner's exact share.
#[derive(Debug, Clone)]
pub struct DatasetRow {
    pub rec: ChargeRecord,
    /// (owner, allocation reason) for the lineage columns, when asked.
    lineage: Option<(String, String)>,
    share: Option<Share>,
}

/// The value of column `name` of a dataset row (`None`: null).
fn cell<'a>(row: &'a DatasetRow, name: &str) -> Option<Cow<'a, str>> {
    let share = row.share.as_ref();
    let l = &row.rec.line;
    match name {
        "AllocatedMethodId" => share.map(|s| Cow::Borrowed(s.method_id.as_str())),
        "AllocatedMethodDetails" => share.map(|s| Cow::Borrowed(s.details.as_str())),
        "AllocatedResourceId" | "AllocatedResourceName" => share.map(|s| Cow::Borrowed(s.owner.as_str())),
        "AllocatedTags" => {
            share.map(|s| Cow::Owned(format!("{{{}:{}}}", json_string(OWNER_TAG_KEY), json_string(&s.owner))))
        }
        // costledger reads no contract commitments from any bill.
        "ContractApplied" => None,
        // The cloud whose bill it is: it sells and hosts what the bill charges for (marketplace
        // sellers are not named consistently by the bills; see docs/focus.md).
        "ServiceProviderName" | "HostProviderName" => l.provider_name.as_deref().map(Cow::Borrowed),
        _ => value(l, name),
    }
}

fn json_string(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_else(|_| "\"\"".into())
}

/// The amounts and quantities a share of a charge divides (unit prices stay as they are).
const SPLIT_DECIMALS: [&str; 2] = ["CommitmentDiscountQuantity", "PricingCurrencyEffectiveCost"];

/// Owners and their weights, as a split takes them.
type Weights = Vec<(String, ExactSum)>;

/// Divides the charges of shared allocation rules among owners the way the last reconcile did
/// (same weights: the owners' direct spend of the period, the even split, or the fixed
/// percentages), for FOCUS 1.3's Allocated* columns.
pub struct Splitter<'a> {
    alloc: &'a Allocator,
    /// Billing period → the owners' direct spend in it, from the reconciled allocation.
    spend: BTreeMap<String, DirectSpend>,
    /// Billing periods the reconciler has allocated.
    reconciled: BTreeSet<String>,
}

impl<'a> Splitter<'a> {
    pub async fn new(store: &dyn LedgerStore, alloc: &'a Allocator) -> Result<Splitter<'a>, ExportError> {
        let mut spend: BTreeMap<String, DirectSpend> = BTreeMap::new();
        for a in store.allocations(None).await? {
            let Some(owner) = a.owner else { continue };
            if StoredBasis::is_shared(&a.basis) {
                continue;
            }
            spend
                .entry(a.period)
                .or_default()
                .entry(a.currency)
                .or_default()
                .entry(owner)
                .or_default()
                .merge(&a.amount)?;
        }
        let reconciled = store.reconcile_states().await?.into_iter().map(|s| s.period).collect();
        Ok(Splitter { alloc, spend, reconciled })
    }

    /// The shares of `line` (owner, ratio, basis) when a shared rule splits it; `None` when no
    /// shared rule applies or nobody has a weight (the reconciler leaves it unallocated).
    fn weights(&self, line: &ChargeLine) -> Result<Option<(Weights, String)>, ExportError> {
        let tags = self.alloc.tags(line);
        let Decision::Shared(rule) = self.alloc.decide(line, &tags) else { return Ok(None) };
        let r = &self.alloc.cfg.rules[rule];
        let RuleAction::Shared(how) = &r.action else { return Ok(None) };
        let period = BillingPeriod::of(line.billing_period_start).to_string();
        if !self.reconciled.contains(&period) {
            return Err(ExportError::NotReconciled(period));
        }
        let none = DirectSpend::new();
        let (weights, mode) =
            shared_weights(self.alloc, how, self.spend.get(&period).unwrap_or(&none), &line.billing_currency);
        if weights.is_empty() {
            return Ok(None);
        }
        Ok(Some((weights, StoredBasis::Shared { mode, rule: &r.name }.to_string())))
    }

    /// The rows of one charge, appended to `out`: the charge itself, or one row per owner with
    /// that owner's exact share of every amount and quantity (the shares sum to the charge's
    /// amounts exactly). `true` when the charge was split.
    pub fn rows(
        &self,
        rec: ChargeRecord,
        lineage: Option<(String, String)>,
        out: &mut Vec<DatasetRow>,
    ) -> Result<bool, ExportError> {
        let Some((weights, method_id)) = self.weights(&rec.line)? else {
            out.push(DatasetRow { rec, lineage, share: None });
            return Ok(false);
        };
        let where_ = |e: String| {
            ExportError::NotExact(format!(
                "splitting load {} row {} ({}) by rule {method_id}: {e}",
                rec.load_id,
                rec.row_no,
                rec.line.source_ref.as_deref().unwrap_or("no source reference")
            ))
        };
        let units = Decimal::from(10u64.pow(RATIO_PLACES - 2));
        let ratios = split_exact(ExactSum::from(units), &weights).map_err(where_)?;
        let l = &rec.line;
        let split = |d: Decimal| split_by(d, &weights).map_err(where_);
        let opt =
            |d: Option<Decimal>| -> Result<Option<Vec<(String, Decimal)>>, ExportError> { d.map(split).transpose() };
        let billed = split(l.billed_cost)?;
        let effective = opt(l.effective_cost)?;
        let list = opt(l.list_cost)?;
        let contracted = opt(l.contracted_cost)?;
        let pricing_q = opt(l.pricing_quantity)?;
        let consumed_q = opt(l.consumed_quantity)?;
        let focus = l.focus.as_deref().map(|f| f.to_columns());
        let mut extra = Vec::with_capacity(SPLIT_DECIMALS.len());
        for name in SPLIT_DECIMALS {
            extra.push(opt(focus.as_ref().and_then(|f| f.decimals()[decimal_index(name)]))?);
        }
        for (i, (owner, ratio)) in ratios.iter().enumerate() {
            debug_assert_eq!(billed[i].0, *owner, "every split lists the owners in one order");
            // The ratio's units are 10^-(RATIO_PLACES - 2) of a whole, each share at 2 places.
            let r = ratio
                .to_decimal()
                .map(|(r, _)| r.normalize())
                .and_then(|r| Decimal::try_from_i128_with_scale(r.mantissa(), r.scale() + RATIO_PLACES - 2).ok())
                .ok_or_else(|| where_(format!("ratio {ratio} out of range")))?
                .normalize();
            let mut line = l.clone();
            line.billed_cost = billed[i].1;
            let pick = |v: &Option<Vec<(String, Decimal)>>| v.as_ref().map(|v| v[i].1);
            line.effective_cost = pick(&effective);
            line.list_cost = pick(&list);
            line.contracted_cost = pick(&contracted);
            line.pricing_quantity = pick(&pricing_q);
            line.consumed_quantity = pick(&consumed_q);
            if let Some(f) = &focus {
                let mut f = f.clone();
                for (name, v) in SPLIT_DECIMALS.iter().zip(&extra) {
                    if let Some(slot) = f.decimal_mut(name) {
                        *slot = pick(v);
                    }
                }
                line.focus = f.boxed();
            }
            let share = Share {
                method_id: method_id.clone(),
                details: format!("{{\"Elements\":[{{\"AllocatedRatio\":{}}}]}}", canonical(r)),
                owner: owner.clone(),
            };
            let lineage = lineage.as_ref().map(|_| (owner.clone(), method_id.clone()));
            out.push(DatasetRow {
                rec: ChargeRecord { load_id: rec.load_id, row_no: rec.row_no, source: rec.source.clone(), line },
                lineage,
                share: Some(share),
            });
        }
        Ok(true)
    }
}

/// A commitment purchase that carries its commitment's unused share as EffectiveCost (an AWS
/// CUR's RIFee and SavingsPlanRecurringFee lines; FOCUS requires a purchase's EffectiveCost to
/// be 0) as the two rows FOCUS models it with: the purchase, EffectiveCost 0; and a Usage row,
/// CommitmentDiscountStatus `Unused`, ChargeFrequency `Usage-Based`, that carries the unused
/// share: EffectiveCost (and PricingCurrencyEffectiveCost) the purchase's, BilledCost, ListCost
/// and ContractedCost 0, no consumed quantity, CommitmentDiscountQuantity the unused quantity
/// (a spend commitment measured in the bill's currency: the unused spend, which is the
/// EffectiveCost; a reservation: the CUR's unused hours, [`X_UNUSED_COMMITMENT_QUANTITY`]; else null),
/// PricingQuantity that quantity when the pricing unit is the commitment's unit, else 0. Each
/// amount of the pair sums to the purchase's exactly. `None` for every other line. A `share`
/// (FOCUS 1.3: one owner's part of a split charge) has its own share of the amounts, but the
/// stored unused hours are the whole charge's, so a reservation's unused quantity stays null on
/// it. Pure.
pub fn unused_commitment_split(line: &ChargeLine, share: bool) -> Option<(ChargeLine, ChargeLine)> {
    let unused = line.effective_cost.filter(|e| !e.is_zero())?;
    if line.charge_category != ChargeCategory::Purchase || line.commitment_discount_id.is_none() {
        return None;
    }
    let zero = Decimal::ZERO;
    let mut purchase = line.clone();
    purchase.effective_cost = Some(zero);
    let mut pf = line.focus.as_deref().map(|f| f.to_columns()).unwrap_or_default();
    let pce = pf.pricing_currency_effective_cost;
    if pce.is_some() {
        pf.pricing_currency_effective_cost = Some(zero);
    }
    purchase.focus = pf.boxed();

    let mut u = line.clone();
    u.charge_category = ChargeCategory::Usage;
    u.billed_cost = zero;
    u.effective_cost = Some(unused);
    u.list_cost = Some(zero);
    u.contracted_cost = Some(zero);
    u.consumed_quantity = None;
    u.consumed_unit = None;
    let mut f = line.focus.as_deref().map(|f| f.to_columns()).unwrap_or_default();
    f.charge_frequency = Some("Usage-Based".to_string());
    f.commitment_discount_status = Some("Unused".to_string());
    // Nothing is priced at a contracted rate on this row (its ContractedCost is 0).
    f.contracted_unit_price = None;
    f.pricing_currency_contracted_unit_price = None;
    let quantity = match f.commitment_discount_unit.as_deref() {
        Some(unit) if unit == line.billing_currency => Some(unused),
        Some(_) if !share => line.x_extra.get(X_UNUSED_COMMITMENT_QUANTITY).and_then(|q| q.parse::<Decimal>().ok()),
        Some(_) => None,
        None => None,
    };
    if quantity.is_none() {
        f.commitment_discount_unit = None;
    }
    u.pricing_quantity = match quantity {
        Some(q) if line.pricing_unit.is_some() && line.pricing_unit == f.commitment_discount_unit => Some(q),
        _ => line.pricing_quantity.map(|_| zero),
    };
    f.commitment_discount_quantity = quantity;
    f.pricing_currency_effective_cost = pce;
    u.focus = f.boxed();
    Some((purchase, u))
}

fn decimal_index(name: &str) -> usize {
    FocusColumns::DECIMAL.iter().position(|c| *c == name).unwrap_or_else(|| unreachable!("{name} is a FOCUS decimal"))
}

/// The rows of one charge: split by `splitter` when it is given (FOCUS 1.3 with an allocator),
/// else the charge itself.
fn expand(
    splitter: Option<&Splitter<'_>>,
    rec: ChargeRecord,
    lineage: Option<(String, String)>,
    out: &mut Vec<DatasetRow>,
    stats: &mut ExportStats,
) -> Result<(), ExportError> {
    let first = out.len();
    let split = match splitter {
        Some(s) => s.rows(rec, lineage, out)?,
        None => {
            out.push(DatasetRow { rec, lineage, share: None });
            false
        }
    };
    stats.split_charges += u64::from(split);
    // A purchase carrying its commitment's unused share: the purchase and an Unused usage row.
    let mut i = first;
    while i < out.len() {
        if let Some((purchase, unused)) = unused_commitment_split(&out[i].rec.line, out[i].share.is_some()) {
            let mut row = out[i].clone();
            row.rec.line = unused;
            out[i].rec.line = purchase;
            out.insert(i + 1, row);
            stats.unused_commitment_rows += 1;
            i += 1;
        }
        i += 1;
    }
    Ok(())
}

fn record<'a>(row: &'a DatasetRow, columns: &[&str], opts: &FocusExportOptions) -> Vec<Cow<'a, str>> {
    let mut out: Vec<Cow<'a, str>> = columns.iter().map(|c| cell(row, c).unwrap_or(Cow::Borrowed(""))).collect();
    if opts.lineage {
        out.extend(
            LINEAGE_COLUMNS
                .iter()
                .map(|c| Cow::Owned(lineage_value(c, &row.rec, row.lineage.as_ref()).unwrap_or_default())),
        );
    }
    out
}

/// Stream the filtered current charges to `out` as a FOCUS dataset in `opts.format`.
pub async fn export_focus<W: Write + Send>(
    store: &dyn LedgerStore,
    filter: &ChargeFilter,
    opts: &FocusExportOptions,
    alloc: Option<&Allocator>,
    out: W,
) -> Result<ExportStats, ExportError> {
    match opts.format {
        FocusFormat::Csv => export_focus_csv(store, filter, opts, alloc, out).await,
        FocusFormat::Parquet => export_focus_parquet(store, filter, opts, alloc, out).await,
    }
}

/// The allocation the lineage columns show (`None` without `--lineage` or an allocator).
async fn lineage_allocation<'a>(
    store: &dyn LedgerStore,
    opts: &FocusExportOptions,
    alloc: Option<&'a Allocator>,
) -> Result<Option<LineAllocation<'a>>, ExportError> {
    Ok(match (opts.lineage, alloc) {
        (true, Some(a)) => Some(LineAllocation::new(store, a).await?),
        _ => None,
    })
}

/// The splitter of shared charges: FOCUS 1.3 with an allocator only.
async fn splitter<'a>(
    store: &dyn LedgerStore,
    opts: &FocusExportOptions,
    alloc: Option<&'a Allocator>,
) -> Result<Option<Splitter<'a>>, ExportError> {
    Ok(match (opts.version, alloc) {
        (FocusVersion::V1_3, Some(a)) => Some(Splitter::new(store, a).await?),
        _ => None,
    })
}

/// Stream the filtered current charges to `out` as a FOCUS CSV dataset.
pub async fn export_focus_csv<W: Write>(
    store: &dyn LedgerStore,
    filter: &ChargeFilter,
    opts: &FocusExportOptions,
    alloc: Option<&Allocator>,
    out: W,
) -> Result<ExportStats, ExportError> {
    let columns = dataset_columns(store, filter, opts.version).await?;
    let columns = columns.as_slice();
    let mut w = csv::WriterBuilder::new().terminator(csv::Terminator::CRLF).from_writer(out);
    let lineage: &[&str] = if opts.lineage { &LINEAGE_COLUMNS } else { &[] };
    w.write_record(columns.iter().chain(lineage.iter()))?;
    let line_alloc = lineage_allocation(store, opts, alloc).await?;
    let splitter = splitter(store, opts, alloc).await?;
    let mut stats = ExportStats::default();
    let mut buf: Vec<DatasetRow> = Vec::new();
    let mut rows = store.charges(filter);
    while let Some(r) = rows.next().await {
        let r = r?;
        let lin = line_alloc.as_ref().map(|a| a.columns(&r.line));
        expand(splitter.as_ref(), r, lin, &mut buf, &mut stats)?;
        for row in buf.drain(..) {
            w.write_record(record(&row, columns, opts).iter().map(|c| c.as_bytes()))?;
            stats.rows += 1;
            stats.totals.add(&row.rec.line.billing_currency, row.rec.line.billed_cost)?;
        }
    }
    w.flush()?;
    Ok(stats)
}

/// Fewest decimal places of a Parquet amount: DECIMAL(38, s) with s the most places any exported
/// value has (read from the ledger before writing), and at least this.
pub const PARQUET_MIN_SCALE: u32 = 2;
/// Rows per Parquet row group: the batch held in memory while it is written column by column.
pub const PARQUET_ROWS_PER_GROUP: usize = 50_000;

/// How a FOCUS column is typed in Parquet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ParquetKind {
    Text,
    Decimal,
    Timestamp,
}

fn parquet_kind(name: &str) -> ParquetKind {
    match name {
        "BillingPeriodStart" | "BillingPeriodEnd" | "ChargePeriodStart" | "ChargePeriodEnd" => ParquetKind::Timestamp,
        "BilledCost" | "EffectiveCost" | "ListCost" | "ContractedCost" | "PricingQuantity" | "ConsumedQuantity" => {
            ParquetKind::Decimal
        }
        other if FocusColumns::DECIMAL.contains(&other) => ParquetKind::Decimal,
        _ => ParquetKind::Text,
    }
}

/// The exact decimal value of a decimal column of `l`.
fn decimal_value(l: &ChargeLine, name: &str) -> Option<rust_decimal::Decimal> {
    match name {
        "BilledCost" => Some(l.billed_cost),
        "EffectiveCost" => l.effective_cost,
        "ListCost" => l.list_cost,
        "ContractedCost" => l.contracted_cost,
        "PricingQuantity" => l.pricing_quantity,
        "ConsumedQuantity" => l.consumed_quantity,
        other => {
            let i = FocusColumns::DECIMAL.iter().position(|c| *c == other)?;
            l.focus.as_deref()?.decimals()[i]
        }
    }
}

fn timestamp_value(l: &ChargeLine, name: &str) -> Option<chrono::DateTime<chrono::Utc>> {
    match name {
        "BillingPeriodStart" => Some(l.billing_period_start),
        "BillingPeriodEnd" => Some(l.billing_period_end),
        "ChargePeriodStart" => Some(l.charge_period_start),
        "ChargePeriodEnd" => Some(l.charge_period_end),
        _ => None,
    }
}

/// `d` as the unscaled big-endian 16-byte two's complement of DECIMAL(38, `scale`), or why it
/// cannot be held exactly.
pub fn parquet_decimal(d: rust_decimal::Decimal, scale: u32) -> Result<[u8; 16], String> {
    let d = if d.scale() > scale { d.normalize() } else { d };
    if d.scale() > scale {
        return Err(format!("{d} has {} decimal places; the dataset's DECIMAL(38, {scale}) holds {scale}", d.scale()));
    }
    let unscaled = d
        .mantissa()
        .checked_mul(10i128.pow(scale - d.scale()))
        .filter(|m| m.unsigned_abs() < 10u128.pow(38))
        .ok_or_else(|| format!("{d} has more than {} integer digits, which DECIMAL(38, {scale}) holds", 38 - scale))?;
    Ok(unscaled.to_be_bytes())
}

/// The Parquet schema of a dataset with `columns` (and the lineage columns when asked).
fn parquet_schema(columns: &[&str], lineage: bool, scale: u32) -> String {
    let mut fields: Vec<String> = columns
        .iter()
        .map(|c| match parquet_kind(c) {
            ParquetKind::Text => format!("OPTIONAL BYTE_ARRAY {c} (STRING);"),
            ParquetKind::Decimal => format!("OPTIONAL FIXED_LEN_BYTE_ARRAY (16) {c} (DECIMAL(38,{scale}));"),
            ParquetKind::Timestamp => format!("OPTIONAL INT64 {c} (TIMESTAMP(MICROS,true));"),
        })
        .collect();
    if lineage {
        fields.extend(LINEAGE_COLUMNS.iter().map(|c| format!("OPTIONAL BYTE_ARRAY {c} (STRING);")));
    }
    format!("message focus {{ {} }}", fields.join(" "))
}

/// Write one row group of `rows`, column by column.
fn write_row_group<W: Write + Send>(
    w: &mut parquet::file::writer::SerializedFileWriter<W>,
    rows: &[DatasetRow],
    columns: &[&str],
    lineage: bool,
    scale: u32,
) -> Result<(), ExportError> {
    use parquet::data_type::{ByteArray, ByteArrayType, FixedLenByteArray, FixedLenByteArrayType, Int64Type};
    let mut rg = w.next_row_group()?;
    let lineage_cols: &[&str] = if lineage { &LINEAGE_COLUMNS } else { &[] };
    for name in columns.iter().chain(lineage_cols) {
        let Some(mut col) = rg.next_column()? else {
            return Err(ExportError::NotExact(format!("the Parquet schema has no column {name} (a bug)")));
        };
        let mut defs: Vec<i16> = Vec::with_capacity(rows.len());
        let kind = if name.starts_with("x_") { ParquetKind::Text } else { parquet_kind(name) };
        match kind {
            ParquetKind::Text => {
                let mut values: Vec<ByteArray> = Vec::new();
                for row in rows {
                    let v = if name.starts_with("x_") {
                        lineage_value(name, &row.rec, row.lineage.as_ref()).map(String::into_bytes)
                    } else {
                        cell(row, name).map(|c| c.into_owned().into_bytes())
                    };
                    defs.push(i16::from(v.is_some()));
                    values.extend(v.map(ByteArray::from));
                }
                col.typed::<ByteArrayType>().write_batch(&values, Some(&defs), None)?;
            }
            ParquetKind::Decimal => {
                let mut values: Vec<FixedLenByteArray> = Vec::new();
                for DatasetRow { rec: r, .. } in rows {
                    let v = decimal_value(&r.line, name);
                    defs.push(i16::from(v.is_some()));
                    if let Some(d) = v {
                        let bytes = parquet_decimal(d, scale).map_err(|e| {
                            ExportError::NotExact(format!(
                                "{name} of load {} row {} ({}): {e}; export this selection as CSV, which holds every decimal exactly",
                                r.load_id,
                                r.row_no,
                                r.line.source_ref.as_deref().unwrap_or("no source reference")
                            ))
                        })?;
                        values.push(FixedLenByteArray::from(bytes.to_vec()));
                    }
                }
                col.typed::<FixedLenByteArrayType>().write_batch(&values, Some(&defs), None)?;
            }
            ParquetKind::Timestamp => {
                let mut values: Vec<i64> = Vec::new();
                for DatasetRow { rec: r, .. } in rows {
                    let v = timestamp_value(&r.line, name);
                    defs.push(i16::from(v.is_some()));
                    values.extend(v.map(|t| t.timestamp_micros()));
                }
                col.typed::<Int64Type>().write_batch(&values, Some(&defs), None)?;
            }
        }
        col.close()?;
    }
    rg.close()?;
    Ok(())
}

/// Stream the filtered current charges to `out` as a FOCUS Parquet dataset: one row group per
/// [`PARQUET_ROWS_PER_GROUP`] charges, so memory stays bounded whatever the ledger's size.
pub async fn export_focus_parquet<W: Write + Send>(
    store: &dyn LedgerStore,
    filter: &ChargeFilter,
    opts: &FocusExportOptions,
    alloc: Option<&Allocator>,
    out: W,
) -> Result<ExportStats, ExportError> {
    let columns = dataset_columns(store, filter, opts.version).await?;
    let scale = store.max_decimal_scale(filter).await?.max(PARQUET_MIN_SCALE);
    let schema = parquet::schema::parser::parse_message_type(&parquet_schema(&columns, opts.lineage, scale))?;
    let props = parquet::file::properties::WriterProperties::builder()
        .set_compression(parquet::basic::Compression::SNAPPY)
        .set_created_by(format!("costledger {}", env!("CARGO_PKG_VERSION")))
        .build();
    let mut w = parquet::file::writer::SerializedFileWriter::new(out, Arc::new(schema), Arc::new(props))?;
    let line_alloc = lineage_allocation(store, opts, alloc).await?;
    let splitter = splitter(store, opts, alloc).await?;
    let mut stats = ExportStats::default();
    let mut buf: Vec<DatasetRow> = Vec::new();
    let mut batch: Vec<DatasetRow> = Vec::with_capacity(PARQUET_ROWS_PER_GROUP);
    let mut rows = store.charges(filter);
    while let Some(r) = rows.next().await {
        let r = r?;
        let a = line_alloc.as_ref().map(|a| a.columns(&r.line));
        expand(splitter.as_ref(), r, a, &mut buf, &mut stats)?;
        for row in buf.drain(..) {
            stats.rows += 1;
            stats.totals.add(&row.rec.line.billing_currency, row.rec.line.billed_cost)?;
            batch.push(row);
            if batch.len() == PARQUET_ROWS_PER_GROUP {
                write_row_group(&mut w, &batch, &columns, opts.lineage, scale)?;
                batch.clear();
            }
        }
    }
    if !batch.is_empty() {
        write_row_group(&mut w, &batch, &columns, opts.lineage, scale)?;
    }
    w.close()?;
    Ok(stats)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An RIFee's unused share as a row of its own: the pair adds back to the fee exactly; the
    /// unused hours are the stored whole-fee figure, so a share of the fee (FOCUS 1.3) leaves
    /// them null instead of claiming the whole fee's hours.
    #[test]
    fn a_fees_unused_share_adds_back_and_a_share_claims_no_whole_fee_hours() {
        let d = |s: &str| rust_decimal::Decimal::from_str_exact(s).expect("decimal");
        let start = chrono::DateTime::parse_from_rfc3339("2026-10-01T00:00:00Z").expect("ts").to_utc();
        let mut f = FocusColumns {
            charge_frequency: Some("Recurring".into()),
            commitment_discount_unit: Some("Hours".into()),
            commitment_discount_quantity: Some(d("744")),
            contracted_unit_price: Some(d("0.035")),
            ..Default::default()
        };
        f.commitment_discount_category = Some("Usage".into());
        let fee = ChargeLine {
            billing_account_id: "A".into(),
            billing_account_name: None,
            sub_account_id: None,
            sub_account_name: None,
            billing_period_start: start,
            billing_period_end: start,
            charge_period_start: start,
            charge_period_end: start,
            charge_category: ChargeCategory::Purchase,
            charge_class: None,
            charge_description: None,
            service_name: None,
            service_category: None,
            provider_name: None,
            publisher_name: None,
            invoice_issuer_name: None,
            region_id: None,
            resource_id: None,
            resource_name: None,
            sku_id: None,
            billed_cost: d("26.04"),
            effective_cost: Some(d("43.20")),
            list_cost: Some(d("80.352")),
            contracted_cost: Some(d("26.04")),
            billing_currency: "USD".into(),
            pricing_quantity: Some(d("744")),
            pricing_unit: Some("Hours".into()),
            consumed_quantity: None,
            consumed_unit: None,
            commitment_discount_id: Some("ri-1".into()),
            invoice_id: None,
            tags: Default::default(),
            focus: f.boxed(),
            x_extra: [(X_UNUSED_COMMITMENT_QUANTITY.to_string(), "720".to_string())].into(),
            source_ref: None,
        };
        let (p, u) = unused_commitment_split(&fee, false).expect("split");
        for (get, name) in [
            (|l: &ChargeLine| Some(l.billed_cost), "BilledCost"),
            (|l: &ChargeLine| l.effective_cost, "EffectiveCost"),
            (|l: &ChargeLine| l.list_cost, "ListCost"),
            (|l: &ChargeLine| l.contracted_cost, "ContractedCost"),
        ] as [(fn(&ChargeLine) -> Option<rust_decimal::Decimal>, &str); 4]
        {
            let sum = get(&p).unwrap_or_default() + get(&u).unwrap_or_default();
            assert_eq!(sum, get(&fee).unwrap_or_default(), "{name} adds back");
        }
        assert_eq!(p.effective_cost, Some(d("0")));
        assert_eq!(u.charge_category, ChargeCategory::Usage);
        let uf = u.focus.as_deref().expect("focus");
        assert_eq!(uf.text("CommitmentDiscountStatus"), Some("Unused"));
        assert_eq!(uf.decimal("CommitmentDiscountQuantity"), Some(d("720")));
        assert_eq!(uf.decimal("ContractedUnitPrice"), None);
        assert_eq!(u.pricing_quantity, Some(d("720")));
        // A share: the amounts are its own, the whole fee's unused hours are not.
        let (_, us) = unused_commitment_split(&fee, true).expect("split");
        let usf = us.focus.as_deref().expect("focus");
        assert_eq!((usf.decimal("CommitmentDiscountQuantity"), usf.text("CommitmentDiscountUnit")), (None, None));
        assert_eq!(us.pricing_quantity, Some(d("0")));
        // No effective cost to move, or no commitment: one row, as it is.
        let paid = ChargeLine { effective_cost: Some(d("0")), ..fee.clone() };
        assert!(unused_commitment_split(&paid, false).is_none());
        let plain = ChargeLine { commitment_discount_id: None, ..fee };
        assert!(unused_commitment_split(&plain, false).is_none());
    }

    #[test]
    fn parquet_decimals_are_exact_or_refused() {
        let d = |s: &str| rust_decimal::Decimal::from_str_exact(s).expect("decimal");
        let back = |b: [u8; 16]| i128::from_be_bytes(b);
        assert_eq!(back(parquet_decimal(d("1.5"), 20).expect("fits")), 15 * 10i128.pow(19));
        assert_eq!(back(parquet_decimal(d("-0.0000000001"), 20).expect("fits")), -(10i128.pow(10)));
        assert_eq!(
            back(parquet_decimal(d("123456789012345678.5"), 20).expect("fits")),
            1234567890123456785 * 10i128.pow(19)
        );
        assert_eq!(back(parquet_decimal(d("0.000000007292255759239199"), 24).expect("fits")), 7292255759239199);
        // Trailing zeros beyond the scale are not digits.
        assert!(parquet_decimal(d("1.0000000000000000000000000"), 20).is_ok());
        let e = parquet_decimal(d("0.0000000000000000000001"), 20).expect_err("22 places");
        assert!(e.contains("22 decimal places"), "{e}");
        let e = parquet_decimal(d("1234567890123456789"), 20).expect_err("19 integer digits");
        assert!(e.contains("integer digits"), "{e}");
    }

    #[test]
    fn every_focus_1_2_column_has_a_value_and_the_list_is_the_specs_order() {
        let mut sorted = FOCUS_1_2_COLUMNS.to_vec();
        sorted.sort_unstable();
        assert_eq!(sorted, FOCUS_1_2_COLUMNS.to_vec(), "alphabetical, as the specification lists them");
        let mut all: Vec<&str> = costledger_core::FOCUS_COLUMNS.to_vec();
        all.extend(FocusColumns::TEXT);
        all.extend(FocusColumns::DECIMAL);
        all.sort_unstable();
        assert_eq!(all, sorted, "the ledger keeps every FOCUS 1.2 column, and only those");
        // A line with every column filled gives a value for every column.
        let mut f = FocusColumns::default();
        for c in FocusColumns::TEXT {
            *f.text_mut(c).expect("text") = Some("x".into());
        }
        for c in FocusColumns::DECIMAL {
            *f.decimal_mut(c).expect("decimal") = Some(rust_decimal::Decimal::ONE);
        }
        let start = chrono::DateTime::parse_from_rfc3339("2026-01-01T00:00:00Z").expect("ts").to_utc();
        let l = ChargeLine {
            billing_account_id: "A".into(),
            billing_account_name: Some("n".into()),
            sub_account_id: Some("s".into()),
            sub_account_name: Some("sn".into()),
            billing_period_start: start,
            billing_period_end: start,
            charge_period_start: start,
            charge_period_end: start,
            charge_category: costledger_core::ChargeCategory::Usage,
            charge_class: Some(costledger_core::ChargeClass::Correction),
            charge_description: Some("d".into()),
            service_name: Some("s".into()),
            service_category: Some("Compute".into()),
            provider_name: Some("p".into()),
            publisher_name: Some("p".into()),
            invoice_issuer_name: Some("p".into()),
            region_id: Some("r".into()),
            resource_id: Some("r".into()),
            resource_name: Some("r".into()),
            sku_id: Some("k".into()),
            billed_cost: rust_decimal::Decimal::ONE,
            effective_cost: Some(rust_decimal::Decimal::ONE),
            list_cost: Some(rust_decimal::Decimal::ONE),
            contracted_cost: Some(rust_decimal::Decimal::ONE),
            billing_currency: "USD".into(),
            pricing_quantity: Some(rust_decimal::Decimal::ONE),
            pricing_unit: Some("u".into()),
            consumed_quantity: Some(rust_decimal::Decimal::ONE),
            consumed_unit: Some("u".into()),
            commitment_discount_id: Some("c".into()),
            invoice_id: Some("i".into()),
            tags: [("team".to_string(), "a".to_string())].into(),
            focus: f.boxed(),
            x_extra: Default::default(),
            source_ref: None,
        };
        for c in FOCUS_1_2_COLUMNS {
            assert!(value(&l, c).is_some(), "{c} has no value");
        }
        assert_eq!(value(&l, "BillingPeriodStart").as_deref(), Some("2026-01-01T00:00:00Z"));
        assert_eq!(value(&l, "Tags").as_deref(), Some(r#"{"team":"a"}"#));
        assert_eq!(value(&l, "NotAColumn"), None);
        // Every column maps to a ledger column.
        for c in FOCUS_1_2_COLUMNS {
            let col = ledger_column(c);
            assert!(
                crate::ledger::is_nullable_column(&col)
                    || [
                        "billing_account_id",
                        "billing_period_start",
                        "billing_period_end",
                        "charge_period_start",
                        "charge_period_end",
                        "charge_category",
                        "billed_cost",
                        "billing_currency"
                    ]
                    .contains(&col.as_str()),
                "{c} → {col}"
            );
        }
        for c in NON_NULL_WHEN_PRESENT {
            assert!(FOCUS_1_2_COLUMNS.contains(&c), "{c}");
            assert!(crate::ledger::is_nullable_column(&ledger_column(c)), "{c}");
        }
        // FOCUS 1.3: 1.2's columns and the eight added, alphabetically; a share fills every
        // added column but ContractApplied (costledger reads no contract commitments).
        let mut v13 = FOCUS_1_2_COLUMNS.to_vec();
        v13.extend(FOCUS_1_3_ADDED);
        v13.sort_unstable();
        assert_eq!(v13, FOCUS_1_3_COLUMNS.to_vec());
        assert_eq!(FocusVersion::V1_3.columns(), FOCUS_1_3_COLUMNS.as_slice());
        let rec = ChargeRecord { load_id: 1, row_no: 1, source: "s".into(), line: l };
        let plain = DatasetRow { rec: rec.clone(), lineage: None, share: None };
        let share = Share {
            method_id: "shared:fixed:rule:tax".into(),
            details: r#"{"Elements":[{"AllocatedRatio":0.6}]}"#.into(),
            owner: "pay\"ments".into(),
        };
        let shared = DatasetRow { rec, lineage: None, share: Some(share) };
        for c in FOCUS_1_3_COLUMNS {
            if c != "ContractApplied" {
                assert!(cell(&shared, c).is_some(), "{c} has no value on a share");
            }
        }
        for c in FOCUS_1_3_ADDED.iter().filter(|c| c.starts_with("Allocated") || **c == "ContractApplied") {
            assert_eq!(cell(&plain, c), None, "{c} is null on a charge no rule splits");
        }
        assert_eq!(cell(&shared, "AllocatedTags").as_deref(), Some(r#"{"costledger/owner":"pay\"ments"}"#));
        assert_eq!(cell(&plain, "ServiceProviderName").as_deref(), Some("p"));
        assert_eq!(cell(&plain, "HostProviderName").as_deref(), Some("p"));
    }
}
