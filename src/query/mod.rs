//! The cost query model: what `costledger query` (and, after it, the HTTP API and the MCP
//! server) can ask of the ledger. A [`Query`] names metrics, dimensions to group by, a time
//! grain, filters, a range, an optional target currency and a top N; [`aggregate`] answers it
//! exactly from a stream of charges. Parsing and aggregation are pure: the IO (reading charges,
//! FX rates) is in `app::query`.
//!
//! Each closed set is one table: [`DIMENSIONS`] (name, FOCUS column, meaning) and [`METRICS`].
//! `docs/query.md` is written from the same words.

pub mod aggregate;
pub mod render;
pub mod rollup;

use std::fmt;

use chrono::{Datelike, Duration, NaiveDate, TimeZone, Utc};
use costledger_core::BillingPeriod;

use crate::allocation::Glob;

/// A query the user cannot ask as written: the message names the argument and what is allowed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QueryError {
    #[error("unknown dimension '{0}': use one of {list} or tag:KEY", list = dimension_names().join(", "))]
    UnknownDimension(String),
    #[error("unknown metric '{0}': use one of {list}", list = METRICS.iter().map(|m| m.name).collect::<Vec<_>>().join(", "))]
    UnknownMetric(String),
    #[error("unknown grain '{0}': use none, day, week, month or billing_period")]
    UnknownGrain(String),
    #[error("bad date '{0}' for {1}: use YYYY-MM-DD, YYYY-MM or an ISO week such as 2026-W45")]
    BadDate(String, &'static str),
    #[error("--from {from} is after --to {to}: the range would be empty")]
    EmptyRange { from: String, to: String },
    #[error(
        "bad filter '{0}': use DIMENSION=VALUE[,VALUE…] or DIMENSION!=VALUE (values are globs; (none) means missing)"
    )]
    BadFilter(String),
    #[error("bad pattern in filter '{filter}': {message}")]
    BadPattern { filter: String, message: String },
    #[error("bad currency '{0}': use a three-letter ISO 4217 code such as USD or EUR")]
    BadCurrency(String),
    #[error("the tag key of '{0}' is empty: write tag:KEY, e.g. tag:team")]
    EmptyTag(String),
    #[error("--top must be at least 1")]
    ZeroTop,
    #[error("{0} is named twice in --group-by")]
    RepeatedDimension(String),
}

/// A dimension the charges can be grouped or filtered by.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Dimension {
    Provider,
    BillingAccount,
    SubAccount,
    Service,
    ServiceCategory,
    Region,
    ChargeCategory,
    ChargeClass,
    Sku,
    Resource,
    PricingUnit,
    Source,
    /// The owner the allocator gives the line (as the finance CSV's `x_owner`).
    Owner,
    /// How the owner was decided, or why there is none (as the finance CSV's
    /// `x_allocation_reason`).
    Allocation,
    /// The commitment (reservation, savings plan, CUD) a line is covered by or belongs to.
    Commitment,
    /// Used or Unused (the commitment's unused share is its own lines).
    CommitmentStatus,
    /// Spend or Usage.
    CommitmentCategory,
    /// The provider's kind of commitment (Reserved Instance, Savings Plan …).
    CommitmentType,
    /// Standard (on demand), Committed, Dynamic (spot …) or Other.
    PricingCategory,
    /// A tag, by its normalised key (after the configured aliases, lower-cased).
    Tag(String),
}

/// One row of the dimension table.
pub struct DimensionInfo {
    pub dimension: Dimension,
    pub name: &'static str,
    /// The FOCUS column (or costledger's own) the values come from.
    pub column: &'static str,
    pub meaning: &'static str,
}

