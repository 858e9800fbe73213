//! `flowcraft-azure run BLUEPRINT.json --distributed [--workers N]`: runs a blueprint through
//! the distributed core (queue, run store, coordination store, workers, client) on the
//! in-memory backends, with N concurrent workers in this process. It prints the same JSON
//! (`{"status","context","errors"}`) and uses the same exit codes as the in-process `run`,
//! so the two modes can be compared; the distributed pins `blueprintId` and
//! `blueprintVersion` are left out of the printed context. Sleeping nodes are waited for (as
//! in-process); a run waiting for an external resume ends the command with `awaiting`.
//! `--concurrency N` bounds the jobs each worker runs at once (default 32). Ctrl-C cancels
//! the run.

use super::run::Prepared;
use crate::distributed::client::Client;
use crate::distributed::core::Backends;
use crate::distributed::state::{BLUEPRINT_ID_KEY, BLUEPRINT_VERSION_KEY};
use crate::distributed::worker::{Worker, WorkerConfig};
use crate::flow::runtime::{AWAITING_DETAILS_KEY, RunStatus, WorkflowError, WorkflowResult};
use serde_json::Value;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Default number of in-process workers for `--distributed`.
pub const DEFAULT_WORKERS: usize = 4;

/// How long one wait for the run lasts before checking again (runs have no overall limit).
const WAIT_SLICE: Duration = Duration::from_secs(3600);

/// True when every awaiting node waits for a timer (the run continues by itself).
fn only_timers(result: &WorkflowResult) -> bool {
    match result.context.get(AWAITING_DETAILS_KEY) {
        Some(Value::Object(details)) if !details.is_empty() => details
            .values()
            .all(|d| d.get("reason").and_then(Value::as_str) == Some("timer")),
        _ => false,
    }
}

fn failure(message: String) -> WorkflowResult {
    WorkflowResult {
        status: RunStatus::Failed,
        context: serde_json::Map::new(),
        errors: vec![WorkflowError::new("", message)],
    }
}

/// Runs `prepared` on in-memory backends with `workers` worker loops (each running up to
/// `concurrency` jobs at once, default 32); Ctrl-C cancels the run.
pub async fn run_distributed(
    prepared: Prepared,
    workers: usize,
    concurrency: Option<usize>,
) -> WorkflowResult {
    let backends = Backends::in_memory();
    let config = WorkerConfig {
        concurrency: concurrency.filter(|n| *n > 0).unwrap_or(32),
        idle_backoff_max: Duration::from_millis(100),
        ..WorkerConfig::default()
    };
    let shutdown = CancellationToken::new();
    let mut loops = Vec::new();
    for _ in 0..workers.max(1) {
        let worker = Arc::new(Worker::new(
            prepared.env.clone(),
            backends.clone(),
            config.clone(),
        ));
        loops.push(tokio::spawn(worker.run(shutdown.clone())));
    }
    let client = Client::new(backends, prepared.env.blueprints.clone());
    let result = drive(&client, &prepared).await;
    shutdown.cancel();
    for handle in loops {
        let _ = handle.await;
    }
    result
}

async fn drive(client: &Client, prepared: &Prepared) -> WorkflowResult {
    let run_id = match client
        .start_run(prepared.blueprint.id(), prepared.initial.clone())
        .await
    {
        Ok(id) => id,
        Err(e) => return failure(format!("cannot start the run: {e}")),
    };
    let mut cancelled = false;
    loop {
        let waited = tokio::select! {
            r = client.wait_for(&run_id, WAIT_SLICE) => r,
            _ = tokio::signal::ctrl_c(), if !cancelled => {
                cancelled = true;
                if let Err(e) = client.cancel(&run_id).await {
                    return failure(format!("cannot cancel run {run_id}: {e}"));
                }
                continue;
            }
        };
        match waited {
            Ok(result) if result.status == RunStatus::Awaiting && only_timers(&result) => {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Ok(mut result) => {
                result.context.remove(BLUEPRINT_ID_KEY);
                result.context.remove(BLUEPRINT_VERSION_KEY);
                return result;
            }
            Err(crate::Error::Timeout(_)) => continue,
            Err(e) => return failure(format!("lost track of run {run_id}: {e}")),
        }
    }
}

/// Runs the `--distributed` variant of `run` and returns the exit code (the in-process
/// `run`'s loading and printing are reused).
pub fn execute(prepared: Prepared, workers: usize, concurrency: Option<usize>, json: bool) -> u8 {
    let blueprint = prepared.blueprint.clone();
    let result = match super::block_on(run_distributed(prepared, workers, concurrency)) {
        Ok(result) => result,
        Err(code) => return code,
    };
    super::run::report(&result, &blueprint, json)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flow::blueprint::LoadOptions;
    use crate::flow::runtime::FlowRuntime;

    fn prepared(json: &str) -> Prepared {
        let path = std::env::temp_dir().join(format!(
            "flowcraft-run-distributed-{}.json",
            uuid::Uuid::new_v4()
        ));
        std::fs::write(&path, json).unwrap();
        let prepared = super::super::run::prepare(&path, None, None, &LoadOptions::default());
        let _ = std::fs::remove_file(&path);
        prepared.unwrap()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn distributed_run_prints_what_the_in_process_run_prints() {
        let bp = r#"{"id":"cli","nodes":[
            {"id":"a","uses":"set","params":{"values":{"x":1}}},
            {"id":"b","uses":"echo"},{"id":"c","uses":"echo"},
            {"id":"j","uses":"echo","config":{"joinStrategy":"all"}}],
            "edges":[{"source":"a","target":"b"},{"source":"a","target":"c"},
                     {"source":"b","target":"j"},{"source":"c","target":"j"}]}"#;
        let p = prepared(bp);
        let mut local = FlowRuntime::new(p.env.clone())
            .run(p.blueprint.clone(), p.initial.clone())
            .await;
        let mut distributed = run_distributed(p, 3, None).await;
        assert_eq!(distributed.status, RunStatus::Completed);
        assert_eq!(distributed.status, local.status);
        local.context.remove("_executionId");
        distributed.context.remove("_executionId");
        assert_eq!(distributed.context, local.context);
        assert_eq!(distributed.errors, local.errors);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn distributed_run_of_a_failing_node_reports_failed_with_the_message() {
        let bp = r#"{"id":"bad","nodes":[{"id":"a","uses":"fail","params":{"message":"nope"}}],"edges":[]}"#;
        let result = run_distributed(prepared(bp), 2, None).await;
        assert_eq!(result.status, RunStatus::Failed);
        assert_eq!(result.errors[0].message, "nope");
        assert_eq!(
            super::super::run::exit_code(result.status),
            super::super::EXIT_FAILED
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn distributed_run_waits_for_sleeping_nodes() {
        let bp = r#"{"id":"nap","nodes":[{"id":"s","uses":"sleep","params":{"duration":30}},
            {"id":"b","uses":"echo"}],"edges":[{"source":"s","target":"b"}]}"#;
        let result = run_distributed(prepared(bp), 1, None).await;
        assert_eq!(result.status, RunStatus::Completed, "{result:?}");
        assert!(result.context.contains_key("_outputs.b"));
    }
}
