//! The mode-parity suite, shared by `tests/mode_parity.rs` (the distributed core on the
//! in-memory backends) and `tests/azure_parity.rs` (the same core on Azure Queue Storage,
//! Cosmos DB and Redis through the local stack): every blueprint in `fixtures/blueprints`
//! (and a few extra shapes that are easy to get wrong) runs in-process ([`FlowRuntime`]) and
//! through the distributed core (client + several workers), and both modes must agree on the
//! status, on every node output (`_outputs.*`), on the user-visible context keys and on the
//! errors. The including test file provides `backends_for_parity()` and `parity_enabled()`.
//!
//! Ignored on purpose: the run id (`_executionId`, also inside a subflow's output), the
//! distributed pins `blueprintId` / `blueprintVersion`, bookkeeping keys that start with `_`
//! other than `_outputs.*` (awaiting details carry wake-up timestamps; `_inputs.<join>` is
//! whichever predecessor finished last), error timestamps, and the random batch id inside
//! dynamic worker ids (`<uses>_<uuid>_<i>`, replaced by `<batch>` before comparing).
//!
//! Where the modes legitimately differ, the case says so next to the assertion.
#![allow(dead_code)]

use flowcraft_azure::cli::run::{Prepared, prepare};
use flowcraft_azure::distributed::client::Client;
use flowcraft_azure::distributed::worker::{Worker, WorkerConfig};
use flowcraft_azure::flow::blueprint::{Blueprint, LoadOptions};
use flowcraft_azure::flow::runtime::{FlowRuntime, RunStatus, WorkflowResult};
use serde_json::{Map, Value, json};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

mod observe;

/// A batch inside a loop (three passes), shared with `tests/distributed_batch.rs`.
pub const BATCH_LOOP: &str = include_str!("batch_loop.json");
use observe::observe;

const WORKERS: usize = 3;

fn fixtures_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/blueprints")
}

/// Loads `file` the way `run --blueprints fixtures/blueprints` does.
fn prepared(file: &Path) -> Prepared {
    match prepare(file, None, Some(&fixtures_dir()), &LoadOptions::default()) {
        Ok(p) => p,
        Err(e) => panic!("{}: {e}", file.display()),
    }
}

/// Prepares an inline blueprint (written to a temporary file, as the CLI reads files).
pub fn prepared_inline(blueprint: Value) -> Prepared {
    let path = std::env::temp_dir().join(format!("fc-parity-{}.json", uuid::Uuid::new_v4()));
    std::fs::write(&path, blueprint.to_string()).unwrap();
    let p = prepare(&path, None, Some(&fixtures_dir()), &LoadOptions::default());
    let _ = std::fs::remove_file(&path);
    match p {
        Ok(p) => p,
        Err(e) => panic!("inline blueprint: {e}"),
    }
}

/// The distributed core on in-memory backends: a client and `WORKERS` worker loops.
pub struct Distributed {
    client: Client,
    shutdown: CancellationToken,
    loops: Vec<JoinHandle<()>>,
}

impl Distributed {
    pub async fn start(p: &Prepared) -> Self {
        let backends = crate::backends_for_parity().await;
        let config = WorkerConfig {
            idle_backoff_max: Duration::from_millis(20),
            ..WorkerConfig::default()
        };
        let shutdown = CancellationToken::new();
        let loops = (0..WORKERS)
            .map(|_| {
                let worker = Arc::new(Worker::new(p.env.clone(), backends.clone(), config.clone()));
                tokio::spawn(worker.run(shutdown.clone()))
            })
            .collect();
        let client = Client::new(backends, p.env.blueprints.clone());
        Distributed {
            client,
            shutdown,
            loops,
        }
    }

