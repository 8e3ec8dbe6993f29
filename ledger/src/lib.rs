//! The ledger: the only crate that contains SQL.
//!
//! [`LedgerStore`] is the one seam; [`sqlite::SqliteLedger`] and [`postgres::PgLedger`]
//! implement it with the same behaviour, proved by one conformance suite
//! (`tests/it/ledger_conformance.rs`) run against both. Money goes in as `Decimal` and comes out
//! as `Decimal` or [`ExactSum`]; no sum is ever computed in floating point (SQLite:
//! `decimal_sum()`, PostgreSQL: `SUM(numeric)::text`).

mod contexts;
pub mod day_totals;
pub mod db_url;
pub mod decimal_sum;
mod kinds;
mod load_sql;
pub mod migrations;
mod pg_binary;
pub mod postgres;
mod query_sql;
mod reconcile_sql;
pub mod sqlite;
mod sqlite_bulk;
mod sqlite_read;
pub use query_sql::{GroupColumn, GroupedRow, Summed};

pub use day_totals::{DayKey, DayTotal, DayTotals, LoadDayTotals};
pub use db_url::DatabaseUrl;
pub use load_sql::{CommitDecision, commit_decision};

use std::collections::{BTreeMap, BTreeSet};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use costledger_core::{ChargeLine, ExactSum, RowError, SpentLines, Totals};
use futures::stream::BoxStream;

pub type LoadId = i64;

#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    #[error("{}", describe_db(.0))]
    Db(#[from] sqlx::Error),
    #[error("database migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("ledger data is not what costledger wrote ({0}); was the database changed by hand?")]
    Corrupt(String),
    #[error("{0}")]
    State(String),
    #[error("SQLite bulk staging failed: {0}")]
    Bulk(String),
    /// The database server could not be reached or refused the login.
    #[error("cannot connect to PostgreSQL at {target}: {message}")]
    Connect { target: String, message: String },
    #[error("{0}")]
    Config(String),
    #[error("unsupported database URL scheme '{0}': use sqlite://PATH or postgres://USER@HOST/DB")]
    Url(String),
}

pub type Result<T, E = LedgerError> = std::result::Result<T, E>;

/// A database error in words that say what happened and what to do (never "fix the input":
/// these are faults of the database or its disk, not of a bill).
pub fn describe_db(e: &sqlx::Error) -> String {
    if let sqlx::Error::Database(db) = e {
        let code = db.code().map(|c| c.into_owned()).unwrap_or_default();
        let msg = db.message();
        // SQLITE_FULL (13) / PostgreSQL disk_full (53100).
        if code == "13" || code == "53100" || msg.contains("database or disk is full") {
            return format!(
                "the disk holding the ledger is full ({msg}): free space there (about the size of the bill being \
                 loaded), then run the command again. A load that failed for it keeps no rows: they are removed at \
                 once or, when the disk is too full even for that, first thing by the next import; `costledger \
                 loads` then shows it as failed"
            );
        }
        // PostgreSQL counts the rows of a COPY as "line N": not a line of any bill.
        if let Some(pg) = e.as_database_error().and_then(|d| d.try_downcast_ref::<sqlx::postgres::PgDatabaseError>())
            && let Some(w) = pg.r#where()
            && w.starts_with("COPY ")
        {
            return format!(
                "the database refused the staged rows: {msg} (in {w}; that line counts rows sent to the database, \
                 not lines of the bill)"
            );
        }
        return format!(
            "database error: {msg}{}",
            if code.is_empty() { String::new() } else { format!(" (code {code})") }
        );
    }
    format!("database error: {e}")
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum LoadState {
    Staging,
    Current,
    Superseded,
    Failed,
}

impl LoadState {
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Staging => "staging",
            Self::Current => "current",
            Self::Superseded => "superseded",
            Self::Failed => "failed",
        }
    }

    pub fn parse(s: &str) -> Result<Self> {
        Ok(match s {
            "staging" => Self::Staging,
            "current" => Self::Current,
            "superseded" => Self::Superseded,
            "failed" => Self::Failed,
            other => return Err(LedgerError::Corrupt(format!("load state '{other}'"))),
        })
    }
}

/// What a source's charges are for. Closed set; stored as text in `sources.role`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum SourceRole {
    /// The bill: summed into totals, allocation, reports, queries and exports.
    #[default]
    Primary,
    /// A cross-check over a bill another source loads (Cost Explorer beside the CUR, say):
    /// loaded and compared by the cross-source check, never summed.
    Check,
}

impl SourceRole {
    pub const ALL: [SourceRole; 2] = [SourceRole::Primary, SourceRole::Check];

    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Primary => "primary",
            Self::Check => "check",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|r| r.as_str() == s)
    }
}

impl std::fmt::Display for SourceRole {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A load about to be staged.
#[derive(Debug, Clone)]
pub struct NewLoad {
    pub source_id: i64,
    pub scope: String,
    pub billing_period: Option<String>,
    pub delivery_key: String,
    pub description: String,
    /// `host:pid:nonce` of the process staging it (for sweeping after a crash).
    pub owner: String,
}

/// What one load contributed to one billing period.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PeriodContribution {
    pub rows: u64,
    pub totals: Totals,
    pub invoice_ids: BTreeSet<String>,
    /// Every line of the period carried an invoice id (the provider invoiced it).
    pub all_invoiced: bool,
    /// The latest ChargePeriodEnd of the period's lines ("data as of", kept per load so
    /// `source_data_end` does not scan the charges).
    pub data_end: Option<DateTime<Utc>>,
    /// The lines per provider × account × sub account × UTC day × currency (kept per load so
    /// the reconciler's totals and the accounts' first appearance do not scan the charges).
    pub days: DayTotals,
}

/// Everything known about a staged load when it is committed.
#[derive(Debug, Clone, Default)]
pub struct LoadSummary {
    pub row_count: u64,
    pub quarantined_count: u64,
    pub rounded_count: u64,
    /// Σ billed_cost per currency of the staged lines.
    pub totals: Totals,
    /// Σ of the raw amounts of quarantined rows that parse, per currency.
    pub quarantined_totals: Totals,
    pub checksum: String,
    /// Per billing period (`YYYY-MM` of BillingPeriodStart).
    pub periods: BTreeMap<String, PeriodContribution>,
    /// The connector says these periods are final.
    pub final_periods: bool,
    /// The delivery key, when it was computed during staging (the load was begun with a
    /// placeholder): set on the load at commit, before the duplicate check.
    pub delivery_key: Option<String>,
    /// The load's rollups, one per kind built (their last rows; earlier chunks were appended
    /// while staging), written in the commit transaction.
    pub rollups: Vec<Rollup>,
}

/// The kinds of daily rollup a load can have (migrations 0007 and 0013): each sums the load's
/// lines per local day over its own set of dimensions, and records its spec in its own column
/// of `loads`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum RollupKind {
    /// Every query dimension but the resource, the SKU, the commitment columns and the tags
    /// not configured (`kind` 0, spec in `loads.rollup_spec`).
    #[default]
    Daily,
    /// Provider, service category, service, SKU, pricing unit, charge category and class,
    /// pricing category and the commitment columns; no accounts, regions or tags (`kind` 1,
    /// spec in `loads.pricing_rollup_spec`).
    Pricing,
}

