//! Worker PROCESSES on the local stack (Azurite, the Cosmos emulator, redis-server): runs
//! submitted with `submit` are completed by `worker` processes sharing one queue, also when one
//! of them is killed with SIGKILL mid-run; a run started the way the TypeScript adapter's
//! client starts one is completed by our worker; `--trace` writes a redacted trace.
//! Switched on by `FLOWCRAFT_EMULATORS=1` (scripts/test.sh).

mod support;

use base64::Engine;
use flowcraft_azure::adapter::{Settings, connect};
use flowcraft_azure::azure::cosmos::PartitionKey;
use flowcraft_azure::distributed::client::Client;
use flowcraft_azure::flow::execute::BlueprintRegistry;
use flowcraft_azure::flow::runtime::RunStatus;
use flowcraft_azure::wire::redact::find_leaks;
use flowcraft_azure::wire::reqwest_transport::ReqwestTransport;
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

const BIN: &str = env!("CARGO_BIN_EXE_flowcraft-azure");

/// A private queue and database for one test, as environment overrides.
struct Stack {
    queue: String,
    database: String,
    dir: PathBuf,
}

impl Stack {
    fn new(test: &str) -> Stack {
        let tag = uuid::Uuid::new_v4().simple().to_string();
        let dir = std::env::temp_dir().join(format!("fc-fleet-{test}-{}", &tag[..8]));
        std::fs::create_dir_all(&dir).unwrap();
        Stack {
            queue: format!("fleet-{}", &tag[..12]),
            database: format!("fleet{}", &tag[..12]),
            dir,
        }
    }

    fn vars(&self) -> Vec<(&'static str, String)> {
        vec![
            ("FLOWCRAFT_QUEUE", self.queue.clone()),
            ("FLOWCRAFT_DATABASE", self.database.clone()),
            ("FLOWCRAFT_VISIBILITY_SECS", "3".into()),
            ("FLOWCRAFT_POLL_MAX_MS", "500".into()),
            ("RUST_LOG", "warn".into()),
        ]
    }

    fn blueprint(&self, value: &Value) {
        let id = value["id"].as_str().unwrap();
        std::fs::write(self.dir.join(format!("{id}.json")), value.to_string()).unwrap();
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(BIN);
        cmd.args(args).envs(self.vars());
        cmd
    }

