//! Awaiting, resume, sleep, subflows, loops and batches on the distributed core.

mod distributed_common;

use distributed_common::Harness;
use flowcraft_azure::distributed::ports::{JobQueue, RunPhase, RunStore};
use flowcraft_azure::flow::runtime::RunStatus;
use serde_json::json;
use std::time::Duration;

const APPROVAL: &str = r#"{"id":"approval","nodes":[
  {"id":"prep","uses":"count","params":{"output":{"amount":5}}},
  {"id":"review","uses":"wait"},
  {"id":"approve","uses":"count"},{"id":"reject","uses":"count"},{"id":"after","uses":"count"}],
  "edges":[{"source":"prep","target":"review"},
    {"source":"review","target":"approve","action":"approve"},
    {"source":"review","target":"reject","action":"reject"},
    {"source":"approve","target":"after"}]}"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wait_parks_the_run_awaiting_and_routes_nothing() {
    let mut h = Harness::new(&[APPROVAL]);
    h.spawn_workers(2);
    let run_id = h.start("approval", json!({})).await;
    let parked = h.wait(&run_id).await;
    assert_eq!(parked.status, RunStatus::Awaiting);
    assert_eq!(parked.context["_awaitingNodeIds"], json!(["review"]));
    assert_eq!(
        parked.context["_awaitingDetails"]["review"]["reason"],
        json!("external_event")
    );
    assert!(!parked.context.contains_key("_outputs.review"));
    assert_eq!(h.counter.get("approve") + h.counter.get("reject"), 0);
    let status = h.runs.status(&run_id).await.unwrap().unwrap().value;
    assert_eq!(status.status, RunPhase::Awaiting);
    h.stop().await;
}

async fn resume_with(action: &str) -> (Harness, flowcraft_azure::flow::runtime::WorkflowResult) {
    let mut h = Harness::new(&[APPROVAL]);
    h.spawn_workers(2);
    let run_id = h.start("approval", json!({})).await;
    h.wait(&run_id).await;
    let fired = h
        .client
        .resume_with_action(
            &run_id,
            None,
            Some(action.into()),
            Some(json!({"by": "ada"})),
        )
        .await
        .unwrap();
    assert_eq!(fired.len(), 1);
    let result = h.wait(&run_id).await;
    (h, result)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resume_with_approve_takes_only_the_approve_branch() {
    let (h, result) = resume_with("approve").await;
    assert_eq!(result.status, RunStatus::Completed, "{result:?}");
    assert_eq!((h.counter.get("approve"), h.counter.get("reject")), (1, 0));
    assert_eq!(h.counter.get("after"), 1);
    assert_eq!(result.context["_outputs.review"], json!({"by": "ada"}));
    assert_eq!(result.context["_inputs.approve"], json!({"by": "ada"}));
    assert!(!result.context.contains_key("_awaitingNodeIds"));
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resume_with_reject_takes_only_the_reject_branch() {
    let (h, result) = resume_with("reject").await;
    assert_eq!(result.status, RunStatus::Completed);
    assert_eq!((h.counter.get("approve"), h.counter.get("reject")), (0, 1));
    assert_eq!(h.counter.get("after"), 0);
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resume_of_a_run_that_is_not_awaiting_is_refused() {
    let mut h = Harness::new(&[APPROVAL]);
    h.spawn_workers(1);
    let run_id = h.start("approval", json!({})).await;
    h.wait(&run_id).await;
    let err = h
        .client
        .resume_with_action(&run_id, Some("prep"), Some("approve".into()), None)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("not awaiting"), "{err}");
    h.client
        .resume_with_action(&run_id, Some("review"), Some("reject".into()), None)
        .await
        .unwrap();
    h.wait(&run_id).await;
    let again = h
        .client
        .resume_with_action(&run_id, None, Some("approve".into()), None)
        .await
        .unwrap_err();
    assert!(again.to_string().contains("completed"), "{again}");
    h.stop().await;
}

/// A client that loads another version of the blueprint than the run is pinned to refuses
/// to resume it (it would route with the other version's edges); the run keeps waiting.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resume_by_a_client_with_another_blueprint_version_is_refused() {
    let v1 = r#"{"id":"hitl","metadata":{"version":"1"},"nodes":[{"id":"w","uses":"wait"},
      {"id":"ok","uses":"count"}],"edges":[{"source":"w","target":"ok","action":"ok"}]}"#;
    let v2 = r#"{"id":"hitl","metadata":{"version":"2"},"nodes":[{"id":"w","uses":"wait"},
      {"id":"ok","uses":"count"},{"id":"v2only","uses":"count"}],
      "edges":[{"source":"w","target":"v2only","action":"ok"}]}"#;
    let mut h = Harness::new(&[v1]);
    h.spawn_workers(1);
    let run_id = h.start("hitl", json!({})).await;
    assert_eq!(h.wait(&run_id).await.status, RunStatus::Awaiting);
    let mut registry = flowcraft_azure::flow::execute::BlueprintRegistry::new();
    registry.insert(distributed_common::blueprint(v2));
    let other = flowcraft_azure::distributed::client::Client::new(
        h.backends.clone(),
        std::sync::Arc::new(registry),
    );
    let err = other
        .resume_with_action(&run_id, None, Some("ok".into()), None)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("pinned to version 1"), "{err}");
    assert_eq!(h.wait(&run_id).await.status, RunStatus::Awaiting);
    h.client
        .resume_with_action(&run_id, None, Some("ok".into()), None)
        .await
        .unwrap();
    assert_eq!(h.wait(&run_id).await.status, RunStatus::Completed);
    assert_eq!((h.counter.get("ok"), h.counter.get("v2only")), (1, 0));
    h.stop().await;
}

