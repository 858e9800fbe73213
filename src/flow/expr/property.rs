//! Flowcraft's default `PropertyEvaluator`, exactly: dotted paths over `[A-Za-z0-9_$.]`, the
//! first segment an own key of the scope, later segments own keys, array indices or `length`.

use super::js;
use super::{ExprError, Scope};
use serde_json::Value;
use std::borrow::Cow;

/// A parsed dotted path (`result.output.items.0.name`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct PropertyPath {
    segments: Vec<String>,
}

impl PropertyPath {
    /// Accepts exactly what Flowcraft's evaluator accepts: one or more of `[A-Za-z0-9_$.]`.
    pub(super) fn parse(source: &str) -> Result<PropertyPath, ExprError> {
        if source.is_empty() {
            return Err(ExprError::new("empty expression", 0));
        }
        let allowed = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == '$' || c == '.';
        if let Some((offset, c)) = source.char_indices().find(|&(_, c)| !allowed(c)) {
            return Err(ExprError::new(
                format!(
                    "character {c:?} is not allowed: the property evaluator accepts only dotted \
                     paths of letters, digits, '_' and '$' (set metadata \"evaluator\": \"safe\" \
                     for operators)"
                ),
                offset,
            ));
        }
        Ok(PropertyPath {
            segments: source.split('.').map(str::to_owned).collect(),
        })
    }

    /// Walks the path; `None` (undefined) as soon as a key is missing or a value is null.
    pub(super) fn evaluate<'a>(&self, scope: &'a dyn Scope) -> Option<Cow<'a, Value>> {
        let (first, rest) = self.segments.split_first()?;
        js::walk(
            Cow::Borrowed(scope.lookup(first)?),
            rest.iter().map(String::as_str),
        )
    }
}
