//! One regression test per fragility F1..F19 of the TypeScript distributed adapter (spec
//! §5.11). Each comment says which TypeScript behaviour the test would catch.

mod distributed_common;

use distributed_common::{Harness, blueprint};
use flowcraft_azure::distributed::events::Event;
use flowcraft_azure::distributed::job::JobMessage;
use flowcraft_azure::distributed::ports::{
    JobQueue, Page, RunPhase, RunStore, StatusRecord, Versioned,
};
use flowcraft_azure::distributed::state::RunState;
use flowcraft_azure::distributed::worker::Disposition;
use flowcraft_azure::flow::runtime::RunStatus;
use serde_json::{Map, Value, json};
use std::time::Duration;

fn object(v: Value) -> Map<String, Value> {
    match v {
        Value::Object(m) => m,
        _ => panic!("not an object"),
    }
}

// TS: a context without `blueprintVersion` is compared `undefined !== null`, so every job of
// a run created by the documented client is "rejected" and acknowledged: nothing ever runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn f1_run_without_a_pinned_version_adopts_the_current_one_and_runs() {
    let bp = r#"{"id":"v","metadata":{"version":"1.0"},"nodes":[{"id":"a","uses":"count"},
      {"id":"b","uses":"count"}],"edges":[{"source":"a","target":"b"}]}"#;
    let mut h = Harness::new(&[bp]);
    // Exactly what the documented TypeScript client writes: no version, no bookkeeping,
    // a raw JSON job without activation.
    h.runs.put_raw_document(
        "ts-run",
        object(json!({"id": "ts-run", "runId": "ts-run", "blueprintId": "v", "order": 1})),
    );
    h.runs
        .write_status(&StatusRecord::running("ts-run", 0), None)
        .await
        .unwrap();
    h.queue
        .send(
            r#"{"runId":"ts-run","blueprintId":"v","nodeId":"a"}"#,
            Duration::ZERO,
        )
        .await
        .unwrap();
    h.spawn_workers(2);
    let result = h.wait("ts-run").await;
    assert_eq!(result.status, RunStatus::Completed, "{result:?}");
    assert_eq!(result.context["blueprintVersion"], json!("1.0"));
    assert_eq!((h.counter.get("a"), h.counter.get("b")), (1, 1));
    h.stop().await;
}

// TS: a job for another version is acknowledged and lost; here it is deferred (a delayed copy
// that does not count toward the poison limit) for a worker that has the pinned version, and
// poisoned (run failed, with the reason) once it has been deferred for `version_window`.
#[tokio::test(start_paused = true)]
async fn f1_version_mismatch_is_never_acknowledged_and_lost() {
    let v1 =
        r#"{"id":"v","metadata":{"version":"1"},"nodes":[{"id":"a","uses":"count"}],"edges":[]}"#;
    let v2 =
        r#"{"id":"v","metadata":{"version":"2"},"nodes":[{"id":"a","uses":"count"}],"edges":[]}"#;
    let mut h = Harness::new(&[v1]);
    let mut events = h.events.subscribe();
    let run_id = h.start("v", json!({})).await;
    let mut env2 = h.env.clone();
    let mut reg = flowcraft_azure::flow::execute::BlueprintRegistry::new();
    reg.insert(blueprint(v2));
    env2.blueprints = std::sync::Arc::new(reg);
    let new_worker = h.worker_with(env2.clone());
    let m = h.receive_one().await;
    let d = new_worker.handle_message(&m).await;
    assert_eq!(d, Disposition::Complete, "a deferred copy replaces it");
    h.queue.complete(&m.id, &m.receipt).await.unwrap();
    assert_eq!(h.queue.len(), 1, "the deferred copy");
    assert_eq!(h.counter.get("a"), 0);
    assert!(matches!(events.try_recv(), Ok(Event::JobDeferred { .. })));
    // A worker with the pinned version runs it.
    h.spawn_workers(1);
    let result = h.wait(&run_id).await;
    assert_eq!(result.status, RunStatus::Completed);
    assert_eq!(h.counter.get("a"), 1);
    h.stop().await;

    // Only v2 workers: after the version window the job is poisoned and the run fails; the
    // deferrals (many more than max_dequeue) never counted toward the poison limit.
    let mut h = Harness::new(&[v1]);
    h.config.defer_delay = Duration::from_secs(1);
    h.config.version_window = Duration::from_secs(120);
    let run_id = h.start("v", json!({})).await;
    h.spawn_worker(h.worker_with(env2));
    let result = h.wait(&run_id).await;
    assert_eq!(result.status, RunStatus::Failed);
    assert!(
        result.errors[0].message.contains("version mismatch"),
        "{:?}",
        result.errors
    );
    let poisoned = h.queue.poisoned();
    assert_eq!(poisoned.len(), 1);
    assert!(
        poisoned[0].reason.contains("pinned to version 1")
            && poisoned[0].reason.contains("within 120 s"),
        "{}",
        poisoned[0].reason
    );
    h.stop().await;
}

