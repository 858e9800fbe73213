//! Cosmos DB partial document update (PATCH): operations, JSON-pointer paths with `~0`/`~1`
//! escaping, the 10-operation limit and the optional filter predicate (`condition`).

use serde_json::{Map, Number, Value};

use crate::error::Error;

/// The most operations one PATCH request may carry.
pub const MAX_PATCH_OPERATIONS: usize = 10;

/// A JSON pointer (RFC 6901) to a property of a document, e.g. `/_outputs.a` or `/a~1b`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PatchPath(String);

impl PatchPath {
    /// The path of one top-level property; `/` and `~` in the name are escaped (`~1`, `~0`),
    /// so any property name is addressed exactly.
    pub fn property(name: &str) -> Self {
        Self::from_segments([name])
    }

    /// The path through nested properties (or array indexes, or `-` to append), each segment
    /// escaped.
    pub fn from_segments<'a>(segments: impl IntoIterator<Item = &'a str>) -> Self {
        let mut path = String::new();
        for segment in segments {
            path.push('/');
            path.push_str(&escape_segment(segment));
        }
        PatchPath(path)
    }

    /// This path extended by one escaped segment.
    pub fn child(&self, segment: &str) -> Self {
        PatchPath(format!("{}/{}", self.0, escape_segment(segment)))
    }

    /// An already-escaped pointer such as `/a/b~1c`. It must start with `/`, name at least one
    /// segment, and use `~` only as `~0` or `~1`.
    pub fn pointer(pointer: &str) -> Result<Self, Error> {
        let bad_tilde = pointer
            .match_indices('~')
            .any(|(i, _)| !matches!(pointer.as_bytes().get(i + 1), Some(b'0' | b'1')));
        if !pointer.starts_with('/') || pointer.len() < 2 || bad_tilde {
            return Err(Error::invalid_input(format!(
                "`{pointer}` is not a JSON pointer to a property: it must start with `/` and \
                 escape `~` as `~0` and `/` inside names as `~1`"
            )));
        }
        Ok(PatchPath(pointer.to_string()))
    }

    /// The pointer text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

fn escape_segment(segment: &str) -> String {
    segment.replace('~', "~0").replace('/', "~1")
}

/// One PATCH operation.
#[derive(Debug, Clone, PartialEq)]
pub enum PatchOperation {
    /// Sets a property, creating it if absent.
    Set {
        /// Where.
        path: PatchPath,
        /// The new value.
        value: Value,
    },
    /// Adds a property (or inserts into an array; `-` appends).
    Add {
        /// Where.
        path: PatchPath,
        /// The value to add.
        value: Value,
    },
    /// Replaces a property that must exist.
    Replace {
        /// Where.
        path: PatchPath,
        /// The new value.
        value: Value,
    },
    /// Removes a property that must exist.
    Remove {
        /// Where.
        path: PatchPath,
    },
    /// Adds a number to a numeric property (creating it if absent).
    Increment {
        /// Where.
        path: PatchPath,
        /// The amount (may be negative).
        by: Number,
    },
}

impl PatchOperation {
    /// `set` operation.
    pub fn set(path: PatchPath, value: Value) -> Self {
        PatchOperation::Set { path, value }
    }

    /// `add` operation.
    pub fn add(path: PatchPath, value: Value) -> Self {
        PatchOperation::Add { path, value }
    }

    /// `replace` operation.
    pub fn replace(path: PatchPath, value: Value) -> Self {
        PatchOperation::Replace { path, value }
    }

    /// `remove` operation.
    pub fn remove(path: PatchPath) -> Self {
        PatchOperation::Remove { path }
    }

    /// `incr` operation by an integer.
    pub fn increment(path: PatchPath, by: i64) -> Self {
        PatchOperation::Increment {
            path,
            by: Number::from(by),
        }
    }

    fn to_json(&self) -> Value {
        let (op, path, value) = match self {
            PatchOperation::Set { path, value } => ("set", path, Some(value.clone())),
            PatchOperation::Add { path, value } => ("add", path, Some(value.clone())),
            PatchOperation::Replace { path, value } => ("replace", path, Some(value.clone())),
            PatchOperation::Remove { path } => ("remove", path, None),
            PatchOperation::Increment { path, by } => {
                ("incr", path, Some(Value::Number(by.clone())))
            }
        };
        let mut object = Map::new();
        object.insert("op".into(), Value::from(op));
        object.insert("path".into(), Value::from(path.as_str()));
        if let Some(value) = value {
            object.insert("value".into(), value);
        }
        Value::Object(object)
    }
}

/// A validated PATCH request: 1 to 10 operations and an optional filter predicate.
#[derive(Debug, Clone, PartialEq)]
pub struct PatchRequest {
    operations: Vec<PatchOperation>,
    condition: Option<String>,
}

