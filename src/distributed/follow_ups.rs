//! The follow-up step of the job path: after a commit, enqueue the work it fired and the
//! timer wake-ups (safe to redo: a redelivered job replays them), chain delays longer than
//! the queue allows, and retry transient infrastructure errors with backoff so a passing
//! network hiccup never fails a run.

use crate::Error;
use crate::distributed::job::{JobKind, JobMessage};
use crate::distributed::ports::{JobQueue, MAX_QUEUE_DELAY};
use crate::distributed::state::WorkItem;
use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use std::future::Future;
use std::time::Duration;

/// The queue message for executing `item`.
pub(crate) fn execute_job(run_id: &str, blueprint_id: &str, item: &WorkItem) -> JobMessage {
    JobMessage::execute(run_id, blueprint_id, &item.node, item.activation)
}

/// The queue message asking a worker to resume the sub-run of `item` (resume request `seq`).
pub(crate) fn resume_job(
    run_id: &str,
    blueprint_id: &str,
    item: &WorkItem,
    seq: u64,
) -> JobMessage {
    let mut job = execute_job(run_id, blueprint_id, item);
    job.kind = JobKind::Resume;
    job.resume_seq = Some(seq);
    job
}

/// How many successors of one commit are sent at once: a batch scatter fires thousands, and
/// sent one by one they would hold the scatter's job (and its lease) for minutes.
const SENDS_IN_FLIGHT: usize = 4;

/// How many times a transient infrastructure error is retried in place before the job gives
/// up for now (its message is then released with a backoff and redelivered later).
const TRANSIENT_TRIES: u32 = 5;
/// The first pause before such a retry; it doubles (jittered) on each further try.
const TRANSIENT_BASE: Duration = Duration::from_millis(100);
/// The longest pause between two such retries.
const TRANSIENT_MAX: Duration = Duration::from_secs(5);

/// Runs `op`, retrying transient errors ([`Error::is_transient`]: transport, timeout,
/// throttling, 5xx) with jittered exponential backoff (honouring a throttle's retry-after);
/// other errors, and the last transient one, are returned.
pub(crate) async fn retry_transient<T, F, Fut>(mut op: F) -> Result<T, Error>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, Error>>,
{
    let mut pause = TRANSIENT_BASE;
    let mut tries = 1;
    loop {
        match op().await {
            Err(e) if e.is_transient() && tries < TRANSIENT_TRIES => {
                let asked = match &e {
                    Error::Throttled { retry_after, .. } => retry_after.unwrap_or_default(),
                    _ => Duration::ZERO,
                };
                let ms = u64::try_from(pause.as_millis()).unwrap_or(u64::MAX).max(2);
                let jittered = Duration::from_millis(fastrand::u64(ms / 2..=ms));
                tracing::debug!(error = %e, tries, "transient error; retrying");
                tokio::time::sleep(jittered.max(asked)).await;
                pause = pause.saturating_mul(2).min(TRANSIENT_MAX);
                tries += 1;
            }
            other => return other,
        }
    }
}

/// Sends `job` after `delay`, chaining delays longer than the queue allows (the rest rides
/// in `remainingMs`), retrying transient errors. Returns whether the message is visible at
/// once (no delay), i.e. receivable right now.
pub(crate) async fn send_delayed(
    queue: &dyn JobQueue,
    mut job: JobMessage,
    delay: Duration,
) -> Result<bool, Error> {
    let now = delay.min(MAX_QUEUE_DELAY);
    let rest = delay.saturating_sub(now);
    job.remaining_ms =
        (!rest.is_zero()).then(|| u64::try_from(rest.as_millis()).unwrap_or(u64::MAX));
    let text = job.encode()?;
    retry_transient(|| queue.send(&text, now)).await?;
    Ok(now.is_zero())
}

/// Sends `jobs`, visible at once, up to [`SENDS_IN_FLIGHT`] at a time (in no particular
/// order), retrying transient errors; stops at the first error.
pub(crate) async fn send_all(queue: &dyn JobQueue, jobs: Vec<JobMessage>) -> Result<(), Error> {
    let mut jobs = jobs.into_iter();
    let mut in_flight = FuturesUnordered::new();
    loop {
        while in_flight.len() < SENDS_IN_FLIGHT {
            let Some(job) = jobs.next() else { break };
            in_flight.push(send_delayed(queue, job, Duration::ZERO));
        }
        match in_flight.next().await {
            Some(sent) => {
                sent?;
            }
            None => return Ok(()),
        }
    }
}

/// Enqueues the work a commit fired (up to [`SENDS_IN_FLIGHT`] sends at once) and, for a
/// timer wait, the wake-up; the jobs carry `rev`, the revision of that commit. Safe to redo. Returns whether it sent a message that is
/// visible at once (a successor, or a wake-up without delay); a delayed wake-up alone is not.
pub(crate) async fn enqueue_follow_ups(
    queue: &dyn JobQueue,
    run_id: &str,
    blueprint_id: &str,
    rev: u64,
    fired: &[WorkItem],
    wake: Option<(&WorkItem, u64)>,
) -> Result<bool, Error> {
    let jobs = fired
        .iter()
        .map(|item| execute_job(run_id, blueprint_id, item).at_revision(rev))
        .collect();
    send_all(queue, jobs)
        .await
        .map_err(|e| e.during("enqueue successor"))?;
    let mut visible_now = !fired.is_empty();
    if let Some((item, ms)) = wake {
        let mut job = execute_job(run_id, blueprint_id, item).at_revision(rev);
        job.kind = JobKind::Wake;
        visible_now |= send_delayed(queue, job, Duration::from_millis(ms))
            .await
            .map_err(|e| e.during("enqueue wake-up"))?;
    }
    Ok(visible_now)
}
