//! The pure state transitions of a run document: what ONE commit changes when a node settles
//! (finishes, marks itself awaiting, fails for good, or is resumed), when a run starts, and
//! when a run is cancelled. No I/O: the worker and the client apply these to a loaded
//! [`RunState`] and write the result with one conditional [`super::ports::RunStore::commit`]
//! (re-applying them to a fresh copy when the ETag was stale).
//!
//! The scheduling rules are the in-process runtime's: one shared `JoinBook`
//! ([`crate::flow::joins::JoinBook`]), kept in the run document instead of memory:
//! - a node fires at most once per arming; a `loop-controller` firing re-arms its loop body
//!   (and drops that body's settled commit records), and the controller re-arms itself when
//!   it finishes;
//! - **`all` join**: fires when every DISTINCT static predecessor (loop controllers and back
//!   edges excluded) plus every dynamic batch worker of the current batch has activated it (a
//!   set, so redelivery never double counts, F5). Policy for untaken branches: a predecessor that
//!   finished without taking its edge into the join never arrives, so the join does not fire
//!   and the run ends `stalled` once nothing else is outstanding (the in-process rule; blueprints
//!   whose incoming branches are exclusive should use `any`). A failing predecessor fails the
//!   whole run (sticky), so no poison pills are needed; a predecessor rescued by its fallback
//!   arrives through the fallback's completion, counted as the failed node;
//! - **`any` join**: fires on the first activation of the arming and ignores later ones (no
//!   cancel keys that a third arrival could trip over, F6); an activation from a loop
//!   controller always fires.
//! - completion is decided by the outstanding-work set (F9): `completed` when nothing is
//!   outstanding or awaiting and no join is partially satisfied.

use crate::distributed::ports::RunPhase;
use crate::distributed::state::{
    AwaitingRecord, BLUEPRINT_ID_KEY, BLUEPRINT_VERSION_KEY, BatchRecord, CommitKind, CommitRecord,
    RunError, RunState, TakenEdge, WorkItem,
};
use crate::flow::blueprint::Blueprint;
use crate::flow::context::{AwaitReason, AwaitingDetails, ContextDelta, apply_deltas};
use crate::flow::execute::{NodeCompletion, node_definition};
use crate::flow::node::{NodeError, NodeResult};
use crate::flow::routing::{deliver_input, output_keys, route};
use crate::flow::runtime::{self, AWAITING_DETAILS_KEY, AWAITING_IDS_KEY, MAX_ITERATIONS};
use chrono::{DateTime, Utc};
use serde_json::{Map, Value};
use std::collections::BTreeSet;

/// How a node settled.
#[derive(Debug, Clone, PartialEq)]
pub enum Settlement {
    /// The node's attempt finished (it may have marked itself awaiting).
    Finished(NodeCompletion),
    /// The node failed on its last attempt (or fatally).
    Failed(NodeError),
    /// An awaiting node is completed with this result (client resume, its timer, or its
    /// resumed sub-run) and these extra context writes.
    Resumed(NodeResult, Vec<ContextDelta>),
}

/// What the blueprint version check says about a run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VersionCheck {
    /// The run is pinned to the worker's version.
    Matches,
    /// The run has no pinned version yet: adopt the worker's in the next commit (F1).
    Adopt,
    /// The run is pinned to another version.
    Mismatch {
        /// The version the run is pinned to (`None` = a blueprint without version).
        pinned: Option<String>,
    },
}

fn version_value(version: Option<&str>) -> Value {
    version.map_or(Value::Null, |v| Value::String(v.to_string()))
}

/// Compares the run's pinned version with the worker's blueprint.
pub fn check_version(state: &RunState, blueprint: &Blueprint) -> VersionCheck {
    match state.context.get(BLUEPRINT_VERSION_KEY) {
        None => VersionCheck::Adopt,
        Some(pinned) if *pinned == version_value(blueprint.version()) => VersionCheck::Matches,
        Some(Value::String(s)) => VersionCheck::Mismatch {
            pinned: Some(s.clone()),
        },
        Some(Value::Null) => VersionCheck::Mismatch { pinned: None },
        Some(other) => VersionCheck::Mismatch {
            pinned: Some(other.to_string()),
        },
    }
}

