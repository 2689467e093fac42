//! Compiler: [`SchemaAst`] -> [`CompiledSchema`]. Resolves every name, type-checks, and
//! reports every problem with the offending name and its position.

use crate::ast::*;
use crate::compiled::*;
use crate::error::{SchemaErrors, Sink};
use crate::names::NameIndex;

/// Longest allowed type, relation or caveat name segment.
pub const MAX_NAME_LEN: usize = 64;

/// Whether `name` is a valid relation or permission name (also one segment of a type name):
/// lowercase ASCII letters, digits and `_`, starting with a letter, at most 64 bytes.
pub fn is_valid_identifier(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_lowercase())
        && name.len() <= MAX_NAME_LEN
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        && !name.ends_with('_')
}

/// Whether `name` is a valid (possibly namespaced) type name such as `org/user`.
pub fn is_valid_type_name(name: &str) -> bool {
    !name.is_empty() && name.split('/').all(is_valid_identifier)
}

/// Parses and compiles schema text. On failure returns every error found.
pub fn compile(text: &str) -> Result<CompiledSchema, SchemaErrors> {
    let (ast, mut errors) = crate::parser::parse(text);
    let mut sink = Sink::default();
    let compiled = compile_ast(&ast, &mut sink);
    errors.extend(sink.into_errors(text));
    errors.sort_by_key(|e| e.position);
    errors.dedup();
    if errors.is_empty() {
        Ok(compiled)
    } else {
        Err(SchemaErrors(errors))
    }
}

