//! FOCUS normaliser tests from fixtures: one `check(input, expected)` helper renders every
//! record's outcome as one line, so each quirk is a fixture and a readable expectation.

use std::io::Write;

use costledger_core::{Batch, ConnectorError, canonical};
use costledger_focus::stream_files;
use futures::StreamExt;

const HEAD: &str = "BilledCost,BillingCurrency,BillingAccountId,BillingPeriodStart,BillingPeriodEnd,ChargePeriodStart,ChargePeriodEnd,ChargeCategory";

async fn read(bytes: &[u8], name: &str) -> Result<Vec<Batch>, ConnectorError> {
    let dir = tempfile::tempdir().expect("tmp");
    let p = dir.path().join(name);
    std::fs::File::create(&p).and_then(|mut f| f.write_all(bytes)).expect("write");
    let mut cx = costledger_core::Context::new("t");
    cx.batch_rows = 3;
    let mut s = stream_files(vec![p], &cx);
    let mut out = Vec::new();
    while let Some(b) = s.next().await {
        out.push(b?);
    }
    Ok(out)
}

/// Render each record: `ok <account> <category>[/<class>] <billed> <currency> eff=<…> tags=<json> extra=<json>`
/// or `err line <n>: <reason>`, in file order.
fn render(batches: &[Batch]) -> String {
    let mut rows: Vec<(u64, String)> = Vec::new();
    for b in batches {
        for l in &b.lines {
            let line_no =
                l.source_ref.as_deref().and_then(|r| r.rsplit(':').next()).and_then(|n| n.parse().ok()).unwrap_or(0);
            rows.push((
                line_no,
                format!(
                    "ok {} {}{} {} {} eff={} start={} tags={} extra={}",
                    l.billing_account_id,
                    l.charge_category,
                    l.charge_class.map(|c| format!("/{}", c.as_str())).unwrap_or_default(),
                    canonical(l.billed_cost),
                    l.billing_currency,
                    l.effective_cost.map(canonical).unwrap_or_else(|| "-".into()),
                    costledger_core::format_ts(l.charge_period_start),
                    l.tags_json().unwrap_or_else(|| "-".into()),
                    l.x_extra_json().unwrap_or_else(|| "-".into()),
                ),
            ));
        }
        for e in &b.errors {
            let line_no = e.location.rsplit(':').next().and_then(|n| n.parse().ok()).unwrap_or(0);
            rows.push((line_no, format!("err line {line_no}: {}", e.reason)));
        }
    }
    rows.sort_by_key(|r| r.0);
    rows.into_iter().map(|r| r.1).collect::<Vec<_>>().join("\n")
}

async fn check(input: &str, expected: &str) {
    let batches = read(input.as_bytes(), "in.csv").await.expect("readable file");
    let got = render(&batches);
    let want = expected.trim().lines().map(str::trim).collect::<Vec<_>>().join("\n");
    assert_eq!(got, want, "\n--- got ---\n{got}\n--- want ---\n{want}\n");
}

async fn error_of(bytes: &[u8], name: &str) -> String {
    read(bytes, name).await.expect_err("file must be rejected").to_string()
}

#[tokio::test]
async fn amounts_dates_tags_and_nulls() {
    check(
        &format!(
            "\u{feff}{HEAD},EffectiveCost,ChargeClass,Tags,Provider,Id\n\
             1.81E-8,USD,A1,2024-09-01 00:00:00,2024-10-01 00:00:00,2023-11-13T10:00Z,2023-11-13T11:00:00Z,Usage,NULL,NULL,{{}},AWS,7\n\
             -12.50,usd,A1,2024-09-01,2024-10-01,2024-09-02T00:00:00.000Z,2024-09-03,credit,,,\"{{\"\"team\"\": \"\"pay,ments\"\", \"\"n\"\": 3}}\",,\n\
             -0,EUR,\"A,2\",2024-09-01,2024-10-01,2024-09-02,2024-09-03,Adjustment,-0.5,Correction,,,\n"
        ),
        r#"
        ok A1 Usage 0.0000000181 USD eff=- start=2023-11-13T10:00:00Z tags=- extra={"Id":"7"}
        ok A1 Credit -12.5 USD eff=- start=2024-09-02T00:00:00Z tags={"n":"3","team":"pay,ments"} extra=-
        ok A,2 Adjustment/Correction 0 EUR eff=-0.5 start=2024-09-02T00:00:00Z tags=- extra=-
        "#,
    )
    .await;
}

