//! End-to-end tests of `flowcraft-azure validate` and `inspect`: exit codes, error messages
//! with JSON paths, the summary and the Mermaid output, on the shipped fixtures and on broken
//! blueprints written to a temporary folder.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const BIN: &str = env!("CARGO_BIN_EXE_flowcraft-azure");

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures/blueprints")
        .join(name)
}

fn run(args: &[&str]) -> Output {
    match Command::new(BIN).args(args).output() {
        Ok(out) => out,
        Err(e) => panic!("cannot start {BIN}: {e}"),
    }
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// A blueprint file in a per-test temporary folder, removed again on drop.
struct TempBlueprint {
    dir: PathBuf,
    path: PathBuf,
}

impl Drop for TempBlueprint {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Writes `text` to `blueprint.json` in a fresh temporary folder for `test`.
fn temp_blueprint(test: &str, text: &str) -> TempBlueprint {
    let dir = std::env::temp_dir().join(format!("flowcraft-cli-{}-{test}", std::process::id()));
    if let Err(e) = std::fs::create_dir_all(&dir) {
        panic!("cannot create {}: {e}", dir.display());
    }
    let path = dir.join("blueprint.json");
    if let Err(e) = std::fs::write(&path, text) {
        panic!("cannot write {}: {e}", path.display());
    }
    TempBlueprint { dir, path }
}

fn arg(path: &Path) -> &str {
    path.to_str().unwrap_or_default()
}

#[test]
fn every_fixture_validates_silently() {
    let dir = fixture("");
    let entries = match std::fs::read_dir(&dir) {
        Ok(entries) => entries,
        Err(e) => panic!("cannot list {}: {e}", dir.display()),
    };
    let mut count = 0;
    for entry in entries.flatten() {
        let path = entry.path();
        if path.extension().and_then(|e| e.to_str()) != Some("json") {
            continue;
        }
        let out = run(&["validate", arg(&path)]);
        assert_eq!(
            out.status.code(),
            Some(0),
            "{}: {}",
            path.display(),
            stderr(&out)
        );
        assert!(
            out.stdout.is_empty() && out.stderr.is_empty(),
            "{}",
            path.display()
        );
        count += 1;
    }
    assert!(count >= 7, "expected the demo fixtures, found {count}");
}

#[test]
fn invalid_blueprint_exits_2_with_the_json_path() {
    let file = temp_blueprint(
        "fallback",
        r#"{"id": "x", "nodes": [{"id": "a", "uses": "echo", "config": {"fallback": "ghost"}}]}"#,
    );
    let out = run(&["validate", arg(&file.path)]);
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(err.contains("nodes[0].config.fallback"), "{err}");
    assert!(err.contains("unknown node \"ghost\""), "{err}");
    assert!(err.contains("blueprint.json"), "{err}");
    assert!(out.stdout.is_empty());
}

#[test]
fn json_syntax_error_reports_line_and_column() {
    let file = temp_blueprint("syntax", "{\n  \"id\": \"x\",\n  \"nodes\": [,]\n}");
    let out = run(&["validate", arg(&file.path)]);
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(
        err.contains("invalid JSON") && err.contains("line 3 column"),
        "{err}"
    );
}

#[test]
fn unreadable_file_exits_2() {
    let missing = std::env::temp_dir().join("flowcraft-cli-definitely-missing.json");
    let out = run(&["validate", arg(&missing)]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("cannot read blueprint file"),
        "{}",
        stderr(&out)
    );
    let out = run(&["inspect", arg(&missing)]);
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn evaluator_flag_decides_how_conditions_parse() {
    let text = r#"{"id": "x", "nodes": [{"id": "a", "uses": "echo"}, {"id": "b", "uses": "echo"}],
        "edges": [{"source": "a", "target": "b", "condition": "result.output > 1"}]}"#;
    let file = temp_blueprint("evaluator", text);
    let out = run(&["validate", arg(&file.path)]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("edges[0].condition"),
        "{}",
        stderr(&out)
    );
    let out = run(&["validate", "--evaluator", "safe", arg(&file.path)]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let out = run(&["validate", "--evaluator", "unsafe", arg(&file.path)]);
    assert_eq!(out.status.code(), Some(2));
    let out = run(&["inspect", "--evaluator", "safe", arg(&file.path)]);
    assert!(stdout(&out).contains("evaluator safe"), "{}", stdout(&out));
}

#[test]
fn cycles_need_a_loop_controller_or_the_allow_flag() {
    let text = r#"{"id": "x", "nodes": [{"id": "a", "uses": "echo"}, {"id": "b", "uses": "echo"}],
        "edges": [{"source": "a", "target": "b"}, {"source": "b", "target": "a"}]}"#;
    let file = temp_blueprint("cycle", text);
    let out = run(&["validate", arg(&file.path)]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("does not pass through a loop-controller"),
        "{}",
        stderr(&out)
    );
    let out = run(&["validate", "--allow-cycles", arg(&file.path)]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
}

#[test]
fn inspect_summarises_start_terminal_joins_fallbacks_and_loops() {
    let out = run(&["inspect", arg(&fixture("fan-out-fan-in.json"))]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(text.contains("start nodes: \"seed\"\n"), "{text}");
    assert!(text.contains("terminal nodes: \"total\"\n"), "{text}");
    assert!(
        text.contains("joins: \"total\" (all of \"left\", \"middle\", \"right\")"),
        "{text}"
    );

    let text = stdout(&run(&["inspect", arg(&fixture("retry-fallback.json"))]));
    assert!(
        text.contains("fallbacks: \"broken\" -> \"manual\"\n"),
        "{text}"
    );
    assert!(text.contains("terminal nodes: \"report\"\n"), "{text}");

    let text = stdout(&run(&["inspect", arg(&fixture("loop.json"))]));
    assert!(
        text.contains("loops: \"check\" (body: \"count\")\n"),
        "{text}"
    );
    assert!(
        text.contains("joins: \"check\" (any of \"count\")\n"),
        "{text}"
    );
}

#[test]
fn inspect_mermaid_prints_only_the_diagram() {
    let out = run(&["inspect", "--mermaid", arg(&fixture("approval.json"))]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(text.starts_with("flowchart TD\n"), "{text}");
    assert!(text.contains("-->|\"approve\"|"), "{text}");
    assert!(text.contains("any join"), "{text}");
    assert!(!text.contains("start nodes"), "{text}");
}
