//! Running ONE attempt of one node: the seam shared by the in-process runtime
//! ([`super::runtime`]) and the distributed worker. It resolves the input (spec 2.7, without
//! touching the blueprint), builds the [`NodeContext`], runs the implementation under the
//! node's `timeout`, and hands back the result plus the node's buffered context writes. It
//! never commits anything: the caller does.

use super::blueprint::{Blueprint, LoadOptions, NodeDefinition};
use super::context::{AwaitingDetails, ContextDelta, ContextHandle, SharedContext, read_shared};
use super::node::{NodeContext, NodeError, NodeHandler, NodeRegistry, NodeResult};
use super::routing::resolve_input;
use futures_util::FutureExt;
use serde_json::{Map, Value};
use std::borrow::Cow;
use std::collections::HashMap;
use std::fmt;
use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Context key prefix under which dynamic node definitions (batch workers) are stored, so any
/// worker can execute a node that is not in the blueprint: `_dynamic.<nodeId>`.
pub const DYNAMIC_NODE_PREFIX: &str = "_dynamic.";

/// Upper bound of [`retry_delay`].
pub const MAX_RETRY_DELAY: Duration = Duration::from_secs(15 * 60);

/// What a node execution needs besides the node itself (cheap to clone).
#[derive(Clone, Debug)]
pub struct Environment {
    /// The node implementations.
    pub registry: Arc<NodeRegistry>,
    /// Blueprints that `subflow` nodes can run, by id.
    pub blueprints: Arc<BlueprintRegistry>,
    /// Shared user dependencies.
    pub dependencies: super::node::Dependencies,
    /// Where made-up values come from: ids, the clock, jitter (system ones by default).
    pub sources: super::sources::Sources,
}

impl Environment {
    /// An environment with `registry`, no sub-blueprints and no dependencies.
    pub fn new(registry: NodeRegistry) -> Self {
        Environment {
            registry: Arc::new(registry),
            blueprints: Arc::new(BlueprintRegistry::new()),
            dependencies: super::node::Dependencies::new(),
            sources: super::sources::Sources::system(),
        }
    }

    /// Sets all made-up value sources at once (e.g. [`super::sources::Sources::deterministic`]).
    pub fn with_sources(mut self, sources: super::sources::Sources) -> Self {
        self.sources = sources;
        self
    }

    /// Makes up ids (run ids, batch ids) with `ids`.
    pub fn with_ids(mut self, ids: Arc<dyn super::sources::IdSource>) -> Self {
        self.sources = self.sources.with_ids(ids);
        self
    }

    /// Reads the current time from `clock` (timestamps in documents, due times).
    pub fn with_clock(mut self, clock: Arc<dyn super::sources::Clock>) -> Self {
        self.sources = self.sources.with_clock(clock);
        self
    }

    /// Sets the blueprint registry.
    pub fn with_blueprints(mut self, blueprints: BlueprintRegistry) -> Self {
        self.blueprints = Arc::new(blueprints);
        self
    }

    /// Sets the user dependencies.
    pub fn with_dependencies(mut self, dependencies: super::node::Dependencies) -> Self {
        self.dependencies = dependencies;
        self
    }
}

/// Blueprints by id (for subflows and distributed workers).
#[derive(Debug, Clone, Default)]
pub struct BlueprintRegistry {
    blueprints: HashMap<String, Arc<Blueprint>>,
}

/// A blueprint file in a directory could not be loaded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadDirError {
    /// The file (or directory) that failed.
    pub path: PathBuf,
    /// What went wrong.
    pub message: String,
}

impl fmt::Display for LoadDirError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path.display(), self.message)
    }
}

impl std::error::Error for LoadDirError {}

impl BlueprintRegistry {
    /// An empty registry.
    pub fn new() -> Self {
        BlueprintRegistry::default()
    }

    /// Adds (or replaces) a blueprint under its id.
    pub fn insert(&mut self, blueprint: impl Into<Arc<Blueprint>>) {
        let blueprint = blueprint.into();
        self.blueprints
            .insert(blueprint.id().to_string(), blueprint);
    }

