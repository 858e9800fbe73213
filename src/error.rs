//! The crate's I/O error: one small enum for everything that talks to a service (Azure
//! Queue Storage, Cosmos DB, Redis, the in-memory backends that stand in for them).
//!
//! Every variant carries an [`ErrorInfo`] with the HTTP status, the service's error code,
//! the request and activity ids and a message. `Display` says what went wrong and what to do;
//! nothing secret is ever put into an error (callers redact before building one).

use std::error::Error as StdError;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

/// The underlying error behind an [`Error`] (an I/O error, a JSON error, the HTTP client's
/// error), kept whole so [`std::error::Error::source`] can walk it and callers can downcast
/// it. Cheap to clone; compared by its text.
#[derive(Clone)]
pub struct Cause(Arc<dyn StdError + Send + Sync + 'static>);

impl Cause {
    /// Wraps an error. Build it only from errors whose text holds no secret (strip URLs
    /// from HTTP client errors first).
    pub fn new(error: impl StdError + Send + Sync + 'static) -> Self {
        Cause(Arc::new(error))
    }

    /// The wrapped error.
    pub fn get(&self) -> &(dyn StdError + Send + Sync + 'static) {
        self.0.as_ref()
    }
}

impl fmt::Debug for Cause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

impl PartialEq for Cause {
    fn eq(&self, other: &Self) -> bool {
        self.0.to_string() == other.0.to_string()
    }
}

impl Eq for Cause {}

/// Context attached to every [`Error`]: what was attempted and what the service answered.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ErrorInfo {
    /// What went wrong, in words (never contains keys or signatures).
    pub message: String,
    /// The operation being performed, e.g. `"queue put message"`.
    pub operation: Option<String>,
    /// HTTP status, when a response was received.
    pub status: Option<u16>,
    /// `x-ms-substatus` (Cosmos), when the service sent one. With the status it tells apart
    /// answers that share a status: 404/1002 (read session not available yet: retry) from a
    /// missing item, 400/1004 (the query needs a query plan) from other bad requests.
    pub substatus: Option<u32>,
    /// The service's error code (`<Code>` in XML, `code` in JSON, else `x-ms-error-code`), or,
    /// when no answer arrived, a client-side code such as `ConnectFailed` (request not sent).
    pub code: Option<String>,
    /// `x-ms-request-id`, when the service sent one.
    pub request_id: Option<String>,
    /// `x-ms-activity-id` (Cosmos), when the service sent one.
    pub activity_id: Option<String>,
    /// `x-ms-request-charge` (Cosmos request units, as sent), when the service sent one:
    /// failed requests are billed too.
    pub request_charge: Option<String>,
    /// `x-ms-session-token` (Cosmos), when the service sent one, so a caller can keep
    /// session consistency after an error.
    pub session_token: Option<String>,
    /// The error that caused this one, if any: what [`std::error::Error::source`] returns.
    /// `Display` of [`Error`] also names its causes (so a plain `{err}` in a log says why),
    /// while `message` holds only this layer's words.
    pub source: Option<Cause>,
}

impl ErrorInfo {
    /// An info with just a message.
    pub fn new(message: impl Into<String>) -> Self {
        ErrorInfo {
            message: message.into(),
            ..ErrorInfo::default()
        }
    }

    /// Sets the operation name.
    pub fn with_operation(mut self, operation: impl Into<String>) -> Self {
        self.operation = Some(operation.into());
        self
    }

    /// Sets the HTTP status.
    pub fn with_status(mut self, status: u16) -> Self {
        self.status = Some(status);
        self
    }

    /// Sets the service error code.
    pub fn with_code(mut self, code: impl Into<String>) -> Self {
        self.code = Some(code.into());
        self
    }

    /// Sets the underlying error (see [`ErrorInfo::source`]).
    pub fn with_source(mut self, cause: impl StdError + Send + Sync + 'static) -> Self {
        self.source = Some(Cause::new(cause));
        self
    }

