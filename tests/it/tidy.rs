//! Tidy: the architecture's invariants (ARCHITECTURE.md, "Invariants") checked on the source
//! text, so a change that breaks one fails CI instead of waiting for a reviewer.

use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Every file under `dir` (relative to the repository) whose name ends with one of `exts`.
fn files(dir: &str, exts: &[&str]) -> Vec<(String, String)> {
    fn walk(p: &Path, exts: &[&str], out: &mut Vec<PathBuf>) {
        let Ok(rd) = std::fs::read_dir(p) else { return };
        for e in rd.flatten() {
            let path = e.path();
            let name = e.file_name().to_string_lossy().into_owned();
            if name.starts_with('.') || name == "target" || name == "node_modules" || name == "fixtures" {
                continue;
            }
            if path.is_dir() {
                walk(&path, exts, out);
            } else if exts.iter().any(|x| name.ends_with(x)) {
                out.push(path);
            }
        }
    }
    let mut paths = Vec::new();
    walk(&root().join(dir), exts, &mut paths);
    paths.sort();
    paths
        .into_iter()
        .map(|p| {
            let rel = p.strip_prefix(root()).expect("under the root").to_string_lossy().into_owned();
            let text = std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("read {rel}: {e}"));
            (rel, text)
        })
        .collect()
}

/// Lines of `text` that contain `needle`, outside `//` comments, as `file:line: text`.
fn code_hits(rel: &str, text: &str, needle: &str) -> Vec<String> {
    text.lines()
        .enumerate()
        .filter(|(_, l)| {
            let code = l.split("//").next().unwrap_or("");
            code.contains(needle)
        })
        .map(|(i, l)| format!("{rel}:{}: {}", i + 1, l.trim()))
        .collect()
}

fn assert_none(what: &str, hits: Vec<String>) {
    assert!(hits.is_empty(), "{what}:\n{}", hits.join("\n"));
}

#[test]
fn no_sql_or_sqlx_outside_the_ledger_crate() {
    let mut hits = Vec::new();
    for (rel, text) in files("src", &[".rs"]) {
        for needle in ["sqlx::", "use sqlx", "SELECT ", "INSERT INTO", "DELETE FROM", "UPDATE loads", "UPDATE runs"] {
            hits.extend(code_hits(&rel, &text, needle));
        }
    }
    // The application may use sqlx in its tests only.
    let manifest = std::fs::read_to_string(root().join("Cargo.toml")).expect("Cargo.toml");
    let deps = manifest.split("[dependencies]").nth(1).and_then(|d| d.split("\n[").next()).unwrap_or("");
    for l in deps.lines() {
        if l.starts_with("sqlx") || l.starts_with("libsqlite3-sys") {
            hits.push(format!("Cargo.toml [dependencies]: {l}"));
        }
    }
    assert_none("SQL or sqlx outside the ledger crate (put the query behind LedgerStore)", hits);
}

#[test]
fn only_the_writers_name_the_charge_storage_tables() {
    // Reads see the `charges` view; the tables behind it (migrations 0014, 0016) are the writers',
    // and the two readers that fill a row's context or kind by id (`ContextReader` in
    // postgres.rs, `KindReader` in sqlite_read.rs).
    const WRITERS: [&str; 7] = [
        "ledger/src/contexts.rs",
        "ledger/src/kinds.rs",
        "ledger/src/migrations.rs",
        "ledger/src/postgres.rs",
        "ledger/src/sqlite.rs",
        "ledger/src/sqlite_bulk.rs",
        "ledger/src/sqlite_read.rs",
    ];
    let mut hits = Vec::new();
    for dir in ["src", "ledger"] {
        for (rel, text) in files(dir, &[".rs"]) {
            if WRITERS.contains(&rel.as_str()) {
                continue;
            }
            hits.extend(code_hits(&rel, &text, "charge_rows"));
            hits.extend(code_hits(&rel, &text, "charge_contexts"));
            hits.extend(code_hits(&rel, &text, "charge_kinds"));
        }
    }
    assert_none("the charge storage tables named outside their writers (read the `charges` view)", hits);
}

#[test]
fn no_unsafe_outside_the_sqlite_c_api_modules() {
    const ALLOWED: [&str; 3] = ["ledger/src/sqlite_bulk.rs", "ledger/src/sqlite_read.rs", "ledger/src/decimal_sum.rs"];
    let mut hits = Vec::new();
    for dir in ["src", "ledger", "connectors"] {
        for (rel, text) in files(dir, &[".rs"]) {
            if ALLOWED.contains(&rel.as_str()) {
                continue;
            }
            hits.extend(code_hits(&rel, &text, "unsafe "));
            hits.extend(code_hits(&rel, &text, "unsafe_code"));
        }
    }
    assert_none("unsafe code outside the SQLite C-API modules", hits);
}

