#![no_main]
//! Every userdata format (YAML, cloud-config, MIME multipart, gzip) goes through `parse`:
//! it must return Ok or an error with a position, never panic or hang.
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Err(e) = bootstrapd::userdata::parse(data) {
        // Rendering the error is part of the contract (it reaches the operator).
        let _ = e.to_string();
    }
});
