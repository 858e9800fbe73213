//! The classify step of the job path: ONE function, [`classify`], says what a job (or a
//! client's resume, or a reconciler's re-send) may do with a loaded run document. The worker
//! calls it before executing and again on every commit try (on the freshly loaded state), the
//! client's resume calls it inside its commit, and the reconciler calls it for each piece of
//! recorded work, so the checks (finished run, wrong blueprint, version, stale read, replay,
//! awaiting) are written once, in one order:
//!
//! 1. a client resume whose idempotency key already took effect replays (it answers as the
//!    first call did, even when that call finished the run);
//! 2. a finished run drops everything;
//! 3. a run of another blueprint, or pinned to another version, is not ours to touch;
//! 4. a read older than the commit that scheduled the job is stale: try again later, never
//!    drop (Cosmos session consistency lets another worker's read lag behind);
//! 5. a job whose commit record exists replays its follow-ups, whatever its kind (a lost
//!    answer, a redelivery, a wake or resume that committed but did not enqueue);
//! 6. an attempt whose retry was recorded re-sends that retry (a follow-up, like a replay);
//! 7. otherwise the job runs if its work is still waiting for it, else it is stale.

use crate::distributed::ports::RunPhase;
use crate::distributed::state::{
    AwaitingRecord, CommitKind, CommitRecord, PendingResume, RetryRecord, RunState, WorkItem,
};
use crate::distributed::transition::{VersionCheck, check_version, version_mismatch};
use crate::flow::blueprint::Blueprint;
use crate::flow::context::AwaitReason;

/// What is asked of a piece of work.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Request<'a> {
    /// Run an attempt of the node (`attempt` from 1).
    Execute {
        /// The attempt the job carries.
        attempt: u32,
    },
    /// Wake a sleeping node (its timer fired).
    Wake,
    /// Resume an awaiting subflow node's sub-run (resume request `seq`).
    Resume {
        /// Which resume request the job carries (`None`: an old job, matches nothing).
        seq: Option<u64>,
    },
    /// A client resumes an awaiting node; `key` is the call's idempotency key.
    ClientResume {
        /// The idempotency key.
        key: &'a str,
    },
}

/// A job (or call) as classification sees it.
#[derive(Debug, Clone, Copy)]
pub struct Probe<'a> {
    /// The work it refers to.
    pub work: &'a WorkItem,
    /// What it asks for.
    pub request: Request<'a>,
    /// The run revision whose commit scheduled it, when known.
    pub rev: Option<u64>,
}

/// What may be done. Everything but `Ready` and `Replay` means: do not touch the run.
#[derive(Debug, Clone, PartialEq)]
pub enum Class {
    /// The run finished (sticky): drop the job.
    Finished(RunPhase),
    /// The job names another blueprint than the run's: it can never be right.
    WrongBlueprint(String),
    /// The run is pinned to another blueprint version: leave it for a worker that has it.
    VersionMismatch(String),
    /// The loaded state does not know the job yet (a lagging read): try again shortly.
    NotYet(String),
    /// Already committed: re-do the follow-ups of this record, nothing else.
    Replay(CommitRecord),
    /// This attempt failed before and its retry was recorded: re-send that retry (its
    /// message may never have been sent), nothing else.
    RetryRecorded(RetryRecord),
    /// The work settled and its record is gone, or a newer request superseded this one.
    Stale(String),
    /// Go ahead.
    Ready(Ready),
}

/// What a job that may go ahead works on.
#[derive(Debug, Clone, PartialEq)]
pub enum Ready {
    /// Run the attempt.
    Execute,
    /// Complete the sleeping node (its awaiting record).
    Wake(AwaitingRecord),
    /// Resume the sub-run with this request.
    Resume(PendingResume),
    /// Resume the awaiting node (its awaiting record).
    ClientResume(AwaitingRecord),
}

/// Classifies `probe` against `state` (prepared by the worker: see
/// [`super::transition::prepare`]). `blueprint` is the caller's copy of the run's blueprint,
/// when it has one (the reconciler may not).
pub fn classify(state: &RunState, blueprint: Option<&Blueprint>, probe: &Probe<'_>) -> Class {
    let book = &state.book;
    let work = probe.work;
    if let Request::ClientResume { key } = probe.request
        && let Some(record) = book.resumed_with(key)
    {
        return Class::Replay(record.clone());
    }
    if book.status.is_terminal() {
        return Class::Finished(book.status);
    }
    if let Some(blueprint) = blueprint {
        if let Some(id) = state.blueprint_id()
            && id != blueprint.id()
        {
            return Class::WrongBlueprint(format!(
                "the job names blueprint '{}' but run {} runs '{id}'",
                blueprint.id(),
                state.run_id
            ));
        }
        if let VersionCheck::Mismatch { pinned } = check_version(state, blueprint) {
            return Class::VersionMismatch(version_mismatch(&pinned, blueprint));
        }
    }
    if let Some(rev) = probe.rev.filter(|rev| *rev > book.revision) {
        return Class::NotYet(format!(
            "the job was scheduled at revision {rev} but the run was read at revision {}",
            book.revision
        ));
    }
    if work.activation > book.seq {
        return Class::NotYet(format!(
            "activation {} is not in the run as read (its last is {})",
            work.activation, book.seq
        ));
    }
    let key = work.key();
    let committed = book.commits.get(&key);
    let awaiting = book.awaiting_for(work);
    match probe.request {
        Request::Execute { attempt } => {
            if let Some(record) = committed {
                return Class::Replay(record.clone());
            }
            if !book.outstanding.contains_key(&key) {
                return Class::Stale("its work is not outstanding".into());
            }
            match book.retries.get(&key) {
                Some(retry) if attempt < retry.attempt => Class::RetryRecorded(retry.clone()),
                _ => Class::Ready(Ready::Execute),
            }
        }
        Request::Wake => match awaiting {
            Some(record) if record.details.reason == AwaitReason::Timer => {
                Class::Ready(Ready::Wake(record.clone()))
            }
            Some(_) => Class::Stale("the node waits for a resume, not a timer".into()),
            None => settled(
                state,
                &key,
                committed,
                "the sleeping node was already resumed",
            ),
        },
        Request::Resume { seq } => {
            let pending = awaiting
                .and_then(|record| record.pending_resume.clone())
                .filter(|p| seq == Some(p.seq));
            match pending {
                Some(pending) => Class::Ready(Ready::Resume(pending)),
                None => settled(
                    state,
                    &key,
                    committed,
                    "stale resume: the node is no longer waiting for it",
                ),
            }
        }
        Request::ClientResume { .. } => match awaiting {
            Some(record) => Class::Ready(Ready::ClientResume(record.clone())),
            None => Class::Stale(format!(
                "node '{}' is not awaiting: it was resumed by another request",
                work.node
            )),
        },
    }
}

