//! `arbiter validate`: runs validation files against a fresh in-memory engine each.
//!
//! Output: one line per file, `ok PATH`, `FAIL PATH: <assertion>: expected X, got Y`, or
//! `ERROR PATH: <problem>` for a file that cannot be read or loaded; then
//! `N passed, M failed`. Exit 0 if all passed, 1 if any failed, 2 if any file could
//! not be read, parsed or loaded.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use arbiter_engine::{
    split_policies, AttributeUpdate, CheckRequest, Consistency, Decision, Engine, EngineConfig, EngineError, FoundResource, FoundSubject,
    Inference, LabelDef, LookupResourcesRequest, LookupSubjectsRequest, ObjectAttributes, PolicyError, PolicyModel,
    RelationshipUpdate,
    UpdateOp,
};
use arbiter_schema::{
    parse_validation_file, Assertion, AssertionKind, CompiledSchema, ExpectedRelation,
    ExpectedSubject, ObjectRef, SubjectRef, ValidationFile,
};

/// What running one file came to.
#[derive(Debug, PartialEq, Eq)]
pub enum FileOutcome {
    Passed,
    /// The first failure, and how many more there were.
    Failed {
        first: String,
        more: usize,
    },
    /// The file could not be read, parsed or loaded.
    Error(String),
}

pub fn run(paths: &[PathBuf]) -> ExitCode {
    let files = match expand(paths) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("error: {e:#}");
            return ExitCode::from(2);
        }
    };
    let (mut passed, mut failed, mut errored) = (0usize, 0usize, 0usize);
    for path in &files {
        match run_file(path) {
            FileOutcome::Passed => {
                passed += 1;
                println!("ok {}", path.display());
            }
            FileOutcome::Failed { first, more } => {
                failed += 1;
                if more > 0 {
                    println!("FAIL {}: {first} (and {more} more)", path.display());
                } else {
                    println!("FAIL {}: {first}", path.display());
                }
            }
            FileOutcome::Error(e) => {
                errored += 1;
                println!("ERROR {}: {e}", path.display());
            }
        }
    }
    println!("{passed} passed, {} failed", failed + errored);
    if errored > 0 {
        ExitCode::from(2)
    } else if failed > 0 {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}

/// Files as given, directories as their `*.yaml` files in name order.
fn expand(paths: &[PathBuf]) -> anyhow::Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for p in paths {
        if p.is_dir() {
            let mut found: Vec<PathBuf> = std::fs::read_dir(p)
                .with_context(|| format!("read directory {}", p.display()))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|f| f.is_file() && f.extension().is_some_and(|x| x == "yaml"))
                .collect();
            found.sort();
            if found.is_empty() {
                anyhow::bail!("no *.yaml files in {}", p.display());
            }
            out.extend(found);
        } else {
            out.push(p.clone());
        }
    }
    Ok(out)
}

pub fn run_file(path: &Path) -> FileOutcome {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) => return FileOutcome::Error(format!("cannot read: {e}")),
    };
    run_text(&text)
}

/// Runs one validation file's text.
pub fn run_text(text: &str) -> FileOutcome {
    let file = match parse_validation_file(text) {
        Ok(f) => f,
        Err(e) => return FileOutcome::Error(e.to_string()),
    };
    let engine = match load(&file) {
        Ok(e) => e,
        Err(Loaded::Broken(msg)) => return FileOutcome::Error(msg),
    };
    let mut failures = Vec::new();
    for a in &file.assertions {
        if let Some(f) = run_assertion(&engine, a) {
            failures.push(f);
        }
    }
    let Ok(schema) = arbiter_schema::compile(&file.schema) else {
        return FileOutcome::Error("schema no longer compiles".into());
    };
    // Expected relations mark a subject `[...]` when a caveat stands on its way, whatever
    // the relationships' contexts say (as SpiceDB lists them: caveats are not evaluated
    // there). So they are read from the same data with every relationship's context
    // left out, where every caveat is undecided.
    let symbolic = match expected_relations_engine(&file) {
        Ok(Some(e)) => Some(e),
        Ok(None) => None,
        Err(Loaded::Broken(msg)) => return FileOutcome::Error(msg),
    };
    for expected in &file.expected {
        if let Some(f) = run_expected(symbolic.as_ref().unwrap_or(&engine), &schema, expected) {
            failures.push(f);
        }
    }
    // Files with Cedar policies are exempt: grants that only a permit gives are not
    // enumerated by Lookup.
    if file.policies.is_none() {
        failures.extend(cross_check(&engine, &schema, &file));
    }
    let mut it = failures.into_iter();
    match it.next() {
        None => FileOutcome::Passed,
        Some(first) => FileOutcome::Failed {
            first,
            more: it.count(),
        },
    }
}

