//! Entra ID (Azure AD) bearer tokens, for accounts that disable keys (Storage
//! `allowSharedKeyAccess=false`, Cosmos DB `disableLocalAuth`).
//!
//! - [`TokenCredential`]: the async seam, `token(scope)` gives an [`AccessToken`];
//! - the flows: [`ClientSecretCredential`], [`WorkloadIdentityCredential`] (both POST the
//!   tenant's token endpoint), [`ManagedIdentityCredential`] (IMDS, or App Service /
//!   Functions through `IDENTITY_ENDPOINT`) and [`AzureCliCredential`] (`az account
//!   get-access-token`);
//! - [`CachedCredential`]: one token per scope, refreshed before it expires, one refresh
//!   shared by all concurrent callers;
//! - [`StorageBearerSigner`], [`CosmosBearerSigner`]: the request signers;
//! - [`credential_from_lookup`]: a credential picked by [`CredentialKind`] from the usual
//!   `AZURE_*` variables.
//!
//! Token requests go through a [`TokenHttp`] (a [`Transport`] of their own: they are never
//! recorded with the service traffic). Tokens are [`Secret`]s: they never reach `Debug`,
//! logs or errors.
//!
//! ```no_run
//! # async fn demo() -> Result<(), flowcraft_azure::Error> {
//! use std::{sync::Arc, time::Duration};
//! use flowcraft_azure::azure::auth::{
//!     CachedCredential, ManagedIdentityCredential, StorageBearerSigner, TokenHttp,
//! };
//! use flowcraft_azure::wire::{pipeline::Pipeline, reqwest_transport::ReqwestTransport};
//!
//! // Token requests get their own client; the service traffic may be recorded.
//! let tokens = TokenHttp::new(Arc::new(ReqwestTransport::new(Duration::from_secs(30))?));
//! let identity = ManagedIdentityCredential::imds(tokens);
//! let credential = Arc::new(CachedCredential::new(Arc::new(identity)));
//! let signer = Arc::new(StorageBearerSigner::new(credential));
//! let service = Arc::new(ReqwestTransport::new(Duration::from_secs(30))?);
//! let pipeline = Pipeline::new(service, signer);
//! # let _ = pipeline;
//! # Ok(()) }
//! ```

mod azure_cli;
mod bearer;
mod cache;
mod managed_identity;
mod token_endpoint;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use std::fmt;
use std::sync::Arc;

pub use azure_cli::AzureCliCredential;
pub use bearer::{CosmosBearerSigner, MIN_BEARER_STORAGE_VERSION, StorageBearerSigner};
pub use cache::CachedCredential;
pub use managed_identity::{IMDS_ENDPOINT, ManagedIdentityCredential};
pub use token_endpoint::{ClientSecretCredential, WorkloadIdentityCredential};

use super::Secret;
use crate::error::{Error, ErrorInfo};
use crate::wire::clock::{Clock, SystemClock};
use crate::wire::pipeline::{NoAuth, Pipeline};
use crate::wire::redact::Redactor;
use crate::wire::retry::{Idempotency, RetryPolicy};
use crate::wire::transport::{HttpRequest, HttpResponse, Transport};

/// The public cloud's authority host (`AZURE_AUTHORITY_HOST` overrides it).
pub const DEFAULT_AUTHORITY: &str = "https://login.microsoftonline.com";

/// The scope of Azure Storage (every account, every cloud).
pub const STORAGE_SCOPE: &str = "https://storage.azure.com/.default";

/// A bearer token and the instant it stops being valid. `Debug` hides the token.
#[derive(Clone, PartialEq, Eq)]
pub struct AccessToken {
    /// The token (a JWT), sent as `Bearer <token>`.
    pub token: Secret,
    /// When the token expires.
    pub expires_on: DateTime<Utc>,
}

impl fmt::Debug for AccessToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AccessToken")
            .field("token", &self.token)
            .field("expires_on", &self.expires_on)
            .finish()
    }
}

/// Gets Entra ID access tokens for a scope such as [`STORAGE_SCOPE`].
#[async_trait]
pub trait TokenCredential: Send + Sync + fmt::Debug {
    /// A token for `scope` (fetched anew by the flows; [`CachedCredential`] caches).
    async fn token(&self, scope: &str) -> Result<AccessToken, Error>;
}

