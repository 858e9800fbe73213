//! The flows that POST the tenant's OAuth 2.0 token endpoint,
//! `{authority}/{tenant}/oauth2/v2.0/token`, with `grant_type=client_credentials`: a client
//! secret ([`ClientSecretCredential`]) or a federated token read from a file
//! ([`WorkloadIdentityCredential`], `client_assertion_type=...jwt-bearer`).

use async_trait::async_trait;
use std::fmt;
use std::path::PathBuf;

use super::{AccessToken, DEFAULT_AUTHORITY, TokenCredential, TokenHttp, check_id, check_scope};
use crate::azure::auth::{Secret, check_endpoint};
use crate::error::Error;
use crate::wire::encoding::encode_unreserved;
use crate::wire::redact::Redactor;
use crate::wire::transport::HttpRequest;

/// The JWT-bearer assertion type of a federated credential.
const JWT_BEARER: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

/// The tenant's token endpoint and the app's id, shared by both flows.
#[derive(Debug, Clone)]
struct TokenEndpoint {
    http: TokenHttp,
    authority: String,
    tenant: String,
    client_id: String,
}

impl TokenEndpoint {
    fn new(http: TokenHttp, tenant: &str, client_id: &str) -> Result<Self, Error> {
        check_id("tenant id (AZURE_TENANT_ID)", tenant)?;
        check_id("client id (AZURE_CLIENT_ID)", client_id)?;
        Ok(TokenEndpoint {
            http,
            authority: DEFAULT_AUTHORITY.to_string(),
            tenant: tenant.to_string(),
            client_id: client_id.to_string(),
        })
    }

    fn set_authority(&mut self, authority: &str) -> Result<(), Error> {
        self.authority = check_endpoint(authority, false).map_err(|mut e| {
            let info = e.info_mut();
            info.message = format!(
                "the authority host (AZURE_AUTHORITY_HOST): {}",
                info.message
            );
            e
        })?;
        Ok(())
    }

    /// POSTs the client-credentials form with `extra` (already chosen per flow) for `scope`.
    async fn request(
        &self,
        scope: &str,
        extra: &[(&str, &str)],
        source: &str,
        hint: &str,
        redactor: &Redactor,
    ) -> Result<AccessToken, Error> {
        check_scope(scope)?;
        let url = format!("{}/{}/oauth2/v2.0/token", self.authority, self.tenant);
        let mut fields = vec![
            ("grant_type", "client_credentials"),
            ("client_id", self.client_id.as_str()),
            ("scope", scope),
        ];
        fields.extend_from_slice(extra);
        let form: Vec<String> = fields
            .iter()
            .map(|(name, value)| format!("{name}={}", encode_unreserved(value)))
            .collect();
        let mut request = HttpRequest::parse("POST", url)?;
        request.set_header("content-type", "application/x-www-form-urlencoded");
        request.set_header("accept", "application/json");
        request.set_body(form.join("&"));
        self.http.fetch(request, source, hint, redactor).await
    }
}

/// An app registration's client secret (`AZURE_TENANT_ID`, `AZURE_CLIENT_ID`,
/// `AZURE_CLIENT_SECRET`). `Debug` hides the secret.
#[derive(Clone)]
pub struct ClientSecretCredential {
    endpoint: TokenEndpoint,
    secret: Secret,
}

impl fmt::Debug for ClientSecretCredential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientSecretCredential")
            .field("authority", &self.endpoint.authority)
            .field("tenant", &self.endpoint.tenant)
            .field("client_id", &self.endpoint.client_id)
            .field("secret", &self.secret)
            .finish()
    }
}

impl ClientSecretCredential {
    /// A credential for the app `client_id` in `tenant` (ids are checked, the secret never
    /// shown).
    pub fn new(
        http: TokenHttp,
        tenant: &str,
        client_id: &str,
        secret: Secret,
    ) -> Result<Self, Error> {
        if secret.expose().trim().is_empty() {
            return Err(Error::invalid_input(
                "the client secret (AZURE_CLIENT_SECRET) is empty",
            ));
        }
        Ok(ClientSecretCredential {
            endpoint: TokenEndpoint::new(http, tenant, client_id)?,
            secret,
        })
    }

    /// Replaces the authority host (default [`DEFAULT_AUTHORITY`]; another cloud, or a local
    /// fake in tests). HTTPS unless loopback.
    pub fn with_authority(mut self, authority: &str) -> Result<Self, Error> {
        self.endpoint.set_authority(authority)?;
        Ok(self)
    }
}

#[async_trait]
impl TokenCredential for ClientSecretCredential {
    async fn token(&self, scope: &str) -> Result<AccessToken, Error> {
        let redactor = Redactor::new().with_secret(self.secret.expose());
        self.endpoint
            .request(
                scope,
                &[("client_secret", self.secret.expose())],
                "client secret",
                "check AZURE_TENANT_ID, AZURE_CLIENT_ID and AZURE_CLIENT_SECRET (a secret may \
                 have expired: create a new one in the app registration) and that the app has \
                 a role on the account",
                &redactor,
            )
            .await
    }
}

/// Workload identity (AKS and other federated identities): the token in
/// `AZURE_FEDERATED_TOKEN_FILE`, read again on every fetch (it is rotated), is exchanged
/// for an Entra ID token of the app `AZURE_CLIENT_ID` in `AZURE_TENANT_ID`.
#[derive(Debug, Clone)]
pub struct WorkloadIdentityCredential {
    endpoint: TokenEndpoint,
    token_file: PathBuf,
}

impl WorkloadIdentityCredential {
    /// A credential that exchanges the federated token in `token_file`.
    pub fn new(
        http: TokenHttp,
        tenant: &str,
        client_id: &str,
        token_file: impl Into<PathBuf>,
    ) -> Result<Self, Error> {
        Ok(WorkloadIdentityCredential {
            endpoint: TokenEndpoint::new(http, tenant, client_id)?,
            token_file: token_file.into(),
        })
    }

    /// Replaces the authority host (default [`DEFAULT_AUTHORITY`]). HTTPS unless loopback.
    pub fn with_authority(mut self, authority: &str) -> Result<Self, Error> {
        self.endpoint.set_authority(authority)?;
        Ok(self)
    }

    /// The federated token, read now.
    async fn assertion(&self) -> Result<Secret, Error> {
        let shown = self.token_file.display();
        let text = tokio::fs::read_to_string(&self.token_file)
            .await
            .map_err(|e| {
                Error::invalid_input(format!(
                    "cannot read the federated token file {shown} (AZURE_FEDERATED_TOKEN_FILE): {e}; \
                     check the workload identity is set up for this pod"
                ))
            })?;
        let token = text.trim();
        if token.is_empty() {
            return Err(Error::invalid_input(format!(
                "the federated token file {shown} (AZURE_FEDERATED_TOKEN_FILE) is empty"
            )));
        }
        Ok(Secret::new(token))
    }
}

#[async_trait]
impl TokenCredential for WorkloadIdentityCredential {
    async fn token(&self, scope: &str) -> Result<AccessToken, Error> {
        let assertion = self.assertion().await?;
        let redactor = Redactor::new().with_secret(assertion.expose());
        self.endpoint
            .request(
                scope,
                &[
                    ("client_assertion_type", JWT_BEARER),
                    ("client_assertion", assertion.expose()),
                ],
                "workload identity",
                "check AZURE_TENANT_ID and AZURE_CLIENT_ID, and that the app has a federated \
                 credential for this service account and a role on the account",
                &redactor,
            )
            .await
    }
}