impl RollupKind {
    pub const ALL: [RollupKind; 2] = [RollupKind::Daily, RollupKind::Pricing];

    /// The value of `rollups.kind`.
    pub fn code(self) -> i16 {
        match self {
            RollupKind::Daily => 0,
            RollupKind::Pricing => 1,
        }
    }

    /// The column of `loads` that records the spec of a load's rollup of this kind.
    pub(crate) fn spec_column(self) -> &'static str {
        match self {
            RollupKind::Daily => "rollup_spec",
            RollupKind::Pricing => "pricing_rollup_spec",
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            RollupKind::Daily => "daily",
            RollupKind::Pricing => "pricing",
        }
    }
}

/// A load's lines summed per local day over the dimensions of one [`RollupKind`] (see
/// migrations 0007 and 0013).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Rollup {
    pub kind: RollupKind,
    /// What the rollup was built with (time zone, tag keys, aliases), as a fingerprint.
    pub spec: String,
    pub rows: Vec<RollupRow>,
}

/// One day × dimension combination of one load, in a rollup of `kind`; the columns the kind
/// does not hold are `None` (`billing_account_id` empty).
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RollupRow {
    pub kind: RollupKind,
    /// Local day of ChargePeriodStart (`YYYY-MM-DD`).
    pub day: String,
    /// `YYYY-MM` of BillingPeriodStart.
    pub billing_period: String,
    pub provider_name: Option<String>,
    pub billing_account_id: String,
    pub sub_account_id: Option<String>,
    pub service_name: Option<String>,
    pub service_category: Option<String>,
    pub region_id: Option<String>,
    pub charge_category: String,
    pub charge_class: Option<String>,
    pub pricing_unit: Option<String>,
    pub billing_currency: String,
    /// The rollup tag keys the lines carry (normalised key → value), as a JSON object.
    pub tags: Option<String>,
    pub sku_id: Option<String>,
    pub pricing_category: Option<String>,
    pub commitment_discount_id: Option<String>,
    pub commitment_discount_type: Option<String>,
    pub commitment_discount_category: Option<String>,
    pub commitment_discount_status: Option<String>,
    pub lines: u64,
    pub billed_cost: ExactSum,
    pub effective_cost: Option<ExactSum>,
    pub list_cost: Option<ExactSum>,
    pub contracted_cost: Option<ExactSum>,
    pub pricing_quantity: Option<ExactSum>,
    pub consumed_quantity: Option<ExactSum>,
}

/// A rollup row of a current load, with the load's source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RollupRecord {
    pub source: String,
    pub row: RollupRow,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CommitOutcome {
    /// The load is now current; `superseded` is the load it replaced.
    Current { superseded: Option<LoadId> },
    /// Another process committed the same delivery first; this load was discarded.
    Duplicate { existing: LoadId },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadRow {
    pub id: LoadId,
    pub source: String,
    pub scope: String,
    pub billing_period: Option<String>,
    pub delivery_key: String,
    pub description: Option<String>,
    pub state: LoadState,
    pub owner: String,
    pub started_at: DateTime<Utc>,
    pub heartbeat_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
    pub row_count: u64,
    pub quarantined_count: u64,
    pub rounded_count: u64,
    pub totals: Totals,
    pub quarantined_totals: Totals,
    pub superseded_by: Option<LoadId>,
    pub error: Option<String>,
    /// Tries of a failed load (the same input failing the same way counts here, not as a new row).
    pub attempts: u32,
}

#[derive(Debug, Clone, Default)]
pub struct LoadFilter {
    /// One load by id.
    pub id: Option<LoadId>,
    pub source: Option<String>,
    pub state: Option<LoadState>,
    pub limit: Option<u32>,
}

/// Which charges a query reads. Without `load`, only current loads are visible.
#[derive(Debug, Clone, Default)]
pub struct ChargeFilter {
    pub source: Option<String>,
    /// ChargePeriodStart >= from
    pub from: Option<DateTime<Utc>>,
    /// ChargePeriodStart < to
    pub to: Option<DateTime<Utc>>,
    /// One specific load, whatever its state.
    pub load: Option<LoadId>,
    /// Billing period (of BillingPeriodStart).
    pub period: Option<costledger_core::BillingPeriod>,
    /// Also read sources whose role is `check` (only the cross-source check does). Naming a
    /// `source` or a `load` reads it whatever its role.
    pub include_check_sources: bool,
    /// Rows in whatever order the database reads them (aggregations), not the export order.
    pub unordered: bool,
    /// Which columns are read (the others come back as `None`, and the row decodes faster).
    pub columns: ChargeColumns,
}

/// The columns a charge read returns; the others come back as `None`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum ChargeColumns {
    /// Every column (exports).
    #[default]
    All,
    /// Without the descriptive columns no aggregation reads ([`LEAN_SKIPPED`]: names,
    /// description, invoice and commitment ids, `x_extra`, the source reference) and without
    /// every column of `ChargeLine::focus`.
    Lean,
    /// What the allocator reads ([`ALLOCATION_COLUMNS`]): the dimensions its rules and reasons
    /// look at, the tags, the charge period and BilledCost.
    Allocation,
    /// Every column of a line's core and its lineage, without the FOCUS columns of
    /// `ChargeLine::focus` and `x_extra` (the finance CSV writes neither: reading them cost
    /// PostgreSQL a larger sort and costledger a decode of 26 more columns per row).
    Core,
}

impl ChargeColumns {
    /// Whether the read returns the FOCUS columns of `ChargeLine::focus` (the others select
    /// them as NULL, and the row decoders skip them: 25 columns fewer per row).
    pub fn reads_focus(self) -> bool {
        matches!(self, ChargeColumns::All)
    }
}

/// The columns a [`ChargeColumns::Allocation`] read returns (besides `load_id` and `row_no`).
pub const ALLOCATION_COLUMNS: [&str; 15] = [
    "billing_account_id",
    "sub_account_id",
    "billing_period_start",
    "billing_period_end",
    "charge_period_start",
    "charge_period_end",
    "charge_category",
    "service_name",
    "provider_name",
    "publisher_name",
    "region_id",
    "resource_id",
    "billed_cost",
    "billing_currency",
    "tags",
];

/// The columns a lean read returns as NULL.
pub const LEAN_SKIPPED: [&str; 10] = [
    "billing_account_name",
    "sub_account_name",
    "charge_description",
    "publisher_name",
    "invoice_issuer_name",
    "resource_name",
    "commitment_discount_id",
    "invoice_id",
    "x_extra",
    "x_source_ref",
];

/// The select list of a charge read (`null` is the backend's typed NULL).
pub(crate) fn charge_select(columns: ChargeColumns, null: &str) -> String {
    select_list(columns, null, true, true)
}

/// [`charge_select`] with `null` in place of every context column ([`contexts::CONTEXT_COLUMNS`]):
/// for a read that fills them from the context its row names (`ctx_id`).
pub(crate) fn charge_select_without_contexts(columns: ChargeColumns, null: &str) -> String {
    select_list(columns, null, false, true)
}

