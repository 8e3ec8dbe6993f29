//! `costledger commitments` end to end on real SQLite (and PostgreSQL when
//! COSTLEDGER_TEST_POSTGRES_URL is set): a FOCUS bill with a reservation (60% used), a savings
//! plan (90.005% used, rounded half-to-even) and on-demand usage, whose utilisation and coverage
//! are known by construction; the commitment dimensions in `query`; the weekly report's section.

use crate::common::*;
use serde_json::Value;

fn cli(db: &str, cfg: &str, args: &[&str]) -> (i32, String, String) {
    let mut all = vec!["--config", cfg];
    all.extend_from_slice(args);
    run(db, &all)
}

fn check_backend(db: &str) {
    let cfg = fixture("query/config.yaml").display().to_string();
    let charges = fixture("commitments/charges.csv").display().to_string();
    let (code, _, err) = cli(db, &cfg, &["import", "--format", "focus", "--source", "bill", &charges]);
    assert_eq!(code, 0, "import: {err}");

    // Utilisation: the least used first; the purchase line is not usage.
    let (code, out, err) = cli(db, &cfg, &["commitments", "--from", "2026-10", "--to", "2026-10", "--format", "csv"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        out,
        "commitment,commitment_type,commitment_category,currency,used,unused,utilisation_percent,below_minimum\r\n\
         ri-1,Reserved Instance,Usage,USD,60,40,60.00,true\r\n\
         sp-1,Compute Savings Plan,Spend,USD,90.005,9.995,90.00,false\r\n"
    );
    assert!(err.contains("1 commitment(s) below 80% utilisation"), "{err}");

    // Coverage on ContractedCost: EC2 100 of 150, Lambda all, RDS none; unused lines are not usage.
    let (code, out, err) = cli(db, &cfg, &["commitments", "--view", "coverage", "--format", "csv"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        out,
        "service,currency,covered,eligible,coverage_percent\r\n\
         Amazon EC2,USD,100,150,66.67\r\n\
         AWS Lambda,USD,120,120,100.00\r\n\
         Amazon RDS,USD,0,30,0.00\r\n"
    );
    // On ListCost, by owner: payments 250 of 250, search 0 of 95.
    let (_, out, _) = cli(
        db,
        &cfg,
        &["commitments", "--view", "coverage", "--by", "owner", "--basis", "ListCost", "--format", "json"],
    );
    let v: Value = serde_json::from_str(&out).expect("json");
    assert_eq!(v["basis"], "ListCost");
    let rows: Vec<(String, String, String)> = v["coverage"]
        .as_array()
        .expect("rows")
        .iter()
        .map(|r| (r["keys"][0].to_string(), r["covered"].to_string(), r["eligible"].to_string()))
        .collect();
    assert_eq!(
        rows,
        vec![
            ("\"payments\"".into(), "\"250\"".into(), "\"250\"".into()),
            ("\"search\"".into(), "\"0\"".into(), "\"95\"".into())
        ]
    );
    assert_eq!(v["utilisation"][0]["utilisation_percent"], "60.00");

    // The commitment dimensions in `query`: EffectiveCost by commitment and status.
    let (code, out, err) = cli(
        db,
        &cfg,
        &["query", "--group-by", "commitment,commitment_status", "--metric", "EffectiveCost", "--format", "csv"],
    );
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        out,
        "commitment,commitment_status,currency,EffectiveCost\r\n\
         sp-1,Used,USD,90.005\r\n\
         ,,USD,80\r\n\
         ri-1,Used,USD,60\r\n\
         ri-1,Unused,USD,40\r\n\
         sp-1,Unused,USD,9.995\r\n\
         ri-1,,USD,0\r\n"
    );

    // The weekly report of that week has the commitments section.
    let out_dir = tempfile::tempdir().expect("tmp");
    let dir = out_dir.path().to_str().expect("utf8");
    // With `report.metric: EffectiveCost`, "why it changed" explains the amortised cost.
    let amortised = out_dir.path().join("amortised.yaml");
    let base = std::fs::read_to_string(&cfg).expect("config");
    std::fs::write(&amortised, format!("{base}report: {{ metric: EffectiveCost }}\n")).expect("write");
    let cfg = amortised.to_str().expect("utf8").to_string();
    let (code, _, err) = cli(db, &cfg, &["report", "weekly", "--week", "2026-W41", "--out", dir, "--format", "md"]);
    assert_eq!(code, 0, "{err}");
    let md = std::fs::read_to_string(out_dir.path().join("weekly-2026-W41.md")).expect("md");
    assert!(md.contains("## Commitment utilisation"), "{md}");
    assert!(md.contains("| ri-1 | Reserved Instance | USD | 60.00 | 40.00 | 60.00% | below minimum |"), "{md}");
    assert!(md.contains("| sp-1 | Compute Savings Plan | USD | 90.00 | 10.00 | 90.00% |  |"), "{md}");
    assert!(md.contains("| Amazon EC2 | USD | 100.00 | 150.00 | 66.67% |"), "{md}");
    // BilledCost and EffectiveCost side by side where they differ (EC2's purchase and its
    // amortised use are both 150: not listed).
    assert!(md.contains("## Billed and amortised cost by service"), "{md}");
    assert!(md.contains("| AWS Lambda | USD | 0.00 | 90.00 | 90.00 |"), "{md}");
    assert!(!md.contains("| Amazon EC2 | USD | 150.00 | 150.00 |"), "{md}");
    assert!(md.contains("by service (EffectiveCost, `report.metric`)"), "{md}");
    // The owners in EffectiveCost: payments' covered usage (60 + 90.005, shown half-even) is
    // amortised though billed 0; the unused shares (40 + 9.995) have no owner.
    assert!(md.contains("## Spend by owner (EffectiveCost, `report.metric`)"), "{md}");
    assert!(md.contains("| payments | USD | 150.00 | 0.00 | 150.00 | n/a |"), "{md}");
    assert!(md.contains("| (unallocated) | USD | 50.00 | 0.00 | 50.00 | n/a |"), "{md}");

    // `report weekly --metric` overrides report.metric (the base config has none).
    let base_cfg = fixture("query/config.yaml").display().to_string();
    let (code, _, err) = cli(
        db,
        &base_cfg,
        &["report", "weekly", "--week", "2026-W41", "--out", dir, "--format", "md", "--metric", "EffectiveCost"],
    );
    assert_eq!(code, 0, "{err}");
    let md = std::fs::read_to_string(out_dir.path().join("weekly-2026-W41.md")).expect("md");
    assert!(md.contains("## Spend by owner (EffectiveCost, `report.metric`)"), "{md}");
    let (code, _, err) = cli(db, &base_cfg, &["report", "weekly", "--week", "2026-W41", "--metric", "lines"]);
    assert_eq!(code, 2);
    assert!(err.contains("--metric lines: use BilledCost, EffectiveCost"), "{err}");

    // Bad input: exit 2 with what to use.
    let (code, _, err) = cli(db, &cfg, &["commitments", "--basis", "Price"]);
    assert_eq!(code, 2);
    assert!(err.contains("unknown basis 'Price': use ContractedCost (the default) or ListCost"), "{err}");
}

#[test]
fn commitments_are_exact_on_sqlite() {
    let dir = tempfile::tempdir().expect("tempdir");
    check_backend(&sqlite_url(dir.path()));
}

#[tokio::test]
async fn commitments_are_exact_on_postgres() {
    let Some(url) = pg_schema_url().await else { return };
    tokio::task::spawn_blocking(move || check_backend(&url)).await.expect("join");
}

/// An AWS CUR month (`aws/cur-commitments-2026-10.csv`): a reservation used 24 h of its month
/// (EffectiveCost 1.44) with its unused share on the RIFee line (18.00 + 25.20), a Savings Plan
/// that covered 0.192 of on-demand usage (EffectiveCost 0.138, unused 0.012 on its recurring fee)
/// and whose negation line cancels that usage's billed cost. Regressions: the unused shares were
/// left out (both showed 100%), the negation's −0.192 counted against eligible usage, and the
/// reservation's covered usage (billed 0) counted as nothing: coverage was 70.18% instead of
/// (2.592 + 0.192) ÷ (0.2736 + 2.592 + 0.192) = 91.05%, the reservation's 24 hours at their
/// on-demand 2.592 and the plan's 0.192 covered.
fn check_cur_commitments(db: &str) {
    let cfg = fixture("query/config.yaml").display().to_string();
    let cur = fixture("aws/cur-commitments-2026-10.csv").display().to_string();
    let (code, _, err) = cli(db, &cfg, &["import", "--format", "aws-cur", "--source", "cur", &cur]);
    assert_eq!(code, 0, "import: {err}");
    let (code, out, err) = cli(db, &cfg, &["commitments", "--format", "csv"]);
    assert_eq!(code, 0, "{err}");
    let ri = "arn:aws:ec2:eu-west-1:444455556666:reserved-instances/1f2e3d4c-0000-4000-8000-000000000001";
    let sp = "arn:aws:savingsplans::444455556666:savingsplan/5a6b7c8d-0000-4000-8000-000000000002";
    let up = "arn:aws:savingsplans::444455556666:savingsplan/9e8d7c6b-0000-4000-8000-000000000003";
    assert_eq!(
        out,
        format!(
            "commitment,commitment_type,commitment_category,currency,used,unused,utilisation_percent,below_minimum\r\n\
             {up},Savings Plan,Spend,USD,0,0,,false\r\n\
             {ri},Reserved Instance,Usage,USD,1.44,43.2,3.23,true\r\n\
             {sp},Savings Plan,Spend,USD,0.138,0.012,92.00,false\r\n"
        )
    );
    let (code, out, err) = cli(db, &cfg, &["commitments", "--view", "coverage", "--format", "csv"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        out,
        "service,currency,covered,eligible,coverage_percent\r\n\
         Amazon Elastic Compute Cloud,USD,2.784,3.0576,91.05\r\n"
    );
}

#[test]
fn a_cur_months_commitments_count_unused_shares_and_negations_once_on_sqlite() {
    let dir = tempfile::tempdir().expect("tempdir");
    check_cur_commitments(&sqlite_url(dir.path()));
}

#[tokio::test]
async fn a_cur_months_commitments_count_unused_shares_and_negations_once_on_postgres() {
    let Some(url) = pg_schema_url().await else { return };
    tokio::task::spawn_blocking(move || check_cur_commitments(&url)).await.expect("join");
}