    fn worker(&self) -> Worker {
        let child = self
            .command(&["worker", "--blueprints", self.dir.to_str().unwrap()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        Worker(child)
    }

    fn settings(&self) -> Settings {
        let vars = self.vars();
        Settings::from_lookup(|name| {
            vars.iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| v.clone())
                .or_else(|| std::env::var(name).ok())
        })
        .unwrap()
    }

    async fn client(&self) -> (Client, flowcraft_azure::adapter::AzureBackends) {
        let transport = Arc::new(ReqwestTransport::new(Duration::from_secs(30)).unwrap());
        let backends = connect(&self.settings(), transport).await.unwrap();
        backends.ensure_resources().await.unwrap();
        let mut registry = BlueprintRegistry::new();
        registry.load_dir(&self.dir, &Default::default()).unwrap();
        (
            Client::new(backends.backends.clone(), Arc::new(registry)),
            backends,
        )
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A worker process, killed when dropped.
struct Worker(Child);

impl Worker {
    fn kill(&mut self) {
        let _ = self.0.kill(); // SIGKILL
        let _ = self.0.wait();
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        self.kill();
    }
}

fn fan_out(id: &str, branches: usize, ms: u64) -> Value {
    let mut nodes = vec![json!({"id": "start", "uses": "set", "params": {"values": {"n": 1}}})];
    let mut edges = Vec::new();
    for i in 0..branches {
        nodes.push(json!({"id": format!("b{i}"), "uses": "work", "params": {"ms": ms}}));
        edges.push(json!({"source": "start", "target": format!("b{i}")}));
        edges.push(json!({"source": format!("b{i}"), "target": "join"}));
    }
    nodes.push(json!({"id": "join", "uses": "echo", "config": {"joinStrategy": "all"}}));
    json!({"id": id, "nodes": nodes, "edges": edges})
}

fn emulators(test: &str) -> bool {
    if !support::emulators_enabled(test) {
        return false;
    }
    support::require_reachable("Azurite", &support::queue_endpoint());
    support::require_reachable("the Cosmos emulator", &support::cosmos_endpoint());
    true
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_worker_processes_finish_every_run_although_one_is_killed_mid_run() {
    if !emulators("fleet_sigkill") {
        return;
    }
    let stack = Stack::new("kill");
    // Long enough nodes that every worker holds leased jobs when one is killed.
    // 32 branches into an `all` join: no lost update when the branches commit concurrently.
    stack.blueprint(&fan_out("fleet-fan", 32, 2500));
    let (client, _backends) = stack.client().await;
    let mut workers: Vec<Worker> = (0..3).map(|_| stack.worker()).collect();
    let mut runs = Vec::new();
    for _ in 0..6 {
        runs.push(
            client
                .start_run("fleet-fan", Default::default())
                .await
                .unwrap(),
        );
    }
    // Let the fleet pick the runs up, then kill one worker in the middle of its nodes.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    workers[0].kill();
    for run in &runs {
        let result = client
            .wait_for(run, Duration::from_secs(120))
            .await
            .unwrap();
        assert_eq!(result.status, RunStatus::Completed, "run {run}: {result:?}");
        for i in 0..32 {
            assert!(
                result.context.contains_key(&format!("_outputs.b{i}")),
                "run {run} lost the output of b{i}"
            );
        }
        assert!(result.context.contains_key("_outputs.join"));
    }
    drop(workers);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_started_like_the_typescript_client_is_completed_by_our_worker() {
    if !emulators("fleet_typescript") {
        return;
    }
    let stack = Stack::new("ts");
    stack.blueprint(&json!({"id": "ts-chain", "nodes": [
        {"id": "a", "uses": "set", "params": {"values": {"greeting": "hi"}}},
        {"id": "b", "uses": "echo", "inputs": "greeting"},
        {"id": "c", "uses": "echo"}],
      "edges": [{"source": "a", "target": "b"}, {"source": "b", "target": "c"}]}));
    let (_client, backends) = stack.client().await;
    let settings = stack.settings();
    let cosmos = support::cosmos_client();
    let db = cosmos.database(&settings.database).unwrap();
    let run_id = format!("ts-{}", uuid::Uuid::new_v4());
    // The TypeScript client's documents and message (base64 JSON, one per start node).
    db.container(&settings.context_container)
        .unwrap()
        .create(
            &PartitionKey::from(&run_id),
            &json!({"id": run_id, "runId": run_id, "blueprintId": "ts-chain",
                    "blueprintVersion": null, "order": {"total": 42}}),
        )
        .await
        .unwrap();
    let now = chrono::Utc::now().timestamp();
    db.container(&settings.status_container)
        .unwrap()
        .create(
            &PartitionKey::from(&run_id),
            &json!({"id": run_id, "runId": run_id, "status": "running", "lastUpdated": now}),
        )
        .await
        .unwrap();
    let job = json!({"runId": run_id, "blueprintId": "ts-chain", "nodeId": "a"}).to_string();
    let text = base64::engine::general_purpose::STANDARD.encode(job);
    backends
        .queue
        .client()
        .put_message(&text, Default::default())
        .await
        .unwrap();
    let _worker = stack.worker();
    let status_container = db.container(&settings.status_container).unwrap();
    let mut status = Value::Null;
    for _ in 0..300 {
        status = status_container
            .read::<Value>(&run_id, &PartitionKey::from(&run_id))
            .await
            .unwrap()
            .value;
        if status["status"] == "completed" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(status["status"], "completed", "{status}");
    assert!(status["lastUpdated"].as_i64().unwrap() >= now);
    assert_eq!(status["finalStatus"]["status"], "completed", "{status}");
    let context = db
        .container(&settings.context_container)
        .unwrap()
        .read::<Value>(&run_id, &PartitionKey::from(&run_id))
        .await
        .unwrap()
        .value;
    for node in ["a", "b", "c"] {
        assert!(
            context.get(format!("_outputs.{node}")).is_some(),
            "{context}"
        );
    }
    assert_eq!(context["_outputs.c"], "hi");
    assert_eq!(context["order"], json!({"total": 42}));
}

#[test]
fn submit_wait_json_prints_what_run_json_prints_and_trace_has_no_secret() {
    if !emulators("fleet_submit") {
        return;
    }
    let stack = Stack::new("submit");
    let blueprint = fan_out("submit-fan", 4, 10);
    stack.blueprint(&blueprint);
    let _worker = stack.worker();
    let trace = stack.dir.join("trace.jsonl");
    let dir = stack.dir.to_str().unwrap();
    let out = stack
        .command(&[
            "submit",
            "submit-fan",
            "--blueprints",
            dir,
            "--wait",
            "--json",
            "--trace",
        ])
        .arg(&trace)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut submitted: Value = serde_json::from_slice(&out.stdout).unwrap();
    let local = Command::new(BIN)
        .args(["run", "--json"])
        .arg(Path::new(dir).join("submit-fan.json"))
        .output()
        .unwrap();
    let mut local: Value = serde_json::from_slice(&local.stdout).unwrap();
    for v in [&mut submitted, &mut local] {
        v["context"].as_object_mut().unwrap().remove("_executionId");
    }
    assert_eq!(submitted, local);
    let text = std::fs::read_to_string(&trace).unwrap();
    assert!(text.lines().count() >= 3, "the trace holds the exchanges");
    assert_eq!(find_leaks(&text), Vec::<String>::new());
    assert!(!text.contains(support::AZURITE_KEY) && !text.contains(support::COSMOS_EMULATOR_KEY));
}

#[test]
fn submit_of_an_unknown_blueprint_is_bad_input_and_sends_nothing() {
    let stack = Stack::new("unknown");
    stack.blueprint(&fan_out("known", 1, 1));
    let out = stack
        .command(&[
            "submit",
            "nope",
            "--blueprints",
            stack.dir.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no blueprint with id 'nope'"));
}