/// [`charge_select`] with `null` in place of every kind column ([`kinds::KIND_COLUMNS`]): for a
/// read that fills them from the kind its row names (`kind_id`).
pub(crate) fn charge_select_without_kinds(columns: ChargeColumns, null: &str) -> String {
    select_list(columns, null, true, false)
}

fn select_list(columns: ChargeColumns, null: &str, contexts: bool, kinds: bool) -> String {
    CHARGE_COLUMNS
        .iter()
        .enumerate()
        .map(|(i, c)| {
            if (!contexts && contexts::is_context_column(c)) || (!kinds && kinds::is_kind_column(c)) {
                return null.to_string();
            }
            let read = match columns {
                ChargeColumns::All => true,
                ChargeColumns::Lean => !LEAN_SKIPPED.contains(c) && i < FOCUS_AT,
                ChargeColumns::Allocation => ALLOCATION_COLUMNS.contains(c) || matches!(*c, "load_id" | "row_no"),
                ChargeColumns::Core => i < FOCUS_AT && *c != "x_extra",
            };
            if read { format!("c.{c}") } else { null.to_string() }
        })
        .collect::<Vec<_>>()
        .join(", ")
}

impl ChargeFilter {
    /// Whether the WHERE clause keeps only primary sources.
    pub(crate) fn primary_only(&self) -> bool {
        !self.include_check_sources && self.source.is_none() && self.load.is_none()
    }
}

/// Dimensions totals can be grouped by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dim {
    Source,
    Provider,
    BillingAccount,
    SubAccount,
    Service,
    ChargeCategory,
    BillingPeriod,
    InvoiceId,
    /// The load id (as text).
    Load,
    /// The UTC day of ChargePeriodStart (`YYYY-MM-DD`).
    ChargeDay,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TotalRow {
    pub keys: Vec<Option<String>>,
    pub currency: String,
    pub rows: u64,
    pub billed_cost: ExactSum,
    pub effective_cost: ExactSum,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuarantineRow {
    pub load_id: LoadId,
    pub location: String,
    pub reason: String,
    pub raw: String,
    pub raw_amount: Option<String>,
    pub currency: Option<String>,
}

/// A charge as read back: the line and its lineage.
#[derive(Debug, Clone, PartialEq)]
pub struct ChargeRecord {
    pub load_id: LoadId,
    /// Position of the line in its load.
    pub row_no: i64,
    pub source: String,
    pub line: ChargeLine,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeriodRow {
    pub source: String,
    pub period: String,
    pub state: PeriodState,
    pub invoice_ids: Vec<String>,
    pub current_load: Option<LoadId>,
    pub totals: Totals,
}

/// A billing period's state for one source (`billing_periods.state`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PeriodState {
    /// The provider may still add or change charges.
    Open,
    /// The provider closed it (or every line is invoiced).
    Final,
    /// Final, then replaced by a delivery with different totals.
    Corrected,
}

impl PeriodState {
    pub fn as_str(self) -> &'static str {
        match self {
            PeriodState::Open => "open",
            PeriodState::Final => "final",
            PeriodState::Corrected => "corrected",
        }
    }

    pub fn parse(s: &str) -> Result<PeriodState> {
        Ok(match s {
            "open" => PeriodState::Open,
            "final" => PeriodState::Final,
            "corrected" => PeriodState::Corrected,
            other => return Err(LedgerError::Corrupt(format!("billing period state '{other}'"))),
        })
    }

    /// Final or corrected: the provider will not add charges.
    pub fn is_closed(self) -> bool {
        matches!(self, PeriodState::Final | PeriodState::Corrected)
    }
}

impl std::fmt::Display for PeriodState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.pad(self.as_str())
    }
}

/// The reconciler's checks, as stored in `findings.check_name`. Closed set. Ordered by name,
/// as the stored text sorts, so sorted findings (reports, golden files) keep their order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CheckKind {
    /// Allocated + shared + unallocated = billed, exactly.
    Conservation,
    /// The ledger against finance's invoice totals.
    Invoice,
    /// A primary source against a `check` source over the same bill.
    CrossSource,
    /// One bill counted twice (two primary sources over the same charges).
    Overlap,
    /// A final period replaced with different totals.
    Restatement,
    /// Charges without the required tags.
    TagCoverage,
    /// A week far from the weeks before it.
    Anomaly,
    /// A budget's actual or forecast cost reached one of its thresholds.
    Budget,
    /// A commitment used less than `checks.commitment_utilization_min` of its cost.
    CommitmentUtilization,
}

impl CheckKind {
    pub const ALL: [CheckKind; 9] = [
        CheckKind::Conservation,
        CheckKind::Invoice,
        CheckKind::CrossSource,
        CheckKind::Overlap,
        CheckKind::Restatement,
        CheckKind::TagCoverage,
        CheckKind::Anomaly,
        CheckKind::Budget,
        CheckKind::CommitmentUtilization,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            CheckKind::Conservation => "conservation",
            CheckKind::Invoice => "invoice",
            CheckKind::CrossSource => "cross_source",
            CheckKind::Overlap => "overlap",
            CheckKind::Restatement => "restatement",
            CheckKind::TagCoverage => "tag_coverage",
            CheckKind::Anomaly => "anomaly",
            CheckKind::Budget => "budget",
            CheckKind::CommitmentUtilization => "commitment_utilization",
        }
    }

    pub fn parse(s: &str) -> Result<CheckKind> {
        CheckKind::ALL
            .into_iter()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| LedgerError::Corrupt(format!("findings.check_name '{s}' is not a check")))
    }
}

impl Ord for CheckKind {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.as_str().cmp(other.as_str())
    }
}

impl PartialOrd for CheckKind {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl std::fmt::Display for CheckKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.pad(self.as_str())
    }
}

/// How a run ended (`runs.status`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum RunStatus {
    /// Started, not finished (or its process died: see `Abandoned`).
    #[default]
    Running,
    Ok,
    Failed,
    Cancelled,
    /// The tick found its job still running (here or on another replica).
    Skipped,
    /// Left `running` by a process that is gone; closed at the next start.
    Abandoned,
}

impl RunStatus {
    pub const ALL: [RunStatus; 6] = [
        RunStatus::Running,
        RunStatus::Ok,
        RunStatus::Failed,
        RunStatus::Cancelled,
        RunStatus::Skipped,
        RunStatus::Abandoned,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            RunStatus::Running => "running",
            RunStatus::Ok => "ok",
            RunStatus::Failed => "failed",
            RunStatus::Cancelled => "cancelled",
            RunStatus::Skipped => "skipped",
            RunStatus::Abandoned => "abandoned",
        }
    }

    pub fn parse(s: &str) -> Option<RunStatus> {
        RunStatus::ALL.into_iter().find(|r| r.as_str() == s)
    }
}

/// A stored `runs.status`, read back.
pub(crate) fn run_status(s: String) -> Result<RunStatus, LedgerError> {
    RunStatus::parse(&s).ok_or_else(|| LedgerError::Corrupt(format!("runs.status '{s}' is not a run status")))
}

