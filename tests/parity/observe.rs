//! What two runs of one blueprint must agree on, whatever executed them: the status, every
//! node output (`_outputs.*`), the user-visible context keys and the errors, with run ids and
//! random batch ids normalized away. Shared by the mode-parity suite and the chaos tests
//! (`#[path = "parity/observe.rs"] mod observe;`).
#![allow(dead_code)]

use flowcraft_azure::flow::runtime::{RunStatus, WorkflowResult};
use serde_json::Value;
use std::collections::BTreeMap;

/// Replaces every 32-hex-digit batch id in `text` with `<batch>`.
pub fn normalize_text(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    while i < bytes.len() {
        let run = bytes[i..]
            .iter()
            .take_while(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
            .count();
        if run == 32 {
            out.push_str("<batch>");
            i += run;
        } else {
            let ch = text[i..].chars().next().unwrap();
            out.push(ch);
            i += ch.len_utf8();
        }
    }
    out
}

pub fn normalize(value: &Value) -> Value {
    match value {
        Value::String(s) => Value::String(normalize_text(s)),
        Value::Array(items) => Value::Array(items.iter().map(normalize).collect()),
        // nested run contexts (a subflow's output): their run id differs, and their
        // `_inputs.*` at a join is whichever predecessor finished last (timing)
        Value::Object(map) => Value::Object(
            map.iter()
                .filter(|(k, _)| *k != "_executionId" && !k.starts_with("_inputs."))
                .map(|(k, v)| (normalize_text(k), normalize(v)))
                .collect(),
        ),
        other => other.clone(),
    }
}

/// What both modes must agree on.
#[derive(Debug, PartialEq)]
pub struct Observed {
    pub status: RunStatus,
    /// `_outputs.*` and the keys that do not start with `_`, normalized.
    pub context: BTreeMap<String, Value>,
    /// (node id, message) per error.
    pub errors: Vec<(String, String)>,
}

pub fn observe(result: &WorkflowResult) -> Observed {
    let context = result
        .context
        .iter()
        .filter(|(k, _)| {
            k.starts_with("_outputs.")
                || !(k.starts_with('_') || *k == "blueprintId" || *k == "blueprintVersion")
        })
        .map(|(k, v)| (normalize_text(k), normalize(v)))
        .collect();
    let mut errors: Vec<(String, String)> = result
        .errors
        .iter()
        .map(|e| (normalize_text(&e.node_id), normalize_text(&e.message)))
        .collect();
    errors.sort();
    Observed {
        status: result.status,
        context,
        errors,
    }
}
