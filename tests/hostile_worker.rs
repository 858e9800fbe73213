//! Hostile documents and messages against the worker core (in-memory backends, paused tokio
//! time, every port call counted by a `Meter`): a run item edited into nonsense, a 64 KiB
//! garbage message, a message for a run that does not exist or has finished, and 10,000
//! duplicates of one job. Each case must end with a clear reason (a failed run, a poisoned
//! message, or a dropped job), never a panic, and with a bounded number of port calls (no
//! spinning worker). Each test prints the calls it counted.

mod hostile_common;

use flowcraft_azure::distributed::client::Client;
use flowcraft_azure::distributed::core::Backends;
use flowcraft_azure::distributed::events::{Event, EventBus};
use flowcraft_azure::distributed::job::JobMessage;
use flowcraft_azure::distributed::memory::{MemoryCoordinationStore, MemoryQueue, MemoryRunStore};
use flowcraft_azure::distributed::metered::{Meter, MeterSnapshot, Operation};
use flowcraft_azure::distributed::ports::{
    CoordinationStore, JobQueue, RunPhase, RunStore, StatusRecord,
};
use flowcraft_azure::distributed::worker::{Worker, WorkerConfig};
use flowcraft_azure::flow::blueprint::Blueprint;
use flowcraft_azure::flow::execute::{BlueprintRegistry, Environment};
use flowcraft_azure::flow::node::{Dependencies, NodeContext, NodeError, NodeRegistry, NodeResult};
use serde_json::{Map, Value, json};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// How long (virtual time) each worker runs: long enough for every retry and poison path
/// (5 deliveries with backoff), so anything still moving afterwards is a spinning worker.
const RUN_FOR: Duration = Duration::from_secs(600);

/// Node executions of one rig.
#[derive(Debug, Default)]
struct Executions(AtomicU64);

async fn echo(ctx: NodeContext) -> Result<NodeResult, NodeError> {
    if let Some(n) = ctx.dependency::<Executions>() {
        n.0.fetch_add(1, Ordering::SeqCst);
    }
    Ok(NodeResult::output(json!(ctx.node_id())))
}

const CHAIN: &str = r#"{"id":"chain","metadata":{"version":"1"},
  "nodes":[{"id":"a","uses":"echo"},{"id":"b","uses":"echo"}],
  "edges":[{"source":"a","target":"b"}]}"#;

struct Rig {
    queue: Arc<MemoryQueue>,
    runs: Arc<MemoryRunStore>,
    meter: Arc<Meter>,
    backends: Backends,
    env: Environment,
    config: WorkerConfig,
    executions: Arc<Executions>,
    events: EventBus,
}

impl Rig {
    fn new() -> Self {
        let queue = Arc::new(MemoryQueue::new());
        let runs = Arc::new(MemoryRunStore::new());
        let plain = Backends::new(
            queue.clone() as Arc<dyn JobQueue>,
            runs.clone() as Arc<dyn RunStore>,
            Arc::new(MemoryCoordinationStore::new()) as Arc<dyn CoordinationStore>,
        );
        let meter = Meter::new();
        let backends = meter.wrap(&plain);
        let mut registry = NodeRegistry::new();
        registry.register("echo", echo);
        let mut blueprints = BlueprintRegistry::new();
        blueprints.insert(Blueprint::from_json(CHAIN).unwrap());
        let deps = Dependencies::new().with(Executions::default());
        let executions = deps.get::<Executions>().unwrap();
        let env = Environment::new(registry)
            .with_blueprints(blueprints)
            .with_dependencies(deps);
        Rig {
            queue,
            runs,
            meter,
            backends,
            env,
            config: WorkerConfig::default(),
            executions,
            events: EventBus::default(),
        }
    }

    /// The reasons of the jobs dropped since `rx` subscribed.
    fn dropped(rx: &mut tokio::sync::broadcast::Receiver<Event>) -> Vec<String> {
        let mut reasons = Vec::new();
        loop {
            match rx.try_recv() {
                Ok(Event::JobDropped { reason, .. }) => reasons.push(reason),
                Ok(_) | Err(tokio::sync::broadcast::error::TryRecvError::Lagged(_)) => {}
                Err(_) => return reasons,
            }
        }
    }

    fn client(&self) -> Client {
        Client::new(self.backends.clone(), self.env.blueprints.clone())
    }

