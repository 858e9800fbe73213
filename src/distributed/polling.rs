//! The worker's polling loop: batched receives bounded by free concurrency slots, a receive
//! policy that does not poll the queue pointlessly, lease renewal every third of the visibility while
//! a job runs, a status heartbeat for long nodes, and graceful shutdown (stop receiving, let
//! the jobs in flight finish within `shutdown_grace`, then stop the rest and release their
//! messages at once).
//!
//! # When the worker receives
//!
//! Each receive asks for `min(batch_size, free slots)` messages (1 to 32); with no free slot
//! the loop waits for a job to finish. What happens next depends on what came back:
//!
//! - **A full batch** (as many messages as asked): more are probably waiting, so the worker
//!   receives again at once (once a slot is free) and the backoff restarts from
//!   `idle_backoff_min`.
//! - **Fewer messages than asked, or none**: the queue is drained for now. The worker pauses
//!   until the FIRST of: one of its own jobs finishes having made work receivable at once,
//!   its last job in flight finishes (see the next point), the backoff pause (50-100 % of
//!   the current backoff, jittered so that workers spread apart; the queue's
//!   [`JobQueue::wait_for_work`](crate::distributed::ports::JobQueue::wait_for_work) may end
//!   it early when it hears that work was sent), or shutdown. Every such pause doubles the
//!   backoff, up to `idle_backoff_max`.
//!   A finished job reports ([`Handled::enqueued_now`]) whether it sent a message that is
//!   visible at once (successors, a retry or wake-up without delay) or released its own
//!   message without delay; delayed messages do not count. So a chain's next node is
//!   received right after its predecessor completes, with no sleep in between, while a job
//!   that enqueued nothing visible (a fan-out branch whose join still waits for other
//!   branches, the last node of a run, a retry with a delay) lets the worker go on waiting
//!   instead of receiving again: that receive would come back empty (about one wasted
//!   request per chain node when the worker received at once after every short batch, 0.9
//!   per fan-out node when it received after every job completion).
//! - **Nothing in flight and the queue empty** right after the worker had work (the receive
//!   made at once when its last job in flight finished, whatever that job sent): the worker
//!   has just become idle, so the backoff restarts from `idle_backoff_min` (the next run's
//!   first job is picked up within tens of milliseconds, not after the long pause that grew
//!   while the worker was busy: a run whose last node finishes costs this one empty
//!   receive, on a chain and on a fan-out alike); after that it grows to
//!   `idle_backoff_max`, so an idle worker settles at 1 to 2 receives per second with the
//!   defaults (never a hot loop: without new messages nothing resets the backoff, and every
//!   receive that does not wait out a pause follows a job of this worker that finished and
//!   made work visible).
//!
//! Work enqueued by OTHER workers or clients is therefore picked up within one backoff pause
//! (at most `idle_backoff_max`) even while this worker's own jobs are running; with several
//! workers on one queue, the worker whose job enqueued a successor usually takes it first,
//! because its completion wakes it at once. A job that failed part-way on an infrastructure
//! error counts as having enqueued (it may have sent some successors before failing): one
//! receive too many at worst. A failed receive pauses for `idle_backoff_max` (jittered).
//!
//! # Successors run where their predecessor committed
//!
//! The jobs a job's commit fired are not sent for any worker to receive: this worker runs
//! them itself, on the run state it just committed (no receive, no read), each guarded by a
//! message so that a crash is still recovered within one visibility timeout. The first
//! successor takes over the job's own message (ONE Update Message replaces its text and
//! renews its lease, instead of a delete and a send); each other one, while a concurrency
//! slot is free, is sent hidden for one lease and runs alongside; the rest are sent
//! normally. A guard is renewed like a received message while its job runs and deleted (or
//! handed over again) after the job's commit. Whatever happens in between, the queue holds
//! a message for every job not yet committed: a crash leaves the guard, which becomes
//! visible after one lease and is run (or, when its commit landed, replayed) by any worker.
//! At most [`MAX_LOCAL_HOPS`] jobs run in a row on one message, and none once shutdown
//! began. A queue without [`JobQueue::rewrite`](crate::distributed::ports::JobQueue::rewrite)
//! and [`JobQueue::send_leased`](crate::distributed::ports::JobQueue::send_leased) gets
//! every successor sent as before. This worker's commits of one run take turns and start
//! from the state it committed last (see the `run_cache` module), so the branches of a
//! fan-out that it runs do not conflict with each other.