impl std::fmt::Display for RunStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.pad(self.as_str())
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RunOutcome {
    pub status: RunStatus,
    pub attempts: u32,
    pub error: Option<String>,
    pub rows: u64,
    pub loads_created: u64,
    pub loads_skipped: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunRow {
    pub id: i64,
    pub job: String,
    pub source: Option<String>,
    pub started_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
    pub outcome: RunOutcome,
}

/// The reconciler's allocation of current charges, aggregated (see migrations 0002).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct AllocationRow {
    pub period: String,
    /// Monday of the ISO week (`YYYY-MM-DD`) of ChargePeriodStart in the configured time zone.
    pub week: String,
    pub provider_name: Option<String>,
    pub billing_account_id: String,
    pub sub_account_id: Option<String>,
    pub service_name: Option<String>,
    pub charge_category: String,
    pub currency: String,
    /// The owner; `None` when unallocated.
    pub owner: Option<String>,
    /// How the owner was decided (`tag:team`, `rule:NAME`, `shared:…`) or `unallocated`.
    pub basis: String,
    /// The unallocated reason code.
    pub reason: Option<String>,
    /// Kept for unallocated rows only.
    pub resource_id: Option<String>,
    /// `tagged` / `untagged` for Usage charges (tag coverage), `None` otherwise.
    pub coverage: Option<String>,
    pub rows: u64,
    pub amount: ExactSum,
}

/// When an account first appears in the ledger.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct FirstSeen {
    pub provider: Option<String>,
    pub billing_account_id: String,
    /// The sub account, or the billing account when the line has none.
    pub account: String,
    pub at: DateTime<Utc>,
}

/// The inputs a period's allocation was computed from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReconcileState {
    pub period: String,
    pub fingerprint: String,
    /// Earliest ChargePeriodStart seen in the period (`YYYY-MM-DDTHH:MM:SSZ`).
    pub data_start: Option<String>,
    /// Latest ChargePeriodEnd seen in the period (`YYYY-MM-DDTHH:MM:SSZ`).
    pub data_end: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Finding {
    pub check: CheckKind,
    pub period: String,
    pub billing_account_id: Option<String>,
    pub currency: Option<String>,
    pub amount: Option<ExactSum>,
    /// What the finding is about (an invoice id, a source pair, an owner, a week…).
    pub subject: Option<String>,
    pub message: String,
    /// Canonical JSON.
    pub evidence: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvoiceRow {
    /// Empty when finance gives one total per billing account and period.
    pub invoice_id: String,
    pub billing_account_id: String,
    pub period: String,
    pub currency: String,
    pub amount: rust_decimal::Decimal,
    pub provenance: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FxRate {
    pub month: String,
    pub from: String,
    pub to: String,
    pub rate: rust_decimal::Decimal,
    pub provenance: String,
}

/// One day's value of a business metric (requests, active users …) for unit costs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BusinessMetric {
    pub name: String,
    /// `YYYY-MM-DD`.
    pub day: String,
    /// `None` when the value is not per owner.
    pub owner: Option<String>,
    /// Further dimensions by query dimension name (`service`, `tag:env` …).
    pub dimensions: std::collections::BTreeMap<String, String>,
    pub value: rust_decimal::Decimal,
    /// `file:line`.
    pub provenance: String,
}

/// One load's contribution to one billing period, with the load's state (restatement history).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeriodLoad {
    pub source: String,
    pub period: String,
    pub period_state: String,
    pub load_id: LoadId,
    pub state: LoadState,
    pub delivery_key: String,
    pub superseded_by: Option<LoadId>,
    pub rows: u64,
    pub totals: Totals,
    /// Every line the load had in this period carried an invoice id (the load made it final).
    pub all_invoiced: bool,
    /// Whether the load's lines are still in the ledger (retention deletes superseded lines).
    pub lines_kept: bool,
}

/// The reconciler's tables (migration 0002): the same SQL on both backends
/// (`reconcile_sql.rs`). A supertrait of [`LedgerStore`].
#[async_trait]
pub trait ReconcileStore: Send + Sync {
    /// Ids of the current loads of primary sources, ascending (what the allocation reads: a
    /// load becoming current, or a source changing role, changes the fingerprint).
    async fn current_load_ids(&self) -> Result<Vec<LoadId>>;
    /// Every (load, period) contribution of current and superseded loads, by source, period, load.
    async fn period_history(&self) -> Result<Vec<PeriodLoad>>;

    /// Replace one period's allocation in one transaction.
    async fn replace_allocations(&self, state: &ReconcileState, rows: &[AllocationRow]) -> Result<()>;
    /// Allocation rows whose week is in `[from_week, to_week]` (all when `None`), sorted.
    async fn allocations(&self, weeks: Option<(&str, &str)>) -> Result<Vec<AllocationRow>>;
    async fn reconcile_states(&self) -> Result<Vec<ReconcileState>>;
    /// Replace the findings of these periods in one transaction.
    async fn replace_findings(&self, periods: &[String], findings: &[Finding]) -> Result<()>;
    /// Findings, sorted (all periods when `None`).
    async fn findings(&self, period: Option<&str>) -> Result<Vec<Finding>>;
    /// Insert or replace invoice totals; returns rows written.
    async fn upsert_invoices(&self, rows: &[InvoiceRow]) -> Result<u64>;
    async fn invoices(&self) -> Result<Vec<InvoiceRow>>;
    async fn upsert_fx_rates(&self, rows: &[FxRate]) -> Result<u64>;
    async fn fx_rates(&self) -> Result<Vec<FxRate>>;
    /// Insert or replace business metric values, all in one transaction; returns rows written.
    async fn upsert_business_metrics(&self, rows: &[BusinessMetric]) -> Result<u64>;
    /// The values of metric `name` (all days), sorted by day, owner, dimensions.
    async fn business_metrics(&self, name: &str) -> Result<Vec<BusinessMetric>>;
    /// The names of the stored business metrics, sorted.
    async fn business_metric_names(&self) -> Result<Vec<String>>;
    /// Remember what a weekly report said about its week.
    async fn record_reported_week(&self, week: &str, totals: &Totals) -> Result<()>;
    async fn reported_weeks(&self) -> Result<Vec<(String, Totals)>>;
}

/// A job lock held by this process. Released by [`JobLock::release`], or when dropped (the
/// session holding it ends), so it cannot outlive a panicked or cancelled run.
#[async_trait]
pub trait JobLock: Send {
    async fn release(self: Box<Self>) -> Result<()>;
}

/// The lock of a backend where one process owns the ledger (SQLite: the daemon holds a file
/// lock for its whole life).
pub struct ProcessLock;

#[async_trait]
impl JobLock for ProcessLock {
    async fn release(self: Box<Self>) -> Result<()> {
        Ok(())
    }
}

#[async_trait]
pub trait LedgerStore: ReconcileStore {
    fn backend(&self) -> Backend;
    /// Apply the embedded migrations (idempotent).
    async fn migrate(&self) -> Result<()>;
    /// Versions applied, ascending.
    async fn applied_migrations(&self) -> Result<Vec<i64>>;

