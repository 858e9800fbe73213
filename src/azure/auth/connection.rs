//! Connection strings: `UseDevelopmentStorage=true`, Azure Storage strings
//! (`DefaultEndpointsProtocol`, `AccountName`, `AccountKey`, `QueueEndpoint`,
//! `EndpointSuffix`, `SharedAccessSignature`) and Cosmos strings (`AccountEndpoint`,
//! `AccountKey`, or `ResourceToken`). Endpoints must be HTTPS unless the host is loopback or
//! [`ConnectionOptions::allow_http`] is set. Errors name the offending key, never a value
//! that could be secret.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::cosmos::{CosmosMasterKeySigner, CosmosResourceTokenSigner};
use super::entra::{CosmosBearerSigner, StorageBearerSigner};
use super::sas::SasSigner;
use super::shared_key::SharedKeySigner;
use crate::error::Error;
use crate::wire::encoding::is_dot_segment;
use crate::wire::pipeline::Signer;
use crate::wire::redact::Redactor;

/// Azurite's well-known development account (public, documented by Microsoft).
const DEV_ACCOUNT: &str = "devstoreaccount1";
/// Azurite's well-known development key (public, documented by Microsoft).
const DEV_KEY: &str =
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";
/// Azurite's default queue endpoint for `UseDevelopmentStorage=true`.
const DEV_QUEUE_ENDPOINT: &str = "http://127.0.0.1:10001/devstoreaccount1";

/// Options for parsing connection strings.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ConnectionOptions {
    /// Accept plain `http://` endpoints on non-loopback hosts (off by default: keys and
    /// data would cross the network unencrypted).
    pub allow_http: bool,
}

/// Checks that `endpoint` is an absolute http(s) URL, HTTPS unless its host is loopback
/// (`127.0.0.1`, `localhost`, `::1`) or `allow_http` is set. Returns it without a trailing
/// `/`.
pub fn check_endpoint(endpoint: &str, allow_http: bool) -> Result<String, Error> {
    let trimmed = endpoint.trim().trim_end_matches('/');
    // The URL parser silently drops control characters and inner whitespace, so the URL it
    // checks would differ from the text the clients use: refuse them instead.
    if trimmed.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return Err(Error::invalid_input(
            "the endpoint contains a control character or whitespace; expected e.g. https://account.queue.core.windows.net",
        ));
    }
    let url = url::Url::parse(trimmed).map_err(|e| {
        // The text may hold a SAS signature or a key pasted into the wrong place.
        let shown = Redactor::new().redact_url(trimmed);
        Error::invalid_input(format!(
            "the endpoint '{shown}' is not a valid URL ({e}); expected e.g. https://account.queue.core.windows.net"
        ))
    })?;
    let raw_path = trimmed
        .split_once("://")
        .and_then(|(_, rest)| rest.find('/').and_then(|at| rest.get(at..)))
        .unwrap_or("/");
    if raw_path.split('/').any(is_dot_segment) {
        return Err(Error::invalid_input(format!(
            "the endpoint path `{raw_path}` contains a `.` or `..` segment, which URL \
             normalisation would remove; give the account's path directly"
        )));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(Error::invalid_input(
            "the endpoint must not contain a query string or fragment; put a SAS token in `SharedAccessSignature`",
        ));
    }
    match url.scheme() {
        "https" => Ok(trimmed.to_string()),
        "http" if allow_http || is_loopback(&url) => Ok(trimmed.to_string()),
        "http" => Err(Error::invalid_input(format!(
            "the endpoint '{trimmed}' uses plain http on a non-loopback host; use https, or allow http explicitly (only for trusted networks)"
        ))),
        other => Err(Error::invalid_input(format!(
            "the endpoint '{trimmed}' has scheme '{other}'; expected https (or http for a local emulator)"
        ))),
    }
}

/// [`check_endpoint`], parsed: the base URL the REST clients extend by path segments.
pub(crate) fn endpoint_url(endpoint: &str, allow_http: bool) -> Result<url::Url, Error> {
    let checked = check_endpoint(endpoint, allow_http)?;
    url::Url::parse(&checked).map_err(|e| {
        Error::invalid_input(format!(
            "the endpoint is not a valid URL ({e}); expected e.g. https://account.queue.core.windows.net"
        ))
    })
}

