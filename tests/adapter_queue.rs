//! The job queue port on Azurite (`AzureJobQueue`): send, receive, renew, stale receipts,
//! complete, release, the poison envelope, delay rounding, `ensure_resources`, Redis
//! wake-ups between two queue handles, and the distributed core running a chain over it
//! (Azure queue + in-memory run store + Redis coordination). Switched on by
//! `FLOWCRAFT_EMULATORS=1` (scripts/test.sh); switched on, an unreachable emulator fails.

mod support;

use async_trait::async_trait;
use flowcraft_azure::Error;
use flowcraft_azure::adapter::queue_adapter::{AzureJobQueue, AzureQueueAdapter};
use flowcraft_azure::adapter::redis_store::RedisCoordinationStore;
use flowcraft_azure::adapter::settings::Settings;
use flowcraft_azure::azure::queue::QueueClient;
use flowcraft_azure::distributed::client::Client;
use flowcraft_azure::distributed::core::Backends;
use flowcraft_azure::distributed::job::JobMessage;
use flowcraft_azure::distributed::memory::MemoryRunStore;
use flowcraft_azure::distributed::ports::{JobQueue, QueueMessage};
use flowcraft_azure::flow::blueprint::Blueprint;
use flowcraft_azure::flow::execute::{BlueprintRegistry, Environment};
use flowcraft_azure::flow::node::NodeRegistry;
use flowcraft_azure::flow::runtime::RunStatus;
use flowcraft_azure::wire::transport::{HttpRequest, HttpResponse, Transport};
use serde_json::{Value, json};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use support::{emulators_enabled, queue_client, queue_endpoint, require_reachable, unique};
use tokio_util::sync::CancellationToken;

const VISIBILITY: Duration = Duration::from_secs(30);

/// Records the method and URL of every request it forwards.
#[derive(Debug)]
struct Recording {
    inner: Arc<dyn Transport>,
    seen: Mutex<Vec<(String, String)>>,
}

impl Recording {
    fn new() -> Arc<Self> {
        Arc::new(Recording {
            inner: support::transport(),
            seen: Mutex::new(Vec::new()),
        })
    }

    fn urls(&self, method: &str) -> Vec<String> {
        let seen = self.seen.lock().unwrap();
        seen.iter()
            .filter(|(m, _)| m == method)
            .map(|(_, u)| u.clone())
            .collect()
    }
}

#[async_trait]
impl Transport for Recording {
    async fn send(&self, request: HttpRequest) -> Result<HttpResponse, Error> {
        self.seen
            .lock()
            .unwrap()
            .push((request.method.to_string(), request.url.to_string()));
        self.inner.send(request).await
    }
}

/// A port over a fresh queue (and its poison queue), both created.
async fn fresh() -> AzureJobQueue {
    let queue = AzureJobQueue::new(queue_client(&unique("aq"))).unwrap();
    queue.ensure_resources().await.unwrap();
    queue
}

/// A port whose requests go through a [`Recording`] transport.
async fn recorded() -> (AzureJobQueue, Arc<Recording>) {
    require_reachable("Azurite (queue)", &queue_endpoint());
    let recording = Recording::new();
    let pipeline = support::storage_pipeline_with(recording.clone(), &support::storage_key());
    let client = QueueClient::new(pipeline, &queue_endpoint(), &unique("aqr")).unwrap();
    let queue = AzureJobQueue::new(client).unwrap();
    queue.ensure_resources().await.unwrap();
    (queue, recording)
}

async fn receive_one(queue: &AzureJobQueue) -> QueueMessage {
    let mut got = queue.receive(32, VISIBILITY).await.unwrap();
    assert_eq!(got.len(), 1, "expected exactly one message");
    got.remove(0)
}