    async fn ensure_source(&self, name: &str, kind: &str) -> Result<i64>;
    async fn current_load(&self, source_id: i64, scope: &str) -> Result<Option<LoadRow>>;
    /// Set a source's role (the source must exist).
    async fn set_source_role(&self, source_id: i64, role: SourceRole) -> Result<()>;
    /// Every source's name and role, by name.
    async fn source_roles(&self) -> Result<Vec<(String, SourceRole)>>;
    /// A current load of the source with this delivery key, whatever its scope (the lowest id).
    async fn current_load_with_key(&self, source_id: i64, key: &str) -> Result<Option<LoadRow>>;
    async fn begin_load(&self, load: &NewLoad) -> Result<LoadId>;
    /// Append lines to a staging load (one transaction per call; also refreshes its heartbeat).
    /// `first_row` is the load-wide position of the first line (the loader numbers lines
    /// 0, 1, 2, … across batches). The batch is taken by value so a backend may hand it to a
    /// blocking writer thread; as soon as the backend no longer needs the lines it gives them
    /// to `spent` (when there is one), to be freed on the thread that allocated them.
    async fn stage_lines(
        &self,
        load: LoadId,
        first_row: u64,
        lines: Vec<ChargeLine>,
        spent: Option<SpentLines>,
    ) -> Result<()>;
    async fn stage_quarantine(&self, load: LoadId, rows: &[RowError]) -> Result<()>;
    /// Every line of staging load `load` is staged (its last rollup rows may still be being
    /// written): a backend ends what still streams the lines (PostgreSQL: its COPY lanes, whose
    /// rows commit here — an error means the load must fail), then may do now, beside the last
    /// rollup rows, upkeep its commit would otherwise wait for (PostgreSQL: the planner
    /// statistics of the charges; best effort, never an error).
    async fn lines_staged(&self, _load: LoadId) -> Result<()> {
        Ok(())
    }
    /// One short transaction: the staging load becomes current for its scope, the previous
    /// current one superseded, the billing periods updated.
    async fn commit_load(&self, load: LoadId, summary: &LoadSummary) -> Result<CommitOutcome>;
    /// A staging load becomes failed and its staged rows are deleted. No-op (false) if the
    /// load is no longer staging.
    async fn fail_load(&self, load: LoadId, error: &str) -> Result<bool>;
    /// A staging load that turned out to be unneeded (its delivery is already current) is
    /// removed with its staged rows, leaving no trace in `loads`. No-op if it is no longer
    /// staging.
    async fn discard_load(&self, load: LoadId) -> Result<()>;
    /// The newest finished load of a scope (current, superseded or failed).
    async fn last_load(&self, source_id: i64, scope: &str) -> Result<Option<LoadRow>>;
    /// Fail a staging load as [`LedgerStore::fail_load`], keyed by `fingerprint` (what it read).
    /// When the scope's previous load failed with the same error on the same fingerprint, the
    /// new row is removed and the previous one counts one more attempt: returns its id.
    async fn record_failure(&self, load: LoadId, error: &str, fingerprint: &str) -> Result<Option<LoadId>>;
    /// Delete the rows of superseded loads superseded before `before`; returns loads removed.
    async fn gc_superseded(&self, before: DateTime<Utc>) -> Result<u64>;

    async fn loads(&self, filter: &LoadFilter) -> Result<Vec<LoadRow>>;
    async fn totals(&self, filter: &ChargeFilter, by: &[Dim]) -> Result<Vec<TotalRow>>;
    async fn count_charges(&self, filter: &ChargeFilter) -> Result<u64>;
    /// The charge columns (ledger names, [`nullable_columns`]) holding a value on at least one
    /// of the filtered charges: what a dataset of them can leave out.
    async fn columns_with_values(&self, filter: &ChargeFilter) -> Result<BTreeSet<&'static str>>;
    /// The most decimal places any decimal column ([`DECIMAL_COLUMNS`]) of the filtered charges
    /// has (0 when there are none): what a fixed-scale output must hold to stay exact.
    async fn max_decimal_scale(&self, filter: &ChargeFilter) -> Result<u32>;
    async fn quarantine_rows(&self, load: LoadId) -> Result<Vec<QuarantineRow>>;
    async fn billing_periods(&self) -> Result<Vec<PeriodRow>>;
    /// Current charges (or one load's), in the deterministic export order.
    fn charges<'a>(&'a self, filter: &'a ChargeFilter) -> BoxStream<'a, Result<ChargeRecord>>;
    /// The charges `filter` selects, grouped by `by` (and the currency) and summed exactly in
    /// SQL, in no particular order: what a query that needs neither the allocation nor the
    /// FOCUS columns reads instead of every charge.
    fn grouped<'a>(
        &'a self,
        filter: &'a ChargeFilter,
        by: &'a [GroupColumn],
        sums: Summed,
    ) -> BoxStream<'a, Result<GroupedRow>>;
    /// The rollup rows of `kind` of current primary loads whose day is in `[from, to)`
    /// (`YYYY-MM-DD`), grouped by `by` (and the currency) and summed exactly in SQL.
    fn grouped_rollups<'a>(
        &'a self,
        kind: RollupKind,
        from: Option<String>,
        to: Option<String>,
        by: &'a [GroupColumn],
        sums: Summed,
    ) -> BoxStream<'a, Result<GroupedRow>>;

    /// Per provider, billing account and account (sub account, else the billing account): the
    /// earliest ChargePeriodStart among current charges.
    async fn account_first_seen(&self) -> Result<Vec<FirstSeen>> {
        let periods = self.current_load_periods().await?;
        let mut fold = day_totals::FirstSeenFold::default();
        for p in periods {
            match self.load_day_totals(Some(&p)).await? {
                Some(loads) => fold.add(&loads),
                None => return self.account_first_seen_scan().await,
            }
        }
        Ok(fold.finish())
    }

    /// [`LedgerStore::account_first_seen`] from a grouped scan of the charges (a ledger with
    /// loads committed before migration 0012).
    async fn account_first_seen_scan(&self) -> Result<Vec<FirstSeen>>;

    /// The billing periods (`YYYY-MM`) current loads contributed lines to, ascending.
    async fn current_load_periods(&self) -> Result<Vec<String>>;

    /// The day totals of every current load (`check` sources included) in billing period
    /// `period` (`YYYY-MM`; every period when `None`), by source, period and load. `None` when
    /// one of those loads has none (committed before migration 0012): read the charges then.
    async fn load_day_totals(&self, period: Option<&str>) -> Result<Option<Vec<LoadDayTotals>>>;

    /// Per source and billing period: the latest ChargePeriodEnd among current charges
    /// ("data as of"), sorted by source and period.
    async fn source_data_end(&self) -> Result<Vec<(String, String, DateTime<Utc>)>>;

    async fn start_run(&self, job: &str, source: Option<&str>) -> Result<i64>;
    /// Claim the scheduled `tick` of a job: its run row, unique per (job, source, tick). `None`
    /// when another process claimed it first (it runs there, not here).
    async fn claim_run(&self, job: &str, source: Option<&str>, tick: DateTime<Utc>) -> Result<Option<i64>>;
    /// Take the cross-process lock of a job (PostgreSQL: a session advisory lock on a
    /// connection of its own). `None`: another process holds it.
    async fn try_job_lock(&self, key: &str) -> Result<Option<Box<dyn JobLock>>>;
    /// The database answers and every migration this binary knows is applied.
    async fn ready(&self) -> Result<bool> {
        Ok(self.applied_migrations().await?.last().copied() == Some(migrations::latest()))
    }
    async fn finish_run(&self, run: i64, outcome: &RunOutcome) -> Result<()>;
    /// Runs still `running`: (id, owner, started_at).
    async fn running_runs(&self) -> Result<Vec<(i64, Option<String>, DateTime<Utc>)>>;
    /// Close a run that is still `running` as `abandoned` with the reason; false if it is not
    /// running any more.
    async fn abandon_run(&self, run: i64, reason: &str) -> Result<bool>;
    async fn runs(&self, limit: u32) -> Result<Vec<RunRow>>;
    /// The rollup rows of `kind` of current primary loads whose day is in `[from, to)`
    /// (`YYYY-MM-DD`).
    fn rollups<'a>(
        &'a self,
        kind: RollupKind,
        from: Option<String>,
        to: Option<String>,
    ) -> BoxStream<'a, Result<RollupRecord>>;
    /// Current loads whose rollup of `kind` was not built with `spec` (none, or another one).
    async fn loads_without_rollup(&self, kind: RollupKind, spec: &str) -> Result<Vec<LoadId>>;
    /// Add a chunk of rows to a load's rollup (staging, or a rebuild after [`clear_rollup`]);
    /// rollup rows are additive, so one key may be in several chunks. Not visible to queries
    /// until the load is current with its spec recorded.
    ///
    /// [`clear_rollup`]: LedgerStore::clear_rollup
    async fn append_rollup(&self, load: LoadId, rows: &[RollupRow]) -> Result<()>;
    /// Delete a load's rollup rows of `kind` and their recorded spec (before a rebuild).
    async fn clear_rollup(&self, load: LoadId, kind: RollupKind) -> Result<()>;
    /// Add the last rows of a current load's rollup and record its spec (upgrades, a changed
    /// spec); false if the load is not current.
    async fn complete_rollup(&self, load: LoadId, rollup: &Rollup) -> Result<bool>;
}

