//! The node implementation contract (spec §4): what a node returns ([`NodeResult`]), how it
//! fails ([`NodeError`]), what it sees ([`NodeContext`]), the two kinds of implementation
//! (async functions and [`LifecycleNode`]s) and the [`NodeRegistry`] that maps a blueprint's
//! `uses` key to an implementation.

use super::blueprint::{Blueprint, NodeDefinition};
use super::context::{AwaitingDetails, ContextHandle};
use super::execute::Environment;
use async_trait::async_trait;
use futures_util::future::BoxFuture;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::any::{Any, TypeId};
use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::sync::{Arc, Mutex};
use tokio_util::sync::CancellationToken;

/// What a node produced: an output and an action.
///
/// The third part of Flowcraft's `NodeResult`, `error`, is carried by the node's return type:
/// a node fails by returning `Err(NodeError)` ([`NodeResult::error`] and
/// [`NodeResult::fatal_error`] build that), and the failure is then retried, sent to the
/// fallback and reported with its message. This differs on purpose from Flowcraft, whose
/// runtime ignores a returned `error` (spec 4.3): an error that is reported never passes as a
/// success here. A Flowcraft-shaped JSON result (`{output, action, error, dynamicNodes}`, e.g.
/// from a node that forwards another service's answer) is converted by
/// [`NodeResult::from_json`], which turns a present `error` into that failure.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeResult {
    /// The node's output (`None` is JavaScript's `undefined`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output: Option<Value>,
    /// The action used for routing (spec 2.6).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub action: Option<String>,
    /// Dynamic nodes to schedule now (batch-scatter workers). Empty for ordinary nodes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dynamic_nodes: Vec<NodeDefinition>,
}

impl NodeResult {
    /// A result with this output and no action.
    pub fn output(value: Value) -> Self {
        NodeResult {
            output: Some(value),
            ..NodeResult::default()
        }
    }

    /// The same result with `action` set.
    pub fn with_action(mut self, action: impl Into<String>) -> Self {
        self.action = Some(action.into());
        self
    }

    /// A result with no output and no action.
    pub fn empty() -> Self {
        NodeResult::default()
    }

    /// The error form of a node's result: fails the node with `message` (retryable).
    ///
    /// ```
    /// use flowcraft_azure::flow::node::{NodeError, NodeResult};
    /// let declined: Result<NodeResult, NodeError> = NodeResult::error("card declined");
    /// assert_eq!(declined, Err(NodeError::new("card declined")));
    /// ```
    pub fn error(message: impl Into<String>) -> Result<NodeResult, NodeError> {
        Err(NodeError::new(message))
    }

    /// Like [`NodeResult::error`], but fatal: no retry and no node-level fallback.
    pub fn fatal_error(message: impl Into<String>) -> Result<NodeResult, NodeError> {
        Err(NodeError::fatal(message))
    }

    /// Reads a Flowcraft-shaped result `{output?, action?, error?, dynamicNodes?}`.
    ///
    /// - a present, non-null `error` fails the node with `error.message` (or the error itself
    ///   when it is a string, or its JSON text); `error.isFatal: true` makes it fatal;
    /// - `output` is taken as is (absent = undefined); `action` only when it is a string;
    /// - `dynamicNodes` must be node definitions (else a fatal error naming the bad entry);
    /// - anything that is not an object is tolerated as an empty result, as in Flowcraft.
    ///
    /// ```
    /// use flowcraft_azure::flow::node::NodeResult;
    /// use serde_json::json;
    /// let ok = NodeResult::from_json(json!({"output": 3, "action": "big"})).unwrap();
    /// assert_eq!(ok, NodeResult::output(json!(3)).with_action("big"));
    /// let failed = NodeResult::from_json(json!({"error": {"message": "card declined"}}));
    /// assert_eq!(failed.unwrap_err().message, "card declined");
    /// ```
    pub fn from_json(value: Value) -> Result<NodeResult, NodeError> {
        let Value::Object(mut map) = value else {
            return Ok(NodeResult::empty());
        };
        match map.remove("error") {
            None | Some(Value::Null) => {}
            Some(error) => return Err(error_from_json(error)),
        }
        let dynamic_nodes = match map.remove("dynamicNodes") {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::Array(items)) => {
                let mut nodes = Vec::with_capacity(items.len());
                for (i, item) in items.into_iter().enumerate() {
                    let node = serde_json::from_value(item).map_err(|e| {
                        NodeError::fatal(format!(
                            "dynamicNodes[{i}] is not a valid node definition: {e}"
                        ))
                    })?;
                    nodes.push(node);
                }
                nodes
            }
            Some(_) => {
                return Err(NodeError::fatal(
                    "dynamicNodes must be an array of node definitions",
                ));
            }
        };
        Ok(NodeResult {
            output: map.remove("output"),
            action: match map.remove("action") {
                Some(Value::String(action)) => Some(action),
                _ => None,
            },
            dynamic_nodes,
        })
    }
}

