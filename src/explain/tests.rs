//! Fixtures whose answer is known by construction, and the exact add-back on random data.

use proptest::prelude::*;

use super::*;

fn sum(s: &str) -> ExactSum {
    s.parse().expect("amount")
}

fn period(s: &str) -> Period {
    Period::parse(s, "--from").expect("period")
}

fn spec(by: &[&str], currency: Option<&str>) -> Spec {
    Spec {
        by: by.iter().map(|s| s.to_string()).collect(),
        metric: Metric::BilledCost,
        from: period("2026-10"),
        to: period("2026-11"),
        currency: currency.map(str::to_string),
        top: None,
    }
}

/// A Usage fact of group `g`, service `svc`, SKU `sku` in Hours, USD, October or November.
fn usage(g: &str, svc: &str, sku: &str, cost: &str, qty: &str, nov: bool) -> Fact {
    Fact {
        keys: vec![Some(g.to_string())],
        service: Some(svc.to_string()),
        sku: Some(sku.to_string()),
        pricing_unit: Some("Hours".into()),
        priced_category: true,
        currency: "USD".into(),
        month: BillingPeriod::new(2026, if nov { 11 } else { 10 }).expect("month"),
        cost: sum(cost),
        quantity: Some(sum(qty)),
    }
}

fn credit(g: &str, cost: &str, nov: bool) -> Fact {
    Fact { priced_category: false, quantity: None, ..usage(g, "EC2", "credit", cost, "0", nov) }
}

fn parts(e: &Explanation, g: &str) -> Parts {
    e.groups.iter().find(|x| x.keys == vec![Some(g.to_string())]).expect("group").parts
}

fn only(p: Parts) -> Vec<(&'static str, String)> {
    PART_NAMES.iter().zip(part_values(&p)).filter(|(_, v)| !v.is_zero()).map(|(n, v)| (*n, v.to_string())).collect()
}

fn assert_adds_back(e: &Explanation) {
    for g in &e.groups {
        assert_eq!(g.parts.sum().expect("sum"), g.change, "{}", g.sentence);
        assert_eq!(g.after.checked_sub(&g.before).expect("sub"), g.change);
    }
    for t in &e.totals {
        assert_eq!(t.parts.sum().expect("sum"), t.change);
    }
}

#[test]
fn a_price_only_change_is_all_rate() {
    let a = [usage("ec2", "EC2", "m5.large", "10.00", "100", false)];
    let b = [usage("ec2", "EC2", "m5.large", "12.00", "100", true)];
    let e = decompose(&spec(&["service"], None), &a, &b, &[]).expect("explains");
    assert_eq!(only(parts(&e, "ec2")), vec![("rate", "2".into())]);
    assert_adds_back(&e);
}

#[test]
fn a_volume_only_change_is_all_volume() {
    let a = [usage("ec2", "EC2", "m5.large", "10.00", "100", false), usage("ec2", "EC2", "m5.xl", "20", "100", false)];
    let b = [usage("ec2", "EC2", "m5.large", "13.00", "130", true), usage("ec2", "EC2", "m5.xl", "26", "130", true)];
    let e = decompose(&spec(&["service"], None), &a, &b, &[]).expect("explains");
    assert_eq!(only(parts(&e, "ec2")), vec![("volume", "9".into())]);
    let g = &e.groups[0];
    assert_eq!(g.quantity.as_ref().and_then(|q| q.percent), Some(Decimal::new(3000, 2)));
    assert_eq!(g.sentence, "ec2: +9.00 USD (30.00 → 39.00), of which volume +9.00 (+30.00% Hours)");
}

#[test]
fn a_fall_in_usage_reads_with_a_minus_sign() {
    let a = [usage("ec2", "EC2", "m5", "10", "100", false)];
    let b = [usage("ec2", "EC2", "m5", "8", "80", true)];
    let e = decompose(&spec(&["service"], None), &a, &b, &[]).expect("explains");
    assert_eq!(e.groups[0].sentence, "ec2: −2.00 USD (10.00 → 8.00), of which volume −2.00 (−20.00% Hours)");
}

#[test]
fn volume_and_rate_together_split_at_the_old_price() {
    let a = [usage("ec2", "EC2", "m5.large", "10", "100", false)];
    let b = [usage("ec2", "EC2", "m5.large", "14.40", "120", true)];
    let e = decompose(&spec(&["service"], None), &a, &b, &[]).expect("explains");
    assert_eq!(only(parts(&e, "ec2")), vec![("volume", "2".into()), ("rate", "2.4".into())]);
}

#[test]
fn a_sku_swap_inside_a_unit_class_is_mix() {
    let a = [usage("ec2", "EC2", "m5.large", "10", "100", false)];
    let b = [usage("ec2", "EC2", "m5.xlarge", "20", "100", true)];
    let e = decompose(&spec(&["service"], None), &a, &b, &[]).expect("explains");
    assert_eq!(only(parts(&e, "ec2")), vec![("mix", "10".into())]);
}

