//! Managed identity: the Instance Metadata Service (VMs, scale sets, AKS nodes, Container
//! Instances: `GET {IMDS}?api-version=2018-02-01&resource=...` with `Metadata: true`), or
//! App Service / Functions / Container Apps (`GET $IDENTITY_ENDPOINT?api-version=2019-08-01
//! &resource=...` with `X-IDENTITY-HEADER: $IDENTITY_HEADER`). A user-assigned identity is
//! picked with its client id. Both take a resource, not a scope (`X/.default` becomes `X`).

use async_trait::async_trait;
use std::fmt;

use super::{AccessToken, TokenCredential, TokenHttp, check_id, check_scope, scope_to_resource};
use crate::azure::auth::{Secret, check_endpoint};
use crate::error::Error;
use crate::wire::encoding::append_query;
use crate::wire::redact::Redactor;
use crate::wire::transport::HttpRequest;

/// The Instance Metadata Service's token endpoint.
pub const IMDS_ENDPOINT: &str = "http://169.254.169.254/metadata/identity/oauth2/token";

/// Which managed identity endpoint answers.
#[derive(Clone)]
enum Endpoint {
    Imds(String),
    AppService { url: String, header: Secret },
}

/// A managed identity (system-assigned, or user-assigned with [`Self::with_client_id`]).
/// `Debug` hides the App Service identity header.
#[derive(Clone)]
pub struct ManagedIdentityCredential {
    http: TokenHttp,
    endpoint: Endpoint,
    client_id: Option<String>,
}

impl fmt::Debug for ManagedIdentityCredential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (kind, url) = match &self.endpoint {
            Endpoint::Imds(url) => ("imds", url),
            Endpoint::AppService { url, .. } => ("app-service", url),
        };
        f.debug_struct("ManagedIdentityCredential")
            .field("kind", &kind)
            .field("endpoint", url)
            .field("client_id", &self.client_id)
            .finish()
    }
}

impl ManagedIdentityCredential {
    /// The identity of this VM (or node, or container group) through IMDS.
    pub fn imds(http: TokenHttp) -> Self {
        ManagedIdentityCredential {
            http,
            endpoint: Endpoint::Imds(IMDS_ENDPOINT.to_string()),
            client_id: None,
        }
    }

    /// The identity of this App Service / Functions app: `endpoint` and `header` are what
    /// the platform sets in `IDENTITY_ENDPOINT` and `IDENTITY_HEADER`.
    pub fn app_service(http: TokenHttp, endpoint: &str, header: Secret) -> Result<Self, Error> {
        let url = check_endpoint(endpoint, true).map_err(|mut e| {
            let info = e.info_mut();
            info.message = format!("IDENTITY_ENDPOINT: {}", info.message);
            e
        })?;
        Ok(ManagedIdentityCredential {
            http,
            endpoint: Endpoint::AppService { url, header },
            client_id: None,
        })
    }

    /// Replaces the IMDS endpoint (tests point it at a local fake); no effect on an App
    /// Service identity.
    pub fn with_imds_endpoint(mut self, endpoint: &str) -> Result<Self, Error> {
        if let Endpoint::Imds(url) = &mut self.endpoint {
            *url = check_endpoint(endpoint, true)?;
        }
        Ok(self)
    }

    /// Uses the user-assigned identity with this client id.
    pub fn with_client_id(mut self, client_id: &str) -> Result<Self, Error> {
        check_id("client id (AZURE_CLIENT_ID)", client_id)?;
        self.client_id = Some(client_id.to_string());
        Ok(self)
    }
}

#[async_trait]
impl TokenCredential for ManagedIdentityCredential {
    async fn token(&self, scope: &str) -> Result<AccessToken, Error> {
        check_scope(scope)?;
        let (url, version, source, hint) = match &self.endpoint {
            Endpoint::Imds(url) => (
                url,
                "2018-02-01",
                "managed identity, IMDS",
                "check that a managed identity is assigned to this machine (for a user-assigned \
                 one, set AZURE_CLIENT_ID to its client id) and has a role on the account",
            ),
            Endpoint::AppService { url, .. } => (
                url,
                "2019-08-01",
                "managed identity, App Service",
                "check that the app's identity is turned on (for a user-assigned one, set \
                 AZURE_CLIENT_ID to its client id) and has a role on the account",
            ),
        };
        let mut request = HttpRequest::parse("GET", url)?;
        append_query(&mut request.url, "api-version", version);
        append_query(&mut request.url, "resource", scope_to_resource(scope));
        if let Some(id) = &self.client_id {
            append_query(&mut request.url, "client_id", id);
        }
        let mut redactor = Redactor::new();
        match &self.endpoint {
            Endpoint::Imds(_) => request.set_header("Metadata", "true"),
            Endpoint::AppService { header, .. } => {
                request.set_header("X-IDENTITY-HEADER", header.expose());
                redactor = redactor.with_secret(header.expose());
            }
        }
        self.http
            .fetch(request, source, hint, &redactor)
            .await
            .map_err(|e| match e {
                Error::Transport(_) | Error::Timeout(_) => not_reachable(e),
                other => other,
            })
    }
}

/// Says what an unreachable managed identity endpoint usually means.
fn not_reachable(mut e: Error) -> Error {
    let info = e.info_mut();
    info.message = format!(
        "{}; the managed identity endpoint did not answer: is this running on Azure with a \
         managed identity turned on? Elsewhere pick another FLOWCRAFT_AZURE_CREDENTIAL",
        info.message
    );
    e
}
