//! Validation files (SpiceDB's YAML format): a schema, relationships, assertions and
//! expected relations. Parsing reports the file line of every problem it can place.

use std::collections::BTreeMap;
use std::fmt;

use serde::Deserialize;

use crate::relationship::{
    parse_object, parse_relationship, parse_subject, shorten, split_triple, ObjectRef,
    Relationship, SubjectRef,
};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AssertionKind {
    True,
    False,
    Caveated,
}

impl fmt::Display for AssertionKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            AssertionKind::True => "assertTrue",
            AssertionKind::False => "assertFalse",
            AssertionKind::Caveated => "assertCaveated",
        })
    }
}

/// One line of `assertTrue` / `assertFalse` / `assertCaveated`.
#[derive(Debug, Clone, PartialEq)]
pub struct Assertion {
    pub kind: AssertionKind,
    pub resource: ObjectRef,
    pub permission: String,
    pub subject: SubjectRef,
    /// The `with {json}` request context, if any.
    pub context: Option<serde_json::Map<String, serde_json::Value>>,
    /// The assertion as written.
    pub text: String,
    pub line: Option<usize>,
}

/// One subject in a `validation:` block, e.g. `[user:* - {user:banned}]`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct ExpectedSubject {
    pub subject: SubjectRef,
    /// For a wildcard, the subjects it excludes.
    pub excluded: Vec<SubjectRef>,
    /// Written with `[...]` after the subject: only conditionally a member.
    pub caveated: bool,
}

/// A `validation:` entry: every subject that `resource#relation` must have, exactly.
#[derive(Debug, Clone, PartialEq)]
pub struct ExpectedRelation {
    pub resource: ObjectRef,
    pub relation: String,
    pub subjects: Vec<ExpectedSubject>,
    pub line: Option<usize>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ValidationFile {
    pub schema: String,
    /// File line where the schema text starts (1-based), for placing schema errors.
    pub schema_line: Option<usize>,
    /// Indentation of the schema block in the file, for placing schema error columns.
    pub schema_indent: usize,
    pub relationships: Vec<(Option<usize>, Relationship)>,
    pub assertions: Vec<Assertion>,
    pub expected: Vec<ExpectedRelation>,
    /// `policies:`: Cedar text, and the file line where it starts.
    pub policies: Option<(Option<usize>, String)>,
    /// `attributes:`: object (`type:id`) -> JSON record of its attributes, with the file
    /// line of the object.
    pub attributes: Vec<(Option<usize>, ObjectRef, serde_json::Map<String, serde_json::Value>)>,
    /// `labels:`: security labels, `name: {level: N, parent: name}` (or `name: N`), with
    /// the file line of each.
    pub labels: Vec<FileLabel>,
}

/// One security label of a validation file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileLabel {
    pub line: Option<usize>,
    pub name: String,
    pub level: i64,
    pub parents: Vec<String>,
}

/// A problem in a validation file, with the file line where known.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ValidationFileError {
    pub line: Option<usize>,
    pub message: String,
}

impl fmt::Display for ValidationFileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            Some(l) => write!(f, "line {l}: {}", self.message),
            None => f.write_str(&self.message),
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    schema: Option<String>,
    relationships: Option<String>,
    assertions: Option<RawAssertions>,
    validation: Option<BTreeMap<String, Option<Vec<String>>>>,
    policies: Option<String>,
    attributes: Option<BTreeMap<String, serde_json::Value>>,
    labels: Option<BTreeMap<String, serde_json::Value>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAssertions {
    #[serde(rename = "assertTrue")]
    assert_true: Option<Vec<String>>,
    #[serde(rename = "assertFalse")]
    assert_false: Option<Vec<String>>,
    #[serde(rename = "assertCaveated")]
    assert_caveated: Option<Vec<String>>,
}

/// Finds file lines for values taken out of the YAML, searching forward from a key.
struct LineFinder<'a> {
    lines: Vec<&'a str>,
    /// Each line's whole text, its mapping key and its list item (trimmed, unquoted),
    /// with the lines (0-based, ascending) that have it: most needles are one of these,
    /// found without reading the file again (a file of 20,000 attributes searched line
    /// by line took seconds).
    entries: std::collections::HashMap<&'a str, Vec<usize>>,
}

/// How many lines past `from` a needle that is no line's text, key or item (an escaped
/// YAML string) is looked for, so that such needles cost a bounded read each.
const FIND_WINDOW: usize = 64;

fn unquoted(s: &str) -> &str {
    let s = s.trim();
    ['"', '\'']
        .iter()
        .find_map(|q| s.strip_prefix(*q).and_then(|r| r.strip_suffix(*q)))
        .unwrap_or(s)
}

