//! `costledger export focus` checked by the FinOps Foundation's own conformance checker, PyPI
//! `focus-validator` 2.2.1 (its bundled FOCUS 1.2 rule model, offline). `.ci/run` installs it in
//! a Python ≥ 3.12 venv and names the venv in COSTLEDGER_TEST_FOCUS_VALIDATOR; unset, the
//! validator tests are skipped. Exact sums and the byte-identical export of both backends are
//! checked whether or not the validator is there.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::common::*;
use rust_decimal::Decimal;

const VALIDATOR_ENV: &str = "COSTLEDGER_TEST_FOCUS_VALIDATOR";

/// What the synthetic bills (`costledger sample`) support, as the validator's applicability
/// criteria: account and sub-account names (every line has both), regions with names, tags,
/// usage measurement (ConsumedQuantity/Unit on usage), per-resource billing with a resource
/// type. Not claimed: commitment discounts (one purchase line carries a commitment id, but no
/// commitment usage), capacity reservations, price lists and unit prices, several account
/// types, pricing categories, pricing currencies.
const SAMPLE_CRITERIA: &str = "ACCOUNT_NAMING_SUPPORTED,SUB_ACCOUNT_SUPPORTED,REGION_SUPPORTED,TAGGING_SUPPORTED,\
     USAGE_MEASUREMENT_SUPPORTED,BILLING_BASED_ON_PROVISIONED_RESOURCES_SUPPORTED,RESOURCE_TYPE_ASSIGNMENT_SUPPORTED";

/// Rules of focus-validator 2.2.1 that fail on correct data, each with why. A composite rule
/// (`…-C-000-…` and the like) fails when one of its children does, so it is listed with the
/// child that makes it fail.
const VALIDATOR_DEFECTS: [(&str, &str); 12] = [
    (
        "BilledCost-C-005-C",
        "'BilledCost MUST be 0 for charges where payments are received by a third party': the model \
         tests ProviderName <> InvoiceIssuerName, so every AWS charge (provider 'AWS', issuer \
         'Amazon Web Services, Inc.', as AWS's own FOCUS export writes them) and every Google Cloud \
         charge (issuer 'Google') counts as a marketplace charge",
    ),
    ("BilledCost-C-000-M", "composite of BilledCost-C-005-C"),
    (
        "InvoiceId-C-004-C",
        "'InvoiceId MUST be null when the charge is not associated with an invoice' is checked on \
         every row without its condition; it is one of two alternatives of InvoiceId-C-003-C, which \
         passes",
    ),
    (
        "InvoiceId-C-005-C",
        "'InvoiceId MUST NOT be null when the charge is associated with an invoice' is checked on \
         every row without its condition (an estimated bill has no invoice yet); the other \
         alternative of InvoiceId-C-003-C, which passes",
    ),
    (
        "CommitmentDiscountStatus-C-004-C",
        "'MUST NOT be null when CommitmentDiscountId is not null and ChargeCategory is Usage': the \
         model's condition is CommitmentDiscountId IS NULL, so every line without a commitment fails",
    ),
    ("CommitmentDiscountStatus-C-002-C", "composite of CommitmentDiscountStatus-C-004-C"),
    ("CommitmentDiscountStatus-C-000-C", "composite of CommitmentDiscountStatus-C-002-C"),
    (
        "CapacityReservationStatus-C-004-C",
        "'MUST NOT be null when CapacityReservationId is not null and ChargeCategory is Usage': the \
         model's condition is malformed (an 'AND' key instead of a check function), so it applies to \
         every line",
    ),
    (
        "CapacityReservationStatus-C-003-C",
        "'MUST be null when CapacityReservationId is null': the same malformed condition (an 'AND' \
         key), so it applies to every line and fails on any line in a capacity reservation",
    ),
    ("CapacityReservationStatus-C-002-C", "composite of CapacityReservationStatus-C-003-C and -C-004-C"),
    ("CapacityReservationStatus-C-000-C", "composite of CapacityReservationStatus-C-002-C"),
    ("InvoiceId-C-000-O", "composite of InvoiceId-C-003-C (fails only when that does)"),
];

/// What AWS supports, as the validator's applicability criteria, for a CUR costledger mapped:
/// account and sub-account names, regions and availability zones, tags, usage measurement,
/// per-resource billing with resource types, a public price list, several pricing categories
/// (on-demand, committed, spot), commitment discounts (RIs, Savings Plans) and capacity
/// reservations, unit pricing (SkuPriceId from the rate code, SkuMeter from the usage type,
/// SkuPriceDetails from the product's attributes). Not claimed yet: negotiated pricing
/// (ContractedUnitPrice), pricing in another currency than the bill's.
const AWS_CRITERIA: &str = "ACCOUNT_NAMING_SUPPORTED,SUB_ACCOUNT_SUPPORTED,REGION_SUPPORTED,TAGGING_SUPPORTED,\
     USAGE_MEASUREMENT_SUPPORTED,BILLING_BASED_ON_PROVISIONED_RESOURCES_SUPPORTED,PUBLIC_PRICE_LIST_SUPPORTED,\
     MULTIPLE_PRICING_CATEGORIES_SUPPORTED,COMMITMENT_DISCOUNT_SUPPORTED,AVAILABILITY_ZONE_SUPPORTED,\
     RESOURCE_TYPE_ASSIGNMENT_SUPPORTED,CAPACITY_RESERVATION_SUPPORTED,UNIT_PRICING_SUPPORTED";

