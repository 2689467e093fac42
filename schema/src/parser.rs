//! Recursive-descent parser: tokens -> [`SchemaAst`]. It never panics and never stops at
//! the first problem: after an error it skips to the next member or item and goes on,
//! so one run reports every syntax error it can.
//!
//! Operator precedence follows SpiceDB: `-` binds loosest, then `&`, then `+`; all are
//! left-associative; `->` and `.all()`/`.any()` bind tighter than any of them.

use crate::ast::*;
use crate::error::Sink;
use crate::lexer::{Lexer, Token, TokenKind};
use crate::span::Span;

/// Maximum nesting of parentheses; deeper input is rejected rather than risking the stack.
const MAX_NESTING: usize = 128;

/// Maximum number of `+ & -` operators in one permission. Every operator deepens the
/// (left-associative) syntax tree by one, and later stages walk it recursively, so
/// longer input is rejected rather than risking the stack.
const MAX_OPERATORS: usize = 500;

pub(crate) struct Parser<'a> {
    lexer: Lexer<'a>,
    current: Token,
    prev_end: usize,
    pub(crate) sink: Sink,
    nesting: usize,
    /// Operators seen so far in the permission being parsed.
    operators: usize,
}

/// Thrown inside the parser to unwind to the nearest recovery point; the error itself
/// is already in the sink.
struct Recover;

type PResult<T> = Result<T, Recover>;

fn is_keyword(tok: &TokenKind, kw: &str) -> bool {
    matches!(tok, TokenKind::Ident(s) if s == kw)
}

impl<'a> Parser<'a> {
    pub(crate) fn new(text: &'a str) -> Self {
        let mut lexer = Lexer::new(text);
        let current = lexer.next_token();
        let mut p = Parser {
            lexer,
            current,
            prev_end: 0,
            sink: Sink::default(),
            nesting: 0,
            operators: 0,
        };
        p.report_bad_token();
        p
    }

    fn report_bad_token(&mut self) {
        match &self.current.kind {
            TokenKind::Unknown(c) => {
                let msg = format!("unexpected character `{}`", c.escape_default());
                self.sink.push(self.current.span, msg);
            }
            TokenKind::UnterminatedComment => {
                self.sink
                    .push(self.current.span, "unterminated `/*` comment");
            }
            _ => {}
        }
    }

    fn bump(&mut self) -> Token {
        let next = self.lexer.next_token();
        let tok = std::mem::replace(&mut self.current, next);
        self.prev_end = tok.span.end;
        self.report_bad_token();
        tok
    }

    fn at(&self, kind: &TokenKind) -> bool {
        &self.current.kind == kind
    }

    fn at_keyword(&self, kw: &str) -> bool {
        is_keyword(&self.current.kind, kw)
    }

    fn error_here(&mut self, expected: &str) -> Recover {
        if matches!(
            self.current.kind,
            TokenKind::Unknown(_) | TokenKind::UnterminatedComment
        ) {
            // Already reported when it was lexed: one message per problem.
            return Recover;
        }
        let msg = format!(
            "expected {expected}, found {}",
            self.current.kind.describe()
        );
        self.sink.push(self.current.span, msg);
        Recover
    }

    fn expect(&mut self, kind: TokenKind, what: &str) -> PResult<Token> {
        if self.current.kind == kind {
            Ok(self.bump())
        } else {
            Err(self.error_here(what))
        }
    }

    fn ident(&mut self, what: &str) -> PResult<Name> {
        if let TokenKind::Ident(text) = &self.current.kind {
            let name = Name {
                text: text.clone(),
                span: self.current.span,
            };
            self.bump();
            Ok(name)
        } else {
            Err(self.error_here(what))
        }
    }