    /// Waits until the run finishes or awaits something other than a timer.
    async fn settle(&self, run_id: &str) -> WorkflowResult {
        for _ in 0..600 {
            let result = match self.client.wait_for(run_id, Duration::from_secs(60)).await {
                Ok(r) => r,
                Err(e) => panic!("waiting for run {run_id}: {e}"),
            };
            if result.status == RunStatus::Awaiting && only_timers(&result) {
                tokio::time::sleep(Duration::from_millis(20)).await;
                continue;
            }
            return result;
        }
        panic!("run {run_id} kept sleeping");
    }

    pub async fn run(
        &self,
        blueprint: &Blueprint,
        initial: Map<String, Value>,
    ) -> (String, WorkflowResult) {
        let run_id = match self.client.start_run(blueprint.id(), initial).await {
            Ok(id) => id,
            Err(e) => panic!("start {}: {e}", blueprint.id()),
        };
        let result = self.settle(&run_id).await;
        (run_id, result)
    }

    async fn resume(&self, run_id: &str, action: &str, output: Option<Value>) -> WorkflowResult {
        if let Err(e) = self
            .client
            .resume_with_action(run_id, None, Some(action.to_string()), output)
            .await
        {
            panic!("resume {run_id}: {e}");
        }
        self.settle(run_id).await
    }

    pub async fn stop(self) {
        self.shutdown.cancel();
        for handle in self.loops {
            let _ = handle.await;
        }
    }
}

fn only_timers(result: &WorkflowResult) -> bool {
    match result.context.get("_awaitingDetails") {
        Some(Value::Object(details)) if !details.is_empty() => details
            .values()
            .all(|d| d.get("reason").and_then(Value::as_str) == Some("timer")),
        _ => false,
    }
}

pub async fn in_process(p: &Prepared) -> WorkflowResult {
    FlowRuntime::new(p.env.clone())
        .run(p.blueprint.clone(), p.initial.clone())
        .await
}

/// Runs `p` in both modes and asserts they agree; returns the in-process result.
///
/// One legitimate difference: a FAILED distributed run is fail-fast. Its status is sticky
/// from the first failure on, so jobs still queued are dropped (invariant 4 of DESIGN.md;
/// `distributed::transition`), whereas in-process the other branches keep running and every
/// failure is recorded (Flowcraft's pinned behaviour). For failed runs the distributed errors
/// and outputs must therefore be a non-empty subset of the in-process ones, with equal values.
async fn assert_parity(name: &str, p: &Prepared) -> WorkflowResult {
    let local = in_process(p).await;
    let distributed = Distributed::start(p).await;
    let (_, remote) = distributed.run(&p.blueprint, p.initial.clone()).await;
    distributed.stop().await;
    let (left, right) = (observe(&local), observe(&remote));
    if left.status == RunStatus::Failed && right.status == RunStatus::Failed {
        assert!(!right.errors.is_empty(), "{name}: failed without an error");
        for error in &right.errors {
            assert!(
                left.errors.contains(error),
                "{name}: distributed error {error:?} not among the in-process ones {:?}",
                left.errors
            );
        }
        for (key, value) in &right.context {
            assert_eq!(
                left.context.get(key),
                Some(value),
                "{name}: distributed wrote {key} that in-process did not (or differently)"
            );
        }
    } else {
        assert_eq!(
            left, right,
            "{name}: in-process (left) and distributed (right) disagree"
        );
    }
    local
}

/// Resumes the paused in-process run (its `context`) and the distributed run `run_id` with
/// the same action and output, then stops the distributed workers; returns (local, remote).
/// `node` picks the awaiting node in-process (the distributed resume takes the first one).
async fn resume_both(
    p: &Prepared,
    distributed: Distributed,
    context: Map<String, Value>,
    run_id: &str,
    node: Option<&str>,
    action: &str,
    output: Option<Value>,
) -> (WorkflowResult, WorkflowResult) {
    let local = FlowRuntime::new(p.env.clone())
        .resume(
            p.blueprint.clone(),
            context,
            node,
            Some(action.to_string()),
            output.clone(),
        )
        .await;
    let remote = distributed.resume(run_id, action, output).await;
    distributed.stop().await;
    (local, remote)
}

