//! Exact money: parsing provider text into [`Decimal`] and summing without ever rounding.
//!
//! Rules:
//! - Parsing goes from the provider's characters straight to an integer mantissa and a scale;
//!   no float is involved. Plain (`40.3527508453`) and E-notation (`1.81E-8`) are accepted;
//!   empty text and the literal `NULL` are *absent* (`None`), never zero.
//! - A `Decimal` holds 28 decimal places. Digits beyond that are rounded half-to-even and the
//!   result is flagged [`Amount::rounded`] so the caller can count it; an amount smaller than
//!   1e-28 becomes zero the same way (explicitly, counted). Nothing is rounded silently.
//! - Sums use [`ExactSum`]: a 256-bit integer count of 1e-28 units, so a million amounts with
//!   28 decimal places summing to trillions stay exact (a `Decimal` would run out of its
//!   28–29 significant digits). Sums are rendered in full; they are rounded only when a caller
//!   asks for a `Decimal` ([`ExactSum::to_decimal`]: half-to-even to the most decimal places
//!   that fit, flagged) or for a fixed number of places ([`ExactSum::round_dp`]).

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use ethnum::I256;
use rust_decimal::Decimal;

/// The scale of [`ExactSum`] and the largest scale of a [`Decimal`].
pub const MAX_SCALE: u32 = 28;
/// Longest digit string accepted in one amount (integer plus fraction digits).
const MAX_DIGITS: usize = 120;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MoneyError {
    #[error(
        "'{0}' is not a decimal number (expected digits with an optional '.', sign and E-exponent, e.g. 12.34 or 1.81E-8)"
    )]
    Invalid(String),
    #[error("'{0}' is too large for an amount (more than 28 integer digits)")]
    Overflow(String),
    #[error("sum overflow (more than 10^48): the input is not a bill")]
    SumOverflow,
}

/// A parsed amount. `rounded` is true when digits beyond 28 decimal places were rounded away
/// (including dust below 1e-28 rounded to zero).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Amount {
    pub value: Decimal,
    pub rounded: bool,
}

fn pow10(n: u32) -> I256 {
    if n <= 38 {
        // 10^38 < 2^127: one u128 power, no wide multiplications.
        return I256::from(10u128.pow(n));
    }
    let mut p = I256::from(10u128.pow(38));
    for _ in 38..n {
        p *= I256::new(10);
    }
    p
}

/// `|v| / 10^n` rounded half-to-even, sign kept. Returns the quotient and whether anything
/// non-zero was dropped.
fn div_pow10_half_even(v: I256, n: u32) -> (I256, bool) {
    if n == 0 {
        return (v, false);
    }
    let neg = v < 0;
    let a = if neg { -v } else { v };
    let d = pow10(n);
    let mut q = a / d;
    let r = a % d;
    let half = d / I256::new(2);
    if r > half || (r == half && q % I256::new(2) == I256::ONE) {
        q += I256::ONE;
    }
    (if neg { -q } else { q }, r != I256::ZERO)
}

/// The largest mantissa a `Decimal` can hold (2^96 - 1).
fn decimal_max_mantissa() -> I256 {
    (I256::ONE << 96u32) - I256::ONE
}

/// Build a `Decimal` from a wide mantissa and a non-negative scale, rounding half-to-even to
/// fewer places while it does not fit. `None` when even the integer part does not fit.
fn fit_decimal(mut m: I256, mut scale: u32) -> Option<(Decimal, bool)> {
    let mut rounded = false;
    if scale > MAX_SCALE {
        let (q, lost) = div_pow10_half_even(m, scale - MAX_SCALE);
        m = q;
        rounded |= lost;
        scale = MAX_SCALE;
    }
    let max = decimal_max_mantissa();
    while (if m < 0 { -m } else { m }) > max {
        if scale == 0 {
            return None;
        }
        let (q, lost) = div_pow10_half_even(m, 1);
        m = q;
        rounded |= lost;
        scale -= 1;
    }
    let d = Decimal::try_from_i128_with_scale(m.as_i128(), scale).ok()?;
    // Never produce a negative zero.
    let d = if d.is_zero() { Decimal::ZERO } else { d };
    Some((d, rounded))
}

