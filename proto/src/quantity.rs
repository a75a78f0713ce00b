//! Kubernetes-style resource quantities ("100m", "1.5Gi", "2e3"), held exactly.
//!
//! A [`Quantity`] is an `i128` count of nano-units (10^-9) plus the
//! [`QuantityFormat`] its text was written in. Parsing, printing and arithmetic
//! use integer and decimal-digit arithmetic only, never floating point, so
//! "0.1" is exactly one tenth and "1Gi" is exactly 2^30.
//!
//! The representable magnitude is `i128::MAX` nano-units (about 1.7e29 whole
//! units); anything larger is an error rather than a silently capped value.

use std::cmp::Ordering;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::str::FromStr;

use prost::bytes::{Buf, BufMut};
use prost::encoding::{DecodeContext, WireType};

const NANOS_PER_UNIT: i128 = 1_000_000_000;
const NANOS_PER_MILLI: i128 = 1_000_000;

/// Decimal SI suffixes and their power of ten.
const DECIMAL_SUFFIXES: [(&str, i32); 10] = [
    ("n", -9),
    ("u", -6),
    ("m", -3),
    ("", 0),
    ("k", 3),
    ("M", 6),
    ("G", 9),
    ("T", 12),
    ("P", 15),
    ("E", 18),
];

/// Binary suffixes, indexed by their power of 1024.
const BINARY_SUFFIXES: [&str; 7] = ["", "Ki", "Mi", "Gi", "Ti", "Pi", "Ei"];

/// How a quantity was written, and so how it is printed back.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum QuantityFormat {
    /// Plain numbers and the suffixes n, u, m, k, M, G, T, P, E.
    DecimalSI,
    /// The suffixes Ki, Mi, Gi, Ti, Pi, Ei.
    BinarySI,
    /// Scientific notation: `2e3`, `1E-3`.
    DecimalExponent,
}

/// Why a quantity could not be parsed, built or computed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum QuantityError {
    #[error("invalid quantity \"\": a quantity must not be empty")]
    Empty,
    #[error("invalid quantity {input:?}: {reason}")]
    Invalid { input: String, reason: String },
    #[error(
        "quantity {input:?} is out of range: its magnitude must not exceed \
         170141183460469231731687303715884105727n (about 1.7e29)"
    )]
    OutOfRange { input: String },
    #[error("quantity arithmetic overflowed: {expr}")]
    Overflow { expr: String },
}

/// An exact resource quantity.
///
/// Equality, ordering and hashing look at the value only: `1Gi == 1024Mi`.
/// `Display` prints the canonical Kubernetes form for the remembered format.
#[derive(Clone, Copy)]
pub struct Quantity {
    /// Invariant: never `i128::MIN`, so negation cannot overflow.
    nanos: i128,
    format: QuantityFormat,
}

impl Quantity {
    /// Zero, in DecimalSI format.
    pub const fn zero() -> Self {
        Quantity { nanos: 0, format: QuantityFormat::DecimalSI }
    }

    /// A whole number of units.
    pub fn from_int(value: i64, format: QuantityFormat) -> Self {
        // |i64| * 10^9 < 10^28, far inside i128.
        Quantity { nanos: i128::from(value) * NANOS_PER_UNIT, format }
    }

    /// A number of thousandths of a unit.
    pub fn from_milli(value: i64, format: QuantityFormat) -> Self {
        Quantity { nanos: i128::from(value) * NANOS_PER_MILLI, format }
    }

    /// A number of nano-units; only `i128::MIN` is out of range.
    pub fn from_nanos(nanos: i128, format: QuantityFormat) -> Result<Self, QuantityError> {
        if nanos == i128::MIN {
            return Err(QuantityError::OutOfRange { input: format!("{nanos}n") });
        }
        Ok(Quantity { nanos, format })
    }

    /// Parses Kubernetes quantity syntax exactly.
    ///
    /// Precision finer than one nano-unit is rounded away from zero, as
    /// Kubernetes does, so a non-zero request never becomes zero.
    pub fn parse(s: &str) -> Result<Self, QuantityError> {
        parse_quantity(s)
    }

    pub fn is_zero(&self) -> bool {
        self.nanos == 0
    }

    pub fn sign(&self) -> Ordering {
        self.nanos.cmp(&0)
    }

    pub fn format(&self) -> QuantityFormat {
        self.format
    }

    /// Whole units, rounded up toward +infinity (the documented contract of
    /// Kubernetes' `Value()`): 1.5 -> 2, -1.5 -> -1.
    pub fn value(&self) -> i128 {
        div_ceil(self.nanos, NANOS_PER_UNIT)
    }

    /// Thousandths of a unit, rounded up toward +infinity.
    pub fn milli_value(&self) -> i128 {
        div_ceil(self.nanos, NANOS_PER_MILLI)
    }

    /// The exact value in nano-units.
    pub fn nano_value(&self) -> i128 {
        self.nanos
    }

    /// `self + other`, in `self`'s format (or `other`'s when `self` is zero).
    pub fn checked_add(&self, other: &Quantity) -> Result<Quantity, QuantityError> {
        let nanos = self
            .nanos
            .checked_add(other.nanos)
            .filter(|n| *n != i128::MIN)
            .ok_or_else(|| QuantityError::Overflow { expr: format!("{self} + {other}") })?;
        Ok(Quantity { nanos, format: self.result_format(other) })
    }

    /// `self - other`, in `self`'s format (or `other`'s when `self` is zero).
    pub fn checked_sub(&self, other: &Quantity) -> Result<Quantity, QuantityError> {
        let nanos = self
            .nanos
            .checked_sub(other.nanos)
            .filter(|n| *n != i128::MIN)
            .ok_or_else(|| QuantityError::Overflow { expr: format!("{self} - {other}") })?;
        Ok(Quantity { nanos, format: self.result_format(other) })
    }

