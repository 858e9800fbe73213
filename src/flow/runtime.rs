//! The in-process runtime: runs a blueprint inside this process on tokio (spec §2, with the
//! in-process fragilities I1..I7 fixed).
//!
//! How a run proceeds:
//! - **Scheduling is activation-driven and continuous, not in waves.** A node starts as soon as
//!   it is ready and a concurrency slot is free (default `min(CPUs, 10)`; `with_concurrency(0)`
//!   means the default). The start nodes (fallback-only nodes excluded) are ready first.
//! - **Commit per node.** A node's writes are buffered as deltas and applied, together with
//!   its output (stored under both `_outputs.<id>` and `<id>`), when it finishes, as in the
//!   distributed commit: concurrent branches never see each other's half-finished writes.
//!   While it runs, a node reads the live committed context (other nodes' commits appear as
//!   they happen, as with Flowcraft's shared store; a distributed worker reads the state
//!   loaded for its job instead), so no node costs a copy of the whole context.
//! - **Routing** (spec 2.6, [`route`]) yields activations. A target's `_inputs.<target>` is
//!   written for every taken edge (last writer wins).
//! - **Joins.** An `all` join fires when every DISTINCT predecessor has activated it
//!   (batch workers included; back edges excluded: loop-controller edges and predecessors that
//!   are reachable from the join itself, such as a self-loop); an `any` join fires on the first
//!   activation and ignores later ones. A node fires at most once, so self-loops and plain
//!   cycles run each node once. An activation from a `loop-controller` always fires its target,
//!   and when a loop controller fires it re-arms its loop body (`Blueprint::loop_body`) so the
//!   body can run again; the controller re-arms itself when it finishes.
//! - **Retries**: `maxRetries` total attempts with exponential backoff from `retryDelay`
//!   ([`retry_delay`]); a `timeout` is a retryable failure; fatal errors are not retried.
//! - **Fallback** (spec 2.5): when a node fails for good with a non-fatal error and names a
//!   `fallback`, the failing node is recorded with output `null`, `_catch_error` is written
//!   (`{message, nodeId, blueprintId}`), and the fallback node runs; its completion routes the
//!   failing node's edges too, and those activations count for joins as arrivals FROM THE
//!   FAILING NODE. A fallback hides only its own node's failure: any other failure fails the
//!   run (I2 fixed).
//! - **Failures** are recorded with the node's own message (I6 fixed); other branches keep
//!   running; the failed node's successors never run.
//! - **Awaiting**: `wait` (and an awaiting subflow) is recorded in `_awaitingNodeIds` /
//!   `_awaitingDetails` and does not route; the run ends `awaiting` once nothing else can run.
//!   [`FlowRuntime::resume`] completes the node with the given output and routes on the given
//!   action through the normal path (I1 fixed); other awaiting nodes stay awaiting and are not
//!   re-executed. Joins that had received some activations are carried across the pause in
//!   `_pendingJoins`. `sleep` is recorded awaiting with reason `timer` and `wakeUpAt` while its
//!   timer is pending; in-process the runtime itself waits for the timer (without holding a
//!   concurrency slot) and then completes the node with its pass-through output.
//! - **Guard**: a node executed more than [`MAX_ITERATIONS`] times (an endless loop) fails the
//!   run ("Traversal exceeded maximum iterations, possible infinite loop"); the number of
//!   distinct nodes (e.g. batch workers) is not limited.
//! - **Status**: `cancelled` if the token fired; else `failed` if any error was recorded; else
//!   `awaiting` if a node awaits; else `stalled` if an `all` join received some but not all of
//!   its activations (e.g. one branch into it was not taken; Flowcraft reports `completed`
//!   there); else `completed`. A cancelled run keeps the context committed so far (Flowcraft
//!   returns an empty one). The awaiting records stay in the context whenever a node is still
//!   pending (also on `failed` or `cancelled`, to show what was pending).
//! - **Outputs**: an undefined output is stored as `null`, so `_outputs.<id>` always marks a
//!   completed node. Batch workers are stored as `_dynamic.<id>` definitions (see
//!   [`super::execute::DYNAMIC_NODE_PREFIX`]).
//!
//! All state needed to resume lives in the returned context, so a paused run can be resumed
//! by another process that has the same blueprint.

