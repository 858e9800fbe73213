//! Operations: cancellation, poison handling, the stalled-run reconciler, idle backoff,
//! graceful shutdown, dropped jobs and the `stalled` end state.

mod distributed_common;

use distributed_common::Harness;
use flowcraft_azure::distributed::job::JobMessage;
use flowcraft_azure::distributed::memory::MemoryQueue;
use flowcraft_azure::distributed::metered::{Meter, MeterSnapshot, MeteredQueue, Operation};
use flowcraft_azure::distributed::ports::{JobQueue, RunPhase, RunStore};
use flowcraft_azure::distributed::reconcile::{Reconciler, ReconcilerConfig};
use flowcraft_azure::distributed::worker::Disposition;
use flowcraft_azure::flow::runtime::{FlowRuntime, RunStatus};
use serde_json::json;
use std::sync::Arc;
use std::time::Duration;

const SLOW_CHAIN: &str = r#"{"id":"slowchain","nodes":[{"id":"a","uses":"slow","params":{"ms":10000}},
  {"id":"b","uses":"count"}],"edges":[{"source":"a","target":"b"}]}"#;

/// A blueprint `id` whose `n` `count` nodes `n0 -> n1 -> ...` form a chain.
fn count_chain(id: &str, n: usize) -> String {
    let nodes: Vec<_> = (0..n)
        .map(|i| json!({"id": format!("n{i}"), "uses": "count"}))
        .collect();
    let edges: Vec<_> = (1..n)
        .map(|i| json!({"source": format!("n{}", i - 1), "target": format!("n{i}")}))
        .collect();
    json!({"id": id, "nodes": nodes, "edges": edges}).to_string()
}

#[tokio::test(start_paused = true)]
async fn cancel_is_sticky_and_drops_the_remaining_jobs() {
    let mut h = Harness::new(&[SLOW_CHAIN]);
    h.spawn_workers(2);
    let run_id = h.start_and_await_first_job("slowchain").await;
    assert!(h.client.cancel(&run_id).await.unwrap());
    assert!(!h.client.cancel(&run_id).await.unwrap(), "already finished");
    tokio::time::sleep(Duration::from_secs(30)).await;
    let result = h.wait(&run_id).await;
    assert_eq!(result.status, RunStatus::Cancelled);
    assert_eq!(h.counter.get("b"), 0);
    assert!(
        !result.context.contains_key("_outputs.a"),
        "the late commit was refused"
    );
    let status = h.runs.status(&run_id).await.unwrap().unwrap().value;
    assert_eq!(status.status, RunPhase::Cancelled);
    h.stop().await;
}

#[tokio::test(start_paused = true)]
async fn undecodable_messages_go_to_the_poison_queue() {
    let h = Harness::new(&[SLOW_CHAIN]);
    h.queue.send("%%% not a job", Duration::ZERO).await.unwrap();
    let m = h.receive_one().await;
    let d = h.worker().handle_message(&m).await;
    let Disposition::Poison(reason) = d else {
        panic!("{d:?}")
    };
    assert!(reason.contains("undecodable"), "{reason}");
}

#[tokio::test(start_paused = true)]
async fn a_message_delivered_too_often_is_poisoned_and_fails_its_run() {
    let mut h = Harness::new(&[SLOW_CHAIN]);
    let run_id = h.start("slowchain", json!({})).await;
    // Five deliveries that "crash" (never settled): the lease simply expires.
    for _ in 0..5 {
        assert_eq!(
            h.queue
                .receive(1, Duration::from_secs(30))
                .await
                .unwrap()
                .len(),
            1
        );
        tokio::time::advance(Duration::from_secs(31)).await;
    }
    h.spawn_workers(1);
    let result = h.wait(&run_id).await;
    assert_eq!(result.status, RunStatus::Failed);
    assert!(
        result.errors[0].message.contains("delivered 6 times"),
        "{:?}",
        result.errors
    );
    let poisoned = h.queue.poisoned();
    assert_eq!(poisoned.len(), 1);
    assert_eq!(poisoned[0].dequeue_count, 6);
    assert_eq!(h.counter.get("a"), 0);
    h.stop().await;
}

