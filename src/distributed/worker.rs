//! The worker: [`Worker::handle_message`] processes one queue message (decode, version gate,
//! idempotent replay, execute one attempt, ONE atomic commit, follow-ups); its polling loop
//! [`Worker::run`] lives in [`super::polling`].
//!
//! Per job, in order: load the run once; drop jobs of finished runs; defer (never acknowledge)
//! jobs for another blueprint version; replay a committed job's follow-ups; run the attempt;
//! on a retryable failure below `maxRetries` send the next attempt as a delayed message; else
//! commit the settlement (output, routing, joins, outstanding work, awaiting record, status)
//! in one conditional write; then enqueue the fired work and publish the status. A crash
//! anywhere is redone by redelivery: the commit record makes the redo a replay.

use crate::Error;
use crate::distributed::core::{
    Backends, Step, commit_from, commit_with, enqueue_follow_ups, publish_status, send_delayed,
};
use crate::distributed::events::{Event, EventBus};
use crate::distributed::job::{JobKind, JobMessage};
use crate::distributed::ports::{MAX_QUEUE_DELAY, QueueMessage, RunPhase, Versioned};
use crate::distributed::state::{CommitRecord, PendingResume, RunState, WorkItem};
use crate::distributed::transition::{
    Settlement, VersionCheck, check_version, fail_run, prepare, settle, shrink_finished,
    update_status, version_mismatch,
};
use crate::flow::blueprint::Blueprint;
use crate::flow::builtins::subflow;
use crate::flow::context::ContextDelta;
use crate::flow::execute::{
    AttemptOutcome, AttemptRequest, Environment, execute_attempt, max_attempts, node_definition,
    retry_delay,
};
use crate::flow::node::NodeResult;
use crate::flow::runtime::{FlowRuntime, RunStatus, SUBFLOW_STATE_PREFIX};
use serde_json::{Map, Value};
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

/// Worker settings.
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    /// Jobs processed at once.
    pub concurrency: usize,
    /// Messages asked for per receive (1..=32; also bounded by free slots).
    pub batch_size: usize,
    /// Lease per received message; renewed at half of it while the job runs.
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
    /// How long a deferred job (other blueprint version) stays hidden before another try.
    pub defer_delay: Duration,
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
}

impl Handled {
    /// The message is done (`Complete`); `enqueued_now` as in [`Handled::enqueued_now`].
    fn complete(enqueued_now: bool) -> Self {
        Handled {
            disposition: Disposition::Complete,
            enqueued_now,
        }
    }

    /// A job that sent no message.
    fn sent_nothing(disposition: Disposition) -> Self {
        Handled {
            disposition,
            enqueued_now: false,
        }
    }
}

/// What running one attempt led to.
enum Attempted {
    /// Commit this settlement (the attempt succeeded, or failed for good).
    Settle(Box<Settlement>),
    /// The attempt failed and the next one was queued; `visible_now`: without delay.
    RetryQueued { visible_now: bool },
}

/// What a commit of a job turned out to be.
enum Committed {
    /// This delivery committed the settlement.
    Fresh { record: CommitRecord, publish: bool },
    /// The settlement was already committed (redelivery): replay it.
    Replay(CommitRecord),
    /// A resumed sub-run waits again: its new state was stored, the node keeps waiting.
    Reparked,
    /// The run finished or the work is gone: nothing to do.
    Dropped(String),
    /// The run is pinned to another blueprint version.
    Deferred(String),
}

/// What a job's commit needs to decide, besides the freshly loaded state.
struct Decision<'a> {
    blueprint: &'a Blueprint,
    work: &'a WorkItem,
    plan: &'a Plan,
    resume_seq: Option<u64>,
    now: chrono::DateTime<chrono::Utc>,
    heartbeat: i64,
}

