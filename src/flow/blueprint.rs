//! Blueprints: the serde model that loads Flowcraft's `WorkflowBlueprint` JSON unchanged
//! (spec §1), validation with errors that point into the JSON, and [`Blueprint`], the
//! validated, immutable form with its graph index and pre-parsed expressions.
//!
//! ```
//! use flowcraft_azure::flow::blueprint::Blueprint;
//! let bp = Blueprint::from_json(r#"{"id":"hello","nodes":[{"id":"a","uses":"echo"},
//!     {"id":"b","uses":"echo"}],"edges":[{"source":"a","target":"b"}]}"#).unwrap();
//! assert_eq!(bp.start_nodes(), ["a"]);
//! assert_eq!(bp.terminal_nodes(), ["b"]);
//! ```

use super::expr::{EvaluatorKind, Expression};
use super::graph::{self, Graph};
use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::marker::PhantomData;
use std::sync::OnceLock;

// ---------------------------------------------------------------------------------------------
// Serde model

/// A Flowcraft blueprint as written in JSON. Unknown fields (`_sourceLocation`, UI data) are
/// dropped; unknown `metadata` keys are kept. `nodes` and `edges` may be arrays or object maps
/// (the values are taken) and may be missing or null (empty).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WorkflowBlueprint {
    /// Blueprint id: the registry key for workers and subflows.
    pub id: String,
    /// The nodes, in declaration order.
    #[serde(default, deserialize_with = "list_or_map")]
    pub nodes: Vec<NodeDefinition>,
    /// The edges, in declaration order.
    #[serde(default, deserialize_with = "list_or_map")]
    pub edges: Vec<EdgeDefinition>,
    /// Free-form metadata; known keys: `version`, `cycleEntryPoints`, `evaluator`, `allowCycles`.
    #[serde(
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "Map::is_empty"
    )]
    pub metadata: Map<String, Value>,
}

/// One node of a blueprint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeDefinition {
    /// Unique id within the blueprint (any characters).
    pub id: String,
    /// Key into the node registry (`echo`, `wait`, `loop-controller`, ...).
    pub uses: String,
    /// Static parameters passed to the node as-is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub params: Option<Map<String, Value>>,
    /// How the node's input is built from the context (spec §2.7).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inputs: Option<NodeInputs>,
    /// Retries, timeout, fallback and join strategy.
    #[serde(
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "NodeConfig::is_default"
    )]
    pub config: NodeConfig,
}

/// A node's `inputs`: one context key, or a map from input name to context key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum NodeInputs {
    /// `"inputs": "order"`: the input is that one value.
    Key(String),
    /// `"inputs": {"amount": "validate.total"}`: the input is an object with these keys.
    Map(BTreeMap<String, String>),
}

/// Per-node execution settings (JSON names `maxRetries`, `retryDelay`, `timeout`, `fallback`,
/// `joinStrategy`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeConfig {
    /// Total number of attempts (not extra retries); at least 1; default 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_retries: Option<i64>,
    /// Backoff base between attempts, in milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_delay: Option<u64>,
    /// Per-attempt timeout, in milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<u64>,
    /// Id of the node that runs when this one fails on its last attempt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fallback: Option<String>,
    /// Fan-in rule when several predecessors lead here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub join_strategy: Option<JoinStrategy>,
}

impl NodeConfig {
    /// True when nothing is set (serialization then omits `config`).
    pub fn is_default(&self) -> bool {
        *self == NodeConfig::default()
    }
}

/// Fan-in rule: wait for all distinct predecessors, or fire on the first.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum JoinStrategy {
    /// Run once every distinct predecessor has activated this node (the default).
    #[default]
    All,
    /// Run when the first predecessor activates this node.
    Any,
}

/// One edge of a blueprint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EdgeDefinition {
    /// Source node id.
    pub source: String,
    /// Target node id.
    pub target: String,
    /// Taken only when the source's result has this action.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub action: Option<String>,
    /// Taken only when this expression is truthy (an empty string means no condition).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub condition: Option<String>,
    /// Computes the value delivered to the target (an empty string is still a transform).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transform: Option<String>,
}

