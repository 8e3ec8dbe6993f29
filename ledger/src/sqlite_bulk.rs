//! Bulk staging for SQLite through the C API: one dedicated connection, one prepared
//! single-row INSERT reused for every line, values bound without copies, one transaction per
//! batch (with the load's heartbeat). sqlx's per-value binding tops out near 3.5 M values/s,
//! i.e. ~100 k of our 35-column lines/s; this path is what makes SQLite imports ≥ 200 k lines/s.
//! It runs on a blocking thread; the connection is guarded by a mutex (one batch at a time).
#![allow(unsafe_code)]

use std::ffi::{CStr, CString, c_char, c_int};
use std::path::Path;
use std::ptr;

use costledger_core::{ChargeLine, write_canonical, write_map_json, write_ts};
use libsqlite3_sys as ffi;

use super::contexts::{CONTEXT_COLUMNS, ContextKey, Contexts, context_texts, is_context_column};
use super::kinds::{KIND_COLUMNS, KIND_COUNT, KindKey, Kinds, focus_kind_slots, is_kind_column, kind_texts};
use super::sqlite::charge_key;
use super::{CHARGE_COLUMNS, FOCUS_AT, LoadId, row_columns};
use costledger_core::{FOCUS_DECIMAL_COUNT, FOCUS_TEXT_COUNT};

pub(crate) struct BulkConn {
    db: *mut ffi::sqlite3,
    insert: *mut ffi::sqlite3_stmt,
    heartbeat: *mut ffi::sqlite3_stmt,
    /// The stored contexts of one billing period (`?1`), and the insert of a new context.
    ctx_select: *mut ffi::sqlite3_stmt,
    ctx_insert: *mut ffi::sqlite3_stmt,
    /// The stored kinds, and the insert of a new kind.
    kind_select: *mut ffi::sqlite3_stmt,
    kind_insert: *mut ffi::sqlite3_stmt,
    /// Context ids by value ([`crate::contexts`]); cleared when a batch rolls back.
    contexts: Contexts,
    /// Kind ids by value ([`crate::kinds`]); cleared when a batch rolls back.
    kinds: Kinds,
    /// Which of the line's core parameters are context or kind columns (stored in
    /// `charge_contexts` or `charge_kinds`, not bound to the row insert).
    not_in_row: [bool; LINE_PARAMS],
}

// SAFETY: the connection and its statements are only ever used by one thread at a time (the
// owner holds them behind a Mutex), which SQLite's threading modes allow.
unsafe impl Send for BulkConn {}

impl Drop for BulkConn {
    fn drop(&mut self) {
        // SAFETY: the pointers were created by this struct and are finalised/closed once.
        unsafe {
            ffi::sqlite3_finalize(self.insert);
            ffi::sqlite3_finalize(self.heartbeat);
            ffi::sqlite3_finalize(self.ctx_select);
            ffi::sqlite3_finalize(self.ctx_insert);
            ffi::sqlite3_finalize(self.kind_select);
            ffi::sqlite3_finalize(self.kind_insert);
            ffi::sqlite3_close(self.db);
        }
    }
}

/// How the staged load ended up.
pub(crate) enum Staged {
    Done,
    /// The load is no longer `staging` (swept or failed elsewhere); nothing was written.
    NotStaging,
}

