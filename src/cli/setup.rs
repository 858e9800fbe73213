//! `flowcraft-azure setup [--check] [--ttl-days N] [--throughput RU | --autoscale-max RU]`:
//! creates what a deployment needs (the queue and `<queue>-poison`, the database, the context
//! and status containers partitioned by `/runId` with the indexing the worker wants), safe to
//! run again; `--check` verifies an existing deployment and changes nothing.

use super::azure::{AzureArgs, settings, transport};
use super::{EXIT_BAD_INPUT, EXIT_FAILED, EXIT_OK};
use crate::Error;
use crate::adapter::provisioning::{Offer, Provisioner};
use crate::adapter::{AzureBackends, connect};
use crate::azure::queue::QueueClient;
use serde_json::json;

/// Arguments of `setup`.
#[derive(Debug, clap::Args)]
#[command(after_help = concat!(
    "--ttl-days sets the containers' default TTL: a run whose items were not written for N \
     days is deleted, finished or not; choose N longer than your longest wait. --ttl-days 0 \
     removes it.\n",
    "--throughput / --autoscale-max apply to containers this command creates (real Azure; \
     existing containers keep their offer).\n",
    "Exit codes: 0 done (with --check: no problem found), 1 problems found or Azure refused \
     or is unreachable, 2 bad input.\n",
    "Examples:\n  flowcraft-azure setup --ttl-days 30\n  flowcraft-azure setup --check"))]
pub struct Args {
    /// Verify the deployment and report problems without changing anything.
    #[arg(long, conflicts_with_all = ["ttl_days", "throughput", "autoscale_max"])]
    pub check: bool,
    /// Default time to live of run items, in days (0 removes it).
    #[arg(long, value_name = "N")]
    pub ttl_days: Option<u32>,
    /// Manual throughput (RU/s) for containers created now.
    #[arg(long, value_name = "RU", conflicts_with = "autoscale_max")]
    pub throughput: Option<u32>,
    /// Autoscale maximum throughput (RU/s) for containers created now.
    #[arg(long, value_name = "RU")]
    pub autoscale_max: Option<u32>,
    /// Print `{"ok", "changes"|"problems", "checked"}` as JSON.
    #[arg(long)]
    pub json: bool,
    /// Options shared by the Azure commands.
    #[command(flatten)]
    pub azure: AzureArgs,
}

async fn queue_exists(queue: &QueueClient) -> Result<bool, Error> {
    match queue.metadata().await {
        Ok(_) => Ok(true),
        Err(Error::NotFound(_)) => Ok(false),
        Err(e) => Err(e),
    }
}

async fn check(
    backends: &AzureBackends,
    provisioner: &Provisioner,
    as_json: bool,
) -> Result<u8, Error> {
    let mut problems = Vec::new();
    let mut checked = Vec::new();
    for queue in [backends.queue.client(), backends.queue.poison_client()] {
        if queue_exists(queue).await? {
            checked.push(format!("queue '{}' exists", queue.name()));
        } else {
            problems.push(format!("queue '{}' is missing (run `setup`)", queue.name()));
        }
    }
    let (cosmos_problems, cosmos_checked) = provisioner.check().await?;
    problems.extend(cosmos_problems);
    checked.extend(cosmos_checked);
    if as_json {
        println!(
            "{}",
            json!({"ok": problems.is_empty(), "problems": problems, "checked": checked})
        );
    } else {
        for line in &checked {
            println!("ok       {line}");
        }
        for line in &problems {
            println!("PROBLEM  {line}");
        }
    }
    Ok(if problems.is_empty() {
        EXIT_OK
    } else {
        EXIT_FAILED
    })
}

async fn provision(
    args: &Args,
    backends: &AzureBackends,
    provisioner: &Provisioner,
) -> Result<Vec<String>, Error> {
    let mut changes = Vec::new();
    let offer = match (args.throughput, args.autoscale_max) {
        (Some(ru), _) => Some(Offer::Manual(ru)),
        (None, Some(max)) => Some(Offer::Autoscale(max)),
        (None, None) => None,
    };
    if let Some(offer) = offer {
        // The database first, then the containers with their offer.
        changes.extend(backends.queue.ensure_resources().await?);
        changes.extend(provisioner.ensure_database().await?);
        changes.extend(provisioner.create_with_offer(offer).await?);
    }
    changes.extend(backends.ensure_resources().await?);
    if let Some(days) = args.ttl_days {
        let ttl = (days > 0).then(|| days.saturating_mul(86_400));
        changes.extend(provisioner.set_default_ttl(ttl).await?);
    }
    Ok(changes)
}

async fn run(args: Args) -> u8 {
    let settings = match settings() {
        Ok(s) => s,
        Err(message) => {
            eprintln!("error: {message}");
            return EXIT_BAD_INPUT;
        }
    };
    let http = match transport(&settings, &args.azure) {
        Ok(t) => t,
        Err(message) => {
            eprintln!("error: {message}");
            return EXIT_FAILED;
        }
    };
    let provisioner = match Provisioner::new(&settings, http.clone()) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("error: {e}");
            return EXIT_BAD_INPUT;
        }
    };
    let backends = match connect(&settings, http).await {
        Ok(backends) => backends,
        Err(e) => {
            eprintln!("error: cannot connect: {e}");
            return EXIT_FAILED;
        }
    };
    if args.check {
        return match check(&backends, &provisioner, args.json).await {
            Ok(code) => code,
            Err(e) => {
                eprintln!("error: cannot check the deployment: {e}");
                EXIT_FAILED
            }
        };
    }
    match provision(&args, &backends, &provisioner).await {
        Ok(changes) => {
            if args.json {
                println!("{}", json!({"ok": true, "changes": changes}));
            } else if changes.is_empty() {
                println!("everything exists already; nothing changed");
            } else {
                for line in changes {
                    println!("{line}");
                }
            }
            EXIT_OK
        }
        Err(e) => {
            eprintln!("error: setup failed: {e}");
            EXIT_FAILED
        }
    }
}

/// Runs the subcommand and returns the process exit code.
pub fn execute(args: Args) -> u8 {
    super::logging::init(tracing::Level::WARN);
    super::block_on(run(args)).unwrap_or_else(|code| code)
}
