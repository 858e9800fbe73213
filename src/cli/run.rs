//! `flowcraft-azure run BLUEPRINT.json [--input CONTEXT.json] [--blueprints DIR] [--json]
//! [--evaluator property|safe] [--concurrency N]`: runs a blueprint in this process with the
//! built-in and utility nodes and prints the result.
//!
//! With `--json`, stdout carries exactly one JSON object `{"status","context","errors"}`;
//! without it, a short human summary. Exit codes: 0 completed or awaiting, 1 failed,
//! cancelled or stalled, 2 bad input (unreadable or invalid blueprint or input). Ctrl-C
//! cancels the run (status `cancelled`).
//!
//! The steps are separate functions ([`prepare`], [`run_in_process`], [`report`]) so other
//! execution modes can reuse loading and printing.

use crate::flow::blueprint::{Blueprint, LoadOptions};
use crate::flow::execute::{BlueprintRegistry, Environment};
use crate::flow::expr::EvaluatorKind;
use crate::flow::node::NodeRegistry;
use crate::flow::runtime::{
    AWAITING_IDS_KEY, EXECUTION_ID_KEY, FlowRuntime, RunStatus, WorkflowResult,
};
use serde_json::{Map, Value};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

/// Arguments of `run`. Keep `override_usage` in step with the options below.
#[derive(Debug, clap::Args)]
#[command(
    override_usage = "flowcraft-azure run <BLUEPRINT.json> [--input CONTEXT.json] [--blueprints DIR] [--json]\n       \
                      [--evaluator property|safe] [--allow-cycles] [--concurrency N]\n       \
                      [--distributed [--workers N]]",
    after_help = "Exit codes: 0 completed or awaiting, 1 failed, cancelled or stalled, 2 bad input.\n\
                  Example (a subflow needs the directory of the blueprint it runs):\n  \
                  flowcraft-azure run fixtures/blueprints/subflow.json --blueprints fixtures/blueprints"
)]
pub struct Args {
    /// The blueprint JSON file.
    #[arg(value_name = "BLUEPRINT.json")]
    pub blueprint: PathBuf,
    /// A JSON object file with the initial context.
    #[arg(long, value_name = "CONTEXT.json")]
    pub input: Option<PathBuf>,
    /// A directory of *.json blueprints that `subflow` nodes may run.
    #[arg(long, value_name = "DIR")]
    pub blueprints: Option<PathBuf>,
    /// Print only the JSON result {"status","context","errors"}.
    #[arg(long)]
    pub json: bool,
    /// Expression language; default property; metadata.evaluator wins.
    #[arg(long, value_name = "property|safe")]
    pub evaluator: Option<EvaluatorKind>,
    /// Accept cycles that do not pass through a loop-controller.
    #[arg(long)]
    pub allow_cycles: bool,
    /// How many nodes may run at once (default: min(CPUs, 10)).
    #[arg(long, value_name = "N")]
    pub concurrency: Option<usize>,
    /// Run through the distributed core (in-memory queue and stores, in-process workers).
    #[arg(long)]
    pub distributed: bool,
    /// Worker loops for --distributed (default 4).
    #[arg(long, value_name = "N", requires = "distributed")]
    pub workers: Option<usize>,
}

/// Everything needed to start a run: the blueprint, the initial context and the environment.
#[derive(Debug, Clone)]
pub struct Prepared {
    /// The validated blueprint.
    pub blueprint: Arc<Blueprint>,
    /// The initial context (empty without `--input`).
    pub initial: Map<String, Value>,
    /// Built-in + utility nodes and the blueprints from `--blueprints` (plus the main one).
    pub env: Environment,
}

/// Loads the blueprint, the input and the blueprint directory. The error is a message for
/// the user (exit code 2).
pub fn prepare(
    blueprint: &Path,
    input: Option<&Path>,
    blueprints: Option<&Path>,
    options: &LoadOptions,
) -> Result<Prepared, String> {
    let main = Arc::new(super::validate::load(blueprint, options)?);
    let initial = match input {
        Some(path) => load_input(path)?,
        None => Map::new(),
    };
    let mut registry = BlueprintRegistry::new();
    if let Some(dir) = blueprints {
        registry.load_dir(dir, options).map_err(|e| e.to_string())?;
    }
    registry.insert(main.clone());
    let env = Environment::new(NodeRegistry::with_builtins()).with_blueprints(registry);
    Ok(Prepared {
        blueprint: main,
        initial,
        env,
    })
}