/// The scope of a Cosmos DB account, `https://<account>.documents.azure.com/.default`, from
/// its endpoint; `None` for a host that is not a Cosmos DB account host (an emulator, a
/// proxy): give the scope explicitly then.
///
/// ```
/// use flowcraft_azure::azure::auth::cosmos_scope;
/// assert_eq!(cosmos_scope("https://acct.documents.azure.com:443/").as_deref(),
///            Some("https://acct.documents.azure.com/.default"));
/// assert_eq!(cosmos_scope("http://127.0.0.1:18081"), None);
/// ```
pub fn cosmos_scope(endpoint: &str) -> Option<String> {
    let url = reqwest::Url::parse(endpoint.trim()).ok()?;
    let host = url.host_str()?.to_ascii_lowercase();
    let (account, suffix) = host.split_once('.')?;
    let known = [
        "documents.azure.com",
        "documents.azure.us",
        "documents.azure.cn",
    ];
    (!account.is_empty() && known.contains(&suffix))
        .then(|| format!("https://{account}.{suffix}/.default"))
}

/// The resource of a scope (managed identity endpoints take a resource, not a scope):
/// `https://storage.azure.com/.default` becomes `https://storage.azure.com`.
pub(crate) fn scope_to_resource(scope: &str) -> &str {
    scope.strip_suffix("/.default").unwrap_or(scope)
}

/// Refuses a scope that is empty or holds characters a scope never has (it ends up in a URL
/// query, a form body or a command line).
pub(crate) fn check_scope(scope: &str) -> Result<(), Error> {
    let fine = !scope.is_empty()
        && !scope.starts_with('-')
        && scope
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, ':' | '/' | '.' | '-' | '_'));
    if fine {
        Ok(())
    } else {
        Err(Error::invalid_input(format!(
            "the token scope `{}` is not valid; expected e.g. {STORAGE_SCOPE}",
            scope.chars().take(80).collect::<String>()
        )))
    }
}

/// How token requests are sent: their own pipeline (no signer, a short retry policy) and
/// the clock that turns `expires_in` into an instant. Cheap to clone.
#[derive(Debug, Clone)]
pub struct TokenHttp {
    pipeline: Pipeline,
    clock: Arc<dyn Clock>,
}

impl TokenHttp {
    /// Token requests over `transport`, with 3 attempts for transient failures and the
    /// system clock.
    pub fn new(transport: Arc<dyn Transport>) -> Self {
        let retry = RetryPolicy {
            max_attempts: 3,
            ..RetryPolicy::default()
        };
        TokenHttp {
            pipeline: Pipeline::new(transport, Arc::new(NoAuth)).with_retry(retry),
            clock: Arc::new(SystemClock),
        }
    }

    /// Replaces the retry policy of token requests.
    pub fn with_retry(mut self, policy: RetryPolicy) -> Self {
        self.pipeline = self.pipeline.with_retry(policy);
        self
    }

    /// Replaces the clock (tests pin it to get deterministic expiry instants).
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.pipeline = self.pipeline.with_clock(clock.clone());
        self.clock = clock;
        self
    }

    /// The current time on this client's clock.
    pub(crate) fn now(&self) -> DateTime<Utc> {
        self.clock.now()
    }

    /// The clock.
    pub(crate) fn clock(&self) -> Arc<dyn Clock> {
        self.clock.clone()
    }

    /// Sends a token request and parses the answer. `source` names the flow in errors,
    /// `hint` says what to check when the endpoint refuses, `redactor` scrubs anything
    /// secret the endpoint might echo.
    pub(crate) async fn fetch(
        &self,
        request: HttpRequest,
        source: &str,
        hint: &str,
        redactor: &Redactor,
    ) -> Result<AccessToken, Error> {
        let operation = format!("get an Entra ID token ({source})");
        let response = self
            .pipeline
            .send(request, Idempotency::Idempotent)
            .await
            .map_err(|e| e.during(operation.clone()))?;
        if !response.is_success() {
            return Err(refusal(&response, hint, redactor).during(operation));
        }
        parse_token_response(&response.body, self.now()).map_err(|e| e.during(operation))
    }
}

