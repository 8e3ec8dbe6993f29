//! The MCP edge: `costledger mcp`, a read-only Model Context Protocol server on stdio (the
//! official Rust SDK, `rmcp`) so an LLM assistant can answer cost questions. Each tool parses
//! its arguments into the same `QueryText` / parameters the HTTP API takes, calls one function
//! of `app::query` / `app::read`, and returns its JSON (exact amounts as strings) as structured
//! content plus a short text that names the currency and the range.

use std::sync::Arc;

use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CallToolResult, ContentBlock, Implementation, ListResourcesResult,
    ListToolsResult, PaginatedRequestParams, ReadResourceRequestParams, ReadResourceResponse, ReadResourceResult,
    Resource, ResourceContents, ServerCapabilities, ServerConfig, Tool,
};
use rmcp::service::RequestContext;
use rmcp::{ErrorData, RoleServer, ServerHandler, ServiceExt};
use serde_json::{Map, Value, json};

use crate::app;
use crate::config::Config;
use crate::ledger::LedgerStore;
use crate::query::QueryText;

/// The server: the ledger and the config, nothing else.
#[derive(Clone)]
pub struct CostServer {
    store: Arc<dyn LedgerStore>,
    config: Arc<Config>,
}

/// A tool-level failure: the assistant sees the message (what was wrong, what to use instead).
struct ToolError(String);

impl<E: std::fmt::Display> From<E> for ToolError {
    fn from(e: E) -> Self {
        ToolError(e.to_string())
    }
}

type Args = Map<String, Value>;

fn string_list(args: &Args, k: &str) -> Result<Vec<String>, ToolError> {
    match args.get(k) {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::String(s)) => Ok(vec![s.clone()]),
        Some(Value::Array(a)) => a
            .iter()
            .map(|v| v.as_str().map(String::from).ok_or_else(|| ToolError(format!("'{k}' must be a list of strings"))))
            .collect(),
        Some(_) => Err(ToolError(format!("'{k}' must be a list of strings"))),
    }
}

fn string(args: &Args, k: &str) -> Result<Option<String>, ToolError> {
    match args.get(k) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(ToolError(format!("'{k}' must be a string"))),
    }
}

/// A whole number of at least 1, when given.
fn positive(args: &Args, k: &str) -> Result<Option<usize>, ToolError> {
    match args.get(k) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v
            .as_u64()
            .and_then(|n| usize::try_from(n).ok())
            .filter(|n| *n >= 1)
            .map(Some)
            .ok_or_else(|| ToolError(format!("'{k}' must be a whole number of at least 1"))),
    }
}

fn unknown_arguments(args: &Args, known: &[&str]) -> Result<(), ToolError> {
    match args.keys().find(|k| !known.contains(&k.as_str())) {
        Some(k) => Err(ToolError(format!("unknown argument '{k}': this tool takes {}", known.join(", ")))),
        None => Ok(()),
    }
}

const QUERY_ARGS: &[&str] =
    &["metric", "group_by", "grain", "where", "from", "to", "by_billing_period", "currency", "top"];

/// `query_costs` arguments → the query text every edge shares.
fn query_text(args: &Args) -> Result<QueryText, ToolError> {
    unknown_arguments(args, QUERY_ARGS)?;
    let top = positive(args, "top")?;
    Ok(QueryText {
        metrics: string_list(args, "metric")?,
        group_by: string_list(args, "group_by")?,
        grain: string(args, "grain")?,
        filters: string_list(args, "where")?,
        from: string(args, "from")?,
        to: string(args, "to")?,
        range_by_billing_period: args.get("by_billing_period").and_then(Value::as_bool).unwrap_or(false),
        currency: string(args, "currency")?,
        top,
    })
}

fn schema(v: Value) -> Arc<Map<String, Value>> {
    Arc::new(v.as_object().cloned().unwrap_or_default())
}

fn dimension_list() -> String {
    crate::query::dimension_names().join(", ")
}

fn metric_list() -> String {
    crate::query::METRICS.iter().map(|m| m.name).collect::<Vec<_>>().join(", ")
}

fn period_schema() -> Value {
    json!({"type": "object", "properties": {
        "period": {"type": "string", "description": "A billing period YYYY-MM; all periods when absent"}
    }, "additionalProperties": false})
}

