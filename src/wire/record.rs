//! Recording wire traffic: [`Recorder`] wraps a [`Transport`] and appends every exchange to
//! a JSON Lines file, one [`Exchange`] object per request/response pair, in order. Secrets are
//! redacted by a [`Redactor`] before anything is written.
//!
//! **Signature check without the key.** A redacted recording cannot show the signature, but
//! replay should still prove that the client signs the same request the same way. Each
//! exchange therefore stores `signature_sha256`: the SHA-256 (hex) of the real
//! `Authorization` value (or of the SAS `sig` parameter). A hash of an HMAC output reveals
//! nothing about the key, yet the [`crate::wire::replay`] side can recompute it: either the
//! client runs with a `FixedClock` at the recorded `x-ms-date` and its `Authorization` is
//! hashed directly, or the replayer re-signs the incoming request at the recorded date with a
//! given signer. This was chosen over recording with a fixed dev key because it also works
//! for traffic recorded with a real key (`--trace FILE` in production), where the key must
//! never reach the file.
//!
//! The trace is the audit record: each request is written with every header actually sent,
//! including those the transport adds by itself (`host`, `content-length`, its default
//! `user-agent` and `accept`; see [`Transport::implicit_headers`]).
//!
//! Every attempt is recorded, also one that never got an answer: a transport error is
//! stored with its kind and code (`error_kind`, `error_code`) and an attempt cancelled by the
//! pipeline's request timeout as a `Timeout`, so a replay fails and retries the same way.
//!
//! Body format: UTF-8 bodies are stored as JSON strings (after redaction); other bodies as
//! `{"base64": "..."}` (not scanned for secrets; Queue and Cosmos bodies are text).

use async_trait::async_trait;
use base64::Engine as _;
use serde::{Deserialize, Serialize};
use sha2::Digest as _;
use std::fmt;
use std::io::Write;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use crate::error::Error;
use crate::wire::mask::mask_payload;
use crate::wire::redact::Redactor;
use crate::wire::transport::{HttpRequest, HttpResponse, Transport, find_header};

/// A request or response body as recorded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Body {
    /// UTF-8 text (empty for no body).
    Text(String),
    /// Anything else, base64-encoded.
    Binary {
        /// The bytes, standard base64.
        base64: String,
    },
}

impl Body {
    /// Text for UTF-8 bytes, base64 otherwise.
    pub fn from_bytes(bytes: &[u8]) -> Body {
        match std::str::from_utf8(bytes) {
            Ok(text) => Body::Text(text.to_string()),
            Err(_) => Body::Binary {
                base64: base64::engine::general_purpose::STANDARD.encode(bytes),
            },
        }
    }

    /// The bytes back (invalid base64 gives an error naming the field).
    pub fn to_bytes(&self) -> Result<Vec<u8>, Error> {
        match self {
            Body::Text(t) => Ok(t.as_bytes().to_vec()),
            Body::Binary { base64 } => base64::engine::general_purpose::STANDARD
                .decode(base64)
                .map_err(|_| Error::invalid_input("a recorded binary body is not valid base64")),
        }
    }

    fn redacted(&self, redactor: &Redactor) -> Body {
        match self {
            Body::Text(t) => Body::Text(redactor.redact_text(t)),
            Body::Binary { .. } => self.clone(),
        }
    }

    /// The body with its payload masked ([`crate::wire::mask`]); binary bodies unchanged.
    fn masked(self) -> Body {
        match &self {
            Body::Text(t) => mask_payload(t).map(Body::Text).unwrap_or(self),
            Body::Binary { .. } => self,
        }
    }
}

impl Default for Body {
    fn default() -> Self {
        Body::Text(String::new())
    }
}

/// One recorded request/response pair: a line of the JSON Lines file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Exchange {
    /// Position in the recording, from 1.
    pub seq: u64,
    /// HTTP method.
    pub method: String,
    /// The full URL as sent (redacted).
    pub url: String,
    /// Request headers in order, as `[name, value]` pairs (redacted).
    #[serde(default)]
    pub request_headers: Vec<(String, String)>,
    /// Request body (redacted).
    #[serde(default)]
    pub request_body: Body,
    /// Response status; absent when no response arrived (see `error`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    /// Response headers (redacted).
    #[serde(default)]
    pub response_headers: Vec<(String, String)>,
    /// Response body (redacted).
    #[serde(default)]
    pub response_body: Body,
    /// The transport error, when no response arrived (redacted).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The kind of that error (`Transport`, `Timeout`, ...: the [`Error`] variant), so a
    /// replay fails the same way and the pipeline retries it as it did live.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_kind: Option<String>,
    /// The error's code, e.g. `ConnectFailed` (the request was never sent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_code: Option<String>,
    /// Wall time of the exchange in milliseconds.
    #[serde(default)]
    pub duration_ms: u64,
    /// Which attempt of a retried request this was (1 = first).
    #[serde(default = "first_attempt")]
    pub attempt: u32,
    /// SHA-256 (hex) of the real signature (`Authorization` value or SAS `sig`), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signature_sha256: Option<String>,
    /// True when the bodies were masked ([`Recorder::masking_payloads`]); a replay masks
    /// the sent body the same way before comparing.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub payloads_masked: bool,
}

