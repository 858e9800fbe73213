//! The sandboxed AST evaluator: a small JavaScript expression subset parsed into a tree and
//! interpreted over JSON data. Literals, scope paths, `.name` / `.0` / `[expr]` member reads,
//! `! - +` prefixes, `* / %`, `+ -`, `< <= > >=`, `== != === !==`, `&&`, `||`, `?:` and
//! parentheses, with JavaScript precedence and semantics. No calls, no assignment, no code.

use super::js::{self, Val};
use super::{ExprError, MAX_NESTING, Scope};
use serde_json::Value;
use std::borrow::Cow;
use std::cmp::Ordering;

/// Tallest accepted tree (long `a && b && c ...` chains count too), so evaluation and drop
/// recursion stay shallow.
const MAX_HEIGHT: usize = 256;

/// A parsed safe expression.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Ast {
    root: Node,
}

#[derive(Debug, Clone, PartialEq)]
struct Node {
    height: usize,
    kind: Kind,
}

#[derive(Debug, Clone, PartialEq)]
enum Kind {
    Undefined,
    Null,
    Bool(bool),
    Num(f64),
    Str(String),
    /// A top-level scope key.
    Ident(String),
    /// `base.name` or `base.0`.
    Member(Box<Node>, String),
    /// `base[index]`.
    Index(Box<Node>, Box<Node>),
    Unary(UnaryOp, Box<Node>),
    Binary(BinaryOp, Box<Node>, Box<Node>),
    And(Box<Node>, Box<Node>),
    Or(Box<Node>, Box<Node>),
    Conditional(Box<Node>, Box<Node>, Box<Node>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum UnaryOp {
    Not,
    Neg,
    Plus,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BinaryOp {
    Add,
    Sub,
    Mul,
    Div,
    Rem,
    Lt,
    Le,
    Gt,
    Ge,
    LooseEq,
    LooseNe,
    StrictEq,
    StrictNe,
}

impl Node {
    fn leaf(kind: Kind) -> Node {
        Node { height: 1, kind }
    }

    /// Builds an inner node, rejecting trees taller than [`MAX_HEIGHT`].
    fn inner(kind: Kind, offset: usize) -> Result<Node, ExprError> {
        let height = 1 + match &kind {
            Kind::Member(a, _) | Kind::Unary(_, a) => a.height,
            Kind::Index(a, b) | Kind::Binary(_, a, b) | Kind::And(a, b) | Kind::Or(a, b) => {
                a.height.max(b.height)
            }
            Kind::Conditional(a, b, c) => a.height.max(b.height).max(c.height),
            _ => 0,
        };
        if height > MAX_HEIGHT {
            return Err(ExprError::new(
                format!("expression is too complex (more than {MAX_HEIGHT} levels)"),
                offset,
            ));
        }
        Ok(Node { height, kind })
    }
}

// ---------------------------------------------------------------------------------------------
// Tokens

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Num(f64),
    /// Digits only, lexed right after a `.` (`items.0`).
    Digits(String),
    Str(String),
    Ident(String),
    Punct(&'static str),
    End,
}

const PUNCTUATORS: [&str; 23] = [
    "===", "!==", "==", "!=", "<=", ">=", "&&", "||", "(", ")", "[", "]", ".", "?", ":", "!", "<",
    ">", "+", "-", "*", "/", "%",
];

fn is_ident_start(c: char) -> bool {
    c.is_ascii_alphabetic() || c == '_' || c == '$'
}

fn is_ident_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_' || c == '$'
}

/// Splits `src` into tokens with their byte offsets (the last is `End`).
fn tokenize(src: &str) -> Result<Vec<(Tok, usize)>, ExprError> {
    let mut tokens = Vec::new();
    let mut chars = src.char_indices().peekable();
    while let Some(&(start, c)) = chars.peek() {
        if c.is_whitespace() {
            chars.next();
            continue;
        }
        let after_dot = matches!(tokens.last(), Some((Tok::Punct("."), _)));
        let tok = if c.is_ascii_digit() && after_dot {
            let mut digits = String::new();
            while let Some(&(_, d)) = chars.peek().filter(|(_, d)| d.is_ascii_digit()) {
                digits.push(d);
                chars.next();
            }
            Tok::Digits(digits)
        } else if c.is_ascii_digit() {
            let end = number_end(src, start);
            let text = src.get(start..end).unwrap_or("");
            let value = text
                .parse::<f64>()
                .map_err(|_| ExprError::new(format!("invalid number '{text}'"), start))?;
            while chars.peek().is_some_and(|&(i, _)| i < end) {
                chars.next();
            }
            Tok::Num(value)
        } else if is_ident_start(c) {
            let mut name = String::new();
            while let Some(&(_, d)) = chars.peek().filter(|(_, d)| is_ident_char(*d)) {
                name.push(d);
                chars.next();
            }
            Tok::Ident(name)
        } else if c == '\'' || c == '"' {
            chars.next();
            Tok::Str(lex_string(src, &mut chars, c, start)?)
        } else {
            let rest = src.get(start..).unwrap_or("");
            let p = PUNCTUATORS
                .iter()
                .find(|p| rest.starts_with(**p))
                .ok_or_else(|| ExprError::new(format!("unexpected character {c:?}"), start))?;
            for _ in 0..p.len() {
                chars.next();
            }
            Tok::Punct(p)
        };
        let letter_after = chars.peek().filter(|(_, d)| is_ident_char(*d));
        if let (Tok::Num(_) | Tok::Digits(_), Some(&(i, _))) = (&tok, letter_after) {
            return Err(ExprError::new("a number cannot be followed by a letter", i));
        }
        tokens.push((tok, start));
    }
    tokens.push((Tok::End, src.len()));
    Ok(tokens)
}

/// End offset of a decimal literal starting at `start`: digits, optional fraction, optional
/// exponent (only consumed when well formed).
fn number_end(src: &str, start: usize) -> usize {
    let bytes = src.as_bytes();
    let digits_from = |mut i: usize| {
        while bytes.get(i).is_some_and(u8::is_ascii_digit) {
            i += 1;
        }
        i
    };
    let mut end = digits_from(start);
    if bytes.get(end) == Some(&b'.') && bytes.get(end + 1).is_some_and(u8::is_ascii_digit) {
        end = digits_from(end + 1);
    }
    if matches!(bytes.get(end), Some(b'e' | b'E')) {
        let mut i = end + 1;
        if matches!(bytes.get(i), Some(b'+' | b'-')) {
            i += 1;
        }
        if bytes.get(i).is_some_and(u8::is_ascii_digit) {
            end = digits_from(i);
        }
    }
    end
}

/// Reads a quoted string after its opening quote, decoding JavaScript escapes.
fn lex_string(
    src: &str,
    chars: &mut std::iter::Peekable<std::str::CharIndices<'_>>,
    quote: char,
    start: usize,
) -> Result<String, ExprError> {
    let mut out = String::new();
    loop {
        let Some((i, c)) = chars.next() else {
            return Err(ExprError::new("unterminated string", start));
        };
        match c {
            c if c == quote => return Ok(out),
            '\n' | '\r' => return Err(ExprError::new("line break inside a string", i)),
            '\\' => {
                let Some((j, e)) = chars.next() else {
                    return Err(ExprError::new("unterminated string", start));
                };
                match e {
                    'n' => out.push('\n'),
                    't' => out.push('\t'),
                    'r' => out.push('\r'),
                    'b' => out.push('\u{8}'),
                    'f' => out.push('\u{c}'),
                    'v' => out.push('\u{b}'),
                    '0' => out.push('\0'),
                    'x' => out.push(hex_escape(src, chars, 2, j)?),
                    'u' => out.push(hex_escape(src, chars, 4, j)?),
                    other => out.push(other),
                }
            }
            other => out.push(other),
        }
    }
}

/// Decodes `count` hex digits of a `\x` / `\u` escape; lone surrogates become U+FFFD.
fn hex_escape(
    src: &str,
    chars: &mut std::iter::Peekable<std::str::CharIndices<'_>>,
    count: usize,
    at: usize,
) -> Result<char, ExprError> {
    let mut code = 0u32;
    for _ in 0..count {
        let digit = chars.next().and_then(|(_, h)| h.to_digit(16));
        match digit {
            Some(d) => code = code * 16 + d,
            None => return Err(ExprError::new("invalid escape sequence", at)),
        }
    }
    // A high surrogate followed by `\uDC00..` forms one character.
    if (0xD800..0xDC00).contains(&code) {
        let rest = src.get(at + 5..).unwrap_or("");
        if let Some(low) = rest
            .strip_prefix("\\u")
            .and_then(|r| r.get(..4))
            .and_then(|h| u32::from_str_radix(h, 16).ok())
            .filter(|low| (0xDC00..0xE000).contains(low))
        {
            for _ in 0..6 {
                chars.next();
            }
            let combined = 0x10000 + ((code - 0xD800) << 10) + (low - 0xDC00);
            return Ok(char::from_u32(combined).unwrap_or('\u{fffd}'));
        }
    }
    Ok(char::from_u32(code).unwrap_or('\u{fffd}'))
}

// ---------------------------------------------------------------------------------------------
// Parser (recursive descent, JavaScript precedence)

struct Parser {
    tokens: Vec<(Tok, usize)>,
    pos: usize,
    depth: usize,
}

impl Parser {
    fn peek(&self) -> &Tok {
        self.tokens.get(self.pos).map_or(&Tok::End, |(t, _)| t)
    }

    fn offset(&self) -> usize {
        self.tokens.get(self.pos).map_or(0, |(_, o)| *o)
    }

    fn next(&mut self) -> Tok {
        let tok = self.peek().clone();
        if self.pos < self.tokens.len() {
            self.pos += 1;
        }
        tok
    }

    fn eat(&mut self, punct: &str) -> bool {
        if matches!(self.peek(), Tok::Punct(p) if *p == punct) {
            self.pos += 1;
            true
        } else {
            false
        }
    }

    fn expect(&mut self, punct: &str) -> Result<(), ExprError> {
        if self.eat(punct) {
            Ok(())
        } else {
            Err(self.unexpected(&format!("expected '{punct}'")))
        }
    }

    fn unexpected(&self, what: &str) -> ExprError {
        let found = match self.peek() {
            Tok::End => "end of expression".to_owned(),
            Tok::Num(n) => format!("number {n}"),
            Tok::Digits(d) => format!("number {d}"),
            Tok::Str(_) => "a string".to_owned(),
            Tok::Ident(name) => format!("'{name}'"),
            Tok::Punct(p) => format!("'{p}'"),
        };
        ExprError::new(format!("{what}, found {found}"), self.offset())
    }

    /// Guards recursion: nesting deeper than [`MAX_NESTING`] is a parse error.
    fn nested<T>(
        &mut self,
        f: impl FnOnce(&mut Self) -> Result<T, ExprError>,
    ) -> Result<T, ExprError> {
        if self.depth >= MAX_NESTING {
            return Err(ExprError::new(
                format!("expression nests deeper than {MAX_NESTING} levels"),
                self.offset(),
            ));
        }
        self.depth += 1;
        let result = f(self);
        self.depth -= 1;
        result
    }

    fn conditional(&mut self) -> Result<Node, ExprError> {
        self.nested(|p| {
            let test = p.or()?;
            let at = p.offset();
            if !p.eat("?") {
                return Ok(test);
            }
            let yes = p.conditional()?;
            p.expect(":")?;
            let no = p.conditional()?;
            Node::inner(
                Kind::Conditional(Box::new(test), Box::new(yes), Box::new(no)),
                at,
            )
        })
    }

    fn or(&mut self) -> Result<Node, ExprError> {
        let mut left = self.and()?;
        loop {
            let at = self.offset();
            if !self.eat("||") {
                return Ok(left);
            }
            let right = self.and()?;
            left = Node::inner(Kind::Or(Box::new(left), Box::new(right)), at)?;
        }
    }

    fn and(&mut self) -> Result<Node, ExprError> {
        let mut left = self.binary_level(0)?;
        loop {
            let at = self.offset();
            if !self.eat("&&") {
                return Ok(left);
            }
            let right = self.binary_level(0)?;
            left = Node::inner(Kind::And(Box::new(left), Box::new(right)), at)?;
        }
    }

    /// Left-associative binary levels, loosest first: equality, relational, additive,
    /// multiplicative.
    fn binary_level(&mut self, level: usize) -> Result<Node, ExprError> {
        const LEVELS: [&[(&str, BinaryOp)]; 4] = [
            &[
                ("===", BinaryOp::StrictEq),
                ("!==", BinaryOp::StrictNe),
                ("==", BinaryOp::LooseEq),
                ("!=", BinaryOp::LooseNe),
            ],
            &[
                ("<=", BinaryOp::Le),
                (">=", BinaryOp::Ge),
                ("<", BinaryOp::Lt),
                (">", BinaryOp::Gt),
            ],
            &[("+", BinaryOp::Add), ("-", BinaryOp::Sub)],
            &[
                ("*", BinaryOp::Mul),
                ("/", BinaryOp::Div),
                ("%", BinaryOp::Rem),
            ],
        ];
        let Some(ops) = LEVELS.get(level) else {
            return self.unary();
        };
        let mut left = self.binary_level(level + 1)?;
        loop {
            let at = self.offset();
            let Some(&(_, op)) = ops
                .iter()
                .find(|(p, _)| matches!(self.peek(), Tok::Punct(t) if t == p))
            else {
                return Ok(left);
            };
            self.pos += 1;
            let right = self.binary_level(level + 1)?;
            left = Node::inner(Kind::Binary(op, Box::new(left), Box::new(right)), at)?;
        }
    }

    fn unary(&mut self) -> Result<Node, ExprError> {
        let at = self.offset();
        let op = match self.peek() {
            Tok::Punct("!") => UnaryOp::Not,
            Tok::Punct("-") => UnaryOp::Neg,
            Tok::Punct("+") => UnaryOp::Plus,
            _ => return self.postfix(),
        };
        self.pos += 1;
        let operand = self.nested(Self::unary)?;
        Node::inner(Kind::Unary(op, Box::new(operand)), at)
    }

    fn postfix(&mut self) -> Result<Node, ExprError> {
        let mut node = self.primary()?;
        loop {
            let at = self.offset();
            if self.eat(".") {
                let key = match self.next() {
                    Tok::Ident(name) => name,
                    Tok::Digits(d) => d,
                    _ => {
                        self.pos -= 1;
                        return Err(self.unexpected("expected a property name after '.'"));
                    }
                };
                node = Node::inner(Kind::Member(Box::new(node), key), at)?;
            } else if self.eat("[") {
                let index = self.conditional()?;
                self.expect("]")?;
                node = Node::inner(Kind::Index(Box::new(node), Box::new(index)), at)?;
            } else {
                return Ok(node);
            }
        }
    }

    fn primary(&mut self) -> Result<Node, ExprError> {
        match self.peek().clone() {
            Tok::Num(n) => {
                self.pos += 1;
                Ok(Node::leaf(Kind::Num(n)))
            }
            Tok::Str(s) => {
                self.pos += 1;
                Ok(Node::leaf(Kind::Str(s)))
            }
            Tok::Ident(name) => {
                self.pos += 1;
                Ok(Node::leaf(match name.as_str() {
                    "true" => Kind::Bool(true),
                    "false" => Kind::Bool(false),
                    "null" => Kind::Null,
                    "undefined" => Kind::Undefined,
                    _ => Kind::Ident(name),
                }))
            }
            Tok::Punct("(") => {
                self.pos += 1;
                let inner = self.conditional()?;
                self.expect(")")?;
                Ok(inner)
            }
            _ => Err(self.unexpected("expected a value")),
        }
    }
}

impl Ast {
    /// Parses a whole expression; trailing tokens are an error.
    pub(super) fn parse(source: &str) -> Result<Ast, ExprError> {
        let tokens = tokenize(source)?;
        if tokens.len() <= 1 {
            return Err(ExprError::new("empty expression", 0));
        }
        let mut parser = Parser {
            tokens,
            pos: 0,
            depth: 0,
        };
        let root = parser.conditional()?;
        if *parser.peek() != Tok::End {
            return Err(parser.unexpected("expected an operator or the end"));
        }
        Ok(Ast { root })
    }

    /// Evaluates; a JavaScript runtime error (a member read on null/undefined, an oversized
    /// string) makes the whole expression `undefined`, as Flowcraft's evaluators do.
    pub(super) fn evaluate(&self, scope: &dyn Scope) -> Option<Value> {
        eval(&self.root, scope).ok().and_then(Val::into_json)
    }
}

// ---------------------------------------------------------------------------------------------
// Interpreter

/// A JavaScript exception during evaluation (TypeError and the like).
struct Thrown;

fn eval<'a>(node: &'a Node, scope: &'a dyn Scope) -> Result<Val<'a>, Thrown> {
    Ok(match &node.kind {
        Kind::Undefined => Val::Undefined,
        Kind::Null => Val::Null,
        Kind::Bool(b) => Val::Bool(*b),
        Kind::Num(n) => Val::Num(*n),
        Kind::Str(s) => Val::Str(Cow::Borrowed(s.as_str())),
        Kind::Ident(name) => scope.lookup(name).map_or(Val::Undefined, Val::from_json),
        Kind::Member(base, key) => member(eval(base, scope)?, key)?,
        Kind::Index(base, index) => {
            let base = eval(base, scope)?;
            let key = eval(index, scope)?.to_js_string();
            member(base, &key)?
        }
        Kind::Unary(op, operand) => {
            let v = eval(operand, scope)?;
            match op {
                UnaryOp::Not => Val::Bool(!v.truthy()),
                UnaryOp::Neg => Val::Num(-v.to_number()),
                UnaryOp::Plus => Val::Num(v.to_number()),
            }
        }
        Kind::And(a, b) => {
            let left = eval(a, scope)?;
            if left.truthy() { eval(b, scope)? } else { left }
        }
        Kind::Or(a, b) => {
            let left = eval(a, scope)?;
            if left.truthy() { left } else { eval(b, scope)? }
        }
        Kind::Conditional(test, yes, no) => {
            if eval(test, scope)?.truthy() {
                eval(yes, scope)?
            } else {
                eval(no, scope)?
            }
        }
        Kind::Binary(op, a, b) => {
            let (l, r) = (eval(a, scope)?, eval(b, scope)?);
            binary(*op, &l, &r)?
        }
    })
}

/// A member read; reading from `null`/`undefined` throws, like JavaScript.
fn member<'a>(base: Val<'a>, key: &str) -> Result<Val<'a>, Thrown> {
    match base {
        Val::Undefined | Val::Null => Err(Thrown),
        Val::Ref(v) => Ok(js::member(v, key).map_or(Val::Undefined, Val::from_cow)),
        Val::Str(s) => {
            Ok(js::string_member(&s, key).map_or(Val::Undefined, |v| Val::from_cow(Cow::Owned(v))))
        }
        Val::Bool(_) | Val::Num(_) | Val::JsonNum(..) => Ok(Val::Undefined),
    }
}

