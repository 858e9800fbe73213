//! Fault injectors around the three in-memory ports. Every port call asks the shared
//! [`Chaos`] (one seeded RNG, consulted in call order) whether to fail before the effect,
//! fail after it (the call took effect, its answer was lost), serve a stale read, duplicate,
//! delay or reorder a message. Faults stop when [`Chaos::calm`] is called (quiescence).

use async_trait::async_trait;
use flowcraft_azure::Error;
use flowcraft_azure::distributed::memory::{MemoryCoordinationStore, MemoryQueue, MemoryRunStore};
use flowcraft_azure::distributed::ports::{
    CoordinationStore, JobQueue, MAX_QUEUE_DELAY, Page, QueueMessage, RunPhase, RunStore,
    StatusRecord, Versioned, WorkerResult,
};
use flowcraft_azure::distributed::state::RunState;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// One class of fault the simulation can inject.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Fault {
    /// A port call fails before it takes effect (connection refused, throttled).
    ErrorBefore,
    /// A port call takes effect, but its answer is lost (the caller sees a transport error).
    ErrorAfter,
    /// Run store reads served by a lagging replica: a document a few revisions old, with its
    /// old ETag (or "no such run" right after creation); status reads likewise.
    StaleReads,
    /// Leases lapse while a node runs: the message becomes visible again mid-job, and lease
    /// renewals fail with a stale receipt.
    LeaseExpiry,
    /// A sent message is delivered twice (a send retried after a lost answer).
    Duplicate,
    /// Messages overtake each other: small random send delays, shuffled receive batches.
    Reorder,
    /// Sent messages become visible only seconds later.
    DelayedVisibility,
    /// A worker process crashes at any await point (its task is aborted, in-flight work is
    /// abandoned) and is restarted a little later.
    Crash,
    /// A client (webhook, operator) dies part-way through its resume call, then retries it.
    CallerCrash,
    /// The coordination store restarts empty.
    CoordinationRestart,
    /// The reconciler runs every second or so during the faults, with a zero threshold.
    EagerReconciler,
}

impl Fault {
    /// Every class.
    pub const ALL: [Fault; 11] = [
        Fault::ErrorBefore,
        Fault::ErrorAfter,
        Fault::StaleReads,
        Fault::LeaseExpiry,
        Fault::Duplicate,
        Fault::Reorder,
        Fault::DelayedVisibility,
        Fault::Crash,
        Fault::CallerCrash,
        Fault::CoordinationRestart,
        Fault::EagerReconciler,
    ];

    /// The kebab-case name used in `SIM_FAULTS`.
    pub fn name(self) -> &'static str {
        match self {
            Fault::ErrorBefore => "error-before",
            Fault::ErrorAfter => "error-after",
            Fault::StaleReads => "stale-reads",
            Fault::LeaseExpiry => "lease-expiry",
            Fault::Duplicate => "duplicate",
            Fault::Reorder => "reorder",
            Fault::DelayedVisibility => "delayed-visibility",
            Fault::Crash => "crash",
            Fault::CallerCrash => "caller-crash",
            Fault::CoordinationRestart => "coordination-restart",
            Fault::EagerReconciler => "eager-reconciler",
        }
    }

    /// Parses a name as printed by [`Fault::name`].
    pub fn parse(name: &str) -> Option<Fault> {
        Fault::ALL.into_iter().find(|f| f.name() == name.trim())
    }

    /// True for classes under which a node may legitimately run twice (at-least-once: a
    /// failed commit or a lapsed lease re-runs the attempt).
    pub fn duplicates_executions(self) -> bool {
        !matches!(
            self,
            Fault::Reorder
                | Fault::CallerCrash
                | Fault::DelayedVisibility
                | Fault::CoordinationRestart
                | Fault::EagerReconciler
        )
    }
}

/// Which fault classes are on, and how often a port call is faulted.
#[derive(Debug, Clone, PartialEq)]
pub struct FaultPlan {
    /// The enabled classes.
    pub faults: BTreeSet<Fault>,
    /// Probability per port call (and per chaos tick for process-level faults).
    pub rate: f64,
}

impl FaultPlan {
    /// No faults at all (the reference runs).
    pub fn none() -> Self {
        FaultPlan {
            faults: BTreeSet::new(),
            rate: 0.0,
        }
    }