enum Loaded {
    /// The file itself is wrong: it cannot be loaded.
    Broken(String),
}

/// The engine expected relations are read from, when it differs from the file's: the
/// same data with every caveat context dropped (`None` when no relationship has one).
fn expected_relations_engine(file: &ValidationFile) -> Result<Option<Engine>, Loaded> {
    let has_context = |r: &arbiter_schema::Relationship| r.caveat.as_ref().is_some_and(|c| c.context.is_some());
    if file.expected.is_empty() || !file.relationships.iter().any(|(_, r)| has_context(r)) {
        return Ok(None);
    }
    let mut stripped = file.clone();
    for (_, r) in &mut stripped.relationships {
        if let Some(c) = &mut r.caveat {
            c.context = None;
        }
    }
    load(&stripped).map(Some)
}

fn at_line(line: Option<usize>) -> String {
    line.map(|l| format!("line {l}: ")).unwrap_or_default()
}

fn load(file: &ValidationFile) -> Result<Engine, Loaded> {
    let engine = Engine::in_memory(EngineConfig::default());
    if let Err(e) = engine.write_schema(&file.schema) {
        let msg = match (&e, file.schema_line) {
            (EngineError::InvalidSchema(errs), Some(start)) => {
                let parts: Vec<String> = errs
                    .0
                    .iter()
                    .map(|se| {
                        format!(
                            "{} (line {}, column {} of the file)",
                            se.message,
                            start + se.position.line - 1,
                            se.position.column + file.schema_indent
                        )
                    })
                    .collect();
                format!("invalid schema: {}", parts.join("; "))
            }
            _ => e.to_string(),
        };
        return Err(Loaded::Broken(msg));
    }
    // Later lines win over earlier ones for the same relationship, as separate touches would.
    let mut by_key: BTreeMap<String, (Option<usize>, RelationshipUpdate)> = BTreeMap::new();
    for (line, r) in &file.relationships {
        let update = RelationshipUpdate {
            op: UpdateOp::Touch,
            relationship: r.clone(),
        };
        by_key.insert(arbiter_engine::store::relationship_key(r), (*line, update));
    }
    for (line, u) in by_key.values() {
        if let Err(e) = engine.validate_update(u) {
            return Err(Loaded::Broken(format!("{}{e}", at_line(*line))));
        }
    }
    let updates: Vec<RelationshipUpdate> = by_key.into_values().map(|(_, u)| u).collect();
    engine
        .write(&updates)
        .map_err(|e| Loaded::Broken(e.to_string()))?;
    if let Some((model, attributes)) = policy_model(file)? {
        let label_line = |e: &PolicyError| {
            file.labels.iter().find(|l| e.message.contains(&format!("`{}`", l.name))).and_then(|l| l.line)
        };
        engine.write_policy_model(model).map_err(|e| {
            let line = match &e {
                EngineError::InvalidPolicy(p) => file
                    .policies
                    .as_ref()
                    .and_then(|(start, text)| policy_line(*start, text, p))
                    .or_else(|| label_line(p)),
                _ => None,
            };
            Loaded::Broken(format!("{}{e}", at_line(line)))
        })?;
        // One write per object, so that an error names its line.
        for (line, update) in attributes {
            engine.write_attributes(vec![update]).map_err(|e| Loaded::Broken(format!("{}{e}", at_line(line))))?;
        }
    }
    Ok(engine)
}