    /// Runs one worker loop for [`RUN_FOR`] of virtual time and returns what it cost.
    async fn run_worker(&self) -> MeterSnapshot {
        let before = self.meter.snapshot();
        let worker = Arc::new(
            Worker::new(self.env.clone(), self.backends.clone(), self.config.clone())
                .with_events(self.events.clone()),
        );
        let shutdown = CancellationToken::new();
        let handle = tokio::spawn(worker.run(shutdown.clone()));
        tokio::time::sleep(RUN_FOR).await;
        shutdown.cancel();
        handle.await.expect("the worker loop must not panic");
        self.meter.snapshot().since(&before)
    }

    /// Port calls other than receives (an idle worker polls; that is not work).
    fn work_calls(calls: &MeterSnapshot) -> u64 {
        calls.total_calls() - calls.calls(Operation::QueueReceive)
    }

    async fn status(&self, run_id: &str) -> Option<StatusRecord> {
        self.runs.status(run_id).await.unwrap().map(|v| v.value)
    }

    fn executions(&self) -> u64 {
        self.executions.0.load(Ordering::SeqCst)
    }

    async fn send(&self, text: &str) {
        self.queue.send(text, Duration::ZERO).await.unwrap();
    }
}

fn job(run_id: &str, node: &str) -> String {
    JobMessage::execute(run_id, "chain", node, 1)
        .encode()
        .unwrap()
}

/// A run started by the client, with its first job still queued: the document to tamper
/// with, as the client wrote it.
async fn started_run(rig: &Rig) -> (String, Map<String, Value>) {
    let run_id = rig.client().start_run("chain", Map::new()).await.unwrap();
    let doc = rig
        .runs
        .load(&run_id)
        .await
        .unwrap()
        .unwrap()
        .value
        .to_document()
        .unwrap();
    (run_id, doc)
}

/// Edits of a run document into nonsense.
fn nonsense(doc: &Map<String, Value>) -> Vec<(&'static str, Map<String, Value>)> {
    let edit = |f: &dyn Fn(&mut Map<String, Value>)| {
        let mut d = doc.clone();
        f(&mut d);
        d
    };
    vec![
        (
            "bookkeeping is a string",
            edit(&|d| {
                d.insert("_flowcraft".into(), json!("garbage"));
            }),
        ),
        (
            "bookkeeping fields retyped",
            edit(&|d| {
                d.insert(
                    "_flowcraft".into(),
                    json!({"outstanding": 5, "commits": [], "seq": "x", "status": 7}),
                );
            }),
        ),
        (
            "bookkeeping status unknown",
            edit(&|d| {
                d["_flowcraft"]["status"] = json!("exploded");
            }),
        ),
        (
            "bookkeeping missing",
            edit(&|d| {
                d.remove("_flowcraft");
            }),
        ),
        (
            "bookkeeping missing, blueprintId a number",
            edit(&|d| {
                d.remove("_flowcraft");
                d.insert("blueprintId".into(), json!(42));
            }),
        ),
        (
            "blueprintVersion an object",
            edit(&|d| {
                d.insert("blueprintVersion".into(), json!({"v": 1}));
            }),
        ),
        (
            "run id numbers",
            edit(&|d| {
                d.insert("id".into(), json!(1));
                d.insert("runId".into(), json!(2));
            }),
        ),
        (
            "run id names another run",
            edit(&|d| {
                d.insert("runId".into(), json!("someone-else"));
            }),
        ),
        (
            "counters at their maximum",
            edit(&|d| {
                d["_flowcraft"]["seq"] = json!(u64::MAX);
                d["_flowcraft"]["revision"] = json!(u64::MAX);
                d["_flowcraft"]["statusTouchedAt"] = json!(i64::MIN);
                d["_flowcraft"]["executions"] = json!({"a": u64::MAX, "b": u64::MAX});
            }),
        ),
        (
            "outstanding work with odd keys",
            edit(&|d| {
                d["_flowcraft"]["outstanding"] = json!({"x": {"node": "nope", "activation": 0},
                "1:a": {"node": "b", "activation": u64::MAX}});
            }),
        ),
        (
            "outstanding work for a node the blueprint lacks",
            edit(&|d| {
                d["_flowcraft"]["outstanding"] =
                    json!({"9:nope": {"node": "nope", "activation": 9}});
                d["_flowcraft"]["seq"] = json!(9);
            }),
        ),
        (
            "huge context",
            edit(&|d| {
                d.insert("blob".into(), json!("x".repeat(2_100_000)));
            }),
        ),
        (
            "deep context",
            edit(&|d| {
                let mut v = json!(1);
                for _ in 0..500 {
                    v = json!([v]);
                }
                d.insert("deep".into(), v);
            }),
        ),
    ]
}