fn binary<'a>(op: BinaryOp, l: &Val<'a>, r: &Val<'a>) -> Result<Val<'a>, Thrown> {
    let ordered = |pred: fn(Ordering) -> bool| Val::Bool(js::compare(l, r).is_some_and(pred));
    Ok(match op {
        BinaryOp::Add => js::add(l, r).ok_or(Thrown)?,
        BinaryOp::Sub => Val::Num(l.to_number() - r.to_number()),
        BinaryOp::Mul => Val::Num(l.to_number() * r.to_number()),
        BinaryOp::Div => Val::Num(l.to_number() / r.to_number()),
        // Rust's `%` on f64 is C fmod, which is JavaScript's `%` (sign of the dividend).
        BinaryOp::Rem => Val::Num(l.to_number() % r.to_number()),
        BinaryOp::Lt => ordered(Ordering::is_lt),
        BinaryOp::Le => ordered(Ordering::is_le),
        BinaryOp::Gt => ordered(Ordering::is_gt),
        BinaryOp::Ge => ordered(Ordering::is_ge),
        BinaryOp::LooseEq => Val::Bool(js::loose_eq(l, r)),
        BinaryOp::LooseNe => Val::Bool(!js::loose_eq(l, r)),
        BinaryOp::StrictEq => Val::Bool(js::strict_eq(l, r)),
        BinaryOp::StrictNe => Val::Bool(!js::strict_eq(l, r)),
    })
}