fn is_loopback(url: &url::Url) -> bool {
    let host = bare_host(url);
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// The host without IPv6 brackets.
fn bare_host(url: &url::Url) -> &str {
    url.host_str()
        .unwrap_or_default()
        .trim_start_matches('[')
        .trim_end_matches(']')
}

/// Splits `Key=Value;Key=Value` (keys case-insensitive, values may contain `=`).
fn parse_pairs(text: &str, what: &str) -> Result<BTreeMap<String, String>, Error> {
    let mut pairs = BTreeMap::new();
    for part in text.split(';').map(str::trim).filter(|p| !p.is_empty()) {
        let Some((key, value)) = part.split_once('=') else {
            return Err(Error::invalid_input(format!(
                "the {what} connection string has a part without '=' (expected Key=Value;Key=Value)"
            )));
        };
        pairs.insert(key.trim().to_ascii_lowercase(), value.trim().to_string());
    }
    Ok(pairs)
}

/// How a storage connection authenticates.
#[derive(Debug, Clone)]
pub enum StorageCredential {
    /// Account key (SharedKey signing).
    SharedKey(SharedKeySigner),
    /// A SAS token appended to each request.
    Sas(SasSigner),
    /// An Entra ID bearer token (accounts with shared key access turned off).
    Token(StorageBearerSigner),
}

/// A parsed Storage connection: the queue endpoint (no trailing `/`), the account and how to
/// sign. `Debug` hides the key / token.
#[derive(Debug, Clone)]
pub struct StorageConnection {
    /// Queue service base URL, e.g. `http://127.0.0.1:11001/devstoreaccount1`.
    pub queue_endpoint: String,
    /// The storage account name.
    pub account: String,
    /// The credential.
    pub credential: StorageCredential,
}

impl StorageConnection {
    /// Parses a Storage connection string with default options (HTTPS unless loopback).
    pub fn parse(conn_str: &str) -> Result<Self, Error> {
        Self::parse_with(conn_str, ConnectionOptions::default())
    }

    /// Parses a Storage connection string.
    pub fn parse_with(conn_str: &str, options: ConnectionOptions) -> Result<Self, Error> {
        let pairs = parse_pairs(conn_str, "storage")?;
        let get = |k: &str| pairs.get(k).map(String::as_str).filter(|v| !v.is_empty());
        let dev = get("usedevelopmentstorage").is_some_and(|v| v.eq_ignore_ascii_case("true"));
        let account = get("accountname").or(dev.then_some(DEV_ACCOUNT));
        let endpoint = match (get("queueendpoint"), account) {
            (Some(e), _) => e.to_string(),
            (None, _) if dev => DEV_QUEUE_ENDPOINT.to_string(),
            (None, Some(a)) => format!(
                "{}://{a}.queue.{}",
                get("defaultendpointsprotocol").unwrap_or("https"),
                get("endpointsuffix").unwrap_or("core.windows.net")
            ),
            (None, None) => {
                return Err(Error::invalid_input(
                    "the storage connection string needs `AccountName` (or `QueueEndpoint`, or `UseDevelopmentStorage=true`)",
                ));
            }
        };
        let queue_endpoint = check_endpoint(&endpoint, options.allow_http)?;
        let account = match account {
            Some(a) => a.to_string(),
            None => account_from_endpoint(&queue_endpoint)?,
        };
        let key = get("accountkey").or(dev.then_some(DEV_KEY));
        let credential = match (key, get("sharedaccesssignature")) {
            (Some(key), _) => StorageCredential::SharedKey(SharedKeySigner::new(&account, key)?),
            (None, Some(sas)) => StorageCredential::Sas(SasSigner::new(sas)?),
            (None, None) => {
                return Err(Error::invalid_input(
                    "the storage connection string has no credential; add `AccountKey` or `SharedAccessSignature`",
                ));
            }
        };
        Ok(StorageConnection {
            queue_endpoint,
            account,
            credential,
        })
    }

    /// A redactor that knows this connection's key or SAS signature (for `--trace` files).
    pub fn redactor(&self) -> Redactor {
        match &self.credential {
            StorageCredential::SharedKey(s) => Redactor::new().with_secret(s.key_text()),
            StorageCredential::Sas(s) => Redactor::new().with_secret(s.sig_text()),
            // The token is only ever in the `Authorization` header, which is always redacted.
            StorageCredential::Token(_) => Redactor::new(),
        }
    }

    /// The signer for this connection's credential.
    pub fn signer(&self) -> Arc<dyn Signer> {
        match &self.credential {
            StorageCredential::SharedKey(s) => Arc::new(s.clone()),
            StorageCredential::Sas(s) => Arc::new(s.clone()),
            StorageCredential::Token(s) => Arc::new(s.clone()),
        }
    }
}

/// The account of a queue endpoint: the first path segment for loopback / IP hosts
/// (path-style, e.g. Azurite), else the first label of the host name.
pub(crate) fn account_from_endpoint(endpoint: &str) -> Result<String, Error> {
    let url = url::Url::parse(endpoint).map_err(|e| {
        Error::invalid_input(format!("the queue endpoint is not a valid URL ({e})"))
    })?;
    let host = bare_host(&url);
    let path_style =
        host.eq_ignore_ascii_case("localhost") || host.parse::<std::net::IpAddr>().is_ok();
    let account = if path_style {
        url.path_segments()
            .and_then(|mut s| s.next())
            .unwrap_or_default()
            .to_string()
    } else {
        url.host_str()
            .and_then(|h| h.split('.').next())
            .unwrap_or_default()
            .to_string()
    };
    if account.is_empty() {
        return Err(Error::invalid_input(
            "cannot tell the storage account from the queue endpoint; add `AccountName`",
        ));
    }
    Ok(account)
}

/// How a Cosmos connection authenticates.
#[derive(Debug, Clone)]
pub enum CosmosCredential {
    /// The account's master key.
    MasterKey(CosmosMasterKeySigner),
    /// A resource token passed through.
    ResourceToken(CosmosResourceTokenSigner),
    /// An Entra ID bearer token (accounts with local authentication turned off).
    Token(CosmosBearerSigner),
}

/// A parsed Cosmos connection. `Debug` hides the key / token.
#[derive(Debug, Clone)]
pub struct CosmosConnection {
    /// Account endpoint without trailing `/`, e.g. `http://127.0.0.1:18081`.
    pub endpoint: String,
    /// The credential.
    pub credential: CosmosCredential,
}

impl CosmosConnection {
    /// Parses `AccountEndpoint=...;AccountKey=...;` (or `ResourceToken=...`) with default
    /// options (HTTPS unless loopback).
    pub fn parse(conn_str: &str) -> Result<Self, Error> {
        Self::parse_with(conn_str, ConnectionOptions::default())
    }

    /// Parses a Cosmos connection string.
    pub fn parse_with(conn_str: &str, options: ConnectionOptions) -> Result<Self, Error> {
        let pairs = parse_pairs(conn_str, "Cosmos DB")?;
        let get = |k: &str| pairs.get(k).map(String::as_str).filter(|v| !v.is_empty());
        let endpoint = get("accountendpoint").ok_or_else(|| {
            Error::invalid_input(
                "the Cosmos DB connection string needs `AccountEndpoint=https://<account>.documents.azure.com:443/`",
            )
        })?;
        let endpoint = check_endpoint(endpoint, options.allow_http)?;
        let credential = match (get("accountkey"), get("resourcetoken")) {
            (Some(key), _) => CosmosCredential::MasterKey(CosmosMasterKeySigner::new(key)?),
            (None, Some(token)) => {
                CosmosCredential::ResourceToken(CosmosResourceTokenSigner::new(token)?)
            }
            (None, None) => {
                return Err(Error::invalid_input(
                    "the Cosmos DB connection string has no credential; add `AccountKey`",
                ));
            }
        };
        Ok(CosmosConnection {
            endpoint,
            credential,
        })
    }

    /// A redactor that knows this connection's key or resource token (for `--trace` files).
    pub fn redactor(&self) -> Redactor {
        match &self.credential {
            CosmosCredential::MasterKey(s) => Redactor::new().with_secret(s.key_text()),
            CosmosCredential::ResourceToken(s) => Redactor::new().with_secret(s.token_text()),
            // The token is only in the `authorization` header, which is always redacted.
            CosmosCredential::Token(_) => Redactor::new(),
        }
    }

    /// The signer for this connection's credential.
    pub fn signer(&self) -> Arc<dyn Signer> {
        match &self.credential {
            CosmosCredential::MasterKey(s) => Arc::new(s.clone()),
            CosmosCredential::ResourceToken(s) => Arc::new(s.clone()),
            CosmosCredential::Token(s) => Arc::new(s.clone()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoint_errors_never_show_a_sas_signature_or_key() {
        for bad in [
            "https://h/q?sv=2021&sig=SECRETSIG123",
            "http://acct.queue.core.windows.net/q?sig=SECRETSIG123",
            "no-scheme?sig=SECRETSIG123",
            "AccountKey=SECRETSIG123",
            "https://h/q#sig=SECRETSIG123",
        ] {
            let text = check_endpoint(bad, false)
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default();
            assert!(!text.is_empty(), "{bad} should be refused");
            assert!(!text.contains("SECRETSIG123"), "{text}");
        }
    }

    #[test]
    fn endpoint_keeps_its_text_without_trailing_slash() {
        assert_eq!(
            check_endpoint(" http://127.0.0.1:11001/devstoreaccount1/ ", false).ok(),
            Some("http://127.0.0.1:11001/devstoreaccount1".to_string())
        );
        assert!(check_endpoint("http://emulator:10001/acct", true).is_ok());
        assert!(check_endpoint("https://", false).is_err());
    }

    #[test]
    fn endpoints_with_dot_segments_are_refused() {
        for bad in [
            "http://127.0.0.1:11001/devstoreaccount1/..",
            "http://127.0.0.1:11001/devstoreaccount1/%2e%2e/other",
            "https://acct.documents.azure.com/./x",
        ] {
            let err = check_endpoint(bad, false).expect_err(bad);
            assert!(matches!(err, Error::InvalidInput(_)), "{bad}: {err:?}");
        }
    }
}