/// The Cedar side of a validation file: `policies:` split into policies (ids from
/// `@id`, else `policies:N`), `labels:`, attribute types inferred from `attributes:` and
/// from the assertions' contexts (every one optional, so policies guard with `has`), and
/// the objects' attributes. When labels are defined, an object's `labels` key names its
/// labels.
type FileAttributes = Vec<(Option<usize>, AttributeUpdate)>;

fn policy_model(file: &ValidationFile) -> Result<Option<(PolicyModel, FileAttributes)>, Loaded> {
    if file.policies.is_none() && file.attributes.is_empty() && file.labels.is_empty() {
        return Ok(None);
    }
    let policies = match &file.policies {
        Some((start, text)) => split_policies("policies", text).map_err(|e| {
            let line = match (start, e.position) {
                (Some(s), Some((l, _))) => Some(s + l - 1),
                (s, _) => *s,
            };
            Loaded::Broken(format!("{}{e}", at_line(line)))
        })?,
        None => Vec::new(),
    };
    let labels: BTreeMap<String, LabelDef> =
        file.labels.iter().map(|l| (l.name.clone(), LabelDef { level: l.level, parents: l.parents.clone() })).collect();
    let mut inference = Inference::default();
    let mut attributes = Vec::new();
    for (line, object, record) in &file.attributes {
        let key = object.to_string();
        let mut values = record.clone();
        let mut object_labels = Vec::new();
        if !labels.is_empty() {
            if let Some(l) = values.remove("labels") {
                object_labels = serde_json::from_value::<Vec<String>>(l).map_err(|_| {
                    Loaded::Broken(format!("{}`{key}`: `labels` must be a list of label names", at_line(*line)))
                })?;
            }
        }
        inference
            .object(&object.object_type, &key, &values)
            .map_err(|e| Loaded::Broken(format!("{}{e}", at_line(*line))))?;
        let update = AttributeUpdate {
            object_type: object.object_type.clone(),
            object_id: object.object_id.clone(),
            attributes: Some(ObjectAttributes { values, labels: object_labels }),
        };
        attributes.push((*line, update));
    }
    for a in &file.assertions {
        if let Some(ctx) = &a.context {
            inference
                .context(ctx)
                .map_err(|e| Loaded::Broken(format!("{}{}: {e}", at_line(a.line), a.text)))?;
        }
    }
    Ok(Some((PolicyModel { policies, declarations: inference.decls, labels }, attributes)))
}

/// The file line of a policy error: where the policy with that id starts in the
/// `policies:` block, plus the error's line within it.
fn policy_line(start: Option<usize>, text: &str, e: &PolicyError) -> Option<usize> {
    let start = start?;
    let id = e.policy.as_deref()?;
    let split = split_policies("policies", text).ok()?;
    let policy = split.iter().find(|p| p.id == id)?;
    let first = policy.text.lines().next()?.trim();
    let offset = text.lines().position(|l| l.trim() == first)?;
    Some(start + offset + e.position.map(|(l, _)| l - 1).unwrap_or(0))
}

fn check(
    engine: &Engine,
    resource: &ObjectRef,
    permission: &str,
    subject: &SubjectRef,
    context: Option<&serde_json::Map<String, serde_json::Value>>,
) -> Result<Decision, EngineError> {
    let resp = engine.check(&CheckRequest {
        resource_type: &resource.object_type,
        resource_id: &resource.object_id,
        permission,
        subject_type: &subject.object.object_type,
        subject_id: &subject.object.object_id,
        subject_relation: subject.relation.as_deref(),
        consistency: Consistency::FullyConsistent,
        context,
        ..Default::default()
    })?;
    Ok(resp.decision)
}