/// Parse an amount from provider text. `Ok(None)` for empty text or literal `NULL`.
pub fn parse_amount(text: &str) -> Result<Option<Amount>, MoneyError> {
    let t = crate::text::trim(text);
    if t.is_empty() || t.eq_ignore_ascii_case("null") {
        return Ok(None);
    }
    if let Some(value) = parse_plain(t.as_bytes()) {
        return Ok(Some(Amount { value, rounded: false }));
    }
    let invalid = || MoneyError::Invalid(truncate_for_message(t));
    let bytes = t.as_bytes();
    let (neg, body) = match bytes[0] {
        b'-' => (true, &t[1..]),
        b'+' => (false, &t[1..]),
        _ => (false, t),
    };
    let (mantissa, exp) = match body.find(['e', 'E']) {
        Some(i) => {
            let e = &body[i + 1..];
            let digits = e.strip_prefix(['+', '-']).unwrap_or(e);
            if digits.is_empty() || digits.len() > 4 || !digits.bytes().all(|b| b.is_ascii_digit()) {
                return Err(invalid());
            }
            let exp: i64 = e.parse().map_err(|_| invalid())?;
            (&body[..i], exp)
        }
        None => (body, 0),
    };
    let (int_part, frac_part) = match mantissa.split_once('.') {
        Some((a, b)) => (a, b),
        None => (mantissa, ""),
    };
    if (int_part.is_empty() && frac_part.is_empty())
        || !int_part.bytes().all(|b| b.is_ascii_digit())
        || !frac_part.bytes().all(|b| b.is_ascii_digit())
    {
        return Err(invalid());
    }
    let int_part = int_part.trim_start_matches('0');
    // Fast path: up to 28 digits at a scale Decimal holds as is (almost every amount in a
    // bill) — no wide arithmetic, no rounding.
    let scale = frac_part.len() as i64 - exp;
    if int_part.len() + frac_part.len() <= 28 && (0..=MAX_SCALE as i64).contains(&scale) {
        let mut m: u128 = 0;
        for b in int_part.bytes().chain(frac_part.bytes()) {
            m = m * 10 + u128::from(b - b'0');
        }
        let m = if neg { -(m as i128) } else { m as i128 };
        let value = if m == 0 { Decimal::ZERO } else { Decimal::from_i128_with_scale(m, scale as u32) };
        return Ok(Some(Amount { value, rounded: false }));
    }
    if int_part.len() + frac_part.len() > MAX_DIGITS {
        return Err(MoneyError::Overflow(truncate_for_message(t)));
    }
    let mut m = I256::ZERO;
    for b in int_part.bytes().chain(frac_part.bytes()) {
        m = m * I256::new(10) + I256::from(b - b'0');
    }
    // value = m * 10^-(frac_len - exp)
    let mut scale = frac_part.len() as i64 - exp;
    if scale < 0 {
        if m != I256::ZERO {
            // Positive exponent: scale up, bounded so it cannot overflow the wide integer.
            if -scale > 40 {
                return Err(MoneyError::Overflow(truncate_for_message(t)));
            }
            m *= pow10((-scale) as u32);
        }
        scale = 0;
    }
    if scale > (MAX_SCALE as i64) + 60 {
        // Far below 1e-28: dust. Zero, flagged if it was not already zero.
        return Ok(Some(Amount { value: Decimal::ZERO, rounded: m != I256::ZERO }));
    }
    if neg {
        m = -m;
    }
    match fit_decimal(m, scale as u32) {
        Some((value, rounded)) => Ok(Some(Amount { value, rounded })),
        None => Err(MoneyError::Overflow(truncate_for_message(t))),
    }
}

/// `[+-]digits[.digits]` with at most 19 digits (so the mantissa fits a u64), in one pass: the
/// shape of nearly every amount in a bill. `None` for anything else (exponents, more digits,
/// invalid text), which the general path parses or rejects.
fn parse_plain(b: &[u8]) -> Option<Decimal> {
    let (neg, body) = match b.first()? {
        b'-' => (true, &b[1..]),
        b'+' => (false, &b[1..]),
        _ => (false, b),
    };
    let mut m: u64 = 0;
    let mut digits = 0u32;
    let mut point: Option<u32> = None;
    for &c in body {
        match c {
            b'0'..=b'9' => {
                digits += 1;
                if digits > 19 {
                    return None;
                }
                m = m * 10 + u64::from(c - b'0');
            }
            b'.' if point.is_none() => point = Some(digits),
            _ => return None,
        }
    }
    if digits == 0 {
        return None;
    }
    if m == 0 {
        return Some(Decimal::ZERO);
    }
    let scale = point.map_or(0, |p| digits - p);
    Some(Decimal::from_parts(m as u32, (m >> 32) as u32, 0, neg, scale))
}

fn truncate_for_message(t: &str) -> String {
    if t.len() <= 64 {
        t.to_string()
    } else {
        let mut end = 64;
        while !t.is_char_boundary(end) {
            end -= 1;
        }
        format!("{}…", &t[..end])
    }
}

/// A line's unit price, only when it prices the line exactly: `price` × `quantity` is exactly
/// `cost` (pure; a rate averaged over tiers, or a cost rounded from the price, gives `None`,
/// never a rounded guess).
pub fn exact_unit_price(price: Option<Decimal>, quantity: Option<Decimal>, cost: Decimal) -> Option<Decimal> {
    let (p, q) = (price?, quantity?);
    (exact_product(p, q)? == cost).then_some(p)
}

