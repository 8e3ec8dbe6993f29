//! The command line (the edge: `anyhow` lives here and in `main.rs`).

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context as _, bail};
use chrono::{DateTime, SubsecRound, Utc};
use clap::{Parser, Subcommand, ValueEnum};
use costledger_core::{BillingPeriod, Connector, Delivery, format_ts, parse_timestamp};
use costledger_focus::FocusConnector;
use indicatif::{ProgressBar, ProgressStyle};

use crate::app;
use crate::config::{Config, DEFAULT_DATABASE, ReportFormat};
use crate::export::export_csv;
use crate::finance_files::{read_fx, read_invoices};
use crate::ingest::{IngestError, LoadOutcome, LoadReport, set_source_role};
use crate::ledger::{self, ChargeFilter, DatabaseUrl, Dim, Finding, LedgerStore, LoadFilter, LoadState, SourceRole};
use crate::reconcile::ReconcileError;
use crate::registry::FileFormat;
use crate::report::{last_complete_week, parse_week};
use crate::sample::{SampleSpec, write_sample_file};

/// The public FOCUS 1.0 sample (FinOps Foundation, CC BY 4.0), bundled for `demo`.
const BUNDLED_FOCUS_SAMPLE: &[u8] = include_bytes!("../tests/fixtures/focus/focus_sample.csv");

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
    /// /healthz, /readyz, /metrics. SIGTERM/SIGINT stop it, SIGHUP reloads the config.
    Run,
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
    /// Create or upgrade the ledger schema.
    Migrate,
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
}

fn parse_state(s: &str) -> Result<LoadState, String> {
    LoadState::parse(s).map_err(|_| "expected staging, current, superseded or failed".to_string())
}

fn parse_role(s: &str) -> Result<SourceRole, String> {
    SourceRole::parse(s).ok_or_else(|| "expected primary (the bill) or check (a cross-check, never summed)".to_string())
}

fn parse_when(s: &str) -> Result<DateTime<Utc>, String> {
    parse_timestamp(s).map_err(|e| e.to_string())
}

struct Env {
    config: Config,
    database: DatabaseUrl,
}

fn load_env(cli: &Cli) -> anyhow::Result<Env> {
    let config = match &cli.config {
        Some(p) => Config::load(p)?,
        None => Config::default(),
    };
    let database = cli
        .database
        .clone()
        .map(DatabaseUrl::from)
        .or_else(|| config.database.clone())
        .unwrap_or_else(|| DEFAULT_DATABASE.into());
    Ok(Env { config, database })
}

async fn open_ledger(url: &DatabaseUrl) -> anyhow::Result<Box<dyn LedgerStore>> {
    let store = ledger::open(url.clone())
        .await
        .with_context(|| format!("cannot open the ledger at {url}; check --database / COSTLEDGER_DATABASE_URL"))?;
    ledger::ensure_schema(store.as_ref()).await.with_context(|| format!("ledger at {url}"))?;
    Ok(store)
}

