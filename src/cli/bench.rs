//! `flowcraft-azure bench --workload chain|fanout|idle [--runs N] [--workers W] [--seconds S]
//! [--memory] [--json]`: measures what a workload costs, counted at the transport.
//!
//! On Azure (the default: the local stack, or real Azure when the connection strings point
//! there) it starts W `worker` PROCESSES, each recording its HTTP traffic with `--trace`, on a
//! private queue and database (`bench-<tag>`, deleted afterwards), submits N runs at once,
//! waits for them, checks every run's final state, stops the workers with SIGTERM and reads
//! their traces: every HTTP attempt by service and operation (retries and 412 conflicts
//! included), the RU charge Cosmos reported, Redis commands (the server's
//! `total_commands_processed`, so the bench's own two INFO calls are included) and the peak
//! resident memory of each worker (`VmHWM`). The `idle` workload lets W workers idle for S
//! seconds and counts their queue requests, then submits single-node runs to the idle fleet and
//! times submit -> run finished (an upper bound of "first node started").
//!
//! `--memory` runs the same workloads on the in-memory backends with W workers in this process
//! and reports the Azure requests those port calls WOULD cost (a projection, not traffic).
//! Wall time and latency are informational; the request counts are exact.

mod shapes;
mod traffic;

use super::azure::AzureArgs;
use crate::adapter::{AzureBackends, Settings};
use crate::azure::cosmos::CosmosClient;
use crate::distributed::client::Client;
use crate::distributed::core::Backends;
use crate::distributed::metered::{Meter, Service};
use crate::distributed::worker::{Worker, WorkerConfig};
use crate::flow::blueprint::Blueprint;
use crate::flow::execute::{BlueprintRegistry, Environment};
use crate::flow::node::NodeRegistry;
use crate::flow::runtime::RunStatus;
use crate::wire::pipeline::Pipeline;
use serde::Serialize;
use shapes::Shape;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;
use traffic::Traffic;

/// How long one run may take before the bench gives up on it.
const RUN_TIMEOUT: Duration = Duration::from_secs(300);
/// Single-node runs submitted to the idle fleet for the pickup latency.
const PICKUPS: usize = 5;
/// Pause before each pickup, so the workers are back in their longest idle backoff.
const PICKUP_PAUSE: Duration = Duration::from_secs(3);

/// The workload to measure.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Workload {
    /// A 10-node chain of `echo` nodes.
    Chain,
    /// One start node, 16 `echo` branches, an `all` join.
    Fanout,
    /// Idle workers, then runs submitted to the idle fleet.
    Idle,
}

/// Arguments of `bench`.
#[derive(Debug, clap::Args)]
#[command(
    after_help = "Exit codes: 0 every run completed with the expected state, 1 otherwise.\n\
                        Example (local stack):\n  \
                        eval \"$(scripts/emulators.sh env)\"\n  \
                        flowcraft-azure bench --workload chain --runs 20 --workers 4 --json"
)]
pub struct Args {
    /// What to run.
    #[arg(long, value_enum)]
    pub workload: Workload,
    /// Runs to submit (chain, fanout).
    #[arg(long, value_name = "N", default_value_t = 20)]
    pub runs: usize,
    /// Worker processes (in-process workers with --memory).
    #[arg(long, value_name = "W", default_value_t = 1)]
    pub workers: usize,
    /// How long the idle workload idles.
    #[arg(long, value_name = "S", default_value_t = 20)]
    pub seconds: u64,
    /// Use the in-memory backends and project the Azure requests.
    #[arg(long)]
    pub memory: bool,
    /// Print one JSON object.
    #[arg(long)]
    pub json: bool,
    /// Options shared by the Azure commands (the bench's own client traffic).
    #[command(flatten)]
    pub azure: AzureArgs,
}

