//! Counting wrappers for the three ports, to audit request budgets.
//!
//! [`MeteredQueue`], [`MeteredRunStore`] and [`MeteredCoordinationStore`] wrap any
//! implementation of [`JobQueue`], [`RunStore`] and [`CoordinationStore`], forward every call
//! unchanged and count it (and whether it failed) in a shared [`Meter`]. A [`MeterSnapshot`]
//! says, per [`Operation`], how many calls were made, and projects them onto what the Azure
//! backends send for each call ([`Operation::cost`]):
//!
//! | port | operation | Azure request(s) per call |
//! |---|---|---|
//! | queue | `send`, `send_leased` | 1 HTTP `POST .../messages` (Put Message) |
//! | queue | `receive` | 1 HTTP `GET .../messages?numofmessages=N` (one per batch, empty or not) |
//! | queue | `renew` | 1 HTTP `PUT .../messages/{id}?popreceipt=..&visibilitytimeout=..` (Update Message) |
//! | queue | `complete` | 1 HTTP `DELETE .../messages/{id}?popreceipt=..` |
//! | queue | `release` | 1 HTTP `PUT .../messages/{id}` (Update Message, the delay as visibility) |
//! | queue | `move_to_poison` | 2 HTTP: `POST` to `<queue>-poison`, `DELETE` from the queue |
//! | queue | `rewrite` | 1 HTTP `PUT .../messages/{id}?popreceipt=..` with the new text (Update Message) |
//! | runs | `create_run` | 2 Cosmos: `POST` run item, `POST` status item |
//! | runs | `load` | 1 Cosmos point read (`GET .../docs/{run}`) |
//! | runs | `commit` | 1 Cosmos replace with `If-Match` (`PUT .../docs/{run}`) |
//! | runs | `status` | 1 Cosmos point read of the status item |
//! | runs | `write_status` | 1 Cosmos create (`POST`) or replace with `If-Match` (`PUT`) |
//! | runs | `list_stalled` | 1 Cosmos query page (`POST .../docs`, query) |
//! | coordination | every operation | 1 Redis round trip (a command or one Lua script), not HTTP |
//!
//! The projection assumes every request succeeds at the first try: throttling (429/503) and
//! transport retries by the HTTP pipeline come on top. Failed calls (an ETag conflict, a stale
//! pop receipt) are counted, because the request was still sent.
//!
//! ```
//! use flowcraft_azure::distributed::core::Backends;
//! use flowcraft_azure::distributed::metered::{Meter, Operation, Service};
//! use std::time::Duration;
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! let meter = Meter::new();
//! let backends = meter.wrap(&Backends::in_memory());
//! backends.queue.send("job", Duration::ZERO).await.unwrap();
//! let got = backends.queue.receive(32, Duration::from_secs(30)).await.unwrap();
//! backends.queue.complete(&got[0].id, &got[0].receipt).await.unwrap();
//!
//! let counts = meter.snapshot();
//! assert_eq!(counts.calls(Operation::QueueSend), 1);
//! assert_eq!(counts.requests(Service::QueueStorage), 3);
//! # });
//! ```

use crate::Error;
use crate::distributed::core::Backends;
use crate::distributed::ports::{
    CoordinationStore, JobQueue, Page, QueueMessage, RunPhase, RunStore, StatusRecord, Versioned,
    WorkerResult,
};
use crate::distributed::state::RunState;
use async_trait::async_trait;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// The service a port operation goes to in the Azure deployment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Service {
    /// Azure Queue Storage (HTTP).
    QueueStorage,
    /// Azure Cosmos DB (HTTP).
    Cosmos,
    /// Redis (RESP commands over TCP, not HTTP).
    Redis,
}

impl Service {
    /// True for the services spoken to over HTTP.
    pub fn is_http(self) -> bool {
        !matches!(self, Service::Redis)
    }

    /// A short display name.
    pub fn name(self) -> &'static str {
        match self {
            Service::QueueStorage => "Queue Storage",
            Service::Cosmos => "Cosmos DB",
            Service::Redis => "Redis",
        }
    }
}

