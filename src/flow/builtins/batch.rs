//! `batch-scatter` and `batch-gather` (spec §3): dynamic fan-out over an array.
//!
//! Scatter (input must be an array; `params.workerUsesKey` and `params.gatherNodeId`
//! required) writes each item to `_batch.<scatter>_<uuid>_item_<i>` and returns one dynamic
//! worker node per item, `{id: "<workerUsesKey>_<uuid>_<i>", uses: workerUsesKey, inputs: that
//! key}`. It sets `<gather>_allWorkerIds` to this batch's worker ids (a scatter inside a loop
//! starts a fresh batch each pass), sets `<gather>_hasMore = false`
//! and outputs `{gatherNodeId, hasMore: false}`; the runtime makes the gather node wait for
//! every worker. `params.chunkSize` is accepted but all items are scheduled at once (the
//! runtime's concurrency bound limits how many run together), which avoids Flowcraft's broken
//! chunking (I3).
//!
//! Gather collects `_outputs.<worker>` in worker order, writes the array to
//! `params.outputKey` (default: its own id) and outputs it.

use crate::flow::blueprint::NodeDefinition;
use crate::flow::node::{NodeContext, NodeError, NodeResult};
use serde_json::{Value, json};

fn required_str(ctx: &NodeContext, name: &str) -> Result<String, NodeError> {
    match ctx.params().get(name) {
        Some(Value::String(s)) if !s.is_empty() => Ok(s.clone()),
        _ => Err(NodeError::fatal(format!(
            "batch node '{}' needs params.{name} (a non-empty string)",
            ctx.node_id()
        ))),
    }
}

fn kind(value: Option<&Value>) -> &'static str {
    match value {
        None => "nothing",
        Some(Value::Null) => "null",
        Some(Value::Bool(_)) => "a boolean",
        Some(Value::Number(_)) => "a number",
        Some(Value::String(_)) => "a string",
        Some(Value::Array(_)) => "an array",
        Some(Value::Object(_)) => "an object",
    }
}

/// The `batch-scatter` node.
pub async fn scatter(ctx: NodeContext) -> Result<NodeResult, NodeError> {
    let Some(Value::Array(items)) = ctx.input() else {
        return Err(NodeError::fatal(format!(
            "batch-scatter '{}' needs an array input, got {}",
            ctx.node_id(),
            kind(ctx.input())
        )));
    };
    let worker_uses = required_str(&ctx, "workerUsesKey")?;
    let gather_id = required_str(&ctx, "gatherNodeId")?;
    let batch = ctx.environment().sources.new_id().replace('-', "");
    let scatter_id = ctx.node_id().to_string();
    let mut workers = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let item_key = format!("_batch.{scatter_id}_{batch}_item_{i}");
        ctx.context().set(item_key.clone(), item.clone());
        let definition = json!({
            "id": format!("{worker_uses}_{batch}_{i}"),
            "uses": worker_uses,
            "inputs": item_key,
        });
        let node: NodeDefinition = serde_json::from_value(definition).map_err(|e| {
            NodeError::fatal(format!(
                "batch-scatter '{scatter_id}': cannot build a worker node: {e}"
            ))
        })?;
        workers.push(node);
    }
    let all_ids: Vec<Value> = workers
        .iter()
        .map(|w| Value::String(w.id.clone()))
        .collect();
    ctx.context()
        .set(format!("{gather_id}_allWorkerIds"), Value::Array(all_ids));
    ctx.context()
        .set(format!("{scatter_id}_currentIndex"), json!(items.len()));
    ctx.context()
        .set(format!("{gather_id}_hasMore"), Value::Bool(false));
    Ok(NodeResult {
        output: Some(json!({"gatherNodeId": gather_id, "hasMore": false})),
        action: None,
        dynamic_nodes: workers,
    })
}

/// The `batch-gather` node.
pub async fn gather(ctx: NodeContext) -> Result<NodeResult, NodeError> {
    let gather_id = ctx.node_id().to_string();
    let ids = match ctx.context().get(&format!("{gather_id}_allWorkerIds")) {
        Some(Value::Array(ids)) => ids,
        _ => Vec::new(),
    };
    let results: Vec<Value> = ids
        .iter()
        .filter_map(Value::as_str)
        .filter_map(|id| ctx.context().get(&format!("_outputs.{id}")))
        .collect();
    let output_key = match ctx.params().get("outputKey") {
        Some(Value::String(key)) if !key.is_empty() => key.clone(),
        _ => gather_id,
    };
    let output = Value::Array(results);
    ctx.context().set(output_key, output.clone());
    Ok(NodeResult::output(output))
}