    /// The given classes at `rate`.
    pub fn of(faults: &[Fault], rate: f64) -> Self {
        FaultPlan {
            faults: faults.iter().copied().collect(),
            rate,
        }
    }

    /// True when `fault` is enabled.
    pub fn has(&self, fault: Fault) -> bool {
        self.faults.contains(&fault)
    }

    /// The enabled class names, comma separated.
    pub fn names(&self) -> String {
        let names: Vec<&str> = self.faults.iter().map(|f| f.name()).collect();
        names.join(",")
    }
}

/// What was injected, for the report.
#[derive(Debug, Clone, Default)]
pub struct Injected {
    /// Port calls made while faults were on.
    pub calls: u64,
    /// Faults injected, by class.
    pub by_class: BTreeMap<&'static str, u64>,
}

/// The shared fault source: the plan, one seeded RNG, and the on/off switch.
pub struct Chaos {
    plan: FaultPlan,
    rng: Mutex<fastrand::Rng>,
    active: AtomicBool,
    injected: Mutex<Injected>,
}

/// What a port call does: nothing special, fail before the effect, or after it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CallFault {
    None,
    Before,
    After,
}

impl Chaos {
    /// Faults per `plan`, drawn from `seed`, switched on.
    pub fn new(plan: FaultPlan, seed: u64) -> Self {
        Chaos {
            plan,
            rng: Mutex::new(fastrand::Rng::with_seed(seed)),
            active: AtomicBool::new(true),
            injected: Mutex::new(Injected::default()),
        }
    }

    /// The plan.
    pub fn plan(&self) -> &FaultPlan {
        &self.plan
    }

    /// Stops injecting faults (quiescence).
    pub fn calm(&self) {
        self.active.store(false, Ordering::SeqCst);
    }

    /// True while faults are injected.
    pub fn is_active(&self) -> bool {
        self.active.load(Ordering::SeqCst)
    }

    /// What was injected so far.
    pub fn injected(&self) -> Injected {
        self.injected.lock().unwrap().clone()
    }

    /// True (and counted) with the plan's rate when `fault` is on and faults are active.
    pub fn roll(&self, fault: Fault) -> bool {
        if !self.is_active() || !self.plan.has(fault) {
            return false;
        }
        let hit = self.rng.lock().unwrap().f64() < self.plan.rate;
        if hit {
            *self
                .injected
                .lock()
                .unwrap()
                .by_class
                .entry(fault.name())
                .or_default() += 1;
        }
        hit
    }

    /// Like [`Chaos::roll`] with `times` the plan's odds (for faults that have few chances).
    pub fn roll_boosted(&self, fault: Fault, times: u32) -> bool {
        (0..times).any(|_| self.roll(fault))
    }

    /// A seeded number below `n` (0 when `n` is 0).
    pub fn below(&self, n: usize) -> usize {
        if n == 0 {
            return 0;
        }
        self.rng.lock().unwrap().usize(0..n)
    }

    /// A seeded duration between `lo` and `hi` milliseconds.
    pub fn millis(&self, lo: u64, hi: u64) -> Duration {
        Duration::from_millis(self.rng.lock().unwrap().u64(lo..=hi))
    }

    /// The network: every port call takes 0 to 4 ms (simulated), so jobs interleave at
    /// every port call and a crash can land between any two of them.
    async fn latency(&self) {
        let ms = self.rng.lock().unwrap().u64(0..=4);
        if ms > 0 {
            tokio::time::sleep(Duration::from_millis(ms)).await;
        }
    }

    fn call(&self) -> CallFault {
        if !self.is_active() {
            return CallFault::None;
        }
        self.injected.lock().unwrap().calls += 1;
        if self.roll(Fault::ErrorBefore) {
            CallFault::Before
        } else if self.roll(Fault::ErrorAfter) {
            CallFault::After
        } else {
            CallFault::None
        }
    }
}

fn lost(op: &str, after: bool) -> Error {
    if after {
        Error::transport(format!(
            "simulated: the answer to {op} was lost after it took effect"
        ))
    } else {
        Error::transport(format!("simulated: {op} failed before it took effect"))
    }
}