/// What one call of an operation costs on the Azure backends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cost {
    /// Where the requests go.
    pub service: Service,
    /// Requests (HTTP) or round trips (Redis) per call.
    pub requests: u64,
    /// What is sent, in words.
    pub wire: &'static str,
}

/// One operation of one of the three ports. (Its counters are indexed by declaration
/// order, which [`Operation::ALL`] follows; a test pins that.)
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Operation {
    /// [`JobQueue::send`].
    QueueSend,
    /// [`JobQueue::receive`].
    QueueReceive,
    /// [`JobQueue::renew`].
    QueueRenew,
    /// [`JobQueue::complete`].
    QueueComplete,
    /// [`JobQueue::release`].
    QueueRelease,
    /// [`JobQueue::move_to_poison`].
    QueueMoveToPoison,
    /// [`JobQueue::rewrite`].
    QueueRewrite,
    /// [`RunStore::create_run`].
    RunsCreate,
    /// [`RunStore::load`].
    RunsLoad,
    /// [`RunStore::commit`].
    RunsCommit,
    /// [`RunStore::status`].
    RunsStatus,
    /// [`RunStore::write_status`].
    RunsWriteStatus,
    /// [`RunStore::list_stalled`].
    RunsListStalled,
    /// [`RunStore::put_worker_result`].
    RunsPutWorkerResult,
    /// [`RunStore::worker_result`].
    RunsWorkerResult,
    /// [`RunStore::record_arrival`].
    RunsRecordArrival,
    /// [`RunStore::worker_results`].
    RunsWorkerResults,
    /// [`CoordinationStore::increment`].
    CoordIncrement,
    /// [`CoordinationStore::set_if_not_exists`].
    CoordSetIfNotExists,
    /// [`CoordinationStore::extend_ttl`].
    CoordExtendTtl,
    /// [`CoordinationStore::delete`].
    CoordDelete,
    /// [`CoordinationStore::get`].
    CoordGet,
    /// [`CoordinationStore::set_add`].
    CoordSetAdd,
    /// [`CoordinationStore::counter_add`].
    CoordCounterAdd,
}

/// How many operations there are (the length of [`Operation::ALL`]).
const OPERATIONS: usize = 24;

impl Operation {
    /// Every operation, queue first, then run store, then coordination store.
    pub const ALL: [Operation; OPERATIONS] = [
        Operation::QueueSend,
        Operation::QueueReceive,
        Operation::QueueRenew,
        Operation::QueueComplete,
        Operation::QueueRelease,
        Operation::QueueMoveToPoison,
        Operation::QueueRewrite,
        Operation::RunsCreate,
        Operation::RunsLoad,
        Operation::RunsCommit,
        Operation::RunsStatus,
        Operation::RunsWriteStatus,
        Operation::RunsListStalled,
        Operation::RunsPutWorkerResult,
        Operation::RunsWorkerResult,
        Operation::RunsRecordArrival,
        Operation::RunsWorkerResults,
        Operation::CoordIncrement,
        Operation::CoordSetIfNotExists,
        Operation::CoordExtendTtl,
        Operation::CoordDelete,
        Operation::CoordGet,
        Operation::CoordSetAdd,
        Operation::CoordCounterAdd,
    ];

