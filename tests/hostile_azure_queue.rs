//! A hostile message on the real queue: 64 KiB of garbage put on an Azurite queue is taken by
//! the worker core over `AzureJobQueue` and moved, at its first delivery, to `<queue>-poison`
//! with the reason in the envelope; nothing is left on the queue. Switched on by
//! `FLOWCRAFT_EMULATORS=1` (scripts/test.sh), like the other emulator tests.

mod support;

use flowcraft_azure::adapter::queue_adapter::AzureJobQueue;
use flowcraft_azure::distributed::core::Backends;
use flowcraft_azure::distributed::memory::{MemoryCoordinationStore, MemoryRunStore};
use flowcraft_azure::distributed::metered::{Meter, Operation};
use flowcraft_azure::distributed::ports::JobQueue;
use flowcraft_azure::distributed::worker::{Worker, WorkerConfig};
use flowcraft_azure::flow::execute::Environment;
use flowcraft_azure::flow::node::NodeRegistry;
use serde_json::Value;
use std::sync::Arc;
use std::time::Duration;
use support::{emulators_enabled, queue_client, unique};
use tokio_util::sync::CancellationToken;

/// Printable garbage (no XML-special characters, so the text is exactly 64 KiB on the wire
/// after escaping: Queue Storage's limit).
fn garbage(len: usize) -> String {
    let alphabet: Vec<char> = (b' '..=b'~')
        .filter(|b| !b"<>&\"'".contains(b))
        .map(char::from)
        .collect();
    (0..len as u64)
        .map(|i| alphabet[((i.wrapping_mul(2_654_435_761) >> 7) % alphabet.len() as u64) as usize])
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_64_kib_garbage_message_goes_to_the_poison_queue_with_its_reason() {
    if !emulators_enabled("a_64_kib_garbage_message_goes_to_the_poison_queue_with_its_reason") {
        return;
    }
    let queue = AzureJobQueue::new(queue_client(&unique("hostile"))).unwrap();
    queue.ensure_resources().await.unwrap();
    let text = garbage(64 * 1024);
    queue.send(&text, Duration::ZERO).await.unwrap();

    let meter = Meter::new();
    let backends = meter.wrap(&Backends::new(
        Arc::new(queue.clone()),
        Arc::new(MemoryRunStore::new()),
        Arc::new(MemoryCoordinationStore::new()),
    ));
    let worker = Arc::new(Worker::new(
        Environment::new(NodeRegistry::new()),
        backends,
        WorkerConfig::default(),
    ));
    let shutdown = CancellationToken::new();
    let handle = tokio::spawn(worker.run(shutdown.clone()));
    // Wait (bounded) until the worker has moved it; not a timing assertion.
    let mut poisoned = Vec::new();
    for _ in 0..300 {
        poisoned = support::peek_all(queue.poison_client()).await;
        if !poisoned.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    shutdown.cancel();
    handle.await.unwrap();

    let calls = meter.snapshot();
    println!(
        "hostile[azure 64 KiB garbage]: poisoned envelope of {} bytes; calls {:?}",
        poisoned.first().map_or(0, |p| p.text.len()),
        calls.nonzero()
    );
    assert_eq!(poisoned.len(), 1, "the garbage reaches the poison queue");
    assert!(
        support::peek_all(queue.client()).await.is_empty(),
        "and leaves the queue"
    );
    assert_eq!(calls.calls(Operation::QueueMoveToPoison), 1);
    assert_eq!(
        calls.calls(Operation::RunsLoad),
        0,
        "garbage names no run to load"
    );
    let envelope: Value = serde_json::from_str(&poisoned[0].text).unwrap();
    let reason = envelope["reason"].as_str().unwrap();
    assert!(reason.contains("undecodable job message"), "{reason}");
    assert_eq!(
        envelope["dequeueCount"], 1,
        "poisoned at the first delivery"
    );
    // The envelope could not hold the whole 64 KiB text as well: it keeps the start and says so.
    let kept = envelope["text"].as_str().unwrap();
    assert!(
        text.starts_with(kept),
        "the envelope keeps the message text as it was"
    );
    if kept.len() < text.len() {
        assert_eq!(envelope["truncated"], true);
        assert_eq!(envelope["textLength"], text.len());
    }
}
