//! Operational hardening of the `costledger` binary: hostile files stay bounded, no secret is
//! printed, output paths are never replaced unless regular, a closed pipe is a quiet exit.

use std::io::{Read, Write};
use std::os::unix::fs::FileTypeExt;
use std::path::Path;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use crate::common::*;

const HEAD: &str = "BilledCost,BillingCurrency,BillingAccountId,BillingPeriodStart,BillingPeriodEnd,ChargePeriodStart,ChargePeriodEnd,ChargeCategory,ChargeDescription";

fn row(amount: &str, desc: &str) -> String {
    format!("{amount},USD,A1,2026-10-01,2026-11-01,2026-10-02,2026-10-03,Usage,{desc}\n")
}

fn mkfifo(p: &Path) {
    assert!(std::process::Command::new("mkfifo").arg(p).status().expect("mkfifo").success());
}

/// Wait for a child with a deadline (a hang is a failure, not a stuck test run).
fn wait_for(mut child: Child, limit: Duration) -> (i32, String, String) {
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait().expect("wait") {
            let mut out = String::new();
            let mut err = String::new();
            if let Some(mut o) = child.stdout.take() {
                let _ = o.read_to_string(&mut out);
            }
            if let Some(mut e) = child.stderr.take() {
                let _ = e.read_to_string(&mut err);
            }
            return (status.code().unwrap_or(-1), out, err);
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            panic!("costledger did not finish within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_fifo_in_a_source_directory_is_skipped_with_a_note_and_never_hangs() {
    let dir = tempfile::tempdir().expect("tmp");
    let bills = dir.path().join("bills");
    std::fs::create_dir(&bills).expect("dir");
    std::fs::write(bills.join("oct.csv"), format!("{HEAD}\n{}", row("1.50", "a"))).expect("write");
    mkfifo(&bills.join("pipe.csv"));
    let db = sqlite_url(dir.path());
    let child = bin()
        .args(["--database", &db, "import", "--format", "focus"])
        .arg(&bills)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let (code, out, err) = wait_for(child, Duration::from_secs(60));
    assert_eq!(code, 0, "{out}{err}");
    assert!(err.contains("pipe.csv") && err.contains("not a regular file"), "{err}");
    assert!(out.contains("oct.csv"), "{out}");
    let (_, loads, _) = run(&db, &["loads"]);
    assert_eq!(loads.lines().filter(|l| l.contains("current")).count(), 1, "{loads}");
    // Named directly, a FIFO is refused with the reason, not read.
    let child = bin()
        .args(["--database", &db, "import", "--format", "focus"])
        .arg(bills.join("pipe.csv"))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let (code, _, err) = wait_for(child, Duration::from_secs(60));
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("is not a regular file"), "{err}");
}

#[test]
fn export_into_a_fifo_or_a_device_link_writes_through_and_replaces_nothing() {
    let dir = tempfile::tempdir().expect("tmp");
    let db = sqlite_url(dir.path());
    let bill = dir.path().join("b.csv");
    std::fs::write(&bill, format!("{HEAD}\n{}{}", row("1.50", "a"), row("2.25", "b"))).expect("write");
    let (code, _, err) = run(&db, &["import", "--format", "focus", bill.to_str().expect("utf8")]);
    assert_eq!(code, 0, "{err}");

    // A FIFO: the CSV arrives through it; it stays a FIFO; no temporary file beside it.
    let out_dir = dir.path().join("out");
    std::fs::create_dir(&out_dir).expect("dir");
    let fifo = out_dir.join("export.csv");
    mkfifo(&fifo);
    let reader = {
        let fifo = fifo.clone();
        std::thread::spawn(move || std::fs::read_to_string(fifo).expect("read fifo"))
    };
    let (code, _, err) = run(&db, &["export", "csv", "--out", fifo.to_str().expect("utf8")]);
    assert_eq!(code, 0, "{err}");
    let csv = reader.join().expect("reader");
    assert!(csv.contains("1.5") && csv.contains("2.25"), "{csv}");
    assert!(std::fs::metadata(&fifo).expect("meta").file_type().is_fifo());
    assert_eq!(std::fs::read_dir(&out_dir).expect("ls").count(), 1, "nothing created beside the FIFO");

    // A symlink to /dev/null: written through, the device and the link stay as they are.
    let null = out_dir.join("null.csv");
    std::os::unix::fs::symlink("/dev/null", &null).expect("symlink");
    let (code, _, err) = run(&db, &["export", "csv", "--out", null.to_str().expect("utf8")]);
    assert_eq!(code, 0, "{err}");
    assert!(std::fs::metadata("/dev/null").expect("meta").file_type().is_char_device());
    assert!(std::fs::symlink_metadata(&null).expect("meta").file_type().is_symlink());
    assert_eq!(std::fs::read_dir(&out_dir).expect("ls").count(), 2);

    // `sample` to a FIFO as well.
    let fifo2 = out_dir.join("sample.csv");
    mkfifo(&fifo2);
    let reader = {
        let fifo2 = fifo2.clone();
        std::thread::spawn(move || std::fs::read_to_string(fifo2).expect("read fifo").lines().count())
    };
    let out = bin().args(["sample", "--rows", "10", "--out"]).arg(&fifo2).output().expect("run");
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(reader.join().expect("reader"), 11);
    assert!(std::fs::metadata(&fifo2).expect("meta").file_type().is_fifo());
}

#[test]
fn a_closed_stdout_is_a_quiet_exit_not_a_panic() {
    let dir = tempfile::tempdir().expect("tmp");
    let db = sqlite_url(dir.path());
    // 4,000 quarantined rows: far more output than a pipe holds.
    let mut text = format!("{HEAD}\n");
    for i in 0..4000 {
        text.push_str(&row("not-a-number", &format!("row {i} {}", "x".repeat(60))));
    }
    let bill = dir.path().join("bad.csv");
    std::fs::write(&bill, text).expect("write");
    let (code, out, err) = run(&db, &["import", "--format", "focus", bill.to_str().expect("utf8")]);
    assert_eq!(code, 0, "{out}{err}");
    for args in [vec!["quarantine", "--load", "1"], vec!["export", "csv"], vec!["loads"]] {
        let mut child = bin()
            .args(["--database", &db])
            .args(&args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn");
        // Read one byte, then close the pipe, as `| head -c1` does.
        let mut stdout = child.stdout.take().expect("stdout");
        let mut one = [0u8; 1];
        let _ = stdout.read(&mut one);
        drop(stdout);
        let (code, _, err) = wait_for(child, Duration::from_secs(60));
        assert!(!err.contains("panicked"), "{args:?}: {err}");
        assert!(code == 0 || code == 141, "{args:?}: exit {code}: {err}");
        assert!(!err.contains("Broken pipe"), "{args:?}: {err}");
    }
}

#[test]
fn quarantine_of_a_load_that_does_not_exist_is_an_error() {
    let dir = tempfile::tempdir().expect("tmp");
    let db = sqlite_url(dir.path());
    let (code, out, err) = run(&db, &["quarantine", "--load", "999"]);
    assert_eq!(code, 2, "{out}");
    assert!(err.contains("there is no load 999"), "{err}");
}

#[test]
fn a_record_longer_than_the_limit_is_quarantined_with_its_line_and_the_rest_loads() {
    let dir = tempfile::tempdir().expect("tmp");
    let db = sqlite_url(dir.path());
    let cfg = dir.path().join("c.yaml");
    std::fs::write(&cfg, "ingest: { max_record_bytes: 65536 }\n").expect("cfg");
    let bill = dir.path().join("long.csv");
    let mut f = std::io::BufWriter::new(std::fs::File::create(&bill).expect("create"));
    write!(f, "{HEAD}\n{}", row("1.25", "a")).expect("w");
    // Line 3: 4 MiB with no line break inside, then a good line 4.
    f.write_all(&vec![b'7'; 4 << 20]).expect("w");
    write!(f, "\n{}", row("2.50", "b")).expect("w");
    drop(f);
    let out = bin()
        .args(["--database", &db, "--config"])
        .arg(&cfg)
        .args(["import", "--format", "focus"])
        .arg(&bill)
        .output()
        .expect("run");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{err}");
    let (_, q, _) = run(&db, &["quarantine", "--load", "1"]);
    assert!(q.contains("long.csv:3"), "{q}");
    assert!(q.contains("longer than the 65536-byte limit for one record (ingest.max_record_bytes)"), "{q}");
    let csv = {
        let (code, out, err) = run(&db, &["export", "csv"]);
        assert_eq!(code, 0, "{err}");
        out
    };
    assert_eq!(csv.lines().count(), 3, "header and the two good lines: {csv}");
}

#[test]
fn a_gzip_that_expands_too_far_is_refused_with_the_ratio() {
    let dir = tempfile::tempdir().expect("tmp");
    let db = sqlite_url(dir.path());
    let bill = dir.path().join("zeros.csv.gz");
    {
        let f = std::fs::File::create(&bill).expect("create");
        let mut gz = flate2::write::GzEncoder::new(f, flate2::Compression::best());
        writeln!(gz, "{HEAD}").expect("w");
        let zeros = vec![0u8; 1 << 20];
        for _ in 0..160 {
            gz.write_all(&zeros).expect("w");
        }
        gz.finish().expect("finish");
    }
    let (code, out, err) = run(&db, &["import", "--format", "focus", bill.to_str().expect("utf8")]);
    let text = format!("{out}{err}");
    assert_eq!(code, 2, "{text}");
    assert!(text.contains("zeros.csv.gz:2: the compressed file expands more than 200×"), "{text}");
    assert!(text.contains("ingest.max_decompression_ratio"), "{text}");
    assert!(text.contains("fix the input as the message says"), "{text}");
    let (_, loads, _) = run(&db, &["loads"]);
    assert!(!loads.contains("current"), "nothing loaded: {loads}");
}

/// Every command, given a database URL with planted credentials, prints none of them (text and
/// JSON logs, at -vv), and an unreachable server is named with the real cause.
#[test]
fn no_planted_secret_appears_in_any_output() {
    let dir = tempfile::tempdir().expect("tmp");
    let cfg = dir.path().join("c.yaml");
    let url = "postgres://cl:PLANTED1@ss@127.0.0.1:1/ledger?password=PLANTED2&sslpassword=PLANTED3&sslmode=disable";
    std::fs::write(&cfg, format!("database: \"{url}\"\n")).expect("cfg");
    let bill = fixture("focus/focus_sample.csv");
    let bill = bill.to_str().expect("utf8");
    let commands: Vec<Vec<&str>> = vec![
        vec!["check-config"],
        vec!["migrate"],
        vec!["loads"],
        vec!["periods"],
        vec!["findings"],
        vec!["runs"],
        vec!["quarantine", "--load", "1"],
        vec!["import", "--format", "focus", bill],
        vec!["reconcile"],
        vec!["export", "csv"],
        vec!["report", "weekly", "--week", "2024-W40"],
    ];
    for via_config in [false, true] {
        for cmd in &commands {
            for log in [["--log-format", "text"], ["--log-format", "json"]] {
                let mut c = bin();
                c.env_remove("RUST_LOG").arg("-vv").args(log);
                if via_config {
                    c.arg("--config").arg(&cfg);
                } else {
                    c.args(["--database", url]);
                }
                let out = c.args(cmd).output().expect("run");
                let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
                assert!(!text.contains("PLANTED"), "{cmd:?} (config: {via_config}) printed a secret:\n{text}");
                if cmd[0] != "check-config" {
                    assert_eq!(out.status.code(), Some(2), "{cmd:?}: {text}");
                    assert!(text.contains("connection refused"), "{cmd:?}: the real cause is named:\n{text}");
                    if log[1] == "text" {
                        assert_eq!(text.matches("connection refused").count(), 1, "said once:\n{text}");
                    }
                    assert!(text.contains("127.0.0.1:1"), "{cmd:?}: {text}");
                }
            }
        }
    }
}

/// The same search against a reachable PostgreSQL (trust auth ignores the password): the
/// commands succeed and print no credential, and the unsupported parameter is named without
/// its value.
#[test]
fn no_planted_secret_appears_when_the_database_is_reachable() {
    let Some(base) = pg_url() else {
        eprintln!("skipped: {PG_ENV} is not set");
        return;
    };
    let rt = tokio::runtime::Runtime::new().expect("rt");
    let url = rt.block_on(pg_schema_url()).expect("schema");
    // Plant a password in the userinfo and an unsupported credential parameter.
    let url = url.replacen("://", "://postgres:PLANTEDpw@", 1).replacen("@postgres@", "@", 1);
    let url = format!("{url}&sslpassword=PLANTED3");
    assert!(base.starts_with("postgres"));
    let bill = fixture("focus/focus_sample.csv");
    for cmd in [
        vec!["migrate"],
        vec!["import", "--format", "focus", bill.to_str().expect("utf8")],
        vec!["loads"],
        vec!["reconcile"],
    ] {
        let out = bin().env_remove("RUST_LOG").arg("-vv").args(["--database", &url]).args(&cmd).output().expect("run");
        let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        assert!(!text.contains("PLANTED"), "{cmd:?} printed a secret:\n{text}");
        assert!(matches!(out.status.code(), Some(0 | 1)), "{cmd:?}: {text}");
        if cmd[0] == "migrate" {
            assert!(text.contains("sslpassword") && text.contains("not supported"), "{text}");
            assert!(text.contains("postgres:***@"), "{text}");
        }
    }
}

#[test]
fn the_daemon_lock_is_taken_on_the_real_path_and_the_inode_of_the_database() {
    let dir = tempfile::tempdir().expect("tmp");
    let real = dir.path().join("ledger.db");
    std::fs::write(&real, b"").expect("db");
    let link = dir.path().join("alias.db");
    std::os::unix::fs::symlink(&real, &link).expect("symlink");
    let first = costledger::daemon::lock_sqlite(&format!("sqlite://{}", real.display())).expect("first lock");
    assert!(first.is_some());
    let second = costledger::daemon::lock_sqlite(&format!("sqlite://{}", link.display()));
    let e = second.err().expect("the symlinked path finds the same lock");
    assert!(e.to_string().contains("another costledger daemon is already running"), "{e}");
    // Another spelling of the same path, too.
    let dotted = format!("sqlite://{}/./ledger.db", dir.path().display());
    assert!(costledger::daemon::lock_sqlite(&dotted).is_err());
    // A hard link in another directory: another canonical path, the same inode.
    let other = dir.path().join("elsewhere");
    std::fs::create_dir(&other).expect("dir");
    let hard = other.join("same.db");
    std::fs::hard_link(&real, &hard).expect("hard link");
    let e = costledger::daemon::lock_sqlite(&format!("sqlite://{}", hard.display()))
        .err()
        .expect("the hard link finds the database's lock");
    assert!(e.to_string().contains("another costledger daemon is already running"), "{e}");
    drop(first);
    assert!(costledger::daemon::lock_sqlite(&format!("sqlite://{}", hard.display())).expect("free again").is_some());
}

/// A PostgreSQL role with data privileges only (no DDL) runs every command on an up-to-date
/// ledger; on a ledger that needs migrating, the error says to run `costledger migrate`.
#[test]
fn a_role_without_ddl_privileges_uses_an_up_to_date_ledger() {
    let Some(base) = pg_url() else {
        eprintln!("skipped: {PG_ENV} is not set");
        return;
    };
    let rt = tokio::runtime::Runtime::new().expect("rt");
    let url = rt.block_on(pg_schema_url()).expect("schema");
    let schema = url.rsplit("search_path]=").next().expect("schema").to_string();
    let role = format!("cl_dataonly_{}", std::process::id());
    let admin = |sql: String| {
        rt.block_on(async {
            use sqlx::Connection;
            let mut c = sqlx::PgConnection::connect(&base).await.expect("connect");
            sqlx::raw_sql(sqlx::AssertSqlSafe(sql)).execute(&mut c).await.expect("admin sql");
        })
    };
    admin(format!("DROP ROLE IF EXISTS {role}; CREATE ROLE {role} LOGIN; GRANT USAGE ON SCHEMA {schema} TO {role};"));
    // As that role, before the schema exists: a clear message, nothing created.
    let as_role = {
        let rest = url.split_once("://").expect("url").1;
        let rest = rest.split_once('@').map(|(_, r)| r).unwrap_or(rest);
        format!("postgres://{role}@{rest}")
    };
    let (code, _, err) = run(&as_role, &["loads"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("run `costledger migrate` once as a database role that may create and alter tables"), "{err}");
    // The owner migrates; the data-only role then works.
    let (code, _, err) = run(&url, &["migrate"]);
    assert_eq!(code, 0, "{err}");
    admin(format!(
        "GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA {schema} TO {role}; \
         GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA {schema} TO {role};"
    ));
    let bill = fixture("focus/focus_sample.csv");
    for cmd in [vec!["import", "--format", "focus", bill.to_str().expect("utf8")], vec!["loads"], vec!["reconcile"]] {
        let (code, out, err) = run(&as_role, &cmd);
        assert!(matches!(code, 0 | 1), "{cmd:?}: {out}{err}");
    }
    admin(format!("DROP OWNED BY {role}; DROP ROLE {role};"));
}

#[test]
fn help_describes_every_option_and_import_lists_every_format() {
    let out = bin().args(["import", "--help"]).output().expect("run");
    let help = String::from_utf8_lossy(&out.stdout);
    for format in ["focus", "aws-cur", "aws-cur2", "aws-focus", "azure-export", "gcp-export", "oci-cost", "oci-focus"] {
        assert!(help.contains(&format!("{format}:")), "{format} is described in import --help:\n{help}");
    }
    assert!(help.contains("Global options:"), "{help}");
    // Every option of every command has a description: clap prints a bare option line
    // otherwise.
    for cmd in [
        vec!["demo"],
        vec!["import"],
        vec!["ingest"],
        vec!["loads"],
        vec!["quarantine"],
        vec!["runs"],
        vec!["reconcile"],
        vec!["findings"],
        vec!["sample"],
        vec!["export", "csv"],
        vec!["report", "weekly"],
        vec!["fx", "import"],
        vec!["query"],
        vec!["rollup"],
    ] {
        let out = bin().args(&cmd).arg("--help").output().expect("run");
        let help = String::from_utf8_lossy(&out.stdout);
        let lines: Vec<&str> = help.lines().collect();
        for (i, l) in lines.iter().enumerate() {
            let t = l.trim_start();
            if t.starts_with("--") || (t.starts_with('-') && t.len() > 1 && t.as_bytes()[1].is_ascii_alphabetic()) {
                let described = t.split("  ").filter(|p| !p.trim().is_empty()).count() > 1
                    || lines.get(i + 1).is_some_and(|n| n.starts_with("          ") && !n.trim().is_empty());
                assert!(described, "{cmd:?}: option without a description: {l}\n{help}");
            }
        }
    }
}

#[test]
fn logs_have_no_colour_codes_when_stderr_is_not_a_terminal() {
    let dir = tempfile::tempdir().expect("tmp");
    let db = sqlite_url(dir.path());
    let bill = fixture("focus/focus_sample.csv");
    let out = bin()
        .env_remove("RUST_LOG")
        .env_remove("NO_COLOR")
        .args(["-vv", "--database", &db, "import", "--format", "focus"])
        .arg(&bill)
        .output()
        .expect("run");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!err.is_empty(), "-vv logs something");
    assert!(!err.contains('\u{1b}'), "no ANSI escape in a pipe: {err}");
}

/// A small tmpfs, unmounted on drop. Needs root (CAP_SYS_ADMIN); `.ci/run` sets
/// `COSTLEDGER_TEST_TMPFS=1` when it can mount one.
struct Tmpfs(std::path::PathBuf);

impl Tmpfs {
    fn mount(at: &Path, size: &str) -> Option<Tmpfs> {
        if std::env::var("COSTLEDGER_TEST_TMPFS").ok().as_deref() != Some("1") {
            eprintln!("COSTLEDGER_TEST_TMPFS is not 1: the full-disk test is skipped");
            return None;
        }
        std::fs::create_dir_all(at).expect("mount point");
        let ok = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(at)
            .status()
            .expect("mount");
        assert!(ok.success(), "COSTLEDGER_TEST_TMPFS=1 but a tmpfs could not be mounted at {}", at.display());
        Some(Tmpfs(at.to_path_buf()))
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

#[test]
fn a_full_disk_fails_the_load_keeps_no_staged_rows_and_recovers_once_space_is_free() {
    let dir = tempfile::tempdir().expect("tmp");
    let Some(_fs) = Tmpfs::mount(&dir.path().join("disk"), "4m") else { return };
    let disk = dir.path().join("disk");
    let db = sqlite_url(&disk);
    let bills = dir.path().join("bills");
    std::fs::create_dir(&bills).expect("dir");
    std::fs::write(bills.join("small.csv"), format!("{HEAD}\n{}{}", row("1.50", "a"), row("2.25", "b")))
        .expect("write");
    let (code, out, err) = run(&db, &["import", "--format", "focus", bills.join("small.csv").to_str().expect("utf8")]);
    assert_eq!(code, 0, "{out}{err}");
    // A bill far larger than the disk.
    let mut big = String::with_capacity(12 << 20);
    big.push_str(HEAD);
    big.push('\n');
    for i in 0..120_000 {
        big.push_str(&row("0.01", &format!("a long enough description to fill the disk quickly, row {i}")));
    }
    std::fs::write(bills.join("big.csv"), big).expect("write big");
    let (code, out, err) = run(&db, &["import", "--format", "focus", bills.join("big.csv").to_str().expect("utf8")]);
    assert_ne!(code, 0, "a bill larger than the disk must fail: {out}{err}");
    // Where the disk fills decides where the message lands: the delivery's FAILED line (stdout)
    // or the command's error (stderr). Either way it says what and what to do.
    let said = format!("{out}{err}");
    assert!(said.contains("disk holding the ledger is full") && said.contains("free space"), "{said}");
    assert!(
        !said.contains("Fix the input") && !said.contains("fix the input"),
        "a full disk is not the input's fault: {said}"
    );
    // Regression (CI): SQLite ended the transaction itself and the pooled connection was
    // reused as if still inside it, so marking the load failed broke on "begin_with at non-zero
    // transaction depth". (Marking it may still fail for want of space: then it is swept.)
    assert!(!said.contains("transaction depth"), "{said}");
    // Reading still works on the full disk.
    let (code, out, err) = run(&db, &["loads"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.lines().any(|l| l.contains("small.csv") && l.contains("current")), "{out}");
    // The failed load is marked failed when the disk still had room for that, else it stays
    // staging until the next start sweeps it.
    let big_line = out.lines().find(|l| l.contains("big.csv")).unwrap_or_default().to_string();
    assert!(big_line.contains("failed") || big_line.contains("staging"), "{out}");
    let left_staging = big_line.contains("staging");
    // Until space is freed, writing fails with the same clear message (never a partial bill).
    std::fs::write(bills.join("more.csv"), format!("{HEAD}\n{}", row("3.00", "c"))).expect("write");
    let (code, out, err) = run(&db, &["import", "--format", "focus", bills.join("more.csv").to_str().expect("utf8")]);
    assert_ne!(code, 0);
    assert!(format!("{out}{err}").contains("disk holding the ledger is full"), "{out}{err}");
    // The user frees space (the disk grows to 16 MB): the next import first sweeps the failed
    // load's staged rows, then loads, and the current bill is exactly the two small files.
    let remount =
        std::process::Command::new("mount").args(["-o", "remount,size=16m"]).arg(&disk).status().expect("remount");
    assert!(remount.success());
    let (code, out, err) = run(&db, &["import", "--format", "focus", bills.join("more.csv").to_str().expect("utf8")]);
    assert_eq!(code, 0, "once space is free, a small import must succeed: {out}{err}");
    assert_eq!(out.contains("swept 1 stale staging load"), left_staging, "{out}");
    let (code, out, err) = run(&db, &["loads"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.lines().any(|l| l.contains("big.csv") && l.contains("failed")), "{out}");
    assert!(!out.contains("staging"), "{out}");
    let csv = dir.path().join("all.csv");
    let (code, out, err) = run(&db, &["export", "csv", "--out", csv.to_str().expect("utf8")]);
    assert_eq!(code, 0, "{out}{err}");
    let text = std::fs::read_to_string(&csv).expect("read export");
    assert_eq!(
        text.lines().count(),
        4,
        "header + the 3 charges of the two small bills, nothing of the failed one: {text}"
    );
}