/// A job whose run cannot be read may be a lagging read right after the run was created:
/// it is released for a later try (never dropped), and poisoned only once it is still
/// unknown at the delivery limit.
#[tokio::test(start_paused = true)]
async fn jobs_for_unknown_runs_are_retried_then_poisoned_never_dropped() {
    let h = Harness::new(&[SLOW_CHAIN]);
    let job = JobMessage::execute("nope", "slowchain", "a", 1);
    h.queue
        .send(&job.encode().unwrap(), Duration::ZERO)
        .await
        .unwrap();
    let mut events = h.events.subscribe();
    let m = h.receive_one().await;
    assert!(matches!(
        h.worker().handle_message(&m).await,
        Disposition::Release(_)
    ));
    assert!(events.try_recv().is_err(), "neither dropped nor poisoned");
    let last = flowcraft_azure::distributed::ports::QueueMessage {
        dequeue_count: h.config.max_dequeue,
        ..m
    };
    let Disposition::Poison(reason) = h.worker().handle_message(&last).await else {
        panic!("a job still unknown at the delivery limit is poisoned")
    };
    assert!(reason.contains("does not exist"), "{reason}");
}

#[tokio::test(start_paused = true)]
async fn reconciler_pages_stalled_runs_reenqueues_recorded_work_and_respects_the_cooldown() {
    let bp = r#"{"id":"r","nodes":[{"id":"a","uses":"count"},{"id":"b","uses":"count"}],
      "edges":[{"source":"a","target":"b"}]}"#;
    let wait = r#"{"id":"w","nodes":[{"id":"w","uses":"wait"}],"edges":[]}"#;
    let mut h = Harness::new(&[bp, wait]);
    let mut runs = Vec::new();
    for _ in 0..5 {
        runs.push(h.start("r", json!({})).await);
    }
    // Lose every start job (e.g. a crash right after the runs were created).
    while let Some(m) = h
        .queue
        .receive(32, Duration::from_secs(30))
        .await
        .unwrap()
        .pop()
    {
        h.queue.complete(&m.id, &m.receipt).await.unwrap();
    }
    // An awaiting run is never listed.
    h.spawn_workers(1);
    let waiting = h.start("w", json!({})).await;
    assert_eq!(h.wait(&waiting).await.status, RunStatus::Awaiting);
    let reconciler = Reconciler::new(
        h.client.clone(),
        h.backends.clone(),
        ReconcilerConfig {
            page_size: 2,
            ..ReconcilerConfig::default()
        },
    );
    let future = chrono::Utc::now().timestamp() + 10;
    let stats = reconciler.run_once_before(future).await.unwrap();
    assert_eq!(
        (stats.stalled_runs, stats.reconciled_runs, stats.failed_runs),
        (5, 5, 0)
    );
    for run in &runs {
        assert_eq!(h.wait(run).await.status, RunStatus::Completed);
    }
    assert_eq!(h.counter.get("b"), 5);
    // Completed runs are no longer listed; an immediate second pass is a no-op.
    let again = reconciler.run_once_before(future).await.unwrap();
    assert_eq!(again.stalled_runs, 0);
    h.stop().await;
}

#[tokio::test(start_paused = true)]
async fn reconciler_cooldown_skips_a_run_reconciled_recently() {
    let bp = r#"{"id":"r","nodes":[{"id":"a","uses":"count"}],"edges":[]}"#;
    let h = Harness::new(&[bp]);
    h.start("r", json!({})).await;
    let reconciler = Reconciler::new(
        h.client.clone(),
        h.backends.clone(),
        ReconcilerConfig::default(),
    );
    let future = chrono::Utc::now().timestamp() + 10;
    let first = reconciler.run_once_before(future).await.unwrap();
    assert_eq!(first.reconciled_runs, 1);
    let second = reconciler.run_once_before(future).await.unwrap();
    assert_eq!((second.stalled_runs, second.skipped_runs), (1, 1));
    assert_eq!(
        h.queue.len(),
        2,
        "the original start job and one reconciled copy"
    );
}