/// Every dimension but `tag:KEY`, in the order help and docs list them.
pub const DIMENSIONS: &[DimensionInfo] = &[
    DimensionInfo {
        dimension: Dimension::Provider,
        name: "provider",
        column: "ProviderName",
        meaning: "the cloud that provided the service (AWS, Microsoft, Google Cloud, Oracle …)",
    },
    DimensionInfo {
        dimension: Dimension::BillingAccount,
        name: "billing_account",
        column: "BillingAccountId",
        meaning: "the account the invoice is issued to (AWS payer, Azure billing account, GCP billing account, OCI tenancy)",
    },
    DimensionInfo {
        dimension: Dimension::SubAccount,
        name: "sub_account",
        column: "SubAccountId",
        meaning: "the account the resources live in (AWS linked account, Azure subscription, GCP project, OCI compartment)",
    },
    DimensionInfo {
        dimension: Dimension::Service,
        name: "service",
        column: "ServiceName",
        meaning: "the provider's service (Amazon EC2, Virtual Machines, Compute Engine …)",
    },
    DimensionInfo {
        dimension: Dimension::ServiceCategory,
        name: "service_category",
        column: "ServiceCategory",
        meaning: "the FOCUS service category (Compute, Storage, Databases, Networking …)",
    },
    DimensionInfo {
        dimension: Dimension::Region,
        name: "region",
        column: "RegionId",
        meaning: "the provider's region id (us-east-1, westeurope …)",
    },
    DimensionInfo {
        dimension: Dimension::ChargeCategory,
        name: "charge_category",
        column: "ChargeCategory",
        meaning: "Usage, Purchase, Tax, Credit or Adjustment",
    },
    DimensionInfo {
        dimension: Dimension::ChargeClass,
        name: "charge_class",
        column: "ChargeClass",
        meaning: "Correction for a line correcting an earlier period, else none",
    },
    DimensionInfo {
        dimension: Dimension::Sku,
        name: "sku",
        column: "SkuId",
        meaning: "the provider's SKU or product code",
    },
    DimensionInfo {
        dimension: Dimension::Resource,
        name: "resource",
        column: "ResourceId",
        meaning: "the resource id (instance, bucket, disk …); many values: combine with --top",
    },
    DimensionInfo {
        dimension: Dimension::PricingUnit,
        name: "pricing_unit",
        column: "PricingUnit",
        meaning: "the unit PricingQuantity is counted in (Hours, GB-Mo, Requests …)",
    },
    DimensionInfo {
        dimension: Dimension::Source,
        name: "source",
        column: "x_source",
        meaning: "the costledger source (config name) the line was loaded from",
    },
    DimensionInfo {
        dimension: Dimension::Owner,
        name: "owner",
        column: "x_owner",
        meaning: "the owner the allocation rules give the charge (tag, rule or first-seen account), `shared` for a \
                  shared rule's charges, missing when unallocated — as the finance CSV says",
    },
    DimensionInfo {
        dimension: Dimension::Allocation,
        name: "allocation",
        column: "x_allocation_reason",
        meaning: "how the owner was decided (tag:team, rule:NAME, shared:…) or why there is none \
                  (untagged, untaggable_charge …)",
    },
    DimensionInfo {
        dimension: Dimension::Commitment,
        name: "commitment",
        column: "CommitmentDiscountId",
        meaning: "the commitment (reservation, savings plan, committed use discount) that covers the charge or that \
                  the charge buys; missing for on-demand charges",
    },
    DimensionInfo {
        dimension: Dimension::CommitmentStatus,
        name: "commitment_status",
        column: "CommitmentDiscountStatus",
        meaning: "Used (usage the commitment covered) or Unused (the commitment's unused share)",
    },
    DimensionInfo {
        dimension: Dimension::CommitmentCategory,
        name: "commitment_category",
        column: "CommitmentDiscountCategory",
        meaning: "Spend (a commitment to spend an amount) or Usage (a commitment to use a quantity)",
    },
    DimensionInfo {
        dimension: Dimension::CommitmentType,
        name: "commitment_type",
        column: "CommitmentDiscountType",
        meaning: "the provider's kind of commitment (Reserved Instance, Compute Savings Plan, Reservation …)",
    },
    DimensionInfo {
        dimension: Dimension::PricingCategory,
        name: "pricing_category",
        column: "PricingCategory",
        meaning: "Standard (on demand), Committed (priced by a commitment), Dynamic (spot …) or Other",
    },
];

impl Dimension {
    /// Whether the dimension needs the allocator (owner, allocation).
    pub fn needs_allocation(&self) -> bool {
        matches!(self, Dimension::Owner | Dimension::Allocation)
    }

    /// Whether the dimension's values are in columns a lean charge read leaves out (the
    /// commitment id and the FOCUS columns).
    pub fn needs_full_rows(&self) -> bool {
        matches!(
            self,
            Dimension::Commitment
                | Dimension::CommitmentStatus
                | Dimension::CommitmentCategory
                | Dimension::CommitmentType
                | Dimension::PricingCategory
        )
    }
}

