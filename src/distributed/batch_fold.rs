//! Batch folds: how the workers of a batch (`batch-scatter` -> N dynamic workers ->
//! `batch-gather`) settle without rewriting the run document once each.
//!
//! Every other job commits its settlement into the run document with one conditional write
//! of the WHOLE document. For a batch that costs O(N) bytes per worker and O(N^2) in all:
//! each worker adds its output to the document, and each one rewrites the grown document.
//! So a worker that succeeds does not commit into the run document at all:
//!
//! 1. it runs on the run state it read (the document does not change while the workers run,
//!    so each worker process reads it about once and its workers share that copy, context
//!    included: see the `run_cache` module);
//! 2. it stores its result beside the run document, once
//!    ([`RunStore::put_worker_result`]; a redelivered job finds the first result there and
//!    does not run the node again);
//! 3. it records its arrival in the batch's ledgers ([`RunStore::record_arrival`]), which
//!    answer how many distinct members have arrived, atomically: exactly the worker whose
//!    arrival completes the batch (and any redelivery after it) sees the full count. The
//!    workers are split into about √N shards, each with its own ledger, and the arrival that
//!    completes a shard arrives in the batch's top ledger, so no ledger (and no answer, which
//!    is the whole ledger item on Cosmos) grows past about √N entries;
//! 4. that worker FOLDS the batch into the run document in ONE ordinary commit: every
//!    stored result, in worker order, is applied as the worker's own commit would have
//!    applied it (outputs, context writes, arrival at the gather, outstanding work removed;
//!    no per-worker commit record: the result items are the idempotency record). The last
//!    arrival fires the gather through the normal join rules, and the fold records what it
//!    fired ([`super::state::BatchRecord::folded`]);
//! 5. only then is the worker's message completed.
//!
//! A crash anywhere is recovered by redelivery: the result exists, the arrival is recorded
//! again (idempotent), the fold is redone or found done (a redelivered worker job of a
//! folded batch re-sends what the fold fired and is still outstanding). Everything that is
//! not a successful worker attempt (a failing attempt that retries, fails for good or falls
//! back, a worker that waits) takes the normal commit path; a worker whose wait is later
//! completed through the run document records its arrival after that commit, so the count
//! still reaches N. While the workers run, the run's status item is refreshed from this
//! worker at most once per `status_heartbeat` (no commit refreshes it), so the reconciler
//! does not take a busy batch for a stalled run.

use crate::Error;
use crate::distributed::commit::{Step, commit_with, load_run};
use crate::distributed::core::Backends;
use crate::distributed::events::{Event, EventBus};
use crate::distributed::execute::Attempted;
use crate::distributed::follow_ups::{enqueue_follow_ups, retry_transient};
use crate::distributed::job::JobMessage;
use crate::distributed::ports::{RunPhase, RunStore, Versioned, WorkerResult};
use crate::distributed::publish::{publish_status, touch_status};
use crate::distributed::state::{
    BatchRecord, CommitKind, CommitRecord, FoldRecord, RunState, WorkItem,
};
use crate::distributed::transition::{Settlement, prepare, settle};
use crate::distributed::worker::{Disposition, Handled, Worker};
use crate::flow::blueprint::Blueprint;
use crate::flow::execute::NodeCompletion;
use crate::flow::node::NodeResult;
use crate::flow::sources::Sources;
use chrono::{DateTime, Utc};
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

/// What folding a batch into a loaded run document came to.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Folded {
    /// This commit folded the batch; `publish`: the status item is due.
    Fresh {
        /// What the fold fired.
        fold: FoldRecord,
        /// Write the status item (heartbeat due, or the status changed).
        publish: bool,
    },
    /// Folded before (or nothing was left to fold): re-send what it fired, if still
    /// outstanding.
    Done(FoldRecord),
    /// Some worker of the batch is still outstanding but has no stored result in view (a
    /// lagging read of the results): try again later.
    Incomplete(String),
    /// The run as read does not know the batch (a lagging read, or an old pass whose
    /// record was dropped).
    Unknown(String),
    /// The run finished.
    Finished(RunPhase),
}

/// Every stored result of `batch`, in worker order (activation order).
pub(crate) async fn collect_results(
    runs: &dyn RunStore,
    run_id: &str,
    batch: &str,
) -> Result<Vec<WorkerResult>, Error> {
    let mut results = Vec::new();
    let mut continuation: Option<String> = None;
    loop {
        let page = retry_transient(|| runs.worker_results(run_id, batch, continuation.as_deref()))
            .await
            .map_err(|e| e.during("read batch worker results"))?;
        results.extend(page.items);
        match page.continuation {
            Some(next) => continuation = Some(next),
            None => break,
        }
    }
    results.sort_by_key(|r| r.activation);
    Ok(results)
}

