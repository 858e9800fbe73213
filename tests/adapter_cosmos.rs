//! `CosmosDbContext` against @vercel/cosmosdb-server: resources, create / load / commit with
//! ETag conflicts, status compare-and-set, the stalled-run query with paging, run states
//! larger than one Cosmos item, and the real distributed core running chains, fan-outs and a
//! batch over it. Switched on by `FLOWCRAFT_EMULATORS=1` (scripts/test.sh); switched on, an
//! unreachable emulator fails. Every test uses its own database.

mod distributed_common;
mod support;

use flowcraft_azure::CosmosClient;
use flowcraft_azure::Error;
use flowcraft_azure::adapter::cosmos_batch;
use flowcraft_azure::adapter::cosmos_context::CosmosDbContext;
use flowcraft_azure::adapter::cosmos_spill::{MANIFEST_KEY, SpillLimits};
use flowcraft_azure::azure::cosmos::{MAX_DOCUMENT_BYTES, PartitionKey, Query, QueryOptions};
use flowcraft_azure::cli::ops::Ops;
use flowcraft_azure::distributed::client::Client;
use flowcraft_azure::distributed::core::Backends;
use flowcraft_azure::distributed::memory::{MemoryCoordinationStore, MemoryQueue};
use flowcraft_azure::distributed::ports::{RunPhase, RunStore, StatusRecord, WorkerResult};
use flowcraft_azure::distributed::state::{Bookkeeping, CommitKind, CommitRecord, RunState};
use flowcraft_azure::distributed::worker::{Worker, WorkerConfig};
use flowcraft_azure::flow::context::ContextDelta;
use flowcraft_azure::flow::execute::{BlueprintRegistry, Environment};
use flowcraft_azure::flow::node::{NodeContext, NodeError, NodeResult};
use flowcraft_azure::flow::runtime::{RunStatus, WorkflowResult};
use flowcraft_azure::wire::transport::{HttpRequest, HttpResponse, Transport};
use futures_util::StreamExt;
use serde_json::{Map, Value, json};
use std::collections::BTreeMap;
use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::Mutex;
use std::time::Duration;
use support::{cosmos_client, cosmos_endpoint, cosmos_pipeline_with, emulators_enabled, unique};

/// Counts Cosmos requests by method, target and answer status.
#[derive(Debug)]
struct Counting {
    inner: Arc<dyn Transport>,
    counts: Mutex<BTreeMap<String, u64>>,
}

#[async_trait::async_trait]
impl Transport for Counting {
    async fn send(&self, request: HttpRequest) -> Result<HttpResponse, Error> {
        let query = request.header("x-ms-documentdb-isquery").is_some();
        let path = request.url.path();
        let container = if path.contains("/colls/statuses") {
            "status"
        } else {
            "context"
        };
        let spill = path.contains("%3Aspill%3A")
            || path.contains(":spill:")
            || String::from_utf8_lossy(&request.body).contains(":spill:");
        let kind = match (query, spill) {
            (true, _) => "query",
            (false, true) => "spill",
            (false, false) => "item",
        };
        let method = request.method.clone();
        let resp = self.inner.send(request).await?;
        let key = format!("{method} {container} {kind} {}", resp.status);
        *self.counts.lock().unwrap().entry(key).or_default() += 1;
        Ok(resp)
    }
}
use tokio_util::sync::CancellationToken;

/// A store over a fresh database, resources created.
async fn fresh_store() -> CosmosDbContext {
    fresh_store_with(SpillLimits::default()).await
}

async fn fresh_store_with(limits: SpillLimits) -> CosmosDbContext {
    let store = store_on(&unique("db"), limits);
    store.ensure_resources().await.unwrap();
    store
}

/// A store over database `db` (another worker's view: its own, cold caches).
fn store_on(db: &str, limits: SpillLimits) -> CosmosDbContext {
    CosmosDbContext::new(cosmos_client(), db, "contexts", "statuses")
        .unwrap()
        .with_spill_limits(limits)
}

fn state(run_id: &str, context: Value) -> RunState {
    let Value::Object(context) = context else {
        panic!("context must be an object")
    };
    RunState {
        run_id: run_id.to_string(),
        context,
        book: Bookkeeping::default(),
    }
}

/// Every item of the run's partition in the context container, by id.
async fn partition_items(store: &CosmosDbContext, run_id: &str) -> Map<String, Value> {
    let items: Vec<Value> = store
        .context_container()
        .query_all(
            &Query::new("SELECT * FROM c WHERE c.runId = @r").param("@r", run_id),
            &QueryOptions {
                page_size: 50,
                partition_key: Some(PartitionKey::from(run_id)),
            },
        )
        .await
        .unwrap();
    items
        .into_iter()
        .map(|item| (item["id"].as_str().unwrap().to_string(), item))
        .collect()
}

/// The stored run item and its size in bytes of JSON.
async fn run_item(store: &CosmosDbContext, run_id: &str) -> (Map<String, Value>, usize) {
    let item = store
        .context_container()
        .read::<Map<String, Value>>(run_id, &PartitionKey::from(run_id))
        .await
        .unwrap()
        .value;
    let size = serde_json::to_vec(&item).unwrap().len();
    (item, size)
}

#[tokio::test]
async fn ensure_resources_creates_the_database_and_containers_once() {
    if !emulators_enabled("ensure_resources_creates_the_database_and_containers_once") {
        return;
    }
    let store = CosmosDbContext::new(cosmos_client(), &unique("db"), "ctx", "st").unwrap();
    let created = store.ensure_resources().await.unwrap();
    assert_eq!(created.len(), 3, "{created:?}");
    assert!(created[0].contains("database"), "{created:?}");
    assert!(
        created[1].contains("`ctx`") || created[1].contains("/ctx`"),
        "{created:?}"
    );
    assert!(
        created[2].contains("/status and /lastUpdated"),
        "{created:?}"
    );
    assert!(store.ensure_resources().await.unwrap().is_empty());
    assert!(store.request_count() >= 6);
    assert!(store.request_charge_total() > 0.0);
}

