//! The publish step of the job path: the sticky, revision-ordered status item (a status
//! write carrying an older revision than the stored one is skipped; `completed`, `failed`,
//! `cancelled` and `stalled` never change again) and the heartbeat that keeps a long node's
//! run from looking stalled.

use crate::Error;
use crate::distributed::events::{Event, EventBus};
use crate::distributed::ports::{RunPhase, RunStore, StatusRecord};
use crate::distributed::state::{BLUEPRINT_VERSION_KEY, RunState};
use crate::flow::sources::Sources;
use serde_json::{Value, json};

/// How many times a status write is retried after concurrent writes before giving up.
const MAX_STATUS_TRIES: u32 = 200;

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
/// `now_epoch` (seconds) becomes its `lastUpdated`.
pub(crate) fn status_record(state: &RunState, now_epoch: i64) -> StatusRecord {
    let mut record = StatusRecord::running(&state.run_id, now_epoch);
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
/// compare-and-set), stamped by `sources`' clock. Emits `RunFinished` when this write made
/// it final.
pub(crate) async fn publish_status(
    runs: &dyn RunStore,
    events: &EventBus,
    state: &RunState,
    sources: &Sources,
) -> Result<(), Error> {
    let (revision, status) = (state.book.revision, state.book.status);
    // Built only when a write is due: a final record carries a copy of the whole context.
    let mut record = None;
    for _ in 0..MAX_STATUS_TRIES {
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
        let record = record.get_or_insert_with(|| status_record(state, sources.now_epoch()));
        // The start time is set once, when the run is created; every later write keeps it.
        record.started_at = current.as_ref().and_then(|cur| cur.value.started_at);
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

/// Marks the status item of `run_id` `failed` with `reason` WITHOUT the run document: for a
/// run whose document cannot record the failure (it is unreadable, or cannot be written) or
/// that was never created. Compare-and-set like [`publish_status`], and sticky: a final
/// status is kept, and once `failed` no later write changes it (every status write skips a
/// final item), so a client or reconciler reading the item sees the reason for good. Only an
/// item for which `may_close` holds is changed (checked again after a concurrent write).
/// Returns whether this call made it `failed` (`false`: no item, already final, or
/// `may_close` refused).
pub(crate) async fn fail_status_item(
    runs: &dyn RunStore,
    run_id: &str,
    reason: &str,
    now_epoch: i64,
    may_close: impl Fn(&StatusRecord) -> bool,
) -> Result<bool, Error> {
    for _ in 0..MAX_STATUS_TRIES {
        let Some(current) = runs.status(run_id).await? else {
            return Ok(false);
        };
        if current.value.status.is_terminal() || !may_close(&current.value) {
            return Ok(false);
        }
        let mut record = current.value;
        record.status = RunPhase::Failed;
        record.last_updated = now_epoch;
        record.final_status = Some(json!({"status": "failed", "reason": reason}));
        match runs.write_status(&record, Some(&current.etag)).await {
            Ok(_) => return Ok(true),
            Err(Error::PreconditionFailed(_) | Error::Conflict(_)) => continue,
            Err(e) => return Err(e.during("mark run status failed")),
        }
    }
    Err(Error::Conflict(Box::new(crate::ErrorInfo::new(format!(
        "status of run {run_id}: too many concurrent writers"
    )))))
}

/// Refreshes `lastUpdated` of a running run's status item (heartbeat while a long node runs,
/// so the reconciler does not take the run for stalled). Lost races are ignored: another
/// writer just refreshed it.
pub(crate) async fn touch_status(
    runs: &dyn RunStore,
    run_id: &str,
    sources: &Sources,
) -> Result<(), Error> {
    let Some(current) = runs.status(run_id).await? else {
        return Ok(());
    };
    if current.value.status != RunPhase::Running {
        return Ok(());
    }
    let mut record = current.value;
    record.last_updated = sources.now_epoch();
    match runs.write_status(&record, Some(&current.etag)).await {
        Ok(_) | Err(Error::PreconditionFailed(_)) => Ok(()),
        Err(e) => Err(e.during("refresh run status")),
    }
}
