//! The client API: start a run, read its status, wait for it, cancel it, resume an awaiting
//! node with an action and output (through the normal commit + routing path, F3), and
//! reconcile a run by re-enqueueing its recorded outstanding work (never re-deriving routing).

use crate::Error;
use crate::ErrorInfo;
use crate::distributed::batch_fold::arrive_after_commit;
use crate::distributed::classify::{Class, Probe, Ready, Request, classify};
use crate::distributed::commit::{Step, commit_from, commit_with};
use crate::distributed::core::{Backends, run_not_found, to_result};
use crate::distributed::events::EventBus;
use crate::distributed::follow_ups::{
    enqueue_follow_ups, execute_job, resume_job, retry_transient, send_delayed,
};
use crate::distributed::ports::RunPhase;
use crate::distributed::publish::{publish_status, status_record};
use crate::distributed::state::{CommitRecord, PendingResume, RetryRecord, RunState, WorkItem};
use crate::distributed::transition::{
    Settlement, cancel, new_run, resume_target, settle, update_status, wake_after_ms,
};
use crate::flow::blueprint::Blueprint;
use crate::flow::execute::BlueprintRegistry;
use crate::flow::node::NodeResult;
use crate::flow::runtime::{SUBFLOW_STATE_PREFIX, WorkflowResult};
use crate::flow::sources::{Clock, IdSource, Sources};
use serde_json::{Map, Value};
use std::sync::Arc;
use std::time::Duration;

/// TTL of the `flowcraft:blueprint:<run>` key written at start (TypeScript reconcile fallback).
const BLUEPRINT_KEY_TTL: Duration = Duration::from_secs(7 * 24 * 3600);

/// How long after its due time a recorded retry that has not run is taken for lost and
/// re-sent by [`Client::reconcile`] (its delayed message is normally on its way, and a
/// failed attempt whose retry was never sent re-sends it itself when it is redelivered).
const RETRY_LOST_AFTER: Duration = Duration::from_secs(60);

/// How often [`Client::wait_for`] reads the run document while the status item still says
/// `running`.
pub const DOCUMENT_CHECK_EVERY: Duration = Duration::from_secs(10);

/// Starts and steers distributed runs.
///
/// ```
/// use flowcraft_azure::distributed::client::Client;
/// use flowcraft_azure::distributed::core::Backends;
/// use flowcraft_azure::distributed::worker::{Worker, WorkerConfig};
/// use flowcraft_azure::flow::blueprint::Blueprint;
/// use flowcraft_azure::flow::execute::{BlueprintRegistry, Environment};
/// use flowcraft_azure::flow::node::NodeRegistry;
/// use flowcraft_azure::flow::runtime::RunStatus;
/// use std::sync::Arc;
/// use std::time::Duration;
/// use tokio_util::sync::CancellationToken;
/// # tokio::runtime::Runtime::new().unwrap().block_on(async {
/// let bp = Blueprint::from_json(r#"{"id":"hi","nodes":[{"id":"a","uses":"echo","inputs":"name"}],"edges":[]}"#).unwrap();
/// let mut blueprints = BlueprintRegistry::new();
/// blueprints.insert(bp);
/// let env = Environment::new(NodeRegistry::with_builtins()).with_blueprints(blueprints);
/// let backends = Backends::in_memory();
/// let worker = Arc::new(Worker::new(env.clone(), backends.clone(), WorkerConfig::default()));
/// let shutdown = CancellationToken::new();
/// let running = tokio::spawn(worker.run(shutdown.clone()));
///
/// let client = Client::new(backends, env.blueprints.clone());
/// let mut initial = serde_json::Map::new();
/// initial.insert("name".into(), "Ada".into());
/// let run_id = client.start_run("hi", initial).await.unwrap();
/// let result = client.wait_for(&run_id, Duration::from_secs(10)).await.unwrap();
/// assert_eq!(result.status, RunStatus::Completed);
/// assert_eq!(result.context["a"], "Ada");
/// shutdown.cancel();
/// running.await.unwrap();
/// # });
/// ```
#[derive(Debug, Clone)]
pub struct Client {
    backends: Backends,
    blueprints: Arc<BlueprintRegistry>,
    events: EventBus,
    sources: Sources,
}

