//! Charge reads for file-backed SQLite through the C API. sqlx copies every column of every
//! row (`sqlite3_value_dup`) and hands rows one by one from its worker thread: about 40k
//! charge lines/s. This reader steps its own prepared statement on a blocking thread and
//! decodes each row straight from SQLite's buffers, sending batches over a bounded channel, so
//! memory holds at most a few batches whatever the ledger's size; dropping the stream stops
//! the thread at its next batch. Each read is one statement, hence one consistent snapshot
//! (WAL).
#![allow(unsafe_code)]

use std::ffi::{CStr, CString, c_char, c_int};
use std::path::PathBuf;
use std::ptr;

use futures::{Stream, StreamExt};
use libsqlite3_sys as ffi;

use super::kinds::{KIND_COLUMNS, KIND_COUNT, KindFilled};
use super::{ChargeRow, LedgerError, Result};

/// Rows per batch sent to the reader.
const BATCH: usize = 1024;
/// Batches in flight between the thread and the reader.
const IN_FLIGHT: usize = 4;

struct ReadConn {
    db: *mut ffi::sqlite3,
    stmt: *mut ffi::sqlite3_stmt,
}

impl Drop for ReadConn {
    fn drop(&mut self) {
        // SAFETY: the pointers were created by this struct and are finalised/closed once
        // (finalize and close accept NULL).
        unsafe {
            ffi::sqlite3_finalize(self.stmt);
            ffi::sqlite3_close(self.db);
        }
    }
}

impl ReadConn {
    fn errmsg(&self) -> String {
        // SAFETY: sqlite3_errmsg returns a NUL-terminated string owned by the connection.
        unsafe { CStr::from_ptr(ffi::sqlite3_errmsg(self.db)).to_string_lossy().into_owned() }
    }

    fn fail(&self, what: &str) -> LedgerError {
        LedgerError::State(format!("reading the SQLite ledger: {what}: {}", self.errmsg()))
    }

    fn open(path: &std::path::Path, sql: &str, binds: &[String]) -> Result<ReadConn> {
        let c = CString::new(path.to_string_lossy().as_bytes())
            .map_err(|e| LedgerError::State(format!("ledger path {}: {e}", path.display())))?;
        let mut conn = ReadConn { db: ptr::null_mut(), stmt: ptr::null_mut() };
        // SAFETY: valid C string and out-pointer; the handle is closed in Drop.
        let rc = unsafe {
            ffi::sqlite3_open_v2(
                c.as_ptr(),
                &mut conn.db,
                ffi::SQLITE_OPEN_READWRITE | ffi::SQLITE_OPEN_NOMUTEX,
                ptr::null(),
            )
        };
        if rc != ffi::SQLITE_OK {
            return Err(conn.fail(&format!("opening {}", path.display())));
        }
        // Reads only; waits for a writer's checkpoint like the pool does. `threads = 2` lets
        // SQLite's sorter use a helper thread: the export's ORDER BY sorts every row, and the
        // second core was otherwise idle while it did (measured, `export csv` of 1M lines:
        // 7.6–8.6 s → 6.2–6.8 s, same bytes; a 16 MB cache for the sorter gained nothing).
        let pragmas = c"PRAGMA busy_timeout = 30000; PRAGMA query_only = 1; PRAGMA threads = 2";
        // SAFETY: valid handle and C string; no callback.
        if unsafe { ffi::sqlite3_exec(conn.db, pragmas.as_ptr(), None, ptr::null_mut(), ptr::null_mut()) }
            != ffi::SQLITE_OK
        {
            return Err(conn.fail("setting up the read connection"));
        }
        // SAFETY: the handle was just opened and is used by this thread only.
        if unsafe { super::decimal_sum::register_raw(conn.db) } != ffi::SQLITE_OK {
            return Err(conn.fail("registering decimal_sum"));
        }
        let q = CString::new(sql).map_err(|e| LedgerError::State(format!("charge query: {e}")))?;
        // SAFETY: valid handle, C string (-1: read to NUL) and out-pointer.
        if unsafe { ffi::sqlite3_prepare_v2(conn.db, q.as_ptr(), -1, &mut conn.stmt, ptr::null_mut()) }
            != ffi::SQLITE_OK
        {
            return Err(conn.fail("preparing the charge query"));
        }
        for (i, b) in binds.iter().enumerate() {
            // SAFETY: valid statement; SQLITE_TRANSIENT makes SQLite copy the bytes.
            let rc = unsafe {
                ffi::sqlite3_bind_text(
                    conn.stmt,
                    (i + 1) as c_int,
                    b.as_ptr() as *const c_char,
                    b.len() as c_int,
                    ffi::SQLITE_TRANSIENT(),
                )
            };
            if rc != ffi::SQLITE_OK {
                return Err(conn.fail("binding the charge query"));
            }
        }
        Ok(conn)
    }

    /// The next row, or `None` at the end.
    fn step(&mut self) -> Result<Option<RawRow<'_>>> {
        // SAFETY: a prepared statement of this connection.
        match unsafe { ffi::sqlite3_step(self.stmt) } {
            ffi::SQLITE_ROW => Ok(Some(RawRow { stmt: self.stmt, _conn: std::marker::PhantomData })),
            ffi::SQLITE_DONE => Ok(None),
            _ => Err(self.fail("stepping the charge query")),
        }
    }
}

