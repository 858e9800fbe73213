//! `flowcraft-azure demo [--runs N] [--workers W]`: the newcomer's first command. It runs a
//! small order workflow (a fan-out of three checks, one of which fails once and succeeds on
//! its retry, an `all` join, a review that waits for a person, then a confirmation) N times
//! across W workers on the embedded in-memory backend, plays the reviewer (it resumes each
//! waiting run with `approve`), shows live progress and ends with a summary and the run's
//! graph as Mermaid, each node coloured by its state.
//!
//! Progress is one live line on a terminal and plain event lines otherwise (pipes, CI).
//! `--azure` runs the same demo (workers in this process) on Azure Queue Storage, Cosmos DB
//! and Redis from the environment, on its own queue `flowcraft-demo`.
//! Exit code 0 when every run completed, 1 otherwise.

use crate::distributed::client::Client;
use crate::distributed::core::Backends;
use crate::distributed::events::{Event, EventBus};
use crate::distributed::worker::{Worker, WorkerConfig};
use crate::flow::blueprint::Blueprint;
use crate::flow::execute::{BlueprintRegistry, Environment};
use crate::flow::mermaid::to_mermaid_with_states;
use crate::flow::node::NodeRegistry;
use crate::flow::run_view::node_states;
use crate::flow::runtime::{AWAITING_IDS_KEY, RunStatus, WorkflowResult};
use serde_json::{Map, Value};
use std::io::{IsTerminal, Write};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::broadcast::error::RecvError;
use tokio_util::sync::CancellationToken;

/// The demo blueprint (also in `fixtures/blueprints/demo-order.json`).
pub const DEMO_BLUEPRINT: &str = include_str!("../../fixtures/blueprints/demo-order.json");

/// The node the demo's reviewer resumes.
const REVIEW_NODE: &str = "review";

/// How long the whole demo may take before it gives up.
const DEMO_LIMIT: Duration = Duration::from_secs(60);

/// Arguments of `demo`.
#[derive(Debug, clap::Args)]
#[command(after_help = "Exit codes: 0 every run completed, 1 otherwise.\n\
                        Examples:\n  flowcraft-azure demo --runs 5 --workers 4\n  \
                        eval \"$(scripts/emulators.sh env)\" && flowcraft-azure demo --azure")]
pub struct Args {
    /// How many runs of the demo workflow to start.
    #[arg(long, value_name = "N", default_value_t = 3)]
    pub runs: usize,
    /// How many workers share the queue.
    #[arg(long, value_name = "W", default_value_t = 4)]
    pub workers: usize,
    /// Run on Azure (the local stack or real accounts, from the environment) instead of the
    /// in-memory backend; the demo uses its own queue, `flowcraft-demo`.
    #[arg(long)]
    pub azure: bool,
    /// Options shared by the Azure commands (with --azure).
    #[command(flatten)]
    pub azure_args: super::azure::AzureArgs,
}

/// The queue `demo --azure` uses, so a fleet's own queue never sees the demo's jobs.
pub const DEMO_QUEUE: &str = "flowcraft-demo";

/// The Azure backends for `demo --azure`: settings from the environment, the demo's own queue,
/// and the resources created when missing.
async fn azure_backends(args: &super::azure::AzureArgs) -> Result<Backends, String> {
    let mut settings = super::azure::settings()?;
    settings.queue = DEMO_QUEUE.to_string();
    let backends =
        super::azure::connect_provisioned(&settings, args, "the demo's queue and containers")
            .await?;
    Ok(backends.backends)
}

/// Counters shown while the demo runs.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Progress {
    /// Runs started.
    pub runs: usize,
    /// Runs that reached a final status.
    pub finished: usize,
    /// Node settlements committed.
    pub nodes_done: usize,
    /// Attempts that failed and were queued again.
    pub retries: usize,
    /// Runs waiting for the reviewer right now.
    pub awaiting: usize,
}

impl Progress {
    fn line(&self, elapsed: Duration) -> String {
        format!(
            "runs {}/{} finished | nodes done {} | retries {} | awaiting review {} | {:.1}s",
            self.finished,
            self.runs,
            self.nodes_done,
            self.retries,
            self.awaiting,
            elapsed.as_secs_f64()
        )
    }
}

/// What the demo ended with.
#[derive(Debug, Clone)]
pub struct DemoOutcome {
    /// Each run's id and final result, in start order.
    pub results: Vec<(String, WorkflowResult)>,
    /// The final counters.
    pub progress: Progress,
    /// Wall time from the first start to the last finish.
    pub elapsed: Duration,
}

/// Where progress goes: a live line on a terminal, plain lines elsewhere, or nowhere.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Display {
    /// Rewrite one status line in place.
    Live,
    /// One line per notable event.
    Lines,
    /// Print nothing (tests).
    Quiet,
}

