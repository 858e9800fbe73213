//! The client API: start a run, read its status, wait for it, cancel it, resume an awaiting
//! node with an action and output (through the normal commit + routing path, F3), and
//! reconcile a run by re-enqueueing its recorded outstanding work (never re-deriving routing).

use crate::Error;
use crate::ErrorInfo;
use crate::distributed::core::{
    Backends, Step, commit_from, commit_with, enqueue_follow_ups, execute_job, publish_status,
    resume_job, run_not_found, status_record, to_result,
};
use crate::distributed::events::EventBus;
use crate::distributed::ports::RunPhase;
use crate::distributed::state::{CommitRecord, PendingResume, RunState, WorkItem};
use crate::distributed::transition::{
    Settlement, VersionCheck, cancel, check_version, new_run, resume_target, settle, update_status,
    version_mismatch, wake_after_ms,
};
use crate::flow::execute::BlueprintRegistry;
use crate::flow::node::NodeResult;
use crate::flow::runtime::{SUBFLOW_STATE_PREFIX, WorkflowResult};
use serde_json::{Map, Value};
use std::sync::Arc;
use std::time::Duration;

/// TTL of the `flowcraft:blueprint:<run>` key written at start (TypeScript reconcile fallback).
const BLUEPRINT_KEY_TTL: Duration = Duration::from_secs(7 * 24 * 3600);

/// Starts and steers distributed runs.
///
/// ```
/// use flowcraft_azure::distributed::client::Client;
/// use flowcraft_azure::distributed::core::Backends;
/// use flowcraft_azure::distributed::worker::{Worker, WorkerConfig};
/// use flowcraft_azure::flow::blueprint::Blueprint;
/// use flowcraft_azure::flow::execute::{BlueprintRegistry, Environment};
/// use flowcraft_azure::flow::node::NodeRegistry;
/// use flowcraft_azure::flow::runtime::RunStatus;
/// use std::sync::Arc;
/// use std::time::Duration;
/// use tokio_util::sync::CancellationToken;
/// # tokio::runtime::Runtime::new().unwrap().block_on(async {
/// let bp = Blueprint::from_json(r#"{"id":"hi","nodes":[{"id":"a","uses":"echo","inputs":"name"}],"edges":[]}"#).unwrap();
/// let mut blueprints = BlueprintRegistry::new();
/// blueprints.insert(bp);
/// let env = Environment::new(NodeRegistry::with_builtins()).with_blueprints(blueprints);
/// let backends = Backends::in_memory();
/// let worker = Arc::new(Worker::new(env.clone(), backends.clone(), WorkerConfig::default()));
/// let shutdown = CancellationToken::new();
/// let running = tokio::spawn(worker.run(shutdown.clone()));
///
/// let client = Client::new(backends, env.blueprints.clone());
/// let mut initial = serde_json::Map::new();
/// initial.insert("name".into(), "Ada".into());
/// let run_id = client.start_run("hi", initial).await.unwrap();
/// let result = client.wait_for(&run_id, Duration::from_secs(10)).await.unwrap();
/// assert_eq!(result.status, RunStatus::Completed);
/// assert_eq!(result.context["a"], "Ada");
/// shutdown.cancel();
/// running.await.unwrap();
/// # });
/// ```
#[derive(Debug, Clone)]
pub struct Client {
    backends: Backends,
    blueprints: Arc<BlueprintRegistry>,
    events: EventBus,
}

impl Client {
    /// A client for the blueprints in `blueprints` over `backends`.
    pub fn new(backends: Backends, blueprints: Arc<BlueprintRegistry>) -> Self {
        Client {
            backends,
            blueprints,
            events: EventBus::default(),
        }
    }

    /// Uses `events` (e.g. shared with workers) instead of a private bus.
    pub fn with_events(mut self, events: EventBus) -> Self {
        self.events = events;
        self
    }

    /// Starts a run of `blueprint_id` over `initial`: creates its state (pinning
    /// `blueprintId` and `blueprintVersion`) and status, and enqueues its start nodes
    /// (fallback-only nodes excluded, F19). Returns the run id.
    pub async fn start_run(
        &self,
        blueprint_id: &str,
        initial: Map<String, Value>,
    ) -> Result<String, Error> {
        let blueprint = self.blueprints.get(blueprint_id).ok_or_else(|| {
            Error::invalid_input(format!(
                "blueprint '{blueprint_id}' is not in the client's registry; load it first"
            ))
        })?;
        let run_id = uuid::Uuid::new_v4().to_string();
        let (mut state, work) = new_run(&run_id, &blueprint, initial);
        let status = status_record(&state);
        state.book.status_touched_at = status.last_updated;
        self.backends
            .runs
            .create_run(&state, &status)
            .await
            .map_err(|e| e.during("create run"))?;
        self.backends
            .coordination
            .set_if_not_exists(
                &format!("flowcraft:blueprint:{run_id}"),
                blueprint_id,
                BLUEPRINT_KEY_TTL,
            )
            .await
            .map_err(|e| e.during("record run blueprint"))?;
        enqueue_follow_ups(
            self.backends.queue.as_ref(),
            &run_id,
            blueprint_id,
            &work,
            None,
        )
        .await?;
        if state.book.status.is_terminal() {
            publish_status(self.backends.runs.as_ref(), &self.events, &state).await?;
        }
        tracing::info!(run_id = %run_id, blueprint_id, start_jobs = work.len(), "run started");
        Ok(run_id)
    }

