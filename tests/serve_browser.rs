//! The run view of `serve` in a real browser: headless Chromium (Debian's `chromium`,
//! installed by `scripts/install-chromium.sh`) loads the page of a finished fan-out run and of
//! an awaiting approval run; the test reads the rendered DOM (every node shown with its state,
//! the resume form) and keeps screenshots under the target directory
//! (`target/tmp/run-view/*.png`).
//!
//! Without Chromium the test says so loudly and does nothing, except under CI (`CI` set),
//! where a missing browser fails it.

mod serve_common;

use serve_common::{Server, settled, start_run};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

/// The Chromium binary: `$FLOWCRAFT_CHROMIUM`, else `chromium` or `chromium-browser` on PATH.
fn chromium() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("FLOWCRAFT_CHROMIUM") {
        return Some(PathBuf::from(path));
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .flat_map(|dir| [dir.join("chromium"), dir.join("chromium-browser")])
        .find(|candidate| candidate.is_file())
}

/// Runs headless Chromium with `args` and `url`; returns stdout. Kills it after 90 s (a hung
/// browser must not hang the suite).
fn headless(browser: &Path, profile: &Path, args: &[&str], url: &str) -> String {
    let mut child = Command::new(browser)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--no-first-run",
            "--hide-scrollbars",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(args)
        .arg(url)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start chromium");
    let mut stdout = child.stdout.take().expect("stdout");
    let reader = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = std::io::Read::read_to_string(&mut stdout, &mut text);
        text
    });
    let mut waited = Duration::ZERO;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for chromium") {
            break status;
        }
        if waited >= Duration::from_secs(90) {
            let _ = child.kill();
            panic!("chromium did not finish within 90 s");
        }
        std::thread::sleep(Duration::from_millis(100));
        waited += Duration::from_millis(100);
    };
    let text = reader.join().expect("read chromium output");
    assert!(status.success(), "chromium failed: {status:?}");
    text
}

/// The `data-state` of `node` in the element of `class` in the DOM.
fn state_of(dom: &str, class: &str, node: &str) -> Option<String> {
    let marker = format!("class=\"{class}\" data-node=\"{node}\" data-state=\"");
    let start = dom.find(&marker)? + marker.len();
    let end = dom[start..].find('"')? + start;
    Some(dom[start..end].to_string())
}

fn screenshot(browser: &Path, profile: &Path, url: &str, path: &Path) {
    let _ = std::fs::remove_file(path);
    headless(
        browser,
        profile,
        &[
            &format!("--screenshot={}", path.display()),
            "--window-size=1200,900",
        ],
        url,
    );
    let png = std::fs::read(path).expect("the screenshot was written");
    assert!(png.starts_with(b"\x89PNG\r\n\x1a\n"), "not a PNG");
    assert!(png.len() > 5_000, "the screenshot is suspiciously small");
    eprintln!("screenshot: {}", path.display());
}

#[tokio::test]
async fn the_run_view_shows_every_node_with_its_state_in_chromium() {
    let Some(browser) = chromium() else {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI is set but Chromium is missing: run scripts/install-chromium.sh first"
        );
        eprintln!(
            "\n############################################################\n\
             ## SKIPPED the browser test of the run view: no Chromium.  ##\n\
             ## Install it with scripts/install-chromium.sh.           ##\n\
             ############################################################\n"
        );
        return;
    };
    let server = Server::start("127.0.0.1:0", &[]);
    let http = reqwest::Client::new();
    let fan_out = start_run(&http, &server, "fan-out-fan-in").await;
    assert_eq!(
        settled(&http, &server, &fan_out).await["status"],
        "completed"
    );
    let approval = start_run(&http, &server, "human-approval").await;
    assert_eq!(
        settled(&http, &server, &approval).await["status"],
        "awaiting"
    );

    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("run-view");
    std::fs::create_dir_all(&dir).unwrap();
    let profile = dir.join("chromium-profile");

    // The finished fan-out: every node done, in the graph and in the table.
    let url = server.url(&format!("/?run={fan_out}"));
    let dom = headless(&browser, &profile, &["--dump-dom"], &url);
    assert!(
        dom.contains(&format!("<span id=\"run-id\">{fan_out}</span>")),
        "{dom}"
    );
    assert!(dom.contains(">completed</b>"), "{dom}");
    for node in ["seed", "left", "middle", "right", "total"] {
        for class in ["graph-node", "node"] {
            assert_eq!(
                state_of(&dom, class, node).as_deref(),
                Some("done"),
                "{class} {node} in {dom}"
            );
        }
    }
    assert_eq!(
        dom.matches("<line ").count(),
        6,
        "one arrow per edge: {dom}"
    );
    screenshot(&browser, &profile, &url, &dir.join("fan-out-completed.png"));

    // The awaiting approval: review awaits (with a resume form), the branches are not reached.
    let url = server.url(&format!("/?run={approval}"));
    let dom = headless(&browser, &profile, &["--dump-dom"], &url);
    let expected = [
        ("request", "done"),
        ("review", "awaiting"),
        ("approved", "not-reached"),
        ("rejected", "not-reached"),
        ("notify", "not-reached"),
    ];
    for (node, state) in expected {
        assert_eq!(
            state_of(&dom, "graph-node", node).as_deref(),
            Some(state),
            "{node} in {dom}"
        );
    }
    assert!(
        dom.contains("<form class=\"resume\" data-node=\"review\""),
        "{dom}"
    );
    screenshot(&browser, &profile, &url, &dir.join("approval-awaiting.png"));

    // The index lists both runs.
    let dom = headless(&browser, &profile, &["--dump-dom"], &server.url("/"));
    assert!(
        dom.contains(&format!("data-run=\"{fan_out}\" data-status=\"completed\"")),
        "{dom}"
    );
    assert!(
        dom.contains(&format!("data-run=\"{approval}\" data-status=\"awaiting\"")),
        "{dom}"
    );
}
