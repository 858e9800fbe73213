//! Unit tests of the Cosmos DB client: request building, paging, session tokens and error
//! mapping, over a fake transport (no network).

use std::time::Duration;

use futures_util::StreamExt;
use proptest::prelude::*;
use serde_json::{Value, json};

use super::*;
use crate::wire::test_support::{FakeTransport, block_on, pipeline, response};
use crate::wire::transport::HttpRequest;

const ENDPOINT: &str = "http://127.0.0.1:18081";
const DOCS: &str = "http://127.0.0.1:18081/dbs/db1/colls/runs/docs";

fn container(answers: Vec<HttpResponse>) -> (ContainerClient, Arc<FakeTransport>) {
    let transport = FakeTransport::new(answers);
    let container = CosmosClient::new(pipeline(transport.clone()), ENDPOINT)
        .unwrap()
        .database("db1")
        .unwrap()
        .container("runs")
        .unwrap();
    (container, transport)
}

fn doc_answer(status: u16, body: &Value) -> HttpResponse {
    response(
        status,
        &[
            ("etag", "0c4dbebf-61de-4d45-915a-ff45bd3f11b6"),
            ("x-ms-request-charge", "2.5"),
            ("x-ms-activity-id", "act-1"),
            ("x-ms-session-token", "0:1#12"),
        ],
        &body.to_string(),
    )
}

fn only_request(transport: &FakeTransport) -> HttpRequest {
    let requests = transport.requests();
    assert_eq!(requests.len(), 1, "expected exactly one request");
    requests.into_iter().next().unwrap()
}

fn pk() -> PartitionKey {
    PartitionKey::from("r1")
}

