//! The OData `filter` language of Azure Web PubSub: parse and type-check once, match many connections.
//!
//! A filter is a Bool expression over one connection's `userId` (a string, `null` for anonymous
//! connections), `connectionId` (a string) and `groups` (the collection of its group names):
//!
//! ```text
//! or_expr    = and_expr { "or" and_expr }
//! and_expr   = cmp_expr { "and" cmp_expr }
//! cmp_expr   = unary { ("eq"|"ne"|"gt"|"ge"|"lt"|"le") unary | "in" ( "(" or_expr { "," or_expr } ")" | unary ) }
//! unary      = "not" unary | primary
//! primary    = "(" or_expr ")" | literal | identifier | function "(" [ or_expr { "," or_expr } ] ")"
//! literal    = 'string' (quote doubled inside) | [+-]digits | true | false | null
//! ```
//!
//! So `not` binds tighter than the comparisons, which bind tighter than `and`, then `or`:
//! `not length(userId) gt 5` is a type error, as it is in the service.
//!
//! Identifier and function names are case-insensitive; keywords (`and`, `eq`, `true`, `null`, …)
//! are lower-case; comparisons of values are case-sensitive and ordinal (by Unicode code point).
//! Everything that can be checked without a connection is checked by [`Filter::parse`], so a bad
//! filter is refused before any connection is looked at.
//!
//! Nulls follow OData: `eq` is true when both sides are null, `ne` is its negation, ordering
//! comparisons with a null are false, functions of a null are null, and `and`/`or`/`not` use
//! three-valued logic. A filter that comes out null does not match.
//!
//! Functions count and index characters (Unicode scalar values). `substring` clamps a negative
//! start or length to 0 and an out-of-range start to the end of the string.

use std::borrow::Cow;
use std::cmp::Ordering;

/// The longest filter accepted, in characters.
const MAX_CHARS: usize = 4096;
/// The most comparison, `in` and Bool-function clauses a filter may hold.
const MAX_CLAUSES: usize = 100;
/// The deepest nesting of parentheses, function calls, `in` lists and `not` a filter may have.
const MAX_DEPTH: usize = 32;
/// Quoted source text in error messages is cut to this many characters.
const MAX_SNIPPET: usize = 60;

/// What a filter looks at: one connection.
pub trait FilterSubject {
    fn connection_id(&self) -> &str;
    fn user_id(&self) -> Option<&str>;
    fn has_group(&self, group: &str) -> bool;
    fn group_count(&self) -> usize;
}

/// A parsed, type-checked filter. Cheap to evaluate: comparing identifiers with literals borrows
/// and never allocates.
#[derive(Debug, Clone)]
pub struct Filter {
    root: Expr,
}

/// Why a filter was refused: what was expected and found, and the 1-based character position of
/// the offending token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message} (at character {position} of the filter)")]
pub struct FilterError {
    pub message: String,
    pub position: usize,
}

impl FilterError {
    fn new(message: impl Into<String>, position: usize) -> Self {
        Self {
            message: message.into(),
            position,
        }
    }
}

impl Filter {
    /// Parses and type-checks `text`. Refuses, with the position of the fault, anything that is
    /// not a well-typed Bool expression, and anything over the limits (4096 characters, 100
    /// clauses, nesting 32 deep).
    pub fn parse(text: &str) -> Result<Filter, FilterError> {
        let length = text.chars().count();
        if length > MAX_CHARS {
            return Err(FilterError::new(
                format!(
                    "the filter is {length} characters long, but at most {MAX_CHARS} are allowed"
                ),
                MAX_CHARS + 1,
            ));
        }
        let (tokens, end) = lex(text)?;
        let mut parser = Parser {
            text,
            tokens,
            end,
            next: 0,
            depth: 0,
            clauses: 0,
        };
        let root = parser.parse_or()?;
        let after = parser.peek().clone();
        if after.tok != Tok::End {
            return Err(FilterError::new(
                format!(
                    "expected an operator or end of input, but found {}",
                    parser.describe(&after)
                ),
                after.pos,
            ));
        }
        if root.ty != Ty::Bool {
            return Err(FilterError::new(
                format!(
                    "the filter must be a Bool expression, but '{}' has type '{}'",
                    parser.snippet(root.start, root.end),
                    root.ty.name()
                ),
                root.pos,
            ));
        }
        match root.node {
            Node::Scalar(root) => Ok(Filter { root }),
            // Unreachable: a `Node::Groups` has type Collection, refused just above.
            Node::Groups => Err(FilterError::new(
                "the filter must be a Bool expression",
                root.pos,
            )),
        }
    }

