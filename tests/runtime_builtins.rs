//! The built-in nodes through the in-process runtime: wait + resume (hitl.test), sleep
//! (sleep.test), subflow (subflow.test), batch scatter/gather and the utility nodes
//! (builtins.test).

mod runtime_support;

use flowcraft_azure::flow::node::{NodeRegistry, NodeResult};
use flowcraft_azure::flow::runtime::{FlowRuntime, RunStatus};
use runtime_support::*;
use serde_json::{Value, json};
use std::sync::Arc;

// ------------------------------------------------------------------------------------------
// wait + resume

fn review_blueprint() -> Value {
    json!({"id": "review", "nodes": [
        {"id": "prepare", "uses": "echo", "inputs": "doc"},
        {"id": "review", "uses": "wait", "params": {"eventName": "manual_review"}},
        {"id": "ship", "uses": "trace"},
        {"id": "reject", "uses": "trace"}],
      "edges": [{"source": "prepare", "target": "review"},
                {"source": "review", "target": "ship", "action": "approve"},
                {"source": "review", "target": "reject", "action": "reject"}]})
}

#[tokio::test]
async fn wait_pauses_the_run_with_awaiting_records_and_does_not_route() {
    let trace = Trace::default();
    let result = runtime(traced_registry(&trace))
        .run(bp(review_blueprint()), ctx(json!({"doc": "d1"})))
        .await;
    assert_eq!(result.status, RunStatus::Awaiting);
    assert_eq!(result.context["_awaitingNodeIds"], json!(["review"]));
    assert_eq!(
        result.context["_awaitingDetails"]["review"],
        json!({"reason": "external_event"})
    );
    assert!(!result.context.contains_key("_outputs.review"));
    assert!(trace.all().is_empty());
    // the paused context survives a JSON round trip
    let text = serde_json::to_string(&result.context).unwrap();
    let back: serde_json::Map<String, Value> = serde_json::from_str(&text).unwrap();
    assert_eq!(back, result.context);
}

#[tokio::test]
async fn resume_routes_on_the_action_and_delivers_the_output() {
    for (action, taken, not_taken) in [("approve", "ship", "reject"), ("reject", "reject", "ship")]
    {
        let trace = Trace::default();
        let rt = runtime(traced_registry(&trace));
        let b = bp(review_blueprint());
        let paused = rt.run(b.clone(), ctx(json!({"doc": "d1"}))).await;
        let result = rt
            .resume(
                b,
                paused.context,
                Some("review"),
                Some(action.to_string()),
                Some(json!({"by": "ada"})),
            )
            .await;
        assert_eq!(
            result.status,
            RunStatus::Completed,
            "{:?}",
            messages(&result)
        );
        assert_eq!(trace.all(), [taken]);
        assert_eq!(trace.count(not_taken), 0);
        assert_eq!(result.context["_outputs.review"], json!({"by": "ada"}));
        assert_eq!(result.context[taken], json!({"by": "ada"}));
        assert!(!result.context.contains_key("_awaitingNodeIds"));
        assert!(!result.context.contains_key("_awaitingDetails"));
    }
}

#[tokio::test]
async fn resume_preconditions_fail_without_touching_the_context() {
    let rt = runtime(NodeRegistry::with_builtins());
    let b = bp(review_blueprint());
    let done = rt
        .resume(b.clone(), ctx(json!({"x": 1})), None, None, None)
        .await;
    assert_eq!(done.status, RunStatus::Failed);
    assert!(messages(&done)[0].contains("not awaiting"));
    assert_eq!(done.context, ctx(json!({"x": 1})));

    let paused = rt.run(b.clone(), ctx(json!({}))).await;
    let wrong = rt
        .resume(b, paused.context.clone(), Some("ship"), None, None)
        .await;
    assert_eq!(wrong.status, RunStatus::Failed);
    assert!(messages(&wrong)[0].contains("'ship' is not awaiting"));
    assert_eq!(wrong.context, paused.context);
}

