//! Cedar policies in the decision (DESIGN §5, "Cedar policies").
//!
//! A [`PolicyModel`] is what users write: Cedar policies (each with an id), attribute
//! declarations, and attribute values on objects. It compiles, against a Cedar schema
//! derived from the relationship schema plus the declarations, into [`CompiledPolicies`]:
//! one validated (strict mode) Cedar policy set, published with a graph revision and
//! swapped with it atomically. A Check consults it only at the top:
//!
//! ```text
//! allowed = (graph(P) || a Cedar permit for P is satisfied) && no Cedar forbid for P is satisfied or errors
//! ```
//!
//! and only when a policy can change the answer (no permit on P and the graph denies, or
//! no forbid on P and the graph allows: Cedar is not called at all).
//!
//! Entities are built per request from the graph: the principal (the subject's object),
//! the resource, and their ancestors. An object's Cedar parents are the objects it is a
//! member of (`team:eng#member@user:alice` makes `user::"alice" in team::"eng"`, for a
//! relation the schema uses as a subject set) and the objects it sits in (`doc:1#parent
//! @folder:a`, for a relation an arrow walks: `doc::"1" in folder::"a"`).

use std::collections::{BTreeMap, HashMap};
use std::str::FromStr;
use std::sync::Arc;

use arbiter_schema::{AllowedKind, CompiledSchema, RelationKind, Rewrite};
use cedar_policy as cedar;
use rustc_hash::FxHashMap;
use serde_json::{json, Map, Value};

use crate::bounds;

/// How many entities (the principal, the resource and their ancestors) one Cedar request
/// may carry. Past it the request fails closed: forbids count as erroring.
pub const MAX_ENTITIES: usize = 2000;

/// One policy as stored: its id and its Cedar text.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PolicyText {
    pub id: String,
    pub text: String,
}

/// The type of an attribute, as declared or inferred.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AttrType {
    String,
    Long,
    Bool,
    Decimal,
    Ip,
    Set(Box<AttrType>),
    Record(BTreeMap<String, AttrDecl>),
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct AttrDecl {
    #[serde(rename = "type")]
    pub ty: AttrType,
    /// Declared attributes are required; inferred ones are optional (policies use `has`).
    pub required: bool,
    /// Where its values come from: the attribute store, or each request.
    #[serde(default, skip_serializing_if = "AttrSource::is_stored")]
    pub source: AttrSource,
}

impl AttrDecl {
    /// A stored attribute.
    pub fn stored(ty: AttrType, required: bool) -> AttrDecl {
        AttrDecl { ty, required, source: AttrSource::Stored }
    }
}

/// Where an object attribute's values come from. Each attribute has one source, so a
/// request can never replace a stored fact (a `suspended` flag, a clearance): values the
/// store holds are the store's alone, and a request supplies only what is declared
/// [`AttrSource::Request`] (a device's posture, a risk score the gateway computed).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AttrSource {
    /// Written to the attribute store (`WriteAttributes`); a request may not supply it.
    #[default]
    Stored,
    /// Supplied by each request (AuthZEN `subject.properties` / `resource.properties`),
    /// never stored; always optional (policies guard it with `has`).
    Request,
}

impl AttrSource {
    pub fn is_stored(&self) -> bool {
        *self == AttrSource::Stored
    }

    /// The written form (API and files): `stored` or `request`.
    pub fn as_str(&self) -> &'static str {
        match self {
            AttrSource::Stored => "stored",
            AttrSource::Request => "request",
        }
    }
}

impl FromStr for AttrSource {
    type Err = String;

    fn from_str(s: &str) -> Result<AttrSource, String> {
        match s {
            "" | "stored" => Ok(AttrSource::Stored),
            "request" => Ok(AttrSource::Request),
            other => Err(format!("unknown attribute source `{other}` (`stored` and `request` are)")),
        }
    }
}

/// Attribute declarations: per object type (schema definition name), and for the
/// request context.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct AttributeDecls {
    #[serde(default)]
    pub types: BTreeMap<String, BTreeMap<String, AttrDecl>>,
    #[serde(default)]
    pub context: BTreeMap<String, AttrDecl>,
}

/// A security label: a name with a numeric level. A label's parents dominate it (the
/// seeds' `security_labels` and `label_hierarchy`): in Cedar the label is `in` each of
/// its parents, and so in everything that dominates them.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct LabelDef {
    pub level: i64,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub parents: Vec<String>,
}

/// The Cedar entity type of security labels (`arbiter::Label`), as a definition name.
pub const LABEL_TYPE: &str = "arbiter/Label";
/// The attribute every entity gets when labels are defined: its labels (a set of
/// `arbiter::Label`).
pub const LABELS_ATTR: &str = "labels";
/// The attribute every entity gets when labels are defined: the highest level of its
/// labels, 0 when it has none.
pub const LABEL_LEVEL_ATTR: &str = "label_level";

/// Everything that feeds the Cedar side of a decision except per-object values,
/// versioned as a whole: policies, attribute declarations, security labels. (Attribute
/// values and object labels are keyed per object: [`ObjectAttributes`].)
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct PolicyModel {
    #[serde(default)]
    pub policies: Vec<PolicyText>,
    #[serde(default)]
    pub declarations: AttributeDecls,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, LabelDef>,
}

impl PolicyModel {
    pub fn is_empty(&self) -> bool {
        self.policies.is_empty() && self.labels.is_empty() && self.declarations == AttributeDecls::default()
    }
}

/// One object's attribute values (the seeds' `attribute_values`, `subject_attributes`,
/// `resource_attributes`) and security labels (`object_labels`), stored per object and
/// versioned with the relationships.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ObjectAttributes {
    /// Attribute values in Cedar's JSON value form (extension values as
    /// `{"__extn": {"fn": "ip", "arg": "10.0.0.1"}}`, or plain strings where declared).
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    pub values: Map<String, Value>,
    /// Names of security labels, sorted, without repeats.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub labels: Vec<String>,
}

impl ObjectAttributes {
    pub fn is_empty(&self) -> bool {
        self.values.is_empty() && self.labels.is_empty()
    }

    /// The stored form (JSON).
    pub fn encode(&self) -> String {
        serde_json::to_string(self).unwrap_or_else(|_| "{}".to_string())
    }

    pub fn decode(json: &str) -> Result<ObjectAttributes, String> {
        serde_json::from_str(json).map_err(|e| format!("stored attributes are not readable: {e}"))
    }
}

/// A policy that does not parse or validate, or a model that does not fit the schema.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyError {
    /// The policy (its id), when one is to blame.
    pub policy: Option<String>,
    /// 1-based line and column in that policy's (or file's) text.
    pub position: Option<(usize, usize)>,
    pub message: String,
}

impl std::fmt::Display for PolicyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (&self.policy, self.position) {
            (Some(p), Some((l, c))) => write!(f, "policy `{p}` at {l}:{c}: {}", self.message),
            (Some(p), None) => write!(f, "policy `{p}`: {}", self.message),
            (None, Some((l, c))) => write!(f, "at {l}:{c}: {}", self.message),
            (None, None) => f.write_str(&self.message),
        }
    }
}

impl std::error::Error for PolicyError {}

fn model_error(message: impl Into<String>) -> PolicyError {
    PolicyError { policy: None, position: None, message: message.into() }
}

/// 1-based line and column of a byte offset.
fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = text.get(..offset.min(text.len())).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let col = before.rsplit('\n').next().map(|l| l.chars().count()).unwrap_or(0) + 1;
    (line, col)
}

/// A Cedar diagnostic as a [`PolicyError`]: the message, Cedar's help, and the position
/// of its first label in `text`.
fn diagnostic(policy: Option<&str>, text: &str, d: &dyn miette::Diagnostic) -> PolicyError {
    let mut message = d.to_string();
    if let Some(help) = d.help() {
        message.push_str(&format!(" (help: {help})"));
    }
    let position = d.labels().and_then(|mut l| l.next()).map(|l| line_col(text, l.offset()));
    PolicyError { policy: policy.map(str::to_string), position, message }
}

/// Splits a Cedar file into policies. A policy's id is its `@id("...")` annotation, else
/// `FILE:N` (N counts the file's policies from 1). Positions in errors are the file's.
/// The text is measured first ([`bounds::cedar_text`]) and Cedar parses it on a thread
/// with a known stack.
pub fn split_policies(file: &str, text: &str) -> Result<Vec<PolicyText>, PolicyError> {
    bounds::cedar_text(text).map_err(|e| model_error(format!("{file}: {e}")))?;
    bounds::with_stack(|| split_bounded(file, text)).map_err(model_error)?
}

