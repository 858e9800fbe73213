//! Recorded wire fixtures (`fixtures/wire/queue.jsonl`, `fixtures/wire/cosmos.jsonl`).
//!
//! One scenario per service drives every client operation, including the error answers 404,
//! 409, 412 (stale ETag, false PATCH condition, stale pop receipt) and 413, and checks every
//! parsed result. The emulators never throttle, so the recording injects one throttling
//! answer per service below the recorder (Queue: 503 `ServerBusy` + `Retry-After` on a put;
//! Cosmos: 429 + `x-ms-retry-after-ms` on a create): the fixtures then hold the throttled
//! attempt and the pipeline's retry, and replay proves the client retries it. The ignored `record_*` tests run it against the emulators through the
//! wire [`Recorder`] (run them with `scripts/record-fixtures.sh`); the default `*_replays_*`
//! tests run the same scenario offline against the [`Replayer`], which also checks that each
//! request is the recorded one and that its signature hashes to the recorded signature.
//! The fixtures hold no key or signature (checked below).

mod support;

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use async_trait::async_trait;

use chrono::Datelike;
use flowcraft_azure::Error;
use flowcraft_azure::azure::cosmos::{
    CosmosClient, PartitionKey, PatchOperation, PatchPath, PatchRequest, Query, QueryOptions,
};
use flowcraft_azure::azure::queue::{
    self, ListQueuesOptions, MessageCount, MessageTtl, PutOptions, QUEUE_API_VERSION, QueueClient,
};
use flowcraft_azure::wire::pipeline::{Pipeline, Signer};
use flowcraft_azure::wire::record::{Recorder, read_recording_file};
use flowcraft_azure::wire::redact::{REDACTED, Redactor, find_leaks};
use flowcraft_azure::wire::replay::Replayer;
use flowcraft_azure::wire::retry::{Idempotency, RetryPolicy};
use flowcraft_azure::wire::transport::{HttpRequest, HttpResponse, Transport};
use serde_json::{Value, json};
use support::secs;

const QUEUE_FIXTURE: &str = "fixtures/wire/queue.jsonl";
const COSMOS_FIXTURE: &str = "fixtures/wire/cosmos.jsonl";
/// The endpoints of the scripts/emulators.sh stack; the recordings' URL paths depend on them.
const QUEUE_ENDPOINT: &str = "http://127.0.0.1:11001/devstoreaccount1";
const COSMOS_ENDPOINT: &str = "http://127.0.0.1:18081";
const QUEUE_NAME: &str = "fixture-jobs";
const DATABASE: &str = "fixturedb";
const TEXT: &str = "job <1> & \"quoted\" ü";

fn fixture_path(relative: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(relative)
}

