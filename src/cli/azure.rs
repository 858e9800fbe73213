//! What every command that talks to Azure shares: the settings from the environment (the
//! variables `scripts/emulators.sh env` prints, so the local stack needs no flags), one HTTP
//! transport, an optional `--trace FILE` recorder (JSON Lines, secrets redacted) around it,
//! and the connected backends.

use crate::adapter::{AzureBackends, Settings, connect};
use crate::flow::blueprint::LoadOptions;
use crate::flow::execute::{BlueprintRegistry, Environment};
use crate::flow::node::NodeRegistry;
use crate::wire::record::Recorder;
use crate::wire::transport::Transport;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// How long one HTTP attempt may take before the pipeline retries it.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// The options every Azure-facing command takes.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct AzureArgs {
    /// Record every HTTP exchange (secrets redacted) to this JSON Lines file.
    #[arg(long, value_name = "FILE")]
    pub trace: Option<PathBuf>,
}

/// Reads the settings from the environment; the error is one line for the user.
pub fn settings() -> Result<Settings, String> {
    Settings::from_env().map_err(|e| e.to_string())
}

/// The HTTP transport, wrapped in a recorder when `trace` is given.
pub fn transport(settings: &Settings, trace: Option<&Path>) -> Result<Arc<dyn Transport>, String> {
    let http: Arc<dyn Transport> = Arc::new(
        settings
            .http_transport(REQUEST_TIMEOUT)
            .map_err(|e| e.to_string())?,
    );
    match trace {
        None => Ok(http),
        Some(path) => {
            let redactor = settings.storage.redactor().and(settings.cosmos.redactor());
            let recorder = Recorder::to_file(http, path, redactor).map_err(|e| e.to_string())?;
            Ok(Arc::new(recorder))
        }
    }
}

/// Settings, transport and backends in one step.
pub async fn connect_from_env(args: &AzureArgs) -> Result<(Settings, AzureBackends), String> {
    let settings = settings()?;
    let backends = connect_with(&settings, args).await?;
    Ok((settings, backends))
}

/// The backends for `settings` over one transport (recorded with `--trace`).
pub async fn connect_with(settings: &Settings, args: &AzureArgs) -> Result<AzureBackends, String> {
    let transport = transport(settings, args.trace.as_deref())?;
    connect(settings, transport)
        .await
        .map_err(|e| format!("cannot connect: {e}"))
}

/// [`connect_with`], then the queues, database and containers created when missing; `what`
/// names them in the error (e.g. "the demo's queue and containers").
pub async fn connect_provisioned(
    settings: &Settings,
    args: &AzureArgs,
    what: &str,
) -> Result<AzureBackends, String> {
    let backends = connect_with(settings, args).await?;
    backends
        .ensure_resources()
        .await
        .map_err(|e| format!("cannot create {what}: {e}"))?;
    Ok(backends)
}

/// The built-in and utility nodes plus every `*.json` blueprint in `dir`.
pub fn environment(dir: &Path) -> Result<Environment, String> {
    let mut registry = BlueprintRegistry::new();
    registry
        .load_dir(dir, &LoadOptions::default())
        .map_err(|e| e.to_string())?;
    Ok(Environment::new(NodeRegistry::with_builtins()).with_blueprints(registry))
}
