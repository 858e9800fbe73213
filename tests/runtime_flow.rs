//! End-to-end behaviour of the in-process runtime (ports of Flowcraft's `runtime.test.ts`,
//! `traverser.test.ts`, `state.test.ts` and the executor tests that apply to function nodes).

mod runtime_support;

use flowcraft_azure::flow::execute::Environment;
use flowcraft_azure::flow::expr::EvaluatorKind;
use flowcraft_azure::flow::node::{Dependencies, NodeError, NodeRegistry, NodeResult};
use flowcraft_azure::flow::runtime::{FlowRuntime, MAX_ITERATIONS, RunStatus};
use runtime_support::*;
use serde_json::{Value, json};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use tokio_util::sync::CancellationToken;

/// Built-ins plus `trace` (records the node id, echoes the input) and `double`.
fn registry(trace: &Trace) -> NodeRegistry {
    let mut r = traced_registry(trace);
    let t = trace.clone();
    r.register("double", move |ctx| {
        let t = t.clone();
        async move {
            t.push(ctx.node_id());
            let n = ctx.input().and_then(Value::as_i64).unwrap_or(0);
            Ok(NodeResult::output(json!(n * 2)))
        }
    });
    let t = trace.clone();
    r.register("tag", move |ctx| {
        let t = t.clone();
        async move {
            t.push(ctx.node_id());
            Ok(NodeResult::output(json!(ctx.node_id())))
        }
    });
    r
}

#[tokio::test]
async fn linear_flow_runs_in_order_and_stores_outputs_under_both_keys() {
    let trace = Trace::default();
    let b = bp(json!({"id": "lin", "nodes": [
        {"id": "a", "uses": "double", "inputs": "n"},
        {"id": "b", "uses": "double"},
        {"id": "c", "uses": "double"}],
      "edges": [{"source": "a", "target": "b"}, {"source": "b", "target": "c"}]}));
    let result = runtime(registry(&trace)).run(b, ctx(json!({"n": 3}))).await;
    assert_eq!(
        result.status,
        RunStatus::Completed,
        "{:?}",
        messages(&result)
    );
    assert_eq!(trace.all(), ["a", "b", "c"]);
    assert_eq!(result.context["_outputs.c"], json!(24));
    assert_eq!(result.context["c"], json!(24));
    assert_eq!(result.context["_inputs.c"], json!(12));
    assert!(result.context["_executionId"].is_string());
    assert!(result.errors.is_empty());
}

#[tokio::test]
async fn empty_blueprint_completes_at_once() {
    let result = run_builtins(json!({"id": "empty", "nodes": [], "edges": []}), json!({})).await;
    assert_eq!(result.status, RunStatus::Completed);
}

#[tokio::test]
async fn fan_in_waits_for_both_branches_runs_once_and_gets_the_last_input() {
    let trace = Trace::default();
    let b = bp(json!({"id": "fan", "nodes": [
        {"id": "s", "uses": "trace"},
        {"id": "a", "uses": "tag"}, {"id": "b", "uses": "tag"},
        {"id": "j", "uses": "trace"}],
      "edges": [{"source": "s", "target": "a"}, {"source": "s", "target": "b"},
                {"source": "a", "target": "j"}, {"source": "b", "target": "j"}]}));
    let result = runtime(registry(&trace))
        .with_concurrency(1)
        .run(b, ctx(json!({})))
        .await;
    assert_eq!(result.status, RunStatus::Completed);
    assert_eq!(trace.all(), ["s", "a", "b", "j"]);
    assert_eq!(result.context["_outputs.j"], json!("b"));
}

#[tokio::test]
async fn failed_branch_fails_the_run_and_the_join_never_runs_but_siblings_continue() {
    let trace = Trace::default();
    let b = bp(json!({"id": "fail", "nodes": [
        {"id": "s", "uses": "trace"},
        {"id": "bad", "uses": "fail", "params": {"message": "card declined"}},
        {"id": "ok", "uses": "trace"}, {"id": "ok2", "uses": "trace"},
        {"id": "j", "uses": "trace"}],
      "edges": [{"source": "s", "target": "bad"}, {"source": "s", "target": "ok"},
                {"source": "ok", "target": "ok2"},
                {"source": "bad", "target": "j"}, {"source": "ok2", "target": "j"}]}));
    let result = runtime(registry(&trace)).run(b, ctx(json!({}))).await;
    assert_eq!(result.status, RunStatus::Failed);
    assert_eq!(messages(&result), ["bad: card declined"]);
    assert_eq!(trace.count("ok2"), 1);
    assert_eq!(trace.count("j"), 0);
    assert!(!result.context.contains_key("_outputs.bad"));
}