    /// The name as `port.method`, e.g. `queue.receive`.
    pub fn name(self) -> &'static str {
        match self {
            Operation::QueueSend => "queue.send",
            Operation::QueueReceive => "queue.receive",
            Operation::QueueRenew => "queue.renew",
            Operation::QueueComplete => "queue.complete",
            Operation::QueueRelease => "queue.release",
            Operation::QueueMoveToPoison => "queue.move_to_poison",
            Operation::QueueRewrite => "queue.rewrite",
            Operation::RunsCreate => "runs.create_run",
            Operation::RunsLoad => "runs.load",
            Operation::RunsCommit => "runs.commit",
            Operation::RunsStatus => "runs.status",
            Operation::RunsWriteStatus => "runs.write_status",
            Operation::RunsListStalled => "runs.list_stalled",
            Operation::RunsPutWorkerResult => "runs.put_worker_result",
            Operation::RunsWorkerResult => "runs.worker_result",
            Operation::RunsRecordArrival => "runs.record_arrival",
            Operation::RunsWorkerResults => "runs.worker_results",
            Operation::CoordIncrement => "coordination.increment",
            Operation::CoordSetIfNotExists => "coordination.set_if_not_exists",
            Operation::CoordExtendTtl => "coordination.extend_ttl",
            Operation::CoordDelete => "coordination.delete",
            Operation::CoordGet => "coordination.get",
            Operation::CoordSetAdd => "coordination.set_add",
            Operation::CoordCounterAdd => "coordination.counter_add",
        }
    }

    /// What one call costs on the Azure backends (see the module table).
    pub fn cost(self) -> Cost {
        let (service, requests, wire) = match self {
            Operation::QueueSend => (Service::QueueStorage, 1, "POST messages"),
            Operation::QueueReceive => (Service::QueueStorage, 1, "GET messages (one batch)"),
            Operation::QueueRenew => (Service::QueueStorage, 1, "PUT messages/{id}"),
            Operation::QueueComplete => (Service::QueueStorage, 1, "DELETE messages/{id}"),
            Operation::QueueRelease => (Service::QueueStorage, 1, "PUT messages/{id}"),
            Operation::QueueMoveToPoison => (
                Service::QueueStorage,
                2,
                "POST poison messages + DELETE messages/{id}",
            ),
            Operation::QueueRewrite => (Service::QueueStorage, 1, "PUT messages/{id} with text"),
            Operation::RunsCreate => (Service::Cosmos, 2, "POST run item + POST status item"),
            Operation::RunsLoad => (Service::Cosmos, 1, "GET docs/{run} (point read)"),
            Operation::RunsCommit => (Service::Cosmos, 1, "PUT docs/{run} If-Match"),
            Operation::RunsStatus => (Service::Cosmos, 1, "GET status item (point read)"),
            Operation::RunsWriteStatus => (Service::Cosmos, 1, "POST or PUT If-Match status item"),
            Operation::RunsListStalled => (Service::Cosmos, 1, "POST docs query (one page)"),
            Operation::RunsPutWorkerResult => (Service::Cosmos, 1, "POST worker result item"),
            Operation::RunsWorkerResult => (Service::Cosmos, 1, "GET result item"),
            Operation::RunsRecordArrival => (Service::Cosmos, 1, "PATCH arrival ledger item"),
            Operation::RunsWorkerResults => (Service::Cosmos, 1, "POST docs query (one page)"),
            Operation::CoordIncrement => (Service::Redis, 1, "INCR + EXPIRE script"),
            Operation::CoordSetIfNotExists => (Service::Redis, 1, "SET NX EX"),
            Operation::CoordExtendTtl => (Service::Redis, 1, "EXPIRE"),
            Operation::CoordDelete => (Service::Redis, 1, "DEL"),
            Operation::CoordGet => (Service::Redis, 1, "GET"),
            Operation::CoordSetAdd => (Service::Redis, 1, "SADD + SCARD script"),
            Operation::CoordCounterAdd => (Service::Redis, 1, "INCRBY (script with a TTL)"),
        };
        Cost {
            service,
            requests,
            wire,
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// Thread-safe call counters shared by the metered ports (one per operation, plus how many
/// messages the receives returned and how many receives came back empty).
#[derive(Debug)]
pub struct Meter {
    calls: [AtomicU64; OPERATIONS],
    errors: [AtomicU64; OPERATIONS],
    received_messages: AtomicU64,
    empty_receives: AtomicU64,
}

impl Meter {
    /// A meter with every count at zero, ready to be shared by several wrappers.
    pub fn new() -> Arc<Meter> {
        Arc::new(Meter {
            calls: std::array::from_fn(|_| AtomicU64::new(0)),
            errors: std::array::from_fn(|_| AtomicU64::new(0)),
            received_messages: AtomicU64::new(0),
            empty_receives: AtomicU64::new(0),
        })
    }

    /// `backends` with each port wrapped so that its calls are counted in this meter.
    pub fn wrap(self: &Arc<Self>, backends: &Backends) -> Backends {
        Backends::new(
            Arc::new(MeteredQueue::new(backends.queue.clone(), self.clone())),
            Arc::new(MeteredRunStore::new(backends.runs.clone(), self.clone())),
            Arc::new(MeteredCoordinationStore::new(
                backends.coordination.clone(),
                self.clone(),
            )),
        )
    }

    /// The counts so far (each counter is read atomically; calls still in flight while
    /// reading may or may not be included).
    pub fn snapshot(&self) -> MeterSnapshot {
        MeterSnapshot {
            calls: std::array::from_fn(|i| self.calls[i].load(Ordering::Relaxed)),
            errors: std::array::from_fn(|i| self.errors[i].load(Ordering::Relaxed)),
            received_messages: self.received_messages.load(Ordering::Relaxed),
            empty_receives: self.empty_receives.load(Ordering::Relaxed),
        }
    }

    fn record<T>(&self, operation: Operation, result: &Result<T, Error>) {
        self.calls[operation.index()].fetch_add(1, Ordering::Relaxed);
        if result.is_err() {
            self.errors[operation.index()].fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// The counts of a [`Meter`] at one moment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MeterSnapshot {
    calls: [u64; OPERATIONS],
    errors: [u64; OPERATIONS],
    received_messages: u64,
    empty_receives: u64,
}

impl MeterSnapshot {
    /// Calls of `operation`, failed ones included.
    pub fn calls(&self, operation: Operation) -> u64 {
        self.calls[operation.index()]
    }

    /// Calls of `operation` that returned an error.
    pub fn errors(&self, operation: Operation) -> u64 {
        self.errors[operation.index()]
    }

    /// Messages returned by all receives together.
    pub fn received_messages(&self) -> u64 {
        self.received_messages
    }

    /// Receives that returned no message (idle polling).
    pub fn empty_receives(&self) -> u64 {
        self.empty_receives
    }

    /// All port calls.
    pub fn total_calls(&self) -> u64 {
        self.calls.iter().sum()
    }

    /// Projected requests to `service` (HTTP requests, or Redis round trips): each call
    /// times its [`Operation::cost`].
    pub fn requests(&self, service: Service) -> u64 {
        Operation::ALL
            .iter()
            .filter(|op| op.cost().service == service)
            .map(|op| self.calls(*op) * op.cost().requests)
            .sum()
    }

    /// Projected HTTP requests (Queue Storage and Cosmos DB together).
    pub fn http_requests(&self) -> u64 {
        self.requests(Service::QueueStorage) + self.requests(Service::Cosmos)
    }

    /// The operations called at least once, with their call counts, in [`Operation::ALL`]
    /// order.
    pub fn nonzero(&self) -> Vec<(Operation, u64)> {
        Operation::ALL
            .iter()
            .map(|op| (*op, self.calls(*op)))
            .filter(|(_, calls)| *calls > 0)
            .collect()
    }

    /// What happened after `earlier` (a snapshot of the same meter taken before this one).
    /// Counts never go down; a mismatched pair saturates at zero.
    pub fn since(&self, earlier: &MeterSnapshot) -> MeterSnapshot {
        MeterSnapshot {
            calls: std::array::from_fn(|i| self.calls[i].saturating_sub(earlier.calls[i])),
            errors: std::array::from_fn(|i| self.errors[i].saturating_sub(earlier.errors[i])),
            received_messages: self
                .received_messages
                .saturating_sub(earlier.received_messages),
            empty_receives: self.empty_receives.saturating_sub(earlier.empty_receives),
        }
    }
}

/// A [`JobQueue`] that counts the calls it forwards.
#[derive(Clone)]
pub struct MeteredQueue {
    inner: Arc<dyn JobQueue>,
    meter: Arc<Meter>,
}

impl std::fmt::Debug for MeteredQueue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MeteredQueue")
            .field("meter", &self.meter)
            .finish_non_exhaustive()
    }
}

impl MeteredQueue {
    /// Wraps `inner`, counting in `meter`.
    pub fn new(inner: Arc<dyn JobQueue>, meter: Arc<Meter>) -> Self {
        MeteredQueue { inner, meter }
    }
}

#[async_trait]
impl JobQueue for MeteredQueue {
    async fn send(&self, text: &str, delay: Duration) -> Result<(), Error> {
        let result = self.inner.send(text, delay).await;
        self.meter.record(Operation::QueueSend, &result);
        result
    }

    async fn receive(&self, max: usize, visibility: Duration) -> Result<Vec<QueueMessage>, Error> {
        let result = self.inner.receive(max, visibility).await;
        self.meter.record(Operation::QueueReceive, &result);
        if let Ok(messages) = &result {
            let got = u64::try_from(messages.len()).unwrap_or(u64::MAX);
            self.meter
                .received_messages
                .fetch_add(got, Ordering::Relaxed);
            if messages.is_empty() {
                self.meter.empty_receives.fetch_add(1, Ordering::Relaxed);
            }
        }
        result
    }

    async fn renew(&self, id: &str, receipt: &str, visibility: Duration) -> Result<String, Error> {
        let result = self.inner.renew(id, receipt, visibility).await;
        self.meter.record(Operation::QueueRenew, &result);
        result
    }

    async fn complete(&self, id: &str, receipt: &str) -> Result<(), Error> {
        let result = self.inner.complete(id, receipt).await;
        self.meter.record(Operation::QueueComplete, &result);
        result
    }

    async fn release(&self, id: &str, receipt: &str, delay: Duration) -> Result<(), Error> {
        let result = self.inner.release(id, receipt, delay).await;
        self.meter.record(Operation::QueueRelease, &result);
        result
    }

    async fn move_to_poison(&self, message: &QueueMessage, reason: &str) -> Result<(), Error> {
        let result = self.inner.move_to_poison(message, reason).await;
        self.meter.record(Operation::QueueMoveToPoison, &result);
        result
    }

    async fn send_leased(&self, text: &str, lease: Duration) -> Result<QueueMessage, Error> {
        // One Put Message, like a send.
        let result = self.inner.send_leased(text, lease).await;
        self.meter.record(Operation::QueueSend, &result);
        result
    }

    async fn rewrite(
        &self,
        id: &str,
        receipt: &str,
        text: &str,
        visibility: Duration,
    ) -> Result<String, Error> {
        let result = self.inner.rewrite(id, receipt, text, visibility).await;
        self.meter.record(Operation::QueueRewrite, &result);
        result
    }

    async fn wait_for_work(&self, max: Duration) {
        // Waiting is not a queue request: forwarded, not counted.
        self.inner.wait_for_work(max).await;
    }
}

/// A [`RunStore`] that counts the calls it forwards.
#[derive(Clone)]
pub struct MeteredRunStore {
    inner: Arc<dyn RunStore>,
    meter: Arc<Meter>,
}

impl std::fmt::Debug for MeteredRunStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MeteredRunStore")
            .field("meter", &self.meter)
            .finish_non_exhaustive()
    }
}

