//! The seed's body (`POST /errors/custom`) through the pipeline.
#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "../../tests/fuzz_support/mod.rs"]
mod checks;

fuzz_target!(|data: &[u8]| {
    checks::check_custom(data);
});