fn compile_ast(ast: &SchemaAst, sink: &mut Sink) -> CompiledSchema {
    let mut schema = CompiledSchema::default();

    // Pass 1: `use` flags, names of definitions and caveats.
    for item in &ast.items {
        match item {
            Item::Use(flag) => {
                if flag.text == "expiration" {
                    schema.uses_expiration = true;
                } else {
                    sink.push(
                        flag.span,
                        format!("unknown feature `{}` in `use`", flag.text),
                    );
                }
            }
            Item::Definition(def) => {
                check_type_name(&def.name, "definition", sink);
                if schema.type_index.contains_key(&def.name.text) {
                    sink.push(
                        def.name.span,
                        format!("duplicate definition `{}`", def.name.text),
                    );
                    continue;
                }
                let Ok(id) = TypeId::try_from(schema.definitions.len()) else {
                    sink.push(def.name.span, "too many definitions");
                    continue;
                };
                schema.type_index.insert(&def.name.text, id);
                let mut relation_index = NameIndex::default();
                let mut relations = Vec::new();
                for member in &def.members {
                    let (name, doc, kind) = match member {
                        Member::Relation(r) => (&r.name, &r.doc, RelationKind::Direct(Vec::new())),
                        Member::Permission(p) => {
                            (&p.name, &p.doc, RelationKind::Permission(Rewrite::Nil))
                        }
                    };
                    if !is_valid_identifier(&name.text) || name.text == "nil" {
                        sink.push(name.span, format!("invalid relation name `{}`: use lowercase letters, digits and `_`, starting with a letter, at most {MAX_NAME_LEN} characters; `nil` is reserved", name.text));
                    }
                    if relation_index.contains_key(&name.text) {
                        sink.push(
                            name.span,
                            format!("duplicate relation `{}` on `{}`", name.text, def.name.text),
                        );
                        continue;
                    }
                    let Ok(rid) = RelationId::try_from(relations.len()) else {
                        sink.push(name.span, "too many relations");
                        continue;
                    };
                    relation_index.insert(&name.text, rid);
                    relations.push(Relation {
                        name: name.text.clone(),
                        doc: doc.clone(),
                        kind,
                    });
                }
                schema.definitions.push(Definition {
                    name: def.name.text.clone(),
                    doc: def.doc.clone(),
                    relations,
                    relation_index,
                });
            }
            Item::Caveat(cav) => {
                check_type_name(&cav.name, "caveat", sink);
                if schema.caveat_index.contains_key(&cav.name.text) {
                    sink.push(
                        cav.name.span,
                        format!("duplicate caveat `{}`", cav.name.text),
                    );
                    continue;
                }
                let mut params: Vec<(String, String)> = Vec::new();
                let mut types_ok = true;
                for p in &cav.params {
                    if params.iter().any(|(n, _)| n == &p.name.text) {
                        types_ok = false;
                        sink.push(
                            p.name.span,
                            format!(
                                "duplicate parameter `{}` in caveat `{}`",
                                p.name.text, cav.name.text
                            ),
                        );
                    }
                    params.push((p.name.text.clone(), p.type_ref.clone()));
                }
                for p in &cav.params {
                    if let Err(m) = crate::caveat::ParamType::parse(&p.type_ref) {
                        sink.push(p.type_span, format!("caveat `{}`, parameter `{}`: {m}", cav.name.text, p.name.text));
                        types_ok = false;
                    }
                }
                let program = if types_ok && !cav.expression.is_empty() {
                    match crate::caveat::CaveatProgram::compile(&params, &cav.expression) {
                        Ok(p) => Some(std::sync::Arc::new(p)),
                        Err(e) => {
                            let span = match e.offset {
                                Some(offset) => {
                                    let at = cav.expression_start + offset.min(cav.expression.len());
                                    crate::span::Span::new(at, at + 1)
                                }
                                None => cav.name.span,
                            };
                            sink.push(span, format!("caveat `{}`: {}", cav.name.text, e.message));
                            None
                        }
                    }
                } else {
                    None
                };
                schema
                    .caveat_index
                    .insert(cav.name.text.clone(), schema.caveats.len());
                schema.caveats.push(Caveat {
                    name: cav.name.text.clone(),
                    doc: cav.doc.clone(),
                    params,
                    expression: cav.expression.clone(),
                    program,
                });
            }
        }
    }

    // Pass 2: relation subject types (needs every definition's relation names).
    let mut allowed_by_def: Vec<Vec<Vec<AllowedSubject>>> = Vec::new();
    for item in &ast.items {
        let Item::Definition(def) = item else {
            continue;
        };
        let Some((ty, _)) = schema.definition_by_name(&def.name.text) else {
            continue;
        };
        if allowed_by_def.len() != usize::from(ty) {
            // A duplicate definition was skipped in pass 1; skip it here too.
            continue;
        }
        let mut per_relation = Vec::new();
        let mut seen_names = std::collections::HashSet::new();
        for member in &def.members {
            let Member::Relation(rel) = member else {
                continue;
            };
            if !seen_names.insert(rel.name.text.clone()) {
                continue;
            }
            per_relation.push(compile_subject_types(&schema, def, rel, sink));
        }
        allowed_by_def.push(per_relation);
    }
    for (ty, per_relation) in allowed_by_def.into_iter().enumerate() {
        let Some(def) = schema.definitions.get_mut(ty) else {
            continue;
        };
        let mut it = per_relation.into_iter();
        for rel in def.relations.iter_mut() {
            if let RelationKind::Direct(allowed) = &mut rel.kind {
                if let Some(a) = it.next() {
                    *allowed = a;
                }
            }
        }
    }

    // Pass 3: permission rewrites.
    let mut rewrites: Vec<(TypeId, RelationId, Rewrite)> = Vec::new();
    for item in &ast.items {
        let Item::Definition(def) = item else {
            continue;
        };
        let Some((ty, d)) = schema.definition_by_name(&def.name.text) else {
            continue;
        };
        for member in &def.members {
            let Member::Permission(perm) = member else {
                continue;
            };
            let Some(rid) = d.relation_id(&perm.name.text) else {
                continue;
            };
            let ctx = RewriteContext {
                schema: &schema,
                ty,
                def_name: &def.name.text,
                perm_name: &perm.name.text,
            };
            let rewrite = ctx.compile_expr(&perm.expr, sink);
            rewrites.push((ty, rid, rewrite));
        }
    }
    for (ty, rid, rewrite) in rewrites {
        if let Some(rel) = schema
            .definitions
            .get_mut(usize::from(ty))
            .and_then(|d| d.relations.get_mut(usize::from(rid)))
        {
            if rel.is_permission() {
                rel.kind = RelationKind::Permission(rewrite);
            }
        }
    }
    schema
}

