//! What the real services do that the in-memory ports do not (lost answers after the effect,
//! lagging reads, lapsing leases, passing network trouble, rolling deploys), one crash point
//! at a time: each test pins down one way the distributed core survives it.

mod distributed_common;

use async_trait::async_trait;
use distributed_common::Harness;
use flowcraft_azure::Error;
use flowcraft_azure::distributed::job::{JobKind, JobMessage};
use flowcraft_azure::distributed::memory::{MemoryQueue, MemoryRunStore};
use flowcraft_azure::distributed::ports::{
    JobQueue, Page, QueueMessage, RunPhase, RunStore, StatusRecord, Versioned,
};
use flowcraft_azure::distributed::state::RunState;
use flowcraft_azure::distributed::worker::{Disposition, Worker};
use flowcraft_azure::flow::runtime::RunStatus;
use serde_json::json;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// A queue whose next `failures` sends fail with `error()` (before the effect).
struct FlakySends {
    inner: Arc<MemoryQueue>,
    failures: AtomicU32,
    error: Mutex<fn() -> Error>,
    /// Renewals answered with these errors, in order, before they work again.
    renew_errors: Mutex<Vec<Error>>,
    /// Completes that the inner queue refused (a stale receipt: the lease was lost).
    stale_completes: AtomicU32,
}

impl FlakySends {
    fn new(inner: Arc<MemoryQueue>) -> Self {
        FlakySends {
            inner,
            failures: AtomicU32::new(0),
            error: Mutex::new(|| Error::transport("connection reset")),
            renew_errors: Mutex::new(Vec::new()),
            stale_completes: AtomicU32::new(0),
        }
    }
}

#[async_trait]
impl JobQueue for FlakySends {
    async fn send(&self, text: &str, delay: Duration) -> Result<(), Error> {
        let left = self.failures.load(Ordering::SeqCst);
        if left > 0 {
            self.failures.store(left - 1, Ordering::SeqCst);
            return Err((self.error.lock().unwrap())());
        }
        self.inner.send(text, delay).await
    }
    async fn receive(&self, max: usize, visibility: Duration) -> Result<Vec<QueueMessage>, Error> {
        self.inner.receive(max, visibility).await
    }
    async fn renew(&self, id: &str, receipt: &str, v: Duration) -> Result<String, Error> {
        let next = {
            let mut errors = self.renew_errors.lock().unwrap();
            (!errors.is_empty()).then(|| errors.remove(0))
        };
        match next {
            Some(e) => Err(e),
            None => self.inner.renew(id, receipt, v).await,
        }
    }
    async fn complete(&self, id: &str, receipt: &str) -> Result<(), Error> {
        let result = self.inner.complete(id, receipt).await;
        if result.is_err() {
            self.stale_completes.fetch_add(1, Ordering::SeqCst);
        }
        result
    }
    async fn release(&self, id: &str, receipt: &str, delay: Duration) -> Result<(), Error> {
        self.inner.release(id, receipt, delay).await
    }
    async fn move_to_poison(&self, m: &QueueMessage, reason: &str) -> Result<(), Error> {
        self.inner.move_to_poison(m, reason).await
    }
}

/// A run store whose reads can lag: while `frozen` holds a snapshot, `load` serves it (a
/// replica a few revisions behind, as another worker's Cosmos session may see).
struct Lagging {
    inner: Arc<MemoryRunStore>,
    frozen: Mutex<Option<Versioned<RunState>>>,
}

