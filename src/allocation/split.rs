//! Exact splitting of a shared amount among owners by weights (largest remainders).

use costledger_core::ExactSum;
use ethnum::I256;
use rust_decimal::Decimal;

/// Split `amount` among owners in proportion to `weights` (non-negative, at least one
/// positive), exactly: every share is a multiple of 10^-s where s = max(2, the amount's own
/// number of decimal places), and the shares sum to `amount`.
///
/// The remainder: each owner first gets its share rounded toward zero; the units left over go
/// one each to the owners with the largest dropped fraction, ties to the owner first in
/// alphabetical order. So 100.00 split three ways is 33.34 (the alphabetically first owner),
/// 33.33, 33.33.
pub fn split_exact(amount: ExactSum, weights: &[(String, ExactSum)]) -> Result<Vec<(String, ExactSum)>, String> {
    let mut ws: Vec<(String, I256)> =
        weights.iter().map(|(o, w)| (o.clone(), units(w))).filter(|(_, w)| *w > I256::ZERO).collect();
    ws.sort_by(|a, b| a.0.cmp(&b.0));
    if ws.is_empty() {
        return Err("no owner has a positive weight to split by".into());
    }
    // Weights only need relative precision: keep them under 2^100 so products fit in 256 bits.
    let max_bits = ws.iter().map(|(_, w)| 256 - w.leading_zeros()).max().unwrap_or(0);
    if max_bits > 100 {
        let shift = max_bits - 100;
        for w in ws.iter_mut() {
            w.1 >>= shift;
        }
        ws.retain(|(_, w)| *w > I256::ZERO);
    }
    let total_w: I256 = ws.iter().map(|w| w.1).fold(I256::ZERO, |a, b| a + b);
    // The amount in units of 10^-s.
    let raw = units(&amount);
    let mut drop = 0u32; // decimal places below s
    let mut probe = raw;
    while drop < MAX_SCALE - 2 && probe != I256::ZERO && probe % I256::from(10u8) == I256::ZERO {
        probe /= I256::from(10u8);
        drop += 1;
    }
    if probe == I256::ZERO {
        drop = MAX_SCALE - 2;
    }
    let unit = pow10(drop);
    let scaled = raw / unit;
    let neg = scaled < I256::ZERO;
    let abs = if neg { -scaled } else { scaled };
    let mut shares = Vec::with_capacity(ws.len());
    for (i, (_, w)) in ws.iter().enumerate() {
        let p = abs.checked_mul(*w).ok_or_else(|| format!("amount {amount} is too large to split"))?;
        shares.push((i, p / total_w, p % total_w));
    }
    let given: I256 = shares.iter().map(|s| s.1).fold(I256::ZERO, |a, b| a + b);
    let mut left = abs - given;
    let mut order: Vec<usize> = (0..shares.len()).collect();
    order.sort_by(|a, b| shares[*b].2.cmp(&shares[*a].2).then(a.cmp(b)));
    for i in order {
        if left <= I256::ZERO {
            break;
        }
        shares[i].1 += I256::ONE;
        left -= I256::ONE;
    }
    Ok(shares
        .into_iter()
        .map(|(i, u, _)| {
            let u = if neg { -u } else { u };
            (ws[i].0.clone(), ExactSum::from_le_bytes((u * unit).to_le_bytes()))
        })
        .collect())
}

/// [`split_exact`] for `Decimal` amounts and weights.
pub fn split(amount: Decimal, weights: &[(String, Decimal)]) -> Result<Vec<(String, Decimal)>, String> {
    let w: Vec<(String, ExactSum)> = weights.iter().map(|(o, w)| (o.clone(), ExactSum::from(*w))).collect();
    split_by(amount, &w)
}

/// [`split_exact`] for a `Decimal` amount: each share at the amount's scale (at least 2).
pub fn split_by(amount: Decimal, weights: &[(String, ExactSum)]) -> Result<Vec<(String, Decimal)>, String> {
    let s = split_exact(ExactSum::from(amount), weights)?;
    // Shares are multiples of 10^-max(2, scale of amount): they fit a Decimal at that scale.
    let scale = amount.scale().max(2);
    s.into_iter()
        .map(|(o, x)| {
            let (d, _) = x.to_decimal().ok_or_else(|| format!("share of {amount} out of range"))?;
            let mut d = d;
            d.rescale(scale);
            Ok((o, d))
        })
        .collect()
}

const MAX_SCALE: u32 = 28;

fn units(x: &ExactSum) -> I256 {
    I256::from_le_bytes(x.to_le_bytes())
}

fn pow10(n: u32) -> I256 {
    let mut v = I256::ONE;
    for _ in 0..n {
        v *= I256::from(10u8);
    }
    v
}
