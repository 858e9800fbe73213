//! Pieces shared by the Queue Storage and Cosmos DB REST clients: turning a failed HTTP
//! response into a [`crate::Error`] (status and service code to variant, request and activity
//! ids, retry-after), checking service endpoints, and percent-encoding URL parts.

use crate::error::{Error, ErrorInfo};
use crate::wire::retry::retry_after;
use crate::wire::transport::HttpResponse;

/// Maps a non-2xx response to an [`Error`] variant.
///
/// `code` is the service's error code when the body or `x-ms-error-code` named one;
/// `message` is the service's own message (may be empty). The decision is made on the status,
/// except that Queue Storage's `PopReceiptMismatch` (sent with 400) is a failed precondition.
pub(crate) fn error_from_response(
    resp: &HttpResponse,
    operation: &str,
    code: Option<String>,
    message: &str,
) -> Error {
    let status = resp.status;
    let message = match message.trim() {
        "" => format!("the service answered HTTP {status}"),
        text => text.to_string(),
    };
    let pop_receipt_mismatch = code.as_deref() == Some("PopReceiptMismatch");
    let info = Box::new(ErrorInfo {
        message,
        operation: Some(operation.to_string()),
        status: Some(status),
        code,
        request_id: header_string(resp, "x-ms-request-id"),
        activity_id: header_string(resp, "x-ms-activity-id"),
    });
    match status {
        _ if pop_receipt_mismatch => Error::PreconditionFailed(info),
        412 => Error::PreconditionFailed(info),
        404 => Error::NotFound(info),
        409 => Error::Conflict(info),
        401 | 403 => Error::Auth(info),
        413 => Error::TooLarge(info),
        429 | 503 => Error::Throttled {
            retry_after: retry_after(resp),
            info,
        },
        408 => Error::Timeout(info),
        400 => Error::InvalidInput(info),
        _ => Error::Unexpected(info),
    }
}

/// A 2xx response whose body could not be understood: [`Error::Unexpected`] with context.
pub(crate) fn unparseable(resp: &HttpResponse, operation: &str, what: &str) -> Error {
    let mut info = ErrorInfo::new(format!("could not parse the response: {what}"))
        .with_operation(operation)
        .with_status(resp.status);
    info.request_id = header_string(resp, "x-ms-request-id");
    info.activity_id = header_string(resp, "x-ms-activity-id");
    Error::Unexpected(Box::new(info))
}

/// A header value as an owned string.
pub(crate) fn header_string(resp: &HttpResponse, name: &str) -> Option<String> {
    resp.header(name).map(str::to_string)
}

/// Checks a service endpoint URL and returns it without a trailing `/`.
///
/// The URL must be `https://host[:port][/path]`. Plain `http://` is accepted only for loopback
/// hosts (local emulators) unless `allow_insecure_http` is set. No query or fragment.
pub(crate) fn checked_endpoint(url: &str, allow_insecure_http: bool) -> Result<String, Error> {
    let url = url.trim();
    let (scheme, rest) = url.split_once("://").ok_or_else(|| {
        Error::invalid_input(format!(
            "endpoint `{url}` is not an absolute URL; expected e.g. https://account.queue.core.windows.net"
        ))
    })?;
    if url.contains(['?', '#']) || url.chars().any(|c| c.is_whitespace()) {
        return Err(Error::invalid_input(format!(
            "endpoint `{url}` must not contain a query, a fragment or whitespace"
        )));
    }
    let authority = rest.split('/').next().unwrap_or_default();
    let host = host_of(authority);
    if host.is_empty() {
        return Err(Error::invalid_input(format!(
            "endpoint `{url}` has no host"
        )));
    }
    match scheme.to_ascii_lowercase().as_str() {
        "https" => {}
        "http" if allow_insecure_http || is_loopback(host) => {}
        "http" => {
            return Err(Error::invalid_input(format!(
                "endpoint `{url}` uses plain HTTP to a non-loopback host; use https (plain HTTP is only for local emulators)"
            )));
        }
        other => {
            return Err(Error::invalid_input(format!(
                "endpoint `{url}` has scheme `{other}`; expected https"
            )));
        }
    }
    Ok(url.trim_end_matches('/').to_string())
}

fn host_of(authority: &str) -> &str {
    let without_user = authority.rsplit('@').next().unwrap_or_default();
    if let Some(v6) = without_user.strip_prefix('[') {
        return v6.split(']').next().unwrap_or_default();
    }
    without_user.split(':').next().unwrap_or_default()
}

