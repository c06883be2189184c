//! Sentry envelope framing, then each event item through the mapping and
//! the pipeline.
#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "../../tests/fuzz_support/mod.rs"]
mod checks;

fuzz_target!(|data: &[u8]| {
    checks::check_envelope(data, 64 * 1024);
});
