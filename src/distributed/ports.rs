//! The three ports the distributed core runs on, as object-safe async traits, plus the data
//! they carry. Backends: [`super::memory`] (in-process, for tests and `run --distributed`) and
//! the Azure ones (Queue Storage, Cosmos DB, Redis).
//!
//! The traits are shaped after what the real services can do atomically:
//! - [`JobQueue`]: Azure Queue Storage (visibility timeouts, pop receipts, dequeue count,
//!   delayed messages of at most 7 days);
//! - [`RunStore`]: Cosmos DB, one item per run committed with ONE ETag-guarded replace, plus
//!   one status item per run written with compare-and-set;
//! - [`CoordinationStore`]: Redis (`INCRBY`, `SET NX EX`, `EXPIRE`, `DEL`, `GET`, `SADD`+`SCARD`).

use crate::Error;
use crate::distributed::state::RunState;
use crate::flow::context::ContextDelta;
use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::time::Duration;

/// The longest delay or visibility timeout Azure Queue Storage accepts (7 days). Longer waits
/// are chained by the caller.
pub const MAX_QUEUE_DELAY: Duration = Duration::from_secs(7 * 24 * 3600);

/// A message received from a [`JobQueue`] under a lease.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueMessage {
    /// The message id (stable across deliveries).
    pub id: String,
    /// The receipt of this delivery (pop receipt); it changes on every renewal.
    pub receipt: String,
    /// The message text as sent.
    pub text: String,
    /// How many times the message has been received, this delivery included (1 on the first).
    pub dequeue_count: u32,
}

/// A job queue with leases (at-least-once delivery).
#[async_trait]
pub trait JobQueue: Send + Sync {
    /// Sends `text`, visible after `delay` (zero = at once). `delay` must not exceed
    /// [`MAX_QUEUE_DELAY`]; longer waits are chained by the caller.
    async fn send(&self, text: &str, delay: Duration) -> Result<(), Error>;

    /// Receives up to `max` (1..=32) visible messages and hides them for `visibility`. Each
    /// received message's dequeue count goes up by one. An empty vector means no work.
    async fn receive(&self, max: usize, visibility: Duration) -> Result<Vec<QueueMessage>, Error>;

    /// Extends the lease of a received message to `visibility` from now; returns the new
    /// receipt (the old one stops working). `PreconditionFailed` or `NotFound` when the
    /// receipt is stale (Azure answers 400 `PopReceiptMismatch` or 404 `MessageNotFound`):
    /// the lease is lost and the worker stops the job. Transient errors are retried by the
    /// caller while the lease lasts.
    async fn renew(&self, id: &str, receipt: &str, visibility: Duration) -> Result<String, Error>;

    /// Sends `text` hidden for `lease` and returns it as if received under that lease (id and
    /// receipt usable at once; Azure Put Message answers both): a worker that runs the job
    /// itself sends it this way as a guard, renews and completes it like a received
    /// message, and if the worker dies the message becomes visible after one lease for any
    /// worker to run. The default says the queue cannot do it (`InvalidInput`): the caller
    /// then sends the job normally.
    async fn send_leased(&self, text: &str, lease: Duration) -> Result<QueueMessage, Error> {
        let _ = (text, lease);
        Err(Error::invalid_input(
            "this queue cannot send a message under a lease; send it normally instead",
        ))
    }

    /// Replaces the text of a received message and extends its lease to `visibility` from
    /// now, in ONE request (Azure Update Message with a body); returns the new receipt (the
    /// old one stops working). The message keeps its id and dequeue count. A worker uses it
    /// to hand a job's message over to the job's single successor, which it then runs itself:
    /// whatever happens, the message holds either the job (not committed, or committed and
    /// replayed on redelivery) or the successor, so a crash is recovered within one lease.
    /// Errors as for [`JobQueue::renew`]. The default says the queue cannot do it
    /// (`InvalidInput`): the caller then sends the successor as a new message.
    async fn rewrite(
        &self,
        id: &str,
        receipt: &str,
        text: &str,
        visibility: Duration,
    ) -> Result<String, Error> {
        let _ = (id, receipt, text, visibility);
        Err(Error::invalid_input(
            "this queue cannot replace a message's text; send a new message instead",
        ))
    }

    /// Deletes a received message (the job is done).
    async fn complete(&self, id: &str, receipt: &str) -> Result<(), Error>;

    /// Gives a received message back: visible again after `delay` (zero = at once).
    async fn release(&self, id: &str, receipt: &str, delay: Duration) -> Result<(), Error>;

    /// Moves a received message to the poison queue (`<queue>-poison`) with a reason, and
    /// deletes it from this queue.
    async fn move_to_poison(&self, message: &QueueMessage, reason: &str) -> Result<(), Error>;

    /// Waits until work may have arrived, at most `max`: the idle pause of the polling loop
    /// between two receives. A queue with wake-up signals (e.g. Redis) returns as soon as a
    /// message was sent; the default just sleeps `max`. Returning early is always safe (the
    /// caller only receives again).
    async fn wait_for_work(&self, max: Duration) {
        tokio::time::sleep(max).await;
    }
}

