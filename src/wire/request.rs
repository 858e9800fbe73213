//! [`RequestBuilder`]: the one way the REST clients put a request together and send it.
//! Start it with [`Pipeline::request`], add headers and a body, say whether a retry is safe,
//! and send it; a non-2xx answer comes back as the [`Error`] the client's mapper makes of it.
//!
//! ```no_run
//! # async fn demo(pipeline: flowcraft_azure::wire::pipeline::Pipeline) -> Result<(), flowcraft_azure::Error> {
//! use flowcraft_azure::wire::request::{Method, Url};
//! let url = Url::parse("http://127.0.0.1:11001/devstoreaccount1/jobs")
//!     .map_err(|e| flowcraft_azure::Error::invalid_input(e.to_string()))?;
//! let answer = pipeline
//!     .request(Method::PUT, url)
//!     .operation("queue create")
//!     .header("x-ms-version", "2021-12-02")
//!     .idempotent(true)
//!     .send()
//!     .await?;
//! println!("status {}", answer.status);
//! # Ok(()) }
//! ```

use bytes::Bytes;

pub use http::Method;
pub use url::Url;

use crate::error::{Error, ErrorInfo};
use crate::wire::pipeline::Pipeline;
use crate::wire::retry::Idempotency;
use crate::wire::transport::{HttpRequest, HttpResponse};

/// Turns a failed (non-2xx) answer into an [`Error`]; the `&str` is the operation name.
pub type ErrorMapper = fn(&HttpResponse, &str) -> Error;

/// A request being built for one pipeline. Nothing is sent until [`RequestBuilder::send`]
/// (or [`RequestBuilder::send_any_status`]).
#[must_use = "a request is only sent by `send`"]
#[derive(Debug)]
pub struct RequestBuilder<'a> {
    pipeline: &'a Pipeline,
    request: HttpRequest,
    operation: String,
    idempotency: Idempotency,
    to_error: ErrorMapper,
}

impl Pipeline {
    /// Starts a request for `method` on `url`: not idempotent until
    /// [`RequestBuilder::idempotent`] says so, failed answers mapped by status alone until
    /// [`RequestBuilder::map_errors`] gives the service's mapper.
    pub fn request(&self, method: Method, url: Url) -> RequestBuilder<'_> {
        RequestBuilder {
            pipeline: self,
            request: HttpRequest::new(method, url),
            operation: String::new(),
            idempotency: Idempotency::NonIdempotent,
            to_error: status_error,
        }
    }
}

impl RequestBuilder<'_> {
    /// Names the operation (`"queue put message"`) in every error this request ends with.
    pub fn operation(mut self, operation: impl Into<String>) -> Self {
        self.operation = operation.into();
        self
    }

    /// Sets (replaces) a header; see [`HttpRequest::set_header`] for invalid values.
    pub fn header(mut self, name: &str, value: impl Into<String>) -> Self {
        self.request.set_header(name, value);
        self
    }

    /// Sets a header when `value` is `Some`.
    pub fn header_opt(self, name: &str, value: Option<impl Into<String>>) -> Self {
        match value {
            Some(value) => self.header(name, value),
            None => self,
        }
    }

    /// Sets the body and its `Content-Type`.
    pub fn body(mut self, content_type: &str, body: impl Into<Bytes>) -> Self {
        self.request.set_header("content-type", content_type);
        self.request.set_body(body);
        self
    }

    /// Whether repeating the request is harmless, so the pipeline may retry it after a lost
    /// answer (see [`Idempotency`]).
    pub fn idempotent(mut self, idempotent: bool) -> Self {
        self.idempotency = if idempotent {
            Idempotency::Idempotent
        } else {
            Idempotency::NonIdempotent
        };
        self
    }

    /// How a failed (non-2xx) answer becomes an [`Error`] in [`RequestBuilder::send`].
    pub fn map_errors(mut self, to_error: ErrorMapper) -> Self {
        self.to_error = to_error;
        self
    }

    /// The operation name given to [`RequestBuilder::operation`] (empty when none was).
    pub fn operation_name(&self) -> &str {
        &self.operation
    }

    /// The request as built so far.
    pub fn request(&self) -> &HttpRequest {
        &self.request
    }

    /// Sends through the pipeline (signed, retried per policy) and returns the answer when
    /// it is 2xx, else the mapped [`Error`].
    pub async fn send(self) -> Result<HttpResponse, Error> {
        self.send_observing(|_| ()).await
    }

    /// [`RequestBuilder::send`], first showing every answer (failed ones too) to `observe`,
    /// e.g. to keep the session token a Cosmos error answer still carries.
    pub async fn send_observing(
        self,
        observe: impl FnOnce(&HttpResponse),
    ) -> Result<HttpResponse, Error> {
        let to_error = self.to_error;
        let operation = self.operation.clone();
        let resp = self.send_any_status().await?;
        observe(&resp);
        if resp.is_success() {
            Ok(resp)
        } else {
            Err(to_error(&resp, &operation))
        }
    }

    /// Sends and returns whatever answer came, any status; `Err` only when no answer did.
    pub async fn send_any_status(self) -> Result<HttpResponse, Error> {
        let RequestBuilder {
            pipeline,
            request,
            operation,
            idempotency,
            ..
        } = self;
        let outcome = pipeline.send(request, idempotency).await;
        outcome.map_err(|e| match operation.as_str() {
            "" => e,
            op => e.during(op),
        })
    }
}

