//! `decimal_sum(x)`: an exact SUM over canonical decimal TEXT, registered on every SQLite
//! connection. SQLite's own `SUM()` over TEXT returns a float and is therefore never used on
//! money. The running total is an [`ExactSum`] (256-bit count of 1e-28 units) kept in the
//! aggregate context, so no sum rounds. The result is TEXT (or NULL when no row had a value,
//! like SQL `SUM`). REAL and BLOB inputs are refused with an error rather than guessed at.
//!
//! sqlx documents the raw handle as semver-exempt, hence the exact `libsqlite3-sys` pin.
#![allow(unsafe_code)]

use std::ffi::{c_char, c_int};

use costledger_core::ExactSum;
use libsqlite3_sys as ffi;
use rust_decimal::Decimal;
use sqlx::SqliteConnection;

/// Aggregate state: one "seen a value" byte, then the sum's 32 bytes. SQLite zero-fills it.
const STATE_BYTES: usize = 33;

fn fail(ctx: *mut ffi::sqlite3_context, msg: &str) {
    // SAFETY: ctx is the live context SQLite passed to step/final; msg is a valid buffer.
    unsafe { ffi::sqlite3_result_error(ctx, msg.as_ptr() as *const c_char, msg.len() as c_int) }
}

unsafe extern "C" fn step(ctx: *mut ffi::sqlite3_context, argc: c_int, argv: *mut *mut ffi::sqlite3_value) {
    // SAFETY: SQLite calls step with a valid context and `argc` (= 1) valid values.
    unsafe {
        if argc != 1 {
            return fail(ctx, "decimal_sum takes one argument");
        }
        let st = ffi::sqlite3_aggregate_context(ctx, STATE_BYTES as c_int) as *mut u8;
        if st.is_null() {
            return ffi::sqlite3_result_error_nomem(ctx);
        }
        let state = std::slice::from_raw_parts_mut(st, STATE_BYTES);
        let v = *argv;
        let add: ExactSum = match ffi::sqlite3_value_type(v) {
            ffi::SQLITE_NULL => return,
            ffi::SQLITE_INTEGER => ExactSum::from(Decimal::from(ffi::sqlite3_value_int64(v))),
            ffi::SQLITE_TEXT => {
                let p = ffi::sqlite3_value_text(v);
                let n = ffi::sqlite3_value_bytes(v) as usize;
                let bytes = if p.is_null() { &[][..] } else { std::slice::from_raw_parts(p, n) };
                match std::str::from_utf8(bytes).ok().and_then(|s| s.parse::<ExactSum>().ok()) {
                    Some(x) => x,
                    None => return fail(ctx, "decimal_sum: a value is not decimal text"),
                }
            }
            _ => return fail(ctx, "decimal_sum: REAL or BLOB value refused (money is stored as decimal TEXT)"),
        };
        let mut cur = [0u8; 32];
        cur.copy_from_slice(&state[1..]);
        let mut sum = ExactSum::from_le_bytes(cur);
        if sum.merge(&add).is_err() {
            return fail(ctx, "decimal_sum: overflow");
        }
        state[0] = 1;
        state[1..].copy_from_slice(&sum.to_le_bytes());
    }
}

unsafe extern "C" fn finalize(ctx: *mut ffi::sqlite3_context) {
    // SAFETY: called once per group with the same context; a null state means no rows.
    unsafe {
        let st = ffi::sqlite3_aggregate_context(ctx, 0) as *const u8;
        if st.is_null() || *st == 0 {
            return ffi::sqlite3_result_null(ctx);
        }
        let state = std::slice::from_raw_parts(st, STATE_BYTES);
        let mut cur = [0u8; 32];
        cur.copy_from_slice(&state[1..]);
        let s = ExactSum::from_le_bytes(cur).to_string();
        ffi::sqlite3_result_text(ctx, s.as_ptr() as *const c_char, s.len() as c_int, ffi::SQLITE_TRANSIENT());
    }
}

/// Register `decimal_sum` on one connection (called from the pool's `after_connect`).
pub async fn register(conn: &mut SqliteConnection) -> Result<(), sqlx::Error> {
    let mut handle = conn.lock_handle().await?;
    // SAFETY: the raw handle is valid while `handle` (the connection lock) is held.
    let rc = unsafe { register_raw(handle.as_raw_handle().as_ptr()) };
    if rc != ffi::SQLITE_OK {
        return Err(sqlx::Error::Protocol(format!("registering decimal_sum failed with SQLite code {rc}")));
    }
    Ok(())
}

/// Register `decimal_sum` on a raw connection (the C-API reader's); SQLite's result code.
///
/// # Safety
/// `db` must be a valid, open connection not used by another thread during the call.
pub(crate) unsafe fn register_raw(db: *mut ffi::sqlite3) -> c_int {
    // SAFETY: the caller guarantees `db`; the callbacks are plain functions with SQLite's
    // signatures and no user data; the name is a static NUL-terminated string.
    unsafe {
        ffi::sqlite3_create_function_v2(
            db,
            c"decimal_sum".as_ptr(),
            1,
            ffi::SQLITE_UTF8 | ffi::SQLITE_DETERMINISTIC,
            std::ptr::null_mut(),
            None,
            Some(step),
            Some(finalize),
            None,
        )
    }
}
