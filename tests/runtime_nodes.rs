//! The node contract and the execution seam: lifecycle nodes (node.test), one attempt through
//! `execute_attempt` (executors.test), backoff, routing and input resolution units.

mod runtime_support;

use async_trait::async_trait;
use flowcraft_azure::flow::context::{AwaitReason, ContextDelta};
use flowcraft_azure::flow::execute::{
    AttemptOutcome, AttemptRequest, Environment, execute_attempt, retry_delay,
};
use flowcraft_azure::flow::node::{
    LifecycleNode, NodeContext, NodeError, NodeRegistry, NodeResult,
};
use flowcraft_azure::flow::routing::{Activation, output_keys, resolve_input, route};
use flowcraft_azure::flow::runtime::RunStatus;
use runtime_support::*;
use serde_json::{Map, Value, json};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

// ------------------------------------------------------------------------------------------
// lifecycle nodes

/// A lifecycle node whose phases record themselves and fail as configured.
struct Phased {
    log: Arc<Mutex<Vec<String>>>,
    fail_prep: bool,
    exec_failures: u32,
    recover: bool,
}

impl Phased {
    fn push(&self, s: String) {
        self.log.lock().unwrap().push(s);
    }
}

#[async_trait]
impl LifecycleNode for Phased {
    async fn prep(&self, ctx: &NodeContext) -> Result<Option<Value>, NodeError> {
        self.push("prep".into());
        if self.fail_prep {
            return Err(NodeError::new("prep broke"));
        }
        Ok(ctx.input().cloned())
    }

    async fn exec(
        &self,
        prepared: Option<Value>,
        ctx: &NodeContext,
    ) -> Result<NodeResult, NodeError> {
        self.push(format!("exec{}", ctx.attempt()));
        if ctx.attempt() <= self.exec_failures {
            return Err(NodeError::new("exec broke"));
        }
        Ok(NodeResult::output(prepared.unwrap_or(Value::Null)))
    }

    async fn fallback(
        &self,
        error: NodeError,
        _ctx: &NodeContext,
    ) -> Result<NodeResult, NodeError> {
        self.push("fallback".into());
        if self.recover {
            Ok(NodeResult::output(json!("recovered")))
        } else {
            Err(error)
        }
    }

    async fn post(&self, result: NodeResult, _ctx: &NodeContext) -> Result<NodeResult, NodeError> {
        self.push(format!(
            "post:{}",
            result.output.clone().unwrap_or(Value::Null)
        ));
        Ok(result)
    }
}

async fn run_phased(
    fail_prep: bool,
    exec_failures: u32,
    recover: bool,
    max_retries: u32,
) -> (RunStatus, Vec<String>, Vec<String>) {
    let log = Arc::new(Mutex::new(Vec::new()));
    let mut r = NodeRegistry::with_builtins();
    r.register_lifecycle(
        "phased",
        Phased {
            log: log.clone(),
            fail_prep,
            exec_failures,
            recover,
        },
    );
    let b = bp(json!({"id": "life", "nodes": [
        {"id": "n", "uses": "phased", "inputs": "v", "config": {"maxRetries": max_retries}}],
      "edges": []}));
    let result = runtime(r).run(b, ctx(json!({"v": 5}))).await;
    let log = log.lock().unwrap().clone();
    (result.status, log, messages(&result))
}

#[tokio::test]
async fn lifecycle_phases_run_in_order_and_post_sees_the_exec_result() {
    let (status, log, _) = run_phased(false, 0, false, 1).await;
    assert_eq!(status, RunStatus::Completed);
    assert_eq!(log, ["prep", "exec1", "post:5"]);
}

#[tokio::test]
async fn post_is_not_called_when_prep_fails_and_prep_is_not_retried() {
    let (status, log, msgs) = run_phased(true, 0, true, 3).await;
    assert_eq!(status, RunStatus::Failed);
    assert_eq!(log, ["prep"]);
    assert_eq!(msgs, ["n: prep broke"]);
}

