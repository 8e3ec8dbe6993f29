//! `costledger demo`: bundled sample bills → a SQLite ledger → summary → reconcile → weekly
//! report → finance CSV, with no cloud and no config.

use std::path::Path;
use std::process::ExitCode;

use anyhow::Context as _;
use costledger_core::{BillingPeriod, parse_timestamp};
use costledger_focus::FocusConnector;

use super::print::{ingest_and_print, reconcile_and_print};
use super::{Cli, load_env, open_ledger};
use crate::app;
use crate::config::{Config, ReportFormat};
use crate::export::export_csv;
use crate::focus_export::{FocusExportOptions, FocusFormat, FocusVersion, export_focus};
use crate::ledger::{ChargeFilter, DatabaseUrl, Dim};
use crate::report::last_complete_week;
use crate::sample::{SampleSpec, write_sample_file};

/// The public FOCUS 1.0 sample (FinOps Foundation, CC BY 4.0), bundled for `demo`.
const BUNDLED_FOCUS_SAMPLE: &[u8] = include_bytes!("../../tests/fixtures/focus/focus_sample.csv");

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

/// A budget and a unit cost the demo shows when the config has none.
pub const DEMO_BUDGETS: &str = r#"
budgets:
  - name: payments-usd
    scope: ["owner=payments", "provider=AWS"]
    amount: "30000"
    currency: USD
    thresholds: [50, 80, 100]
report:
  unit_costs:
    - { metric: requests, per: 1000, cost: EffectiveCost, by: [owner] }
"#;

/// The demo's business metric: requests per owner per day of `period` (deterministic).
fn demo_requests(period: BillingPeriod) -> String {
    let mut out = String::from("date,metric,value,owner\n");
    let start = period.start().date_naive();
    let days = (period.end().date_naive() - start).num_days();
    for d in 0..days {
        let day = start + chrono::Duration::days(d);
        for (i, owner) in ["payments", "search", "platform", "data"].iter().enumerate() {
            let value = 200_000 + 1_000 * d + 50_000 * i as i64;
            out.push_str(&format!("{day},requests,{value},{owner}\n"));
        }
    }
    out
}

