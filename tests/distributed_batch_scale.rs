//! A large batch through the distributed core on the in-memory backends: 5,000 workers whose
//! outputs are 1 KiB each complete with several worker loops, and the run document is
//! written a bounded number of times for the whole batch (the workers' results are folded
//! into it once, instead of one rewrite of the growing document per worker).
//!
//! `BATCH_ITEMS=N` changes the number of items (the default is 5,000).

use flowcraft_azure::distributed::client::Client;
use flowcraft_azure::distributed::core::Backends;
use flowcraft_azure::distributed::memory::{MemoryCoordinationStore, MemoryQueue, MemoryRunStore};
use flowcraft_azure::distributed::metered::{Meter, Operation};
use flowcraft_azure::distributed::ports::{CoordinationStore, JobQueue, RunStore};
use flowcraft_azure::distributed::worker::{Worker, WorkerConfig};
use flowcraft_azure::flow::blueprint::Blueprint;
use flowcraft_azure::flow::execute::{BlueprintRegistry, Environment};
use flowcraft_azure::flow::node::{NodeContext, NodeError, NodeRegistry, NodeResult};
use flowcraft_azure::flow::runtime::RunStatus;
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// `kib`: outputs a 1 KiB string that starts with its numeric input.
async fn kib(ctx: NodeContext) -> Result<NodeResult, NodeError> {
    let n = ctx.input().and_then(Value::as_u64).unwrap_or(u64::MAX);
    Ok(NodeResult::output(json!(payload(n))))
}

fn payload(n: u64) -> String {
    let head = format!("{n}:");
    format!("{head}{}", "x".repeat(1024 - head.len()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_5000_item_batch_of_1_kib_outputs_completes_and_folds_once() {
    let n: u64 = std::env::var("BATCH_ITEMS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5_000);
    let items: Vec<u64> = (0..n).collect();
    let blueprint = Blueprint::from_json(
        &json!({"id": "big", "nodes": [
            {"id": "s", "uses": "batch-scatter", "inputs": "items",
             "params": {"workerUsesKey": "kib", "gatherNodeId": "g"}},
            {"id": "g", "uses": "batch-gather"},
            {"id": "count", "uses": "echo", "inputs": "g"}],
          "edges": [{"source": "s", "target": "g"}, {"source": "g", "target": "count"}]})
        .to_string(),
    )
    .unwrap();
    let mut registry = NodeRegistry::with_builtins();
    registry.register("kib", kib);
    let mut blueprints = BlueprintRegistry::new();
    blueprints.insert(blueprint);
    let env = Environment::new(registry).with_blueprints(blueprints);
    // The run grows far past one Cosmos item (the Cosmos store spreads it over several).
    let runs = Arc::new(MemoryRunStore::with_document_limit(256 * 1024 * 1024));
    let meter = Meter::new();
    let backends = meter.wrap(&Backends::new(
        Arc::new(MemoryQueue::new()) as Arc<dyn JobQueue>,
        runs.clone() as Arc<dyn RunStore>,
        Arc::new(MemoryCoordinationStore::new()) as Arc<dyn CoordinationStore>,
    ));
    let config = WorkerConfig {
        idle_backoff_max: Duration::from_millis(50),
        ..WorkerConfig::default()
    };
    let shutdown = CancellationToken::new();
    let mut loops = Vec::new();
    for _ in 0..4 {
        let worker = Arc::new(Worker::new(env.clone(), backends.clone(), config.clone()));
        loops.push(tokio::spawn(worker.run(shutdown.clone())));
    }
    let client = Client::new(backends.clone(), env.blueprints.clone());
    let started = Instant::now();
    let mut initial = serde_json::Map::new();
    initial.insert("items".into(), json!(items));
    let run_id = client.start_run("big", initial).await.unwrap();
    let result = client
        .wait_for(&run_id, Duration::from_secs(3600))
        .await
        .unwrap();
    let elapsed = started.elapsed();
    shutdown.cancel();
    for handle in loops {
        let _ = handle.await;
    }
    assert_eq!(result.status, RunStatus::Completed, "{:?}", result.errors);
    let gathered = result.context["g"].as_array().expect("the gather's array");
    assert_eq!(gathered.len() as u64, n);
    for (i, value) in gathered.iter().enumerate() {
        assert_eq!(value, &json!(payload(i as u64)), "item {i}");
    }
    assert_eq!(
        result.context["count"].as_array().map(Vec::len),
        Some(n as usize)
    );
    let worker_outputs = result
        .context
        .keys()
        .filter(|k| k.starts_with("_outputs.kib_"))
        .count();
    assert_eq!(
        worker_outputs as u64, n,
        "every worker's output is in the context"
    );
    let commits = runs.commits();
    let calls = meter.snapshot();
    let per_worker = |op: Operation| calls.calls(op) as f64 / n as f64;
    eprintln!(
        "per worker: {:.3} requests in all, {:.4} loads, {:.4} commits, {:.3} result puts, \
         {:.3} arrivals, {:.4} result pages, {:.4} status writes",
        calls.http_requests() as f64 / n as f64,
        per_worker(Operation::RunsLoad),
        per_worker(Operation::RunsCommit),
        per_worker(Operation::RunsPutWorkerResult),
        per_worker(Operation::RunsRecordArrival),
        per_worker(Operation::RunsWorkerResults),
        per_worker(Operation::RunsWriteStatus),
    );
    // Each worker stores its result and records its arrival once (no redelivery here); the
    // arrivals go through ceil(sqrt(n)) shard ledgers, and the arrival that completes a shard
    // also arrives in the batch's top ledger.
    let width = (1..).find(|w: &u64| w * w >= n).unwrap_or(1);
    assert_eq!(calls.calls(Operation::RunsPutWorkerResult), n);
    assert_eq!(
        calls.calls(Operation::RunsRecordArrival),
        n + n.div_ceil(width)
    );
    eprintln!(
        "batch of {n} x 1 KiB: {:.1} s, {commits} run document commits ({:.4} per worker), \
         {} MB committed, {} loads",
        elapsed.as_secs_f64(),
        commits as f64 / n as f64,
        runs.committed_bytes() / 1_000_000,
        runs.loads(),
    );
    // The scatter, the fold, the gather and its successor: a handful of writes in all,
    // never one per worker (ETag conflicts aside, which only redo a write).
    assert!(
        commits < 20,
        "{commits} commits of the run document for a batch of {n}: expected a handful"
    );
}
