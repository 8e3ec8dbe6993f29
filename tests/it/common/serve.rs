//! The read side's shared fixture: the query fixture's ledger, reconciled against an invoice,
//! and the questions every edge (CLI, HTTP API, MCP) must answer alike.

use std::path::{Path, PathBuf};

use super::{fixture, run};

/// The query fixture's config with a server section (`extra` appended).
pub fn config(dir: &Path, bind: &str, extra: &str) -> PathBuf {
    let base = std::fs::read_to_string(fixture("query/config.yaml")).expect("fixture");
    let p = dir.join(format!("costledger-{}.yaml", bind.replace([':', '.'], "_")));
    std::fs::write(&p, format!("{base}server: {{ bind: \"{bind}\" }}\n{extra}")).expect("write");
    p
}

/// A budget over the fixture's AWS (USD) charges, so budget answers carry figures.
pub const BUDGET: &str = "budgets: [{ name: aws-usd, scope: [\"provider=AWS\"], amount: \"100\", currency: USD }]\n";

/// Import the query fixture, its FX rates, and reconcile.
pub fn fill(db: &str, cfg: &Path) {
    let cfg = cfg.to_str().expect("p");
    let charges = fixture("query/charges.csv").display().to_string();
    let (code, _, err) = run(db, &["--config", cfg, "import", "--format", "focus", "--source", "bill", &charges]);
    assert_eq!(code, 0, "import: {err}");
    let (code, _, err) = run(db, &["fx", "import", &fixture("query/fx.csv").display().to_string()]);
    assert_eq!(code, 0, "fx: {err}");
    let (code, _, err) = run(db, &["metrics", "import", &fixture("query/requests.csv").display().to_string()]);
    assert_eq!(code, 0, "metrics: {err}");
    // An invoice 0.99 USD above the ledger (9.2550001, compared at 2 places): a finding to serve.
    let inv = Path::new(cfg).with_file_name("invoices.csv");
    std::fs::write(&inv, "billing_account_id,billing_period,currency,amount\nP1,2026-10,USD,10.25\n").expect("write");
    let (code, _, err) = run(db, &["--config", cfg, "reconcile", "--invoices", inv.to_str().expect("p")]);
    assert!(code == 0 || code == 1, "reconcile: {err}");
}

/// Questions asked both ways: CLI arguments and the same as API parameters.
pub const QUESTIONS: &[(&[&str], &str)] = &[
    (&[], ""),
    (&["--group-by", "owner,allocation", "--grain", "month"], "group_by=owner,allocation&grain=month"),
    (&["--group-by", "service", "--grain", "billing_period"], "group_by=service&grain=billing_period"),
    (&["--group-by", "tag:Team", "--where", "provider=aws"], "group_by=tag:Team&where=provider%3Daws"),
    (
        &["--where", "tag:team=(none)", "--metric", "BilledCost,lines"],
        "where=tag:team%3D(none)&metric=BilledCost,lines",
    ),
    (&["--grain", "day", "--from", "2026-10-02", "--to", "2026-10-09"], "grain=day&from=2026-10-02&to=2026-10-09"),
    (
        &["--group-by", "region", "--metric", "EffectiveCost,PricingQuantity"],
        "group_by=region&metric=EffectiveCost&metric=PricingQuantity",
    ),
    (&["--group-by", "service", "--top", "1", "--grain", "month"], "group_by=service&top=1&grain=month"),
    (&["--group-by", "sub_account", "--currency", "USD"], "group_by=sub_account&currency=usd"),
    (
        &["--group-by", "service", "--where", "service=amazon*", "--where", "region!=eu-*"],
        "group_by=service&where=service%3Damazon*&where=region!%3Deu-*",
    ),
    (
        &["--group-by", "resource", "--by-billing-period", "--from", "2026-11"],
        "group_by=resource&by_billing_period=true&from=2026-11",
    ),
];

/// Explain questions asked both ways (the fixture has October and November charges).
pub const EXPLAIN_QUESTIONS: &[(&[&str], &str)] = &[
    (&["--from", "2026-10", "--to", "2026-11"], "from=2026-10&to=2026-11"),
    (
        &["--from", "2026-10", "--to", "2026-11", "--by", "owner,service", "--currency", "USD"],
        "from=2026-10&to=2026-11&by=owner,service&currency=USD",
    ),
    (
        &["--from", "2026-10", "--to", "2026-11", "--metric", "EffectiveCost", "--where", "provider=AWS", "--top", "1"],
        "from=2026-10&to=2026-11&metric=EffectiveCost&where=provider%3DAWS&top=1",
    ),
];
