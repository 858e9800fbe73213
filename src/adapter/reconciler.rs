//! The stalled-run reconciler inside worker processes: runs
//! [`Reconciler::run_once`](crate::distributed::reconcile::Reconciler::run_once) every
//! `interval` (jittered, so workers spread apart) under a Redis leader lease
//! (`flowcraft:lease:reconciler:<database>/<status container>` for the workers built from
//! [`Settings`](crate::adapter::Settings)), so that one worker of the fleet scans at a time. The leader
//! keeps the lease by renewing it each pass; when it stops, the lease lapses after
//! [`LEASE_INTERVALS`] intervals and another worker takes over.
//!
//! Without Redis, or while Redis is down, every worker runs the pass (the per-run cooldown
//! and idempotent reconciliation make that safe, only less economical).

use crate::Error;
use crate::adapter::redis_store::RedisCoordinationStore;
use crate::distributed::client::Client;
use crate::distributed::core::Backends;
use crate::distributed::reconcile::{ReconcileStats, Reconciler, ReconcilerConfig};
use crate::flow::execute::BlueprintRegistry;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// The default name of the reconciler's leader lease.
pub const LEASE_NAME: &str = "reconciler";
/// Default pause between two passes (jittered to 50-100 %).
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(60);
/// The lease lasts this many intervals, so a leader that stopped is replaced within that.
pub const LEASE_INTERVALS: u32 = 3;

/// Who ran a pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PassOutcome {
    /// This worker ran the pass (as the lease holder, or without Redis).
    Ran(ReconcileStats),
    /// Another worker holds the lease: nothing done.
    NotLeader,
}

/// The periodic reconciler of one worker process.
#[derive(Debug)]
pub struct ReconcilerLoop {
    reconciler: Reconciler,
    lease: Option<Arc<RedisCoordinationStore>>,
    lease_name: String,
    holder: String,
    interval: Duration,
}

impl ReconcilerLoop {
    /// A reconciler over `backends` for the runs of `blueprints`; `lease`: the Redis store
    /// that holds the leader lease (`None`: no lease, this worker always runs the pass).
    pub fn new(
        backends: Backends,
        blueprints: Arc<BlueprintRegistry>,
        config: ReconcilerConfig,
        lease: Option<Arc<RedisCoordinationStore>>,
    ) -> Self {
        let client = Client::new(backends.clone(), blueprints);
        ReconcilerLoop {
            reconciler: Reconciler::new(client, backends, config),
            lease,
            lease_name: LEASE_NAME.to_string(),
            holder: format!("worker-{}", uuid::Uuid::new_v4()),
            interval: DEFAULT_INTERVAL,
        }
    }

    /// Uses `interval` between passes instead of [`DEFAULT_INTERVAL`].
    pub fn with_interval(mut self, interval: Duration) -> Self {
        self.interval = interval.max(Duration::from_millis(10));
        self
    }

    /// Uses the lease `name` instead of [`LEASE_NAME`] (one lease per fleet: per status
    /// container).
    pub fn with_lease_name(mut self, name: impl Into<String>) -> Self {
        self.lease_name = name.into();
        self
    }

    /// This worker's lease holder id.
    pub fn holder(&self) -> &str {
        &self.holder
    }

    /// One pass, if this worker holds (or takes) the lease. A Redis error counts as "no
    /// coordination": the pass runs anyway.
    pub async fn run_once(&self) -> Result<PassOutcome, Error> {
        if let Some(redis) = &self.lease {
            let ttl = self.interval.saturating_mul(LEASE_INTERVALS);
            match redis
                .try_acquire_lease(&self.lease_name, &self.holder, ttl)
                .await
            {
                Ok(true) => {}
                Ok(false) => return Ok(PassOutcome::NotLeader),
                Err(e) => {
                    tracing::debug!(error = %e, "no reconciler lease (Redis unavailable); running the pass anyway");
                }
            }
        }
        self.reconciler.run_once().await.map(PassOutcome::Ran)
    }

    /// Runs a pass every `interval` (jittered to 50-100 %) until `shutdown`, then gives the
    /// lease up. Failed passes are logged and retried at the next interval.
    pub async fn run(self, shutdown: CancellationToken) {
        loop {
            let ms = u64::try_from(self.interval.as_millis())
                .unwrap_or(u64::MAX)
                .max(2);
            let pause = Duration::from_millis(fastrand::u64(ms / 2..=ms));
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = tokio::time::sleep(pause) => {}
            }
            match self.run_once().await {
                Ok(PassOutcome::Ran(stats)) if stats.stalled_runs > 0 => {
                    tracing::info!(
                        stalled = stats.stalled_runs,
                        reconciled = stats.reconciled_runs,
                        skipped = stats.skipped_runs,
                        failed = stats.failed_runs,
                        "reconciler pass"
                    );
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "reconciler pass failed; retrying later"),
            }
        }
        if let Some(redis) = &self.lease {
            let _ = redis.release_lease(&self.lease_name, &self.holder).await;
        }
    }
}