fn word(d: Decision) -> &'static str {
    match d {
        Decision::Allowed => "allowed",
        Decision::Denied => "denied",
        Decision::Conditional => "conditional",
    }
}

fn run_assertion(engine: &Engine, a: &Assertion) -> Option<String> {
    let label = format!(
        "{} ({}{})",
        a.text,
        a.kind,
        a.line.map(|l| format!(", line {l}")).unwrap_or_default()
    );
    let expected = match a.kind {
        AssertionKind::True => Decision::Allowed,
        AssertionKind::False => Decision::Denied,
        AssertionKind::Caveated => Decision::Conditional,
    };
    match check(engine, &a.resource, &a.permission, &a.subject, a.context.as_ref()) {
        Ok(got) if got == expected => None,
        Ok(got) => Some(format!(
            "{label}: expected {}, got {}",
            word(expected),
            word(got)
        )),
        Err(e) => Some(format!(
            "{label}: expected {}, got error: {e}",
            word(expected)
        )),
    }
}

/// Compares the subjects of `resource#relation` with the expected set, as
/// LookupSubjects reports them (subject sets only where relationships name them). A
/// concrete subject beside a wildcard of its type that does not exclude it adds nothing,
/// so such entries are dropped on both sides before comparing. The `is <...>`
/// provenance is not compared.
fn run_expected(
    engine: &Engine,
    schema: &CompiledSchema,
    expected: &ExpectedRelation,
) -> Option<String> {
    let label = format!(
        "{}#{} (validation{})",
        expected.resource,
        expected.relation,
        expected
            .line
            .map(|l| format!(", line {l}"))
            .unwrap_or_default()
    );
    let mut actual: BTreeSet<ExpectedSubject> = BTreeSet::new();
    for def in &schema.definitions {
        let relations =
            std::iter::once(None).chain(def.relations.iter().map(|r| Some(r.name.as_str())));
        for relation in relations {
            let found = match all_subjects(
                engine,
                &expected.resource,
                &expected.relation,
                &def.name,
                relation,
                None,
                true,
            ) {
                Ok(f) => f,
                Err(e) => return Some(format!("{label}: error: {e}")),
            };
            for f in found {
                let subject = SubjectRef {
                    object: ObjectRef {
                        object_type: def.name.clone(),
                        object_id: f.subject_id,
                    },
                    relation: relation.map(str::to_string),
                };
                let excluded = f
                    .excluded
                    .iter()
                    .map(|e| e.id.clone())
                    .map(|id| SubjectRef {
                        object: ObjectRef {
                            object_type: def.name.clone(),
                            object_id: id,
                        },
                        relation: None,
                    })
                    .collect();
                actual.insert(ExpectedSubject {
                    subject,
                    excluded,
                    caveated: !f.missing_context.is_empty(),
                });
            }
        }
    }
    let want: BTreeSet<ExpectedSubject> = expected.subjects.iter().cloned().collect();
    let (want, actual) = (drop_covered(want), drop_covered(actual));
    if want == actual {
        None
    } else {
        Some(format!(
            "{label}: expected {}, got {}",
            show(&want),
            show(&actual)
        ))
    }
}

/// Removes concrete subjects that a wildcard of their type already covers.
fn drop_covered(set: BTreeSet<ExpectedSubject>) -> BTreeSet<ExpectedSubject> {
    let wildcards: Vec<(String, Vec<SubjectRef>)> = set
        .iter()
        .filter(|s| s.subject.object.object_id == "*")
        .map(|s| (s.subject.object.object_type.clone(), s.excluded.clone()))
        .collect();
    set.into_iter()
        .filter(|s| {
            s.subject.relation.is_some()
                || s.subject.object.object_id == "*"
                || !wildcards.iter().any(|(t, excluded)| {
                    *t == s.subject.object.object_type && !excluded.contains(&s.subject)
                })
        })
        .collect()
}

