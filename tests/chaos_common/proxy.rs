//! A fault-injecting HTTP/1 proxy for the chaos tests: listens on 127.0.0.1:0 and forwards
//! every request unchanged (same path, same headers, so SharedKey and master-key signatures
//! still verify) to one target, except that a seeded share of requests meet a fault: 429 with
//! `x-ms-retry-after-ms`, 503 or 500 (not forwarded), a connection reset before forwarding, a
//! connection reset AFTER the target answered (the request took effect, its answer is lost),
//! 0-500 ms of latency, or a response body cut in half.

use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::Bytes;
use hyper::body::{Frame, Incoming};
use hyper::header::{CONNECTION, CONTENT_LENGTH, HOST, TRANSFER_ENCODING};
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

type Body = BoxBody<Bytes, std::io::Error>;

/// The faults, by name.
pub const KINDS: [&str; 7] = [
    "429",
    "503",
    "500",
    "reset-before",
    "reset-after",
    "latency",
    "truncated",
];

struct State {
    target: String,
    client: reqwest::Client,
    rate: f64,
    rng: Mutex<fastrand::Rng>,
    counts: Mutex<BTreeMap<&'static str, u64>>,
}

/// A running proxy; stops when dropped.
pub struct FaultProxy {
    /// Where it listens.
    pub addr: SocketAddr,
    state: Arc<State>,
    stop: CancellationToken,
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

impl FaultProxy {
    /// Forwards to `target` (scheme, host and port, no path), faulting `rate` of requests.
    pub async fn start(target: &str, rate: f64, seed: u64) -> FaultProxy {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(State {
            target: target.trim_end_matches('/').to_string(),
            client: reqwest::Client::builder().no_proxy().build().unwrap(),
            rate,
            rng: Mutex::new(fastrand::Rng::with_seed(seed)),
            counts: Mutex::new(BTreeMap::new()),
        });
        let stop = CancellationToken::new();
        let (st, token) = (state.clone(), stop.clone());
        tokio::spawn(async move {
            loop {
                let stream = tokio::select! {
                    _ = token.cancelled() => break,
                    accepted = listener.accept() => match accepted {
                        Ok((stream, _)) => stream,
                        Err(_) => continue,
                    },
                };
                // A dropped connection is a reset (RST), not a graceful close.
                let _ = socket_linger_zero(&stream);
                let st = st.clone();
                let service = service_fn(move |req| handle(st.clone(), req));
                tokio::spawn(
                    hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service),
                );
            }
        });
        FaultProxy { addr, state, stop }
    }

    /// `http://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Requests seen and faults injected, by kind (`requests` is the total).
    pub fn counts(&self) -> BTreeMap<&'static str, u64> {
        self.state.counts.lock().unwrap().clone()
    }
}

fn socket_linger_zero(stream: &tokio::net::TcpStream) -> std::io::Result<()> {
    #[allow(deprecated)]
    stream.set_linger(Some(Duration::ZERO))
}

fn full(bytes: Bytes) -> Body {
    Full::new(bytes).map_err(|never| match never {}).boxed()
}

fn lost(what: &str) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::ConnectionReset, what.to_string())
}

async fn handle(
    state: Arc<State>,
    req: Request<Incoming>,
) -> Result<Response<Body>, std::io::Error> {
    let fault = {
        let mut rng = state.rng.lock().unwrap();
        (rng.f64() < state.rate).then(|| KINDS[rng.usize(..KINDS.len())])
    };
    let latency = {
        let mut rng = state.rng.lock().unwrap();
        Duration::from_millis(rng.u64(0..=500))
    };
    {
        let mut counts = state.counts.lock().unwrap();
        *counts.entry("requests").or_default() += 1;
        if let Some(kind) = fault {
            *counts.entry(kind).or_default() += 1;
        }
    }
    let status = match fault {
        Some("429") => Some(StatusCode::TOO_MANY_REQUESTS),
        Some("503") => Some(StatusCode::SERVICE_UNAVAILABLE),
        Some("500") => Some(StatusCode::INTERNAL_SERVER_ERROR),
        _ => None,
    };
    if let Some(status) = status {
        return Ok(Response::builder()
            .status(status)
            .header("x-ms-retry-after-ms", "100")
            .header("content-type", "application/json")
            .body(full(Bytes::from_static(
                br#"{"code":"InjectedFault","message":"injected by the chaos proxy"}"#,
            )))
            .unwrap());
    }
    match fault {
        Some("reset-before") => return Err(lost("reset before forwarding")),
        Some("latency") => tokio::time::sleep(latency).await,
        _ => {}
    }
    let (parts, body) = req.into_parts();
    let body = body
        .collect()
        .await
        .map_err(std::io::Error::other)?
        .to_bytes();
    let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    let mut forward = state
        .client
        .request(parts.method, format!("{}{path}", state.target))
        .body(body);
    for (name, value) in &parts.headers {
        if name != HOST && name != CONTENT_LENGTH && name != CONNECTION {
            forward = forward.header(name, value);
        }
    }
    let answer = forward.send().await.map_err(std::io::Error::other)?;
    let mut response = Response::builder().status(answer.status());
    for (name, value) in answer.headers() {
        if name != CONTENT_LENGTH && name != TRANSFER_ENCODING && name != CONNECTION {
            response = response.header(name, value);
        }
    }
    let bytes = answer.bytes().await.map_err(std::io::Error::other)?;
    match fault {
        Some("reset-after") => Err(lost("reset after the target answered")),
        Some("truncated") if bytes.len() >= 2 => {
            let half = bytes.slice(..bytes.len() / 2);
            let frames: Vec<Result<Frame<Bytes>, std::io::Error>> =
                vec![Ok(Frame::data(half)), Err(lost("body cut short"))];
            let body = StreamBody::new(futures_util::stream::iter(frames));
            Ok(response
                .header(CONTENT_LENGTH, bytes.len())
                .body(BodyExt::boxed(body))
                .unwrap())
        }
        // An empty body cannot be cut: the answer is lost instead.
        Some("truncated") => Err(lost("reset after the target answered (empty body)")),
        _ => Ok(response.body(full(bytes)).unwrap()),
    }
}