    /// The blueprint with this id.
    pub fn get(&self, id: &str) -> Option<Arc<Blueprint>> {
        self.blueprints.get(id).cloned()
    }

    /// The number of blueprints.
    pub fn len(&self) -> usize {
        self.blueprints.len()
    }

    /// True when there are none.
    pub fn is_empty(&self) -> bool {
        self.blueprints.is_empty()
    }

    /// Loads every `*.json` file in `dir` (not recursive) with `options`; returns how many were
    /// loaded. Stops at the first file that cannot be read or is not a valid blueprint.
    pub fn load_dir(&mut self, dir: &Path, options: &LoadOptions) -> Result<usize, LoadDirError> {
        let err = |path: &Path, message: String| LoadDirError {
            path: path.to_path_buf(),
            message,
        };
        let entries = std::fs::read_dir(dir)
            .map_err(|e| err(dir, format!("cannot read the blueprint directory: {e}")))?;
        let mut paths = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|e| err(dir, format!("cannot list the directory: {e}")))?;
            let path = entry.path();
            if path.is_file() && path.extension().is_some_and(|ext| ext == "json") {
                paths.push(path);
            }
        }
        paths.sort();
        for path in &paths {
            let text = std::fs::read_to_string(path)
                .map_err(|e| err(path, format!("cannot read the file: {e}")))?;
            let blueprint = Blueprint::from_json_with(&text, options)
                .map_err(|e| err(path, format!("invalid blueprint: {e}")))?;
            self.insert(blueprint);
        }
        Ok(paths.len())
    }
}

/// One attempt to run.
pub struct AttemptRequest<'a> {
    /// Registries and dependencies.
    pub env: &'a Environment,
    /// The run's blueprint.
    pub blueprint: &'a Arc<Blueprint>,
    /// The node to run (a blueprint node or a dynamic node stored in the context).
    pub node_id: &'a str,
    /// The run id.
    pub run_id: &'a str,
    /// The committed run context the node sees.
    pub context: &'a Map<String, Value>,
    /// The attempt number, starting at 1.
    pub attempt: u32,
    /// Cancelled when the run is cancelled.
    pub cancel: CancellationToken,
    /// Input override (resume output for a resumed node); None = resolve from context.
    pub input: Option<Value>,
}

/// How an attempt ended.
#[derive(Debug, Clone, PartialEq)]
pub enum AttemptOutcome {
    /// The node finished (possibly marking itself awaiting).
    Completed(NodeCompletion),
    /// The attempt failed; `retryable` is false for fatal errors and missing implementations.
    Failed {
        /// What went wrong (the node's own message).
        error: NodeError,
        /// Whether another attempt may help.
        retryable: bool,
    },
}

/// A finished attempt: its result, its buffered context writes and its awaiting mark.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeCompletion {
    /// What the node returned.
    pub result: NodeResult,
    /// The node's context writes, in order. For every dynamic node in the result this also
    /// holds a `_dynamic.<id>` write with its definition.
    pub deltas: Vec<ContextDelta>,
    /// Set when the node marked itself awaiting.
    pub awaiting: Option<AwaitingDetails>,
}

/// The definition of `node_id`: the blueprint's, else a dynamic node stored under
/// `_dynamic.<id>` in the context.
pub fn node_definition<'a>(
    blueprint: &'a Blueprint,
    node_id: &str,
    context: &Map<String, Value>,
) -> Option<Cow<'a, NodeDefinition>> {
    if let Some(node) = blueprint.node(node_id) {
        return Some(Cow::Borrowed(node));
    }
    let stored = context.get(&format!("{DYNAMIC_NODE_PREFIX}{node_id}"))?;
    serde_json::from_value(stored.clone()).ok().map(Cow::Owned)
}

fn failed(error: NodeError, retryable: bool) -> AttemptOutcome {
    AttemptOutcome::Failed { error, retryable }
}

