//! The commit step of the job path: load the run, apply a transition (the closure decides
//! from the freshly loaded state, see [`super::classify`]), write it with the ETag, and on a
//! conflict reload and re-apply. A commit whose answer was lost comes back as a conflict on
//! the retry; the re-applied transition then finds its own commit record and replays.

use crate::Error;
use crate::distributed::core::run_not_found;
use crate::distributed::ports::{RunStore, Versioned};
use crate::distributed::state::RunState;
use std::time::Duration;

/// How many times a commit is re-applied after ETag conflicts before giving up.
const MAX_COMMIT_TRIES: u32 = 200;

/// Loads the run document of `run_id` (`None` when it does not exist). A document that
/// cannot be read, or that names another run (edited by hand), is an
/// [`Error::InvalidInput`] saying so: no retry can cure it.
pub(crate) async fn load_run(
    runs: &dyn RunStore,
    run_id: &str,
) -> Result<Option<Versioned<RunState>>, Error> {
    let loaded = runs
        .load(run_id)
        .await
        .map_err(|e| e.during("read run document"))?;
    if let Some(found) = loaded.as_ref().filter(|l| l.value.run_id != run_id) {
        return Err(Error::invalid_input(format!(
            "run {run_id}: its document names run '{}'; the run document was edited by hand \
             and cannot be processed",
            found.value.run_id
        ))
        .during("read run document"));
    }
    Ok(loaded)
}

/// What a commit closure decides after looking at the freshly loaded state.
pub(crate) enum Step<T> {
    /// Write the (modified) state, then return the value.
    Write(T),
    /// Write nothing; return the value.
    Skip(T),
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
    loaded: Option<Versioned<RunState>>,
    apply: impl FnMut(&mut RunState) -> Step<T>,
) -> Result<(T, RunState), Error> {
    commit_versioned(runs, run_id, loaded, apply)
        .await
        .map(|(value, state)| (value, state.value))
}

/// [`commit_from`], also returning the version tag of the returned state: the new tag when
/// it was written, the loaded one when the closure skipped the write (either way the state
/// and tag a next commit can start from).
pub(crate) async fn commit_versioned<T>(
    runs: &dyn RunStore,
    run_id: &str,
    mut loaded: Option<Versioned<RunState>>,
    mut apply: impl FnMut(&mut RunState) -> Step<T>,
) -> Result<(T, Versioned<RunState>), Error> {
    for tries in 0..MAX_COMMIT_TRIES {
        let current = match loaded.take() {
            Some(current) => current,
            None => load_run(runs, run_id)
                .await?
                .ok_or_else(|| run_not_found(run_id))?,
        };
        let Versioned {
            value: mut state,
            etag,
        } = current;
        match apply(&mut state) {
            Step::Skip(value) => return Ok((value, Versioned { value: state, etag })),
            Step::Write(value) => match runs.commit(&state, &etag).await {
                Ok(etag) => return Ok((value, Versioned { value: state, etag })),
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
