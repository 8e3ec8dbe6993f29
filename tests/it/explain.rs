//! `costledger explain` end to end on real SQLite (and PostgreSQL when
//! COSTLEDGER_TEST_POSTGRES_URL is set): a hand-built bill whose decomposition is known by
//! construction (a volume and a rate change with a mix effect, a credit, a new and a gone
//! service, a currency move), exact in every format, equal to `query`'s totals, and the errors
//! bad input gets.

use crate::common::*;
use serde_json::Value;

fn setup(db: &str) -> String {
    let cfg = fixture("query/config.yaml").display().to_string();
    let charges = fixture("explain/charges.csv").display().to_string();
    let (code, _, err) = run(db, &["--config", &cfg, "import", "--format", "focus", "--source", "bill", &charges]);
    assert_eq!(code, 0, "import: {err}");
    let (code, _, err) = run(db, &["fx", "import", &fixture("explain/fx.csv").display().to_string()]);
    assert_eq!(code, 0, "fx import: {err}");
    cfg
}

fn cli(db: &str, cfg: &str, cmd: &str, args: &[&str]) -> String {
    let mut all = vec!["--config", cfg, cmd];
    all.extend_from_slice(args);
    let (code, out, err) = run(db, &all);
    assert_eq!(code, 0, "{cmd} {args:?}: {err}");
    out
}

