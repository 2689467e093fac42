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
use arbiter_engine::{CheckRequest, Consistency, Decision, Engine, EngineConfig, EngineError, RelationshipUpdate, UpdateOp};
use arbiter_schema::{
    parse_validation_file, Assertion, AssertionKind, ExpectedRelation, ExpectedSubject, ObjectRef, SubjectRef,
    ValidationFile,
};

/// What running one file came to.
#[derive(Debug, PartialEq, Eq)]
pub enum FileOutcome {
    Passed,
    /// The first failure, and how many more there were.
    Failed { first: String, more: usize },
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
        Err(Loaded::Unsupported(msg)) => return FileOutcome::Failed { first: msg, more: 0 },
        Err(Loaded::Broken(msg)) => return FileOutcome::Error(msg),
    };
    let mut failures = Vec::new();
    for a in &file.assertions {
        if let Some(f) = run_assertion(&engine, a) {
            failures.push(f);
        }
    }
    for expected in &file.expected {
        if let Some(f) = run_expected(&engine, &file, expected) {
            failures.push(f);
        }
    }
    let mut it = failures.into_iter();
    match it.next() {
        None => FileOutcome::Passed,
        Some(first) => FileOutcome::Failed { first, more: it.count() },
    }
}

enum Loaded {
    /// Uses a feature Arbiter does not evaluate yet: the file fails.
    Unsupported(String),
    /// The file itself is wrong: it cannot be loaded.
    Broken(String),
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
                            se.position.column
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
        if r.caveat.is_some() {
            return Err(Loaded::Unsupported(format!(
                "{}caveats are not supported yet (relationship `{r}`)",
                at_line(*line)
            )));
        }
        let update = RelationshipUpdate { op: UpdateOp::Touch, relationship: r.clone() };
        by_key.insert(arbiter_engine::store::relationship_key(r), (*line, update));
    }
    for (line, u) in by_key.values() {
        if let Err(e) = engine.validate_update(u) {
            return Err(Loaded::Broken(format!("{}{e}", at_line(*line))));
        }
    }
    let updates: Vec<RelationshipUpdate> = by_key.into_values().map(|(_, u)| u).collect();
    engine.write(&updates).map_err(|e| Loaded::Broken(e.to_string()))?;
    Ok(engine)
}

fn check(engine: &Engine, resource: &ObjectRef, permission: &str, subject: &SubjectRef) -> Result<bool, EngineError> {
    let resp = engine.check(&CheckRequest {
        resource_type: &resource.object_type,
        resource_id: &resource.object_id,
        permission,
        subject_type: &subject.object.object_type,
        subject_id: &subject.object.object_id,
        subject_relation: subject.relation.as_deref(),
        consistency: Consistency::FullyConsistent,
    })?;
    Ok(resp.decision == Decision::Allowed)
}

fn run_assertion(engine: &Engine, a: &Assertion) -> Option<String> {
    let label = format!("{} ({}{})", a.text, a.kind, a.line.map(|l| format!(", line {l}")).unwrap_or_default());
    if a.kind == AssertionKind::Caveated || a.context.is_some() {
        return Some(format!("{label}: caveats are not supported yet"));
    }
    let expected = a.kind == AssertionKind::True;
    let word = |b: bool| if b { "allowed" } else { "denied" };
    match check(engine, &a.resource, &a.permission, &a.subject) {
        Ok(got) if got == expected => None,
        Ok(got) => Some(format!("{label}: expected {}, got {}", word(expected), word(got))),
        Err(e) => Some(format!("{label}: expected {}, got error: {e}", word(expected))),
    }
}

/// Compares the set of subjects of `resource#relation` with the expected set. Subjects
/// are drawn from the file's relationships; a wildcard is present when an id nobody
/// wrote is a member, and then its exclusions are the denied subjects of that type.
/// The `is <...>` provenance is not compared.
fn run_expected(engine: &Engine, file: &ValidationFile, expected: &ExpectedRelation) -> Option<String> {
    let label = format!(
        "{}#{} (validation{})",
        expected.resource,
        expected.relation,
        expected.line.map(|l| format!(", line {l}")).unwrap_or_default()
    );
    let mut candidates: BTreeSet<SubjectRef> = BTreeSet::new();
    for (_, r) in &file.relationships {
        if r.subject.object.object_id != arbiter_schema::WILDCARD_ID {
            candidates.insert(r.subject.clone());
            candidates.insert(SubjectRef { object: r.subject.object.clone(), relation: None });
        }
        candidates.insert(SubjectRef { object: r.resource.clone(), relation: None });
    }
    let wildcard_types: BTreeSet<String> = file
        .relationships
        .iter()
        .filter(|(_, r)| r.subject.object.object_id == arbiter_schema::WILDCARD_ID)
        .map(|(_, r)| r.subject.object.object_type.clone())
        .collect();
    let mut actual: BTreeSet<ExpectedSubject> = BTreeSet::new();
    let mut wildcard_present: BTreeSet<String> = BTreeSet::new();
    for t in &wildcard_types {
        let probe = SubjectRef {
            object: ObjectRef { object_type: t.clone(), object_id: "arbiter-validate-unseen-subject".into() },
            relation: None,
        };
        match check(engine, &expected.resource, &expected.relation, &probe) {
            Ok(true) => {
                wildcard_present.insert(t.clone());
            }
            Ok(false) => {}
            Err(e) => return Some(format!("{label}: error: {e}")),
        }
    }
    let mut exclusions: BTreeMap<String, Vec<SubjectRef>> = BTreeMap::new();
    for c in &candidates {
        let allowed = match check(engine, &expected.resource, &expected.relation, c) {
            Ok(b) => b,
            // Candidates of types the relation cannot hold simply are not members.
            Err(EngineError::UnknownType(_)) | Err(EngineError::UnknownRelation { .. }) => false,
            Err(e) => return Some(format!("{label}: error: {e}")),
        };
        let covered = c.relation.is_none() && wildcard_present.contains(&c.object.object_type);
        match (allowed, covered) {
            (true, false) => {
                actual.insert(ExpectedSubject { subject: c.clone(), excluded: Vec::new(), caveated: false });
            }
            (false, true) => exclusions.entry(c.object.object_type.clone()).or_default().push(c.clone()),
            _ => {}
        }
    }
    for t in &wildcard_present {
        let excluded = exclusions.remove(t).unwrap_or_default();
        actual.insert(ExpectedSubject {
            subject: SubjectRef { object: ObjectRef { object_type: t.clone(), object_id: "*".into() }, relation: None },
            excluded,
            caveated: false,
        });
    }
    // Concrete subjects listed beside a wildcard of their type are covered by it.
    let want: BTreeSet<ExpectedSubject> = expected
        .subjects
        .iter()
        .filter(|s| !(s.subject.relation.is_none() && s.subject.object.object_id != "*" && wildcard_present.contains(&s.subject.object.object_type)))
        .cloned()
        .collect();
    if want == actual {
        None
    } else {
        Some(format!("{label}: expected {}, got {}", show(&want), show(&actual)))
    }
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
            format!("[{t}]")
        })
        .collect();
    if items.is_empty() {
        "no subjects".into()
    } else {
        items.join(" ")
    }
}
