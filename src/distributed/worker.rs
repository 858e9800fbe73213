//! The worker: [`Worker::handle_message`] takes one queue message down the job path, one
//! function per step, in this order:
//!
//! 1. **decode** ([`super::job`]): undecodable -> poison queue; a chained delay
//!    (`remainingMs`) is re-sent for its rest;
//! 2. **load** the run once (a missing run may be a lagging read: released, retried), or
//!    take the state this worker committed last when the job is not newer than it (see
//!    the `run_cache` module; anything but "go ahead" on it is decided again on a fresh read);
//! 3. **classify** ([`super::classify`]): finished -> drop; wrong or unknown blueprint ->
//!    poison and fail the run; other version -> defer (growing delay, within
//!    `version_window`); not visible yet -> release shortly; committed -> replay the
//!    follow-ups; else go ahead;
//! 4. **execute** ([`super::execute`]): one attempt (a retryable failure records and queues
//!    the next attempt), or a sub-run resume;
//! 5. **commit** ([`super::commit`]): ONE conditional write of the settlement (re-classified
//!    on every try, so a lost answer turns into a replay); a batch worker's success is
//!    stored beside the run document instead, and the batch's last arrival folds every
//!    result into it in one commit (the `batch_fold` module);
//! 6. **follow-ups** ([`super::follow_ups`]): enqueue the fired work and wake-ups (the
//!    polling loop has the fired work left to it instead, and runs it in this worker under
//!    guard messages: see [`super::polling`]);
//! 7. **publish** ([`super::publish`]): the status item.
//!
//! A crash anywhere is redone by redelivery: the commit record makes the redo a replay.
//! Errors are handled by their class (`ErrorClass`, the policy in one place): transient
//! infrastructure errors are retried in place with backoff, then the message is released
//! (never poisoned for them); permanent ones (a run document over the store's size limit or
//! unreadable, a malformed request) poison the message on its first delivery and fail the
//! run with the reason (only the status item, when the document cannot record it); other
//! errors are retried by redelivery and poisoned after `max_dequeue` deliveries. The
//! polling loop [`Worker::run`] lives in [`super::polling`].

use crate::Error;
use crate::distributed::batch_fold::{BatchWorker, SETTLED_BATCH, folded_batch_of};
use crate::distributed::classify::{Class, Probe, Ready, Request, classify};
use crate::distributed::commit::{Step, commit_versioned, load_run};
use crate::distributed::core::Backends;
use crate::distributed::events::{Event, EventBus};
use crate::distributed::execute::{Attempted, SubflowResume};
use crate::distributed::follow_ups::{
    enqueue_follow_ups, execute_job, retry_transient, send_delayed,
};
use crate::distributed::job::{JobKind, JobMessage};
use crate::distributed::lapses::counted_deliveries;
use crate::distributed::ports::{QueueMessage, RunPhase, Versioned};
use crate::distributed::publish::{fail_status_item, publish_status};
use crate::distributed::run_cache::RunCache;
use crate::distributed::state::{CommitRecord, RetryRecord, RunState, WorkItem};
use crate::distributed::transition::{
    Settlement, fail_run, needs_prepare, prepare, settle, shrink_finished, update_status,
};
use crate::flow::blueprint::Blueprint;
use crate::flow::execute::Environment;
use crate::flow::node::NodeResult;
use crate::flow::runtime::SUBFLOW_STATE_PREFIX;
use serde_json::Value;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

/// The longest pause between two deferrals of a job for another blueprint version.
const MAX_DEFER_DELAY: Duration = Duration::from_secs(600);
/// The longest pause before a job hit by errors or a lagging read is tried again.
const MAX_RETRY_DELAY: Duration = Duration::from_secs(300);

/// Worker settings.
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    /// Jobs processed at once.
    pub concurrency: usize,
    /// Messages asked for per receive (1..=32; also bounded by free slots).
    pub batch_size: usize,
    /// Lease per received message; renewed every third of it while the job runs.
    pub visibility: Duration,
    /// First pause after a receive that found the queue drained (fewer messages than asked);
    /// one of this worker's jobs finishing with work receivable at once (e.g. a successor)
    /// ends a pause early. See [`super::polling`].
    pub idle_backoff_min: Duration,
    /// Longest such pause: the steady idle poll rate, and the longest a busy worker takes to
    /// notice work that others enqueued.
    pub idle_backoff_max: Duration,
    /// A message received more often than this goes to the poison queue.
    pub max_dequeue: u32,
    /// How long a deferred job (other blueprint version) stays hidden before its first
    /// retry; later deferrals wait longer (the time deferred so far, up to 10 minutes).
    pub defer_delay: Duration,
    /// How long a job whose run is pinned to another blueprint version keeps being deferred
    /// (a slow rolling deploy) before it is poisoned and its run failed. Deferrals do not
    /// count toward `max_dequeue`.
    pub version_window: Duration,
    /// First pause before a job that the loaded run does not know yet (a lagging read) is
    /// tried again; it grows with each delivery.
    pub stale_read_delay: Duration,
    /// Base pause before a job that hit an infrastructure error is retried.
    pub error_delay: Duration,
    /// A running run's status item is refreshed at least this often (amortised heartbeat).
    pub status_heartbeat: Duration,
    /// After shutdown, how long the jobs in flight may take to finish; the ones still running
    /// then are stopped and their messages released for another worker (safe: a job stopped
    /// anywhere is redone idempotently).
    pub shutdown_grace: Duration,
}

