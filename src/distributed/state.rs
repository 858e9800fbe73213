//! The run document: one item per run holding the user-visible context (wire-compatible with
//! the TypeScript adapter: context keys are top-level properties) plus our bookkeeping under the
//! reserved key [`BOOKKEEPING_KEY`]: the commit records, outstanding work, join arrivals,
//! awaiting records and the run's authoritative status. Every change to it is one conditional
//! write of the whole document (see [`super::ports::RunStore::commit`]).

use crate::Error;
use crate::distributed::ports::RunPhase;
use crate::flow::context::AwaitingDetails;
use crate::flow::joins::JoinBook;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::collections::BTreeMap;

/// The reserved top-level property that holds the bookkeeping in the stored item.
pub const BOOKKEEPING_KEY: &str = "_flowcraft";

/// Properties of a stored item that are not context keys (Cosmos system fields and ours).
const NON_CONTEXT_KEYS: [&str; 8] = [
    "id",
    "runId",
    BOOKKEEPING_KEY,
    "_rid",
    "_self",
    "_etag",
    "_attachments",
    "_ts",
];

/// The context key holding the blueprint id (TypeScript-compatible).
pub const BLUEPRINT_ID_KEY: &str = "blueprintId";
/// The context key holding the pinned blueprint version (a string, or `null` when the
/// blueprint has none; absent = not pinned yet, adopted by the first job, F1).
pub const BLUEPRINT_VERSION_KEY: &str = "blueprintVersion";

/// One unit of schedulable work: a node and the activation that scheduled it. Loop iterations
/// and re-armed joins get fresh activation ids, so a node can run again (F7).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WorkItem {
    /// The node to run.
    pub node: String,
    /// The activation id (unique within the run).
    pub activation: u64,
}

impl WorkItem {
    /// The key of this work in the bookkeeping maps: `"<activation>:<node>"` (the activation is
    /// numeric, so the first `:` separates the parts even when node ids contain colons).
    pub fn key(&self) -> String {
        format!("{}:{}", self.activation, self.node)
    }
}

/// What a committed job ended as.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum CommitKind {
    /// The node finished and was routed.
    Completed,
    /// The node marked itself awaiting; nothing was routed.
    Awaiting,
    /// The node failed on its last attempt and its fallback node was scheduled.
    FellBack,
    /// The node failed for good; the run failed.
    Failed,
}

/// One taken edge (the routing decision, persisted with the commit, F3).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TakenEdge {
    /// Index of the edge in the blueprint (`None` for a batch worker's arrival at its gather).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub edge: Option<usize>,
    /// The predecessor that counts for the target's join.
    pub source: String,
    /// The activated target.
    pub target: String,
}

/// The idempotency record of one job, keyed by its [`WorkItem::key`]: the full result and
/// the routing decision, so a redelivered job replays it exactly (F4).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CommitRecord {
    /// The node.
    pub node: String,
    /// Its activation.
    pub activation: u64,
    /// How the job ended.
    pub kind: CommitKind,
    /// The node's output.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output: Option<Value>,
    /// The node's action.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub action: Option<String>,
    /// The edges taken.
    #[serde(default)]
    pub taken: Vec<TakenEdge>,
    /// The work this commit made ready (the follow-up jobs to enqueue, redone on replay).
    #[serde(default)]
    pub fired: Vec<WorkItem>,
    /// For a timer wait: the delay in ms until the wake-up, measured at commit time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wake_after_ms: Option<u64>,
    /// The run revision this commit produced: the jobs it fired carry it, so a worker whose
    /// read is older knows its copy is stale (absent in older documents).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision: Option<u64>,
    /// For a node completed by a client's resume: the idempotency key of that resume, so a
    /// retried call answers as the first one did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resume_key: Option<String>,
}

/// A node that marked itself awaiting (F2): it is resumed by a client or by its timer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AwaitingRecord {
    /// The activation that is waiting.
    pub activation: u64,
    /// Why and until when.
    pub details: AwaitingDetails,
    /// The output the node produced (sleep passes its input through); used when a resume
    /// gives none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output: Option<Value>,
    /// A resume requested for an awaiting subflow node, waiting for a worker to resume the
    /// sub-run (the worker runs nodes; the client does not).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pending_resume: Option<PendingResume>,
    /// The idempotency key of the last client resume applied to this node while it kept
    /// waiting (a resumed sub-run that waits again), so a retry of that call is not applied
    /// twice.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_resume_key: Option<String>,
}