use super::blueprint::Blueprint;
use super::context::{
    AwaitReason, AwaitingDetails, SharedContext, apply_deltas, read_shared, write_shared,
};
use super::execute::{
    AttemptOutcome, AttemptRequest, Environment, NodeCompletion, execute_attempt_live,
    max_attempts, node_definition, retry_delay,
};
use super::joins::JoinBook;
use super::node::{NodeError, NodeResult};
use super::routing::{deliver_input, output_keys, resolve_input, route};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

/// A node executed more often than this in one run (or one resume) fails the run: only a loop
/// can run a node again, so this bounds loop iterations (Flowcraft's 10000-iteration guard)
/// without limiting how many distinct nodes a run has (a batch may have more workers).
pub const MAX_ITERATIONS: usize = 10_000;

/// Context key: ids of awaiting nodes.
pub const AWAITING_IDS_KEY: &str = "_awaitingNodeIds";
/// Context key: `{nodeId: AwaitingDetails}`.
pub const AWAITING_DETAILS_KEY: &str = "_awaitingDetails";
/// Context key: `{target: [sources]}` of joins partially satisfied when the run paused.
pub const PENDING_JOINS_KEY: &str = "_pendingJoins";
/// Context key: the run id.
pub const EXECUTION_ID_KEY: &str = "_executionId";
/// Context key prefix: serialized sub-context of an awaiting subflow node.
pub const SUBFLOW_STATE_PREFIX: &str = "_subflowState.";

/// The state of a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RunStatus {
    /// Still running (distributed runs only).
    Running,
    /// Everything that could run has run.
    Completed,
    /// A node failed (without a fallback that recovered it), or the iteration guard fired.
    Failed,
    /// A node waits for `resume`.
    Awaiting,
    /// The run was cancelled.
    Cancelled,
    /// Work ran out while a join was still partially satisfied.
    Stalled,
}

impl RunStatus {
    /// The lowercase name, as serialized.
    pub fn as_str(self) -> &'static str {
        match self {
            RunStatus::Running => "running",
            RunStatus::Completed => "completed",
            RunStatus::Failed => "failed",
            RunStatus::Awaiting => "awaiting",
            RunStatus::Cancelled => "cancelled",
            RunStatus::Stalled => "stalled",
        }
    }
}

impl fmt::Display for RunStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A recorded node failure.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WorkflowError {
    /// The node that failed.
    pub node_id: String,
    /// The node's own error message.
    pub message: String,
    /// When it was recorded (RFC 3339).
    pub timestamp: String,
}

impl WorkflowError {
    /// An error for `node_id`, stamped now.
    pub fn new(node_id: impl Into<String>, message: impl Into<String>) -> Self {
        WorkflowError {
            node_id: node_id.into(),
            message: message.into(),
            timestamp: chrono::Utc::now().to_rfc3339(),
        }
    }
}

/// The outcome of a run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WorkflowResult {
    /// The final status.
    pub status: RunStatus,
    /// The run context (outputs, inputs, user keys, `_executionId`).
    pub context: Map<String, Value>,
    /// The recorded failures, in order.
    pub errors: Vec<WorkflowError>,
}

/// Runs blueprints in this process. Cheap to clone.
///
/// ```
/// use flowcraft_azure::flow::blueprint::Blueprint;
/// use flowcraft_azure::flow::execute::Environment;
/// use flowcraft_azure::flow::node::NodeRegistry;
/// use flowcraft_azure::flow::runtime::{FlowRuntime, RunStatus};
/// use std::sync::Arc;
/// # tokio::runtime::Runtime::new().unwrap().block_on(async {
/// let bp = Blueprint::from_json(r#"{"id":"hi","nodes":[{"id":"a","uses":"echo","inputs":"name"}],"edges":[]}"#).unwrap();
/// let runtime = FlowRuntime::new(Environment::new(NodeRegistry::with_builtins()));
/// let mut initial = serde_json::Map::new();
/// initial.insert("name".into(), "Ada".into());
/// let result = runtime.run(Arc::new(bp), initial).await;
/// assert_eq!(result.status, RunStatus::Completed);
/// assert_eq!(result.context["a"], "Ada");
/// # });
/// ```
#[derive(Debug, Clone)]
pub struct FlowRuntime {
    env: Environment,
    concurrency: usize,
}

