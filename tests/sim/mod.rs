//! A seeded, deterministic fault simulation of the distributed core: real `Worker` polling
//! loops, `Client` and `Reconciler` over the in-memory ports wrapped in fault injectors
//! ([`faults`]), driven on a current-thread tokio runtime with paused time. One seed picks
//! the workload (which runs, how many workers) and every fault; [`simulate`] runs it to
//! quiescence and [`check`] lists the invariants it broke.
//!
//! A schedule: start the runs (the client's calls are faulted too, and retried), let the
//! workers run for [`FAULT_PHASE`] while the chaos loop crashes and restarts workers, expires
//! leases, restarts the coordination store, runs the reconciler and resumes waiting runs;
//! then stop the faults, and let time run on (the reconciler, zero threshold, runs whenever
//! the queue is empty while a run is unfinished) until every run is finished and the queue
//! is drained, or [`SETTLE_LIMIT`] passes.

pub mod check;
pub mod faults;
pub mod workload;

use check::{Evidence, Expect, RunView};
use faults::{
    Chaos, Fault, FaultPlan, FaultyCoordination, FaultyQueue, FaultyRunStore, Injected, Leases,
};
use flowcraft_azure::Error;
use flowcraft_azure::distributed::client::Client;
use flowcraft_azure::distributed::core::Backends;
use flowcraft_azure::distributed::memory::{MemoryCoordinationStore, MemoryQueue, MemoryRunStore};
use flowcraft_azure::distributed::ports::RunPhase;
use flowcraft_azure::distributed::reconcile::{Reconciler, ReconcilerConfig};
use flowcraft_azure::distributed::worker::{Worker, WorkerConfig};
use flowcraft_azure::flow::execute::Environment;
use serde_json::Map;
use std::collections::{BTreeMap, BTreeSet};
use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::time::Duration;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use workload::{Executions, WAIT_ACTION, WAIT_NODE};

/// How long (simulated) faults are injected.
pub const FAULT_PHASE: Duration = Duration::from_secs(30);
/// How long (simulated) the system gets to settle once the faults stop.
pub const SETTLE_LIMIT: Duration = Duration::from_secs(300);

/// What one seed runs: which blueprints, how many workers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Workload {
    /// The seed.
    pub seed: u64,
    /// Blueprint ids started at once.
    pub runs: Vec<&'static str>,
    /// Worker processes.
    pub workers: usize,
}

impl Workload {
    /// The workload of `seed`: 1 to 3 runs of the startable blueprints, 2 or 3 workers.
    pub fn of(seed: u64) -> Self {
        let mut rng = fastrand::Rng::with_seed(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15));
        let n = rng.usize(1..=3);
        let runs = (0..n)
            .map(|_| workload::STARTABLE[rng.usize(0..workload::STARTABLE.len())])
            .collect();
        Workload {
            seed,
            runs,
            workers: rng.usize(2..=3),
        }
    }

    /// One run of `blueprint`, two workers (the fault-free references).
    pub fn single(blueprint: &'static str) -> Self {
        Workload {
            seed: 0,
            runs: vec![blueprint],
            workers: 2,
        }
    }
}

/// What a schedule came to.
#[derive(Debug)]
pub struct Outcome {
    /// Invariants broken (empty: the schedule passed).
    pub violations: Vec<String>,
    /// The runs as found at the end.
    pub runs: Vec<RunView>,
    /// What was injected.
    pub injected: Injected,
    /// A digest of everything observable; equal for two runs of the same seed.
    pub fingerprint: u64,
    /// Simulated time until quiescence.
    pub settled_after: Duration,
}

/// Per waiting run: how the driver's resume calls went.
#[derive(Debug, Default)]
struct ResumeCalls {
    /// A call answered Ok (or was refused for good).
    done: bool,
    /// The last call failed (its effect unknown): the driver retries it, like a webhook.
    retrying: bool,
}

/// The simulated deployment.
struct World {
    chaos: Arc<Chaos>,
    queue: Arc<MemoryQueue>,
    leases: Arc<Leases>,
    store: Arc<FaultyRunStore>,
    memory: Arc<MemoryRunStore>,
    coordination: Arc<MemoryCoordinationStore>,
    backends: Backends,
    env: Environment,
    client: Client,
    reconciler: Reconciler,
    config: WorkerConfig,
    workers: Vec<Option<JoinHandle<()>>>,
    down_until: Vec<Instant>,
    resumes: BTreeMap<String, ResumeCalls>,
    /// Runs whose `start_run` answered Ok (all their start jobs were sent).
    started: BTreeSet<String>,
    /// Runs found running with nothing queued (reported once each).
    lost_work: BTreeSet<String>,
    violations: Vec<String>,
}

