//! Every input a fuzz target in `fuzz/` crashed on, kept in `fuzz/regressions/<target>/`
//! and run here on stable by `make test`, through the same calls as the target: each
//! must return (an answer or an error), never crash the process. A crasher of a target
//! without a runner here fails the test, so none is kept without being run.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "test helpers fail loudly by design")]

use std::path::PathBuf;
use std::str::FromStr;

use arbiter_engine::policy::{infer, CompiledPolicies};
use arbiter_engine::{split_policies, AttrType, PolicyModel, PolicyText};

const SCHEMA: &str = "definition user {}
definition team {
    relation member: user | team#member
}
definition doc {
    relation viewer: user | team#member
    permission view = viewer
}";

/// A Cedar text, split as a file and compiled as a model written through the API.
fn cedar_policy(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let schema = arbiter_schema::compile(SCHEMA).unwrap();
    if let Ok(policies) = split_policies("regression.cedar", text) {
        let _ = CompiledPolicies::compile(&schema, PolicyModel { policies, ..PolicyModel::default() });
    }
    let direct = PolicyModel { policies: vec![PolicyText { id: "p".into(), text: text.to_string() }], ..PolicyModel::default() };
    let _ = CompiledPolicies::compile(&schema, direct);
}

fn attribute_type(data: &[u8]) {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = AttrType::from_str(text);
    }
}

fn attribute_value(data: &[u8]) {
    if let Ok(value) = serde_json::from_slice::<serde_json::Value>(data) {
        let _ = infer(&value);
    }
}

fn schema(data: &[u8]) {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = arbiter_schema::compile(text);
    }
}

fn relationship(data: &[u8]) {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = arbiter_schema::parse_relationship(text);
    }
}

fn validation_file(data: &[u8]) {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = arbiter_schema::parse_validation_file(text);
    }
}

#[test]
fn every_kept_crasher_returns() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../fuzz/regressions");
    let mut ran = 0;
    for target in std::fs::read_dir(&root).unwrap() {
        let target = target.unwrap().path();
        let name = target.file_name().unwrap().to_string_lossy().into_owned();
        let run: fn(&[u8]) = match name.as_str() {
            "cedar_policy" => cedar_policy,
            "attribute_type" => attribute_type,
            "attribute_value" => attribute_value,
            "schema" => schema,
            "relationship" => relationship,
            "validation_file" => validation_file,
            other => panic!("fuzz/regressions/{other}: no runner for this target here"),
        };
        for input in std::fs::read_dir(&target).unwrap() {
            let input = input.unwrap().path();
            // A crash aborts the whole test binary; the name says which input it was.
            eprintln!("running {}", input.display());
            run(&std::fs::read(&input).unwrap());
            ran += 1;
        }
    }
    assert!(ran > 0, "no regression inputs found under {}", root.display());
}