#[tokio::test]
async fn post_is_not_called_when_exec_fails_and_the_default_fallback_rethrows() {
    let (status, log, msgs) = run_phased(false, 9, false, 2).await;
    assert_eq!(status, RunStatus::Failed);
    assert_eq!(log, ["prep", "exec1", "prep", "exec2", "fallback"]);
    assert_eq!(msgs, ["n: exec broke"]);
}

#[tokio::test]
async fn post_receives_the_fallback_result_after_the_last_exec_attempt() {
    let (status, log, _) = run_phased(false, 9, true, 2).await;
    assert_eq!(status, RunStatus::Completed);
    assert_eq!(
        log,
        [
            "prep",
            "exec1",
            "prep",
            "exec2",
            "fallback",
            "post:\"recovered\""
        ]
    );
}

#[tokio::test]
async fn exec_is_retried_until_it_succeeds() {
    let (status, log, _) = run_phased(false, 1, false, 3).await;
    assert_eq!(status, RunStatus::Completed);
    assert_eq!(log, ["prep", "exec1", "prep", "exec2", "post:5"]);
}

// ------------------------------------------------------------------------------------------
// execute_attempt

fn attempt_env() -> Environment {
    let mut r = NodeRegistry::with_builtins();
    r.register("writer", |ctx| async move {
        ctx.context().set("seen", json!(ctx.input().cloned()));
        ctx.context().delete("old");
        Ok(NodeResult::output(
            json!({"attempt": ctx.attempt(), "run": ctx.run_id(),
            "bp": ctx.blueprint_id(), "node": ctx.node_id(), "params": ctx.params().clone()}),
        ))
    });
    Environment::new(r)
}

async fn attempt(
    env: &Environment,
    b: &Arc<flowcraft_azure::flow::blueprint::Blueprint>,
    node: &str,
    context: &Map<String, Value>,
    input: Option<Value>,
) -> AttemptOutcome {
    execute_attempt(AttemptRequest {
        env,
        blueprint: b,
        node_id: node,
        run_id: "run-1",
        context,
        attempt: 2,
        cancel: CancellationToken::new(),
        input,
    })
    .await
}

#[tokio::test]
async fn an_attempt_returns_the_result_and_buffered_writes_without_committing() {
    let env = attempt_env();
    let b = bp(json!({"id": "bp1", "nodes": [
        {"id": "w", "uses": "writer", "inputs": "x", "params": {"p": 1}}], "edges": []}));
    let before = b.definition().clone();
    let context = ctx(json!({"x": "input!", "old": true}));
    let AttemptOutcome::Completed(done) = attempt(&env, &b, "w", &context, None).await else {
        panic!("expected completion");
    };
    assert_eq!(
        done.result.output,
        Some(json!({"attempt": 2, "run": "run-1", "bp": "bp1", "node": "w", "params": {"p": 1}}))
    );
    assert_eq!(
        done.deltas,
        vec![
            ContextDelta::Set {
                key: "seen".into(),
                value: json!("input!")
            },
            ContextDelta::Delete { key: "old".into() },
        ]
    );
    assert!(done.awaiting.is_none());
    assert_eq!(context["old"], json!(true));
    assert_eq!(b.definition(), &before);
}

#[tokio::test]
async fn an_input_override_replaces_the_resolved_input() {
    let env = attempt_env();
    let b = bp(
        json!({"id": "bp1", "nodes": [{"id": "w", "uses": "writer", "inputs": "x"}], "edges": []}),
    );
    let context = ctx(json!({"x": "from context"}));
    let AttemptOutcome::Completed(done) =
        attempt(&env, &b, "w", &context, Some(json!("override"))).await
    else {
        panic!("expected completion");
    };
    assert_eq!(
        done.deltas[0],
        ContextDelta::Set {
            key: "seen".into(),
            value: json!("override")
        }
    );
}

#[tokio::test]
async fn wait_reports_its_awaiting_mark() {
    let env = attempt_env();
    let b = bp(json!({"id": "bp", "nodes": [{"id": "w", "uses": "wait"}], "edges": []}));
    let AttemptOutcome::Completed(done) = attempt(&env, &b, "w", &Map::new(), None).await else {
        panic!("expected completion");
    };
    assert_eq!(
        done.awaiting.map(|a| a.reason),
        Some(AwaitReason::ExternalEvent)
    );
}