/// The transition a job commits, applied to a freshly loaded state (re-run after every ETag
/// conflict): drops jobs of finished runs and stale jobs, defers version mismatches, replays
/// committed work, re-parks a sub-run that waits again, or settles the node.
fn decide(state: &mut RunState, d: &Decision<'_>) -> Step<Committed> {
    let Decision {
        blueprint,
        work,
        plan,
        now,
        heartbeat,
        ..
    } = *d;
    if state.book.status.is_terminal() {
        return Step::Skip(Committed::Dropped(format!(
            "the run is {}",
            state.book.status.as_str()
        )));
    }
    if let VersionCheck::Mismatch { pinned } = check_version(state, blueprint) {
        return Step::Skip(Committed::Deferred(version_mismatch(&pinned, blueprint)));
    }
    prepare(state, blueprint);
    let waiting = state.book.awaiting_for(work).cloned();
    let settlement = match plan {
        Plan::Wake => match waiting {
            Some(rec) => Settlement::Resumed(
                NodeResult {
                    output: rec.output,
                    action: None,
                    dynamic_nodes: Vec::new(),
                },
                Vec::new(),
            ),
            None => {
                return Step::Skip(Committed::Dropped(
                    "the sleeping node was already resumed".into(),
                ));
            }
        },
        Plan::Resume(outcome) => {
            let current = waiting
                .and_then(|rec| rec.pending_resume)
                .is_some_and(|p| Some(p.seq) == d.resume_seq);
            if !current {
                return Step::Skip(Committed::Dropped("stale resume".into()));
            }
            match outcome {
                SubflowResume::Settle(settlement) => settlement.clone(),
                SubflowResume::Repark(sub_state) => {
                    state.context.insert(
                        format!("{SUBFLOW_STATE_PREFIX}{}", work.node),
                        Value::Object(sub_state.clone()),
                    );
                    if let Some(rec) = state.book.awaiting.get_mut(&work.node) {
                        rec.pending_resume = None;
                    }
                    state.book.revision += 1;
                    update_status(state);
                    return Step::Write(Committed::Reparked);
                }
            }
        }
        Plan::Execute(settlement) => {
            if let Some(record) = state.book.commits.get(&work.key()) {
                return Step::Skip(Committed::Replay(record.clone()));
            }
            if !state.book.outstanding.contains_key(&work.key()) {
                return Step::Skip(Committed::Dropped("stale job".into()));
            }
            settlement.clone()
        }
    };
    let before = state.book.status;
    let record = settle(state, blueprint, work, settlement, now);
    let due = now.timestamp() - state.book.status_touched_at >= heartbeat;
    let publish = due || before != state.book.status;
    if publish {
        state.book.status_touched_at = now.timestamp();
    }
    Step::Write(Committed::Fresh { record, publish })
}

/// What a job will commit, decided before the commit loop.
enum Plan {
    /// Settle an executed attempt.
    Execute(Settlement),
    /// Complete a sleeping node with its stored output.
    Wake,
    /// Apply the outcome of a resumed sub-run.
    Resume(SubflowResume),
}

/// The outcome of resuming an awaiting subflow node's sub-run.
enum SubflowResume {
    /// The sub-run finished: complete (or fail) the node.
    Settle(Settlement),
    /// The sub-run waits again: store its new state.
    Repark(Map<String, Value>),
}

/// A distributed worker over some [`Backends`].
#[derive(Debug)]
pub struct Worker {
    env: Environment,
    pub(crate) backends: Backends,
    pub(crate) config: WorkerConfig,
    events: EventBus,
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
    /// infrastructure errors become a delayed release, and after `max_dequeue` deliveries
    /// the poison queue (the run is then marked failed with the reason).
    pub async fn handle_message(&self, message: &QueueMessage) -> Disposition {
        self.handle_message_reporting(message).await.disposition
    }

