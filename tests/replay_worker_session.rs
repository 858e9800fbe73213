//! A worker session recorded on the local stack replays offline, deterministically, in plain
//! `cargo test`: a fan-out run (`start`, 8 `times` branches, an `all`-join `sum`) on three
//! in-process [`AzureQueueAdapter`] workers over Queue Storage and Cosmos DB, submitted by a
//! client.
//!
//! What makes a multi-worker session replayable:
//! - **one trace per process**, as `--trace` writes them: each worker, and the client, has
//!   its own [`Recorder`]-wrapped transport (`fixtures/wire/worker-fanout-w1.jsonl`, ...,
//!   `worker-fanout-client.jsonl`). On replay each one gets its own [`Replayer`], so it sees
//!   exactly the answers it saw live (the messages it received, the conflicts it lost),
//!   whatever the others do, and the workers' interleaving no longer matters;
//! - **deterministic sources** ([`Sources::deterministic`]): run ids, timestamps written into
//!   the documents and the idle-poll jitter are the same on every run;
//! - **one job at a time per worker** (`concurrency = 1`): two jobs of one worker in flight
//!   at once would send identical reads whose recorded answers could swap between them;
//! - **no Redis**: coordination and wake-ups stay in-process, so only HTTP traffic matters;
//! - a replayed worker stops when its recording has been played out (its shutdown token is
//!   cancelled by the transport that served the last exchange), not after a wall-clock time;
//!   the replay runs on tokio's paused clock, so idle pauses cost nothing.
//!
//! A replay on another clock than the recording's (a trace recorded on the system clock)
//! declares the time fields the engine writes with [`Replayer::ignore_json_path`]
//! (`/lastUpdated`, `/_flowcraft/statusTouchedAt`); its clock must stay within the status
//! heartbeat (60 s) of the recorded one, or the engine's time-dependent decisions differ.
//!
//! The replay also serves the queue from a host-style production URL
//! (`https://devstoreaccount1.queue.core.windows.net`) and Cosmos from another port than the
//! recording's: the replayer keys requests by account and resource path, not by host.
//!
//! The ignored `record_worker_fanout_fixture` test records the traces against the emulators
//! (run it with `scripts/record-fixtures.sh worker-fanout`).

mod support;

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, TimeZone, Utc};
use flowcraft_azure::Error;
use flowcraft_azure::adapter::{AzureQueueAdapter, Settings, connect};
use flowcraft_azure::azure::auth::{CosmosConnection, StorageConnection};
use flowcraft_azure::distributed::client::Client;
use flowcraft_azure::distributed::events::Event;
use flowcraft_azure::flow::blueprint::Blueprint;
use flowcraft_azure::flow::execute::{BlueprintRegistry, Environment};
use flowcraft_azure::flow::node::{NodeError, NodeRegistry, NodeResult};
use flowcraft_azure::flow::runtime::RunStatus;
use flowcraft_azure::flow::sources::{Sources, SteppingClock};
use flowcraft_azure::wire::record::Recorder;
use flowcraft_azure::wire::redact::Redactor;
use flowcraft_azure::wire::replay::Replayer;
use flowcraft_azure::wire::transport::{HttpRequest, HttpResponse, Transport};
use serde_json::{Map, Value, json};
use tokio_util::sync::CancellationToken;

const WORKERS: usize = 3;
const BRANCHES: i64 = 8;
const SEED_VALUE: i64 = 3;
const QUEUE: &str = "fixture-fanout";
const DATABASE: &str = "fixturefanout";
const BLUEPRINT: &str = "replay-fanout";
/// The client's id seed (the run id is drawn from it); workers use 1, 2, 3.
const CLIENT_SEED: u64 = 100;

/// `start` (the seed) → `b0..b7` (seed × (k+1)) → `sum` (all of them: seed × 36).
fn blueprint() -> Blueprint {
    let mut nodes = vec![json!({"id": "start", "uses": "echo", "inputs": "seed"})];
    let mut edges = Vec::new();
    let mut join_inputs = Map::new();
    for k in 0..BRANCHES {
        let id = format!("b{k}");
        nodes.push(
            json!({"id": id, "uses": "times", "inputs": "start", "params": {"factor": k + 1}}),
        );
        edges.push(json!({"source": "start", "target": id}));
        edges.push(json!({"source": id, "target": "sum"}));
        join_inputs.insert(id.clone(), Value::from(id));
    }
    nodes.push(json!({"id": "sum", "uses": "sum", "inputs": join_inputs,
        "config": {"joinStrategy": "all"}}));
    let text = json!({"id": BLUEPRINT, "nodes": nodes, "edges": edges}).to_string();
    Blueprint::from_json(&text).expect("the fan-out blueprint")
}