impl BulkConn {
    pub(crate) fn open(path: &Path) -> Result<BulkConn, String> {
        let c = CString::new(path.to_string_lossy().as_bytes()).map_err(|e| e.to_string())?;
        let mut db = ptr::null_mut();
        // SAFETY: valid C string and out-pointer; the handle is closed in Drop (or below).
        let rc = unsafe {
            ffi::sqlite3_open_v2(
                c.as_ptr(),
                &mut db,
                ffi::SQLITE_OPEN_READWRITE | ffi::SQLITE_OPEN_NOMUTEX,
                ptr::null(),
            )
        };
        let mut conn = BulkConn {
            db,
            insert: ptr::null_mut(),
            heartbeat: ptr::null_mut(),
            ctx_select: ptr::null_mut(),
            ctx_insert: ptr::null_mut(),
            kind_select: ptr::null_mut(),
            kind_insert: ptr::null_mut(),
            contexts: Contexts::default(),
            kinds: Kinds::default(),
            not_in_row: std::array::from_fn(|i| {
                is_context_column(CHARGE_COLUMNS[i]) || is_kind_column(CHARGE_COLUMNS[i])
            }),
        };
        if rc != ffi::SQLITE_OK {
            return Err(format!("cannot open {} for bulk staging: {}", path.display(), conn.errmsg()));
        }
        // A page cache that holds a whole batch (the default 2 MB spills mid-transaction).
        conn.exec(
            "PRAGMA busy_timeout = 30000; PRAGMA synchronous = NORMAL; PRAGMA foreign_keys = ON; \
             PRAGMA cache_size = -4096",
        )?;
        // Parameters keep their numbers in `CHARGE_COLUMNS` (the context and kind columns'
        // numbers go unused), then the rowid (`ID_PARAM`), the context id (`CTX_PARAM`) and the
        // kind id (`KIND_PARAM`).
        let row = &row_columns()[..row_columns().len() - 2];
        let marks: Vec<String> = row
            .iter()
            .map(|c| format!("?{}", CHARGE_COLUMNS.iter().position(|x| x == c).map_or(0, |i| i + 1)))
            .collect();
        conn.insert = conn.prepare(&format!(
            "INSERT INTO charge_rows ({}, id, ctx_id, kind_id) VALUES ({}, ?{ID_PARAM}, ?{CTX_PARAM}, ?{KIND_PARAM})",
            row.join(", "),
            marks.join(", ")
        ))?;
        let ctx_cols = CONTEXT_COLUMNS.join(", ");
        conn.ctx_select =
            conn.prepare(&format!("SELECT id, {ctx_cols} FROM charge_contexts WHERE billing_period_start = ?1"))?;
        let ctx_marks: Vec<String> = (1..=CONTEXT_COLUMNS.len()).map(|i| format!("?{i}")).collect();
        conn.ctx_insert =
            conn.prepare(&format!("INSERT INTO charge_contexts ({ctx_cols}) VALUES ({})", ctx_marks.join(", ")))?;
        conn.kind_select = conn.prepare(&super::kinds::select_stored_sql())?;
        let kind_marks: Vec<String> = (1..=KIND_COUNT).map(|i| format!("?{i}")).collect();
        conn.kind_insert = conn.prepare(&format!(
            "INSERT INTO charge_kinds ({}) VALUES ({})",
            KIND_COLUMNS.join(", "),
            kind_marks.join(", ")
        ))?;
        conn.heartbeat = conn.prepare("UPDATE loads SET heartbeat_at = ?1 WHERE id = ?2 AND state = 'staging'")?;
        Ok(conn)
    }

    fn errmsg(&self) -> String {
        // SAFETY: sqlite3_errmsg returns a NUL-terminated string owned by the connection.
        unsafe { CStr::from_ptr(ffi::sqlite3_errmsg(self.db)).to_string_lossy().into_owned() }
    }

    fn exec(&self, sql: &str) -> Result<(), String> {
        let c = CString::new(sql).map_err(|e| e.to_string())?;
        // SAFETY: valid handle and C string; no callback.
        let rc = unsafe { ffi::sqlite3_exec(self.db, c.as_ptr(), None, ptr::null_mut(), ptr::null_mut()) };
        if rc == ffi::SQLITE_OK { Ok(()) } else { Err(format!("{sql}: {}", self.errmsg())) }
    }

    fn prepare(&self, sql: &str) -> Result<*mut ffi::sqlite3_stmt, String> {
        let c = CString::new(sql).map_err(|e| e.to_string())?;
        let mut stmt = ptr::null_mut();
        // SAFETY: valid handle, C string (-1: read to NUL) and out-pointer.
        let rc = unsafe {
            ffi::sqlite3_prepare_v3(self.db, c.as_ptr(), -1, ffi::SQLITE_PREPARE_PERSISTENT, &mut stmt, ptr::null_mut())
        };
        if rc == ffi::SQLITE_OK { Ok(stmt) } else { Err(format!("preparing {sql}: {}", self.errmsg())) }
    }