/// Every Queue Storage operation and its errors, with checks on the parsed results.
async fn queue_scenario(pipeline: Pipeline) {
    let queue = QueueClient::new(pipeline.clone(), QUEUE_ENDPOINT, QUEUE_NAME).unwrap();
    // A clean slate: 204 or 404 depending on the emulator's state when recorded.
    let _ = queue.delete().await;
    assert!(queue.create_if_not_exists().await.unwrap());
    assert!(!queue.create_if_not_exists().await.unwrap());
    let options = ListQueuesOptions {
        prefix: Some("fixture-".into()),
        max_results: Some(10),
    };
    let listed = queue.list_queues(&options, None).await.unwrap();
    assert!(listed.queues.iter().any(|q| q.name == QUEUE_NAME));

    let forever = PutOptions {
        ttl: Some(MessageTtl::Never),
        ..PutOptions::default()
    };
    let sent = queue.put_message(TEXT, forever).await.unwrap();
    assert_eq!(sent.expiration_time.year(), 9999);
    let delayed = PutOptions {
        visibility_delay: Some(secs(3600)),
        ttl: Some(MessageTtl::from_secs(7200).unwrap()),
    };
    let later = queue.put_message("later", delayed).await.unwrap();
    assert!(later.next_visible > later.insertion_time);
    assert_eq!(queue.metadata().await.unwrap().approximate_message_count, 2);

    let peeked = queue.peek_messages(MessageCount::MAX).await.unwrap();
    assert_eq!(peeked.len(), 1, "the delayed message is invisible");
    assert_eq!(peeked[0].text, TEXT);
    assert_eq!(peeked[0].dequeue_count, 0);

    let got = queue
        .get_messages(MessageCount::MAX, secs(30))
        .await
        .unwrap();
    assert_eq!(got.len(), 1);
    let msg = &got[0];
    assert_eq!(msg.id, sent.id);
    assert_eq!(msg.text, TEXT);
    assert_eq!(msg.dequeue_count, 1);

    let renewed = queue
        .update_message(&msg.id, &msg.pop_receipt, secs(60), Some("job <1> updated"))
        .await
        .unwrap();
    assert_ne!(renewed.pop_receipt, msg.pop_receipt);
    assert!(renewed.next_visible > msg.next_visible);

    let stale = queue
        .delete_message(&msg.id, &msg.pop_receipt)
        .await
        .unwrap_err();
    assert!(matches!(stale, Error::PreconditionFailed(_)), "{stale:?}");
    assert_eq!(stale.code(), Some("PopReceiptMismatch"));
    assert_eq!(stale.status(), Some(400));
    queue
        .delete_message(&msg.id, &renewed.pop_receipt)
        .await
        .unwrap();
    let gone = queue
        .delete_message(&msg.id, &renewed.pop_receipt)
        .await
        .unwrap_err();
    assert!(matches!(gone, Error::NotFound(_)), "{gone:?}");
    assert_eq!(gone.code(), Some("MessageNotFound"));
    assert!(gone.info().request_id.is_some());

    // The client refuses oversized texts before sending, so the service's own 413 is
    // provoked with a raw request through the same pipeline and mapped the client's way.
    let body = format!(
        "<?xml version=\"1.0\" encoding=\"utf-8\"?><QueueMessage><MessageText>{}</MessageText></QueueMessage>",
        "a".repeat(65_537)
    );
    let mut raw = HttpRequest::parse("POST", format!("{QUEUE_ENDPOINT}/{QUEUE_NAME}/messages"))
        .expect("valid request");
    raw.set_header("x-ms-version", QUEUE_API_VERSION);
    raw.set_header("Content-Type", "application/xml");
    raw.set_body(body);
    let answer = pipeline
        .send(raw, Idempotency::NonIdempotent)
        .await
        .unwrap();
    assert_eq!(answer.status, 413);
    let too_large = queue::response_error(&answer, "queue put message");
    assert!(matches!(too_large, Error::TooLarge(_)), "{too_large:?}");
    assert_eq!(too_large.code(), Some("RequestBodyTooLarge"));

    queue.clear().await.unwrap();
    assert_eq!(queue.metadata().await.unwrap().approximate_message_count, 0);
    queue.delete().await.unwrap();
    let missing = queue.metadata().await.unwrap_err();
    assert!(matches!(missing, Error::NotFound(_)), "{missing:?}");
    assert_eq!(missing.code(), Some("QueueNotFound"));
}

