//! `subflow`: runs another blueprint (from the environment's [`BlueprintRegistry`]) inside this
//! node, with a fresh context and the same environment (spec §3).
//!
//! - `params.blueprintId` (required; missing or unknown is a fatal error);
//! - `params.inputs` `{subKey: parentKey}`: the sub-context gets `parent[parentKey]`, else
//!   `parent["_outputs.<parentKey>"]`; without `inputs` the node's input is delivered as
//!   `_inputs.<start>` to every start node of the sub-blueprint;
//! - `params.outputs` `{parentKey: subKey}`: writes `parent[parentKey] = sub["_outputs.<subKey>"]`
//!   (else `sub[subKey]`) and the output is the whole sub-context; without `outputs` the output
//!   is the single terminal node's output, or `{terminalId: output}` for several terminals;
//! - an awaiting sub-run marks this node awaiting with the sub-context as `subflow_state`
//!   (stored as `_subflowState.<id>`); `FlowRuntime::resume` resumes it;
//! - any other unfinished status fails the node with the sub-run's first error.
//!
//! [`BlueprintRegistry`]: crate::flow::execute::BlueprintRegistry

use crate::flow::blueprint::Blueprint;
use crate::flow::context::{AwaitReason, AwaitingDetails};
use crate::flow::execute::Environment;
use crate::flow::node::{NodeContext, NodeError, NodeResult};
use crate::flow::runtime::{FlowRuntime, RunStatus, WorkflowResult};
use serde_json::{Map, Value};
use std::sync::Arc;

/// Looks up the sub-blueprint named by `params.blueprintId`.
pub fn sub_blueprint(
    env: &Environment,
    node_id: &str,
    params: &Map<String, Value>,
) -> Result<Arc<Blueprint>, NodeError> {
    let Some(id) = params.get("blueprintId").and_then(Value::as_str) else {
        return Err(NodeError::fatal(format!(
            "subflow node '{node_id}' needs params.blueprintId"
        )));
    };
    env.blueprints.get(id).ok_or_else(|| {
        NodeError::fatal(format!(
            "subflow node '{node_id}': blueprint '{id}' not found; register it (CLI: --blueprints DIR)"
        ))
    })
}

/// The initial sub-context (see the module docs).
pub fn sub_context(
    params: &Map<String, Value>,
    parent: &Map<String, Value>,
    input: Option<&Value>,
    sub: &Blueprint,
) -> Map<String, Value> {
    let mut initial = Map::new();
    match params.get("inputs") {
        Some(Value::Object(mapping)) => {
            for (sub_key, parent_key) in mapping {
                let Some(parent_key) = parent_key.as_str() else {
                    continue;
                };
                let value = parent
                    .get(parent_key)
                    .or_else(|| parent.get(&format!("_outputs.{parent_key}")));
                if let Some(value) = value {
                    initial.insert(sub_key.clone(), value.clone());
                }
            }
        }
        _ => {
            if let Some(input) = input {
                for start in sub.start_nodes() {
                    initial.insert(format!("_inputs.{start}"), input.clone());
                }
            }
        }
    }
    initial
}

/// The node output and the parent-context writes for a completed sub-run.
pub fn subflow_output(
    params: &Map<String, Value>,
    sub: &Blueprint,
    sub_context: &Map<String, Value>,
) -> (Option<Value>, Vec<(String, Value)>) {
    if let Some(Value::Object(mapping)) = params.get("outputs") {
        let mut writes = Vec::new();
        for (parent_key, sub_key) in mapping {
            let Some(sub_key) = sub_key.as_str() else {
                continue;
            };
            let value = sub_context
                .get(&format!("_outputs.{sub_key}"))
                .or_else(|| sub_context.get(sub_key));
            if let Some(value) = value {
                writes.push((parent_key.clone(), value.clone()));
            }
        }
        return (Some(Value::Object(sub_context.clone())), writes);
    }
    let output_of = |id: &str| sub_context.get(&format!("_outputs.{id}")).cloned();
    let output = match sub.terminal_nodes() {
        [single] => output_of(single),
        terminals => Some(Value::Object(
            terminals
                .iter()
                .filter_map(|id| output_of(id).map(|v| (id.clone(), v)))
                .collect(),
        )),
    };
    (output, Vec::new())
}

/// The error for a sub-run that neither completed nor paused.
pub fn incomplete_error(blueprint_id: &str, sub: &WorkflowResult) -> NodeError {
    let first = sub
        .errors
        .first()
        .map(|e| format!("{} (node '{}')", e.message, e.node_id))
        .unwrap_or_else(|| "none recorded".to_string());
    NodeError::new(format!(
        "Sub-workflow '{blueprint_id}' did not complete successfully. Status: {}. Error: {first}",
        sub.status
    ))
}

/// The `subflow` node.
pub async fn subflow(ctx: NodeContext) -> Result<NodeResult, NodeError> {
    let sub = sub_blueprint(ctx.environment(), ctx.node_id(), ctx.params())?;
    let initial = sub_context(ctx.params(), &ctx.context().to_json(), ctx.input(), &sub);
    let runtime = FlowRuntime::new(ctx.environment().clone());
    let result = runtime
        .run_with(sub.clone(), initial, ctx.cancellation().child_token())
        .await;
    match result.status {
        RunStatus::Completed => {
            let (output, writes) = subflow_output(ctx.params(), &sub, &result.context);
            for (key, value) in writes {
                ctx.context().set(key, value);
            }
            Ok(NodeResult {
                output,
                ..NodeResult::default()
            })
        }
        RunStatus::Awaiting => {
            ctx.mark_awaiting(AwaitingDetails {
                reason: AwaitReason::ExternalEvent,
                wake_up_at: None,
                subflow_state: Some(Value::Object(result.context)),
            });
            Ok(NodeResult::empty())
        }
        _ => Err(incomplete_error(sub.id(), &result)),
    }
}