impl<'a> LineFinder<'a> {
    fn new(text: &'a str) -> Self {
        let lines: Vec<&'a str> = text.lines().collect();
        let mut entries: std::collections::HashMap<&'a str, Vec<usize>> = std::collections::HashMap::new();
        for (i, line) in lines.iter().enumerate() {
            let t = line.trim();
            let item = t.strip_prefix("- ").map(unquoted);
            let key = t
                .strip_suffix(':')
                .or_else(|| t.split_once(": ").map(|(k, _)| k))
                .map(unquoted);
            for candidate in [Some(t), item, key].into_iter().flatten() {
                let at = entries.entry(candidate).or_default();
                if at.last() != Some(&i) {
                    at.push(i);
                }
            }
        }
        LineFinder { lines, entries }
    }

    /// 0-based index of the top-level line `key:`.
    fn key(&self, key: &str) -> Option<usize> {
        let prefix = format!("{key}:");
        self.lines.iter().position(|l| l.starts_with(&prefix))
    }

    /// 1-based line of the first line at or after `from` (0-based) that is `needle`, or
    /// whose mapping key or list item is.
    fn entry(&self, from: usize, needle: &str) -> Option<usize> {
        let at = self.entries.get(needle)?;
        at.get(at.partition_point(|&i| i < from)).map(|i| i + 1)
    }

    /// 1-based line of the first line at or after `from` (0-based) containing `needle`:
    /// a line that is the needle (or has it as its key or item), else one of the next
    /// [`FIND_WINDOW`] lines that contains it.
    fn find(&self, from: usize, needle: &str) -> Option<usize> {
        let needle = needle.trim();
        if needle.is_empty() {
            return None;
        }
        self.entry(from, needle).or_else(|| {
            self.lines
                .iter()
                .enumerate()
                .skip(from)
                .take(FIND_WINDOW)
                .find(|(_, l)| l.contains(needle))
                .map(|(i, _)| i + 1)
        })
    }

    /// Like [`LineFinder::find`]; named for the relationship lines, whose exact line is
    /// preferred, so that `doc:1#viewer` is not placed on an earlier
    /// `doc:1#viewer@user:tom`.
    fn find_line(&self, from: usize, needle: &str) -> Option<usize> {
        self.find(from, needle)
    }
}

