//! Events a caller can subscribe to (a tokio broadcast channel): jobs started, finished,
//! retried, failed, replayed, deferred, dropped or poisoned, and runs finished. Slow
//! subscribers miss events (the channel is bounded); nothing ever blocks on them.

use crate::distributed::ports::RunPhase;
use crate::distributed::state::CommitKind;
use std::time::Duration;
use tokio::sync::broadcast;

/// Something that happened in the distributed core.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// A worker started an attempt of a node.
    JobStarted {
        /// The run.
        run_id: String,
        /// The node.
        node_id: String,
        /// The attempt (from 1).
        attempt: u32,
    },
    /// A node's settlement was committed.
    JobFinished {
        /// The run.
        run_id: String,
        /// The node.
        node_id: String,
        /// How it settled.
        kind: CommitKind,
    },
    /// An attempt failed and the next one was queued with a delay.
    JobRetried {
        /// The run.
        run_id: String,
        /// The node.
        node_id: String,
        /// The attempt queued next.
        next_attempt: u32,
        /// Its delay.
        delay: Duration,
    },
    /// A node failed on its last attempt (the fallback, if any, runs next).
    JobFailed {
        /// The run.
        run_id: String,
        /// The node.
        node_id: String,
        /// The node's message.
        message: String,
    },
    /// A redelivered job found its commit record and replayed the follow-ups.
    JobReplayed {
        /// The run.
        run_id: String,
        /// The node.
        node_id: String,
    },
    /// A job was given back to the queue for another worker (blueprint version mismatch or
    /// unknown blueprint); it is never acknowledged and lost.
    JobDeferred {
        /// The run.
        run_id: String,
        /// The node.
        node_id: String,
        /// Why.
        reason: String,
    },
    /// A job was acknowledged without running (finished or unknown run, stale job).
    JobDropped {
        /// The run.
        run_id: String,
        /// The node.
        node_id: String,
        /// Why.
        reason: String,
    },
    /// A message was moved to the poison queue.
    JobPoisoned {
        /// The run, when the message named one.
        run_id: Option<String>,
        /// Why.
        reason: String,
    },
    /// A run reached a final status (published once).
    RunFinished {
        /// The run.
        run_id: String,
        /// The final status.
        status: RunPhase,
    },
}

/// A cloneable sender of [`Event`]s.
#[derive(Debug, Clone)]
pub struct EventBus {
    sender: broadcast::Sender<Event>,
}

impl Default for EventBus {
    fn default() -> Self {
        EventBus::new(1024)
    }
}

impl EventBus {
    /// A bus that buffers up to `capacity` events per subscriber.
    pub fn new(capacity: usize) -> Self {
        let (sender, _) = broadcast::channel(capacity.max(1));
        EventBus { sender }
    }

    /// A new subscription (sees events sent from now on).
    pub fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.sender.subscribe()
    }

    /// Sends an event (dropped when nobody listens).
    pub fn emit(&self, event: Event) {
        let _ = self.sender.send(event);
    }
}
