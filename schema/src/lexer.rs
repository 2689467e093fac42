//! Lexer for the schema language: turns text into tokens with spans, collecting comments
//! so the parser can attach them as doc comments. It never fails: unknown characters
//! become error tokens and lexing goes on.

use crate::span::Span;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenKind {
    Ident(String),
    LBrace,
    RBrace,
    LParen,
    RParen,
    Colon,
    Pipe,
    Equals,
    Plus,
    Minus,
    Amp,
    Arrow,
    Dot,
    Hash,
    Star,
    Comma,
    Slash,
    Lt,
    Gt,
    Ellipsis,
    /// A character the language does not use.
    Unknown(char),
    /// A `/*` comment that never ends.
    UnterminatedComment,
    Eof,
}

impl TokenKind {
    /// How the token reads in an error message.
    pub fn describe(&self) -> String {
        match self {
            TokenKind::Ident(s) => format!("`{s}`"),
            TokenKind::LBrace => "`{`".into(),
            TokenKind::RBrace => "`}`".into(),
            TokenKind::LParen => "`(`".into(),
            TokenKind::RParen => "`)`".into(),
            TokenKind::Colon => "`:`".into(),
            TokenKind::Pipe => "`|`".into(),
            TokenKind::Equals => "`=`".into(),
            TokenKind::Plus => "`+`".into(),
            TokenKind::Minus => "`-`".into(),
            TokenKind::Amp => "`&`".into(),
            TokenKind::Arrow => "`->`".into(),
            TokenKind::Dot => "`.`".into(),
            TokenKind::Hash => "`#`".into(),
            TokenKind::Star => "`*`".into(),
            TokenKind::Comma => "`,`".into(),
            TokenKind::Slash => "`/`".into(),
            TokenKind::Lt => "`<`".into(),
            TokenKind::Gt => "`>`".into(),
            TokenKind::Ellipsis => "`...`".into(),
            TokenKind::Unknown(c) => format!("`{}`", c.escape_default()),
            TokenKind::UnterminatedComment => "an unterminated comment".into(),
            TokenKind::Eof => "end of input".into(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Token {
    pub kind: TokenKind,
    pub span: Span,
    /// Comments between the previous token and this one, verbatim; a blank line starts
    /// a new group, and only the last group is kept.
    pub comments: Vec<String>,
    /// Whether a blank line separates the last comment from this token.
    pub blank_line_before: bool,
}

/// An on-demand lexer: the parser pulls tokens one at a time, and can take raw text
/// (a caveat's CEL body) directly from the input.
#[derive(Debug)]
pub struct Lexer<'a> {
    text: &'a str,
    pos: usize,
}

fn is_ident_start(c: char) -> bool {
    c.is_ascii_alphabetic() || c == '_'
}

fn is_ident_continue(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

impl<'a> Lexer<'a> {
    pub fn new(text: &'a str) -> Self {
        Lexer { text, pos: 0 }
    }

    pub fn offset(&self) -> usize {
        self.pos
    }

    pub fn text(&self) -> &'a str {
        self.text
    }

    /// Moves to `offset` (clamped to the text and to a character boundary).
    pub fn seek(&mut self, offset: usize) {
        let mut offset = offset.min(self.text.len());
        while !self.text.is_char_boundary(offset) {
            offset -= 1;
        }
        self.pos = offset;
    }

    fn rest(&self) -> &'a str {
        self.text.get(self.pos..).unwrap_or("")
    }

    fn peek_char(&self) -> Option<char> {
        self.rest().chars().next()
    }

    /// Skips whitespace and comments, returning the comments seen and whether a blank
    /// line followed the last of them.
    fn skip_trivia(&mut self) -> Result<(Vec<String>, bool), Token> {
        let mut comments = Vec::new();
        let mut newlines_since_comment = 0usize;
        loop {
            let rest = self.rest();
            let Some(c) = rest.chars().next() else { break };
            if c == '\n' {
                newlines_since_comment += 1;
                self.pos += 1;
            } else if c.is_whitespace() {
                self.pos += c.len_utf8();
            } else if rest.starts_with("//") {
                if newlines_since_comment >= 2 {
                    comments.clear();
                }
                let len = rest.find('\n').unwrap_or(rest.len());
                comments.push(rest.get(..len).unwrap_or("").trim_end().to_string());
                self.pos += len;
                newlines_since_comment = 0;
            } else if rest.starts_with("/*") {
                if newlines_since_comment >= 2 {
                    comments.clear();
                }
                let start = self.pos;
                match rest.get(2..).and_then(|r| r.find("*/")) {
                    Some(end) => {
                        let len = end + 4;
                        comments.push(rest.get(..len).unwrap_or("").to_string());
                        self.pos += len;
                        newlines_since_comment = 0;
                    }
                    None => {
                        self.pos = self.text.len();
                        return Err(Token {
                            kind: TokenKind::UnterminatedComment,
                            span: Span::new(start, start + 2),
                            comments,
                            blank_line_before: false,
                        });
                    }
                }
            } else {
                break;
            }
        }
        // A comment followed by a blank line does not document the next item.
        let blank = !comments.is_empty() && newlines_since_comment >= 2;
        Ok((comments, blank))
    }

    pub fn next_token(&mut self) -> Token {
        let (comments, blank_line_before) = match self.skip_trivia() {
            Ok(v) => v,
            Err(tok) => return tok,
        };
        let start = self.pos;
        let rest = self.rest();
        let Some(c) = rest.chars().next() else {
            return Token {
                kind: TokenKind::Eof,
                span: Span::new(start, start),
                comments,
                blank_line_before,
            };
        };
        let (kind, len) = if is_ident_start(c) {
            let len = rest
                .char_indices()
                .find(|(_, ch)| !is_ident_continue(*ch))
                .map(|(i, _)| i)
                .unwrap_or(rest.len());
            (
                TokenKind::Ident(rest.get(..len).unwrap_or("").to_string()),
                len,
            )
        } else if rest.starts_with("->") {
            (TokenKind::Arrow, 2)
        } else if rest.starts_with("...") {
            (TokenKind::Ellipsis, 3)
        } else {
            let kind = match c {
                '{' => TokenKind::LBrace,
                '}' => TokenKind::RBrace,
                '(' => TokenKind::LParen,
                ')' => TokenKind::RParen,
                ':' => TokenKind::Colon,
                '|' => TokenKind::Pipe,
                '=' => TokenKind::Equals,
                '+' => TokenKind::Plus,
                '-' => TokenKind::Minus,
                '&' => TokenKind::Amp,
                '.' => TokenKind::Dot,
                '#' => TokenKind::Hash,
                '*' => TokenKind::Star,
                ',' => TokenKind::Comma,
                '/' => TokenKind::Slash,
                '<' => TokenKind::Lt,
                '>' => TokenKind::Gt,
                other => TokenKind::Unknown(other),
            };
            (kind, c.len_utf8())
        };
        self.pos += len;
        Token {
            kind,
            span: Span::new(start, start + len),
            comments,
            blank_line_before,
        }
    }

    /// Reads a `{ ... }` block verbatim (a caveat's CEL expression), honouring nested
    /// braces and quoted strings. Returns the text between the braces and its span, or
    /// the offset where the problem is.
    pub fn raw_braced_block(&mut self) -> Result<(String, Span), (Span, &'static str)> {
        if let Err(tok) = self.skip_trivia() {
            return Err((tok.span, "unterminated comment"));
        }
        let open = self.pos;
        if self.peek_char() != Some('{') {
            return Err((
                Span::new(open, open + 1),
                "expected `{` to open the caveat expression",
            ));
        }
        self.pos += 1;
        let body_start = self.pos;
        let mut depth = 1usize;
        let mut quote: Option<char> = None;
        let mut escaped = false;
        while let Some(c) = self.peek_char() {
            self.pos += c.len_utf8();
            if let Some(q) = quote {
                if escaped {
                    escaped = false;
                } else if c == '\\' {
                    escaped = true;
                } else if c == q {
                    quote = None;
                }
                continue;
            }
            match c {
                '"' | '\'' | '`' => quote = Some(c),
                '{' => depth += 1,
                '}' => {
                    depth -= 1;
                    if depth == 0 {
                        let body = self.text.get(body_start..self.pos - 1).unwrap_or("");
                        return Ok((body.to_string(), Span::new(open, self.pos)));
                    }
                }
                _ => {}
            }
        }
        Err((
            Span::new(open, open + 1),
            "caveat expression is missing its closing `}`",
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kinds(text: &str) -> Vec<TokenKind> {
        let mut lx = Lexer::new(text);
        let mut out = Vec::new();
        loop {
            let t = lx.next_token();
            if t.kind == TokenKind::Eof {
                break;
            }
            out.push(t.kind);
        }
        out
    }

    #[test]
    fn lexes_operators_and_identifiers() {
        assert_eq!(
            kinds("permission view = a->b + c.all(d) - nil & group#..."),
            vec![
                TokenKind::Ident("permission".into()),
                TokenKind::Ident("view".into()),
                TokenKind::Equals,
                TokenKind::Ident("a".into()),
                TokenKind::Arrow,
                TokenKind::Ident("b".into()),
                TokenKind::Plus,
                TokenKind::Ident("c".into()),
                TokenKind::Dot,
                TokenKind::Ident("all".into()),
                TokenKind::LParen,
                TokenKind::Ident("d".into()),
                TokenKind::RParen,
                TokenKind::Minus,
                TokenKind::Ident("nil".into()),
                TokenKind::Amp,
                TokenKind::Ident("group".into()),
                TokenKind::Hash,
                TokenKind::Ellipsis,
            ]
        );
    }

    #[test]
    fn collects_comments() {
        let mut lx = Lexer::new("// one\n/** two */\ndefinition");
        let t = lx.next_token();
        assert_eq!(
            t.comments,
            vec!["// one".to_string(), "/** two */".to_string()]
        );
        assert!(!t.blank_line_before);
    }

    #[test]
    fn unterminated_comment_is_a_token() {
        assert_eq!(
            kinds("a /* b"),
            vec![TokenKind::Ident("a".into()), TokenKind::UnterminatedComment]
        );
    }

    #[test]
    fn raw_block_respects_strings() {
        let mut lx = Lexer::new(" { a == '}' && b }rest");
        let (body, _) = lx.raw_braced_block().unwrap();
        assert_eq!(body, " a == '}' && b ");
    }
}