#[tokio::test]
async fn read_sends_partition_key_and_cross_partition_headers_and_exposes_info() {
    let stored = json!({"id": "r1", "runId": "r1", "_etag": "e1"});
    let (runs, transport) = container(vec![doc_answer(200, &stored)]);
    let read = runs.read::<Value>("r1", &pk()).await.unwrap();
    let request = only_request(&transport);
    assert_eq!(request.method, "GET");
    assert_eq!(request.url.as_str(), format!("{DOCS}/r1"));
    assert_eq!(
        request.header("x-ms-documentdb-partitionkey"),
        Some(r#"["r1"]"#)
    );
    assert_eq!(
        request.header("x-ms-documentdb-query-enablecrosspartition"),
        Some("True")
    );
    assert_eq!(request.header("x-ms-version"), Some(COSMOS_API_VERSION));
    assert_eq!(read.value, stored);
    assert_eq!(read.info.status, 200);
    assert_eq!(read.info.request_charge, 2.5);
    assert_eq!(
        read.info.etag.as_deref(),
        Some("0c4dbebf-61de-4d45-915a-ff45bd3f11b6")
    );
    assert_eq!(read.info.activity_id.as_deref(), Some("act-1"));
    assert_eq!(read.info.session_token.as_deref(), Some("0:1#12"));
}

#[tokio::test]
async fn session_token_is_echoed_on_later_requests() {
    let stored = json!({"id": "r1"});
    let (runs, transport) = container(vec![doc_answer(200, &stored), doc_answer(200, &stored)]);
    runs.read::<Value>("r1", &pk()).await.unwrap();
    runs.read::<Value>("r1", &pk()).await.unwrap();
    let requests = transport.requests();
    assert_eq!(requests[0].header("x-ms-session-token"), None);
    assert_eq!(requests[1].header("x-ms-session-token"), Some("0:1#12"));
    assert_eq!(runs.session_token().as_deref(), Some("0:1#12"));
}

#[tokio::test]
async fn session_token_from_an_error_answer_is_kept_and_echoed() {
    let missing = response(
        404,
        &[
            ("x-ms-session-token", "0:1#40"),
            ("x-ms-request-charge", "1"),
        ],
        r#"{"code":"NotFound","message":"gone"}"#,
    );
    let query_page = response(
        200,
        &[("x-ms-session-token", "0:1#41")],
        r#"{"Documents":[],"_count":0}"#,
    );
    let (runs, transport) = container(vec![missing, query_page]);
    let err = runs.read::<Value>("r1", &pk()).await.unwrap_err();
    assert!(matches!(err, Error::NotFound(_)), "{err:?}");
    assert_eq!(runs.session_token().as_deref(), Some("0:1#40"));
    let page = runs
        .query_page::<Value>(
            &Query::new("SELECT * FROM c"),
            &QueryOptions::default(),
            None,
        )
        .await
        .unwrap();
    let requests = transport.requests();
    assert_eq!(requests[1].header("x-ms-session-token"), Some("0:1#40"));
    assert_eq!(page.info.session_token.as_deref(), Some("0:1#41"));
    assert_eq!(runs.session_token().as_deref(), Some("0:1#41"));
}

fn answer_with_session(token: &str) -> HttpResponse {
    response(
        200,
        &[("x-ms-session-token", token)],
        &json!({"id": "r1", "runId": "r1"}).to_string(),
    )
}

#[tokio::test]
async fn an_older_session_token_answered_later_never_replaces_a_newer_one() {
    // Two concurrent requests: the one answered last carries the older token.
    let (runs, transport) = container(vec![
        answer_with_session("0:-1#15"),
        answer_with_session("0:-1#12"),
        answer_with_session("0:-1#15"),
    ]);
    runs.read::<Value>("r1", &pk()).await.unwrap();
    runs.read::<Value>("r1", &pk()).await.unwrap();
    assert_eq!(runs.session_token().as_deref(), Some("0:-1#15"));
    runs.read::<Value>("r1", &pk()).await.unwrap();
    assert_eq!(
        transport.requests()[2].header("x-ms-session-token"),
        Some("0:-1#15")
    );
}

#[tokio::test]
async fn session_tokens_are_kept_per_partition_key_range() {
    let other = PartitionKey::from("r2");
    let (runs, transport) = container(vec![
        answer_with_session("0:1#12#3=5"),
        answer_with_session("1:1#7"),
        answer_with_session("0:1#11#3=7"),
        answer_with_session("1:1#8"),
        answer_with_session("0:1#13#3=7"),
        response(200, &[], r#"{"Documents":[],"_count":0}"#),
    ]);
    runs.read::<Value>("r1", &pk()).await.unwrap(); // pk r1 lives on range 0
    runs.read::<Value>("r2", &other).await.unwrap(); // pk r2 lives on range 1
    runs.read::<Value>("r1", &pk()).await.unwrap(); // older global LSN, newer region LSN
    runs.read::<Value>("r2", &other).await.unwrap();
    runs.read::<Value>("r1", &pk()).await.unwrap();
    runs.query_page::<Value>(
        &Query::new("SELECT * FROM c"),
        &QueryOptions::default(),
        None,
    )
    .await
    .unwrap();
    let sent: Vec<Option<String>> = transport
        .requests()
        .iter()
        .map(|r| r.header("x-ms-session-token").map(str::to_string))
        .collect();
    assert_eq!(sent[0], None);
    // A range whose token is not known yet: every token known (the SDKs do the same).
    assert_eq!(sent[1].as_deref(), Some("0:1#12#3=5"));
    // A known range gets only its own merged token.
    assert_eq!(sent[2].as_deref(), Some("0:1#12#3=5"));
    assert_eq!(sent[3].as_deref(), Some("1:1#7"));
    assert_eq!(sent[4].as_deref(), Some("0:1#12#3=7"));
    // A cross-partition query sends all ranges, comma-separated.
    assert_eq!(sent[5].as_deref(), Some("0:1#13#3=7,1:1#8"));
    assert_eq!(runs.session_token().as_deref(), Some("0:1#13#3=7,1:1#8"));
    assert_eq!(runs.session_token_for(&other).as_deref(), Some("1:1#8"));
}

#[tokio::test]
async fn a_session_token_carried_from_elsewhere_is_merged_and_sent() {
    let (runs, transport) = container(vec![answer_with_session("0:-1#9")]);
    runs.merge_session_token("0:-1#20", Some(&pk()));
    runs.merge_session_token("0:-1#18", None);
    assert_eq!(runs.session_token_for(&pk()).as_deref(), Some("0:-1#20"));
    runs.read::<Value>("r1", &pk()).await.unwrap();
    assert_eq!(
        only_request(&transport).header("x-ms-session-token"),
        Some("0:-1#20")
    );
    assert_eq!(runs.session_token().as_deref(), Some("0:-1#20"));
}

#[tokio::test]
async fn document_ids_are_encoded_in_the_url() {
    let (runs, transport) = container(vec![doc_answer(200, &json!({"id": "a b:ä"}))]);
    runs.read::<Value>("a b:ä", &pk()).await.unwrap();
    assert_eq!(
        only_request(&transport).url.as_str(),
        format!("{DOCS}/a%20b%3A%C3%A4")
    );
}

#[tokio::test]
async fn ids_with_url_characters_are_refused_before_sending() {
    let (runs, transport) = container(vec![]);
    for id in ["a/b", "a\\b", "a#b", "a?b"] {
        let err = runs.read::<Value>(id, &pk()).await.unwrap_err();
        assert!(matches!(err, Error::InvalidInput(_)), "{id}: {err:?}");
        let err = runs.create(&pk(), &json!({"id": id})).await.unwrap_err();
        assert!(matches!(err, Error::InvalidInput(_)), "{id}: {err:?}");
        assert!(runs.delete(id, &pk(), None).await.is_err());
    }
    assert!(transport.requests().is_empty());
}

#[tokio::test]
async fn dot_segment_ids_and_names_are_refused_before_sending() {
    // URL parsing drops `.` / `..` segments (also percent-encoded ones), so these would
    // address the container or database instead of a document.
    let (runs, transport) = container(vec![]);
    for id in [".", "..", "%2e%2e", "%2E.", ".%2e", "%2e", "%252e%252e"] {
        let err = runs.delete(id, &pk(), None).await.unwrap_err();
        assert!(matches!(err, Error::InvalidInput(_)), "{id}: {err:?}");
        let err = runs.read::<Value>(id, &pk()).await.unwrap_err();
        assert!(matches!(err, Error::InvalidInput(_)), "{id}: {err:?}");
        let err = runs.create(&pk(), &json!({"id": id})).await.unwrap_err();
        assert!(matches!(err, Error::InvalidInput(_)), "{id}: {err:?}");
        let client = CosmosClient::new(pipeline(transport.clone()), ENDPOINT).unwrap();
        assert!(client.database(id).is_err(), "{id}");
        assert!(
            client.database("db1").unwrap().container(id).is_err(),
            "{id}"
        );
    }
    assert!(transport.requests().is_empty());
    // Dots inside an id are fine.
    let (runs, transport) = container(vec![doc_answer(200, &json!({"id": "a..b"}))]);
    runs.read::<Value>("...", &pk()).await.unwrap();
    assert_eq!(only_request(&transport).url.as_str(), format!("{DOCS}/..."));
}

#[tokio::test]
async fn create_posts_the_document_and_returns_the_stored_one() {
    let stored = json!({"id": "r1", "runId": "r1", "n": 1, "_etag": "e1", "_ts": 1});
    let (runs, transport) = container(vec![doc_answer(201, &stored)]);
    let created = runs
        .create(&pk(), &json!({"id": "r1", "runId": "r1", "n": 1}))
        .await
        .unwrap();
    let request = only_request(&transport);
    assert_eq!(request.method, "POST");
    assert_eq!(request.url.as_str(), DOCS);
    assert_eq!(request.header("content-type"), Some("application/json"));
    assert_eq!(request.header("x-ms-documentdb-is-upsert"), None);
    let sent: Value = serde_json::from_slice(&request.body).unwrap();
    assert_eq!(sent, json!({"id": "r1", "runId": "r1", "n": 1}));
    assert_eq!(created.value, stored);
    assert_eq!(created.info.status, 201);
}

#[tokio::test]
async fn documents_must_be_objects_with_string_ids() {
    let (runs, transport) = container(vec![]);
    for bad in [
        json!([1]),
        json!({"id": 5}),
        json!({"name": "x"}),
        json!("s"),
    ] {
        let err = runs.create(&pk(), &bad).await.unwrap_err();
        assert!(matches!(err, Error::InvalidInput(_)), "{bad}");
    }
    assert!(transport.requests().is_empty());
}

#[tokio::test]
async fn documents_over_two_megabytes_are_refused_before_sending() {
    let (runs, transport) = container(vec![]);
    let big = json!({"id": "big", "blob": "x".repeat(MAX_DOCUMENT_BYTES)});
    let err = runs.upsert(&pk(), &big, None).await.unwrap_err();
    assert!(matches!(err, Error::TooLarge(_)), "{err:?}");
    assert!(transport.requests().is_empty());
}

#[tokio::test]
async fn upsert_and_replace_send_if_match() {
    let stored = json!({"id": "r1"});
    let (runs, transport) = container(vec![doc_answer(200, &stored), doc_answer(200, &stored)]);
    runs.upsert(&pk(), &stored, Some("etag-1")).await.unwrap();
    runs.replace("r1", &pk(), &stored, Some("\"quoted\""))
        .await
        .unwrap();
    let requests = transport.requests();
    assert_eq!(requests[0].method, "POST");
    assert_eq!(
        requests[0].header("x-ms-documentdb-is-upsert"),
        Some("True")
    );
    assert_eq!(requests[0].header("if-match"), Some("etag-1"));
    assert_eq!(requests[1].method, "PUT");
    assert_eq!(requests[1].url.as_str(), format!("{DOCS}/r1"));
    assert_eq!(requests[1].header("if-match"), Some("\"quoted\""));
}

#[tokio::test]
async fn replace_refuses_a_document_with_another_id() {
    let (runs, transport) = container(vec![]);
    let err = runs
        .replace("r1", &pk(), &json!({"id": "r2"}), None)
        .await
        .unwrap_err();
    assert!(matches!(err, Error::InvalidInput(_)));
    assert!(transport.requests().is_empty());
}

#[tokio::test]
async fn delete_without_etag_sends_no_if_match() {
    let (runs, transport) = container(vec![response(204, &[("x-ms-request-charge", "1")], "")]);
    let deleted = runs.delete("r1", &pk(), None).await.unwrap();
    let request = only_request(&transport);
    assert_eq!(request.method, "DELETE");
    assert_eq!(request.header("if-match"), None);
    assert_eq!(
        request.header("x-ms-documentdb-partitionkey"),
        Some(r#"["r1"]"#)
    );
    assert_eq!(deleted.info.status, 204);
    assert_eq!(deleted.info.request_charge, 1.0);
}

#[tokio::test]
async fn patch_sends_operations_condition_and_etag() {
    let stored = json!({"id": "r1", "n": 2});
    let (runs, transport) = container(vec![doc_answer(200, &stored)]);
    let patch = PatchRequest::new(vec![
        PatchOperation::set(PatchPath::property("_outputs.a/b"), json!({"x": 1})),
        PatchOperation::increment(PatchPath::property("n"), 1),
    ])
    .unwrap()
    .with_condition("from c where c.n = 1")
    .unwrap();
    let patched = runs
        .patch::<Value>("r1", &pk(), &patch, Some("e1"))
        .await
        .unwrap();
    let request = only_request(&transport);
    assert_eq!(request.method, "PATCH");
    assert_eq!(request.url.as_str(), format!("{DOCS}/r1"));
    assert_eq!(
        request.header("content-type"),
        Some("application/json_patch+json")
    );
    assert_eq!(request.header("if-match"), Some("e1"));
    let body: Value = serde_json::from_slice(&request.body).unwrap();
    assert_eq!(
        body,
        json!({
            "condition": "from c where c.n = 1",
            "operations": [
                {"op": "set", "path": "/_outputs.a~1b", "value": {"x": 1}},
                {"op": "incr", "path": "/n", "value": 1}
            ]
        })
    );
    assert_eq!(patched.value, stored);
}

fn page(ids: &[&str], continuation: Option<&str>) -> HttpResponse {
    let docs: Vec<Value> = ids.iter().map(|id| json!({"id": id})).collect();
    let mut headers = vec![("x-ms-request-charge", "3"), ("x-ms-item-count", "2")];
    if let Some(token) = continuation {
        headers.push(("x-ms-continuation", token));
    }
    response(
        200,
        &headers,
        &json!({"Documents": docs, "_count": ids.len()}).to_string(),
    )
}

#[tokio::test]
async fn query_pages_follow_continuation_tokens_verbatim() {
    let token =
        r#"{"token":"+RID:gAADAIAAAAEFAAAAAAAAAA==#RT:1#TRC:2","range":{"min":"","max":"FF"}}"#;
    let (runs, transport) = container(vec![page(&["a", "b"], Some(token)), page(&["c"], None)]);
    let query = Query::new("SELECT * FROM c WHERE c.status = @s").param("@s", "failed");
    let options = QueryOptions {
        page_size: 2,
        partition_key: None,
    };
    let all: Vec<Value> = runs.query_all(&query, &options).await.unwrap();
    assert_eq!(
        all,
        vec![json!({"id": "a"}), json!({"id": "b"}), json!({"id": "c"})]
    );
    let requests = transport.requests();
    assert_eq!(requests.len(), 2);
    for request in &requests {
        assert_eq!(request.method, "POST");
        assert_eq!(request.url.as_str(), DOCS);
        assert_eq!(
            request.header("content-type"),
            Some("application/query+json")
        );
        assert_eq!(request.header("x-ms-documentdb-isquery"), Some("True"));
        assert_eq!(
            request.header("x-ms-documentdb-query-enablecrosspartition"),
            Some("True")
        );
        assert_eq!(request.header("x-ms-max-item-count"), Some("2"));
        assert_eq!(request.header("x-ms-documentdb-partitionkey"), None);
        let body: Value = serde_json::from_slice(&request.body).unwrap();
        assert_eq!(
            body["parameters"],
            json!([{"name": "@s", "value": "failed"}])
        );
    }
    assert_eq!(requests[0].header("x-ms-continuation"), None);
    assert_eq!(requests[1].header("x-ms-continuation"), Some(token));
}

#[tokio::test]
async fn query_page_exposes_continuation_and_charge() {
    let (runs, transport) = container(vec![page(&["a"], Some("t1"))]);
    let options = QueryOptions {
        page_size: 1,
        partition_key: Some(PartitionKey::from("r1")),
    };
    let first: QueryPage<Value> = runs
        .query_page(&Query::new("SELECT * FROM c"), &options, None)
        .await
        .unwrap();
    assert_eq!(first.items.len(), 1);
    assert_eq!(first.continuation.as_deref(), Some("t1"));
    assert_eq!(first.info.request_charge, 3.0);
    assert_eq!(
        only_request(&transport).header("x-ms-documentdb-partitionkey"),
        Some(r#"["r1"]"#)
    );
}

#[tokio::test]
async fn query_items_stream_yields_items_across_pages() {
    let (runs, _) = container(vec![page(&["a"], Some("t1")), page(&["b"], None)]);
    let ids: Vec<String> = runs
        .query_items::<Value>(Query::new("SELECT c.id FROM c"), QueryOptions::default())
        .map(|item| item.unwrap()["id"].as_str().unwrap_or_default().to_string())
        .collect()
        .await;
    assert_eq!(ids, ["a", "b"]);
}

#[tokio::test]
async fn repeated_continuation_token_stops_with_an_error() {
    let (runs, transport) = container(vec![page(&["a"], Some("t1")), page(&["a"], Some("t1"))]);
    let err = runs
        .query_all::<Value>(&Query::new("SELECT * FROM c"), &QueryOptions::default())
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Unexpected(_)));
    assert_eq!(transport.requests().len(), 2);
}

#[tokio::test]
async fn continuation_tokens_going_round_in_a_cycle_stop_with_an_error() {
    let (runs, transport) = container(vec![
        page(&["a"], Some("t1")),
        page(&["b"], Some("t2")),
        page(&["c"], Some("t1")),
        page(&["d"], None),
    ]);
    let err = runs
        .query_all::<Value>(&Query::new("SELECT * FROM c"), &QueryOptions::default())
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Unexpected(_)), "{err:?}");
    assert_eq!(transport.requests().len(), 3);
}