use crate::distributed::follow_ups::send_all;
use crate::distributed::job::JobMessage;
use crate::distributed::ports::QueueMessage;
use crate::distributed::publish::touch_status;
use crate::distributed::worker::{Disposition, Handled, Worker};
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

/// How long a job whose lease was lost may take to stop by itself (its node sees the
/// cancellation token) before it is dropped where it is.
const LEASE_LOST_GRACE: Duration = Duration::from_secs(1);

/// How many jobs of one chain a worker runs in a row on one message before it sends the next
/// one to the queue (so one long chain does not hold a concurrency slot for ever).
pub const MAX_LOCAL_HOPS: u32 = 64;

impl Worker {
    /// Polls the queue until `shutdown` fires (see the module documentation for when it
    /// receives), then lets the jobs in flight finish for up to `shutdown_grace` and releases
    /// the messages of those still running.
    pub async fn run(self: Arc<Self>, shutdown: CancellationToken) {
        let abort = CancellationToken::new();
        let slots = Arc::new(Semaphore::new(self.config.concurrency.max(1)));
        let mut tasks = JoinSet::new();
        let mut backoff = Backoff::new(self.config.idle_backoff_min, self.config.idle_backoff_max)
            .with_sources(self.env.sources.clone());
        'polling: while !shutdown.is_cancelled() {
            while tasks.try_join_next().is_some() {}
            let free = slots.available_permits();
            if free == 0 {
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    _ = tasks.join_next() => {}
                }
                continue;
            }
            let asked = free.min(self.config.batch_size).clamp(1, 32);
            let messages = match self
                .backends
                .queue
                .receive(asked, self.config.visibility)
                .await
            {
                Ok(messages) => messages,
                Err(e) => {
                    tracing::warn!(error = %e, "receiving from the queue failed; backing off");
                    tokio::select! {
                        _ = shutdown.cancelled() => break,
                        _ = tokio::time::sleep(self.env.sources.jitter(self.config.idle_backoff_max)) => {}
                    }
                    continue;
                }
            };
            let received = messages.len();
            for message in messages {
                self.spawn_job(message, &slots, &mut tasks, &abort, &shutdown)
                    .await;
            }
            let Some(pause) = backoff.after_receive(received, asked, !tasks.is_empty()) else {
                continue;
            };
            let pause = self.backends.queue.wait_for_work(pause);
            tokio::pin!(pause);
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => break 'polling,
                    _ = &mut pause => break,
                    Some(finished) = tasks.join_next(), if !tasks.is_empty() => {
                        // Receive again at once for work this job made visible (a job that
                        // panicked made nothing visible now: its lease runs out later), or
                        // when it was the last one in flight: the worker just became idle.
                        if finished.unwrap_or(false) || tasks.is_empty() {
                            break;
                        }
                    }
                }
            }
        }
        let drain = async { while tasks.join_next().await.is_some() {} };
        if tokio::time::timeout(self.config.shutdown_grace, drain)
            .await
            .is_err()
        {
            tracing::warn!(
                in_flight = tasks.len(),
                "shutdown grace period over; releasing the jobs still running"
            );
            abort.cancel();
            while tasks.join_next().await.is_some() {}
        }
    }

    /// Starts processing `message` in `tasks` under a concurrency slot.
    async fn spawn_job(
        self: &Arc<Self>,
        message: QueueMessage,
        slots: &Arc<Semaphore>,
        tasks: &mut JoinSet<bool>,
        abort: &CancellationToken,
        shutdown: &CancellationToken,
    ) {
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            // Cannot happen (the receive asked for at most the free slots); give it back.
            let _ = self
                .backends
                .queue
                .release(&message.id, &message.receipt, Duration::ZERO)
                .await;
            return;
        };
        let worker = self.clone();
        let (abort, shutdown, slots) = (abort.clone(), shutdown.clone(), slots.clone());
        tasks.spawn(async move {
            let enqueued_now = worker.process(message, slots, abort, shutdown).await;
            drop(permit);
            enqueued_now
        });
    }

    /// Handles one message under a renewed lease, then completes, releases or poisons it.
    /// When `abort` fires first, the job is stopped where it is and the message released.
    ///
    /// The successors a job's commit fired run in this worker, on the state just committed
    /// (no receive, no read), each guarded by a message that any worker runs if this one
    /// dies: the first takes over the job's own message ([`Worker::hand_over`]: one request
    /// instead of a delete and a send) and runs next in this task; each other one that finds
    /// a free concurrency slot is sent hidden for one lease
    /// ([`JobQueue::send_leased`](crate::distributed::ports::JobQueue::send_leased)) and runs
    /// alongside; the rest are sent to the queue for any worker. At most
    /// [`MAX_LOCAL_HOPS`] jobs run in a row on one message, and none once `shutdown` fired.
    /// Returns whether the job left a message receivable at once: one it sent
    /// ([`Handled::enqueued_now`]), or its own message released without delay.
    fn process(
        self: Arc<Self>,
        message: QueueMessage,
        slots: Arc<Semaphore>,
        abort: CancellationToken,
        shutdown: CancellationToken,
    ) -> Pin<Box<dyn Future<Output = bool> + Send>> {
        // Boxed with its `Send` spelled out: it spawns itself for successors run alongside.
        Box::pin(self.process_chain(message, slots, abort, shutdown))
    }

    /// [`Worker::process`]'s body.
    async fn process_chain(
        self: Arc<Self>,
        mut message: QueueMessage,
        slots: Arc<Semaphore>,
        abort: CancellationToken,
        shutdown: CancellationToken,
    ) -> bool {
        let mut hops = 0;
        let mut enqueued = false;
        // Dropped with this task (a worker future dropped mid-run), they stop with it.
        let mut alongside = JoinSet::new();
        let result = loop {
            let hand_off = hops < MAX_LOCAL_HOPS && !shutdown.is_cancelled();
            let Some((handled, mut lease)) = self.run_leased(&message, &abort, hand_off).await
            else {
                tracing::warn!(message_id = %message.id,
                    "the lease was lost; the job stopped and is left to the next delivery");
                self.note_lapsed_lease(&message.id).await;
                // It may have sent successors before it stopped.
                break true;
            };
            let Handled {
                mut disposition,
                enqueued_now,
                successors,
            } = handled;
            enqueued |= enqueued_now;
            let mut successors = successors.into_iter();
            if let Some(first) = successors.next() {
                let stopping = shutdown.is_cancelled() || abort.is_cancelled();
                let mut plain = Vec::new();
                for next in successors {
                    let permit = slots.clone().try_acquire_owned().ok().filter(|_| !stopping);
                    let leased = match permit {
                        Some(permit) => self.lease(&next).await.map(|m| (m, permit)),
                        None => None,
                    };
                    match leased {
                        Some((guard, permit)) => {
                            let worker = self.clone();
                            let (slots, abort, shutdown) =
                                (slots.clone(), abort.clone(), shutdown.clone());
                            let run = worker.process(guard, slots, abort, shutdown);
                            alongside.spawn(async move {
                                let enqueued = run.await;
                                drop(permit);
                                enqueued
                            });
                        }
                        None => plain.push(next),
                    }
                }
                // The others first: while any may be unsent, the job's own message must
                // stay (its redelivery replays the commit and sends them all again), so its
                // lease is renewed while they are sent (a batch scatter sends thousands).
                let queue = self.backends.queue.as_ref();
                let mut sent = Ok(());
                if !plain.is_empty() {
                    let (result, current) = self
                        .renewing(&message.id, lease, send_all(queue, plain))
                        .await;
                    sent = result;
                    match current {
                        Some(current) => lease = current,
                        None => {
                            tracing::warn!(message_id = %message.id,
                                "the lease was lost while sending the successors; the job's \
                                 next delivery replays it");
                            self.note_lapsed_lease(&message.id).await;
                            break true;
                        }
                    }
                }
                if sent.is_ok() {
                    let handed = if stopping {
                        None
                    } else {
                        self.hand_over(&message, &lease.receipt, &first).await
                    };
                    if let Some(handed) = handed {
                        message = handed;
                        hops += 1;
                        continue;
                    }
                    sent = send_all(queue, vec![first]).await;
                }
                match sent {
                    Ok(()) => enqueued = true,
                    Err(e) => {
                        tracing::warn!(message_id = %message.id, error = %e,
                            "could not send the successors; the job's next delivery replays it");
                        disposition = Disposition::Release(Duration::ZERO);
                    }
                }
            }
            break self
                .settle(&message, &lease.receipt, disposition, enqueued)
                .await;
        };
        let mut any = result;
        while let Some(run) = alongside.join_next().await {
            any |= run.unwrap_or(true);
        }
        any
    }

    /// Sends `next` hidden for one lease, to run it here under that guard; `None` when the
    /// queue cannot (the caller sends it normally).
    async fn lease(&self, next: &JobMessage) -> Option<QueueMessage> {
        let text = next.encode().ok()?;
        match self
            .backends
            .queue
            .send_leased(&text, self.config.visibility)
            .await
        {
            Ok(guard) => Some(guard),
            Err(e) => {
                tracing::debug!(error = %e, "could not send a guard message; sending the job instead");
                None
            }
        }
    }

    /// Runs one message's job under a renewed lease (and the status heartbeat). Returns what
    /// the job came to and the message's current lease, or `None` when the lease was lost.
    async fn run_leased(
        &self,
        message: &QueueMessage,
        abort: &CancellationToken,
        hand_off: bool,
    ) -> Option<(Handled, Lease)> {
        let lease = Arc::new(Mutex::new(Lease {
            receipt: message.receipt.clone(),
            expires: tokio::time::Instant::now() + self.config.visibility,
        }));
        let stop = CancellationToken::new();
        // Fired by the renewal when the lease is lost: the job stops where it is (the node
        // sees the token) and the message is left alone (another worker may hold it now).
        let lease_lost = CancellationToken::new();
        // Stops the lease renewal and the heartbeat however this function ends (also if
        // the job panics), so an abandoned message becomes visible again.
        let _stop_helpers = stop.clone().drop_guard();
        let renewer = tokio::spawn(renew_lease(
            self.backends.queue.clone(),
            message.id.clone(),
            lease.clone(),
            self.config.visibility,
            stop.clone(),
            lease_lost.clone(),
        ));
        let heartbeat = JobMessage::sniff_run_id(&message.text).map(|run_id| {
            tokio::spawn(keep_status_fresh(
                self.backends.runs.clone(),
                run_id,
                self.config.status_heartbeat,
                stop.clone(),
                self.env.sources.clone(),
            ))
        });
        let handled = tokio::select! {
            handled = self.handle_leased(message, lease_lost.clone(), hand_off) => Some(handled),
            // A short grace lets the node see its token and stop by itself.
            _ = async {
                lease_lost.cancelled().await;
                tokio::time::sleep(LEASE_LOST_GRACE).await;
            } => None,
            // Stopped part-way: it may have sent successors.
            _ = abort.cancelled() => Some(Handled::new(Disposition::Release(Duration::ZERO), true)),
        };
        stop.cancel();
        let _ = renewer.await;
        if let Some(heartbeat) = heartbeat {
            let _ = heartbeat.await;
        }
        let handled = handled.filter(|_| !lease_lost.is_cancelled())?;
        let current = lease.lock().unwrap_or_else(|p| p.into_inner()).clone();
        Some((handled, current))
    }

    /// Runs `work` while renewing `lease` on message `id`. Returns what `work` came to and
    /// the lease now held; `None` when it was lost meanwhile.
    async fn renewing<T>(
        &self,
        id: &str,
        lease: Lease,
        work: impl Future<Output = T>,
    ) -> (T, Option<Lease>) {
        let held = Arc::new(Mutex::new(lease));
        let (stop, lost) = (CancellationToken::new(), CancellationToken::new());
        let _stop_renewal = stop.clone().drop_guard();
        let renewer = tokio::spawn(renew_lease(
            self.backends.queue.clone(),
            id.to_string(),
            held.clone(),
            self.config.visibility,
            stop.clone(),
            lost.clone(),
        ));
        let out = work.await;
        stop.cancel();
        let _ = renewer.await;
        let lease = held.lock().unwrap_or_else(|p| p.into_inner()).clone();
        (out, (!lost.is_cancelled()).then_some(lease))
    }

    /// Hands a job's message over to its successor `next`: ONE request replaces the
    /// message's text with the successor's job and renews its lease, so the message now
    /// guards the successor, which this worker runs next. A crash from here on leaves the
    /// message to become visible after one lease, and any worker then runs the successor
    /// (or replays it, if its commit landed). `None` when the queue cannot do it or the
    /// request failed: the caller sends the successor instead.
    async fn hand_over(
        &self,
        message: &QueueMessage,
        receipt: &str,
        next: &JobMessage,
    ) -> Option<QueueMessage> {
        let text = next.encode().ok()?;
        let queue = self.backends.queue.as_ref();
        match queue
            .rewrite(&message.id, receipt, &text, self.config.visibility)
            .await
        {
            Ok(fresh) => Some(QueueMessage {
                id: message.id.clone(),
                receipt: fresh,
                text,
                dequeue_count: message.dequeue_count,
            }),
            Err(e) => {
                tracing::debug!(message_id = %message.id, error = %e,
                    "could not hand the message over to the successor; sending it instead");
                None
            }
        }
    }

    /// Applies a job's disposition to its message. Returns `enqueued_now`, or true as well
    /// when the message was released without delay.
    async fn settle(
        &self,
        message: &QueueMessage,
        receipt: &str,
        disposition: Disposition,
        enqueued_now: bool,
    ) -> bool {
        let queue = self.backends.queue.as_ref();
        let result = match &disposition {
            Disposition::Complete => queue.complete(&message.id, receipt).await,
            Disposition::Release(delay) => queue.release(&message.id, receipt, *delay).await,
            Disposition::Poison(reason) => {
                let mut leased = message.clone();
                leased.receipt = receipt.to_string();
                queue.move_to_poison(&leased, reason).await
            }
        };
        match result {
            Ok(()) => enqueued_now || disposition == Disposition::Release(Duration::ZERO),
            Err(e) => {
                tracing::warn!(message_id = %message.id, error = %e,
                    "could not settle the message; it will be redelivered (the job is idempotent)");
                enqueued_now
            }
        }
    }
}

