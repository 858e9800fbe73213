//! The invariant checker: what a run must look like after quiescence, compared with the
//! same blueprint run without faults (the reference):
//! - every run is finished (waiting runs were resumed by the driver);
//! - it ended with the reference's status and (normalised) context: no output lost;
//! - each activation's commit record was added exactly once, and each node committed as
//!   many activations as in the reference (a join fires once per arming);
//! - the status item agrees with the run document;
//! - the queue is empty and the poison queue holds nothing;
//! - no lease lapsed under a live worker except where a fault made it lapse;
//! - unless the plan re-runs work legitimately, no attempt ran again after it had failed
//!   (a second retry chain).
//!
//! The driver adds its own: a retried resume is answered as the first call was, a resume
//! is not refused while the node waits, and a started run never sits `running` with
//! nothing queued (only the reconciler could move it).

use crate::sim::faults::{FaultPlan, FaultyRunStore};
use crate::sim::workload::{Execution, ExecutionKey};
use flowcraft_azure::distributed::memory::{MemoryQueue, MemoryRunStore};
use flowcraft_azure::distributed::ports::{RunPhase, RunStore};
use flowcraft_azure::distributed::state::RunState;
use serde_json::Value;
use std::collections::BTreeMap;

/// What a finished run of a blueprint looks like, independent of ids and timing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expect {
    /// The final status.
    pub status: RunPhase,
    /// The user context, normalised (JSON text).
    pub context: String,
    /// Commit records added per node (activations committed).
    pub commits: BTreeMap<String, u32>,
}

/// One run as found after quiescence.
#[derive(Debug, Clone)]
pub struct RunView {
    /// The blueprint the run executes.
    pub blueprint: String,
    /// The stored run document.
    pub state: RunState,
    /// What the run looks like, for comparison with the reference.
    pub expect: Expect,
}

/// Replaces random ids (uuids, 32-hex batch ids) by `<id>`.
pub fn normalize_ids(text: &str) -> String {
    let chars: Vec<char> = text.chars().collect();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    while i < chars.len() {
        let run = chars[i..]
            .iter()
            .take_while(|c| c.is_ascii_hexdigit() || **c == '-')
            .count();
        let hex = chars[i..i + run].iter().filter(|c| **c != '-').count();
        if hex >= 32 {
            out.push_str("<id>");
            i += run;
        } else {
            out.push(chars[i]);
            i += 1;
        }
    }
    out
}

/// `value` with every object's keys sorted (context key order depends on commit order) and
/// wall-clock timer deadlines (`wakeUpAt`) left out.
fn sorted(value: Value) -> Value {
    match value {
        Value::Object(map) => {
            let sorted: BTreeMap<String, Value> = map
                .into_iter()
                .filter(|(k, _)| k != "wakeUpAt")
                .map(|(k, v)| (k, sorted(v)))
                .collect();
            Value::Object(sorted.into_iter().collect())
        }
        Value::Array(items) => Value::Array(items.into_iter().map(sorted).collect()),
        other => other,
    }
}

/// The node a work key `<activation>:<node>` names, ids normalised.
fn key_node(key: &str) -> String {
    normalize_ids(key.split_once(':').map_or(key, |(_, node)| node))
}

/// Every run the store ever created, with what it looks like now.
pub async fn observe(store: &FaultyRunStore) -> Vec<RunView> {
    let (created, adds) = {
        let log = store.log.lock().unwrap();
        (log.created.clone(), log.commit_adds.clone())
    };
    let mut views = Vec::new();
    for run_id in created {
        let Ok(Some(loaded)) = store.inner.load(&run_id).await else {
            continue;
        };
        let state = loaded.value;
        let mut context = state.context.clone();
        for key in ["_executionId", "blueprintId", "blueprintVersion"]
            .into_iter()
            .chain(crate::sim::workload::ORDER_DEPENDENT_KEYS)
        {
            context.remove(key);
        }
        let mut commits = BTreeMap::new();
        for (_, key) in adds.keys().filter(|(run, _)| *run == run_id) {
            *commits.entry(key_node(key)).or_default() += 1;
        }
        views.push(RunView {
            blueprint: state.blueprint_id().unwrap_or_default().to_string(),
            expect: Expect {
                status: state.book.status,
                context: normalize_ids(&sorted(Value::Object(context)).to_string()),
                commits,
            },
            state,
        });
    }
    views
}

