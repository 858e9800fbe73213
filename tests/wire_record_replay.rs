//! Recording and replaying wire traffic offline: the recorder writes redacted JSON Lines,
//! the replayer serves them back and fails with a readable diff on divergence, signatures
//! are verified against the recorded hashes, and the replay server answers real reqwest.

mod wire_common;

use chrono::{DateTime, TimeZone, Utc};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use flowcraft_azure::Error;
use flowcraft_azure::azure::auth::{SasSigner, SharedKeySigner};
use flowcraft_azure::wire::clock::FixedClock;
use flowcraft_azure::wire::pipeline::{Pipeline, Signer};
use flowcraft_azure::wire::record::{Body, Recorder, read_recording_file};
use flowcraft_azure::wire::redact::{Redactor, find_leaks};
use flowcraft_azure::wire::replay::Replayer;
use flowcraft_azure::wire::replay_server::{DIVERGENCE_STATUS, ReplayServer};
use flowcraft_azure::wire::reqwest_transport::ReqwestTransport;
use flowcraft_azure::wire::retry::{Idempotency, RetryPolicy};
use flowcraft_azure::wire::transport::{HttpRequest, HttpResponse, Transport};
use serde_json::json;
use wire_common::{DEV_KEY, ScriptedTransport, response};

const ENDPOINT: &str = "http://127.0.0.1:11001/devstoreaccount1";
const SAS: &str = "sv=2021-12-02&ss=q&srt=sco&sp=raup&se=2026-11-27T00%3A00%3A00Z&sig=Zm9vYmFyYmF6cXV4MTIzNDU2Nzg5MA%3D%3D";

fn temp_file(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!(
        "flowcraft-wire-{}-{name}.jsonl",
        std::process::id()
    ))
}

fn recorded_date() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 26, 21, 9, 10)
        .single()
        .expect("date")
}

fn dev_signer() -> Arc<SharedKeySigner> {
    Arc::new(SharedKeySigner::new("devstoreaccount1", DEV_KEY).expect("key"))
}

fn quick_retries() -> RetryPolicy {
    RetryPolicy {
        base_delay: Duration::from_millis(1),
        max_delay: Duration::from_millis(5),
        ..RetryPolicy::default()
    }
}

fn pipeline(transport: Arc<dyn Transport>, signer: Arc<dyn Signer>, at: DateTime<Utc>) -> Pipeline {
    Pipeline::new(transport, signer)
        .with_retry(quick_retries())
        .with_clock(Arc::new(FixedClock::new(at)))
        .with_seed(3)
}

/// The client's side of the scenario: three queue calls.
fn requests() -> Vec<(HttpRequest, Idempotency)> {
    let mut put = HttpRequest::parse(
        "POST",
        format!("{ENDPOINT}/jobs/messages?visibilitytimeout=0"),
    )
    .expect("valid request");
    put.set_header("x-ms-version", "2021-12-02");
    put.set_header("Content-Type", "application/xml");
    put.set_body(
        b"<QueueMessage><MessageText>eyJydW5JZCI6InIxIn0=</MessageText></QueueMessage>".to_vec(),
    );
    let mut get = HttpRequest::parse(
        "GET",
        format!("{ENDPOINT}/jobs/messages?numofmessages=5&visibilitytimeout=30"),
    )
    .expect("valid request");
    get.set_header("x-ms-version", "2021-12-02");
    let mut meta =
        HttpRequest::parse("GET", format!("{ENDPOINT}/jobs?comp=metadata")).expect("valid request");
    meta.set_header("x-ms-version", "2021-12-02");
    vec![
        (put, Idempotency::NonIdempotent),
        (get, Idempotency::Idempotent),
        (meta, Idempotency::Idempotent),
    ]
}

/// What the fake service answers: a throttled first try, then one answer per request.
fn service() -> Arc<ScriptedTransport> {
    Arc::new(ScriptedTransport::new(vec![
        Some(response(429, &[("x-ms-retry-after-ms", "1")], "")),
        Some(response(
            201,
            &[("x-ms-request-id", "r1")],
            "<QueueMessagesList/>",
        )),
        Some(response(
            200,
            &[("content-type", "application/xml")],
            &format!(
                "<QueueMessagesList><QueueMessage><MessageText>DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey={DEV_KEY}</MessageText></QueueMessage></QueueMessagesList>"
            ),
        )),
        Some(response(
            200,
            &[("x-ms-approximate-messages-count", "3")],
            "",
        )),
    ]))
}