    /// `seg ('/' seg)*`, e.g. `org/identity_team/user`.
    fn type_name(&mut self, what: &str) -> PResult<Name> {
        let first = self.ident(what)?;
        let mut text = first.text;
        let start = first.span.start;
        let mut end = first.span.end;
        while self.at(&TokenKind::Slash) {
            self.bump();
            let seg = self.ident("a type name after `/`")?;
            text.push('/');
            text.push_str(&seg.text);
            end = seg.span.end;
        }
        Ok(Name {
            text,
            span: Span::new(start, end),
        })
    }

    fn doc_of(tok: &Token) -> Vec<String> {
        if tok.blank_line_before {
            Vec::new()
        } else {
            tok.comments.clone()
        }
    }

    pub(crate) fn parse_schema(&mut self) -> SchemaAst {
        let mut items = Vec::new();
        loop {
            match &self.current.kind {
                TokenKind::Eof => break,
                TokenKind::Ident(kw) if kw == "definition" => {
                    if let Ok(def) = self.definition() {
                        items.push(Item::Definition(def));
                    } else {
                        self.recover_top_level();
                    }
                }
                TokenKind::Ident(kw) if kw == "caveat" => {
                    if let Ok(c) = self.caveat() {
                        items.push(Item::Caveat(c));
                    } else {
                        self.recover_top_level();
                    }
                }
                TokenKind::Ident(kw) if kw == "use" => {
                    self.bump();
                    match self.ident("a feature name after `use`") {
                        Ok(flag) => items.push(Item::Use(flag)),
                        Err(Recover) => self.recover_top_level(),
                    }
                }
                _ => {
                    let _ = self.error_here("`definition`, `caveat` or `use`");
                    self.bump();
                    self.recover_top_level();
                }
            }
        }
        SchemaAst { items }
    }

    fn recover_top_level(&mut self) {
        let mut depth = 0usize;
        loop {
            match &self.current.kind {
                TokenKind::Eof => return,
                TokenKind::LBrace => depth += 1,
                TokenKind::RBrace => {
                    if depth <= 1 {
                        self.bump();
                        return;
                    }
                    depth -= 1;
                }
                TokenKind::Ident(kw)
                    if depth == 0 && (kw == "definition" || kw == "caveat" || kw == "use") =>
                {
                    return
                }
                _ => {}
            }
            self.bump();
        }
    }

    fn recover_member(&mut self) {
        loop {
            match &self.current.kind {
                TokenKind::Eof | TokenKind::RBrace => return,
                TokenKind::Ident(kw)
                    if kw == "relation"
                        || kw == "permission"
                        || kw == "definition"
                        || kw == "caveat" =>
                {
                    return
                }
                _ => {
                    self.bump();
                }
            }
        }
    }

    fn definition(&mut self) -> PResult<DefinitionAst> {
        let kw = self.bump();
        let doc = Self::doc_of(&kw);
        let name = self.type_name("a definition name")?;
        self.expect(TokenKind::LBrace, "`{` after the definition name")?;
        let mut members = Vec::new();
        loop {
            if self.at(&TokenKind::RBrace) {
                self.bump();
                break;
            }
            if self.at(&TokenKind::Eof) {
                let msg = format!("definition `{}` is missing its closing `}}`", name.text);
                self.sink.push(name.span, msg);
                break;
            }
            if self.at_keyword("definition") || self.at_keyword("caveat") {
                let msg = format!("definition `{}` is missing its closing `}}`", name.text);
                self.sink.push(name.span, msg);
                break;
            }
            let result = if self.at_keyword("relation") {
                self.relation().map(Member::Relation)
            } else if self.at_keyword("permission") {
                self.permission().map(Member::Permission)
            } else {
                Err(self.error_here("`relation`, `permission` or `}`"))
            };
            match result {
                Ok(m) => members.push(m),
                Err(Recover) => {
                    let before = self.lexer.offset();
                    self.recover_member();
                    if self.lexer.offset() == before
                        && !self.at(&TokenKind::RBrace)
                        && !self.at(&TokenKind::Eof)
                    {
                        if self.at_keyword("definition") || self.at_keyword("caveat") {
                            continue;
                        }
                        self.bump();
                    }
                }
            }
        }
        Ok(DefinitionAst { name, doc, members })
    }