/// A run item edited into nonsense: each edit ends with a reason (failed run, poisoned or
/// dropped message, or the run finished), a finished status item (never left `running`)
/// and a bounded number of port calls.
#[tokio::test(start_paused = true)]
async fn a_run_item_edited_into_nonsense_fails_or_poisons_with_a_reason_never_spins() {
    let mut worst = 0;
    let template: Map<String, Value> = [("_flowcraft".to_string(), json!({}))]
        .into_iter()
        .collect();
    for (name, _) in nonsense(&template) {
        let rig = Rig::new();
        let (run_id, doc) = started_run(&rig).await;
        let edited = nonsense(&doc)
            .into_iter()
            .find(|(n, _)| *n == name)
            .map(|(_, d)| d)
            .unwrap();
        rig.runs.put_raw_document(&run_id, edited);
        let mut events = rig.events.subscribe();
        let mut calls = rig.run_worker().await;
        let mut dropped = Rig::dropped(&mut events);
        if rig.queue.poisoned().is_empty()
            && !rig
                .status(&run_id)
                .await
                .is_some_and(|s| s.status.is_terminal())
        {
            // Left running: what the reconciler makes of it, then one more worker pass.
            let before = rig.meter.snapshot();
            let reconciled = rig.client().reconcile(&run_id).await.map(|w| w.len());
            let reconcile_calls = rig.meter.snapshot().since(&before);
            let again = rig.run_worker().await;
            dropped.extend(Rig::dropped(&mut events));
            println!(
                "hostile[document: {name}]: left running; reconcile -> {reconciled:?} in {} \
                 calls, then {} worker calls besides receives",
                reconcile_calls.total_calls(),
                Rig::work_calls(&again)
            );
            calls = again;
        }
        let work = Rig::work_calls(&calls);
        worst = worst.max(work);
        let poisoned = rig.queue.poisoned();
        let status = rig.status(&run_id).await;
        println!(
            "hostile[document: {name}]: {work} port calls besides receives, {} receives, \
             status {:?}, poisoned {:?}, dropped {dropped:?}",
            calls.calls(Operation::QueueReceive),
            status.as_ref().map(|s| s.status),
            poisoned
                .iter()
                .map(|p| p.reason.as_str())
                .collect::<Vec<_>>()
        );
        // Disposed of: nothing left on the queue.
        assert_eq!(rig.queue.len(), 0, "{name}: messages left on the queue");
        // Bounded: a handful of deliveries, each a few calls, never a loop.
        assert!(work <= 80, "{name}: {work} port calls; the worker spins");
        // A reason somewhere: the poison queue says why, or the run finished either way.
        let finished = status.as_ref().is_some_and(|s| s.status.is_terminal());
        for p in &poisoned {
            assert!(
                !p.reason.trim().is_empty(),
                "{name}: poisoned without a reason"
            );
        }
        // And the status item never stays `running`: a document that cannot record the
        // failure has its status item marked `failed` with the reason.
        assert!(
            finished,
            "{name}: the run is not finished (status {status:?}, poisoned {poisoned:?})"
        );
        if let Some(s) = status.as_ref().filter(|s| s.status == RunPhase::Failed) {
            assert!(
                s.final_status
                    .as_ref()
                    .is_some_and(|f| !f.to_string().is_empty()),
                "{name}: failed without a final status"
            );
        }
    }
    println!("hostile[documents]: at most {worst} port calls per tampered run");
}

/// 64 KiB of garbage as a message: poisoned at the first delivery, with a reason.
#[tokio::test(start_paused = true)]
async fn a_64_kib_garbage_message_is_poisoned_at_once_with_a_reason() {
    let rig = Rig::new();
    let garbage: String = (0..65_536u32)
        .map(|i| char::from(b' ' + ((i.wrapping_mul(2_654_435_761) >> 7) % 95) as u8))
        .collect();
    rig.send(&garbage).await;
    let calls = rig.run_worker().await;
    let poisoned = rig.queue.poisoned();
    println!(
        "hostile[64 KiB garbage]: {} port calls besides receives; reason: {}",
        Rig::work_calls(&calls),
        poisoned.first().map(|p| p.reason.as_str()).unwrap_or("-")
    );
    assert_eq!(poisoned.len(), 1);
    assert_eq!(
        poisoned[0].dequeue_count, 1,
        "poisoned at the first delivery"
    );
    assert!(
        poisoned[0].reason.contains("undecodable"),
        "{}",
        poisoned[0].reason
    );
    assert!(
        poisoned[0].reason.len() < 2_000,
        "the reason must not echo the garbage"
    );
    assert_eq!(rig.queue.len(), 0);
    assert_eq!(calls.calls(Operation::QueueMoveToPoison), 1);
    assert!(Rig::work_calls(&calls) <= 3, "{:?}", calls.nonzero());
}

