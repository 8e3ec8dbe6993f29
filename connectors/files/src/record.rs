//! What every record normaliser needs beside its own columns: the field and raw-record limits,
//! the UTF-8 check of a whole record, and the record as text for quarantine.

use costledger_core::text::clip;

/// Longest field accepted in one cell; a longer one quarantines its row.
pub const MAX_FIELD_BYTES: usize = 64 * 1024;
/// Longest raw record kept in quarantine.
pub const MAX_RAW_BYTES: usize = 4 * 1024;

/// The first field of a record that is not valid UTF-8 (one check of the whole record in the
/// usual case, field by field only when it fails).
pub fn first_non_utf8_field(rec: &csv::ByteRecord) -> Option<usize> {
    if std::str::from_utf8(rec.as_slice()).is_ok() {
        return None;
    }
    rec.iter().position(|f| std::str::from_utf8(f).is_err())
}

/// The record as one CSV line (lossy UTF-8), clipped for quarantine.
pub fn raw_record(rec: &csv::ByteRecord) -> String {
    let mut w = csv::WriterBuilder::new().terminator(csv::Terminator::Any(b' ')).from_writer(Vec::new());
    let mut out = match w.write_byte_record(rec).and_then(|_| w.flush().map_err(csv::Error::from)) {
        Ok(()) => String::from_utf8_lossy(w.get_ref()).into_owned(),
        Err(_) => String::new(),
    };
    out.truncate(out.trim_end().len());
    clip(&out, MAX_RAW_BYTES)
}
