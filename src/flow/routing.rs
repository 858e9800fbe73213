//! Routing and inputs (spec 2.6 / 2.7): which edges a finished node takes
//! (`determineNextNodes` + `applyEdgeTransform`), and how a node's input is resolved from the
//! context (`resolveNodeInput`). Pure functions of the blueprint, the result and the context;
//! the blueprint is never modified.
//!
//! Flowcraft rewrites `target.inputs = "_inputs.<target>"` whenever a transform edge is taken
//! (F14). Instead, [`resolve_input`] computes the effective key: a node that has `inputs` AND
//! an incoming transform edge from a completed node reads `_inputs.<id>` whenever that key is
//! present.

use super::blueprint::{Blueprint, EdgeDefinition, NodeInputs};
use super::expr::{Scope, truthy};
use super::graph::LOOP_CONTROLLER;
use super::node::NodeResult;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::cell::OnceCell;

/// One taken edge: `target` is activated by `source`; `input` is the value for `_inputs.<target>`.
///
/// For an edge inherited by a fallback node, `source` is the node that failed (the edge's own
/// source), so joins count the fallback's completion as the failed node's arrival.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Activation {
    /// Index into `blueprint.edges()`.
    pub edge: usize,
    /// The edge's source node.
    pub source: String,
    /// The activated node.
    pub target: String,
    /// The value for `_inputs.<target>` (`None` = `undefined`: remove the key).
    pub input: Option<Value>,
}

/// Condition scope: `{...context, result}` without copying the context.
struct ConditionScope<'a> {
    context: &'a Map<String, Value>,
    result: &'a Value,
}

impl Scope for ConditionScope<'_> {
    fn lookup(&self, key: &str) -> Option<&Value> {
        if key == "result" {
            Some(self.result)
        } else {
            self.context.get(key)
        }
    }
}

fn same_edge(a: &EdgeDefinition, b: &EdgeDefinition) -> bool {
    a.source == b.source
        && a.target == b.target
        && a.action == b.action
        && a.condition == b.condition
}

/// determineNextNodes + applyEdgeTransform: which edges `node_id` (with `result`) takes, given
/// the context (conditions see {...context, result}); includes fallback-inherited edges.
///
/// `context` should already hold this node's committed output and writes (as both runtimes
/// commit before routing), so conditions can read `<nodeId>`.
pub fn route(
    blueprint: &Blueprint,
    node_id: &str,
    result: &NodeResult,
    context: &Map<String, Value>,
) -> Vec<Activation> {
    let edges = blueprint.edges();
    let mut candidates: Vec<usize> = Vec::new();
    let own = blueprint.outgoing(node_id);
    let inherited = blueprint
        .fallback_sources(node_id)
        .iter()
        .flat_map(|source| blueprint.outgoing(source));
    for index in own.into_iter().chain(inherited) {
        let Some(edge) = edges.get(index) else {
            continue;
        };
        let duplicate = candidates
            .iter()
            .any(|&c| edges.get(c).is_some_and(|other| same_edge(other, edge)));
        if !duplicate {
            candidates.push(index);
        }
    }

    // `result` as conditions see it, serialized only when a condition is evaluated.
    let result_value = OnceCell::new();
    let holds = |index: usize| match blueprint.condition(index) {
        None => true,
        Some(expr) => {
            let scope = ConditionScope {
                context,
                result: result_value
                    .get_or_init(|| serde_json::to_value(result).unwrap_or(Value::Null)),
            };
            truthy(expr.evaluate(&scope).as_ref())
        }
    };
    let action_of = |index: usize| edges.get(index).and_then(|e| e.action.as_deref());

    let mut taken: Vec<usize> = Vec::new();
    let is_loop_controller = blueprint
        .node(node_id)
        .is_some_and(|n| n.uses == LOOP_CONTROLLER);
    if is_loop_controller {
        taken = candidates
            .iter()
            .copied()
            .filter(|&i| blueprint.condition(i).is_some() && holds(i))
            .collect();
    }
    if taken.is_empty()
        && let Some(action) = result.action.as_deref()
    {
        taken = candidates
            .iter()
            .copied()
            .filter(|&i| action_of(i) == Some(action) && holds(i))
            .collect();
    }
    if taken.is_empty() {
        taken = candidates
            .iter()
            .copied()
            .filter(|&i| action_of(i).is_none() && holds(i))
            .collect();
    }

    taken
        .into_iter()
        .filter_map(|index| {
            let edge = edges.get(index)?;
            Some(Activation {
                edge: index,
                source: edge.source.clone(),
                target: edge.target.clone(),
                input: edge_input(blueprint, index, edge, result, context),
            })
        })
        .collect()
}

