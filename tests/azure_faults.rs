//! The Azure worker under the faults real deployments see, on the local stack: a node that
//! runs for several visibility timeouts executes exactly once (the lease is renewed), Redis
//! dies in the middle of a workload and every run still completes (workers fall back to
//! polling), and a rolling deploy (a worker with another blueprint version) defers jobs
//! instead of failing or dropping them. Switched on by `FLOWCRAFT_EMULATORS=1`.

mod distributed_common;
mod support;

use distributed_common::{Counter, registry};
use flowcraft_azure::adapter::{AzureBackends, AzureQueueAdapter, Settings, connect};
use flowcraft_azure::distributed::client::Client;
use flowcraft_azure::flow::blueprint::Blueprint;
use flowcraft_azure::flow::execute::{BlueprintRegistry, Environment};
use flowcraft_azure::flow::node::Dependencies;
use flowcraft_azure::flow::runtime::RunStatus;
use flowcraft_azure::wire::reqwest_transport::ReqwestTransport;
use serde_json::{Value, json};
use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

fn emulators(test: &str) -> bool {
    if !support::emulators_enabled(test) {
        return false;
    }
    support::require_reachable("Azurite", &support::queue_endpoint());
    support::require_reachable("the Cosmos emulator", &support::cosmos_endpoint());
    true
}

/// Settings for a private queue and database, with `extra` overrides.
fn settings(extra: &[(&str, String)]) -> Settings {
    let tag = uuid::Uuid::new_v4().simple().to_string();
    let mut vars: Vec<(String, String)> = vec![
        ("FLOWCRAFT_QUEUE".into(), format!("faults-{}", &tag[..12])),
        (
            "FLOWCRAFT_DATABASE".into(),
            format!("faults-{}", &tag[..12]),
        ),
    ];
    vars.extend(extra.iter().map(|(k, v)| (k.to_string(), v.clone())));
    Settings::from_lookup(|name| {
        vars.iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
            .or_else(|| std::env::var(name).ok())
    })
    .unwrap()
}

async fn backends(settings: &Settings) -> AzureBackends {
    let transport = Arc::new(ReqwestTransport::new(Duration::from_secs(30)).unwrap());
    let backends = connect(settings, transport).await.unwrap();
    backends.ensure_resources().await.unwrap();
    backends
}

fn environment(blueprints: &[Value], counter: Counter) -> (Environment, Arc<Counter>) {
    let mut loaded = BlueprintRegistry::new();
    for bp in blueprints {
        loaded.insert(Blueprint::from_json(&bp.to_string()).unwrap());
    }
    let deps = Dependencies::new().with(counter);
    let counter = deps.get::<Counter>().unwrap();
    let env = Environment::new(registry())
        .with_blueprints(loaded)
        .with_dependencies(deps);
    (env, counter)
}

/// `n` in-process Azure workers; cancelled and awaited by `stop`.
struct Fleet {
    shutdown: CancellationToken,
    handles: Vec<tokio::task::JoinHandle<Result<(), flowcraft_azure::Error>>>,
}

impl Fleet {
    fn start(n: usize, env: &Environment, backends: &AzureBackends, settings: &Settings) -> Fleet {
        let shutdown = CancellationToken::new();
        let handles = (0..n)
            .map(|_| {
                let adapter = AzureQueueAdapter::new(env.clone(), backends.clone(), settings);
                tokio::spawn(adapter.run(shutdown.clone()))
            })
            .collect();
        Fleet { shutdown, handles }
    }

