//! Exact money: amounts in pico-dollars, prices in micro-dollars per million tokens.
//!
//! A price of `p` micro-USD per 1M tokens costs exactly `p` pico-USD per token, so a
//! request's cost is an integer product with no rounding anywhere.

use std::fmt;
use std::ops::{Add, AddAssign, Sub};

const PICO_PER_USD: i64 = 1_000_000_000_000;

/// An exact amount of US dollars, stored as pico-dollars (10⁻¹² USD).
#[derive(
    Clone,
    Copy,
    Debug,
    Default,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    serde::Serialize,
    serde::Deserialize,
)]
#[serde(transparent)]
pub struct Usd(i64);

impl Usd {
    pub const ZERO: Usd = Usd(0);

    /// From pico-dollars (the ledger's storage unit).
    pub const fn from_pico(pico: i64) -> Self {
        Usd(pico)
    }

    /// The amount in pico-dollars.
    pub const fn pico(self) -> i64 {
        self.0
    }

    /// Approximate dollars, for metrics only (Prometheus counters are floats).
    pub fn as_f64(self) -> f64 {
        self.0 as f64 / PICO_PER_USD as f64
    }

    /// Converts a configured dollar amount with at most six decimals, exactly.
    pub fn from_dollars(usd: f64) -> Result<Self, MoneyError> {
        let micros = PerMillion::from_usd(usd)?.micros();
        i64::try_from(micros)
            .ok()
            .and_then(|m| m.checked_mul(1_000_000))
            .map(Usd)
            .ok_or(MoneyError::TooLarge(usd))
    }

    /// Saturating subtraction that can go negative (savings may be negative).
    pub fn saturating_sub(self, other: Usd) -> Usd {
        Usd(self.0.saturating_sub(other.0))
    }
}

impl Add for Usd {
    type Output = Usd;
    fn add(self, rhs: Usd) -> Usd {
        Usd(self.0.saturating_add(rhs.0))
    }
}

impl AddAssign for Usd {
    fn add_assign(&mut self, rhs: Usd) {
        *self = *self + rhs;
    }
}

impl Sub for Usd {
    type Output = Usd;
    fn sub(self, rhs: Usd) -> Usd {
        self.saturating_sub(rhs)
    }
}

/// Exact decimal dollars with trailing zeros trimmed: `0.00123`, `12`, `-0.5`.
impl fmt::Display for Usd {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sign = if self.0 < 0 { "-" } else { "" };
        let abs = self.0.unsigned_abs();
        let whole = abs / PICO_PER_USD as u64;
        let frac = abs % PICO_PER_USD as u64;
        if frac == 0 {
            return write!(f, "{sign}{whole}");
        }
        let digits = format!("{frac:012}");
        write!(f, "{sign}{whole}.{}", digits.trim_end_matches('0'))
    }
}

/// A configured amount that cannot be held exactly.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum MoneyError {
    #[error("price must be a non-negative number of USD per 1M tokens, got {0}")]
    NegativePrice(f64),
    #[error("price {0} has more than six decimals or is too large")]
    Inexact(f64),
    #[error("{0} USD is too large")]
    TooLarge(f64),
    #[error("must be a non-negative number of USD per hour, got {0}")]
    NegativeHourly(f64),
    #[error("throughput must be a positive number of tokens per second, got {0}")]
    Throughput(f64),
    #[error("the hourly cost over this throughput is too large a price")]
    HourlyTooLarge,
}

/// A price in micro-dollars per million tokens (= pico-dollars per token).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PerMillion(u64);

impl PerMillion {
    pub const ZERO: PerMillion = PerMillion(0);

    /// Converts a configured "USD per 1M tokens" figure. It must be non-negative, finite
    /// and have at most six decimals, so the conversion is exact.
    pub fn from_usd(usd_per_million: f64) -> Result<Self, MoneyError> {
        if !usd_per_million.is_finite() || usd_per_million < 0.0 {
            return Err(MoneyError::NegativePrice(usd_per_million));
        }
        let micros = usd_per_million * 1e6;
        let rounded = micros.round();
        if (micros - rounded).abs() > 1e-6 * micros.max(1.0) || rounded > 1e15 {
            return Err(MoneyError::Inexact(usd_per_million));
        }
        Ok(PerMillion(rounded as u64))
    }

    /// The price per token of a machine that costs `usd_per_hour` and processes
    /// `tokens_per_second` tokens: the hourly cost spread over the tokens of an hour,
    /// rounded to the pico-dollar per token.
    pub fn from_hourly(usd_per_hour: f64, tokens_per_second: f64) -> Result<Self, MoneyError> {
        if !usd_per_hour.is_finite() || usd_per_hour < 0.0 {
            return Err(MoneyError::NegativeHourly(usd_per_hour));
        }
        if !tokens_per_second.is_finite() || tokens_per_second <= 0.0 {
            return Err(MoneyError::Throughput(tokens_per_second));
        }
        let pico_per_token = (usd_per_hour * 1e12 / (3600.0 * tokens_per_second)).round();
        if pico_per_token > 1e15 {
            return Err(MoneyError::HourlyTooLarge);
        }
        Ok(PerMillion(pico_per_token as u64))
    }

    /// The cost of `tokens` tokens at this price.
    pub fn cost(self, tokens: u64) -> Usd {
        let pico = u128::from(self.0) * u128::from(tokens);
        Usd(i64::try_from(pico).unwrap_or(i64::MAX))
    }

    /// Micro-dollars per million tokens.
    pub fn micros(self) -> u64 {
        self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hourly_cost_spreads_over_the_tokens_of_an_hour() {
        // $2/h at 1,000 tokens/s: 3.6M tokens an hour, $0.555556 per 1M tokens.
        let p = PerMillion::from_hourly(2.0, 1000.0).unwrap_or_default();
        assert_eq!(p.micros(), 555_556);
        // An hour of tokens costs the hour, to the rounding of the per-token price.
        assert!((p.cost(3_600_000).as_f64() - 2.0).abs() < 2e-6);
        assert_eq!(PerMillion::from_hourly(0.0, 10.0), Ok(PerMillion::ZERO));
        assert!(PerMillion::from_hourly(1.0, 0.0).is_err());
        assert!(PerMillion::from_hourly(-1.0, 5.0).is_err());
        assert!(PerMillion::from_hourly(f64::NAN, 5.0).is_err());
    }

    #[test]
    fn prices_convert_exactly() {
        assert_eq!(PerMillion::from_usd(2.5), Ok(PerMillion(2_500_000)));
        assert_eq!(PerMillion::from_usd(0.075), Ok(PerMillion(75_000)));
        assert_eq!(PerMillion::from_usd(0.01875), Ok(PerMillion(18_750)));
        assert!(PerMillion::from_usd(0.0000001).is_err());
        assert!(PerMillion::from_usd(-1.0).is_err());
        assert!(PerMillion::from_usd(f64::NAN).is_err());
    }

    #[test]
    fn cost_is_exact_and_displays_as_decimal() {
        let price = PerMillion::from_usd(0.075).unwrap_or_default();
        let cost = price.cost(1_234);
        assert_eq!(cost.pico(), 92_550_000);
        assert_eq!(cost.to_string(), "0.00009255");
        assert_eq!(Usd::from_pico(3 * PICO_PER_USD).to_string(), "3");
        assert_eq!(Usd::from_pico(-PICO_PER_USD / 2).to_string(), "-0.5");
        assert_eq!(Usd::ZERO.to_string(), "0");
    }
}