#[tokio::test(start_paused = true)]
async fn sleep_is_a_delayed_wake_up_message_and_passes_its_input_through() {
    let bp = r#"{"id":"nap","nodes":[
      {"id":"a","uses":"count","params":{"output":42}},
      {"id":"s","uses":"sleep","params":{"duration":"10m"}},
      {"id":"b","uses":"double"}],
      "edges":[{"source":"a","target":"s"},{"source":"s","target":"b"}]}"#;
    let mut h = Harness::new(&[bp]);
    h.spawn_workers(2);
    let run_id = h.start("nap", json!({})).await;
    let parked = h.wait(&run_id).await;
    assert_eq!(parked.status, RunStatus::Awaiting);
    assert_eq!(
        parked.context["_awaitingDetails"]["s"]["reason"],
        json!("timer")
    );
    assert_eq!(h.counter.get("b"), 0);
    // Virtual (paused) time: nothing happens before the 10 minutes are up.
    tokio::time::sleep(Duration::from_secs(9 * 60)).await;
    assert_eq!(h.counter.get("b"), 0, "woke up too early");
    assert_eq!(h.wait(&run_id).await.status, RunStatus::Awaiting);
    tokio::time::sleep(Duration::from_secs(2 * 60)).await;
    let result = h.wait(&run_id).await;
    assert_eq!(result.status, RunStatus::Completed);
    assert_eq!(result.context["_outputs.b"], json!(84.0));
    assert_eq!(h.counter.get("b"), 1);
    h.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_sleep_longer_than_the_queue_maximum_is_chained() {
    let bp = r#"{"id":"long","nodes":[
      {"id":"s","uses":"sleep","params":{"duration":"9d"}},{"id":"b","uses":"count"}],
      "edges":[{"source":"s","target":"b"}]}"#;
    let mut h = Harness::new(&[bp]);
    h.config.idle_backoff_max = Duration::from_secs(600);
    h.spawn_workers(1);
    let run_id = h.start("long", json!({})).await;
    h.wait(&run_id).await;
    tokio::time::sleep(Duration::from_secs(8 * 24 * 3600)).await;
    assert_eq!(h.counter.get("b"), 0, "woke up too early");
    tokio::time::sleep(Duration::from_secs(2 * 24 * 3600)).await;
    let result = h.wait(&run_id).await;
    assert_eq!(result.status, RunStatus::Completed);
    assert_eq!(h.counter.get("b"), 1);
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subflow_runs_inside_the_job() {
    let child = r#"{"id":"child","nodes":[{"id":"x","uses":"double"}],"edges":[]}"#;
    let parent = r#"{"id":"parent","nodes":[
      {"id":"a","uses":"count","params":{"output":21}},
      {"id":"sub","uses":"subflow","params":{"blueprintId":"child"}},
      {"id":"z","uses":"count"}],
      "edges":[{"source":"a","target":"sub"},{"source":"sub","target":"z"}]}"#;
    let mut h = Harness::new(&[child, parent]);
    h.spawn_workers(2);
    let result = h.run("parent", json!({})).await;
    assert_eq!(result.status, RunStatus::Completed, "{result:?}");
    assert_eq!(result.context["_outputs.sub"], json!(42.0));
    assert_eq!(result.context["_inputs.z"], json!(42.0));
    h.stop().await;
}

