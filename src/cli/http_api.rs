//! The HTTP management API behind `serve` (hyper, HTTP/1.1):
//!
//! | method and path | body | answer |
//! |---|---|---|
//! | `POST /runs` | `{"blueprintId", "input"?}` | 201 `{"runId", "statusUrl"}` |
//! | `GET /runs?status=S&limit=N` | | 200 `[{"runId","status","blueprintId","lastUpdated"}]` |
//! | `GET /runs/{id}` | | 200 the run report (as `status --json`), 404 |
//! | `POST /runs/{id}/resume` | `{"action", "node"?, "output"?}` | 200 `{"runId","ready"}` |
//! | `POST /runs/{id}/cancel` | `{"reason"?}` or nothing | 200 `{"runId","cancelled"}` |
//! | `GET /healthz` | | 200 `{"ok":true}` |
//! | `GET /` and `GET /?run=ID` | | the HTML run view |
//!
//! Every `POST` (the resume webhook included) needs `Authorization: Bearer <token>` when a
//! token is configured (`FLOWCRAFT_API_TOKEN`); without a token they are refused (403) unless
//! the server listens on a loopback address. Bad input is a 4xx with `{"error": "..."}`,
//! never a 500; a backend failure is 502. Request bodies are capped at [`MAX_BODY`].

use super::ops::{ALL_PHASES, Ops, parse_phase};
use super::web_page;
use crate::Error;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::{Body, Bytes};
use hyper::{Method, Request, Response, StatusCode};
use serde::Deserialize;
use serde_json::{Map, Value, json};

/// The largest request body accepted (1 MiB); larger ones get 413.
pub const MAX_BODY: usize = 1024 * 1024;

/// The API: the run operations and the access rule for `POST`s.
#[derive(Clone)]
pub struct Api {
    ops: Ops,
    token: Option<String>,
    loopback: bool,
}

impl std::fmt::Debug for Api {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Api")
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("loopback", &self.loopback)
            .finish()
    }
}

/// A response: status and body.
type Reply = Response<Full<Bytes>>;

fn reply(status: StatusCode, content_type: &str, body: impl Into<Bytes>) -> Reply {
    let mut resp = Response::new(Full::new(body.into()));
    *resp.status_mut() = status;
    if let Ok(value) = content_type.parse() {
        resp.headers_mut()
            .insert(hyper::header::CONTENT_TYPE, value);
    }
    resp
}

fn json_reply(status: StatusCode, value: &Value) -> Reply {
    reply(status, "application/json", value.to_string())
}

fn error_reply(status: StatusCode, message: impl std::fmt::Display) -> Reply {
    json_reply(status, &json!({ "error": message.to_string() }))
}

/// The HTTP status for an error of the run operations.
fn error_status(e: &Error) -> StatusCode {
    match e {
        Error::InvalidInput(_) => StatusCode::BAD_REQUEST,
        Error::NotFound(_) => StatusCode::NOT_FOUND,
        Error::Conflict(_) | Error::PreconditionFailed(_) => StatusCode::CONFLICT,
        Error::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
        Error::Throttled { .. } => StatusCode::SERVICE_UNAVAILABLE,
        _ => StatusCode::BAD_GATEWAY,
    }
}