/// The fold of batch `key` into `state` (a fresh copy for every commit try): each result
/// whose worker is still outstanding settles that worker as its own commit would have, and
/// the batch is marked folded. Nothing is written when the batch is folded already, unknown,
/// or not complete in view.
pub(crate) fn apply_fold(
    state: &mut RunState,
    blueprint: &Blueprint,
    key: &str,
    results: &[WorkerResult],
    now: DateTime<Utc>,
    heartbeat_s: i64,
) -> Step<Folded> {
    prepare(state, blueprint);
    if state.book.status.is_terminal() {
        return Step::Skip(Folded::Finished(state.book.status));
    }
    let Some(batch) = state.book.batches.get(key).cloned() else {
        return Step::Skip(Folded::Unknown(format!(
            "batch {key} is not in the run as read"
        )));
    };
    if let Some(fold) = batch.folded {
        return Step::Skip(Folded::Done(fold));
    }
    let in_batch = |state: &RunState, work: &WorkItem| {
        (batch.first..=batch.last).contains(&work.activation)
            && state.book.joins.gather_of(&work.node) == Some(batch.gather.as_str())
    };
    let has_result = |work: &WorkItem| {
        results
            .binary_search_by_key(&work.activation, |r| r.activation)
            .is_ok_and(|i| results[i].node == work.node)
    };
    let missing = state
        .book
        .outstanding
        .values()
        .filter(|w| in_batch(state, w) && !has_result(w))
        .count();
    if missing > 0 {
        return Step::Skip(Folded::Incomplete(format!(
            "{missing} worker(s) of batch {key} are outstanding without a stored result in view"
        )));
    }
    let before = state.book.status;
    let mut fired = Vec::new();
    let mut applied = 0usize;
    for result in results {
        let work = WorkItem {
            node: result.node.clone(),
            activation: result.activation,
        };
        if !in_batch(state, &work) || !state.book.outstanding.contains_key(&work.key()) {
            continue;
        }
        let completion = NodeCompletion {
            result: NodeResult {
                output: result.output.clone(),
                action: result.action.clone(),
                dynamic_nodes: Vec::new(),
            },
            deltas: result.writes.clone(),
            awaiting: None,
        };
        let record = settle(
            state,
            blueprint,
            &work,
            Settlement::Finished(completion),
            now,
        );
        // The stored result is this worker's idempotency record: no copy of it here.
        state.book.commits.remove(&work.key());
        fired.extend(record.fired);
        applied += 1;
    }
    let fold = FoldRecord {
        fired,
        revision: state.book.revision,
    };
    if applied == 0 {
        // Every worker settled through the run document (e.g. waits completed there).
        return Step::Skip(Folded::Done(fold));
    }
    if let Some(batch) = state.book.batches.get_mut(key) {
        batch.folded = Some(fold.clone());
    }
    let due = now.timestamp() - state.book.status_touched_at >= heartbeat_s;
    let publish = due || before != state.book.status;
    if publish {
        state.book.status_touched_at = now.timestamp();
    }
    Step::Write(Folded::Fresh { fold, publish })
}

/// The work of a fold that is still outstanding in `state` (what a replay re-sends: work
/// that settled since has its own message, or its own commit record to replay).
pub(crate) fn still_outstanding(state: &RunState, fold: &FoldRecord) -> Vec<WorkItem> {
    fold.fired
        .iter()
        .filter(|w| state.book.outstanding.contains_key(&w.key()))
        .cloned()
        .collect()
}

/// The work of `job` and the fold of its batch, when the job is a worker of a folded batch.
pub(crate) fn folded_batch_of(
    state: &RunState,
    job: &JobMessage,
) -> Option<(WorkItem, FoldRecord)> {
    let work = WorkItem {
        node: job.node_id.clone(),
        activation: job.activation?,
    };
    let fold = state.book.batch_of(&work)?.1.folded.clone()?;
    Some((work, fold))
}

