//! Retry policy as data: which answers are worth another attempt, how long to wait before
//! it (exponential backoff with jitter, capped per wait and in total), and the server's own
//! `x-ms-retry-after-ms` / `retry-after-ms` / `Retry-After` hints.
//!
//! Which answers are retried is a table ([`RETRY_TABLE`]) over the status and, for Cosmos
//! DB, the `x-ms-substatus`; each row says which operations may repeat:
//! - [`Idempotency::Idempotent`] operations (reads, deletes, puts of a known state) are
//!   retried on every row (408, 410/1000/1002/1007/1008, 429, 449, 404/1002, 500, 502, 503,
//!   504), dropped connections and timeouts;
//! - [`Idempotency::NonIdempotent`] operations (put message, create document) only where the
//!   service guarantees nothing happened: 429, 449, 404/1002, the 410 sub-statuses of a
//!   partition split or move, a 503 `ServerBusy`, or a connection that failed before the
//!   request was sent (the transport marks those with [`NOT_SENT_CODE`]).
//!
//! The policy never sleeps itself and never reads the clock: the [`crate::wire::pipeline`]
//! passes it "now" and a seeded random source, so decisions are deterministic in tests.

use chrono::{DateTime, Utc};
use std::time::Duration;

use crate::error::Error;
use crate::wire::clock::parse_http_date;
use crate::wire::transport::HttpResponse;

/// Error code a transport puts on [`Error::Transport`] when the connection failed before any
/// byte of the request was sent (refused, DNS failure, TLS handshake): safe to retry even for
/// non-idempotent operations.
pub const NOT_SENT_CODE: &str = "ConnectFailed";

/// Who may repeat a request after an answer listed in [`RETRY_TABLE`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetryFor {
    /// Only idempotent operations: the request may have taken effect.
    Idempotent,
    /// Every operation: the service did not apply the request.
    All,
    /// Idempotent operations; others only when `x-ms-error-code` is `ServerBusy` (Storage's
    /// promise that the request was refused unprocessed).
    IdempotentOrServerBusy,
}

/// One row of [`RETRY_TABLE`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryRule {
    /// The HTTP status.
    pub status: u16,
    /// The Cosmos `x-ms-substatus` this row is about; `None` matches any.
    pub substatus: Option<u32>,
    /// Who may retry.
    pub retry_for: RetryFor,
    /// Why the answer is transient.
    pub reason: &'static str,
}

/// Every answer worth another attempt. Rows naming a sub-status come before the row for
/// their status; an answer not listed is final (a 404 without sub-status 1002 is a missing
/// item; 400/1004, a query that needs a query plan, never succeeds by retrying).
pub const RETRY_TABLE: &[RetryRule] = &[
    RetryRule {
        status: 404,
        substatus: Some(1002),
        retry_for: RetryFor::All,
        reason: "Cosmos read session not available: the replica has not caught up with the session token yet",
    },
    RetryRule {
        status: 408,
        substatus: None,
        retry_for: RetryFor::Idempotent,
        reason: "the service timed out the request; it may have been applied",
    },
    RetryRule {
        status: 410,
        substatus: Some(1000),
        retry_for: RetryFor::All,
        reason: "Cosmos gone / name cache stale: the container moved; nothing was applied",
    },
    RetryRule {
        status: 410,
        substatus: Some(1002),
        retry_for: RetryFor::All,
        reason: "Cosmos partition key range gone (split); nothing was applied",
    },
    RetryRule {
        status: 410,
        substatus: Some(1007),
        retry_for: RetryFor::All,
        reason: "Cosmos completing a partition split; nothing was applied",
    },
    RetryRule {
        status: 410,
        substatus: Some(1008),
        retry_for: RetryFor::All,
        reason: "Cosmos completing a partition migration; nothing was applied",
    },
    RetryRule {
        status: 429,
        substatus: None,
        retry_for: RetryFor::All,
        reason: "throttled (request rate or RUs): the request was not processed",
    },
    RetryRule {
        status: 449,
        substatus: None,
        retry_for: RetryFor::All,
        reason: "Cosmos retry-with: a conflicting concurrent update; nothing was applied",
    },
    RetryRule {
        status: 500,
        substatus: None,
        retry_for: RetryFor::Idempotent,
        reason: "internal server error; the request may have been applied",
    },
    RetryRule {
        status: 502,
        substatus: None,
        retry_for: RetryFor::Idempotent,
        reason: "bad gateway; the request may have been applied",
    },
    RetryRule {
        status: 503,
        substatus: None,
        retry_for: RetryFor::IdempotentOrServerBusy,
        reason: "service unavailable (or Storage ServerBusy)",
    },
    RetryRule {
        status: 504,
        substatus: None,
        retry_for: RetryFor::Idempotent,
        reason: "gateway timeout; the request may have been applied",
    },
];

