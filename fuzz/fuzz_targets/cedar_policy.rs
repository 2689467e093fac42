//! Cedar policy text: `split_policies` on any UTF-8 text, then every policy it yields
//! through `CompiledPolicies::compile` against a small fixed schema. Both must return,
//! never panic. A few attributes are declared so that policies reading them type-check.
#![no_main]

use std::sync::OnceLock;

use arbiter_engine::policy::CompiledPolicies;
use arbiter_engine::{split_policies, AttributeDecls, PolicyModel};
use arbiter_schema::CompiledSchema;
use libfuzzer_sys::fuzz_target;

const SCHEMA: &str = "definition user {}
definition team {
    relation member: user | team#member
}
definition doc {
    relation viewer: user | team#member
    permission view = viewer
}";

fn schema() -> &'static CompiledSchema {
    static SCHEMA_CELL: OnceLock<CompiledSchema> = OnceLock::new();
    SCHEMA_CELL.get_or_init(|| match arbiter_schema::compile(SCHEMA) {
        Ok(s) => s,
        Err(e) => panic!("the fuzz target's schema does not compile: {e:?}"),
    })
}

/// Read from JSON (the declarations' serde form) rather than built field by field, so
/// that a field added to `AttrDecl` with a default does not break the target.
const DECLARATIONS: &str = r#"{
    "types": {
        "doc": {
            "level": {"type": "long", "required": true},
            "tags": {"type": {"set": "string"}, "required": false},
            "owner": {"type": {"record": {
                "name": {"type": "string", "required": true},
                "net": {"type": "ip", "required": false}
            }}, "required": false}
        },
        "user": {"suspended": {"type": "bool", "required": false}}
    },
    "context": {
        "ip": {"type": "ip", "required": false},
        "amount": {"type": "decimal", "required": false}
    }
}"#;

fn declarations() -> &'static AttributeDecls {
    static DECLS: OnceLock<AttributeDecls> = OnceLock::new();
    DECLS.get_or_init(|| match serde_json::from_str(DECLARATIONS) {
        Ok(d) => d,
        Err(e) => panic!("the fuzz target's attribute declarations do not read: {e}"),
    })
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let Ok(policies) = split_policies("fuzz.cedar", text) else { return };
    let model = PolicyModel { policies, declarations: declarations().clone(), ..PolicyModel::default() };
    let _ = CompiledPolicies::compile(schema(), model);
});