/// Runs ONE attempt of a node: resolve input (spec 2.7, without mutating the blueprint), build
/// the NodeContext, run it with the node's `timeout` (timeout = retryable failure).
///
/// Not retryable: a node missing from the blueprint, a missing implementation
/// ("Implementation for '`<uses>`' not found."), a fatal [`NodeError`], a failing
/// `LifecycleNode::prep`, and cancellation ("Workflow cancelled"; the node's future is
/// dropped as soon as the token fires). A panicking node is a retryable failure.
pub async fn execute_attempt(mut req: AttemptRequest<'_>) -> AttemptOutcome {
    let input = req.input.take();
    let prepared = match prepare(req.env, req.blueprint, req.node_id, req.context, input) {
        Ok(prepared) => prepared,
        Err(error) => return failed(error, false),
    };
    let context = ContextHandle::new(req.context.clone());
    run_prepared(&req, prepared, context).await
}

/// [`execute_attempt`] over a shared snapshot of the run context: the node reads `snapshot`
/// (`req.context` is ignored) instead of a private copy of the context, so running one node
/// of a large run does not copy the whole run context.
pub async fn execute_attempt_shared(
    mut req: AttemptRequest<'_>,
    snapshot: Arc<Map<String, Value>>,
) -> AttemptOutcome {
    let input = req.input.take();
    let prepared = match prepare(req.env, req.blueprint, req.node_id, &snapshot, input) {
        Ok(prepared) => prepared,
        Err(error) => return failed(error, false),
    };
    run_prepared(&req, prepared, ContextHandle::from_shared(snapshot)).await
}

/// [`execute_attempt`] for the in-process runtime: the node reads the run's live committed
/// context instead of a private copy of it (so a run does not copy its whole context for
/// every node). `req.context` is ignored; `shared` is read briefly to prepare the node.
pub(crate) async fn execute_attempt_live(
    mut req: AttemptRequest<'_>,
    shared: &SharedContext,
) -> AttemptOutcome {
    let input = req.input.take();
    let prepared = {
        let committed = read_shared(shared);
        prepare(req.env, req.blueprint, req.node_id, &committed, input)
    };
    let prepared = match prepared {
        Ok(prepared) => prepared,
        Err(error) => return failed(error, false),
    };
    run_prepared(&req, prepared, ContextHandle::live(shared.clone())).await
}

/// A node ready to run: its definition, implementation and resolved input.
struct Prepared {
    node: NodeDefinition,
    handler: NodeHandler,
    input: Option<Value>,
}

/// Finds the node and its implementation and resolves its input (unless `input` overrides
/// it); the `Err` fails the attempt without retry.
fn prepare(
    env: &Environment,
    blueprint: &Blueprint,
    node_id: &str,
    context: &Map<String, Value>,
    input: Option<Value>,
) -> Result<Prepared, NodeError> {
    let Some(node) = node_definition(blueprint, node_id, context) else {
        return Err(NodeError::fatal(format!(
            "Node '{node_id}' not found in blueprint '{}'.",
            blueprint.id()
        )));
    };
    let Some(handler) = env.registry.get(&node.uses).cloned() else {
        return Err(NodeError::fatal(format!(
            "Implementation for '{}' not found.",
            node.uses
        )));
    };
    let input = match input {
        Some(v) => Some(v),
        None => resolve_input(blueprint, node_id, context),
    };
    Ok(Prepared {
        node: node.into_owned(),
        handler,
        input,
    })
}