async fn run(pipeline: &Pipeline) -> Result<Vec<HttpResponse>, Error> {
    let mut answers = Vec::new();
    for (request, idempotency) in requests() {
        answers.push(pipeline.send(request, idempotency).await?);
    }
    Ok(answers)
}

/// Records the scenario with the dev key at the recorded date; returns the file and answers.
async fn record(name: &str) -> (PathBuf, Vec<HttpResponse>) {
    let path = temp_file(name);
    let redactor = Redactor::new().with_secret(DEV_KEY);
    let recorder = Recorder::to_file(service(), &path, redactor).expect("trace file");
    let answers = run(&pipeline(Arc::new(recorder), dev_signer(), recorded_date()))
        .await
        .expect("scenario runs");
    (path, answers)
}

#[tokio::test]
async fn recorder_writes_one_redacted_json_line_per_exchange() {
    let (path, _) = record("redacted").await;
    let text = std::fs::read_to_string(&path).expect("trace written");
    let exchanges = read_recording_file(&path).expect("valid JSONL");
    assert_eq!(text.lines().count(), 4);
    assert_eq!(
        exchanges.iter().map(|e| e.seq).collect::<Vec<_>>(),
        vec![1, 2, 3, 4]
    );
    assert_eq!(
        exchanges.iter().map(|e| e.attempt).collect::<Vec<_>>(),
        vec![1, 2, 1, 1]
    );
    assert_eq!(exchanges[0].status, Some(429));
    assert_eq!(exchanges[1].method, "POST");
    assert_eq!(
        exchanges[1].url.as_str(),
        format!("{ENDPOINT}/jobs/messages?visibilitytimeout=0")
    );
    assert!(
        matches!(&exchanges[1].request_body, Body::Text(t) if t.contains("eyJydW5JZCI6InIxIn0="))
    );
    for e in &exchanges {
        assert_eq!(e.request_header("authorization"), Some("REDACTED"));
        assert!(e.request_header("x-ms-date").is_some());
        assert_eq!(e.signature_sha256.as_ref().map(String::len), Some(64));
    }
    // The key in the response body (as a connection string) is gone, and so is any signature.
    assert!(!text.contains(DEV_KEY));
    assert!(!text.contains("SharedKey devstoreaccount1:"));
    assert!(text.contains("AccountKey=REDACTED"));
    assert!(find_leaks(&text).is_empty(), "{:?}", find_leaks(&text));
    let _ = std::fs::remove_file(&path);
}

#[tokio::test]
async fn recorder_redacts_sas_sig_and_keeps_its_hash() {
    let path = temp_file("sas");
    let recorder = Recorder::to_file(service(), &path, Redactor::new()).expect("trace file");
    let signer = Arc::new(SasSigner::new(SAS).expect("token"));
    run(&pipeline(Arc::new(recorder), signer, recorded_date()))
        .await
        .expect("runs");
    let text = std::fs::read_to_string(&path).expect("trace written");
    assert!(!text.contains("Zm9vYmFyYmF6cXV4"), "{text}");
    assert!(text.contains("sig=REDACTED"));
    assert!(find_leaks(&text).is_empty());
    let exchanges = read_recording_file(&path).expect("valid JSONL");
    assert!(exchanges.iter().all(|e| e.signature_sha256.is_some()));
    // Replay with the same token verifies every signature directly.
    let replayer = Arc::new(Replayer::new(exchanges));
    let signer = Arc::new(SasSigner::new(SAS).expect("token"));
    run(&pipeline(replayer.clone(), signer, Utc::now()))
        .await
        .expect("replays");
    assert_eq!(replayer.verified_signatures(), 4);
    let _ = std::fs::remove_file(&path);
}

