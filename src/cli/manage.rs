//! Run management on the fleet: `status`, `runs`, `resume`, `cancel` and `reconcile`. Each
//! reads the same environment as `worker`, takes `--trace FILE`, prints one clear error line
//! and exits 0 (done), 1 (the run failed, or Azure refused or is unreachable) or 2 (bad
//! input: arguments, unknown run or node).

use super::azure::{AzureArgs, connect_from_env, environment};
use super::ops::{ALL_PHASES, Ops, RunReport, UNKNOWN, parse_phase, report_text};
use super::{EXIT_BAD_INPUT, EXIT_FAILED, EXIT_OK};
use crate::Error;
use crate::flow::execute::BlueprintRegistry;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// The blueprint directory option of the commands that need the blueprints.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct BlueprintsArg {
    /// A directory of *.json blueprints (the ones the workers run; needed to resume, and to
    /// show a run's whole graph).
    #[arg(long, value_name = "DIR")]
    pub blueprints: Option<PathBuf>,
}

/// Connects and builds the run-management facade; the error is the exit code (message
/// printed).
pub(crate) async fn connect_ops(azure: &AzureArgs, blueprints: &BlueprintsArg) -> Result<Ops, u8> {
    let registry = match &blueprints.blueprints {
        Some(dir) => match environment(dir) {
            Ok(env) => env.blueprints.clone(),
            Err(message) => {
                eprintln!("error: {message}");
                return Err(EXIT_BAD_INPUT);
            }
        },
        None => Arc::new(BlueprintRegistry::new()),
    };
    match connect_from_env(azure).await {
        Ok((_settings, azure)) => {
            Ok(Ops::new(azure.backends, registry).with_cosmos_listing(azure.store))
        }
        Err(message) => {
            eprintln!("error: {message}");
            Err(EXIT_FAILED)
        }
    }
}

/// Prints an error line and returns its exit code (2 for input the user can fix).
pub(crate) fn fail(what: &str, e: &Error) -> u8 {
    eprintln!("error: {what}: {e}");
    match e {
        Error::InvalidInput(_) | Error::NotFound(_) => EXIT_BAD_INPUT,
        _ => EXIT_FAILED,
    }
}

/// Parses `30s`, `5m`, `1h`, `2d` or a number of seconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let (number, unit) = match text.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => text.split_at(i),
        None => (text, "s"),
    };
    let n: u64 = number
        .parse()
        .map_err(|_| format!("'{text}' is not a duration; write e.g. 30s, 5m, 1h or 2d"))?;
    let scale = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return Err(format!("unknown unit in '{text}'; use s, m, h or d")),
    };
    Ok(Duration::from_secs(n.saturating_mul(scale)))
}

/// Arguments of `status`.
#[derive(Debug, clap::Args)]
#[command(after_help = concat!(
    "Exit codes: 0 the run completed, is running or awaiting, 1 it failed, was cancelled or \
     stalled (or Azure is unreachable), 2 bad input or no such run.\n",
    "Example:\n  flowcraft-azure status 6f1c... --blueprints fixtures/blueprints --watch"))]
pub struct StatusArgs {
    /// The run id.
    #[arg(value_name = "RUN_ID")]
    pub run_id: String,
    /// Follow the run, printing it again whenever it changes, until it is no longer running.
    #[arg(long)]
    pub watch: bool,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
    /// Blueprints, for the whole graph.
    #[command(flatten)]
    pub blueprints: BlueprintsArg,
    /// Options shared by the Azure commands.
    #[command(flatten)]
    pub azure: AzureArgs,
}

fn print_report(report: &RunReport, json: bool) {
    if json {
        println!("{}", serde_json::to_string(report).unwrap_or_default());
    } else {
        print!("{}", report_text(report));
    }
}

fn report_exit(report: &RunReport) -> u8 {
    match report.status {
        "failed" | "cancelled" | "stalled" => EXIT_FAILED,
        _ => EXIT_OK,
    }
}