/// Says why a run pinned to `pinned` cannot be handled with `blueprint`.
pub fn version_mismatch(pinned: &Option<String>, blueprint: &Blueprint) -> String {
    format!(
        "blueprint version mismatch: the run is pinned to {} but the loaded blueprint '{}' has \
         {}; use a worker or client that loads the pinned version",
        pinned
            .as_deref()
            .map_or("no version".to_string(), |v| format!("version {v}")),
        blueprint.id(),
        blueprint
            .version()
            .map_or("no version".to_string(), |v| format!("version {v}")),
    )
}

/// Prepares a run document before a worker's commit: pins the version when missing (F1) and
/// initialises the bookkeeping of a run created by a foreign (TypeScript-style) client from
/// the blueprint's start nodes (fallback-only nodes excluded, F19). Returns the start work
/// scheduled by an initialisation (its jobs must be enqueued after the commit).
pub fn prepare(state: &mut RunState, blueprint: &Blueprint) -> Vec<WorkItem> {
    if !state.context.contains_key(BLUEPRINT_VERSION_KEY) {
        state.context.insert(
            BLUEPRINT_VERSION_KEY.to_string(),
            version_value(blueprint.version()),
        );
    }
    if !state.context.contains_key(BLUEPRINT_ID_KEY) {
        state.context.insert(
            BLUEPRINT_ID_KEY.to_string(),
            Value::String(blueprint.id().to_string()),
        );
    }
    if state.book.initialized {
        return Vec::new();
    }
    state.book.initialized = true;
    start_nodes(blueprint)
        .iter()
        .map(|id| fire(state, blueprint, id))
        .collect()
}

/// Whether [`prepare`] would change `state` (a foreign run, or a pin that is missing).
pub fn needs_prepare(state: &RunState) -> bool {
    !state.book.initialized
        || !state.context.contains_key(BLUEPRINT_VERSION_KEY)
        || !state.context.contains_key(BLUEPRINT_ID_KEY)
}

/// The nodes a run starts with: start nodes that are not fallback-only (F19).
pub fn start_nodes(blueprint: &Blueprint) -> Vec<String> {
    blueprint
        .start_nodes()
        .iter()
        .filter(|id| !blueprint.is_fallback_only(id))
        .cloned()
        .collect()
}

/// A new run's document: the initial context plus `blueprintId`, `blueprintVersion` (pinned,
/// `null` when the blueprint has none) and `_executionId` (= the run id, F16), with its start
/// work scheduled. A blueprint without start nodes completes at once.
pub fn new_run(
    run_id: &str,
    blueprint: &Blueprint,
    initial: Map<String, Value>,
) -> (RunState, Vec<WorkItem>) {
    let mut state = RunState {
        run_id: run_id.to_string(),
        context: initial,
        book: Default::default(),
    };
    state.context.insert(
        crate::flow::runtime::EXECUTION_ID_KEY.to_string(),
        Value::String(run_id.to_string()),
    );
    let work = prepare(&mut state, blueprint);
    update_status(&mut state);
    (state, work)
}

/// Marks the run cancelled (sticky). Returns false when it had already finished.
pub fn cancel(state: &mut RunState, reason: &str) -> bool {
    if state.book.status.is_terminal() {
        return false;
    }
    state.book.status = RunPhase::Cancelled;
    state.book.reason = Some(reason.to_string());
    clear_awaiting_keys(&mut state.context);
    true
}

/// Marks the run failed with `message` (poison messages, missing blueprints). Returns false
/// when it had already finished.
pub fn fail_run(state: &mut RunState, node_id: &str, message: &str, now: DateTime<Utc>) -> bool {
    if state.book.status.is_terminal() {
        return false;
    }
    state.book.errors.push(RunError {
        node_id: node_id.to_string(),
        message: message.to_string(),
        timestamp: now.to_rfc3339(),
    });
    update_status(state);
    true
}

