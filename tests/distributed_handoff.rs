//! Successors run by the worker that committed their predecessor: the job's message is
//! handed over to the first successor (one rewrite instead of a delete and a send), the
//! others run alongside under leased guard messages, on the state just committed (no
//! receive, no read), with this worker's commits of a run taking turns (no ETag conflicts
//! among them). A worker that dies mid-chain leaves the guard, which any worker runs once
//! its lease is over.

mod distributed_common;

use async_trait::async_trait;
use distributed_common::Harness;
use flowcraft_azure::Error;
use flowcraft_azure::distributed::job::JobMessage;
use flowcraft_azure::distributed::memory::MemoryQueue;
use flowcraft_azure::distributed::metered::{Meter, Operation};
use flowcraft_azure::distributed::ports::{JobQueue, QueueMessage};
use flowcraft_azure::flow::runtime::RunStatus;
use serde_json::json;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// A blueprint `id` whose `n` nodes `n0 -> n1 -> ...` (each using `uses`, with `params`)
/// form a chain.
fn chain(id: &str, n: usize, uses: &str, params: serde_json::Value) -> String {
    let nodes: Vec<_> = (0..n)
        .map(|i| json!({"id": format!("n{i}"), "uses": uses, "params": params}))
        .collect();
    let edges: Vec<_> = (1..n)
        .map(|i| json!({"source": format!("n{}", i - 1), "target": format!("n{i}")}))
        .collect();
    json!({"id": id, "nodes": nodes, "edges": edges}).to_string()
}

/// A blueprint `id`: a `start` node whose `n` branches `b<k>` are `branch(k)` (a node
/// without its id), all joined by an `all` join `join` when `join` is set.
fn fan_out(id: &str, n: usize, branch: impl Fn(usize) -> serde_json::Value, join: bool) -> String {
    let mut nodes = vec![json!({"id": "start", "uses": "count"})];
    let mut edges = Vec::new();
    for k in 0..n {
        let id = format!("b{k}");
        let mut node = branch(k);
        node["id"] = json!(id);
        nodes.push(node);
        edges.push(json!({"source": "start", "target": id}));
        if join {
            edges.push(json!({"source": id, "target": "join"}));
        }
    }
    if join {
        nodes.push(json!({"id": "join", "uses": "count", "config": {"joinStrategy": "all"}}));
    }
    json!({"id": id, "nodes": nodes, "edges": edges}).to_string()
}

/// A harness whose workers (not its client) go through a meter.
fn metered(blueprint: &str) -> (Harness, Arc<Meter>) {
    let mut h = Harness::new(&[blueprint]);
    let meter = Meter::new();
    h.backends = meter.wrap(&h.backends);
    (h, meter)
}

