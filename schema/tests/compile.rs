//! Compiler tests: every construct of the schema language, every error with its exact
//! message and position, operator precedence, and the printer's round trip (own schemas
//! plus every schema of the SpiceDB conformance corpus).
#![expect(
    clippy::expect_used,
    clippy::panic,
    reason = "test helpers fail loudly by design"
)]

mod common;

use arbiter_schema::{
    compile, print, AllowedKind, AllowedSubject, ArrowKind, CompiledSchema, RelationKind, Rewrite,
};
use common::corpus_files;

/// Every error of compiling `schema`, as displayed (message and position); empty if it
/// compiles.
fn errors(schema: &str) -> Vec<String> {
    match compile(schema) {
        Ok(_) => Vec::new(),
        Err(e) => e.0.iter().map(ToString::to_string).collect(),
    }
}

fn compiled(schema: &str) -> CompiledSchema {
    match compile(schema) {
        Ok(s) => s,
        Err(e) => panic!("schema failed to compile: {e}\n{schema}"),
    }
}

/// The rewrite of permission `perm` on definition `def`.
fn rewrite_of(schema: &CompiledSchema, def: &str, perm: &str) -> Rewrite {
    let (_, d) = schema.definition_by_name(def).expect("definition");
    let rid = d.relation_id(perm).expect("permission");
    match &d.relation(rid).expect("relation").kind {
        RelationKind::Permission(rw) => rw.clone(),
        RelationKind::Direct(_) => panic!("`{perm}` is a relation"),
    }
}

/// The allowed subject types of relation `rel` on `def`, as printed.
fn allowed_of(schema: &CompiledSchema, def: &str, rel: &str) -> Vec<String> {
    let (_, d) = schema.definition_by_name(def).expect("definition");
    let r = d
        .relation(d.relation_id(rel).expect("relation"))
        .expect("relation");
    r.allowed_subjects()
        .iter()
        .map(|a| arbiter_schema::printer::subject_type(schema, a))
        .collect()
}

// ---------------------------------------------------------------------------------------
// Constructs that compile.

