//! Shape-preserving masking of payloads for traces that leave the building: queue message
//! texts and document contents are replaced by `x` characters of the same length, so a
//! trace still shows what was sent where, how large and in what structure, but not the
//! user's data. Secrets are a separate concern ([`crate::wire::redact`]); masking is an
//! extra, opt-in step ([`crate::wire::record::Recorder::masking_payloads`]).
//!
//! Rules:
//! - a JSON body keeps its structure: every string value becomes `x` repeated to its length
//!   and every number becomes `0`, except the values of [`KEPT_JSON_KEYS`] (ids, Cosmos
//!   system properties, query text and parameter names, patch operation kinds and paths,
//!   error codes), which identify requests and drive the client;
//! - an XML body has the text of each `<MessageText>` element masked;
//! - anything else is left as it is.
//!
//! Masking is deterministic, so a replay masks the sent bodies the same way and compares.

use serde_json::Value;

/// JSON keys whose values are kept: they identify the item or the request, and a client
/// replaying the trace echoes them (`_etag` in `If-Match`).
pub const KEPT_JSON_KEYS: [&str; 11] = [
    "id", "_rid", "_self", "_etag", "_ts", "query", "name", "op", "path", "from", "code",
];

/// The payload masked (see the module docs); `None` when nothing in it is a payload.
pub fn mask_payload(body: &str) -> Option<String> {
    if let Ok(mut value) = serde_json::from_str::<Value>(body) {
        mask_json(&mut value);
        return Some(value.to_string());
    }
    if body.contains("<MessageText>") {
        return Some(mask_message_texts(body));
    }
    None
}

fn mask_json(value: &mut Value) {
    match value {
        Value::String(text) => *text = "x".repeat(text.chars().count()),
        Value::Number(number) => *number = 0.into(),
        Value::Array(items) => items.iter_mut().for_each(mask_json),
        Value::Object(map) => {
            for (key, item) in map.iter_mut() {
                if !KEPT_JSON_KEYS.contains(&key.as_str()) {
                    mask_json(item);
                }
            }
        }
        Value::Bool(_) | Value::Null => {}
    }
}

/// Replaces the text of every `<MessageText>...</MessageText>` with `x`s (same byte length;
/// the text is base64 or XML-escaped, so bytes and characters agree in practice).
fn mask_message_texts(body: &str) -> String {
    const OPEN: &str = "<MessageText>";
    const CLOSE: &str = "</MessageText>";
    let mut out = String::with_capacity(body.len());
    let mut rest = body;
    while let Some(start) = rest.find(OPEN) {
        let (before, after_open) = rest.split_at(start + OPEN.len());
        out.push_str(before);
        match after_open.find(CLOSE) {
            Some(end) => {
                let (text, tail) = after_open.split_at(end);
                out.push_str(&"x".repeat(text.len()));
                rest = tail;
            }
            None => {
                // Unterminated: mask the remainder.
                out.push_str(&"x".repeat(after_open.len()));
                rest = "";
            }
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn json_keeps_structure_ids_and_lengths() {
        let body = json!({
            "id": "r1", "runId": "secret", "n": 7, "ok": true, "none": null,
            "list": ["ab", 3], "_etag": "\"e\"",
            "parameters": [{"name": "@s", "value": "failed"}], "query": "SELECT 1"
        })
        .to_string();
        let masked: Value = serde_json::from_str(&mask_payload(&body).unwrap()).unwrap();
        assert_eq!(
            masked,
            json!({
                "id": "r1", "runId": "xxxxxx", "n": 0, "ok": true, "none": null,
                "list": ["xx", 0], "_etag": "\"e\"",
                "parameters": [{"name": "@s", "value": "xxxxxx"}], "query": "SELECT 1"
            })
        );
    }

    #[test]
    fn message_texts_are_masked_to_the_same_length() {
        let body = "<QueueMessagesList><QueueMessage><MessageText>abc</MessageText></QueueMessage>\
                    <QueueMessage><MessageText>de&amp;f</MessageText></QueueMessage></QueueMessagesList>";
        let masked = mask_payload(body).unwrap();
        assert_eq!(masked.len(), body.len());
        assert!(masked.contains("<MessageText>xxx</MessageText>"));
        assert!(masked.contains("<MessageText>xxxxxxxx</MessageText>"));
        assert_eq!(
            mask_payload("<MessageText>open").as_deref(),
            Some("<MessageText>xxxx")
        );
        assert_eq!(mask_payload("<QueueMessagesList/>"), None);
        assert_eq!(mask_payload(""), None);
    }

    #[test]
    fn masking_is_idempotent() {
        for body in [r#"{"a":"b","c":[1,"d"]}"#, "<MessageText>hi</MessageText>"] {
            let once = mask_payload(body).unwrap();
            assert_eq!(mask_payload(&once).unwrap(), once);
        }
    }
}
