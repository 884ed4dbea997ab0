//! Instants in time as docket stores and compares them: UTC microseconds since
//! the Unix epoch. Clio and API callers write RFC 3339 with any offset; every
//! such string is parsed once, here, by [`Timestamp::parse`] (fallible, never a
//! panic, whatever the year or offset), and rendered back as RFC 3339 UTC.
//! Two spellings of one instant (`…T10:00:00-05:00`, `…T15:00:00Z`) are equal.
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// A UTC instant, microseconds since the Unix epoch, between the years 1 and 9999.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(i64);

/// Why a string is not an instant; the message names the expected form.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TimestampError {
    #[error("is not an RFC 3339 date-time (expected e.g. 2026-01-31T09:30:00Z or 2026-01-31T09:30:00-05:00)")]
    Format,
    #[error("is outside the supported range (years 0001 to 9999 in UTC)")]
    Range,
}

impl Timestamp {
    /// The earliest and latest instants docket represents.
    pub const MIN: Timestamp = Timestamp(-62_135_596_800_000_000); // 0001-01-01T00:00:00Z
    pub const MAX: Timestamp = Timestamp(253_402_300_799_999_999); // 9999-12-31T23:59:59.999999Z

    /// Parses an RFC 3339 date-time with any offset into a UTC instant.
    pub fn parse(text: &str) -> Result<Timestamp, TimestampError> {
        let t = OffsetDateTime::parse(text.trim(), &Rfc3339).map_err(|_| TimestampError::Format)?;
        Self::from_datetime(t)
    }

    /// The instant a date-time names, whatever its offset, if within range.
    pub fn from_datetime(t: OffsetDateTime) -> Result<Timestamp, TimestampError> {
        // Nanoseconds as i128 never overflow, whatever the offset; the range
        // check then keeps every instant renderable in UTC.
        Self::from_micros_checked(t.unix_timestamp_nanos().div_euclid(1000))
    }

    /// An instant from microseconds since the epoch, if within range.
    pub fn from_micros_checked(micros: impl TryInto<i64>) -> Result<Timestamp, TimestampError> {
        let micros: i64 = micros.try_into().map_err(|_| TimestampError::Range)?;
        if (Self::MIN.0..=Self::MAX.0).contains(&micros) { Ok(Timestamp(micros)) } else { Err(TimestampError::Range) }
    }

    /// An instant from microseconds since the epoch, clamped into range.
    pub fn from_micros(micros: i64) -> Timestamp {
        Timestamp(micros.clamp(Self::MIN.0, Self::MAX.0))
    }

    /// Microseconds since the Unix epoch.
    pub fn micros(self) -> i64 {
        self.0
    }

    /// This instant moved by `micros` (negative: earlier), clamped into range.
    pub fn plus_micros(self, micros: i64) -> Timestamp {
        Self::from_micros(self.0.saturating_add(micros))
    }

    /// As a UTC date-time.
    pub fn to_datetime(self) -> OffsetDateTime {
        // In range by construction, so the conversion cannot fail.
        OffsetDateTime::from_unix_timestamp_nanos(i128::from(self.0) * 1000).unwrap_or(OffsetDateTime::UNIX_EPOCH)
    }

    /// RFC 3339 in UTC (`Z`), with fractional seconds only when present.
    pub fn to_rfc3339(self) -> String {
        self.to_datetime().format(&Rfc3339).unwrap_or_default()
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_rfc3339())
    }
}

impl std::str::FromStr for Timestamp {
    type Err = TimestampError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Timestamp::parse(s)
    }
}

impl Serialize for Timestamp {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_rfc3339())
    }
}

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        Timestamp::parse(&text).map_err(|e| serde::de::Error::custom(format!("`{text}` {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_name_the_same_instant() {
        let a = Timestamp::parse("2026-03-08T10:00:00-05:00").unwrap();
        let b = Timestamp::parse("2026-03-08T15:00:00Z").unwrap();
        assert_eq!(a, b);
        assert_eq!(a.to_rfc3339(), "2026-03-08T15:00:00Z");
        assert!(Timestamp::parse("2026-03-08T15:00:01+00:00").unwrap() > a);
    }

    #[test]
    fn extremes_are_errors_not_panics() {
        for bad in ["9999-12-31T23:59:59-23:59", "0000-01-01T00:00:00+23:59"] {
            assert_eq!(Timestamp::parse(bad), Err(TimestampError::Range), "{bad}");
        }
        for bad in ["", "x", "2026-13-01T00:00:00Z", "2026-01-01", "2026-01-01T00:00:00", "\u{0}"] {
            assert_eq!(Timestamp::parse(bad), Err(TimestampError::Format), "{bad:?}");
        }
        assert_eq!(Timestamp::parse("9999-12-31T23:59:59.999999Z").unwrap(), Timestamp::MAX);
        assert_eq!(Timestamp::parse("0001-01-01T00:00:00Z").unwrap(), Timestamp::MIN);
        assert_eq!(Timestamp::MAX.plus_micros(i64::MAX), Timestamp::MAX);
        assert_eq!(Timestamp::MIN.plus_micros(i64::MIN), Timestamp::MIN);
        assert!(Timestamp::from_micros_checked(i128::MAX).is_err());
    }

    #[test]
    fn serde_round_trip() {
        let t = Timestamp::parse("2026-11-30T13:08:42.5+01:00").unwrap();
        let json = serde_json::to_string(&t).unwrap();
        assert_eq!(json, "\"2026-11-30T12:08:42.5Z\"");
        assert_eq!(serde_json::from_str::<Timestamp>(&json).unwrap(), t);
        assert!(serde_json::from_str::<Timestamp>("\"yesterday\"").is_err());
    }
}
