//! The [`Transport`] seam: one HTTP exchange, request in, response out. Real traffic goes over
//! reqwest; tests and audits wrap or replace it (recorder, replayer, fault injection).

use async_trait::async_trait;
use bytes::Bytes;
use http::Method;
use http::header::{HeaderMap, HeaderName, HeaderValue};
use std::fmt;
use url::Url;

use crate::error::Error;

/// One HTTP request, fully built (and signed, once it reaches a transport). Built from typed
/// parts, so the URL is parsed once (when the client builds it) and never again on its way
/// to the wire.
#[derive(Clone, PartialEq, Eq)]
pub struct HttpRequest {
    /// The HTTP method.
    pub method: Method,
    /// The absolute URL as sent, query string included.
    pub url: Url,
    /// The headers (names lower-case; look them up case-insensitively).
    pub headers: HeaderMap,
    /// The body bytes (empty for none).
    pub body: Bytes,
    /// Which attempt this is (1 for the first); metadata for recorders, never sent.
    pub attempt: u32,
    /// Why the request cannot be sent (a header [`HttpRequest::set_header`] could not
    /// store), reported by [`HttpRequest::check`] before anything is signed or sent.
    refused: Option<String>,
}

impl HttpRequest {
    /// A request with no headers and no body.
    pub fn new(method: Method, url: Url) -> Self {
        HttpRequest {
            method,
            url,
            headers: HeaderMap::new(),
            body: Bytes::new(),
            attempt: 1,
            refused: None,
        }
    }

    /// A request from a method name and a URL string, for callers holding text (a
    /// recording, a command line). A method that is not an HTTP token, an unparseable URL,
    /// or a URL whose path URL parsing would rewrite (a `.` / `..` segment, also
    /// percent-encoded, or characters left unencoded) is [`Error::InvalidInput`]: the
    /// request would name another resource than the one meant.
    pub fn parse(method: &str, url: impl AsRef<str>) -> Result<Self, Error> {
        let url = url.as_ref();
        let method = Method::from_bytes(method.to_ascii_uppercase().as_bytes())
            .map_err(|_| Error::invalid_input(format!("`{method}` is not a valid HTTP method")))?;
        let parsed = Url::parse(url).map_err(|e| {
            Error::invalid_input(format!(
                "the request URL is not valid ({e}); check the endpoint"
            ))
        })?;
        check_path_is_stable(url, &parsed)?;
        Ok(HttpRequest::new(method, parsed))
    }

