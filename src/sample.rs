//! Deterministic synthetic FOCUS 1.2 bills: several providers, billing and sub accounts,
//! services, regions, tags (some missing, some misspelt), two currencies, credits, tax, a
//! commitment purchase and a correction. Same seed, same bytes. The generator also returns
//! the exact totals it wrote, so tests can prove the ledger matches to the last digit.

use std::io::Write;

use chrono::Duration;
use costledger_core::{BillingPeriod, FOCUS_COLUMNS, Totals, format_ts};
use rust_decimal::Decimal;

/// SplitMix64: tiny, fast, deterministic; not for secrets.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
    fn pick<'a, T>(&mut self, xs: &'a [T]) -> &'a T {
        &xs[self.below(xs.len() as u64) as usize]
    }
    fn percent(&mut self, p: u64) -> bool {
        self.below(100) < p
    }
}

struct Account {
    provider: &'static str,
    publisher: &'static str,
    issuer: &'static str,
    billing_id: &'static str,
    billing_name: &'static str,
    currency: &'static str,
    invoice: Option<&'static str>,
    subs: &'static [(&'static str, &'static str)],
    /// (ServiceName, ServiceCategory, ServiceSubcategory, PricingUnit)
    services: &'static [(&'static str, &'static str, &'static str, &'static str)],
    /// (RegionId, RegionName)
    regions: &'static [(&'static str, &'static str)],
    weight: u64,
}

const ACCOUNTS: [Account; 3] = [
    Account {
        provider: "AWS",
        publisher: "Amazon Web Services, Inc.",
        issuer: "Amazon Web Services, Inc.",
        billing_id: "111111111111",
        billing_name: "acme-payer",
        currency: "USD",
        invoice: Some("INV-AWS-0001"),
        subs: &[("222222222222", "acme-prod"), ("333333333333", "acme-staging"), ("444444444444", "acme-data")],
        services: &[
            ("Amazon Elastic Compute Cloud", "Compute", "Virtual Machines", "Hours"),
            ("Amazon Simple Storage Service", "Storage", "Object Storage", "GB-Months"),
            ("Amazon Relational Database Service", "Databases", "Relational Databases", "Hours"),
            ("AWS Lambda", "Compute", "Serverless Compute", "Requests"),
            ("Amazon CloudWatch", "Management and Governance", "Observability", "Metrics"),
        ],
        regions: &[
            ("us-east-1", "US East (N. Virginia)"),
            ("eu-west-1", "Europe (Ireland)"),
            ("us-west-2", "US West (Oregon)"),
        ],
        weight: 60,
    },
    Account {
        provider: "Microsoft",
        publisher: "Microsoft",
        issuer: "Microsoft",
        billing_id: "ea-8608480",
        billing_name: "Acme Europe EA",
        currency: "EUR",
        invoice: Some("E0600ACME1"),
        subs: &[
            ("9b6a2f3e-1c2d-4e5f-8a9b-0c1d2e3f4a5b", "acme-eu-prod"),
            ("0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0", "acme-eu-dev"),
        ],
        services: &[
            ("Virtual Machines", "Compute", "Virtual Machines", "Hours"),
            ("Storage", "Storage", "Block Storage", "GB-Months"),
            ("Azure SQL Database", "Databases", "Relational Databases", "vCore-Hours"),
        ],
        regions: &[("westeurope", "West Europe"), ("northeurope", "North Europe")],
        weight: 25,
    },
    Account {
        provider: "Google Cloud",
        publisher: "Google",
        issuer: "Google",
        billing_id: "01A2B3-C4D5E6-F7A8B9",
        billing_name: "Acme GCP billing",
        currency: "USD",
        invoice: Some("3185702914"),
        subs: &[("acme-analytics", "Acme Analytics"), ("acme-web", "Acme Web")],
        services: &[
            ("Compute Engine", "Compute", "Virtual Machines", "Hours"),
            ("BigQuery", "Analytics", "Data Processing", "TiB"),
            ("Cloud Storage", "Storage", "Object Storage", "GiB-Months"),
        ],
        regions: &[("us-central1", "Iowa"), ("europe-west1", "Belgium")],
        weight: 15,
    },
];