    /// The texts of the causes, outermost first, each left out when an earlier one already
    /// says it, and redacted (a cause may quote a URL with a SAS signature).
    fn cause_texts(&self) -> Vec<String> {
        let redactor = crate::wire::redact::Redactor::new();
        let mut texts: Vec<String> = Vec::new();
        let mut next: Option<&(dyn StdError + 'static)> = self.source.as_ref().map(|c| {
            let inner: &(dyn StdError + 'static) = c.get();
            inner
        });
        while let Some(cause) = next {
            let text = redactor.redact_text(&cause.to_string());
            if !text.is_empty() && !texts.iter().any(|t| t.contains(&text)) {
                texts.push(text);
            }
            next = cause.source();
        }
        texts
    }

    /// Sets the Cosmos sub-status.
    pub fn with_substatus(mut self, substatus: u32) -> Self {
        self.substatus = Some(substatus);
        self
    }

    /// True for Cosmos 400 / sub-status 1004: a cross-partition query (`ORDER BY`, `TOP`,
    /// aggregates, `DISTINCT` across partitions) that the gateway serves only with a query
    /// plan, which this client does not build. Scope the query to one partition key or
    /// drop the clause and sort / aggregate on the client.
    pub fn needs_query_plan(&self) -> bool {
        self.status == Some(400) && self.substatus == Some(1004)
    }

    /// True for Cosmos 404 / sub-status 1002: the replica that answered has not yet caught up
    /// with the session token sent, so "not found" is not known yet. Retry; never treat it
    /// as a missing item.
    pub fn is_read_session_not_available(&self) -> bool {
        self.status == Some(404) && self.substatus == Some(1002)
    }

    /// True when the answer (status and sub-status) is one the retry table
    /// ([`crate::wire::retry::RETRY_TABLE`]) lists as transient: a later attempt may succeed.
    /// False when no answer was received (see the error variant for that).
    pub fn is_transient_answer(&self) -> bool {
        self.status
            .is_some_and(|status| crate::wire::retry::retry_rule(status, self.substatus).is_some())
    }
}

/// An error from a service or from the wire, with context. See [`ErrorInfo`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Error {
    /// The resource (queue, message, document, run) does not exist.
    NotFound(Box<ErrorInfo>),
    /// The resource already exists, or the request conflicts with its state.
    Conflict(Box<ErrorInfo>),
    /// An `If-Match` / pop receipt / compare-and-set precondition did not hold.
    PreconditionFailed(Box<ErrorInfo>),
    /// The service asked us to slow down (429 / 503 ServerBusy).
    Throttled {
        /// How long the service asked us to wait, if it said.
        retry_after: Option<Duration>,
        /// Context.
        info: Box<ErrorInfo>,
    },
    /// Authentication or authorisation failed (401 / 403): wrong key, expired SAS, clock skew.
    Auth(Box<ErrorInfo>),
    /// The request or item is larger than the service allows (413, 64 KiB messages, 2 MB items).
    TooLarge(Box<ErrorInfo>),
    /// The request was refused before sending, or the service said it is malformed (400).
    InvalidInput(Box<ErrorInfo>),
    /// The connection failed or was dropped; no answer was received.
    Transport(Box<ErrorInfo>),
    /// No answer arrived within the request timeout.
    Timeout(Box<ErrorInfo>),
    /// Anything else: an unexpected status or an unparseable answer.
    Unexpected(Box<ErrorInfo>),
}

impl Error {
    /// The context of this error.
    pub fn info(&self) -> &ErrorInfo {
        match self {
            Error::NotFound(i)
            | Error::Conflict(i)
            | Error::PreconditionFailed(i)
            | Error::Auth(i)
            | Error::TooLarge(i)
            | Error::InvalidInput(i)
            | Error::Transport(i)
            | Error::Timeout(i)
            | Error::Unexpected(i) => i,
            Error::Throttled { info, .. } => info,
        }
    }

    /// Mutable access to the context, to add the operation or ids after the fact.
    pub fn info_mut(&mut self) -> &mut ErrorInfo {
        match self {
            Error::NotFound(i)
            | Error::Conflict(i)
            | Error::PreconditionFailed(i)
            | Error::Auth(i)
            | Error::TooLarge(i)
            | Error::InvalidInput(i)
            | Error::Transport(i)
            | Error::Timeout(i)
            | Error::Unexpected(i) => i,
            Error::Throttled { info, .. } => info,
        }
    }

