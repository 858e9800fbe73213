//! Shared harness for the distributed tests: in-memory backends, N concurrent workers in this
//! process, a client, and a few test nodes that count their executions.
#![allow(dead_code)]

use flowcraft_azure::distributed::client::Client;
use flowcraft_azure::distributed::core::Backends;
use flowcraft_azure::distributed::events::{Event, EventBus};
use flowcraft_azure::distributed::memory::{MemoryCoordinationStore, MemoryQueue, MemoryRunStore};
use flowcraft_azure::distributed::ports::{CoordinationStore, JobQueue, RunStore};
use flowcraft_azure::distributed::worker::{Worker, WorkerConfig};
use flowcraft_azure::flow::blueprint::Blueprint;
use flowcraft_azure::flow::execute::{BlueprintRegistry, Environment};
use flowcraft_azure::flow::node::{Dependencies, NodeContext, NodeError, NodeRegistry, NodeResult};
use flowcraft_azure::flow::runtime::WorkflowResult;
use serde_json::{Map, Value, json};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// Executions per node id.
#[derive(Debug, Default)]
pub struct Counter(Mutex<HashMap<String, u32>>);

impl Counter {
    pub fn bump(&self, node: &str) {
        let mut map = self.0.lock().unwrap();
        *map.entry(node.to_string()).or_default() += 1;
    }
    pub fn get(&self, node: &str) -> u32 {
        self.0.lock().unwrap().get(node).copied().unwrap_or(0)
    }
    pub fn total(&self) -> u32 {
        self.0.lock().unwrap().values().sum()
    }
}

/// `count`: counts the execution, echoes the input (or `params.output` when given) and
/// returns `params.action` as action.
async fn count(ctx: NodeContext) -> Result<NodeResult, NodeError> {
    if let Some(c) = ctx.dependency::<Counter>() {
        c.bump(ctx.node_id());
    }
    let output = ctx
        .params()
        .get("output")
        .cloned()
        .or_else(|| ctx.input().cloned());
    Ok(NodeResult {
        output,
        action: ctx
            .params()
            .get("action")
            .and_then(Value::as_str)
            .map(str::to_string),
        ..NodeResult::default()
    })
}

/// `mark`: counts, writes its own context key `mark.<id>` and outputs its id.
async fn mark(ctx: NodeContext) -> Result<NodeResult, NodeError> {
    if let Some(c) = ctx.dependency::<Counter>() {
        c.bump(ctx.node_id());
    }
    ctx.context()
        .set(format!("mark.{}", ctx.node_id()), json!(true));
    Ok(NodeResult::output(json!(ctx.node_id())))
}

/// `flaky`: counts and fails attempts below `params.succeedOn` (default: never succeeds).
async fn flaky(ctx: NodeContext) -> Result<NodeResult, NodeError> {
    if let Some(c) = ctx.dependency::<Counter>() {
        c.bump(ctx.node_id());
    }
    let succeed_on = ctx
        .params()
        .get("succeedOn")
        .and_then(Value::as_u64)
        .unwrap_or(u64::MAX);
    if u64::from(ctx.attempt()) >= succeed_on {
        Ok(NodeResult::output(json!(format!(
            "ok on {}",
            ctx.attempt()
        ))))
    } else {
        Err(NodeError::new(format!("boom on attempt {}", ctx.attempt())))
    }
}

/// `slow`: counts, then sleeps `params.ms` (tokio time).
async fn slow(ctx: NodeContext) -> Result<NodeResult, NodeError> {
    if let Some(c) = ctx.dependency::<Counter>() {
        c.bump(ctx.node_id());
    }
    let ms = ctx.params().get("ms").and_then(Value::as_u64).unwrap_or(0);
    tokio::time::sleep(Duration::from_millis(ms)).await;
    Ok(NodeResult::output(json!(ms)))
}