/// `host:pid:nonce`: identifies this process as the owner of a staging load or a run.
pub fn process_owner() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "localhost".to_string());
    let nonce = Utc::now().timestamp_nanos_opt().unwrap_or_default() % 1_000_000_007;
    format!("{host}:{}:{nonce}", std::process::id())
}

/// Whether the process named by an owner string is known to be gone: same host, other pid,
/// no `/proc/PID`. On another host nothing is known (false).
pub fn owner_is_dead(owner: &str) -> bool {
    let mut parts = owner.split(':');
    let (Some(host), Some(pid)) = (parts.next(), parts.next()) else { return false };
    let this_host =
        std::fs::read_to_string("/proc/sys/kernel/hostname").map(|h| h.trim().to_string()).unwrap_or_default();
    if host != this_host || pid == std::process::id().to_string() {
        return false;
    }
    !std::path::Path::new(&format!("/proc/{pid}")).exists()
}

/// Bring the schema to this binary's version, touching it only when it is behind: a role with
/// data privileges only (no DDL) can use an up-to-date ledger; `costledger migrate` is the
/// explicit step for whoever may change the schema.
pub async fn ensure_schema(store: &dyn LedgerStore) -> Result<()> {
    let need = migrations::latest();
    let applied = store.applied_migrations().await?;
    let have = applied.last().copied().unwrap_or(0);
    if have > need {
        return Err(LedgerError::Config(format!(
            "the ledger's schema is at version {have}, newer than this costledger knows ({need}): upgrade costledger"
        )));
    }
    if have == need && applied.len() == usize::try_from(need).unwrap_or(usize::MAX) {
        return Ok(());
    }
    store.migrate().await.map_err(|e| {
        LedgerError::Config(format!(
            "the ledger's schema is at version {have} and this costledger needs {need}, but migrating failed ({e}); \
             run `costledger migrate` once as a database role that may create and alter tables"
        ))
    })
}

/// Open a ledger from a URL: `sqlite://path` (created if missing), `sqlite::memory:`, or
/// `postgres://…` / `postgresql://…`.
pub async fn open(url: impl Into<DatabaseUrl>) -> Result<Box<dyn LedgerStore>> {
    let url = url.into();
    if url.is_sqlite() {
        Ok(Box::new(sqlite::SqliteLedger::connect(url.expose()).await?))
    } else if url.is_postgres() {
        Ok(Box::new(postgres::PgLedger::connect(&url).await?))
    } else {
        Err(LedgerError::Url(url.expose().split(':').next().unwrap_or_default().to_string()))
    }
}

/// The period state after a commit: a final period whose totals change becomes `corrected`;
/// an open period becomes `final` when the provider says so or every line is invoiced.
pub(crate) fn next_period_state(
    prev: Option<(PeriodState, &Totals)>,
    new_totals: &Totals,
    now_final: bool,
) -> PeriodState {
    use PeriodState::*;
    match prev {
        Some((Final | Corrected, old)) if old != new_totals => Corrected,
        Some((Corrected, _)) => Corrected,
        Some((Final, _)) => Final,
        _ if now_final => Final,
        _ => Open,
    }
}

/// Canonical JSON of a string set (sorted).
pub(crate) fn set_json(s: &BTreeSet<String>) -> Option<String> {
    if s.is_empty() { None } else { serde_json::to_string(s).ok() }
}

pub(crate) struct Merged {
    pub totals: Totals,
    pub invoice_ids: BTreeSet<String>,
    pub all_invoiced: bool,
}

/// Merge the per-load contributions of one period (shared by both backends).
pub(crate) fn merge_parts(parts: &[(String, Option<String>, bool)]) -> Result<Merged> {
    let mut totals = Totals::default();
    let mut invoice_ids = BTreeSet::new();
    for (t, inv, _) in parts {
        totals.merge(&parse_totals(Some(t.clone()))?).map_err(|e| LedgerError::Corrupt(e.to_string()))?;
        invoice_ids.extend(parse_ids(inv.clone())?);
    }
    let all_invoiced = !parts.is_empty() && parts.iter().all(|p| p.2);
    Ok(Merged { totals, invoice_ids, all_invoiced })
}

/// Invoice ids stored as a JSON array of strings.
pub(crate) fn parse_ids(s: Option<String>) -> Result<Vec<String>> {
    match s {
        None => Ok(Vec::new()),
        Some(s) => serde_json::from_str(&s).map_err(|e| LedgerError::Corrupt(format!("invoice ids {s}: {e}"))),
    }
}

pub(crate) fn parse_totals(s: Option<String>) -> Result<Totals> {
    match s {
        None => Ok(Totals::default()),
        Some(s) => Totals::from_json(&s).map_err(|e| LedgerError::Corrupt(format!("totals {s}: {e}"))),
    }
}

/// Column access shared by the sqlx rows and the C-API reader (`sqlite_read`), so a
/// charge is decoded by one function whichever way it was read.
pub(crate) trait ChargeRow {
    /// Column `i` as text (`None` for NULL); valid until the row moves on.
    fn text(&self, i: usize) -> Result<Option<&str>>;
    fn int(&self, i: usize) -> Result<i64>;
}