/// The canonical text of an amount: no exponent, no trailing zeros, no negative zero.
/// This is what SQLite stores and what exports print.
/// `a × b` when a `Decimal` holds it exactly (at most [`MAX_SCALE`] places and 96 bits of
/// mantissa), else `None`: `Decimal`'s own multiplication rounds a product with more places
/// instead of failing, which no amount may be.
pub fn exact_product(a: Decimal, b: Decimal) -> Option<Decimal> {
    let scale = a.scale() + b.scale();
    if scale > MAX_SCALE {
        return None;
    }
    let m = a.mantissa().checked_mul(b.mantissa())?;
    if m.unsigned_abs() >= 1u128 << 96 {
        return None;
    }
    Decimal::try_from_i128_with_scale(m, scale).ok()
}

pub fn canonical(d: Decimal) -> String {
    let mut s = Vec::new();
    write_canonical(&mut s, d);
    String::from_utf8(s).unwrap_or_default()
}

/// Append [`canonical`]'s text (ASCII) to `out` without allocating (hot path of bulk loading).
pub fn write_canonical(out: &mut Vec<u8>, d: Decimal) {
    let mut m = d.mantissa().unsigned_abs();
    if m == 0 {
        out.push(b'0');
        return;
    }
    // Trailing zeros of the fraction dropped, as `Decimal::normalize` would, in 64-bit
    // arithmetic when the mantissa fits (nearly always).
    let mut scale = d.scale() as usize;
    if let Ok(mut v) = u64::try_from(m) {
        while scale > 0 && v.is_multiple_of(10) {
            v /= 10;
            scale -= 1;
        }
        m = u128::from(v);
    } else {
        while scale > 0 && m.is_multiple_of(10) {
            m /= 10;
            scale -= 1;
        }
    }
    // Sign, digits of |mantissa| (< 2^96, at most 29) and the point, written from the right
    // into one buffer and appended once.
    let mut buf = [0u8; 64];
    let mut at = buf.len();
    let mut put = |b: u8| {
        at -= 1;
        buf[at] = b;
    };
    let mut n = 0;
    while m > u128::from(u64::MAX) {
        put(b'0' + (m % 10) as u8);
        m /= 10;
        n += 1;
        if n == scale {
            put(b'.');
        }
    }
    let mut small = m as u64;
    while small != 0 {
        put(b'0' + (small % 10) as u8);
        small /= 10;
        n += 1;
        if n == scale {
            put(b'.');
        }
    }
    if n <= scale {
        // 0.000ddd: the point was written after the last digit only when n == scale.
        for _ in n..scale {
            put(b'0');
        }
        if n < scale {
            put(b'.');
        }
        put(b'0');
    }
    if d.is_sign_negative() {
        put(b'-');
    }
    out.extend_from_slice(&buf[at..]);
}

/// 10^0 … 10^[`MAX_SCALE`]: a lookup where [`units`] took a power per amount summed.
const POW10_TO_MAX_SCALE: [u128; MAX_SCALE as usize + 1] = {
    let mut t = [1u128; MAX_SCALE as usize + 1];
    let mut i = 1;
    while i < t.len() {
        t[i] = t[i - 1] * 10;
        i += 1;
    }
    t
};

/// `d` as a count of 1e-28 units. A mantissa below 2^64 (nearly every amount) times the power
/// of ten (below 2^94) is two 64 × 64-bit multiplications; the rest goes through 256-bit
/// arithmetic. Every line adds to a dozen sums, so this is on the import's hot path.
fn units(d: Decimal) -> I256 {
    let m = d.mantissa();
    let k = MAX_SCALE - d.scale();
    if let Ok(small) = u64::try_from(m.unsigned_abs()) {
        let p = POW10_TO_MAX_SCALE.get(k as usize).copied().unwrap_or_else(|| 10u128.pow(k));
        let (p_hi, p_lo) = ((p >> 64) as u64, p as u64);
        let low = u128::from(small) * u128::from(p_lo);
        let high = u128::from(small) * u128::from(p_hi);
        // small × p = low + high × 2^64 (< 2^158).
        let (lo, carry) = low.overflowing_add(high << 64);
        let hi = (high >> 64) + u128::from(carry);
        let w = I256::from_words(hi as i128, lo as i128);
        return if m < 0 { -w } else { w };
    }
    I256::from(m) * pow10(k)
}

/// `v` in decimal.
fn push_u64(out: &mut Vec<u8>, v: u64) {
    let mut buf = [0u8; 20];
    out.extend_from_slice(crate::text::u64_digits(v, &mut buf).as_bytes());
}

