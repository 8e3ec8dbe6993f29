//! Parquet deliveries (AWS CUR 2.0 / FOCUS Data Exports, Azure exports): written here with the
//! parquet crate's own writer (Snappy, costs as DOUBLE, timestamps in milliseconds as the
//! providers write them), laid out as delivered, imported through the binary.

use std::path::Path;
use std::sync::Arc;

use crate::common::*;
use parquet::basic::Compression;
use parquet::column::writer::ColumnWriter;
use parquet::data_type::ByteArray;
use parquet::file::properties::WriterProperties;
use parquet::file::writer::SerializedFileWriter;
use parquet::schema::parser::parse_message_type;

/// A column of a test file.
enum Col<'a> {
    Text(&'a str, Vec<&'a str>),
    Double(&'a str, Vec<f64>),
    /// Milliseconds since the epoch (TIMESTAMP(MILLIS, true)).
    Millis(&'a str, Vec<i64>),
}

fn write_parquet(path: &Path, cols: &[Col<'_>]) {
    let fields: Vec<String> = cols
        .iter()
        .map(|c| match c {
            Col::Text(n, _) => format!("REQUIRED BYTE_ARRAY {n} (UTF8);"),
            Col::Double(n, _) => format!("REQUIRED DOUBLE {n};"),
            Col::Millis(n, _) => format!("REQUIRED INT64 {n} (TIMESTAMP(MILLIS,true));"),
        })
        .collect();
    let schema = Arc::new(parse_message_type(&format!("message bill {{ {} }}", fields.join(" "))).expect("schema"));
    let props = Arc::new(WriterProperties::builder().set_compression(Compression::SNAPPY).build());
    std::fs::create_dir_all(path.parent().expect("dir")).expect("mkdir");
    let file = std::fs::File::create(path).expect("create");
    let mut w = SerializedFileWriter::new(file, schema, props).expect("writer");
    let mut rg = w.next_row_group().expect("row group");
    let mut i = 0;
    while let Some(mut col) = rg.next_column().expect("column") {
        match (col.untyped(), &cols[i]) {
            (ColumnWriter::ByteArrayColumnWriter(t), Col::Text(_, v)) => {
                let vals: Vec<ByteArray> = v.iter().map(|s| ByteArray::from(*s)).collect();
                t.write_batch(&vals, None, None).expect("write");
            }
            (ColumnWriter::DoubleColumnWriter(t), Col::Double(_, v)) => {
                t.write_batch(v, None, None).expect("write");
            }
            (ColumnWriter::Int64ColumnWriter(t), Col::Millis(_, v)) => {
                t.write_batch(v, None, None).expect("write");
            }
            _ => panic!("column {i}: type mismatch"),
        }
        col.close().expect("close column");
        i += 1;
    }
    rg.close().expect("close row group");
    w.close().expect("close file");
}

const MARCH_1: i64 = 1_709_251_200_000; // 2024-03-01T00:00:00Z
const APRIL_1: i64 = 1_711_929_600_000;
const HOUR: i64 = 3_600_000;

#[test]
fn cur2_parquet_export_loads_exact_decimals_from_doubles() {
    let dir = tempfile::tempdir().expect("tmp");
    let db = sqlite_url(dir.path());
    let root = dir.path().join("bucket");
    let f = root.join("exports/cur2/data/BILLING_PERIOD=2024-03/cur2-00001.snappy.parquet");
    let n = 3;
    write_parquet(
        &f,
        &[
            Col::Text("bill_payer_account_id", vec!["111122223333"; n]),
            Col::Millis("bill_billing_period_start_date", vec![MARCH_1; n]),
            Col::Millis("bill_billing_period_end_date", vec![APRIL_1; n]),
            Col::Text("line_item_usage_account_id", vec!["444455556666"; n]),
            Col::Text("line_item_line_item_type", vec!["Usage", "Usage", "Tax"]),
            Col::Millis("line_item_usage_start_date", vec![MARCH_1 + 10 * HOUR, MARCH_1 + 11 * HOUR, MARCH_1]),
            Col::Millis("line_item_usage_end_date", vec![MARCH_1 + 11 * HOUR, MARCH_1 + 12 * HOUR, APRIL_1]),
            Col::Text("line_item_product_code", vec!["AmazonEC2"; n]),
            Col::Text("line_item_currency_code", vec!["USD"; n]),
            // As doubles, 0.1 + 0.2 is 0.30000000000000004; the ledger reads the digits.
            Col::Double("line_item_unblended_cost", vec![0.1, 0.2, 4.8e-6]),
        ],
    );
    let (code, out, err) = run(&db, &["import", "--format", "aws-cur2", "--source", "de", root.to_str().expect("p")]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("3 rows, 0 quarantined; BilledCost USD 0.3000048"), "{out}");
    let (_, csv, _) = run(&db, &["export", "csv"]);
    assert!(csv.contains("2024-03-01T10:00:00Z"), "millisecond timestamps: {csv}");
    assert!(csv.contains(",Tax,"), "{csv}");
    // The same file again: nothing changes.
    let (_, out, _) = run(&db, &["import", "--format", "aws-cur2", "--source", "de", root.to_str().expect("p")]);
    assert!(out.contains("skipped"), "{out}");
}

#[test]
fn azure_parquet_export_and_a_corrupt_parquet_file() {
    let dir = tempfile::tempdir().expect("tmp");
    let db = sqlite_url(dir.path());
    let f = dir.path().join("exports/daily-actual/20240301-20240331/part_0_0001.parquet");
    write_parquet(
        &f,
        &[
            Col::Text("SubscriptionId", vec!["sub-1", "sub-1"]),
            Col::Text("Date", vec!["03/01/2024", "03/02/2024"]),
            Col::Text("MeterCategory", vec!["Storage", "Virtual Machines"]),
            Col::Double("CostInBillingCurrency", vec![0.1, 0.2]),
            Col::Text("BillingCurrencyCode", vec!["EUR", "EUR"]),
            Col::Text("Tags", vec!["\"team\": \"payments\"", ""]),
        ],
    );
    let (code, out, err) =
        run(&db, &["import", "--format", "azure-export", dir.path().join("exports").to_str().expect("p")]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("2 rows, 0 quarantined; BilledCost EUR 0.3"), "{out}");
    let (_, csv, _) = run(&db, &["export", "csv"]);
    assert!(csv.contains("\"{\"\"team\"\":\"\"payments\"\"}\""), "{csv}");

    // A file that says PAR1 but is cut short: a clear error, nothing loaded.
    let bad = dir.path().join("cut.parquet");
    let bytes = std::fs::read(&f).expect("read");
    std::fs::write(&bad, &bytes[..bytes.len() / 2]).expect("write");
    let (code, out, _) = run(&db, &["import", "--format", "azure-export", bad.to_str().expect("p")]);
    assert_eq!(code, 2, "{out}");
    assert!(
        out.contains("cut.parquet")
            && out.contains("cannot read the Parquet file")
            && out.contains("nothing of it was loaded"),
        "{out}"
    );
}
