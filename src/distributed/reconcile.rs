//! The stalled-run reconciler: pages through runs whose status is `running` and whose
//! `lastUpdated` is older than a threshold (awaiting runs are never listed), and reconciles
//! each at most once per cooldown (a `flowcraft:reconcile:<run>` key with a TTL), so runs with
//! nothing to do are not hammered every cycle (A6).

use crate::Error;
use crate::distributed::client::Client;
use crate::distributed::core::Backends;
use crate::distributed::ports::RunPhase;
use crate::distributed::publish::fail_status_item;
use std::time::Duration;

/// How old the status item of a run without a run item must be before the reconciler
/// takes the run for never created (rather than not visible yet) and closes it.
pub const ORPHAN_AFTER: Duration = Duration::from_secs(3600);

/// Reconciler settings.
#[derive(Debug, Clone)]
pub struct ReconcilerConfig {
    /// A running run whose status is older than this is considered stalled.
    pub stalled_after: Duration,
    /// A run is reconciled at most once per cooldown.
    pub cooldown: Duration,
    /// Status items per page.
    pub page_size: usize,
}

impl Default for ReconcilerConfig {
    fn default() -> Self {
        ReconcilerConfig {
            stalled_after: Duration::from_secs(300),
            cooldown: Duration::from_secs(300),
            page_size: 100,
        }
    }
}

/// What one reconciler pass did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReconcileStats {
    /// Stalled runs listed.
    pub stalled_runs: usize,
    /// Runs for which work was re-enqueued.
    pub reconciled_runs: usize,
    /// Runs skipped because they were reconciled within the cooldown.
    pub skipped_runs: usize,
    /// Runs whose reconciliation failed.
    pub failed_runs: usize,
    /// Status items closed as `failed` because their run item was never created.
    pub orphaned_runs: usize,
}

/// Finds stalled runs and re-enqueues their recorded outstanding work.
#[derive(Debug, Clone)]
pub struct Reconciler {
    client: Client,
    backends: Backends,
    config: ReconcilerConfig,
}

impl Reconciler {
    /// A reconciler using `client` (for [`Client::reconcile`]) over `backends`.
    pub fn new(client: Client, backends: Backends, config: ReconcilerConfig) -> Self {
        Reconciler {
            client,
            backends,
            config,
        }
    }

    /// One pass over the runs stalled as of now.
    pub async fn run_once(&self) -> Result<ReconcileStats, Error> {
        let stalled = i64::try_from(self.config.stalled_after.as_secs()).unwrap_or(i64::MAX);
        self.run_once_before(self.client.sources().now_epoch().saturating_sub(stalled))
            .await
    }

    /// One pass over runs whose `lastUpdated` is older than `older_than` (epoch seconds).
    pub async fn run_once_before(&self, older_than: i64) -> Result<ReconcileStats, Error> {
        let mut stats = ReconcileStats::default();
        let mut continuation: Option<String> = None;
        loop {
            let page = self
                .backends
                .runs
                .list_stalled(
                    &[RunPhase::Running],
                    older_than,
                    self.config.page_size,
                    continuation.as_deref(),
                )
                .await
                .map_err(|e| e.during("list stalled runs"))?;
            for status in page.items {
                stats.stalled_runs += 1;
                let key = format!("flowcraft:reconcile:{}", status.run_id);
                let first = match self
                    .backends
                    .coordination
                    .set_if_not_exists(&key, "1", self.config.cooldown)
                    .await
                {
                    Ok(first) => first,
                    Err(e) => {
                        // The cooldown only saves work; reconciling is safe without it.
                        tracing::warn!(run_id = %status.run_id, error = %e,
                            "reconcile cooldown unavailable; reconciling anyway");
                        true
                    }
                };
                if !first {
                    stats.skipped_runs += 1;
                    continue;
                }
                match self.client.reconcile(&status.run_id).await {
                    Ok(work) if !work.is_empty() => stats.reconciled_runs += 1,
                    Ok(_) => {}
                    Err(Error::NotFound(_)) => {
                        if self.close_orphan(&status.run_id).await? {
                            stats.orphaned_runs += 1;
                        }
                    }
                    Err(e) => {
                        tracing::warn!(run_id = %status.run_id, error = %e, "reconcile failed");
                        stats.failed_runs += 1;
                    }
                }
            }
            match page.continuation {
                Some(next) => continuation = Some(next),
                None => return Ok(stats),
            }
        }
    }

    /// A status item whose run item does not exist: the run's creation stopped between its
    /// two writes (the status item is written first). Once the status is older than
    /// [`ORPHAN_AFTER`] (a lagging read cannot be the cause any more) it is marked `failed`
    /// with the reason, so it is no longer listed. Returns whether it was closed.
    async fn close_orphan(&self, run_id: &str) -> Result<bool, Error> {
        let orphan_after = i64::try_from(ORPHAN_AFTER.as_secs()).unwrap_or(i64::MAX);
        let now = self.client.sources().now_epoch();
        let cutoff = now.saturating_sub(orphan_after);
        let reason = format!(
            "run {run_id} was never created: its creation stopped after the status item was \
             written; start the run again"
        );
        let runs = self.backends.runs.as_ref();
        let closed = fail_status_item(runs, run_id, &reason, now, |current| {
            current.last_updated < cutoff
        })
        .await?;
        if closed {
            tracing::warn!(
                run_id,
                "closed the status item of a run that was never created"
            );
        }
        Ok(closed)
    }
}