    /// The run's current result (`running` while work is outstanding); `None` when the run
    /// does not exist.
    pub async fn status(&self, run_id: &str) -> Result<Option<WorkflowResult>, Error> {
        let loaded = self.backends.runs.load(run_id).await?;
        Ok(loaded.map(|v| to_result(&v.value)))
    }

    /// Waits until the run is no longer `running` (finished or awaiting) and returns its
    /// result; `Error::Timeout` after `timeout` (a timeout too long to represent waits for
    /// good).
    pub async fn wait_for(&self, run_id: &str, timeout: Duration) -> Result<WorkflowResult, Error> {
        let deadline = tokio::time::Instant::now().checked_add(timeout);
        let mut pause = Duration::from_millis(5);
        loop {
            let state = self.load(run_id).await?;
            if state.book.status != RunPhase::Running {
                return Ok(to_result(&state));
            }
            let left = deadline.map(|d| d.saturating_duration_since(tokio::time::Instant::now()));
            if left.is_some_and(|left| left.is_zero()) {
                return Err(Error::Timeout(Box::new(ErrorInfo::new(format!(
                    "run {run_id} is still running after {} ms",
                    timeout.as_millis()
                )))));
            }
            tokio::time::sleep(left.map_or(pause, |left| pause.min(left))).await;
            pause = (pause * 2).min(Duration::from_millis(200));
        }
    }

    /// Cancels the run (sticky). Returns false when it had already finished. Jobs still in
    /// the queue are dropped by the workers; running nodes finish but their commits are
    /// refused.
    pub async fn cancel(&self, run_id: &str) -> Result<bool, Error> {
        let (changed, state) = commit_with(self.backends.runs.as_ref(), run_id, |state| {
            if cancel(state, "cancelled by a client") {
                state.book.revision += 1;
                Step::Write(true)
            } else {
                Step::Skip(false)
            }
        })
        .await?;
        if changed {
            publish_status(self.backends.runs.as_ref(), &self.events, &state).await?;
        }
        Ok(changed)
    }

    /// Resumes an awaiting node (`node`, default: the first awaiting one): completes it with
    /// `output` (default: what the node produced when it paused) and routes on `action`
    /// through the normal path, then enqueues what that made ready, which is returned. An
    /// awaiting subflow node is resumed by a worker instead (its sub-run resumes with the same
    /// action and output; the node completes, fails or waits again like in-process); the
    /// returned work is then that resume job. `InvalidInput` when the run or node is not
    /// awaiting, or when the run is pinned to another version of the blueprint than the
    /// client's (its routing would not be the run's).
    pub async fn resume_with_action(
        &self,
        run_id: &str,
        node: Option<&str>,
        action: Option<String>,
        output: Option<Value>,
    ) -> Result<Vec<WorkItem>, Error> {
        let runs = self.backends.runs.as_ref();
        // The commit starts from this read (it reloads only after a conflict).
        let loaded = runs
            .load(run_id)
            .await?
            .ok_or_else(|| run_not_found(run_id))?;
        let blueprint_id = loaded
            .value
            .blueprint_id()
            .map(str::to_string)
            .ok_or_else(|| Error::invalid_input(format!("run {run_id} has no blueprintId")))?;
        let blueprint = self.blueprints.get(&blueprint_id).ok_or_else(|| {
            Error::invalid_input(format!(
                "run {run_id} uses blueprint '{blueprint_id}', which is not in the client's registry"
            ))
        })?;
        let now = chrono::Utc::now();
        let (outcome, state) = commit_from(runs, run_id, Some(loaded), |state| {
            if state.book.status.is_terminal() {
                return Step::Skip(Err(format!(
                    "run {run_id} is {}; it cannot be resumed",
                    state.book.status.as_str()
                )));
            }
            if let VersionCheck::Mismatch { pinned } = check_version(state, &blueprint) {
                return Step::Skip(Err(version_mismatch(&pinned, &blueprint)));
            }
            let target = match resume_target(state, node) {
                Ok(t) => t,
                Err(message) => return Step::Skip(Err(message)),
            };
            let Some(record) = state.book.awaiting.get(&target).cloned() else {
                return Step::Skip(Err(format!("node '{target}' is not awaiting")));
            };
            let work = WorkItem {
                node: target,
                activation: record.activation,
            };
            let sub_state_key = format!("{SUBFLOW_STATE_PREFIX}{}", work.node);
            if state
                .context
                .get(&sub_state_key)
                .is_some_and(Value::is_object)
            {
                state.book.revision += 1;
                let seq = state.book.revision;
                if let Some(rec) = state.book.awaiting.get_mut(&work.node) {
                    rec.pending_resume = Some(PendingResume {
                        seq,
                        action: action.clone(),
                        output: output.clone(),
                    });
                }
                update_status(state);
                return Step::Write(Ok(Resumption::Subflow(work, seq)));
            }
            let result = NodeResult {
                output: output.clone().or(record.output),
                action: action.clone(),
                dynamic_nodes: Vec::new(),
            };
            let settlement = Settlement::Resumed(result, Vec::new());
            let committed = settle(state, &blueprint, &work, settlement, now);
            Step::Write(Ok(Resumption::Direct(committed)))
        })
        .await?;
        let queue = self.backends.queue.as_ref();
        match outcome.map_err(Error::invalid_input)? {
            Resumption::Subflow(work, seq) => {
                let job = resume_job(run_id, &blueprint_id, &work, seq);
                queue
                    .send(&job.encode()?, Duration::ZERO)
                    .await
                    .map_err(|e| e.during("enqueue subflow resume"))?;
                publish_status(runs, &self.events, &state).await?;
                tracing::info!(run_id, node_id = %work.node, "subflow resume handed to a worker");
                Ok(vec![work])
            }
            Resumption::Direct(record) => {
                enqueue_follow_ups(queue, run_id, &blueprint_id, &record.fired, None).await?;
                publish_status(runs, &self.events, &state).await?;
                tracing::info!(run_id, node_id = %record.node, fired = record.fired.len(), "run resumed");
                Ok(record.fired)
            }
        }
    }

