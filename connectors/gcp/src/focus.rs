//! The GCP FOCUS view (`gcp_billing_export_focus_<billing account>`), read through the same
//! BigQuery client. A view has no `_PARTITIONTIME`: deliveries are (billing month × charge day),
//! keyed by a fingerprint of the day's rows (`BIT_XOR(FARM_FINGERPRINT(TO_JSON_STRING(row)))` and
//! the row count), so an unchanged day is skipped and a day with late rows is re-read and replaces
//! itself. Rows come back as `TO_JSON_STRING(row)`: numbers are read as their JSON text (never an
//! f64), `Tags` (a repeated key/value struct) becomes a JSON object, and the record goes through
//! the FOCUS normaliser.

use std::collections::BTreeMap;

use chrono::NaiveDate;
use costledger_core::{ChargeLine, RowError};
use costledger_files::reader::RecordFormat;
use costledger_focus::normalize::ColumnMap;
use serde_json::value::RawValue;

/// Charge days, billing months and a content fingerprint of each (day, month).
pub fn partitions_sql(table: &str, from: NaiveDate, to: NaiveDate, months: &[String]) -> String {
    let list: Vec<String> = months.iter().map(|m| format!("'{m}'")).collect();
    let next = to.succ_opt().unwrap_or(to);
    format!(
        "SELECT CAST(DATE(t.ChargePeriodStart) AS STRING) AS day, FORMAT_TIMESTAMP('%Y%m', t.BillingPeriodStart) AS invoice_month, \
         CAST(BIT_XOR(FARM_FINGERPRINT(TO_JSON_STRING(t))) AS STRING) AS fingerprint, CAST(COUNT(*) AS STRING) AS row_count \
         FROM `{table}` t WHERE t.ChargePeriodStart >= TIMESTAMP('{from}') AND t.ChargePeriodStart < TIMESTAMP('{next}') \
         AND FORMAT_TIMESTAMP('%Y%m', t.BillingPeriodStart) IN ({}) GROUP BY 1, 2 ORDER BY 1, 2",
        list.join(", ")
    )
}

/// One (day, billing month)'s rows as JSON text.
pub fn rows_sql(table: &str, day: NaiveDate, month: &str) -> String {
    format!(
        "SELECT TO_JSON_STRING(t) AS row FROM `{table}` t WHERE DATE(t.ChargePeriodStart) = '{day}' \
         AND FORMAT_TIMESTAMP('%Y%m', t.BillingPeriodStart) = '{month}'"
    )
}

/// A JSON value as the text a FOCUS CSV would carry.
fn cell(key: &str, v: &RawValue) -> String {
    let raw = v.get();
    if raw == "null" {
        return String::new();
    }
    if let Ok(s) = serde_json::from_str::<String>(raw) {
        return s;
    }
    if key.eq_ignore_ascii_case("tags")
        && let Ok(items) = serde_json::from_str::<Vec<BTreeMap<String, serde_json::Value>>>(raw)
    {
        // [{"key": "team", "value": "x"}] → {"team": "x"}
        let mut obj = serde_json::Map::new();
        for i in items {
            if let Some(serde_json::Value::String(k)) = i.get("key") {
                obj.insert(k.clone(), i.get("value").cloned().unwrap_or(serde_json::Value::Null));
            }
        }
        return serde_json::Value::Object(obj).to_string();
    }
    raw.to_string()
}

/// Turns `TO_JSON_STRING` rows into FOCUS lines, keeping one column map per key set.
#[derive(Default)]
pub struct FocusRows {
    header: Vec<String>,
    map: Option<ColumnMap>,
}

impl FocusRows {
    pub fn line(&mut self, json: &str, location: &str) -> Result<(ChargeLine, u64), RowError> {
        let fail = |reason: String| RowError {
            location: location.to_string(),
            reason,
            raw: costledger_core::text::clip(json, 4096),
            raw_amount: None,
            currency: None,
        };
        let obj: BTreeMap<String, Box<RawValue>> =
            serde_json::from_str(json).map_err(|e| fail(format!("the row is not a JSON object: {e}")))?;
        let keys: Vec<String> = obj.keys().cloned().collect();
        if self.map.is_none() || keys != self.header {
            let h = csv::ByteRecord::from(keys.iter().map(String::as_str).collect::<Vec<_>>());
            self.map = Some(ColumnMap::from_header(&h).map_err(|m| fail(format!("not a FOCUS row: {m}")))?);
            self.header = keys;
        }
        let rec = csv::ByteRecord::from(obj.iter().map(|(k, v)| cell(k, v)).collect::<Vec<_>>());
        let map = self.map.as_ref().ok_or_else(|| fail("no column map".into()))?;
        RecordFormat::normalize(map, &rec, location)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_rows_become_focus_lines_exactly() {
        let mut f = FocusRows::default();
        let row = r#"{"BilledCost":1.2345678901234567,"BillingAccountId":"0123AB-CDEF45-6789AB","BillingCurrency":"USD","BillingPeriodStart":"2024-03-01T00:00:00Z","BillingPeriodEnd":"2024-04-01T00:00:00Z","ChargeCategory":"Usage","ChargePeriodStart":"2024-03-05T00:00:00Z","ChargePeriodEnd":"2024-03-05T01:00:00Z","EffectiveCost":1.2345678901234567,"ProviderName":"Google Cloud","ServiceName":"Compute Engine","SubAccountId":"payments-prod","Tags":[{"key":"team","value":"payments"},{"key":"env","value":"prod"}],"x_Credits":null}"#;
        let (l, _) = f.line(row, "view row 1").expect("line");
        assert_eq!(l.billed_cost.to_string(), "1.2345678901234567");
        assert_eq!(l.tags.get("team").map(String::as_str), Some("payments"));
        assert_eq!(l.sub_account_id.as_deref(), Some("payments-prod"));
        let e = f.line("[1,2]", "view row 2").expect_err("not an object");
        assert!(e.reason.starts_with("the row is not a JSON object"), "{}", e.reason);
    }
}