#[tokio::test(start_paused = true)]
async fn idle_workers_back_off_to_at_most_two_receives_per_second() {
    let mut h = Harness::new(&[SLOW_CHAIN]);
    h.spawn_workers(1);
    tokio::time::sleep(Duration::from_secs(10)).await;
    let warm = h.queue.receive_calls();
    tokio::time::sleep(Duration::from_secs(100)).await;
    let idle = h.queue.receive_calls() - warm;
    assert!(idle <= 200, "{idle} receives in 100 s");
    assert!(idle >= 50, "still polling: {idle}");
    h.stop().await;
}

/// A harness whose queue calls are counted by the returned meter, with an idle backoff so
/// long (10 s to 60 s) that any wait for a backoff pause shows in the virtual clock.
fn metered_harness_with_long_backoff(blueprint: &str) -> (Harness, Arc<Meter>) {
    let meter = Meter::new();
    let wrap_meter = meter.clone();
    let wrap = move |queue: Arc<MemoryQueue>| -> Arc<dyn JobQueue> {
        Arc::new(MeteredQueue::new(queue, wrap_meter.clone()))
    };
    let mut h = Harness::with_queue(&[blueprint], Some(&wrap));
    h.config.idle_backoff_min = Duration::from_secs(10);
    h.config.idle_backoff_max = Duration::from_secs(60);
    (h, meter)
}

/// Runs `blueprint` to completion with one worker on [`metered_harness_with_long_backoff`]
/// and checks what such a run must show: no backoff pause was waited out (the clock is
/// paused, so virtual time is deterministic; `what` names what would have waited), each of
/// its `nodes` nodes ran once from at most one received message (a successor the worker
/// runs itself after committing its predecessor is not received at all), and fewer than 0.2
/// receives per node came back empty. Returns the harness and the meter's counts.
async fn run_alone_without_pauses(
    blueprint: &str,
    nodes: u64,
    what: &str,
) -> (Harness, MeterSnapshot) {
    let id = distributed_common::blueprint(blueprint).id().to_string();
    let (mut h, meter) = metered_harness_with_long_backoff(blueprint);
    let run_id = h.start(&id, json!({})).await;
    let started = tokio::time::Instant::now();
    h.spawn_workers(1);
    assert_eq!(h.wait(&run_id).await.status, RunStatus::Completed);
    assert!(
        started.elapsed() < h.config.idle_backoff_min / 2,
        "the {what} waited for a backoff pause: {:?}",
        started.elapsed()
    );
    let counts = meter.snapshot();
    let executed = u64::from(h.counter.total());
    assert_eq!(executed, nodes, "every node ran once");
    assert!(
        counts.received_messages() <= executed,
        "at most one received message per node"
    );
    let empty = counts.empty_receives();
    assert!(
        empty * 5 < executed,
        "{empty} empty receives for {executed} nodes (at most 0.2 per node allowed)"
    );
    (h, counts)
}

/// A 10-node chain with one worker: each node is received right after its predecessor's job
/// finished (the finishing job enqueued it), not by a receive that comes back empty before
/// the successor exists, and not after a backoff pause either (the backoff is long here).
#[tokio::test(start_paused = true)]
async fn a_single_worker_chain_receives_each_node_once_without_empty_polls() {
    let (h, counts) = run_alone_without_pauses(&count_chain("polls", 10), 10, "chain").await;
    let executed = u64::from(h.counter.total());
    assert!(
        counts.calls(Operation::QueueReceive) <= executed + 1,
        "{} receives for {executed} nodes",
        counts.calls(Operation::QueueReceive)
    );
    h.stop().await;
}

/// When a worker's last job in flight finishes (enqueueing nothing: the run is over), the
/// worker has just become idle: it receives once at once and restarts its backoff from
/// `idle_backoff_min`, so the next run is picked up within that short pause, not after the
/// long pause that grew while the chain ran (here 30 to 60 s).
#[tokio::test(start_paused = true)]
async fn a_worker_whose_last_job_finished_picks_up_the_next_run_within_the_minimum_backoff() {
    let bp = count_chain("idle", 10);
    let (mut h, _meter) = metered_harness_with_long_backoff(&bp);
    h.spawn_workers(1);
    let first = h.start("idle", json!({})).await;
    assert_eq!(h.wait(&first).await.status, RunStatus::Completed);
    let finished = tokio::time::Instant::now();
    let second = h.start("idle", json!({})).await;
    assert_eq!(h.wait(&second).await.status, RunStatus::Completed);
    // Paused (virtual) clock: the chains themselves take no time, only pauses do.
    assert!(
        finished.elapsed() <= h.config.idle_backoff_min + Duration::from_secs(1),
        "the next run waited {:?}: longer than one minimum backoff pause",
        finished.elapsed()
    );
    h.stop().await;
}