/// A wake or resume whose awaiting record is gone: replay the commit that settled the node
/// (its follow-ups may never have been sent); a node still outstanding has not been seen
/// awaiting yet (a lagging read); anything else is stale.
fn settled(state: &RunState, key: &str, committed: Option<&CommitRecord>, why: &str) -> Class {
    match committed {
        Some(record) if record.kind != CommitKind::Awaiting => Class::Replay(record.clone()),
        _ if state.book.outstanding.contains_key(key) => {
            Class::NotYet("the node's awaiting commit is not in the run as read".into())
        }
        _ => Class::Stale(why.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::distributed::transition::{Settlement, new_run, settle};
    use crate::flow::blueprint::Blueprint;
    use crate::flow::node::NodeResult;
    use serde_json::{Map, json};

    fn sleepy() -> Blueprint {
        Blueprint::from_json(
            r#"{"id":"s","nodes":[{"id":"z","uses":"sleep","params":{"duration":10}},
            {"id":"b","uses":"echo"}],"edges":[{"source":"z","target":"b"}]}"#,
        )
        .unwrap()
    }

    fn awaiting_run() -> (RunState, Blueprint, WorkItem) {
        let bp = sleepy();
        let (mut state, work) = new_run("r", &bp, Map::new());
        let z = work[0].clone();
        let details = crate::flow::context::AwaitingDetails {
            reason: crate::flow::context::AwaitReason::Timer,
            wake_up_at: Some(chrono::Utc::now()),
            subflow_state: None,
        };
        let completion = crate::flow::execute::NodeCompletion {
            result: NodeResult::output(json!(1)),
            deltas: Vec::new(),
            awaiting: Some(details),
        };
        settle(
            &mut state,
            &bp,
            &z,
            Settlement::Finished(completion),
            chrono::Utc::now(),
        );
        (state, bp, z)
    }

    fn probe<'a>(work: &'a WorkItem, request: Request<'a>, rev: Option<u64>) -> Probe<'a> {
        Probe { work, request, rev }
    }

    #[test]
    fn a_wake_whose_commit_landed_replays_its_follow_ups_instead_of_being_dropped() {
        let (mut state, bp, z) = awaiting_run();
        let p = probe(&z, Request::Wake, None);
        assert!(matches!(
            classify(&state, Some(&bp), &p),
            Class::Ready(Ready::Wake(_))
        ));
        let woken = Settlement::Resumed(NodeResult::output(json!(1)), Vec::new());
        let record = settle(&mut state, &bp, &z, woken, chrono::Utc::now());
        assert_eq!(record.fired.len(), 1);
        assert_eq!(classify(&state, Some(&bp), &p), Class::Replay(record));
    }

    #[test]
    fn a_job_newer_than_the_read_is_not_yet_visible_never_stale() {
        let (state, bp, z) = awaiting_run();
        let ahead = WorkItem {
            node: "b".into(),
            activation: state.book.seq + 1,
        };
        let p = probe(&ahead, Request::Execute { attempt: 1 }, None);
        assert!(matches!(classify(&state, Some(&bp), &p), Class::NotYet(_)));
        let p = probe(&z, Request::Wake, Some(state.book.revision + 1));
        assert!(matches!(classify(&state, Some(&bp), &p), Class::NotYet(_)));
    }

    #[test]
    fn an_applied_client_resume_replays_even_after_the_run_finished() {
        let (mut state, bp, z) = awaiting_run();
        let mut record = settle(
            &mut state,
            &bp,
            &z,
            Settlement::Resumed(NodeResult::output(json!(1)), Vec::new()),
            chrono::Utc::now(),
        );
        record.resume_key = Some("k".into());
        state.book.commits.insert(z.key(), record.clone());
        state.book.status = RunPhase::Completed;
        let same = probe(&z, Request::ClientResume { key: "k" }, None);
        assert_eq!(classify(&state, Some(&bp), &same), Class::Replay(record));
        let other = probe(&z, Request::ClientResume { key: "other" }, None);
        assert_eq!(
            classify(&state, Some(&bp), &other),
            Class::Finished(RunPhase::Completed)
        );
    }
}
