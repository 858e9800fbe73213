//! Secret redaction for anything that leaves the process as text: recorded traffic, logs,
//! diffs. A [`Redactor`] replaces with the fixed marker `REDACTED`:
//! - the values of `Authorization`-like headers;
//! - SAS `sig` query parameters, and `sig=...` / `sig%3D...` anywhere in text;
//! - `AccountKey=...` anywhere in text (connection strings in bodies or messages);
//! - OAuth token traffic: `client_secret=`, `client_assertion=` (form bodies) and
//!   `"access_token":"..."` / `"accessToken":"..."` (token answers);
//! - every occurrence of a known secret it was given ([`Redactor::with_secret`]), also in
//!   its URL-encoded form;
//! - any header or query parameter on the user's deny list.
//!
//! [`find_leaks`] is the opposite check: it scans text for the well-known public dev keys and
//! for unredacted signatures, for tests that guard committed fixtures.

use std::fmt;

use crate::wire::encoding::{encode_unreserved, percent_decode};

/// The marker written in place of a secret.
pub const REDACTED: &str = "REDACTED";

/// Headers whose values are always credentials.
const SECRET_HEADERS: [&str; 5] = [
    "authorization",
    "x-identity-header",
    "proxy-authorization",
    "x-ms-copy-source-authorization",
    "ocp-apim-subscription-key",
];

/// Markers (lower case) after which a value is always a secret, anywhere in text.
const TEXT_MARKERS: [&str; 9] = [
    "accountkey=",
    "sig=",
    "sig%3d",
    "client_secret=",
    "client_assertion=",
    "\"access_token\":\"",
    "\"access_token\": \"",
    "\"accesstoken\":\"",
    "\"accesstoken\": \"",
];

/// Well-known public keys that must never appear in committed fixtures: Azurite's dev key,
/// the Cosmos emulator key and Microsoft's documented Cosmos example keys.
pub const WELL_KNOWN_KEYS: [&str; 4] = [
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==",
    "C2y6yDjf5/R+ob0N8A7Cgv30VRDJIWEHLM+4QDU5DE2nQ9nDuVTqobD4b8mGGyPMbIZnqyMsEcaGQy67XIw/Jw==",
    "dsZQi3KtZmCv1ljt3VNWNm7sQUF1y5rJfC6kv5JiwvW0EndXdDku/dkKBp8/ufDToSxLzR4y+O/0H/t4bQtVNw==",
    "dsZQi3KtZmCv1ljt3VNWNm7sQUF1y5rJfC6kv5JiwvW0EndXdDku/dkKBp8/ufDToSxL/nrisQ/cqY6/7gocLA==",
];

/// Replaces secrets in URLs, headers and text with `REDACTED`. `Debug` shows only counts.
#[derive(Clone, Default)]
pub struct Redactor {
    secrets: Vec<String>,
    deny_headers: Vec<String>,
    deny_query: Vec<String>,
}

impl fmt::Debug for Redactor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Redactor")
            .field("known_secrets", &self.secrets.len())
            .field("deny_headers", &self.deny_headers)
            .field("deny_query", &self.deny_query)
            .finish()
    }
}

impl Redactor {
    /// A redactor with the built-in rules only (auth headers, `sig`, `AccountKey=`).
    pub fn new() -> Self {
        Redactor::default()
    }

    /// Also scrubs every occurrence of `secret` (and its URL-encoded form). Empty or very
    /// short values (under 4 characters) are ignored: they would mangle ordinary text.
    pub fn with_secret(mut self, secret: impl Into<String>) -> Self {
        let secret = secret.into();
        if secret.chars().count() >= 4 {
            let encoded = encode_unreserved(&secret);
            if encoded != secret {
                self.secrets.push(encoded);
            }
            self.secrets.push(secret);
            // Longest first, so a secret containing another is replaced whole.
            self.secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
        }
        self
    }

    /// Also knows everything `other` knows (secrets, denied headers and query parameters), e.g.
    /// to redact one trace file that carries both Queue Storage and Cosmos DB traffic.
    pub fn and(mut self, other: Redactor) -> Self {
        for secret in other.secrets {
            if !self.secrets.contains(&secret) {
                self.secrets.push(secret);
            }
        }
        self.secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
        self.deny_headers.extend(other.deny_headers);
        self.deny_query.extend(other.deny_query);
        self
    }

    /// Also redacts the value of this header (case-insensitive).
    pub fn deny_header(mut self, name: impl Into<String>) -> Self {
        self.deny_headers.push(name.into().to_ascii_lowercase());
        self
    }

    /// Also redacts the value of this query parameter (case-insensitive).
    pub fn deny_query_param(mut self, name: impl Into<String>) -> Self {
        self.deny_query.push(name.into().to_ascii_lowercase());
        self
    }

