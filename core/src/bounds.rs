//! Range-checked numbers for configuration structs: `#[serde(deserialize_with = ...)]`
//! helpers that refuse a value outside its documented range while the file is parsed, so the
//! error names the key and the line (a value that would wrap, overflow or loop is never
//! accepted).
//!
//! ```
//! #[derive(Debug, serde::Deserialize)]
//! struct Options {
//!     #[serde(deserialize_with = "stratalake_core::bounds::u64_in::<_, 1, 1024>")]
//!     split_size_megabytes: u64,
//! }
//! let ok: Options = serde_json::from_str(r#"{"split_size_megabytes": 32}"#).unwrap();
//! assert_eq!(ok.split_size_megabytes, 32);
//! let e = serde_json::from_str::<Options>(r#"{"split_size_megabytes": 17592186044416}"#);
//! assert!(e.unwrap_err().to_string().contains("must be in 1..=1024"));
//! ```

use serde::{Deserialize, Deserializer, de::Error as _};

fn out_of_range<E: serde::de::Error>(
    v: impl std::fmt::Display,
    min: impl std::fmt::Display,
    max: impl std::fmt::Display,
) -> E {
    E::custom(format!(
        "{v} is out of range: the value must be in {min}..={max}"
    ))
}

/// A `u64` in `MIN..=MAX`.
///
/// # Errors
/// The deserializer's error, or a value out of range.
pub fn u64_in<'de, D: Deserializer<'de>, const MIN: u64, const MAX: u64>(
    d: D,
) -> Result<u64, D::Error> {
    let v = u64::deserialize(d)?;
    if (MIN..=MAX).contains(&v) {
        Ok(v)
    } else {
        Err(out_of_range(v, MIN, MAX))
    }
}

/// A `usize` in `MIN..=MAX`.
///
/// # Errors
/// The deserializer's error, or a value out of range.
pub fn usize_in<'de, D: Deserializer<'de>, const MIN: usize, const MAX: usize>(
    d: D,
) -> Result<usize, D::Error> {
    narrow(u64::deserialize(d)?, MIN, MAX)
}

/// A `u32` in `MIN..=MAX`.
///
/// # Errors
/// The deserializer's error, or a value out of range.
pub fn u32_in<'de, D: Deserializer<'de>, const MIN: u32, const MAX: u32>(
    d: D,
) -> Result<u32, D::Error> {
    narrow(u64::deserialize(d)?, MIN, MAX)
}

/// `v` as a narrower integer in `min..=max`.
fn narrow<T, E>(v: u64, min: T, max: T) -> Result<T, E>
where
    T: TryFrom<u64> + PartialOrd + std::fmt::Display + Copy,
    E: serde::de::Error,
{
    match T::try_from(v) {
        Ok(u) if u >= min && u <= max => Ok(u),
        _ => Err(out_of_range(v, min, max)),
    }
}

/// An `f64` in `MIN..=MAX` (given as integers), finite.
///
/// # Errors
/// The deserializer's error, or a value out of range or not finite.
pub fn f64_in<'de, D: Deserializer<'de>, const MIN: u64, const MAX: u64>(
    d: D,
) -> Result<f64, D::Error> {
    let v = f64::deserialize(d)?;
    #[expect(clippy::cast_precision_loss, reason = "the bounds are small integers")]
    let (lo, hi) = (MIN as f64, MAX as f64);
    if v.is_finite() && v >= lo && v <= hi {
        Ok(v)
    } else {
        Err(D::Error::custom(format!(
            "{v} is out of range: the value must be in {MIN}..={MAX}"
        )))
    }
}

/// A finite `f64` above zero (a step, a ratio's divisor).
///
/// # Errors
/// The deserializer's error, or a value that is not a positive finite number.
pub fn positive_f64<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
    let v = f64::deserialize(d)?;
    if v.is_finite() && v > 0.0 {
        Ok(v)
    } else {
        Err(D::Error::custom(format!(
            "{v} is out of range: the value must be a number above 0"
        )))
    }
}
