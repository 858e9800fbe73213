//! [`KeepStartedAt`]: a [`RunStore`] decorator that keeps a run's `startedAt` on its status
//! item. The client sets `startedAt` when it creates a run, but the core rebuilds the whole
//! status record from the run state on every later status write, and a replace would drop
//! the field. Every status write of the core follows a status read of the same run in the
//! same process (compare-and-set), so the decorator remembers `startedAt` from reads and
//! creates and puts it back into a write that lacks it. No extra request is sent.

use crate::Error;
use crate::distributed::ports::{Page, RunPhase, RunStore, StatusRecord, Versioned, WorkerResult};
use crate::distributed::state::RunState;
use async_trait::async_trait;
use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// Runs whose start time is remembered; beyond this the memory is cleared (it is only needed
/// between a status read and the write that follows it).
const REMEMBERED_RUNS: usize = 100_000;

/// Keeps `startedAt` on status writes of the wrapped store (see the module docs).
pub struct KeepStartedAt {
    inner: Arc<dyn RunStore>,
    started: Mutex<HashMap<String, i64>>,
}

impl std::fmt::Debug for KeepStartedAt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeepStartedAt").finish_non_exhaustive()
    }
}

impl KeepStartedAt {
    /// Wraps `inner`.
    pub fn new(inner: Arc<dyn RunStore>) -> Self {
        KeepStartedAt {
            inner,
            started: Mutex::new(HashMap::new()),
        }
    }

    fn started(&self) -> std::sync::MutexGuard<'_, HashMap<String, i64>> {
        self.started.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn remember(&self, record: &StatusRecord) {
        if let Some(at) = record.started_at {
            let mut started = self.started();
            if started.len() >= REMEMBERED_RUNS {
                started.clear();
            }
            started.insert(record.run_id.clone(), at);
        }
    }

    /// `record`, with the remembered start time when it has none.
    fn completed<'a>(&self, record: &'a StatusRecord) -> Cow<'a, StatusRecord> {
        if record.started_at.is_some() {
            return Cow::Borrowed(record);
        }
        match self.started().get(&record.run_id) {
            Some(at) => Cow::Owned(StatusRecord {
                started_at: Some(*at),
                ..record.clone()
            }),
            None => Cow::Borrowed(record),
        }
    }
}

#[async_trait]
impl RunStore for KeepStartedAt {
    async fn create_run(&self, state: &RunState, status: &StatusRecord) -> Result<bool, Error> {
        self.remember(status);
        self.inner.create_run(state, status).await
    }

    async fn load(&self, run_id: &str) -> Result<Option<Versioned<RunState>>, Error> {
        self.inner.load(run_id).await
    }

    async fn commit(&self, state: &RunState, etag: &str) -> Result<String, Error> {
        self.inner.commit(state, etag).await
    }

    async fn status(&self, run_id: &str) -> Result<Option<Versioned<StatusRecord>>, Error> {
        let status = self.inner.status(run_id).await?;
        if let Some(found) = &status {
            self.remember(&found.value);
        }
        Ok(status)
    }

    async fn write_status(
        &self,
        record: &StatusRecord,
        etag: Option<&str>,
    ) -> Result<String, Error> {
        let record = self.completed(record);
        self.remember(&record);
        self.inner.write_status(&record, etag).await
    }

    async fn list_stalled(
        &self,
        phases: &[RunPhase],
        older_than: i64,
        limit: usize,
        continuation: Option<&str>,
    ) -> Result<Page<StatusRecord>, Error> {
        self.inner
            .list_stalled(phases, older_than, limit, continuation)
            .await
    }

    async fn put_worker_result(&self, result: &WorkerResult) -> Result<bool, Error> {
        self.inner.put_worker_result(result).await
    }

    async fn record_arrival(&self, run_id: &str, batch: &str, node: &str) -> Result<u64, Error> {
        self.inner.record_arrival(run_id, batch, node).await
    }

    async fn worker_results(
        &self,
        run_id: &str,
        batch: &str,
        continuation: Option<&str>,
    ) -> Result<Page<WorkerResult>, Error> {
        self.inner.worker_results(run_id, batch, continuation).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::distributed::memory::MemoryRunStore;

    fn state(run_id: &str) -> RunState {
        RunState {
            run_id: run_id.to_string(),
            context: serde_json::Map::new(),
            book: Default::default(),
        }
    }

    #[tokio::test]
    async fn a_rebuilt_status_record_keeps_the_start_time() {
        let store = KeepStartedAt::new(Arc::new(MemoryRunStore::new()));
        let mut first = StatusRecord::running("r", 100);
        first.started_at = Some(100);
        store.create_run(&state("r"), &first).await.unwrap();
        // Another process: nothing remembered yet; it reads before it writes, as the core does.
        let other = KeepStartedAt::new(store.inner.clone());
        let current = other.status("r").await.unwrap().unwrap();
        let mut rebuilt = StatusRecord::running("r", 200);
        rebuilt.status = RunPhase::Completed;
        other
            .write_status(&rebuilt, Some(&current.etag))
            .await
            .unwrap();
        let stored = store.inner.status("r").await.unwrap().unwrap().value;
        assert_eq!(
            (stored.status, stored.last_updated, stored.started_at),
            (RunPhase::Completed, 200, Some(100))
        );
        // A run without a start time (a TypeScript client's) stays without one.
        let ts = StatusRecord::running("t", 5);
        other.write_status(&ts, None).await.unwrap();
        let current = other.status("t").await.unwrap().unwrap();
        other
            .write_status(&StatusRecord::running("t", 6), Some(&current.etag))
            .await
            .unwrap();
        assert_eq!(
            other.status("t").await.unwrap().unwrap().value.started_at,
            None
        );
    }
}
