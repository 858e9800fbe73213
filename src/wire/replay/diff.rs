//! How a request being replayed is compared with a recorded one: the readable diff behind
//! every replay divergence (method, path, query, headers, body), with the rules described
//! in [`crate::wire::replay`].

use std::collections::BTreeMap;

use super::key::resource_of;
use crate::wire::mask::mask_payload;
use crate::wire::record::Exchange;
use crate::wire::redact::{REDACTED, Redactor};
use crate::wire::transport::HttpRequest;

/// Headers that differ on every run and are never compared.
const VOLATILE_HEADERS: [&str; 10] = [
    "x-ms-date",
    "date",
    "authorization",
    "x-ms-client-request-id",
    "user-agent",
    "content-length",
    "host",
    "accept",
    "accept-encoding",
    "connection",
];

/// How much of a body a diff shows.
const BODY_PREVIEW: usize = 300;

/// `/path?query` of a URL (the whole text when it does not parse).
pub(super) fn path_and_query(url: &str) -> String {
    match reqwest::Url::parse(url) {
        Ok(u) => match u.query() {
            Some(q) => format!("{}?{q}", u.path()),
            None => u.path().to_string(),
        },
        Err(_) => url.to_string(),
    }
}

/// The differences between a recorded request and one being sent, one readable line each
/// (empty when they match under the replay rules). `extra_ignored` are further header names
/// (lower-case) to skip. The sent request is redacted first, so the diff never shows a
/// secret.
pub fn diff_request(
    expected: &Exchange,
    sent: &HttpRequest,
    extra_ignored: &[String],
) -> Vec<String> {
    diff_request_ignoring(expected, sent, extra_ignored, &[])
}

/// [`diff_request`] that also leaves out the JSON body values at `ignored_json_paths`
/// (see [`super::Replayer::ignore_json_path`]).
pub(super) fn diff_request_ignoring(
    expected: &Exchange,
    sent: &HttpRequest,
    extra_ignored: &[String],
    ignored_json_paths: &[String],
) -> Vec<String> {
    let redactor = Redactor::new();
    let mut diffs = Vec::new();
    if !expected.method.eq_ignore_ascii_case(sent.method.as_str()) {
        diffs.push(format!(
            "method: expected {}, sent {}",
            expected.method, sent.method
        ));
    }
    let sent_url = redactor.redact_url(sent.url.as_str());
    match (
        reqwest::Url::parse(&expected.url),
        reqwest::Url::parse(&sent_url),
    ) {
        (Ok(e), Ok(s)) => {
            // Host-style and path-style URLs of one account name the same resource.
            let (want, got) = (resource_of(&expected.url), resource_of(&sent_url));
            if want.path != got.path {
                diffs.push(format!("path: expected {}, sent {}", want.path, got.path));
            }
            if want.account != got.account && !want.account.is_empty() && !got.account.is_empty() {
                diffs.push(format!(
                    "account: expected {}, sent {}",
                    want.account, got.account
                ));
            }
            diff_maps("query", &query_map(&e), &query_map(&s), &mut diffs);
        }
        _ => {
            if expected.url != sent_url {
                diffs.push(format!("url: expected {}, sent {}", expected.url, sent_url));
            }
        }
    }
    let ignored =
        |name: &str| VOLATILE_HEADERS.contains(&name) || extra_ignored.iter().any(|i| i == name);
    let header_map = |headers: &[(String, String)]| -> BTreeMap<String, String> {
        let mut map = BTreeMap::new();
        for (n, v) in headers {
            let lower = n.to_ascii_lowercase();
            if !ignored(&lower) {
                map.entry(lower).or_insert_with(|| v.trim().to_string());
            }
        }
        map
    };
    let sent_headers = redactor.redact_headers(&sent.header_pairs());
    diff_maps(
        "header",
        &header_map(&expected.request_headers),
        &header_map(&sent_headers),
        &mut diffs,
    );
    diff_bodies(
        expected,
        &sent.body,
        &redactor,
        ignored_json_paths,
        &mut diffs,
    );
    diffs
}