#[async_trait]
impl RunStore for Lagging {
    async fn create_run(&self, state: &RunState, status: &StatusRecord) -> Result<bool, Error> {
        self.inner.create_run(state, status).await
    }
    async fn load(&self, run_id: &str) -> Result<Option<Versioned<RunState>>, Error> {
        if let Some(old) = self.frozen.lock().unwrap().clone() {
            return Ok(Some(old));
        }
        self.inner.load(run_id).await
    }
    async fn commit(&self, state: &RunState, etag: &str) -> Result<String, Error> {
        self.inner.commit(state, etag).await
    }
    async fn status(&self, run_id: &str) -> Result<Option<Versioned<StatusRecord>>, Error> {
        self.inner.status(run_id).await
    }
    async fn write_status(&self, r: &StatusRecord, etag: Option<&str>) -> Result<String, Error> {
        self.inner.write_status(r, etag).await
    }
    async fn list_stalled(
        &self,
        phases: &[RunPhase],
        older_than: i64,
        limit: usize,
        continuation: Option<&str>,
    ) -> Result<Page<StatusRecord>, Error> {
        self.inner
            .list_stalled(phases, older_than, limit, continuation)
            .await
    }
    async fn put_worker_result(
        &self,
        result: &flowcraft_azure::distributed::ports::WorkerResult,
    ) -> Result<bool, Error> {
        self.inner.put_worker_result(result).await
    }
    async fn record_arrival(&self, run_id: &str, batch: &str, node: &str) -> Result<u64, Error> {
        self.inner.record_arrival(run_id, batch, node).await
    }
    async fn worker_results(
        &self,
        run_id: &str,
        batch: &str,
        continuation: Option<&str>,
    ) -> Result<Page<flowcraft_azure::distributed::ports::WorkerResult>, Error> {
        self.inner.worker_results(run_id, batch, continuation).await
    }
}

const SLEEPY: &str = r#"{"id":"sleepy","nodes":[{"id":"z","uses":"sleep","params":{"duration":1000}},
  {"id":"b","uses":"count"}],"edges":[{"source":"z","target":"b"}]}"#;

const GATE: &str = r#"{"id":"gate","nodes":[{"id":"g","uses":"wait"},
  {"id":"yes","uses":"count"},{"id":"no","uses":"count"}],
  "edges":[{"source":"g","target":"yes","action":"approve"},
  {"source":"g","target":"no","action":"reject"}]}"#;

const CHAIN: &str = r#"{"id":"chain","nodes":[{"id":"a","uses":"count"},{"id":"b","uses":"count"}],
  "edges":[{"source":"a","target":"b"}]}"#;

/// A harness whose queue is a [`FlakySends`] over the memory queue.
fn flaky_harness(blueprints: &[&str]) -> (Harness, Arc<FlakySends>) {
    let slot: Arc<Mutex<Option<Arc<FlakySends>>>> = Arc::default();
    let keep = slot.clone();
    let h = Harness::with_queue(
        blueprints,
        Some(&move |q| {
            let flaky = Arc::new(FlakySends::new(q));
            *keep.lock().unwrap() = Some(flaky.clone());
            flaky as Arc<dyn JobQueue>
        }),
    );
    let flaky = slot.lock().unwrap().clone().unwrap();
    (h, flaky)
}

/// The commit of a wake-up landed but its follow-ups did not (the worker stopped before
/// enqueueing): the redelivered wake finds no awaiting record and must replay the commit's
/// follow-ups instead of being dropped, or the run hangs forever.
#[tokio::test(start_paused = true)]
async fn a_wake_whose_commit_landed_but_follow_ups_did_not_replays_them() {
    let (h, flaky) = flaky_harness(&[SLEEPY]);
    let run_id = h.start("sleepy", json!({})).await;
    let z = h.take("z").await;
    h.handle(&z).await;
    tokio::time::advance(Duration::from_secs(2)).await;
    let wake = h.take("z").await;
    assert_eq!(JobMessage::decode(&wake.text).unwrap().kind, JobKind::Wake);
    // The worker "crashes" between the commit and the enqueue of `b`.
    *flaky.error.lock().unwrap() = || Error::unexpected("the process died");
    flaky.failures.store(1, Ordering::SeqCst);
    let stopped = h.worker().handle_message(&wake).await;
    assert!(matches!(stopped, Disposition::Release(_)), "{stopped:?}");
    assert!(h.queued_nodes().await.is_empty(), "b was not enqueued");
    // The redelivered wake replays the follow-ups.
    h.handle(&wake).await;
    assert_eq!(h.queued_nodes().await, ["b"]);
    let b = h.take("b").await;
    h.handle(&b).await;
    let result = h.wait(&run_id).await;
    assert_eq!(result.status, RunStatus::Completed);
    assert_eq!(h.counter.get("b"), 1);
    let status = h.runs.status(&run_id).await.unwrap().unwrap().value;
    assert_eq!(status.status, RunPhase::Completed);
}