/// The [`NodeError`] for a Flowcraft `error` value (see [`NodeResult::from_json`]).
fn error_from_json(error: Value) -> NodeError {
    let fatal = error.get("isFatal").and_then(Value::as_bool) == Some(true);
    let message = match &error {
        Value::String(message) => message.clone(),
        _ => match error.get("message") {
            Some(Value::String(message)) => message.clone(),
            _ => format!("the node returned an error: {error}"),
        },
    };
    NodeError { message, fatal }
}

/// A node failure: the user's message survives; `fatal` stops retries (and skips the
/// node-level fallback).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeError {
    /// What went wrong, as the node said it.
    pub message: String,
    /// True when retrying cannot help.
    #[serde(default)]
    pub fatal: bool,
}

impl NodeError {
    /// A retryable failure.
    pub fn new(message: impl Into<String>) -> Self {
        NodeError {
            message: message.into(),
            fatal: false,
        }
    }

    /// A failure that stops retries at once.
    pub fn fatal(message: impl Into<String>) -> Self {
        NodeError {
            message: message.into(),
            fatal: true,
        }
    }
}

impl fmt::Display for NodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for NodeError {}

impl From<String> for NodeError {
    fn from(message: String) -> Self {
        NodeError::new(message)
    }
}

impl From<&str> for NodeError {
    fn from(message: &str) -> Self {
        NodeError::new(message)
    }
}

/// Shared user dependencies (database pools, HTTP clients, ...), looked up by type. Cheap to
/// clone.
///
/// ```
/// use flowcraft_azure::flow::node::Dependencies;
/// let deps = Dependencies::new().with(String::from("db-url"));
/// assert_eq!(deps.get::<String>().as_deref().map(String::as_str), Some("db-url"));
/// assert!(deps.get::<u32>().is_none());
/// ```
#[derive(Clone, Default)]
pub struct Dependencies {
    map: Arc<HashMap<TypeId, Arc<dyn Any + Send + Sync>>>,
}

impl Dependencies {
    /// No dependencies.
    pub fn new() -> Self {
        Dependencies::default()
    }

    /// Adds (or replaces) the dependency of type `T`.
    pub fn insert<T: Any + Send + Sync>(&mut self, value: T) {
        Arc::make_mut(&mut self.map).insert(TypeId::of::<T>(), Arc::new(value));
    }

    /// Builder form of [`Dependencies::insert`].
    pub fn with<T: Any + Send + Sync>(mut self, value: T) -> Self {
        self.insert(value);
        self
    }

    /// The dependency of type `T`, if one was added.
    pub fn get<T: Any + Send + Sync>(&self) -> Option<Arc<T>> {
        let value = self.map.get(&TypeId::of::<T>())?.clone();
        value.downcast::<T>().ok()
    }
}

impl fmt::Debug for Dependencies {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Dependencies({} entries)", self.map.len())
    }
}