    /// The HTTP status, if a response was received.
    pub fn status(&self) -> Option<u16> {
        self.info().status
    }

    /// The service error code, if any.
    pub fn code(&self) -> Option<&str> {
        self.info().code.as_deref()
    }

    /// Shorthand for an [`Error::InvalidInput`] with a message.
    pub fn invalid_input(message: impl Into<String>) -> Self {
        Error::InvalidInput(Box::new(ErrorInfo::new(message)))
    }

    /// Shorthand for an [`Error::Transport`] with a message.
    pub fn transport(message: impl Into<String>) -> Self {
        Error::Transport(Box::new(ErrorInfo::new(message)))
    }

    /// Shorthand for an [`Error::Unexpected`] with a message.
    pub fn unexpected(message: impl Into<String>) -> Self {
        Error::Unexpected(Box::new(ErrorInfo::new(message)))
    }

    /// Sets the underlying error that [`std::error::Error::source`] returns, and returns
    /// the error.
    pub fn with_source(mut self, cause: impl StdError + Send + Sync + 'static) -> Self {
        self.info_mut().source = Some(Cause::new(cause));
        self
    }

    /// Adds the operation name (if none is set yet) and returns the error.
    pub fn during(mut self, operation: impl Into<String>) -> Self {
        let info = self.info_mut();
        if info.operation.is_none() {
            info.operation = Some(operation.into());
        }
        self
    }

    /// True for errors that a retry may cure: throttling (429), timeouts, dropped
    /// connections, server errors (5xx) of any kind, and the Cosmos answers the retry table
    /// lists (404/1002 read session not available, 449, 410 partition moves). The core retries these
    /// with backoff and never fails a run or poisons a message for them.
    pub fn is_transient(&self) -> bool {
        match self {
            Error::Throttled { .. } | Error::Timeout(_) | Error::Transport(_) => true,
            _ => {
                matches!(self.info().status, Some(429 | 500..=599))
                    || self.info().is_transient_answer()
            }
        }
    }