// TS: awaiting is ignored; the wait/sleep node is stored as completed and its successors on
// default edges are enqueued at once.
#[tokio::test(start_paused = true)]
async fn f2_wait_and_sleep_do_not_route_until_resumed_or_woken() {
    let bp = r#"{"id":"w","nodes":[{"id":"w","uses":"wait"},{"id":"s","uses":"sleep","params":{"duration":"1h"}},
      {"id":"after_w","uses":"count"},{"id":"after_s","uses":"count"}],
      "edges":[{"source":"w","target":"after_w"},{"source":"s","target":"after_s"}]}"#;
    let mut h = Harness::new(&[bp]);
    h.spawn_workers(2);
    let run_id = h.start("w", json!({})).await;
    let parked = h.wait(&run_id).await;
    assert_eq!(parked.status, RunStatus::Awaiting);
    tokio::time::sleep(Duration::from_secs(60)).await;
    assert_eq!(h.counter.get("after_w") + h.counter.get("after_s"), 0);
    tokio::time::sleep(Duration::from_secs(3600)).await;
    assert_eq!(h.counter.get("after_s"), 1, "the sleep woke up by itself");
    assert_eq!(h.counter.get("after_w"), 0, "the wait still waits");
    assert_eq!(h.wait(&run_id).await.status, RunStatus::Awaiting);
    h.client
        .resume_with_action(&run_id, Some("w"), None, None)
        .await
        .unwrap();
    assert_eq!(h.wait(&run_id).await.status, RunStatus::Completed);
    assert_eq!(h.counter.get("after_w"), 1);
    h.stop().await;
}

// TS: reconcile enqueues every node whose predecessors completed: both branches of a condition,
// both approve and reject after a resume, and fallback-only nodes as start nodes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn f3_reconcile_and_resume_use_recorded_activations_not_predecessor_completion() {
    let bp = r#"{"id":"r","nodes":[
      {"id":"a","uses":"count","params":{"output":{"ok":true}},"config":{"fallback":"fb"}},
      {"id":"fb","uses":"count"},
      {"id":"yes","uses":"count"},{"id":"no","uses":"count"},
      {"id":"w","uses":"wait"},{"id":"approve","uses":"count"},{"id":"reject","uses":"count"}],
      "edges":[{"source":"a","target":"yes","condition":"a.ok"},{"source":"a","target":"no","condition":"a.nope"},
        {"source":"yes","target":"w"},
        {"source":"w","target":"approve","action":"approve"},{"source":"w","target":"reject","action":"reject"}]}"#;
    let mut h = Harness::new(&[bp]);
    h.spawn_workers(2);
    let run_id = h.start("r", json!({})).await;
    assert_eq!(h.wait(&run_id).await.status, RunStatus::Awaiting);
    assert!(h.client.reconcile(&run_id).await.unwrap().is_empty());
    h.client
        .resume_with_action(&run_id, None, Some("approve".into()), Some(json!(1)))
        .await
        .unwrap();
    let result = h.wait(&run_id).await;
    assert_eq!(result.status, RunStatus::Completed);
    assert_eq!(
        result.context["_inputs.approve"],
        json!(1),
        "the resume output reached the successor through the normal routing path"
    );
    assert!(h.client.reconcile(&run_id).await.unwrap().is_empty());
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(h.counter.get("approve"), 1);
    for never in ["no", "reject", "fb"] {
        assert_eq!(h.counter.get(never), 0, "{never} must never run");
    }
    h.stop().await;
}

