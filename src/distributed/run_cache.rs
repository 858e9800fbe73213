//! A worker's memory of the runs it committed last, to save reads and ETag conflicts.
//!
//! - **Commit gate**: the commits of one run made by this worker take turns (an async mutex
//!   per run), so the branches of a fan-out that finish together in one worker no longer
//!   race each other for the run document's ETag (each race costs a 412 and a reload).
//! - **Last committed state**: the run document this worker last wrote (or read to commit),
//!   with its ETag. The next commit of the run in this worker starts from it instead of a
//!   fresh read, and a job scheduled by that commit (its `rev` is not newer) runs on it. A
//!   state that another worker has moved on from only costs a 412 and a reload: the ETag
//!   guards every write, and the worker never drops or defers a job on a cached state
//!   without reading the run again (see [`super::worker`]).
//!
//! - **Shared context**: the remembered state's context as one shared map, built at most once
//!   per remembered state, so the many batch workers that run on one state do not each copy
//!   the whole run context (see [`super::batch_fold`]).
//! - **Heartbeat**: when this worker last refreshed the run's status item on behalf of batch
//!   workers (which do not commit, so no commit refreshes it).
//! - **Settled batches**: the batches of the run whose fold this worker has seen committed
//!   and has done the follow-ups of, so that the late or duplicated jobs of their workers
//!   are completed at once instead of each reading the run document again; and a gate the
//!   folds of the run in this worker take turns on, so that such jobs arriving together
//!   wait for the first one's answer instead of all reading the document.
//!
//! Bounded: at most `capacity` runs are remembered; the least recently used run whose gate
//! nobody holds is forgotten first. A finished run is forgotten at once.

use crate::distributed::ports::Versioned;
use crate::distributed::state::RunState;
use serde_json::{Map, Value};
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};

/// How many runs a worker remembers by default.
pub(crate) const DEFAULT_CAPACITY: usize = 32;

#[derive(Debug)]
struct Entry {
    gate: Arc<tokio::sync::Mutex<()>>,
    state: Option<Arc<Versioned<RunState>>>,
    /// The context of `state`, shared (built on first use; reset with `state`).
    context: Option<Arc<Map<String, Value>>>,
    /// When batch workers last refreshed the status item (epoch seconds).
    beat: Option<i64>,
    /// Batches folded, with their follow-ups done by this worker.
    settled: HashSet<String>,
    /// The gate the folds of the run in this worker take turns on.
    fold_gate: Arc<tokio::sync::Mutex<()>>,
    used: u64,
}

#[derive(Debug, Default)]
struct Inner {
    entries: HashMap<String, Entry>,
    tick: u64,
}

/// The per-run commit gates and last committed states of one worker.
#[derive(Debug)]
pub(crate) struct RunCache {
    capacity: usize,
    inner: Mutex<Inner>,
}

impl Default for RunCache {
    fn default() -> Self {
        RunCache::new(DEFAULT_CAPACITY)
    }
}

impl RunCache {
    /// A cache remembering at most `capacity` runs (at least one).
    pub(crate) fn new(capacity: usize) -> Self {
        RunCache {
            capacity: capacity.max(1),
            inner: Mutex::new(Inner::default()),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // Every critical section is a few map operations: a poisoned lock is still whole.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The gate the commits of `run_id` in this worker take turns on.
    pub(crate) fn gate(&self, run_id: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut inner = self.lock();
        self.touch(&mut inner, run_id).gate.clone()
    }

    /// The run's entry, created (making room) when missing, marked as used just now.
    fn touch<'a>(&self, inner: &'a mut Inner, run_id: &str) -> &'a mut Entry {
        inner.tick += 1;
        let tick = inner.tick;
        if !inner.entries.contains_key(run_id) {
            self.make_room(inner);
        }
        let entry = inner
            .entries
            .entry(run_id.to_string())
            .or_insert_with(|| Entry {
                gate: Arc::default(),
                state: None,
                context: None,
                beat: None,
                settled: HashSet::new(),
                fold_gate: Arc::default(),
                used: tick,
            });
        entry.used = tick;
        entry
    }

    /// The last state of `run_id` this worker committed (or read to commit), shared.
    pub(crate) fn get(&self, run_id: &str) -> Option<Arc<Versioned<RunState>>> {
        let mut inner = self.lock();
        inner.tick += 1;
        let tick = inner.tick;
        let entry = inner.entries.get_mut(run_id)?;
        entry.used = tick;
        entry.state.clone()
    }

