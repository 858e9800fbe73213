//! Pieces shared by the Queue Storage and Cosmos DB REST clients: turning a failed HTTP
//! response into a [`crate::Error`] (status and service code to variant, request and activity
//! ids, retry-after).

use crate::error::{Error, ErrorInfo};
use crate::wire::redact::Redactor;
use crate::wire::retry::{retry_after, substatus_of};
use crate::wire::transport::HttpResponse;

/// Maps a non-2xx response to an [`Error`] variant.
///
/// `code` is the service's error code when the body or `x-ms-error-code` named one;
/// `message` is the service's own message (may be empty). The decision is made on the status
/// and Cosmos `x-ms-substatus`, with these exceptions: Queue Storage's `PopReceiptMismatch`
/// (sent with 400) is a failed precondition; Cosmos 404/1002 (read session not available)
/// is not a missing item but a transient [`Error::Unexpected`]; a 503 is
/// [`Error::Throttled`] only with Storage's `ServerBusy` code, else a transient
/// "service unavailable" [`Error::Unexpected`].
pub(crate) fn error_from_response(
    resp: &HttpResponse,
    operation: &str,
    code: Option<String>,
    message: &str,
) -> Error {
    let status = resp.status;
    // A service message may quote the request (e.g. a SAS URL); never carry a signature on.
    let service_message = match message.trim() {
        "" => None,
        text => Some(Redactor::new().redact_text(text)),
    };
    let substatus = substatus_of(resp);
    let explained = match (status, substatus) {
        (404, Some(1002)) => Some(
            "read session not available: the replica has not caught up with this session yet \
             (not a missing item; retry)"
                .to_string(),
        ),
        (400, Some(1004)) => Some(
            "this cross-partition query needs a query plan (ORDER BY, TOP, aggregates or \
             DISTINCT across partitions), which this client does not build; scope it to one \
             partition key, or sort / aggregate the results yourself"
                .to_string(),
        ),
        (449, _) => {
            Some("retry with: a concurrent update conflicted; nothing was applied".to_string())
        }
        (503, _) if !server_busy(code.as_deref()) => {
            Some("the service is temporarily unavailable; retry later".to_string())
        }
        (300..=399, _) => Some(redirect_message(resp)),
        _ => None,
    };
    let message = match (explained, service_message) {
        (Some(ours), Some(theirs)) => format!("{ours} ({theirs})"),
        (Some(ours), None) => ours,
        (None, Some(theirs)) => theirs,
        (None, None) => format!("the service answered HTTP {status}"),
    };
    let pop_receipt_mismatch = code.as_deref() == Some("PopReceiptMismatch");
    let busy = server_busy(code.as_deref());
    let info = Box::new(ErrorInfo {
        message,
        operation: Some(operation.to_string()),
        status: Some(status),
        substatus,
        code,
        request_id: header_string(resp, "x-ms-request-id"),
        activity_id: header_string(resp, "x-ms-activity-id"),
        request_charge: header_string(resp, "x-ms-request-charge"),
        session_token: header_string(resp, "x-ms-session-token"),
        source: None,
    });
    match status {
        _ if pop_receipt_mismatch => Error::PreconditionFailed(info),
        _ if info.is_read_session_not_available() => Error::Unexpected(info),
        412 => Error::PreconditionFailed(info),
        404 => Error::NotFound(info),
        409 => Error::Conflict(info),
        401 | 403 => Error::Auth(info),
        413 => Error::TooLarge(info),
        429 => Error::Throttled {
            retry_after: retry_after(resp),
            info,
        },
        503 if busy => Error::Throttled {
            retry_after: retry_after(resp),
            info,
        },
        408 => Error::Timeout(info),
        400 => Error::InvalidInput(info),
        _ => Error::Unexpected(info),
    }
}

/// Storage's `ServerBusy`: the request was refused unprocessed because of load (throttling).
fn server_busy(code: Option<&str>) -> bool {
    code.is_some_and(|c| c.trim().eq_ignore_ascii_case("ServerBusy"))
}

