//! costledger's file plumbing, shared by every connector that reads bill files: the bounded
//! record reader ([`reader`]: open, gunzip, CSV or Parquet records, batches over a bounded
//! channel), the fast CSV splitter ([`fastcsv`]), Parquet rows ([`parquet`]), spooling of API
//! answers ([`spool`]), the hash of the bytes read ([`tap`]), the record helpers every
//! normaliser uses ([`record`]), and finding files: directory walks with scopes
//! ([`list_files`], [`walk_keys`]), a file's SHA-256 ([`file_sha256`]), and the object roots of
//! the object-store connectors ([`object`]: a directory, a file, or a remote store of which each
//! connector implements only the remote side). What a record means
//! is each connector's (`RecordFormat`); this crate knows no bill format.

pub mod fastcsv;
pub mod object;
pub mod parquet;
pub mod reader;
pub mod record;
pub mod spool;
pub mod tap;

use std::path::{Path, PathBuf};

use costledger_core::ConnectorError;
use sha2::{Digest, Sha256};

/// How a file source names its deliveries' scopes (what a newer file replaces).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scoping {
    /// A configured source: a file's path relative to the configured directory it was found
    /// in (or its name, when the file itself is configured). Stable as long as the
    /// directory's layout is.
    Relative,
    /// An ad hoc import: the file's canonical absolute path, so the same file is one scope
    /// however it was named on the command line, and two files never share one by accident.
    Absolute,
}

/// (scope, file) for every file under `paths` (files, or directories searched recursively)
/// that `wanted` accepts, sorted by scope; two files with one scope are an error.
pub fn list_files(
    paths: &[PathBuf],
    wanted: fn(&Path) -> bool,
    scoping: Scoping,
) -> Result<Vec<(String, PathBuf)>, ConnectorError> {
    let mut out: Vec<(String, PathBuf)> = Vec::new();
    for p in paths {
        let meta = std::fs::metadata(p).map_err(|e| ConnectorError::io(p.display().to_string(), e))?;
        let found = if meta.is_dir() {
            let mut found = Vec::new();
            walk(p, wanted, &mut found)?;
            found
        } else if meta.is_file() {
            vec![p.clone()]
        } else {
            return Err(ConnectorError::input(
                p.display().to_string(),
                "is not a regular file (a FIFO, socket or device): a bill is read twice, once to key it and once to load it",
                "copy the bill into a regular file and import that",
            ));
        };
        for f in found {
            let scope = match scoping {
                Scoping::Absolute => {
                    let abs = std::fs::canonicalize(&f).map_err(|e| ConnectorError::io(f.display().to_string(), e))?;
                    abs.to_string_lossy().into_owned()
                }
                Scoping::Relative if meta.is_dir() => {
                    let rel = f.strip_prefix(p).unwrap_or(&f);
                    rel.components().map(|c| c.as_os_str().to_string_lossy()).collect::<Vec<_>>().join("/")
                }
                Scoping::Relative => f.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default(),
            };
            out.push((scope, f));
        }
    }
    out.sort();
    // The same file named twice (a file and its directory, say) is one delivery.
    out.dedup_by(|b, a| {
        a.0 == b.0 && std::fs::canonicalize(&a.1).ok().is_some_and(|x| std::fs::canonicalize(&b.1).ok() == Some(x))
    });
    for w in out.windows(2) {
        if w[0].0 == w[1].0 {
            return Err(ConnectorError::input(
                w[1].1.display().to_string(),
                format!(
                    "this file and {} both map to scope '{}', so one would replace the other",
                    w[0].1.display(),
                    w[0].0
                ),
                "import them under different --source names or rename one of them",
            ));
        }
    }
    Ok(out)
}

fn walk(dir: &Path, wanted: fn(&Path) -> bool, out: &mut Vec<PathBuf>) -> Result<(), ConnectorError> {
    let rd = std::fs::read_dir(dir).map_err(|e| ConnectorError::io(dir.display().to_string(), e))?;
    for entry in rd {
        let entry = entry.map_err(|e| ConnectorError::io(dir.display().to_string(), e))?;
        let p = entry.path();
        let ft = entry.file_type().map_err(|e| ConnectorError::io(p.display().to_string(), e))?;
        if ft.is_dir() {
            walk(&p, wanted, out)?;
        } else if wanted(&p) && is_regular(&p) {
            out.push(p);
        }
    }
    Ok(())
}

/// Whether `p` (symlinks followed) is a regular file. Anything else found in a source directory
/// (a FIFO, a socket, a device, a dangling link) is skipped with a warning: opening a FIFO
/// would block the import forever.
fn is_regular(p: &Path) -> bool {
    match std::fs::metadata(p) {
        Ok(m) if m.is_file() => true,
        Ok(_) => {
            tracing::warn!(path = %p.display(), "skipped: not a regular file (a FIFO, socket or device)");
            false
        }
        Err(e) => {
            tracing::warn!(path = %p.display(), error = %e, "skipped: cannot be read");
            false
        }
    }
}

/// Every file below `root` (recursively) with its `/`-separated key relative to `root`, sorted
/// by key: how the object-store connectors see a directory synced from a bucket.
pub fn walk_keys(root: &Path) -> Result<Vec<(String, PathBuf)>, ConnectorError> {
    fn go(root: &Path, dir: &Path, out: &mut Vec<(String, PathBuf)>) -> Result<(), ConnectorError> {
        let rd = std::fs::read_dir(dir).map_err(|e| ConnectorError::io(dir.display().to_string(), e))?;
        for e in rd {
            let e = e.map_err(|e| ConnectorError::io(dir.display().to_string(), e))?;
            let p = e.path();
            if p.is_dir() {
                go(root, &p, out)?;
            } else if is_regular(&p) {
                let rel = p.strip_prefix(root).unwrap_or(&p);
                let key = rel.components().map(|c| c.as_os_str().to_string_lossy()).collect::<Vec<_>>().join("/");
                out.push((key, p));
            }
        }
        Ok(())
    }
    let mut out = Vec::new();
    go(root, root, &mut out)?;
    out.sort();
    Ok(out)
}

/// `sha256:<hex>` of a file's bytes, streamed.
pub fn file_sha256(path: &Path) -> Result<String, ConnectorError> {
    use std::io::Read;
    let mut f = std::fs::File::open(path).map_err(|e| ConnectorError::io(path.display().to_string(), e))?;
    let mut h = Sha256::new();
    // 1 MiB reads: `io::copy`'s 8 KiB buffer costs a system call per 8 KiB (65,000 for a
    // 500 MB bill), which showed as kernel time beside the import.
    let mut buf = vec![0u8; 1 << 20];
    loop {
        match f.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => h.update(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(ConnectorError::io(path.display().to_string(), e)),
        }
    }
    let digest = h.finalize();
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    Ok(format!("sha256:{hex}"))
}
