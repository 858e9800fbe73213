//! Starts `flowcraft-azure serve` as a child process on a free loopback port and stops it
//! when dropped; helpers to wait for a run to settle over the HTTP API.
#![allow(dead_code)] // each test binary uses a different subset

use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// A running `serve` process.
pub struct Server {
    child: Child,
    /// `http://127.0.0.1:PORT`
    pub base: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Server {
    /// `serve --memory --blueprints fixtures/blueprints --listen LISTEN` with `env` set.
    pub fn start(listen: &str, env: &[(&str, &str)]) -> Server {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_flowcraft-azure"));
        cmd.args([
            "serve",
            "--memory",
            "--blueprints",
            concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures/blueprints"),
            "--listen",
            listen,
        ])
        .env_remove("FLOWCRAFT_API_TOKEN")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("start serve");
        let stdout = child.stdout.take().expect("stdout");
        let mut line = String::new();
        BufReader::new(stdout)
            .read_line(&mut line)
            .expect("read the listening line");
        let addr = line
            .trim()
            .strip_prefix("listening on http://")
            .unwrap_or_else(|| panic!("unexpected first line: {line:?}"))
            .to_string();
        // A wildcard listen address is reached through loopback.
        let port = addr.rsplit(':').next().unwrap_or_default().to_string();
        Server {
            child,
            base: format!("http://127.0.0.1:{port}"),
        }
    }

    /// `base` + `path`.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }
}

/// `GET url`: status and the body parsed as JSON (`Null` when it is not JSON).
pub async fn get(http: &reqwest::Client, url: &str) -> (u16, Value) {
    let resp = http.get(url).send().await.unwrap();
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap();
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

/// `POST url` with `body` (and a bearer `token`): status and the JSON answer.
pub async fn post(
    http: &reqwest::Client,
    url: &str,
    body: impl Into<reqwest::Body>,
    token: Option<&str>,
) -> (u16, Value) {
    let mut req = http
        .post(url)
        .header("content-type", "application/json")
        .body(body);
    if let Some(token) = token {
        req = req.bearer_auth(token);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap();
    let value = serde_json::from_str(&text)
        .unwrap_or_else(|_| panic!("answer {status} is not JSON: {text}"));
    (status, value)
}

/// Polls `GET /runs/{id}` until its status is not `running` (at most ~30 s) and returns it.
pub async fn settled(http: &reqwest::Client, server: &Server, run_id: &str) -> Value {
    for _ in 0..600 {
        let (_, report) = get(http, &server.url(&format!("/runs/{run_id}"))).await;
        if report["status"] != "running" {
            return report;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("run {run_id} is still running");
}

/// `POST /runs` for `blueprint`; returns the run id.
pub async fn start_run(http: &reqwest::Client, server: &Server, blueprint: &str) -> String {
    let body = serde_json::json!({"blueprintId": blueprint, "input": {}}).to_string();
    let (status, answer) = post(http, &server.url("/runs"), body, None).await;
    assert_eq!(status, 201, "{answer}");
    let run_id = answer["runId"].as_str().unwrap().to_string();
    assert_eq!(answer["statusUrl"], format!("/runs/{run_id}"));
    run_id
}