/// Query parameters by name (values sorted), without `sig`.
fn query_map(url: &reqwest::Url) -> BTreeMap<String, String> {
    let mut map: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (n, v) in url.query_pairs() {
        if !n.eq_ignore_ascii_case("sig") {
            map.entry(n.into_owned()).or_default().push(v.into_owned());
        }
    }
    map.into_iter()
        .map(|(n, mut v)| {
            v.sort();
            (n, v.join(","))
        })
        .collect()
}

/// Adds one line per name that is missing, extra or different; a recorded `REDACTED` value
/// matches anything.
fn diff_maps(
    what: &str,
    expected: &BTreeMap<String, String>,
    sent: &BTreeMap<String, String>,
    diffs: &mut Vec<String>,
) {
    for (name, want) in expected {
        match sent.get(name) {
            None => diffs.push(format!("{what} {name}: expected {want:?}, not sent")),
            Some(got) if got != want && want != REDACTED => {
                diffs.push(format!("{what} {name}: expected {want:?}, sent {got:?}"))
            }
            Some(_) => {}
        }
    }
    for (name, got) in sent {
        if !expected.contains_key(name) {
            diffs.push(format!("{what} {name}: not recorded, sent {got:?}"));
        }
    }
}

fn diff_bodies(
    expected: &Exchange,
    sent: &[u8],
    redactor: &Redactor,
    ignored_json_paths: &[String],
    diffs: &mut Vec<String>,
) {
    let want = match expected.request_body.to_bytes() {
        Ok(b) => b,
        Err(e) => {
            diffs.push(format!("body: {e}"));
            return;
        }
    };
    let got = match std::str::from_utf8(sent) {
        Ok(text) => {
            let redacted = redactor.redact_text(text);
            if expected.payloads_masked {
                mask_payload(&redacted).unwrap_or(redacted).into_bytes()
            } else {
                redacted.into_bytes()
            }
        }
        Err(_) => sent.to_vec(),
    };
    if want == got {
        return;
    }
    let as_json = |b: &[u8]| {
        serde_json::from_slice::<serde_json::Value>(b)
            .ok()
            .map(|mut value| {
                for pointer in ignored_json_paths {
                    remove_pointer(&mut value, pointer);
                }
                value
            })
    };
    if let (Some(w), Some(g)) = (as_json(&want), as_json(&got)) {
        if w == g {
            return;
        }
    }
    diffs.push(format!(
        "body: expected {}, sent {}",
        preview(&want),
        preview(&got)
    ));
}

/// Removes the values a JSON pointer names (`*` matches every member or element).
fn remove_pointer(value: &mut serde_json::Value, pointer: &str) {
    let segments: Vec<String> = pointer
        .split('/')
        .skip(1)
        .map(|s| s.replace("~1", "/").replace("~0", "~"))
        .collect();
    remove_segments(value, &segments);
}

fn remove_segments(value: &mut serde_json::Value, segments: &[String]) {
    use serde_json::Value;
    let Some((first, rest)) = segments.split_first() else {
        return;
    };
    match value {
        Value::Object(map) if rest.is_empty() => {
            if first == "*" {
                map.clear();
            } else {
                map.remove(first.as_str());
            }
        }
        Value::Object(map) => {
            for (key, child) in map.iter_mut() {
                if first == "*" || key == first {
                    remove_segments(child, rest);
                }
            }
        }
        Value::Array(items) if rest.is_empty() => {
            if first == "*" {
                items.clear();
            } else if let Some(slot) = first
                .parse::<usize>()
                .ok()
                .and_then(|index| items.get_mut(index))
            {
                // Nulled, not removed: later elements keep their positions.
                *slot = Value::Null;
            }
        }
        Value::Array(items) => {
            for (index, child) in items.iter_mut().enumerate() {
                if first == "*" || first.parse::<usize>() == Ok(index) {
                    remove_segments(child, rest);
                }
            }
        }
        _ => {}
    }
}

fn preview(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    let mut shown: String = text.chars().take(BODY_PREVIEW).collect();
    if text.chars().count() > BODY_PREVIEW {
        shown.push_str("...");
    }
    format!("{shown:?} ({} bytes)", bytes.len())
}
