//! Where AWS bill files are read from: a local directory (a synced copy of the delivery bucket),
//! a single file, or S3 through `aws-sdk-s3`. Keys are `/`-separated: relative to the directory,
//! or the full object key in the bucket. Objects are downloaded to a temporary file, streamed
//! chunk by chunk (never a whole object in memory), and parsed from there.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use aws_sdk_s3::Client;
use costledger_core::ConnectorError;
use costledger_files::file_sha256;
use tokio::io::AsyncWriteExt;

/// One object of a listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectInfo {
    /// `/`-separated key (relative to a directory root; the full key in a bucket).
    pub key: String,
    /// S3's ETag (quotes removed); `None` for local files (their content hash is computed on
    /// demand).
    pub etag: Option<String>,
}

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

/// A root to read deliveries from.
pub enum Root {
    Dir(PathBuf),
    File(PathBuf),
    S3(Box<S3Store>),
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

impl Root {
    /// Every object under the root, sorted by key.
    pub async fn list(&self) -> Result<Vec<ObjectInfo>, ConnectorError> {
        let mut out = match self {
            Root::Dir(d) => {
                let d = d.clone();
                tokio::task::spawn_blocking(move || {
                    costledger_files::walk_keys(&d)
                        .map(|v| v.into_iter().map(|(key, _)| ObjectInfo { key, etag: None }).collect::<Vec<_>>())
                })
                .await
                .map_err(|e| ConnectorError::Transient(format!("listing task failed: {e}")))??
            }
            Root::File(f) => {
                vec![ObjectInfo {
                    key: f.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default(),
                    etag: None,
                }]
            }
            Root::S3(s) => {
                let mut out = Vec::new();
                let mut token: Option<String> = None;
                loop {
                    s.call();
                    let r = s
                        .client
                        .list_objects_v2()
                        .bucket(&s.bucket)
                        .prefix(&s.prefix)
                        .set_continuation_token(token.clone())
                        .send()
                        .await
                        .map_err(|e| s3_error(&s.url(&s.prefix), e))?;
                    for o in r.contents() {
                        if let Some(k) = o.key() {
                            out.push(ObjectInfo {
                                key: k.to_string(),
                                etag: o.e_tag().map(|t| t.trim_matches('"').to_string()),
                            });
                        }
                    }
                    match r.next_continuation_token() {
                        Some(t) if r.is_truncated() == Some(true) => token = Some(t.to_string()),
                        _ => break,
                    }
                }
                out
            }
        };
        out.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(out)
    }

    /// Where a key is, for messages and lineage.
    pub fn display(&self, key: &str) -> String {
        match self {
            Root::Dir(d) => d.join(key).display().to_string(),
            Root::File(f) => f.display().to_string(),
            Root::S3(s) => s.url(key),
        }
    }

    /// The canonical absolute directory (with a trailing `/`) a local root's keys are relative
    /// to; `None` for S3.
    pub fn scope_prefix(&self) -> Result<Option<String>, ConnectorError> {
        let dir = match self {
            Root::Dir(d) => d.clone(),
            Root::File(f) => f.parent().map(PathBuf::from).unwrap_or_default(),
            Root::S3(_) => return Ok(None),
        };
        let dir = if dir.as_os_str().is_empty() { PathBuf::from(".") } else { dir };
        let abs = std::fs::canonicalize(&dir).map_err(|e| ConnectorError::io(dir.display().to_string(), e))?;
        Ok(Some(format!("{}/", abs.display().to_string().trim_end_matches('/'))))
    }

    /// A local directory or file (not S3): its objects are keyed by content.
    pub fn is_local(&self) -> bool {
        !matches!(self, Root::S3(_))
    }

    /// The SHA-256 of a local object's bytes.
    pub async fn local_sha256(&self, key: &str) -> Result<String, ConnectorError> {
        let p = self.local(key);
        tokio::task::spawn_blocking(move || file_sha256(&p))
            .await
            .map_err(|e| ConnectorError::Transient(format!("hashing task failed: {e}")))?
    }

