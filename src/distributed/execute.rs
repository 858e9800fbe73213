//! The execute step of the job path: run one attempt of a node (a retryable failure below
//! `maxRetries` records the next attempt and its due time in the run document, then sends it
//! as a delayed message), or resume an awaiting subflow node's sub-run. Nothing here commits
//! the node's result: that is [`super::commit`]'s one write.

use crate::Error;
use crate::distributed::classify::{Class, Probe, Ready, Request, classify};
use crate::distributed::commit::Step;
use crate::distributed::events::Event;
use crate::distributed::follow_ups::send_delayed;
use crate::distributed::job::JobMessage;
use crate::distributed::state::{PendingResume, RetryRecord, RunState, WorkItem};
use crate::distributed::transition::Settlement;
use crate::distributed::worker::Worker;
use crate::flow::blueprint::Blueprint;
use crate::flow::builtins::subflow;
use crate::flow::context::ContextDelta;
use crate::flow::execute::{
    AttemptOutcome, AttemptRequest, execute_attempt, execute_attempt_shared, max_attempts,
    node_definition, retry_delay,
};
use crate::flow::node::NodeResult;
use crate::flow::runtime::{FlowRuntime, RunStatus, SUBFLOW_STATE_PREFIX};
use serde_json::{Map, Value};
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// What running one attempt led to.
pub(crate) enum Attempted {
    /// Commit this settlement (the attempt succeeded, or failed for good).
    Settle(Box<Settlement>),
    /// The attempt failed and the next one was recorded and queued; `visible_now`: without
    /// delay.
    RetryQueued {
        /// The retry is receivable at once.
        visible_now: bool,
    },
    /// The attempt failed, but the run moved on meanwhile (finished, or the work settled):
    /// nothing to retry.
    Moot(String),
    /// The attempt failed, and the run as read to record its retry lags behind the job:
    /// give the message back so that a later delivery records the retry.
    Later(String),
}

/// The outcome of resuming an awaiting subflow node's sub-run.
pub(crate) enum SubflowResume {
    /// The sub-run finished: complete (or fail) the node.
    Settle(Settlement),
    /// The sub-run waits again: store its new state.
    Repark(Map<String, Value>),
}

impl Worker {
    /// Runs one attempt: the settlement to commit, or the retry it recorded and queued.
    /// `shared`: `state.context` as a shared map, which the node then reads instead of a
    /// copy of its own.
    pub(crate) async fn attempt(
        &self,
        job: &JobMessage,
        work: &WorkItem,
        blueprint: &Arc<Blueprint>,
        state: &RunState,
        shared: Option<Arc<Map<String, Value>>>,
        cancel: CancellationToken,
    ) -> Result<Attempted, Error> {
        let attempt = job.attempt();
        self.events.emit(Event::JobStarted {
            run_id: job.run_id.clone(),
            node_id: job.node_id.clone(),
            attempt,
        });
        let request = AttemptRequest {
            env: &self.env,
            blueprint,
            node_id: &job.node_id,
            run_id: &job.run_id,
            context: &state.context,
            attempt,
            cancel: cancel.clone(),
            input: None,
        };
        let outcome = match shared {
            Some(snapshot) => execute_attempt_shared(request, snapshot).await,
            None => execute_attempt(request).await,
        };
        if cancel.is_cancelled() {
            // The lease was lost while the node ran: another delivery owns the job now, so
            // neither this result nor a retry may be recorded.
            return Ok(Attempted::Moot(
                "the lease was lost while the node ran".into(),
            ));
        }
        match outcome {
            AttemptOutcome::Completed(completion) => Ok(Attempted::Settle(Box::new(
                Settlement::Finished(completion),
            ))),
            AttemptOutcome::Failed { error, retryable } => {
                let node = node_definition(blueprint, &job.node_id, &state.context);
                let limit = node.as_deref().map_or(1, max_attempts);
                if retryable && attempt < limit {
                    let delay = node
                        .as_deref()
                        .map_or(Duration::ZERO, |n| retry_delay(n, attempt + 1));
                    tracing::info!(error = %error.message, next_attempt = attempt + 1,
                        delay_ms = delay.as_millis() as u64, "attempt failed; retry queued");
                    return self.queue_retry(job, work, blueprint, delay).await;
                }
                tracing::warn!(error = %error.message, "node failed on its last attempt");
                self.events.emit(Event::JobFailed {
                    run_id: job.run_id.clone(),
                    node_id: job.node_id.clone(),
                    message: error.message.clone(),
                });
                Ok(Attempted::Settle(Box::new(Settlement::Failed(error))))
            }
        }
    }

