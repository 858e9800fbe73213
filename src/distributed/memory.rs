//! In-memory implementations of the three ports, for tests and `run --distributed`.
//!
//! They behave like the real services where the core depends on it: leases hide a received
//! message until they expire or are renewed (receipts change on every renewal), the dequeue
//! count goes up on each receive, delays and TTLs follow tokio time (so tests can
//! `tokio::time::pause()`), run commits are ETag-guarded, stored documents go through the same
//! JSON shape as the Cosmos item and are refused above 2 MB (or a limit set with
//! [`MemoryRunStore::with_document_limit`]). All are thread-safe.

use crate::Error;
use crate::ErrorInfo;
use crate::distributed::ports::{
    CoordinationStore, JobQueue, MAX_QUEUE_DELAY, Page, QueueMessage, RunPhase, RunStore,
    StatusRecord, Versioned, WorkerResult,
};
use crate::distributed::state::RunState;
use async_trait::async_trait;
use serde_json::{Map, Value};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;
use tokio::time::Instant;

/// The largest run document the store accepts, like a Cosmos item (2 MB).
pub const MAX_DOCUMENT_BYTES: usize = 2 * 1024 * 1024;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding the lock cannot leave our maps half-updated (every critical
    // section is a few plain inserts/removes), so a poisoned lock is still usable.
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn not_found(what: impl Into<String>) -> Error {
    Error::NotFound(Box::new(ErrorInfo::new(what)))
}

fn precondition(what: impl Into<String>) -> Error {
    Error::PreconditionFailed(Box::new(ErrorInfo::new(what)))
}

#[derive(Debug)]
struct StoredMessage {
    id: String,
    text: String,
    visible_at: Instant,
    dequeue_count: u32,
    receipt: Option<String>,
}

/// A message moved to the poison queue, with the reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoisonedMessage {
    /// The message text.
    pub text: String,
    /// How many times it had been received.
    pub dequeue_count: u32,
    /// Why it was poisoned.
    pub reason: String,
}

#[derive(Debug, Default)]
struct QueueInner {
    messages: Vec<StoredMessage>,
    poison: Vec<PoisonedMessage>,
    next_id: u64,
    sends: u64,
    receive_calls: u64,
}

/// An in-memory job queue with leases, receipts, dequeue counts and delays (tokio time).
#[derive(Debug, Default)]
pub struct MemoryQueue {
    inner: Mutex<QueueInner>,
}

impl MemoryQueue {
    /// An empty queue.
    pub fn new() -> Self {
        MemoryQueue::default()
    }

    /// Messages in the queue, visible or not.
    pub fn len(&self) -> usize {
        lock(&self.inner).messages.len()
    }

    /// True when no message is in the queue.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The texts of all messages in the queue, visible or not, in order.
    pub fn texts(&self) -> Vec<String> {
        lock(&self.inner)
            .messages
            .iter()
            .map(|m| m.text.clone())
            .collect()
    }

    /// The poison queue's content.
    pub fn poisoned(&self) -> Vec<PoisonedMessage> {
        lock(&self.inner).poison.clone()
    }

    /// How many messages were ever sent.
    pub fn sends(&self) -> u64 {
        lock(&self.inner).sends
    }

    /// How many times `receive` was called (idle polling is counted here).
    pub fn receive_calls(&self) -> u64 {
        lock(&self.inner).receive_calls
    }

    fn find<'a>(
        inner: &'a mut QueueInner,
        id: &str,
        receipt: &str,
    ) -> Result<&'a mut StoredMessage, Error> {
        let msg = inner
            .messages
            .iter_mut()
            .find(|m| m.id == id)
            .ok_or_else(|| not_found(format!("message {id} is not in the queue")))?;
        if msg.receipt.as_deref() != Some(receipt) {
            return Err(precondition(format!(
                "the receipt for message {id} is stale (the lease expired or was renewed)"
            )));
        }
        Ok(msg)
    }

    /// Ids of the messages currently under a lease (received, not yet visible again), in
    /// queue order (fault simulation: pick one to expire).
    pub fn leased_ids(&self) -> Vec<String> {
        let now = Instant::now();
        lock(&self.inner)
            .messages
            .iter()
            .filter(|m| m.receipt.is_some() && m.visible_at > now)
            .map(|m| m.id.clone())
            .collect()
    }

    /// Ends the lease of message `id` now, as a lapsed visibility timeout would: the message
    /// becomes visible again, its current receipt keeps working until the next receive.
    /// False when the message is not in the queue.
    pub fn expire_lease(&self, id: &str) -> bool {
        let now = Instant::now();
        let mut inner = lock(&self.inner);
        match inner.messages.iter_mut().find(|m| m.id == id) {
            Some(m) => {
                m.visible_at = m.visible_at.min(now);
                true
            }
            None => false,
        }
    }
}