/// The commit record standing for a fold in the follow-up step (what it fired, and the
/// revision the fired jobs carry).
fn fold_record(work: &WorkItem, fold: &FoldRecord, fired: Vec<WorkItem>) -> CommitRecord {
    CommitRecord {
        node: work.node.clone(),
        activation: work.activation,
        kind: CommitKind::Completed,
        output: None,
        action: None,
        taken: Vec::new(),
        fired,
        wake_after_ms: None,
        revision: Some(fold.revision),
        resume_key: None,
    }
}

/// After a commit outside a worker (a client's resume) that completed a batch worker:
/// records its arrival, and when that completes the batch, folds it and enqueues what the
/// fold fired (returned).
pub(crate) async fn arrive_after_commit(
    backends: &Backends,
    events: &EventBus,
    sources: &Sources,
    blueprint: &Blueprint,
    state: &RunState,
    record: &CommitRecord,
) -> Result<Vec<WorkItem>, Error> {
    let work = WorkItem {
        node: record.node.clone(),
        activation: record.activation,
    };
    if record.kind != CommitKind::Completed || state.book.status.is_terminal() {
        return Ok(Vec::new());
    }
    let Some((key, batch)) = state.book.batch_of(&work) else {
        return Ok(Vec::new());
    };
    if batch.folded.is_some() {
        return Ok(Vec::new());
    }
    let runs = backends.runs.as_ref();
    let run_id = state.run_id.as_str();
    if !record_arrival(runs, run_id, &key, batch, &work).await? {
        return Ok(Vec::new());
    }
    let results = collect_results(runs, run_id, &key).await?;
    let now = sources.now();
    let (folded, state) = retry_transient(|| {
        commit_with(runs, run_id, |state| {
            apply_fold(state, blueprint, &key, &results, now, 0)
        })
    })
    .await?;
    let fired = match folded {
        Folded::Fresh { fold, .. } => fold.fired,
        Folded::Done(fold) => still_outstanding(&state, &fold),
        // The workers' own jobs (or the reconciler's re-sends) fold it then.
        Folded::Incomplete(_) | Folded::Unknown(_) | Folded::Finished(_) => Vec::new(),
    };
    if !state.book.status.is_terminal() {
        enqueue_follow_ups(
            backends.queue.as_ref(),
            run_id,
            blueprint.id(),
            state.book.revision,
            &fired,
            None,
        )
        .await?;
    }
    retry_transient(|| publish_status(runs, events, &state, sources)).await?;
    Ok(fired)
}

/// The number of workers per arrival shard of a batch of `size`: about its square root, so
/// that neither a shard's ledger nor the batch's top ledger grows past that.
fn shard_width(size: u64) -> u64 {
    size.isqrt().max(1) + u64::from(size.isqrt().pow(2) < size)
}

/// Records `work`'s arrival in `batch` (key `key`) and says whether that completed the
/// batch. A ledger answers its whole item, so one ledger of N workers would cost O(N) per
/// arrival and O(N²) per batch. The workers are therefore split by activation into shards
/// of about √N: a worker arrives in its shard's ledger (`<key>#<shard>`), and the arrival
/// that completes a shard arrives, as `s<shard>`, in the batch's top ledger (`key`). Every
/// ledger counts atomically, so exactly the arrival that completes the last shard (and any
/// redelivery after it) sees the batch complete; a redelivered arrival repeats both steps
/// harmlessly (a ledger is a set).
async fn record_arrival(
    runs: &dyn RunStore,
    run_id: &str,
    key: &str,
    batch: &BatchRecord,
    work: &WorkItem,
) -> Result<bool, Error> {
    let width = shard_width(batch.size);
    let shards = batch.size.div_ceil(width);
    let index = work
        .activation
        .saturating_sub(batch.first)
        .min(batch.size.saturating_sub(1));
    let shard = index / width;
    let shard_size = width.min(batch.size - shard * width);
    let shard_key = format!("{key}#{shard}");
    let arrived = retry_transient(|| runs.record_arrival(run_id, &shard_key, &work.node))
        .await
        .map_err(|e| e.during("record batch arrival"))?;
    if arrived < shard_size {
        return Ok(false);
    }
    let member = format!("s{shard}");
    let complete = retry_transient(|| runs.record_arrival(run_id, key, &member))
        .await
        .map_err(|e| e.during("record batch shard arrival"))?;
    Ok(complete >= shards)
}

/// What running a batch worker's job came to.
pub(crate) enum BatchWorker {
    /// The job is done with (its result stored, or found stored; the batch folded if it was
    /// the last arrival).
    Handled(Handled),
    /// The attempt did not succeed plainly (it failed, waits or scatters again): the normal
    /// commit path takes it from here.
    Attempted(Attempted),
}