    /// Insert `lines` under `load` and refresh its heartbeat, in one transaction.
    pub(crate) fn stage(
        &mut self,
        load: LoadId,
        first_row: i64,
        lines: &[ChargeLine],
        rendered: &Rendered,
        now: &str,
    ) -> Result<Staged, String> {
        self.exec("BEGIN IMMEDIATE")?;
        let r = self.stage_in_tx(load, first_row, lines, rendered, now);
        // SAFETY: the statements are valid; clearing drops every pointer bound to scratch text.
        unsafe {
            ffi::sqlite3_reset(self.insert);
            ffi::sqlite3_clear_bindings(self.insert);
            ffi::sqlite3_reset(self.heartbeat);
            ffi::sqlite3_clear_bindings(self.heartbeat);
        }
        match r {
            Ok(Staged::Done) => match self.exec("COMMIT") {
                Ok(()) => Ok(Staged::Done),
                Err(e) => {
                    let _ = self.exec("ROLLBACK");
                    self.contexts.clear();
                    self.kinds.clear();
                    Err(e)
                }
            },
            other => {
                let _ = self.exec("ROLLBACK");
                // Contexts and kinds inserted in this transaction are gone with it.
                self.contexts.clear();
                self.kinds.clear();
                other
            }
        }
    }

    /// Bind text parameter `param` (1-based) of the insert to `v`, or NULL.
    ///
    /// # Safety
    /// `v` must stay valid until the statement is reset with its bindings cleared or rebound.
    unsafe fn bind_text(&self, param: usize, v: Option<&[u8]>) -> Result<(), String> {
        // SAFETY: valid statement and parameter index; the caller keeps `v` alive.
        let rc = unsafe {
            match v {
                Some(v) => ffi::sqlite3_bind_text(
                    self.insert,
                    param as c_int,
                    v.as_ptr() as *const c_char,
                    v.len() as c_int,
                    ffi::SQLITE_STATIC(),
                ),
                None => ffi::sqlite3_bind_null(self.insert, param as c_int),
            }
        };
        if rc != ffi::SQLITE_OK {
            return Err(format!("binding column {}: {}", CHARGE_COLUMNS[param - 1], self.errmsg()));
        }
        Ok(())
    }

    fn stage_in_tx(
        &mut self,
        load: LoadId,
        first_row: i64,
        lines: &[ChargeLine],
        r: &Rendered,
        now: &str,
    ) -> Result<Staged, String> {
        let ctx = self.context_ids(lines, r)?;
        let kind = self.kind_ids(lines)?;
        let s = self.insert;
        // Checking the batch's first and last keys covers every row in between.
        let first_key = charge_key(load, first_row)?;
        charge_key(load, (first_row + lines.len() as i64 - 1).max(first_row))?;
        // What each text parameter is bound to: NULL after the last batch's clear_bindings.
        let mut bound: [Option<&[u8]>; LINE_PARAMS] = [None; LINE_PARAMS];
        let mut bound_focus: [Option<&[u8]>; FOCUS_PARAMS] = [None; FOCUS_PARAMS];
        // SAFETY: valid statement; an integer parameter.
        unsafe {
            ffi::sqlite3_bind_int64(s, 35, load);
        }
        for (n, l) in lines.iter().enumerate() {
            let f = |k: usize| r.field(n, k);
            let [ts0, ts1, ts2, ts3, d0, d1, d2, d3, d4, d5, tags, extra] = std::array::from_fn(f);
            let vals: [Option<&[u8]>; LINE_PARAMS] = [
                Some(l.billing_account_id.as_bytes()),
                l.billing_account_name.as_deref().map(str::as_bytes),
                l.sub_account_id.as_deref().map(str::as_bytes),
                l.sub_account_name.as_deref().map(str::as_bytes),
                ts0,
                ts1,
                ts2,
                ts3,
                Some(l.charge_category.as_str().as_bytes()),
                l.charge_class.map(|c| c.as_str().as_bytes()),
                l.charge_description.as_deref().map(str::as_bytes),
                l.service_name.as_deref().map(str::as_bytes),
                l.service_category.as_deref().map(str::as_bytes),
                l.provider_name.as_deref().map(str::as_bytes),
                l.publisher_name.as_deref().map(str::as_bytes),
                l.invoice_issuer_name.as_deref().map(str::as_bytes),
                l.region_id.as_deref().map(str::as_bytes),
                l.resource_id.as_deref().map(str::as_bytes),
                l.resource_name.as_deref().map(str::as_bytes),
                l.sku_id.as_deref().map(str::as_bytes),
                d0,
                d1,
                d2,
                d3,
                Some(l.billing_currency.as_bytes()),
                d4,
                l.pricing_unit.as_deref().map(str::as_bytes),
                d5,
                l.consumed_unit.as_deref().map(str::as_bytes),
                l.commitment_discount_id.as_deref().map(str::as_bytes),
                l.invoice_id.as_deref().map(str::as_bytes),
                tags,
                extra,
                l.source_ref.as_deref().map(str::as_bytes),
            ];
            let mut focus: [Option<&[u8]>; FOCUS_PARAMS] = [None; FOCUS_PARAMS];
            if let Some(fc) = l.focus.as_deref() {
                for (slot, t) in focus.iter_mut().zip(fc.texts()) {
                    *slot = t.map(str::as_bytes);
                }
                for (k, slot) in focus[FOCUS_TEXT_COUNT..].iter_mut().enumerate() {
                    *slot = r.field(n, LINE_FIELDS + k);
                }
            }
            // SAFETY: `s` is a valid prepared statement with `KIND_PARAM` parameters; every text pointer
            // (into `lines` and `r`, borrowed for the whole call) outlives the steps below, and
            // lengths are exact. A value equal to the previous line's is not bound again:
            // SQLite keeps bindings across resets, and the previous pointer is still valid.
            unsafe {
                for (i, v) in vals.iter().enumerate() {
                    if *v != bound[i] && !self.not_in_row[i] {
                        self.bind_text(i + 1, *v)?;
                        bound[i] = *v;
                    }
                }
                for (k, v) in focus.iter().enumerate() {
                    if *v != bound_focus[k] && focus_kind_slots().get(k).is_none_or(Option::is_none) {
                        self.bind_text(FOCUS_AT + k + 1, *v)?;
                        bound_focus[k] = *v;
                    }
                }
                ffi::sqlite3_bind_int64(s, 36, first_row + n as i64);
                ffi::sqlite3_bind_int64(s, ID_PARAM as c_int, first_key + n as i64);
                ffi::sqlite3_bind_int64(s, CTX_PARAM as c_int, ctx[n]);
                ffi::sqlite3_bind_int64(s, KIND_PARAM as c_int, kind[n]);
                let rc = ffi::sqlite3_step(s);
                if rc != ffi::SQLITE_DONE {
                    return Err(format!("inserting a charge: {}", self.errmsg()));
                }
                ffi::sqlite3_reset(s);
            }
        }
        let h = self.heartbeat;
        // SAFETY: valid statement; `now` outlives the step.
        unsafe {
            ffi::sqlite3_bind_text(h, 1, now.as_ptr() as *const c_char, now.len() as c_int, ffi::SQLITE_STATIC());
            ffi::sqlite3_bind_int64(h, 2, load);
            if ffi::sqlite3_step(h) != ffi::SQLITE_DONE {
                return Err(format!("refreshing the heartbeat: {}", self.errmsg()));
            }
            if ffi::sqlite3_changes(self.db) == 0 {
                return Ok(Staged::NotStaging);
            }
        }
        Ok(Staged::Done)
    }
}