#[tokio::test]
async fn create_load_commit_and_a_stale_commit_is_a_precondition_failure() {
    if !emulators_enabled("create_load_commit_and_a_stale_commit_is_a_precondition_failure") {
        return;
    }
    let store = fresh_store().await;
    let run = unique("run");
    assert!(store.load(&run).await.unwrap().is_none());
    let mut s = state(&run, json!({"blueprintId": "bp", "order": {"total": 42}}));
    s.book.initialized = true;
    let status = StatusRecord::running(&run, 100);
    assert!(store.create_run(&s, &status).await.unwrap());
    assert!(
        !store.create_run(&s, &status).await.unwrap(),
        "idempotent create"
    );

    // TypeScript-compatible item: context keys top-level, bookkeeping under _flowcraft.
    let (item, _) = run_item(&store, &run).await;
    assert_eq!(item["id"], json!(run));
    assert_eq!(item["runId"], json!(run));
    assert_eq!(item["order"], json!({"total": 42}));
    assert_eq!(item["_flowcraft"]["initialized"], json!(true));

    let loaded = store.load(&run).await.unwrap().unwrap();
    assert_eq!(loaded.value, s);
    let mut next = loaded.value.clone();
    next.context.insert("_outputs.a".into(), json!({"x": 1}));
    next.book.schedule("b");
    next.book.revision = 1;
    let new_etag = store.commit(&next, &loaded.etag).await.unwrap();
    assert_ne!(new_etag, loaded.etag);

    let stale = store.commit(&next, &loaded.etag).await.unwrap_err();
    assert!(matches!(stale, Error::PreconditionFailed(_)), "{stale:?}");
    let reloaded = store.load(&run).await.unwrap().unwrap();
    assert_eq!(reloaded.etag, new_etag);
    assert_eq!(reloaded.value, next);

    let missing = state(&unique("run"), json!({}));
    let err = store.commit(&missing, &new_etag).await.unwrap_err();
    assert!(matches!(err, Error::NotFound(_)), "{err:?}");
}

#[tokio::test]
async fn a_run_item_written_by_the_typescript_client_loads_uninitialised() {
    if !emulators_enabled("a_run_item_written_by_the_typescript_client_loads_uninitialised") {
        return;
    }
    let store = fresh_store().await;
    let run = unique("run");
    store
        .context_container()
        .create(
            &PartitionKey::from(run.as_str()),
            &json!({"id": run, "runId": run, "blueprintId": "bp", "blueprintVersion": null, "order": 1}),
        )
        .await
        .unwrap();
    store
        .status_container()
        .create(
            &PartitionKey::from(run.as_str()),
            &json!({"id": run, "runId": run, "status": "running", "lastUpdated": 1_750_000_000}),
        )
        .await
        .unwrap();
    let loaded = store.load(&run).await.unwrap().unwrap().value;
    assert!(!loaded.book.initialized);
    assert_eq!(loaded.blueprint_id(), Some("bp"));
    assert_eq!(loaded.context["order"], json!(1));
    let status = store.status(&run).await.unwrap().unwrap().value;
    assert_eq!(
        (status.status, status.last_updated),
        (RunPhase::Running, 1_750_000_000)
    );
}

#[tokio::test]
async fn status_writes_are_compare_and_set() {
    if !emulators_enabled("status_writes_are_compare_and_set") {
        return;
    }
    let store = fresh_store().await;
    let run = unique("run");
    assert!(store.status(&run).await.unwrap().is_none());
    let mut record = StatusRecord::running(&run, 100);
    let first = store.write_status(&record, None).await.unwrap();
    let dup = store.write_status(&record, None).await.unwrap_err();
    assert!(matches!(dup, Error::Conflict(_)), "{dup:?}");

    record.status = RunPhase::Completed;
    record.revision = 3;
    record.final_status = Some(
        json!({"status": "completed", "payload": {"status": "completed", "context": {"a": 1}, "errors": []}}),
    );
    let second = store.write_status(&record, Some(&first)).await.unwrap();
    let stale = store.write_status(&record, Some(&first)).await.unwrap_err();
    assert!(matches!(stale, Error::PreconditionFailed(_)), "{stale:?}");

    let read = store.status(&run).await.unwrap().unwrap();
    assert_eq!(read.etag, second);
    assert_eq!(read.value, record);
    // Wire shape of the TypeScript adapter.
    let raw = store
        .status_container()
        .read::<Value>(&run, &PartitionKey::from(run.as_str()))
        .await
        .unwrap()
        .value;
    assert_eq!(raw["status"], json!("completed"));
    assert_eq!(raw["lastUpdated"], json!(100));
    assert_eq!(raw["finalStatus"]["payload"]["context"], json!({"a": 1}));
}

#[tokio::test]
async fn list_stalled_finds_old_runs_in_the_asked_phases_across_pages() {
    if !emulators_enabled("list_stalled_finds_old_runs_in_the_asked_phases_across_pages") {
        return;
    }
    let store = fresh_store().await;
    let mut expected = BTreeSet::new();
    for i in 0..11 {
        let run = format!("run-{i:02}");
        let mut record = StatusRecord::running(&run, if i % 4 == 3 { 500 } else { 100 });
        if i % 5 == 4 {
            record.status = RunPhase::Completed;
        } else if i == 6 {
            record.status = RunPhase::Awaiting;
        }
        if record.last_updated < 200 && record.status == RunPhase::Running {
            expected.insert(run.clone());
        }
        store.write_status(&record, None).await.unwrap();
    }
    let mut found = BTreeSet::new();
    let mut continuation: Option<String> = None;
    let mut pages = 0;
    loop {
        let page = store
            .list_stalled(&[RunPhase::Running], 200, 2, continuation.as_deref())
            .await
            .unwrap();
        pages += 1;
        assert!(page.items.len() <= 2);
        for item in page.items {
            assert!(found.insert(item.run_id), "a run listed twice");
        }
        match page.continuation {
            Some(token) => continuation = Some(token),
            None => break,
        }
        assert!(pages < 20, "paging does not end");
    }
    assert_eq!(found, expected);
    assert!(pages >= 3, "{pages} pages");
    let two_phases = store
        .list_stalled(&[RunPhase::Running, RunPhase::Awaiting], 200, 100, None)
        .await
        .unwrap();
    assert_eq!(two_phases.items.len(), expected.len() + 1);
    assert!(
        store
            .list_stalled(&[], 200, 10, None)
            .await
            .unwrap()
            .items
            .is_empty()
    );
}

/// Small thresholds, so a few dozen keys already spill.
fn tiny_limits() -> SpillLimits {
    SpillLimits {
        spill_above: 4_000,
        expand_above: 1_000,
        piece_bytes: 1_500,
        bucket_target: 2_000,
        bucket_max: 8_000,
        inline_budget: 300,
        inline_entry_max: 100,
    }
}

fn big_state(run: &str, n: usize) -> RunState {
    let mut s = state(run, json!({"blueprintId": "bp"}));
    for i in 0..n {
        let out = json!(format!("{i}:{}", "o".repeat(100)));
        s.context.insert(format!("_outputs.n{i}"), out.clone());
        s.book.commits.insert(
            format!("{i}:n{i}"),
            CommitRecord {
                node: format!("n{i}"),
                activation: i as u64,
                kind: CommitKind::Completed,
                output: Some(out),
                action: None,
                taken: Vec::new(),
                fired: Vec::new(),
                wake_after_ms: None,
                revision: None,
                resume_key: None,
            },
        );
    }
    s.context.insert(
        "gathered".into(),
        json!((0..n).map(|i| format!("g{i}")).collect::<Vec<_>>()),
    );
    s
}

