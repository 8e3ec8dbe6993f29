//! The command line: the edge where `anyhow` lives (with `main.rs` and the daemon's wiring).
//! `args` is what clap parses; `run` calls one application function per command; `print`
//! turns results into text; `demo` is the guided tour.

use std::process::ExitCode;

use anyhow::{Context as _, bail};
use chrono::SubsecRound;
use costledger_core::format_ts;

use crate::app;
use crate::config::{Config, DEFAULT_DATABASE, ReportFormat};
use crate::export::export_csv;
use crate::finance_files::{read_fx, read_invoices};
use crate::ingest::set_source_role;
use crate::ledger::{self, ChargeFilter, DatabaseUrl, LedgerStore, LoadFilter};
use crate::report::parse_week;
use crate::sample::{SampleSpec, write_sample_file};

mod args;
mod demo;
mod print;

pub use args::*;
pub use demo::DEMO_ALLOCATION;
use demo::demo;
use print::{ingest_and_print, print_findings, reconcile_and_print};

pub(super) struct Env {
    pub(super) config: Config,
    pub(super) database: DatabaseUrl,
}

pub(super) fn load_env(cli: &Cli) -> anyhow::Result<Env> {
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

pub(super) async fn open_ledger(url: &DatabaseUrl) -> anyhow::Result<Box<dyn LedgerStore>> {
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
            let r = app::query::build_missing_rollups(store.as_ref(), &env.config).await?;
            if !r.built.is_empty() || !r.not_worth_it.is_empty() {
                print::print_rollup_build(&r);
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Rollup => {
            let env = load_env(&cli)?;
            let store = open_ledger(&env.database).await?;
            let r = app::query::build_missing_rollups(store.as_ref(), &env.config).await?;
            print::print_rollup_build(&r);
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
        Command::Query {
            metrics,
            group_by,
            grain,
            filters,
            from,
            to,
            by_billing_period,
            currency,
            top,
            per,
            per_unit,
            places,
            format,
        } => {
            let env = load_env(&cli)?;
            let text = crate::query::QueryText {
                metrics: metrics.clone(),
                group_by: group_by.clone(),
                grain: grain.clone(),
                filters: filters.clone(),
                from: from.clone(),
                to: to.clone(),
                range_by_billing_period: *by_billing_period,
                currency: currency.clone(),
                top: *top,
            };
            let q = app::query::parse(&env.config, &text)?;
            let store = open_ledger(&env.database).await?;
            if let Some(name) = per {
                let u = app::unit_costs::unit_costs(store.as_ref(), &env.config, &q, name, *per_unit, *places).await?;
                print::print_unit_costs(&u, *format)?;
                return Ok(ExitCode::SUCCESS);
            }
            let result = app::query::query(store.as_ref(), &env.config, &q).await?;
            print::print_query(&result, *format)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Metrics { what } => {
            let env = load_env(&cli)?;
            let store = open_ledger(&env.database).await?;
            match what {
                args::MetricsWhat::Import { file } => {
                    let rows = crate::finance_files::read_metrics(file)?;
                    let n = app::unit_costs::import(store.as_ref(), &rows).await?;
                    println!("stored {n} business metric value(s) from {}", file.display());
                }
                args::MetricsWhat::List => {
                    for name in store.business_metric_names().await? {
                        println!("{name}");
                    }
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Explain { from, to, by, metric, filters, currency, top, format } => {
            let env = load_env(&cli)?;
            let text = app::explain::ExplainText {
                from: from.clone(),
                to: to.clone(),
                by: by.clone(),
                metric: metric.clone(),
                filters: filters.clone(),
                currency: currency.clone(),
                top: *top,
            };
            let q = app::explain::parse(&env.config, &text)?;
            let store = open_ledger(&env.database).await?;
            let e = app::explain::explain(store.as_ref(), &env.config, &q).await?;
            print::print_explanation(&e, *format)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Budgets { as_of, format } => {
            let env = load_env(&cli)?;
            let store = open_ledger(&env.database).await?;
            let as_of = match as_of {
                Some(d) => *d,
                None => app::budgets::default_as_of(store.as_ref(), &env.config).await?,
            };
            let statuses = app::budgets::statuses(store.as_ref(), &env.config, as_of).await?;
            print::print_budgets(&statuses, *format)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Commitments { from, to, grain, by, basis, filters, view, format } => {
            let env = load_env(&cli)?;
            let text = app::commitments::CommitmentsText {
                from: from.clone(),
                to: to.clone(),
                grain: grain.clone(),
                by: by.clone(),
                basis: basis.clone(),
                filters: filters.clone(),
            };
            let store = open_ledger(&env.database).await?;
            let c = app::commitments::commitments(store.as_ref(), &env.config, &text).await?;
            print::print_commitments(&c, *view, *format)?;
            Ok(ExitCode::SUCCESS)
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
        Command::Export { what: ExportWhat::Focus { version, format, from, to, source, lineage, out } } => {
            let env = load_env(&cli)?;
            let store = open_ledger(&env.database).await?;
            let filter = ChargeFilter { source: source.clone(), from: *from, to: *to, ..Default::default() };
            let alloc = app::allocator(store.as_ref(), &env.config).await?;
            let opts =
                crate::focus_export::FocusExportOptions { version: *version, format: *format, lineage: *lineage };
            use crate::focus_export::export_focus as export;
            let stats = match out {
                Some(p) => {
                    let mut f = crate::outfile::OutFile::create(p)?;
                    let stats = export(store.as_ref(), &filter, &opts, Some(&alloc), &mut f).await?;
                    f.commit().with_context(|| format!("cannot write {}", p.display()))?;
                    stats
                }
                // The Parquet writer must be Send: the (unlocked) stdout handle is.
                None => {
                    export(store.as_ref(), &filter, &opts, Some(&alloc), std::io::BufWriter::new(std::io::stdout()))
                        .await?
                }
            };
            let mut split = match stats.split_charges {
                0 => String::new(),
                n => format!("; {n} shared charges written as one row per owner's share"),
            };
            if stats.unused_commitment_rows > 0 {
                split.push_str(&format!(
                    "; {} commitment fees' unused shares written as Unused usage rows of their own",
                    stats.unused_commitment_rows
                ));
            }
            eprintln!(
                "exported {} lines as FOCUS {} (BilledCost: {}{split})",
                stats.rows,
                version.as_str(),
                stats.totals.display()
            );
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
        Command::Mcp => {
            let env = load_env(&cli)?;
            let store = open_ledger(&env.database).await?;
            crate::mcp::serve_stdio(std::sync::Arc::from(store), std::sync::Arc::new(env.config)).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Serve => {
            let env = load_env(&cli)?;
            crate::daemon::serve(env.config, env.database).await?;
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
            let selected: Option<Vec<costledger_core::BillingPeriod>> = match (period, from, to) {
                (Some(p), _, _) => Some(vec![*p]),
                (None, None, None) => None,
                (None, f, t) => {
                    let all = crate::reconcile::ledger_periods(store.as_ref()).await?;
                    Some(all.into_iter().filter(|p| f.is_none_or(|f| *p >= f) && t.is_none_or(|t| *p <= t)).collect())
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
        Command::Report { what: ReportWhat::Weekly { week, out, format, currency, metric } } => {
            let mut env = load_env(&cli)?;
            if let Some(m) = metric {
                let m = crate::query::Metric::parse(m)?;
                if m.kind() != crate::query::MetricKind::Money {
                    bail!("--metric {}: use BilledCost, EffectiveCost, ListCost or ContractedCost", m.name());
                }
                env.config.report.metric = m;
            }
            let store = open_ledger(&env.database).await?;
            let monday = match week {
                Some(w) => parse_week(w)?,
                None => {
                    let app::report::DefaultWeek { monday, by_data } =
                        app::report::default_report_week(store.as_ref(), &env.config).await?;
                    println!(
                        "report for {}: {}; pass --week to choose another",
                        costledger_core::iso_week_label(monday),
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
                    costledger_core::iso_week_label(monday)
                );
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}