/// The error for a token endpoint's non-2xx answer: the AAD `error` code and
/// `error_description` (shortened, scrubbed) and what to check.
fn refusal(response: &HttpResponse, hint: &str, redactor: &Redactor) -> Error {
    let body: serde_json::Value = serde_json::from_slice(&response.body).unwrap_or_default();
    let text = |name: &str| body.get(name).and_then(|v| v.as_str()).map(str::to_string);
    let code = text("error").or_else(|| {
        body.pointer("/error/code")
            .and_then(|v| v.as_str())
            .map(str::to_string)
    });
    let description = text("error_description")
        .or_else(|| text("message"))
        .or_else(|| {
            body.pointer("/error/message")
                .and_then(|v| v.as_str())
                .map(str::to_string)
        })
        .map(|d| {
            let first_line = d.lines().next().unwrap_or_default();
            let cut: String = first_line.chars().take(300).collect();
            redactor.redact_text(&cut)
        });
    let said = match (&code, &description) {
        (Some(c), Some(d)) => format!(": {c}: {d}"),
        (Some(c), None) => format!(": {c}"),
        (None, Some(d)) => format!(": {d}"),
        (None, None) => String::new(),
    };
    let mut info = ErrorInfo::new(format!(
        "the token endpoint answered {}{said}; {hint}",
        response.status
    ))
    .with_status(response.status);
    if let Some(code) = code {
        info = info.with_code(redactor.redact_text(&code.chars().take(80).collect::<String>()));
    }
    let info = Box::new(info);
    match response.status {
        400 | 401 | 403 => Error::Auth(info),
        429 => Error::Throttled {
            retry_after: None,
            info,
        },
        _ => Error::Unexpected(info),
    }
}

/// Parses a token answer: `access_token`, and `expires_in` (seconds from now) or
/// `expires_on` (epoch seconds), each a number or a string of digits (IMDS and App Service
/// send strings). A missing or expired token is an error.
pub(crate) fn parse_token_response(body: &[u8], now: DateTime<Utc>) -> Result<AccessToken, Error> {
    let malformed = |what: &str| {
        Error::unexpected(format!(
            "the token endpoint's answer is not a usable token ({what}); check the endpoint \
             (AZURE_AUTHORITY_HOST, IDENTITY_ENDPOINT) points at Entra ID or a managed identity \
             endpoint"
        ))
    };
    let json: serde_json::Value =
        serde_json::from_slice(body).map_err(|_| malformed("not JSON"))?;
    let token = json
        .get("access_token")
        .and_then(|v| v.as_str())
        .filter(|t| !t.trim().is_empty())
        .ok_or_else(|| malformed("no `access_token`"))?;
    let expires_on = match (
        json.get("expires_in").and_then(seconds),
        json.get("expires_on").and_then(seconds),
    ) {
        (Some(after), _) => now.checked_add_signed(chrono::Duration::seconds(after)),
        (None, Some(epoch)) => DateTime::from_timestamp(epoch, 0),
        (None, None) => None,
    }
    .ok_or_else(|| malformed("no valid `expires_in` or `expires_on`"))?;
    token_valid_at(
        AccessToken {
            token: Secret::new(token.trim()),
            expires_on,
        },
        now,
    )
}

/// The token, unless it is already expired at `now` (a wrong machine clock, or a stale
/// answer).
pub(crate) fn token_valid_at(token: AccessToken, now: DateTime<Utc>) -> Result<AccessToken, Error> {
    if token.expires_on <= now {
        return Err(Error::unexpected(format!(
            "the token received expired at {} (now {}); check the machine clock",
            token.expires_on.to_rfc3339(),
            now.to_rfc3339()
        )));
    }
    Ok(token)
}

/// Whole seconds from a JSON number or a string of digits.
fn seconds(value: &serde_json::Value) -> Option<i64> {
    match value {
        serde_json::Value::Number(n) => n.as_i64().or_else(|| {
            n.as_f64()
                .filter(|f| f.is_finite() && f.abs() < 1e15)
                .map(|f| f as i64)
        }),
        serde_json::Value::String(s) => s.trim().parse::<i64>().ok(),
        _ => None,
    }
}

/// The Entra ID flows [`credential_from_lookup`] can build.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CredentialKind {
    /// [`ClientSecretCredential`]: `AZURE_TENANT_ID`, `AZURE_CLIENT_ID`, `AZURE_CLIENT_SECRET`.
    ClientSecret,
    /// [`ManagedIdentityCredential`]: App Service / Functions when `IDENTITY_ENDPOINT` and
    /// `IDENTITY_HEADER` are set, else IMDS; `AZURE_CLIENT_ID` picks a user-assigned identity.
    ManagedIdentity,
    /// [`WorkloadIdentityCredential`]: `AZURE_FEDERATED_TOKEN_FILE`, `AZURE_CLIENT_ID`,
    /// `AZURE_TENANT_ID` (as AKS workload identity sets them).
    WorkloadIdentity,
    /// [`AzureCliCredential`]: the signed-in Azure CLI (`az login`), for development.
    AzureCli,
}

