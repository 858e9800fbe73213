//! Batch folds on the in-memory backends: the workers of a batch store their results beside
//! the run document and the last arrival folds them into it in one commit. These tests
//! drive one worker message by message, duplicate every delivery, and stop it at each step
//! between storing a result and completing the message (an error there is a crash: the
//! message comes back), and check that each worker node runs once, the batch is folded
//! once, and the run ends as it would without faults.

mod distributed_common;

use async_trait::async_trait;
use distributed_common::{Counter, registry};
use flowcraft_azure::Error;
use flowcraft_azure::distributed::client::Client;
use flowcraft_azure::distributed::core::Backends;
use flowcraft_azure::distributed::job::JobMessage;
use flowcraft_azure::distributed::memory::{MemoryCoordinationStore, MemoryQueue, MemoryRunStore};
use flowcraft_azure::distributed::ports::{
    CoordinationStore, JobQueue, Page, QueueMessage, RunPhase, RunStore, StatusRecord, Versioned,
    WorkerResult,
};
use flowcraft_azure::distributed::state::RunState;
use flowcraft_azure::distributed::worker::{Disposition, Worker, WorkerConfig};
use flowcraft_azure::flow::blueprint::Blueprint;
use flowcraft_azure::flow::execute::{BlueprintRegistry, Environment};
use flowcraft_azure::flow::node::{Dependencies, NodeContext, NodeError, NodeResult};
use flowcraft_azure::flow::runtime::{RunStatus, WorkflowResult};
use serde_json::{Value, json};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// One-shot faults of the run store: the named call fails once (after taking effect, for
/// `lose_fold_answer`), as a crash of the worker at that point would look to the job.
#[derive(Default)]
struct Faults {
    /// `record_arrival` fails (before taking effect) for this worker index's first call.
    arrival_of: Mutex<Option<String>>,
    /// `worker_results` fails once.
    results: AtomicBool,
    /// The first commit made while results are being folded takes effect but its answer is
    /// lost.
    lose_fold_answer: AtomicBool,
    /// Set while a fold reads results (the next commit is the fold's).
    folding: AtomicBool,
}

struct Crashy {
    inner: MemoryRunStore,
    faults: Faults,
    folds: AtomicU32,
    /// Run document reads.
    loads: AtomicU32,
}

fn crash(what: &str) -> Error {
    Error::unexpected(format!("simulated crash: {what}"))
}