fn split_bounded(file: &str, text: &str) -> Result<Vec<PolicyText>, PolicyError> {
    let set = cedar::PolicySet::from_str(text).map_err(|e| {
        let mut err = diagnostic(None, text, &e);
        err.message = format!("{file}: {}", err.message);
        err
    })?;
    let count = set.policies().count();
    if count > bounds::MAX_POLICIES {
        return Err(model_error(format!("{file}: {count} policies are more than the limit of {}", bounds::MAX_POLICIES)));
    }
    if set.templates().count() > 0 {
        return Err(model_error(format!("{file}: templates (policies with ?principal or ?resource slots) are not supported")));
    }
    let mut out: Vec<PolicyText> = Vec::with_capacity(count);
    let mut ids: std::collections::HashSet<String> = std::collections::HashSet::with_capacity(count);
    for n in 0..count {
        let auto = cedar::PolicyId::new(format!("policy{n}"));
        let policy = set
            .policy(&auto)
            .ok_or_else(|| model_error(format!("{file}: policy {n} went missing while splitting")))?;
        let id = match policy.annotation("id") {
            Some(id) if !id.trim().is_empty() => id.to_string(),
            Some(_) => return Err(model_error(format!("{file}: policy {} has an empty @id", n + 1))),
            None => format!("{file}:{}", n + 1),
        };
        if !ids.insert(id.clone()) {
            return Err(model_error(format!("{file}: two policies have the id `{id}`")));
        }
        out.push(PolicyText { id, text: policy.to_string() });
    }
    Ok(out)
}

/// The bounds of [`crate::bounds`] on a whole model, before Cedar or any recursive walk
/// sees it: the number and size of the policies and each one's nesting, and the depth of
/// each attribute type. Also what declarations may say: a request-supplied attribute is
/// optional, and context attributes come from the request by nature.
fn check_bounds(model: &PolicyModel) -> Result<(), PolicyError> {
    if model.policies.len() > bounds::MAX_POLICIES {
        return Err(model_error(format!(
            "{} policies are more than the limit of {}",
            model.policies.len(),
            bounds::MAX_POLICIES
        )));
    }
    for p in &model.policies {
        bounds::cedar_policy(&p.text)
            .map_err(|message| PolicyError { policy: Some(p.id.clone()), position: None, message })?;
    }
    let total: usize = model.policies.iter().map(|p| p.text.len()).sum();
    if total > bounds::MAX_POLICY_SET_BYTES {
        return Err(model_error(format!(
            "the policies are {total} bytes together, more than the limit of {}",
            bounds::MAX_POLICY_SET_BYTES
        )));
    }
    let declared = model.declarations.types.iter().flat_map(|(t, f)| f.iter().map(move |d| (Some(t), d)));
    for (object_type, (name, decl)) in declared.chain(model.declarations.context.iter().map(|d| (None, d))) {
        let on = object_type.map_or("the context".to_string(), |t| format!("`{t}`"));
        if type_depth(&decl.ty) > bounds::MAX_TYPE_DEPTH {
            return Err(model_error(format!(
                "the type of `{name}` on {on} nests deeper than {} levels",
                bounds::MAX_TYPE_DEPTH
            )));
        }
        match (object_type, decl.source) {
            (_, AttrSource::Stored) => {}
            (None, AttrSource::Request) => {
                return Err(model_error(format!(
                    "`{name}` on the context: context attributes always come from the request (a source applies to object attributes)"
                )))
            }
            (Some(_), AttrSource::Request) if decl.required => {
                return Err(model_error(format!(
                    "`{name}` on {on}: a request-supplied attribute cannot be required (requests may leave it out; policies guard it with `has`)"
                )))
            }
            (Some(_), AttrSource::Request) => {}
        }
    }
    Ok(())
}

/// How deep a type nests (`long` is 1, `set<long>` 2). Stored models are read with
/// serde's own recursion limit, so this walk is bounded before it starts.
fn type_depth(ty: &AttrType) -> usize {
    match ty {
        AttrType::Set(e) => 1 + type_depth(e),
        AttrType::Record(fields) => 1 + fields.values().map(|d| type_depth(&d.ty)).max().unwrap_or(0),
        _ => 1,
    }
}

/// Which effects the policies that may apply to one action have.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Applies {
    pub permit: bool,
    pub forbid: bool,
}

impl Applies {
    fn add(&mut self, effect: cedar::Effect) {
        match effect {
            cedar::Effect::Permit => self.permit = true,
            cedar::Effect::Forbid => self.forbid = true,
        }
    }

    fn or(self, other: Applies) -> Applies {
        Applies { permit: self.permit || other.permit, forbid: self.forbid || other.forbid }
    }
}

/// What the schema says about Cedar parents, by type name.
#[derive(Debug, Clone, Default)]
pub struct Hierarchy {
    /// `type -> relations` whose subjects are members of the object (the relation is
    /// used as a subject set somewhere: `team#member`).
    pub membership: FxHashMap<String, Vec<String>>,
    /// `type -> relations` of the type used as subject sets (`team#member`): a member of
    /// `team:eng#member` reaches groups through that subject set too.
    pub subject_sets: FxHashMap<String, Vec<String>>,
    /// `type -> relations` an arrow walks (`parent` in `parent->view`): their subjects
    /// contain the object.
    pub containment: FxHashMap<String, Vec<String>>,
}

impl Hierarchy {
    pub fn of(schema: &CompiledSchema) -> Hierarchy {
        let mut h = Hierarchy::default();
        for def in &schema.definitions {
            for rel in &def.relations {
                match &rel.kind {
                    RelationKind::Direct(allowed) => {
                        for a in allowed {
                            if let AllowedKind::SubjectSet(r) = a.kind {
                                if let (Some(target), Some(relation)) =
                                    (schema.definition(a.type_id), schema.relation(a.type_id, r))
                                {
                                    push_unique(h.membership.entry(target.name.clone()).or_default(), &relation.name);
                                    push_unique(h.subject_sets.entry(target.name.clone()).or_default(), &relation.name);
                                }
                            }
                        }
                    }
                    RelationKind::Permission(rewrite) => {
                        let mut tuplesets = Vec::new();
                        arrows(rewrite, &mut tuplesets);
                        for t in tuplesets {
                            if let Some(relation) = def.relation(t) {
                                push_unique(h.containment.entry(def.name.clone()).or_default(), &relation.name);
                            }
                        }
                    }
                }
            }
        }
        h
    }
}

fn push_unique(v: &mut Vec<String>, s: &str) {
    if !v.iter().any(|x| x == s) {
        v.push(s.to_string());
    }
}

fn arrows(rewrite: &Rewrite, out: &mut Vec<u16>) {
    match rewrite {
        Rewrite::Arrow(a) => out.push(a.tupleset),
        Rewrite::Union(v) | Rewrite::Intersection(v) => v.iter().for_each(|r| arrows(r, out)),
        Rewrite::Exclusion(a, b) => {
            arrows(a, out);
            arrows(b, out);
        }
        Rewrite::Nil | Rewrite::Computed(_) => {}
    }
}

/// An error with its causes (Cedar puts the detail there: "entity does not conform to
/// the schema: in attribute `x` ...") and its help.
fn full_message(e: &(dyn miette::Diagnostic + 'static)) -> String {
    let mut m = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        let text = s.to_string();
        if !m.contains(&text) {
            m.push_str(": ");
            m.push_str(&text);
        }
        source = s.source();
    }
    if let Some(help) = e.help() {
        m.push_str(&format!(" ({help})"));
    }
    m
}

/// Label names are non-empty, parents exist, and the hierarchy has no cycle.
pub fn check_labels(labels: &BTreeMap<String, LabelDef>) -> Result<(), PolicyError> {
    for (name, def) in labels {
        if name.trim().is_empty() {
            return Err(model_error("a security label has an empty name"));
        }
        for parent in &def.parents {
            if !labels.contains_key(parent) {
                return Err(model_error(format!("label `{name}`: its parent `{parent}` is not defined")));
            }
        }
        // Everything above `name`: a cycle brings the walk back to it.
        let mut seen: std::collections::BTreeSet<&str> = std::collections::BTreeSet::new();
        let mut stack: Vec<&str> = def.parents.iter().map(String::as_str).collect();
        while let Some(at) = stack.pop() {
            if at == name {
                return Err(model_error(format!("label `{name}` dominates itself (its parents make a cycle)")));
            }
            if seen.insert(at) {
                stack.extend(labels.get(at).into_iter().flat_map(|d| d.parents.iter().map(String::as_str)));
            }
        }
    }
    Ok(())
}