/// The current row of a statement; borrowed from the connection so it cannot outlive a step.
pub(crate) struct RawRow<'c> {
    stmt: *mut ffi::sqlite3_stmt,
    _conn: std::marker::PhantomData<&'c mut ReadConn>,
}

impl ChargeRow for RawRow<'_> {
    fn text(&self, i: usize) -> Result<Option<&str>> {
        let i = i as c_int;
        // SAFETY: the statement is on a row (RawRow exists only between a step that returned
        // SQLITE_ROW and the next step); the text pointer stays valid until then, which the
        // borrow of `self` guarantees.
        unsafe {
            if ffi::sqlite3_column_type(self.stmt, i) == ffi::SQLITE_NULL {
                return Ok(None);
            }
            let p = ffi::sqlite3_column_text(self.stmt, i);
            let n = ffi::sqlite3_column_bytes(self.stmt, i) as usize;
            let bytes = if p.is_null() { &[][..] } else { std::slice::from_raw_parts(p, n) };
            std::str::from_utf8(bytes)
                .map(Some)
                .map_err(|e| LedgerError::Corrupt(format!("column {i} is not UTF-8: {e}")))
        }
    }

    fn int(&self, i: usize) -> Result<i64> {
        // SAFETY: as above.
        Ok(unsafe { ffi::sqlite3_column_int64(self.stmt, i as c_int) })
    }
}

/// The kinds an ordered charge read names by id ([`crate::kinds`]), so that its rows carry no
/// kind text through SQLite's sorter. Read from the file on the first row (a connection of its
/// own, whose snapshot begins after the read's: every kind a row names was committed with or
/// before that row, and kinds are never deleted), all at once — a ledger has tens to thousands.
pub(crate) struct KindReader {
    path: PathBuf,
    by_id: std::cell::RefCell<Option<rustc_hash::FxHashMap<i64, [Option<String>; KIND_COUNT]>>>,
}

impl KindReader {
    pub(crate) fn new(path: PathBuf) -> Self {
        Self { path, by_id: Default::default() }
    }

    /// `decode` of the row `r` naming kind `id`, its kind columns filled from that kind.
    pub(crate) fn decode<R: ChargeRow, T>(
        &self,
        r: &R,
        id: i64,
        decode: impl FnOnce(&KindFilled<'_, R>) -> Result<T>,
    ) -> Result<T> {
        if self.by_id.borrow().is_none() {
            let loaded = self.load()?;
            *self.by_id.borrow_mut() = Some(loaded);
        }
        let by_id = self.by_id.borrow();
        let kind = by_id
            .as_ref()
            .and_then(|m| m.get(&id))
            .ok_or_else(|| LedgerError::Corrupt(format!("a charge row names kind {id}, which does not exist")))?;
        decode(&KindFilled { row: r, kind })
    }

    fn load(&self) -> Result<rustc_hash::FxHashMap<i64, [Option<String>; KIND_COUNT]>> {
        let sql = format!("SELECT id, {} FROM charge_kinds", KIND_COLUMNS.join(", "));
        let mut conn = ReadConn::open(&self.path, &sql, &[])?;
        let mut by_id = rustc_hash::FxHashMap::default();
        while let Some(r) = conn.step()? {
            let mut kind: [Option<String>; KIND_COUNT] = Default::default();
            for (i, slot) in kind.iter_mut().enumerate() {
                *slot = r.text(i + 1)?.map(str::to_owned);
            }
            by_id.insert(r.int(0)?, kind);
        }
        Ok(by_id)
    }
}

/// Stream the rows `sql` selects from the database file at `path`, each decoded by `decode`
/// (straight from SQLite's buffers).
pub(crate) fn rows<T, F>(path: PathBuf, sql: String, binds: Vec<String>, decode: F) -> impl Stream<Item = Result<T>>
where
    T: Send + 'static,
    F: for<'r> Fn(&RawRow<'r>) -> Result<T> + Send + 'static,
{
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Vec<T>>>(IN_FLIGHT);
    tokio::task::spawn_blocking(move || {
        let mut conn = match ReadConn::open(&path, &sql, &binds) {
            Ok(c) => c,
            Err(e) => {
                let _ = tx.blocking_send(Err(e));
                return;
            }
        };
        let mut batch = Vec::with_capacity(BATCH);
        loop {
            let rec = match conn.step() {
                Ok(Some(row)) => decode(&row),
                Ok(None) => break,
                Err(e) => Err(e),
            };
            match rec {
                Ok(r) => batch.push(r),
                Err(e) => {
                    let _ = tx.blocking_send(Err(e));
                    return;
                }
            }
            if batch.len() == BATCH
                && tx.blocking_send(Ok(std::mem::replace(&mut batch, Vec::with_capacity(BATCH)))).is_err()
            {
                return; // the reader is gone
            }
        }
        if !batch.is_empty() {
            let _ = tx.blocking_send(Ok(batch));
        }
    });
    futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|b| (b, rx)) }).flat_map(|b| {
        let items: Vec<Result<T>> = match b {
            Ok(v) => v.into_iter().map(Ok).collect(),
            Err(e) => vec![Err(e)],
        };
        futures::stream::iter(items)
    })
}