/// Receives until a message arrives (delayed messages), for at most `limit`.
async fn receive_eventually(queue: &AzureJobQueue, limit: Duration) -> Vec<QueueMessage> {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        let got = queue.receive(32, VISIBILITY).await.unwrap();
        if !got.is_empty() || tokio::time::Instant::now() > deadline {
            return got;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn a_sent_job_is_received_with_its_text_and_completed_once_even_when_retried() {
    if !emulators_enabled(
        "a_sent_job_is_received_with_its_text_and_completed_once_even_when_retried",
    ) {
        return;
    }
    let queue = fresh().await;
    let text = JobMessage::execute("run-1", "bp", "a", 1).encode().unwrap();
    queue.send(&text, Duration::ZERO).await.unwrap();
    let msg = receive_one(&queue).await;
    assert_eq!(msg.text, text, "base64 JSON goes over the wire unchanged");
    assert_eq!(JobMessage::decode(&msg.text).unwrap().node_id, "a");
    assert_eq!(msg.dequeue_count, 1);
    queue.complete(&msg.id, &msg.receipt).await.unwrap();
    // A retried delete (the first answer was lost) finds nothing: still success.
    queue.complete(&msg.id, &msg.receipt).await.unwrap();
    assert!(queue.receive(32, VISIBILITY).await.unwrap().is_empty());
    assert!(support::peek_all(queue.client()).await.is_empty());
}

#[tokio::test]
async fn receive_takes_batches_of_up_to_32_and_refuses_more() {
    if !emulators_enabled("receive_takes_batches_of_up_to_32_and_refuses_more") {
        return;
    }
    let queue = fresh().await;
    for i in 0..35 {
        queue.send(&format!("m{i}"), Duration::ZERO).await.unwrap();
    }
    let first = queue.receive(32, VISIBILITY).await.unwrap();
    assert_eq!(first.len(), 32);
    let rest = queue.receive(32, VISIBILITY).await.unwrap();
    assert_eq!(rest.len(), 3);
    let err = queue.receive(33, VISIBILITY).await.unwrap_err();
    assert!(matches!(err, Error::InvalidInput(_)), "{err:?}");
}

#[tokio::test]
async fn renew_gives_a_fresh_receipt_and_a_stale_or_unknown_receipt_is_a_lost_lease() {
    if !emulators_enabled(
        "renew_gives_a_fresh_receipt_and_a_stale_or_unknown_receipt_is_a_lost_lease",
    ) {
        return;
    }
    let queue = fresh().await;
    queue.send("job", Duration::ZERO).await.unwrap();
    let msg = receive_one(&queue).await;
    let fresh_receipt = queue
        .renew(&msg.id, &msg.receipt, VISIBILITY)
        .await
        .unwrap();
    assert_ne!(fresh_receipt, msg.receipt);
    // The old receipt stopped working: 400 PopReceiptMismatch.
    let stale = queue
        .renew(&msg.id, &msg.receipt, VISIBILITY)
        .await
        .unwrap_err();
    assert!(matches!(stale, Error::PreconditionFailed(_)), "{stale:?}");
    // Still leased: nobody else receives it.
    assert!(queue.receive(32, VISIBILITY).await.unwrap().is_empty());
    queue.complete(&msg.id, &fresh_receipt).await.unwrap();
    // The message is gone: 404 MessageNotFound is a lost lease too.
    let gone = queue
        .renew(&msg.id, &fresh_receipt, VISIBILITY)
        .await
        .unwrap_err();
    assert!(matches!(gone, Error::PreconditionFailed(_)), "{gone:?}");
    let gone = queue
        .release(&msg.id, &fresh_receipt, Duration::ZERO)
        .await
        .unwrap_err();
    assert!(matches!(gone, Error::PreconditionFailed(_)), "{gone:?}");
}

#[tokio::test]
async fn a_leased_send_stays_hidden_and_its_message_is_rewritten_renewed_and_deleted() {
    if !emulators_enabled(
        "a_leased_send_stays_hidden_and_its_message_is_rewritten_renewed_and_deleted",
    ) {
        return;
    }
    let queue = fresh().await;
    let first = JobMessage::execute("run-1", "bp", "a", 1).encode().unwrap();
    let guard = queue
        .send_leased(&first, Duration::from_secs(30))
        .await
        .unwrap();
    assert_eq!(guard.text, first);
    // Hidden for its lease: nobody receives it.
    assert!(queue.receive(32, VISIBILITY).await.unwrap().is_empty());
    // Put Message's pop receipt works at once: hand the message over to a successor.
    let next = JobMessage::execute("run-1", "bp", "b", 2).encode().unwrap();
    let receipt = queue
        .rewrite(&guard.id, &guard.receipt, &next, Duration::from_secs(1))
        .await
        .unwrap();
    assert_ne!(receipt, guard.receipt);
    let stale = queue
        .rewrite(&guard.id, &guard.receipt, &next, VISIBILITY)
        .await
        .unwrap_err();
    assert!(matches!(stale, Error::PreconditionFailed(_)), "{stale:?}");
    // Once the (shortened) lease is over, anyone receives the successor's job.
    let got = receive_eventually(&queue, Duration::from_secs(10)).await;
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].id, guard.id);
    assert_eq!(JobMessage::decode(&got[0].text).unwrap().node_id, "b");
    queue.complete(&got[0].id, &got[0].receipt).await.unwrap();
    // A guard completed by its sender never shows up.
    let other = queue.send_leased("x", VISIBILITY).await.unwrap();
    let renewed = queue
        .renew(&other.id, &other.receipt, VISIBILITY)
        .await
        .unwrap();
    queue.complete(&other.id, &renewed).await.unwrap();
    assert!(support::peek_all(queue.client()).await.is_empty());
}

