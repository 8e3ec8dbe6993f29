//! The HTTP edge of the read side: `/api/v1/…` (JSON, amounts as decimal strings), its OpenAPI
//! document, the cost-explorer page at `/`, bearer-token authentication and request logs.
//! Every handler parses its parameters, calls one function of `app::query` / `app::read` and
//! serialises what it returns: no SQL and no logic of its own. The API never writes.

pub mod openapi;
mod web;

use std::net::SocketAddr;
use std::sync::{Arc, RwLock};
use std::time::Instant;

use axum::Router;
use axum::extract::{MatchedPath, Path, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::Serialize;
use utoipa::ToSchema;

use crate::app;
use crate::config::Config;
use crate::ledger::{LedgerStore, LoadState};
use crate::query::aggregate::{AggregateError, QueryResult};
use crate::query::{QueryError, QueryText};

/// The config the server reads (swapped by the daemon on SIGHUP).
pub type ConfigCell = Arc<RwLock<Arc<Config>>>;

/// Cost queries answered at once; more wait up to [`QUERY_WAIT`], then get 503. A query scanning
/// the charges takes a core and memory per group, so a burst of clients must queue rather than
/// starve the daemon's jobs and probes.
pub const QUERY_SLOTS: usize = 4;
/// How long a cost query waits for a slot.
pub const QUERY_WAIT: std::time::Duration = std::time::Duration::from_secs(30);

#[derive(Clone)]
pub struct ApiState {
    pub store: Arc<dyn LedgerStore>,
    pub config: ConfigCell,
    slots: Arc<tokio::sync::Semaphore>,
}

impl ApiState {
    pub fn new(store: Arc<dyn LedgerStore>, config: ConfigCell) -> ApiState {
        ApiState { store, config, slots: Arc::new(tokio::sync::Semaphore::new(QUERY_SLOTS)) }
    }

    /// A slot to run one cost query in, or 503 after [`QUERY_WAIT`].
    async fn query_slot(&self) -> Result<tokio::sync::OwnedSemaphorePermit, ApiError> {
        match tokio::time::timeout(QUERY_WAIT, self.slots.clone().acquire_owned()).await {
            Ok(Ok(p)) => Ok(p),
            _ => Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                format!(
                    "busy: {QUERY_SLOTS} cost queries are running and this one waited {} s; retry later",
                    QUERY_WAIT.as_secs()
                ),
                None,
            )),
        }
    }

    fn config(&self) -> Arc<Config> {
        self.config.read().map(|c| c.clone()).unwrap_or_else(|p| p.into_inner().clone())
    }
}

/// Why the server refuses to start with this config.
#[derive(Debug, thiserror::Error)]
pub enum ExposureError {
    #[error(
        "refusing to serve the API on {bind} without tokens: anyone who can reach that address could read \
         the bill. Set api.tokens (e.g. [\"${{COSTLEDGER_API_TOKEN}}\"]), bind to 127.0.0.1, or set \
         api.allow_anonymous: true if that is intended"
    )]
    Anonymous { bind: SocketAddr },
}

/// A non-loopback bind needs tokens, unless `api.allow_anonymous` says otherwise.
pub fn check_exposure(config: &Config) -> Result<(), ExposureError> {
    if !config.server_bind.ip().is_loopback() && config.api.tokens.is_empty() && !config.api.allow_anonymous {
        return Err(ExposureError::Anonymous { bind: config.server_bind });
    }
    Ok(())
}

/// An error answer: `{"error": {"status": 400, "message": "…", "parameter": "group_by"}}`.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ApiError {
    pub error: ErrorBody,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ErrorBody {
    pub status: u16,
    pub message: String,
    /// The query parameter at fault, when one is.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub parameter: Option<String>,
}

impl ApiError {
    pub fn new(status: StatusCode, message: impl Into<String>, parameter: Option<&str>) -> ApiError {
        ApiError {
            error: ErrorBody {
                status: status.as_u16(),
                message: message.into(),
                parameter: parameter.map(String::from),
            },
        }
    }

    fn bad(parameter: &str, message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, message, Some(parameter))
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.error.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let mut r = (status, axum::Json(self)).into_response();
        if status == StatusCode::UNAUTHORIZED {
            r.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        r
    }
}

impl From<crate::ledger::LedgerError> for ApiError {
    fn from(e: crate::ledger::LedgerError) -> Self {
        tracing::error!(error = %e, "the ledger failed to answer an API request");
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, format!("the ledger could not answer: {e}"), None)
    }
}

