//! How exact sums are written in JSON answers (API, MCP, `--format json`): decimal strings,
//! never JSON numbers (a client would read them as binary floats).

use costledger_core::ExactSum;

/// `serialize_with` for an exact sum: its canonical decimal text.
pub fn exact<S: serde::Serializer>(v: &ExactSum, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&v.to_string())
}

/// `serialize_with` for an optional exact sum: its text, or null.
pub fn opt_exact<S: serde::Serializer>(v: &Option<ExactSum>, s: S) -> Result<S::Ok, S::Error> {
    match v {
        Some(v) => s.serialize_str(&v.to_string()),
        None => s.serialize_none(),
    }
}