/// Compares two secrets in time independent of where they differ.
fn same_secret(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct StartBody {
    blueprint_id: String,
    #[serde(default)]
    input: Option<Map<String, Value>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ResumeBody {
    action: String,
    #[serde(default)]
    node: Option<String>,
    #[serde(default)]
    output: Option<Value>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct CancelBody {
    #[serde(default)]
    reason: Option<String>,
}

/// The value of query parameter `name` (percent-decoded).
fn query_param(query: Option<&str>, name: &str) -> Option<String> {
    query?.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (k == name).then(|| percent_decode(v))
    })
}

fn percent_decode(text: &str) -> String {
    let hex = |b: u8| {
        char::from(b)
            .to_digit(16)
            .and_then(|d| u8::try_from(d).ok())
    };
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let decoded = match bytes[i] {
            b'%' => bytes
                .get(i + 1)
                .and_then(|&h| hex(h))
                .zip(bytes.get(i + 2).and_then(|&l| hex(l))),
            _ => None,
        };
        match (decoded, bytes[i]) {
            (Some((h, l)), _) => {
                out.push(h * 16 + l);
                i += 3;
                continue;
            }
            (None, b'+') => out.push(b' '),
            (None, b) => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

impl Api {
    /// The API over `ops`. `token`: the bearer secret for `POST`s; `loopback`: whether the
    /// server listens only on a loopback address (then `POST`s without a token are allowed).
    pub fn new(ops: Ops, token: Option<String>, loopback: bool) -> Self {
        Api {
            ops,
            token: token.filter(|t| !t.is_empty()),
            loopback,
        }
    }

    /// Answers one request (never fails: every problem is a status code).
    pub async fn handle<B>(&self, req: Request<B>) -> Reply
    where
        B: Body,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let method = req.method().clone();
        let path = req.uri().path().to_string();
        let query = req.uri().query().map(str::to_string);
        let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
        let is_post = method == Method::POST;
        if is_post && let Some(denied) = self.denial(&req) {
            return denied;
        }
        let body = if is_post {
            match Limited::new(req.into_body(), MAX_BODY).collect().await {
                Ok(collected) => collected.to_bytes(),
                Err(e) => {
                    return if e.is::<http_body_util::LengthLimitError>() {
                        error_reply(
                            StatusCode::PAYLOAD_TOO_LARGE,
                            format!("request body is larger than {MAX_BODY} bytes"),
                        )
                    } else {
                        error_reply(
                            StatusCode::BAD_REQUEST,
                            format!("cannot read the body: {e}"),
                        )
                    };
                }
            }
        } else {
            Bytes::new()
        };
        match (method, segments.as_slice()) {
            (Method::GET, [""]) => self.page(query.as_deref()).await,
            (Method::GET, ["healthz"]) => json_reply(StatusCode::OK, &json!({"ok": true})),
            (Method::GET, ["runs"]) => self.list(query.as_deref()).await,
            (Method::POST, ["runs"]) => self.start(&body).await,
            (Method::GET, ["runs", id]) => self.get(&percent_decode(id)).await,
            (Method::POST, ["runs", id, "resume"]) => self.resume(&percent_decode(id), &body).await,
            (Method::POST, ["runs", id, "cancel"]) => self.cancel(&percent_decode(id), &body).await,
            (_, [""] | ["healthz"] | ["runs"] | ["runs", _] | ["runs", _, "resume" | "cancel"]) => {
                error_reply(StatusCode::METHOD_NOT_ALLOWED, "method not allowed here")
            }
            _ => error_reply(StatusCode::NOT_FOUND, format!("no such endpoint: {path}")),
        }
    }

    /// The refusal of a `POST`, or `None` when it may go ahead.
    fn denial<B>(&self, req: &Request<B>) -> Option<Reply> {
        match &self.token {
            Some(token) => {
                let given = req
                    .headers()
                    .get(hyper::header::AUTHORIZATION)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.strip_prefix("Bearer "))
                    .unwrap_or("");
                if same_secret(given.trim().as_bytes(), token.as_bytes()) {
                    None
                } else {
                    Some(error_reply(
                        StatusCode::UNAUTHORIZED,
                        "missing or wrong bearer token (Authorization: Bearer <FLOWCRAFT_API_TOKEN>)",
                    ))
                }
            }
            None if self.loopback => None,
            None => Some(error_reply(
                StatusCode::FORBIDDEN,
                "this server listens beyond loopback and has no FLOWCRAFT_API_TOKEN; \
                 set one to allow POST requests",
            )),
        }
    }

    async fn page(&self, query: Option<&str>) -> Reply {
        let html = match query_param(query, "run").filter(|r| !r.is_empty()) {
            Some(run_id) => match self.ops.report(&run_id).await {
                Ok(Some(report)) => web_page::run_view(&report),
                Ok(None) => {
                    return reply(
                        StatusCode::NOT_FOUND,
                        "text/html; charset=utf-8",
                        web_page::not_found(&run_id),
                    );
                }
                Err(e) => return error_reply(error_status(&e), e),
            },
            None => match self.ops.list(&ALL_PHASES, None, None, 200).await {
                Ok(rows) => web_page::index(&rows),
                Err(e) => return error_reply(error_status(&e), e),
            },
        };
        reply(StatusCode::OK, "text/html; charset=utf-8", html)
    }

    async fn list(&self, query: Option<&str>) -> Reply {
        let phases = match query_param(query, "status").filter(|s| !s.is_empty()) {
            Some(s) => match parse_phase(&s) {
                Ok(p) => vec![p],
                Err(message) => return error_reply(StatusCode::BAD_REQUEST, message),
            },
            None => ALL_PHASES.to_vec(),
        };
        let limit = match query_param(query, "limit") {
            Some(n) => match n.parse::<usize>() {
                Ok(n) if n > 0 => n,
                _ => {
                    return error_reply(StatusCode::BAD_REQUEST, "limit must be a positive number");
                }
            },
            None => 100,
        };
        match self.ops.list(&phases, None, None, limit).await {
            Ok(rows) => json_reply(StatusCode::OK, &json!(rows)),
            Err(e) => error_reply(error_status(&e), e),
        }
    }

    async fn start(&self, body: &[u8]) -> Reply {
        let start: StartBody = match serde_json::from_slice(body) {
            Ok(b) => b,
            Err(e) => {
                return error_reply(
                    StatusCode::BAD_REQUEST,
                    format!("body must be {{\"blueprintId\": string, \"input\"?: object}}: {e}"),
                );
            }
        };
        if self.ops.blueprints().get(&start.blueprint_id).is_none() {
            return error_reply(
                StatusCode::BAD_REQUEST,
                format!("unknown blueprint '{}'", start.blueprint_id),
            );
        }
        match self
            .ops
            .start(&start.blueprint_id, start.input.unwrap_or_default())
            .await
        {
            Ok(run_id) => json_reply(
                StatusCode::CREATED,
                &json!({"runId": run_id, "statusUrl": format!("/runs/{run_id}")}),
            ),
            Err(e) => error_reply(error_status(&e), e),
        }
    }

    async fn get(&self, run_id: &str) -> Reply {
        match self.ops.report(run_id).await {
            Ok(Some(report)) => json_reply(StatusCode::OK, &json!(report)),
            Ok(None) => error_reply(StatusCode::NOT_FOUND, format!("no run with id '{run_id}'")),
            Err(e) => error_reply(error_status(&e), e),
        }
    }

    async fn resume(&self, run_id: &str, body: &[u8]) -> Reply {
        let resume: ResumeBody = match serde_json::from_slice(body) {
            Ok(b) => b,
            Err(e) => {
                return error_reply(
                    StatusCode::BAD_REQUEST,
                    format!(
                        "body must be {{\"action\": string, \"node\"?: string, \"output\"?: any}}: {e}"
                    ),
                );
            }
        };
        match self.ops.report(run_id).await {
            Ok(Some(_)) => {}
            Ok(None) => {
                return error_reply(StatusCode::NOT_FOUND, format!("no run with id '{run_id}'"));
            }
            Err(e) => return error_reply(error_status(&e), e),
        }
        match self
            .ops
            .resume(
                run_id,
                resume.node.as_deref(),
                Some(resume.action),
                resume.output,
            )
            .await
        {
            Ok(work) => {
                let ready: Vec<&str> = work.iter().map(|w| w.node.as_str()).collect();
                json_reply(StatusCode::OK, &json!({"runId": run_id, "ready": ready}))
            }
            Err(Error::InvalidInput(info)) => error_reply(StatusCode::CONFLICT, &info.message),
            Err(e) => error_reply(error_status(&e), e),
        }
    }

    async fn cancel(&self, run_id: &str, body: &[u8]) -> Reply {
        let cancel: CancelBody = if body.iter().all(u8::is_ascii_whitespace) {
            CancelBody::default()
        } else {
            match serde_json::from_slice(body) {
                Ok(b) => b,
                Err(e) => {
                    return error_reply(
                        StatusCode::BAD_REQUEST,
                        format!("body must be empty or {{\"reason\"?: string}}: {e}"),
                    );
                }
            }
        };
        match self.ops.cancel(run_id, cancel.reason.as_deref()).await {
            Ok(cancelled) => json_reply(
                StatusCode::OK,
                &json!({"runId": run_id, "cancelled": cancelled}),
            ),
            Err(e) => error_reply(error_status(&e), e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_params_are_decoded() {
        assert_eq!(
            query_param(Some("a=1&run=x%2Fy+z"), "run").as_deref(),
            Some("x/y z")
        );
        assert_eq!(query_param(Some("a=1"), "run"), None);
        assert_eq!(percent_decode("%zz%4"), "%zz%4");
    }

    #[test]
    fn secrets_compare_whole() {
        assert!(same_secret(b"abc", b"abc"));
        assert!(!same_secret(b"abc", b"abd"));
        assert!(!same_secret(b"abc", b"ab"));
    }
}
