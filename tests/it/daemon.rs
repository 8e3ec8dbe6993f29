//! `costledger run` end to end: real processes, real SQLite and PostgreSQL, real signals, the
//! HTTP endpoints; plus the deployment files.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::*;

fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr").port()
}

/// GET a path; (status, body).
fn get(port: u16, path: &str) -> Option<(u16, String)> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    write!(s, "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n").ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    let status = out.split(' ').nth(1)?.parse().ok()?;
    let body = out.split_once("\r\n\r\n").map(|x| x.1.to_string()).unwrap_or_default();
    Some((status, body))
}

fn wait_until(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let t0 = Instant::now();
    while t0.elapsed() < timeout {
        if f() {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("timed out waiting for {what}");
}

struct Daemon {
    child: Child,
    log: PathBuf,
}

impl Daemon {
    fn start(config: &Path, dir: &Path, name: &str, port: u16) -> Daemon {
        let log = dir.join(format!("{name}.log"));
        let child = Command::new(env!("CARGO_BIN_EXE_costledger"))
            .env_remove("COSTLEDGER_DATABASE_URL")
            .env("RUST_LOG", "info")
            .env("TEST_SECRET_PASSWORD", "S3cretP4ss-do-not-log")
            .args(["--log-format", "json", "--config"])
            .arg(config)
            .arg("run")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("log"))
            .spawn()
            .expect("spawn");
        let d = Daemon { child, log };
        wait_until("the daemon's /healthz", Duration::from_secs(30), || {
            get(port, "/healthz").is_some_and(|r| r.0 == 200)
        });
        d
    }

    fn signal(&self, sig: &str) {
        let ok = Command::new("kill").arg(format!("-{sig}")).arg(self.child.id().to_string()).status().expect("kill");
        assert!(ok.success());
    }

    /// SIGTERM and wait; returns the exit code and how long it took.
    fn stop(mut self) -> (Option<i32>, Duration, String) {
        let t0 = Instant::now();
        self.signal("TERM");
        let code = loop {
            if let Some(s) = self.child.try_wait().expect("wait") {
                break s.code();
            }
            if t0.elapsed() > Duration::from_secs(60) {
                let _ = self.child.kill();
                panic!("the daemon did not stop within 60 s");
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        (code, t0.elapsed(), std::fs::read_to_string(&self.log).unwrap_or_default())
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn write_config(dir: &Path, db: &str, port: u16, bills: &Path, schedule: &str, extra: &str) -> PathBuf {
    let p = dir.join("costledger.yaml");
    std::fs::write(
        &p,
        format!(
            "database: \"{db}\"\nserver: {{ bind: \"127.0.0.1:{port}\" }}\ndaemon: {{ shutdown_grace_secs: 2 }}\n\
             sources:\n  - name: drop\n    type: focus\n    path: {}\n    schedule: \"{schedule}\"\n{extra}",
            bills.display()
        ),
    )
    .expect("config");
    p
}

fn bills(dir: &Path) -> PathBuf {
    let b = dir.join("bills");
    std::fs::create_dir_all(&b).expect("mkdir");
    std::fs::copy(fixture("reconcile/bill-2026-10.csv"), b.join("bill-2026-10.csv")).expect("copy");
    b
}

#[test]
fn a_daemon_schedules_serves_health_and_metrics_and_stops_cleanly() {
    let dir = tempfile::tempdir().expect("tmp");
    let db = sqlite_url(dir.path());
    let port = free_port();
    // A EUR budget without an exchange rate cannot be evaluated; it must not hide the other.
    let budget = "budgets:\n  - { name: eur, amount: \"1\", currency: EUR }\n  \
                  - { name: all-usd, scope: [\"provider=AWS\"], amount: \"1000\", currency: USD }\n";
    let cfg = write_config(dir.path(), &db, port, &bills(dir.path()), "* * * * * *", budget);
    let d = Daemon::start(&cfg, dir.path(), "a", port);
    let series = [
        "costledger_budget_ratio{budget=\"all-usd\",kind=\"actual\"}",
        "costledger_budget_ratio{budget=\"all-usd\",kind=\"forecast\"}",
        "costledger_rows_ingested_total{source=\"drop\"} 172",
        "costledger_source_last_success_timestamp_seconds{source=\"drop\"}",
        "costledger_source_last_run_ok{source=\"drop\"} 1",
        "costledger_runs_total{job=\"ingest\",status=\"ok\"}",
        "costledger_rows_quarantined_total{source=\"drop\"} 0",
        "costledger_run_duration_seconds_bucket{job=\"ingest\",le=\"0.5\"}",
        "costledger_api_calls_total{source=\"drop\"} 0",
        "costledger_unallocated_amount{currency=\"USD\"}",
    ];
    // The rows counter moves during the run, the other series when it (and the reconcile after
    // it) end: wait for all of them, not just the first.
    wait_until("the first ingest run and its reconcile", Duration::from_secs(30), || {
        get(port, "/metrics").is_some_and(|(_, m)| series.iter().all(|s| m.contains(s)))
    });
    assert_eq!(get(port, "/readyz").map(|r| r.0), Some(200));
    let (status, metrics) = get(port, "/metrics").expect("metrics");
    assert_eq!(status, 200);
    // Every sample line parses as Prometheus text: name{labels} value.
    for line in metrics.lines().filter(|l| !l.is_empty() && !l.starts_with('#')) {
        let (name_labels, value) = line.rsplit_once(' ').unwrap_or_else(|| panic!("bad line {line}"));
        assert!(value.parse::<f64>().is_ok() || value == "+Inf" || value == "NaN", "bad value in {line}");
        let name = name_labels.split('{').next().unwrap_or_default();
        assert!(name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':'), "bad name in {line}");
        if let Some(labels) = name_labels.strip_prefix(name) {
            assert!(labels.is_empty() || (labels.starts_with('{') && labels.ends_with('}')), "bad labels in {line}");
        }
    }
    for series in series {
        assert!(metrics.contains(series), "missing {series} in\n{metrics}");
    }
    // The budget gauge is `costledger budgets`' percentage over 100 (asked with the USD budget
    // alone: the EUR one is an error there, and a finding of the daemon's reconcile).
    let usd_only = dir.path().join("usd.yaml");
    let text = std::fs::read_to_string(&cfg).expect("config");
    std::fs::write(&usd_only, text.replace("  - { name: eur, amount: \"1\", currency: EUR }\n", "")).expect("write");
    let (code, out, err) = run(&db, &["--config", usd_only.to_str().expect("utf8"), "budgets", "--format", "json"]);
    assert_eq!(code, 0, "{err}");
    let b: serde_json::Value = serde_json::from_str(&out).expect("json");
    assert_eq!(b[0]["name"], "all-usd", "{out}");
    let pct: rust_decimal::Decimal = b[0]["actual_percent"].as_str().expect("percent").parse().expect("number");
    let gauge: rust_decimal::Decimal = metrics
        .lines()
        .find(|l| l.starts_with("costledger_budget_ratio{budget=\"all-usd\",kind=\"actual\"}"))
        .and_then(|l| l.rsplit_once(' '))
        .and_then(|(_, v)| v.parse().ok())
        .expect("gauge value");
    assert!(pct > rust_decimal::Decimal::ZERO, "{out}");
    assert_eq!((gauge * rust_decimal::Decimal::ONE_HUNDRED).normalize(), pct.normalize(), "gauge {gauge} vs {pct}%");
    wait_until("a second ingest run (every second)", Duration::from_secs(30), || {
        get(port, "/metrics").is_some_and(|(_, m)| {
            m.lines()
                .find_map(|l| l.strip_prefix("costledger_runs_total{job=\"ingest\",status=\"ok\"} "))
                .and_then(|v| v.parse::<u64>().ok())
                .is_some_and(|n| n >= 2)
        })
    });
    // A second daemon on the same SQLite file is refused, clearly.
    let out = bin().arg("--config").arg(&cfg).arg("run").output().expect("run");
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("another costledger daemon is already running on the SQLite ledger"), "{err}");
    let (code, took, log) = d.stop();
    assert_eq!(code, Some(0), "{log}");
    assert!(took < Duration::from_secs(10), "stopped in {took:?}");
    assert!(log.contains("\"job\":\"ingest\"") && log.contains("\"source\":\"drop\""), "a span per job: {log}");
    // Runs were recorded; no load twice.
    let (_, runs, _) = run(&db, &["runs", "--limit", "500"]);
    assert!(runs.lines().filter(|l| l.contains("ingest") && l.contains(" ok ")).count() >= 2, "{runs}");
    assert!(runs.contains("reconcile"), "a reconcile after the ingest that loaded: {runs}");
    let (_, loads, _) = run(&db, &["loads"]);
    assert_eq!(loads.lines().filter(|l| l.contains("bill-2026-10.csv")).count(), 1, "{loads}");
}

#[test]
fn sighup_with_a_broken_config_keeps_the_running_one() {
    let dir = tempfile::tempdir().expect("tmp");
    let db = sqlite_url(dir.path());
    let port = free_port();
    let b = bills(dir.path());
    let cfg = write_config(dir.path(), &db, port, &b, "0 0 0 1 1 *", "");
    let d = Daemon::start(&cfg, dir.path(), "hup", port);
    std::fs::write(&cfg, "sources: [ { name: x, type: nope } ]\n").expect("break");
    d.signal("HUP");
    wait_until("the rejection in the log", Duration::from_secs(10), || d.log().contains("keeping the running one"));
    assert_eq!(get(port, "/healthz").map(|r| r.0), Some(200), "still up");
    // A good config is taken: the source now runs every second.
    write_config(dir.path(), &db, port, &b, "* * * * * *", "");
    d.signal("HUP");
    wait_until("the reload", Duration::from_secs(10), || d.log().contains("config reloaded"));
    wait_until("an ingest with the new schedule", Duration::from_secs(20), || {
        get(port, "/metrics").is_some_and(|(_, m)| m.contains("costledger_rows_ingested_total{source=\"drop\"} 172"))
    });
    let (code, _, _) = d.stop();
    assert_eq!(code, Some(0));
}

#[test]
fn sigterm_during_a_long_import_leaves_the_old_or_the_new_bill() {
    let dir = tempfile::tempdir().expect("tmp");
    let db = sqlite_url(dir.path());
    let port = free_port();
    let b = dir.path().join("bills");
    std::fs::create_dir_all(&b).expect("mkdir");
    let (code, _, err) =
        run(&db, &["sample", "--rows", "400000", "--seed", "4", "--out", b.join("big.csv").to_str().expect("p")]);
    assert_eq!(code, 0, "{err}");
    let cfg = write_config(dir.path(), &db, port, &b, "* * * * * *", "");
    let d = Daemon::start(&cfg, dir.path(), "term", port);
    // Generous: on a loaded 2-core CI machine, with the other daemon tests running beside this
    // one, a debug build has been seen to take over 30 s to fire its first tick.
    let t0 = Instant::now();
    while !d.log().contains("\"job\":\"ingest\"") {
        assert!(t0.elapsed() < Duration::from_secs(120), "the import did not start within 120 s; log:\n{}", d.log());
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_millis(500));
    let (code, took, log) = d.stop();
    assert_eq!(code, Some(0), "{log}");
    // Grace 2 s, then the load is cancelled; exits promptly.
    assert!(took < Duration::from_secs(20), "stopped in {took:?}\n{log}");
    let rt = tokio::runtime::Runtime::new().expect("rt");
    let (current, staging) = rt.block_on(async {
        let s = costledger::ledger::open(&db).await.expect("open");
        let loads = s.loads(&costledger::ledger::LoadFilter::default()).await.expect("loads");
        let current = loads.iter().filter(|l| l.state == costledger::ledger::LoadState::Current).count();
        let staging = loads.iter().filter(|l| l.state == costledger::ledger::LoadState::Staging).count();
        let n = s.count_charges(&costledger::ledger::ChargeFilter::default()).await.expect("n");
        assert!(n == 0 || n == 400_000, "all or nothing: {n} lines visible");
        (current, staging)
    });
    assert!(current <= 1);
    assert_eq!(staging, 0, "a cancelled load is failed and its rows deleted, never left staging");
}

#[test]
fn two_replicas_on_postgres_run_every_tick_exactly_once() {
    let Some(_) = pg_url() else {
        eprintln!("skipped: {PG_ENV} is not set");
        return;
    };
    let rt = tokio::runtime::Runtime::new().expect("rt");
    let url = rt.block_on(pg_schema_url()).expect("pg");
    let dir = tempfile::tempdir().expect("tmp");
    let b = bills(dir.path());
    let (p1, p2) = (free_port(), free_port());
    let d1dir = dir.path().join("r1");
    let d2dir = dir.path().join("r2");
    std::fs::create_dir_all(&d1dir).expect("mkdir");
    std::fs::create_dir_all(&d2dir).expect("mkdir");
    // The password is a secret: it must never appear in the logs (trust auth ignores it).
    let secret_url = url.replacen("postgres://postgres@", "postgres://postgres:${TEST_SECRET_PASSWORD}@", 1);
    assert_ne!(secret_url, url, "the test URL has the expected shape");
    let c1 = write_config(&d1dir, &secret_url, p1, &b, "* * * * * *", "");
    let c2 = write_config(&d2dir, &secret_url, p2, &b, "* * * * * *", "");
    let r1 = Daemon::start(&c1, &d1dir, "r1", p1);
    let r2 = Daemon::start(&c2, &d2dir, "r2", p2);
    std::thread::sleep(Duration::from_secs(30));
    let (code1, _, log1) = r1.stop();
    let (code2, _, log2) = r2.stop();
    assert_eq!((code1, code2), (Some(0), Some(0)), "{log1}\n{log2}");
    for log in [&log1, &log2] {
        assert!(!log.contains("S3cretP4ss"), "a secret reached the log:\n{log}");
    }
    rt.block_on(async {
        use sqlx::Connection;
        let mut c = sqlx::PgConnection::connect(&url).await.expect("connect");
        let dup: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM (SELECT job, source, tick FROM runs WHERE tick IS NOT NULL \
             GROUP BY 1, 2, 3 HAVING COUNT(*) > 1) d",
        )
        .fetch_one(&mut c)
        .await
        .expect("q");
        assert_eq!(dup, 0, "a tick ran twice");
        let ticks: i64 = sqlx::query_scalar("SELECT COUNT(DISTINCT tick) FROM runs WHERE job = 'ingest'")
            .fetch_one(&mut c)
            .await
            .expect("q");
        assert!(ticks >= 25, "about one tick per second for 30 s: {ticks}");
        let loads: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM loads").fetch_one(&mut c).await.expect("q");
        assert_eq!(loads, 1, "the bill was loaded once, by one replica");
    });
    let both = log1.contains("run finished") && log2.contains("run finished");
    let claimed = log1.contains("claimed by another replica") || log2.contains("claimed by another replica");
    assert!(both || claimed, "the replicas competed for the ticks");
}

#[test]
fn deployment_files_are_valid_and_consistent() {
    use serde::Deserialize;
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/deploy");
    let text = std::fs::read_to_string(root.join("kubernetes/costledger.yaml")).expect("manifest");
    let docs: Vec<serde_yaml::Value> = serde_yaml::Deserializer::from_str(&text)
        .map(|d| serde_yaml::Value::deserialize(d).expect("valid YAML"))
        .collect();
    let kind = |k: &str| docs.iter().find(|d| d["kind"] == k).unwrap_or_else(|| panic!("no {k}"));
    let dep = kind("Deployment");
    assert_eq!(dep["spec"]["replicas"], 2);
    let pod = &dep["spec"]["template"]["spec"];
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    let c = &pod["containers"][0];
    assert_eq!(c["securityContext"]["readOnlyRootFilesystem"], true);
    let port_name = c["ports"][0]["name"].as_str().expect("port name");
    let container_port = c["ports"][0]["containerPort"].as_u64().expect("port");
    for (probe, path) in [("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")] {
        assert_eq!(c[probe]["httpGet"]["path"], path);
        assert_eq!(c[probe]["httpGet"]["port"], port_name);
    }
    assert!(c["resources"]["limits"]["memory"].is_string());
    // The ConfigMap's config is valid for this binary and binds the probed port.
    let cm = kind("ConfigMap");
    let cfg_text = cm["data"]["costledger.yaml"].as_str().expect("config");
    let env = |k: &str| match k {
        "PGPASSWORD" => Some("x".to_string()),
        "COSTLEDGER_API_TOKEN" => Some("0123456789abcdef0123456789abcdef".to_string()),
        _ => None,
    };
    let cfg = costledger::config::Config::parse(cfg_text, &env).expect("the ConfigMap's config validates");
    // It binds 0.0.0.0, so the daemon would refuse to start without API tokens.
    costledger::api::check_exposure(&cfg).expect("the API is protected by a token");
    let c0 = &kind("Deployment")["spec"]["template"]["spec"]["containers"][0];
    assert!(
        c0["env"].as_sequence().expect("env").iter().any(|e| e["name"] == "COSTLEDGER_API_TOKEN"),
        "the token comes from the Secret"
    );
    assert_eq!(u64::from(cfg.server_bind.port()), container_port);
    assert!(cfg.database.as_ref().is_some_and(|d| d.is_postgres()), "replicas need PostgreSQL");
    let svc = kind("Service");
    assert_eq!(svc["spec"]["ports"][0]["targetPort"], port_name);
    assert_eq!(svc["metadata"]["annotations"]["prometheus.io/path"], "/metrics");
    assert!(kind("Secret")["stringData"]["PGPASSWORD"].is_string());
    assert!(kind("Secret")["stringData"]["COSTLEDGER_API_TOKEN"].is_string());
    let unit = std::fs::read_to_string(root.join("systemd/costledger.service")).expect("unit");
    for line in [
        "Type=notify",
        "ExecReload=/bin/kill -HUP $MAINPID",
        "WatchdogSec=",
        "DynamicUser=yes",
        "StateDirectory=costledger",
        "ProtectSystem=strict",
        "NoNewPrivileges=yes",
        "EnvironmentFile=-/etc/costledger/costledger.env",
    ] {
        assert!(unit.lines().any(|l| l.starts_with(line)), "the unit lacks {line}");
    }
    assert!(unit.contains(" run"), "the unit runs the daemon");
}

#[test]
fn systemd_notifications_ready_watchdog_stopping() {
    use std::os::unix::net::UnixDatagram;
    let dir = tempfile::tempdir().expect("tmp");
    let db = sqlite_url(dir.path());
    let port = free_port();
    let cfg = write_config(dir.path(), &db, port, &bills(dir.path()), "0 0 0 1 1 *", "");
    let sock_path = dir.path().join("notify.sock");
    let sock = UnixDatagram::bind(&sock_path).expect("bind");
    sock.set_read_timeout(Some(Duration::from_secs(20))).expect("timeout");
    // WATCHDOG_PID must be the daemon's pid: `exec` keeps the shell's.
    let mut child = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "WATCHDOG_PID=$$ WATCHDOG_USEC=400000 exec '{}' --config '{}' run",
            env!("CARGO_BIN_EXE_costledger"),
            cfg.display()
        ))
        .env("NOTIFY_SOCKET", &sock_path)
        .env_remove("COSTLEDGER_DATABASE_URL")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn");
    let mut seen: Vec<String> = Vec::new();
    let next = |seen: &mut Vec<String>| {
        let mut buf = [0u8; 256];
        let n = sock.recv(&mut buf).expect("a notification");
        seen.push(String::from_utf8_lossy(&buf[..n]).into_owned());
    };
    while !seen.iter().any(|m| m.contains("READY=1")) {
        next(&mut seen);
    }
    while !seen.iter().any(|m| m.contains("WATCHDOG=1")) {
        next(&mut seen);
    }
    Command::new("kill").args(["-TERM", &child.id().to_string()]).status().expect("kill");
    while !seen.iter().any(|m| m.contains("STOPPING=1")) {
        next(&mut seen);
    }
    assert_eq!(child.wait().expect("wait").code(), Some(0));
}