fn first_attempt() -> u32 {
    1
}

impl Exchange {
    /// The first value of a recorded request header (case-insensitive).
    pub fn request_header(&self, name: &str) -> Option<&str> {
        find_header(&self.request_headers, name)
    }

    /// Parses one JSON line; the error names the line number.
    pub fn from_json_line(line: &str, line_number: usize) -> Result<Exchange, Error> {
        serde_json::from_str(line).map_err(|e| {
            Error::invalid_input(format!(
                "recording line {line_number} is not a valid exchange"
            ))
            .with_source(e)
        })
    }
}

/// The name recorded for an error's kind (its [`Error`] variant).
pub(crate) fn error_kind_name(error: &Error) -> &'static str {
    match error {
        Error::NotFound(_) => "NotFound",
        Error::Conflict(_) => "Conflict",
        Error::PreconditionFailed(_) => "PreconditionFailed",
        Error::Throttled { .. } => "Throttled",
        Error::Auth(_) => "Auth",
        Error::TooLarge(_) => "TooLarge",
        Error::InvalidInput(_) => "InvalidInput",
        Error::Transport(_) => "Transport",
        Error::Timeout(_) => "Timeout",
        _ => "Unexpected",
    }
}

/// SHA-256 (hex) of the request's signature: the `Authorization` header value, else the
/// decoded SAS `sig` query parameter. `None` for unsigned requests.
pub fn signature_fingerprint(request: &HttpRequest) -> Option<String> {
    let signature = match request.header("authorization") {
        Some(auth) => auth.to_string(),
        None => request
            .url
            .query_pairs()
            .find(|(n, _)| n.eq_ignore_ascii_case("sig"))
            .map(|(_, v)| v.into_owned())?,
    };
    Some(sha256_hex(signature.as_bytes()))
}

fn sha256_hex(bytes: &[u8]) -> String {
    sha2::Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A [`Transport`] that forwards to `inner` and appends each exchange, redacted, to a JSON
/// Lines sink (flushed per line, so a crash loses at most the exchange in flight).
///
/// ```no_run
/// # fn demo() -> Result<(), flowcraft_azure::Error> {
/// use std::{sync::Arc, time::Duration};
/// use flowcraft_azure::azure::auth::StorageConnection;
/// use flowcraft_azure::wire::{pipeline::Pipeline, record::Recorder};
/// use flowcraft_azure::wire::reqwest_transport::ReqwestTransport;
///
/// let conn = StorageConnection::parse("UseDevelopmentStorage=true")?;
/// let real = Arc::new(ReqwestTransport::new(Duration::from_secs(30))?);
/// let recorder = Recorder::to_file(real, "trace.jsonl", conn.redactor())?;
/// let pipeline = Pipeline::new(Arc::new(recorder), conn.signer());
/// # let _ = pipeline;
/// # Ok(()) }
/// ```
pub struct Recorder {
    inner: Arc<dyn Transport>,
    redactor: Redactor,
    mask_payloads: bool,
    sink: Mutex<RecordSink>,
}

struct RecordSink {
    writer: Box<dyn Write + Send>,
    next_seq: u64,
}

impl fmt::Debug for Recorder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Recorder")
            .field("inner", &self.inner)
            .field("redactor", &self.redactor)
            .finish()
    }
}

impl Recorder {
    /// Records to a new (truncated) file at `path`.
    pub fn to_file(
        inner: Arc<dyn Transport>,
        path: impl AsRef<Path>,
        redactor: Redactor,
    ) -> Result<Self, Error> {
        let path = path.as_ref();
        let file = std::fs::File::create(path).map_err(|e| {
            Error::invalid_input(format!("cannot create the trace file {}", path.display()))
                .with_source(e)
        })?;
        Ok(Self::to_writer(
            inner,
            std::io::BufWriter::new(file),
            redactor,
        ))
    }

    /// Records to any writer (a file, a `Vec<u8>` behind a shared buffer in tests).
    pub fn to_writer(
        inner: Arc<dyn Transport>,
        writer: impl Write + Send + 'static,
        redactor: Redactor,
    ) -> Self {
        Recorder {
            inner,
            redactor,
            mask_payloads: false,
            sink: Mutex::new(RecordSink {
                writer: Box::new(writer),
                next_seq: 1,
            }),
        }
    }

    /// The request's headers plus those the transport adds on the wire by itself (`host`,
    /// `content-length`, ...): the trace is the audit record of what was sent.
    fn headers_sent(&self, request: &HttpRequest) -> Vec<(String, String)> {
        let mut headers = request.header_pairs();
        for (name, value) in self.inner.implicit_headers(request) {
            if find_header(&headers, &name).is_none() {
                headers.push((name, value));
            }
        }
        headers
    }

