//! Property tests: no input makes the parsers panic, every schema that compiles prints
//! back to an equal schema, generated valid schemas compile, and relationships survive
//! `Display` then parse.

use std::collections::BTreeSet;
use std::fmt::Write;

use arbiter_schema::{
    compile, parse, parse_relationship, parse_validation_file, print, Relationship,
};
use proptest::prelude::*;

/// Compiles `text` and checks what holds for any input: errors are non-empty and in
/// source order; a schema that compiles prints back to an equal schema.
fn check_compile(text: &str) {
    match compile(text) {
        Ok(schema) => {
            let printed = print(&schema);
            let again = compile(&printed).ok();
            assert_eq!(
                again.as_ref(),
                Some(&schema),
                "round trip failed\ninput: {text:?}\nprinted:\n{printed}"
            );
        }
        Err(errors) => {
            assert!(!errors.0.is_empty(), "an Err without errors for {text:?}");
            let positions: Vec<_> = errors.0.iter().map(|e| e.position).collect();
            let mut sorted = positions.clone();
            sorted.sort();
            assert_eq!(positions, sorted, "errors out of order for {text:?}");
        }
    }
}

/// Feeds `text` to every entry point that takes untrusted text.
fn feed_everything(text: &str) {
    let _ = parse(text);
    check_compile(text);
    let _ = parse_relationship(text);
    let _ = parse_validation_file(text);
}

const TOKENS: &[&str] = &[
    "definition",
    "relation",
    "permission",
    "caveat",
    "use",
    "expiration",
    "with",
    "and",
    "nil",
    "all",
    "any",
    "some",
    "user",
    "doc",
    "group",
    "member",
    "viewer",
    "parent",
    "view",
    "org/user",
    "Upper",
    "_x",
    "{",
    "}",
    "(",
    ")",
    ":",
    "|",
    "=",
    "+",
    "&",
    "-",
    "->",
    ".",
    "#",
    "*",
    "...",
    ",",
    "/",
    "<",
    ">",
    "// comment\n",
    "/* block */",
    "/*",
    "*/",
    "/** doc */",
    "\n",
    "\n\n",
    "int",
    "list<string>",
    "map<any>",
    "$",
    "é",
    "1",
    "'",
    "\"",
    "\\",
    "\r\n",
    "\t",
];

fn token_soup() -> impl Strategy<Value = String> {
    prop::collection::vec(
        (
            prop::sample::select(TOKENS),
            prop::sample::select(&[" ", "", "\n"][..]),
        ),
        0..80,
    )
    .prop_map(|parts| {
        let mut s = String::new();
        for (tok, sep) in parts {
            s.push_str(tok);
            s.push_str(sep);
        }
        s
    })
}

/// Token soup that starts like a real schema, so the parser gets deeper into it.
fn schema_shaped_soup() -> impl Strategy<Value = String> {
    (token_soup(), token_soup(), token_soup()).prop_map(|(a, b, c)| {
        format!("use expiration\ndefinition user {{}}\ndefinition doc {{\n  relation viewer: user {a}\n  permission view = viewer {b}\n}}\n{c}")
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn random_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..300)) {
        feed_everything(&String::from_utf8_lossy(&bytes));
    }

    #[test]
    fn random_strings_never_panic(text in any::<String>()) {
        feed_everything(&text);
    }

    #[test]
    fn ascii_punctuation_never_panics(text in "[a-z:#@\\[\\]{}()<>|=+&*./\\- \n\"',0-9_]{0,120}") {
        feed_everything(&text);
    }

    #[test]
    fn token_soup_never_panics(text in token_soup()) {
        feed_everything(&text);
    }

    #[test]
    fn schema_shaped_soup_never_panics(text in schema_shaped_soup()) {
        feed_everything(&text);
    }

    #[test]
    fn validation_file_fields_never_panic(
        rel in "[a-z:#@\\[\\]{}\"*.,0-9 \\-]{0,60}",
        assertion in "[a-z:#@\\[\\]{}\"*.,0-9 \\-]{0,60}",
        key in "[a-z:#@*.0-9\\-]{0,20}",
        subject in "[a-z:#@\\[\\]{}<>*.,0-9 \\-]{0,60}",
    ) {
        let q = |s: &str| serde_json::to_string(s).unwrap_or_default();
        let text = format!(
            "schema: |\n  definition user {{}}\nrelationships: {}\nassertions:\n  assertTrue:\n    - {}\n  assertFalse:\n    - {}\nvalidation:\n  {}:\n    - {}\n",
            q(&rel), q(&assertion), q(&format!("{assertion} with {rel}")), q(&key), q(&subject),
        );
        let _ = parse_validation_file(&text);
    }
}

// ---------------------------------------------------------------------------------------
// Generated valid schemas.