#[test]
fn every_construct_compiles() {
    let cases: &[(&str, &str)] = &[
        ("empty schema", ""),
        ("only comments", "// nothing here\n/* at all */\n"),
        ("empty definition", "definition user {}"),
        ("direct subject", "definition user {}\ndefinition doc {\n  relation viewer: user\n}"),
        ("wildcard", "definition user {}\ndefinition doc {\n  relation viewer: user:*\n}"),
        (
            "subject set",
            "definition user {}\ndefinition group {\n  relation member: user | group#member\n}",
        ),
        (
            "subject set on a permission",
            "definition user {}\ndefinition group {\n  relation direct: user\n  permission member = direct\n}\n\
             definition doc {\n  relation viewer: group#member\n}",
        ),
        ("ellipsis", "definition user {}\ndefinition doc {\n  relation viewer: user#...\n}"),
        (
            "several subject types",
            "definition user {}\ndefinition group {\n  relation member: user | user:* | group#member | group#...\n}",
        ),
        (
            "expiration",
            "use expiration\ndefinition user {}\ndefinition doc {\n  relation viewer: user with expiration\n}",
        ),
        (
            "caveat",
            "definition user {}\ncaveat only_on(day string) {\n  day == 'tuesday'\n}\n\
             definition doc {\n  relation viewer: user with only_on\n}",
        ),
        (
            "caveat and expiration",
            "use expiration\ndefinition user {}\ncaveat c(x int) { x == 1 }\n\
             definition doc {\n  relation viewer: user with c and expiration | user:* with expiration and c\n}",
        ),
        (
            "caveat declared after its use",
            "definition user {}\ndefinition doc {\n  relation viewer: user with later\n}\ncaveat later(x int) { x > 0 }",
        ),
        (
            "type declared after its use",
            "definition doc {\n  relation viewer: user | group#member\n}\ndefinition user {}\n\
             definition group {\n  relation member: user\n}",
        ),
        (
            "set operators and parentheses",
            "definition user {}\ndefinition doc {\n  relation a: user\n  relation b: user\n  relation c: user\n\
               permission p = a + b\n  permission q = a & b\n  permission r = a - b\n\
               permission s = (a + b) & (c - a)\n  permission t = ((a))\n  permission u = a + (b - (c & a))\n}",
        ),
        ("nil", "definition doc {\n  permission none = nil\n  permission also = nil + nil - nil\n}"),
        (
            "arrows",
            "definition user {}\ndefinition folder {\n  relation viewer: user\n  permission view = viewer\n}\n\
             definition doc {\n  relation parent: folder\n  permission a = parent->view\n\
               permission b = parent.all(viewer)\n  permission c = parent.any(view)\n\
               permission d = parent->view + parent.all(view) & parent.any(viewer) - nil\n}",
        ),
        (
            "arrow to some of the subject types",
            "definition user {}\ndefinition folder {\n  relation viewer: user\n}\n\
             definition doc {\n  relation parent: folder | user\n  permission view = parent->viewer\n}",
        ),
        (
            "arrow over a subject set",
            "definition user {}\ndefinition group {\n  relation member: user\n  relation owner: user\n}\n\
             definition doc {\n  relation team: group#member\n  permission admin = team->owner\n}",
        ),
        (
            "permission referring to a later permission",
            "definition doc {\n  permission a = b\n  permission b = nil\n}",
        ),
        (
            "namespaced types",
            "definition org/user {}\ndefinition org/team/group {\n  relation member: org/user | org/team/group#member\n}\n\
             caveat org/team/cav(x int) { x == 1 }\n\
             definition a/b/c/d {\n  relation viewer: org/team/group#member with org/team/cav\n  permission view = viewer\n}",
        ),
        (
            "comments everywhere",
            "// file comment\n\n/** user doc */\ndefinition user {} // trailing\n\
             definition doc { /* inline */\n  // relation doc\n  relation viewer: /* here */ user\n\
               permission view = viewer // trailing\n    + nil /* mid */ - nil\n}\n",
        ),
        (
            "caveat parameter types",
            "caveat all_types(a int, b uint, c bool, d string, e double, f bytes, g duration, h timestamp, \
             i list<string>, j map<any>, k map<list<int>>, l ipaddress, m any) {\n  a == 1 && b == 1u && c && d == '' && e > 0.0 && size(f) > 0 && g > duration('1s') \
             && h > timestamp('2020-01-01T00:00:00Z') && i.size() > 0 && size(j) > 0 && size(k) > 0 \
             && l.in_cidr('10.0.0.0/8') && m != null\n}",
        ),
        (
            "caveat expression with braces and strings",
            "caveat c(m map<any>) {\n  {'a': 1}.size() == 1 && m['}'] == \"{\"\n}",
        ),
        (
            "keywords as names",
            "definition definition {}\ndefinition doc {\n  relation relation: definition\n  relation with: definition\n\
               permission permission = relation + with\n}",
        ),
        (
            "identifiers with digits and underscores",
            "definition user_2 {}\ndefinition doc_v2 {\n  relation viewer_1: user_2\n  permission can_view_2 = viewer_1\n}",
        ),
        ("use flag alone", "use expiration"),
        ("use flag twice", "use expiration\nuse expiration"),
        ("windows line endings", "definition user {}\r\ndefinition doc {\r\n  relation viewer: user\r\n}\r\n"),
    ];
    for (name, schema) in cases {
        assert_eq!(
            errors(schema),
            Vec::<String>::new(),
            "case `{name}`:\n{schema}"
        );
    }
}

#[test]
fn subject_types_compile_to_the_right_kinds() {
    let s = compiled(
        "use expiration\ndefinition user {}\ncaveat c(x int) { x == 1 }\n\
         definition group {\n  relation member: user | user:* | group#member | group#... with c and expiration\n}",
    );
    let user = s.type_id("user").unwrap();
    let (group, g) = s.definition_by_name("group").unwrap();
    let member = g.relation_id("member").unwrap();
    let c = s.caveat_id("c").unwrap();
    let allowed = g.relation(member).unwrap().allowed_subjects().to_vec();
    let plain = |type_id, kind| AllowedSubject {
        type_id,
        kind,
        caveat: None,
        expiration: false,
    };
    assert_eq!(
        allowed,
        vec![
            plain(user, AllowedKind::Object),
            plain(user, AllowedKind::Wildcard),
            plain(group, AllowedKind::SubjectSet(member)),
            AllowedSubject {
                type_id: group,
                kind: AllowedKind::Object,
                caveat: Some(c),
                expiration: true
            },
        ]
    );
    assert!(s.uses_expiration);
    assert_eq!(
        allowed_of(&s, "group", "member"),
        [
            "user",
            "user:*",
            "group#member",
            "group with c and expiration"
        ]
    );
}

