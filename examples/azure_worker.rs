//! A worker of the fleet as a library user writes it: register your own node function, build
//! the three backends (Queue Storage, Cosmos DB, Redis) from the environment, start
//! `AzureQueueAdapter`, and stop it gracefully on Ctrl-C or SIGTERM. With `--submit` it also
//! starts one run of the order blueprint and prints its result, then stops.
//!
//! Local stack: `eval "$(scripts/emulators.sh env)"` then
//! `cargo run --example azure_worker -- --submit`.

use flowcraft_azure::adapter::{AzureQueueAdapter, Settings, connect};
use flowcraft_azure::distributed::client::Client;
use flowcraft_azure::distributed::polling::shutdown_on_signals;
use flowcraft_azure::flow::blueprint::Blueprint;
use flowcraft_azure::flow::execute::{BlueprintRegistry, Environment};
use flowcraft_azure::flow::node::{NodeRegistry, NodeResult};
use flowcraft_azure::wire::reqwest_transport::ReqwestTransport;
use std::sync::Arc;
use std::time::Duration;

/// An order flow: validate the order, charge the card (our own node), then confirm.
const ORDER: &str = include_str!("order.json");

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Nodes: the built-ins (sleep, wait, subflow, ...) plus our own.
    let mut nodes = NodeRegistry::with_builtins();
    nodes.register("charge-card", |ctx| async move {
        let amount = ctx.input().and_then(|v| v.get("amount")).cloned();
        Ok(NodeResult::output(serde_json::json!({ "charged": amount })))
    });
    let mut blueprints = BlueprintRegistry::new();
    blueprints.insert(Blueprint::from_json(ORDER)?);
    let env = Environment::new(nodes).with_blueprints(blueprints);

    // Connection strings, names and tuning from the environment (a missing one is an error
    // naming the variable); the queues and containers are created when missing.
    let settings = Settings::from_env()?;
    let transport = Arc::new(ReqwestTransport::new(Duration::from_secs(30))?);
    let backends = connect(&settings, transport).await?;
    for created in backends.ensure_resources().await? {
        println!("{created}");
    }

    let shutdown = shutdown_on_signals()?;
    let client = Client::new(backends.backends.clone(), env.blueprints.clone());
    let worker =
        tokio::spawn(AzureQueueAdapter::new(env, backends, &settings).run(shutdown.clone()));

    if std::env::args().any(|a| a == "--submit") {
        let mut input = serde_json::Map::new();
        input.insert("order".into(), serde_json::json!({ "amount": 42 }));
        let run_id = client.start_run("order", input).await?;
        let result = client.wait_for(&run_id, Duration::from_secs(60)).await?;
        println!(
            "run {run_id}: {}, confirm = {}",
            result.status,
            result
                .context
                .get("_outputs.confirm")
                .cloned()
                .unwrap_or_default()
        );
        shutdown.cancel();
    } else {
        println!("worker running; Ctrl-C stops it");
    }
    worker.await??;
    Ok(())
}
