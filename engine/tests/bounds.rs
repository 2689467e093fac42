//! Outside input is measured before anything recursive sees it (`arbiter_engine::bounds`):
//! Cedar policy texts that nest deep or chain long, attribute types, attribute values and
//! request contexts. Each hostile shape, and the same at 10x, is refused with an error
//! naming the bound and changes nothing; what passes the bound compiles and evaluates on
//! a thread with a runtime worker's 2 MiB stack.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "test helpers fail loudly by design")]

use std::collections::BTreeMap;

use arbiter_engine::bounds::{self, MAX_EXPRESSION_DEPTH, MAX_VALUE_DEPTH};
use arbiter_engine::*;
use arbiter_schema::parse_relationship;
use serde_json::{json, Map, Value};

const SCHEMA: &str = "definition user {}\ndefinition doc {\n relation viewer: user\n permission view = viewer\n}";

/// A tokio worker's default stack: less than the server gives its threads.
const SMALL_STACK: usize = 2 << 20;

fn engine() -> Engine {
    let e = Engine::in_memory(EngineConfig::default());
    e.write_schema(SCHEMA).unwrap();
    e.write(&[RelationshipUpdate { op: UpdateOp::Touch, relationship: parse_relationship("doc:1#viewer@user:ann").unwrap() }])
        .unwrap();
    e
}

/// A `permit` on `view` with `condition`.
fn permit_when(condition: &str) -> String {
    format!("@id(\"p\")\npermit(principal, action == Action::\"view\", resource)\nwhen {{ {condition} }};\n")
}