/// The message for a 3xx answer: redirects are never followed, so say where it pointed (the
/// host only: a `Location` query may carry a signature).
fn redirect_message(resp: &HttpResponse) -> String {
    let location = resp.header("location").map(str::trim).unwrap_or_default();
    let to = match url::Url::parse(location) {
        Ok(url) => match url.host_str() {
            Some(host) => format!("to host `{host}`"),
            None => "to a location without a host".to_string(),
        },
        Err(_) if location.starts_with('/') && !location.starts_with("//") => {
            "to another path on the same host".to_string()
        }
        Err(_) => "without a usable Location".to_string(),
    };
    format!(
        "the service answered with a redirect (HTTP {}) {to}; redirects are not followed, \
         because a signed request goes only to the host it was signed for. Use that endpoint \
         directly if you trust it",
        resp.status
    )
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn response(status: u16, headers: &[(&str, &str)]) -> HttpResponse {
        crate::wire::test_support::response(status, headers, "")
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
        assert!(matches!(
            mapped(503, Some("ServerBusy")),
            Error::Throttled { .. }
        ));
        assert!(matches!(mapped(400, None), Error::InvalidInput(_)));
        assert!(matches!(mapped(408, None), Error::Timeout(_)));
        assert!(matches!(mapped(500, None), Error::Unexpected(_)));
    }

    #[test]
    fn errors_carry_the_request_charge_and_session_token() {
        let err = error_from_response(
            &response(
                412,
                &[
                    ("x-ms-request-charge", "1.24"),
                    ("x-ms-session-token", "0:7#42"),
                    ("x-ms-activity-id", "act-1"),
                ],
            ),
            "cosmos replace document",
            None,
            "stale etag",
        );
        let info = err.info();
        assert_eq!(info.request_charge.as_deref(), Some("1.24"));
        assert_eq!(info.session_token.as_deref(), Some("0:7#42"));
        assert!(err.to_string().contains("activity id act-1, 1.24 RU"));
    }

    #[test]
    fn service_messages_quoting_a_sas_url_lose_the_signature() {
        let err = error_from_response(
            &response(403, &[]),
            "queue get messages",
            Some("AuthenticationFailed".into()),
            "Signature did not match for https://a.queue.core.windows.net/q?sv=2021&sig=AbC%2Bdef123",
        );
        let text = format!("{err} {err:?}");
        assert!(!text.contains("AbC%2Bdef123"), "{text}");
        assert!(text.contains("sig=REDACTED"), "{text}");
    }

    #[test]
    fn substatus_is_carried_and_shown() {
        let resp = response(400, &[("x-ms-substatus", "1004")]);
        let err = error_from_response(&resp, "cosmos query", Some("BadRequest".into()), "");
        assert!(matches!(err, Error::InvalidInput(_)), "{err:?}");
        assert_eq!(err.info().substatus, Some(1004));
        assert!(err.info().needs_query_plan());
        assert!(err.to_string().contains("substatus 1004"), "{err}");
        let plain = error_from_response(&response(400, &[]), "cosmos query", None, "");
        assert!(!plain.info().needs_query_plan());
        assert_eq!(plain.info().substatus, None);
    }

    #[test]
    fn read_session_not_available_is_not_reported_as_missing() {
        let resp = response(404, &[("x-ms-substatus", "1002")]);
        let err = error_from_response(&resp, "cosmos read document", None, "");
        assert!(!matches!(err, Error::NotFound(_)), "{err:?}");
        assert!(err.info().is_read_session_not_available());
        assert!(err.info().is_transient_answer());
        assert!(!mapped(404, None).info().is_transient_answer());
    }

    #[test]
    fn a_503_without_server_busy_is_unavailable_not_throttled() {
        let err = mapped(503, None);
        assert!(!matches!(err, Error::Throttled { .. }), "{err:?}");
        assert!(matches!(err, Error::Unexpected(_)), "{err:?}");
        assert_eq!(err.status(), Some(503));
        assert!(err.info().is_transient_answer());
        assert!(err.to_string().contains("unavailable"), "{err}");
    }

    #[test]
    fn a_redirect_is_an_error_naming_the_location_host_only() {
        let resp = response(
            302,
            &[(
                "location",
                "https://other.example.net/acct/q?sv=1&sig=SECRETSIG",
            )],
        );
        let err = error_from_response(&resp, "queue create", None, "");
        assert!(matches!(err, Error::Unexpected(_)), "{err:?}");
        let text = err.to_string();
        assert!(text.contains("redirect"), "{text}");
        assert!(text.contains("other.example.net"), "{text}");
        assert!(
            !text.contains("SECRETSIG") && !text.contains("/acct/q"),
            "{text}"
        );
        assert!(!err.info().is_transient_answer());
        let relative = error_from_response(&response(301, &[("location", "/x")]), "op", None, "");
        assert!(relative.to_string().contains("same host"), "{relative}");
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
}