    /// Whether the connection satisfies the filter. A filter that evaluates to null (say
    /// `contains(userId, 'a')` for an anonymous connection) does not match.
    pub fn matches(&self, subject: &dyn FilterSubject) -> bool {
        self.root.truth(subject) == Some(true)
    }
}

// ---------------------------------------------------------------------------------------------
// Lexer

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ty {
    Bool,
    Int,
    Str,
    /// The literal `null`; it fits wherever a scalar does, with `eq` and `ne`.
    Null,
    /// Only `groups` has this type.
    Collection,
}

impl Ty {
    fn name(self) -> &'static str {
        match self {
            Ty::Bool => "Bool",
            Ty::Int => "Int",
            Ty::Str => "String",
            Ty::Null => "Null",
            Ty::Collection => "Collection",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CmpOp {
    Eq,
    Ne,
    Gt,
    Ge,
    Lt,
    Le,
}

impl CmpOp {
    fn from_word(word: &str) -> Option<CmpOp> {
        Some(match word {
            "eq" => CmpOp::Eq,
            "ne" => CmpOp::Ne,
            "gt" => CmpOp::Gt,
            "ge" => CmpOp::Ge,
            "lt" => CmpOp::Lt,
            "le" => CmpOp::Le,
            _ => return None,
        })
    }

    fn is_equality(self) -> bool {
        matches!(self, CmpOp::Eq | CmpOp::Ne)
    }

    fn name(self) -> &'static str {
        match self {
            CmpOp::Eq => "eq",
            CmpOp::Ne => "ne",
            CmpOp::Gt => "gt",
            CmpOp::Ge => "ge",
            CmpOp::Lt => "lt",
            CmpOp::Le => "le",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Func {
    ToLower,
    ToUpper,
    Trim,
    Substring,
    Concat,
    Contains,
    StartsWith,
    EndsWith,
    IndexOf,
    /// `length` of a string; `length(groups)` becomes [`Expr::GroupCount`].
    Length,
}

/// What a function parameter accepts (a `null` literal fits any of them).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Param {
    Str,
    Int,
    StrOrCollection,
}

impl Func {
    fn lookup(name: &str) -> Option<Func> {
        const ALL: [(&str, Func); 10] = [
            ("tolower", Func::ToLower),
            ("toupper", Func::ToUpper),
            ("trim", Func::Trim),
            ("substring", Func::Substring),
            ("concat", Func::Concat),
            ("contains", Func::Contains),
            ("startswith", Func::StartsWith),
            ("endswith", Func::EndsWith),
            ("indexof", Func::IndexOf),
            ("length", Func::Length),
        ];
        ALL.iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|&(_, f)| f)
    }

    fn name(self) -> &'static str {
        match self {
            Func::ToLower => "tolower",
            Func::ToUpper => "toupper",
            Func::Trim => "trim",
            Func::Substring => "substring",
            Func::Concat => "concat",
            Func::Contains => "contains",
            Func::StartsWith => "startswith",
            Func::EndsWith => "endswith",
            Func::IndexOf => "indexof",
            Func::Length => "length",
        }
    }

    /// Parameters, how many of them are required, and the result type.
    fn signature(self) -> (&'static [Param], usize, Ty) {
        const S: Param = Param::Str;
        match self {
            Func::ToLower | Func::ToUpper | Func::Trim => (&[S], 1, Ty::Str),
            Func::Substring => (&[S, Param::Int, Param::Int], 2, Ty::Str),
            Func::Concat => (&[S, S], 2, Ty::Str),
            Func::Contains | Func::StartsWith | Func::EndsWith => (&[S, S], 2, Ty::Bool),
            Func::IndexOf => (&[S, S], 2, Ty::Int),
            Func::Length => (&[Param::StrOrCollection], 1, Ty::Int),
        }
    }
}

/// The evaluable tree. Type-checked by the parser, so operands always have the types their
/// operators expect; evaluation still never panics if they did not.
#[derive(Debug, Clone)]
enum Expr {
    Null,
    Bool(bool),
    Int(i64),
    Str(String),
    UserId,
    ConnectionId,
    GroupCount,
    Not(Box<Expr>),
    And(Vec<Expr>),
    Or(Vec<Expr>),
    Compare(CmpOp, Box<Expr>, Box<Expr>),
    InList(Box<Expr>, Vec<Expr>),
    InGroups(Box<Expr>),
    Call(Func, Vec<Expr>),
}

/// A value during evaluation; strings borrow from the filter or the subject where they can.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Value<'a> {
    Null,
    Bool(bool),
    Int(i64),
    Str(Cow<'a, str>),
}

impl Expr {
    /// A Bool expression's value, `None` for null.
    fn truth(&self, subject: &dyn FilterSubject) -> Option<bool> {
        match self {
            Expr::Not(operand) => operand.truth(subject).map(|b| !b),
            Expr::And(items) => {
                let mut unknown = false;
                for item in items {
                    match item.truth(subject) {
                        Some(false) => return Some(false),
                        None => unknown = true,
                        Some(true) => {}
                    }
                }
                (!unknown).then_some(true)
            }
            Expr::Or(items) => {
                let mut unknown = false;
                for item in items {
                    match item.truth(subject) {
                        Some(true) => return Some(true),
                        None => unknown = true,
                        Some(false) => {}
                    }
                }
                (!unknown).then_some(false)
            }
            Expr::Compare(op, left, right) => {
                Some(compare(*op, &left.eval(subject), &right.eval(subject)))
            }
            Expr::InList(left, items) => {
                let left = left.eval(subject);
                Some(items.iter().any(|item| equal(&left, &item.eval(subject))))
            }
            Expr::InGroups(left) => match left.eval(subject) {
                Value::Str(group) => Some(subject.has_group(&group)),
                _ => Some(false),
            },
            _ => match self.eval(subject) {
                Value::Bool(b) => Some(b),
                _ => None,
            },
        }
    }