impl BulkConn {
    /// The context id of each line ([`crate::contexts`]), inside the batch's transaction:
    /// cached, else found among the stored contexts of its billing period (read once), else
    /// inserted. The key's timestamps are the rendered (stored) text.
    fn context_ids(&mut self, lines: &[ChargeLine], r: &Rendered) -> Result<Vec<i64>, String> {
        let mut key = ContextKey::default();
        let mut ids = Vec::with_capacity(lines.len());
        for (n, l) in lines.iter().enumerate() {
            let (start, end) = (r.field(n, 0).unwrap_or_default(), r.field(n, 1).unwrap_or_default());
            let texts = context_texts(l);
            if let Some(id) = self.contexts.get(key.set(start, end, &texts)) {
                ids.push(id);
                continue;
            }
            if !self.contexts.period_loaded(key.period()) {
                self.load_contexts(start)?;
                self.contexts.mark_period_loaded(key.period());
                if let Some(id) = self.contexts.get(key.bytes()) {
                    ids.push(id);
                    continue;
                }
            }
            let id = self.insert_context(start, end, &texts)?;
            self.contexts.insert(key.bytes(), id);
            ids.push(id);
        }
        Ok(ids)
    }

    /// Cache the stored contexts of the billing period starting at `start` (stored text).
    fn load_contexts(&mut self, start: &[u8]) -> Result<(), String> {
        let q = self.ctx_select;
        let mut key = ContextKey::default();
        // SAFETY: valid statement; `start` outlives the steps; column pointers are read before
        // the next step and copied into the key.
        unsafe {
            ffi::sqlite3_bind_text(q, 1, start.as_ptr() as *const c_char, start.len() as c_int, ffi::SQLITE_STATIC());
            let result = loop {
                match ffi::sqlite3_step(q) {
                    ffi::SQLITE_ROW => {
                        let col = |i: c_int| -> Option<&[u8]> {
                            if ffi::sqlite3_column_type(q, i) == ffi::SQLITE_NULL {
                                return None;
                            }
                            let p = ffi::sqlite3_column_text(q, i);
                            let n = ffi::sqlite3_column_bytes(q, i);
                            Some(if p.is_null() { &[] } else { std::slice::from_raw_parts(p, n as usize) })
                        };
                        let text = |i: c_int| col(i).map(|b| std::str::from_utf8(b).unwrap_or("\u{fffd}"));
                        let texts = [
                            text(1),
                            text(2),
                            text(3),
                            text(4),
                            text(7),
                            text(8),
                            text(9),
                            text(10),
                            text(11),
                            text(12),
                            text(13),
                        ];
                        let (s, e) = (col(5).unwrap_or_default(), col(6).unwrap_or_default());
                        let id = ffi::sqlite3_column_int64(q, 0);
                        self.contexts.insert(key.set(s, e, &texts), id);
                    }
                    ffi::SQLITE_DONE => break Ok(()),
                    _ => break Err(format!("reading the charge contexts: {}", self.errmsg())),
                }
            };
            ffi::sqlite3_reset(q);
            ffi::sqlite3_clear_bindings(q);
            result
        }
    }