/// Asserts that `result` completed (showing its errors otherwise) with `expected` at `key`.
fn assert_completed_with(result: &WorkflowResult, key: &str, expected: Value) {
    assert_eq!(result.status, RunStatus::Completed, "{:?}", result.errors);
    assert_eq!(result.context.get(key), Some(&expected));
}

/// [`assert_parity`] for an inline blueprint that must complete; returns the in-process result.
async fn completes_alike(name: &str, blueprint: Value) -> WorkflowResult {
    let local = assert_parity(name, &prepared_inline(blueprint)).await;
    assert_eq!(
        local.status,
        RunStatus::Completed,
        "{name}: {:?}",
        local.errors
    );
    local
}

fn fixture(name: &str) -> PathBuf {
    fixtures_dir().join(name)
}

// ------------------------------------------------------------------------------------------
// every fixture

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_fixture_blueprint_behaves_the_same_in_both_modes() {
    if !crate::parity_enabled("every_fixture_blueprint_behaves_the_same_in_both_modes") {
        return;
    }
    let mut files: Vec<PathBuf> = std::fs::read_dir(fixtures_dir())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    files.sort();
    assert!(
        files.len() >= 5,
        "expected the example blueprints, found {files:?}"
    );
    for file in &files {
        let name = file.file_name().unwrap().to_string_lossy().to_string();
        let local = assert_parity(&name, &prepared(file)).await;
        // a fixture is an example: it must not fail in either mode
        assert!(
            matches!(local.status, RunStatus::Completed | RunStatus::Awaiting),
            "{name}: {:?} {:?}",
            local.status,
            local.errors
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fixture_results_are_the_documented_ones() {
    if !crate::parity_enabled("fixture_results_are_the_documented_ones") {
        return;
    }
    // pins what the parity run compares, so "both wrong the same way" cannot pass unnoticed
    let cases: [(&str, &str, Value); 7] = [
        ("hello.json", "_outputs.done", json!("Hello, Flowcraft!")),
        ("fan-out-fan-in.json", "_outputs.total", json!(6)),
        ("batch.json", "_outputs.total", json!(10)),
        ("loop.json", "_outputs.done", json!(5)),
        ("approval.json", "_outputs.notify", json!("approved")),
        (
            "retry-fallback.json",
            "_outputs.report",
            json!("manual queue"),
        ),
        ("subflow.json", "_outputs.after", json!("Hello, Flowcraft!")),
    ];
    for (file, key, expected) in cases {
        let result = in_process(&prepared(&fixture(file))).await;
        assert_eq!(
            result.status,
            RunStatus::Completed,
            "{file}: {:?}",
            result.errors
        );
        assert_eq!(result.context.get(key), Some(&expected), "{file}");
    }
}

// ------------------------------------------------------------------------------------------
// awaiting and resume

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn human_approval_pauses_and_resumes_the_same_way_in_both_modes() {
    if !crate::parity_enabled("human_approval_pauses_and_resumes_the_same_way_in_both_modes") {
        return;
    }
    let p = prepared(&fixture("human-approval.json"));
    let paused_local = in_process(&p).await;
    let distributed = Distributed::start(&p).await;
    let (run_id, paused_remote) = distributed.run(&p.blueprint, p.initial.clone()).await;
    assert_eq!(paused_local.status, RunStatus::Awaiting);
    assert_eq!(observe(&paused_local), observe(&paused_remote));
    assert_eq!(
        paused_local.context.get("_awaitingNodeIds"),
        paused_remote.context.get("_awaitingNodeIds")
    );

    let (done_local, done_remote) = resume_both(
        &p,
        distributed,
        paused_local.context,
        &run_id,
        None,
        "reject",
        Some(json!({"reason": "too expensive"})),
    )
    .await;
    assert_completed_with(&done_local, "_outputs.notify", json!("rejected"));
    assert!(!done_local.context.contains_key("_outputs.approved"));
    assert_eq!(observe(&done_local), observe(&done_remote));
}

// ------------------------------------------------------------------------------------------
// shapes that are easy to get wrong in one mode

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_fallbacks_and_joins_agree() {
    if !crate::parity_enabled("failures_fallbacks_and_joins_agree") {
        return;
    }
    let cases = [
        (
            "a failure keeps its message and stops its branch, a sibling still runs",
            json!({"id": "fails", "nodes": [
                {"id": "a", "uses": "echo"},
                {"id": "bad", "uses": "fail", "params": {"message": "disk full"},
                 "config": {"maxRetries": 2}},
                {"id": "ok", "uses": "set", "params": {"values": {"side": "done"}}},
                {"id": "after", "uses": "echo"}],
              "edges": [{"source": "a", "target": "bad"}, {"source": "a", "target": "ok"},
                        {"source": "bad", "target": "after"}]}),
        ),
        (
            "a fallback's completion counts as the failed node's arrival at an all join",
            json!({"id": "fallback-join", "nodes": [
                {"id": "seed", "uses": "set", "params": {"values": {"v": 1}}},
                {"id": "left", "uses": "fail", "config": {"fallback": "rescue"}},
                {"id": "rescue", "uses": "set", "params": {"values": {"rescued": true}}},
                {"id": "right", "uses": "echo", "inputs": "v"},
                {"id": "join", "uses": "echo", "inputs": "right",
                 "config": {"joinStrategy": "all"}}],
              "edges": [{"source": "seed", "target": "left"}, {"source": "seed", "target": "right"},
                        {"source": "left", "target": "join"}, {"source": "right", "target": "join"}]}),
        ),
        (
            "an all join behind an untaken branch stalls",
            json!({"id": "stall", "nodes": [
                {"id": "pick", "uses": "action", "params": {"action": "left"}},
                {"id": "l", "uses": "echo"}, {"id": "r", "uses": "echo"},
                {"id": "join", "uses": "echo", "config": {"joinStrategy": "all"}}],
              "edges": [{"source": "pick", "target": "l", "action": "left"},
                        {"source": "pick", "target": "r", "action": "right"},
                        {"source": "l", "target": "join"}, {"source": "r", "target": "join"}]}),
        ),
        (
            "an unknown action falls back to the default edges",
            json!({"id": "unknown-action", "nodes": [
                {"id": "pick", "uses": "action", "params": {"action": "maybe"}},
                {"id": "yes", "uses": "echo"}, {"id": "default", "uses": "echo"}],
              "edges": [{"source": "pick", "target": "yes", "action": "yes"},
                        {"source": "pick", "target": "default"}]}),
        ),
        (
            "a missing implementation fails without retry",
            json!({"id": "missing", "nodes": [
                {"id": "x", "uses": "no-such-node", "config": {"maxRetries": 3}}], "edges": []}),
        ),
        (
            "a missing sub-blueprint is fatal, so the parent's fallback does not run",
            json!({"id": "sub-fallback", "nodes": [
                {"id": "call", "uses": "subflow", "params": {"blueprintId": "no-such-blueprint"},
                 "config": {"fallback": "plan_b"}},
                {"id": "plan_b", "uses": "set", "params": {"values": {"plan": "b"}}},
                {"id": "after", "uses": "echo", "inputs": "plan"}],
              "edges": [{"source": "call", "target": "after"}]}),
        ),
        (
            "a batch worker failure fails the run",
            json!({"id": "batch-fail", "nodes": [
                {"id": "load", "uses": "set", "params": {"values": {"items": [1, 2]}}},
                {"id": "b_scatter", "uses": "batch-scatter", "inputs": "items",
                 "params": {"workerUsesKey": "fail", "gatherNodeId": "b_gather"}},
                {"id": "b_gather", "uses": "batch-gather"}],
              "edges": [{"source": "load", "target": "b_scatter"},
                        {"source": "b_scatter", "target": "b_gather"}]}),
        ),
    ];
    for (name, blueprint) in cases {
        assert_parity(name, &prepared_inline(blueprint)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn loops_timeouts_transforms_and_any_joins_agree() {
    if !crate::parity_enabled("loops_timeouts_transforms_and_any_joins_agree") {
        return;
    }
    let cases = [
        (
            "an any join fires once although both branches arrive",
            json!({"id": "any", "nodes": [
                {"id": "a", "uses": "set", "params": {"values": {"n": 2}}},
                {"id": "b", "uses": "echo", "inputs": "n"}, {"id": "c", "uses": "echo", "inputs": "n"},
                {"id": "first", "uses": "echo", "inputs": "n", "config": {"joinStrategy": "any"}}],
              "edges": [{"source": "a", "target": "b"}, {"source": "a", "target": "c"},
                        {"source": "b", "target": "first"}, {"source": "c", "target": "first"}]}),
        ),
        (
            "a timed-out node is retried, then its fallback takes over",
            json!({"id": "timeout", "nodes": [
                {"id": "slow", "uses": "work", "params": {"ms": 5000},
                 "config": {"timeout": 20, "maxRetries": 2, "fallback": "quick"}},
                {"id": "quick", "uses": "set", "params": {"values": {"via": "fallback"}}},
                {"id": "next", "uses": "echo", "inputs": "via"}],
              "edges": [{"source": "slow", "target": "next"}]}),
        ),
        (
            "a loop with a conditional break edge (safe evaluator)",
            json!({"id": "loop-break", "metadata": {"evaluator": "safe"}, "nodes": [
                {"id": "init", "uses": "echo"},
                {"id": "count", "uses": "echo"},
                {"id": "check", "uses": "loop-controller", "params": {"condition": "count < 10"},
                 "config": {"joinStrategy": "any"}},
                {"id": "early", "uses": "echo"},
                {"id": "done", "uses": "echo"}],
              "edges": [{"source": "init", "target": "count", "transform": "1"},
                        {"source": "count", "target": "check"},
                        {"source": "check", "target": "count", "action": "continue",
                         "transform": "context.count + 1"},
                        {"source": "check", "target": "early", "condition": "count >= 3",
                         "transform": "context.count * 100"},
                        {"source": "check", "target": "done", "action": "break"}]}),
        ),
        (
            "sleep in one branch of an all join (timer wake-up in both modes)",
            json!({"id": "nap-join", "nodes": [
                {"id": "seed", "uses": "set", "params": {"values": {"v": 7}}},
                {"id": "nap", "uses": "sleep", "inputs": "v", "params": {"duration": 50}},
                {"id": "busy", "uses": "work", "inputs": "v", "params": {"ms": 10}},
                {"id": "join", "uses": "sum", "config": {"joinStrategy": "all"},
                 "inputs": {"a": "nap", "b": "busy"}}],
              "edges": [{"source": "seed", "target": "nap"}, {"source": "seed", "target": "busy"},
                        {"source": "nap", "target": "join"}, {"source": "busy", "target": "join"}]}),
        ),
        (
            "a subflow with inputs and outputs mappings",
            json!({"id": "sub-map", "nodes": [
                {"id": "call", "uses": "subflow", "params": {"blueprintId": "fan-out-fan-in",
                    "outputs": {"grandTotal": "total"}}},
                {"id": "after", "uses": "echo", "inputs": "grandTotal"}],
              "edges": [{"source": "call", "target": "after"}]}),
        ),
    ];
    for (name, blueprint) in cases {
        completes_alike(name, blueprint).await;
    }
}

fn outer_approval() -> Prepared {
    prepared_inline(json!({"id": "outer-approval", "nodes": [
        {"id": "call", "uses": "subflow", "params": {"blueprintId": "human-approval"}},
        {"id": "after", "uses": "echo", "inputs": "call"}],
      "edges": [{"source": "call", "target": "after"}]}))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wait_inside_a_subflow_pauses_the_same_way_in_both_modes() {
    if !crate::parity_enabled("a_wait_inside_a_subflow_pauses_the_same_way_in_both_modes") {
        return;
    }
    let p = outer_approval();
    let paused_local = in_process(&p).await;
    let distributed = Distributed::start(&p).await;
    let (_, paused_remote) = distributed.run(&p.blueprint, p.initial.clone()).await;
    distributed.stop().await;
    assert_eq!(paused_local.status, RunStatus::Awaiting);
    assert_eq!(observe(&paused_local), observe(&paused_remote));
    for result in [&paused_local, &paused_remote] {
        assert_eq!(result.context["_awaitingNodeIds"], json!(["call"]));
        assert_eq!(
            result.context["_subflowState.call"]["_awaitingNodeIds"],
            json!(["review"])
        );
    }
}

/// Resuming a parent whose subflow waits resumes the SUB-RUN (spec 2.12 step 2, §3 "an
/// awaiting subflow needs its sub-context persisted and a resume path"): the action goes to
/// the sub-run's waiting node, the sub-run finishes, and the parent node's output is the
/// sub-run's terminal output.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wait_inside_a_subflow_resumes_the_same_way_in_both_modes() {
    if !crate::parity_enabled("a_wait_inside_a_subflow_resumes_the_same_way_in_both_modes") {
        return;
    }
    let p = outer_approval();
    let paused_local = in_process(&p).await;
    let distributed = Distributed::start(&p).await;
    let (run_id, _) = distributed.run(&p.blueprint, p.initial.clone()).await;
    let (done_local, done_remote) = resume_both(
        &p,
        distributed,
        paused_local.context,
        &run_id,
        None,
        "approve",
        None,
    )
    .await;
    assert_completed_with(&done_local, "_outputs.after", json!("approved"));
    assert_eq!(observe(&done_local), observe(&done_remote));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cycles_self_loops_and_parallel_writes_agree() {
    if !crate::parity_enabled("cycles_self_loops_and_parallel_writes_agree") {
        return;
    }
    let cases = [
        (
            "a cycle without start nodes enters at the declared entry point",
            json!({"id": "ring", "metadata": {"allowCycles": true, "cycleEntryPoints": ["b"]},
              "nodes": [{"id": "a", "uses": "echo"}, {"id": "b", "uses": "set",
                         "params": {"values": {"entered": "b"}}}],
              "edges": [{"source": "a", "target": "b"}, {"source": "b", "target": "a"}]}),
        ),
        (
            "a self-loop runs once",
            json!({"id": "self", "metadata": {"allowCycles": true}, "nodes": [
                {"id": "s", "uses": "set", "params": {"values": {"once": true}}}],
              "edges": [{"source": "s", "target": "s"}]}),
        ),
        (
            "parallel branches write different keys and all writes survive",
            json!({"id": "writes", "nodes": [
                {"id": "root", "uses": "echo"},
                {"id": "w1", "uses": "set", "params": {"values": {"k1": 1}}},
                {"id": "w2", "uses": "set", "params": {"values": {"k2": 2}}},
                {"id": "w3", "uses": "set", "params": {"values": {"k3": 3}}},
                {"id": "w4", "uses": "set", "params": {"values": {"k4": 4}}},
                {"id": "all", "uses": "sum", "config": {"joinStrategy": "all"},
                 "inputs": {"a": "k1", "b": "k2", "c": "k3", "d": "k4"}}],
              "edges": [{"source": "root", "target": "w1"}, {"source": "root", "target": "w2"},
                        {"source": "root", "target": "w3"}, {"source": "root", "target": "w4"},
                        {"source": "w1", "target": "all"}, {"source": "w2", "target": "all"},
                        {"source": "w3", "target": "all"}, {"source": "w4", "target": "all"}]}),
        ),
    ];
    for (name, blueprint) in cases {
        completes_alike(name, blueprint).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_concurrent_waits_resume_one_at_a_time_in_both_modes() {
    if !crate::parity_enabled("two_concurrent_waits_resume_one_at_a_time_in_both_modes") {
        return;
    }
    let p = prepared_inline(json!({"id": "two-waits", "nodes": [
        {"id": "start", "uses": "echo"},
        {"id": "left", "uses": "wait"}, {"id": "right", "uses": "wait"},
        {"id": "join", "uses": "echo", "inputs": "left", "config": {"joinStrategy": "all"}}],
      "edges": [{"source": "start", "target": "left"}, {"source": "start", "target": "right"},
                {"source": "left", "target": "join"}, {"source": "right", "target": "join"}]}));
    let runtime = FlowRuntime::new(p.env.clone());
    let distributed = Distributed::start(&p).await;
    let local = in_process(&p).await;
    let (run_id, remote) = distributed.run(&p.blueprint, p.initial.clone()).await;
    assert_eq!(local.status, RunStatus::Awaiting);
    assert_eq!(observe(&local), observe(&remote));

    let mut local = local;
    for (node, output) in [("right", json!("R")), ("left", json!("L"))] {
        local = runtime
            .resume(
                p.blueprint.clone(),
                local.context,
                Some(node),
                None,
                Some(output.clone()),
            )
            .await;
        if let Err(e) = distributed
            .client
            .resume_with_action(&run_id, Some(node), None, Some(output))
            .await
        {
            panic!("resume {node}: {e}");
        }
        let remote = distributed.settle(&run_id).await;
        assert_eq!(observe(&local), observe(&remote), "after resuming {node}");
    }
    distributed.stop().await;
    assert_eq!(local.status, RunStatus::Completed, "{:?}", local.errors);
    assert_eq!(local.context.get("_outputs.join"), Some(&json!("L")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fallbacks_in_loops_inherited_actions_and_transforms_agree() {
    if !crate::parity_enabled("fallbacks_in_loops_inherited_actions_and_transforms_agree") {
        return;
    }
    let cases = [
        (
            "a failing body node rescued by its fallback in every loop pass",
            json!({"id": "fallback-loop", "metadata": {"evaluator": "safe"}, "nodes": [
                {"id": "init", "uses": "echo"},
                {"id": "count", "uses": "echo"},
                {"id": "risky", "uses": "fail", "config": {"fallback": "safe_path"}},
                {"id": "safe_path", "uses": "set", "params": {"values": {"rescued": true}}},
                {"id": "ctrl", "uses": "loop-controller", "params": {"condition": "count < 3"},
                 "config": {"joinStrategy": "any"}},
                {"id": "done", "uses": "echo", "inputs": "count"}],
              "edges": [{"source": "init", "target": "count", "transform": "1"},
                        {"source": "count", "target": "risky"},
                        {"source": "risky", "target": "ctrl"},
                        {"source": "ctrl", "target": "count", "action": "continue",
                         "transform": "context.count + 1"},
                        {"source": "ctrl", "target": "done", "action": "break"}]}),
        ),
        (
            "an action edge inherited by a fallback node",
            json!({"id": "fallback-action", "nodes": [
                {"id": "a", "uses": "fail", "config": {"fallback": "f"}},
                {"id": "f", "uses": "action", "params": {"action": "manual"}},
                {"id": "auto", "uses": "echo"}, {"id": "manual", "uses": "echo"}],
              "edges": [{"source": "a", "target": "auto", "action": "auto"},
                        {"source": "a", "target": "manual", "action": "manual"}]}),
        ),
        (
            "a transform edge into a node that names its inputs",
            json!({"id": "transform-inputs", "metadata": {"evaluator": "safe"}, "nodes": [
                {"id": "a", "uses": "set", "params": {"values": {"base": 10}}},
                {"id": "b", "uses": "echo", "inputs": "base"},
                {"id": "c", "uses": "echo", "inputs": "b"}],
              "edges": [{"source": "a", "target": "b", "transform": "input + 5"},
                        {"source": "b", "target": "c", "transform": "input * 2"}]}),
        ),
    ];
    for (name, blueprint) in cases {
        completes_alike(name, blueprint).await;
    }
}

/// A scatter inside a loop starts a fresh batch on every pass, and the gather waits only for
/// that pass's workers (regression: the distributed gather's worker set used to accumulate
/// across passes, so the second pass stalled).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_inside_a_loop_runs_every_pass_in_both_modes() {
    if !crate::parity_enabled("a_batch_inside_a_loop_runs_every_pass_in_both_modes") {
        return;
    }
    let blueprint: Value = serde_json::from_str(BATCH_LOOP).unwrap();
    let local = completes_alike("batch inside a loop", blueprint).await;
    assert_eq!(local.context.get("done"), Some(&json!(6)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn odd_node_ids_and_resume_defaults_agree() {
    if !crate::parity_enabled("odd_node_ids_and_resume_defaults_agree") {
        return;
    }
    let p = prepared_inline(json!({"id": "odd ids/ü", "nodes": [
        {"id": "", "uses": "set", "params": {"values": {"v": 1}}},
        {"id": "a.b", "uses": "echo", "inputs": "v"},
        {"id": "ü ñ", "uses": "echo", "inputs": "_outputs.a.b"},
        {"id": "x/y\"z", "uses": "echo", "inputs": "_outputs.ü ñ"}],
      "edges": [{"source": "", "target": "a.b"}, {"source": "a.b", "target": "ü ñ"},
                {"source": "ü ñ", "target": "x/y\"z"}]}));
    let local = assert_parity("odd ids", &p).await;
    assert_eq!(local.status, RunStatus::Completed, "{:?}", local.errors);
    assert_eq!(local.context.get("_outputs.x/y\"z"), Some(&json!(1)));

    // resuming a wait with an action no edge has takes the default edges, and without an
    // output the node's output is null in both modes
    let p = prepared_inline(json!({"id": "resume-default", "nodes": [
        {"id": "w", "uses": "wait"},
        {"id": "special", "uses": "echo"}, {"id": "fallthrough", "uses": "echo"}],
      "edges": [{"source": "w", "target": "special", "action": "special"},
                {"source": "w", "target": "fallthrough"}]}));
    let paused = in_process(&p).await;
    let distributed = Distributed::start(&p).await;
    let (run_id, _) = distributed.run(&p.blueprint, p.initial.clone()).await;
    let (local, remote) = resume_both(
        &p,
        distributed,
        paused.context,
        &run_id,
        Some("w"),
        "unknown",
        None,
    )
    .await;
    assert_eq!(local.status, RunStatus::Completed, "{:?}", local.errors);
    assert!(local.context.contains_key("_outputs.fallthrough"));
    assert!(!local.context.contains_key("_outputs.special"));
    assert_eq!(observe(&local), observe(&remote));
}

/// An `all` join with a back edge (a plain cycle, allowed by metadata) does not wait for its
/// back edge in either mode: each node runs once and the run completes (regression: the
/// distributed core waited for the back edge and ended `stalled`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_all_join_does_not_wait_for_its_back_edge_in_both_modes() {
    if !crate::parity_enabled("an_all_join_does_not_wait_for_its_back_edge_in_both_modes") {
        return;
    }
    let blueprint = json!({"id": "back-edge", "metadata": {"allowCycles": true}, "nodes": [
                {"id": "s", "uses": "set", "params": {"values": {"v": 1}}},
                {"id": "a", "uses": "echo", "inputs": "v"},
                {"id": "x", "uses": "echo"}],
              "edges": [{"source": "s", "target": "a"}, {"source": "a", "target": "x"},
                        {"source": "x", "target": "a"}]});
    let local = completes_alike("back edge into an all join", blueprint).await;
    assert_eq!(local.context.get("_outputs.x"), Some(&json!(1)));
}