/// Why a late or duplicated job of a batch worker is dropped at once (see
/// [`Worker::in_settled_batch`]).
pub(crate) const SETTLED_BATCH: &str =
    "its batch is folded, and this worker did the fold's follow-ups";

/// Which batch a worker belongs to: its key and its record.
pub(crate) type BatchId<'a> = (&'a str, &'a BatchRecord);

impl Worker {
    /// Whether `work` is a worker of a batch of `state` that this worker saw folded and did
    /// the follow-ups of (the fold took every worker's stored result, so a late or
    /// duplicated job of one is done with, and needs no read of the run).
    pub(crate) fn in_settled_batch(&self, run_id: &str, state: &RunState, work: &WorkItem) -> bool {
        state
            .book
            .batch_of(work)
            .is_some_and(|(key, _)| self.cache.batch_settled(run_id, &key))
    }

    /// Runs a batch worker's job on `loaded` (see the module documentation): a redelivered
    /// job whose result is stored goes straight to its arrival; otherwise the node runs on
    /// the shared context, and a plain success is stored beside the run document instead of
    /// being committed into it.
    #[allow(clippy::too_many_arguments)]
    pub(crate) async fn run_batch_worker(
        &self,
        job: &JobMessage,
        dequeue_count: u32,
        work: &WorkItem,
        blueprint: &Arc<Blueprint>,
        loaded: &Arc<Versioned<RunState>>,
        batch: BatchId<'_>,
        cancel: CancellationToken,
        hand_off: bool,
    ) -> Result<BatchWorker, Error> {
        let runs = self.backends.runs.as_ref();
        let (key, _) = batch;
        if dequeue_count > 1 {
            let stored = retry_transient(|| runs.worker_result(&job.run_id, key, &work.node))
                .await
                .map_err(|e| e.during("read batch worker result"))?;
            if stored.is_some() {
                tracing::info!("batch worker already settled; recording its arrival");
                let handled = self
                    .arrive(job, work, blueprint, batch, dequeue_count, hand_off)
                    .await?;
                return Ok(BatchWorker::Handled(handled));
            }
        }
        let shared = self
            .cache
            .shared_context(&job.run_id, &loaded.etag)
            .unwrap_or_else(|| Arc::new(loaded.value.context.clone()));
        let attempted = self
            .attempt(job, work, blueprint, &loaded.value, Some(shared), cancel)
            .await?;
        let Attempted::Settle(settlement) = attempted else {
            return Ok(BatchWorker::Attempted(attempted));
        };
        let completion = match *settlement {
            Settlement::Finished(completion)
                if completion.awaiting.is_none() && completion.result.dynamic_nodes.is_empty() =>
            {
                completion
            }
            other => return Ok(BatchWorker::Attempted(Attempted::Settle(Box::new(other)))),
        };
        let result = WorkerResult {
            run_id: job.run_id.clone(),
            batch: key.to_string(),
            node: work.node.clone(),
            activation: work.activation,
            output: completion.result.output,
            action: completion.result.action,
            writes: completion.deltas,
        };
        let created = retry_transient(|| runs.put_worker_result(&result))
            .await
            .map_err(|e| e.during("store batch worker result"))?;
        if !created {
            tracing::info!("batch worker result already stored; the first one stands");
        }
        self.events.emit(Event::JobFinished {
            run_id: job.run_id.clone(),
            node_id: job.node_id.clone(),
            kind: CommitKind::Completed,
        });
        let handled = self
            .arrive(job, work, blueprint, batch, dequeue_count, hand_off)
            .await?;
        Ok(BatchWorker::Handled(handled))
    }

    /// After a normal commit (or its replay) that completed a batch worker (a wait completed
    /// through the run document, a worker that scattered again): records its arrival too,
    /// so the batch's count still reaches its size. `handled` is what the commit's
    /// follow-ups came to; the fold's, if this arrival completes the batch, are added.
    pub(crate) async fn arrive_if_batch_worker(
        &self,
        job: &JobMessage,
        state: &RunState,
        record: &CommitRecord,
        dequeue_count: u32,
        mut handled: Handled,
        hand_off: bool,
    ) -> Result<Handled, Error> {
        let work = WorkItem {
            node: record.node.clone(),
            activation: record.activation,
        };
        if record.kind != CommitKind::Completed || state.book.status.is_terminal() {
            return Ok(handled);
        }
        let Some((key, batch)) = state.book.batch_of(&work) else {
            return Ok(handled);
        };
        if batch.folded.is_some() {
            return Ok(handled);
        }
        let Some(blueprint) = self.env.blueprints.get(&job.blueprint_id) else {
            return Ok(handled);
        };
        let more = self
            .arrive(
                job,
                &work,
                &blueprint,
                (&key, batch),
                dequeue_count,
                hand_off,
            )
            .await?;
        handled.disposition = more.disposition;
        handled.enqueued_now |= more.enqueued_now;
        handled.successors.extend(more.successors);
        Ok(handled)
    }

