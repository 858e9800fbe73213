//! Hostile input for every parser that reads bytes from the network, a file, a message or a
//! user: structured mutations of valid inputs (recorded Azurite and Cosmos answers, the
//! fixture blueprints, real job messages and connection strings) with fields dropped or
//! retyped, huge numbers, deep nesting, invalid UTF-8, truncations and repeated parts. Each
//! target asserts no panic, bounded work, and errors as values with a message, and that the
//! generator reached both accepted and refused inputs. Targets: queue XML answers, Cosmos
//! JSON answers and error bodies, spilled run state, job messages, connection strings and
//! worker settings, blueprints, both expression evaluators, replay files; plus the kept
//! regression inputs under `tests/regressions/<target>/` (see `scripts/fuzz.sh`). Case counts
//! keep each target at 5-20 s on a busy 2-core machine in a debug build; `FUZZ_CASES=N` runs
//! N cases per target (a soak). Each target prints `hostile[name]: N cases (A accepted) in S s`.

mod hostile_common;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use flowcraft_azure::Error;
use flowcraft_azure::adapter::cosmos_spill::{Entry, Manifest, SpillLimits, join, split};
use flowcraft_azure::adapter::settings::Settings;
use flowcraft_azure::azure::auth::{ConnectionOptions, CosmosConnection, StorageConnection};
use flowcraft_azure::azure::cosmos::{
    self, CosmosClient, PartitionKey, PatchOperation, PatchPath, PatchRequest, Query, QueryOptions,
};
use flowcraft_azure::azure::queue::{
    self, ListQueuesOptions, MessageCount, QueueClient, VisibilityTimeout,
};
use flowcraft_azure::distributed::job::JobMessage;
use flowcraft_azure::distributed::state::RunState;
use flowcraft_azure::flow::blueprint::{Blueprint, LoadOptions};
use flowcraft_azure::flow::expr::{EvaluatorKind, Expression};
use flowcraft_azure::flow::mermaid::to_mermaid;
use flowcraft_azure::wire::record::{Exchange, read_recording};
use flowcraft_azure::wire::replay::Replayer;
use flowcraft_azure::wire::transport::{HttpRequest, HttpResponse};
use hostile_common::*;
use proptest::prelude::*;
use proptest::test_runner::TestRunner;
use serde_json::{Map, Value, json};
use std::sync::OnceLock;

/// Asserts an error is a value that says something (not an empty message).
fn says_something(e: &Error) {
    assert!(
        !e.to_string().trim().is_empty(),
        "empty error message: {e:?}"
    );
}

