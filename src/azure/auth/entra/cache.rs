//! A token cache in front of any [`TokenCredential`]: one token per scope, refreshed before
//! it expires (5 minutes before, or at half its lifetime for short-lived tokens), with one
//! refresh per scope at a time that every concurrent caller shares.
//!
//! While a token is still valid, callers never wait for a refresh: the first caller past
//! the refresh instant fetches, the others keep using the current token. A refresh that
//! fails while the token is still valid is logged once and retried at most every
//! [`RETRY_AFTER_FAILURE`]; once the token has expired, callers wait for the refresh, and
//! its failure is their error.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex};

use super::{AccessToken, TokenCredential};
use crate::error::Error;
use crate::wire::clock::{Clock, SystemClock};

/// Refresh this long before expiry (unless the token lives less than twice as long).
pub const REFRESH_MARGIN: chrono::Duration = chrono::Duration::minutes(5);

/// After a failed refresh of a still-valid token, the next attempt waits this long.
pub const RETRY_AFTER_FAILURE: chrono::Duration = chrono::Duration::seconds(30);

/// Caches the tokens of an inner credential (see the module docs). Share it (`Arc`) between
/// the signers that use one identity. `Debug` shows the inner credential and how many scopes
/// are cached, never a token.
pub struct CachedCredential {
    inner: Arc<dyn TokenCredential>,
    clock: Arc<dyn Clock>,
    slots: Mutex<HashMap<String, Arc<Slot>>>,
}

/// One scope: the cached token, and the lock held by the one refresh in flight.
#[derive(Default)]
struct Slot {
    state: Mutex<SlotState>,
    refresh: tokio::sync::Mutex<()>,
}

#[derive(Default)]
struct SlotState {
    token: Option<AccessToken>,
    refresh_at: Option<DateTime<Utc>>,
    /// No refresh attempt before this instant (set after a failed refresh).
    not_before: Option<DateTime<Utc>>,
    /// A failed refresh was logged since the last success.
    warned: bool,
}

/// What a caller may do with the cached state at some instant.
enum Use {
    /// A token not yet due for refresh (or due, but in the back-off after a failure).
    Fresh(AccessToken),
    /// A valid token due for refresh.
    Due(AccessToken),
    /// No valid token.
    Missing,
}

impl SlotState {
    fn usable(&self, now: DateTime<Utc>) -> Use {
        let Some(token) = &self.token else {
            return Use::Missing;
        };
        if token.expires_on <= now {
            return Use::Missing;
        }
        let due = self.refresh_at.is_none_or(|at| at <= now);
        let waiting = self.not_before.is_some_and(|at| now < at);
        if due && !waiting {
            Use::Due(token.clone())
        } else {
            Use::Fresh(token.clone())
        }
    }
}

impl fmt::Debug for CachedCredential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let scopes = self.slots.lock().map(|s| s.len()).unwrap_or_default();
        f.debug_struct("CachedCredential")
            .field("inner", &self.inner)
            .field("cached_scopes", &scopes)
            .finish()
    }
}

impl CachedCredential {
    /// Caches `inner`'s tokens, on the system clock.
    pub fn new(inner: Arc<dyn TokenCredential>) -> Self {
        CachedCredential {
            inner,
            clock: Arc::new(SystemClock),
            slots: Mutex::new(HashMap::new()),
        }
    }

    /// Replaces the clock that decides when a token is due (tests move it by hand).
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// The instant a token fetched at `now` is refreshed: 5 minutes before it expires, or
    /// half-way through its life when that is sooner.
    pub fn refresh_instant(token: &AccessToken, now: DateTime<Utc>) -> DateTime<Utc> {
        let half_life = (token.expires_on - now) / 2;
        token.expires_on - REFRESH_MARGIN.min(half_life)
    }

    fn slot(&self, scope: &str) -> Arc<Slot> {
        let mut slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
        slots.entry(scope.to_string()).or_default().clone()
    }

    /// Fetches a new token (the caller holds the slot's refresh lock) and stores it; on
    /// failure falls back to a still-valid old token.
    async fn refresh(&self, slot: &Slot, scope: &str) -> Result<AccessToken, Error> {
        let outcome = self.inner.token(scope).await;
        let now = self.clock.now();
        let mut state = slot.state.lock().unwrap_or_else(|p| p.into_inner());
        match outcome {
            Ok(token) => {
                state.refresh_at = Some(Self::refresh_instant(&token, now));
                state.token = Some(token.clone());
                state.not_before = None;
                state.warned = false;
                Ok(token)
            }
            Err(err) => {
                let old = state.token.clone().filter(|t| now < t.expires_on);
                let Some(old) = old else {
                    return Err(err);
                };
                state.not_before = Some(now + RETRY_AFTER_FAILURE);
                if !state.warned {
                    state.warned = true;
                    tracing::warn!(
                        scope,
                        expires_on = %old.expires_on.to_rfc3339(),
                        error = %err,
                        "refreshing the Entra ID token failed; using the current one until it \
                         expires and retrying"
                    );
                }
                Ok(old)
            }
        }
    }
}

impl CachedCredential {
    /// What the cache holds for `slot` right now.
    fn usable(&self, slot: &Slot) -> Use {
        let state = slot.state.lock().unwrap_or_else(|p| p.into_inner());
        state.usable(self.clock.now())
    }