/// `org/user` -> `org::user`.
pub fn cedar_type_name(definition: &str) -> String {
    definition.replace('/', "::")
}

fn type_json(ty: &AttrType) -> Value {
    match ty {
        AttrType::String => json!({"type": "String"}),
        AttrType::Long => json!({"type": "Long"}),
        AttrType::Bool => json!({"type": "Boolean"}),
        AttrType::Decimal => json!({"type": "Extension", "name": "decimal"}),
        AttrType::Ip => json!({"type": "Extension", "name": "ipaddr"}),
        AttrType::Set(e) => json!({"type": "Set", "element": type_json(e)}),
        AttrType::Record(fields) => record_json(fields),
    }
}

fn record_json(fields: &BTreeMap<String, AttrDecl>) -> Value {
    let attributes: Map<String, Value> = fields
        .iter()
        .map(|(name, d)| {
            let mut t = type_json(&d.ty);
            if let Some(o) = t.as_object_mut() {
                o.insert("required".into(), Value::Bool(d.required));
            }
            (name.clone(), t)
        })
        .collect();
    json!({"type": "Record", "attributes": attributes})
}

/// The Cedar schema (JSON form) derived from the relationship schema and the attribute
/// declarations: an entity type per definition (`org/user` -> `org::user`) with its
/// attributes and the parent types the graph gives it, and an action per relation or
/// permission name, applying to every definition that has the name, with any type as
/// principal and the declared context.
pub fn derive_cedar_schema(
    schema: &CompiledSchema,
    decls: &AttributeDecls,
    hierarchy: &Hierarchy,
    labels: bool,
) -> Result<Value, PolicyError> {
    for (ty, fields) in &decls.types {
        if schema.definition_by_name(ty).is_none() {
            return Err(model_error(format!("attributes are declared for `{ty}`, which the schema does not define")));
        }
        if labels {
            for reserved in [LABELS_ATTR, LABEL_LEVEL_ATTR] {
                if fields.contains_key(reserved) {
                    return Err(model_error(format!(
                        "`{ty}` declares the attribute `{reserved}`, which Arbiter reserves for security labels"
                    )));
                }
            }
        }
    }
    if schema.definition_by_name(LABEL_TYPE).is_some() && labels {
        return Err(model_error(format!(
            "the schema defines `{LABEL_TYPE}`, which Arbiter reserves for security labels"
        )));
    }
    // Cedar refuses a namespaced type whose base name is also a type without a namespace
    // (RFC 70: `platform::user` beside `user`). The namespaced one is left out of the
    // Cedar schema: policies cannot name it (validation says the type is unknown), and
    // requests and entities, which are not checked against the schema, still carry it.
    let plain: std::collections::HashSet<&str> =
        schema.definitions.iter().filter(|d| !d.name.contains('/')).map(|d| d.name.as_str()).collect();
    let in_cedar = |name: &str| name.rsplit_once('/').is_none_or(|(_, base)| !plain.contains(base));
    // Parent types: members are in their groups; contained objects in their containers.
    let mut parents: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for def in schema.definitions.iter().filter(|d| in_cedar(&d.name)) {
        for rel in &def.relations {
            let member_of = hierarchy.membership.get(&def.name).is_some_and(|r| r.contains(&rel.name));
            let contained_in = hierarchy.containment.get(&def.name).is_some_and(|r| r.contains(&rel.name));
            for a in rel.allowed_subjects() {
                let Some(sub) = schema.definition(a.type_id).filter(|d| in_cedar(&d.name)) else { continue };
                if member_of {
                    push_unique(parents.entry(sub.name.clone()).or_default(), &cedar_type_name(&def.name));
                }
                if contained_in && a.kind == AllowedKind::Object {
                    push_unique(parents.entry(def.name.clone()).or_default(), &cedar_type_name(&sub.name));
                }
            }
        }
    }
    let mut namespaces: BTreeMap<String, Map<String, Value>> = BTreeMap::new();
    namespaces.entry(String::new()).or_default();
    for def in schema.definitions.iter().filter(|d| in_cedar(&d.name)) {
        let (ns, name) = match def.name.rsplit_once('/') {
            Some((ns, name)) => (ns.replace('/', "::"), name.to_string()),
            None => (String::new(), def.name.clone()),
        };
        let attrs = decls.types.get(&def.name).cloned().unwrap_or_default();
        let mut member_of = parents.get(&def.name).cloned().unwrap_or_default();
        let mut shape = record_json(&attrs);
        if labels {
            member_of.push(cedar_type_name(LABEL_TYPE));
            if let Some(fields) = shape.get_mut("attributes").and_then(Value::as_object_mut) {
                fields.insert(
                    LABELS_ATTR.into(),
                    json!({"type": "Set", "element": {"type": "Entity", "name": cedar_type_name(LABEL_TYPE)}, "required": true}),
                );
                fields.insert(LABEL_LEVEL_ATTR.into(), json!({"type": "Long", "required": true}));
            }
        }
        let entity = json!({"memberOfTypes": member_of, "shape": shape});
        namespaces.entry(ns).or_default().insert(name, entity);
    }
    let all_types: Vec<String> =
        schema.definitions.iter().filter(|d| in_cedar(&d.name)).map(|d| cedar_type_name(&d.name)).collect();
    let mut actions: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for def in schema.definitions.iter().filter(|d| in_cedar(&d.name)) {
        for rel in &def.relations {
            actions.entry(rel.name.clone()).or_default().push(cedar_type_name(&def.name));
        }
    }
    let context = record_json(&decls.context);
    let actions: Map<String, Value> = actions
        .into_iter()
        .map(|(name, resources)| {
            (name, json!({"appliesTo": {"principalTypes": all_types, "resourceTypes": resources, "context": context}}))
        })
        .collect();
    if labels {
        let (ns, name) = LABEL_TYPE.split_once('/').unwrap_or(("", LABEL_TYPE));
        let label = json!({
            "memberOfTypes": [name],
            "shape": {"type": "Record", "attributes": {"level": {"type": "Long", "required": true}}},
        });
        namespaces.entry(ns.to_string()).or_default().insert(name.to_string(), label);
    }
    let mut out = Map::new();
    for (ns, types) in namespaces {
        let acts = if ns.is_empty() { actions.clone() } else { Map::new() };
        out.insert(ns, json!({"entityTypes": types, "actions": acts}));
    }
    Ok(Value::Object(out))
}

/// The policies that may apply to one action.
#[derive(Debug, Clone, Default)]
struct ActionPolicies {
    set: cedar::PolicySet,
    /// Whether any of them tests hierarchy (`in`, in its scope or its conditions): only
    /// then are ancestors and label entities built (Cedar computes the transitive
    /// closure of every entity it is given, at a few microseconds each).
    uses_in: bool,
}

impl ActionPolicies {
    fn add(&mut self, policy: &cedar::Policy) -> Result<(), PolicyError> {
        self.uses_in |= policy.to_json().map(|est| mentions_in(&est)).unwrap_or(true);
        self.set.add(policy.clone()).map_err(|e| model_error(format!("policy `{}`: {e}", policy.id())))
    }
}

/// Whether a policy's JSON form uses the `in` operator anywhere (`{"in": ...}` in a
/// condition, `"op": "in"` in a scope constraint, or an `is ... in` scope).
fn mentions_in(v: &Value) -> bool {
    match v {
        Value::Object(o) => o.iter().any(|(k, v)| k == "in" || (k == "op" && v == "in") || mentions_in(v)),
        Value::Array(items) => items.iter().any(mentions_in),
        _ => false,
    }
}

/// A policy model compiled against one relationship schema.
#[derive(Debug, Clone)]
pub struct CompiledPolicies {
    pub model: PolicyModel,
    schema: cedar::Schema,
    hierarchy: Hierarchy,
    any_action: Applies,
    by_action: FxHashMap<String, Applies>,
    /// Per action: only the policies that can apply to it (Cedar evaluates every policy
    /// of the set it is given; a Check asks about one action).
    sets_by_action: FxHashMap<String, ActionPolicies>,
    /// The policies that apply to every action (for names no policy mentions).
    any_set: ActionPolicies,
    /// Cedar type names by definition name (and the label type), parsed once: Cedar
    /// parses a type name with its full policy grammar.
    type_names: FxHashMap<String, cedar::EntityTypeName>,
    action_type: cedar::EntityTypeName,
    /// The Cedar schema with every declared attribute optional and no labels: per-request
    /// attribute values (AuthZEN `properties`) are checked against it, each key alone,
    /// since the rest of the entity comes from the store.
    request_schema: cedar::Schema,
    /// Tells this compilation's built entities from another's in the per-thread cache
    /// of built entities (a clone shares it: it builds the same entities).
    generation: u64,
}