    /// [`Worker::handle_message`], also saying whether the job sent work that can be
    /// received at once ([`Handled::enqueued_now`]).
    pub async fn handle_message_reporting(&self, message: &QueueMessage) -> Handled {
        let run_id = JobMessage::sniff_run_id(&message.text);
        if message.dequeue_count > self.config.max_dequeue {
            let reason = format!(
                "message {} was delivered {} times (limit {}) without being processed",
                message.id, message.dequeue_count, self.config.max_dequeue
            );
            return Handled::sent_nothing(self.poison(run_id, reason).await);
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
            .handle_job(&job, message.dequeue_count)
            .instrument(span)
            .await
        {
            Ok(handled) => handled,
            Err(e) => Handled {
                disposition: self.after_error(&job, message.dequeue_count, e).await,
                // Stopped part-way: it may have sent successors before failing.
                enqueued_now: true,
            },
        }
    }

    /// The disposition of a job that hit an error: a delayed release for another try, the
    /// poison queue after `max_dequeue` deliveries, a failed run when it is too large.
    async fn after_error(&self, job: &JobMessage, dequeue_count: u32, e: Error) -> Disposition {
        match e {
            // Permanent: the same job would grow the run document past the store's item
            // limit on every retry, so fail the run now instead of re-running the node.
            e @ Error::TooLarge(_) => self.fail_too_large(job, &e).await,
            e if dequeue_count >= self.config.max_dequeue => {
                let reason = format!(
                    "job for node '{}' failed {} times; last error: {e}",
                    job.node_id, dequeue_count
                );
                self.poison(Some(job.run_id.clone()), reason).await
            }
            e => {
                tracing::warn!(run_id = %job.run_id, node_id = %job.node_id, error = %e,
                    "job hit an infrastructure error; it will be retried");
                let delay = self.config.error_delay.saturating_mul(dequeue_count.max(1));
                Disposition::Release(delay.min(MAX_QUEUE_DELAY))
            }
        }
    }

    /// A job whose commit (or follow-up) is larger than the backends accept: marks the run
    /// failed with the reason and drops the message. Only when recording the failure itself
    /// fails is the message released (and poisoned after `max_dequeue` deliveries).
    async fn fail_too_large(&self, job: &JobMessage, error: &Error) -> Disposition {
        let reason = format!(
            "node '{}' cannot be committed: {error}. The run document (or a message) would \
             exceed the store's size limit, which no retry can cure, so the run fails; keep \
             large values out of the context (store them elsewhere and pass a reference)",
            job.node_id
        );
        tracing::error!(run_id = %job.run_id, node_id = %job.node_id, reason = %reason,
            "failing the run: its state is too large");
        self.events.emit(Event::JobFailed {
            run_id: job.run_id.clone(),
            node_id: job.node_id.clone(),
            message: reason.clone(),
        });
        match self.fail_run(&job.run_id, &job.node_id, &reason).await {
            Ok(()) => Disposition::Complete,
            Err(e) => {
                tracing::warn!(run_id = %job.run_id, error = %e,
                    "could not mark the run failed; the job will be retried");
                Disposition::Release(self.config.error_delay)
            }
        }
    }

    /// Marks the run failed (best effort) and returns the poison disposition.
    async fn poison(&self, run_id: Option<String>, reason: String) -> Disposition {
        tracing::error!(run_id = ?run_id, reason = %reason, "moving message to the poison queue");
        if let Some(run_id) = &run_id
            && let Err(e) = self.fail_run(run_id, "", &reason).await
        {
            tracing::warn!(run_id = %run_id, error = %e, "could not mark the poisoned run failed");
        }
        self.events.emit(Event::JobPoisoned {
            run_id,
            reason: reason.clone(),
        });
        Disposition::Poison(reason)
    }

    /// Marks the run failed with `reason` (recorded for `node_id`, empty for run-level
    /// failures), shrinking the bookkeeping if the document no longer fits.
    async fn fail_run(&self, run_id: &str, node_id: &str, reason: &str) -> Result<(), Error> {
        let now = chrono::Utc::now();
        let mut shrink = false;
        let mut result = Err(Error::unexpected("not attempted"));
        for _ in 0..2 {
            result = commit_with(self.backends.runs.as_ref(), run_id, |state| {
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
                publish_status(self.backends.runs.as_ref(), &self.events, &state).await
            }
            Err(Error::NotFound(_)) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Gives a job back for another worker (other blueprint version, unknown blueprint);
    /// after `max_dequeue` deliveries it is poisoned and the run fails with the reason.
    async fn deferred(&self, job: &JobMessage, dequeue_count: u32, why: String) -> Handled {
        if dequeue_count >= self.config.max_dequeue {
            let reason =
                format!("{why}; no suitable worker took the job after {dequeue_count} deliveries");
            return Handled::sent_nothing(self.poison(Some(job.run_id.clone()), reason).await);
        }
        tracing::warn!(run_id = %job.run_id, node_id = %job.node_id, reason = %why,
            "deferring job to another worker");
        self.events.emit(Event::JobDeferred {
            run_id: job.run_id.clone(),
            node_id: job.node_id.clone(),
            reason: why,
        });
        Handled::sent_nothing(Disposition::Release(
            self.config.defer_delay.min(MAX_QUEUE_DELAY),
        ))
    }

    /// Drops the job (logged, `JobDropped`): its message is completed, nothing is sent.
    fn dropped(&self, job: &JobMessage, reason: impl Into<String>) -> Handled {
        let reason = reason.into();
        tracing::info!(run_id = %job.run_id, node_id = %job.node_id, reason = %reason, "dropping job");
        self.events.emit(Event::JobDropped {
            run_id: job.run_id.clone(),
            node_id: job.node_id.clone(),
            reason,
        });
        Handled::sent_nothing(Disposition::Complete)
    }

    /// Processes one decoded job. `Err` means an infrastructure error (retry the message).
    pub async fn handle_job(&self, job: &JobMessage, dequeue_count: u32) -> Result<Handled, Error> {
        let Some(blueprint) = self.env.blueprints.get(&job.blueprint_id) else {
            let why = format!(
                "blueprint '{}' is not in this worker's registry",
                job.blueprint_id
            );
            return Ok(self.deferred(job, dequeue_count, why).await);
        };
        let runs = self.backends.runs.as_ref();
        let Some(loaded) = runs.load(&job.run_id).await? else {
            return Ok(self.dropped(job, "the run does not exist"));
        };
        let etag = loaded.etag;
        let state = loaded.value;
        if let Some(id) = state.blueprint_id()
            && id != job.blueprint_id
        {
            // A malformed job, not a broken run: poison the message, leave the run alone.
            let reason = format!(
                "job names blueprint '{}' but run {} runs '{id}'",
                job.blueprint_id, job.run_id
            );
            tracing::error!(reason = %reason, "moving message to the poison queue");
            self.events.emit(Event::JobPoisoned {
                run_id: Some(job.run_id.clone()),
                reason: reason.clone(),
            });
            return Ok(Handled::sent_nothing(Disposition::Poison(reason)));
        }
        if state.book.status.is_terminal() {
            publish_status(runs, &self.events, &state).await?;
            return Ok(self.dropped(job, format!("the run is {}", state.book.status.as_str())));
        }
        if let VersionCheck::Mismatch { pinned } = check_version(&state, &blueprint) {
            let why = version_mismatch(&pinned, &blueprint);
            return Ok(self.deferred(job, dequeue_count, why).await);
        }
        let mut state = state;
        prepare(&mut state, &blueprint);
        let Some(work) = resolve_work(&state, job) else {
            return Ok(self.dropped(job, "no outstanding work for this node"));
        };
        let plan = match job.kind {
            JobKind::Wake => {
                if let Some(ms) = job.remaining_ms.filter(|ms| *ms > 0) {
                    let mut next = job.clone();
                    next.remaining_ms = None;
                    let visible_now = send_delayed(
                        self.backends.queue.as_ref(),
                        next,
                        Duration::from_millis(ms),
                    )
                    .await?;
                    return Ok(Handled::complete(visible_now));
                }
                Plan::Wake
            }
            JobKind::Resume => {
                let pending = state
                    .book
                    .awaiting_for(&work)
                    .and_then(|rec| rec.pending_resume.clone())
                    .filter(|p| Some(p.seq) == job.resume_seq);
                let Some(pending) = pending else {
                    return Ok(
                        self.dropped(job, "stale resume: the node is no longer waiting for it")
                    );
                };
                Plan::Resume(
                    self.resume_subflow(&blueprint, &state, &work, pending)
                        .await,
                )
            }
            JobKind::Execute => {
                if let Some(record) = state.book.commits.get(&work.key()) {
                    let record = record.clone();
                    return self.replay(job, &state, record).await;
                }
                if !state.book.outstanding.contains_key(&work.key()) {
                    return Ok(self.dropped(job, "stale job: its work is not outstanding"));
                }
                match self.attempt(job, &blueprint, &state).await? {
                    Attempted::Settle(settlement) => Plan::Execute(*settlement),
                    Attempted::RetryQueued { visible_now } => {
                        return Ok(Handled::complete(visible_now));
                    }
                }
            }
        };
        let now = chrono::Utc::now();
        let heartbeat = i64::try_from(self.config.status_heartbeat.as_secs()).unwrap_or(60);
        // The prepared state is still the loaded one (preparing again is a no-op), so the
        // first commit try needs no second read.
        let loaded = Versioned { value: state, etag };
        let decision = Decision {
            blueprint: &blueprint,
            work: &work,
            plan: &plan,
            resume_seq: job.resume_seq,
            now,
            heartbeat,
        };
        let (committed, state) = commit_from(runs, &job.run_id, Some(loaded), |state| {
            decide(state, &decision)
        })
        .await?;
        match committed {
            Committed::Fresh { record, publish } => {
                let enqueued_now = self.follow_up(job, &state, &record, publish).await?;
                self.events.emit(Event::JobFinished {
                    run_id: job.run_id.clone(),
                    node_id: job.node_id.clone(),
                    kind: record.kind,
                });
                Ok(Handled::complete(enqueued_now))
            }
            Committed::Replay(record) => self.replay(job, &state, record).await,
            Committed::Reparked => {
                tracing::info!("the resumed sub-run waits again; the node stays awaiting");
                publish_status(runs, &self.events, &state).await?;
                Ok(Handled::complete(false))
            }
            Committed::Dropped(reason) => Ok(self.dropped(job, reason)),
            Committed::Deferred(why) => Ok(self.deferred(job, dequeue_count, why).await),
        }
    }

    /// Resumes the sub-run of an awaiting subflow node with the requested action and output
    /// (like the in-process runtime): completed -> the node completes with the subflow's
    /// output; awaiting -> the node waits again; otherwise -> the node fails.
    async fn resume_subflow(
        &self,
        blueprint: &Arc<Blueprint>,
        state: &RunState,
        work: &WorkItem,
        pending: PendingResume,
    ) -> SubflowResume {
        let node = work.node.as_str();
        let key = format!("{SUBFLOW_STATE_PREFIX}{node}");
        let Some(Value::Object(sub_state)) = state.context.get(&key).cloned() else {
            let result = NodeResult {
                output: pending.output,
                action: pending.action,
                dynamic_nodes: Vec::new(),
            };
            return SubflowResume::Settle(Settlement::Resumed(result, Vec::new()));
        };
        let params = node_definition(blueprint, node, &state.context)
            .and_then(|n| n.params.clone())
            .unwrap_or_default();
        let sub_blueprint = match subflow::sub_blueprint(&self.env, node, &params) {
            Ok(bp) => bp,
            Err(error) => return SubflowResume::Settle(Settlement::Failed(error)),
        };
        let sub_env = match subflow::nested_environment(&self.env, node, sub_blueprint.id()) {
            Ok(env) => env,
            Err(error) => return SubflowResume::Settle(Settlement::Failed(error)),
        };
        let sub = FlowRuntime::new(sub_env.clone())
            .resume(
                sub_blueprint.clone(),
                sub_state,
                None,
                pending.action,
                pending.output,
            )
            .await;
        match sub.status {
            RunStatus::Awaiting => SubflowResume::Repark(sub.context),
            RunStatus::Completed => {
                let (output, writes) =
                    subflow::subflow_output(&params, &sub_blueprint, &sub.context);
                let deltas = writes
                    .into_iter()
                    .map(|(key, value)| ContextDelta::Set { key, value })
                    .collect();
                let result = NodeResult {
                    output,
                    ..NodeResult::default()
                };
                SubflowResume::Settle(Settlement::Resumed(result, deltas))
            }
            _ => SubflowResume::Settle(Settlement::Failed(subflow::incomplete_error(
                &sub_env,
                sub_blueprint.id(),
                &sub,
            ))),
        }
    }

    /// Runs one attempt: the settlement to commit, or the retry it queued (nothing to commit).
    async fn attempt(
        &self,
        job: &JobMessage,
        blueprint: &Arc<Blueprint>,
        state: &RunState,
    ) -> Result<Attempted, Error> {
        let attempt = job.attempt();
        self.events.emit(Event::JobStarted {
            run_id: job.run_id.clone(),
            node_id: job.node_id.clone(),
            attempt,
        });
        let outcome = execute_attempt(AttemptRequest {
            env: &self.env,
            blueprint,
            node_id: &job.node_id,
            run_id: &job.run_id,
            context: &state.context,
            attempt,
            cancel: CancellationToken::new(),
            input: None,
        })
        .await;
        match outcome {
            AttemptOutcome::Completed(completion) => Ok(Attempted::Settle(Box::new(
                Settlement::Finished(completion),
            ))),
            AttemptOutcome::Failed { error, retryable } => {
                let node = node_definition(blueprint, &job.node_id, &state.context);
                let limit = node.as_deref().map_or(1, max_attempts);
                if retryable && attempt < limit {
                    let delay = node
                        .as_deref()
                        .map_or(Duration::ZERO, |n| retry_delay(n, attempt + 1));
                    let mut next = job.clone();
                    next.attempt = Some(attempt + 1);
                    next.remaining_ms = None;
                    let visible_now =
                        send_delayed(self.backends.queue.as_ref(), next, delay).await?;
                    tracing::info!(error = %error.message, next_attempt = attempt + 1,
                        delay_ms = delay.as_millis() as u64, "attempt failed; retry queued");
                    self.events.emit(Event::JobRetried {
                        run_id: job.run_id.clone(),
                        node_id: job.node_id.clone(),
                        next_attempt: attempt + 1,
                        delay,
                    });
                    return Ok(Attempted::RetryQueued { visible_now });
                }
                tracing::warn!(error = %error.message, "node failed on its last attempt");
                self.events.emit(Event::JobFailed {
                    run_id: job.run_id.clone(),
                    node_id: job.node_id.clone(),
                    message: error.message.clone(),
                });
                Ok(Attempted::Settle(Box::new(Settlement::Failed(error))))
            }
        }
    }

    /// Re-does the follow-ups of an already committed job (redelivery, F4).
    async fn replay(
        &self,
        job: &JobMessage,
        state: &RunState,
        record: CommitRecord,
    ) -> Result<Handled, Error> {
        tracing::info!("job already committed; replaying its follow-ups");
        self.events.emit(Event::JobReplayed {
            run_id: job.run_id.clone(),
            node_id: job.node_id.clone(),
        });
        let publish = state.book.status != RunPhase::Running;
        let enqueued_now = self.follow_up(job, state, &record, publish).await?;
        Ok(Handled::complete(enqueued_now))
    }

    /// Enqueues the work `record` fired and its wake-up (unless the run is over) and
    /// publishes the status when asked or final. Returns whether a message visible at once
    /// was sent.
    async fn follow_up(
        &self,
        job: &JobMessage,
        state: &RunState,
        record: &CommitRecord,
        publish: bool,
    ) -> Result<bool, Error> {
        let work = WorkItem {
            node: record.node.clone(),
            activation: record.activation,
        };
        let still_waiting = state.book.awaiting_for(&work).is_some();
        let wake = record
            .wake_after_ms
            .filter(|_| still_waiting)
            .map(|ms| (&work, ms));
        let mut enqueued_now = false;
        if !state.book.status.is_terminal() {
            enqueued_now = enqueue_follow_ups(
                self.backends.queue.as_ref(),
                &job.run_id,
                &job.blueprint_id,
                &record.fired,
                wake,
            )
            .await?;
        }
        if publish || state.book.status.is_terminal() {
            publish_status(self.backends.runs.as_ref(), &self.events, state).await?;
        }
        Ok(enqueued_now)
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