/// Applies a settlement of `work` to the run and returns its commit record (also stored in
/// the run). The caller has checked that the run is not finished and, for `Finished` /
/// `Failed`, that no record exists for `work` yet; for `Resumed`, that `work` is awaiting.
pub fn settle(
    state: &mut RunState,
    blueprint: &Blueprint,
    work: &WorkItem,
    settlement: Settlement,
    now: DateTime<Utc>,
) -> CommitRecord {
    let node = work.node.as_str();
    state.book.outstanding.remove(&work.key());
    state.book.retries.remove(&work.key());
    let mut record = CommitRecord {
        node: node.to_string(),
        activation: work.activation,
        kind: CommitKind::Completed,
        output: None,
        action: None,
        taken: Vec::new(),
        fired: Vec::new(),
        wake_after_ms: None,
        revision: None,
        resume_key: None,
    };
    match settlement {
        Settlement::Finished(completion) => {
            apply_deltas(&mut state.context, &completion.deltas);
            match completion.awaiting {
                Some(details) => {
                    record.kind = CommitKind::Awaiting;
                    record.output = completion.result.output.clone();
                    record.wake_after_ms = wake_after_ms(&details, now);
                    record_awaiting(state, work, details, completion.result.output);
                }
                None => complete(state, blueprint, node, completion.result, &mut record),
            }
        }
        Settlement::Resumed(result, deltas) => {
            state.book.awaiting.remove(node);
            runtime::clear_awaiting(&mut state.context, node);
            apply_deltas(&mut state.context, &deltas);
            complete(state, blueprint, node, result, &mut record);
        }
        Settlement::Failed(error) => {
            if state.book.awaiting_for(work).is_some() {
                // A resumed sub-run failed: the node stops waiting and fails.
                state.book.awaiting.remove(node);
                runtime::clear_awaiting(&mut state.context, node);
            }
            let fallback = node_definition(blueprint, node, &state.context)
                .and_then(|n| n.config.fallback.clone())
                .filter(|f| blueprint.node(f).is_some());
            match fallback {
                Some(fallback) if !error.fatal => {
                    record.kind = CommitKind::FellBack;
                    runtime::record_fallback(&mut state.context, blueprint.id(), node, &error);
                    record.fired.push(fire(state, blueprint, &fallback));
                }
                _ => {
                    record.kind = CommitKind::Failed;
                    state.book.errors.push(RunError {
                        node_id: node.to_string(),
                        message: error.message,
                        timestamp: now.to_rfc3339(),
                    });
                }
            }
        }
    }
    let looping = state
        .book
        .executions
        .values()
        .any(|n| *n > MAX_ITERATIONS as u64);
    if looping && state.book.errors.is_empty() {
        state.book.errors.push(RunError {
            node_id: node.to_string(),
            message: format!(
                "Traversal exceeded maximum iterations ({MAX_ITERATIONS}), possible infinite loop"
            ),
            timestamp: now.to_rfc3339(),
        });
    }
    state.book.revision += 1;
    record.revision = Some(state.book.revision);
    state.book.commits.insert(work.key(), record.clone());
    update_status(state);
    record
}

/// Sets the authoritative status from the bookkeeping (never leaves a terminal status).
pub fn update_status(state: &mut RunState) {
    let book = &mut state.book;
    if book.status.is_terminal() {
        return;
    }
    let partial_join = book.joins.partial_joins().next().is_some();
    book.status = if let Some(first) = book.errors.first() {
        book.reason = Some(first.message.clone());
        RunPhase::Failed
    } else if !book.outstanding.is_empty()
        || book.awaiting.values().any(|a| a.pending_resume.is_some())
    {
        RunPhase::Running
    } else if !book.awaiting.is_empty() {
        RunPhase::Awaiting
    } else if partial_join {
        book.reason = Some(
            "work ran out while an `all` join had received only some of its activations"
                .to_string(),
        );
        RunPhase::Stalled
    } else {
        RunPhase::Completed
    };
    if book.status.is_terminal() {
        clear_awaiting_keys(&mut state.context);
    }
}

