//! Picking a credential from configuration: [`CredentialKind`] names the flow,
//! [`credential_from_lookup`] reads the usual `AZURE_*` variables for it and wraps it in a
//! [`CachedCredential`].

use std::sync::Arc;

use super::{
    AzureCliCredential, CachedCredential, ClientSecretCredential, DEFAULT_AUTHORITY,
    ManagedIdentityCredential, TokenCredential, TokenHttp, WorkloadIdentityCredential,
};
use crate::azure::auth::Secret;
use crate::error::Error;

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

#[cfg(test)]
mod tests {
    use super::*;

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