#[tokio::test]
async fn sequential_waits_resume_one_after_the_other() {
    let trace = Trace::default();
    let rt = runtime(traced_registry(&trace));
    let b = bp(json!({"id": "seq", "nodes": [
        {"id": "w1", "uses": "wait"}, {"id": "w2", "uses": "wait"}, {"id": "done", "uses": "trace"}],
      "edges": [{"source": "w1", "target": "w2"}, {"source": "w2", "target": "done"}]}));
    let first = rt.run(b.clone(), ctx(json!({}))).await;
    assert_eq!(first.context["_awaitingNodeIds"], json!(["w1"]));
    let second = rt
        .resume(b.clone(), first.context, None, None, Some(json!(1)))
        .await;
    assert_eq!(second.status, RunStatus::Awaiting);
    assert_eq!(second.context["_awaitingNodeIds"], json!(["w2"]));
    let third = rt
        .resume(b, second.context, None, None, Some(json!(2)))
        .await;
    assert_eq!(third.status, RunStatus::Completed);
    assert_eq!(trace.all(), ["done"]);
    assert_eq!(third.context["done"], json!(2));
}

#[tokio::test]
async fn concurrent_waits_resume_one_at_a_time_then_the_join_runs_once() {
    let trace = Trace::default();
    let rt = runtime(traced_registry(&trace));
    let b = bp(json!({"id": "two", "nodes": [
        {"id": "a", "uses": "wait"}, {"id": "b", "uses": "wait"}, {"id": "j", "uses": "trace"}],
      "edges": [{"source": "a", "target": "j"}, {"source": "b", "target": "j"}]}));
    let paused = rt.run(b.clone(), ctx(json!({}))).await;
    let mut ids: Vec<Value> = paused.context["_awaitingNodeIds"]
        .as_array()
        .unwrap()
        .clone();
    ids.sort_by_key(|v| v.to_string());
    assert_eq!(ids, [json!("a"), json!("b")]);
    let half = rt
        .resume(b.clone(), paused.context, Some("a"), None, Some(json!("A")))
        .await;
    assert_eq!(half.status, RunStatus::Awaiting);
    assert_eq!(half.context["_awaitingNodeIds"], json!(["b"]));
    assert_eq!(half.context["_pendingJoins"], json!({"j": ["a"]}));
    assert!(trace.all().is_empty());
    let done = rt
        .resume(b, half.context, Some("b"), None, Some(json!("B")))
        .await;
    assert_eq!(done.status, RunStatus::Completed, "{:?}", messages(&done));
    assert_eq!(trace.all(), ["j"]);
    assert!(!done.context.contains_key("_pendingJoins"));
}

#[tokio::test]
async fn a_conditional_route_stays_exclusive_after_resume() {
    let trace = Trace::default();
    let rt = runtime(traced_registry(&trace));
    let b = bp(json!({"id": "cr", "nodes": [
        {"id": "start", "uses": "echo", "inputs": "flag"},
        {"id": "yes", "uses": "wait"}, {"id": "no", "uses": "trace"},
        {"id": "after", "uses": "trace"}],
      "edges": [{"source": "start", "target": "yes", "condition": "result.output.go"},
                {"source": "start", "target": "no", "condition": "result.output.stop"},
                {"source": "yes", "target": "after"}]}));
    let paused = rt.run(b.clone(), ctx(json!({"flag": {"go": true}}))).await;
    assert_eq!(paused.status, RunStatus::Awaiting);
    let done = rt
        .resume(b, paused.context, None, None, Some(json!("ok")))
        .await;
    assert_eq!(done.status, RunStatus::Completed);
    assert_eq!(trace.all(), ["after"]);
}

// ------------------------------------------------------------------------------------------
// sleep

