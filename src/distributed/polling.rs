//! The worker's polling loop: batched receives bounded by free concurrency slots, idle
//! backoff with jitter (and an immediate poll when a job finishes, since it likely enqueued a
//! successor), lease renewal at half the visibility while a job runs, a status heartbeat for
//! long nodes, and graceful shutdown (stop receiving, let the jobs in flight finish within
//! `shutdown_grace`, then stop the rest and release their messages at once).

use crate::distributed::core::touch_status;
use crate::distributed::job::JobMessage;
use crate::distributed::ports::QueueMessage;
use crate::distributed::worker::{Disposition, Worker};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{Notify, Semaphore};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

impl Worker {
    /// Polls the queue until `shutdown` fires, then lets the jobs in flight finish for up to
    /// `shutdown_grace` and releases the messages of those still running.
    pub async fn run(self: Arc<Self>, shutdown: CancellationToken) {
        let abort = CancellationToken::new();
        let slots = Arc::new(Semaphore::new(self.config.concurrency.max(1)));
        // A finished job often enqueued a successor: poll again at once instead of idling.
        let finished = Arc::new(Notify::new());
        let mut tasks = JoinSet::new();
        let mut idle = self.config.idle_backoff_min;
        while !shutdown.is_cancelled() {
            while tasks.try_join_next().is_some() {}
            let free = slots.available_permits();
            if free == 0 {
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    _ = tasks.join_next() => {}
                }
                continue;
            }
            let max = free.min(self.config.batch_size).clamp(1, 32);
            match self
                .backends
                .queue
                .receive(max, self.config.visibility)
                .await
            {
                Ok(messages) if messages.is_empty() => {
                    let pause = jitter(idle);
                    idle = (idle * 2).min(self.config.idle_backoff_max);
                    tokio::select! {
                        _ = shutdown.cancelled() => break,
                        _ = tokio::time::sleep(pause) => {}
                        _ = finished.notified() => idle = self.config.idle_backoff_min,
                    }
                }
                Ok(messages) => {
                    idle = self.config.idle_backoff_min;
                    for message in messages {
                        let Ok(permit) = slots.clone().try_acquire_owned() else {
                            // Cannot happen (we asked for at most `free`); give it back.
                            let _ = self
                                .backends
                                .queue
                                .release(&message.id, &message.receipt, Duration::ZERO)
                                .await;
                            continue;
                        };
                        let worker = self.clone();
                        let finished = finished.clone();
                        let abort = abort.clone();
                        tasks.spawn(async move {
                            worker.process(message, abort).await;
                            drop(permit);
                            finished.notify_one();
                        });
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "receiving from the queue failed; backing off");
                    tokio::select! {
                        _ = shutdown.cancelled() => break,
                        _ = tokio::time::sleep(jitter(self.config.idle_backoff_max)) => {}
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

    /// Handles one message under a renewed lease, then completes, releases or poisons it.
    /// When `abort` fires first, the job is stopped where it is and the message released.
    async fn process(&self, message: QueueMessage, abort: CancellationToken) {
        let receipt = Arc::new(Mutex::new(message.receipt.clone()));
        let stop = CancellationToken::new();
        // Stops the lease renewal and the heartbeat however this function ends (also if
        // the job panics), so an abandoned message becomes visible again.
        let _stop_helpers = stop.clone().drop_guard();
        let renewer = tokio::spawn(renew_lease(
            self.backends.queue.clone(),
            message.id.clone(),
            receipt.clone(),
            self.config.visibility,
            stop.clone(),
        ));
        let heartbeat = JobMessage::sniff_run_id(&message.text).map(|run_id| {
            tokio::spawn(keep_status_fresh(
                self.backends.runs.clone(),
                run_id,
                self.config.status_heartbeat,
                stop.clone(),
            ))
        });
        let disposition = tokio::select! {
            d = self.handle_message(&message) => d,
            _ = abort.cancelled() => Disposition::Release(Duration::ZERO),
        };
        stop.cancel();
        let _ = renewer.await;
        if let Some(heartbeat) = heartbeat {
            let _ = heartbeat.await;
        }
        let current = receipt
            .lock()
            .map(|r| r.clone())
            .unwrap_or_else(|p| p.into_inner().clone());
        let queue = self.backends.queue.as_ref();
        let result = match &disposition {
            Disposition::Complete => queue.complete(&message.id, &current).await,
            Disposition::Release(delay) => queue.release(&message.id, &current, *delay).await,
            Disposition::Poison(reason) => {
                let mut leased = message.clone();
                leased.receipt = current;
                queue.move_to_poison(&leased, reason).await
            }
        };
        if let Err(e) = result {
            tracing::warn!(message_id = %message.id, error = %e,
                "could not settle the message; it will be redelivered (the job is idempotent)");
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

/// Renews the lease every half visibility until `stop` fires; keeps the latest receipt.
async fn renew_lease(
    queue: Arc<dyn crate::distributed::ports::JobQueue>,
    id: String,
    receipt: Arc<Mutex<String>>,
    visibility: Duration,
    stop: CancellationToken,
) {
    let every = visibility / 2;
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(every) => {}
        }
        let current = match receipt.lock() {
            Ok(r) => r.clone(),
            Err(p) => p.into_inner().clone(),
        };
        match queue.renew(&id, &current, visibility).await {
            Ok(fresh) => match receipt.lock() {
                Ok(mut r) => *r = fresh,
                Err(p) => *p.into_inner() = fresh,
            },
            Err(e) => {
                tracing::warn!(message_id = %id, error = %e, "lease renewal failed");
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
) {
    let every = every.max(Duration::from_secs(1));
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(every) => {}
        }
        if let Err(e) = touch_status(runs.as_ref(), &run_id).await {
            tracing::warn!(run_id = %run_id, error = %e, "status heartbeat failed");
        }
    }
}

/// A pause between 50% and 100% of `base` (spreads idle workers apart).
fn jitter(base: Duration) -> Duration {
    let ms = u64::try_from(base.as_millis()).unwrap_or(u64::MAX).max(2);
    Duration::from_millis(fastrand::u64(ms / 2..=ms))
}