impl MeteredRunStore {
    /// Wraps `inner`, counting in `meter`.
    pub fn new(inner: Arc<dyn RunStore>, meter: Arc<Meter>) -> Self {
        MeteredRunStore { inner, meter }
    }
}

#[async_trait]
impl RunStore for MeteredRunStore {
    async fn create_run(&self, state: &RunState, status: &StatusRecord) -> Result<bool, Error> {
        let result = self.inner.create_run(state, status).await;
        self.meter.record(Operation::RunsCreate, &result);
        result
    }

    async fn load(&self, run_id: &str) -> Result<Option<Versioned<RunState>>, Error> {
        let result = self.inner.load(run_id).await;
        self.meter.record(Operation::RunsLoad, &result);
        result
    }

    async fn commit(&self, state: &RunState, etag: &str) -> Result<String, Error> {
        let result = self.inner.commit(state, etag).await;
        self.meter.record(Operation::RunsCommit, &result);
        result
    }

    async fn status(&self, run_id: &str) -> Result<Option<Versioned<StatusRecord>>, Error> {
        let result = self.inner.status(run_id).await;
        self.meter.record(Operation::RunsStatus, &result);
        result
    }

    async fn write_status(
        &self,
        record: &StatusRecord,
        etag: Option<&str>,
    ) -> Result<String, Error> {
        let result = self.inner.write_status(record, etag).await;
        self.meter.record(Operation::RunsWriteStatus, &result);
        result
    }

