//! The AWS sources' config: typed params (`deny_unknown_fields`), each validated without IO.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AwsFormat {
    /// Legacy Cost and Usage Report.
    Cur,
    /// CUR 2.0 (Data Exports).
    Cur2,
    /// AWS FOCUS 1.0/1.2 export (Data Exports).
    Focus,
}

/// Credentials: the standard AWS chain (environment, `~/.aws`, web identity, ECS, IMDS) unless
/// a profile or keys are given; `role_arn` is then assumed through STS. Secrets belong in
/// `${ENV}` references.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Credentials {
    pub profile: Option<String>,
    pub role_arn: Option<String>,
    pub external_id: Option<String>,
    pub access_key_id: Option<String>,
    pub secret_access_key: Option<String>,
    pub session_token: Option<String>,
}

impl Credentials {
    pub fn validate(&self, path: &str) -> Vec<(String, String)> {
        let mut out = Vec::new();
        if self.access_key_id.is_some() != self.secret_access_key.is_some() {
            out.push((format!("{path}.access_key_id"), "give access_key_id and secret_access_key together".into()));
        }
        if self.access_key_id.is_some() && self.profile.is_some() {
            out.push((format!("{path}.profile"), "give either a profile or keys, not both".into()));
        }
        if let Some(r) = &self.role_arn
            && !(r.starts_with("arn:aws") && r.contains(":role/"))
        {
            out.push((
                format!("{path}.role_arn"),
                format!("'{r}' is not an IAM role ARN (arn:aws:iam::123456789012:role/name)"),
            ));
        }
        if self.external_id.is_some() && self.role_arn.is_none() {
            out.push((format!("{path}.external_id"), "only makes sense with role_arn".into()));
        }
        out
    }
}

/// Where the SDK sends requests: an AWS region, or an S3-compatible endpoint.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct S3Params {
    pub bucket: Option<String>,
    #[serde(default)]
    pub prefix: String,
    pub region: Option<String>,
    /// A custom endpoint (S3-compatible storage, or a local test server).
    pub endpoint_url: Option<String>,
    /// Path-style addressing (`endpoint/bucket/key`); default: on with `endpoint_url`.
    pub force_path_style: Option<bool>,
}

/// `aws_cur` and `aws_data_exports`: files from a directory or from S3.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct FileParams {
    /// A synced copy of the bucket (or one file).
    pub path: Option<PathBuf>,
    #[serde(default)]
    pub paths: Vec<PathBuf>,
    pub s3: Option<S3Params>,
    #[serde(default)]
    pub credentials: Credentials,
    /// `aws_data_exports` only: `cur2` (default) or `focus`.
    pub format: Option<AwsFormat>,
}

/// Retries of throttled and failed calls, done by the SDK's standard retry strategy
/// (exponential backoff with jitter; `x-amz-retry-after` honoured).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetryParams {
    #[serde(default = "default_attempts")]
    pub attempts: u32,
    #[serde(default = "default_initial_ms")]
    pub initial_backoff_ms: u64,
    #[serde(default = "default_max_ms")]
    pub max_backoff_ms: u64,
}

fn default_attempts() -> u32 {
    5
}
fn default_initial_ms() -> u64 {
    1_000
}
fn default_max_ms() -> u64 {
    20_000
}

impl Default for RetryParams {
    fn default() -> Self {
        RetryParams {
            attempts: default_attempts(),
            initial_backoff_ms: default_initial_ms(),
            max_backoff_ms: default_max_ms(),
        }
    }
}

impl RetryParams {
    pub(crate) fn config(&self) -> aws_smithy_types::retry::RetryConfig {
        aws_smithy_types::retry::RetryConfig::standard()
            .with_max_attempts(self.attempts.max(1))
            .with_initial_backoff(Duration::from_millis(self.initial_backoff_ms))
            .with_max_backoff(Duration::from_millis(self.max_backoff_ms.max(self.initial_backoff_ms)))
    }
}

/// `aws_cost_explorer`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CostExplorerParams {
    /// Signing region of the Cost Explorer endpoint (us-east-1 for the aws partition).
    #[serde(default = "default_ce_region")]
    pub region: String,
    pub endpoint_url: Option<String>,
    #[serde(default)]
    pub credentials: Credentials,
    #[serde(default = "default_billed")]
    pub billed_metric: String,
    /// `AmortizedCost` (default), `NetAmortizedCost`, or `none` (EffectiveCost = BilledCost).
    #[serde(default = "default_effective")]
    pub effective_metric: String,
    pub tag_key: Option<String>,
    /// The payer account: BillingAccountId of every line (default: the linked account).
    pub billing_account_id: Option<String>,
    #[serde(default)]
    pub retry: RetryParams,
}