    /// True if the value of header `name` is replaced entirely.
    pub fn is_secret_header(&self, name: &str) -> bool {
        let lower = name.to_ascii_lowercase();
        SECRET_HEADERS.contains(&lower.as_str()) || self.deny_headers.contains(&lower)
    }

    /// True if the value of query parameter `name` is replaced entirely.
    pub fn is_secret_query_param(&self, name: &str) -> bool {
        let lower = name.to_ascii_lowercase();
        lower == "sig" || self.deny_query.contains(&lower)
    }

    /// Redacts known secrets and the generic `AccountKey=` / `sig=` patterns in free text.
    pub fn redact_text(&self, text: &str) -> String {
        let mut out = text.to_string();
        for secret in &self.secrets {
            if out.contains(secret.as_str()) {
                out = out.replace(secret.as_str(), REDACTED);
            }
        }
        for marker in TEXT_MARKERS {
            out = redact_after(&out, marker);
        }
        out
    }

    /// Redacts a URL: `sig` and denied query values become `REDACTED`, then
    /// [`Redactor::redact_text`] runs over the whole string.
    pub fn redact_url(&self, url: &str) -> String {
        let (base, query) = match url.split_once('?') {
            Some((b, q)) => (b, Some(q)),
            None => (url, None),
        };
        let Some(query) = query else {
            return self.redact_text(url);
        };
        let params: Vec<String> = query
            .split('&')
            .map(|pair| match pair.split_once('=') {
                Some((name, _)) if self.is_secret_query_param(&percent_decode(name)) => {
                    format!("{name}={REDACTED}")
                }
                _ => pair.to_string(),
            })
            .collect();
        self.redact_text(&format!("{base}?{}", params.join("&")))
    }

    /// Redacts header values: credential headers and denied headers entirely, the rest
    /// through [`Redactor::redact_text`]. Names and order are kept.
    pub fn redact_headers(&self, headers: &[(String, String)]) -> Vec<(String, String)> {
        headers
            .iter()
            .map(|(name, value)| {
                let value = if self.is_secret_header(name) {
                    REDACTED.to_string()
                } else {
                    self.redact_text(value)
                };
                (name.clone(), value)
            })
            .collect()
    }
}

/// True for characters that can be part of a key or signature value (base64, URL-encoded).
fn is_value_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '+' | '/' | '=' | '%' | '-' | '_' | '.')
}

/// Replaces the value after each case-insensitive `marker` (which must start at a word
/// boundary) up to the next delimiter with `REDACTED`; already-redacted values stay as is.
fn redact_after(text: &str, marker: &str) -> String {
    let lower = text.to_ascii_lowercase();
    let mut out = String::with_capacity(text.len());
    let mut pos = 0;
    while let Some(found) = lower.get(pos..).and_then(|rest| rest.find(marker)) {
        let start = pos + found;
        let value_start = start + marker.len();
        let at_boundary = is_boundary(lower.get(..start).unwrap_or_default());
        out.push_str(text.get(pos..value_start).unwrap_or_default());
        let rest = text.get(value_start..).unwrap_or_default();
        let value_len: usize = rest
            .chars()
            .take_while(|c| is_value_char(*c))
            .map(char::len_utf8)
            .sum();
        if at_boundary && value_len > 0 {
            out.push_str(REDACTED);
        } else {
            out.push_str(rest.get(..value_len).unwrap_or_default());
        }
        pos = value_start + value_len;
    }
    out.push_str(text.get(pos..).unwrap_or_default());
    out
}

/// True if a marker may start after `before` (lower-cased text): at the start, after a
/// non-alphanumeric character, or after an encoded `&`, `?`, `;` or space.
fn is_boundary(before: &str) -> bool {
    ["%26", "%3f", "%3b", "%20"]
        .iter()
        .any(|e| before.ends_with(e))
        || before
            .chars()
            .next_back()
            .is_none_or(|c| !c.is_ascii_alphanumeric())
}