/// Every Cosmos operation and its errors, with checks on the parsed results.
async fn cosmos_scenario(pipeline: Pipeline) {
    let db = CosmosClient::new(pipeline, COSMOS_ENDPOINT)
        .unwrap()
        .database(DATABASE)
        .unwrap();
    let _ = db.delete().await; // clean slate
    let created_db = db.create_if_not_exists().await.unwrap();
    assert!(created_db.value);
    assert!(created_db.info.request_charge > 0.0);
    let existing_db = db.create_if_not_exists().await.unwrap();
    assert!(!existing_db.value);
    assert_eq!(existing_db.info.status, 409);
    let runs = db.container("runs").unwrap();
    assert!(runs.create_if_not_exists("/runId").await.unwrap().value);
    assert!(!runs.create_if_not_exists("/runId").await.unwrap().value);

    let pk = PartitionKey::from("run-1");
    let run = json!({"id": "run-1", "runId": "run-1", "status": "running", "lastUpdated": 100,
                     "n": 0, "b": "x", "list": [1]});
    let created = runs.create(&pk, &run).await.unwrap();
    assert_eq!(created.info.status, 201);
    assert_eq!(created.value["status"], "running");
    assert!(created.info.request_charge > 0.0);
    assert!(created.info.activity_id.is_some());
    let etag = created.info.etag.clone().expect("etag");

    let duplicate = runs.create(&pk, &run).await.unwrap_err();
    assert!(matches!(duplicate, Error::Conflict(_)), "{duplicate:?}");
    assert_eq!(duplicate.status(), Some(409));

    let read = runs.read::<Value>("run-1", &pk).await.unwrap();
    assert_eq!(read.value["lastUpdated"], 100);
    assert_eq!(read.info.etag.as_deref(), Some(etag.as_str()));

    let mut completed = run.clone();
    completed["status"] = json!("completed");
    let replaced = runs
        .replace("run-1", &pk, &completed, Some(&etag))
        .await
        .unwrap();
    assert_eq!(replaced.value["status"], "completed");
    let current = replaced.info.etag.clone().expect("etag");
    assert_ne!(current, etag);
    let stale = runs
        .replace("run-1", &pk, &run, Some(&etag))
        .await
        .unwrap_err();
    assert!(matches!(stale, Error::PreconditionFailed(_)), "{stale:?}");

    let patch = PatchRequest::new(vec![
        PatchOperation::set(PatchPath::property("outputs.a/b"), json!({"ok": true})),
        PatchOperation::add(PatchPath::from_segments(["list", "-"]), json!(2)),
        PatchOperation::replace(PatchPath::property("status"), json!("done")),
        PatchOperation::remove(PatchPath::property("b")),
        PatchOperation::increment(PatchPath::property("n"), 5),
    ])
    .unwrap();
    let patched = runs
        .patch::<Value>("run-1", &pk, &patch, Some(&current))
        .await
        .unwrap();
    let doc = &patched.value;
    assert_eq!(doc["outputs.a/b"], json!({"ok": true}));
    assert_eq!(doc["list"], json!([1, 2]));
    assert_eq!(doc["status"], "done");
    assert!(doc.get("b").is_none());
    assert_eq!(doc["n"], 5);
    let conditional =
        PatchRequest::new(vec![PatchOperation::increment(PatchPath::property("n"), 1)])
            .unwrap()
            .with_condition("from c where c.status = 'running'")
            .unwrap();
    let refused = runs
        .patch::<Value>("run-1", &pk, &conditional, None)
        .await
        .unwrap_err();
    assert!(
        matches!(refused, Error::PreconditionFailed(_)),
        "{refused:?}"
    );

    let pk2 = PartitionKey::from("run-2");
    let second = json!({"id": "run-2", "runId": "run-2", "status": "failed", "lastUpdated": 50});
    assert_eq!(
        runs.upsert(&pk2, &second, None).await.unwrap().info.status,
        201
    );
    assert_eq!(
        runs.upsert(&pk2, &second, None).await.unwrap().info.status,
        200
    );

    let query = Query::new("SELECT * FROM c WHERE c.lastUpdated >= @t").param("@t", 0);
    let options = QueryOptions {
        page_size: 1,
        partition_key: None,
    };
    let first_page = runs
        .query_page::<Value>(&query, &options, None)
        .await
        .unwrap();
    assert_eq!(first_page.items.len(), 1);
    assert!(first_page.continuation.is_some());
    let mut ids: Vec<String> = runs
        .query_all::<Value>(&query, &options)
        .await
        .unwrap()
        .iter()
        .filter_map(|d| d["id"].as_str().map(str::to_string))
        .collect();
    ids.sort();
    assert_eq!(ids, ["run-1", "run-2"]);

    assert_eq!(
        runs.delete("run-2", &pk2, None).await.unwrap().info.status,
        204
    );
    let missing = runs.read::<Value>("run-2", &pk2).await.unwrap_err();
    assert!(matches!(missing, Error::NotFound(_)), "{missing:?}");
    let again = runs.delete("run-2", &pk2, None).await.unwrap_err();
    assert!(matches!(again, Error::NotFound(_)), "{again:?}");
    assert_eq!(db.delete().await.unwrap().info.status, 204);
}

fn storage_signer() -> Arc<dyn Signer> {
    support::storage_connection(support::AZURITE_KEY).signer()
}

fn cosmos_signer() -> Arc<dyn Signer> {
    support::cosmos_connection().signer()
}

/// The retry policy of both recording and replay: retries (so the injected throttling is
/// retried) with short waits.
fn fixture_retry_policy() -> RetryPolicy {
    RetryPolicy {
        max_attempts: 2,
        base_delay: Duration::from_millis(10),
        ..RetryPolicy::default()
    }
}

