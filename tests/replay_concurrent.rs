//! A concurrent session recorded on the local emulator stack (`fixtures/wire/concurrent.jsonl`)
//! replays offline, in plain `cargo test`: 32 tasks do Queue Storage and Cosmos DB work at
//! once (create, put, patch with ETag, read, receive and delete a message, query, delete),
//! so their requests interleave differently on every run. The [`Replayer`] matches each
//! request by key (method, path, then the request itself), not by arrival order, and checks
//! each signature against the recorded hash.
//!
//! The ignored `record_concurrent_fixture` test records it against the emulators through the
//! wire [`Recorder`] (run it with `scripts/record-fixtures.sh`).

mod support;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use flowcraft_azure::Error;
use flowcraft_azure::azure::cosmos::{
    ContainerClient, CosmosClient, PartitionKey, PatchOperation, PatchPath, PatchRequest, Query,
    QueryOptions,
};
use flowcraft_azure::azure::queue::{MessageCount, PutOptions, QueueClient};
use flowcraft_azure::wire::pipeline::{Pipeline, Signer};
use flowcraft_azure::wire::record::Recorder;
use flowcraft_azure::wire::redact::Redactor;
use flowcraft_azure::wire::replay::Replayer;
use flowcraft_azure::wire::retry::RetryPolicy;
use flowcraft_azure::wire::transport::HttpRequest;
use serde_json::{Value, json};
use support::secs;

const FIXTURE: &str = "fixtures/wire/concurrent.jsonl";
/// The endpoints of the scripts/emulators.sh stack; the recording's URL paths depend on them.
const QUEUE_ENDPOINT: &str = "http://127.0.0.1:11001/devstoreaccount1";
const COSMOS_ENDPOINT: &str = "http://127.0.0.1:18081";
const QUEUE_NAME: &str = "fixture-concurrent";
const DATABASE: &str = "fixtureconcurrent";
const CONTAINER: &str = "runs";
const TASKS: usize = 32;

fn fixture_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(FIXTURE)
}

fn retry_policy() -> RetryPolicy {
    RetryPolicy {
        max_attempts: 2,
        base_delay: Duration::from_millis(10),
        ..RetryPolicy::default()
    }
}

/// One task: a run document created, patched under its ETag, read back, queried and
/// deleted, and one message put and one (not necessarily its own) received and deleted.
async fn task(queue: QueueClient, runs: ContainerClient, n: usize) {
    let id = format!("run-{n}");
    let pk = PartitionKey::from(id.as_str());
    let created = runs
        .create(&pk, &json!({"id": id, "runId": id, "step": 0}))
        .await
        .unwrap();
    queue
        .put_message(&format!("task {n}"), PutOptions::default())
        .await
        .unwrap();
    let etag = created.info.etag.clone().expect("an etag");
    let patch = PatchRequest::new(vec![PatchOperation::set(
        PatchPath::property("step"),
        json!(1),
    )])
    .unwrap();
    let patched: Value = runs
        .patch(&id, &pk, &patch, Some(&etag))
        .await
        .unwrap()
        .value;
    assert_eq!(patched["step"], 1);
    let read: Value = runs.read(&id, &pk).await.unwrap().value;
    assert_eq!(read["step"], 1, "{id}");
    // Each task put one message before receiving one: one is always visible.
    let received = queue
        .get_messages(MessageCount::ONE, secs(60))
        .await
        .unwrap();
    assert_eq!(received.len(), 1, "task {n}");
    assert!(
        received[0].text.starts_with("task "),
        "{}",
        received[0].text
    );
    queue
        .delete_message(&received[0].id, &received[0].pop_receipt)
        .await
        .unwrap();
    let query = Query::new("SELECT * FROM c WHERE c.runId = @run").param("@run", id.as_str());
    let options = QueryOptions {
        partition_key: Some(pk.clone()),
        ..QueryOptions::default()
    };
    let found: Vec<Value> = runs.query_all(&query, &options).await.unwrap();
    assert_eq!(found.len(), 1, "{id}");
    assert_eq!(found[0]["id"], id.as_str());
    runs.delete(&id, &pk, None).await.unwrap();
}