/// Source of [`CompiledPolicies::generation`].
static GENERATIONS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

/// How many built entities each thread keeps: a direct-mapped table, one entity a slot
/// (a power of two: the slot is the top bits of a hash).
const BUILT_SLOTS: usize = 1024;
const _: () = assert!(BUILT_SLOTS.is_power_of_two() && BUILT_SLOTS > 1);

/// An entity built for an earlier request on this thread, with what it was built from.
/// It is reused when all of that is the same: the same compiled policy model (labels,
/// type names), the same object, the same parents, and the very attribute values the
/// graph holds (the same `Arc`: a write of attributes makes a new one, and the slot
/// keeps this one alive, so its address cannot be reused while it is compared).
struct Built {
    generation: u64,
    label_parents: bool,
    object_type: String,
    object_id: String,
    attributes: Option<Arc<ObjectAttributes>>,
    parents: Vec<(String, String)>,
    entity: cedar::Entity,
}

impl Built {
    fn matches(&self, generation: u64, e: &EntityData, label_parents: bool) -> bool {
        // What the slot holds inline first; the strings are on the heap.
        self.generation == generation
            && self.label_parents == label_parents
            && match (&self.attributes, &e.attributes) {
                (Some(a), Some(b)) => Arc::ptr_eq(a, b),
                (None, None) => true,
                _ => false,
            }
            && self.object_id == e.object_id
            && self.object_type == e.object_type
            && self.parents == e.parents
    }
}

/// One thread's built entities: a direct-mapped table of boxed entries, each with its
/// fingerprint beside it (a lookup that misses reads no entry), and beside each slot
/// the fingerprint of the last object that missed there. An entity is kept only when
/// its object misses twice in a row at its slot (a doorkeeper, as in TinyLFU): an
/// object asked about once costs a word, not a copy of its entity and the eviction of
/// one that is asked about again. A thread that never keeps an entity holds 24 KB.
#[derive(Default)]
struct BuiltCache {
    slots: Vec<Option<(u64, Box<Built>)>>,
    seen: Vec<u64>,
}

thread_local! {
    /// Building a Cedar entity (evaluating each attribute value into Cedar's form, the
    /// label attributes) is a large part of a Cedar Check; PEPs ask about the same
    /// principals and resources again and again.
    static BUILT: std::cell::RefCell<BuiltCache> = std::cell::RefCell::new(BuiltCache::default());
}

/// The slot of `type:id` and a fingerprint of what its entity is built from.
fn built_slot(generation: u64, e: &EntityData, label_parents: bool) -> (usize, u64) {
    use std::hash::{BuildHasher, Hash, Hasher};
    let mut h = rustc_hash::FxBuildHasher.build_hasher();
    e.object_type.hash(&mut h);
    e.object_id.hash(&mut h);
    let key = h.finish();
    let attributes = e.attributes.as_ref().map_or(0, |a| Arc::as_ptr(a) as u64);
    generation.hash(&mut h);
    attributes.hash(&mut h);
    e.parents.len().hash(&mut h);
    label_parents.hash(&mut h);
    // Fx's low bits are its weakest: take the slot from the high ones.
    ((key >> (64 - BUILT_SLOTS.trailing_zeros())) as usize, h.finish() | 1)
}

impl CompiledPolicies {
    /// Parses and validates (strict mode) every policy, and checks every attribute value
    /// against its type's declarations. The first problem is the error.
    ///
    /// Every policy text is measured first ([`bounds::cedar_policy`]), and Cedar runs on a
    /// thread with a known stack ([`bounds::with_stack`]).
    pub fn compile(schema: &CompiledSchema, model: PolicyModel) -> Result<CompiledPolicies, PolicyError> {
        check_bounds(&model)?;
        bounds::with_stack(|| Self::compile_bounded(schema, model)).map_err(model_error)?
    }

    fn compile_bounded(schema: &CompiledSchema, model: PolicyModel) -> Result<CompiledPolicies, PolicyError> {
        let hierarchy = Hierarchy::of(schema);
        check_labels(&model.labels)?;
        let schema_json = derive_cedar_schema(schema, &model.declarations, &hierarchy, !model.labels.is_empty())?;
        let cedar_schema = cedar::Schema::from_json_value(schema_json)
            .map_err(|e| model_error(format!("the attribute declarations do not make a Cedar schema: {e}")))?;
        let mut set = cedar::PolicySet::new();
        let mut any_action = Applies::default();
        let mut by_action: FxHashMap<String, Applies> = FxHashMap::default();
        for p in &model.policies {
            if p.id.trim().is_empty() {
                return Err(model_error("a policy has an empty id"));
            }
            let policy = cedar::Policy::parse(Some(cedar::PolicyId::new(&p.id)), &p.text)
                .map_err(|e| diagnostic(Some(&p.id), &p.text, &e))?;
            let effect = policy.effect();
            match policy.action_constraint() {
                cedar::ActionConstraint::Any => any_action.add(effect),
                cedar::ActionConstraint::Eq(a) => by_action.entry(a.id().unescaped().to_string()).or_default().add(effect),
                cedar::ActionConstraint::In(list) => {
                    for a in list {
                        by_action.entry(a.id().unescaped().to_string()).or_default().add(effect);
                    }
                }
            }
            set.add(policy).map_err(|e| PolicyError {
                policy: Some(p.id.clone()),
                position: None,
                message: e.to_string(),
            })?;
        }
        let validator = cedar::Validator::new(cedar_schema.clone());
        let result = validator.validate(&set, cedar::ValidationMode::Strict);
        let errors: Vec<&cedar::ValidationError> = result.validation_errors().collect();
        if let Some(first) = errors.first() {
            let id = first.policy_id().to_string();
            let text = model.policies.iter().find(|p| p.id == id).map(|p| p.text.as_str()).unwrap_or("");
            let mut err = diagnostic(Some(&id), text, *first);
            if errors.len() > 1 {
                err.message.push_str(&format!(" (and {} more problems)", errors.len() - 1));
            }
            return Err(err);
        }
        // Per-action subsets, for every relation and permission name of the schema.
        let mut sets_by_action: FxHashMap<String, ActionPolicies> = FxHashMap::default();
        let mut any_set = ActionPolicies::default();
        let mut names: Vec<&str> = schema.definitions.iter().flat_map(|d| d.relations.iter().map(|r| r.name.as_str())).collect();
        names.sort_unstable();
        names.dedup();
        for policy in set.policies() {
            match policy.action_constraint() {
                cedar::ActionConstraint::Any => {
                    any_set.add(policy)?;
                    for name in &names {
                        sets_by_action.entry(name.to_string()).or_default().add(policy)?;
                    }
                }
                cedar::ActionConstraint::Eq(a) => sets_by_action.entry(a.id().unescaped().to_string()).or_default().add(policy)?,
                cedar::ActionConstraint::In(list) => {
                    for a in list {
                        sets_by_action.entry(a.id().unescaped().to_string()).or_default().add(policy)?;
                    }
                }
            }
        }
        let mut type_names = FxHashMap::default();
        for name in schema.definitions.iter().map(|d| d.name.as_str()).chain([LABEL_TYPE]) {
            if let Ok(t) = cedar::EntityTypeName::from_str(&cedar_type_name(name)) {
                type_names.insert(name.to_string(), t);
            }
        }
        let action_type = cedar::EntityTypeName::from_str("Action").map_err(|e| model_error(e.to_string()))?;
        let mut optional = model.declarations.clone();
        for decl in optional.types.values_mut().flat_map(|fields| fields.values_mut()) {
            decl.required = false;
        }
        let request_schema = cedar::Schema::from_json_value(derive_cedar_schema(schema, &optional, &hierarchy, false)?)
            .map_err(|e| model_error(format!("the attribute declarations do not make a Cedar schema: {e}")))?;
        Ok(CompiledPolicies {
            action_type,
            request_schema,
            model,
            schema: cedar_schema,
            hierarchy,
            any_action,
            by_action,
            sets_by_action,
            any_set,
            type_names,
            generation: GENERATIONS.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
        })
    }