/// The tool table: name, description, input schema.
fn tools() -> Vec<Tool> {
    let query_schema = json!({
        "type": "object",
        "properties": {
            "metric": {"type": "array", "items": {"type": "string"},
                "description": format!("Metrics to sum (default BilledCost, the invoice view; EffectiveCost is the amortised view): {}", metric_list())},
            "group_by": {"type": "array", "items": {"type": "string"},
                "description": format!("Dimensions to group by: {} or tag:KEY (e.g. tag:team)", dimension_list())},
            "grain": {"type": "string", "enum": ["none", "day", "week", "month", "billing_period"],
                "description": "Time buckets (default none: one bucket for the whole range)"},
            "where": {"type": "array", "items": {"type": "string"},
                "description": "Filters, all must hold: DIMENSION=V1,V2 (any of) or DIMENSION!=V; values are case-insensitive globs; (none) matches a missing value. E.g. provider=AWS, tag:team=payments"},
            "from": {"type": "string", "description": "First day, month or ISO week: 2026-09, 2026-09-15, 2026-W37"},
            "to": {"type": "string", "description": "Last day, month or ISO week, inclusive (2026-11 takes all November)"},
            "by_billing_period": {"type": "boolean", "description": "Apply from/to to billing periods instead of the days charges were incurred"},
            "currency": {"type": "string", "description": "Convert money to this ISO 4217 currency with the stored FX rates (else one row per billing currency)"},
            "top": {"type": "integer", "minimum": 1, "description": "Keep the N largest groups; the rest are summed into one (others) row so totals stay exact"}
        },
        "additionalProperties": false
    });
    let mut t = vec![
        Tool::new(
            "query_costs",
            "Answer a cost question from the ledger: sums of BilledCost (or other metrics) grouped by \
             dimensions and time, filtered, exact to the last digit (amounts are decimal strings, per \
             currency). The same answer as `costledger query` and GET /api/v1/costs.",
            schema(query_schema),
        ),
        Tool::new(
            "explain_change",
            "Explain why a cost changed between two periods: for each group (by service, owner, account, tag:KEY …) \
             the change split into volume (more or less usage at the old price), rate (the same SKUs at a different \
             price), mix (shift between SKUs), new and gone (services or units in one period only), no_quantity \
             (credits, tax, fees) and fx (currency rates). The parts add back to the change exactly; each group has \
             a one-line sentence. The same answer as `costledger explain` and GET /api/v1/explain.",
            schema(json!({"type": "object", "properties": {
                "from": {"type": "string", "description": "The earlier period: a month (2026-10), an ISO week (2026-W44), a day or a day range (2026-10-01..2026-10-07)"},
                "to": {"type": "string", "description": "The later period, of the same kind and length as from"},
                "by": {"type": "array", "items": {"type": "string"},
                    "description": format!("Dimensions to explain by (default service): {} or tag:KEY", dimension_list())},
                "metric": {"type": "string", "enum": ["BilledCost", "EffectiveCost", "ListCost", "ContractedCost"],
                    "description": "BilledCost (default, the invoice view) or EffectiveCost (amortised) …"},
                "where": {"type": "array", "items": {"type": "string"},
                    "description": "Filters, all must hold: DIMENSION=V1,V2 or DIMENSION!=V (globs; (none) is missing)"},
                "currency": {"type": "string", "description": "Convert to this ISO 4217 currency (else one row per billing currency)"},
                "top": {"type": "integer", "minimum": 1, "description": "Keep the N largest changes; the rest in one (others) row"}
            }, "required": ["from", "to"], "additionalProperties": false})),
        ),
        Tool::new(
            "commitment_utilisation",
            "Commitments (reservations, savings plans, committed use discounts): utilisation per commitment \
             (used ÷ (used + unused) EffectiveCost, flagged below the configured minimum, default 80%) and coverage \
             per service or another dimension (usage covered by commitments ÷ all usage, on ContractedCost or \
             ListCost). Exact amounts as strings. The same answer as `costledger commitments`.",
            schema(json!({"type": "object", "properties": {
                "from": {"type": "string", "description": "First day, month or ISO week"},
                "to": {"type": "string", "description": "Last day, month or ISO week, inclusive"},
                "grain": {"type": "string", "enum": ["none", "day", "week", "month", "billing_period"]},
                "by": {"type": "array", "items": {"type": "string"}, "description": "Coverage per these dimensions (default service)"},
                "basis": {"type": "string", "enum": ["ContractedCost", "ListCost"], "description": "Coverage basis (default ContractedCost)"},
                "where": {"type": "array", "items": {"type": "string"}, "description": "Filters, as for query_costs"}
            }, "additionalProperties": false})),
        ),
        Tool::new(
            "budgets",
            "The configured budgets as of a day: actual cost of the month or quarter to date, the period-end \
             forecast (weekday run rates), percentages of the budget and the thresholds reached. Exact amounts as \
             strings. The same answer as `costledger budgets`.",
            schema(json!({"type": "object", "properties": {
                "as_of": {"type": "string", "description": "The first day not counted as actual (YYYY-MM-DD); default the day after the last day with data"}
            }, "additionalProperties": false})),
        ),
        Tool::new(
            "unit_costs",
            "Unit costs: a cost divided by a business metric imported with `costledger metrics import` (requests, \
             users …), per group and time bucket, e.g. EffectiveCost per 1000 requests per owner per week. The exact \
             cost and quantity beside the rounded quotient. The same answer as `costledger query --per`.",
            schema(json!({"type": "object", "properties": {
                "per": {"type": "string", "description": "The business metric to divide by"},
                "per_unit": {"type": "string", "description": "The unit cost is per this many of the metric (default 1), e.g. \"1000\""},
                "places": {"type": "integer", "minimum": 0, "maximum": 12, "description": "Decimal places of the unit cost (default 4)"},
                "metric": {"type": "array", "items": {"type": "string"}, "description": "The cost metric (default BilledCost)"},
                "group_by": {"type": "array", "items": {"type": "string"}, "description": "Dimensions the metric values carry (owner or the file's columns)"},
                "grain": {"type": "string", "enum": ["none", "day", "week", "month", "billing_period"]},
                "where": {"type": "array", "items": {"type": "string"}},
                "from": {"type": "string"},
                "to": {"type": "string"}
            }, "required": ["per"], "additionalProperties": false})),
        ),
        Tool::new(
            "list_dimensions",
            "The dimensions costs can be grouped or filtered by, and the metrics, with their meaning.",
            schema(json!({"type": "object", "properties": {}, "additionalProperties": false})),
        ),
        Tool::new(
            "dimension_values",
            "The distinct values of one dimension (e.g. every service, every tag:team value) with their line counts.",
            schema(json!({"type": "object", "properties": {
                "name": {"type": "string", "description": format!("A dimension: {} or tag:KEY", dimension_list())},
                "from": {"type": "string", "description": "First day, month or ISO week"},
                "to": {"type": "string", "description": "Last day, month or ISO week, inclusive"}
            }, "required": ["name"], "additionalProperties": false})),
        ),
        Tool::new(
            "top_unallocated",
            "The largest unallocated spend (charges without an owner) after the last reconcile, by reason, \
             with what to do about each reason.",
            schema(json!({"type": "object", "properties": {
                "period": {"type": "string", "description": "A billing period YYYY-MM; all periods when absent"},
                "top": {"type": "integer", "minimum": 1, "description": "How many rows (default 10)"}
            }, "additionalProperties": false})),
        ),
        Tool::new(
            "list_findings",
            "Findings of the last reconcile: invoice mismatches, gaps, duplicates, unallocated spend, cross-source differences.",
            schema(period_schema()),
        ),
        Tool::new(
            "billing_periods",
            "Billing periods per source: state (open, final, corrected), invoices and exact totals per currency.",
            schema(json!({"type": "object", "properties": {}, "additionalProperties": false})),
        ),
        Tool::new(
            "list_sources",
            "The configured bill sources, how fresh their data is (latest charge end) and their newest load.",
            schema(json!({"type": "object", "properties": {}, "additionalProperties": false})),
        ),
    ];
    for tool in &mut t {
        let mut a = rmcp::model::ToolAnnotations::default();
        a.read_only_hint = Some(true);
        a.open_world_hint = Some(false);
        tool.annotations = Some(a);
    }
    t
}