#[tokio::test(start_paused = true)]
async fn sleep_waits_for_its_timer_and_passes_its_input_through() {
    let mut r = NodeRegistry::with_builtins();
    r.register("double", |ctx| async move {
        let n = ctx.input().and_then(Value::as_i64).unwrap_or(0);
        Ok(NodeResult::output(json!(n * 2)))
    });
    let b = bp(json!({"id": "sleepy", "nodes": [
        {"id": "n", "uses": "echo", "inputs": "n"},
        {"id": "pause", "uses": "sleep", "params": {"duration": "10m"}},
        {"id": "double", "uses": "double"}],
      "edges": [{"source": "n", "target": "pause"}, {"source": "pause", "target": "double"}]}));
    let started = tokio::time::Instant::now();
    let result = runtime(r).run(b, ctx(json!({"n": 42}))).await;
    assert_eq!(
        result.status,
        RunStatus::Completed,
        "{:?}",
        messages(&result)
    );
    assert_eq!(result.context["double"], json!(84));
    assert_eq!(result.context["pause"], json!(42));
    assert!(started.elapsed() >= std::time::Duration::from_secs(600));
    assert!(!result.context.contains_key("_awaitingNodeIds"));
}

#[tokio::test(start_paused = true)]
async fn a_pending_sleep_is_recorded_as_awaiting_a_timer() {
    let b = bp(json!({"id": "pending", "nodes": [
        {"id": "pause", "uses": "sleep", "params": {"duration": "1h"}}], "edges": []}));
    let rt = runtime(NodeRegistry::with_builtins());
    let result = run_cancelled_after(&rt, b, json!({}), std::time::Duration::from_secs(60)).await;
    assert_eq!(result.status, RunStatus::Cancelled);
    assert_eq!(result.context["_awaitingNodeIds"], json!(["pause"]));
    let details = &result.context["_awaitingDetails"]["pause"];
    assert_eq!(details["reason"], json!("timer"));
    let wake: chrono::DateTime<chrono::Utc> =
        serde_json::from_value(details["wakeUpAt"].clone()).unwrap();
    assert!(wake > chrono::Utc::now());
}

#[tokio::test(start_paused = true)]
async fn sleep_accepts_every_duration_format_and_rejects_the_rest() {
    for good in [
        json!("1m"),
        json!("1h"),
        json!("1d"),
        json!("30s"),
        json!(0),
        json!(250),
    ] {
        let result = run_builtins(
            json!({"id": "s", "nodes": [{"id": "z", "uses": "sleep",
                   "params": {"duration": good}}], "edges": []}),
            json!({}),
        )
        .await;
        assert_eq!(result.status, RunStatus::Completed, "{good}");
    }
    for bad in [
        json!("10"),
        json!("1w"),
        json!(-5),
        json!(true),
        Value::Null,
    ] {
        let result = run_builtins(
            json!({"id": "s", "nodes": [{"id": "z", "uses": "sleep",
                   "params": {"duration": bad}, "config": {"maxRetries": 3}}], "edges": []}),
            json!({}),
        )
        .await;
        assert_eq!(result.status, RunStatus::Failed, "{bad}");
        assert!(messages(&result)[0].contains("invalid sleep duration"));
    }
}

// ------------------------------------------------------------------------------------------
// subflow

fn sub_runtime(subs: Vec<Value>) -> FlowRuntime {
    runtime_with(
        NodeRegistry::with_builtins(),
        subs.into_iter().map(bp).collect::<Vec<_>>(),
    )
}

#[tokio::test]
async fn a_subflow_outputs_its_single_terminals_output() {
    let rt = sub_runtime(vec![json!({"id": "inner", "nodes": [
        {"id": "first", "uses": "echo"}, {"id": "total", "uses": "sum"}],
      "edges": [{"source": "first", "target": "total"}]})]);
    let b = bp(json!({"id": "outer", "nodes": [
        {"id": "call", "uses": "subflow", "inputs": "numbers", "params": {"blueprintId": "inner"}},
        {"id": "after", "uses": "echo"}],
      "edges": [{"source": "call", "target": "after"}]}));
    let result = rt.run(b, ctx(json!({"numbers": [1, 2, 3]}))).await;
    assert_eq!(
        result.status,
        RunStatus::Completed,
        "{:?}",
        messages(&result)
    );
    assert_eq!(result.context["call"], json!(6));
    assert_eq!(result.context["after"], json!(6));
}