#[test]
fn arrows_compile_with_their_targets() {
    let s = compiled(
        "definition user {}\ndefinition folder {\n  relation viewer: user\n}\n\
         definition org {\n  relation admin: user\n  permission viewer = admin\n}\n\
         definition doc {\n  relation parent: folder | org | user\n\
           permission a = parent->viewer\n  permission b = parent.all(viewer)\n  permission c = parent.any(viewer)\n}",
    );
    let folder = s.type_id("folder").unwrap();
    let org = s.type_id("org").unwrap();
    let (_, doc) = s.definition_by_name("doc").unwrap();
    let parent = doc.relation_id("parent").unwrap();
    for (perm, kind) in [
        ("a", ArrowKind::Any),
        ("b", ArrowKind::All),
        ("c", ArrowKind::AnyFunction),
    ] {
        let Rewrite::Arrow(arrow) = rewrite_of(&s, "doc", perm) else {
            panic!("{perm} is not an arrow")
        };
        assert_eq!(arrow.tupleset, parent);
        assert_eq!(arrow.computed, "viewer");
        assert_eq!(arrow.kind, kind);
        // `user` has no `viewer`: it contributes nothing. `org#viewer` is a permission.
        assert_eq!(arrow.targets, vec![(folder, 0), (org, 1)]);
    }
}

#[test]
fn doc_comments_are_kept() {
    let s = compiled(
        "// not a doc: a blank line follows\n\n/** user doc */\ndefinition user {}\n\n\
         // doc line 1\n// doc line 2\ndefinition doc {\n  /* relation doc */\n  relation viewer: user\n\n\
           // permission doc\n  permission view = viewer\n  relation no_doc: user\n}\n\
         // caveat doc\ncaveat c(x int) { x == 1 }",
    );
    let (_, user) = s.definition_by_name("user").unwrap();
    assert_eq!(user.doc, ["/** user doc */"]);
    let (_, doc) = s.definition_by_name("doc").unwrap();
    assert_eq!(doc.doc, ["// doc line 1", "// doc line 2"]);
    let docs: Vec<(&str, Vec<String>)> = doc
        .relations
        .iter()
        .map(|r| (r.name.as_str(), r.doc.clone()))
        .collect();
    assert_eq!(
        docs,
        vec![
            ("viewer", vec!["/* relation doc */".to_string()]),
            ("view", vec!["// permission doc".to_string()]),
            ("no_doc", vec![]),
        ]
    );
    assert_eq!(s.caveats[0].doc, ["// caveat doc"]);
}

#[test]
fn caveats_keep_parameters_and_expression() {
    let s = compiled("caveat c(a list<string>, b map<any>, c map<list<int>>) {\n  a.size() > 0 && size(b) > 0 && size(c) > 0\n}");
    let c = s.caveat(s.caveat_id("c").unwrap()).unwrap();
    let params: Vec<(&str, &str)> = c
        .params
        .iter()
        .map(|(n, t)| (n.as_str(), t.as_str()))
        .collect();
    assert_eq!(
        params,
        [
            ("a", "list<string>"),
            ("b", "map<any>"),
            ("c", "map<list<int>>")
        ]
    );
    assert_eq!(c.expression, "a.size() > 0 && size(b) > 0 && size(c) > 0");
}

// ---------------------------------------------------------------------------------------
// Precedence: `-` loosest, then `&`, then `+`; all left-associative.

