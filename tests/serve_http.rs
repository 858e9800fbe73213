//! `flowcraft-azure serve --memory`: the HTTP management API through the real binary — runs
//! start, settle and are listed; the resume webhook routes an awaiting run; cancel is sticky;
//! bad input is a 4xx JSON error (never a 500); the bearer token and the loopback rule guard
//! every POST; request bodies are capped.

mod serve_common;

use serde_json::{Value, json};
use serve_common::{Server, get, post, settled, start_run};

#[tokio::test]
async fn a_fan_out_run_completes_and_is_listed_with_every_node_done() {
    let server = Server::start("127.0.0.1:0", &[]);
    let http = reqwest::Client::new();
    let (status, health) = get(&http, &server.url("/healthz")).await;
    assert_eq!((status, health), (200, json!({"ok": true})));

    let run_id = start_run(&http, &server, "fan-out-fan-in").await;
    let report = settled(&http, &server, &run_id).await;
    assert_eq!(report["status"], "completed", "{report}");
    assert_eq!(report["nodesDone"], 5);
    // The start time, recorded when the run was created, survives every status rewrite.
    let started_at = report["startedAt"].as_str().expect("startedAt").to_string();
    assert!(
        chrono::DateTime::parse_from_rfc3339(&started_at).is_ok(),
        "{report}"
    );
    let states: Vec<(&str, &str)> = report["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| (n["id"].as_str().unwrap(), n["state"].as_str().unwrap()))
        .collect();
    assert_eq!(
        states,
        [
            ("seed", "done"),
            ("left", "done"),
            ("middle", "done"),
            ("right", "done"),
            ("total", "done")
        ]
    );

    let (status, listed) = get(&http, &server.url("/runs?status=completed")).await;
    assert_eq!(status, 200);
    assert!(
        listed
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["runId"] == run_id.as_str()
                && r["blueprintId"] == "fan-out-fan-in"
                && r["startedAt"] == started_at.as_str()),
        "{listed}"
    );
    let (_, awaiting) = get(&http, &server.url("/runs?status=awaiting")).await;
    assert_eq!(awaiting, json!([]));
}

#[tokio::test]
async fn the_resume_webhook_routes_an_awaiting_run_to_completion() {
    let server = Server::start("127.0.0.1:0", &[]);
    let http = reqwest::Client::new();
    let run_id = start_run(&http, &server, "human-approval").await;
    let report = settled(&http, &server, &run_id).await;
    assert_eq!(report["status"], "awaiting", "{report}");
    assert_eq!(report["awaiting"][0]["node"], "review");
    assert_eq!(report["awaiting"][0]["waitsFor"], "external_event");

    let page = http
        .get(server.url(&format!("/?run={run_id}")))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        page.contains("<form class=\"resume\" data-node=\"review\""),
        "{page}"
    );

    let resume = server.url(&format!("/runs/{run_id}/resume"));
    let body = json!({"node": "review", "action": "approve", "output": {"by": "ada"}});
    let (status, answer) = post(&http, &resume, body.to_string(), None).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["ready"], json!(["approved"]));
    let report = settled(&http, &server, &run_id).await;
    assert_eq!(report["status"], "completed", "{report}");
    let state = |id: &str| {
        report["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|n| n["id"] == id)
            .map(|n| n["state"].clone())
            .unwrap()
    };
    assert_eq!(state("approved"), "done");
    assert_eq!(state("rejected"), "not-reached");

    // A retry of the same resume (a webhook whose answer was lost) answers as the first call
    // did; a different resume of the finished run is a conflict, not a server error.
    let (status, again) = post(&http, &resume, body.to_string(), None).await;
    assert_eq!(status, 200, "{again}");
    assert_eq!(again["ready"], json!(["approved"]));
    let other = json!({"action": "reject"});
    let (status, answer) = post(&http, &resume, other.to_string(), None).await;
    assert_eq!(status, 409, "{answer}");
    assert!(answer["error"].is_string(), "{answer}");
}

