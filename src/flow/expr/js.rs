//! JavaScript value semantics over JSON data, shared by both evaluators: own-key member reads,
//! truthiness, `ToNumber`, `ToString`, `ToPrimitive`, loose and strict equality, ordering.

use serde_json::Value;
use std::borrow::Cow;
use std::cmp::Ordering;

/// Deepest array nesting rendered by `ToString` (`[[1,[2]]]` -> "1,2"); deeper parts render as "".
const MAX_TO_STRING_DEPTH: usize = 32;

/// Longest string `+` may build (bytes); longer concatenations fail the evaluation.
pub(super) const MAX_STRING_LEN: usize = 1 << 24;

/// A JavaScript value during evaluation. Arrays and objects are borrowed from the scope, so
/// strict equality between them is reference identity, as in JavaScript.
#[derive(Debug, Clone)]
pub(super) enum Val<'a> {
    Undefined,
    Null,
    Bool(bool),
    Num(f64),
    /// A number from the scope, kept as written so it round-trips exactly (large integers).
    JsonNum(&'a Value, f64),
    Str(Cow<'a, str>),
    /// An array or object from the scope.
    Ref(&'a Value),
}

impl<'a> Val<'a> {
    /// Wraps a borrowed JSON value.
    pub(super) fn from_json(value: &'a Value) -> Val<'a> {
        match value {
            Value::Null => Val::Null,
            Value::Bool(b) => Val::Bool(*b),
            Value::Number(n) => Val::JsonNum(value, n.as_f64().unwrap_or(f64::NAN)),
            Value::String(s) => Val::Str(Cow::Borrowed(s.as_str())),
            Value::Array(_) | Value::Object(_) => Val::Ref(value),
        }
    }

    /// Wraps a member read result (borrowed data or a computed number/string).
    pub(super) fn from_cow(value: Cow<'a, Value>) -> Val<'a> {
        match value {
            Cow::Borrowed(v) => Val::from_json(v),
            Cow::Owned(Value::String(s)) => Val::Str(Cow::Owned(s)),
            Cow::Owned(Value::Number(n)) => Val::Num(n.as_f64().unwrap_or(f64::NAN)),
            Cow::Owned(Value::Bool(b)) => Val::Bool(b),
            // Member reads only compute numbers and strings; anything else reads as undefined.
            Cow::Owned(_) => Val::Undefined,
        }
    }

    /// Converts back to JSON; `None` is `undefined`. `NaN` and infinities become `null`
    /// (as `JSON.stringify` does) and integral numbers stay integers.
    pub(super) fn into_json(self) -> Option<Value> {
        match self {
            Val::Undefined => None,
            Val::Null => Some(Value::Null),
            Val::Bool(b) => Some(Value::Bool(b)),
            Val::Num(f) => Some(number_to_json(f)),
            Val::JsonNum(v, _) => Some(v.clone()),
            Val::Str(s) => Some(Value::String(s.into_owned())),
            Val::Ref(v) => Some(v.clone()),
        }
    }

    /// JavaScript truthiness.
    pub(super) fn truthy(&self) -> bool {
        match self {
            Val::Undefined | Val::Null => false,
            Val::Bool(b) => *b,
            Val::Num(f) | Val::JsonNum(_, f) => *f != 0.0 && !f.is_nan(),
            Val::Str(s) => !s.is_empty(),
            Val::Ref(_) => true,
        }
    }

    /// Scope numbers as plain numbers, for the comparison algorithms.
    fn normalized(&self) -> Val<'a> {
        match self {
            Val::JsonNum(_, f) => Val::Num(*f),
            other => other.clone(),
        }
    }

    /// `ToPrimitive` (default hint): arrays join their elements, objects are "[object Object]".
    pub(super) fn to_primitive(&self) -> Val<'a> {
        match self {
            Val::Ref(v) => Val::Str(Cow::Owned(json_to_string(v, 0))),
            other => other.clone(),
        }
    }

    /// `ToNumber`.
    pub(super) fn to_number(&self) -> f64 {
        match self {
            Val::Undefined => f64::NAN,
            Val::Null => 0.0,
            Val::Bool(b) => f64::from(u8::from(*b)),
            Val::Num(f) | Val::JsonNum(_, f) => *f,
            Val::Str(s) => string_to_number(s),
            Val::Ref(_) => self.to_primitive().to_number(),
        }
    }

    /// `ToString`.
    pub(super) fn to_js_string(&self) -> Cow<'a, str> {
        match self {
            Val::Undefined => Cow::Borrowed("undefined"),
            Val::Null => Cow::Borrowed("null"),
            Val::Bool(true) => Cow::Borrowed("true"),
            Val::Bool(false) => Cow::Borrowed("false"),
            Val::Num(f) | Val::JsonNum(_, f) => Cow::Owned(number_to_string(*f)),
            Val::Str(s) => s.clone(),
            Val::Ref(v) => Cow::Owned(json_to_string(v, 0)),
        }
    }
}

/// Reads own property `key` of a JSON value: object own keys, array indices and `length`,
/// string indices and `length`. Anything else (including inherited members) is `None`.
pub(super) fn member<'a>(base: &'a Value, key: &str) -> Option<Cow<'a, Value>> {
    match base {
        Value::Object(map) => map.get(key).map(Cow::Borrowed),
        Value::Array(items) => {
            if key == "length" {
                Some(Cow::Owned(Value::from(items.len())))
            } else {
                array_index(key)
                    .and_then(|i| items.get(i))
                    .map(Cow::Borrowed)
            }
        }
        Value::String(s) => string_member(s, key).map(Cow::Owned),
        Value::Null | Value::Bool(_) | Value::Number(_) => None,
    }
}