/// The [`RETRY_TABLE`] row for an answer, if it is transient.
pub fn retry_rule(status: u16, substatus: Option<u32>) -> Option<&'static RetryRule> {
    RETRY_TABLE.iter().find(|rule| {
        rule.status == status && (rule.substatus.is_none() || rule.substatus == substatus)
    })
}

/// The `x-ms-substatus` of a response (Cosmos), if it sent a number.
pub fn substatus_of(resp: &HttpResponse) -> Option<u32> {
    resp.header("x-ms-substatus")?.trim().parse().ok()
}

/// Whether sending an operation twice has the same effect as sending it once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Idempotency {
    /// Safe to repeat (GET, DELETE, PUT/PATCH of a given state, conditional writes).
    Idempotent,
    /// Repeating may duplicate the effect (put message, create item without a fixed id).
    NonIdempotent,
}

/// How many attempts, how long to wait between them and how long one attempt may take.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts in total, including the first (1 = no retries).
    pub max_attempts: u32,
    /// The backoff before the first retry; doubled for each further retry.
    pub base_delay: Duration,
    /// No single wait is longer than this. A server `Retry-After` longer than this ends the
    /// retries and the response is returned to the caller (who sees the hint in the error).
    pub max_delay: Duration,
    /// The waits of one request add up to at most this.
    pub max_total: Duration,
    /// How long one attempt may take before it counts as a timeout.
    pub request_timeout: Duration,
}

impl Default for RetryPolicy {
    /// 4 attempts, 200 ms base, 10 s per wait, 30 s of waiting in total, 30 s per attempt.
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 4,
            base_delay: Duration::from_millis(200),
            max_delay: Duration::from_secs(10),
            max_total: Duration::from_secs(30),
            request_timeout: Duration::from_secs(30),
        }
    }
}

impl RetryPolicy {
    /// A policy that sends once and never retries (same request timeout as the default).
    pub fn no_retries() -> Self {
        RetryPolicy {
            max_attempts: 1,
            ..RetryPolicy::default()
        }
    }

    /// The backoff before retry number `retry` (1 for the first retry): `base * 2^(retry-1)`
    /// capped at `max_delay`, then "equal jitter": a uniformly random value between half of
    /// that and all of it, so concurrent clients spread out but never retry instantly.
    pub fn backoff(&self, retry: u32, rng: &mut fastrand::Rng) -> Duration {
        let exponent = retry.saturating_sub(1).min(30);
        let uncapped = self.base_delay.saturating_mul(1u32 << exponent);
        let capped = uncapped.min(self.max_delay);
        let millis = u64::try_from(capped.as_millis()).unwrap_or(u64::MAX);
        let half = millis / 2;
        Duration::from_millis(half + rng.u64(0..=millis - half))
    }