impl PatchRequest {
    /// A request with these operations; none, or more than 10, is [`Error::InvalidInput`]
    /// (split the update, or use an ETag-guarded replace).
    pub fn new(operations: Vec<PatchOperation>) -> Result<Self, Error> {
        if operations.is_empty() || operations.len() > MAX_PATCH_OPERATIONS {
            return Err(Error::invalid_input(format!(
                "a PATCH carries 1 to {MAX_PATCH_OPERATIONS} operations, not {}; split it or \
                 use an ETag-guarded replace",
                operations.len()
            )));
        }
        Ok(PatchRequest {
            operations,
            condition: None,
        })
    }

    /// Applies the patch only if the document matches `condition`, a filter predicate of the
    /// form `FROM c WHERE <predicate>`; otherwise the service answers 412.
    pub fn with_condition(mut self, condition: &str) -> Result<Self, Error> {
        let trimmed = condition.trim();
        let starts_with_from = trimmed
            .get(..5)
            .is_some_and(|head| head.eq_ignore_ascii_case("from "));
        if !starts_with_from {
            return Err(Error::invalid_input(format!(
                "PATCH condition `{condition}` must have the form `FROM c WHERE <predicate>`"
            )));
        }
        self.condition = Some(trimmed.to_string());
        Ok(self)
    }

    /// The operations.
    pub fn operations(&self) -> &[PatchOperation] {
        &self.operations
    }

    /// The condition, if any.
    pub fn condition(&self) -> Option<&str> {
        self.condition.as_deref()
    }

    /// The request body: `{"condition"?, "operations": [...]}`.
    pub(crate) fn to_body(&self) -> Value {
        let mut body = Map::new();
        if let Some(condition) = &self.condition {
            body.insert("condition".into(), Value::from(condition.as_str()));
        }
        body.insert(
            "operations".into(),
            Value::Array(
                self.operations
                    .iter()
                    .map(PatchOperation::to_json)
                    .collect(),
            ),
        );
        Value::Object(body)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn property_names_are_pointer_escaped() {
        assert_eq!(PatchPath::property("_outputs.a").as_str(), "/_outputs.a");
        assert_eq!(PatchPath::property("a/b~c").as_str(), "/a~1b~0c");
        assert_eq!(PatchPath::property("~1").as_str(), "/~01");
        assert_eq!(PatchPath::from_segments(["list", "-"]).as_str(), "/list/-");
        assert_eq!(PatchPath::property("a").child("b/c").as_str(), "/a/b~1c");
    }

    #[test]
    fn raw_pointers_are_checked() {
        assert!(PatchPath::pointer("/a/b~1c").is_ok());
        for bad in ["", "/", "a", "/a~", "/a~2"] {
            assert!(PatchPath::pointer(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn at_most_ten_operations_and_at_least_one() {
        let op = || PatchOperation::set(PatchPath::property("a"), json!(1));
        assert!(PatchRequest::new(vec![]).is_err());
        assert!(PatchRequest::new((0..10).map(|_| op()).collect()).is_ok());
        let err = PatchRequest::new((0..11).map(|_| op()).collect()).unwrap_err();
        assert!(matches!(err, Error::InvalidInput(_)));
        assert!(err.to_string().contains("not 11"), "{err}");
    }

    #[test]
    fn body_lists_operations_in_order_with_condition() {
        let request = PatchRequest::new(vec![
            PatchOperation::set(PatchPath::property("a"), json!(1)),
            PatchOperation::add(PatchPath::from_segments(["l", "-"]), json!("x")),
            PatchOperation::replace(PatchPath::property("s"), json!("done")),
            PatchOperation::remove(PatchPath::property("b")),
            PatchOperation::increment(PatchPath::property("n"), -2),
        ])
        .unwrap()
        .with_condition("from c where c.status = 'running'")
        .unwrap();
        assert_eq!(
            request.to_body(),
            json!({
                "condition": "from c where c.status = 'running'",
                "operations": [
                    {"op": "set", "path": "/a", "value": 1},
                    {"op": "add", "path": "/l/-", "value": "x"},
                    {"op": "replace", "path": "/s", "value": "done"},
                    {"op": "remove", "path": "/b"},
                    {"op": "incr", "path": "/n", "value": -2}
                ]
            })
        );
    }

    #[test]
    fn conditions_must_be_from_clauses() {
        let request =
            || PatchRequest::new(vec![PatchOperation::remove(PatchPath::property("a"))]).unwrap();
        assert!(request().with_condition("c.a = 1").is_err());
        assert!(request().with_condition("").is_err());
        assert!(request().with_condition("FROM c WHERE c.a = 1").is_ok());
    }
}