fn check_delay(delay: Duration, what: &str) -> Result<(), Error> {
    if delay > MAX_QUEUE_DELAY {
        return Err(Error::invalid_input(format!(
            "{what} of {} s exceeds the queue maximum of 7 days; chain shorter delays",
            delay.as_secs()
        )));
    }
    Ok(())
}

#[async_trait]
impl JobQueue for MemoryQueue {
    async fn send(&self, text: &str, delay: Duration) -> Result<(), Error> {
        check_delay(delay, "message delay")?;
        let mut inner = lock(&self.inner);
        inner.next_id += 1;
        inner.sends += 1;
        let id = format!("m{}", inner.next_id);
        inner.messages.push(StoredMessage {
            id,
            text: text.to_string(),
            visible_at: Instant::now() + delay,
            dequeue_count: 0,
            receipt: None,
        });
        Ok(())
    }

    async fn receive(&self, max: usize, visibility: Duration) -> Result<Vec<QueueMessage>, Error> {
        if !(1..=32).contains(&max) {
            return Err(Error::invalid_input(format!(
                "receive asks for {max} messages; the queue allows 1 to 32"
            )));
        }
        if visibility.is_zero() {
            return Err(Error::invalid_input(
                "receive needs a visibility timeout above zero",
            ));
        }
        check_delay(visibility, "visibility timeout")?;
        let now = Instant::now();
        let mut inner = lock(&self.inner);
        inner.receive_calls += 1;
        let mut out = Vec::new();
        for msg in inner.messages.iter_mut() {
            if out.len() >= max {
                break;
            }
            if msg.visible_at > now {
                continue;
            }
            msg.visible_at = now + visibility;
            msg.dequeue_count = msg.dequeue_count.saturating_add(1);
            let receipt = uuid::Uuid::new_v4().to_string();
            msg.receipt = Some(receipt.clone());
            out.push(QueueMessage {
                id: msg.id.clone(),
                receipt,
                text: msg.text.clone(),
                dequeue_count: msg.dequeue_count,
            });
        }
        Ok(out)
    }

    async fn renew(&self, id: &str, receipt: &str, visibility: Duration) -> Result<String, Error> {
        check_delay(visibility, "visibility timeout")?;
        let mut inner = lock(&self.inner);
        let msg = Self::find(&mut inner, id, receipt)?;
        let fresh = uuid::Uuid::new_v4().to_string();
        msg.receipt = Some(fresh.clone());
        msg.visible_at = Instant::now() + visibility;
        Ok(fresh)
    }

    async fn send_leased(&self, text: &str, lease: Duration) -> Result<QueueMessage, Error> {
        check_delay(lease, "visibility timeout")?;
        let mut inner = lock(&self.inner);
        inner.next_id += 1;
        inner.sends += 1;
        let id = format!("m{}", inner.next_id);
        let receipt = uuid::Uuid::new_v4().to_string();
        inner.messages.push(StoredMessage {
            id: id.clone(),
            text: text.to_string(),
            visible_at: Instant::now() + lease,
            dequeue_count: 0,
            receipt: Some(receipt.clone()),
        });
        Ok(QueueMessage {
            id,
            receipt,
            text: text.to_string(),
            dequeue_count: 1,
        })
    }