#[tokio::test]
async fn a_spilled_state_round_trips_and_leaves_no_orphans() {
    if !emulators_enabled("a_spilled_state_round_trips_and_leaves_no_orphans") {
        return;
    }
    let db = unique("db");
    let store = store_on(&db, tiny_limits());
    store.ensure_resources().await.unwrap();
    let run = unique("run");
    let s = big_state(&run, 60);
    assert!(
        store
            .create_run(&s, &StatusRecord::running(&run, 1))
            .await
            .unwrap()
    );
    let (item, _) = run_item(&store, &run).await;
    assert!(item.contains_key(MANIFEST_KEY), "the state spilled");
    assert_eq!(item["blueprintId"], json!("bp"), "small keys stay inline");
    let items = partition_items(&store, &run).await;
    assert!(items.len() > 3, "{} items", items.len());

    // Another worker (cold caches) reads the same state with one read and one query.
    let other = store_on(&db, tiny_limits());
    assert_eq!(other.load(&run).await.unwrap().unwrap().value, s);
    assert_eq!(other.request_count(), 2);
    let loaded = store.load(&run).await.unwrap().unwrap();
    assert_eq!(loaded.value, s);

    // A one-key change rewrites few parts and deletes the ones it replaced.
    let mut next = loaded.value.clone();
    next.context
        .insert("_outputs.n7".into(), json!("changed".repeat(20)));
    next.book.revision = 1;
    let before = store.request_count();
    let etag = store.commit(&next, &loaded.etag).await.unwrap();
    let requests = store.request_count() - before;
    assert!(requests <= 6, "{requests} requests for a one-key change");
    assert_eq!(store.load(&run).await.unwrap().unwrap().value, next);
    let referenced = |item: &Map<String, Value>| -> BTreeSet<String> {
        item[MANIFEST_KEY]["buckets"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|b| b.as_str().map(str::to_string))
            .collect()
    };
    let (item, _) = run_item(&store, &run).await;
    let mut expected_ids = referenced(&item);
    expected_ids.insert(run.clone());
    let ids: BTreeSet<String> = partition_items(&store, &run)
        .await
        .keys()
        .cloned()
        .collect();
    assert_eq!(ids, expected_ids, "only the run item and its parts remain");

    // A commit that loses its race leaves nothing behind either.
    let mut loser = loaded.value.clone();
    loser
        .context
        .insert("_outputs.n9".into(), json!("lost".repeat(30)));
    let err = store.commit(&loser, &loaded.etag).await.unwrap_err();
    assert!(matches!(err, Error::PreconditionFailed(_)), "{err:?}");
    let ids: BTreeSet<String> = partition_items(&store, &run)
        .await
        .keys()
        .cloned()
        .collect();
    assert_eq!(ids, expected_ids);

    // Shrinking back below the threshold stores the run item whole again.
    let mut small = next.clone();
    small.context.retain(|k, _| k == "blueprintId");
    small.book.commits.clear();
    small.book.revision = 2;
    store.commit(&small, &etag).await.unwrap();
    let (item, _) = run_item(&store, &run).await;
    assert!(!item.contains_key(MANIFEST_KEY));
    assert_eq!(partition_items(&store, &run).await.len(), 1);
    assert_eq!(store.load(&run).await.unwrap().unwrap().value, small);
}

/// Loses the answer of the first replace of a spilled run item, after it took effect.
#[derive(Debug)]
struct LoseFirstCommitAnswer {
    inner: Arc<dyn Transport>,
    lost: Mutex<bool>,
}

#[async_trait::async_trait]
impl Transport for LoseFirstCommitAnswer {
    async fn send(&self, request: HttpRequest) -> Result<HttpResponse, Error> {
        let commit = request.method == "PUT"
            && String::from_utf8_lossy(&request.body).contains(MANIFEST_KEY);
        let resp = self.inner.send(request).await?;
        let mut lost = self.lost.lock().unwrap();
        if commit && resp.status == 200 && !*lost {
            *lost = true;
            return Err(Error::transport(
                "the connection dropped before the answer arrived",
            ));
        }
        Ok(resp)
    }
}

#[tokio::test]
async fn a_spilled_commit_whose_answer_was_lost_is_recognised_as_ours() {
    if !emulators_enabled("a_spilled_commit_whose_answer_was_lost_is_recognised_as_ours") {
        return;
    }
    let lossy = Arc::new(LoseFirstCommitAnswer {
        inner: support::transport(),
        lost: Mutex::new(false),
    });
    let client =
        CosmosClient::new(cosmos_pipeline_with(lossy.clone()), &cosmos_endpoint()).unwrap();
    let store = CosmosDbContext::new(client, &unique("db"), "contexts", "statuses")
        .unwrap()
        .with_spill_limits(tiny_limits());
    store.ensure_resources().await.unwrap();
    let run = unique("run");
    let s = big_state(&run, 40);
    store
        .create_run(&s, &StatusRecord::running(&run, 1))
        .await
        .unwrap();
    let loaded = store.load(&run).await.unwrap().unwrap();
    let mut next = loaded.value.clone();
    next.context
        .insert("_outputs.n3".into(), json!("new".repeat(40)));
    next.book.revision = 1;
    // The retry of the replace answers 412 (the ETag moved on: our own write did that).
    let etag = store.commit(&next, &loaded.etag).await.unwrap();
    assert!(*lossy.lost.lock().unwrap(), "the answer was dropped once");
    let back = store.load(&run).await.unwrap().unwrap();
    assert_eq!(back.etag, etag);
    assert_eq!(back.value, next);
    let (item, _) = run_item(&store, &run).await;
    let referenced = item[MANIFEST_KEY]["buckets"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|b| b.is_string())
        .count();
    assert_eq!(partition_items(&store, &run).await.len(), referenced + 1);
}