fn expected_sum() -> i64 {
    SEED_VALUE * (1..=BRANCHES).sum::<i64>()
}

fn registry() -> NodeRegistry {
    let mut registry = NodeRegistry::with_builtins();
    registry.register("times", |ctx| async move {
        let input = ctx.input().and_then(Value::as_i64);
        let factor = ctx.params().get("factor").and_then(Value::as_i64);
        match (input, factor) {
            (Some(i), Some(f)) => Ok(NodeResult::output(json!(i * f))),
            _ => Err(NodeError::fatal("times needs a number input and a factor")),
        }
    });
    registry.register("sum", |ctx| async move {
        let total: i64 = match ctx.input() {
            Some(Value::Object(parts)) => parts.values().filter_map(Value::as_i64).sum(),
            _ => return Err(NodeError::fatal("sum needs an object input")),
        };
        Ok(NodeResult::output(json!(total)))
    });
    registry
}

fn blueprints() -> BlueprintRegistry {
    let mut blueprints = BlueprintRegistry::new();
    blueprints.insert(blueprint());
    blueprints
}

/// When the recorded session believes it ran: the clock every source is stopped at.
fn session_time() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 29, 9, 0, 0)
        .single()
        .expect("a valid time")
}

fn sources(seed: u64) -> Sources {
    Sources::deterministic(seed, session_time())
}

fn worker_seed(worker: usize) -> u64 {
    worker as u64 + 1
}

fn environment(sources: Sources) -> Environment {
    Environment::new(registry())
        .with_blueprints(blueprints())
        .with_sources(sources)
}

fn settings(storage: StorageConnection, cosmos: CosmosConnection) -> Settings {
    let mut settings = Settings::new(storage, cosmos);
    settings.queue = QUEUE.to_string();
    settings.database = DATABASE.to_string();
    settings.concurrency = 1;
    settings.reconciler = false;
    settings.visibility = Duration::from_secs(60);
    settings.poll_min = Duration::from_millis(20);
    settings.poll_max = Some(Duration::from_millis(200));
    settings
}

fn trace(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join(format!("fixtures/wire/worker-fanout-{name}.jsonl"))
}

fn worker_name(worker: usize) -> String {
    format!("w{}", worker + 1)
}

fn initial() -> Map<String, Value> {
    let mut initial = Map::new();
    initial.insert("seed".into(), json!(SEED_VALUE));
    initial
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "records fixtures/wire/worker-fanout-*.jsonl against the emulators; run scripts/record-fixtures.sh worker-fanout"]
async fn record_worker_fanout_fixture() {
    if std::env::var("FLOWCRAFT_RECORD").as_deref() != Ok("1") {
        eprintln!(
            "record_worker_fanout_fixture: FLOWCRAFT_RECORD is not 1; run scripts/record-fixtures.sh"
        );
        return;
    }
    support::require_reachable("Azurite (queue)", &support::queue_endpoint());
    support::require_reachable("the Cosmos emulator", &support::cosmos_endpoint());
    let storage_key = support::storage_key();
    let live = settings(
        support::storage_connection(&storage_key),
        support::cosmos_connection(),
    );
    let real = support::transport();

    // A clean slate: the answers depend on the emulators' state when recorded.
    let plain = connect(&live, real.clone()).await.expect("connect");
    let _ = plain.queue.client().delete().await;
    let _ = plain.queue.poison_client().delete().await;
    let _ = support::cosmos_client()
        .database(DATABASE)
        .expect("database")
        .delete()
        .await;
    plain.ensure_resources().await.expect("provision");

    let cosmos_key =
        std::env::var("COSMOS_KEY").unwrap_or_else(|_| support::COSMOS_EMULATOR_KEY.to_string());
    let redactor = Redactor::new()
        .with_secret(storage_key)
        .with_secret(cosmos_key);
    let tmp = |name: &str| trace(name).with_extension("jsonl.tmp");
    let recorder = |name: &str| -> Arc<dyn Transport> {
        Arc::new(Recorder::to_file(real.clone(), tmp(name), redactor.clone()).expect("recorder"))
    };

    let mut names = Vec::new();
    let mut running = Vec::new();
    let shutdown = CancellationToken::new();
    for worker in 0..WORKERS {
        let name = worker_name(worker);
        let backends = connect(&live, recorder(&name)).await.expect("connect");
        let env = environment(sources(worker_seed(worker)));
        let adapter = AzureQueueAdapter::new(env, backends, &live);
        running.push(tokio::spawn(adapter.run(shutdown.clone())));
        names.push(name);
    }
    let backends = connect(&live, recorder("client")).await.expect("connect");
    let client =
        Client::new(backends.backends, Arc::new(blueprints())).with_sources(sources(CLIENT_SEED));
    let run_id = client.start_run(BLUEPRINT, initial()).await.expect("start");
    let result = client
        .wait_for(&run_id, Duration::from_secs(120))
        .await
        .expect("the run finishes");
    assert_eq!(result.status, RunStatus::Completed, "{:?}", result.errors);
    assert_eq!(result.context["sum"], json!(expected_sum()));
    // Let the workers settle into idle polling, then stop them.
    tokio::time::sleep(Duration::from_secs(2)).await;
    shutdown.cancel();
    for handle in running {
        handle.await.expect("worker task").expect("worker");
    }
    names.push("client".to_string());
    for name in names {
        std::fs::rename(tmp(&name), trace(&name)).expect("move the recording in place");
    }
}