pub async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match &cli.command {
        Command::CheckConfig => {
            let Some(path) = &cli.config else {
                bail!("no config file given: pass --config PATH or set COSTLEDGER_CONFIG")
            };
            let c = Config::load(path)?;
            println!(
                "{}: OK ({} source(s), database {})",
                path.display(),
                c.sources.len(),
                c.database.clone().unwrap_or_else(|| DEFAULT_DATABASE.into())
            );
            for s in &c.sources {
                println!(
                    "  {} ({}){}",
                    s.name,
                    s.params.kind(),
                    s.schedule.as_ref().map(|x| format!(" schedule \"{x}\"")).unwrap_or_default()
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Sample { rows, out, seed, period } => {
            let stats = write_sample_file(out, SampleSpec { rows: *rows, seed: *seed, period: *period })
                .with_context(|| format!("cannot write {}", out.display()))?;
            println!("wrote {} lines to {} (BilledCost: {})", stats.rows, out.display(), stats.totals.display());
            Ok(ExitCode::SUCCESS)
        }
        Command::Migrate => {
            let env = load_env(&cli)?;
            let store = open_ledger(&env.database).await?;
            let v = store.applied_migrations().await?;
            println!("ledger at {} is at schema version {}", env.database, v.last().copied().unwrap_or(0));
            Ok(ExitCode::SUCCESS)
        }
        Command::Import { format, source, role, paths } => {
            let env = load_env(&cli)?;
            let store = open_ledger(&env.database).await?;
            let source = source.clone().unwrap_or_else(|| format.default_source());
            let connector = crate::registry::ad_hoc(*format, paths.clone());
            if let Some(role) = role {
                set_source_role(store.as_ref(), &source, connector.kind(), *role).await?;
            }
            let ok = ingest_and_print(store.as_ref(), &env.config, &source, connector.as_ref(), "import").await?;
            Ok(if ok { ExitCode::SUCCESS } else { ExitCode::from(2) })
        }
        Command::Ingest { source } => {
            let env = load_env(&cli)?;
            if cli.config.is_none() {
                bail!(
                    "ingest pulls the sources of a config file: pass --config PATH (or use `import` for files by hand)"
                );
            }
            let selected: Vec<_> =
                env.config.sources.iter().filter(|s| source.as_ref().is_none_or(|n| &s.name == n)).collect();
            if selected.is_empty() {
                bail!("no source named '{}' in the config", source.clone().unwrap_or_default());
            }
            let store = open_ledger(&env.database).await?;
            let mut all_ok = true;
            for s in selected {
                let connector = crate::registry::build(&s.params)
                    .await
                    .with_context(|| format!("source '{}' cannot be set up", s.name))?;
                set_source_role(store.as_ref(), &s.name, connector.kind(), s.role).await?;
                all_ok &= ingest_and_print(store.as_ref(), &env.config, &s.name, connector.as_ref(), "ingest").await?;
            }
            Ok(if all_ok { ExitCode::SUCCESS } else { ExitCode::from(2) })
        }
        Command::Export { what: ExportWhat::Csv { from, to, source, out } } => {
            let env = load_env(&cli)?;
            let store = open_ledger(&env.database).await?;
            let filter = ChargeFilter { source: source.clone(), from: *from, to: *to, ..Default::default() };
            let alloc = app::allocator(store.as_ref(), &env.config).await?;
            let alloc = Some(&alloc);
            let stats = match out {
                Some(p) => {
                    let mut f = crate::outfile::OutFile::create(p)?;
                    let stats = export_csv(store.as_ref(), &filter, alloc, &mut f).await?;
                    f.commit().with_context(|| format!("cannot write {}", p.display()))?;
                    stats
                }
                None => {
                    export_csv(store.as_ref(), &filter, alloc, std::io::BufWriter::new(std::io::stdout().lock()))
                        .await?
                }
            };
            eprintln!("exported {} lines (BilledCost: {})", stats.rows, stats.totals.display());
            Ok(ExitCode::SUCCESS)
        }
        Command::Loads { source, state, limit } => {
            let env = load_env(&cli)?;
            let store = open_ledger(&env.database).await?;
            let rows = store
                .loads(&LoadFilter { source: source.clone(), state: *state, limit: Some(*limit), ..Default::default() })
                .await?;
            println!(
                "{:>6}  {:<10}  {:<16}  {:<28}  {:>9}  {:>6}  {:<20}  BilledCost / notes",
                "load", "state", "source", "scope", "rows", "quar.", "finished"
            );
            for l in rows {
                let mut notes = l.totals.display();
                if let Some(by) = l.superseded_by {
                    notes.push_str(&format!("; superseded by load {by}"));
                }
                if let Some(e) = &l.error {
                    notes = e.clone();
                }
                println!(
                    "{:>6}  {:<10}  {:<16}  {:<28}  {:>9}  {:>6}  {:<20}  {}",
                    l.id,
                    l.state.as_str(),
                    l.source,
                    l.scope,
                    l.row_count,
                    l.quarantined_count,
                    l.finished_at.map(|t| format_ts(t.trunc_subsecs(0))).unwrap_or_else(|| "-".into()),
                    notes
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Quarantine { load } => {
            let env = load_env(&cli)?;
            let store = open_ledger(&env.database).await?;
            let found = store.loads(&LoadFilter { id: Some(*load), ..Default::default() }).await?;
            if found.is_empty() {
                bail!("there is no load {load} in this ledger: `costledger loads` lists them");
            }
            let rows = store.quarantine_rows(*load).await?;
            if rows.is_empty() {
                println!("load {load} has no quarantined rows");
            }
            for q in rows {
                println!(
                    "{}: {}\n    amount: {} {}\n    raw: {}",
                    q.location,
                    q.reason,
                    q.raw_amount.as_deref().unwrap_or("-"),
                    q.currency.as_deref().unwrap_or(""),
                    q.raw
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Periods => {
            let env = load_env(&cli)?;
            let store = open_ledger(&env.database).await?;
            for p in store.billing_periods().await? {
                println!(
                    "{:<20} {}  {:<9}  {}{}",
                    p.source,
                    p.period,
                    p.state,
                    p.totals.display(),
                    if p.invoice_ids.is_empty() {
                        String::new()
                    } else {
                        format!("  invoices: {}", p.invoice_ids.join(", "))
                    }
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Runs { limit } => {
            let env = load_env(&cli)?;
            let store = open_ledger(&env.database).await?;
            for r in store.runs(*limit).await? {
                println!(
                    "{:>5}  {:<8} {:<20} {}  {:<9} rows {:>9}  loads +{} ={}{}",
                    r.id,
                    r.job,
                    r.source.unwrap_or_default(),
                    format_ts(r.started_at.trunc_subsecs(0)),
                    r.outcome.status,
                    r.outcome.rows,
                    r.outcome.loads_created,
                    r.outcome.loads_skipped,
                    r.outcome.error.map(|e| format!("  error: {e}")).unwrap_or_default()
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Demo { dir, rows, seed } => demo(&cli, dir, *rows, *seed).await,
        Command::Run => {
            let env = load_env(&cli)?;
            if cli.config.is_none() {
                tracing::warn!("no config file: no sources are scheduled (pass --config PATH)");
            }
            crate::daemon::run(cli.config.clone(), env.config, env.database).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Reconcile { period, from, to, invoices, force } => {
            let env = load_env(&cli)?;
            let store = open_ledger(&env.database).await?;
            if let Some(f) = invoices {
                let rows = read_invoices(f)?;
                let n = store.upsert_invoices(&rows).await?;
                println!("stored {n} invoice total(s) from {}", f.display());
            }
            let selected: Option<Vec<String>> = match (period, from, to) {
                (Some(p), _, _) => Some(vec![p.to_string()]),
                (None, None, None) => None,
                (None, f, t) => {
                    let all = crate::reconcile::ledger_periods(store.as_ref()).await?;
                    let lo = f.map(|p| p.to_string()).unwrap_or_default();
                    let hi = t.map(|p| p.to_string()).unwrap_or_else(|| "9999-12".into());
                    Some(all.into_iter().filter(|p| *p >= lo && *p <= hi).collect())
                }
            };
            reconcile_and_print(store.as_ref(), &env.config, selected.as_deref(), *force).await
        }
        Command::Findings { period } => {
            let env = load_env(&cli)?;
            let store = open_ledger(&env.database).await?;
            let p = period.map(|p| p.to_string());
            let f = store.findings(p.as_deref()).await?;
            print_findings(&f);
            Ok(if f.is_empty() { ExitCode::SUCCESS } else { ExitCode::from(1) })
        }
        Command::Fx { what } => {
            let env = load_env(&cli)?;
            let store = open_ledger(&env.database).await?;
            match what {
                FxWhat::Import { file } => {
                    let rows = read_fx(file)?;
                    let n = store.upsert_fx_rates(&rows).await?;
                    println!("stored {n} exchange rate(s) from {}", file.display());
                }
                FxWhat::List => {
                    for r in store.fx_rates().await? {
                        println!("{}  1 {} = {} {}  ({})", r.month, r.from, r.rate, r.to, r.provenance);
                    }
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Report { what: ReportWhat::Weekly { week, out, format, currency } } => {
            let env = load_env(&cli)?;
            let store = open_ledger(&env.database).await?;
            let monday = match week {
                Some(w) => parse_week(w)?,
                None => {
                    let app::report::DefaultWeek { monday, by_data } =
                        app::report::default_report_week(store.as_ref(), &env.config).await?;
                    println!(
                        "report for {}: {}; pass --week to choose another",
                        crate::reconcile::iso_week_label(monday),
                        if by_data {
                            "the last complete week with data (the ledger's data ends before last week)"
                        } else {
                            "last week"
                        }
                    );
                    monday
                }
            };
            let formats = if format.is_empty() {
                env.config.report.formats.clone()
            } else {
                format
                    .iter()
                    .map(|f| {
                        ReportFormat::parse(f).ok_or_else(|| anyhow::anyhow!("--format: '{f}' is not md, html or csv"))
                    })
                    .collect::<anyhow::Result<Vec<_>>>()?
            };
            let dir = out.clone().unwrap_or_else(|| env.config.report.out_dir.clone());
            let currency = currency.clone().or_else(|| env.config.report.currency.clone());
            let app::report::Written { paths, totals } =
                app::report::weekly(store.as_ref(), &env.config, monday, &dir, &formats, currency.as_deref()).await?;
            for p in paths {
                println!("wrote {}", p.display());
            }
            if totals.0.is_empty() {
                eprintln!(
                    "warning: the ledger has no charges in {}: the report's tables are empty; check the week \
                     (`costledger periods` shows what the ledger holds)",
                    crate::reconcile::iso_week_label(monday)
                );
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn print_findings(findings: &[Finding]) {
    if findings.is_empty() {
        println!("no findings");
    }
    for f in findings {
        println!(
            "  [{}] {} {}{}: {}",
            f.check,
            f.period,
            f.billing_account_id.as_deref().map(|a| format!("account {a} ")).unwrap_or_default(),
            f.currency.as_deref().unwrap_or(""),
            f.message
        );
    }
}

async fn reconcile_and_print(
    store: &dyn LedgerStore,
    config: &Config,
    selected: Option<&[String]>,
    force: bool,
) -> anyhow::Result<ExitCode> {
    let summary = match app::reconcile::run(store, config, selected, force).await {
        Ok(s) => s,
        Err(e) => {
            if let ReconcileError::Conservation(_) = &e {
                print_findings(&store.findings(None).await?);
            }
            return Err(e.into());
        }
    };
    if summary.periods.is_empty() {
        println!(
            "nothing to reconcile: the ledger has no billing periods{}",
            if selected.is_some() { " in that range" } else { "" }
        );
    }
    for p in &summary.periods {
        println!(
            "period {}{}: billed {}",
            p.period,
            if p.recomputed { " (allocation recomputed)" } else { " (allocation unchanged)" },
            p.billed.display()
        );
        println!("  allocated   {}", p.allocated.display());
        println!("  shared      {}", p.shared.display());
        println!("  unallocated {}", p.unallocated.display());
        for ((reason, cur), amt) in &p.by_reason {
            println!("    {reason:<20} {amt} {cur}");
        }
        println!("  conservation: allocated + shared + unallocated = billed, exactly");
    }
    for m in &summary.invoices_matched {
        println!(
            "invoice check: {} {} matches the ledger: {} {} (ledger {})",
            m.period, m.what, m.amount, m.currency, m.ledger
        );
    }
    println!("findings: {}", summary.findings.len());
    print_findings(&summary.findings);
    Ok(if summary.findings.is_empty() { ExitCode::SUCCESS } else { ExitCode::from(1) })
}

fn progress_bar() -> Option<ProgressBar> {
    if !std::io::stderr().is_terminal() {
        return None;
    }
    let pb = ProgressBar::new_spinner();
    pb.set_style(ProgressStyle::with_template("{spinner} {msg} {human_pos} records ({per_sec})").ok()?);
    pb.enable_steady_tick(Duration::from_millis(120));
    Some(pb)
}

/// Ingest one source and print what happened. Returns false when a delivery failed.
async fn ingest_and_print(
    store: &dyn LedgerStore,
    config: &Config,
    source: &str,
    connector: &dyn Connector,
    job: &str,
) -> anyhow::Result<bool> {
    let swept = app::retention::sweep(store, config).await?;
    if !swept.is_empty() {
        println!("swept {} stale staging load(s) left by an interrupted run: {:?}", swept.len(), swept);
    }
    let run = store.start_run(job, Some(source)).await?;
    let pb = progress_bar();
    let progress = |d: &Delivery, n: u64| {
        if let Some(pb) = &pb {
            pb.set_message(d.scope.clone());
            pb.set_position(n);
        }
    };
    let opts = app::ingest::Options { progress: Some(&progress), ..Default::default() };
    let attempt = app::ingest::ingest(store, config, source, connector, &opts).await;
    if let Some(pb) = &pb {
        pb.finish_and_clear();
    }
    let tally = app::ingest::tally(&attempt, 1, false);
    store.finish_run(run, &tally.outcome).await?;
    let reports = attempt?;
    print_reports(source, &reports, &tally);
    let removed = app::retention::gc(store, config).await?;
    if removed > 0 {
        println!(
            "retention: deleted the lines of {removed} load(s) superseded more than {} days ago",
            config.retention.superseded_loads_days
        );
    }
    Ok(tally.ok())
}

fn print_reports(source: &str, reports: &[Result<LoadReport, IngestError>], tally: &app::ingest::Tally) {
    let mut advice: Vec<&'static str> = Vec::new();
    println!("source '{source}': {} deliver{}", reports.len(), if reports.len() == 1 { "y" } else { "ies" });
    if reports.is_empty() {
        println!("  nothing to load (no deliveries found: no .csv or .csv.gz files, or no objects or months)");
    }
    for r in reports {
        match r {
            Ok(r) => {
                let what = match &r.outcome {
                    LoadOutcome::Created { load, superseded: None } => format!("loaded    {} → load {load}", r.scope),
                    LoadOutcome::Created { load, superseded: Some(old) } => {
                        format!("restated  {} → load {load} replaces load {old}", r.scope)
                    }
                    LoadOutcome::Skipped { existing } => {
                        format!("skipped   {} (already current as load {existing})", r.scope)
                    }
                    LoadOutcome::Duplicate { existing } => {
                        format!("skipped   {} (loaded concurrently as load {existing})", r.scope)
                    }
                    LoadOutcome::SameBytesElsewhere { existing, scope } => {
                        format!(
                            "skipped   {} (the same bytes are already current as load {existing}, {scope})",
                            r.scope
                        )
                    }
                };
                println!("  {what}: {} rows, {} quarantined; BilledCost {}", r.rows, r.quarantined, r.totals.display());
                if r.records == 0 && matches!(r.outcome, LoadOutcome::Created { .. }) {
                    println!(
                        "    warning: {} has a header but no data rows; it now stands as an empty bill for its scope",
                        r.description
                    );
                }
                if r.rounded > 0 {
                    println!(
                        "    note: {} amount(s) had more than 28 decimal places and were rounded half-to-even",
                        r.rounded
                    );
                }
                if let LoadOutcome::Created { load, .. } = &r.outcome
                    && r.quarantined > 0
                {
                    println!("    see the quarantined rows with: costledger quarantine --load {load}");
                }
            }
            Err(e) => {
                println!("  FAILED    {e}");
                if !advice.contains(&e.advice()) {
                    advice.push(e.advice());
                }
            }
        }
    }
    if tally.outcome.loads_created > 0 {
        println!("loaded lines: BilledCost {}", tally.totals.display());
    } else if tally.ok() {
        println!("nothing new to load: every delivery is already current");
    }
    if tally.quarantined > 0 {
        println!("quarantined: {} rows (parsable amounts: {})", tally.quarantined, tally.quarantined_totals.display());
    }
    let failed = tally.errors.len();
    if failed > 0 {
        println!(
            "{failed} deliver{} failed; nothing of {} was loaded: {}.",
            if failed == 1 { "y" } else { "ies" },
            if failed == 1 { "it" } else { "them" },
            advice.join("; ")
        );
    }
    let _ = std::io::stdout().flush();
}

/// Allocation rules the demo uses when no config gives any (the sample bills' teams).
pub const DEMO_ALLOCATION: &str = r#"
allocation:
  owners: [payments, search, platform, data]
  owner_tags: [team, owner]
  tag_aliases: { Team: team }
  required_tags: [team, env]
  rules:
    - name: checkout-apps
      match: { tags: { app: "checkout-*" } }
      owner: payments
    - name: staging-account
      match: { provider: AWS, sub_account_id: "333333333333" }
      owner: platform
    - name: tax-shared
      match: { charge_category: Tax }
      shared: proportional
"#;

async fn demo(cli: &Cli, dir: &Path, rows: u64, seed: u64) -> anyhow::Result<ExitCode> {
    let mut env = load_env(cli)?;
    if env.config.allocation == crate::allocation::AllocationConfig::default() {
        let demo = Config::parse(DEMO_ALLOCATION, &|_| None)
            .map_err(|e| anyhow::anyhow!("built-in demo allocation rules are invalid: {e:?}"))?;
        env.config.allocation = demo.allocation;
    }
    let bills = dir.join("bills");
    std::fs::create_dir_all(&bills).with_context(|| format!("cannot create {}", bills.display()))?;
    let period: BillingPeriod = "2026-10".parse().map_err(|e| anyhow::anyhow!("{e}"))?;
    let synthetic = bills.join("synthetic-2026-10.csv");
    let stats = write_sample_file(&synthetic, SampleSpec { rows, seed, period })?;
    let public = bills.join("focus-sample-data-1.0.csv");
    std::fs::write(&public, BUNDLED_FOCUS_SAMPLE).with_context(|| format!("cannot write {}", public.display()))?;
    println!(
        "1. bills: {} ({} synthetic lines, BilledCost {}) and {} (FOCUS 1.0 public sample, CC BY 4.0)",
        synthetic.display(),
        stats.rows,
        stats.totals.display(),
        public.display()
    );

    let url = match &cli.database {
        Some(u) => DatabaseUrl::from(u),
        None => DatabaseUrl::new(format!("sqlite://{}", dir.join("costledger.db").display())),
    };
    let store = open_ledger(&url).await?;
    println!("2. ledger: {url}");
    let connector = FocusConnector::new(vec![bills.clone()]);
    let ok = ingest_and_print(store.as_ref(), &env.config, "demo", &connector, "demo").await?;
    if !ok {
        return Ok(ExitCode::from(2));
    }

    println!("\n3. summary of current charges (per provider, billing account and currency):");
    let by = [Dim::Provider, Dim::BillingAccount];
    let rows = store.totals(&ChargeFilter::default(), &by).await?;
    println!(
        "   {:<14} {:<24} {:<4} {:>8} {:>26} {:>26}",
        "provider", "billing account", "cur", "lines", "BilledCost", "EffectiveCost"
    );
    for r in &rows {
        println!(
            "   {:<14} {:<24} {:<4} {:>8} {:>26} {:>26}",
            r.keys[0].as_deref().unwrap_or("-"),
            r.keys[1].as_deref().unwrap_or("-"),
            r.currency,
            r.rows,
            r.billed_cost.to_fixed(2),
            r.effective_cost.to_fixed(2)
        );
    }
    let totals = store.totals(&ChargeFilter::default(), &[]).await?;
    for t in &totals {
        println!(
            "   {:<14} {:<24} {:<4} {:>8} {:>26} {:>26}   (exact: {})",
            "all",
            "",
            t.currency,
            t.rows,
            t.billed_cost.to_fixed(2),
            t.effective_cost.to_fixed(2),
            t.billed_cost
        );
    }
    println!("   (amounts shown rounded half-to-even to 2 places; the ledger and the CSV keep every digit)");
    println!("\n   billing periods:");
    for p in store.billing_periods().await? {
        println!("   {} {}  {:<9} {}", p.source, p.period, p.state, p.totals.display());
    }

    println!("\n4. reconcile (allocation rules: the config's, or the demo's built-in ones):");
    let code = reconcile_and_print(store.as_ref(), &env.config, None, false).await?;

    let data_end = store.reconcile_states().await?.into_iter().filter_map(|s| s.data_end).max();
    let last_day = data_end.as_deref().and_then(|e| parse_timestamp(e).ok()).map(|t| t.date_naive());
    let reports = dir.join("reports");
    if let Some(day) = last_day {
        let monday = last_complete_week(day);
        println!(
            "\n5. weekly governance report for {} (the last complete week of data):",
            crate::reconcile::iso_week_label(monday)
        );
        let formats = [ReportFormat::Md, ReportFormat::Html, ReportFormat::Csv];
        for p in app::report::weekly(store.as_ref(), &env.config, monday, &reports, &formats, None).await?.paths {
            println!("   wrote {}", p.display());
        }
        let html = reports.join(format!("weekly-{}.html", crate::reconcile::iso_week_label(monday)));
        println!("   open the HTML report in a browser: {}", html.display());
    }

    let csv = dir.join("finance.csv");
    let mut f = crate::outfile::OutFile::create(&csv)?;
    let alloc = app::allocator(store.as_ref(), &env.config).await?;
    let stats = export_csv(store.as_ref(), &ChargeFilter::default(), Some(&alloc), &mut f).await?;
    f.commit().with_context(|| format!("cannot write {}", csv.display()))?;
    println!(
        "\n6. finance CSV with x_owner and x_allocation_reason: {} ({} lines, BilledCost {})",
        csv.display(),
        stats.rows,
        stats.totals.display()
    );
    let _ = code;
    println!("\nRun the demo again: every delivery is skipped and every total stays the same.");
    println!("Try: costledger --database {url} loads");
    Ok(ExitCode::SUCCESS)
}