/// A value read from a store with its version tag (Cosmos `_etag`, or a counter in memory).
#[derive(Debug, Clone, PartialEq)]
pub struct Versioned<T> {
    /// The value.
    pub value: T,
    /// The version tag to pass back for a conditional write.
    pub etag: String,
}

/// The status of a run as published in the status item (`status` field).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RunPhase {
    /// Work is outstanding.
    Running,
    /// Nothing is outstanding and at least one node waits for a resume or a timer.
    Awaiting,
    /// Finished successfully (sticky).
    Completed,
    /// A node failed (sticky).
    Failed,
    /// Cancelled by a client (sticky).
    Cancelled,
    /// Work ran out while an `all` join had received some but not all of its activations
    /// (e.g. a branch into it was not taken); sticky, like the in-process `stalled`.
    Stalled,
}

impl RunPhase {
    /// True for `completed`, `failed`, `cancelled` and `stalled`: these never change again.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            RunPhase::Completed | RunPhase::Failed | RunPhase::Cancelled | RunPhase::Stalled
        )
    }

    /// The lowercase wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            RunPhase::Running => "running",
            RunPhase::Awaiting => "awaiting",
            RunPhase::Completed => "completed",
            RunPhase::Failed => "failed",
            RunPhase::Cancelled => "cancelled",
            RunPhase::Stalled => "stalled",
        }
    }
}

/// The status item of a run, wire-compatible with the TypeScript adapter:
/// `{id, runId, status, lastUpdated (epoch seconds), finalStatus}` plus our extra fields.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StatusRecord {
    /// Item id = run id.
    pub id: String,
    /// The run id (partition key).
    pub run_id: String,
    /// The current status.
    pub status: RunPhase,
    /// Last change or heartbeat, epoch seconds.
    pub last_updated: i64,
    /// Set once the run finished: `{status, reason?}` or `{status, payload:{status, context, errors}}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub final_status: Option<Value>,
    /// The blueprint the run executes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub blueprint_id: Option<String>,
    /// The blueprint version pinned at start (`null` when the blueprint has none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub blueprint_version: Option<String>,
    /// The run document revision this status reflects; a write carrying an older revision
    /// is skipped, so concurrent workers never roll the status back.
    #[serde(default)]
    pub revision: u64,
    /// When the run was created, epoch seconds (`None` for status items written by the
    /// TypeScript adapter or by older versions).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<i64>,
}

impl StatusRecord {
    /// A fresh `running` status for a run.
    pub fn running(run_id: &str, now_epoch_s: i64) -> Self {
        StatusRecord {
            id: run_id.to_string(),
            run_id: run_id.to_string(),
            status: RunPhase::Running,
            last_updated: now_epoch_s,
            final_status: None,
            blueprint_id: None,
            blueprint_version: None,
            revision: 0,
            started_at: None,
        }
    }
}

/// One page of a listing; `continuation` is `Some` when more pages follow.
#[derive(Debug, Clone, PartialEq)]
pub struct Page<T> {
    /// The items of this page.
    pub items: Vec<T>,
    /// Pass it back to get the next page.
    pub continuation: Option<String>,
}

/// A batch worker's settled result, kept as its own item BESIDE the run document (in the
/// run's partition): a batch of thousands of workers then does not rewrite the whole run
/// document once per worker. Each result is written once ([`RunStore::put_worker_result`]),
/// counted in the batch's arrival ledger ([`RunStore::record_arrival`]), and the results are
/// folded into the run document in ONE commit once the last worker of the batch has arrived
/// (read back with [`RunStore::worker_results`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WorkerResult {
    /// The run.
    pub run_id: String,
    /// The batch the worker belongs to (unique within the run, e.g. the gather node and the
    /// activation of the scatter that started the batch).
    pub batch: String,
    /// The worker node id.
    pub node: String,
    /// The worker's activation.
    pub activation: u64,
    /// The worker's output.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output: Option<Value>,
    /// The worker's action.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub action: Option<String>,
    /// The worker's context writes, in order; applied when the batch is folded.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub writes: Vec<ContextDelta>,
}

/// Run state and status storage (Cosmos: a context container and a status container, both
/// partitioned by run id).
#[async_trait]
pub trait RunStore: Send + Sync {
    /// Creates the run state and its status item. Idempotent: when the run already exists
    /// nothing changes and `Ok(false)` is returned (also when a retried call finds the item
    /// its lost first try created). Two items are two writes: write the STATUS item first,
    /// then the run item, so an interrupted creation leaves a status item the reconciler
    /// lists (and closes) rather than a run nobody sees; a status item that already exists
    /// is left as it is. The client's retry ([`super::client::Client::start_run_with_id`])
    /// writes a missing status item for an existing run.
    async fn create_run(&self, state: &RunState, status: &StatusRecord) -> Result<bool, Error>;