/// Walks `segments` from `start` with JavaScript property reads limited to own members
/// ([`member`]); `None` (undefined) as soon as a step is missing or steps into null. Values
/// computed on the way (lengths, characters) have no members except a string's own.
pub(super) fn walk<'a, 's>(
    start: Cow<'a, Value>,
    segments: impl IntoIterator<Item = &'s str>,
) -> Option<Cow<'a, Value>> {
    let mut current = start;
    for segment in segments {
        current = match current {
            Cow::Borrowed(v) => member(v, segment)?,
            Cow::Owned(Value::String(s)) => Cow::Owned(string_member(&s, segment)?),
            Cow::Owned(_) => return None,
        };
    }
    Some(current)
}

/// `length` (UTF-16 code units, as in JavaScript) or the character at a UTF-16 index of a
/// string. An index that falls inside a surrogate pair reads as `None`.
pub(super) fn string_member(s: &str, key: &str) -> Option<Value> {
    if key == "length" {
        return Some(Value::from(s.encode_utf16().count()));
    }
    let unit = s.encode_utf16().nth(array_index(key)?)?;
    char::from_u32(u32::from(unit)).map(|c| Value::String(c.to_string()))
}

/// A canonical array index ("0", "17"; not "01", "-1" or "1.0").
fn array_index(key: &str) -> Option<usize> {
    if key.is_empty() || !key.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    if key.len() > 1 && key.starts_with('0') {
        return None;
    }
    key.parse::<usize>().ok()
}

/// JSON number for an f64 result: integers as integers, non-finite as `null`.
pub(super) fn number_to_json(f: f64) -> Value {
    const MAX_SAFE: f64 = 9_007_199_254_740_991.0;
    if !f.is_finite() {
        return Value::Null;
    }
    if f.fract() == 0.0 && f.abs() <= MAX_SAFE {
        // Exact: integral and within the safe-integer range (-0 becomes 0).
        return Value::from(f as i64);
    }
    serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)
}

/// JavaScript `Number.prototype.toString()` for the common cases.
pub(super) fn number_to_string(f: f64) -> String {
    if f.is_nan() {
        return "NaN".to_owned();
    }
    if f.is_infinite() {
        return if f > 0.0 { "Infinity" } else { "-Infinity" }.to_owned();
    }
    if f == 0.0 {
        return "0".to_owned();
    }
    let abs = f.abs();
    if (1e-6..1e21).contains(&abs) {
        // Rust's Display prints the shortest round-trip digits without an exponent.
        return format!("{f}");
    }
    let s = format!("{f:e}");
    match s.split_once('e') {
        Some((mantissa, exp)) if !exp.starts_with('-') => format!("{mantissa}e+{exp}"),
        _ => s,
    }
}

