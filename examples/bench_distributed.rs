//! Request-budget benchmark of the distributed core on the in-memory backends.
//!
//! Every port is wrapped in a [`Meter`], so the figures are exact counts of port calls, and
//! projections of the HTTP requests (Queue Storage, Cosmos DB) and Redis round trips the Azure
//! backends would make for them ([`Operation::cost`]). They are NOT measured Azure traffic.
//! Wall-clock figures (nodes/s) are informational only.
//!
//! Scenarios, each run `--runs N` times (default 20) with `--workers W` workers (default 4):
//! - `chain10`: a linear chain of 10 `echo` nodes;
//! - `fanout16`: one `echo` start node, 16 parallel `echo` nodes, one `all` join (`sum`);
//!
//! once one run at a time (`sequential`) and once with all N runs started together
//! (`concurrent`). Every run must complete with the expected outputs and leave no message
//! behind, otherwise the benchmark exits with status 1. Then one idle worker polls an empty
//! queue for `--idle-secs S` (default 10) seconds to show the idle backoff.
//!
//! Run with `cargo run --release --example bench_distributed -- [--runs N] [--workers W]
//! [--idle-secs S]`.

use flowcraft_azure::distributed::client::Client;
use flowcraft_azure::distributed::core::Backends;
use flowcraft_azure::distributed::events::{Event, EventBus};
use flowcraft_azure::distributed::memory::{MemoryCoordinationStore, MemoryQueue, MemoryRunStore};
use flowcraft_azure::distributed::metered::{Meter, MeterSnapshot, Operation, Service};
use flowcraft_azure::distributed::worker::{Worker, WorkerConfig};
use flowcraft_azure::flow::blueprint::Blueprint;
use flowcraft_azure::flow::execute::{BlueprintRegistry, Environment};
use flowcraft_azure::flow::node::NodeRegistry;
use flowcraft_azure::flow::runtime::{RunStatus, WorkflowResult};
use serde_json::{Map, Value, json};
use std::collections::HashSet;
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// How long one run may take before it counts as not completed.
const RUN_TIMEOUT: Duration = Duration::from_secs(60);

/// Idle polling is counted after this settling time (the backoff grows to its maximum).
const IDLE_SETTLE: Duration = Duration::from_secs(2);

/// Parallel branches of the fan-out scenario.
const FAN: usize = 16;

/// Nodes in the chain scenario.
const CHAIN: usize = 10;

struct Options {
    runs: usize,
    workers: usize,
    idle_secs: u64,
}

const USAGE: &str = "usage: bench_distributed [--runs N] [--workers W] [--idle-secs S]";

fn parse_options() -> Result<Options, String> {
    let mut options = Options {
        runs: 20,
        workers: 4,
        idle_secs: 10,
    };
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let value = args
            .next()
            .ok_or_else(|| format!("{flag} needs a value\n{USAGE}"))?;
        let number: u64 = value
            .parse()
            .ok()
            .filter(|n| *n > 0)
            .ok_or_else(|| format!("{flag} needs a positive whole number, got '{value}'"))?;
        let as_usize = usize::try_from(number).map_err(|_| format!("{flag} is too large"))?;
        match flag.as_str() {
            "--runs" => options.runs = as_usize,
            "--workers" => options.workers = as_usize,
            "--idle-secs" => options.idle_secs = number.max(IDLE_SETTLE.as_secs() + 1),
            _ => return Err(format!("unknown option '{flag}'\n{USAGE}")),
        }
    }
    Ok(options)
}

/// One benchmark scenario: a blueprint, its per-run input, and the check of a run's result.
struct Shape {
    name: &'static str,
    blueprint: Blueprint,
    nodes_per_run: u64,
    initial: fn(usize) -> Map<String, Value>,
    check: fn(usize, &WorkflowResult) -> Result<(), String>,
}

fn chain_shape() -> Result<Shape, String> {
    let nodes: Vec<Value> = (0..CHAIN)
        .map(|k| match k {
            0 => json!({"id": "a0", "uses": "echo", "inputs": "seed"}),
            _ => json!({"id": format!("a{k}"), "uses": "echo"}),
        })
        .collect();
    let edges: Vec<Value> = (1..CHAIN)
        .map(|k| json!({"source": format!("a{}", k - 1), "target": format!("a{k}")}))
        .collect();
    let text = json!({"id": "chain10", "nodes": nodes, "edges": edges}).to_string();
    Ok(Shape {
        name: "chain10",
        blueprint: Blueprint::from_json(&text).map_err(|e| e.to_string())?,
        nodes_per_run: CHAIN as u64,
        initial: |run| {
            let mut initial = Map::new();
            initial.insert("seed".into(), json!(format!("seed-{run}")));
            initial
        },
        check: |run, result| {
            let seed = json!(format!("seed-{run}"));
            for k in 0..CHAIN {
                expect_output(result, &format!("a{k}"), &seed)?;
            }
            Ok(())
        },
    })
}