    /// Records the next attempt of `work` and its due time in the run document (so the
    /// reconciler re-sends a lost retry with its attempt and not before it is due), then
    /// sends it as a delayed message carrying the attempt and that commit's revision.
    async fn queue_retry(
        &self,
        job: &JobMessage,
        work: &WorkItem,
        blueprint: &Blueprint,
        delay: Duration,
    ) -> Result<Attempted, Error> {
        let attempt = job.attempt();
        let next = attempt + 1;
        let due_at_ms = self
            .env
            .sources
            .now()
            .timestamp_millis()
            .saturating_add(i64::try_from(delay.as_millis()).unwrap_or(i64::MAX));
        let probe = Probe {
            work,
            request: Request::Execute { attempt },
            rev: None,
        };
        let (recorded, state) = self
            .commit_run(&job.run_id, None, |state| {
                match classify(state, Some(blueprint), &probe) {
                    Class::Ready(Ready::Execute) => {
                        let retry = RetryRecord {
                            attempt: next,
                            due_at_ms,
                            delay_ms: u64::try_from(delay.as_millis()).unwrap_or(u64::MAX),
                        };
                        state.book.retries.insert(work.key(), retry);
                        state.book.revision += 1;
                        Step::Write(Ok(()))
                    }
                    // Another delivery of this attempt recorded the same retry: send it (that
                    // delivery may have stopped before sending; a duplicate is harmless).
                    Class::RetryRecorded(retry) if retry.attempt == next => Step::Skip(Ok(())),
                    Class::NotYet(why) => Step::Skip(Err(Attempted::Later(why))),
                    other => Step::Skip(Err(Attempted::Moot(format!("{other:?}")))),
                }
            })
            .await?;
        if let Err(instead) = recorded {
            return Ok(instead);
        }
        let mut retry = job.clone().at_revision(state.book.revision);
        retry.attempt = Some(next);
        retry.remaining_ms = None;
        retry.deferred_ms = None;
        let visible_now = send_delayed(self.backends.queue.as_ref(), retry, delay)
            .await
            .map_err(|e| e.during("enqueue retry"))?;
        self.events.emit(Event::JobRetried {
            run_id: job.run_id.clone(),
            node_id: job.node_id.clone(),
            next_attempt: next,
            delay,
        });
        Ok(Attempted::RetryQueued { visible_now })
    }

    /// Resumes the sub-run of an awaiting subflow node with the requested action and output
    /// (like the in-process runtime): completed -> the node completes with the subflow's
    /// output; awaiting -> the node waits again; otherwise -> the node fails.
    pub(crate) async fn resume_subflow(
        &self,
        blueprint: &Arc<Blueprint>,
        state: &RunState,
        work: &WorkItem,
        pending: PendingResume,
    ) -> SubflowResume {
        let node = work.node.as_str();
        let key = format!("{SUBFLOW_STATE_PREFIX}{node}");
        let Some(Value::Object(sub_state)) = state.context.get(&key).cloned() else {
            let result = NodeResult {
                output: pending.output,
                action: pending.action,
                dynamic_nodes: Vec::new(),
            };
            return SubflowResume::Settle(Settlement::Resumed(result, Vec::new()));
        };
        let params = node_definition(blueprint, node, &state.context)
            .and_then(|n| n.params.clone())
            .unwrap_or_default();
        let sub_blueprint = match subflow::sub_blueprint(&self.env, node, &params) {
            Ok(bp) => bp,
            Err(error) => return SubflowResume::Settle(Settlement::Failed(error)),
        };
        let sub_env = match subflow::nested_environment(&self.env, node, sub_blueprint.id()) {
            Ok(env) => env,
            Err(error) => return SubflowResume::Settle(Settlement::Failed(error)),
        };
        let sub = FlowRuntime::new(sub_env.clone())
            .resume(
                sub_blueprint.clone(),
                sub_state,
                None,
                pending.action,
                pending.output,
            )
            .await;
        match sub.status {
            RunStatus::Awaiting => SubflowResume::Repark(sub.context),
            RunStatus::Completed => {
                let (output, writes) =
                    subflow::subflow_output(&params, &sub_blueprint, &sub.context);
                let deltas = writes
                    .into_iter()
                    .map(|(key, value)| ContextDelta::Set { key, value })
                    .collect();
                let result = NodeResult {
                    output,
                    ..NodeResult::default()
                };
                SubflowResume::Settle(Settlement::Resumed(result, deltas))
            }
            _ => SubflowResume::Settle(Settlement::Failed(subflow::incomplete_error(
                &sub_env,
                sub_blueprint.id(),
                &sub,
            ))),
        }
    }
}