/// A 16-way fan-out into an `all` join with one worker: the 15 branch jobs that do not
/// complete the join enqueue nothing, so their completions do not make the worker receive
/// again (that receive would come back empty); the branch that completes the join enqueues
/// it, and the worker receives it at once (no backoff pause). The branches take 1 to 16 ms,
/// so they finish one by one.
#[tokio::test(start_paused = true)]
async fn a_single_worker_fan_out_receives_again_only_when_a_finished_job_enqueued_work() {
    const FAN: usize = 16;
    let mut nodes = vec![json!({"id": "start", "uses": "count"})];
    let mut edges = Vec::new();
    for k in 0..FAN {
        let id = format!("b{k}");
        nodes.push(json!({"id": id, "uses": "slow", "params": {"ms": k + 1}}));
        edges.push(json!({"source": "start", "target": id}));
        edges.push(json!({"source": id, "target": "join"}));
    }
    nodes.push(json!({"id": "join", "uses": "count", "config": {"joinStrategy": "all"}}));
    let bp = json!({"id": "fan", "nodes": nodes, "edges": edges}).to_string();
    let (h, _) = run_alone_without_pauses(&bp, FAN as u64 + 2, "join").await;
    h.stop().await;
}

/// `handle_message_reporting` says whether the job sent work receivable at once: a
/// successor or an immediate retry yes; a delayed retry, or a last node (nothing to send), no.
#[tokio::test(start_paused = true)]
async fn a_job_reports_whether_it_sent_work_receivable_at_once() {
    let bp = r#"{"id":"report","nodes":[
        {"id":"a","uses":"flaky","params":{"succeedOn":2},"config":{"maxRetries":2}},
        {"id":"b","uses":"flaky","params":{"succeedOn":2},"config":{"maxRetries":2,"retryDelay":1000}},
        {"id":"c","uses":"count"}],
      "edges":[{"source":"a","target":"b"},{"source":"b","target":"c"}]}"#;
    let h = Harness::new(&[bp]);
    let run_id = h.start("report", json!({})).await;
    let worker = h.worker();
    let handle_next = async |expected_node: &str| {
        let m = h.receive_one().await;
        assert_eq!(JobMessage::decode(&m.text).unwrap().node_id, expected_node);
        let handled = worker.handle_message_reporting(&m).await;
        assert_eq!(handled.disposition, Disposition::Complete);
        h.queue.complete(&m.id, &m.receipt).await.unwrap();
        handled.enqueued_now
    };
    assert!(handle_next("a").await, "a's retry without delay");
    assert!(handle_next("a").await, "a's successor b");
    assert!(!handle_next("b").await, "b's retry is delayed by 1 s");
    assert!(
        h.queue
            .receive(32, Duration::from_secs(30))
            .await
            .unwrap()
            .is_empty(),
        "nothing is receivable before the retry delay"
    );
    tokio::time::advance(Duration::from_millis(1001)).await;
    assert!(handle_next("b").await, "b's successor c");
    assert!(!handle_next("c").await, "the last node sends nothing");
    assert_eq!(h.wait(&run_id).await.status, RunStatus::Completed);
}

