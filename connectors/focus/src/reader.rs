//! Reading FOCUS CSV: gzip by magic bytes, records as bytes (UTF-8 checked per field), batches
//! sent over a bounded channel from a blocking thread so parsing overlaps the database writes.

use std::fs::File;
use std::io::{BufReader, Read};
use std::path::{Path, PathBuf};

use costledger_core::{Batch, ChargeLine, ConnectorError, RowError, SpentLines};
use futures::stream::BoxStream;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::normalize::{ColumnMap, MAX_FIELD_BYTES, normalize_record, raw_record};
use crate::tap::Tap;

/// Batches in flight between the parser thread and the loader.
const CHANNEL_DEPTH: usize = 1;

/// Written batches waiting to be freed by the parser thread (each one is memory held).
const SPENT_DEPTH: usize = 2;

/// A batch is also closed at this much record text, so wide files (a 195-column CUR) keep
/// batches, and so peak memory, about as small as narrow ones.
pub const MAX_BATCH_BYTES: usize = 2 << 20;

/// A CSV bill format: its header becomes a column map that turns records into lines. The
/// reader (gzip detection, record limits, batching, the bounded channel) is shared by every
/// CSV format (FOCUS here; OCI cost reports in `costledger-oci`).
pub trait RecordFormat: Sized + Send + 'static {
    /// What to do when the header is unusable, e.g. "export the data as FOCUS … CSV".
    const HEADER_HINT: &'static str;
    fn from_header(header: &csv::ByteRecord) -> Result<Self, String>;
    /// Number of header columns.
    fn width(&self) -> usize;
    /// Name of column `i` (for messages).
    fn column_name(&self, i: usize) -> &str;
    /// The raw invoice-basis amount and currency of a record (kept with a quarantined row).
    fn raw_amount(&self, rec: &csv::ByteRecord) -> Option<String>;
    fn raw_currency(&self, rec: &csv::ByteRecord) -> Option<String>;
    /// A line and the number of amounts rounded beyond 28 places, or a row error.
    fn normalize(&self, rec: &csv::ByteRecord, location: &str) -> Result<(ChargeLine, u64), RowError>;
}

impl RecordFormat for ColumnMap {
    const HEADER_HINT: &'static str = "export the data as FOCUS 1.0, 1.1 or 1.2 CSV with a header row";
    fn from_header(header: &csv::ByteRecord) -> Result<Self, String> {
        ColumnMap::from_header(header)
    }
    fn width(&self) -> usize {
        ColumnMap::width(self)
    }
    fn column_name(&self, i: usize) -> &str {
        self.name(i)
    }
    fn raw_amount(&self, rec: &csv::ByteRecord) -> Option<String> {
        ColumnMap::raw_amount(self, rec)
    }
    fn raw_currency(&self, rec: &csv::ByteRecord) -> Option<String> {
        ColumnMap::raw_currency(self, rec)
    }
    fn normalize(&self, rec: &csv::ByteRecord, location: &str) -> Result<(ChargeLine, u64), RowError> {
        normalize_record(self, rec, location)
    }
}

/// FOCUS files, in order, as batches.
pub fn stream_files(
    paths: Vec<PathBuf>,
    batch_rows: usize,
    cancel: CancellationToken,
) -> BoxStream<'static, Result<Batch, ConnectorError>> {
    stream_files_as::<ColumnMap>(paths, batch_rows, cancel)
}

/// Files of format `F`, in order, as batches parsed on a blocking thread.
pub fn stream_files_as<F: RecordFormat>(
    paths: Vec<PathBuf>,
    batch_rows: usize,
    cancel: CancellationToken,
) -> BoxStream<'static, Result<Batch, ConnectorError>> {
    let (tx, rx) = mpsc::channel::<Result<Batch, ConnectorError>>(CHANNEL_DEPTH);
    tokio::task::spawn_blocking(move || {
        for p in paths {
            if let Err(e) = read_file::<F>(&p, batch_rows.max(1), &tx, &cancel) {
                let _ = tx.blocking_send(Err(e));
                return;
            }
        }
    });
    Box::pin(futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|item| (item, rx)) }))
}

