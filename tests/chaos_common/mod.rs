//! Shared by the chaos tests (`tests/chaos_*.rs`): a mixed workload of runs (chains, fan-outs
//! into `all` and `any` joins, retries with delay, a fallback, sleep, wait + resume, a
//! subflow, a batch, a loop) with the result each run must reach (computed in-process), a
//! fleet of `flowcraft-azure worker` PROCESSES that can be SIGKILLed and restarted, a driver
//! that starts the runs, resumes the waiting ones through the library [`Client`] and calls a
//! hook while it waits, and the end checks (terminal status, outputs, status items, empty
//! queue and poison queue). `CHAOS_SOAK=1` makes the workload four times larger and the
//! deadlines longer; `CHAOS_SEED` fixes the seed.
#![allow(dead_code)]

#[path = "../parity/observe.rs"]
mod observe;
pub mod proxy;

use flowcraft_azure::adapter::{AzureBackends, Settings, connect};
use flowcraft_azure::azure::cosmos::PartitionKey;
use flowcraft_azure::azure::queue::MessageCount;
use flowcraft_azure::cli::run::prepare;
use flowcraft_azure::distributed::client::Client;
use flowcraft_azure::distributed::state::{CommitKind, RunState};
use flowcraft_azure::flow::blueprint::LoadOptions;
use flowcraft_azure::flow::execute::BlueprintRegistry;
use flowcraft_azure::flow::runtime::{FlowRuntime, RunStatus, WorkflowResult};
use observe::{Observed, observe};
use serde_json::{Value, json};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_flowcraft-azure");

/// True with `CHAOS_SOAK=1`: longer workloads and deadlines.
pub fn soak() -> bool {
    std::env::var("CHAOS_SOAK").is_ok_and(|v| v == "1")
}