/// `v` in decimal, zero-padded on the left to `width` digits (`v` < 10^width, width ≤ 20).
fn push_padded(out: &mut Vec<u8>, v: u64, width: usize) {
    let mut buf = [b'0'; 20];
    let mut v = v;
    for i in (20 - width..20).rev() {
        buf[i] = b'0' + (v % 10) as u8;
        v /= 10;
    }
    out.extend_from_slice(&buf[20 - width..]);
}

/// An exact running sum: a signed 256-bit count of 1e-28 units (range ±5.7e48).
#[derive(Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ExactSum(I256);

impl ExactSum {
    pub const ZERO: ExactSum = ExactSum(I256::ZERO);

    pub fn add(&mut self, d: Decimal) -> Result<(), MoneyError> {
        self.0 = self.0.checked_add(units(d)).ok_or(MoneyError::SumOverflow)?;
        Ok(())
    }

    /// The exact text of [`Display`](fmt::Display) (no exponent, no trailing zeros), appended
    /// to `out` without a `String` in between.
    pub fn write_text(&self, out: &mut Vec<u8>) {
        let (hi, lo) = self.0.unsigned_abs().into_words();
        if hi != 0 {
            out.extend_from_slice(self.render().as_bytes());
            return;
        }
        // |value| < 2^128 units: the whole part is lo / 10^28 (< 2^35), the fraction
        // lo % 10^28 (< 2^94), written as two 14-digit halves.
        const UNIT: u128 = 10u128.pow(MAX_SCALE);
        const HALF: u128 = 10u128.pow(MAX_SCALE / 2);
        if self.0 < 0 {
            out.push(b'-');
        }
        let (whole, frac) = (lo / UNIT, lo % UNIT);
        push_u64(out, whole as u64);
        if frac != 0 {
            out.push(b'.');
            let at = out.len();
            push_padded(out, (frac / HALF) as u64, (MAX_SCALE / 2) as usize);
            push_padded(out, (frac % HALF) as u64, (MAX_SCALE / 2) as usize);
            let keep = out[at..].iter().rposition(|b| *b != b'0').map_or(0, |i| i + 1);
            out.truncate(at + keep);
        }
    }

    pub fn merge(&mut self, other: &ExactSum) -> Result<(), MoneyError> {
        self.0 = self.0.checked_add(other.0).ok_or(MoneyError::SumOverflow)?;
        Ok(())
    }

    pub fn checked_sub(&self, other: &ExactSum) -> Result<ExactSum, MoneyError> {
        self.0.checked_sub(other.0).map(ExactSum).ok_or(MoneyError::SumOverflow)
    }

    pub fn is_zero(&self) -> bool {
        self.0 == I256::ZERO
    }

    /// The raw 1e-28 unit count as little-endian bytes (for aggregate state in SQLite).
    pub fn to_le_bytes(&self) -> [u8; 32] {
        self.0.to_le_bytes()
    }

    pub fn from_le_bytes(b: [u8; 32]) -> ExactSum {
        ExactSum(I256::from_le_bytes(b))
    }

    pub fn is_negative(&self) -> bool {
        self.0 < 0
    }

    pub fn abs(&self) -> ExactSum {
        ExactSum(self.0.abs())
    }

    /// `self / whole × 100`, rounded half-to-even to 2 decimal places; `None` when `whole` is
    /// zero or the ratio does not fit.
    pub fn percent_of(&self, whole: &ExactSum) -> Option<Decimal> {
        if whole.0 == 0 {
            return None;
        }
        // ratio × 10^4 (percent with 2 decimals) then half-to-even on the last step.
        let num = self.0.checked_mul(I256::from(100_000i32))?;
        let q = num / whole.0; // percent × 1000, truncated
        let r = num % whole.0;
        let (mut hundredths, last) = (q / 10, q % 10);
        let exact_tail = r == 0;
        let up = match last.abs().as_i32() {
            d if d > 5 => true,
            5 => !exact_tail || hundredths % 2 != 0,
            _ => false,
        };
        let neg = (self.0 < 0) != (whole.0 < 0);
        if up {
            hundredths += if neg { I256::from(-1i32) } else { I256::ONE };
        }
        Decimal::try_from_i128_with_scale(i128::try_from(hundredths).ok()?, 2).ok()
    }

    /// The sum as a `Decimal`: exact when it fits; otherwise rounded half-to-even to the most
    /// decimal places that fit, and `true` says so. `None` if the integer part exceeds a Decimal.
    pub fn to_decimal(&self) -> Option<(Decimal, bool)> {
        fit_decimal(self.0, MAX_SCALE)
    }

    /// The sum as a `Decimal` only when it fits exactly, without trailing zeros (so a product
    /// or quotient of it keeps its real scale); `None` when it would be rounded or is too large.
    pub fn to_exact_decimal(&self) -> Option<Decimal> {
        match self.to_decimal()? {
            (d, false) => Some(d.normalize()),
            (_, true) => None,
        }
    }

