//! The signing + retry pipeline against a scripted transport: per-attempt re-signing with a
//! fresh date, which failures are retried for idempotent and non-idempotent operations,
//! server retry hints, timeouts and seeded jitter. Time is paused (`start_paused`), so
//! waits cost nothing and virtual elapsed time is exact.

mod wire_common;

use chrono::{TimeZone, Utc};
use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use flowcraft_azure::azure::auth::SharedKeySigner;
use flowcraft_azure::wire::clock::{FixedClock, SteppingClock};
use flowcraft_azure::wire::pipeline::{NoAuth, Pipeline, Signer};
use flowcraft_azure::wire::retry::{Idempotency, NOT_SENT_CODE, RetryPolicy};
use flowcraft_azure::wire::transport::HttpRequest;
use flowcraft_azure::{Error, ErrorInfo};
use wire_common::{DEV_KEY, ScriptedTransport, response};

const URL: &str = "http://127.0.0.1:11001/devstoreaccount1/jobs/messages";

fn policy() -> RetryPolicy {
    RetryPolicy {
        max_attempts: 4,
        base_delay: Duration::from_millis(100),
        max_delay: Duration::from_secs(2),
        max_total: Duration::from_secs(10),
        request_timeout: Duration::from_secs(5),
    }
}

fn pipeline(transport: &Arc<ScriptedTransport>, signer: Arc<dyn Signer>) -> Pipeline {
    let start = Utc
        .with_ymd_and_hms(2026, 11, 26, 12, 0, 0)
        .single()
        .expect("date");
    Pipeline::new(transport.clone(), signer)
        .with_retry(policy())
        .with_clock(Arc::new(FixedClock::new(start)))
        .with_seed(7)
}

fn not_sent() -> Error {
    Error::Transport(Box::new(
        ErrorInfo::new("connection refused").with_code(NOT_SENT_CODE),
    ))
}

#[tokio::test(start_paused = true)]
async fn retried_request_is_re_signed_with_a_fresh_date_each_attempt() {
    let transport = Arc::new(ScriptedTransport::new(vec![
        Some(response(503, &[], "")),
        Some(response(500, &[], "")),
        Some(response(200, &[], "ok")),
    ]));
    let signer = Arc::new(SharedKeySigner::new("devstoreaccount1", DEV_KEY).expect("key"));
    let start = Utc
        .with_ymd_and_hms(2026, 11, 26, 12, 0, 0)
        .single()
        .expect("date");
    let p = Pipeline::new(transport.clone(), signer.clone())
        .with_retry(policy())
        .with_clock(Arc::new(SteppingClock::new(
            start,
            chrono::Duration::seconds(3),
        )))
        .with_seed(1);
    let mut request = HttpRequest::parse("GET", URL).expect("valid request");
    request.set_header("x-ms-version", "2021-12-02");
    let answer = p
        .send(request, Idempotency::Idempotent)
        .await
        .expect("answer");
    assert_eq!(answer.status, 200);

    let seen = transport.seen();
    assert_eq!(seen.len(), 3);
    assert_eq!(
        seen.iter().map(|r| r.attempt).collect::<Vec<_>>(),
        vec![1, 2, 3]
    );
    let dates: HashSet<&str> = seen.iter().filter_map(|r| r.header("x-ms-date")).collect();
    assert_eq!(dates.len(), 3, "every attempt carries its own date");
    let auths: HashSet<&str> = seen
        .iter()
        .filter_map(|r| r.header("authorization"))
        .collect();
    assert_eq!(auths.len(), 3, "every attempt carries its own signature");
    for sent in &seen {
        // Each signature is valid for the date it was sent with.
        let expected = signer.authorization(sent).expect("signable");
        assert_eq!(sent.header("authorization"), Some(expected.as_str()));
    }
    // The caller's request is not modified by signing.
    assert!(seen.iter().all(|r| r.url.as_str() == URL));
}