/// `tick`: counts, adds one to context key `i` and sets `more` = (i < params.until).
async fn tick(ctx: NodeContext) -> Result<NodeResult, NodeError> {
    if let Some(c) = ctx.dependency::<Counter>() {
        c.bump(ctx.node_id());
    }
    let i = ctx.context().get("i").and_then(|v| v.as_u64()).unwrap_or(0) + 1;
    let until = ctx
        .params()
        .get("until")
        .and_then(Value::as_u64)
        .unwrap_or(3);
    ctx.context().set("i", json!(i));
    ctx.context().set("more", json!(i < until));
    Ok(NodeResult::output(json!(i)))
}

/// `double`: counts and outputs twice its numeric input.
async fn double(ctx: NodeContext) -> Result<NodeResult, NodeError> {
    if let Some(c) = ctx.dependency::<Counter>() {
        c.bump(ctx.node_id());
    }
    let n = ctx.input().and_then(Value::as_f64).unwrap_or(0.0);
    Ok(NodeResult::output(json!(n * 2.0)))
}

/// `whoami`: outputs the run id the node sees.
async fn whoami(ctx: NodeContext) -> Result<NodeResult, NodeError> {
    Ok(NodeResult::output(json!(ctx.run_id())))
}

/// Built-ins, utilities and the test nodes above.
pub fn registry() -> NodeRegistry {
    let mut r = NodeRegistry::with_builtins();
    r.register("count", count);
    r.register("mark", mark);
    r.register("flaky", flaky);
    r.register("slow", slow);
    r.register("tick", tick);
    r.register("double", double);
    r.register("whoami", whoami);
    r
}

pub fn blueprint(json: &str) -> Blueprint {
    Blueprint::from_json(json).unwrap_or_else(|e| panic!("test blueprint: {e}"))
}

pub struct Harness {
    pub queue: Arc<MemoryQueue>,
    pub runs: Arc<MemoryRunStore>,
    pub coordination: Arc<MemoryCoordinationStore>,
    pub backends: Backends,
    pub env: Environment,
    pub counter: Arc<Counter>,
    pub client: Client,
    pub events: EventBus,
    pub config: WorkerConfig,
    shutdown: CancellationToken,
    workers: Vec<JoinHandle<()>>,
}

impl Harness {
    /// Backends + client, no workers yet.
    pub fn new(blueprints: &[&str]) -> Self {
        Self::with_queue(blueprints, None)
    }

    /// Like `new`, with a custom queue wrapper over the memory queue.
    pub fn with_queue(
        blueprints: &[&str],
        wrap: Option<&dyn Fn(Arc<MemoryQueue>) -> Arc<dyn JobQueue>>,
    ) -> Self {
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
        let runs = Arc::new(MemoryRunStore::new());
        let coordination = Arc::new(MemoryCoordinationStore::new());
        let queue_port: Arc<dyn JobQueue> = match wrap {
            Some(f) => f(queue.clone()),
            None => queue.clone(),
        };
        let backends = Backends::new(
            queue_port,
            runs.clone() as Arc<dyn RunStore>,
            coordination.clone() as Arc<dyn CoordinationStore>,
        );
        let events = EventBus::default();
        let client =
            Client::new(backends.clone(), env.blueprints.clone()).with_events(events.clone());
        let config = WorkerConfig {
            defer_delay: Duration::from_secs(5),
            ..WorkerConfig::default()
        };
        Harness {
            queue,
            runs,
            coordination,
            backends,
            env,
            counter,
            client,
            events,
            config,
            shutdown: CancellationToken::new(),
            workers: Vec::new(),
        }
    }

    pub fn worker(&self) -> Worker {
        self.worker_with(self.env.clone())
    }

    pub fn worker_with(&self, env: Environment) -> Worker {
        Worker::new(env, self.backends.clone(), self.config.clone())
            .with_events(self.events.clone())
    }

    /// Starts `n` worker loops.
    pub fn spawn_workers(&mut self, n: usize) {
        for _ in 0..n {
            let worker = Arc::new(self.worker());
            let token = self.shutdown.clone();
            self.workers.push(tokio::spawn(worker.run(token)));
        }
    }