    async fn rewrite(
        &self,
        id: &str,
        receipt: &str,
        text: &str,
        visibility: Duration,
    ) -> Result<String, Error> {
        check_delay(visibility, "visibility timeout")?;
        let mut inner = lock(&self.inner);
        let msg = Self::find(&mut inner, id, receipt)?;
        let fresh = uuid::Uuid::new_v4().to_string();
        msg.receipt = Some(fresh.clone());
        msg.text = text.to_string();
        msg.visible_at = Instant::now() + visibility;
        Ok(fresh)
    }

    async fn complete(&self, id: &str, receipt: &str) -> Result<(), Error> {
        let mut inner = lock(&self.inner);
        Self::find(&mut inner, id, receipt)?;
        inner.messages.retain(|m| m.id != id);
        Ok(())
    }

    async fn release(&self, id: &str, receipt: &str, delay: Duration) -> Result<(), Error> {
        check_delay(delay, "release delay")?;
        let mut inner = lock(&self.inner);
        let msg = Self::find(&mut inner, id, receipt)?;
        msg.receipt = None;
        msg.visible_at = Instant::now() + delay;
        Ok(())
    }

    async fn move_to_poison(&self, message: &QueueMessage, reason: &str) -> Result<(), Error> {
        let mut inner = lock(&self.inner);
        Self::find(&mut inner, &message.id, &message.receipt)?;
        inner.messages.retain(|m| m.id != message.id);
        inner.poison.push(PoisonedMessage {
            text: message.text.clone(),
            dequeue_count: message.dequeue_count,
            reason: reason.to_string(),
        });
        Ok(())
    }
}

#[derive(Debug, Default)]
struct StoreInner {
    runs: HashMap<String, (Map<String, Value>, u64)>,
    statuses: BTreeMap<String, (StatusRecord, u64)>,
    /// Batch worker results by (run, batch), then by worker node.
    results: HashMap<(String, String), BTreeMap<String, WorkerResult>>,
    /// Arrival ledgers by (run, batch).
    arrivals: HashMap<(String, String), BTreeSet<String>>,
    next_etag: u64,
    /// The document size limit; `None` = [`MAX_DOCUMENT_BYTES`].
    document_limit: Option<usize>,
    /// Bytes of JSON written by commits so far.
    committed_bytes: u64,
    loads: u64,
    commits: u64,
    conflicts: u64,
    status_writes: u64,
}

impl StoreInner {
    fn etag(&mut self) -> u64 {
        self.next_etag += 1;
        self.next_etag
    }
}

/// An in-memory run store: run documents (stored as the Cosmos item JSON) and status items,
/// both with ETags.
#[derive(Debug, Default)]
pub struct MemoryRunStore {
    inner: Mutex<StoreInner>,
}

impl MemoryRunStore {
    /// An empty store.
    pub fn new() -> Self {
        MemoryRunStore::default()
    }

    /// Run state reads so far.
    pub fn loads(&self) -> u64 {
        lock(&self.inner).loads
    }

    /// Status item writes so far.
    pub fn status_writes(&self) -> u64 {
        lock(&self.inner).status_writes
    }

    /// Successful commits so far.
    pub fn commits(&self) -> u64 {
        lock(&self.inner).commits
    }

    /// Bytes of run document JSON written by successful commits so far.
    pub fn committed_bytes(&self) -> u64 {
        lock(&self.inner).committed_bytes
    }

    /// A store that accepts run documents up to `bytes` of JSON instead of 2 MB: a store
    /// that spreads a large run over several items (like the Cosmos run store) has no
    /// single-item limit for the run as a whole.
    pub fn with_document_limit(bytes: usize) -> Self {
        let store = MemoryRunStore::default();
        lock(&store.inner).document_limit = Some(bytes);
        store
    }

    /// Commits refused because of a stale ETag so far.
    pub fn conflicts(&self) -> u64 {
        lock(&self.inner).conflicts
    }

    /// Overwrites a stored run document as a foreign writer would (tests: documents written by
    /// the TypeScript client, or tampering).
    pub fn put_raw_document(&self, run_id: &str, doc: Map<String, Value>) {
        let mut inner = lock(&self.inner);
        let tag = inner.etag();
        inner.runs.insert(run_id.to_string(), (doc, tag));
    }
}