#[derive(Debug, Clone)]
struct SubjectSpec {
    ty: usize,
    /// 0 `t`, 1 `t:*`, 2 `t#member`, 3 `t#...`
    kind: u8,
    member: usize,
    caveat: Option<usize>,
    expiration: bool,
}

#[derive(Debug, Clone)]
enum ExprSpec {
    /// `kind`: 0-1 a member of the definition, 2 `nil`, 3 `->`, 4 `.all()`, 5 `.any()`.
    Leaf { kind: u8, a: usize, b: usize },
    /// `op`: 0 `+`, 1 `&`, 2 `-`.
    Binary {
        op: u8,
        left: Box<ExprSpec>,
        right: Box<ExprSpec>,
    },
}

#[derive(Debug, Clone)]
struct DefSpec {
    namespaced: bool,
    doc: u8,
    relations: Vec<Vec<SubjectSpec>>,
    permissions: Vec<ExprSpec>,
}

#[derive(Debug, Clone)]
struct SchemaSpec {
    use_expiration: bool,
    caveats: usize,
    caveats_first: bool,
    defs: Vec<DefSpec>,
}

fn subject_spec() -> impl Strategy<Value = SubjectSpec> {
    (
        0usize..8,
        0u8..4,
        0usize..8,
        prop::option::of(0usize..3),
        any::<bool>(),
    )
        .prop_map(|(ty, kind, member, caveat, expiration)| SubjectSpec {
            ty,
            kind,
            member,
            caveat,
            expiration,
        })
}

fn expr_spec() -> impl Strategy<Value = ExprSpec> {
    let leaf =
        (0u8..6, 0usize..16, 0usize..16).prop_map(|(kind, a, b)| ExprSpec::Leaf { kind, a, b });
    leaf.prop_recursive(4, 24, 2, |inner| {
        (0u8..3, inner.clone(), inner).prop_map(|(op, l, r)| ExprSpec::Binary {
            op,
            left: Box::new(l),
            right: Box::new(r),
        })
    })
}

fn def_spec() -> impl Strategy<Value = DefSpec> {
    (
        any::<bool>(),
        0u8..4,
        prop::collection::vec(prop::collection::vec(subject_spec(), 1..4), 0..4),
        prop::collection::vec(expr_spec(), 0..4),
    )
        .prop_map(|(namespaced, doc, relations, permissions)| DefSpec {
            namespaced,
            doc,
            relations,
            permissions,
        })
}

fn schema_spec() -> impl Strategy<Value = SchemaSpec> {
    (
        any::<bool>(),
        0usize..3,
        any::<bool>(),
        prop::collection::vec(def_spec(), 1..5),
    )
        .prop_map(
            |(use_expiration, caveats, caveats_first, defs)| SchemaSpec {
                use_expiration,
                caveats,
                caveats_first,
                defs,
            },
        )
}

fn type_name(spec: &SchemaSpec, i: usize) -> String {
    match spec.defs.get(i) {
        Some(d) if d.namespaced => format!("ns{i}/sub/t{i}"),
        _ => format!("t{i}"),
    }
}

/// Relation and permission names of definition `i`, relations first.
fn members(spec: &SchemaSpec, i: usize) -> Vec<String> {
    let Some(d) = spec.defs.get(i) else {
        return Vec::new();
    };
    (0..d.relations.len())
        .map(|j| format!("r{j}"))
        .chain((0..d.permissions.len()).map(|j| format!("p{j}")))
        .collect()
}

fn doc_comment(doc: u8, indent: &str) -> String {
    match doc % 4 {
        0 => String::new(),
        1 => format!("{indent}// a line comment\n"),
        2 => format!("{indent}/** a block comment */\n"),
        _ => format!("{indent}/*\n{indent} * on several lines\n{indent} */\n"),
    }
}

/// A resolved subject type: `(type index, kind, text)`; `kind` 1 is a wildcard.
type Subject = (usize, u8, String);

fn resolve_subjects(spec: &SchemaSpec, subjects: &[SubjectSpec]) -> Vec<Subject> {
    let n = spec.defs.len();
    let mut seen = BTreeSet::new();
    let mut out = Vec::new();
    for s in subjects {
        let t = s.ty % n;
        let name = type_name(spec, t);
        let targets = members(spec, t);
        let (kind, mut text) = match s.kind {
            1 => (1, format!("{name}:*")),
            2 if !targets.is_empty() => {
                let m = &targets[s.member % targets.len()];
                (2, format!("{name}#{m}"))
            }
            3 => (0, format!("{name}#...")),
            _ => (0, name.clone()),
        };
        let caveat = if spec.caveats > 0 {
            s.caveat.map(|c| c % spec.caveats)
        } else {
            None
        };
        let expiration = spec.use_expiration && s.expiration;
        // `t` and `t#...` are the same subject type.
        let key = (
            t,
            kind,
            if kind == 2 {
                text.clone()
            } else {
                String::new()
            },
            caveat,
            expiration,
        );
        if !seen.insert(key) {
            continue;
        }
        match (caveat, expiration) {
            (Some(c), true) if s.member % 2 == 0 => {
                let _ = write!(text, " with cav{c} and expiration");
            }
            (Some(c), true) => {
                let _ = write!(text, " with expiration and cav{c}");
            }
            (Some(c), false) => {
                let _ = write!(text, " with cav{c}");
            }
            (None, true) => text.push_str(" with expiration"),
            (None, false) => {}
        }
        out.push((t, kind, text));
    }
    out
}

