//! Bad run documents on the memory backend: a job whose run document cannot be read
//! (hand-edited bookkeeping) or whose commit would make the document larger than the store
//! accepts is a permanent failure: the message is poisoned on its FIRST delivery with a
//! reason that says what went wrong, and the run's status item says `failed` with the same
//! reason. A transient error on the same load is still retried and the run completes.

mod distributed_common;

use async_trait::async_trait;
use distributed_common::{Counter, blueprint, registry};
use flowcraft_azure::distributed::client::Client;
use flowcraft_azure::distributed::core::Backends;
use flowcraft_azure::distributed::memory::{MemoryCoordinationStore, MemoryQueue, MemoryRunStore};
use flowcraft_azure::distributed::ports::{
    JobQueue, Page, QueueMessage, RunPhase, RunStore, StatusRecord, Versioned, WorkerResult,
};
use flowcraft_azure::distributed::reconcile::{Reconciler, ReconcilerConfig};
use flowcraft_azure::distributed::state::RunState;
use flowcraft_azure::distributed::worker::{Disposition, Worker, WorkerConfig};
use flowcraft_azure::flow::execute::{BlueprintRegistry, Environment};
use flowcraft_azure::flow::node::Dependencies;
use flowcraft_azure::flow::runtime::RunStatus;
use flowcraft_azure::{Error, ErrorInfo};
use serde_json::{Map, Value, json};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// A run store whose next loads and status writes fail with the queued errors (before
/// reading or writing anything).
struct FlakyLoads {
    inner: Arc<MemoryRunStore>,
    load_errors: Mutex<Vec<Error>>,
    status_errors: Mutex<Vec<Error>>,
}

/// The first of `errors`, taken out.
fn next_error(errors: &Mutex<Vec<Error>>) -> Option<Error> {
    let mut errors = errors.lock().unwrap();
    (!errors.is_empty()).then(|| errors.remove(0))
}

#[async_trait]
impl RunStore for FlakyLoads {
    async fn create_run(&self, state: &RunState, status: &StatusRecord) -> Result<bool, Error> {
        self.inner.create_run(state, status).await
    }
    async fn load(&self, run_id: &str) -> Result<Option<Versioned<RunState>>, Error> {
        match next_error(&self.load_errors) {
            Some(e) => Err(e),
            None => self.inner.load(run_id).await,
        }
    }
    async fn commit(&self, state: &RunState, etag: &str) -> Result<String, Error> {
        self.inner.commit(state, etag).await
    }
    async fn status(&self, run_id: &str) -> Result<Option<Versioned<StatusRecord>>, Error> {
        self.inner.status(run_id).await
    }
    async fn write_status(&self, r: &StatusRecord, etag: Option<&str>) -> Result<String, Error> {
        match next_error(&self.status_errors) {
            Some(e) => Err(e),
            None => self.inner.write_status(r, etag).await,
        }
    }
    async fn list_stalled(
        &self,
        phases: &[RunPhase],
        older_than: i64,
        limit: usize,
        continuation: Option<&str>,
    ) -> Result<Page<StatusRecord>, Error> {
        self.inner
            .list_stalled(phases, older_than, limit, continuation)
            .await
    }
    async fn put_worker_result(&self, result: &WorkerResult) -> Result<bool, Error> {
        self.inner.put_worker_result(result).await
    }
    async fn record_arrival(&self, run_id: &str, batch: &str, node: &str) -> Result<u64, Error> {
        self.inner.record_arrival(run_id, batch, node).await
    }
    async fn worker_results(
        &self,
        run_id: &str,
        batch: &str,
        continuation: Option<&str>,
    ) -> Result<Page<WorkerResult>, Error> {
        self.inner.worker_results(run_id, batch, continuation).await
    }
}

const CHAIN: &str = r#"{"id":"chain","nodes":[{"id":"a","uses":"count"},{"id":"b","uses":"count"}],
  "edges":[{"source":"a","target":"b"}]}"#;