/// A resume request handed to a worker (awaiting subflows): the job carries `seq`, so a
/// duplicate or stale resume job is recognised and dropped.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PendingResume {
    /// Unique per request within the run.
    pub seq: u64,
    /// The action to route on once the node completes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub action: Option<String>,
    /// The output given to the resume.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output: Option<Value>,
    /// The idempotency key of the resume call (a retried call with the same key is answered
    /// as the first one was).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
}

/// Work waiting out a `retryDelay`: which attempt runs next and when it is due, so the
/// reconciler re-sends it with its attempt (never as attempt 1) and not before it is due.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RetryRecord {
    /// The attempt the queued retry runs (2 or more).
    pub attempt: u32,
    /// When it is due, epoch milliseconds.
    pub due_at_ms: i64,
    /// Its `retryDelay`, in milliseconds: a re-sent retry waits this long again.
    #[serde(default)]
    pub delay_ms: u64,
}

/// A batch whose workers settle beside the run document (see the `batch_fold` module): the
/// workers the scatter scheduled (consecutive activations `first..=last`), and once their
/// results were folded into the run, what the fold fired.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BatchRecord {
    /// The gather node the workers report to.
    pub gather: String,
    /// The activation of the first worker.
    pub first: u64,
    /// The activation of the last worker.
    pub last: u64,
    /// How many workers the batch has.
    pub size: u64,
    /// Set by the fold: the work it fired (the gather) and the revision it produced, so a
    /// redelivered worker job re-sends what a crashed folder may not have sent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub folded: Option<FoldRecord>,
}

/// What a batch's fold fired (see [`BatchRecord::folded`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FoldRecord {
    /// The work the fold made ready (the gather node, once every worker arrived).
    #[serde(default)]
    pub fired: Vec<WorkItem>,
    /// The run revision the fold produced (the fired jobs carry it).
    pub revision: u64,
}

impl BatchRecord {
    /// The batch's key, unique within the run: `<gather>@<first worker activation>` (a batch
    /// inside a loop gets a fresh key on every pass).
    pub fn key(&self) -> String {
        format!("{}@{}", self.gather, self.first)
    }
}

/// An error recorded for the run (the user's message survives).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RunError {
    /// The failing node (empty for run-level errors such as poison).
    pub node_id: String,
    /// What went wrong.
    pub message: String,
    /// When, RFC 3339.
    pub timestamp: String,
}

/// The run's bookkeeping (stored under [`BOOKKEEPING_KEY`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Bookkeeping {
    /// False for a run created by a foreign client (no bookkeeping yet): the first job
    /// initialises it from the blueprint's start nodes.
    #[serde(default)]
    pub initialized: bool,
    /// The authoritative run status (the status item mirrors it).
    #[serde(default = "running")]
    pub status: RunPhase,
    /// The last activation id handed out.
    #[serde(default)]
    pub seq: u64,
    /// Work that was activated and has not settled yet, by work key (F9).
    #[serde(default)]
    pub outstanding: BTreeMap<String, WorkItem>,
    /// Commit records by work key (F4).
    #[serde(default)]
    pub commits: BTreeMap<String, CommitRecord>,
    /// The join bookkeeping shared with the in-process runtime: nodes fired in the current
    /// arming, the DISTINCT predecessors that activated each join (set semantics, F5) and
    /// the batch workers a gather waits for (F8). Stored flat (`fired`, `arrivals`,
    /// `dynamicPreds`, `dynamicGather`) in this object.
    #[serde(flatten)]
    pub joins: JoinBook,
    /// How often each blueprint node was scheduled (the iteration guard counts per node, as
    /// in-process; batch workers run once each and are not counted).
    #[serde(default)]
    pub executions: BTreeMap<String, u64>,
    /// Awaiting nodes by node id (F2).
    #[serde(default)]
    pub awaiting: BTreeMap<String, AwaitingRecord>,
    /// Outstanding work waiting out a `retryDelay`, by work key (dropped when it settles).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub retries: BTreeMap<String, RetryRecord>,
    /// Batches whose workers settle beside the run document, by batch key (see
    /// [`BatchRecord`]).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub batches: BTreeMap<String, BatchRecord>,
    /// Errors, in order.
    #[serde(default)]
    pub errors: Vec<RunError>,
    /// Why the run failed or was cancelled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// When the status item was last written (epoch seconds), to amortise heartbeats.
    #[serde(default)]
    pub status_touched_at: i64,
    /// Number of commits so far; the status item carries it so a stale status write never
    /// overwrites a newer one.
    #[serde(default)]
    pub revision: u64,
}