impl Query {
    /// Whether any grouped or filtered dimension needs the allocator.
    pub fn needs_allocation(&self) -> bool {
        self.group_by.iter().chain(self.filters.iter().map(|f| &f.dimension)).any(Dimension::needs_allocation)
    }

    /// Whether any grouped or filtered dimension needs full charge rows.
    pub fn needs_full_rows(&self) -> bool {
        self.group_by.iter().chain(self.filters.iter().map(|f| &f.dimension)).any(Dimension::needs_full_rows)
    }
}

/// The names `--group-by` and `--where` accept (besides `tag:KEY`).
pub fn dimension_names() -> Vec<&'static str> {
    DIMENSIONS.iter().map(|d| d.name).collect()
}

impl Dimension {
    /// Parse a dimension name; `tag:KEY` keys are normalised with `normalise_tag`.
    pub fn parse(s: &str, normalise_tag: &dyn Fn(&str) -> String) -> Result<Dimension, QueryError> {
        let t = s.trim();
        if let Some(key) = t.strip_prefix("tag:") {
            let key = normalise_tag(key);
            if key.is_empty() {
                return Err(QueryError::EmptyTag(s.to_string()));
            }
            return Ok(Dimension::Tag(key));
        }
        let lc = t.to_ascii_lowercase().replace('-', "_");
        DIMENSIONS
            .iter()
            .find(|d| d.name == lc || d.column.eq_ignore_ascii_case(t))
            .map(|d| d.dimension.clone())
            .ok_or_else(|| QueryError::UnknownDimension(s.to_string()))
    }

    pub fn name(&self) -> String {
        match self {
            Dimension::Tag(k) => format!("tag:{k}"),
            other => DIMENSIONS.iter().find(|d| d.dimension == *other).map(|d| d.name).unwrap_or("?").to_string(),
        }
    }
}

impl fmt::Display for Dimension {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name())
    }
}

/// What is summed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Metric {
    BilledCost,
    EffectiveCost,
    ListCost,
    ContractedCost,
    PricingQuantity,
    ConsumedQuantity,
    /// The number of charge lines.
    Lines,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetricKind {
    /// An amount in the line's billing currency (converted by `--currency`).
    Money,
    /// A quantity in the line's unit (never converted; group by pricing_unit to keep units apart).
    Quantity,
    Count,
}

pub struct MetricInfo {
    pub metric: Metric,
    /// The FOCUS column name (costledger's own for the line count).
    pub name: &'static str,
    pub kind: MetricKind,
    pub meaning: &'static str,
    /// The ledger column summed (`None`: the line count).
    pub column: Option<&'static str>,
}

pub const METRICS: &[MetricInfo] = &[
    MetricInfo {
        metric: Metric::BilledCost,
        name: "BilledCost",
        kind: MetricKind::Money,
        meaning: "what the invoice charges: the cash view (default)",
        column: Some("billed_cost"),
    },
    MetricInfo {
        metric: Metric::EffectiveCost,
        name: "EffectiveCost",
        kind: MetricKind::Money,
        meaning: "cost after discounts with commitment purchases spread over their use: the amortised view",
        column: Some("effective_cost"),
    },
    MetricInfo {
        metric: Metric::ListCost,
        name: "ListCost",
        kind: MetricKind::Money,
        meaning: "the cost at public list prices, before any discount",
        column: Some("list_cost"),
    },
    MetricInfo {
        metric: Metric::ContractedCost,
        name: "ContractedCost",
        kind: MetricKind::Money,
        meaning: "the cost at negotiated prices, before commitment discounts",
        column: Some("contracted_cost"),
    },
    MetricInfo {
        metric: Metric::PricingQuantity,
        name: "PricingQuantity",
        kind: MetricKind::Quantity,
        meaning: "the quantity charged, in PricingUnit",
        column: Some("pricing_quantity"),
    },
    MetricInfo {
        metric: Metric::ConsumedQuantity,
        name: "ConsumedQuantity",
        kind: MetricKind::Quantity,
        meaning: "the quantity used, in ConsumedUnit",
        column: Some("consumed_quantity"),
    },
    MetricInfo {
        metric: Metric::Lines,
        name: "lines",
        kind: MetricKind::Count,
        meaning: "the number of charge lines",
        column: None,
    },
];

