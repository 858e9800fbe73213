//! Shared pieces of the hostile-input tests: structured mutators (byte-level and JSON-level
//! edits of valid seeds: truncation, flipped and inserted bytes, invalid UTF-8, dropped and
//! retyped fields, huge numbers, deep nesting), a canned-answer transport, the case budget
//! (`FUZZ_CASES` scales a soak) and the printed figures.
#![allow(dead_code)] // each test binary uses a different subset

use async_trait::async_trait;
use flowcraft_azure::Error;
use flowcraft_azure::wire::pipeline::{NoAuth, Pipeline};
use flowcraft_azure::wire::retry::RetryPolicy;
use flowcraft_azure::wire::transport::{HttpRequest, HttpResponse, Transport};
use proptest::prelude::*;
use proptest::sample::Index;
use proptest::test_runner::{Config, FileFailurePersistence};
use serde_json::{Map, Value, json};
use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// The proptest configuration of one target: `default` cases unless `FUZZ_CASES` says how
/// many (a soak), no failure-persistence files (the regressions live in `tests/regressions`).
pub fn config(default: u32) -> Config {
    Config {
        cases: cases(default),
        failure_persistence: Some(Box::new(FileFailurePersistence::Off)),
        max_shrink_iters: 2_000,
        ..Config::default()
    }
}

/// `FUZZ_CASES` when set to a number, else `default`.
pub fn cases(default: u32) -> u32 {
    std::env::var("FUZZ_CASES")
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(default)
}

/// Counts the cases a target ran and prints them with the wall time when dropped (the
/// figures the hostile-input note reports).
pub struct Figures {
    name: &'static str,
    started: Instant,
    cases: Mutex<u64>,
    accepted: Mutex<u64>,
}

impl Figures {
    /// Starts counting for `name`.
    pub fn new(name: &'static str) -> Self {
        Figures {
            name,
            started: Instant::now(),
            cases: Mutex::new(0),
            accepted: Mutex::new(0),
        }
    }

    /// One more case.
    pub fn case(&self) {
        *self.cases.lock().unwrap() += 1;
    }

    /// The case's input was accepted (parsed to a value) rather than refused.
    pub fn accepted(&self) {
        *self.accepted.lock().unwrap() += 1;
    }

    /// Asserts the generator reached both sides: some inputs accepted, some refused (a
    /// generator that only produces garbage, or only valid input, tests little).
    pub fn assert_both_sides(&self) {
        let cases = *self.cases.lock().unwrap();
        let accepted = *self.accepted.lock().unwrap();
        assert!(
            accepted > 0 && accepted < cases,
            "{}: {accepted} of {cases} inputs accepted; the generator misses a side",
            self.name
        );
    }
}

impl Drop for Figures {
    fn drop(&mut self) {
        println!(
            "hostile[{}]: {} cases ({} accepted) in {:.1} s",
            self.name,
            self.cases.lock().map(|c| *c).unwrap_or(0),
            self.accepted.lock().map(|c| *c).unwrap_or(0),
            self.started.elapsed().as_secs_f64()
        );
    }
}

/// Tokens worth splicing into text formats: markup, escapes, separators, numbers at the
/// edges, bytes that are not UTF-8.
const TOKENS: &[&[u8]] = &[
    b"<",
    b">",
    b"</",
    b"/>",
    b"<![CDATA[",
    b"]]>",
    b"<?xml version=\"1.0\"?>",
    b"<!DOCTYPE x [<!ENTITY a \"aaaaaaaaaa\">]>",
    b"&a;",
    b"&amp;",
    b"&#0;",
    b"&#x110000;",
    b"&#99999999999;",
    b"\"",
    b"'",
    b"{",
    b"}",
    b"[",
    b"]",
    b":",
    b",",
    b"null",
    b"true",
    b"-0",
    b"1e999",
    b"-1",
    b"18446744073709551616",
    b"340282366920938463463374607431768211456",
    b"NaN",
    b"\\u0000",
    b"\\ud800",
    b"=",
    b";",
    b"==",
    b"%",
    b"\xff",
    b"\xc3",
    b"\xed\xa0\x80",
    b"\x00",
    b"\r\n",
    b"\n\n",
];