#[tokio::test]
async fn subflow_inputs_and_outputs_mappings_move_values_between_contexts() {
    let rt = sub_runtime(vec![json!({"id": "inner", "nodes": [
        {"id": "greet", "uses": "echo", "inputs": "name"}], "edges": []})]);
    let b = bp(json!({"id": "outer", "nodes": [
        {"id": "prep", "uses": "echo", "inputs": "user"},
        {"id": "call", "uses": "subflow", "params": {"blueprintId": "inner",
            "inputs": {"name": "prep"}, "outputs": {"greeting": "greet"}}}],
      "edges": [{"source": "prep", "target": "call"}]}));
    let result = rt.run(b, ctx(json!({"user": "Ada"}))).await;
    assert_eq!(
        result.status,
        RunStatus::Completed,
        "{:?}",
        messages(&result)
    );
    assert_eq!(result.context["greeting"], json!("Ada"));
    assert_eq!(result.context["call"]["_outputs.greet"], json!("Ada"));
}

#[tokio::test]
async fn a_subflow_with_several_terminals_outputs_an_object_by_terminal_id() {
    let rt = sub_runtime(vec![json!({"id": "inner", "nodes": [
        {"id": "a", "uses": "echo"}, {"id": "b", "uses": "echo"}], "edges": []})]);
    let b = bp(json!({"id": "outer", "nodes": [
        {"id": "call", "uses": "subflow", "inputs": "v", "params": {"blueprintId": "inner"}}],
      "edges": []}));
    let result = rt.run(b, ctx(json!({"v": 7}))).await;
    assert_eq!(result.context["call"], json!({"a": 7, "b": 7}));
}

#[tokio::test]
async fn a_missing_or_unknown_sub_blueprint_fails_without_retry() {
    for params in [json!({}), json!({"blueprintId": "ghost"})] {
        let rt = sub_runtime(vec![]);
        let b = bp(json!({"id": "outer", "nodes": [
            {"id": "call", "uses": "subflow", "params": params, "config": {"maxRetries": 3}}],
          "edges": []}));
        let result = rt.run(b, ctx(json!({}))).await;
        assert_eq!(result.status, RunStatus::Failed);
        assert_eq!(result.errors.len(), 1);
        assert!(
            messages(&result)[0].contains("blueprint"),
            "{:?}",
            messages(&result)
        );
    }
}

#[tokio::test]
async fn a_failing_subflow_fails_the_parent_with_the_inner_message() {
    let rt = sub_runtime(vec![json!({"id": "inner", "nodes": [
        {"id": "x", "uses": "fail", "params": {"message": "inner broke"}}], "edges": []})]);
    let b = bp(json!({"id": "outer", "nodes": [
        {"id": "call", "uses": "subflow", "params": {"blueprintId": "inner"}}], "edges": []}));
    let result = rt.run(b, ctx(json!({}))).await;
    assert_eq!(result.status, RunStatus::Failed);
    let message = &messages(&result)[0];
    assert!(
        message.contains("Sub-workflow 'inner' did not complete"),
        "{message}"
    );
    assert!(message.contains("inner broke"), "{message}");
}

/// Counts the sub-runs a recursion test starts (every level runs `count` once).
fn counting(counter: &Arc<std::sync::atomic::AtomicUsize>) -> NodeRegistry {
    let mut r = NodeRegistry::with_builtins();
    let c = counter.clone();
    r.register("count", move |_ctx| {
        let c = c.clone();
        async move {
            c.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            Ok(NodeResult::empty())
        }
    });
    r
}

#[tokio::test]
async fn a_subflow_that_runs_itself_fails_cleanly_at_the_depth_limit() {
    use flowcraft_azure::flow::builtins::subflow::MAX_SUBFLOW_DEPTH;
    let levels = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let me = json!({"id": "me", "nodes": [
        {"id": "tick", "uses": "count"},
        {"id": "again", "uses": "subflow", "params": {"blueprintId": "me"},
         "config": {"maxRetries": 3}}],
      "edges": [{"source": "tick", "target": "again"}]});
    let rt = runtime_with(counting(&levels), vec![bp(me.clone())]);
    let result = rt.run(bp(me), ctx(json!({}))).await;
    assert_eq!(result.status, RunStatus::Failed);
    assert_eq!(result.errors.len(), 1, "{:?}", messages(&result));
    let message = &messages(&result)[0];
    assert!(message.contains("nested more than"), "{message}");
    // the top level plus MAX_SUBFLOW_DEPTH nested levels ran once each: no retries
    assert_eq!(
        levels.load(std::sync::atomic::Ordering::Relaxed),
        MAX_SUBFLOW_DEPTH + 1
    );
}

