//! Relationship text: `parse_relationship` on any UTF-8 line must return, never panic.
//! A relationship that parses writes (Display) to text that parses back to it.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(line) = std::str::from_utf8(data) else { return };
    let Ok(rel) = arbiter_schema::parse_relationship(line) else { return };
    let written = rel.to_string();
    match arbiter_schema::parse_relationship(&written) {
        Ok(back) => assert_eq!(back, rel, "the written relationship reads back differently\n--- input\n{line}\n--- written\n{written}"),
        Err(e) => panic!("the written relationship does not parse: {e}\n--- input\n{line}\n--- written\n{written}"),
    }
});