/// Which request gets the injected throttling answer, and the answer.
#[derive(Debug, Clone, Copy)]
enum Injection {
    /// Queue: the first put message gets 503 `ServerBusy` with `Retry-After: 1`.
    QueueServerBusy,
    /// Cosmos: the first document create gets 429 with `x-ms-retry-after-ms: 1000`.
    CosmosTooManyRequests,
}

impl Injection {
    fn applies_to(self, request: &HttpRequest) -> bool {
        let path = request.url.path();
        request.method == "POST"
            && match self {
                Injection::QueueServerBusy => path.ends_with("/messages"),
                Injection::CosmosTooManyRequests => {
                    path.ends_with("/docs")
                        && request.header("x-ms-documentdb-isquery").is_none()
                        && request.header("x-ms-documentdb-is-upsert").is_none()
                }
            }
    }

    fn answer(self) -> HttpResponse {
        let headers = |pairs: &[(&str, &str)]| {
            pairs
                .iter()
                .map(|(n, v)| (n.to_string(), v.to_string()))
                .collect()
        };
        match self {
            Injection::QueueServerBusy => HttpResponse {
                status: 503,
                headers: headers(&[
                    ("content-type", "application/xml"),
                    ("x-ms-error-code", "ServerBusy"),
                    ("x-ms-request-id", "injected-server-busy"),
                    ("retry-after", "1"),
                ]),
                body: b"<?xml version=\"1.0\" encoding=\"utf-8\"?><Error><Code>ServerBusy</Code><Message>The server is busy.</Message></Error>".to_vec(),
            },
            Injection::CosmosTooManyRequests => HttpResponse {
                status: 429,
                headers: headers(&[
                    ("content-type", "application/json"),
                    ("x-ms-activity-id", "injected-too-many-requests"),
                    ("x-ms-request-charge", "0"),
                    ("x-ms-retry-after-ms", "1000"),
                ]),
                body: br#"{"code":"TooManyRequests","message":"Request rate is large; retry later."}"#
                    .to_vec(),
            },
        }
    }
}

/// Answers the first request the injection applies to with its throttling answer (without
/// forwarding it) and forwards everything else.
#[derive(Debug)]
struct ThrottleOnce {
    inner: Arc<dyn Transport>,
    injection: Injection,
    done: AtomicBool,
}

#[async_trait]
impl Transport for ThrottleOnce {
    async fn send(&self, request: HttpRequest) -> Result<HttpResponse, Error> {
        if self.injection.applies_to(&request) && !self.done.swap(true, Ordering::SeqCst) {
            return Ok(self.injection.answer());
        }
        self.inner.send(request).await
    }
}

/// A retrying pipeline over a recorder writing `fixture` (via a temporary file renamed at
/// the end, so a failed recording never replaces a good fixture), with one throttling
/// answer injected below the recorder.
fn recording_pipeline(
    fixture: &str,
    signer: Arc<dyn Signer>,
    redactor: Redactor,
    injection: Injection,
) -> (Pipeline, PathBuf) {
    let tmp = fixture_path(&format!("{fixture}.tmp"));
    let throttled = ThrottleOnce {
        inner: support::transport(),
        injection,
        done: AtomicBool::new(false),
    };
    let recorder = Recorder::to_file(Arc::new(throttled), &tmp, redactor).expect("recorder");
    let pipeline = Pipeline::new(Arc::new(recorder), signer).with_retry(fixture_retry_policy());
    (pipeline, tmp)
}

fn recording_enabled(test: &str) -> bool {
    let on = std::env::var("FLOWCRAFT_RECORD").is_ok_and(|v| v == "1");
    if !on {
        eprintln!("{test}: FLOWCRAFT_RECORD is not 1; run scripts/record-fixtures.sh to record");
    }
    on
}

#[tokio::test]
#[ignore = "records fixtures/wire/queue.jsonl against Azurite; run scripts/record-fixtures.sh"]
async fn record_queue_fixture() {
    if !recording_enabled("record_queue_fixture") {
        return;
    }
    support::require_reachable("Azurite (queue)", QUEUE_ENDPOINT);
    let connection = support::storage_connection(support::AZURITE_KEY);
    let (pipeline, tmp) = recording_pipeline(
        QUEUE_FIXTURE,
        connection.signer(),
        connection.redactor(),
        Injection::QueueServerBusy,
    );
    queue_scenario(pipeline).await;
    std::fs::rename(&tmp, fixture_path(QUEUE_FIXTURE)).expect("move the recording in place");
}

