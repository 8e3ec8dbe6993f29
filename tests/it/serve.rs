//! The read API end to end: `costledger serve` on a real ledger (SQLite, and PostgreSQL when
//! COSTLEDGER_TEST_POSTGRES_URL is set) answers every question exactly as `costledger query`
//! does, demands its tokens without leaking them, names bad parameters, pages, and matches its
//! own OpenAPI document.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use crate::common::serve::{BUDGET, EXPLAIN_QUESTIONS, QUESTIONS, config, fill};
use crate::common::*;
use serde_json::Value;

const TOKEN: &str = "test-token-0123456789abcdef";

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port()
}

/// A tiny HTTP/1.1 client: (status, headers, body).
fn http(port: u16, path: &str, headers: &[(&str, &str)]) -> (u16, String, String) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(30))).expect("timeout");
    let mut req = format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).expect("send");
    let mut out = Vec::new();
    s.read_to_end(&mut out).expect("read");
    let out = String::from_utf8(out).expect("utf-8");
    let (head, body) = out.split_once("\r\n\r\n").expect("a response");
    let status = head.split(' ').nth(1).expect("status").parse().expect("status code");
    (status, head.to_string(), body.to_string())
}

fn auth() -> String {
    format!("Bearer {TOKEN}")
}

fn get_json(port: u16, path: &str) -> Value {
    let (status, _, body) = http(port, path, &[("Authorization", &auth())]);
    assert_eq!(status, 200, "{path}: {body}");
    serde_json::from_str(&body).expect("JSON")
}

struct Server {
    child: Child,
    port: u16,
    log: PathBuf,
}