/// The default mapper: [`Error::Unexpected`] naming the operation and status.
fn status_error(resp: &HttpResponse, operation: &str) -> Error {
    Error::Unexpected(Box::new(
        ErrorInfo::new(format!("the service answered HTTP {}", resp.status))
            .with_operation(operation)
            .with_status(resp.status),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::test_support::{FakeTransport, pipeline, response};

    fn url(text: &str) -> Url {
        Url::parse(text).expect("test URL")
    }

    #[tokio::test]
    async fn builds_headers_body_and_maps_failures() {
        let transport = FakeTransport::new(vec![response(409, &[], "")]);
        let pipeline = pipeline(transport.clone());
        fn conflict(resp: &HttpResponse, op: &str) -> Error {
            Error::Conflict(Box::new(
                ErrorInfo::new("exists")
                    .with_operation(op)
                    .with_status(resp.status),
            ))
        }
        let err = pipeline
            .request(Method::POST, url("http://127.0.0.1:1/dbs"))
            .operation("create")
            .header("x-ms-version", "1")
            .header_opt("if-match", None::<String>)
            .body("application/json", r#"{"id":"a"}"#)
            .map_errors(conflict)
            .send()
            .await
            .expect_err("409");
        assert!(matches!(err, Error::Conflict(_)), "{err:?}");
        assert_eq!(err.info().operation.as_deref(), Some("create"));
        let sent = transport.requests();
        let [sent] = sent.as_slice() else {
            panic!("one request expected, got {sent:?}");
        };
        assert_eq!(sent.method, Method::POST);
        assert_eq!(sent.header("content-type"), Some("application/json"));
        assert_eq!(sent.header("X-MS-Version"), Some("1"));
        assert_eq!(sent.header("if-match"), None);
        assert_eq!(&sent.body[..], br#"{"id":"a"}"#);
    }

    #[tokio::test]
    async fn any_status_is_returned_and_errors_without_answer_name_the_operation() {
        let transport = FakeTransport::new(vec![response(404, &[], "")]);
        let pipeline = pipeline(transport);
        let resp = pipeline
            .request(Method::GET, url("http://127.0.0.1:1/q"))
            .send_any_status()
            .await
            .expect("answer");
        assert_eq!(resp.status, 404);
        let err = pipeline
            .request(Method::GET, url("http://127.0.0.1:1/q"))
            .operation("queue peek")
            .send()
            .await
            .expect_err("no answer left");
        assert_eq!(err.info().operation.as_deref(), Some("queue peek"));
    }
}