#[tokio::test]
async fn every_start_node_runs() {
    let trace = Trace::default();
    let b = bp(json!({"id": "starts", "nodes": [
        {"id": "a", "uses": "trace"}, {"id": "b", "uses": "trace"}, {"id": "c", "uses": "trace"}],
      "edges": []}));
    let result = runtime(registry(&trace)).run(b, ctx(json!({}))).await;
    assert_eq!(result.status, RunStatus::Completed);
    let mut ran = trace.all();
    ran.sort();
    assert_eq!(ran, ["a", "b", "c"]);
}

#[tokio::test]
async fn a_plain_cycle_runs_each_node_once() {
    let trace = Trace::default();
    let b = bp(
        json!({"id": "cyc", "metadata": {"allowCycles": true}, "nodes": [
        {"id": "a", "uses": "trace"}, {"id": "b", "uses": "trace"}],
      "edges": [{"source": "a", "target": "b"}, {"source": "b", "target": "a"}]}),
    );
    let result = runtime(registry(&trace)).run(b, ctx(json!({}))).await;
    assert_eq!(result.status, RunStatus::Completed);
    assert_eq!(trace.counts().values().copied().collect::<Vec<_>>(), [1, 1]);
}

#[tokio::test]
async fn a_self_loop_runs_once() {
    let trace = Trace::default();
    let b = bp(json!({"id": "self", "metadata": {"allowCycles": true},
      "nodes": [{"id": "s", "uses": "trace"}, {"id": "a", "uses": "trace"}],
      "edges": [{"source": "s", "target": "a"}, {"source": "a", "target": "a"}]}));
    let result = runtime(registry(&trace)).run(b, ctx(json!({}))).await;
    assert_eq!(result.status, RunStatus::Completed);
    assert_eq!(trace.count("a"), 1);
}

/// `inc` adds one to the context key `count`.
fn counting_registry(trace: &Trace) -> NodeRegistry {
    let mut r = registry(trace);
    let t = trace.clone();
    r.register("inc", move |ctx| {
        let t = t.clone();
        async move {
            t.push(ctx.node_id());
            let n = ctx
                .context()
                .get("count")
                .and_then(|v| v.as_i64())
                .unwrap_or(0)
                + 1;
            ctx.context().set("count", json!(n));
            Ok(NodeResult::output(json!(n)))
        }
    });
    r
}

fn loop_blueprint(condition: &str, extra_edges: Vec<Value>) -> Value {
    let mut edges = vec![
        json!({"source": "init", "target": "inc"}),
        json!({"source": "inc", "target": "ctl"}),
        json!({"source": "ctl", "target": "inc", "action": "continue"}),
        json!({"source": "ctl", "target": "done", "action": "break"}),
    ];
    edges.extend(extra_edges);
    json!({"id": "loop", "nodes": [
        {"id": "init", "uses": "set", "params": {"values": {"count": 0}}},
        {"id": "inc", "uses": "inc"},
        {"id": "ctl", "uses": "loop-controller", "params": {"condition": condition},
         "config": {"joinStrategy": "any"}},
        {"id": "done", "uses": "trace"}],
      "edges": edges})
}

#[tokio::test]
async fn loop_controller_continues_until_its_condition_is_false_then_breaks() {
    let trace = Trace::default();
    let b = bp_with(loop_blueprint("count < 3", vec![]), EvaluatorKind::Safe);
    let result = runtime(counting_registry(&trace))
        .run(b, ctx(json!({})))
        .await;
    assert_eq!(
        result.status,
        RunStatus::Completed,
        "{:?}",
        messages(&result)
    );
    assert_eq!(trace.count("inc"), 3);
    assert_eq!(trace.count("done"), 1);
    assert_eq!(result.context["count"], json!(3));
    assert_eq!(result.context["_outputs.ctl"], Value::Null);
}

#[tokio::test]
async fn a_conditional_break_edge_leaves_the_loop_early() {
    let trace = Trace::default();
    let early = json!({"source": "ctl", "target": "early", "action": "break",
                       "condition": "count == 2"});
    let mut value = loop_blueprint("count < 10", vec![early]);
    value["nodes"]
        .as_array_mut()
        .unwrap()
        .push(json!({"id": "early", "uses": "trace"}));
    let b = bp_with(value, EvaluatorKind::Safe);
    let result = runtime(counting_registry(&trace))
        .run(b, ctx(json!({})))
        .await;
    assert_eq!(
        result.status,
        RunStatus::Completed,
        "{:?}",
        messages(&result)
    );
    assert_eq!(trace.count("inc"), 2);
    assert_eq!(trace.count("early"), 1);
    assert_eq!(trace.count("done"), 0);
}