async fn status(args: StatusArgs) -> u8 {
    let ops = match connect_ops(&args.azure, &args.blueprints).await {
        Ok(ops) => ops,
        Err(code) => return code,
    };
    let mut last: Option<String> = None;
    loop {
        let report = match ops.report(&args.run_id).await {
            Ok(Some(report)) => report,
            Ok(None) => {
                eprintln!(
                    "error: no run with id '{}'; list runs with `runs`",
                    args.run_id
                );
                return EXIT_BAD_INPUT;
            }
            Err(e) => return fail("cannot read the run", &e),
        };
        let shown = serde_json::to_string(&report).unwrap_or_default();
        if last.as_deref() != Some(shown.as_str()) {
            if last.is_some() && !args.json {
                println!("---");
            }
            print_report(&report, args.json);
            last = Some(shown);
        }
        if !args.watch || report.status != "running" {
            return report_exit(&report);
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Arguments of `runs`.
#[derive(Debug, clap::Args)]
#[command(after_help = concat!(
    "Exit codes: 0 listed, 1 Azure refused or is unreachable, 2 bad input.\n",
    "Example:\n  flowcraft-azure runs --status failed --since 1h --limit 20"))]
pub struct RunsArgs {
    /// Only runs with this status: running, awaiting, completed, failed, cancelled, stalled.
    #[arg(long, value_name = "STATUS")]
    pub status: Option<String>,
    /// Only runs updated within this long (e.g. 30m, 1h, 2d).
    #[arg(long, value_name = "AGE")]
    pub since: Option<String>,
    /// At most this many runs, newest first.
    #[arg(long, value_name = "N", default_value_t = 50)]
    pub limit: usize,
    /// Print a JSON array.
    #[arg(long)]
    pub json: bool,
    /// Options shared by the Azure commands.
    #[command(flatten)]
    pub azure: AzureArgs,
}

async fn runs(args: RunsArgs) -> u8 {
    let phases = match args.status.as_deref().map(parse_phase).transpose() {
        Ok(Some(p)) => vec![p],
        Ok(None) => ALL_PHASES.to_vec(),
        Err(message) => {
            eprintln!("error: {message}");
            return EXIT_BAD_INPUT;
        }
    };
    let since = match args.since.as_deref().map(parse_duration).transpose() {
        Ok(age) => age.map(|a| {
            chrono::Utc::now().timestamp() - i64::try_from(a.as_secs()).unwrap_or(i64::MAX / 2)
        }),
        Err(message) => {
            eprintln!("error: {message}");
            return EXIT_BAD_INPUT;
        }
    };
    let ops = match connect_ops(&args.azure, &BlueprintsArg::default()).await {
        Ok(ops) => ops,
        Err(code) => return code,
    };
    let rows = match ops.list(&phases, since, None, args.limit).await {
        Ok(rows) => rows,
        Err(e) => return fail("cannot list the runs", &e),
    };
    if args.json {
        println!("{}", serde_json::to_string(&rows).unwrap_or_default());
        return EXIT_OK;
    }
    println!(
        "{:<36}  {:<9}  {:<20}  {:<20}  BLUEPRINT",
        "RUN", "STATUS", "STARTED", "UPDATED"
    );
    for row in &rows {
        println!(
            "{:<36}  {:<9}  {:<20}  {:<20}  {}",
            row.run_id,
            row.status,
            row.started_at.as_deref().unwrap_or(UNKNOWN),
            row.last_updated,
            row.blueprint_id.as_deref().unwrap_or("")
        );
    }
    EXIT_OK
}

/// Arguments of `resume`.
#[derive(Debug, clap::Args)]
#[command(after_help = concat!(
    "Exit codes: 0 resumed, 1 Azure refused or is unreachable, 2 bad input (no such run, \
     node not awaiting, bad JSON).\n",
    "Example:\n  flowcraft-azure resume 6f1c... --action approve --output '{\"by\":\"ada\"}' \
     --blueprints fixtures/blueprints"))]