fn default_ce_region() -> String {
    "us-east-1".into()
}
fn default_billed() -> String {
    "UnblendedCost".into()
}
fn default_effective() -> String {
    "AmortizedCost".into()
}

/// `us-east-1`, `eu-central-1`, `us-gov-west-1`, `cn-north-1`, `ap-southeast-2`…
pub fn valid_region(r: &str) -> bool {
    let parts: Vec<&str> = r.split('-').collect();
    parts.len() >= 3
        && parts[0].len() == 2
        && parts[0].bytes().all(|b| b.is_ascii_lowercase())
        && parts[1..parts.len() - 1].iter().all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_lowercase()))
        && parts.last().is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
}

/// S3 bucket naming rules: 3–63 characters of a-z, 0-9, '.', '-', starting and ending with a
/// letter or digit.
pub fn valid_bucket(b: &str) -> bool {
    (3..=63).contains(&b.len())
        && b.bytes().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'.' || c == b'-')
        && b.bytes().next().is_some_and(|c| c.is_ascii_alphanumeric())
        && b.bytes().last().is_some_and(|c| c.is_ascii_alphanumeric())
}

impl FileParams {
    pub fn all_paths(&self) -> Vec<PathBuf> {
        self.path.iter().cloned().chain(self.paths.iter().cloned()).collect()
    }

    /// Problems that need no IO, as (key, message).
    pub fn validate(&self, data_exports: bool) -> Vec<(String, String)> {
        let mut out = Vec::new();
        match (&self.s3, self.all_paths().is_empty()) {
            (None, true) => out.push(("path".into(), "is required: a directory (or file), unless s3 is given".into())),
            (Some(_), false) => out.push(("s3".into(), "give either path(s) or s3, not both".into())),
            _ => {}
        }
        if let Some(s3) = &self.s3 {
            match &s3.bucket {
                None => out.push(("s3.bucket".into(), "is required".into())),
                Some(b) if !valid_bucket(b) => out.push((
                    "s3.bucket".into(),
                    format!("'{b}' is not a valid bucket name (3-63 characters: a-z, 0-9, '.', '-')"),
                )),
                _ => {}
            }
            if let Some(r) = &s3.region
                && !valid_region(r)
            {
                out.push(("s3.region".into(), format!("'{r}' is not an AWS region (like us-east-1)")));
            }
            if let Some(u) = &s3.endpoint_url
                && let Err(m) = costledger_core::text::valid_endpoint(u)
            {
                out.push(("s3.endpoint_url".into(), m));
            }
        }
        out.extend(self.credentials.validate("credentials"));
        match (data_exports, self.format) {
            (false, Some(_)) => out.push(("format".into(), "only applies to aws_data_exports".into())),
            (true, Some(AwsFormat::Cur)) => {
                out.push(("format".into(), "must be cur2 or focus (legacy CUR is the aws_cur type)".into()))
            }
            _ => {}
        }
        out
    }
}

impl CostExplorerParams {
    pub fn validate(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        if !valid_region(&self.region) {
            out.push(("region".into(), format!("'{}' is not an AWS region (like us-east-1)", self.region)));
        }
        if let Some(u) = &self.endpoint_url
            && let Err(m) = costledger_core::text::valid_endpoint(u)
        {
            out.push(("endpoint_url".into(), m));
        }
        const BILLED: [&str; 4] = ["UnblendedCost", "NetUnblendedCost", "BlendedCost", "AmortizedCost"];
        if !BILLED.contains(&self.billed_metric.as_str()) {
            out.push(("billed_metric".into(), format!("'{}' is not one of {}", self.billed_metric, BILLED.join(", "))));
        }
        const EFFECTIVE: [&str; 3] = ["AmortizedCost", "NetAmortizedCost", "none"];
        if !EFFECTIVE.contains(&self.effective_metric.as_str()) {
            out.push((
                "effective_metric".into(),
                format!("'{}' is not one of {}", self.effective_metric, EFFECTIVE.join(", ")),
            ));
        }
        if let Some(t) = &self.tag_key
            && (t.is_empty() || t.contains('$'))
        {
            out.push(("tag_key".into(), "must be a non-empty tag key without '$'".into()));
        }
        if self.retry.attempts == 0 {
            out.push(("retry.attempts".into(), "must be at least 1".into()));
        }
        out.extend(self.credentials.validate("credentials"));
        out
    }
}
