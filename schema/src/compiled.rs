//! The compiled schema: definitions and relations addressed by small integer ids, every
//! reference resolved and type-checked. Evaluation only ever sees this form.

use rustc_hash::FxHashMap as HashMap;

use crate::names::NameIndex;

/// Index of a definition in [`CompiledSchema::definitions`].
pub type TypeId = u16;
/// Index of a relation or permission in [`Definition::relations`].
pub type RelationId = u16;

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CompiledSchema {
    /// `use expiration` was declared.
    pub uses_expiration: bool,
    pub definitions: Vec<Definition>,
    pub caveats: Vec<Caveat>,
    pub(crate) type_index: NameIndex<TypeId>,
    pub(crate) caveat_index: HashMap<String, usize>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Definition {
    pub name: String,
    pub doc: Vec<String>,
    /// Relations and permissions, in source order.
    pub relations: Vec<Relation>,
    pub(crate) relation_index: NameIndex<RelationId>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Relation {
    pub name: String,
    pub doc: Vec<String>,
    pub kind: RelationKind,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RelationKind {
    /// A relation: relationships are written to it, with these allowed subject types.
    Direct(Vec<AllowedSubject>),
    /// A permission: computed from a rewrite, never written directly.
    Permission(Rewrite),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AllowedKind {
    /// `user` (equivalently `user#...`): the object itself.
    Object,
    /// `user:*`: every object of the type.
    Wildcard,
    /// `group#member`: the subject set of a relation or permission of the type.
    SubjectSet(RelationId),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct AllowedSubject {
    pub type_id: TypeId,
    pub kind: AllowedKind,
    /// Index into [`CompiledSchema::caveats`].
    pub caveat: Option<u16>,
    pub expiration: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rewrite {
    /// `nil`: the empty set.
    Nil,
    /// Another relation or permission of the same object.
    Computed(RelationId),
    /// `tupleset->computed`: for every subject object of `tupleset`, `computed` on it.
    /// `all` is true for `tupleset.all(computed)`: every such object must qualify (and
    /// there must be at least one).
    Arrow(Arrow),
    Union(Vec<Rewrite>),
    Intersection(Vec<Rewrite>),
    Exclusion(Box<Rewrite>, Box<Rewrite>),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Arrow {
    pub tupleset: RelationId,
    pub computed: String,
    pub kind: ArrowKind,
    /// For each subject type of `tupleset` that has `computed`, its relation id there,
    /// sorted by type id. Subject types without it contribute nothing.
    pub targets: Vec<(TypeId, RelationId)>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ArrowKind {
    /// `->` (and `.any()`, which means the same)
    Any,
    /// `.all()`
    All,
    /// `.any()`, kept apart from `->` so the printer writes back what was written.
    AnyFunction,
}

#[derive(Debug, Clone)]
pub struct Caveat {
    pub name: String,
    pub doc: Vec<String>,
    pub params: Vec<(String, String)>,
    /// The CEL expression, verbatim.
    pub expression: String,
    /// The expression compiled over the parameters; present in every schema that
    /// compiled without errors.
    pub program: Option<std::sync::Arc<crate::caveat::CaveatProgram>>,
}

/// Two caveats are equal when they are written the same: the program follows from
/// the parameters and the expression.
impl PartialEq for Caveat {
    fn eq(&self, other: &Self) -> bool {
        self.name == other.name && self.doc == other.doc && self.params == other.params && self.expression == other.expression
    }
}

impl Eq for Caveat {}

impl CompiledSchema {
    pub fn type_id(&self, name: &str) -> Option<TypeId> {
        self.type_index.get(name)
    }

    pub fn definition(&self, id: TypeId) -> Option<&Definition> {
        self.definitions.get(usize::from(id))
    }

    pub fn definition_by_name(&self, name: &str) -> Option<(TypeId, &Definition)> {
        let id = self.type_id(name)?;
        Some((id, self.definition(id)?))
    }

    pub fn caveat_id(&self, name: &str) -> Option<u16> {
        self.caveat_index
            .get(name)
            .and_then(|i| u16::try_from(*i).ok())
    }

    pub fn caveat(&self, id: u16) -> Option<&Caveat> {
        self.caveats.get(usize::from(id))
    }

    /// The relation `rel` of type `ty`, if both exist.
    pub fn relation(&self, ty: TypeId, rel: RelationId) -> Option<&Relation> {
        self.definition(ty)?.relations.get(usize::from(rel))
    }

    /// `type#relation` for messages.
    pub fn relation_label(&self, ty: TypeId, rel: RelationId) -> String {
        match (self.definition(ty), self.relation(ty, rel)) {
            (Some(d), Some(r)) => format!("{}#{}", d.name, r.name),
            _ => format!("<type {ty}>#<relation {rel}>"),
        }
    }
}

impl Definition {
    pub fn relation_id(&self, name: &str) -> Option<RelationId> {
        self.relation_index.get(name)
    }

    pub fn relation(&self, id: RelationId) -> Option<&Relation> {
        self.relations.get(usize::from(id))
    }
}

impl Relation {
    pub fn is_permission(&self) -> bool {
        matches!(self.kind, RelationKind::Permission(_))
    }

    /// The allowed subject types of a relation; empty for a permission.
    pub fn allowed_subjects(&self) -> &[AllowedSubject] {
        match &self.kind {
            RelationKind::Direct(a) => a,
            RelationKind::Permission(_) => &[],
        }
    }
}
