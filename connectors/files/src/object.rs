//! Where bill files are read from, written once for every object-store connector: a local
//! directory (a synced copy of a bucket or container), a single file, or a remote store (S3,
//! Azure Blob, OCI Object Storage), of which each connector implements only the remote side
//! ([`RemoteStore`]: list, and the bytes of one object). Keys are `/`-separated: relative to the
//! directory, or the full key in the store. A remote object is streamed chunk by chunk to a
//! temporary file (never a whole object in memory) and parsed from there.

use std::path::{Path, PathBuf};

use async_trait::async_trait;
use costledger_core::ConnectorError;
use futures::StreamExt;
use futures::stream::BoxStream;
use tokio::io::AsyncWriteExt;

use crate::{file_sha256, walk_keys};

/// One object of a listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectInfo {
    /// `/`-separated key (relative to a directory root; the full key in a store).
    pub key: String,
    /// The store's ETag (quotes removed); `None` for local files (their content hash is
    /// computed on demand).
    pub etag: Option<String>,
    /// Last modified, RFC 3339, where the store or the file system says.
    pub modified: Option<String>,
}

/// An object's bytes, chunk by chunk.
pub type ObjectBytes<'a> = BoxStream<'a, Result<Vec<u8>, ConnectorError>>;

/// The remote side of an object store.
#[async_trait]
pub trait RemoteStore: Send + Sync {
    /// Every object under the configured prefix (full keys), in any order.
    async fn list(&self) -> Result<Vec<ObjectInfo>, ConnectorError>;
    /// The bytes of one object.
    async fn get(&self, key: &str) -> Result<ObjectBytes<'_>, ConnectorError>;
    /// Where a key is, for messages and lineage (`s3://bucket/key`, a blob URL).
    fn url(&self, key: &str) -> String;
    /// Requests made so far.
    fn api_calls(&self) -> u64;
}

/// A small object (a manifest) is refused above this size.
pub const SMALL_OBJECT_LIMIT: usize = 64 << 20;

/// A root to read deliveries from.
pub enum ObjectRoot {
    Dir(PathBuf),
    File(PathBuf),
    Remote(Box<dyn RemoteStore>),
}

impl ObjectRoot {
    /// A local path: a directory, or one file.
    pub fn local(path: PathBuf) -> ObjectRoot {
        if path.is_file() { ObjectRoot::File(path) } else { ObjectRoot::Dir(path) }
    }

    /// Every object under the root, sorted by key.
    pub async fn list(&self) -> Result<Vec<ObjectInfo>, ConnectorError> {
        let mut out = match self {
            ObjectRoot::Dir(d) => {
                let d = d.clone();
                tokio::task::spawn_blocking(move || {
                    walk_keys(&d).map(|v| {
                        v.into_iter()
                            .map(|(key, p)| ObjectInfo { key, etag: None, modified: modified(&p) })
                            .collect::<Vec<_>>()
                    })
                })
                .await
                .map_err(|e| ConnectorError::Transient(format!("listing task failed: {e}")))??
            }
            ObjectRoot::File(f) => vec![ObjectInfo {
                key: f.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default(),
                etag: None,
                modified: None,
            }],
            ObjectRoot::Remote(r) => r.list().await?,
        };
        out.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(out)
    }

    /// Where a key is, for messages and lineage.
    pub fn display(&self, key: &str) -> String {
        match self {
            ObjectRoot::Dir(d) => d.join(key).display().to_string(),
            ObjectRoot::File(f) => f.display().to_string(),
            ObjectRoot::Remote(r) => r.url(key),
        }
    }

    /// The canonical absolute directory (with a trailing `/`) a local root's keys are relative
    /// to; `None` for a remote store.
    pub fn scope_prefix(&self) -> Result<Option<String>, ConnectorError> {
        let dir = match self {
            ObjectRoot::Dir(d) => d.clone(),
            ObjectRoot::File(f) => f.parent().map(PathBuf::from).unwrap_or_default(),
            ObjectRoot::Remote(_) => return Ok(None),
        };
        let dir = if dir.as_os_str().is_empty() { PathBuf::from(".") } else { dir };
        let abs = std::fs::canonicalize(&dir).map_err(|e| ConnectorError::io(dir.display().to_string(), e))?;
        Ok(Some(format!("{}/", abs.display().to_string().trim_end_matches('/'))))
    }

    /// A local directory or file (not a remote store): its objects are keyed by content.
    pub fn is_local(&self) -> bool {
        !matches!(self, ObjectRoot::Remote(_))
    }