    /// Re-enqueues the run's recorded outstanding work (plus the wake-ups of sleeping nodes
    /// and the pending resumes of awaiting subflows),
    /// never re-deriving routing (F3). A finished run only gets its status item re-published.
    /// Returns the work re-enqueued. Safe to call at any time: jobs are idempotent.
    pub async fn reconcile(&self, run_id: &str) -> Result<Vec<WorkItem>, Error> {
        let state = self.load(run_id).await?;
        let runs = self.backends.runs.as_ref();
        if state.book.status.is_terminal() {
            publish_status(runs, &self.events, &state).await?;
            return Ok(Vec::new());
        }
        let Some(blueprint_id) = state.blueprint_id().map(str::to_string) else {
            return Err(Error::invalid_input(format!(
                "cannot reconcile run {run_id}: it has no blueprintId"
            )));
        };
        let queue = self.backends.queue.as_ref();
        let mut work: Vec<WorkItem> = state.book.outstanding.values().cloned().collect();
        if !state.book.initialized {
            // A foreign run that no job has touched yet: its start jobs initialise it.
            if let Some(blueprint) = self.blueprints.get(&blueprint_id) {
                for node in crate::distributed::transition::start_nodes(&blueprint) {
                    let mut job = execute_job(
                        run_id,
                        &blueprint_id,
                        &WorkItem {
                            node: node.clone(),
                            activation: 0,
                        },
                    );
                    job.activation = None;
                    queue.send(&job.encode()?, Duration::ZERO).await?;
                    work.push(WorkItem {
                        node,
                        activation: 0,
                    });
                }
            }
            return Ok(work);
        }
        enqueue_follow_ups(queue, run_id, &blueprint_id, &work, None).await?;
        let now = chrono::Utc::now();
        for (node, record) in &state.book.awaiting {
            if let Some(pending) = &record.pending_resume {
                let item = WorkItem {
                    node: node.clone(),
                    activation: record.activation,
                };
                let job = resume_job(run_id, &blueprint_id, &item, pending.seq);
                queue.send(&job.encode()?, Duration::ZERO).await?;
                work.push(item);
            }
            let Some(ms) = wake_after_ms(&record.details, now) else {
                continue;
            };
            let item = WorkItem {
                node: node.clone(),
                activation: record.activation,
            };
            enqueue_follow_ups(queue, run_id, &blueprint_id, &[], Some((&item, ms))).await?;
        }
        tracing::info!(run_id, jobs = work.len(), "run reconciled");
        Ok(work)
    }

    /// Loads the run's state; `NotFound` when it does not exist.
    async fn load(&self, run_id: &str) -> Result<RunState, Error> {
        let loaded = self.backends.runs.load(run_id).await?;
        Ok(loaded.ok_or_else(|| run_not_found(run_id))?.value)
    }
}

/// How a resume was committed.
enum Resumption {
    /// The node was completed and routed in the commit.
    Direct(CommitRecord),
    /// A worker must resume the node's sub-run (request `seq`).
    Subflow(WorkItem, u64),
}