/// The stored document of `state` and its size in bytes of JSON; `TooLarge` above `limit`.
fn encode_document(state: &RunState, limit: usize) -> Result<(Map<String, Value>, usize), Error> {
    let doc = state.to_document()?;
    let size = serde_json::to_vec(&doc)
        .map(|v| v.len())
        .unwrap_or(usize::MAX);
    if size > limit {
        return Err(Error::TooLarge(Box::new(ErrorInfo::new(format!(
            "run {} document is {size} bytes; the limit is {limit}",
            state.run_id
        )))));
    }
    Ok((doc, size))
}

impl MemoryRunStore {
    fn document_limit(&self) -> usize {
        lock(&self.inner)
            .document_limit
            .unwrap_or(MAX_DOCUMENT_BYTES)
    }
}

#[async_trait]
impl RunStore for MemoryRunStore {
    async fn create_run(&self, state: &RunState, status: &StatusRecord) -> Result<bool, Error> {
        let (doc, _) = encode_document(state, self.document_limit())?;
        let mut inner = lock(&self.inner);
        if inner.runs.contains_key(&state.run_id) {
            return Ok(false);
        }
        let tag = inner.etag();
        inner.runs.insert(state.run_id.clone(), (doc, tag));
        if !inner.statuses.contains_key(&state.run_id) {
            let tag = inner.etag();
            inner
                .statuses
                .insert(state.run_id.clone(), (status.clone(), tag));
        }
        Ok(true)
    }

    async fn load(&self, run_id: &str) -> Result<Option<Versioned<RunState>>, Error> {
        let stored = {
            let mut inner = lock(&self.inner);
            inner.loads += 1;
            inner.runs.get(run_id).cloned()
        };
        match stored {
            None => Ok(None),
            Some((doc, tag)) => Ok(Some(Versioned {
                value: RunState::from_document(doc)?,
                etag: tag.to_string(),
            })),
        }
    }

    async fn commit(&self, state: &RunState, etag: &str) -> Result<String, Error> {
        let (doc, size) = encode_document(state, self.document_limit())?;
        let mut inner = lock(&self.inner);
        let current = match inner.runs.get(&state.run_id) {
            None => return Err(not_found(format!("run {} does not exist", state.run_id))),
            Some((_, tag)) => *tag,
        };
        if current.to_string() != etag {
            inner.conflicts += 1;
            return Err(precondition(format!(
                "run {} changed since it was read",
                state.run_id
            )));
        }
        let tag = inner.etag();
        inner.commits += 1;
        inner.committed_bytes += size as u64;
        inner.runs.insert(state.run_id.clone(), (doc, tag));
        Ok(tag.to_string())
    }

    async fn status(&self, run_id: &str) -> Result<Option<Versioned<StatusRecord>>, Error> {
        let inner = lock(&self.inner);
        Ok(inner.statuses.get(run_id).map(|(rec, tag)| Versioned {
            value: rec.clone(),
            etag: tag.to_string(),
        }))
    }

    async fn write_status(
        &self,
        record: &StatusRecord,
        etag: Option<&str>,
    ) -> Result<String, Error> {
        let mut inner = lock(&self.inner);
        let current = inner.statuses.get(&record.run_id).map(|(_, t)| *t);
        match (current, etag) {
            (Some(_), None) => {
                return Err(Error::Conflict(Box::new(ErrorInfo::new(format!(
                    "status of run {} already exists",
                    record.run_id
                )))));
            }
            (None, Some(_)) => {
                return Err(not_found(format!(
                    "status of run {} does not exist",
                    record.run_id
                )));
            }
            (Some(cur), Some(expected)) if cur.to_string() != expected => {
                return Err(precondition(format!(
                    "status of run {} changed since it was read",
                    record.run_id
                )));
            }
            _ => {}
        }
        let tag = inner.etag();
        inner.status_writes += 1;
        inner
            .statuses
            .insert(record.run_id.clone(), (record.clone(), tag));
        Ok(tag.to_string())
    }