/// Parses a validation file's text.
pub fn parse_validation_file(text: &str) -> Result<ValidationFile, ValidationFileError> {
    let raw: RawFile = serde_yaml::from_str(text).map_err(|e| ValidationFileError {
        line: e.location().map(|l| l.line()),
        message: format!("invalid YAML: {}", strip_location(&e.to_string())),
    })?;
    let finder = LineFinder::new(text);

    let schema = raw.schema.ok_or_else(|| ValidationFileError {
        line: None,
        message: "missing `schema`".into(),
    })?;
    let schema_line = finder.key("schema").map(|i| i + 2);
    // A block scalar's lines are indented in the file; the schema text is not.
    let schema_indent = schema_line
        .and_then(|l| {
            finder
                .lines
                .iter()
                .skip(l - 1)
                .find(|line| !line.trim().is_empty())
        })
        .map(|line| line.len() - line.trim_start().len())
        .unwrap_or(0);

    let mut relationships = Vec::new();
    // Lines are searched in order, each from where the previous one was found.
    let mut from = finder.key("relationships").unwrap_or(0);
    for raw_line in raw.relationships.as_deref().unwrap_or("").lines() {
        let line = raw_line.trim();
        if line.is_empty() || line.starts_with("//") {
            continue;
        }
        let at = finder.find_line(from, line);
        from = at.unwrap_or(from);
        let rel = parse_relationship(line).map_err(|e| ValidationFileError {
            line: at,
            message: e.message,
        })?;
        relationships.push((at, rel));
    }

    let mut assertions = Vec::new();
    if let Some(a) = raw.assertions {
        for (kind, list, key) in [
            (AssertionKind::True, a.assert_true, "assertTrue"),
            (AssertionKind::False, a.assert_false, "assertFalse"),
            (AssertionKind::Caveated, a.assert_caveated, "assertCaveated"),
        ] {
            let mut from = finder
                .lines
                .iter()
                .position(|l| l.trim_start().starts_with(&format!("{key}:")))
                .unwrap_or(0);
            for text in list.unwrap_or_default() {
                let at = finder.find(from, &text);
                from = at.unwrap_or(from);
                let assertion = parse_assertion(kind, &text, at)?;
                assertions.push(assertion);
            }
        }
    }

    let mut expected = Vec::new();
    let val_key = finder.key("validation").unwrap_or(0);
    for (key, subjects) in raw.validation.unwrap_or_default() {
        let at = finder.find(val_key, &key);
        let fail = |message: String| ValidationFileError { line: at, message };
        let (resource, relation) = key.split_once('#').ok_or_else(|| {
            fail(format!(
                "expected `type:id#relation` as a validation key, got `{}`",
                shorten(&key)
            ))
        })?;
        let resource =
            parse_object(resource, &key, "resource", false).map_err(|e| fail(e.message))?;
        if !crate::compiler::is_valid_identifier(relation) {
            return Err(fail(format!(
                "invalid relation `{}` in validation key `{}`",
                shorten(relation),
                shorten(&key)
            )));
        }
        let mut parsed = Vec::new();
        for s in subjects.unwrap_or_default() {
            let sat = finder.find(val_key, &s).or(at);
            parsed.push(
                parse_expected_subject(&s)
                    .map_err(|message| ValidationFileError { line: sat, message })?,
            );
        }
        parsed.sort();
        expected.push(ExpectedRelation {
            resource,
            relation: relation.to_string(),
            subjects: parsed,
            line: at,
        });
    }

    let policies = raw.policies.map(|text| (finder.key("policies").map(|i| i + 2), text));
    let mut attributes = Vec::new();
    let attr_key = finder.key("attributes").unwrap_or(0);
    for (key, value) in raw.attributes.unwrap_or_default() {
        let at = finder.find(attr_key, &key);
        let fail = |message: String| ValidationFileError { line: at, message };
        let object = parse_object(&key, &key, "object", false).map_err(|e| fail(e.message))?;
        let serde_json::Value::Object(record) = value else {
            return Err(fail(format!(
                "the attributes of `{}` must be a record (`{{\"name\": value, ...}}`)",
                shorten(&key)
            )));
        };
        attributes.push((at, object, record));
    }
    let mut labels = Vec::new();
    let label_key = finder.key("labels").unwrap_or(0);
    for (name, value) in raw.labels.unwrap_or_default() {
        let line = finder.find(label_key, &name);
        let fail = |message: String| ValidationFileError { line, message };
        let (level, parents) = match &value {
            serde_json::Value::Number(n) => (n.as_i64(), Vec::new()),
            serde_json::Value::Object(o) => {
                if let Some(k) = o.keys().find(|k| !["level", "parent", "parents"].contains(&k.as_str())) {
                    return Err(fail(format!("label `{name}`: unknown key `{k}` (level, parent and parents are known)")));
                }
                let mut parents = Vec::new();
                for key in ["parent", "parents"] {
                    match o.get(key) {
                        None | Some(serde_json::Value::Null) => {}
                        Some(serde_json::Value::String(p)) => parents.push(p.clone()),
                        Some(serde_json::Value::Array(list)) if list.iter().all(serde_json::Value::is_string) => {
                            parents.extend(list.iter().filter_map(|p| p.as_str().map(str::to_string)))
                        }
                        Some(other) => {
                            return Err(fail(format!("label `{name}`: {key} must name labels, not {other}")))
                        }
                    }
                }
                (o.get("level").and_then(serde_json::Value::as_i64), parents)
            }
            _ => (None, Vec::new()),
        };
        let Some(level) = level else {
            return Err(fail(format!("label `{name}` needs a whole-number level (`{name}: {{level: 2, parent: other}}`)")));
        };
        labels.push(FileLabel { line, name, level, parents });
    }
    Ok(ValidationFile {
        schema,
        schema_line,
        schema_indent,
        relationships,
        assertions,
        expected,
        policies,
        attributes,
        labels,
    })
}

fn strip_location(msg: &str) -> String {
    match msg.find(" at line ") {
        Some(i) => msg.get(..i).unwrap_or(msg).to_string(),
        None => msg.to_string(),
    }
}

/// Parses `resource#permission@subject [with {json}]`.
fn parse_assertion(
    kind: AssertionKind,
    text: &str,
    line: Option<usize>,
) -> Result<Assertion, ValidationFileError> {
    let fail = |message: String| ValidationFileError { line, message };
    let trimmed = text.trim();
    let (rel_text, context) = match trimmed.split_once(" with ") {
        Some((r, ctx)) => {
            let value: serde_json::Value = serde_json::from_str(ctx.trim()).map_err(|e| {
                fail(format!(
                    "invalid context `{}` in {kind} `{}`: {e}",
                    shorten(ctx),
                    shorten(trimmed)
                ))
            })?;
            let serde_json::Value::Object(map) = value else {
                return Err(fail(format!(
                    "the context in {kind} `{}` must be a JSON object",
                    shorten(trimmed)
                )));
            };
            (r.trim(), Some(map))
        }
        None => (trimmed, None),
    };
    if rel_text.contains('[') {
        return Err(fail(format!(
            "{kind} `{}` must not carry a caveat or expiration; use `with {{...}}` for context",
            shorten(trimmed)
        )));
    }
    let (resource, permission, subject) = split_triple(rel_text).map_err(|e| fail(e.message))?;
    let resource =
        parse_object(resource, rel_text, "resource", false).map_err(|e| fail(e.message))?;
    if !crate::compiler::is_valid_identifier(permission) {
        return Err(fail(format!(
            "invalid permission `{}` in {kind} `{}`",
            shorten(permission),
            shorten(trimmed)
        )));
    }
    let subject = parse_subject(subject, rel_text).map_err(|e| fail(e.message))?;
    Ok(Assertion {
        kind,
        resource,
        permission: permission.to_string(),
        subject,
        context,
        text: trimmed.to_string(),
        line,
    })
}