/// The demo blueprint, parsed.
pub fn demo_blueprint() -> Result<Arc<Blueprint>, String> {
    Blueprint::from_json(DEMO_BLUEPRINT)
        .map(Arc::new)
        .map_err(|e| format!("the built-in demo blueprint does not load: {e}"))
}

/// The environment the demo's workers run: built-in and utility nodes plus the demo blueprint.
pub fn demo_environment(blueprint: Arc<Blueprint>) -> Environment {
    let mut registry = BlueprintRegistry::new();
    registry.insert(blueprint);
    Environment::new(NodeRegistry::with_builtins()).with_blueprints(registry)
}

/// Runs the demo on `backends` with `workers` worker loops in this process and returns the
/// outcome. The reviewer (this function) approves each run once it waits at `review`.
pub async fn run_demo(
    backends: Backends,
    runs: usize,
    workers: usize,
    display: Display,
) -> Result<DemoOutcome, String> {
    let blueprint = demo_blueprint()?;
    let env = demo_environment(blueprint.clone());
    let events = EventBus::new(8192);
    let config = WorkerConfig {
        idle_backoff_max: Duration::from_millis(50),
        ..WorkerConfig::default()
    };
    let shutdown = CancellationToken::new();
    let loops: Vec<_> = (0..workers.max(1))
        .map(|_| {
            let worker = Worker::new(env.clone(), backends.clone(), config.clone())
                .with_events(events.clone());
            tokio::spawn(Arc::new(worker).run(shutdown.clone()))
        })
        .collect();
    let client = Client::new(backends, env.blueprints.clone()).with_events(events.clone());
    let outcome = drive(&client, &events, blueprint.id(), runs.max(1), display).await;
    shutdown.cancel();
    for handle in loops {
        let _ = handle.await;
    }
    outcome
}

/// Starts the runs, counts events, resumes waiting runs and collects the final results.
async fn drive(
    client: &Client,
    events: &EventBus,
    blueprint_id: &str,
    runs: usize,
    display: Display,
) -> Result<DemoOutcome, String> {
    let mut feed = events.subscribe();
    let started = Instant::now();
    let mut progress = Progress::default();
    let mut ids = Vec::with_capacity(runs);
    for n in 0..runs {
        let mut input = Map::new();
        input.insert(
            "customer".into(),
            Value::String(format!("customer-{}", n + 1)),
        );
        let id = client
            .start_run(blueprint_id, input)
            .await
            .map_err(|e| format!("cannot start a demo run: {e}"))?;
        say(display, &format!("started run {id}"));
        ids.push(id);
        progress.runs += 1;
    }
    let mut finished: Vec<Option<WorkflowResult>> = vec![None; runs];
    let mut resumed = vec![false; runs];
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    while finished.iter().any(Option::is_none) {
        if started.elapsed() > DEMO_LIMIT {
            return Err(format!(
                "the demo did not finish within {} s",
                DEMO_LIMIT.as_secs()
            ));
        }
        tokio::select! {
            event = feed.recv() => match event {
                Ok(event) => note(&mut progress, &event, display),
                Err(RecvError::Lagged(_)) => {}
                Err(RecvError::Closed) => return Err("the workers' event feed closed".into()),
            },
            _ = tick.tick() => {
                progress.awaiting = 0;
                for (i, id) in ids.iter().enumerate() {
                    if finished[i].is_some() {
                        continue;
                    }
                    let Some(result) = client.status(id).await.map_err(|e| e.to_string())? else {
                        return Err(format!("run {id} disappeared from the store"));
                    };
                    match result.status {
                        RunStatus::Running => {}
                        RunStatus::Awaiting if waits_for_review(&result) => {
                            progress.awaiting += 1;
                            if !resumed[i] {
                                resumed[i] = true;
                                say(display, &format!("run {id} waits at '{REVIEW_NODE}'; the reviewer approves it"));
                                client
                                    .resume_with_action(id, Some(REVIEW_NODE), Some("approve".into()), None)
                                    .await
                                    .map_err(|e| format!("cannot resume run {id}: {e}"))?;
                            }
                        }
                        RunStatus::Awaiting => {}
                        _ => {
                            say(display, &format!("run {id} {}", result.status));
                            progress.finished += 1;
                            finished[i] = Some(result);
                        }
                    }
                }
                if display == Display::Live {
                    print!("\r\x1b[2K{}", progress.line(started.elapsed()));
                    let _ = std::io::stdout().flush();
                }
            }
        }
    }
    if display == Display::Live {
        println!("\r\x1b[2K{}", progress.line(started.elapsed()));
    }
    let results = ids
        .into_iter()
        .zip(finished.into_iter().flatten())
        .collect();
    Ok(DemoOutcome {
        results,
        progress,
        elapsed: started.elapsed(),
    })
}

