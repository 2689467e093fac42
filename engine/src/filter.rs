//! Relationship filters: the `type[:id][#relation][@type[:id][#relation]]` selections
//! that ReadRelationships, DeleteRelationships and write preconditions take.

use arbiter_schema::{object_id_problem, WILDCARD_ID};

use crate::error::EngineError;
use crate::graph::{GraphVersion, ObjectKey, StoredRelationship, SubjectKey};
use crate::intern::{Interner, Sym, ELLIPSIS, WILDCARD};
use crate::schema_plan::SchemaPlan;

/// Which relationships a read, delete or precondition selects. Every field left `None`
/// matches anything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RelationshipFilter {
    pub resource_type: Option<String>,
    pub resource_id: Option<String>,
    pub relation: Option<String>,
    pub subject: Option<SubjectFilter>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubjectFilter {
    pub object_type: String,
    pub object_id: Option<String>,
    pub relation: SubjectRelationFilter,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum SubjectRelationFilter {
    /// Any subject of the type: objects and subject sets.
    #[default]
    Any,
    /// Only the objects themselves (`#...`).
    Object,
    /// Only subject sets with this relation.
    Relation(String),
}

impl RelationshipFilter {
    /// Parses `type[:id][#relation][@type[:id][#relation]]`; `#...` on the subject
    /// selects objects only. The empty string selects everything.
    pub fn parse(text: &str) -> Result<Self, EngineError> {
        let text = text.trim();
        if text.is_empty() {
            return Ok(RelationshipFilter::default());
        }
        let bad =
            |why: &str| EngineError::InvalidArgument(format!("invalid filter `{text}`: {why}"));
        let (resource, subject) = match text.split_once('@') {
            Some((r, s)) => (r, Some(s)),
            None => (text, None),
        };
        let (object, relation) = match resource.split_once('#') {
            Some((o, r)) => (o, Some(r)),
            None => (resource, None),
        };
        let (rtype, rid) = match object.split_once(':') {
            Some((t, i)) => (t, Some(i)),
            None => (object, None),
        };
        if rtype.is_empty() {
            return Err(bad("the resource type is empty"));
        }
        if rid.is_some_and(str::is_empty) {
            return Err(bad("the resource id after `:` is empty"));
        }
        if relation.is_some_and(str::is_empty) {
            return Err(bad("the relation after `#` is empty"));
        }
        let subject = match subject {
            None => None,
            Some(s) => {
                let (object, relation) = match s.split_once('#') {
                    Some((o, r)) => (o, Some(r)),
                    None => (s, None),
                };
                let (stype, sid) = match object.split_once(':') {
                    Some((t, i)) => (t, Some(i)),
                    None => (object, None),
                };
                if stype.is_empty() {
                    return Err(bad("the subject type after `@` is empty"));
                }
                if sid.is_some_and(str::is_empty) {
                    return Err(bad("the subject id after `:` is empty"));
                }
                let relation = match relation {
                    None => SubjectRelationFilter::Any,
                    Some("...") => SubjectRelationFilter::Object,
                    Some("") => return Err(bad("the subject relation after `#` is empty")),
                    Some(r) => SubjectRelationFilter::Relation(r.to_string()),
                };
                Some(SubjectFilter {
                    object_type: stype.to_string(),
                    object_id: sid.map(str::to_string),
                    relation,
                })
            }
        };
        Ok(RelationshipFilter {
            resource_type: Some(rtype.to_string()),
            resource_id: rid.map(str::to_string),
            relation: relation.map(str::to_string),
            subject,
        })
    }
}

impl std::fmt::Display for RelationshipFilter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let Some(t) = &self.resource_type else {
            return Ok(());
        };
        write!(f, "{t}")?;
        if let Some(id) = &self.resource_id {
            write!(f, ":{id}")?;
        }
        if let Some(r) = &self.relation {
            write!(f, "#{r}")?;
        }
        if let Some(s) = &self.subject {
            write!(f, "@{}", s.object_type)?;
            if let Some(id) = &s.object_id {
                write!(f, ":{id}")?;
            }
            match &s.relation {
                SubjectRelationFilter::Any => {}
                SubjectRelationFilter::Object => write!(f, "#...")?,
                SubjectRelationFilter::Relation(r) => write!(f, "#{r}")?,
            }
        }
        Ok(())
    }
}

/// A filter resolved against one schema and the symbol table. A filter that names an
/// id nobody wrote resolves to one that matches nothing.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ResolvedFilter {
    resource_type: Option<Sym>,
    resource_id: Option<Sym>,
    relation: Option<Sym>,
    subject_type: Option<Sym>,
    subject_id: Option<Sym>,
    /// `None` any; `Some(ELLIPSIS)` objects only.
    subject_relation: Option<Sym>,
    matches_nothing: bool,
}