/// Everything a node sees while it runs. Cheap to clone (clones share the context buffer and
/// the awaiting mark).
#[derive(Clone)]
pub struct NodeContext {
    pub(crate) run_id: Arc<str>,
    pub(crate) blueprint: Arc<Blueprint>,
    pub(crate) node: Arc<NodeDefinition>,
    pub(crate) input: Option<Value>,
    pub(crate) params: Arc<Map<String, Value>>,
    pub(crate) attempt: u32,
    pub(crate) max_attempts: u32,
    pub(crate) cancel: CancellationToken,
    pub(crate) env: Environment,
    pub(crate) context: ContextHandle,
    pub(crate) awaiting: Arc<Mutex<Option<AwaitingDetails>>>,
}

impl NodeContext {
    /// The run (execution) id.
    pub fn run_id(&self) -> &str {
        &self.run_id
    }

    /// The id of the blueprint being run.
    pub fn blueprint_id(&self) -> &str {
        self.blueprint.id()
    }

    /// The blueprint being run.
    pub fn blueprint(&self) -> &Arc<Blueprint> {
        &self.blueprint
    }

    /// This node's id.
    pub fn node_id(&self) -> &str {
        &self.node.id
    }

    /// This node's definition (for dynamic batch workers: the generated definition).
    pub fn node(&self) -> &NodeDefinition {
        &self.node
    }

    /// The resolved input (spec 2.7); `None` is `undefined`.
    pub fn input(&self) -> Option<&Value> {
        self.input.as_ref()
    }

    /// The node's static `params` (empty when the blueprint has none).
    pub fn params(&self) -> &Map<String, Value> {
        &self.params
    }

    /// This attempt's number, starting at 1.
    pub fn attempt(&self) -> u32 {
        self.attempt
    }

    /// The total number of attempts allowed (`maxRetries`, at least 1).
    pub fn max_attempts(&self) -> u32 {
        self.max_attempts
    }

    /// True on the last allowed attempt.
    pub fn is_last_attempt(&self) -> bool {
        self.attempt >= self.max_attempts
    }

    /// Cancelled when the run is cancelled; long-running nodes should watch it.
    pub fn cancellation(&self) -> &CancellationToken {
        &self.cancel
    }

    /// The user dependency of type `T`, if the environment has one.
    pub fn dependency<T: Any + Send + Sync>(&self) -> Option<Arc<T>> {
        self.env.dependencies.get::<T>()
    }

    /// The execution environment (registries and dependencies); used by `subflow`.
    pub fn environment(&self) -> &Environment {
        &self.env
    }

    /// The run context as this node sees it; writes are buffered and committed when the node
    /// finishes.
    pub fn context(&self) -> &ContextHandle {
        &self.context
    }

    /// Marks this node awaiting: the runtime records it and does not route onward until the
    /// node is resumed (or, for a timer, until the timer fires).
    pub fn mark_awaiting(&self, details: AwaitingDetails) {
        let mut slot = self.awaiting.lock().unwrap_or_else(|e| e.into_inner());
        *slot = Some(details);
    }

    /// The awaiting mark set by this attempt, if any.
    pub fn awaiting(&self) -> Option<AwaitingDetails> {
        self.awaiting
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

impl fmt::Debug for NodeContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NodeContext")
            .field("run_id", &self.run_id)
            .field("blueprint_id", &self.blueprint.id())
            .field("node_id", &self.node.id)
            .field("attempt", &self.attempt)
            .finish_non_exhaustive()
    }
}

