//! Shared access signatures: generating account SAS and queue service SAS tokens with a
//! [`SharedKeySigner`]'s key (string-to-sign formats of the emulator spec §3.1), and
//! [`SasSigner`], which authenticates requests by appending a token to the query string.

use chrono::{DateTime, SecondsFormat, Utc};
use std::fmt;

use super::Secret;
use super::shared_key::SharedKeySigner;
use crate::error::Error;
use crate::wire::clock::http_date;
use crate::wire::encoding::{append_raw_query, encode_uri_component};
use crate::wire::pipeline::Signer;
use crate::wire::transport::HttpRequest;

/// The SAS version used when none is given: accepted by Azurite without extra flags.
pub const DEFAULT_SAS_VERSION: &str = "2021-12-02";

/// Fields of an account SAS (`ss`, `srt`, `sp`, ...).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccountSasOptions {
    /// `sp`: permissions, e.g. `"raup"` (read, add, update, process) or `"rwdlacup"`.
    pub permissions: String,
    /// `ss`: services, e.g. `"q"` for queues.
    pub services: String,
    /// `srt`: resource types, `s`ervice, `c`ontainer (queue), `o`bject (message).
    pub resource_types: String,
    /// `st`: not valid before (optional).
    pub start: Option<DateTime<Utc>>,
    /// `se`: expiry.
    pub expiry: DateTime<Utc>,
    /// `sip`: allowed IP or range (optional).
    pub ip: Option<String>,
    /// `spr`: `"https"` or `"https,http"` (optional).
    pub protocol: Option<String>,
    /// `sv`: the signed version.
    pub version: String,
    /// `ses`: encryption scope (optional; versions 2020-12-06 and later).
    pub encryption_scope: Option<String>,
}

impl AccountSasOptions {
    /// Queue-service account SAS with `permissions` for every resource type, expiring at
    /// `expiry`, HTTPS or HTTP, default version.
    pub fn queue(permissions: impl Into<String>, expiry: DateTime<Utc>) -> Self {
        AccountSasOptions {
            permissions: permissions.into(),
            services: "q".to_string(),
            resource_types: "sco".to_string(),
            start: None,
            expiry,
            ip: None,
            protocol: None,
            version: DEFAULT_SAS_VERSION.to_string(),
            encryption_scope: None,
        }
    }
}

/// Fields of a queue service SAS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceSasOptions {
    /// `sp`: permissions, e.g. `"raup"`.
    pub permissions: String,
    /// `st`: not valid before (optional).
    pub start: Option<DateTime<Utc>>,
    /// `se`: expiry.
    pub expiry: DateTime<Utc>,
    /// `si`: stored access policy identifier (optional).
    pub identifier: Option<String>,
    /// `sip`: allowed IP or range (optional).
    pub ip: Option<String>,
    /// `spr`: `"https"` or `"https,http"` (optional).
    pub protocol: Option<String>,
    /// `sv`: the signed version.
    pub version: String,
}

impl ServiceSasOptions {
    /// A service SAS with `permissions` expiring at `expiry`, default version.
    pub fn new(permissions: impl Into<String>, expiry: DateTime<Utc>) -> Self {
        ServiceSasOptions {
            permissions: permissions.into(),
            start: None,
            expiry,
            identifier: None,
            ip: None,
            protocol: None,
            version: DEFAULT_SAS_VERSION.to_string(),
        }
    }
}