/// While its own job runs (and the queue looked drained), a worker still picks up work that
/// someone else enqueued within one idle backoff pause (at most `idle_backoff_max`), and
/// polls at the backoff rate meanwhile, not in a loop.
#[tokio::test(start_paused = true)]
async fn a_busy_worker_picks_up_work_from_others_within_the_idle_backoff() {
    let fast = r#"{"id":"fast","nodes":[{"id":"f","uses":"count"}],"edges":[]}"#;
    let mut h = Harness::new(&[SLOW_CHAIN, fast]);
    h.spawn_workers(1);
    let slow_run = h.start_and_await_first_job("slowchain").await;
    let before = h.queue.receive_calls();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let busy_polls = h.queue.receive_calls() - before;
    assert!(busy_polls < 20, "{busy_polls} receives in 3 s while busy");
    assert!(
        busy_polls >= 2,
        "the busy worker stopped polling: {busy_polls}"
    );
    // Another producer enqueues work while the slow node (10 s) is still running.
    let fast_run = h.start("fast", json!({})).await;
    tokio::time::sleep(h.config.idle_backoff_max + Duration::from_millis(1)).await;
    assert_eq!(h.counter.get("f"), 1, "picked up within one backoff pause");
    assert_eq!(h.counter.get("b"), 0, "the slow node is still running");
    assert_eq!(h.wait(&fast_run).await.status, RunStatus::Completed);
    assert_eq!(h.wait(&slow_run).await.status, RunStatus::Completed);
    h.stop().await;
}

#[tokio::test(start_paused = true)]
async fn shutdown_stops_receiving_and_finishes_the_job_in_flight() {
    let mut h = Harness::new(&[SLOW_CHAIN]);
    h.spawn_workers(1);
    let run_id = h.start_and_await_first_job("slowchain").await;
    let runs = h.runs.clone();
    let queue = h.queue.clone();
    h.stop().await;
    let state = runs.load(&run_id).await.unwrap().unwrap().value;
    assert!(
        state.context.contains_key("_outputs.a"),
        "in-flight job committed"
    );
    assert_eq!(queue.texts().len(), 1, "b is queued for the next worker");
}