fn check_backend(db: &str) {
    let cfg = setup(db);
    let months = ["--from", "2026-10", "--to", "2026-11"];
    let explain = |args: &[&str]| {
        let mut all = months.to_vec();
        all.extend_from_slice(args);
        cli(db, &cfg, "explain", &all)
    };

    // By service (the default): EC2 150 → 180 hours (+20%) at 0.1333 → volume 4.00; m5.xlarge
    // 10 → 11 for the same 50 hours → rate 1; the growth was in the cheaper SKU → mix −1;
    // credits −1 → −3 → no quantity −2. RDS gone, Lambda new, S3 unchanged, EUR unchanged.
    assert_eq!(
        explain(&["--format", "csv"]),
        "service,currency,before,after,change,change_percent,volume,rate,mix,new,gone,no_quantity,fx,allocation\r\n\
         Virtual Machines,EUR,100,100,0,0.00,0,0,0,0,0,0,0,0\r\n\
         Amazon RDS,USD,7,0,-7,-100.00,0,0,0,0,7,0,0,0\r\n\
         Amazon EC2,USD,19,21,2,10.53,4,1,-1,0,0,-2,0,0\r\n\
         AWS Lambda,USD,0,0.2,0.2,,0,0,0,0.2,0,0,0,0\r\n\
         Amazon S3,USD,23,23,0,0.00,0,0,0,0,0,0,0,0\r\n"
    );

    // Converted to USD: the EUR service's change is all FX (100 × 1.08 → 100 × 1.10).
    let json = explain(&["--currency", "usd", "--format", "json"]);
    let v: Value = serde_json::from_str(&json).expect("json");
    let groups = v["groups"].as_array().expect("groups");
    let vm = groups.iter().find(|g| g["keys"][0] == "Virtual Machines").expect("VM");
    assert_eq!(
        (&vm["before"], &vm["after"], &vm["change"]),
        (&Value::from("108"), &Value::from("110"), &Value::from("2"))
    );
    assert_eq!(vm["parts"]["fx"], "2");
    assert_eq!(vm["parts"]["volume"], "0");
    assert_eq!(v["totals"][0]["currency"], "USD");
    assert_eq!(v["totals"][0]["before"], "157");
    assert_eq!(v["totals"][0]["after"], "154.2");
    assert_eq!(v["rates_used"].as_array().map(Vec::len), Some(2), "{json}");
    let ec2 = groups.iter().find(|g| g["keys"][0] == "Amazon EC2").expect("EC2");
    assert_eq!(
        ec2["sentence"],
        "Amazon EC2: +2.00 USD (19.00 → 21.00), of which volume +4.00 (+20.00% Hours), rate +1.00, mix −1.00, \
         no quantity −2.00"
    );
    assert_eq!(ec2["quantity"]["before"], "150");

    // The two periods' totals are what `query` says of each month.
    for (month, key) in [("2026-10", "before"), ("2026-11", "after")] {
        let q = cli(db, &cfg, "query", &["--from", month, "--to", month, "--currency", "USD", "--format", "json"]);
        let q: Value = serde_json::from_str(&q).expect("json");
        assert_eq!(q["totals"][0]["values"][0], v["totals"][0][key], "{month}");
    }

    // By owner (the allocator's tag rule): search lost RDS and gained Lambda.
    assert_eq!(
        explain(&["--by", "owner", "--where", "provider=AWS", "--format", "csv"]),
        "owner,currency,before,after,change,change_percent,volume,rate,mix,new,gone,no_quantity,fx,allocation\r\n\
         search,USD,30,23.2,-6.8,-22.67,0,0,0,0.2,7,0,0,0\r\n\
         payments,USD,19,21,2,10.53,4,1,-1,0,0,-2,0,0\r\n"
    );
    // Top 1: the rest in one exact (others) row.
    assert_eq!(
        explain(&["--by", "service", "--where", "provider=AWS", "--top", "1", "--format", "csv"]),
        "service,currency,before,after,change,change_percent,volume,rate,mix,new,gone,no_quantity,fx,allocation\r\n\
         Amazon RDS,USD,7,0,-7,-100.00,0,0,0,0,7,0,0,0\r\n\
         (others),USD,42,44.2,2.2,5.24,4,1,-1,0.2,0,-2,0,0\r\n"
    );
    // The table ends with the top drivers as sentences.
    let table = explain(&["--where", "provider=AWS", "--format", "table"]);
    assert!(table.contains("Top drivers:\n- Amazon RDS: −7.00 USD (7.00 → 0.00), of which gone −7.00\n"), "{table}");

    // The rules change after week 2026-W41 was reconciled: RDS now goes to data. By owner,
    // search's W41 baseline is what the reconcile stored (30); today's rules moved 7 to data.
    let (code, _, err) = run(db, &["--config", &cfg, "reconcile"]);
    assert!(code == 0 || code == 1, "{err}");
    let dir = tempfile::tempdir().expect("tmp");
    let r2 = dir.path().join("r2.yaml");
    let base = std::fs::read_to_string(&cfg).expect("config");
    std::fs::write(
        &r2,
        base.replace(
            "allocation:\n",
            "allocation:\n  rules:\n    - { name: rds-to-data, match: { service: \"Amazon RDS\" }, owner: data }\n",
        ),
    )
    .expect("write");
    let r2 = r2.to_str().expect("utf8");
    assert_eq!(
        cli(db, r2, "explain", &["--from", "2026-W41", "--to", "2026-W45", "--by", "owner", "--format", "csv"]),
        "owner,currency,before,after,change,change_percent,volume,rate,mix,new,gone,no_quantity,fx,allocation\r\n\
         data,EUR,100,100,0,0.00,0,0,0,0,0,0,0,0\r\n\
         search,USD,30,23.2,-6.8,-22.67,0,0,0,0.2,0,0,0,-7\r\n\
         payments,USD,19,21,2,10.53,4,1,-1,0,0,-2,0,0\r\n\
         data,USD,0,0,0,,0,0,0,0,7,0,0,7\r\n"
    );
    // Under the rules the reconcile used there is nothing to move.
    let same =
        cli(db, &cfg, "explain", &["--from", "2026-W41", "--to", "2026-W45", "--by", "owner", "--format", "json"]);
    let v: Value = serde_json::from_str(&same).expect("json");
    assert!(v["groups"].as_array().expect("groups").iter().all(|g| g["parts"]["allocation"] == "0"), "{same}");

    // Bad input: what is wrong and what to use; exit 2.
    for (args, want) in [
        (&["--from", "2026-10", "--to", "2026-W45"][..], "--from 2026-10 is a month and --to 2026-W45 a ISO week"),
        (&["--from", "2026-11", "--to", "2026-10"][..], "must end before --to 2026-10 starts"),
        (&["--from", "October", "--to", "2026-11"][..], "bad period 'October' for --from"),
        (&["--from", "2026-10", "--to", "2026-11", "--metric", "PricingQuantity"][..], "is not a cost"),
        (&["--from", "2026-10", "--to", "2026-11", "--by", "colour"][..], "unknown dimension 'colour'"),
        (
            &["--from", "2026-10", "--to", "2026-11", "--currency", "GBP"][..],
            "no exchange rate from EUR to GBP for 2026-10",
        ),
        (
            &["--from", "2026-11-01..2026-11-07", "--to", "2026-11-08..2026-11-10"][..],
            "a range of 7 days and --to 2026-11-08..2026-11-10 a range of 3 days",
        ),
    ] {
        let mut all = vec!["--config", cfg.as_str(), "explain"];
        all.extend_from_slice(args);
        let (code, out, err) = run(db, &all);
        assert_eq!(code, 2, "{args:?} should fail: {out}");
        assert!(err.contains(want), "{args:?}: {err}");
    }
}

#[test]
fn explain_decomposes_exactly_on_sqlite() {
    let dir = tempfile::tempdir().expect("tempdir");
    check_backend(&sqlite_url(dir.path()));
}

#[tokio::test]
async fn explain_decomposes_exactly_on_postgres() {
    let Some(url) = pg_schema_url().await else { return };
    tokio::task::spawn_blocking(move || check_backend(&url)).await.expect("join");
}