// TS: the idempotency guard replays only `_outputs.<id>`: the action is lost (a redelivery
// with a stored output routes the default edge `d`), and a node with no output never counts
// as completed (Cosmos drops `undefined`), so a redelivery executes it again.
#[tokio::test(start_paused = true)]
async fn f4_redelivered_job_replays_its_action_and_a_missing_output() {
    for (id, output) in [("f4-none", None), ("f4-some", Some(json!("o")))] {
        let mut params = json!({"action": "left"});
        if let Some(output) = &output {
            params["output"] = output.clone();
        }
        let bp = json!({"id": id, "nodes": [{"id": "a", "uses": "count", "params": params},
            {"id": "l", "uses": "count"}, {"id": "d", "uses": "count"}],
          "edges": [{"source": "a", "target": "l", "action": "left"},
                    {"source": "a", "target": "d"}]})
        .to_string();
        let h = Harness::new(&[&bp]);
        let run_id = h.start(id, json!({})).await;
        let m = h.take("a").await;
        let worker = h.worker();
        assert_eq!(worker.handle_message(&m).await, Disposition::Complete);
        assert_eq!(h.queued_nodes().await, ["l"], "{id}");
        // Redelivery: a is not executed again and its action is replayed.
        let mut events = h.events.subscribe();
        assert_eq!(worker.handle_message(&m).await, Disposition::Complete);
        assert!(matches!(events.try_recv(), Ok(Event::JobReplayed { .. })));
        assert_eq!(h.counter.get("a"), 1, "{id}: a ran once");
        assert_eq!(
            h.queued_nodes().await,
            ["l", "l"],
            "{id}: the action was replayed"
        );
        h.queue.complete(&m.id, &m.receipt).await.unwrap();
        let first = h.take("l").await;
        h.handle(&first).await;
        let dup = h.take("l").await;
        h.handle(&dup).await;
        let result = h.wait(&run_id).await;
        assert_eq!(result.status, RunStatus::Completed);
        assert_eq!((h.counter.get("l"), h.counter.get("d")), (1, 0), "{id}");
        assert_eq!(result.context["_outputs.a"], output.unwrap_or(Value::Null));
    }
}

// TS: the fan-in counter is INCR per arrival (redeliveries count again) and compares with the
// number of EDGES, so an `all` join fires early after a redelivery, or never when one source
// has two edges into it.
#[tokio::test(start_paused = true)]
async fn f5_join_counts_distinct_predecessors_not_redeliveries() {
    let bp = r#"{"id":"f5","nodes":[{"id":"s","uses":"count"},{"id":"x","uses":"mark"},
      {"id":"y","uses":"mark"},{"id":"j","uses":"count"}],
      "edges":[{"source":"s","target":"x"},{"source":"s","target":"y"},
        {"source":"x","target":"j"},{"source":"x","target":"j","condition":"x"},
        {"source":"y","target":"j"}]}"#;
    let h = Harness::new(&[bp]);
    let run_id = h.start("f5", json!({})).await;
    let s = h.take("s").await;
    h.handle(&s).await;
    let x = h.take("x").await;
    let worker = h.worker();
    for _ in 0..3 {
        assert_eq!(worker.handle_message(&x).await, Disposition::Complete);
    }
    h.queue.complete(&x.id, &x.receipt).await.unwrap();
    assert_eq!(h.queued_nodes().await, ["y"], "j must wait for y");
    let y = h.take("y").await;
    h.handle(&y).await;
    assert_eq!(h.queued_nodes().await, ["j"]);
    let j = h.take("j").await;
    h.handle(&j).await;
    assert_eq!(h.wait(&run_id).await.status, RunStatus::Completed);
    assert_eq!(h.counter.get("j"), 1);
}

// TS: the losing `any` arrival writes the cancel key itself, so the THIRD live predecessor
// throws and the whole run is published failed; and the hour-long lock lets a loop
// controller (an `any` join) fire only once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn f6_any_join_fires_once_per_arming_with_many_live_predecessors_and_rearms_in_loops() {
    let bp = r#"{"id":"f6","nodes":[{"id":"s","uses":"count"},{"id":"p1","uses":"mark"},
      {"id":"p2","uses":"mark"},{"id":"p3","uses":"mark"},{"id":"p4","uses":"mark"},
      {"id":"first","uses":"count","config":{"joinStrategy":"any"}}],
      "edges":[{"source":"s","target":"p1"},{"source":"s","target":"p2"},{"source":"s","target":"p3"},
        {"source":"s","target":"p4"},{"source":"p1","target":"first"},{"source":"p2","target":"first"},
        {"source":"p3","target":"first"},{"source":"p4","target":"first"}]}"#;
    let loop_bp = r#"{"id":"f6loop","nodes":[{"id":"t","uses":"tick","params":{"until":5}},
      {"id":"c","uses":"loop-controller","params":{"condition":"more"},"config":{"joinStrategy":"any"}},
      {"id":"out","uses":"count"}],
      "edges":[{"source":"t","target":"c"},{"source":"c","target":"t","action":"continue"},
        {"source":"c","target":"out","action":"break"}]}"#;
    let mut h = Harness::new(&[bp, loop_bp]);
    h.spawn_workers(4);
    let result = h.run("f6", json!({})).await;
    assert_eq!(result.status, RunStatus::Completed, "{:?}", result.errors);
    assert_eq!(h.counter.get("first"), 1);
    let looped = h.run("f6loop", json!({})).await;
    assert_eq!(looped.status, RunStatus::Completed, "{:?}", looped.errors);
    assert_eq!(
        h.counter.get("t"),
        5,
        "the controller re-armed on every iteration"
    );
    assert_eq!(h.counter.get("out"), 1);
    h.stop().await;
}