/// The query parameter a query error is about.
fn query_error_parameter(e: &QueryError) -> &'static str {
    match e {
        QueryError::UnknownDimension(_) | QueryError::EmptyTag(_) | QueryError::RepeatedDimension(_) => "group_by",
        QueryError::UnknownMetric(_) => "metric",
        QueryError::UnknownGrain(_) => "grain",
        QueryError::BadDate(_, arg) => {
            if arg.contains("to") {
                "to"
            } else {
                "from"
            }
        }
        QueryError::EmptyRange { .. } => "from",
        QueryError::BadFilter(_) | QueryError::BadPattern { .. } => "where",
        QueryError::BadCurrency(_) => "currency",
        QueryError::ZeroTop => "top",
    }
}

impl From<app::query::QueryRunError> for ApiError {
    fn from(e: app::query::QueryRunError) -> Self {
        use app::query::QueryRunError as E;
        match e {
            E::Query(q) => ApiError::bad(query_error_parameter(&q), q.to_string()),
            E::Aggregate(AggregateError::Fx(f)) => ApiError::bad("currency", f.to_string()),
            E::Aggregate(t @ AggregateError::TooManyGroups { .. }) => ApiError::bad("group_by", t.to_string()),
            E::Aggregate(a) => ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, a.to_string(), None),
            E::Ledger(l) => l.into(),
        }
    }
}

/// Query parameters, repeated ones kept (`where=a&where=b`); any name a route does not know
/// is a 400 naming it.
struct Params(Vec<(String, String)>);

impl Params {
    fn parse(query: Option<&str>, known: &[&str]) -> Result<Params, ApiError> {
        let pairs: Vec<(String, String)> =
            url::form_urlencoded::parse(query.unwrap_or("").as_bytes()).map(|(k, v)| (k.into(), v.into())).collect();
        for (k, _) in &pairs {
            if !known.contains(&k.as_str()) {
                return Err(ApiError::bad(
                    k,
                    format!(
                        "unknown parameter '{k}': this route takes {}",
                        if known.is_empty() { "none".to_string() } else { known.join(", ") }
                    ),
                ));
            }
        }
        Ok(Params(pairs))
    }

    fn all(&self, k: &str) -> Vec<String> {
        self.0.iter().filter(|(n, _)| n == k).map(|(_, v)| v.clone()).collect()
    }

    fn one(&self, k: &str) -> Result<Option<String>, ApiError> {
        let mut v = self.all(k);
        match v.len() {
            0 => Ok(None),
            1 => Ok(v.pop()),
            _ => Err(ApiError::bad(k, format!("'{k}' is given {} times: give it once", v.len()))),
        }
    }

    fn number<T>(&self, k: &str, min: T, max: T) -> Result<Option<T>, ApiError>
    where
        T: std::str::FromStr + PartialOrd + std::fmt::Display + Copy,
    {
        match self.one(k)? {
            None => Ok(None),
            Some(s) => match s.trim().parse::<T>() {
                Ok(n) if n >= min && n <= max => Ok(Some(n)),
                _ => Err(ApiError::bad(k, format!("'{k}' must be a whole number from {min} to {max}, not '{s}'"))),
            },
        }
    }

    /// `format=json` (default) or `format=csv`.
    fn wants_csv(&self) -> Result<bool, ApiError> {
        match self.one("format")?.as_deref() {
            None | Some("json") => Ok(false),
            Some("csv") => Ok(true),
            Some(o) => Err(ApiError::bad("format", format!("unknown format '{o}': use json or csv"))),
        }
    }

    fn flag(&self, k: &str) -> Result<bool, ApiError> {
        match self.one(k)?.as_deref() {
            None | Some("false") | Some("0") => Ok(false),
            Some("true") | Some("1") | Some("") => Ok(true),
            Some(o) => Err(ApiError::bad(k, format!("'{k}' must be true or false, not '{o}'"))),
        }
    }
}

/// A CSV download: the bytes `write` renders (the CLI's CSV), as an attachment `name`.
fn csv_response(name: &str, write: impl FnOnce(&mut Vec<u8>) -> Result<(), csv::Error>) -> Result<Response, ApiError> {
    let mut body = Vec::new();
    write(&mut body).map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string(), None))?;
    let disposition = HeaderValue::from_str(&format!("attachment; filename=\"{name}\""))
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string(), None))?;
    Ok((
        [
            (header::CONTENT_TYPE, HeaderValue::from_static("text/csv; charset=utf-8")),
            (header::CONTENT_DISPOSITION, disposition),
        ],
        body,
    )
        .into_response())
}