    /// True when `outcome` is a transient failure that this operation may safely retry.
    pub fn is_retryable(
        &self,
        idempotency: Idempotency,
        outcome: &Result<HttpResponse, Error>,
    ) -> bool {
        match (outcome, idempotency) {
            (Ok(resp), _) => {
                let Some(rule) = retry_rule(resp.status, substatus_of(resp)) else {
                    return false;
                };
                match (rule.retry_for, idempotency) {
                    (_, Idempotency::Idempotent) | (RetryFor::All, _) => true,
                    (RetryFor::IdempotentOrServerBusy, _) => says_not_processed(resp),
                    (RetryFor::Idempotent, Idempotency::NonIdempotent) => false,
                }
            }
            (Err(err), Idempotency::Idempotent) => {
                matches!(err, Error::Transport(_) | Error::Timeout(_))
            }
            (Err(err), Idempotency::NonIdempotent) => {
                matches!(err, Error::Transport(_)) && err.code() == Some(NOT_SENT_CODE)
            }
        }
    }

    /// Decides what happens after attempt number `attempt` (1-based) ended with `outcome`:
    /// `Some(wait)` to sleep and try again, `None` to return the outcome. `waited` is the sum
    /// of earlier waits; `now` is used to read an HTTP-date `Retry-After`.
    pub fn next_wait(
        &self,
        attempt: u32,
        idempotency: Idempotency,
        outcome: &Result<HttpResponse, Error>,
        waited: Duration,
        now: DateTime<Utc>,
        rng: &mut fastrand::Rng,
    ) -> Option<Duration> {
        if attempt >= self.max_attempts || !self.is_retryable(idempotency, outcome) {
            return None;
        }
        let wait = match outcome.as_ref().ok().and_then(|r| retry_after_at(r, now)) {
            Some(hint) if hint > self.max_delay => return None,
            Some(hint) => hint,
            None => self.backoff(attempt, rng),
        };
        if waited.saturating_add(wait) > self.max_total {
            return None;
        }
        Some(wait)
    }
}

/// A 503 whose error code says the service refused the request without processing it
/// (Storage `ServerBusy`).
fn says_not_processed(resp: &HttpResponse) -> bool {
    resp.header("x-ms-error-code")
        .is_some_and(|code| code.trim().eq_ignore_ascii_case("ServerBusy"))
}

/// The wait the server asked for, if it said: `x-ms-retry-after-ms` (Cosmos),
/// `retry-after-ms`, or `Retry-After` in seconds or as an HTTP date (measured from the
/// machine clock). Unparseable values are ignored.
pub fn retry_after(resp: &HttpResponse) -> Option<Duration> {
    retry_after_at(resp, Utc::now())
}

/// [`retry_after`] with an explicit "now" for HTTP-date values (deterministic tests).
pub fn retry_after_at(resp: &HttpResponse, now: DateTime<Utc>) -> Option<Duration> {
    for name in ["x-ms-retry-after-ms", "retry-after-ms"] {
        if let Some(ms) = resp.header(name).and_then(parse_millis) {
            return Some(ms);
        }
    }
    let value = resp.header("retry-after")?.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = parse_http_date(value)?;
    Some((at - now).to_std().unwrap_or(Duration::ZERO))
}