    async fn list_stalled(
        &self,
        phases: &[RunPhase],
        older_than: i64,
        limit: usize,
        continuation: Option<&str>,
    ) -> Result<Page<StatusRecord>, Error> {
        let inner = lock(&self.inner);
        let limit = limit.max(1);
        let mut items = Vec::new();
        let mut continuation_out = None;
        let start = continuation.unwrap_or("");
        for (run_id, (rec, _)) in inner
            .statuses
            .range::<str, _>((std::ops::Bound::Excluded(start), std::ops::Bound::Unbounded))
        {
            if !phases.contains(&rec.status) || rec.last_updated >= older_than {
                continue;
            }
            if items.len() == limit {
                continuation_out = items.last().map(|r: &StatusRecord| r.run_id.clone());
                break;
            }
            let _ = run_id;
            items.push(rec.clone());
        }
        Ok(Page {
            items,
            continuation: continuation_out,
        })
    }

    async fn put_worker_result(&self, result: &WorkerResult) -> Result<bool, Error> {
        let mut inner = lock(&self.inner);
        let batch = (result.run_id.clone(), result.batch.clone());
        let results = inner.results.entry(batch).or_default();
        if results.contains_key(&result.node) {
            return Ok(false);
        }
        results.insert(result.node.clone(), result.clone());
        Ok(true)
    }

    async fn worker_result(
        &self,
        run_id: &str,
        batch: &str,
        node: &str,
    ) -> Result<Option<WorkerResult>, Error> {
        let inner = lock(&self.inner);
        Ok(inner
            .results
            .get(&(run_id.to_string(), batch.to_string()))
            .and_then(|results| results.get(node))
            .cloned())
    }

    async fn record_arrival(&self, run_id: &str, batch: &str, node: &str) -> Result<u64, Error> {
        let mut inner = lock(&self.inner);
        let ledger = inner
            .arrivals
            .entry((run_id.to_string(), batch.to_string()))
            .or_default();
        ledger.insert(node.to_string());
        Ok(ledger.len() as u64)
    }

    async fn worker_results(
        &self,
        run_id: &str,
        batch: &str,
        continuation: Option<&str>,
    ) -> Result<Page<WorkerResult>, Error> {
        const PAGE: usize = 100;
        let inner = lock(&self.inner);
        let Some(results) = inner.results.get(&(run_id.to_string(), batch.to_string())) else {
            return Ok(Page {
                items: Vec::new(),
                continuation: None,
            });
        };
        let start = continuation.unwrap_or("");
        let items: Vec<WorkerResult> = results
            .range::<str, _>((std::ops::Bound::Excluded(start), std::ops::Bound::Unbounded))
            .take(PAGE)
            .map(|(_, r)| r.clone())
            .collect();
        let more = items.last().is_some_and(|last| {
            results
                .range::<str, _>((
                    std::ops::Bound::Excluded(last.node.as_str()),
                    std::ops::Bound::Unbounded,
                ))
                .next()
                .is_some()
        });
        let continuation = more.then(|| items.last().map(|r| r.node.clone())).flatten();
        Ok(Page {
            items,
            continuation,
        })
    }
}

#[derive(Debug, Clone)]
enum Slot {
    Text(String),
    Counter(i64),
    Set(BTreeSet<String>),
}

#[derive(Debug, Clone)]
struct Entry {
    slot: Slot,
    expires: Option<Instant>,
}

/// An in-memory coordination store (Redis semantics, TTLs in tokio time).
#[derive(Debug, Default)]
pub struct MemoryCoordinationStore {
    inner: Mutex<HashMap<String, Entry>>,
}

impl MemoryCoordinationStore {
    /// An empty store.
    pub fn new() -> Self {
        MemoryCoordinationStore::default()
    }

    fn live(map: &mut HashMap<String, Entry>, key: &str) -> Option<Entry> {
        let expired = map
            .get(key)
            .is_some_and(|e| e.expires.is_some_and(|t| t <= Instant::now()));
        if expired {
            map.remove(key);
        }
        map.get(key).cloned()
    }

    /// Every live key (tests).
    pub fn keys(&self) -> Vec<String> {
        let mut map = lock(&self.inner);
        let all: Vec<String> = map.keys().cloned().collect();
        let mut out: Vec<String> = all
            .into_iter()
            .filter(|k| Self::live(&mut map, k).is_some())
            .collect();
        out.sort();
        out
    }