#[test]
fn no_anyhow_outside_the_edges() {
    const EDGES: [&str; 4] = ["src/main.rs", "src/cli.rs", "src/daemon/mod.rs", "src/daemon/http.rs"];
    let mut hits = Vec::new();
    for dir in ["src", "ledger", "connectors"] {
        for (rel, text) in files(dir, &[".rs"]) {
            if EDGES.contains(&rel.as_str()) || rel.starts_with("src/cli/") {
                continue;
            }
            hits.extend(code_hits(&rel, &text, "anyhow"));
        }
    }
    assert_none("anyhow outside the edges (libraries use thiserror)", hits);
}

#[test]
fn the_daemon_and_the_app_layer_do_not_import_the_cli() {
    let mut hits = Vec::new();
    for dir in ["src/daemon", "src/app"] {
        for (rel, text) in files(dir, &[".rs"]) {
            hits.extend(code_hits(&rel, &text, "crate::cli"));
            hits.extend(code_hits(&rel, &text, "super::cli"));
        }
    }
    assert_none("the daemon or the app layer imports the CLI edge", hits);
}

#[test]
fn the_app_layer_prints_nothing() {
    let mut hits = Vec::new();
    for (rel, text) in files("src/app", &[".rs"]) {
        for needle in ["println!", "eprintln!", "print!(", "std::io::stdout", "std::process::exit"] {
            hits.extend(code_hits(&rel, &text, needle));
        }
    }
    assert_none("the app layer prints or exits (only an edge knows its output)", hits);
}

#[test]
fn connectors_depend_on_no_application_or_ledger_code() {
    // (The ledger crate itself depends on core only: checked by its manifest below.)
    let mut hits = Vec::new();
    for (rel, text) in files("connectors", &["Cargo.toml"]) {
        for (i, l) in text.lines().enumerate() {
            let l = l.trim();
            if l.starts_with("costledger ")
                || l.starts_with("costledger=")
                || l.starts_with("costledger-ledger")
                || l.starts_with("sqlx")
            {
                hits.push(format!("{rel}:{}: {l}", i + 1));
            }
        }
    }
    for (rel, text) in files("connectors", &[".rs"]) {
        hits.extend(code_hits(&rel, &text, "costledger::"));
        hits.extend(code_hits(&rel, &text, "costledger_ledger"));
        hits.extend(code_hits(&rel, &text, "sqlx::"));
    }
    assert_none("a connector depends on the application or the ledger", hits);
}

#[test]
fn no_reference_to_a_document_outside_the_repository() {
    let mut hits = Vec::new();
    let needles = [
        "DESIGN §",
        "DESIGN.md",
        "formats.md",
        "stack-notes",
        "../shared",
        "habit 1",
        "habit 2",
        "habit 3",
        "habit 4",
        "habit 5",
        "habit 6",
        "habit 7",
    ];
    for dir in ["src", "ledger", "connectors", "tests", "bench", "config", "migrations", ".ci"] {
        for (rel, text) in files(dir, &[".rs", ".md", ".sh", ".py", ".sql", ".toml", ".yaml", ".yml", "run"]) {
            if rel == "tests/it/tidy.rs" {
                continue;
            }
            for n in needles {
                for (i, l) in text.lines().enumerate() {
                    if l.contains(n) {
                        hits.push(format!("{rel}:{}: {}", i + 1, l.trim()));
                    }
                }
            }
        }
    }
    for doc in ["README.md", "ARCHITECTURE.md"] {
        let text = std::fs::read_to_string(root().join(doc)).expect("doc");
        for n in needles {
            for (i, l) in text.lines().enumerate() {
                if l.contains(n) {
                    hits.push(format!("{doc}:{}: {}", i + 1, l.trim()));
                }
            }
        }
    }
    assert_none("a reference to a document that is not in this repository", hits);
}

#[test]
fn every_relative_link_in_the_docs_exists() {
    let mut docs = vec![("README.md".to_string(), std::fs::read_to_string(root().join("README.md")).expect("README"))];
    docs.push(("ARCHITECTURE.md".into(), std::fs::read_to_string(root().join("ARCHITECTURE.md")).expect("ARCH")));
    docs.extend(files("docs", &[".md"]));
    let mut missing = Vec::new();
    for (rel, text) in &docs {
        let base = root().join(rel).parent().expect("dir").to_path_buf();
        let mut rest = text.as_str();
        while let Some(i) = rest.find("](") {
            rest = &rest[i + 2..];
            let Some(end) = rest.find(')') else { break };
            let target = &rest[..end];
            rest = &rest[end..];
            if target.contains("://") || target.starts_with('#') || target.starts_with("mailto:") {
                continue;
            }
            let path = target.split('#').next().unwrap_or("");
            if !path.is_empty() && !base.join(path).exists() {
                missing.push(format!("{rel}: {target}"));
            }
        }
    }
    assert!(missing.is_empty(), "links to files that do not exist:\n{}", missing.join("\n"));
}