impl Client {
    /// A client for the blueprints in `blueprints` over `backends`.
    pub fn new(backends: Backends, blueprints: Arc<BlueprintRegistry>) -> Self {
        Client {
            backends,
            blueprints,
            events: EventBus::default(),
            sources: Sources::system(),
        }
    }

    /// Makes up run ids and reads the time from `sources` (e.g. the workers' ones,
    /// [`crate::flow::execute::Environment::sources`]) instead of the system ones.
    pub fn with_sources(mut self, sources: Sources) -> Self {
        self.sources = sources;
        self
    }

    /// Makes up run ids with `ids`.
    pub fn with_ids(mut self, ids: Arc<dyn IdSource>) -> Self {
        self.sources = self.sources.with_ids(ids);
        self
    }

    /// Reads the current time from `clock` (status `lastUpdated`, resume and reconcile times).
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.sources = self.sources.with_clock(clock);
        self
    }

    /// The sources the client makes up values with.
    pub(crate) fn sources(&self) -> &Sources {
        &self.sources
    }

    /// Uses `events` (e.g. shared with workers) instead of a private bus.
    pub fn with_events(mut self, events: EventBus) -> Self {
        self.events = events;
        self
    }

    /// Starts a run of `blueprint_id` over `initial` under a fresh id: creates its state
    /// (pinning `blueprintId` and `blueprintVersion`) and status, and enqueues its start
    /// nodes (fallback-only nodes excluded, F19). Returns the run id.
    pub async fn start_run(
        &self,
        blueprint_id: &str,
        initial: Map<String, Value>,
    ) -> Result<String, Error> {
        let run_id = self.sources.new_id();
        self.start_run_with_id(&run_id, blueprint_id, initial)
            .await?;
        Ok(run_id)
    }

    /// [`Client::start_run`] under a caller-chosen id, idempotently: when the run already
    /// exists (a retried call, or a first call whose answer was lost) no second run is
    /// created; its start jobs are sent again while nothing has been committed yet (jobs are
    /// idempotent). `Conflict` when the id belongs to a run of another blueprint.
    pub async fn start_run_with_id(
        &self,
        run_id: &str,
        blueprint_id: &str,
        initial: Map<String, Value>,
    ) -> Result<(), Error> {
        let blueprint = self.blueprints.get(blueprint_id).ok_or_else(|| {
            Error::invalid_input(format!(
                "blueprint '{blueprint_id}' is not in the client's registry; load it first"
            ))
        })?;
        let runs = self.backends.runs.as_ref();
        let (mut state, mut work) = new_run(run_id, &blueprint, initial);
        let mut status = status_record(&state, self.sources.now_epoch());
        status.started_at = Some(status.last_updated);
        state.book.status_touched_at = status.last_updated;
        let created = retry_transient(|| runs.create_run(&state, &status))
            .await
            .map_err(|e| e.during("create run"))?;
        if !created {
            // Not visible yet (a lagging read right after our own lost-answer create): it
            // is the run this call created, so carry on with our copy.
            let existing = retry_transient(|| runs.load(run_id))
                .await?
                .map_or_else(|| state.clone(), |v| v.value);
            if existing.blueprint_id() != Some(blueprint_id) {
                return Err(Error::Conflict(Box::new(ErrorInfo::new(format!(
                    "run {run_id} already exists and runs blueprint '{}', not '{blueprint_id}'; \
                     choose another run id",
                    existing.blueprint_id().unwrap_or("?")
                )))));
            }
            tracing::info!(run_id, "run already exists; not starting it again");
            // The first call may have stopped between the run item and its status item:
            // write the status item if it is missing (a no-op when it is current).
            retry_transient(|| publish_status(runs, &self.events, &existing, &self.sources))
                .await?;
            if existing.book.revision > 0 || existing.book.status.is_terminal() {
                return Ok(());
            }
            work = existing.book.outstanding.values().cloned().collect();
            state = existing;
        }
        let key = format!("flowcraft:blueprint:{run_id}");
        if let Err(e) = self
            .backends
            .coordination
            .set_if_not_exists(&key, blueprint_id, BLUEPRINT_KEY_TTL)
            .await
        {
            // Only a TypeScript reconciler's fallback reads it; runs never depend on it.
            tracing::warn!(run_id, error = %e, "could not record the run's blueprint key");
        }
        let queue = self.backends.queue.as_ref();
        enqueue_follow_ups(queue, run_id, blueprint_id, 0, &work, None).await?;
        if state.book.status.is_terminal() {
            retry_transient(|| publish_status(runs, &self.events, &state, &self.sources)).await?;
        }
        tracing::info!(run_id = %run_id, blueprint_id, start_jobs = work.len(), "run started");
        Ok(())
    }

    /// The run's current result (`running` while work is outstanding); `None` when the run
    /// does not exist.
    pub async fn status(&self, run_id: &str) -> Result<Option<WorkflowResult>, Error> {
        let loaded = self.backends.runs.load(run_id).await?;
        Ok(loaded.map(|v| to_result(&v.value)))
    }

    /// Waits until the run is no longer `running` (finished or awaiting) and returns its
    /// result; `Error::Timeout` after `timeout` (a timeout too long to represent waits for
    /// good). It polls the small status item and reads the run document (which can be large)
    /// only when the status item says the run stopped running, and every
    /// [`DOCUMENT_CHECK_EVERY`] in case the status item lags behind (a worker that stopped
    /// between its commit and the status write).
    pub async fn wait_for(&self, run_id: &str, timeout: Duration) -> Result<WorkflowResult, Error> {
        let deadline = tokio::time::Instant::now().checked_add(timeout);
        let mut pause = Duration::from_millis(5);
        let mut next_document_check = tokio::time::Instant::now();
        loop {
            let now = tokio::time::Instant::now();
            let status = self.backends.runs.status(run_id).await?;
            let stopped = status.is_none_or(|s| s.value.status != RunPhase::Running);
            if stopped || now >= next_document_check {
                let state = self.load(run_id).await?;
                if state.book.status != RunPhase::Running {
                    return Ok(to_result(&state));
                }
                next_document_check = now + DOCUMENT_CHECK_EVERY;
            }
            let left = deadline.map(|d| d.saturating_duration_since(tokio::time::Instant::now()));
            if left.is_some_and(|left| left.is_zero()) {
                return Err(Error::Timeout(Box::new(ErrorInfo::new(format!(
                    "run {run_id} is still running after {} ms",
                    timeout.as_millis()
                )))));
            }
            tokio::time::sleep(left.map_or(pause, |left| pause.min(left))).await;
            pause = (pause * 2).min(Duration::from_millis(200));
        }
    }

    /// Cancels the run (sticky). Returns false when it had already finished. Jobs still in
    /// the queue are dropped by the workers; running nodes finish but their commits are
    /// refused.
    pub async fn cancel(&self, run_id: &str) -> Result<bool, Error> {
        let (changed, state) = commit_with(self.backends.runs.as_ref(), run_id, |state| {
            if cancel(state, "cancelled by a client") {
                state.book.revision += 1;
                Step::Write(true)
            } else {
                Step::Skip(false)
            }
        })
        .await?;
        if changed {
            publish_status(
                self.backends.runs.as_ref(),
                &self.events,
                &state,
                &self.sources,
            )
            .await?;
        }
        Ok(changed)
    }

    /// Resumes an awaiting node (`node`, default: the first awaiting one): completes it with
    /// `output` (default: what the node produced when it paused) and routes on `action`
    /// through the normal path, then enqueues what that made ready, which is returned. An
    /// awaiting subflow node is resumed by a worker instead (its sub-run resumes with the same
    /// action and output; the node completes, fails or waits again like in-process); the
    /// returned work is then that resume job. `InvalidInput` when the run or node is not
    /// awaiting, or when the run is pinned to another version of the blueprint than the
    /// client's (its routing would not be the run's). Idempotent with the key
    /// node + action + output (see [`Client::resume_with_key`]).
    pub async fn resume_with_action(
        &self,
        run_id: &str,
        node: Option<&str>,
        action: Option<String>,
        output: Option<Value>,
    ) -> Result<Vec<WorkItem>, Error> {
        self.resume_with_key(run_id, node, action, output, None)
            .await
    }

    /// [`Client::resume_with_action`] with an idempotency key (`None`: a key made of the
    /// node, the action and the output). A retry of a resume that took effect (its answer
    /// was lost) is answered as the first call was, and re-sends that call's follow-ups; a
    /// different resume of a node already resumed is refused with `Conflict`.
    pub async fn resume_with_key(
        &self,
        run_id: &str,
        node: Option<&str>,
        action: Option<String>,
        output: Option<Value>,
        key: Option<&str>,
    ) -> Result<Vec<WorkItem>, Error> {
        let key = key.map_or_else(
            || default_resume_key(node, action.as_deref(), output.as_ref()),
            str::to_string,
        );
        let runs = self.backends.runs.as_ref();
        // The commit starts from this read (it reloads only after a conflict).
        let loaded = retry_transient(|| runs.load(run_id))
            .await?
            .ok_or_else(|| run_not_found(run_id))?;
        let blueprint_id = loaded
            .value
            .blueprint_id()
            .map(str::to_string)
            .ok_or_else(|| Error::invalid_input(format!("run {run_id} has no blueprintId")))?;
        let blueprint = self.blueprints.get(&blueprint_id).ok_or_else(|| {
            Error::invalid_input(format!(
                "run {run_id} uses blueprint '{blueprint_id}', which is not in the client's registry"
            ))
        })?;
        let call = ResumeCall {
            blueprint: &blueprint,
            node,
            action: &action,
            output: &output,
            key: &key,
            now: self.sources.now(),
        };
        let mut first = Some(loaded);
        let (outcome, state) = retry_transient(|| {
            commit_from(runs, run_id, first.take(), |state| {
                resume_step(state, &call)
            })
        })
        .await?;
        let queue = self.backends.queue.as_ref();
        match outcome? {
            Resumption::Reparked(work) => Ok(vec![work]),
            Resumption::Subflow(work, seq) => {
                let job =
                    resume_job(run_id, &blueprint_id, &work, seq).at_revision(state.book.revision);
                send_delayed(queue, job, Duration::ZERO)
                    .await
                    .map_err(|e| e.during("enqueue subflow resume"))?;
                retry_transient(|| publish_status(runs, &self.events, &state, &self.sources))
                    .await?;
                tracing::info!(run_id, node_id = %work.node, "subflow resume handed to a worker");
                Ok(vec![work])
            }
            Resumption::Direct(record) => {
                if !state.book.status.is_terminal() {
                    let rev = record.revision.unwrap_or(0);
                    enqueue_follow_ups(queue, run_id, &blueprint_id, rev, &record.fired, None)
                        .await?;
                }
                retry_transient(|| publish_status(runs, &self.events, &state, &self.sources))
                    .await?;
                tracing::info!(run_id, node_id = %record.node, fired = record.fired.len(), "run resumed");
                let mut fired = record.fired.clone();
                // A waiting batch worker completed here: it arrives in its batch too.
                fired.extend(
                    arrive_after_commit(
                        &self.backends,
                        &self.events,
                        &self.sources,
                        &blueprint,
                        &state,
                        &record,
                    )
                    .await?,
                );
                Ok(fired)
            }
        }
    }

    /// Re-sends the run's recorded work that is lost: outstanding work (a retry waiting out
    /// its `retryDelay` only once it is a minute overdue, and with its attempt), the wake-ups of sleeping
    /// nodes and the pending resumes of awaiting subflows, never re-deriving routing (F3).
    /// Each piece goes through the same classification as a job. A finished run only gets
    /// its status item re-published. Returns the work re-sent. Safe to call at any time:
    /// jobs are idempotent.
    pub async fn reconcile(&self, run_id: &str) -> Result<Vec<WorkItem>, Error> {
        let state = self.load(run_id).await?;
        let runs = self.backends.runs.as_ref();
        if state.book.status.is_terminal() {
            retry_transient(|| publish_status(runs, &self.events, &state, &self.sources)).await?;
            return Ok(Vec::new());
        }
        let Some(blueprint_id) = state.blueprint_id().map(str::to_string) else {
            return Err(Error::invalid_input(format!(
                "cannot reconcile run {run_id}: it has no blueprintId"
            )));
        };
        let queue = self.backends.queue.as_ref();
        let blueprint = self.blueprints.get(&blueprint_id);
        if !state.book.initialized {
            // A foreign run that no job has touched yet: its start jobs initialise it.
            let mut work = Vec::new();
            if let Some(blueprint) = &blueprint {
                for node in crate::distributed::transition::start_nodes(blueprint) {
                    let item = WorkItem {
                        node,
                        activation: 0,
                    };
                    let mut job = execute_job(run_id, &blueprint_id, &item);
                    job.activation = None;
                    send_delayed(queue, job, Duration::ZERO).await?;
                    work.push(item);
                }
            }
            return Ok(work);
        }
        let rev = state.book.revision;
        let now = self.sources.now();
        let lost = |probe: &Probe<'_>| {
            matches!(
                classify(&state, blueprint.as_deref(), probe),
                Class::Ready(_) | Class::VersionMismatch(_)
            )
        };
        let lost_after = i64::try_from(RETRY_LOST_AFTER.as_millis()).unwrap_or(i64::MAX);
        let mut sent = Vec::new();
        for item in state.book.outstanding.values() {
            let retry = state.book.retries.get(&item.key());
            let lost_at = |r: &RetryRecord| r.due_at_ms.saturating_add(lost_after);
            if retry.is_some_and(|r| lost_at(r) > now.timestamp_millis()) {
                continue; // its delayed retry is on its way
            }
            let attempt = retry.map_or(1, |r| r.attempt);
            let probe = Probe {
                work: item,
                request: Request::Execute { attempt },
                rev: None,
            };
            if !lost(&probe) {
                continue;
            }
            let mut job = execute_job(run_id, &blueprint_id, item).at_revision(rev);
            job.attempt = (attempt > 1).then_some(attempt);
            send_delayed(queue, job, Duration::ZERO)
                .await
                .map_err(|e| e.during("re-send outstanding work"))?;
            sent.push(item.clone());
        }
        for (node, record) in &state.book.awaiting {
            let item = WorkItem {
                node: node.clone(),
                activation: record.activation,
            };
            if let Some(pending) = &record.pending_resume {
                let request = Request::Resume {
                    seq: Some(pending.seq),
                };
                if lost(&Probe {
                    work: &item,
                    request,
                    rev: None,
                }) {
                    let job =
                        resume_job(run_id, &blueprint_id, &item, pending.seq).at_revision(rev);
                    send_delayed(queue, job, Duration::ZERO).await?;
                    sent.push(item.clone());
                }
            }
            let Some(ms) = wake_after_ms(&record.details, now) else {
                continue;
            };
            let probe = Probe {
                work: &item,
                request: Request::Wake,
                rev: None,
            };
            if lost(&probe) {
                let wake = Some((&item, ms));
                enqueue_follow_ups(queue, run_id, &blueprint_id, rev, &[], wake).await?;
            }
        }
        tracing::info!(run_id, jobs = sent.len(), "run reconciled");
        Ok(sent)
    }

    /// Loads the run's state; `NotFound` when it does not exist.
    async fn load(&self, run_id: &str) -> Result<RunState, Error> {
        let loaded = self.backends.runs.load(run_id).await?;
        Ok(loaded.ok_or_else(|| run_not_found(run_id))?.value)
    }
}