fn recording(name: &str) -> Vec<Exchange> {
    let path = repo_path(&format!("fixtures/wire/{name}"));
    read_recording(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn response_bodies(name: &str) -> Vec<Vec<u8>> {
    let mut bodies: Vec<Vec<u8>> = recording(name)
        .iter()
        .filter_map(|e| e.response_body.to_bytes().ok())
        .filter(|b| !b.is_empty())
        .collect();
    bodies.sort();
    bodies.dedup();
    bodies
}

fn response_headers(name: &str) -> Vec<(String, String)> {
    let mut headers: Vec<(String, String)> = recording(name)
        .into_iter()
        .flat_map(|e| e.response_headers)
        .collect();
    headers.sort();
    headers.dedup();
    headers
}

/// Header values a hostile (or broken) service could send.
const HOSTILE_HEADER_VALUES: &[&str] = &[
    "",
    " ",
    "-1",
    "NaN",
    "inf",
    "1e309",
    "18446744073709551616",
    "99999999999999999999999",
    "0.0000001",
    "abc",
    "Thu, 01 Jan 1970 00:00:00 GMT",
    "Fri, 31 Dec 9999 23:59:59 GMT",
    "\u{7f}",
    "é",
];

const HEADER_NAMES: &[&str] = &[
    "x-ms-retry-after-ms",
    "retry-after-ms",
    "retry-after",
    "x-ms-substatus",
    "x-ms-request-charge",
    "x-ms-request-id",
    "x-ms-activity-id",
    "x-ms-error-code",
    "x-ms-continuation",
    "etag",
    "x-ms-session-token",
    "x-ms-approximate-messages-count",
    "x-ms-popreceipt",
    "x-ms-time-next-visible",
    "x-ms-item-count",
    "content-type",
];

/// Response headers: recorded ones, some with hostile values.
fn hostile_headers(
    recorded: Vec<(String, String)>,
) -> impl Strategy<Value = Vec<(String, String)>> {
    let recorded_len = recorded.len();
    prop::collection::vec(
        prop_oneof![
            (0..recorded_len).prop_map(move |i| recorded[i].clone()),
            (
                prop::sample::select(HEADER_NAMES),
                prop::sample::select(HOSTILE_HEADER_VALUES)
            )
                .prop_map(|(n, v)| (n.to_string(), v.to_string())),
        ],
        0..8,
    )
}

fn hostile_response(status: u16, headers: &[(String, String)], body: Vec<u8>) -> HttpResponse {
    HttpResponse {
        status,
        headers: headers.to_vec(),
        body,
    }
}

fn statuses() -> impl Strategy<Value = u16> {
    prop_oneof![
        4 => Just(200u16),
        1 => Just(201),
        1 => Just(204),
        2 => prop::sample::select(vec![400u16, 401, 403, 404, 409, 412, 413, 429, 449, 500, 503]),
        1 => 100u16..600,
    ]
}

fn queue_client(answer: HttpResponse) -> QueueClient {
    let transport = Canned::new(vec![answer]);
    QueueClient::builder(pipeline(transport), "http://127.0.0.1:1/acct", "jobs")
        .allow_http(true)
        .build()
        .unwrap()
}

/// Every queue operation that parses an answer, fed one hostile answer each.
fn exercise_queue(status: u16, headers: &[(String, String)], body: &[u8]) -> bool {
    let answer = || hostile_response(status, headers, body.to_vec());
    let visibility = VisibilityTimeout::from_secs(30).unwrap();
    let accepted = block_on(async {
        let results: Vec<Result<(), Error>> = vec![
            queue_client(answer())
                .get_messages(MessageCount::MAX, visibility)
                .await
                .map(|msgs| {
                    for m in msgs {
                        let _ = (m.text.len(), m.dequeue_count);
                    }
                }),
            queue_client(answer())
                .peek_messages(MessageCount::MAX)
                .await
                .map(drop),
            queue_client(answer())
                .list_queues(&ListQueuesOptions::default(), None)
                .await
                .map(drop),
            queue_client(answer()).metadata().await.map(drop),
            queue_client(answer())
                .put_message("hello", Default::default())
                .await
                .map(drop),
            queue_client(answer())
                .update_message("id", "receipt", visibility, Some("text"))
                .await
                .map(drop),
            queue_client(answer()).delete_message("id", "receipt").await,
            queue_client(answer())
                .create_if_not_exists()
                .await
                .map(drop),
        ];
        for e in results.iter().filter_map(|r| r.as_ref().err()) {
            says_something(e);
        }
        results[0].is_ok()
    });
    says_something(&queue::response_error(&answer(), "hostile"));
    accepted
}

fn queue_seeds() -> &'static Vec<Vec<u8>> {
    static SEEDS: OnceLock<Vec<Vec<u8>>> = OnceLock::new();
    SEEDS.get_or_init(|| {
        let mut seeds = response_bodies("queue.jsonl");
        // A message list with every field, an error body, and an empty list.
        seeds.push(
            b"<?xml version=\"1.0\" encoding=\"utf-8\"?><QueueMessagesList><QueueMessage>\
            <MessageId>5974b586-0df3-4e2d-ad0c-18e3892bfca2</MessageId>\
            <InsertionTime>Fri, 09 Oct 2009 21:04:30 GMT</InsertionTime>\
            <ExpirationTime>Fri, 16 Oct 2009 21:04:30 GMT</ExpirationTime>\
            <PopReceipt>YzQ4Yzg1MDItYTc0Ny00OWNjLTkxYTUtZGM0MDFiZDAwYzEw</PopReceipt>\
            <TimeNextVisible>Fri, 09 Oct 2009 23:29:20 GMT</TimeNextVisible>\
            <DequeueCount>1</DequeueCount><MessageText>eyJydW5JZCI6InIifQ==</MessageText>\
            </QueueMessage></QueueMessagesList>"
                .to_vec(),
        );
        seeds.push(
            b"<?xml version=\"1.0\" encoding=\"utf-8\"?><Error><Code>QueueNotFound</Code>\
            <Message>The specified queue does not exist.</Message></Error>"
                .to_vec(),
        );
        seeds.push(b"<QueueMessagesList/>".to_vec());
        seeds
    })
}

#[test]
fn queue_xml_answers_are_values_never_panics() {
    let figures = Figures::new("queue xml");
    let headers = response_headers("queue.jsonl");
    let strategy = (
        statuses(),
        hostile_headers(headers),
        mutated_bytes(queue_seeds().clone()),
    );
    TestRunner::new(config(3_000))
        .run(&strategy, |(status, headers, body)| {
            figures.case();
            if exercise_queue(status, &headers, &body) {
                figures.accepted();
            }
            Ok(())
        })
        .unwrap();
    figures.assert_both_sides();
    // Past the edges: a billion-laughs style entity, deep nesting, a huge dequeue count.
    for body in [
        "<!DOCTYPE x [<!ENTITY a \"aaaaaaaaaa\"><!ENTITY b \"&a;&a;&a;&a;&a;&a;&a;&a;\">]>\
         <QueueMessagesList><QueueMessage><MessageText>&b;</MessageText></QueueMessage></QueueMessagesList>"
            .to_string(),
        format!("{}{}", "<a>".repeat(100_000), "</a>".repeat(100_000)),
        "<QueueMessagesList><QueueMessage><MessageId>x</MessageId><PopReceipt>y</PopReceipt>\
         <DequeueCount>99999999999999999999</DequeueCount><MessageText>&#x0;</MessageText>\
         </QueueMessage></QueueMessagesList>"
            .to_string(),
        "<QueueMessagesList>".to_string()
            + &"<QueueMessage><MessageId>x</MessageId></QueueMessage>".repeat(5_000),
    ] {
        figures.case();
        exercise_queue(200, &[], body.as_bytes());
    }
}

fn container(answer: HttpResponse) -> cosmos::ContainerClient {
    let transport = Canned::new(vec![answer]);
    CosmosClient::builder(pipeline(transport), "http://127.0.0.1:1")
        .allow_http(true)
        .build()
        .unwrap()
        .database("db")
        .unwrap()
        .container("runs")
        .unwrap()
}

/// Every Cosmos operation that parses an answer, fed one hostile answer each.
fn exercise_cosmos(status: u16, headers: &[(String, String)], body: &[u8]) -> bool {
    let answer = || hostile_response(status, headers, body.to_vec());
    let pk = PartitionKey::from_json(json!("r1")).unwrap();
    let patch = PatchRequest::new(vec![PatchOperation::set(
        PatchPath::property("status"),
        json!("running"),
    )])
    .unwrap();
    let doc = json!({"id": "r1", "runId": "r1"});
    let accepted = block_on(async {
        let results: Vec<Result<(), Error>> = vec![
            container(answer()).read::<Value>("r1", &pk).await.map(drop),
            container(answer())
                .read::<Map<String, Value>>("r1", &pk)
                .await
                .map(drop),
            container(answer()).create(&pk, &doc).await.map(drop),
            container(answer())
                .replace("r1", &pk, &doc, Some("\"etag\""))
                .await
                .map(drop),
            container(answer())
                .patch::<Value>("r1", &pk, &patch, None)
                .await
                .map(drop),
            container(answer())
                .query_page::<Value>(
                    &Query::new("SELECT * FROM c"),
                    &QueryOptions::default(),
                    None,
                )
                .await
                .map(drop),
            container(answer()).delete("r1", &pk, None).await.map(drop),
            container(answer())
                .create_if_not_exists("/runId")
                .await
                .map(drop),
        ];
        for e in results.iter().filter_map(|r| r.as_ref().err()) {
            says_something(e);
        }
        results[0].is_ok()
    });
    says_something(&cosmos::response_error(&answer(), "hostile"));
    accepted
}

fn cosmos_seeds() -> Vec<Value> {
    let mut seeds: Vec<Value> = response_bodies("cosmos.jsonl")
        .iter()
        .filter_map(|b| serde_json::from_slice(b).ok())
        .collect();
    seeds.push(json!({"code": "Conflict", "message": "Entity with the specified id already exists in the system.\r\nActivityId: 1, Microsoft.Azure.Documents.Common/2.14.0", "additionalErrorInfo": "{}"}));
    seeds.push(json!({"code": "TooManyRequests", "message": "Request rate is large"}));
    seeds.push(
        json!({"_rid": "x", "Documents": [{"id": "r1", "_etag": "\"1\"", "_ts": 1}], "_count": 1}),
    );
    seeds.push(json!({"id": "r1", "runId": "r1", "_etag": "\"00000\"", "_ts": 1_700_000_000, "_flowcraft": {"revision": 1}}));
    seeds
}

#[test]
fn cosmos_json_answers_and_error_bodies_are_values_never_panics() {
    let figures = Figures::new("cosmos json");
    let headers = response_headers("cosmos.jsonl");
    let strategy = (
        statuses(),
        hostile_headers(headers),
        mutated_json_text(cosmos_seeds()),
    );
    TestRunner::new(config(1_000))
        .run(&strategy, |(status, headers, body)| {
            figures.case();
            if exercise_cosmos(status, &headers, &body) {
                figures.accepted();
            }
            Ok(())
        })
        .unwrap();
    figures.assert_both_sides();
    for body in [
        deep_json(100_000),
        "1".repeat(100_000),
        "\"\\ud800\"".to_string(),
    ] {
        figures.case();
        exercise_cosmos(200, &[], body.as_bytes());
        exercise_cosmos(409, &[], body.as_bytes());
    }
}

fn job_seeds() -> Vec<Value> {
    vec![
        json!({"runId": "r1", "blueprintId": "bp", "nodeId": "a"}),
        json!({"runId": "r1", "blueprintId": "bp", "nodeId": "a", "attempt": 2, "activation": 3,
            "kind": "wake", "remainingMs": 1000, "resumeSeq": 1, "isLastAttempt": false}),
        json!({"runId": "r1", "blueprintId": "bp", "nodeId": "a", "kind": "resume", "resumeSeq": 7}),
    ]
}

/// Decodes one message text; true when it is a job.
fn job_case(text: &str) -> bool {
    let _ = JobMessage::sniff_run_id(text);
    match JobMessage::decode(text) {
        Ok(job) => {
            assert!(!job.run_id.is_empty() && !job.blueprint_id.is_empty());
            assert!(job.attempt() >= 1);
            // What decodes re-encodes and decodes to the same job.
            // (`isLastAttempt` is TypeScript's flag: read, never written.)
            let again = JobMessage::decode(&job.encode().unwrap()).unwrap();
            let mut expected = job.clone();
            expected.is_last_attempt = None;
            assert_eq!(again, expected);
            true
        }
        Err(e) => {
            assert!(matches!(e, Error::InvalidInput(_)), "{e:?}");
            says_something(&e);
            false
        }
    }
}

#[test]
fn job_messages_raw_and_base64_decode_to_a_job_or_an_invalid_input_error() {
    let figures = Figures::new("job message");
    // Mutated JSON, then sent raw or as base64 (of possibly invalid UTF-8), or as mutated
    // base64 text.
    let strategy = (mutated_json_text(job_seeds()), 0u8..3, byte_edits());
    TestRunner::new(config(1_200))
        .run(&strategy, |(json, form, edits)| {
            figures.case();
            let text = match form {
                0 => String::from_utf8_lossy(&json).into_owned(),
                1 => STANDARD.encode(&json),
                _ => {
                    String::from_utf8_lossy(&apply_bytes(STANDARD.encode(&json).as_bytes(), &edits))
                        .into_owned()
                }
            };
            if job_case(&text) {
                figures.accepted();
            }
            Ok(())
        })
        .unwrap();
    figures.assert_both_sides();
    // A 64 KiB message of garbage, and 64 KiB of nesting, raw and as base64.
    let garbage: Vec<u8> = (0..65_536u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    for text in [
        String::from_utf8_lossy(&garbage).into_owned(),
        STANDARD.encode(&garbage),
        format!("{{\"runId\":{}", deep_json(32_000)),
        STANDARD.encode(deep_json(32_000)),
    ] {
        figures.case();
        let e = JobMessage::decode(&text).unwrap_err();
        assert!(matches!(e, Error::InvalidInput(_)), "{e:?}");
        let _ = JobMessage::sniff_run_id(&text);
    }
}

const CONNECTION_SEEDS: &[&str] = &[
    "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey=Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==;QueueEndpoint=http://127.0.0.1:11001/devstoreaccount1;",
    "UseDevelopmentStorage=true",
    "DefaultEndpointsProtocol=https;AccountName=acct;AccountKey=a2V5;EndpointSuffix=core.windows.net",
    "QueueEndpoint=https://acct.queue.core.windows.net/;SharedAccessSignature=sv=2021-12-02&ss=q&srt=sco&sp=rwdlacup&se=2030-01-01T00:00:00Z&sig=abc%2Bdef%3D",
    "AccountEndpoint=http://127.0.0.1:18081/;AccountKey=C2y6yDjf5/R+ob0N8A7Cgv30VRDJIWEHLM+4QDU5DE2nQ9nDuVTqobD4b8mGGyPMbIZnqyMsEcaGQy67XIw/Jw==;",
    "AccountEndpoint=https://acct.documents.azure.com:443/;ResourceToken=type=resource&ver=1.0&sig=abc;",
    "AccountEndpoint=https://[::1]:8081/;AccountKey=a2V5",
];

/// The settings a worker reads from the environment, with hostile values.
fn settings_from(values: &[(&'static str, String)]) -> Result<Settings, Error> {
    Settings::from_lookup(|name| {
        values
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.clone())
    })
}

const SETTING_NAMES: &[&str] = &[
    "FLOWCRAFT_CONCURRENCY",
    "FLOWCRAFT_CONTEXT_CONTAINER",
    "FLOWCRAFT_DATABASE",
    "FLOWCRAFT_MAX_DEQUEUE",
    "FLOWCRAFT_POLL_MAX_MS",
    "FLOWCRAFT_POLL_MIN_MS",
    "FLOWCRAFT_QUEUE",
    "FLOWCRAFT_RECONCILER",
    "FLOWCRAFT_STALLED_AFTER_SECS",
    "FLOWCRAFT_STATUS_CONTAINER",
    "FLOWCRAFT_VISIBILITY_SECS",
    "REDIS_URL",
];

/// Parses one connection string (as both kinds, and as the worker settings with `extra`
/// variables); true when it is a valid Storage or Cosmos connection string.
fn connection_case(text: &str, allow_http: bool, extra: &[(&'static str, &str)]) -> bool {
    let options = ConnectionOptions { allow_http };
    let mut accepted = false;
    match StorageConnection::parse_with(text, options) {
        Ok(c) => {
            accepted = true;
            assert!(
                c.queue_endpoint.starts_with("http"),
                "{:?}",
                c.queue_endpoint
            );
            let _ = (c.redactor(), c.signer(), format!("{c:?}"));
        }
        Err(e) => says_something(&e),
    }
    match CosmosConnection::parse_with(text, options) {
        Ok(c) => {
            accepted = true;
            assert!(c.endpoint.starts_with("http"), "{:?}", c.endpoint);
            let _ = (c.redactor(), c.signer(), format!("{c:?}"));
        }
        Err(e) => says_something(&e),
    }
    let mut values: Vec<(&'static str, String)> = vec![
        ("AZURE_STORAGE_CONNECTION_STRING", text.to_string()),
        ("COSMOS_CONNECTION_STRING", text.to_string()),
    ];
    values.extend(extra.iter().map(|(n, v)| (*n, v.to_string())));
    match settings_from(&values) {
        Ok(s) => {
            let _ = (
                s.worker_config(),
                s.reconciler_config(),
                s.effective_poll_max(),
            );
        }
        Err(e) => says_something(&e),
    }
    accepted
}

#[test]
fn connection_strings_and_settings_parse_or_say_what_is_wrong() {
    let figures = Figures::new("connection strings");
    let seeds: Vec<Vec<u8>> = CONNECTION_SEEDS
        .iter()
        .map(|s| s.as_bytes().to_vec())
        .collect();
    let strategy = (
        mutated_bytes(seeds),
        any::<bool>(),
        prop::collection::vec(
            (
                prop::sample::select(SETTING_NAMES),
                prop::sample::select(HOSTILE_HEADER_VALUES),
            ),
            0..4,
        ),
    );
    TestRunner::new(config(12_000))
        .run(&strategy, |(bytes, allow_http, extra)| {
            figures.case();
            let text = String::from_utf8_lossy(&bytes).into_owned();
            if connection_case(&text, allow_http, &extra) {
                figures.accepted();
            }
            Ok(())
        })
        .unwrap();
    figures.assert_both_sides();
}

fn blueprint_seeds() -> Vec<Value> {
    let dir = repo_path("fixtures/blueprints");
    let mut seeds = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let text = std::fs::read_to_string(entry.path()).unwrap();
        seeds.push(serde_json::from_str(&text).unwrap());
    }
    seeds.sort_by_key(|v: &Value| v.to_string());
    seeds
}

fn exercise_blueprint(text: &str) -> bool {
    let mut accepted = false;
    for allow_cycles in [false, true] {
        for evaluator in [EvaluatorKind::Safe, EvaluatorKind::Property] {
            let opts = LoadOptions {
                evaluator,
                allow_cycles,
            };
            match Blueprint::from_json_with(text, &opts) {
                Ok(bp) => {
                    accepted = true;
                    for node in bp.nodes() {
                        let _ = (
                            bp.predecessors(&node.id),
                            bp.successors(&node.id),
                            bp.join_sources(&node.id),
                            bp.max_retries(&node.id),
                            bp.join_strategy(&node.id),
                            bp.outgoing(&node.id),
                        );
                    }
                    let _ = (bp.start_nodes(), bp.terminal_nodes(), bp.is_dag());
                    let _ = to_mermaid(&bp);
                }
                Err(e) => assert!(!e.to_string().trim().is_empty()),
            }
        }
    }
    accepted
}

#[test]
fn blueprints_load_and_validate_or_say_why_never_panic() {
    let figures = Figures::new("blueprint");
    TestRunner::new(config(1_000))
        .run(&mutated_json_text(blueprint_seeds()), |bytes| {
            figures.case();
            if exercise_blueprint(&String::from_utf8_lossy(&bytes)) {
                figures.accepted();
            }
            Ok(())
        })
        .unwrap();
    figures.assert_both_sides();
    // A very long chain, a node referencing itself in every role, deep nesting.
    let n = 3_000;
    let nodes: Vec<Value> = (0..n)
        .map(|i| json!({"id": format!("n{i}"), "uses": "echo"}))
        .collect();
    let edges: Vec<Value> = (1..n)
        .map(|i| json!({"source": format!("n{}", i - 1), "target": format!("n{i}")}))
        .collect();
    for text in [
        json!({"id": "long", "nodes": nodes, "edges": edges}).to_string(),
        json!({"id": "self", "nodes": [{"id": "a", "uses": "echo", "config": {"fallback": "a"}}],
            "edges": [{"source": "a", "target": "a", "condition": "a.a.a.a"}]})
        .to_string(),
        format!("{{\"id\":\"deep\",\"nodes\":{}}}", deep_json(50_000)),
    ] {
        figures.case();
        exercise_blueprint(&text);
    }
}

const EXPRESSION_SEEDS: &[&str] = &[
    "result.output",
    "!result.output",
    "result.action === 'go' && count > 3",
    "a.b[0].c != null || (x + 1) * 2 >= y / 3",
    "items.length > 0 ? items[0] : 'none'",
    "'a' + \"b\" + `c`",
    "-(-1) % 2 == 0",
    "ctx['key with space'].inner",
    "typeof a === 'string' && a in b",
];

/// A scope with nested values, large numbers and long strings.
fn expression_scope() -> Map<String, Value> {
    object(json!({
        "result": {"output": {"a": [1, 2, {"b": null}]}, "action": "go"},
        "count": 5, "a": {"b": [{"c": 1}]}, "x": 1e308, "y": -0.0,
        "items": ["x", 1, null, {"k": true}], "ctx": {"key with space": {"inner": "v"}},
        "big": u64::MAX, "s": "x".repeat(10_000),
    }))
}

/// Parses and evaluates `src` with both evaluators; true when the safe one accepts it.
fn expression_case(src: &str, scope: &Map<String, Value>) -> bool {
    let mut accepted = false;
    for kind in [EvaluatorKind::Property, EvaluatorKind::Safe] {
        match Expression::parse(kind, src) {
            Ok(e) => {
                accepted |= kind == EvaluatorKind::Safe;
                let _ = e.evaluate(scope);
            }
            Err(e) => assert!(!e.to_string().trim().is_empty()),
        }
    }
    accepted
}

#[test]
fn both_expression_evaluators_parse_and_evaluate_or_refuse_never_panic() {
    let figures = Figures::new("expressions");
    let scope = expression_scope();
    let seeds: Vec<Vec<u8>> = EXPRESSION_SEEDS
        .iter()
        .map(|s| s.as_bytes().to_vec())
        .collect();
    TestRunner::new(config(20_000))
        .run(&mutated_bytes(seeds), |bytes| {
            figures.case();
            if expression_case(&String::from_utf8_lossy(&bytes), &scope) {
                figures.accepted();
            }
            Ok(())
        })
        .unwrap();
    figures.assert_both_sides();
    // Depth and length past any sane expression.
    for src in [
        format!("{}1{}", "(".repeat(100_000), ")".repeat(100_000)),
        "!".repeat(100_000) + "a",
        "-".repeat(100_000) + "1",
        "a".to_string() + &".a".repeat(100_000),
        "a".to_string() + &"[0]".repeat(50_000),
        "1".to_string() + &" + 1".repeat(50_000),
        "s + s + s + s + s + s + s + s + s + s + s + s + s + s + s + s".repeat(64),
        "a ? ".repeat(30_000) + "1" + &" : 2".repeat(30_000),
    ] {
        figures.case();
        expression_case(&src, &scope);
    }
}

fn recording_seeds() -> Vec<Value> {
    let mut seeds = Vec::new();
    for name in ["queue.jsonl", "cosmos.jsonl"] {
        for e in recording(name).into_iter().take(6) {
            seeds.push(serde_json::to_value(e).unwrap());
        }
    }
    seeds.push(json!({"seq": 1, "method": "GET", "url": "http://h/x", "response_body": {"base64": "AAEC"}, "status": 200}));
    seeds
        .push(json!({"seq": 2, "method": "GET", "url": "http://h/x", "error": "connection reset"}));
    seeds
}

/// Reads a recording and plays every exchange back; true when the file reads.
fn replay_case(text: &str) -> bool {
    match read_recording(text) {
        Ok(exchanges) => {
            // Play every recorded exchange back: bodies that are not base64, odd methods and
            // URLs are errors, not panics.
            let replayer = Replayer::new(exchanges.clone());
            for e in &exchanges {
                // A method or URL that cannot make a request is refused as a value, too.
                let mut request = match HttpRequest::parse(&e.method, &e.url) {
                    Ok(request) => request,
                    Err(err) => {
                        says_something(&err);
                        continue;
                    }
                };
                for (name, value) in &e.request_headers {
                    request.set_header(name, value.as_str());
                }
                request.set_body(e.request_body.to_bytes().unwrap_or_default());
                if let Err(err) = block_on(replayer.play(&request)) {
                    says_something(&err);
                }
            }
            let _ = replayer.finish();
            true
        }
        Err(e) => {
            assert!(e.to_string().contains("line"), "{e}");
            false
        }
    }
}

#[test]
fn replay_files_read_to_exchanges_or_name_the_bad_line() {
    let figures = Figures::new("replay file");
    let strategy = prop::collection::vec(mutated_json_text(recording_seeds()), 1..4);
    TestRunner::new(config(500))
        .run(&strategy, |lines| {
            figures.case();
            let mut text = Vec::new();
            for line in &lines {
                text.extend_from_slice(line);
                text.push(b'\n');
            }
            let text = String::from_utf8_lossy(&text);
            if replay_case(&text) {
                figures.accepted();
            }
            Ok(())
        })
        .unwrap();
    figures.assert_both_sides();
    for text in [
        deep_json(100_000),
        "\n".repeat(100_000),
        "{}\n".repeat(10_000),
    ] {
        figures.case();
        replay_case(&text);
    }
}

/// Replays every kept regression input (`tests/regressions/<target>/*`, crashes and
/// failures found by these tests or by `scripts/fuzz.sh`) through its target.
#[test]
fn kept_regression_inputs_stay_fixed() {
    let scope = expression_scope();
    let mut replayed = 0;
    for (target, run) in [
        (
            "queue_xml",
            &(|b: &[u8]| {
                for status in [200, 404, 503] {
                    exercise_queue(status, &[], b);
                }
            }) as &dyn Fn(&[u8]),
        ),
        ("cosmos_json", &|b: &[u8]| {
            for status in [200, 409, 429] {
                exercise_cosmos(status, &[], b);
            }
        }),
        ("job_message", &|b: &[u8]| {
            job_case(&String::from_utf8_lossy(b));
        }),
        ("connection_string", &|b: &[u8]| {
            for allow_http in [false, true] {
                connection_case(&String::from_utf8_lossy(b), allow_http, &[]);
            }
        }),
        ("blueprint", &|b: &[u8]| {
            exercise_blueprint(&String::from_utf8_lossy(b));
        }),
        ("expression", &|b: &[u8]| {
            expression_case(&String::from_utf8_lossy(b), &scope);
        }),
        ("replay_file", &|b: &[u8]| {
            replay_case(&String::from_utf8_lossy(b));
        }),
    ] {
        for (name, bytes) in regression_files(&format!("tests/regressions/{target}")) {
            println!("replaying {target}/{name}");
            run(&bytes);
            replayed += 1;
        }
    }
    println!("hostile[regressions]: {replayed} kept inputs replayed");
    assert!(replayed > 0, "tests/regressions holds no inputs");
}

/// A spilled run state as stored in Cosmos: the run item's manifest and the bucket items'
/// entries, split from a real document with small limits.
fn spill_seed() -> Value {
    let mut doc = Map::new();
    doc.insert("blueprintId".into(), json!("chain"));
    doc.insert("_outputs.a".into(), json!({"rows": (0..40).map(|i| json!({"i": i, "name": format!("row {i}")})).collect::<Vec<_>>()}));
    doc.insert("blob".into(), json!("y".repeat(900)));
    doc.insert(
        "_flowcraft".into(),
        json!({"initialized": true, "seq": 2, "revision": 3,
        "outstanding": {"2:b": {"node": "b", "activation": 2}}}),
    );
    let limits = SpillLimits {
        spill_above: 500,
        expand_above: 200,
        piece_bytes: 150,
        bucket_target: 600,
        bucket_max: 3_000,
        inline_budget: 200,
        inline_entry_max: 64,
    };
    let split = split(&doc, &limits, 1).unwrap().expect("the seed spills");
    let manifest = Manifest {
        buckets: (0..split.buckets.len())
            .map(|i| Some(format!("b{i}")))
            .collect(),
        expanded: split.expanded.clone(),
    };
    json!({
        "inline": split.inline,
        "manifest": manifest.to_json(),
        "entries": split.buckets.iter().flatten().map(Entry::to_json).collect::<Vec<_>>(),
    })
}

/// Reassembles one (possibly tampered) spilled state; true when it reads as a run.
fn spill_case(stored: &Value) -> bool {
    let manifest = match Manifest::from_json(&stored["manifest"]) {
        Ok(m) => m,
        Err(e) => {
            says_something(&e);
            return false;
        }
    };
    let _ = manifest.ids().count();
    let entries: Result<Vec<Entry>, Error> = stored["entries"]
        .as_array()
        .into_iter()
        .flatten()
        .cloned()
        .map(Entry::from_json)
        .collect();
    let inline = stored["inline"].as_object().cloned().unwrap_or_default();
    let joined = entries.and_then(|entries| join(inline, &manifest.expanded, entries.iter()));
    match joined.map(|mut doc| {
        doc.insert("id".into(), json!("r1"));
        doc
    }) {
        Ok(doc) => match RunState::from_document(doc) {
            Ok(_) => true,
            Err(e) => {
                says_something(&e);
                false
            }
        },
        Err(e) => {
            says_something(&e);
            false
        }
    }
}

#[test]
fn spilled_run_state_from_cosmos_reassembles_or_says_it_is_inconsistent() {
    let figures = Figures::new("spilled run state");
    let seed = spill_seed();
    assert!(spill_case(&seed), "the untouched split reassembles");
    TestRunner::new(config(500))
        .run(&(json_edits(), json_edits()), |(a, b)| {
            figures.case();
            let mut edited = apply_json(&seed, &a);
            edited = apply_json(&edited, &b);
            if spill_case(&edited) {
                figures.accepted();
            }
            Ok(())
        })
        .unwrap();
    figures.assert_both_sides();
    // Entries that claim billions of pieces, and pieces that overlap.
    let mut huge = seed.clone();
    huge["entries"] = json!([{"p": ["blob"], "i": 0, "n": u32::MAX, "t": "\"y"},
        {"p": ["blob"], "i": 0, "n": 1, "t": "1"}, {"p": [], "v": 1}]);
    figures.case();
    assert!(!spill_case(&huge));
}