    /// The sum rounded half-to-even to `dp` decimal places (for presentation only).
    pub fn round_dp(&self, dp: u32) -> ExactSum {
        let dp = dp.min(MAX_SCALE);
        let (q, _) = div_pow10_half_even(self.0, MAX_SCALE - dp);
        ExactSum(q * pow10(MAX_SCALE - dp))
    }

    /// Render with exactly `dp` decimal places (rounding half-to-even first).
    pub fn to_fixed(&self, dp: u32) -> String {
        let dp = dp.min(MAX_SCALE);
        let r = self.round_dp(dp);
        let s = r.render();
        if dp == 0 {
            return s;
        }
        let (int, frac) = s.split_once('.').unwrap_or((&s, ""));
        let mut out = String::with_capacity(int.len() + 1 + dp as usize);
        out.push_str(int);
        out.push('.');
        out.push_str(frac);
        for _ in frac.len()..dp as usize {
            out.push('0');
        }
        out
    }

    fn render(&self) -> String {
        let neg = self.0 < 0;
        let a = if neg { -self.0 } else { self.0 };
        let digits = a.to_string();
        let scale = MAX_SCALE as usize;
        let (int, frac) = if digits.len() > scale {
            (digits[..digits.len() - scale].to_string(), digits[digits.len() - scale..].to_string())
        } else {
            ("0".to_string(), format!("{}{}", "0".repeat(scale - digits.len()), digits))
        };
        let frac = frac.trim_end_matches('0');
        let mut out = String::new();
        if neg {
            out.push('-');
        }
        out.push_str(&int);
        if !frac.is_empty() {
            out.push('.');
            out.push_str(frac);
        }
        out
    }
}

impl fmt::Display for ExactSum {
    /// The exact value: no exponent, no trailing zeros.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut text = Vec::with_capacity(48);
        self.write_text(&mut text);
        // Digits, '-' and '.': ASCII.
        f.write_str(std::str::from_utf8(&text).map_err(|_| fmt::Error)?)
    }
}

impl fmt::Debug for ExactSum {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ExactSum({})", self.render())
    }
}

impl FromStr for ExactSum {
    type Err = MoneyError;

    /// Parses plain decimal text (what SQL sums return); up to 28 decimal places, exactly.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let t = s.trim();
        let invalid = || MoneyError::Invalid(truncate_for_message(t));
        let (neg, body) = match t.strip_prefix('-') {
            Some(b) => (true, b),
            None => (false, t),
        };
        let (int, frac) = body.split_once('.').unwrap_or((body, ""));
        if (int.is_empty() && frac.is_empty())
            || !int.bytes().all(|b| b.is_ascii_digit())
            || !frac.bytes().all(|b| b.is_ascii_digit())
        {
            return Err(invalid());
        }
        let frac = frac.trim_end_matches('0');
        if frac.len() > MAX_SCALE as usize {
            return Err(invalid());
        }
        let int = int.trim_start_matches('0');
        if int.len() > 48 {
            return Err(MoneyError::SumOverflow);
        }
        let mut m = I256::ZERO;
        for b in int.bytes().chain(frac.bytes()) {
            m = m * I256::new(10) + I256::from(b - b'0');
        }
        m *= pow10(MAX_SCALE - frac.len() as u32);
        Ok(ExactSum(if neg { -m } else { m }))
    }
}

impl From<Decimal> for ExactSum {
    fn from(d: Decimal) -> Self {
        // One Decimal always fits: |mantissa| < 2^96, times at most 10^28.
        ExactSum(I256::from(d.mantissa()) * pow10(MAX_SCALE - d.scale()))
    }
}

/// Exact totals per currency (never added across currencies). Sorted by currency code.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Totals(pub BTreeMap<String, ExactSum>);

impl Totals {
    pub fn add(&mut self, currency: &str, d: Decimal) -> Result<(), MoneyError> {
        match self.0.get_mut(currency) {
            Some(s) => s.add(d),
            None => {
                self.0.insert(currency.to_string(), ExactSum::from(d));
                Ok(())
            }
        }
    }

    pub fn merge(&mut self, other: &Totals) -> Result<(), MoneyError> {
        for (c, s) in &other.0 {
            self.0.entry(c.clone()).or_default().merge(s)?;
        }
        Ok(())
    }

    pub fn get(&self, currency: &str) -> ExactSum {
        self.0.get(currency).copied().unwrap_or_default()
    }

    /// `{"EUR":"1.5","USD":"-2"}`: deterministic JSON with amounts as strings (never numbers).
    pub fn to_json(&self) -> String {
        let m: BTreeMap<&str, String> = self.0.iter().map(|(c, s)| (c.as_str(), s.to_string())).collect();
        serde_json::to_string(&m).unwrap_or_else(|_| "{}".to_string())
    }