/// Memory backends (the run store behind [`FlakyLoads`]), a client and a worker that the
/// test drives one delivery at a time.
struct Rig {
    queue: Arc<MemoryQueue>,
    runs: Arc<MemoryRunStore>,
    store: Arc<FlakyLoads>,
    backends: Backends,
    client: Client,
    worker: Worker,
    counter: Arc<Counter>,
}

impl Rig {
    fn new(blueprints: &[&str], runs: MemoryRunStore) -> Self {
        let mut loaded = BlueprintRegistry::new();
        for text in blueprints {
            loaded.insert(blueprint(text));
        }
        let deps = Dependencies::new().with(Counter::default());
        let counter = deps.get::<Counter>().expect("counter dependency");
        let env = Environment::new(registry())
            .with_blueprints(loaded)
            .with_dependencies(deps);
        let queue = Arc::new(MemoryQueue::new());
        let runs = Arc::new(runs);
        let store = Arc::new(FlakyLoads {
            inner: runs.clone(),
            load_errors: Mutex::new(Vec::new()),
            status_errors: Mutex::new(Vec::new()),
        });
        let backends = Backends::new(
            queue.clone() as Arc<dyn JobQueue>,
            store.clone() as Arc<dyn RunStore>,
            Arc::new(MemoryCoordinationStore::new()),
        );
        let client = Client::new(backends.clone(), env.blueprints.clone());
        let worker = Worker::new(env, backends.clone(), WorkerConfig::default());
        Rig {
            queue,
            runs,
            store,
            backends,
            client,
            worker,
            counter,
        }
    }

    async fn start(&self, blueprint_id: &str) -> String {
        self.client
            .start_run(blueprint_id, Map::new())
            .await
            .unwrap()
    }

    /// Receives the next visible message (waiting out a release delay, in virtual time),
    /// hands it to the worker and applies the disposition as the polling loop does.
    /// `None` once nothing is left on the queue.
    async fn deliver(&self) -> Option<(QueueMessage, Disposition)> {
        for _ in 0..1_000 {
            let mut batch = self
                .queue
                .receive(1, Duration::from_secs(30))
                .await
                .unwrap();
            let Some(m) = batch.pop() else {
                if self.queue.is_empty() {
                    return None;
                }
                tokio::time::advance(Duration::from_millis(500)).await;
                continue;
            };
            let d = self.worker.handle_message(&m).await;
            match &d {
                Disposition::Complete => self.queue.complete(&m.id, &m.receipt).await.unwrap(),
                Disposition::Release(delay) => {
                    self.queue.release(&m.id, &m.receipt, *delay).await.unwrap()
                }
                Disposition::Poison(reason) => self.queue.move_to_poison(&m, reason).await.unwrap(),
            }
            return Some((m, d));
        }
        panic!("a message stayed invisible for 500 s of virtual time");
    }

    /// The stored status item.
    async fn status_item(&self, run_id: &str) -> StatusRecord {
        self.runs.status(run_id).await.unwrap().unwrap().value
    }
}

/// The reason in a failed status item's `finalStatus`.
fn final_reason(status: &StatusRecord) -> String {
    status
        .final_status
        .as_ref()
        .and_then(|f| f.get("reason"))
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string()
}

/// A hand-edit of a stored run document.
type Edit = fn(&mut Map<String, Value>);

/// Hand-edits of a started run's document that `RunState::from_document` refuses.
fn edits() -> Vec<(&'static str, Edit)> {
    vec![
        ("a sequence counter past 2^53", |doc| {
            doc["_flowcraft"]["seq"] = json!(1_u64 << 60);
        }),
        ("a blueprint version that is a number", |doc| {
            doc.insert("blueprintVersion".into(), json!(7));
        }),
    ]
}