/// A token that fires on SIGINT (Ctrl-C) or SIGTERM, for [`Worker::run`]'s graceful
/// shutdown (stop receiving, finish or release the jobs in flight). The handlers are installed
/// before this returns; call it inside a tokio runtime. Errors when they cannot be installed.
pub fn shutdown_on_signals() -> Result<CancellationToken, crate::Error> {
    let token = CancellationToken::new();
    let fire = token.clone();
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let install = |kind: SignalKind, name: &str| {
            signal(kind).map_err(|e| {
                crate::Error::unexpected(format!("cannot install the {name} handler: {e}"))
            })
        };
        let mut interrupt = install(SignalKind::interrupt(), "SIGINT")?;
        let mut terminate = install(SignalKind::terminate(), "SIGTERM")?;
        tokio::spawn(async move {
            tokio::select! {
                _ = interrupt.recv() => tracing::info!("SIGINT: shutting down"),
                _ = terminate.recv() => tracing::info!("SIGTERM: shutting down"),
            }
            fire.cancel();
        });
    }
    #[cfg(not(unix))]
    tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_ok() {
            fire.cancel();
        }
    });
    Ok(token)
}

/// A message's lease as its holder knows it: the receipt of the last renewal and when the
/// lease runs out.
#[derive(Debug, Clone)]
struct Lease {
    receipt: String,
    expires: tokio::time::Instant,
}

