//! A large batch through the distributed core on the local stack: a `batch-scatter` of N items
//! (default 5,000, `FLOWCRAFT_BIG_BATCH_ITEMS` to change it), each worker the built-in `echo`
//! of a 1 KiB string, then a `batch-gather`, run by three in-process workers on Azure Queue
//! Storage (Azurite), Cosmos DB (the emulator) and Redis. The run must complete with every
//! 1 KiB output gathered in order. Prints the wall time, per worker the Cosmos requests and
//! request units (the emulator charges 1 RU per request; real Cosmos charges by size), and
//! every HTTP request of the run by operation and answer (`--nocapture` shows them).
//! Switched on by `FLOWCRAFT_EMULATORS=1`; about a minute on the local stack.

mod support;

use flowcraft_azure::Error;
use flowcraft_azure::adapter::{AzureBackends, Settings, connect};
use flowcraft_azure::distributed::client::Client;
use flowcraft_azure::distributed::ports::{RunPhase, RunStore};
use flowcraft_azure::distributed::worker::{Worker, WorkerConfig};
use flowcraft_azure::flow::blueprint::Blueprint;
use flowcraft_azure::flow::execute::{BlueprintRegistry, Environment};
use flowcraft_azure::flow::node::NodeRegistry;
use flowcraft_azure::flow::runtime::RunStatus;
use flowcraft_azure::wire::reqwest_transport::ReqwestTransport;
use flowcraft_azure::wire::transport::{HttpRequest, HttpResponse, Transport};
use serde_json::{Map, Value, json};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

const WORKERS: usize = 3;
const ITEM_BYTES: usize = 1024;

/// How many items the batch has (`FLOWCRAFT_BIG_BATCH_ITEMS`, default 5,000).
fn item_count() -> usize {
    match std::env::var("FLOWCRAFT_BIG_BATCH_ITEMS") {
        Ok(text) => text
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("FLOWCRAFT_BIG_BATCH_ITEMS=`{text}` is not a count")),
        Err(_) => 5000,
    }
}

/// Item `i`: a 1 KiB string that starts with its index.
fn item(i: usize) -> String {
    let head = format!("{i:06}:");
    format!("{head}{}", "k".repeat(ITEM_BYTES - head.len()))
}

const BLUEPRINT: &str = r#"{"id":"big-batch","nodes":[
  {"id":"scatter","uses":"batch-scatter","inputs":"items",
   "params":{"workerUsesKey":"echo","outputKey":"out","gatherNodeId":"gather"}},
  {"id":"gather","uses":"batch-gather","params":{"outputKey":"out","gatherNodeId":"gather"},
   "config":{"joinStrategy":"all"}}],
  "edges":[{"source":"scatter","target":"gather"}]}"#;

/// Settings for a fresh queue and database on the local stack.
fn settings() -> Settings {
    let tag = uuid::Uuid::new_v4().simple().to_string();
    let queue = format!("bigbatch-{}", &tag[..12]);
    let database = format!("bigbatch-{}", &tag[..12]);
    Settings::from_lookup(|name| match name {
        "FLOWCRAFT_QUEUE" => Some(queue.clone()),
        "FLOWCRAFT_DATABASE" => Some(database.clone()),
        _ => std::env::var(name).ok(),
    })
    .expect("the local stack's settings (scripts/emulators.sh env)")
}

/// Counts the requests that pass through it by operation and answer status.
#[derive(Debug)]
struct Counting {
    inner: Arc<dyn Transport>,
    counts: Arc<Mutex<BTreeMap<String, u64>>>,
}

/// The operation of a request: service, method and the kind of item it names.
fn operation(request: &HttpRequest) -> String {
    let path = request.url.path();
    let method = request.method.as_str();
    if !path.contains("/docs") {
        let comp: Vec<String> = request
            .url
            .query_pairs()
            .map(|(k, _)| k.into_owned())
            .filter(|k| k != "popreceipt" && k != "numofmessages")
            .collect();
        let comp = comp.join("&");
        let queue = if path.contains("-poison") {
            "poison"
        } else {
            "queue"
        };
        return format!("queue {method} {queue} {comp}");
    }
    let container = if path.contains("/colls/statuses") {
        "status"
    } else {
        "context"
    };
    let kind = if request.header("x-ms-documentdb-isquery").is_some() {
        "query"
    } else if path.contains("%3Awr%3A") || path.contains(":wr:") || path.ends_with("/docs") {
        // A create names no item in its path: the results are the only items created.
        "result"
    } else if path.contains("arrivals") {
        "ledger"
    } else {
        "item"
    };
    format!("cosmos {method} {container} {kind}")
}