/// Runs `effect` under the call's fault: skipped with an error before, or done and answered
/// with an error after.
macro_rules! faulted {
    ($chaos:expr, $op:expr, $effect:expr) => {{
        $chaos.latency().await;
        match $chaos.call() {
            CallFault::Before => Err(lost($op, false)),
            CallFault::After => {
                let _ = $effect;
                Err(lost($op, true))
            }
            CallFault::None => $effect,
        }
    }};
}

/// Rounds a delay up to whole 100 ms. Timer wake-ups are measured on the wall clock
/// (`wakeUpAt - now`), which runs on during a paused-time simulation by however long the
/// host took (1999 or 1998 ms for a 2 s sleep); rounding makes the seed replay exactly.
fn quantize(delay: Duration) -> Duration {
    let step = 100u128;
    let ms = delay.as_millis().div_ceil(step) * step;
    Duration::from_millis(u64::try_from(ms).unwrap_or(u64::MAX))
}

/// Who holds which message, shared by every view of the queue: a message received again
/// while its holder still held it had its lease lapse under a live worker.
#[derive(Default)]
pub struct Leases {
    /// Message id -> the holder (a worker index).
    held: Mutex<BTreeMap<String, usize>>,
    /// Message ids received again while still held.
    lapsed: Mutex<Vec<String>>,
}

impl Leases {
    /// The holder settled (or tried to settle) `id`, or lost its lease for a reason the
    /// simulation injected on purpose.
    pub fn let_go(&self, id: &str) {
        self.held.lock().unwrap().remove(id);
    }

    /// Worker `holder` crashed: its messages' leases lapse legitimately.
    pub fn drop_holder(&self, holder: usize) {
        self.held.lock().unwrap().retain(|_, h| *h != holder);
    }

    /// Messages delivered again while still held.
    pub fn lapsed(&self) -> Vec<String> {
        self.lapsed.lock().unwrap().clone()
    }

    fn take(&self, id: &str, holder: usize) {
        if let Some(old) = self.held.lock().unwrap().insert(id.to_string(), holder) {
            if std::env::var("SIM_DEBUG").is_ok() {
                eprintln!(
                    "lapse: {id} held by {old}, received by {holder} at {:?}",
                    tokio::time::Instant::now()
                );
            }
            self.lapsed.lock().unwrap().push(id.to_string());
        }
    }
}

/// The memory queue behind fault injection, as seen by one caller (a worker, or the
/// client side).
pub struct FaultyQueue {
    /// The real queue (inspected by the checker, untouched by faults).
    pub inner: Arc<MemoryQueue>,
    chaos: Arc<Chaos>,
    leases: Arc<Leases>,
    holder: usize,
}

impl FaultyQueue {
    /// Wraps `inner` for caller `holder`, recording leases in `leases`.
    pub fn new(
        inner: Arc<MemoryQueue>,
        chaos: Arc<Chaos>,
        leases: Arc<Leases>,
        holder: usize,
    ) -> Self {
        FaultyQueue {
            inner,
            chaos,
            leases,
            holder,
        }
    }

    async fn send_once(&self, text: &str, delay: Duration) -> Result<(), Error> {
        let mut delay = quantize(delay);
        if self.chaos.roll(Fault::Reorder) {
            delay += self.chaos.millis(1, 300);
        }
        if self.chaos.roll(Fault::DelayedVisibility) {
            delay += self.chaos.millis(1_000, 5_000);
        }
        self.inner.send(text, delay.min(MAX_QUEUE_DELAY)).await
    }
}

#[async_trait]
impl JobQueue for FaultyQueue {
    async fn send(&self, text: &str, delay: Duration) -> Result<(), Error> {
        faulted!(
            self.chaos,
            "send message",
            async {
                self.send_once(text, delay).await?;
                if self.chaos.roll(Fault::Duplicate) {
                    self.send_once(text, delay).await?;
                }
                Ok::<(), Error>(())
            }
            .await
        )
    }

    async fn receive(&self, max: usize, visibility: Duration) -> Result<Vec<QueueMessage>, Error> {
        self.chaos.latency().await;
        let mut batch = match self.chaos.call() {
            CallFault::Before => return Err(lost("receive messages", false)),
            // Received and leased, but the caller never sees them: their leases lapse.
            CallFault::After => {
                let _ = self.inner.receive(max, visibility).await;
                return Err(lost("receive messages", true));
            }
            CallFault::None => self.inner.receive(max, visibility).await?,
        };
        for m in &batch {
            self.leases.take(&m.id, self.holder);
        }
        if batch.len() > 1 && self.chaos.roll(Fault::Reorder) {
            for i in (1..batch.len()).rev() {
                batch.swap(i, self.chaos.below(i + 1));
            }
        }
        Ok(batch)
    }

