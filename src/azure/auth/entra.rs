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
//! Token requests go through a [`TokenHttp`] (a [`Transport`](crate::wire::transport::Transport) of their own: they are never
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
mod from_env;
mod http;
mod managed_identity;
mod token_endpoint;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use std::fmt;

pub use azure_cli::AzureCliCredential;
pub use bearer::{CosmosBearerSigner, MIN_BEARER_STORAGE_VERSION, StorageBearerSigner};
pub use cache::CachedCredential;
pub use from_env::{CredentialKind, credential_from_lookup};
pub use http::TokenHttp;
pub(crate) use http::token_valid_at;
pub use managed_identity::{IMDS_ENDPOINT, ManagedIdentityCredential};
pub use token_endpoint::{ClientSecretCredential, WorkloadIdentityCredential};

use super::Secret;
use crate::error::Error;

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
}