    fn eval<'a>(&'a self, subject: &'a dyn FilterSubject) -> Value<'a> {
        match self {
            Expr::Null => Value::Null,
            Expr::Bool(b) => Value::Bool(*b),
            Expr::Int(n) => Value::Int(*n),
            Expr::Str(s) => Value::Str(Cow::Borrowed(s)),
            Expr::UserId => subject
                .user_id()
                .map_or(Value::Null, |u| Value::Str(Cow::Borrowed(u))),
            Expr::ConnectionId => Value::Str(Cow::Borrowed(subject.connection_id())),
            Expr::GroupCount => Value::Int(to_i64(subject.group_count())),
            Expr::Call(func, args) => call(*func, args, subject),
            Expr::Not(_)
            | Expr::And(_)
            | Expr::Or(_)
            | Expr::Compare(..)
            | Expr::InList(..)
            | Expr::InGroups(_) => self.truth(subject).map_or(Value::Null, Value::Bool),
        }
    }
}

fn to_i64(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

fn to_usize(n: i64) -> usize {
    usize::try_from(n.max(0)).unwrap_or(usize::MAX)
}

fn equal(a: &Value<'_>, b: &Value<'_>) -> bool {
    match (a, b) {
        (Value::Null, Value::Null) => true,
        (Value::Bool(x), Value::Bool(y)) => x == y,
        (Value::Int(x), Value::Int(y)) => x == y,
        (Value::Str(x), Value::Str(y)) => x == y,
        _ => false,
    }
}

fn compare(op: CmpOp, a: &Value<'_>, b: &Value<'_>) -> bool {
    let order = match (a, b) {
        (Value::Int(x), Value::Int(y)) => Some(x.cmp(y)),
        // `str` orders by bytes, which for UTF-8 is Unicode code point order: ordinal.
        (Value::Str(x), Value::Str(y)) => Some(x.as_ref().cmp(y.as_ref())),
        _ => None,
    };
    match op {
        CmpOp::Eq => equal(a, b),
        CmpOp::Ne => !equal(a, b),
        CmpOp::Gt => order == Some(Ordering::Greater),
        CmpOp::Ge => matches!(order, Some(Ordering::Greater | Ordering::Equal)),
        CmpOp::Lt => order == Some(Ordering::Less),
        CmpOp::Le => matches!(order, Some(Ordering::Less | Ordering::Equal)),
    }
}

fn string_arg<'a>(arg: &'a Expr, subject: &'a dyn FilterSubject) -> Option<Cow<'a, str>> {
    match arg.eval(subject) {
        Value::Str(s) => Some(s),
        _ => None,
    }
}

fn int_arg(arg: &Expr, subject: &dyn FilterSubject) -> Option<i64> {
    match arg.eval(subject) {
        Value::Int(n) => Some(n),
        _ => None,
    }
}

/// Evaluates a function; a null argument makes a null result.
fn call<'a>(func: Func, args: &'a [Expr], subject: &'a dyn FilterSubject) -> Value<'a> {
    let result = match (func, args) {
        (Func::ToLower, [s]) => string_arg(s, subject).map(|s| Value::Str(lower(s))),
        (Func::ToUpper, [s]) => string_arg(s, subject).map(|s| Value::Str(upper(s))),
        (Func::Trim, [s]) => string_arg(s, subject).map(|s| Value::Str(trim(s))),
        (Func::Substring, [s, start]) => string_arg(s, subject).and_then(|s| {
            int_arg(start, subject).map(|start| Value::Str(substring(s, start, None)))
        }),
        (Func::Substring, [s, start, len]) => string_arg(s, subject).and_then(|s| {
            let start = int_arg(start, subject)?;
            let len = int_arg(len, subject)?;
            Some(Value::Str(substring(s, start, Some(len))))
        }),
        (Func::Concat, [a, b]) => string_arg(a, subject)
            .and_then(|a| string_arg(b, subject).map(|b| Value::Str(concat(a, b)))),
        (Func::Contains, [a, b]) => two_strings(a, b, subject, |a, b| Value::Bool(a.contains(b))),
        (Func::StartsWith, [a, b]) => {
            two_strings(a, b, subject, |a, b| Value::Bool(a.starts_with(b)))
        }
        (Func::EndsWith, [a, b]) => two_strings(a, b, subject, |a, b| Value::Bool(a.ends_with(b))),
        (Func::IndexOf, [a, b]) => two_strings(a, b, subject, |a, b| {
            Value::Int(
                a.find(b)
                    .and_then(|at| a.get(..at))
                    .map_or(-1, |before| to_i64(before.chars().count())),
            )
        }),
        (Func::Length, [s]) => {
            string_arg(s, subject).map(|s| Value::Int(to_i64(s.chars().count())))
        }
        _ => None,
    };
    result.unwrap_or(Value::Null)
}

fn two_strings<'a>(
    a: &'a Expr,
    b: &'a Expr,
    subject: &'a dyn FilterSubject,
    f: impl FnOnce(&str, &str) -> Value<'a>,
) -> Option<Value<'a>> {
    let a = string_arg(a, subject)?;
    let b = string_arg(b, subject)?;
    Some(f(&a, &b))
}