    fn relation(&mut self) -> PResult<RelationAst> {
        let kw = self.bump();
        let doc = Self::doc_of(&kw);
        let name = self.ident("a relation name")?;
        self.expect(TokenKind::Colon, "`:` after the relation name")?;
        let mut subject_types = vec![self.subject_type()?];
        while self.at(&TokenKind::Pipe) {
            self.bump();
            subject_types.push(self.subject_type()?);
        }
        Ok(RelationAst {
            name,
            doc,
            subject_types,
        })
    }

    fn subject_type(&mut self) -> PResult<SubjectTypeAst> {
        let type_name = self.type_name("a subject type")?;
        let kind = if self.at(&TokenKind::Colon) {
            self.bump();
            self.expect(TokenKind::Star, "`*` after `:` (a wildcard)")?;
            SubjectKindAst::Wildcard
        } else if self.at(&TokenKind::Hash) {
            self.bump();
            if self.at(&TokenKind::Ellipsis) {
                self.bump();
                SubjectKindAst::Ellipsis
            } else {
                SubjectKindAst::Relation(self.ident("a relation name or `...` after `#`")?)
            }
        } else {
            SubjectKindAst::Object
        };
        let mut caveat = None;
        let mut expiration = None;
        if self.at_keyword("with") {
            self.bump();
            loop {
                let trait_name = self.type_name("`expiration` or a caveat name after `with`")?;
                if trait_name.text == "expiration" {
                    if expiration.is_some() {
                        self.sink
                            .push(trait_name.span, "`expiration` is listed twice");
                    }
                    expiration = Some(trait_name.span);
                } else {
                    if caveat.is_some() {
                        self.sink.push(
                            trait_name.span,
                            format!(
                                "only one caveat is allowed per subject type, found `{}`",
                                trait_name.text
                            ),
                        );
                    }
                    caveat = Some(trait_name);
                }
                if self.at_keyword("and") {
                    self.bump();
                } else {
                    break;
                }
            }
        }
        Ok(SubjectTypeAst {
            type_name,
            kind,
            caveat,
            expiration,
        })
    }

    fn permission(&mut self) -> PResult<PermissionAst> {
        let kw = self.bump();
        let doc = Self::doc_of(&kw);
        let name = self.ident("a permission name")?;
        self.expect(TokenKind::Equals, "`=` after the permission name")?;
        self.operators = 0;
        let expr = self.expr(0)?;
        Ok(PermissionAst { name, doc, expr })
    }

    /// Precedence climbing over the three set operators; level 0 is `-` (loosest).
    fn expr(&mut self, level: usize) -> PResult<ExprAst> {
        const LEVELS: [(TokenKind, BinaryOp); 3] = [
            (TokenKind::Minus, BinaryOp::Exclusion),
            (TokenKind::Amp, BinaryOp::Intersection),
            (TokenKind::Plus, BinaryOp::Union),
        ];
        let Some((tok, op)) = LEVELS.get(level) else {
            return self.arrow_expr();
        };
        let mut left = self.expr(level + 1)?;
        while self.at(tok) {
            let op_token = self.bump();
            self.operators += 1;
            if self.operators > MAX_OPERATORS {
                let msg = format!("expression has more than {MAX_OPERATORS} operators; split it into several permissions");
                self.sink.push(op_token.span, msg);
                return Err(Recover);
            }
            let right = self.expr(level + 1)?;
            left = ExprAst::Binary {
                op: *op,
                left: Box::new(left),
                right: Box::new(right),
            };
        }
        Ok(left)
    }