/// One edit of a byte string.
#[derive(Debug, Clone)]
pub enum ByteEdit {
    /// Keep only the first part (a cut-off body).
    Truncate(Index),
    /// Replace one byte.
    Set(Index, u8),
    /// Insert a dictionary token.
    Token(Index, Index),
    /// Insert random bytes.
    Insert(Index, Vec<u8>),
    /// Remove a range.
    Remove(Index, Index),
    /// Repeat a range several times (growth, repeated elements).
    Repeat(Index, Index, u8),
}

/// A few byte edits.
pub fn byte_edits() -> impl Strategy<Value = Vec<ByteEdit>> {
    let edit = prop_oneof![
        1 => any::<Index>().prop_map(ByteEdit::Truncate),
        1 => (any::<Index>(), any::<u8>()).prop_map(|(i, b)| ByteEdit::Set(i, b)),
        3 => (any::<Index>(), any::<Index>()).prop_map(|(i, t)| ByteEdit::Token(i, t)),
        1 => (any::<Index>(), prop::collection::vec(any::<u8>(), 1..8))
            .prop_map(|(i, b)| ByteEdit::Insert(i, b)),
        1 => (any::<Index>(), any::<Index>()).prop_map(|(a, b)| ByteEdit::Remove(a, b)),
        1 => (any::<Index>(), any::<Index>(), 2u8..40).prop_map(|(a, b, n)| ByteEdit::Repeat(a, b, n)),
    ];
    prop::collection::vec(edit, 0..6)
}

/// Applies `edits` to `bytes` (bounded: the result stays under 256 KiB).
pub fn apply_bytes(bytes: &[u8], edits: &[ByteEdit]) -> Vec<u8> {
    let mut out = bytes.to_vec();
    for edit in edits {
        let at = |i: &Index, v: &Vec<u8>| i.index(v.len() + 1);
        match edit {
            ByteEdit::Truncate(i) => {
                let n = at(i, &out);
                out.truncate(n);
            }
            ByteEdit::Set(i, b) => {
                if !out.is_empty() {
                    let n = i.index(out.len());
                    out[n] = *b;
                }
            }
            ByteEdit::Token(i, t) => {
                let n = at(i, &out);
                let token = TOKENS[t.index(TOKENS.len())];
                out.splice(n..n, token.iter().copied());
            }
            ByteEdit::Insert(i, b) => {
                let n = at(i, &out);
                out.splice(n..n, b.iter().copied());
            }
            ByteEdit::Remove(a, b) => {
                let (x, y) = ordered(at(a, &out), at(b, &out));
                out.drain(x..y);
            }
            ByteEdit::Repeat(a, b, times) => {
                let (x, y) = ordered(at(a, &out), at(b, &out));
                let piece = out[x..y].to_vec();
                if piece.len() * usize::from(*times) + out.len() < 256 * 1024 {
                    for _ in 1..*times {
                        out.splice(y..y, piece.iter().copied());
                    }
                }
            }
        }
    }
    out
}

fn ordered(a: usize, b: usize) -> (usize, usize) {
    if a <= b { (a, b) } else { (b, a) }
}

/// One structural edit of a JSON value, applied at a node chosen by `Index`.
#[derive(Debug, Clone)]
pub enum JsonEdit {
    /// Remove an object key or array element.
    Drop(Index),
    /// Replace the node with a value of another type.
    Retype(Index, Index),
    /// Wrap the node in `depth` arrays/objects.
    Nest(Index, u16),
    /// Replace the node with a long string.
    Huge(Index, u32),
}

/// A few JSON edits.
pub fn json_edits() -> impl Strategy<Value = Vec<JsonEdit>> {
    let edit = prop_oneof![
        3 => any::<Index>().prop_map(JsonEdit::Drop),
        4 => (any::<Index>(), any::<Index>()).prop_map(|(a, b)| JsonEdit::Retype(a, b)),
        1 => (any::<Index>(), 1u16..300).prop_map(|(a, d)| JsonEdit::Nest(a, d)),
        1 => (any::<Index>(), 1u32..70_000).prop_map(|(a, n)| JsonEdit::Huge(a, n)),
    ];
    prop::collection::vec(edit, 0..5)
}

