//! The simulated workload: the blueprints a schedule picks its runs from, and the `probe`
//! node that records every execution (run, node, attempt, input) so the checker can tell a
//! legitimate redelivery from a second retry chain.

use crate::distributed_common;
use flowcraft_azure::flow::execute::{BlueprintRegistry, Environment};
use flowcraft_azure::flow::node::{Dependencies, NodeContext, NodeError, NodeResult};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;
use tokio::time::Instant;

/// Which execution: (run, node, attempt, input as JSON).
pub type ExecutionKey = (String, String, u32, String);

/// One execution of a `probe` node: when it started and ended (`None` while it runs or
/// when it was abandoned), and whether it succeeded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Execution {
    /// Start (simulated time).
    pub start: Instant,
    /// End, if it finished.
    pub end: Option<Instant>,
    /// True when it returned a result, false when it failed.
    pub ok: bool,
}

/// Executions of `probe` nodes.
#[derive(Debug, Default)]
pub struct Executions(Mutex<BTreeMap<ExecutionKey, Vec<Execution>>>);

impl Executions {
    /// Every execution recorded so far.
    pub fn snapshot(&self) -> BTreeMap<ExecutionKey, Vec<Execution>> {
        self.0.lock().unwrap().clone()
    }

    fn start(&self, key: &ExecutionKey) -> usize {
        let mut map = self.0.lock().unwrap();
        let list = map.entry(key.clone()).or_default();
        list.push(Execution {
            start: Instant::now(),
            end: None,
            ok: false,
        });
        list.len() - 1
    }

    fn end(&self, key: &ExecutionKey, index: usize, ok: bool) {
        if let Some(e) = self
            .0
            .lock()
            .unwrap()
            .get_mut(key)
            .and_then(|l| l.get_mut(index))
        {
            e.end = Some(Instant::now());
            e.ok = ok;
        }
    }
}

/// `probe`: records the execution, takes `params.ms` or 0 to 300 ms (simulated; so leases lapse and
/// workers crash in the middle of nodes), fails attempts below `params.succeedOn` (default
/// 1: never fails), then outputs `params.output` (default: its input) with `params.action`.
async fn probe(ctx: NodeContext) -> Result<NodeResult, NodeError> {
    let key = (
        ctx.run_id().to_string(),
        ctx.node_id().to_string(),
        ctx.attempt(),
        ctx.input().map(Value::to_string).unwrap_or_default(),
    );
    let log = ctx.dependency::<Executions>();
    let index = log.as_ref().map(|log| log.start(&key));
    // The thread-local generator is seeded per schedule, so this is part of the seed.
    let ms = match ctx.params().get("ms").and_then(Value::as_u64) {
        Some(ms) => ms,
        None => fastrand::u64(0..=300),
    };
    tokio::time::sleep(Duration::from_millis(ms)).await;
    let result = run_probe(&ctx);
    if let (Some(log), Some(index)) = (log, index) {
        log.end(&key, index, result.is_ok());
    }
    result
}

fn run_probe(ctx: &NodeContext) -> Result<NodeResult, NodeError> {
    let succeed_on = ctx
        .params()
        .get("succeedOn")
        .and_then(Value::as_u64)
        .unwrap_or(1);
    if u64::from(ctx.attempt()) < succeed_on {
        return Err(NodeError::new(format!(
            "probe fails attempt {}",
            ctx.attempt()
        )));
    }
    Ok(NodeResult {
        output: ctx
            .params()
            .get("output")
            .cloned()
            .or_else(|| ctx.input().cloned()),
        action: ctx
            .params()
            .get("action")
            .and_then(Value::as_str)
            .map(str::to_string),
        ..NodeResult::default()
    })
}

fn node(id: &str, extra: Value) -> Value {
    let mut n = json!({"id": id, "uses": "probe"});
    if let (Value::Object(n), Value::Object(extra)) = (&mut n, extra) {
        n.extend(extra);
    }
    n
}

fn edge(source: &str, target: &str) -> Value {
    json!({"source": source, "target": target})
}

fn chain() -> Value {
    json!({"id": "chain",
        "nodes": [node("a", json!({"params": {"output": 1}})), node("b", json!({})),
                  node("c", json!({})), node("d", json!({}))],
        "edges": [edge("a", "b"), edge("b", "c"), edge("c", "d")]})
}

fn fan(n: usize, join: &str, id: &str) -> Value {
    let mut nodes = vec![node("start", json!({"params": {"output": "go"}}))];
    let mut edges = Vec::new();
    for i in 0..n {
        let b = format!("b{i}");
        nodes.push(node(&b, json!({"params": {"output": i}})));
        edges.push(edge("start", &b));
        edges.push(edge(&b, "join"));
    }
    nodes.push(node(
        "join",
        json!({"params": {"output": "joined"}, "config": {"joinStrategy": join}}),
    ));
    nodes.push(node("end", json!({})));
    edges.push(edge("join", "end"));
    json!({"id": id, "nodes": nodes, "edges": edges})
}

