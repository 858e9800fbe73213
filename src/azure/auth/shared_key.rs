//! Storage SharedKey signing: `Authorization: SharedKey <account>:<base64 HMAC-SHA256>` over
//! the canonical string-to-sign (emulator spec §3.1): verb, twelve standard headers,
//! canonical `x-ms-*` headers, then `/<account><url path as sent>` and the sorted, decoded
//! query parameters. For path-style emulator URLs the account therefore appears twice, as in
//! `/devstoreaccount1/devstoreaccount1/jobs/messages`.

use chrono::{DateTime, Utc};
use std::collections::BTreeMap;
use std::fmt;

use super::KeyBytes;
use crate::error::Error;
use crate::wire::clock::http_date;
use crate::wire::pipeline::Signer;
use crate::wire::transport::HttpRequest;

/// The standard headers of the string-to-sign, in order, after the verb. `Content-Length` is
/// taken from the body (empty when 0); the others from the request headers.
const STANDARD_HEADERS: [&str; 11] = [
    "content-encoding",
    "content-language",
    "content-length",
    "content-md5",
    "content-type",
    "date",
    "if-modified-since",
    "if-match",
    "if-none-match",
    "if-unmodified-since",
    "range",
];

/// Signs Storage requests with an account name and key. `Debug` hides the key.
#[derive(Clone)]
pub struct SharedKeySigner {
    account: String,
    key: KeyBytes,
}

impl fmt::Debug for SharedKeySigner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SharedKeySigner")
            .field("account", &self.account)
            .field("key", &self.key)
            .finish()
    }
}

impl SharedKeySigner {
    /// A signer for `account` with its base64 account key (fails if the key is not base64).
    pub fn new(account: impl Into<String>, base64_key: impl AsRef<str>) -> Result<Self, Error> {
        let account = account.into();
        if account.is_empty() {
            return Err(Error::invalid_input("the storage account name is empty"));
        }
        let key = KeyBytes::from_base64("storage account key", base64_key.as_ref())?;
        Ok(SharedKeySigner { account, key })
    }

    /// The account name.
    pub fn account(&self) -> &str {
        &self.account
    }

    /// The base64 account key, for registering with a redactor.
    pub(crate) fn key_text(&self) -> &str {
        self.key.text()
    }

    /// base64(HMAC-SHA256(key, text)): the raw signature over any string-to-sign (used by SAS).
    pub(crate) fn hmac(&self, text: &str) -> String {
        self.key.sign(text)
    }

    /// The `Authorization` value for a request that already carries its `x-ms-date`.
    pub fn authorization(&self, request: &HttpRequest) -> Result<String, Error> {
        let to_sign = shared_key_string_to_sign(&self.account, request)?;
        Ok(format!(
            "SharedKey {}:{}",
            self.account,
            self.key.sign(&to_sign)
        ))
    }
}

#[async_trait::async_trait]
impl Signer for SharedKeySigner {
    /// Sets `x-ms-date` to `now` and `Authorization` to the SharedKey signature.
    async fn sign(&self, request: &mut HttpRequest, now: DateTime<Utc>) -> Result<(), Error> {
        request.set_header("x-ms-date", http_date(now));
        let auth = self.authorization(request)?;
        request.set_header("Authorization", auth);
        Ok(())
    }
}

/// The SharedKey string-to-sign of a request (spec §3.1), exactly as the service computes it.
/// Public so tests and the replayer can show it when a signature does not match.
pub fn shared_key_string_to_sign(account: &str, request: &HttpRequest) -> Result<String, Error> {
    let url = &request.url;
    let mut out = String::new();
    out.push_str(request.method.as_str());
    out.push('\n');
    for name in STANDARD_HEADERS {
        if name == "content-length" {
            if !request.body.is_empty() {
                out.push_str(&request.body.len().to_string());
            }
        } else if let Some(value) = request.header(name) {
            out.push_str(value);
        }
        out.push('\n');
    }
    out.push_str(&canonical_ms_headers(request));
    out.push('/');
    out.push_str(account);
    out.push_str(url.path());
    for (name, values) in canonical_query(url) {
        out.push('\n');
        out.push_str(&name);
        out.push(':');
        out.push_str(&values.join(","));
    }
    Ok(out)
}

/// `x-ms-*` headers: lower-case names, sorted, first occurrence wins, values left-trimmed,
/// each as `name:value\n`.
fn canonical_ms_headers(request: &HttpRequest) -> String {
    let mut headers: BTreeMap<&str, &str> = BTreeMap::new();
    for (name, value) in &request.headers {
        let name = name.as_str();
        if let (true, Ok(value)) = (
            name.starts_with("x-ms-"),
            std::str::from_utf8(value.as_bytes()),
        ) {
            headers.entry(name).or_insert_with(|| value.trim_start());
        }
    }
    headers.iter().map(|(n, v)| format!("{n}:{v}\n")).collect()
}

/// Query parameters: lower-case names, sorted, decoded values (several values of one name
/// sorted and joined with commas).
fn canonical_query(url: &url::Url) -> BTreeMap<String, Vec<String>> {
    let mut params: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (name, value) in url.query_pairs() {
        params
            .entry(name.to_ascii_lowercase())
            .or_default()
            .push(value.into_owned());
    }
    for values in params.values_mut() {
        values.sort();
    }
    params
}