#[tokio::test]
async fn scatter_records_its_dynamic_node_definitions_as_context_writes() {
    let env = attempt_env();
    let b = bp(
        json!({"id": "bp", "nodes": [{"id": "s", "uses": "batch-scatter", "inputs": "items",
        "params": {"workerUsesKey": "writer", "gatherNodeId": "g"}}], "edges": []}),
    );
    let context = ctx(json!({"items": ["a", "b"]}));
    let AttemptOutcome::Completed(done) = attempt(&env, &b, "s", &context, None).await else {
        panic!("expected completion");
    };
    assert_eq!(done.result.dynamic_nodes.len(), 2);
    let worker = &done.result.dynamic_nodes[1];
    let stored = done
        .deltas
        .iter()
        .find(|d| d.key() == format!("_dynamic.{}", worker.id))
        .cloned();
    assert!(matches!(stored, Some(ContextDelta::Set { .. })));
    // a worker can then be executed from the committed context alone
    let mut committed = context.clone();
    flowcraft_azure::flow::context::apply_deltas(&mut committed, &done.deltas);
    let AttemptOutcome::Completed(ran) = attempt(&env, &b, &worker.id, &committed, None).await
    else {
        panic!("expected the dynamic worker to run");
    };
    assert_eq!(
        ran.deltas[0],
        ContextDelta::Set {
            key: "seen".into(),
            value: json!("b")
        }
    );
}

#[tokio::test]
async fn missing_nodes_implementations_and_fatal_errors_are_not_retryable() {
    let mut r = NodeRegistry::new();
    r.register("fatal", |_ctx| async {
        Err::<NodeResult, _>(NodeError::fatal("no"))
    });
    r.register("plain", |_ctx| async {
        Err::<NodeResult, _>(NodeError::new("maybe"))
    });
    let env = Environment::new(r);
    let b = bp(json!({"id": "bp", "nodes": [
        {"id": "m", "uses": "missing"}, {"id": "f", "uses": "fatal"}, {"id": "p", "uses": "plain"}],
      "edges": []}));
    let cases = [
        ("m", "Implementation for 'missing' not found.", false),
        ("f", "no", false),
        ("p", "maybe", true),
        ("ghost", "Node 'ghost' not found in blueprint 'bp'.", false),
    ];
    for (node, message, retryable) in cases {
        match attempt(&env, &b, node, &Map::new(), None).await {
            AttemptOutcome::Failed {
                error,
                retryable: r,
            } => {
                assert_eq!(error.message, message);
                assert_eq!(r, retryable, "{node}");
            }
            other => panic!("{node}: expected a failure, got {other:?}"),
        }
    }
}

#[tokio::test(start_paused = true)]
async fn a_cancelled_attempt_stops_at_once() {
    let env = attempt_env();
    let b = bp(
        json!({"id": "bp", "nodes": [{"id": "w", "uses": "work", "params": {"ms": 100000}}],
      "edges": []}),
    );
    let cancel = CancellationToken::new();
    let trigger = cancel.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(5)).await;
        trigger.cancel();
    });
    let context = Map::new();
    let outcome = execute_attempt(AttemptRequest {
        env: &env,
        blueprint: &b,
        node_id: "w",
        run_id: "r",
        context: &context,
        attempt: 1,
        cancel,
        input: None,
    })
    .await;
    assert!(matches!(
        outcome,
        AttemptOutcome::Failed { ref error, retryable: false } if error.message == "Workflow cancelled"
    ));
}

// ------------------------------------------------------------------------------------------
// retry_delay

