//! Credentials (the standard `~/.oci/config` file or explicit values) and a thin signed HTTP
//! client with OCI's retry rules: 429 and 5xx (except 501) and connection errors back off
//! exponentially (honouring `Retry-After`), up to a bounded number of attempts.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use costledger_core::ConnectorError;
use reqwest::{Method, StatusCode, Url};

use crate::signer::{RequestParts, Signer, http_date};

/// API credentials: a user's API signing key.
#[derive(Clone, PartialEq, Eq)]
pub struct OciAuth {
    pub tenancy: String,
    pub user: String,
    pub fingerprint: String,
    pub key_file: PathBuf,
    pub region: Option<String>,
}

impl std::fmt::Debug for OciAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OciAuth")
            .field("tenancy", &self.tenancy)
            .field("user", &self.user)
            .field("fingerprint", &self.fingerprint)
            .field("key_file", &self.key_file)
            .field("region", &self.region)
            .finish()
    }
}

fn expand_home(p: &str) -> PathBuf {
    match (p.strip_prefix("~/"), std::env::var_os("HOME")) {
        (Some(rest), Some(home)) => Path::new(&home).join(rest),
        _ => PathBuf::from(p),
    }
}

/// Read a profile of an OCI config file (INI: `[PROFILE]` sections of `key=value`; a profile
/// inherits the keys of `[DEFAULT]`).
pub fn read_config_file(path: &Path, profile: &str) -> Result<OciAuth, ConnectorError> {
    let loc = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| ConnectorError::io(&loc, e))?;
    let mut sections: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    let mut current = String::new();
    for line in text.lines() {
        let l = line.trim();
        if l.is_empty() || l.starts_with('#') || l.starts_with(';') {
            continue;
        }
        if let Some(name) = l.strip_prefix('[').and_then(|x| x.strip_suffix(']')) {
            current = name.trim().to_string();
            sections.entry(current.clone()).or_default();
        } else if let Some((k, v)) = l.split_once('=') {
            sections.entry(current.clone()).or_default().insert(k.trim().to_string(), v.trim().to_string());
        }
    }
    if !sections.contains_key(profile) {
        return Err(ConnectorError::input(
            &loc,
            format!("profile [{profile}] is not in the OCI config file"),
            format!("profiles found: {}", sections.keys().cloned().collect::<Vec<_>>().join(", ")),
        ));
    }
    let mut merged = sections.get("DEFAULT").cloned().unwrap_or_default();
    merged.extend(sections.get(profile).cloned().unwrap_or_default());
    let get = |k: &str| -> Result<String, ConnectorError> {
        merged.get(k).cloned().filter(|v| !v.is_empty()).ok_or_else(|| {
            ConnectorError::input(
                &loc,
                format!("profile [{profile}] has no '{k}'"),
                "see https://docs.oracle.com/iaas/Content/API/Concepts/sdkconfig.htm",
            )
        })
    };
    Ok(OciAuth {
        tenancy: get("tenancy")?,
        user: get("user")?,
        fingerprint: get("fingerprint")?,
        key_file: expand_home(&get("key_file")?),
        region: merged.get("region").cloned(),
    })
}

impl OciAuth {
    pub fn signer(&self) -> Result<Signer, ConnectorError> {
        let loc = self.key_file.display().to_string();
        let pem = std::fs::read_to_string(&self.key_file).map_err(|e| ConnectorError::io(&loc, e))?;
        Signer::new(&self.tenancy, &self.user, &self.fingerprint, &pem)
            .map_err(|e| ConnectorError::Auth(format!("{loc}: {e}")))
    }
}

/// How failed calls are retried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts in all (1 = no retry).
    pub attempts: u32,
    pub base_delay: Duration,
    pub max_delay: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy { attempts: 6, base_delay: Duration::from_secs(1), max_delay: Duration::from_secs(60) }
    }
}

impl RetryPolicy {
    /// The wait before attempt `n + 1` (n ≥ 1): the server's Retry-After if it gave one, else
    /// base × 2^(n−1) capped, plus up to 25% jitter.
    pub fn delay(&self, n: u32, retry_after: Option<Duration>) -> Duration {
        if let Some(d) = retry_after {
            return d.min(self.max_delay);
        }
        let exp = self.base_delay.saturating_mul(1u32 << (n - 1).min(16)).min(self.max_delay);
        let nanos =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.subsec_nanos()).unwrap_or(0);
        exp + exp / 4 * (nanos % 1000) / 1000
    }
}

pub struct OciClient {
    http: reqwest::Client,
    signer: Signer,
    base: Url,
    retry: RetryPolicy,
    calls: AtomicU64,
}

fn retry_after(h: &reqwest::header::HeaderMap) -> Option<Duration> {
    h.get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(Duration::from_secs)
}