impl World {
    fn new(plan: &FaultPlan, seed: u64, workers: usize) -> Self {
        let chaos = Arc::new(Chaos::new(plan.clone(), seed));
        let queue = Arc::new(MemoryQueue::new());
        let memory = Arc::new(MemoryRunStore::new());
        let coordination = Arc::new(MemoryCoordinationStore::new());
        let store = Arc::new(FaultyRunStore::new(memory.clone(), chaos.clone()));
        let leases = Arc::new(Leases::default());
        let backends = Backends::new(
            Arc::new(FaultyQueue::new(
                queue.clone(),
                chaos.clone(),
                leases.clone(),
                usize::MAX,
            )),
            store.clone(),
            Arc::new(FaultyCoordination::new(coordination.clone(), chaos.clone())),
        );
        let env = workload::environment();
        let client = Client::new(backends.clone(), env.blueprints.clone());
        let reconciler = Reconciler::new(
            client.clone(),
            backends.clone(),
            ReconcilerConfig {
                stalled_after: Duration::ZERO,
                cooldown: Duration::from_secs(1),
                ..ReconcilerConfig::default()
            },
        );
        let config = WorkerConfig {
            concurrency: 8,
            batch_size: 8,
            visibility: Duration::from_secs(10),
            idle_backoff_min: Duration::from_millis(20),
            idle_backoff_max: Duration::from_millis(500),
            // Above the default 5: a 12 s node whose lease is lost 5 times within the 30 s of
            // faults (crashes + lapses) is a tail event the simulation does hit, and poisoning
            // it then is the policy, not a bug.
            max_dequeue: 8,
            defer_delay: Duration::from_secs(5),
            error_delay: Duration::from_secs(1),
            shutdown_grace: Duration::from_secs(1),
            ..WorkerConfig::default()
        };
        World {
            chaos,
            queue,
            leases,
            store,
            memory,
            coordination,
            backends,
            env,
            client,
            reconciler,
            config,
            workers: (0..workers).map(|_| None).collect(),
            down_until: vec![Instant::now(); workers],
            resumes: BTreeMap::new(),
            started: BTreeSet::new(),
            lost_work: BTreeSet::new(),
            violations: Vec::new(),
        }
    }

    /// Starts every worker that is down and due back.
    fn restart_workers(&mut self, now: Instant) {
        for i in 0..self.workers.len() {
            if self.workers[i].is_none() && self.down_until[i] <= now {
                // Each worker sees the queue through its own view, so a crash releases
                // exactly its leases.
                let mut backends = self.backends.clone();
                backends.queue = Arc::new(FaultyQueue::new(
                    self.queue.clone(),
                    self.chaos.clone(),
                    self.leases.clone(),
                    i,
                ));
                let worker = Worker::new(self.env.clone(), backends, self.config.clone());
                let handle = tokio::spawn(Arc::new(worker).run(CancellationToken::new()));
                self.workers[i] = Some(handle);
            }
        }
    }

    /// Crashes a random live worker: its task and all its jobs stop where they are.
    fn crash_worker(&mut self, now: Instant) {
        let live: Vec<usize> = (0..self.workers.len())
            .filter(|i| self.workers[*i].is_some())
            .collect();
        if live.is_empty() {
            return;
        }
        let i = live[self.chaos.below(live.len())];
        if let Some(handle) = self.workers[i].take() {
            handle.abort();
        }
        self.leases.drop_holder(i);
        if std::env::var("SIM_DEBUG").is_ok() {
            eprintln!("crash: worker {i} at {now:?}");
        }
        self.down_until[i] = now + self.chaos.millis(200, 3_000);
    }

    /// Starts `blueprint`, retrying failed calls like a caller would.
    async fn start(&mut self, blueprint: &str) {
        for _ in 0..20 {
            match self.client.start_run(blueprint, Map::new()).await {
                Ok(run_id) => {
                    self.started.insert(run_id);
                    return;
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(500)).await,
            }
        }
        self.violations
            .push(format!("start_run({blueprint}) failed 20 times in a row"));
    }

