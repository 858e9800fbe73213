//! The operator's commands through the real binary against the local emulators
//! (`FLOWCRAFT_EMULATORS=1`): `setup` (twice, `--check`, a wrong partition key), `submit`,
//! `queue stats/peek`, `status` (text and JSON), `runs`, `resume`, `cancel`, `reconcile
//! --dry-run`, `poison list/requeue/purge`, `--trace` redaction, and the exit codes.

mod support;

use serde_json::Value;
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

const BLUEPRINTS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures/blueprints");

/// The binary with the emulator environment and private queue/database names.
struct Cli {
    queue: String,
    database: String,
}

impl Cli {
    fn new(prefix: &str) -> Cli {
        support::require_reachable("Azurite (queue)", &support::queue_endpoint());
        support::require_reachable("the Cosmos emulator", &support::cosmos_endpoint());
        Cli {
            queue: support::unique(prefix),
            database: support::unique(prefix),
        }
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_flowcraft-azure"));
        cmd.args(args)
            .env("FLOWCRAFT_QUEUE", &self.queue)
            .env("FLOWCRAFT_DATABASE", &self.database)
            .env("FLOWCRAFT_POLL_MAX_MS", "200")
            .env_remove("RUST_LOG");
        cmd
    }

    fn run(&self, args: &[&str]) -> Output {
        self.command(args).output().expect("run the binary")
    }

