//! The command line's arguments: clap's derive types and their value parsers. Only this edge
//! knows them; `cli::run` turns them into calls of the application layer.

use std::path::PathBuf;

use chrono::{DateTime, Utc};
use clap::{Parser, Subcommand, ValueEnum};
use costledger_core::{BillingPeriod, parse_timestamp};

use crate::ledger::{LoadState, SourceRole};
use crate::registry::FileFormat;

#[derive(Debug, Parser)]
#[command(
    name = "costledger",
    version,
    about = "Multi-cloud cost ingestion and reconciliation with an exact-decimal ledger"
)]
pub struct Cli {
    /// Config file (YAML), e.g. /etc/costledger/costledger.yaml. Without one, defaults apply and
    /// every command still works.
    #[arg(long, global = true, env = "COSTLEDGER_CONFIG", help_heading = "Global options")]
    pub config: Option<PathBuf>,
    /// Ledger database URL, e.g. sqlite://costledger.db or
    /// postgres://USER@HOST/DB?connect_timeout=5; overrides the config. Printed redacted.
    #[arg(
        long,
        global = true,
        env = "COSTLEDGER_DATABASE_URL",
        hide_env_values = true,
        help_heading = "Global options"
    )]
    pub database: Option<String>,
    /// Log format on stderr (no colour unless stderr is a terminal; NO_COLOR turns it off).
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text, help_heading = "Global options")]
    pub log_format: LogFormat,
    /// More logging: -v info, -vv debug, -vvv debug including the SDKs and the SQL driver.
    /// RUST_LOG overrides.
    #[arg(short, long, global = true, action = clap::ArgAction::Count, help_heading = "Global options")]
    pub verbose: u8,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum QueryFormat {
    Table,
    Csv,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum MetricsWhat {
    /// Import daily values: CSV with date,metric,value[,owner][,DIMENSION…] (e.g. service,
    /// tag:env); all or nothing, every bad line reported. A value already stored for the same
    /// metric, date, owner and dimensions is replaced.
    Import { file: PathBuf },
    /// The stored metric names.
    List,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum CommitmentView {
    Utilisation,
    Coverage,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Bundled sample bills → SQLite ledger → summary → finance CSV. Needs no cloud and no config.
    Demo {
        /// Working directory for the demo's bills, ledger and exports.
        #[arg(long, default_value = "costledger-demo")]
        dir: PathBuf,
        /// Synthetic lines to generate (besides the bundled public FOCUS sample).
        #[arg(long, default_value_t = 20_000)]
        rows: u64,
        /// Seed of the synthetic bills (the same seed gives the same bills).
        #[arg(long, default_value_t = 42)]
        seed: u64,
    },
    /// The daemon: scheduled ingests, reconcile after each, the weekly report, retention; HTTP
    /// /healthz, /readyz, /metrics, the read API /api/v1 and the cost-explorer page at /.
    /// SIGTERM/SIGINT stop it, SIGHUP reloads the config.
    Run,
    /// The read API (/api/v1, OpenAPI at /api/v1/openapi.json) and the cost-explorer page on
    /// server.bind, without schedules: nothing is ingested or written. SIGTERM/SIGINT stop it.
    /// With api.tokens set, every API call needs `Authorization: Bearer TOKEN`.
    ///
    /// Example:
    ///   costledger --config costledger.yaml serve
    ///   curl -H "Authorization: Bearer $TOKEN" 'http://127.0.0.1:9464/api/v1/costs?group_by=service&grain=month'
    #[command(verbatim_doc_comment)]
    Serve,
    /// A Model Context Protocol server on stdin/stdout for LLM assistants: read-only tools
    /// (query_costs, list_dimensions, dimension_values, top_unallocated, list_findings,
    /// billing_periods, list_sources) and resources describing dimensions and metrics.
    ///
    /// Example (an assistant's MCP config):
    ///   {"mcpServers": {"costledger": {"command": "costledger",
    ///     "args": ["--config", "/etc/costledger/costledger.yaml", "mcp"]}}}
    #[command(verbatim_doc_comment)]
    Mcp,
    /// Import bill files by hand, e.g. `costledger import --format aws-cur ./cur/`. A directory
    /// is searched recursively; a file already current is skipped; a changed one restates it.
    Import {
        /// What the files are (see the list below).
        #[arg(long, value_enum)]
        format: FileFormat,
        /// Source name in the ledger (a file replaces the earlier version of the same file in it).
        #[arg(long)]
        source: Option<String>,
        /// `check`: load these files for the cross-source check only, never summed into
        /// totals, allocation, reports or exports (`primary`: the bill). Default: the
        /// source's current role (primary for a new source).
        #[arg(long, value_parser = parse_role)]
        role: Option<SourceRole>,
        /// Files or directories: CSV (.csv, .csv.gz), Parquet, or JSON lines (gcp-export).
        #[arg(required = true)]
        paths: Vec<PathBuf>,
    },
    /// One-shot pull of the configured sources (all, or one), e.g. `ingest --source aws-cur`.
    Ingest {
        /// Only this source (its `name` in the config).
        #[arg(long)]
        source: Option<String>,
    },
    /// Ask the ledger: sums of cost metrics by dimensions and time, exactly.
    ///
    /// Examples:
    ///   costledger query --group-by service --grain month
    ///   costledger query --metric EffectiveCost --group-by service,tag:team --grain month --from 2026-09 --to 2026-11 --where provider=AWS --top 10
    ///   costledger query --group-by tag:team --where 'tag:team=(none)' --format csv
    ///   costledger query --group-by sub_account --currency EUR --format json
    ///
    /// Dimensions: provider, billing_account, sub_account, service, service_category, region,
    /// charge_category, charge_class, sku, resource, pricing_unit, source, owner, allocation,
    /// tag:KEY (tag keys after the configured aliases, case-insensitive). Metrics: BilledCost (default),
    /// EffectiveCost, ListCost, ContractedCost, PricingQuantity, ConsumedQuantity, lines.
    /// Only primary sources are summed; amounts are exact (no rounding) in every format.
    #[command(verbatim_doc_comment)]
    Query {
        /// Metrics to sum, comma-separated or repeated; the first orders the rows and ranks --top.
        #[arg(long = "metric", value_name = "METRIC")]
        metrics: Vec<String>,
        /// Dimensions to group by, comma-separated or repeated (e.g. service,tag:team).
        #[arg(long, value_name = "DIMENSION")]
        group_by: Vec<String>,
        /// Time buckets: none (default), day, week (ISO), month, billing_period. Days, weeks and
        /// months are of ChargePeriodStart in the configured time zone.
        #[arg(long)]
        grain: Option<String>,
        /// A filter, repeatable (all must hold): DIM=V1,V2 (any of), DIM!=V (none of). Values
        /// are case-insensitive globs (* ? [a-z]); (none) matches a missing value.
        #[arg(long = "where", value_name = "FILTER")]
        filters: Vec<String>,
        /// First day, month or ISO week of the range, e.g. 2026-09, 2026-09-15, 2026-W37.
        #[arg(long)]
        from: Option<String>,
        /// Last day, month or ISO week of the range, inclusive (--to 2026-11 takes all November).
        #[arg(long)]
        to: Option<String>,
        /// Apply --from/--to to billing periods instead of the days the charges were incurred.
        #[arg(long)]
        by_billing_period: bool,
        /// Convert money to this currency with the imported FX rates (each billing period at
        /// its month's rate); a missing rate is an error naming the month and pair.
        #[arg(long)]
        currency: Option<String>,
        /// Keep the N largest groups; the rest are summed into one "(others)" row.
        #[arg(long)]
        top: Option<usize>,
        /// Divide the first metric by this business metric (`costledger metrics import`): a
        /// unit cost per group and time bucket, e.g. --per requests --per-unit 1000.
        #[arg(long, value_name = "BUSINESS_METRIC")]
        per: Option<String>,
        /// The unit cost is per this many of --per (default 1).
        #[arg(long, requires = "per", default_value = "1")]
        per_unit: rust_decimal::Decimal,
        /// Decimal places of the unit cost (rounded half-to-even; default 4).
        #[arg(long, requires = "per", default_value_t = 4)]
        places: u32,
        /// table (default on a terminal), csv (default otherwise) or json.
        #[arg(long, value_enum)]
        format: Option<QueryFormat>,
    },
    /// Business metrics (requests, active users …) that costs are divided by for unit costs.
    Metrics {
        #[command(subcommand)]
        what: MetricsWhat,
    },
    /// Why a cost changed between two periods: each group's change split into volume, rate,
    /// mix, new, gone, no quantity (credits, tax, fees) and FX, adding back exactly.
    ///
    /// Examples:
    ///   costledger explain --from 2026-10 --to 2026-11
    ///   costledger explain --from 2026-W44 --to 2026-W45 --by owner --metric EffectiveCost
    ///   costledger explain --from 2026-11-01..2026-11-07 --to 2026-11-08..2026-11-14 --by service,sku --top 10
    ///   costledger explain --from 2026-10 --to 2026-11 --by sub_account --currency EUR --format json
    ///
    /// volume = (Q_B − Q_A) × C_A / Q_A per unit class (service × pricing unit) priced in both
    /// periods; rate = the same SKUs' change beyond their own volume; mix = the rest (SKUs
    /// swapped or shifted); new/gone = unit classes priced in one period only. Divisions are
    /// rounded half-to-even to the amounts' places (at least 2); the parts add back exactly.
    #[command(verbatim_doc_comment)]
    Explain {
        /// The earlier period: a month (2026-10), an ISO week (2026-W44), a day or a day range
        /// (2026-10-01..2026-10-07).
        #[arg(long)]
        from: String,
        /// The later period, of the same kind (and length) as --from.
        #[arg(long)]
        to: String,
        /// Dimensions to explain by, comma-separated or repeated (default service); any
        /// dimension of `query`, e.g. owner, sub_account, region, tag:team.
        #[arg(long, value_name = "DIMENSION")]
        by: Vec<String>,
        /// BilledCost (default), EffectiveCost, ListCost or ContractedCost.
        #[arg(long)]
        metric: Option<String>,
        /// A filter, repeatable, as for `query` (DIM=V1,V2 or DIM!=V; globs; (none)).
        #[arg(long = "where", value_name = "FILTER")]
        filters: Vec<String>,
        /// Convert to this currency (each part at the rate of the month --from starts in; the
        /// actual month rates' difference is the FX part).
        #[arg(long)]
        currency: Option<String>,
        /// Keep the N largest changes; the rest are summed into one "(others)" row.
        #[arg(long)]
        top: Option<usize>,
        /// table (default on a terminal), csv (default otherwise) or json.
        #[arg(long, value_enum)]
        format: Option<QueryFormat>,
    },
    /// Commitment utilisation (used ÷ used + unused per reservation, savings plan or CUD) and
    /// coverage (usage covered by commitments ÷ all usage, per service or another dimension).
    ///
    /// Examples:
    ///   costledger commitments --from 2026-10 --to 2026-11 --grain month
    ///   costledger commitments --view coverage --by owner --basis ListCost
    ///
    /// From the FOCUS commitment columns (CommitmentDiscountId, Status, Category, Type).
    /// Utilisation below checks.commitment_utilization_min (default 80%) is flagged.
    #[command(verbatim_doc_comment)]
    Commitments {
        /// First day, month or ISO week of the range.
        #[arg(long)]
        from: Option<String>,
        /// Last day, month or ISO week of the range, inclusive.
        #[arg(long)]
        to: Option<String>,
        /// none (default), day, week, month or billing_period.
        #[arg(long)]
        grain: Option<String>,
        /// Coverage per these dimensions (default service), comma-separated or repeated.
        #[arg(long, value_name = "DIMENSION")]
        by: Vec<String>,
        /// Coverage basis: ContractedCost (default, an on-demand equivalent) or ListCost.
        #[arg(long)]
        basis: Option<String>,
        /// A filter, repeatable, as for `query`.
        #[arg(long = "where", value_name = "FILTER")]
        filters: Vec<String>,
        /// utilisation (default) or coverage, for table and CSV output (JSON has both).
        #[arg(long, value_enum, default_value_t = CommitmentView::Utilisation)]
        view: CommitmentView,
        /// table (default on a terminal), csv (default otherwise) or json.
        #[arg(long, value_enum)]
        format: Option<QueryFormat>,
    },
    /// Budgets (config `budgets:`) as of a day: actual cost of the month or quarter to date,
    /// the period-end forecast, and the thresholds reached.
    ///
    /// Examples:
    ///   costledger budgets
    ///   costledger budgets --as-of 2026-11-20 --format json
    ///
    /// The forecast adds, per remaining day, the mean of the last 4 same weekdays (with 4 weeks
    /// of history) or of the last 7 days; rates rounded half-to-even to 4 places.
    #[command(verbatim_doc_comment)]
    Budgets {
        /// The first day not counted as actual (default: the day after the last day with data,
        /// at most today).
        #[arg(long)]
        as_of: Option<chrono::NaiveDate>,
        /// table (default on a terminal), csv (default otherwise) or json.
        #[arg(long, value_enum)]
        format: Option<QueryFormat>,
    },
    /// Exports.
    Export {
        #[command(subcommand)]
        what: ExportWhat,
    },
    /// List loads (deliveries) in the ledger, newest last.
    Loads {
        /// Only this source.
        #[arg(long)]
        source: Option<String>,
        /// Only loads in this state: staging, current, superseded or failed.
        #[arg(long, value_parser = parse_state)]
        state: Option<LoadState>,
        /// The most recent N loads.
        #[arg(long, default_value_t = 50)]
        limit: u32,
    },
    /// Show the quarantined rows of a load with file:line, reason, amount and raw text.
    Quarantine {
        /// The load's id (`costledger loads` lists them).
        #[arg(long)]
        load: i64,
    },
    /// Billing periods per source and their state (open, final, corrected).
    Periods,
    /// Recent job runs (ingest, reconcile, report, retention) with status and error.
    Runs {
        /// The most recent N runs.
        #[arg(long, default_value_t = 20)]
        limit: u32,
    },
    /// Allocate every current charge to an owner or an unallocated reason, run the checks
    /// (conservation, invoice, cross-source, restatement, tag coverage, anomaly) and store the
    /// findings. Exit code 1 when there are findings, 2 on error.
    Reconcile {
        /// One billing period (YYYY-MM); default: every period in the ledger.
        #[arg(long, conflicts_with_all = ["from", "to"])]
        period: Option<BillingPeriod>,
        /// First billing period (YYYY-MM), inclusive.
        #[arg(long)]
        from: Option<BillingPeriod>,
        /// Last billing period (YYYY-MM), inclusive.
        #[arg(long)]
        to: Option<BillingPeriod>,
        /// Invoice totals from finance (CSV: invoice_id,billing_account_id,billing_period,currency,amount),
        /// stored in the ledger and checked from now on.
        #[arg(long)]
        invoices: Option<PathBuf>,
        /// Recompute the allocation even where its inputs did not change.
        #[arg(long)]
        force: bool,
    },
    /// Findings stored by the last reconcile.
    Findings {
        /// Only this billing period (YYYY-MM).
        #[arg(long)]
        period: Option<BillingPeriod>,
    },
    /// Exchange rates for converted report totals.
    Fx {
        #[command(subcommand)]
        what: FxWhat,
    },
    /// Reports.
    Report {
        #[command(subcommand)]
        what: ReportWhat,
    },
    /// Create or upgrade the ledger schema, then build the rollups (daily and pricing) loads lack.
    Migrate,
    /// Build the daily and pricing rollups of every current load that lacks one built with this
    /// config (a ledger from before rollups or before pricing rollups; a changed timezone,
    /// query.rollup_tags or tag alias).
    /// Until then, queries read the charges: slower, same answers.
    Rollup,
    /// Validate the config file and report every problem with its path.
    CheckConfig,
    /// Write realistic synthetic FOCUS bills (deterministic for a seed), e.g.
    /// `sample --rows 1000000 --out bills.csv.gz`.
    Sample {
        /// Lines to write.
        #[arg(long)]
        rows: u64,
        /// Output file; `.gz` compresses. A FIFO or /dev/stdout is written straight into.
        #[arg(long)]
        out: PathBuf,
        /// Seed (the same seed gives the same bills).
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Billing period of the bills (YYYY-MM).
        #[arg(long, default_value = "2026-10")]
        period: BillingPeriod,
    },
}

#[derive(Debug, Subcommand)]
pub enum FxWhat {
    /// Import rates from a CSV: month,from,to,rate[,source] (1 FROM = RATE TO in that month).
    Import {
        /// The CSV file, e.g. rates.csv with a line `2026-10,EUR,USD,1.0842,ECB`.
        file: PathBuf,
    },
    /// List the stored rates.
    List,
}

#[derive(Debug, Subcommand)]
pub enum ReportWhat {
    /// The weekly governance report (reconciles first where loads or rules changed).
    Weekly {
        /// ISO week, e.g. 2026-W47; default: the last complete week in the configured time zone.
        #[arg(long)]
        week: Option<String>,
        /// Output directory; default: report.out_dir from the config (`reports`).
        #[arg(long)]
        out: Option<PathBuf>,
        /// Comma-separated: md,html,csv; default: report.formats from the config (all three).
        #[arg(long, value_delimiter = ',')]
        format: Vec<String>,
        /// Also show totals converted to this currency (rates from `fx import`).
        #[arg(long)]
        currency: Option<String>,
        /// The cost "why it changed" explains and, when not BilledCost, the owners table shows:
        /// BilledCost or EffectiveCost (amortised), ListCost, ContractedCost; default
        /// report.metric from the config (BilledCost).
        #[arg(long)]
        metric: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
pub enum ExportWhat {
    /// Finance CSV of the current charges.
    Csv {
        /// Charges whose ChargePeriodStart is at or after this date/time (UTC).
        #[arg(long, value_parser = parse_when)]
        from: Option<DateTime<Utc>>,
        /// Charges whose ChargePeriodStart is before this date/time (UTC, exclusive).
        #[arg(long, value_parser = parse_when)]
        to: Option<DateTime<Utc>>,
        /// Only this source.
        #[arg(long)]
        source: Option<String>,
        /// Output file (default: stdout). A regular file is replaced atomically when complete;
        /// a FIFO or device is written straight into.
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// The current charges as a FOCUS Cost and Usage dataset (CSV or Parquet): every column of
    /// the specification in its order, nulls as empty cells, exact decimals.
    ///
    /// Example: costledger export focus --from 2026-10-01 --to 2026-11-01 --out focus-2026-10.csv
    Focus {
        /// The FOCUS version to write.
        #[arg(long, value_enum, default_value = "1.2")]
        version: crate::focus_export::FocusVersion,
        /// csv (default) or parquet (amounts DECIMAL(38, s), s the most decimal places of any
        /// exported amount; dates TIMESTAMP UTC; one row group per 50,000 charges).
        #[arg(long, value_enum, default_value = "csv")]
        format: crate::focus_export::FocusFormat,
        /// Charges whose ChargePeriodStart is at or after this date/time (UTC).
        #[arg(long, value_parser = parse_when)]
        from: Option<DateTime<Utc>>,
        /// Charges whose ChargePeriodStart is before this date/time (UTC, exclusive).
        #[arg(long, value_parser = parse_when)]
        to: Option<DateTime<Utc>>,
        /// Only this source.
        #[arg(long)]
        source: Option<String>,
        /// Append costledger's lineage columns (x_owner, x_allocation_reason, x_load_id,
        /// x_source, x_source_ref).
        #[arg(long)]
        lineage: bool,
        /// Output file (default: stdout). A regular file is replaced atomically when complete;
        /// a FIFO or device is written straight into.
        #[arg(long)]
        out: Option<PathBuf>,
    },
}

pub(super) fn parse_state(s: &str) -> Result<LoadState, String> {
    LoadState::parse(s).map_err(|_| "expected staging, current, superseded or failed".to_string())
}

pub(super) fn parse_role(s: &str) -> Result<SourceRole, String> {
    SourceRole::parse(s).ok_or_else(|| "expected primary (the bill) or check (a cross-check, never summed)".to_string())
}

pub(super) fn parse_when(s: &str) -> Result<DateTime<Utc>, String> {
    parse_timestamp(s).map_err(|e| e.to_string())
}