/// The seed: `CHAOS_SEED` when set, else a fresh one (printed by the tests, so a failure
/// can be replayed with `CHAOS_SEED=<n>`).
pub fn seed() -> u64 {
    std::env::var("CHAOS_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| fastrand::u64(..))
}

/// The emulator switch, failing loudly when switched on but unreachable.
pub fn emulators(test: &str) -> bool {
    if !crate::support::emulators_enabled(test) {
        return false;
    }
    crate::support::require_reachable("Azurite", &crate::support::queue_endpoint());
    crate::support::require_reachable("the Cosmos emulator", &crate::support::cosmos_endpoint());
    true
}

/// One kind of run in the workload: a blueprint, how to resume it when it waits, and what
/// it must end with (computed in-process).
pub struct Case {
    /// The blueprint id.
    pub blueprint: String,
    /// The action a waiting run is resumed with.
    pub resume: Option<&'static str>,
    /// What the run must end with.
    pub expected: Observed,
}

/// The blueprints (the fixtures plus a few shapes) in a private directory, and the cases.
pub struct Workload {
    /// The blueprint directory the workers load.
    pub dir: PathBuf,
    /// One entry per run to start.
    pub runs: Vec<Arc<Case>>,
}

impl Drop for Workload {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn fan(id: &str, branches: usize, ms: u64, join: &str) -> Value {
    let mut nodes = vec![json!({"id": "start", "uses": "set", "params": {"values": {"n": 1}}})];
    let mut edges = Vec::new();
    for i in 0..branches {
        let b = format!("b{i}");
        nodes.push(json!({"id": b, "uses": "work", "params": {"ms": ms + 50 * i as u64}}));
        edges.push(json!({"source": "start", "target": b}));
        edges.push(json!({"source": b, "target": "join"}));
    }
    // `set`: the join's output does not depend on which predecessor arrived first.
    nodes.push(
        json!({"id": "join", "uses": "set", "params": {"values": {"joined": id}},
                      "config": {"joinStrategy": join}}),
    );
    nodes.push(json!({"id": "after", "uses": "echo", "inputs": "joined"}));
    edges.push(json!({"source": "join", "target": "after"}));
    json!({"id": id, "nodes": nodes, "edges": edges})
}

fn chain(id: &str, len: usize, ms: u64) -> Value {
    let nodes: Vec<Value> = (0..len)
        .map(|i| json!({"id": format!("n{i}"), "uses": "work", "params": {"ms": ms}}))
        .collect();
    let edges: Vec<Value> = (1..len)
        .map(|i| json!({"source": format!("n{}", i - 1), "target": format!("n{i}")}))
        .collect();
    json!({"id": id, "nodes": nodes, "edges": edges})
}

impl Workload {
    /// The mixed workload (`small`: every other kind of run); `CHAOS_SOAK=1` runs each four
    /// times as often.
    pub async fn new(small: bool) -> Workload {
        let tag = uuid::Uuid::new_v4().simple().to_string();
        let dir = std::env::temp_dir().join(format!("fc-chaos-{}", &tag[..8]));
        std::fs::create_dir_all(&dir).unwrap();
        let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/blueprints");
        for entry in std::fs::read_dir(&fixtures).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "json") {
                std::fs::copy(&path, dir.join(path.file_name().unwrap())).unwrap();
            }
        }
        for bp in [
            fan("chaos-all", 8, 1200, "all"),
            fan("chaos-any", 4, 900, "any"),
            chain("chaos-chain", 6, 700),
        ] {
            let id = bp["id"].as_str().unwrap().to_string();
            std::fs::write(dir.join(format!("{id}.json")), bp.to_string()).unwrap();
        }
        // (blueprint, runs, resume action)
        let full: &[(&str, usize, Option<&'static str>)] = &[
            ("hello", 2, None),
            ("chaos-chain", 2, None),
            ("fan-out-fan-in", 2, None),
            ("chaos-all", 3, None),
            ("chaos-any", 2, None),
            ("approval", 1, None),
            ("conditions", 1, None),
            ("retry-fallback", 2, None),
            ("demo-order", 2, Some("approve")),
            ("human-approval", 1, Some("approve")),
            ("human-approval", 1, Some("reject")),
            ("sleep", 2, None),
            ("subflow", 2, None),
            ("batch", 2, None),
            ("loop", 1, None),
        ];
        let scale = if soak() { 4 } else { 1 };
        let mut runs = Vec::new();
        for (i, (blueprint, count, resume)) in full.iter().enumerate() {
            if small && i % 2 == 1 {
                continue;
            }
            let file = dir.join(format!("{blueprint}.json"));
            let prepared = prepare(&file, None, Some(&dir), &LoadOptions::default())
                .unwrap_or_else(|e| panic!("{blueprint}: {e}"));
            let runtime = FlowRuntime::new(prepared.env.clone());
            let mut local = runtime
                .run(prepared.blueprint.clone(), prepared.initial.clone())
                .await;
            if let Some(action) = resume {
                assert_eq!(local.status, RunStatus::Awaiting, "{blueprint} waits");
                local = runtime
                    .resume(
                        prepared.blueprint.clone(),
                        local.context,
                        None,
                        Some(action.to_string()),
                        None,
                    )
                    .await;
            }
            assert_eq!(
                local.status,
                RunStatus::Completed,
                "{blueprint} completes in-process: {:?}",
                local.errors
            );
            let case = Arc::new(Case {
                blueprint: blueprint.to_string(),
                resume: *resume,
                expected: observe(&local),
            });
            for _ in 0..count * scale {
                runs.push(case.clone());
            }
        }
        Workload { dir, runs }
    }
}

/// A private queue and database, the worker processes on them, and a direct client.
pub struct Fleet {
    /// The environment every worker gets (on top of the inherited one).
    pub vars: Vec<(String, String)>,
    dir: PathBuf,
    workers: Vec<Child>,
    /// Worker processes started so far (restarts included).
    pub started: usize,
}

impl Fleet {
    /// Settings for a fresh queue and database; `extra` goes to the workers only.
    pub fn new(dir: &Path, extra: &[(&str, String)]) -> Fleet {
        let tag = uuid::Uuid::new_v4().simple().to_string();
        let mut vars: Vec<(String, String)> = vec![
            ("FLOWCRAFT_QUEUE".into(), format!("chaos-{}", &tag[..12])),
            ("FLOWCRAFT_DATABASE".into(), format!("chaos{}", &tag[..12])),
            ("FLOWCRAFT_VISIBILITY_SECS".into(), "3".into()),
            ("FLOWCRAFT_POLL_MAX_MS".into(), "500".into()),
            // info from the job path: replays, releases and dropped jobs are counted and printed
            (
                "RUST_LOG".into(),
                "warn,flowcraft_azure::distributed::worker=info".into(),
            ),
        ];
        vars.extend(extra.iter().map(|(k, v)| (k.to_string(), v.clone())));
        Fleet {
            vars,
            dir: dir.to_path_buf(),
            workers: Vec::new(),
            started: 0,
        }
    }

    /// The settings the test's own client uses: the fleet's queue and database, but the
    /// direct connections of the environment (never `extra`).
    pub fn settings(&self) -> Settings {
        let own = |name: &str| {
            matches!(name, "FLOWCRAFT_QUEUE" | "FLOWCRAFT_DATABASE")
                .then(|| {
                    self.vars
                        .iter()
                        .find(|(k, _)| k == name)
                        .map(|(_, v)| v.clone())
                })
                .flatten()
        };
        Settings::from_lookup(|name| own(name).or_else(|| std::env::var(name).ok())).unwrap()
    }

    /// Connects the checking client (and creates the queue and database).
    pub async fn client(&self) -> (Client, AzureBackends) {
        let backends = connect(&self.settings(), crate::support::transport())
            .await
            .unwrap();
        backends.ensure_resources().await.unwrap();
        let mut registry = BlueprintRegistry::new();
        registry.load_dir(&self.dir, &Default::default()).unwrap();
        (
            Client::new(backends.backends.clone(), Arc::new(registry)),
            backends,
        )
    }

    fn spawn(&mut self) -> Child {
        self.started += 1;
        let log = File::create(self.dir.join(format!("worker-{}.log", self.started))).unwrap();
        Command::new(BIN)
            .args(["worker", "--blueprints", self.dir.to_str().unwrap()])
            .envs(self.vars.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap()
    }

    /// Starts `n` workers.
    pub fn start(&mut self, n: usize) {
        for _ in 0..n {
            let child = self.spawn();
            self.workers.push(child);
        }
    }

    /// SIGKILLs worker `i` and starts a new one in its place.
    pub fn kill_and_restart(&mut self, i: usize) {
        let _ = self.workers[i].kill();
        let _ = self.workers[i].wait();
        self.workers[i] = self.spawn();
    }

    /// The number of workers.
    pub fn len(&self) -> usize {
        self.workers.len()
    }

    /// The worker log lines at WARN or ERROR, and the job path's INFO lines (replays,
    /// releases, dropped jobs), of all workers (restarts included), counted by level and
    /// message (the text up to its first field, ids cut off).
    pub fn log_summary(&self) -> std::collections::BTreeMap<String, usize> {
        let mut summary = std::collections::BTreeMap::new();
        for i in 1..=self.started {
            let text = std::fs::read_to_string(self.dir.join(format!("worker-{i}.log")))
                .unwrap_or_default();
            for line in text.lines() {
                let Some(at) = ["WARN", "ERROR", "INFO"].iter().find_map(|l| line.find(l)) else {
                    continue;
                };
                let (level, rest) = line[at..].split_once(' ').unwrap_or((&line[at..], ""));
                // `LEVEL [span{fields}: ]message key=value ...`: keep the level and message.
                let rest = rest.rsplit_once("}: ").map_or(rest, |(_, m)| m);
                let message: Vec<&str> = std::iter::once(level)
                    .chain(rest.split_whitespace().take_while(|w| !w.contains('=')))
                    .collect();
                let key: String = message.join(" ").chars().take(90).collect();
                *summary.entry(key).or_default() += 1;
            }
        }
        summary
    }

    /// The last lines of every worker log (for a failure message).
    pub fn logs(&self) -> String {
        let mut out = String::new();
        for i in 1..=self.started {
            let text = std::fs::read_to_string(self.dir.join(format!("worker-{i}.log")))
                .unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            let tail = lines[lines.len().saturating_sub(15)..].join("\n");
            out.push_str(&format!("--- worker {i} ---\n{tail}\n"));
        }
        out
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        for child in &mut self.workers {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// One started run.
pub struct Started {
    /// The run id.
    pub id: String,
    /// What it must end with.
    pub case: Arc<Case>,
    /// Seconds from the workload's start to this run's start.
    pub started: f64,
    /// Seconds from its start to its end (when it ended).
    pub seconds: Option<f64>,
    resumed: bool,
}

fn only_timers(result: &WorkflowResult) -> bool {
    match result.context.get("_awaitingDetails") {
        Some(Value::Object(details)) if !details.is_empty() => details
            .values()
            .all(|d| d.get("reason").and_then(Value::as_str) == Some("timer")),
        _ => false,
    }
}

/// Starts the runs of `workload` spread evenly over `spread`, resumes the waiting ones, and
/// polls until all of them are finished or `deadline` passes, calling `tick` (the chaos)
/// about every 200 ms. Returns the runs and the seconds the whole workload took.
pub async fn drive(
    client: &Client,
    workload: &Workload,
    spread: Duration,
    deadline: Duration,
    mut tick: impl FnMut(),
) -> (Vec<Started>, f64) {
    let began = Instant::now();
    let gap = spread / u32::try_from(workload.runs.len().max(1)).unwrap_or(u32::MAX);
    let mut pending = workload.runs.iter();
    let mut next_start = began;
    let mut runs: Vec<Started> = Vec::new();
    loop {
        while Instant::now() >= next_start {
            let Some(case) = pending.next() else { break };
            let id = client
                .start_run(&case.blueprint, Default::default())
                .await
                .unwrap_or_else(|e| panic!("start {}: {e}", case.blueprint));
            runs.push(Started {
                id,
                case: case.clone(),
                started: began.elapsed().as_secs_f64(),
                seconds: None,
                resumed: false,
            });
            next_start += gap;
        }
        let all_started = runs.len() == workload.runs.len();
        if (all_started && runs.iter().all(|r| r.seconds.is_some())) || began.elapsed() >= deadline
        {
            break;
        }
        tick();
        for run in runs.iter_mut().filter(|r| r.seconds.is_none()) {
            let Ok(Some(result)) = client.status(&run.id).await else {
                continue;
            };
            match result.status {
                RunStatus::Running => {}
                RunStatus::Awaiting if only_timers(&result) => {}
                RunStatus::Awaiting if run.case.resume.is_some() && !run.resumed => {
                    let action = run.case.resume.map(str::to_string);
                    client
                        .resume_with_action(&run.id, None, action, None)
                        .await
                        .unwrap_or_else(|e| panic!("resume {}: {e}", run.id));
                    run.resumed = true;
                }
                _ => run.seconds = Some(began.elapsed().as_secs_f64() - run.started),
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    (runs, began.elapsed().as_secs_f64())
}

/// The end checks: every run finished with the status and outputs its blueprint implies
/// (every join's output present with the right value), every node of it was scheduled and
/// settled once (joins fired once), its status item agrees with it, and
/// the queue and the poison queue drain (peek) while the fleet is still up. Panics with the
/// worker logs on a failure.
pub async fn verify(client: &Client, backends: &AzureBackends, fleet: &Fleet, runs: &[Started]) {
    let mut failures = Vec::new();
    for run in runs {
        let result = match client.status(&run.id).await {
            Ok(Some(r)) => r,
            other => {
                failures.push(format!(
                    "run {} ({}): {other:?}",
                    run.id, run.case.blueprint
                ));
                continue;
            }
        };
        let got = observe(&result);
        if got != run.case.expected {
            failures.push(format!(
                "run {} ({}): expected {:?}\n got {:?}",
                run.id, run.case.blueprint, run.case.expected, got
            ));
        }
        match backends.backends.runs.load(&run.id).await {
            Ok(Some(state)) => {
                failures.extend(once_each(&run.id, &run.case.blueprint, &state.value))
            }
            other => failures.push(format!("loading run {}: {other:?}", run.id)),
        }
        let item = backends
            .store
            .status_container()
            .read::<Value>(&run.id, &PartitionKey::from(&run.id))
            .await;
        let want = serde_json::to_value(result.status).unwrap();
        match item {
            Ok(item) if item.value["status"] == want => {
                if result.status != RunStatus::Running
                    && item.value["finalStatus"]["status"] != want
                {
                    failures.push(format!("status item of {}: {}", run.id, item.value));
                }
            }
            Ok(item) => failures.push(format!(
                "status item of {} says {} but the run is {want}",
                run.id, item.value
            )),
            Err(e) => failures.push(format!("status item of {}: {e}", run.id)),
        }
    }
    // Duplicates left by killed workers or lost answers are disposed of by the fleet.
    let mut left = (Vec::new(), Vec::new());
    for _ in 0..60 {
        let queue = backends
            .queue
            .client()
            .peek_messages(MessageCount::MAX)
            .await;
        let poison = backends
            .queue
            .poison_client()
            .peek_messages(MessageCount::MAX)
            .await;
        left = (queue.unwrap(), poison.unwrap());
        if left.0.is_empty() && left.1.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    if !left.0.is_empty() {
        failures.push(format!(
            "{} messages left in the queue: {:?}",
            left.0.len(),
            left.0
        ));
    }
    if !left.1.is_empty() {
        failures.push(format!("{} poisoned messages: {:?}", left.1.len(), left.1));
    }
    assert!(
        failures.is_empty(),
        "{} problems:\n{}\n{}",
        failures.len(),
        failures.join("\n"),
        fleet.logs()
    );
}

/// Every node (joins included) of a run without a loop was scheduled once and settled once:
/// its execution count is 1 and it has at most one final commit record (completed, fell
/// back or failed; a `wait` node also has its awaiting commit).
fn once_each(run_id: &str, blueprint: &str, state: &RunState) -> Vec<String> {
    if blueprint == "loop" {
        return Vec::new(); // `count` and `check` legitimately run once per iteration
    }
    if state.book.executions.is_empty() {
        return vec![format!("run {run_id} ({blueprint}): no execution recorded")];
    }
    let mut problems: Vec<String> = state
        .book
        .executions
        .iter()
        .filter(|(_, n)| **n != 1)
        .map(|(node, n)| format!("run {run_id} ({blueprint}): {node} was scheduled {n} times"))
        .collect();
    let mut finals: std::collections::BTreeMap<&str, u32> = Default::default();
    for record in state.book.commits.values() {
        if record.kind != CommitKind::Awaiting {
            *finals.entry(record.node.as_str()).or_default() += 1;
        }
    }
    problems.extend(
        finals
            .into_iter()
            .filter(|(_, n)| *n > 1)
            .map(|(node, n)| format!("run {run_id} ({blueprint}): {node} settled {n} times")),
    );
    problems
}

/// Prints how long the runs took.
pub fn print_runs(label: &str, runs: &[Started], total: f64) {
    let mut by_blueprint: std::collections::BTreeMap<&str, Vec<f64>> = Default::default();
    for run in runs {
        by_blueprint
            .entry(&run.case.blueprint)
            .or_default()
            .push(run.seconds.unwrap_or(f64::NAN));
    }
    eprintln!("{label}: {} runs in {total:.1} s", runs.len());
    for (bp, secs) in by_blueprint {
        let max = secs.iter().cloned().fold(0.0, f64::max);
        eprintln!("  {bp:16} x{}  slowest {max:.1} s", secs.len());
    }
}