/// Every page of a LookupSubjects, concatenated.
fn all_subjects(
    engine: &Engine,
    resource: &ObjectRef,
    permission: &str,
    subject_type: &str,
    subject_relation: Option<&str>,
    limit: Option<usize>,
    written_subject_sets_only: bool,
) -> Result<Vec<FoundSubject>, EngineError> {
    let mut out = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let page = engine.lookup_subjects(&LookupSubjectsRequest {
            context: None,
            resource_type: &resource.object_type,
            resource_id: &resource.object_id,
            permission,
            subject_type,
            subject_relation,
            consistency: Consistency::FullyConsistent,
            cursor: cursor.as_deref(),
            limit,
            written_subject_sets_only,
        })?;
        out.extend(page.subjects);
        match page.next_cursor {
            Some(c) => cursor = Some(c),
            None => return Ok(out),
        }
    }
}

/// Every page of a LookupResources, concatenated.
fn all_resources(
    engine: &Engine,
    resource_type: &str,
    permission: &str,
    subject: &SubjectRef,
    limit: Option<usize>,
) -> Result<Vec<FoundResource>, EngineError> {
    let mut out = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let page = engine.lookup_resources(&LookupResourcesRequest {
            context: None,
            resource_type,
            permission,
            subject_type: &subject.object.object_type,
            subject_id: &subject.object.object_id,
            subject_relation: subject.relation.as_deref(),
            consistency: Consistency::FullyConsistent,
            cursor: cursor.as_deref(),
            limit,
        })?;
        out.extend(page.resources);
        match page.next_cursor {
            Some(c) => cursor = Some(c),
            None => return Ok(out),
        }
    }
}

/// Page sizes the cross-check reads lookups with: whole, and small pages so cursors are
/// exercised.
const PAGE_SIZES: [Option<usize>; 3] = [None, Some(1), Some(2)];

