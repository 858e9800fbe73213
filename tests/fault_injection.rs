//! Fault injection: a small HTTP proxy on 127.0.0.1 in front of Azurite and the Cosmos
//! emulator answers every other request with a fault (429 / 503 with retry-after headers, or a
//! dropped connection before or after forwarding) and forwards the rest. The clients must
//! recover through the pipeline's retries and return correct results; the proxy counts the
//! injected faults and forwarded requests so the test can check that both happened.
//! Switched on by `FLOWCRAFT_EMULATORS=1`.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use flowcraft_azure::azure::cosmos::{
    CosmosClient, PartitionKey, PatchOperation, PatchPath, PatchRequest, Query, QueryOptions,
};
use flowcraft_azure::azure::queue::{MessageCount, QueueClient, VisibilityTimeout};
use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use support::{emulators_enabled, peek_all, put, receive, unique};
use tokio::net::TcpListener;

/// How safe it is to see a request twice.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Safety {
    /// Repeating it gives the same answer (reads, clear, create-if-not-exists).
    Repeatable,
    /// Retried by the client, but only safe if the first attempt never reached the service.
    Idempotent,
    /// Not retried after an ambiguous failure (put, get-messages, create, patch).
    NonIdempotent,
}

/// What the proxy does with one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Action {
    Forward,
    Throttle429,
    Busy503,
    DropBeforeForwarding,
    DropAfterForwarding,
}

/// Counts what the proxy did.
#[derive(Debug, Default)]
struct Counters {
    received: AtomicUsize,
    forwarded: AtomicUsize,
    throttled_429: AtomicUsize,
    busy_503: AtomicUsize,
    dropped_before: AtomicUsize,
    dropped_after: AtomicUsize,
}

impl Counters {
    fn get(counter: &AtomicUsize) -> usize {
        counter.load(Ordering::SeqCst)
    }

    fn injected(&self) -> usize {
        Self::get(&self.throttled_429)
            + Self::get(&self.busy_503)
            + Self::get(&self.dropped_before)
            + Self::get(&self.dropped_after)
    }

    /// Checks that each of `operations` client operations met exactly one fault and was
    /// retried once, that each reached the emulator once (plus the answers dropped after
    /// forwarding), and that every kind of fault occurred.
    fn check_one_fault_and_one_retry_each(&self, operations: usize) {
        assert_eq!(self.injected(), operations, "one fault per operation");
        assert_eq!(
            Self::get(&self.received),
            2 * operations,
            "one retry per fault"
        );
        assert_eq!(
            Self::get(&self.forwarded),
            operations + Self::get(&self.dropped_after),
            "every operation reached the emulator once, plus the answers dropped after forwarding"
        );
        for (kind, counter) in [
            ("429", &self.throttled_429),
            ("503", &self.busy_503),
            ("drop before", &self.dropped_before),
            ("drop after", &self.dropped_after),
        ] {
            assert!(Self::get(counter) > 0, "no {kind} fault was injected");
        }
    }
}