    fn arrow_expr(&mut self) -> PResult<ExprAst> {
        if self.at(&TokenKind::LParen) {
            let open = self.bump();
            self.nesting += 1;
            if self.nesting > MAX_NESTING {
                self.nesting -= 1;
                self.sink.push(open.span, "expression is nested too deeply");
                return Err(Recover);
            }
            let inner = self.expr(0);
            self.nesting -= 1;
            let inner = inner?;
            self.expect(TokenKind::RParen, "`)` to close the parenthesis")?;
            return Ok(inner);
        }
        let name = self.ident("a relation, permission, `nil` or `(`")?;
        if self.at(&TokenKind::Dot) {
            self.bump();
            let function = self.ident("`all` or `any` after `.`")?;
            self.expect(TokenKind::LParen, "`(` after the function name")?;
            let right = self.ident("a relation or permission name")?;
            self.expect(TokenKind::RParen, "`)`")?;
            return Ok(ExprAst::FunctionArrow {
                left: name,
                function,
                right,
            });
        }
        let mut expr = ExprAst::Ident(name);
        while self.at(&TokenKind::Arrow) {
            self.bump();
            let right = self.ident("a relation or permission name after `->`")?;
            expr = ExprAst::Arrow {
                left: Box::new(expr),
                right,
            };
        }
        Ok(expr)
    }

    fn caveat(&mut self) -> PResult<CaveatAst> {
        let kw = self.bump();
        let doc = Self::doc_of(&kw);
        let name = self.type_name("a caveat name")?;
        self.expect(TokenKind::LParen, "`(` to open the caveat's parameters")?;
        let mut params = Vec::new();
        if !self.at(&TokenKind::RParen) {
            loop {
                let pname = self.ident("a parameter name")?;
                let start = self.current.span.start;
                let type_ref = self.caveat_type()?;
                params.push(CaveatParamAst {
                    name: pname,
                    type_ref,
                    type_span: Span::new(start, self.prev_end),
                });
                if self.at(&TokenKind::Comma) {
                    self.bump();
                } else {
                    break;
                }
            }
        }
        if !self.at(&TokenKind::RParen) {
            return Err(self.error_here("`,` or `)` in the caveat's parameters"));
        }
        // The CEL body is read raw: the lexer stands right after the current `)`.
        let close_end = self.current.span.end;
        self.lexer.seek(close_end);
        let result = self.lexer.raw_braced_block();
        self.prev_end = self.lexer.offset();
        self.current = self.lexer.next_token();
        self.report_bad_token();
        match result {
            Ok((expression, span)) => {
                if expression.trim().is_empty() {
                    self.sink.push(
                        span,
                        format!("caveat `{}` has an empty expression", name.text),
                    );
                }
                let leading = expression.len() - expression.trim_start().len();
                Ok(CaveatAst {
                    name,
                    doc,
                    params,
                    expression: expression.trim().to_string(),
                    expression_span: span,
                    expression_start: span.start + 1 + leading,
                })
            }
            Err((span, msg)) => {
                self.sink.push(span, msg);
                Err(Recover)
            }
        }
    }

    fn caveat_type(&mut self) -> PResult<String> {
        let base = self.ident("a parameter type")?;
        if self.nesting > MAX_NESTING {
            self.sink
                .push(base.span, "parameter type is nested too deeply");
            return Err(Recover);
        }
        let mut out = base.text;
        if self.at(&TokenKind::Lt) {
            self.bump();
            out.push('<');
            loop {
                self.nesting += 1;
                let inner = self.caveat_type();
                self.nesting -= 1;
                let inner = inner?;
                out.push_str(&inner);
                if self.at(&TokenKind::Comma) {
                    self.bump();
                    out.push_str(", ");
                } else {
                    break;
                }
            }
            self.expect(TokenKind::Gt, "`>` to close the type parameters")?;
            out.push('>');
        }
        Ok(out)
    }
}

/// Parses schema text into a syntax tree plus every syntax error found.
pub fn parse(text: &str) -> (SchemaAst, Vec<crate::error::SchemaError>) {
    let mut p = Parser::new(text);
    let ast = p.parse_schema();
    (ast, p.sink.into_errors(text))
}
