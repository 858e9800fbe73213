//! What the worker and the client share: the backends, the optimistic commit loop (load,
//! apply a transition, write with the ETag, reload and re-apply on a conflict), the
//! idempotent follow-ups after a commit (enqueue fired work and timer wake-ups, saying whether
//! any of it is receivable at once), and the sticky, revision-ordered publication of the
//! status item.

use crate::Error;
use crate::distributed::events::{Event, EventBus};
use crate::distributed::job::{JobKind, JobMessage};
use crate::distributed::memory::{MemoryCoordinationStore, MemoryQueue, MemoryRunStore};
use crate::distributed::ports::{
    CoordinationStore, JobQueue, MAX_QUEUE_DELAY, RunPhase, RunStore, StatusRecord, Versioned,
};
use crate::distributed::state::{BLUEPRINT_VERSION_KEY, RunState, WorkItem};
use crate::flow::runtime::{RunStatus, WorkflowError, WorkflowResult};
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::Duration;

/// How many times a commit is re-applied after ETag conflicts before giving up.
const MAX_COMMIT_TRIES: u32 = 200;

/// The three ports a distributed deployment runs on.
#[derive(Clone)]
pub struct Backends {
    /// The job queue.
    pub queue: Arc<dyn JobQueue>,
    /// Run state and status.
    pub runs: Arc<dyn RunStore>,
    /// Coordination (locks, cooldowns, counters).
    pub coordination: Arc<dyn CoordinationStore>,
}

impl std::fmt::Debug for Backends {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Backends { .. }")
    }
}

impl Backends {
    /// Backends over the given ports.
    pub fn new(
        queue: Arc<dyn JobQueue>,
        runs: Arc<dyn RunStore>,
        coordination: Arc<dyn CoordinationStore>,
    ) -> Self {
        Backends {
            queue,
            runs,
            coordination,
        }
    }

    /// Fresh in-memory backends.
    pub fn in_memory() -> Self {
        Backends::new(
            Arc::new(MemoryQueue::new()),
            Arc::new(MemoryRunStore::new()),
            Arc::new(MemoryCoordinationStore::new()),
        )
    }
}

/// What a commit closure decides after looking at the freshly loaded state.
pub(crate) enum Step<T> {
    /// Write the (modified) state, then return the value.
    Write(T),
    /// Write nothing; return the value.
    Skip(T),
}

/// Current time as epoch seconds.
pub(crate) fn now_epoch() -> i64 {
    chrono::Utc::now().timestamp()
}

/// The `NotFound` error for a run that does not exist.
pub(crate) fn run_not_found(run_id: &str) -> Error {
    Error::NotFound(Box::new(crate::ErrorInfo::new(format!(
        "run {run_id} does not exist"
    ))))
}

/// Loads the run, lets `apply` change it, and commits it with the ETag; on a conflict
/// reloads and re-applies. Returns the closure's value and the state as committed (or as
/// loaded, when skipped). `NotFound` when the run does not exist.
pub(crate) async fn commit_with<T>(
    runs: &dyn RunStore,
    run_id: &str,
    apply: impl FnMut(&mut RunState) -> Step<T>,
) -> Result<(T, RunState), Error> {
    commit_from(runs, run_id, None, apply).await
}

/// [`commit_with`] starting from an already loaded state (saves one read when it is still
/// current; a stale one costs a conflict and a reload, as usual).
pub(crate) async fn commit_from<T>(
    runs: &dyn RunStore,
    run_id: &str,
    mut loaded: Option<Versioned<RunState>>,
    mut apply: impl FnMut(&mut RunState) -> Step<T>,
) -> Result<(T, RunState), Error> {
    for tries in 0..MAX_COMMIT_TRIES {
        let current = match loaded.take() {
            Some(current) => current,
            None => runs
                .load(run_id)
                .await?
                .ok_or_else(|| run_not_found(run_id))?,
        };
        let mut state = current.value;
        match apply(&mut state) {
            Step::Skip(value) => return Ok((value, state)),
            Step::Write(value) => match runs.commit(&state, &current.etag).await {
                Ok(_) => return Ok((value, state)),
                Err(Error::PreconditionFailed(_)) => {
                    tracing::debug!(run_id, tries, "commit conflict; reloading");
                    let pause = fastrand::u64(0..=u64::from(tries.min(20)));
                    tokio::time::sleep(Duration::from_millis(pause)).await;
                }
                Err(e) => return Err(e.during("commit run state")),
            },
        }
    }
    Err(Error::Conflict(Box::new(crate::ErrorInfo::new(format!(
        "run {run_id}: gave up after {MAX_COMMIT_TRIES} conflicting commits; retry later"
    )))))
}

/// The queue message for executing `item`.
pub(crate) fn execute_job(run_id: &str, blueprint_id: &str, item: &WorkItem) -> JobMessage {
    JobMessage::execute(run_id, blueprint_id, &item.node, item.activation)
}

/// The queue message asking a worker to resume the sub-run of `item` (resume request `seq`).
pub(crate) fn resume_job(
    run_id: &str,
    blueprint_id: &str,
    item: &WorkItem,
    seq: u64,
) -> JobMessage {
    let mut job = execute_job(run_id, blueprint_id, item);
    job.kind = JobKind::Resume;
    job.resume_seq = Some(seq);
    job
}

/// Sends `job` after `delay`, chaining delays longer than the queue allows. Returns whether
/// the message is visible at once (no delay), i.e. receivable right now.
pub(crate) async fn send_delayed(
    queue: &dyn JobQueue,
    mut job: JobMessage,
    delay: Duration,
) -> Result<bool, Error> {
    let now = delay.min(MAX_QUEUE_DELAY);
    let rest = delay.saturating_sub(now);
    job.remaining_ms =
        (!rest.is_zero()).then(|| u64::try_from(rest.as_millis()).unwrap_or(u64::MAX));
    queue.send(&job.encode()?, now).await?;
    Ok(now.is_zero())
}