/// Milliseconds as an integer or decimal (`"100"`, `"12.5"`); negative or garbage -> None.
fn parse_millis(text: &str) -> Option<Duration> {
    let ms: f64 = text.trim().parse().ok()?;
    if ms.is_finite() && ms >= 0.0 {
        Duration::try_from_secs_f64(ms / 1000.0).ok()
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorInfo;
    use chrono::TimeZone;

    fn resp(status: u16, headers: &[(&str, &str)]) -> Result<HttpResponse, Error> {
        Ok(crate::wire::test_support::response(status, headers, ""))
    }

    fn now() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, 26, 12, 0, 0)
            .single()
            .unwrap_or_default()
    }

    #[test]
    fn idempotent_operations_retry_transient_statuses_and_connection_errors() {
        let p = RetryPolicy::default();
        for status in [408, 429, 500, 502, 503, 504] {
            assert!(
                p.is_retryable(Idempotency::Idempotent, &resp(status, &[])),
                "{status}"
            );
        }
        for status in [200, 201, 400, 401, 403, 404, 409, 412, 413, 501] {
            assert!(
                !p.is_retryable(Idempotency::Idempotent, &resp(status, &[])),
                "{status}"
            );
        }
        assert!(p.is_retryable(Idempotency::Idempotent, &Err(Error::transport("reset"))));
        let timeout = Error::Timeout(Box::new(ErrorInfo::new("slow")));
        assert!(p.is_retryable(Idempotency::Idempotent, &Err(timeout)));
        assert!(!p.is_retryable(Idempotency::Idempotent, &Err(Error::invalid_input("bad"))));
    }

    #[test]
    fn non_idempotent_operations_retry_only_when_nothing_was_processed() {
        let p = RetryPolicy::default();
        let non = Idempotency::NonIdempotent;
        assert!(p.is_retryable(non, &resp(429, &[])));
        assert!(p.is_retryable(non, &resp(503, &[("x-ms-error-code", "ServerBusy")])));
        assert!(!p.is_retryable(non, &resp(503, &[])));
        assert!(!p.is_retryable(non, &resp(500, &[])));
        assert!(!p.is_retryable(non, &resp(504, &[])));
        let timeout = Error::Timeout(Box::new(ErrorInfo::new("slow")));
        assert!(!p.is_retryable(non, &Err(timeout)));
        assert!(!p.is_retryable(non, &Err(Error::transport("connection reset mid-body"))));
        let refused =
            Error::Transport(Box::new(ErrorInfo::new("refused").with_code(NOT_SENT_CODE)));
        assert!(p.is_retryable(non, &Err(refused)));
    }

    #[test]
    fn cosmos_sub_statuses_decide_retries_for_both_kinds_of_operation() {
        let p = RetryPolicy::default();
        for idem in [Idempotency::Idempotent, Idempotency::NonIdempotent] {
            // Read session not available: the replica has not caught up; the SDKs retry.
            assert!(
                p.is_retryable(idem, &resp(404, &[("x-ms-substatus", "1002")])),
                "{idem:?}"
            );
            // Retry-with: a conflicting concurrent update, nothing was applied.
            assert!(p.is_retryable(idem, &resp(449, &[])), "{idem:?}");
            assert!(
                p.is_retryable(idem, &resp(449, &[("x-ms-substatus", "0")])),
                "{idem:?}"
            );
            // A partition split or move under way.
            for sub in ["1000", "1002", "1007", "1008"] {
                assert!(
                    p.is_retryable(idem, &resp(410, &[("x-ms-substatus", sub)])),
                    "{idem:?} 410/{sub}"
                );
            }
            assert!(!p.is_retryable(idem, &resp(410, &[])), "{idem:?}");
            // A plain 404 (or another sub-status) is a missing resource.
            assert!(!p.is_retryable(idem, &resp(404, &[])), "{idem:?}");
            assert!(
                !p.is_retryable(idem, &resp(404, &[("x-ms-substatus", "0")])),
                "{idem:?}"
            );
            // A cross-partition query that needs a query plan never succeeds by retrying.
            assert!(
                !p.is_retryable(idem, &resp(400, &[("x-ms-substatus", "1004")])),
                "{idem:?}"
            );
        }
        assert_eq!(
            substatus_of(&resp(404, &[("x-ms-substatus", " 1002 ")]).unwrap()),
            Some(1002)
        );
        assert_eq!(
            substatus_of(&resp(404, &[("x-ms-substatus", "x")]).unwrap()),
            None
        );
    }

    #[test]
    fn the_retry_table_lists_specific_sub_statuses_before_their_status() {
        for (i, rule) in RETRY_TABLE.iter().enumerate() {
            if rule.substatus.is_none() {
                assert!(
                    !RETRY_TABLE[i + 1..]
                        .iter()
                        .any(|later| later.status == rule.status),
                    "row {i} ({}) hides a later row for the same status",
                    rule.status
                );
            }
            assert!(!rule.reason.is_empty());
        }
    }

    #[test]
    fn retry_after_reads_all_three_headers() {
        let r = |h: &[(&str, &str)]| resp(503, h).ok().and_then(|r| retry_after_at(&r, now()));
        assert_eq!(
            r(&[("x-ms-retry-after-ms", "250")]),
            Some(Duration::from_millis(250))
        );
        assert_eq!(
            r(&[("retry-after-ms", "12.5")]),
            Some(Duration::from_micros(12_500))
        );
        assert_eq!(r(&[("Retry-After", "3")]), Some(Duration::from_secs(3)));
        assert_eq!(
            r(&[("Retry-After", "Thu, 26 Nov 2026 12:00:07 GMT")]),
            Some(Duration::from_secs(7))
        );
        assert_eq!(
            r(&[("Retry-After", "Thu, 26 Nov 2026 11:00:00 GMT")]),
            Some(Duration::ZERO)
        );
        assert_eq!(r(&[("Retry-After", "soon")]), None);
        assert_eq!(r(&[("x-ms-retry-after-ms", "-5")]), None);
        assert_eq!(r(&[]), None);
        // x-ms-retry-after-ms wins over Retry-After.
        assert_eq!(
            r(&[("Retry-After", "9"), ("x-ms-retry-after-ms", "100")]),
            Some(Duration::from_millis(100))
        );
    }

    #[test]
    fn backoff_doubles_is_capped_and_jittered_within_half_to_full() {
        let p = RetryPolicy {
            base_delay: Duration::from_millis(100),
            max_delay: Duration::from_millis(1000),
            ..RetryPolicy::default()
        };
        let mut rng = fastrand::Rng::with_seed(7);
        for (retry, full) in [
            (1, 100),
            (2, 200),
            (3, 400),
            (4, 800),
            (5, 1000),
            (40, 1000),
        ] {
            for _ in 0..50 {
                let d = p.backoff(retry, &mut rng).as_millis();
                assert!(
                    d >= full / 2 && d <= full,
                    "retry {retry}: {d} not in [{}, {full}]",
                    full / 2
                );
            }
        }
    }

    #[test]
    fn same_seed_gives_same_backoff_sequence() {
        let p = RetryPolicy::default();
        let seq = |seed| {
            let mut rng = fastrand::Rng::with_seed(seed);
            (1..6).map(|n| p.backoff(n, &mut rng)).collect::<Vec<_>>()
        };
        assert_eq!(seq(42), seq(42));
    }

    #[test]
    fn next_wait_honours_server_hint_attempt_limit_and_total_budget() {
        let p = RetryPolicy {
            max_attempts: 3,
            max_delay: Duration::from_secs(5),
            max_total: Duration::from_secs(6),
            ..RetryPolicy::default()
        };
        let mut rng = fastrand::Rng::with_seed(1);
        let idem = Idempotency::Idempotent;
        let hinted = resp(429, &[("x-ms-retry-after-ms", "4000")]);
        assert_eq!(
            p.next_wait(1, idem, &hinted, Duration::ZERO, now(), &mut rng),
            Some(Duration::from_secs(4))
        );
        // Budget: 4 s already waited + 4 s > 6 s.
        assert_eq!(
            p.next_wait(2, idem, &hinted, Duration::from_secs(4), now(), &mut rng),
            None
        );
        // Attempt limit.
        assert_eq!(
            p.next_wait(3, idem, &resp(500, &[]), Duration::ZERO, now(), &mut rng),
            None
        );
        // A hint above max_delay is returned to the caller instead of waited out.
        let long = resp(429, &[("Retry-After", "60")]);
        assert_eq!(
            p.next_wait(1, idem, &long, Duration::ZERO, now(), &mut rng),
            None
        );
        // Success is never retried.
        assert_eq!(
            p.next_wait(1, idem, &resp(200, &[]), Duration::ZERO, now(), &mut rng),
            None
        );
    }
}