/// Open a file, transparently gunzipping when it starts with the gzip magic bytes.
pub fn open(path: &Path) -> Result<Box<dyn Read + Send>, ConnectorError> {
    Ok(open_detect(path)?.0)
}

/// Like [`open`], also saying whether the file is gzip.
pub fn open_detect(path: &Path) -> Result<(Box<dyn Read + Send>, bool), ConnectorError> {
    let loc = path.display().to_string();
    let gz = is_gzip(path)?;
    let f = File::open(path).map_err(|e| ConnectorError::io(&loc, e))?;
    Ok((decoded(f, gz), gz))
}

/// Like [`open_detect`], with the raw bytes read hashed on another thread: after the reader
/// is dropped, [`Tap::finish`] gives the key of exactly those bytes (or says the file changed).
pub fn open_tapped(path: &Path) -> Result<(Box<dyn Read + Send>, bool, Tap), ConnectorError> {
    let gz = is_gzip(path)?;
    let (tee, tap) = crate::tap::open_tapped(path)?;
    Ok((decoded(tee, gz), gz, tap))
}

fn is_gzip(path: &Path) -> Result<bool, ConnectorError> {
    let loc = path.display().to_string();
    let mut f = File::open(path).map_err(|e| ConnectorError::io(&loc, e))?;
    let mut magic = [0u8; 2];
    let n = read_up_to(&mut f, &mut magic).map_err(|e| ConnectorError::io(&loc, e))?;
    Ok(n == 2 && magic == [0x1f, 0x8b])
}

fn decoded<R: Read + Send + 'static>(r: R, gz: bool) -> Box<dyn Read + Send> {
    if gz {
        Box::new(flate2::read::MultiGzDecoder::new(BufReader::with_capacity(256 * 1024, r)))
    } else {
        Box::new(BufReader::with_capacity(256 * 1024, r))
    }
}

/// Parquet files start with `PAR1` (whatever their name).
fn is_parquet(path: &Path) -> Result<bool, ConnectorError> {
    let mut f = File::open(path).map_err(|e| ConnectorError::io(path.display().to_string(), e))?;
    let mut magic = [0u8; 4];
    let n = read_up_to(&mut f, &mut magic).map_err(|e| ConnectorError::io(path.display().to_string(), e))?;
    Ok(n == 4 && magic == crate::parquet::MAGIC)
}

fn read_up_to(f: &mut File, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match f.read(&mut buf[n..])? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}

fn io_error(file: &str, line: u64, e: &csv::Error, gz: bool) -> ConnectorError {
    let msg = e.to_string();
    if gz && matches!(e.kind(), csv::ErrorKind::Io(_)) {
        ConnectorError::input(
            format!("{file}:{line}"),
            format!("the compressed file is truncated or corrupt ({msg})"),
            "nothing from this file was loaded; fetch the file again from the provider",
        )
    } else {
        ConnectorError::input(
            format!("{file}:{line}"),
            format!("cannot read the file ({msg})"),
            "nothing from this file was loaded; check the file and try again",
        )
    }
}

/// What the reader knows of a record beyond its fields.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct RecordInfo<'r> {
    /// The record's original bytes, when the format has them (CSV).
    pub raw: Option<&'r [u8]>,
    /// A quoted field opened on this line was never closed, swallowing this many line breaks.
    pub unterminated: Option<(u64, u64)>,
}