fn waits_for_review(result: &WorkflowResult) -> bool {
    match result.context.get(AWAITING_IDS_KEY) {
        Some(Value::Array(ids)) => ids.iter().any(|id| id.as_str() == Some(REVIEW_NODE)),
        _ => false,
    }
}

/// Counts one event; in plain-line mode prints the interesting ones.
fn note(progress: &mut Progress, event: &Event, display: Display) {
    match event {
        Event::JobFinished { .. } => progress.nodes_done += 1,
        Event::JobRetried {
            run_id,
            node_id,
            next_attempt,
            delay,
        } => {
            progress.retries += 1;
            say(
                display,
                &format!(
                    "run {run_id}: '{node_id}' failed; attempt {next_attempt} in {} ms",
                    delay.as_millis()
                ),
            );
        }
        _ => {}
    }
}

fn say(display: Display, line: &str) {
    if display == Display::Lines {
        println!("{line}");
    }
}

/// The closing summary: one line per run, totals, and the first run's coloured graph.
pub fn summary(outcome: &DemoOutcome, blueprint: &Blueprint) -> String {
    let mut out = String::from("\nSummary\n");
    for (id, result) in &outcome.results {
        let done = result
            .context
            .keys()
            .filter(|k| k.starts_with("_outputs."))
            .count();
        let status = result
            .context
            .get("status")
            .and_then(Value::as_str)
            .unwrap_or("-");
        out.push_str(&format!(
            "  run {id}: {} ({done} nodes with output, order {status})\n",
            result.status
        ));
    }
    let p = &outcome.progress;
    out.push_str(&format!(
        "  {} runs, {} node settlements, {} retries, {:.2} s\n",
        p.runs,
        p.nodes_done,
        p.retries,
        outcome.elapsed.as_secs_f64()
    ));
    if let Some((id, result)) = outcome.results.first() {
        out.push_str(&format!(
            "\nRun {id} as Mermaid (paste into https://mermaid.live):\n\n"
        ));
        out.push_str(&to_mermaid_with_states(
            blueprint,
            &node_states(blueprint, result),
        ));
    }
    out
}

/// Runs the subcommand and returns the process exit code.
pub fn execute(args: Args) -> u8 {
    let display = if std::io::stdout().is_terminal() {
        Display::Live
    } else {
        Display::Lines
    };
    println!(
        "flowcraft-azure demo: {} run(s) of 'demo-order' on {} workers ({})",
        args.runs.max(1),
        args.workers.max(1),
        if args.azure {
            "Azure Queue Storage, Cosmos DB and Redis from the environment"
        } else {
            "in-memory backend"
        }
    );
    let outcome = match super::block_on(async {
        let backends = if args.azure {
            azure_backends(&args.azure_args).await?
        } else {
            Backends::in_memory()
        };
        run_demo(backends, args.runs, args.workers, display).await
    }) {
        Ok(Ok(outcome)) => outcome,
        Ok(Err(message)) => {
            eprintln!("error: {message}");
            return super::EXIT_FAILED;
        }
        Err(code) => return code,
    };
    match demo_blueprint() {
        Ok(blueprint) => print!("{}", summary(&outcome, &blueprint)),
        Err(message) => eprintln!("error: {message}"),
    }
    let all_completed = outcome
        .results
        .iter()
        .all(|(_, r)| r.status == RunStatus::Completed);
    if all_completed {
        super::EXIT_OK
    } else {
        super::EXIT_FAILED
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flow::run_view::NodeState;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn every_demo_run_retries_once_is_approved_and_completes() {
        let outcome = run_demo(Backends::in_memory(), 2, 3, Display::Quiet)
            .await
            .unwrap();
        assert_eq!(outcome.results.len(), 2);
        let blueprint = demo_blueprint().unwrap();
        for (id, result) in &outcome.results {
            assert_eq!(result.status, RunStatus::Completed, "run {id}: {result:?}");
            assert_eq!(result.context["status"], "confirmed");
            let states = node_states(&blueprint, result);
            assert_eq!(states["reject"], NodeState::NotReached);
            for node in [
                "receive", "price", "stock", "shipping", "quote", "review", "confirm",
            ] {
                assert_eq!(states[node], NodeState::Done, "node {node} of run {id}");
            }
        }
        assert_eq!(outcome.progress.retries, 2, "one retry of 'stock' per run");
        assert_eq!(outcome.progress.finished, 2);
        let text = summary(&outcome, &blueprint);
        assert!(text.contains("class n7 not-reached"), "{text}");
        assert!(text.contains("class n6 done"), "{text}");
    }
}