    /// Also masks queue message texts and document contents (same shape and size, see
    /// [`crate::wire::mask`]), for traces that leave the building. Such a trace still
    /// replays the same requests, but the answers carry masked data.
    pub fn masking_payloads(mut self) -> Self {
        self.mask_payloads = true;
        self
    }

    fn exchange(
        &self,
        request: &HttpRequest,
        outcome: &Result<HttpResponse, Error>,
        duration_ms: u64,
    ) -> Exchange {
        let r = &self.redactor;
        let (status, response_headers, response_body, error) = match outcome {
            Ok(resp) => (
                Some(resp.status),
                r.redact_headers(&resp.headers),
                Body::from_bytes(&resp.body).redacted(r),
                None,
            ),
            Err(e) => (
                None,
                Vec::new(),
                Body::default(),
                Some(r.redact_text(&e.to_string())),
            ),
        };
        let failure = outcome.as_ref().err();
        let mut request_body = Body::from_bytes(&request.body).redacted(r);
        let mut response_body = response_body;
        if self.mask_payloads {
            request_body = request_body.masked();
            response_body = response_body.masked();
        }
        Exchange {
            seq: 0,
            method: request.method.to_string(),
            url: r.redact_url(request.url.as_str()),
            request_headers: r.redact_headers(&self.headers_sent(request)),
            request_body,
            status,
            response_headers,
            response_body,
            error,
            error_kind: failure.map(|e| error_kind_name(e).to_string()),
            error_code: failure.and_then(|e| e.code()).map(|c| r.redact_text(c)),
            duration_ms,
            attempt: request.attempt,
            signature_sha256: signature_fingerprint(request),
            payloads_masked: self.mask_payloads,
        }
    }

    fn write(&self, mut exchange: Exchange) -> Result<(), Error> {
        let mut sink = self.sink.lock().unwrap_or_else(|p| p.into_inner());
        exchange.seq = sink.next_seq;
        let line = serde_json::to_string(&exchange)
            .map_err(|e| Error::unexpected("cannot encode an exchange").with_source(e))?;
        let written = writeln!(sink.writer, "{line}").and_then(|()| sink.writer.flush());
        written.map_err(|e| {
            Error::unexpected("cannot write the trace file (check free disk space and permissions)")
                .with_source(e)
        })?;
        sink.next_seq += 1;
        Ok(())
    }
}

impl Recorder {
    /// Writes one exchange; a failure to write is logged, never returned: the request
    /// already happened, and failing it would make the caller retry a possibly
    /// non-idempotent operation.
    fn record(
        &self,
        request: &HttpRequest,
        outcome: &Result<HttpResponse, Error>,
        started: Instant,
    ) {
        let duration_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
        let exchange = self.exchange(request, outcome, duration_ms);
        if let Err(e) = self.write(exchange) {
            tracing::warn!(error = %e, "wire trace not written");
        }
    }
}

/// An exchange in flight. If the send is dropped before an answer (the pipeline's request
/// timeout cancels it), the drop records the attempt as a [`Error::Timeout`], so the trace
/// holds every attempt and a replay retries it as the live run did.
struct InFlight<'a> {
    recorder: &'a Recorder,
    request: Option<HttpRequest>,
    started: Instant,
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        if let Some(request) = self.request.take() {
            let cancelled = Err(Error::Timeout(Box::new(crate::error::ErrorInfo::new(
                "the attempt was cancelled before an answer arrived (request timeout, or the caller gave up)",
            ))));
            self.recorder.record(&request, &cancelled, self.started);
        }
    }
}

#[async_trait]
impl Transport for Recorder {
    fn implicit_headers(&self, request: &HttpRequest) -> Vec<(String, String)> {
        self.inner.implicit_headers(request)
    }

    async fn send(&self, request: HttpRequest) -> Result<HttpResponse, Error> {
        let mut in_flight = InFlight {
            recorder: self,
            request: Some(request.clone()),
            started: Instant::now(),
        };
        let outcome = self.inner.send(request).await;
        if let Some(request) = in_flight.request.take() {
            self.record(&request, &outcome, in_flight.started);
        }
        outcome
    }
}

/// Reads a JSON Lines recording (blank lines skipped).
pub fn read_recording(text: &str) -> Result<Vec<Exchange>, Error> {
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| Exchange::from_json_line(l, i + 1))
        .collect()
}

/// Reads a JSON Lines recording from a file.
pub fn read_recording_file(path: impl AsRef<Path>) -> Result<Vec<Exchange>, Error> {
    let path = path.as_ref();
    let text = std::fs::read_to_string(path).map_err(|e| {
        Error::invalid_input(format!("cannot read the recording {}", path.display())).with_source(e)
    })?;
    read_recording(&text)
}
