//! S3 as the remote side of an object root (`costledger_files::object`): listing and reading
//! objects through `aws-sdk-s3`, and the SDK's errors as connector errors. A local directory
//! (a synced copy of the delivery bucket) or file is the shared `ObjectRoot`'s own.

use std::sync::atomic::{AtomicU64, Ordering};

use async_trait::async_trait;
use aws_sdk_s3::Client;
use costledger_core::ConnectorError;
use costledger_files::object::{ObjectBytes, ObjectInfo, RemoteStore};

pub struct S3Store {
    pub client: Client,
    pub bucket: String,
    pub prefix: String,
    calls: AtomicU64,
}

impl S3Store {
    pub fn new(client: Client, bucket: String, prefix: String) -> Self {
        S3Store { client, bucket, prefix, calls: AtomicU64::new(0) }
    }

    pub fn calls(&self) -> u64 {
        self.calls.load(Ordering::Relaxed)
    }

    fn call(&self) {
        self.calls.fetch_add(1, Ordering::Relaxed);
    }

    pub fn url(&self, key: &str) -> String {
        format!("s3://{}/{key}", self.bucket)
    }
}

/// Turn an SDK error into a connector error: throttling and 5xx are retriable, access and
/// missing buckets are not (with what to do).
pub fn s3_error<E>(what: &str, e: aws_sdk_s3::error::SdkError<E>) -> ConnectorError
where
    E: aws_sdk_s3::error::ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    use aws_sdk_s3::error::{ProvideErrorMetadata as _, SdkError};
    let status = e.raw_response().map(|r| r.status().as_u16());
    let code = e.code().map(str::to_string);
    let msg = e.message().map(str::to_string);
    let detail = match (&code, &msg) {
        (Some(c), Some(m)) => format!("{c}: {m}"),
        (Some(c), None) => c.clone(),
        _ => format!("{}", aws_sdk_s3::error::DisplayErrorContext(&e)),
    };
    match (&e, code.as_deref(), status) {
        (_, Some("SlowDown" | "ThrottlingException" | "RequestLimitExceeded"), _) | (_, _, Some(429)) => {
            ConnectorError::RateLimited { retry_after: None }
        }
        (_, Some("AccessDenied" | "InvalidAccessKeyId" | "SignatureDoesNotMatch" | "ExpiredToken"), _)
        | (_, _, Some(401 | 403)) => ConnectorError::Auth(format!(
            "{what}: {detail}; check the source's credentials (profile, role_arn or keys) and the bucket policy"
        )),
        (_, Some("NoSuchBucket"), _) => ConnectorError::input(
            what,
            detail,
            "check s3.bucket (and s3.region / s3.endpoint_url) in the source's config",
        ),
        (SdkError::DispatchFailure(_) | SdkError::TimeoutError(_) | SdkError::ResponseError(_), _, _) => {
            ConnectorError::Transient(format!("{what}: {detail}"))
        }
        (_, _, Some(s)) if s >= 500 => ConnectorError::Transient(format!("{what}: {detail}")),
        _ => ConnectorError::input(what, detail, "check the source's s3 settings"),
    }
}

#[async_trait]
impl RemoteStore for S3Store {
    async fn list(&self) -> Result<Vec<ObjectInfo>, ConnectorError> {
        let mut out = Vec::new();
        let mut token: Option<String> = None;
        loop {
            self.call();
            let r = self
                .client
                .list_objects_v2()
                .bucket(&self.bucket)
                .prefix(&self.prefix)
                .set_continuation_token(token.clone())
                .send()
                .await
                .map_err(|e| s3_error(&self.url(&self.prefix), e))?;
            for o in r.contents() {
                if let Some(k) = o.key() {
                    out.push(ObjectInfo {
                        key: k.to_string(),
                        etag: o.e_tag().map(|t| t.trim_matches('"').to_string()),
                        modified: None,
                    });
                }
            }
            match r.next_continuation_token() {
                Some(t) if r.is_truncated() == Some(true) => token = Some(t.to_string()),
                _ => break,
            }
        }
        Ok(out)
    }

    async fn get(&self, key: &str) -> Result<ObjectBytes<'_>, ConnectorError> {
        self.call();
        let r = self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
            .map_err(|e| s3_error(&self.url(key), e))?;
        let url = self.url(key);
        // Chunks until the body ends or fails (after a failure, nothing more).
        let chunks = futures::stream::unfold(Some(r.body), move |body| {
            let url = url.clone();
            async move {
                let mut body = body?;
                match body.try_next().await {
                    Ok(Some(chunk)) => Some((Ok(chunk.to_vec()), Some(body))),
                    Ok(None) => None,
                    Err(e) => Some((Err(ConnectorError::Transient(format!("reading {url}: {e}"))), None)),
                }
            }
        });
        Ok(Box::pin(chunks))
    }

    fn url(&self, key: &str) -> String {
        S3Store::url(self, key)
    }

    fn api_calls(&self) -> u64 {
        self.calls()
    }
}
