//! `flowcraft-azure run --distributed`: same JSON shape, statuses and exit codes as the
//! in-process `run` for every fixture blueprint.

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/blueprints")
}

fn run(file: &Path, extra: &[&str]) -> (i32, Value) {
    let out = Command::new(env!("CARGO_BIN_EXE_flowcraft-azure"))
        .arg("run")
        .arg(file)
        .args(["--json", "--blueprints"])
        .arg(fixtures())
        .args(extra)
        .output()
        .expect("the binary runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let json: Value = serde_json::from_str(stdout.trim())
        .unwrap_or_else(|e| panic!("{}: not one JSON object ({e}): {stdout}", file.display()));
    (out.status.code().unwrap_or(-1), json)
}

/// The node outputs, without dynamic batch workers (their ids contain a random batch id).
fn outputs(result: &Value) -> Vec<(String, Value)> {
    let Some(ctx) = result["context"].as_object() else {
        return Vec::new();
    };
    let mut out: Vec<(String, Value)> = ctx
        .iter()
        .filter_map(|(k, v)| {
            let node = k.strip_prefix("_outputs.")?;
            let dynamic = ctx.contains_key(&format!("_dynamic.{node}"));
            (!dynamic).then(|| (k.clone(), v.clone()))
        })
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

#[test]
fn every_fixture_has_the_same_status_exit_code_and_outputs_in_both_modes() {
    let mut files: Vec<PathBuf> = std::fs::read_dir(fixtures())
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    files.sort();
    assert!(!files.is_empty());
    for file in files {
        let (code_local, local) = run(&file, &[]);
        let (code_remote, remote) = run(&file, &["--distributed", "--workers", "3"]);
        assert_eq!(code_local, code_remote, "{}", file.display());
        assert_eq!(local["status"], remote["status"], "{}", file.display());
        assert_eq!(outputs(&local), outputs(&remote), "{}", file.display());
        for key in ["status", "context", "errors"] {
            assert!(remote.get(key).is_some(), "{}: no {key}", file.display());
        }
        let ctx = remote["context"].as_object().unwrap();
        assert!(!ctx.contains_key("blueprintId") && !ctx.contains_key("blueprintVersion"));
    }
}

#[test]
fn a_failing_run_exits_1_and_workers_without_distributed_is_bad_input() {
    let dir = std::env::temp_dir().join(format!("fc-dist-cli-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("fails.json");
    std::fs::write(
        &file,
        r#"{"id":"fails","nodes":[{"id":"a","uses":"fail","params":{"message":"no"}}],"edges":[]}"#,
    )
    .unwrap();
    let (code, result) = run(&file, &["--distributed"]);
    assert_eq!(code, 1);
    assert_eq!(result["status"], "failed");
    assert_eq!(result["errors"][0]["message"], "no");
    let status = Command::new(env!("CARGO_BIN_EXE_flowcraft-azure"))
        .arg("run")
        .arg(&file)
        .args(["--workers", "2"])
        .output()
        .unwrap()
        .status;
    assert_eq!(status.code(), Some(2));
    let _ = std::fs::remove_dir_all(&dir);
}