/// A CSV carries no types: the validator's CSV reader infers a column of all-digit account ids
/// (AWS account numbers, EA enrollment numbers) as an integer, though the export writes the
/// bill's text. The Parquet export types them as text and passes these rules.
const CSV_TYPING: [(&str, &str); 8] = [
    ("BillingAccountId-C-002-M", "all-digit billing account ids read back as integers from CSV"),
    ("BillingAccountId-C-000-M", "composite of BillingAccountId-C-002-M"),
    ("SubAccountId-C-001-M", "all-digit sub account ids read back as integers from CSV"),
    ("SubAccountId-C-000-C", "composite of SubAccountId-C-001-M"),
    (
        "ConsumedQuantity-C-001-M",
        "whole-number quantities (3600 seconds) read back as integers, not decimals, from CSV",
    ),
    ("ConsumedQuantity-C-000-C", "composite of ConsumedQuantity-C-001-M"),
    ("PricingQuantity-C-001-M", "whole-number quantities (24 hours) read back as integers, not decimals, from CSV"),
    ("PricingQuantity-C-000-M", "composite of PricingQuantity-C-001-M"),
];

/// Failures that come from the public AWS CUR sample, not from the mapping.
const AWS_SAMPLE_LIMITS: [(&str, &str); 5] = [
    (
        "BillingAccountName-C-003-C",
        "the anonymised public sample has no bill/PayerAccountName column (a real CUR fills it)",
    ),
    ("BillingAccountName-C-000-M", "composite of BillingAccountName-C-003-C"),
    (
        "SubAccountName-C-005-C",
        "the anonymised public sample has no lineItem/UsageAccountName column (a real CUR fills it)",
    ),
    ("SubAccountName-C-003-C", "composite of SubAccountName-C-005-C"),
    ("SubAccountName-C-000-C", "composite of SubAccountName-C-003-C"),
];

/// What Azure supports, as the validator's applicability criteria, for an EA/MCA cost export
/// costledger mapped: account and subscription names, regions and availability zones, tags,
/// usage measurement, per-resource billing with resource types (from the resource id), a public
/// price list (PayGPrice), several pricing categories (on-demand, spot, reservation, savings
/// plan), commitment discounts, negotiated pricing (UnitPrice) and on-demand capacity
/// reservations (AdditionalInfo's VMCapacityReservationId). Not claimed: unit pricing (a cost
/// export has no SkuPriceId, as Microsoft's own FOCUS conversion says, so no SkuPriceDetails
/// either), pricing currency differences.
const AZURE_CRITERIA: &str = "ACCOUNT_NAMING_SUPPORTED,SUB_ACCOUNT_SUPPORTED,REGION_SUPPORTED,TAGGING_SUPPORTED,\
     USAGE_MEASUREMENT_SUPPORTED,BILLING_BASED_ON_PROVISIONED_RESOURCES_SUPPORTED,RESOURCE_TYPE_ASSIGNMENT_SUPPORTED,\
     PUBLIC_PRICE_LIST_SUPPORTED,MULTIPLE_PRICING_CATEGORIES_SUPPORTED,COMMITMENT_DISCOUNT_SUPPORTED,\
     AVAILABILITY_ZONE_SUPPORTED,NEGOTIATED_PRICING_SUPPORTED,CAPACITY_RESERVATION_SUPPORTED";

/// What OCI supports, as the validator's applicability criteria, for a cost report costledger
/// mapped: regions and availability domains, tags, usage measurement, per-resource billing with
/// resource types (from the OCID), negotiated pricing (`cost/unitPrice`). Not claimed: account
/// and tenancy names (the cost report has none), a public price list (the report has no list
/// price), pricing categories, commitments.
const OCI_CRITERIA: &str = "REGION_SUPPORTED,AVAILABILITY_ZONE_SUPPORTED,TAGGING_SUPPORTED,USAGE_MEASUREMENT_SUPPORTED,\
     BILLING_BASED_ON_PROVISIONED_RESOURCES_SUPPORTED,RESOURCE_TYPE_ASSIGNMENT_SUPPORTED,NEGOTIATED_PRICING_SUPPORTED";

/// Failures that come from what an OCI cost report (or the public sample) carries.
const OCI_LIMITS: [(&str, &str); 6] = [
    ("ListCost-C-003-M", "an OCI cost report carries no list price, so ListCost stays null (never a made-up value)"),
    ("ListCost-C-004-M", "the same rule, checked twice by the model"),
    ("ListCost-C-000-M", "composite of ListCost-C-003-M"),
    (
        "ResourceType-C-005-C",
        "the anonymised public sample's resource ids are not OCIDs (`oci_vcn…`), so no type can be read \
         from them (a real OCID `ocid1.instance.oc1…` gives `instance`)",
    ),
    ("ResourceType-C-003-C", "composite of ResourceType-C-005-C"),
    ("ResourceType-C-000-C", "composite of ResourceType-C-003-C"),
];

/// What Google Cloud supports, as the validator's applicability criteria, for a billing export
/// costledger mapped: projects (sub accounts, with names), regions and zones, labels (tags),
/// usage measurement, per-resource billing, committed use discounts (their credits), several
/// pricing categories (standard, spot). Not claimed: billing account names (not in the export),
/// a public price list with unit prices (the export has `cost_at_list`, the ListCost, but no list
/// unit price).
const GCP_CRITERIA: &str = "SUB_ACCOUNT_SUPPORTED,REGION_SUPPORTED,AVAILABILITY_ZONE_SUPPORTED,TAGGING_SUPPORTED,\
     USAGE_MEASUREMENT_SUPPORTED,BILLING_BASED_ON_PROVISIONED_RESOURCES_SUPPORTED,COMMITMENT_DISCOUNT_SUPPORTED,\
     MULTIPLE_PRICING_CATEGORIES_SUPPORTED";