    /// Records the worker's arrival in its batch's ledger; the arrival that completes the
    /// batch folds it. Refreshes the run's status item now and then (amortised heartbeat).
    async fn arrive(
        &self,
        job: &JobMessage,
        work: &WorkItem,
        blueprint: &Blueprint,
        batch: BatchId<'_>,
        dequeue_count: u32,
        hand_off: bool,
    ) -> Result<Handled, Error> {
        let runs = self.backends.runs.as_ref();
        let (key, record) = batch;
        let complete = record_arrival(runs, &job.run_id, key, record, work).await?;
        self.batch_heartbeat(&job.run_id).await;
        if !complete {
            return Ok(Handled::new(Disposition::Complete, false));
        }
        self.fold(job, work, blueprint, key, dequeue_count, hand_off)
            .await
    }

    /// Refreshes the status item of a run whose batch workers do not commit, at most once
    /// per `status_heartbeat` from this worker (best effort: a failure is only logged).
    async fn batch_heartbeat(&self, run_id: &str) {
        let every = i64::try_from(self.config.status_heartbeat.as_secs()).unwrap_or(60);
        if !self
            .cache
            .heartbeat_due(run_id, self.env.sources.now_epoch(), every)
        {
            return;
        }
        if let Err(e) = touch_status(self.backends.runs.as_ref(), run_id, &self.env.sources).await {
            tracing::warn!(run_id, error = %e, "batch status heartbeat failed");
        }
    }

    /// Folds batch `key` into the run document (one commit, reloaded and re-applied on a
    /// conflict) and does the follow-ups of the fold; a fold done before has what it fired
    /// and is still outstanding re-sent. The run is read first: for a late or repeated
    /// arrival (a redelivered or duplicated worker job) the batch is folded already, and
    /// the document says so without a read of every result.
    async fn fold(
        &self,
        job: &JobMessage,
        work: &WorkItem,
        blueprint: &Blueprint,
        key: &str,
        dequeue_count: u32,
        hand_off: bool,
    ) -> Result<Handled, Error> {
        let runs = self.backends.runs.as_ref();
        let gate = self.cache.fold_gate(&job.run_id);
        let _turn = gate.lock().await;
        if self.cache.batch_settled(&job.run_id, key) {
            return Ok(self.dropped(job, SETTLED_BATCH));
        }
        let loaded = retry_transient(|| load_run(runs, &job.run_id)).await?;
        if let Some(loaded) = &loaded
            && let Some(fold) = loaded
                .value
                .book
                .batches
                .get(key)
                .and_then(|b| b.folded.as_ref())
        {
            return self.replay_fold(job, work, &loaded.value, fold).await;
        }
        let results = collect_results(runs, &job.run_id, key).await?;
        let now = self.env.sources.now();
        let heartbeat = i64::try_from(self.config.status_heartbeat.as_secs()).unwrap_or(60);
        let (folded, state) = self
            .commit_run(&job.run_id, loaded, |state| {
                apply_fold(state, blueprint, key, &results, now, heartbeat)
            })
            .await?;
        match folded {
            Folded::Fresh { fold, publish } => {
                tracing::info!(
                    batch = key,
                    workers = results.len(),
                    fired = fold.fired.len(),
                    "batch folded into the run"
                );
                let record = fold_record(work, &fold, fold.fired.clone());
                let (enqueued_now, successors) = self
                    .follow_up_handing_off(job, &state, &record, publish, hand_off)
                    .await?;
                self.cache.settle_batch(&job.run_id, key);
                let mut handled = Handled::new(Disposition::Complete, enqueued_now);
                handled.successors = successors;
                Ok(handled)
            }
            Folded::Done(fold) => self.replay_fold(job, work, &state, &fold).await,
            Folded::Incomplete(why) | Folded::Unknown(why) => {
                Ok(self.not_yet(job, dequeue_count, why).await)
            }
            Folded::Finished(phase) => {
                retry_transient(|| publish_status(runs, &self.events, &state, &self.env.sources))
                    .await?;
                Ok(self.dropped(job, format!("the run is {}", phase.as_str())))
            }
        }
    }