    /// Forgets every key, as a Redis restart without persistence does.
    pub fn clear(&self) {
        lock(&self.inner).clear();
    }
}

fn wrong_type(key: &str) -> Error {
    Error::invalid_input(format!(
        "coordination key {key} holds another kind of value (WRONGTYPE)"
    ))
}

fn expiry(ttl: Option<Duration>) -> Option<Instant> {
    // a TTL too long to represent never expires
    ttl.and_then(|t| Instant::now().checked_add(t))
}

/// Stores `slot` at `key`: with a fresh expiry when `ttl` is given, else keeping the key's
/// current expiry (Redis keeps a key's TTL when SADD/INCRBY change it).
fn store(map: &mut HashMap<String, Entry>, key: &str, slot: Slot, ttl: Option<Duration>) {
    let expires = match ttl {
        Some(_) => expiry(ttl),
        None => map.get(key).and_then(|e| e.expires),
    };
    map.insert(key.to_string(), Entry { slot, expires });
}

#[async_trait]
impl CoordinationStore for MemoryCoordinationStore {
    async fn increment(&self, key: &str, ttl: Duration) -> Result<i64, Error> {
        let value = self.counter_add(key, 1, None).await?;
        self.extend_ttl(key, ttl).await?;
        Ok(value)
    }

    async fn set_if_not_exists(
        &self,
        key: &str,
        value: &str,
        ttl: Duration,
    ) -> Result<bool, Error> {
        let mut map = lock(&self.inner);
        if Self::live(&mut map, key).is_some() {
            return Ok(false);
        }
        map.insert(
            key.to_string(),
            Entry {
                slot: Slot::Text(value.to_string()),
                expires: expiry(Some(ttl)),
            },
        );
        Ok(true)
    }

    async fn extend_ttl(&self, key: &str, ttl: Duration) -> Result<bool, Error> {
        let mut map = lock(&self.inner);
        if Self::live(&mut map, key).is_none() {
            return Ok(false);
        }
        if let Some(entry) = map.get_mut(key) {
            entry.expires = expiry(Some(ttl));
        }
        Ok(true)
    }

    async fn delete(&self, key: &str) -> Result<(), Error> {
        lock(&self.inner).remove(key);
        Ok(())
    }

    async fn get(&self, key: &str) -> Result<Option<String>, Error> {
        let mut map = lock(&self.inner);
        match Self::live(&mut map, key) {
            None => Ok(None),
            Some(Entry {
                slot: Slot::Text(s),
                ..
            }) => Ok(Some(s)),
            Some(Entry {
                slot: Slot::Counter(n),
                ..
            }) => Ok(Some(n.to_string())),
            Some(_) => Err(wrong_type(key)),
        }
    }

    async fn set_add(&self, key: &str, member: &str, ttl: Option<Duration>) -> Result<u64, Error> {
        let mut map = lock(&self.inner);
        let mut set = match Self::live(&mut map, key) {
            None => BTreeSet::new(),
            Some(Entry {
                slot: Slot::Set(s), ..
            }) => s,
            Some(_) => return Err(wrong_type(key)),
        };
        set.insert(member.to_string());
        let size = set.len() as u64;
        store(&mut map, key, Slot::Set(set), ttl);
        Ok(size)
    }

