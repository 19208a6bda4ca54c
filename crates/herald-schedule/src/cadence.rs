//! `Cadence`: when a schedule fires: a cron expression (croner, 5 fields or 6 with seconds)
//! read in an IANA time zone (chrono-tz), or a fixed interval on multiples of itself since
//! the Unix epoch. Times are ms since the Unix epoch.

use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use chrono_tz::Tz;
use croner::Cron;
use herald::schedule::ScheduleSpec;

/// A cadence that is not one; each names the value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CadenceError {
    /// Not a cron expression.
    #[error("--cron {expr:?} is not a cron expression: {reason}")]
    Cron {
        /// The expression.
        expr: String,
        /// What croner said.
        reason: String,
    },
    /// Not an IANA time zone.
    #[error(
        "--tz {tz:?} is not a time zone (an IANA name such as UTC, Europe/Paris, America/New_York)"
    )]
    TimeZone {
        /// The name.
        tz: String,
    },
    /// Not an interval, or zero.
    #[error("--every {every:?}: {reason}")]
    Every {
        /// The value.
        every: String,
        /// What is wrong.
        reason: String,
    },
    /// Both or neither of cron and every.
    #[error("a schedule needs exactly one of --cron and --every")]
    OneOf,
}

/// When a schedule fires.
#[derive(Debug, Clone)]
pub enum Cadence {
    /// A cron expression in a time zone.
    Cron {
        /// The parsed expression.
        cron: Box<Cron>,
        /// Its time zone.
        tz: Tz,
    },
    /// Every this many ms, on multiples of it since the Unix epoch.
    Every(i64),
}

/// Parses an interval: a whole number and a unit, `ms`, `s`, `m`, `h` or `d` (`30s`, `5m`).
///
/// # Errors
///
/// [`CadenceError::Every`] for anything else, or zero.
pub fn parse_every(text: &str) -> Result<Duration, CadenceError> {
    let bad = |reason: &str| CadenceError::Every {
        every: text.into(),
        reason: reason.into(),
    };
    let digits = text.trim().chars().take_while(char::is_ascii_digit).count();
    let (number, unit) = text.trim().split_at(digits);
    let n: u64 = number
        .parse()
        .map_err(|_| bad("not a whole number and a unit (30s, 5m, 2h, 1d, 500ms)"))?;
    let ms = match unit {
        "ms" => Some(n),
        "s" => n.checked_mul(1_000),
        "m" => n.checked_mul(60_000),
        "h" => n.checked_mul(3_600_000),
        "d" => n.checked_mul(86_400_000),
        _ => return Err(bad("the unit must be ms, s, m, h or d")),
    }
    .ok_or_else(|| bad("too long"))?;
    if ms == 0 {
        return Err(bad("an interval must be more than 0"));
    }
    if ms > 366 * 86_400_000 {
        return Err(bad("an interval must be at most a year"));
    }
    Ok(Duration::from_millis(ms))
}

fn at(ms: i64) -> DateTime<Utc> {
    Utc.timestamp_millis_opt(ms).single().unwrap_or_default()
}

impl Cadence {
    /// The cadence of `cron` (or `every_ms`) in `tz`.
    ///
    /// # Errors
    ///
    /// [`CadenceError`] naming the value.
    pub fn parse(
        cron: Option<&str>,
        every_ms: Option<u64>,
        tz: &str,
    ) -> Result<Cadence, CadenceError> {
        let zone: Tz = tz
            .parse()
            .map_err(|_| CadenceError::TimeZone { tz: tz.into() })?;
        match (cron, every_ms) {
            (Some(expr), None) => {
                let parsed = Cron::new(expr)
                    .with_seconds_optional()
                    .parse()
                    .map_err(|e| CadenceError::Cron {
                        expr: expr.into(),
                        reason: e.to_string(),
                    })?;
                Ok(Cadence::Cron {
                    cron: Box::new(parsed),
                    tz: zone,
                })
            }
            (None, Some(0)) => Err(CadenceError::Every {
                every: "0ms".into(),
                reason: "an interval must be more than 0".into(),
            }),
            (None, Some(ms)) => Ok(Cadence::Every(i64::try_from(ms).unwrap_or(i64::MAX))),
            _ => Err(CadenceError::OneOf),
        }
    }

    /// The cadence a stored spec stands for.
    ///
    /// # Errors
    ///
    /// As [`Cadence::parse`].
    pub fn of(spec: &ScheduleSpec) -> Result<Cadence, CadenceError> {
        Cadence::parse(spec.cron.as_deref(), spec.every_ms, &spec.tz)
    }

    /// The first fire time strictly after `after_ms`.
    pub fn next_after(&self, after_ms: i64) -> Option<i64> {
        match self {
            Cadence::Every(p) => Some((after_ms.div_euclid(*p) + 1) * p),
            Cadence::Cron { cron, tz } => {
                let from = at(after_ms).with_timezone(tz);
                cron.find_next_occurrence(&from, false)
                    .ok()
                    .map(|t| t.timestamp_millis())
            }
        }
    }

    /// The next `n` fire times after `after_ms`.
    pub fn upcoming(&self, after_ms: i64, n: usize) -> Vec<i64> {
        let mut out = Vec::with_capacity(n);
        let mut t = after_ms;
        while out.len() < n {
            match self.next_after(t) {
                Some(next) if next > t => {
                    out.push(next);
                    t = next;
                }
                _ => break,
            }
        }
        out
    }

    /// The latest fire time `t` with `last_ms < t <= now_ms`, if any: the tick that is due.
    pub fn latest_due(&self, last_ms: i64, now_ms: i64) -> Option<i64> {
        if now_ms <= last_ms {
            return None;
        }
        if let Cadence::Every(p) = self {
            let t = now_ms.div_euclid(*p) * p;
            return (t > last_ms).then_some(t);
        }
        // Look back through widening windows, so that a schedule paused for a year costs a
        // few steps, not a year of ticks.
        for window in [
            60_000_i64,
            3_600_000,
            86_400_000,
            32 * 86_400_000,
            400 * 86_400_000,
        ] {
            let start = last_ms.max(now_ms.saturating_sub(window));
            let mut latest = None;
            let mut t = start;
            while let Some(next) = self.next_after(t) {
                if next > now_ms || next <= t {
                    break;
                }
                latest = Some(next);
                t = next;
            }
            if latest.is_some() || start == last_ms {
                return latest;
            }
        }
        None
    }
}