/// Parses `[user:tom] is <document:1#viewer>`, `[user:* - {user:a, user:b}] ...` or
/// `[user:tom[...]] ...`; the `is <...>` provenance is not compared.
fn parse_expected_subject(s: &str) -> Result<ExpectedSubject, String> {
    let t = s.trim();
    let inner = t
        .strip_prefix('[')
        .and_then(|r| {
            // The subject ends at the `]` that closes the leading `[` (a caveat marker
            // `[...]` may sit inside).
            let mut depth = 1usize;
            for (i, c) in r.char_indices() {
                match c {
                    '[' => depth += 1,
                    ']' => {
                        depth -= 1;
                        if depth == 0 {
                            return r.get(..i);
                        }
                    }
                    _ => {}
                }
            }
            None
        })
        .ok_or_else(|| {
            format!(
                "expected `[subject] is <...>` in validation entry `{}`",
                shorten(t)
            )
        })?;
    let (inner, caveated) = match inner.strip_suffix("[...]") {
        Some(rest) => (rest, true),
        None => (inner, false),
    };
    let (subject_text, excluded_text) = match inner.split_once(" - ") {
        Some((s, ex)) => (s.trim(), Some(ex.trim())),
        None => (inner.trim(), None),
    };
    let subject = parse_subject(subject_text, t).map_err(|e| e.message)?;
    let mut excluded = Vec::new();
    if let Some(ex) = excluded_text {
        let list = ex
            .strip_prefix('{')
            .and_then(|e| e.strip_suffix('}'))
            .ok_or_else(|| {
                format!(
                    "expected `{{subject, ...}}` after ` - ` in `{}`",
                    shorten(t)
                )
            })?;
        for item in list.split(',') {
            let item = item.trim();
            if !item.is_empty() {
                let item = item.strip_suffix("[...]").unwrap_or(item);
                excluded.push(parse_subject(item, t).map_err(|e| e.message)?);
            }
        }
        excluded.sort();
    }
    Ok(ExpectedSubject {
        subject,
        excluded,
        caveated,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_full_file() {
        let text = r#"---
schema: |-
  definition user {}
  definition doc { relation viewer: user }
relationships: |
  // a comment

  doc:1#viewer@user:tom
assertions:
  assertTrue:
    - "doc:1#viewer@user:tom"
  assertFalse:
    - 'doc:1#viewer@user:ann with {"ip": "10.0.0.1"}'
validation:
  doc:1#viewer:
    - "[user:tom] is <doc:1#viewer>"
    - "[user:* - {user:ann}] is <doc:1#viewer>"
"#;
        let f = parse_validation_file(text).unwrap();
        assert_eq!(f.schema_line, Some(3));
        assert_eq!(f.relationships.len(), 1);
        assert_eq!(f.relationships[0].0, Some(8));
        assert_eq!(f.assertions.len(), 2);
        assert_eq!(f.assertions[0].line, Some(11));
        assert!(f.assertions[1].context.is_some());
        assert_eq!(f.expected[0].subjects.len(), 2);
        assert_eq!(f.expected[0].subjects[0].excluded.len(), 1);
    }

    #[test]
    fn bad_relationship_names_its_line() {
        let text = "schema: |\n  definition user {}\nrelationships: |\n  doc:1#viewer@user:tom\n  doc:1#viewer\n";
        let e = parse_validation_file(text).unwrap_err();
        assert_eq!(e.line, Some(5));
        assert!(e.message.contains("missing `@`"), "{e}");
    }

    #[test]
    fn broken_yaml_names_its_line() {
        let e = parse_validation_file("schema: |\n  x\nrelationships: [\n").unwrap_err();
        assert!(e.message.starts_with("invalid YAML"), "{e}");
        assert!(e.line.is_some());
    }

    #[test]
    fn unknown_keys_are_refused() {
        let e = parse_validation_file("schema: x\nrelationship: y\n").unwrap_err();
        assert!(e.message.contains("relationship"), "{e}");
    }
}
