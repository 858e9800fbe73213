//! Helpers shared by the wire tests: a scripted fake transport that records what it was sent.

#![allow(dead_code)]

use async_trait::async_trait;
use std::collections::VecDeque;
use std::sync::Mutex;

use flowcraft_azure::Error;
use flowcraft_azure::wire::transport::{HttpRequest, HttpResponse, Transport};

/// Answers each request with the next scripted outcome (`None` = never answer) and keeps
/// every request it saw.
#[derive(Debug, Default)]
pub struct ScriptedTransport {
    script: Mutex<VecDeque<Option<Result<HttpResponse, Error>>>>,
    seen: Mutex<Vec<HttpRequest>>,
}

impl ScriptedTransport {
    /// A transport that plays `script` in order.
    pub fn new(script: Vec<Option<Result<HttpResponse, Error>>>) -> Self {
        ScriptedTransport {
            script: Mutex::new(script.into()),
            seen: Mutex::new(Vec::new()),
        }
    }

    /// The requests received so far.
    pub fn seen(&self) -> Vec<HttpRequest> {
        self.seen.lock().expect("not poisoned").clone()
    }
}

#[async_trait]
impl Transport for ScriptedTransport {
    async fn send(&self, request: HttpRequest) -> Result<HttpResponse, Error> {
        self.seen.lock().expect("not poisoned").push(request);
        let next = self.script.lock().expect("not poisoned").pop_front();
        match next {
            Some(Some(outcome)) => outcome,
            Some(None) => std::future::pending().await,
            None => Err(Error::unexpected("the test script ran out of answers")),
        }
    }
}

/// A response with a status, headers and a text body.
pub fn response(status: u16, headers: &[(&str, &str)], body: &str) -> Result<HttpResponse, Error> {
    Ok(HttpResponse {
        status,
        headers: headers
            .iter()
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect(),
        body: body.as_bytes().to_vec(),
    })
}

/// Azurite's well-known development key (public).
pub const DEV_KEY: &str =
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";