impl<'de> Deserialize<'de> for NodeInputs {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct InputsVisitor;
        impl<'de> Visitor<'de> for InputsVisitor {
            type Value = NodeInputs;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a context key string or an object of context key strings")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<NodeInputs, E> {
                Ok(NodeInputs::Key(v.to_owned()))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<NodeInputs, A::Error> {
                let mut out = BTreeMap::new();
                while let Some(key) = map.next_key::<String>()? {
                    let value = map.next_value::<String>()?;
                    out.insert(key, value);
                }
                Ok(NodeInputs::Map(out))
            }
        }
        deserializer.deserialize_any(InputsVisitor)
    }
}

/// Accepts `[a, b]`, `{"k1": a, "k2": b}` (values taken in order) or `null` (empty).
fn list_or_map<'de, D, T>(deserializer: D) -> Result<Vec<T>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    struct ListOrMap<T>(PhantomData<T>);
    impl<'de, T: Deserialize<'de>> Visitor<'de> for ListOrMap<T> {
        type Value = Vec<T>;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("an array or an object map")
        }
        fn visit_unit<E: de::Error>(self) -> Result<Vec<T>, E> {
            Ok(Vec::new())
        }
        fn visit_none<E: de::Error>(self) -> Result<Vec<T>, E> {
            Ok(Vec::new())
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<T>, A::Error> {
            let mut out = Vec::new();
            while let Some(item) = seq.next_element()? {
                out.push(item);
            }
            Ok(out)
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Vec<T>, A::Error> {
            let mut out = Vec::new();
            while map.next_key::<String>()?.is_some() {
                out.push(map.next_value()?);
            }
            Ok(out)
        }
    }
    deserializer.deserialize_any(ListOrMap(PhantomData))
}

/// `null` reads as the default value.
fn null_as_default<'de, D, T>(deserializer: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de> + Default,
{
    Ok(Option::<T>::deserialize(deserializer)?.unwrap_or_default())
}

// ---------------------------------------------------------------------------------------------
// Errors and options

/// A load or validation error with the JSON path of the offending part, e.g.
/// `nodes[3].config.fallback: unknown node 'x'` (an empty path means the whole document).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlueprintError {
    /// Where in the JSON: `nodes[3].config.fallback`, `edges[2].condition`, or empty.
    pub path: String,
    /// What is wrong and, where it helps, what to do.
    pub message: String,
}

impl BlueprintError {
    fn at(path: impl Into<String>, message: impl Into<String>) -> Self {
        BlueprintError {
            path: path.into(),
            message: message.into(),
        }
    }
}

impl fmt::Display for BlueprintError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            f.write_str(&self.message)
        } else {
            write!(f, "{}: {}", self.path, self.message)
        }
    }
}

impl std::error::Error for BlueprintError {}

/// Options for loading a blueprint.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LoadOptions {
    /// Evaluator for conditions and transforms, unless the blueprint's metadata
    /// `"evaluator"` names one.
    pub evaluator: EvaluatorKind,
    /// Accept cycles that do not pass through a `loop-controller` (metadata
    /// `"allowCycles": true` does the same for one blueprint).
    pub allow_cycles: bool,
}

// ---------------------------------------------------------------------------------------------
// The validated blueprint

/// A validated, immutable blueprint with its graph index and pre-parsed expressions. Shared
/// as `Arc<Blueprint>`; nothing mutates it after load. Lookups of unknown node ids return
/// empty answers rather than panicking.
#[derive(Debug, Clone)]
pub struct Blueprint {
    def: WorkflowBlueprint,
    evaluator: EvaluatorKind,
    graph: Graph,
    conditions: Vec<Option<Expression>>,
    transforms: Vec<Option<Expression>>,
    loop_conditions: HashMap<String, Expression>,
    is_dag: bool,
    /// [`Blueprint::join_waits_for`] per node position, computed on first use.
    join_waits: Vec<OnceLock<Vec<String>>>,
}

impl Blueprint {
    /// Parses and validates JSON text with default [`LoadOptions`].
    pub fn from_json(text: &str) -> Result<Blueprint, BlueprintError> {
        Blueprint::from_json_with(text, &LoadOptions::default())
    }

    /// Parses and validates JSON text. Errors name the JSON path; syntax errors also give the
    /// line and column.
    pub fn from_json_with(text: &str, opts: &LoadOptions) -> Result<Blueprint, BlueprintError> {
        Blueprint::new(parse_definition(text)?, opts)
    }

