//! The bodies of the libFuzzer targets (one function per parser that reads untrusted bytes),
//! kept in a library so each target is a one-liner. They use only the crate's public API and
//! panic only when the code under test misbehaves (a panic inside it, or an error without a
//! message). Crashes found here are copied to `tests/regressions/<target>/` by
//! `scripts/fuzz.sh`, where the stable test `kept_regression_inputs_stay_fixed` in
//! `tests/hostile_parsers.rs` replays them.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use flowcraft_azure::Error;
use flowcraft_azure::azure::auth::{ConnectionOptions, CosmosConnection, StorageConnection};
use flowcraft_azure::azure::cosmos::{self, CosmosClient, PartitionKey, Query, QueryOptions};
use flowcraft_azure::azure::queue::{
    self, ListQueuesOptions, MessageCount, QueueClient, VisibilityTimeout,
};
use flowcraft_azure::distributed::job::JobMessage;
use flowcraft_azure::flow::blueprint::{Blueprint, LoadOptions};
use flowcraft_azure::flow::expr::{EvaluatorKind, Expression};
use flowcraft_azure::wire::pipeline::{NoAuth, Pipeline};
use flowcraft_azure::wire::record::read_recording;
use flowcraft_azure::wire::replay::Replayer;
use flowcraft_azure::wire::retry::RetryPolicy;
use flowcraft_azure::wire::transport::{HttpRequest, HttpResponse, Transport};
use serde_json::{Map, Value, json};

/// Answers canned responses in order.
#[derive(Debug)]
struct Canned(Mutex<VecDeque<HttpResponse>>);

#[async_trait]
impl Transport for Canned {
    async fn send(&self, _request: HttpRequest) -> Result<HttpResponse, Error> {
        self.0
            .lock()
            .map_err(|_| Error::transport("poisoned"))?
            .pop_front()
            .ok_or_else(|| Error::transport("no canned answer left"))
    }
}

fn pipeline(answer: HttpResponse) -> Pipeline {
    let transport = Arc::new(Canned(Mutex::new(VecDeque::from([answer]))));
    Pipeline::new(transport, Arc::new(NoAuth)).with_retry(RetryPolicy::no_retries())
}

fn block_on<F: std::future::Future>(future: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("runtime")
        .block_on(future)
}

fn check(e: &Error) {
    assert!(
        !e.to_string().trim().is_empty(),
        "an error without a message"
    );
}

/// The first byte picks a status; the rest is the body.
fn answer(data: &[u8]) -> HttpResponse {
    const STATUSES: [u16; 8] = [200, 200, 200, 201, 404, 409, 429, 503];
    let (status, body) = match data.split_first() {
        Some((s, rest)) => (STATUSES[usize::from(*s) % STATUSES.len()], rest.to_vec()),
        None => (200, Vec::new()),
    };
    HttpResponse {
        status,
        headers: vec![("x-ms-retry-after-ms".into(), "NaN".into())],
        body,
    }
}

/// Queue Storage answers (XML) through every client operation that parses one.
pub fn queue_xml(data: &[u8]) {
    let client = || {
        QueueClient::builder(pipeline(answer(data)), "http://127.0.0.1:1/a", "jobs")
            .allow_http(true)
            .build()
            .expect("client")
    };
    let visibility = VisibilityTimeout::from_secs(30).expect("visibility");
    block_on(async {
        let results = [
            client()
                .get_messages(MessageCount::MAX, visibility)
                .await
                .map(drop),
            client().peek_messages(MessageCount::MAX).await.map(drop),
            client()
                .list_queues(&ListQueuesOptions::default(), None)
                .await
                .map(drop),
            client().metadata().await.map(drop),
            client()
                .put_message("x", Default::default())
                .await
                .map(drop),
        ];
        results
            .iter()
            .filter_map(|r| r.as_ref().err())
            .for_each(check);
    });
    check(&queue::response_error(&answer(data), "fuzz"));
}