    /// `-self`, keeping the format.
    pub fn checked_neg(&self) -> Result<Quantity, QuantityError> {
        let nanos = self
            .nanos
            .checked_neg()
            .ok_or_else(|| QuantityError::Overflow { expr: format!("-({self})") })?;
        Ok(Quantity { nanos, format: self.format })
    }

    /// Kubernetes' Add/Sub keep the receiver's format unless it is zero.
    fn result_format(&self, other: &Quantity) -> QuantityFormat {
        if self.is_zero() {
            other.format
        } else {
            self.format
        }
    }

    /// The canonical text: the number and suffix Kubernetes would print.
    fn canonical(&self) -> String {
        if self.nanos == 0 {
            return "0".to_owned();
        }
        let sign = if self.nanos < 0 { "-" } else { "" };
        let magnitude = self.nanos.unsigned_abs();

        if self.format == QuantityFormat::BinarySI {
            if let Some((mantissa, suffix)) = binary_form(magnitude) {
                return format!("{sign}{mantissa}{suffix}");
            }
        }

        let (mut mantissa, mut exponent) = decimal_form(magnitude);
        if self.format == QuantityFormat::DecimalExponent {
            return if exponent == 0 {
                format!("{sign}{mantissa}")
            } else {
                format!("{sign}{mantissa}e{exponent}")
            };
        }
        // There is no suffix above E, so larger values grow E's mantissa.
        // mantissa * 10^(exponent + 9) is the magnitude, so this cannot overflow.
        while exponent > 18 {
            mantissa *= 1000;
            exponent -= 3;
        }
        let suffix = DECIMAL_SUFFIXES.iter().find(|(_, e)| *e == exponent).map_or("", |(s, _)| s);
        format!("{sign}{mantissa}{suffix}")
    }
}

/// Splits a non-zero magnitude in nano-units into `mantissa * 10^exponent`
/// with the largest exponent that is a multiple of 3 and leaves the mantissa
/// an integer. The exponent is never below -9.
fn decimal_form(magnitude: u128) -> (u128, i32) {
    let mut mantissa = magnitude;
    let mut exponent: i32 = -9;
    while mantissa.is_multiple_of(10) {
        mantissa /= 10;
        exponent += 1;
    }
    // Moving back down to a multiple of 3 only undoes the loop above.
    while exponent.rem_euclid(3) != 0 {
        mantissa *= 10;
        exponent -= 1;
    }
    (mantissa, exponent)
}

/// Kubernetes prints BinarySI in powers of 1024 only for whole values of at
/// least 1024; anything else falls back to DecimalSI (`None`).
fn binary_form(magnitude: u128) -> Option<(u128, &'static str)> {
    let unit = NANOS_PER_UNIT.unsigned_abs();
    if !magnitude.is_multiple_of(unit) || magnitude / unit < 1024 {
        return None;
    }
    let mut mantissa = magnitude / unit;
    let mut power = 0;
    while power + 1 < BINARY_SUFFIXES.len() && mantissa.is_multiple_of(1024) {
        mantissa /= 1024;
        power += 1;
    }
    Some((mantissa, BINARY_SUFFIXES[power]))
}

/// Division rounding toward +infinity.
fn div_ceil(n: i128, d: i128) -> i128 {
    let q = n / d;
    if n % d > 0 {
        q + 1
    } else {
        q
    }
}

/// What a suffix multiplies the written number by.
enum Scale {
    Pow10(i64),
    Pow1024(usize),
}

fn parse_quantity(s: &str) -> Result<Quantity, QuantityError> {
    if s.is_empty() {
        return Err(QuantityError::Empty);
    }
    let invalid = |reason: String| QuantityError::Invalid { input: s.to_owned(), reason };

    let (negative, rest) = if let Some(r) = s.strip_prefix('-') {
        (true, r)
    } else {
        (false, s.strip_prefix('+').unwrap_or(s))
    };
    let int_len = rest.bytes().take_while(u8::is_ascii_digit).count();
    let (int_digits, mut suffix) = rest.split_at(int_len);
    let mut frac_digits = "";
    if let Some(after_point) = suffix.strip_prefix('.') {
        let frac_len = after_point.bytes().take_while(u8::is_ascii_digit).count();
        (frac_digits, suffix) = after_point.split_at(frac_len);
    }
    if int_digits.is_empty() && frac_digits.is_empty() {
        return Err(invalid(
            "expected a number such as 1, 0.5 or .5, optionally signed, before any suffix"
                .to_owned(),
        ));
    }

    let (scale, format) = parse_suffix(suffix).map_err(invalid)?;
    let magnitude = magnitude_nanos(int_digits, frac_digits, scale)
        .ok_or_else(|| QuantityError::OutOfRange { input: s.to_owned() })?;
    // magnitude <= i128::MAX, so the negation stays above i128::MIN.
    let nanos = if negative { -magnitude } else { magnitude };
    Ok(Quantity { nanos, format })
}

fn parse_suffix(suffix: &str) -> Result<(Scale, QuantityFormat), String> {
    if let Some((_, e)) = DECIMAL_SUFFIXES.iter().find(|(s, _)| *s == suffix) {
        return Ok((Scale::Pow10(i64::from(*e)), QuantityFormat::DecimalSI));
    }
    if let Some(power) = BINARY_SUFFIXES.iter().skip(1).position(|s| *s == suffix) {
        return Ok((Scale::Pow1024(power + 1), QuantityFormat::BinarySI));
    }
    // "E" alone was matched above as exa; anything longer is an exponent.
    if let Some(exponent) = suffix.strip_prefix(['e', 'E']) {
        let digits = exponent.strip_prefix(['+', '-']).unwrap_or(exponent);
        if digits.is_empty() {
            return Err(format!("exponent {suffix:?} has no digits"));
        }
        if !digits.bytes().all(|b| b.is_ascii_digit()) {
            return Err(format!("exponent {suffix:?} must be an integer, as in e3 or E-6"));
        }
        let value: i32 =
            exponent.parse().map_err(|_| format!("exponent {suffix:?} is out of range"))?;
        return Ok((Scale::Pow10(i64::from(value)), QuantityFormat::DecimalExponent));
    }
    Err(if suffix.starts_with('.') {
        "a quantity may contain only one decimal point".to_owned()
    } else if suffix.contains(char::is_whitespace) {
        "whitespace is not allowed in a quantity".to_owned()
    } else {
        format!(
            "unknown suffix {suffix:?}; expected one of n, u, m, k, M, G, T, P, E, \
             Ki, Mi, Gi, Ti, Pi, Ei or an exponent such as e3"
        )
    })
}