impl CredentialKind {
    /// The names [`CredentialKind::parse`] accepts, for messages.
    pub const NAMES: &'static str = "client-secret, managed-identity, workload-identity, azure-cli";

    /// Parses `client-secret`, `managed-identity`, `workload-identity` or `azure-cli`
    /// (case-insensitive, `_` for `-` accepted).
    pub fn parse(text: &str) -> Option<Self> {
        match text.trim().to_ascii_lowercase().replace('_', "-").as_str() {
            "client-secret" => Some(CredentialKind::ClientSecret),
            "managed-identity" => Some(CredentialKind::ManagedIdentity),
            "workload-identity" => Some(CredentialKind::WorkloadIdentity),
            "azure-cli" => Some(CredentialKind::AzureCli),
            _ => None,
        }
    }
}

/// Builds the credential of `kind` from the variables `lookup` gives (empty counts as
/// unset), wrapped in a [`CachedCredential`] on `http`'s clock. A missing variable is an
/// [`Error::InvalidInput`] that names it; no value is ever shown. `AZURE_AUTHORITY_HOST`
/// replaces [`DEFAULT_AUTHORITY`] for the client-secret and workload-identity flows.
pub fn credential_from_lookup(
    kind: CredentialKind,
    lookup: &dyn Fn(&str) -> Option<String>,
    http: TokenHttp,
) -> Result<Arc<CachedCredential>, Error> {
    let get = |name: &str| {
        lookup(name)
            .map(|v| v.trim().to_string())
            .filter(|v| !v.is_empty())
    };
    let need = |name: &str, why: &str| {
        get(name).ok_or_else(|| {
            Error::invalid_input(format!("{name} is not set; the {why} credential needs it"))
        })
    };
    let authority = get("AZURE_AUTHORITY_HOST").unwrap_or_else(|| DEFAULT_AUTHORITY.to_string());
    let clock = http.clock();
    let inner: Arc<dyn TokenCredential> = match kind {
        CredentialKind::ClientSecret => {
            let why = "client-secret";
            Arc::new(
                ClientSecretCredential::new(
                    http,
                    &need("AZURE_TENANT_ID", why)?,
                    &need("AZURE_CLIENT_ID", why)?,
                    Secret::new(need("AZURE_CLIENT_SECRET", why)?),
                )?
                .with_authority(&authority)?,
            )
        }
        CredentialKind::WorkloadIdentity => {
            let why = "workload-identity";
            Arc::new(
                WorkloadIdentityCredential::new(
                    http,
                    &need("AZURE_TENANT_ID", why)?,
                    &need("AZURE_CLIENT_ID", why)?,
                    need("AZURE_FEDERATED_TOKEN_FILE", why)?,
                )?
                .with_authority(&authority)?,
            )
        }
        CredentialKind::ManagedIdentity => {
            let credential = match (get("IDENTITY_ENDPOINT"), get("IDENTITY_HEADER")) {
                (Some(endpoint), Some(header)) => {
                    ManagedIdentityCredential::app_service(http, &endpoint, Secret::new(header))?
                }
                (Some(_), None) => {
                    return Err(Error::invalid_input(
                        "IDENTITY_HEADER is not set; the App Service managed identity (IDENTITY_ENDPOINT is set) needs it",
                    ));
                }
                (None, _) => ManagedIdentityCredential::imds(http),
            };
            Arc::new(match get("AZURE_CLIENT_ID") {
                Some(id) => credential.with_client_id(&id)?,
                None => credential,
            })
        }
        CredentialKind::AzureCli => Arc::new(AzureCliCredential::new().with_clock(clock.clone())),
    };
    Ok(Arc::new(CachedCredential::new(inner).with_clock(clock)))
}