#[tokio::test]
async fn replay_serves_recorded_answers_and_verifies_signatures_at_the_recorded_date() {
    let (path, live) = record("replay").await;
    let replayer = Arc::new(Replayer::from_file(&path).expect("loads"));
    let replayed = run(&pipeline(replayer.clone(), dev_signer(), recorded_date()))
        .await
        .expect("replays");
    assert_eq!(
        replayed.iter().map(|r| r.status).collect::<Vec<_>>(),
        vec![201, 200, 200]
    );
    assert_eq!(
        replayed[0].header("x-ms-request-id"),
        live[0].header("x-ms-request-id")
    );
    assert_eq!(replayer.remaining(), 0);
    assert!(replayer.finish().is_ok());
    // Same key, same date (FixedClock at the recorded x-ms-date): all 4 signatures checked.
    assert_eq!(replayer.verified_signatures(), 4);
    let _ = std::fs::remove_file(&path);
}

#[tokio::test]
async fn replay_with_todays_clock_re_signs_at_the_recorded_date() {
    let (path, _) = record("resign").await;
    let replayer = Arc::new(
        Replayer::from_file(&path)
            .expect("loads")
            .verify_signatures_with(dev_signer()),
    );
    run(&pipeline(replayer.clone(), dev_signer(), Utc::now()))
        .await
        .expect("replays");
    assert_eq!(replayer.verified_signatures(), 4);

    // A different key signs differently: replay reports it as a signature divergence.
    let other_key =
        "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA==";
    let wrong = Arc::new(SharedKeySigner::new("devstoreaccount1", other_key).expect("key"));
    let replayer = Arc::new(Replayer::from_file(&path).expect("loads"));
    let err = run(&pipeline(replayer.clone(), wrong, recorded_date()))
        .await
        .expect_err("diverges");
    assert!(matches!(err, Error::InvalidInput(_)), "{err:?}");
    assert!(err.to_string().contains("signature"), "{err}");
    assert_eq!(replayer.verified_signatures(), 0);
    let _ = std::fs::remove_file(&path);
}

#[tokio::test]
async fn required_signatures_reject_unsigned_replays_and_lenient_mode_serves_them() {
    use flowcraft_azure::wire::pipeline::NoAuth;
    let (path, _) = record("required").await;
    let lenient = Arc::new(Replayer::from_file(&path).expect("loads"));
    run(&pipeline(lenient.clone(), Arc::new(NoAuth), Utc::now()))
        .await
        .expect("served");
    assert_eq!(lenient.verified_signatures(), 0);

    let strict = Arc::new(
        Replayer::from_file(&path)
            .expect("loads")
            .require_signatures(),
    );
    let err = run(&pipeline(strict.clone(), Arc::new(NoAuth), Utc::now()))
        .await
        .expect_err("refused");
    assert!(
        err.to_string().contains("was signed, this one is not"),
        "{err}"
    );
    // Signed, but for today's date and with no signer to re-sign: cannot be checked.
    let strict = Arc::new(
        Replayer::from_file(&path)
            .expect("loads")
            .require_signatures(),
    );
    let err = run(&pipeline(strict, dev_signer(), Utc::now()))
        .await
        .expect_err("refused");
    assert!(err.to_string().contains("cannot check it"), "{err}");
    let _ = std::fs::remove_file(&path);
}

