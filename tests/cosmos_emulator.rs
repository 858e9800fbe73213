//! Cosmos DB client against @vercel/cosmosdb-server: databases, containers, every document
//! operation, PATCH, queries with paging, and the status-based errors. Switched on by
//! `FLOWCRAFT_EMULATORS=1` (scripts/test.sh); switched on, an unreachable emulator fails.

mod support;

use flowcraft_azure::Error;
use flowcraft_azure::azure::cosmos::{
    ContainerClient, PartitionKey, PatchOperation, PatchPath, PatchRequest, Query, QueryOptions,
};
use futures_util::TryStreamExt;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use support::{cosmos_client, emulators_enabled, unique};

/// A fresh database with one container partitioned on `/runId`.
async fn fresh_container() -> ContainerClient {
    let db = cosmos_client().database(&unique("db")).unwrap();
    assert!(db.create_if_not_exists().await.unwrap().value);
    let container = db.container("runs").unwrap();
    assert!(
        container
            .create_if_not_exists("/runId")
            .await
            .unwrap()
            .value
    );
    container
}

fn pk(run: &str) -> PartitionKey {
    PartitionKey::from(run)
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Run {
    id: String,
    run_id: String,
    status: String,
    last_updated: i64,
}

#[tokio::test]
async fn database_and_container_creation_is_idempotent() {
    if !emulators_enabled("database_and_container_creation_is_idempotent") {
        return;
    }
    let db = cosmos_client().database(&unique("db")).unwrap();
    assert!(db.create_if_not_exists().await.unwrap().value);
    assert!(!db.create_if_not_exists().await.unwrap().value);
    let container = db.container("c").unwrap();
    assert!(
        container
            .create_if_not_exists("/runId")
            .await
            .unwrap()
            .value
    );
    assert!(
        !container
            .create_if_not_exists("/runId")
            .await
            .unwrap()
            .value
    );
    container.delete_container().await.unwrap();
    db.delete().await.unwrap();
    assert!(matches!(db.delete().await, Err(Error::NotFound(_))));
}

#[tokio::test]
async fn typed_documents_create_read_replace_delete() {
    if !emulators_enabled("typed_documents_create_read_replace_delete") {
        return;
    }
    let runs = fresh_container().await;
    let run = Run {
        id: "r1".into(),
        run_id: "r1".into(),
        status: "running".into(),
        last_updated: 100,
    };
    let created = runs.create(&pk("r1"), &run).await.unwrap();
    assert_eq!(created.value, run);
    assert_eq!(created.info.status, 201);
    assert!(created.info.request_charge > 0.0);
    assert!(created.info.activity_id.is_some());
    let etag = created.info.etag.clone().expect("an etag on create");

    let read = runs.read::<Run>("r1", &pk("r1")).await.unwrap();
    assert_eq!(read.value, run);
    assert_eq!(read.info.etag.as_deref(), Some(etag.as_str()));

    let dup = runs.create(&pk("r1"), &run).await.unwrap_err();
    assert!(matches!(dup, Error::Conflict(_)), "{dup:?}");
    assert_eq!(dup.status(), Some(409));

    let done = Run {
        status: "completed".into(),
        ..run.clone()
    };
    let replaced = runs
        .replace("r1", &pk("r1"), &done, Some(&etag))
        .await
        .unwrap();
    assert_eq!(replaced.value.status, "completed");
    let new_etag = replaced.info.etag.clone().expect("a new etag");
    assert_ne!(new_etag, etag);

    let stale = runs
        .replace("r1", &pk("r1"), &run, Some(&etag))
        .await
        .unwrap_err();
    assert!(matches!(stale, Error::PreconditionFailed(_)), "{stale:?}");
    let stale_delete = runs.delete("r1", &pk("r1"), Some(&etag)).await.unwrap_err();
    assert!(
        matches!(stale_delete, Error::PreconditionFailed(_)),
        "{stale_delete:?}"
    );

    let deleted = runs.delete("r1", &pk("r1"), Some(&new_etag)).await.unwrap();
    assert_eq!(deleted.info.status, 204);
    let missing = runs.read::<Run>("r1", &pk("r1")).await.unwrap_err();
    assert!(matches!(missing, Error::NotFound(_)), "{missing:?}");
    assert!(matches!(
        runs.delete("r1", &pk("r1"), None).await,
        Err(Error::NotFound(_))
    ));
    assert!(matches!(
        runs.replace("r1", &pk("r1"), &run, None).await,
        Err(Error::NotFound(_))
    ));
}

#[tokio::test]
async fn upsert_creates_then_replaces_and_honours_if_match() {
    if !emulators_enabled("upsert_creates_then_replaces_and_honours_if_match") {
        return;
    }
    let runs = fresh_container().await;
    let first = runs
        .upsert(&pk("u1"), &json!({"id": "u1", "runId": "u1", "n": 1}), None)
        .await
        .unwrap();
    assert_eq!(first.info.status, 201);
    let etag = first.info.etag.clone().unwrap();
    let second = runs
        .upsert(
            &pk("u1"),
            &json!({"id": "u1", "runId": "u1", "n": 2}),
            Some(&etag),
        )
        .await
        .unwrap();
    assert_eq!(second.info.status, 200);
    assert_eq!(second.value["n"], 2);
    let stale = runs
        .upsert(
            &pk("u1"),
            &json!({"id": "u1", "runId": "u1", "n": 3}),
            Some(&etag),
        )
        .await
        .unwrap_err();
    assert!(matches!(stale, Error::PreconditionFailed(_)), "{stale:?}");
    let now = runs.read::<Value>("u1", &pk("u1")).await.unwrap();
    assert_eq!(now.value["n"], 2);
}

#[tokio::test]
async fn patch_applies_every_operation_kind_atomically() {
    if !emulators_enabled("patch_applies_every_operation_kind_atomically") {
        return;
    }
    let runs = fresh_container().await;
    let created = runs
        .create(
            &pk("p1"),
            &json!({"id": "p1", "runId": "p1", "status": "running", "n": 1, "b": "x", "list": [1]}),
        )
        .await
        .unwrap();
    let etag = created.info.etag.clone().unwrap();
    // (Paths starting with `/_` are refused by the emulator as system properties.)
    let patch = PatchRequest::new(vec![
        PatchOperation::set(PatchPath::property("outputs.a/b~c"), json!({"ok": true})),
        PatchOperation::add(PatchPath::from_segments(["list", "-"]), json!(2)),
        PatchOperation::replace(PatchPath::property("status"), json!("done")),
        PatchOperation::remove(PatchPath::property("b")),
        PatchOperation::increment(PatchPath::property("n"), 2),
    ])
    .unwrap();
    let patched = runs
        .patch::<Value>("p1", &pk("p1"), &patch, Some(&etag))
        .await
        .unwrap();
    let doc = &patched.value;
    assert_eq!(doc["outputs.a/b~c"], json!({"ok": true}), "{doc}");
    assert_eq!(doc["list"], json!([1, 2]));
    assert_eq!(doc["status"], "done");
    assert!(doc.get("b").is_none());
    assert_eq!(doc["n"], 3);
    assert_ne!(patched.info.etag.as_deref(), Some(etag.as_str()));

    // The same patch with the old ETag is refused and changes nothing.
    let stale = runs
        .patch::<Value>("p1", &pk("p1"), &patch, Some(&etag))
        .await
        .unwrap_err();
    assert!(matches!(stale, Error::PreconditionFailed(_)), "{stale:?}");
    let now = runs.read::<Value>("p1", &pk("p1")).await.unwrap();
    assert_eq!(now.value["n"], 3);

    let missing = runs
        .patch::<Value>("nope", &pk("nope"), &patch, None)
        .await
        .unwrap_err();
    assert!(matches!(missing, Error::NotFound(_)), "{missing:?}");
}

#[tokio::test]
async fn conditional_patch_applies_only_when_the_condition_holds() {
    if !emulators_enabled("conditional_patch_applies_only_when_the_condition_holds") {
        return;
    }
    let runs = fresh_container().await;
    runs.create(
        &pk("c1"),
        &json!({"id": "c1", "runId": "c1", "status": "running", "n": 0}),
    )
    .await
    .unwrap();
    let bump = |condition: &str| {
        PatchRequest::new(vec![PatchOperation::increment(PatchPath::property("n"), 1)])
            .unwrap()
            .with_condition(condition)
            .unwrap()
    };
    // Lower-case names and values only: the emulator lower-cases conditions (spec §4.6).
    let applied = runs
        .patch::<Value>(
            "c1",
            &pk("c1"),
            &bump("from c where c.status = 'running'"),
            None,
        )
        .await
        .unwrap();
    assert_eq!(applied.value["n"], 1);
    let refused = runs
        .patch::<Value>(
            "c1",
            &pk("c1"),
            &bump("from c where c.status = 'completed'"),
            None,
        )
        .await
        .unwrap_err();
    assert!(
        matches!(refused, Error::PreconditionFailed(_)),
        "{refused:?}"
    );
    assert_eq!(
        runs.read::<Value>("c1", &pk("c1")).await.unwrap().value["n"],
        1
    );
}

#[tokio::test]
async fn queries_page_with_continuations_and_bind_parameters() {
    if !emulators_enabled("queries_page_with_continuations_and_bind_parameters") {
        return;
    }
    let runs = fresh_container().await;
    for i in 0..5 {
        let status = if i % 2 == 0 { "failed" } else { "completed" };
        let id = format!("q{i}");
        runs.create(
            &pk(&id),
            &json!({"id": id, "runId": id, "status": status, "lastUpdated": i}),
        )
        .await
        .unwrap();
    }
    let options = QueryOptions {
        page_size: 2,
        partition_key: None,
    };
    let everything = Query::new("SELECT * FROM c");
    let mut sizes = Vec::new();
    let mut token: Option<String> = None;
    loop {
        let page = runs
            .query_page::<Value>(&everything, &options, token.as_deref())
            .await
            .unwrap();
        sizes.push(page.items.len());
        assert!(page.info.request_charge > 0.0);
        match page.continuation {
            Some(next) => token = Some(next),
            None => break,
        }
        assert!(sizes.len() < 10, "paging does not end");
    }
    assert_eq!(sizes, [2, 2, 1]);

    let reconciler = Query::new("SELECT * FROM c WHERE c.status = @status AND c.lastUpdated < @t")
        .param("@status", "failed")
        .param("@t", 4);
    let mut failed: Vec<Run> = runs.query_all(&reconciler, &options).await.unwrap();
    failed.sort_by(|a, b| a.id.cmp(&b.id));
    let ids: Vec<&str> = failed.iter().map(|r| r.id.as_str()).collect();
    assert_eq!(ids, ["q0", "q2"]);

    let streamed: Vec<Value> = runs
        .query_items(Query::new("SELECT c.id FROM c"), options.clone())
        .try_collect()
        .await
        .unwrap();
    assert_eq!(streamed.len(), 5);
}

#[tokio::test]
async fn refused_before_sending_ids_and_oversized_patches() {
    if !emulators_enabled("refused_before_sending_ids_and_oversized_patches") {
        return;
    }
    let runs = fresh_container().await;
    let slash = runs
        .create(&pk("a/b"), &json!({"id": "a/b", "runId": "a/b"}))
        .await
        .unwrap_err();
    assert!(matches!(slash, Error::InvalidInput(_)), "{slash:?}");
    assert_eq!(slash.status(), None, "refused locally");
    let eleven = (0..11)
        .map(|i| PatchOperation::set(PatchPath::property(&format!("k{i}")), json!(i)))
        .collect();
    assert!(matches!(
        PatchRequest::new(eleven),
        Err(Error::InvalidInput(_))
    ));
    let missing_container = cosmos_client()
        .database(&unique("nodb"))
        .unwrap()
        .container("none")
        .unwrap();
    let err = missing_container
        .read::<Value>("x", &pk("x"))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::NotFound(_)), "{err:?}");
}