/// SAS time format: ISO 8601 UTC to the second, `2026-11-26T21:00:00Z`.
fn sas_time(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// The account SAS string-to-sign: `account\nsp\nss\nsrt\nst\nse\nsip\nspr\nsv\n`, plus the
/// encryption-scope line `ses\n` from version 2020-12-06 on.
pub(crate) fn account_sas_string_to_sign(account: &str, o: &AccountSasOptions) -> String {
    let mut fields = vec![
        account.to_string(),
        o.permissions.clone(),
        o.services.clone(),
        o.resource_types.clone(),
        o.start.map(sas_time).unwrap_or_default(),
        sas_time(o.expiry),
        o.ip.clone().unwrap_or_default(),
        o.protocol.clone().unwrap_or_default(),
        o.version.clone(),
    ];
    if o.version.as_str() >= "2020-12-06" {
        fields.push(o.encryption_scope.clone().unwrap_or_default());
    }
    let mut text = fields.join("\n");
    text.push('\n');
    text
}

/// Generates an account SAS token (query string without `?`), signed with `key`'s account key.
pub fn account_sas(key: &SharedKeySigner, options: &AccountSasOptions) -> String {
    let sig = key.hmac(&account_sas_string_to_sign(key.account(), options));
    let mut params = vec![
        ("sv", options.version.clone()),
        ("ss", options.services.clone()),
        ("srt", options.resource_types.clone()),
        ("sp", options.permissions.clone()),
    ];
    if let Some(st) = options.start {
        params.push(("st", sas_time(st)));
    }
    params.push(("se", sas_time(options.expiry)));
    push_optional(&mut params, "sip", &options.ip);
    push_optional(&mut params, "spr", &options.protocol);
    if options.version.as_str() >= "2020-12-06" {
        push_optional(&mut params, "ses", &options.encryption_scope);
    }
    params.push(("sig", sig));
    query_string(&params)
}

/// The queue service SAS string-to-sign: `sp\nst\nse\n/queue/<account>/<queue>\nsi\nsip\nspr\nsv`.
pub(crate) fn queue_sas_string_to_sign(
    account: &str,
    queue: &str,
    o: &ServiceSasOptions,
) -> String {
    [
        o.permissions.clone(),
        o.start.map(sas_time).unwrap_or_default(),
        sas_time(o.expiry),
        format!("/queue/{account}/{queue}"),
        o.identifier.clone().unwrap_or_default(),
        o.ip.clone().unwrap_or_default(),
        o.protocol.clone().unwrap_or_default(),
        o.version.clone(),
    ]
    .join("\n")
}

/// Generates a service SAS token for one queue (query string without `?`).
pub fn queue_service_sas(
    key: &SharedKeySigner,
    queue: &str,
    options: &ServiceSasOptions,
) -> String {
    let sig = key.hmac(&queue_sas_string_to_sign(key.account(), queue, options));
    let mut params = vec![("sv", options.version.clone())];
    if let Some(st) = options.start {
        params.push(("st", sas_time(st)));
    }
    params.push(("se", sas_time(options.expiry)));
    params.push(("sp", options.permissions.clone()));
    push_optional(&mut params, "sip", &options.ip);
    push_optional(&mut params, "spr", &options.protocol);
    push_optional(&mut params, "si", &options.identifier);
    params.push(("sig", sig));
    query_string(&params)
}

fn push_optional(
    params: &mut Vec<(&'static str, String)>,
    name: &'static str,
    value: &Option<String>,
) {
    if let Some(v) = value.as_ref().filter(|v| !v.is_empty()) {
        params.push((name, v.clone()));
    }
}

fn query_string(params: &[(&str, String)]) -> String {
    params
        .iter()
        .map(|(n, v)| format!("{n}={}", encode_uri_component(v)))
        .collect::<Vec<_>>()
        .join("&")
}

/// Authenticates requests by appending a SAS token to the query string. `Debug` hides it.
#[derive(Clone)]
pub struct SasSigner {
    token: Secret,
}

impl fmt::Debug for SasSigner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SasSigner")
            .field("token", &self.token)
            .finish()
    }
}

impl SasSigner {
    /// A signer for a token as found in a connection string or a portal URL (a leading `?`
    /// is dropped). Fails if the token has no `sig=` parameter.
    pub fn new(token: impl Into<String>) -> Result<Self, Error> {
        let token = token.into();
        let token = token.trim().trim_start_matches('?').to_string();
        if !token.split('&').any(|p| p.starts_with("sig=")) {
            return Err(Error::invalid_input(
                "the SAS token has no `sig=` parameter; copy the whole token",
            ));
        }
        Ok(SasSigner {
            token: Secret::new(token),
        })
    }
}

impl SasSigner {
    /// The token's `sig` value (as written in the token), for registering with a redactor.
    pub(crate) fn sig_text(&self) -> &str {
        self.token
            .expose()
            .split('&')
            .find_map(|p| p.strip_prefix("sig="))
            .unwrap_or_default()
    }
}

#[async_trait::async_trait]
impl Signer for SasSigner {
    /// Sets `x-ms-date` (not signed, but useful to the service's logs) and appends the token.
    async fn sign(&self, request: &mut HttpRequest, now: DateTime<Utc>) -> Result<(), Error> {
        request.set_header("x-ms-date", http_date(now));
        append_raw_query(&mut request.url, self.token.expose());
        Ok(())
    }
}
