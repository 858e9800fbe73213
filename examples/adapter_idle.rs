//! Idle-worker benchmark of the Azure queue adapter on the local stack (or real Azure): one
//! worker polls an empty queue; after `--warmup-secs W` (default 15, the backoff's ramp up
//! to its longest pause) every HTTP request is counted at the transport for `--idle-secs S`
//! (default 20), then a one-node run is submitted `--pickups N` times (default
//! 10) to the idle worker and the time from submit to the node's start is measured.
//!
//! With `REDIS_URL` set, the worker uses Redis wake-ups and the longer idle pause; without,
//! it polls (`FLOWCRAFT_POLL_MAX_MS` overrides the pause either way). The run store is in
//! memory (this measures the queue, not Cosmos DB). Environment as for the worker
//! (`eval "$(scripts/emulators.sh env)"`). Prints one JSON object:
//! `{warmup_seconds, idle_seconds, idle_queue_requests, idle_requests_per_second, wakeups, pickups,
//! pickup_latency_p50_ms, pickup_latency_max_ms}`. Wall-clock figures; informational only.
//!
//! Run with `cargo run --release --example adapter_idle -- [--warmup-secs W] [--idle-secs S]
//! [--pickups N]`.

use async_trait::async_trait;
use flowcraft_azure::Error;
use flowcraft_azure::adapter::{AzureJobQueue, RedisCoordinationStore, Settings};
use flowcraft_azure::azure::queue::QueueClient;
use flowcraft_azure::distributed::client::Client;
use flowcraft_azure::distributed::core::Backends;
use flowcraft_azure::distributed::events::{Event, EventBus};
use flowcraft_azure::distributed::memory::{MemoryCoordinationStore, MemoryRunStore};
use flowcraft_azure::distributed::ports::CoordinationStore;
use flowcraft_azure::distributed::worker::Worker;
use flowcraft_azure::flow::blueprint::Blueprint;
use flowcraft_azure::flow::execute::{BlueprintRegistry, Environment};
use flowcraft_azure::flow::node::NodeRegistry;
use flowcraft_azure::wire::pipeline::Pipeline;
use flowcraft_azure::wire::reqwest_transport::ReqwestTransport;
use flowcraft_azure::wire::transport::{HttpRequest, HttpResponse, Transport};
use serde_json::json;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// Counts the requests it forwards.
#[derive(Debug)]
struct Counting {
    inner: Arc<dyn Transport>,
    requests: AtomicU64,
}

#[async_trait]
impl Transport for Counting {
    async fn send(&self, request: HttpRequest) -> Result<HttpResponse, Error> {
        self.requests.fetch_add(1, Ordering::Relaxed);
        self.inner.send(request).await
    }
}

fn arg(name: &str, default: u64) -> u64 {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[tokio::main]
async fn main() -> ExitCode {
    match bench().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("adapter_idle: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn bench() -> Result<(), Error> {
    let idle_secs = arg("--idle-secs", 20);
    let pickups = arg("--pickups", 10);
    let warmup_secs = arg("--warmup-secs", 15);
    let settings = Settings::from_env()?;
    let counting = Arc::new(Counting {
        inner: Arc::new(ReqwestTransport::new(Duration::from_secs(30))?),
        requests: AtomicU64::new(0),
    });
    let pipeline = Pipeline::new(counting.clone(), settings.storage.signer());
    let name = format!(
        "idle-bench-{}",
        &uuid::Uuid::new_v4().simple().to_string()[..8]
    );
    let client = QueueClient::new(pipeline, &settings.storage.queue_endpoint, &name)?;
    let mut queue = AzureJobQueue::new(client)?;
    queue.ensure_resources().await?;
    let redis = match &settings.redis_url {
        Some(url) => Some(Arc::new(
            RedisCoordinationStore::connect(url.expose()).await?,
        )),
        None => None,
    };
    let coordination: Arc<dyn CoordinationStore> = match &redis {
        Some(redis) => {
            queue = queue.with_wakeups(redis.clone());
            redis.clone()
        }
        None => Arc::new(MemoryCoordinationStore::new()),
    };
    let queue = Arc::new(queue);
    let backends = Backends::new(queue.clone(), Arc::new(MemoryRunStore::new()), coordination);
    let blueprint = Blueprint::from_json(
        r#"{"id":"idle-bench","nodes":[{"id":"a","uses":"echo"}],"edges":[]}"#,
    )
    .map_err(|e| Error::invalid_input(e.to_string()))?;
    let mut registry = BlueprintRegistry::new();
    registry.insert(blueprint);
    let env = Environment::new(NodeRegistry::with_builtins()).with_blueprints(registry);
    let events = EventBus::default();
    let worker = Arc::new(
        Worker::new(env.clone(), backends.clone(), settings.worker_config())
            .with_events(events.clone()),
    );
    let shutdown = CancellationToken::new();
    let running = tokio::spawn(worker.run(shutdown.clone()));

    // The backoff starts short and doubles up to the longest pause: skip that ramp.
    tokio::time::sleep(Duration::from_secs(warmup_secs)).await;
    let before = counting.requests.load(Ordering::Relaxed);
    tokio::time::sleep(Duration::from_secs(idle_secs)).await;
    let idle_requests = counting.requests.load(Ordering::Relaxed) - before;

    let submitter = Client::new(backends, env.blueprints.clone());
    let mut latencies = Vec::new();
    for i in 0..pickups {
        // Let the worker settle into its idle pause first.
        tokio::time::sleep(Duration::from_millis(1500 + 250 * (i % 4))).await;
        let mut seen = events.subscribe();
        let start = Instant::now();
        let run_id = submitter
            .start_run("idle-bench", serde_json::Map::new())
            .await?;
        loop {
            match tokio::time::timeout(Duration::from_secs(60), seen.recv()).await {
                Ok(Ok(Event::JobStarted { run_id: r, .. })) if r == run_id => break,
                Ok(Ok(_)) | Ok(Err(tokio::sync::broadcast::error::RecvError::Lagged(_))) => {}
                _ => return Err(Error::unexpected("the submitted run never started")),
            }
        }
        latencies.push(start.elapsed().as_secs_f64() * 1000.0);
        submitter.wait_for(&run_id, Duration::from_secs(60)).await?;
    }
    shutdown.cancel();
    let _ = running.await;
    let _ = queue.client().delete().await;
    let _ = queue.poison_client().delete().await;
    latencies.sort_by(f64::total_cmp);
    let p50 = latencies.get(latencies.len() / 2).copied().unwrap_or(0.0);
    let max = latencies.last().copied().unwrap_or(0.0);
    println!(
        "{}",
        json!({
            "warmup_seconds": warmup_secs,
            "idle_seconds": idle_secs,
            "idle_queue_requests": idle_requests,
            "idle_requests_per_second": idle_requests as f64 / idle_secs.max(1) as f64,
            "wakeups": redis.is_some(),
            "poll_max_ms": settings.effective_poll_max().as_millis() as u64,
            "pickups": pickups,
            "pickup_latency_p50_ms": (p50 * 10.0).round() / 10.0,
            "pickup_latency_max_ms": (max * 10.0).round() / 10.0,
        })
    );
    Ok(())
}