// TS: the idempotency guard sees `_outputs.<body>` from the first iteration and skips the
// body on every later one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn f7_loop_body_runs_again_on_each_iteration() {
    let bp = r#"{"id":"f7","nodes":[{"id":"init","uses":"count"},{"id":"t","uses":"tick","params":{"until":3}},
      {"id":"body2","uses":"count"},
      {"id":"c","uses":"loop-controller","params":{"condition":"more"},"config":{"joinStrategy":"any"}},
      {"id":"out","uses":"count"}],
      "edges":[{"source":"init","target":"t"},{"source":"t","target":"body2"},{"source":"body2","target":"c"},
        {"source":"c","target":"t","action":"continue"},{"source":"c","target":"out","action":"break"}]}"#;
    let mut h = Harness::new(&[bp]);
    h.spawn_workers(2);
    let result = h.run("f7", json!({})).await;
    assert_eq!(result.status, RunStatus::Completed, "{:?}", result.errors);
    assert_eq!((h.counter.get("t"), h.counter.get("body2")), (3, 3));
    assert_eq!((h.counter.get("init"), h.counter.get("out")), (1, 1));
    h.stop().await;
}

// TS: dynamic nodes are ignored and the gather node runs at once with `[]`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn f8_batch_gather_waits_for_every_dynamic_worker() {
    let bp = r#"{"id":"f8","nodes":[
      {"id":"s","uses":"batch-scatter","inputs":"items","params":{"workerUsesKey":"double","outputKey":"out","gatherNodeId":"g"}},
      {"id":"g","uses":"batch-gather","params":{"outputKey":"out","gatherNodeId":"g"}}],
      "edges":[{"source":"s","target":"g"}]}"#;
    let mut h = Harness::new(&[bp]);
    h.spawn_workers(3);
    let items: Vec<u32> = (1..=20).collect();
    let result = h.run("f8", json!({ "items": items })).await;
    assert_eq!(result.status, RunStatus::Completed, "{:?}", result.errors);
    let expected: Vec<f64> = items.iter().map(|i| f64::from(*i) * 2.0).collect();
    assert_eq!(result.context["out"], json!(expected));
    assert_eq!(h.counter.get("g"), 0);
    h.stop().await;
}

// TS: completion needs ALL terminal nodes done (fallback-only nodes and untaken branches
// included), so branching runs never complete; two terminals finishing together may both
// publish, or neither. (Paused time: a run that never completes fails the wait at once.)
#[tokio::test(start_paused = true)]
async fn f9_run_completes_when_nothing_is_outstanding_and_publishes_once() {
    let bp = r#"{"id":"f9","nodes":[{"id":"a","uses":"count","params":{"action":"x"},"config":{"fallback":"fb"}},
      {"id":"fb","uses":"count"},{"id":"t1","uses":"count"},{"id":"t2","uses":"count"},
      {"id":"t3","uses":"count"},{"id":"t4","uses":"count"}],
      "edges":[{"source":"a","target":"t1","action":"x"},{"source":"a","target":"t2","action":"x"},
        {"source":"a","target":"t3","action":"x"},{"source":"a","target":"t4","action":"y"}]}"#;
    let mut h = Harness::new(&[bp]);
    let mut events = h.events.subscribe();
    h.spawn_workers(4);
    let run_id = h.start("f9", json!({})).await;
    let result = h.wait(&run_id).await;
    assert_eq!(result.status, RunStatus::Completed);
    assert_eq!(h.counter.get("t4") + h.counter.get("fb"), 0);
    h.stop().await;
    let mut finished = 0;
    while let Ok(e) = events.try_recv() {
        if matches!(e, Event::RunFinished { run_id: ref r, .. } if *r == run_id) {
            finished += 1;
        }
    }
    assert_eq!(finished, 1);
}