    async fn stop(self) {
        self.shutdown.cancel();
        for h in self.handles {
            h.await.unwrap().unwrap();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_running_for_several_visibility_timeouts_executes_exactly_once() {
    if !emulators("long_node") {
        return;
    }
    let settings = settings(&[
        ("FLOWCRAFT_VISIBILITY_SECS", "2".into()),
        ("FLOWCRAFT_POLL_MAX_MS", "200".into()),
    ]);
    let backends = backends(&settings).await;
    let bp = json!({"id": "long", "nodes": [
        {"id": "slow", "uses": "slow", "params": {"ms": 7000}},
        {"id": "after", "uses": "count"}],
      "edges": [{"source": "slow", "target": "after"}]});
    let (env, counter) = environment(&[bp], Counter::default());
    // Two workers poll the same queue: a lapsed lease would hand the job to the other.
    let fleet = Fleet::start(2, &env, &backends, &settings);
    let client = Client::new(backends.backends.clone(), env.blueprints.clone());
    let run = client.start_run("long", Default::default()).await.unwrap();
    let result = client
        .wait_for(&run, Duration::from_secs(60))
        .await
        .unwrap();
    fleet.stop().await;
    assert_eq!(result.status, RunStatus::Completed, "{result:?}");
    assert_eq!(
        counter.get("slow"),
        1,
        "the 7 s node ran more than once under 2 s leases"
    );
    assert_eq!(counter.get("after"), 1);
    let left = backends
        .queue
        .client()
        .peek_messages(flowcraft_azure::azure::queue::MessageCount::MAX)
        .await
        .unwrap();
    assert!(left.is_empty(), "messages left behind: {left:?}");
}

/// A private redis-server on a free loopback port, killed when dropped.
struct PrivateRedis {
    child: Child,
    port: u16,
}

impl PrivateRedis {
    fn start() -> PrivateRedis {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        PrivateRedis::start_on(port)
    }

    /// Starts redis-server on `port` (empty: no persistence) and waits until it accepts.
    fn start_on(port: u16) -> PrivateRedis {
        let child = Command::new("redis-server")
            .args([
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
            ])
            .args(["--appendonly", "no"])
            .stdout(Stdio::null())
            .spawn()
            .expect("redis-server (scripts/emulators.sh installs it)");
        for _ in 0..100 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        PrivateRedis { child, port }
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        self.kill();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runs_complete_when_redis_dies_mid_workload_and_after_it_comes_back_empty() {
    if !emulators("redis_outage") {
        return;
    }
    let mut redis = PrivateRedis::start();
    let settings = settings(&[
        ("REDIS_URL", redis.url()),
        ("FLOWCRAFT_POLL_MAX_MS", "1000".into()),
    ]);
    let backends = backends(&settings).await;
    let nodes: Vec<Value> = (0..6)
        .map(|i| json!({"id": format!("n{i}"), "uses": "slow", "params": {"ms": 150}}))
        .collect();
    let edges: Vec<Value> = (1..6)
        .map(|i| json!({"source": format!("n{}", i - 1), "target": format!("n{i}")}))
        .collect();
    let bp = json!({"id": "chain6", "nodes": nodes, "edges": edges});
    let (env, counter) = environment(&[bp], Counter::default());
    let fleet = Fleet::start(2, &env, &backends, &settings);
    let client = Client::new(backends.backends.clone(), env.blueprints.clone());
    let mut runs = Vec::new();
    for _ in 0..4 {
        runs.push(
            client
                .start_run("chain6", Default::default())
                .await
                .unwrap(),
        );
    }
    tokio::time::sleep(Duration::from_millis(400)).await;
    redis.kill();
    // Runs started while Redis is down still start (the client falls back too).
    for _ in 0..2 {
        runs.push(
            client
                .start_run("chain6", Default::default())
                .await
                .unwrap(),
        );
    }
    // Redis stays down for 5 s, then comes back EMPTY on the same port.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let _back = PrivateRedis::start_on(redis.port);
    for run in &runs {
        let result = client.wait_for(run, Duration::from_secs(90)).await.unwrap();
        assert_eq!(result.status, RunStatus::Completed, "run {run}: {result:?}");
    }
    fleet.stop().await;
    for i in 0..6 {
        assert_eq!(
            counter.get(&format!("n{i}")),
            runs.len() as u32,
            "n{i} ran once per run"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_with_another_blueprint_version_defers_jobs_until_the_right_one_runs_them() {
    if !emulators("rolling_deploy") {
        return;
    }
    let settings = settings(&[
        ("FLOWCRAFT_POLL_MAX_MS", "200".into()),
        ("FLOWCRAFT_VERSION_DEFER_SECS", "1".into()),
    ]);
    let backends = backends(&settings).await;
    let bp = |version: &str| {
        json!({"id": "versioned", "metadata": {"version": version}, "nodes": [
            {"id": "a", "uses": "count"}, {"id": "b", "uses": "count"}],
          "edges": [{"source": "a", "target": "b"}]})
    };
    let (new_env, new_counter) = environment(&[bp("2.0.0")], Counter::default());
    let (old_env, old_counter) = environment(&[bp("1.0.0")], Counter::default());
    // The client (and the run) are on 2.0.0; only an old worker is up at first.
    let client = Client::new(backends.backends.clone(), new_env.blueprints.clone());
    let old = Fleet::start(1, &old_env, &backends, &settings);
    let run = client
        .start_run("versioned", Default::default())
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let waiting = client.status(&run).await.unwrap().unwrap();
    assert_eq!(waiting.status, RunStatus::Running, "{waiting:?}");
    assert_eq!(
        old_counter.total(),
        0,
        "the old worker must not run 2.0.0 jobs"
    );
    // The new version rolls out: its worker picks the deferred job up.
    let new = Fleet::start(1, &new_env, &backends, &settings);
    let result = client
        .wait_for(&run, Duration::from_secs(60))
        .await
        .unwrap();
    old.stop().await;
    new.stop().await;
    assert_eq!(result.status, RunStatus::Completed, "{result:?}");
    assert_eq!(new_counter.get("a"), 1);
    assert_eq!(new_counter.get("b"), 1);
    assert_eq!(old_counter.total(), 0);
    let poison = backends
        .queue
        .poison_client()
        .peek_messages(flowcraft_azure::azure::queue::MessageCount::MAX)
        .await
        .unwrap();
    assert!(poison.is_empty(), "nothing is poisoned: {poison:?}");
}