    async fn list_stalled(
        &self,
        phases: &[RunPhase],
        older_than: i64,
        limit: usize,
        continuation: Option<&str>,
    ) -> Result<Page<StatusRecord>, Error> {
        let result = self
            .inner
            .list_stalled(phases, older_than, limit, continuation)
            .await;
        self.meter.record(Operation::RunsListStalled, &result);
        result
    }

    async fn put_worker_result(&self, result: &WorkerResult) -> Result<bool, Error> {
        let outcome = self.inner.put_worker_result(result).await;
        self.meter.record(Operation::RunsPutWorkerResult, &outcome);
        outcome
    }

    async fn worker_result(
        &self,
        run_id: &str,
        batch: &str,
        node: &str,
    ) -> Result<Option<WorkerResult>, Error> {
        let result = self.inner.worker_result(run_id, batch, node).await;
        self.meter.record(Operation::RunsWorkerResult, &result);
        result
    }

    async fn record_arrival(&self, run_id: &str, batch: &str, node: &str) -> Result<u64, Error> {
        let result = self.inner.record_arrival(run_id, batch, node).await;
        self.meter.record(Operation::RunsRecordArrival, &result);
        result
    }

    async fn worker_results(
        &self,
        run_id: &str,
        batch: &str,
        continuation: Option<&str>,
    ) -> Result<Page<WorkerResult>, Error> {
        let result = self.inner.worker_results(run_id, batch, continuation).await;
        self.meter.record(Operation::RunsWorkerResults, &result);
        result
    }
}

