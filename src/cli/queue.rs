//! `queue stats`, `queue peek [-n N]`, `poison list`, `poison requeue [MESSAGE_ID|--all]`
//! and `poison purge --yes`: a look at the job queue and the care of `<queue>-poison`, whose
//! messages are JSON envelopes `{reason, id, dequeueCount, at, queue, text}` around the job.

use super::azure::{AzureArgs, connect_from_env};
use super::{EXIT_BAD_INPUT, EXIT_FAILED, EXIT_OK};
use crate::Error;
use crate::adapter::AzureBackends;
use crate::azure::queue::{MessageCount, MessageTtl, PutOptions, QueueClient, VisibilityTimeout};
use crate::distributed::job::JobMessage;
use serde_json::{Value, json};

/// How long `poison requeue` holds the poison messages it looks at.
const HOLD_SECS: u32 = 30;

/// Arguments of `queue`.
#[derive(Debug, clap::Args)]
pub struct QueueArgs {
    /// What to do.
    #[command(subcommand)]
    pub command: QueueCommand,
}

/// The `queue` subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum QueueCommand {
    /// Approximate message counts of the job queue and its poison queue.
    #[command(
        after_help = "Exit codes: 0 done, 1 Azure refused or is unreachable.\n\
                            Example:\n  flowcraft-azure queue stats --json"
    )]
    Stats(StatsArgs),
    /// Show the next visible jobs without taking them.
    #[command(
        after_help = "Exit codes: 0 done, 1 Azure refused or is unreachable, 2 bad input.\n\
                            Example:\n  flowcraft-azure queue peek -n 10"
    )]
    Peek(PeekArgs),
}

/// Arguments of `queue stats`.
#[derive(Debug, clap::Args)]
pub struct StatsArgs {
    /// Print `{"queue":{"name","approximateMessages"},"poison":{...}}`.
    #[arg(long)]
    pub json: bool,
    /// Options shared by the Azure commands.
    #[command(flatten)]
    pub azure: AzureArgs,
}

/// Arguments of `queue peek`.
#[derive(Debug, clap::Args)]
pub struct PeekArgs {
    /// How many (1 to 32).
    #[arg(short = 'n', value_name = "N", default_value_t = 10)]
    pub count: u32,
    /// Print a JSON array.
    #[arg(long)]
    pub json: bool,
    /// Options shared by the Azure commands.
    #[command(flatten)]
    pub azure: AzureArgs,
}

/// Arguments of `poison`.
#[derive(Debug, clap::Args)]
pub struct PoisonArgs {
    /// What to do.
    #[command(subcommand)]
    pub command: PoisonCommand,
}

/// The `poison` subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum PoisonCommand {
    /// List the poisoned jobs (up to 32 visible ones) with why they were poisoned.
    #[command(
        after_help = "Exit codes: 0 done, 1 Azure refused or is unreachable.\n\
                            Example:\n  flowcraft-azure poison list"
    )]
    List(PoisonListArgs),
    /// Put poisoned jobs back on the job queue (one by its poison message id, or all).
    #[command(
        after_help = "A job whose run was already marked failed is dropped again by the \
                            workers (finished runs are sticky); requeue is for jobs that failed \
                            for a reason you fixed (a blueprint deployed, a bug fixed).\n\
                            Exit codes: 0 done, 1 Azure refused or is unreachable, 2 bad input \
                            or no such message.\n\
                            Example:\n  flowcraft-azure poison requeue --all"
    )]
    Requeue(RequeueArgs),
    /// Delete every message of the poison queue (needs --yes).
    #[command(
        after_help = "Exit codes: 0 done, 1 Azure refused or is unreachable, 2 without --yes.\n\
                            Example:\n  flowcraft-azure poison purge --yes"
    )]
    Purge(PurgeArgs),
}

/// Arguments of `poison list`.
#[derive(Debug, clap::Args)]
pub struct PoisonListArgs {
    /// Print a JSON array.
    #[arg(long)]
    pub json: bool,
    /// Options shared by the Azure commands.
    #[command(flatten)]
    pub azure: AzureArgs,
}

/// Arguments of `poison requeue`.
#[derive(Debug, clap::Args)]
pub struct RequeueArgs {
    /// The poison message id (as `poison list` shows it).
    #[arg(
        value_name = "MESSAGE_ID",
        required_unless_present = "all",
        conflicts_with = "all"
    )]
    pub message_id: Option<String>,
    /// Requeue every poisoned job.
    #[arg(long)]
    pub all: bool,
    /// Options shared by the Azure commands.
    #[command(flatten)]
    pub azure: AzureArgs,
}