/// The magnitude in nano-units of `int.frac * scale`, rounded away from zero
/// to a whole nano; `None` when it exceeds `i128::MAX`.
fn magnitude_nanos(int_digits: &str, frac_digits: &str, scale: Scale) -> Option<i128> {
    // The significand as decimal digits, most significant first, so that any
    // number of digits and any exponent are handled without loss.
    let mut digits: Vec<u8> = int_digits
        .bytes()
        .chain(frac_digits.bytes())
        .map(|b| b - b'0')
        .skip_while(|d| *d == 0)
        .collect();
    // Input length bounds frac_digits, and the exponent is an i32: no overflow.
    let mut exponent = 9 - frac_digits.len() as i64;
    match scale {
        Scale::Pow10(e) => exponent += e,
        Scale::Pow1024(power) => {
            for _ in 0..power {
                multiply_digits(&mut digits, 1024);
            }
        }
    }
    while digits.last() == Some(&0) {
        digits.pop();
        exponent += 1;
    }
    if digits.is_empty() {
        return Some(0);
    }

    let len = digits.len() as i64;
    if exponent >= 0 {
        // i128::MAX has 39 digits; skip the loop for hopeless exponents.
        if len + exponent > 39 {
            return None;
        }
        let mut value = digits_to_i128(&digits)?;
        for _ in 0..exponent {
            value = value.checked_mul(10)?;
        }
        Some(value)
    } else {
        let whole_len = len + exponent;
        if whole_len <= 0 {
            // Entirely below one nano but non-zero: round up to 1n.
            return Some(1);
        }
        // Trailing zeros were stripped, so the dropped digits are non-zero.
        digits_to_i128(&digits[..whole_len as usize])?.checked_add(1)
    }
}

/// Multiplies a big-endian decimal digit string in place.
fn multiply_digits(digits: &mut Vec<u8>, factor: u32) {
    let mut carry = 0u32;
    for d in digits.iter_mut().rev() {
        let v = u32::from(*d) * factor + carry;
        *d = (v % 10) as u8;
        carry = v / 10;
    }
    while carry > 0 {
        digits.insert(0, (carry % 10) as u8);
        carry /= 10;
    }
}

fn digits_to_i128(digits: &[u8]) -> Option<i128> {
    digits.iter().try_fold(0i128, |acc, d| acc.checked_mul(10)?.checked_add(i128::from(*d)))
}

impl Default for Quantity {
    fn default() -> Self {
        Quantity::zero()
    }
}

impl FromStr for Quantity {
    type Err = QuantityError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        parse_quantity(s)
    }
}

impl fmt::Display for Quantity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(&self.canonical())
    }
}

impl fmt::Debug for Quantity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Quantity")
            .field("value", &self.canonical())
            .field("format", &self.format)
            .finish()
    }
}

impl PartialEq for Quantity {
    fn eq(&self, other: &Self) -> bool {
        self.nanos == other.nanos
    }
}

impl Eq for Quantity {}

impl PartialOrd for Quantity {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Quantity {
    fn cmp(&self, other: &Self) -> Ordering {
        self.nanos.cmp(&other.nanos)
    }
}

impl Hash for Quantity {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.nanos.hash(state);
    }
}

impl serde::Serialize for Quantity {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Quantity {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(QuantityVisitor)
    }
}

/// Accepts what Kubernetes' JSON decoding accepts: a string (surrounding
/// whitespace trimmed), a bare number, or null (zero).
struct QuantityVisitor;

impl QuantityVisitor {
    fn parse<E: serde::de::Error>(text: &str) -> Result<Quantity, E> {
        parse_quantity(text).map_err(E::custom)
    }
}

impl serde::de::Visitor<'_> for QuantityVisitor {
    type Value = Quantity;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a quantity such as \"100m\" or \"1.5Gi\", or a number")
    }

    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Quantity, E> {
        Self::parse(v.trim())
    }

    fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Quantity, E> {
        Self::parse(&v.to_string())
    }

    fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Quantity, E> {
        Self::parse(&v.to_string())
    }

    fn visit_i128<E: serde::de::Error>(self, v: i128) -> Result<Quantity, E> {
        Self::parse(&v.to_string())
    }

    fn visit_u128<E: serde::de::Error>(self, v: u128) -> Result<Quantity, E> {
        Self::parse(&v.to_string())
    }

    fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<Quantity, E> {
        // The decoder has already turned the literal into an f64. Rust's
        // Display prints the shortest text that round-trips to the same f64
        // (never in exponent form), which for ordinary literals such as 0.5
        // or 1e9 is the value as written; that text is then parsed exactly.
        Self::parse(&format!("{v}"))
    }

    fn visit_unit<E: serde::de::Error>(self) -> Result<Quantity, E> {
        Ok(Quantity::zero())
    }

    fn visit_none<E: serde::de::Error>(self) -> Result<Quantity, E> {
        Ok(Quantity::zero())
    }
}

/// On the wire a quantity is Kubernetes' `message Quantity { optional string
/// string = 1; }`, carrying the canonical text.
impl prost::Message for Quantity {
    fn encode_raw(&self, buf: &mut impl BufMut) {
        // Always written, even "0", so a decoder sees the value explicitly.
        prost::encoding::string::encode(1, &self.canonical(), buf);
    }