#[tokio::test]
async fn invalid_queries_are_refused_before_sending() {
    let (runs, transport) = container(vec![]);
    let bad_param = Query::new("SELECT * FROM c").param("s", 1);
    assert!(
        runs.query_page::<Value>(&bad_param, &QueryOptions::default(), None)
            .await
            .is_err()
    );
    let zero = QueryOptions {
        page_size: 0,
        partition_key: None,
    };
    assert!(
        runs.query_page::<Value>(&Query::new("SELECT 1"), &zero, None)
            .await
            .is_err()
    );
    assert!(transport.requests().is_empty());
}

#[tokio::test]
async fn create_if_not_exists_treats_conflict_as_existing() {
    let transport = FakeTransport::new(vec![
        response(201, &[("x-ms-request-charge", "4.5")], r#"{"id":"db1"}"#),
        response(
            409,
            &[("x-ms-request-charge", "1.25")],
            r#"{"message":"conflict"}"#,
        ),
        response(201, &[], r#"{"id":"runs"}"#),
        response(409, &[], r#"{"code":"Conflict"}"#),
        response(500, &[], ""),
    ]);
    let db = CosmosClient::new(pipeline(transport.clone()), ENDPOINT)
        .unwrap()
        .database("db1")
        .unwrap();
    let created = db.create_if_not_exists().await.unwrap();
    assert!(created.value);
    assert_eq!(created.info.request_charge, 4.5);
    let existing = db.create_if_not_exists().await.unwrap();
    assert!(!existing.value);
    assert_eq!(
        (existing.info.status, existing.info.request_charge),
        (409, 1.25)
    );
    let runs = db.container("runs").unwrap();
    assert!(runs.create_if_not_exists("/runId").await.unwrap().value);
    assert!(!runs.create_if_not_exists("/runId").await.unwrap().value);
    assert!(matches!(
        runs.create_if_not_exists("/runId").await,
        Err(Error::Unexpected(_))
    ));
    assert!(runs.create_if_not_exists("runId").await.is_err());
    let requests = transport.requests();
    assert_eq!(requests.len(), 5);
    assert_eq!(requests[0].url.as_str(), format!("{ENDPOINT}/dbs"));
    assert_eq!(
        serde_json::from_slice::<Value>(&requests[0].body).unwrap(),
        json!({"id": "db1"})
    );
    assert_eq!(
        requests[2].url.as_str(),
        format!("{ENDPOINT}/dbs/db1/colls")
    );
    let container_body: Value = serde_json::from_slice(&requests[2].body).unwrap();
    assert_eq!(container_body["id"], "runs");
    assert_eq!(container_body["partitionKey"]["paths"], json!(["/runId"]));
    assert_eq!(container_body["partitionKey"]["kind"], "Hash");
}

async fn error_for(resp: HttpResponse) -> Error {
    let (runs, _) = container(vec![resp]);
    runs.read::<Value>("r1", &pk()).await.unwrap_err()
}

#[tokio::test]
async fn errors_are_decided_by_status_not_body() {
    type Case = (u16, &'static str, fn(&Error) -> bool);
    let cases: Vec<Case> = vec![
        (404, r#"{"message":""}"#, |e| {
            matches!(e, Error::NotFound(_))
        }),
        (
            404,
            r#"{"code":"NotFound","message":"Entity with the specified id does not exist in the system.,"}"#,
            |e| matches!(e, Error::NotFound(_)),
        ),
        (
            409,
            r#"{"code":"Conflict","message":"Resource with specified id already exists."}"#,
            |e| matches!(e, Error::Conflict(_)),
        ),
        (412, r#"{"code":"PreconditionFailed"}"#, |e| {
            matches!(e, Error::PreconditionFailed(_))
        }),
        (413, "", |e| matches!(e, Error::TooLarge(_))),
        (401, "", |e| matches!(e, Error::Auth(_))),
        (403, "not json", |e| matches!(e, Error::Auth(_))),
        (
            400,
            r#"{"code":"BadRequest","message":"line one\r\nActivityId: x"}"#,
            |e| matches!(e, Error::InvalidInput(_)),
        ),
        (
            500,
            r#"{"message":"Cannot read properties of undefined (reading 'id')"}"#,
            |e| matches!(e, Error::Unexpected(_)),
        ),
    ];
    for (status, body, is_expected) in cases {
        let err = error_for(response(status, &[("x-ms-activity-id", "act-9")], body)).await;
        assert!(is_expected(&err), "{status} {body}: {err:?}");
        assert_eq!(err.status(), Some(status));
        assert_eq!(err.info().activity_id.as_deref(), Some("act-9"));
        assert_eq!(
            err.info().operation.as_deref(),
            Some("cosmos read document")
        );
    }
    let bad_request = error_for(response(
        400,
        &[],
        r#"{"code":"BadRequest","message":"line one\r\nActivityId: x"}"#,
    ))
    .await;
    assert_eq!(bad_request.code(), Some("BadRequest"));
    assert_eq!(bad_request.info().message, "line one");
}

#[tokio::test]
async fn throttling_carries_retry_after_ms() {
    let err = error_for(response(429, &[("x-ms-retry-after-ms", "1500")], "{}")).await;
    let Error::Throttled { retry_after, .. } = &err else {
        panic!("expected throttled, got {err:?}");
    };
    assert_eq!(*retry_after, Some(Duration::from_millis(1500)));
}

#[tokio::test]
async fn a_cosmos_503_is_unavailable_not_throttled() {
    let err = error_for(response(
        503,
        &[("x-ms-retry-after-ms", "100"), ("x-ms-substatus", "0")],
        r#"{"code":"ServiceUnavailable","message":"Service is currently unavailable."}"#,
    ))
    .await;
    assert!(!matches!(err, Error::Throttled { .. }), "{err:?}");
    assert_eq!(err.status(), Some(503));
    assert!(err.info().is_transient_answer());
}

#[tokio::test]
async fn a_query_that_needs_a_query_plan_is_recognisable() {
    let (runs, _) = container(vec![response(
        400,
        &[("x-ms-substatus", "1004")],
        r#"{"code":"BadRequest","message":"The provided cross partition query can not be directly served by the gateway."}"#,
    )]);
    let err = runs
        .query_page::<Value>(
            &Query::new("SELECT * FROM c ORDER BY c.ts"),
            &QueryOptions::default(),
            None,
        )
        .await
        .unwrap_err();
    assert!(matches!(err, Error::InvalidInput(_)), "{err:?}");
    assert!(err.info().needs_query_plan());
    assert!(err.to_string().contains("query plan"), "{err}");
}

#[tokio::test(start_paused = true)]
async fn read_session_not_available_and_retry_with_are_retried() {
    let stored = json!({"id": "r1"});
    let transport = FakeTransport::new(vec![
        response(404, &[("x-ms-substatus", "1002")], r#"{"code":"NotFound"}"#),
        response(449, &[], r#"{"code":"RetryWith"}"#),
        doc_answer(200, &stored),
    ]);
    let runs = CosmosClient::new(
        Pipeline::new(transport.clone(), Arc::new(crate::wire::pipeline::NoAuth)).with_seed(1),
        ENDPOINT,
    )
    .unwrap()
    .database("db1")
    .unwrap()
    .container("runs")
    .unwrap();
    let read = runs.read::<Value>("r1", &pk()).await.unwrap();
    assert_eq!(read.value, stored);
    assert_eq!(transport.requests().len(), 3);
}

#[tokio::test]
async fn unparseable_success_bodies_are_unexpected() {
    let (runs, _) = container(vec![response(200, &[], "{not json")]);
    let err = runs.read::<Value>("r1", &pk()).await.unwrap_err();
    assert!(matches!(err, Error::Unexpected(_)));
    let (runs, _) = container(vec![response(200, &[], r#"{"Documents": 5}"#)]);
    let err = runs
        .query_page::<Value>(&Query::new("SELECT 1"), &QueryOptions::default(), None)
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Unexpected(_)));
}

#[test]
fn names_and_endpoints_are_checked_at_construction() {
    let transport = FakeTransport::new(vec![]);
    assert!(CosmosClient::new(pipeline(transport.clone()), "http://cosmos.example.com").is_err());
    assert!(
        CosmosClient::builder(pipeline(transport.clone()), "http://cosmos:8081")
            .allow_http(true)
            .build()
            .is_ok()
    );
    let client = CosmosClient::new(pipeline(transport), ENDPOINT).unwrap();
    assert!(client.database("a/b").is_err());
    assert!(client.database("").is_err());
    assert!(client.database("db").unwrap().container("c#1").is_err());
}

proptest! {
    #[test]
    fn arbitrary_answers_never_panic(status in prop_oneof![Just(200u16), Just(201), 400u16..600], body in ".{0,200}") {
        let (runs, _) = container(vec![response(status, &[("x-ms-request-charge", "NaN")], &body)]);
        let _ = block_on(runs.read::<Value>("r1", &pk()));
        let (runs, _) = container(vec![response(status, &[], &body)]);
        let _ = block_on(runs.query_page::<Value>(&Query::new("SELECT 1"), &QueryOptions::default(), None));
    }
}

#[tokio::test]
async fn an_unreadable_answer_keeps_the_json_error_as_its_source() {
    use std::error::Error as _;
    let (runs, _) = container(vec![response(200, &[], "{\"id\": ")]);
    let err = runs.read::<Value>("r1", &pk()).await.unwrap_err();
    assert!(matches!(err, Error::Unexpected(_)), "{err:?}");
    let json = err
        .source()
        .and_then(|e| e.downcast_ref::<serde_json::Error>())
        .expect("the serde_json error is the source");
    assert!(json.is_eof(), "{json}");
    let text = err.to_string();
    assert!(
        text.contains("could not parse the response: document"),
        "{text}"
    );
    assert!(text.contains(&json.to_string()), "{text}");
}