    /// Runs and expects `code`; returns stdout.
    fn expect(&self, code: i32, args: &[&str]) -> String {
        let out = self.run(args);
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        assert_eq!(
            out.status.code(),
            Some(code),
            "{args:?}\nstdout: {stdout}\nstderr: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        stdout
    }

    fn json(&self, code: i32, args: &[&str]) -> Value {
        let stdout = self.expect(code, args);
        serde_json::from_str(stdout.trim()).unwrap_or_else(|e| panic!("{args:?}: {e}: {stdout}"))
    }

    fn worker(&self) -> KillOnDrop {
        KillOnDrop(
            self.command(&["worker", "--blueprints", BLUEPRINTS])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("start a worker"),
        )
    }

    /// Polls `status --json` until the run is not running.
    fn settled(&self, run_id: &str) -> Value {
        for _ in 0..300 {
            let out = self.run(&["status", run_id, "--json", "--blueprints", BLUEPRINTS]);
            let report: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
            if report["status"] != "running" && !report.is_null() {
                return report;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("run {run_id} did not settle");
    }
}

struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn setup_is_safe_twice_and_check_finds_what_is_missing_or_wrong() {
    if !support::emulators_enabled("setup_is_safe_twice") {
        return;
    }
    let cli = Cli::new("opsset");
    let report = cli.json(1, &["setup", "--check", "--json"]);
    assert_eq!(report["ok"], false);
    assert!(
        report["problems"].to_string().contains("is missing"),
        "{report}"
    );

    let first = cli.json(0, &["setup", "--ttl-days", "7", "--json"]);
    let changes = first["changes"].to_string();
    assert!(changes.contains("created queue"), "{changes}");
    assert!(changes.contains("-poison"), "{changes}");
    assert!(changes.contains("partition key /runId"), "{changes}");
    assert!(changes.contains("default TTL"), "{changes}");
    let second = cli.json(0, &["setup", "--ttl-days", "7", "--json"]);
    assert_eq!(second["changes"], serde_json::json!([]), "{second}");

    let report = cli.json(0, &["setup", "--check", "--json"]);
    assert_eq!(report["ok"], true, "{report}");
    assert!(
        report["checked"]
            .to_string()
            .contains("default TTL 604800 s"),
        "{report}"
    );

    // A status container partitioned by the wrong key is reported, and nothing changes.
    let wrong = Cli::new("opswrong");
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let db = support::cosmos_client().database(&wrong.database).unwrap();
        db.create_if_not_exists().await.unwrap();
        db.container("statuses")
            .unwrap()
            .create_if_not_exists("/id")
            .await
            .unwrap();
    });
    let report = wrong.json(1, &["setup", "--check", "--json"]);
    let problems = report["problems"].to_string();
    assert!(
        problems.contains("statuses`: partition key is [\\\"/id\\\"]"),
        "{problems}"
    );
    assert!(problems.contains("contexts` is missing"), "{problems}");
    let again = wrong.json(1, &["setup", "--check", "--json"]);
    assert_eq!(again["problems"], report["problems"]);
    rt.block_on(async {
        let db = support::cosmos_client().database(&wrong.database).unwrap();
        let _ = db.delete().await;
    });
}

#[test]
fn runs_are_managed_from_submit_to_resume_and_cancel() {
    if !support::emulators_enabled("runs_are_managed") {
        return;
    }
    let cli = Cli::new("opsrun");
    cli.expect(0, &["setup"]);
    let run_id = cli
        .expect(0, &["submit", "human-approval", "--blueprints", BLUEPRINTS])
        .trim()
        .to_string();

    // Before any worker runs: the start job waits in the queue.
    let stats = cli.json(0, &["queue", "stats", "--json"]);
    assert!(
        stats["queue"]["approximateMessages"].as_u64().unwrap() >= 1,
        "{stats}"
    );
    assert_eq!(stats["poison"]["approximateMessages"], 0);
    let peeked = cli.json(0, &["queue", "peek", "-n", "5", "--json"]);
    assert_eq!(peeked[0]["job"]["runId"], run_id.as_str(), "{peeked}");
    assert_eq!(peeked[0]["job"]["nodeId"], "request");
    cli.expect(2, &["queue", "peek", "-n", "33"]);
    let report = cli.json(
        0,
        &["status", &run_id, "--json", "--blueprints", BLUEPRINTS],
    );
    assert_eq!(report["status"], "running");
    assert_eq!(report["nodesPending"], 1);

    // `status --watch` follows the run until it stops running (here: it awaits review).
    let mut watch = cli
        .command(&["status", &run_id, "--watch", "--blueprints", BLUEPRINTS])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start status --watch");
    let mut lines = std::io::BufRead::lines(std::io::BufReader::new(watch.stdout.take().unwrap()));
    let mut watched_text = String::new();
    // The first report (running) is out before any worker starts.
    for line in lines.by_ref() {
        let line = line.unwrap();
        watched_text.push_str(&line);
        watched_text.push('\n');
        if line.starts_with("awaiting") || line.starts_with("  not-reached  notify") {
            break;
        }
    }
    let _worker = cli.worker();
    for line in lines {
        watched_text.push_str(&line.unwrap());
        watched_text.push('\n');
    }
    let status = watch.wait().expect("status --watch exits");
    assert_eq!(status.code(), Some(0), "{watched_text}");
    assert!(watched_text.starts_with("run "), "{watched_text}");
    assert!(
        watched_text.contains("status     running"),
        "{watched_text}"
    );
    assert!(watched_text.contains("\n---\n"), "{watched_text}");
    assert!(
        watched_text.contains("status     awaiting"),
        "{watched_text}"
    );
    let report = cli.settled(&run_id);
    assert_eq!(report["status"], "awaiting", "{report}");
    assert_eq!(report["awaiting"][0]["node"], "review");
    let text = cli.expect(0, &["status", &run_id, "--blueprints", BLUEPRINTS]);
    assert!(text.contains("status     awaiting"), "{text}");
    assert!(
        text.contains("awaiting   review waits for a resume (external event)"),
        "{text}"
    );
    assert!(text.contains("  done         request (set)"), "{text}");

    // The start time survives the worker's status rewrites (running -> awaiting).
    let started_at = report["startedAt"].as_str().expect("startedAt").to_string();
    assert!(
        chrono::DateTime::parse_from_rfc3339(&started_at).is_ok(),
        "{report}"
    );
    assert!(text.contains(&format!("started    {started_at}")), "{text}");

    let listed = cli.json(
        0,
        &["runs", "--status", "awaiting", "--since", "1h", "--json"],
    );
    assert!(listed.to_string().contains(&run_id), "{listed}");
    assert_eq!(listed[0]["startedAt"], started_at.as_str(), "{listed}");
    let table = cli.expect(0, &["runs", "--limit", "5"]);
    assert!(table.starts_with("RUN "), "{table}");
    assert!(table.lines().next().unwrap().contains("STARTED"), "{table}");
    assert!(table.contains(&run_id), "{table}");
    assert!(table.contains(&started_at), "{table}");
    cli.expect(2, &["runs", "--status", "sideways"]);
    cli.expect(2, &["runs", "--since", "soon"]);

    // Resume with bad JSON and without blueprints are input errors; then for real.
    cli.expect(
        2,
        &[
            "resume",
            &run_id,
            "--action",
            "approve",
            "--output",
            "{",
            "--blueprints",
            BLUEPRINTS,
        ],
    );
    cli.expect(2, &["resume", &run_id, "--action", "approve"]);
    let resumed = cli.json(
        0,
        &[
            "resume",
            &run_id,
            "--action",
            "approve",
            "--node",
            "review",
            "--output",
            "{\"by\":\"ada\"}",
            "--json",
            "--blueprints",
            BLUEPRINTS,
        ],
    );
    assert_eq!(resumed["ready"], serde_json::json!(["approved"]));
    let report = cli.settled(&run_id);
    assert_eq!(report["status"], "completed", "{report}");
    assert_eq!(report["startedAt"], started_at.as_str(), "{report}");
    cli.expect(
        2,
        &[
            "resume",
            &run_id,
            "--action",
            "approve",
            "--blueprints",
            BLUEPRINTS,
        ],
    );
    let said = cli.expect(0, &["cancel", &run_id]);
    assert!(said.contains("already finished"), "{said}");

    // Cancel an awaiting run: sticky, and `status` then exits 1.
    let second = cli
        .expect(0, &["submit", "human-approval", "--blueprints", BLUEPRINTS])
        .trim()
        .to_string();
    assert_eq!(cli.settled(&second)["status"], "awaiting");
    let cancelled = cli.json(0, &["cancel", &second, "--reason", "duplicate", "--json"]);
    assert_eq!(cancelled["cancelled"], true);
    let text = cli.expect(1, &["status", &second]);
    assert!(text.contains("status     cancelled"), "{text}");
    cli.expect(2, &["status", "no-such-run"]);

    // Nothing is stalled: every run is finished or was just touched.
    let stalled = cli.json(
        0,
        &["reconcile", "--stalled-after", "5m", "--dry-run", "--json"],
    );
    assert_eq!(stalled, serde_json::json!([]));
    cli.expect(2, &["reconcile", "--stalled-after", "soon"]);
}

#[test]
fn poisoned_jobs_are_listed_requeued_and_purged() {
    if !support::emulators_enabled("poisoned_jobs") {
        return;
    }
    let cli = Cli::new("opspoison");
    cli.expect(0, &["setup"]);
    let poison = support::queue_client(&format!("{}-poison", cli.queue));
    let job = |node: &str| {
        serde_json::json!({
            "reason": "boom", "id": "orig", "dequeueCount": 5, "at": "2026-01-01T00:00:00Z",
            "queue": cli.queue,
            "text": format!("{{\"runId\":\"r1\",\"blueprintId\":\"hello\",\"nodeId\":\"{node}\"}}"),
        })
        .to_string()
    };
    let rt = tokio::runtime::Runtime::new().unwrap();
    for node in ["a", "b", "c"] {
        rt.block_on(support::put(&poison, &job(node)));
    }
    let listed = cli.json(0, &["poison", "list", "--json"]);
    assert_eq!(listed.as_array().unwrap().len(), 3, "{listed}");
    assert_eq!(listed[0]["reason"], "boom");
    assert_eq!(listed[0]["job"]["runId"], "r1");
    let first_id = listed[0]["id"].as_str().unwrap().to_string();
    let first_node = listed[0]["job"]["nodeId"].as_str().unwrap().to_string();

    cli.expect(2, &["poison", "requeue", "no-such-message"]);
    let out = cli.expect(0, &["poison", "requeue", &first_id]);
    assert!(out.contains("1 job(s) requeued"), "{out}");
    let peeked = cli.json(0, &["queue", "peek", "--json"]);
    assert_eq!(peeked.as_array().unwrap().len(), 1, "{peeked}");
    assert_eq!(peeked[0]["job"]["nodeId"], first_node.as_str());

    // The poison messages the single requeue looked at are visible again at once.
    let out = cli.expect(0, &["poison", "requeue", "--all"]);
    assert!(out.contains("2 job(s) requeued"), "{out}");
    assert_eq!(
        cli.json(0, &["poison", "list", "--json"]),
        serde_json::json!([])
    );

    rt.block_on(support::put(&poison, &job("d")));
    cli.expect(2, &["poison", "purge"]);
    assert_eq!(
        cli.json(0, &["poison", "list", "--json"])
            .as_array()
            .unwrap()
            .len(),
        1
    );
    cli.expect(0, &["poison", "purge", "--yes"]);
    assert_eq!(
        cli.json(0, &["poison", "list", "--json"]),
        serde_json::json!([])
    );
    let stats = cli.json(0, &["queue", "stats", "--json"]);
    assert_eq!(stats["queue"]["approximateMessages"], 3, "{stats}");
}

#[test]
fn trace_records_every_exchange_without_secrets() {
    if !support::emulators_enabled("trace_records") {
        return;
    }
    let cli = Cli::new("opstrace");
    let dir = std::env::temp_dir().join(support::unique("opstrace"));
    std::fs::create_dir_all(&dir).unwrap();
    let trace = dir.join("setup.jsonl");
    cli.expect(0, &["setup", "--trace", trace.to_str().unwrap()]);
    cli.expect(
        0,
        &[
            "queue",
            "stats",
            "--trace",
            dir.join("stats.jsonl").to_str().unwrap(),
        ],
    );
    for file in ["setup.jsonl", "stats.jsonl"] {
        let text = std::fs::read_to_string(dir.join(file)).unwrap();
        assert!(text.lines().count() >= 2, "{file}: {text}");
        assert!(
            !text.contains(support::AZURITE_KEY),
            "{file} leaks the storage key"
        );
        assert!(
            !text.contains(support::COSMOS_EMULATOR_KEY),
            "{file} leaks the Cosmos key"
        );
    }
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn without_connection_settings_commands_fail_with_one_line() {
    let out = Command::new(env!("CARGO_BIN_EXE_flowcraft-azure"))
        .args(["queue", "stats"])
        .env_remove("AZURE_STORAGE_CONNECTION_STRING")
        .env_remove("AZURE_QUEUE_ENDPOINT")
        .env_remove("AZURE_STORAGE_ACCOUNT")
        .env_remove("AZURE_STORAGE_KEY")
        .env_remove("COSMOS_CONNECTION_STRING")
        .env_remove("COSMOS_ENDPOINT")
        .env_remove("COSMOS_KEY")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    assert!(stderr.starts_with("error: "), "{stderr}");
}

#[test]
fn every_command_documents_exit_codes_and_an_example() {
    for command in [
        "setup",
        "status",
        "runs",
        "resume",
        "cancel",
        "reconcile",
        "serve",
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_flowcraft-azure"))
            .args([command, "--help"])
            .output()
            .unwrap();
        let help = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{command}: {help}");
        assert!(help.contains("Exit codes:"), "{command}: {help}");
        assert!(help.contains("flowcraft-azure "), "{command}: {help}");
    }
    for sub in [
        ["queue", "stats"],
        ["queue", "peek"],
        ["poison", "list"],
        ["poison", "requeue"],
        ["poison", "purge"],
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_flowcraft-azure"))
            .args([sub[0], sub[1], "--help"])
            .output()
            .unwrap();
        let help = String::from_utf8_lossy(&out.stdout);
        assert!(
            help.contains("Exit codes:") && help.contains("Example"),
            "{sub:?}: {help}"
        );
    }
}

#[test]
fn serve_on_azure_starts_lists_and_resumes_runs_run_by_a_worker() {
    if !support::emulators_enabled("serve_on_azure") {
        return;
    }
    let cli = Cli::new("opsserve");
    cli.expect(0, &["setup"]);
    let _worker = cli.worker();
    let mut server = cli
        .command(&[
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--blueprints",
            BLUEPRINTS,
        ])
        .env_remove("FLOWCRAFT_API_TOKEN")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start serve");
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(server.stdout.take().unwrap()),
        &mut line,
    )
    .unwrap();
    let _server = KillOnDrop(server);
    let base = line
        .trim()
        .strip_prefix("listening on ")
        .unwrap()
        .to_string();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let http = reqwest::Client::new();
        let post = |path: String, body: &'static str| {
            let http = http.clone();
            let url = format!("{base}{path}");
            async move {
                let resp = http.post(url).body(body).send().await.unwrap();
                let status = resp.status().as_u16();
                let value: Value = serde_json::from_str(&resp.text().await.unwrap()).unwrap();
                (status, value)
            }
        };
        let get = |path: String| {
            let http = http.clone();
            let url = format!("{base}{path}");
            async move {
                let text = http.get(url).send().await.unwrap().text().await.unwrap();
                serde_json::from_str::<Value>(&text).unwrap()
            }
        };
        let (status, started) = post("/runs".into(), r#"{"blueprintId":"human-approval"}"#).await;
        assert_eq!(status, 201, "{started}");
        let run_id = started["runId"].as_str().unwrap().to_string();
        let mut report = Value::Null;
        for _ in 0..300 {
            report = get(format!("/runs/{run_id}")).await;
            if report["status"] == "awaiting" {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert_eq!(report["status"], "awaiting", "{report}");
        let listed = get("/runs?status=awaiting".into()).await;
        assert!(listed.to_string().contains(&run_id), "{listed}");
        let (status, answer) =
            post(format!("/runs/{run_id}/resume"), r#"{"action":"reject"}"#).await;
        assert_eq!(status, 200, "{answer}");
        assert_eq!(answer["ready"], serde_json::json!(["rejected"]));
        for _ in 0..300 {
            report = get(format!("/runs/{run_id}")).await;
            if report["status"] == "completed" {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert_eq!(report["status"], "completed", "{report}");
    });
}

#[test]
fn runs_list_newest_first_and_a_typescript_status_item_shows_an_unknown_start() {
    if !support::emulators_enabled("runs_list_newest_first") {
        return;
    }
    let cli = Cli::new("opslist");
    cli.expect(0, &["setup"]);
    // Status items as the TypeScript client writes them (no startedAt), and one of ours.
    let now = chrono::Utc::now();
    let items = [
        serde_json::json!({"id": "ts-old", "runId": "ts-old", "status": "running",
            "lastUpdated": now.timestamp() - 1800}),
        serde_json::json!({"id": "ts-new", "runId": "ts-new", "status": "running",
            "lastUpdated": now.timestamp() - 60}),
        serde_json::json!({"id": "ours", "runId": "ours", "status": "completed",
            "lastUpdated": now.timestamp() - 600, "startedAt": now.timestamp() - 900}),
    ];
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let statuses = support::cosmos_client()
            .database(&cli.database)
            .unwrap()
            .container(flowcraft_azure::adapter::settings::DEFAULT_STATUS_CONTAINER)
            .unwrap();
        for item in &items {
            let pk =
                flowcraft_azure::azure::cosmos::PartitionKey::from(item["id"].as_str().unwrap());
            statuses.create(&pk, item).await.unwrap();
        }
    });
    let listed = cli.json(0, &["runs", "--json"]);
    let order: Vec<&str> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["runId"].as_str().unwrap())
        .collect();
    assert_eq!(order, ["ts-new", "ours", "ts-old"], "{listed}");
    assert_eq!(listed[0]["startedAt"], Value::Null, "{listed}");
    let ours = chrono::DateTime::from_timestamp(now.timestamp() - 900, 0)
        .unwrap()
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    assert_eq!(listed[1]["startedAt"], ours.as_str(), "{listed}");
    let limited = cli.json(0, &["runs", "--limit", "1", "--json"]);
    assert_eq!(limited.as_array().unwrap().len(), 1, "{limited}");
    assert_eq!(limited[0]["runId"], "ts-new");
    let recent = cli.json(0, &["runs", "--since", "20m", "--json"]);
    assert_eq!(recent.as_array().unwrap().len(), 2, "{recent}");
    let table = cli.expect(0, &["runs"]);
    let ts_line = table
        .lines()
        .find(|l| l.starts_with("ts-new"))
        .unwrap_or_else(|| panic!("{table}"));
    assert!(ts_line.contains("unknown"), "{table}");
}