    /// Refreshes `slot` while holding its refresh lock, unless a refresh that finished
    /// while this caller waited for the lock left a fresh token.
    async fn refresh_unless_fresh(&self, slot: &Slot, scope: &str) -> Result<AccessToken, Error> {
        match self.usable(slot) {
            Use::Fresh(token) => Ok(token),
            Use::Due(_) | Use::Missing => self.refresh(slot, scope).await,
        }
    }
}

#[async_trait]
impl TokenCredential for CachedCredential {
    async fn token(&self, scope: &str) -> Result<AccessToken, Error> {
        let slot = self.slot(scope);
        match self.usable(&slot) {
            Use::Fresh(token) => Ok(token),
            Use::Due(token) => {
                // One caller refreshes; the others keep using the valid token.
                let Ok(_refreshing) = slot.refresh.try_lock() else {
                    return Ok(token);
                };
                self.refresh_unless_fresh(&slot, scope).await
            }
            Use::Missing => {
                let _refreshing = slot.refresh.lock().await;
                self.refresh_unless_fresh(&slot, scope).await
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::azure::auth::Secret;
    use crate::wire::clock::FixedClock;
    use chrono::TimeZone;
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn start() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, 29, 10, 0, 0)
            .single()
            .unwrap_or_default()
    }

    /// Hands out `tok-N` valid for `lifetime` from its clock; fails while `failing` is set.
    #[derive(Debug)]
    struct Counting {
        clock: Arc<FixedClock>,
        lifetime: chrono::Duration,
        calls: AtomicUsize,
        failing: std::sync::atomic::AtomicBool,
    }

    #[async_trait]
    impl TokenCredential for Counting {
        async fn token(&self, _scope: &str) -> Result<AccessToken, Error> {
            let n = self.calls.fetch_add(1, Ordering::SeqCst) + 1;
            tokio::task::yield_now().await;
            if self.failing.load(Ordering::SeqCst) {
                return Err(Error::unexpected("the endpoint is down"));
            }
            Ok(AccessToken {
                token: Secret::new(format!("tok-{n}")),
                expires_on: self.clock.now() + self.lifetime,
            })
        }
    }

    fn setup(lifetime: chrono::Duration) -> (Arc<FixedClock>, Arc<Counting>, CachedCredential) {
        let clock = Arc::new(FixedClock::new(start()));
        let inner = Arc::new(Counting {
            clock: clock.clone(),
            lifetime,
            calls: AtomicUsize::new(0),
            failing: Default::default(),
        });
        let cached = CachedCredential::new(inner.clone()).with_clock(clock.clone());
        (clock, inner, cached)
    }

    #[test]
    fn refresh_is_five_minutes_early_or_at_half_life() {
        let now = start();
        let token = |mins| AccessToken {
            token: Secret::new("t"),
            expires_on: now + chrono::Duration::minutes(mins),
        };
        assert_eq!(
            CachedCredential::refresh_instant(&token(60), now),
            now + chrono::Duration::minutes(55)
        );
        assert_eq!(
            CachedCredential::refresh_instant(&token(4), now),
            now + chrono::Duration::minutes(2)
        );
    }

    #[tokio::test]
    async fn tokens_are_cached_per_scope_and_refreshed_when_due() {
        let (clock, inner, cached) = setup(chrono::Duration::minutes(60));
        assert_eq!(cached.token("a").await.unwrap().token.expose(), "tok-1");
        assert_eq!(cached.token("a").await.unwrap().token.expose(), "tok-1");
        assert_eq!(cached.token("b").await.unwrap().token.expose(), "tok-2");
        clock.advance(chrono::Duration::minutes(54));
        assert_eq!(cached.token("a").await.unwrap().token.expose(), "tok-1");
        clock.advance(chrono::Duration::minutes(2));
        assert_eq!(cached.token("a").await.unwrap().token.expose(), "tok-3");
        assert_eq!(inner.calls.load(Ordering::SeqCst), 3);
        assert!(!format!("{cached:?}").contains("tok-"));
    }

    #[tokio::test]
    async fn a_failed_refresh_keeps_the_valid_token_then_fails_once_expired() {
        let (clock, inner, cached) = setup(chrono::Duration::minutes(60));
        cached.token("a").await.unwrap();
        inner.failing.store(true, Ordering::SeqCst);
        clock.advance(chrono::Duration::minutes(56));
        assert_eq!(cached.token("a").await.unwrap().token.expose(), "tok-1");
        // In the back-off: no new attempt.
        assert_eq!(cached.token("a").await.unwrap().token.expose(), "tok-1");
        assert_eq!(inner.calls.load(Ordering::SeqCst), 2);
        clock.advance(chrono::Duration::seconds(31));
        cached.token("a").await.unwrap();
        assert_eq!(inner.calls.load(Ordering::SeqCst), 3);
        clock.advance(chrono::Duration::minutes(5));
        let err = cached.token("a").await.unwrap_err();
        assert!(err.to_string().contains("the endpoint is down"), "{err}");
        inner.failing.store(false, Ordering::SeqCst);
        assert_eq!(cached.token("a").await.unwrap().token.expose(), "tok-5");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_callers_share_one_fetch() {
        let (_clock, inner, cached) = setup(chrono::Duration::minutes(60));
        let cached = Arc::new(cached);
        let tasks: Vec<_> = (0..32)
            .map(|_| {
                let cached = cached.clone();
                tokio::spawn(async move { cached.token("a").await })
            })
            .collect();
        for task in tasks {
            assert_eq!(task.await.unwrap().unwrap().token.expose(), "tok-1");
        }
        assert_eq!(inner.calls.load(Ordering::SeqCst), 1);
    }
}