    pub fn from_json(s: &str) -> Result<Totals, MoneyError> {
        let m: BTreeMap<String, String> =
            serde_json::from_str(s).map_err(|_| MoneyError::Invalid(truncate_for_message(s)))?;
        let mut t = Totals::default();
        for (c, v) in m {
            t.0.insert(c, v.parse()?);
        }
        Ok(t)
    }

    /// `USD 12.34, EUR -1` for messages.
    pub fn display(&self) -> String {
        if self.0.is_empty() {
            return "none".to_string();
        }
        self.0.iter().map(|(c, s)| format!("{c} {s}")).collect::<Vec<_>>().join(", ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A unit price is given only when it prices the line exactly (AWS rates, GCP tier prices).
    #[test]
    fn a_unit_price_is_given_only_when_it_prices_the_line_exactly() {
        let d = |s: &str| s.parse::<Decimal>().expect("decimal");
        assert_eq!(exact_unit_price(Some(d("0.0114")), Some(d("24")), d("0.2736")), Some(d("0.0114")));
        // A tiered or rounded line: price × quantity is not the cost, so no unit price.
        assert_eq!(exact_unit_price(Some(d("0.023")), Some(d("3.3333333")), d("0.07666667")), None);
        // A product with more decimals than a Decimal holds is not rounded into a match
        // (1.0000000000000000000000000001 × 0.1 rounds to 0.1 in 28 places).
        let p = d("1.0000000000000000000000000001");
        assert_eq!(p.checked_mul(d("0.1")), Some(d("0.1")), "the rounding this guards against");
        assert_eq!(exact_unit_price(Some(p), Some(d("0.1")), d("0.1")), None);
        assert_eq!(exact_unit_price(None, Some(d("1")), d("1")), None);
        assert_eq!(exact_unit_price(Some(d("1")), None, d("1")), None);
    }

    #[test]
    fn exact_products_or_none() {
        let d = |s: &str| Decimal::from_str_exact(s).expect("decimal");
        assert_eq!(exact_product(d("0.0425"), d("730")), Some(d("31.025")));
        assert_eq!(exact_product(d("-1.5"), d("2")), Some(d("-3.0")));
        // 30 places: Decimal's multiplication would round this silently.
        assert_eq!(exact_product(d("0.000000000000001"), d("0.000000000000001")), None);
        assert!(d("0.000000000000001").checked_mul(d("0.000000000000001")).is_some(), "the rounding this avoids");
        assert_eq!(exact_product(d("79228162514264337593543950335"), d("2")), None);
    }

    fn p(s: &str) -> Amount {
        parse_amount(s).expect("parses").expect("present")
    }

    /// The fast paths of `ExactSum::add` and `ExactSum::write_text` give what the 256-bit
    /// arithmetic and `render` give, for every scale and mantissa size, both signs, and sums
    /// past 2^128 units (which take the slow path).
    #[test]
    fn exact_sum_fast_paths_match_the_wide_arithmetic() {
        let mut x: u64 = 0x2545_F491_4F6C_DD1D;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let mut sum = ExactSum::ZERO;
        let mut reference = I256::ZERO;
        for i in 0..50_000u32 {
            let hi = if i % 7 == 0 { u128::from(next() >> 32) << 64 } else { 0 };
            let m = (hi | u128::from(next() >> (next() % 64))) as i128;
            let m = if next() % 2 == 0 { -m } else { m };
            let scale = (next() % 29) as u32;
            let d = Decimal::from_i128_with_scale(m, scale);
            let want = I256::from(d.mantissa()) * pow10(MAX_SCALE - d.scale());
            assert_eq!(units(d), want, "{d}");
            sum.add(d).expect("in range");
            reference += want;
            assert_eq!(sum.0, reference);
            let one = ExactSum(want);
            let mut text = Vec::new();
            one.write_text(&mut text);
            assert_eq!(String::from_utf8(text).expect("utf-8"), one.render(), "{d}");
        }
        for v in [
            I256::ZERO,
            I256::ONE,
            -I256::ONE,
            I256::from(10u128.pow(28)),
            -I256::from(10u128.pow(28)) - I256::ONE,
            I256::from(u128::MAX),
            I256::from(u128::MAX) + I256::ONE,
            -I256::from(u128::MAX) - I256::from(7),
            I256::MAX,
        ] {
            let mut text = Vec::new();
            ExactSum(v).write_text(&mut text);
            assert_eq!(String::from_utf8(text).expect("utf-8"), ExactSum(v).render(), "{v}");
        }
    }

    #[test]
    fn plain_and_exponent_forms_are_exact() {
        assert_eq!(p("40.3527508453").value.to_string(), "40.3527508453");
        assert_eq!(p("1.81E-8").value.to_string(), "0.0000000181");
        assert_eq!(p("2.323760000E-9").value, Decimal::from_str("0.000000002323760000").expect("d"));
        assert_eq!(p("5.64902e-05").value.to_string(), "0.0000564902");
        assert_eq!(p("1.7092512E9").value.to_string(), "1709251200");
        assert_eq!(p("+3").value.to_string(), "3");
        assert_eq!(p(".5").value.to_string(), "0.5");
        assert_eq!(p("-12.50").value.to_string(), "-12.50");
        assert!(!p("0.1234567890123456789012345678").rounded);
    }

    #[test]
    fn plain_fast_path_matches_the_exact_parser() {
        // Pseudo-random plain amounts of 1 to 19 digits, signs and points anywhere.
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        for _ in 0..20_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let n = 1 + (x % 19) as usize;
            let digits: String = (0..n).map(|i| char::from(b'0' + ((x >> (i * 3)) % 10) as u8)).collect();
            let point = (x >> 60) as usize % (n + 1);
            let sign = ["", "-", "+"][(x >> 58) as usize % 3];
            let text = format!("{sign}{}.{}", &digits[..point], &digits[point..]);
            let want = Decimal::from_str_exact(text.trim_start_matches('+')).expect("exact");
            let got = parse_plain(text.as_bytes()).expect("plain");
            if want.is_zero() {
                assert_eq!(got, Decimal::ZERO, "{text}");
                assert_eq!(got.scale(), 0, "{text}");
            } else {
                assert_eq!(
                    (got, got.scale(), got.is_sign_negative()),
                    (want, want.scale(), want.is_sign_negative()),
                    "{text}"
                );
            }
        }
        for other in ["1e5", "12345678901234567890", "1.2.3", ".", "-", "+", "", "1,5", "--1", "1 "] {
            assert_eq!(parse_plain(other.as_bytes()), None, "{other}");
        }
        assert_eq!(parse_plain(b"9999999999999999999"), Some(Decimal::from(9_999_999_999_999_999_999u64)));
    }

    #[test]
    fn absent_is_not_zero() {
        assert_eq!(parse_amount("").expect("ok"), None);
        assert_eq!(parse_amount("  ").expect("ok"), None);
        assert_eq!(parse_amount("NULL").expect("ok"), None);
        assert_eq!(parse_amount("null").expect("ok"), None);
        assert_eq!(p("0").value, Decimal::ZERO);
    }

    #[test]
    fn an_exact_decimal_keeps_its_own_scale_and_is_refused_when_it_would_round() {
        let mut s = ExactSum::ZERO;
        s.add(Decimal::new(100005, 3)).expect("add");
        assert_eq!(s.to_exact_decimal().map(|d| (d.to_string(), d.scale())), Some(("100.005".into(), 3)));
        // 1e-28 on top of 10^20 needs more than 28 significant digits: no exact Decimal.
        let mut wide = ExactSum::from(Decimal::from(10u128.pow(20)));
        wide.add(Decimal::new(1, 28)).expect("add");
        assert_eq!(wide.to_exact_decimal(), None);
    }

    #[test]
    fn percent_of_rounds_half_to_even_to_two_places() {
        let e = |s: &str| s.parse::<ExactSum>().expect("sum");
        let p = |a: &str, b: &str| e(a).percent_of(&e(b)).map(|d| d.to_string());
        assert_eq!(p("1", "3").as_deref(), Some("33.33"));
        assert_eq!(p("2", "3").as_deref(), Some("66.67"));
        assert_eq!(p("1", "8").as_deref(), Some("12.50"));
        assert_eq!(p("0.00125", "1").as_deref(), Some("0.12"), "0.125 → half to even → 0.12");
        assert_eq!(p("0.00135", "1").as_deref(), Some("0.14"), "0.135 → half to even → 0.14");
        assert_eq!(p("-1", "3").as_deref(), Some("-33.33"));
        assert_eq!(p("-2", "3").as_deref(), Some("-66.67"));
        assert_eq!(p("1", "0"), None);
    }

    #[test]
    fn negative_zero_is_zero_and_credits_stay_negative() {
        assert_eq!(p("-0").value.to_string(), "0");
        assert_eq!(p("-0.00").value, Decimal::ZERO);
        assert!(p("-0.01").value.is_sign_negative());
        assert_eq!(canonical(p("-0.000").value), "0");
    }

    #[test]
    fn too_many_places_round_half_even_and_are_flagged() {
        let a = p("0.00000000000000000000000000015"); // 1.5e-28 → 2e-28 (half to even)
        assert!(a.rounded);
        assert_eq!(a.value.to_string(), "0.0000000000000000000000000002");
        let dust = p("1e-30");
        assert!(dust.rounded);
        assert_eq!(dust.value, Decimal::ZERO);
        let dust = p("-4.2E-300");
        assert!(dust.rounded);
        assert_eq!(dust.value, Decimal::ZERO);
    }

    #[test]
    fn garbage_is_an_error_with_the_text() {
        for bad in ["abc", "1,234.50", "$5", "NaN", "inf", "1.2.3", "1e", "--1", "1 2", "e5", "."] {
            let err = parse_amount(bad).expect_err(bad);
            assert!(err.to_string().contains(bad.trim()), "{err}");
        }
        assert!(matches!(parse_amount("1e99"), Err(MoneyError::Overflow(_))));
        assert!(matches!(parse_amount(&"9".repeat(40)), Err(MoneyError::Overflow(_))));
    }

    #[test]
    fn exact_sum_beyond_28_digits() {
        let mut s = ExactSum::ZERO;
        let a = Decimal::from_str("1234567.1234567890123456789012").expect("d");
        for _ in 0..1000 {
            s.add(a).expect("add");
        }
        assert_eq!(s.to_string(), "1234567123.4567890123456789012");
        // A Decimal cannot hold this sum exactly (34 significant digits).
        let mut big = ExactSum::ZERO;
        let x = Decimal::from_str("1.0000000000000000000000000001").expect("d");
        for _ in 0..999_999 {
            big.add(x).expect("add");
        }
        assert_eq!(big.to_string(), "999999.0000000000000000000000999999");
        let (d, rounded) = big.to_decimal().expect("fits rounded");
        assert!(rounded);
        assert_eq!(d.to_string(), "999999.0000000000000000000001");
        assert_eq!(big.to_fixed(2), "999999.00");
        let parsed: ExactSum = big.to_string().parse().expect("parse");
        assert_eq!(parsed, big);
    }

    #[test]
    fn exact_sum_rounding_rule_is_half_even() {
        let s: ExactSum = "2.345".parse().expect("p");
        assert_eq!(s.to_fixed(2), "2.34");
        let s: ExactSum = "2.355".parse().expect("p");
        assert_eq!(s.to_fixed(2), "2.36");
        let s: ExactSum = "-2.355".parse().expect("p");
        assert_eq!(s.to_fixed(2), "-2.36");
        let s: ExactSum = "-0.004".parse().expect("p");
        assert_eq!(s.to_fixed(2), "0.00");
        assert_eq!(ExactSum::ZERO.to_string(), "0");
    }

    #[test]
    fn totals_never_mix_currencies_and_round_trip_json() {
        let mut t = Totals::default();
        t.add("USD", Decimal::from_str("1.10").expect("d")).expect("add");
        t.add("EUR", Decimal::from_str("-2").expect("d")).expect("add");
        t.add("USD", Decimal::from_str("0.9").expect("d")).expect("add");
        assert_eq!(t.to_json(), r#"{"EUR":"-2","USD":"2"}"#);
        assert_eq!(Totals::from_json(&t.to_json()).expect("json"), t);
        assert_eq!(t.display(), "EUR -2, USD 2");
    }

    #[test]
    fn canonical_text_matches_decimal_display_of_the_normalised_value() {
        let samples = [
            "0",
            "-0",
            "0.000",
            "1",
            "-1",
            "10",
            "100.00",
            "0.5",
            "-0.5",
            "0.0000000001",
            "123.456000",
            "-987654321.123456789",
            "79228162514264337593543950335",
            "-79228162514264337593543950335",
            "7.9228162514264337593543950335",
            "0.0000000000000000000000000001",
            "18446744073709551615",
            "18446744073709551616",
            "184467440737095516.17",
            "1234567.1234567890123456789012",
            "1e-5",
            // Mantissas beyond 64 bits with trailing zeros in the fraction (and in the integer).
            "1844674407370955161700000.000",
            "-12345678901234567890123.4500000",
            "1000000000000000000000000000",
            "0.1000000000000000000000000000",
        ];
        for t in samples {
            let d = Decimal::from_scientific(t).or_else(|_| Decimal::from_str(t)).expect(t);
            let want = format!("{}", d.normalize());
            let want = if want == "-0" { "0".to_string() } else { want };
            assert_eq!(canonical(d), want, "{t}");
        }
        // Every mantissa size and scale.
        let mut m: i128 = 7;
        while m.unsigned_abs() < (1u128 << 96) {
            for scale in [0u32, 1, 5, 17, 28] {
                for v in [m, -m] {
                    let d = Decimal::from_i128_with_scale(v, scale);
                    assert_eq!(canonical(d), format!("{}", d.normalize()), "{v} e-{scale}");
                }
            }
            m = m * 13 + 1;
        }
    }
}
