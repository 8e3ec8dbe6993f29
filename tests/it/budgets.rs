//! Budgets end to end on real SQLite (and PostgreSQL when COSTLEDGER_TEST_POSTGRES_URL is set):
//! 41 days of a known daily cost (weekdays 10, weekends 2) and one 500 spike, two budgets whose
//! actuals and weekday-seasonal forecasts are computed independently (Python `Decimal`, the
//! numbers below), the findings a reconcile stores, the report's section, and bad config.

use crate::common::*;

fn cli(db: &str, cfg: &str, args: &[&str]) -> (i32, String, String) {
    let mut all = vec!["--config", cfg];
    all.extend_from_slice(args);
    run(db, &all)
}

fn check_backend(db: &str) {
    let cfg = fixture("budgets/config.yaml").display().to_string();
    let charges = fixture("budgets/charges.csv").display().to_string();
    let (code, _, err) = cli(db, &cfg, &["import", "--format", "focus", "--source", "bill", &charges]);
    assert_eq!(code, 0, "import: {err}");

    // As of the day after the last day with data (2026-11-11): November to date 76, the rest
    // of November at each weekday's mean of its last 4 → 228 (91.20% of 250: the 80% threshold
    // is forecast); the quarter 814 to date (the 500 spike on a Thursday lifts every Thursday
    // to 135) → 2212 (110.60%).
    let (code, out, err) = cli(db, &cfg, &["budgets", "--format", "csv"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        out,
        "budget,period,as_of,currency,amount,actual,actual_percent,forecast,forecast_percent,method,threshold_reached,threshold_forecast\r\n\
         payments-monthly,2026-11,2026-11-11,USD,250,76,30.40,228,91.20,weekday_seasonality,,80\r\n\
         all-quarter,2026-Q4,2026-11-11,USD,2000,814,40.70,2212,110.60,weekday_seasonality,,100\r\n"
    );
    // An earlier day: fewer actuals, the same month-end forecast for payments.
    let (_, out, _) = cli(db, &cfg, &["budgets", "--as-of", "2026-11-09", "--format", "json"]);
    let v: serde_json::Value = serde_json::from_str(&out).expect("json");
    assert_eq!((v[0]["actual"].as_str(), v[0]["forecast"].as_str()), (Some("56"), Some("228")));
    assert_eq!(v[0]["actual_percent"], "22.40");

    // Reconcile stores a finding per budget that reached a threshold (exit 1: needs attention).
    let (code, _, err) = cli(db, &cfg, &["reconcile"]);
    assert_eq!(code, 1, "{err}");
    let (_, out, _) = cli(db, &cfg, &["findings", "--period", "2026-11"]);
    assert!(
        out.contains(
            "budget payments-monthly (250 USD for 2026-11): actual 76.00 USD is 30.40% of it; forecast 228.00 USD by \
             2026-11-30 is 91.20% (threshold 80% forecast)"
        ),
        "{out}"
    );
    assert!(out.contains("budget all-quarter (2000 USD for 2026-Q4)"), "{out}");

    // A budget in another currency without an exchange rate: `budgets` says so (exit 2), and
    // reconcile records it as a finding instead of failing.
    let eur = dir_with_eur_budget(&cfg);
    let eur_cfg = eur.path().join("eur.yaml").to_str().expect("utf8").to_string();
    let (code, _, err) = cli(db, &eur_cfg, &["budgets"]);
    assert_eq!(code, 2);
    assert!(err.contains("budget 'eur': no exchange rate from USD to EUR for 2026-10"), "{err}");
    let (code, _, err) = cli(db, &eur_cfg, &["reconcile"]);
    assert_eq!(code, 1, "{err}");
    let (_, out, _) = cli(db, &eur_cfg, &["findings", "--period", "2026-11"]);
    assert!(out.contains("cannot be evaluated: budget 'eur': no exchange rate from USD to EUR"), "{out}");

    // The weekly report shows each budget as of the end of its week.
    let dir = tempfile::tempdir().expect("tmp");
    let d = dir.path().to_str().expect("utf8");
    let (code, _, err) = cli(db, &cfg, &["report", "weekly", "--week", "2026-W45", "--out", d, "--format", "md"]);
    assert_eq!(code, 0, "{err}");
    let md = std::fs::read_to_string(dir.path().join("weekly-2026-W45.md")).expect("md");
    assert!(
        md.contains("| payments-monthly | 2026-11 | USD | 250.00 | 56.00 | 22.40% | 228.00 | 91.20% | 80% forecast |"),
        "{md}"
    );
}

/// The budgets config plus a EUR budget (no USD→EUR rate is imported).
fn dir_with_eur_budget(cfg: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tmp");
    let base = std::fs::read_to_string(cfg).expect("config");
    std::fs::write(dir.path().join("eur.yaml"), format!("{base}  - {{ name: eur, amount: \"10\", currency: EUR }}\n"))
        .expect("write");
    dir
}

#[test]
fn budgets_forecast_exactly_on_sqlite() {
    let dir = tempfile::tempdir().expect("tempdir");
    check_backend(&sqlite_url(dir.path()));
}

#[tokio::test]
async fn budgets_forecast_exactly_on_postgres() {
    let Some(url) = pg_schema_url().await else { return };
    tokio::task::spawn_blocking(move || check_backend(&url)).await.expect("join");
}

#[test]
fn bad_budgets_are_named_in_the_config_check() {
    let dir = tempfile::tempdir().expect("tmp");
    let cfg = dir.path().join("c.yaml");
    std::fs::write(
        &cfg,
        "budgets:\n  - name: a\n    amount: -5\n    currency: dollars\n    period: week\n    scope: [\"colour=red\"]\n    \
         thresholds: [0]\n    metric: lines\n  - name: a\n    amount: \"1\"\n    currency: USD\nreport: { metric: Price }\n",
    )
    .expect("write");
    let (code, _, err) = run(&sqlite_url(dir.path()), &["--config", cfg.to_str().expect("utf8"), "check-config"]);
    assert_eq!(code, 2, "{err}");
    for want in [
        "budgets[0].amount: must be a number above 0",
        "budgets[0].currency: 'dollars' is not an ISO 4217 currency code",
        "budgets[0].period: 'week' is not month or quarter",
        "budgets[0].scope[0]: unknown dimension 'colour'",
        "budgets[0].thresholds[0]: must be a percentage above 0",
        "budgets[0].metric: 'lines' is not BilledCost",
        "budgets[1].name: 'a' is used by an earlier budget",
        "report.metric: 'Price' is not BilledCost, EffectiveCost",
    ] {
        assert!(err.contains(want), "{want}: {err}");
    }
}