/// The most rows one page of `/costs` returns.
pub const MAX_PAGE_ROWS: usize = 10_000;

/// `/costs`: the query's answer, one page of its rows (the totals cover every row).
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct CostsPage {
    #[serde(flatten)]
    pub result: QueryResult,
    /// Rows of the whole answer (this page holds `rows.len()` of them from `offset`).
    pub total_rows: usize,
    pub offset: usize,
    /// The `offset` of the next page; absent on the last one.
    pub next_offset: Option<usize>,
}

const COSTS_PARAMS: &[&str] = &[
    "metric",
    "group_by",
    "grain",
    "where",
    "from",
    "to",
    "by_billing_period",
    "currency",
    "top",
    "format",
    "limit",
    "offset",
];

/// Parse `/costs` parameters into the query text every edge shares.
fn costs_text(p: &Params) -> Result<QueryText, ApiError> {
    Ok(QueryText {
        metrics: p.all("metric"),
        group_by: p.all("group_by"),
        grain: p.one("grain")?,
        filters: p.all("where"),
        from: p.one("from")?,
        to: p.one("to")?,
        range_by_billing_period: p.flag("by_billing_period")?,
        currency: p.one("currency")?,
        top: p.number("top", 1usize, 1_000_000)?,
    })
}

/// The cost query (every parameter of `costledger query`).
#[utoipa::path(get, path = "/api/v1/costs", tag = "costs",
    params(
        ("metric" = Option<String>, Query, description = "Metrics, comma-separated: BilledCost (default), EffectiveCost, ListCost, ContractedCost, PricingQuantity, ConsumedQuantity, lines"),
        ("group_by" = Option<String>, Query, description = "Dimensions, comma-separated (see /api/v1/dimensions) or tag:KEY"),
        ("grain" = Option<String>, Query, description = "none (default), day, week, month, billing_period"),
        ("where" = Option<Vec<String>>, Query, description = "Filters, repeatable: DIMENSION=VALUE[,VALUE…] or DIMENSION!=VALUE; values are globs; (none) is missing"),
        ("from" = Option<String>, Query, description = "First day, month or ISO week (YYYY-MM-DD, YYYY-MM, YYYY-Www)"),
        ("to" = Option<String>, Query, description = "Last day, month or ISO week (inclusive)"),
        ("by_billing_period" = Option<bool>, Query, description = "Range by billing period instead of charge period"),
        ("currency" = Option<String>, Query, description = "Convert money to this ISO 4217 currency with the stored FX rates"),
        ("top" = Option<usize>, Query, description = "Keep the N largest groups, the rest summed into one (others) row"),
        ("format" = Option<String>, Query, description = "json (default) or csv (the CLI's CSV bytes, every row)"),
        ("limit" = Option<usize>, Query, description = "Rows per page (default and most: 10000)"),
        ("offset" = Option<usize>, Query, description = "First row of the page"),
    ),
    responses(
        (status = 200, description = "The answer", body = CostsPage),
        (status = 400, description = "A bad parameter, named", body = ApiError),
        (status = 401, description = "No or a wrong token", body = ApiError),
    ),
    security(("bearer" = []))
)]
async fn costs(State(s): State<ApiState>, req: Request) -> Result<Response, ApiError> {
    let p = Params::parse(req.uri().query(), COSTS_PARAMS)?;
    let text = costs_text(&p)?;
    let csv = p.wants_csv()?;
    let limit = p.number("limit", 1usize, MAX_PAGE_ROWS)?.unwrap_or(MAX_PAGE_ROWS);
    let offset = p.number("offset", 0usize, usize::MAX)?.unwrap_or(0);
    let config = s.config();
    let q = app::query::parse(&config, &text).map_err(app::query::QueryRunError::from)?;
    let _slot = s.query_slot().await?;
    let result = app::query::query(s.store.as_ref(), &config, &q).await?;
    if csv {
        return csv_response("costs.csv", |body| crate::query::render::write_csv(&result, body));
    }
    let total_rows = result.rows.len();
    let mut result = result;
    let end = offset.saturating_add(limit).min(total_rows);
    result.rows = if offset >= total_rows { Vec::new() } else { result.rows.drain(offset..end).collect() };
    let next_offset = (end < total_rows).then_some(end);
    Ok(axum::Json(CostsPage { result, total_rows, offset, next_offset }).into_response())
}