struct FaultProxy {
    /// `http://127.0.0.1:<port>` plus the upstream's path prefix.
    base_url: String,
    counters: Arc<Counters>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The fault for the n-th (0-based) faulted request of this safety class.
fn fault_for(safety: Safety, n: usize) -> Action {
    match safety {
        Safety::Repeatable => [
            Action::DropAfterForwarding,
            Action::Throttle429,
            Action::DropBeforeForwarding,
            Action::Busy503,
        ][n % 4],
        Safety::Idempotent => [Action::DropBeforeForwarding, Action::Busy503][n % 2],
        Safety::NonIdempotent => [Action::Throttle429, Action::Busy503][n % 2],
    }
}

/// Starts a proxy to `upstream` (scheme://host:port) that faults every odd-numbered request
/// (1st, 3rd, ...) and forwards the others. With sequential operations each operation's first
/// attempt is faulted and its retry is forwarded.
async fn start_proxy(
    upstream: &str,
    path_prefix: &str,
    classify: fn(&Request<Incoming>) -> Safety,
) -> FaultProxy {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
    let port = listener.local_addr().expect("proxy address").port();
    let counters = Arc::new(Counters::default());
    let upstream = upstream.trim_end_matches('/').to_string();
    let client = reqwest::Client::new();
    let task_counters = counters.clone();
    let task = tokio::spawn(async move {
        let faulted_per_class = Arc::new([
            AtomicUsize::new(0),
            AtomicUsize::new(0),
            AtomicUsize::new(0),
        ]);
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let (counters, upstream, client, faulted) = (
                task_counters.clone(),
                upstream.clone(),
                client.clone(),
                faulted_per_class.clone(),
            );
            tokio::spawn(async move {
                let service = service_fn(move |request: Request<Incoming>| {
                    let (counters, upstream, client, faulted) = (
                        counters.clone(),
                        upstream.clone(),
                        client.clone(),
                        faulted.clone(),
                    );
                    async move {
                        let index = counters.received.fetch_add(1, Ordering::SeqCst);
                        let safety = classify(&request);
                        let action = if index % 2 == 0 {
                            let slot = safety as usize;
                            fault_for(safety, faulted[slot].fetch_add(1, Ordering::SeqCst))
                        } else {
                            Action::Forward
                        };
                        handle(request, action, &upstream, &client, &counters).await
                    }
                });
                // A dropped request makes the service fail, which closes the connection
                // without an answer; that error is the point, so it is ignored here.
                let _ = http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    FaultProxy {
        base_url: format!("http://127.0.0.1:{port}{path_prefix}"),
        counters,
        task,
    }
}

async fn handle(
    request: Request<Incoming>,
    action: Action,
    upstream: &str,
    client: &reqwest::Client,
    counters: &Counters,
) -> Result<Response<Full<Bytes>>, std::io::Error> {
    let dropped = || std::io::Error::new(std::io::ErrorKind::ConnectionAborted, "injected drop");
    match action {
        Action::Throttle429 => {
            counters.throttled_429.fetch_add(1, Ordering::SeqCst);
            return Ok(canned(
                429,
                &[("x-ms-retry-after-ms", "15"), ("retry-after-ms", "15")],
            ));
        }
        Action::Busy503 => {
            counters.busy_503.fetch_add(1, Ordering::SeqCst);
            return Ok(canned(
                503,
                &[("retry-after", "0"), ("x-ms-error-code", "ServerBusy")],
            ));
        }
        Action::DropBeforeForwarding => {
            counters.dropped_before.fetch_add(1, Ordering::SeqCst);
            return Err(dropped());
        }
        Action::Forward | Action::DropAfterForwarding => {}
    }
    let (parts, body) = request.into_parts();
    let body = body.collect().await.map_err(|_| dropped())?.to_bytes();
    let path = parts
        .uri
        .path_and_query()
        .map(|p| p.as_str())
        .unwrap_or("/");
    let mut forward = client.request(parts.method.clone(), format!("{upstream}{path}"));
    for (name, value) in &parts.headers {
        if name != hyper::header::HOST && name != hyper::header::CONTENT_LENGTH {
            forward = forward.header(name, value);
        }
    }
    let answer = forward.body(body).send().await.map_err(|_| dropped())?;
    counters.forwarded.fetch_add(1, Ordering::SeqCst);
    if action == Action::DropAfterForwarding {
        counters.dropped_after.fetch_add(1, Ordering::SeqCst);
        return Err(dropped());
    }
    let mut response = Response::builder().status(answer.status());
    for (name, value) in answer.headers() {
        if name != hyper::header::TRANSFER_ENCODING
            && name != hyper::header::CONNECTION
            && name != hyper::header::CONTENT_LENGTH
        {
            response = response.header(name, value);
        }
    }
    let bytes = answer.bytes().await.map_err(|_| dropped())?;
    response.body(Full::new(bytes)).map_err(|_| dropped())
}

fn canned(status: u16, headers: &[(&str, &str)]) -> Response<Full<Bytes>> {
    let mut response = Response::builder().status(status);
    for (name, value) in headers {
        response = response.header(*name, *value);
    }
    response
        .body(Full::new(Bytes::new()))
        .unwrap_or_else(|_| Response::new(Full::new(Bytes::new())))
}

fn query_has(request: &Request<Incoming>, key: &str) -> bool {
    request
        .uri()
        .query()
        .is_some_and(|q| q.split('&').any(|pair| pair.split('=').next() == Some(key)))
}

fn classify_queue(request: &Request<Incoming>) -> Safety {
    let method = request.method().as_str();
    match method {
        "POST" => Safety::NonIdempotent,
        "GET" if query_has(request, "numofmessages") && !query_has(request, "peekonly") => {
            Safety::NonIdempotent
        }
        "PUT" if query_has(request, "popreceipt") => Safety::NonIdempotent,
        "DELETE" if query_has(request, "popreceipt") => Safety::Idempotent,
        "DELETE" if !request.uri().path().ends_with("/messages") => Safety::Idempotent,
        _ => Safety::Repeatable,
    }
}

fn classify_cosmos(request: &Request<Incoming>) -> Safety {
    let is_query = request
        .headers()
        .get("x-ms-documentdb-isquery")
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"true"));
    let path = request.uri().path();
    match request.method().as_str() {
        "GET" => Safety::Repeatable,
        "POST" if is_query => Safety::Repeatable,
        // create-if-not-exists of a database or container: a repeat answers 409 = exists.
        "POST" if path.ends_with("/dbs") || path.ends_with("/colls") => Safety::Repeatable,
        "POST" | "PATCH" => Safety::NonIdempotent,
        _ => Safety::Idempotent,
    }
}

#[tokio::test]
async fn queue_client_recovers_from_throttling_and_dropped_connections() {
    if !emulators_enabled("queue_client_recovers_from_throttling_and_dropped_connections") {
        return;
    }
    support::require_reachable("Azurite (queue)", &support::queue_endpoint());
    let endpoint = support::queue_endpoint();
    let (origin, prefix) = split_origin(&endpoint);
    let proxy = start_proxy(&origin, &prefix, classify_queue).await;
    let pipeline = support::storage_pipeline_with(support::transport(), &support::storage_key());
    let queue = QueueClient::new(pipeline, &proxy.base_url, &unique("faults")).unwrap();
    let visibility = VisibilityTimeout::from_secs(30).unwrap();

    let mut operations = 0;
    queue.create_if_not_exists().await.unwrap();
    operations += 1;
    for i in 0..5 {
        put(&queue, &format!("job-{i}")).await;
        operations += 1;
    }
    assert_eq!(queue.metadata().await.unwrap().approximate_message_count, 5);
    operations += 1;
    let mut texts: Vec<String> = peek_all(&queue).await.into_iter().map(|m| m.text).collect();
    operations += 1;
    texts.sort();
    assert_eq!(texts, ["job-0", "job-1", "job-2", "job-3", "job-4"]);
    let taken = receive(&queue, MessageCount::MAX, visibility).await;
    operations += 1;
    assert_eq!(taken.len(), 5, "every message delivered exactly once");
    let renewed = queue
        .update_message(&taken[0].id, &taken[0].pop_receipt, visibility, None)
        .await
        .unwrap();
    operations += 1;
    queue
        .delete_message(&taken[0].id, &renewed.pop_receipt)
        .await
        .unwrap();
    operations += 1;
    for msg in &taken[1..] {
        queue
            .delete_message(&msg.id, &msg.pop_receipt)
            .await
            .unwrap();
        operations += 1;
    }
    queue.clear().await.unwrap();
    operations += 1;
    assert_eq!(queue.metadata().await.unwrap().approximate_message_count, 0);
    operations += 1;

    proxy
        .counters
        .check_one_fault_and_one_retry_each(operations);
    queue.delete().await.unwrap();
}

#[tokio::test]
async fn cosmos_client_recovers_from_throttling_and_dropped_connections() {
    if !emulators_enabled("cosmos_client_recovers_from_throttling_and_dropped_connections") {
        return;
    }
    support::require_reachable("the Cosmos emulator", &support::cosmos_endpoint());
    let proxy = start_proxy(&support::cosmos_endpoint(), "", classify_cosmos).await;
    let client = CosmosClient::new(
        support::cosmos_pipeline_with(support::transport()),
        &proxy.base_url,
    )
    .unwrap();
    let db = client.database(&unique("faults")).unwrap();
    let mut operations = 0;
    db.create_if_not_exists().await.unwrap();
    operations += 1;
    let runs = db.container("runs").unwrap();
    runs.create_if_not_exists("/runId").await.unwrap();
    operations += 1;
    for i in 0..4 {
        let id = format!("r{i}");
        runs.create(
            &PartitionKey::from(&id),
            &json!({"id": id, "runId": id, "n": 0}),
        )
        .await
        .unwrap();
        operations += 1;
    }
    let pk = PartitionKey::from("r0");
    let read = runs.read::<Value>("r0", &pk).await.unwrap();
    operations += 1;
    let patch =
        PatchRequest::new(vec![PatchOperation::increment(PatchPath::property("n"), 1)]).unwrap();
    let patched = runs
        .patch::<Value>("r0", &pk, &patch, read.info.etag.as_deref())
        .await
        .unwrap();
    operations += 1;
    assert_eq!(patched.value["n"], 1, "the patch was applied exactly once");
    let mut doc = patched.value.clone();
    doc["status"] = json!("done");
    runs.replace("r0", &pk, &doc, patched.info.etag.as_deref())
        .await
        .unwrap();
    operations += 1;
    runs.upsert(
        &PartitionKey::from("r9"),
        &json!({"id": "r9", "runId": "r9", "n": 9}),
        None,
    )
    .await
    .unwrap();
    operations += 1;
    let options = QueryOptions {
        page_size: 2,
        partition_key: None,
    };
    let mut ids: Vec<String> = runs
        .query_all::<Value>(&Query::new("SELECT c.id FROM c"), &options)
        .await
        .unwrap()
        .into_iter()
        .filter_map(|v| v["id"].as_str().map(str::to_string))
        .collect();
    operations += 3; // three pages
    ids.sort();
    assert_eq!(ids, ["r0", "r1", "r2", "r3", "r9"]);
    runs.delete("r1", &PartitionKey::from("r1"), None)
        .await
        .unwrap();
    operations += 1;
    let final_doc = runs.read::<Value>("r0", &pk).await.unwrap();
    operations += 1;
    assert_eq!(final_doc.value["n"], 1);
    assert_eq!(final_doc.value["status"], "done");

    proxy
        .counters
        .check_one_fault_and_one_retry_each(operations);
    db.delete().await.unwrap();
}

/// Splits `http://host:port/path` into (`http://host:port`, `/path`).
fn split_origin(url: &str) -> (String, String) {
    let (scheme, rest) = url.split_once("://").unwrap_or(("http", url));
    match rest.find('/') {
        Some(i) => (
            format!("{scheme}://{}", &rest[..i]),
            rest[i..].trim_end_matches('/').to_string(),
        ),
        None => (format!("{scheme}://{rest}"), String::new()),
    }
}