/// A node written as four phases (spec 4.1). Per attempt: `prep` (its failure fails the node
/// without retry), `exec` (a failure is retried up to `maxRetries`), on the last attempt a
/// failed `exec` goes to `fallback` (default: re-raise), and `post` receives the result of
/// `exec` or `fallback`. `post` is not called when `prep` fails, nor when `exec` fails and
/// `fallback` re-raises.
///
/// Each attempt is independent (it may run on another worker in distributed mode), so `prep`
/// runs once per attempt.
///
/// ```
/// use async_trait::async_trait;
/// use flowcraft_azure::flow::node::{LifecycleNode, NodeContext, NodeError, NodeRegistry, NodeResult};
/// use serde_json::{json, Value};
///
/// struct Charge;
///
/// #[async_trait]
/// impl LifecycleNode for Charge {
///     async fn exec(&self, amount: Option<Value>, _ctx: &NodeContext) -> Result<NodeResult, NodeError> {
///         match amount.and_then(|a| a.as_f64()) {
///             Some(a) if a > 0.0 => Ok(NodeResult::output(json!({"charged": a}))),
///             _ => Err(NodeError::fatal("amount must be a positive number")),
///         }
///     }
///     async fn fallback(&self, _e: NodeError, _ctx: &NodeContext) -> Result<NodeResult, NodeError> {
///         Ok(NodeResult::empty().with_action("manual"))
///     }
/// }
///
/// let mut registry = NodeRegistry::new();
/// registry.register_lifecycle("charge-card", Charge);
/// ```
#[async_trait]
pub trait LifecycleNode: Send + Sync {
    /// Prepares the value handed to `exec`; defaults to the node's input.
    async fn prep(&self, ctx: &NodeContext) -> Result<Option<Value>, NodeError> {
        Ok(ctx.input().cloned())
    }

    /// The work itself.
    async fn exec(
        &self,
        prepared: Option<Value>,
        ctx: &NodeContext,
    ) -> Result<NodeResult, NodeError>;

    /// Runs when the last `exec` attempt failed with a non-fatal error; defaults to re-raising.
    async fn fallback(&self, error: NodeError, ctx: &NodeContext) -> Result<NodeResult, NodeError> {
        let _ = ctx;
        Err(error)
    }

    /// Post-processes the result of `exec` (or `fallback`); defaults to returning it.
    async fn post(&self, result: NodeResult, ctx: &NodeContext) -> Result<NodeResult, NodeError> {
        let _ = ctx;
        Ok(result)
    }
}

/// A function node: takes the context, returns a boxed future of the result.
pub type NodeFn =
    Arc<dyn Fn(NodeContext) -> BoxFuture<'static, Result<NodeResult, NodeError>> + Send + Sync>;

/// One registered implementation.
#[derive(Clone)]
pub enum NodeHandler {
    /// An async function; the whole function is one attempt.
    Function(NodeFn),
    /// A [`LifecycleNode`].
    Lifecycle(Arc<dyn LifecycleNode>),
}

impl fmt::Debug for NodeHandler {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NodeHandler::Function(_) => f.write_str("NodeHandler::Function"),
            NodeHandler::Lifecycle(_) => f.write_str("NodeHandler::Lifecycle"),
        }
    }
}

/// Maps `uses` keys to implementations. Later registrations override earlier ones (so user
/// nodes override built-ins of the same name).
///
/// ```
/// use flowcraft_azure::flow::node::{NodeRegistry, NodeResult};
/// let mut registry = NodeRegistry::with_builtins();
/// registry.register("charge-card", |ctx| async move {
///     let amount = ctx.input().cloned().unwrap_or_default();
///     Ok(NodeResult::output(amount).with_action("charged"))
/// });
/// assert!(registry.get("charge-card").is_some());
/// assert!(registry.get("sleep").is_some());
/// ```
#[derive(Clone, Default)]
pub struct NodeRegistry {
    handlers: HashMap<String, NodeHandler>,
}

impl NodeRegistry {
    /// An empty registry (no built-ins).
    pub fn new() -> Self {
        NodeRegistry::default()
    }