/// A job for a run that does not exist, and one for a finished run: dropped or poisoned with
/// a reason, in a bounded number of calls, and the finished run stays finished.
#[tokio::test(start_paused = true)]
async fn jobs_for_missing_and_finished_runs_are_disposed_of_in_bounded_calls() {
    let rig = Rig::new();
    rig.send(&job("no-such-run", "a")).await;
    let calls = rig.run_worker().await;
    println!(
        "hostile[missing run]: {} port calls besides receives: {:?}; poisoned {:?}",
        Rig::work_calls(&calls),
        calls.nonzero(),
        rig.queue.poisoned()
    );
    assert_eq!(rig.queue.len(), 0);
    assert!(Rig::work_calls(&calls) <= 30, "{:?}", calls.nonzero());
    assert!(
        rig.runs.load("no-such-run").await.unwrap().is_none(),
        "no run conjured up"
    );

    // A finished run: run it to the end, then replay its first job.
    let (run_id, _) = started_run(&rig).await;
    rig.run_worker().await;
    let done = rig.status(&run_id).await.unwrap();
    assert_eq!(done.status, RunPhase::Completed);
    let executions = rig.executions();
    for node in ["a", "b", "nope"] {
        rig.send(&job(&run_id, node)).await;
    }
    let calls = rig.run_worker().await;
    println!(
        "hostile[finished run]: {} port calls besides receives for 3 jobs: {:?}",
        Rig::work_calls(&calls),
        calls.nonzero()
    );
    assert_eq!(rig.queue.len(), 0);
    assert_eq!(rig.executions(), executions, "nothing re-ran");
    assert_eq!(
        rig.status(&run_id).await.unwrap().status,
        RunPhase::Completed
    );
    assert_eq!(
        calls.calls(Operation::RunsCommit),
        0,
        "a finished run is never written"
    );
    assert!(Rig::work_calls(&calls) <= 3 * 5, "{:?}", calls.nonzero());
}

/// Sends `duplicates` copies of a fresh run's first job (the very text the client queued)
/// and lets one worker dispose of them; returns the run's rig and the worker's calls.
async fn duplicated_run(duplicates: u64) -> (Rig, String, MeterSnapshot, u64) {
    let rig = Rig::new();
    let (run_id, _) = started_run(&rig).await;
    let queued = rig.queue.texts();
    assert_eq!(queued.len(), 1, "the client queues the first job");
    for _ in 1..duplicates {
        rig.send(&queued[0]).await;
    }
    let before = rig.executions();
    let calls = rig.run_worker().await;
    let executed = rig.executions() - before;
    (rig, run_id, calls, executed)
}

/// 10,000 duplicates of one job: the nodes run once each, the run completes, and the
/// duplicates cost a small constant number of port calls each (the same per duplicate for
/// 1,000 as for 10,000: linear).
#[tokio::test(start_paused = true)]
async fn ten_thousand_duplicates_of_one_job_cost_a_few_calls_each() {
    let mut per = Vec::new();
    for duplicates in [1_000u64, 10_000] {
        let (rig, run_id, calls, executed) = duplicated_run(duplicates).await;
        let work = Rig::work_calls(&calls);
        // Receives that brought messages (the idle polls of the rest of the 600 s are not
        // the duplicates' cost).
        let receives = calls.calls(Operation::QueueReceive) - calls.empty_receives();
        let per_duplicate = (work + receives) as f64 / duplicates as f64;
        println!(
            "hostile[{duplicates} duplicates]: {work} port calls + {receives} receives = \
             {per_duplicate:.2} per duplicate; {:?}",
            calls.nonzero()
        );
        assert_eq!(rig.queue.len(), 0);
        assert!(rig.queue.poisoned().is_empty());
        assert_eq!(
            rig.status(&run_id).await.unwrap().status,
            RunPhase::Completed
        );
        assert_eq!(executed, 2, "a and b ran once each");
        assert_eq!(calls.calls(Operation::RunsCommit), 2, "one commit per node");
        // Small: a duplicate of the committed job loads, re-sends its successor's job (it
        // cannot know whether the first send happened) and is deleted; that extra job is
        // loaded, found finished and deleted. Receives come in batches.
        assert!(
            per_duplicate <= 7.0,
            "{per_duplicate:.2} calls per duplicate"
        );
        assert!(receives <= duplicates / 4, "receives come in batches");
        per.push(per_duplicate);
    }
    // Linear: ten times the duplicates cost at most ten times the calls (plus a little).
    assert!(per[1] <= per[0] + 0.1, "per-duplicate cost grows: {per:?}");
}