/// A resume whose commit landed but whose answer was lost (the enqueue failed): the caller's
/// retry is answered as the first call was and sends the follow-ups; a different resume of
/// the same node is refused with a clear conflict.
#[tokio::test(start_paused = true)]
async fn a_retried_resume_answers_as_the_first_call_and_a_different_one_is_refused() {
    let (mut h, flaky) = flaky_harness(&[GATE]);
    h.spawn_workers(1);
    let run_id = h.start("gate", json!({})).await;
    assert_eq!(h.wait(&run_id).await.status, RunStatus::Awaiting);
    *flaky.error.lock().unwrap() = || Error::unexpected("the process died");
    flaky.failures.store(1, Ordering::SeqCst);
    let first = h
        .client
        .resume_with_action(&run_id, Some("g"), Some("approve".into()), None)
        .await;
    assert!(first.is_err(), "the enqueue failed after the commit");
    let retried = h
        .client
        .resume_with_action(&run_id, Some("g"), Some("approve".into()), None)
        .await
        .unwrap();
    assert_eq!(retried.len(), 1);
    assert_eq!(retried[0].node, "yes");
    assert_eq!(h.wait(&run_id).await.status, RunStatus::Completed);
    assert_eq!((h.counter.get("yes"), h.counter.get("no")), (1, 0));
    // After completion, the same call still answers the same; another one is refused.
    let again = h
        .client
        .resume_with_action(&run_id, Some("g"), Some("approve".into()), None)
        .await
        .unwrap();
    assert_eq!(again, retried);
    let other = h
        .client
        .resume_with_key(&run_id, Some("g"), Some("reject".into()), None, Some("k2"))
        .await
        .unwrap_err();
    assert!(other.to_string().contains("completed"), "{other}");
    h.stop().await;
}

/// Two different resumes of one awaiting node: the first applies, the second is refused as a
/// conflict (the node was resumed by another request) while the run goes on; an explicit
/// key decides what counts as the same call.
#[tokio::test(start_paused = true)]
async fn a_different_resume_of_a_resumed_node_is_refused_with_a_conflict() {
    let two = r#"{"id":"two","nodes":[{"id":"g1","uses":"wait"},{"id":"g2","uses":"wait"},
      {"id":"yes","uses":"count"},{"id":"no","uses":"count"}],
      "edges":[{"source":"g1","target":"yes","action":"approve"},
      {"source":"g1","target":"no","action":"reject"}]}"#;
    let mut h = Harness::new(&[two]);
    h.spawn_workers(1);
    let run_id = h.start("two", json!({})).await;
    assert_eq!(h.wait(&run_id).await.status, RunStatus::Awaiting);
    let applied = h
        .client
        .resume_with_key(
            &run_id,
            Some("g1"),
            Some("approve".into()),
            None,
            Some("hook-1"),
        )
        .await
        .unwrap();
    let same_key = h
        .client
        .resume_with_key(
            &run_id,
            Some("g1"),
            Some("approve".into()),
            None,
            Some("hook-1"),
        )
        .await
        .unwrap();
    assert_eq!(same_key, applied);
    let refused = h
        .client
        .resume_with_action(&run_id, Some("g1"), Some("reject".into()), None)
        .await
        .unwrap_err();
    assert!(matches!(refused, Error::Conflict(_)), "{refused}");
    assert!(
        refused.to_string().contains("resumed by another request"),
        "{refused}"
    );
    assert_eq!(
        h.wait(&run_id).await.status,
        RunStatus::Awaiting,
        "g2 waits"
    );
    assert_eq!((h.counter.get("yes"), h.counter.get("no")), (1, 0));
    h.stop().await;
}