/// The hostile shapes of the issue, each `n` deep or long.
fn shapes(n: usize) -> Vec<(&'static str, String)> {
    vec![
        ("nested parentheses", permit_when(&format!("{}true{}", "(".repeat(n), ")".repeat(n)))),
        ("nested set literals", {
            let set = format!("{}1{}", "[".repeat(n), "]".repeat(n));
            permit_when(&format!("{set} == {set}"))
        }),
        ("a long && chain", permit_when(&vec!["true"; n].join(" && "))),
        ("nested if-then-else", permit_when(&format!("{}true{}", "if true then ".repeat(n), " else false".repeat(n)))),
        ("a long attribute chain", permit_when(&format!("principal{} == 1", ".a".repeat(n)))),
        ("negations", permit_when(&format!("{}true", "!".repeat(n)))),
        ("a long index chain", permit_when(&format!("principal{} == 1", r#"["a"]"#.repeat(n)))),
    ]
}

fn model(text: &str) -> Result<PolicyModel, PolicyError> {
    Ok(PolicyModel { policies: split_policies("hostile.cedar", text)?, ..PolicyModel::default() })
}

#[test]
fn deep_and_long_policies_are_refused_before_cedar_sees_them() {
    let e = engine();
    let before = e.revision();
    for n in [20_000, 50_000, 100_000, 200_000, 500_000, 1_000_000] {
        for (shape, text) in shapes(n) {
            // Splitting a file (the CLI, `--policies`) and compiling a model written through
            // the API (stored texts skip the split) both refuse it.
            let err = model(&text).unwrap_err().to_string();
            assert!(err.contains("nests too deep") || err.contains("more than the limit"), "{shape} x{n}: {err}");
            let direct = PolicyModel {
                policies: vec![PolicyText { id: "hostile".into(), text: text.clone() }],
                ..PolicyModel::default()
            };
            let err = e.write_policy_model(direct).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::InvalidArgument, "{shape} x{n}: {err}");
            let m = err.to_string();
            assert!(m.contains("`hostile`") && (m.contains("nests too deep") || m.contains("bytes")), "{shape} x{n}: {m}");
        }
    }
    assert_eq!(e.revision(), before);
    assert!(e.policy_model().policies.is_empty());
}

/// The largest `n` whose shape passes the pre-scan.
fn largest_accepted(shape: usize) -> usize {
    let (mut lo, mut hi) = (1, MAX_EXPRESSION_DEPTH * 2);
    while lo < hi {
        let mid = (lo + hi).div_ceil(2);
        if bounds::cedar_text(&shapes(mid)[shape].1).is_ok() {
            lo = mid;
        } else {
            hi = mid - 1;
        }
    }
    lo
}

/// Compiles `text` and checks `doc:1#view@user:bob` (which only the permit grants) on
/// a thread with `stack` bytes; `None` if the thread died.
fn compile_and_check(text: String, stack: usize) -> Option<(Decision, Vec<String>)> {
    std::thread::Builder::new()
        .stack_size(stack)
        .spawn(move || {
            let e = engine();
            e.write_policy_model(model(&text).unwrap()).unwrap_or_else(|err| panic!("{err}"));
            let check = CheckRequest {
                resource_type: "doc",
                resource_id: "1",
                permission: "view",
                subject_type: "user",
                subject_id: "bob",
                ..CheckRequest::default()
            };
            let decision = e.check(&check).unwrap().decision;
            let policies = e.explain(&check).unwrap().policies;
            // Replacing the set drops the old one on this thread too.
            e.write_policy_model(PolicyModel::default()).unwrap();
            (decision, policies)
        })
        .unwrap()
        .join()
        .ok()
}

#[test]
fn what_passes_the_bound_compiles_and_evaluates_on_the_servers_stack() {
    // The attribute and index chains and the negations cannot validate at any length (an
    // undeclared attribute; Cedar takes at most four `!`); the others grant `view` to bob.
    for shape in [0, 1, 2, 3] {
        let n = largest_accepted(shape);
        assert!(n >= MAX_EXPRESSION_DEPTH - 4, "shape {shape}: only {n} levels pass");
        let (name, text) = shapes(n).swap_remove(shape);
        let answer = compile_and_check(text.clone(), bounds::EVALUATION_STACK_BYTES);
        assert_eq!(answer, Some((Decision::Allowed, vec!["p".to_string()])), "{name} x{n}");
        // On a smaller stack nothing crashes: Cedar's own stack check fails the permit
        // closed where it runs short.
        let (decision, _) = compile_and_check(text, SMALL_STACK).unwrap_or_else(|| panic!("{name} x{n} crashed on 2 MiB"));
        assert!(matches!(decision, Decision::Allowed | Decision::Denied));
    }
}

fn nested(depth: usize) -> Value {
    let mut v = json!(1);
    for _ in 1..depth {
        v = json!([v]);
    }
    v
}

fn set_type(depth: usize) -> AttrType {
    (1..depth).fold(AttrType::Long, |t, _| AttrType::Set(Box::new(t)))
}

#[test]
fn attribute_values_and_contexts_are_bounded() {
    let e = engine();
    let mut declarations = AttributeDecls::default();
    declarations.types.insert("user".into(), BTreeMap::from([("deep".to_string(), AttrDecl::stored(set_type(MAX_VALUE_DEPTH - 1), false))]));
    declarations.context.insert("deep".into(), AttrDecl::stored(set_type(MAX_VALUE_DEPTH - 1), false));
    e.write_policy_model(PolicyModel {
        policies: split_policies("p.cedar", "@id(\"f\")\nforbid(principal, action, resource) when { context has deep };").unwrap(),
        declarations,
        labels: BTreeMap::new(),
    })
    .unwrap();
    let before = e.revision();
    // A stored value: at the bound it is written, past it refused by name.
    let write = |v: Value| {
        e.write_attributes(vec![AttributeUpdate {
            object_type: "user".into(),
            object_id: "ann".into(),
            attributes: Some(ObjectAttributes { values: Map::from_iter([("deep".to_string(), v)]), labels: Vec::new() }),
        }])
    };
    let err = write(nested(MAX_VALUE_DEPTH)).unwrap_err().to_string();
    assert!(err.contains("`deep` nests deeper than 32 levels"), "{err}");
    // (A value off the network is at most 128 deep: JSON and protobuf decoders stop
    // there. Deeper ones built here would overflow the stack when dropped.)
    let err = write(nested(1_000)).unwrap_err().to_string();
    assert!(err.contains("`deep` nests deeper than 32 levels"), "{err}");
    assert_eq!(e.revision(), before);
    write(nested(MAX_VALUE_DEPTH - 1)).unwrap();
    // A request context, likewise.
    let check = |ctx: &Map<String, Value>| {
        e.check(&CheckRequest {
            resource_type: "doc",
            resource_id: "1",
            permission: "view",
            subject_type: "user",
            subject_id: "ann",
            context: Some(ctx),
            ..CheckRequest::default()
        })
    };
    for depth in [MAX_VALUE_DEPTH, 129, 1_000] {
        let ctx = Map::from_iter([("deep".to_string(), nested(depth))]);
        let err = check(&ctx).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidArgument);
        assert!(err.to_string().contains("`deep` nests deeper than 32 levels"), "{err}");
        dismantle(ctx);
    }
    let ctx = Map::from_iter([("deep".to_string(), nested(MAX_VALUE_DEPTH - 1))]);
    assert_eq!(check(&ctx).unwrap().decision, Decision::Denied, "the forbid reads the context");
    // Inferred types (validation files) too.
    let mut inference = Inference::default();
    let err = inference.object("user", "user:ann", &Map::from_iter([("deep".to_string(), nested(1_000))])).unwrap_err();
    assert!(err.contains("nests deeper"), "{err}");
}

/// Drops a deep value one level at a time (a value's own drop recurses).
fn dismantle(ctx: Map<String, Value>) {
    for (_, mut v) in ctx {
        while let Value::Array(mut items) = v {
            v = items.pop().unwrap_or(Value::Null);
        }
    }
}

#[test]
fn request_supplied_attributes_are_declared_optional_and_never_stored() {
    let e = engine();
    let mut declarations = AttributeDecls::default();
    declarations.types.insert(
        "user".into(),
        BTreeMap::from([(
            "risk".to_string(),
            AttrDecl { ty: AttrType::Long, required: true, source: AttrSource::Request },
        )]),
    );
    let err = e.write_policy_model(PolicyModel { declarations: declarations.clone(), ..PolicyModel::default() }).unwrap_err();
    assert!(err.to_string().contains("a request-supplied attribute cannot be required"), "{err}");
    declarations.types.get_mut("user").unwrap().get_mut("risk").unwrap().required = false;
    declarations.context.insert("risk".into(), AttrDecl { ty: AttrType::Long, required: false, source: AttrSource::Request });
    let err = e.write_policy_model(PolicyModel { declarations: declarations.clone(), ..PolicyModel::default() }).unwrap_err();
    assert!(err.to_string().contains("context attributes always come from the request"), "{err}");
    declarations.context.clear();
    e.write_policy_model(PolicyModel { declarations, ..PolicyModel::default() }).unwrap();
    let err = e
        .write_attributes(vec![AttributeUpdate {
            object_type: "user".into(),
            object_id: "ann".into(),
            attributes: Some(ObjectAttributes { values: Map::from_iter([("risk".to_string(), json!(3))]), labels: Vec::new() }),
        }])
        .unwrap_err();
    assert!(err.to_string().contains("`risk` is supplied by requests and is never stored"), "{err}");
}

#[test]
fn a_file_of_too_many_policies_is_refused_by_count() {
    let text = "permit(principal, action, resource);\n".repeat(bounds::MAX_POLICIES + 1);
    let err = split_policies("many.cedar", &text).unwrap_err().to_string();
    assert!(err.contains("10001 policies are more than the limit of 10000"), "{err}");
    let fine = "permit(principal, action, resource);\n".repeat(bounds::MAX_POLICIES);
    assert_eq!(split_policies("many.cedar", &fine).unwrap().len(), bounds::MAX_POLICIES);
}