// TS: after `failed` is published other branches keep running and can publish `completed`;
// `onJobStart` writes `running` over a final status.
#[tokio::test(start_paused = true)]
async fn f10_failed_status_is_sticky_and_later_jobs_are_dropped() {
    let bp = r#"{"id":"f10","nodes":[{"id":"s","uses":"count"},{"id":"bad","uses":"fail","params":{"message":"bad"}},
      {"id":"slow","uses":"slow","params":{"ms":5000}},{"id":"after","uses":"count"}],
      "edges":[{"source":"s","target":"bad"},{"source":"s","target":"slow"},{"source":"slow","target":"after"}]}"#;
    let mut h = Harness::new(&[bp]);
    h.spawn_workers(2);
    let run_id = h.start("f10", json!({})).await;
    let result = h.wait(&run_id).await;
    assert_eq!(result.status, RunStatus::Failed);
    tokio::time::sleep(Duration::from_secs(10)).await;
    let later = h.wait(&run_id).await;
    assert_eq!(later.status, RunStatus::Failed);
    assert_eq!(
        h.counter.get("after"),
        0,
        "jobs of a failed run are dropped"
    );
    let status = h.runs.status(&run_id).await.unwrap().unwrap().value;
    assert_eq!(status.status, RunPhase::Failed);
    assert_eq!(status.final_status.unwrap()["reason"], json!("bad"));
    h.stop().await;
}

// TS: a failure raised while enqueueing successors leaves a partial fan-out plus a `failed`
// publish. Here the routing is committed atomically first; a failed enqueue is redone.
#[tokio::test(start_paused = true)]
async fn f11_a_failed_enqueue_never_leaves_a_partial_fan_out() {
    let bp = r#"{"id":"f11","nodes":[{"id":"s","uses":"count"},{"id":"b1","uses":"mark"},
      {"id":"b2","uses":"mark"},{"id":"b3","uses":"mark"}],
      "edges":[{"source":"s","target":"b1"},{"source":"s","target":"b2"},{"source":"s","target":"b3"}]}"#;
    let h = Harness::new(&[bp]);
    let run_id = h.start("f11", json!({})).await;
    let s = h.take("s").await;
    // The store is healthy but the queue refuses sends while s is handled.
    let broken = flowcraft_azure::distributed::core::Backends::new(
        std::sync::Arc::new(RefuseSends),
        h.backends.runs.clone(),
        h.backends.coordination.clone(),
    );
    let worker =
        flowcraft_azure::distributed::worker::Worker::new(h.env.clone(), broken, h.config.clone());
    assert!(matches!(
        worker.handle_message(&s).await,
        Disposition::Release(_)
    ));
    let mid = h.client.status(&run_id).await.unwrap().unwrap();
    assert_eq!(mid.status, RunStatus::Running);
    assert!(
        mid.errors.is_empty(),
        "a failed enqueue is not a failed run"
    );
    // Redelivery to a healthy worker enqueues the whole fan-out.
    h.handle(&s).await;
    assert_eq!(h.queued_nodes().await, ["b1", "b2", "b3"]);
    assert_eq!(h.counter.get("s"), 1);
}

struct RefuseSends;

#[async_trait::async_trait]
impl JobQueue for RefuseSends {
    async fn send(&self, _: &str, _: Duration) -> Result<(), flowcraft_azure::Error> {
        Err(flowcraft_azure::Error::transport("queue unreachable"))
    }
    async fn receive(
        &self,
        _: usize,
        _: Duration,
    ) -> Result<Vec<flowcraft_azure::distributed::ports::QueueMessage>, flowcraft_azure::Error>
    {
        Ok(Vec::new())
    }
    async fn renew(&self, _: &str, r: &str, _: Duration) -> Result<String, flowcraft_azure::Error> {
        Ok(r.to_string())
    }
    async fn complete(&self, _: &str, _: &str) -> Result<(), flowcraft_azure::Error> {
        Ok(())
    }
    async fn release(&self, _: &str, _: &str, _: Duration) -> Result<(), flowcraft_azure::Error> {
        Ok(())
    }
    async fn move_to_poison(
        &self,
        _: &flowcraft_azure::distributed::ports::QueueMessage,
        _: &str,
    ) -> Result<(), flowcraft_azure::Error> {
        Ok(())
    }
}