#[async_trait]
impl RunStore for Crashy {
    async fn create_run(&self, state: &RunState, status: &StatusRecord) -> Result<bool, Error> {
        self.inner.create_run(state, status).await
    }
    async fn load(&self, run_id: &str) -> Result<Option<Versioned<RunState>>, Error> {
        self.loads.fetch_add(1, Ordering::SeqCst);
        self.inner.load(run_id).await
    }
    async fn commit(&self, state: &RunState, etag: &str) -> Result<String, Error> {
        let folding = self.faults.folding.swap(false, Ordering::SeqCst);
        let tag = self.inner.commit(state, etag).await?;
        if folding {
            self.folds.fetch_add(1, Ordering::SeqCst);
            if self.faults.lose_fold_answer.swap(false, Ordering::SeqCst) {
                return Err(crash("the fold's commit answer was lost"));
            }
        }
        Ok(tag)
    }
    async fn status(&self, run_id: &str) -> Result<Option<Versioned<StatusRecord>>, Error> {
        self.inner.status(run_id).await
    }
    async fn write_status(&self, r: &StatusRecord, etag: Option<&str>) -> Result<String, Error> {
        self.inner.write_status(r, etag).await
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
    async fn worker_result(
        &self,
        run_id: &str,
        batch: &str,
        node: &str,
    ) -> Result<Option<WorkerResult>, Error> {
        self.inner.worker_result(run_id, batch, node).await
    }
    async fn record_arrival(&self, run_id: &str, batch: &str, node: &str) -> Result<u64, Error> {
        {
            let mut arrival = self.faults.arrival_of.lock().unwrap();
            if arrival
                .as_deref()
                .is_some_and(|suffix| node.ends_with(suffix))
            {
                *arrival = None;
                return Err(crash(
                    "between storing the result and recording the arrival",
                ));
            }
        }
        self.inner.record_arrival(run_id, batch, node).await
    }
    async fn worker_results(
        &self,
        run_id: &str,
        batch: &str,
        continuation: Option<&str>,
    ) -> Result<Page<WorkerResult>, Error> {
        if self.faults.results.swap(false, Ordering::SeqCst) {
            return Err(crash("between recording the arrival and folding"));
        }
        let page = self
            .inner
            .worker_results(run_id, batch, continuation)
            .await?;
        if page.continuation.is_none() {
            self.faults.folding.store(true, Ordering::SeqCst);
        }
        Ok(page)
    }
}

struct Rig {
    /// The text of every message handled.
    seen: Mutex<Vec<String>>,
    queue: Arc<MemoryQueue>,
    runs: Arc<Crashy>,
    client: Client,
    worker: Worker,
    counter: Arc<Counter>,
}

fn rig(blueprint: Value) -> Rig {
    rig_with(blueprint, WorkerConfig::default().status_heartbeat)
}

fn rig_with(blueprint: Value, status_heartbeat: Duration) -> Rig {
    let mut blueprints = BlueprintRegistry::new();
    blueprints.insert(Blueprint::from_json(&blueprint.to_string()).unwrap());
    let deps = Dependencies::new().with(Counter::default());
    let counter = deps.get::<Counter>().unwrap();
    let mut registry = registry();
    registry.register("flaky-scatter", flaky_scatter);
    let env = Environment::new(registry)
        .with_blueprints(blueprints)
        .with_dependencies(deps);
    let queue = Arc::new(MemoryQueue::new());
    let runs = Arc::new(Crashy {
        inner: MemoryRunStore::new(),
        faults: Faults::default(),
        folds: AtomicU32::new(0),
        loads: AtomicU32::new(0),
    });
    let backends = Backends::new(
        queue.clone() as Arc<dyn JobQueue>,
        runs.clone() as Arc<dyn RunStore>,
        Arc::new(MemoryCoordinationStore::new()) as Arc<dyn CoordinationStore>,
    );
    let config = WorkerConfig {
        error_delay: Duration::ZERO,
        stale_read_delay: Duration::ZERO,
        max_dequeue: 50,
        status_heartbeat,
        ..WorkerConfig::default()
    };
    let client = Client::new(backends.clone(), env.blueprints.clone());
    let worker = Worker::new(env, backends, config);
    Rig {
        seen: Mutex::default(),
        queue,
        runs,
        client,
        worker,
        counter,
    }
}

impl Rig {
    /// Handles every message until the queue is empty; with `twice`, every delivery is
    /// handled a second time as a redelivery before its message is completed.
    async fn drain(&self, twice: bool) {
        for _ in 0..10_000 {
            let messages = self
                .queue
                .receive(32, Duration::from_secs(60))
                .await
                .unwrap();
            if messages.is_empty() {
                return;
            }
            for m in messages {
                self.seen.lock().unwrap().push(m.text.clone());
                let mut disposition = self.worker.handle_message(&m).await;
                if twice && disposition == Disposition::Complete {
                    let again = QueueMessage {
                        dequeue_count: m.dequeue_count + 1,
                        ..m.clone()
                    };
                    disposition = self.worker.handle_message(&again).await;
                }
                match disposition {
                    Disposition::Complete => self.queue.complete(&m.id, &m.receipt).await.unwrap(),
                    Disposition::Release(_) => self
                        .queue
                        .release(&m.id, &m.receipt, Duration::ZERO)
                        .await
                        .unwrap(),
                    Disposition::Poison(reason) => panic!("poisoned: {reason}"),
                }
            }
        }
        panic!("the queue never drained");
    }

    async fn result(&self, run_id: &str) -> WorkflowResult {
        self.client
            .wait_for(run_id, Duration::from_secs(1))
            .await
            .unwrap()
    }