    /// Checks one object's attribute values against its type's declarations and its
    /// labels against the defined labels. A write of attributes calls it for every object
    /// it touches, and a change of declarations or labels for every stored object, so
    /// that a Check never meets a malformed entity.
    pub fn check_object(&self, object_type: &str, object_id: &str, attrs: &ObjectAttributes) -> Result<(), String> {
        for label in &attrs.labels {
            if !self.model.labels.contains_key(label) {
                return Err(format!("`{object_type}:{object_id}`: the label `{label}` is not defined"));
            }
        }
        if let Some(fields) = self.model.declarations.types.get(object_type) {
            for (name, decl) in fields {
                if decl.required && !attrs.values.contains_key(name) {
                    return Err(format!("`{object_type}:{object_id}`: the required attribute `{name}` is missing"));
                }
            }
        }
        for name in attrs.values.keys() {
            match self.model.declarations.types.get(object_type).and_then(|f| f.get(name)) {
                None => {
                    return Err(format!(
                        "`{object_type}:{object_id}`: the attribute `{name}` is not declared for `{object_type}`"
                    ))
                }
                Some(d) if d.source == AttrSource::Request => {
                    return Err(format!(
                        "`{object_type}:{object_id}`: the attribute `{name}` is supplied by requests and is never stored"
                    ))
                }
                Some(_) => {}
            }
        }
        bounds::json_fields(&format!("attributes of `{object_type}:{object_id}`"), &attrs.values)?;
        let entity = self.entity_json(&EntityData {
            object_type: object_type.to_string(),
            object_id: object_id.to_string(),
            attributes: Some(Arc::new(attrs.clone())),
            parents: Vec::new(),
            stored: false,
        });
        cedar::Entities::from_json_value(Value::Array(vec![entity]), Some(&self.schema))
            .map(|_| ())
            .map_err(|e| format!("attributes of `{object_type}:{object_id}`: {}", full_message(&e)))
    }

    /// Whether security labels are defined (entities then carry `labels` and
    /// `label_level`).
    pub fn has_labels(&self) -> bool {
        !self.model.labels.is_empty()
    }

    /// One entity in Cedar's JSON form.
    fn entity_json(&self, e: &EntityData) -> Value {
        let mut attrs = e.attributes.as_ref().map(|a| a.values.clone()).unwrap_or_default();
        let mut parents: Vec<Value> =
            e.parents.iter().map(|(t, i)| json!({"type": cedar_type_name(t), "id": i})).collect();
        if self.has_labels() {
            let labels: &[String] = e.attributes.as_ref().map(|a| &a.labels[..]).unwrap_or(&[]);
            let label_type = cedar_type_name(LABEL_TYPE);
            let level = labels.iter().filter_map(|l| self.model.labels.get(l)).map(|d| d.level).max().unwrap_or(0);
            attrs.insert(
                LABELS_ATTR.into(),
                Value::Array(labels.iter().map(|l| json!({"__entity": {"type": label_type, "id": l}})).collect()),
            );
            attrs.insert(LABEL_LEVEL_ATTR.into(), json!(level));
            parents.extend(labels.iter().map(|l| json!({"type": label_type, "id": l})));
        }
        json!({
            "uid": {"type": cedar_type_name(&e.object_type), "id": e.object_id},
            "attrs": attrs,
            "parents": parents,
        })
    }

    fn uid_of(&self, object_type: &str, object_id: &str) -> Result<cedar::EntityUid, String> {
        match self.type_names.get(object_type) {
            Some(t) => Ok(cedar::EntityUid::from_type_name_and_id(t.clone(), cedar::EntityId::new(object_id))),
            None => uid((object_type, object_id)),
        }
    }

    /// One entity, built directly: its attribute values, and with labels defined its
    /// `labels`, `label_level` and the labels as parents.
    fn entity(&self, e: &EntityData, label_parents: bool) -> Result<cedar::Entity, String> {
        let mut attrs: HashMap<String, cedar::RestrictedExpression> = HashMap::new();
        if let Some(a) = &e.attributes {
            for (k, v) in &a.values {
                attrs.insert(k.clone(), restricted(v).map_err(|m| format!("`{}:{}`.{k}: {m}", e.object_type, e.object_id))?);
            }
        }
        let mut parents: std::collections::HashSet<cedar::EntityUid> = std::collections::HashSet::new();
        for (t, i) in &e.parents {
            parents.insert(self.uid_of(t, i)?);
        }
        if self.has_labels() {
            let labels: &[String] = e.attributes.as_ref().map(|a| &a.labels[..]).unwrap_or(&[]);
            let level = labels.iter().filter_map(|l| self.model.labels.get(l)).map(|d| d.level).max().unwrap_or(0);
            let mut set = Vec::with_capacity(labels.len());
            for l in labels {
                let label = self.uid_of(LABEL_TYPE, l)?;
                set.push(cedar::RestrictedExpression::new_entity_uid(label.clone()));
                if label_parents {
                    parents.insert(label);
                }
            }
            attrs.insert(LABELS_ATTR.into(), cedar::RestrictedExpression::new_set(set));
            attrs.insert(LABEL_LEVEL_ATTR.into(), cedar::RestrictedExpression::new_long(level));
        }
        cedar::Entity::new(self.uid_of(&e.object_type, &e.object_id)?, attrs, parents)
            .map_err(|err| format!("`{}:{}`: {}", e.object_type, e.object_id, full_message(&err)))
    }

    /// [`CompiledPolicies::entity`], reusing the one this thread built last for the same
    /// object from the same stored attributes and parents (see [`Built`]).
    fn entity_reused(&self, e: &EntityData, label_parents: bool) -> Result<cedar::Entity, String> {
        if !e.stored {
            return self.entity(e, label_parents);
        }
        let (slot, fingerprint) = built_slot(self.generation, e, label_parents);
        // A kept entity, or whether to keep the one about to be built.
        let (kept, admit) = BUILT.with_borrow_mut(|cache| {
            if let Some((kept, b)) = cache.slots.get(slot).and_then(Option::as_ref) {
                if *kept == fingerprint && b.matches(self.generation, e, label_parents) {
                    return (Some(b.entity.clone()), false);
                }
            }
            if cache.seen.is_empty() {
                cache.seen = vec![0; BUILT_SLOTS];
                cache.slots.resize_with(BUILT_SLOTS, || None);
            }
            let last = cache.seen.get_mut(slot).map(|f| std::mem::replace(f, fingerprint));
            (None, last == Some(fingerprint))
        });
        if let Some(entity) = kept {
            return Ok(entity);
        }
        let entity = self.entity(e, label_parents)?;
        if admit {
            let built = Box::new(Built {
                generation: self.generation,
                label_parents,
                object_type: e.object_type.clone(),
                object_id: e.object_id.clone(),
                attributes: e.attributes.clone(),
                parents: e.parents.clone(),
                entity: entity.clone(),
            });
            BUILT.with_borrow_mut(|cache| {
                if let Some(s) = cache.slots.get_mut(slot) {
                    *s = Some((fingerprint, built));
                }
            });
        }
        Ok(entity)
    }

    /// The label entities the given entities' labels reach (the labels and every label
    /// dominating them).
    fn label_entities(&self, entities: &[EntityData], out: &mut Vec<cedar::Entity>) -> Result<(), String> {
        let mut seen: std::collections::BTreeSet<&str> = std::collections::BTreeSet::new();
        let mut stack: Vec<&str> = entities
            .iter()
            .filter_map(|e| e.attributes.as_ref())
            .flat_map(|a| a.labels.iter().map(String::as_str))
            .collect();
        while let Some(name) = stack.pop() {
            if !seen.insert(name) {
                continue;
            }
            let Some((name, def)) = self.model.labels.get_key_value(name) else { continue };
            let mut parents = std::collections::HashSet::new();
            for p in &def.parents {
                parents.insert(self.uid_of(LABEL_TYPE, p)?);
            }
            stack.extend(def.parents.iter().map(String::as_str));
            let attrs = HashMap::from([("level".to_string(), cedar::RestrictedExpression::new_long(def.level))]);
            let label = cedar::Entity::new(self.uid_of(LABEL_TYPE, name)?, attrs, parents)
                .map_err(|e| format!("label `{name}`: {}", full_message(&e)))?;
            out.push(label);
        }
        Ok(())
    }

    /// Whether checks of `action` need the ancestors of the principal and the resource
    /// (a policy that may apply tests hierarchy with `in`).
    pub fn needs_ancestors(&self, action: &str) -> bool {
        self.policies_for(action).uses_in
    }

    fn policies_for(&self, action: &str) -> &ActionPolicies {
        self.sets_by_action.get(action).unwrap_or(&self.any_set)
    }

    /// Which effects may apply to checks of `action`.
    pub fn applies(&self, action: &str) -> Applies {
        self.by_action.get(action).copied().unwrap_or_default().or(self.any_action)
    }

    pub fn hierarchy(&self) -> &Hierarchy {
        &self.hierarchy
    }