impl Default for WorkerConfig {
    fn default() -> Self {
        WorkerConfig {
            concurrency: 32,
            batch_size: 32,
            visibility: Duration::from_secs(30),
            idle_backoff_min: Duration::from_millis(20),
            idle_backoff_max: Duration::from_millis(1000),
            max_dequeue: 5,
            defer_delay: Duration::from_secs(30),
            version_window: Duration::from_secs(3600),
            stale_read_delay: Duration::from_millis(500),
            error_delay: Duration::from_secs(1),
            status_heartbeat: Duration::from_secs(60),
            shutdown_grace: Duration::from_secs(60),
        }
    }
}

/// What to do with a processed message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Disposition {
    /// Delete it: the job is done (or deliberately dropped).
    Complete,
    /// Make it visible again after the delay (deferred or failed on infrastructure).
    Release(Duration),
    /// Move it to the poison queue with this reason.
    Poison(String),
}

/// What processing one message came to: what to do with the message, and whether the job
/// made work receivable at once (the polling loop receives again right away only then).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Handled {
    /// What to do with the processed message.
    pub disposition: Disposition,
    /// The job sent at least one message that is visible on the queue now: successors, or a
    /// retry or wake-up without delay. Delayed messages do not count, nor does the
    /// disposition's own release. `true` as well when an infrastructure error stopped the job
    /// part-way, as it may have sent some before failing.
    pub enqueued_now: bool,
    /// The successors the job's commit fired, NOT sent: the polling loop runs them in this
    /// worker under guard messages, or sends them (see [`super::polling`]). Only set when
    /// the caller asked for it.
    pub(crate) successors: Vec<JobMessage>,
}

impl Handled {
    /// The message is done (`Complete`); `enqueued_now` as in [`Handled::enqueued_now`].
    fn complete(enqueued_now: bool) -> Self {
        Handled {
            disposition: Disposition::Complete,
            enqueued_now,
            successors: Vec::new(),
        }
    }

    /// A job whose disposition is `disposition`, `enqueued_now` as in
    /// [`Handled::enqueued_now`].
    pub(crate) fn new(disposition: Disposition, enqueued_now: bool) -> Self {
        Handled {
            disposition,
            enqueued_now,
            successors: Vec::new(),
        }
    }

    /// A job that sent no message.
    fn sent_nothing(disposition: Disposition) -> Self {
        Handled::new(disposition, false)
    }
}

/// What a job's commit turned out to be.
enum Committed {
    /// This delivery committed the settlement.
    Fresh { record: CommitRecord, publish: bool },
    /// A resumed sub-run waits again: its new state was stored, the node keeps waiting.
    Reparked,
    /// The fresh state said something else than "go ahead" (replay, finished, stale, ...).
    Classified(Class),
}

/// What will be committed, decided by the execute step before the commit loop.
enum Plan {
    /// Settle an executed attempt.
    Execute(Settlement),
    /// Complete a sleeping node with its stored output.
    Wake,
    /// Apply the outcome of a resumed sub-run.
    Resume(SubflowResume),
}

/// What a job's commit needs to decide, besides the freshly loaded state.
struct Decision<'a> {
    blueprint: &'a Blueprint,
    probe: Probe<'a>,
    plan: &'a Plan,
    now: chrono::DateTime<chrono::Utc>,
    heartbeat: i64,
}

/// The transition a job commits, applied to a freshly loaded state (re-run after every ETag
/// conflict): classify again (the state may have moved on: a replay, a finished run), then
/// settle the node or re-park a sub-run that waits again.
fn decide(state: &mut RunState, d: &Decision<'_>) -> Step<Committed> {
    prepare(state, d.blueprint);
    let ready = match classify(state, Some(d.blueprint), &d.probe) {
        Class::Ready(ready) => ready,
        // Another delivery of this attempt failed and recorded a retry meanwhile: this
        // delivery's settlement still settles the node (the retry then replays it).
        Class::RetryRecorded(_) if matches!(d.plan, Plan::Execute(_)) => Ready::Execute,
        other => return Step::Skip(Committed::Classified(other)),
    };
    let work = d.probe.work;
    let resume_key = match &ready {
        Ready::Resume(pending) => pending.key.clone(),
        _ => None,
    };
    let settlement = match (d.plan, ready) {
        (Plan::Execute(settlement), Ready::Execute) => settlement.clone(),
        (Plan::Wake, Ready::Wake(record)) => Settlement::Resumed(
            NodeResult {
                output: record.output,
                action: None,
                dynamic_nodes: Vec::new(),
            },
            Vec::new(),
        ),
        (Plan::Resume(SubflowResume::Settle(settlement)), Ready::Resume(_)) => settlement.clone(),
        (Plan::Resume(SubflowResume::Repark(sub_state)), Ready::Resume(_)) => {
            state.context.insert(
                format!("{SUBFLOW_STATE_PREFIX}{}", work.node),
                Value::Object(sub_state.clone()),
            );
            if let Some(rec) = state.book.awaiting.get_mut(&work.node) {
                rec.pending_resume = None;
                rec.last_resume_key = resume_key;
            }
            state.book.revision += 1;
            update_status(state);
            return Step::Write(Committed::Reparked);
        }
        _ => {
            return Step::Skip(Committed::Classified(Class::Stale(
                "the job's kind does not match its work".into(),
            )));
        }
    };
    let before = state.book.status;
    let mut record = settle(state, d.blueprint, work, settlement, d.now);
    if resume_key.is_some() {
        // A client's resume, carried out by this worker: its retry must find it.
        record.resume_key = resume_key;
        state.book.commits.insert(work.key(), record.clone());
    }
    let due = d.now.timestamp() - state.book.status_touched_at >= d.heartbeat;
    let publish = due || before != state.book.status;
    if publish {
        state.book.status_touched_at = d.now.timestamp();
    }
    Step::Write(Committed::Fresh { record, publish })
}