fn is_loopback(host: &str) -> bool {
    host.eq_ignore_ascii_case("localhost")
        || host == "::1"
        || host
            .parse::<std::net::Ipv4Addr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// Percent-encodes everything except RFC 3986 unreserved characters, for one path segment or
/// one query value.
pub(crate) fn encode_component(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for byte in value.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn response(status: u16, headers: &[(&str, &str)]) -> HttpResponse {
        HttpResponse {
            status,
            headers: headers
                .iter()
                .map(|(n, v)| (n.to_string(), v.to_string()))
                .collect(),
            body: Vec::new(),
        }
    }

    fn mapped(status: u16, code: Option<&str>) -> Error {
        error_from_response(
            &response(status, &[]),
            "op",
            code.map(str::to_string),
            "msg",
        )
    }

    #[test]
    fn statuses_map_to_their_variants() {
        assert!(matches!(mapped(404, None), Error::NotFound(_)));
        assert!(matches!(mapped(409, None), Error::Conflict(_)));
        assert!(matches!(mapped(412, None), Error::PreconditionFailed(_)));
        assert!(matches!(mapped(401, None), Error::Auth(_)));
        assert!(matches!(mapped(403, None), Error::Auth(_)));
        assert!(matches!(mapped(413, None), Error::TooLarge(_)));
        assert!(matches!(mapped(429, None), Error::Throttled { .. }));
        assert!(matches!(mapped(503, None), Error::Throttled { .. }));
        assert!(matches!(mapped(400, None), Error::InvalidInput(_)));
        assert!(matches!(mapped(408, None), Error::Timeout(_)));
        assert!(matches!(mapped(500, None), Error::Unexpected(_)));
    }

    #[test]
    fn pop_receipt_mismatch_is_a_failed_precondition_despite_400() {
        let err = mapped(400, Some("PopReceiptMismatch"));
        assert!(matches!(err, Error::PreconditionFailed(_)));
        assert_eq!(err.code(), Some("PopReceiptMismatch"));
    }

    #[test]
    fn ids_and_retry_after_are_taken_from_headers() {
        let resp = response(
            429,
            &[
                ("x-ms-request-id", "req-1"),
                ("x-ms-activity-id", "act-1"),
                ("x-ms-retry-after-ms", "250"),
            ],
        );
        let err = error_from_response(&resp, "cosmos read", None, "");
        let Error::Throttled { retry_after, info } = &err else {
            panic!("expected throttled, got {err:?}");
        };
        assert_eq!(*retry_after, Some(Duration::from_millis(250)));
        assert_eq!(info.request_id.as_deref(), Some("req-1"));
        assert_eq!(info.activity_id.as_deref(), Some("act-1"));
        assert_eq!(info.operation.as_deref(), Some("cosmos read"));
        assert!(info.message.contains("429"), "{}", info.message);
    }

    #[test]
    fn endpoints_need_https_except_on_loopback() {
        assert_eq!(
            checked_endpoint("http://127.0.0.1:11001/devstoreaccount1/", false).ok(),
            Some("http://127.0.0.1:11001/devstoreaccount1".to_string())
        );
        assert!(checked_endpoint("http://localhost:8081", false).is_ok());
        assert!(checked_endpoint("http://[::1]:8081", false).is_ok());
        assert!(checked_endpoint("https://acct.queue.core.windows.net", false).is_ok());
        assert!(matches!(
            checked_endpoint("http://acct.queue.core.windows.net", false),
            Err(Error::InvalidInput(_))
        ));
        assert!(checked_endpoint("http://emulator:10001/acct", true).is_ok());
        assert!(checked_endpoint("ftp://x", false).is_err());
        assert!(checked_endpoint("no-scheme", false).is_err());
        assert!(checked_endpoint("https://", false).is_err());
        assert!(checked_endpoint("https://h/x?sig=1", false).is_err());
    }

    #[test]
    fn components_are_percent_encoded() {
        assert_eq!(encode_component("a-b_c.d~e"), "a-b_c.d~e");
        assert_eq!(encode_component("AB+/=="), "AB%2B%2F%3D%3D");
        assert_eq!(encode_component("ä "), "%C3%A4%20");
    }
}

/// Test doubles for the REST clients' unit tests: a transport answering canned responses and
/// recording requests, and an unsigned pipeline that does not retry.
#[cfg(test)]
pub(crate) mod fake {
    use std::collections::VecDeque;
    use std::sync::{Arc, Mutex};

    use async_trait::async_trait;

    use crate::error::Error;
    use crate::wire::pipeline::{NoAuth, Pipeline};
    use crate::wire::retry::RetryPolicy;
    use crate::wire::transport::{HttpRequest, HttpResponse, Transport};

    /// Answers each request with the next canned response; records every request.
    #[derive(Debug, Default)]
    pub struct FakeTransport {
        responses: Mutex<VecDeque<HttpResponse>>,
        requests: Mutex<Vec<HttpRequest>>,
    }

    impl FakeTransport {
        /// A transport that will answer with these responses, in order.
        pub fn new(responses: Vec<HttpResponse>) -> Arc<Self> {
            Arc::new(FakeTransport {
                responses: Mutex::new(responses.into()),
                requests: Mutex::new(Vec::new()),
            })
        }

        /// The requests received so far.
        pub fn requests(&self) -> Vec<HttpRequest> {
            self.requests.lock().map(|r| r.clone()).unwrap_or_default()
        }
    }

    #[async_trait]
    impl Transport for FakeTransport {
        async fn send(&self, request: HttpRequest) -> Result<HttpResponse, Error> {
            if let Ok(mut requests) = self.requests.lock() {
                requests.push(request);
            }
            self.responses
                .lock()
                .ok()
                .and_then(|mut r| r.pop_front())
                .ok_or_else(|| Error::transport("the fake transport has no response left"))
        }
    }

    /// A single-attempt pipeline over `transport`.
    pub fn pipeline(transport: Arc<FakeTransport>) -> Pipeline {
        Pipeline::new(transport, Arc::new(NoAuth)).with_retry(RetryPolicy::no_retries())
    }

    /// A response with these headers and body.
    pub fn response(status: u16, headers: &[(&str, &str)], body: &str) -> HttpResponse {
        HttpResponse {
            status,
            headers: headers
                .iter()
                .map(|(n, v)| (n.to_ascii_lowercase(), v.to_string()))
                .collect(),
            body: body.as_bytes().to_vec(),
        }
    }
}