    /// The kind id of each line ([`crate::kinds`]), inside the batch's transaction: cached, else
    /// found among the stored kinds (read once), else inserted.
    fn kind_ids(&mut self, lines: &[ChargeLine]) -> Result<Vec<i64>, String> {
        let mut key = KindKey::default();
        let mut ids = Vec::with_capacity(lines.len());
        for l in lines {
            let texts = kind_texts(l);
            if let Some(id) = self.kinds.get(key.set(&texts)) {
                ids.push(id);
                continue;
            }
            if !self.kinds.loaded() {
                self.load_kinds()?;
                self.kinds.mark_loaded();
                if let Some(id) = self.kinds.get(key.bytes()) {
                    ids.push(id);
                    continue;
                }
            }
            let id = self.insert_kind(&texts)?;
            self.kinds.insert(key.bytes(), id);
            ids.push(id);
        }
        Ok(ids)
    }

    /// Cache the stored kinds.
    fn load_kinds(&mut self) -> Result<(), String> {
        let q = self.kind_select;
        let mut key = KindKey::default();
        // SAFETY: valid statement; column pointers are read before the next step and copied
        // into the key.
        unsafe {
            let result = loop {
                match ffi::sqlite3_step(q) {
                    ffi::SQLITE_ROW => {
                        let text = |i: c_int| -> Option<&str> {
                            if ffi::sqlite3_column_type(q, i) == ffi::SQLITE_NULL {
                                return None;
                            }
                            let p = ffi::sqlite3_column_text(q, i);
                            let n = ffi::sqlite3_column_bytes(q, i);
                            let b = if p.is_null() { &[][..] } else { std::slice::from_raw_parts(p, n as usize) };
                            Some(std::str::from_utf8(b).unwrap_or("\u{fffd}"))
                        };
                        let texts: [Option<&str>; KIND_COUNT] = std::array::from_fn(|i| text(i as c_int + 1));
                        let id = ffi::sqlite3_column_int64(q, 0);
                        self.kinds.insert(key.set(&texts), id);
                    }
                    ffi::SQLITE_DONE => break Ok(()),
                    _ => break Err(format!("reading the charge kinds: {}", self.errmsg())),
                }
            };
            ffi::sqlite3_reset(q);
            result
        }
    }

    /// Store a new kind; its id.
    fn insert_kind(&mut self, texts: &[Option<&str>; KIND_COUNT]) -> Result<i64, String> {
        let values: [Option<&[u8]>; KIND_COUNT] = texts.map(|t| t.map(str::as_bytes));
        self.insert_texts(self.kind_insert, &values, "storing a charge kind")
    }

    /// Store a new context; its id.
    fn insert_context(&mut self, start: &[u8], end: &[u8], texts: &[Option<&str>; 11]) -> Result<i64, String> {
        let mut values: [Option<&[u8]>; 13] = [None; 13];
        let mut t = texts.iter();
        for (i, v) in values.iter_mut().enumerate() {
            *v = match i {
                4 => Some(start),
                5 => Some(end),
                _ => t.next().copied().flatten().map(str::as_bytes),
            };
        }
        self.insert_texts(self.ctx_insert, &values, "storing a charge context")
    }