/// The probe of a job for its resolved work.
fn probe_of<'a>(job: &JobMessage, work: &'a WorkItem) -> Probe<'a> {
    let request = match job.kind {
        JobKind::Execute => Request::Execute {
            attempt: job.attempt(),
        },
        JobKind::Wake => Request::Wake,
        JobKind::Resume => Request::Resume {
            seq: job.resume_seq,
        },
    };
    Probe {
        work,
        request,
        rev: job.rev,
    }
}

/// A distributed worker over some [`Backends`].
#[derive(Debug)]
pub struct Worker {
    pub(crate) env: Environment,
    pub(crate) backends: Backends,
    pub(crate) config: WorkerConfig,
    pub(crate) events: EventBus,
    /// Per-run commit gates and the last committed states (see the `run_cache` module).
    pub(crate) cache: Arc<RunCache>,
}

impl Worker {
    /// A worker running nodes from `env` (its blueprint registry is the set of blueprints this
    /// worker can run) over `backends`.
    pub fn new(env: Environment, backends: Backends, config: WorkerConfig) -> Self {
        Worker {
            env,
            backends,
            config,
            events: EventBus::default(),
            cache: Arc::default(),
        }
    }

    /// Uses `events` (e.g. shared with a client) instead of a private bus.
    pub fn with_events(mut self, events: EventBus) -> Self {
        self.events = events;
        self
    }

    /// The event bus (subscribe to it).
    pub fn events(&self) -> &EventBus {
        &self.events
    }

    /// The configuration.
    pub fn config(&self) -> &WorkerConfig {
        &self.config
    }

    /// Processes one received message and says what to do with it (the loop in
    /// [`Worker::run`] applies it; serverless hosts can call this directly). Never panics;
    /// infrastructure errors become a delayed release; a message that keeps coming back
    /// unprocessed goes to the poison queue after `max_dequeue` deliveries (the run is then
    /// marked failed with the reason).
    pub async fn handle_message(&self, message: &QueueMessage) -> Disposition {
        self.handle_message_reporting(message).await.disposition
    }

    /// [`Worker::handle_message`], also saying whether the job sent work that can be
    /// received at once ([`Handled::enqueued_now`]).
    pub async fn handle_message_reporting(&self, message: &QueueMessage) -> Handled {
        self.handle_message_cancellable(message, CancellationToken::new())
            .await
    }

    /// [`Worker::handle_message_reporting`] with a token the running node observes (the
    /// polling loop fires it when the message's lease is lost).
    pub async fn handle_message_cancellable(
        &self,
        message: &QueueMessage,
        cancel: CancellationToken,
    ) -> Handled {
        self.handle_leased(message, cancel, false).await
    }

    /// [`Worker::handle_message_cancellable`]; with `hand_off`, the successors a commit fired
    /// are left unsent in `Handled::successors`, for the caller to run them itself.
    pub(crate) async fn handle_leased(
        &self,
        message: &QueueMessage,
        cancel: CancellationToken,
        hand_off: bool,
    ) -> Handled {
        let run_id = JobMessage::sniff_run_id(&message.text);
        let max = self.config.max_dequeue;
        if message.dequeue_count > max {
            // Deliveries whose lease lapsed under a running job do not count (see `lapses`).
            let lapsed = self.lapsed_leases(&message.id).await;
            if counted_deliveries(message.dequeue_count, lapsed, max) > max {
                let reason = format!(
                    "message {} was delivered {} times ({lapsed} of them lost their lease while \
                     the job ran; limit {max}) without being processed",
                    message.id, message.dequeue_count
                );
                return Handled::sent_nothing(self.poison(run_id, reason).await);
            }
            tracing::info!(message_id = %message.id, deliveries = message.dequeue_count, lapsed,
                "delivered more often than the limit, but leases lapsed under running jobs; \
                 processing it");
        }
        let job = match JobMessage::decode(&message.text) {
            Ok(job) => job,
            Err(e) => {
                let reason = format!("undecodable job message {}: {e}", message.id);
                return Handled::sent_nothing(self.poison(run_id, reason).await);
            }
        };
        let span = tracing::info_span!(
            "job",
            run_id = %job.run_id,
            node_id = %job.node_id,
            attempt = job.attempt(),
            activation = job.activation,
        );
        match self
            .run_job(&job, message.dequeue_count, cancel, hand_off)
            .instrument(span)
            .await
        {
            Ok(handled) => handled,
            // Stopped part-way: it may have sent successors before failing.
            Err(e) => Handled::new(self.after_error(&job, message.dequeue_count, e).await, true),
        }
    }