/// A replayer as a transport that cancels `stop` once every recorded exchange has been
/// served, and keeps the divergences (which the worker would only log); a worker that
/// diverged is stopped too (it no longer follows its recording).
#[derive(Debug)]
struct PlayOut {
    replayer: Replayer,
    stop: CancellationToken,
    divergences: Mutex<Vec<String>>,
}

impl PlayOut {
    fn new(name: &str, clocks: Clocks) -> Arc<PlayOut> {
        let mut replayer = Replayer::from_file(trace(name)).unwrap_or_else(|e| {
            panic!("{e}; record it with scripts/record-fixtures.sh worker-fanout")
        });
        if let Clocks::Later {
            declare_time_fields: true,
        } = clocks
        {
            // The only times this session writes: the status item's and the run's.
            replayer = replayer
                .ignore_json_path("/lastUpdated")
                .ignore_json_path("/startedAt")
                .ignore_json_path("/_flowcraft/statusTouchedAt");
        }
        Arc::new(PlayOut {
            replayer,
            stop: CancellationToken::new(),
            divergences: Mutex::new(Vec::new()),
        })
    }

    fn divergences(&self) -> Vec<String> {
        self.divergences
            .lock()
            .map(|d| d.clone())
            .unwrap_or_default()
    }

    /// What went wrong with this trace, short enough to read.
    fn problems(&self) -> Option<String> {
        let divergences = self.divergences();
        let first: String = divergences.first()?.chars().take(1500).collect();
        Some(format!(
            "{} divergences, {} exchanges unplayed; the first:\n{first}",
            divergences.len(),
            self.replayer.remaining()
        ))
    }
}

#[async_trait]
impl Transport for PlayOut {
    async fn send(&self, request: HttpRequest) -> Result<HttpResponse, Error> {
        let answer = self.replayer.play(&request).await;
        if let Err(e) = &answer {
            let text = e.to_string();
            if !text.contains("recorded failure") {
                if let Ok(mut d) = self.divergences.lock() {
                    d.push(text);
                }
                self.stop.cancel();
            }
        }
        if self.replayer.remaining() == 0 {
            self.stop.cancel();
        }
        answer
    }
}

/// Somewhere else than the recording: the queue host-style, Cosmos on another port.
fn replay_settings() -> Settings {
    let storage = StorageConnection::parse(&format!(
        "DefaultEndpointsProtocol=https;AccountName=devstoreaccount1;AccountKey={};\
         QueueEndpoint=https://devstoreaccount1.queue.core.windows.net;",
        support::AZURITE_KEY
    ))
    .expect("storage connection");
    let cosmos = CosmosConnection::parse(&format!(
        "AccountEndpoint=http://127.0.0.1:9/;AccountKey={};",
        support::COSMOS_EMULATOR_KEY
    ))
    .expect("cosmos connection");
    settings(storage, cosmos)
}

/// The clocks the replayed engine runs on.
#[derive(Debug, Clone, Copy)]
enum Clocks {
    /// The recording's (deterministic sources, as recorded).
    AsRecorded,
    /// A moving clock 30 s later than the recording's (as a trace recorded on the system
    /// clock would be replayed), with or without declaring the time fields the engine writes
    /// as ignored. Less than the status heartbeat (60 s): the engine's time-dependent
    /// decisions (is a status refresh due?) must come out as they did live.
    Later { declare_time_fields: bool },
}

fn replay_sources(seed: u64, clocks: Clocks) -> Sources {
    match clocks {
        Clocks::AsRecorded => sources(seed),
        Clocks::Later { .. } => sources(seed).with_clock(Arc::new(SteppingClock::new(
            session_time() + chrono::Duration::seconds(30),
            chrono::Duration::milliseconds(10),
        ))),
    }
}

