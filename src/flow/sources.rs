//! Where the engine gets the values it makes up: ids (run ids, batch ids), the current time
//! (timestamps written into run documents and status items, due times) and the random
//! spread of pauses (idle-poll jitter). [`Sources::system`] is the default (random UUIDs,
//! the machine's clock, random jitter); [`Sources::deterministic`] makes every value a
//! function of a seed and a start time, so a worker session recorded with it can be
//! replayed request for request (see [`crate::wire::replay`]).
//!
//! ```
//! use flowcraft_azure::flow::sources::Sources;
//! use chrono::TimeZone;
//! let at = chrono::Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap();
//! let (a, b) = (Sources::deterministic(7, at), Sources::deterministic(7, at));
//! assert_eq!(a.new_id(), b.new_id());
//! assert_eq!(a.now(), at);
//! ```

use chrono::{DateTime, Utc};
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub use crate::wire::clock::{Clock, FixedClock, SteppingClock, SystemClock};

/// Makes up ids (UUID-shaped text).
pub trait IdSource: Send + Sync + fmt::Debug {
    /// A new id.
    fn new_id(&self) -> String;
}

/// Random version-4 UUIDs (the default).
#[derive(Debug, Clone, Copy, Default)]
pub struct RandomIds;

impl IdSource for RandomIds {
    fn new_id(&self) -> String {
        uuid::Uuid::new_v4().to_string()
    }
}

/// Version-4-shaped UUIDs from a seeded generator: the same seed gives the same ids in the
/// same order.
#[derive(Debug)]
pub struct SeededIds(Mutex<fastrand::Rng>);

impl SeededIds {
    /// Ids drawn from `seed`.
    pub fn new(seed: u64) -> Self {
        SeededIds(Mutex::new(fastrand::Rng::with_seed(seed)))
    }
}

impl IdSource for SeededIds {
    fn new_id(&self) -> String {
        let mut rng = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let mut bytes = [0u8; 16];
        rng.fill(&mut bytes);
        uuid::Builder::from_random_bytes(bytes)
            .into_uuid()
            .to_string()
    }
}

/// The engine's id, clock and jitter sources. Cheap to clone (shared).
#[derive(Clone)]
pub struct Sources {
    ids: Arc<dyn IdSource>,
    clock: Arc<dyn Clock>,
    /// `None`: the thread's random generator.
    jitter: Option<Arc<Mutex<fastrand::Rng>>>,
}

impl fmt::Debug for Sources {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sources")
            .field("ids", &self.ids)
            .field("clock", &self.clock)
            .field("seeded_jitter", &self.jitter.is_some())
            .finish()
    }
}

impl Default for Sources {
    fn default() -> Self {
        Sources::system()
    }
}

impl Sources {
    /// Random UUIDs, the machine's clock, random jitter.
    pub fn system() -> Self {
        Sources {
            ids: Arc::new(RandomIds),
            clock: Arc::new(SystemClock),
            jitter: None,
        }
    }

    /// Ids and jitter drawn from `seed`, and a clock stopped at `at`: every value the engine
    /// makes up is the same on every run (for recording sessions that replay exactly).
    pub fn deterministic(seed: u64, at: DateTime<Utc>) -> Self {
        Sources::system()
            .with_ids(Arc::new(SeededIds::new(seed)))
            .with_clock(Arc::new(FixedClock::new(at)))
            .with_jitter_seed(seed.wrapping_add(1))
    }

    /// Uses `ids` for new ids.
    pub fn with_ids(mut self, ids: Arc<dyn IdSource>) -> Self {
        self.ids = ids;
        self
    }

    /// Uses `clock` for the current time.
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// Draws jitter from a generator seeded with `seed`.
    pub fn with_jitter_seed(mut self, seed: u64) -> Self {
        self.jitter = Some(Arc::new(Mutex::new(fastrand::Rng::with_seed(seed))));
        self
    }

    /// A new id.
    pub fn new_id(&self) -> String {
        self.ids.new_id()
    }

    /// The current time.
    pub fn now(&self) -> DateTime<Utc> {
        self.clock.now()
    }

    /// The current time in epoch seconds.
    pub fn now_epoch(&self) -> i64 {
        self.now().timestamp()
    }

    /// A pause between 50 % and 100 % of `base` (spreads workers apart).
    pub fn jitter(&self, base: Duration) -> Duration {
        let ms = u64::try_from(base.as_millis()).unwrap_or(u64::MAX).max(2);
        let range = ms / 2..=ms;
        Duration::from_millis(match &self.jitter {
            Some(rng) => rng.lock().unwrap_or_else(|p| p.into_inner()).u64(range),
            None => fastrand::u64(range),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn start() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0)
            .single()
            .unwrap_or_default()
    }

    #[test]
    fn deterministic_sources_repeat_ids_time_and_jitter_and_system_ones_do_not_repeat_ids() {
        let (a, b) = (
            Sources::deterministic(3, start()),
            Sources::deterministic(3, start()),
        );
        let ids = |s: &Sources| (0..4).map(|_| s.new_id()).collect::<Vec<_>>();
        let first = ids(&a);
        assert_eq!(first, ids(&b));
        assert!(first.iter().all(|id| uuid::Uuid::parse_str(id).is_ok()));
        assert_ne!(first[0], first[1]);
        assert_ne!(first, ids(&Sources::deterministic(4, start())));
        let base = Duration::from_millis(1000);
        let pauses = |s: &Sources| (0..8).map(|_| s.jitter(base)).collect::<Vec<_>>();
        assert_eq!(pauses(&a), pauses(&b));
        assert!(pauses(&a).iter().all(|p| *p >= base / 2 && *p <= base));
        assert_eq!((a.now(), a.now_epoch()), (start(), start().timestamp()));
        let system = Sources::system();
        assert_ne!(system.new_id(), system.new_id());
    }

    #[test]
    fn a_stepping_clock_can_replace_the_fixed_one() {
        let s = Sources::deterministic(1, start()).with_clock(Arc::new(SteppingClock::new(
            start(),
            chrono::Duration::seconds(1),
        )));
        assert_eq!(s.now(), start());
        assert_eq!(s.now_epoch(), start().timestamp() + 1);
        assert!(Sources::system().jitter(Duration::ZERO) <= Duration::from_millis(2));
    }
}
