//! Injectable wall clock for signing: requests carry the time they were signed at
//! (`x-ms-date`), so tests pin it with [`FixedClock`] or [`SteppingClock`] to get
//! byte-identical signatures.

use chrono::{DateTime, Utc};
use std::sync::Mutex;

/// Where the pipeline gets "now" from when it signs a request.
pub trait Clock: Send + Sync + std::fmt::Debug {
    /// The current time.
    fn now(&self) -> DateTime<Utc>;
}

/// The machine's clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }
}

/// A clock that always answers the same instant until told otherwise (deterministic tests).
#[derive(Debug)]
pub struct FixedClock(Mutex<DateTime<Utc>>);

impl FixedClock {
    /// A clock stopped at `at`.
    pub fn new(at: DateTime<Utc>) -> Self {
        FixedClock(Mutex::new(at))
    }

    /// Moves the clock to `at`.
    pub fn set(&self, at: DateTime<Utc>) {
        *lock(&self.0) = at;
    }

    /// Moves the clock forward by `by` (a move past the end of time leaves it where it is).
    pub fn advance(&self, by: chrono::Duration) {
        let mut now = lock(&self.0);
        if let Some(later) = now.checked_add_signed(by) {
            *now = later;
        }
    }
}

impl Clock for FixedClock {
    fn now(&self) -> DateTime<Utc> {
        *lock(&self.0)
    }
}

/// A clock that moves forward by a fixed step every time it is read: the first read answers
/// `start`, the next `start + step`, and so on. Shows that each attempt is signed afresh.
#[derive(Debug)]
pub struct SteppingClock {
    next: Mutex<DateTime<Utc>>,
    step: chrono::Duration,
}

impl SteppingClock {
    /// A clock starting at `start` that advances `step` per read.
    pub fn new(start: DateTime<Utc>, step: chrono::Duration) -> Self {
        SteppingClock {
            next: Mutex::new(start),
            step,
        }
    }
}

impl Clock for SteppingClock {
    fn now(&self) -> DateTime<Utc> {
        let mut next = lock(&self.next);
        let now = *next;
        if let Some(later) = now.checked_add_signed(self.step) {
            *next = later;
        }
        now
    }
}

/// Locks a mutex, recovering the value if a panicking thread poisoned it (a time value
/// cannot be left half-written).
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Formats a time as an RFC 1123 HTTP date (`Thu, 27 Apr 2017 00:51:12 GMT`), as used in
/// `x-ms-date`.
pub fn http_date(t: DateTime<Utc>) -> String {
    t.format("%a, %d %b %Y %H:%M:%S GMT").to_string()
}

/// Parses an RFC 1123 HTTP date (`Thu, 27 Apr 2017 00:51:12 GMT`).
pub fn parse_http_date(text: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc2822(text.trim())
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn http_date_round_trips_rfc1123() {
        let t = Utc.with_ymd_and_hms(2017, 4, 27, 0, 51, 12).single();
        let t = t.unwrap_or_default();
        assert_eq!(http_date(t), "Thu, 27 Apr 2017 00:51:12 GMT");
        assert_eq!(parse_http_date("Thu, 27 Apr 2017 00:51:12 GMT"), Some(t));
        assert_eq!(parse_http_date("not a date"), None);
    }

    #[test]
    fn stepping_clock_advances_per_read_and_fixed_clock_does_not() {
        let start = Utc
            .with_ymd_and_hms(2020, 1, 1, 0, 0, 0)
            .single()
            .unwrap_or_default();
        let stepping = SteppingClock::new(start, chrono::Duration::seconds(5));
        assert_eq!(stepping.now(), start);
        assert_eq!(stepping.now(), start + chrono::Duration::seconds(5));
        let fixed = FixedClock::new(start);
        assert_eq!(fixed.now(), fixed.now());
        fixed.advance(chrono::Duration::seconds(1));
        assert_eq!(fixed.now(), start + chrono::Duration::seconds(1));
    }

    #[test]
    fn clocks_at_the_end_of_time_stay_there_instead_of_panicking() {
        let end = DateTime::<Utc>::MAX_UTC;
        let fixed = FixedClock::new(end);
        fixed.advance(chrono::Duration::days(1));
        assert_eq!(fixed.now(), end);
        let stepping = SteppingClock::new(end, chrono::Duration::days(1));
        assert_eq!(stepping.now(), end);
        assert_eq!(stepping.now(), end);
    }
}