#[test]
fn source_type_names_are_written_once() {
    // The config `type` names live in config::SOURCE_TYPES only.
    let mut hits = Vec::new();
    for (rel, text) in files("src", &[".rs"]) {
        if rel == "src/config.rs" {
            // Its tests may name types in YAML; the table is the one definition.
            let defs = text.matches("name: \"aws_cost_explorer\"").count();
            assert_eq!(defs, 1, "src/config.rs defines aws_cost_explorer {defs} times");
            continue;
        }
        for name in ["\"aws_cost_explorer\"", "\"aws_data_exports\"", "\"azure_cost_query\"", "\"oci_usage_api\""] {
            hits.extend(code_hits(&rel, &text, name));
        }
    }
    assert_none("a source type name written outside config::SOURCE_TYPES", hits);
}

/// The file plumbing knows no bill format: it depends on core only, and no connector's
/// knowledge (a FOCUS column map, a CUR or export normaliser) is named in it.
#[test]
fn the_files_crate_depends_on_core_only() {
    let manifest = std::fs::read_to_string(root().join("connectors/files/Cargo.toml")).expect("files manifest");
    let ours: Vec<&str> = manifest
        .lines()
        .filter(|l| {
            l.starts_with("costledger-") && !l.starts_with("costledger-core") && !l.starts_with("costledger-files")
        })
        .collect();
    assert!(ours.is_empty(), "costledger-files depends on {ours:?}: it may depend on costledger-core only");
    let mut hits = Vec::new();
    for (rel, text) in files("connectors/files", &[".rs"]) {
        for needle in
            ["costledger_focus", "costledger_aws", "costledger_azure", "costledger_gcp", "costledger_oci", "ColumnMap"]
        {
            hits.extend(code_hits(&rel, &text, needle));
        }
    }
    assert_none("the file plumbing names a bill format", hits);
}

#[test]
fn the_ledger_crate_depends_on_core_only() {
    let manifest = std::fs::read_to_string(root().join("ledger/Cargo.toml")).expect("ledger/Cargo.toml");
    let ours: Vec<&str> =
        manifest.lines().filter(|l| l.starts_with("costledger") && !l.starts_with("costledger-core")).collect();
    assert!(ours.is_empty(), "the ledger depends on {ours:?}: it may depend on costledger-core only");
    for (rel, text) in files("ledger", &[".rs"]) {
        assert_none(&format!("{rel} uses the application"), code_hits(&rel, &text, "costledger::"));
    }
}

/// The read edges (HTTP API, page, MCP) call the application layer only: they never name a
/// ledger store method (so they cannot write, and cannot answer differently from the CLI).
/// Passing the store on (`store.as_ref()`, `store.clone()`) is all they may do with it.
#[test]
fn the_read_edges_call_the_app_layer_only() {
    let mut hits = Vec::new();
    let mut edges = files("src/api", &[".rs"]);
    edges.extend(files("src", &[".rs"]).into_iter().filter(|(rel, _)| rel == "src/mcp.rs"));
    assert!(edges.iter().any(|(rel, _)| rel == "src/mcp.rs"), "the MCP edge is where the map says");
    for (rel, text) in edges {
        for (i, line) in text.lines().enumerate() {
            let code = line.split("//").next().unwrap_or("");
            for (at, _) in code.match_indices("store.") {
                let method: String =
                    code[at + 6..].chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
                if method != "as_ref" && method != "clone" {
                    hits.push(format!("{rel}:{}: {}", i + 1, line.trim()));
                }
            }
            for needle in ["crate::ledger::LedgerStore::", "ReconcileStore", "crate::reconcile::", "crate::ingest::"] {
                if code.contains(needle) {
                    hits.push(format!("{rel}:{}: {}", i + 1, line.trim()));
                }
            }
        }
    }
    assert_none("a read edge calls the ledger instead of app::query / app::read", hits);
}

#[test]
fn allocation_and_config_do_not_import_each_other() {
    // The config parser reads the allocation rules through `allocation::parse_allocation`;
    // both report problems through the leaf `config_issue`, so allocation never needs config.
    let mut hits = Vec::new();
    for (rel, text) in files("src/allocation", &[".rs"]) {
        hits.extend(code_hits(&rel, &text, "crate::config::"));
        hits.extend(code_hits(&rel, &text, "crate::config;"));
    }
    let leaf = std::fs::read_to_string(root().join("src/config_issue.rs")).expect("src/config_issue.rs");
    hits.extend(code_hits("src/config_issue.rs", &leaf, "crate::"));
    assert_none("allocation imports config, or config_issue is not a leaf", hits);
}

#[test]
fn each_reconcile_check_has_its_own_file() {
    for check in ["invoice", "cross_source", "restatement", "tag_coverage", "anomaly"] {
        let p = root().join(format!("src/reconcile/checks/{check}.rs"));
        assert!(p.is_file(), "{} is missing: each check of the reconciler lives in its own file", p.display());
    }
    for gone in ["src/checks.rs", "src/reconcile.rs", "src/allocation.rs"] {
        assert!(!root().join(gone).exists(), "{gone} is back: its code lives in a module directory now");
    }
}
