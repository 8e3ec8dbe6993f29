//! Shared by the API connectors (Cost Explorer, Cost Management Query, OCI Usage API): their
//! pages are spooled ([`SpoolWriter`]) to a temporary file of one record per line while they are
//! hashed (the delivery key), kept alive ([`Spools`]) and read back from here in bounded batches
//! on a blocking thread.

use std::io::{BufRead, BufReader, BufWriter, Write};
use std::sync::Mutex;

use costledger_core::{Batch, ChargeLine, ConnectorError, RowError};
use futures::stream::BoxStream;
use sha2::{Digest, Sha256};
use tokio_util::sync::CancellationToken;

/// An API answer being spooled: a temporary file of one record per line, and the SHA-256 of
/// what keys the records (the delivery key), computed as they are written.
pub struct SpoolWriter {
    file: BufWriter<std::fs::File>,
    path: tempfile::TempPath,
    hash: Sha256,
}

impl SpoolWriter {
    /// A new spool; `what` names the API in an error (`Cost Explorer`).
    pub fn new(what: &str) -> Result<SpoolWriter, ConnectorError> {
        let tmp = tempfile::NamedTempFile::new()
            .map_err(|e| ConnectorError::io(format!("temporary spool file for {what}"), e))?;
        let (file, path) = tmp.into_parts();
        Ok(SpoolWriter { file: BufWriter::new(file), path, hash: Sha256::new() })
    }

    /// Write `line` (one record, without a line break) and key it by `keyed`: the record
    /// without what may differ between two fetches of the same data (a page number), so an
    /// unchanged answer keeps its key. Each keyed text counts with a `\n` after it.
    pub fn write(&mut self, line: &str, keyed: &str) -> Result<(), ConnectorError> {
        self.hash.update(keyed.as_bytes());
        self.hash.update(b"\n");
        writeln!(self.file, "{line}").map_err(|e| ConnectorError::io(self.path.display().to_string(), e))
    }

    /// The spool flushed: its file (deleted when the path drops) and `sha256:<hex>` of the
    /// keyed records.
    pub fn finish(mut self) -> Result<(tempfile::TempPath, String), ConnectorError> {
        self.file.flush().map_err(|e| ConnectorError::io(self.path.display().to_string(), e))?;
        drop(self.file);
        let key: String = self.hash.finalize().iter().map(|b| format!("{b:02x}")).collect();
        Ok((self.path, format!("sha256:{key}")))
    }
}

/// The spools of a connector's current deliveries, kept (their files alive) until the next
/// listing clears them.
#[derive(Default)]
pub struct Spools(Mutex<Vec<tempfile::TempPath>>);

impl Spools {
    /// Keep `path` alive; its path as a delivery item.
    pub fn keep(&self, path: tempfile::TempPath) -> String {
        let item = path.display().to_string();
        if let Ok(mut s) = self.0.lock() {
            s.push(path);
        }
        item
    }

    /// Delete the spools of the last listing.
    pub fn clear(&self) {
        if let Ok(mut s) = self.0.lock() {
            s.clear();
        }
    }
}

/// What one spool line becomes: a line, nothing (a record to skip), or a row error; an `Err`
/// fails the whole delivery.
pub type LineResult = Result<Option<Result<(ChargeLine, u64), RowError>>, ConnectorError>;

/// Stream a spool file through `each(line, line_number)` in batches of `batch_rows`.
pub fn stream_lines<N>(
    path: String,
    batch_rows: usize,
    cancel: CancellationToken,
    mut each: N,
) -> BoxStream<'static, Result<Batch, ConnectorError>>
where
    N: FnMut(&str, usize) -> LineResult + Send + 'static,
{
    let batch_rows = batch_rows.max(1);
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Batch, ConnectorError>>(2);
    tokio::task::spawn_blocking(move || {
        let send = |b: Result<Batch, ConnectorError>| tx.blocking_send(b).is_ok();
        let f = match std::fs::File::open(&path) {
            Ok(f) => f,
            Err(e) => {
                send(Err(ConnectorError::io(&path, e)));
                return;
            }
        };
        let mut batch = Batch::default();
        for (i, line) in BufReader::new(f).lines().enumerate() {
            if cancel.is_cancelled() {
                send(Err(ConnectorError::Cancelled));
                return;
            }
            let line = match line {
                Ok(l) => l,
                Err(e) => {
                    send(Err(ConnectorError::io(&path, e)));
                    return;
                }
            };
            batch.records += 1;
            match each(&line, i + 1) {
                Ok(Some(Ok((l, rounded)))) => {
                    batch.rounded_amounts += rounded;
                    batch.lines.push(l);
                }
                Ok(Some(Err(e))) => batch.errors.push(e),
                Ok(None) => {}
                Err(e) => {
                    send(Err(e));
                    return;
                }
            }
            if batch.lines.len() + batch.errors.len() >= batch_rows && !send(Ok(std::mem::take(&mut batch))) {
                return;
            }
        }
        if batch.records > 0 {
            send(Ok(batch));
        }
    });
    Box::pin(futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|b| (b, rx)) }))
}

/// Replace a temporary file's path by the object's name in the locations and lineage of a
/// batch parsed from a downloaded copy.
pub fn relabel(mut b: Batch, tmp: &str, label: &str) -> Batch {
    if tmp == label {
        return b;
    }
    for l in &mut b.lines {
        if let Some(r) = &mut l.source_ref
            && let Some(rest) = r.strip_prefix(tmp)
        {
            *r = format!("{label}{rest}");
        }
    }
    for e in &mut b.errors {
        if let Some(rest) = e.location.strip_prefix(tmp) {
            e.location = format!("{label}{rest}");
        }
    }
    b
}

#[cfg(test)]
mod writer_tests {
    use super::*;

    /// The delivery key of an API answer: the SHA-256 of the keyed texts, each with a line
    /// break; the spool holds the lines as written. (The three API connectors' keys before
    /// `SpoolWriter` were computed this way: an unchanged month keeps its key across versions.)
    #[test]
    fn a_spool_holds_its_lines_and_is_keyed_by_the_keyed_texts() {
        let mut w = SpoolWriter::new("a test").expect("spool");
        w.write("page 1 item 1\t{\"a\":1}", "{\"a\":1}").expect("write");
        w.write("page 2 item 1\t{\"b\":2}", "{\"b\":2}").expect("write");
        let (path, key) = w.finish().expect("finish");
        let text = std::fs::read_to_string(&path).expect("read");
        assert_eq!(text, "page 1 item 1\t{\"a\":1}\npage 2 item 1\t{\"b\":2}\n");
        let want: String = Sha256::digest(b"{\"a\":1}\n{\"b\":2}\n").iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(key, format!("sha256:{want}"));
        let spools = Spools::default();
        let item = spools.keep(path);
        assert!(std::path::Path::new(&item).exists(), "kept until cleared");
        spools.clear();
        assert!(!std::path::Path::new(&item).exists(), "deleted when cleared");
    }
}