fn running() -> RunPhase {
    RunPhase::Running
}

impl Default for Bookkeeping {
    fn default() -> Self {
        Bookkeeping {
            initialized: false,
            status: RunPhase::Running,
            seq: 0,
            outstanding: BTreeMap::new(),
            commits: BTreeMap::new(),
            joins: JoinBook::default(),
            executions: BTreeMap::new(),
            awaiting: BTreeMap::new(),
            retries: BTreeMap::new(),
            batches: BTreeMap::new(),
            errors: Vec::new(),
            reason: None,
            status_touched_at: 0,
            revision: 0,
        }
    }
}

impl Bookkeeping {
    /// Hands out a fresh activation for `node` and records it as outstanding.
    pub fn schedule(&mut self, node: &str) -> WorkItem {
        self.seq += 1;
        let item = WorkItem {
            node: node.to_string(),
            activation: self.seq,
        };
        self.outstanding.insert(item.key(), item.clone());
        item
    }

    /// The commit record that a client resume with idempotency key `key` produced, if any.
    pub fn resumed_with(&self, key: &str) -> Option<&CommitRecord> {
        self.commits
            .values()
            .find(|r| r.resume_key.as_deref() == Some(key))
    }

    /// The batch `work` is a worker of, if any: `(key, record)`.
    pub fn batch_of(&self, work: &WorkItem) -> Option<(String, &BatchRecord)> {
        let gather = self.joins.gather_of(&work.node)?;
        self.batches
            .values()
            .find(|b| b.gather == gather && (b.first..=b.last).contains(&work.activation))
            .map(|b| (b.key(), b))
    }

    /// The awaiting record of `work`'s node, if that node waits in this very activation.
    pub fn awaiting_for(&self, work: &WorkItem) -> Option<&AwaitingRecord> {
        self.awaiting
            .get(&work.node)
            .filter(|rec| rec.activation == work.activation)
    }
}

/// The state of one run: its context and bookkeeping.
#[derive(Debug, Clone, PartialEq)]
pub struct RunState {
    /// The run id.
    pub run_id: String,
    /// The flat context (`_outputs.<id>`, `<id>`, `_inputs.<id>`, user keys, `blueprintId`,
    /// `blueprintVersion`).
    pub context: Map<String, Value>,
    /// Our bookkeeping.
    pub book: Bookkeeping,
}

impl RunState {
    /// The blueprint id stored in the context.
    pub fn blueprint_id(&self) -> Option<&str> {
        self.context.get(BLUEPRINT_ID_KEY).and_then(Value::as_str)
    }

    /// The stored item: `{id, runId, ...context, _flowcraft: bookkeeping}`.
    pub fn to_document(&self) -> Result<Map<String, Value>, Error> {
        let mut doc = Map::new();
        doc.insert("id".into(), Value::String(self.run_id.clone()));
        doc.insert("runId".into(), Value::String(self.run_id.clone()));
        for (k, v) in &self.context {
            if !NON_CONTEXT_KEYS.contains(&k.as_str()) {
                doc.insert(k.clone(), v.clone());
            }
        }
        let book = serde_json::to_value(&self.book)
            .map_err(|e| Error::unexpected(format!("cannot serialize run bookkeeping: {e}")))?;
        doc.insert(BOOKKEEPING_KEY.into(), book);
        Ok(doc)
    }