/// A [`CoordinationStore`] that counts the calls it forwards.
#[derive(Clone)]
pub struct MeteredCoordinationStore {
    inner: Arc<dyn CoordinationStore>,
    meter: Arc<Meter>,
}

impl std::fmt::Debug for MeteredCoordinationStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MeteredCoordinationStore")
            .field("meter", &self.meter)
            .finish_non_exhaustive()
    }
}

impl MeteredCoordinationStore {
    /// Wraps `inner`, counting in `meter`.
    pub fn new(inner: Arc<dyn CoordinationStore>, meter: Arc<Meter>) -> Self {
        MeteredCoordinationStore { inner, meter }
    }
}

#[async_trait]
impl CoordinationStore for MeteredCoordinationStore {
    async fn increment(&self, key: &str, ttl: Duration) -> Result<i64, Error> {
        let result = self.inner.increment(key, ttl).await;
        self.meter.record(Operation::CoordIncrement, &result);
        result
    }

    async fn set_if_not_exists(
        &self,
        key: &str,
        value: &str,
        ttl: Duration,
    ) -> Result<bool, Error> {
        let result = self.inner.set_if_not_exists(key, value, ttl).await;
        self.meter.record(Operation::CoordSetIfNotExists, &result);
        result
    }

    async fn extend_ttl(&self, key: &str, ttl: Duration) -> Result<bool, Error> {
        let result = self.inner.extend_ttl(key, ttl).await;
        self.meter.record(Operation::CoordExtendTtl, &result);
        result
    }

    async fn delete(&self, key: &str) -> Result<(), Error> {
        let result = self.inner.delete(key).await;
        self.meter.record(Operation::CoordDelete, &result);
        result
    }

    async fn get(&self, key: &str) -> Result<Option<String>, Error> {
        let result = self.inner.get(key).await;
        self.meter.record(Operation::CoordGet, &result);
        result
    }

    async fn set_add(&self, key: &str, member: &str, ttl: Option<Duration>) -> Result<u64, Error> {
        let result = self.inner.set_add(key, member, ttl).await;
        self.meter.record(Operation::CoordSetAdd, &result);
        result
    }