#[tokio::test]
async fn a_branching_recursive_subflow_stops_at_the_sub_run_budget() {
    use flowcraft_azure::flow::builtins::subflow::MAX_NESTED_SUBFLOW_RUNS;
    let runs = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    // every level starts two copies of itself: 2^32 sub-runs without a budget
    let me = json!({"id": "fork", "nodes": [
        {"id": "tick", "uses": "count"},
        {"id": "left", "uses": "subflow", "params": {"blueprintId": "fork"}},
        {"id": "right", "uses": "subflow", "params": {"blueprintId": "fork"}}],
      "edges": [{"source": "tick", "target": "left"}, {"source": "tick", "target": "right"}]});
    let rt = runtime_with(counting(&runs), vec![bp(me.clone())]).with_concurrency(4);
    let result = rt.run(bp(me), ctx(json!({}))).await;
    assert_eq!(result.status, RunStatus::Failed);
    let started = runs.load(std::sync::atomic::Ordering::Relaxed);
    // each top-level branch has its own budget; the top level itself ran once
    assert!(started <= 2 * MAX_NESTED_SUBFLOW_RUNS + 1, "{started}");
    assert!(
        messages(&result)
            .iter()
            .all(|m| m.contains("did not complete")),
        "{:?}",
        messages(&result)
    );
}

#[tokio::test]
async fn a_wait_inside_a_subflow_pauses_the_parent_and_resumes_through_it() {
    let trace = Trace::default();
    let mut reg = flowcraft_azure::flow::execute::BlueprintRegistry::new();
    reg.insert(bp(json!({"id": "inner", "nodes": [
        {"id": "ask", "uses": "wait"}, {"id": "answer", "uses": "echo"}],
      "edges": [{"source": "ask", "target": "answer", "action": "ok"}]})));
    let env = flowcraft_azure::flow::execute::Environment::new(traced_registry(&trace))
        .with_blueprints(reg);
    let rt = FlowRuntime::new(env);
    let b = bp(json!({"id": "outer", "nodes": [
        {"id": "call", "uses": "subflow", "params": {"blueprintId": "inner"}},
        {"id": "after", "uses": "trace"}],
      "edges": [{"source": "call", "target": "after"}]}));
    let paused = rt.run(b.clone(), ctx(json!({}))).await;
    assert_eq!(paused.status, RunStatus::Awaiting);
    assert_eq!(paused.context["_awaitingNodeIds"], json!(["call"]));
    assert_eq!(
        paused.context["_subflowState.call"]["_awaitingNodeIds"],
        json!(["ask"])
    );
    let done = rt
        .resume(
            b,
            paused.context,
            None,
            Some("ok".into()),
            Some(json!("yes")),
        )
        .await;
    assert_eq!(done.status, RunStatus::Completed, "{:?}", messages(&done));
    assert_eq!(done.context["call"], json!("yes"));
    assert_eq!(trace.all(), ["after"]);
    assert!(!done.context.contains_key("_subflowState.call"));
}

// ------------------------------------------------------------------------------------------
// batch

fn batch_blueprint() -> Value {
    json!({"id": "batch", "nodes": [
        {"id": "b_scatter", "uses": "batch-scatter", "inputs": "items",
         "params": {"workerUsesKey": "work_item", "gatherNodeId": "b_gather", "outputKey": "results"}},
        {"id": "b_gather", "uses": "batch-gather",
         "params": {"outputKey": "results", "gatherNodeId": "b_gather"},
         "config": {"joinStrategy": "all"}},
        {"id": "after", "uses": "echo"}],
      "edges": [{"source": "b_scatter", "target": "b_gather"},
                {"source": "b_gather", "target": "after"}]})
}