#[tokio::test(start_paused = true)]
async fn idempotent_request_gives_up_after_max_attempts_and_returns_last_answer() {
    let script = (0..6).map(|_| Some(response(503, &[], "busy"))).collect();
    let transport = Arc::new(ScriptedTransport::new(script));
    let answer = pipeline(&transport, Arc::new(NoAuth))
        .send(
            HttpRequest::parse("GET", URL).expect("valid request"),
            Idempotency::Idempotent,
        )
        .await
        .expect("a response");
    assert_eq!(answer.status, 503);
    assert_eq!(transport.seen().len(), 4);
}

#[tokio::test(start_paused = true)]
async fn non_idempotent_request_is_not_retried_on_500_or_plain_503() {
    for status in [500, 502, 503, 504, 408] {
        let transport = Arc::new(ScriptedTransport::new(vec![
            Some(response(status, &[], "")),
            Some(response(201, &[], "")),
        ]));
        let answer = pipeline(&transport, Arc::new(NoAuth))
            .send(
                HttpRequest::parse("POST", URL).expect("valid request"),
                Idempotency::NonIdempotent,
            )
            .await
            .expect("a response");
        assert_eq!(answer.status, status);
        assert_eq!(transport.seen().len(), 1, "status {status}");
    }
}

#[tokio::test(start_paused = true)]
async fn non_idempotent_request_is_retried_when_nothing_was_processed() {
    let transport = Arc::new(ScriptedTransport::new(vec![
        Some(response(429, &[], "")),
        Some(response(503, &[("x-ms-error-code", "ServerBusy")], "")),
        Some(Err(not_sent())),
        Some(response(201, &[], "")),
    ]));
    let answer = pipeline(&transport, Arc::new(NoAuth))
        .send(
            HttpRequest::parse("POST", URL).expect("valid request"),
            Idempotency::NonIdempotent,
        )
        .await
        .expect("a response");
    assert_eq!(answer.status, 201);
    assert_eq!(transport.seen().len(), 4);
}

#[tokio::test(start_paused = true)]
async fn dropped_connection_is_retried_only_for_idempotent_requests() {
    let script = || {
        vec![
            Some(Err(Error::transport("connection reset"))),
            Some(response(200, &[], "")),
        ]
    };
    let transport = Arc::new(ScriptedTransport::new(script()));
    let ok = pipeline(&transport, Arc::new(NoAuth))
        .send(
            HttpRequest::parse("GET", URL).expect("valid request"),
            Idempotency::Idempotent,
        )
        .await;
    assert_eq!(ok.map(|r| r.status).ok(), Some(200));

    let transport = Arc::new(ScriptedTransport::new(script()));
    let err = pipeline(&transport, Arc::new(NoAuth))
        .send(
            HttpRequest::parse("POST", URL).expect("valid request"),
            Idempotency::NonIdempotent,
        )
        .await;
    assert!(matches!(err, Err(Error::Transport(_))));
    assert_eq!(transport.seen().len(), 1);
}

#[tokio::test(start_paused = true)]
async fn server_retry_after_ms_is_waited_exactly() {
    let transport = Arc::new(ScriptedTransport::new(vec![
        Some(response(429, &[("x-ms-retry-after-ms", "1500")], "")),
        Some(response(200, &[], "")),
    ]));
    let started = tokio::time::Instant::now();
    let answer = pipeline(&transport, Arc::new(NoAuth))
        .send(
            HttpRequest::parse("GET", URL).expect("valid request"),
            Idempotency::Idempotent,
        )
        .await
        .expect("a response");
    assert_eq!(answer.status, 200);
    // Virtual time (paused clock): exactly the hinted wait, no jitter added.
    assert_eq!(started.elapsed(), Duration::from_millis(1500));
}

#[tokio::test(start_paused = true)]
async fn retry_after_longer_than_max_delay_returns_the_throttled_answer() {
    let transport = Arc::new(ScriptedTransport::new(vec![
        Some(response(429, &[("Retry-After", "60")], "")),
        Some(response(200, &[], "")),
    ]));
    let answer = pipeline(&transport, Arc::new(NoAuth))
        .send(
            HttpRequest::parse("GET", URL).expect("valid request"),
            Idempotency::Idempotent,
        )
        .await
        .expect("a response");
    assert_eq!(answer.status, 429);
    assert_eq!(transport.seen().len(), 1);
}