    /// Run the insert `q` of this connection with `values` bound to its parameters in order;
    /// the new row's id.
    fn insert_texts(&self, q: *mut ffi::sqlite3_stmt, values: &[Option<&[u8]>], what: &str) -> Result<i64, String> {
        // SAFETY: `q` is a valid statement of this connection with `values.len()` parameters;
        // every bound slice outlives the step; bindings are cleared before returning.
        unsafe {
            for (i, v) in values.iter().enumerate() {
                match v {
                    Some(v) => ffi::sqlite3_bind_text(
                        q,
                        i as c_int + 1,
                        v.as_ptr() as *const c_char,
                        v.len() as c_int,
                        ffi::SQLITE_STATIC(),
                    ),
                    None => ffi::sqlite3_bind_null(q, i as c_int + 1),
                };
            }
            let rc = ffi::sqlite3_step(q);
            ffi::sqlite3_reset(q);
            ffi::sqlite3_clear_bindings(q);
            if rc != ffi::SQLITE_DONE {
                return Err(format!("{what}: {}", self.errmsg()));
            }
            Ok(ffi::sqlite3_last_insert_rowid(self.db))
        }
    }
}

/// The formatted values of a batch (timestamps, amounts, tags and extra columns as the
/// ledger's text), built on the caller's thread so the staging thread only binds and steps.
pub(crate) struct Rendered {
    text: Vec<u8>,
    /// End offset of each field, `FIELDS` per line; an empty field is NULL.
    ends: Vec<u32>,
}

/// Rendered fields per line: 4 timestamps, 6 amounts, tags, extra, then the FOCUS decimals.
const LINE_FIELDS: usize = 12;
const FIELDS: usize = LINE_FIELDS + FOCUS_DECIMAL_COUNT;
/// Text parameters of the line's core (before load_id and row_no).
const LINE_PARAMS: usize = 34;
/// The row insert's parameter numbers of the rowid and the context id.
const ID_PARAM: usize = CHARGE_COLUMNS.len() + 1;
const CTX_PARAM: usize = CHARGE_COLUMNS.len() + 2;
/// The row insert's parameter number of the kind id.
const KIND_PARAM: usize = CHARGE_COLUMNS.len() + 3;
/// Parameters of the FOCUS columns (after row_no).
const FOCUS_PARAMS: usize = FOCUS_TEXT_COUNT + FOCUS_DECIMAL_COUNT;

impl Rendered {
    pub(crate) fn new(lines: &[ChargeLine]) -> Result<Rendered, String> {
        let mut r =
            Rendered { text: Vec::with_capacity(lines.len() * 160), ends: Vec::with_capacity(lines.len() * FIELDS) };
        for l in lines {
            for t in [l.billing_period_start, l.billing_period_end, l.charge_period_start, l.charge_period_end] {
                write_ts(&mut r.text, t);
                r.end()?;
            }
            for d in [
                Some(l.billed_cost),
                l.effective_cost,
                l.list_cost,
                l.contracted_cost,
                l.pricing_quantity,
                l.consumed_quantity,
            ] {
                if let Some(d) = d {
                    write_canonical(&mut r.text, d);
                }
                r.end()?;
            }
            write_map_json(&mut r.text, &l.tags);
            r.end()?;
            write_map_json(&mut r.text, &l.x_extra);
            r.end()?;
            for d in l.focus.as_deref().map(|f| f.decimals()).unwrap_or_default() {
                if let Some(d) = d {
                    write_canonical(&mut r.text, d);
                }
                r.end()?;
            }
        }
        Ok(r)
    }

    fn end(&mut self) -> Result<(), String> {
        let end = u32::try_from(self.text.len()).map_err(|_| "a batch's formatted values exceed 4 GB".to_string())?;
        self.ends.push(end);
        Ok(())
    }

    /// Field `k` of line `n`; `None` when empty (an absent value; timestamps and BilledCost
    /// are never empty).
    fn field(&self, n: usize, k: usize) -> Option<&[u8]> {
        let i = n * FIELDS + k;
        let start = if i == 0 { 0 } else { self.ends[i - 1] as usize };
        let end = self.ends[i] as usize;
        if start == end { None } else { self.text.get(start..end) }
    }
}