/// A job handled by a worker whose read of the run lags behind the commit that scheduled it
/// is released for a later try, never deleted as stale; once the read catches up it runs.
#[tokio::test(start_paused = true)]
async fn a_lagging_read_releases_a_live_job_instead_of_dropping_it() {
    let h = Harness::new(&[CHAIN]);
    let run_id = h.start("chain", json!({})).await;
    let before = h.runs.load(&run_id).await.unwrap().unwrap();
    let a = h.take("a").await;
    h.handle(&a).await;
    let b = h.take("b").await;
    assert!(JobMessage::decode(&b.text).unwrap().rev.is_some());
    let lagging = Arc::new(Lagging {
        inner: h.runs.clone(),
        frozen: Mutex::new(Some(before)),
    });
    let backends = flowcraft_azure::distributed::core::Backends::new(
        h.backends.queue.clone(),
        lagging.clone(),
        h.backends.coordination.clone(),
    );
    let worker = Worker::new(h.env.clone(), backends, h.config.clone());
    let d = worker.handle_message(&b).await;
    assert!(matches!(d, Disposition::Release(_)), "{d:?}");
    assert_eq!(h.counter.get("b"), 0);
    // The replica catches up: the same message now runs.
    *lagging.frozen.lock().unwrap() = None;
    assert_eq!(worker.handle_message(&b).await, Disposition::Complete);
    assert_eq!(h.counter.get("b"), 1);
    assert_eq!(h.wait(&run_id).await.status, RunStatus::Completed);
}

/// A wake-up read from a replica that has not seen the sleep's awaiting commit is released,
/// not dropped (it would hang the run).
#[tokio::test(start_paused = true)]
async fn a_lagging_read_releases_a_wake_up_whose_sleep_is_not_visible_yet() {
    let h = Harness::new(&[SLEEPY]);
    let run_id = h.start("sleepy", json!({})).await;
    let before = h.runs.load(&run_id).await.unwrap().unwrap();
    let z = h.take("z").await;
    h.handle(&z).await;
    tokio::time::advance(Duration::from_secs(2)).await;
    let wake = h.take("z").await;
    let lagging = Arc::new(Lagging {
        inner: h.runs.clone(),
        frozen: Mutex::new(Some(before)),
    });
    let backends = flowcraft_azure::distributed::core::Backends::new(
        h.backends.queue.clone(),
        lagging.clone(),
        h.backends.coordination.clone(),
    );
    let worker = Worker::new(h.env.clone(), backends, h.config.clone());
    assert!(matches!(
        worker.handle_message(&wake).await,
        Disposition::Release(_)
    ));
    *lagging.frozen.lock().unwrap() = None;
    assert_eq!(worker.handle_message(&wake).await, Disposition::Complete);
    assert_eq!(h.queued_nodes().await, ["b"]);
    let _ = run_id;
}

const LONG: &str =
    r#"{"id":"long","nodes":[{"id":"l","uses":"slow","params":{"ms":40000}}],"edges":[]}"#;

/// A failed renewal is retried while the lease lasts: a passing error does not cost the job
/// its lease (no second execution).
#[tokio::test(start_paused = true)]
async fn a_transient_renewal_failure_is_retried_and_the_job_keeps_its_lease() {
    let (mut h, flaky) = flaky_harness(&[LONG]);
    *flaky.renew_errors.lock().unwrap() = vec![
        Error::transport("connection reset"),
        Error::Throttled {
            retry_after: None,
            info: Box::default(),
        },
    ];
    h.spawn_workers(1);
    let result = h.run("long", json!({})).await;
    assert_eq!(result.status, RunStatus::Completed);
    assert_eq!(h.counter.get("l"), 1, "never redelivered while running");
    assert_eq!(flaky.stale_completes.load(Ordering::SeqCst), 0);
    h.stop().await;
}

/// A lease that is truly lost (Azure answers 404 MessageNotFound for a stale pop receipt)
/// stops the job: its cancellation token fires (the attempt stops), nothing is committed by
/// it and it never settles the message it no longer holds; the next delivery commits the
/// node once.
#[tokio::test(start_paused = true)]
async fn a_lost_lease_cancels_the_node_and_the_next_delivery_commits_once() {
    let (mut h, flaky) = flaky_harness(&[LONG]);
    let mut not_found = flowcraft_azure::ErrorInfo::new("MessageNotFound");
    not_found.status = Some(404);
    *flaky.renew_errors.lock().unwrap() = vec![Error::NotFound(Box::new(not_found))];
    h.spawn_workers(1);
    let run_id = h.start("long", json!({})).await;
    let result = h.wait(&run_id).await;
    assert_eq!(result.status, RunStatus::Completed, "{:?}", result.errors);
    assert_eq!(h.counter.get("l"), 2);
    assert_eq!(
        flaky.stale_completes.load(Ordering::SeqCst),
        0,
        "the stopped job never settled a message it no longer held"
    );
    let stored = h.runs.load(&run_id).await.unwrap().unwrap().value;
    assert_eq!(stored.book.commits.len(), 1);
    h.stop().await;
}

