//! Edge conditions and transforms (spec §2.8): the exact Flowcraft `PropertyEvaluator` and a
//! sandboxed AST evaluator with JavaScript-like semantics. Both parse once (at blueprint load)
//! and evaluate many times; neither executes code, panics, or reads anything but own keys.
//!
//! ```
//! use flowcraft_azure::flow::expr::{EvaluatorKind, Expression};
//! let scope = serde_json::json!({"order": {"total": 12}});
//! let scope = scope.as_object().cloned().unwrap_or_default();
//! let e = Expression::parse(EvaluatorKind::Safe, "order.total > 10 && 'big'").unwrap();
//! assert_eq!(e.evaluate(&scope), Some(serde_json::json!("big")));
//! ```

mod js;
mod property;
mod safe;

use serde_json::{Map, Value};
use std::fmt;
use std::str::FromStr;

/// Longest accepted expression source, in bytes; longer input is a parse error.
pub const MAX_SOURCE_LEN: usize = 4096;
/// Deepest accepted nesting (parentheses, brackets, unary operators, `?:`) of a safe expression.
pub const MAX_NESTING: usize = 64;

/// Which expression language compiles a blueprint's conditions and transforms.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum EvaluatorKind {
    /// Flowcraft's default `PropertyEvaluator`: dotted paths only (`result.output.ok`).
    #[default]
    Property,
    /// The sandboxed AST evaluator: literals, paths, `[]`, comparison, logic, arithmetic, `?:`.
    Safe,
}

impl EvaluatorKind {
    /// The name used in blueprint metadata and on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            EvaluatorKind::Property => "property",
            EvaluatorKind::Safe => "safe",
        }
    }
}

impl fmt::Display for EvaluatorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for EvaluatorKind {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "property" => Ok(EvaluatorKind::Property),
            "safe" => Ok(EvaluatorKind::Safe),
            other => Err(format!(
                "unknown evaluator '{other}': expected \"property\" or \"safe\""
            )),
        }
    }
}

/// What an expression can see at top level. Lookups are by own key only, so names such as
/// `__proto__` or `constructor` resolve to nothing unless the scope really has that key.
pub trait Scope {
    /// The value stored under `key`, if the scope has that own key.
    fn lookup(&self, key: &str) -> Option<&Value>;
}

impl Scope for Map<String, Value> {
    fn lookup(&self, key: &str) -> Option<&Value> {
        self.get(key)
    }
}

/// An expression failed to parse: what is wrong and the byte offset where it was noticed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExprError {
    /// What is wrong, in words.
    pub message: String,
    /// Byte offset into the source where the problem was found.
    pub offset: usize,
}

impl ExprError {
    pub(crate) fn new(message: impl Into<String>, offset: usize) -> Self {
        ExprError {
            message: message.into(),
            offset,
        }
    }
}

impl fmt::Display for ExprError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (at offset {})", self.message, self.offset)
    }
}

impl std::error::Error for ExprError {}

/// The compiled form, per evaluator.
#[derive(Debug, Clone, PartialEq)]
enum Compiled {
    Property(property::PropertyPath),
    Safe(safe::Ast),
    /// An empty transform: present (so it counts as a transform) but always `undefined`.
    Undefined,
}

/// A parsed expression. Parsing rejects malformed input (and input longer than
/// [`MAX_SOURCE_LEN`] or nested deeper than [`MAX_NESTING`]); evaluation never fails: like
/// Flowcraft, a runtime error (e.g. reading a property of `null`) yields `undefined` (`None`).
#[derive(Debug, Clone, PartialEq)]
pub struct Expression {
    source: String,
    compiled: Compiled,
}

impl Expression {
    /// Parses `source` for the given evaluator.
    pub fn parse(kind: EvaluatorKind, source: &str) -> Result<Expression, ExprError> {
        if source.len() > MAX_SOURCE_LEN {
            return Err(ExprError::new(
                format!(
                    "expression is {} bytes long; the limit is {MAX_SOURCE_LEN}",
                    source.len()
                ),
                MAX_SOURCE_LEN,
            ));
        }
        let compiled = match kind {
            EvaluatorKind::Property => Compiled::Property(property::PropertyPath::parse(source)?),
            EvaluatorKind::Safe => Compiled::Safe(safe::Ast::parse(source)?),
        };
        Ok(Expression {
            source: source.to_owned(),
            compiled,
        })
    }

    /// The expression an empty-string transform stands for: present, always `undefined`
    /// (spec §1.4: an empty transform still counts as a transform).
    pub fn undefined() -> Expression {
        Expression {
            source: String::new(),
            compiled: Compiled::Undefined,
        }
    }

    /// Evaluates against `scope`; `None` is JavaScript's `undefined`.
    pub fn evaluate(&self, scope: &dyn Scope) -> Option<Value> {
        match &self.compiled {
            Compiled::Property(path) => path.evaluate(scope).map(std::borrow::Cow::into_owned),
            Compiled::Safe(ast) => ast.evaluate(scope),
            Compiled::Undefined => None,
        }
    }

    /// The text the expression was parsed from.
    pub fn source(&self) -> &str {
        &self.source
    }
}

/// JavaScript truthiness of a JSON value (`None` is `undefined`): `false`, `0`, `NaN`, `""`,
/// `null` and `undefined` are falsy; everything else, including `[]` and `{}`, is truthy.
pub fn truthy(value: Option<&Value>) -> bool {
    value.is_some_and(|v| js::Val::from_json(v).truthy())
}

/// Reads a dotted `path` inside `value` as the property evaluator reads the segments after
/// the first one: own keys, canonical array indices and `length` (arrays and strings);
/// `None` (undefined) as soon as a step is missing or steps into null. Used by input
/// resolution (spec 2.7) for `inputs` such as `order.items.0` or `order.items.length`.
pub(crate) fn read_path(value: &Value, path: &str) -> Option<Value> {
    js::walk(std::borrow::Cow::Borrowed(value), path.split('.')).map(|v| v.into_owned())
}

#[cfg(test)]
mod tests;