#[tokio::test(start_paused = true)]
async fn silent_server_times_out_each_attempt_and_reports_attempt_count() {
    let transport = Arc::new(ScriptedTransport::new(vec![None, None, None, None]));
    let err = pipeline(&transport, Arc::new(NoAuth))
        .send(
            HttpRequest::parse("GET", URL).expect("valid request"),
            Idempotency::Idempotent,
        )
        .await
        .expect_err("times out");
    assert!(matches!(err, Error::Timeout(_)), "{err:?}");
    assert!(err.to_string().contains("after 4 attempts"), "{err}");
    assert_eq!(transport.seen().len(), 4);
}

#[tokio::test(start_paused = true)]
async fn same_seed_gives_same_waits() {
    async fn total_wait(seed: u64) -> Duration {
        let script = (0..4).map(|_| Some(response(500, &[], ""))).collect();
        let transport = Arc::new(ScriptedTransport::new(script));
        let started = tokio::time::Instant::now();
        let _ = pipeline(&transport, Arc::new(NoAuth))
            .with_seed(seed)
            .send(
                HttpRequest::parse("GET", URL).expect("valid request"),
                Idempotency::Idempotent,
            )
            .await;
        started.elapsed()
    }
    let first = total_wait(99).await;
    assert_eq!(first, total_wait(99).await);
    // Three waits of base 100/200/400 ms with jitter in [half, full].
    assert!(
        first >= Duration::from_millis(350) && first <= Duration::from_millis(700),
        "{first:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_request_with_an_unstorable_header_is_refused_without_signing_or_sending() {
    let transport = Arc::new(ScriptedTransport::new(vec![Some(response(200, &[], ""))]));
    let signer = Arc::new(SharedKeySigner::new("devstoreaccount1", DEV_KEY).expect("key"));
    let mut request = HttpRequest::parse("GET", URL).expect("valid request");
    request.set_header("x-ms-meta-note", "line one\r\nx-injected: 1");
    let err = pipeline(&transport, signer)
        .send(request, Idempotency::Idempotent)
        .await;
    assert!(matches!(err, Err(Error::InvalidInput(_))), "{err:?}");
    assert!(transport.seen().is_empty());
}

#[test]
fn pipeline_debug_shows_no_key() {
    let transport = Arc::new(ScriptedTransport::new(vec![]));
    let signer = Arc::new(SharedKeySigner::new("devstoreaccount1", DEV_KEY).expect("key"));
    let text = format!("{:?}", pipeline(&transport, signer));
    assert!(
        text.contains("devstoreaccount1") && text.contains("REDACTED"),
        "{text}"
    );
    assert!(!text.contains("Eby8vdM0"), "{text}");
}

#[test]
fn urls_that_url_normalisation_would_change_cannot_become_requests() {
    for url in [
        "http://127.0.0.1:11001/devstoreaccount1/jobs/messages/..?popreceipt=r",
        "http://127.0.0.1:11001/devstoreaccount1/jobs/messages/%2e%2e?popreceipt=r",
        "http://127.0.0.1:18081/dbs/db/colls/c/docs/.",
        "http://127.0.0.1:18081/dbs/db/colls/c/docs/%2E",
        "http://127.0.0.1:18081/dbs/db/./colls/c",
        "not a url",
    ] {
        let err = HttpRequest::parse("DELETE", url).expect_err(url);
        assert!(matches!(err, Error::InvalidInput(_)), "{url}: {err:?}");
    }
    // Ordinary encoded paths pass untouched.
    let request = HttpRequest::parse(
        "GET",
        "http://127.0.0.1:18081/dbs/db/colls/c/docs/a%20b...?x=1",
    )
    .expect("stable path");
    assert_eq!(request.url.path(), "/dbs/db/colls/c/docs/a%20b...");
}