/// A `totals` row — the group keys, the currency, the line count and the two sums as text —
/// decoded alike from either backend's row (their SQL differs, the row does not).
pub(crate) fn total_row<R>(r: &R, n: usize) -> Result<TotalRow>
where
    R: sqlx::Row,
    usize: sqlx::ColumnIndex<R>,
    for<'a> String: sqlx::Decode<'a, R::Database> + sqlx::Type<R::Database>,
    for<'a> i64: sqlx::Decode<'a, R::Database> + sqlx::Type<R::Database>,
{
    let mut keys = Vec::with_capacity(n);
    for i in 0..n {
        keys.push(r.try_get::<Option<String>, _>(i)?);
    }
    Ok(TotalRow {
        keys,
        currency: r.try_get(n)?,
        rows: to_u64(r.try_get(n + 1)?),
        billed_cost: parse_sum(r.try_get(n + 2)?)?,
        effective_cost: parse_sum(r.try_get(n + 3)?)?,
    })
}

/// The columns with a value, from the one row of [`count_values_select`] (either backend).
pub(crate) fn counted_columns_of<R>(row: &R) -> Result<BTreeSet<&'static str>>
where
    R: sqlx::Row,
    usize: sqlx::ColumnIndex<R>,
    for<'a> i64: sqlx::Decode<'a, R::Database> + sqlx::Type<R::Database>,
{
    let counts = (0..nullable_columns().count()).map(|i| row.try_get::<i64, _>(i)).collect::<Result<Vec<_>, _>>()?;
    Ok(columns_counted(&counts))
}

/// The largest decimal scale, from the one row of per-column maxima of [`DECIMAL_COLUMNS`]
/// (either backend; the SQL that computes a scale is the dialect's).
pub(crate) fn max_scale_of<R>(row: &R) -> Result<u32>
where
    R: sqlx::Row,
    usize: sqlx::ColumnIndex<R>,
    for<'a> i64: sqlx::Decode<'a, R::Database> + sqlx::Type<R::Database>,
{
    let scales = (0..DECIMAL_COLUMNS.len()).map(|i| row.try_get::<Option<i64>, _>(i)).collect::<Result<Vec<_>, _>>()?;
    Ok(max_of(&scales))
}

pub(crate) fn parse_sum(s: Option<String>) -> Result<ExactSum> {
    match s {
        None => Ok(ExactSum::ZERO),
        Some(s) => s.parse().map_err(|e| LedgerError::Corrupt(format!("sum {s}: {e}"))),
    }
}

pub(crate) fn to_u64(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

pub(crate) fn to_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// The export order, shared by both backends (NULLs first, byte-wise text comparison). Both
/// sort by the same key through their contexts' ranks (`CONTEXT_RANKS` in `sqlite.rs` and
/// `postgres.rs`: the four context columns before the charge's start, then the service): a
/// change here changes those too (a unit test checks they name these columns in this order,
/// the conformance suite checks the order read back).
#[cfg(test)]
pub(crate) const ORDER_COLUMNS: [&str; 8] = [
    "billing_period_start",
    "provider_name",
    "billing_account_id",
    "sub_account_id",
    "charge_period_start",
    "service_name",
    "load_id",
    "row_no",
];

/// The export's ORDER BY in both backends' ordered charge read: each context's ranks (`k`, a
/// backend's `CONTEXT_RANKS`) in place of its columns of `ORDER_COLUMNS`, the charge's own
/// columns as they are.
pub(crate) const RANKED_EXPORT_ORDER: &str = "k.r1, c.charge_period_start, k.r2, c.load_id, c.row_no";

/// The `charges` view's columns in the order every read uses (writers: [`row_columns`]): the line's core, its
/// load and position, then the FOCUS columns of [`costledger_core::FocusColumns`] (text, then
/// decimal, in that type's order; a test checks it).
pub(crate) const CHARGE_COLUMNS: [&str; 61] = [
    "billing_account_id",
    "billing_account_name",
    "sub_account_id",
    "sub_account_name",
    "billing_period_start",
    "billing_period_end",
    "charge_period_start",
    "charge_period_end",
    "charge_category",
    "charge_class",
    "charge_description",
    "service_name",
    "service_category",
    "provider_name",
    "publisher_name",
    "invoice_issuer_name",
    "region_id",
    "resource_id",
    "resource_name",
    "sku_id",
    "billed_cost",
    "effective_cost",
    "list_cost",
    "contracted_cost",
    "billing_currency",
    "pricing_quantity",
    "pricing_unit",
    "consumed_quantity",
    "consumed_unit",
    "commitment_discount_id",
    "invoice_id",
    "tags",
    "x_extra",
    "x_source_ref",
    "load_id",
    "row_no",
    "availability_zone",
    "billing_account_type",
    "capacity_reservation_id",
    "capacity_reservation_status",
    "charge_frequency",
    "commitment_discount_category",
    "commitment_discount_name",
    "commitment_discount_status",
    "commitment_discount_type",
    "commitment_discount_unit",
    "pricing_category",
    "pricing_currency",
    "region_name",
    "resource_type",
    "service_subcategory",
    "sku_meter",
    "sku_price_details",
    "sku_price_id",
    "sub_account_type",
    "commitment_discount_quantity",
    "contracted_unit_price",
    "list_unit_price",
    "pricing_currency_contracted_unit_price",
    "pricing_currency_effective_cost",
    "pricing_currency_list_unit_price",
];

/// The columns of `charge_rows` a writer fills, in order: [`CHARGE_COLUMNS`] without the
/// columns stored in `charge_contexts` (migration 0014) and `charge_kinds` (0016), then
/// `ctx_id` and `kind_id`.
pub(crate) fn row_columns() -> &'static [&'static str] {
    static COLS: std::sync::OnceLock<Vec<&'static str>> = std::sync::OnceLock::new();
    COLS.get_or_init(|| {
        CHARGE_COLUMNS
            .iter()
            .copied()
            .filter(|c| !contexts::is_context_column(c) && !kinds::is_kind_column(c))
            .chain(["ctx_id", "kind_id"])
            .collect()
    })
}

/// The line's core columns that may be NULL (every FOCUS column after them may be too).
const NULLABLE_CORE: [&str; 24] = [
    "billing_account_name",
    "sub_account_id",
    "sub_account_name",
    "charge_class",
    "charge_description",
    "service_name",
    "service_category",
    "provider_name",
    "publisher_name",
    "invoice_issuer_name",
    "region_id",
    "resource_id",
    "resource_name",
    "sku_id",
    "effective_cost",
    "list_cost",
    "contracted_cost",
    "pricing_quantity",
    "pricing_unit",
    "consumed_quantity",
    "consumed_unit",
    "commitment_discount_id",
    "invoice_id",
    "tags",
];

/// The columns of the `charges` view, in the order reads use (upgrade tests).
pub fn charge_columns() -> &'static [&'static str] {
    &CHARGE_COLUMNS
}

/// The charge columns that may be NULL: the line's optional values, then its FOCUS columns.
pub fn nullable_columns() -> impl Iterator<Item = &'static str> {
    NULLABLE_CORE.iter().chain(&CHARGE_COLUMNS[FOCUS_AT..]).copied()
}

/// Whether charge column `c` may be NULL.
pub fn is_nullable_column(c: &str) -> bool {
    nullable_columns().any(|n| n == c)
}