#[tokio::test]
async fn an_endless_loop_hits_the_iteration_guard() {
    let trace = Trace::default();
    let b = bp_with(loop_blueprint("true", vec![]), EvaluatorKind::Safe);
    let result = runtime(counting_registry(&trace))
        .run(b, ctx(json!({})))
        .await;
    assert_eq!(result.status, RunStatus::Failed);
    assert!(
        messages(&result)[0].contains("maximum iterations"),
        "{:?}",
        messages(&result)
    );
    // the guard stops the loop when its body would run a 10001st time
    assert_eq!(trace.count("inc"), MAX_ITERATIONS);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_with_more_workers_than_the_iteration_guard_completes() {
    let items: Vec<usize> = (0..MAX_ITERATIONS + 5).collect();
    let expected: usize = items.iter().sum();
    let blueprint = bp(json!({"id": "big", "nodes": [
        {"id": "s", "uses": "batch-scatter", "inputs": "items",
         "params": {"workerUsesKey": "echo", "gatherNodeId": "g"}},
        {"id": "g", "uses": "batch-gather"},
        {"id": "total", "uses": "sum", "inputs": "g"}],
      "edges": [{"source": "s", "target": "g"}, {"source": "g", "target": "total"}]}));
    let result = runtime(NodeRegistry::with_builtins())
        .run(blueprint, ctx(json!({"items": items})))
        .await;
    assert_eq!(
        result.status,
        RunStatus::Completed,
        "{:?}",
        messages(&result)
    );
    assert_eq!(result.context["total"], json!(expected));
}

#[tokio::test]
async fn fallback_success_completes_without_errors_and_feeds_the_successor() {
    let trace = Trace::default();
    let b = bp(json!({"id": "fb", "nodes": [
        {"id": "a", "uses": "fail", "config": {"fallback": "f"}},
        {"id": "f", "uses": "tag"},
        {"id": "end", "uses": "trace"}],
      "edges": [{"source": "a", "target": "end"}]}));
    let result = runtime(registry(&trace)).run(b, ctx(json!({}))).await;
    assert_eq!(
        result.status,
        RunStatus::Completed,
        "{:?}",
        messages(&result)
    );
    assert!(result.errors.is_empty());
    assert_eq!(result.context["_outputs.a"], Value::Null);
    assert_eq!(result.context["_outputs.end"], json!("f"));
    assert_eq!(result.context["_catch_error"]["nodeId"], json!("a"));
    assert_eq!(trace.all(), ["f", "end"]);
}

#[tokio::test]
async fn retries_run_max_retries_attempts_then_the_fallback_once() {
    let trace = Trace::default();
    let mut r = registry(&trace);
    let calls = Arc::new(AtomicUsize::new(0));
    let c = calls.clone();
    r.register("flaky", move |_ctx| {
        let c = c.clone();
        async move {
            c.fetch_add(1, Ordering::SeqCst);
            Err::<NodeResult, _>(NodeError::new("still broken"))
        }
    });
    let b = bp(json!({"id": "rf", "nodes": [
        {"id": "a", "uses": "flaky", "config": {"maxRetries": 3, "fallback": "f"}},
        {"id": "f", "uses": "tag"},
        {"id": "end", "uses": "trace"}],
      "edges": [{"source": "a", "target": "end"}]}));
    let result = runtime(r).run(b, ctx(json!({}))).await;
    assert_eq!(result.status, RunStatus::Completed);
    assert_eq!(calls.load(Ordering::SeqCst), 3);
    assert_eq!(trace.count("f"), 1);
    assert_eq!(result.context["_inputs.end"], json!("f"));
    assert_eq!(
        result.context["_catch_error"]["message"],
        json!("still broken")
    );
}

#[tokio::test]
async fn a_fallback_counts_as_the_failed_node_for_joins() {
    let trace = Trace::default();
    let b = bp(json!({"id": "fbj", "nodes": [
        {"id": "a", "uses": "fail", "config": {"fallback": "f"}},
        {"id": "b", "uses": "tag"},
        {"id": "f", "uses": "tag"},
        {"id": "j", "uses": "trace"}],
      "edges": [{"source": "a", "target": "j"}, {"source": "b", "target": "j"}]}));
    let result = runtime(registry(&trace)).run(b, ctx(json!({}))).await;
    assert_eq!(
        result.status,
        RunStatus::Completed,
        "{:?}",
        messages(&result)
    );
    assert_eq!(trace.count("j"), 1);
}

#[tokio::test]
async fn a_fallback_does_not_hide_another_failure() {
    let trace = Trace::default();
    let b = bp(json!({"id": "i2", "nodes": [
        {"id": "a", "uses": "fail", "config": {"fallback": "f"}},
        {"id": "f", "uses": "tag"},
        {"id": "b", "uses": "fail", "params": {"message": "b broke"}}],
      "edges": []}));
    let result = runtime(registry(&trace)).run(b, ctx(json!({}))).await;
    assert_eq!(result.status, RunStatus::Failed);
    assert_eq!(messages(&result), ["b: b broke"]);
    assert_eq!(trace.count("f"), 1);
}

#[tokio::test]
async fn a_failing_fallback_fails_the_run_with_its_own_message() {
    let b = bp(json!({"id": "ff", "nodes": [
        {"id": "a", "uses": "fail", "config": {"fallback": "f"}},
        {"id": "f", "uses": "fail", "params": {"message": "fallback broke too"}}],
      "edges": []}));
    let result = runtime(NodeRegistry::with_builtins())
        .run(b, ctx(json!({})))
        .await;
    assert_eq!(result.status, RunStatus::Failed);
    assert_eq!(messages(&result), ["f: fallback broke too"]);
}

#[tokio::test]
async fn a_fallback_only_node_is_not_a_start_node() {
    let trace = Trace::default();
    let b = bp(json!({"id": "fbo", "nodes": [
        {"id": "a", "uses": "trace", "config": {"fallback": "f"}},
        {"id": "f", "uses": "trace"}],
      "edges": []}));
    let result = runtime(registry(&trace)).run(b, ctx(json!({}))).await;
    assert_eq!(result.status, RunStatus::Completed);
    assert_eq!(trace.all(), ["a"]);
}

/// A registry whose `probe` node records the highest number of probes running at once.
fn probe_registry(current: Arc<AtomicUsize>, max: Arc<AtomicUsize>) -> NodeRegistry {
    let mut r = NodeRegistry::with_builtins();
    r.register("probe", move |_ctx| {
        let current = current.clone();
        let max = max.clone();
        async move {
            let now = current.fetch_add(1, Ordering::SeqCst) + 1;
            max.fetch_max(now, Ordering::SeqCst);
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            current.fetch_sub(1, Ordering::SeqCst);
            Ok(NodeResult::empty())
        }
    });
    r
}

fn six_parallel_probes() -> Value {
    let nodes: Vec<Value> = (0..6)
        .map(|i| json!({"id": format!("p{i}"), "uses": "probe"}))
        .collect();
    json!({"id": "par", "nodes": nodes, "edges": []})
}

#[tokio::test(start_paused = true)]
async fn concurrency_caps_the_number_of_nodes_running_at_once() {
    for (cap, expected) in [(1, 1), (2, 2), (6, 6), (20, 6)] {
        let current = Arc::new(AtomicUsize::new(0));
        let max = Arc::new(AtomicUsize::new(0));
        let result = runtime(probe_registry(current, max.clone()))
            .with_concurrency(cap)
            .run(bp(six_parallel_probes()), ctx(json!({})))
            .await;
        assert_eq!(result.status, RunStatus::Completed);
        assert_eq!(max.load(Ordering::SeqCst), expected, "cap {cap}");
    }
}

#[tokio::test(start_paused = true)]
async fn a_node_starts_as_soon_as_a_slot_frees_not_in_waves() {
    // s -> slow (long) and s -> f1 -> f2 -> f3 (short): with 2 slots the short chain must
    // finish while `slow` still runs; waves would make f2 wait for `slow`.
    let order = Trace::default();
    let mut r = NodeRegistry::with_builtins();
    let o = order.clone();
    r.register("timed", move |ctx| {
        let o = o.clone();
        async move {
            let ms = ctx.params().get("ms").and_then(Value::as_u64).unwrap_or(0);
            tokio::time::sleep(std::time::Duration::from_millis(ms)).await;
            o.push(ctx.node_id());
            Ok(NodeResult::empty())
        }
    });
    let b = bp(json!({"id": "nowaves", "nodes": [
        {"id": "s", "uses": "timed"},
        {"id": "slow", "uses": "timed", "params": {"ms": 1000}},
        {"id": "f1", "uses": "timed", "params": {"ms": 10}},
        {"id": "f2", "uses": "timed", "params": {"ms": 10}},
        {"id": "f3", "uses": "timed", "params": {"ms": 10}}],
      "edges": [{"source": "s", "target": "slow"}, {"source": "s", "target": "f1"},
                {"source": "f1", "target": "f2"}, {"source": "f2", "target": "f3"}]}));
    let result = runtime(r).with_concurrency(2).run(b, ctx(json!({}))).await;
    assert_eq!(result.status, RunStatus::Completed);
    assert_eq!(order.all(), ["s", "f1", "f2", "f3", "slow"]);
}

fn action_blueprint(action: &str) -> Value {
    json!({"id": "act", "nodes": [
        {"id": "a", "uses": "action", "params": {"action": action}},
        {"id": "go", "uses": "trace"}, {"id": "stop", "uses": "trace"},
        {"id": "dflt", "uses": "trace"}],
      "edges": [{"source": "a", "target": "go", "action": "go"},
                {"source": "a", "target": "stop", "action": "stop"},
                {"source": "a", "target": "dflt"}]})
}

/// Runs [`action_blueprint`] with `action`, checks it completed, and returns the nodes that ran.
async fn nodes_run_after_action(action: &str) -> Vec<String> {
    let trace = Trace::default();
    let result = runtime(registry(&trace))
        .run(bp(action_blueprint(action)), ctx(json!({})))
        .await;
    assert_eq!(result.status, RunStatus::Completed);
    trace.all()
}

#[tokio::test]
async fn an_action_takes_only_its_edges() {
    assert_eq!(nodes_run_after_action("go").await, ["go"]);
}

#[tokio::test]
async fn an_unknown_action_falls_back_to_the_default_edges() {
    assert_eq!(nodes_run_after_action("weird").await, ["dflt"]);
}

#[tokio::test]
async fn without_an_action_only_default_edges_are_taken() {
    let trace = Trace::default();
    let mut value = action_blueprint("go");
    value["nodes"][0] = json!({"id": "a", "uses": "echo"});
    let result = runtime(registry(&trace))
        .run(bp(value), ctx(json!({})))
        .await;
    assert_eq!(trace.all(), ["dflt"]);
    assert_eq!(result.status, RunStatus::Completed);
}

#[tokio::test]
async fn mutually_exclusive_conditions_take_one_branch() {
    for (ok, expected) in [(true, "yes"), (false, "no")] {
        let trace = Trace::default();
        let b = bp_with(
            json!({"id": "cond", "nodes": [
                {"id": "a", "uses": "echo", "inputs": "payload"},
                {"id": "yes", "uses": "trace"}, {"id": "no", "uses": "trace"}],
              "edges": [{"source": "a", "target": "yes", "condition": "result.output.ok"},
                        {"source": "a", "target": "no", "condition": "!(result.output.ok)"}]}),
            EvaluatorKind::Safe,
        );
        let result = runtime(registry(&trace))
            .run(b, ctx(json!({"payload": {"ok": ok}})))
            .await;
        assert_eq!(result.status, RunStatus::Completed);
        assert_eq!(trace.all(), [expected]);
    }
}

#[tokio::test]
async fn conditions_read_the_bare_node_id_and_result_shadows_a_context_key() {
    let trace = Trace::default();
    let b = bp(json!({"id": "bare", "nodes": [
        {"id": "route", "uses": "echo", "inputs": "order"},
        {"id": "big", "uses": "trace"}, {"id": "shadow", "uses": "trace"}],
      "edges": [{"source": "route", "target": "big", "condition": "route.big"},
                {"source": "route", "target": "shadow", "condition": "result.flag"}]}));
    let initial = json!({"order": {"big": true}, "result": {"flag": true}});
    let result = runtime(registry(&trace)).run(b, ctx(initial)).await;
    assert_eq!(result.status, RunStatus::Completed);
    assert_eq!(trace.all(), ["big"]);
}

#[tokio::test]
async fn inputs_resolve_strings_objects_and_dotted_paths() {
    let b = bp(json!({"id": "inputs", "nodes": [
        {"id": "v", "uses": "echo", "inputs": "order"},
        {"id": "obj", "uses": "echo",
         "inputs": {"amount": "v.total", "who": "customerId", "first": "v.items.0.sku",
                    "missing": "v.nope.deeper", "raw": "_outputs.v"}},
        {"id": "dotted", "uses": "echo", "inputs": "plain.key"}],
      "edges": [{"source": "v", "target": "obj"}, {"source": "v", "target": "dotted"}]}));
    let initial = json!({"order": {"total": 12, "items": [{"sku": "x1"}]},
                         "customerId": "c-7", "plain.key": "not reachable"});
    let result = run_builtins_bp(b, initial).await;
    assert_eq!(result.status, RunStatus::Completed);
    assert_eq!(
        result.context["_outputs.obj"],
        json!({"amount": 12, "who": "c-7", "first": "x1",
               "raw": {"total": 12, "items": [{"sku": "x1"}]}})
    );
    // a dotted key never falls back to a plain context key containing a dot
    assert_eq!(result.context["_outputs.dotted"], Value::Null);
}

#[tokio::test]
async fn a_transform_shapes_the_value_delivered_to_the_target() {
    let b = bp(json!({"id": "tf", "nodes": [
        {"id": "a", "uses": "echo", "inputs": "user"},
        {"id": "b", "uses": "echo"}],
      "edges": [{"source": "a", "target": "b", "transform": "input.name"}]}));
    let result = run_builtins_bp(b, json!({"user": {"name": "Ada"}})).await;
    assert_eq!(result.context["_inputs.b"], json!("Ada"));
    assert_eq!(result.context["_outputs.b"], json!("Ada"));
}

#[tokio::test]
async fn a_transform_applies_to_the_node_named_by_the_targets_inputs() {
    let b = bp(json!({"id": "tf2", "nodes": [
        {"id": "s", "uses": "echo", "inputs": "seed"},
        {"id": "a", "uses": "echo", "inputs": "other"},
        {"id": "b", "uses": "echo", "inputs": "s"}],
      "edges": [{"source": "s", "target": "a"},
                {"source": "a", "target": "b", "transform": "input.v"}]}));
    let result = run_builtins_bp(
        b.clone(),
        json!({"seed": {"v": "from s"}, "other": {"v": "from a"}}),
    )
    .await;
    assert_eq!(result.status, RunStatus::Completed);
    assert_eq!(result.context["_outputs.b"], json!("from s"));
    // the blueprint itself is untouched
    assert!(matches!(
        b.node("b").and_then(|n| n.inputs.clone()),
        Some(flowcraft_azure::flow::blueprint::NodeInputs::Key(k)) if k == "s"
    ));
}

#[tokio::test]
async fn an_undefined_output_still_marks_the_node_completed() {
    let trace = Trace::default();
    let mut r = registry(&trace);
    r.register("nothing", |_ctx| async { Ok(NodeResult::empty()) });
    let b = bp(json!({"id": "undef", "nodes": [
        {"id": "a", "uses": "nothing"}, {"id": "b", "uses": "trace"}],
      "edges": [{"source": "a", "target": "b"}]}));
    let result = runtime(r).run(b, ctx(json!({}))).await;
    assert!(result.context.contains_key("_outputs.a"));
    assert!(!result.context.contains_key("_inputs.b"));
    assert_eq!(trace.all(), ["b"]);
}

struct Greeting(&'static str);

#[tokio::test]
async fn dependencies_are_injected_into_nodes() {
    let mut r = NodeRegistry::with_builtins();
    r.register("greet", |ctx| async move {
        let g = ctx
            .dependency::<Greeting>()
            .ok_or_else(|| NodeError::fatal("no greeting"))?;
        Ok(NodeResult::output(json!(g.0)))
    });
    let env = Environment::new(r).with_dependencies(Dependencies::new().with(Greeting("hej")));
    let b = bp(json!({"id": "deps", "nodes": [{"id": "g", "uses": "greet"}], "edges": []}));
    let result = FlowRuntime::new(env).run(b, ctx(json!({}))).await;
    assert_eq!(result.context["g"], json!("hej"));
}

#[tokio::test(start_paused = true)]
async fn cancellation_stops_the_run_with_status_cancelled() {
    let b = bp(json!({"id": "cancel", "nodes": [
        {"id": "a", "uses": "echo"},
        {"id": "long", "uses": "work", "params": {"ms": 3_600_000}},
        {"id": "after", "uses": "echo"}],
      "edges": [{"source": "a", "target": "long"}, {"source": "long", "target": "after"}]}));
    let rt = runtime(NodeRegistry::with_builtins());
    let result = run_cancelled_after(&rt, b, json!({}), std::time::Duration::from_secs(5)).await;
    assert_eq!(result.status, RunStatus::Cancelled);
    assert!(result.context.contains_key("_outputs.a"));
    assert!(!result.context.contains_key("_outputs.after"));
    assert!(result.errors.is_empty());
}

#[tokio::test]
async fn a_run_cancelled_before_it_starts_runs_nothing() {
    let trace = Trace::default();
    let cancel = CancellationToken::new();
    cancel.cancel();
    let b = bp(json!({"id": "pre", "nodes": [{"id": "a", "uses": "trace"}], "edges": []}));
    let result = runtime(registry(&trace))
        .run_with(b, ctx(json!({})), cancel)
        .await;
    assert_eq!(result.status, RunStatus::Cancelled);
    assert!(trace.all().is_empty());
}

#[tokio::test]
async fn odd_node_ids_run_and_are_stored_verbatim() {
    let trace = Trace::default();
    let ids = ["", "a.b", "ü/ß ✓", "with space", "_outputs"];
    let nodes: Vec<Value> = ids
        .iter()
        .map(|id| json!({"id": id, "uses": "tag"}))
        .collect();
    let edges: Vec<Value> = ids
        .windows(2)
        .map(|w| json!({"source": w[0], "target": w[1]}))
        .collect();
    let b = bp(json!({"id": "odd", "nodes": nodes, "edges": edges}));
    let result = runtime(registry(&trace)).run(b, ctx(json!({}))).await;
    assert_eq!(
        result.status,
        RunStatus::Completed,
        "{:?}",
        messages(&result)
    );
    assert_eq!(trace.all(), ids);
    for id in ids {
        assert_eq!(result.context[&format!("_outputs.{id}")], json!(id));
    }
}

#[tokio::test]
async fn a_panicking_node_fails_the_run_instead_of_crashing_it() {
    let mut r = NodeRegistry::with_builtins();
    r.register("boom", |_ctx| async move {
        if true {
            panic!("kaboom");
        }
        Ok(NodeResult::empty())
    });
    let b = bp(json!({"id": "panic", "nodes": [{"id": "p", "uses": "boom"}], "edges": []}));
    let result = runtime(r).run(b, ctx(json!({}))).await;
    assert_eq!(result.status, RunStatus::Failed);
    assert!(messages(&result)[0].contains("kaboom"));
}

#[tokio::test]
async fn a_missing_implementation_fails_without_retrying() {
    let b = bp(json!({"id": "missing", "nodes": [
        {"id": "x", "uses": "nope", "config": {"maxRetries": 3, "fallback": "f"}},
        {"id": "f", "uses": "echo"}],
      "edges": []}));
    let result = run_builtins_bp(b, json!({})).await;
    assert_eq!(result.status, RunStatus::Failed);
    assert_eq!(
        messages(&result),
        ["x: Implementation for 'nope' not found."]
    );
    assert!(!result.context.contains_key("_outputs.f"));
}

#[tokio::test]
async fn a_fatal_error_stops_retries_at_once() {
    let calls = Arc::new(AtomicUsize::new(0));
    let mut r = NodeRegistry::with_builtins();
    let c = calls.clone();
    r.register("fatal", move |_ctx| {
        let c = c.clone();
        async move {
            c.fetch_add(1, Ordering::SeqCst);
            Err::<NodeResult, _>(NodeError::fatal("bad configuration"))
        }
    });
    let b = bp(json!({"id": "fatal", "nodes": [
        {"id": "x", "uses": "fatal", "config": {"maxRetries": 5}}], "edges": []}));
    let result = runtime(r).run(b, ctx(json!({}))).await;
    assert_eq!(result.status, RunStatus::Failed);
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    assert_eq!(messages(&result), ["x: bad configuration"]);
}

#[tokio::test(start_paused = true)]
async fn retries_back_off_exponentially_from_retry_delay() {
    let starts: Arc<std::sync::Mutex<Vec<tokio::time::Instant>>> = Arc::default();
    let mut r = NodeRegistry::with_builtins();
    let s = starts.clone();
    r.register("flaky", move |ctx| {
        let s = s.clone();
        async move {
            s.lock().unwrap().push(tokio::time::Instant::now());
            if ctx.attempt() < 4 {
                Err(NodeError::new("not yet"))
            } else {
                Ok(NodeResult::output(json!(ctx.attempt())))
            }
        }
    });
    let b = bp(json!({"id": "backoff", "nodes": [
        {"id": "x", "uses": "flaky", "config": {"maxRetries": 4, "retryDelay": 1000}}],
      "edges": []}));
    let result = runtime(r).run(b, ctx(json!({}))).await;
    assert_eq!(result.status, RunStatus::Completed);
    assert_eq!(result.context["x"], json!(4));
    let starts = starts.lock().unwrap().clone();
    let gaps: Vec<u128> = starts
        .windows(2)
        .map(|w| (w[1] - w[0]).as_millis())
        .collect();
    assert_eq!(gaps, [1000, 2000, 4000]);
}

#[tokio::test(start_paused = true)]
async fn a_timeout_is_a_retryable_failure() {
    let calls = Arc::new(AtomicUsize::new(0));
    let mut r = NodeRegistry::with_builtins();
    let c = calls.clone();
    r.register("hang", move |_ctx| {
        let c = c.clone();
        async move {
            c.fetch_add(1, Ordering::SeqCst);
            tokio::time::sleep(std::time::Duration::from_secs(3600)).await;
            Ok(NodeResult::empty())
        }
    });
    let b = bp(json!({"id": "timeout", "nodes": [
        {"id": "x", "uses": "hang", "config": {"maxRetries": 2, "timeout": 100}}],
      "edges": []}));
    let result = runtime(r).run(b, ctx(json!({}))).await;
    assert_eq!(result.status, RunStatus::Failed);
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    assert_eq!(messages(&result), ["x: Node 'x' timed out after 100 ms"]);
}

#[tokio::test]
async fn an_any_join_fires_once_on_the_first_arrival() {
    let trace = Trace::default();
    let b = bp(json!({"id": "any", "nodes": [
        {"id": "a", "uses": "tag"}, {"id": "b", "uses": "tag"}, {"id": "c", "uses": "tag"},
        {"id": "j", "uses": "trace", "config": {"joinStrategy": "any"}}],
      "edges": [{"source": "a", "target": "j"}, {"source": "b", "target": "j"},
                {"source": "c", "target": "j"}]}));
    let result = runtime(registry(&trace)).run(b, ctx(json!({}))).await;
    assert_eq!(result.status, RunStatus::Completed);
    assert_eq!(trace.count("j"), 1);
}

#[tokio::test]
async fn an_all_join_behind_an_untaken_branch_stalls() {
    let trace = Trace::default();
    let b = bp(json!({"id": "stall", "nodes": [
        {"id": "s", "uses": "action", "params": {"action": "left"}},
        {"id": "l", "uses": "tag"}, {"id": "r", "uses": "tag"},
        {"id": "j", "uses": "trace"}],
      "edges": [{"source": "s", "target": "l", "action": "left"},
                {"source": "s", "target": "r", "action": "right"},
                {"source": "l", "target": "j"}, {"source": "r", "target": "j"}]}));
    let result = runtime(registry(&trace)).run(b, ctx(json!({}))).await;
    assert_eq!(result.status, RunStatus::Stalled);
    assert_eq!(trace.count("j"), 0);
}

#[tokio::test]
async fn the_result_serializes_with_lowercase_status_and_camel_case_errors() {
    let b = bp(json!({"id": "ser", "nodes": [
        {"id": "x", "uses": "fail", "params": {"message": "nope"}}], "edges": []}));
    let result = run_builtins_bp(b, json!({})).await;
    let value = serde_json::to_value(&result).unwrap();
    assert_eq!(value["status"], json!("failed"));
    assert_eq!(value["errors"][0]["nodeId"], json!("x"));
    assert_eq!(value["errors"][0]["message"], json!("nope"));
    assert!(value["errors"][0]["timestamp"].is_string());
}

#[tokio::test]
async fn a_cycle_without_start_nodes_enters_at_the_declared_entry_point() {
    let trace = Trace::default();
    let b = bp(json!({"id": "entry",
      "metadata": {"allowCycles": true, "cycleEntryPoints": ["b"]},
      "nodes": [{"id": "a", "uses": "trace"}, {"id": "b", "uses": "trace"}],
      "edges": [{"source": "a", "target": "b"}, {"source": "b", "target": "a"}]}));
    let result = runtime(registry(&trace)).run(b, ctx(json!({}))).await;
    assert_eq!(result.status, RunStatus::Completed);
    assert_eq!(trace.all(), ["b", "a"]);
}

#[tokio::test]
async fn two_separate_cycles_without_start_nodes_both_run() {
    let trace = Trace::default();
    let b = bp(json!({"id": "rings", "metadata": {"allowCycles": true},
      "nodes": [{"id": "a", "uses": "trace"}, {"id": "b", "uses": "trace"},
                {"id": "c", "uses": "trace"}, {"id": "d", "uses": "trace"}],
      "edges": [{"source": "a", "target": "b"}, {"source": "b", "target": "a"},
                {"source": "c", "target": "d"}, {"source": "d", "target": "c"}]}));
    let result = runtime(registry(&trace))
        .with_concurrency(1)
        .run(b, ctx(json!({})))
        .await;
    assert_eq!(result.status, RunStatus::Completed);
    let mut ran = trace.all();
    ran.sort();
    assert_eq!(ran, ["a", "b", "c", "d"]);
}

#[tokio::test]
async fn user_registrations_override_built_in_nodes() {
    let mut r = NodeRegistry::with_builtins();
    r.register("echo", |_ctx| async {
        Ok(NodeResult::output(json!("mine")))
    });
    let b = bp(
        json!({"id": "ovr", "nodes": [{"id": "e", "uses": "echo", "inputs": "x"}],
      "edges": []}),
    );
    let result = runtime(r).run(b, ctx(json!({"x": "theirs"}))).await;
    assert_eq!(result.context["e"], json!("mine"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_node_sees_what_a_sibling_commits_meanwhile() {
    // In-process nodes read the live committed context (as Flowcraft's shared store), so a
    // large run never copies its context per node; their own writes stay buffered.
    let mut registry = NodeRegistry::with_builtins();
    registry.register("watch", |ctx| async move {
        for _ in 0..500 {
            if let Some(seen) = ctx.context().get("flag") {
                return Ok(NodeResult::output(seen));
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        Err(flowcraft_azure::flow::node::NodeError::new(
            "never saw the flag",
        ))
    });
    let blueprint = bp(json!({"id": "live", "nodes": [
        {"id": "root", "uses": "echo"},
        {"id": "watcher", "uses": "watch"},
        {"id": "setter", "uses": "set", "params": {"values": {"flag": "up"}}}],
      "edges": [{"source": "root", "target": "watcher"}, {"source": "root", "target": "setter"}]}));
    let result = runtime(registry).run(blueprint, ctx(json!({}))).await;
    assert_eq!(
        result.status,
        RunStatus::Completed,
        "{:?}",
        messages(&result)
    );
    assert_eq!(result.context["watcher"], json!("up"));
}