/// The whole session: set-up, the tasks at once, checks and clean-up.
async fn scenario(storage: Pipeline, cosmos: Pipeline) {
    let queue = QueueClient::new(storage, QUEUE_ENDPOINT, QUEUE_NAME).unwrap();
    let db = CosmosClient::new(cosmos, COSMOS_ENDPOINT)
        .unwrap()
        .database(DATABASE)
        .unwrap();
    // A clean slate: the answers depend on the emulators' state when recorded.
    let _ = queue.delete().await;
    let _ = db.delete().await;
    assert!(queue.create_if_not_exists().await.unwrap());
    assert!(db.create_if_not_exists().await.unwrap().value);
    let runs = db.container(CONTAINER).unwrap();
    assert!(runs.create_if_not_exists("/runId").await.unwrap().value);
    let handles: Vec<_> = (0..TASKS)
        .map(|n| tokio::spawn(task(queue.clone(), runs.clone(), n)))
        .collect();
    for handle in handles {
        handle.await.expect("task finished");
    }
    assert_eq!(queue.metadata().await.unwrap().approximate_message_count, 0);
    queue.delete().await.unwrap();
    db.delete().await.unwrap();
}

/// Re-signs a replayed request with the signer of the service it is for (the recording holds
/// both), told apart by the Cosmos endpoint.
#[derive(Debug)]
struct ByService {
    storage: Arc<dyn Signer>,
    cosmos: Arc<dyn Signer>,
}

impl Default for ByService {
    fn default() -> Self {
        ByService {
            storage: storage_signer(),
            cosmos: cosmos_signer(),
        }
    }
}

#[async_trait::async_trait]
impl Signer for ByService {
    async fn sign(&self, request: &mut HttpRequest, now: DateTime<Utc>) -> Result<(), Error> {
        if request.url.as_str().starts_with(COSMOS_ENDPOINT) {
            self.cosmos.sign(request, now).await
        } else {
            self.storage.sign(request, now).await
        }
    }
}

fn storage_signer() -> Arc<dyn Signer> {
    support::storage_connection(support::AZURITE_KEY).signer()
}

fn cosmos_signer() -> Arc<dyn Signer> {
    support::cosmos_connection().signer()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "records fixtures/wire/concurrent.jsonl against the emulators; run scripts/record-fixtures.sh"]
async fn record_concurrent_fixture() {
    if std::env::var("FLOWCRAFT_RECORD").as_deref() != Ok("1") {
        eprintln!(
            "record_concurrent_fixture: FLOWCRAFT_RECORD is not 1; run scripts/record-fixtures.sh"
        );
        return;
    }
    support::require_reachable("Azurite (queue)", QUEUE_ENDPOINT);
    support::require_reachable("the Cosmos emulator", COSMOS_ENDPOINT);
    let cosmos_key =
        std::env::var("COSMOS_KEY").unwrap_or_else(|_| support::COSMOS_EMULATOR_KEY.to_string());
    let redactor = Redactor::new()
        .with_secret(support::AZURITE_KEY)
        .with_secret(cosmos_key);
    let tmp = fixture_path().with_extension("jsonl.tmp");
    let recorder: Arc<Recorder> =
        Arc::new(Recorder::to_file(support::transport(), &tmp, redactor).expect("recorder"));
    let storage = Pipeline::new(recorder.clone(), storage_signer()).with_retry(retry_policy());
    let cosmos = Pipeline::new(recorder, cosmos_signer()).with_retry(retry_policy());
    scenario(storage, cosmos).await;
    std::fs::rename(&tmp, fixture_path()).expect("move the recording in place");
}

/// Replays the recording with the tasks racing on several threads: every request must find
/// its recorded exchange, every exchange must be used, every signature verified.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_session_replays_offline_whatever_the_arrival_order() {
    for _ in 0..3 {
        let replayer = Arc::new(
            Replayer::from_file(fixture_path())
                .unwrap_or_else(|e| panic!("{e}; record it with scripts/record-fixtures.sh"))
                .verify_signatures_with(Arc::new(ByService::default()))
                .require_signatures(),
        );
        let storage = Pipeline::new(replayer.clone(), storage_signer()).with_retry(retry_policy());
        let cosmos = Pipeline::new(replayer.clone(), cosmos_signer()).with_retry(retry_policy());
        scenario(storage, cosmos).await;
        replayer.finish().unwrap();
        assert_eq!(
            replayer.verified_signatures(),
            replayer.exchanges().len(),
            "every recorded signature is reproduced"
        );
    }
}