/// Schedules `node` (it runs once for this firing); a loop controller re-arms its body.
fn fire(state: &mut RunState, blueprint: &Blueprint, node: &str) -> WorkItem {
    if state.book.joins.fire(blueprint, &state.context, node) {
        prune_settled_records(state, node, blueprint.loop_body(node));
    }
    if blueprint.node(node).is_some() {
        *state.book.executions.entry(node.to_string()).or_default() += 1;
    }
    state.book.schedule(node)
}

/// Drops the commit records of earlier loop iterations (the controller's and its body's)
/// whose fired work has all settled, so a long loop does not grow the run document without
/// bound. Safe: a redelivered job whose record is gone finds its work neither recorded nor
/// outstanding and is dropped as stale; a replay of it would only re-enqueue settled work.
fn prune_settled_records(state: &mut RunState, controller: &str, body: &[String]) {
    let book = &mut state.book;
    let awaiting: BTreeSet<(String, u64)> = book
        .awaiting
        .iter()
        .map(|(node, rec)| (node.clone(), rec.activation))
        .collect();
    let outstanding = &book.outstanding;
    book.commits.retain(|_, record| {
        let in_loop = record.node == controller || body.contains(&record.node);
        let followed_up = record
            .fired
            .iter()
            .all(|w| !outstanding.contains_key(&w.key()));
        let waiting = awaiting.contains(&(record.node.clone(), record.activation));
        !(in_loop && followed_up && !waiting)
    });
}

/// Empties the bookkeeping a finished run no longer needs (commit records, joins, dynamic
/// worker maps), so recording a failure fits in the document even when the document had
/// grown too large to commit (jobs of finished runs are dropped, so nothing replays).
pub fn shrink_finished(state: &mut RunState) {
    if !state.book.status.is_terminal() {
        return;
    }
    let book = &mut state.book;
    book.commits.clear();
    book.outstanding.clear();
    book.retries.clear();
    book.joins.clear();
    book.executions.clear();
    book.batches.clear();
}

/// Records that `source` activated `target`; returns the work when the join fires.
fn activate(
    state: &mut RunState,
    blueprint: &Blueprint,
    source: &str,
    target: &str,
) -> Option<WorkItem> {
    let fires = state
        .book
        .joins
        .activate(blueprint, &state.context, source, target);
    fires.then(|| fire(state, blueprint, target))
}

/// Stores the output, schedules dynamic nodes, routes and fires ready targets.
fn complete(
    state: &mut RunState,
    blueprint: &Blueprint,
    node: &str,
    result: NodeResult,
    record: &mut CommitRecord,
) {
    let output = result.output.clone().unwrap_or(Value::Null);
    for key in output_keys(node) {
        state.context.insert(key, output.clone());
    }
    state
        .book
        .joins
        .start_batch(blueprint, &state.context, node, &result);
    let workers: Vec<WorkItem> = result
        .dynamic_nodes
        .iter()
        .map(|dynamic| fire(state, blueprint, &dynamic.id))
        .collect();
    open_batch(state, &workers);
    record.fired.extend(workers);
    for activation in route(blueprint, node, &result, &state.context) {
        deliver_input(&mut state.context, &activation.target, activation.input);
        record.taken.push(TakenEdge {
            edge: Some(activation.edge),
            source: activation.source.clone(),
            target: activation.target.clone(),
        });
        if let Some(work) = activate(state, blueprint, &activation.source, &activation.target) {
            record.fired.push(work);
        }
    }
    if let Some(gather) = state.book.joins.gather_of(node).map(str::to_string) {
        record.taken.push(TakenEdge {
            edge: None,
            source: node.to_string(),
            target: gather.clone(),
        });
        if let Some(work) = activate(state, blueprint, node, &gather) {
            record.fired.push(work);
        }
    }
    state.book.joins.finished(blueprint, &state.context, node);
    record.output = result.output;
    record.action = result.action;
}