/// Import `input` as `format`, export it as CSV and Parquet, validate both with `criteria`:
/// every failed rule must be one of `allowed` (plus the CSV typing limit for the CSV).
fn imported_bill_passes(venv: &Path, format: &str, input: &Path, criteria: &str, allowed: &[(&str, &str)]) {
    let dir = tempfile::tempdir().expect("tmp");
    let db = sqlite_url(dir.path());
    let (code, out, err) = run(&db, &["import", "--format", format, input.to_str().expect("utf8")]);
    assert_eq!(code, 0, "{out}{err}");
    let csv = dir.path().join("focus.csv");
    export(&db, &csv, &[]);
    let parquet = dir.path().join("focus.parquet");
    export(&db, &parquet, &["--format", "parquet"]);
    for (file, extra) in [(&csv, &CSV_TYPING[..]), (&parquet, &[][..])] {
        let failed = failed_rules(venv, file, criteria);
        let explained: BTreeSet<&str> =
            VALIDATOR_DEFECTS.iter().chain(allowed).chain(extra).map(|(id, _)| *id).collect();
        let unexplained: Vec<&String> = failed.iter().filter(|f| !explained.contains(f.as_str())).collect();
        assert!(
            unexplained.is_empty(),
            "focus-validator failed rules on costledger's mapping of {} ({}): {unexplained:?}",
            input.display(),
            file.display()
        );
    }
}

#[test]
fn the_public_azure_ea_exports_mapped_by_costledger_pass_the_validator() {
    let Some(venv) = validator() else { return };
    for f in ["EA_ActualCost_Small.csv", "EA_AmortizedCost_Small.csv", "sample-anonymous-ea-export-dataset.csv"] {
        imported_bill_passes(&venv, "azure-export", &fixture(&format!("azure/{f}")), AZURE_CRITERIA, &[]);
    }
}

/// The exported FOCUS dataset of `input` imported as `format`: the header and every row.
fn exported_rows(format: &str, input: &Path) -> (csv::StringRecord, Vec<csv::StringRecord>) {
    let dir = tempfile::tempdir().expect("tmp");
    let db = sqlite_url(dir.path());
    let (code, out, err) = run(&db, &["import", "--format", format, input.to_str().expect("utf8")]);
    assert_eq!(code, 0, "{out}{err}");
    let csv_path = dir.path().join("focus.csv");
    export(&db, &csv_path, &[]);
    let mut r = csv::Reader::from_path(&csv_path).expect("open export");
    let h = r.headers().expect("header").clone();
    let rows = r.records().map(|r| r.expect("record")).collect();
    (h, rows)
}

/// An EA export's on-demand capacity reservation (AdditionalInfo `VMCapacityReservationId`) is
/// the line's CapacityReservationId; capacity billed to the reservation resource itself is
/// `Unused`. Every other line has neither column.
#[test]
fn an_azure_capacity_reservation_is_mapped_from_additional_info() {
    let (h, rows) = exported_rows("azure-export", &fixture("azure/EA_ActualCost_Small.csv"));
    let at = |n: &str| h.iter().position(|c| c == n).unwrap_or_else(|| panic!("no {n} column"));
    let (id, status, cost) = (at("CapacityReservationId"), at("CapacityReservationStatus"), at("BilledCost"));
    let reserved: Vec<String> = rows
        .iter()
        .filter(|r| !r[id].is_empty() || !r[status].is_empty())
        .map(|r| format!("{}|{}|{}", &r[id], &r[status], &r[cost]))
        .collect();
    assert_eq!(reserved, vec!["f8b42087-c198-4ad8-8515-fce989cc5fff|Unused|2.64"]);
}

/// A CUR line's product attributes (instance type, vCPUs, memory, operating system) are its
/// SkuPriceDetails, FOCUS-defined keys only, and only beside a SkuPriceId: every line of one
/// SkuPriceId has the same details (the fee's unused share, a row the export writes, included).
#[test]
fn a_cur_lines_product_attributes_are_its_sku_price_details() {
    let (h, rows) = exported_rows("aws-cur", &fixture("aws/cur-commitments-2026-10.csv"));
    let at = |n: &str| h.iter().position(|c| c == n).unwrap_or_else(|| panic!("no {n} column"));
    let (price, details) = (at("SkuPriceId"), at("SkuPriceDetails"));
    let mut by_price: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for r in &rows {
        assert!(!r[price].is_empty() || r[details].is_empty(), "details without a SkuPriceId: {r:?}");
        by_price.entry(r[price].to_string()).or_default().insert(r[details].to_string());
    }
    let m5 =
        r#"{"CoreCount":2,"InstanceSeries":"m5","InstanceType":"m5.large","MemorySize":8,"OperatingSystem":"Linux"}"#;
    let c5 =
        r#"{"CoreCount":4,"InstanceSeries":"c5","InstanceType":"c5.xlarge","MemorySize":8,"OperatingSystem":"Linux"}"#;
    let t3 =
        r#"{"CoreCount":2,"InstanceSeries":"t3","InstanceType":"t3.micro","MemorySize":1,"OperatingSystem":"Linux"}"#;
    let one = |s: &str| BTreeSet::from([s.to_string()]);
    assert_eq!(by_price["SKUM5LARGE0002.6QCMYABX3D.6YS6EN2CT7"], one(m5));
    assert_eq!(by_price["SKUM5LARGE0002.6QCMYABX3D.2TG2D8R56U"], one(m5));
    assert_eq!(by_price["SKUC5XLARGE003.JRTCKXETXF.6YS6EN2CT7"], one(c5));
    assert_eq!(by_price["SKUT3MICRO0001.JRTCKXETXF.6YS6EN2CT7"], one(t3));
    // The Savings Plan fees' products have no instance attributes; the tax line no SkuPriceId.
    assert_eq!(by_price["SPSKU00000004.NOUPFRONT.1"], one(""));
    assert_eq!(by_price[""], one(""));
}

/// A GCP detailed export's tier price (`price.effective_price` per `price.pricing_unit_quantity`
/// of `price.unit`) is the row's ContractedUnitPrice where it prices the row exactly (the
/// Compute Engine hour); the Cloud Storage row's cost (4E-6, rounded) is not price × quantity,
/// so it has none, and neither do credits, tax or rows without a price.
#[test]
fn a_gcp_tier_price_is_the_contracted_unit_price_only_where_it_prices_the_row() {
    let (h, rows) = exported_rows("gcp-export", &fixture("gcp/export-2024-03.jsonl"));
    let at = |n: &str| h.iter().position(|c| c == n).unwrap_or_else(|| panic!("no {n} column"));
    let (category, service, cup) = (at("ChargeCategory"), at("ServiceName"), at("ContractedUnitPrice"));
    let mut priced: Vec<String> = rows
        .iter()
        .filter(|r| !r[cup].is_empty())
        .map(|r| format!("{}|{}|{}", &r[category], &r[service], &r[cup]))
        .collect();
    priced.sort();
    assert_eq!(priced, vec!["Usage|Compute Engine|0.731234"]);
}