/// The state a 5,000-item batch of 1 KiB outputs leaves behind: every output under
/// `_outputs.<worker>` and `<worker>`, in a commit record each, the worker definitions, and
/// the gathered array three times (gather output, node key, output key).
fn batch_state(run: &str, items: usize) -> RunState {
    let mut s = state(
        run,
        json!({"blueprintId": "batch", "blueprintVersion": null}),
    );
    let mut gathered = Vec::with_capacity(items);
    for i in 0..items {
        let worker = format!("kib_0123456789abcdef0123456789abcdef_{i}");
        let out = json!(format!("{i}:{}", "x".repeat(1020)));
        s.context.insert(
            format!("_batch.scatter_0123456789abcdef0123456789abcdef_item_{i}"),
            json!(i),
        );
        s.context.insert(
            format!("_dynamic.{worker}"),
            json!({"id": worker, "uses": "kib", "inputs": format!("_batch.scatter_{i}")}),
        );
        s.context.insert(format!("_outputs.{worker}"), out.clone());
        s.context.insert(worker.clone(), out.clone());
        s.book.commits.insert(
            format!("{}:{worker}", i + 2),
            CommitRecord {
                node: worker.clone(),
                activation: i as u64 + 2,
                kind: CommitKind::Completed,
                output: Some(out.clone()),
                action: None,
                taken: Vec::new(),
                fired: Vec::new(),
                wake_after_ms: None,
                revision: None,
                resume_key: None,
            },
        );
        gathered.push(out);
    }
    let gathered = Value::Array(gathered);
    for key in ["_outputs.gather", "gather", "out"] {
        s.context.insert(key.into(), gathered.clone());
    }
    s.book.initialized = true;
    s.book.status = RunPhase::Completed;
    s.book.revision = items as u64 + 2;
    s
}

#[tokio::test]
async fn a_5000_item_batch_of_1_kib_outputs_keeps_the_run_item_under_2_mb() {
    if !emulators_enabled("a_5000_item_batch_of_1_kib_outputs_keeps_the_run_item_under_2_mb") {
        return;
    }
    let store = fresh_store().await;
    let run = unique("run");
    let empty = state(&run, json!({"blueprintId": "batch"}));
    store
        .create_run(&empty, &StatusRecord::running(&run, 1))
        .await
        .unwrap();
    let loaded = store.load(&run).await.unwrap().unwrap();
    let big = batch_state(&run, 5000);
    let total = serde_json::to_vec(&big.to_document().unwrap())
        .unwrap()
        .len();
    assert!(total > 10 * MAX_DOCUMENT_BYTES, "state of {total} bytes");
    let etag = store.commit(&big, &loaded.etag).await.unwrap();
    let (item, size) = run_item(&store, &run).await;
    assert!(item.contains_key(MANIFEST_KEY));
    assert!(size < MAX_DOCUMENT_BYTES, "run item of {size} bytes");
    let items = partition_items(&store, &run).await;
    for (id, part) in &items {
        let part_size = serde_json::to_vec(part).unwrap().len();
        assert!(part_size < MAX_DOCUMENT_BYTES, "{id}: {part_size} bytes");
    }
    eprintln!(
        "5,000 x 1 KiB batch: state {total} bytes of JSON, run item {size} bytes, {} items in \
         the partition",
        items.len()
    );
    let back = store.load(&run).await.unwrap().unwrap();
    assert_eq!(back.etag, etag);
    assert_eq!(back.value, big);

    // The status item of the finished run stays small (no second copy of the context).
    let mut record = StatusRecord::running(&run, 2);
    record.status = RunPhase::Completed;
    record.final_status = Some(json!({"status": "completed", "payload": {
        "status": "completed", "context": big.context, "errors": []}}));
    let current = store.status(&run).await.unwrap().unwrap();
    store
        .write_status(&record, Some(&current.etag))
        .await
        .unwrap();
    let status = store.status(&run).await.unwrap().unwrap().value;
    assert_eq!(status.status, RunPhase::Completed);
}

// ---- the distributed core over CosmosDbContext (in-memory queue and coordination) ----

/// `kib`: outputs a 1 KiB string made from its input.
async fn kib(ctx: NodeContext) -> Result<NodeResult, NodeError> {
    let input = ctx.input().cloned().unwrap_or_default();
    Ok(NodeResult::output(json!(format!(
        "{input}:{}",
        "x".repeat(1020)
    ))))
}

struct Fleet {
    store: Arc<CosmosDbContext>,
    counting: Arc<Counting>,
    client: Client,
    shutdown: CancellationToken,
    workers: Vec<tokio::task::JoinHandle<()>>,
}

impl Fleet {
    /// `workers` workers running `concurrency` jobs each, over a fresh database.
    async fn start(
        blueprints: &[&str],
        workers: usize,
        concurrency: usize,
        limits: SpillLimits,
    ) -> Fleet {
        let counting = Arc::new(Counting {
            inner: support::transport(),
            counts: Mutex::new(BTreeMap::new()),
        });
        let client =
            CosmosClient::new(cosmos_pipeline_with(counting.clone()), &cosmos_endpoint()).unwrap();
        let store = CosmosDbContext::new(client, &unique("db"), "contexts", "statuses")
            .unwrap()
            .with_spill_limits(limits);
        store.ensure_resources().await.unwrap();
        let store = Arc::new(store);
        let mut registry = distributed_common::registry();
        registry.register("kib", kib);
        let mut loaded = BlueprintRegistry::new();
        for text in blueprints {
            loaded.insert(distributed_common::blueprint(text));
        }
        let env = Environment::new(registry).with_blueprints(loaded);
        let backends = Backends::new(
            Arc::new(MemoryQueue::new()),
            store.clone(),
            Arc::new(MemoryCoordinationStore::new()),
        );
        let client = Client::new(backends.clone(), env.blueprints.clone());
        let shutdown = CancellationToken::new();
        let config = WorkerConfig {
            concurrency,
            ..WorkerConfig::default()
        };
        let workers = (0..workers)
            .map(|_| {
                let worker = Arc::new(Worker::new(env.clone(), backends.clone(), config.clone()));
                tokio::spawn(worker.run(shutdown.clone()))
            })
            .collect();
        Fleet {
            store,
            counting,
            client,
            shutdown,
            workers,
        }
    }

    async fn run(&self, blueprint: &str, input: Value) -> (String, WorkflowResult) {
        let Value::Object(input) = input else {
            panic!("input must be an object")
        };
        let run_id = self.client.start_run(blueprint, input).await.unwrap();
        let result = self
            .client
            .wait_for(&run_id, Duration::from_secs(600))
            .await
            .unwrap();
        (run_id, result)
    }

    /// Requests by method, container, target and status, counted at the transport.
    fn requests(&self) -> BTreeMap<String, u64> {
        self.counting.counts.lock().unwrap().clone()
    }

    async fn stop(self) {
        self.shutdown.cancel();
        for w in self.workers {
            w.await.unwrap();
        }
    }
}