    /// Resumes waiting runs: a first call once the node waits, then retries of failed calls.
    async fn resume_waiting(&mut self) {
        let created = self.store.log.lock().unwrap().created.clone();
        for run_id in created {
            let calls = self.resumes.entry(run_id.clone()).or_default();
            if calls.done {
                continue;
            }
            if !calls.retrying {
                let waiting = match self.memory_state(&run_id).await {
                    Some(state) => state.book.awaiting.contains_key(WAIT_NODE),
                    None => false,
                };
                if !waiting {
                    continue;
                }
            }
            let call = self.client.resume_with_action(
                &run_id,
                Some(WAIT_NODE),
                Some(WAIT_ACTION.into()),
                None,
            );
            // Under crashes the caller may die part-way through its call (and retry later).
            let answer = if self.chaos.roll_boosted(Fault::CallerCrash, 4) {
                match tokio::time::timeout(self.chaos.millis(0, 12), call).await {
                    Ok(answer) => answer,
                    Err(_) => Err(Error::transport("simulated: the caller crashed")),
                }
            } else {
                call.await
            };
            let calls = self.resumes.entry(run_id.clone()).or_default();
            match answer {
                Ok(_) => calls.done = true,
                Err(Error::InvalidInput(info)) if calls.retrying => {
                    calls.done = true;
                    self.violations.push(format!(
                        "run {}: a resume retried after a lost answer was refused: {}",
                        &run_id[..8],
                        info.message
                    ));
                }
                Err(Error::InvalidInput(info)) => {
                    calls.done = true;
                    let waiting = self
                        .memory_state(&run_id)
                        .await
                        .is_some_and(|s| s.book.awaiting.contains_key(WAIT_NODE));
                    if waiting {
                        self.violations.push(format!(
                            "run {}: a resume was refused although the node waits: {}",
                            &run_id[..8],
                            info.message
                        ));
                    }
                }
                Err(_) => calls.retrying = true,
            }
        }
    }

    async fn memory_state(
        &self,
        run_id: &str,
    ) -> Option<flowcraft_azure::distributed::state::RunState> {
        use flowcraft_azure::distributed::ports::RunStore;
        self.memory
            .load(run_id)
            .await
            .ok()
            .flatten()
            .map(|v| v.value)
    }

    /// True when every run is finished and the queue is empty.
    async fn settled(&self) -> bool {
        if !self.queue.is_empty() || self.workers.iter().any(Option::is_none) {
            return false;
        }
        let created = self.store.log.lock().unwrap().created.clone();
        for run_id in created {
            match self.memory_state(&run_id).await {
                Some(state) if state.book.status.is_terminal() => {}
                _ => return false,
            }
        }
        true
    }

    /// The fault phase: chaos ticks until [`FAULT_PHASE`] is over or everything settled.
    async fn fault_phase(&mut self) {
        let end = Instant::now() + FAULT_PHASE;
        while Instant::now() < end && !self.settled().await {
            tokio::time::sleep(self.chaos.millis(50, 400)).await;
            let now = Instant::now();
            // Crashes roll on one tick in three (about one per 8 simulated seconds across
            // the fleet at 8 %), so a 12 s node can still finish.
            if self.chaos.below(3) == 0 && self.chaos.roll(Fault::Crash) {
                self.crash_worker(now);
            }
            self.restart_workers(now);
            // A stalled process (a lapse without a failed renewal) is rarer than a failed
            // renewal call: one tick in ten rolls for it.
            if self.chaos.below(10) == 0 && self.chaos.roll(Fault::LeaseExpiry) {
                let leased = self.queue.leased_ids();
                if !leased.is_empty() {
                    let id = &leased[self.chaos.below(leased.len())];
                    self.queue.expire_lease(id);
                    self.leases.let_go(id);
                }
            }
            if self.chaos.below(10) == 0 && self.chaos.roll(Fault::CoordinationRestart) {
                self.coordination.clear();
            }
            if self.chaos.plan().has(Fault::EagerReconciler) && self.chaos.below(4) == 0 {
                let _ = self.reconciler.run_once_before(i64::MAX).await;
            }
            self.resume_waiting().await;
        }
    }

    /// Quiescence: no faults; the reconciler runs when the queue is empty but a run is not
    /// finished. Returns how long it took.
    async fn settle(&mut self) -> Duration {
        self.chaos.calm();
        let start = Instant::now();
        // Every crashed worker comes back now, whatever its restart delay was.
        self.restart_workers(Instant::now() + SETTLE_LIMIT);
        while start.elapsed() < SETTLE_LIMIT {
            tokio::time::sleep(Duration::from_millis(500)).await;
            if self.settled().await {
                return start.elapsed();
            }
            self.resume_waiting().await;
            if self.queue.is_empty() {
                self.note_lost_work().await;
                let _ = self.reconciler.run_once_before(i64::MAX).await;
            }
        }
        self.violations.push(format!(
            "not settled {} s after the faults stopped",
            SETTLE_LIMIT.as_secs()
        ));
        start.elapsed()
    }