/// What the bench measured (the `--json` object).
#[derive(Debug, Clone, Default, Serialize)]
pub struct Report {
    /// `chain`, `fanout` or `idle`.
    pub workload: String,
    /// `azure` (counted at the transport) or `memory` (projected).
    pub backend: String,
    /// Runs submitted.
    pub runs: usize,
    /// Workers.
    pub workers: usize,
    /// Runs that completed with the expected state.
    pub runs_completed: usize,
    /// Runs that did not.
    pub runs_failed: usize,
    /// Nodes the completed runs executed (runs x nodes per run).
    pub nodes_executed: u64,
    /// From the first submit to the last run finished.
    pub wall_seconds: f64,
    /// Nodes per second of wall time.
    pub nodes_per_second: f64,
    /// Worker HTTP requests (setup excluded) per executed node.
    pub requests_per_node: f64,
    /// Worker HTTP requests by operation (setup included).
    pub requests_by_operation: BTreeMap<String, u64>,
    /// Cosmos 412 answers (lost conditional writes), included in the requests.
    pub conflicts: u64,
    /// Redis commands per executed node.
    pub redis_commands_per_node: f64,
    /// Cosmos request units per executed node.
    pub ru_per_node: f64,
    /// The largest peak resident set of one worker.
    pub worker_peak_rss_bytes: u64,
    /// Median submit -> finished of a run.
    pub latency_p50_ms: f64,
    /// 99th percentile submit -> finished of a run.
    pub latency_p99_ms: f64,
    /// Idle workload: queue requests per second of ONE idle worker.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub idle_requests_per_second: Option<f64>,
    /// Idle workload: median submit -> single-node run finished on an idle fleet.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pickup_latency_p50_ms: Option<f64>,
    /// What went wrong with the runs that failed (first few).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub failures: Vec<String>,
}

fn percentile(sorted_ms: &[f64], p: f64) -> f64 {
    if sorted_ms.is_empty() {
        return 0.0;
    }
    let rank = (p * (sorted_ms.len() - 1) as f64).round() as usize;
    sorted_ms[rank.min(sorted_ms.len() - 1)]
}

fn ratio(n: f64, d: f64) -> f64 {
    if d > 0.0 { n / d } else { 0.0 }
}