/// Sends that fail a few times in a row on a transient error are retried in place: the job
/// completes on its first delivery and the run never sees an error.
#[tokio::test(start_paused = true)]
async fn a_passing_network_hiccup_during_follow_ups_is_retried_in_place() {
    let fan = r#"{"id":"fan","nodes":[{"id":"s","uses":"count"},{"id":"b1","uses":"mark"},
      {"id":"b2","uses":"mark"}],"edges":[{"source":"s","target":"b1"},{"source":"s","target":"b2"}]}"#;
    let (h, flaky) = flaky_harness(&[fan]);
    let run_id = h.start("fan", json!({})).await;
    let s = h.take("s").await;
    flaky.failures.store(3, Ordering::SeqCst);
    h.handle(&s).await;
    assert_eq!(h.queued_nodes().await, ["b1", "b2"]);
    let mid = h.client.status(&run_id).await.unwrap().unwrap();
    assert_eq!(mid.status, RunStatus::Running);
    assert!(mid.errors.is_empty());
}

/// A transient outage that outlasts the delivery limit never poisons the job or fails the
/// run: at the limit the job continues on a fresh copy.
#[tokio::test(start_paused = true)]
async fn a_long_transient_outage_never_poisons_a_job_or_fails_its_run() {
    let fan = r#"{"id":"fan","nodes":[{"id":"s","uses":"count"},{"id":"b1","uses":"mark"}],
      "edges":[{"source":"s","target":"b1"}]}"#;
    let (h, flaky) = flaky_harness(&[fan]);
    let run_id = h.start("fan", json!({})).await;
    let s = h.take("s").await;
    flaky.failures.store(1000, Ordering::SeqCst);
    let at_limit = QueueMessage {
        dequeue_count: h.config.max_dequeue,
        ..s.clone()
    };
    let d = h.worker().handle_message(&at_limit).await;
    assert!(!matches!(d, Disposition::Poison(_)), "{d:?}");
    let mid = h.client.status(&run_id).await.unwrap().unwrap();
    assert_eq!(mid.status, RunStatus::Running);
    assert!(mid.errors.is_empty(), "{:?}", mid.errors);
    assert!(h.queue.poisoned().is_empty());
    // The outage ends: a fresh copy (or the redelivery) finishes the job.
    flaky.failures.store(0, Ordering::SeqCst);
    assert_eq!(
        h.worker().handle_message(&at_limit).await,
        Disposition::Complete
    );
    assert!(h.queued_nodes().await.contains(&"b1".to_string()));
}

/// A job naming another (known) blueprint than its run's, or one no worker knows, is
/// malformed: the message is poisoned AND the run fails with the reason (it would otherwise
/// never settle its outstanding work).
#[tokio::test(start_paused = true)]
async fn wrong_or_unknown_blueprints_poison_the_message_and_fail_the_run() {
    for named in ["chain", "nowhere"] {
        let h = Harness::new(&[GATE, CHAIN]);
        let run_id = h.start("gate", json!({})).await;
        let mut job = JobMessage::execute(&run_id, named, "g", 1);
        job.activation = Some(1);
        h.queue
            .send(&job.encode().unwrap(), Duration::ZERO)
            .await
            .unwrap();
        let _ = h.take("g").await; // the real start job stays hidden
        let m = h.take("g").await;
        let Disposition::Poison(reason) = h.worker().handle_message(&m).await else {
            panic!("{named}: poisoned")
        };
        assert!(reason.contains(&format!("'{named}'")), "{reason}");
        let result = h.client.status(&run_id).await.unwrap().unwrap();
        assert_eq!(result.status, RunStatus::Failed, "{named}");
        assert!(
            result.errors[0].message.contains(&format!("'{named}'")),
            "{:?}",
            result.errors
        );
    }
}