/// Values of other types, numbers at and past the edges included.
pub fn replacements() -> Vec<Value> {
    vec![
        Value::Null,
        json!(true),
        json!(false),
        json!(0),
        json!(-1),
        json!(u64::MAX),
        json!(i64::MIN),
        json!(1e308),
        json!(-1e308),
        json!(0.5),
        json!(""),
        json!("x"),
        json!("\u{0}\u{ffff}\u{10ffff}"),
        json!("1e999"),
        json!([]),
        json!([null]),
        json!({}),
        json!({"": null}),
        json!({"_flowcraft": 1}),
    ]
}

fn count_nodes(v: &Value) -> usize {
    1 + match v {
        Value::Array(a) => a.iter().map(count_nodes).sum(),
        Value::Object(m) => m.values().map(count_nodes).sum(),
        _ => 0,
    }
}

/// The node numbered `n` in pre-order (0 = the root).
fn node_mut(v: &mut Value, n: usize) -> &mut Value {
    node_by_path(v, n)
}

/// Pre-order walk without raw pointers: the path of keys/indices of node `n`.
fn path_of(v: &Value, n: usize) -> Vec<PathStep> {
    fn walk(v: &Value, n: &mut usize, path: &mut Vec<PathStep>) -> bool {
        if *n == 0 {
            return true;
        }
        *n -= 1;
        match v {
            Value::Array(a) => {
                for (i, c) in a.iter().enumerate() {
                    path.push(PathStep::Index(i));
                    if walk(c, n, path) {
                        return true;
                    }
                    path.pop();
                }
                false
            }
            Value::Object(m) => {
                for (k, c) in m {
                    path.push(PathStep::Key(k.clone()));
                    if walk(c, n, path) {
                        return true;
                    }
                    path.pop();
                }
                false
            }
            _ => false,
        }
    }
    let mut left = n;
    let mut path = Vec::new();
    if walk(v, &mut left, &mut path) {
        path
    } else {
        Vec::new()
    }
}

#[derive(Debug, Clone)]
enum PathStep {
    Key(String),
    Index(usize),
}

fn node_by_path(v: &mut Value, n: usize) -> &mut Value {
    let path = path_of(v, n);
    let mut cur = v;
    for step in path {
        cur = match (cur, step) {
            (Value::Array(a), PathStep::Index(i)) => &mut a[i],
            (Value::Object(m), PathStep::Key(k)) => m.get_mut(&k).expect("path from the walk"),
            (other, _) => return other,
        };
    }
    cur
}

/// Applies `edits` to a copy of `seed`.
pub fn apply_json(seed: &Value, edits: &[JsonEdit]) -> Value {
    let mut v = seed.clone();
    let others = replacements();
    for edit in edits {
        let total = count_nodes(&v);
        match edit {
            JsonEdit::Drop(i) => {
                let n = i.index(total);
                let path = path_of(&v, n);
                if let Some((last, parent)) = path.split_last() {
                    let mut cur = &mut v;
                    for step in parent {
                        cur = match (cur, step) {
                            (Value::Array(a), PathStep::Index(i)) => &mut a[*i],
                            (Value::Object(m), PathStep::Key(k)) => m.get_mut(k).unwrap(),
                            (other, _) => other,
                        };
                    }
                    match (cur, last) {
                        (Value::Array(a), PathStep::Index(i)) => {
                            a.remove(*i);
                        }
                        (Value::Object(m), PathStep::Key(k)) => {
                            m.shift_remove(k);
                        }
                        _ => {}
                    }
                }
            }
            JsonEdit::Retype(i, r) => {
                *node_mut(&mut v, i.index(total)) = others[r.index(others.len())].clone();
            }
            JsonEdit::Nest(i, depth) => {
                let node = node_mut(&mut v, i.index(total));
                let mut inner = node.take();
                for d in 0..*depth {
                    inner = if d % 2 == 0 {
                        json!([inner])
                    } else {
                        json!({ "n": inner })
                    };
                }
                *node = inner;
            }
            JsonEdit::Huge(i, n) => {
                *node_mut(&mut v, i.index(total)) = Value::String("x".repeat(*n as usize));
            }
        }
    }
    v
}