impl Metric {
    pub fn parse(s: &str) -> Result<Metric, QueryError> {
        let norm = |x: &str| x.replace(['_', '-'], "").to_ascii_lowercase();
        let want = norm(s.trim());
        METRICS
            .iter()
            .find(|m| norm(m.name) == want || (m.metric == Metric::Lines && want == "count"))
            .map(|m| m.metric)
            .ok_or_else(|| QueryError::UnknownMetric(s.to_string()))
    }

    fn info(self) -> &'static MetricInfo {
        METRICS.iter().find(|m| m.metric == self).unwrap_or(&METRICS[0])
    }

    pub fn name(self) -> &'static str {
        self.info().name
    }

    pub fn kind(self) -> MetricKind {
        self.info().kind
    }

    /// The ledger column summed for this metric (`None`: the line count).
    pub fn column(self) -> Option<&'static str> {
        self.info().column
    }
}

/// The time bucket rows are split by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Grain {
    /// One bucket for the whole range.
    #[default]
    None,
    /// The day of ChargePeriodStart in the configured time zone (`2026-11-03`).
    Day,
    /// The ISO week of that day (`2026-W45`).
    Week,
    /// The calendar month of that day (`2026-11`).
    Month,
    /// The billing period (month of BillingPeriodStart, `2026-11`).
    BillingPeriod,
}

impl Grain {
    pub fn parse(s: &str) -> Result<Grain, QueryError> {
        match s.trim().to_ascii_lowercase().replace('-', "_").as_str() {
            "none" | "" => Ok(Grain::None),
            "day" | "daily" => Ok(Grain::Day),
            "week" | "weekly" | "iso_week" => Ok(Grain::Week),
            "month" | "monthly" => Ok(Grain::Month),
            "billing_period" | "period" => Ok(Grain::BillingPeriod),
            _ => Err(QueryError::UnknownGrain(s.to_string())),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Grain::None => "none",
            Grain::Day => "day",
            Grain::Week => "week",
            Grain::Month => "month",
            Grain::BillingPeriod => "billing_period",
        }
    }

    /// The bucket label of a line charged on local day `day` in billing period `period`.
    pub fn bucket(self, day: NaiveDate, period: BillingPeriod) -> Option<String> {
        match self {
            Grain::None => None,
            Grain::Day => Some(day.format("%Y-%m-%d").to_string()),
            Grain::Week => {
                let w = day.iso_week();
                Some(format!("{}-W{:02}", w.year(), w.week()))
            }
            Grain::Month => Some(format!("{:04}-{:02}", day.year(), day.month())),
            Grain::BillingPeriod => Some(period.to_string()),
        }
    }
}

/// Which date the range applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RangeBy {
    /// The local day of ChargePeriodStart (default).
    #[default]
    ChargePeriod,
    /// The billing period (month of BillingPeriodStart).
    BillingPeriod,
}

/// `[from, to)` in local days; either end open.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Range {
    pub by: RangeBy,
    pub from: Option<NaiveDate>,
    /// Exclusive.
    pub to: Option<NaiveDate>,
}

/// A date the way `--from` and `--to` take it: a day, a month or an ISO week, as the span of
/// days it covers (`[start, end)`).
pub fn parse_span(s: &str, arg: &'static str) -> Result<(NaiveDate, NaiveDate), QueryError> {
    let t = s.trim();
    let bad = || QueryError::BadDate(s.to_string(), arg);
    if let Ok(d) = NaiveDate::parse_from_str(t, "%Y-%m-%d") {
        return Ok((d, d + Duration::days(1)));
    }
    if let Some((y, w)) = t.split_once("-W").or_else(|| t.split_once("-w")) {
        let y: i32 = y.parse().map_err(|_| bad())?;
        let w: u32 = w.parse().map_err(|_| bad())?;
        let d = NaiveDate::from_isoywd_opt(y, w, chrono::Weekday::Mon).ok_or_else(bad)?;
        return Ok((d, d + Duration::days(7)));
    }
    if let Some((y, m)) = t.split_once('-')
        && y.len() == 4
        && m.len() == 2
    {
        let p = BillingPeriod::new(y.parse().map_err(|_| bad())?, m.parse().map_err(|_| bad())?).ok_or_else(bad)?;
        return Ok((p.start().date_naive(), p.end().date_naive()));
    }
    Err(bad())
}

