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
    /// Also mask message texts and document contents in the trace (same shape and size),
    /// for traces that leave the building; the trace still replays.
    #[arg(long, requires = "trace")]
    pub trace_mask: bool,
}

/// Reads the settings from the environment; the error is one line for the user.
pub fn settings() -> Result<Settings, String> {
    Settings::from_env().map_err(|e| e.to_string())
}

/// The HTTP transport, wrapped in a recorder when `args.trace` is given (masking payloads
/// with `args.trace_mask`).
pub fn transport(settings: &Settings, args: &AzureArgs) -> Result<Arc<dyn Transport>, String> {
    let http: Arc<dyn Transport> = Arc::new(
        settings
            .http_transport(REQUEST_TIMEOUT)
            .map_err(|e| e.to_string())?,
    );
    match &args.trace {
        None => Ok(http),
        Some(path) => {
            let redactor = settings.storage.redactor().and(settings.cosmos.redactor());
            let mut recorder =
                Recorder::to_file(http, path, redactor).map_err(|e| e.to_string())?;
            if args.trace_mask {
                recorder = recorder.masking_payloads();
            }
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
    let transport = transport(settings, args)?;
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::azure::auth::{CosmosConnection, StorageConnection};
    use crate::wire::record::{Body, read_recording_file};
    use crate::wire::transport::HttpRequest;
    use clap::Parser;

    #[derive(Debug, clap::Parser)]
    struct Cli {
        #[command(flatten)]
        azure: AzureArgs,
    }

    #[test]
    fn trace_mask_needs_a_trace() {
        assert!(Cli::try_parse_from(["x", "--trace-mask"]).is_err());
        let cli = Cli::try_parse_from(["x", "--trace", "t.jsonl", "--trace-mask"]);
        assert!(cli.is_ok_and(|c| c.azure.trace_mask));
    }

    #[tokio::test]
    async fn trace_mask_keeps_a_message_s_shape_in_the_trace_but_not_its_text() {
        let storage = StorageConnection::parse("UseDevelopmentStorage=true").unwrap();
        let cosmos = CosmosConnection::parse(
            "AccountEndpoint=http://127.0.0.1:9/;AccountKey=C2y6yDjf5/R+ob0N8A7Cgv30VRDJIWEHLM+4QDU5DE2nQ9nDuVTqobD4b8mGGyPMbIZnqyMsEcaGQy67XIw/Jw==;",
        )
        .unwrap();
        let settings = Settings::new(storage, cosmos);
        let path =
            std::env::temp_dir().join(format!("flowcraft-trace-mask-{}.jsonl", std::process::id()));
        for mask in [false, true] {
            let args = AzureArgs {
                trace: Some(path.clone()),
                trace_mask: mask,
            };
            let transport = transport(&settings, &args).unwrap();
            let mut request =
                HttpRequest::parse("POST", "http://127.0.0.1:9/devstoreaccount1/q/messages")
                    .unwrap();
            request.set_body(
                &b"<QueueMessage><MessageText>private-order-42</MessageText></QueueMessage>"[..],
            );
            // Nothing listens there: the failed attempt is recorded all the same.
            let _ = transport.send(request).await;
            drop(transport);
            let exchanges = read_recording_file(&path).unwrap();
            let Some(Body::Text(body)) = exchanges.first().map(|e| e.request_body.clone()) else {
                panic!("no text body recorded");
            };
            assert_eq!(body.contains("private-order-42"), !mask, "{body}");
            assert_eq!(body.contains(&"x".repeat(16)), mask, "{body}");
        }
        let _ = std::fs::remove_file(&path);
    }
}