/// Arguments of `poison purge`.
#[derive(Debug, clap::Args)]
pub struct PurgeArgs {
    /// Confirm the deletion.
    #[arg(long)]
    pub yes: bool,
    /// Options shared by the Azure commands.
    #[command(flatten)]
    pub azure: AzureArgs,
}

async fn connect(azure: &AzureArgs) -> Result<AzureBackends, u8> {
    match connect_from_env(azure).await {
        Ok((_, backends)) => Ok(backends),
        Err(message) => {
            eprintln!("error: {message}");
            Err(EXIT_FAILED)
        }
    }
}

fn failed(what: &str, e: &Error) -> u8 {
    eprintln!("error: {what}: {e}");
    EXIT_FAILED
}

/// The job in a message text, as JSON (`null` when it is not a job).
fn job_json(text: &str) -> Value {
    JobMessage::decode(text)
        .ok()
        .and_then(|job| serde_json::to_value(job).ok())
        .unwrap_or(Value::Null)
}

fn job_summary(job: &Value) -> String {
    match job {
        Value::Object(o) => format!(
            "run {} node {}",
            o.get("runId").and_then(Value::as_str).unwrap_or("?"),
            o.get("nodeId").and_then(Value::as_str).unwrap_or("?")
        ),
        _ => "(not a job)".to_string(),
    }
}

async fn count(queue: &QueueClient) -> Result<Value, Error> {
    let props = queue.metadata().await?;
    Ok(json!({"name": queue.name(), "approximateMessages": props.approximate_message_count}))
}

async fn stats(args: StatsArgs) -> u8 {
    let backends = match connect(&args.azure).await {
        Ok(b) => b,
        Err(code) => return code,
    };
    let (queue, poison) = match (
        count(backends.queue.client()).await,
        count(backends.queue.poison_client()).await,
    ) {
        (Ok(q), Ok(p)) => (q, p),
        (Err(e), _) | (_, Err(e)) => return failed("cannot read the queue counts", &e),
    };
    if args.json {
        println!("{}", json!({"queue": queue, "poison": poison}));
    } else {
        for (label, v) in [("queue ", &queue), ("poison", &poison)] {
            println!(
                "{label}  {:<40}  ~{} messages",
                v["name"].as_str().unwrap_or(""),
                v["approximateMessages"]
            );
        }
    }
    EXIT_OK
}

async fn peek(args: PeekArgs) -> u8 {
    let Ok(n) = MessageCount::new(args.count) else {
        eprintln!("error: -n must be between 1 and 32");
        return EXIT_BAD_INPUT;
    };
    let backends = match connect(&args.azure).await {
        Ok(b) => b,
        Err(code) => return code,
    };
    let messages = match backends.queue.client().peek_messages(n).await {
        Ok(m) => m,
        Err(e) => return failed("cannot peek at the queue", &e),
    };
    let rows: Vec<Value> = messages
        .iter()
        .map(|m| {
            json!({
                "id": m.id,
                "dequeueCount": m.dequeue_count,
                "inserted": m.insertion_time.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                "job": job_json(&m.text),
            })
        })
        .collect();
    if args.json {
        println!("{}", Value::Array(rows));
    } else if rows.is_empty() {
        println!("no visible messages");
    } else {
        for row in &rows {
            println!(
                "{}  dequeued {}  {}  {}",
                row["id"].as_str().unwrap_or(""),
                row["dequeueCount"],
                row["inserted"].as_str().unwrap_or(""),
                job_summary(&row["job"])
            );
        }
    }
    EXIT_OK
}

async fn poison_list(args: PoisonListArgs) -> u8 {
    let backends = match connect(&args.azure).await {
        Ok(b) => b,
        Err(code) => return code,
    };
    let messages = match MessageCount::new(32) {
        Ok(n) => backends.queue.poison_client().peek_messages(n).await,
        Err(e) => Err(e),
    };
    let messages = match messages {
        Ok(m) => m,
        Err(e) => return failed("cannot peek at the poison queue", &e),
    };
    let rows: Vec<Value> = messages
        .iter()
        .map(|m| {
            let envelope: Value = serde_json::from_str(&m.text).unwrap_or(Value::Null);
            let text = envelope["text"].as_str().unwrap_or(&m.text);
            json!({
                "id": m.id,
                "reason": envelope["reason"],
                "poisonedAt": envelope["at"],
                "dequeueCount": envelope["dequeueCount"],
                "job": job_json(text),
            })
        })
        .collect();
    if args.json {
        println!("{}", Value::Array(rows));
    } else if rows.is_empty() {
        println!("the poison queue is empty");
    } else {
        for row in &rows {
            println!(
                "{}  {}  {}",
                row["id"].as_str().unwrap_or(""),
                job_summary(&row["job"]),
                row["reason"].as_str().unwrap_or("")
            );
        }
    }
    EXIT_OK
}

