//! Validation files: every file of the SpiceDB corpus parses, every item is placed on
//! its own file line, and malformed entries name their problem and line.
#![expect(
    clippy::expect_used,
    clippy::panic,
    reason = "test helpers fail loudly by design"
)]

mod common;

use arbiter_schema::{parse_relationship, parse_validation_file, AssertionKind, ValidationFile};

fn parse(text: &str) -> ValidationFile {
    parse_validation_file(text).unwrap_or_else(|e| panic!("does not parse: {e}\n{text}"))
}

fn parse_err(text: &str) -> String {
    match parse_validation_file(text) {
        Ok(_) => panic!("parsed:\n{text}"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn every_corpus_file_parses_and_places_its_items() {
    let files = common::corpus_files();
    let (mut rels, mut asserts) = (0, 0);
    for (name, text) in &files {
        let file = parse_validation_file(text).unwrap_or_else(|e| panic!("{name}: {e}"));
        let lines: Vec<&str> = text.lines().collect();
        let line_text = |l: Option<usize>| l.and_then(|l| lines.get(l - 1)).copied().unwrap_or("");

        // Each relationship is placed on the line it was written on, in order.
        let mut last = 0;
        for (at, r) in &file.relationships {
            let on_line = parse_relationship(line_text(*at));
            assert_eq!(
                on_line.as_ref().ok(),
                Some(r),
                "{name}: {r} placed on line {at:?}"
            );
            let at = at.unwrap_or(0);
            assert!(
                at > last,
                "{name}: {r} placed on line {at}, not after line {last}"
            );
            last = at;
            rels += 1;
        }
        for a in &file.assertions {
            assert!(
                line_text(a.line).contains(&a.text),
                "{name}: {} placed on line {:?}",
                a.text,
                a.line
            );
            asserts += 1;
        }
        for e in &file.expected {
            let key = format!("{}#{}", e.resource, e.relation);
            assert!(
                line_text(e.line).contains(&key),
                "{name}: {key} placed on line {:?}",
                e.line
            );
        }
        assert!(file.schema_line.is_some(), "{name}");
    }
    eprintln!(
        "{} corpus files: {rels} relationships, {asserts} assertions",
        files.len()
    );
}

#[test]
fn every_item_kind_parses() {
    let text = r#"---
schema: |-
  definition user {}
  definition doc {
    relation viewer: user | user:*
  }
relationships: |-
  doc:1#viewer@user:tom
  // a comment line
  doc:1#viewer@user:*[expiration:2030-01-01T00:00:00Z]
assertions:
  assertTrue:
    - doc:1#viewer@user:tom
    - 'doc:1#viewer@user:ann with {"day": "tuesday", "n": [1, 2]}'
  assertCaveated:
    - "doc:1#viewer@user:tom#..."
  assertFalse: []
validation:
  doc:1#viewer:
    - "[user:tom] is <doc:1#viewer>"
    - "[user:* - {user:ann, user:bob[...]}] is <doc:1#viewer>"
    - "[user:cav[...]] is <doc:1#viewer>"
  doc:2#viewer: []
  doc:3#viewer:
"#;
    let f = parse(text);
    assert_eq!(
        f.schema,
        "definition user {}\ndefinition doc {\n  relation viewer: user | user:*\n}"
    );
    assert_eq!(f.schema_line, Some(3));
    let rels: Vec<(Option<usize>, String)> = f
        .relationships
        .iter()
        .map(|(l, r)| (*l, r.to_string()))
        .collect();
    assert_eq!(
        rels,
        [
            (Some(8), "doc:1#viewer@user:tom".to_string()),
            (
                Some(10),
                "doc:1#viewer@user:*[expiration:2030-01-01T00:00:00Z]".to_string()
            ),
        ]
    );
    let asserts: Vec<(AssertionKind, Option<usize>, bool)> = f
        .assertions
        .iter()
        .map(|a| (a.kind, a.line, a.context.is_some()))
        .collect();
    assert_eq!(
        asserts,
        [
            (AssertionKind::True, Some(13), false),
            (AssertionKind::True, Some(14), true),
            (AssertionKind::Caveated, Some(16), false)
        ]
    );
    assert_eq!(f.assertions[2].subject.relation, None);
    assert_eq!(f.expected.len(), 3);
    let doc1 = &f.expected[0];
    assert_eq!(
        (doc1.resource.to_string(), doc1.relation.as_str(), doc1.line),
        ("doc:1".to_string(), "viewer", Some(19))
    );
    let subjects: Vec<(String, Vec<String>, bool)> = doc1
        .subjects
        .iter()
        .map(|s| {
            (
                s.subject.to_string(),
                s.excluded.iter().map(ToString::to_string).collect(),
                s.caveated,
            )
        })
        .collect();
    assert_eq!(
        subjects,
        [
            (
                "user:*".to_string(),
                vec!["user:ann".to_string(), "user:bob".to_string()],
                false
            ),
            ("user:cav".to_string(), vec![], true),
            ("user:tom".to_string(), vec![], false),
        ]
    );
    assert!(f.expected[1].subjects.is_empty() && f.expected[2].subjects.is_empty());
}

#[test]
fn items_are_placed_on_their_own_lines() {
    // A line that is a prefix of an earlier one, and repeated lines.
    let f = parse("schema: x\nrelationships: |\n  doc:1#viewer@user:tom\n  doc:1#viewer@user:to\n  doc:1#viewer@user:tom\n");
    let lines: Vec<Option<usize>> = f.relationships.iter().map(|(l, _)| *l).collect();
    assert_eq!(lines, [Some(3), Some(4), Some(5)]);
    // A comment quoting a relationship does not take its place.
    let f = parse("schema: x\nrelationships: |\n  // doc:1#viewer@user:tom is below\n  doc:1#viewer@user:tom\n");
    assert_eq!(f.relationships[0].0, Some(4));
    // Assertions that repeat or prefix each other.
    let f = parse(
        "schema: x\nassertions:\n  assertTrue:\n    - doc:1#view@user:tom\n    - doc:1#view@user:to\n    - doc:1#view@user:tom\n",
    );
    let lines: Vec<Option<usize>> = f.assertions.iter().map(|a| a.line).collect();
    assert_eq!(lines, [Some(4), Some(5), Some(6)]);
}

#[test]
fn errors_name_their_problem_and_line() {
    for (text, want) in [
        ("relationships: x\n", "missing `schema`"),
        (
            "schema: x\nrelationships: |\n  doc:1#viewer@user:tom\n  doc:1#viewer\n",
            "line 4: expected `resource#relation@subject`, missing `@` in `doc:1#viewer`",
        ),
        (
            "schema: x\nrelationships: |\n  doc:1#viewer@user:tom\n  doc:1#viewer@user:tom[cav\n",
            "line 4: missing `]` after the caveat in `doc:1#viewer@user:tom[cav`",
        ),
        (
            "schema: x\nassertions:\n  assertTrue:\n    - doc:1#view@user:tom\n    - doc:1#View@user:tom\n",
            "line 5: invalid permission `View` in assertTrue `doc:1#View@user:tom`",
        ),
        (
            "schema: x\nassertions:\n  assertFalse:\n    - doc:1#view@user:tom[cav]\n",
            "line 4: assertFalse `doc:1#view@user:tom[cav]` must not carry a caveat or expiration; use `with {...}` for context",
        ),
        (
            "schema: x\nassertions:\n  assertTrue:\n    - 'doc:1#view@user:tom with [1]'\n",
            "line 4: the context in assertTrue `doc:1#view@user:tom with [1]` must be a JSON object",
        ),
        (
            "schema: x\nvalidation:\n  doc:1:\n    - \"[user:tom] is <doc:1#viewer>\"\n",
            "line 3: expected `type:id#relation` as a validation key, got `doc:1`",
        ),
        (
            "schema: x\nvalidation:\n  doc:1#Viewer:\n    - \"[user:tom] is <doc:1#viewer>\"\n",
            "line 3: invalid relation `Viewer` in validation key `doc:1#Viewer`",
        ),
        (
            "schema: x\nvalidation:\n  doc:1#viewer:\n    - \"user:tom is <doc:1#viewer>\"\n",
            "line 4: expected `[subject] is <...>` in validation entry `user:tom is <doc:1#viewer>`",
        ),
        (
            "schema: x\nvalidation:\n  doc:1#viewer:\n    - \"[user:* - user:ann] is <doc:1#viewer>\"\n",
            "line 4: expected `{subject, ...}` after ` - ` in `[user:* - user:ann] is <doc:1#viewer>`",
        ),
    ] {
        assert_eq!(parse_err(text), want, "{text}");
    }
    let e = parse_err("schema: x\nassertion: y\n");
    assert!(
        e.starts_with("line 2: invalid YAML: unknown field `assertion`"),
        "{e}"
    );
    let e = parse_err("schema: x\nassertions:\n  assertMaybe: []\n");
    assert!(
        e.starts_with("line 3: invalid YAML: assertions: unknown field `assertMaybe`"),
        "{e}"
    );
}