    fn local(&self, key: &str) -> PathBuf {
        match self {
            Root::Dir(d) => d.join(key),
            Root::File(f) => f.clone(),
            Root::S3(_) => PathBuf::from(key),
        }
    }

    /// A small object (a manifest) read whole; manifests are refused above 64 MiB.
    pub async fn read_small(&self, key: &str) -> Result<Vec<u8>, ConnectorError> {
        const LIMIT: usize = 64 << 20;
        match self {
            Root::Dir(_) | Root::File(_) => {
                let p = self.local(key);
                let bytes = tokio::fs::read(&p).await.map_err(|e| ConnectorError::io(p.display().to_string(), e))?;
                if bytes.len() > LIMIT {
                    return Err(ConnectorError::input(
                        p.display().to_string(),
                        "manifest larger than 64 MiB",
                        "check the file",
                    ));
                }
                Ok(bytes)
            }
            Root::S3(s) => {
                s.call();
                let r = s
                    .client
                    .get_object()
                    .bucket(&s.bucket)
                    .key(key)
                    .send()
                    .await
                    .map_err(|e| s3_error(&s.url(key), e))?;
                let mut body = r.body;
                let mut out = Vec::new();
                while let Some(chunk) = body
                    .try_next()
                    .await
                    .map_err(|e| ConnectorError::Transient(format!("reading {}: {e}", s.url(key))))?
                {
                    out.extend_from_slice(&chunk);
                    if out.len() > LIMIT {
                        return Err(ConnectorError::input(
                            s.url(key),
                            "manifest larger than 64 MiB",
                            "check the object",
                        ));
                    }
                }
                Ok(out)
            }
        }
    }

    /// The content version of a key: S3's ETag, or a local file's SHA-256.
    pub async fn version(&self, o: &ObjectInfo) -> Result<String, ConnectorError> {
        match (&o.etag, self) {
            (Some(e), _) => Ok(format!("etag:{e}")),
            (None, Root::S3(s)) => {
                Err(ConnectorError::input(s.url(&o.key), "the listing gave no ETag", "check the endpoint"))
            }
            (None, _) => {
                let p = self.local(&o.key);
                tokio::task::spawn_blocking(move || file_sha256(&p))
                    .await
                    .map_err(|e| ConnectorError::Transient(format!("hashing task failed: {e}")))?
            }
        }
    }

    /// A local file holding the object: the file itself, or a streamed download to a
    /// temporary file (deleted when the returned guard drops).
    pub async fn local_copy(&self, key: &str) -> Result<LocalFile, ConnectorError> {
        match self {
            Root::Dir(_) | Root::File(_) => Ok(LocalFile::Borrowed(self.local(key))),
            Root::S3(s) => {
                s.call();
                let r = s
                    .client
                    .get_object()
                    .bucket(&s.bucket)
                    .key(key)
                    .send()
                    .await
                    .map_err(|e| s3_error(&s.url(key), e))?;
                let tmp =
                    tempfile::NamedTempFile::new().map_err(|e| ConnectorError::io("temporary download file", e))?;
                let (file, path) = tmp.into_parts();
                let mut file = tokio::fs::File::from_std(file);
                let mut body = r.body;
                while let Some(chunk) = body
                    .try_next()
                    .await
                    .map_err(|e| ConnectorError::Transient(format!("downloading {}: {e}", s.url(key))))?
                {
                    file.write_all(&chunk).await.map_err(|e| ConnectorError::io(path.display().to_string(), e))?;
                }
                file.flush().await.map_err(|e| ConnectorError::io(path.display().to_string(), e))?;
                Ok(LocalFile::Temp(path))
            }
        }
    }

    pub fn api_calls(&self) -> u64 {
        match self {
            Root::S3(s) => s.calls(),
            _ => 0,
        }
    }
}

pub enum LocalFile {
    Borrowed(PathBuf),
    Temp(tempfile::TempPath),
}

impl LocalFile {
    pub fn path(&self) -> &Path {
        match self {
            LocalFile::Borrowed(p) => p,
            LocalFile::Temp(t) => t,
        }
    }
}
