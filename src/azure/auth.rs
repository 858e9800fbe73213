//! Credentials and request signing for Azure Queue Storage and Cosmos DB, and the connection
//! strings that carry them.
//!
//! - [`SharedKeySigner`]: Storage SharedKey (`Authorization: SharedKey account:sig`);
//! - [`SasSigner`], [`account_sas`], [`queue_service_sas`]: shared access signatures;
//! - [`CosmosMasterKeySigner`], [`CosmosResourceTokenSigner`]: Cosmos `type=master` / resource
//!   tokens;
//! - Entra ID bearer tokens ([`entra`]): [`TokenCredential`] and its flows, the
//!   [`CachedCredential`], [`StorageBearerSigner`] and [`CosmosBearerSigner`];
//! - [`StorageConnection`], [`CosmosConnection`]: connection-string parsing, with HTTPS
//!   required except for loopback emulators (or when [`ConnectionOptions::allow_http`] says so).
//!
//! Every type that holds a key redacts it in `Debug` and `Display` (see [`Secret`]).

mod connection;
mod cosmos;
pub mod entra;
mod sas;
mod shared_key;

use std::fmt;

pub use connection::{
    ConnectionOptions, CosmosConnection, CosmosCredential, StorageConnection, StorageCredential,
    check_endpoint,
};
pub(crate) use connection::{account_from_endpoint, endpoint_url};
pub use cosmos::{
    CosmosMasterKeySigner, CosmosResourceTokenSigner, cosmos_resource, master_key_authorization,
};
pub use entra::{
    AccessToken, AzureCliCredential, CachedCredential, ClientSecretCredential, CosmosBearerSigner,
    CredentialKind, ManagedIdentityCredential, STORAGE_SCOPE, StorageBearerSigner, TokenCredential,
    TokenHttp, WorkloadIdentityCredential, cosmos_scope, credential_from_lookup,
};
pub use sas::{AccountSasOptions, SasSigner, ServiceSasOptions, account_sas, queue_service_sas};
pub use shared_key::{SharedKeySigner, shared_key_string_to_sign};

/// The marker that replaces secret values in `Debug`, `Display`, logs and recordings (the
/// same one the wire redactor writes).
pub use crate::wire::redact::REDACTED;

/// A secret string (account key, SAS token, resource token). `Debug` and `Display` print
/// `REDACTED`; only [`Secret::expose`] gives the value.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret value.
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    /// The secret value itself. Never log or format it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Secret({REDACTED})")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(REDACTED)
    }
}

/// A key: its decoded bytes and the base64 text it came from (for redaction). `Debug`
/// prints `REDACTED`.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct KeyBytes {
    bytes: Vec<u8>,
    text: String,
}

impl KeyBytes {
    /// Decodes a base64 account key; the error names `what` but never shows the value.
    pub(crate) fn from_base64(what: &str, base64_key: &str) -> Result<Self, crate::Error> {
        use base64::Engine as _;
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(base64_key.trim())
            .map_err(|_| {
                crate::Error::invalid_input(format!(
                    "the {what} is not valid base64; copy it again from the portal or the emulator docs"
                ))
            })?;
        if bytes.is_empty() {
            return Err(crate::Error::invalid_input(format!("the {what} is empty")));
        }
        Ok(KeyBytes {
            bytes,
            text: base64_key.trim().to_string(),
        })
    }

    /// The base64 text of the key (only for telling a [`crate::wire::redact::Redactor`]).
    pub(crate) fn text(&self) -> &str {
        &self.text
    }

    /// base64(HMAC-SHA256(key, message)).
    pub(crate) fn sign(&self, message: &str) -> String {
        use base64::Engine as _;
        use hmac::{Hmac, Mac};
        // HMAC accepts keys of any length, so `new_from_slice` cannot fail here; fall back to
        // an empty MAC value rather than panic if it ever did.
        match Hmac::<sha2::Sha256>::new_from_slice(&self.bytes) {
            Ok(mut mac) => {
                mac.update(message.as_bytes());
                base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
            }
            Err(_) => String::new(),
        }
    }
}

impl fmt::Debug for KeyBytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(REDACTED)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_redacts_in_debug_and_display() {
        let s = Secret::new("hunter2-key");
        assert_eq!(format!("{s}"), "REDACTED");
        assert!(!format!("{s:?}").contains("hunter2"));
        assert_eq!(s.expose(), "hunter2-key");
    }

    #[test]
    fn invalid_base64_key_error_does_not_echo_the_key() {
        let err = KeyBytes::from_base64("account key", "not*base64*SECRET")
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(err.contains("not valid base64"), "{err}");
        assert!(!err.contains("SECRET"), "{err}");
    }
}
