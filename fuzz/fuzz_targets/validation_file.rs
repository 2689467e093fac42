//! Validation files (YAML): `parse_validation_file` on any UTF-8 text must return, never
//! panic; when it parses, its schema goes through `compile` too.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let Ok(file) = arbiter_schema::parse_validation_file(text) else { return };
    let _ = arbiter_schema::compile(&file.schema);
});