/// A short sentence saying what a query answer covers (currencies, range, lines).
fn query_summary(r: &crate::query::aggregate::QueryResult, text: &QueryText) -> String {
    let currencies: Vec<&str> = r.totals.iter().map(|t| t.currency.as_str()).collect();
    let range = match (&text.from, &text.to) {
        (None, None) => "all dates".to_string(),
        (f, t) => format!(
            "{} to {}{}",
            f.as_deref().unwrap_or("the start"),
            t.as_deref().unwrap_or("the end"),
            if text.range_by_billing_period { " (billing periods)" } else { " (charge dates)" }
        ),
    };
    let totals: Vec<String> = r
        .totals
        .iter()
        .map(|t| {
            let v: Vec<String> = r
                .metrics
                .iter()
                .zip(&t.values)
                .map(|(m, v)| format!("{m} {}", v.map(|x| x.to_string()).unwrap_or_else(|| "-".into())))
                .collect();
            format!("{}: {}", t.currency, v.join(", "))
        })
        .collect();
    format!(
        "{} rows from {} charge lines, {range}; currency: {}{}. Totals: {}. Amounts are exact decimals.",
        r.rows.len(),
        r.lines,
        if currencies.is_empty() { "none".to_string() } else { currencies.join(", ") },
        r.converted_to.as_ref().map(|c| format!(" (converted to {c})")).unwrap_or_default(),
        if totals.is_empty() { "none".to_string() } else { totals.join("; ") }
    )
}