    /// Parses a request context against the declared context attributes. Keys nobody
    /// declared are left out: no validated policy can read them, so no decision depends
    /// on them (callers may send more than the policies use). Declared values are
    /// converted like written attribute values ([`typed_value`]), and one of the wrong
    /// type is an error. `None` when nothing declared was sent (an empty context).
    pub fn context(&self, action: &str, context: Option<&Map<String, Value>>) -> Result<Option<cedar::Context>, String> {
        let Some(ctx) = context else { return Ok(None) };
        let declared = ctx.iter().filter(|(k, _)| self.model.declarations.context.contains_key(*k));
        bounds::json_fields("the context", declared.clone())?;
        let declared: Map<String, Value> = declared
            .filter_map(|(k, v)| {
                let decl = self.model.declarations.context.get(k)?;
                Some((k.clone(), typed_value(&decl.ty, v.clone())))
            })
            .collect();
        if declared.is_empty() {
            return Ok(None);
        }
        let uid = action_uid(action)?;
        cedar::Context::from_json_value(Value::Object(declared), Some((&self.schema, &uid))).map(Some).map_err(|e| {
            let mut m = e.to_string();
            if let Some(help) = miette::Diagnostic::help(&e) {
                m.push_str(&format!(" ({help})"));
            }
            m
        })
    }

    /// Per-request attribute values of one object (AuthZEN `properties`), added to its
    /// stored values. Only attributes declared [`AttrSource::Request`] may be given: a
    /// stored one is the store's alone, and giving it is refused, naming it (a request
    /// must not be able to clear a `suspended` flag). As for a context, keys its type does
    /// not declare are left out (no validated policy can read them); request-supplied ones
    /// are converted like written values ([`typed_value`]: `"10.0.0.1"` for an `ip`) and
    /// must fit their type. `None` when nothing declared was given.
    pub fn request_attributes(
        &self,
        object_type: &str,
        object_id: &str,
        attributes: Option<&Map<String, Value>>,
    ) -> Result<Option<Map<String, Value>>, String> {
        let (Some(given), Some(fields)) = (attributes, self.model.declarations.types.get(object_type)) else {
            return Ok(None);
        };
        let mut declared = Vec::new();
        for (k, v) in given {
            match fields.get(k) {
                None => {}
                Some(d) if d.source == AttrSource::Stored => {
                    return Err(format!(
                        "attributes of `{object_type}:{object_id}`: `{k}` is a stored attribute; a request may not supply it (only attributes declared with source `request` may be)"
                    ))
                }
                Some(d) => declared.push((k, v, d)),
            }
        }
        bounds::json_fields(&format!("attributes of `{object_type}:{object_id}`"), declared.iter().map(|(k, v, _)| (*k, *v)))?;
        let values: Map<String, Value> =
            declared.into_iter().map(|(k, v, d)| (k.clone(), typed_value(&d.ty, v.clone()))).collect();
        if values.is_empty() {
            return Ok(None);
        }
        // Cedar has no fractions (decimals were converted above); its own message for
        // one does not name the attribute.
        if let Some((name, n)) = values.iter().find_map(|(k, v)| fraction_in(v).map(|n| (k, n))) {
            return Err(format!("attributes of `{object_type}:{object_id}`: `{name}`: {n} is not a whole number"));
        }
        let probe = json!({
            "uid": {"type": cedar_type_name(object_type), "id": object_id},
            "attrs": values,
            "parents": [],
        });
        cedar::Entities::from_json_value(Value::Array(vec![probe]), Some(&self.request_schema))
            .map_err(|e| format!("attributes of `{object_type}:{object_id}`: {}", full_message(&e)))?;
        Ok(Some(values))
    }

    /// The Cedar request for `action` by `principal` on `resource`: fails only on a
    /// context that does not fit the declared context types (the caller's mistake).
    pub fn request(
        &self,
        action: &str,
        principal: (&str, &str),
        resource: (&str, &str),
        context: Option<cedar::Context>,
    ) -> Result<cedar::Request, String> {
        // The schema pass only checks the context's types (the entity types come from
        // the relationship schema and the action is the name checked): without a
        // context there is nothing to check.
        let action = cedar::EntityUid::from_type_name_and_id(self.action_type.clone(), cedar::EntityId::new(action));
        let (context, schema) = match context {
            Some(c) => (c, Some(&self.schema)),
            None => (cedar::Context::empty(), None),
        };
        cedar::Request::new(self.uid_of(principal.0, principal.1)?, action, self.uid_of(resource.0, resource.1)?, context, schema)
            .map_err(|e| e.to_string())
    }

    /// Evaluates a request with these entities.
    pub fn evaluate(&self, request: &cedar::Request, entities: Vec<EntityData>) -> CedarOutcome {
        match self.try_evaluate(request, entities) {
            Ok(o) => o,
            Err(e) => CedarOutcome { failed: Some(e), ..CedarOutcome::default() },
        }
    }

    fn try_evaluate(&self, request: &cedar::Request, entities: Vec<EntityData>) -> Result<CedarOutcome, String> {
        // Entities are built directly (no JSON, no schema pass): every stored value was
        // checked against the schema when it was written.
        let policies = match request.action() {
            Some(a) => self.policies_for(a.id().unescaped()),
            None => &self.any_set,
        };
        let mut built: Vec<cedar::Entity> = Vec::with_capacity(entities.len() + 4);
        for e in &entities {
            built.push(self.entity_reused(e, policies.uses_in)?);
        }
        if self.has_labels() && policies.uses_in {
            self.label_entities(&entities, &mut built)?;
        }
        let entities = cedar::Entities::from_entities(built, None).map_err(|e| format!("entities: {}", full_message(&e)))?;
        let response = cedar::Authorizer::new().is_authorized(request, &policies.set, &entities);
        let effect = |id: &cedar::PolicyId| policies.set.policy(id).map(cedar::Policy::effect);
        let diagnostics = response.diagnostics();
        Ok(classify(
            response.decision() == cedar::Decision::Allow,
            diagnostics.reason().map(|id| (id.to_string(), effect(id))),
            diagnostics.errors().map(|e| {
                let cedar::AuthorizationError::PolicyEvaluationError(pe) = e;
                (pe.policy_id().to_string(), effect(pe.policy_id()), e.to_string())
            }),
        ))
    }
}

/// Cedar's answer as a [`CedarOutcome`]: each satisfied or erroring policy classified by
/// its effect in the set that was evaluated. Fails closed: a policy the set does not know
/// counts as an erroring forbid, and so does a classification that disagrees with
/// Cedar's own decision (Cedar allows exactly when a permit is satisfied and no forbid
/// is), so no bookkeeping mistake here can turn a denial into a grant.
fn classify(
    cedar_allows: bool,
    satisfied: impl IntoIterator<Item = (String, Option<cedar::Effect>)>,
    erroring: impl IntoIterator<Item = (String, Option<cedar::Effect>, String)>,
) -> CedarOutcome {
    let mut outcome = CedarOutcome::default();
    for (id, effect) in satisfied {
        match effect {
            Some(cedar::Effect::Permit) => outcome.permits.push(id),
            Some(cedar::Effect::Forbid) => outcome.forbids.push(id),
            None => outcome.erroring_forbids.push(format!("{id}: satisfied, but not a policy of the evaluated set")),
        }
    }
    for (id, effect, message) in erroring {
        match effect {
            // A permit that errors grants nothing.
            Some(cedar::Effect::Permit) => {}
            Some(cedar::Effect::Forbid) => outcome.erroring_forbids.push(format!("{id}: {message}")),
            None => outcome.erroring_forbids.push(format!("{id}: errored, and is not a policy of the evaluated set: {message}")),
        }
    }
    let classified_allows = !outcome.permits.is_empty() && outcome.forbids.is_empty();
    if classified_allows != cedar_allows {
        outcome.erroring_forbids.push(format!(
            "Cedar decided {} but its satisfied policies say {}",
            if cedar_allows { "allow" } else { "deny" },
            if classified_allows { "allow" } else { "deny" }
        ));
    }
    outcome
}

/// A number with a fraction anywhere in `v`, if there is one.
fn fraction_in(v: &Value) -> Option<&serde_json::Number> {
    match v {
        Value::Number(n) if !n.is_i64() && !n.is_u64() => Some(n),
        Value::Array(items) => items.iter().find_map(fraction_in),
        Value::Object(o) => o.values().find_map(fraction_in),
        _ => None,
    }
}