impl ResolvedFilter {
    pub(crate) fn resolve(
        f: &RelationshipFilter,
        plan: &SchemaPlan,
        interner: &Interner,
    ) -> Result<Self, EngineError> {
        let schema = &plan.schema;
        let mut matches_nothing = false;
        let mut id_sym = |id: &str, what: &str| -> Result<Sym, EngineError> {
            if id == WILDCARD_ID {
                return Ok(WILDCARD);
            }
            if let Some(problem) = object_id_problem(id) {
                return Err(EngineError::InvalidArgument(format!(
                    "{problem} (the {what} of filter `{f}`)"
                )));
            }
            Ok(interner.get(id).unwrap_or_else(|| {
                matches_nothing = true;
                Sym::MAX
            }))
        };
        let mut resolved = ResolvedFilter {
            resource_type: None,
            resource_id: None,
            relation: None,
            subject_type: None,
            subject_id: None,
            subject_relation: None,
            matches_nothing: false,
        };
        if let Some(t) = &f.resource_type {
            let (ty, def) = schema
                .definition_by_name(t)
                .ok_or_else(|| EngineError::UnknownType(t.clone()))?;
            resolved.resource_type = Some(plan.type_sym(ty));
            if let Some(r) = &f.relation {
                let rid = def
                    .relation_id(r)
                    .ok_or_else(|| EngineError::UnknownRelation {
                        object_type: def.name.clone(),
                        relation: r.clone(),
                    })?;
                resolved.relation = Some(plan.rel_sym(ty, rid));
            }
        } else if f.relation.is_some() || f.resource_id.is_some() {
            return Err(EngineError::InvalidArgument(
                "a filter with a resource id or relation needs a resource type".into(),
            ));
        }
        if let Some(id) = &f.resource_id {
            resolved.resource_id = Some(id_sym(id, "resource id")?);
        }
        if let Some(s) = &f.subject {
            let (ty, def) = schema
                .definition_by_name(&s.object_type)
                .ok_or_else(|| EngineError::UnknownType(s.object_type.clone()))?;
            resolved.subject_type = Some(plan.type_sym(ty));
            if let Some(id) = &s.object_id {
                resolved.subject_id = Some(id_sym(id, "subject id")?);
            }
            resolved.subject_relation = match &s.relation {
                SubjectRelationFilter::Any => None,
                SubjectRelationFilter::Object => Some(ELLIPSIS),
                SubjectRelationFilter::Relation(r) => {
                    let rid = def
                        .relation_id(r)
                        .ok_or_else(|| EngineError::UnknownRelation {
                            object_type: def.name.clone(),
                            relation: r.clone(),
                        })?;
                    Some(plan.rel_sym(ty, rid))
                }
            };
        }
        resolved.matches_nothing = matches_nothing;
        Ok(resolved)
    }

    pub(crate) fn matches(&self, s: &StoredRelationship) -> bool {
        let r = &s.resource;
        let sub = &s.edge.subject;
        !self.matches_nothing
            && self.resource_type.is_none_or(|t| t == r.object_type)
            && self.resource_id.is_none_or(|t| t == r.object_id)
            && self.relation.is_none_or(|t| t == r.relation)
            && self.subject_type.is_none_or(|t| t == sub.object_type)
            && self.subject_id.is_none_or(|t| t == sub.object_id)
            && self.subject_relation.is_none_or(|t| t == sub.relation)
    }

    /// Every stored relationship (live or expired) the filter selects, using the most
    /// selective index: one object, one subject, or a scan.
    pub(crate) fn select(&self, graph: &GraphVersion) -> Vec<StoredRelationship> {
        let mut out = Vec::new();
        self.each(graph, &mut |s| out.push(s));
        out
    }

    /// [`ResolvedFilter::select`], handing each to `f` instead of collecting them.
    pub(crate) fn each(&self, graph: &GraphVersion, f: &mut dyn FnMut(StoredRelationship)) {
        if self.matches_nothing {
            return;
        }
        if let (Some(object_type), Some(object_id)) = (self.resource_type, self.resource_id) {
            let object = ObjectKey { object_type, object_id };
            graph.object_relationships(&object).filter(|s| self.matches(s)).for_each(f);
            return;
        }
        if let (Some(object_type), Some(object_id), Some(relation)) =
            (self.subject_type, self.subject_id, self.subject_relation)
        {
            let subject = SubjectKey { object_type, relation, object_id };
            graph
                .resources_of(&subject)
                .iter()
                .filter_map(|r| graph.find(&r, &subject).map(|edge| StoredRelationship { resource: r, edge }))
                .filter(|s| self.matches(s))
                .for_each(f);
            return;
        }
        graph.iter().filter(|s| self.matches(s)).for_each(f);
    }
}
