//! Unit costs end to end on real SQLite (and PostgreSQL when COSTLEDGER_TEST_POSTGRES_URL is
//! set): business metrics imported all or nothing, cost per 1,000 requests per owner and week
//! (exact numerator and denominator, the stated rounding), errors, and the report's table.

use crate::common::*;

fn cli(db: &str, cfg: &str, args: &[&str]) -> (i32, String, String) {
    let mut all = vec!["--config", cfg];
    all.extend_from_slice(args);
    run(db, &all)
}

fn check_backend(db: &str) {
    let dir = tempfile::tempdir().expect("tmp");
    let base = std::fs::read_to_string(fixture("query/config.yaml")).expect("config");
    let cfg_path = dir.path().join("c.yaml");
    std::fs::write(
        &cfg_path,
        format!("{base}report: {{ unit_costs: [{{ metric: requests, per: 1000, by: [owner], places: 4 }}] }}\n"),
    )
    .expect("write");
    let cfg = cfg_path.to_str().expect("utf8").to_string();
    let charges = fixture("budgets/charges.csv").display().to_string();
    let (code, _, err) = cli(db, &cfg, &["import", "--format", "focus", "--source", "bill", &charges]);
    assert_eq!(code, 0, "import: {err}");

    // A bad file: every problem named, nothing stored.
    let (code, _, err) = cli(db, &cfg, &["metrics", "import", &fixture("unit_costs/bad.csv").display().to_string()]);
    assert_eq!(code, 2);
    for want in [
        "4 problem(s); nothing was stored",
        "line 3: date '2026-13-01' is not YYYY-MM-DD",
        "line 4: value '-1' must be a decimal number of at least 0",
        "line 5: the same metric, date, owner and dimensions as line 2",
        "line 6: the metric name is empty",
    ] {
        assert!(err.contains(want), "{want}: {err}");
    }
    let (_, out, _) = cli(db, &cfg, &["metrics", "list"]);
    assert_eq!(out, "");
    let (code, _, err) = cli(db, &cfg, &["query", "--group-by", "owner", "--per", "requests", "--format", "csv"]);
    assert_eq!(code, 2);
    assert!(
        err.contains("no business metric 'requests' is stored: import one with `costledger metrics import FILE`"),
        "{err}"
    );

    // 7 days × 100,000 requests for payments in 2026-W45, whose cost that week is 54.
    let (code, out, err) =
        cli(db, &cfg, &["metrics", "import", &fixture("unit_costs/requests.csv").display().to_string()]);
    assert_eq!(code, 0, "{err}");
    assert!(out.starts_with("stored 7 business metric value(s)"), "{out}");
    let week = ["--from", "2026-W45", "--to", "2026-W45"];
    let mut args = vec!["query", "--group-by", "owner", "--grain", "week", "--per", "requests", "--per-unit", "1000"];
    args.extend_from_slice(&week);
    args.extend_from_slice(&["--format", "csv"]);
    let (code, out, err) = cli(db, &cfg, &args);
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        out,
        "owner,week,currency,BilledCost,requests,BilledCost per 1000 requests\r\npayments,2026-W45,USD,54,700000,0.0771\r\n"
    );
    // A week without requests has no unit cost, never a division by zero or a zero.
    let (_, out, _) = cli(
        db,
        &cfg,
        &[
            "query",
            "--group-by",
            "owner",
            "--grain",
            "week",
            "--per",
            "requests",
            "--from",
            "2026-W44",
            "--to",
            "2026-W44",
            "--format",
            "json",
        ],
    );
    let v: serde_json::Value = serde_json::from_str(&out).expect("json");
    assert_eq!(v["rows"][0]["cost"], "54");
    assert_eq!(v["rows"][0]["quantity"], serde_json::Value::Null);
    assert_eq!(v["rows"][0]["unit_cost"], serde_json::Value::Null);
    // Grouped by a dimension the metric file does not have.
    let (code, _, err) = cli(db, &cfg, &["query", "--group-by", "service", "--per", "requests"]);
    assert_eq!(code, 2);
    assert!(err.contains("business metric 'requests' has no service on every value"), "{err}");

    // The weekly report shows the configured unit cost.
    let out_dir = dir.path().join("reports");
    let d = out_dir.to_str().expect("utf8");
    let (code, _, err) = cli(db, &cfg, &["report", "weekly", "--week", "2026-W45", "--out", d, "--format", "md"]);
    assert_eq!(code, 0, "{err}");
    let md = std::fs::read_to_string(out_dir.join("weekly-2026-W45.md")).expect("md");
    assert!(md.contains("## Unit cost: BilledCost per 1000 requests"), "{md}");
    assert!(md.contains("| payments | USD | 54.00 | 700000 | 0.0771 |"), "{md}");
}

#[test]
fn unit_costs_are_exact_on_sqlite() {
    let dir = tempfile::tempdir().expect("tempdir");
    check_backend(&sqlite_url(dir.path()));
}

#[tokio::test]
async fn unit_costs_are_exact_on_postgres() {
    let Some(url) = pg_schema_url().await else { return };
    tokio::task::spawn_blocking(move || check_backend(&url)).await.expect("join");
}