const UNIT_COST_PARAMS: &[&str] = &[
    "metric",
    "group_by",
    "grain",
    "where",
    "from",
    "to",
    "by_billing_period",
    "currency",
    "top",
    "per",
    "per_unit",
    "places",
    "format",
];

/// Unit costs (`costledger query --per`): the cost query divided by a business metric.
#[utoipa::path(get, path = "/api/v1/unit_costs", tag = "costs",
    params(
        ("per" = String, Query, description = "The business metric to divide by (costledger metrics import)"),
        ("per_unit" = Option<String>, Query, description = "The unit cost is per this many of the metric (default 1)"),
        ("places" = Option<u32>, Query, description = "Decimal places of the unit cost, half-to-even (default 4)"),
        ("metric" = Option<String>, Query, description = "The cost metric (the first is divided)"),
        ("group_by" = Option<String>, Query, description = "Dimensions the metric values carry (owner or the file's columns)"),
        ("grain" = Option<String>, Query, description = "none (default), day, week, month, billing_period"),
        ("where" = Option<Vec<String>>, Query, description = "Filters, repeatable, as for /api/v1/costs"),
        ("from" = Option<String>, Query, description = "First day, month or ISO week"),
        ("to" = Option<String>, Query, description = "Last day, month or ISO week (inclusive)"),
        ("format" = Option<String>, Query, description = "json (default) or csv (the CLI's CSV bytes)"),
    ),
    responses(
        (status = 200, description = "Unit costs", body = crate::unit_costs::UnitCosts),
        (status = 400, description = "A bad parameter, named", body = ApiError),
        (status = 401, description = "No or a wrong token", body = ApiError),
    ),
    security(("bearer" = []))
)]
async fn unit_costs(State(s): State<ApiState>, req: Request) -> Result<Response, ApiError> {
    use app::unit_costs::UnitCostRunError as E;
    let p = Params::parse(req.uri().query(), UNIT_COST_PARAMS)?;
    let text = costs_text(&p)?;
    let per = p.one("per")?.ok_or_else(|| ApiError::bad("per", "'per' is required: a business metric name"))?;
    let per_unit = crate::unit_costs::parse_per_unit(p.one("per_unit")?.as_deref())
        .map_err(|e| ApiError::bad("per_unit", e.to_string()))?;
    let places = p.number("places", 0u32, 12)?.unwrap_or(4);
    let csv = p.wants_csv()?;
    let config = s.config();
    let q = app::query::parse(&config, &text).map_err(app::query::QueryRunError::from)?;
    let _slot = s.query_slot().await?;
    let u = match app::unit_costs::unit_costs(s.store.as_ref(), &config, &q, &per, per_unit, places).await {
        Ok(u) => u,
        Err(E::Query(q)) => return Err(q.into()),
        Err(E::Ledger(l)) => return Err(l.into()),
        Err(E::UnitCost(e @ crate::unit_costs::UnitCostError::MissingDimension { .. })) => {
            return Err(ApiError::bad("group_by", e.to_string()));
        }
        Err(E::UnitCost(e @ crate::unit_costs::UnitCostError::UnknownMetric { .. })) => {
            return Err(ApiError::bad("per", e.to_string()));
        }
        Err(E::UnitCost(e)) => return Err(ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, e.to_string(), None)),
    };
    if csv {
        return csv_response("unit_costs.csv", |body| crate::unit_costs::write_csv(&u, body));
    }
    Ok(axum::Json(u).into_response())
}

const EXPLAIN_PARAMS: &[&str] = &["from", "to", "by", "metric", "where", "currency", "top", "format"];

/// The parameter an explain error is about.
fn explain_error(e: app::explain::ExplainRunError) -> ApiError {
    use crate::explain::ExplainError as X;
    use app::explain::ExplainRunError as E;
    match e {
        E::Explain(X::Query(q)) => {
            let p = match query_error_parameter(&q) {
                "group_by" => "by",
                other => other,
            };
            ApiError::bad(p, q.to_string())
        }
        E::Explain(x @ X::BadPeriod(_, arg)) => ApiError::bad(arg.trim_start_matches('-'), x.to_string()),
        E::Explain(x @ (X::DifferentGrains { .. } | X::Overlap { .. })) => ApiError::bad("to", x.to_string()),
        E::Explain(x @ X::NotMoney(_)) => ApiError::bad("metric", x.to_string()),
        E::Explain(x @ X::ZeroTop) => ApiError::bad("top", x.to_string()),
        E::Explain(x @ X::Fx(_)) => ApiError::bad("currency", x.to_string()),
        E::Explain(x) => ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, x.to_string(), None),
        E::Query(q) => q.into(),
        E::Ledger(l) => l.into(),
    }
}

