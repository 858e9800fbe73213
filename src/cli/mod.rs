//! The `flowcraft-azure` command line: one file per subcommand.
//!
//! Exit codes: 0 success (a run completed or is awaiting), 1 the run failed, 2 bad input
//! (unreadable or invalid blueprint, bad arguments).

use clap::{Parser, Subcommand};
use std::process::ExitCode;

pub mod azure;
pub mod bench;
pub mod demo;
pub mod http_api;
pub mod inspect;
pub mod logging;
pub mod manage;
pub mod ops;
pub mod queue;
pub mod run;
pub mod run_distributed;
pub mod serve;
pub mod setup;
pub mod submit;
pub mod validate;
pub mod web_page;
pub mod worker;

/// Run Flowcraft workflow blueprints in-process or on Azure.
#[derive(Debug, Parser)]
#[command(
    name = "flowcraft-azure",
    version,
    about,
    after_help = "Exit codes: 0 success (a run completed or is awaiting), 1 failure (a run \
                  failed, or Azure refused or is unreachable), 2 bad input (arguments, files, \
                  unknown run). Logs go to stderr; RUST_LOG=debug shows more.\n\
                  Start here:\n  flowcraft-azure demo\n  flowcraft-azure serve --memory"
)]
pub struct Cli {
    /// More log detail on stderr (-v info, -vv debug, -vvv trace); RUST_LOG wins when set.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// The subcommand.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the demo workflow on 4 in-process workers and show live progress (start here).
    Demo(demo::Args),
    /// Check a blueprint file; prints nothing and exits 0 when it is valid.
    Validate(validate::Args),
    /// Show a blueprint's start and terminal nodes, joins and Mermaid diagram.
    Inspect(inspect::Args),
    /// Run a blueprint with the built-in and utility nodes and print the result.
    Run(run::Args),
    /// Run a worker of the fleet on Azure Queue Storage, Cosmos DB and Redis.
    Worker(worker::Args),
    /// Start a run on the fleet (and optionally wait for its result).
    Submit(submit::Args),
    /// Measure requests, memory and latency of a workload (worker processes on Azure, or --memory).
    Bench(bench::Args),
    /// Create the queues, database and containers (safe to run twice); --check verifies them.
    Setup(setup::Args),
    /// Show one run: status, nodes done and pending, awaiting nodes, errors (--watch follows it).
    Status(manage::StatusArgs),
    /// List runs as a table (filter by status and age).
    Runs(manage::RunsArgs),
    /// Resume an awaiting node of a run with an action (and output).
    Resume(manage::ResumeArgs),
    /// Cancel a run.
    Cancel(manage::CancelArgs),
    /// Re-enqueue the recorded outstanding work of stalled runs.
    Reconcile(manage::ReconcileArgs),
    /// Look at the job queue: message counts, the next jobs.
    Queue(queue::QueueArgs),
    /// Care for poisoned jobs: list, requeue, purge.
    Poison(queue::PoisonArgs),
    /// Serve the HTTP management API and the run view (GET /).
    Serve(serve::Args),
}

/// Exit code for success.
pub const EXIT_OK: u8 = 0;
/// Exit code for a failed run.
pub const EXIT_FAILED: u8 = 1;
/// Exit code for bad input.
pub const EXIT_BAD_INPUT: u8 = 2;

/// For `?` in a command body that returns `Result<u8, u8>`: prints `error: <message>` on
/// stderr and turns the error into the exit code `code`.
pub(crate) fn fail(code: u8) -> impl FnOnce(String) -> u8 {
    move |message| {
        eprintln!("error: {message}");
        code
    }
}

/// Runs `future` to completion on a fresh multi-threaded tokio runtime; if the runtime cannot
/// start, prints why and returns [`EXIT_FAILED`] as the error.
pub(crate) fn block_on<F: std::future::Future>(future: F) -> Result<F::Output, u8> {
    match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => Ok(runtime.block_on(future)),
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            Err(EXIT_FAILED)
        }
    }
}

/// Parses the process arguments and runs the chosen subcommand.
pub fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let code = if e.use_stderr() {
                EXIT_BAD_INPUT
            } else {
                EXIT_OK
            };
            let _ = e.print();
            return ExitCode::from(code);
        }
    };
    logging::set_verbosity(cli.verbose);
    let code = match cli.command {
        Command::Demo(args) => demo::execute(args),
        Command::Validate(args) => validate::execute(args),
        Command::Inspect(args) => inspect::execute(args),
        Command::Run(args) => run::execute(args),
        Command::Worker(args) => worker::execute(args),
        Command::Submit(args) => submit::execute(args),
        Command::Bench(args) => bench::execute(args),
        Command::Setup(args) => setup::execute(args),
        Command::Status(args) => manage::execute_status(args),
        Command::Runs(args) => manage::execute_runs(args),
        Command::Resume(args) => manage::execute_resume(args),
        Command::Cancel(args) => manage::execute_cancel(args),
        Command::Reconcile(args) => manage::execute_reconcile(args),
        Command::Serve(args) => serve::execute(args),
        Command::Queue(args) => queue::execute_queue(args),
        Command::Poison(args) => queue::execute_poison(args),
    };
    ExitCode::from(code)
}