const LOOP: &str = r#"{"id":"loop","nodes":[
  {"id":"init","uses":"count"},
  {"id":"tick","uses":"tick","params":{"until":4}},
  {"id":"ctrl","uses":"loop-controller","params":{"condition":"more"},"config":{"joinStrategy":"any"}},
  {"id":"done","uses":"count"}],
  "edges":[{"source":"init","target":"tick"},{"source":"tick","target":"ctrl"},
    {"source":"ctrl","target":"tick","action":"continue"},
    {"source":"ctrl","target":"done","action":"break"}]}"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn loop_body_runs_once_per_iteration_with_fresh_activations() {
    let mut h = Harness::new(&[LOOP]);
    h.spawn_workers(3);
    let result = h.run("loop", json!({})).await;
    assert_eq!(result.status, RunStatus::Completed, "{result:?}");
    assert_eq!(h.counter.get("tick"), 4);
    assert_eq!(h.counter.get("done"), 1);
    assert_eq!(result.context["i"], json!(4));
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batch_scatter_runs_one_job_per_item_and_gather_waits_for_all() {
    let bp = r#"{"id":"batch","nodes":[
      {"id":"b_scatter","uses":"batch-scatter","inputs":"items",
       "params":{"workerUsesKey":"double","outputKey":"doubled","gatherNodeId":"b_gather"}},
      {"id":"b_gather","uses":"batch-gather","params":{"outputKey":"doubled","gatherNodeId":"b_gather"},
       "config":{"joinStrategy":"all"}},
      {"id":"after","uses":"count"}],
      "edges":[{"source":"b_scatter","target":"b_gather"},{"source":"b_gather","target":"after"}]}"#;
    let mut h = Harness::new(&[bp]);
    h.spawn_workers(3);
    let result = h.run("batch", json!({"items": [1, 2, 3, 4, 5]})).await;
    assert_eq!(result.status, RunStatus::Completed, "{result:?}");
    assert_eq!(result.context["doubled"], json!([2.0, 4.0, 6.0, 8.0, 10.0]));
    assert_eq!(h.counter.get("after"), 1);
    let empty = h.run("batch", json!({"items": []})).await;
    assert_eq!(empty.status, RunStatus::Completed);
    assert_eq!(empty.context["doubled"], json!([]));
    let bad = h.run("batch", json!({"items": 3})).await;
    assert_eq!(bad.status, RunStatus::Failed);
    // Every queued job was consumed.
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(
        h.queue
            .receive(32, Duration::from_secs(1))
            .await
            .unwrap()
            .is_empty()
    );
    h.stop().await;
}

const CHILD_WAITS: &str = r#"{"id":"child_waits","nodes":[
  {"id":"w1","uses":"wait"},{"id":"w2","uses":"wait"},{"id":"last","uses":"echo"}],
  "edges":[{"source":"w1","target":"w2","action":"go"},{"source":"w2","target":"last","action":"go"}]}"#;