    fn merge_field(
        &mut self,
        tag: u32,
        wire_type: WireType,
        buf: &mut impl Buf,
        ctx: DecodeContext,
    ) -> Result<(), prost::DecodeError> {
        if tag != 1 {
            return prost::encoding::skip_field(wire_type, tag, buf, ctx);
        }
        let mut text = String::new();
        let located = |mut error: prost::DecodeError| {
            error.push("Quantity", "string");
            error
        };
        prost::encoding::string::merge(wire_type, &mut text, buf, ctx).map_err(located)?;
        *self = parse_quantity(&text)
            .map_err(|e| located(crate::wire::invalid_value(e.to_string())))?;
        Ok(())
    }

    fn encoded_len(&self) -> usize {
        prost::encoding::string::encoded_len(1, &self.canonical())
    }

    fn clear(&mut self) {
        *self = Quantity::zero();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message;
    use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

    fn q(s: &str) -> Quantity {
        s.parse().unwrap_or_else(|e| panic!("{s:?} should parse: {e}"))
    }

    fn canon(s: &str) -> String {
        q(s).to_string()
    }

    fn assert_canon(cases: &[(&str, &str)]) {
        for (input, want) in cases {
            assert_eq!(canon(input), *want, "canonical form of {input:?}");
        }
    }

    #[test]
    fn parses_every_decimal_suffix() {
        let cases: [(&str, i128); 10] = [
            ("1n", 1),
            ("1u", 1_000),
            ("1m", 1_000_000),
            ("1", 1_000_000_000),
            ("1k", 1_000_000_000_000),
            ("1M", 1_000_000_000_000_000),
            ("1G", 1_000_000_000_000_000_000),
            ("1T", 1_000_000_000_000_000_000_000),
            ("1P", 1_000_000_000_000_000_000_000_000),
            ("1E", 1_000_000_000_000_000_000_000_000_000),
        ];
        for (input, nanos) in cases {
            let v = q(input);
            assert_eq!(v.nano_value(), nanos, "{input}");
            assert_eq!(v.format(), QuantityFormat::DecimalSI, "{input}");
        }
    }

    #[test]
    fn parses_every_binary_suffix() {
        for (power, suffix) in ["Ki", "Mi", "Gi", "Ti", "Pi", "Ei"].iter().enumerate() {
            let input = format!("3{suffix}");
            let v = q(&input);
            let want = 3 * (1i128 << (10 * (power + 1))) * NANOS_PER_UNIT;
            assert_eq!(v.nano_value(), want, "{input}");
            assert_eq!(v.format(), QuantityFormat::BinarySI, "{input}");
        }
    }

    #[test]
    fn parses_exponent_forms() {
        let cases: [(&str, i128); 9] = [
            ("1e3", 1_000 * NANOS_PER_UNIT),
            ("1E3", 1_000 * NANOS_PER_UNIT),
            ("2e+3", 2_000 * NANOS_PER_UNIT),
            ("1E-3", NANOS_PER_MILLI),
            ("1e-9", 1),
            ("1e0", NANOS_PER_UNIT),
            ("1.5e3", 1_500 * NANOS_PER_UNIT),
            ("-2e3", -2_000 * NANOS_PER_UNIT),
            ("1.e2", 100 * NANOS_PER_UNIT),
        ];
        for (input, nanos) in cases {
            let v = q(input);
            assert_eq!(v.nano_value(), nanos, "{input}");
            assert_eq!(v.format(), QuantityFormat::DecimalExponent, "{input}");
        }
    }

    #[test]
    fn capital_e_alone_is_exa_not_an_exponent() {
        assert_eq!(q("1E").format(), QuantityFormat::DecimalSI);
        assert_eq!(q("1E"), q("1e18"));
        assert_eq!(q("1E3").format(), QuantityFormat::DecimalExponent);
        assert_eq!(q("1E3"), q("1000"));
        assert_eq!(q("2Ei").format(), QuantityFormat::BinarySI);
    }

    #[test]
    fn parses_signs_and_bare_points() {
        assert_eq!(q("+3").nano_value(), 3 * NANOS_PER_UNIT);
        assert_eq!(q("-3").nano_value(), -3 * NANOS_PER_UNIT);
        assert_eq!(q(".5").nano_value(), NANOS_PER_UNIT / 2);
        assert_eq!(q("5.").nano_value(), 5 * NANOS_PER_UNIT);
        assert_eq!(q("+.5m").nano_value(), 500_000);
        assert_eq!(q("-.5").nano_value(), -NANOS_PER_UNIT / 2);
        assert_eq!(q("007").nano_value(), 7 * NANOS_PER_UNIT);
        assert_eq!(q("0.10").nano_value(), NANOS_PER_UNIT / 10);
    }

    #[test]
    fn decimal_canonical_forms() {
        assert_canon(&[
            ("0", "0"),
            ("-0", "0"),
            ("0.000", "0"),
            ("000", "0"),
            ("1", "1"),
            ("+3", "3"),
            ("5.", "5"),
            (".5", "500m"),
            ("0.5", "500m"),
            ("0.1", "100m"),
            ("100m", "100m"),
            ("1000m", "1"),
            ("1500m", "1500m"),
            ("1.5", "1500m"),
            ("10", "10"),
            ("100", "100"),
            ("1000", "1k"),
            ("1500", "1500"),
            ("12345", "12345"),
            ("1000000", "1M"),
            ("0.0015", "1500u"),
            ("1n", "1n"),
            ("1000n", "1u"),
            ("1500n", "1500n"),
            ("1u", "1u"),
            ("1.5k", "1500"),
            ("0.5k", "500"),
            ("10k", "10k"),
            ("1000k", "1M"),
            ("1000P", "1E"),
            ("999E", "999E"),
            ("1000E", "1000E"),
            ("1000000E", "1000000E"),
            ("1.5E", "1500P"),
            ("-1.5", "-1500m"),
            ("-1000", "-1k"),
        ]);
    }

    #[test]
    fn binary_canonical_forms() {
        assert_canon(&[
            ("1Ki", "1Ki"),
            ("1Mi", "1Mi"),
            ("1Gi", "1Gi"),
            ("1Ti", "1Ti"),
            ("1Pi", "1Pi"),
            ("1Ei", "1Ei"),
            ("8Ei", "8Ei"),
            ("1.5Gi", "1536Mi"),
            ("1.5Ki", "1536"),
            ("0.5Gi", "512Mi"),
            ("512Ki", "512Ki"),
            ("1024Ki", "1Mi"),
            ("1023Ki", "1023Ki"),
            ("2000Ki", "2000Ki"),
            ("3000Mi", "3000Mi"),
            ("0.5Ki", "512"),
            ("0.1Ki", "102400m"),
            ("1.1Ki", "1126400m"),
            ("1.0009765625Ki", "1025"),
            ("0Ki", "0"),
            ("-1.5Ki", "-1536"),
            ("-1Gi", "-1Gi"),
            ("1024Ei", "1024Ei"),
        ]);
    }

    #[test]
    fn plain_numbers_are_decimal_si() {
        assert_eq!(q("1024").format(), QuantityFormat::DecimalSI);
        assert_eq!(canon("1024"), "1024");
        assert_eq!(canon("2048"), "2048");
    }

    #[test]
    fn exponent_canonical_forms() {
        assert_canon(&[
            ("2e3", "2e3"),
            ("2e+3", "2e3"),
            ("1e3", "1e3"),
            ("1E3", "1e3"),
            ("1.5e3", "1500"),
            ("1E-3", "1e-3"),
            ("1500e-3", "1500e-3"),
            ("1e0", "1"),
            ("1e1", "10"),
            ("1e2", "100"),
            ("10e2", "1e3"),
            ("12e6", "12e6"),
            ("1e18", "1e18"),
            ("1e21", "1e21"),
            ("1e-9", "1e-9"),
            ("1e-10", "1e-9"),
            ("0.001e3", "1"),
            ("-2e3", "-2e3"),
            ("0e5", "0"),
        ]);
    }

    #[test]
    fn rounds_sub_nano_precision_away_from_zero() {
        assert_canon(&[
            ("0.0000000001", "1n"),
            ("0.0000000015", "2n"),
            ("0.1n", "1n"),
            ("1.0000000001", "1000000001n"),
            ("0.0000000010", "1n"),
            ("-0.0000000001", "-1n"),
            ("1e-1000000", "1e-9"),
            ("0.0000000001Ki", "103n"),
        ]);
        // Exact nanos stay exact.
        assert_eq!(canon("0.000000001"), "1n");
    }

    #[test]
    fn big_values_are_exact() {
        assert_eq!(q("8Ei").nano_value(), (8i128 << 60) * NANOS_PER_UNIT);
        assert_eq!(q("9223372036854775807").value(), i128::from(i64::MAX), "i64::MAX");
        assert_eq!(canon("9223372036854775807"), "9223372036854775807");
        assert_eq!(q("1e18").value(), 1_000_000_000_000_000_000);
        assert_eq!(q("999E").value(), 999_000_000_000_000_000_000);
        let max = "170141183460469231731687303715.884105727";
        assert_eq!(q(max).nano_value(), i128::MAX);
        assert_eq!(canon(max), "170141183460469231731687303715884105727n");
        assert_eq!(q(&format!("-{max}")).nano_value(), -i128::MAX);
        // Many digits, all below the nano, still round to one nano.
        assert_eq!(q("0.00000000000000000000000000000000000000000001").nano_value(), 1);
        // A long digit string scaled back into range.
        assert_eq!(
            q("1000000000000000000000000000000000000000000000000e-30").value(),
            1_000_000_000_000_000_000
        );
        // Many significant digits that fit exactly.
        assert_eq!(
            q("123456789012345678901234567890").value(),
            123_456_789_012_345_678_901_234_567_890
        );
    }

    #[test]
    fn out_of_range_values_are_errors() {
        for input in [
            "1e100",
            "99999999999999999999999999999999999E",
            "1e30",
            "200000000000000000000000000000",
            "170141183460469231731687303715.884105728",
            "-170141183460469231731687303715.884105728",
            "1000000000000Ei",
            "1e2147483647",
        ] {
            let err = Quantity::parse(input).expect_err(input);
            assert_eq!(err, QuantityError::OutOfRange { input: input.to_owned() });
            assert!(err.to_string().contains(&format!("{input:?}")), "{err}");
        }
    }

    #[test]
    fn zero_with_any_exponent_is_zero() {
        assert!(q("0e2147483647").is_zero());
        assert!(q("0e-2147483648").is_zero());
        assert!(q("0000000000000000000000000000000000000000000000000E").is_zero());
    }

    #[test]
    fn invalid_inputs_are_rejected_naming_the_input() {
        for input in [
            "1K",
            "1ki",
            "1Kb",
            "1.5.5",
            "abc",
            "1 Gi",
            "--1",
            "+-1",
            "1e",
            "1ex",
            "1e+",
            "1e-",
            "1e3.5",
            "1e3e3",
            "1ee3",
            "Gi",
            ".",
            "-",
            "+",
            "1 ",
            " 1",
            "1Gib",
            "1GI",
            "1mi",
            "1m3",
            "1-",
            "1_000",
            "0x10",
            "1,5",
            "NaN",
            "inf",
            "１",
            "1e99999999999",
            "e3",
            "1.5 ",
        ] {
            let err = Quantity::parse(input).expect_err(input);
            assert!(
                matches!(err, QuantityError::Invalid { input: ref i, .. } if i == input),
                "{input:?}: {err:?}"
            );
            assert!(
                err.to_string().contains(&format!("{input:?}")),
                "message for {input:?} should name it: {err}"
            );
        }
    }

    #[test]
    fn empty_input_is_its_own_error() {
        let err = Quantity::parse("").unwrap_err();
        assert_eq!(err, QuantityError::Empty);
        assert!(err.to_string().contains("\"\""), "{err}");
    }

    #[test]
    fn invalid_reasons_are_specific() {
        let reason = |s: &str| match Quantity::parse(s) {
            Err(QuantityError::Invalid { reason, .. }) => reason,
            other => panic!("{s:?}: {other:?}"),
        };
        assert!(reason("1.5.5").contains("one decimal point"));
        assert!(reason("1 Gi").contains("whitespace"));
        assert!(reason("1K").contains("unknown suffix \"K\""));
        assert!(reason("1e").contains("no digits"));
        assert!(reason("1e99999999999").contains("out of range"));
        assert!(reason("Gi").contains("expected a number"));
    }

    #[test]
    fn from_str_and_parse_agree() {
        for input in ["1Gi", "100m", "2e3", "-1.5Ki"] {
            let a: Quantity = input.parse().unwrap();
            let b = Quantity::parse(input).unwrap();
            assert_eq!(a, b);
            assert_eq!(a.format(), b.format());
        }
    }

    #[test]
    fn equality_ignores_format() {
        let pairs = [
            ("1Gi", "1024Mi"),
            ("1k", "1000"),
            ("0.5", "500m"),
            ("1e3", "1k"),
            ("1Ki", "1024"),
            ("1E", "1e18"),
            ("0", "0Gi"),
            ("-0", "0e3"),
            ("1500u", "1.5m"),
        ];
        for (a, b) in pairs {
            assert_eq!(q(a), q(b), "{a} == {b}");
            let set: HashSet<Quantity> = [q(a), q(b)].into_iter().collect();
            assert_eq!(set.len(), 1, "{a} and {b} hash alike");
        }
        assert_ne!(q("1G"), q("1Gi"));
        assert_ne!(q("1m"), q("1M"));
    }

    #[test]
    fn ordering_is_by_value() {
        let mut values: Vec<Quantity> =
            ["1Gi", "1G", "100m", "-1", "0", "1Ki", "1e3", "-1Ki", "1n"]
                .iter()
                .map(|s| q(s))
                .collect();
        values.sort();
        let printed: Vec<String> = values.iter().map(ToString::to_string).collect();
        assert_eq!(printed, ["-1Ki", "-1", "0", "1n", "100m", "1e3", "1Ki", "1G", "1Gi"]);
        assert!(q("1Gi") > q("1G"));
        assert!(q("999m") < q("1"));
        assert_eq!(q("1k").cmp(&q("1000")), Ordering::Equal);
        let set: BTreeSet<Quantity> = [q("1k"), q("1000"), q("1e3")].into_iter().collect();
        assert_eq!(set.len(), 1);
    }

    #[test]
    fn display_round_trips() {
        for input in [
            "0",
            "1n",
            "100m",
            "1.5",
            "1500",
            "1k",
            "999E",
            "1000E",
            "1Gi",
            "1.5Gi",
            "1.5Ki",
            "0.1Ki",
            "1024Ei",
            "2e3",
            "1500e-3",
            "1e21",
            "-1.5Ki",
            "-0.0000000001",
            "170141183460469231731687303715.884105727",
        ] {
            let first = q(input);
            let printed = first.to_string();
            let second = q(&printed);
            assert_eq!(first, second, "{input} -> {printed}");
            assert_eq!(second.to_string(), printed, "{input} prints stably");
        }
    }

    #[test]
    fn display_honours_padding() {
        assert_eq!(format!("{:>6}|", q("1Gi")), "   1Gi|");
        assert_eq!(format!("{:<6}|", q("100m")), "100m  |");
    }

    #[test]
    fn debug_shows_value_and_format() {
        let text = format!("{:?}", q("1.5Gi"));
        assert!(text.contains("1536Mi") && text.contains("BinarySI"), "{text}");
    }

    #[test]
    fn add_and_sub_across_formats() {
        let sum = q("1Gi").checked_add(&q("512Mi")).unwrap();
        assert_eq!(sum.to_string(), "1536Mi");
        assert_eq!(sum.format(), QuantityFormat::BinarySI);

        assert_eq!(q("100m").checked_add(&q("900m")).unwrap().to_string(), "1");
        assert_eq!(q("1").checked_sub(&q("1500m")).unwrap().to_string(), "-500m");
        assert!(q("1Gi").checked_sub(&q("1024Mi")).unwrap().is_zero());

        // The left operand's format wins ...
        let mixed = q("1k").checked_add(&q("1Ki")).unwrap();
        assert_eq!(mixed.format(), QuantityFormat::DecimalSI);
        assert_eq!(mixed.to_string(), "2024");
        let mixed = q("2e3").checked_add(&q("1k")).unwrap();
        assert_eq!(mixed.to_string(), "3e3");
        // ... unless it is zero.
        let from_zero = Quantity::zero().checked_add(&q("1Gi")).unwrap();
        assert_eq!(from_zero.format(), QuantityFormat::BinarySI);
        assert_eq!(from_zero.to_string(), "1Gi");
        let from_zero = q("0").checked_sub(&q("1Gi")).unwrap();
        assert_eq!(from_zero.to_string(), "-1Gi");
    }

    #[test]
    fn arithmetic_overflow_is_detected() {
        let max = Quantity::from_nanos(i128::MAX, QuantityFormat::DecimalSI).unwrap();
        let min = max.checked_neg().unwrap();
        let one = Quantity::from_nanos(1, QuantityFormat::DecimalSI).unwrap();

        let err = max.checked_add(&one).unwrap_err();
        assert!(matches!(err, QuantityError::Overflow { .. }));
        assert!(err.to_string().contains("1n"), "{err}");
        assert!(err.to_string().contains(&max.to_string()), "{err}");

        // The result would be i128::MIN, which would break negation.
        assert!(matches!(min.checked_sub(&one), Err(QuantityError::Overflow { .. })));
        assert!(matches!(min.checked_add(&min), Err(QuantityError::Overflow { .. })));
        assert_eq!(max.checked_sub(&one).unwrap().nano_value(), i128::MAX - 1);
        assert_eq!(min.checked_neg().unwrap(), max);
        assert!(max.checked_add(&min).unwrap().is_zero());
    }

    #[test]
    fn negation_keeps_format() {
        let neg = q("1Gi").checked_neg().unwrap();
        assert_eq!(neg.to_string(), "-1Gi");
        assert_eq!(neg.format(), QuantityFormat::BinarySI);
        assert_eq!(q("0").checked_neg().unwrap().to_string(), "0");
    }

    #[test]
    fn constructors() {
        assert_eq!(Quantity::zero().to_string(), "0");
        assert_eq!(Quantity::default(), Quantity::zero());
        assert_eq!(Quantity::default().format(), QuantityFormat::DecimalSI);
        assert_eq!(Quantity::from_int(5, QuantityFormat::BinarySI).to_string(), "5");
        assert_eq!(Quantity::from_int(1 << 20, QuantityFormat::BinarySI).to_string(), "1Mi");
        assert_eq!(Quantity::from_int(2000, QuantityFormat::DecimalExponent).to_string(), "2e3");
        assert_eq!(
            Quantity::from_int(i64::MIN, QuantityFormat::DecimalSI).value(),
            i128::from(i64::MIN)
        );
        assert_eq!(Quantity::from_milli(1500, QuantityFormat::DecimalSI).to_string(), "1500m");
        assert_eq!(Quantity::from_milli(-250, QuantityFormat::DecimalSI), q("-0.25"));
        assert_eq!(Quantity::from_nanos(1, QuantityFormat::DecimalSI).unwrap().to_string(), "1n");
        let err = Quantity::from_nanos(i128::MIN, QuantityFormat::DecimalSI).unwrap_err();
        assert!(matches!(err, QuantityError::OutOfRange { .. }));
        assert!(err.to_string().contains(&i128::MIN.to_string()), "{err}");
    }

    #[test]
    fn accessors_round_up() {
        assert_eq!(q("1.5").value(), 2);
        assert_eq!(q("100m").value(), 1);
        assert_eq!(q("2").value(), 2);
        assert_eq!(q("-1.5").value(), -1);
        assert_eq!(q("-100m").value(), 0);
        assert_eq!(q("1Gi").value(), 1 << 30);
        assert_eq!(q("1.5").milli_value(), 1500);
        assert_eq!(q("1u").milli_value(), 1);
        assert_eq!(q("-1u").milli_value(), 0);
        assert_eq!(q("1500u").milli_value(), 2);
        assert_eq!(q("1.5").nano_value(), 1_500_000_000);
        assert_eq!(q("-1.5").nano_value(), -1_500_000_000);
    }

    #[test]
    fn zero_and_sign() {
        assert!(q("0").is_zero());
        assert!(q("0Mi").is_zero());
        assert!(!q("1n").is_zero());
        assert_eq!(q("0").sign(), Ordering::Equal);
        assert_eq!(q("1n").sign(), Ordering::Greater);
        assert_eq!(q("-1n").sign(), Ordering::Less);
    }

    #[test]
    fn serde_json_round_trips_as_canonical_string() {
        let v = q("1.5Gi");
        let json = serde_json::to_string(&v).unwrap();
        assert_eq!(json, "\"1536Mi\"");
        let back: Quantity = serde_json::from_str(&json).unwrap();
        assert_eq!(back, v);
        assert_eq!(back.format(), QuantityFormat::BinarySI);

        let map: BTreeMap<String, Quantity> =
            [("cpu".to_owned(), q("100m")), ("memory".to_owned(), q("1Gi"))].into_iter().collect();
        let json = serde_json::to_string(&map).unwrap();
        assert_eq!(json, r#"{"cpu":"100m","memory":"1Gi"}"#);
        let back: BTreeMap<String, Quantity> = serde_json::from_str(&json).unwrap();
        assert_eq!(back, map);
    }

    #[test]
    fn serde_json_accepts_bare_numbers() {
        let cases = [
            ("1", "1"),
            ("2.5", "2500m"),
            ("0.1", "100m"),
            ("-3", "-3"),
            ("1e3", "1k"),
            ("1073741824", "1073741824"),
            ("18446744073709551615", "18446744073709551615"),
            ("0.0000000001", "1n"),
        ];
        for (json, want) in cases {
            let v: Quantity = serde_json::from_str(json).unwrap();
            assert_eq!(v.to_string(), want, "{json}");
        }
    }

    #[test]
    fn serde_json_accepts_null_and_trims_strings() {
        let v: Quantity = serde_json::from_str("null").unwrap();
        assert!(v.is_zero());
        let v: Quantity = serde_json::from_str("\" 1Gi \"").unwrap();
        assert_eq!(v.to_string(), "1Gi");
    }

    #[test]
    fn serde_json_errors_name_the_input() {
        let err = serde_json::from_str::<Quantity>("\"1K\"").unwrap_err();
        assert!(err.to_string().contains("\"1K\""), "{err}");
        let err = serde_json::from_str::<Quantity>("1e300").unwrap_err();
        assert!(err.to_string().contains("out of range"), "{err}");
        let err = serde_json::from_str::<Quantity>("true").unwrap_err();
        assert!(err.to_string().contains("quantity"), "{err}");
    }

    #[test]
    fn serde_yaml_accepts_strings_and_unquoted_numbers() {
        let yaml = "cpu: 1\nhalf: 0.5\nmemory: 1e9\nstorage: 1Gi\nmilli: 100m\nexp: 2e3x\n";
        // "2e3x" is not a quantity; check the good keys first.
        let good = yaml.replace("exp: 2e3x\n", "");
        let map: BTreeMap<String, Quantity> = serde_yaml_ng::from_str(&good).unwrap();
        assert_eq!(map["cpu"].to_string(), "1");
        assert_eq!(map["half"].to_string(), "500m");
        assert_eq!(map["memory"].to_string(), "1G");
        assert_eq!(map["memory"].value(), 1_000_000_000);
        assert_eq!(map["storage"].to_string(), "1Gi");
        assert_eq!(map["milli"].to_string(), "100m");

        let err = serde_yaml_ng::from_str::<BTreeMap<String, Quantity>>(yaml).unwrap_err();
        assert!(err.to_string().contains("\"2e3x\""), "{err}");
    }

    #[test]
    fn serde_yaml_round_trips() {
        let map: BTreeMap<String, Quantity> = [
            ("cpu".to_owned(), q("1")),
            ("memory".to_owned(), q("1.5Gi")),
            ("scaled".to_owned(), q("2e3")),
        ]
        .into_iter()
        .collect();
        let yaml = serde_yaml_ng::to_string(&map).unwrap();
        assert!(yaml.contains("memory: 1536Mi"), "{yaml}");
        let back: BTreeMap<String, Quantity> = serde_yaml_ng::from_str(&yaml).unwrap();
        assert_eq!(back, map);
        for (k, v) in &map {
            assert_eq!(back[k].to_string(), v.to_string());
        }
    }

    #[test]
    fn prost_round_trips_canonical_string() {
        let v = q("1.5Gi");
        let bytes = v.encode_to_vec();
        assert_eq!(bytes, b"\x0a\x061536Mi");
        assert_eq!(v.encoded_len(), bytes.len());
        let back = Quantity::decode(bytes.as_slice()).unwrap();
        assert_eq!(back, v);
        assert_eq!(back.format(), QuantityFormat::BinarySI);
        assert_eq!(back.to_string(), "1536Mi");
    }

    #[test]
    fn prost_always_encodes_zero() {
        let bytes = Quantity::zero().encode_to_vec();
        assert_eq!(bytes, b"\x0a\x010");
        assert!(Quantity::decode(bytes.as_slice()).unwrap().is_zero());
        // An absent field decodes to zero too.
        assert!(Quantity::decode(&[0u8; 0][..]).unwrap().is_zero());
    }

    #[test]
    fn prost_skips_unknown_fields_and_last_value_wins() {
        // field 2 varint 150, field 1 "1", field 3 bytes "xy", field 1 "2Ki"
        let bytes = b"\x10\x96\x01\x0a\x011\x1a\x02xy\x0a\x032Ki";
        let v = Quantity::decode(&bytes[..]).unwrap();
        assert_eq!(v.to_string(), "2Ki");
    }

    #[test]
    fn prost_decode_rejects_bad_strings() {
        let err = Quantity::decode(&b"\x0a\x021K"[..]).unwrap_err();
        let text = err.to_string();
        assert!(text.contains("\"1K\""), "{text}");
        assert!(text.contains("Quantity.string"), "{text}");

        let err = Quantity::decode(&b"\x0a\x00"[..]).unwrap_err();
        assert!(err.to_string().contains("empty"), "{err}");

        // Not UTF-8.
        assert!(Quantity::decode(&b"\x0a\x01\xff"[..]).is_err());
        // Wrong wire type for field 1.
        assert!(Quantity::decode(&b"\x08\x01"[..]).is_err());
    }

    #[test]
    fn prost_clear_resets_to_zero() {
        let mut v = q("1Gi");
        v.clear();
        assert!(v.is_zero());
        assert_eq!(v.format(), QuantityFormat::DecimalSI);
    }

    /// Shaped like prost-build output with Quantity mapped as an extern type.
    #[derive(Clone, PartialEq, prost::Message)]
    struct Resources {
        #[prost(btree_map = "string, message", tag = "1")]
        limits: BTreeMap<String, Quantity>,
        #[prost(hash_map = "string, message", tag = "2")]
        requests: HashMap<String, Quantity>,
        #[prost(message, optional, tag = "3")]
        single: Option<Quantity>,
        #[prost(message, repeated, tag = "4")]
        list: Vec<Quantity>,
    }

    #[test]
    fn prost_round_trips_inside_generated_messages() {
        let original = Resources {
            limits: [
                ("cpu".to_owned(), q("500m")),
                ("memory".to_owned(), q("1.5Gi")),
                ("zero".to_owned(), Quantity::zero()),
            ]
            .into_iter()
            .collect(),
            requests: [("cpu".to_owned(), q("2e3"))].into_iter().collect(),
            single: Some(q("-1.5Ki")),
            list: vec![q("1"), q("1E"), q("0.0000000001")],
        };
        let bytes = original.encode_to_vec();
        let back = Resources::decode(bytes.as_slice()).unwrap();
        assert_eq!(back, original);
        assert_eq!(back.limits["memory"].to_string(), "1536Mi");
        assert_eq!(back.limits["zero"].to_string(), "0");
        assert_eq!(back.requests["cpu"].to_string(), "2e3");
        assert_eq!(back.single.map(|v| v.to_string()).as_deref(), Some("-1536"));
        let list: Vec<String> = back.list.iter().map(ToString::to_string).collect();
        assert_eq!(list, ["1", "1E", "1n"]);
    }

    #[test]
    fn prost_bad_quantity_inside_a_message_is_located() {
        // Resources.limits = {"cpu": Quantity{string: "abc"}}
        let entry = b"\x0a\x03cpu\x12\x05\x0a\x03abc";
        let mut bytes = vec![0x0a, entry.len() as u8];
        bytes.extend_from_slice(entry);
        let err = Resources::decode(bytes.as_slice()).unwrap_err();
        let text = err.to_string();
        assert!(text.contains("\"abc\""), "{text}");
        assert!(text.contains("Resources.limits"), "{text}");
    }
}
