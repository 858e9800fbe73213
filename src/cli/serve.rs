//! `flowcraft-azure serve [--listen ADDR] [--blueprints DIR] [--memory [--workers W]]`: the
//! HTTP management API and the run view (see [`super::http_api`]). On Azure it serves the
//! fleet's runs (workers run elsewhere); with `--memory` it runs its own in-process workers
//! over the embedded in-memory backend (tests, demos). It prints `listening on http://ADDR`
//! once it accepts connections and stops on SIGINT/SIGTERM.

use super::azure::{AzureArgs, connect_from_env, environment};
use super::demo::{demo_blueprint, demo_environment};
use super::http_api::Api;
use super::ops::Ops;
use super::{EXIT_BAD_INPUT, EXIT_FAILED, EXIT_OK};
use crate::distributed::core::Backends;
use crate::distributed::polling::shutdown_on_signals;
use crate::distributed::worker::{Worker, WorkerConfig};
use crate::flow::execute::Environment;
use hyper_util::rt::TokioIo;
use std::convert::Infallible;
use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// The environment variable holding the bearer token for `POST` requests.
pub const TOKEN_VAR: &str = "FLOWCRAFT_API_TOKEN";

/// Arguments of `serve`.
#[derive(Debug, clap::Args)]
#[command(after_help = concat!(
    "Endpoints: POST /runs {blueprintId, input}, GET /runs?status=, GET /runs/{id}, \
     POST /runs/{id}/resume {action, node?, output?}, POST /runs/{id}/cancel, GET /healthz, \
     GET / (the run view).\n",
    "POST requests need 'Authorization: Bearer $FLOWCRAFT_API_TOKEN' when the variable is set; \
     without it they are allowed only on a loopback address.\n",
    "Exit codes: 0 stopped by a signal, 1 cannot listen or connect, 2 bad input.\n",
    "Example:\n  flowcraft-azure serve --memory --blueprints fixtures/blueprints --listen 127.0.0.1:8080"))]
pub struct Args {
    /// The address to listen on.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// A directory of *.json blueprints (the ones the workers run).
    #[arg(long, value_name = "DIR")]
    pub blueprints: Option<PathBuf>,
    /// Serve the embedded in-memory backend with in-process workers (the demo blueprint is
    /// always loaded).
    #[arg(long)]
    pub memory: bool,
    /// In-process workers with --memory.
    #[arg(long, value_name = "W", default_value_t = 4, requires = "memory")]
    pub workers: usize,
    /// Options shared by the Azure commands.
    #[command(flatten)]
    pub azure: AzureArgs,
}

fn blueprints_env(args: &Args) -> Result<Environment, String> {
    let env = match &args.blueprints {
        Some(dir) => environment(dir)?,
        None => demo_environment(demo_blueprint()?),
    };
    if args.memory && env.blueprints.get("demo-order").is_none() {
        let mut registry = (*env.blueprints).clone();
        registry.insert(demo_blueprint()?);
        return Ok(env.with_blueprints(registry));
    }
    Ok(env)
}

/// Starts `workers` in-process worker loops over `backends`.
fn spawn_workers(
    env: &Environment,
    backends: &Backends,
    workers: usize,
    shutdown: &CancellationToken,
) {
    let config = WorkerConfig {
        idle_backoff_max: Duration::from_millis(50),
        ..WorkerConfig::default()
    };
    for _ in 0..workers.max(1) {
        let worker = Worker::new(env.clone(), backends.clone(), config.clone());
        tokio::spawn(Arc::new(worker).run(shutdown.clone()));
    }
}

/// Accepts connections on `listener` and answers them with `api` until `shutdown`.
pub async fn serve(listener: TcpListener, api: Api, shutdown: CancellationToken) {
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = shutdown.cancelled() => return,
        };
        let api = api.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req| {
                let api = api.clone();
                async move { Ok::<_, Infallible>(api.handle(req).await) }
            });
            if let Err(e) = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await
            {
                tracing::debug!(error = %e, "connection ended with an error");
            }
        });
    }
}

async fn run(args: Args) -> u8 {
    let env = match blueprints_env(&args) {
        Ok(env) => env,
        Err(message) => {
            eprintln!("error: {message}");
            return EXIT_BAD_INPUT;
        }
    };
    let shutdown = match shutdown_on_signals() {
        Ok(token) => token,
        Err(e) => {
            eprintln!("error: {e}");
            return EXIT_FAILED;
        }
    };
    let (backends, cosmos) = if args.memory {
        let backends = Backends::in_memory();
        spawn_workers(&env, &backends, args.workers, &shutdown);
        (backends, None)
    } else {
        match connect_from_env(&args.azure).await {
            Ok((_settings, azure)) => {
                if let Err(e) = azure.ensure_resources().await {
                    eprintln!("error: cannot create the queues and containers: {e}");
                    return EXIT_FAILED;
                }
                (azure.backends, Some(azure.store))
            }
            Err(message) => {
                eprintln!("error: {message}");
                return EXIT_FAILED;
            }
        }
    };
    let token = std::env::var(TOKEN_VAR)
        .ok()
        .filter(|t| !t.trim().is_empty());
    let loopback = args.listen.ip().is_loopback();
    if token.is_none() && !loopback {
        eprintln!(
            "warning: no {TOKEN_VAR} set; POST requests (start, resume, cancel) are refused on {}",
            args.listen
        );
    }
    let listener = match TcpListener::bind(args.listen).await {
        Ok(listener) => listener,
        Err(e) => {
            eprintln!("error: cannot listen on {}: {e}", args.listen);
            return EXIT_FAILED;
        }
    };
    let addr = listener.local_addr().unwrap_or(args.listen);
    let mut ops = Ops::new(backends, env.blueprints.clone());
    if let Some(store) = cosmos {
        ops = ops.with_cosmos_listing(store);
    }
    let api = Api::new(ops, token, loopback);
    println!("listening on http://{addr}");
    let _ = std::io::stdout().flush();
    serve(listener, api, shutdown).await;
    EXIT_OK
}

/// Runs the subcommand and returns the process exit code.
pub fn execute(args: Args) -> u8 {
    super::logging::init(tracing::Level::WARN);
    super::block_on(run(args)).unwrap_or_else(|code| code)
}