/// The reconciler never restarts a retry chain: work waiting out its `retryDelay` is left
/// alone (it is not lost: its delayed message is on its way), and a retry whose message is
/// really lost (well past its due time) is re-sent with its attempt, not as attempt 1.
#[tokio::test(start_paused = true)]
async fn the_reconciler_keeps_the_attempt_and_due_time_of_retries() {
    let later = r#"{"id":"later","nodes":[{"id":"a","uses":"flaky","params":{"succeedOn":3},
      "config":{"maxRetries":3,"retryDelay":60000}}],"edges":[]}"#;
    let h = Harness::new(&[later]);
    let run_id = h.start("later", json!({})).await;
    let a = h.take("a").await;
    h.handle(&a).await;
    let stored = h.runs.load(&run_id).await.unwrap().unwrap();
    let retry = stored
        .value
        .book
        .retries
        .values()
        .next()
        .expect("a retry record");
    assert_eq!((retry.attempt, retry.delay_ms), (2, 60_000));
    // Not due yet: nothing is re-sent.
    assert!(h.client.reconcile(&run_id).await.unwrap().is_empty());
    assert_eq!(h.queue.len(), 1, "only the delayed retry");
    // The delayed retry is lost, and (the run document says) it is long overdue.
    tokio::time::advance(Duration::from_secs(60)).await;
    let lost = h.take("a").await;
    assert_eq!(JobMessage::decode(&lost.text).unwrap().attempt, Some(2));
    h.queue.complete(&lost.id, &lost.receipt).await.unwrap();
    let mut state = stored.value;
    for retry in state.book.retries.values_mut() {
        retry.due_at_ms -= 3_600_000;
    }
    h.runs
        .put_raw_document(&run_id, state.to_document().unwrap());
    let resent = h.client.reconcile(&run_id).await.unwrap();
    assert_eq!(resent.len(), 1);
    let again = h.take("a").await;
    assert_eq!(JobMessage::decode(&again.text).unwrap().attempt, Some(2));
    h.handle(&again).await;
    assert_eq!(h.counter.get("a"), 2, "attempts 1 and 2, no second chain");
    tokio::time::advance(Duration::from_secs(120)).await;
    let third = h.take("a").await;
    assert_eq!(JobMessage::decode(&third.text).unwrap().attempt, Some(3));
    h.handle(&third).await;
    assert_eq!(h.wait(&run_id).await.status, RunStatus::Completed);
    assert_eq!(h.counter.get("a"), 3);
}

/// A failed attempt whose retry was recorded but never sent (its worker stopped in between)
/// re-sends that retry when its own message comes back, instead of being dropped as
/// superseded (which would leave the work to the reconciler, a minute past due at best).
#[tokio::test(start_paused = true)]
async fn a_redelivered_attempt_re_sends_its_recorded_retry() {
    let bp = r#"{"id":"r","nodes":[{"id":"a","uses":"flaky","params":{"succeedOn":2},
      "config":{"maxRetries":2,"retryDelay":1000}}],"edges":[]}"#;
    let (h, flaky) = flaky_harness(&[bp]);
    let run_id = h.start("r", json!({})).await;
    let a = h.take("a").await;
    *flaky.error.lock().unwrap() = || Error::unexpected("the process died");
    flaky.failures.store(1, Ordering::SeqCst);
    let stopped = h.worker().handle_message(&a).await;
    assert!(matches!(stopped, Disposition::Release(_)), "{stopped:?}");
    assert!(
        h.queue.texts().len() == 1,
        "only attempt 1, the retry was not sent"
    );
    h.handle(&a).await;
    assert_eq!(h.counter.get("a"), 1, "attempt 1 is not run again");
    tokio::time::advance(Duration::from_secs(1)).await;
    let retry = h.take("a").await;
    assert_eq!(JobMessage::decode(&retry.text).unwrap().attempt, Some(2));
    h.handle(&retry).await;
    assert_eq!(h.wait(&run_id).await.status, RunStatus::Completed);
    assert_eq!(h.counter.get("a"), 2);
}