    /// Loads the run state with its version tag; `None` when the run does not exist. The
    /// read may lag behind other writers (Cosmos session consistency): the core recognises a
    /// state older than the job it handles (the job's `rev`) and tries again later. A stored
    /// document that cannot be parsed ([`RunState::from_document`] refuses it) is an
    /// [`Error::InvalidInput`]: the worker takes that as permanent (the job is poisoned at
    /// once and the run's status item marked failed), so report only that as such.
    async fn load(&self, run_id: &str) -> Result<Option<Versioned<RunState>>, Error>;

    /// Replaces the run state in ONE conditional write, only if its version tag still equals
    /// `etag`; returns the new tag. `PreconditionFailed` when someone else wrote first (reload,
    /// re-apply, retry); `NotFound` when the run does not exist.
    async fn commit(&self, state: &RunState, etag: &str) -> Result<String, Error>;

    /// Reads the status item with its version tag.
    async fn status(&self, run_id: &str) -> Result<Option<Versioned<StatusRecord>>, Error>;

    /// Writes the status item. `etag: None` creates it (`Conflict` if it exists); `Some(tag)`
    /// replaces it only if unchanged (`PreconditionFailed` otherwise).
    async fn write_status(
        &self,
        record: &StatusRecord,
        etag: Option<&str>,
    ) -> Result<String, Error>;

    /// Runs whose status is one of `phases` (the reconciler asks for `running`) and whose
    /// `lastUpdated` is older than `older_than` (epoch seconds), at most `limit` per page,
    /// continuing after `continuation` (Cosmos: `SELECT * FROM c WHERE c.status IN (...) AND
    /// c.lastUpdated < @t` with a continuation token).
    async fn list_stalled(
        &self,
        phases: &[RunPhase],
        older_than: i64,
        limit: usize,
        continuation: Option<&str>,
    ) -> Result<Page<StatusRecord>, Error>;

    /// Stores a batch worker's result beside the run document, once: `Ok(true)` when this
    /// call created it, `Ok(false)` when a result for the same run, batch and node already
    /// exists (a redelivered job: the first result wins and is left as it is). Cosmos: one
    /// create in the context container, in the run's partition (409 means it exists).
    async fn put_worker_result(&self, result: &WorkerResult) -> Result<bool, Error>;

    /// The stored result of worker `node` in `batch`, if any: a redelivered worker job
    /// checks it before running its node again. ADDITIVE, with a default that answers
    /// `None` ("not known"): the job then runs the node again and
    /// [`RunStore::put_worker_result`] keeps the first result, which is correct, only not
    /// as cheap (Cosmos: one point read of the result item).
    async fn worker_result(
        &self,
        run_id: &str,
        batch: &str,
        node: &str,
    ) -> Result<Option<WorkerResult>, Error> {
        let _ = (run_id, batch, node);
        Ok(None)
    }

    /// Records in the arrival ledger of `batch` that worker `node` has settled (a durable
    /// set: idempotent) and returns how many DISTINCT workers of the batch have arrived so
    /// far, this one included. Atomic per ledger, so the call that completes the set sees
    /// the full count whatever the consistency of reads (Cosmos: one PATCH `add` of
    /// `/arrived/<node>` on the ledger item, which answers the new item; the ledger is
    /// created on its first arrival).
    async fn record_arrival(&self, run_id: &str, batch: &str, node: &str) -> Result<u64, Error>;

    /// The stored results of `batch`, a page at a time (in no particular order), continuing
    /// after `continuation` (Cosmos: a query in the run's partition).
    async fn worker_results(
        &self,
        run_id: &str,
        batch: &str,
        continuation: Option<&str>,
    ) -> Result<Page<WorkerResult>, Error>;
}

/// Atomic coordination primitives (Redis). Keys use the `flowcraft:` prefix. `ttl: None` means
/// no expiry.
#[async_trait]
pub trait CoordinationStore: Send + Sync {
    /// Adds one to a counter and (re)sets its TTL; returns the new value (Flowcraft `increment`).
    async fn increment(&self, key: &str, ttl: Duration) -> Result<i64, Error>;

    /// Sets `key` to `value` only if it does not exist; true when this call set it.
    async fn set_if_not_exists(&self, key: &str, value: &str, ttl: Duration)
    -> Result<bool, Error>;

    /// Resets the TTL of an existing key; false when the key does not exist.
    async fn extend_ttl(&self, key: &str, ttl: Duration) -> Result<bool, Error>;

    /// Deletes a key (no error when it is missing).
    async fn delete(&self, key: &str) -> Result<(), Error>;

    /// Reads a string key.
    async fn get(&self, key: &str) -> Result<Option<String>, Error>;

    /// Adds `member` to the set at `key` (idempotent) and returns the set's size afterwards
    /// (`SADD` + `SCARD` in one script).
    async fn set_add(&self, key: &str, member: &str, ttl: Option<Duration>) -> Result<u64, Error>;

    /// Adds `delta` to the counter at `key` (created at 0) and returns the new value (`INCRBY`).
    async fn counter_add(&self, key: &str, delta: i64, ttl: Option<Duration>)
    -> Result<i64, Error>;
}
