//! `Timestamp`: UTC instants written as RFC 3339 with `Z`, read leniently (offset-less = UTC).

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use time::format_description::well_known::Rfc3339;
use time::macros::format_description;
use time::{OffsetDateTime, PrimitiveDateTime, UtcOffset};

/// A UTC instant with at least microsecond precision.
///
/// Written as RFC 3339 in UTC with `Z` and six fractional digits (nine when the instant
/// carries nanoseconds), which Python's `datetime.fromisoformat` reads. Read from RFC 3339
/// with any offset, or from an offset-less ISO 8601 time as Python's `isoformat()` writes it
/// (taken as UTC). A read followed by a write keeps the instant exactly.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(OffsetDateTime);

/// A string that is not a timestamp Herald can read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid timestamp {input:?}: expected RFC 3339 (2026-01-02T03:04:05.123456Z) or an offset-less ISO 8601 time")]
pub struct TimestampError {
    /// The rejected input.
    pub input: String,
}

impl Timestamp {
    /// Now, truncated to microseconds so that it survives a round trip through any reader
    /// that keeps microseconds (Python's `datetime`).
    pub fn now() -> Self {
        let now = OffsetDateTime::now_utc();
        let micros = now.nanosecond() / 1_000 * 1_000;
        Timestamp(now.replace_nanosecond(micros).unwrap_or(now))
    }

    /// Wraps an `OffsetDateTime`, converted to UTC.
    pub fn from_datetime(dt: OffsetDateTime) -> Self {
        Timestamp(dt.to_offset(UtcOffset::UTC))
    }

    /// The instant `ms` milliseconds after the Unix epoch; none out of range.
    pub fn from_unix_ms(ms: i64) -> Option<Self> {
        OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
            .ok()
            .map(Timestamp)
    }

    /// The instant as an `OffsetDateTime` in UTC.
    pub fn as_datetime(&self) -> OffsetDateTime {
        self.0
    }

    /// Parses RFC 3339, or an offset-less ISO 8601 date-time taken as UTC.
    ///
    /// # Errors
    ///
    /// [`TimestampError`] naming the input when it is neither.
    pub fn parse(input: &str) -> Result<Self, TimestampError> {
        if let Ok(dt) = OffsetDateTime::parse(input, &Rfc3339) {
            return Ok(Self::from_datetime(dt));
        }
        let naive = format_description!(
            version = 2,
            "[year]-[month]-[day][first [T][ ]][hour]:[minute]:[second][optional [.[subsecond]]]"
        );
        PrimitiveDateTime::parse(input, naive)
            .map(|p| Timestamp(p.assume_utc()))
            .map_err(|_| TimestampError {
                input: input.to_owned(),
            })
    }
}

impl Timestamp {
    /// The RFC 3339 text (`YYYY-MM-DDTHH:MM:SS.ffffffZ`, nine digits when the nanoseconds
    /// are not whole microseconds) written into `buf` by hand: `write!` with its format
    /// arguments cost several times more, once per encoded envelope. `None` for a year outside
    /// 0..=9999, which [`fmt::Display`] writes the slow way.
    fn write_into<'b>(&self, buf: &'b mut [u8; 30]) -> Option<&'b str> {
        fn digits(out: &mut [u8], mut v: u32) {
            for slot in out.iter_mut().rev() {
                *slot = b'0' + (v % 10) as u8;
                v /= 10;
            }
        }
        let d = self.0;
        let year = u32::try_from(d.year()).ok().filter(|y| *y <= 9999)?;
        digits(&mut buf[0..4], year);
        buf[4] = b'-';
        digits(&mut buf[5..7], u32::from(u8::from(d.month())));
        buf[7] = b'-';
        digits(&mut buf[8..10], u32::from(d.day()));
        buf[10] = b'T';
        digits(&mut buf[11..13], u32::from(d.hour()));
        buf[13] = b':';
        digits(&mut buf[14..16], u32::from(d.minute()));
        buf[16] = b':';
        digits(&mut buf[17..19], u32::from(d.second()));
        buf[19] = b'.';
        let nanos = d.nanosecond();
        let end = if nanos.is_multiple_of(1_000) {
            digits(&mut buf[20..26], nanos / 1_000);
            26
        } else {
            digits(&mut buf[20..29], nanos);
            29
        };
        buf[end] = b'Z';
        std::str::from_utf8(&buf[..=end]).ok()
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(text) = self.write_into(&mut [0; 30]) {
            return f.write_str(text);
        }
        let d = self.0;
        write!(
            f,
            "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}",
            d.year(),
            u8::from(d.month()),
            d.day(),
            d.hour(),
            d.minute(),
            d.second()
        )?;
        let nanos = d.nanosecond();
        if nanos.is_multiple_of(1_000) {
            write!(f, ".{:06}Z", nanos / 1_000)
        } else {
            write!(f, ".{nanos:09}Z")
        }
    }
}

impl fmt::Debug for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Timestamp({self})")
    }
}

impl Serialize for Timestamp {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self.write_into(&mut [0; 30]) {
            Some(text) => s.serialize_str(text),
            None => s.collect_str(self),
        }
    }
}

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        Timestamp::parse(&s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offset_less_python_isoformat_is_read_as_utc_and_written_with_z() {
        let t = Timestamp::parse("2026-11-23T10:11:12.123456").expect("parse");
        assert_eq!(t.to_string(), "2026-11-23T10:11:12.123456Z");
        let t = Timestamp::parse("2026-11-23T10:11:12").expect("parse");
        assert_eq!(t.to_string(), "2026-11-23T10:11:12.000000Z");
    }

    #[test]
    fn offsets_are_converted_to_utc_and_nanoseconds_survive() {
        let t = Timestamp::parse("2026-11-23T12:11:12.123456789+02:00").expect("parse");
        assert_eq!(t.to_string(), "2026-11-23T10:11:12.123456789Z");
        assert_eq!(Timestamp::parse(&t.to_string()).expect("reparse"), t);
    }

    #[test]
    fn the_hand_written_text_matches_rfc3339_at_the_edges() {
        for (given, written) in [
            ("0001-01-01T00:00:00Z", "0001-01-01T00:00:00.000000Z"),
            (
                "9999-12-31T23:59:59.999999999Z",
                "9999-12-31T23:59:59.999999999Z",
            ),
            ("2026-02-03T04:05:06.000007Z", "2026-02-03T04:05:06.000007Z"),
            ("2026-02-03T04:05:06.1Z", "2026-02-03T04:05:06.100000Z"),
        ] {
            let t = Timestamp::parse(given).expect("parse");
            assert_eq!(t.to_string(), written);
            assert_eq!(
                serde_json::to_string(&t).expect("serialize"),
                format!("\"{written}\"")
            );
            assert_eq!(Timestamp::parse(written).expect("reparse"), t);
        }
    }

    #[test]
    fn garbage_is_a_typed_error() {
        assert!(Timestamp::parse("yesterday").is_err());
        assert!(Timestamp::parse("").is_err());
    }
}