    async fn renew(&self, id: &str, receipt: &str, visibility: Duration) -> Result<String, Error> {
        if self.chaos.roll(Fault::LeaseExpiry) {
            self.inner.expire_lease(id);
            self.leases.let_go(id);
            return Err(Error::PreconditionFailed(Box::new(
                flowcraft_azure::ErrorInfo::new(format!(
                    "simulated: the lease of message {id} lapsed (stale receipt)"
                )),
            )));
        }
        self.chaos.latency().await;
        match self.chaos.call() {
            CallFault::Before => Err(lost("renew lease", false)),
            // Renewed, but the new receipt is lost with the answer: the holder cannot keep
            // this lease any more, through no fault of its own.
            CallFault::After => {
                let _ = self.inner.renew(id, receipt, visibility).await;
                self.leases.let_go(id);
                Err(lost("renew lease", true))
            }
            CallFault::None => self.inner.renew(id, receipt, visibility).await,
        }
    }

    async fn send_leased(&self, text: &str, lease: Duration) -> Result<QueueMessage, Error> {
        self.chaos.latency().await;
        match self.chaos.call() {
            CallFault::Before => Err(lost("send leased message", false)),
            // Sent hidden, but the receipt is lost with the answer: nobody holds it, and it
            // becomes visible after one lease.
            CallFault::After => {
                let _ = self.inner.send_leased(text, lease).await;
                Err(lost("send leased message", true))
            }
            CallFault::None => {
                let guard = self.inner.send_leased(text, lease).await?;
                self.leases.take(&guard.id, self.holder);
                Ok(guard)
            }
        }
    }

    async fn rewrite(
        &self,
        id: &str,
        receipt: &str,
        text: &str,
        visibility: Duration,
    ) -> Result<String, Error> {
        if self.chaos.roll(Fault::LeaseExpiry) {
            self.inner.expire_lease(id);
            self.leases.let_go(id);
            return Err(Error::PreconditionFailed(Box::new(
                flowcraft_azure::ErrorInfo::new(format!(
                    "simulated: the lease of message {id} lapsed (stale receipt)"
                )),
            )));
        }
        self.chaos.latency().await;
        match self.chaos.call() {
            CallFault::Before => Err(lost("rewrite message", false)),
            // Rewritten, but the new receipt is lost with the answer: the holder cannot keep
            // this lease any more.
            CallFault::After => {
                let _ = self.inner.rewrite(id, receipt, text, visibility).await;
                self.leases.let_go(id);
                Err(lost("rewrite message", true))
            }
            CallFault::None => self.inner.rewrite(id, receipt, text, visibility).await,
        }
    }

    async fn complete(&self, id: &str, receipt: &str) -> Result<(), Error> {
        self.leases.let_go(id);
        faulted!(
            self.chaos,
            "delete message",
            self.inner.complete(id, receipt).await
        )
    }

    async fn release(&self, id: &str, receipt: &str, delay: Duration) -> Result<(), Error> {
        self.leases.let_go(id);
        faulted!(
            self.chaos,
            "release message",
            self.inner.release(id, receipt, delay).await
        )
    }

    async fn move_to_poison(&self, message: &QueueMessage, reason: &str) -> Result<(), Error> {
        self.leases.let_go(&message.id);
        faulted!(
            self.chaos,
            "poison message",
            self.inner.move_to_poison(message, reason).await
        )
    }
}

/// What the run store wrapper observed: every run created, every commit record added, and
/// the past versions stale reads are served from.
#[derive(Default)]
pub struct StoreLog {
    /// Run ids in creation order (the effect happened, whatever the caller saw).
    pub created: Vec<String>,
    /// How often each (run, work key) commit record was ADDED by a successful commit.
    pub commit_adds: BTreeMap<(String, String), u32>,
    /// Per run: documents as stored, oldest first (`None`: before creation).
    versions: BTreeMap<String, Vec<Option<Versioned<RunState>>>>,
    /// Per run: status items as stored, oldest first.
    statuses: BTreeMap<String, Vec<Versioned<StatusRecord>>>,
}