/// How a resume was committed.
enum Resumption {
    /// The node was completed and routed (by this call, or by an earlier call with the same
    /// key whose answer was lost).
    Direct(CommitRecord),
    /// A worker must resume the node's sub-run (request `seq`).
    Subflow(WorkItem, u64),
    /// This call's sub-run resume was carried out already and the node waits again.
    Reparked(WorkItem),
}

/// One resume call, as its commit step sees it.
struct ResumeCall<'a> {
    blueprint: &'a Blueprint,
    node: Option<&'a str>,
    action: &'a Option<String>,
    output: &'a Option<Value>,
    key: &'a str,
    now: chrono::DateTime<chrono::Utc>,
}

/// The idempotency key of a resume call that gave none: the node, the action and the
/// output (hashed, so a large output does not grow the run document).
fn default_resume_key(node: Option<&str>, action: Option<&str>, output: Option<&Value>) -> String {
    use sha2::{Digest, Sha256};
    let text = serde_json::json!([node, action, output]).to_string();
    let digest = Sha256::digest(text.as_bytes());
    let hex: String = digest[..12].iter().map(|b| format!("{b:02x}")).collect();
    format!("auto:{hex}")
}

/// The latest commit of `node` made by a client's resume, when `node` is not awaiting now.
fn resumed_by_a_client<'a>(state: &'a RunState, node: &str) -> Option<&'a CommitRecord> {
    if state.book.awaiting.contains_key(node) {
        return None;
    }
    state
        .book
        .commits
        .values()
        .filter(|r| r.node == node && r.resume_key.is_some())
        .max_by_key(|r| r.activation)
}