/// Cosmos DB answers (JSON documents, query pages, error bodies).
pub fn cosmos_json(data: &[u8]) {
    let container = || {
        CosmosClient::builder(pipeline(answer(data)), "http://127.0.0.1:1")
            .allow_http(true)
            .build()
            .and_then(|c| c.database("db"))
            .and_then(|d| d.container("runs"))
            .expect("container")
    };
    let pk = PartitionKey::from_json(json!("r1")).expect("partition key");
    block_on(async {
        let results = [
            container().read::<Value>("r1", &pk).await.map(drop),
            container()
                .create(&pk, &json!({"id": "r1"}))
                .await
                .map(drop),
            container()
                .query_page::<Value>(&Query::new("SELECT 1"), &QueryOptions::default(), None)
                .await
                .map(drop),
        ];
        results
            .iter()
            .filter_map(|r| r.as_ref().err())
            .for_each(check);
    });
    check(&cosmos::response_error(&answer(data), "fuzz"));
}

/// Queue message texts: raw JSON or base64 of JSON.
pub fn job_message(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let _ = JobMessage::sniff_run_id(&text);
    match JobMessage::decode(&text) {
        Ok(job) => {
            let again = JobMessage::decode(&job.encode().expect("encode")).expect("re-decode");
            assert_eq!(again.run_id, job.run_id);
        }
        Err(e) => {
            assert!(matches!(e, Error::InvalidInput(_)), "{e:?}");
            check(&e);
        }
    }
}

/// Storage and Cosmos connection strings.
pub fn connection_string(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    for allow_http in [false, true] {
        let options = ConnectionOptions { allow_http };
        match StorageConnection::parse_with(&text, options) {
            Ok(c) => assert!(
                c.queue_endpoint.starts_with("http"),
                "{:?}",
                c.queue_endpoint
            ),
            Err(e) => check(&e),
        }
        match CosmosConnection::parse_with(&text, options) {
            Ok(c) => assert!(c.endpoint.starts_with("http"), "{:?}", c.endpoint),
            Err(e) => check(&e),
        }
    }
}

/// Blueprint JSON: load, validate, and walk the graph of what loads.
pub fn blueprint(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    for allow_cycles in [false, true] {
        let opts = LoadOptions {
            evaluator: EvaluatorKind::Safe,
            allow_cycles,
        };
        match Blueprint::from_json_with(&text, &opts) {
            Ok(bp) => {
                for node in bp.nodes() {
                    let _ = (bp.predecessors(&node.id), bp.join_sources(&node.id));
                }
                let _ = flowcraft_azure::flow::mermaid::to_mermaid(&bp);
            }
            Err(e) => assert!(!e.to_string().is_empty()),
        }
    }
}

/// Both expression evaluators, parse and evaluate against a small scope.
pub fn expression(data: &[u8]) {
    let src = String::from_utf8_lossy(data);
    let scope: Map<String, Value> = match json!({"a": {"b": [1, "x", null]}, "n": 1e308,
        "s": "text", "result": {"output": true, "action": "go"}})
    {
        Value::Object(m) => m,
        _ => Map::new(),
    };
    for kind in [EvaluatorKind::Property, EvaluatorKind::Safe] {
        if let Ok(e) = Expression::parse(kind, &src) {
            let _ = e.evaluate(&scope);
        }
    }
}

/// Recording files (JSON Lines), then every exchange played back.
pub fn replay_file(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    if let Ok(exchanges) = read_recording(&text) {
        let replayer = Replayer::new(exchanges.clone());
        for e in &exchanges {
            // A method or URL that cannot make a request is refused as a value, too.
            let mut request = match HttpRequest::parse(&e.method, &e.url) {
                Ok(request) => request,
                Err(err) => {
                    check(&err);
                    continue;
                }
            };
            for (name, value) in &e.request_headers {
                request.set_header(name, value.as_str());
            }
            if let Err(err) = block_on(replayer.play(&request)) {
                check(&err);
            }
        }
        let _ = replayer.finish();
    }
}