fn ok(summary: String, v: Value) -> CallToolResult {
    let mut r = CallToolResult::success(vec![
        ContentBlock::text(summary),
        ContentBlock::text(serde_json::to_string_pretty(&v).unwrap_or_default()),
    ]);
    // Structured content must be an object: lists are wrapped.
    r.structured_content = Some(if v.is_object() { v } else { json!({ "items": v }) });
    r
}

fn period_arg(args: &Args) -> Result<Option<String>, ToolError> {
    match string(args, "period")? {
        None => Ok(None),
        Some(p) => p
            .parse::<costledger_core::BillingPeriod>()
            .map(|bp| Some(bp.to_string()))
            .map_err(|_| ToolError(format!("bad period '{p}': use YYYY-MM"))),
    }
}

impl CostServer {
    pub fn new(store: Arc<dyn LedgerStore>, config: Arc<Config>) -> CostServer {
        CostServer { store, config }
    }

    async fn call(&self, name: &str, args: &Args) -> Result<CallToolResult, ToolError> {
        let store = self.store.as_ref();
        let config = self.config.as_ref();
        match name {
            "query_costs" => {
                let text = query_text(args)?;
                let q = app::query::parse(config, &text)?;
                let r = app::query::query(store, config, &q).await?;
                Ok(ok(query_summary(&r, &text), crate::api::to_json(&r)))
            }
            "explain_change" => {
                unknown_arguments(args, &["from", "to", "by", "metric", "where", "currency", "top"])?;
                let required =
                    |k: &str| string(args, k)?.ok_or_else(|| ToolError(format!("'{k}' is required (e.g. 2026-10)")));
                let top = positive(args, "top")?;
                let text = app::explain::ExplainText {
                    from: required("from")?,
                    to: required("to")?,
                    by: string_list(args, "by")?,
                    metric: string(args, "metric")?,
                    filters: string_list(args, "where")?,
                    currency: string(args, "currency")?,
                    top,
                };
                let q = app::explain::parse(config, &text)?;
                let e = app::explain::explain(store, config, &q).await?;
                let mut summary = format!(
                    "{} from {} to {} by {}, exact decimals per currency. ",
                    e.metric,
                    e.from.label,
                    e.to.label,
                    e.by.join(", ")
                );
                for t in &e.totals {
                    summary.push_str(&format!(
                        "Total {}: {} → {} ({}). ",
                        t.currency,
                        t.before,
                        t.after,
                        crate::explain::grouped(&t.change, true)
                    ));
                }
                let drivers: Vec<&str> =
                    e.groups.iter().filter(|g| !g.others).take(5).map(|g| g.sentence.as_str()).collect();
                if !drivers.is_empty() {
                    summary.push_str("Top drivers: ");
                    summary.push_str(&drivers.join("; "));
                    summary.push('.');
                }
                Ok(ok(summary, crate::api::to_json(&e)))
            }
            "commitment_utilisation" => {
                unknown_arguments(args, &["from", "to", "grain", "by", "basis", "where"])?;
                let text = app::commitments::CommitmentsText {
                    from: string(args, "from")?,
                    to: string(args, "to")?,
                    grain: string(args, "grain")?,
                    by: string_list(args, "by")?,
                    basis: string(args, "basis")?,
                    filters: string_list(args, "where")?,
                };
                let c = app::commitments::commitments(store, config, &text).await?;
                let low: Vec<String> = c
                    .utilisation
                    .iter()
                    .filter(|u| u.below_minimum)
                    .map(|u| {
                        format!(
                            "{} {}% ({} {} unused)",
                            u.commitment,
                            u.utilisation_percent.map(|p| p.to_string()).unwrap_or_default(),
                            u.unused,
                            u.currency
                        )
                    })
                    .collect();
                let summary = format!(
                    "{} commitments, {} coverage rows ({} basis); below {}% utilisation: {}.",
                    c.utilisation.len(),
                    c.coverage.len(),
                    c.basis,
                    c.utilisation_minimum_percent,
                    if low.is_empty() { "none".to_string() } else { low.join("; ") }
                );
                Ok(ok(summary, crate::api::to_json(&c)))
            }
            "budgets" => {
                unknown_arguments(args, &["as_of"])?;
                let as_of = match string(args, "as_of")? {
                    Some(d) => chrono::NaiveDate::parse_from_str(d.trim(), "%Y-%m-%d")
                        .map_err(|_| ToolError(format!("bad date '{d}' for as_of: use YYYY-MM-DD")))?,
                    None => app::budgets::default_as_of(store, config).await?,
                };
                let v = app::budgets::statuses(store, config, as_of).await?;
                let notes: Vec<String> = v.iter().filter_map(crate::budgets::message).collect();
                let summary = format!(
                    "{} budgets as of {as_of}{}",
                    v.len(),
                    if notes.is_empty() {
                        ": none reached a threshold.".to_string()
                    } else {
                        format!(". {}.", notes.join("; "))
                    }
                );
                Ok(ok(summary, crate::api::to_json(&v)))
            }
            "unit_costs" => {
                unknown_arguments(
                    args,
                    &["per", "per_unit", "places", "metric", "group_by", "grain", "where", "from", "to"],
                )?;
                let per = string(args, "per")?
                    .ok_or_else(|| ToolError("'per' is required: a business metric name".into()))?;
                let per_unit = crate::unit_costs::parse_per_unit(string(args, "per_unit")?.as_deref())?;
                let places = match args.get("places") {
                    None | Some(Value::Null) => 4,
                    Some(v) => v
                        .as_u64()
                        .and_then(|n| u32::try_from(n).ok())
                        .filter(|n| *n <= 12)
                        .ok_or_else(|| ToolError("'places' must be a whole number from 0 to 12".into()))?,
                };
                let text = QueryText {
                    metrics: string_list(args, "metric")?,
                    group_by: string_list(args, "group_by")?,
                    grain: string(args, "grain")?,
                    filters: string_list(args, "where")?,
                    from: string(args, "from")?,
                    to: string(args, "to")?,
                    ..Default::default()
                };
                let q = app::query::parse(config, &text)?;
                let u = app::unit_costs::unit_costs(store, config, &q, &per, per_unit, places).await?;
                let summary = format!(
                    "{} rows of {} per {} {} (exact cost and quantity; unit cost rounded half-to-even to {} places).",
                    u.rows.len(),
                    u.cost_metric,
                    u.per,
                    u.per_metric,
                    u.places
                );
                Ok(ok(summary, crate::api::to_json(&u)))
            }
            "list_dimensions" => {
                unknown_arguments(args, &[])?;
                let metrics: Vec<Value> =
                    crate::query::METRICS.iter().map(|m| json!({"name": m.name, "meaning": m.meaning})).collect();
                let v = json!({"dimensions": app::read::dimensions(), "tags": "tag:KEY groups by a tag (keys after the configured aliases, case-insensitive)", "metrics": metrics});
                Ok(ok("Dimensions and metrics a cost query can use.".into(), v))
            }
            "dimension_values" => {
                unknown_arguments(args, &["name", "from", "to"])?;
                let name = string(args, "name")?.ok_or_else(|| ToolError("'name' is required".into()))?;
                let from = string(args, "from")?;
                let to = string(args, "to")?;
                let v = app::read::dimension_values(store, config, &name, from.as_deref(), to.as_deref()).await?;
                Ok(ok(format!("{} distinct values of {name}.", v.len()), crate::api::to_json(&v)))
            }
            "top_unallocated" => {
                unknown_arguments(args, &["period", "top"])?;
                let period = period_arg(args)?;
                let top = positive(args, "top")?.unwrap_or(10);
                let rows = app::read::top_unallocated(store, period.as_deref(), top).await?;
                let summary = if rows.is_empty() {
                    "No unallocated spend (or no reconcile has run yet: `costledger reconcile`).".to_string()
                } else {
                    format!("{} largest unallocated amounts (BilledCost, exact, per currency).", rows.len())
                };
                Ok(ok(summary, crate::api::to_json(&rows)))
            }
            "list_findings" => {
                unknown_arguments(args, &["period"])?;
                let v = app::read::findings(store, period_arg(args)?.as_deref()).await?;
                Ok(ok(format!("{} findings of the last reconcile.", v.len()), crate::api::to_json(&v)))
            }
            "billing_periods" => {
                unknown_arguments(args, &[])?;
                let v = app::read::periods(store).await?;
                Ok(ok(format!("{} billing periods (exact totals per currency).", v.len()), crate::api::to_json(&v)))
            }
            "list_sources" => {
                unknown_arguments(args, &[])?;
                let v = app::read::sources(store, config).await?;
                Ok(ok(format!("{} sources.", v.len()), crate::api::to_json(&v)))
            }
            other => Err(ToolError(format!(
                "unknown tool '{other}': use {}",
                tools().iter().map(|t| t.name.to_string()).collect::<Vec<_>>().join(", ")
            ))),
        }
    }
}