#[test]
fn retry_delay_doubles_from_the_base_and_is_capped() {
    let b = bp(json!({"id": "bp", "nodes": [
        {"id": "d", "uses": "echo", "config": {"retryDelay": 100}},
        {"id": "none", "uses": "echo"},
        {"id": "huge", "uses": "echo", "config": {"retryDelay": 600000}}], "edges": []}));
    let d = b.node("d").unwrap();
    assert_eq!(retry_delay(d, 1), Duration::ZERO);
    assert_eq!(retry_delay(d, 2), Duration::from_millis(100));
    assert_eq!(retry_delay(d, 3), Duration::from_millis(200));
    assert_eq!(retry_delay(d, 5), Duration::from_millis(800));
    assert_eq!(retry_delay(b.node("none").unwrap(), 3), Duration::ZERO);
    let cap = flowcraft_azure::flow::execute::MAX_RETRY_DELAY;
    assert_eq!(retry_delay(b.node("huge").unwrap(), 10), cap);
    assert_eq!(retry_delay(d, u32::MAX), cap);
}

// ------------------------------------------------------------------------------------------
// routing and inputs

#[test]
fn a_fallback_node_inherits_the_failed_nodes_edges_as_that_node() {
    let b = bp(json!({"id": "bp", "nodes": [
        {"id": "a", "uses": "echo", "config": {"fallback": "f"}},
        {"id": "f", "uses": "echo"}, {"id": "next", "uses": "echo"}, {"id": "own", "uses": "echo"}],
      "edges": [{"source": "a", "target": "next"}, {"source": "f", "target": "own"}]}));
    let acts = route(&b, "f", &NodeResult::output(json!(1)), &Map::new());
    let pairs: Vec<(String, String)> = acts
        .iter()
        .map(|a| (a.source.clone(), a.target.clone()))
        .collect();
    assert_eq!(
        pairs,
        [
            ("f".to_string(), "own".to_string()),
            ("a".to_string(), "next".to_string())
        ]
    );
}

#[test]
fn duplicate_edges_are_taken_once() {
    let b = bp(json!({"id": "bp", "nodes": [
        {"id": "a", "uses": "echo"}, {"id": "b", "uses": "echo"}],
      "edges": [{"source": "a", "target": "b"}, {"source": "a", "target": "b"}]}));
    let acts = route(&b, "a", &NodeResult::output(json!(1)), &Map::new());
    assert_eq!(
        acts,
        vec![Activation {
            edge: 0,
            source: "a".into(),
            target: "b".into(),
            input: Some(json!(1))
        }]
    );
}

#[test]
fn a_transform_evaluating_to_undefined_delivers_nothing() {
    let b = bp(json!({"id": "bp", "nodes": [
        {"id": "a", "uses": "echo"}, {"id": "b", "uses": "echo"}],
      "edges": [{"source": "a", "target": "b", "transform": "input.missing"}]}));
    let acts = route(&b, "a", &NodeResult::output(json!({"x": 1})), &Map::new());
    assert_eq!(acts.len(), 1);
    assert_eq!(acts[0].input, None);
}

#[test]
fn transforms_see_the_input_and_the_context() {
    let b = bp(json!({"id": "bp", "nodes": [
        {"id": "a", "uses": "echo"}, {"id": "b", "uses": "echo"}],
      "edges": [{"source": "a", "target": "b", "transform": "context.rate"}]}));
    let acts = route(
        &b,
        "a",
        &NodeResult::output(json!(1)),
        &ctx(json!({"rate": 3})),
    );
    assert_eq!(acts[0].input, Some(json!(3)));
}

#[test]
fn input_resolution_follows_spec_2_7() {
    let b = bp(json!({"id": "bp", "nodes": [
        {"id": "plain", "uses": "echo"},
        {"id": "under", "uses": "echo", "inputs": "_inputs.plain"},
        {"id": "nullstep", "uses": "echo", "inputs": "n.a.b"},
        {"id": "prefer_output", "uses": "echo", "inputs": "k"}],
      "edges": []}));
    let context = ctx(json!({
        "_inputs.plain": "delivered", "_outputs.n": {"a": null}, "k": "plain key",
        "_outputs.k": "output wins"}));
    assert_eq!(
        resolve_input(&b, "plain", &context),
        Some(json!("delivered"))
    );
    assert_eq!(
        resolve_input(&b, "under", &context),
        Some(json!("delivered"))
    );
    assert_eq!(resolve_input(&b, "nullstep", &context), None);
    assert_eq!(
        resolve_input(&b, "prefer_output", &context),
        Some(json!("output wins"))
    );
    assert_eq!(resolve_input(&b, "unknown", &context), None);
}

