//! End-to-end behaviour of the distributed core on the in-memory backends with several
//! concurrent workers in one process: chains, fan-out/fan-in, joins, routing, retries,
//! fallback, timeout.

mod distributed_common;

use distributed_common::{Harness, user_context};
use flowcraft_azure::distributed::events::Event;
use flowcraft_azure::flow::runtime::RunStatus;
use serde_json::{Value, json};

const CHAIN: &str = r#"{"id":"chain","nodes":[
  {"id":"a","uses":"count","inputs":"start"},{"id":"b","uses":"count"},{"id":"c","uses":"count"}],
  "edges":[{"source":"a","target":"b"},{"source":"b","target":"c"}]}"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chain_runs_each_node_once_and_completes() {
    let mut h = Harness::new(&[CHAIN]);
    h.spawn_workers(3);
    let result = h.run("chain", json!({"start": 7})).await;
    assert_eq!(result.status, RunStatus::Completed, "{result:?}");
    assert_eq!(result.context["_outputs.c"], json!(7));
    assert_eq!(result.context["c"], json!(7));
    assert_eq!(result.context["_inputs.c"], json!(7));
    assert_eq!(result.context["blueprintId"], json!("chain"));
    assert_eq!(result.context["blueprintVersion"], Value::Null);
    for n in ["a", "b", "c"] {
        assert_eq!(h.counter.get(n), 1, "{n}");
    }
    let status = h
        .backends
        .runs
        .status(result.context["_executionId"].as_str().unwrap())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(status.value.status.as_str(), "completed");
    h.stop().await;
}

fn fan_blueprint(n: usize, join: &str) -> String {
    let mut nodes = vec![json!({"id": "start", "uses": "count"})];
    let mut edges = Vec::new();
    for i in 0..n {
        let id = format!("b{i}");
        nodes.push(json!({"id": id, "uses": "mark"}));
        edges.push(json!({"source": "start", "target": id}));
        edges.push(json!({"source": id, "target": "join"}));
    }
    nodes.push(json!({"id": "join", "uses": "count", "config": {"joinStrategy": join}}));
    json!({"id": format!("fan-{join}"), "nodes": nodes, "edges": edges}).to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fan_out_fan_in_32_branches_loses_no_update_and_joins_once() {
    let bp = fan_blueprint(32, "all");
    let mut h = Harness::new(&[&bp]);
    h.spawn_workers(4);
    for _ in 0..3 {
        let result = h.run("fan-all", json!({})).await;
        assert_eq!(result.status, RunStatus::Completed);
        for i in 0..32 {
            assert_eq!(
                result.context[&format!("mark.b{i}")],
                json!(true),
                "b{i} lost"
            );
            assert_eq!(
                result.context[&format!("_outputs.b{i}")],
                json!(format!("b{i}"))
            );
        }
        assert!(result.context.contains_key("_outputs.join"));
    }
    assert_eq!(h.counter.get("join"), 3);
    assert_eq!(h.counter.get("b17"), 3);
    assert!(h.runs.conflicts() > 0 || h.runs.commits() > 0);
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn any_join_with_many_live_predecessors_fires_once_and_never_fails_the_run() {
    let bp = fan_blueprint(5, "any");
    let mut h = Harness::new(&[&bp]);
    h.spawn_workers(4);
    let result = h.run("fan-any", json!({})).await;
    assert_eq!(result.status, RunStatus::Completed, "{:?}", result.errors);
    assert_eq!(h.counter.get("join"), 1);
    for i in 0..5 {
        assert_eq!(h.counter.get(&format!("b{i}")), 1);
    }
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conditional_and_action_routing_take_only_selected_edges() {
    let bp = r#"{"id":"route","nodes":[
      {"id":"decide","uses":"count","params":{"action":"big","output":{"total":900}}},
      {"id":"small","uses":"count"},{"id":"large","uses":"count"},
      {"id":"cheap","uses":"count"},{"id":"pricey","uses":"count"},{"id":"always","uses":"count"}],
      "edges":[
        {"source":"decide","target":"small","action":"small"},
        {"source":"decide","target":"large","action":"big"},
        {"source":"large","target":"cheap","condition":"decide.cheap"},
        {"source":"large","target":"pricey","condition":"decide.total"},
        {"source":"large","target":"always"}]}"#;
    let mut h = Harness::new(&[bp]);
    h.spawn_workers(2);
    let result = h.run("route", json!({})).await;
    assert_eq!(result.status, RunStatus::Completed);
    assert_eq!(h.counter.get("large"), 1);
    assert_eq!(h.counter.get("small"), 0);
    assert_eq!(h.counter.get("pricey"), 1);
    assert_eq!(h.counter.get("always"), 1);
    assert_eq!(h.counter.get("cheap"), 0);
    assert!(!result.context.contains_key("_outputs.small"));
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_action_falls_back_to_default_edges() {
    let bp = r#"{"id":"dflt","nodes":[
      {"id":"a","uses":"count","params":{"action":"weird"}},
      {"id":"x","uses":"count"},{"id":"d","uses":"count"}],
      "edges":[{"source":"a","target":"x","action":"known"},{"source":"a","target":"d"}]}"#;
    let mut h = Harness::new(&[bp]);
    h.spawn_workers(2);
    let result = h.run("dflt", json!({})).await;
    assert_eq!(result.status, RunStatus::Completed);
    assert_eq!((h.counter.get("x"), h.counter.get("d")), (0, 1));
    h.stop().await;
}

