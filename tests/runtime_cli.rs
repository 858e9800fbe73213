//! `flowcraft-azure run`: output format and exit codes, through the real binary.

use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

struct TempDir(PathBuf);

impl TempDir {
    fn new() -> Self {
        let dir = std::env::temp_dir().join(format!("fc-run-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }
    fn write(&self, name: &str, value: &Value) -> PathBuf {
        let path = self.0.join(name);
        std::fs::write(&path, value.to_string()).unwrap();
        path
    }
    fn write_text(&self, name: &str, text: &str) -> PathBuf {
        let path = self.0.join(name);
        std::fs::write(&path, text).unwrap();
        path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn run(args: &[&Path], flags: &[&str]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_flowcraft-azure"));
    cmd.arg("run");
    for a in args {
        cmd.arg(a);
    }
    cmd.args(flags);
    cmd.output().unwrap()
}

fn single_json(out: &Output) -> Value {
    let stdout = String::from_utf8(out.stdout.clone()).unwrap();
    assert_eq!(stdout.trim_end().lines().count(), 1, "stdout: {stdout}");
    serde_json::from_str(stdout.trim()).unwrap()
}

fn sum_blueprint() -> Value {
    json!({"id": "sum", "nodes": [
        {"id": "numbers", "uses": "echo", "inputs": "values"},
        {"id": "total", "uses": "sum"}],
      "edges": [{"source": "numbers", "target": "total"}]})
}

#[test]
fn json_mode_prints_one_object_and_exits_0_when_completed() {
    let dir = TempDir::new();
    let bp = dir.write("bp.json", &sum_blueprint());
    let input = dir.write("in.json", &json!({"values": [1, 2, 3.5]}));
    let out = run(&[&bp], &["--input", input.to_str().unwrap(), "--json"]);
    assert_eq!(out.status.code(), Some(0));
    let v = single_json(&out);
    assert_eq!(v["status"], json!("completed"));
    assert_eq!(v["context"]["total"], json!(6.5));
    assert_eq!(v["errors"], json!([]));
}

#[test]
fn a_failed_run_exits_1_and_reports_the_node_message() {
    let dir = TempDir::new();
    let bp = dir.write(
        "bp.json",
        &json!({"id": "f", "nodes": [{"id": "x", "uses": "fail",
                "params": {"message": "card declined"}}], "edges": []}),
    );
    let out = run(&[&bp], &["--json"]);
    assert_eq!(out.status.code(), Some(1));
    let v = single_json(&out);
    assert_eq!(v["status"], json!("failed"));
    assert_eq!(v["errors"][0]["message"], json!("card declined"));

    let human = run(&[&bp], &[]);
    assert_eq!(human.status.code(), Some(1));
    let text = String::from_utf8(human.stdout).unwrap();
    assert!(text.contains("failed"), "{text}");
    assert!(text.contains("error in node 'x': card declined"), "{text}");
}

#[test]
fn an_awaiting_run_exits_0() {
    let dir = TempDir::new();
    let bp = dir.write(
        "bp.json",
        &json!({"id": "w", "nodes": [{"id": "review", "uses": "wait"}], "edges": []}),
    );
    let out = run(&[&bp], &["--json"]);
    assert_eq!(out.status.code(), Some(0));
    let v = single_json(&out);
    assert_eq!(v["status"], json!("awaiting"));
    assert_eq!(v["context"]["_awaitingNodeIds"], json!(["review"]));
}

#[test]
fn bad_input_exits_2_with_nothing_on_stdout() {
    let dir = TempDir::new();
    let good = dir.write("bp.json", &sum_blueprint());
    let broken = dir.write_text("broken.json", "{\"id\": ");
    let not_object = dir.write("list.json", &json!([1, 2]));
    let missing = dir.0.join("missing.json");
    let cases: Vec<(Vec<&Path>, Vec<&str>)> = vec![
        (vec![&broken], vec!["--json"]),
        (vec![&missing], vec!["--json"]),
        (
            vec![&good],
            vec!["--json", "--input", not_object.to_str().unwrap()],
        ),
        (
            vec![&good],
            vec!["--json", "--input", broken.to_str().unwrap()],
        ),
        (
            vec![&good],
            vec!["--json", "--blueprints", missing.to_str().unwrap()],
        ),
        (vec![&good], vec!["--json", "--evaluator", "javascript"]),
    ];
    for (args, flags) in cases {
        let out = run(&args, &flags);
        assert_eq!(out.status.code(), Some(2), "{flags:?}");
        assert!(out.stdout.is_empty(), "{flags:?}");
        assert!(!out.stderr.is_empty(), "{flags:?}");
    }
}

#[test]
fn blueprints_dir_makes_subflows_available() {
    let dir = TempDir::new();
    let subs = TempDir::new();
    subs.write(
        "double.json",
        &json!({"id": "inner", "nodes": [{"id": "add", "uses": "sum"}], "edges": []}),
    );
    let bp = dir.write(
        "bp.json",
        &json!({"id": "outer", "nodes": [
            {"id": "call", "uses": "subflow", "inputs": "values",
             "params": {"blueprintId": "inner"}}], "edges": []}),
    );
    let input = dir.write("in.json", &json!({"values": [2, 40]}));
    let out = run(
        &[&bp],
        &[
            "--json",
            "--input",
            input.to_str().unwrap(),
            "--blueprints",
            subs.0.to_str().unwrap(),
        ],
    );
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(single_json(&out)["context"]["call"], json!(42));

    let without = run(&[&bp], &["--json", "--input", input.to_str().unwrap()]);
    assert_eq!(without.status.code(), Some(1));
}

#[test]
fn the_safe_evaluator_flag_enables_operators_in_conditions() {
    let dir = TempDir::new();
    let bp = dir.write(
        "bp.json",
        &json!({"id": "cond", "nodes": [
            {"id": "n", "uses": "echo", "inputs": "n"},
            {"id": "big", "uses": "echo"}],
          "edges": [{"source": "n", "target": "big", "condition": "n > 10"}]}),
    );
    let input = dir.write("in.json", &json!({"n": 11}));
    let out = run(
        &[&bp],
        &[
            "--json",
            "--evaluator",
            "safe",
            "--concurrency",
            "1",
            "--input",
            input.to_str().unwrap(),
        ],
    );
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(single_json(&out)["context"]["big"], json!(11));
}

#[test]
fn run_help_and_usage_errors_list_every_option() {
    let help = run(&[], &["--help"]);
    assert_eq!(help.status.code(), Some(0));
    let usage_error = run(&[], &[]);
    assert_eq!(usage_error.status.code(), Some(2));
    let help = String::from_utf8(help.stdout).unwrap();
    let error = String::from_utf8(usage_error.stderr).unwrap();
    for text in [&help, &error] {
        let usage = text
            .lines()
            .skip_while(|l| !l.starts_with("Usage:"))
            .take_while(|l| !l.trim().is_empty())
            .collect::<Vec<_>>()
            .join(" ");
        for option in [
            "--input",
            "--blueprints",
            "--json",
            "--evaluator",
            "--allow-cycles",
            "--concurrency",
        ] {
            assert!(
                usage.contains(option),
                "{option} missing from usage: {usage}"
            );
        }
    }
    assert!(help.contains("Exit codes"), "{help}");
}

#[test]
fn every_fixture_blueprint_runs_from_the_readme_command() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/blueprints");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    files.sort();
    assert!(files.len() >= 5, "{files:?}");
    for file in &files {
        let out = run(
            &[file.as_path()],
            &["--blueprints", dir.to_str().unwrap(), "--json"],
        );
        let result = single_json(&out);
        let status = result["status"].as_str().unwrap_or_default().to_string();
        let expected_code = match status.as_str() {
            "completed" | "awaiting" => 0,
            other => panic!("{}: status {other}: {result}", file.display()),
        };
        assert_eq!(out.status.code(), Some(expected_code), "{}", file.display());
        assert_eq!(result["errors"], json!([]), "{}", file.display());
    }
    // the README's first command: a human summary naming the terminal output
    let hello = run(&[dir.join("hello.json").as_path()], &[]);
    assert_eq!(hello.status.code(), Some(0));
    let summary = String::from_utf8(hello.stdout).unwrap();
    assert!(summary.contains("completed"), "{summary}");
    assert!(summary.contains("Hello, Flowcraft!"), "{summary}");
}
