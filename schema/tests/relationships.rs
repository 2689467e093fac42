//! Relationship text: every form SpiceDB writes parses to the right parts, ids are
//! limited to 1024 bytes, bad lines name their problem, and `Display` round-trips.
#![expect(
    clippy::expect_used,
    clippy::panic,
    reason = "test helpers fail loudly by design"
)]

mod common;

use arbiter_schema::{parse_relationship, parse_validation_file, Relationship, MAX_OBJECT_ID_LEN};
use chrono::{TimeZone, Utc};

fn parse(line: &str) -> Relationship {
    parse_relationship(line).unwrap_or_else(|e| panic!("`{line}` does not parse: {e}"))
}

fn parse_err(line: &str) -> String {
    match parse_relationship(line) {
        Ok(r) => panic!("`{line}` parsed, as {r:?}"),
        Err(e) => e.to_string(),
    }
}

/// `parse(r.to_string()) == r`, and the text is stable from then on.
fn assert_display_round_trips(r: &Relationship) {
    let shown = r.to_string();
    let again = parse(&shown);
    assert_eq!(&again, r, "{shown}");
    assert_eq!(again.to_string(), shown);
}

#[test]
fn object_ids_up_to_1024_bytes() {
    assert_eq!(MAX_OBJECT_ID_LEN, 1024);
    let longest = "a".repeat(1024);
    let too_long = "a".repeat(1025);
    let r = parse(&format!("doc:{longest}#viewer@user:{longest}"));
    assert_eq!(r.resource.object_id.len(), 1024);
    assert_eq!(r.subject.object.object_id.len(), 1024);
    assert_display_round_trips(&r);
    // Every allowed character, at the limit.
    let mixed: String = "aZ09/_|-=+".chars().cycle().take(1024).collect();
    assert_eq!(
        parse(&format!("doc:{mixed}#viewer@user:tom"))
            .resource
            .object_id,
        mixed
    );

    let e = parse_err(&format!("doc:{too_long}#viewer@user:tom"));
    assert!(
        e.starts_with("object id is 1025 bytes long; the limit is 1024 (the resource in `doc:aaaa"),
        "{e}"
    );
    let e = parse_err(&format!("doc:1#viewer@user:{too_long}"));
    assert!(e.starts_with("object id is 1025 bytes long; the limit is 1024 (the subject in `doc:1#viewer@user:aaa"), "{e}");
    // Multi-byte characters count in bytes, and are refused anyway.
    let e = parse_err(&format!("doc:{}#viewer@user:tom", "é".repeat(400)));
    assert!(e.starts_with("object id `éé"), "{e}");
}