    /// Parses a stored item (ours or one written by the TypeScript adapter/client).
    pub fn from_document(mut doc: Map<String, Value>) -> Result<RunState, Error> {
        let run_id = doc
            .get("runId")
            .or_else(|| doc.get("id"))
            .and_then(Value::as_str)
            .map(str::to_string)
            .ok_or_else(|| {
                Error::invalid_input("run document has neither `runId` nor `id`; it is not a run")
            })?;
        let book = match doc.remove(BOOKKEEPING_KEY) {
            Some(v) => serde_json::from_value(v).map_err(|e| {
                Error::invalid_input(format!(
                    "run {run_id}: unreadable `{BOOKKEEPING_KEY}` bookkeeping: {e}"
                ))
            })?,
            None => Bookkeeping::default(),
        };
        check_bookkeeping(&run_id, &book)?;
        match doc.get(BLUEPRINT_VERSION_KEY) {
            None | Some(Value::Null | Value::String(_)) => {}
            Some(other) => {
                return Err(Error::invalid_input(format!(
                    "run {run_id}: `{BLUEPRINT_VERSION_KEY}` is {other}, not a version string or \
                     null; no worker can ever match it (the run document was edited by hand)"
                )));
            }
        }
        for key in NON_CONTEXT_KEYS {
            doc.remove(key);
        }
        Ok(RunState {
            run_id,
            context: doc,
            book,
        })
    }
}

/// The largest counter a stored run may hold: 2^53, the largest integer a JSON number keeps
/// exactly in JavaScript (the TypeScript adapter) and in Cosmos DB.
const MAX_COUNTER: u64 = 1 << 53;

/// Refuses bookkeeping that no real run has (a hand-edited document): counters past 2^53
/// (the worker adds to them and compares them with the clock, which must not overflow), and
/// outstanding work filed under a key that is not its own (no job could ever settle it, so
/// the reconciler would re-send it forever).
fn check_bookkeeping(run_id: &str, book: &Bookkeeping) -> Result<(), Error> {
    if let Some((key, item)) = book.outstanding.iter().find(|(k, i)| **k != i.key()) {
        return Err(Error::invalid_input(format!(
            "run {run_id}: outstanding work `{key}` names node '{}' activation {}; the run \
             document was edited by hand and cannot be processed",
            item.node, item.activation
        )));
    }
    let counters = [("seq", book.seq), ("revision", book.revision)]
        .into_iter()
        .chain(book.executions.values().map(|n| ("executions", *n)));
    for (name, value) in counters {
        if value > MAX_COUNTER {
            return Err(Error::invalid_input(format!(
                "run {run_id}: `{BOOKKEEPING_KEY}.{name}` is {value}, beyond any real run \
                 (at most 2^53); the run document was edited by hand and cannot be processed"
            )));
        }
    }
    if book.status_touched_at.unsigned_abs() > MAX_COUNTER {
        return Err(Error::invalid_input(format!(
            "run {run_id}: `{BOOKKEEPING_KEY}.statusTouchedAt` is {}, not a time in epoch \
             seconds; the run document was edited by hand and cannot be processed",
            book.status_touched_at
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn document_round_trip_keeps_context_top_level_and_strips_system_fields() {
        let mut context = Map::new();
        context.insert("_outputs.a".into(), json!({"x": 1}));
        context.insert(BLUEPRINT_ID_KEY.into(), json!("bp"));
        let mut state = RunState {
            run_id: "r1".into(),
            context,
            book: Bookkeeping::default(),
        };
        state.book.schedule("a");
        let mut doc = state.to_document().unwrap();
        assert_eq!(doc["_outputs.a"], json!({"x": 1}));
        assert_eq!(doc["runId"], json!("r1"));
        doc.insert("_etag".into(), json!("e"));
        doc.insert("_ts".into(), json!(5));
        let back = RunState::from_document(doc).unwrap();
        assert_eq!(back, state);
    }

    #[test]
    fn foreign_document_without_bookkeeping_is_uninitialized() {
        let doc = json!({"id": "r", "runId": "r", "blueprintId": "bp", "order": 1});
        let Value::Object(map) = doc else { panic!() };
        let state = RunState::from_document(map).unwrap();
        assert!(!state.book.initialized);
        assert_eq!(state.blueprint_id(), Some("bp"));
        assert_eq!(state.context.len(), 2);
    }

    #[test]
    fn document_without_ids_is_rejected_with_a_message() {
        let err = RunState::from_document(Map::new()).unwrap_err();
        assert!(err.to_string().contains("neither `runId` nor `id`"));
    }
}
