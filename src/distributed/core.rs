//! What every part of the distributed core shares: the [`Backends`] (the three ports), the
//! missing-run error and the in-process result shape of a run.
//! The job path's steps live in their own modules: [`super::job`] (decode),
//! [`super::classify`], [`super::execute`], [`super::commit`], [`super::follow_ups`] and
//! [`super::publish`].

use crate::Error;
use crate::distributed::memory::{MemoryCoordinationStore, MemoryQueue, MemoryRunStore};
use crate::distributed::ports::{CoordinationStore, JobQueue, RunPhase, RunStore};
use crate::distributed::state::RunState;
use crate::flow::runtime::{RunStatus, WorkflowError, WorkflowResult};
use std::sync::Arc;

pub use crate::distributed::publish::final_status;

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

/// The `NotFound` error for a run that does not exist.
pub(crate) fn run_not_found(run_id: &str) -> Error {
    Error::NotFound(Box::new(crate::ErrorInfo::new(format!(
        "run {run_id} does not exist"
    ))))
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