    /// Validates a definition and builds the graph index.
    pub fn new(def: WorkflowBlueprint, opts: &LoadOptions) -> Result<Blueprint, BlueprintError> {
        let evaluator = metadata_evaluator(&def.metadata)?.unwrap_or(opts.evaluator);
        let allow_cycles = opts.allow_cycles || metadata_allow_cycles(&def.metadata)?;
        metadata_version(&def.metadata)?;
        let index = node_index(&def)?;
        check_edges(&def, &index)?;
        check_configs(&def, &index)?;
        let entry_points = metadata_entry_points(&def.metadata, &index)?;
        let (conditions, transforms) = parse_edge_expressions(&def, evaluator)?;
        let loop_conditions = parse_loop_conditions(&def, evaluator)?;
        let graph = Graph::build(&def, index, &entry_points);
        check_loops(&def, &graph)?;
        if !allow_cycles {
            check_cycles(&def, &graph)?;
        }
        let is_dag = graph.find_cycle(&def, &|_| false).is_none();
        let join_waits = (0..def.nodes.len()).map(|_| OnceLock::new()).collect();
        Ok(Blueprint {
            def,
            evaluator,
            graph,
            conditions,
            transforms,
            loop_conditions,
            is_dag,
            join_waits,
        })
    }

    /// The definition as loaded (sanitized: unknown fields dropped).
    pub fn definition(&self) -> &WorkflowBlueprint {
        &self.def
    }

    /// The blueprint id.
    pub fn id(&self) -> &str {
        &self.def.id
    }

    /// `metadata.version`, when present.
    pub fn version(&self) -> Option<&str> {
        self.def.metadata.get("version").and_then(Value::as_str)
    }

    /// The node with this id.
    pub fn node(&self, id: &str) -> Option<&NodeDefinition> {
        self.graph.position(id).and_then(|i| self.def.nodes.get(i))
    }

    /// All nodes, in declaration order.
    pub fn nodes(&self) -> &[NodeDefinition] {
        &self.def.nodes
    }

    /// All edges, in declaration order; edge numbers elsewhere index this slice.
    pub fn edges(&self) -> &[EdgeDefinition] {
        &self.def.edges
    }

    /// Indices (into [`edges`](Self::edges)) of the edges leaving `id`, in order.
    pub fn outgoing(&self, id: &str) -> Vec<usize> {
        self.per_node(&self.graph.outgoing, id).to_vec()
    }

    /// Indices (into [`edges`](Self::edges)) of the edges entering `id`, in order.
    pub fn incoming(&self, id: &str) -> Vec<usize> {
        self.per_node(&self.graph.incoming, id).to_vec()
    }

    /// Distinct source node ids of the edges entering `id` (what an `all` join waits for).
    pub fn predecessors(&self, id: &str) -> &[String] {
        self.per_node(&self.graph.predecessors, id)
    }

    /// The predecessors a fan-in at `id` waits for: [`predecessors`](Self::predecessors)
    /// without a `loop-controller` whose loop body contains `id` (its `continue` edge re-enters
    /// the loop; it is not a join source).
    pub fn join_sources(&self, id: &str) -> Vec<&str> {
        self.predecessors(id)
            .iter()
            .filter(|p| {
                let controller = self
                    .node(p)
                    .is_some_and(|n| n.uses == graph::LOOP_CONTROLLER);
                !(controller && self.loop_body(p).iter().any(|b| b == id))
            })
            .map(String::as_str)
            .collect()
    }

    /// The predecessors an `all` join at `id` waits for at run time: its
    /// [`predecessors`](Self::predecessors) minus loop controllers and minus those reachable
    /// from `id` without passing a loop controller (back edges, e.g. a self-loop). Computed
    /// once per node on first use, not on every activation.
    pub fn join_waits_for(&self, id: &str) -> &[String] {
        let Some(i) = self.graph.position(id) else {
            return &[];
        };
        self.join_waits.get(i).map_or(&[], |cell| {
            cell.get_or_init(|| self.graph.join_waits(&self.def, i))
        })
    }

    /// Distinct target node ids of the edges leaving `id`.
    pub fn successors(&self, id: &str) -> &[String] {
        self.per_node(&self.graph.successors, id)
    }

    /// Nodes with no incoming edge that are not fallback-only; when every node is on a cycle,
    /// `metadata.cycleEntryPoints` (or else the first declared node).
    pub fn start_nodes(&self) -> &[String] {
        &self.graph.start
    }

