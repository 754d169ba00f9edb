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

#[derive(Debug, Clone, PartialEq, Eq)]
enum Tok {
    /// An identifier, function name or keyword; its text is the token's source span.
    Word,
    Str(String),
    Int(i64),
    LParen,
    RParen,
    Comma,
    End,
}

#[derive(Debug, Clone)]
struct Token {
    tok: Tok,
    /// Byte offsets of the token's source text.
    start: usize,
    end: usize,
    /// 1-based character position of the token's first character.
    pos: usize,
}

const KEYWORDS: [&str; 13] = [
    "and", "or", "not", "eq", "ne", "gt", "ge", "lt", "le", "in", "true", "false", "null",
];

fn is_word_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

fn lex(text: &str) -> Result<(Vec<Token>, Token), FilterError> {
    let chars: Vec<(usize, char)> = text.char_indices().collect();
    let byte_at = |i: usize| chars.get(i).map_or(text.len(), |&(b, _)| b);
    let char_at = |i: usize| chars.get(i).map(|&(_, c)| c);
    let mut tokens = Vec::new();
    let mut i = 0;
    while let Some(&(start, c)) = chars.get(i) {
        let pos = i + 1;
        if c.is_whitespace() {
            i += 1;
            continue;
        }
        let (tok, next) = match c {
            '(' => (Tok::LParen, i + 1),
            ')' => (Tok::RParen, i + 1),
            ',' => (Tok::Comma, i + 1),
            '\'' => {
                let mut value = String::new();
                let mut j = i + 1;
                loop {
                    match char_at(j) {
                        None => {
                            return Err(FilterError::new(
                                "unterminated string literal: expected a closing ' but found end of input",
                                pos,
                            ))
                        }
                        Some('\'') if char_at(j + 1) == Some('\'') => {
                            value.push('\'');
                            j += 2;
                        }
                        Some('\'') => break,
                        Some(ch) => {
                            value.push(ch);
                            j += 1;
                        }
                    }
                }
                (Tok::Str(value), j + 1)
            }
            _ if c.is_ascii_digit()
                || ((c == '-' || c == '+')
                    && char_at(i + 1).is_some_and(|d| d.is_ascii_digit())) =>
            {
                let mut j = i + 1;
                while char_at(j).is_some_and(|d| d.is_ascii_digit()) {
                    j += 1;
                }
                if char_at(j).is_some_and(|d| is_word_char(d) || d == '.') {
                    while char_at(j).is_some_and(|d| is_word_char(d) || d == '.') {
                        j += 1;
                    }
                    let literal = text.get(start..byte_at(j)).unwrap_or_default();
                    return Err(FilterError::new(
                        format!("invalid number '{literal}': only integers are supported"),
                        pos,
                    ));
                }
                let literal = text.get(start..byte_at(j)).unwrap_or_default();
                let value = literal.parse::<i64>().map_err(|_| {
                    FilterError::new(
                        format!("the integer {literal} is out of range (a 64-bit signed integer)"),
                        pos,
                    )
                })?;
                (Tok::Int(value), j)
            }
            _ if c.is_ascii_alphabetic() || c == '_' => {
                let mut j = i + 1;
                while char_at(j).is_some_and(is_word_char) {
                    j += 1;
                }
                (Tok::Word, j)
            }
            '"' => {
                return Err(FilterError::new(
                    "unexpected character '\"': string literals are enclosed in single quotes",
                    pos,
                ))
            }
            _ => return Err(FilterError::new(format!("unexpected character '{c}'"), pos)),
        };
        tokens.push(Token {
            tok,
            start,
            end: byte_at(next),
            pos,
        });
        i = next;
    }
    let end = Token {
        tok: Tok::End,
        start: text.len(),
        end: text.len(),
        pos: chars.len() + 1,
    };
    Ok((tokens, end))
}

// ---------------------------------------------------------------------------------------------
// Types and the evaluable tree

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

// ---------------------------------------------------------------------------------------------
// Parser and type checker

/// A parsed subexpression with its type and source span.
struct Typed {
    node: Node,
    ty: Ty,
    /// Byte offsets of its source text.
    start: usize,
    end: usize,
    /// 1-based character position of its first token.
    pos: usize,
}

enum Node {
    Scalar(Expr),
    /// The `groups` collection: only the right side of `in` or the argument of `length`.
    Groups,
}

struct Parser<'t> {
    text: &'t str,
    tokens: Vec<Token>,
    /// The end-of-input token, answered by `peek` past the last token.
    end: Token,
    next: usize,
    depth: usize,
    clauses: usize,
}

impl<'t> Parser<'t> {
    fn peek(&self) -> &Token {
        self.tokens.get(self.next).unwrap_or(&self.end)
    }

    fn peek_second(&self) -> &Token {
        self.tokens.get(self.next + 1).unwrap_or(&self.end)
    }

    fn bump(&mut self) -> Token {
        let token = self.peek().clone();
        if self.next < self.tokens.len() {
            self.next += 1;
        }
        token
    }