impl OciClient {
    /// `base`: the service endpoint (`https://usageapi.us-ashburn-1.oci.oraclecloud.com`).
    pub fn new(base: &str, signer: Signer, retry: RetryPolicy) -> Result<OciClient, ConnectorError> {
        let base = Url::parse(base).map_err(|e| {
            ConnectorError::input(base, format!("not a valid endpoint URL: {e}"), "write it as https://HOST[:PORT]")
        })?;
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(20))
            .timeout(Duration::from_secs(300))
            .build()
            .map_err(|e| ConnectorError::Transient(format!("cannot build the HTTP client: {e}")))?;
        Ok(OciClient { http, signer, base, retry, calls: AtomicU64::new(0) })
    }

    /// API calls made (each attempt counts).
    pub fn calls(&self) -> u64 {
        self.calls.load(Ordering::Relaxed)
    }

    fn host(&self) -> String {
        let h = self.base.host_str().unwrap_or_default();
        match self.base.port() {
            Some(p) => format!("{h}:{p}"),
            None => h.to_string(),
        }
    }

    /// Send a signed request, retrying per the policy. Returns a 2xx response.
    pub async fn send(
        &self,
        method: Method,
        path_and_query: &str,
        body: Option<&[u8]>,
    ) -> Result<reqwest::Response, ConnectorError> {
        let url = self.base.join(path_and_query).map_err(|e| {
            ConnectorError::input(path_and_query, format!("bad request path: {e}"), "report this as a bug")
        })?;
        let mut attempt = 0u32;
        loop {
            attempt += 1;
            let result = self.send_once(&method, &url, body).await;
            match result {
                Ok(r) => return Ok(r),
                Err(e) if e.is_retriable() && attempt < self.retry.attempts => {
                    let wait = self.retry.delay(attempt, e.retry_after());
                    tracing::warn!(error = %e, attempt, wait_ms = wait.as_millis() as u64, url = %url.path(), "OCI call failed; retrying");
                    tokio::time::sleep(wait).await;
                }
                Err(e) => return Err(e),
            }
        }
    }

    async fn send_once(
        &self,
        method: &Method,
        url: &Url,
        body: Option<&[u8]>,
    ) -> Result<reqwest::Response, ConnectorError> {
        let path_and_query = match url.query() {
            Some(q) => format!("{}?{q}", url.path()),
            None => url.path().to_string(),
        };
        let host = self.host();
        let date = http_date(chrono::Utc::now());
        let parts = RequestParts {
            method: method.as_str(),
            path_and_query: &path_and_query,
            host: &host,
            date: &date,
            body: body.map(|b| (b, "application/json")),
        };
        let signed = self.signer.sign(&parts);
        let mut req = self
            .http
            .request(method.clone(), url.clone())
            .header("date", signed.date)
            .header("authorization", signed.authorization)
            .header("accept", "application/json");
        if let (Some(b), Some((len, ct, sha))) = (body, signed.body) {
            req = req
                .header("content-length", len)
                .header("content-type", ct)
                .header("x-content-sha256", sha)
                .body(b.to_vec());
        }
        self.calls.fetch_add(1, Ordering::Relaxed);
        // Connection failures and timeouts are worth retrying.
        let resp = req.send().await.map_err(|e| ConnectorError::Transient(format!("{}: {e}", url.as_str())))?;
        let status = resp.status();
        if status.is_success() {
            return Ok(resp);
        }
        let after = retry_after(resp.headers());
        let request_id = resp.headers().get("opc-request-id").and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
        let text = resp.text().await.unwrap_or_default();
        let (code, message) = match serde_json::from_str::<serde_json::Value>(&text) {
            Ok(v) => (
                v.get("code").and_then(|c| c.as_str()).unwrap_or("").to_string(),
                v.get("message").and_then(|c| c.as_str()).unwrap_or("").to_string(),
            ),
            Err(_) => (String::new(), costledger_core::text::clip(&text, 300)),
        };
        let what = format!(
            "{} {} answered {} {code}: {message} (opc-request-id {request_id})",
            method,
            url.path(),
            status.as_u16()
        );
        Err(match status {
            StatusCode::TOO_MANY_REQUESTS => ConnectorError::RateLimited { retry_after: after },
            StatusCode::UNAUTHORIZED => ConnectorError::Auth(format!(
                "{what}. Check tenancy, user, fingerprint and key_file (the key must be the one whose fingerprint \
                 is uploaded to the user) and that this machine's clock is within 5 minutes of the real time"
            )),
            StatusCode::NOT_FOUND | StatusCode::FORBIDDEN => ConnectorError::Auth(format!(
                "{what}. Check the tenancy, namespace and bucket names and that an IAM policy lets this user read them"
            )),
            s if s.is_server_error() && s != StatusCode::NOT_IMPLEMENTED => ConnectorError::Transient(what),
            _ => ConnectorError::input(url.as_str(), what, "check the source's configuration"),
        })
    }
}
