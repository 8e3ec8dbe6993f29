//! Converting an exact sum to another currency with the imported rates (`fx import`): the one
//! rule the weekly report and queries share — a billing period's amount at that month's rate,
//! the exact sum times the rate, never a fallback rate.

use costledger_core::{ExactSum, MoneyError};

use crate::ledger::FxRate;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FxError {
    #[error(
        "no exchange rate from {from} to {to} for {month}: import one with `costledger fx import FILE` \
         (columns month,from,to,rate)"
    )]
    MissingRate { from: String, to: String, month: String },
    #[error(
        "{amount} {from} × the {month} rate {rate} has more than 28 decimal places or digits: it cannot be \
         converted exactly (shorten the rate in the FX file)"
    )]
    Inexact { amount: String, from: String, month: String, rate: String },
    #[error("{0}")]
    Money(#[from] MoneyError),
}

/// `amount` in `from` converted to `to` at `month`'s rate (`YYYY-MM`), with the rate used
/// (`None` when the currencies are the same). A sum too wide for an exact product is refused
/// rather than rounded.
pub fn convert<'r>(
    rates: &'r [FxRate],
    amount: &ExactSum,
    from: &str,
    to: &str,
    month: &str,
) -> Result<(ExactSum, Option<&'r FxRate>), FxError> {
    if from == to {
        return Ok((*amount, None));
    }
    let r = rates
        .iter()
        .find(|r| r.month == month && r.from == from && r.to == to)
        .ok_or_else(|| FxError::MissingRate { from: from.into(), to: to.into(), month: month.into() })?;
    let d = amount.to_exact_decimal().ok_or(MoneyError::SumOverflow)?;
    // `checked_mul` would round a product past 28 decimal places silently: refuse it instead.
    let product = costledger_core::exact_product(d, r.rate).ok_or_else(|| FxError::Inexact {
        amount: d.to_string(),
        from: from.into(),
        month: month.into(),
        rate: r.rate.to_string(),
    })?;
    Ok((ExactSum::from(product), Some(r)))
}

/// How a rate is cited beside converted amounts: `2026-10 1 EUR = 1.08 USD (ecb.csv:2)`.
pub fn describe(r: &FxRate) -> String {
    format!("{} 1 {} = {} {} ({})", r.month, r.from, r.rate, r.to, r.provenance)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rate() -> FxRate {
        FxRate {
            month: "2026-10".into(),
            from: "EUR".into(),
            to: "USD".into(),
            rate: "1.0837".parse().expect("rate"),
            provenance: "fx.csv:2".into(),
        }
    }

    #[test]
    fn a_sum_converts_exactly_at_its_months_rate() {
        let amount: ExactSum = "100.005".parse().expect("sum");
        let rates = [rate()];
        let (c, used) = convert(&rates, &amount, "EUR", "USD", "2026-10").expect("converts");
        assert_eq!(c.to_string(), "108.3754185");
        assert_eq!(used.map(describe).as_deref(), Some("2026-10 1 EUR = 1.0837 USD (fx.csv:2)"));
        assert_eq!(convert(&rates, &amount, "USD", "USD", "2026-10").expect("same"), (amount, None));
    }

    #[test]
    fn a_product_past_28_places_is_refused_never_rounded() {
        let mut r = rate();
        r.rate = "1.0837000000000000000000001".parse().expect("rate");
        let amount: ExactSum = "100.005".parse().expect("sum");
        let e = convert(&[r], &amount, "EUR", "USD", "2026-10").expect_err("too many places");
        assert!(matches!(e, FxError::Inexact { .. }), "{e:?}");
        assert!(e.to_string().contains("cannot be converted exactly"), "{e}");
    }

    #[test]
    fn a_missing_rate_names_the_month_and_pair() {
        let e = convert(&[rate()], &ExactSum::ZERO, "EUR", "USD", "2026-11").expect_err("no rate");
        assert_eq!(e, FxError::MissingRate { from: "EUR".into(), to: "USD".into(), month: "2026-11".into() });
    }
}