#[test]
fn operator_precedence() {
    let s = compiled(
        "definition user {\n  relation x: user\n}\ndefinition doc {\n  relation a: user\n  relation b: user\n  relation c: user\n\
           permission p0 = a + b - c\n  permission p1 = a - b + c\n  permission p2 = a - b & c\n\
           permission p3 = a & b + c\n  permission p4 = a - b - c\n  permission p5 = a + b + c\n\
           permission p6 = a & b & c\n  permission p7 = a - (b - c)\n  permission p8 = (a + b) & c\n\
           permission p9 = a + (b + c)\n  permission p10 = a & b - c & a\n  permission p11 = a->x + b\n}",
    );
    use Rewrite::*;
    let (a, b, c) = (Computed(0), Computed(1), Computed(2));
    let excl = |l: Rewrite, r: Rewrite| Exclusion(Box::new(l), Box::new(r));
    let cases = [
        ("p0", excl(Union(vec![a.clone(), b.clone()]), c.clone())),
        ("p1", excl(a.clone(), Union(vec![b.clone(), c.clone()]))),
        (
            "p2",
            excl(a.clone(), Intersection(vec![b.clone(), c.clone()])),
        ),
        (
            "p3",
            Intersection(vec![a.clone(), Union(vec![b.clone(), c.clone()])]),
        ),
        ("p4", excl(excl(a.clone(), b.clone()), c.clone())),
        ("p5", Union(vec![a.clone(), b.clone(), c.clone()])),
        ("p6", Intersection(vec![a.clone(), b.clone(), c.clone()])),
        ("p7", excl(a.clone(), excl(b.clone(), c.clone()))),
        (
            "p8",
            Intersection(vec![Union(vec![a.clone(), b.clone()]), c.clone()]),
        ),
        ("p9", Union(vec![a.clone(), b.clone(), c.clone()])),
        (
            "p10",
            excl(
                Intersection(vec![a.clone(), b.clone()]),
                Intersection(vec![c.clone(), a.clone()]),
            ),
        ),
    ];
    for (perm, want) in cases {
        assert_eq!(rewrite_of(&s, "doc", perm), want, "permission {perm}");
    }
    let Union(items) = rewrite_of(&s, "doc", "p11") else {
        panic!("p11 is not a union")
    };
    assert!(
        matches!(&items[..], [Arrow(arrow), Computed(1)] if arrow.tupleset == 0 && arrow.computed == "x")
    );
}

// ---------------------------------------------------------------------------------------
// Errors: exact message and position.