/// Why a cost changed between two periods (`costledger explain`): each group's change split
/// into volume, rate, mix, new, gone, no quantity and FX, adding back exactly.
#[utoipa::path(get, path = "/api/v1/explain", tag = "costs",
    params(
        ("from" = String, Query, description = "The earlier period: a month (2026-10), an ISO week (2026-W44), a day or a day range (2026-10-01..2026-10-07)"),
        ("to" = String, Query, description = "The later period, of the same kind and length"),
        ("by" = Option<String>, Query, description = "Dimensions, comma-separated (default service); any of /api/v1/dimensions or tag:KEY"),
        ("metric" = Option<String>, Query, description = "BilledCost (default), EffectiveCost, ListCost or ContractedCost"),
        ("where" = Option<Vec<String>>, Query, description = "Filters, repeatable, as for /api/v1/costs"),
        ("currency" = Option<String>, Query, description = "Convert to this currency; the parts at the rate of the month `from` starts in, FX the rest"),
        ("top" = Option<usize>, Query, description = "Keep the N largest changes, the rest in one (others) row"),
        ("format" = Option<String>, Query, description = "json (default) or csv (the CLI's CSV bytes)"),
    ),
    responses(
        (status = 200, description = "The explanation", body = crate::explain::Explanation),
        (status = 400, description = "A bad parameter, named", body = ApiError),
        (status = 401, description = "No or a wrong token", body = ApiError),
    ),
    security(("bearer" = []))
)]
async fn explain(State(s): State<ApiState>, req: Request) -> Result<Response, ApiError> {
    let p = Params::parse(req.uri().query(), EXPLAIN_PARAMS)?;
    let required = |k: &str| -> Result<String, ApiError> {
        p.one(k)?
            .ok_or_else(|| ApiError::bad(k, format!("'{k}' is required (a month, an ISO week, a day or a day range)")))
    };
    let text = app::explain::ExplainText {
        from: required("from")?,
        to: required("to")?,
        by: p.all("by"),
        metric: p.one("metric")?,
        filters: p.all("where"),
        currency: p.one("currency")?,
        top: p.number("top", 1usize, 1_000_000)?,
    };
    let csv = p.wants_csv()?;
    let config = s.config();
    let q = app::explain::parse(&config, &text).map_err(|e| explain_error(e.into()))?;
    let _slot = s.query_slot().await?;
    let e = app::explain::explain(s.store.as_ref(), &config, &q).await.map_err(explain_error)?;
    if csv {
        return csv_response("explain.csv", |body| crate::explain::write_csv(&e, body));
    }
    Ok(axum::Json(e).into_response())
}

/// Budgets as of a day (`costledger budgets`).
#[utoipa::path(get, path = "/api/v1/budgets", tag = "costs",
    params(
        ("as_of" = Option<String>, Query, description = "The first day not counted as actual (YYYY-MM-DD); default the day after the last day with data, at most today"),
        ("format" = Option<String>, Query, description = "json (default) or csv"),
    ),
    responses(
        (status = 200, description = "Each configured budget", body = Vec<crate::budgets::BudgetStatus>),
        (status = 400, description = "A bad parameter, named", body = ApiError),
        (status = 401, description = "No or a wrong token", body = ApiError),
    ),
    security(("bearer" = []))
)]
async fn budgets(State(s): State<ApiState>, req: Request) -> Result<Response, ApiError> {
    let p = Params::parse(req.uri().query(), &["as_of", "format"])?;
    let as_of = match p.one("as_of")? {
        None => None,
        Some(d) => Some(
            chrono::NaiveDate::parse_from_str(d.trim(), "%Y-%m-%d")
                .map_err(|_| ApiError::bad("as_of", format!("bad date '{d}' for as_of: use YYYY-MM-DD")))?,
        ),
    };
    let csv = p.wants_csv()?;
    let config = s.config();
    let _slot = s.query_slot().await?;
    let store = s.store.as_ref();
    let as_of = match as_of {
        Some(d) => d,
        None => app::budgets::default_as_of(store, &config).await?,
    };
    let statuses = app::budgets::statuses(store, &config, as_of).await.map_err(|e| match e {
        app::budgets::BudgetsError::Query {
            source: app::query::QueryRunError::Aggregate(AggregateError::Fx(f)),
            name,
        } => ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, format!("budget '{name}': {f}"), None),
        other => ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, other.to_string(), None),
    })?;
    if csv {
        return csv_response("budgets.csv", |body| crate::budgets::write_csv(&statuses, body));
    }
    Ok(axum::Json(statuses).into_response())
}