/// Runs a prepared node once over `context` (see [`execute_attempt`]).
async fn run_prepared(
    req: &AttemptRequest<'_>,
    prepared: Prepared,
    context: ContextHandle,
) -> AttemptOutcome {
    if req.cancel.is_cancelled() {
        return failed(NodeError::fatal("Workflow cancelled"), false);
    }
    let Prepared {
        node,
        handler,
        input,
    } = prepared;
    let timeout = node.config.timeout;
    let ctx = NodeContext {
        run_id: Arc::from(req.run_id),
        blueprint: req.blueprint.clone(),
        params: Arc::new(node.params.clone().unwrap_or_default()),
        max_attempts: max_attempts(&node),
        node: Arc::new(node),
        input,
        attempt: req.attempt.max(1),
        cancel: req.cancel.clone(),
        env: req.env.clone(),
        context,
        awaiting: Arc::new(Mutex::new(None)),
    };
    let work = AssertUnwindSafe(run_handler(&handler, &ctx)).catch_unwind();
    let timed = async {
        match timeout {
            Some(ms) => tokio::time::timeout(Duration::from_millis(ms), work)
                .await
                .map_err(|_| ms),
            None => Ok(work.await),
        }
    };
    let outcome = tokio::select! {
        biased;
        _ = req.cancel.cancelled() => return failed(NodeError::fatal("Workflow cancelled"), false),
        outcome = timed => outcome,
    };
    match outcome {
        Err(ms) => failed(
            NodeError::new(format!("Node '{}' timed out after {ms} ms", req.node_id)),
            true,
        ),
        Ok(Err(panic)) => failed(
            NodeError::new(format!(
                "Node '{}' panicked: {}",
                req.node_id,
                panic_message(panic.as_ref())
            )),
            true,
        ),
        Ok(Ok(Err(HandlerError { error, retryable }))) => {
            let retryable = retryable && !error.fatal;
            failed(error, retryable)
        }
        Ok(Ok(Ok(result))) => {
            let mut deltas = ctx.context().deltas();
            for dynamic in &result.dynamic_nodes {
                if let Ok(value) = serde_json::to_value(dynamic) {
                    deltas.push(ContextDelta::Set {
                        key: format!("{DYNAMIC_NODE_PREFIX}{}", dynamic.id),
                        value,
                    });
                }
            }
            AttemptOutcome::Completed(NodeCompletion {
                result,
                deltas,
                awaiting: ctx.awaiting(),
            })
        }
    }
}

struct HandlerError {
    error: NodeError,
    retryable: bool,
}

impl From<NodeError> for HandlerError {
    fn from(error: NodeError) -> Self {
        HandlerError {
            error,
            retryable: true,
        }
    }
}

async fn run_handler(handler: &NodeHandler, ctx: &NodeContext) -> Result<NodeResult, HandlerError> {
    match handler {
        NodeHandler::Function(f) => Ok(f(ctx.clone()).await?),
        NodeHandler::Lifecycle(node) => {
            let prepared = node.prep(ctx).await.map_err(|error| HandlerError {
                error,
                retryable: false,
            })?;
            let result = match node.exec(prepared, ctx).await {
                Ok(result) => result,
                Err(error) if !error.fatal && ctx.is_last_attempt() => {
                    node.fallback(error, ctx).await?
                }
                Err(error) => return Err(error.into()),
            };
            Ok(node.post(result, ctx).await?)
        }
    }
}

fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = panic.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = panic.downcast_ref::<String>() {
        s.clone()
    } else {
        "unknown panic".to_string()
    }
}

/// Total attempts allowed for a node: `config.maxRetries`, at least 1 (Flowcraft runs zero
/// attempts for `maxRetries <= 0`; here such a node still runs once).
pub fn max_attempts(node: &NodeDefinition) -> u32 {
    let n = node.config.max_retries.unwrap_or(1).max(1);
    u32::try_from(n).unwrap_or(u32::MAX)
}

/// Backoff before attempt `next_attempt` (2, 3, ...): retryDelay * 2^(next_attempt-2), capped
/// at [`MAX_RETRY_DELAY`]. Zero for attempt 1 and when the node has no `retryDelay`.
pub fn retry_delay(node: &NodeDefinition, next_attempt: u32) -> Duration {
    let base = node.config.retry_delay.unwrap_or(0);
    if next_attempt < 2 || base == 0 {
        return Duration::ZERO;
    }
    let exponent = (next_attempt - 2).min(32);
    let ms = base.saturating_mul(1u64 << exponent);
    Duration::from_millis(ms).min(MAX_RETRY_DELAY)
}