impl Range {
    /// From the `--from`/`--to` texts: `to` is inclusive of the unit it names (`--to 2026-11`
    /// takes all of November).
    pub fn parse(by: RangeBy, from: Option<&str>, to: Option<&str>) -> Result<Range, QueryError> {
        let f = from.map(|s| parse_span(s, "--from")).transpose()?;
        let t = to.map(|s| parse_span(s, "--to")).transpose()?;
        if let (Some((a, _)), Some((_, b))) = (f, t)
            && a >= b
        {
            return Err(QueryError::EmptyRange {
                from: from.unwrap_or_default().to_string(),
                to: to.unwrap_or_default().to_string(),
            });
        }
        let mut r = Range { by, from: f.map(|x| x.0), to: t.map(|x| x.1) };
        if by == RangeBy::BillingPeriod {
            // Billing periods are whole months: widen to the months the days fall in.
            r.from = r.from.map(|d| d.with_day(1).unwrap_or(d));
            r.to = r.to.map(|d| {
                let start = d - Duration::days(1);
                let p = BillingPeriod::new(start.year(), start.month());
                p.map(|p| p.end().date_naive()).unwrap_or(d)
            });
        }
        Ok(r)
    }

    /// Whether a line (local charge day, billing period) is inside.
    pub fn contains(&self, day: NaiveDate, period: BillingPeriod) -> bool {
        self.contains_date(match self.by {
            RangeBy::ChargePeriod => day,
            RangeBy::BillingPeriod => period.start().date_naive(),
        })
    }

    /// Whether the date the range applies to (the local charge day, or the first day of the
    /// billing period) is inside.
    pub fn contains_date(&self, d: NaiveDate) -> bool {
        self.from.is_none_or(|f| d >= f) && self.to.is_none_or(|t| d < t)
    }

    /// The UTC instants of ChargePeriodStart that can hold matching lines (a superset when the
    /// range is by billing period: corrections may be charged outside their period).
    pub fn charge_bounds(&self, tz: chrono_tz::Tz) -> (Option<chrono::DateTime<Utc>>, Option<chrono::DateTime<Utc>>) {
        if self.by == RangeBy::BillingPeriod {
            return (None, None);
        }
        let at = |d: NaiveDate| {
            tz.from_local_datetime(&d.and_hms_opt(0, 0, 0).unwrap_or_default())
                .earliest()
                .map(|t| t.with_timezone(&Utc))
        };
        (self.from.and_then(at), self.to.and_then(at))
    }
}

/// One value pattern of a filter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pattern {
    /// `(none)`: the dimension has no value (a missing tag, a null column).
    Missing,
    /// A case-insensitive glob (`*`, `?`, `[a-z]`); a plain value is an exact match.
    Glob(Glob),
}

impl Pattern {
    pub fn matches(&self, v: Option<&str>) -> bool {
        match (self, v) {
            (Pattern::Missing, None) => true,
            (Pattern::Missing, Some(v)) => v.is_empty(),
            (Pattern::Glob(_), None) => false,
            (Pattern::Glob(g), Some(v)) => g.matches(v),
        }
    }
}

/// `dimension=v1,v2` (any of) or `dimension!=v` (none of).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Filter {
    pub dimension: Dimension,
    pub negated: bool,
    pub any_of: Vec<Pattern>,
}

/// The text that shows a missing value in tables and that filters for one.
pub const MISSING: &str = "(none)";

impl Filter {
    pub fn parse(s: &str, normalise_tag: &dyn Fn(&str) -> String) -> Result<Filter, QueryError> {
        let (dim, negated, values) = match s.split_once("!=") {
            Some((d, v)) => (d, true, v),
            None => match s.split_once('=') {
                Some((d, v)) => (d, false, v),
                None => return Err(QueryError::BadFilter(s.to_string())),
            },
        };
        if dim.trim().is_empty() {
            return Err(QueryError::BadFilter(s.to_string()));
        }
        let dimension = Dimension::parse(dim, normalise_tag)?;
        let mut any_of = Vec::new();
        for v in values.split(',') {
            let v = v.trim();
            if v.is_empty() || v.eq_ignore_ascii_case(MISSING) {
                any_of.push(Pattern::Missing);
            } else {
                let g = Glob::new(v).map_err(|message| QueryError::BadPattern { filter: s.to_string(), message })?;
                any_of.push(Pattern::Glob(g));
            }
        }
        Ok(Filter { dimension, negated, any_of })
    }

    pub fn matches(&self, v: Option<&str>) -> bool {
        self.any_of.iter().any(|p| p.matches(v)) != self.negated
    }
}