/// (a) A run document with hand-edited bookkeeping cannot be read: that is permanent, so
/// the job is poisoned on its first delivery with the reason, and since the document cannot
/// record the failure, the status item (what clients and the reconciler read) says `failed`
/// with the same reason, for good. A transient error on the same load is retried instead,
/// and that run completes.
#[tokio::test(start_paused = true)]
async fn an_unreadable_run_document_is_poisoned_at_once_but_a_transient_load_error_is_retried() {
    for (name, edit) in edits() {
        let rig = Rig::new(&[CHAIN], MemoryRunStore::new());
        let run_id = rig.start("chain").await;
        let doc = rig.runs.load(&run_id).await.unwrap().unwrap();
        let mut raw = doc.value.to_document().unwrap();
        edit(&mut raw);
        rig.runs.put_raw_document(&run_id, raw);
        let (m, d) = rig.deliver().await.expect("the start job");
        let Disposition::Poison(reason) = d else {
            panic!("{name}: not poisoned on the first delivery: {d:?}")
        };
        println!("{name}: {reason}");
        assert_eq!(m.dequeue_count, 1, "{name}");
        assert!(
            reason.contains("edited by hand") && reason.contains(&run_id),
            "{name}: {reason}"
        );
        assert!(reason.len() < 2_000, "{name}: {reason}");
        let poisoned = rig.queue.poisoned();
        assert_eq!(poisoned.len(), 1, "{name}");
        assert_eq!(poisoned[0].dequeue_count, 1, "{name}");
        assert_eq!(poisoned[0].reason, reason, "{name}");
        assert_eq!(rig.counter.get("a"), 0, "{name}: the node never ran");

        let status = rig.status_item(&run_id).await;
        assert_eq!(status.status, RunPhase::Failed, "{name}");
        assert_eq!(final_reason(&status), reason, "{name}");

        // Sticky: another job for the run is poisoned at once too, and the status item
        // keeps the first reason.
        rig.queue
            .send(&poisoned[0].text, Duration::ZERO)
            .await
            .unwrap();
        let (_, again) = rig.deliver().await.expect("the copy");
        assert!(matches!(again, Disposition::Poison(_)), "{name}: {again:?}");
        let status = rig.status_item(&run_id).await;
        assert_eq!(status.status, RunPhase::Failed, "{name}");
        assert_eq!(final_reason(&status), reason, "{name}");
        assert!(rig.deliver().await.is_none(), "{name}: nothing left");

        // A later reconciler pass does not take the run for stalled; a client asking for
        // the run gets the reason as an error, never a `running` run.
        let reconciler = Reconciler::new(
            rig.client.clone(),
            rig.backends.clone(),
            ReconcilerConfig::default(),
        );
        let stats = reconciler.run_once_before(i64::MAX).await.unwrap();
        assert_eq!(stats.stalled_runs, 0, "{name}: {stats:?}");
        let err = rig.client.status(&run_id).await.unwrap_err();
        assert!(matches!(err, Error::InvalidInput(_)), "{name}: {err:?}");
    }

    // The same load failing transiently (throttled, timed out, reset, 5xx) for longer than
    // the in-place retries last: released and redelivered, never poisoned; the run completes.
    let rig = Rig::new(&[CHAIN], MemoryRunStore::new());
    let run_id = rig.start("chain").await;
    let status_503 = || Error::Unexpected(Box::new(ErrorInfo::new("busy").with_status(503)));
    *rig.store.load_errors.lock().unwrap() = vec![
        Error::Throttled {
            retry_after: Some(Duration::from_millis(50)),
            info: Box::new(ErrorInfo::new("slow down").with_status(429)),
        },
        Error::Timeout(Box::new(ErrorInfo::new("no answer"))),
        Error::transport("connection reset"),
        status_503(),
        status_503(),
        Error::transport("connection reset"),
        status_503(),
    ];
    let mut deliveries = Vec::new();
    while let Some((m, d)) = rig.deliver().await {
        assert!(!matches!(d, Disposition::Poison(_)), "{d:?}");
        deliveries.push((m.dequeue_count, d));
    }
    assert!(rig.store.load_errors.lock().unwrap().is_empty());
    assert!(
        matches!(deliveries[0], (1, Disposition::Release(_))),
        "the first delivery gives up for now: {deliveries:?}"
    );
    assert!(rig.queue.poisoned().is_empty());
    assert_eq!((rig.counter.get("a"), rig.counter.get("b")), (1, 1));
    let result = rig.client.status(&run_id).await.unwrap().unwrap();
    assert_eq!(result.status, RunStatus::Completed, "{:?}", result.errors);
    assert_eq!(rig.status_item(&run_id).await.status, RunPhase::Completed);
}