const COMMITMENTS_PARAMS: &[&str] = &["from", "to", "grain", "by", "basis", "where", "format", "view"];

/// Commitment utilisation per commitment and coverage per group (`costledger commitments`).
#[utoipa::path(get, path = "/api/v1/commitments", tag = "costs",
    params(
        ("from" = Option<String>, Query, description = "First day, month or ISO week"),
        ("to" = Option<String>, Query, description = "Last day, month or ISO week (inclusive)"),
        ("grain" = Option<String>, Query, description = "none (default), day, week, month, billing_period"),
        ("by" = Option<String>, Query, description = "Coverage per these dimensions (default service)"),
        ("basis" = Option<String>, Query, description = "Coverage basis: ContractedCost (default) or ListCost"),
        ("where" = Option<Vec<String>>, Query, description = "Filters, repeatable, as for /api/v1/costs"),
        ("format" = Option<String>, Query, description = "json (default) or csv (with view)"),
        ("view" = Option<String>, Query, description = "utilisation (default) or coverage: the table format=csv returns"),
    ),
    responses(
        (status = 200, description = "Utilisation and coverage", body = crate::commitments::Commitments),
        (status = 400, description = "A bad parameter, named", body = ApiError),
        (status = 401, description = "No or a wrong token", body = ApiError),
    ),
    security(("bearer" = []))
)]
async fn commitments(State(s): State<ApiState>, req: Request) -> Result<Response, ApiError> {
    use app::commitments::CommitmentsError as E;
    let p = Params::parse(req.uri().query(), COMMITMENTS_PARAMS)?;
    let text = app::commitments::CommitmentsText {
        from: p.one("from")?,
        to: p.one("to")?,
        grain: p.one("grain")?,
        by: p.all("by"),
        basis: p.one("basis")?,
        filters: p.all("where"),
    };
    let view = match p.one("view")?.as_deref() {
        None | Some("utilisation") => crate::commitments::View::Utilisation,
        Some("coverage") => crate::commitments::View::Coverage,
        Some(o) => return Err(ApiError::bad("view", format!("unknown view '{o}': use utilisation or coverage"))),
    };
    let csv = p.wants_csv()?;
    let config = s.config();
    let _slot = s.query_slot().await?;
    let c = match app::commitments::commitments(s.store.as_ref(), &config, &text).await {
        Ok(c) => c,
        Err(E::BadBasis(b)) => return Err(ApiError::bad("basis", E::BadBasis(b).to_string())),
        Err(E::Query(app::query::QueryRunError::Query(q))) => {
            let param = match query_error_parameter(&q) {
                "group_by" => "by",
                other => other,
            };
            return Err(ApiError::bad(param, q.to_string()));
        }
        Err(E::Query(q)) => return Err(q.into()),
        Err(e @ E::Money(_)) => return Err(ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string(), None)),
    };
    if csv {
        return csv_response("commitments.csv", |body| crate::commitments::write_csv(&c, view, body));
    }
    Ok(axum::Json(c).into_response())
}

/// Every dimension a query can group or filter by (`tag:KEY` besides them).
#[utoipa::path(get, path = "/api/v1/dimensions", tag = "catalogue",
    responses((status = 200, body = Vec<app::read::DimensionView>), (status = 401, body = ApiError)),
    security(("bearer" = [])))]
async fn dimensions(req: Request) -> Result<Response, ApiError> {
    Params::parse(req.uri().query(), &[])?;
    Ok(axum::Json(app::read::dimensions()).into_response())
}

/// The distinct values of one dimension in a range (for pickers).
#[utoipa::path(get, path = "/api/v1/dimensions/{name}", tag = "catalogue",
    params(
        ("name" = String, Path, description = "A dimension name or tag:KEY"),
        ("from" = Option<String>, Query, description = "First day, month or ISO week"),
        ("to" = Option<String>, Query, description = "Last day, month or ISO week (inclusive)"),
    ),
    responses((status = 200, body = Vec<app::read::DimensionValue>), (status = 400, body = ApiError), (status = 401, body = ApiError)),
    security(("bearer" = [])))]