/// A job still running when the shutdown grace period ends is stopped and its message
/// released at once (not left leased, and not renewed forever), so another worker takes it.
#[tokio::test(start_paused = true)]
async fn shutdown_releases_a_job_still_running_after_the_grace_period() {
    let bp =
        r#"{"id":"veryslow","nodes":[{"id":"a","uses":"slow","params":{"ms":600000}}],"edges":[]}"#;
    let mut h = Harness::new(&[bp]);
    h.config.shutdown_grace = Duration::from_secs(5);
    h.spawn_workers(1);
    let run_id = h.start_and_await_first_job("veryslow").await;
    let (runs, queue, counter) = (h.runs.clone(), h.queue.clone(), h.counter.clone());
    h.stop().await;
    let state = runs.load(&run_id).await.unwrap().unwrap().value;
    assert!(!state.context.contains_key("_outputs.a"));
    assert_eq!(state.book.status, RunPhase::Running);
    let again = queue.receive(32, Duration::from_secs(30)).await.unwrap();
    assert_eq!(
        again.len(),
        1,
        "released at once, visible to the next worker"
    );
    assert_eq!(JobMessage::decode(&again[0].text).unwrap().node_id, "a");
    assert_eq!(again[0].dequeue_count, 2);
    assert_eq!(counter.get("a"), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_join_whose_other_branch_was_not_taken_ends_stalled_like_in_process() {
    let bp = r#"{"id":"st","nodes":[{"id":"a","uses":"count","params":{"output":{"go":false}}},
      {"id":"b","uses":"count"},{"id":"c","uses":"count"},{"id":"j","uses":"count"}],
      "edges":[{"source":"a","target":"b","condition":"a.go"},{"source":"a","target":"c"},
        {"source":"b","target":"j"},{"source":"c","target":"j"}]}"#;
    let mut h = Harness::new(&[bp]);
    h.spawn_workers(2);
    let run_id = h.start("st", json!({})).await;
    let result = h.wait(&run_id).await;
    assert_eq!(result.status, RunStatus::Stalled);
    assert_eq!(h.counter.get("j"), 0);
    let local = FlowRuntime::new(h.env.clone())
        .run(
            Arc::clone(&h.env.blueprints.get("st").unwrap()),
            Default::default(),
        )
        .await;
    assert_eq!(local.status, RunStatus::Stalled);
    let status = h.runs.status(&run_id).await.unwrap().unwrap().value;
    assert_eq!(status.status, RunPhase::Stalled);
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_empty_blueprint_completes_at_once() {
    let h = Harness::new(&[r#"{"id":"empty","nodes":[],"edges":[]}"#]);
    let run_id = h.start("empty", json!({"x": 1})).await;
    let result = h.wait(&run_id).await;
    assert_eq!(result.status, RunStatus::Completed);
    assert_eq!(result.context["x"], json!(1));
    let status = h.runs.status(&run_id).await.unwrap().unwrap().value;
    assert_eq!(status.status, RunPhase::Completed);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endless_loop_hits_the_iteration_guard_and_keeps_the_document_small() {
    let bp = r#"{"id":"endless","nodes":[{"id":"t","uses":"tick","params":{"until":1000000000}},
      {"id":"c","uses":"loop-controller","params":{"condition":"more"},"config":{"joinStrategy":"any"}},
      {"id":"out","uses":"count"}],
      "edges":[{"source":"t","target":"c"},{"source":"c","target":"t","action":"continue"},
        {"source":"c","target":"out","action":"break"}]}"#;
    let mut h = Harness::new(&[bp]);
    h.spawn_workers(2);
    let run_id = h.start("endless", json!({})).await;
    let result = h.wait(&run_id).await;
    assert_eq!(result.status, RunStatus::Failed);
    assert!(
        result.errors[0].message.contains("maximum iterations"),
        "{:?}",
        result.errors
    );
    assert_eq!(h.counter.get("out"), 0);
    let state = h.runs.load(&run_id).await.unwrap().unwrap().value;
    assert!(
        state.book.commits.len() < 10,
        "old iterations' records are pruned: {}",
        state.book.commits.len()
    );
    h.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_long_node_keeps_its_runs_status_fresh_for_the_reconciler() {
    let bp =
        r#"{"id":"long","nodes":[{"id":"a","uses":"slow","params":{"ms":600000}}],"edges":[]}"#;
    let mut h = Harness::new(&[bp]);
    h.spawn_workers(1);
    let run_id = h.start_and_await_first_job("long").await;
    let before = h.runs.status(&run_id).await.unwrap().unwrap().etag;
    tokio::time::sleep(Duration::from_secs(150)).await;
    let during = h.runs.status(&run_id).await.unwrap().unwrap();
    assert_ne!(
        during.etag, before,
        "the status item was refreshed while the node ran"
    );
    assert_eq!(during.value.status, RunPhase::Running);
    assert_eq!(h.wait(&run_id).await.status, RunStatus::Completed);
    h.stop().await;
}

/// DESIGN budget: at most 4 requests per node of a linear chain (state read, commit, message
/// delete, successor enqueue), status writes amortised (here: only the final one). Handling
/// the messages one by one (as a serverless host does), the worker reads the run once: each
/// next job was scheduled by its own last commit, whose state it remembers.
#[tokio::test(start_paused = true)]
async fn a_chain_node_costs_one_state_read_one_commit_and_one_enqueue() {
    let bp = count_chain("budget", 10);
    let h = Harness::new(&[&bp]);
    let run_id = h.start("budget", json!({})).await;
    let worker = h.worker();
    let (loads, commits, sends, status_writes) = (
        h.runs.loads(),
        h.runs.commits(),
        h.queue.sends(),
        h.runs.status_writes(),
    );
    let mut jobs = 0;
    while let Some(m) = h
        .queue
        .receive(1, Duration::from_secs(30))
        .await
        .unwrap()
        .pop()
    {
        assert_eq!(worker.handle_message(&m).await, Disposition::Complete);
        h.queue.complete(&m.id, &m.receipt).await.unwrap();
        jobs += 1;
    }
    assert_eq!(jobs, 10);
    assert_eq!(
        h.runs.loads() - loads,
        1,
        "one state read: the worker remembers what it committed"
    );
    assert_eq!(h.runs.commits() - commits, 10, "one commit per job");
    assert_eq!(h.queue.sends() - sends, 9, "one enqueue per successor");
    assert_eq!(
        h.runs.status_writes() - status_writes,
        1,
        "only the final status"
    );
    assert_eq!(h.wait(&run_id).await.status, RunStatus::Completed);
}

/// A node whose output would grow the run document past the store's 2 MB item limit fails
/// the run at once with a reason saying so, and its message is poisoned with that reason:
/// the job is not retried like a transient conflict (which would re-run the node on every
/// delivery until the poison limit).
#[tokio::test(start_paused = true)]
async fn a_commit_larger_than_the_store_allows_fails_the_run_at_once_without_retrying() {
    let huge = "x".repeat(1_200_000); // stored twice (`_outputs.a` and `a`): > 2 MB
    let bp = json!({"id": "huge", "nodes": [
        {"id": "a", "uses": "count", "params": {"output": huge}},
        {"id": "b", "uses": "count"}],
      "edges": [{"source": "a", "target": "b"}]})
    .to_string();
    let h = Harness::new(&[&bp]);
    let run_id = h.start("huge", json!({})).await;
    let m = h.receive_one().await;
    let Disposition::Poison(reason) = h.worker().handle_message(&m).await else {
        panic!("the job is poisoned on its first delivery")
    };
    h.queue.move_to_poison(&m, &reason).await.unwrap();
    assert_eq!(h.counter.get("a"), 1);
    let result = h.client.status(&run_id).await.unwrap().unwrap();
    assert_eq!(result.status, RunStatus::Failed);
    assert_eq!(result.errors.len(), 1, "{:?}", result.errors);
    assert_eq!(result.errors[0].node_id, "a");
    assert_eq!(result.errors[0].message, reason);
    assert!(reason.contains("too large"), "{reason}");
    let status = h.runs.status(&run_id).await.unwrap().unwrap().value;
    assert_eq!(status.status, RunPhase::Failed);
    tokio::time::advance(Duration::from_secs(3600)).await;
    assert!(
        h.queue
            .receive(32, Duration::from_secs(30))
            .await
            .unwrap()
            .is_empty(),
        "nothing is retried or enqueued"
    );
    assert_eq!(h.counter.get("b"), 0);
}

/// The iteration guard counts executions of ONE node (as in-process), not all activations of
/// the run: a loop of a body node and its controller runs 5100 iterations (10200 activations,
/// more than `MAX_ITERATIONS`) and completes, in both modes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_iteration_guard_counts_per_node_like_in_process() {
    let bp = r#"{"id":"long-loop","nodes":[{"id":"t","uses":"tick","params":{"until":5100}},
      {"id":"c","uses":"loop-controller","params":{"condition":"more"},"config":{"joinStrategy":"any"}},
      {"id":"out","uses":"count"}],
      "edges":[{"source":"t","target":"c"},{"source":"c","target":"t","action":"continue"},
        {"source":"c","target":"out","action":"break"}]}"#;
    let mut h = Harness::new(&[bp]);
    let local = FlowRuntime::new(h.env.clone())
        .run(
            h.env.blueprints.get("long-loop").unwrap(),
            Default::default(),
        )
        .await;
    assert_eq!(local.status, RunStatus::Completed, "{:?}", local.errors);
    h.spawn_workers(2);
    let result = h.run("long-loop", json!({})).await;
    assert_eq!(result.status, RunStatus::Completed, "{:?}", result.errors);
    assert_eq!(h.counter.get("out"), 2, "once per mode");
    h.stop().await;
}

