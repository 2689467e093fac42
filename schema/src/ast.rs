//! The syntax tree the parser produces: names keep their spans so the compiler can
//! point at the offending identifier.

use crate::span::Span;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Name {
    pub text: String,
    pub span: Span,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SchemaAst {
    pub items: Vec<Item>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Item {
    /// `use expiration`
    Use(Name),
    Definition(DefinitionAst),
    Caveat(CaveatAst),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DefinitionAst {
    pub name: Name,
    pub doc: Vec<String>,
    pub members: Vec<Member>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Member {
    Relation(RelationAst),
    Permission(PermissionAst),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelationAst {
    pub name: Name,
    pub doc: Vec<String>,
    pub subject_types: Vec<SubjectTypeAst>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SubjectKindAst {
    /// `user`
    Object,
    /// `user:*`
    Wildcard,
    /// `group#...`
    Ellipsis,
    /// `group#member`
    Relation(Name),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubjectTypeAst {
    pub type_name: Name,
    pub kind: SubjectKindAst,
    pub caveat: Option<Name>,
    pub expiration: Option<Span>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PermissionAst {
    pub name: Name,
    pub doc: Vec<String>,
    pub expr: ExprAst,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BinaryOp {
    Union,
    Intersection,
    Exclusion,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExprAst {
    /// A relation or permission name, or `nil`.
    Ident(Name),
    /// `left->right`; `left` is an identifier unless someone chained arrows.
    Arrow { left: Box<ExprAst>, right: Name },
    /// `left.all(right)` / `left.any(right)`.
    FunctionArrow {
        left: Name,
        function: Name,
        right: Name,
    },
    Binary {
        op: BinaryOp,
        left: Box<ExprAst>,
        right: Box<ExprAst>,
    },
    /// Stands in for an expression that failed to parse (the error is already reported).
    Error(Span),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaveatParamAst {
    pub name: Name,
    pub type_ref: String,
    pub type_span: Span,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaveatAst {
    pub name: Name,
    pub doc: Vec<String>,
    pub params: Vec<CaveatParamAst>,
    /// The expression, trimmed.
    pub expression: String,
    /// The `{ ... }` block.
    pub expression_span: Span,
    /// Where the trimmed expression starts in the schema text.
    pub expression_start: usize,
}
