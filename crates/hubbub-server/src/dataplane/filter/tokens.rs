//! The filter language's tokens: words, numbers, strings, punctuation, with their positions.

use super::FilterError;

#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Tok {
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
pub(super) struct Token {
    pub(super) tok: Tok,
    /// Byte offsets of the token's source text.
    pub(super) start: usize,
    pub(super) end: usize,
    /// 1-based character position of the token's first character.
    pub(super) pos: usize,
}

pub(super) const KEYWORDS: [&str; 13] = [
    "and", "or", "not", "eq", "ne", "gt", "ge", "lt", "le", "in", "true", "false", "null",
];

pub(super) fn is_word_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

pub(super) fn lex(text: &str) -> Result<(Vec<Token>, Token), FilterError> {
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