impl Server {
    fn start(db: &str, cfg: &Path, dir: &Path, port: u16) -> Server {
        let log = dir.join(format!("serve-{port}.log"));
        let child = bin()
            .env("RUST_LOG", "info")
            .args(["--log-format", "json", "--database", db, "--config"])
            .arg(cfg)
            .arg("serve")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("log"))
            .spawn()
            .expect("spawn");
        let mut s = Server { child, port, log };
        let t0 = Instant::now();
        loop {
            if let Ok(mut c) = TcpStream::connect(("127.0.0.1", port)) {
                let _ = c.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
                let mut b = String::new();
                if c.read_to_string(&mut b).is_ok() && b.starts_with("HTTP/1.1 200") {
                    return s;
                }
            }
            if let Ok(Some(st)) = s.child.try_wait() {
                panic!("costledger serve exited ({st}): {}", s.log());
            }
            assert!(t0.elapsed() < Duration::from_secs(60), "serve did not come up: {}", s.log());
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn check_api_equals_cli(db: &str) {
    let dir = tempfile::tempdir().expect("tmp");
    let port = free_port();
    let cfg = config(dir.path(), &format!("127.0.0.1:{port}"), &format!("api: {{ tokens: [\"{TOKEN}\"] }}\n{BUDGET}"));
    fill(db, &cfg);
    let server = Server::start(db, &cfg, dir.path(), port);
    let c = cfg.to_str().expect("p");
    for (args, params) in QUESTIONS {
        let mut cli = vec!["--config", c, "query", "--format", "json"];
        cli.extend_from_slice(args);
        let (code, out, err) = run(db, &cli);
        assert_eq!(code, 0, "{args:?}: {err}");
        let want: Value = serde_json::from_str(&out).expect("CLI JSON");
        let mut got = get_json(port, &format!("/api/v1/costs?{params}"));
        let obj = got.as_object_mut().expect("object");
        assert_eq!(obj.remove("total_rows"), Some(Value::from(want["rows"].as_array().expect("rows").len())));
        assert_eq!(obj.remove("offset"), Some(Value::from(0)));
        assert_eq!(obj.remove("next_offset"), Some(Value::Null));
        assert_eq!(got, want, "API ≠ CLI for {args:?}");

        // The CSV download is the CLI's CSV, byte for byte.
        let mut cli = vec!["--config", c, "query", "--format", "csv"];
        cli.extend_from_slice(args);
        let (_, csv, _) = run(db, &cli);
        let sep = if params.is_empty() { "" } else { "&" };
        let (status, head, body) =
            http(port, &format!("/api/v1/costs?{params}{sep}format=csv"), &[("Authorization", &auth())]);
        assert_eq!(status, 200);
        assert!(head.to_ascii_lowercase().contains("content-type: text/csv"), "{head}");
        assert_eq!(body, csv, "CSV for {args:?}");
    }
    // Explain: the API's JSON is the CLI's, its CSV the CLI's bytes.
    for (args, params) in EXPLAIN_QUESTIONS {
        let mut cli = vec!["--config", c, "explain", "--format", "json"];
        cli.extend_from_slice(args);
        let (code, out, err) = run(db, &cli);
        assert_eq!(code, 0, "{args:?}: {err}");
        let want: Value = serde_json::from_str(&out).expect("CLI JSON");
        assert_eq!(get_json(port, &format!("/api/v1/explain?{params}")), want, "API ≠ CLI for {args:?}");
        let mut cli = vec!["--config", c, "explain", "--format", "csv"];
        cli.extend_from_slice(args);
        let (_, csv, _) = run(db, &cli);
        let (status, _, body) =
            http(port, &format!("/api/v1/explain?{params}&format=csv"), &[("Authorization", &auth())]);
        assert_eq!((status, body), (200, csv), "CSV for {args:?}");
    }
    // Unit costs: the API's JSON is the CLI's, its CSV the CLI's bytes.
    let uc = ["query", "--group-by", "owner", "--grain", "month", "--per", "requests", "--per-unit", "1000"];
    let mut cli = vec!["--config", c];
    cli.extend_from_slice(&uc);
    cli.extend_from_slice(&["--format", "json"]);
    let (code, out, err) = run(db, &cli);
    assert_eq!(code, 0, "{err}");
    let want: Value = serde_json::from_str(&out).expect("CLI JSON");
    let params = "group_by=owner&grain=month&per=requests&per_unit=1000";
    assert_eq!(get_json(port, &format!("/api/v1/unit_costs?{params}")), want, "API ≠ CLI for unit costs");
    let payments = want["rows"].as_array().expect("rows").iter().find(|r| r["keys"][0] == "payments").cloned();
    // October: 10.0050001 for 1,000 requests; November: 7.123456789 for 250.
    assert_eq!(
        payments.map(|r| (r["cost"].clone(), r["unit_cost"].clone())),
        Some(("10.0050001".into(), "10.0050".into()))
    );
    // Budgets: the API's JSON and CSV are the CLI's, with the fixture's exact figure.
    let (code, out, err) = run(db, &["--config", c, "budgets", "--as-of", "2026-11-04", "--format", "json"]);
    assert_eq!(code, 0, "{err}");
    let want: Value = serde_json::from_str(&out).expect("CLI JSON");
    assert_eq!(want[0]["actual"], "7.123456789");
    assert_eq!(get_json(port, "/api/v1/budgets?as_of=2026-11-04"), want, "API ≠ CLI for budgets");
    let (_, csv, _) = run(db, &["--config", c, "budgets", "--as-of", "2026-11-04", "--format", "csv"]);
    let (status, _, body) = http(port, "/api/v1/budgets?as_of=2026-11-04&format=csv", &[("Authorization", &auth())]);
    assert_eq!((status, body), (200, csv), "budgets CSV");
    // Commitments: the API's JSON is the CLI's.
    let (code, out, err) =
        run(db, &["--config", c, "commitments", "--by", "owner", "--grain", "month", "--format", "json"]);
    assert_eq!(code, 0, "{err}");
    let want: Value = serde_json::from_str(&out).expect("CLI JSON");
    assert_eq!(get_json(port, "/api/v1/commitments?by=owner&grain=month"), want, "API ≠ CLI for commitments");
    // Exact figures, not only agreement: the fixture's hand-computed USD total.
    let all = get_json(port, "/api/v1/costs?metric=BilledCost");
    let usd = all["totals"].as_array().expect("totals").iter().find(|t| t["currency"] == "USD").expect("USD");
    assert_eq!(usd["values"][0], "16.378456889");
    drop(server);
}

#[test]
fn api_answers_equal_cli_answers_on_sqlite() {
    let dir = tempfile::tempdir().expect("tmp");
    check_api_equals_cli(&sqlite_url(dir.path()));
}

#[tokio::test]
async fn api_answers_equal_cli_answers_on_postgres() {
    let Some(url) = pg_schema_url().await else { return };
    tokio::task::spawn_blocking(move || check_api_equals_cli(&url)).await.expect("join");
}

/// One server on SQLite for the tests below.
fn one_server(extra: &str) -> (tempfile::TempDir, Server) {
    let dir = tempfile::tempdir().expect("tmp");
    let db = sqlite_url(dir.path());
    let port = free_port();
    let cfg = config(dir.path(), &format!("127.0.0.1:{port}"), extra);
    fill(&db, &cfg);
    let s = Server::start(&db, &cfg, dir.path(), port);
    (dir, s)
}

#[test]
fn tokens_are_required_checked_and_never_logged() {
    let (_dir, s) = one_server(&format!("api: {{ tokens: [\"other-token-aaaaaaaaaaaa\", \"{TOKEN}\"] }}\n"));
    let p = s.port;
    let path = "/api/v1/costs?group_by=service&where=tag:team%3Dpayments";
    let (status, head, body) = http(p, path, &[]);
    assert_eq!(status, 401, "{body}");
    assert!(head.contains("www-authenticate: Bearer") || head.contains("WWW-Authenticate: Bearer"), "{head}");
    let err: Value = serde_json::from_str(&body).expect("JSON error");
    assert_eq!(err["error"]["message"], "a valid bearer token is required", "no detail beyond that");
    assert_eq!(http(p, path, &[("Authorization", "Bearer wrong-token-0123456789")]).0, 401);
    assert_eq!(http(p, path, &[("Authorization", &format!("Bearer {TOKEN}x"))]).0, 401);
    assert_eq!(http(p, path, &[("Authorization", &auth())]).0, 200);
    assert_eq!(http(p, path, &[("Authorization", "Bearer other-token-aaaaaaaaaaaa")]).0, 200);
    // The page keeps the token in a cookie.
    assert_eq!(http(p, path, &[("Cookie", &format!("theme=dark; costledger_token={TOKEN}"))]).0, 200);
    // Every API route is behind the token, even an unknown one; health and metrics are not.
    for route in ["/api/v1/sources", "/api/v1/openapi.json", "/api/v1/dimensions/service", "/api/v1/nope"] {
        assert_eq!(http(p, route, &[]).0, 401, "{route}");
    }
    assert_eq!(http(p, "/healthz", &[]).0, 200);
    assert_eq!(http(p, "/readyz", &[]).0, 200);
    let (status, _, metrics) = http(p, "/metrics", &[]);
    assert_eq!(status, 200);
    assert!(
        metrics.contains("costledger_http_requests_total{route=\"/api/v1/costs\",status=\"401\"}"),
        "a metric per route and status:\n{metrics}"
    );
    // One log line per request with route, status and latency; never a token or a query value.
    let log = s.log();
    assert!(log.contains("\"route\":\"/api/v1/costs\"") && log.contains("\"status\":401"), "{log}");
    assert!(log.contains("latency_ms"), "{log}");
    assert!(!log.contains(TOKEN) && !log.contains("other-token") && !log.contains("payments"), "{log}");
}

#[test]
fn bad_parameters_get_400_naming_them_and_unknown_routes_404() {
    let (_dir, s) = one_server("");
    let p = s.port;
    let cases: &[(&str, u16, &str, &str)] = &[
        ("/api/v1/costs?colour=red", 400, "colour", "unknown parameter 'colour'"),
        ("/api/v1/costs?group_by=colour", 400, "group_by", "unknown dimension 'colour'"),
        ("/api/v1/costs?metric=Price", 400, "metric", "unknown metric 'Price'"),
        ("/api/v1/costs?from=2026-13", 400, "from", "bad date '2026-13'"),
        ("/api/v1/costs?from=2026-11&to=2026-10", 400, "from", "the range would be empty"),
        ("/api/v1/costs?currency=JPY", 400, "currency", "JPY"),
        ("/api/v1/costs?currency=dollars", 400, "currency", "bad currency"),
        ("/api/v1/costs?top=0", 400, "top", "'top' must be a whole number from 1"),
        ("/api/v1/costs?format=xml", 400, "format", "unknown format 'xml'"),
        ("/api/v1/costs?limit=0", 400, "limit", "'limit' must be a whole number"),
        ("/api/v1/costs?grain=day&grain=month", 400, "grain", "given 2 times"),
        ("/api/v1/costs?where=service", 400, "where", "bad filter 'service'"),
        ("/api/v1/explain?to=2026-11", 400, "from", "'from' is required"),
        ("/api/v1/explain?from=2026-10&to=2026-W45", 400, "to", "compare periods of the same kind"),
        ("/api/v1/explain?from=Oct&to=2026-11", 400, "from", "bad period 'Oct' for --from"),
        ("/api/v1/explain?from=2026-10&to=2026-11&by=colour", 400, "by", "unknown dimension 'colour'"),
        ("/api/v1/explain?from=2026-10&to=2026-11&metric=lines", 400, "metric", "is not a cost"),
        ("/api/v1/explain?from=2026-10&to=2026-11&currency=JPY", 400, "currency", "EUR to JPY"),
        ("/api/v1/explain?from=2026-10&to=2026-11&grain=day", 400, "grain", "unknown parameter 'grain'"),
        ("/api/v1/commitments?basis=Price", 400, "basis", "unknown basis 'Price'"),
        ("/api/v1/commitments?by=colour", 400, "by", "unknown dimension 'colour'"),
        ("/api/v1/commitments?view=table", 400, "view", "unknown view 'table'"),
        ("/api/v1/budgets?as_of=11/03/2026", 400, "as_of", "bad date '11/03/2026' for as_of"),
        ("/api/v1/unit_costs?group_by=owner", 400, "per", "'per' is required"),
        ("/api/v1/unit_costs?per=orders", 400, "per", "no business metric 'orders' is stored"),
        ("/api/v1/unit_costs?per=requests&group_by=service", 400, "group_by", "has no service on every value"),
        (
            "/api/v1/unit_costs?per=requests&per_unit=0",
            400,
            "per_unit",
            "the unit (per_unit, --per-unit) must be a number above 0, not '0'",
        ),
        ("/api/v1/loads?state=done", 400, "state", "unknown load state 'done'"),
        ("/api/v1/findings?period=2026", 400, "period", "bad period '2026'"),
        ("/api/v1/dimensions/colour", 404, "name", "unknown dimension 'colour'"),
    ];
    for (path, want, param, text) in cases {
        let (status, _, body) = http(p, path, &[]);
        assert_eq!(status, *want, "{path}: {body}");
        let v: Value = serde_json::from_str(&body).expect("JSON error");
        assert_eq!(v["error"]["status"], *want);
        assert_eq!(v["error"]["parameter"], *param, "{path}: {body}");
        assert!(v["error"]["message"].as_str().expect("message").contains(text), "{path}: {body}");
    }
    let (status, _, body) = http(p, "/api/v1/nope", &[]);
    assert_eq!(status, 404, "{body}");
    assert!(body.contains("no such API route: /api/v1/nope"), "{body}");
    // A missing FX rate names the month and the pair, never a silent fallback.
    let (_, _, body) = http(p, "/api/v1/costs?currency=JPY", &[]);
    assert!(body.contains("no exchange rate from EUR to JPY for 2026-10"), "{body}");
}

#[test]
fn pages_add_up_to_the_whole_answer() {
    let (_dir, s) = one_server("");
    let whole = get_json(s.port, "/api/v1/costs?group_by=resource,service&grain=day");
    let all_rows = whole["rows"].as_array().expect("rows").clone();
    assert!(all_rows.len() >= 5, "the fixture has several rows: {whole}");
    let mut paged = Vec::new();
    let mut offset = 0usize;
    loop {
        let page =
            get_json(s.port, &format!("/api/v1/costs?group_by=resource,service&grain=day&limit=2&offset={offset}"));
        assert_eq!(page["totals"], whole["totals"], "totals cover every row on every page");
        assert_eq!(page["total_rows"], all_rows.len());
        paged.extend(page["rows"].as_array().expect("rows").iter().cloned());
        match page["next_offset"].as_u64() {
            Some(n) => offset = usize::try_from(n).expect("offset"),
            None => break,
        }
    }
    assert_eq!(paged, all_rows);
}

#[test]
fn a_public_bind_without_tokens_is_refused_unless_allowed() {
    let dir = tempfile::tempdir().expect("tmp");
    let db = sqlite_url(dir.path());
    let port = free_port();
    let cfg = config(dir.path(), &format!("0.0.0.0:{port}"), "");
    let (code, _, err) = run(&db, &["--config", cfg.to_str().expect("p"), "serve"]);
    assert_ne!(code, 0);
    assert!(err.contains("refusing to serve the API on 0.0.0.0") && err.contains("api.tokens"), "{err}");
    let cfg = config(dir.path(), &format!("0.0.0.0:{port}"), "api: { allow_anonymous: true }\n");
    let s = Server::start(&db, &cfg, dir.path(), port);
    assert_eq!(http(s.port, "/api/v1/periods", &[]).0, 200);
    // A token shorter than 16 characters is a config error.
    let cfg = config(dir.path(), "127.0.0.1:1", "api: { tokens: [\"short\"] }\n");
    let (code, _, err) = run(&db, &["--config", cfg.to_str().expect("p"), "serve"]);
    assert_ne!(code, 0);
    assert!(err.contains("api.tokens[0]") && err.contains("at least 16 characters"), "{err}");
    assert!(!err.contains("\"short\""), "{err}");
}

/// The property names of schema `name` in the document, following `$ref` and `allOf`.
fn properties(doc: &Value, schema: &Value) -> Vec<String> {
    let mut out = Vec::new();
    if let Some(r) = schema.get("$ref").and_then(Value::as_str) {
        let target = doc.pointer(r.trim_start_matches('#')).expect("a $ref that resolves");
        out.extend(properties(doc, target));
    }
    if let Some(p) = schema.get("properties").and_then(Value::as_object) {
        out.extend(p.keys().cloned());
    }
    for k in ["allOf", "oneOf", "anyOf"] {
        for s in schema.get(k).and_then(Value::as_array).into_iter().flatten() {
            out.extend(properties(doc, s));
        }
    }
    out
}

fn required(doc: &Value, schema: &Value) -> Vec<String> {
    let mut out: Vec<String> = schema
        .get("required")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|v| v.as_str().map(String::from))
        .collect();
    if let Some(r) = schema.get("$ref").and_then(Value::as_str) {
        out.extend(required(doc, doc.pointer(r.trim_start_matches('#')).expect("ref")));
    }
    for s in schema.get("allOf").and_then(Value::as_array).into_iter().flatten() {
        out.extend(required(doc, s));
    }
    out
}

/// Check one JSON object (and its nested objects named by the schema) against the schema.
fn conforms(doc: &Value, schema: &Value, v: &Value, at: &str) {
    match v {
        Value::Object(o) => {
            let props = properties(doc, schema);
            for k in o.keys() {
                assert!(props.contains(k), "{at}: field '{k}' is not in the OpenAPI schema ({props:?})");
            }
            for k in required(doc, schema) {
                assert!(o.contains_key(&k), "{at}: required field '{k}' is missing");
            }
        }
        Value::Array(items) => {
            let item = schema_items(doc, schema).unwrap_or_else(|| panic!("{at}: an array schema"));
            for (i, x) in items.iter().enumerate() {
                conforms(doc, &item, x, &format!("{at}[{i}]"));
            }
        }
        _ => {}
    }
}

fn schema_items(doc: &Value, schema: &Value) -> Option<Value> {
    if let Some(r) = schema.get("$ref").and_then(Value::as_str) {
        return schema_items(doc, doc.pointer(r.trim_start_matches('#'))?);
    }
    schema.get("items").cloned()
}

#[test]
fn the_openapi_document_describes_every_route_and_real_responses_match_it() {
    let (_dir, s) = one_server(&format!("api: {{ tokens: [\"{TOKEN}\"] }}\n{BUDGET}"));
    let doc = get_json(s.port, "/api/v1/openapi.json");
    assert_eq!(doc["openapi"], "3.1.0");
    assert_eq!(doc["components"]["securitySchemes"]["bearer"]["scheme"], "bearer");
    let routes = [
        ("/api/v1/costs", "/api/v1/costs?group_by=service,tag:team&grain=month&top=1"),
        ("/api/v1/explain", "/api/v1/explain?from=2026-10&to=2026-11&by=service,tag:team&currency=USD"),
        ("/api/v1/commitments", "/api/v1/commitments?by=service&grain=month"),
        ("/api/v1/budgets", "/api/v1/budgets?as_of=2026-11-03"),
        ("/api/v1/unit_costs", "/api/v1/unit_costs?per=requests&group_by=owner&grain=month"),
        ("/api/v1/dimensions", "/api/v1/dimensions"),
        ("/api/v1/dimensions/{name}", "/api/v1/dimensions/tag:team"),
        ("/api/v1/sources", "/api/v1/sources"),
        ("/api/v1/loads", "/api/v1/loads"),
        ("/api/v1/periods", "/api/v1/periods"),
        ("/api/v1/findings", "/api/v1/findings"),
        ("/api/v1/allocation", "/api/v1/allocation?period=2026-10"),
    ];
    let paths = doc["paths"].as_object().expect("paths");
    assert_eq!(paths.len(), routes.len(), "every documented path is tested here: {:?}", paths.keys());
    for (route, example) in routes {
        let op = &doc["paths"][route]["get"];
        assert!(op.is_object(), "{route} is documented");
        let schema = &op["responses"]["200"]["content"]["application/json"]["schema"];
        assert!(schema.is_object(), "{route}: a 200 JSON schema");
        let v = get_json(s.port, example);
        assert!(v.is_object() || v.as_array().is_some_and(|a| !a.is_empty()), "{example} gives data to check: {v}");
        conforms(&doc, schema, &v, example);
        // Nested rows of the cost answer too.
        if route == "/api/v1/costs" {
            let row = doc.pointer("/components/schemas/QueryRow").expect("QueryRow");
            for r in v["rows"].as_array().expect("rows") {
                conforms(&doc, row, r, "costs row");
            }
        }
        if route == "/api/v1/explain" {
            let g = doc.pointer("/components/schemas/GroupChange").expect("GroupChange");
            let groups = v["groups"].as_array().expect("groups");
            assert!(!groups.is_empty(), "{v}");
            for r in groups {
                conforms(&doc, g, r, "explain group");
                let parts = doc.pointer("/components/schemas/Parts").expect("Parts");
                conforms(&doc, parts, &r["parts"], "explain parts");
            }
        }
        let err_schema = &op["responses"]["401"]["content"]["application/json"]["schema"];
        let (status, _, body) = http(s.port, example, &[]);
        assert_eq!(status, 401);
        conforms(&doc, err_schema, &serde_json::from_str(&body).expect("JSON"), "401");
    }
}

/// Chromium (Debian's package) when installed; CI sets COSTLEDGER_TEST_CHROMIUM=1 so a missing
/// one fails instead of skipping.
fn chromium() -> Option<&'static str> {
    let found = ["/usr/bin/chromium", "/usr/bin/chromium-browser"].into_iter().find(|p| Path::new(p).exists());
    if found.is_none() {
        let required = std::env::var("COSTLEDGER_TEST_CHROMIUM").is_ok_and(|v| v == "1");
        assert!(!required, "COSTLEDGER_TEST_CHROMIUM=1 but Chromium is not installed");
        eprintln!("skipped: Chromium is not installed");
    }
    found
}