fn exclusive() -> Value {
    json!({"id": "exclusive",
        "nodes": [node("decide", json!({"params": {"output": 5, "action": "left"}})),
                  node("left", json!({"params": {"output": "L"}})),
                  node("right", json!({"params": {"output": "R"}})),
                  node("merge", json!({"config": {"joinStrategy": "any"}}))],
        "edges": [{"source": "decide", "target": "left", "action": "left"},
                  {"source": "decide", "target": "right", "action": "right"},
                  edge("left", "merge"), edge("right", "merge")]})
}

fn retry() -> Value {
    json!({"id": "retry",
        "nodes": [node("s", json!({"params": {"output": "x"}})),
                  node("r", json!({"params": {"succeedOn": 3},
                                   "config": {"maxRetries": 3, "retryDelay": 1500}})),
                  node("t", json!({}))],
        "edges": [edge("s", "r"), edge("r", "t")]})
}

/// A node longer than the workers' visibility timeout: its lease is renewed while it runs.
fn long() -> Value {
    json!({"id": "long",
        "nodes": [node("s", json!({"params": {"output": 1}})),
                  node("slow", json!({"params": {"ms": 12_000}})),
                  node("t", json!({}))],
        "edges": [edge("s", "slow"), edge("slow", "t")]})
}

fn fallback() -> Value {
    json!({"id": "fallback",
        "nodes": [node("s", json!({"params": {"output": "x"}})),
                  node("f", json!({"params": {"succeedOn": 99},
                                   "config": {"maxRetries": 2, "retryDelay": 500, "fallback": "fb"}})),
                  node("fb", json!({"params": {"output": "rescued"}})),
                  node("t", json!({}))],
        "edges": [edge("s", "f"), edge("f", "t")]})
}

fn sleep() -> Value {
    json!({"id": "sleep",
        "nodes": [node("s", json!({"params": {"output": 42}})),
                  {"id": "nap", "uses": "sleep", "inputs": "s", "params": {"duration": "2s"}},
                  node("t", json!({}))],
        "edges": [edge("s", "nap"), edge("nap", "t")]})
}

/// Context keys whose value depends on arrival order, not on faults: a join's input is the
/// output of whichever branch arrived last (`all`) or first (`any`).
pub const ORDER_DEPENDENT_KEYS: [&str; 1] = ["_inputs.join"];

/// The node a driver resumes in the `wait` blueprint, and the action it resumes with.
pub const WAIT_NODE: &str = "review";
/// See [`WAIT_NODE`].
pub const WAIT_ACTION: &str = "approve";

fn wait() -> Value {
    json!({"id": "wait",
        "nodes": [node("s", json!({"params": {"output": "req"}})),
                  {"id": WAIT_NODE, "uses": "wait"},
                  node("approved", json!({"params": {"output": "yes"}})),
                  node("rejected", json!({"params": {"output": "no"}})),
                  node("notify", json!({"config": {"joinStrategy": "any"}}))],
        "edges": [edge("s", WAIT_NODE),
                  {"source": WAIT_NODE, "target": "approved", "action": "approve"},
                  {"source": WAIT_NODE, "target": "rejected", "action": "reject"},
                  edge("approved", "notify"), edge("rejected", "notify")]})
}

fn inner() -> Value {
    json!({"id": "inner",
        "nodes": [node("x", json!({"params": {"output": "in"}})), node("y", json!({}))],
        "edges": [edge("x", "y")]})
}

fn subflow() -> Value {
    json!({"id": "subflow",
        "nodes": [node("pre", json!({"params": {"output": 1}})),
                  {"id": "sub", "uses": "subflow", "params": {"blueprintId": "inner"}},
                  node("post", json!({}))],
        "edges": [edge("pre", "sub"), edge("sub", "post")]})
}

fn fixture(name: &str) -> Value {
    let path = format!(
        "{}/fixtures/blueprints/{name}.json",
        env!("CARGO_MANIFEST_DIR")
    );
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// The blueprints a schedule starts runs of (`inner` only runs as a subflow).
pub const STARTABLE: [&str; 12] = [
    "chain",
    "fan16",
    "any",
    "exclusive",
    "retry",
    "fallback",
    "sleep",
    "wait",
    "subflow",
    "loop",
    "batch",
    "long",
];

/// The environment every simulated worker and client shares: built-ins, the common test
/// nodes, `probe`, all blueprints, and a fresh [`Executions`] log.
pub fn environment() -> Environment {
    let mut registry = distributed_common::registry();
    registry.register("probe", probe);
    let mut blueprints = BlueprintRegistry::new();
    for bp in [
        chain(),
        fan(16, "all", "fan16"),
        fan(3, "any", "any"),
        exclusive(),
        retry(),
        fallback(),
        long(),
        sleep(),
        wait(),
        inner(),
        subflow(),
        fixture("loop"),
        fixture("batch"),
    ] {
        blueprints.insert(distributed_common::blueprint(&bp.to_string()));
    }
    Environment::new(registry)
        .with_blueprints(blueprints)
        .with_dependencies(Dependencies::new().with(Executions::default()))
}
