//! Reading bill files (CSV or Parquet): gzip by magic bytes, records as bytes (UTF-8 checked
//! per field), batches sent over a bounded channel from a blocking thread so parsing overlaps
//! the database writes.

use std::fs::File;
use std::io::{BufReader, Read};
use std::path::{Path, PathBuf};

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use costledger_core::{Batch, ChargeLine, ConnectorError, Context, ReadLimits, RowError, SpentLines};
use futures::stream::BoxStream;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::record::{MAX_FIELD_BYTES, raw_record};
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
/// CSV format (FOCUS files in `costledger-focus`, CURs, Azure exports, OCI cost reports in
/// their connectors).
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

/// Files of format `F`, in order, as batches parsed on a blocking thread (batch size, limits
/// and cancellation from `cx`).
pub fn stream_files_as<F: RecordFormat>(
    paths: Vec<PathBuf>,
    cx: &Context,
) -> BoxStream<'static, Result<Batch, ConnectorError>> {
    let (tx, rx) = mpsc::channel::<Result<Batch, ConnectorError>>(CHANNEL_DEPTH);
    let (batch_rows, cancel, limits) = (cx.batch_rows, cx.cancel.clone(), cx.read_limits);
    tokio::task::spawn_blocking(move || {
        for p in paths {
            if let Err(e) = read_file::<F>(&p, batch_rows.max(1), &limits, &tx, &cancel) {
                let _ = tx.blocking_send(Err(e));
                return;
            }
        }
    });
    Box::pin(futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|item| (item, rx)) }))
}

/// Open a file, transparently gunzipping when it starts with the gzip magic bytes.
pub fn open(path: &Path, limits: &ReadLimits) -> Result<Box<dyn Read + Send>, ConnectorError> {
    Ok(open_detect(path, limits)?.0)
}

/// Like [`open`], also saying whether the file is gzip.
pub fn open_detect(path: &Path, limits: &ReadLimits) -> Result<(Box<dyn Read + Send>, bool), ConnectorError> {
    let loc = path.display().to_string();
    let gz = is_gzip(path)?;
    let f = File::open(path).map_err(|e| ConnectorError::io(&loc, e))?;
    Ok((decoded(f, gz, limits), gz))
}

/// Like [`open_detect`], with the raw bytes read hashed on another thread: after the reader
/// is dropped, [`Tap::finish`] gives the key of exactly those bytes (or says the file changed).
pub fn open_tapped(path: &Path, limits: &ReadLimits) -> Result<(Box<dyn Read + Send>, bool, Tap), ConnectorError> {
    let gz = is_gzip(path)?;
    let (tee, tap) = crate::tap::open_tapped(path)?;
    Ok((decoded(tee, gz, limits), gz, tap))
}

fn is_gzip(path: &Path) -> Result<bool, ConnectorError> {
    let loc = path.display().to_string();
    let mut f = File::open(path).map_err(|e| ConnectorError::io(&loc, e))?;
    let mut magic = [0u8; 2];
    let n = read_up_to(&mut f, &mut magic).map_err(|e| ConnectorError::io(&loc, e))?;
    Ok(n == 2 && magic == [0x1f, 0x8b])
}

fn decoded<R: Read + Send + 'static>(r: R, gz: bool, limits: &ReadLimits) -> Box<dyn Read + Send> {
    if gz {
        let read_in = Arc::new(AtomicU64::new(0));
        let counted = Counted { inner: r, n: read_in.clone() };
        let decoder = flate2::read::MultiGzDecoder::new(BufReader::with_capacity(256 * 1024, counted));
        Box::new(RatioGuard { inner: decoder, read_in, out: 0, ratio: limits.max_decompression_ratio })
    } else {
        Box::new(BufReader::with_capacity(256 * 1024, r))
    }
}

/// Counts the compressed bytes read.
struct Counted<R> {
    inner: R,
    n: Arc<AtomicU64>,
}

impl<R: Read> Read for Counted<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let k = self.inner.read(buf)?;
        self.n.fetch_add(k as u64, Ordering::Relaxed);
        Ok(k)
    }
}