/// The value branch `k` of fan-out run `run` echoes (distinct per run and branch).
fn branch_value(run: usize, k: usize) -> i64 {
    i64::try_from(run * 100 + k).unwrap_or(i64::MAX)
}

fn fanout_shape() -> Result<Shape, String> {
    let mut nodes = vec![json!({"id": "s", "uses": "echo", "inputs": "seed"})];
    let mut edges = Vec::new();
    let mut join_inputs = Map::new();
    for k in 0..FAN {
        let id = format!("b{k}");
        nodes.push(json!({"id": id, "uses": "echo", "inputs": format!("n{k}")}));
        edges.push(json!({"source": "s", "target": id}));
        edges.push(json!({"source": id, "target": "j"}));
        join_inputs.insert(id.clone(), json!(id));
    }
    nodes.push(json!({"id": "j", "uses": "sum", "inputs": join_inputs,
        "config": {"joinStrategy": "all"}}));
    let text = json!({"id": "fanout16", "nodes": nodes, "edges": edges}).to_string();
    Ok(Shape {
        name: "fanout16",
        blueprint: Blueprint::from_json(&text).map_err(|e| e.to_string())?,
        nodes_per_run: FAN as u64 + 2,
        initial: |run| {
            let mut initial = Map::new();
            initial.insert("seed".into(), json!(run));
            for k in 0..FAN {
                initial.insert(format!("n{k}"), json!(branch_value(run, k)));
            }
            initial
        },
        check: |run, result| {
            expect_output(result, "s", &json!(run))?;
            for k in 0..FAN {
                expect_output(result, &format!("b{k}"), &json!(branch_value(run, k)))?;
            }
            let total: i64 = (0..FAN).map(|k| branch_value(run, k)).sum();
            expect_output(result, "j", &json!(total))
        },
    })
}

fn expect_output(result: &WorkflowResult, node: &str, want: &Value) -> Result<(), String> {
    if result.status != RunStatus::Completed {
        return Err(format!(
            "status {:?}, errors {:?}",
            result.status, result.errors
        ));
    }
    match result.context.get(&format!("_outputs.{node}")) {
        Some(got) if got == want => Ok(()),
        got => Err(format!("_outputs.{node} is {got:?}, expected {want}")),
    }
}

/// Counts started attempts and remembers finished runs, from the workers' event bus.
struct Watcher {
    started: AtomicU64,
    lagged: AtomicU64,
    finished: Mutex<HashSet<String>>,
    changed: watch::Sender<u64>,
}

impl Watcher {
    fn spawn(events: &EventBus) -> Arc<Watcher> {
        let watcher = Arc::new(Watcher {
            started: AtomicU64::new(0),
            lagged: AtomicU64::new(0),
            finished: Mutex::new(HashSet::new()),
            changed: watch::channel(0).0,
        });
        let mut receiver = events.subscribe();
        let this = watcher.clone();
        tokio::spawn(async move {
            use tokio::sync::broadcast::error::RecvError;
            loop {
                match receiver.recv().await {
                    Ok(Event::JobStarted { .. }) => {
                        this.started.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(Event::RunFinished { run_id, .. }) => {
                        this.finished_set().insert(run_id);
                        this.changed.send_modify(|n| *n += 1);
                    }
                    Ok(_) => {}
                    Err(RecvError::Lagged(n)) => {
                        this.lagged.fetch_add(n, Ordering::Relaxed);
                        // A lost RunFinished must not leave a waiter stuck: wake them all.
                        this.changed.send_modify(|n| *n += 1);
                    }
                    Err(RecvError::Closed) => return,
                }
            }
        });
        watcher
    }

    fn finished_set(&self) -> std::sync::MutexGuard<'_, HashSet<String>> {
        self.finished.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Waits until `run_id` finished (by event), then reads its result once. When events were
    /// lost, or after the timeout, the run document decides.
    async fn wait(&self, client: &Client, run_id: &str) -> Result<WorkflowResult, String> {
        let mut changes = self.changed.subscribe();
        let deadline = tokio::time::Instant::now() + RUN_TIMEOUT;
        while !self.finished_set().contains(run_id) && self.lagged.load(Ordering::Relaxed) == 0 {
            match tokio::time::timeout_at(deadline, changes.changed()).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) | Err(_) => break,
            }
        }
        match client.status(run_id).await {
            Ok(Some(result)) => Ok(result),
            Ok(None) => Err("the run does not exist".into()),
            Err(e) => Err(format!("cannot read the run: {e}")),
        }
    }
}

