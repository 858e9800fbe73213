//! At-least-once delivery: the same job run twice, a crash between the commit and the
//! enqueue of successors, duplicated messages and lost acknowledgements at random points all
//! end in the same final state as a clean run, with every join firing once.

mod distributed_common;

use async_trait::async_trait;
use distributed_common::{Harness, user_context};
use flowcraft_azure::Error;
use flowcraft_azure::distributed::events::Event;
use flowcraft_azure::distributed::job::JobMessage;
use flowcraft_azure::distributed::memory::MemoryQueue;
use flowcraft_azure::distributed::ports::{JobQueue, QueueMessage};
use flowcraft_azure::distributed::worker::Disposition;
use flowcraft_azure::flow::runtime::{RunStatus, WorkflowResult};
use serde_json::{Value, json};
use std::sync::{Arc, Mutex};
use std::time::Duration;

const DIAMOND: &str = r#"{"id":"diamond","nodes":[
  {"id":"a","uses":"count","params":{"output":1,"action":"go"}},
  {"id":"b1","uses":"mark"},{"id":"b2","uses":"mark"},{"id":"b3","uses":"mark"},
  {"id":"never","uses":"mark"},
  {"id":"j","uses":"count","params":{"output":"joined"}},
  {"id":"k","uses":"count","params":{"output":"first"},"config":{"joinStrategy":"any"}},
  {"id":"end","uses":"count"}],
  "edges":[
    {"source":"a","target":"b1","action":"go"},{"source":"a","target":"b2","action":"go"},
    {"source":"a","target":"b3","action":"go"},{"source":"a","target":"never","action":"stop"},
    {"source":"b1","target":"j"},{"source":"b2","target":"j"},{"source":"b3","target":"j"},
    {"source":"b1","target":"k"},{"source":"b2","target":"k"},
    {"source":"j","target":"end"},{"source":"k","target":"end"}]}"#;

/// Fault injection around the memory queue.
struct Chaos {
    inner: Arc<MemoryQueue>,
    rng: Mutex<fastrand::Rng>,
    fail_send: f64,
    duplicate_send: bool,
    lose_ack: f64,
    /// Fail the first send of a job for this node (a crash between commit and enqueue).
    fail_first_send_of: Option<String>,
    failed_once: Mutex<bool>,
}

impl Chaos {
    fn new(inner: Arc<MemoryQueue>, seed: u64) -> Self {
        Chaos {
            inner,
            rng: Mutex::new(fastrand::Rng::with_seed(seed)),
            fail_send: 0.0,
            duplicate_send: false,
            lose_ack: 0.0,
            fail_first_send_of: None,
            failed_once: Mutex::new(false),
        }
    }

    fn roll(&self, p: f64) -> bool {
        p > 0.0 && self.rng.lock().unwrap().f64() < p
    }
}

#[async_trait]
impl JobQueue for Chaos {
    async fn send(&self, text: &str, delay: Duration) -> Result<(), Error> {
        if let Some(node) = &self.fail_first_send_of {
            let job = JobMessage::decode(text)?;
            let mut failed = self.failed_once.lock().unwrap();
            if job.node_id == *node && !*failed {
                *failed = true;
                // Not a transient error (those are retried in place): the job stops here,
                // as if its worker crashed between the commit and the enqueue.
                return Err(Error::unexpected("injected crash before enqueue"));
            }
        }
        if self.roll(self.fail_send) {
            return Err(Error::transport("injected send failure"));
        }
        self.inner.send(text, delay).await?;
        if self.duplicate_send {
            self.inner.send(text, delay).await?;
        }
        Ok(())
    }
    async fn receive(&self, max: usize, visibility: Duration) -> Result<Vec<QueueMessage>, Error> {
        self.inner.receive(max, visibility).await
    }
    async fn renew(&self, id: &str, receipt: &str, v: Duration) -> Result<String, Error> {
        self.inner.renew(id, receipt, v).await
    }
    async fn complete(&self, id: &str, receipt: &str) -> Result<(), Error> {
        if self.roll(self.lose_ack) {
            // The worker "crashed" after processing: the message comes back after its lease.
            return Ok(());
        }
        self.inner.complete(id, receipt).await
    }
    async fn release(&self, id: &str, receipt: &str, delay: Duration) -> Result<(), Error> {
        self.inner.release(id, receipt, delay).await
    }
    async fn move_to_poison(&self, m: &QueueMessage, reason: &str) -> Result<(), Error> {
        self.inner.move_to_poison(m, reason).await
    }
}

async fn clean_run() -> WorkflowResult {
    let mut h = Harness::new(&[DIAMOND]);
    h.spawn_workers(2);
    let result = h.run("diamond", json!({"seed": 1})).await;
    h.stop().await;
    result
}

/// The final context minus `_inputs.k` and `_inputs.j`: `k` is an `any` join and `j` an
/// `all` join of parallel branches, and which of their predecessors writes the input last
/// depends on timing in every run (spec 2.1: last writer wins; a worker runs the branches
/// its commit fired concurrently, in no fixed order).
/// Likewise `end` (joining `j` and `k`) outputs whichever of the two committed last: checked
/// to be one of them, then left out.
fn comparable(result: &WorkflowResult) -> serde_json::Map<String, Value> {
    let mut ctx = user_context(result);
    ctx.remove("_inputs.k");
    ctx.remove("_inputs.j");
    if let Some(end) = ctx.get("end") {
        assert!(
            [ctx.get("j"), ctx.get("k")].contains(&Some(end)),
            "end's input {end} is neither j's nor k's output"
        );
        assert_eq!(ctx.get("_inputs.end"), Some(end));
        assert_eq!(ctx.get("_outputs.end"), Some(end));
    }
    for key in ["end", "_inputs.end", "_outputs.end"] {
        ctx.remove(key);
    }
    ctx
}