fn batch_registry(trace: &Trace) -> NodeRegistry {
    let mut r = traced_registry(trace);
    let t = trace.clone();
    r.register("work_item", move |ctx| {
        let t = t.clone();
        async move {
            t.push("worker");
            match ctx.input() {
                Some(Value::Number(n)) if n.as_i64() == Some(13) => {
                    Err(flowcraft_azure::flow::node::NodeError::new("unlucky item"))
                }
                Some(Value::Number(n)) => {
                    // later items finish first, to show that order is by item, not by time
                    let n = n.as_i64().unwrap_or(0);
                    tokio::time::sleep(std::time::Duration::from_millis((10 - n).max(0) as u64))
                        .await;
                    Ok(NodeResult::output(json!(n * 10)))
                }
                _ => Ok(NodeResult::empty()),
            }
        }
    });
    r
}

#[tokio::test(start_paused = true)]
async fn batch_runs_one_worker_per_item_and_gathers_outputs_in_item_order() {
    let trace = Trace::default();
    let result = runtime(batch_registry(&trace))
        .run(bp(batch_blueprint()), ctx(json!({"items": [1, 2, 3]})))
        .await;
    assert_eq!(
        result.status,
        RunStatus::Completed,
        "{:?}",
        messages(&result)
    );
    assert_eq!(trace.count("worker"), 3);
    assert_eq!(result.context["results"], json!([10, 20, 30]));
    assert_eq!(result.context["after"], json!([10, 20, 30]));
}

#[tokio::test]
async fn an_empty_batch_gathers_an_empty_list() {
    let trace = Trace::default();
    let result = runtime(batch_registry(&trace))
        .run(bp(batch_blueprint()), ctx(json!({"items": []})))
        .await;
    assert_eq!(result.status, RunStatus::Completed);
    assert_eq!(trace.count("worker"), 0);
    assert_eq!(result.context["results"], json!([]));
}

#[tokio::test]
async fn a_non_array_batch_input_fails_the_run() {
    let trace = Trace::default();
    let result = runtime(batch_registry(&trace))
        .run(bp(batch_blueprint()), ctx(json!({"items": {"a": 1}})))
        .await;
    assert_eq!(result.status, RunStatus::Failed);
    assert!(messages(&result)[0].contains("needs an array input, got an object"));
}

#[tokio::test(start_paused = true)]
async fn a_failed_batch_worker_fails_the_run_and_the_gather_never_runs() {
    let trace = Trace::default();
    let result = runtime(batch_registry(&trace))
        .run(bp(batch_blueprint()), ctx(json!({"items": [1, 13, 3]})))
        .await;
    assert_eq!(result.status, RunStatus::Failed);
    assert_eq!(result.errors.len(), 1);
    assert!(result.errors[0].message.contains("unlucky item"));
    assert!(result.errors[0].node_id.starts_with("work_item_"));
    assert!(!result.context.contains_key("results"));
}

// ------------------------------------------------------------------------------------------
// utility nodes

#[tokio::test]
async fn utility_nodes_set_act_fail_sum_and_work() {
    let b = bp(json!({"id": "util", "nodes": [
        {"id": "s", "uses": "set", "params": {"values": {"greeting": "hi", "n": 2}}, "inputs": "seed"},
        {"id": "a", "uses": "action", "params": {"action": "go"}},
        {"id": "flaky", "uses": "fail", "params": {"times": 2, "message": "warming up"},
         "config": {"maxRetries": 3}},
        {"id": "w", "uses": "work", "params": {"ms": 1}},
        {"id": "total", "uses": "sum", "inputs": {"x": "w", "y": "n"}}],
      "edges": [{"source": "s", "target": "a"},
                {"source": "a", "target": "flaky", "action": "go"},
                {"source": "flaky", "target": "w"},
                {"source": "w", "target": "total"}]}));
    let result = run_builtins_bp(b, json!({"seed": 40})).await;
    assert_eq!(
        result.status,
        RunStatus::Completed,
        "{:?}",
        messages(&result)
    );
    assert_eq!(result.context["greeting"], json!("hi"));
    assert_eq!(result.context["s"], json!(40));
    assert_eq!(result.context["flaky"], json!(40));
    assert_eq!(result.context["total"], json!(42));
}