/// The part `range` (byte offsets, on character boundaries) of `s`, borrowed if `s` is.
fn slice(s: Cow<'_, str>, start: usize, end: usize) -> Cow<'_, str> {
    match s {
        Cow::Borrowed(b) => Cow::Borrowed(b.get(start..end).unwrap_or_default()),
        Cow::Owned(o) => Cow::Owned(o.get(start..end).unwrap_or_default().to_owned()),
    }
}

fn lower(s: Cow<'_, str>) -> Cow<'_, str> {
    if s.bytes().all(|b| b.is_ascii() && !b.is_ascii_uppercase()) {
        s
    } else {
        Cow::Owned(s.to_lowercase())
    }
}

fn upper(s: Cow<'_, str>) -> Cow<'_, str> {
    if s.bytes().all(|b| b.is_ascii() && !b.is_ascii_lowercase()) {
        s
    } else {
        Cow::Owned(s.to_uppercase())
    }
}

fn trim(s: Cow<'_, str>) -> Cow<'_, str> {
    let start = s.len() - s.trim_start().len();
    let end = s.trim_end().len().max(start);
    slice(s, start, end)
}

fn substring(s: Cow<'_, str>, start: i64, len: Option<i64>) -> Cow<'_, str> {
    let byte_of = |text: &str, chars: usize| {
        text.char_indices()
            .nth(chars)
            .map_or(text.len(), |(b, _)| b)
    };
    let from = byte_of(&s, to_usize(start));
    let to = match len {
        None => s.len(),
        Some(len) => from + byte_of(s.get(from..).unwrap_or_default(), to_usize(len)),
    };
    slice(s, from, to)
}

fn concat<'a>(a: Cow<'a, str>, b: Cow<'a, str>) -> Cow<'a, str> {
    if b.is_empty() {
        a
    } else if a.is_empty() {
        b
    } else {
        Cow::Owned(a.into_owned() + &b)
    }
}

mod parse;
#[cfg(test)]
mod tests;
mod tokens;

use parse::*;
use tokens::*;