#[async_trait::async_trait]
impl Transport for Counting {
    async fn send(&self, request: HttpRequest) -> Result<HttpResponse, Error> {
        let op = operation(&request);
        let answer = self.inner.send(request).await;
        let status = match &answer {
            Ok(r) => r.status.to_string(),
            Err(_) => "error".into(),
        };
        *self
            .counts
            .lock()
            .unwrap()
            .entry(format!("{op} -> {status}"))
            .or_default() += 1;
        answer
    }
}

/// Backends with their own HTTP client and Cosmos meter, counting into `counts`.
async fn backends(
    settings: &Settings,
    counts: &Arc<Mutex<BTreeMap<String, u64>>>,
) -> AzureBackends {
    let transport = Arc::new(Counting {
        inner: Arc::new(ReqwestTransport::new(Duration::from_secs(60)).unwrap()),
        counts: counts.clone(),
    });
    connect(settings, transport)
        .await
        .expect("connect to the local stack")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_big_batch_of_1_kib_outputs_completes_on_the_local_stack() {
    if !support::emulators_enabled("a_big_batch_of_1_kib_outputs_completes_on_the_local_stack") {
        return;
    }
    support::require_reachable("Azurite", &support::queue_endpoint());
    support::require_reachable("the Cosmos emulator", &support::cosmos_endpoint());
    let _ = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::WARN)
        .with_test_writer()
        .try_init();
    let items = item_count();
    let settings = settings();
    let mut registry = BlueprintRegistry::new();
    registry.insert(Blueprint::from_json(BLUEPRINT).unwrap());
    let env = Environment::new(NodeRegistry::with_builtins()).with_blueprints(registry);

    let counts = Arc::new(Mutex::new(BTreeMap::new()));
    let client_side = backends(&settings, &counts).await;
    client_side.ensure_resources().await.unwrap();
    let client = Client::new(client_side.backends.clone(), env.blueprints.clone());
    let config = WorkerConfig {
        concurrency: 16,
        idle_backoff_max: Duration::from_millis(200),
        ..WorkerConfig::default()
    };
    let shutdown = CancellationToken::new();
    let mut stores = Vec::new();
    let mut loops = Vec::new();
    for _ in 0..WORKERS {
        let side = backends(&settings, &counts).await;
        stores.push(side.store.clone());
        let worker = Arc::new(Worker::new(env.clone(), side.backends, config.clone()));
        loops.push(tokio::spawn(worker.run(shutdown.clone())));
    }

    let mut input = Map::new();
    input.insert(
        "items".into(),
        Value::Array((0..items).map(|i| json!(item(i))).collect()),
    );
    let started = Instant::now();
    let run_id = client.start_run("big-batch", input).await.unwrap();
    let result = client
        .wait_for(&run_id, Duration::from_secs(3600))
        .await
        .unwrap();
    let wall = started.elapsed();
    shutdown.cancel();
    for handle in loops {
        handle.await.unwrap();
    }

    assert_eq!(result.status, RunStatus::Completed, "{:?}", result.errors);
    let out = result.context["out"]
        .as_array()
        .expect("the gathered outputs");
    assert_eq!(out.len(), items);
    for (i, value) in out.iter().enumerate() {
        let text = value.as_str().expect("a gathered string");
        assert_eq!(text.len(), ITEM_BYTES, "entry {i}");
        assert_eq!(text, item(i), "entry {i} is out of order or wrong");
    }
    let mut phase = RunPhase::Running;
    for _ in 0..100 {
        phase = client_side
            .store
            .status(&run_id)
            .await
            .unwrap()
            .expect("the status item")
            .value
            .status;
        if phase.is_terminal() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(phase, RunPhase::Completed);

    eprintln!(
        "big batch: {items} items of {ITEM_BYTES} B, {WORKERS} workers, wall {:.1} s",
        wall.as_secs_f64()
    );
    for (i, store) in stores.iter().enumerate() {
        eprintln!(
            "  worker {i}: {} Cosmos requests, {:.1} RU",
            store.request_count(),
            store.request_charge_total()
        );
    }
    eprintln!(
        "  client: {} Cosmos requests, {:.1} RU",
        client_side.store.request_count(),
        client_side.store.request_charge_total()
    );
    for (op, n) in counts.lock().unwrap().iter() {
        eprintln!("  {n:>7}  {op}");
    }
}
