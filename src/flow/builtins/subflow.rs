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
//! - any other unfinished status fails the node with the sub-run's first error;
//! - subflows nest at most [`MAX_SUBFLOW_DEPTH`] deep, and one top-level subflow node starts
//!   at most [`MAX_NESTED_SUBFLOW_RUNS`] sub-runs in all: a blueprint that (directly or
//!   indirectly) runs itself without a base case fails with a fatal error when a limit trips,
//!   and every enclosing subflow node then fails without retrying, instead of recursing
//!   forever.
//!
//! [`BlueprintRegistry`]: crate::flow::execute::BlueprintRegistry

use crate::flow::blueprint::Blueprint;
use crate::flow::context::{AwaitReason, AwaitingDetails};
use crate::flow::execute::Environment;
use crate::flow::node::{NodeContext, NodeError, NodeResult};
use crate::flow::runtime::{FlowRuntime, RunStatus, WorkflowResult};
use serde_json::{Map, Value};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

/// How deep subflows may nest (the top-level run is depth 0).
pub const MAX_SUBFLOW_DEPTH: usize = 32;

/// How many sub-runs one top-level subflow node may start in total, at every depth (a
/// recursive blueprint that branches would otherwise start exponentially many).
pub const MAX_NESTED_SUBFLOW_RUNS: usize = 10_000;

/// Where a sub-run sits in a tree of nested sub-runs, carried as a private dependency so it
/// reaches nested subflows (in-process and on distributed workers) without touching the
/// context. `started` and `exceeded` are shared by the whole tree below one top-level subflow
/// node; `exceeded` is set when a limit trips, so the enclosing subflow nodes then fail
/// fatally instead of retrying.
#[derive(Debug, Clone)]
struct Nesting {
    depth: usize,
    started: Arc<AtomicUsize>,
    exceeded: Arc<AtomicBool>,
}

/// The environment for a sub-run that `node_id` starts, one level deeper than `env`; a fatal
/// error when that would exceed [`MAX_SUBFLOW_DEPTH`] or [`MAX_NESTED_SUBFLOW_RUNS`].
pub fn nested_environment(
    env: &Environment,
    node_id: &str,
    blueprint_id: &str,
) -> Result<Environment, NodeError> {
    let nesting = match env.dependencies.get::<Nesting>() {
        Some(parent) => Nesting {
            depth: parent.depth + 1,
            started: parent.started.clone(),
            exceeded: parent.exceeded.clone(),
        },
        None => Nesting {
            depth: 1,
            started: Arc::new(AtomicUsize::new(0)),
            exceeded: Arc::new(AtomicBool::new(false)),
        },
    };
    let started = nesting.started.fetch_add(1, Ordering::Relaxed) + 1;
    let problem = if nesting.depth > MAX_SUBFLOW_DEPTH {
        Some(format!(
            "subflows are nested more than {MAX_SUBFLOW_DEPTH} deep"
        ))
    } else if started > MAX_NESTED_SUBFLOW_RUNS {
        Some(format!(
            "more than {MAX_NESTED_SUBFLOW_RUNS} nested sub-runs were started"
        ))
    } else {
        None
    };
    if let Some(problem) = problem {
        nesting.exceeded.store(true, Ordering::Relaxed);
        return Err(NodeError::fatal(format!(
            "subflow node '{node_id}': {problem} (does blueprint '{blueprint_id}' run itself \
             without a way to stop?)"
        )));
    }
    let dependencies = env.dependencies.clone().with(nesting);
    Ok(env.clone().with_dependencies(dependencies))
}

/// True when a sub-run started with `sub_env` (or one below it) hit a nesting limit.
fn nesting_exceeded(sub_env: &Environment) -> bool {
    sub_env
        .dependencies
        .get::<Nesting>()
        .is_some_and(|n| n.exceeded.load(Ordering::Relaxed))
}

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

/// The error for a sub-run (run in `sub_env`, from [`nested_environment`]) that neither
/// completed nor paused; fatal when the sub-run hit the nesting limit.
pub fn incomplete_error(
    sub_env: &Environment,
    blueprint_id: &str,
    sub: &WorkflowResult,
) -> NodeError {
    let first = sub
        .errors
        .first()
        .map(|e| format!("{} (node '{}')", e.message, e.node_id))
        .unwrap_or_else(|| "none recorded".to_string());
    let message = format!(
        "Sub-workflow '{blueprint_id}' did not complete successfully. Status: {}. Error: {first}",
        sub.status
    );
    if nesting_exceeded(sub_env) {
        NodeError::fatal(message)
    } else {
        NodeError::new(message)
    }
}

/// The `subflow` node.
pub async fn subflow(ctx: NodeContext) -> Result<NodeResult, NodeError> {
    let sub = sub_blueprint(ctx.environment(), ctx.node_id(), ctx.params())?;
    let initial = ctx
        .context()
        .with_view(|parent| sub_context(ctx.params(), parent, ctx.input(), &sub));
    let sub_env = nested_environment(ctx.environment(), ctx.node_id(), sub.id())?;
    let runtime = FlowRuntime::new(sub_env.clone());
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
        _ => Err(incomplete_error(&sub_env, sub.id(), &result)),
    }
}
