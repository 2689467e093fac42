//! Attribute values as JSON: `infer` (the type of a value) and `typed_value` (plain JSON
//! into Cedar's value form, guided by a type) on any JSON document must return, never
//! panic. `typed_value` runs with the inferred type and with a few declared ones.
#![no_main]

use std::str::FromStr;
use std::sync::OnceLock;

use arbiter_engine::policy::{infer, typed_value};
use arbiter_engine::AttrType;
use libfuzzer_sys::fuzz_target;
use serde_json::Value;

fn declared() -> &'static [AttrType] {
    static TYPES: OnceLock<Vec<AttrType>> = OnceLock::new();
    TYPES.get_or_init(|| {
        ["ip", "decimal", "set<ip>", "set<decimal>", "{a: ip, b?: decimal, c: set<{d: decimal}>}", "long", "string"]
            .iter()
            .filter_map(|t| AttrType::from_str(t).ok())
            .collect()
    })
}

fuzz_target!(|data: &[u8]| {
    let Ok(value) = serde_json::from_slice::<Value>(data) else { return };
    if let Ok(ty) = infer(&value) {
        let typed = typed_value(&ty, value.clone());
        let _ = infer(&typed);
        let _ = AttrType::from_str(&ty.to_string());
    }
    for ty in declared() {
        let typed = typed_value(ty, value.clone());
        let _ = infer(&typed);
    }
});