    async fn counter_add(
        &self,
        key: &str,
        delta: i64,
        ttl: Option<Duration>,
    ) -> Result<i64, Error> {
        let mut map = lock(&self.inner);
        let current = match Self::live(&mut map, key) {
            None => 0,
            Some(Entry {
                slot: Slot::Counter(n),
                ..
            }) => n,
            Some(Entry {
                slot: Slot::Text(s),
                ..
            }) => s.parse::<i64>().map_err(|_| wrong_type(key))?,
            Some(_) => return Err(wrong_type(key)),
        };
        let value = current
            .checked_add(delta)
            .ok_or_else(|| Error::invalid_input(format!("counter {key} would overflow")))?;
        store(&mut map, key, Slot::Counter(value), ttl);
        Ok(value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::distributed::state::Bookkeeping;

    const VIS: Duration = Duration::from_secs(30);

    #[tokio::test(start_paused = true)]
    async fn received_message_is_hidden_until_its_lease_expires_and_counts_dequeues() {
        let q = MemoryQueue::new();
        q.send("a", Duration::ZERO).await.unwrap();
        let first = q.receive(32, VIS).await.unwrap();
        assert_eq!(first.len(), 1);
        assert_eq!(first[0].dequeue_count, 1);
        assert!(q.receive(32, VIS).await.unwrap().is_empty());
        tokio::time::advance(VIS + Duration::from_millis(1)).await;
        let again = q.receive(32, VIS).await.unwrap();
        assert_eq!(again[0].dequeue_count, 2);
        // The first delivery's receipt is stale now.
        let err = q
            .complete(&first[0].id, &first[0].receipt)
            .await
            .unwrap_err();
        assert!(matches!(err, Error::PreconditionFailed(_)));
        q.complete(&again[0].id, &again[0].receipt).await.unwrap();
        assert!(q.is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn renew_extends_the_lease_and_changes_the_receipt() {
        let q = MemoryQueue::new();
        q.send("a", Duration::ZERO).await.unwrap();
        let m = q.receive(1, VIS).await.unwrap().remove(0);
        tokio::time::advance(Duration::from_secs(20)).await;
        let receipt = q.renew(&m.id, &m.receipt, VIS).await.unwrap();
        assert_ne!(receipt, m.receipt);
        tokio::time::advance(Duration::from_secs(20)).await;
        assert!(q.receive(1, VIS).await.unwrap().is_empty());
        assert!(q.renew(&m.id, &m.receipt, VIS).await.is_err());
        q.complete(&m.id, &receipt).await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn delayed_and_released_messages_appear_only_after_their_delay() {
        let q = MemoryQueue::new();
        q.send("late", Duration::from_secs(10)).await.unwrap();
        assert!(q.receive(1, VIS).await.unwrap().is_empty());
        tokio::time::advance(Duration::from_secs(10)).await;
        let m = q.receive(1, VIS).await.unwrap().remove(0);
        q.release(&m.id, &m.receipt, Duration::from_secs(5))
            .await
            .unwrap();
        assert!(q.receive(1, VIS).await.unwrap().is_empty());
        tokio::time::advance(Duration::from_secs(5)).await;
        assert_eq!(q.receive(1, VIS).await.unwrap().len(), 1);
        assert!(q.send("x", MAX_QUEUE_DELAY * 2).await.is_err());
    }

    #[tokio::test]
    async fn receive_is_bounded_to_32_and_poison_moves_the_message() {
        let q = MemoryQueue::new();
        for i in 0..40 {
            q.send(&i.to_string(), Duration::ZERO).await.unwrap();
        }
        assert!(q.receive(33, VIS).await.is_err());
        let batch = q.receive(32, VIS).await.unwrap();
        assert_eq!(batch.len(), 32);
        q.move_to_poison(&batch[0], "bad").await.unwrap();
        assert_eq!(q.len(), 39);
        assert_eq!(q.poisoned()[0].reason, "bad");
    }

    fn state(run: &str) -> RunState {
        RunState {
            run_id: run.into(),
            context: Map::new(),
            book: Bookkeeping::default(),
        }
    }

    #[tokio::test]
    async fn commit_with_a_stale_etag_is_a_precondition_failure() {
        let s = MemoryRunStore::new();
        assert!(
            s.create_run(&state("r"), &StatusRecord::running("r", 0))
                .await
                .unwrap()
        );
        assert!(
            !s.create_run(&state("r"), &StatusRecord::running("r", 0))
                .await
                .unwrap()
        );
        let v = s.load("r").await.unwrap().unwrap();
        let mut next = v.value.clone();
        next.context.insert("k".into(), Value::from(1));
        let tag = s.commit(&next, &v.etag).await.unwrap();
        let err = s.commit(&next, &v.etag).await.unwrap_err();
        assert!(matches!(err, Error::PreconditionFailed(_)));
        s.commit(&next, &tag).await.unwrap();
        assert_eq!(s.conflicts(), 1);
        assert!(matches!(
            s.commit(&state("nope"), "1").await.unwrap_err(),
            Error::NotFound(_)
        ));
    }

    #[tokio::test]
    async fn oversized_documents_are_refused() {
        let s = MemoryRunStore::new();
        let mut big = state("r");
        big.context
            .insert("blob".into(), Value::String("x".repeat(MAX_DOCUMENT_BYTES)));
        let err = s
            .create_run(&big, &StatusRecord::running("r", 0))
            .await
            .unwrap_err();
        assert!(matches!(err, Error::TooLarge(_)));
    }

    #[tokio::test]
    async fn status_writes_are_compare_and_set_and_stalled_listing_pages() {
        let s = MemoryRunStore::new();
        for i in 0..5 {
            let id = format!("r{i}");
            s.create_run(&state(&id), &StatusRecord::running(&id, i))
                .await
                .unwrap();
        }
        let v = s.status("r0").await.unwrap().unwrap();
        let mut done = v.value.clone();
        done.status = RunPhase::Completed;
        s.write_status(&done, Some(&v.etag)).await.unwrap();
        assert!(s.write_status(&done, Some(&v.etag)).await.is_err());
        assert!(s.write_status(&done, None).await.is_err());
        let p1 = s
            .list_stalled(&[RunPhase::Running], 4, 2, None)
            .await
            .unwrap();
        let ids: Vec<_> = p1.items.iter().map(|r| r.run_id.as_str()).collect();
        assert_eq!(ids, ["r1", "r2"]);
        let p2 = s
            .list_stalled(&[RunPhase::Running], 4, 2, p1.continuation.as_deref())
            .await
            .unwrap();
        let ids: Vec<_> = p2.items.iter().map(|r| r.run_id.as_str()).collect();
        assert_eq!(ids, ["r3"]);
        assert_eq!(p2.continuation, None);
        let finished = s
            .list_stalled(&[RunPhase::Completed, RunPhase::Awaiting], 100, 10, None)
            .await
            .unwrap();
        let ids: Vec<_> = finished.items.iter().map(|r| r.run_id.as_str()).collect();
        assert_eq!(ids, ["r0"]);
    }

    #[tokio::test(start_paused = true)]
    async fn coordination_store_has_redis_semantics_and_ttls() {
        let c = MemoryCoordinationStore::new();
        let ttl = Duration::from_secs(60);
        assert!(c.set_if_not_exists("k", "v", ttl).await.unwrap());
        assert!(!c.set_if_not_exists("k", "w", ttl).await.unwrap());
        assert_eq!(c.get("k").await.unwrap().as_deref(), Some("v"));
        assert_eq!(c.set_add("s", "a", None).await.unwrap(), 1);
        assert_eq!(c.set_add("s", "a", None).await.unwrap(), 1);
        assert_eq!(c.set_add("s", "b", None).await.unwrap(), 2);
        assert_eq!(c.increment("n", ttl).await.unwrap(), 1);
        assert_eq!(c.counter_add("n", 5, None).await.unwrap(), 6);
        assert!(c.get("s").await.is_err());
        tokio::time::advance(ttl).await;
        assert_eq!(c.get("k").await.unwrap(), None);
        assert_eq!(c.get("n").await.unwrap(), None);
        assert!(!c.extend_ttl("k", ttl).await.unwrap());
        assert_eq!(c.set_add("s", "c", None).await.unwrap(), 3);
        c.delete("s").await.unwrap();
        assert_eq!(c.keys(), Vec::<String>::new());
    }

    #[tokio::test(start_paused = true)]
    async fn a_ttl_too_long_to_represent_never_expires_instead_of_panicking() {
        let c = MemoryCoordinationStore::new();
        assert!(c.set_if_not_exists("k", "v", Duration::MAX).await.unwrap());
        assert_eq!(c.set_add("s", "a", Some(Duration::MAX)).await.unwrap(), 1);
        assert_eq!(c.counter_add("n", 1, Some(Duration::MAX)).await.unwrap(), 1);
        assert!(c.extend_ttl("k", Duration::MAX).await.unwrap());
        tokio::time::advance(MAX_QUEUE_DELAY * 100).await;
        assert_eq!(c.keys(), ["k", "n", "s"]);
    }
}