fn check_type_name(name: &Name, what: &str, sink: &mut Sink) {
    if !is_valid_type_name(&name.text) {
        sink.push(name.span, format!("invalid {what} name `{}`: use lowercase letters, digits and `_` (with `/` between namespace segments), starting with a letter, at most {MAX_NAME_LEN} characters a segment", name.text));
    }
}

fn compile_subject_types(
    schema: &CompiledSchema,
    def: &DefinitionAst,
    rel: &RelationAst,
    sink: &mut Sink,
) -> Vec<AllowedSubject> {
    let mut out: Vec<AllowedSubject> = Vec::new();
    for st in &rel.subject_types {
        let Some((type_id, target)) = schema.definition_by_name(&st.type_name.text) else {
            sink.push(
                st.type_name.span,
                format!(
                    "undefined type `{}` in relation `{}` on `{}`",
                    st.type_name.text, rel.name.text, def.name.text
                ),
            );
            continue;
        };
        let kind = match &st.kind {
            SubjectKindAst::Object | SubjectKindAst::Ellipsis => AllowedKind::Object,
            SubjectKindAst::Wildcard => AllowedKind::Wildcard,
            SubjectKindAst::Relation(r) => match target.relation_id(&r.text) {
                Some(rid) => AllowedKind::SubjectSet(rid),
                None => {
                    sink.push(
                        r.span,
                        format!("undefined relation `{}` on `{}`", r.text, target.name),
                    );
                    continue;
                }
            },
        };
        let caveat = match &st.caveat {
            None => None,
            Some(c) => match schema.caveat_id(&c.text) {
                Some(id) => Some(id),
                None => {
                    sink.push(c.span, format!("undefined caveat `{}`", c.text));
                    continue;
                }
            },
        };
        if let Some(span) = st.expiration {
            if !schema.uses_expiration {
                sink.push(
                    span,
                    "`with expiration` needs `use expiration` at the top of the schema",
                );
            }
        }
        let allowed = AllowedSubject {
            type_id,
            kind,
            caveat,
            expiration: st.expiration.is_some(),
        };
        if out.contains(&allowed) {
            sink.push(
                st.type_name.span,
                format!(
                    "duplicate subject type `{}` in relation `{}` on `{}`",
                    st.type_name.text, rel.name.text, def.name.text
                ),
            );
            continue;
        }
        out.push(allowed);
    }
    out
}

struct RewriteContext<'a> {
    schema: &'a CompiledSchema,
    ty: TypeId,
    def_name: &'a str,
    perm_name: &'a str,
}