/// A cost question.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Query {
    /// At least one; the first orders the rows and ranks `top`.
    pub metrics: Vec<Metric>,
    pub group_by: Vec<Dimension>,
    pub grain: Grain,
    /// All must match.
    pub filters: Vec<Filter>,
    pub range: Range,
    /// Convert money to this currency with the stored FX rates (per billing period month).
    pub currency: Option<String>,
    /// Keep the N largest groups (by the first metric, over the whole range) and sum the rest
    /// into one "others" row per bucket and currency.
    pub top: Option<usize>,
}

impl Default for Query {
    fn default() -> Self {
        Query {
            metrics: vec![Metric::BilledCost],
            group_by: Vec::new(),
            grain: Grain::None,
            filters: Vec::new(),
            range: Range::default(),
            currency: None,
            top: None,
        }
    }
}

/// The query's parts as text, the way every edge receives them (CLI flags, HTTP parameters,
/// MCP tool arguments): one parser for all.
#[derive(Debug, Clone, Default)]
pub struct QueryText {
    pub metrics: Vec<String>,
    pub group_by: Vec<String>,
    pub grain: Option<String>,
    pub filters: Vec<String>,
    pub from: Option<String>,
    pub to: Option<String>,
    pub range_by_billing_period: bool,
    pub currency: Option<String>,
    pub top: Option<usize>,
}

