//! Configuration: YAML text → `${VAR}` interpolation → validated typed [`Config`] (no IO
//! beyond reading the file and the environment). Every problem is reported at once, each with
//! its path (`sources[2].schedule: …`).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use croner::parser::{CronParser, Seconds};
use rust_decimal::Decimal;
use serde::Deserialize;
use serde_yaml::{Mapping, Value};

use crate::allocation::{AllocationConfig, parse_allocation};
pub use crate::config_issue::ConfigIssue;

/// Where the ledger lives when neither `--database`, `COSTLEDGER_DATABASE_URL` nor the config
/// says: a SQLite file in the working directory.
pub const DEFAULT_DATABASE: &str = "sqlite://costledger.db";

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read { path: String, source: std::io::Error },
    #[error("{file}: {} problem(s) in the configuration:\n{}", .issues.len(), .issues.iter().map(|i| format!("  - {i}")).collect::<Vec<_>>().join("\n"))]
    Invalid { file: String, issues: Vec<ConfigIssue> },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Retention {
    pub superseded_loads_days: u32,
    pub stale_staging_minutes: u32,
}

/// `checks.invoice_precision`: invoices are cent-rounded, the ledger is exact.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InvoicePrecision {
    /// The ledger total rounded half-to-even to the invoice amount's own decimal places
    /// (`4227.62` → 2) before comparing (default).
    Invoice,
    /// The exact ledger total against the invoice amount.
    Exact,
}

/// Thresholds of the reconciler's checks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChecksConfig {
    /// |ledger − invoice| above this is a finding (default 0: exact).
    pub invoice_tolerance: Decimal,
    /// How the ledger's exact total is compared with an invoice amount.
    pub invoice_precision: InvoicePrecision,
    /// |source A − source B| above this is a finding (default 0).
    pub cross_source_tolerance: Decimal,
    /// Tag coverage (percent of Usage cost carrying every required tag) below this is a finding.
    pub tag_coverage_target_percent: Decimal,
    /// Week-over-week change per owner or service above this percentage…
    pub anomaly_percent: Decimal,
    /// …and above this absolute amount (in the charge currency) is a finding…
    pub anomaly_min_amount: Decimal,
    /// …(or above this amount for the currencies listed: `{JPY: "15000"}`)…
    pub anomaly_min_amount_by_currency: BTreeMap<String, Decimal>,
    /// …and the change is at least this share of the week's spend in that currency.
    pub anomaly_min_share_percent: Decimal,
    /// A commitment whose utilisation (used ÷ (used + unused) EffectiveCost) is below this
    /// percentage is flagged in `commitments` and the weekly report (default 80).
    pub commitment_utilization_min: Decimal,
}

impl ChecksConfig {
    /// The smallest week-over-week change worth a finding in `currency`.
    pub fn anomaly_min_amount_for(&self, currency: &str) -> Decimal {
        self.anomaly_min_amount_by_currency.get(currency).copied().unwrap_or(self.anomaly_min_amount)
    }
}

