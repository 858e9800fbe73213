//! `flowcraft-azure submit BLUEPRINT_ID --blueprints DIR [--input FILE] [--wait] [--json]
//! [--trace FILE]`: starts a run on the fleet (creates the queues and containers when they are
//! missing, the run and status items, and sends its start jobs) and prints the run id. With `--wait` it follows the run until it is no longer
//! running and prints the result exactly as `run` does (`--json`: one object
//! `{"status","context","errors"}`), with the same exit codes.

use super::azure::{AzureArgs, connect_provisioned, environment, settings};
use super::{EXIT_BAD_INPUT, EXIT_FAILED, EXIT_OK, fail};
use crate::distributed::client::Client;
use crate::distributed::state::{BLUEPRINT_ID_KEY, BLUEPRINT_VERSION_KEY};
use crate::flow::runtime::{EXECUTION_ID_KEY, WorkflowResult};
use serde_json::Value;
use std::path::PathBuf;
use std::time::Duration;

/// How long `--wait` waits at most by default.
const DEFAULT_WAIT_SECS: u64 = 3600;

/// Arguments of `submit`.
#[derive(Debug, clap::Args)]
#[command(
    after_help = "Exit codes: 0 started (or, with --wait, completed or awaiting), \
                        1 failed, cancelled, stalled or cannot connect, 2 bad input.\n\
                        Example:\n  \
                        flowcraft-azure submit fan-out-fan-in --blueprints fixtures/blueprints --wait --json"
)]
pub struct Args {
    /// The id of the blueprint to run (as in its JSON `id`).
    #[arg(value_name = "BLUEPRINT_ID")]
    pub blueprint_id: String,
    /// The directory of *.json blueprints the workers run.
    #[arg(long, value_name = "DIR")]
    pub blueprints: PathBuf,
    /// A JSON object file with the initial context.
    #[arg(long, value_name = "FILE")]
    pub input: Option<PathBuf>,
    /// Wait until the run finishes or awaits, and print its result.
    #[arg(long)]
    pub wait: bool,
    /// Give up waiting after this many seconds (exit 1).
    #[arg(long, value_name = "SECS", default_value_t = DEFAULT_WAIT_SECS, requires = "wait")]
    pub timeout: u64,
    /// Print JSON: `{"runId"}` when started, the result object with --wait.
    #[arg(long)]
    pub json: bool,
    /// Options shared by the Azure commands.
    #[command(flatten)]
    pub azure: AzureArgs,
}

async fn run(args: Args) -> Result<u8, u8> {
    let env = environment(&args.blueprints).map_err(fail(EXIT_BAD_INPUT))?;
    let blueprint = env.blueprints.get(&args.blueprint_id).ok_or_else(|| {
        fail(EXIT_BAD_INPUT)(format!(
            "no blueprint with id '{}' in {}; check the id in its JSON",
            args.blueprint_id,
            args.blueprints.display()
        ))
    })?;
    let initial = args
        .input
        .as_deref()
        .map(super::run::load_input)
        .transpose()
        .map_err(fail(EXIT_BAD_INPUT))?
        .unwrap_or_default();
    // A fresh deployment may have no queue or containers yet (creating them is safe to repeat).
    let settings = settings().map_err(fail(EXIT_FAILED))?;
    let backends = connect_provisioned(&settings, &args.azure, "the queues and containers")
        .await
        .map_err(fail(EXIT_FAILED))?;
    let client = Client::new(backends.backends, env.blueprints.clone());
    let run_id = client
        .start_run(&args.blueprint_id, initial)
        .await
        .map_err(|e| fail(EXIT_FAILED)(format!("cannot start the run: {e}")))?;
    if !args.wait {
        if args.json {
            println!("{}", serde_json::json!({ "runId": run_id }));
        } else {
            println!("{run_id}");
        }
        return Ok(EXIT_OK);
    }
    if !args.json {
        eprintln!("started run {run_id}; waiting");
    }
    let mut result = client
        .wait_for(&run_id, Duration::from_secs(args.timeout))
        .await
        .map_err(|e| fail(EXIT_FAILED)(format!("run {run_id}: {e}")))?;
    tidy(&mut result, &run_id);
    Ok(super::run::report(&result, &blueprint, args.json))
}

/// Leaves out the version pins (as `run --distributed` does) and names the run.
fn tidy(result: &mut WorkflowResult, run_id: &str) {
    result.context.remove(BLUEPRINT_ID_KEY);
    result.context.remove(BLUEPRINT_VERSION_KEY);
    result
        .context
        .entry(EXECUTION_ID_KEY)
        .or_insert_with(|| Value::String(run_id.to_string()));
}

/// Runs the subcommand and returns the process exit code.
pub fn execute(args: Args) -> u8 {
    super::logging::init(tracing::Level::WARN);
    super::block_on(run(args)).map_or_else(|code| code, |r| r.unwrap_or_else(|code| code))
}