#[tokio::test]
async fn bad_rows_are_data_with_line_and_reason() {
    check(
        &format!(
            "{HEAD},Tags\n\
             12,50,USD,A1,2024-09-01,2024-10-01,2024-09-02,2024-09-03,Usage,\n\
             abc,USD,A1,2024-09-01,2024-10-01,2024-09-02,2024-09-03,Usage,\n\
             1,XYZ,A1,2024-09-01,2024-10-01,2024-09-02,2024-09-03,Usage,\n\
             1,USD,,2024-09-01,2024-10-01,2024-09-02,2024-09-03,Usage,\n\
             1,USD,A1,2024-09-01,2024-10-01,9/2/2023,2024-09-03,Usage,\n\
             1,USD,A1,2024-09-01,2024-10-01,2024-09-02,2024-09-03,Support,\n\
             1,USD,A1,2024-09-01,2024-10-01,2024-09-02,2024-09-03,Usage,team=x\n\
             ,USD,A1,2024-09-01,2024-10-01,2024-09-02,2024-09-03,Usage,\n\
             2.5,USD,A1,2024-09-01,2024-10-01,2024-09-02,2024-09-03,Usage,\n"
        ),
        r#"
        err line 2: the record has 10 fields but the header has 9
        err line 3: BilledCost: 'abc' is not a decimal number (expected digits with an optional '.', sign and E-exponent, e.g. 12.34 or 1.81E-8)
        err line 4: BillingCurrency 'XYZ' is not an ISO 4217 currency code
        err line 5: BillingAccountId is empty
        err line 6: ChargePeriodStart: '9/2/2023' is not a timestamp (expected ISO 8601 like 2026-10-01T00:00:00Z, 2026-10-01 00:00:00 or 2026-10-01)
        err line 7: ChargeCategory 'Support' is not one of Usage, Purchase, Tax, Credit, Adjustment
        err line 8: Tags is not a JSON object: expected ident at line 1 column 2
        err line 9: BilledCost is empty
        ok A1 Usage 2.5 USD eff=- start=2024-09-02T00:00:00Z tags=- extra=-
        "#,
    )
    .await;
}

#[tokio::test]
async fn multi_line_quoted_fields_keep_their_line_numbers() {
    check(
        &format!(
            "{HEAD},ChargeDescription\n\
             1,USD,A1,2024-09-01,2024-10-01,2024-09-02,2024-09-03,Usage,\"two\nlines\"\n\
             oops,USD,A1,2024-09-01,2024-10-01,2024-09-02,2024-09-03,Usage,x\n"
        ),
        r#"
        ok A1 Usage 1 USD eff=- start=2024-09-02T00:00:00Z tags=- extra=-
        err line 4: BilledCost: 'oops' is not a decimal number (expected digits with an optional '.', sign and E-exponent, e.g. 12.34 or 1.81E-8)
        "#,
    )
    .await;
}

#[tokio::test]
async fn too_many_decimal_places_are_rounded_and_counted() {
    let input =
        format!("{HEAD}\n0.00000000000000000000000000015,USD,A1,2024-09-01,2024-10-01,2024-09-02,2024-09-03,Usage\n");
    let b = read(input.as_bytes(), "x.csv").await.expect("ok");
    assert_eq!(b.iter().map(|b| b.rounded_amounts).sum::<u64>(), 1);
    assert_eq!(canonical(b[0].lines[0].billed_cost), "0.0000000000000000000000000002");
}

#[tokio::test]
async fn invalid_utf8_quarantines_the_row() {
    let mut input = format!("{HEAD},ChargeDescription\n").into_bytes();
    input.extend_from_slice(b"1,USD,A1,2024-09-01,2024-10-01,2024-09-02,2024-09-03,Usage,caf\xe9\n");
    input.extend_from_slice(b"2,USD,A1,2024-09-01,2024-10-01,2024-09-02,2024-09-03,Usage,ok\n");
    let b = read(&input, "x.csv").await.expect("ok");
    let errs: Vec<_> = b.iter().flat_map(|b| b.errors.iter()).collect();
    assert_eq!(errs.len(), 1);
    assert!(errs[0].reason.contains("ChargeDescription is not valid UTF-8"), "{}", errs[0].reason);
    assert!(errs[0].raw.contains("caf\u{fffd}"), "raw keeps a lossy copy: {}", errs[0].raw);
    assert_eq!(errs[0].raw_amount.as_deref(), Some("1"));
    assert_eq!(b.iter().map(|b| b.lines.len()).sum::<usize>(), 1);
}