/// A structured case: a seed (by index), JSON edits, then byte edits of its text.
pub fn mutated_json_text(seeds: Vec<Value>) -> impl Strategy<Value = Vec<u8>> {
    let n = seeds.len();
    (0..n, json_edits(), byte_edits(), any::<bool>()).prop_map(move |(s, je, be, raw)| {
        let value = apply_json(&seeds[s], &je);
        let text = serde_json::to_vec(&value).unwrap_or_default();
        if raw { text } else { apply_bytes(&text, &be) }
    })
}

/// A structured case over byte seeds: one seed with byte edits.
pub fn mutated_bytes(seeds: Vec<Vec<u8>>) -> impl Strategy<Value = Vec<u8>> {
    let n = seeds.len();
    (0..n, byte_edits()).prop_map(move |(s, e)| apply_bytes(&seeds[s], &e))
}

/// Deeply nested text (past serde_json's recursion limit), for every JSON target.
pub fn deep_json(depth: usize) -> String {
    format!("{}{}", "[".repeat(depth), "]".repeat(depth))
}

/// Answers each request with the next canned response (then errors); records requests.
#[derive(Debug, Default)]
pub struct Canned {
    responses: Mutex<VecDeque<HttpResponse>>,
    requests: Mutex<Vec<HttpRequest>>,
}

impl Canned {
    /// A transport that answers these responses in order.
    pub fn new(responses: Vec<HttpResponse>) -> Arc<Self> {
        Arc::new(Canned {
            responses: Mutex::new(responses.into()),
            requests: Mutex::new(Vec::new()),
        })
    }

    /// How many requests arrived.
    pub fn request_count(&self) -> usize {
        self.requests.lock().unwrap().len()
    }
}

#[async_trait]
impl Transport for Canned {
    async fn send(&self, request: HttpRequest) -> Result<HttpResponse, Error> {
        self.requests.lock().unwrap().push(request);
        self.responses
            .lock()
            .unwrap()
            .pop_front()
            .ok_or_else(|| Error::transport("the canned transport has no answer left"))
    }
}

/// A single-attempt, unsigned pipeline over `transport`.
pub fn pipeline(transport: Arc<Canned>) -> Pipeline {
    Pipeline::new(transport, Arc::new(NoAuth)).with_retry(RetryPolicy::no_retries())
}

/// A response with these headers and body bytes.
pub fn response(status: u16, headers: &[(&str, &str)], body: Vec<u8>) -> HttpResponse {
    HttpResponse {
        status,
        headers: headers
            .iter()
            .map(|(n, v)| (n.to_ascii_lowercase(), v.to_string()))
            .collect(),
        body,
    }
}

/// Runs a future on a fresh current-thread runtime (proptest bodies are synchronous).
pub fn block_on<F: std::future::Future>(future: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("test runtime")
        .block_on(future)
}

/// The repository root (for fixtures and regression files).
pub fn repo_path(relative: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(relative)
}

/// A JSON object from a `json!` literal.
pub fn object(v: Value) -> Map<String, Value> {
    match v {
        Value::Object(m) => m,
        _ => panic!("not an object"),
    }
}

/// The files of a regression directory (sorted), with their bytes.
pub fn regression_files(dir: &str) -> Vec<(String, Vec<u8>)> {
    let path = repo_path(dir);
    let mut out = Vec::new();
    if let Ok(entries) = std::fs::read_dir(&path) {
        for entry in entries.flatten() {
            let p = entry.path();
            if p.is_file() {
                let name = p.file_name().unwrap().to_string_lossy().into_owned();
                out.push((name, std::fs::read(&p).unwrap()));
            }
        }
    }
    out.sort();
    out
}