/// Everything the checker needs besides the runs.
pub struct Evidence<'a> {
    /// The plan the schedule ran under.
    pub plan: &'a FaultPlan,
    /// The store with its log.
    pub store: &'a FaultyRunStore,
    /// The real store.
    pub memory: &'a MemoryRunStore,
    /// The real queue.
    pub queue: &'a MemoryQueue,
    /// Messages delivered again while the previous delivery was still held.
    pub lapsed: &'a [String],
    /// Probe executions.
    pub executions: BTreeMap<ExecutionKey, Vec<Execution>>,
    /// The reference outcome per blueprint (absent while computing the references).
    pub references: Option<&'a BTreeMap<String, Expect>>,
}

/// The invariant violations, each one line.
pub async fn check(runs: &[RunView], ev: &Evidence<'_>) -> Vec<String> {
    let mut bad = Vec::new();
    let short = |id: &str| id.chars().take(8).collect::<String>();
    for run in runs {
        let id = short(&run.state.run_id);
        let book = &run.state.book;
        if !book.status.is_terminal() {
            bad.push(format!(
                "run {id} ({}) is still {} after quiescence; outstanding {:?}, awaiting {:?}",
                run.blueprint,
                book.status.as_str(),
                book.outstanding.keys().collect::<Vec<_>>(),
                book.awaiting.keys().collect::<Vec<_>>()
            ));
        }
        match ev.memory.status(&run.state.run_id).await {
            Ok(Some(item)) => {
                let item = item.value;
                if item.status != book.status {
                    bad.push(format!(
                        "run {id} ({}): status item says {} but the run document says {}",
                        run.blueprint,
                        item.status.as_str(),
                        book.status.as_str()
                    ));
                } else if item.status.is_terminal() && item.final_status.is_none() {
                    bad.push(format!(
                        "run {id}: status item is final without finalStatus"
                    ));
                }
            }
            _ => bad.push(format!("run {id} ({}) has no status item", run.blueprint)),
        }
        if let Some(expect) = ev.references.and_then(|r| r.get(&run.blueprint)) {
            if expect.status != run.expect.status {
                bad.push(format!(
                    "run {id} ({}) ended {} but without faults it ends {} (reason: {:?})",
                    run.blueprint,
                    run.expect.status.as_str(),
                    expect.status.as_str(),
                    book.reason
                ));
            } else if expect.context != run.expect.context {
                bad.push(format!(
                    "run {id} ({}): final context differs from the fault-free run\n  \
                     got:  {}\n  want: {}",
                    run.blueprint, run.expect.context, expect.context
                ));
            }
            if expect.status == run.expect.status && expect.commits != run.expect.commits {
                bad.push(format!(
                    "run {id} ({}): activations committed per node {:?}, without faults {:?}",
                    run.blueprint, run.expect.commits, expect.commits
                ));
            }
        }
    }
    let log = ev.store.log.lock().unwrap();
    for ((run, key), n) in &log.commit_adds {
        if *n > 1 {
            bad.push(format!(
                "run {}: activation {key} was committed {n} times",
                short(run)
            ));
        }
    }
    drop(log);
    for poisoned in ev.queue.poisoned() {
        bad.push(format!(
            "poison queue holds a job (delivered {} times): {}",
            poisoned.dequeue_count, poisoned.reason
        ));
    }
    if !ev.queue.is_empty() {
        bad.push(format!(
            "{} message(s) left in the queue after quiescence",
            ev.queue.len()
        ));
    }
    // Every lapse the simulation injects (an expired lease, a crashed holder, a renewal
    // or receive whose answer was lost) releases the holder's claim first; any other lapse
    // happened under a live worker whose renewals should have kept the lease.
    for id in ev.lapsed {
        bad.push(format!(
            "message {id} was delivered again while its worker still held it: the lease \
             lapsed although only transient errors hit its renewals"
        ));
    }
    let at_least_once = ev.plan.faults.iter().any(|f| f.duplicates_executions());
    if !at_least_once {
        // Overlapping executions are at-least-once delivery at work (a duplicate received
        // while the first ran). An attempt that runs AGAIN after it had already failed is a
        // second retry chain: nothing in this plan loses a retry.
        for ((run, node, attempt, input), list) in &ev.executions {
            let failed_before = |e: &Execution| {
                list.iter()
                    .any(|f| !f.ok && f.end.is_some_and(|end| end <= e.start) && f != e)
            };
            let again = list.iter().filter(|e| failed_before(e)).count();
            if again > 0 && runs.iter().any(|r| r.state.run_id == *run) {
                bad.push(format!(
                    "run {}: node {node} attempt {attempt} (input {input}) ran {again} more \
                     time(s) after it had failed: a second retry chain",
                    short(run)
                ));
            }
        }
    }
    bad
}