impl QueryText {
    /// Parse; `normalise_tag` maps a tag key to its normalised form (aliases, case).
    pub fn parse(&self, normalise_tag: &dyn Fn(&str) -> String) -> Result<Query, QueryError> {
        let split = |v: &[String]| -> Vec<String> {
            v.iter().flat_map(|s| s.split(',')).map(|s| s.trim().to_string()).filter(|s| !s.is_empty()).collect()
        };
        let mut metrics = Vec::new();
        for m in split(&self.metrics) {
            let m = Metric::parse(&m)?;
            if !metrics.contains(&m) {
                metrics.push(m);
            }
        }
        if metrics.is_empty() {
            metrics.push(Metric::BilledCost);
        }
        let mut group_by = Vec::new();
        for d in split(&self.group_by) {
            let d = Dimension::parse(&d, normalise_tag)?;
            if group_by.contains(&d) {
                return Err(QueryError::RepeatedDimension(d.name()));
            }
            group_by.push(d);
        }
        let grain = self.grain.as_deref().map(Grain::parse).transpose()?.unwrap_or_default();
        let filters = self.filters.iter().map(|f| Filter::parse(f, normalise_tag)).collect::<Result<Vec<_>, _>>()?;
        let by = if self.range_by_billing_period { RangeBy::BillingPeriod } else { RangeBy::ChargePeriod };
        let range = Range::parse(by, self.from.as_deref(), self.to.as_deref())?;
        let currency = match &self.currency {
            Some(c) => {
                let c = c.trim().to_ascii_uppercase();
                if c.len() != 3 || !c.bytes().all(|b| b.is_ascii_uppercase()) {
                    return Err(QueryError::BadCurrency(c));
                }
                Some(c)
            }
            None => None,
        };
        if self.top == Some(0) {
            return Err(QueryError::ZeroTop);
        }
        Ok(Query { metrics, group_by, grain, filters, range, currency, top: self.top })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lc(s: &str) -> String {
        s.trim().to_lowercase()
    }

    #[test]
    fn dimensions_parse_by_name_or_focus_column_and_tags_are_normalised() {
        assert_eq!(Dimension::parse("service", &lc), Ok(Dimension::Service));
        assert_eq!(Dimension::parse("ServiceName", &lc), Ok(Dimension::Service));
        assert_eq!(Dimension::parse("sub-account", &lc), Ok(Dimension::SubAccount));
        assert_eq!(Dimension::parse("tag:Team", &lc), Ok(Dimension::Tag("team".into())));
        assert_eq!(Dimension::parse("tag:", &lc), Err(QueryError::EmptyTag("tag:".into())));
        let e = Dimension::parse("colour", &lc).expect_err("an error").to_string();
        assert!(
            e.contains("unknown dimension 'colour'") && e.contains("billing_account") && e.contains("tag:KEY"),
            "{e}"
        );
    }

    #[test]
    fn every_dimension_and_metric_name_round_trips() {
        for d in DIMENSIONS {
            assert_eq!(Dimension::parse(d.name, &lc).as_ref(), Ok(&d.dimension));
            assert_eq!(d.dimension.name(), d.name);
        }
        for m in METRICS {
            assert_eq!(Metric::parse(m.name), Ok(m.metric));
        }
        assert_eq!(Metric::parse("effective_cost"), Ok(Metric::EffectiveCost));
    }

    #[test]
    fn to_is_inclusive_of_the_unit_it_names() {
        let r = Range::parse(RangeBy::ChargePeriod, Some("2026-09"), Some("2026-11")).expect("parses");
        assert_eq!(r.from, NaiveDate::from_ymd_opt(2026, 9, 1));
        assert_eq!(r.to, NaiveDate::from_ymd_opt(2026, 12, 1));
        let r = Range::parse(RangeBy::ChargePeriod, Some("2026-W45"), Some("2026-11-15")).expect("parses");
        assert_eq!(r.from, NaiveDate::from_ymd_opt(2026, 11, 2));
        assert_eq!(r.to, NaiveDate::from_ymd_opt(2026, 11, 16));
    }

    #[test]
    fn a_range_ending_before_it_starts_is_refused() {
        let e = Range::parse(RangeBy::ChargePeriod, Some("2026-11"), Some("2026-10")).expect_err("an error");
        assert_eq!(e.to_string(), "--from 2026-11 is after --to 2026-10: the range would be empty");
        let e = Range::parse(RangeBy::ChargePeriod, Some("2026-13"), None).expect_err("an error");
        assert!(e.to_string().starts_with("bad date '2026-13' for --from"), "{e}");
    }

    #[test]
    fn filters_take_lists_globs_negation_and_missing() {
        let f = Filter::parse("service=Amazon EC2,*S3*", &lc).expect("parses");
        assert!(f.matches(Some("amazon ec2")) && f.matches(Some("Amazon S3 Glacier")) && !f.matches(Some("RDS")));
        assert!(!f.matches(None));
        let f = Filter::parse("tag:Team=(none)", &lc).expect("parses");
        assert_eq!(f.dimension, Dimension::Tag("team".into()));
        assert!(f.matches(None) && !f.matches(Some("payments")));
        let f = Filter::parse("region!=us-*", &lc).expect("parses");
        assert!(f.matches(Some("eu-west-1")) && !f.matches(Some("us-east-1")) && f.matches(None));
        assert!(matches!(Filter::parse("service", &lc), Err(QueryError::BadFilter(_))));
        assert!(matches!(Filter::parse("service=[a", &lc), Err(QueryError::BadPattern { .. })));
    }

    #[test]
    fn query_text_parses_lists_and_refuses_bad_input() {
        let t = QueryText {
            metrics: vec!["EffectiveCost,lines".into()],
            group_by: vec!["service,tag:team".into()],
            grain: Some("month".into()),
            currency: Some("eur".into()),
            top: Some(10),
            ..Default::default()
        };
        let q = t.parse(&lc).expect("parses");
        assert_eq!(q.metrics, vec![Metric::EffectiveCost, Metric::Lines]);
        assert_eq!(q.group_by, vec![Dimension::Service, Dimension::Tag("team".into())]);
        assert_eq!((q.grain, q.currency.as_deref(), q.top), (Grain::Month, Some("EUR"), Some(10)));
        let bad = |t: QueryText| t.parse(&lc).expect_err("an error");
        assert_eq!(
            bad(QueryText { currency: Some("euro".into()), ..Default::default() }),
            QueryError::BadCurrency("EURO".into())
        );
        assert_eq!(bad(QueryText { top: Some(0), ..Default::default() }), QueryError::ZeroTop);
        assert_eq!(
            bad(QueryText { group_by: vec!["service,service".into()], ..Default::default() }),
            QueryError::RepeatedDimension("service".into())
        );
    }

    #[test]
    fn buckets_by_grain() {
        let d = NaiveDate::from_ymd_opt(2027, 1, 1).expect("parses");
        let p = BillingPeriod::new(2026, 12).expect("parses");
        assert_eq!(Grain::Day.bucket(d, p).as_deref(), Some("2027-01-01"));
        assert_eq!(Grain::Week.bucket(d, p).as_deref(), Some("2026-W53"));
        assert_eq!(Grain::Month.bucket(d, p).as_deref(), Some("2027-01"));
        assert_eq!(Grain::BillingPeriod.bucket(d, p).as_deref(), Some("2026-12"));
        assert_eq!(Grain::None.bucket(d, p), None);
    }
}