    /// The first value of a header, compared case-insensitively. `None` also for a value
    /// that is not UTF-8 (only a transport's answer could hold one).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .get(name)
            .and_then(|v| std::str::from_utf8(v.as_bytes()).ok())
    }

    /// Replaces (or adds) a header. Never fails or panics: a name that is not an HTTP token
    /// or a value with a control character (CR, LF, NUL...) is not stored, and the request
    /// is then refused by [`HttpRequest::check`] (which the pipeline and the transports call
    /// before signing or sending) with an error that names the header but not the value.
    pub fn set_header(&mut self, name: &str, value: impl Into<String>) {
        let value = value.into();
        let name_ok = HeaderName::from_bytes(name.as_bytes());
        let value_ok = HeaderValue::from_bytes(value.as_bytes());
        match (name_ok, value_ok) {
            (Ok(name), Ok(value)) => {
                self.headers.insert(name, value);
            }
            (Err(_), _) => self.refuse(format!("`{name}` is not a valid HTTP header name")),
            (Ok(name), Err(_)) => self.refuse(format!(
                "the value of header `{name}` contains a character HTTP does not allow (a \
                 control character such as a line break)"
            )),
        }
    }

    /// Sets the body.
    pub fn set_body(&mut self, body: impl Into<Bytes>) {
        self.body = body.into();
    }

    /// Ok when the request can be sent; else [`Error::InvalidInput`] saying which header
    /// [`HttpRequest::set_header`] could not store.
    pub fn check(&self) -> Result<(), Error> {
        match &self.refused {
            None => Ok(()),
            Some(why) => Err(Error::invalid_input(format!(
                "the request cannot be sent: {why}"
            ))),
        }
    }

    /// The headers as `(name, value)` text pairs, in map order (values that are not UTF-8
    /// decoded lossily): the form recordings and redaction work on.
    pub fn header_pairs(&self) -> Vec<(String, String)> {
        self.headers
            .iter()
            .map(|(n, v)| {
                (
                    n.as_str().to_string(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect()
    }

    fn refuse(&mut self, why: String) {
        if self.refused.is_none() {
            self.refused = Some(why);
        }
    }
}

impl fmt::Debug for HttpRequest {
    /// Debug never shows header values that could carry secrets, nor the query string.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Scheme, host, port and path: no user info, query or fragment.
        let scheme = &self.url[..url::Position::BeforeUsername];
        let path = format!(
            "{scheme}{}",
            &self.url[url::Position::BeforeHost..url::Position::AfterPath]
        );
        let names: Vec<&str> = self.headers.keys().map(HeaderName::as_str).collect();
        f.debug_struct("HttpRequest")
            .field("method", &self.method)
            .field("url", &path)
            .field("header_names", &names)
            .field("body_len", &self.body.len())
            .field("attempt", &self.attempt)
            .finish()
    }
}

/// Refuses a URL whose path URL parsing rewrote (a `.` / `..` segment, also
/// percent-encoded, or characters left unencoded): the signature and the request would then
/// name another resource than the one the caller meant.
fn check_path_is_stable(raw_url: &str, parsed: &Url) -> Result<(), Error> {
    let after_scheme = raw_url.split_once("://").map_or(raw_url, |(_, rest)| rest);
    let end = after_scheme.find(['?', '#']).unwrap_or(after_scheme.len());
    let authority_and_path = after_scheme.get(..end).unwrap_or_default();
    let raw = authority_and_path
        .find('/')
        .and_then(|at| authority_and_path.get(at..))
        .unwrap_or("/");
    if raw == parsed.path() {
        return Ok(());
    }
    Err(Error::invalid_input(format!(
        "the request path `{raw}` would be sent as `{}` after URL normalisation (a `.` or `..` \
         segment, or an unencoded character); refusing to send a request to another resource \
         than the one named",
        parsed.path()
    )))
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
        let mut request = HttpRequest::parse(
            "put",
            "https://user:PASSWORD@a.example/q/messages?sig=SECRETSIG",
        )
        .expect("valid request");
        request.set_header("Authorization", "SharedKey a:SECRETKEY");
        request.set_body(&b"<QueueMessage>private</QueueMessage>"[..]);
        let response = HttpResponse {
            status: 201,
            headers: vec![("x-ms-session-token".into(), "0:SESSION".into())],
            body: b"private answer".to_vec(),
        };
        let shown = format!("{request:?} {response:?}");
        for secret in [
            "SECRETSIG",
            "SECRETKEY",
            "private",
            "SESSION",
            "PASSWORD",
            "user",
        ] {
            assert!(!shown.contains(secret), "{secret} leaked into {shown}");
        }
        assert!(shown.contains("PUT") && shown.contains("https://a.example/q/messages"));
        assert!(shown.contains("authorization") && shown.contains("status: 201"));
    }

    #[test]
    fn headers_are_case_insensitive_and_replaced() {
        let mut request = HttpRequest::parse("GET", "http://127.0.0.1:1/q").expect("valid");
        request.set_header("X-Ms-Version", "1");
        request.set_header("x-ms-version", "2");
        assert_eq!(request.header("X-MS-VERSION"), Some("2"));
        assert_eq!(request.headers.len(), 1);
        request.set_header("x-ms-meta-name", "ünïcode");
        assert_eq!(request.header("x-ms-meta-name"), Some("ünïcode"));
        assert!(request.check().is_ok());
    }

    #[test]
    fn an_unstorable_header_refuses_the_request_without_echoing_the_value() {
        let mut request = HttpRequest::parse("GET", "http://127.0.0.1:1/q").expect("valid");
        request.set_header("x-ms-meta-a", "SECRET\r\ninjected: yes");
        assert_eq!(request.header("x-ms-meta-a"), None);
        let err = request.check().expect_err("refused");
        assert!(matches!(err, Error::InvalidInput(_)), "{err:?}");
        let text = err.to_string();
        assert!(
            text.contains("x-ms-meta-a") && !text.contains("SECRET"),
            "{text}"
        );
        let mut bad_name = HttpRequest::parse("GET", "http://127.0.0.1:1/q").expect("valid");
        bad_name.set_header("bad name", "v");
        assert!(bad_name.check().is_err());
    }

    #[test]
    fn parse_refuses_paths_that_normalisation_would_change() {
        for url in [
            "http://h/q/messages/..?popreceipt=r",
            "http://h/q/messages/%2e%2e",
            "http://h/dbs/db/./colls/c",
            "http://h/docs/%2E",
            "not a url",
        ] {
            let err = HttpRequest::parse("DELETE", url).expect_err(url);
            assert!(matches!(err, Error::InvalidInput(_)), "{url}: {err:?}");
        }
        assert!(HttpRequest::parse("bad method", "http://h/").is_err());
        let ok = HttpRequest::parse("get", "http://h/docs/a%20b...?x=1").expect("stable");
        assert_eq!(ok.method, Method::GET);
        assert_eq!(ok.url.path(), "/docs/a%20b...");
    }
}
