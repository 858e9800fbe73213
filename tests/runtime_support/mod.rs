//! Shared helpers for the `runtime_*` integration tests: blueprint loading, a registry with
//! counting test nodes, and short-hands to run a blueprint.

#![allow(dead_code)]

use flowcraft_azure::flow::blueprint::{Blueprint, LoadOptions};
use flowcraft_azure::flow::execute::{BlueprintRegistry, Environment};
use flowcraft_azure::flow::expr::EvaluatorKind;
use flowcraft_azure::flow::node::{NodeRegistry, NodeResult};
use flowcraft_azure::flow::runtime::{FlowRuntime, WorkflowResult};
use serde_json::{Map, Value};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Loads a blueprint from a `json!` value (default evaluator), panicking with the load error.
pub fn bp(value: Value) -> Arc<Blueprint> {
    bp_with(value, EvaluatorKind::Property)
}

/// Loads a blueprint with the given evaluator.
pub fn bp_with(value: Value, evaluator: EvaluatorKind) -> Arc<Blueprint> {
    let opts = LoadOptions {
        evaluator,
        allow_cycles: false,
    };
    match Blueprint::from_json_with(&value.to_string(), &opts) {
        Ok(b) => Arc::new(b),
        Err(e) => panic!("test blueprint does not load: {e}"),
    }
}

/// A `json!` object as a context map.
pub fn ctx(value: Value) -> Map<String, Value> {
    match value {
        Value::Object(m) => m,
        other => panic!("expected an object, got {other}"),
    }
}

/// Records which nodes ran, in order.
#[derive(Clone, Default)]
pub struct Trace(Arc<Mutex<Vec<String>>>);

impl Trace {
    pub fn push(&self, id: &str) {
        self.0.lock().unwrap().push(id.to_string());
    }
    pub fn all(&self) -> Vec<String> {
        self.0.lock().unwrap().clone()
    }
    pub fn count(&self, id: &str) -> usize {
        self.0.lock().unwrap().iter().filter(|x| *x == id).count()
    }
    pub fn counts(&self) -> HashMap<String, usize> {
        let mut m = HashMap::new();
        for id in self.all() {
            *m.entry(id).or_insert(0) += 1;
        }
        m
    }
}

/// A runtime over `registry` (plus built-ins underneath) and `blueprints`.
pub fn runtime(registry: NodeRegistry) -> FlowRuntime {
    FlowRuntime::new(Environment::new(registry))
}

/// A runtime with sub-blueprints.
pub fn runtime_with(registry: NodeRegistry, blueprints: Vec<Arc<Blueprint>>) -> FlowRuntime {
    let mut reg = BlueprintRegistry::new();
    for b in blueprints {
        reg.insert(b);
    }
    FlowRuntime::new(Environment::new(registry).with_blueprints(reg))
}

/// Runs `blueprint` over `initial` with the built-ins only.
pub async fn run_builtins(blueprint: Value, initial: Value) -> WorkflowResult {
    run_builtins_bp(bp(blueprint), initial).await
}

/// [`run_builtins`] for an already loaded blueprint.
pub async fn run_builtins_bp(blueprint: Arc<Blueprint>, initial: Value) -> WorkflowResult {
    runtime(NodeRegistry::with_builtins())
        .run(blueprint, ctx(initial))
        .await
}

/// Starts `blueprint` over `initial` on `rt`, lets (possibly paused) time advance by `after`,
/// then cancels the run and returns its result.
pub async fn run_cancelled_after(
    rt: &FlowRuntime,
    blueprint: Arc<Blueprint>,
    initial: Value,
    after: Duration,
) -> WorkflowResult {
    let cancel = CancellationToken::new();
    let task = {
        let (rt, cancel) = (rt.clone(), cancel.clone());
        tokio::spawn(async move { rt.run_with(blueprint, ctx(initial), cancel).await })
    };
    tokio::time::sleep(after).await;
    cancel.cancel();
    match task.await {
        Ok(result) => result,
        Err(e) => panic!("the cancelled run's task failed: {e}"),
    }
}

/// Error messages of a result.
pub fn messages(result: &WorkflowResult) -> Vec<String> {
    result
        .errors
        .iter()
        .map(|e| format!("{}: {}", e.node_id, e.message))
        .collect()
}

/// The built-in nodes plus `trace`: records the node id in `trace` and echoes its input.
pub fn traced_registry(trace: &Trace) -> NodeRegistry {
    let mut r = NodeRegistry::with_builtins();
    let t = trace.clone();
    r.register("trace", move |ctx| {
        let t = t.clone();
        async move {
            t.push(ctx.node_id());
            Ok(NodeResult {
                output: ctx.input().cloned(),
                ..NodeResult::default()
            })
        }
    });
    r
}
