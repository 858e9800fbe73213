//! `flowcraft-azure worker --blueprints DIR [--concurrency N] [--trace FILE]`: one worker
//! process of the fleet. It reads the connection settings from the environment, creates the
//! queue, the poison queue, the database and the containers when they are missing (and says
//! what it created), then runs the blueprints of DIR with the built-in and utility nodes until
//! SIGINT or SIGTERM, when it stops receiving and finishes or releases the jobs in flight.

use super::azure::{AzureArgs, connect_from_env, environment};
use super::{EXIT_BAD_INPUT, EXIT_FAILED, EXIT_OK, fail};
use crate::adapter::AzureQueueAdapter;
use crate::distributed::polling::shutdown_on_signals;
use std::path::PathBuf;

/// Arguments of `worker`.
#[derive(Debug, clap::Args)]
#[command(
    after_help = "Environment: AZURE_STORAGE_CONNECTION_STRING, COSMOS_CONNECTION_STRING, \
                        REDIS_URL (optional), FLOWCRAFT_QUEUE, ... (see README).\n\
                        Exit codes: 0 stopped by a signal, 1 cannot connect or run, 2 bad input.\n\
                        Example (local stack):\n  \
                        eval \"$(scripts/emulators.sh env)\"\n  \
                        flowcraft-azure worker --blueprints fixtures/blueprints"
)]
pub struct Args {
    /// A directory of *.json blueprints this worker runs.
    #[arg(long, value_name = "DIR")]
    pub blueprints: PathBuf,
    /// Jobs run at once by this worker (overrides FLOWCRAFT_CONCURRENCY).
    #[arg(long, value_name = "N")]
    pub concurrency: Option<usize>,
    /// Options shared by the Azure commands.
    #[command(flatten)]
    pub azure: AzureArgs,
}

async fn run(args: Args) -> Result<u8, u8> {
    let env = environment(&args.blueprints).map_err(fail(EXIT_BAD_INPUT))?;
    let (mut settings, backends) = connect_from_env(&args.azure)
        .await
        .map_err(fail(EXIT_FAILED))?;
    if let Some(n) = args.concurrency.filter(|n| *n > 0) {
        settings.concurrency = n;
    }
    let created = backends
        .ensure_resources()
        .await
        .map_err(|e| fail(EXIT_FAILED)(format!("cannot create the queues and containers: {e}")))?;
    for line in created {
        eprintln!("{line}");
    }
    let shutdown = shutdown_on_signals().map_err(|e| fail(EXIT_FAILED)(e.to_string()))?;
    tracing::info!(
        queue = %settings.queue,
        database = %settings.database,
        concurrency = settings.concurrency,
        redis = settings.redis_url.is_some(),
        reconciler = settings.reconciler,
        "worker started"
    );
    let adapter = AzureQueueAdapter::new(env, backends, &settings);
    adapter
        .run(shutdown)
        .await
        .map_err(|e| fail(EXIT_FAILED)(e.to_string()))?;
    tracing::info!("worker stopped");
    Ok(EXIT_OK)
}

/// Runs the subcommand and returns the process exit code.
pub fn execute(args: Args) -> u8 {
    super::logging::init(tracing::Level::INFO);
    super::block_on(run(args)).map_or_else(|code| code, |r| r.unwrap_or_else(|code| code))
}