#[test]
fn every_form_parses_to_its_parts() {
    let at = |y, mo, d, h, mi, s| {
        Utc.with_ymd_and_hms(y, mo, d, h, mi, s)
            .single()
            .expect("valid time")
    };
    // (line, resource, relation, subject, subject relation, caveat, has context, expiration)
    type Case<'a> = (
        &'a str,
        &'a str,
        &'a str,
        &'a str,
        Option<&'a str>,
        Option<&'a str>,
        bool,
        Option<chrono::DateTime<Utc>>,
    );
    let cases: Vec<Case> = vec![
        (
            "document:1#viewer@user:tom",
            "document:1",
            "viewer",
            "user:tom",
            None,
            None,
            false,
            None,
        ),
        (
            "document:1#viewer@user:tom#...",
            "document:1",
            "viewer",
            "user:tom",
            None,
            None,
            false,
            None,
        ),
        (
            "document:1#viewer@group:eng#member",
            "document:1",
            "viewer",
            "group:eng",
            Some("member"),
            None,
            false,
            None,
        ),
        (
            "document:1#viewer@user:*",
            "document:1",
            "viewer",
            "user:*",
            None,
            None,
            false,
            None,
        ),
        (
            "org/identity_team/group:ultragroup#member@org/identity_team/user:someguy#...",
            "org/identity_team/group:ultragroup",
            "member",
            "org/identity_team/user:someguy",
            None,
            None,
            false,
            None,
        ),
        (
            "test/doc:1#viewer@test/user:*",
            "test/doc:1",
            "viewer",
            "test/user:*",
            None,
            None,
            false,
            None,
        ),
        (
            "document:a-b_c|d=e+f/g#viewer@user:A9",
            "document:a-b_c|d=e+f/g",
            "viewer",
            "user:A9",
            None,
            None,
            false,
            None,
        ),
        (
            r#"document:firstdoc#reader@user:notbanned[some_caveat:{"somecondition":42}]"#,
            "document:firstdoc",
            "reader",
            "user:notbanned",
            None,
            Some("some_caveat"),
            true,
            None,
        ),
        (
            "document:firstdoc#banned@user:possiblybanned[third_caveat]",
            "document:firstdoc",
            "banned",
            "user:possiblybanned",
            None,
            Some("third_caveat"),
            false,
            None,
        ),
        (
            r#"team:t#direct_member@user:tom[membercaveat:{"memberparam": 43}]"#,
            "team:t",
            "direct_member",
            "user:tom",
            None,
            Some("membercaveat"),
            true,
            None,
        ),
        (
            "org/x:1#viewer@org/g:2#member[foo/bar/only_on_tuesday]",
            "org/x:1",
            "viewer",
            "org/g:2",
            Some("member"),
            Some("foo/bar/only_on_tuesday"),
            false,
            None,
        ),
        (
            "folder:expired#viewer@user:tom[expiration:2023-12-01T00:00:00Z]",
            "folder:expired",
            "viewer",
            "user:tom",
            None,
            None,
            false,
            Some(at(2023, 12, 1, 0, 0, 0)),
        ),
        (
            "folder:x#viewer@user:tom[expiration:2023-12-01T02:00:00+02:00]",
            "folder:x",
            "viewer",
            "user:tom",
            None,
            None,
            false,
            Some(at(2023, 12, 1, 0, 0, 0)),
        ),
        (
            r#"doc:1#viewer@user:tom[cav:{"a":[1,2],"b":"]"}][expiration:2323-12-01T00:00:00Z]"#,
            "doc:1",
            "viewer",
            "user:tom",
            None,
            Some("cav"),
            true,
            Some(at(2323, 12, 1, 0, 0, 0)),
        ),
        (
            "doc:1#viewer@user:*[expiration:2023-12-01T00:00:00Z][cav]",
            "doc:1",
            "viewer",
            "user:*",
            None,
            Some("cav"),
            false,
            Some(at(2023, 12, 1, 0, 0, 0)),
        ),
        (
            "  doc:1#viewer@user:tom  ",
            "doc:1",
            "viewer",
            "user:tom",
            None,
            None,
            false,
            None,
        ),
    ];
    for (line, resource, relation, subject, subject_rel, caveat, has_context, expiration) in cases {
        let r = parse(line);
        assert_eq!(r.resource.to_string(), resource, "{line}");
        assert_eq!(r.relation, relation, "{line}");
        assert_eq!(r.subject.object.to_string(), subject, "{line}");
        assert_eq!(r.subject.relation.as_deref(), subject_rel, "{line}");
        assert_eq!(r.caveat.as_ref().map(|c| c.name.as_str()), caveat, "{line}");
        assert_eq!(
            r.caveat.as_ref().is_some_and(|c| c.context.is_some()),
            has_context,
            "{line}"
        );
        assert_eq!(r.expiration, expiration, "{line}");
        assert_display_round_trips(&r);
    }
}