impl Default for ChecksConfig {
    fn default() -> Self {
        ChecksConfig {
            invoice_tolerance: Decimal::ZERO,
            invoice_precision: InvoicePrecision::Invoice,
            cross_source_tolerance: Decimal::ZERO,
            tag_coverage_target_percent: Decimal::from(80),
            anomaly_percent: Decimal::from(50),
            anomaly_min_amount: Decimal::from(100),
            anomaly_min_amount_by_currency: BTreeMap::new(),
            anomaly_min_share_percent: Decimal::ONE,
            commitment_utilization_min: Decimal::from(80),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum ReportFormat {
    Md,
    Html,
    Csv,
}

impl ReportFormat {
    pub fn parse(s: &str) -> Option<ReportFormat> {
        match s.trim().to_ascii_lowercase().as_str() {
            "md" | "markdown" => Some(ReportFormat::Md),
            "html" => Some(ReportFormat::Html),
            "csv" => Some(ReportFormat::Csv),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReportConfig {
    /// When the daemon writes the weekly report (6-field cron, default Monday 06:00).
    pub schedule: String,
    pub out_dir: PathBuf,
    pub formats: Vec<ReportFormat>,
    /// Also show totals converted to this currency (needs `fx_rates`).
    pub currency: Option<String>,
    /// `report.metric`: the cost "why it changed" explains (BilledCost, the default, or
    /// EffectiveCost, the amortised view; ListCost, ContractedCost).
    pub metric: crate::query::Metric,
    /// `report.unit_costs`: unit costs the report shows for its week.
    pub unit_costs: Vec<UnitCostConfig>,
}

/// One unit cost in the weekly report: `cost` per `per` of business metric `metric`, by `by`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnitCostConfig {
    pub metric: String,
    pub per: Decimal,
    pub cost: crate::query::Metric,
    pub by: Vec<String>,
    pub places: u32,
}

impl Default for ReportConfig {
    fn default() -> Self {
        ReportConfig {
            schedule: "0 0 6 * * Mon".into(),
            out_dir: PathBuf::from("reports"),
            formats: vec![ReportFormat::Md, ReportFormat::Html, ReportFormat::Csv],
            currency: None,
            metric: crate::query::Metric::BilledCost,
            unit_costs: Vec::new(),
        }
    }
}

/// How `costledger run` behaves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DaemonConfig {
    /// On SIGTERM/SIGINT, running jobs get this long to finish before they are cancelled.
    pub shutdown_grace_secs: u64,
    /// Retriable failures (throttling, outages) are retried this many times in all…
    pub retry_attempts: u32,
    /// …waiting base × 2^n (with jitter, or the provider's Retry-After), at most `retry_max_secs`.
    pub retry_base_secs: u64,
    pub retry_max_secs: u64,
    /// When superseded loads past retention and stale staging loads are cleaned up.
    pub retention_schedule: String,
}

impl Default for DaemonConfig {
    fn default() -> Self {
        DaemonConfig {
            shutdown_grace_secs: 30,
            retry_attempts: 5,
            retry_base_secs: 30,
            retry_max_secs: 900,
            retention_schedule: "0 17 * * * *".into(),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub database: Option<crate::ledger::DatabaseUrl>,
    pub timezone: chrono_tz::Tz,
    pub server_bind: SocketAddr,
    /// `server.header_timeout_secs`, `server.connection_timeout_secs`, `server.max_connections`.
    pub server_limits: ServerLimits,
    pub retention: Retention,
    pub batch_rows: usize,
    /// `ingest.valid_years: [FIRST, LAST]`: a line dated outside is quarantined.
    pub date_bounds: costledger_core::DateBounds,
    /// `ingest.max_record_bytes`, `ingest.max_decompression_ratio`.
    pub read_limits: costledger_core::ReadLimits,
    pub sources: Vec<SourceConfig>,
    pub allocation: AllocationConfig,
    pub checks: ChecksConfig,
    pub report: ReportConfig,
    pub daemon: DaemonConfig,
    /// `query.rollup_tags`: tag keys the daily rollups keep (besides the owner tags), so
    /// queries grouped or filtered by them read the rollups instead of every charge.
    pub rollup_tags: Vec<String>,
    /// `api`: who may read the HTTP API, the web page and the MCP server over HTTP.
    pub api: ApiConfig,
    /// `budgets`: amounts per month or quarter over a scope, with alert thresholds.
    pub budgets: Vec<BudgetConfig>,
}

/// One budget: a cost metric over a scope (query filters) per month or quarter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BudgetConfig {
    pub name: String,
    /// Query filters (`owner=payments`, `provider=AWS`, `tag:env=prod` …); all must hold.
    pub scope: Vec<String>,
    pub amount: Decimal,
    pub currency: String,
    pub period: crate::budgets::BudgetPeriod,
    /// Percentages of the amount that raise a finding when the actual or forecast reaches them.
    pub thresholds: Vec<Decimal>,
    pub metric: crate::query::Metric,
}

/// `api.tokens` (read-only bearer tokens, usually `${VAR}`) and `api.allow_anonymous`.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct ApiConfig {
    pub tokens: Vec<String>,
    /// Serve the API without tokens on a non-loopback address (refused otherwise).
    pub allow_anonymous: bool,
}

impl fmt::Debug for ApiConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never the token values: a Debug print must not leak them into a log.
        f.debug_struct("ApiConfig")
            .field("tokens", &format_args!("[{} redacted]", self.tokens.len()))
            .field("allow_anonymous", &self.allow_anonymous)
            .finish()
    }
}

/// Limits on the server's clients: a half-sent or idle client is dropped, and past the
/// connection limit new clients are turned away, so slow or hostile clients cannot take the
/// descriptors the daemon needs for its jobs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServerLimits {
    /// Time to send a request's headers, and the longest an idle keep-alive connection stays
    /// open (`server.header_timeout_secs`).
    pub header_timeout: std::time::Duration,
    /// Longest one connection may stay open, whatever it does (`server.connection_timeout_secs`).
    pub connection_timeout: std::time::Duration,
    /// Connections served at once (`server.max_connections`); more are closed at once.
    pub max_connections: usize,
}

impl Default for ServerLimits {
    fn default() -> Self {
        ServerLimits {
            header_timeout: std::time::Duration::from_secs(10),
            connection_timeout: std::time::Duration::from_secs(120),
            max_connections: 64,
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            database: None,
            timezone: chrono_tz::UTC,
            server_bind: SocketAddr::from(([127, 0, 0, 1], 9464)),
            server_limits: ServerLimits::default(),
            retention: Retention { superseded_loads_days: 90, stale_staging_minutes: 15 },
            batch_rows: 5_000,
            date_bounds: costledger_core::DateBounds::default(),
            read_limits: costledger_core::ReadLimits::default(),
            sources: Vec::new(),
            allocation: AllocationConfig::default(),
            checks: ChecksConfig::default(),
            report: ReportConfig::default(),
            daemon: DaemonConfig::default(),
            rollup_tags: Vec::new(),
            budgets: Vec::new(),
            api: ApiConfig::default(),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct SourceConfig {
    pub name: String,
    pub schedule: Option<String>,
    pub jitter_secs: u64,
    /// `role: primary` (default: the bill) or `role: check` (a cross-check, never summed).
    pub role: crate::ledger::SourceRole,
    pub params: SourceParams,
}

/// The closed set of typed source parameters; matched in one place (`registry::build`).
#[derive(Debug, Clone, PartialEq)]
pub enum SourceParams {
    Focus(FocusParams),
    AwsCostExplorer(costledger_aws::CostExplorerParams),
    AwsCur(costledger_aws::FileParams),
    AwsDataExports(costledger_aws::FileParams),
    AzureCostQuery(costledger_azure::QueryParams),
    AzureCostExport(costledger_azure::ExportParams),
    Gcp(costledger_gcp::GcpParams),
    OciUsage(costledger_oci::UsageParams),
    OciCostReport(costledger_oci::ReportParams),
}

impl SourceParams {
    /// The config `type` name of these parameters.
    pub fn kind(&self) -> &'static str {
        SOURCE_TYPES.iter().find(|t| (t.is)(self)).map(|t| t.name).unwrap_or("unknown")
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FocusParams {
    /// A FOCUS CSV file (plain or .gz) or a directory searched recursively.
    #[serde(default)]
    pub path: Option<PathBuf>,
    /// Several files or directories.
    #[serde(default)]
    pub paths: Vec<PathBuf>,
}

impl FocusParams {
    pub fn all_paths(&self) -> Vec<PathBuf> {
        self.path.iter().cloned().chain(self.paths.iter().cloned()).collect()
    }

    /// Problems, as (key, message).
    pub fn validate(&self) -> Vec<(String, String)> {
        if self.all_paths().is_empty() {
            vec![("path".into(), "is required: a FOCUS file or directory".into())]
        } else {
            vec![]
        }
    }
}

impl Config {
    /// Read, interpolate and validate a config file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|source| ConfigError::Read { path: path.display().to_string(), source })?;
        Config::parse(&text, &|k| std::env::var(k).ok())
            .map_err(|issues| ConfigError::Invalid { file: path.display().to_string(), issues })
    }

    /// Parse config text; `env` resolves `${VAR}`. Returns every problem found.
    pub fn parse(text: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<Config, Vec<ConfigIssue>> {
        let mut issues = Vec::new();
        let mut root: Value = match serde_yaml::from_str(text) {
            Ok(Value::Null) => Value::Mapping(Mapping::new()),
            Ok(v) => v,
            Err(e) => return Err(vec![ConfigIssue { path: String::new(), message: format!("not valid YAML: {e}") }]),
        };
        interpolate(&mut root, "", env, &mut issues);
        let Value::Mapping(map) = root else {
            issues.push(ConfigIssue { path: String::new(), message: "the config must be a mapping of keys".into() });
            return Err(issues);
        };
        let mut cfg = Config::default();
        for (k, v) in map {
            let key = key_str(&k);
            match key.as_str() {
                "database" => match v {
                    Value::String(s) => {
                        if !(s.starts_with("sqlite:") || s.starts_with("postgres://") || s.starts_with("postgresql://"))
                        {
                            issue(&mut issues, "database", "must start with sqlite:// or postgres://");
                        }
                        cfg.database = Some(s.into());
                    }
                    _ => issue(&mut issues, "database", "must be a URL string"),
                },
                "timezone" => match v.as_str().map(|s| s.parse::<chrono_tz::Tz>()) {
                    Some(Ok(tz)) => cfg.timezone = tz,
                    _ => issue(&mut issues, "timezone", "must be an IANA time zone name such as UTC or Europe/Berlin"),
                },
                "server" => {
                    #[derive(Deserialize)]
                    #[serde(deny_unknown_fields)]
                    struct Server {
                        bind: Option<String>,
                        header_timeout_secs: Option<u64>,
                        connection_timeout_secs: Option<u64>,
                        max_connections: Option<usize>,
                    }
                    if let Some(s) = typed::<Server>(v, "server", &mut issues) {
                        if let Some(bind) = s.bind {
                            match bind.parse() {
                                Ok(a) => cfg.server_bind = a,
                                Err(_) => issue(
                                    &mut issues,
                                    "server.bind",
                                    "must be HOST:PORT with an IP address, e.g. 127.0.0.1:9464",
                                ),
                            }
                        }
                        let secs = |v: Option<u64>, key: &str, issues: &mut Vec<ConfigIssue>| match v {
                            Some(n) if (1..=86_400).contains(&n) => Some(std::time::Duration::from_secs(n)),
                            Some(_) => {
                                issue(issues, key, "must be between 1 and 86400 seconds");
                                None
                            }
                            None => None,
                        };
                        if let Some(d) = secs(s.header_timeout_secs, "server.header_timeout_secs", &mut issues) {
                            cfg.server_limits.header_timeout = d;
                        }
                        if let Some(d) = secs(s.connection_timeout_secs, "server.connection_timeout_secs", &mut issues)
                        {
                            cfg.server_limits.connection_timeout = d;
                        }
                        match s.max_connections {
                            Some(n) if (1..=100_000).contains(&n) => cfg.server_limits.max_connections = n,
                            Some(_) => issue(&mut issues, "server.max_connections", "must be between 1 and 100000"),
                            None => {}
                        }
                    }
                }
                "retention" => {
                    #[derive(Deserialize)]
                    #[serde(deny_unknown_fields)]
                    struct Ret {
                        superseded_loads_days: Option<u32>,
                        stale_staging_minutes: Option<u32>,
                    }
                    if let Some(r) = typed::<Ret>(v, "retention", &mut issues) {
                        if let Some(d) = r.superseded_loads_days {
                            cfg.retention.superseded_loads_days = d;
                        }
                        if let Some(m) = r.stale_staging_minutes {
                            if m == 0 {
                                issue(&mut issues, "retention.stale_staging_minutes", "must be at least 1");
                            }
                            cfg.retention.stale_staging_minutes = m;
                        }
                    }
                }
                "ingest" => {
                    #[derive(Deserialize)]
                    #[serde(deny_unknown_fields)]
                    struct Ing {
                        #[serde(default = "default_batch_rows")]
                        batch_rows: usize,
                        valid_years: Option<[i32; 2]>,
                        max_record_bytes: Option<usize>,
                        max_decompression_ratio: Option<u64>,
                    }
                    fn default_batch_rows() -> usize {
                        5_000
                    }
                    if let Some(i) = typed::<Ing>(v, "ingest", &mut issues) {
                        if !(100..=100_000).contains(&i.batch_rows) {
                            issue(&mut issues, "ingest.batch_rows", "must be between 100 and 100000");
                        }
                        cfg.batch_rows = i.batch_rows;
                        if let Some([first, last]) = i.valid_years {
                            if !(1900..=9998).contains(&first) || !(1900..=9998).contains(&last) || first > last {
                                issue(
                                    &mut issues,
                                    "ingest.valid_years",
                                    "must be [FIRST, LAST] with 1900 <= FIRST <= LAST <= 9998 (default [2000, 2100])",
                                );
                            } else {
                                cfg.date_bounds = costledger_core::DateBounds { first_year: first, last_year: last };
                            }
                        }
                        if let Some(n) = i.max_record_bytes {
                            if !(4096..=(1 << 30)).contains(&n) {
                                issue(
                                    &mut issues,
                                    "ingest.max_record_bytes",
                                    "must be between 4096 and 1073741824 (default 8388608, 8 MiB)",
                                );
                            } else {
                                cfg.read_limits.max_record_bytes = n;
                            }
                        }
                        if let Some(r) = i.max_decompression_ratio {
                            if !(10..=100_000).contains(&r) {
                                issue(
                                    &mut issues,
                                    "ingest.max_decompression_ratio",
                                    "must be between 10 and 100000 (default 200)",
                                );
                            } else {
                                cfg.read_limits.max_decompression_ratio = r;
                            }
                        }
                    }
                }
                "sources" => match v {
                    Value::Sequence(items) => {
                        let mut names = BTreeSet::new();
                        for (i, item) in items.into_iter().enumerate() {
                            if let Some(n) = item.get("name").and_then(Value::as_str)
                                && !names.insert(n.to_string())
                            {
                                let msg = format!("'{n}' is used by an earlier source; names must be unique");
                                issue(&mut issues, &format!("sources[{i}].name"), &msg);
                            }
                            if let Some(s) = source(item, &format!("sources[{i}]"), &mut issues) {
                                cfg.sources.push(s);
                            }
                        }
                    }
                    Value::Null => {}
                    _ => issue(&mut issues, "sources", "must be a list of sources"),
                },
                "allocation" => cfg.allocation = parse_allocation(v, &mut issues),
                "checks" => cfg.checks = parse_checks(v, &mut issues),
                "report" => cfg.report = parse_report(v, &mut issues),
                "daemon" => cfg.daemon = parse_daemon(v, &mut issues),
                "query" => {
                    #[derive(Deserialize)]
                    #[serde(deny_unknown_fields)]
                    struct Q {
                        #[serde(default)]
                        rollup_tags: Vec<String>,
                    }
                    if let Some(q) = typed::<Q>(v, "query", &mut issues) {
                        for t in &q.rollup_tags {
                            if t.trim().is_empty() {
                                issue(&mut issues, "query.rollup_tags", "a tag key is empty");
                            }
                        }
                        cfg.rollup_tags = q.rollup_tags;
                    }
                }
                "api" => {
                    #[derive(Deserialize)]
                    #[serde(deny_unknown_fields)]
                    struct Api {
                        #[serde(default)]
                        tokens: Vec<String>,
                        #[serde(default)]
                        allow_anonymous: bool,
                    }
                    if let Some(a) = typed::<Api>(v, "api", &mut issues) {
                        for (i, t) in a.tokens.iter().enumerate() {
                            if t.trim().len() < 16 {
                                issue(
                                    &mut issues,
                                    &format!("api.tokens[{i}]"),
                                    "a token must be at least 16 characters (e.g. `openssl rand -hex 32`)",
                                );
                            }
                        }
                        cfg.api = ApiConfig { tokens: a.tokens, allow_anonymous: a.allow_anonymous };
                    }
                }
                "budgets" => cfg.budgets = parse_budgets(v, &mut issues),
                other => issue(
                    &mut issues,
                    other,
                    "unknown key (known: database, timezone, server, retention, ingest, sources, allocation, checks, \
                     report, daemon, query, api, budgets)",
                ),
            }
        }
        if issues.is_empty() { Ok(cfg) } else { Err(issues) }
    }
}

/// A decimal from YAML: a number (read from its text, never through a float) or a string.
fn yaml_decimal(v: &Value) -> Option<Decimal> {
    match v {
        Value::Number(n) => n.to_string().parse().ok(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

fn parse_checks(v: Value, issues: &mut Vec<ConfigIssue>) -> ChecksConfig {
    let mut c = ChecksConfig::default();
    let Value::Mapping(m) = v else {
        issue(issues, "checks", "must be a mapping");
        return c;
    };
    for (k, v) in m {
        let key = key_str(&k);
        let path = format!("checks.{key}");
        if key == "anomaly_min_amount_by_currency" {
            let Value::Mapping(per) = v else {
                issue(issues, &path, "must be a mapping of currency code to amount, e.g. { JPY: \"15000\" }");
                continue;
            };
            for (cur, amount) in per {
                let cur = key_str(&cur);
                if !costledger_core::currency::is_iso4217(&cur) {
                    issue(issues, &format!("{path}.{cur}"), "is not an ISO 4217 currency code");
                    continue;
                }
                match yaml_decimal(&amount) {
                    Some(d) if d >= Decimal::ZERO => {
                        c.anomaly_min_amount_by_currency.insert(cur, d);
                    }
                    _ => issue(issues, &format!("{path}.{cur}"), "must be a number at least 0"),
                }
            }
            continue;
        }
        if key == "invoice_precision" {
            match v.as_str() {
                Some("invoice") => c.invoice_precision = InvoicePrecision::Invoice,
                Some("exact") => c.invoice_precision = InvoicePrecision::Exact,
                _ => issue(
                    issues,
                    &path,
                    "must be 'invoice' (round the ledger to the invoice's decimal places, the default) or 'exact'",
                ),
            }
            continue;
        }
        let slot = match key.as_str() {
            "invoice_tolerance" => &mut c.invoice_tolerance,
            "cross_source_tolerance" => &mut c.cross_source_tolerance,
            "tag_coverage_target_percent" => &mut c.tag_coverage_target_percent,
            "anomaly_percent" => &mut c.anomaly_percent,
            "anomaly_min_amount" => &mut c.anomaly_min_amount,
            "anomaly_min_share_percent" => &mut c.anomaly_min_share_percent,
            "commitment_utilization_min" => &mut c.commitment_utilization_min,
            _ => {
                issue(
                    issues,
                    &path,
                    "unknown key (known: invoice_tolerance, invoice_precision, cross_source_tolerance, \
                     tag_coverage_target_percent, anomaly_percent, anomaly_min_amount, \
                     anomaly_min_amount_by_currency, anomaly_min_share_percent, commitment_utilization_min)",
                );
                continue;
            }
        };
        match yaml_decimal(&v) {
            Some(d) if d >= Decimal::ZERO => *slot = d,
            _ => issue(issues, &path, "must be a number at least 0 (write amounts as text, e.g. \"0.01\")"),
        }
    }
    if c.tag_coverage_target_percent > Decimal::ONE_HUNDRED {
        issue(issues, "checks.tag_coverage_target_percent", "must be at most 100");
    }
    if c.commitment_utilization_min > Decimal::ONE_HUNDRED {
        issue(issues, "checks.commitment_utilization_min", "must be at most 100");
    }
    c
}

fn parse_daemon(v: Value, issues: &mut Vec<ConfigIssue>) -> DaemonConfig {
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Retry {
        attempts: Option<u32>,
        base_delay_secs: Option<u64>,
        max_delay_secs: Option<u64>,
    }
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Raw {
        shutdown_grace_secs: Option<u64>,
        retry: Option<Retry>,
        retention_schedule: Option<String>,
    }
    let mut d = DaemonConfig::default();
    let Some(raw) = typed::<Raw>(v, "daemon", issues) else { return d };
    if let Some(g) = raw.shutdown_grace_secs {
        if g > 3600 {
            issue(issues, "daemon.shutdown_grace_secs", "must be at most 3600");
        }
        d.shutdown_grace_secs = g;
    }
    if let Some(r) = raw.retry {
        if let Some(a) = r.attempts {
            if a == 0 || a > 100 {
                issue(issues, "daemon.retry.attempts", "must be between 1 and 100");
            }
            d.retry_attempts = a;
        }
        d.retry_base_secs = r.base_delay_secs.unwrap_or(d.retry_base_secs);
        d.retry_max_secs = r.max_delay_secs.unwrap_or(d.retry_max_secs);
        if d.retry_base_secs > d.retry_max_secs {
            issue(issues, "daemon.retry", "base_delay_secs must not exceed max_delay_secs");
        }
    }
    if let Some(s) = raw.retention_schedule {
        if let Err(msg) = validate_schedule(&s) {
            issue(issues, "daemon.retention_schedule", &msg);
        }
        d.retention_schedule = s;
    }
    d
}

fn parse_budgets(v: Value, issues: &mut Vec<ConfigIssue>) -> Vec<BudgetConfig> {
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Raw {
        name: String,
        #[serde(default)]
        scope: Vec<String>,
        amount: Value,
        currency: String,
        #[serde(default)]
        period: Option<String>,
        #[serde(default)]
        thresholds: Option<Vec<Value>>,
        #[serde(default)]
        metric: Option<String>,
    }
    let Some(raw) = typed::<Vec<Raw>>(v, "budgets", issues) else { return Vec::new() };
    let mut out = Vec::new();
    let mut names = BTreeSet::new();
    for (i, b) in raw.into_iter().enumerate() {
        let at = |k: &str| format!("budgets[{i}].{k}");
        let before = issues.len();
        if b.name.trim().is_empty() {
            issue(issues, &at("name"), "must not be empty");
        } else if !names.insert(b.name.clone()) {
            issue(issues, &at("name"), &format!("'{}' is used by an earlier budget; names must be unique", b.name));
        }
        let lc = |k: &str| k.trim().to_lowercase();
        for (j, f) in b.scope.iter().enumerate() {
            if let Err(e) = crate::query::Filter::parse(f, &lc) {
                issue(issues, &format!("budgets[{i}].scope[{j}]"), &e.to_string());
            }
        }
        let amount = match yaml_decimal(&b.amount) {
            Some(a) if a > Decimal::ZERO => a,
            _ => {
                issue(issues, &at("amount"), "must be a number above 0 (write it as text, e.g. \"10000.00\")");
                Decimal::ZERO
            }
        };
        if !costledger_core::currency::is_iso4217(&b.currency) {
            issue(issues, &at("currency"), &format!("'{}' is not an ISO 4217 currency code", b.currency));
        }
        let period = match b.period.as_deref() {
            None => crate::budgets::BudgetPeriod::Month,
            Some(p) => crate::budgets::BudgetPeriod::parse(p).unwrap_or_else(|| {
                issue(issues, &at("period"), &format!("'{p}' is not month or quarter"));
                crate::budgets::BudgetPeriod::Month
            }),
        };
        let mut thresholds = Vec::new();
        for (j, t) in b.thresholds.unwrap_or_else(|| vec![Value::from(80), Value::from(100)]).iter().enumerate() {
            match yaml_decimal(t) {
                Some(t) if t > Decimal::ZERO && t <= Decimal::from(1000) => thresholds.push(t),
                _ => issue(
                    issues,
                    &format!("budgets[{i}].thresholds[{j}]"),
                    "must be a percentage above 0, at most 1000",
                ),
            }
        }
        let metric = match b.metric.as_deref() {
            None => crate::query::Metric::BilledCost,
            Some(m) => match crate::query::Metric::parse(m) {
                Ok(m) if m.kind() == crate::query::MetricKind::Money => m,
                _ => {
                    issue(
                        issues,
                        &at("metric"),
                        &format!("'{m}' is not BilledCost, EffectiveCost, ListCost or ContractedCost"),
                    );
                    crate::query::Metric::BilledCost
                }
            },
        };
        if issues.len() == before {
            out.push(BudgetConfig {
                name: b.name,
                scope: b.scope,
                amount,
                currency: b.currency,
                period,
                thresholds,
                metric,
            });
        }
    }
    out
}

fn parse_report(v: Value, issues: &mut Vec<ConfigIssue>) -> ReportConfig {
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Raw {
        schedule: Option<String>,
        out_dir: Option<PathBuf>,
        formats: Option<Vec<String>>,
        currency: Option<String>,
        metric: Option<String>,
        #[serde(default)]
        unit_costs: Vec<RawUnit>,
    }
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct RawUnit {
        metric: String,
        #[serde(default)]
        per: Option<Value>,
        #[serde(default)]
        cost: Option<String>,
        #[serde(default)]
        by: Vec<String>,
        #[serde(default)]
        places: Option<u32>,
    }
    let mut r = ReportConfig::default();
    let Some(raw) = typed::<Raw>(v, "report", issues) else { return r };
    if let Some(s) = raw.schedule {
        if let Err(msg) = validate_schedule(&s) {
            issue(issues, "report.schedule", &msg);
        }
        r.schedule = s;
    }
    if let Some(d) = raw.out_dir {
        r.out_dir = d;
    }
    if let Some(f) = raw.formats {
        r.formats.clear();
        for (i, x) in f.iter().enumerate() {
            match ReportFormat::parse(x) {
                Some(f) if !r.formats.contains(&f) => r.formats.push(f),
                Some(_) => {}
                None => issue(issues, &format!("report.formats[{i}]"), &format!("'{x}' is not md, html or csv")),
            }
        }
        if r.formats.is_empty() && !f.is_empty() {
            // already reported
        } else if r.formats.is_empty() {
            issue(issues, "report.formats", "must list at least one of md, html, csv");
        }
    }
    if let Some(c) = raw.currency {
        if !costledger_core::currency::is_iso4217(&c) {
            issue(issues, "report.currency", &format!("'{c}' is not an ISO 4217 currency code"));
        }
        r.currency = Some(c);
    }
    if let Some(m) = raw.metric {
        match crate::query::Metric::parse(&m) {
            Ok(metric) if metric.kind() == crate::query::MetricKind::Money => r.metric = metric,
            _ => issue(
                issues,
                "report.metric",
                &format!("'{m}' is not BilledCost, EffectiveCost, ListCost or ContractedCost"),
            ),
        }
    }
    if raw.unit_costs.len() > crate::report::UNIT_COST_TABLES.len() {
        issue(
            issues,
            "report.unit_costs",
            &format!("at most {} unit costs (one report table each)", crate::report::UNIT_COST_TABLES.len()),
        );
    }
    for (i, u) in raw.unit_costs.into_iter().enumerate() {
        let at = |k: &str| format!("report.unit_costs[{i}].{k}");
        let before = issues.len();
        if u.metric.trim().is_empty() {
            issue(issues, &at("metric"), "must name a business metric (costledger metrics list)");
        }
        let per = match &u.per {
            None => Decimal::ONE,
            Some(v) => match yaml_decimal(v) {
                Some(p) if p > Decimal::ZERO => p,
                _ => {
                    issue(issues, &at("per"), "must be a number above 0 (e.g. 1000)");
                    Decimal::ONE
                }
            },
        };
        let cost = match u.cost.as_deref() {
            None => crate::query::Metric::BilledCost,
            Some(c) => match crate::query::Metric::parse(c) {
                Ok(m) if m.kind() == crate::query::MetricKind::Money => m,
                _ => {
                    issue(
                        issues,
                        &at("cost"),
                        &format!("'{c}' is not BilledCost, EffectiveCost, ListCost or ContractedCost"),
                    );
                    crate::query::Metric::BilledCost
                }
            },
        };
        for (j, d) in u.by.iter().enumerate() {
            if crate::query::Dimension::parse(d, &|k: &str| k.trim().to_lowercase()).is_err() {
                issue(issues, &format!("report.unit_costs[{i}].by[{j}]"), &format!("unknown dimension '{d}'"));
            }
        }
        let places = u.places.unwrap_or(4);
        if places > 12 {
            issue(issues, &at("places"), "must be at most 12");
        }
        if issues.len() == before {
            r.unit_costs.push(UnitCostConfig { metric: u.metric, per, cost, by: u.by, places });
        }
    }
    r
}

fn issue(issues: &mut Vec<ConfigIssue>, path: &str, message: &str) {
    issues.push(ConfigIssue { path: path.to_string(), message: message.to_string() });
}

fn key_str(k: &Value) -> String {
    match k {
        Value::String(s) => s.clone(),
        other => serde_yaml::to_string(other).unwrap_or_default().trim().to_string(),
    }
}

/// One source type: its config `type` name, which `SourceParams` variant it is, and how its
/// parameters are parsed and validated. [`SOURCE_TYPES`] is the closed set; `registry::build`
/// turns the parsed parameters into a running connector.
pub struct SourceType {
    pub name: &'static str,
    is: fn(&SourceParams) -> bool,
    parse: fn(Value, &str, &mut Vec<ConfigIssue>) -> Option<SourceParams>,
}

/// Every source type the config knows (each one is available).
pub const SOURCE_TYPES: [SourceType; 9] = [
    SourceType {
        name: "focus",
        is: |p| matches!(p, SourceParams::Focus(_)),
        parse: |v, path, issues| checked(v, path, issues, FocusParams::validate, SourceParams::Focus),
    },
    SourceType {
        name: "aws_cost_explorer",
        is: |p| matches!(p, SourceParams::AwsCostExplorer(_)),
        parse: |v, path, issues| {
            checked(v, path, issues, costledger_aws::CostExplorerParams::validate, SourceParams::AwsCostExplorer)
        },
    },
    SourceType {
        name: "aws_cur",
        is: |p| matches!(p, SourceParams::AwsCur(_)),
        parse: |v, path, issues| {
            checked(v, path, issues, |p: &costledger_aws::FileParams| p.validate(false), SourceParams::AwsCur)
        },
    },
    SourceType {
        name: "aws_data_exports",
        is: |p| matches!(p, SourceParams::AwsDataExports(_)),
        parse: |v, path, issues| {
            checked(v, path, issues, |p: &costledger_aws::FileParams| p.validate(true), SourceParams::AwsDataExports)
        },
    },
    SourceType {
        name: "gcp_billing_export",
        is: |p| matches!(p, SourceParams::Gcp(_)),
        parse: |v, path, issues| checked(v, path, issues, costledger_gcp::GcpParams::validate, SourceParams::Gcp),
    },
    SourceType {
        name: "azure_cost_query",
        is: |p| matches!(p, SourceParams::AzureCostQuery(_)),
        parse: |v, path, issues| {
            checked(v, path, issues, costledger_azure::QueryParams::validate, SourceParams::AzureCostQuery)
        },
    },
    SourceType {
        name: "azure_cost_export",
        is: |p| matches!(p, SourceParams::AzureCostExport(_)),
        parse: |v, path, issues| {
            checked(v, path, issues, costledger_azure::ExportParams::validate, SourceParams::AzureCostExport)
        },
    },
    SourceType {
        name: "oci_usage_api",
        is: |p| matches!(p, SourceParams::OciUsage(_)),
        parse: |v, path, issues| {
            checked(v, path, issues, costledger_oci::UsageParams::validate, SourceParams::OciUsage)
        },
    },
    SourceType {
        name: "oci_cost_report",
        is: |p| matches!(p, SourceParams::OciCostReport(_)),
        parse: |v, path, issues| {
            checked(v, path, issues, costledger_oci::ReportParams::validate, SourceParams::OciCostReport)
        },
    },
];

/// The config `type` names, in the table's order.
pub fn known_types() -> Vec<&'static str> {
    SOURCE_TYPES.iter().map(|t| t.name).collect()
}

/// A source's parameters as `P`, with every problem `validate` finds reported under `path`.
fn checked<P: for<'de> Deserialize<'de>>(
    v: Value,
    path: &str,
    issues: &mut Vec<ConfigIssue>,
    validate: impl Fn(&P) -> Vec<(String, String)>,
    wrap: fn(P) -> SourceParams,
) -> Option<SourceParams> {
    let p = typed::<P>(v, path, issues)?;
    let found = validate(&p);
    for (k, msg) in &found {
        issue(issues, &format!("{path}.{k}"), msg);
    }
    found.is_empty().then(|| wrap(p))
}

fn typed<T: for<'de> Deserialize<'de>>(v: Value, path: &str, issues: &mut Vec<ConfigIssue>) -> Option<T> {
    match serde_yaml::from_value::<T>(v) {
        Ok(t) => Some(t),
        Err(e) => {
            issue(issues, path, &e.to_string());
            None
        }
    }
}

fn source(item: Value, path: &str, issues: &mut Vec<ConfigIssue>) -> Option<SourceConfig> {
    let Value::Mapping(mut m) = item else {
        issue(issues, path, "must be a mapping with at least name and type");
        return None;
    };
    let before = issues.len();
    let mut take_str = |m: &mut Mapping, key: &str, required: bool| -> Option<String> {
        match m.remove(key) {
            Some(Value::String(s)) => Some(s),
            Some(_) => {
                issue(issues, &format!("{path}.{key}"), "must be a string");
                None
            }
            None => {
                if required {
                    issue(issues, &format!("{path}.{key}"), "is required");
                }
                None
            }
        }
    };
    let name = take_str(&mut m, "name", true);
    let kind = take_str(&mut m, "type", true);
    let schedule = take_str(&mut m, "schedule", false);
    let role = match take_str(&mut m, "role", false) {
        None => crate::ledger::SourceRole::Primary,
        Some(r) => match crate::ledger::SourceRole::parse(&r) {
            Some(role) => role,
            None => {
                issue(
                    issues,
                    &format!("{path}.role"),
                    &format!(
                        "'{r}' is not a role: 'primary' (the bill, the default) or 'check' (a cross-check, never summed)"
                    ),
                );
                crate::ledger::SourceRole::Primary
            }
        },
    };
    let jitter_secs = match m.remove("jitter_secs") {
        None => 0,
        Some(v) => match v.as_u64() {
            Some(j) if j <= 86_400 => j,
            _ => {
                issue(issues, &format!("{path}.jitter_secs"), "must be a whole number of seconds up to 86400");
                0
            }
        },
    };
    if let Some(n) = &name
        && (n.is_empty() || !n.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c)))
    {
        issue(issues, &format!("{path}.name"), "must be non-empty and use only letters, digits, '-', '_' and '.'");
    }
    if let Some(s) = &schedule
        && let Err(msg) = validate_schedule(s)
    {
        issue(issues, &format!("{path}.schedule"), &msg);
    }
    let params = match kind.as_deref() {
        Some(t) => match SOURCE_TYPES.iter().find(|st| st.name == t) {
            Some(st) => (st.parse)(Value::Mapping(m), path, issues),
            None => {
                issue(
                    issues,
                    &format!("{path}.type"),
                    &format!("unknown source type '{t}' (known: {})", known_types().join(", ")),
                );
                None
            }
        },
        None => None,
    };
    if issues.len() > before {
        return None;
    }
    Some(SourceConfig { name: name?, schedule, jitter_secs, role, params: params? })
}

/// A schedule is a 6-field cron expression with seconds first (`0 */30 * * * *`);
/// day-of-month and day-of-week must both match when both are given.
pub fn validate_schedule(s: &str) -> Result<(), String> {
    let fields = s.split_whitespace().count();
    if fields != 6 {
        return Err(format!(
            "'{s}' has {fields} fields; a schedule needs 6 with seconds first, e.g. \"0 */30 * * * *\""
        ));
    }
    CronParser::builder()
        .seconds(Seconds::Required)
        .dom_and_dow(true)
        .build()
        .parse(s)
        .map(|_| ())
        .map_err(|e| format!("'{s}' is not a valid cron expression: {e}"))
}

/// Replace `${VAR}` in every string scalar (after parsing, so values cannot break the YAML).
/// `$${` stands for a literal `${`. A variable that is not set is an issue naming it.
fn interpolate(v: &mut Value, path: &str, env: &dyn Fn(&str) -> Option<String>, issues: &mut Vec<ConfigIssue>) {
    match v {
        Value::String(s) if s.contains("${") => match expand(s, env) {
            Ok(e) => *s = e,
            Err(var) => issues.push(ConfigIssue {
                path: path.to_string(),
                message: format!("environment variable {var} is not set"),
            }),
        },
        Value::Sequence(items) => {
            for (i, item) in items.iter_mut().enumerate() {
                interpolate(item, &format!("{path}[{i}]"), env, issues);
            }
        }
        Value::Mapping(m) => {
            for (k, item) in m.iter_mut() {
                let key = key_str(k);
                let p = if path.is_empty() { key } else { format!("{path}.{key}") };
                interpolate(item, &p, env, issues);
            }
        }
        Value::Tagged(t) => interpolate(&mut t.value, path, env, issues),
        _ => {}
    }
}

fn expand(s: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<String, String> {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let tail = &rest[i..];
        if let Some(t) = tail.strip_prefix("$${") {
            out.push_str("${");
            rest = t;
        } else if let Some(t) = tail.strip_prefix("${") {
            let Some(end) = t.find('}') else { return Err(format!("(unterminated '${{' in '{s}')")) };
            let var = &t[..end];
            out.push_str(&env(var).ok_or_else(|| var.to_string())?);
            rest = &t[end + 1..];
        } else {
            out.push('$');
            rest = &tail[1..];
        }
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(k: &str) -> Option<String> {
        match k {
            "PGPASS" => Some("s3cr:t#x".to_string()),
            "DIR" => Some("/data".to_string()),
            _ => None,
        }
    }

    #[test]
    fn full_config_parses() {
        let c = Config::parse(
            r#"
database: "postgres://cl:${PGPASS}@db/costledger"
timezone: Europe/Berlin
server: { bind: "0.0.0.0:9000" }
retention: { superseded_loads_days: 30, stale_staging_minutes: 5 }
ingest: { batch_rows: 2000 }
sources:
  - name: focus-drop
    type: focus
    path: ${DIR}/focus
    schedule: "0 */30 * * * *"
    jitter_secs: 60
"#,
            &env,
        )
        .expect("valid");
        assert_eq!(c.database.as_ref().map(|d| d.expose()), Some("postgres://cl:s3cr:t#x@db/costledger"));
        assert_eq!(c.timezone, chrono_tz::Europe::Berlin);
        assert_eq!(c.retention.superseded_loads_days, 30);
        assert_eq!(c.batch_rows, 2000);
        assert_eq!(
            c.sources[0].params,
            SourceParams::Focus(FocusParams { path: Some("/data/focus".into()), paths: vec![] })
        );
        assert_eq!(c.database.as_ref().map(|d| d.to_string()).unwrap_or_default(), "postgres://cl:***@db/costledger");
    }

    #[test]
    fn every_problem_is_reported_with_its_path() {
        let err = Config::parse(
            r#"
databse: sqlite://x.db
timezone: Mars/Olympus
sources:
  - name: a
    type: focus
    path: /x
    schedule: "*/5 * * * *"
  - name: a
    type: focus
    path: /y
  - name: b
    type: aws_curr
  - name: c
    type: focus
    pth: /z
  - name: d
    type: focus
    path: ${MISSING_VAR}
"#,
            &env,
        )
        .expect_err("invalid");
        let text: Vec<String> = err.iter().map(|i| i.to_string()).collect();
        let has = |needle: &str| assert!(text.iter().any(|t| t.contains(needle)), "missing '{needle}' in {text:#?}");
        has("databse: unknown key");
        has("timezone: must be an IANA time zone");
        has("sources[0].schedule: '*/5 * * * *' has 5 fields");
        has("sources[1].name: 'a' is used by an earlier source");
        has("sources[2].type: unknown source type 'aws_curr'");
        has("sources[3]: unknown field `pth`");
        has("sources[4].path: environment variable MISSING_VAR is not set");
        assert_eq!(err.len(), 7, "{text:#?}");
    }

    #[test]
    fn source_roles_and_valid_years_are_read_and_checked() {
        let c = Config::parse(
            "ingest: { valid_years: [2010, 2040] }\nsources:\n  - { name: cur, type: focus, path: /a }\n  - { name: ce, type: focus, path: /b, role: check }\n",
            &env,
        )
        .expect("valid");
        assert_eq!(c.date_bounds, costledger_core::DateBounds { first_year: 2010, last_year: 2040 });
        assert_eq!(c.batch_rows, 5_000, "batch_rows keeps its default beside valid_years");
        let roles: Vec<_> = c.sources.iter().map(|s| s.role).collect();
        assert_eq!(roles, [crate::ledger::SourceRole::Primary, crate::ledger::SourceRole::Check]);
        let err = Config::parse(
            "ingest: { valid_years: [2100, 2000] }\nsources:\n  - { name: x, type: focus, path: /a, role: secondary }\n",
            &env,
        )
        .expect_err("invalid");
        let text: Vec<String> = err.iter().map(|i| i.to_string()).collect();
        assert!(text.iter().any(|t| t.contains("ingest.valid_years: must be [FIRST, LAST]")), "{text:?}");
        assert!(text.iter().any(|t| t.contains("sources[0].role: 'secondary' is not a role")), "{text:?}");
    }

    #[test]
    fn literal_dollar_brace_and_empty_config() {
        assert_eq!(expand("a$${b}c$d", &env).expect("ok"), "a${b}c$d");
        let c = Config::parse("", &env).expect("empty is fine");
        assert_eq!(c, Config::default());
    }
}
