//! `loop-controller`: evaluates `params.condition` against the whole context (with the
//! blueprint's evaluator). Truthy: action `continue`, no output; falsy: action `break`, output
//! `null`. The runtime re-arms the loop body each time the controller fires (spec 2.5).

use crate::flow::expr::{Expression, truthy};
use crate::flow::graph::CONTINUE_ACTION;
use crate::flow::node::{NodeContext, NodeError, NodeResult};
use serde_json::Value;

/// The `loop-controller` node.
pub async fn loop_controller(ctx: NodeContext) -> Result<NodeResult, NodeError> {
    let source = match ctx.params().get("condition") {
        Some(Value::String(s)) => s.clone(),
        _ => {
            return Err(NodeError::fatal(format!(
                "loop-controller '{}' needs params.condition (an expression string)",
                ctx.node_id()
            )));
        }
    };
    let parsed;
    let expression = match ctx.blueprint().loop_condition(ctx.node_id()) {
        Some(expression) => expression,
        None => {
            parsed = Expression::parse(ctx.blueprint().evaluator(), &source).map_err(|e| {
                NodeError::fatal(format!(
                    "loop-controller '{}': invalid condition '{source}': {e}",
                    ctx.node_id()
                ))
            })?;
            &parsed
        }
    };
    let holds = ctx
        .context()
        .with_view(|scope| truthy(expression.evaluate(scope).as_ref()));
    if holds {
        Ok(NodeResult::empty().with_action(CONTINUE_ACTION))
    } else {
        Ok(NodeResult::output(Value::Null).with_action("break"))
    }
}