    /// True when the graph has no cycle at all (loops through a loop-controller are cycles).
    pub fn is_dag(&self) -> bool {
        self.is_dag
    }

    /// Nodes with no outgoing edge that are not fallback-only.
    pub fn terminal_nodes(&self) -> &[String] {
        &self.graph.terminal
    }

    /// Nodes whose `config.fallback` is `id`.
    pub fn fallback_sources(&self, id: &str) -> &[String] {
        self.per_node(&self.graph.fallback_sources, id)
    }

    /// True when `id` is some node's fallback and has no incoming edge: it only runs as a
    /// fallback, so it is neither a start nor a terminal node.
    pub fn is_fallback_only(&self, id: &str) -> bool {
        self.graph
            .position(id)
            .and_then(|i| self.graph.fallback_only.get(i))
            .copied()
            .unwrap_or(false)
    }

    /// Total attempts for the node (`config.maxRetries`), at least 1; 1 for an unknown id
    /// (the rule is [`max_attempts`](super::execute::max_attempts)).
    pub fn max_retries(&self, id: &str) -> u32 {
        self.node(id).map_or(1, super::execute::max_attempts)
    }

    /// The node's fan-in rule (default `all`).
    pub fn join_strategy(&self, id: &str) -> JoinStrategy {
        self.node(id)
            .and_then(|n| n.config.join_strategy)
            .unwrap_or_default()
    }

    /// The evaluator that compiled this blueprint's expressions (metadata overrides options).
    pub fn evaluator(&self) -> EvaluatorKind {
        self.evaluator
    }

    /// The parsed condition of edge `edge`; `None` when it has none (or it is empty).
    pub fn condition(&self, edge: usize) -> Option<&Expression> {
        self.conditions.get(edge).and_then(Option::as_ref)
    }

    /// The parsed transform of edge `edge`; `None` when it has none. An empty transform is
    /// present and evaluates to `undefined`.
    pub fn transform(&self, edge: usize) -> Option<&Expression> {
        self.transforms.get(edge).and_then(Option::as_ref)
    }

    /// The parsed `params.condition` of a `loop-controller` node.
    pub fn loop_condition(&self, controller: &str) -> Option<&Expression> {
        self.loop_conditions.get(controller)
    }

    /// The nodes re-armed on each pass of a `loop-controller`: those on a cycle through it
    /// (reachable from its `continue` edges and reaching back), plus their fallback nodes.
    pub fn loop_body(&self, controller: &str) -> &[String] {
        self.per_node(&self.graph.loop_bodies, controller)
    }

    fn per_node<'a, T>(&'a self, lists: &'a [Vec<T>], id: &str) -> &'a [T] {
        self.graph
            .position(id)
            .and_then(|i| lists.get(i))
            .map_or(&[], Vec::as_slice)
    }
}

// ---------------------------------------------------------------------------------------------
// Parsing and validation steps

/// JSON text to the serde model, with the JSON path of the first error.
fn parse_definition(text: &str) -> Result<WorkflowBlueprint, BlueprintError> {
    let first = text.trim_start().chars().next();
    if first.is_some_and(|c| c != '{') {
        let found = match serde_json::from_str::<Value>(text) {
            Err(err) => return Err(BlueprintError::at("", format!("invalid JSON: {err}"))),
            Ok(Value::Array(_)) => "an array",
            Ok(Value::String(_)) => "a string",
            Ok(Value::Number(_)) => "a number",
            Ok(Value::Bool(_)) => "a boolean",
            Ok(_) => "null",
        };
        return Err(BlueprintError::at(
            "",
            format!(
                "a blueprint must be a JSON object {{\"id\": ..., \"nodes\": [...], \"edges\": \
                 [...]}}, found {found}"
            ),
        ));
    }
    let mut de = serde_json::Deserializer::from_str(text);
    let def = serde_path_to_error::deserialize::<_, WorkflowBlueprint>(&mut de).map_err(|err| {
        let path = err.path().to_string();
        let inner = err.into_inner();
        if inner.is_syntax() || inner.is_eof() {
            BlueprintError::at("", format!("invalid JSON: {inner}"))
        } else {
            let path = if path == "." { String::new() } else { path };
            BlueprintError::at(path, inner.to_string())
        }
    })?;
    de.end()
        .map_err(|err| BlueprintError::at("", format!("invalid JSON: {err}")))?;
    Ok(def)
}

