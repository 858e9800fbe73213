//! `flowcraft-azure demo`: the newcomer's first command, through the real binary (stdout is a
//! pipe here, so progress comes as plain lines).

use std::process::Command;

#[test]
fn demo_completes_every_run_and_prints_summary_and_coloured_graph() {
    let out = Command::new(env!("CARGO_BIN_EXE_flowcraft-azure"))
        .args(["demo", "--runs", "2", "--workers", "3"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "stdout: {stdout}\nstderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        stdout.matches("the reviewer approves it").count(),
        2,
        "{stdout}"
    );
    assert_eq!(
        stdout.matches("'stock' failed; attempt 2").count(),
        2,
        "{stdout}"
    );
    assert_eq!(
        stdout
            .matches(": completed (7 nodes with output, order confirmed)")
            .count(),
        2,
        "{stdout}"
    );
    assert!(stdout.contains("2 runs,"), "{stdout}");
    assert!(stdout.contains("flowchart TD"), "{stdout}");
    assert!(stdout.contains("class n7 not-reached"), "{stdout}");
}

#[test]
fn demo_rejects_a_bad_flag_with_exit_2() {
    let out = Command::new(env!("CARGO_BIN_EXE_flowcraft-azure"))
        .args(["demo", "--runs", "many"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--runs"));
}

mod support;

#[test]
fn demo_on_azure_completes_every_run_on_the_local_stack() {
    if !support::emulators_enabled("demo_azure") {
        return;
    }
    support::require_reachable("Azurite", &support::queue_endpoint());
    support::require_reachable("the Cosmos emulator", &support::cosmos_endpoint());
    let out = Command::new(env!("CARGO_BIN_EXE_flowcraft-azure"))
        .args(["demo", "--azure", "--runs", "2", "--workers", "2"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "stdout: {stdout}\nstderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("(Azure Queue Storage, Cosmos DB and Redis"),
        "{stdout}"
    );
    assert_eq!(
        stdout
            .matches(": completed (7 nodes with output, order confirmed)")
            .count(),
        2,
        "{stdout}"
    );
}