/// Records the batch that `workers` (just scheduled, consecutive activations) form when they
/// report to a gather node, so that they settle beside the run document and are folded into
/// it at once (see [`super::batch_fold`]). The folded batches of the same gather (earlier
/// passes of a loop) are forgotten. Workers with repeated ids (a custom scatter) form no
/// such batch: they commit one by one, as any other node.
fn open_batch(state: &mut RunState, workers: &[WorkItem]) {
    let (Some(first), Some(last)) = (workers.first(), workers.last()) else {
        return;
    };
    let distinct: BTreeSet<&str> = workers.iter().map(|w| w.node.as_str()).collect();
    if distinct.len() != workers.len() {
        return;
    }
    let Some(gather) = state.book.joins.gather_of(&first.node).map(str::to_string) else {
        return;
    };
    state
        .book
        .batches
        .retain(|_, b| b.gather != gather || b.folded.is_none());
    let batch = BatchRecord {
        gather,
        first: first.activation,
        last: last.activation,
        size: workers.len() as u64,
        folded: None,
    };
    state.book.batches.insert(batch.key(), batch);
}

/// How long after `now` a timer wait wakes up, in milliseconds (0 when already due or
/// without a wake-up time); `None` for a wait that no timer ends.
pub(crate) fn wake_after_ms(details: &AwaitingDetails, now: DateTime<Utc>) -> Option<u64> {
    if details.reason != AwaitReason::Timer {
        return None;
    }
    let ms = details
        .wake_up_at
        .map(|at| (at - now).num_milliseconds().max(0))
        .unwrap_or(0);
    Some(u64::try_from(ms).unwrap_or(0))
}

/// Records an awaiting node in the bookkeeping and in `_awaitingNodeIds` /
/// `_awaitingDetails` (and `_subflowState.<id>`), like the in-process runtime.
fn record_awaiting(
    state: &mut RunState,
    work: &WorkItem,
    details: AwaitingDetails,
    output: Option<Value>,
) {
    let details = runtime::record_awaiting(&mut state.context, &work.node, details);
    state.book.awaiting.insert(
        work.node.clone(),
        AwaitingRecord {
            activation: work.activation,
            details,
            output,
            pending_resume: None,
            last_resume_key: None,
        },
    );
}

fn clear_awaiting_keys(ctx: &mut Map<String, Value>) {
    ctx.remove(AWAITING_IDS_KEY);
    ctx.remove(AWAITING_DETAILS_KEY);
}

