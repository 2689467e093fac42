//! AuthZEN request bodies: the server's JSON decoder (`server/src/authzen/wire.rs`,
//! which needs only serde_json, included here so the fuzz build does not compile the
//! server and RocksDB). Every entry point on any body must return, never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

#[allow(dead_code)]
#[path = "../../server/src/authzen/wire.rs"]
mod wire;

fuzz_target!(|data: &[u8]| {
    let Ok(body) = wire::parse_body(data) else { return };
    let _ = wire::evaluation(&body);
    let _ = wire::evaluations(&body, 1000);
    let _ = wire::subject_search(&body);
    let _ = wire::resource_search(&body);
    let _ = wire::action_search(&body);
});