async fn dimension_values(
    State(s): State<ApiState>,
    Path(name): Path<String>,
    req: Request,
) -> Result<Response, ApiError> {
    let p = Params::parse(req.uri().query(), &["from", "to"])?;
    let config = s.config();
    let _slot = s.query_slot().await?;
    let v = app::read::dimension_values(
        s.store.as_ref(),
        &config,
        &name,
        p.one("from")?.as_deref(),
        p.one("to")?.as_deref(),
    )
    .await
    .map_err(|e| match e {
        app::query::QueryRunError::Query(q @ (QueryError::UnknownDimension(_) | QueryError::EmptyTag(_))) => {
            ApiError::new(StatusCode::NOT_FOUND, q.to_string(), Some("name"))
        }
        other => other.into(),
    })?;
    Ok(axum::Json(v).into_response())
}

/// Sources of the config and the ledger with their freshness and newest load.
#[utoipa::path(get, path = "/api/v1/sources", tag = "catalogue",
    responses((status = 200, body = Vec<app::read::SourceView>), (status = 401, body = ApiError)),
    security(("bearer" = [])))]
async fn sources(State(s): State<ApiState>, req: Request) -> Result<Response, ApiError> {
    Params::parse(req.uri().query(), &[])?;
    Ok(axum::Json(app::read::sources(s.store.as_ref(), &s.config()).await?).into_response())
}

/// Loads, newest first.
#[utoipa::path(get, path = "/api/v1/loads", tag = "catalogue",
    params(
        ("source" = Option<String>, Query, description = "Only this source"),
        ("state" = Option<String>, Query, description = "staging, current, superseded or failed"),
        ("limit" = Option<u32>, Query, description = "At most this many (default 100, most 10000)"),
    ),
    responses((status = 200, body = Vec<app::read::LoadView>), (status = 400, body = ApiError), (status = 401, body = ApiError)),
    security(("bearer" = [])))]
async fn loads(State(s): State<ApiState>, req: Request) -> Result<Response, ApiError> {
    let p = Params::parse(req.uri().query(), &["source", "state", "limit"])?;
    let state = match p.one("state")? {
        None => None,
        Some(t) => Some(LoadState::parse(&t).map_err(|_| {
            ApiError::bad("state", format!("unknown load state '{t}': use staging, current, superseded or failed"))
        })?),
    };
    let limit = p.number("limit", 1u32, 10_000)?.unwrap_or(100);
    Ok(axum::Json(app::read::loads(s.store.as_ref(), p.one("source")?, state, limit).await?).into_response())
}

/// Billing periods per source with their state and totals.
#[utoipa::path(get, path = "/api/v1/periods", tag = "catalogue",
    responses((status = 200, body = Vec<app::read::PeriodView>), (status = 401, body = ApiError)),
    security(("bearer" = [])))]
async fn periods(State(s): State<ApiState>, req: Request) -> Result<Response, ApiError> {
    Params::parse(req.uri().query(), &[])?;
    Ok(axum::Json(app::read::periods(s.store.as_ref()).await?).into_response())
}

fn period_param(p: &Params) -> Result<Option<String>, ApiError> {
    match p.one("period")? {
        None => Ok(None),
        Some(t) => match t.parse::<costledger_core::BillingPeriod>() {
            Ok(bp) => Ok(Some(bp.to_string())),
            Err(_) => Err(ApiError::bad("period", format!("bad period '{t}': use YYYY-MM"))),
        },
    }
}

/// Findings of the last reconcile.
#[utoipa::path(get, path = "/api/v1/findings", tag = "reconcile",
    params(("period" = Option<String>, Query, description = "Only this billing period (YYYY-MM)")),
    responses((status = 200, body = Vec<app::read::FindingView>), (status = 400, body = ApiError), (status = 401, body = ApiError)),
    security(("bearer" = [])))]
async fn findings(State(s): State<ApiState>, req: Request) -> Result<Response, ApiError> {
    let p = Params::parse(req.uri().query(), &["period"])?;
    Ok(axum::Json(app::read::findings(s.store.as_ref(), period_param(&p)?.as_deref()).await?).into_response())
}

/// The reconciler's allocation per period, owner, basis and reason.
#[utoipa::path(get, path = "/api/v1/allocation", tag = "reconcile",
    params(("period" = Option<String>, Query, description = "Only this billing period (YYYY-MM)")),
    responses((status = 200, body = Vec<app::read::AllocationView>), (status = 400, body = ApiError), (status = 401, body = ApiError)),
    security(("bearer" = [])))]