impl RewriteContext<'_> {
    fn def(&self) -> Option<&Definition> {
        self.schema.definition(self.ty)
    }

    fn compile_expr(&self, expr: &ExprAst, sink: &mut Sink) -> Rewrite {
        match expr {
            ExprAst::Error(_) => Rewrite::Nil,
            ExprAst::Ident(name) => {
                if name.text == "nil" {
                    return Rewrite::Nil;
                }
                match self.def().and_then(|d| d.relation_id(&name.text)) {
                    Some(rid) => Rewrite::Computed(rid),
                    None => {
                        sink.push(
                            name.span,
                            format!("undefined relation `{}` on `{}`", name.text, self.def_name),
                        );
                        Rewrite::Nil
                    }
                }
            }
            ExprAst::Arrow { left, right } => match left.as_ref() {
                ExprAst::Ident(tupleset) => self.arrow(tupleset, right, ArrowKind::Any, sink),
                _ => {
                    sink.push(right.span, format!("nested arrows are not supported (in permission `{}` on `{}`); name the intermediate permission instead", self.perm_name, self.def_name));
                    Rewrite::Nil
                }
            },
            ExprAst::FunctionArrow {
                left,
                function,
                right,
            } => {
                let kind = match function.text.as_str() {
                    "all" => ArrowKind::All,
                    "any" => ArrowKind::AnyFunction,
                    other => {
                        sink.push(
                            function.span,
                            format!("unknown arrow function `{other}`: expected `all` or `any`"),
                        );
                        return Rewrite::Nil;
                    }
                };
                self.arrow(left, right, kind, sink)
            }
            ExprAst::Binary { op, left, right } => {
                let l = self.compile_expr(left, sink);
                let r = self.compile_expr(right, sink);
                match op {
                    BinaryOp::Union => {
                        flatten(l, r, |e| matches!(e, Rewrite::Union(_)), Rewrite::Union)
                    }
                    BinaryOp::Intersection => flatten(
                        l,
                        r,
                        |e| matches!(e, Rewrite::Intersection(_)),
                        Rewrite::Intersection,
                    ),
                    BinaryOp::Exclusion => Rewrite::Exclusion(Box::new(l), Box::new(r)),
                }
            }
        }
    }

    fn arrow(&self, tupleset: &Name, computed: &Name, kind: ArrowKind, sink: &mut Sink) -> Rewrite {
        let Some(def) = self.def() else {
            return Rewrite::Nil;
        };
        let Some(rid) = def.relation_id(&tupleset.text) else {
            sink.push(
                tupleset.span,
                format!(
                    "undefined relation `{}` on `{}`",
                    tupleset.text, self.def_name
                ),
            );
            return Rewrite::Nil;
        };
        let Some(rel) = def.relation(rid) else {
            return Rewrite::Nil;
        };
        if rel.is_permission() {
            sink.push(tupleset.span, format!("arrow over permission `{}` on `{}`: the left side of an arrow must be a relation", tupleset.text, self.def_name));
            return Rewrite::Nil;
        }
        let mut targets: Vec<(TypeId, RelationId)> = Vec::new();
        for allowed in rel.allowed_subjects() {
            if allowed.kind == AllowedKind::Wildcard {
                let tname = self
                    .schema
                    .definition(allowed.type_id)
                    .map(|d| d.name.as_str())
                    .unwrap_or("?");
                sink.push(tupleset.span, format!("arrow over relation `{}` on `{}`, which allows the wildcard `{tname}:*`; arrows cannot walk wildcards", tupleset.text, self.def_name));
                return Rewrite::Nil;
            }
            let Some(target_def) = self.schema.definition(allowed.type_id) else {
                continue;
            };
            if let Some(t) = target_def.relation_id(&computed.text) {
                if !targets.contains(&(allowed.type_id, t)) {
                    targets.push((allowed.type_id, t));
                }
            }
        }
        if targets.is_empty() && !rel.allowed_subjects().is_empty() {
            let types: Vec<String> = rel
                .allowed_subjects()
                .iter()
                .filter_map(|a| {
                    self.schema
                        .definition(a.type_id)
                        .map(|d| format!("`{}`", d.name))
                })
                .collect();
            sink.push(
                computed.span,
                format!(
                    "undefined relation `{}` on every subject type of `{}` ({})",
                    computed.text,
                    tupleset.text,
                    types.join(", ")
                ),
            );
            return Rewrite::Nil;
        }
        targets.sort_unstable();
        Rewrite::Arrow(Arrow {
            tupleset: rid,
            computed: computed.text.clone(),
            kind,
            targets,
        })
    }
}

fn flatten(
    l: Rewrite,
    r: Rewrite,
    same: impl Fn(&Rewrite) -> bool,
    make: fn(Vec<Rewrite>) -> Rewrite,
) -> Rewrite {
    let mut items = Vec::new();
    for e in [l, r] {
        if same(&e) {
            match e {
                Rewrite::Union(v) | Rewrite::Intersection(v) => items.extend(v),
                other => items.push(other),
            }
        } else {
            items.push(e);
        }
    }
    make(items)
}
