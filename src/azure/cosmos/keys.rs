//! Cosmos DB identifiers: partition key values (and their header encoding), document ids,
//! database / container names and partition key paths, checked before anything is sent.

use serde_json::Value;

use crate::error::Error;
use crate::wire::encoding::is_dot_segment;

/// The longest id or name Cosmos DB accepts, in characters.
const MAX_ID_CHARS: usize = 255;

/// A partition key value: a string, number, boolean or null.
#[derive(Debug, Clone, PartialEq)]
pub struct PartitionKey(Value);

impl PartitionKey {
    /// A partition key from a JSON value; arrays and objects are [`Error::InvalidInput`].
    pub fn from_json(value: Value) -> Result<Self, Error> {
        match value {
            Value::Array(_) | Value::Object(_) => Err(Error::invalid_input(
                "a partition key value must be a string, number, boolean or null",
            )),
            scalar => Ok(PartitionKey(scalar)),
        }
    }

    /// The value.
    pub fn value(&self) -> &Value {
        &self.0
    }

    /// The `x-ms-documentdb-partitionkey` header value: a JSON array with the one value,
    /// non-ASCII characters written as `\uXXXX` so the header stays ASCII.
    pub(crate) fn header_value(&self) -> String {
        let json = Value::Array(vec![self.0.clone()]).to_string();
        let mut out = String::with_capacity(json.len());
        for c in json.chars() {
            if c.is_ascii() {
                out.push(c);
            } else {
                let mut units = [0u16; 2];
                for unit in c.encode_utf16(&mut units) {
                    out.push_str(&format!("\\u{unit:04x}"));
                }
            }
        }
        out
    }
}

impl From<&str> for PartitionKey {
    fn from(value: &str) -> Self {
        PartitionKey(Value::from(value))
    }
}

impl From<String> for PartitionKey {
    fn from(value: String) -> Self {
        PartitionKey(Value::from(value))
    }
}

impl From<&String> for PartitionKey {
    fn from(value: &String) -> Self {
        PartitionKey(Value::from(value.as_str()))
    }
}

impl From<i64> for PartitionKey {
    fn from(value: i64) -> Self {
        PartitionKey(Value::from(value))
    }
}

impl From<bool> for PartitionKey {
    fn from(value: bool) -> Self {
        PartitionKey(Value::from(value))
    }
}

/// Checks a document id: 1 to 255 characters, none of `/ \ # ?`, and not `.` or `..` (also
/// percent-encoded): the service cannot address such a document by URL.
pub(crate) fn validate_document_id(id: &str) -> Result<(), Error> {
    validate_name("document id", id)
}

/// Checks a database or container name with the same rules as document ids.
pub(crate) fn validate_resource_name(kind: &str, name: &str) -> Result<(), Error> {
    validate_name(kind, name)?;
    if name.ends_with(' ') {
        return Err(Error::invalid_input(format!(
            "{kind} `{name}` must not end with a space"
        )));
    }
    Ok(())
}

fn validate_name(kind: &str, value: &str) -> Result<(), Error> {
    if value.is_empty() {
        return Err(Error::invalid_input(format!("the {kind} is empty")));
    }
    if value.chars().count() > MAX_ID_CHARS {
        return Err(Error::invalid_input(format!(
            "the {kind} is longer than {MAX_ID_CHARS} characters"
        )));
    }
    if let Some(bad) = value.chars().find(|c| matches!(c, '/' | '\\' | '#' | '?')) {
        return Err(Error::invalid_input(format!(
            "the {kind} `{value}` contains `{bad}`; Cosmos DB ids must not contain / \\ # or ?"
        )));
    }
    if is_dot_segment(value) {
        return Err(Error::invalid_input(format!(
            "the {kind} `{value}` is a `.` or `..` path segment (after URL decoding), which URLs \
             cannot address: the request would reach the parent resource; choose another {kind}"
        )));
    }
    Ok(())
}

/// Checks a partition key path such as `/runId`: starts with `/`, names a property.
pub(crate) fn validate_partition_key_path(path: &str) -> Result<(), Error> {
    if !path.starts_with('/') || path.len() < 2 || path.ends_with('/') {
        return Err(Error::invalid_input(format!(
            "partition key path `{path}` must look like `/property` (e.g. `/runId`)"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn header_is_a_json_array_in_ascii() {
        assert_eq!(PartitionKey::from("run-1").header_value(), r#"["run-1"]"#);
        assert_eq!(PartitionKey::from(7).header_value(), "[7]");
        assert_eq!(PartitionKey::from("a\"b").header_value(), r#"["a\"b"]"#);
        assert_eq!(
            PartitionKey::from("ü😀").header_value(),
            r#"["\u00fc\ud83d\ude00"]"#
        );
        let parsed: Value =
            serde_json::from_str(&PartitionKey::from("ü😀").header_value()).unwrap();
        assert_eq!(parsed, json!(["ü😀"]));
    }

    #[test]
    fn composite_values_are_not_partition_keys() {
        assert!(PartitionKey::from_json(json!(["a"])).is_err());
        assert!(PartitionKey::from_json(json!({"a": 1})).is_err());
        assert!(PartitionKey::from_json(Value::Null).is_ok());
    }

    #[test]
    fn ids_with_url_characters_are_refused() {
        for bad in ["a/b", "a\\b", "a#b", "a?b", ""] {
            assert!(
                matches!(validate_document_id(bad), Err(Error::InvalidInput(_))),
                "{bad}"
            );
        }
        assert!(validate_document_id(&"x".repeat(256)).is_err());
        assert!(validate_document_id("run-1 step:ä").is_ok());
        assert!(validate_resource_name("database", "db ").is_err());
    }

    #[test]
    fn partition_key_paths_name_a_property() {
        assert!(validate_partition_key_path("/runId").is_ok());
        for bad in ["runId", "/", "/a/", ""] {
            assert!(validate_partition_key_path(bad).is_err(), "{bad}");
        }
    }
}