pub(crate) fn load_input(path: &Path) -> Result<Map<String, Value>, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read input file {}: {e}", path.display()))?;
    match serde_json::from_str::<Value>(&text) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err(format!(
            "{}: the input must be a JSON object (the initial context)",
            path.display()
        )),
        Err(e) => Err(format!("{}: invalid JSON: {e}", path.display())),
    }
}

/// Runs a prepared blueprint in this process; Ctrl-C cancels it.
pub async fn run_in_process(prepared: Prepared, concurrency: Option<usize>) -> WorkflowResult {
    let runtime = FlowRuntime::new(prepared.env).with_concurrency(concurrency.unwrap_or(0));
    let cancel = CancellationToken::new();
    let on_signal = cancel.clone();
    let watcher = tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_ok() {
            on_signal.cancel();
        }
    });
    let result = runtime
        .run_with(prepared.blueprint, prepared.initial, cancel)
        .await;
    watcher.abort();
    result
}

/// The exit code for a run status: 0 for completed or awaiting, 1 otherwise.
pub fn exit_code(status: RunStatus) -> u8 {
    match status {
        RunStatus::Completed | RunStatus::Awaiting => super::EXIT_OK,
        _ => super::EXIT_FAILED,
    }
}

/// Prints `result` (one JSON object with `json`, else a summary) and returns the exit code.
pub fn report(result: &WorkflowResult, blueprint: &Blueprint, json: bool) -> u8 {
    if json {
        match serde_json::to_string(result) {
            Ok(text) => println!("{text}"),
            Err(e) => {
                eprintln!("error: cannot serialize the result: {e}");
                return super::EXIT_FAILED;
            }
        }
    } else {
        print!("{}", summary(result, blueprint));
    }
    exit_code(result.status)
}

const MAX_SHOWN: usize = 200;

fn shorten(value: &Value) -> String {
    let text = value.to_string();
    if text.chars().count() <= MAX_SHOWN {
        text
    } else {
        let cut: String = text.chars().take(MAX_SHOWN).collect();
        format!("{cut}...")
    }
}

/// A short human summary: status, terminal outputs, awaiting nodes and errors.
pub fn summary(result: &WorkflowResult, blueprint: &Blueprint) -> String {
    let run_id = result
        .context
        .get(EXECUTION_ID_KEY)
        .and_then(Value::as_str)
        .unwrap_or("?");
    let mut out = format!("run {run_id} of '{}': {}\n", blueprint.id(), result.status);
    for id in blueprint.terminal_nodes() {
        if let Some(value) = result.context.get(&format!("_outputs.{id}")) {
            out.push_str(&format!("  output {id}: {}\n", shorten(value)));
        }
    }
    if let Some(Value::Array(ids)) = result.context.get(AWAITING_IDS_KEY) {
        for id in ids.iter().filter_map(Value::as_str) {
            out.push_str(&format!("  awaiting: {id}\n"));
        }
    }
    for error in &result.errors {
        out.push_str(&format!(
            "  error in node '{}': {}\n",
            error.node_id, error.message
        ));
    }
    out
}

/// Runs the subcommand and returns the process exit code.
pub fn execute(args: Args) -> u8 {
    let options = super::validate::options(args.evaluator, args.allow_cycles);
    let prepared = match prepare(
        &args.blueprint,
        args.input.as_deref(),
        args.blueprints.as_deref(),
        &options,
    ) {
        Ok(prepared) => prepared,
        Err(message) => {
            eprintln!("error: {message}");
            return super::EXIT_BAD_INPUT;
        }
    };
    if args.distributed {
        let workers = args
            .workers
            .unwrap_or(super::run_distributed::DEFAULT_WORKERS);
        return super::run_distributed::execute(prepared, workers, args.concurrency, args.json);
    }
    let blueprint = prepared.blueprint.clone();
    let result = match super::block_on(run_in_process(prepared, args.concurrency)) {
        Ok(result) => result,
        Err(code) => return code,
    };
    report(&result, &blueprint, args.json)
}