#[tokio::test]
#[ignore = "records fixtures/wire/cosmos.jsonl against the Cosmos emulator; run scripts/record-fixtures.sh"]
async fn record_cosmos_fixture() {
    if !recording_enabled("record_cosmos_fixture") {
        return;
    }
    support::require_reachable("the Cosmos emulator", COSMOS_ENDPOINT);
    let connection = support::cosmos_connection();
    let (pipeline, tmp) = recording_pipeline(
        COSMOS_FIXTURE,
        connection.signer(),
        connection.redactor(),
        Injection::CosmosTooManyRequests,
    );
    cosmos_scenario(pipeline).await;
    std::fs::rename(&tmp, fixture_path(COSMOS_FIXTURE)).expect("move the recording in place");
}

/// Replays `fixture` through a pipeline signing with `signer`; checks every request matched,
/// every exchange was used and every signature was verified against the recorded hash.
async fn replay<F, Fut>(fixture: &str, signer: Arc<dyn Signer>, scenario: F)
where
    F: FnOnce(Pipeline) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let replayer = Replayer::from_file(fixture_path(fixture))
        .unwrap_or_else(|e| panic!("{e}; record it with scripts/record-fixtures.sh"))
        .verify_signatures_with(signer.clone())
        .require_signatures();
    let replayer = Arc::new(replayer);
    let pipeline = Pipeline::new(replayer.clone(), signer).with_retry(fixture_retry_policy());
    scenario(pipeline).await;
    replayer.finish().unwrap();
    assert_eq!(
        replayer.verified_signatures(),
        replayer.exchanges().len(),
        "every recorded signature is reproduced"
    );
}

// Paused time: the recorded `Retry-After` waits pass instantly.
#[tokio::test(start_paused = true)]
async fn queue_fixture_replays_offline_with_the_same_requests_and_results() {
    replay(QUEUE_FIXTURE, storage_signer(), queue_scenario).await;
}

#[tokio::test(start_paused = true)]
async fn cosmos_fixture_replays_offline_with_the_same_requests_and_results() {
    replay(COSMOS_FIXTURE, cosmos_signer(), cosmos_scenario).await;
}

#[test]
fn fixtures_cover_the_error_statuses() {
    let mut statuses = Vec::new();
    for fixture in [QUEUE_FIXTURE, COSMOS_FIXTURE] {
        let exchanges = read_recording_file(fixture_path(fixture)).unwrap();
        statuses.extend(exchanges.iter().filter_map(|e| e.status));
    }
    for status in [400, 404, 409, 412, 413, 429, 503] {
        assert!(statuses.contains(&status), "no {status} answer recorded");
    }
}

#[test]
fn fixtures_show_each_throttled_request_retried_with_the_same_request() {
    for (fixture, status) in [(QUEUE_FIXTURE, 503), (COSMOS_FIXTURE, 429)] {
        let exchanges = read_recording_file(fixture_path(fixture)).unwrap();
        let throttled = exchanges
            .iter()
            .position(|e| e.status == Some(status))
            .unwrap_or_else(|| panic!("{fixture}: no {status} recorded"));
        let (first, retry) = (&exchanges[throttled], &exchanges[throttled + 1]);
        assert_eq!(first.attempt, 1, "{fixture}");
        assert_eq!(retry.attempt, 2, "{fixture}");
        assert!(
            retry.status.is_some_and(|s| (200..300).contains(&s)),
            "{fixture}"
        );
        assert_eq!((&first.method, &first.url), (&retry.method, &retry.url));
        assert_eq!(first.request_body, retry.request_body, "{fixture}");
        assert_ne!(
            first.signature_sha256, retry.signature_sha256,
            "{fixture}: the retry is signed afresh"
        );
    }
}

#[test]
fn fixtures_contain_no_keys_or_signatures() {
    for fixture in [QUEUE_FIXTURE, COSMOS_FIXTURE] {
        let text = std::fs::read_to_string(fixture_path(fixture)).unwrap();
        assert_eq!(find_leaks(&text), Vec::<String>::new(), "{fixture}");
        for exchange in read_recording_file(fixture_path(fixture)).unwrap() {
            if let Some(auth) = exchange.request_header("authorization") {
                assert_eq!(auth, REDACTED, "{fixture} exchange {}", exchange.seq);
            }
        }
    }
}