/// JavaScript `ToNumber` on a string: trimmed; empty is 0; decimal, `Infinity`, or a
/// `0x`/`0o`/`0b` integer; anything else is `NaN`.
pub(super) fn string_to_number(s: &str) -> f64 {
    let t = s.trim_matches(|c: char| c.is_whitespace() || c == '\u{feff}');
    if t.is_empty() {
        return 0.0;
    }
    match t {
        "Infinity" | "+Infinity" => return f64::INFINITY,
        "-Infinity" => return f64::NEG_INFINITY,
        _ => {}
    }
    let radix = match t.get(..2) {
        Some("0x") | Some("0X") => Some(16),
        Some("0o") | Some("0O") => Some(8),
        Some("0b") | Some("0B") => Some(2),
        _ => None,
    };
    if let Some(radix) = radix {
        let digits = t.get(2..).unwrap_or("");
        if digits.is_empty() {
            return f64::NAN;
        }
        let mut value = 0.0f64;
        for c in digits.chars() {
            match c.to_digit(radix) {
                Some(d) => value = value * f64::from(radix) + f64::from(d),
                None => return f64::NAN,
            }
        }
        return value;
    }
    let allowed = |c: char| c.is_ascii_digit() || matches!(c, '.' | 'e' | 'E' | '+' | '-');
    if !t.chars().all(allowed) {
        return f64::NAN;
    }
    t.parse::<f64>().unwrap_or(f64::NAN)
}

/// `ToString` of an array or object: arrays join their elements with "," (null and
/// undefined as ""), objects are "[object Object]".
fn json_to_string(value: &Value, depth: usize) -> String {
    match value {
        Value::Null => String::new(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => number_to_string(n.as_f64().unwrap_or(f64::NAN)),
        Value::String(s) => s.clone(),
        Value::Object(_) => "[object Object]".to_owned(),
        Value::Array(items) => {
            if depth >= MAX_TO_STRING_DEPTH {
                return String::new();
            }
            let parts: Vec<String> = items
                .iter()
                .map(|item| json_to_string(item, depth + 1))
                .collect();
            parts.join(",")
        }
    }
}

/// `===`: same type and value; arrays and objects by identity; `NaN` equals nothing.
pub(super) fn strict_eq(a: &Val<'_>, b: &Val<'_>) -> bool {
    match (&a.normalized(), &b.normalized()) {
        (Val::Undefined, Val::Undefined) | (Val::Null, Val::Null) => true,
        (Val::Bool(x), Val::Bool(y)) => x == y,
        (Val::Num(x), Val::Num(y)) => x == y,
        (Val::Str(x), Val::Str(y)) => x == y,
        (Val::Ref(x), Val::Ref(y)) => std::ptr::eq(*x, *y),
        _ => false,
    }
}

/// `==`: the abstract equality algorithm restricted to JSON values.
pub(super) fn loose_eq(a: &Val<'_>, b: &Val<'_>) -> bool {
    let (a, b) = (&a.normalized(), &b.normalized());
    match (a, b) {
        (Val::Undefined | Val::Null, Val::Undefined | Val::Null) => true,
        (Val::Undefined | Val::Null, _) | (_, Val::Undefined | Val::Null) => false,
        (Val::Num(x), Val::Str(_)) => *x == b.to_number(),
        (Val::Str(_), Val::Num(y)) => a.to_number() == *y,
        (Val::Bool(_), _) => loose_eq(&Val::Num(a.to_number()), b),
        (_, Val::Bool(_)) => loose_eq(a, &Val::Num(b.to_number())),
        (Val::Ref(_), Val::Num(_) | Val::Str(_)) => loose_eq(&a.to_primitive(), b),
        (Val::Num(_) | Val::Str(_), Val::Ref(_)) => loose_eq(a, &b.to_primitive()),
        _ => strict_eq(a, b),
    }
}

/// Abstract relational comparison: strings by UTF-16 code units, everything else as numbers.
/// `None` when either side is `NaN` (every comparison is then false).
pub(super) fn compare(a: &Val<'_>, b: &Val<'_>) -> Option<Ordering> {
    let (pa, pb) = (a.to_primitive(), b.to_primitive());
    if let (Val::Str(x), Val::Str(y)) = (&pa, &pb) {
        return Some(x.encode_utf16().cmp(y.encode_utf16()));
    }
    pa.to_number().partial_cmp(&pb.to_number())
}

/// `+`: string concatenation when either primitive is a string, numeric addition otherwise.
/// `None` (a thrown error) when the concatenation would exceed [`MAX_STRING_LEN`].
pub(super) fn add<'a>(a: &Val<'a>, b: &Val<'a>) -> Option<Val<'a>> {
    let (pa, pb) = (a.to_primitive(), b.to_primitive());
    if matches!(pa, Val::Str(_)) || matches!(pb, Val::Str(_)) {
        let (sa, sb) = (pa.to_js_string(), pb.to_js_string());
        if sa.len().saturating_add(sb.len()) > MAX_STRING_LEN {
            return None;
        }
        let mut s = sa.into_owned();
        s.push_str(&sb);
        Some(Val::Str(Cow::Owned(s)))
    } else {
        Some(Val::Num(pa.to_number() + pb.to_number()))
    }
}
