//! A hostile network on the local stack: 3 `flowcraft-azure worker` processes reach Azurite
//! and the Cosmos emulator only through fault-injecting proxies (tests/chaos_common/proxy.rs)
//! that answer a seeded share of requests (default 20 %, `CHAOS_FAULT_RATE`) with 429 +
//! `x-ms-retry-after-ms`, 503 or 500, reset the connection before forwarding or AFTER the
//! service applied the request, add 0-500 ms of latency, or cut the response body short.
//! The mixed workload must end exactly as without faults (same end checks as the killed
//! worker test). Prints the faults by kind and the wall time against a run without the proxy
//! (informational). Switched on by `FLOWCRAFT_EMULATORS=1`; `CHAOS_SOAK=1` runs the full
//! workload, `CHAOS_SEED=<n>` replays a seed.

mod chaos_common;
mod support;

use chaos_common::proxy::FaultProxy;
use chaos_common::{Fleet, Workload, drive, print_runs, soak, verify};
use std::time::Duration;

fn authority(url: &str) -> String {
    let rest = url.split("://").nth(1).unwrap_or(url);
    format!("http://{}", rest.split('/').next().unwrap_or(rest))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mixed_workload_ends_the_same_through_a_faulty_network() {
    if !chaos_common::emulators("chaos_network") {
        return;
    }
    let seed = chaos_common::seed();
    let rate: f64 = std::env::var("CHAOS_FAULT_RATE")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(0.2);
    eprintln!("chaos_network: seed {seed}, fault rate {rate} (replay with CHAOS_SEED={seed})");
    let workload = Workload::new(!soak()).await;
    let deadline = Duration::from_secs(if soak() { 900 } else { 150 });
    let spread = Duration::from_secs(if soak() { 60 } else { 5 });

    // Without the proxy, for the wall-time comparison.
    let mut direct = Fleet::new(&workload.dir, &[]);
    let (client, backends) = direct.client().await;
    direct.start(3);
    let (runs, plain) = drive(&client, &workload, spread, deadline, || {}).await;
    verify(&client, &backends, &direct, &runs).await;
    drop(direct);

    let queue_endpoint = support::queue_endpoint();
    let storage = FaultProxy::start(&authority(&queue_endpoint), rate, seed).await;
    let cosmos = FaultProxy::start(
        &authority(&support::cosmos_endpoint()),
        rate,
        seed.wrapping_add(1),
    )
    .await;
    // Same path (the account stays in it, SharedKey signs it), another host and port.
    let path = queue_endpoint
        .split("://")
        .nth(1)
        .and_then(|rest| rest.find('/').map(|i| rest[i..].to_string()))
        .unwrap_or_default();
    let storage_cs = format!(
        "DefaultEndpointsProtocol=http;AccountName={};AccountKey={};QueueEndpoint={}{path};",
        support::storage_account(),
        support::storage_key(),
        storage.url()
    );
    let cosmos_key =
        std::env::var("COSMOS_KEY").unwrap_or_else(|_| support::COSMOS_EMULATOR_KEY.into());
    let cosmos_cs = format!("AccountEndpoint={}/;AccountKey={cosmos_key};", cosmos.url());
    let mut fleet = Fleet::new(
        &workload.dir,
        &[
            ("AZURE_STORAGE_CONNECTION_STRING", storage_cs),
            ("COSMOS_CONNECTION_STRING", cosmos_cs),
        ],
    );
    let (client, backends) = fleet.client().await;
    fleet.start(3);
    let (runs, faulty) = drive(&client, &workload, spread, deadline, || {}).await;
    let (to_storage, to_cosmos) = (storage.counts(), cosmos.counts());
    eprintln!("chaos_network: Azurite proxy {to_storage:?}");
    eprintln!("chaos_network: Cosmos proxy  {to_cosmos:?}");
    eprintln!(
        "chaos_network: {faulty:.1} s through the proxies vs {plain:.1} s direct (+{:.1} s)",
        faulty - plain
    );
    eprintln!(
        "chaos_network: worker log lines by message (warnings, errors, job-path info) {:#?}",
        fleet.log_summary()
    );
    print_runs("chaos_network", &runs, faulty);
    let injected: u64 = chaos_common::proxy::KINDS
        .iter()
        .map(|k| to_storage.get(k).unwrap_or(&0) + to_cosmos.get(k).unwrap_or(&0))
        .sum();
    assert!(injected > 0, "no fault was injected");
    verify(&client, &backends, &fleet, &runs).await;
}