fn metadata_evaluator(meta: &Map<String, Value>) -> Result<Option<EvaluatorKind>, BlueprintError> {
    match meta.get("evaluator") {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => s
            .parse()
            .map(Some)
            .map_err(|msg| BlueprintError::at("metadata.evaluator", msg)),
        Some(_) => Err(BlueprintError::at(
            "metadata.evaluator",
            "must be \"property\" or \"safe\"",
        )),
    }
}

fn metadata_allow_cycles(meta: &Map<String, Value>) -> Result<bool, BlueprintError> {
    match meta.get("allowCycles") {
        None | Some(Value::Null) => Ok(false),
        Some(Value::Bool(b)) => Ok(*b),
        Some(_) => Err(BlueprintError::at(
            "metadata.allowCycles",
            "must be true or false",
        )),
    }
}

fn metadata_version(meta: &Map<String, Value>) -> Result<(), BlueprintError> {
    match meta.get("version") {
        None | Some(Value::Null) | Some(Value::String(_)) => Ok(()),
        Some(_) => Err(BlueprintError::at(
            "metadata.version",
            "must be a string, e.g. \"1.2.0\"",
        )),
    }
}

fn metadata_entry_points(
    meta: &Map<String, Value>,
    index: &HashMap<String, usize>,
) -> Result<Vec<String>, BlueprintError> {
    let Some(value) = meta.get("cycleEntryPoints").filter(|v| !v.is_null()) else {
        return Ok(Vec::new());
    };
    let Some(items) = value.as_array() else {
        return Err(BlueprintError::at(
            "metadata.cycleEntryPoints",
            "must be an array of node ids",
        ));
    };
    let mut out = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let path = format!("metadata.cycleEntryPoints[{i}]");
        let id = item
            .as_str()
            .ok_or_else(|| BlueprintError::at(&path, "must be a node id string"))?;
        if !index.contains_key(id) {
            return Err(BlueprintError::at(
                &path,
                format!("unknown node {}", quote(id)),
            ));
        }
        if !out.iter().any(|o| o == id) {
            out.push(id.to_owned());
        }
    }
    Ok(out)
}

/// Node id -> position; duplicate ids are an error.
fn node_index(def: &WorkflowBlueprint) -> Result<HashMap<String, usize>, BlueprintError> {
    let mut index = HashMap::with_capacity(def.nodes.len());
    for (i, node) in def.nodes.iter().enumerate() {
        if let Some(first) = index.insert(node.id.clone(), i) {
            return Err(BlueprintError::at(
                format!("nodes[{i}].id"),
                format!(
                    "duplicate node id {} (first defined at nodes[{first}]); node ids must be unique",
                    quote(&node.id)
                ),
            ));
        }
    }
    Ok(index)
}

fn check_edges(
    def: &WorkflowBlueprint,
    index: &HashMap<String, usize>,
) -> Result<(), BlueprintError> {
    for (i, edge) in def.edges.iter().enumerate() {
        for (field, id) in [("source", &edge.source), ("target", &edge.target)] {
            if !index.contains_key(id) {
                return Err(BlueprintError::at(
                    format!("edges[{i}].{field}"),
                    format!("unknown node {}: no node has this id", quote(id)),
                ));
            }
        }
    }
    Ok(())
}

fn check_configs(
    def: &WorkflowBlueprint,
    index: &HashMap<String, usize>,
) -> Result<(), BlueprintError> {
    for (i, node) in def.nodes.iter().enumerate() {
        if let Some(n) = node.config.max_retries.filter(|n| *n < 1) {
            return Err(BlueprintError::at(
                format!("nodes[{i}].config.maxRetries"),
                format!("must be at least 1 (it is the total number of attempts), got {n}"),
            ));
        }
        if let Some(fallback) = &node.config.fallback {
            if !index.contains_key(fallback) {
                return Err(BlueprintError::at(
                    format!("nodes[{i}].config.fallback"),
                    format!(
                        "unknown node {}: a fallback names another node's id",
                        quote(fallback)
                    ),
                ));
            }
            if *fallback == node.id {
                return Err(BlueprintError::at(
                    format!("nodes[{i}].config.fallback"),
                    "a node cannot be its own fallback",
                ));
            }
        }
    }
    Ok(())
}