#[tokio::test]
async fn release_without_delay_makes_the_message_receivable_again() {
    if !emulators_enabled("release_without_delay_makes_the_message_receivable_again") {
        return;
    }
    let queue = fresh().await;
    queue.send("job", Duration::ZERO).await.unwrap();
    let msg = receive_one(&queue).await;
    queue
        .release(&msg.id, &msg.receipt, Duration::ZERO)
        .await
        .unwrap();
    let again = receive_one(&queue).await;
    assert_eq!(again.id, msg.id);
    assert_eq!(again.dequeue_count, 2);
    // A stale receipt (from before the release) cannot delete it.
    let err = queue.complete(&msg.id, &msg.receipt).await.unwrap_err();
    assert!(matches!(err, Error::PreconditionFailed(_)), "{err:?}");
}

#[tokio::test]
async fn sub_second_delays_go_out_as_one_second_and_the_message_arrives() {
    if !emulators_enabled("sub_second_delays_go_out_as_one_second_and_the_message_arrives") {
        return;
    }
    let (queue, recording) = recorded().await;
    queue
        .send("soon", Duration::from_millis(300))
        .await
        .unwrap();
    queue.send("now", Duration::ZERO).await.unwrap();
    let posts = recording.urls("POST");
    assert!(posts[0].contains("visibilitytimeout=1&"), "{}", posts[0]);
    assert!(!posts[1].contains("visibilitytimeout"), "{}", posts[1]);
    let now = receive_one(&queue).await;
    assert_eq!(now.text, "now");
    let soon = receive_eventually(&queue, Duration::from_secs(15)).await;
    assert_eq!(soon.len(), 1);
    assert_eq!(soon[0].text, "soon");
    // Releasing with a sub-second delay rounds up too.
    queue
        .release(&soon[0].id, &soon[0].receipt, Duration::from_millis(1))
        .await
        .unwrap();
    let puts = recording.urls("PUT");
    assert!(
        puts.last().unwrap().ends_with("visibilitytimeout=1"),
        "{puts:?}"
    );
}

#[tokio::test]
async fn a_poisoned_message_moves_to_the_poison_queue_as_a_json_envelope() {
    if !emulators_enabled("a_poisoned_message_moves_to_the_poison_queue_as_a_json_envelope") {
        return;
    }
    let queue = fresh().await;
    let text = JobMessage::execute("run-p", "bp", "n", 1).encode().unwrap();
    queue.send(&text, Duration::ZERO).await.unwrap();
    let msg = receive_one(&queue).await;
    queue
        .move_to_poison(&msg, "delivered 6 times (limit 5)")
        .await
        .unwrap();
    assert!(support::peek_all(queue.client()).await.is_empty());
    let poisoned = support::peek_all(queue.poison_client()).await;
    assert_eq!(poisoned.len(), 1);
    let envelope: Value = serde_json::from_str(&poisoned[0].text).unwrap();
    assert_eq!(envelope["reason"], "delivered 6 times (limit 5)");
    assert_eq!(envelope["text"], json!(text));
    assert_eq!(envelope["id"], json!(msg.id));
    assert_eq!(envelope["dequeueCount"], 1);
    assert_eq!(envelope["queue"], json!(queue.client().name()));
    assert!(
        chrono::DateTime::parse_from_rfc3339(envelope["at"].as_str().unwrap()).is_ok(),
        "{envelope}"
    );
}

#[tokio::test]
async fn ensure_resources_creates_both_queues_once() {
    if !emulators_enabled("ensure_resources_creates_both_queues_once") {
        return;
    }
    let queue = AzureJobQueue::new(queue_client(&unique("ens"))).unwrap();
    let created = queue.ensure_resources().await.unwrap();
    assert_eq!(created.len(), 2, "{created:?}");
    assert!(created[0].contains(queue.client().name()));
    assert!(created[1].contains("-poison"));
    assert!(queue.ensure_resources().await.unwrap().is_empty());
    queue.poison_client().metadata().await.unwrap();
}

fn redis_url() -> String {
    std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:16379".to_string())
}

