//! Cosmos DB request authorization: master-key signatures and resource tokens.
//!
//! Master key (emulator spec §6): the `Authorization` value is
//! `encodeURIComponent("type=master&ver=1.0&sig=" + base64(HMAC-SHA256(key, string)))` where
//! the string is `verb\ntype\nlink\ndate\n\n` with verb, type and date lower-cased and
//! the link keeping its case. Type and link come from the URL path ([`cosmos_resource`]): an
//! item path (`dbs/db/colls/c/docs/d`, even segment count) is its own link and its type is
//! the second-to-last segment; a feed path (`dbs/db/colls/c/docs`, odd segment count) has
//! the last segment as type and the parent as link.

use chrono::{DateTime, Utc};
use std::fmt;

use super::{KeyBytes, Secret};
use crate::error::Error;
use crate::wire::clock::http_date;
use crate::wire::encoding::{encode_uri_component, percent_decode};
use crate::wire::pipeline::Signer;
use crate::wire::transport::HttpRequest;

/// The resource type and resource link of a Cosmos URL path (percent-escapes decoded).
///
/// ```
/// use flowcraft_azure::azure::auth::cosmos_resource;
/// assert_eq!(cosmos_resource("/dbs/db1/colls/c1/docs/d1"),
///            ("docs".to_string(), "dbs/db1/colls/c1/docs/d1".to_string()));
/// assert_eq!(cosmos_resource("/dbs/db1/colls/c1/docs"),
///            ("docs".to_string(), "dbs/db1/colls/c1".to_string()));
/// ```
pub fn cosmos_resource(path: &str) -> (String, String) {
    let segments: Vec<String> = path
        .split('/')
        .filter(|s| !s.is_empty())
        .map(percent_decode)
        .collect();
    let n = segments.len();
    if n == 0 {
        return (String::new(), String::new());
    }
    if n % 2 == 0 {
        let kind = segments.get(n - 2).cloned().unwrap_or_default();
        (kind, segments.join("/"))
    } else {
        let kind = segments.get(n - 1).cloned().unwrap_or_default();
        let parent = segments
            .get(..n - 1)
            .map(|p| p.join("/"))
            .unwrap_or_default();
        (kind, parent)
    }
}

/// The master-key `Authorization` value (already URL-encoded) for one request.
pub fn master_key_authorization(
    key: &CosmosMasterKeySigner,
    verb: &str,
    resource_type: &str,
    resource_link: &str,
    date: &str,
) -> String {
    let to_sign = format!(
        "{}\n{}\n{}\n{}\n\n",
        verb.to_lowercase(),
        resource_type.to_lowercase(),
        resource_link,
        date.to_lowercase()
    );
    let sig = key.key.sign(&to_sign);
    encode_uri_component(&format!("type=master&ver=1.0&sig={sig}"))
}

/// Signs Cosmos requests with the account's master key. `Debug` hides the key.
#[derive(Clone)]
pub struct CosmosMasterKeySigner {
    key: KeyBytes,
}

impl fmt::Debug for CosmosMasterKeySigner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CosmosMasterKeySigner")
            .field("key", &self.key)
            .finish()
    }
}

impl CosmosMasterKeySigner {
    /// A signer for a base64 master key (fails if the key is not base64).
    pub fn new(base64_key: impl AsRef<str>) -> Result<Self, Error> {
        Ok(CosmosMasterKeySigner {
            key: KeyBytes::from_base64("Cosmos DB key", base64_key.as_ref())?,
        })
    }
}

impl CosmosMasterKeySigner {
    /// The base64 key, for registering with a redactor.
    pub(crate) fn key_text(&self) -> &str {
        self.key.text()
    }
}

#[async_trait::async_trait]
impl Signer for CosmosMasterKeySigner {
    /// Sets `x-ms-date` to `now` and `authorization` for the method and URL path.
    async fn sign(&self, request: &mut HttpRequest, now: DateTime<Utc>) -> Result<(), Error> {
        let (kind, link) = cosmos_resource(request.url.path());
        let date = http_date(now);
        let auth = master_key_authorization(self, request.method.as_str(), &kind, &link, &date);
        request.set_header("x-ms-date", date);
        request.set_header("authorization", auth);
        Ok(())
    }
}

/// Authenticates with a resource token (from a Cosmos permission) passed through as is.
/// `Debug` hides the token.
#[derive(Clone)]
pub struct CosmosResourceTokenSigner {
    token: Secret,
}

impl fmt::Debug for CosmosResourceTokenSigner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CosmosResourceTokenSigner")
            .field("token", &self.token)
            .finish()
    }
}

impl CosmosResourceTokenSigner {
    /// A signer for a resource token, either raw (`type=resource&ver=1.0&sig=...`) or already
    /// URL-encoded (`type%3Dresource...`); it is sent URL-encoded.
    pub fn new(token: impl Into<String>) -> Result<Self, Error> {
        let token = token.into().trim().to_string();
        if token.is_empty() {
            return Err(Error::invalid_input("the Cosmos resource token is empty"));
        }
        let encoded = if token.contains('=') {
            encode_uri_component(&token)
        } else {
            token
        };
        Ok(CosmosResourceTokenSigner {
            token: Secret::new(encoded),
        })
    }
}

impl CosmosResourceTokenSigner {
    /// The (URL-encoded) token, for registering with a redactor.
    pub(crate) fn token_text(&self) -> &str {
        self.token.expose()
    }
}

#[async_trait::async_trait]
impl Signer for CosmosResourceTokenSigner {
    /// Sets `x-ms-date` to `now` and `authorization` to the token.
    async fn sign(&self, request: &mut HttpRequest, now: DateTime<Utc>) -> Result<(), Error> {
        request.set_header("x-ms-date", http_date(now));
        request.set_header("authorization", self.token.expose());
        Ok(())
    }
}