/// SIGTERM (what a container runtime sends) fires the worker's shutdown token.
#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_fires_the_shutdown_token() {
    let token = flowcraft_azure::distributed::polling::shutdown_on_signals().unwrap();
    assert!(!token.is_cancelled());
    let status = std::process::Command::new("kill")
        .args(["-TERM", &std::process::id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    tokio::time::timeout(Duration::from_secs(60), token.cancelled())
        .await
        .expect("the token fired");
}

const CHAIN: &str = r#"{"id":"chain","nodes":[{"id":"a","uses":"count"},{"id":"b","uses":"count"}],
  "edges":[{"source":"a","target":"b"}]}"#;

fn arbitrary_job() -> impl proptest::strategy::Strategy<Value = (JobMessage, u32)> {
    use proptest::prelude::*;
    let kind = prop_oneof![
        Just(flowcraft_azure::distributed::job::JobKind::Execute),
        Just(flowcraft_azure::distributed::job::JobKind::Wake),
        Just(flowcraft_azure::distributed::job::JobKind::Resume),
    ];
    (
        prop_oneof![Just("RUN"), Just("nope"), Just("x:y")],
        prop_oneof![Just("chain"), Just("other")],
        prop_oneof![Just("a"), Just("b"), Just("zz"), Just("")],
        proptest::option::of(any::<u32>()),
        proptest::option::of(prop_oneof![0u64..4, any::<u64>()]),
        kind,
        proptest::option::of(any::<u64>()),
        proptest::option::of(any::<u64>()),
        1u32..5,
    )
        .prop_map(
            |(run, bp, node, attempt, activation, kind, remaining, seq, dequeue)| {
                let mut job = JobMessage::execute(run, bp, node, 0);
                job.activation = activation;
                job.attempt = attempt;
                job.kind = kind;
                job.remaining_ms = remaining;
                job.resume_seq = seq;
                (job, dequeue)
            },
        )
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(48))]
    /// Arbitrary (well-formed but wrong, stale, foreign or extreme) job messages never panic a
    /// worker and never break a run: afterwards the run completes with each node run once,
    /// unless a job for it named another blueprint (a malformed job fails its run).
    #[test]
    fn arbitrary_job_messages_never_panic_or_break_a_run(
        jobs in proptest::collection::vec(arbitrary_job(), 1..8),
    ) {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .start_paused(true)
            .build()
            .unwrap();
        runtime.block_on(async move {
            let mut h = Harness::new(&[CHAIN]);
            let run_id = h.start("chain", json!({})).await;
            let worker = h.worker();
            // A job for this run naming another blueprint is malformed: it fails the run.
            let foreign = jobs
                .iter()
                .any(|(job, _)| job.run_id == "RUN" && job.blueprint_id != "chain");
            for (i, (mut job, dequeue_count)) in jobs.into_iter().enumerate() {
                if job.run_id == "RUN" {
                    job.run_id = run_id.clone();
                }
                let message = flowcraft_azure::distributed::ports::QueueMessage {
                    id: format!("m{i}"),
                    receipt: "r".into(),
                    text: job.encode().unwrap(),
                    dequeue_count,
                };
                let _ = worker.handle_message(&message).await;
            }
            h.spawn_workers(1);
            let result = h.wait(&run_id).await;
            // (A foreign job that arrives after the run finished, or whose delay is still
            // running, leaves the run alone.)
            if result.status == RunStatus::Failed {
                assert!(foreign);
                assert!(result.errors[0].message.contains("blueprint 'other'"), "{:?}", result.errors);
                assert!(h.counter.get("a") <= 1 && h.counter.get("b") <= 1);
            } else {
                assert_eq!(result.status, RunStatus::Completed, "{:?}", result.errors);
                assert_eq!((h.counter.get("a"), h.counter.get("b")), (1, 1));
            }
            h.stop().await;
        });
    }
}