/// Runs the submitted runs to the end: submit all, poll until each is no longer running,
/// check each. Returns (latencies in ms, failures, wall time).
async fn drive(
    client: &Client,
    shape: &Shape,
    runs: usize,
) -> Result<(Vec<f64>, Vec<String>, Duration), String> {
    let started = Instant::now();
    let mut pending = Vec::with_capacity(runs);
    for n in 0..runs {
        let id = client
            .start_run(shape.id(), shape.input(n))
            .await
            .map_err(|e| format!("cannot start run {n}: {e}"))?;
        pending.push((n, id, Instant::now()));
    }
    let mut latencies = Vec::with_capacity(runs);
    let mut failures = Vec::new();
    while !pending.is_empty() {
        if started.elapsed() > RUN_TIMEOUT {
            for (n, id, _) in &pending {
                failures.push(format!("run {n} ({id}) did not finish in time"));
            }
            break;
        }
        let mut still = Vec::with_capacity(pending.len());
        for (n, id, submitted) in pending {
            match client.status(&id).await {
                Ok(Some(result)) if result.status == RunStatus::Running => {
                    still.push((n, id, submitted))
                }
                Ok(Some(result)) => {
                    latencies.push(submitted.elapsed().as_secs_f64() * 1000.0);
                    if let Err(why) = shape.check(n, &result) {
                        failures.push(format!("run {n} ({id}): {why}"));
                    }
                }
                Ok(None) => failures.push(format!("run {n} ({id}) disappeared")),
                Err(e) => {
                    tracing::debug!(error = %e, "status read failed; polling again");
                    still.push((n, id, submitted));
                }
            }
        }
        pending = still;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    latencies.sort_by(f64::total_cmp);
    Ok((latencies, failures, started.elapsed()))
}

fn fill_runs(
    report: &mut Report,
    shape: &Shape,
    runs: usize,
    driven: (Vec<f64>, Vec<String>, Duration),
) {
    let (latencies, failures, wall) = driven;
    report.runs = runs;
    report.runs_failed = failures.len();
    report.runs_completed = runs.saturating_sub(failures.len());
    report.nodes_executed = report.runs_completed as u64 * shape.nodes_per_run;
    report.wall_seconds = wall.as_secs_f64();
    report.nodes_per_second = ratio(report.nodes_executed as f64, report.wall_seconds);
    report.latency_p50_ms = percentile(&latencies, 0.5);
    report.latency_p99_ms = percentile(&latencies, 0.99);
    report.failures = failures.into_iter().take(10).collect();
}

fn environment(shape: &Shape) -> Result<Environment, String> {
    let blueprint = Blueprint::from_json(&shape.blueprint.to_string())
        .map_err(|e| format!("bench blueprint: {e}"))?;
    let mut registry = BlueprintRegistry::new();
    registry.insert(blueprint);
    Ok(Environment::new(NodeRegistry::with_builtins()).with_blueprints(registry))
}

fn peak_rss_bytes(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

/// The in-memory bench: in-process workers, metered ports, projected requests.
async fn bench_memory(args: &Args, shape: &Shape) -> Result<Report, String> {
    let env = environment(shape)?;
    let meter = Meter::new();
    let raw = Backends::in_memory();
    let metered = meter.wrap(&raw);
    let shutdown = CancellationToken::new();
    let loops: Vec<_> = (0..args.workers.max(1))
        .map(|_| {
            let worker = Worker::new(env.clone(), metered.clone(), WorkerConfig::default());
            tokio::spawn(Arc::new(worker).run(shutdown.clone()))
        })
        .collect();
    // The client is not metered: the figures are the workers'.
    let client = Client::new(raw, env.blueprints.clone());
    let mut report = Report {
        workload: format!("{:?}", args.workload).to_lowercase(),
        backend: "memory".into(),
        workers: args.workers.max(1),
        ..Report::default()
    };
    if args.workload == Workload::Idle {
        let before = meter.snapshot();
        tokio::time::sleep(Duration::from_secs(args.seconds.max(1))).await;
        let idle = meter.snapshot().since(&before);
        report.idle_requests_per_second = Some(ratio(
            idle.requests(Service::QueueStorage) as f64,
            args.seconds.max(1) as f64 * report.workers as f64,
        ));
    } else {
        let driven = drive(&client, shape, args.runs.max(1)).await?;
        fill_runs(&mut report, shape, args.runs.max(1), driven);
        let snapshot = meter.snapshot();
        let nodes = report.nodes_executed as f64;
        report.requests_per_node = ratio(snapshot.http_requests() as f64, nodes);
        report.redis_commands_per_node = ratio(snapshot.requests(Service::Redis) as f64, nodes);
        report.requests_by_operation = snapshot
            .nonzero()
            .into_iter()
            .map(|(op, n)| (op.name().to_string(), n))
            .collect();
    }
    shutdown.cancel();
    for handle in loops {
        let _ = handle.await;
    }
    report.worker_peak_rss_bytes = peak_rss_bytes(std::process::id());
    Ok(report)
}

/// A worker process of the bench, stopped (SIGTERM, then SIGKILL) when dropped.
struct WorkerProcess {
    child: Child,
    trace: PathBuf,
}

impl WorkerProcess {
    fn spawn(dir: &Path, index: usize, vars: &[(&str, String)]) -> Result<Self, String> {
        let exe = std::env::current_exe().map_err(|e| format!("cannot find this program: {e}"))?;
        let trace = dir.join(format!("worker-{index}.jsonl"));
        let child = Command::new(exe)
            .arg("worker")
            .arg("--blueprints")
            .arg(dir)
            .arg("--trace")
            .arg(&trace)
            .envs(vars.iter().map(|(k, v)| (*k, v.as_str())))
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| format!("cannot start a worker process: {e}"))?;
        Ok(WorkerProcess { child, trace })
    }

    /// Peak RSS so far, then a graceful stop.
    fn stop(&mut self) -> u64 {
        let rss = peak_rss_bytes(self.child.id());
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        for _ in 0..100 {
            if let Ok(Some(_)) = self.child.try_wait() {
                return rss;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        rss
    }
}

impl Drop for WorkerProcess {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// The Redis server's `total_commands_processed` (from `INFO stats`), when Redis is set up.
async fn redis_commands(settings: &Settings) -> Option<u64> {
    let url = settings.redis_url.as_ref()?;
    let client = redis::Client::open(url.expose()).ok()?;
    let mut conn = client.get_multiplexed_async_connection().await.ok()?;
    let info: String = redis::cmd("INFO")
        .arg("stats")
        .query_async(&mut conn)
        .await
        .ok()?;
    info.lines()
        .find_map(|l| l.strip_prefix("total_commands_processed:"))
        .and_then(|v| v.trim().parse().ok())
}

fn traffic_of(workers: &[WorkerProcess]) -> Result<Traffic, String> {
    let mut traffic = Traffic::default();
    for w in workers {
        if w.trace.exists() {
            traffic.add_file(&w.trace)?;
        }
    }
    Ok(traffic)
}

/// The Azure bench: worker processes with traces on a private queue and database.
async fn bench_azure(args: &Args, shape: &Shape) -> Result<Report, String> {
    let tag = &uuid::Uuid::new_v4().simple().to_string()[..10];
    let queue = format!("bench-{tag}");
    let database = format!("bench-{tag}");
    // Lowercase letters, digits and '-' are valid names for both services. The overrides go
    // to the worker processes and to the bench's own settings (the process environment is
    // not changed).
    let dir = std::env::temp_dir().join(format!("flowcraft-bench-{tag}"));
    std::fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let blueprint_file = dir.join(format!("{}.json", shape.id()));
    std::fs::write(&blueprint_file, shape.blueprint.to_string())
        .map_err(|e| format!("cannot write {}: {e}", blueprint_file.display()))?;
    let vars = vec![
        ("FLOWCRAFT_QUEUE", queue.clone()),
        ("FLOWCRAFT_DATABASE", database.clone()),
        // Workers log warnings only, unless asked otherwise.
        (
            "RUST_LOG",
            std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into()),
        ),
    ];
    let outcome = bench_azure_in(args, shape, &dir, &vars).await;
    let _ = std::fs::remove_dir_all(&dir);
    outcome
}

async fn bench_azure_in(
    args: &Args,
    shape: &Shape,
    dir: &Path,
    vars: &[(&str, String)],
) -> Result<Report, String> {
    let lookup = |name: &str| {
        vars.iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.clone())
            .or_else(|| std::env::var(name).ok())
    };
    let settings = Settings::from_lookup(lookup).map_err(|e| e.to_string())?;
    let backends =
        super::azure::connect_provisioned(&settings, &args.azure, "the bench queue and database")
            .await?;
    let env = environment(shape)?;
    let client = Client::new(backends.backends.clone(), env.blueprints.clone());
    let mut workers = Vec::new();
    for i in 0..args.workers.max(1) {
        workers.push(WorkerProcess::spawn(dir, i, vars)?);
    }
    // Wait until every worker has made its first request (it is polling).
    let ready_by = Instant::now() + Duration::from_secs(30);
    while workers.iter().any(|w| !w.trace.exists()) && Instant::now() < ready_by {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let redis_before = redis_commands(&settings).await;
    let mut report = Report {
        workload: format!("{:?}", args.workload).to_lowercase(),
        backend: "azure".into(),
        workers: workers.len(),
        ..Report::default()
    };
    if args.workload == Workload::Idle {
        let before = traffic_of(&workers)?;
        tokio::time::sleep(Duration::from_secs(args.seconds.max(1))).await;
        let after = traffic_of(&workers)?;
        let queue_requests = after.service_requests("queue") - before.service_requests("queue");
        report.idle_requests_per_second = Some(ratio(
            queue_requests as f64,
            args.seconds.max(1) as f64 * workers.len() as f64,
        ));
        let mut pickups = Vec::new();
        for _ in 0..PICKUPS {
            tokio::time::sleep(PICKUP_PAUSE).await;
            let (latencies, failures, _) = drive(&client, shape, 1).await?;
            report.failures.extend(failures);
            pickups.extend(latencies);
        }
        pickups.sort_by(f64::total_cmp);
        report.pickup_latency_p50_ms = Some(percentile(&pickups, 0.5));
        report.runs = PICKUPS;
        report.runs_failed = report.failures.len();
        report.runs_completed = PICKUPS.saturating_sub(report.runs_failed);
    } else {
        let driven = drive(&client, shape, args.runs.max(1)).await?;
        fill_runs(&mut report, shape, args.runs.max(1), driven);
    }
    let redis_after = redis_commands(&settings).await;
    let mut rss = 0;
    for w in &mut workers {
        rss = rss.max(w.stop());
    }
    report.worker_peak_rss_bytes = rss;
    let traffic = traffic_of(&workers)?;
    let nodes = report.nodes_executed as f64;
    report.requests_per_node = ratio(traffic.requests() as f64, nodes);
    report.ru_per_node = ratio(traffic.request_units, nodes);
    report.conflicts = traffic.conflicts;
    report.requests_by_operation = traffic.by_operation;
    if let (Some(before), Some(after)) = (redis_before, redis_after) {
        report.redis_commands_per_node = ratio(after.saturating_sub(before) as f64, nodes);
    }
    cleanup(&settings, &backends).await;
    Ok(report)
}

/// Deletes the bench's queues and database (best effort: a failure is only logged).
async fn cleanup(settings: &Settings, backends: &AzureBackends) {
    for queue in [backends.queue.client(), backends.queue.poison_client()] {
        if let Err(e) = queue.delete().await {
            tracing::warn!(error = %e, "cannot delete a bench queue");
        }
    }
    let database = super::azure::transport(settings, &Default::default()).and_then(|transport| {
        let pipeline = Pipeline::new(transport, settings.cosmos.signer());
        CosmosClient::new(pipeline, &settings.cosmos.endpoint)
            .and_then(|c| c.database(&settings.database))
            .map_err(|e| e.to_string())
    });
    let deleted = match database {
        Ok(db) => db.delete().await.map(|_| ()).map_err(|e| e.to_string()),
        Err(e) => Err(e),
    };
    if let Err(e) = deleted {
        tracing::warn!(error = %e, "cannot delete the bench database");
    }
}

fn print_human(report: &Report) {
    println!(
        "{} on {} ({} worker(s)): {} of {} runs completed, {} nodes in {:.2} s ({:.1} nodes/s)",
        report.workload,
        report.backend,
        report.workers,
        report.runs_completed,
        report.runs,
        report.nodes_executed,
        report.wall_seconds,
        report.nodes_per_second
    );
    if let Some(rate) = report.idle_requests_per_second {
        println!("  idle queue requests per second per worker: {rate:.3}");
    }
    if let Some(p50) = report.pickup_latency_p50_ms {
        println!("  pickup latency on an idle fleet (submit -> finished), median: {p50:.0} ms");
    }
    if report.nodes_executed > 0 {
        println!(
            "  HTTP requests per node: {:.2} (412 conflicts: {}); Redis commands per node: {:.2}; RU per node: {:.2}",
            report.requests_per_node,
            report.conflicts,
            report.redis_commands_per_node,
            report.ru_per_node
        );
        println!(
            "  run latency p50 {:.0} ms, p99 {:.0} ms",
            report.latency_p50_ms, report.latency_p99_ms
        );
    }
    println!(
        "  worker peak RSS: {:.1} MiB",
        report.worker_peak_rss_bytes as f64 / (1024.0 * 1024.0)
    );
    for (op, n) in &report.requests_by_operation {
        println!("    {op:<24} {n}");
    }
    for failure in &report.failures {
        println!("  FAILED: {failure}");
    }
}

/// Runs the subcommand and returns the process exit code.
pub fn execute(args: Args) -> u8 {
    super::logging::init(tracing::Level::WARN);
    let shape = match args.workload {
        Workload::Chain => shapes::chain(),
        Workload::Fanout => shapes::fanout(),
        Workload::Idle => shapes::single(),
    };
    let outcome = super::block_on(async {
        if args.memory {
            bench_memory(&args, &shape).await
        } else {
            bench_azure(&args, &shape).await
        }
    });
    let report = match outcome {
        Ok(Ok(report)) => report,
        Ok(Err(message)) => {
            eprintln!("error: {message}");
            return super::EXIT_FAILED;
        }
        Err(code) => return code,
    };
    if args.json {
        match serde_json::to_string(&report) {
            Ok(text) => println!("{text}"),
            Err(e) => {
                eprintln!("error: cannot print the report: {e}");
                return super::EXIT_FAILED;
            }
        }
    } else {
        print_human(&report);
    }
    if report.runs_failed == 0 {
        super::EXIT_OK
    } else {
        super::EXIT_FAILED
    }
}