#[tokio::test]
async fn cancel_is_sticky_and_says_whether_it_changed_anything() {
    let server = Server::start("127.0.0.1:0", &[]);
    let http = reqwest::Client::new();
    let run_id = start_run(&http, &server, "human-approval").await;
    assert_eq!(settled(&http, &server, &run_id).await["status"], "awaiting");
    let cancel = server.url(&format!("/runs/{run_id}/cancel"));
    let (status, answer) = post(&http, &cancel, r#"{"reason":"duplicate"}"#, None).await;
    assert_eq!(
        (status, &answer["cancelled"]),
        (200, &json!(true)),
        "{answer}"
    );
    let (status, answer) = post(&http, &cancel, "", None).await;
    assert_eq!(
        (status, &answer["cancelled"]),
        (200, &json!(false)),
        "{answer}"
    );
    let (_, report) = get(&http, &server.url(&format!("/runs/{run_id}"))).await;
    assert_eq!(report["status"], "cancelled");
}

#[tokio::test]
async fn bad_input_gets_a_4xx_json_error() {
    let server = Server::start("127.0.0.1:0", &[]);
    let http = reqwest::Client::new();
    let runs = server.url("/runs");
    let cases: Vec<(&str, String, u16)> = vec![
        ("malformed JSON", "{bad".into(), 400),
        ("not an object", "[1]".into(), 400),
        ("missing blueprintId", r#"{"input":{}}"#.into(), 400),
        (
            "unknown field",
            r#"{"blueprintId":"hello","extra":1}"#.into(),
            400,
        ),
        ("unknown blueprint", r#"{"blueprintId":"nope"}"#.into(), 400),
        (
            "input not an object",
            r#"{"blueprintId":"hello","input":3}"#.into(),
            400,
        ),
    ];
    for (what, body, expected) in cases {
        let (status, answer) = post(&http, &runs, body, None).await;
        assert_eq!(status, expected, "{what}: {answer}");
        assert!(answer["error"].is_string(), "{what}: {answer}");
    }
    let (status, answer) = post(
        &http,
        &server.url("/runs/no-such-run/resume"),
        r#"{"action":"go"}"#,
        None,
    )
    .await;
    assert_eq!(status, 404, "{answer}");
    let (status, answer) = post(
        &http,
        &server.url("/runs/no-such-run/resume"),
        r#"{"node":"x"}"#,
        None,
    )
    .await;
    assert_eq!(status, 400, "missing action: {answer}");
    let (status, answer) = get(&http, &server.url("/runs/no-such-run")).await;
    assert_eq!(status, 404, "{answer}");
    let (status, answer) = get(&http, &server.url("/runs?status=sideways")).await;
    assert_eq!(status, 400, "{answer}");
    let (status, answer) = get(&http, &server.url("/runs?limit=0")).await;
    assert_eq!(status, 400, "{answer}");
    let (status, answer) = get(&http, &server.url("/nothing/here")).await;
    assert_eq!(status, 404, "{answer}");
    let resp = http.delete(server.url("/runs")).send().await.unwrap();
    assert_eq!(resp.status(), 405);
    let resp = http
        .get(server.url("/?run=no-such-run"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 404);
}

#[tokio::test]
async fn request_bodies_over_one_mebibyte_are_refused_with_413() {
    let server = Server::start("127.0.0.1:0", &[]);
    let http = reqwest::Client::new();
    let filler = "x".repeat(1024 * 1024);
    let body = json!({"blueprintId": "hello", "input": {"big": filler}}).to_string();
    let (status, answer) = post(&http, &server.url("/runs"), body, None).await;
    assert_eq!(status, 413, "{answer}");
    // Just under the cap is read (and then judged on its content).
    let body = json!({"blueprintId": "hello", "input": {"big": "x".repeat(1000)}}).to_string();
    let (status, answer) = post(&http, &server.url("/runs"), body, None).await;
    assert_eq!(status, 201, "{answer}");
}

#[tokio::test]
async fn with_a_token_every_post_needs_the_bearer_secret() {
    let server = Server::start("127.0.0.1:0", &[("FLOWCRAFT_API_TOKEN", "s3cret-token")]);
    let http = reqwest::Client::new();
    let body = r#"{"blueprintId":"human-approval"}"#;
    for token in [None, Some("wrong"), Some("s3cret-token-but-longer")] {
        let (status, answer) = post(&http, &server.url("/runs"), body, token).await;
        assert_eq!(status, 401, "{token:?}: {answer}");
        assert!(!answer.to_string().contains("s3cret"), "{answer}");
    }
    let (status, answer) = post(&http, &server.url("/runs"), body, Some("s3cret-token")).await;
    assert_eq!(status, 201, "{answer}");
    let run_id = answer["runId"].as_str().unwrap().to_string();
    assert_eq!(settled(&http, &server, &run_id).await["status"], "awaiting");
    let resume = server.url(&format!("/runs/{run_id}/resume"));
    let (status, _) = post(&http, &resume, r#"{"action":"approve"}"#, None).await;
    assert_eq!(status, 401);
    assert_eq!(settled(&http, &server, &run_id).await["status"], "awaiting");
    let (status, answer) = post(
        &http,
        &resume,
        r#"{"action":"approve"}"#,
        Some("s3cret-token"),
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    // Reads stay open.
    let (status, _) = get(&http, &server.url(&format!("/runs/{run_id}"))).await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn without_a_token_posts_are_refused_on_a_non_loopback_address() {
    let server = Server::start("0.0.0.0:0", &[]);
    let http = reqwest::Client::new();
    let (status, answer) = post(
        &http,
        &server.url("/runs"),
        r#"{"blueprintId":"hello"}"#,
        None,
    )
    .await;
    assert_eq!(status, 403, "{answer}");
    assert!(
        answer["error"]
            .as_str()
            .unwrap()
            .contains("FLOWCRAFT_API_TOKEN")
    );
    let (status, _): (u16, Value) = get(&http, &server.url("/healthz")).await;
    assert_eq!(status, 200);
}
