//! The schema language: `compile` on any UTF-8 text must return, never panic. A schema
//! that compiles prints to canonical text that compiles back to an equal schema, and
//! printing that gives the same text again.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let Ok(schema) = arbiter_schema::compile(text) else { return };
    let printed = arbiter_schema::print(&schema);
    let again = match arbiter_schema::compile(&printed) {
        Ok(s) => s,
        Err(e) => panic!("the printed schema does not compile: {e:?}\n--- input\n{text}\n--- printed\n{printed}"),
    };
    assert_eq!(again, schema, "compile(print(s)) != s\n--- input\n{text}\n--- printed\n{printed}");
    assert_eq!(arbiter_schema::print(&again), printed, "printing is not a fixed point\n--- input\n{text}");
});