const PARENT_OF_WAITS: &str = r#"{"id":"parent_waits","nodes":[
  {"id":"sub","uses":"subflow","params":{"blueprintId":"child_waits"}},
  {"id":"after","uses":"count"}],
  "edges":[{"source":"sub","target":"after"}]}"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_awaiting_subflow_is_resumed_through_its_sub_run_by_a_worker() {
    let mut h = Harness::new(&[CHILD_WAITS, PARENT_OF_WAITS]);
    h.spawn_workers(2);
    let run_id = h.start("parent_waits", json!({})).await;
    let parked = h.wait(&run_id).await;
    assert_eq!(parked.status, RunStatus::Awaiting);
    assert_eq!(parked.context["_awaitingNodeIds"], json!(["sub"]));
    assert!(parked.context.contains_key("_subflowState.sub"));
    // First resume: the sub-run moves on to w2 and waits again; the parent stays awaiting.
    h.client
        .resume_with_action(&run_id, Some("sub"), Some("go".into()), Some(json!("one")))
        .await
        .unwrap();
    let again = loop {
        let r = h.client.status(&run_id).await.unwrap().unwrap();
        let sub_state = &r.context["_subflowState.sub"];
        if sub_state.get("_outputs.w1").is_some() {
            break r;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    assert_eq!(again.status, RunStatus::Awaiting);
    assert_eq!(h.counter.get("after"), 0);
    // Second resume: the sub-run completes, the parent node completes and routes.
    h.client
        .resume_with_action(&run_id, None, Some("go".into()), Some(json!("two")))
        .await
        .unwrap();
    let result = loop {
        let r = h.wait(&run_id).await;
        if r.status != RunStatus::Awaiting {
            break r;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    assert_eq!(result.status, RunStatus::Completed, "{result:?}");
    assert_eq!(result.context["_outputs.sub"], json!("two"));
    assert!(!result.context.contains_key("_subflowState.sub"));
    assert_eq!(h.counter.get("after"), 1);
    h.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_duplicate_subflow_resume_job_is_dropped() {
    let h = Harness::new(&[CHILD_WAITS, PARENT_OF_WAITS]);
    let run_id = h.start("parent_waits", json!({})).await;
    let start = h.take("sub").await;
    h.handle(&start).await;
    h.client
        .resume_with_action(&run_id, None, Some("go".into()), None)
        .await
        .unwrap();
    let resume = h.take("sub").await;
    let worker = h.worker();
    let mut events = h.events.subscribe();
    assert_eq!(
        worker.handle_message(&resume).await,
        flowcraft_azure::distributed::worker::Disposition::Complete
    );
    // The same resume delivered again must not resume w2 as well.
    worker.handle_message(&resume).await;
    let mut dropped = 0;
    while let Ok(e) = events.try_recv() {
        if matches!(
            e,
            flowcraft_azure::distributed::events::Event::JobDropped { .. }
        ) {
            dropped += 1;
        }
    }
    assert_eq!(dropped, 1);
    let state = h.client.status(&run_id).await.unwrap().unwrap();
    let sub = &state.context["_subflowState.sub"];
    assert!(sub.get("_outputs.w1").is_some());
    assert!(sub.get("_outputs.w2").is_none(), "w2 must still wait");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_inside_a_loop_gathers_each_pass_of_workers() {
    let bp = r#"{"id":"batch-loop","metadata":{"evaluator":"safe"},"nodes":[
      {"id":"init","uses":"set","params":{"values":{"items":[1,2,3]}}},
      {"id":"b_scatter","uses":"batch-scatter","inputs":"items",
       "params":{"workerUsesKey":"double","gatherNodeId":"b_gather"}},
      {"id":"b_gather","uses":"batch-gather","params":{"outputKey":"gathered"}},
      {"id":"pass","uses":"echo"},
      {"id":"ctrl","uses":"loop-controller","params":{"condition":"pass < 3"},"config":{"joinStrategy":"any"}},
      {"id":"done","uses":"sum","inputs":"gathered"}],
      "edges":[{"source":"init","target":"pass","transform":"1"},
        {"source":"pass","target":"b_scatter"},{"source":"b_scatter","target":"b_gather"},
        {"source":"b_gather","target":"ctrl"},
        {"source":"ctrl","target":"pass","action":"continue","transform":"context.pass + 1"},
        {"source":"ctrl","target":"done","action":"break"}]}"#;
    let mut h = Harness::new(&[bp]);
    h.spawn_workers(3);
    let result = h.run("batch-loop", json!({})).await;
    assert_eq!(result.status, RunStatus::Completed, "{result:?}");
    assert_eq!(result.context["pass"], json!(3));
    assert_eq!(result.context["gathered"], json!([2.0, 4.0, 6.0]));
    assert_eq!(result.context["done"], json!(12.0));
    // Only the dynamic `double` workers are counted: 3 passes of 3 items.
    assert_eq!(h.counter.total(), 9);
    h.stop().await;
}