/// Renews `lease` until `stop` fires, each time when a third of the visibility has passed
/// since the last renewal (so a slow or failed renewal still has two thirds of the lease to
/// be retried in), and keeps it up to date. Transient failures are retried with short
/// pauses for as long as the current lease lasts; a lost lease (a stale receipt: `PreconditionFailed`,
/// or `NotFound` as Azure answers for a stale pop receipt too), another error, or a lease
/// that ran out while retrying fires `lost`.
async fn renew_lease(
    queue: Arc<dyn crate::distributed::ports::JobQueue>,
    id: String,
    lease: Arc<Mutex<Lease>>,
    visibility: Duration,
    stop: CancellationToken,
    lost: CancellationToken,
) {
    let every = visibility / 3;
    let held = || lease.lock().unwrap_or_else(|p| p.into_inner()).clone();
    let left = |expires: tokio::time::Instant| {
        expires.saturating_duration_since(tokio::time::Instant::now())
    };
    let mut pause = left(held().expires).saturating_sub(visibility - every);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(pause) => {}
        }
        let current = held();
        // Not cut short at the lease's end: a late renewal still lands while no other worker
        // has received the message, and its answer carries the only valid receipt.
        match queue.renew(&id, &current.receipt, visibility).await {
            Ok(fresh) => {
                *lease.lock().unwrap_or_else(|p| p.into_inner()) = Lease {
                    receipt: fresh,
                    expires: tokio::time::Instant::now() + visibility,
                };
                pause = every;
            }
            Err(e) if e.is_transient() => {
                let retry_in = (every / 8).max(Duration::from_millis(50));
                if left(current.expires) <= retry_in {
                    tracing::warn!(message_id = %id, error = %e,
                        "lease renewal kept failing until the lease ran out");
                    lost.cancel();
                    return;
                }
                tracing::info!(message_id = %id, error = %e, "lease renewal failed; retrying");
                pause = retry_in;
            }
            Err(e) => {
                tracing::warn!(message_id = %id, error = %e, "the lease is lost");
                lost.cancel();
                return;
            }
        }
    }
}

