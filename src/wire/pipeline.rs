//! The request pipeline: sign each attempt with a fresh date, send it through a
//! [`Transport`], and retry transient answers as the [`RetryPolicy`] says. Provider clients
//! (queue, Cosmos) build an [`HttpRequest`] and hand it to [`Pipeline::send`].
//!
//! Waiting uses `tokio::time::sleep`, so tests run under `tokio::time::pause()` without real
//! delays; the clock and the jitter seed are injectable ([`Pipeline::with_clock`],
//! [`Pipeline::with_seed`]).

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::error::{Error, ErrorInfo};
use crate::wire::clock::{Clock, SystemClock};
use crate::wire::retry::{Idempotency, RetryPolicy};
use crate::wire::transport::{HttpRequest, HttpResponse, Transport};

/// Adds authentication to one attempt of a request. Async, so a signer can fetch (or wait
/// for) a bearer token before it signs.
#[async_trait]
pub trait Signer: Send + Sync + std::fmt::Debug {
    /// Adds date + auth headers (or SAS query) to the request for this attempt.
    async fn sign(&self, request: &mut HttpRequest, now: DateTime<Utc>) -> Result<(), Error>;
}

/// A signer that adds nothing (anonymous access, or a recorded exchange replayed as is).
#[derive(Debug, Clone, Copy, Default)]
pub struct NoAuth;

#[async_trait]
impl Signer for NoAuth {
    async fn sign(&self, _request: &mut HttpRequest, _now: DateTime<Utc>) -> Result<(), Error> {
        Ok(())
    }
}

/// Transport + signer + retry policy + clock + jitter source. Cheap to clone (shared parts
/// are reference counted); `Debug` shows no secrets. Requests are usually built and sent with
/// [`Pipeline::request`] (see [`crate::wire::request`]); [`Pipeline::send`] takes a finished
/// [`HttpRequest`].
///
/// ```no_run
/// # async fn demo() -> Result<(), flowcraft_azure::Error> {
/// use std::{sync::Arc, time::Duration};
/// use flowcraft_azure::azure::auth::StorageConnection;
/// use flowcraft_azure::wire::{pipeline::Pipeline, reqwest_transport::ReqwestTransport};
/// use flowcraft_azure::wire::request::Method;
///
/// let conn = StorageConnection::parse("UseDevelopmentStorage=true")?;
/// let transport = Arc::new(ReqwestTransport::new(Duration::from_secs(30))?);
/// let pipeline = Pipeline::new(transport, conn.signer());
/// let url = format!("{}/jobs?comp=metadata", conn.queue_endpoint)
///     .parse()
///     .map_err(|e| flowcraft_azure::Error::invalid_input(format!("bad URL: {e}")))?;
/// let answer = pipeline
///     .request(Method::GET, url)
///     .header("x-ms-version", "2021-12-02")
///     .idempotent(true)
///     .send_any_status()
///     .await?;
/// println!("status {}", answer.status);
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Pipeline {
    transport: Arc<dyn Transport>,
    signer: Arc<dyn Signer>,
    retry: RetryPolicy,
    clock: Arc<dyn Clock>,
    rng: Arc<Mutex<fastrand::Rng>>,
}

impl fmt::Debug for Pipeline {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pipeline")
            .field("transport", &self.transport)
            .field("signer", &self.signer)
            .field("retry", &self.retry)
            .field("clock", &self.clock)
            .finish()
    }
}

impl Pipeline {
    /// A pipeline with the default retry policy, the system clock and random jitter.
    pub fn new(transport: Arc<dyn Transport>, signer: Arc<dyn Signer>) -> Self {
        Pipeline {
            transport,
            signer,
            retry: RetryPolicy::default(),
            clock: Arc::new(SystemClock),
            rng: Arc::new(Mutex::new(fastrand::Rng::new())),
        }
    }

    /// Replaces the retry policy.
    pub fn with_retry(mut self, policy: RetryPolicy) -> Self {
        self.retry = policy;
        self
    }

    /// Replaces the clock used to date (and sign) each attempt.
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// Seeds the jitter so backoff waits are reproducible.
    pub fn with_seed(mut self, seed: u64) -> Self {
        self.rng = Arc::new(Mutex::new(fastrand::Rng::with_seed(seed)));
        self
    }

    /// The retry policy in use.
    pub fn retry_policy(&self) -> &RetryPolicy {
        &self.retry
    }

    /// Signs per attempt (fresh date), sends, retries transient answers per policy. Returns the
    /// final response whatever its status (callers map non-2xx to Error); Err only when no
    /// response was obtained (connection failure / timeout after all attempts), or when the
    /// request holds a header [`HttpRequest::set_header`] could not store: such a request is
    /// refused with [`Error::InvalidInput`] before it is signed or sent.
    pub async fn send(
        &self,
        request: HttpRequest,
        idempotency: Idempotency,
    ) -> Result<HttpResponse, Error> {
        request.check()?;
        let mut attempt = 1;
        let mut waited = Duration::ZERO;
        loop {
            let mut this_try = request.clone();
            this_try.attempt = attempt;
            self.signer.sign(&mut this_try, self.clock.now()).await?;
            let outcome = self.send_once(this_try).await;
            let wait = {
                let mut rng = self.rng.lock().unwrap_or_else(|p| p.into_inner());
                self.retry.next_wait(
                    attempt,
                    idempotency,
                    &outcome,
                    waited,
                    self.clock.now(),
                    &mut rng,
                )
            };
            let Some(wait) = wait else {
                return outcome.map_err(|e| with_attempts(e, attempt));
            };
            tracing::debug!(
                attempt,
                wait_ms = u64::try_from(wait.as_millis()).unwrap_or(u64::MAX),
                status = outcome.as_ref().ok().map(|r| r.status),
                "retrying request"
            );
            tokio::time::sleep(wait).await;
            waited += wait;
            attempt += 1;
        }
    }

    /// One attempt bounded by the request timeout.
    async fn send_once(&self, request: HttpRequest) -> Result<HttpResponse, Error> {
        let limit = self.retry.request_timeout;
        match tokio::time::timeout(limit, self.transport.send(request)).await {
            Ok(outcome) => outcome,
            Err(_) => Err(Error::Timeout(Box::new(ErrorInfo::new(format!(
                "no answer within {} ms",
                limit.as_millis()
            ))))),
        }
    }
}

/// Notes in the error how many attempts were made, when there was more than one.
fn with_attempts(mut err: Error, attempts: u32) -> Error {
    if attempts > 1 {
        let info = err.info_mut();
        info.message = format!("{} (gave up after {attempts} attempts)", info.message);
    }
    err
}