    /// Executions of the batch's worker nodes (`count_<batch>_<i>`), by index.
    fn worker_runs(&self, n: usize, context: &serde_json::Map<String, Value>) -> Vec<u32> {
        let ids: Vec<String> = context
            .keys()
            .filter_map(|k| k.strip_prefix("_outputs.count_"))
            .map(|rest| format!("count_{rest}"))
            .collect();
        assert_eq!(ids.len(), n, "{ids:?}");
        ids.iter().map(|id| self.counter.get(id)).collect()
    }
}

/// A scatter of three `flaky` workers that fail their first attempt and may retry once.
async fn flaky_scatter(ctx: NodeContext) -> Result<NodeResult, NodeError> {
    let ids: Vec<String> = (0..3).map(|i| format!("fw_{i}")).collect();
    let workers = ids
        .iter()
        .map(|id| {
            serde_json::from_value(json!({"id": id, "uses": "flaky",
                "params": {"succeedOn": 2}, "config": {"maxRetries": 2}}))
            .unwrap()
        })
        .collect();
    ctx.context().set("g_allWorkerIds", json!(ids));
    Ok(NodeResult {
        output: Some(json!({"gatherNodeId": "g"})),
        action: None,
        dynamic_nodes: workers,
    })
}

fn batch_blueprint() -> Value {
    json!({"id": "batch", "nodes": [
        {"id": "load", "uses": "set", "params": {"values": {"items": [1, 2, 3, 4]}}},
        {"id": "s", "uses": "batch-scatter", "inputs": "items",
         "params": {"workerUsesKey": "count", "gatherNodeId": "g"}},
        {"id": "g", "uses": "batch-gather"},
        {"id": "after", "uses": "count", "inputs": "g"}],
      "edges": [{"source": "load", "target": "s"}, {"source": "s", "target": "g"},
                {"source": "g", "target": "after"}]})
}

async fn start(rig: &Rig, id: &str) -> String {
    rig.client
        .start_run(id, serde_json::Map::new())
        .await
        .unwrap()
}

fn assert_batch_done(rig: &Rig, result: &WorkflowResult) {
    assert_eq!(result.status, RunStatus::Completed, "{:?}", result.errors);
    assert_eq!(result.context["g"], json!([1, 2, 3, 4]));
    assert_eq!(result.context["after"], json!([1, 2, 3, 4]));
    assert_eq!(rig.worker_runs(4, &result.context), vec![1, 1, 1, 1]);
    assert_eq!(rig.counter.get("after"), 1, "the gather fired once");
    assert_eq!(rig.runs.folds.load(Ordering::SeqCst), 1, "folded once");
}

#[tokio::test]
async fn every_delivery_handled_twice_runs_each_worker_once_and_folds_once() {
    let rig = rig(batch_blueprint());
    let run_id = start(&rig, "batch").await;
    rig.drain(true).await;
    let result = rig.result(&run_id).await;
    assert_batch_done(&rig, &result);
    // The scatter, the fold, the gather and `after`, plus `load`: never one per worker.
    assert_eq!(rig.runs.inner.commits(), 5);
}

#[tokio::test]
async fn duplicated_worker_jobs_after_the_fold_are_completed_without_reading_the_run() {
    // The run waits after the gather, so the worker still holds it (a finished run is
    // forgotten, and its jobs are dropped after one read anyway).
    let mut blueprint = batch_blueprint();
    blueprint["nodes"][3] = json!({"id": "after", "uses": "wait"});
    let rig = rig(blueprint);
    let run_id = start(&rig, "batch").await;
    rig.drain(false).await;
    assert_eq!(rig.runs.folds.load(Ordering::SeqCst), 1);
    let loads = rig.runs.loads.load(Ordering::SeqCst);
    // A scatter whose job was redelivered sends its workers' jobs again, as fresh messages.
    let workers: Vec<String> = rig
        .seen
        .lock()
        .unwrap()
        .iter()
        .filter(|text| {
            JobMessage::decode(text)
                .unwrap()
                .node_id
                .starts_with("count_")
        })
        .cloned()
        .collect();
    assert_eq!(workers.len(), 4);
    for (i, text) in workers.into_iter().enumerate() {
        let duplicate = QueueMessage {
            id: format!("dup-{i}"),
            receipt: "r".into(),
            text,
            dequeue_count: 1,
        };
        let handled = rig.worker.handle_message(&duplicate).await;
        assert_eq!(handled, Disposition::Complete);
    }
    assert_eq!(
        rig.runs.loads.load(Ordering::SeqCst),
        loads,
        "no read of the run"
    );
    assert!(
        rig.queue
            .receive(32, Duration::from_secs(1))
            .await
            .unwrap()
            .is_empty()
    );
    let result = rig.result(&run_id).await;
    assert_eq!(result.status, RunStatus::Awaiting, "{:?}", result.errors);
    assert_eq!(result.context["g"], json!([1, 2, 3, 4]));
    assert_eq!(rig.worker_runs(4, &result.context), vec![1, 1, 1, 1]);
    assert_eq!(rig.runs.folds.load(Ordering::SeqCst), 1, "folded once");
}

#[tokio::test]
async fn a_crash_between_storing_a_result_and_its_arrival_is_redone_without_rerunning() {
    let rig = rig(batch_blueprint());
    *rig.runs.faults.arrival_of.lock().unwrap() = Some("_3".into());
    let run_id = start(&rig, "batch").await;
    rig.drain(false).await;
    assert_batch_done(&rig, &rig.result(&run_id).await);
}

#[tokio::test]
async fn a_crash_between_the_last_arrival_and_the_fold_is_redone() {
    let rig = rig(batch_blueprint());
    rig.runs.faults.results.store(true, Ordering::SeqCst);
    let run_id = start(&rig, "batch").await;
    rig.drain(false).await;
    assert_batch_done(&rig, &rig.result(&run_id).await);
}

#[tokio::test]
async fn a_fold_whose_answer_was_lost_is_found_done_and_its_follow_ups_re_sent() {
    let rig = rig(batch_blueprint());
    rig.runs
        .faults
        .lose_fold_answer
        .store(true, Ordering::SeqCst);
    let run_id = start(&rig, "batch").await;
    rig.drain(true).await;
    assert_batch_done(&rig, &rig.result(&run_id).await);
}

#[tokio::test]
async fn a_batch_inside_a_loop_folds_a_fresh_batch_on_every_pass() {
    let rig = rig(serde_json::from_str(include_str!("parity/batch_loop.json")).unwrap());
    let run_id = start(&rig, "batch-loop").await;
    // (Not twice: every replay re-sends its successors, so duplicating EVERY delivery
    // doubles the messages at each hop of a long loop.)
    rig.drain(false).await;
    let result = rig.result(&run_id).await;
    assert_eq!(result.status, RunStatus::Completed, "{:?}", result.errors);
    assert_eq!(result.context["done"], json!(6));
    assert_eq!(
        rig.runs.folds.load(Ordering::SeqCst),
        3,
        "one fold per pass"
    );
    let workers = result
        .context
        .keys()
        .filter(|k| k.starts_with("_outputs.echo_"))
        .count();
    assert_eq!(workers, 9, "three workers on each of three passes");
}

#[tokio::test]
async fn a_failing_worker_still_fails_the_run() {
    let rig = rig(json!({"id": "batch-fail", "nodes": [
        {"id": "load", "uses": "set", "params": {"values": {"items": [1, 2]}}},
        {"id": "s", "uses": "batch-scatter", "inputs": "items",
         "params": {"workerUsesKey": "flaky", "gatherNodeId": "g"}},
        {"id": "g", "uses": "batch-gather"}],
      "edges": [{"source": "load", "target": "s"}, {"source": "s", "target": "g"}]}));
    let run_id = start(&rig, "batch-fail").await;
    rig.drain(false).await;
    let result = rig.result(&run_id).await;
    assert_eq!(result.status, RunStatus::Failed);
    assert!(
        result.errors.iter().any(|e| e.message.contains("boom")),
        "{:?}",
        result.errors
    );
    assert_eq!(rig.runs.folds.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn waiting_workers_resumed_by_a_client_arrive_and_the_last_one_fires_the_gather() {
    let rig = rig(json!({"id": "batch-wait", "nodes": [
        {"id": "load", "uses": "set", "params": {"values": {"items": [1, 2, 3]}}},
        {"id": "s", "uses": "batch-scatter", "inputs": "items",
         "params": {"workerUsesKey": "wait", "gatherNodeId": "g"}},
        {"id": "g", "uses": "batch-gather"},
        {"id": "after", "uses": "count", "inputs": "g"}],
      "edges": [{"source": "load", "target": "s"}, {"source": "s", "target": "g"},
                {"source": "g", "target": "after"}]}));
    let run_id = start(&rig, "batch-wait").await;
    rig.drain(false).await;
    let waiting = rig.result(&run_id).await;
    assert_eq!(waiting.status, RunStatus::Awaiting);
    let mut ids: Vec<String> = waiting.context["_awaitingNodeIds"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect();
    ids.sort();
    assert_eq!(ids.len(), 3);
    for (i, id) in ids.iter().enumerate() {
        rig.client
            .resume_with_action(&run_id, Some(id), None, Some(json!(i * 10)))
            .await
            .unwrap();
        rig.drain(false).await;
    }
    let result = rig.result(&run_id).await;
    assert_eq!(result.status, RunStatus::Completed, "{:?}", result.errors);
    let mut gathered: Vec<u64> = result.context["g"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap())
        .collect();
    gathered.sort();
    assert_eq!(gathered, vec![0, 10, 20]);
    assert_eq!(rig.counter.get("after"), 1);
}

/// Batch workers do not commit, so no commit refreshes the status item while they run:
/// they refresh it themselves, at most once per `status_heartbeat` from each worker.
#[tokio::test]
async fn batch_workers_refresh_the_status_item_at_most_once_per_heartbeat() {
    let items: Vec<u64> = (0..40).collect();
    let blueprint = json!({"id": "hb", "nodes": [
        {"id": "load", "uses": "set", "params": {"values": {"items": items}}},
        {"id": "s", "uses": "batch-scatter", "inputs": "items",
         "params": {"workerUsesKey": "count", "gatherNodeId": "g"}},
        {"id": "g", "uses": "batch-gather"}],
      "edges": [{"source": "load", "target": "s"}, {"source": "s", "target": "g"}]});
    let mut writes = Vec::new();
    for heartbeat in [Duration::from_secs(3600), Duration::ZERO] {
        let rig = rig_with(blueprint.clone(), heartbeat);
        let run_id = start(&rig, "hb").await;
        rig.drain(false).await;
        assert_eq!(rig.result(&run_id).await.status, RunStatus::Completed);
        writes.push(rig.runs.inner.status_writes());
    }
    let (amortised, every_time) = (writes[0], writes[1]);
    assert!(amortised < 10, "{amortised} status writes for 40 workers");
    assert!(
        every_time >= amortised + 39,
        "{every_time} status writes with a zero heartbeat: each worker after the first \
         refreshes it"
    );
}

#[tokio::test]
async fn workers_that_fail_and_retry_commit_their_retries_and_still_fold_once() {
    let rig = rig(json!({"id": "batch-retry", "nodes": [
        {"id": "s", "uses": "flaky-scatter"},
        {"id": "g", "uses": "batch-gather"},
        {"id": "after", "uses": "count", "inputs": "g"}],
      "edges": [{"source": "s", "target": "g"}, {"source": "g", "target": "after"}]}));
    let run_id = start(&rig, "batch-retry").await;
    rig.drain(false).await;
    let result = rig.result(&run_id).await;
    assert_eq!(result.status, RunStatus::Completed, "{:?}", result.errors);
    assert_eq!(
        result.context["g"],
        json!(["ok on 2", "ok on 2", "ok on 2"])
    );
    for i in 0..3 {
        assert_eq!(rig.counter.get(&format!("fw_{i}")), 2, "two attempts each");
    }
    assert_eq!(rig.counter.get("after"), 1);
    assert_eq!(rig.runs.folds.load(Ordering::SeqCst), 1);
}

/// The reconciler re-sends every outstanding worker of a batch that is not folded yet
/// (the run looked stalled): workers whose result is stored keep their first result, and
/// the batch still folds once with every output.
#[tokio::test]
async fn a_reconcile_in_the_middle_of_a_batch_keeps_the_first_results_and_folds_once() {
    let rig = rig(batch_blueprint());
    let run_id = start(&rig, "batch").await;
    // `load`, the scatter, then two of the four workers.
    let mut handled = 0;
    while handled < 4 {
        let m = rig.queue.receive(1, Duration::from_secs(60)).await.unwrap();
        let m = m.into_iter().next().expect("a queued job");
        assert_eq!(rig.worker.handle_message(&m).await, Disposition::Complete);
        rig.queue.complete(&m.id, &m.receipt).await.unwrap();
        handled += 1;
    }
    let resent = rig.client.reconcile(&run_id).await.unwrap();
    assert_eq!(
        resent.len(),
        4,
        "every worker is still outstanding: {resent:?}"
    );
    rig.drain(false).await;
    let result = rig.result(&run_id).await;
    assert_eq!(result.status, RunStatus::Completed, "{:?}", result.errors);
    assert_eq!(result.context["g"], json!([1, 2, 3, 4]));
    assert_eq!(rig.counter.get("after"), 1, "the gather fired once");
    assert_eq!(rig.runs.folds.load(Ordering::SeqCst), 1, "folded once");
}