pub struct ResumeArgs {
    /// The run id.
    #[arg(value_name = "RUN_ID")]
    pub run_id: String,
    /// The action to route on (e.g. approve).
    #[arg(long, value_name = "A")]
    pub action: String,
    /// The node's output, as JSON (default: what the node produced when it paused).
    #[arg(long, value_name = "JSON")]
    pub output: Option<String>,
    /// The awaiting node (default: the first awaiting node).
    #[arg(long, value_name = "N")]
    pub node: Option<String>,
    /// Print `{"runId","resumed":[nodes made ready]}`.
    #[arg(long)]
    pub json: bool,
    /// Blueprints (required: the resume routes through the blueprint).
    #[command(flatten)]
    pub blueprints: BlueprintsArg,
    /// Options shared by the Azure commands.
    #[command(flatten)]
    pub azure: AzureArgs,
}

async fn resume(args: ResumeArgs) -> u8 {
    let output = match args.output.as_deref().map(serde_json::from_str).transpose() {
        Ok(output) => output,
        Err(e) => {
            eprintln!("error: --output is not JSON: {e}");
            return EXIT_BAD_INPUT;
        }
    };
    if args.blueprints.blueprints.is_none() {
        eprintln!("error: resume needs --blueprints DIR (the blueprints the workers run)");
        return EXIT_BAD_INPUT;
    }
    let ops = match connect_ops(&args.azure, &args.blueprints).await {
        Ok(ops) => ops,
        Err(code) => return code,
    };
    match ops
        .resume(
            &args.run_id,
            args.node.as_deref(),
            Some(args.action),
            output,
        )
        .await
    {
        Ok(work) => {
            let ready: Vec<&str> = work.iter().map(|w| w.node.as_str()).collect();
            if args.json {
                println!(
                    "{}",
                    serde_json::json!({"runId": args.run_id, "ready": ready})
                );
            } else {
                println!("resumed run {}; ready: {}", args.run_id, ready.join(", "));
            }
            EXIT_OK
        }
        Err(e) => fail("cannot resume", &e),
    }
}

/// Arguments of `cancel`.
#[derive(Debug, clap::Args)]
#[command(after_help = concat!(
    "Exit codes: 0 cancelled (or already finished: it says so), 1 Azure refused or is \
     unreachable, 2 no such run.\n",
    "Example:\n  flowcraft-azure cancel 6f1c... --reason \"duplicate order\""))]
pub struct CancelArgs {
    /// The run id.
    #[arg(value_name = "RUN_ID")]
    pub run_id: String,
    /// Why (logged).
    #[arg(long, value_name = "R")]
    pub reason: Option<String>,
    /// Print `{"runId","cancelled":bool}`.
    #[arg(long)]
    pub json: bool,
    /// Options shared by the Azure commands.
    #[command(flatten)]
    pub azure: AzureArgs,
}

async fn cancel(args: CancelArgs) -> u8 {
    let ops = match connect_ops(&args.azure, &BlueprintsArg::default()).await {
        Ok(ops) => ops,
        Err(code) => return code,
    };
    match ops.cancel(&args.run_id, args.reason.as_deref()).await {
        Ok(changed) => {
            if args.json {
                println!(
                    "{}",
                    serde_json::json!({"runId": args.run_id, "cancelled": changed})
                );
            } else if changed {
                println!("cancelled run {}", args.run_id);
            } else {
                println!("run {} had already finished; nothing changed", args.run_id);
            }
            EXIT_OK
        }
        Err(e) => fail("cannot cancel", &e),
    }
}

/// Arguments of `reconcile`.
#[derive(Debug, clap::Args)]
#[command(after_help = concat!(
    "Exit codes: 0 done, 1 Azure refused or is unreachable, 2 bad input.\n",
    "Example:\n  flowcraft-azure reconcile --stalled-after 5m --dry-run --blueprints fixtures/blueprints"))]