    /// Processes one decoded job. `Err` means an infrastructure error (retry the message).
    pub async fn handle_job(&self, job: &JobMessage, dequeue_count: u32) -> Result<Handled, Error> {
        self.run_job(job, dequeue_count, CancellationToken::new(), false)
            .await
    }

    /// The job path after decoding: load, classify, execute, commit, follow-ups, publish.
    async fn run_job(
        &self,
        job: &JobMessage,
        dequeue_count: u32,
        cancel: CancellationToken,
        hand_off: bool,
    ) -> Result<Handled, Error> {
        if let Some(ms) = job.remaining_ms.filter(|ms| *ms > 0) {
            // A chained delay (a long sleep or retryDelay): wait out the rest first.
            let mut next = job.clone();
            next.remaining_ms = None;
            let visible_now = send_delayed(
                self.backends.queue.as_ref(),
                next,
                Duration::from_millis(ms),
            )
            .await
            .map_err(|e| e.during("enqueue chained delay"))?;
            return Ok(Handled::complete(visible_now));
        }
        let Some(blueprint) = self.env.blueprints.get(&job.blueprint_id) else {
            let reason = format!(
                "job for node '{}' names blueprint '{}', which is not in this worker's \
                 registry; no retry can cure that (load the blueprint and start a new run)",
                job.node_id, job.blueprint_id
            );
            return Ok(Handled::sent_nothing(
                self.poison(Some(job.run_id.clone()), reason).await,
            ));
        };
        let runs = self.backends.runs.as_ref();
        // The state this worker committed last, when it already knows the job; anything but
        // "go ahead" on it is checked again on a fresh read (it may lag behind other workers).
        let mut cached = self.cached_for(job);
        let (loaded, work, ready) = loop {
            let from_cache = cached.is_some();
            let mut loaded = match cached.take() {
                Some(loaded) => loaded,
                None => match retry_transient(|| load_run(runs, &job.run_id)).await? {
                    Some(loaded) => Arc::new(loaded),
                    None => {
                        let why =
                            format!("run {} does not exist (or is not visible yet)", job.run_id);
                        return Ok(self.not_yet(job, dequeue_count, why).await);
                    }
                },
            };
            if needs_prepare(&loaded.value) {
                prepare(&mut Arc::make_mut(&mut loaded).value, &blueprint);
            }
            let state = &loaded.value;
            let Some(work) = resolve_work(state, job) else {
                if from_cache {
                    continue;
                }
                return Ok(self.dropped(job, "no outstanding work for this node"));
            };
            if self.in_settled_batch(&job.run_id, state, &work) {
                return Ok(self.dropped(job, SETTLED_BATCH));
            }
            match classify(state, Some(&blueprint), &probe_of(job, &work)) {
                Class::Ready(ready) => {
                    if !from_cache && state.book.batch_of(&work).is_some() {
                        // The run does not change while its batch runs: the other workers
                        // of the batch that this worker runs share this read.
                        self.cache.offer(loaded.clone());
                    }
                    break (loaded, work, ready);
                }
                _ if from_cache => continue,
                other => return self.dispose(job, dequeue_count, other, state).await,
            }
        };
        let batch = match ready {
            Ready::Execute => loaded.value.book.batch_of(&work),
            _ => None,
        };
        let probe = probe_of(job, &work);
        let plan = match ready {
            Ready::Execute => {
                let attempted = match &batch {
                    Some((key, record)) => {
                        let ran = self
                            .run_batch_worker(
                                job,
                                dequeue_count,
                                &work,
                                &blueprint,
                                &loaded,
                                (key, record),
                                cancel.clone(),
                                hand_off,
                            )
                            .await?;
                        match ran {
                            BatchWorker::Handled(handled) => return Ok(handled),
                            BatchWorker::Attempted(attempted) => attempted,
                        }
                    }
                    None => {
                        self.attempt(job, &work, &blueprint, &loaded.value, None, cancel.clone())
                            .await?
                    }
                };
                match attempted {
                    Attempted::Settle(settlement) => Plan::Execute(*settlement),
                    Attempted::RetryQueued { visible_now } => {
                        return Ok(Handled::complete(visible_now));
                    }
                    Attempted::Moot(why) if cancel.is_cancelled() => {
                        tracing::warn!(reason = %why, "job stopped; its next delivery redoes it");
                        return Ok(Handled::sent_nothing(Disposition::Release(Duration::ZERO)));
                    }
                    Attempted::Moot(why) => return Ok(self.dropped(job, why)),
                    Attempted::Later(why) => {
                        return Ok(self.not_yet(job, dequeue_count, why).await);
                    }
                }
            }
            Ready::Wake(_) => Plan::Wake,
            Ready::Resume(pending) => Plan::Resume(
                self.resume_subflow(&blueprint, &loaded.value, &work, pending)
                    .await,
            ),
            Ready::ClientResume(_) => {
                return Ok(self.dropped(job, "a job never carries a client's resume"));
            }
        };
        let decision = Decision {
            blueprint: &blueprint,
            probe,
            plan: &plan,
            now: self.env.sources.now(),
            heartbeat: i64::try_from(self.config.status_heartbeat.as_secs()).unwrap_or(60),
        };
        // The prepared state is still the loaded one (preparing again is a no-op), so the
        // first commit try needs no second read.
        let loaded = Arc::unwrap_or_clone(loaded);
        let (committed, state) = self
            .commit_run(&job.run_id, Some(loaded), |state| decide(state, &decision))
            .await?;
        match committed {
            Committed::Fresh { record, publish } => {
                let (enqueued_now, successors) = self
                    .follow_up_handing_off(job, &state, &record, publish, hand_off)
                    .await?;
                self.events.emit(Event::JobFinished {
                    run_id: job.run_id.clone(),
                    node_id: job.node_id.clone(),
                    kind: record.kind,
                });
                let mut handled = Handled::complete(enqueued_now);
                handled.successors = successors;
                self.arrive_if_batch_worker(job, &state, &record, dequeue_count, handled, hand_off)
                    .await
            }
            Committed::Reparked => {
                tracing::info!("the resumed sub-run waits again; the node stays awaiting");
                retry_transient(|| publish_status(runs, &self.events, &state, &self.env.sources))
                    .await?;
                Ok(Handled::complete(false))
            }
            Committed::Classified(class) => self.dispose(job, dequeue_count, class, &state).await,
        }
    }