/// What one scenario measured.
struct Measured {
    label: String,
    runs: usize,
    executed: u64,
    expected: u64,
    failures: Vec<String>,
    worker: MeterSnapshot,
    client: MeterSnapshot,
    elapsed: Duration,
}

async fn measure(shape: &Shape, options: &Options, concurrent: bool) -> Measured {
    let mode = if concurrent {
        "concurrent"
    } else {
        "sequential"
    };
    let label = format!("{} {mode}", shape.name);
    let queue = Arc::new(MemoryQueue::new());
    let plain = Backends::new(
        queue.clone(),
        Arc::new(MemoryRunStore::new()),
        Arc::new(MemoryCoordinationStore::new()),
    );
    let worker_meter = Meter::new();
    let client_meter = Meter::new();
    let mut blueprints = BlueprintRegistry::new();
    blueprints.insert(shape.blueprint.clone());
    let env = Environment::new(NodeRegistry::with_builtins()).with_blueprints(blueprints);
    let events = EventBus::new(1 << 16);
    let watcher = Watcher::spawn(&events);

    let shutdown = CancellationToken::new();
    let mut loops = Vec::new();
    for _ in 0..options.workers {
        let worker = Worker::new(
            env.clone(),
            worker_meter.wrap(&plain),
            WorkerConfig::default(),
        )
        .with_events(events.clone());
        loops.push(tokio::spawn(Arc::new(worker).run(shutdown.clone())));
    }
    let client = Client::new(client_meter.wrap(&plain), env.blueprints.clone());
    // Reading results back is the benchmark's check, not part of running: not metered.
    let reader = Client::new(plain.clone(), env.blueprints.clone());

    let started = Instant::now();
    let mut failures = Vec::new();
    let mut pending = Vec::new();
    for run in 0..options.runs {
        match client
            .start_run(shape.blueprint.id(), (shape.initial)(run))
            .await
        {
            Ok(run_id) if concurrent => pending.push((run, run_id)),
            Ok(run_id) => check_run(shape, &watcher, &reader, run, &run_id, &mut failures).await,
            Err(e) => failures.push(format!("run {run}: cannot start: {e}")),
        }
    }
    for (run, run_id) in pending {
        check_run(shape, &watcher, &reader, run, &run_id, &mut failures).await;
    }
    let elapsed = started.elapsed();
    shutdown.cancel();
    for handle in loops {
        if let Err(e) = handle.await {
            failures.push(format!("a worker loop ended abnormally: {e}"));
        }
    }
    if !queue.is_empty() {
        failures.push(format!("{} messages were left in the queue", queue.len()));
    }
    let poisoned = queue.poisoned();
    if !poisoned.is_empty() {
        failures.push(format!(
            "{} messages were poisoned: {poisoned:?}",
            poisoned.len()
        ));
    }
    if watcher.lagged.load(Ordering::Relaxed) > 0 {
        failures.push("events were lost, so executed nodes are not exact".into());
    }
    Measured {
        label,
        runs: options.runs,
        executed: watcher.started.load(Ordering::Relaxed),
        expected: shape.nodes_per_run * options.runs as u64,
        failures,
        worker: worker_meter.snapshot(),
        client: client_meter.snapshot(),
        elapsed,
    }
}

async fn check_run(
    shape: &Shape,
    watcher: &Watcher,
    client: &Client,
    run: usize,
    run_id: &str,
    failures: &mut Vec<String>,
) {
    let verdict = match watcher.wait(client, run_id).await {
        Ok(result) => (shape.check)(run, &result),
        Err(e) => Err(e),
    };
    if let Err(e) = verdict {
        failures.push(format!("{} run {run} ({run_id}): {e}", shape.name));
    }
}

fn per(count: u64, nodes: u64) -> f64 {
    count as f64 / nodes.max(1) as f64
}

