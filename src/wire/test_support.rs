//! Test doubles shared by unit tests of the wire layer and the REST clients: a transport
//! that answers canned responses and records requests, an unsigned single-attempt pipeline,
//! a response builder and a small `block_on` for property tests.

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

/// Runs a future to completion on a fresh current-thread runtime (for proptest bodies).
pub fn block_on<F: std::future::Future>(future: F) -> F::Output {
    match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime.block_on(future),
        Err(e) => panic!("cannot build a test runtime: {e}"),
    }
}
