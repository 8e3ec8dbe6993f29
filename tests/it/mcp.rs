//! `costledger mcp` driven by a real MCP client: the official Python SDK (PyPI `mcp`, in the
//! venv `.ci/run` makes; COSTLEDGER_TEST_MCP_PYTHON names its python). It lists the tools and
//! resources, calls every tool, and checks the answers against `costledger query` to the digit,
//! on SQLite and (when COSTLEDGER_TEST_POSTGRES_URL is set) PostgreSQL.

use std::io::Write;
use std::process::Stdio;

use crate::common::serve::{BUDGET, QUESTIONS, config, fill};
use crate::common::*;
use serde_json::{Value, json};

const PY_ENV: &str = "COSTLEDGER_TEST_MCP_PYTHON";

/// The python with the `mcp` SDK; `None` (skip) when the variable is not set.
fn python() -> Option<String> {
    match std::env::var(PY_ENV) {
        Ok(p) if !p.is_empty() => Some(p),
        _ => {
            eprintln!("skipped: {PY_ENV} is not set (a python with PyPI `mcp`; .ci/run sets it)");
            None
        }
    }
}

/// The CLI arguments of a question as `query_costs` arguments.
fn mcp_arguments(cli: &[&str]) -> Value {
    let mut o = serde_json::Map::new();
    let mut it = cli.iter();
    let list = |v: &str| Value::from(v.split(',').map(String::from).collect::<Vec<_>>());
    while let Some(flag) = it.next() {
        match *flag {
            "--by-billing-period" => {
                o.insert("by_billing_period".into(), Value::Bool(true));
            }
            f => {
                let v = it.next().expect("a value");
                let key = f.trim_start_matches("--").replace('-', "_");
                match key.as_str() {
                    "group_by" | "metric" => {
                        o.insert(key, list(v));
                    }
                    "where" => {
                        let e = o.entry("where").or_insert_with(|| Value::Array(Vec::new()));
                        e.as_array_mut().expect("list").push(Value::from(*v));
                    }
                    "top" => {
                        o.insert(key, Value::from(v.parse::<u64>().expect("top")));
                    }
                    _ => {
                        o.insert(key, Value::from(*v));
                    }
                }
            }
        }
    }
    Value::Object(o)
}

/// Run the Python client against `costledger mcp` with `calls`; its JSON report.
fn session(py: &str, db: &str, cfg: &str, calls: &Value) -> Value {
    let client = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/mcp/client.py");
    let mut child = std::process::Command::new(py)
        .arg(client)
        .arg(env!("CARGO_BIN_EXE_costledger"))
        .args(["--database", db, "--config", cfg, "mcp"])
        .env_remove("COSTLEDGER_DATABASE_URL")
        .env("RUST_LOG", "warn")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the MCP client");
    child.stdin.take().expect("stdin").write_all(calls.to_string().as_bytes()).expect("calls");
    let out = child.wait_with_output().expect("client");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "the MCP client failed: {stderr}");
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("client output: {e}: {stderr}"))
}