fn report(m: &Measured, workers: usize) {
    let nodes = m.executed;
    println!(
        "\n== {}: {} runs, {} executed nodes (expected {}), {} workers",
        m.label, m.runs, nodes, m.expected, workers
    );
    println!(
        "   wall clock {:.3} s, {:.0} nodes/s (informational)",
        m.elapsed.as_secs_f64(),
        per(nodes, 1) / m.elapsed.as_secs_f64().max(1e-9)
    );
    println!("   worker port calls per executed node:");
    for (op, calls) in m.worker.nonzero() {
        let errors = m.worker.errors(op);
        let failed = if errors > 0 {
            format!(" ({errors} failed)")
        } else {
            String::new()
        };
        println!("     {:<32} {:>7.3}{failed}", op.name(), per(calls, nodes));
    }
    let receives = m.worker.calls(Operation::QueueReceive);
    let empty = m.worker.empty_receives();
    let received = m.worker.received_messages();
    println!(
        "     (receives: {receives} returned {received} messages, {:.2} per non-empty receive; \
         {empty} came back empty = {:.3} per node)",
        per(received, receives.saturating_sub(empty)),
        per(empty, nodes)
    );
    println!("   client calls per run (start_run):");
    for (op, calls) in m.client.nonzero() {
        println!("     {:<32} {:>7.3}", op.name(), per(calls, m.runs as u64));
    }
    let queue = m.worker.requests(Service::QueueStorage) + m.client.requests(Service::QueueStorage);
    let cosmos = m.worker.requests(Service::Cosmos) + m.client.requests(Service::Cosmos);
    let redis = m.worker.requests(Service::Redis) + m.client.requests(Service::Redis);
    let worker_http = m.worker.http_requests();
    println!("   projected Azure requests per executed node:");
    println!(
        "     workers + client: HTTP {:.2} = Queue Storage {:.2} + Cosmos DB {:.2}; Redis commands {:.2}",
        per(queue + cosmos, nodes),
        per(queue, nodes),
        per(cosmos, nodes),
        per(redis, nodes)
    );
    println!(
        "     workers only:     HTTP {:.2}, or {:.2} without the {} empty receives",
        per(worker_http, nodes),
        per(worker_http.saturating_sub(empty), nodes),
        empty
    );
}

/// One worker on an empty queue: receives per second once the backoff has settled.
async fn measure_idle(seconds: u64) -> (u64, f64) {
    let meter = Meter::new();
    let backends = meter.wrap(&Backends::in_memory());
    let env = Environment::new(NodeRegistry::with_builtins());
    let worker = Arc::new(Worker::new(env, backends, WorkerConfig::default()));
    let shutdown = CancellationToken::new();
    let running = tokio::spawn(worker.run(shutdown.clone()));
    tokio::time::sleep(IDLE_SETTLE).await;
    let settled = meter.snapshot();
    let window = Duration::from_secs(seconds).saturating_sub(IDLE_SETTLE);
    tokio::time::sleep(window).await;
    let end = meter.snapshot();
    shutdown.cancel();
    let _ = running.await;
    let total = end.calls(Operation::QueueReceive);
    let after = end.since(&settled).calls(Operation::QueueReceive);
    (total, after as f64 / window.as_secs_f64().max(1e-9))
}

/// Peak resident set size of this process (`VmHWM`), when /proc says it.
fn peak_rss() -> Option<String> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(format!("{:.1} MiB", kib / 1024.0))
}

#[tokio::main]
async fn main() -> ExitCode {
    let options = match parse_options() {
        Ok(options) => options,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let shapes = match chain_shape().and_then(|c| Ok([c, fanout_shape()?])) {
        Ok(shapes) => shapes,
        Err(e) => {
            eprintln!("error: a benchmark blueprint does not load: {e}");
            return ExitCode::FAILURE;
        }
    };
    println!(
        "bench_distributed: in-memory backends, counts are exact port calls; Azure figures are \
         projections (see flowcraft_azure::distributed::metered), wall clock is noisy"
    );
    let mut failed = false;
    for shape in &shapes {
        for concurrent in [false, true] {
            let measured = measure(shape, &options, concurrent).await;
            report(&measured, options.workers);
            for failure in &measured.failures {
                eprintln!("FAILED: {}: {failure}", measured.label);
                failed = true;
            }
        }
    }
    let (total, rate) = measure_idle(options.idle_secs).await;
    println!(
        "\n== idle: one worker on an empty queue for {} s: {} receives; after {} s of settling \
         {:.2} receives/s (= Queue Storage GET requests/s)",
        options.idle_secs,
        total,
        IDLE_SETTLE.as_secs(),
        rate
    );
    println!(
        "\npeak RSS of this process (all workers, client and in-memory backends): {}",
        peak_rss().unwrap_or_else(|| "unavailable (no /proc/self/status)".into())
    );
    if failed {
        eprintln!("some runs did not complete correctly: the figures above are not valid");
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}