#[tokio::test(start_paused = true)]
async fn retries_go_through_the_queue_with_backoff_then_succeed() {
    let bp = r#"{"id":"retry","nodes":[
      {"id":"a","uses":"flaky","params":{"succeedOn":3},"config":{"maxRetries":3,"retryDelay":1000}},
      {"id":"b","uses":"count"}],"edges":[{"source":"a","target":"b"}]}"#;
    let mut h = Harness::new(&[bp]);
    let mut events = h.events.subscribe();
    h.spawn_workers(2);
    let result = h.run("retry", json!({})).await;
    assert_eq!(result.status, RunStatus::Completed, "{:?}", result.errors);
    assert_eq!(h.counter.get("a"), 3);
    assert_eq!(h.counter.get("b"), 1);
    assert_eq!(result.context["_outputs.a"], json!("ok on 3"));
    let mut delays = Vec::new();
    while let Ok(e) = events.try_recv() {
        if let Event::JobRetried {
            delay,
            next_attempt,
            ..
        } = e
        {
            delays.push((next_attempt, delay.as_millis()));
        }
    }
    assert_eq!(delays, vec![(2, 1000), (3, 2000)]);
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn last_failed_attempt_fails_the_run_with_the_users_message() {
    let bp = r#"{"id":"fails","nodes":[
      {"id":"a","uses":"flaky","config":{"maxRetries":2}},{"id":"b","uses":"count"}],
      "edges":[{"source":"a","target":"b"}]}"#;
    let mut h = Harness::new(&[bp]);
    h.spawn_workers(2);
    let run_id = h.start("fails", json!({})).await;
    let result = h.wait(&run_id).await;
    assert_eq!(result.status, RunStatus::Failed);
    assert_eq!(h.counter.get("a"), 2);
    assert_eq!(h.counter.get("b"), 0);
    assert_eq!(result.errors.len(), 1);
    assert_eq!(result.errors[0].node_id, "a");
    assert_eq!(result.errors[0].message, "boom on attempt 2");
    let status = h
        .backends
        .runs
        .status(&run_id)
        .await
        .unwrap()
        .unwrap()
        .value;
    assert_eq!(
        status.final_status.unwrap()["reason"],
        json!("boom on attempt 2")
    );
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fallback_runs_as_its_own_job_after_the_last_attempt_and_inherits_routing() {
    let bp = r#"{"id":"fb","nodes":[
      {"id":"a","uses":"flaky","config":{"maxRetries":3,"fallback":"f"}},
      {"id":"f","uses":"count","params":{"output":"from fallback"}},
      {"id":"end","uses":"count"}],
      "edges":[{"source":"a","target":"end"}]}"#;
    let mut h = Harness::new(&[bp]);
    h.spawn_workers(2);
    let result = h.run("fb", json!({})).await;
    assert_eq!(result.status, RunStatus::Completed, "{:?}", result.errors);
    assert_eq!(h.counter.get("a"), 3);
    assert_eq!(h.counter.get("f"), 1);
    assert_eq!(h.counter.get("end"), 1);
    assert_eq!(result.context["_inputs.end"], json!("from fallback"));
    assert_eq!(result.context["_outputs.a"], Value::Null);
    assert_eq!(result.context["_catch_error"]["nodeId"], json!("a"));
    assert!(result.errors.is_empty());
    h.stop().await;
}

#[tokio::test(start_paused = true)]
async fn timeout_is_a_retryable_failure() {
    let bp = r#"{"id":"to","nodes":[
      {"id":"a","uses":"slow","params":{"ms":5000},"config":{"timeout":100,"maxRetries":2}}],
      "edges":[]}"#;
    let mut h = Harness::new(&[bp]);
    h.spawn_workers(1);
    let result = h.run("to", json!({})).await;
    assert_eq!(result.status, RunStatus::Failed);
    assert_eq!(h.counter.get("a"), 2);
    assert!(
        result.errors[0].message.contains("timed out"),
        "{:?}",
        result.errors
    );
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn user_context_of_a_chain_matches_the_in_process_runtime() {
    use flowcraft_azure::flow::runtime::FlowRuntime;
    use std::sync::Arc;
    let mut h = Harness::new(&[CHAIN]);
    h.spawn_workers(2);
    let distributed = h.run("chain", json!({"start": 1})).await;
    let runtime = FlowRuntime::new(h.env.clone());
    let bp = h.env.blueprints.get("chain").unwrap();
    let mut initial = serde_json::Map::new();
    initial.insert("start".into(), json!(1));
    let local = runtime.run(Arc::clone(&bp), initial).await;
    assert_eq!(local.status, distributed.status);
    assert_eq!(user_context(&local), user_context(&distributed));
    h.stop().await;
}
