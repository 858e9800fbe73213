//! Request signers that send an Entra ID token: Storage (`Authorization: Bearer <token>`,
//! `x-ms-version` at least [`MIN_BEARER_STORAGE_VERSION`]) and Cosmos DB (`authorization:
//! type%3Daad%26ver%3D1.0%26sig%3D<token>`). Both set `x-ms-date` and get the token from a
//! [`TokenCredential`], normally a shared [`super::CachedCredential`].

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use std::sync::Arc;

use super::{STORAGE_SCOPE, TokenCredential, check_scope};
use crate::error::Error;
use crate::wire::clock::http_date;
use crate::wire::encoding::encode_uri_component;
use crate::wire::pipeline::Signer;
use crate::wire::transport::HttpRequest;

/// The oldest Storage service version that accepts bearer tokens.
pub const MIN_BEARER_STORAGE_VERSION: &str = "2017-11-09";

/// Signs Storage requests with a bearer token for [`STORAGE_SCOPE`] (or another scope).
#[derive(Debug, Clone)]
pub struct StorageBearerSigner {
    credential: Arc<dyn TokenCredential>,
    scope: String,
}

impl StorageBearerSigner {
    /// A signer whose tokens come from `credential`, for [`STORAGE_SCOPE`].
    pub fn new(credential: Arc<dyn TokenCredential>) -> Self {
        StorageBearerSigner {
            credential,
            scope: STORAGE_SCOPE.to_string(),
        }
    }

    /// Replaces the scope.
    pub fn with_scope(mut self, scope: &str) -> Result<Self, Error> {
        check_scope(scope)?;
        self.scope = scope.to_string();
        Ok(self)
    }

    /// The scope tokens are requested for.
    pub fn scope(&self) -> &str {
        &self.scope
    }
}

#[async_trait]
impl Signer for StorageBearerSigner {
    /// Sets `x-ms-date`, raises a missing or older `x-ms-version` to
    /// [`MIN_BEARER_STORAGE_VERSION`], and sets `Authorization: Bearer <token>`.
    async fn sign(&self, request: &mut HttpRequest, now: DateTime<Utc>) -> Result<(), Error> {
        let token = self.credential.token(&self.scope).await?;
        request.set_header("x-ms-date", http_date(now));
        // Versions are ISO dates, so text order is date order.
        if request
            .header("x-ms-version")
            .is_none_or(|v| v < MIN_BEARER_STORAGE_VERSION)
        {
            request.set_header("x-ms-version", MIN_BEARER_STORAGE_VERSION);
        }
        request.set_header("Authorization", format!("Bearer {}", token.token.expose()));
        Ok(())
    }
}

/// Signs Cosmos DB requests with a bearer token for the account's scope
/// ([`super::cosmos_scope`]).
#[derive(Debug, Clone)]
pub struct CosmosBearerSigner {
    credential: Arc<dyn TokenCredential>,
    scope: String,
}

impl CosmosBearerSigner {
    /// A signer whose tokens come from `credential`, for `scope`
    /// (`https://<account>.documents.azure.com/.default`).
    pub fn new(credential: Arc<dyn TokenCredential>, scope: &str) -> Result<Self, Error> {
        check_scope(scope)?;
        Ok(CosmosBearerSigner {
            credential,
            scope: scope.to_string(),
        })
    }

    /// The scope tokens are requested for.
    pub fn scope(&self) -> &str {
        &self.scope
    }
}

#[async_trait]
impl Signer for CosmosBearerSigner {
    /// Sets `x-ms-date` and `authorization` to the URL-encoded `type=aad&ver=1.0&sig=<token>`.
    async fn sign(&self, request: &mut HttpRequest, now: DateTime<Utc>) -> Result<(), Error> {
        let token = self.credential.token(&self.scope).await?;
        request.set_header("x-ms-date", http_date(now));
        request.set_header(
            "authorization",
            encode_uri_component(&format!("type=aad&ver=1.0&sig={}", token.token.expose())),
        );
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::azure::auth::Secret;
    use crate::azure::auth::entra::AccessToken;
    use chrono::TimeZone;

    #[derive(Debug)]
    struct Fixed;

    #[async_trait]
    impl TokenCredential for Fixed {
        async fn token(&self, scope: &str) -> Result<AccessToken, Error> {
            Ok(AccessToken {
                token: Secret::new(format!("eyJ.tok-for-{}", scope.len())),
                expires_on: Utc::now() + chrono::Duration::hours(1),
            })
        }
    }

    fn now() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, 29, 10, 0, 0)
            .single()
            .unwrap_or_default()
    }

    #[tokio::test]
    async fn storage_requests_carry_the_bearer_token_and_a_version_that_accepts_it() {
        let signer = StorageBearerSigner::new(Arc::new(Fixed));
        let mut old =
            HttpRequest::parse("GET", "https://a.queue.core.windows.net/q").expect("valid request");
        old.set_header("x-ms-version", "2015-02-21");
        signer.sign(&mut old, now()).await.unwrap();
        let expected = format!("Bearer eyJ.tok-for-{}", STORAGE_SCOPE.len());
        assert_eq!(old.header("authorization"), Some(expected.as_str()));
        assert_eq!(old.header("x-ms-version"), Some(MIN_BEARER_STORAGE_VERSION));
        assert_eq!(
            old.header("x-ms-date"),
            Some("Sun, 29 Nov 2026 10:00:00 GMT")
        );
        let mut new =
            HttpRequest::parse("GET", "https://a.queue.core.windows.net/q").expect("valid request");
        new.set_header("x-ms-version", "2021-12-02");
        signer.sign(&mut new, now()).await.unwrap();
        assert_eq!(new.header("x-ms-version"), Some("2021-12-02"));
    }

    #[tokio::test]
    async fn cosmos_requests_carry_the_url_encoded_aad_token() {
        let scope = "https://acct.documents.azure.com/.default";
        let signer = CosmosBearerSigner::new(Arc::new(Fixed), scope).unwrap();
        let mut request = HttpRequest::parse("GET", "https://acct.documents.azure.com/dbs")
            .expect("valid request");
        signer.sign(&mut request, now()).await.unwrap();
        assert_eq!(
            request.header("authorization").map(str::to_string),
            Some(format!(
                "type%3Daad%26ver%3D1.0%26sig%3DeyJ.tok-for-{}",
                scope.len()
            ))
        );
        assert!(CosmosBearerSigner::new(Arc::new(Fixed), "").is_err());
    }
}