#[test]
fn a_shift_between_skus_at_unchanged_prices_is_mix_not_rate() {
    // 100 h at 0.10 + 100 h at 0.20 → 50 h at 0.10 + 150 h at 0.20: same hours, same prices.
    let a = [usage("ec2", "EC2", "s", "10", "100", false), usage("ec2", "EC2", "l", "20", "100", false)];
    let b = [usage("ec2", "EC2", "s", "5", "50", true), usage("ec2", "EC2", "l", "30", "150", true)];
    let e = decompose(&spec(&["service"], None), &a, &b, &[]).expect("explains");
    assert_eq!(only(parts(&e, "ec2")), vec![("mix", "5".into())]);
}

#[test]
fn a_new_service_is_new_and_a_vanished_one_gone() {
    let a = [usage("team", "EC2", "m5", "10", "100", false), usage("team", "RDS", "db", "7", "10", false)];
    let b = [usage("team", "EC2", "m5", "10", "100", true), usage("team", "S3", "std", "4.5", "300", true)];
    let e = decompose(&spec(&["owner"], None), &a, &b, &[]).expect("explains");
    assert_eq!(only(parts(&e, "team")), vec![("new", "4.5".into()), ("gone", "7".into())]);
    assert_adds_back(&e);
    assert_eq!(e.groups[0].sentence, "team: −2.50 USD (17.00 → 14.50), of which new +4.50, gone −7.00");
}

#[test]
fn credits_tax_and_fees_are_no_quantity() {
    let a = [usage("ec2", "EC2", "m5", "10", "100", false), credit("ec2", "-1", false)];
    let b = [usage("ec2", "EC2", "m5", "10", "100", true), credit("ec2", "-3", true)];
    let e = decompose(&spec(&["service"], None), &a, &b, &[]).expect("explains");
    assert_eq!(only(parts(&e, "ec2")), vec![("no_quantity", "-2".into())]);
}

#[test]
fn a_division_is_rounded_and_the_remainder_keeps_the_sum_exact() {
    // 3 h for 10.00 → 4 h for 10.00: volume 1 × 10/3 = 3.33, rate −3.33.
    let a = [usage("ec2", "EC2", "m5", "10.00", "3", false)];
    let b = [usage("ec2", "EC2", "m5", "10.00", "4", true)];
    let e = decompose(&spec(&["service"], None), &a, &b, &[]).expect("explains");
    assert_eq!(only(parts(&e, "ec2")), vec![("volume", "3.33".into()), ("rate", "-3.33".into())]);
    assert_adds_back(&e);
}

fn rate(month: &str, r: &str) -> FxRate {
    FxRate {
        month: month.into(),
        from: "EUR".into(),
        to: "USD".into(),
        rate: r.parse().expect("rate"),
        provenance: "fx.csv".into(),
    }
}

#[test]
fn a_currency_move_alone_is_all_fx() {
    let eur = |f: Fact| Fact { currency: "EUR".into(), ..f };
    let a = [eur(usage("vm", "VM", "d2", "100", "10", false))];
    let b = [eur(usage("vm", "VM", "d2", "100", "10", true))];
    let rates = [rate("2026-10", "1.1"), rate("2026-11", "1.2")];
    let e = decompose(&spec(&["service"], Some("USD")), &a, &b, &rates).expect("explains");
    let g = &e.groups[0];
    assert_eq!((g.before.to_string(), g.after.to_string(), g.currency.as_str()), ("110".into(), "120".into(), "USD"));
    assert_eq!(only(g.parts), vec![("fx", "10".into())]);
    assert_eq!(e.rates_used.len(), 2);
    // Usage growth converts at the reference (October) rate; the rest is FX.
    let b = [eur(usage("vm", "VM", "d2", "110", "11", true))];
    let e = decompose(&spec(&["service"], Some("USD")), &a, &b, &rates).expect("explains");
    assert_eq!(only(e.groups[0].parts), vec![("volume", "11".into()), ("fx", "11".into())]);
    // No rate for November: an error naming the month and pair, never a fallback.
    let err = decompose(&spec(&["service"], Some("USD")), &a, &b, &rates[..1]).expect_err("no rate");
    assert!(err.to_string().contains("no exchange rate from EUR to USD for 2026-11"), "{err}");
}

#[test]
fn charges_moved_between_owners_by_new_rules_are_the_allocation_part() {
    // Today's rules give A's 7.00 of RDS to data; the reconcile of A had given it to search.
    let a = [usage("search", "S3", "std", "23", "1000", false), usage("data", "RDS", "db", "7", "10", false)];
    let b = [usage("search", "S3", "std", "23", "1000", true)];
    let key = |g: &str| (vec![Some(g.to_string())], "USD".to_string());
    let stored = StoredBefore::from([(key("search"), sum("30"))]);
    let e = decompose_with(&spec(&["owner"], None), &a, &b, &[], Some(&stored)).expect("explains");
    assert_adds_back(&e);
    let search = e.groups.iter().find(|g| g.keys == key("search").0).expect("search");
    assert_eq!((search.before.to_string(), search.change.to_string()), ("30".into(), "-7".into()));
    assert_eq!(only(search.parts), vec![("allocation", "-7".into())]);
    let data = e.groups.iter().find(|g| g.keys == key("data").0).expect("data");
    assert_eq!(only(data.parts), vec![("gone", "7".into()), ("allocation", "7".into())]);
    assert!(search.sentence.ends_with("of which allocation rules −7.00"), "{}", search.sentence);
}

