//! Shared by the API connectors (Cost Explorer, Cost Management Query, OCI Usage API): their
//! pages are spooled to a temporary file of one record per line while they are hashed (the
//! delivery key), then read back from here in bounded batches on a blocking thread.

use std::io::{BufRead, BufReader};

use costledger_core::{Batch, ChargeLine, ConnectorError, RowError};
use futures::stream::BoxStream;
use tokio_util::sync::CancellationToken;

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
