//! Utility nodes for trying blueprints from the command line without writing code:
//!
//! | uses | behaviour |
//! |---|---|
//! | `echo` | output = input |
//! | `set` | writes every entry of `params.values` (an object) into the context; output = input |
//! | `action` | output = input, action = `params.action` |
//! | `fail` | fails with `params.message`; with `params.times = N` it fails attempts 1..N, then succeeds with output = input |
//! | `sum` | adds the numbers of an array or object input |
//! | `work` | waits `params.ms` milliseconds (default 0) inside the process, then echoes |

use super::node::{NodeContext, NodeError, NodeRegistry, NodeResult};
use serde_json::{Number, Value};
use std::time::Duration;

/// Registers the utility nodes into `registry`.
pub fn register_utilities(registry: &mut NodeRegistry) {
    registry.register("echo", echo);
    registry.register("set", set);
    registry.register("action", action);
    registry.register("fail", fail);
    registry.register("sum", sum);
    registry.register("work", work);
}

fn echo_result(ctx: &NodeContext) -> NodeResult {
    NodeResult {
        output: ctx.input().cloned(),
        ..NodeResult::default()
    }
}

/// `echo`: output = input.
pub async fn echo(ctx: NodeContext) -> Result<NodeResult, NodeError> {
    Ok(echo_result(&ctx))
}

/// `set`: writes `params.values` into the context.
pub async fn set(ctx: NodeContext) -> Result<NodeResult, NodeError> {
    let Some(Value::Object(values)) = ctx.params().get("values") else {
        return Err(NodeError::fatal(format!(
            "set node '{}' needs params.values (an object of context keys to values)",
            ctx.node_id()
        )));
    };
    for (key, value) in values {
        ctx.context().set(key.clone(), value.clone());
    }
    Ok(echo_result(&ctx))
}

/// `action`: output = input, action = `params.action`.
pub async fn action(ctx: NodeContext) -> Result<NodeResult, NodeError> {
    let Some(Value::String(name)) = ctx.params().get("action") else {
        return Err(NodeError::fatal(format!(
            "action node '{}' needs params.action (a string)",
            ctx.node_id()
        )));
    };
    Ok(echo_result(&ctx).with_action(name.clone()))
}

/// `fail`: fails with `params.message`, or only for the first `params.times` attempts.
pub async fn fail(ctx: NodeContext) -> Result<NodeResult, NodeError> {
    let message = match ctx.params().get("message") {
        Some(Value::String(m)) => m.clone(),
        _ => format!("node '{}' failed on purpose", ctx.node_id()),
    };
    match ctx.params().get("times").and_then(Value::as_u64) {
        Some(times) if u64::from(ctx.attempt()) > times => Ok(echo_result(&ctx)),
        _ => Err(NodeError::new(message)),
    }
}

/// `sum`: adds the numbers in an array or object input.
pub async fn sum(ctx: NodeContext) -> Result<NodeResult, NodeError> {
    let values: Vec<&Value> = match ctx.input() {
        Some(Value::Array(items)) => items.iter().collect(),
        Some(Value::Object(map)) => map.values().collect(),
        _ => {
            return Err(NodeError::fatal(format!(
                "sum node '{}' needs an array or object of numbers as input",
                ctx.node_id()
            )));
        }
    };
    let mut int_total: Option<i64> = Some(0);
    let mut float_total = 0.0_f64;
    for value in values {
        let Value::Number(n) = value else {
            return Err(NodeError::fatal(format!(
                "sum node '{}': {value} is not a number",
                ctx.node_id()
            )));
        };
        int_total = match (int_total, n.as_i64()) {
            (Some(total), Some(i)) => total.checked_add(i),
            _ => None,
        };
        float_total += n.as_f64().unwrap_or(0.0);
    }
    let output = match int_total {
        Some(total) => Value::Number(total.into()),
        None => Number::from_f64(float_total)
            .map(Value::Number)
            .ok_or_else(|| {
                NodeError::fatal(format!(
                    "sum node '{}': the sum is not finite",
                    ctx.node_id()
                ))
            })?,
    };
    Ok(NodeResult::output(output))
}

/// `work`: waits `params.ms` (stops early when the run is cancelled), then echoes.
pub async fn work(ctx: NodeContext) -> Result<NodeResult, NodeError> {
    let ms = ctx.params().get("ms").and_then(Value::as_u64).unwrap_or(0);
    tokio::select! {
        _ = ctx.cancellation().cancelled() => Err(NodeError::fatal("Workflow cancelled")),
        _ = tokio::time::sleep(Duration::from_millis(ms)) => Ok(echo_result(&ctx)),
    }
}