/// A value in Cedar's JSON form as a restricted expression.
fn restricted(v: &Value) -> Result<cedar::RestrictedExpression, String> {
    use cedar::RestrictedExpression as R;
    Ok(match v {
        Value::Bool(b) => R::new_bool(*b),
        Value::Number(n) => R::new_long(n.as_i64().ok_or_else(|| format!("{n} is not a whole number"))?),
        Value::String(s) => R::new_string(s.clone()),
        Value::Array(items) => R::new_set(items.iter().map(restricted).collect::<Result<Vec<_>, _>>()?),
        Value::Null => return Err("null is not a Cedar value".into()),
        Value::Object(o) => {
            if let Some(ext) = o.get("__extn") {
                let arg = ext.get("arg").and_then(Value::as_str).unwrap_or("");
                return match ext.get("fn").and_then(Value::as_str) {
                    Some("ip" | "ipaddr") => Ok(R::new_ip(arg)),
                    Some("decimal") => Ok(R::new_decimal(arg)),
                    other => Err(format!("unsupported extension value {:?}", other.unwrap_or("?"))),
                };
            }
            if let Some(entity) = o.get("__entity") {
                let t = entity.get("type").and_then(Value::as_str).unwrap_or("");
                let i = entity.get("id").and_then(Value::as_str).unwrap_or("");
                let ty = cedar::EntityTypeName::from_str(t).map_err(|e| e.to_string())?;
                return Ok(R::new_entity_uid(cedar::EntityUid::from_type_name_and_id(ty, cedar::EntityId::new(i))));
            }
            let fields = o
                .iter()
                .map(|(k, v)| Ok((k.clone(), restricted(v)?)))
                .collect::<Result<Vec<_>, String>>()?;
            R::new_record(fields).map_err(|e| e.to_string())?
        }
    })
}

fn uid((t, i): (&str, &str)) -> Result<cedar::EntityUid, String> {
    cedar::EntityTypeName::from_str(&cedar_type_name(t))
        .map(|ty| cedar::EntityUid::from_type_name_and_id(ty, cedar::EntityId::new(i)))
        .map_err(|e| format!("`{t}` is not a Cedar type name: {e}"))
}

fn action_uid(action: &str) -> Result<cedar::EntityUid, String> {
    let ty = cedar::EntityTypeName::from_str("Action").map_err(|e| e.to_string())?;
    Ok(cedar::EntityUid::from_type_name_and_id(ty, cedar::EntityId::new(action)))
}

/// One entity for a Cedar request.
#[derive(Debug, Clone, Default)]
pub struct EntityData {
    pub object_type: String,
    pub object_id: String,
    /// Its attribute values and labels, if it has any.
    pub attributes: Option<Arc<ObjectAttributes>>,
    pub parents: Vec<(String, String)>,
    /// `attributes` is the graph's own value (no request values added to it), so an
    /// entity built from it may be kept and reused.
    pub stored: bool,
}

/// What Cedar said about one request.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CedarOutcome {
    /// Satisfied permits (ids).
    pub permits: Vec<String>,
    /// Satisfied forbids (ids).
    pub forbids: Vec<String>,
    /// Forbids that raised an error (`id: message`): they deny.
    pub erroring_forbids: Vec<String>,
    /// The request could not be evaluated at all (entities or request did not fit the
    /// schema): permits grant nothing, and forbids that may apply deny.
    pub failed: Option<String>,
}

impl CedarOutcome {
    /// The decision, given the graph's answer and which effects may apply.
    pub fn decide(&self, graph_allowed: bool, applies: Applies) -> bool {
        if self.failed.is_some() {
            return graph_allowed && !applies.forbid;
        }
        (graph_allowed || !self.permits.is_empty()) && self.forbids.is_empty() && self.erroring_forbids.is_empty()
    }

    /// The policies that determined a decision, for `explain`.
    pub fn determining(&self, allowed: bool) -> Vec<String> {
        if allowed {
            self.permits.clone()
        } else if let Some(f) = &self.failed {
            vec![format!("(evaluation failed, forbids apply: {f})")]
        } else {
            self.forbids.iter().chain(self.erroring_forbids.iter()).cloned().collect()
        }
    }
}

/// Infers attribute types from values (`attributes:` in validation files, request
/// contexts in assertions): every inferred attribute is optional.
#[derive(Debug, Default)]
pub struct Inference {
    pub decls: AttributeDecls,
}

impl Inference {
    /// Adds the attributes of `object` (`type:id`).
    pub fn object(&mut self, object_type: &str, object: &str, attrs: &Map<String, Value>) -> Result<(), String> {
        bounds::json_fields(&format!("attributes of `{object}`"), attrs)?;
        let fields = self.decls.types.entry(object_type.to_string()).or_default();
        merge_fields(fields, attrs).map_err(|e| format!("attributes of `{object}`: {e}"))
    }

    /// Adds the attributes of a request context.
    pub fn context(&mut self, ctx: &Map<String, Value>) -> Result<(), String> {
        bounds::json_fields("context", ctx)?;
        merge_fields(&mut self.decls.context, ctx).map_err(|e| format!("context: {e}"))
    }
}

fn merge_fields(fields: &mut BTreeMap<String, AttrDecl>, attrs: &Map<String, Value>) -> Result<(), String> {
    for (name, value) in attrs {
        let ty = infer_bounded(value).map_err(|e| format!("`{name}`: {e}"))?;
        match fields.get_mut(name) {
            None => {
                fields.insert(name.clone(), AttrDecl::stored(ty, false));
            }
            Some(existing) => merge_type(&mut existing.ty, ty).map_err(|e| format!("`{name}`: {e}"))?,
        }
    }
    Ok(())
}

fn merge_type(existing: &mut AttrType, new: AttrType) -> Result<(), String> {
    match (existing, new) {
        (AttrType::Record(a), AttrType::Record(b)) => {
            for (k, d) in b {
                match a.get_mut(&k) {
                    Some(e) => merge_type(&mut e.ty, d.ty)?,
                    None => {
                        a.insert(k, d);
                    }
                }
            }
            Ok(())
        }
        (AttrType::Set(a), AttrType::Set(b)) => merge_type(a, *b),
        (a, b) if *a == b => Ok(()),
        (a, b) => Err(format!("is {} in one place and {} in another", type_label(a), type_label(&b))),
    }
}

fn type_label(t: &AttrType) -> &'static str {
    match t {
        AttrType::String => "a string",
        AttrType::Long => "a number",
        AttrType::Bool => "a boolean",
        AttrType::Decimal => "a decimal",
        AttrType::Ip => "an ip address",
        AttrType::Set(_) => "a set",
        AttrType::Record(_) => "a record",
    }
}

/// The type of one JSON value, in Cedar's JSON value form. A value nested deeper than
/// [`bounds::MAX_VALUE_DEPTH`] is refused.
pub fn infer(value: &Value) -> Result<AttrType, String> {
    bounds::json_value("the value", value)?;
    infer_bounded(value)
}

fn infer_bounded(value: &Value) -> Result<AttrType, String> {
    match value {
        Value::Bool(_) => Ok(AttrType::Bool),
        Value::Number(n) if n.is_i64() => Ok(AttrType::Long),
        Value::Number(n) if n.is_u64() => Err(format!("{n} is past the range of a Cedar long (64-bit signed)")),
        Value::Number(n) => Err(format!(
            "{n} is not a whole number (Cedar has no floats; write {{\"__extn\": {{\"fn\": \"decimal\", \"arg\": \"{n}\"}}}})"
        )),
        Value::String(_) => Ok(AttrType::String),
        Value::Null => Err("null is not a Cedar value (leave the attribute out)".into()),
        Value::Array(items) => {
            let mut element: Option<AttrType> = None;
            for item in items {
                let t = infer_bounded(item)?;
                match &mut element {
                    None => element = Some(t),
                    Some(e) => merge_type(e, t).map_err(|m| format!("a set whose elements differ: {m}"))?,
                }
            }
            element
                .map(|e| AttrType::Set(Box::new(e)))
                .ok_or_else(|| "an empty set has no element type to infer".to_string())
        }
        Value::Object(o) => {
            if let Some(ext) = o.get("__extn") {
                return match ext.get("fn").and_then(Value::as_str) {
                    Some("ip" | "ipaddr") => Ok(AttrType::Ip),
                    Some("decimal") => Ok(AttrType::Decimal),
                    other => Err(format!("unsupported extension value {:?} (ip and decimal are)", other.unwrap_or("?"))),
                };
            }
            if o.contains_key("__entity") {
                return Err("entity references are not supported as attribute values".into());
            }
            let mut fields = BTreeMap::new();
            merge_fields(&mut fields, o)?;
            Ok(AttrType::Record(fields))
        }
    }
}