/// `(schema, every expected error)`.
const ERROR_CASES: &[(&str, &[&str])] = &[
    // Names.
    (
        "definition user {}\ndefinition document {\n  relation viewer: user\n  permission view = viewr\n}",
        &["undefined relation `viewr` on `document` (line 4, column 21)"],
    ),
    (
        "definition document {\n  relation viewer: usr\n}",
        &["undefined type `usr` in relation `viewer` on `document` (line 2, column 20)"],
    ),
    (
        "definition org/user {}\ndefinition doc {\n  relation viewer: org/usr | org/user\n}",
        &["undefined type `org/usr` in relation `viewer` on `doc` (line 3, column 20)"],
    ),
    (
        "definition group {}\ndefinition document {\n  relation viewer: group#nosuch\n}",
        &["undefined relation `nosuch` on `group` (line 3, column 26)"],
    ),
    (
        "definition user {}\ndefinition doc {\n  relation viewer: user with nocav\n}",
        &["undefined caveat `nocav` (line 3, column 30)"],
    ),
    (
        "definition user {}\ndefinition doc {\n  relation viewer: user | user#...\n}",
        &["duplicate subject type `user` in relation `viewer` on `doc` (line 3, column 27)"],
    ),
    // Arrows.
    (
        "definition user {}\ndefinition doc {\n  relation owner: user\n  permission edit = owner\n  permission view = edit->owner\n}",
        &["arrow over permission `edit` on `doc`: the left side of an arrow must be a relation (line 5, column 21)"],
    ),
    (
        "definition user {\n  relation x: user\n}\ndefinition doc {\n  relation viewer: user | user:*\n  permission view = viewer->x\n}",
        &["arrow over relation `viewer` on `doc`, which allows the wildcard `user:*`; arrows cannot walk wildcards (line 6, column 21)"],
    ),
    (
        "definition user {}\ndefinition team {}\ndefinition doc {\n  relation parent: user | team\n  permission view = parent->viewer\n}",
        &["undefined relation `viewer` on every subject type of `parent` (`user`, `team`) (line 5, column 29)"],
    ),
    (
        "definition user {}\ndefinition doc {\n  relation parent: user\n  permission view = parentt->viewer\n}",
        &["undefined relation `parentt` on `doc` (line 4, column 21)"],
    ),
    (
        "definition folder {\n  relation parent: folder\n  relation viewer: folder\n}\n\
         definition doc {\n  relation parent: folder\n  permission view = parent->parent->viewer\n}",
        &["nested arrows are not supported (in permission `view` on `doc`); name the intermediate permission instead (line 7, column 37)"],
    ),
    (
        "definition folder {\n  relation viewer: folder\n}\ndefinition doc {\n  relation parent: folder\n  permission view = parent.some(viewer)\n}",
        &["unknown arrow function `some`: expected `all` or `any` (line 6, column 28)"],
    ),
    // Duplicates.
    (
        "definition user {}\ndefinition user {}",
        &["duplicate definition `user` (line 2, column 12)"],
    ),
    (
        "definition user {}\ndefinition doc {\n  relation viewer: user\n  permission viewer = nil\n}",
        &["duplicate relation `viewer` on `doc` (line 4, column 14)"],
    ),
    (
        "caveat c(x int) { x == 1 }\ncaveat c(y int) { y == 2 }",
        &["duplicate caveat `c` (line 2, column 8)"],
    ),
    (
        "caveat c(x int, x string) { x == 1 }",
        &["duplicate parameter `x` in caveat `c` (line 1, column 17)"],
    ),
    // Caveat expressions are type-checked over their parameters, at their position.
    (
        "caveat c(x int) {\n  x == 1 && y > 2\n}",
        &["caveat `c`: undeclared reference to `y` (line 2, column 13)"],
    ),
    ("caveat c(x int) { x + 1 }", &["caveat `c`: the expression must be a boolean, found `int` (line 1, column 8)"]),
    (
        "caveat c(x int) { x == 'a' }",
        &["caveat `c`: found no matching overload for `==` applied to `(int, string)` (line 1, column 21)"],
    ),
    ("caveat c(x int, y int) { x == 1 }", &["caveat `c`: parameter `y` is never used (line 1, column 8)"]),
    ("caveat always() { true }", &["caveat `always`: a caveat needs at least one parameter (line 1, column 8)"]),
    (
        "caveat c(x float) { x > 1.0 }",
        &["caveat `c`, parameter `x`: unknown parameter type `float`: use any, bool, int, uint, double, string, bytes, duration, timestamp, ipaddress, list<T> or map<T> (line 1, column 12)"],
    ),
    // `use` and `with`.
    (
        "definition user {}\ndefinition doc {\n  relation viewer: user with expiration\n}",
        &["`with expiration` needs `use expiration` at the top of the schema (line 3, column 30)"],
    ),
    ("use self\ndefinition user {}", &["unknown feature `self` in `use` (line 1, column 5)"]),
    (
        "use expiration\ndefinition user {}\ndefinition doc {\n  relation viewer: user with expiration and expiration\n}",
        &["`expiration` is listed twice (line 4, column 45)"],
    ),
    (
        "caveat a(x int) { x == 1 }\ncaveat b(x int) { x == 2 }\ndefinition user {}\ndefinition doc {\n  relation viewer: user with a and b\n}",
        &["only one caveat is allowed per subject type, found `b` (line 5, column 36)"],
    ),
    // Invalid names.
    (
        "definition User {}",
        &["invalid definition name `User`: use lowercase letters, digits and `_` (with `/` between namespace segments), starting with a letter, at most 64 characters a segment (line 1, column 12)"],
    ),
    (
        "definition org/User {}",
        &["invalid definition name `org/User`: use lowercase letters, digits and `_` (with `/` between namespace segments), starting with a letter, at most 64 characters a segment (line 1, column 12)"],
    ),
    (
        "definition user {}\ndefinition doc {\n  relation Viewer: user\n}",
        &["invalid relation name `Viewer`: use lowercase letters, digits and `_`, starting with a letter, at most 64 characters; `nil` is reserved (line 3, column 12)"],
    ),
    (
        "definition doc {\n  permission nil = nil\n}",
        &["invalid relation name `nil`: use lowercase letters, digits and `_`, starting with a letter, at most 64 characters; `nil` is reserved (line 2, column 14)"],
    ),
    (
        "definition doc {\n  permission trailing_ = nil\n}",
        &["invalid relation name `trailing_`: use lowercase letters, digits and `_`, starting with a letter, at most 64 characters; `nil` is reserved (line 2, column 14)"],
    ),
    (
        "caveat Cav(x int) { x == 1 }",
        &["invalid caveat name `Cav`: use lowercase letters, digits and `_` (with `/` between namespace segments), starting with a letter, at most 64 characters a segment (line 1, column 8)"],
    ),
    // Syntax.
    (
        "definition user {}\ndefinition doc {\n  relation viewer: user\n  permission view viewer\n}",
        &["expected `=` after the permission name, found `viewer` (line 4, column 19)"],
    ),
    (
        "definition user {}\ndefinition doc {\n  relation viewer user\n}",
        &["expected `:` after the relation name, found `user` (line 3, column 19)"],
    ),
    (
        "definition user {}\ndefinition doc {\n  relation viewer: user\n",
        &["definition `doc` is missing its closing `}` (line 2, column 12)"],
    ),
    (
        "definition user {\ndefinition doc {}",
        &["definition `user` is missing its closing `}` (line 1, column 12)"],
    ),
    (
        "definition user {}\ndefinition doc {\n  relation viewer: user\n  permission view = viewer +\n}",
        &["expected a relation, permission, `nil` or `(`, found `}` (line 5, column 1)"],
    ),
    (
        "definition user {}\ndefinition doc {\n  relation viewer: user\n  permission view = (viewer\n}",
        &["expected `)` to close the parenthesis, found `}` (line 5, column 1)"],
    ),
    ("definition user {} $", &["unexpected character `$` (line 1, column 20)"]),
    (
        "definition user {}\ndefinition doc {\n  relation viewer: user ; \n}",
        &["unexpected character `;` (line 3, column 25)"],
    ),
    (
        "definition user {}\ndefinition doc {\n  permission view = nil ^ nil\n}",
        &["unexpected character `^` (line 3, column 25)"],
    ),
    ("definition user {}\n/* never closed", &["unterminated `/*` comment (line 2, column 1)"]),
    (
        "definition user {} é",
        &["unexpected character `\\u{e9}` (line 1, column 20)"],
    ),
    ("relation viewer: user", &["expected `definition`, `caveat` or `use`, found `relation` (line 1, column 1)"]),
    ("definition {}", &["expected a definition name, found `{` (line 1, column 12)"]),
    ("definition org/ {}", &["expected a type name after `/`, found `{` (line 1, column 17)"]),
    ("caveat c(x int) {   }", &["caveat `c` has an empty expression (line 1, column 17)"]),
    ("caveat c(x int) { x == 1", &["caveat expression is missing its closing `}` (line 1, column 17)"]),
    (
        // Outside a caveat body a digit is a stray character, and is reported as such.
        "caveat c(x int) x == 1",
        &["expected `{` to open the caveat expression (line 1, column 17)", "unexpected character `1` (line 1, column 22)"],
    ),
    ("caveat c(x list<int) { true }", &["expected `>` to close the type parameters, found `)` (line 1, column 20)"]),
    ("caveat c(x int y int) { true }", &["expected `,` or `)` in the caveat's parameters, found `y` (line 1, column 16)"]),
    ("use", &["expected a feature name after `use`, found end of input (line 1, column 4)"]),
];