const TEAMS: [&str; 4] = ["payments", "search", "platform", "data"];
const APPS: [&str; 6] = ["checkout-api", "checkout-web", "search-indexer", "ledger", "etl", "grafana"];

#[derive(Debug, Clone, Copy)]
pub struct SampleSpec {
    pub rows: u64,
    pub seed: u64,
    pub period: BillingPeriod,
}

#[derive(Debug, Clone, Default)]
pub struct SampleStats {
    pub rows: u64,
    /// Σ BilledCost per currency, exactly as written.
    pub totals: Totals,
}

fn amount(m: i64, scale: u32) -> Decimal {
    Decimal::new(m, scale)
}

/// Write `spec.rows` data lines (plus the header) as FOCUS CSV.
pub fn write_sample<W: Write>(out: W, spec: SampleSpec) -> std::io::Result<SampleStats> {
    let mut w = csv::WriterBuilder::new().from_writer(out);
    w.write_record(FOCUS_COLUMNS.iter().chain(&[
        "ChargeFrequency",
        "ServiceSubcategory",
        "RegionName",
        "ResourceType",
        "CommitmentDiscountCategory",
        "CommitmentDiscountStatus",
        "CommitmentDiscountType",
        "PricingCategory",
    ]))?;
    let mut rng = Rng(spec.seed ^ 0x5EED_C057_1ED6_E400);
    let start = spec.period.start();
    let end = spec.period.end();
    let days = (end - start).num_days().max(1) as u64;
    let bp_start = format_ts(start);
    let bp_end = format_ts(end);
    let mut stats = SampleStats::default();
    let total_weight: u64 = ACCOUNTS.iter().map(|a| a.weight).sum();
    let n = spec.rows;
    for i in 0..n {
        let mut roll = rng.below(total_weight);
        let acct = ACCOUNTS
            .iter()
            .find(|a| {
                if roll < a.weight {
                    true
                } else {
                    roll -= a.weight;
                    false
                }
            })
            .unwrap_or(&ACCOUNTS[0]);
        let (sub_id, sub_name) = *rng.pick(acct.subs);
        let (service, category, subcategory, unit) = *rng.pick(acct.services);
        let (region, region_name) = *rng.pick(acct.regions);
        let day = rng.below(days) as i64;
        let hour = rng.below(24) as i64;
        let cp_start = start + Duration::days(day) + Duration::hours(hour);
        let cp_end = cp_start + Duration::hours(1);
        let mut cp = (format_ts(cp_start), format_ts(cp_end));
        let mut charge_class = "";
        let mut commitment = String::new();
        let (kind, billed, billed_text, description): (&str, Decimal, String, String) = if n > 2 && i == n / 2 {
            cp = (bp_start.clone(), bp_end.clone());
            commitment = format!("arn:aws:savingsplans::{}:savingsplan/sp-0001", acct.billing_id);
            let d = amount(1_200_000_000_000, 9);
            ("Purchase", d, d.to_string(), "Compute Savings Plan, 1 year, all upfront".to_string())
        } else if n > 1 && i == n - 1 {
            charge_class = "Correction";
            let d = amount(-123_456_789_012, 10);
            ("Usage", d, d.to_string(), format!("Correction of {} usage billed in the previous period", service))
        } else if i % 101 == 7 {
            cp = (bp_start.clone(), bp_end.clone());
            let d = amount(rng.below(40_000_000) as i64 + 1, 6);
            ("Tax", d, d.to_string(), "Sales tax".to_string())
        } else if i % 67 == 3 {
            let d = amount(-(rng.below(5_000_000_000) as i64 + 1), 10);
            ("Credit", d, d.to_string(), "Promotional credit".to_string())
        } else if acct.provider == "AWS" && i % 331 == 17 {
            // The savings plan's unused share of an hour: billed 0, its EffectiveCost below.
            commitment = format!("arn:aws:savingsplans::{}:savingsplan/sp-0001", acct.billing_id);
            ("Usage", Decimal::ZERO, "0".to_string(), "Unused Savings Plan commitment".to_string())
        } else {
            let digits = 6 + rng.below(7) as u32;
            let m = rng.below(10u64.pow(digits)) as i64;
            let d = amount(m, 10);
            // One usage line in 50 is written in E-notation, as AWS and OCI files do.
            let text = if i % 50 == 11 && m != 0 { format!("{}E-10", m) } else { d.to_string() };
            ("Usage", d, text, format!("{} {} in {}", service, unit, region))
        };
        let factor = match rng.below(3) {
            0 => Decimal::ONE,
            1 => amount(72, 2),
            _ => amount(85, 2),
        };
        // Every 5th AWS usage hour is covered by the account's savings plan: billed 0 (the
        // purchase paid for it), its EffectiveCost the amortised rate, its ContractedCost and
        // ListCost those of the on-demand hour (FOCUS).
        let unused = !commitment.is_empty() && kind == "Usage";
        let covered = kind == "Usage" && acct.provider == "AWS" && commitment.is_empty() && i % 5 == 2;
        if covered {
            commitment = format!("arn:aws:savingsplans::{}:savingsplan/sp-0001", acct.billing_id);
        }
        let on_demand = billed;
        let (billed, billed_text) = if covered { (Decimal::ZERO, "0".to_string()) } else { (billed, billed_text) };
        // A purchase that covers future usage is amortised into that usage: its own
        // EffectiveCost is 0 (FOCUS).
        let effective = match (kind, covered, unused) {
            ("Purchase", _, _) => Decimal::ZERO,
            (_, true, _) => (on_demand * amount(72, 2)).round_dp(10),
            (_, _, true) => amount(rng.below(400_000_000) as i64 + 1, 6),
            _ => (billed * factor).round_dp(10),
        };
        let list = (on_demand * amount(115, 2)).round_dp(10);
        let (commit_category, commit_status, commit_type, pricing_category) = match (kind, covered, unused) {
            ("Purchase", _, _) => ("Spend", "", "Compute Savings Plan", "Committed"),
            (_, true, _) => ("Spend", "Used", "Compute Savings Plan", "Committed"),
            (_, _, true) => ("Spend", "Unused", "Compute Savings Plan", "Committed"),
            ("Usage", _, _) => ("", "", "", "Standard"),
            _ => ("", "", "", ""),
        };
        let qty = amount(rng.below(1_000_000) as i64 + 1, 3);
        let resource = match acct.provider {
            "AWS" => format!("arn:aws:ec2:{region}:{sub_id}:instance/i-{:016x}", rng.below(500)),
            "Microsoft" => {
                format!("/subscriptions/{sub_id}/resourceGroups/rg-{}/providers/vm-{}", rng.below(8), rng.below(200))
            }
            _ => format!("//compute.googleapis.com/projects/{sub_id}/instances/vm-{}", rng.below(300)),
        };
        let mut tags: Vec<(String, String)> = Vec::new();
        if (kind == "Usage" && !unused) || kind == "Credit" {
            let team = *rng.pick(&TEAMS);
            if rng.percent(8) {
                // no owner tag
            } else if rng.percent(3) {
                tags.push(("Team".to_string(), team.to_string()));
            } else if rng.percent(2) {
                tags.push(("team".to_string(), team.replace("ay", "ya").replace("ea", "ae")));
            } else {
                tags.push(("team".to_string(), team.to_string()));
            }
            tags.push(("env".to_string(), (*rng.pick(&["prod", "staging", "dev"])).to_string()));
            if rng.percent(70) {
                tags.push(("app".to_string(), (*rng.pick(&APPS)).to_string()));
            }
        }
        tags.sort();
        let tags_json = if tags.is_empty() {
            String::new()
        } else {
            serde_json::to_string(&tags.iter().cloned().collect::<std::collections::BTreeMap<_, _>>())
                .unwrap_or_default()
        };
        let sku = format!("SKU-{}-{:04}", &acct.provider[..2].to_ascii_uppercase(), rng.below(40));
        let is_usage = kind == "Usage";
        let frequency = match kind {
            "Usage" => "Usage-Based",
            "Tax" => "Recurring",
            _ => "One-Time",
        };
        let row: [&str; 40] = [
            acct.billing_id,
            acct.billing_name,
            sub_id,
            sub_name,
            &bp_start,
            &bp_end,
            &cp.0,
            &cp.1,
            kind,
            charge_class,
            &description,
            service,
            category,
            acct.provider,
            acct.publisher,
            acct.issuer,
            region,
            if is_usage && !unused { &resource } else { "" },
            if is_usage && !unused { resource.rsplit('/').next().unwrap_or_default() } else { "" },
            &sku,
            &billed_text,
            &effective.to_string(),
            &list.to_string(),
            &on_demand.to_string(),
            acct.currency,
            &if is_usage { qty.to_string() } else { String::new() },
            if is_usage { unit } else { "" },
            // A commitment's unused share consumed nothing (FOCUS: ConsumedQuantity null).
            &if is_usage && !unused { qty.to_string() } else { String::new() },
            if is_usage && !unused { unit } else { "" },
            &commitment,
            acct.invoice.unwrap_or_default(),
            &tags_json,
            frequency,
            subcategory,
            region_name,
            if is_usage && !unused { "Virtual Machine" } else { "" },
            commit_category,
            commit_status,
            commit_type,
            pricing_category,
        ];
        w.write_record(row)?;
        stats.rows += 1;
        stats.totals.add(acct.currency, billed).map_err(|e| std::io::Error::other(e.to_string()))?;
    }
    w.flush()?;
    Ok(stats)
}

