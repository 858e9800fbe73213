//! The real [`Transport`]: reqwest over rustls (no OpenSSL), HTTP/1.1 with keep-alive
//! connection pooling and a per-request timeout. Redirects are never followed (a 3xx is
//! returned as the answer), so signed traffic only reaches the host it was signed for. Connection failures and timeouts become
//! [`Error::Transport`] / [`Error::Timeout`]; errors name the host but never the query string
//! (which may hold a SAS signature) nor any header value. Response bodies are read in chunks
//! up to a cap ([`DEFAULT_MAX_RESPONSE_BYTES`]), so a broken or hostile server cannot make the
//! client buffer without bound. Extra trusted roots ([`RootCertificates`], e.g. for the
//! HTTPS Cosmos emulator or a TLS-inspecting proxy) are added to the built-in web PKI roots.

use async_trait::async_trait;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::error::{Error, ErrorInfo};
use crate::wire::retry::NOT_SENT_CODE;
use crate::wire::transport::{HttpRequest, HttpResponse, Transport};

/// Headers reqwest computes itself from the URL and body; a copy from the request would be
/// sent twice.
const COMPUTED_HEADERS: [&str; 2] = ["content-length", "host"];

/// The largest response body read by default: 32 MiB. Queue answers are at most a few MiB
/// (32 messages of 64 KiB), Cosmos items at most 2 MB and query pages about 4 MB.
pub const DEFAULT_MAX_RESPONSE_BYTES: usize = 32 * 1024 * 1024;

/// The `User-Agent` sent when a request does not set one.
pub const USER_AGENT: &str = concat!("flowcraft-azure/", env!("CARGO_PKG_VERSION"));

/// Error code of the [`Error::Unexpected`] returned when a response body exceeds the cap.
pub const RESPONSE_TOO_LARGE_CODE: &str = "ResponseTooLarge";

/// Root certificates read from a PEM file, to trust besides the built-in web PKI roots.
/// `Debug` shows the file and the count.
#[derive(Clone)]
pub struct RootCertificates {
    certs: Vec<reqwest::Certificate>,
    source: PathBuf,
}

impl fmt::Debug for RootCertificates {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RootCertificates")
            .field("source", &self.source)
            .field("count", &self.certs.len())
            .finish()
    }
}

impl RootCertificates {
    /// Reads one or more `-----BEGIN CERTIFICATE-----` blocks from `path`. A missing file, a
    /// file without a certificate, or one that is not a valid X.509 certificate is an
    /// [`Error::InvalidInput`] naming the file.
    pub fn from_pem_file(path: impl AsRef<Path>) -> Result<Self, Error> {
        let path = path.as_ref();
        let bytes = std::fs::read(path).map_err(|e| {
            Error::invalid_input(format!(
                "cannot read the root certificate file {}",
                path.display()
            ))
            .with_source(e)
        })?;
        Self::from_pem(&bytes, path)
    }

    /// Parses PEM text; `source` names it in errors.
    pub fn from_pem(pem: &[u8], source: impl Into<PathBuf>) -> Result<Self, Error> {
        let source = source.into();
        let bad = |why: &str| {
            Error::invalid_input(format!(
                "the root certificate file {} {why}; expected PEM `-----BEGIN CERTIFICATE-----` \
                 blocks (the CA's certificate, not a private key)",
                source.display()
            ))
        };
        let certs = reqwest::Certificate::from_pem_bundle(pem)
            .map_err(|_| bad("has a certificate block that is not valid PEM"))?;
        if certs.is_empty() {
            return Err(bad("holds no certificate"));
        }
        // The certificates are only parsed as X.509 when a client is built: build one now so
        // a bad file is reported when the settings are read, not on the first request.
        let mut check = reqwest::Client::builder();
        for cert in &certs {
            check = check.add_root_certificate(cert.clone());
        }
        check
            .build()
            .map_err(|_| bad("holds a block that is not a valid X.509 certificate"))?;
        Ok(RootCertificates { certs, source })
    }

    /// How many certificates were read.
    pub fn len(&self) -> usize {
        self.certs.len()
    }

    /// Never true for a value built by [`RootCertificates::from_pem`].
    pub fn is_empty(&self) -> bool {
        self.certs.is_empty()
    }
}

/// Sends requests with a pooled reqwest client. Cheap to clone (the pool is shared).
#[derive(Debug, Clone)]
pub struct ReqwestTransport {
    client: reqwest::Client,
    max_response_bytes: usize,
}

impl ReqwestTransport {
    /// A transport whose requests time out after `timeout` (connect + send + full body).
    pub fn new(timeout: Duration) -> Result<Self, Error> {
        Self::with_roots(timeout, None)
    }