    /// With nothing queued, a running run can only move again if the reconciler re-sends
    /// its work: the core lost it. (Runs whose `start_run` failed are exempt: the caller
    /// may have died between creating the run and sending its first jobs.)
    async fn note_lost_work(&mut self) {
        for run_id in self.started.clone() {
            if self.lost_work.contains(&run_id) {
                continue;
            }
            let Some(state) = self.memory_state(&run_id).await else {
                continue;
            };
            if state.book.status == RunPhase::Running {
                self.lost_work.insert(run_id.clone());
                self.violations.push(format!(
                    "run {} ({}) lost its work: running with nothing queued (outstanding {:?}); \
                     only the reconciler can move it",
                    &run_id[..8],
                    state.blueprint_id().unwrap_or_default(),
                    state.book.outstanding.keys().collect::<Vec<_>>()
                ));
            }
        }
    }

    fn stop(&mut self) {
        for handle in self.workers.iter_mut().filter_map(Option::take) {
            handle.abort();
        }
    }
}

/// Runs `workload` under `plan` on a fresh paused current-thread runtime and checks it
/// (against `references` when given).
pub fn simulate(
    workload: &Workload,
    plan: &FaultPlan,
    references: Option<&BTreeMap<String, Expect>>,
) -> Outcome {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .expect("a current-thread runtime");
    runtime.block_on(async {
        // The core's own randomness (commit backoff, poll jitter) uses the thread-local
        // fastrand generator: seed it so the seed decides everything.
        fastrand::seed(workload.seed);
        let mut world = World::new(plan, workload.seed, workload.workers);
        world.restart_workers(Instant::now());
        for blueprint in &workload.runs {
            world.start(blueprint).await;
        }
        world.fault_phase().await;
        let settled_after = world.settle().await;
        world.stop();
        let runs = check::observe(&world.store).await;
        let executions = world
            .env
            .dependencies
            .get::<Executions>()
            .map(|e| e.snapshot())
            .unwrap_or_default();
        let lapsed = world.leases.lapsed();
        let evidence = Evidence {
            lapsed: &lapsed,
            plan,
            store: &world.store,
            memory: &world.memory,
            queue: &world.queue,
            executions,
            references,
        };
        let mut violations = std::mem::take(&mut world.violations);
        violations.extend(check::check(&runs, &evidence).await);
        let injected = world.chaos.injected();
        let fingerprint = fingerprint(&runs, &injected, &world, settled_after);
        Outcome {
            violations,
            runs,
            injected,
            fingerprint,
            settled_after,
        }
    })
}

fn fingerprint(runs: &[RunView], injected: &Injected, world: &World, settled: Duration) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    for run in runs {
        run.blueprint.hash(&mut h);
        run.expect.context.hash(&mut h);
        run.expect.commits.hash(&mut h);
        run.state.book.revision.hash(&mut h);
    }
    injected.calls.hash(&mut h);
    injected.by_class.hash(&mut h);
    world.queue.sends().hash(&mut h);
    world.memory.commits().hash(&mut h);
    world.memory.conflicts().hash(&mut h);
    settled.hash(&mut h);
    if std::env::var("SIM_DEBUG").is_ok() {
        eprintln!(
            "digest: calls {} injected {:?} sends {} commits {} conflicts {} settled {:?} revs {:?}",
            injected.calls,
            injected.by_class,
            world.queue.sends(),
            world.memory.commits(),
            world.memory.conflicts(),
            settled,
            runs.iter()
                .map(|r| r.state.book.revision)
                .collect::<Vec<_>>()
        );
        for run in runs {
            eprintln!("digest: {} {}", run.blueprint, run.expect.context);
        }
    }
    h.finish()
}

/// The fault-free outcome of every startable blueprint. Panics when one of them breaks an
/// invariant even without faults (the simulation itself would be wrong).
pub fn references() -> BTreeMap<String, Expect> {
    let mut out = BTreeMap::new();
    for blueprint in workload::STARTABLE {
        if out.contains_key(blueprint) {
            continue;
        }
        let outcome = simulate(&Workload::single(blueprint), &FaultPlan::none(), None);
        assert!(
            outcome.violations.is_empty(),
            "the fault-free run of {blueprint} breaks invariants: {:#?}",
            outcome.violations
        );
        let run = outcome
            .runs
            .first()
            .unwrap_or_else(|| panic!("the fault-free run of {blueprint} was not created"));
        out.insert(blueprint.to_string(), run.expect.clone());
    }
    out
}