#[test]
fn top_n_keeps_the_largest_changes_and_others_keeps_the_total() {
    let a = [
        usage("a", "EC2", "x", "10", "1", false),
        usage("b", "EC2", "x", "10", "1", false),
        usage("c", "EC2", "x", "10", "1", false),
    ];
    let b = [
        usage("a", "EC2", "x", "11", "1", true),
        usage("b", "EC2", "x", "50", "5", true),
        usage("c", "EC2", "x", "1", "1", true),
    ];
    let mut s = spec(&["owner"], None);
    s.top = Some(1);
    let e = decompose(&s, &a, &b, &[]).expect("explains");
    assert_eq!(e.groups.len(), 2);
    assert_eq!(e.groups[0].keys, vec![Some("b".to_string())]);
    assert!(e.groups[1].others);
    assert_eq!(e.groups[1].change.to_string(), "-8");
    assert_eq!(e.totals[0].change.to_string(), "32");
    assert_adds_back(&e);
}

#[test]
fn periods_parse_and_must_be_comparable() {
    let p = Period::parse("2026-11-01..2026-11-07", "--from").expect("range");
    assert_eq!((p.kind, p.last.to_string()), (PeriodKind::Days(7), "2026-11-07".to_string()));
    assert_eq!(Period::parse("2026-W45", "--to").expect("week").kind, PeriodKind::Week);
    assert!(matches!(Period::parse("2026-11-07..2026-11-01", "--from"), Err(ExplainError::BadPeriod(..))));
    assert!(matches!(Period::parse("last month", "--from"), Err(ExplainError::BadPeriod(..))));
    let e = check_periods(&period("2026-10"), &Period::parse("2026-W45", "--to").expect("week")).expect_err("kinds");
    assert_eq!(
        e.to_string(),
        "--from 2026-10 is a month and --to 2026-W45 a ISO week: compare periods of the same kind (two months, two ISO \
         weeks or two day ranges of equal length)"
    );
    assert!(matches!(check_periods(&period("2026-11"), &period("2026-10")), Err(ExplainError::Overlap { .. })));
    assert!(matches!(check_metric(Metric::PricingQuantity), Err(ExplainError::NotMoney(_))));
}

fn amount() -> impl Strategy<Value = String> {
    (-100_000i64..1_000_000, 0u32..6).prop_map(|(m, s)| Decimal::new(m, s).to_string())
}

fn fact() -> impl Strategy<Value = Fact> {
    (
        0..3usize,
        0..3usize,
        0..4usize,
        0..2usize,
        amount(),
        prop::option::of(amount()),
        any::<bool>(),
        any::<bool>(),
        any::<bool>(),
    )
        .prop_map(|(g, svc, sku, unit, cost, qty, usage_line, nov, eur)| Fact {
            keys: vec![Some(format!("g{g}"))],
            service: Some(format!("svc{svc}")),
            sku: (sku > 0).then(|| format!("sku{sku}")),
            pricing_unit: Some(["Hours", "GB"][unit].into()),
            priced_category: usage_line,
            currency: if eur { "EUR" } else { "USD" }.into(),
            month: BillingPeriod::new(2026, if nov { 11 } else { 10 }).expect("month"),
            cost: cost.parse().expect("cost"),
            quantity: qty.map(|q| q.parse().expect("qty")),
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]
    #[test]
    fn the_parts_add_back_to_the_change_exactly(
        facts in prop::collection::vec(fact(), 0..40),
        convert in any::<bool>(),
        top in prop::option::of(1usize..3),
    ) {
        let (a, b): (Vec<Fact>, Vec<Fact>) = facts.into_iter().partition(|f| f.month.to_string() == "2026-10");
        let rates = [rate("2026-10", "1.0837"), rate("2026-11", "1.1021")];
        let mut s = spec(&["owner"], convert.then_some("USD"));
        s.top = top;
        let e = decompose(&s, &a, &b, &rates).expect("explains");
        assert_adds_back(&e);
        for g in &e.groups {
            if !convert {
                prop_assert!(g.parts.fx.is_zero(), "fx without conversion: {}", g.sentence);
            }
        }
        // The totals are the independent sums of the facts.
        if !convert {
            for t in &e.totals {
                let mut before = ExactSum::ZERO;
                let mut after = ExactSum::ZERO;
                for f in a.iter().filter(|f| f.currency == t.currency) { before.merge(&f.cost).expect("sum"); }
                for f in b.iter().filter(|f| f.currency == t.currency) { after.merge(&f.cost).expect("sum"); }
                prop_assert_eq!((t.before, t.after), (before, after));
            }
        }
    }
}