/// Nothing is lost when marking the run failed meets an outage: the message is released
/// rather than poisoned with the status item still `running`, and the next delivery poisons
/// it and marks the status item.
#[tokio::test(start_paused = true)]
async fn an_unreadable_run_is_poisoned_only_once_its_status_item_says_failed() {
    let rig = Rig::new(&[CHAIN], MemoryRunStore::new());
    let run_id = rig.start("chain").await;
    let doc = rig.runs.load(&run_id).await.unwrap().unwrap();
    let mut raw = doc.value.to_document().unwrap();
    edits()[0].1(&mut raw);
    rig.runs.put_raw_document(&run_id, raw);
    *rig.store.status_errors.lock().unwrap() = (0..20)
        .map(|_| Error::transport("connection reset"))
        .collect();
    let (_, first) = rig.deliver().await.expect("the start job");
    assert!(matches!(first, Disposition::Release(_)), "{first:?}");
    assert!(rig.queue.poisoned().is_empty());
    assert_eq!(rig.status_item(&run_id).await.status, RunPhase::Running);

    rig.store.status_errors.lock().unwrap().clear();
    let (m, second) = rig.deliver().await.expect("the redelivery");
    assert_eq!(m.dequeue_count, 2);
    let Disposition::Poison(reason) = second else {
        panic!("not poisoned: {second:?}")
    };
    let status = rig.status_item(&run_id).await;
    assert_eq!(status.status, RunPhase::Failed);
    assert_eq!(final_reason(&status), reason);
    assert_eq!(rig.queue.poisoned().len(), 1);
}

/// (b) A node whose output pushes the run document past the store's limit: no retry can
/// cure that, so the FIRST delivery fails the run with a reason naming the node and the
/// size, and the message goes to the poison queue with the same reason.
#[tokio::test(start_paused = true)]
async fn a_commit_over_the_document_limit_fails_the_run_and_poisons_the_job_at_once() {
    let limit = 64 * 1024;
    let big = "x".repeat(40_000); // stored twice (`_outputs.a` and `a`): over 64 KiB
    let bp = json!({"id": "big", "nodes": [
        {"id": "a", "uses": "count", "params": {"output": big}},
        {"id": "b", "uses": "count"}],
      "edges": [{"source": "a", "target": "b"}]})
    .to_string();
    let rig = Rig::new(&[&bp], MemoryRunStore::with_document_limit(limit));
    let run_id = rig.start("big").await;
    let (m, d) = rig.deliver().await.expect("the start job");
    let Disposition::Poison(reason) = d else {
        panic!("not poisoned on the first delivery: {d:?}")
    };
    println!("too large: {reason}");
    assert_eq!(m.dequeue_count, 1);
    assert!(reason.contains("node 'a'"), "{reason}");
    assert!(reason.contains("too large"), "{reason}");
    assert!(
        reason.contains(&format!("the limit is {limit}")) && reason.contains(" bytes"),
        "the size and the limit: {reason}"
    );
    assert!(reason.contains("batch"), "what to do: {reason}");

    let poisoned = rig.queue.poisoned();
    assert_eq!(poisoned.len(), 1);
    assert_eq!(poisoned[0].dequeue_count, 1);
    assert_eq!(poisoned[0].reason, reason);
    assert_eq!(rig.counter.get("a"), 1, "the node ran once, never again");
    assert!(rig.deliver().await.is_none(), "nothing retried or enqueued");
    assert_eq!(rig.counter.get("b"), 0);

    let result = rig.client.status(&run_id).await.unwrap().unwrap();
    assert_eq!(result.status, RunStatus::Failed);
    assert_eq!(result.errors.len(), 1, "{:?}", result.errors);
    assert_eq!(result.errors[0].node_id, "a");
    assert_eq!(result.errors[0].message, reason);
    let status = rig.status_item(&run_id).await;
    assert_eq!(status.status, RunPhase::Failed);
    assert_eq!(final_reason(&status), reason);
}
