//! The Azure CLI's token, for development machines: runs `az account get-access-token
//! --scope <scope> --output json` and reads `accessToken` with `expires_on` (epoch seconds,
//! newer CLIs) or `expiresOn` (local time, older ones). The program is injectable so tests
//! use a fake script.

use async_trait::async_trait;
use chrono::{DateTime, Local, NaiveDateTime, TimeZone, Utc};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use super::{AccessToken, TokenCredential, check_scope, token_valid_at};
use crate::azure::auth::Secret;
use crate::error::Error;
use crate::wire::clock::{Clock, SystemClock};

/// How long `az` may take (it may refresh its own token over the network).
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);

/// The signed-in Azure CLI user's (or service principal's) token.
#[derive(Debug, Clone)]
pub struct AzureCliCredential {
    program: PathBuf,
    timeout: Duration,
    clock: Arc<dyn Clock>,
}

impl Default for AzureCliCredential {
    fn default() -> Self {
        Self::new()
    }
}

impl AzureCliCredential {
    /// Runs `az` from the `PATH`.
    pub fn new() -> Self {
        AzureCliCredential {
            program: PathBuf::from("az"),
            timeout: DEFAULT_TIMEOUT,
            clock: Arc::new(SystemClock),
        }
    }

    /// Runs this program instead of `az` (a full path, or a name looked up in the `PATH`).
    pub fn with_program(mut self, program: impl Into<PathBuf>) -> Self {
        self.program = program.into();
        self
    }

    /// How long the program may run before it is stopped (default 60 s).
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Replaces the clock that checks the token is not already expired.
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }
}

#[async_trait]
impl TokenCredential for AzureCliCredential {
    async fn token(&self, scope: &str) -> Result<AccessToken, Error> {
        check_scope(scope)?;
        let shown = self.program.display().to_string();
        let failed = |why: String| {
            Error::Auth(Box::new(crate::error::ErrorInfo::new(why)))
                .during("get an Entra ID token (Azure CLI)")
        };
        let run = tokio::process::Command::new(&self.program)
            .args(["account", "get-access-token", "--scope", scope])
            .args(["--output", "json"])
            .stdin(std::process::Stdio::null())
            .kill_on_drop(true)
            .output();
        let output = match tokio::time::timeout(self.timeout, run).await {
            Err(_) => {
                return Err(failed(format!(
                    "`{shown} account get-access-token` did not finish within {} s",
                    self.timeout.as_secs()
                )));
            }
            Ok(Err(e)) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(failed(format!(
                    "the Azure CLI (`{shown}`) was not found; install it and run `az login`, \
                     or pick another FLOWCRAFT_AZURE_CREDENTIAL"
                )));
            }
            Ok(Err(e)) => return Err(failed(format!("cannot run `{shown}`: {e}"))),
            Ok(Ok(output)) => output,
        };
        if !output.status.success() {
            // The CLI's own message (e.g. "Please run 'az login'"); it never holds a token.
            let stderr = String::from_utf8_lossy(&output.stderr);
            let said: String = stderr
                .lines()
                .map(str::trim)
                .find(|l| !l.is_empty())
                .unwrap_or("no message")
                .chars()
                .take(300)
                .collect();
            return Err(failed(format!(
                "`{shown} account get-access-token` failed ({}): {said}; run `az login` (and \
                 `az account set` for the right subscription)",
                output.status
            )));
        }
        parse_cli_token(&output.stdout)
            .and_then(|t| token_valid_at(t, self.clock.now()))
            .map_err(|e| e.during("get an Entra ID token (Azure CLI)"))
    }
}

/// Parses `az account get-access-token --output json`.
fn parse_cli_token(stdout: &[u8]) -> Result<AccessToken, Error> {
    let malformed = |what: &str| {
        Error::unexpected(format!(
            "the Azure CLI's answer is not a usable token ({what}); update the Azure CLI"
        ))
    };
    let json: serde_json::Value =
        serde_json::from_slice(stdout).map_err(|_| malformed("not JSON"))?;
    let token = json
        .get("accessToken")
        .and_then(|v| v.as_str())
        .filter(|t| !t.trim().is_empty())
        .ok_or_else(|| malformed("no `accessToken`"))?;
    let epoch = json.get("expires_on").and_then(|v| match v {
        serde_json::Value::Number(n) => n.as_i64(),
        serde_json::Value::String(s) => s.trim().parse().ok(),
        _ => None,
    });
    let expires_on = match epoch {
        Some(epoch) => DateTime::from_timestamp(epoch, 0),
        None => json
            .get("expiresOn")
            .and_then(|v| v.as_str())
            .and_then(local_time),
    }
    .ok_or_else(|| malformed("no valid `expires_on` or `expiresOn`"))?;
    Ok(AccessToken {
        token: Secret::new(token.trim()),
        expires_on,
    })
}

/// `2026-11-29 11:22:33.123456` (the machine's local time) as UTC.
fn local_time(text: &str) -> Option<DateTime<Utc>> {
    let naive = NaiveDateTime::parse_from_str(text.trim(), "%Y-%m-%d %H:%M:%S%.f").ok()?;
    Local
        .from_local_datetime(&naive)
        .earliest()
        .map(|t| t.with_timezone(&Utc))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn epoch_and_local_time_answers_parse() {
        let t = parse_cli_token(br#"{"accessToken":"tok","expires_on":1790000000}"#).unwrap();
        assert_eq!(
            (t.token.expose(), t.expires_on.timestamp()),
            ("tok", 1790000000)
        );
        let t = parse_cli_token(br#"{"accessToken":"tok","expires_on":"1790000000"}"#).unwrap();
        assert_eq!(t.expires_on.timestamp(), 1790000000);
        let t =
            parse_cli_token(br#"{"accessToken":"tok","expiresOn":"2026-11-29 11:22:33.000000"}"#)
                .unwrap();
        let local = Local
            .from_local_datetime(
                &NaiveDateTime::parse_from_str("2026-11-29 11:22:33", "%Y-%m-%d %H:%M:%S").unwrap(),
            )
            .earliest()
            .unwrap();
        assert_eq!(t.expires_on, local.with_timezone(&Utc));
    }

    #[test]
    fn malformed_answers_are_errors_that_hide_the_token() {
        for body in [
            &b"Please run az login"[..],
            br#"{"accessToken":"SECRETTOKEN"}"#,
            br#"{"accessToken":"SECRETTOKEN","expiresOn":"tomorrow"}"#,
            br#"{"token":"x","expires_on":1}"#,
        ] {
            let err = parse_cli_token(body).expect_err("malformed");
            assert!(!err.to_string().contains("SECRETTOKEN"), "{err}");
        }
    }
}