#[tokio::test]
async fn a_send_from_another_process_wakes_an_idle_worker_through_redis() {
    if !emulators_enabled("a_send_from_another_process_wakes_an_idle_worker_through_redis") {
        return;
    }
    let redis = Arc::new(RedisCoordinationStore::connect(&redis_url()).await.unwrap());
    redis.ping().await.expect("redis answers");
    let name = unique("wake");
    let worker_side = AzureJobQueue::new(queue_client(&name))
        .unwrap()
        .with_wakeups(redis.clone());
    worker_side.ensure_resources().await.unwrap();
    // The sender is another process: its own Redis connection.
    let other = Arc::new(RedisCoordinationStore::connect(&redis_url()).await.unwrap());
    let sender = AzureJobQueue::new(queue_client(&name))
        .unwrap()
        .with_wakeups(other);
    let waiter = tokio::spawn(async move {
        worker_side.wait_for_work(Duration::from_secs(120)).await;
        worker_side
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    sender.send("job", Duration::ZERO).await.unwrap();
    // Without the wake-up the wait would last 120 s.
    let worker_side = tokio::time::timeout(Duration::from_secs(60), waiter)
        .await
        .expect("woken long before the poll pause ended")
        .unwrap();
    assert_eq!(receive_one(&worker_side).await.text, "job");
}

fn chain_blueprint(id: &str, length: usize) -> Blueprint {
    let nodes: Vec<Value> = (0..length)
        .map(|i| {
            if i == 0 {
                json!({"id": "n0", "uses": "set", "params": {"values": {"seed": 1}}})
            } else {
                json!({"id": format!("n{i}"), "uses": "echo"})
            }
        })
        .collect();
    let edges: Vec<Value> = (1..length)
        .map(|i| json!({"source": format!("n{}", i - 1), "target": format!("n{i}")}))
        .collect();
    let text = json!({"id": id, "nodes": nodes, "edges": edges}).to_string();
    Blueprint::from_json(&text).expect("chain blueprint")
}

/// The real core over the Azure queue, an in-memory run store and Redis coordination: a
/// chain completes with every output, nothing is left on the queue or poisoned, and the
/// coordination key the client writes lands in Redis under the prefix.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_core_runs_a_chain_over_the_azure_queue_and_redis() {
    if !emulators_enabled("the_core_runs_a_chain_over_the_azure_queue_and_redis") {
        return;
    }
    let redis = Arc::new(RedisCoordinationStore::connect(&redis_url()).await.unwrap());
    redis.ping().await.expect("redis answers");
    let queue = Arc::new(
        AzureJobQueue::new(queue_client(&unique("chain")))
            .unwrap()
            .with_wakeups(redis.clone()),
    );
    queue.ensure_resources().await.unwrap();
    let backends = Backends::new(
        queue.clone(),
        Arc::new(MemoryRunStore::new()),
        redis.clone(),
    );
    let blueprint = chain_blueprint(&unique("chain-bp"), 6);
    let mut registry = BlueprintRegistry::new();
    registry.insert(blueprint.clone());
    let env = Environment::new(NodeRegistry::with_builtins()).with_blueprints(registry);
    let mut settings = Settings::new(
        support::storage_connection(&support::storage_key()),
        support::cosmos_connection(),
    );
    settings.reconciler = true;
    settings.poll_max = Some(Duration::from_secs(5));
    let adapter = AzureQueueAdapter::from_parts(
        env.clone(),
        backends.clone(),
        Some(redis.clone()),
        &settings,
    );
    let shutdown = CancellationToken::new();
    let running = tokio::spawn(adapter.run(shutdown.clone()));
    let client = Client::new(backends, env.blueprints.clone());
    let run_id = client
        .start_run(blueprint.id(), serde_json::Map::new())
        .await
        .unwrap();
    let result = client
        .wait_for(&run_id, Duration::from_secs(120))
        .await
        .unwrap();
    shutdown.cancel();
    running.await.unwrap().unwrap();
    assert_eq!(result.status, RunStatus::Completed, "{result:?}");
    for i in 0..6 {
        assert!(
            result.context.contains_key(&format!("_outputs.n{i}")),
            "n{i} missing: {result:?}"
        );
    }
    assert!(support::peek_all(queue.client()).await.is_empty());
    assert!(support::peek_all(queue.poison_client()).await.is_empty());
    use flowcraft_azure::distributed::ports::CoordinationStore;
    assert_eq!(
        redis
            .get(&format!("flowcraft:blueprint:{run_id}"))
            .await
            .unwrap()
            .as_deref(),
        Some(blueprint.id())
    );
}

/// `adapter::connect` from the environment's settings: the queue is the configured one
/// (created by `ensure_resources`), sends go through it, and with `REDIS_URL` the
/// coordination port writes to Redis.
#[tokio::test]
async fn connect_builds_the_backends_from_the_settings() {
    if !emulators_enabled("connect_builds_the_backends_from_the_settings") {
        return;
    }
    let queue_name = unique("conn");
    let settings = Settings::from_lookup(|name| match name {
        "FLOWCRAFT_QUEUE" => Some(queue_name.clone()),
        _ => std::env::var(name).ok(),
    })
    .unwrap();
    let azure = flowcraft_azure::adapter::connect(&settings, support::transport())
        .await
        .unwrap();
    assert_eq!(azure.queue.client().name(), queue_name);
    assert_eq!(azure.redis.is_some(), settings.redis_url.is_some());
    assert_eq!(azure.queue.ensure_resources().await.unwrap().len(), 2);
    azure
        .backends
        .queue
        .send("hello", Duration::ZERO)
        .await
        .unwrap();
    assert_eq!(receive_one(&azure.queue).await.text, "hello");
    let key = format!("flowcraft:{}", unique("connect"));
    use flowcraft_azure::distributed::ports::CoordinationStore;
    assert!(
        azure
            .backends
            .coordination
            .set_if_not_exists(&key, "1", Duration::from_secs(30))
            .await
            .unwrap()
    );
    if let Some(redis) = &azure.redis {
        assert_eq!(redis.get(&key).await.unwrap().as_deref(), Some("1"));
    }
}

/// `FLOWCRAFT_QUEUE_MESSAGE_ENCODING=raw`: jobs go on the queue as their JSON (not base64),
/// and a worker still runs them: a chain completes over the raw queue.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raw_encoded_jobs_are_sent_as_json_and_run_by_a_worker() {
    if !emulators_enabled("raw_encoded_jobs_are_sent_as_json_and_run_by_a_worker") {
        return;
    }
    let queue_name = unique("raw");
    let settings = Settings::from_lookup(|name| match name {
        "FLOWCRAFT_QUEUE" => Some(queue_name.clone()),
        "FLOWCRAFT_QUEUE_MESSAGE_ENCODING" => Some("raw".to_string()),
        "FLOWCRAFT_POLL_MAX_MS" => Some("200".to_string()),
        "REDIS_URL" => None,
        _ => std::env::var(name).ok(),
    })
    .unwrap();
    let azure = flowcraft_azure::adapter::connect(&settings, support::transport())
        .await
        .unwrap();
    azure.queue.ensure_resources().await.unwrap();
    let backends = Backends::new(
        azure.queue.clone(),
        Arc::new(MemoryRunStore::new()),
        Arc::new(flowcraft_azure::distributed::memory::MemoryCoordinationStore::new()),
    );
    let blueprint = chain_blueprint(&unique("raw-bp"), 4);
    let mut registry = BlueprintRegistry::new();
    registry.insert(blueprint.clone());
    let env = Environment::new(NodeRegistry::with_builtins()).with_blueprints(registry);
    let client = Client::new(backends.clone(), env.blueprints.clone());
    let run_id = client
        .start_run(blueprint.id(), serde_json::Map::new())
        .await
        .unwrap();
    // The first job is on the queue as JSON text.
    let peeked = support::peek_all(azure.queue.client()).await;
    assert_eq!(peeked.len(), 1, "{peeked:?}");
    let job: Value = serde_json::from_str(&peeked[0].text).expect("raw JSON on the queue");
    assert_eq!(job["runId"], json!(run_id));
    assert_eq!(job["nodeId"], json!("n0"));

    let adapter = AzureQueueAdapter::from_parts(env, backends, None, &settings);
    let shutdown = CancellationToken::new();
    let running = tokio::spawn(adapter.run(shutdown.clone()));
    let result = client
        .wait_for(&run_id, Duration::from_secs(120))
        .await
        .unwrap();
    shutdown.cancel();
    running.await.unwrap().unwrap();
    assert_eq!(result.status, RunStatus::Completed, "{result:?}");
    for i in 0..4 {
        assert!(
            result.context.contains_key(&format!("_outputs.n{i}")),
            "n{i} missing: {result:?}"
        );
    }
    assert!(support::peek_all(azure.queue.client()).await.is_empty());
    assert!(
        support::peek_all(azure.queue.poison_client())
            .await
            .is_empty()
    );
}