#[test]
fn errors_have_exact_messages_and_positions() {
    for (schema, want) in ERROR_CASES {
        assert_eq!(errors(schema), *want, "schema:\n{schema}");
    }
}

#[test]
fn every_error_of_a_text_is_reported() {
    let schema = "\
use selfish
definition user {}
definition user {}
definition doc {
  relation owner: user
  relation viewer: usr | group#member
  relation owner: user
  permission edit = owner
  permission view = viewr + edit->owner
}
caveat c(x int) { x == 1 }
caveat c(x int) { x == 2 }
";
    assert_eq!(
        errors(schema),
        [
            "unknown feature `selfish` in `use` (line 1, column 5)",
            "duplicate definition `user` (line 3, column 12)",
            "undefined type `usr` in relation `viewer` on `doc` (line 6, column 20)",
            "undefined type `group` in relation `viewer` on `doc` (line 6, column 26)",
            "duplicate relation `owner` on `doc` (line 7, column 12)",
            "undefined relation `viewr` on `doc` (line 9, column 21)",
            "arrow over permission `edit` on `doc`: the left side of an arrow must be a relation (line 9, column 29)",
            "duplicate caveat `c` (line 12, column 8)",
        ]
    );
}

#[test]
fn syntax_errors_do_not_hide_later_errors() {
    let schema = "\
definition user {}
definition doc {
  relation viewer user
  permission view = viewer
  permission edit viewer
  permission admin = nosuch
}
definition other {
  relation x: user $
  permission y = x - - x
}
definition last {
  relation z: nobody
}
";
    assert_eq!(
        errors(schema),
        [
            "expected `:` after the relation name, found `user` (line 3, column 19)",
            "undefined relation `viewer` on `doc` (line 4, column 21)",
            "expected `=` after the permission name, found `viewer` (line 5, column 19)",
            "undefined relation `nosuch` on `doc` (line 6, column 22)",
            "unexpected character `$` (line 9, column 20)",
            "expected a relation, permission, `nil` or `(`, found `-` (line 10, column 22)",
            "undefined type `nobody` in relation `z` on `last` (line 13, column 15)",
        ]
    );
}

