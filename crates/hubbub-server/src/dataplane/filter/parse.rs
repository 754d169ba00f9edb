//! The filter parser: tokens to a type-checked expression, with positions for errors.

use super::*;

// ---------------------------------------------------------------------------------------------
// Parser and type checker

/// A parsed subexpression with its type and source span.
pub(super) struct Typed {
    pub(super) node: Node,
    pub(super) ty: Ty,
    /// Byte offsets of its source text.
    pub(super) start: usize,
    pub(super) end: usize,
    /// 1-based character position of its first token.
    pub(super) pos: usize,
}

pub(super) enum Node {
    Scalar(Expr),
    /// The `groups` collection: only the right side of `in` or the argument of `length`.
    Groups,
}

pub(super) struct Parser<'t> {
    pub(super) text: &'t str,
    pub(super) tokens: Vec<Token>,
    /// The end-of-input token, answered by `peek` past the last token.
    pub(super) end: Token,
    pub(super) next: usize,
    pub(super) depth: usize,
    pub(super) clauses: usize,
}

impl<'t> Parser<'t> {
    pub(super) fn peek(&self) -> &Token {
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
    pub(super) fn snippet(&self, start: usize, end: usize) -> String {
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
    pub(super) fn describe(&self, token: &Token) -> String {
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

    pub(super) fn parse_or(&mut self) -> Result<Typed, FilterError> {
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