/// Load `url` headless, let its scripts run; (DOM after them, Chromium's stderr).
fn render(chromium: &str, home: &Path, url: &str, screenshot: Option<&Path>) -> (String, String) {
    let mut c = std::process::Command::new(chromium);
    c.args(["--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--enable-logging=stderr"])
        .args(["--window-size=1200,900", "--virtual-time-budget=15000"])
        .env("HOME", home);
    match screenshot {
        Some(p) => c.arg(format!("--screenshot={}", p.display())),
        None => c.arg("--dump-dom"),
    };
    let out = c.arg(url).output().expect("run chromium");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    (String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned())
}

/// Every `data-exact` value of the DOM, in document order.
fn exact_values(dom: &str) -> Vec<String> {
    dom.split("data-exact=\"").skip(1).map(|s| s.split('"').next().expect("value").to_string()).collect()
}

#[test]
fn the_page_shows_the_apis_numbers_in_chromium_without_errors() {
    let Some(chromium) = chromium() else { return };
    let (dir, s) = one_server(&format!("api: {{ tokens: [\"{TOKEN}\"] }}\n"));
    let base = format!("http://127.0.0.1:{}/", s.port);
    let page_errors = |dom: &str, stderr: &str, what: &str| {
        assert!(dom.contains("data-state=\"ready\""), "{what}: the page did not finish: {dom}\n{stderr}");
        assert!(!dom.contains("data-errors"), "{what}: script errors: {dom}");
        assert!(dom.contains("<div id=\"errors\" class=\"error\" role=\"alert\"></div>"), "{what}: {dom}");
        assert!(!stderr.contains("Uncaught") && !stderr.contains("Failed to load resource"), "{what}: {stderr}");
    };
    // Explorer: the table shows exactly the API's numbers (rows, then totals), 2 places on
    // screen and the exact value in each cell's data.
    let q = "group_by=service,tag:team&grain=month&top=2&metric=BilledCost,EffectiveCost";
    let (dom, stderr) = render(chromium, dir.path(), &format!("{base}#view=explorer&{q}&token={TOKEN}"), None);
    page_errors(&dom, &stderr, "explorer");
    let api = get_json(s.port, &format!("/api/v1/costs?{q}"));
    let mut want = Vec::new();
    for part in ["rows", "totals"] {
        for r in api[part].as_array().expect("rows") {
            for v in r["values"].as_array().expect("values") {
                if let Some(v) = v.as_str() {
                    want.push(v.to_string());
                }
            }
        }
    }
    assert!(want.len() >= 6, "{api}");
    assert_eq!(exact_values(&dom), want, "the explorer's table equals the API's numbers");
    assert!(dom.contains("title=\"10.0050001 (exact)\">10.01</td>"), "rounded like the report, exact on hover: {dom}");
    assert!(dom.contains("(others)"), "top 2 + others: {dom}");
    assert!(!dom.contains(TOKEN), "the token left the URL once taken");
    // Every other view loads without errors and shows its numbers.
    for (view, must) in [
        // payments: 10.0050001 in October, 7.123456789 in November → −2.881543311, exactly.
        ("overview", "data-exact=\"-2.881543311\""),
        ("unallocated", "untaggable_charge"),
        ("findings", "invoice"),
        ("loads", "current"),
        ("periods", "2026-10"),
    ] {
        let (dom, stderr) = render(chromium, dir.path(), &format!("{base}#view={view}&token={TOKEN}"), None);
        page_errors(&dom, &stderr, view);
        assert!(dom.contains(must), "{view} shows {must}: {dom}");
    }
    // Without a token the page asks for one (and the API gave it nothing).
    let (dom, _) = render(chromium, dir.path(), &base, None);
    assert!(dom.contains("data-state=\"login\""), "{dom}");
    assert!(!dom.contains("data-exact"), "{dom}");
    // A screenshot as a test artifact.
    let shot = Path::new(env!("CARGO_TARGET_TMPDIR")).join("explorer.png");
    render(chromium, dir.path(), &format!("{base}#view=explorer&{q}&token={TOKEN}"), Some(&shot));
    let bytes = std::fs::read(&shot).expect("screenshot");
    assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n");
    assert!(bytes.len() > 20_000, "the page has content ({} bytes)", bytes.len());
    eprintln!("screenshot: {}", shot.display());
}