#[tokio::test]
async fn fail_without_times_always_fails_and_sum_rejects_non_numbers() {
    let b = bp(json!({"id": "bad", "nodes": [
        {"id": "f", "uses": "fail", "config": {"maxRetries": 2}},
        {"id": "s", "uses": "sum", "inputs": "words"}], "edges": []}));
    let result = run_builtins_bp(b, json!({"words": ["a"]})).await;
    assert_eq!(result.status, RunStatus::Failed);
    let mut msgs = messages(&result);
    msgs.sort();
    assert_eq!(msgs.len(), 2);
    assert!(msgs[0].starts_with("f: "));
    assert!(msgs[1].contains("is not a number"));
}

#[tokio::test(start_paused = true)]
async fn a_batch_inside_a_loop_gathers_a_fresh_batch_on_every_pass() {
    let trace = Trace::default();
    let mut r = batch_registry(&trace);
    r.register("inc", |ctx| async move {
        let n = ctx
            .context()
            .get("count")
            .and_then(|v| v.as_i64())
            .unwrap_or(0)
            + 1;
        ctx.context().set("count", json!(n));
        Ok(NodeResult::output(json!(n)))
    });
    let b = bp_with(
        json!({"id": "loopbatch", "nodes": [
            {"id": "init", "uses": "set", "params": {"values": {"count": 0}}},
            {"id": "sc", "uses": "batch-scatter", "inputs": "items",
             "params": {"workerUsesKey": "work_item", "gatherNodeId": "ga"}},
            {"id": "ga", "uses": "batch-gather"},
            {"id": "inc", "uses": "inc"},
            {"id": "ctl", "uses": "loop-controller", "params": {"condition": "count < 2"},
             "config": {"joinStrategy": "any"}},
            {"id": "done", "uses": "trace"}],
          "edges": [{"source": "init", "target": "sc"}, {"source": "sc", "target": "ga"},
                    {"source": "ga", "target": "inc"}, {"source": "inc", "target": "ctl"},
                    {"source": "ctl", "target": "sc", "action": "continue"},
                    {"source": "ctl", "target": "done", "action": "break"}]}),
        flowcraft_azure::flow::expr::EvaluatorKind::Safe,
    );
    let result = runtime(r).run(b, ctx(json!({"items": [1, 2, 3]}))).await;
    assert_eq!(
        result.status,
        RunStatus::Completed,
        "{:?}",
        messages(&result)
    );
    assert_eq!(trace.count("worker"), 6);
    assert_eq!(trace.count("done"), 1);
    assert_eq!(result.context["ga"], json!([10, 20, 30]));
}

#[tokio::test(start_paused = true)]
async fn resuming_a_saved_context_restarts_pending_sleep_timers() {
    let trace = Trace::default();
    let b = bp(json!({"id": "mixed", "nodes": [
        {"id": "nap", "uses": "sleep", "inputs": "v", "params": {"duration": "1h"}},
        {"id": "after_nap", "uses": "trace"},
        {"id": "ask", "uses": "wait"},
        {"id": "after_ask", "uses": "trace"}],
      "edges": [{"source": "nap", "target": "after_nap"},
                {"source": "ask", "target": "after_ask"}]}));
    let rt = runtime(traced_registry(&trace));
    let saved = run_cancelled_after(
        &rt,
        b.clone(),
        json!({"v": 7}),
        std::time::Duration::from_secs(10),
    )
    .await;
    assert_eq!(saved.status, RunStatus::Cancelled);
    assert!(trace.all().is_empty());

    let done = rt
        .resume(b, saved.context, Some("ask"), None, Some(json!("answer")))
        .await;
    assert_eq!(done.status, RunStatus::Completed, "{:?}", messages(&done));
    let mut ran = trace.all();
    ran.sort();
    assert_eq!(ran, ["after_ask", "after_nap"]);
    assert_eq!(done.context["after_nap"], json!(7));
    assert!(!done.context.contains_key("_awaitingNodeIds"));
}