/// One replay of the whole session: the nodes the replayed workers committed, or what
/// diverged.
async fn replay_session(clocks: Clocks) -> Result<Vec<String>, String> {
    let settings = replay_settings();
    let mut players = Vec::new();
    let mut running = Vec::new();
    let mut events = Vec::new();
    for worker in 0..WORKERS {
        let name = worker_name(worker);
        let player = PlayOut::new(&name, clocks);
        let backends = connect(&settings, player.clone()).await.expect("connect");
        let env = environment(replay_sources(worker_seed(worker), clocks));
        let adapter = AzureQueueAdapter::new(env, backends, &settings);
        events.push(adapter.worker().events().subscribe());
        running.push(tokio::spawn(adapter.run(player.stop.clone())));
        players.push((name, player));
    }
    let player = PlayOut::new("client", clocks);
    let backends = connect(&settings, player.clone()).await.expect("connect");
    let client = Client::new(backends.backends, Arc::new(blueprints()))
        .with_sources(replay_sources(CLIENT_SEED, clocks));
    let result = match client.start_run(BLUEPRINT, initial()).await {
        Ok(run_id) => client
            .wait_for(&run_id, Duration::from_secs(600))
            .await
            .map(|result| (run_id, result)),
        Err(e) => Err(e),
    };
    if let Some(problems) = player.problems() {
        for (_, worker) in &players {
            worker.stop.cancel();
        }
        return Err(format!("the client diverged from its trace: {problems}"));
    }
    let (run_id, result) = result.map_err(|e| format!("the run did not finish: {e}"))?;
    assert_eq!(result.status, RunStatus::Completed, "{:?}", result.errors);
    assert_eq!(result.context["sum"], json!(expected_sum()));
    players.push(("client".to_string(), player));

    // Paused time: this waits for the recordings to play out, not for the wall clock.
    let all = async {
        for handle in running {
            handle.await.expect("worker task").expect("worker");
        }
    };
    let finished = tokio::time::timeout(Duration::from_secs(3600), all).await;
    for (name, player) in &players {
        if let Some(problems) = player.problems() {
            return Err(format!("{name} diverged from its trace: {problems}"));
        }
        player
            .replayer
            .finish()
            .map_err(|e| format!("{name}: {e}"))?;
    }
    assert!(finished.is_ok(), "the replayed workers did not stop");
    let mut committed = Vec::new();
    for mut receiver in events {
        while let Ok(event) = receiver.try_recv() {
            if let Event::JobFinished {
                run_id: run,
                node_id,
                ..
            } = event
            {
                assert_eq!(run, run_id);
                committed.push(node_id);
            }
        }
    }
    committed.sort();
    Ok(committed)
}

fn every_node() -> Vec<String> {
    let mut nodes: Vec<String> = (0..BRANCHES).map(|k| format!("b{k}")).collect();
    nodes.extend(["start".to_string(), "sum".to_string()]);
    nodes.sort();
    nodes
}

#[tokio::test(start_paused = true)]
async fn a_fanout_session_on_three_workers_replays_offline_and_deterministically() {
    let first = replay_session(Clocks::AsRecorded)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    for node in every_node() {
        assert!(
            first.contains(&node),
            "no replayed worker committed {node}: {first:?}"
        );
    }
    for _ in 0..4 {
        let again = replay_session(Clocks::AsRecorded).await;
        assert_eq!(again, Ok(first.clone()), "a replay committed other nodes");
    }
}

#[tokio::test(start_paused = true)]
async fn on_another_clock_the_session_replays_once_the_time_fields_are_declared() {
    let undeclared = replay_session(Clocks::Later {
        declare_time_fields: false,
    })
    .await;
    let diverged = undeclared.expect_err("the times written differ from the recorded ones");
    assert!(diverged.contains("body: expected"), "{diverged}");
    let declared = replay_session(Clocks::Later {
        declare_time_fields: true,
    })
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    for node in every_node() {
        assert!(
            declared.contains(&node),
            "{node} not committed: {declared:?}"
        );
    }
}

#[test]
fn the_recorded_run_was_spread_over_several_workers() {
    let mut workers_with_commits = 0;
    for worker in 0..WORKERS {
        let replayer = Replayer::from_file(trace(&worker_name(worker))).unwrap_or_else(|e| {
            panic!("{e}; record it with scripts/record-fixtures.sh worker-fanout")
        });
        let commits = replayer
            .exchanges()
            .iter()
            .filter(|e| matches!(e.method.as_str(), "PATCH" | "PUT") && e.url.contains("/docs/"))
            .count();
        if commits > 0 {
            workers_with_commits += 1;
        }
    }
    assert!(
        workers_with_commits >= 2,
        "the recording should spread the run over several workers"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_session_also_replays_with_the_workers_on_several_threads() {
    let committed = replay_session(Clocks::AsRecorded)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    for node in every_node() {
        assert!(
            committed.contains(&node),
            "{node} not committed: {committed:?}"
        );
    }
}