#[tokio::test]
async fn a_ten_megabyte_field_is_quarantined_not_loaded() {
    let big = "x".repeat(10 * 1024 * 1024);
    let input = format!(
        "{HEAD},ChargeDescription\n1,USD,A1,2024-09-01,2024-10-01,2024-09-02,2024-09-03,Usage,{big}\n\
         3,USD,A1,2024-09-01,2024-10-01,2024-09-02,2024-09-03,Usage,fine\n"
    );
    let b = read(input.as_bytes(), "x.csv").await.expect("ok");
    let errs: Vec<_> = b.iter().flat_map(|b| b.errors.iter()).collect();
    assert_eq!(errs.len(), 1);
    assert!(errs[0].reason.contains("column ChargeDescription is 10485760 bytes, over the 65536 byte limit"));
    assert!(errs[0].raw.len() < 5000, "quarantined raw text is clipped");
    assert_eq!(b.iter().map(|b| b.lines.len()).sum::<usize>(), 1);
}

#[tokio::test]
async fn whole_file_problems_are_clear_errors() {
    let e = error_of(b"", "empty.csv").await;
    assert!(e.contains("empty.csv:1: the file is empty (no header line)"), "{e}");
    let e = error_of(b"BilledCost,BillingCurrency,ChargeCategory\n1,USD,Usage\n", "cols.csv").await;
    assert!(
        e.contains("cols.csv:1: missing required FOCUS column(s): BillingAccountId, BillingPeriodStart, BillingPeriodEnd, ChargePeriodStart, ChargePeriodEnd"),
        "{e}"
    );
    let e = error_of(format!("{HEAD},BilledCost\n").as_bytes(), "dup.csv").await;
    assert!(e.contains("dup.csv:1: duplicate column 'BilledCost' (columns 1 and 9)"), "{e}");
    // A truncated gzip: the complete file compressed, then cut in half.
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    for i in 0..2000 {
        writeln!(
            gz,
            "{}",
            if i == 0 {
                HEAD.to_string()
            } else {
                format!("{i}.5,USD,A1,2024-09-01,2024-10-01,2024-09-02,2024-09-03,Usage")
            }
        )
        .expect("w");
    }
    let full = gz.finish().expect("gz");
    let e = error_of(&full[..full.len() / 2], "cut.csv.gz").await;
    assert!(e.contains("cut.csv.gz:"), "{e}");
    assert!(e.contains("truncated or corrupt"), "{e}");
    assert!(e.contains("fetch the file again"), "{e}");
    // The intact file reads completely (gzip detected by its magic bytes, not its name).
    let b = read(&full, "whole.bin").await.expect("ok");
    assert_eq!(b.iter().map(|b| b.lines.len()).sum::<usize>(), 1999);
}

#[tokio::test]
async fn header_only_file_has_no_rows_and_no_error() {
    let b = read(format!("{HEAD}\n").as_bytes(), "h.csv").await.expect("ok");
    // One batch: no records, only the key of the bytes read.
    assert_eq!(b.len(), 1);
    assert_eq!((b[0].records, b[0].lines.len(), b[0].errors.len()), (0, 0, 0));
    assert!(b[0].content_key.as_deref().is_some_and(|k| k.starts_with("sha256:")));
}