#[test]
fn each_problem_is_reported_once() {
    // A stray character or unterminated comment is one error, not also an "expected ...".
    for (schema, count) in [
        ("definition user {} $", 1),
        ("definition user {\n  relation r: user $\n}", 1),
        ("definition user {\n  relation r: user\n} /* open", 1),
        ("definition user { $ $ }", 2),
    ] {
        let got = errors(schema);
        assert_eq!(got.len(), count, "{schema}: {got:#?}");
    }
}

#[test]
fn positions_count_characters_not_bytes() {
    // `é` is two bytes; the column after it still counts it as one character.
    assert_eq!(
        errors("// é\ndefinition doc {\n  /* ééé */ permission view = nope\n}"),
        ["undefined relation `nope` on `doc` (line 3, column 31)"]
    );
}

#[test]
fn nesting_limit() {
    let nested = |depth: usize| format!("{}nil{}", "(".repeat(depth), ")".repeat(depth));
    assert_eq!(
        errors(&format!(
            "definition d {{\n  permission p = {}\n}}",
            nested(128)
        )),
        Vec::<String>::new()
    );
    assert_eq!(
        errors(&format!(
            "definition d {{\n  permission p = {}\n}}",
            nested(129)
        )),
        ["expression is nested too deeply (line 2, column 146)"]
    );
    // A rejected expression does not use up the nesting budget of later ones.
    let schema = format!(
        "definition d {{\n  permission p = {}\n  permission q = {}\n  permission r = {}\n}}",
        nested(129),
        nested(128),
        nested(128)
    );
    assert_eq!(
        errors(&schema),
        ["expression is nested too deeply (line 2, column 146)"]
    );
    // Far deeper input is refused without exhausting the stack.
    assert_eq!(
        errors(&format!(
            "definition d {{\n  permission p = {}\n}}",
            nested(100_000)
        ))
        .first()
        .map(String::as_str),
        Some("expression is nested too deeply (line 2, column 146)")
    );
    let deep_type = format!(
        "caveat c(x {}int{}) {{ true }}",
        "list<".repeat(10_000),
        ">".repeat(10_000)
    );
    assert!(errors(&deep_type)
        .iter()
        .any(|e| e.starts_with("parameter type is nested too deeply")));
}

#[test]
fn operator_limit() {
    let chain = |op: &str, n: usize| {
        let mut s = String::from("definition d {\n  relation r: d\n  permission p = r");
        for _ in 0..n {
            s.push_str(op);
            s.push('r');
        }
        s.push_str("\n}");
        s
    };
    for op in [" + ", " & ", " - "] {
        assert_eq!(errors(&chain(op, 500)), Vec::<String>::new(), "{op}");
        let got = errors(&chain(op, 501));
        assert_eq!(got.len(), 1, "{got:?}");
        assert!(
            got[0].starts_with("expression has more than 500 operators; split it into several permissions (line 3, column "),
            "{got:?}"
        );
        // Long chains used to overflow the stack in the compiler and printer.
        assert!(!errors(&chain(op, 50_000)).is_empty());
    }
    // The limit is per permission.
    let many = format!(
        "definition d {{\n  relation r: d\n  permission p = r{}\n  permission q = r{}\n}}",
        " + r".repeat(400),
        " - r".repeat(400)
    );
    let s = compiled(&many);
    assert_eq!(compile(&print(&s)), Ok(s));
}