#[test]
fn display_writes_canonical_text() {
    for (line, shown) in [
        ("doc:1#viewer@user:tom#...", "doc:1#viewer@user:tom"),
        (
            r#"doc:1#viewer@user:tom[cav:{ "b" : 1, "a": [true, null] }]"#,
            r#"doc:1#viewer@user:tom[cav:{"a":[true,null],"b":1}]"#,
        ),
        (
            "doc:1#viewer@user:tom[cav:{}]",
            "doc:1#viewer@user:tom[cav:{}]",
        ),
        (
            "doc:1#viewer@user:tom[expiration:2023-12-01T02:00:00+02:00]",
            "doc:1#viewer@user:tom[expiration:2023-12-01T00:00:00Z]",
        ),
        (
            "doc:1#viewer@user:tom[expiration:2023-12-01T00:00:00.5Z]",
            "doc:1#viewer@user:tom[expiration:2023-12-01T00:00:00.500Z]",
        ),
        (
            "doc:1#viewer@user:tom[expiration:2023-12-01T00:00:00Z][cav]",
            "doc:1#viewer@user:tom[cav][expiration:2023-12-01T00:00:00Z]",
        ),
    ] {
        let r = parse(line);
        assert_eq!(r.to_string(), shown, "{line}");
        assert_display_round_trips(&r);
    }
    // Floats in a caveat context read back exactly.
    let r = parse(r#"doc:1#viewer@user:tom[cav:{"x":2.154790584189754e-54,"y":0.1,"z":1e300}]"#);
    assert_display_round_trips(&r);
}

#[test]
fn bad_lines_name_their_problem() {
    for (line, want) in [
        ("", "expected `resource#relation@subject`, missing `@` in ``"),
        ("doc:1#viewer", "expected `resource#relation@subject`, missing `@` in `doc:1#viewer`"),
        ("doc:1viewer@user:tom", "expected `type:id#relation` before `@` in `doc:1viewer@user:tom`"),
        ("doc#viewer@user:tom", "expected `type:id` for the resource in `doc#viewer@user:tom`"),
        ("doc:1#viewer@user", "expected `type:id` for the subject in `doc:1#viewer@user`"),
        ("Doc:1#viewer@user:tom", "invalid resource type `Doc` in `Doc:1#viewer@user:tom`"),
        ("doc:1#viewer@org//user:tom", "invalid subject type `org//user` in `doc:1#viewer@org//user:tom`"),
        ("doc:1#Viewer@user:tom", "invalid relation `Viewer` in `doc:1#Viewer@user:tom`"),
        ("doc:1#viewer@user:tom#Member", "invalid relation `Member` in `doc:1#viewer@user:tom#Member`"),
        ("doc:#viewer@user:tom", "object id is empty (the resource in `doc:#viewer@user:tom`)"),
        ("doc:*#viewer@user:tom", "object id `*` contains `*`; ids use letters, digits and `/ _ | - = +` (the resource in `doc:*#viewer@user:tom`)"),
        ("doc:1#viewer@user:*#member", "a wildcard subject cannot have a relation, in `doc:1#viewer@user:*#member`"),
        ("doc:1#viewer@user:tom junk", "object id `tom junk` contains ` `; ids use letters, digits and `/ _ | - = +` (the subject in `doc:1#viewer@user:tom junk`)"),
        ("doc:1#viewer@user:tom[Cav]", "invalid caveat name `Cav` in `doc:1#viewer@user:tom[Cav]`"),
        ("doc:1#viewer@user:tom[cav", "missing `]` after the caveat in `doc:1#viewer@user:tom[cav`"),
        ("doc:1#viewer@user:tom[cav]x", "unexpected `x` after the subject in `doc:1#viewer@user:tom[cav]x`"),
        ("doc:1#viewer@user:tom[a][b]", "more than one caveat in `doc:1#viewer@user:tom[a][b]`"),
        ("doc:1#viewer@user:tom[cav:[1]]", "caveat context for `cav` must be a JSON object, in `doc:1#viewer@user:tom[cav:[1]]`"),
        (r#"doc:1#viewer@user:tom[cav:{"a":1}"#, r#"missing `]` after the caveat context in `doc:1#viewer@user:tom[cav:{"a":1}`"#),
        ("doc:1#viewer@user:tom[cav:]", "invalid caveat context for `cav` (expected value at line 1 column 1) in `doc:1#viewer@user:tom[cav:]`"),
        ("doc:1#viewer@user:tom[expiration]", "`[expiration]` needs a time, like `[expiration:2030-01-01T00:00:00Z]`, in `doc:1#viewer@user:tom[expiration]`"),
        ("doc:1#viewer@user:tom[expiration:2023-12-01T00:00:00Z", "missing `]` after the expiration in `doc:1#viewer@user:tom[expiration:2023-12-01T00:00:00Z`"),
        (
            "doc:1#viewer@user:tom[expiration:2023-12-01T00:00:00Z][expiration:2024-12-01T00:00:00Z]",
            // (shortened to 80 bytes)
            "expiration given twice in `doc:1#viewer@user:tom[expiration:2023-12-01T00:00:00Z][expiration:2024-12-01T00:...`",
        ),
    ] {
        assert_eq!(parse_err(line), want, "{line:?}");
    }
    let e = parse_err("doc:1#viewer@user:tom[expiration:yesterday]");
    assert!(e.starts_with("invalid expiration `yesterday` ("), "{e}");
    // Long input is shortened in messages.
    let e = parse_err(&format!("doc:1#viewer@user:{}", "x ".repeat(600)));
    assert!(e.len() < 400 && e.contains("..."), "{e}");
}

#[test]
fn every_corpus_relationship_parses_and_round_trips() {
    let mut count = 0;
    for (name, text) in common::corpus_files() {
        let file = parse_validation_file(&text).unwrap_or_else(|e| panic!("{name}: {e}"));
        for (line, r) in &file.relationships {
            let shown = r.to_string();
            let again = parse_relationship(&shown)
                .unwrap_or_else(|e| panic!("{name}:{line:?}: `{shown}`: {e}"));
            assert_eq!(&again, r, "{name}:{line:?}");
            count += 1;
        }
    }
    eprintln!("round-tripped {count} corpus relationships");
}
