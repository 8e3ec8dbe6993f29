//! `costledger query` end to end on real SQLite (and PostgreSQL when
//! COSTLEDGER_TEST_POSTGRES_URL is set): exact sums checked against hand-computed values of
//! `tests/fixtures/query/charges.csv`, tag aliases, grains, FX conversion, top N + others,
//! and the errors bad input gets.

mod common;

use common::*;

fn setup(db: &str) -> String {
    let cfg = fixture("query/config.yaml").display().to_string();
    let charges = fixture("query/charges.csv").display().to_string();
    let (code, _, err) = run(db, &["--config", &cfg, "import", "--format", "focus", "--source", "bill", &charges]);
    assert_eq!(code, 0, "import: {err}");
    let fx = fixture("query/fx.csv").display().to_string();
    let (code, _, err) = run(db, &["fx", "import", &fx]);
    assert_eq!(code, 0, "fx import: {err}");
    cfg
}

fn query(db: &str, cfg: &str, args: &[&str]) -> String {
    let mut all = vec!["--config", cfg, "query"];
    all.extend_from_slice(args);
    let (code, out, err) = run(db, &all);
    assert_eq!(code, 0, "query {args:?}: {err}");
    out
}

fn query_err(db: &str, cfg: &str, args: &[&str]) -> String {
    let mut all = vec!["--config", cfg, "query"];
    all.extend_from_slice(args);
    let (code, out, err) = run(db, &all);
    assert_eq!(code, 2, "query {args:?} should fail with exit 2: {out}");
    err
}

/// Every query behaviour on one backend.
fn check_backend(db: &str) {
    let cfg = setup(db);

    // Service by billing month, exact to the last digit, CSV with FOCUS metric names.
    assert_eq!(
        query(db, &cfg, &["--group-by", "service", "--grain", "billing_period", "--format", "csv"]),
        "service,billing_period,currency,BilledCost\r\n\
         Virtual Machines,2026-10,EUR,100\r\n\
         Amazon EC2,2026-10,USD,10.0050001\r\n\
         Amazon S3,2026-10,USD,-0.75\r\n\
         Amazon EC2,2026-11,USD,7.123456789\r\n"
    );

    // Tags after aliases and case folding (Team, Squad and TEAM are all `team`); a line
    // without the tag is its own (none) group.
    assert_eq!(
        query(db, &cfg, &["--group-by", "tag:Team", "--where", "provider=aws", "--format", "csv"]),
        "tag:team,currency,BilledCost\r\n\
         payments,USD,17.128456889\r\n\
         search,USD,1.5\r\n\
         ,USD,-2.25\r\n"
    );
    assert_eq!(
        query(db, &cfg, &["--where", "tag:team=(none)", "--format", "csv", "--metric", "BilledCost,lines"]),
        "currency,BilledCost,lines\r\nUSD,-2.25,1\r\n"
    );

    // Day grain and a range: --to is inclusive of the day it names.
    assert_eq!(
        query(db, &cfg, &["--grain", "day", "--from", "2026-10-02", "--to", "2026-10-09", "--format", "csv"]),
        "day,currency,BilledCost\r\n2026-10-02,USD,10.0050001\r\n2026-10-09,USD,-0.75\r\n"
    );

    // Several metrics; a metric no line of a group has is empty, not zero.
    assert_eq!(
        query(
            db,
            &cfg,
            &[
                "--group-by",
                "region",
                "--metric",
                "EffectiveCost,PricingQuantity",
                "--where",
                "service=amazon ec2",
                "--format",
                "csv"
            ]
        ),
        "region,currency,EffectiveCost,PricingQuantity\r\nus-east-1,USD,16.5,26\r\n"
    );

    // Converted to USD: each billing period at its month's rate (100 EUR × 1.08).
    let json = query(db, &cfg, &["--group-by", "provider", "--currency", "usd", "--format", "json"]);
    let v: serde_json::Value = serde_json::from_str(&json).expect("json");
    assert_eq!(v["converted_to"], "USD");
    assert_eq!(v["totals"][0]["currency"], "USD");
    assert_eq!(v["totals"][0]["values"][0], "124.378456889", "amounts are exact strings: {json}");
    assert_eq!(v["rows"][0]["keys"][0], "Microsoft");
    assert_eq!(v["rows"][0]["values"][0], "108");
    let rate = v["rates_used"][0].as_str().unwrap_or_default();
    assert!(rate.starts_with("2026-10 1 EUR = 1.08 USD (") && rate.ends_with("fx.csv:2)"), "{json}");
    let err = query_err(db, &cfg, &["--currency", "GBP"]);
    assert!(err.contains("no exchange rate from EUR to GBP for 2026-10"), "{err}");

    // Top 1 + others adds back to the total exactly.
    let csv = query(db, &cfg, &["--group-by", "resource", "--top", "1", "--where", "provider=AWS", "--format", "csv"]);
    assert_eq!(csv, "resource,currency,BilledCost\r\ni-1,USD,17.128456789\r\n(others),USD,-0.7499999\r\n");

    // Bad input: what is wrong, and what is allowed; exit 2.
    for (args, want) in [
        (&["--group-by", "colour"][..], "unknown dimension 'colour': use one of provider, billing_account"),
        (&["--metric", "Cost"][..], "unknown metric 'Cost': use one of BilledCost, EffectiveCost"),
        (&["--from", "2026-13"][..], "bad date '2026-13' for --from"),
        (&["--from", "2026-11", "--to", "2026-10"][..], "--from 2026-11 is after --to 2026-10"),
        (&["--currency", "dollars"][..], "bad currency 'DOLLARS'"),
        (&["--where", "service"][..], "bad filter 'service'"),
        (&["--grain", "hour"][..], "unknown grain 'hour'"),
    ] {
        let err = query_err(db, &cfg, args);
        assert!(err.contains(want), "{args:?}: {err}");
    }
}

#[test]
fn query_answers_exactly_on_sqlite() {
    let dir = tempfile::tempdir().expect("tempdir");
    check_backend(&sqlite_url(dir.path()));
}

#[tokio::test]
async fn query_answers_exactly_on_postgres() {
    let Some(url) = pg_schema_url().await else { return };
    tokio::task::spawn_blocking(move || check_backend(&url)).await.expect("join");
}