/// Enqueues the work a commit fired and, for a timer wait, the wake-up. Safe to redo.
/// Returns whether it sent a message that is visible at once (a successor, or a wake-up
/// without delay); a delayed wake-up alone is not.
pub(crate) async fn enqueue_follow_ups(
    queue: &dyn JobQueue,
    run_id: &str,
    blueprint_id: &str,
    fired: &[WorkItem],
    wake: Option<(&WorkItem, u64)>,
) -> Result<bool, Error> {
    for item in fired {
        let job = execute_job(run_id, blueprint_id, item);
        queue
            .send(&job.encode()?, Duration::ZERO)
            .await
            .map_err(|e| e.during("enqueue successor"))?;
    }
    let mut visible_now = !fired.is_empty();
    if let Some((item, ms)) = wake {
        let mut job = execute_job(run_id, blueprint_id, item);
        job.kind = JobKind::Wake;
        visible_now |= send_delayed(queue, job, Duration::from_millis(ms))
            .await
            .map_err(|e| e.during("enqueue wake-up"))?;
    }
    Ok(visible_now)
}

/// The `finalStatus` value of a finished run (TypeScript shape: `{status, reason}` for
/// failures, `{status, payload:{status, context, errors}}` for completion; the context is
/// copied once, not twice as the TypeScript adapter does, A7).
pub fn final_status(state: &RunState) -> Option<Value> {
    let book = &state.book;
    match book.status {
        RunPhase::Completed => Some(json!({
            "status": "completed",
            "payload": {
                "status": "completed",
                "context": state.context,
                "errors": [],
            }
        })),
        RunPhase::Failed | RunPhase::Cancelled | RunPhase::Stalled => Some(json!({
            "status": book.status.as_str(),
            "reason": book.reason.clone().unwrap_or_default(),
        })),
        RunPhase::Running | RunPhase::Awaiting => None,
    }
}

/// The status item for the current state.
pub(crate) fn status_record(state: &RunState) -> StatusRecord {
    let mut record = StatusRecord::running(&state.run_id, now_epoch());
    record.status = state.book.status;
    record.final_status = final_status(state);
    record.blueprint_id = state.blueprint_id().map(str::to_string);
    record.blueprint_version = state
        .context
        .get(BLUEPRINT_VERSION_KEY)
        .and_then(Value::as_str)
        .map(str::to_string);
    record.revision = state.book.revision;
    record
}

/// Writes the status item for `state` unless it is already final or newer (sticky,
/// compare-and-set). Emits `RunFinished` when this write made it final.
pub(crate) async fn publish_status(
    runs: &dyn RunStore,
    events: &EventBus,
    state: &RunState,
) -> Result<(), Error> {
    let (revision, status) = (state.book.revision, state.book.status);
    // Built only when a write is due: a final record carries a copy of the whole context.
    let mut record = None;
    for _ in 0..MAX_COMMIT_TRIES {
        let current = runs.status(&state.run_id).await?;
        let etag = match &current {
            Some(cur) => {
                let old = &cur.value;
                if old.status.is_terminal()
                    || old.revision > revision
                    || (old.revision == revision && old.status == status)
                {
                    return Ok(());
                }
                Some(cur.etag.as_str())
            }
            None => None,
        };
        let record = record.get_or_insert_with(|| status_record(state));
        match runs.write_status(record, etag).await {
            Ok(_) => {
                if record.status.is_terminal() {
                    tracing::info!(run_id = %state.run_id, status = record.status.as_str(), "run finished");
                    events.emit(Event::RunFinished {
                        run_id: state.run_id.clone(),
                        status: record.status,
                    });
                }
                return Ok(());
            }
            Err(Error::PreconditionFailed(_) | Error::Conflict(_)) => continue,
            Err(e) => return Err(e.during("write run status")),
        }
    }
    Err(Error::Conflict(Box::new(crate::ErrorInfo::new(format!(
        "status of run {}: too many concurrent writers",
        state.run_id
    )))))
}

/// Refreshes `lastUpdated` of a running run's status item (heartbeat while a long node runs,
/// so the reconciler does not take the run for stalled). Lost races are ignored: another
/// writer just refreshed it.
pub(crate) async fn touch_status(runs: &dyn RunStore, run_id: &str) -> Result<(), Error> {
    let Some(current) = runs.status(run_id).await? else {
        return Ok(());
    };
    if current.value.status != RunPhase::Running {
        return Ok(());
    }
    let mut record = current.value;
    record.last_updated = now_epoch();
    match runs.write_status(&record, Some(&current.etag)).await {
        Ok(_) | Err(Error::PreconditionFailed(_)) => Ok(()),
        Err(e) => Err(e.during("refresh run status")),
    }
}

/// The in-process result shape for a run's current state.
pub fn to_result(state: &RunState) -> WorkflowResult {
    let status = match state.book.status {
        RunPhase::Running => RunStatus::Running,
        RunPhase::Awaiting => RunStatus::Awaiting,
        RunPhase::Completed => RunStatus::Completed,
        RunPhase::Failed => RunStatus::Failed,
        RunPhase::Cancelled => RunStatus::Cancelled,
        RunPhase::Stalled => RunStatus::Stalled,
    };
    WorkflowResult {
        status,
        context: state.context.clone(),
        errors: state
            .book
            .errors
            .iter()
            .map(|e| WorkflowError {
                node_id: e.node_id.clone(),
                message: e.message.clone(),
                timestamp: e.timestamp.clone(),
            })
            .collect(),
    }
}