    /// What to do with a job that classification did not let go ahead.
    async fn dispose(
        &self,
        job: &JobMessage,
        dequeue_count: u32,
        class: Class,
        state: &RunState,
    ) -> Result<Handled, Error> {
        match class {
            Class::Finished(phase) => {
                let runs = self.backends.runs.as_ref();
                retry_transient(|| publish_status(runs, &self.events, state, &self.env.sources))
                    .await?;
                Ok(self.dropped(job, format!("the run is {}", phase.as_str())))
            }
            Class::WrongBlueprint(why) => {
                let reason = format!("{why}; the job can never run (a malformed message)");
                let run_id = Some(job.run_id.clone());
                Ok(Handled::sent_nothing(self.poison(run_id, reason).await))
            }
            Class::VersionMismatch(why) => self.defer(job, why).await,
            Class::NotYet(why) => Ok(self.not_yet(job, dequeue_count, why).await),
            Class::Replay(record) => self.replay(job, state, record, dequeue_count).await,
            Class::RetryRecorded(retry) => self.resend_retry(job, state, retry).await,
            Class::Stale(why) => {
                if let Some((work, fold)) = folded_batch_of(state, job) {
                    return self.replay_fold(job, &work, state, &fold).await;
                }
                Ok(self.dropped(job, format!("stale job: {why}")))
            }
            Class::Ready(_) => Ok(self.dropped(job, "nothing left to do")),
        }
    }

    /// The disposition of a job that hit an error, by [`ErrorClass`]: a transient error is
    /// released with a growing delay and never poisons the message (at the delivery limit a
    /// fresh copy replaces it); a permanent one poisons the message at once and fails the
    /// run with the reason; any other is retried by redelivery and poisoned after
    /// `max_dequeue` deliveries.
    async fn after_error(&self, job: &JobMessage, dequeue_count: u32, e: Error) -> Disposition {
        let delay = self
            .config
            .error_delay
            .saturating_mul(dequeue_count.max(1))
            .min(MAX_RETRY_DELAY);
        match ErrorClass::of(&e) {
            ErrorClass::Transient => {
                tracing::warn!(run_id = %job.run_id, node_id = %job.node_id, error = %e,
                    "job hit a transient infrastructure error; it will be retried");
                if dequeue_count < self.config.max_dequeue {
                    return Disposition::Release(delay);
                }
                // Near the delivery limit: continue on a fresh copy (its count starts over),
                // so a long outage never poisons a healthy job.
                match send_delayed(self.backends.queue.as_ref(), job.clone(), delay).await {
                    Ok(_) => Disposition::Complete,
                    Err(_) => Disposition::Release(delay),
                }
            }
            // The same job would fail the same way on every delivery (and re-run its node
            // each time): fail the run now.
            ErrorClass::Permanent => {
                let reason = match e {
                    Error::TooLarge(_) => too_large_reason(job, &e),
                    _ => format!(
                        "job for node '{}' cannot be processed: {e}. Retrying cannot help, so \
                         the job is poisoned and the run failed",
                        job.node_id
                    ),
                };
                self.fail_permanently(job, reason).await
            }
            ErrorClass::Unsure if dequeue_count >= self.config.max_dequeue => {
                let reason = format!(
                    "job for node '{}' failed {} times; last error: {e}",
                    job.node_id, dequeue_count
                );
                self.poison(Some(job.run_id.clone()), reason).await
            }
            ErrorClass::Unsure => {
                tracing::warn!(run_id = %job.run_id, node_id = %job.node_id, error = %e,
                    "job hit an infrastructure error; it will be retried");
                Disposition::Release(delay)
            }
        }
    }