/// Stop a PostgreSQL cluster the test created itself: the daemon stays up, /readyz turns 503 and
/// back to 200, and runs succeed again. Needs root and Debian's pg_createcluster (CI has both);
/// skipped elsewhere unless COSTLEDGER_TEST_PG_OUTAGE=1 demands it.
#[test]
fn a_database_outage_is_survived() {
    let required = std::env::var("COSTLEDGER_TEST_PG_OUTAGE").is_ok_and(|v| v == "1");
    let version = std::fs::read_dir("/etc/postgresql")
        .ok()
        .and_then(|d| d.filter_map(|e| e.ok()).map(|e| e.file_name().to_string_lossy().into_owned()).max());
    let root = Command::new("id").arg("-u").output().map(|o| o.stdout == b"0\n").unwrap_or(false);
    let (Some(version), true) = (version, root && Path::new("/usr/bin/pg_createcluster").exists()) else {
        assert!(!required, "COSTLEDGER_TEST_PG_OUTAGE=1 but pg_createcluster or root is missing");
        eprintln!("skipped: needs root and pg_createcluster");
        return;
    };
    let pg_port = free_port();
    let name = format!("cl{}", std::process::id());
    let ctl = |args: &[&str]| {
        let out = Command::new("pg_ctlcluster")
            .arg("--skip-systemctl-redirect")
            .arg(&version)
            .arg(&name)
            .args(args)
            .output()
            .expect("pg_ctlcluster");
        assert!(out.status.success(), "pg_ctlcluster {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    };
    struct Drop_(String, String);
    impl Drop for Drop_ {
        fn drop(&mut self) {
            let _ = Command::new("pg_dropcluster").args(["--stop", &self.0, &self.1]).output();
        }
    }
    let out = Command::new("pg_createcluster")
        .args([&version, &name, "-p", &pg_port.to_string(), "--", "--auth=trust"])
        .output()
        .expect("pg_createcluster");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let _cleanup = Drop_(version.clone(), name.clone());
    ctl(&["start"]);
    let url = format!("postgres://postgres@127.0.0.1:{pg_port}/postgres");
    let dir = tempfile::tempdir().expect("tmp");
    let port = free_port();
    let cfg = write_config(dir.path(), &url, port, &bills(dir.path()), "* * * * * *", "");
    let d = Daemon::start(&cfg, dir.path(), "outage", port);
    wait_until("ready", Duration::from_secs(20), || get(port, "/readyz").is_some_and(|r| r.0 == 200));
    ctl(&["stop", "-m", "fast"]);
    wait_until("/readyz to turn 503", Duration::from_secs(30), || get(port, "/readyz").is_some_and(|r| r.0 == 503));
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(get(port, "/healthz").map(|r| r.0), Some(200), "the daemon stays up during the outage");
    ctl(&["start"]);
    wait_until("/readyz to turn 200 again", Duration::from_secs(60), || {
        get(port, "/readyz").is_some_and(|r| r.0 == 200)
    });
    let before = ok_runs(&url);
    wait_until("runs to succeed again", Duration::from_secs(30), || ok_runs(&url) > before);
    let (code, _, log) = d.stop();
    assert_eq!(code, Some(0), "{log}");
}

fn ok_runs(url: &str) -> i64 {
    let rt = tokio::runtime::Runtime::new().expect("rt");
    rt.block_on(async {
        use sqlx::Connection;
        let Ok(mut c) = sqlx::PgConnection::connect(url).await else { return 0 };
        sqlx::query_scalar("SELECT COUNT(*) FROM runs WHERE status = 'ok'").fetch_one(&mut c).await.unwrap_or(0)
    })
}

/// Half-sent requests are shed: the header-read timeout closes them, a connection limit
/// refuses the excess (counted), and `/healthz` keeps answering.
#[test]
fn half_sent_requests_are_closed_and_health_keeps_answering() {
    let dir = tempfile::tempdir().expect("tmp");
    let db = sqlite_url(dir.path());
    let port = free_port();
    let b = bills(dir.path());
    let cfg = dir.path().join("costledger.yaml");
    std::fs::write(
        &cfg,
        format!(
            "database: \"{db}\"\nserver: {{ bind: \"127.0.0.1:{port}\", header_timeout_secs: 1, max_connections: 4 }}\n\
             daemon: {{ shutdown_grace_secs: 2 }}\nsources:\n  - name: drop\n    type: focus\n    path: {}\n    schedule: \"0 0 0 1 1 *\"\n",
            b.display()
        ),
    )
    .expect("config");
    let d = Daemon::start(&cfg, dir.path(), "slow", port);
    // Twelve clients that send part of a request and then nothing.
    let mut idle: Vec<TcpStream> = (0..12)
        .map(|_| {
            let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
            let _ = s.write_all(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n");
            s.set_read_timeout(Some(Duration::from_secs(20))).expect("timeout");
            s
        })
        .collect();
    // Every one of them is closed by the server (refused at once, or after the header timeout),
    // never held open: reading ends (EOF or reset) well before the client's own 20 s timeout.
    for s in &mut idle {
        let t0 = Instant::now();
        let mut buf = [0u8; 256];
        let r = s.read(&mut buf);
        assert!(
            t0.elapsed() < Duration::from_secs(15),
            "a half-sent request was held open ({r:?} after {:?})",
            t0.elapsed()
        );
    }
    wait_until("/healthz after the idle clients", Duration::from_secs(10), || {
        get(port, "/healthz").is_some_and(|r| r.0 == 200)
    });
    let metrics = get(port, "/metrics").expect("metrics").1;
    let refused = metrics
        .lines()
        .find(|l| l.starts_with("costledger_http_connections_refused_total"))
        .and_then(|l| l.split_whitespace().last())
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(0);
    assert!(refused >= 1, "connections over the limit are counted as refused:\n{metrics}");
    let (code, _, log) = d.stop();
    assert_eq!(code, Some(0), "{log}");
}