/// Checks that Check, LookupResources and LookupSubjects agree on every resource x
/// permission x subject of the file, as SpiceDB's consistency suite does. Resources are
/// the objects relationships are written on; subjects are every subject written (object
/// or subject set), every resource as an object, and one never-written object per type.
fn cross_check(engine: &Engine, schema: &CompiledSchema, file: &ValidationFile) -> Vec<String> {
    let mut failures = Vec::new();
    let mut resources: BTreeSet<ObjectRef> = BTreeSet::new();
    let mut subjects: BTreeSet<SubjectRef> = BTreeSet::new();
    for (_, r) in &file.relationships {
        resources.insert(r.resource.clone());
        subjects.insert(SubjectRef {
            object: r.resource.clone(),
            relation: None,
        });
        if r.subject.object.object_id != arbiter_schema::WILDCARD_ID {
            subjects.insert(r.subject.clone());
        }
    }
    for def in &schema.definitions {
        subjects.insert(SubjectRef {
            object: ObjectRef {
                object_type: def.name.clone(),
                object_id: "arbiter-unseen".into(),
            },
            relation: None,
        });
    }
    let resource_types: BTreeSet<&str> = resources.iter().map(|r| r.object_type.as_str()).collect();
    for rt in resource_types {
        let Some((_, def)) = schema.definition_by_name(rt) else {
            continue;
        };
        for perm in def.relations.iter().map(|r| r.name.as_str()) {
            let of_type: Vec<&ObjectRef> =
                resources.iter().filter(|r| r.object_type == rt).collect();
            // Check on every pair, then LookupResources per subject.
            for subject in &subjects {
                // Each allowed resource, and whether only on a condition.
                let mut allowed = BTreeSet::new();
                let mut errored = false;
                for res in &of_type {
                    match check(engine, res, perm, subject, None) {
                        Ok(Decision::Denied) => {}
                        Ok(d) => {
                            allowed.insert((res.object_id.clone(), d == Decision::Conditional));
                        }
                        Err(_) => errored = true,
                    }
                }
                if errored {
                    continue;
                }
                for limit in PAGE_SIZES {
                    let found = match all_resources(engine, rt, perm, subject, limit) {
                        Ok(f) => f,
                        Err(e) => {
                            failures.push(format!(
                                "cross-check: LookupResources({rt}#{perm}@{subject}) failed: {e}"
                            ));
                            continue;
                        }
                    };
                    let found_set: BTreeSet<(String, bool)> =
                        found.iter().map(|r| (r.id.clone(), !r.missing_context.is_empty())).collect();
                    // Only resources of the file are compared: Lookup may also list ids
                    // that appear elsewhere only as subjects.
                    let listed: BTreeSet<(String, bool)> = found_set
                        .iter()
                        .filter(|(id, _)| of_type.iter().any(|r| &r.object_id == id))
                        .cloned()
                        .collect();
                    let show = |set: &mut dyn Iterator<Item = (String, bool)>| {
                        set.map(|(id, c)| if c { format!("{id}[...]") } else { id }).collect::<Vec<_>>().join(", ")
                    };
                    if listed != allowed || found.len() != found_set.len() {
                        failures.push(format!(
                            "cross-check: LookupResources({rt}#{perm}@{subject}, page size {}) gave [{}], Check allows [{}]",
                            limit.map(|l| l.to_string()).unwrap_or_else(|| "all".into()),
                            show(&mut found.iter().map(|r| (r.id.clone(), !r.missing_context.is_empty()))),
                            show(&mut allowed.iter().cloned())
                        ));
                    }
                }
            }
            // LookupSubjects per resource and subject kind.
            let kinds: BTreeSet<(String, Option<String>)> = subjects
                .iter()
                .map(|s| (s.object.object_type.clone(), s.relation.clone()))
                .collect();
            for res in &of_type {
                for (st, srel) in &kinds {
                    let mut pages: Vec<Vec<FoundSubject>> = Vec::new();
                    for limit in PAGE_SIZES {
                        match all_subjects(engine, res, perm, st, srel.as_deref(), limit, false) {
                            Ok(f) => pages.push(f),
                            Err(e) => failures.push(format!(
                                "cross-check: LookupSubjects({res}#{perm}@{st}) failed: {e}"
                            )),
                        }
                    }
                    let Some(found) = pages.first() else { continue };
                    if pages.iter().any(|p| p != found) {
                        failures.push(format!("cross-check: LookupSubjects({res}#{perm}@{st}) differs between page sizes"));
                    }
                    let wildcard = found.iter().find(|f| f.subject_id == "*");
                    for subject in subjects
                        .iter()
                        .filter(|s| &s.object.object_type == st && &s.relation == srel)
                    {
                        let Ok(decision) = check(engine, res, perm, subject, None) else {
                            continue;
                        };
                        let allowed = decision != Decision::Denied;
                        let id = &subject.object.object_id;
                        // Under a wildcard, a subject excluded only on a condition is
                        // still (conditionally) a member.
                        let listed = found.iter().any(|f| &f.subject_id == id)
                            || wildcard.is_some_and(|w| {
                                srel.is_none()
                                    && w.excluded.iter().find(|e| &e.id == id).is_none_or(|e| !e.missing_context.is_empty())
                            });
                        if listed != allowed {
                            failures.push(format!(
                                "cross-check: Check({res}#{perm}@{subject}) is {}, but LookupSubjects {} it",
                                if allowed { "allowed" } else { "denied" },
                                if listed { "lists" } else { "does not list" }
                            ));
                        }
                    }
                }
            }
        }
    }
    failures
}

fn show(set: &BTreeSet<ExpectedSubject>) -> String {
    let items: Vec<String> = set
        .iter()
        .map(|s| {
            let mut t = s.subject.to_string();
            if !s.excluded.is_empty() {
                let ex: Vec<String> = s.excluded.iter().map(|e| e.to_string()).collect();
                t = format!("{t} - {{{}}}", ex.join(", "));
            }
            if s.caveated {
                t.push_str("[...]");
            }
            format!("[{t}]")
        })
        .collect();
    if items.is_empty() {
        "no subjects".into()
    } else {
        items.join(" ")
    }
}