#[test]
fn input_paths_read_like_javascript_property_reads() {
    let b = bp(json!({"id": "bp", "nodes": [
        {"id": "count", "uses": "echo", "inputs": "order.items.length"},
        {"id": "second", "uses": "echo", "inputs": "order.items.1"},
        {"id": "padded", "uses": "echo", "inputs": "order.items.01"},
        {"id": "chars", "uses": "echo", "inputs": "order.name.length"},
        {"id": "final_null", "uses": "echo", "inputs": "order.note"},
        {"id": "past_end", "uses": "echo", "inputs": "order.items.9"}],
      "edges": []}));
    let context = ctx(json!({
        "_outputs.order": {"items": ["a", "b", "c"], "name": "héllo", "note": null}}));
    let read = |id: &str| resolve_input(&b, id, &context);
    assert_eq!(read("count"), Some(json!(3)));
    assert_eq!(read("second"), Some(json!("b")));
    // "01" is not an array index in JavaScript
    assert_eq!(read("padded"), None);
    assert_eq!(read("chars"), Some(json!(5)));
    // a null at the end of the path is a value; stepping into it is not
    assert_eq!(read("final_null"), Some(Value::Null));
    assert_eq!(read("past_end"), None);
}

#[test]
fn delivered_input_replaces_named_inputs_only_after_a_transform_edge_source_completed() {
    let b = bp(json!({"id": "bp", "nodes": [
        {"id": "init", "uses": "echo"}, {"id": "body", "uses": "echo", "inputs": "seed"},
        {"id": "back", "uses": "echo"}],
      "edges": [{"source": "init", "target": "body"},
                {"source": "back", "target": "body", "transform": "input"}]}));
    // entered through the plain edge: `inputs` wins although `_inputs.body` is set
    let mut context = ctx(json!({"seed": "from inputs", "_outputs.init": "init out",
        "_inputs.body": "init out"}));
    assert_eq!(
        resolve_input(&b, "body", &context),
        Some(json!("from inputs"))
    );
    // once the transform edge's source has completed, the delivered value wins
    context.insert("_outputs.back".into(), json!("back out"));
    context.insert("_inputs.body".into(), json!("transformed"));
    assert_eq!(
        resolve_input(&b, "body", &context),
        Some(json!("transformed"))
    );
}

#[test]
fn output_keys_are_the_prefixed_and_the_bare_id() {
    assert_eq!(
        output_keys("a.b"),
        ["_outputs.a.b".to_string(), "a.b".to_string()]
    );
}

// ------------------------------------------------------------------------------------------
// a result carrying an error

#[tokio::test]
async fn a_result_carrying_an_error_fails_the_node_with_that_message_after_its_retries() {
    let calls = Arc::new(Mutex::new(0u32));
    let mut registry = NodeRegistry::with_builtins();
    let c = calls.clone();
    registry.register("remote", move |_ctx| {
        let c = c.clone();
        async move {
            *c.lock().unwrap() += 1;
            // what a service speaking Flowcraft's result shape might answer
            NodeResult::from_json(json!({"output": null, "error": {"message": "card declined"}}))
        }
    });
    let blueprint = bp(json!({"id": "pay", "nodes": [
        {"id": "charge", "uses": "remote", "config": {"maxRetries": 2}},
        {"id": "ship", "uses": "echo"}],
      "edges": [{"source": "charge", "target": "ship"}]}));
    let result = runtime(registry).run(blueprint, ctx(json!({}))).await;
    assert_eq!(result.status, RunStatus::Failed);
    assert_eq!(messages(&result), ["charge: card declined"]);
    assert_eq!(*calls.lock().unwrap(), 2);
    assert!(!result.context.contains_key("_outputs.ship"));
}