/// Refreshes the run's status item every `every` until `stop` fires (long nodes).
async fn keep_status_fresh(
    runs: Arc<dyn crate::distributed::ports::RunStore>,
    run_id: String,
    every: Duration,
    stop: CancellationToken,
    sources: crate::flow::sources::Sources,
) {
    let every = every.max(Duration::from_secs(1));
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(every) => {}
        }
        if let Err(e) = touch_status(runs.as_ref(), &run_id, &sources).await {
            tracing::warn!(run_id = %run_id, error = %e, "status heartbeat failed");
        }
    }
}

/// The receive policy's backoff (see the module documentation): whether to receive again at
/// once, or how long to pause at most before the next receive.
#[derive(Debug)]
struct Backoff {
    min: Duration,
    max: Duration,
    /// The base of the next pause (jittered to 50-100 %).
    next: Duration,
    /// A receive returned messages since the backoff last restarted as idle.
    had_work: bool,
    /// Where the jitter comes from.
    sources: crate::flow::sources::Sources,
}

impl Backoff {
    fn new(min: Duration, max: Duration) -> Self {
        Backoff {
            min,
            max: max.max(min),
            next: min,
            had_work: false,
            sources: crate::flow::sources::Sources::system(),
        }
    }

    /// Draws the jitter from `sources`.
    fn with_sources(mut self, sources: crate::flow::sources::Sources) -> Self {
        self.sources = sources;
        self
    }