/// `wait_for` with a timeout too long to represent waits for good instead of panicking.
#[tokio::test(start_paused = true)]
async fn wait_for_accepts_a_timeout_too_long_to_represent() {
    let mut h = Harness::new(&[CHAIN]);
    h.spawn_workers(1);
    let run_id = h.start("chain", json!({})).await;
    let result = h.client.wait_for(&run_id, Duration::MAX).await.unwrap();
    assert_eq!(result.status, RunStatus::Completed);
    h.stop().await;
}

#[tokio::test(start_paused = true)]
async fn waiting_for_a_run_polls_its_status_item_and_reads_the_document_rarely() {
    let bp = r#"{"id":"long","nodes":[{"id":"a","uses":"slow","params":{"ms":60000}}]}"#;
    let mut h = Harness::new(&[bp]);
    let run_id = h.start("long", json!({})).await;
    h.spawn_workers(1);
    let meter = Meter::new();
    let client = flowcraft_azure::distributed::client::Client::new(
        meter.wrap(&h.backends),
        h.env.blueprints.clone(),
    );
    let result = client
        .wait_for(&run_id, Duration::from_secs(600))
        .await
        .unwrap();
    assert_eq!(result.status, RunStatus::Completed);
    let s = meter.snapshot();
    // About 300 polls in 60 s: each reads the small status item; the run document (which
    // can be megabytes) is read every 10 s and once the status item says the run stopped.
    assert!(s.calls(Operation::RunsStatus) >= 250, "{s:?}");
    assert!(s.calls(Operation::RunsLoad) <= 8, "{s:?}");
    h.stop().await;
}