/// A delay longer than the queue's 7-day limit is chained over several messages, for every
/// job kind: an execute job (a retry whose `retryDelay` ran past 7 days) that still has
/// `remainingMs` to wait only re-sends itself for the rest; the node runs once it is over.
#[tokio::test(start_paused = true)]
async fn a_chained_delay_on_an_execute_job_waits_out_the_rest_before_running() {
    let day = 24 * 3600 * 1000u64;
    let h = Harness::new(&[CHAIN]);
    let run_id = h.start("chain", json!({})).await;
    let a = h.take("a").await;
    let mut chained = JobMessage::decode(&a.text).unwrap();
    chained.attempt = Some(2);
    chained.remaining_ms = Some(day);
    h.queue.complete(&a.id, &a.receipt).await.unwrap();
    h.queue
        .send(&chained.encode().unwrap(), Duration::ZERO)
        .await
        .unwrap();
    let m = h.take("a").await;
    h.handle(&m).await;
    assert_eq!(
        h.counter.get("a"),
        0,
        "not run before the whole delay is over"
    );
    assert!(
        h.queued_nodes().await.is_empty(),
        "the rest is a delayed message"
    );
    tokio::time::advance(Duration::from_millis(day)).await;
    let due = h.take("a").await;
    let job = JobMessage::decode(&due.text).unwrap();
    assert_eq!((job.remaining_ms, job.attempt), (None, Some(2)));
    h.handle(&due).await;
    assert_eq!(h.counter.get("a"), 1);
    let b = h.take("b").await;
    h.handle(&b).await;
    assert_eq!(h.wait(&run_id).await.status, RunStatus::Completed);
}

/// `start_run_with_id` twice for one id answers without a second run; a first call that
/// stopped after the run item (before its status item and its start jobs) is completed by
/// the retry, so the reconciler and `status` see the run.
#[tokio::test(start_paused = true)]
async fn a_duplicate_start_answers_without_a_second_run_and_closes_the_creation_gap() {
    let mut h = Harness::new(&[CHAIN, GATE]);
    // The first call's run item landed, nothing else (its process died).
    let (state, _) = flowcraft_azure::distributed::transition::new_run(
        "r-1",
        &distributed_common::blueprint(CHAIN),
        serde_json::Map::new(),
    );
    h.runs.put_raw_document("r-1", state.to_document().unwrap());
    assert!(h.runs.status("r-1").await.unwrap().is_none());
    h.client
        .start_run_with_id("r-1", "chain", serde_json::Map::new())
        .await
        .unwrap();
    let status = h.runs.status("r-1").await.unwrap().expect("status item");
    assert_eq!(status.value.status, RunPhase::Running);
    h.client
        .start_run_with_id("r-1", "chain", serde_json::Map::new())
        .await
        .unwrap();
    let other = h
        .client
        .start_run_with_id("r-1", "gate", serde_json::Map::new())
        .await
        .unwrap_err();
    assert!(matches!(other, Error::Conflict(_)), "{other}");
    h.spawn_workers(1);
    assert_eq!(h.wait("r-1").await.status, RunStatus::Completed);
    assert_eq!((h.counter.get("a"), h.counter.get("b")), (1, 1));
    h.stop().await;
}

/// A creation that stopped after the status item (written first) leaves a `running` status
/// without a run: the reconciler lists it and, once it is old enough not to be a lagging
/// read, closes it as `failed` with the reason instead of failing on it every pass.
#[tokio::test(start_paused = true)]
async fn the_reconciler_closes_the_status_item_of_a_run_that_was_never_created() {
    use flowcraft_azure::distributed::reconcile::{Reconciler, ReconcilerConfig};
    let h = Harness::new(&[CHAIN]);
    let now = chrono::Utc::now().timestamp();
    let mut orphan = StatusRecord::running("ghost", now - 2 * 3600);
    orphan.blueprint_id = Some("chain".into());
    h.runs.write_status(&orphan, None).await.unwrap();
    let mut young = StatusRecord::running("young", now - 10);
    young.blueprint_id = Some("chain".into());
    h.runs.write_status(&young, None).await.unwrap();
    let reconciler = Reconciler::new(
        h.client.clone(),
        h.backends.clone(),
        ReconcilerConfig {
            stalled_after: Duration::ZERO,
            cooldown: Duration::from_millis(1),
            ..ReconcilerConfig::default()
        },
    );
    let stats = reconciler.run_once_before(now + 10).await.unwrap();
    assert_eq!((stats.stalled_runs, stats.orphaned_runs), (2, 1));
    let ghost = h.runs.status("ghost").await.unwrap().unwrap().value;
    assert_eq!(ghost.status, RunPhase::Failed);
    let reason = ghost.final_status.unwrap()["reason"].to_string();
    assert!(reason.contains("never created"), "{reason}");
    let young = h.runs.status("young").await.unwrap().unwrap().value;
    assert_eq!(
        young.status,
        RunPhase::Running,
        "may still be a lagging read"
    );
}