    /// [`ReqwestTransport::new`], also trusting `roots` (when given) besides the built-in
    /// roots.
    pub fn with_roots(timeout: Duration, roots: Option<&RootCertificates>) -> Result<Self, Error> {
        let mut builder = reqwest::Client::builder();
        if let Some(roots) = roots {
            for cert in &roots.certs {
                builder = builder.add_root_certificate(cert.clone());
            }
        }
        let client = builder
            .http1_only()
            .timeout(timeout)
            .connect_timeout(timeout.min(Duration::from_secs(10)))
            .pool_idle_timeout(Duration::from_secs(90))
            .pool_max_idle_per_host(64)
            .tcp_nodelay(true)
            .user_agent(USER_AGENT)
            // A signed request goes only to the host it was signed for: a 3xx is handed back
            // (the REST clients turn it into an error naming the Location host).
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| {
                Error::unexpected("could not build the HTTP client").with_source(e.without_url())
            })?;
        Ok(ReqwestTransport {
            client,
            max_response_bytes: DEFAULT_MAX_RESPONSE_BYTES,
        })
    }

    /// Replaces the response body cap (see [`DEFAULT_MAX_RESPONSE_BYTES`]).
    pub fn with_max_response_bytes(mut self, max: usize) -> Self {
        self.max_response_bytes = max;
        self
    }

    /// The reqwest request for `request`; the URL, headers and body are moved, not copied
    /// or parsed again.
    fn build(&self, request: HttpRequest) -> Result<reqwest::Request, Error> {
        request.check()?;
        let empty_needs_length = request.body.is_empty() && expects_body(&request.method);
        let mut built = reqwest::Request::new(request.method, request.url);
        let mut headers = request.headers;
        for computed in COMPUTED_HEADERS {
            headers.remove(computed);
        }
        if empty_needs_length {
            // hyper sends no length for an empty body, but Azure's front ends (HTTP.sys) refuse
            // a PUT or POST without one (411 Length Required) and the Azure SDKs always send
            // `Content-Length: 0` (Create Queue, Update Message without text, ...).
            headers.insert(
                reqwest::header::CONTENT_LENGTH,
                reqwest::header::HeaderValue::from_static("0"),
            );
        }
        *built.headers_mut() = headers;
        *built.body_mut() = Some(reqwest::Body::from(request.body));
        Ok(built)
    }
}

#[async_trait]
impl Transport for ReqwestTransport {
    /// What reqwest and hyper add on the wire (pinned by a test that captures the bytes):
    /// `host`, `content-length` for a body (and `0` for an empty POST / PUT / PATCH), and the
    /// client's default `accept` and `user-agent` unless the request sets them.
    fn implicit_headers(&self, request: &HttpRequest) -> Vec<(String, String)> {
        let mut added = Vec::new();
        let url = &request.url;
        let host = url.host_str().unwrap_or_default();
        let host = match url.port() {
            Some(port) => format!("{host}:{port}"),
            None => host.to_string(),
        };
        added.push(("host".to_string(), host));
        if !request.body.is_empty() || expects_body(&request.method) {
            added.push(("content-length".to_string(), request.body.len().to_string()));
        }
        if request.header("accept").is_none() {
            added.push(("accept".to_string(), "*/*".to_string()));
        }
        if request.header("user-agent").is_none() {
            added.push(("user-agent".to_string(), USER_AGENT.to_string()));
        }
        added
    }