/// The memory run store behind fault injection, stale reads and a log of every effect.
pub struct FaultyRunStore {
    /// The real store (inspected by the checker).
    pub inner: Arc<MemoryRunStore>,
    chaos: Arc<Chaos>,
    /// What happened.
    pub log: Mutex<StoreLog>,
}

/// How many revisions back a stale read may go.
const MAX_LAG: usize = 3;

impl FaultyRunStore {
    /// Wraps `inner`.
    pub fn new(inner: Arc<MemoryRunStore>, chaos: Arc<Chaos>) -> Self {
        FaultyRunStore {
            inner,
            chaos,
            log: Mutex::new(StoreLog::default()),
        }
    }

    fn stale<T: Clone>(&self, history: Option<&Vec<T>>) -> Option<T> {
        let history = history?;
        if history.len() < 2 || !self.chaos.roll(Fault::StaleReads) {
            return None;
        }
        let lag = 1 + self.chaos.below(MAX_LAG.min(history.len() - 1));
        history.get(history.len() - 1 - lag).cloned()
    }

    fn record_commit(&self, before: Option<RunState>, state: &RunState, etag: String) {
        let mut log = self.log.lock().unwrap();
        let old: BTreeSet<String> = before
            .map(|b| b.book.commits.keys().cloned().collect())
            .unwrap_or_default();
        for key in state.book.commits.keys() {
            if !old.contains(key) {
                *log.commit_adds
                    .entry((state.run_id.clone(), key.clone()))
                    .or_default() += 1;
            }
        }
        log.versions
            .entry(state.run_id.clone())
            .or_default()
            .push(Some(Versioned {
                value: state.clone(),
                etag,
            }));
    }
}

#[async_trait]
impl RunStore for FaultyRunStore {
    async fn create_run(&self, state: &RunState, status: &StatusRecord) -> Result<bool, Error> {
        faulted!(
            self.chaos,
            "create run",
            async {
                let created = self.inner.create_run(state, status).await?;
                if created {
                    let stored = self.inner.load(&state.run_id).await?;
                    let mut log = self.log.lock().unwrap();
                    log.created.push(state.run_id.clone());
                    log.versions
                        .insert(state.run_id.clone(), vec![None, stored]);
                }
                Ok::<bool, Error>(created)
            }
            .await
        )
    }

    async fn load(&self, run_id: &str) -> Result<Option<Versioned<RunState>>, Error> {
        self.chaos.latency().await;
        if let CallFault::Before = self.chaos.call() {
            return Err(lost("read run", false));
        }
        let stale = {
            let log = self.log.lock().unwrap();
            self.stale(log.versions.get(run_id))
        };
        match stale {
            Some(old) => Ok(old),
            None => self.inner.load(run_id).await,
        }
    }

    async fn commit(&self, state: &RunState, etag: &str) -> Result<String, Error> {
        faulted!(
            self.chaos,
            "commit run",
            async {
                let before = self.inner.load(&state.run_id).await.ok().flatten();
                let tag = self.inner.commit(state, etag).await?;
                self.record_commit(before.map(|b| b.value), state, tag.clone());
                Ok::<String, Error>(tag)
            }
            .await
        )
    }

    async fn status(&self, run_id: &str) -> Result<Option<Versioned<StatusRecord>>, Error> {
        self.chaos.latency().await;
        if let CallFault::Before = self.chaos.call() {
            return Err(lost("read status", false));
        }
        let stale = {
            let log = self.log.lock().unwrap();
            self.stale(log.statuses.get(run_id))
        };
        match stale {
            Some(old) => Ok(Some(old)),
            None => self.inner.status(run_id).await,
        }
    }

    async fn write_status(
        &self,
        record: &StatusRecord,
        etag: Option<&str>,
    ) -> Result<String, Error> {
        faulted!(
            self.chaos,
            "write status",
            async {
                let tag = self.inner.write_status(record, etag).await?;
                self.log
                    .lock()
                    .unwrap()
                    .statuses
                    .entry(record.run_id.clone())
                    .or_default()
                    .push(Versioned {
                        value: record.clone(),
                        etag: tag.clone(),
                    });
                Ok::<String, Error>(tag)
            }
            .await
        )
    }