pub struct ReconcileArgs {
    /// A running run whose status has not changed for this long is stalled (e.g. 90s, 5m).
    #[arg(long, value_name = "AGE", default_value = "5m")]
    pub stalled_after: String,
    /// Only list the stalled runs.
    #[arg(long)]
    pub dry_run: bool,
    /// Print a JSON array `[{"runId","requeued":[nodes]}]`.
    #[arg(long)]
    pub json: bool,
    /// Blueprints (a run no job touched yet needs its blueprint to start again).
    #[command(flatten)]
    pub blueprints: BlueprintsArg,
    /// Options shared by the Azure commands.
    #[command(flatten)]
    pub azure: AzureArgs,
}

async fn reconcile(args: ReconcileArgs) -> u8 {
    let age = match parse_duration(&args.stalled_after) {
        Ok(age) => age,
        Err(message) => {
            eprintln!("error: {message}");
            return EXIT_BAD_INPUT;
        }
    };
    let ops = match connect_ops(&args.azure, &args.blueprints).await {
        Ok(ops) => ops,
        Err(code) => return code,
    };
    let before =
        chrono::Utc::now().timestamp() - i64::try_from(age.as_secs()).unwrap_or(i64::MAX / 2);
    let stalled = match ops
        .list(
            &[crate::distributed::ports::RunPhase::Running],
            None,
            Some(before),
            10_000,
        )
        .await
    {
        Ok(rows) => rows,
        Err(e) => return fail("cannot list the running runs", &e),
    };
    let mut out = Vec::new();
    let mut code = EXIT_OK;
    for row in &stalled {
        if args.dry_run {
            out.push(serde_json::json!({"runId": row.run_id, "lastUpdated": row.last_updated}));
            if !args.json {
                println!("stalled {} (updated {})", row.run_id, row.last_updated);
            }
            continue;
        }
        match ops.reconcile(&row.run_id).await {
            Ok(work) => {
                let nodes: Vec<&str> = work.iter().map(|w| w.node.as_str()).collect();
                if !args.json {
                    println!("reconciled {}: requeued {}", row.run_id, nodes.join(", "));
                }
                out.push(serde_json::json!({"runId": row.run_id, "requeued": nodes}));
            }
            Err(e) => {
                eprintln!("error: cannot reconcile run {}: {e}", row.run_id);
                code = EXIT_FAILED;
            }
        }
    }
    if args.json {
        println!("{}", serde_json::Value::Array(out));
    } else if stalled.is_empty() {
        println!("no stalled runs");
    }
    code
}

fn run<F: std::future::Future<Output = u8>>(future: F) -> u8 {
    super::logging::init(tracing::Level::WARN);
    super::block_on(future).unwrap_or_else(|code| code)
}

/// Runs `status`.
pub fn execute_status(args: StatusArgs) -> u8 {
    run(status(args))
}

/// Runs `runs`.
pub fn execute_runs(args: RunsArgs) -> u8 {
    run(runs(args))
}

/// Runs `resume`.
pub fn execute_resume(args: ResumeArgs) -> u8 {
    run(resume(args))
}

/// Runs `cancel`.
pub fn execute_cancel(args: CancelArgs) -> u8 {
    run(cancel(args))
}

/// Runs `reconcile`.
pub fn execute_reconcile(args: ReconcileArgs) -> u8 {
    run(reconcile(args))
}

#[cfg(test)]
mod tests {
    use super::parse_duration;
    use std::time::Duration;

    #[test]
    fn durations_take_units_and_plain_seconds() {
        assert_eq!(parse_duration("90").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_duration("5m").unwrap(), Duration::from_secs(300));
        assert_eq!(parse_duration("1h").unwrap(), Duration::from_secs(3600));
        assert!(parse_duration("5y").is_err());
        assert!(parse_duration("m").is_err());
    }
}