/// One record into the batch: a line, or a row error (an unterminated quote, wrong width, an
/// oversized field, or what the format's normaliser says). A quarantined row keeps the
/// record's original bytes; its amount is taken by header name only when the record has the
/// header's width (in a short or long record, no field is known to be the amount).
fn push_record<F: RecordFormat>(
    cols: &F,
    rec: &csv::ByteRecord,
    location: String,
    info: RecordInfo,
    batch: &mut Batch,
) {
    batch.records += 1;
    let original = || match info.raw {
        Some(raw) => costledger_core::text::clip(&String::from_utf8_lossy(raw), crate::normalize::MAX_RAW_BYTES),
        None => raw_record(rec),
    };
    let aligned = rec.len() == cols.width();
    let error = |reason: String| RowError {
        location: location.clone(),
        reason,
        raw: original(),
        raw_amount: if aligned { cols.raw_amount(rec) } else { None },
        currency: if aligned { cols.raw_currency(rec) } else { None },
    };
    if let Some((opened, swallowed)) = info.unterminated {
        batch.errors.push(error(format!(
            "a quoted field opened on line {opened} is never closed: it swallowed the {swallowed} line break(s) \
             to the end of the file into this one record"
        )));
    } else if let Some(i) = memchr::memchr(0, rec.as_slice()).map(|_| rec.iter().position(|f| f.contains(&0))) {
        // PostgreSQL cannot store a NUL byte in text; SQLite could: refused on both alike.
        let col = i.filter(|&i| i < cols.width()).map(|i| cols.column_name(i).to_string());
        let col = col.unwrap_or_else(|| "(past the header)".to_string());
        batch.errors.push(error(format!("column {col} contains a NUL byte (0x00), which no ledger column can store")));
    } else if !aligned {
        batch.errors.push(error(format!("the record has {} fields but the header has {}", rec.len(), cols.width())));
    } else if let Some((i, f)) = rec.iter().enumerate().find(|(_, f)| f.len() > MAX_FIELD_BYTES) {
        batch.errors.push(error(format!(
            "column {} is {} bytes, over the {} byte limit for one field",
            cols.column_name(i),
            f.len(),
            MAX_FIELD_BYTES
        )));
    } else {
        match cols.normalize(rec, &location) {
            Ok((l, rounded)) => {
                batch.rounded_amounts += rounded;
                batch.lines.push(l);
            }
            Err(mut e) => {
                if info.raw.is_some() {
                    e.raw = original();
                }
                batch.errors.push(e)
            }
        }
    }
}

/// Collects records into batches and sends them: a batch closes at `batch_rows` records or at
/// [`MAX_BATCH_BYTES`] of record text, whichever comes first. Shared by the CSV and Parquet
/// readers, so every file format has the same memory bound and cancellation check.
pub(crate) struct Batcher<'a> {
    batch: Batch,
    /// Lines the loader has written, handed back to be freed on this thread.
    spent: std::sync::mpsc::Receiver<Vec<ChargeLine>>,
    spent_tx: SpentLines,
    bytes: usize,
    batch_rows: usize,
    tx: &'a mpsc::Sender<Result<Batch, ConnectorError>>,
    cancel: &'a CancellationToken,
}