// TS: read-modify-write upserts of the whole item lose concurrent writes (25-99 of 160
// parallel outputs per 10 runs), including the `_awaitingNodeIds` array. Here three waits
// are FORCED to read the same version of the run before any of them commits (a load barrier):
// a blind write would keep one awaiting id; the ETag commit conflicts, re-applies and keeps all.
#[tokio::test(start_paused = true)]
async fn f12_concurrent_branches_and_concurrent_waits_lose_no_update() {
    let bp = r#"{"id":"f12","nodes":[{"id":"s","uses":"count"},{"id":"w1","uses":"wait"},{"id":"w2","uses":"wait"},
      {"id":"w3","uses":"wait"},{"id":"j","uses":"count"}],
      "edges":[{"source":"s","target":"w1"},{"source":"s","target":"w2"},{"source":"s","target":"w3"},
        {"source":"w1","target":"j"},{"source":"w2","target":"j"},{"source":"w3","target":"j"}]}"#;
    let mut h = Harness::new(&[bp]);
    let run_id = h.start("f12", json!({})).await;
    let s = h.take("s").await;
    h.handle(&s).await;
    let waits = [h.take("w1").await, h.take("w2").await, h.take("w3").await];
    let store = std::sync::Arc::new(LoadBarrier {
        inner: h.runs.clone(),
        barrier: tokio::sync::Barrier::new(3),
        armed: std::sync::atomic::AtomicUsize::new(3),
    });
    let racing = flowcraft_azure::distributed::core::Backends::new(
        h.backends.queue.clone(),
        store,
        h.backends.coordination.clone(),
    );
    // Three workers (one worker's own commits of a run take turns, so they never race).
    let workers: Vec<_> = (0..3)
        .map(|_| {
            flowcraft_azure::distributed::worker::Worker::new(
                h.env.clone(),
                racing.clone(),
                h.config.clone(),
            )
        })
        .collect();
    let conflicts_before = h.runs.conflicts();
    let (d1, d2, d3) = tokio::join!(
        workers[0].handle_message(&waits[0]),
        workers[1].handle_message(&waits[1]),
        workers[2].handle_message(&waits[2]),
    );
    assert_eq!(
        [d1, d2, d3],
        [
            Disposition::Complete,
            Disposition::Complete,
            Disposition::Complete
        ]
    );
    assert!(
        h.runs.conflicts() - conflicts_before >= 2,
        "the three commits raced from one version"
    );
    for m in &waits {
        h.queue.complete(&m.id, &m.receipt).await.unwrap();
    }
    let parked = h.wait(&run_id).await;
    assert_eq!(parked.status, RunStatus::Awaiting);
    let mut ids: Vec<String> =
        serde_json::from_value(parked.context["_awaitingNodeIds"].clone()).unwrap();
    ids.sort();
    assert_eq!(ids, ["w1", "w2", "w3"]);
    for (i, node) in ["w2", "w1", "w3"].iter().enumerate() {
        h.client
            .resume_with_action(&run_id, Some(node), None, Some(json!(i)))
            .await
            .unwrap();
    }
    h.spawn_workers(2);
    let result = h.wait(&run_id).await;
    assert_eq!(result.status, RunStatus::Completed);
    assert_eq!(h.counter.get("j"), 1);
    assert_eq!(result.context["_outputs.w3"], json!(2));
    h.stop().await;
}

/// A run store whose first `armed` loads each wait (after reading) until all of them have
/// read: the loads see the same version, so the commits that follow race.
struct LoadBarrier {
    inner: std::sync::Arc<flowcraft_azure::distributed::memory::MemoryRunStore>,
    barrier: tokio::sync::Barrier,
    armed: std::sync::atomic::AtomicUsize,
}