    /// A job that hit a permanent error: marks the run failed with `reason` (recorded for
    /// the job's node; only the status item when the run document cannot record it) and
    /// poisons the message with the same reason. Only when recording the failure fails on
    /// infrastructure is the message released instead (the next delivery meets the same
    /// error and tries again; poisoned after `max_dequeue` deliveries).
    async fn fail_permanently(&self, job: &JobMessage, reason: String) -> Disposition {
        match self.fail_run(&job.run_id, &job.node_id, &reason).await {
            Ok(()) => {
                self.events.emit(Event::JobFailed {
                    run_id: job.run_id.clone(),
                    node_id: job.node_id.clone(),
                    message: reason.clone(),
                });
                self.poisoned(Some(job.run_id.clone()), reason)
            }
            Err(e) => {
                tracing::warn!(run_id = %job.run_id, error = %e,
                    "could not mark the run failed; the job will be retried");
                Disposition::Release(self.config.error_delay)
            }
        }
    }

    /// Marks the run failed (best effort) and returns the poison disposition.
    async fn poison(&self, run_id: Option<String>, reason: String) -> Disposition {
        if let Some(run_id) = &run_id
            && let Err(e) = self.fail_run(run_id, "", &reason).await
        {
            tracing::warn!(run_id = %run_id, error = %e, "could not mark the poisoned run failed");
        }
        self.poisoned(run_id, reason)
    }

    /// Logs and announces (`JobPoisoned`) a message going to the poison queue with `reason`,
    /// and returns that disposition.
    fn poisoned(&self, run_id: Option<String>, reason: String) -> Disposition {
        tracing::error!(run_id = ?run_id, reason = %reason, "moving message to the poison queue");
        self.events.emit(Event::JobPoisoned {
            run_id,
            reason: reason.clone(),
        });
        Disposition::Poison(reason)
    }

