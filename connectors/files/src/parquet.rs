//! Parquet bill files (AWS Data Exports, Azure exports, FOCUS exports) through the same
//! [`RecordFormat`]s as CSV: the top-level column names become the header, and each row
//! becomes a record of texts, so one normaliser serves both formats.
//!
//! Values become text as the CSV deliveries write them: strings as they are, integers and
//! decimals exactly, timestamps as RFC 3339 UTC, dates as `YYYY-MM-DD`, maps (`resource_tags`,
//! `Tags`) as a JSON object. A DOUBLE (the providers write costs as doubles in Parquet) becomes
//! its shortest round-trip decimal text — the digits the provider's writer meant, parsed from
//! text as every other amount; no arithmetic is ever done on the float.
//!
//! Row groups are read one at a time (the record reader), so memory is bounded by the file's
//! row group size, not its length.

use std::path::Path;

use chrono::{DateTime, NaiveDate};
use costledger_core::{Batch, ConnectorError};
use parquet::file::reader::{FileReader, SerializedFileReader};
use parquet::record::Field;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::reader::{Batcher, RecordFormat};

/// `PAR1` at the start of a file.
pub const MAGIC: [u8; 4] = *b"PAR1";

fn json_of(f: &Field) -> serde_json::Value {
    match f {
        Field::Null => serde_json::Value::Null,
        other => serde_json::Value::String(text(other)),
    }
}

/// One value as the text a CSV delivery would carry.
pub fn text(f: &Field) -> String {
    match f {
        Field::Null => String::new(),
        Field::Bool(b) => b.to_string(),
        Field::Byte(v) => v.to_string(),
        Field::Short(v) => v.to_string(),
        Field::Int(v) => v.to_string(),
        Field::Long(v) => v.to_string(),
        Field::UByte(v) => v.to_string(),
        Field::UShort(v) => v.to_string(),
        Field::UInt(v) => v.to_string(),
        Field::ULong(v) => v.to_string(),
        Field::Float(v) => v.to_string(),
        Field::Double(v) => v.to_string(),
        Field::Str(s) => s.clone(),
        Field::Date(days) => NaiveDate::from_num_days_from_ce_opt(719_163 + *days)
            .map(|d| d.format("%Y-%m-%d").to_string())
            .unwrap_or_default(),
        Field::TimestampMillis(ms) => DateTime::from_timestamp_millis(*ms)
            .map(|t| t.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string())
            .unwrap_or_default(),
        Field::TimestampMicros(us) => DateTime::from_timestamp_micros(*us)
            .map(|t| t.format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string())
            .unwrap_or_default(),
        Field::MapInternal(m) => {
            let mut obj = serde_json::Map::new();
            for (k, v) in m.entries() {
                obj.insert(text(k), json_of(v));
            }
            serde_json::Value::Object(obj).to_string()
        }
        Field::ListInternal(l) => serde_json::Value::Array(l.elements().iter().map(json_of).collect()).to_string(),
        Field::Group(row) => {
            let mut obj = serde_json::Map::new();
            for (k, v) in row.get_column_iter() {
                obj.insert(k.clone(), json_of(v));
            }
            serde_json::Value::Object(obj).to_string()
        }
        // Decimals print exactly; anything else (bytes, times) as the crate displays it.
        other => other.to_string(),
    }
}

fn input(file: &str, msg: impl std::fmt::Display) -> ConnectorError {
    ConnectorError::input(
        file,
        format!("cannot read the Parquet file ({msg})"),
        "nothing from this file was loaded; fetch the file again from the provider",
    )
}

/// Read a Parquet file into batches of `F` lines.
pub fn read_parquet<F: RecordFormat>(
    path: &Path,
    batch_rows: usize,
    tx: &mpsc::Sender<Result<Batch, ConnectorError>>,
    cancel: &CancellationToken,
) -> Result<(), ConnectorError> {
    let file = path.display().to_string();
    // Parquet is read by random access: the file is hashed first, and checked for change
    // when its rows have been read.
    let (f, tap) = crate::tap::hash_then_check(path)?;
    let reader = SerializedFileReader::new(f).map_err(|e| input(&file, e))?;
    let schema = reader.metadata().file_metadata().schema_descr();
    let names: Vec<String> = schema.root_schema().get_fields().iter().map(|c| c.name().to_string()).collect();
    let header = csv::ByteRecord::from(names.iter().map(String::as_str).collect::<Vec<_>>());
    let cols =
        F::from_header(&header).map_err(|m| ConnectorError::input(format!("{file} (schema)"), m, F::HEADER_HINT))?;
    let rows = reader.get_row_iter(None).map_err(|e| input(&file, e))?;
    let mut batcher = Batcher::new(batch_rows, tx, cancel);
    let mut rec = csv::ByteRecord::new();
    for (n, row) in rows.enumerate() {
        if batcher.cancelled() {
            return Err(ConnectorError::Cancelled);
        }
        let row = row.map_err(|e| input(&format!("{file} row {}", n + 1), e))?;
        rec.clear();
        for (_, v) in row.get_column_iter() {
            rec.push_field(text(v).as_bytes());
        }
        batcher.push(&cols, &rec, format!("{file}:row {}", n + 1), Default::default())?;
    }
    drop(reader);
    let key = tap.finish()?;
    batcher.finish(Some(key))
}
