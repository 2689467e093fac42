//! Written attribute types (`set<{a: long, b?: ip}>`): `AttrType::from_str` on any UTF-8
//! text must return, never panic. A type that parses writes (Display) to text that parses
//! to the same type.
#![no_main]

use std::str::FromStr;

use arbiter_engine::AttrType;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let Ok(ty) = AttrType::from_str(text) else { return };
    let written = ty.to_string();
    match AttrType::from_str(&written) {
        Ok(back) => assert_eq!(back, ty, "the written type reads back differently\n--- input\n{text}\n--- written\n{written}"),
        Err(e) => panic!("the written type does not parse: {e}\n--- input\n{text}\n--- written\n{written}"),
    }
});
