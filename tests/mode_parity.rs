//! Mode parity on the in-memory backends: the shared suite in `tests/parity/` runs every
//! fixture blueprint and the tricky shapes in-process and through the distributed core on
//! in-memory backends, and the two must agree. `tests/azure_parity.rs` runs the same suite on
//! the Azure backends.

mod parity;

use flowcraft_azure::distributed::core::Backends;
use flowcraft_azure::flow::runtime::RunStatus;
use parity::{Distributed, in_process, prepared_inline};
use serde_json::json;

/// The in-memory backends, fresh for each distributed run.
async fn backends_for_parity() -> Backends {
    Backends::in_memory()
}

/// Every case of the shared suite runs here.
fn parity_enabled(_test: &str) -> bool {
    true
}

/// A batch may have more workers than the iteration guard allows executions of ONE node (the
/// guard is for endless loops; Flowcraft counts orchestrator passes, and all workers of a
/// batch run in one pass): in-process this run completes.
///
/// Legitimate difference: a distributed run keeps its whole state in ONE run document, which
/// is limited to 2 MB (the Cosmos item limit, enforced by the in-memory store too). The
/// scatter's commit of 10005 worker definitions and items is about 6 MB, so the distributed
/// run fails with a "too large" error instead (at once: the size limit is permanent).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_huge_batch_completes_in_process_but_exceeds_the_distributed_document_limit() {
    let items: Vec<u64> = (0..10_005).collect();
    let p = prepared_inline(json!({"id": "big-batch", "nodes": [
        {"id": "load", "uses": "set", "params": {"values": {"items": items}}},
        {"id": "s", "uses": "batch-scatter", "inputs": "items",
         "params": {"workerUsesKey": "echo", "gatherNodeId": "g"}},
        {"id": "g", "uses": "batch-gather"},
        {"id": "total", "uses": "sum", "inputs": "g"}],
      "edges": [{"source": "load", "target": "s"}, {"source": "s", "target": "g"},
                {"source": "g", "target": "total"}]}));
    let local = in_process(&p).await;
    assert_eq!(local.status, RunStatus::Completed, "{:?}", local.errors);
    assert_eq!(
        local.context.get("total"),
        Some(&json!(10_005 * 10_004 / 2))
    );

    let distributed = Distributed::start(&p).await;
    let (_, remote) = distributed.run(&p.blueprint, p.initial.clone()).await;
    distributed.stop().await;
    assert_eq!(remote.status, RunStatus::Failed);
    assert!(
        remote
            .errors
            .iter()
            .any(|e| e.message.contains("too large")),
        "{:?}",
        remote.errors
    );
}