/// Writes what a taken edge delivers into the run context: `_inputs.<target>` = `input`,
/// or removes the key when `input` is `undefined`. Shared by the in-process runtime and the
/// distributed core.
pub fn deliver_input(context: &mut Map<String, Value>, target: &str, input: Option<Value>) {
    let key = format!("_inputs.{target}");
    match input {
        Some(value) => {
            context.insert(key, value);
        }
        None => {
            context.remove(&key);
        }
    }
}

/// applyEdgeTransform (spec 2.7): the value delivered to `_inputs.<target>`.
fn edge_input(
    blueprint: &Blueprint,
    index: usize,
    edge: &EdgeDefinition,
    result: &NodeResult,
    context: &Map<String, Value>,
) -> Option<Value> {
    let mut value = result.output.clone();
    let Some(transform) = blueprint.transform(index) else {
        return value;
    };
    if let Some(NodeInputs::Key(source_key)) =
        blueprint.node(&edge.target).and_then(|t| t.inputs.as_ref())
    {
        let key = if source_key.starts_with('_') {
            source_key.clone()
        } else {
            format!("_outputs.{source_key}")
        };
        if *source_key != edge.source
            && let Some(v) = context.get(&key)
        {
            value = Some(v.clone());
        }
    }
    let mut scope = Map::new();
    if let Some(v) = value {
        scope.insert("input".to_string(), v);
    }
    scope.insert("context".to_string(), Value::Object(context.clone()));
    transform.evaluate(&scope)
}

/// resolveNodeInput (spec 2.7) given the context.
///
/// - no `inputs`: `_inputs.<id>`;
/// - `inputs` present, `_inputs.<id>` set, and some incoming edge with a transform comes from
///   a node that has completed: `_inputs.<id>` (replaces Flowcraft's rewrite of the
///   definition once a transform edge was taken; so a loop's first entry through a plain
///   edge still reads `inputs`);
/// - a string: resolved as below; an object: each value resolved (undefined values left out).
///
/// One string `v`: starting with `_` reads `ctx[v]`; containing a dot reads the path after the
/// first dot inside `_outputs.<base>` (no fallback to a plain key with a dot); otherwise
/// `_outputs.<v>` if present, else `ctx[v]`.
pub fn resolve_input(
    blueprint: &Blueprint,
    node_id: &str,
    context: &Map<String, Value>,
) -> Option<Value> {
    let delivered_key = format!("_inputs.{node_id}");
    let inputs = match super::execute::node_definition(blueprint, node_id, context) {
        Some(node) => node.inputs.clone(),
        None => None,
    };
    let Some(inputs) = inputs else {
        return context.get(&delivered_key).cloned();
    };
    // Flowcraft switches a node to `_inputs.<id>` once a transform edge into it was taken;
    // approximated without state as "a transform edge whose source has completed".
    let transformed = blueprint.incoming(node_id).into_iter().any(|i| {
        blueprint.transform(i).is_some()
            && blueprint
                .edges()
                .get(i)
                .is_some_and(|e| context.contains_key(&output_keys(&e.source)[0]))
    });
    if transformed && let Some(v) = context.get(&delivered_key) {
        return Some(v.clone());
    }
    match inputs {
        NodeInputs::Key(key) => resolve_key(&key, context),
        NodeInputs::Map(map) => {
            let mut out = Map::new();
            for (name, key) in map {
                if let Some(v) = resolve_key(&key, context) {
                    out.insert(name, v);
                }
            }
            Some(Value::Object(out))
        }
    }
}

fn resolve_key(key: &str, context: &Map<String, Value>) -> Option<Value> {
    if key.starts_with('_') {
        return context.get(key).cloned();
    }
    if let Some((base, path)) = key.split_once('.') {
        let output = context.get(&format!("_outputs.{base}"))?;
        return super::expr::read_path(output, path);
    }
    context
        .get(&format!("_outputs.{key}"))
        .or_else(|| context.get(key))
        .cloned()
}

/// Keys written for a finished node: `_outputs.<id>` and `<id>` (both, spec F18).
pub fn output_keys(node_id: &str) -> [String; 2] {
    [format!("_outputs.{node_id}"), node_id.to_string()]
}