fn assert_same_final_state(clean: &WorkflowResult, other: &WorkflowResult) {
    assert_eq!(other.status, clean.status, "{:?}", other.errors);
    assert_eq!(comparable(other), comparable(clean));
    assert_eq!(other.errors, clean.errors);
}

async fn committed_once(h: &Harness, run_id: &str, node: &str) -> usize {
    let state = h.client.status(run_id).await.unwrap().unwrap();
    assert!(state.context.contains_key(&format!("_outputs.{node}")));
    let stored = flowcraft_azure::distributed::ports::RunStore::load(h.runs.as_ref(), run_id)
        .await
        .unwrap()
        .unwrap()
        .value;
    stored
        .book
        .commits
        .values()
        .filter(|r| r.node == node)
        .count()
}

#[tokio::test(start_paused = true)]
async fn the_same_job_handled_twice_executes_once_and_replays_follow_ups() {
    let h = Harness::new(&[DIAMOND]);
    let worker = h.worker();
    let run_id = h.start("diamond", json!({"seed": 1})).await;
    let first = h.receive_one().await;
    assert_eq!(worker.handle_message(&first).await, Disposition::Complete);
    let enqueued = h.queue.len();
    assert_eq!(worker.handle_message(&first).await, Disposition::Complete);
    assert_eq!(
        h.counter.get("a"),
        1,
        "the second delivery must replay, not re-run"
    );
    // The replay re-sent the same three successor jobs (idempotent follow-ups).
    assert_eq!(h.queue.len(), enqueued + 3);
    h.queue.complete(&first.id, &first.receipt).await.unwrap();
    // Drain everything by hand, handling every message twice.
    loop {
        let batch = h.queue.receive(32, Duration::from_secs(30)).await.unwrap();
        if batch.is_empty() {
            break;
        }
        for m in batch {
            assert_eq!(worker.handle_message(&m).await, Disposition::Complete);
            assert_eq!(worker.handle_message(&m).await, Disposition::Complete);
            h.queue.complete(&m.id, &m.receipt).await.unwrap();
        }
    }
    let result = h.wait(&run_id).await;
    assert_same_final_state(&clean_run().await, &result);
    for node in ["a", "b1", "j", "k", "end"] {
        assert_eq!(committed_once(&h, &run_id, node).await, 1, "{node}");
    }
    assert_eq!(h.counter.get("j"), 1);
    assert_eq!(h.counter.get("end"), 1);
}

#[tokio::test(start_paused = true)]
async fn a_crash_between_commit_and_enqueue_is_repaired_by_redelivery() {
    let mut h = Harness::with_queue(
        &[DIAMOND],
        Some(&|q| {
            let mut chaos = Chaos::new(q, 1);
            chaos.fail_first_send_of = Some("j".into());
            Arc::new(chaos) as Arc<dyn JobQueue>
        }),
    );
    let mut events = h.events.subscribe();
    h.spawn_workers(2);
    let run_id = h.start("diamond", json!({"seed": 1})).await;
    let result = h.wait(&run_id).await;
    assert_same_final_state(&clean_run().await, &result);
    assert_eq!(h.counter.get("j"), 1);
    assert_eq!(committed_once(&h, &run_id, "j").await, 1);
    let mut replays = 0;
    while let Ok(e) = events.try_recv() {
        if matches!(e, Event::JobReplayed { .. }) {
            replays += 1;
        }
    }
    assert!(replays >= 1, "the redelivered job must replay its commit");
    h.stop().await;
}

#[tokio::test(start_paused = true)]
async fn duplicated_messages_end_in_the_same_state() {
    let mut h = Harness::with_queue(
        &[DIAMOND],
        Some(&|q| {
            let mut chaos = Chaos::new(q, 2);
            chaos.duplicate_send = true;
            Arc::new(chaos) as Arc<dyn JobQueue>
        }),
    );
    h.spawn_workers(3);
    let run_id = h.start("diamond", json!({"seed": 1})).await;
    let result = h.wait(&run_id).await;
    assert_same_final_state(&clean_run().await, &result);
    for node in ["a", "b2", "j", "k", "end"] {
        assert_eq!(committed_once(&h, &run_id, node).await, 1, "{node}");
    }
    h.stop().await;
}

#[tokio::test(start_paused = true)]
async fn random_send_failures_and_lost_acks_end_in_the_same_state() {
    let clean = clean_run().await;
    for seed in 0..8 {
        let mut h = Harness::with_queue(
            &[DIAMOND],
            Some(&|q| {
                let mut chaos = Chaos::new(q, seed);
                chaos.fail_send = 0.15;
                chaos.lose_ack = 0.3;
                chaos.duplicate_send = seed % 2 == 0;
                Arc::new(chaos) as Arc<dyn JobQueue>
            }),
        );
        h.config.max_dequeue = 100;
        h.spawn_workers(3);
        let run_id = loop {
            // start_run itself may hit an injected send failure: the run then waits for the
            // reconciler; here we simply start another one.
            let Value::Object(initial) = json!({"seed": 1}) else {
                unreachable!()
            };
            match h.client.start_run("diamond", initial).await {
                Ok(id) => {
                    // Reconciling a healthy run only adds duplicate jobs: harmless.
                    let _ = h.client.reconcile(&id).await;
                    break id;
                }
                Err(_) => continue,
            }
        };
        let result = loop {
            let r = h.wait(&run_id).await;
            if r.status != RunStatus::Running {
                break r;
            }
        };
        assert_same_final_state(&clean, &result);
        for node in ["j", "k", "end"] {
            assert_eq!(
                committed_once(&h, &run_id, node).await,
                1,
                "seed {seed} {node}"
            );
        }
        h.stop().await;
    }
}
