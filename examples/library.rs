//! Using flowcraft-azure as a library: register a function node, load a blueprint from a JSON
//! string, run it in-process with `FlowRuntime`, and print the status and an output.
//!
//! Run with `cargo run --example library`.

use flowcraft_azure::flow::blueprint::Blueprint;
use flowcraft_azure::flow::execute::Environment;
use flowcraft_azure::flow::node::{NodeRegistry, NodeResult};
use flowcraft_azure::flow::runtime::FlowRuntime;
use std::sync::Arc;

/// An order flow: validate the order, charge the card (our own node), then confirm.
const ORDER: &str = include_str!("order.json");

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // The built-in nodes (sleep, wait, subflow, ...) plus our own function node.
    let mut registry = NodeRegistry::with_builtins();
    registry.register("charge-card", |ctx| async move {
        let amount = ctx.input().and_then(|v| v.get("amount")).cloned();
        Ok(NodeResult::output(serde_json::json!({ "charged": amount })))
    });

    // Loading validates the blueprint; an invalid one is an error naming the JSON path.
    let blueprint = Arc::new(Blueprint::from_json(ORDER)?);
    let env = Environment::new(registry);

    let mut initial = serde_json::Map::new();
    initial.insert(
        "order".into(),
        serde_json::json!({ "amount": 42, "item": "book" }),
    );
    let result = FlowRuntime::new(env).run(blueprint, initial).await;

    println!("status: {}", result.status);
    println!("charge: {:?}", result.context.get("_outputs.charge"));
    println!("confirm: {:?}", result.context.get("_outputs.confirm"));
    for error in &result.errors {
        println!("error in {}: {}", error.node_id, error.message);
    }
    Ok(())
}