    /// Re-sends what a batch's fold fired and is still outstanding (its folder may have
    /// stopped before sending it), and publishes a final status.
    pub(crate) async fn replay_fold(
        &self,
        job: &JobMessage,
        work: &WorkItem,
        state: &RunState,
        fold: &FoldRecord,
    ) -> Result<Handled, Error> {
        let fired = still_outstanding(state, fold);
        tracing::info!(
            resent = fired.len(),
            "batch already folded; replaying the fold's follow-ups"
        );
        let record = fold_record(work, fold, fired);
        let publish = state.book.status != RunPhase::Running;
        let enqueued_now = self.follow_up(job, state, &record, publish).await?;
        if let Some((key, _)) = state.book.batch_of(work) {
            self.cache.settle_batch(&job.run_id, &key);
        }
        Ok(Handled::new(Disposition::Complete, enqueued_now))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::distributed::transition::new_run;
    use serde_json::{Map, json};

    fn batch_run(n: usize) -> (RunState, Blueprint, Vec<WorkItem>) {
        let bp = Blueprint::from_json(
            &json!({"id": "b", "nodes": [
                {"id": "s", "uses": "batch-scatter", "inputs": "items",
                 "params": {"workerUsesKey": "echo", "gatherNodeId": "g"}},
                {"id": "g", "uses": "batch-gather"}],
              "edges": [{"source": "s", "target": "g"}]})
            .to_string(),
        )
        .unwrap();
        let (mut state, work) = new_run("r", &bp, Map::new());
        let workers: Vec<_> = (0..n)
            .map(|i| crate::flow::blueprint::NodeDefinition {
                id: format!("w_{i}"),
                uses: "echo".into(),
                params: None,
                inputs: None,
                config: Default::default(),
            })
            .collect();
        let deltas = workers
            .iter()
            .map(|w| crate::flow::context::ContextDelta::Set {
                key: format!("_dynamic.{}", w.id),
                value: serde_json::to_value(w).unwrap(),
            })
            .collect();
        let completion = NodeCompletion {
            result: NodeResult {
                output: Some(json!({"gatherNodeId": "g", "hasMore": false})),
                action: None,
                dynamic_nodes: workers,
            },
            deltas,
            awaiting: None,
        };
        let record = settle(
            &mut state,
            &bp,
            &work[0],
            Settlement::Finished(completion),
            Utc::now(),
        );
        let workers = record.fired.into_iter().filter(|w| w.node != "g").collect();
        (state, bp, workers)
    }

    fn result(key: &str, work: &WorkItem) -> WorkerResult {
        WorkerResult {
            run_id: "r".into(),
            batch: key.into(),
            node: work.node.clone(),
            activation: work.activation,
            output: Some(json!(work.node.clone())),
            action: None,
            writes: Vec::new(),
        }
    }

    #[test]
    fn a_fold_settles_every_worker_once_fires_the_gather_and_is_not_redone() {
        let (mut state, bp, workers) = batch_run(3);
        let (key, batch) = state.book.batch_of(&workers[0]).unwrap();
        assert_eq!(batch.size, 3);
        let results: Vec<_> = workers.iter().map(|w| result(&key, w)).collect();
        let incomplete = apply_fold(&mut state.clone(), &bp, &key, &results[..2], Utc::now(), 60);
        assert!(matches!(incomplete, Step::Skip(Folded::Incomplete(_))));
        let Step::Write(Folded::Fresh { fold, .. }) =
            apply_fold(&mut state, &bp, &key, &results, Utc::now(), 60)
        else {
            panic!("the complete batch folds")
        };
        assert_eq!(fold.fired.len(), 1);
        assert_eq!(fold.fired[0].node, "g");
        for w in &workers {
            assert_eq!(
                state.context[&format!("_outputs.{}", w.node)],
                json!(w.node)
            );
            assert!(!state.book.outstanding.contains_key(&w.key()));
            assert!(!state.book.commits.contains_key(&w.key()));
        }
        assert_eq!(still_outstanding(&state, &fold), fold.fired);
        let Step::Skip(Folded::Done(again)) =
            apply_fold(&mut state, &bp, &key, &results, Utc::now(), 60)
        else {
            panic!("a folded batch is not folded again")
        };
        assert_eq!(again, fold);
    }
}