    async fn send(&self, request: HttpRequest) -> Result<HttpResponse, Error> {
        let host = host_of(&request.url);
        let method = request.method.to_string();
        let built = self.build(request)?;
        let mut response = self
            .client
            .execute(built)
            .await
            .map_err(|e| map_error(e, &method, &host))?;
        let status = response.status().as_u16();
        let headers = response
            .headers()
            .iter()
            .map(|(n, v)| {
                (
                    n.as_str().to_string(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect();
        let too_large = || {
            Error::Unexpected(Box::new(
                ErrorInfo::new(format!(
                    "the answer from {host} is larger than {} bytes; this is not a Queue or \
                     Cosmos answer: check the endpoint",
                    self.max_response_bytes
                ))
                .with_status(status)
                .with_code(RESPONSE_TOO_LARGE_CODE),
            ))
        };
        if response
            .content_length()
            .is_some_and(|len| len > self.max_response_bytes as u64)
        {
            return Err(too_large());
        }
        let mut body = Vec::new();
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|e| map_error(e, &method, &host))?
        {
            if body.len().saturating_add(chunk.len()) > self.max_response_bytes {
                return Err(too_large());
            }
            body.extend_from_slice(&chunk);
        }
        Ok(HttpResponse {
            status,
            headers,
            body,
        })
    }
}

/// Methods whose requests carry a length even when the body is empty.
fn expects_body(method: &http::Method) -> bool {
    matches!(
        *method,
        http::Method::POST | http::Method::PUT | http::Method::PATCH
    )
}

/// `scheme://host:port` of a URL (no user info, path or query), for error messages.
fn host_of(url: &url::Url) -> String {
    format!(
        "{}://{}{}",
        url.scheme(),
        url.host_str().unwrap_or_default(),
        url.port().map(|p| format!(":{p}")).unwrap_or_default()
    )
}

/// Maps a reqwest failure to our error, keeping it (without its URL, which may carry a SAS
/// token) as the source.
fn map_error(e: reqwest::Error, method: &str, host: &str) -> Error {
    let err = if e.is_timeout() {
        Error::Timeout(Box::new(ErrorInfo::new(format!(
            "{method} to {host} got no answer in time"
        ))))
    } else if e.is_connect() {
        Error::Transport(Box::new(
            ErrorInfo::new(format!("could not connect to {host}")).with_code(NOT_SENT_CODE),
        ))
    } else {
        Error::transport(format!("{method} to {host} failed"))
    };
    err.with_source(e.without_url())
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEST_ROOT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures/tls/test-root-ca.pem");

    #[test]
    fn a_root_certificate_file_is_read_and_trusted() {
        let roots = RootCertificates::from_pem_file(TEST_ROOT).expect("the test root loads");
        assert_eq!(roots.len(), 1);
        assert!(format!("{roots:?}").contains("test-root-ca.pem"));
        assert!(ReqwestTransport::with_roots(Duration::from_secs(5), Some(&roots)).is_ok());
        // A bundle of two is two roots.
        let pem = std::fs::read_to_string(TEST_ROOT).unwrap_or_default();
        let two = RootCertificates::from_pem(format!("{pem}{pem}").as_bytes(), "bundle.pem");
        assert_eq!(two.map(|r| r.len()).ok(), Some(2));
    }

    #[test]
    fn bad_root_certificate_files_are_clear_errors_naming_the_file() {
        let missing = RootCertificates::from_pem_file("/nonexistent/ca.pem").expect_err("missing");
        assert!(
            missing.to_string().contains("/nonexistent/ca.pem"),
            "{missing}"
        );
        let pem = std::fs::read_to_string(TEST_ROOT).unwrap_or_default();
        let not_x509 = "-----BEGIN CERTIFICATE-----\nAAECAwQFBgcICQ==\n-----END CERTIFICATE-----\n";
        let broken_base64 = pem.replacen('M', "*", 3);
        let key_only = "-----BEGIN PRIVATE KEY-----\nAAECAwQFBgcICQ==\n-----END PRIVATE KEY-----\n";
        for (text, why) in [
            ("", "holds no certificate"),
            ("hello", "holds no certificate"),
            (key_only, "holds no certificate"),
            (not_x509, "not a valid X.509"),
            (broken_base64.as_str(), "not valid PEM"),
        ] {
            let err = RootCertificates::from_pem(text.as_bytes(), "ca.pem").expect_err(why);
            let shown = err.to_string();
            assert!(matches!(err, Error::InvalidInput(_)), "{shown}");
            assert!(
                shown.contains("ca.pem") && shown.contains(why),
                "{why}: {shown}"
            );
        }
    }

    #[tokio::test]
    async fn connection_refused_is_a_not_sent_transport_error_without_query() {
        // Bind then drop a listener to get a port nothing listens on.
        let listener = std::net::TcpListener::bind("127.0.0.1:0");
        let port = listener
            .map(|l| l.local_addr().map(|a| a.port()).unwrap_or(1))
            .unwrap_or(1);
        let transport = ReqwestTransport::new(Duration::from_secs(5));
        let Ok(transport) = transport else {
            panic!("client should build");
        };
        let req = HttpRequest::parse("GET", format!("http://127.0.0.1:{port}/q?sig=SECRETSIG"))
            .expect("valid request");
        let err = transport.send(req).await.err();
        let Some(err) = err else {
            panic!("nothing listens on port {port}; expected an error");
        };
        assert!(matches!(err, Error::Transport(_)), "{err:?}");
        assert_eq!(err.code(), Some(NOT_SENT_CODE));
        let text = format!("{err} {err:?}");
        assert!(!text.contains("SECRETSIG"), "{text}");
        assert!(text.contains("127.0.0.1"), "{text}");
        // The causes are kept, not flattened: the chain reaches the OS error.
        use std::error::Error as _;
        let chain: Vec<&(dyn std::error::Error + 'static)> =
            std::iter::successors(err.source(), |&e| e.source()).collect();
        assert!(
            chain
                .iter()
                .any(|e| e.downcast_ref::<reqwest::Error>().is_some()),
            "{chain:?}"
        );
        let refused = chain
            .iter()
            .filter_map(|e| e.downcast_ref::<std::io::Error>())
            .any(|io| io.kind() == std::io::ErrorKind::ConnectionRefused);
        assert!(refused, "{chain:?}");
        assert!(chain.iter().all(|e| !e.to_string().contains("SECRETSIG")));
    }

    #[tokio::test]
    async fn silent_server_gives_a_timeout_error() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let port = listener.local_addr().expect("addr").port();
        // Accept and hold the connection without ever answering.
        let holder = tokio::spawn(async move {
            let held = listener.accept().await;
            tokio::time::sleep(Duration::from_secs(30)).await;
            drop(held);
        });
        let transport = ReqwestTransport::new(Duration::from_millis(300)).expect("client");
        let req = HttpRequest::parse("GET", format!("http://127.0.0.1:{port}/q?sig=SECRETSIG"))
            .expect("valid request");
        let err = transport.send(req).await.expect_err("no answer");
        assert!(matches!(err, Error::Timeout(_)), "{err:?}");
        assert!(!err.to_string().contains("SECRETSIG"), "{err}");
        holder.abort();
    }

    /// Serves one HTTP answer with `body_len` bytes of body on a local port (chunked when
    /// `chunked`, so no Content-Length tells the size up front).
    async fn serve_body(body_len: usize, chunked: bool) -> u16 {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let port = listener.local_addr().expect("addr").port();
        tokio::spawn(async move {
            let Ok((mut stream, _)) = listener.accept().await else {
                return;
            };
            let mut request = [0u8; 4096];
            let _ = stream.read(&mut request).await;
            let body = vec![b'x'; body_len];
            let head = if chunked {
                "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n".to_string()
            } else {
                format!("HTTP/1.1 200 OK\r\ncontent-length: {body_len}\r\n\r\n")
            };
            let _ = stream.write_all(head.as_bytes()).await;
            if chunked {
                for part in body.chunks(1000) {
                    let _ = stream
                        .write_all(format!("{:x}\r\n", part.len()).as_bytes())
                        .await;
                    let _ = stream.write_all(part).await;
                    let _ = stream.write_all(b"\r\n").await;
                }
                let _ = stream.write_all(b"0\r\n\r\n").await;
            } else {
                let _ = stream.write_all(&body).await;
            }
        });
        port
    }

    #[tokio::test]
    async fn response_bodies_over_the_cap_are_refused_with_or_without_content_length() {
        for chunked in [false, true] {
            let port = serve_body(5000, chunked).await;
            let t = ReqwestTransport::new(Duration::from_secs(5))
                .expect("client")
                .with_max_response_bytes(4096);
            let err = t
                .send(
                    HttpRequest::parse("GET", format!("http://127.0.0.1:{port}/"))
                        .expect("valid request"),
                )
                .await
                .expect_err("over the cap");
            assert!(matches!(err, Error::Unexpected(_)), "{err:?}");
            assert_eq!(err.code(), Some(RESPONSE_TOO_LARGE_CODE));
        }
        for chunked in [false, true] {
            let port = serve_body(4096, chunked).await;
            let t = ReqwestTransport::new(Duration::from_secs(5))
                .expect("client")
                .with_max_response_bytes(4096);
            let resp = t
                .send(
                    HttpRequest::parse("GET", format!("http://127.0.0.1:{port}/"))
                        .expect("valid request"),
                )
                .await
                .expect("at the cap is fine");
            assert_eq!(resp.body.len(), 4096);
        }
    }

    #[tokio::test]
    async fn redirects_are_returned_not_followed() {
        use std::sync::Arc;
        use std::sync::atomic::{AtomicUsize, Ordering};
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        // The redirect target counts the connections it gets: there must be none.
        let target = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let target_port = target.local_addr().expect("addr").port();
        let hits = Arc::new(AtomicUsize::new(0));
        let counter = hits.clone();
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = target.accept().await {
                counter.fetch_add(1, Ordering::SeqCst);
                let mut request = [0u8; 4096];
                let _ = stream.read(&mut request).await;
                let _ = stream
                    .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")
                    .await;
            }
        });
        let origin = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let origin_port = origin.local_addr().expect("addr").port();
        tokio::spawn(async move {
            let Ok((mut stream, _)) = origin.accept().await else {
                return;
            };
            let mut request = [0u8; 4096];
            let _ = stream.read(&mut request).await;
            let answer = format!(
                "HTTP/1.1 307 Temporary Redirect\r\nlocation: http://localhost:{target_port}/elsewhere?sig=SECRET\r\ncontent-length: 0\r\n\r\n"
            );
            let _ = stream.write_all(answer.as_bytes()).await;
        });
        let t = ReqwestTransport::new(Duration::from_secs(5)).expect("client");
        let mut request = HttpRequest::parse("PUT", format!("http://127.0.0.1:{origin_port}/q"))
            .expect("valid request");
        request.set_header("authorization", "SharedKey a:signed-for-this-host");
        let resp = t.send(request).await.expect("an answer");
        assert_eq!(resp.status, 307);
        assert_eq!(hits.load(Ordering::SeqCst), 0, "the redirect was followed");
    }

    /// Serves `count` requests on a local port, sending each request's header lines
    /// (lower-case name, value) down the channel.
    async fn capture_headers(
        count: usize,
    ) -> (
        u16,
        tokio::sync::mpsc::UnboundedReceiver<Vec<(String, String)>>,
    ) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(async move {
            for _ in 0..count {
                let Ok((mut stream, _)) = listener.accept().await else {
                    return;
                };
                let mut seen = Vec::new();
                let mut buf = [0u8; 1024];
                while !seen.windows(4).any(|w| w == b"\r\n\r\n") {
                    match stream.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => seen.extend_from_slice(&buf[..n]),
                    }
                }
                let text = String::from_utf8_lossy(&seen).to_string();
                let head = text.split("\r\n\r\n").next().unwrap_or_default();
                let headers = head
                    .lines()
                    .skip(1)
                    .filter_map(|line| line.split_once(':'))
                    .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
                    .collect();
                let _ = tx.send(headers);
                let _ = stream
                    .write_all(b"HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-length: 0\r\n\r\n")
                    .await;
            }
        });
        (port, rx)
    }

    /// A writer into a shared buffer, to read what a recorder wrote.
    #[derive(Clone, Default)]
    struct SharedBuffer(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

    impl std::io::Write for SharedBuffer {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.lock().map_or(Ok(0), |mut b| {
                b.extend_from_slice(bytes);
                Ok(bytes.len())
            })
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[tokio::test]
    async fn the_trace_records_every_header_actually_sent() {
        use crate::wire::record::{Recorder, read_recording};
        use crate::wire::redact::Redactor;
        let cases: [(&str, &[u8]); 5] = [
            ("GET", b""),
            ("DELETE", b""),
            ("POST", b""),
            ("PUT", b""),
            ("PUT", b"<QueueMessage/>"),
        ];
        let (port, mut captured) = capture_headers(cases.len()).await;
        let transport =
            std::sync::Arc::new(ReqwestTransport::new(Duration::from_secs(5)).expect("client"));
        let buffer = SharedBuffer::default();
        let recorder = Recorder::to_writer(transport, buffer.clone(), Redactor::new());
        for (method, body) in cases {
            let mut request = HttpRequest::parse(method, format!("http://127.0.0.1:{port}/q"))
                .expect("valid request");
            request.set_header("x-ms-version", "2021-12-02");
            request.set_body(body);
            recorder.send(request).await.expect("answered");
            let mut sent = captured.recv().await.expect("captured");
            let text = buffer
                .0
                .lock()
                .map(|b| String::from_utf8_lossy(&b).to_string())
                .unwrap_or_default();
            let recorded = read_recording(&text).expect("valid trace");
            let mut traced: Vec<(String, String)> = recorded
                .last()
                .expect("one exchange per request")
                .request_headers
                .iter()
                .map(|(n, v)| (n.to_ascii_lowercase(), v.clone()))
                .collect();
            traced.sort();
            sent.sort();
            assert_eq!(traced, sent, "{method} with {} body bytes", body.len());
            if method != "GET" && method != "DELETE" {
                assert!(
                    sent.contains(&("content-length".to_string(), body.len().to_string())),
                    "{method} sends its length, also when empty"
                );
            }
        }
    }

    #[test]
    fn invalid_header_value_is_reported_by_name_only() {
        let t = ReqwestTransport::new(Duration::from_secs(1)).expect("client");
        let mut req = HttpRequest::parse("GET", "http://127.0.0.1:1/").expect("valid request");
        req.set_header("authorization", "SharedKey a:b\nSECRET");
        let err = t
            .build(req)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(err.contains("authorization"), "{err}");
        assert!(!err.contains("SECRET"), "{err}");
    }
}