fn expr_text(spec: &SchemaSpec, def: usize, relations: &[Vec<Subject>], e: &ExprSpec) -> String {
    match e {
        ExprSpec::Binary { op, left, right } => {
            let side = |x: &ExprSpec| match x {
                ExprSpec::Binary { .. } => format!("({})", expr_text(spec, def, relations, x)),
                ExprSpec::Leaf { .. } => expr_text(spec, def, relations, x),
            };
            let op = ["+", "&", "-"][usize::from(*op % 3)];
            format!("{} {op} {}", side(left), side(right))
        }
        ExprSpec::Leaf { kind, a, b } => {
            let own = members(spec, def);
            let computed = || {
                if own.is_empty() {
                    "nil".to_string()
                } else {
                    own[a % own.len()].clone()
                }
            };
            match kind {
                0 | 1 => computed(),
                2 => "nil".to_string(),
                _ => {
                    // Relations without a wildcard subject type, with the names an arrow
                    // over them can reach.
                    let arrowable: Vec<(usize, Vec<String>)> = relations
                        .iter()
                        .enumerate()
                        .filter(|(_, subjects)| subjects.iter().all(|(_, k, _)| *k != 1))
                        .map(|(j, subjects)| {
                            let reachable: BTreeSet<String> = subjects
                                .iter()
                                .flat_map(|(t, _, _)| members(spec, *t))
                                .collect();
                            (j, reachable.into_iter().collect::<Vec<_>>())
                        })
                        .filter(|(_, reachable)| !reachable.is_empty())
                        .collect();
                    if arrowable.is_empty() {
                        return computed();
                    }
                    let (j, reachable) = &arrowable[a % arrowable.len()];
                    let target = &reachable[b % reachable.len()];
                    match kind {
                        3 => format!("r{j}->{target}"),
                        4 => format!("r{j}.all({target})"),
                        _ => format!("r{j}.any({target})"),
                    }
                }
            }
        }
    }
}

fn schema_text(spec: &SchemaSpec) -> String {
    let mut caveats = String::new();
    for c in 0..spec.caveats {
        let _ = write!(caveats, "caveat cav{c}(x int, y list<string>, z map<any>) {{\n  x == {c} && y.size() > 0 && size(z) >= 0\n}}\n\n");
    }
    let mut out = String::new();
    if spec.use_expiration {
        out.push_str("use expiration\n\n");
    }
    if spec.caveats_first {
        out.push_str(&caveats);
    }
    for (i, d) in spec.defs.iter().enumerate() {
        out.push_str(&doc_comment(d.doc, ""));
        let _ = writeln!(out, "definition {} {{", type_name(spec, i));
        let relations: Vec<Vec<Subject>> = d
            .relations
            .iter()
            .map(|r| resolve_subjects(spec, r))
            .collect();
        for (j, subjects) in relations.iter().enumerate() {
            out.push_str(&doc_comment(d.doc + 1 + j as u8, "  "));
            let texts: Vec<&str> = subjects.iter().map(|(_, _, t)| t.as_str()).collect();
            let _ = writeln!(out, "  relation r{j}: {}", texts.join(" | "));
        }
        for (j, e) in d.permissions.iter().enumerate() {
            out.push_str(&doc_comment(d.doc + 2 + j as u8, "  "));
            let _ = writeln!(
                out,
                "  permission p{j} = {}",
                expr_text(spec, i, &relations, e)
            );
        }
        out.push_str("}\n\n");
    }
    if !spec.caveats_first {
        out.push_str(&caveats);
    }
    out
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn generated_schemas_compile_and_round_trip(spec in schema_spec()) {
        let text = schema_text(&spec);
        let schema = match compile(&text) {
            Ok(s) => s,
            Err(e) => return Err(TestCaseError::fail(format!("does not compile: {e}\n{text}"))),
        };
        prop_assert_eq!(schema.definitions.len(), spec.defs.len());
        prop_assert_eq!(schema.caveats.len(), spec.caveats);
        prop_assert_eq!(schema.uses_expiration, spec.use_expiration);
        let printed = print(&schema);
        let again = match compile(&printed) {
            Ok(s) => s,
            Err(e) => return Err(TestCaseError::fail(format!("printed text does not compile: {e}\n{printed}"))),
        };
        prop_assert_eq!(&again, &schema, "printed:\n{}\nfrom:\n{}", printed, text);
        prop_assert_eq!(print(&again), printed);
    }
}