#[tokio::test(start_paused = true)]
async fn a_chain_is_received_once_and_each_next_node_costs_a_rewrite_and_a_commit() {
    let (mut h, meter) = metered(&chain("c", 10, "count", json!({})));
    let run_id = h.start("c", json!({})).await;
    h.spawn_workers(1);
    assert_eq!(h.wait(&run_id).await.status, RunStatus::Completed);
    for i in 0..10 {
        assert_eq!(h.counter.get(&format!("n{i}")), 1, "n{i} ran once");
    }
    let s = meter.snapshot();
    assert_eq!(s.received_messages(), 1, "only the start job is received");
    assert_eq!(s.calls(Operation::QueueSend), 0, "no successor is sent");
    assert_eq!(
        s.calls(Operation::QueueRewrite),
        9,
        "one hand-over per successor"
    );
    assert_eq!(
        s.calls(Operation::QueueComplete),
        1,
        "one message, deleted at the end"
    );
    assert_eq!(s.calls(Operation::RunsLoad), 1, "the run is read once");
    assert_eq!(s.calls(Operation::RunsCommit), 10, "one commit per node");
    assert_eq!(s.errors(Operation::RunsCommit), 0);
    // Without the hand-over each successor costs a send, a receive, a read and a delete
    // instead of one rewrite: 5 requests per node.
    let receives = s.calls(Operation::QueueReceive);
    let per_node = (s.http_requests() - receives) as f64 / 10.0;
    assert!(
        per_node <= 2.5,
        "{per_node} requests per node besides receives"
    );
    assert!(h.queue.is_empty());
    h.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_fan_out_runs_in_the_committing_worker_without_conflicts_or_reads() {
    const FAN: usize = 16;
    let slow = |k: usize| json!({"uses": "slow", "params": {"ms": (k % 4) + 1}});
    let bp = fan_out("fan", FAN, slow, true);
    let (mut h, meter) = metered(&bp);
    let run_id = h.start("fan", json!({})).await;
    h.spawn_workers(1);
    assert_eq!(h.wait(&run_id).await.status, RunStatus::Completed);
    assert_eq!(h.counter.total(), FAN as u32 + 2, "every node ran once");
    let s = meter.snapshot();
    assert_eq!(s.received_messages(), 1, "only the start job is received");
    assert_eq!(s.errors(Operation::RunsCommit), 0, "no ETag conflict");
    assert_eq!(s.calls(Operation::RunsCommit), FAN as u64 + 2);
    assert_eq!(s.calls(Operation::RunsLoad), 1, "the run is read once");
    assert_eq!(
        s.calls(Operation::QueueSend),
        FAN as u64 - 1,
        "one guard per branch but the one that took over the start's message"
    );
    assert!(h.queue.is_empty());
    h.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_worker_dropped_mid_chain_leaves_a_guard_that_another_worker_completes() {
    let bp = chain("slow", 5, "slow", json!({"ms": 1000}));
    let mut h = Harness::new(&[&bp]);
    let run_id = h.start("slow", json!({})).await;
    let doomed = Arc::new(h.worker());
    tokio::select! {
        _ = doomed.run(CancellationToken::new()) => panic!("the worker stopped by itself"),
        // n0 and n1 are done, n2 runs: the worker dies (its future is dropped).
        _ = tokio::time::sleep(Duration::from_millis(2500)) => {}
    }
    assert_eq!(h.counter.get("n1"), 1);
    assert_eq!(h.counter.get("n3"), 0);
    let texts = h.queue.texts();
    assert_eq!(texts.len(), 1, "one message guards the chain: {texts:?}");
    assert_eq!(JobMessage::decode(&texts[0]).unwrap().node_id, "n2");
    assert!(
        h.queue
            .receive(1, Duration::from_secs(30))
            .await
            .unwrap()
            .is_empty(),
        "the guard stays hidden while its lease lasts"
    );
    h.spawn_workers(1);
    let result = h.wait(&run_id).await;
    assert_eq!(result.status, RunStatus::Completed);
    for i in 0..5 {
        let runs = h.counter.get(&format!("n{i}"));
        let expected = if i == 2 { 2 } else { 1 };
        assert_eq!(runs, expected, "n{i} ran {runs} times");
    }
    assert!(result.context.contains_key("_outputs.n4") || result.context.contains_key("n4"));
    assert!(h.queue.poisoned().is_empty());
    h.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_worker_dropped_mid_fan_out_leaves_a_guard_per_branch_that_another_worker_runs() {
    const FAN: usize = 4;
    let bp = fan_out(
        "fan",
        FAN,
        |_| json!({"uses": "slow", "params": {"ms": 1000}}),
        true,
    );
    let mut h = Harness::new(&[&bp]);
    let run_id = h.start("fan", json!({})).await;
    let doomed = Arc::new(h.worker());
    tokio::select! {
        _ = doomed.run(CancellationToken::new()) => panic!("the worker stopped by itself"),
        // Every branch has started and none has finished: the worker dies.
        _ = tokio::time::sleep(Duration::from_millis(500)) => {}
    }
    for k in 0..FAN {
        assert_eq!(h.counter.get(&format!("b{k}")), 1, "b{k} started");
    }
    let mut guarded: Vec<String> = h
        .queue
        .texts()
        .iter()
        .map(|t| JobMessage::decode(t).unwrap().node_id)
        .collect();
    guarded.sort();
    assert_eq!(guarded, ["b0", "b1", "b2", "b3"], "one guard per branch");
    assert!(
        h.queue
            .receive(1, Duration::from_secs(30))
            .await
            .unwrap()
            .is_empty(),
        "the guards stay hidden while their leases last"
    );
    h.spawn_workers(1);
    assert_eq!(h.wait(&run_id).await.status, RunStatus::Completed);
    assert_eq!(h.counter.get("start"), 1);
    for k in 0..FAN {
        assert_eq!(
            h.counter.get(&format!("b{k}")),
            2,
            "b{k} ran again from its guard"
        );
    }
    assert_eq!(h.counter.get("join"), 1);
    assert!(h.queue.poisoned().is_empty());
    h.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_long_chain_goes_back_to_the_queue_after_the_local_hop_limit() {
    use flowcraft_azure::distributed::polling::MAX_LOCAL_HOPS;
    let n = MAX_LOCAL_HOPS as usize + 6;
    let (mut h, meter) = metered(&chain("long", n, "count", json!({})));
    let run_id = h.start("long", json!({})).await;
    h.spawn_workers(1);
    assert_eq!(h.wait(&run_id).await.status, RunStatus::Completed);
    assert_eq!(h.counter.total() as usize, n, "every node ran once");
    let s = meter.snapshot();
    assert_eq!(
        s.calls(Operation::QueueSend),
        1,
        "the successor after the limit is sent"
    );
    assert_eq!(s.received_messages(), 2, "and received like any job");
    assert_eq!(s.calls(Operation::QueueRewrite), n as u64 - 2);
    assert_eq!(s.calls(Operation::QueueComplete), 2);
    h.stop().await;
}

/// A memory queue whose sends take `SEND_TIME` each (a busy queue service).
struct SlowSends(Arc<MemoryQueue>);

const SEND_TIME: Duration = Duration::from_millis(300);

#[async_trait]
impl JobQueue for SlowSends {
    async fn send(&self, text: &str, delay: Duration) -> Result<(), Error> {
        tokio::time::sleep(SEND_TIME).await;
        self.0.send(text, delay).await
    }
    async fn receive(&self, max: usize, visibility: Duration) -> Result<Vec<QueueMessage>, Error> {
        self.0.receive(max, visibility).await
    }
    async fn renew(&self, id: &str, receipt: &str, v: Duration) -> Result<String, Error> {
        self.0.renew(id, receipt, v).await
    }
    async fn send_leased(&self, text: &str, lease: Duration) -> Result<QueueMessage, Error> {
        self.0.send_leased(text, lease).await
    }
    async fn rewrite(&self, id: &str, r: &str, text: &str, v: Duration) -> Result<String, Error> {
        self.0.rewrite(id, r, text, v).await
    }
    async fn complete(&self, id: &str, receipt: &str) -> Result<(), Error> {
        self.0.complete(id, receipt).await
    }
    async fn release(&self, id: &str, receipt: &str, delay: Duration) -> Result<(), Error> {
        self.0.release(id, receipt, delay).await
    }
    async fn move_to_poison(&self, m: &QueueMessage, reason: &str) -> Result<(), Error> {
        self.0.move_to_poison(m, reason).await
    }
}

#[tokio::test(start_paused = true)]
async fn a_wide_fan_out_keeps_its_lease_while_sending_successors_and_sends_each_once() {
    const FAN: usize = 64;
    let bp = fan_out("wide", FAN, |_| json!({"uses": "count"}), false);
    let wrap = |q: Arc<MemoryQueue>| Arc::new(SlowSends(q)) as Arc<dyn JobQueue>;
    let mut h = Harness::with_queue(&[&bp], Some(&wrap));
    // Few free slots: most successors are sent for any worker, which takes longer than
    // one lease (60 sends of 300 ms, a few at a time, against a 3 s lease).
    h.config.concurrency = 4;
    h.config.visibility = Duration::from_secs(3);
    let meter = Meter::new();
    h.backends = meter.wrap(&h.backends);
    let run_id = h.start("wide", json!({})).await;
    h.spawn_workers(2);
    assert_eq!(h.wait(&run_id).await.status, RunStatus::Completed);
    assert_eq!(h.counter.get("start"), 1);
    let s = meter.snapshot();
    // Guards and plain sends; one successor took over the start job's message.
    assert_eq!(
        s.calls(Operation::QueueSend),
        FAN as u64 - 1,
        "every successor is sent once: the start job's message was not redelivered and \
         replayed"
    );
    for k in 0..FAN {
        assert_eq!(h.counter.get(&format!("b{k}")), 1, "b{k} ran once");
    }
    h.stop().await;
}