/// The validator venv; `None` (skip) when the variable is not set.
fn validator() -> Option<PathBuf> {
    match std::env::var(VALIDATOR_ENV) {
        Ok(p) if !p.is_empty() => Some(PathBuf::from(p)),
        _ => {
            eprintln!("skipped: {VALIDATOR_ENV} is not set (a venv with PyPI focus-validator; .ci/run sets it)");
            None
        }
    }
}

/// Run the validator on `data` (FOCUS 1.2 rules, `criteria`); the ids of the rules that failed.
fn failed_rules(venv: &Path, data: &Path, criteria: &str) -> BTreeSet<String> {
    let lib = venv.join("lib");
    let site = std::fs::read_dir(&lib)
        .expect("venv lib")
        .filter_map(|e| e.ok())
        .map(|e| e.path().join("site-packages"))
        .find(|p| p.join("focus_validator").is_dir())
        .unwrap_or_else(|| panic!("{VALIDATOR_ENV}={} has no focus_validator package", venv.display()));
    let mut cmd = Command::new(venv.join("bin/focus-validator"));
    // It opens focus_validator/rules/currency_codes.csv by a relative path.
    cmd.current_dir(&site).arg("--data-file").arg(data).args([
        "--validate-version",
        "1.2",
        "--block-download",
        "--rule-set-path",
        "focus_validator/rules",
        "--output-type",
        "console",
    ]);
    if !criteria.is_empty() {
        cmd.args(["--applicability-criteria", criteria]);
    }
    let out = cmd.output().expect("run focus-validator");
    let text = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(text.contains("Total:"), "focus-validator did not validate {}:\n{text}", data.display());
    let failed: BTreeSet<String> = text
        .lines()
        .filter_map(|l| l.strip_prefix("❌ "))
        .filter_map(|l| l.split_once(": FAIL").map(|(id, _)| id.trim().to_string()))
        .collect();
    // The summary's count must match the rules read: a changed output format must not pass
    // as "no failures".
    let fail_count: usize = text
        .lines()
        .find_map(|l| l.split("Fail: ").nth(1))
        .and_then(|r| r.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no 'Fail: N' in the validator's summary:\n{text}"));
    assert_eq!(failed.len(), fail_count, "failed rules read {failed:?} against the summary:\n{text}");
    failed
}

/// Σ BilledCost per currency of a FOCUS CSV, exactly.
fn billed_by_currency(csv_path: &Path) -> BTreeMap<String, Decimal> {
    let mut r = csv::Reader::from_path(csv_path).expect("open export");
    let h = r.headers().expect("header").clone();
    let at = |n: &str| h.iter().position(|c| c == n).unwrap_or_else(|| panic!("no {n} column"));
    let (cost, cur) = (at("BilledCost"), at("BillingCurrency"));
    let mut sums = BTreeMap::new();
    for rec in r.records() {
        let rec = rec.expect("record");
        *sums.entry(rec[cur].to_string()).or_insert(Decimal::ZERO) += dec(&rec[cost]);
    }
    sums
}

fn export(db: &str, out: &Path, extra: &[&str]) {
    let mut args = vec!["export", "focus", "--out", out.to_str().expect("utf8")];
    args.extend(extra);
    let (code, o, e) = run(db, &args);
    assert_eq!(code, 0, "{o}{e}");
    assert!(e.contains("as FOCUS 1.2"), "{e}");
}

#[test]
fn the_synthetic_bills_export_as_focus_1_2_exactly_and_the_validator_passes_them() {
    let dir = tempfile::tempdir().expect("tmp");
    let db = sqlite_url(dir.path());
    let bills = dir.path().join("sample.csv");
    let (code, out, err) = run(&db, &["sample", "--rows", "3000", "--out", bills.to_str().expect("utf8")]);
    assert_eq!(code, 0, "{out}{err}");
    let sample_totals =
        out.split("BilledCost: ").nth(1).expect("sample totals").trim().trim_end_matches(')').to_string();
    let (code, out, err) = run(&db, &["import", "--format", "focus", bills.to_str().expect("utf8")]);
    assert_eq!(code, 0, "{out}{err}");
    let focus = dir.path().join("focus.csv");
    export(&db, &focus, &[]);
    let text = std::fs::read_to_string(&focus).expect("read");
    let header = text.lines().next().expect("header");
    // Every FOCUS 1.2 column in spec order, but the two that must not be null when present and
    // that no synthetic line has (PricingCurrency, PricingCurrencyEffectiveCost).
    let want: Vec<&str> = costledger::focus_export::FOCUS_1_2_COLUMNS
        .iter()
        .copied()
        .filter(|c| !["PricingCurrency", "PricingCurrencyEffectiveCost"].contains(c))
        .collect();
    assert_eq!(header, want.join(","));
    // Every amount exactly the bill's: the sums equal the generator's totals, to the last digit.
    let sums = billed_by_currency(&focus);
    let got: Vec<String> = sums.iter().map(|(c, d)| format!("{c} {}", d.normalize())).collect();
    assert_eq!(got.join(", "), sample_totals, "the FOCUS dataset's sums against the sample's");
    assert_eq!(sums.get("USD").map(|d| d.normalize().to_string()).as_deref(), Some("14708.0044465108"));
    assert_eq!(text.lines().count(), 3001);
    // Deterministic: the same ledger gives the same bytes.
    let again = dir.path().join("again.csv");
    export(&db, &again, &[]);
    assert_eq!(std::fs::read(&again).expect("read"), text.as_bytes());
    // Lineage columns on request.
    let lineage = dir.path().join("lineage.csv");
    export(&db, &lineage, &["--lineage"]);
    let l = std::fs::read_to_string(&lineage).expect("read");
    assert!(
        l.lines()
            .next()
            .expect("header")
            .ends_with(",Tags,x_owner,x_allocation_reason,x_load_id,x_source,x_source_ref")
    );

    let Some(venv) = validator() else { return };
    let failed = failed_rules(&venv, &focus, SAMPLE_CRITERIA);
    let explained: BTreeSet<String> = VALIDATOR_DEFECTS.iter().map(|(id, _)| id.to_string()).collect();
    let unexplained: Vec<&String> = failed.difference(&explained).collect();
    assert!(unexplained.is_empty(), "focus-validator failed rules no defect explains: {unexplained:?}");
}

/// Run `sql` in DuckDB (the venv's PyPI `duckdb`); the rows as `|`-separated text lines.
fn duckdb(venv: &Path, sql: &str) -> Vec<String> {
    let script = "import duckdb, sys\nfor row in duckdb.sql(sys.argv[1]).fetchall():\n    print('|'.join(str(v) for v in row))\n";
    let out = Command::new(venv.join("bin/python")).args(["-c", script, sql]).output().expect("run python");
    assert!(out.status.success(), "duckdb failed on {sql}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).lines().map(str::to_string).collect()
}

#[test]
fn the_parquet_dataset_is_typed_exact_bounded_and_passes_the_validator() {
    let dir = tempfile::tempdir().expect("tmp");
    let db = sqlite_url(dir.path());
    let bills = dir.path().join("sample.csv");
    // More lines than one row group holds.
    let (code, out, err) = run(&db, &["sample", "--rows", "60000", "--out", bills.to_str().expect("utf8")]);
    assert_eq!(code, 0, "{out}{err}");
    let want_totals = out.split("BilledCost: ").nth(1).expect("sample totals").trim().trim_end_matches(')').to_string();
    let (code, out, err) = run(&db, &["import", "--format", "focus", bills.to_str().expect("utf8")]);
    assert_eq!(code, 0, "{out}{err}");
    let parquet = dir.path().join("focus.parquet");
    export(&db, &parquet, &["--format", "parquet", "--lineage"]);
    assert_eq!(&std::fs::read(&parquet).expect("read")[..4], b"PAR1");
    let Some(venv) = validator() else { return };
    let p = parquet.display();
    // Types: exact decimals, UTC timestamps, text ids; one row group per 50,000 charges.
    let types = duckdb(
        &venv,
        &format!(
            "select any_value(typeof(BilledCost)), any_value(typeof(EffectiveCost)), any_value(typeof(ChargePeriodStart)), \
             any_value(typeof(BillingAccountId)), any_value(typeof(x_load_id)) from '{p}'"
        ),
    );
    // The scale is the most decimal places any exported amount has (the sample writes 10).
    assert_eq!(types, ["DECIMAL(38,10)|DECIMAL(38,10)|TIMESTAMP WITH TIME ZONE|VARCHAR|VARCHAR"]);
    let groups = duckdb(&venv, &format!("select count(distinct row_group_id) from parquet_metadata('{p}')"));
    assert_eq!(groups, ["2"], "60,000 charges in row groups of 50,000");
    // Σ BilledCost per currency read back by DuckDB equals the bills' to the last digit.
    let sums = duckdb(
        &venv,
        &format!("select BillingCurrency, sum(BilledCost)::VARCHAR, count(*) from '{p}' group by 1 order by 1"),
    );
    let got: Vec<String> = sums
        .iter()
        .map(|l| {
            let f: Vec<&str> = l.split('|').collect();
            format!("{} {}", f[0], dec(f[1]).normalize())
        })
        .collect();
    assert_eq!(got.join(", "), want_totals, "DuckDB's sums of the Parquet amounts against the sample's");
    let rows: u64 = sums.iter().map(|l| l.rsplit('|').next().and_then(|n| n.parse::<u64>().ok()).unwrap_or(0)).sum();
    assert_eq!(rows, 60_000);
    // A timestamp is the line's instant.
    let first = duckdb(&venv, &format!("select min(BillingPeriodStart)::VARCHAR from '{p}'"));
    assert_eq!(first, ["2026-10-01 00:00:00+00"]);
    let failed = failed_rules(&venv, &parquet, SAMPLE_CRITERIA);
    let explained: BTreeSet<String> = VALIDATOR_DEFECTS.iter().map(|(id, _)| id.to_string()).collect();
    let unexplained: Vec<&String> = failed.difference(&explained).collect();
    assert!(unexplained.is_empty(), "focus-validator failed rules on the Parquet dataset: {unexplained:?}");
}

#[test]
fn the_public_oci_cost_report_mapped_by_costledger_passes_the_validator() {
    let Some(venv) = validator() else { return };
    let input = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("connectors/oci/tests/fixtures/reports_cost-csv_0000000030000269.csv");
    imported_bill_passes(&venv, "oci-cost", &input, OCI_CRITERIA, &OCI_LIMITS);
}

#[test]
fn a_gcp_billing_export_mapped_by_costledger_passes_the_validator() {
    let Some(venv) = validator() else { return };
    imported_bill_passes(&venv, "gcp-export", &fixture("gcp/export-2024-03.jsonl"), GCP_CRITERIA, &[]);
}

#[test]
fn the_public_aws_cur_sample_mapped_by_costledger_passes_the_validator() {
    let Some(venv) = validator() else { return };
    let input = fixture("aws/sample-anonymous-aws-export-dataset.csv");
    imported_bill_passes(&venv, "aws-cur", &input, AWS_CRITERIA, &AWS_SAMPLE_LIMITS);
}

/// A CUR month with every commitment line type (reservation usage, monthly and upfront fees;
/// Savings Plan usage, negation, recurring and upfront fees) and EC2 instance ids: the
/// commitment columns (CommitmentDiscountQuantity/Unit/Status) and ResourceType pass the
/// validator's rules. (Regression: a real CUR's commitment lines had no quantity, and its
/// resource ids no type, so AWS's own bills failed rules the public sample never reached.)
#[test]
fn a_cur_with_reservations_and_savings_plans_passes_the_validator() {
    let Some(venv) = validator() else { return };
    let input = fixture("aws/cur-commitments-2026-10.csv");
    imported_bill_passes(&venv, "aws-cur", &input, AWS_CRITERIA, &[]);
}

/// A CUR keeps a commitment's unused share on its recurring fee (a Purchase); FOCUS wants a
/// purchase's EffectiveCost 0 and the unused share on a Usage row of its own
/// (EffectiveCost-C-005-C failed on every CUR with reservations or Savings Plans). The export
/// writes the pair; every amount sums to the ledger's.
#[test]
fn a_cur_commitment_fees_unused_share_is_a_row_of_its_own() {
    let dir = tempfile::tempdir().expect("tmp");
    let db = sqlite_url(dir.path());
    let input = fixture("aws/cur-commitments-2026-10.csv");
    let (code, out, err) = run(&db, &["import", "--format", "aws-cur", input.to_str().expect("utf8")]);
    assert_eq!(code, 0, "{out}{err}");
    let csv_path = dir.path().join("focus.csv");
    let (code, out, err) = run(&db, &["export", "focus", "--out", csv_path.to_str().expect("utf8")]);
    assert_eq!(code, 0, "{out}{err}");
    // 9 charges, 2 of them fees with an unused share: 11 rows, and the user is told why.
    assert!(
        err.contains("exported 11 lines as FOCUS 1.2")
            && err.contains("2 commitment fees' unused shares written as Unused usage rows of their own"),
        "{err}"
    );
    let mut r = csv::Reader::from_path(&csv_path).expect("open export");
    let h = r.headers().expect("header").clone();
    let at = |n: &str| h.iter().position(|c| c == n).unwrap_or_else(|| panic!("no {n} column"));
    let cols = [
        "ChargeCategory",
        "ChargeFrequency",
        "CommitmentDiscountStatus",
        "BilledCost",
        "EffectiveCost",
        "ListCost",
        "ContractedCost",
        "CommitmentDiscountQuantity",
        "CommitmentDiscountUnit",
        "PricingQuantity",
        "ContractedUnitPrice",
    ];
    let idx: Vec<usize> = cols.iter().map(|c| at(c)).collect();
    let commitment = at("CommitmentDiscountId");
    let mut rows = Vec::new();
    let (mut billed, mut effective) = (Decimal::ZERO, Decimal::ZERO);
    for rec in r.records() {
        let rec = rec.expect("record");
        billed += dec(&rec[at("BilledCost")]);
        effective += dec(&rec[at("EffectiveCost")]);
        if rec[commitment].contains("1f2e3d4c") || rec[commitment].contains("5a6b7c8d") {
            rows.push(idx.iter().map(|&i| rec[i].to_string()).collect::<Vec<_>>().join("|"));
        }
    }
    rows.sort();
    assert_eq!(
        rows,
        vec![
            // The reservation: upfront fee (8760 h), monthly fee and its unused 720 h, 24 h used.
            "Purchase|One-Time||219|0|219|219|8760|Hours|1|219",
            "Purchase|Recurring||0.15|0|0.15|0.15|0.15|USD|1|0.15",
            "Purchase|Recurring||26.04|0|80.352|26.04|744|Hours|744|0.035",
            "Usage|Usage-Based|Unused|0|0.012|0|0|0.012|USD|0|",
            "Usage|Usage-Based|Unused|0|43.2|0|0|720|Hours|720|",
            "Usage|Usage-Based|Used|0.192|0.138|0.192|0.192|0.138|USD|1|0.192",
            "Usage|Usage-Based|Used|0|1.44|2.592|2.592|24|Hours|24|0.108",
            "Usage|Usage-Based||-0.192|0|0|0|0|USD|1|",
        ]
    );
    // Σ of the pair is the purchase: the dataset's totals are the bill's.
    assert_eq!(billed, dec("1362.5136"));
    assert_eq!(effective, dec("0.2736") + dec("1.44") + dec("43.2") + dec("0.138") + dec("0.012") + dec("241.05"));
}

#[tokio::test]
async fn both_backends_export_the_same_focus_bytes() {
    let Some(pg) = pg_schema_url().await else { return };
    let dir = tempfile::tempdir().expect("tmp");
    let lite = sqlite_url(dir.path());
    let bills = dir.path().join("sample.csv");
    let (code, out, err) = run(&lite, &["sample", "--rows", "1500", "--out", bills.to_str().expect("utf8")]);
    assert_eq!(code, 0, "{out}{err}");
    let mut exports = Vec::new();
    for (name, db) in [("sqlite", lite.as_str()), ("postgres", pg.as_str())] {
        let (code, out, err) = run(db, &["import", "--format", "focus", bills.to_str().expect("utf8")]);
        assert_eq!(code, 0, "{name}: {out}{err}");
        let p = dir.path().join(format!("{name}.csv"));
        export(db, &p, &["--lineage"]);
        exports.push(std::fs::read(&p).expect("read"));
        // Parquet too: its decimal scale is read from each backend's own columns.
        let p = dir.path().join(format!("{name}.parquet"));
        export(db, &p, &["--lineage", "--format", "parquet"]);
        exports.push(std::fs::read(&p).expect("read"));
        let p = dir.path().join(format!("{name}-1.3.csv"));
        let (code, _, err) = run(db, &["export", "focus", "--version", "1.3", "--out", p.to_str().expect("utf8")]);
        assert_eq!(code, 0, "{err}");
        exports.push(std::fs::read(&p).expect("read"));
    }
    assert!(exports[0] == exports[3], "SQLite and PostgreSQL must export the same FOCUS CSV");
    assert!(exports[1] == exports[4], "SQLite and PostgreSQL must export the same FOCUS Parquet bytes");
    assert!(exports[2] == exports[5], "SQLite and PostgreSQL must export the same FOCUS 1.3 CSV");
}

#[test]
fn a_focus_file_passed_through_gains_no_validator_failure() {
    let Some(venv) = validator() else { return };
    let dir = tempfile::tempdir().expect("tmp");
    let db = sqlite_url(dir.path());
    let input = fixture("focus/focus_sample.csv");
    let (code, out, err) = run(&db, &["import", "--format", "focus", input.to_str().expect("utf8")]);
    assert_eq!(code, 0, "{out}{err}");
    let focus = dir.path().join("focus.csv");
    export(&db, &focus, &[]);
    // Same amounts as the input file, exactly.
    assert_eq!(billed_by_currency(&focus), billed_by_currency(&input));
    let before = failed_rules(&venv, &input, "");
    let after = failed_rules(&venv, &focus, "");
    let gained: Vec<&String> = after.difference(&before).collect();
    assert!(gained.is_empty(), "the export fails rules its input passed: {gained:?} (input failed {before:?})");
}

/// Shared rules for the synthetic bills: tax split by the teams' direct spend, purchases by
/// fixed percentages.
const SPLIT_CONFIG: &str = "allocation:
  owners: [payments, search, platform, data]
  owner_tags: [team]
  tag_aliases: { Team: team }
  rules:
    - name: tax-shared
      match: { charge_category: Tax }
      shared: proportional
    - name: purchases
      match: { charge_category: Purchase }
      shared: { payments: 33.33, search: 33.33, data: 33.34 }
";

/// The rows of a CSV file, each as column → value.
fn csv_rows(path: &Path) -> (Vec<String>, Vec<BTreeMap<String, String>>) {
    let mut r = csv::Reader::from_path(path).expect("open export");
    let h: Vec<String> = r.headers().expect("header").iter().map(str::to_string).collect();
    let rows = r
        .records()
        .map(|rec| {
            let rec = rec.expect("record");
            h.iter().cloned().zip(rec.iter().map(str::to_string)).collect()
        })
        .collect();
    (h, rows)
}

fn sum_of(rows: &[&BTreeMap<String, String>], col: &str) -> Decimal {
    rows.iter().filter(|r| !r[col].is_empty()).map(|r| dec(&r[col])).sum()
}

#[test]
fn focus_1_3_splits_each_shared_charge_by_the_reconcilers_weights_exactly() {
    let dir = tempfile::tempdir().expect("tmp");
    let db = sqlite_url(dir.path());
    let cfg = dir.path().join("config.yaml");
    std::fs::write(&cfg, SPLIT_CONFIG).expect("config");
    let cfg = cfg.to_str().expect("utf8");
    let cli = |args: &[&str]| {
        let mut all = vec!["--config", cfg];
        all.extend_from_slice(args);
        run(&db, &all)
    };
    let bills = dir.path().join("sample.csv");
    let (code, out, err) = cli(&["sample", "--rows", "3000", "--out", bills.to_str().expect("utf8")]);
    assert_eq!(code, 0, "{out}{err}");
    let sample_totals =
        out.split("BilledCost: ").nth(1).expect("sample totals").trim().trim_end_matches(')').to_string();
    let (code, out, err) = cli(&["import", "--format", "focus", bills.to_str().expect("utf8")]);
    assert_eq!(code, 0, "{out}{err}");
    let f13 = dir.path().join("focus-1.3.csv");
    let f13s = f13.to_str().expect("utf8");

    // Before a reconcile there is no split to show: a clear error, no file.
    let (code, _, err) = cli(&["export", "focus", "--version", "1.3", "--out", f13s]);
    assert_ne!(code, 0);
    assert!(err.contains("has not been reconciled") && err.contains("costledger reconcile"), "{err}");
    assert!(!f13.exists(), "a failed export leaves no file");

    let (code, out, err) = cli(&["reconcile"]);
    assert!(code == 0 || code == 1, "{out}{err}");
    let (code, _, err13) = cli(&["export", "focus", "--version", "1.3", "--lineage", "--out", f13s]);
    assert_eq!(code, 0, "{err13}");
    let f12 = dir.path().join("focus-1.2.csv");
    let (code, _, err) = cli(&["export", "focus", "--lineage", "--out", f12.to_str().expect("utf8")]);
    assert_eq!(code, 0, "{err}");

    let (h13, rows13) = csv_rows(&f13);
    let (_, rows12) = csv_rows(&f12);
    let mut want: Vec<&str> = costledger::focus_export::FOCUS_1_3_COLUMNS
        .iter()
        .copied()
        .filter(|c| !["PricingCurrency", "PricingCurrencyEffectiveCost"].contains(c))
        .collect();
    want.extend(["x_owner", "x_allocation_reason", "x_load_id", "x_source", "x_source_ref"]);
    assert_eq!(h13, want);

    // Every amount is kept: the same sums as 1.2 and as the bills, to the last digit.
    let all13: Vec<&BTreeMap<String, String>> = rows13.iter().collect();
    let all12: Vec<&BTreeMap<String, String>> = rows12.iter().collect();
    for col in ["BilledCost", "EffectiveCost", "ListCost", "ContractedCost", "PricingQuantity", "ConsumedQuantity"] {
        assert_eq!(sum_of(&all13, col), sum_of(&all12, col), "Σ {col}");
    }
    let sums = billed_by_currency(&f13);
    let got: Vec<String> = sums.iter().map(|(c, d)| format!("{c} {}", d.normalize())).collect();
    assert_eq!(got.join(", "), sample_totals);

    // The origin charges (by load and source line) and their shares.
    let key = |r: &BTreeMap<String, String>| (r["x_load_id"].clone(), r["x_source_ref"].clone());
    let originals: BTreeMap<_, _> = rows12.iter().map(|r| (key(r), r)).collect();
    assert_eq!(originals.len(), rows12.len(), "x_source_ref names each line");
    let mut shares: BTreeMap<_, Vec<&BTreeMap<String, String>>> = BTreeMap::new();
    for r in rows13.iter().filter(|r| !r["AllocatedMethodId"].is_empty()) {
        shares.entry(key(r)).or_default().push(r);
    }
    // Direct spend per (period, currency, owner): the weights of the proportional split.
    let mut direct: BTreeMap<(String, String), BTreeMap<String, Decimal>> = BTreeMap::new();
    for r in rows13.iter().filter(|r| r["AllocatedMethodId"].is_empty() && !r["x_owner"].is_empty()) {
        assert!(!r["x_allocation_reason"].starts_with("shared:"), "{r:?}");
        *direct
            .entry((r["BillingPeriodStart"].clone(), r["BillingCurrency"].clone()))
            .or_default()
            .entry(r["x_owner"].clone())
            .or_default() += dec(&r["BilledCost"]);
    }
    let (mut tax, mut purchases) = (0, 0);
    for (k, parts) in &shares {
        let origin = originals[k];
        for col in ["BilledCost", "EffectiveCost", "ListCost", "PricingQuantity"] {
            let o = if origin[col].is_empty() { None } else { Some(dec(&origin[col])) };
            let s = parts.iter().any(|p| !p[col].is_empty()).then(|| sum_of(parts, col));
            assert_eq!(s, o, "{col} of the shares of {k:?}");
        }
        // The ratio's JSON number read as its text (never through f64).
        let ratio = |p: &BTreeMap<String, String>| -> Decimal {
            type Details = BTreeMap<String, Vec<BTreeMap<String, Box<serde_json::value::RawValue>>>>;
            let v: Details = serde_json::from_str(&p["AllocatedMethodDetails"]).expect("details json");
            assert_eq!(v.len(), 1, "only Elements: {v:?}");
            dec(v["Elements"][0]["AllocatedRatio"].get())
        };
        assert_eq!(parts.iter().map(|p| ratio(p)).sum::<Decimal>(), Decimal::ONE, "ratios of {k:?}");
        for p in parts {
            assert_eq!(p["AllocatedResourceId"], p["x_owner"]);
            assert_eq!(p["AllocatedResourceName"], p["x_owner"]);
            assert_eq!(p["x_allocation_reason"], p["AllocatedMethodId"]);
            assert_eq!(p["AllocatedTags"], format!(r#"{{"costledger/owner":"{}"}}"#, p["x_owner"]));
            assert_eq!(p["ServiceProviderName"], p["ProviderName"]);
            assert_eq!(p["ContractApplied"], "");
        }
        match origin["ChargeCategory"].as_str() {
            "Purchase" => {
                purchases += 1;
                let got: Vec<(String, Decimal)> = parts.iter().map(|p| (p["x_owner"].clone(), ratio(p))).collect();
                assert_eq!(
                    got,
                    [
                        ("data".to_string(), dec("0.3334")),
                        ("payments".into(), dec("0.3333")),
                        ("search".into(), dec("0.3333"))
                    ]
                );
                assert!(parts.iter().all(|p| p["AllocatedMethodId"] == "shared:fixed:rule:purchases"));
            }
            "Tax" => {
                tax += 1;
                assert!(parts.iter().all(|p| p["AllocatedMethodId"] == "shared:proportional:rule:tax-shared"));
                let w = &direct[&(origin["BillingPeriodStart"].clone(), origin["BillingCurrency"].clone())];
                let total: Decimal = w.values().filter(|v| **v > Decimal::ZERO).sum();
                assert_eq!(parts.len(), w.values().filter(|v| **v > Decimal::ZERO).count());
                for p in parts {
                    let want = w[&p["x_owner"]] / total;
                    assert!((ratio(p) - want).abs() < dec("0.00000000000002"), "{} vs {want}", ratio(p));
                }
            }
            other => panic!("no shared rule matches {other}: {k:?}"),
        }
    }
    assert!(tax > 0 && purchases > 0, "the sample has shared tax ({tax}) and purchases ({purchases})");
    // Every other charge is one row, as in 1.2.
    let extra: usize = shares.values().map(|p| p.len() - 1).sum();
    assert_eq!(rows13.len(), rows12.len() + extra);
    assert!(
        err13.contains(&format!("{} shared charges written as one row per owner's share", shares.len())),
        "{err13}"
    );

    // Parquet: the same rows, exact decimals, read back by DuckDB.
    let Some(venv) = validator() else { return };
    let pq = dir.path().join("focus-1.3.parquet");
    let (code, _, err) =
        cli(&["export", "focus", "--version", "1.3", "--format", "parquet", "--out", pq.to_str().expect("utf8")]);
    assert_eq!(code, 0, "{err}");
    let p = pq.display();
    let got = duckdb(
        &venv,
        &format!(
            "select BillingCurrency, sum(BilledCost)::VARCHAR, count(*), count(AllocatedMethodId) from '{p}' group by 1 order by 1"
        ),
    );
    let rows: u64 = got.iter().map(|l| l.split('|').nth(2).and_then(|n| n.parse::<u64>().ok()).unwrap_or(0)).sum();
    assert_eq!(rows as usize, rows13.len());
    let split_rows: u64 =
        got.iter().map(|l| l.split('|').nth(3).and_then(|n| n.parse::<u64>().ok()).unwrap_or(0)).sum();
    assert_eq!(split_rows as usize, shares.values().map(Vec::len).sum::<usize>());
    let got: Vec<String> = got
        .iter()
        .map(|l| {
            let f: Vec<&str> = l.split('|').collect();
            format!("{} {}", f[0], dec(f[1]).normalize())
        })
        .collect();
    assert_eq!(got.join(", "), sample_totals);
}