fn check_backend(py: &str, db: &str) {
    let dir = tempfile::tempdir().expect("tmp");
    let cfg = config(dir.path(), "127.0.0.1:9", BUDGET);
    fill(db, &cfg);
    let c = cfg.to_str().expect("p");
    let mut calls: Vec<Value> = QUESTIONS.iter().map(|(cli, _)| json!(["query_costs", mcp_arguments(cli)])).collect();
    let n = calls.len();
    calls.extend([
        json!(["list_dimensions", {}]),
        json!(["dimension_values", {"name": "tag:Squad"}]),
        json!(["top_unallocated", {"period": "2026-10"}]),
        json!(["list_findings", {}]),
        json!(["billing_periods", {}]),
        json!(["list_sources", {}]),
        json!(["query_costs", {"group_by": ["colour"]}]),
        json!(["query_costs", {"colour": "red"}]),
        json!(["query_costs", {"currency": "JPY"}]),
        json!(["list_findings", {"period": "2026"}]),
        json!(["explain_change", {"from": "2026-10", "to": "2026-11", "by": ["owner", "service"], "currency": "USD"}]),
        json!(["explain_change", {"from": "2026-10"}]),
        json!(["explain_change", {"from": "2026-10", "to": "2026-W45"}]),
        json!(["commitment_utilisation", {"by": ["owner"], "grain": "month"}]),
        json!(["budgets", {"as_of": "2026-11-04"}]),
        json!(["budgets", {"as_of": "tomorrow"}]),
        json!(["unit_costs", {"per": "requests", "per_unit": "1000", "group_by": ["owner"], "grain": "month"}]),
    ]);
    let report = session(py, db, c, &Value::from(calls));

    assert_eq!(report["initialize"]["serverInfo"]["name"], "costledger");
    let names: Vec<&str> =
        report["tools"].as_array().expect("tools").iter().filter_map(|t| t["name"].as_str()).collect();
    assert_eq!(
        names,
        [
            "query_costs",
            "explain_change",
            "commitment_utilisation",
            "budgets",
            "unit_costs",
            "list_dimensions",
            "dimension_values",
            "top_unallocated",
            "list_findings",
            "billing_periods",
            "list_sources"
        ]
    );
    for t in report["tools"].as_array().expect("tools") {
        assert_eq!(t["annotations"]["readOnlyHint"], true, "{t}");
        assert_eq!(t["inputSchema"]["type"], "object", "{t}");
    }
    let texts = &report["resource_texts"];
    assert!(texts["costledger://dimensions"][0].as_str().expect("text").contains("`sub_account` (SubAccountId)"));
    assert!(texts["costledger://metrics"][0].as_str().expect("text").contains("`EffectiveCost`"));

    let results = report["results"].as_array().expect("results");
    // Every question: the structured answer is the CLI's JSON, to the digit.
    for ((cli, _), r) in QUESTIONS.iter().zip(results) {
        let mut all = vec!["--config", c, "query", "--format", "json"];
        all.extend_from_slice(cli);
        let (code, out, err) = run(db, &all);
        assert_eq!(code, 0, "{err}");
        let want: Value = serde_json::from_str(&out).expect("CLI JSON");
        assert_eq!(r["isError"], false, "{cli:?}: {r}");
        assert_eq!(r["structuredContent"], want, "MCP ≠ CLI for {cli:?}");
        let summary = r["content"][0]["text"].as_str().expect("summary");
        assert!(summary.contains("currency: ") && summary.contains("Amounts are exact"), "{summary}");
    }
    let rest = &results[n..];
    // The summary names the currency, the range and the exact totals.
    let first = results[0]["content"][0]["text"].as_str().expect("text");
    assert!(first.contains("all dates") && first.contains("USD: BilledCost 16.378456889"), "{first}");
    let dims = &rest[0]["structuredContent"];
    assert_eq!(dims["dimensions"][0]["name"], "provider");
    assert_eq!(dims["metrics"][0]["name"], "BilledCost");
    assert_eq!(
        rest[1]["structuredContent"]["items"],
        json!([{"value": "data", "lines": 1}, {"value": "payments", "lines": 3}, {"value": "search", "lines": 1}, {"value": null, "lines": 1}])
    );
    let unalloc = rest[2]["structuredContent"]["items"].as_array().expect("rows");
    assert_eq!(unalloc.len(), 1, "{unalloc:?}");
    assert_eq!(unalloc[0]["amount"], "-2.25");
    assert_eq!(unalloc[0]["currency"], "USD");
    assert_eq!(unalloc[0]["reason"], "untaggable_charge");
    assert!(unalloc[0]["remedy"].as_str().is_some_and(|r| !r.is_empty()));
    let findings = rest[3]["structuredContent"]["items"].as_array().expect("findings");
    assert!(
        findings.iter().any(|f| f["check"] == "invoice" && f["period"] == "2026-10" && f["amount"] == "-0.99"),
        "the invoice difference, exact: {findings:?}"
    );
    let periods = rest[4]["structuredContent"]["items"].as_array().expect("periods");
    let oct = periods.iter().find(|p| p["period"] == "2026-10").expect("2026-10");
    assert_eq!(oct["totals"]["USD"], "9.2550001");
    assert_eq!(oct["totals"]["EUR"], "100");
    let sources = rest[5]["structuredContent"]["items"].as_array().expect("sources");
    assert_eq!(sources[0]["name"], "bill");
    assert_eq!(sources[0]["data_end"], "2026-11-03T01:00:00Z");
    // Bad arguments: a tool error the assistant can read, naming what is wrong.
    let err = |r: &Value| {
        assert_eq!(r["isError"], true, "{r}");
        r["content"][0]["text"].as_str().expect("message").to_string()
    };
    assert!(err(&rest[6]).contains("unknown dimension 'colour'"));
    assert!(err(&rest[7]).contains("unknown argument 'colour'"));
    assert!(err(&rest[8]).contains("no exchange rate from EUR to JPY for 2026-10"));
    assert!(err(&rest[9]).contains("bad period '2026'"));
    // explain_change: the CLI's answer, with the drivers in the summary.
    let (code, out, e) = run(
        db,
        &[
            "--config",
            c,
            "explain",
            "--from",
            "2026-10",
            "--to",
            "2026-11",
            "--by",
            "owner,service",
            "--currency",
            "USD",
            "--format",
            "json",
        ],
    );
    assert_eq!(code, 0, "{e}");
    let want: Value = serde_json::from_str(&out).expect("CLI JSON");
    assert_eq!(rest[10]["isError"], false, "{}", rest[10]);
    assert_eq!(rest[10]["structuredContent"], want, "MCP ≠ CLI for explain");
    let summary = rest[10]["content"][0]["text"].as_str().expect("summary");
    assert!(
        summary.contains("BilledCost from 2026-10 to 2026-11 by owner, service") && summary.contains("Top drivers: "),
        "{summary}"
    );
    assert!(err(&rest[11]).contains("'to' is required"));
    assert!(err(&rest[12]).contains("compare periods of the same kind"));
    let (code, out, e) =
        run(db, &["--config", c, "commitments", "--by", "owner", "--grain", "month", "--format", "json"]);
    assert_eq!(code, 0, "{e}");
    let want: Value = serde_json::from_str(&out).expect("CLI JSON");
    assert_eq!(rest[13]["structuredContent"], want, "MCP ≠ CLI for commitments");
    let summary = rest[13]["content"][0]["text"].as_str().expect("summary");
    assert!(summary.contains("(ContractedCost basis); below 80% utilisation: none."), "{summary}");
    // budgets: the CLI's JSON (the config has none: an empty list, said so).
    let (_, out, _) = run(db, &["--config", c, "budgets", "--as-of", "2026-11-04", "--format", "json"]);
    let want: Value = serde_json::from_str(&out).expect("CLI JSON");
    assert_eq!(rest[14]["structuredContent"]["items"], want, "MCP ≠ CLI for budgets");
    // November to 2026-11-03 holds one AWS line: 7.123456789 USD of the 100 budgeted.
    assert_eq!(want[0]["actual"], "7.123456789");
    assert_eq!(want[0]["actual_percent"], "7.12");
    assert!(rest[14]["content"][0]["text"].as_str().is_some_and(|t| t.starts_with("1 budgets as of 2026-11-04")));
    assert!(err(&rest[15]).contains("bad date 'tomorrow' for as_of"));
    let (_, out, _) = run(
        db,
        &[
            "--config",
            c,
            "query",
            "--group-by",
            "owner",
            "--grain",
            "month",
            "--per",
            "requests",
            "--per-unit",
            "1000",
            "--format",
            "json",
        ],
    );
    let want: Value = serde_json::from_str(&out).expect("CLI JSON");
    assert_eq!(rest[16]["structuredContent"], want, "MCP ≠ CLI for unit costs");
}

#[test]
fn an_mcp_client_gets_the_cli_answers_on_sqlite() {
    let Some(py) = python() else { return };
    let dir = tempfile::tempdir().expect("tmp");
    check_backend(&py, &sqlite_url(dir.path()));
}

#[tokio::test]
async fn an_mcp_client_gets_the_cli_answers_on_postgres() {
    let Some(py) = python() else { return };
    let Some(url) = pg_schema_url().await else { return };
    tokio::task::spawn_blocking(move || check_backend(&py, &url)).await.expect("join");
}