    async fn counter_add(
        &self,
        key: &str,
        delta: i64,
        ttl: Option<Duration>,
    ) -> Result<i64, Error> {
        let result = self.inner.counter_add(key, delta, ttl).await;
        self.meter.record(Operation::CoordCounterAdd, &result);
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::distributed::publish::status_record;
    use crate::distributed::transition::new_run;
    use crate::flow::blueprint::Blueprint;

    const VIS: Duration = Duration::from_secs(30);

    fn metered() -> (Arc<Meter>, Backends) {
        let meter = Meter::new();
        let backends = meter.wrap(&Backends::in_memory());
        (meter, backends)
    }

    #[test]
    fn operation_indices_follow_the_all_list() {
        for (i, op) in Operation::ALL.iter().enumerate() {
            assert_eq!(op.index(), i, "{}", op.name());
        }
    }

    #[tokio::test]
    async fn queue_calls_are_counted_exactly_with_failures_and_batches() {
        let (meter, b) = metered();
        for text in ["a", "b", "c"] {
            b.queue.send(text, Duration::ZERO).await.unwrap();
        }
        let batch = b.queue.receive(32, VIS).await.unwrap();
        assert_eq!(batch.len(), 3);
        let renewed = b.queue.renew(&batch[0].id, &batch[0].receipt, VIS).await;
        let fresh = renewed.unwrap();
        // The old receipt is stale now: the call fails but was still sent.
        assert!(
            b.queue
                .complete(&batch[0].id, &batch[0].receipt)
                .await
                .is_err()
        );
        b.queue.complete(&batch[0].id, &fresh).await.unwrap();
        b.queue
            .complete(&batch[1].id, &batch[1].receipt)
            .await
            .unwrap();
        b.queue
            .release(&batch[2].id, &batch[2].receipt, Duration::ZERO)
            .await
            .unwrap();
        let again = b.queue.receive(32, VIS).await.unwrap();
        assert_eq!(again.len(), 1);
        b.queue.move_to_poison(&again[0], "test").await.unwrap();
        assert!(b.queue.receive(32, VIS).await.unwrap().is_empty());

        let s = meter.snapshot();
        assert_eq!(s.calls(Operation::QueueSend), 3);
        assert_eq!(s.calls(Operation::QueueReceive), 3);
        assert_eq!(s.calls(Operation::QueueRenew), 1);
        assert_eq!(s.calls(Operation::QueueComplete), 3);
        assert_eq!(s.errors(Operation::QueueComplete), 1);
        assert_eq!(s.errors(Operation::QueueSend), 0);
        assert_eq!(s.calls(Operation::QueueRelease), 1);
        assert_eq!(s.calls(Operation::QueueMoveToPoison), 1);
        assert_eq!(s.received_messages(), 4);
        assert_eq!(s.empty_receives(), 1);
        assert_eq!(s.total_calls(), 12);
        // 12 calls, the poison move costing two requests.
        assert_eq!(s.requests(Service::QueueStorage), 13);
        assert_eq!(s.requests(Service::Cosmos), 0);
        assert_eq!(s.requests(Service::Redis), 0);
        assert_eq!(s.http_requests(), 13);
    }

    #[tokio::test]
    async fn run_store_calls_are_counted_exactly_and_conflicts_count_as_errors() {
        let (meter, b) = metered();
        let bp = Blueprint::from_json(r#"{"id":"m","nodes":[{"id":"a","uses":"echo"}]}"#).unwrap();
        let (state, _) = new_run("run-1", &bp, serde_json::Map::new());
        let status = status_record(&state, 0);
        assert!(b.runs.create_run(&state, &status).await.unwrap());
        assert!(!b.runs.create_run(&state, &status).await.unwrap());
        let loaded = b.runs.load("run-1").await.unwrap().unwrap();
        b.runs.commit(&loaded.value, &loaded.etag).await.unwrap();
        // The same tag again is stale: a conflict, still one request.
        assert!(b.runs.commit(&loaded.value, &loaded.etag).await.is_err());
        assert!(b.runs.load("missing").await.unwrap().is_none());
        let current = b.runs.status("run-1").await.unwrap().unwrap();
        b.runs
            .write_status(&current.value, Some(&current.etag))
            .await
            .unwrap();
        let page = b
            .runs
            .list_stalled(&[RunPhase::Running], i64::MAX, 10, None)
            .await
            .unwrap();
        assert_eq!(page.items.len(), 1);

        let s = meter.snapshot();
        assert_eq!(s.calls(Operation::RunsCreate), 2);
        assert_eq!(s.calls(Operation::RunsLoad), 2);
        assert_eq!(s.calls(Operation::RunsCommit), 2);
        assert_eq!(s.errors(Operation::RunsCommit), 1);
        assert_eq!(s.calls(Operation::RunsStatus), 1);
        assert_eq!(s.calls(Operation::RunsWriteStatus), 1);
        assert_eq!(s.calls(Operation::RunsListStalled), 1);
        assert_eq!(s.total_calls(), 9);
        // Each create is two items.
        assert_eq!(s.requests(Service::Cosmos), 11);
        assert_eq!(s.requests(Service::QueueStorage), 0);
    }

    #[tokio::test]
    async fn coordination_calls_are_counted_as_redis_round_trips_not_http() {
        let (meter, b) = metered();
        let ttl = Duration::from_secs(60);
        let c = &b.coordination;
        assert_eq!(c.increment("flowcraft:n", ttl).await.unwrap(), 1);
        assert!(c.set_if_not_exists("flowcraft:k", "v", ttl).await.unwrap());
        assert!(!c.set_if_not_exists("flowcraft:k", "w", ttl).await.unwrap());
        assert!(c.extend_ttl("flowcraft:k", ttl).await.unwrap());
        assert_eq!(c.get("flowcraft:k").await.unwrap().as_deref(), Some("v"));
        c.delete("flowcraft:k").await.unwrap();
        assert_eq!(c.set_add("flowcraft:s", "x", None).await.unwrap(), 1);
        assert_eq!(c.counter_add("flowcraft:c", 5, None).await.unwrap(), 5);

        let s = meter.snapshot();
        assert_eq!(s.calls(Operation::CoordIncrement), 1);
        assert_eq!(s.calls(Operation::CoordSetIfNotExists), 2);
        assert_eq!(s.calls(Operation::CoordExtendTtl), 1);
        assert_eq!(s.calls(Operation::CoordGet), 1);
        assert_eq!(s.calls(Operation::CoordDelete), 1);
        assert_eq!(s.calls(Operation::CoordSetAdd), 1);
        assert_eq!(s.calls(Operation::CoordCounterAdd), 1);
        assert_eq!(s.requests(Service::Redis), 8);
        assert_eq!(s.http_requests(), 0);
        assert!(!Service::Redis.is_http());
    }

    #[tokio::test]
    async fn since_counts_only_the_calls_between_two_snapshots() {
        let (meter, b) = metered();
        b.queue.send("a", Duration::ZERO).await.unwrap();
        let before = meter.snapshot();
        b.queue.send("b", Duration::ZERO).await.unwrap();
        assert!(b.queue.receive(1, VIS).await.unwrap().len() == 1);
        let delta = meter.snapshot().since(&before);
        assert_eq!(delta.calls(Operation::QueueSend), 1);
        assert_eq!(delta.calls(Operation::QueueReceive), 1);
        assert_eq!(delta.received_messages(), 1);
        assert_eq!(
            delta.nonzero(),
            vec![(Operation::QueueSend, 1), (Operation::QueueReceive, 1)]
        );
    }

    #[tokio::test]
    async fn wrappers_sharing_a_meter_add_up_across_clones() {
        let meter = Meter::new();
        let plain = Backends::in_memory();
        let one = meter.wrap(&plain);
        let two = meter.wrap(&plain);
        one.queue.send("a", Duration::ZERO).await.unwrap();
        two.queue.send("b", Duration::ZERO).await.unwrap();
        assert_eq!(meter.snapshot().calls(Operation::QueueSend), 2);
        // Both wrappers forward to the same queue.
        assert_eq!(plain.queue.receive(32, VIS).await.unwrap().len(), 2);
        assert_eq!(meter.snapshot().calls(Operation::QueueReceive), 0);
    }
}
