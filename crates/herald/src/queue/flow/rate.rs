//! A token-bucket rate as a policy writes it: `N/s`, `N/min`, `N/h` and a burst, read from
//! text or from its fields, and how many tokens it gives a microsecond.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use super::error::FlowError;

/// A token-bucket rate: `count` tokens every `per_secs` seconds, at most `burst` saved up.
/// Read from its fields or from text (`"10/min"`, burst 1); written as its fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Rate {
    /// Tokens per period.
    pub count: u32,
    /// The period, in seconds.
    pub per_secs: u32,
    /// Tokens the bucket holds at most (default 1: evenly spaced).
    #[serde(default = "one")]
    pub burst: u32,
}

fn one() -> u32 {
    1
}

/// A rate as a config file or the store may hold it.
#[derive(Deserialize)]
#[serde(untagged)]
enum RateText {
    Text(String),
    Fields(RateFields),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RateFields {
    count: u32,
    per_secs: u32,
    #[serde(default = "one")]
    burst: u32,
}

impl<'de> Deserialize<'de> for Rate {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match RateText::deserialize(d)? {
            RateText::Text(t) => t.parse().map_err(serde::de::Error::custom),
            RateText::Fields(f) => Ok(Rate {
                count: f.count,
                per_secs: f.per_secs,
                burst: f.burst,
            }),
        }
    }
}

impl Rate {
    /// Tokens per microsecond.
    pub fn per_micro(&self) -> f64 {
        f64::from(self.count) / (f64::from(self.per_secs) * 1e6)
    }

    /// Sets the burst.
    ///
    /// # Errors
    ///
    /// [`FlowError::Zero`] for 0.
    pub fn with_burst(mut self, burst: u32) -> Result<Self, FlowError> {
        if burst == 0 {
            return Err(FlowError::Zero {
                field: "burst".into(),
            });
        }
        self.burst = burst;
        Ok(self)
    }
}

impl FromStr for Rate {
    type Err = FlowError;

    /// `10/min`, `20/s`, `100/h` (also `sec`, `second`, `m`, `minute`, `hour`).
    fn from_str(text: &str) -> Result<Self, FlowError> {
        let bad = |reason| FlowError::Rate {
            rate: text.to_owned(),
            reason,
        };
        let (n, unit) = text.trim().split_once('/').ok_or_else(|| bad("has no /"))?;
        let count: u32 = n.trim().parse().map_err(|_| bad("has no whole count"))?;
        if count == 0 {
            return Err(bad("is 0"));
        }
        let per_secs = match unit.trim() {
            "s" | "sec" | "second" => 1,
            "m" | "min" | "minute" => 60,
            "h" | "hour" => 3_600,
            _ => return Err(bad("has an unknown unit")),
        };
        Ok(Rate {
            count,
            per_secs,
            burst: 1,
        })
    }
}

impl fmt::Display for Rate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let unit = match self.per_secs {
            1 => "s",
            60 => "min",
            3_600 => "h",
            _ => return write!(f, "{}/{}s burst {}", self.count, self.per_secs, self.burst),
        };
        write!(f, "{}/{unit} burst {}", self.count, self.burst)
    }
}