impl FlowRuntime {
    /// A runtime over `env` with the default concurrency.
    pub fn new(env: Environment) -> Self {
        FlowRuntime {
            env,
            concurrency: 0,
        }
    }

    /// Limits how many nodes run at once (0 = default: `min(CPUs, 10)`).
    pub fn with_concurrency(mut self, concurrency: usize) -> Self {
        self.concurrency = concurrency;
        self
    }

    /// The environment (registries, dependencies).
    pub fn environment(&self) -> &Environment {
        &self.env
    }

    fn limit(&self) -> usize {
        if self.concurrency > 0 {
            self.concurrency
        } else {
            std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(4)
                .min(10)
        }
    }

    /// Runs `blueprint` from its start nodes over `initial`.
    pub async fn run(
        &self,
        blueprint: Arc<Blueprint>,
        initial: Map<String, Value>,
    ) -> WorkflowResult {
        self.run_with(blueprint, initial, CancellationToken::new())
            .await
    }

    /// Like [`FlowRuntime::run`], stopping with `cancelled` when `cancel` fires (running nodes
    /// are dropped at their next await point).
    pub async fn run_with(
        &self,
        blueprint: Arc<Blueprint>,
        initial: Map<String, Value>,
        cancel: CancellationToken,
    ) -> WorkflowResult {
        let mut run = Run::new(self, blueprint, initial, cancel);
        let starts: Vec<String> = run
            .blueprint
            .start_nodes()
            .iter()
            .filter(|id| !run.blueprint.is_fallback_only(id))
            .cloned()
            .collect();
        for id in starts {
            run.fire(&id);
        }
        run.drive().await
    }

    /// Resumes an awaiting run: completes `node_id` (default: the first awaiting node) with
    /// `output` and routes on `action` through the normal routing path, then runs until the
    /// run finishes or pauses again. An awaiting subflow node resumes its sub-run with the same
    /// action and output first (and stays awaiting if the sub-run pauses again).
    ///
    /// If nothing is awaiting, or `node_id` is not awaiting, the result is `failed` with one
    /// error saying so and the context returned unchanged.
    pub async fn resume(
        &self,
        blueprint: Arc<Blueprint>,
        context: Map<String, Value>,
        node_id: Option<&str>,
        action: Option<String>,
        output: Option<Value>,
    ) -> WorkflowResult {
        self.resume_with(
            blueprint,
            context,
            node_id,
            action,
            output,
            CancellationToken::new(),
        )
        .await
    }

    /// [`FlowRuntime::resume`] with a cancellation token.
    pub fn resume_with<'a>(
        &'a self,
        blueprint: Arc<Blueprint>,
        context: Map<String, Value>,
        node_id: Option<&'a str>,
        action: Option<String>,
        output: Option<Value>,
        cancel: CancellationToken,
    ) -> Pin<Box<dyn Future<Output = WorkflowResult> + Send + 'a>> {
        Box::pin(async move {
            let awaiting = awaiting_ids(&context);
            let target = match node_id {
                Some(id) => id.to_string(),
                None => match awaiting.first() {
                    Some(id) => id.clone(),
                    None => {
                        return precondition_failure(
                            context,
                            "",
                            "The run is not awaiting: there is nothing to resume.",
                        );
                    }
                },
            };
            if !awaiting.contains(&target) {
                let message =
                    format!("Node '{target}' is not awaiting; awaiting nodes: {awaiting:?}.");
                return precondition_failure(context, &target, &message);
            }
            let mut run = Run::resumed(self, blueprint, context, &awaiting, cancel);
            run.rearm_timers(&target);
            let state_key = format!("{SUBFLOW_STATE_PREFIX}{target}");
            let sub_state = run.read().get(&state_key).cloned();
            match sub_state {
                Some(Value::Object(sub_state)) => {
                    run.resume_subflow(&target, sub_state, action, output).await;
                }
                _ => {
                    run.clear_awaiting(&target);
                    run.complete(
                        &target,
                        NodeResult {
                            output,
                            action,
                            dynamic_nodes: Vec::new(),
                        },
                    );
                }
            }
            run.drive().await
        })
    }
}