async fn allocation(State(s): State<ApiState>, req: Request) -> Result<Response, ApiError> {
    let p = Params::parse(req.uri().query(), &["period"])?;
    Ok(axum::Json(app::read::allocation(s.store.as_ref(), period_param(&p)?.as_deref()).await?).into_response())
}

async fn openapi_json() -> Response {
    ([(header::CONTENT_TYPE, "application/json")], openapi::document()).into_response()
}

async fn not_found(req: Request) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        format!("no such API route: {} (see /api/v1/openapi.json)", req.uri().path()),
        None,
    )
}

/// Constant-time equality (the time taken does not depend on where the bytes differ).
fn same(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The token a request carries: `Authorization: Bearer …`, else the page's cookie.
fn presented(headers: &HeaderMap) -> Option<String> {
    if let Some(v) = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok())
        && let Some(t) = v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer "))
    {
        return Some(t.trim().to_string());
    }
    headers.get_all(header::COOKIE).iter().filter_map(|v| v.to_str().ok()).flat_map(|v| v.split(';')).find_map(|c| {
        c.trim().strip_prefix("costledger_token=").map(|t| {
            url::form_urlencoded::parse(format!("t={t}").as_bytes())
                .next()
                .map(|(_, v)| v.into_owned())
                .unwrap_or_default()
        })
    })
}

/// When tokens are configured, a request without one of them gets 401 and no detail.
async fn authenticate(State(s): State<ApiState>, req: Request, next: Next) -> Response {
    let config = s.config();
    if config.api.tokens.is_empty() {
        return next.run(req).await;
    }
    let ok = presented(req.headers()).is_some_and(|t| {
        // Compare with every token, whichever matches, so the time does not say which.
        config.api.tokens.iter().fold(false, |acc, k| same(k.as_bytes(), t.as_bytes()) | acc)
    });
    if ok {
        next.run(req).await
    } else {
        ApiError::new(StatusCode::UNAUTHORIZED, "a valid bearer token is required", None).into_response()
    }
}

/// One log line and one metric per request: route (the pattern, never the query string, which
/// could hold a secret), status and latency.
async fn observe(req: Request, next: Next) -> Response {
    let route =
        req.extensions().get::<MatchedPath>().map(|p| p.as_str().to_string()).unwrap_or_else(|| "unmatched".into());
    let method = req.method().clone();
    let t0 = Instant::now();
    let resp = next.run(req).await;
    let took = t0.elapsed();
    let status = resp.status().as_u16();
    tracing::info!(%method, route = %route, status, latency_ms = u64::try_from(took.as_millis()).unwrap_or(u64::MAX), "http request");
    metrics::counter!("costledger_http_requests_total", "route" => route.clone(), "status" => status.to_string())
        .increment(1);
    metrics::histogram!("costledger_http_request_duration_seconds", "route" => route).record(took.as_secs_f64());
    resp
}

/// The API and the page. `/healthz`, `/readyz` and `/metrics` are the caller's (never behind a
/// token).
pub fn router(state: ApiState) -> Router {
    let api = Router::new()
        .route("/api/v1/costs", get(costs))
        .route("/api/v1/explain", get(explain))
        .route("/api/v1/commitments", get(commitments))
        .route("/api/v1/budgets", get(budgets))
        .route("/api/v1/unit_costs", get(unit_costs))
        .route("/api/v1/dimensions", get(dimensions))
        .route("/api/v1/dimensions/{name}", get(dimension_values))
        .route("/api/v1/sources", get(sources))
        .route("/api/v1/loads", get(loads))
        .route("/api/v1/periods", get(periods))
        .route("/api/v1/findings", get(findings))
        .route("/api/v1/allocation", get(allocation))
        .route("/api/v1/openapi.json", get(openapi_json))
        .route("/api/v1/{*rest}", get(not_found))
        .route_layer(axum::middleware::from_fn_with_state(state.clone(), authenticate))
        .with_state(state);
    // The page is static (no data: it asks the API, with the token the user gives it once).
    api.merge(web::router()).layer(axum::middleware::from_fn(observe))
}

/// The JSON of a value the way the API sends it (tests and the MCP server compare with it).
pub fn to_json<T: Serialize>(v: &T) -> serde_json::Value {
    serde_json::to_value(v).unwrap_or(serde_json::Value::Null)
}