/// The charge columns holding decimals.
pub const DECIMAL_COLUMNS: [&str; 12] = [
    "billed_cost",
    "effective_cost",
    "list_cost",
    "contracted_cost",
    "pricing_quantity",
    "consumed_quantity",
    "commitment_discount_quantity",
    "contracted_unit_price",
    "list_unit_price",
    "pricing_currency_contracted_unit_price",
    "pricing_currency_effective_cost",
    "pricing_currency_list_unit_price",
];

/// The largest of per-column maximum scales (NULL when a column has no value).
pub(crate) fn max_of(scales: &[Option<i64>]) -> u32 {
    scales.iter().flatten().copied().max().map(|m| u32::try_from(m.max(0)).unwrap_or(0)).unwrap_or(0)
}

/// `SELECT` list counting the values of every [`nullable_columns`] column.
pub(crate) fn count_values_select() -> String {
    nullable_columns().map(|c| format!("COUNT(c.{c})")).collect::<Vec<_>>().join(", ")
}

/// The columns whose count is not zero.
pub(crate) fn columns_counted(counts: &[i64]) -> BTreeSet<&'static str> {
    nullable_columns().zip(counts).filter(|(_, n)| **n > 0).map(|(c, _)| c).collect()
}

/// A line's FOCUS columns from a charge read (`None` when every one is NULL).
pub(crate) fn focus_columns(
    texts: [Result<Option<String>>; costledger_core::FOCUS_TEXT_COUNT],
    decimals: [Result<Option<rust_decimal::Decimal>>; costledger_core::FOCUS_DECIMAL_COUNT],
) -> Result<Option<Box<costledger_core::FocusValues>>> {
    let mut t: [Option<String>; costledger_core::FOCUS_TEXT_COUNT] = Default::default();
    for (slot, v) in t.iter_mut().zip(texts) {
        *slot = v?;
    }
    let mut d = [None; costledger_core::FOCUS_DECIMAL_COUNT];
    for (slot, v) in d.iter_mut().zip(decimals) {
        *slot = v?;
    }
    Ok(costledger_core::FocusColumns::from_columns(t, d).boxed())
}

/// Where the FOCUS columns start in [`CHARGE_COLUMNS`].
pub(crate) const FOCUS_AT: usize = 36;
/// Where the result's source name is, after [`CHARGE_COLUMNS`], in a charge read.
pub(crate) const SOURCE_AT: usize = CHARGE_COLUMNS.len();

pub(crate) fn dim_column(d: Dim) -> &'static str {
    match d {
        Dim::Source => "s.name",
        Dim::Provider => "c.provider_name",
        Dim::BillingAccount => "c.billing_account_id",
        Dim::SubAccount => "c.sub_account_id",
        Dim::Service => "c.service_name",
        Dim::ChargeCategory => "c.charge_category",
        Dim::InvoiceId => "c.invoice_id",
        Dim::BillingPeriod | Dim::Load | Dim::ChargeDay => "",
    }
}

pub(crate) fn parse_tags(s: Option<&str>) -> Result<BTreeMap<String, String>> {
    match s {
        None => Ok(BTreeMap::new()),
        Some(s) => serde_json::from_str(s).map_err(|e| LedgerError::Corrupt(format!("tags {s}: {e}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Both backends' context ranks name the export order's context columns in its order
    /// ([`ORDER_COLUMNS`]).
    #[test]
    fn context_ranks_follow_the_export_order() {
        for (backend, ranks) in [("SQLite", sqlite::CONTEXT_RANKS), ("PostgreSQL", postgres::CONTEXT_RANKS)] {
            let at = |c: &str| ranks.find(c).unwrap_or_else(|| panic!("{backend}: {c} is not ranked"));
            let ranked: Vec<usize> =
                ORDER_COLUMNS.iter().filter(|c| contexts::is_context_column(c)).map(|c| at(c)).collect();
            assert_eq!(ranked.len(), 5, "{backend}");
            assert!(ranked.windows(2).all(|w| w[0] < w[1]), "{backend}: {ranked:?}");
        }
        // The ORDER BY: the four context columns before the charge's start are rank r1, the
        // service r2, the charge's own columns themselves.
        let mut order: Vec<String> = Vec::new();
        for c in ORDER_COLUMNS {
            let term = match c {
                "service_name" => "k.r2".to_string(),
                c if contexts::is_context_column(c) => "k.r1".to_string(),
                c => format!("c.{c}"),
            };
            if order.last() != Some(&term) {
                order.push(term);
            }
        }
        assert_eq!(RANKED_EXPORT_ORDER, order.join(", "));
    }

    /// Regression: findings sort by check name (golden reports depend on it); the enum once
    /// sorted by declaration order and reordered the findings table.
    #[test]
    fn check_kinds_sort_as_their_stored_names() {
        let mut kinds = CheckKind::ALL.to_vec();
        kinds.sort();
        let names: Vec<&str> = kinds.iter().map(|k| k.as_str()).collect();
        let mut sorted = names.clone();
        sorted.sort();
        assert_eq!(names, sorted);
        for k in CheckKind::ALL {
            assert_eq!(CheckKind::parse(k.as_str()).expect("parse"), k);
        }
        assert!(CheckKind::parse("typo").is_err());
    }

    #[test]
    fn the_focus_columns_follow_the_core_in_their_types_order() {
        let focus: Vec<&str> = costledger_core::FocusColumns::TEXT_SQL
            .iter()
            .chain(costledger_core::FocusColumns::DECIMAL_SQL)
            .copied()
            .collect();
        assert_eq!(&CHARGE_COLUMNS[FOCUS_AT..], focus.as_slice());
        assert_eq!(CHARGE_COLUMNS[FOCUS_AT - 2..FOCUS_AT], ["load_id", "row_no"]);
    }

    #[test]
    fn nullable_columns_are_charge_columns_and_cover_the_focus_columns() {
        for c in nullable_columns() {
            assert!(CHARGE_COLUMNS.contains(&c), "{c}");
        }
        assert_eq!(nullable_columns().count(), 49);
        assert!(is_nullable_column("availability_zone") && !is_nullable_column("billed_cost"));
        for c in DECIMAL_COLUMNS {
            assert!(CHARGE_COLUMNS.contains(&c), "{c}");
        }
        for c in costledger_core::FocusColumns::DECIMAL_SQL {
            assert!(DECIMAL_COLUMNS.contains(c), "{c}");
        }
    }

    #[test]
    fn period_states() {
        let a = Totals::from_json(r#"{"USD":"1"}"#).expect("t");
        let b = Totals::from_json(r#"{"USD":"2"}"#).expect("t");
        use PeriodState::*;
        assert_eq!(next_period_state(None, &a, false), Open);
        assert_eq!(next_period_state(None, &a, true), Final);
        assert_eq!(next_period_state(Some((Open, &a)), &b, false), Open);
        assert_eq!(next_period_state(Some((Final, &a)), &a, false), Final);
        assert_eq!(next_period_state(Some((Final, &a)), &b, true), Corrected);
        assert_eq!(next_period_state(Some((Corrected, &a)), &a, true), Corrected);
    }
}