    /// Remembers `state` as the run's latest (a finished run is forgotten instead: no job
    /// needs it any more).
    pub(crate) fn put(&self, state: &Versioned<RunState>) {
        self.keep(Arc::new(state.clone()), false);
    }

    /// Remembers a state this worker READ (not committed) when it is newer than the one
    /// remembered, or nothing is: the batch workers of a run then share one read.
    pub(crate) fn offer(&self, state: Arc<Versioned<RunState>>) {
        self.keep(state, true);
    }

    fn keep(&self, state: Arc<Versioned<RunState>>, only_newer: bool) {
        let run_id = state.value.run_id.as_str();
        if state.value.book.status.is_terminal() {
            self.forget(run_id);
            return;
        }
        let mut inner = self.lock();
        let entry = self.touch(&mut inner, run_id);
        let older = |cached: &Arc<Versioned<RunState>>| {
            cached.value.book.revision < state.value.book.revision
        };
        if !only_newer || entry.state.as_ref().is_none_or(older) {
            entry.state = Some(state);
            entry.context = None;
        }
    }

    /// The context of the remembered state of `run_id` as a shared map, when the
    /// remembered state is the one tagged `etag` (copied from it once, then shared).
    pub(crate) fn shared_context(
        &self,
        run_id: &str,
        etag: &str,
    ) -> Option<Arc<Map<String, Value>>> {
        let state = {
            let mut inner = self.lock();
            let entry = inner.entries.get_mut(run_id)?;
            let state = entry.state.clone().filter(|s| s.etag == etag)?;
            if let Some(context) = &entry.context {
                return Some(context.clone());
            }
            state
        };
        // Copied outside the lock (it may be large); a concurrent copy is merely wasted.
        let context = Arc::new(state.value.context.clone());
        let mut inner = self.lock();
        if let Some(entry) = inner.entries.get_mut(run_id)
            && entry.state.as_ref().is_some_and(|s| s.etag == etag)
        {
            entry.context = Some(context.clone());
        }
        Some(context)
    }

    /// Whether the run's status item is due for a heartbeat from this worker's batch workers
    /// (`every_s` seconds since the last one, or since the first ask); `true` records it as
    /// refreshed now.
    pub(crate) fn heartbeat_due(&self, run_id: &str, now_s: i64, every_s: i64) -> bool {
        let mut inner = self.lock();
        let entry = self.touch(&mut inner, run_id);
        match entry.beat {
            Some(last) if now_s - last < every_s => false,
            Some(_) => {
                entry.beat = Some(now_s);
                true
            }
            None => {
                entry.beat = Some(now_s);
                false
            }
        }
    }

    /// The gate the folds of `run_id` in this worker take turns on.
    pub(crate) fn fold_gate(&self, run_id: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut inner = self.lock();
        self.touch(&mut inner, run_id).fold_gate.clone()
    }

    /// Whether this worker saw batch `key` of `run_id` folded and did its follow-ups.
    pub(crate) fn batch_settled(&self, run_id: &str, key: &str) -> bool {
        self.lock()
            .entries
            .get(run_id)
            .is_some_and(|e| e.settled.contains(key))
    }

    /// Records that this worker saw batch `key` of `run_id` folded and did its follow-ups.
    pub(crate) fn settle_batch(&self, run_id: &str, key: &str) {
        let mut inner = self.lock();
        self.touch(&mut inner, run_id)
            .settled
            .insert(key.to_string());
    }

    /// Forgets the run's state (its gate stays while someone holds it).
    pub(crate) fn forget(&self, run_id: &str) {
        let mut inner = self.lock();
        let in_use = match inner.entries.get_mut(run_id) {
            Some(entry) => {
                entry.state = None;
                entry.context = None;
                Arc::strong_count(&entry.gate) > 1
            }
            None => return,
        };
        if !in_use {
            inner.entries.remove(run_id);
        }
    }

    /// How many runs are remembered (gates included).
    #[cfg(test)]
    fn len(&self) -> usize {
        self.lock().entries.len()
    }