    /// After a receive that returned `received` of the `asked` messages: `None` to receive
    /// again at once (a full batch), else the longest pause before the next receive (a job
    /// of this worker that finishes with work receivable at once ends it early).
    /// `in_flight`: jobs of this worker are running.
    fn after_receive(
        &mut self,
        received: usize,
        asked: usize,
        in_flight: bool,
    ) -> Option<Duration> {
        if received > 0 {
            self.had_work = true;
        }
        if received >= asked {
            self.next = self.min;
            return None;
        }
        if received == 0 && !in_flight && self.had_work {
            // Just became idle: look again soon, then back off.
            self.had_work = false;
            self.next = self.min;
        }
        let pause = self.sources.jitter(self.next);
        self.next = self.next.saturating_mul(2).min(self.max);
        Some(pause)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: Duration = Duration::from_millis(20);
    const MAX: Duration = Duration::from_millis(1000);

    /// The pause must lie in [base/2, base].
    fn assert_pause_of(pause: Option<Duration>, base: Duration) {
        let pause = pause.expect("a pause, not an immediate receive");
        assert!(
            pause >= base / 2 && pause <= base,
            "{pause:?} is not within 50-100 % of {base:?}"
        );
    }

    #[test]
    fn a_full_batch_is_followed_by_an_immediate_receive_and_restarts_the_backoff() {
        let mut b = Backoff::new(MIN, MAX);
        for _ in 0..10 {
            b.after_receive(0, 32, true);
        }
        assert_eq!(b.after_receive(32, 32, true), None);
        assert_eq!(b.after_receive(3, 3, true), None, "full = as many as asked");
        assert_pause_of(b.after_receive(1, 32, true), MIN);
    }

    #[test]
    fn drained_receives_double_the_pause_up_to_the_maximum() {
        let mut b = Backoff::new(MIN, MAX);
        let mut base = MIN;
        for _ in 0..12 {
            assert_pause_of(b.after_receive(0, 32, false), base);
            base = (base * 2).min(MAX);
        }
        assert_eq!(base, MAX);
    }

    #[test]
    fn a_short_batch_with_jobs_in_flight_keeps_backing_off_instead_of_restarting() {
        let mut b = Backoff::new(MIN, MAX);
        assert_pause_of(b.after_receive(1, 32, true), MIN);
        assert_pause_of(b.after_receive(1, 32, true), MIN * 2);
        assert_pause_of(b.after_receive(0, 32, true), MIN * 4);
    }

    #[test]
    fn becoming_idle_after_work_restarts_the_backoff_once() {
        let mut b = Backoff::new(MIN, MAX);
        for _ in 0..10 {
            b.after_receive(1, 32, true);
        }
        assert_pause_of(b.after_receive(0, 32, false), MIN);
        // Without new work the backoff keeps growing: no hot loop on an idle queue.
        assert_pause_of(b.after_receive(0, 32, false), MIN * 2);
        assert_pause_of(b.after_receive(0, 32, false), MIN * 4);
    }

    #[test]
    fn an_empty_receive_while_jobs_run_does_not_restart_the_backoff() {
        let mut b = Backoff::new(MIN, MAX);
        b.after_receive(1, 32, true);
        assert_pause_of(b.after_receive(0, 32, true), MIN * 2);
        assert_pause_of(b.after_receive(0, 32, true), MIN * 4);
    }

    #[test]
    fn a_maximum_below_the_minimum_and_huge_pauses_do_not_overflow() {
        let mut b = Backoff::new(MIN, Duration::from_millis(5));
        assert_pause_of(b.after_receive(0, 1, false), MIN);
        assert_pause_of(b.after_receive(0, 1, false), MIN);
        let mut huge = Backoff::new(Duration::MAX / 2, Duration::MAX);
        for _ in 0..3 {
            assert!(huge.after_receive(0, 1, false).is_some());
        }
    }
}