#[tokio::test]
async fn public_focus_sample_loads_every_row() {
    let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/focus/focus_sample.csv");
    let bytes = std::fs::read(p).expect("fixture");
    let batches = read(&bytes, "focus_sample.csv").await.expect("ok");
    let lines: Vec<_> = batches.iter().flat_map(|b| b.lines.iter()).collect();
    assert_eq!(lines.len(), 1000);
    assert_eq!(batches.iter().map(|b| b.errors.len()).sum::<usize>(), 0);
    let mut t = costledger_core::Totals::default();
    for l in &lines {
        t.add(&l.billing_currency, l.billed_cost).expect("add");
    }
    assert_eq!(t.to_json(), r#"{"USD":"20.52022672899"}"#);
    let providers: std::collections::BTreeSet<_> = lines.iter().filter_map(|l| l.provider_name.as_deref()).collect();
    assert_eq!(providers.into_iter().collect::<Vec<_>>(), vec!["AWS", "Microsoft", "Oracle"]);
    // Literal NULL cells are absent, not text.
    assert!(lines.iter().all(|l| l.charge_class.is_none() && l.resource_name.as_deref() != Some("NULL")));
    assert!(lines.iter().any(|l| !l.tags.is_empty()));
}

/// Wide records close a batch at `MAX_BATCH_BYTES` of record text, before `batch_rows` lines,
/// so memory stays bounded whatever the width of the file; nothing is lost across batches.
#[tokio::test]
async fn wide_records_close_batches_by_size() {
    use costledger_files::reader::MAX_BATCH_BYTES;
    let pad = "x".repeat(4000);
    let mut csv = format!("{HEAD},ChargeDescription\n");
    let rows = 1500;
    for i in 0..rows {
        csv.push_str(&format!("0.01,USD,A{i},2026-10-01,2026-11-01,2026-10-02,2026-10-03,Usage,{pad}\n"));
    }
    let dir = tempfile::tempdir().expect("tmp");
    let p = dir.path().join("wide.csv");
    std::fs::write(&p, csv).expect("write");
    let mut cx = costledger_core::Context::new("t");
    cx.batch_rows = 100_000;
    let mut s = stream_files(vec![p], &cx);
    let mut batches = Vec::new();
    while let Some(b) = s.next().await {
        batches.push(b.expect("batch"));
    }
    let per_batch = MAX_BATCH_BYTES / 4000 + 1;
    assert!(batches.len() >= rows / per_batch, "{} batches", batches.len());
    assert!(batches.iter().all(|b| b.lines.len() <= per_batch));
    let lines: usize = batches.iter().map(|b| b.lines.len()).sum();
    assert_eq!(lines, rows);
    let total: rust_decimal::Decimal = batches.iter().flat_map(|b| &b.lines).map(|l| l.billed_cost).sum();
    assert_eq!(canonical(total), "15");
}

/// Every FOCUS 1.2 column beyond the core is read by name (any case), older names are mapped
/// (OCI's FOCUS reports write `Region`, `UsageQuantity`, `UsageUnit`, `ServiceSubCategory`;
/// FOCUS 0.5 `AmortizedCost`), a bad decimal in one of them quarantines its row with the column,
/// and none of them lands in `x_extra`.
#[tokio::test]
async fn focus_columns_and_older_names_are_read() {
    let input = format!(
        "{HEAD},Region,UsageQuantity,UsageUnit,AmortizedCost,ServiceSubCategory,commitmentdiscountstatus,ListUnitPrice,x_Custom\n\
         1.5,USD,A,2026-10-01T00:00:00Z,2026-11-01T00:00:00Z,2026-10-02T00:00:00Z,2026-10-02T01:00:00Z,Usage,us-east-1,3.25,Hours,1.2,Virtual Machines,Used,0.0425,k\n\
         2,USD,A,2026-10-01T00:00:00Z,2026-11-01T00:00:00Z,2026-10-02T00:00:00Z,2026-10-02T01:00:00Z,Usage,,,,,,,0.0x,\n"
    );
    let batches = read(input.as_bytes(), "in.csv").await.expect("readable");
    let lines: Vec<_> = batches.iter().flat_map(|b| b.lines.iter()).collect();
    let errors: Vec<_> = batches.iter().flat_map(|b| b.errors.iter()).collect();
    assert_eq!(lines.len(), 1);
    let l = lines[0];
    assert_eq!(l.region_id.as_deref(), Some("us-east-1"));
    assert_eq!(l.consumed_quantity.map(canonical).as_deref(), Some("3.25"));
    assert_eq!(l.consumed_unit.as_deref(), Some("Hours"));
    assert_eq!(l.effective_cost.map(canonical).as_deref(), Some("1.2"));
    let f = l.focus.as_deref().expect("focus columns");
    assert_eq!(f.text("ServiceSubcategory"), Some("Virtual Machines"));
    assert_eq!(f.text("CommitmentDiscountStatus"), Some("Used"));
    assert_eq!(f.decimal("ListUnitPrice").map(canonical).as_deref(), Some("0.0425"));
    assert_eq!(l.x_extra_json().as_deref(), Some(r#"{"x_Custom":"k"}"#), "only unknown columns are extra");
    assert_eq!(errors.len(), 1);
    assert!(errors[0].reason.starts_with("ListUnitPrice:"), "{}", errors[0].reason);
}