/// The commit step of a resume: which node (the one this key already resumed, a subflow
/// resume this key already handed over, else the requested or first awaiting node), then the
/// shared classification, then the settlement (or the sub-run resume request).
fn resume_step(state: &mut RunState, call: &ResumeCall<'_>) -> Step<Result<Resumption, Error>> {
    let book = &state.book;
    let handed_over = book.awaiting.iter().find(|(_, rec)| {
        rec.pending_resume
            .as_ref()
            .is_some_and(|p| p.key.as_deref() == Some(call.key))
    });
    let target = if let Some(record) = book.resumed_with(call.key) {
        Ok(WorkItem {
            node: record.node.clone(),
            activation: record.activation,
        })
    } else if let Some((node, rec)) = handed_over {
        Ok(WorkItem {
            node: node.clone(),
            activation: rec.activation,
        })
    } else if let Some(record) = call.node.and_then(|node| resumed_by_a_client(state, node)) {
        // Not awaiting any more because another resume took it: classification refuses it
        // as a conflict (below), not as an unknown node.
        Ok(WorkItem {
            node: record.node.clone(),
            activation: record.activation,
        })
    } else {
        resume_target(state, call.node).and_then(|node| {
            book.awaiting
                .get(&node)
                .map(|rec| WorkItem {
                    node: node.clone(),
                    activation: rec.activation,
                })
                .ok_or_else(|| format!("node '{node}' is not awaiting"))
        })
    };
    let work = match target {
        Ok(work) => work,
        Err(_) if book.status.is_terminal() => {
            return Step::Skip(Err(Error::invalid_input(format!(
                "run {} is {}; it cannot be resumed",
                state.run_id,
                book.status.as_str()
            ))));
        }
        // The read may lag behind the commit that made the node wait (another session's
        // write): refuse only once an unchanged, ETag-conditional write of this very state
        // succeeds, which proves the read was current (a conflict reloads and re-applies).
        Err(message) => return Step::Write(Err(Error::invalid_input(message))),
    };
    let probe = Probe {
        work: &work,
        request: Request::ClientResume { key: call.key },
        rev: None,
    };
    let record = match classify(state, Some(call.blueprint), &probe) {
        Class::Ready(Ready::ClientResume(record)) => record,
        Class::Replay(record) => return Step::Skip(Ok(Resumption::Direct(record))),
        Class::Finished(phase) => {
            return Step::Skip(Err(Error::invalid_input(format!(
                "run {} is {}; it cannot be resumed",
                state.run_id,
                phase.as_str()
            ))));
        }
        Class::WrongBlueprint(message) | Class::VersionMismatch(message) => {
            return Step::Skip(Err(Error::invalid_input(message)));
        }
        other => {
            let why = match other {
                Class::Stale(why) | Class::NotYet(why) => why,
                _ => format!("node '{}' cannot be resumed now", work.node),
            };
            return Step::Skip(Err(Error::Conflict(Box::new(ErrorInfo::new(format!(
                "{why}; this resume (key {}) was not applied",
                call.key
            ))))));
        }
    };
    if record.last_resume_key.as_deref() == Some(call.key) {
        // This call was applied already: the sub-run resumed and waits again.
        return Step::Skip(Ok(Resumption::Reparked(work)));
    }
    if let Some(pending) = &record.pending_resume {
        if pending.key.as_deref() == Some(call.key) {
            return Step::Skip(Ok(Resumption::Subflow(work, pending.seq)));
        }
        return Step::Skip(Err(Error::Conflict(Box::new(ErrorInfo::new(format!(
            "node '{}' is already being resumed by another request; this resume (key {}) \
             was not applied",
            work.node, call.key
        ))))));
    }
    let sub_state_key = format!("{SUBFLOW_STATE_PREFIX}{}", work.node);
    if state
        .context
        .get(&sub_state_key)
        .is_some_and(Value::is_object)
    {
        state.book.revision += 1;
        let seq = state.book.revision;
        if let Some(rec) = state.book.awaiting.get_mut(&work.node) {
            rec.pending_resume = Some(PendingResume {
                seq,
                action: call.action.clone(),
                output: call.output.clone(),
                key: Some(call.key.to_string()),
            });
        }
        update_status(state);
        return Step::Write(Ok(Resumption::Subflow(work, seq)));
    }
    let result = NodeResult {
        output: call.output.clone().or(record.output),
        action: call.action.clone(),
        dynamic_nodes: Vec::new(),
    };
    let settlement = Settlement::Resumed(result, Vec::new());
    let mut committed = settle(state, call.blueprint, &work, settlement, call.now);
    committed.resume_key = Some(call.key.to_string());
    state.book.commits.insert(work.key(), committed.clone());
    Step::Write(Ok(Resumption::Direct(committed)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::distributed::worker::{Worker, WorkerConfig};
    use crate::flow::execute::Environment;
    use crate::flow::node::NodeRegistry;
    use crate::flow::sources::{IdSource, SeededIds};
    use chrono::TimeZone;
    use tokio_util::sync::CancellationToken;

    #[tokio::test]
    async fn run_ids_and_the_times_written_come_from_the_injected_sources() {
        let client_time = chrono::Utc
            .with_ymd_and_hms(2030, 1, 2, 3, 4, 5)
            .single()
            .unwrap();
        let worker_time = client_time + chrono::Duration::hours(1);
        let bp =
            Blueprint::from_json(r#"{"id":"s","nodes":[{"id":"a","uses":"echo"}],"edges":[]}"#)
                .unwrap();
        let mut blueprints = BlueprintRegistry::new();
        blueprints.insert(bp);
        let backends = Backends::in_memory();
        let client = Client::new(backends.clone(), Arc::new(blueprints.clone()))
            .with_sources(Sources::deterministic(9, client_time));
        let run_id = client.start_run("s", Map::new()).await.unwrap();
        assert_eq!(run_id, SeededIds::new(9).new_id());
        let created = backends.runs.status(&run_id).await.unwrap().unwrap();
        assert_eq!(created.value.last_updated, client_time.timestamp());

        let env = Environment::new(NodeRegistry::with_builtins())
            .with_blueprints(blueprints)
            .with_sources(Sources::deterministic(1, worker_time));
        let worker = Arc::new(Worker::new(env, backends.clone(), WorkerConfig::default()));
        let shutdown = CancellationToken::new();
        let running = tokio::spawn(worker.run(shutdown.clone()));
        let result = client
            .wait_for(&run_id, Duration::from_secs(10))
            .await
            .unwrap();
        shutdown.cancel();
        running.await.unwrap();
        assert_eq!(result.status, crate::flow::runtime::RunStatus::Completed);
        let finished = backends.runs.status(&run_id).await.unwrap().unwrap();
        assert_eq!(finished.value.last_updated, worker_time.timestamp());
    }
}