    pub fn spawn_worker(&mut self, worker: Worker) {
        let token = self.shutdown.clone();
        self.workers.push(tokio::spawn(Arc::new(worker).run(token)));
    }

    pub async fn start(&self, blueprint_id: &str, initial: Value) -> String {
        let Value::Object(map) = initial else {
            panic!("initial context must be an object")
        };
        self.client.start_run(blueprint_id, map).await.unwrap()
    }

    /// Starts a run of `blueprint_id` over `{}` and returns once a worker started a job.
    pub async fn start_and_await_first_job(&self, blueprint_id: &str) -> String {
        let mut events = self.events.subscribe();
        let run_id = self.start(blueprint_id, json!({})).await;
        loop {
            match events.recv().await {
                Ok(Event::JobStarted { .. }) => return run_id,
                Err(tokio::sync::broadcast::error::RecvError::Closed) => {
                    panic!("the event bus closed before a job started")
                }
                _ => {}
            }
        }
    }

    pub async fn wait(&self, run_id: &str) -> WorkflowResult {
        self.client
            .wait_for(run_id, Duration::from_secs(3600))
            .await
            .unwrap()
    }

    /// Starts a run and waits until it is no longer running.
    pub async fn run(&self, blueprint_id: &str, initial: Value) -> WorkflowResult {
        let run_id = self.start(blueprint_id, initial).await;
        self.wait(&run_id).await
    }

    /// Receives the first visible message (30 s lease). Panics when there is none.
    pub async fn receive_one(&self) -> flowcraft_azure::distributed::ports::QueueMessage {
        let mut batch = self
            .queue
            .receive(1, Duration::from_secs(30))
            .await
            .unwrap();
        assert!(!batch.is_empty(), "no visible message");
        batch.remove(0)
    }

    /// Receives every visible message, keeps the first one for `node` and gives the others
    /// back at once. Panics when there is none (the test expected one).
    pub async fn take(&self, node: &str) -> flowcraft_azure::distributed::ports::QueueMessage {
        let batch = self
            .queue
            .receive(32, Duration::from_secs(3600))
            .await
            .unwrap();
        let mut found = None;
        for m in batch {
            let job = flowcraft_azure::distributed::job::JobMessage::decode(&m.text).unwrap();
            if found.is_none() && job.node_id == node {
                found = Some(m);
            } else {
                self.queue
                    .release(&m.id, &m.receipt, Duration::ZERO)
                    .await
                    .unwrap();
            }
        }
        found.unwrap_or_else(|| panic!("no queued job for node {node}"))
    }

    /// Node ids of the visible queued jobs (peek: receive and give back).
    pub async fn queued_nodes(&self) -> Vec<String> {
        let batch = self
            .queue
            .receive(32, Duration::from_secs(3600))
            .await
            .unwrap();
        let mut nodes = Vec::new();
        for m in batch {
            let job = flowcraft_azure::distributed::job::JobMessage::decode(&m.text).unwrap();
            nodes.push(job.node_id);
            self.queue
                .release(&m.id, &m.receipt, Duration::ZERO)
                .await
                .unwrap();
        }
        nodes.sort();
        nodes
    }

    /// Handles `m` with a fresh worker and deletes it.
    pub async fn handle(&self, m: &flowcraft_azure::distributed::ports::QueueMessage) {
        let d = self.worker().handle_message(m).await;
        assert_eq!(
            d,
            flowcraft_azure::distributed::worker::Disposition::Complete
        );
        self.queue.complete(&m.id, &m.receipt).await.unwrap();
    }

    pub async fn stop(mut self) {
        self.shutdown.cancel();
        for w in self.workers.drain(..) {
            w.await.unwrap();
        }
    }
}

/// Context without the bookkeeping keys every distributed run has, for comparisons.
pub fn user_context(result: &WorkflowResult) -> Map<String, Value> {
    let mut ctx = result.context.clone();
    for key in ["_executionId", "blueprintId", "blueprintVersion"] {
        ctx.remove(key);
    }
    ctx
}