    /// The built-in nodes (`sleep`, `wait`, `subflow`, `batch-scatter`, `batch-gather`,
    /// `loop-controller`) and the utility nodes (`echo`, `set`, `action`, `fail`, `sum`,
    /// `work`).
    pub fn with_builtins() -> Self {
        let mut registry = NodeRegistry::new();
        super::builtins::register_builtins(&mut registry);
        super::utility::register_utilities(&mut registry);
        registry
    }

    /// Registers an async function node under `name`.
    pub fn register<F, Fut>(&mut self, name: impl Into<String>, f: F) -> &mut Self
    where
        F: Fn(NodeContext) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<NodeResult, NodeError>> + Send + 'static,
    {
        let f: NodeFn = Arc::new(move |ctx| Box::pin(f(ctx)));
        self.handlers.insert(name.into(), NodeHandler::Function(f));
        self
    }

    /// Registers a [`LifecycleNode`] under `name`.
    pub fn register_lifecycle(
        &mut self,
        name: impl Into<String>,
        node: impl LifecycleNode + 'static,
    ) -> &mut Self {
        self.handlers
            .insert(name.into(), NodeHandler::Lifecycle(Arc::new(node)));
        self
    }

    /// The implementation registered under `name`.
    pub fn get(&self, name: &str) -> Option<&NodeHandler> {
        self.handlers.get(name)
    }

    /// The registered names, sorted.
    pub fn names(&self) -> Vec<&str> {
        let mut names: Vec<&str> = self.handlers.keys().map(String::as_str).collect();
        names.sort_unstable();
        names
    }
}

impl fmt::Debug for NodeRegistry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NodeRegistry")
            .field("names", &self.names())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_flowcraft_result_with_an_error_is_a_failure_with_its_message() {
        let retryable = NodeResult::from_json(json!({"output": 1, "error": {"message": "boom"}}));
        assert_eq!(retryable, Err(NodeError::new("boom")));
        let fatal = NodeResult::from_json(json!({"error": {"message": "no", "isFatal": true}}));
        assert_eq!(fatal, Err(NodeError::fatal("no")));
        assert_eq!(
            NodeResult::from_json(json!({"error": "plain text"})),
            Err(NodeError::new("plain text"))
        );
        let odd = NodeResult::from_json(json!({"error": {"code": 7}}));
        assert!(odd.unwrap_err().message.contains("\"code\":7"));
    }

    #[test]
    fn a_flowcraft_result_without_an_error_keeps_output_action_and_dynamic_nodes() {
        let result = NodeResult::from_json(json!({
            "output": null, "action": "go", "error": null,
            "dynamicNodes": [{"id": "w1", "uses": "echo"}]}));
        let result = result.unwrap();
        assert_eq!(result.output, Some(Value::Null));
        assert_eq!(result.action.as_deref(), Some("go"));
        assert_eq!(result.dynamic_nodes.len(), 1);
        assert_eq!(result.dynamic_nodes[0].id, "w1");
        // a non-string action never matches an edge, so it is dropped
        assert_eq!(
            NodeResult::from_json(json!({"action": 3})),
            Ok(NodeResult::empty())
        );
    }

    #[test]
    fn non_object_results_are_tolerated_and_bad_dynamic_nodes_are_fatal() {
        for value in [json!("text"), json!(3), json!(null), json!([1])] {
            assert_eq!(NodeResult::from_json(value), Ok(NodeResult::empty()));
        }
        let bad = NodeResult::from_json(json!({"dynamicNodes": [{"id": "w"}]}));
        let error = bad.unwrap_err();
        assert!(error.fatal);
        assert!(
            error.message.contains("dynamicNodes[0]"),
            "{}",
            error.message
        );
        assert!(
            NodeResult::from_json(json!({"dynamicNodes": {}}))
                .unwrap_err()
                .fatal
        );
    }

    #[test]
    fn error_helpers_build_retryable_and_fatal_failures() {
        assert_eq!(NodeResult::error("x"), Err(NodeError::new("x")));
        assert_eq!(NodeResult::fatal_error("y"), Err(NodeError::fatal("y")));
    }
}