/// Write a sample to `path` (gzip when it ends in `.gz`).
pub fn write_sample_file(path: &std::path::Path, spec: SampleSpec) -> std::io::Result<SampleStats> {
    if let Some(dir) = path.parent()
        && !dir.as_os_str().is_empty()
    {
        std::fs::create_dir_all(dir)?;
    }
    let mut f = crate::outfile::OutFile::create(path)?;
    let stats = if path.extension().is_some_and(|e| e == "gz") {
        let mut gz = flate2::write::GzEncoder::new(&mut f, flate2::Compression::fast());
        let stats = write_sample(&mut gz, spec)?;
        gz.finish()?;
        stats
    } else {
        write_sample(&mut f, spec)?
    };
    f.commit()?;
    Ok(stats)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn generate(rows: u64, seed: u64) -> (Vec<u8>, SampleStats) {
        let mut buf = Vec::new();
        let spec = SampleSpec { rows, seed, period: "2026-10".parse().expect("p") };
        let stats = write_sample(&mut buf, spec).expect("write");
        (buf, stats)
    }

    #[test]
    fn deterministic_for_a_seed_and_different_across_seeds() {
        let (a, sa) = generate(500, 7);
        let (b, _) = generate(500, 7);
        let (c, _) = generate(500, 8);
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert_eq!(sa.rows, 500);
        let text = String::from_utf8(a).expect("utf8");
        assert_eq!(text.lines().count(), 501);
        for needle in [",Tax,", ",Credit,", ",Purchase,", ",Correction,", "EUR", "USD", "E-10", "\"\"Team\"\""] {
            assert!(text.contains(needle), "sample lacks {needle}");
        }
    }
}