    fn path(&self, key: &str) -> PathBuf {
        match self {
            ObjectRoot::Dir(d) => d.join(key),
            ObjectRoot::File(f) => f.clone(),
            ObjectRoot::Remote(_) => PathBuf::from(key),
        }
    }

    /// The SHA-256 of a local object's bytes.
    pub async fn local_sha256(&self, key: &str) -> Result<String, ConnectorError> {
        let p = self.path(key);
        tokio::task::spawn_blocking(move || file_sha256(&p))
            .await
            .map_err(|e| ConnectorError::Transient(format!("hashing task failed: {e}")))?
    }

    /// A small object (a manifest) read whole; refused above [`SMALL_OBJECT_LIMIT`].
    pub async fn read_small(&self, key: &str) -> Result<Vec<u8>, ConnectorError> {
        let too_big = |at: String| ConnectorError::input(at, "manifest larger than 64 MiB", "check the object");
        match self {
            ObjectRoot::Remote(r) => {
                let mut body = r.get(key).await?;
                let mut out = Vec::new();
                while let Some(chunk) = body.next().await {
                    out.extend_from_slice(&chunk?);
                    if out.len() > SMALL_OBJECT_LIMIT {
                        return Err(too_big(r.url(key)));
                    }
                }
                Ok(out)
            }
            _ => {
                let p = self.path(key);
                let bytes = tokio::fs::read(&p).await.map_err(|e| ConnectorError::io(p.display().to_string(), e))?;
                if bytes.len() > SMALL_OBJECT_LIMIT {
                    return Err(too_big(p.display().to_string()));
                }
                Ok(bytes)
            }
        }
    }

    /// The content version of an object: the store's ETag, or a local file's SHA-256.
    pub async fn version(&self, o: &ObjectInfo) -> Result<String, ConnectorError> {
        match (&o.etag, self) {
            (Some(e), _) => Ok(format!("etag:{e}")),
            (None, ObjectRoot::Remote(r)) => {
                Err(ConnectorError::input(r.url(&o.key), "the listing gave no ETag", "check the endpoint"))
            }
            (None, _) => self.local_sha256(&o.key).await,
        }
    }

    /// [`version`](Self::version) on the calling thread (a local file is hashed here, so call
    /// it where blocking is allowed): for planners that ask for versions one object at a time.
    pub fn version_now(&self, o: &ObjectInfo) -> Result<String, ConnectorError> {
        match (&o.etag, self) {
            (Some(e), _) => Ok(format!("etag:{e}")),
            (None, ObjectRoot::Remote(r)) => {
                Err(ConnectorError::input(r.url(&o.key), "the listing gave no ETag", "check the endpoint"))
            }
            (None, _) => file_sha256(&self.path(&o.key)),
        }
    }

    /// A local file holding the object: the file itself, or a streamed download to a
    /// temporary file (deleted when the returned guard drops).
    pub async fn local_copy(&self, key: &str) -> Result<LocalFile, ConnectorError> {
        match self {
            ObjectRoot::Remote(r) => download(r.as_ref(), key).await.map(LocalFile::Temp),
            _ => Ok(LocalFile::Borrowed(self.path(key))),
        }
    }

    /// Requests made to a remote store so far (0 for a local root).
    pub fn api_calls(&self) -> u64 {
        match self {
            ObjectRoot::Remote(r) => r.api_calls(),
            _ => 0,
        }
    }
}

/// An object of a remote store streamed, chunk by chunk, to a temporary file (deleted when the
/// returned path drops).
pub async fn download(store: &dyn RemoteStore, key: &str) -> Result<tempfile::TempPath, ConnectorError> {
    let mut body = store.get(key).await?;
    let tmp = tempfile::NamedTempFile::new().map_err(|e| ConnectorError::io("temporary download file", e))?;
    let (file, path) = tmp.into_parts();
    let mut file = tokio::fs::File::from_std(file);
    while let Some(chunk) = body.next().await {
        file.write_all(&chunk?).await.map_err(|e| ConnectorError::io(path.display().to_string(), e))?;
    }
    file.flush().await.map_err(|e| ConnectorError::io(path.display().to_string(), e))?;
    Ok(path)
}

/// A file's last-modified time, RFC 3339.
fn modified(p: &Path) -> Option<String> {
    std::fs::metadata(p).and_then(|m| m.modified()).ok().map(|t| chrono::DateTime::<chrono::Utc>::from(t).to_rfc3339())
}

/// An object as a local file: the root's own file, or a downloaded copy.
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