#[async_trait::async_trait]
impl RunStore for LoadBarrier {
    async fn create_run(
        &self,
        state: &RunState,
        status: &StatusRecord,
    ) -> Result<bool, flowcraft_azure::Error> {
        self.inner.create_run(state, status).await
    }
    async fn load(
        &self,
        run_id: &str,
    ) -> Result<Option<Versioned<RunState>>, flowcraft_azure::Error> {
        let loaded = self.inner.load(run_id).await?;
        let take = |n: usize| n.checked_sub(1);
        let ordering = std::sync::atomic::Ordering::SeqCst;
        if self.armed.fetch_update(ordering, ordering, take).is_ok() {
            self.barrier.wait().await;
        }
        Ok(loaded)
    }
    async fn commit(&self, state: &RunState, etag: &str) -> Result<String, flowcraft_azure::Error> {
        self.inner.commit(state, etag).await
    }
    async fn status(
        &self,
        run_id: &str,
    ) -> Result<Option<Versioned<StatusRecord>>, flowcraft_azure::Error> {
        self.inner.status(run_id).await
    }
    async fn write_status(
        &self,
        record: &StatusRecord,
        etag: Option<&str>,
    ) -> Result<String, flowcraft_azure::Error> {
        self.inner.write_status(record, etag).await
    }
    async fn list_stalled(
        &self,
        phases: &[RunPhase],
        older_than: i64,
        limit: usize,
        continuation: Option<&str>,
    ) -> Result<Page<StatusRecord>, flowcraft_azure::Error> {
        self.inner
            .list_stalled(phases, older_than, limit, continuation)
            .await
    }
    async fn put_worker_result(
        &self,
        result: &flowcraft_azure::distributed::ports::WorkerResult,
    ) -> Result<bool, flowcraft_azure::Error> {
        self.inner.put_worker_result(result).await
    }
    async fn record_arrival(
        &self,
        run_id: &str,
        batch: &str,
        node: &str,
    ) -> Result<u64, flowcraft_azure::Error> {
        self.inner.record_arrival(run_id, batch, node).await
    }
    async fn worker_results(
        &self,
        run_id: &str,
        batch: &str,
        continuation: Option<&str>,
    ) -> Result<Page<flowcraft_azure::distributed::ports::WorkerResult>, flowcraft_azure::Error>
    {
        self.inner.worker_results(run_id, batch, continuation).await
    }
}

// TS: output, deltas and routing are written in separate calls (and deltas twice), so a crash
// leaves a partial commit. Here every settled job is exactly ONE conditional write.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn f13_each_job_is_committed_in_one_write() {
    let bp = r#"{"id":"f13","nodes":[{"id":"a","uses":"set","params":{"values":{"k1":1,"k2":2}}},
      {"id":"b","uses":"mark"},{"id":"c","uses":"count"}],
      "edges":[{"source":"a","target":"b"},{"source":"b","target":"c"}]}"#;
    let mut h = Harness::new(&[bp]);
    h.spawn_workers(1);
    let result = h.run("f13", json!({})).await;
    assert_eq!(result.status, RunStatus::Completed);
    assert_eq!(
        (
            result.context["k1"].clone(),
            result.context["mark.b"].clone()
        ),
        (json!(1), json!(true))
    );
    assert_eq!(h.runs.commits(), 3, "one commit per job, nothing else");
    h.stop().await;
}

// TS: applyEdgeTransform rewrites `target.inputs` and queue-retry mode rewrites
// `config.maxRetries` on the shared blueprint object.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn f14_runs_never_mutate_the_blueprint() {
    let text = r#"{"id":"f14","nodes":[{"id":"a","uses":"count","params":{"output":{"v":3}}},
      {"id":"b","uses":"flaky","params":{"succeedOn":2},"config":{"maxRetries":2}},{"id":"c","uses":"echo"}],
      "edges":[{"source":"a","target":"b","transform":"input.v"},{"source":"b","target":"c"}]}"#;
    let mut h = Harness::new(&[text]);
    h.spawn_workers(2);
    for _ in 0..2 {
        assert_eq!(h.run("f14", json!({})).await.status, RunStatus::Completed);
    }
    let used = h.env.blueprints.get("f14").unwrap();
    assert_eq!(used.definition(), blueprint(text).definition());
    h.stop().await;
}