    /// Forgets least recently used runs whose gate is free until one more fits.
    fn make_room(&self, inner: &mut Inner) {
        while inner.entries.len() >= self.capacity {
            let oldest = inner
                .entries
                .iter()
                .filter(|(_, e)| Arc::strong_count(&e.gate) == 1)
                .min_by_key(|(_, e)| e.used)
                .map(|(id, _)| id.clone());
            match oldest {
                Some(id) => {
                    inner.entries.remove(&id);
                }
                // Every remembered run is being committed right now: go over the bound
                // for a moment (at most the worker's concurrency).
                None => return,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::distributed::ports::RunPhase;
    use crate::distributed::transition::new_run;
    use crate::flow::blueprint::Blueprint;

    fn state(run_id: &str, etag: &str) -> Versioned<RunState> {
        let bp = Blueprint::from_json(r#"{"id":"c","nodes":[{"id":"a","uses":"echo"}]}"#).unwrap();
        let (value, _) = new_run(run_id, &bp, serde_json::Map::new());
        Versioned {
            value,
            etag: etag.into(),
        }
    }

    #[test]
    fn remembers_the_latest_state_and_forgets_finished_runs() {
        let cache = RunCache::new(4);
        assert!(cache.get("r").is_none());
        cache.put(&state("r", "1"));
        cache.put(&state("r", "2"));
        assert_eq!(cache.get("r").unwrap().etag, "2");
        let mut done = state("r", "3");
        done.value.book.status = RunPhase::Completed;
        cache.put(&done);
        assert!(cache.get("r").is_none());
        assert_eq!(cache.len(), 0);
    }

    #[test]
    fn stays_bounded_and_evicts_the_least_recently_used_free_run() {
        let cache = RunCache::new(2);
        cache.put(&state("a", "1"));
        cache.put(&state("b", "1"));
        assert!(cache.get("a").is_some());
        cache.put(&state("c", "1"));
        assert_eq!(cache.len(), 2);
        assert!(cache.get("b").is_none(), "b was used least recently");
        assert!(cache.get("a").is_some() && cache.get("c").is_some());
    }

    #[test]
    fn a_held_gate_is_never_evicted() {
        let cache = RunCache::new(1);
        let gate = cache.gate("a");
        let _held = gate.try_lock().unwrap();
        cache.put(&state("b", "1"));
        assert_eq!(cache.len(), 2, "over the bound while a's gate is held");
        assert!(Arc::ptr_eq(&gate, &cache.gate("a")));
        drop(_held);
        drop(gate);
        cache.put(&state("c", "1"));
        assert!(cache.len() <= 2);
    }

    #[test]
    fn a_read_state_is_kept_only_when_newer_and_its_context_is_shared_once() {
        let cache = RunCache::new(4);
        let mut newer = state("r", "2");
        newer.value.book.revision = 5;
        cache.put(&newer);
        cache.offer(Arc::new(state("r", "1")));
        assert_eq!(
            cache.get("r").unwrap().etag,
            "2",
            "an older read is not kept"
        );
        let first = cache.shared_context("r", "2").unwrap();
        let again = cache.shared_context("r", "2").unwrap();
        assert!(Arc::ptr_eq(&first, &again), "copied once, then shared");
        assert!(cache.shared_context("r", "1").is_none(), "another version");
        let mut newest = state("r", "3");
        newest.value.book.revision = 6;
        cache.offer(Arc::new(newest));
        assert_eq!(cache.get("r").unwrap().etag, "3");
        assert!(
            cache.shared_context("r", "2").is_none(),
            "reset with the state"
        );
    }

    #[test]
    fn the_batch_heartbeat_is_due_once_per_interval() {
        let cache = RunCache::new(4);
        assert!(
            !cache.heartbeat_due("r", 100, 60),
            "the first ask starts the interval"
        );
        assert!(!cache.heartbeat_due("r", 159, 60));
        assert!(cache.heartbeat_due("r", 160, 60));
        assert!(!cache.heartbeat_due("r", 161, 60));
    }

    #[tokio::test]
    async fn commits_of_one_run_take_turns() {
        let cache = RunCache::default();
        let gate = cache.gate("r");
        let first = gate.lock().await;
        assert!(cache.gate("r").try_lock().is_err());
        assert!(cache.gate("other").try_lock().is_ok());
        drop(first);
        assert!(cache.gate("r").try_lock().is_ok());
    }
}
