use std::process::ExitCode;

use clap::Parser;
use costledger::cli::{Cli, LogFormat, run};
use tracing_subscriber::EnvFilter;

/// Import moves millions of small allocations between the parser thread and the loader;
/// mimalloc handles cross-thread frees far better than the system allocator.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Exit status when stdout is closed by its reader (`costledger loads | head -1`): what a Unix
/// filter killed by SIGPIPE reports (128 + 13), without a panic message.
const EXIT_BROKEN_PIPE: i32 = 141;

/// `println!` panics when stdout's reader has gone; that is not a bug to report, so the process
/// exits quietly. Everything committed so far stays committed (every load is one transaction).
fn quiet_on_broken_pipe() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let msg = info
            .payload()
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| info.payload().downcast_ref::<&str>().copied())
            .unwrap_or("");
        if msg.contains("failed printing to stdout") && msg.contains("Broken pipe") {
            std::process::exit(EXIT_BROKEN_PIPE);
        }
        default(info);
    }));
}

/// The log filter for a verbosity: our own crates at the level asked, the SDKs, HTTP clients,
/// the SQL driver and the scheduler at `warn` unless `-vvv` (their debug output names access
/// key ids, and sqlx's "slow statement" warnings are noise for a bulk loader). `RUST_LOG`
/// overrides everything.
fn log_filter(verbose: u8, daemon: bool) -> String {
    let ours = match verbose {
        // The daemon logs its runs at info; one-shot commands print their own output.
        0 if daemon => "info",
        0 => "warn",
        1 => "info",
        _ => "debug",
    };
    if verbose >= 3 {
        return "debug".into();
    }
    let quiet = [
        "aws_config",
        "aws_smithy_runtime",
        "aws_smithy_runtime_api",
        "aws_sdk_s3",
        "aws_sdk_costexplorer",
        "aws_sigv4",
        "hyper",
        "hyper_util",
        "reqwest",
        "rustls",
        "h2",
        "azure_core",
        "azure_storage_blob",
        "azure_identity",
        "tokio_cron_scheduler",
        "tower_http",
    ];
    let mut f = ours.to_string();
    for c in quiet {
        f.push_str(&format!(",{c}=warn"));
    }
    // sqlx logs every statement at debug and slow ones at warn: show them only when asked.
    f.push_str(if verbose >= 1 { ",sqlx=info" } else { ",sqlx=error" });
    f
}

/// The error and its causes, each cause shown once: a cause whose text the message already
/// holds (an error that embeds its source's text) is not repeated.
fn chain_text(e: &anyhow::Error) -> String {
    let mut out = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if text.is_empty() || out.contains(&text) {
            continue;
        }
        if !out.is_empty() {
            out.push_str(": ");
        }
        out.push_str(&text);
    }
    out
}

fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| c.downcast_ref::<std::io::Error>().is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe))
}

/// Colour only on a terminal, and never when `NO_COLOR` is set (https://no-color.org).
fn use_ansi() -> bool {
    use std::io::IsTerminal;
    std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}

fn main() -> ExitCode {
    quiet_on_broken_pipe();
    let cli = Cli::parse();
    let daemon = matches!(cli.command, costledger::cli::Command::Run);
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(log_filter(cli.verbose, daemon)));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_ansi(use_ansi());
    match cli.log_format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
    let rt = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(2);
        }
    };
    match rt.block_on(run(cli)) {
        Ok(code) => code,
        // Output written through a writer (export to stdout) fails with EPIPE instead.
        Err(e) if is_broken_pipe(&e) => ExitCode::from(EXIT_BROKEN_PIPE as u8),
        Err(e) => {
            eprintln!("error: {}", chain_text(&e));
            ExitCode::from(2)
        }
    }
}
