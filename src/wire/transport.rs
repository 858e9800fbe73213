//! The [`Transport`] seam: one HTTP exchange, request in, response out. Real traffic goes over
//! reqwest; tests and audits wrap or replace it (recorder, replayer, fault injection).

use async_trait::async_trait;
use std::fmt;

use crate::error::Error;

/// One HTTP request, fully built (and signed, once it reaches a transport).
#[derive(Clone, PartialEq, Eq)]
pub struct HttpRequest {
    /// Upper-case HTTP method, e.g. `"GET"`.
    pub method: String,
    /// The absolute URL as sent, query string included.
    pub url: String,
    /// Headers in the order they are sent. Names as given (compare case-insensitively).
    pub headers: Vec<(String, String)>,
    /// The body bytes (empty for none).
    pub body: Vec<u8>,
    /// Which attempt this is (1 for the first); metadata for recorders, never sent.
    pub attempt: u32,
}

impl HttpRequest {
    /// A request with no headers and no body.
    pub fn new(method: &str, url: impl Into<String>) -> Self {
        HttpRequest {
            method: method.to_ascii_uppercase(),
            url: url.into(),
            headers: Vec::new(),
            body: Vec::new(),
            attempt: 1,
        }
    }

    /// The first value of a header, compared case-insensitively.
    pub fn header(&self, name: &str) -> Option<&str> {
        find_header(&self.headers, name)
    }

    /// Replaces (or adds) a header.
    pub fn set_header(&mut self, name: &str, value: impl Into<String>) {
        self.headers.retain(|(n, _)| !n.eq_ignore_ascii_case(name));
        self.headers.push((name.to_string(), value.into()));
    }
}

impl fmt::Debug for HttpRequest {
    /// Debug never shows header values that could carry secrets, nor the query string.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let path = self.url.split('?').next().unwrap_or_default();
        let names: Vec<&str> = self.headers.iter().map(|(n, _)| n.as_str()).collect();
        f.debug_struct("HttpRequest")
            .field("method", &self.method)
            .field("url", &path)
            .field("header_names", &names)
            .field("body_len", &self.body.len())
            .field("attempt", &self.attempt)
            .finish()
    }
}

/// One HTTP response.
#[derive(Clone, PartialEq, Eq)]
pub struct HttpResponse {
    /// The status code.
    pub status: u16,
    /// Headers as received (names lower-case).
    pub headers: Vec<(String, String)>,
    /// The body bytes.
    pub body: Vec<u8>,
}

impl fmt::Debug for HttpResponse {
    /// Debug shows the status, header names and body length, never values or body bytes
    /// (they may hold user data or session tokens).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = self.headers.iter().map(|(n, _)| n.as_str()).collect();
        f.debug_struct("HttpResponse")
            .field("status", &self.status)
            .field("header_names", &names)
            .field("body_len", &self.body.len())
            .finish()
    }
}

impl HttpResponse {
    /// The first value of a header, compared case-insensitively.
    pub fn header(&self, name: &str) -> Option<&str> {
        find_header(&self.headers, name)
    }

    /// True for 2xx.
    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }
}

/// The first value of header `name` in `headers`, compared case-insensitively.
pub(crate) fn find_header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

/// Sends one HTTP request and returns the response. Non-2xx statuses are responses, not
/// errors; only a missing answer (connection failure, timeout) is an `Err`.
#[async_trait]
pub trait Transport: Send + Sync + fmt::Debug {
    /// Performs one exchange.
    async fn send(&self, request: HttpRequest) -> Result<HttpResponse, Error>;

    /// The headers this transport adds to `request` on the wire by itself (`host`,
    /// `content-length`, a default `user-agent`...), so a recorder can put every header
    /// actually sent into the trace. None by default; a wrapping transport forwards its
    /// inner transport's.
    fn implicit_headers(&self, _request: &HttpRequest) -> Vec<(String, String)> {
        Vec::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_output_hides_header_values_query_and_bodies() {
        let mut request = HttpRequest::new("put", "https://a.example/q/messages?sig=SECRETSIG");
        request.set_header("Authorization", "SharedKey a:SECRETKEY");
        request.body = b"<QueueMessage>private</QueueMessage>".to_vec();
        let response = HttpResponse {
            status: 201,
            headers: vec![("x-ms-session-token".into(), "0:SESSION".into())],
            body: b"private answer".to_vec(),
        };
        let shown = format!("{request:?} {response:?}");
        for secret in ["SECRETSIG", "SECRETKEY", "private", "SESSION"] {
            assert!(!shown.contains(secret), "{secret} leaked into {shown}");
        }
        assert!(shown.contains("PUT"));
        assert!(shown.contains("Authorization") && shown.contains("status: 201"));
    }
}