    fn word(&self, token: &Token) -> Option<&'t str> {
        match token.tok {
            Tok::Word => Some(self.text.get(token.start..token.end).unwrap_or_default()),
            _ => None,
        }
    }

    fn at_keyword(&self, keyword: &str) -> bool {
        self.word(self.peek()) == Some(keyword)
    }

    /// Source text between two byte offsets, cut short for messages.
    fn snippet(&self, start: usize, end: usize) -> String {
        let text = self.text.get(start..end).unwrap_or_default();
        if text.chars().count() > MAX_SNIPPET {
            let cut: String = text.chars().take(MAX_SNIPPET - 3).collect();
            format!("{cut}...")
        } else {
            text.to_owned()
        }
    }

    fn typed_snippet(&self, t: &Typed) -> String {
        self.snippet(t.start, t.end)
    }

    /// How a token reads in "found ..." messages.
    fn describe(&self, token: &Token) -> String {
        let source = self.snippet(token.start, token.end);
        match &token.tok {
            Tok::Word => {
                let lower = source.to_ascii_lowercase();
                if lower != source && KEYWORDS.contains(&lower.as_str()) {
                    format!("'{source}' (keywords are lower-case: '{lower}')")
                } else {
                    format!("'{source}'")
                }
            }
            Tok::Str(_) => format!("string literal {source}"),
            Tok::Int(_) => format!("number {source}"),
            Tok::LParen => "'('".to_owned(),
            Tok::RParen => "')'".to_owned(),
            Tok::Comma => "','".to_owned(),
            Tok::End => "end of input".to_owned(),
        }
    }

    fn enter(&mut self, token: &Token) -> Result<(), FilterError> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err(FilterError::new(
                format!(
                    "the filter nests too deeply: at most {MAX_DEPTH} levels of parentheses, function calls and 'not' are allowed"
                ),
                token.pos,
            ));
        }
        Ok(())
    }

    fn leave(&mut self) {
        self.depth = self.depth.saturating_sub(1);
    }

    fn clause(&mut self, token: &Token) -> Result<(), FilterError> {
        self.clauses += 1;
        if self.clauses > MAX_CLAUSES {
            return Err(FilterError::new(
                format!(
                    "the filter has too many clauses: at most {MAX_CLAUSES} comparisons, 'in' tests and Bool functions are allowed"
                ),
                token.pos,
            ));
        }
        Ok(())
    }

    /// Consumes a `)`, or explains what was expected instead.
    fn expect_close(&mut self, expected: &str) -> Result<Token, FilterError> {
        let token = self.peek().clone();
        if token.tok == Tok::RParen {
            return Ok(self.bump());
        }
        Err(FilterError::new(
            format!("expected {expected} but found {}", self.describe(&token)),
            token.pos,
        ))
    }

    /// The expression of a scalar operand; `groups` is refused here.
    fn scalar(&self, t: Typed) -> Result<Expr, FilterError> {
        match t.node {
            Node::Scalar(expr) => Ok(expr),
            Node::Groups => Err(FilterError::new(
                format!(
                    "'{}' is a collection: it can only be used as '<string> in groups' or 'length(groups)'",
                    self.typed_snippet(&t)
                ),
                t.pos,
            )),
        }
    }

    /// The expression of an operand of `and`/`or`, which must be Bool.
    fn logical_operand(&self, t: Typed, op: &str) -> Result<Expr, FilterError> {
        if t.ty != Ty::Bool {
            return Err(FilterError::new(
                format!(
                    "type error: the operands of '{op}' must be Bool, but '{}' has type '{}'",
                    self.typed_snippet(&t),
                    t.ty.name()
                ),
                t.pos,
            ));
        }
        self.scalar(t)
    }

    fn parse_or(&mut self) -> Result<Typed, FilterError> {
        self.parse_logical("or", Self::parse_and, Expr::Or)
    }

    fn parse_and(&mut self) -> Result<Typed, FilterError> {
        self.parse_logical("and", Self::parse_cmp, Expr::And)
    }

    /// `operand { op operand }`, built as one n-ary node so long chains do not nest.
    fn parse_logical(
        &mut self,
        op: &str,
        operand: fn(&mut Self) -> Result<Typed, FilterError>,
        build: fn(Vec<Expr>) -> Expr,
    ) -> Result<Typed, FilterError> {
        let first = operand(self)?;
        if !self.at_keyword(op) {
            return Ok(first);
        }
        let (start, pos, mut end) = (first.start, first.pos, first.end);
        let mut items = vec![self.logical_operand(first, op)?];
        while self.at_keyword(op) {
            self.bump();
            let next = operand(self)?;
            end = next.end;
            items.push(self.logical_operand(next, op)?);
        }
        Ok(Typed {
            node: Node::Scalar(build(items)),
            ty: Ty::Bool,
            start,
            end,
            pos,
        })
    }

    fn parse_cmp(&mut self) -> Result<Typed, FilterError> {
        let mut left = self.parse_unary()?;
        loop {
            let op_token = self.peek().clone();
            let Some(word) = self.word(&op_token) else {
                break;
            };
            if word == "in" {
                self.bump();
                self.clause(&op_token)?;
                left = self.parse_in(left)?;
            } else if let Some(op) = CmpOp::from_word(word) {
                self.bump();
                self.clause(&op_token)?;
                let right = self.parse_unary()?;
                left = self.check_compare(op, &op_token, left, right)?;
            } else {
                break;
            }
        }
        Ok(left)
    }

    fn check_compare(
        &self,
        op: CmpOp,
        op_token: &Token,
        left: Typed,
        right: Typed,
    ) -> Result<Typed, FilterError> {
        let (start, end, pos) = (left.start, right.end, left.pos);
        let whole = self.snippet(start, end);
        let (left_ty, right_ty, right_pos) = (left.ty, right.ty, right.pos);
        let null_pos = if left_ty == Ty::Null { pos } else { right_pos };
        let left = self.scalar(left)?;
        let right = self.scalar(right)?;
        let error = |message: String, position: usize| Err(FilterError::new(message, position));
        if left_ty == Ty::Null || right_ty == Ty::Null {
            if !op.is_equality() {
                return error(
                    format!(
                        "type error in '{whole}': null can only be compared with 'eq' or 'ne', not '{}'",
                        op.name()
                    ),
                    null_pos,
                );
            }
        } else if left_ty != right_ty {
            return error(
                format!(
                    "type error in '{whole}': cannot compare type '{}' with type '{}'",
                    left_ty.name(),
                    right_ty.name()
                ),
                right_pos,
            );
        } else if left_ty == Ty::Bool && !op.is_equality() {
            return error(
                format!(
                    "type error in '{whole}': Bool values can only be compared with 'eq' or 'ne', not '{}'",
                    op.name()
                ),
                op_token.pos,
            );
        }
        Ok(Typed {
            node: Node::Scalar(Expr::Compare(op, Box::new(left), Box::new(right))),
            ty: Ty::Bool,
            start,
            end,
            pos,
        })
    }

    /// After `left in`: a parenthesised list of values, or a collection.
    fn parse_in(&mut self, left: Typed) -> Result<Typed, FilterError> {
        let (start, pos, left_ty) = (left.start, left.pos, left.ty);
        if left_ty == Ty::Null {
            return Err(FilterError::new(
                "type error: null cannot be the left operand of 'in'",
                pos,
            ));
        }
        let left_text = self.typed_snippet(&left);
        let left = self.scalar(left)?;
        let open = self.peek().clone();
        let (items, end) = if open.tok == Tok::LParen {
            self.bump();
            self.enter(&open)?;
            let mut items = vec![self.parse_or()?];
            while self.peek().tok == Tok::Comma {
                self.bump();
                items.push(self.parse_or()?);
            }
            let close = self.expect_close("',' or ')' to end the 'in' list")?;
            self.leave();
            (items, close.end)
        } else {
            let right = self.parse_unary()?;
            if right.ty != Ty::Collection {
                return Err(FilterError::new(
                    format!(
                        "expected a parenthesised list or a collection after 'in', but '{}' has type '{}'",
                        self.typed_snippet(&right),
                        right.ty.name()
                    ),
                    right.pos,
                ));
            }
            let end = right.end;
            (vec![right], end)
        };
        let is_collection = matches!(items.as_slice(), [only] if only.ty == Ty::Collection);
        let expr = if is_collection {
            if left_ty != Ty::Str {
                return Err(FilterError::new(
                    format!(
                        "type error: only a String can be looked for in 'groups', but '{left_text}' has type '{}'",
                        left_ty.name()
                    ),
                    pos,
                ));
            }
            Expr::InGroups(Box::new(left))
        } else {
            let mut values = Vec::with_capacity(items.len());
            for item in items {
                if item.ty != left_ty && item.ty != Ty::Null && item.ty != Ty::Collection {
                    return Err(FilterError::new(
                        format!(
                            "type error: the 'in' list holds '{}' of type '{}', but '{left_text}' has type '{}'",
                            self.typed_snippet(&item),
                            item.ty.name(),
                            left_ty.name()
                        ),
                        item.pos,
                    ));
                }
                values.push(self.scalar(item)?);
            }
            Expr::InList(Box::new(left), values)
        };
        Ok(Typed {
            node: Node::Scalar(expr),
            ty: Ty::Bool,
            start,
            end,
            pos,
        })
    }

    fn parse_unary(&mut self) -> Result<Typed, FilterError> {
        if !self.at_keyword("not") {
            return self.parse_primary();
        }
        let not = self.bump();
        self.enter(&not)?;
        let operand = self.parse_unary()?;
        self.leave();
        if operand.ty != Ty::Bool {
            return Err(FilterError::new(
                format!(
                    "type error in '{}': 'not' needs a Bool operand, but '{}' has type '{}'",
                    self.snippet(not.start, operand.end),
                    self.typed_snippet(&operand),
                    operand.ty.name()
                ),
                operand.pos,
            ));
        }
        let end = operand.end;
        let operand = self.scalar(operand)?;
        Ok(Typed {
            node: Node::Scalar(Expr::Not(Box::new(operand))),
            ty: Ty::Bool,
            start: not.start,
            end,
            pos: not.pos,
        })
    }

    fn parse_primary(&mut self) -> Result<Typed, FilterError> {
        let token = self.peek().clone();
        let scalar = |expr: Expr, ty: Ty| Typed {
            node: Node::Scalar(expr),
            ty,
            start: token.start,
            end: token.end,
            pos: token.pos,
        };
        match &token.tok {
            Tok::LParen => {
                self.bump();
                self.enter(&token)?;
                let inner = self.parse_or()?;
                let close =
                    self.expect_close(&format!("')' to close the '(' at character {}", token.pos))?;
                self.leave();
                Ok(Typed {
                    start: token.start,
                    end: close.end,
                    pos: token.pos,
                    ..inner
                })
            }
            Tok::Str(s) => {
                let t = scalar(Expr::Str(s.clone()), Ty::Str);
                self.bump();
                Ok(t)
            }
            Tok::Int(n) => {
                let t = scalar(Expr::Int(*n), Ty::Int);
                self.bump();
                Ok(t)
            }
            Tok::Word => {
                let word = self.word(&token).unwrap_or_default();
                let literal = match word {
                    "true" => Some(scalar(Expr::Bool(true), Ty::Bool)),
                    "false" => Some(scalar(Expr::Bool(false), Ty::Bool)),
                    "null" => Some(scalar(Expr::Null, Ty::Null)),
                    _ => None,
                };
                if let Some(literal) = literal {
                    self.bump();
                    return Ok(literal);
                }
                if KEYWORDS.contains(&word) {
                    return Err(FilterError::new(
                        format!("expected an expression but found '{word}'"),
                        token.pos,
                    ));
                }
                if self.peek_second().tok == Tok::LParen {
                    return self.parse_call(token, word);
                }
                let t = if word.eq_ignore_ascii_case("userId") {
                    scalar(Expr::UserId, Ty::Str)
                } else if word.eq_ignore_ascii_case("connectionId") {
                    scalar(Expr::ConnectionId, Ty::Str)
                } else if word.eq_ignore_ascii_case("groups") {
                    Typed {
                        node: Node::Groups,
                        ty: Ty::Collection,
                        start: token.start,
                        end: token.end,
                        pos: token.pos,
                    }
                } else if Func::lookup(word).is_some() {
                    return Err(FilterError::new(
                        format!(
                            "expected '(' after the function name '{word}', but found {}",
                            self.describe(self.peek_second())
                        ),
                        self.peek_second().pos,
                    ));
                } else {
                    let lower = word.to_ascii_lowercase();
                    let hint = if KEYWORDS.contains(&lower.as_str()) {
                        format!(" (keywords are lower-case: '{lower}')")
                    } else {
                        " (the identifiers are userId, connectionId and groups)".to_owned()
                    };
                    return Err(FilterError::new(
                        format!("unknown identifier '{word}'{hint}"),
                        token.pos,
                    ));
                };
                self.bump();
                Ok(t)
            }
            Tok::RParen | Tok::Comma | Tok::End => Err(FilterError::new(
                format!("expected an expression but found {}", self.describe(&token)),
                token.pos,
            )),
        }
    }

    /// `name ( args )`, with the name token current.
    fn parse_call(&mut self, name_token: Token, name: &str) -> Result<Typed, FilterError> {
        let Some(func) = Func::lookup(name) else {
            return Err(FilterError::new(
                format!(
                    "unknown function '{name}' (the functions are tolower, toupper, trim, substring, concat, contains, startswith, endswith, indexof and length)"
                ),
                name_token.pos,
            ));
        };
        self.bump();
        let open = self.bump();
        self.enter(&open)?;
        let (params, required, result) = func.signature();
        if result == Ty::Bool {
            self.clause(&name_token)?;
        }
        let mut args = Vec::new();
        if self.peek().tok != Tok::RParen {
            args.push(self.parse_or()?);
            while self.peek().tok == Tok::Comma {
                self.bump();
                args.push(self.parse_or()?);
            }
        }
        let close = self.expect_close(&format!(
            "',' or ')' to end the arguments of '{}'",
            func.name()
        ))?;
        self.leave();
        if args.len() < required || args.len() > params.len() {
            let count = if required == params.len() {
                format!("{required}")
            } else {
                format!("{required} or {}", params.len())
            };
            let plural = if params.len() == 1 { "" } else { "s" };
            return Err(FilterError::new(
                format!(
                    "function '{}' takes {count} argument{plural}, but {} {} given",
                    func.name(),
                    args.len(),
                    if args.len() == 1 { "was" } else { "were" }
                ),
                name_token.pos,
            ));
        }
        let (start, pos, end) = (name_token.start, name_token.pos, close.end);
        let mut exprs = Vec::with_capacity(args.len());
        for (index, (arg, param)) in args.into_iter().zip(params).enumerate() {
            let fits = match param {
                Param::Str => matches!(arg.ty, Ty::Str | Ty::Null),
                Param::Int => matches!(arg.ty, Ty::Int | Ty::Null),
                Param::StrOrCollection => matches!(arg.ty, Ty::Str | Ty::Null | Ty::Collection),
            };
            if !fits {
                let wanted = match param {
                    Param::Str => "'String'",
                    Param::Int => "'Int'",
                    Param::StrOrCollection => "'String' or 'Collection'",
                };
                return Err(FilterError::new(
                    format!(
                        "type error: argument {} of '{}' must have type {wanted}, but '{}' has type '{}'",
                        index + 1,
                        func.name(),
                        self.typed_snippet(&arg),
                        arg.ty.name()
                    ),
                    arg.pos,
                ));
            }
            if func == Func::Length && matches!(arg.node, Node::Groups) {
                return Ok(Typed {
                    node: Node::Scalar(Expr::GroupCount),
                    ty: Ty::Int,
                    start,
                    end,
                    pos,
                });
            }
            exprs.push(self.scalar(arg)?);
        }
        Ok(Typed {
            node: Node::Scalar(Expr::Call(func, exprs)),
            ty: result,
            start,
            end,
            pos,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Conn {
        id: &'static str,
        user: Option<&'static str>,
        groups: Vec<&'static str>,
    }

    impl FilterSubject for Conn {
        fn connection_id(&self) -> &str {
            self.id
        }
        fn user_id(&self) -> Option<&str> {
            self.user
        }
        fn has_group(&self, group: &str) -> bool {
            self.groups.contains(&group)
        }
        fn group_count(&self) -> usize {
            self.groups.len()
        }
    }

    fn conn(id: &'static str, user: Option<&'static str>, groups: &[&'static str]) -> Conn {
        Conn {
            id,
            user,
            groups: groups.to_vec(),
        }
    }

    /// user1 in group1 and group2.
    fn user1() -> Conn {
        conn("conn-a", Some("user1"), &["group1", "group2"])
    }

    fn anonymous() -> Conn {
        conn("anon-x", None, &["group1"])
    }

    fn check(filter: &str, subject: &Conn) -> bool {
        match Filter::parse(filter) {
            Ok(f) => f.matches(subject),
            Err(e) => panic!("{filter:?} did not parse: {e}"),
        }
    }

    fn error(filter: &str) -> FilterError {
        match Filter::parse(filter) {
            Ok(f) => panic!("{filter:?} parsed, but should not have: {f:?}"),
            Err(e) => e,
        }
    }

    /// Asserts the error's position and that its message contains every fragment.
    fn assert_error(filter: &str, position: usize, fragments: &[&str]) {
        let e = error(filter);
        assert_eq!(e.position, position, "position for {filter:?}: {e}");
        for fragment in fragments {
            assert!(
                e.message.contains(fragment),
                "message for {filter:?} lacks {fragment:?}: {}",
                e.message
            );
        }
    }

    // ---- the examples of the brief ----------------------------------------------------------

    #[test]
    fn documented_examples() {
        let u = user1();
        let other = conn("123", Some("user2"), &["group3"]);
        let cases: &[(&str, bool, bool)] = &[
            ("'group1' in groups or 'group2' in groups", true, false),
            (
                "userId in ('user1','user2') and 'group1' in groups",
                true,
                false,
            ),
            ("userId eq 'user1' and connectionId ne '123'", true, false),
            (
                "userId eq 'user1' and (not ('group1' in groups))",
                false,
                false,
            ),
            ("length(groups) ge 2", true, false),
            (
                "startswith(userId, 'use') and not endswith(connectionId, 'x')",
                true,
                true,
            ),
            ("indexof(tolower(userId), 'user') eq 0", true, true),
            ("substring(userId, 1, 2) eq 'se'", true, true),
            ("concat(userId, '-x') eq 'user1-x'", true, false),
            ("userId eq null", false, false),
            ("true", true, true),
            (
                "(userId ne null) and contains(trim('  ab  '), 'a')",
                true,
                true,
            ),
        ];
        for &(filter, for_user1, for_other) in cases {
            assert_eq!(check(filter, &u), for_user1, "{filter} for user1");
            assert_eq!(check(filter, &other), for_other, "{filter} for user2");
        }
        assert!(check(
            "userId eq 'user''1'",
            &conn("c", Some("user'1"), &[])
        ));
        assert!(!check("userId eq 'user''1'", &u));
        assert!(check("userId eq null", &anonymous()));
        assert!(check(
            "startswith(userId, 'adm') and not endswith(connectionId, 'x')",
            &conn("c1", Some("admin"), &[])
        ));
        assert!(!check(
            "startswith(userId, 'adm') and not endswith(connectionId, 'x')",
            &conn("c1x", Some("admin"), &[])
        ));
        assert!(check(
            "indexof(tolower(userId), 'bob') eq 0",
            &conn("c", Some("BOBBY"), &[])
        ));
        assert!(check(
            "concat(userId, '-x') eq 'u1-x'",
            &conn("c", Some("u1"), &[])
        ));
    }

    // ---- operators ---------------------------------------------------------------------------

    #[test]
    fn string_comparisons_are_ordinal_and_case_sensitive() {
        let u = user1();
        assert!(check("userId eq 'user1'", &u));
        assert!(!check("userId eq 'USER1'", &u));
        assert!(check("userId ne 'USER1'", &u));
        assert!(!check("userId ne 'user1'", &u));
        assert!(check("userId gt 'user0'", &u));
        assert!(!check("userId gt 'user1'", &u));
        assert!(check("userId ge 'user1'", &u));
        assert!(check("userId lt 'user2'", &u));
        assert!(!check("userId lt 'user1'", &u));
        assert!(check("userId le 'user1'", &u));
        assert!(!check("userId le 'user0'", &u));
        // Ordinal: upper-case letters sort before lower-case ones; a prefix sorts first.
        assert!(check("'B' lt 'a'", &u));
        assert!(check("'ab' lt 'abc'", &u));
        assert!(check("'z' lt 'é'", &u)); // U+007A before U+00E9
        assert!(check("connectionId eq 'conn-a'", &u));
    }

    #[test]
    fn integer_comparisons_are_numeric() {
        let u = user1();
        assert!(check("length(userId) eq 5", &u));
        assert!(check("length(userId) ne 4", &u));
        assert!(check("length(userId) gt 4", &u));
        assert!(!check("length(userId) gt 5", &u));
        assert!(check("length(userId) ge 5", &u));
        assert!(check("length(userId) lt 10", &u));
        assert!(check("length(userId) le 5", &u));
        assert!(!check("length(userId) le 4", &u));
        assert!(check("9 lt 10", &u)); // not "9" > "10" as strings
        assert!(check("indexof(userId, 'zz') eq -1", &u));
        assert!(check("+3 eq 3 and -0 eq 0", &u));
        assert!(check("-9223372036854775808 lt 9223372036854775807", &u));
    }

    #[test]
    fn bool_values_compare_with_eq_and_ne() {
        let u = user1();
        assert!(check("(userId eq 'user1') eq true", &u));
        assert!(check("contains(userId, 'x') eq false", &u));
        assert!(check("true ne false", &u));
        assert!(!check("false", &u));
        assert!(check("not false", &u));
    }

    #[test]
    fn logical_operators() {
        let u = user1();
        assert!(check("true and true", &u));
        assert!(!check("true and false", &u));
        assert!(!check("false and true", &u));
        assert!(check("false or true", &u));
        assert!(!check("false or false", &u));
        assert!(!check("not true", &u));
        assert!(check("not not true", &u));
        assert!(check("true and true and true and true", &u));
        assert!(!check("true and true and false and true", &u));
        assert!(check("false or false or false or true", &u));
    }

    #[test]
    fn in_with_lists_and_collections() {
        let u = user1();
        assert!(check("userId in ('user1')", &u));
        assert!(check("userId in ('a', 'b', 'user1')", &u));
        assert!(!check("userId in ('a', 'b')", &u));
        assert!(check("length(userId) in (1, 5)", &u));
        assert!(check("userId in (connectionId, concat('user', '1'))", &u));
        assert!(check("true in (userId eq 'user1')", &u));
        assert!(check("'group2' in groups", &u));
        assert!(!check("'group3' in groups", &u));
        assert!(!check("'GROUP1' in groups", &u));
        assert!(check("'group1' in (groups)", &u));
        assert!(check("concat('group', '1') in groups", &u));
        assert!(check("not ('group3' in groups)", &u));
        assert!(!check("userId in groups", &u));
        assert!(check("userId in groups", &conn("c", Some("g"), &["g"])));
    }

    #[test]
    fn precedence_and_parentheses() {
        let x = conn("c", Some("x"), &[]);
        // `a or b and c` is `a or (b and c)`: true for user x (a true, b and c false).
        assert!(check(
            "userId eq 'x' or userId eq 'y' and connectionId eq 'nope'",
            &x
        ));
        assert!(!check(
            "(userId eq 'x' or userId eq 'y') and connectionId eq 'nope'",
            &x
        ));
        // `a and b or c` is `(a and b) or c`.
        assert!(check("userId eq 'nope' and false or userId eq 'x'", &x));
        assert!(!check("userId eq 'nope' and (false or userId eq 'x')", &x));
        // `not` applies to the next operand only.
        assert!(check("not false and true", &x));
        assert!(!check("not (false or true)", &x));
        assert!(check("not false or false", &x));
        // Comparisons bind tighter than `and`.
        assert!(check("userId eq 'x' and connectionId eq 'c'", &x));
        assert!(check("((((userId eq 'x'))))", &x));
    }

    // ---- functions ---------------------------------------------------------------------------

    #[test]
    fn every_function() {
        let u = conn("Conn-Ä", Some("  Mixed Case  "), &["a", "b", "c"]);
        assert!(check("tolower(connectionId) eq 'conn-ä'", &u));
        assert!(check("toupper(connectionId) eq 'CONN-Ä'", &u));
        assert!(check(
            "tolower('ABC') eq 'abc' and toupper('abc') eq 'ABC'",
            &u
        ));
        assert!(check("trim(userId) eq 'Mixed Case'", &u));
        assert!(check("trim('   ') eq ''", &u));
        assert!(check("trim('\tx\n') eq 'x'", &u));
        assert!(check("substring('hello', 1) eq 'ello'", &u));
        assert!(check("substring('hello', 1, 3) eq 'ell'", &u));
        assert!(check("substring('hello', 0, 0) eq ''", &u));
        assert!(check("substring('hello', 3, 99) eq 'lo'", &u));
        assert!(check("substring('hello', 99) eq ''", &u));
        assert!(check("substring('hello', -2) eq 'hello'", &u));
        assert!(check("substring('hello', 1, -1) eq ''", &u));
        assert!(check("substring('héllo', 1, 2) eq 'él'", &u));
        assert!(check("substring(connectionId, 5) eq 'Ä'", &u));
        assert!(check("concat('a', 'b') eq 'ab'", &u));
        assert!(check(
            "concat('', 'b') eq 'b' and concat('a', '') eq 'a'",
            &u
        ));
        assert!(check("concat(concat('a', 'b'), 'c') eq 'abc'", &u));
        assert!(check("contains(userId, 'ed C')", &u));
        assert!(!check("contains(userId, 'ed c')", &u));
        assert!(check("contains(userId, '')", &u));
        assert!(check("startswith(connectionId, 'Conn')", &u));
        assert!(!check("startswith(connectionId, 'conn')", &u));
        assert!(check("endswith(connectionId, '-Ä')", &u));
        assert!(!check("endswith(connectionId, 'Conn')", &u));
        assert!(check("indexof('héllo', 'l') eq 2", &u)); // characters, not bytes
        assert!(check("indexof('abc', 'a') eq 0", &u));
        assert!(check("indexof('abc', 'x') eq -1", &u));
        assert!(check("indexof('abc', '') eq 0", &u));
        assert!(check("length('héllo') eq 5", &u));
        assert!(check("length('') eq 0", &u));
        assert!(check("length(groups) eq 3", &u));
        assert!(check("length(groups) eq 0", &conn("c", None, &[])));
        assert!(check("length(trim(userId)) eq 10", &u));
    }

    #[test]
    fn function_and_identifier_names_are_case_insensitive() {
        let u = user1();
        assert!(check("USERID eq 'user1'", &u));
        assert!(check("UserId eq 'user1' and ConnectionID eq 'conn-a'", &u));
        assert!(check("'group1' in GROUPS and LENGTH(Groups) eq 2", &u));
        assert!(check("ToLower('AB') eq 'ab' and TOUPPER('ab') eq 'AB'", &u));
        assert!(check(
            "StartsWith(userId, 'us') and ENDSWITH(userId, '1')",
            &u
        ));
        assert!(check(
            "Contains(userId, 'ser') and IndexOf(userId, 's') eq 1",
            &u
        ));
        assert!(check(
            "Trim(' a ') eq 'a' and SubString('ab', 1) eq 'b'",
            &u
        ));
        assert!(check("Concat('a', 'b') eq 'ab'", &u));
    }

    // ---- literals and quoting ----------------------------------------------------------------

    #[test]
    fn string_literals() {
        let u = conn("c", Some("it's"), &[]);
        assert!(check("userId eq 'it''s'", &u));
        assert!(check("'''' eq concat('''', '')", &u));
        assert!(check("length('''') eq 1", &u));
        assert!(check("length('''''') eq 2", &u));
        assert!(check("'' eq ''", &u));
        assert!(check("'a b  c' eq concat('a b ', ' c')", &u));
        assert!(check("'日本' eq '日本' and length('日本') eq 2", &u));
        assert!(check("'(and or not)' eq '(and or not)'", &u));
        assert!(check("'userId' ne userId", &u));
    }

    #[test]
    fn whitespace_is_free() {
        let u = user1();
        assert!(check("  userId\teq\n'user1'  ", &u));
        assert!(check("userId eq'user1'", &u));
        assert!(check("(userId eq 'user1')and('group1' in groups)", &u));
        assert!(check("tolower( userId )eq 'user1'", &u));
    }

    // ---- nulls -------------------------------------------------------------------------------

    #[test]
    fn null_user_ids() {
        let a = anonymous();
        assert!(check("userId eq null", &a));
        assert!(check("null eq userId", &a));
        assert!(!check("userId ne null", &a));
        assert!(!check("userId eq 'x'", &a));
        assert!(check("userId ne 'x'", &a));
        assert!(!check("userId gt 'a'", &a));
        assert!(!check("userId le 'z'", &a));
        assert!(!check("userId in ('a', 'b')", &a));
        assert!(check("userId in ('a', null)", &a));
        assert!(!check("userId in groups", &a));
        assert!(check("null eq null", &a));
        // Functions of null are null, comparisons with null are definite.
        assert!(!check("tolower(userId) eq 'x'", &a));
        assert!(check("tolower(userId) eq null", &a));
        assert!(check("length(userId) eq null", &a));
        assert!(!check("length(userId) gt 5", &a));
        assert!(!check("length(userId) le 5", &a));
        assert!(check("concat(userId, 'x') eq null", &a));
        assert!(check("substring(userId, 1) eq null", &a));
        assert!(check(
            "trim(userId) eq null and toupper(userId) eq null",
            &a
        ));
        assert!(check("indexof(userId, 'a') eq null", &a));
        assert!(check("contains(userId, 'a') eq null", &a));
        // A null Bool neither matches nor, negated, matches.
        assert!(!check("contains(userId, 'a')", &a));
        assert!(!check("not contains(userId, 'a')", &a));
        assert!(!check(
            "startswith(userId, 'a') or endswith(userId, 'a')",
            &a
        ));
        assert!(check("startswith(userId, 'a') or true", &a));
        assert!(!check("startswith(userId, 'a') and true", &a));
        assert!(!check("startswith(userId, 'a') and false", &a));
        assert!(check("not (startswith(userId, 'a') and false)", &a));
        // The null literal as a function argument.
        assert!(check("tolower(null) eq null and length(null) eq null", &a));
        assert!(check("substring('abc', null) eq null", &a));
        // Anonymous connections still have everything else.
        assert!(check(
            "'group1' in groups and startswith(connectionId, 'anon')",
            &a
        ));
    }

    // ---- errors ------------------------------------------------------------------------------

    #[test]
    fn error_display_includes_the_position() {
        let e = error("usrId eq 'a'");
        assert_eq!(e.position, 1);
        assert!(
            e.to_string().ends_with("(at character 1 of the filter)"),
            "{e}"
        );
    }

    #[test]
    fn lexical_errors() {
        assert_error("userId eq 'abc", 11, &["unterminated string literal"]);
        assert_error("userId eq 'it''s", 11, &["unterminated string literal"]);
        assert_error(
            "userId eq \"a\"",
            11,
            &["unexpected character '\"'", "single quotes"],
        );
        assert_error("userId == 'a'", 8, &["unexpected character '='"]);
        assert_error("length(userId) gt 1.5", 19, &["invalid number '1.5'"]);
        assert_error("length(userId) gt 5x", 19, &["invalid number '5x'"]);
        assert_error(
            "length(userId) gt 99999999999999999999",
            19,
            &["99999999999999999999", "out of range"],
        );
        assert_error("userId eq - 5", 11, &["unexpected character '-'"]);
        // Positions count characters, not bytes.
        assert_error("'é' eq usrId", 8, &["unknown identifier 'usrId'"]);
    }

    #[test]
    fn syntax_errors() {
        assert_error("", 1, &["expected an expression", "end of input"]);
        assert_error("   ", 4, &["expected an expression", "end of input"]);
        assert_error(
            "(userId eq 'a'",
            15,
            &["expected ')'", "found end of input"],
        );
        assert_error(
            "(userId eq 'a' 'b')",
            16,
            &["expected ')'", "string literal 'b'"],
        );
        assert_error("userId eq", 10, &["expected an expression", "end of input"]);
        assert_error(
            "userId eq 'a' and",
            18,
            &["expected an expression", "end of input"],
        );
        assert_error(
            "and userId eq 'a'",
            1,
            &["expected an expression but found 'and'"],
        );
        assert_error(
            "userId eq 'a')",
            14,
            &["expected an operator or end of input", "')'"],
        );
        assert_error(
            "userId eq 'a' 'b'",
            15,
            &["expected an operator", "string literal 'b'"],
        );
        assert_error("()", 2, &["expected an expression but found ')'"]);
        assert_error(
            "userId in ()",
            12,
            &["expected an expression but found ')'"],
        );
        assert_error("userId in ('a' 'b')", 16, &["expected ',' or ')'", "'b'"]);
        assert_error(
            "userId in ('a',)",
            16,
            &["expected an expression but found ')'"],
        );
        assert_error(
            "contains(userId 'a')",
            17,
            &["expected ',' or ')'", "contains"],
        );
        assert_error(
            "contains(userId, 'a'",
            21,
            &["expected ',' or ')'", "end of input"],
        );
        assert_error(
            "tolower eq 'a'",
            9,
            &["expected '(' after the function name 'tolower'"],
        );
    }

    #[test]
    fn unknown_names() {
        assert_error(
            "usrId eq 'a'",
            1,
            &[
                "unknown identifier 'usrId'",
                "userId, connectionId and groups",
            ],
        );
        assert_error("lower(userId) eq 'a'", 1, &["unknown function 'lower'"]);
        assert_error("userId(1) eq 'a'", 1, &["unknown function 'userId'"]);
        assert_error(
            "userId eq 'a' and x in groups",
            19,
            &["unknown identifier 'x'"],
        );
    }

    #[test]
    fn keywords_are_lower_case() {
        assert_error(
            "userId EQ 'a'",
            8,
            &["'EQ'", "keywords are lower-case: 'eq'"],
        );
        assert_error(
            "true AND false",
            6,
            &["'AND'", "keywords are lower-case: 'and'"],
        );
        assert_error(
            "TRUE",
            1,
            &["unknown identifier 'TRUE'", "lower-case: 'true'"],
        );
        assert_error(
            "userId eq NULL",
            11,
            &["unknown identifier 'NULL'", "'null'"],
        );
        assert_error("NOT true", 1, &["unknown identifier 'NOT'"]);
        assert_error(
            "(true Or false)",
            7,
            &["expected ')'", "'Or'", "lower-case: 'or'"],
        );
    }

    #[test]
    fn type_errors() {
        // `not` binds tighter than `gt`, so it is applied to an Int: the service's own example.
        assert_error(
            "not length(userId) gt 5",
            5,
            &["'not length(userId)'", "'Int'", "Bool"],
        );
        assert_error(
            "not userId eq 'a'",
            5,
            &["'not userId'", "'String'", "Bool"],
        );
        assert_error("not 'g' in groups", 5, &["'not'", "'String'"]);
        assert_error("groups eq 'x'", 1, &["'groups' is a collection"]);
        assert_error("'x' eq groups", 8, &["'groups' is a collection"]);
        assert_error(
            "tolower(groups) eq 'x'",
            9,
            &["argument 1 of 'tolower'", "'Collection'"],
        );
        assert_error("userId gt 5", 11, &["'userId gt 5'", "'String'", "'Int'"]);
        assert_error("length(userId) eq '5'", 19, &["'Int'", "'String'"]);
        assert_error("userId eq true", 11, &["'String'", "'Bool'"]);
        assert_error("true gt false", 6, &["Bool values", "'eq' or 'ne'", "'gt'"]);
        assert_error(
            "userId gt null",
            11,
            &["null can only be compared with 'eq' or 'ne'", "'gt'"],
        );
        assert_error("null le userId", 1, &["null", "'le'"]);
        assert_error("userId", 1, &["must be a Bool expression", "'String'"]);
        assert_error("length(groups)", 1, &["must be a Bool expression", "'Int'"]);
        assert_error("groups", 1, &["must be a Bool expression", "'Collection'"]);
        assert_error("null", 1, &["must be a Bool expression", "'Null'"]);
        assert_error("  'a'", 3, &["must be a Bool expression"]);
        assert_error(
            "userId and true",
            1,
            &["operands of 'and' must be Bool", "'userId'", "'String'"],
        );
        assert_error("true or 5", 9, &["operands of 'or' must be Bool", "'Int'"]);
        assert_error(
            "true and null",
            10,
            &["operands of 'and' must be Bool", "'Null'"],
        );
        assert_error("userId in (1, 2)", 12, &["'in' list", "'Int'", "'String'"]);
        assert_error("userId in ('a', groups)", 17, &["'groups' is a collection"]);
        assert_error("userId in connectionId", 11, &["after 'in'", "'String'"]);
        assert_error("5 in groups", 1, &["only a String", "'Int'"]);
        assert_error(
            "null in ('a')",
            1,
            &["null cannot be the left operand of 'in'"],
        );
        assert_error("groups in ('a')", 1, &["'groups' is a collection"]);
        assert_error(
            "contains(userId)",
            1,
            &["'contains' takes 2 arguments, but 1 was given"],
        );
        assert_error(
            "length(userId, 'a') eq 1",
            1,
            &["'length' takes 1 argument, but 2 were given"],
        );
        assert_error(
            "substring('a') eq 'a'",
            1,
            &["'substring' takes 2 or 3 arguments"],
        );
        assert_error(
            "substring('a', 1, 2, 3) eq 'a'",
            1,
            &["2 or 3 arguments, but 4 were given"],
        );
        assert_error(
            "trim() eq ''",
            1,
            &["'trim' takes 1 argument, but 0 were given"],
        );
        assert_error(
            "substring(userId, '1') eq 'a'",
            19,
            &["argument 2 of 'substring'", "'Int'", "'String'"],
        );
        assert_error(
            "startswith(userId, 1)",
            20,
            &["argument 2 of 'startswith'", "'String'", "'Int'"],
        );
        assert_error(
            "length(true) eq 1",
            8,
            &["argument 1 of 'length'", "'Bool'"],
        );
    }

    #[test]
    fn long_snippets_are_cut_short() {
        let long = format!("'{}' eq '{}' and 5", "a".repeat(100), "b".repeat(100));
        let e = error(&long);
        assert!(e.message.contains("operands of 'and'"), "{e}");
        let long_operand = format!("userId gt {}", "1".repeat(18));
        assert!(error(&long_operand).message.contains("'Int'"));
        let e = error(&format!("not concat('{}', 'x')", "a".repeat(100)));
        assert!(e.message.contains("..."), "{e}");
        assert!(e.message.len() < 250, "{e}");
    }

    // ---- limits ------------------------------------------------------------------------------

    #[test]
    fn at_most_100_clauses() {
        let clauses = |n: usize| vec!["userId eq 'a'"; n].join(" or ");
        assert!(check(&clauses(100), &conn("c", Some("a"), &[])));
        let text = clauses(101);
        let e = error(&text);
        // The 101st `eq`: 100 clauses of 13 characters and 100 " or " of 4, then "userId ".
        assert_eq!(e.position, 100 * 17 + 8, "{e}");
        assert!(e.message.contains("too many clauses"), "{e}");
        // `in` and Bool functions count too; other functions and logical operators do not.
        let mixed = vec!["'g' in groups and contains(tolower(userId), 'a')"; 50].join(" or ");
        assert!(Filter::parse(&mixed).is_ok());
        let mixed = format!("{mixed} or true");
        assert!(Filter::parse(&mixed).is_ok());
        let mixed = format!("{mixed} or startswith(userId, 'a')");
        assert!(error(&mixed).message.contains("too many clauses"));
        let in_lists = vec!["userId in ('a', 'b', 'c')"; 101].join(" or ");
        assert!(error(&in_lists).message.contains("too many clauses"));
    }

    #[test]
    fn at_most_4096_characters() {
        let pad = |n: usize| format!("true{}", " ".repeat(n - 4));
        assert!(check(&pad(4096), &user1()));
        assert_error(&pad(4097), 4097, &["4097 characters", "at most 4096"]);
        // Characters, not bytes.
        let text = format!("'{}' eq ''", "é".repeat(4000));
        assert!(Filter::parse(&text).is_ok());
    }

    #[test]
    fn at_most_32_levels_of_nesting() {
        let parens = |n: usize| format!("{}true{}", "(".repeat(n), ")".repeat(n));
        assert!(check(&parens(32), &user1()));
        assert_error(&parens(33), 33, &["nests too deeply", "32"]);
        let nots = |n: usize| format!("{}true", "not ".repeat(n));
        assert!(check(&nots(32), &user1()));
        assert_error(&nots(33), 129, &["nests too deeply"]);
        let calls = |n: usize| format!("{}'A'{} eq 'a'", "tolower(".repeat(n), ")".repeat(n));
        assert!(check(&calls(32), &user1()));
        assert_error(&calls(33), 264, &["nests too deeply"]);
        // Thousands of `not`s are refused without exhausting the stack.
        let e = error(&nots(1000));
        assert!(e.message.contains("nests too deeply"));
        let e = error(&format!("{}true", "(".repeat(4000)));
        assert!(e.message.contains("nests too deeply"));
    }

    #[test]
    fn long_flat_chains_do_not_nest() {
        let chain = vec!["true"; 450].join(" and ");
        assert!(chain.chars().count() <= 4096);
        assert!(check(&chain, &user1()));
        let chain = vec!["false"; 400].join(" or ");
        assert!(!check(&chain, &user1()));
    }

    // ---- evaluation cost ---------------------------------------------------------------------

    #[test]
    fn simple_values_borrow_instead_of_allocating() {
        let u = conn("Conn", Some("user1"), &["g"]);
        let borrowed = |text: &str| {
            let tokens = lex(text).expect("lexes");
            let mut parser = Parser {
                text,
                tokens: tokens.0,
                end: tokens.1,
                next: 0,
                depth: 0,
                clauses: 0,
            };
            let typed = parser.parse_or().expect("parses");
            let Node::Scalar(expr) = typed.node else {
                panic!("not a scalar")
            };
            matches!(expr.eval(&u), Value::Str(Cow::Borrowed(_)))
        };
        assert!(borrowed("userId"));
        assert!(borrowed("connectionId"));
        assert!(borrowed("'literal'"));
        assert!(borrowed("tolower(userId)")); // already lower-case
        assert!(borrowed("toupper('ABC')")); // already upper-case
        assert!(borrowed("trim(userId)"));
        assert!(borrowed("substring(userId, 1, 2)"));
        assert!(borrowed("concat(userId, '')"));
        assert!(!borrowed("tolower(connectionId)"));
        assert!(!borrowed("concat(userId, 'x')"));
    }

    #[test]
    fn filters_are_shareable() {
        fn assert_send_sync_clone<T: Send + Sync + Clone + 'static>() {}
        assert_send_sync_clone::<Filter>();
        assert_send_sync_clone::<FilterError>();
        let f = Filter::parse("'group1' in groups").expect("parses");
        let g = f.clone();
        assert!(g.matches(&user1()));
        assert!(f.matches(&anonymous()));
        assert!(!f.matches(&conn("c", None, &[])));
    }
}
