//! Mode parity on Azure: the shared suite in `tests/parity/` (every fixture blueprint, fan-out
//! and fan-in, `any` joins, retries with delay, fallbacks, sleep, wait + resume, subflows,
//! loops, batches) runs in-process and through the distributed core on Azure Queue Storage
//! (Azurite), Cosmos DB (the emulator) and Redis, each distributed run on its own queue and
//! database, and the two modes must agree. Switched on by `FLOWCRAFT_EMULATORS=1`
//! (scripts/test.sh).

mod parity;
mod support;

use flowcraft_azure::adapter::{Settings, connect};
use flowcraft_azure::distributed::core::Backends;
use flowcraft_azure::wire::reqwest_transport::ReqwestTransport;
use std::sync::Arc;
use std::time::Duration;

/// Azure backends on a fresh queue and database (the local stack's connection settings).
async fn backends_for_parity() -> Backends {
    let tag = uuid::Uuid::new_v4().simple().to_string();
    let queue = format!("parity-{}", &tag[..12]);
    let database = format!("parity-{}", &tag[..12]);
    let settings = Settings::from_lookup(|name| match name {
        "FLOWCRAFT_QUEUE" => Some(queue.clone()),
        "FLOWCRAFT_DATABASE" => Some(database.clone()),
        _ => std::env::var(name).ok(),
    })
    .expect("the local stack's settings (scripts/emulators.sh env)");
    let transport = Arc::new(ReqwestTransport::new(Duration::from_secs(30)).unwrap());
    let backends = connect(&settings, transport)
        .await
        .expect("connect to the local stack");
    backends
        .ensure_resources()
        .await
        .expect("create the queue and database");
    backends.backends
}

/// The suite runs only against the emulators (and fails loudly when they are down).
fn parity_enabled(test: &str) -> bool {
    if !support::emulators_enabled(test) {
        return false;
    }
    support::require_reachable("Azurite", &support::queue_endpoint());
    support::require_reachable("the Cosmos emulator", &support::cosmos_endpoint());
    true
}