    fn summary_and_hint(&self) -> (&'static str, &'static str) {
        match self {
            Error::NotFound(_) => (
                "not found",
                "check the name or id; create the queue/container first (`create_if_not_exists`)",
            ),
            Error::Conflict(_) => (
                "conflict",
                "the resource already exists or is in another state; read it and decide",
            ),
            Error::PreconditionFailed(_) => (
                "precondition failed",
                "someone else changed it first; re-read and retry with the new ETag / pop receipt",
            ),
            Error::Throttled { .. } => (
                "throttled",
                "the service is busy; wait for the retry-after time or lower the request rate",
            ),
            Error::Auth(_) => (
                "authentication failed",
                "check the account name and key (or SAS token, its permissions and expiry) and the machine clock",
            ),
            Error::TooLarge(_) => (
                "too large",
                "make the payload smaller (queue messages: 64 KiB; Cosmos items: 2 MB)",
            ),
            Error::InvalidInput(_) => ("invalid input", "fix the request as the message says"),
            Error::Transport(_) => (
                "connection failed",
                "check the endpoint URL and that the service is reachable",
            ),
            Error::Timeout(_) => (
                "timed out",
                "the service did not answer in time; check connectivity or raise the request timeout",
            ),
            Error::Unexpected(i) if i.is_transient_answer() => (
                "temporarily unavailable",
                "the service could not serve the request just now; retry later",
            ),
            Error::Unexpected(_) => (
                "unexpected answer",
                "this may be a service or client bug; the request id helps when reporting it",
            ),
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (summary, hint) = self.summary_and_hint();
        let info = self.info();
        match &info.operation {
            Some(op) => write!(f, "{op}: {summary}")?,
            None => write!(f, "{summary}")?,
        }
        if !info.message.is_empty() {
            write!(f, ": {}", info.message)?;
        }
        for cause in info.cause_texts() {
            write!(f, ": {cause}")?;
        }
        let mut details = Vec::new();
        if let Some(s) = info.status {
            details.push(format!("status {s}"));
        }
        if let Some(s) = info.substatus {
            details.push(format!("substatus {s}"));
        }
        if let Some(c) = &info.code {
            details.push(format!("code {c}"));
        }
        if let Some(r) = &info.request_id {
            details.push(format!("request id {r}"));
        }
        if let Some(a) = &info.activity_id {
            details.push(format!("activity id {a}"));
        }
        if let Some(ru) = &info.request_charge {
            details.push(format!("{ru} RU"));
        }
        if let Error::Throttled {
            retry_after: Some(d),
            ..
        } = self
        {
            details.push(format!("retry after {} ms", d.as_millis()));
        }
        if !details.is_empty() {
            write!(f, " ({})", details.join(", "))?;
        }
        write!(f, ". {hint}")
    }
}

impl StdError for Error {
    /// The underlying error (I/O, JSON, HTTP client...), when there is one.
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        self.info().source.as_ref().map(|c| {
            let inner: &(dyn StdError + 'static) = c.get();
            inner
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_names_operation_status_code_and_hint() {
        let err = Error::NotFound(Box::new(
            ErrorInfo::new("the queue does not exist")
                .with_operation("queue get messages")
                .with_status(404)
                .with_code("QueueNotFound"),
        ));
        let text = err.to_string();
        assert!(text.starts_with("queue get messages: not found: the queue does not exist"));
        assert!(text.contains("status 404, code QueueNotFound"));
        assert!(text.contains("create the queue"));
    }

    #[test]
    fn the_source_chain_is_kept_walkable_and_shown_once() {
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused by peer");
        let json = serde_json::from_str::<serde_json::Value>("{").expect_err("bad JSON");
        let err = Error::transport("could not connect to http://h:1").with_source(io);
        let walked: Vec<String> = std::iter::successors(err.source(), |&e| e.source())
            .map(|e| e.to_string())
            .collect();
        assert_eq!(walked, ["refused by peer"]);
        let found = err
            .source()
            .and_then(|e| e.downcast_ref::<std::io::Error>())
            .map(std::io::Error::kind);
        assert_eq!(found, Some(std::io::ErrorKind::ConnectionRefused));
        let text = err.to_string();
        assert!(
            text.contains("could not connect to http://h:1: refused by peer"),
            "{text}"
        );
        assert_eq!(text.matches("refused by peer").count(), 1, "{text}");
        let decoded = Error::unexpected("unreadable").with_source(json);
        assert!(
            decoded
                .source()
                .is_some_and(|e| e.downcast_ref::<serde_json::Error>().is_some())
        );
        assert_eq!(decoded.clone(), decoded);
    }

    #[test]
    fn cause_texts_are_redacted() {
        let leaky = std::io::Error::other("failed for https://a/q?sv=1&sig=SECRETSIG");
        let err = Error::transport("send failed").with_source(leaky);
        assert!(!err.to_string().contains("SECRETSIG"), "{err}");
    }

    #[test]
    fn throttled_is_transient_and_shows_retry_after() {
        let err = Error::Throttled {
            retry_after: Some(Duration::from_millis(250)),
            info: Box::new(ErrorInfo::new("busy").with_status(429)),
        };
        assert!(err.is_transient());
        assert!(err.to_string().contains("retry after 250 ms"));
        assert!(!Error::invalid_input("x").is_transient());
    }

    #[test]
    fn every_server_error_and_429_is_transient_but_client_errors_are_not() {
        for status in [429, 500, 502, 503, 504, 507] {
            let err = Error::Unexpected(Box::new(ErrorInfo::new("x").with_status(status)));
            assert!(err.is_transient(), "{status}");
        }
        assert!(Error::transport("reset").is_transient());
        for err in [
            Error::NotFound(Box::new(ErrorInfo::new("x").with_status(404))),
            Error::PreconditionFailed(Box::new(ErrorInfo::new("x").with_status(412))),
            Error::TooLarge(Box::new(ErrorInfo::new("x").with_status(413))),
            Error::Unexpected(Box::new(ErrorInfo::new("x").with_status(418))),
        ] {
            assert!(!err.is_transient(), "{err}");
        }
    }
}