/// Stops a decompression that expands past `ratio` × the compressed bytes read (once past
/// [`ReadLimits::RATIO_FLOOR`]): a gzip of zeros expands 1000×, a bill 5–50×.
struct RatioGuard<R> {
    inner: R,
    read_in: Arc<AtomicU64>,
    out: u64,
    ratio: u64,
}

/// The error inside the `io::Error` of a decompression stopped by its ratio.
#[derive(Debug)]
pub struct TooExpanded {
    pub compressed: u64,
    pub decompressed: u64,
    pub ratio: u64,
}

impl std::fmt::Display for TooExpanded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "the compressed file expands more than {}× ({} compressed bytes gave {} bytes)",
            self.ratio, self.compressed, self.decompressed
        )
    }
}

impl std::error::Error for TooExpanded {}

impl<R: Read> Read for RatioGuard<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let k = self.inner.read(buf)?;
        self.out += k as u64;
        if self.out > ReadLimits::RATIO_FLOOR {
            let compressed = self.read_in.load(Ordering::Relaxed).max(1);
            if self.out / compressed > self.ratio {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    TooExpanded { compressed, decompressed: self.out, ratio: self.ratio },
                ));
            }
        }
        Ok(k)
    }
}

/// A read error's message when it is one of the reader's own limits.
pub fn limit_message(e: &std::io::Error) -> Option<String> {
    let inner = e.get_ref()?;
    if let Some(t) = inner.downcast_ref::<TooExpanded>() {
        return Some(format!(
            "{t}, over the limit (ingest.max_decompression_ratio); a bill compresses 5–50×, a file of zeros 1000×"
        ));
    }
    None
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
    if let csv::ErrorKind::Io(io) = e.kind()
        && let Some(m) = limit_message(io)
    {
        return ConnectorError::input(
            format!("{file}:{line}"),
            m,
            "nothing from this file was loaded; check the file, or raise ingest.max_decompression_ratio if it is a genuine bill",
        );
    }
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
        Some(raw) => costledger_core::text::clip(&String::from_utf8_lossy(raw), crate::record::MAX_RAW_BYTES),
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

    /// A record refused before it had fields (too long to hold).
    pub(crate) fn push_error(&mut self, e: RowError) -> Result<(), ConnectorError> {
        self.batch.records += 1;
        self.batch.errors.push(e);
        Ok(())
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
    let digits = costledger_core::text::u64_digits(line, &mut digits);
    let mut s = String::with_capacity(file.len() + 1 + digits.len());
    s.push_str(file);
    s.push(':');
    s.push_str(digits);
    s
}

/// One line of a line-oriented file (JSON lines), read with a bound on what is held.
#[derive(Debug, PartialEq, Eq)]
pub enum BoundedLine {
    /// The line is in the buffer (without its `\n`).
    Line,
    /// The line was longer than the limit: this many bytes were skipped up to its `\n`.
    Oversized(u64),
    End,
}

/// Read the next `\n`-terminated line into `buf`, holding at most `max` bytes of it: a longer
/// line is skipped through its end and reported, never held whole.
pub fn read_line_bounded<R: std::io::BufRead>(
    r: &mut R,
    buf: &mut Vec<u8>,
    max: usize,
) -> std::io::Result<BoundedLine> {
    buf.clear();
    let mut skipped: Option<u64> = None;
    let mut any = false;
    loop {
        let avail = match r.fill_buf() {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if avail.is_empty() {
            return Ok(match (skipped, any) {
                (Some(n), _) => BoundedLine::Oversized(n),
                (None, true) => BoundedLine::Line,
                (None, false) => BoundedLine::End,
            });
        }
        any = true;
        let (take, done) = match memchr::memchr(b'\n', avail) {
            Some(k) => (k, true),
            None => (avail.len(), false),
        };
        match &mut skipped {
            Some(n) => *n += take as u64,
            None if buf.len() + take > max => {
                skipped = Some((buf.len() + take) as u64);
                buf.clear();
            }
            None => buf.extend_from_slice(&avail[..take]),
        }
        r.consume(if done { take + 1 } else { take });
        if done {
            return Ok(match skipped {
                Some(n) => BoundedLine::Oversized(n),
                None => BoundedLine::Line,
            });
        }
    }
}

/// The row error of a record too long to hold.
pub fn oversized_error(file: &str, o: &crate::fastcsv::Oversized, limit: usize) -> RowError {
    RowError {
        location: location(file, o.line),
        reason: format!(
            "the record is longer than the {limit}-byte limit for one record (ingest.max_record_bytes): \
             its {} bytes up to the next line break were skipped unread",
            o.bytes
        ),
        raw: String::new(),
        raw_amount: None,
        currency: None,
    }
}

/// The file error of a quoted field longer than a record may be (where its record ends is
/// unknowable).
pub fn oversized_quoted(file: &str, o: &crate::fastcsv::Oversized, limit: usize) -> ConnectorError {
    ConnectorError::input(
        location(file, o.line),
        format!(
            "a quoted field in the record starting here runs past the {limit}-byte limit for one record \
             (ingest.max_record_bytes), so where the record ends cannot be known"
        ),
        "nothing from this file was loaded; check the file for a stray quote, or raise ingest.max_record_bytes",
    )
}

fn read_file<F: RecordFormat>(
    path: &Path,
    batch_rows: usize,
    limits: &ReadLimits,
    tx: &mpsc::Sender<Result<Batch, ConnectorError>>,
    cancel: &CancellationToken,
) -> Result<(), ConnectorError> {
    let file = path.display().to_string();
    if is_parquet(path)? {
        return crate::parquet::read_parquet::<F>(path, batch_rows, tx, cancel);
    }
    let (input, gz, tap) = open_tapped(path, limits)?;
    // The `csv` crate's semantics, scanned faster (see `fastcsv`).
    let mut rdr = crate::fastcsv::FastCsv::with_limit(input, limits.max_record_bytes);
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
        Err(e) => {
            if let Some(o) = rdr.oversized() {
                return Err(oversized_quoted(&file, &o, limits.max_record_bytes));
            }
            return Err(io_error(&file, 1, &e, gz));
        }
    }
    if rdr.oversized().is_some() {
        return Err(ConnectorError::input(
            format!("{file}:1"),
            format!(
                "the header line is longer than the {}-byte limit for one record (ingest.max_record_bytes)",
                limits.max_record_bytes
            ),
            "this is not a bill's header; check the file",
        ));
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
            Err(e) => {
                if let Some(o) = rdr.oversized() {
                    return Err(oversized_quoted(&file, &o, limits.max_record_bytes));
                }
                return Err(io_error(&file, line, &e, gz));
            }
        }
        if let Some(o) = rdr.oversized() {
            batcher.push_error(oversized_error(&file, &o, limits.max_record_bytes))?;
            continue;
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
    use super::{BoundedLine, read_line_bounded};

    #[test]
    fn bounded_lines_skip_what_is_too_long_and_keep_counting() {
        let long = "x".repeat(100);
        let input = format!("ab\n{long}\ncd\n\nlast");
        let mut r = std::io::BufReader::with_capacity(7, input.as_bytes());
        let mut buf = Vec::new();
        let mut got = Vec::new();
        loop {
            match read_line_bounded(&mut r, &mut buf, 10).expect("ok") {
                BoundedLine::End => break,
                BoundedLine::Line => got.push(String::from_utf8(buf.clone()).expect("ok")),
                BoundedLine::Oversized(n) => got.push(format!("<{n}>")),
            }
            assert!(buf.capacity() < 64, "never holds the long line");
        }
        assert_eq!(got, ["ab", "<100>", "cd", "", "last"]);
    }

    #[test]
    fn location_is_file_colon_line() {
        for n in [0u64, 1, 9, 10, 99, 1_000_000, u64::MAX] {
            assert_eq!(super::location("dir/bill.csv", n), format!("dir/bill.csv:{n}"));
        }
    }
}