// TS: in queue-retry mode the error is swallowed and the job acknowledged as a success, so no
// retry ever happens; `retryDelay` is ignored.
#[tokio::test(start_paused = true)]
async fn f15_failed_attempts_are_retried_as_delayed_messages_carrying_the_attempt() {
    let bp = r#"{"id":"f15","nodes":[{"id":"a","uses":"flaky","params":{"succeedOn":2},
      "config":{"maxRetries":2,"retryDelay":5000}}],"edges":[]}"#;
    let h = Harness::new(&[bp]);
    let run_id = h.start("f15", json!({})).await;
    let first = h.take("a").await;
    h.handle(&first).await;
    assert!(
        h.queue
            .receive(1, Duration::from_secs(30))
            .await
            .unwrap()
            .is_empty(),
        "delayed"
    );
    tokio::time::advance(Duration::from_millis(5000)).await;
    let retry = h.take("a").await;
    assert_eq!(JobMessage::decode(&retry.text).unwrap().attempt, Some(2));
    h.handle(&retry).await;
    assert_eq!(h.wait(&run_id).await.status, RunStatus::Completed);
    assert_eq!(h.counter.get("a"), 2);
}

// TS: distributed node executions see executionId '' (webhooks register runId '').
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn f16_nodes_see_the_run_id() {
    let bp = r#"{"id":"f16","nodes":[{"id":"me","uses":"whoami"}],"edges":[]}"#;
    let mut h = Harness::new(&[bp]);
    h.spawn_workers(1);
    let run_id = h.start("f16", json!({})).await;
    let result = h.wait(&run_id).await;
    assert_eq!(result.context["_outputs.me"], json!(run_id));
    assert_eq!(result.context["_executionId"], json!(run_id));
    h.stop().await;
}

// TS: the heartbeat extends coordination keys of the current node, never the queue message's
// visibility, so a job longer than 30 s is redelivered and runs twice.
#[tokio::test(start_paused = true)]
async fn f17_the_lease_is_renewed_while_a_long_node_runs() {
    let bp =
        r#"{"id":"f17","nodes":[{"id":"long","uses":"slow","params":{"ms":300000}}],"edges":[]}"#;
    let mut h = Harness::new(&[bp]);
    h.spawn_workers(3);
    let result = h.run("f17", json!({})).await;
    assert_eq!(result.status, RunStatus::Completed);
    assert_eq!(h.counter.get("long"), 1, "never redelivered while running");
    assert!(h.queue.is_empty());
    h.stop().await;
}

// TS: only `_outputs.X` is written in distributed mode, so conditions and inputs reading the
// bare node id behave differently from in-process.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn f18_outputs_are_written_under_both_keys_and_bare_ids_route() {
    let bp = r#"{"id":"f18","nodes":[{"id":"route","uses":"count","params":{"output":{"total":10}}},
      {"id":"yes","uses":"count","inputs":"route.total"}],
      "edges":[{"source":"route","target":"yes","condition":"route.total"}]}"#;
    let mut h = Harness::new(&[bp]);
    h.spawn_workers(1);
    let result = h.run("f18", json!({})).await;
    assert_eq!(result.context["route"], json!({"total": 10}));
    assert_eq!(result.context["_outputs.route"], json!({"total": 10}));
    assert_eq!(result.context["_outputs.yes"], json!(10));
    h.stop().await;
}

// TS: fallback-only nodes are listed as start nodes (enqueued by clients and reconcile), and the
// fallback runs inline so edges into a join from the fallback's node are never counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn f19_fallback_only_nodes_never_start_and_a_fallback_counts_for_joins() {
    let bp = r#"{"id":"f19","nodes":[{"id":"s","uses":"count"},
      {"id":"a","uses":"fail","params":{"message":"down"},"config":{"fallback":"fb"}},
      {"id":"fb","uses":"count","params":{"output":"rescued"}},{"id":"b","uses":"mark"},
      {"id":"j","uses":"count","config":{"joinStrategy":"all"}}],
      "edges":[{"source":"s","target":"a"},{"source":"s","target":"b"},
        {"source":"a","target":"j"},{"source":"b","target":"j"}]}"#;
    let mut h = Harness::new(&[bp]);
    let run_id = h.start("f19", json!({})).await;
    assert_eq!(
        h.queued_nodes().await,
        ["s"],
        "fallback-only fb is not a start node"
    );
    h.spawn_workers(2);
    let result = h.wait(&run_id).await;
    assert_eq!(result.status, RunStatus::Completed, "{:?}", result.errors);
    assert_eq!((h.counter.get("fb"), h.counter.get("j")), (1, 1));
    // j's input is from whichever predecessor arrived last: the fallback (for a) or b.
    let input = result.context["_inputs.j"].clone();
    assert!(input == json!("rescued") || input == json!("b"), "{input}");
    assert_eq!(result.context["_outputs.fb"], json!("rescued"));
    h.stop().await;
}