#[tokio::test]
async fn changed_request_fails_with_a_readable_diff() {
    let (path, _) = record("diff").await;
    let replayer = Replayer::from_file(&path).expect("loads");
    let p = pipeline(Arc::new(replayer), dev_signer(), recorded_date());
    let mut changed = requests();
    changed[0].0.url = format!("{ENDPOINT}/jobs/messages?visibilitytimeout=10")
        .parse()
        .expect("valid URL");
    changed[0].0.set_header("x-ms-version", "2025-11-05");
    let (request, idempotency) = changed.remove(0);
    let err = p.send(request, idempotency).await.expect_err("diverges");
    let text = err.to_string();
    assert!(matches!(err, Error::InvalidInput(_)), "{err:?}");
    assert!(
        text.contains("exchange 1 (expected POST /devstoreaccount1/jobs/messages"),
        "{text}"
    );
    assert!(
        text.contains(r#"query visibilitytimeout: expected "0", sent "10""#),
        "{text}"
    );
    assert!(
        text.contains(r#"header x-ms-version: expected "2021-12-02", sent "2025-11-05""#),
        "{text}"
    );
    assert!(!text.contains(DEV_KEY));
    let _ = std::fs::remove_file(&path);
}

#[tokio::test]
async fn changed_body_and_extra_or_missing_requests_are_reported() {
    let (path, _) = record("body").await;
    let replayer = Arc::new(Replayer::from_file(&path).expect("loads"));
    let p = pipeline(replayer.clone(), dev_signer(), recorded_date());
    let (mut put, idem) = requests().remove(0);
    put.set_body(b"<QueueMessage><MessageText>other</MessageText></QueueMessage>".to_vec());
    let text = p
        .send(put, idem)
        .await
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(
        text.contains("body: expected \"<QueueMessage><MessageText>eyJ"),
        "{text}"
    );
    assert!(replayer.finish().is_err(), "nothing played yet");
    let done = run(&p).await.expect("the recorded scenario still replays");
    assert_eq!(done.len(), 3);
    let extra = p
        .send(
            HttpRequest::parse("DELETE", format!("{ENDPOINT}/jobs")).expect("valid request"),
            Idempotency::Idempotent,
        )
        .await;
    let text = extra.err().map(|e| e.to_string()).unwrap_or_default();
    assert!(
        text.contains("no more exchanges") && text.contains("DELETE /devstoreaccount1/jobs"),
        "{text}"
    );
    let _ = std::fs::remove_file(&path);
}

#[tokio::test]
async fn replay_server_answers_the_real_reqwest_transport() {
    let (path, _) = record("server").await;
    let server = ReplayServer::start(
        Replayer::from_file(&path)
            .expect("loads")
            .verify_signatures_with(dev_signer()),
    )
    .await
    .expect("server starts");
    let transport = Arc::new(ReqwestTransport::new(Duration::from_secs(10)).expect("client"));
    let p = pipeline(transport, dev_signer(), Utc::now());
    let base = format!("{}/devstoreaccount1", server.base_url());
    let mut answers = Vec::new();
    for (mut request, idempotency) in requests() {
        request.url = request
            .url
            .as_str()
            .replace(ENDPOINT, &base)
            .parse()
            .expect("valid URL");
        answers.push(p.send(request, idempotency).await.expect("an answer"));
    }
    assert_eq!(
        answers.iter().map(|r| r.status).collect::<Vec<_>>(),
        vec![201, 200, 200]
    );
    assert_eq!(
        answers[2].header("x-ms-approximate-messages-count"),
        Some("3")
    );
    assert!(String::from_utf8_lossy(&answers[1].body).contains("AccountKey=REDACTED"));
    assert_eq!(server.replayer().verified_signatures(), 4);
    assert!(server.replayer().finish().is_ok());
    // HTTP/1.1 keep-alive: four sequential requests (one retried) share one connection.
    assert_eq!(server.connections_accepted(), 1);

    // Past the end of the recording: 599 with the explanation in the body.
    let extra = p
        .send(
            HttpRequest::parse("GET", format!("{base}/jobs?comp=metadata")).expect("valid request"),
            Idempotency::NonIdempotent,
        )
        .await
        .expect("an answer");
    assert_eq!(extra.status, DIVERGENCE_STATUS);
    assert!(String::from_utf8_lossy(&extra.body).contains("no more exchanges"));
    server.shutdown().await;
    let _ = std::fs::remove_file(&path);
}

#[tokio::test]
async fn cosmos_master_key_signatures_are_verified_in_replay() {
    use flowcraft_azure::azure::auth::CosmosMasterKeySigner;
    const COSMOS_KEY: &str =
        "C2y6yDjf5/R+ob0N8A7Cgv30VRDJIWEHLM+4QDU5DE2nQ9nDuVTqobD4b8mGGyPMbIZnqyMsEcaGQy67XIw/Jw==";
    let signer = Arc::new(CosmosMasterKeySigner::new(COSMOS_KEY).expect("key"));
    let create = || {
        let mut r = HttpRequest::parse("POST", "http://127.0.0.1:18081/dbs/flow/colls/runs/docs")
            .expect("valid request");
        r.set_header("x-ms-version", "2020-07-15");
        r.set_header("x-ms-documentdb-partitionkey", r#"["r1"]"#);
        r.set_header("Content-Type", "application/json");
        r.set_body(br#"{"id":"r1","runId":"r1","status":"running"}"#.to_vec());
        r
    };
    let path = temp_file("cosmos");
    let service = Arc::new(ScriptedTransport::new(vec![Some(response(
        201,
        &[("etag", "e1")],
        r#"{"id":"r1"}"#,
    ))]));
    let redactor = Redactor::new().with_secret(COSMOS_KEY);
    let recorder = Recorder::to_file(service, &path, redactor).expect("trace file");
    pipeline(Arc::new(recorder), signer.clone(), recorded_date())
        .send(create(), Idempotency::NonIdempotent)
        .await
        .expect("recorded");
    let text = std::fs::read_to_string(&path).expect("trace written");
    assert!(
        find_leaks(&text).is_empty() && !text.contains("type%3Dmaster"),
        "{text}"
    );

    // Body key order does not matter (JSON compare); the signature is re-computed for the
    // recorded date because the replaying client runs on today's clock.
    let replayer = Arc::new(
        Replayer::from_file(&path)
            .expect("loads")
            .verify_signatures_with(signer.clone()),
    );
    let mut reordered = create();
    reordered.set_body(br#"{"status":"running","runId":"r1","id":"r1"}"#.to_vec());
    let answer = pipeline(replayer.clone(), signer, Utc::now())
        .send(reordered, Idempotency::NonIdempotent)
        .await
        .expect("replays");
    assert_eq!(answer.header("etag"), Some("e1"));
    assert_eq!(replayer.verified_signatures(), 1);
    let _ = std::fs::remove_file(&path);
}

/// A stand-in service for the concurrency tests: answers every request at once with a body
/// naming the request and a global sequence number, so each answer is unique.
#[derive(Debug, Default)]
struct EchoService {
    served: std::sync::atomic::AtomicUsize,
}

#[async_trait::async_trait]
impl Transport for EchoService {
    async fn send(&self, request: HttpRequest) -> Result<HttpResponse, Error> {
        let n = self
            .served
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let body = format!(
            "{} {} {} #{n}",
            request.method,
            request.url,
            String::from_utf8_lossy(&request.body)
        );
        response(201, &[("x-ms-request-id", &format!("req-{n}"))], &body)
    }
}

/// One task's work: its own queue, a message on it, a message on a shared queue (same path
/// for every task, different body) and a metadata read that every task sends identically.
async fn task_work(pipeline: Pipeline, task: usize) -> Result<Vec<HttpResponse>, Error> {
    let mut answers = Vec::new();
    let mut requests = Vec::new();
    requests.push(HttpRequest::parse("PUT", format!("{ENDPOINT}/q{task}")).expect("valid request"));
    for queue in [format!("q{task}"), "shared".to_string()] {
        let mut put = HttpRequest::parse("POST", format!("{ENDPOINT}/{queue}/messages"))
            .expect("valid request");
        put.set_header("Content-Type", "application/xml");
        put.set_body(format!(
            "<QueueMessage><MessageText>task {task}</MessageText></QueueMessage>"
        ));
        requests.push(put);
    }
    requests.push(
        HttpRequest::parse("GET", format!("{ENDPOINT}/shared?comp=metadata"))
            .expect("valid request"),
    );
    for mut request in requests {
        request.set_header("x-ms-version", "2021-12-02");
        answers.push(pipeline.send(request, Idempotency::NonIdempotent).await?);
        tokio::task::yield_now().await;
    }
    Ok(answers)
}

/// Runs `tasks` concurrent tasks over `pipeline`, spawned in the given order.
async fn run_tasks(pipeline: &Pipeline, order: &[usize]) -> Vec<(usize, Vec<HttpResponse>)> {
    let handles: Vec<_> = order
        .iter()
        .map(|&task| (task, tokio::spawn(task_work(pipeline.clone(), task))))
        .collect();
    let mut results = Vec::new();
    for (task, handle) in handles {
        let answers = handle.await.expect("task ran").expect("task succeeded");
        results.push((task, answers));
    }
    results.sort_by_key(|(task, _)| *task);
    results
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_tasks_replay_in_any_arrival_order() {
    const TASKS: usize = 32;
    let path = temp_file("concurrent");
    let redactor = Redactor::new().with_secret(DEV_KEY);
    let recorder =
        Recorder::to_file(Arc::new(EchoService::default()), &path, redactor).expect("trace file");
    let forward: Vec<usize> = (0..TASKS).collect();
    let live = run_tasks(
        &pipeline(Arc::new(recorder), dev_signer(), recorded_date()),
        &forward,
    )
    .await;
    assert_eq!(read_recording_file(&path).expect("valid").len(), TASKS * 4);

    // Replay twice, the tasks spawned in reverse and in an interleaved order: every request
    // finds its recorded answer whatever order the requests arrive in.
    let reverse: Vec<usize> = (0..TASKS).rev().collect();
    let interleaved: Vec<usize> = (0..TASKS).map(|i| (i * 7) % TASKS).collect();
    for order in [reverse, interleaved] {
        let replayer = Arc::new(Replayer::from_file(&path).expect("loads"));
        let replayed = run_tasks(
            &pipeline(replayer.clone(), dev_signer(), recorded_date()),
            &order,
        )
        .await;
        for ((task, want), (_, got)) in live.iter().zip(&replayed) {
            // The first three requests of a task are its own: the very same answers.
            for i in 0..3 {
                assert_eq!(got[i].body, want[i].body, "task {task} request {i}");
                assert_eq!(
                    got[i].header("x-ms-request-id"),
                    want[i].header("x-ms-request-id")
                );
            }
            // The metadata read is identical in every task: one of the recorded answers.
            assert!(
                String::from_utf8_lossy(&got[3].body).contains("/shared?comp=metadata"),
                "task {task}"
            );
        }
        assert_eq!(replayer.remaining(), 0);
        assert!(replayer.finish().is_ok());
        assert_eq!(replayer.verified_signatures(), TASKS * 4);
    }
    let _ = std::fs::remove_file(&path);
}

#[tokio::test]
async fn in_recorded_order_mode_refuses_requests_out_of_order() {
    let (path, _) = record("in-order").await;
    let mut reordered = requests();
    reordered.swap(1, 2);
    // Keyed (default): the reordered script replays.
    let keyed = Arc::new(Replayer::from_file(&path).expect("loads"));
    let p = pipeline(keyed.clone(), dev_signer(), recorded_date());
    for (request, idempotency) in reordered.clone() {
        p.send(request, idempotency).await.expect("served by key");
    }
    assert!(keyed.finish().is_ok());
    // Strict: the metadata read is not the next recorded request.
    let strict = Arc::new(
        Replayer::from_file(&path)
            .expect("loads")
            .in_recorded_order(),
    );
    let p = pipeline(strict.clone(), dev_signer(), recorded_date());
    let mut sent = reordered.into_iter();
    let (put, idem) = sent.next().expect("put");
    p.send(put, idem).await.expect("first is in order");
    let (meta, idem) = sent.next().expect("metadata read");
    let err = p.send(meta, idem).await.expect_err("out of order");
    assert!(
        err.to_string()
            .contains("exchange 3 (expected GET /devstoreaccount1/jobs/messages"),
        "{err}"
    );
    let unfinished = strict.finish().expect_err("two left");
    assert!(
        unfinished.to_string().contains("after 2 of 4"),
        "{unfinished}"
    );
    let _ = std::fs::remove_file(&path);
}

#[tokio::test]
async fn transport_failures_replay_as_the_same_error_kind_and_are_retried_alike() {
    use flowcraft_azure::ErrorInfo;
    use flowcraft_azure::wire::retry::NOT_SENT_CODE;
    let refused = Error::Transport(Box::new(
        ErrorInfo::new("could not connect").with_code(NOT_SENT_CODE),
    ));
    let slow = Error::Timeout(Box::new(ErrorInfo::new("no answer in time")));
    let service = Arc::new(ScriptedTransport::new(vec![
        Some(Err(refused)),
        Some(response(201, &[], "<QueueMessagesList/>")),
        Some(Err(slow)),
        Some(response(200, &[], "")),
    ]));
    let path = temp_file("errors");
    let recorder = Recorder::to_file(service, &path, Redactor::new()).expect("trace file");
    let (put, meta) = {
        let mut all = requests();
        let meta = all.remove(2).0;
        (all.remove(0).0, meta)
    };
    let run = |p: Pipeline| {
        let (put, meta) = (put.clone(), meta.clone());
        async move {
            // A put refused before sending is retried although it is not idempotent.
            let sent = p.send(put, Idempotency::NonIdempotent).await?;
            let read = p.send(meta, Idempotency::Idempotent).await?;
            Ok::<_, Error>((sent.status, read.status))
        }
    };
    let live = run(pipeline(Arc::new(recorder), dev_signer(), recorded_date()))
        .await
        .expect("live run retries");
    let exchanges = read_recording_file(&path).expect("valid");
    assert_eq!(exchanges.len(), 4);
    let replayer = Arc::new(Replayer::new(exchanges));
    let replayed = run(pipeline(replayer.clone(), dev_signer(), recorded_date()))
        .await
        .expect("replay retries the same way");
    assert_eq!(live, replayed);
    assert!(replayer.finish().is_ok());

    // Played directly, the recorded failures come back as the same kinds.
    let replayer = Replayer::from_file(&path)
        .expect("loads")
        .in_recorded_order();
    let mut first = requests().remove(0).0;
    first.set_header("x-ms-date", "Thu, 26 Nov 2026 21:09:10 GMT");
    let err = replayer.play(&first).await.expect_err("recorded refusal");
    assert!(matches!(err, Error::Transport(_)), "{err:?}");
    assert_eq!(err.code(), Some(NOT_SENT_CODE));
    let _ = std::fs::remove_file(&path);
}

#[tokio::test(start_paused = true)]
async fn an_attempt_the_pipeline_timed_out_is_recorded_and_replays_as_a_timeout() {
    // The first attempt never gets an answer; the pipeline's timeout cancels it.
    let service = Arc::new(ScriptedTransport::new(vec![
        None,
        Some(response(
            200,
            &[("x-ms-approximate-messages-count", "2")],
            "",
        )),
    ]));
    let path = temp_file("timeout");
    let recorder = Recorder::to_file(service, &path, Redactor::new()).expect("trace file");
    let policy = RetryPolicy {
        request_timeout: Duration::from_secs(1),
        ..quick_retries()
    };
    let meta = requests().remove(2).0;
    let live = pipeline(Arc::new(recorder), dev_signer(), recorded_date())
        .with_retry(policy.clone())
        .send(meta.clone(), Idempotency::Idempotent)
        .await
        .expect("the retry answers");
    let exchanges = read_recording_file(&path).expect("valid");
    assert_eq!(exchanges.len(), 2, "the timed-out attempt is in the trace");
    assert_eq!(exchanges[0].error_kind.as_deref(), Some("Timeout"));
    assert_eq!((exchanges[0].attempt, exchanges[1].attempt), (1, 2));
    let replayer = Arc::new(Replayer::new(exchanges));
    let replayed = pipeline(replayer.clone(), dev_signer(), recorded_date())
        .with_retry(policy)
        .send(meta, Idempotency::Idempotent)
        .await
        .expect("replayed the same way");
    assert_eq!(
        replayed.header("x-ms-approximate-messages-count"),
        Some("2")
    );
    assert_eq!(live.status, replayed.status);
    assert!(replayer.finish().is_ok());
    let _ = std::fs::remove_file(&path);
}

#[tokio::test]
async fn masked_traces_keep_shape_and_size_but_not_payloads_and_still_replay() {
    let document = r#"{"id":"run-1","runId":"secret-run","payload":{"card":"4111 1111","n":42},"_etag":"e1","_ts":1795727826}"#;
    let service = Arc::new(ScriptedTransport::new(vec![
        Some(response(
            201,
            &[],
            "<QueueMessagesList><QueueMessage><MessageId>m1</MessageId><MessageText>c2VjcmV0IGpvYg==</MessageText></QueueMessage></QueueMessagesList>",
        )),
        Some(response(200, &[], document)),
    ]));
    let path = temp_file("masked");
    let recorder = Recorder::to_file(service, &path, Redactor::new())
        .expect("trace file")
        .masking_payloads();
    let mut put =
        HttpRequest::parse("POST", format!("{ENDPOINT}/jobs/messages")).expect("valid request");
    put.set_body(
        b"<QueueMessage><MessageText>c2VjcmV0IGpvYg==</MessageText></QueueMessage>".to_vec(),
    );
    let mut upsert = HttpRequest::parse("POST", "http://127.0.0.1:18081/dbs/d/colls/c/docs")
        .expect("valid request");
    upsert.set_body(document.as_bytes().to_vec());
    let p = pipeline(Arc::new(recorder), dev_signer(), recorded_date());
    p.send(put.clone(), Idempotency::NonIdempotent)
        .await
        .expect("put");
    p.send(upsert.clone(), Idempotency::Idempotent)
        .await
        .expect("upsert");
    let text = std::fs::read_to_string(&path).expect("trace");
    for secret in ["c2VjcmV0IGpvYg==", "secret-run", "4111 1111", "\"n\":42"] {
        assert!(!text.contains(secret), "{secret} in {text}");
    }
    let exchanges = read_recording_file(&path).expect("valid");
    assert!(exchanges.iter().all(|e| e.payloads_masked));
    let Body::Text(masked_put) = &exchanges[0].request_body else {
        panic!("text body");
    };
    assert_eq!(masked_put.len(), put.body.len(), "same size");
    let Body::Text(masked_doc) = &exchanges[1].response_body else {
        panic!("text body");
    };
    let masked: serde_json::Value = serde_json::from_str(masked_doc).expect("still JSON");
    assert_eq!(masked["id"], "run-1", "ids and system properties are kept");
    assert_eq!(masked["_etag"], "e1");
    assert_eq!(
        masked["runId"].as_str().map(str::len),
        Some("secret-run".len())
    );
    assert!(masked["payload"]["card"].is_string(), "same shape");
    // Replaying the masked trace: sent bodies are masked the same way before comparing.
    let replayer = Arc::new(Replayer::new(exchanges));
    let p = pipeline(replayer.clone(), dev_signer(), recorded_date());
    p.send(put, Idempotency::NonIdempotent)
        .await
        .expect("put replays");
    p.send(upsert, Idempotency::Idempotent)
        .await
        .expect("upsert replays");
    assert!(replayer.finish().is_ok());
    let _ = std::fs::remove_file(&path);
}

#[tokio::test]
async fn declared_json_paths_are_ignored_when_matching_bodies() {
    let service = Arc::new(ScriptedTransport::new(vec![Some(response(201, &[], "{}"))]));
    let path = temp_file("json-paths");
    let recorder = Recorder::to_file(service, &path, Redactor::new()).expect("trace file");
    let body = |ts: u64, step: u64| {
        json!({"id": "r1", "lastUpdated": ts, "step": step,
               "operations": [{"op": "set", "path": "/at", "value": ts}]})
        .to_string()
        .into_bytes()
    };
    let mut live = HttpRequest::parse("POST", "http://127.0.0.1:18081/dbs/d/colls/c/docs")
        .expect("valid request");
    live.set_body(body(1_795_727_826, 1));
    pipeline(Arc::new(recorder), dev_signer(), recorded_date())
        .send(live.clone(), Idempotency::Idempotent)
        .await
        .expect("recorded");
    // Replayed later: the timestamps the client made up differ.
    let mut later = live.clone();
    later.set_body(body(1_800_000_000, 1));
    let strict = Arc::new(Replayer::from_file(&path).expect("loads"));
    let err = pipeline(strict, dev_signer(), recorded_date())
        .send(later.clone(), Idempotency::Idempotent)
        .await
        .expect_err("timestamps differ");
    assert!(err.to_string().contains("body:"), "{err}");
    let lenient = Arc::new(
        Replayer::from_file(&path)
            .expect("loads")
            .ignore_json_path("/lastUpdated")
            .ignore_json_path("/operations/*/value"),
    );
    let p = pipeline(lenient.clone(), dev_signer(), recorded_date());
    p.send(later, Idempotency::Idempotent)
        .await
        .expect("matches with the timestamps ignored");
    assert!(lenient.finish().is_ok());
    // A difference elsewhere still diverges.
    let lenient = Arc::new(
        Replayer::from_file(&path)
            .expect("loads")
            .ignore_json_path("/lastUpdated")
            .ignore_json_path("/operations/*/value"),
    );
    let mut other = live;
    other.set_body(body(1_800_000_000, 2));
    let err = pipeline(lenient, dev_signer(), recorded_date())
        .send(other, Idempotency::Idempotent)
        .await
        .expect_err("step differs");
    assert!(err.to_string().contains("body:"), "{err}");
    let _ = std::fs::remove_file(&path);
}