// ---------------------------------------------------------------------------------------
// Printer round trip.

/// Schemas of our own, covering every construct the printer writes.
const ROUND_TRIP_SCHEMAS: &[&str] = &[
    "",
    "definition user {}",
    "use expiration\n\n// users\ndefinition user {}\n\n/** groups */\ndefinition group {\n  // members\n  \
     relation member: user | user:* with expiration | group#member | group#... with c and expiration\n}\n\
     caveat c(a int, b list<string>, d map<list<any>>) {\n  a == 1 && {'x': '}'}.size() > 0 && size(b) > 0 && size(d) > 0\n}",
    "definition user {}\ndefinition doc {\n  relation a: user\n  relation b: user\n  relation c: user\n\
       permission p0 = a + b - c\n  permission p1 = a - b + c\n  permission p2 = a - b & c\n\
       permission p3 = (a - b) & c\n  permission p4 = a - (b - c)\n  permission p5 = (a & b) + c\n\
       permission p6 = (a - b) + (c - a)\n  permission p7 = ((a + b) & (b + c)) - ((a - c) & nil)\n\
       permission p8 = nil\n  permission p9 = a & (b & c) & (a + (b + c))\n}",
    "definition user {}\ndefinition folder {\n  relation viewer: user\n  permission view = viewer\n}\n\
     definition doc {\n  relation parent: folder | user\n  permission a = parent->view\n\
       permission b = parent.all(viewer) - parent.any(view)\n  permission c = (parent->view + a) & b\n}",
    "definition org/team/user {}\ndefinition org/doc {\n  relation owner: org/team/user with org/cav\n}\n\
     caveat org/cav(x bool) {\n  x\n}",
    "/* a block\n   doc comment */\ndefinition user {}\ndefinition doc {\n  /**\n   * relation doc\n   */\n  relation r: user\n}",
    // Windows line endings inside a multi-line doc comment.
    "/* a block\r\n   doc comment */\r\ndefinition user {}\r\n",
];

fn assert_round_trip(name: &str, schema: &CompiledSchema) {
    let printed = print(schema);
    let again = match compile(&printed) {
        Ok(s) => s,
        Err(e) => panic!("{name}: printed schema does not compile: {e}\n{printed}"),
    };
    assert_eq!(&again, schema, "{name}: compile(print(s)) != s\n{printed}");
    assert_eq!(print(&again), printed, "{name}: print is not idempotent");
}

#[test]
fn printer_round_trips_own_schemas() {
    for (i, text) in ROUND_TRIP_SCHEMAS.iter().enumerate() {
        assert_round_trip(&format!("schema #{i}"), &compiled(text));
    }
}

#[test]
fn printer_writes_canonical_text() {
    let s = compiled(
        "use expiration\n// doc\ndefinition user {\n  relation a: user\n}\ncaveat c(x int) {   x == 1   }\n\
         definition doc {\n  relation a: user with c and expiration | user:*\n  relation b: user\n\
           permission p = (a + b) & b - (nil)\n  permission q = b.any(a) + b.all(a) + b->a\n}",
    );
    assert_eq!(
        print(&s),
        "use expiration\n\n// doc\ndefinition user {\n\trelation a: user\n}\n\ndefinition doc {\n\
         \trelation a: user with c and expiration | user:*\n\trelation b: user\n\
         \tpermission p = a + b & b - nil\n\tpermission q = b.any(a) + b.all(a) + b->a\n}\n\n\
         caveat c(x int) {\n\tx == 1\n}\n"
    );
}

#[test]
fn printer_round_trips_corpus_schemas() {
    let files = corpus_files();
    let mut checked = 0;
    for (name, text) in &files {
        let yaml: serde_yaml::Value =
            serde_yaml::from_str(text).unwrap_or_else(|e| panic!("{name}: {e}"));
        let Some(schema) = yaml.get("schema").and_then(|s| s.as_str()) else {
            panic!("{name}: no `schema` string");
        };
        match compile(schema) {
            Ok(s) => {
                assert_round_trip(name, &s);
                checked += 1;
            }
            Err(e) => eprintln!("SKIPPED {name}: schema does not compile: {e}"),
        }
    }
    eprintln!("round-tripped {checked} of {} corpus schemas", files.len());
    assert!(files.is_empty() || checked > 0);
}