/// Finds secrets that must not be committed: the well-known public keys (plain or
/// URL-encoded) and `sig=` / `sig%3D` values of 20 or more signature characters. Returns
/// one short description per finding (never the full secret).
pub fn find_leaks(text: &str) -> Vec<String> {
    let mut found = Vec::new();
    for key in WELL_KNOWN_KEYS {
        if text.contains(key) || text.contains(&encode_unreserved(key)) {
            found.push(format!(
                "well-known key {}...",
                key.get(..8).unwrap_or_default()
            ));
        }
    }
    let lower = text.to_ascii_lowercase();
    for marker in ["sig=", "sig%3d"] {
        let mut pos = 0;
        while let Some(at) = lower.get(pos..).and_then(|r| r.find(marker)) {
            let value_start = pos + at + marker.len();
            let value: String = text
                .get(value_start..)
                .unwrap_or_default()
                .chars()
                .take_while(|c| is_value_char(*c))
                .collect();
            if value.len() >= 20 && value != REDACTED {
                found.push(format!(
                    "unredacted signature {marker}{}...",
                    value.get(..4).unwrap_or_default()
                ));
            }
            pos = value_start;
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generic_rules_scrub_account_key_and_sig_anywhere() {
        let r = Redactor::new();
        let text = "DefaultEndpointsProtocol=http;AccountName=a;AccountKey=abc+/=;QueueEndpoint=x";
        assert_eq!(
            r.redact_text(text),
            "DefaultEndpointsProtocol=http;AccountName=a;AccountKey=REDACTED;QueueEndpoint=x"
        );
        assert_eq!(
            r.redact_text("u?sv=1&sig=a%2Bb&sp=r"),
            "u?sv=1&sig=REDACTED&sp=r"
        );
        assert_eq!(
            r.redact_text("type%3Dmaster%26ver%3D1.0%26sig%3Dabc%2B%3D"),
            "type%3Dmaster%26ver%3D1.0%26sig%3DREDACTED"
        );
        // Not at a word boundary: left alone.
        assert_eq!(r.redact_text("mysig=value"), "mysig=value");
    }

    #[test]
    fn oauth_secrets_and_tokens_are_scrubbed_in_forms_and_answers() {
        let r = Redactor::new();
        assert_eq!(
            r.redact_text(
                "grant_type=client_credentials&client_id=c&client_secret=s3cr%2Bt&scope=x"
            ),
            "grant_type=client_credentials&client_id=c&client_secret=REDACTED&scope=x"
        );
        assert_eq!(
            r.redact_text("client_assertion_type=urn&client_assertion=eyJ.a-b_c.d"),
            "client_assertion_type=urn&client_assertion=REDACTED"
        );
        assert_eq!(
            r.redact_text(
                r#"{"token_type":"Bearer","access_token":"eyJ0.x_y-z.q","expires_in":1}"#
            ),
            r#"{"token_type":"Bearer","access_token":"REDACTED","expires_in":1}"#
        );
        assert_eq!(
            r.redact_text(r#"{"accessToken": "eyJ0.x_y-z.q"}"#),
            r#"{"accessToken": "REDACTED"}"#
        );
        assert!(r.is_secret_header("X-IDENTITY-HEADER"));
    }

    #[test]
    fn known_secrets_are_scrubbed_plain_and_url_encoded() {
        let r = Redactor::new().with_secret("k3y+/value==");
        assert_eq!(r.redact_text("a k3y+/value== b"), "a REDACTED b");
        assert_eq!(r.redact_text("q=k3y%2B%2Fvalue%3D%3D"), "q=REDACTED");
        // Too short to be a secret: ignored instead of mangling text.
        assert_eq!(
            Redactor::new().with_secret("a").redact_text("banana"),
            "banana"
        );
    }

    #[test]
    fn url_sig_and_denied_params_are_redacted_others_kept() {
        let r = Redactor::new().deny_query_param("popreceipt");
        assert_eq!(
            r.redact_url("http://h/q/messages/1?popreceipt=AbC%3D&sv=2021&SIG=xyz"),
            "http://h/q/messages/1?popreceipt=REDACTED&sv=2021&SIG=REDACTED"
        );
        assert_eq!(r.redact_url("http://h/q"), "http://h/q");
    }

    #[test]
    fn auth_and_denied_headers_are_replaced_whole() {
        let r = Redactor::new().deny_header("X-Api-Token");
        let headers = vec![
            ("Authorization".to_string(), "SharedKey a:sig".to_string()),
            ("x-api-token".to_string(), "t0ken".to_string()),
            ("x-ms-version".to_string(), "2021-12-02".to_string()),
        ];
        let out = r.redact_headers(&headers);
        assert_eq!(out[0].1, REDACTED);
        assert_eq!(out[1].1, REDACTED);
        assert_eq!(out[2].1, "2021-12-02");
    }

    #[test]
    fn find_leaks_spots_planted_keys_and_long_signatures_only() {
        let planted = format!(
            "{{\"url\":\"http://h/q?sig=abcdefghijklmnopqrstuvwxyz12%3D\",\"k\":\"{}\"}}",
            WELL_KNOWN_KEYS[0]
        );
        assert_eq!(find_leaks(&planted).len(), 2, "{:?}", find_leaks(&planted));
        assert!(find_leaks("sig=REDACTED&sig=short").is_empty());
        let redacted = Redactor::new()
            .with_secret(WELL_KNOWN_KEYS[0])
            .redact_url(&planted);
        assert!(find_leaks(&redacted).is_empty(), "{redacted}");
    }
}