    async fn list_stalled(
        &self,
        phases: &[RunPhase],
        older_than: i64,
        limit: usize,
        continuation: Option<&str>,
    ) -> Result<Page<StatusRecord>, Error> {
        self.chaos.latency().await;
        if let CallFault::Before = self.chaos.call() {
            return Err(lost("list stalled runs", false));
        }
        if continuation.is_some() {
            return Ok(Page {
                items: Vec::new(),
                continuation: None,
            });
        }
        // Run ids are random; list in creation order so a seed replays exactly.
        let mut items = Vec::new();
        let mut next: Option<String> = None;
        loop {
            let page = self
                .inner
                .list_stalled(phases, older_than, limit.max(1), next.as_deref())
                .await?;
            items.extend(page.items);
            match page.continuation {
                Some(c) => next = Some(c),
                None => break,
            }
        }
        let order = self.log.lock().unwrap().created.clone();
        items.sort_by_key(|r| order.iter().position(|id| *id == r.run_id));
        Ok(Page {
            items,
            continuation: None,
        })
    }

    async fn put_worker_result(&self, result: &WorkerResult) -> Result<bool, Error> {
        faulted!(
            self.chaos,
            "put worker result",
            self.inner.put_worker_result(result).await
        )
    }

    async fn worker_result(
        &self,
        run_id: &str,
        batch: &str,
        node: &str,
    ) -> Result<Option<WorkerResult>, Error> {
        self.chaos.latency().await;
        if let CallFault::Before = self.chaos.call() {
            return Err(lost("read worker result", false));
        }
        self.inner.worker_result(run_id, batch, node).await
    }

    async fn record_arrival(&self, run_id: &str, batch: &str, node: &str) -> Result<u64, Error> {
        faulted!(
            self.chaos,
            "record arrival",
            self.inner.record_arrival(run_id, batch, node).await
        )
    }

    async fn worker_results(
        &self,
        run_id: &str,
        batch: &str,
        continuation: Option<&str>,
    ) -> Result<Page<WorkerResult>, Error> {
        self.chaos.latency().await;
        if let CallFault::Before = self.chaos.call() {
            return Err(lost("list worker results", false));
        }
        self.inner.worker_results(run_id, batch, continuation).await
    }
}

/// The memory coordination store behind fault injection.
pub struct FaultyCoordination {
    /// The real store (cleared by a simulated restart).
    pub inner: Arc<MemoryCoordinationStore>,
    chaos: Arc<Chaos>,
}

impl FaultyCoordination {
    /// Wraps `inner`.
    pub fn new(inner: Arc<MemoryCoordinationStore>, chaos: Arc<Chaos>) -> Self {
        FaultyCoordination { inner, chaos }
    }
}

#[async_trait]
impl CoordinationStore for FaultyCoordination {
    async fn increment(&self, key: &str, ttl: Duration) -> Result<i64, Error> {
        faulted!(
            self.chaos,
            "increment",
            self.inner.increment(key, ttl).await
        )
    }

    async fn set_if_not_exists(
        &self,
        key: &str,
        value: &str,
        ttl: Duration,
    ) -> Result<bool, Error> {
        faulted!(
            self.chaos,
            "set if not exists",
            self.inner.set_if_not_exists(key, value, ttl).await
        )
    }

    async fn extend_ttl(&self, key: &str, ttl: Duration) -> Result<bool, Error> {
        faulted!(
            self.chaos,
            "extend ttl",
            self.inner.extend_ttl(key, ttl).await
        )
    }

    async fn delete(&self, key: &str) -> Result<(), Error> {
        faulted!(self.chaos, "delete key", self.inner.delete(key).await)
    }

    async fn get(&self, key: &str) -> Result<Option<String>, Error> {
        faulted!(self.chaos, "get key", self.inner.get(key).await)
    }

    async fn set_add(&self, key: &str, member: &str, ttl: Option<Duration>) -> Result<u64, Error> {
        faulted!(
            self.chaos,
            "set add",
            self.inner.set_add(key, member, ttl).await
        )
    }

    async fn counter_add(
        &self,
        key: &str,
        delta: i64,
        ttl: Option<Duration>,
    ) -> Result<i64, Error> {
        faulted!(
            self.chaos,
            "counter add",
            self.inner.counter_add(key, delta, ttl).await
        )
    }
}