impl<'a> Batcher<'a> {
    pub(crate) fn new(
        batch_rows: usize,
        tx: &'a mpsc::Sender<Result<Batch, ConnectorError>>,
        cancel: &'a CancellationToken,
    ) -> Batcher<'a> {
        let batch_rows = batch_rows.max(1);
        let (spent_tx, spent) = SpentLines::channel(SPENT_DEPTH);
        Batcher { batch: Self::empty(batch_rows, &spent_tx), spent, spent_tx, bytes: 0, batch_rows, tx, cancel }
    }

    /// A batch with room for its lines up front (growing a vector of lines copies it, twice
    /// over on average).
    fn empty(batch_rows: usize, spent: &SpentLines) -> Batch {
        Batch { lines: Vec::with_capacity(batch_rows.min(8192)), spent: Some(spent.clone()), ..Batch::default() }
    }

    /// Cancelled? Checked every 1024 records (the token is a lock, not a plain flag).
    pub(crate) fn cancelled(&self) -> bool {
        self.batch.records.is_multiple_of(1024) && self.cancel.is_cancelled()
    }

    /// One record in; the batch is sent when full.
    pub(crate) fn push<F: RecordFormat>(
        &mut self,
        cols: &F,
        rec: &csv::ByteRecord,
        location: String,
        info: RecordInfo,
    ) -> Result<(), ConnectorError> {
        push_record(cols, rec, location, info, &mut self.batch);
        self.bytes += rec.as_slice().len();
        if self.batch.lines.len() + self.batch.errors.len() >= self.batch_rows || self.bytes >= MAX_BATCH_BYTES {
            self.bytes = 0;
            let full = std::mem::replace(&mut self.batch, Self::empty(self.batch_rows, &self.spent_tx));
            self.free_spent();
            if self.tx.blocking_send(Ok(full)).is_err() {
                return Err(ConnectorError::Cancelled);
            }
            // What came back while the send waited.
            self.free_spent();
        }
        Ok(())
    }

    fn free_spent(&self) {
        while let Ok(lines) = self.spent.try_recv() {
            drop(lines);
        }
    }

    /// Send what is left, with the key of the bytes read.
    pub(crate) fn finish(mut self, content_key: Option<String>) -> Result<(), ConnectorError> {
        let keyed = content_key.is_some();
        self.batch.content_key = content_key;
        if (self.batch.records > 0 || keyed) && self.tx.blocking_send(Ok(self.batch)).is_err() {
            return Err(ConnectorError::Cancelled);
        }
        Ok(())
    }
}

/// `file:line`, without the formatting machinery (once per record).
fn location(file: &str, line: u64) -> String {
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    let mut n = line;
    loop {
        at -= 1;
        digits[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    let mut s = String::with_capacity(file.len() + 1 + digits.len() - at);
    s.push_str(file);
    s.push(':');
    // ASCII digits only.
    s.push_str(std::str::from_utf8(&digits[at..]).unwrap_or_default());
    s
}

fn read_file<F: RecordFormat>(
    path: &Path,
    batch_rows: usize,
    tx: &mpsc::Sender<Result<Batch, ConnectorError>>,
    cancel: &CancellationToken,
) -> Result<(), ConnectorError> {
    let file = path.display().to_string();
    if is_parquet(path)? {
        return crate::parquet::read_parquet::<F>(path, batch_rows, tx, cancel);
    }
    let (input, gz, tap) = open_tapped(path)?;
    // The `csv` crate's semantics, scanned faster (see `fastcsv`).
    let mut rdr = crate::fastcsv::FastCsv::new(input);
    let mut header = csv::ByteRecord::new();
    match rdr.read_byte_record(&mut header) {
        Ok(true) => {}
        Ok(false) => {
            return Err(ConnectorError::input(
                format!("{file}:1"),
                "the file is empty (no header line)",
                "a bill file starts with a header of column names; fetch the file again",
            ));
        }
        Err(e) => return Err(io_error(&file, 1, &e, gz)),
    }
    let cols = F::from_header(&header).map_err(|m| ConnectorError::input(format!("{file}:1"), m, F::HEADER_HINT))?;
    let mut batcher = Batcher::new(batch_rows, tx, cancel);
    let mut rec = csv::ByteRecord::new();
    loop {
        if batcher.cancelled() {
            return Err(ConnectorError::Cancelled);
        }
        let line = rdr.position().line();
        match rdr.read_byte_record(&mut rec) {
            Ok(false) => break,
            Ok(true) => {}
            Err(e) => return Err(io_error(&file, line, &e, gz)),
        }
        let line = rec.position().map(|p| p.line()).unwrap_or(line);
        let info = RecordInfo { raw: Some(rdr.raw()), unterminated: rdr.unterminated() };
        batcher.push(&cols, &rec, location(&file, line), info)?;
    }
    drop(rdr);
    let key = tap.finish()?;
    batcher.finish(Some(key))
}

#[cfg(test)]
mod tests {
    #[test]
    fn location_is_file_colon_line() {
        for n in [0u64, 1, 9, 10, 99, 1_000_000, u64::MAX] {
            assert_eq!(super::location("dir/bill.csv", n), format!("dir/bill.csv:{n}"));
        }
    }
}