/// The awaiting node a resume targets: `node` if given (it must be awaiting), else the first
/// in `_awaitingNodeIds` order.
pub fn resume_target(state: &RunState, node: Option<&str>) -> Result<String, String> {
    let awaiting = &state.book.awaiting;
    match node {
        Some(id) if awaiting.contains_key(id) => Ok(id.to_string()),
        Some(id) => Err(format!(
            "node '{id}' of run {} is not awaiting (awaiting: {:?})",
            state.run_id,
            awaiting.keys().collect::<Vec<_>>()
        )),
        None => {
            let ordered = state
                .context
                .get(AWAITING_IDS_KEY)
                .and_then(Value::as_array)
                .and_then(|ids| {
                    ids.iter()
                        .filter_map(Value::as_str)
                        .find(|id| awaiting.contains_key(*id))
                        .map(str::to_string)
                });
            ordered
                .or_else(|| awaiting.keys().next().cloned())
                .ok_or_else(|| format!("run {} is not awaiting: nothing to resume", state.run_id))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flow::blueprint::Blueprint;
    use serde_json::json;

    fn bp(json: &str) -> Blueprint {
        Blueprint::from_json(json).unwrap()
    }

    fn done(output: Value) -> Settlement {
        Settlement::Finished(NodeCompletion {
            result: NodeResult::output(output),
            deltas: vec![ContextDelta::Set {
                key: "k".into(),
                value: json!(1),
            }],
            awaiting: None,
        })
    }

    fn only(items: &[WorkItem]) -> &WorkItem {
        assert_eq!(items.len(), 1, "{items:?}");
        &items[0]
    }

    #[test]
    fn a_chain_completes_when_nothing_is_outstanding() {
        let b = bp(
            r#"{"id":"c","nodes":[{"id":"a","uses":"echo"},{"id":"b","uses":"echo"}],
            "edges":[{"source":"a","target":"b"}]}"#,
        );
        let (mut s, work) = new_run("r", &b, Map::new());
        let a = only(&work).clone();
        assert_eq!(s.book.status, RunPhase::Running);
        let rec = settle(&mut s, &b, &a, done(json!(1)), Utc::now());
        assert_eq!(rec.kind, CommitKind::Completed);
        let bw = only(&rec.fired).clone();
        assert_eq!(s.context["_inputs.b"], json!(1));
        assert_eq!(s.context["_outputs.a"], json!(1));
        assert_eq!(s.context["a"], json!(1));
        assert_eq!(s.book.status, RunPhase::Running);
        settle(&mut s, &b, &bw, done(json!(2)), Utc::now());
        assert_eq!(s.book.status, RunPhase::Completed);
        assert_eq!(s.book.commits.len(), 2);
    }

    fn dag(n: usize, edges: &[(usize, usize)]) -> Blueprint {
        let nodes: Vec<Value> = (0..n)
            .map(|i| json!({"id": format!("n{i}"), "uses": "echo"}))
            .collect();
        let edges: Vec<Value> = edges
            .iter()
            .map(|(a, b)| json!({"source": format!("n{a}"), "target": format!("n{b}")}))
            .collect();
        bp(&json!({"id": "dag", "nodes": nodes, "edges": edges}).to_string())
    }

    proptest::proptest! {
        /// Any delivery order with any duplicated deliveries settles every node of a DAG
        /// exactly once, fires every `all` join once, and completes the run.
        #[test]
        fn redelivery_in_any_order_settles_every_node_once(
            n in 2usize..10,
            raw_edges in proptest::collection::vec((0usize..10, 0usize..10), 0..20),
            seed in 0u64..1000,
        ) {
            let edges: Vec<(usize, usize)> = raw_edges
                .into_iter()
                .filter(|(a, b)| a < b && *b < n)
                .collect();
            let b = dag(n, &edges);
            let (mut s, work) = new_run("r", &b, Map::new());
            let mut rng = fastrand::Rng::with_seed(seed);
            let mut queue: Vec<WorkItem> = work;
            let mut settled = 0;
            while !queue.is_empty() {
                let i = rng.usize(..queue.len());
                let item = if rng.bool() { queue[i].clone() } else { queue.swap_remove(i) };
                if let Some(record) = s.book.commits.get(&item.key()) {
                    queue.extend(record.fired.clone());
                    continue;
                }
                if !s.book.outstanding.contains_key(&item.key()) {
                    continue;
                }
                let record = settle(&mut s, &b, &item, done(json!(item.node.clone())), Utc::now());
                settled += 1;
                queue.extend(record.fired);
            }
            proptest::prop_assert_eq!(settled, n);
            proptest::prop_assert_eq!(s.book.status, RunPhase::Completed);
            for i in 0..n {
                let key = format!("_outputs.n{i}");
                proptest::prop_assert_eq!(&s.context[&key], &json!(format!("n{i}")));
            }
        }
    }

    #[test]
    fn fallback_only_nodes_are_not_started() {
        let b = bp(
            r#"{"id":"c","nodes":[{"id":"a","uses":"echo","config":{"fallback":"f"}},
            {"id":"f","uses":"echo"}],"edges":[]}"#,
        );
        let (_, work) = new_run("r", &b, Map::new());
        assert_eq!(only(&work).node, "a");
    }

    #[test]
    fn version_pin_is_adopted_when_missing_and_compared_otherwise() {
        let b = bp(
            r#"{"id":"c","metadata":{"version":"2"},"nodes":[{"id":"a","uses":"echo"}],"edges":[]}"#,
        );
        let mut s = RunState {
            run_id: "r".into(),
            context: Map::new(),
            book: Default::default(),
        };
        assert_eq!(check_version(&s, &b), VersionCheck::Adopt);
        let work = prepare(&mut s, &b);
        assert_eq!(work.len(), 1);
        assert_eq!(check_version(&s, &b), VersionCheck::Matches);
        s.context.insert(BLUEPRINT_VERSION_KEY.into(), Value::Null);
        assert_eq!(
            check_version(&s, &b),
            VersionCheck::Mismatch { pinned: None }
        );
    }
}