    /// Marks the run failed with `reason` (recorded for `node_id`, empty for run-level
    /// failures), shrinking the bookkeeping if the document no longer fits. A document that
    /// cannot record the failure at all (unreadable, or refused even shrunk) is left as it
    /// is and the status item alone is marked failed, so clients and the reconciler see the
    /// reason (and the reconciler stops listing the run).
    async fn fail_run(&self, run_id: &str, node_id: &str, reason: &str) -> Result<(), Error> {
        let now = self.env.sources.now();
        let mut shrink = false;
        let mut result = Err(Error::unexpected("not attempted"));
        for _ in 0..2 {
            result = self
                .commit_run(run_id, None, |state| {
                    if fail_run(state, node_id, reason, now) {
                        state.book.revision += 1;
                        if shrink {
                            shrink_finished(state);
                        }
                        Step::Write(())
                    } else {
                        Step::Skip(())
                    }
                })
                .await;
            match &result {
                // The document outgrew the store: record the failure without the
                // bookkeeping a failed run no longer needs.
                Err(Error::TooLarge(_)) if !shrink => shrink = true,
                _ => break,
            }
        }
        match result {
            Ok(((), state)) => {
                let runs = self.backends.runs.as_ref();
                retry_transient(|| publish_status(runs, &self.events, &state, &self.env.sources))
                    .await
            }
            Err(Error::NotFound(_)) => Ok(()),
            Err(e) if ErrorClass::of(&e) == ErrorClass::Permanent => {
                tracing::warn!(run_id, error = %e,
                    "the run document cannot record the failure; marking its status item failed");
                let runs = self.backends.runs.as_ref();
                let now = self.env.sources.now_epoch();
                let closed =
                    retry_transient(|| fail_status_item(runs, run_id, reason, now, |_| true))
                        .await?;
                if closed {
                    self.events.emit(Event::RunFinished {
                        run_id: run_id.to_string(),
                        status: RunPhase::Failed,
                    });
                }
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    /// Defers a job whose run is pinned to another blueprint version: a copy is sent with a
    /// growing delay (the time deferred so far, from `defer_delay` up to 10 minutes) and this
    /// message is completed, so deferrals never count toward `max_dequeue`. Once the job has
    /// been deferred for `version_window`, it is poisoned and the run fails with the reason.
    async fn defer(&self, job: &JobMessage, why: String) -> Result<Handled, Error> {
        let so_far = job.deferred_ms.unwrap_or(0);
        let window = u64::try_from(self.config.version_window.as_millis()).unwrap_or(u64::MAX);
        if so_far >= window {
            let reason = format!(
                "{why}; no worker with that version took the job within {} s",
                self.config.version_window.as_secs()
            );
            let run_id = Some(job.run_id.clone());
            return Ok(Handled::sent_nothing(self.poison(run_id, reason).await));
        }
        let delay = Duration::from_millis(so_far)
            .max(self.config.defer_delay)
            .min(MAX_DEFER_DELAY)
            .max(Duration::from_millis(1));
        let mut next = job.clone();
        let delay_ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX);
        next.deferred_ms = Some(so_far.saturating_add(delay_ms));
        send_delayed(self.backends.queue.as_ref(), next, delay)
            .await
            .map_err(|e| e.during("defer job"))?;
        tracing::warn!(run_id = %job.run_id, node_id = %job.node_id, reason = %why,
            delay_ms, "deferring job to a worker with the pinned blueprint version");
        self.events.emit(Event::JobDeferred {
            run_id: job.run_id.clone(),
            node_id: job.node_id.clone(),
            reason: why,
        });
        Ok(Handled::complete(false))
    }

    /// Gives back a job that the loaded run does not know yet (a lagging read, or a run
    /// whose creation is not visible yet) for another try after a short, growing delay;
    /// poisoned (and the run failed) only when it is still unknown after `max_dequeue`
    /// deliveries.
    pub(crate) async fn not_yet(
        &self,
        job: &JobMessage,
        dequeue_count: u32,
        why: String,
    ) -> Handled {
        if dequeue_count >= self.config.max_dequeue {
            let reason = format!(
                "job for node '{}' is still unknown to its run after {dequeue_count} \
                 deliveries: {why}",
                job.node_id
            );
            return Handled::sent_nothing(self.poison(Some(job.run_id.clone()), reason).await);
        }
        tracing::info!(run_id = %job.run_id, node_id = %job.node_id, reason = %why,
            "the run as read does not know the job yet; retrying it shortly");
        let delay = self
            .config
            .stale_read_delay
            .saturating_mul(dequeue_count.max(1))
            .min(MAX_RETRY_DELAY);
        Handled::sent_nothing(Disposition::Release(delay))
    }

    /// Drops the job (logged, `JobDropped`): its message is completed, nothing is sent.
    pub(crate) fn dropped(&self, job: &JobMessage, reason: impl Into<String>) -> Handled {
        let reason = reason.into();
        tracing::info!(run_id = %job.run_id, node_id = %job.node_id, reason = %reason, "dropping job");
        self.events.emit(Event::JobDropped {
            run_id: job.run_id.clone(),
            node_id: job.node_id.clone(),
            reason,
        });
        Handled::sent_nothing(Disposition::Complete)
    }

    /// Re-sends the recorded retry of a failed attempt (the attempt's message came back:
    /// the worker that recorded the retry may have stopped before sending it), after its
    /// `retryDelay` (from now: the same delay whoever sends it, so a seeded run replays
    /// exactly; at worst the retry runs one delay later than first planned).
    async fn resend_retry(
        &self,
        job: &JobMessage,
        state: &RunState,
        retry: RetryRecord,
    ) -> Result<Handled, Error> {
        let delay = Duration::from_millis(retry.delay_ms);
        let mut next = job.clone().at_revision(state.book.revision);
        next.attempt = Some(retry.attempt);
        next.remaining_ms = None;
        next.deferred_ms = None;
        tracing::info!(
            next_attempt = retry.attempt,
            "attempt already failed; re-sending its retry"
        );
        let visible_now = send_delayed(self.backends.queue.as_ref(), next, delay)
            .await
            .map_err(|e| e.during("enqueue retry"))?;
        Ok(Handled::complete(visible_now))
    }

    /// Re-does the follow-ups of an already committed job (redelivery, a lost commit answer,
    /// a wake or resume whose follow-ups were not sent).
    async fn replay(
        &self,
        job: &JobMessage,
        state: &RunState,
        record: CommitRecord,
        dequeue_count: u32,
    ) -> Result<Handled, Error> {
        tracing::info!("job already committed; replaying its follow-ups");
        self.events.emit(Event::JobReplayed {
            run_id: job.run_id.clone(),
            node_id: job.node_id.clone(),
        });
        let publish = state.book.status != RunPhase::Running;
        let enqueued_now = self.follow_up(job, state, &record, publish).await?;
        let handled = Handled::complete(enqueued_now);
        self.arrive_if_batch_worker(job, state, &record, dequeue_count, handled, false)
            .await
    }

    /// The state this worker committed last for the job's run, when it is at least as new
    /// as the commit that scheduled the job (a job without a revision, e.g. a TypeScript
    /// client's, always reads the run).
    fn cached_for(&self, job: &JobMessage) -> Option<Arc<Versioned<RunState>>> {
        let rev = job.rev?;
        job.activation?;
        self.cache
            .get(&job.run_id)
            .filter(|cached| cached.value.book.revision >= rev)
    }

    /// Commits a transition of `run_id` (see [`super::commit`]) in turn with this worker's
    /// other commits of the run, starting from `loaded` or, when newer, the state this worker
    /// committed last (a stale start costs a conflict and a reload), and remembers the state
    /// it ends with. A commit whose answer was lost is retried like any transient error: the
    /// retry meets a conflict, reloads, and classification turns it into a replay.
    pub(crate) async fn commit_run<T>(
        &self,
        run_id: &str,
        loaded: Option<Versioned<RunState>>,
        apply: impl Fn(&mut RunState) -> Step<T>,
    ) -> Result<(T, RunState), Error> {
        let gate = self.cache.gate(run_id);
        let _turn = gate.lock().await;
        // Whether a try started from the remembered state, and whether the last try wrote.
        let (cached_start, wrote) = (AtomicBool::new(false), AtomicBool::new(false));
        let newest = |loaded: Option<Versioned<RunState>>| {
            let cached = self.cache.get(run_id);
            let pick = match (loaded, cached) {
                (Some(l), Some(c)) if c.value.book.revision > l.value.book.revision => {
                    Some(Arc::unwrap_or_clone(c))
                }
                (Some(l), _) => return Some(l),
                (None, c) => c.map(Arc::unwrap_or_clone),
            };
            cached_start.store(pick.is_some(), Ordering::Relaxed);
            pick
        };
        let apply = |state: &mut RunState| {
            let step = apply(state);
            wrote.store(matches!(step, Step::Write(_)), Ordering::Relaxed);
            step
        };
        let mut start = newest(loaded);
        let runs = self.backends.runs.as_ref();
        let mut result = retry_transient(|| {
            let first = start.take().or_else(|| newest(None));
            commit_versioned(runs, run_id, first, &apply)
        })
        .await;
        if result.is_ok() && !wrote.load(Ordering::Relaxed) && cached_start.load(Ordering::Relaxed)
        {
            // Never leave a job alone on the remembered state: decide again on a fresh read.
            result = retry_transient(|| commit_versioned(runs, run_id, None, &apply)).await;
        }
        match result {
            Ok((value, state)) => {
                self.cache.put(&state);
                Ok((value, state.value))
            }
            Err(e) => {
                self.cache.forget(run_id);
                Err(e)
            }
        }
    }

    /// Enqueues the work `record` fired and its wake-up (unless the run is over) and
    /// publishes the status when asked or final. Returns whether a message visible at once
    /// was sent.
    pub(crate) async fn follow_up(
        &self,
        job: &JobMessage,
        state: &RunState,
        record: &CommitRecord,
        publish: bool,
    ) -> Result<bool, Error> {
        self.follow_up_handing_off(job, state, record, publish, false)
            .await
            .map(|(enqueued_now, _)| enqueued_now)
    }

    /// [`Worker::follow_up`]; with `hand_off`, the executions fired by a commit of a
    /// running run that set no wake-up are not sent but returned, for the caller to run
    /// them itself under guard messages.
    pub(crate) async fn follow_up_handing_off(
        &self,
        job: &JobMessage,
        state: &RunState,
        record: &CommitRecord,
        publish: bool,
        hand_off: bool,
    ) -> Result<(bool, Vec<JobMessage>), Error> {
        let work = WorkItem {
            node: record.node.clone(),
            activation: record.activation,
        };
        let still_waiting = state.book.awaiting_for(&work).is_some();
        let wake = record
            .wake_after_ms
            .filter(|_| still_waiting)
            .map(|ms| (&work, ms));
        let rev = record.revision.unwrap_or(0);
        let mut enqueued_now = false;
        let mut successors = Vec::new();
        if !state.book.status.is_terminal() {
            match (&record.fired[..], wake) {
                (fired, None) if hand_off => {
                    successors = fired
                        .iter()
                        .map(|item| {
                            execute_job(&job.run_id, &job.blueprint_id, item).at_revision(rev)
                        })
                        .collect();
                }
                (fired, wake) => {
                    enqueued_now = enqueue_follow_ups(
                        self.backends.queue.as_ref(),
                        &job.run_id,
                        &job.blueprint_id,
                        rev,
                        fired,
                        wake,
                    )
                    .await?;
                }
            }
        }
        if publish || state.book.status.is_terminal() {
            let runs = self.backends.runs.as_ref();
            retry_transient(|| publish_status(runs, &self.events, state, &self.env.sources))
                .await?;
        }
        Ok((enqueued_now, successors))
    }
}

/// The work a job refers to. TypeScript-style jobs carry no activation: use the node's
/// outstanding work (`state` is prepared, so a foreign run's start work is there).
fn resolve_work(state: &RunState, job: &JobMessage) -> Option<WorkItem> {
    if let Some(activation) = job.activation {
        return Some(WorkItem {
            node: job.node_id.clone(),
            activation,
        });
    }
    state
        .book
        .outstanding
        .values()
        .find(|w| w.node == job.node_id)
        .cloned()
}

/// How the job path treats an infrastructure error: the retry policy, in one place.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ErrorClass {
    /// A retry may cure it ([`Error::is_transient`]: transport, timeout, 429, 5xx, the
    /// Cosmos retry table): retried in place, then by redelivery; never poisons a message
    /// or fails a run.
    Transient,
    /// The same request is refused the same way on every retry: the run document (or the
    /// commit) is over the store's size limit (`TooLarge`), or the request or what it read
    /// is malformed (`InvalidInput`: e.g. a run document whose bookkeeping was edited by
    /// hand, refused by [`RunState::from_document`]). Poisons the message on its first
    /// delivery and fails the run with the reason.
    Permanent,
    /// Anything else (a run not visible yet, endless conflicts, authentication, an
    /// unexpected answer): retried by redelivery, poisoned after `max_dequeue` deliveries.
    Unsure,
}

impl ErrorClass {
    /// The class of `error`.
    fn of(error: &Error) -> Self {
        if error.is_transient() {
            ErrorClass::Transient
        } else if matches!(error, Error::TooLarge(_) | Error::InvalidInput(_)) {
            ErrorClass::Permanent
        } else {
            ErrorClass::Unsure
        }
    }
}

/// The reason a run fails when the commit of `job` is larger than the store accepts
/// (`error` says how large, and the limit).
fn too_large_reason(job: &JobMessage, error: &Error) -> String {
    format!(
        "the commit of node '{}' makes the run document too large: {error}. No retry can cure \
         that, so the run fails: keep large values out of node outputs and the context (store \
         them elsewhere and pass a reference), or spread large work over a batch",
        job.node_id
    )
}