const CHILD_WAITS: &str = r#"{"id":"child_waits","nodes":[
  {"id":"w1","uses":"wait"},{"id":"w2","uses":"wait"},{"id":"last","uses":"echo"}],
  "edges":[{"source":"w1","target":"w2","action":"go"},{"source":"w2","target":"last","action":"go"}]}"#;
const PARENT_OF_WAITS: &str = r#"{"id":"parent_waits","nodes":[
  {"id":"sub","uses":"subflow","params":{"blueprintId":"child_waits"}},
  {"id":"after","uses":"count"}],
  "edges":[{"source":"sub","target":"after"}]}"#;

/// Resumes of an awaiting subflow are idempotent too, although a worker carries them out:
/// a retry of a call whose sub-run resumed and waits again is not applied a second time, and
/// a retry of the call that completed the node answers with the work it fired.
#[tokio::test(start_paused = true)]
async fn retried_subflow_resumes_are_not_applied_twice() {
    let h = Harness::new(&[CHILD_WAITS, PARENT_OF_WAITS]);
    let run_id = h.start("parent_waits", json!({})).await;
    let start = h.take("sub").await;
    h.handle(&start).await;
    let first = h
        .client
        .resume_with_key(
            &run_id,
            None,
            Some("go".into()),
            Some(json!("one")),
            Some("k1"),
        )
        .await
        .unwrap();
    let resume = h.take("sub").await;
    h.handle(&resume).await;
    let again = h
        .client
        .resume_with_key(
            &run_id,
            None,
            Some("go".into()),
            Some(json!("one")),
            Some("k1"),
        )
        .await
        .unwrap();
    assert_eq!(again, first);
    assert!(
        h.queued_nodes().await.is_empty(),
        "not resumed a second time"
    );
    let state = h.client.status(&run_id).await.unwrap().unwrap();
    assert_eq!(state.status, RunStatus::Awaiting);
    // The second call completes the sub-run; its retry answers with the fired work.
    h.client
        .resume_with_key(
            &run_id,
            None,
            Some("go".into()),
            Some(json!("two")),
            Some("k2"),
        )
        .await
        .unwrap();
    let resume = h.take("sub").await;
    h.handle(&resume).await;
    assert_eq!(h.queued_nodes().await, ["after"]);
    let retried = h
        .client
        .resume_with_key(
            &run_id,
            None,
            Some("go".into()),
            Some(json!("two")),
            Some("k2"),
        )
        .await
        .unwrap();
    assert_eq!(retried.len(), 1);
    assert_eq!(retried[0].node, "after");
    let after = h.take("after").await;
    h.handle(&after).await;
    assert_eq!(h.wait(&run_id).await.status, RunStatus::Completed);
    assert_eq!(h.counter.get("after"), 1);
}

/// A queue service that stalls for longer than the lease, delivery after delivery, costs the
/// running job its lease each time; those deliveries do not count toward the poison limit
/// (they are recorded as lapsed), so the healthy job still completes instead of poisoning
/// its run after `max_dequeue` deliveries.
#[tokio::test(start_paused = true)]
async fn deliveries_whose_lease_lapsed_under_a_running_job_do_not_poison_it() {
    let slow = r#"{"id":"slow","nodes":[{"id":"l","uses":"slow","params":{"ms":10000}}]}"#;
    let (mut h, flaky) = flaky_harness(&[slow]);
    h.config.visibility = Duration::from_secs(3);
    h.config.max_dequeue = 2;
    // Enough failed renewals for at least two whole leases to lapse (about 16 a lease).
    *flaky.renew_errors.lock().unwrap() = (0..48)
        .map(|_| Error::transport("the queue service stalls"))
        .collect();
    h.spawn_workers(1);
    let run_id = h.start("slow", json!({})).await;
    let result = h.wait(&run_id).await;
    assert_eq!(result.status, RunStatus::Completed, "{:?}", result.errors);
    assert!(h.counter.get("l") >= 3, "the lease lapsed at least twice");
    assert!(h.queue.poisoned().is_empty());
    h.stop().await;
}
