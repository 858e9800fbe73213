//! Guards committed fixtures: no file under `fixtures/` may contain a well-known dev key
//! (Azurite, Cosmos emulator, Microsoft's Cosmos example keys), plain or URL-encoded, nor an
//! unredacted `sig=` value of 20 or more signature characters. Passes when `fixtures/` holds
//! no wire files yet; the scanner itself is tested on planted secrets below.

use std::path::{Path, PathBuf};

use flowcraft_azure::wire::redact::{Redactor, WELL_KNOWN_KEYS, find_leaks};

/// Every regular file under `dir`, recursively (none if `dir` does not exist).
fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(current) = pending.pop() {
        let Ok(entries) = std::fs::read_dir(&current) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                pending.push(path);
            } else if path.is_file() {
                found.push(path);
            }
        }
    }
    found.sort();
    found
}

/// Scans files and returns `path: finding` lines for every leak.
fn scan(files: &[PathBuf]) -> Vec<String> {
    let mut leaks = Vec::new();
    for file in files {
        let Ok(bytes) = std::fs::read(file) else {
            leaks.push(format!("{}: unreadable", file.display()));
            continue;
        };
        let text = String::from_utf8_lossy(&bytes);
        for finding in find_leaks(&text) {
            leaks.push(format!("{}: {finding}", file.display()));
        }
    }
    leaks
}

#[test]
fn committed_fixtures_contain_no_keys_or_signatures() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures");
    let leaks = scan(&files_under(&root));
    assert!(
        leaks.is_empty(),
        "secrets found in fixtures (re-record with a Redactor):\n{}",
        leaks.join("\n")
    );
}

#[test]
fn scanner_finds_planted_keys_and_signatures_in_files() {
    let dir = std::env::temp_dir().join(format!("flowcraft-fixture-scan-{}", std::process::id()));
    let nested = dir.join("wire");
    std::fs::create_dir_all(&nested).expect("temp dir");
    let clean = nested.join("clean.jsonl");
    let leaky = nested.join("leaky.jsonl");
    std::fs::write(
        &clean,
        r#"{"url":"http://h/q?sv=2021&sig=REDACTED","auth":"REDACTED"}"#,
    )
    .expect("write");
    let planted = format!(
        "{{\"url\":\"http://h/q?sig=AbCdEfGhIjKlMnOpQrStUvWx%3D\"}}\n{{\"key\":\"{}\"}}\n{{\"cosmos\":\"{}\"}}\n",
        WELL_KNOWN_KEYS[0], WELL_KNOWN_KEYS[1]
    );
    std::fs::write(&leaky, planted).expect("write");
    let leaks = scan(&files_under(&dir));
    assert_eq!(leaks.len(), 3, "{leaks:?}");
    assert!(leaks.iter().all(|l| l.contains("leaky.jsonl")), "{leaks:?}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn scanner_flags_every_well_known_key_and_encoded_forms() {
    for key in WELL_KNOWN_KEYS {
        assert_eq!(find_leaks(&format!("AccountKey={key}")).len(), 1, "{key}");
        let encoded: String = key
            .bytes()
            .map(|b| {
                if b.is_ascii_alphanumeric() {
                    char::from(b).to_string()
                } else {
                    format!("%{b:02X}")
                }
            })
            .collect();
        assert_eq!(find_leaks(&encoded).len(), 1, "encoded {key}");
        // After redaction nothing is left to find.
        let redacted = Redactor::new()
            .with_secret(key)
            .redact_text(&format!("x {key} y"));
        assert!(find_leaks(&redacted).is_empty());
    }
    assert_eq!(
        find_leaks(
            "authorization: type%3Dmaster%26ver%3D1.0%26sig%3D3QrKXUt8o51ebJCuaGAZdqzkDyS7tpaW"
        )
        .len(),
        1
    );
    assert!(find_leaks("sig=short&x=1").is_empty());
}
