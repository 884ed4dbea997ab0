//! Time as an input: everything that needs "now" takes a [`Clock`], so tests
//! can drive expiry, schedules and journal times with a fake clock.
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use time::OffsetDateTime;

/// A source of the current time.
#[derive(Clone)]
pub struct Clock(Arc<ClockKind>);

enum ClockKind {
    System,
    /// Microseconds since the Unix epoch, moved only by the test.
    Fixed(AtomicI64),
}

impl Clock {
    /// The real wall clock.
    pub fn system() -> Self {
        Clock(Arc::new(ClockKind::System))
    }

    /// A clock that stands still at `start` until [`Clock::advance`] moves it.
    pub fn fixed(start: OffsetDateTime) -> Self {
        let micros = (start.unix_timestamp_nanos() / 1000) as i64;
        Clock(Arc::new(ClockKind::Fixed(AtomicI64::new(micros))))
    }

    /// Moves a fixed clock forward; a no-op on the system clock.
    pub fn advance(&self, by: std::time::Duration) {
        if let ClockKind::Fixed(micros) = &*self.0 {
            micros.fetch_add(by.as_micros() as i64, Ordering::SeqCst);
        }
    }

    /// Moves a fixed clock backward, as a wall clock stepping back would; a
    /// no-op on the system clock.
    pub fn rewind(&self, by: std::time::Duration) {
        if let ClockKind::Fixed(micros) = &*self.0 {
            micros.fetch_sub(by.as_micros() as i64, Ordering::SeqCst);
        }
    }

    /// Microseconds since the Unix epoch.
    pub fn now_micros(&self) -> i64 {
        match &*self.0 {
            ClockKind::System => (OffsetDateTime::now_utc().unix_timestamp_nanos() / 1000) as i64,
            ClockKind::Fixed(micros) => micros.load(Ordering::SeqCst),
        }
    }

    /// The current time as a date-time in UTC.
    pub fn now(&self) -> OffsetDateTime {
        micros_to_datetime(self.now_micros())
    }
}

/// Converts microseconds since the epoch to a UTC date-time (saturating at the epoch).
pub fn micros_to_datetime(micros: i64) -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp_nanos(micros as i128 * 1000).unwrap_or(OffsetDateTime::UNIX_EPOCH)
}

/// RFC 3339 rendering used in API bodies and logs.
pub fn rfc3339(t: OffsetDateTime) -> String {
    t.format(&time::format_description::well_known::Rfc3339).unwrap_or_default()
}