/// Resources: the dimension and metric tables in plain words.
fn resource_text(uri: &str) -> Option<String> {
    match uri {
        "costledger://dimensions" => {
            let mut s = String::from(
                "# Dimensions\n\nGroup or filter costs by these (and by tag:KEY, a tag after the configured aliases, \
                 case-insensitive).\n\n",
            );
            for d in crate::query::DIMENSIONS {
                s.push_str(&format!("- `{}` ({}): {}\n", d.name, d.column, d.meaning));
            }
            Some(s)
        }
        "costledger://metrics" => {
            let mut s = String::from(
                "# Metrics\n\nAmounts are exact decimals in the billing currency unless converted. BilledCost is \
                 what the invoice charges; EffectiveCost spreads commitment purchases over their use.\n\n",
            );
            for m in crate::query::METRICS {
                s.push_str(&format!("- `{}`: {}\n", m.name, m.meaning));
            }
            Some(s)
        }
        _ => None,
    }
}

impl ServerHandler for CostServer {
    fn get_info(&self) -> ServerConfig {
        let caps = ServerCapabilities::builder().enable_tools().enable_resources().build();
        let mut info = ServerConfig::new(caps).with_instructions(
            "costledger answers questions about cloud spend from an exact ledger of the bills (AWS, Azure, \
             GCP, OCI). Use query_costs for sums (group_by, grain, where, from/to); list_dimensions and \
             dimension_values to find names and values; top_unallocated for spend without an owner. Amounts \
             are exact decimal strings in the currency each row names.",
        );
        info.server_info = Implementation::new("costledger", env!("CARGO_PKG_VERSION"));
        info
    }

    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, ErrorData> {
        Ok(ListToolsResult::with_all_items(tools()))
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, ErrorData> {
        let args = request.arguments.unwrap_or_default();
        let span = tracing::info_span!("mcp_tool", tool = %request.name);
        let _g = span.enter();
        let result = match self.call(&request.name, &args).await {
            Ok(r) => r,
            Err(ToolError(message)) => {
                tracing::info!(error = %message, "tool call refused");
                CallToolResult::error(vec![ContentBlock::text(message)])
            }
        };
        Ok(result.into())
    }

    async fn list_resources(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListResourcesResult, ErrorData> {
        let mk = |uri: &str, name: &str, d: &str| {
            let mut r = Resource::new(uri, name);
            r.description = Some(d.into());
            r.mime_type = Some("text/markdown".into());
            r
        };
        Ok(ListResourcesResult::with_all_items(vec![
            mk("costledger://dimensions", "dimensions", "What each dimension of a cost query means"),
            mk("costledger://metrics", "metrics", "What each metric of a cost query means"),
        ]))
    }

    async fn read_resource(
        &self,
        request: ReadResourceRequestParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<ReadResourceResponse, ErrorData> {
        match resource_text(&request.uri) {
            Some(t) => Ok(ReadResourceResult::new(vec![ResourceContents::text(t, request.uri.clone())]).into()),
            None => Err(ErrorData::resource_not_found(
                format!("no resource {}: use costledger://dimensions or costledger://metrics", request.uri),
                None,
            )),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum McpError {
    #[error("the MCP session could not start on stdio: {0}")]
    Start(String),
    #[error("the MCP session ended abnormally: {0}")]
    Ended(String),
}

/// Serve MCP on stdin/stdout until the client closes it.
pub async fn serve_stdio(store: Arc<dyn LedgerStore>, config: Arc<Config>) -> Result<(), McpError> {
    let service = CostServer::new(store, config)
        .serve(rmcp::transport::stdio())
        .await
        .map_err(|e| McpError::Start(e.to_string()))?;
    service.waiting().await.map_err(|e| McpError::Ended(e.to_string()))?;
    Ok(())
}