/// Refuses a tenant or client id that could change the token URL or form (they are GUIDs or
/// domain names).
pub(crate) fn check_id(name: &str, value: &str) -> Result<(), Error> {
    let fine = !value.is_empty()
        && value.len() <= 256
        && value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_'));
    if fine {
        Ok(())
    } else {
        Err(Error::invalid_input(format!(
            "the {name} is not valid: expected a GUID (or a domain name for a tenant)"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn now() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, 29, 10, 0, 0)
            .single()
            .unwrap_or_default()
    }

    #[test]
    fn token_answers_with_numbers_or_strings_parse() {
        for body in [
            r#"{"access_token":"tok","expires_in":3599,"token_type":"Bearer"}"#,
            r#"{"access_token":"tok","expires_in":"3599","expires_on":"1"}"#,
        ] {
            let t = parse_token_response(body.as_bytes(), now()).expect(body);
            assert_eq!(t.token.expose(), "tok");
            assert_eq!(t.expires_on, now() + chrono::Duration::seconds(3599));
        }
        let epoch = (now() + chrono::Duration::hours(1)).timestamp();
        for body in [
            format!(r#"{{"access_token":"tok","expires_on":{epoch}}}"#),
            format!(r#"{{"access_token":"tok","expires_on":"{epoch}"}}"#),
        ] {
            let t = parse_token_response(body.as_bytes(), now()).expect(&body);
            assert_eq!(t.expires_on.timestamp(), epoch);
        }
    }

    #[test]
    fn malformed_or_expired_answers_are_errors_without_the_token() {
        for body in [
            "<html>",
            r#"{"token":"x"}"#,
            r#"{"access_token":"","expires_in":10}"#,
            r#"{"access_token":"SECRETTOKEN"}"#,
            r#"{"access_token":"SECRETTOKEN","expires_in":"soon"}"#,
            r#"{"access_token":"SECRETTOKEN","expires_on":5}"#,
        ] {
            let err = parse_token_response(body.as_bytes(), now()).expect_err(body);
            let text = err.to_string();
            assert!(!text.contains("SECRETTOKEN"), "{text}");
            assert!(text.contains("token"), "{text}");
        }
    }

    #[test]
    fn cosmos_scopes_come_from_account_hosts_only() {
        assert_eq!(
            cosmos_scope("https://Acct.documents.azure.us/").as_deref(),
            Some("https://acct.documents.azure.us/.default")
        );
        assert_eq!(cosmos_scope("https://acct.example.com"), None);
        assert_eq!(cosmos_scope("not a url"), None);
        assert_eq!(
            scope_to_resource(STORAGE_SCOPE),
            "https://storage.azure.com"
        );
    }

    #[test]
    fn scopes_and_ids_that_could_inject_are_refused() {
        assert!(check_scope(STORAGE_SCOPE).is_ok());
        for bad in ["", "--output=tsv", "a&b=c", "a b", "x\ny"] {
            assert!(check_scope(bad).is_err(), "{bad}");
        }
        assert!(check_id("tenant id", "contoso.onmicrosoft.com").is_ok());
        for bad in ["", "a/b", "a?b", "../x", "a%2f"] {
            assert!(check_id("tenant id", bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn credential_kinds_parse_and_missing_variables_are_named() {
        assert_eq!(
            CredentialKind::parse("Managed_Identity"),
            Some(CredentialKind::ManagedIdentity)
        );
        assert_eq!(CredentialKind::parse("key"), None);
        let http = TokenHttp::new(crate::wire::test_support::FakeTransport::new(Vec::new()));
        let cases = [
            (CredentialKind::ClientSecret, vec![], "AZURE_TENANT_ID"),
            (
                CredentialKind::ClientSecret,
                vec![("AZURE_TENANT_ID", "t"), ("AZURE_CLIENT_ID", "c")],
                "AZURE_CLIENT_SECRET",
            ),
            (
                CredentialKind::WorkloadIdentity,
                vec![("AZURE_TENANT_ID", "t"), ("AZURE_CLIENT_ID", "c")],
                "AZURE_FEDERATED_TOKEN_FILE",
            ),
            (
                CredentialKind::ManagedIdentity,
                vec![("IDENTITY_ENDPOINT", "http://127.0.0.1:1/msi")],
                "IDENTITY_HEADER",
            ),
        ];
        for (kind, vars, named) in cases {
            let lookup = |name: &str| {
                vars.iter()
                    .find(|(n, _)| *n == name)
                    .map(|(_, v)| v.to_string())
            };
            let err = credential_from_lookup(kind, &lookup, http.clone()).expect_err(named);
            assert!(err.to_string().contains(named), "{err}");
        }
        let lookup = |_: &str| None;
        assert!(credential_from_lookup(CredentialKind::ManagedIdentity, &lookup, http).is_ok());
    }
}