/// The written form of attribute types (API and CLI): `string`, `long`, `bool`,
/// `decimal`, `ip`, `set<T>`, and records `{name: T, other?: T}` (`?`: optional).
impl std::fmt::Display for AttrType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AttrType::String => f.write_str("string"),
            AttrType::Long => f.write_str("long"),
            AttrType::Bool => f.write_str("bool"),
            AttrType::Decimal => f.write_str("decimal"),
            AttrType::Ip => f.write_str("ip"),
            AttrType::Set(e) => write!(f, "set<{e}>"),
            AttrType::Record(fields) => {
                f.write_str("{")?;
                for (n, (name, d)) in fields.iter().enumerate() {
                    if n > 0 {
                        f.write_str(", ")?;
                    }
                    write!(f, "{name}{}: {}", if d.required { "" } else { "?" }, d.ty)?;
                }
                f.write_str("}")
            }
        }
    }
}

impl FromStr for AttrType {
    type Err = String;

    fn from_str(s: &str) -> Result<AttrType, String> {
        if s.len() > bounds::MAX_TYPE_BYTES {
            return Err(format!("the type is {} bytes, more than the limit of {}", s.len(), bounds::MAX_TYPE_BYTES));
        }
        let mut p = TypeParser { text: s, at: 0, depth: 0 };
        let ty = p.ty()?;
        p.skip_space();
        if p.at < s.len() {
            return Err(format!("unexpected `{}` after the type in `{s}`", &s[p.at..]));
        }
        Ok(ty)
    }
}

struct TypeParser<'a> {
    text: &'a str,
    at: usize,
    /// How many types enclose the one being parsed.
    depth: usize,
}

impl TypeParser<'_> {
    fn skip_space(&mut self) {
        let rest = &self.text[self.at..];
        self.at += rest.len() - rest.trim_start().len();
    }

    fn eat(&mut self, c: char) -> bool {
        self.skip_space();
        if self.text[self.at..].starts_with(c) {
            self.at += c.len_utf8();
            true
        } else {
            false
        }
    }

    fn expect(&mut self, c: char) -> Result<(), String> {
        if self.eat(c) {
            Ok(())
        } else {
            Err(format!("expected `{c}` at column {} of `{}`", self.at + 1, self.text))
        }
    }

    fn word(&mut self) -> &str {
        self.skip_space();
        let rest = &self.text[self.at..];
        let len = rest.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).unwrap_or(rest.len());
        self.at += len;
        &rest[..len]
    }

    fn ty(&mut self) -> Result<AttrType, String> {
        if self.depth >= bounds::MAX_TYPE_DEPTH {
            return Err(format!(
                "the type nests deeper than {} levels at column {} of `{}`",
                bounds::MAX_TYPE_DEPTH,
                self.at + 1,
                self.text
            ));
        }
        self.depth += 1;
        let ty = self.ty_inner();
        self.depth -= 1;
        ty
    }

    fn ty_inner(&mut self) -> Result<AttrType, String> {
        if self.eat('{') {
            let mut fields = BTreeMap::new();
            if self.eat('}') {
                return Ok(AttrType::Record(fields));
            }
            loop {
                let name = self.word().to_string();
                if name.is_empty() {
                    return Err(format!("expected a field name at column {} of `{}`", self.at + 1, self.text));
                }
                let required = !self.eat('?');
                self.expect(':')?;
                let ty = self.ty()?;
                if fields.insert(name.clone(), AttrDecl::stored(ty, required)).is_some() {
                    return Err(format!("the field `{name}` appears twice in `{}`", self.text));
                }
                if self.eat('}') {
                    return Ok(AttrType::Record(fields));
                }
                self.expect(',')?;
            }
        }
        let word = self.word().to_ascii_lowercase();
        match word.as_str() {
            "string" => Ok(AttrType::String),
            "long" | "int" | "integer" => Ok(AttrType::Long),
            "bool" | "boolean" => Ok(AttrType::Bool),
            "decimal" => Ok(AttrType::Decimal),
            "ip" | "ipaddr" => Ok(AttrType::Ip),
            "set" => {
                self.expect('<')?;
                let element = self.ty()?;
                self.expect('>')?;
                Ok(AttrType::Set(Box::new(element)))
            }
            "" => Err(format!("expected a type at column {} of `{}`", self.at + 1, self.text)),
            other => Err(format!(
                "unknown attribute type `{other}` (string, long, bool, decimal, ip, set<T> and {{field: T}} are)"
            )),
        }
    }
}

/// Converts values written as plain JSON into Cedar's JSON value form, guided by the
/// declared type: `"10.0.0.1"` for an `ip` becomes `{"__extn": {"fn": "ip", ...}}`, and
/// likewise for decimals (`"1.5"` or `1.5`). Everything else is left as written.
pub fn typed_value(ty: &AttrType, value: Value) -> Value {
    match (ty, value) {
        (AttrType::Ip, Value::String(s)) => json!({"__extn": {"fn": "ip", "arg": s}}),
        (AttrType::Decimal, Value::String(s)) => json!({"__extn": {"fn": "decimal", "arg": s}}),
        (AttrType::Decimal, Value::Number(n)) => {
            let text = if n.is_f64() { format!("{n}") } else { format!("{n}.0") };
            json!({"__extn": {"fn": "decimal", "arg": text}})
        }
        (AttrType::Set(e), Value::Array(items)) => Value::Array(items.into_iter().map(|v| typed_value(e, v)).collect()),
        (AttrType::Record(fields), Value::Object(o)) => Value::Object(
            o.into_iter()
                .map(|(k, v)| {
                    let v = match fields.get(&k) {
                        Some(d) => typed_value(&d.ty, v),
                        None => v,
                    };
                    (k, v)
                })
                .collect(),
        ),
        (_, v) => v,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn allows(outcome: &CedarOutcome) -> bool {
        outcome.decide(true, Applies { permit: true, forbid: true })
    }

    #[test]
    fn a_policy_the_set_does_not_know_denies() {
        let unknown = classify(true, [("ghost".to_string(), None)], []);
        assert!(!allows(&unknown), "{unknown:?}");
        assert!(unknown.erroring_forbids[0].contains("ghost"));
        let erroring = classify(false, [], [("ghost".to_string(), None, "boom".to_string())]);
        assert!(!allows(&erroring), "{erroring:?}");
        // Known policies are classified by their effect.
        let permit = classify(true, [("p".to_string(), Some(cedar::Effect::Permit))], []);
        assert_eq!(permit.permits, ["p"]);
        assert!(allows(&permit));
        let permit_erroring =
            classify(false, [], [("p".to_string(), Some(cedar::Effect::Permit), "boom".to_string())]);
        assert!(permit_erroring.permits.is_empty() && permit_erroring.erroring_forbids.is_empty());
    }

    #[test]
    fn a_classification_that_disagrees_with_cedar_denies() {
        // Cedar denied, yet the satisfied policies look like a grant.
        let outcome = classify(false, [("p".to_string(), Some(cedar::Effect::Permit))], []);
        assert!(!allows(&outcome), "{outcome:?}");
        assert!(outcome.erroring_forbids.iter().any(|m| m.contains("Cedar decided deny")));
        // Cedar allowed, yet a forbid was satisfied.
        let outcome = classify(
            true,
            [("p".to_string(), Some(cedar::Effect::Permit)), ("f".to_string(), Some(cedar::Effect::Forbid))],
            [],
        );
        assert!(!allows(&outcome), "{outcome:?}");
    }

    #[test]
    fn attribute_types_are_bounded_before_they_recurse() {
        for text in ["set<".repeat(100_000), "{a: ".repeat(100_000), "set<".repeat(1_000_000)] {
            let err = text.parse::<AttrType>().unwrap_err();
            assert!(err.contains("bytes, more than the limit") || err.contains("nests deeper"), "{err}");
        }
        let deep = format!("{}long{}", "set<".repeat(bounds::MAX_TYPE_DEPTH), ">".repeat(bounds::MAX_TYPE_DEPTH));
        assert!(deep.parse::<AttrType>().unwrap_err().contains("nests deeper than 32 levels"));
        let at_limit =
            format!("{}long{}", "set<".repeat(bounds::MAX_TYPE_DEPTH - 1), ">".repeat(bounds::MAX_TYPE_DEPTH - 1));
        let ty: AttrType = at_limit.parse().unwrap();
        assert_eq!(type_depth(&ty), bounds::MAX_TYPE_DEPTH);
        let records = format!("{}long{}", "{a: ".repeat(bounds::MAX_TYPE_DEPTH), "}".repeat(bounds::MAX_TYPE_DEPTH));
        assert!(records.parse::<AttrType>().unwrap_err().contains("nests deeper"));
    }
}