type EdgeExpressions = (Vec<Option<Expression>>, Vec<Option<Expression>>);

/// Parses every edge condition and transform; a malformed one is a load error.
fn parse_edge_expressions(
    def: &WorkflowBlueprint,
    kind: EvaluatorKind,
) -> Result<EdgeExpressions, BlueprintError> {
    let parse = |path: String, source: &str| {
        Expression::parse(kind, source).map_err(|e| {
            BlueprintError::at(path, format!("invalid {kind} expression {source:?}: {e}"))
        })
    };
    let mut conditions = Vec::with_capacity(def.edges.len());
    let mut transforms = Vec::with_capacity(def.edges.len());
    for (i, edge) in def.edges.iter().enumerate() {
        conditions.push(match edge.condition.as_deref() {
            None | Some("") => None,
            Some(src) => Some(parse(format!("edges[{i}].condition"), src)?),
        });
        transforms.push(match edge.transform.as_deref() {
            None => None,
            Some("") => Some(Expression::undefined()),
            Some(src) => Some(parse(format!("edges[{i}].transform"), src)?),
        });
    }
    Ok((conditions, transforms))
}

/// Parses each `loop-controller`'s `params.condition`, which is required.
fn parse_loop_conditions(
    def: &WorkflowBlueprint,
    kind: EvaluatorKind,
) -> Result<HashMap<String, Expression>, BlueprintError> {
    let mut out = HashMap::new();
    for (i, node) in def.nodes.iter().enumerate() {
        if node.uses != graph::LOOP_CONTROLLER {
            continue;
        }
        let path = format!("nodes[{i}].params.condition");
        let source = match node.params.as_ref().and_then(|p| p.get("condition")) {
            Some(Value::String(s)) => s,
            Some(_) => return Err(BlueprintError::at(path, "must be an expression string")),
            None => {
                return Err(BlueprintError::at(
                    path,
                    "a loop-controller needs params.condition (truthy = continue, falsy = break)",
                ));
            }
        };
        let expr = Expression::parse(kind, source).map_err(|e| {
            BlueprintError::at(&path, format!("invalid {kind} expression {source:?}: {e}"))
        })?;
        out.insert(node.id.clone(), expr);
    }
    Ok(out)
}

/// Every `loop-controller` needs a `continue` edge back into its body.
fn check_loops(def: &WorkflowBlueprint, graph: &Graph) -> Result<(), BlueprintError> {
    for (i, node) in def.nodes.iter().enumerate() {
        if node.uses != graph::LOOP_CONTROLLER {
            continue;
        }
        let has_continue = graph.outgoing.get(i).is_some_and(|edges| {
            edges.iter().any(|&e| {
                def.edges.get(e).and_then(|edge| edge.action.as_deref())
                    == Some(graph::CONTINUE_ACTION)
            })
        });
        if !has_continue {
            return Err(BlueprintError::at(
                format!("nodes[{i}]"),
                format!(
                    "loop-controller {} has no outgoing edge with action \"continue\"",
                    quote(&node.id)
                ),
            ));
        }
    }
    Ok(())
}

/// Cycles must pass through a `loop-controller` (which re-arms the body each pass).
fn check_cycles(def: &WorkflowBlueprint, graph: &Graph) -> Result<(), BlueprintError> {
    let is_controller = |i: usize| {
        def.nodes
            .get(i)
            .is_some_and(|n| n.uses == graph::LOOP_CONTROLLER)
    };
    let Some(cycle) = graph.find_cycle(def, &is_controller) else {
        return Ok(());
    };
    let mut names: Vec<String> = cycle
        .nodes
        .iter()
        .filter_map(|&i| def.nodes.get(i).map(|n| quote(&n.id)))
        .collect();
    if let Some(first) = names.first().cloned() {
        names.push(first);
    }
    Err(BlueprintError::at(
        format!("edges[{}]", cycle.closing_edge),
        format!(
            "cycle {} does not pass through a loop-controller; model it as a loop or set \
             metadata \"allowCycles\": true",
            names.join(" -> ")
        ),
    ))
}

/// A node id quoted for messages (JSON string syntax, so odd characters stay visible).
pub(crate) fn quote(id: &str) -> String {
    serde_json::to_string(id).unwrap_or_else(|_| format!("'{id}'"))
}

#[cfg(test)]
mod tests;