/// The status item's phase once it is final. The status item is written after the run item's
/// commit (two items are never written atomically), so it may lag the run by a moment.
async fn final_status(store: &CosmosDbContext, run_id: &str) -> RunPhase {
    let mut phase = RunPhase::Running;
    for _ in 0..100 {
        phase = store.status(run_id).await.unwrap().unwrap().value.status;
        if phase.is_terminal() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    phase
}

fn chain_blueprint(n: usize) -> String {
    let nodes: Vec<Value> = (0..n)
        .map(|i| json!({"id": format!("n{i}"), "uses": "double"}))
        .collect();
    let edges: Vec<Value> = (1..n)
        .map(|i| json!({"source": format!("n{}", i - 1), "target": format!("n{i}")}))
        .collect();
    let mut nodes = nodes;
    nodes[0]["inputs"] = json!("start");
    json!({"id": "chain", "nodes": nodes, "edges": edges}).to_string()
}

fn fan_blueprint(n: usize) -> String {
    let mut nodes = vec![json!({"id": "start", "uses": "count"})];
    let mut edges = Vec::new();
    for i in 0..n {
        let id = format!("b{i}");
        nodes.push(json!({"id": id, "uses": "mark"}));
        edges.push(json!({"source": "start", "target": id}));
        edges.push(json!({"source": id, "target": "join"}));
    }
    nodes.push(json!({"id": "join", "uses": "count", "config": {"joinStrategy": "all"}}));
    json!({"id": "fan", "nodes": nodes, "edges": edges}).to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_core_runs_a_chain_over_cosmos() {
    if !emulators_enabled("the_core_runs_a_chain_over_cosmos") {
        return;
    }
    let fleet = Fleet::start(&[&chain_blueprint(10)], 2, 8, SpillLimits::default()).await;
    let before = fleet.store.request_count();
    let (run_id, result) = fleet.run("chain", json!({"start": 1})).await;
    assert_eq!(result.status, RunStatus::Completed, "{result:?}");
    for i in 0..10 {
        // JSON numbers come back from the store without their `.0`; compare the values.
        assert_eq!(
            result.context[&format!("_outputs.n{i}")].as_f64(),
            Some(f64::from(2u32.pow(i + 1)))
        );
    }
    assert_eq!(
        final_status(&fleet.store, &run_id).await,
        RunPhase::Completed
    );
    let (item, _) = run_item(&fleet.store, &run_id).await;
    assert_eq!(
        item["_outputs.n9"].as_f64(),
        Some(1024.0),
        "outputs are top-level"
    );
    let requests = fleet.store.request_count() - before;
    eprintln!(
        "chain of 10: {requests} Cosmos requests ({:.1} per node, wait_for polling included), \
         {:.1} RU: {:#?}",
        requests as f64 / 10.0,
        fleet.store.request_charge_total(),
        fleet.requests()
    );
    fleet.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_core_runs_a_16_way_fan_out_with_an_all_join_over_cosmos() {
    if !emulators_enabled("the_core_runs_a_16_way_fan_out_with_an_all_join_over_cosmos") {
        return;
    }
    let fleet = Fleet::start(&[&fan_blueprint(16)], 3, 8, SpillLimits::default()).await;
    for _ in 0..2 {
        let (run_id, result) = fleet.run("fan", json!({})).await;
        assert_eq!(result.status, RunStatus::Completed, "{result:?}");
        for i in 0..16 {
            assert_eq!(
                result.context[&format!("mark.b{i}")],
                json!(true),
                "b{i} lost"
            );
            assert_eq!(
                result.context[&format!("_outputs.b{i}")],
                json!(format!("b{i}"))
            );
        }
        assert!(result.context.contains_key("_outputs.join"));
        let stored = fleet.store.load(&run_id).await.unwrap().unwrap().value;
        let join_runs = stored
            .book
            .commits
            .values()
            .filter(|c| c.node == "join")
            .count();
        assert_eq!(join_runs, 1, "the join ran once");
        assert_eq!(
            final_status(&fleet.store, &run_id).await,
            RunPhase::Completed
        );
    }
    eprintln!(
        "2 fan-outs of 18 nodes: {} Cosmos requests, {:.1} RU: {:#?}",
        fleet.store.request_count(),
        fleet.store.request_charge_total(),
        fleet.requests()
    );
    fleet.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_core_completes_a_batch_whose_state_outgrows_one_item() {
    if !emulators_enabled("the_core_completes_a_batch_whose_state_outgrows_one_item") {
        return;
    }
    let bp = r#"{"id":"batch","nodes":[
      {"id":"scatter","uses":"batch-scatter","inputs":"items",
       "params":{"workerUsesKey":"kib","outputKey":"out","gatherNodeId":"gather"}},
      {"id":"gather","uses":"batch-gather","params":{"outputKey":"out","gatherNodeId":"gather"},
       "config":{"joinStrategy":"all"}}],
      "edges":[{"source":"scatter","target":"gather"}]}"#;
    // Low thresholds so that a batch small enough for a test run still spills many times.
    let limits = SpillLimits {
        spill_above: 64 * 1024,
        expand_above: 8 * 1024,
        piece_bytes: 16 * 1024,
        bucket_target: 16 * 1024,
        inline_budget: 8 * 1024,
        ..SpillLimits::default()
    };
    // One worker running 4 jobs at once: every job commits to the same run item, so more
    // concurrency only adds ETag conflicts (each costs a reload).
    let fleet = Fleet::start(&[bp], 1, 4, limits).await;
    let items = 60;
    let (run_id, result) = fleet
        .run("batch", json!({"items": (0..items).collect::<Vec<_>>()}))
        .await;
    assert_eq!(result.status, RunStatus::Completed, "{:?}", result.errors);
    let out = result.context["out"].as_array().unwrap();
    assert_eq!(out.len(), items);
    for (i, value) in out.iter().enumerate() {
        assert!(value.as_str().unwrap().starts_with(&format!("{i}:")));
    }
    let (item, size) = run_item(&fleet.store, &run_id).await;
    assert!(item.contains_key(MANIFEST_KEY), "the state spilled");
    assert!(size < 64 * 1024, "run item of {size} bytes");
    eprintln!(
        "batch of {items}: {} Cosmos requests, run item {size} bytes: {:#?}",
        fleet.store.request_count(),
        fleet.requests()
    );
    fleet.stop().await;
}

// ---- Batch worker results and arrival ledgers ----

fn worker_result(run: &str, batch: &str, node: &str, output: Value) -> WorkerResult {
    WorkerResult {
        run_id: run.to_string(),
        batch: batch.to_string(),
        node: node.to_string(),
        activation: 1,
        output: Some(output),
        action: None,
        writes: vec![ContextDelta::Set {
            key: format!("seen.{node}"),
            value: json!(true),
        }],
    }
}

/// Every stored result of `batch`, following the continuations; also returns the page count.
async fn all_results(
    store: &CosmosDbContext,
    run: &str,
    batch: &str,
) -> (Vec<WorkerResult>, usize) {
    let mut results = Vec::new();
    let mut continuation: Option<String> = None;
    let mut pages = 0;
    loop {
        let page = store
            .worker_results(run, batch, continuation.as_deref())
            .await
            .unwrap();
        pages += 1;
        assert!(
            page.items.len() <= 100,
            "{} results on a page",
            page.items.len()
        );
        results.extend(page.items);
        match page.continuation {
            Some(token) => continuation = Some(token),
            None => return (results, pages),
        }
        assert!(pages < 100, "paging does not end");
    }
}

#[tokio::test]
async fn a_worker_result_is_stored_once_and_the_first_wins() {
    if !emulators_enabled("a_worker_result_is_stored_once_and_the_first_wins") {
        return;
    }
    let store = fresh_store().await;
    let run = unique("run");
    let first = worker_result(&run, "g:1", "w1", json!("first"));
    assert!(store.put_worker_result(&first).await.unwrap());
    // A redelivered job whose rerun produced another output.
    let second = worker_result(&run, "g:1", "w1", json!("second"));
    assert!(!store.put_worker_result(&second).await.unwrap());
    // Even the very same result, written again by another call, is not "created" again.
    assert!(!store.put_worker_result(&first).await.unwrap());
    let (results, _) = all_results(&store, &run, "g:1").await;
    assert_eq!(results, vec![first.clone()]);
    // A redelivered job reads it back with one point read.
    let stored = store.worker_result(&run, "g:1", "w1").await.unwrap();
    assert_eq!(stored, Some(first.clone()));
    assert_eq!(store.worker_result(&run, "g:1", "w9").await.unwrap(), None);
    // The same node in another batch is another result.
    let other = worker_result(&run, "g:2", "w1", json!("other batch"));
    assert!(store.put_worker_result(&other).await.unwrap());
    assert_eq!(all_results(&store, &run, "g:1").await.0, vec![first]);
    assert_eq!(all_results(&store, &run, "g:2").await.0, vec![other]);
    assert!(all_results(&store, &run, "g:3").await.0.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixty_four_concurrent_arrivals_each_see_a_distinct_count() {
    if !emulators_enabled("sixty_four_concurrent_arrivals_each_see_a_distinct_count") {
        return;
    }
    let store = Arc::new(fresh_store().await);
    let run = unique("run");
    let tasks: Vec<_> = (0..64)
        .map(|i| {
            let (store, run) = (store.clone(), run.clone());
            tokio::spawn(async move {
                store
                    .record_arrival(&run, "gather:0", &format!("echo_items_{i}"))
                    .await
                    .unwrap()
            })
        })
        .collect();
    let mut counts = Vec::new();
    for task in tasks {
        counts.push(task.await.unwrap());
    }
    counts.sort_unstable();
    assert_eq!(counts, (1..=64).collect::<Vec<u64>>());
    // A repeated arrival (a redelivered job) does not grow the count.
    assert_eq!(
        store
            .record_arrival(&run, "gather:0", "echo_items_7")
            .await
            .unwrap(),
        64
    );
    // Another batch of the same run has its own ledger.
    assert_eq!(
        store
            .record_arrival(&run, "gather:1", "echo_items_7")
            .await
            .unwrap(),
        1
    );
}

#[tokio::test]
async fn worker_results_page_through_250_results() {
    if !emulators_enabled("worker_results_page_through_250_results") {
        return;
    }
    let store = fresh_store().await;
    let run = unique("run");
    let other_run = unique("run");
    let expected: Vec<WorkerResult> = (0..250)
        .map(|i| {
            worker_result(
                &run,
                "gather:3",
                &format!("kib_b_{i}"),
                json!(format!("{i}:{}", "k".repeat(64))),
            )
        })
        .collect();
    let created = futures_util::stream::iter(expected.iter())
        .map(|r| store.put_worker_result(r))
        .buffer_unordered(16)
        .collect::<Vec<_>>()
        .await;
    assert!(created.into_iter().all(|c| c.unwrap()));
    // Neighbours the query must leave out: another batch, and the same batch id in another
    // run (the emulator ignores the partition scope, so the runId filter is what counts).
    store
        .put_worker_result(&worker_result(&run, "gather:4", "kib_b_0", json!(0)))
        .await
        .unwrap();
    store
        .put_worker_result(&worker_result(&other_run, "gather:3", "kib_b_0", json!(0)))
        .await
        .unwrap();
    store
        .record_arrival(&run, "gather:3", "kib_b_0")
        .await
        .unwrap();
    let (mut results, pages) = all_results(&store, &run, "gather:3").await;
    assert!(pages >= 3, "{pages} pages");
    results.sort_by_key(|r| r.node[6..].parse::<usize>().unwrap());
    assert_eq!(results, expected);
}

#[tokio::test]
async fn worker_results_with_odd_ids_round_trip() {
    if !emulators_enabled("worker_results_with_odd_ids_round_trip") {
        return;
    }
    let store = fresh_store().await;
    let run = unique("run");
    let long = format!("gather/{}", "x".repeat(300));
    let cases = [
        ("a/b?c#d\\e", "n ü/1"),
        ("a:b", "c"),
        ("a", "b:c"),
        ("~41", "%2F"),
        (long.as_str(), "w"),
        ("plain", &*"y".repeat(260)),
    ];
    for (batch, node) in cases {
        let result = worker_result(&run, batch, node, json!({"batch": batch, "node": node}));
        assert!(
            store.put_worker_result(&result).await.unwrap(),
            "{batch} / {node}"
        );
        assert_eq!(
            all_results(&store, &run, batch).await.0,
            vec![result.clone()],
            "{batch} / {node}"
        );
        assert_eq!(store.record_arrival(&run, batch, node).await.unwrap(), 1);
        assert_eq!(store.record_arrival(&run, batch, node).await.unwrap(), 1);
        assert_eq!(
            store
                .record_arrival(&run, batch, "other/node")
                .await
                .unwrap(),
            2
        );
        // The stored item is addressable by its id (the id rules held).
        let id = cosmos_batch::result_id(&run, batch, node);
        let item = store
            .context_container()
            .read::<Value>(&id, &PartitionKey::from(run.as_str()))
            .await
            .unwrap()
            .value;
        assert_eq!(
            (item["batch"].as_str(), item["node"].as_str()),
            (Some(batch), Some(node))
        );
        assert_eq!(item["kind"], json!(cosmos_batch::RESULT_KIND));
    }
    // `a:b`/`c` and `a`/`b:c` are two items, not one.
    assert_eq!(all_results(&store, &run, "a:b").await.0.len(), 1);
    assert_eq!(all_results(&store, &run, "a").await.0.len(), 1);
}

#[tokio::test]
async fn batch_items_never_show_up_as_runs() {
    if !emulators_enabled("batch_items_never_show_up_as_runs") {
        return;
    }
    let db = unique("db");
    let store = store_on(&db, tiny_limits());
    store.ensure_resources().await.unwrap();
    let run = unique("run");
    // A spilled run: its partition holds the run item, buckets, results and a ledger.
    let s = big_state(&run, 40);
    store
        .create_run(&s, &StatusRecord::running(&run, 100))
        .await
        .unwrap();
    for i in 0..5 {
        let r = worker_result(&run, "gather:0", &format!("w{i}"), json!(i));
        assert!(store.put_worker_result(&r).await.unwrap());
        store
            .record_arrival(&run, "gather:0", &r.node)
            .await
            .unwrap();
    }
    let all = [
        RunPhase::Running,
        RunPhase::Awaiting,
        RunPhase::Completed,
        RunPhase::Failed,
        RunPhase::Cancelled,
    ];
    let listed = store.list_stalled(&all, i64::MAX, 100, None).await.unwrap();
    let ids: Vec<&str> = listed.items.iter().map(|r| r.run_id.as_str()).collect();
    assert_eq!(ids, vec![run.as_str()]);
    // The run still loads as it was, from a cold cache too.
    assert_eq!(store.load(&run).await.unwrap().unwrap().value, s);
    let cold = store_on(&db, tiny_limits());
    assert_eq!(cold.load(&run).await.unwrap().unwrap().value, s);
    let kinds: BTreeMap<String, usize> =
        partition_items(&store, &run)
            .await
            .values()
            .fold(BTreeMap::new(), |mut m, item| {
                let kind = item["kind"].as_str().unwrap_or("-").to_string();
                *m.entry(kind).or_default() += 1;
                m
            });
    assert_eq!(kinds[cosmos_batch::RESULT_KIND], 5);
    assert_eq!(kinds[cosmos_batch::LEDGER_KIND], 1);
}

/// Loses the answer of the first request that `matches`, after it took effect.
#[derive(Debug)]
struct LoseFirstAnswer {
    inner: Arc<dyn Transport>,
    matches: fn(&HttpRequest) -> bool,
    lost: Mutex<u32>,
}

#[async_trait::async_trait]
impl Transport for LoseFirstAnswer {
    async fn send(&self, request: HttpRequest) -> Result<HttpResponse, Error> {
        let hit = (self.matches)(&request);
        let resp = self.inner.send(request).await?;
        let mut lost = self.lost.lock().unwrap();
        if hit && resp.status < 300 && *lost == 0 {
            *lost += 1;
            return Err(Error::transport(
                "the connection dropped before the answer arrived",
            ));
        }
        Ok(resp)
    }
}

fn lossy_store(matches: fn(&HttpRequest) -> bool) -> (CosmosDbContext, Arc<LoseFirstAnswer>) {
    let lossy = Arc::new(LoseFirstAnswer {
        inner: support::transport(),
        matches,
        lost: Mutex::new(0),
    });
    let client =
        CosmosClient::new(cosmos_pipeline_with(lossy.clone()), &cosmos_endpoint()).unwrap();
    let store = CosmosDbContext::new(client, &unique("db"), "contexts", "statuses").unwrap();
    (store, lossy)
}

#[tokio::test]
async fn a_worker_result_whose_answer_was_lost_is_recognised_as_ours() {
    if !emulators_enabled("a_worker_result_whose_answer_was_lost_is_recognised_as_ours") {
        return;
    }
    let (store, lossy) = lossy_store(|r| {
        r.method == "POST" && String::from_utf8_lossy(&r.body).contains(cosmos_batch::RESULT_KIND)
    });
    store.ensure_resources().await.unwrap();
    let run = unique("run");
    let result = worker_result(&run, "g", "w", json!("mine"));
    assert!(store.put_worker_result(&result).await.unwrap());
    assert_eq!(
        *lossy.lost.lock().unwrap(),
        1,
        "the answer was dropped once"
    );
    assert_eq!(all_results(&store, &run, "g").await.0, vec![result.clone()]);
    assert!(!store.put_worker_result(&result).await.unwrap());
}

#[tokio::test]
async fn an_arrival_whose_answer_was_lost_is_counted_once() {
    if !emulators_enabled("an_arrival_whose_answer_was_lost_is_counted_once") {
        return;
    }
    let (store, lossy) = lossy_store(|r| r.method == "PATCH");
    store.ensure_resources().await.unwrap();
    let run = unique("run");
    assert_eq!(store.record_arrival(&run, "g", "a").await.unwrap(), 1);
    // The PATCH of `b` lands, its answer is lost, the retry answers the same count.
    assert_eq!(store.record_arrival(&run, "g", "b").await.unwrap(), 2);
    assert_eq!(
        *lossy.lost.lock().unwrap(),
        1,
        "the answer was dropped once"
    );
    assert_eq!(store.record_arrival(&run, "g", "c").await.unwrap(), 3);
}

// ---- The ordered run listing ----

/// Writes status items: `(run id, phase, lastUpdated)`.
async fn write_statuses(store: &CosmosDbContext, rows: &[(&str, RunPhase, i64)]) {
    for (run, phase, at) in rows {
        let mut record = StatusRecord::running(run, *at);
        record.status = *phase;
        record.started_at = Some(at - 5);
        store.write_status(&record, None).await.unwrap();
    }
}

const LISTED: [(&str, RunPhase, i64); 7] = [
    ("r-a", RunPhase::Running, 100),
    ("r-b", RunPhase::Completed, 400),
    ("r-c", RunPhase::Running, 300),
    ("r-d", RunPhase::Failed, 500),
    ("r-e", RunPhase::Running, 300),
    ("r-f", RunPhase::Awaiting, 200),
    ("r-g", RunPhase::Running, 900),
];

#[tokio::test]
async fn list_recent_answers_newest_first_with_since_before_and_limit() {
    if !emulators_enabled("list_recent_answers_newest_first_with_since_before_and_limit") {
        return;
    }
    let store = fresh_store().await;
    write_statuses(&store, &LISTED).await;
    let ids = |rows: Option<Vec<StatusRecord>>| -> Vec<String> {
        rows.expect("the emulator serves ORDER BY")
            .into_iter()
            .map(|r| r.run_id)
            .collect()
    };
    let phases = [RunPhase::Running, RunPhase::Completed, RunPhase::Awaiting];
    let all = store.list_recent(&phases, None, 1000, 100).await.unwrap();
    assert_eq!(ids(all), ["r-g", "r-b", "r-c", "r-e", "r-f", "r-a"]);
    let window = store
        .list_recent(&phases, Some(200), 900, 100)
        .await
        .unwrap();
    assert_eq!(ids(window), ["r-b", "r-c", "r-e", "r-f"]);
    let top = store.list_recent(&phases, None, 1000, 2).await.unwrap();
    assert_eq!(ids(top), ["r-g", "r-b"]);
    let running = store
        .list_recent(&[RunPhase::Running], None, 1000, 100)
        .await
        .unwrap()
        .unwrap();
    assert!(running.iter().all(|r| r.status == RunPhase::Running));
    assert_eq!(running[0].started_at, Some(895));
    assert!(
        store
            .list_recent(&[], None, 1000, 10)
            .await
            .unwrap()
            .unwrap()
            .is_empty()
    );
}

/// Answers queries with `ORDER BY` like the real gateway without a query plan: 400 / 1004.
#[derive(Debug)]
struct NoQueryPlan {
    inner: Arc<dyn Transport>,
    refused: Mutex<u32>,
}

#[async_trait::async_trait]
impl Transport for NoQueryPlan {
    async fn send(&self, request: HttpRequest) -> Result<HttpResponse, Error> {
        if String::from_utf8_lossy(&request.body).contains("ORDER BY") {
            *self.refused.lock().unwrap() += 1;
            return Ok(HttpResponse {
                status: 400,
                headers: vec![("x-ms-substatus".into(), "1004".into())],
                body: br#"{"code":"BadRequest","message":"The provided cross partition query can not be directly served by the gateway."}"#.to_vec(),
            });
        }
        self.inner.send(request).await
    }
}

#[tokio::test]
async fn a_refused_ordered_listing_falls_back_to_sorting_here() {
    if !emulators_enabled("a_refused_ordered_listing_falls_back_to_sorting_here") {
        return;
    }
    let refusing = Arc::new(NoQueryPlan {
        inner: support::transport(),
        refused: Mutex::new(0),
    });
    let client =
        CosmosClient::new(cosmos_pipeline_with(refusing.clone()), &cosmos_endpoint()).unwrap();
    let store =
        Arc::new(CosmosDbContext::new(client, &unique("db"), "contexts", "statuses").unwrap());
    store.ensure_resources().await.unwrap();
    write_statuses(&store, &LISTED).await;
    assert_eq!(
        store
            .list_recent(&[RunPhase::Running], None, 1000, 10)
            .await
            .unwrap(),
        None
    );
    let backends = Backends::new(
        Arc::new(MemoryQueue::new()),
        store.clone(),
        Arc::new(MemoryCoordinationStore::new()),
    );
    let ops = Ops::new(backends, Arc::new(BlueprintRegistry::new())).with_cosmos_listing(store);
    let phases = [RunPhase::Running, RunPhase::Completed, RunPhase::Awaiting];
    let rows = ops.list(&phases, Some(200), Some(900), 3).await.unwrap();
    let ids: Vec<&str> = rows.iter().map(|r| r.run_id.as_str()).collect();
    assert_eq!(ids, ["r-b", "r-c", "r-e"]);
    assert_eq!(rows[0].started_at.as_deref(), Some("1970-01-01T00:06:35Z"));
    // The store remembers the refusal: no second doomed query.
    assert_eq!(*refusing.refused.lock().unwrap(), 1);
}

/// Permanent errors over Cosmos: a commit over the 2 MB item limit (spilling switched off,
/// so the run item itself is too large) and a run item whose bookkeeping was edited by hand
/// each poison the job on its FIRST delivery with a reason, and the status item says
/// `failed` with that reason (for the unreadable item, the status item alone records it).
#[tokio::test]
async fn a_too_large_or_unreadable_run_item_poisons_the_job_at_once_over_cosmos() {
    use flowcraft_azure::distributed::ports::JobQueue;
    use flowcraft_azure::distributed::worker::Disposition;
    if !emulators_enabled("a_too_large_or_unreadable_run_item_poisons_the_job_at_once_over_cosmos")
    {
        return;
    }
    let no_spill = SpillLimits {
        spill_above: usize::MAX,
        ..SpillLimits::default()
    };
    let store = Arc::new(fresh_store_with(no_spill).await);
    let huge = "x".repeat(1_200_000); // stored twice (`_outputs.a` and `a`): over 2 MB
    let big = json!({"id": "big", "nodes": [
        {"id": "a", "uses": "count", "params": {"output": huge}}, {"id": "b", "uses": "count"}],
      "edges": [{"source": "a", "target": "b"}]})
    .to_string();
    let chain = r#"{"id":"chain","nodes":[{"id":"a","uses":"count"},{"id":"b","uses":"count"}],
      "edges":[{"source":"a","target":"b"}]}"#;
    let mut loaded = BlueprintRegistry::new();
    loaded.insert(distributed_common::blueprint(&big));
    loaded.insert(distributed_common::blueprint(chain));
    let env = Environment::new(distributed_common::registry()).with_blueprints(loaded);
    let queue = Arc::new(MemoryQueue::new());
    let backends = Backends::new(
        queue.clone(),
        store.clone(),
        Arc::new(MemoryCoordinationStore::new()),
    );
    let client = Client::new(backends.clone(), env.blueprints.clone());
    let worker = Worker::new(env, backends, WorkerConfig::default());
    let first_delivery = || async {
        let m = queue
            .receive(1, Duration::from_secs(30))
            .await
            .unwrap()
            .remove(0);
        assert_eq!(m.dequeue_count, 1);
        match worker.handle_message(&m).await {
            Disposition::Poison(reason) => {
                queue.move_to_poison(&m, &reason).await.unwrap();
                reason
            }
            other => panic!("not poisoned on the first delivery: {other:?}"),
        }
    };
    let failed_with = |run_id: String| {
        let store = store.clone();
        async move {
            let status = store.status(&run_id).await.unwrap().unwrap().value;
            assert_eq!(status.status, RunPhase::Failed);
            status.final_status.unwrap()["reason"]
                .as_str()
                .unwrap()
                .to_string()
        }
    };

    let run_id = client.start_run("big", Map::new()).await.unwrap();
    let reason = first_delivery().await;
    assert!(
        reason.contains("node 'a'") && reason.contains(" bytes"),
        "{reason}"
    );
    assert_eq!(failed_with(run_id.clone()).await, reason);
    let result = client.status(&run_id).await.unwrap().unwrap();
    assert_eq!(result.status, RunStatus::Failed);
    assert_eq!(result.errors[0].node_id, "a");

    let run_id = client.start_run("chain", Map::new()).await.unwrap();
    let (mut item, _) = run_item(&store, &run_id).await;
    item["_flowcraft"]["seq"] = json!(1_u64 << 60);
    store
        .context_container()
        .replace(
            &run_id,
            &PartitionKey::from(run_id.as_str()),
            &Value::Object(item),
            None,
        )
        .await
        .unwrap();
    let reason = first_delivery().await;
    assert!(reason.contains("edited by hand"), "{reason}");
    assert_eq!(failed_with(run_id).await, reason);
    assert!(queue.is_empty());
    assert_eq!(queue.poisoned().len(), 2);
}