/// Moves poisoned jobs back to the job queue; returns how many were requeued.
async fn requeue_matching(backends: &AzureBackends, id: Option<&str>) -> Result<usize, Error> {
    let poison = backends.queue.poison_client();
    let queue = backends.queue.client();
    let hold = VisibilityTimeout::from_secs(HOLD_SECS)?;
    let batch = MessageCount::new(32)?;
    let mut requeued = 0;
    let mut held = Vec::new();
    loop {
        let messages = poison.get_messages(batch, hold).await?;
        if messages.is_empty() {
            break;
        }
        for m in messages {
            let done_with_the_one = id.is_some() && requeued > 0;
            if done_with_the_one || id.is_some_and(|id| id != m.id) {
                held.push(m);
                continue;
            }
            let envelope: Value = serde_json::from_str(&m.text).unwrap_or(Value::Null);
            let text = match envelope["text"].as_str() {
                Some(_) if envelope["truncated"] == json!(true) => {
                    eprintln!("skipped {}: its job text was truncated when poisoned", m.id);
                    held.push(m);
                    continue;
                }
                Some(text) => text.to_string(),
                None => m.text.clone(),
            };
            // Jobs live until processed (as the workers send them).
            let options = PutOptions {
                visibility_delay: None,
                ttl: Some(MessageTtl::Never),
            };
            queue.put_message(&text, options).await?;
            poison.delete_message(&m.id, &m.pop_receipt).await?;
            println!("requeued {} ({})", m.id, job_summary(&job_json(&text)));
            requeued += 1;
        }
        if id.is_some() && requeued > 0 {
            break;
        }
    }
    // Give back what we looked at but did not requeue.
    let now = VisibilityTimeout::from_secs(0)?;
    for m in held {
        let _ = poison
            .update_message(&m.id, &m.pop_receipt, now, None)
            .await;
    }
    Ok(requeued)
}

async fn requeue(args: RequeueArgs) -> u8 {
    let backends = match connect(&args.azure).await {
        Ok(b) => b,
        Err(code) => return code,
    };
    let id = if args.all {
        None
    } else {
        args.message_id.as_deref()
    };
    match requeue_matching(&backends, id).await {
        Ok(0) if id.is_some() => {
            eprintln!(
                "error: no visible poison message with id '{}'; see `poison list`",
                id.unwrap_or_default()
            );
            EXIT_BAD_INPUT
        }
        Ok(n) => {
            println!("{n} job(s) requeued");
            EXIT_OK
        }
        Err(e) => failed("cannot requeue", &e),
    }
}

async fn purge(args: PurgeArgs) -> u8 {
    if !args.yes {
        eprintln!("error: purge deletes every poisoned job; add --yes to confirm");
        return EXIT_BAD_INPUT;
    }
    let backends = match connect(&args.azure).await {
        Ok(b) => b,
        Err(code) => return code,
    };
    let poison = backends.queue.poison_client();
    match poison.clear().await {
        Ok(()) => {
            println!("purged {}", poison.name());
            EXIT_OK
        }
        Err(e) => failed("cannot purge the poison queue", &e),
    }
}

fn run<F: std::future::Future<Output = u8>>(future: F) -> u8 {
    super::logging::init(tracing::Level::WARN);
    super::block_on(future).unwrap_or_else(|code| code)
}

/// Runs `queue ...`.
pub fn execute_queue(args: QueueArgs) -> u8 {
    match args.command {
        QueueCommand::Stats(a) => run(stats(a)),
        QueueCommand::Peek(a) => run(peek(a)),
    }
}

/// Runs `poison ...`.
pub fn execute_poison(args: PoisonArgs) -> u8 {
    match args.command {
        PoisonCommand::List(a) => run(poison_list(a)),
        PoisonCommand::Requeue(a) => run(requeue(a)),
        PoisonCommand::Purge(a) => run(purge(a)),
    }
}