// ---------------------------------------------------------------------------------------
// Relationships: `Display` then parse gives back the same relationship.

fn ident() -> impl Strategy<Value = String> {
    "[a-z]([a-z0-9_]{0,6}[a-z0-9])?"
}

fn type_name_strategy() -> impl Strategy<Value = String> {
    prop::collection::vec(ident(), 1..4).prop_map(|segs| segs.join("/"))
}

fn object_id() -> impl Strategy<Value = String> {
    "[a-zA-Z0-9/_|=+\\-]{1,24}"
}

fn json_value() -> impl Strategy<Value = serde_json::Value> {
    let leaf = prop_oneof![
        Just(serde_json::Value::Null),
        any::<bool>().prop_map(serde_json::Value::from),
        any::<i64>().prop_map(serde_json::Value::from),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(serde_json::Value::from),
        "[ -~]{0,12}".prop_map(serde_json::Value::from),
    ];
    leaf.prop_recursive(2, 8, 3, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..3).prop_map(serde_json::Value::from),
            prop::collection::btree_map("[a-z\\]\\[ ]{1,6}", inner, 0..3)
                .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
        ]
    })
}

fn relationship_text() -> impl Strategy<Value = String> {
    (
        (type_name_strategy(), object_id(), ident()),
        (
            type_name_strategy(),
            prop_oneof![object_id(), Just("*".to_string())],
            prop::option::of(prop_oneof![ident(), Just("...".to_string())]),
        ),
        prop::option::of((
            type_name_strategy(),
            prop::option::of(prop::collection::btree_map(ident(), json_value(), 0..3)),
        )),
        prop::option::of((0i64..8_000_000_000, 0u32..1_000_000_000, -12i32..13)),
        any::<bool>(),
    )
        .prop_map(
            |((rt, rid, rel), (st, sid, srel), caveat, expiration, expiration_first)| {
                let mut s = format!("{rt}:{rid}#{rel}@{st}:{sid}");
                if let Some(r) = srel.filter(|_| sid != "*") {
                    let _ = write!(s, "#{r}");
                }
                let caveat = caveat.map(|(name, ctx)| match ctx {
                    Some(map) => format!(
                        "[{name}:{}]",
                        serde_json::Value::Object(map.into_iter().collect())
                    ),
                    None => format!("[{name}]"),
                });
                let expiration = expiration.and_then(|(secs, nanos, hours)| {
                    let offset = chrono::FixedOffset::east_opt(hours * 3600)?;
                    let t = chrono::DateTime::from_timestamp(secs, nanos)?.with_timezone(&offset);
                    Some(format!("[expiration:{}]", t.to_rfc3339()))
                });
                let (first, second) = if expiration_first {
                    (expiration, caveat)
                } else {
                    (caveat, expiration)
                };
                s.push_str(&first.unwrap_or_default());
                s.push_str(&second.unwrap_or_default());
                s
            },
        )
}

fn parse_ok(text: &str) -> Result<Relationship, TestCaseError> {
    parse_relationship(text).map_err(|e| TestCaseError::fail(format!("{text}: {e}")))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn relationships_round_trip_through_display(text in relationship_text()) {
        let r = parse_ok(&text)?;
        let shown = r.to_string();
        let again = parse_ok(&shown)?;
        prop_assert_eq!(&again, &r, "{} -> {}", text, shown);
        prop_assert_eq!(again.to_string(), shown);
    }
}

/// The generator is only useful if it reaches every construct; check that it does.
#[test]
fn schema_generator_covers_every_construct() {
    use proptest::strategy::ValueTree;
    use proptest::test_runner::TestRunner;

    let mut runner = TestRunner::deterministic();
    let mut texts = String::new();
    for _ in 0..200 {
        let tree = schema_spec()
            .new_tree(&mut runner)
            .expect("generate a schema");
        texts.push_str(&schema_text(&tree.current()));
    }
    for construct in [
        "->",
        ".all(",
        ".any(",
        ":*",
        "#...",
        "#r",
        "#p",
        " + ",
        " & ",
        " - ",
        "(",
        "nil",
        "/sub/",
        "with cav",
        "with expiration",
        "and expiration",
        "expiration and",
        "use expiration",
        "caveat cav",
        "// a line",
        "/** a block",
        " * on several",
    ] {
        assert!(
            texts.contains(construct),
            "no generated schema contains `{construct}`"
        );
    }
}