fn precondition_failure(
    context: Map<String, Value>,
    node_id: &str,
    message: &str,
) -> WorkflowResult {
    WorkflowResult {
        status: RunStatus::Failed,
        context,
        errors: vec![WorkflowError::new(node_id, message)],
    }
}

fn awaiting_ids(context: &Map<String, Value>) -> Vec<String> {
    context
        .get(AWAITING_IDS_KEY)
        .and_then(Value::as_array)
        .map(|ids| {
            ids.iter()
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// Records that `node_id` failed for good and its fallback takes over: its outputs become
/// `null` and `_catch_error` = `{message, nodeId, blueprintId}`. Shared by the in-process
/// runtime and the distributed core.
pub fn record_fallback(
    context: &mut Map<String, Value>,
    blueprint_id: &str,
    node_id: &str,
    error: &NodeError,
) {
    for key in output_keys(node_id) {
        context.insert(key, Value::Null);
    }
    let catch = json!({
        "message": error.message,
        "nodeId": node_id,
        "blueprintId": blueprint_id,
    });
    context.insert("_catch_error".to_string(), catch);
}

/// Records `node_id` as awaiting in `context` (as Flowcraft does): appends it to
/// `_awaitingNodeIds` (once), stores `details` under `_awaitingDetails.<id>` and, for an
/// awaiting subflow, its sub-run state under `_subflowState.<id>`. Returns the details as
/// stored (without the sub-run state). Shared by the in-process runtime and the distributed
/// core.
pub fn record_awaiting(
    context: &mut Map<String, Value>,
    node_id: &str,
    mut details: AwaitingDetails,
) -> AwaitingDetails {
    let sub_state = details.subflow_state.take();
    let ids = context
        .entry(AWAITING_IDS_KEY)
        .or_insert_with(|| Value::Array(Vec::new()));
    if !ids.is_array() {
        *ids = Value::Array(Vec::new());
    }
    if let Value::Array(list) = ids
        && !list.iter().any(|v| v.as_str() == Some(node_id))
    {
        list.push(Value::String(node_id.to_string()));
    }
    let all = context
        .entry(AWAITING_DETAILS_KEY)
        .or_insert_with(|| Value::Object(Map::new()));
    if !all.is_object() {
        *all = Value::Object(Map::new());
    }
    if let Value::Object(map) = all {
        map.insert(
            node_id.to_string(),
            serde_json::to_value(&details).unwrap_or(Value::Null),
        );
    }
    if let Some(state) = sub_state {
        context.insert(format!("{SUBFLOW_STATE_PREFIX}{node_id}"), state);
    }
    details
}

/// Removes `node_id`'s awaiting records from `context` (and `_awaitingNodeIds` /
/// `_awaitingDetails` themselves once no node awaits).
pub fn clear_awaiting(context: &mut Map<String, Value>, node_id: &str) {
    let mut empty = false;
    if let Some(Value::Array(list)) = context.get_mut(AWAITING_IDS_KEY) {
        list.retain(|v| v.as_str() != Some(node_id));
        empty = list.is_empty();
    }
    if let Some(Value::Object(map)) = context.get_mut(AWAITING_DETAILS_KEY) {
        map.remove(node_id);
    }
    context.remove(&format!("{SUBFLOW_STATE_PREFIX}{node_id}"));
    if empty {
        context.remove(AWAITING_IDS_KEY);
        context.remove(AWAITING_DETAILS_KEY);
    }
}

/// What a spawned task reports back to the scheduler.
enum TaskDone {
    /// A node finished all its attempts.
    Node(Result<NodeCompletion, NodeError>),
    /// A sleep timer fired for the node; complete it with this result.
    Timer(NodeResult),
    /// A task stopped because the run was halted.
    Halted,
}

/// The scheduler state of one run (or one resume).
struct Run {
    env: Environment,
    blueprint: Arc<Blueprint>,
    run_id: Arc<str>,
    /// The committed context; running nodes read it live (see [`SharedContext`]).
    context: SharedContext,
    limit: usize,
    cancel: CancellationToken,
    halt: CancellationToken,
    ready: VecDeque<String>,
    /// Fired nodes, join arrivals and batch workers (the rules shared with the distributed
    /// core).
    joins: JoinBook,
    errors: Vec<WorkflowError>,
    /// Executions per node id (the iteration guard).
    executions: HashMap<String, usize>,
    running: usize,
    tasks: JoinSet<TaskDone>,
    /// Spawned task -> (node id, whether it holds a concurrency slot).
    task_nodes: HashMap<tokio::task::Id, (String, bool)>,
}

impl Run {
    fn new(
        runtime: &FlowRuntime,
        blueprint: Arc<Blueprint>,
        mut context: Map<String, Value>,
        cancel: CancellationToken,
    ) -> Self {
        let run_id = match context.get(EXECUTION_ID_KEY).and_then(Value::as_str) {
            Some(id) => id.to_string(),
            None => {
                let id = runtime.env.sources.new_id();
                context.insert(EXECUTION_ID_KEY.to_string(), Value::String(id.clone()));
                id
            }
        };
        let halt = cancel.child_token();
        Run {
            env: runtime.env.clone(),
            blueprint,
            run_id: Arc::from(run_id),
            context: Arc::new(RwLock::new(context)),
            limit: runtime.limit(),
            cancel,
            halt,
            ready: VecDeque::new(),
            joins: JoinBook::default(),
            errors: Vec::new(),
            executions: HashMap::new(),
            running: 0,
            tasks: JoinSet::new(),
            task_nodes: HashMap::new(),
        }
    }

    /// Rebuilds scheduler state from a paused run's context: completed nodes (those with
    /// `_outputs.<id>`) and awaiting nodes count as fired; partial joins come from
    /// `_pendingJoins`.
    fn resumed(
        runtime: &FlowRuntime,
        blueprint: Arc<Blueprint>,
        mut context: Map<String, Value>,
        awaiting: &[String],
        cancel: CancellationToken,
    ) -> Self {
        let pending = context.remove(PENDING_JOINS_KEY);
        let mut run = Run::new(runtime, blueprint, context, cancel);
        let completed: Vec<String> = {
            let committed = run.read();
            run.blueprint
                .nodes()
                .iter()
                .filter(|n| committed.contains_key(&output_keys(&n.id)[0]))
                .map(|n| n.id.clone())
                .collect()
        };
        for id in completed.iter().chain(awaiting) {
            run.joins.mark_fired(id);
        }
        if let Some(Value::Object(joins)) = pending {
            for (target, sources) in joins {
                let sources: BTreeSet<String> = sources
                    .as_array()
                    .map(|s| {
                        s.iter()
                            .filter_map(|v| v.as_str().map(str::to_string))
                            .collect()
                    })
                    .unwrap_or_default();
                run.joins.restore_arrivals(&target, sources);
            }
        }
        run
    }

    /// Restarts the timers of awaiting `sleep` nodes (other than `except`) found in a resumed
    /// context, e.g. one saved from a cancelled run: each fires at its `wakeUpAt` (at once if
    /// that has passed) and completes its node with the node's input, as `sleep` does.
    fn rearm_timers(&mut self, except: &str) {
        let timers: Vec<(String, AwaitingDetails)> = match self.read().get(AWAITING_DETAILS_KEY) {
            Some(Value::Object(all)) => all
                .iter()
                .filter(|(id, _)| id.as_str() != except)
                .filter_map(|(id, details)| {
                    let details: AwaitingDetails = serde_json::from_value(details.clone()).ok()?;
                    (details.reason == AwaitReason::Timer).then(|| (id.clone(), details))
                })
                .collect(),
            _ => return,
        };
        for (id, details) in timers {
            let output = resolve_input(&self.blueprint, &id, &self.read());
            let result = NodeResult {
                output,
                ..NodeResult::default()
            };
            self.spawn_timer(&id, &details, result);
        }
    }

    /// Reads the committed context. Never hold the guard across `ctx()` or an await.
    fn read(&self) -> RwLockReadGuard<'_, Map<String, Value>> {
        read_shared(&self.context)
    }

    /// Writes the committed context (briefly: running nodes read it).
    fn ctx(&self) -> RwLockWriteGuard<'_, Map<String, Value>> {
        write_shared(&self.context)
    }

    /// Puts `node_id` on the ready queue (it will run exactly once for this firing).
    fn fire(&mut self, node_id: &str) {
        self.joins
            .fire(&self.blueprint, &read_shared(&self.context), node_id);
        self.ready.push_back(node_id.to_string());
    }

    /// Records that `source` activated `target` and fires `target` when its join is satisfied.
    fn activate(&mut self, source: &str, target: &str) {
        let fires =
            self.joins
                .activate(&self.blueprint, &read_shared(&self.context), source, target);
        if fires {
            self.fire(target);
        }
    }

    fn record_awaiting(&mut self, node_id: &str, details: &AwaitingDetails) {
        record_awaiting(&mut self.ctx(), node_id, details.clone());
    }

    fn clear_awaiting(&mut self, node_id: &str) {
        clear_awaiting(&mut self.ctx(), node_id);
    }

    /// Commits a finished node: its writes, then either the awaiting record or its completion.
    fn commit(&mut self, node_id: &str, completion: NodeCompletion) {
        apply_deltas(&mut self.ctx(), &completion.deltas);
        match completion.awaiting {
            Some(details) => {
                self.record_awaiting(node_id, &details);
                if details.reason == AwaitReason::Timer {
                    self.spawn_timer(node_id, &details, completion.result);
                }
            }
            None => self.complete(node_id, completion.result),
        }
    }

    /// Stores the output, schedules dynamic nodes and routes.
    fn complete(&mut self, node_id: &str, result: NodeResult) {
        let output = result.output.clone().unwrap_or(Value::Null);
        for key in output_keys(node_id) {
            self.ctx().insert(key, output.clone());
        }
        self.joins.start_batch(
            &self.blueprint,
            &read_shared(&self.context),
            node_id,
            &result,
        );
        for dynamic in &result.dynamic_nodes {
            self.fire(&dynamic.id);
        }
        let activations = route(&self.blueprint, node_id, &result, &self.read());
        for activation in activations {
            deliver_input(&mut self.ctx(), &activation.target, activation.input);
            self.activate(&activation.source, &activation.target);
        }
        if let Some(gather) = self.joins.gather_of(node_id).map(str::to_string) {
            self.activate(node_id, &gather);
        }
        self.joins
            .finished(&self.blueprint, &read_shared(&self.context), node_id);
    }

    /// A node failed for good: run its fallback, or record the error.
    fn fail(&mut self, node_id: &str, error: NodeError) {
        let fallback = node_definition(&self.blueprint, node_id, &self.read())
            .and_then(|n| n.config.fallback.clone())
            .filter(|f| self.blueprint.node(f).is_some());
        match fallback {
            Some(fallback) if !error.fatal => {
                record_fallback(&mut self.ctx(), self.blueprint.id(), node_id, &error);
                self.fire(&fallback);
            }
            _ => self.errors.push(WorkflowError::new(node_id, error.message)),
        }
    }

    fn spawn_timer(&mut self, node_id: &str, details: &AwaitingDetails, result: NodeResult) {
        let delay = details
            .wake_up_at
            .and_then(|at| (at - self.env.sources.now()).to_std().ok())
            .unwrap_or_default();
        let halt = self.halt.clone();
        let handle = self.tasks.spawn(async move {
            tokio::select! {
                _ = halt.cancelled() => TaskDone::Halted,
                _ = tokio::time::sleep(delay) => TaskDone::Timer(result),
            }
        });
        self.task_nodes
            .insert(handle.id(), (node_id.to_string(), false));
    }

    fn spawn_node(&mut self, node_id: String) {
        let env = self.env.clone();
        let blueprint = self.blueprint.clone();
        let run_id = self.run_id.clone();
        let context = self.context.clone();
        let halt = self.halt.clone();
        let id = node_id.clone();
        let handle = self.tasks.spawn(async move {
            let outcome = run_attempts(&env, &blueprint, &run_id, &context, &id, &halt).await;
            if halt.is_cancelled() {
                TaskDone::Halted
            } else {
                TaskDone::Node(outcome)
            }
        });
        self.task_nodes.insert(handle.id(), (node_id, true));
        self.running += 1;
    }

    /// Runs until nothing is ready or running, then builds the result.
    async fn drive(mut self) -> WorkflowResult {
        loop {
            while self.running < self.limit && !self.halt.is_cancelled() {
                let Some(next) = self.ready.pop_front() else {
                    break;
                };
                let executions = self.executions.entry(next.clone()).or_default();
                *executions += 1;
                if *executions > MAX_ITERATIONS {
                    self.errors.push(WorkflowError::new(
                        next,
                        format!(
                            "Traversal exceeded maximum iterations ({MAX_ITERATIONS}), possible infinite loop"
                        ),
                    ));
                    self.ready.clear();
                    self.halt.cancel();
                    break;
                }
                self.spawn_node(next);
            }
            let Some(joined) = self.tasks.join_next_with_id().await else {
                break;
            };
            let id = match &joined {
                Ok((id, _)) => *id,
                Err(join_error) => join_error.id(),
            };
            let Some((node_id, held_slot)) = self.task_nodes.remove(&id) else {
                continue;
            };
            if held_slot {
                self.running = self.running.saturating_sub(1);
            }
            match joined {
                Ok((_, TaskDone::Node(Ok(completion)))) => self.commit(&node_id, completion),
                Ok((_, TaskDone::Node(Err(error)))) => self.fail(&node_id, error),
                Ok((_, TaskDone::Timer(result))) => {
                    self.clear_awaiting(&node_id);
                    self.complete(&node_id, result);
                }
                Ok((_, TaskDone::Halted)) => {}
                Err(join_error) => {
                    if !self.halt.is_cancelled() {
                        self.errors.push(WorkflowError::new(
                            node_id,
                            format!("the node's task stopped unexpectedly: {join_error}"),
                        ));
                    }
                }
            }
        }
        self.finish()
    }

    fn finish(self) -> WorkflowResult {
        let awaiting = !awaiting_ids(&self.read()).is_empty();
        let partial_joins: BTreeMap<String, Value> = self
            .joins
            .partial_joins()
            .map(|(target, sources)| {
                (
                    target.to_string(),
                    Value::Array(sources.iter().cloned().map(Value::String).collect()),
                )
            })
            .collect();
        let status = if self.cancel.is_cancelled() {
            RunStatus::Cancelled
        } else if !self.errors.is_empty() {
            RunStatus::Failed
        } else if awaiting {
            RunStatus::Awaiting
        } else if !partial_joins.is_empty() {
            RunStatus::Stalled
        } else {
            RunStatus::Completed
        };
        // The awaiting records exist only while something awaits, so they are kept as they
        // are: on `awaiting` for resume, on `failed`/`cancelled` to show what was pending.
        if status == RunStatus::Awaiting && !partial_joins.is_empty() {
            self.ctx().insert(
                PENDING_JOINS_KEY.to_string(),
                Value::Object(partial_joins.into_iter().collect()),
            );
        }
        let context = match Arc::try_unwrap(self.context) {
            Ok(lock) => lock.into_inner().unwrap_or_else(|e| e.into_inner()),
            Err(shared) => read_shared(&shared).clone(),
        };
        WorkflowResult {
            status,
            context,
            errors: self.errors,
        }
    }

    /// Resumes the sub-run stored for an awaiting subflow node, then completes, re-parks or
    /// fails the node.
    async fn resume_subflow(
        &mut self,
        node_id: &str,
        sub_state: Map<String, Value>,
        action: Option<String>,
        output: Option<Value>,
    ) {
        let params = self
            .blueprint
            .node(node_id)
            .and_then(|n| n.params.clone())
            .unwrap_or_default();
        let sub_blueprint =
            match super::builtins::subflow::sub_blueprint(&self.env, node_id, &params) {
                Ok(bp) => bp,
                Err(error) => {
                    self.clear_awaiting(node_id);
                    self.fail(node_id, error);
                    return;
                }
            };
        let sub_env = match super::builtins::subflow::nested_environment(
            &self.env,
            node_id,
            sub_blueprint.id(),
        ) {
            Ok(env) => env,
            Err(error) => {
                self.clear_awaiting(node_id);
                self.fail(node_id, error);
                return;
            }
        };
        let sub_runtime = FlowRuntime::new(sub_env.clone()).with_concurrency(self.limit);
        let sub = sub_runtime
            .resume_with(
                sub_blueprint.clone(),
                sub_state,
                None,
                action,
                output,
                self.halt.child_token(),
            )
            .await;
        match sub.status {
            RunStatus::Awaiting => {
                self.ctx().insert(
                    format!("{SUBFLOW_STATE_PREFIX}{node_id}"),
                    Value::Object(sub.context),
                );
            }
            RunStatus::Completed => {
                self.clear_awaiting(node_id);
                let (output, writes) =
                    super::builtins::subflow::subflow_output(&params, &sub_blueprint, &sub.context);
                for (key, value) in writes {
                    self.ctx().insert(key, value);
                }
                self.complete(
                    node_id,
                    NodeResult {
                        output,
                        ..NodeResult::default()
                    },
                );
            }
            _ => {
                self.clear_awaiting(node_id);
                let error =
                    super::builtins::subflow::incomplete_error(&sub_env, sub_blueprint.id(), &sub);
                self.fail(node_id, error);
            }
        }
    }
}

/// All attempts of one node, with backoff between them.
async fn run_attempts(
    env: &Environment,
    blueprint: &Arc<Blueprint>,
    run_id: &str,
    context: &SharedContext,
    node_id: &str,
    halt: &CancellationToken,
) -> Result<NodeCompletion, NodeError> {
    let node = node_definition(blueprint, node_id, &read_shared(context)).map(|n| n.into_owned());
    let Some(node) = node else {
        return Err(NodeError::fatal(format!(
            "Node '{node_id}' not found in blueprint '{}'.",
            blueprint.id()
        )));
    };
    let attempts = max_attempts(&node);
    // live attempts read `context` itself, not the request's map
    let unused = Map::new();
    let mut attempt = 1;
    loop {
        let request = AttemptRequest {
            env,
            blueprint,
            node_id,
            run_id,
            context: &unused,
            attempt,
            cancel: halt.clone(),
            input: None,
        };
        let outcome = execute_attempt_live(request, context).await;
        match outcome {
            AttemptOutcome::Completed(completion) => return Ok(completion),
            AttemptOutcome::Failed { error, retryable } => {
                if !retryable || attempt >= attempts {
                    return Err(error);
                }
            }
        }
        attempt += 1;
        let delay = retry_delay(&node, attempt);
        if !delay.is_zero() {
            tokio::select! {
                _ = halt.cancelled() => return Err(NodeError::fatal("Workflow cancelled")),
                _ = tokio::time::sleep(delay) => {}
            }
        }
    }
}