pub(super) async fn demo(cli: &Cli, dir: &Path, rows: u64, seed: u64) -> anyhow::Result<ExitCode> {
    let mut env = load_env(cli)?;
    if env.config.allocation == crate::allocation::AllocationConfig::default() {
        let demo = Config::parse(DEMO_ALLOCATION, &|_| None)
            .map_err(|e| anyhow::anyhow!("built-in demo allocation rules are invalid: {e:?}"))?;
        env.config.allocation = demo.allocation;
    }
    if env.config.budgets.is_empty() && env.config.report.unit_costs.is_empty() {
        let demo = Config::parse(DEMO_BUDGETS, &|_| None)
            .map_err(|e| anyhow::anyhow!("built-in demo budgets are invalid: {e:?}"))?;
        env.config.budgets = demo.budgets;
        env.config.report.unit_costs = demo.report.unit_costs;
    }
    let bills = dir.join("bills");
    std::fs::create_dir_all(&bills).with_context(|| format!("cannot create {}", bills.display()))?;
    let period: BillingPeriod = "2026-10".parse().map_err(|e| anyhow::anyhow!("{e}"))?;
    let synthetic = bills.join("synthetic-2026-10.csv");
    let stats = write_sample_file(&synthetic, SampleSpec { rows, seed, period })?;
    let requests = dir.join("requests-2026-10.csv");
    std::fs::write(&requests, demo_requests(period)).with_context(|| format!("cannot write {}", requests.display()))?;
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

    let metrics = crate::finance_files::read_metrics(&requests)?;
    app::unit_costs::import(store.as_ref(), &metrics).await?;
    println!("   business metric 'requests' per owner and day: {} ({} values)", requests.display(), metrics.len());

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
    let mut explain_hint = None;
    if let Some(day) = last_day {
        let monday = last_complete_week(day);
        println!(
            "\n5. weekly governance report for {} (the last complete week of data):",
            costledger_core::iso_week_label(monday)
        );
        let formats = [ReportFormat::Md, ReportFormat::Html, ReportFormat::Csv];
        for p in app::report::weekly(store.as_ref(), &env.config, monday, &reports, &formats, None).await?.paths {
            println!("   wrote {}", p.display());
        }
        let html = reports.join(format!("weekly-{}.html", costledger_core::iso_week_label(monday)));
        println!("   open the HTML report in a browser: {}", html.display());
        let label = costledger_core::iso_week_label;
        let text = app::explain::ExplainText {
            from: label(monday - chrono::Duration::days(7)),
            to: label(monday),
            by: vec!["service".into()],
            top: Some(3),
            ..Default::default()
        };
        let q = app::explain::parse(&env.config, &text)?;
        let e = app::explain::explain(store.as_ref(), &env.config, &q).await?;
        println!("   why it changed ({} → {}, the 3 largest changes by service per currency):", text.from, text.to);
        for g in e.groups.iter().filter(|g| !g.others) {
            println!("   - {}", g.sentence);
        }
        for b in app::budgets::statuses(store.as_ref(), &env.config, monday + chrono::Duration::days(7)).await? {
            println!(
                "   budget {} ({} {} for {}): actual {} ({}), forecast {} ({})",
                b.name,
                b.amount,
                b.currency,
                b.period,
                b.actual.to_fixed(2),
                b.actual_percent.map(|p| format!("{p}%")).unwrap_or_default(),
                b.forecast.to_fixed(2),
                b.forecast_percent.map(|p| format!("{p}%")).unwrap_or_default()
            );
        }
        explain_hint = Some((text.from, text.to));
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
    let mut focus_files = Vec::new();
    for (format, ext) in [(FocusFormat::Csv, "csv"), (FocusFormat::Parquet, "parquet")] {
        let opts = FocusExportOptions { version: FocusVersion::V1_2, format, lineage: false };
        let path = dir.join(format!("focus-1.2.{ext}"));
        let mut f = crate::outfile::OutFile::create(&path)?;
        export_focus(store.as_ref(), &ChargeFilter::default(), &opts, None, &mut f).await?;
        f.commit().with_context(|| format!("cannot write {}", path.display()))?;
        focus_files.push(path);
    }
    // FOCUS 1.3: the shared tax split among the teams as the reconciler split it.
    let opts = FocusExportOptions { version: FocusVersion::V1_3, format: FocusFormat::Csv, lineage: false };
    let focus_13 = dir.join("focus-1.3.csv");
    let mut f = crate::outfile::OutFile::create(&focus_13)?;
    let stats_13 = export_focus(store.as_ref(), &ChargeFilter::default(), &opts, Some(&alloc), &mut f).await?;
    f.commit().with_context(|| format!("cannot write {}", focus_13.display()))?;
    let (focus_csv, focus_parquet) = (&focus_files[0], &focus_files[1]);
    println!(
        "\n7. FOCUS 1.2 dataset (every column of the specification, exact decimals): {} and {}",
        focus_csv.display(),
        focus_parquet.display()
    );
    println!(
        "   FOCUS 1.3 dataset, {} shared charges split per owner (AllocatedMethodId, AllocatedResourceId): {}",
        stats_13.split_charges,
        focus_13.display()
    );
    let _ = code;
    println!("\nRun the demo again: every delivery is skipped and every total stays the same.");
    println!("Try: costledger --database {url} loads");
    println!("     costledger --database {url} query --group-by provider,service --grain month --top 10");
    if let Some((a, b)) = explain_hint {
        println!("     costledger --database {url} explain --from {a} --to {b} --by service,sku --top 10");
    }
    println!("     costledger --database {url} commitments --view coverage");
    println!(
        "     costledger --database {url} query --group-by owner --grain week --per requests --per-unit 1000 --metric EffectiveCost"
    );
    println!("     costledger --database {url} serve   (the API and the cost-explorer page on http://127.0.0.1:9464/)");
    Ok(ExitCode::SUCCESS)
}
