//! A small local HTTP/1 server (wiremock-style) that serves a recording on
//! `127.0.0.1:<port>`, so the real reqwest transport, the CLI and `curl` can run offline
//! against recorded traffic. Requests are matched with the same rules as
//! [`crate::wire::replay::Replayer`]; when traffic diverges the server answers status **599**
//! with the diff as a plain-text body (a recorded transport failure is also answered 599,
//! with the recorded error).
//!
//! ```no_run
//! # async fn demo() -> Result<(), flowcraft_azure::Error> {
//! use flowcraft_azure::wire::{replay::Replayer, replay_server::ReplayServer};
//! let server = ReplayServer::start(Replayer::from_file("fixtures/wire/queue.jsonl")?).await?;
//! println!("point the client at {}", server.base_url());
//! server.shutdown().await;
//! # Ok(()) }
//! ```

use http_body_util::{BodyExt, Full, Limited};
use hyper::body::{Bytes, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::error::Error;
use crate::wire::replay::Replayer;
use crate::wire::transport::HttpRequest;

/// Status answered when a request does not match the recording.
pub const DIVERGENCE_STATUS: u16 = 599;

/// The largest request body the server reads (the services accept far less).
const MAX_REQUEST_BYTES: usize = 8 * 1024 * 1024;

/// Response headers not copied from the recording (the server computes its own framing).
const FRAMING_HEADERS: [&str; 4] = [
    "content-length",
    "transfer-encoding",
    "connection",
    "keep-alive",
];

/// A running replay server. Dropping it without [`ReplayServer::shutdown`] also stops it.
#[derive(Debug)]
pub struct ReplayServer {
    addr: SocketAddr,
    replayer: Arc<Replayer>,
    connections: Arc<AtomicUsize>,
    stop: CancellationToken,
    task: Option<JoinHandle<()>>,
}

impl ReplayServer {
    /// Serves `replayer` on `127.0.0.1` with a free port.
    pub async fn start(replayer: Replayer) -> Result<Self, Error> {
        Self::start_on(replayer, SocketAddr::from(([127, 0, 0, 1], 0))).await
    }

    /// Serves `replayer` on `addr`.
    pub async fn start_on(replayer: Replayer, addr: SocketAddr) -> Result<Self, Error> {
        let listener = TcpListener::bind(addr).await.map_err(|e| {
            Error::invalid_input(format!("cannot listen on {addr} (choose another port)"))
                .with_source(e)
        })?;
        let addr = listener
            .local_addr()
            .map_err(|e| Error::unexpected("cannot read the listening address").with_source(e))?;
        let replayer = Arc::new(replayer);
        let stop = CancellationToken::new();
        let connections = Arc::new(AtomicUsize::new(0));
        let task = tokio::spawn(accept_loop(
            listener,
            replayer.clone(),
            connections.clone(),
            stop.clone(),
        ));
        Ok(ReplayServer {
            addr,
            replayer,
            connections,
            stop,
            task: Some(task),
        })
    }

    /// The address the server listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:<port>`: use it as the endpoint.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The replayer behind the server ([`Replayer::finish`], [`Replayer::remaining`], ...).
    pub fn replayer(&self) -> &Replayer {
        &self.replayer
    }

    /// How many TCP connections the server has accepted (shows client connection reuse).
    pub fn connections_accepted(&self) -> usize {
        self.connections.load(Ordering::Relaxed)
    }

    /// Stops accepting connections and waits for the accept loop to end.
    pub async fn shutdown(mut self) {
        self.stop.cancel();
        if let Some(task) = self.task.take() {
            // A panicked or cancelled accept loop has nothing left to clean up.
            let _ = task.await;
        }
    }
}

impl Drop for ReplayServer {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

async fn accept_loop(
    listener: TcpListener,
    replayer: Arc<Replayer>,
    connections: Arc<AtomicUsize>,
    stop: CancellationToken,
) {
    loop {
        let accepted = tokio::select! {
            () = stop.cancelled() => return,
            accepted = listener.accept() => accepted,
        };
        let Ok((stream, _peer)) = accepted else {
            continue;
        };
        connections.fetch_add(1, Ordering::Relaxed);
        let replayer = replayer.clone();
        let stop = stop.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req| {
                let replayer = replayer.clone();
                async move { Ok::<_, Infallible>(answer(&replayer, req).await) }
            });
            let connection = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service);
            tokio::select! {
                () = stop.cancelled() => {}
                result = connection => {
                    if let Err(e) = result {
                        tracing::debug!(error = %e, "replay server connection ended");
                    }
                }
            }
        });
    }
}

async fn answer(
    replayer: &Replayer,
    req: hyper::Request<Incoming>,
) -> hyper::Response<Full<Bytes>> {
    let (parts, body) = req.into_parts();
    let body = match Limited::new(body, MAX_REQUEST_BYTES).collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(e) => {
            return text_response(
                DIVERGENCE_STATUS,
                format!("cannot read the request body: {e}"),
            );
        }
    };
    let host = parts
        .headers
        .get(hyper::header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("127.0.0.1");
    let path = parts
        .uri
        .path_and_query()
        .map(|p| p.as_str())
        .unwrap_or("/");
    let mut request =
        match HttpRequest::parse(parts.method.as_str(), format!("http://{host}{path}")) {
            Ok(request) => request,
            Err(e) => {
                return text_response(
                    DIVERGENCE_STATUS,
                    format!("cannot replay this request: {e}"),
                );
            }
        };
    request.headers = parts.headers;
    request.body = body;
    match replayer.play(&request).await {
        Ok(resp) => {
            let mut builder = hyper::Response::builder().status(resp.status);
            for (name, value) in &resp.headers {
                if !FRAMING_HEADERS.iter().any(|f| name.eq_ignore_ascii_case(f)) {
                    builder = builder.header(name.as_str(), value.as_str());
                }
            }
            builder
                .body(Full::new(Bytes::from(resp.body)))
                .unwrap_or_else(|e| {
                    text_response(
                        DIVERGENCE_STATUS,
                        format!("the recorded response cannot be served: {e}"),
                    )
                })
        }
        Err(e) => text_response(DIVERGENCE_STATUS, e.to_string()),
    }
}

fn text_response(status: u16, text: String) -> hyper::Response<Full<Bytes>> {
    let mut response = hyper::Response::new(Full::new(Bytes::from(text)));
    *response.status_mut() =
        hyper::StatusCode::from_u16(status).unwrap_or(hyper::StatusCode::INTERNAL_SERVER_ERROR);
    response.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}
