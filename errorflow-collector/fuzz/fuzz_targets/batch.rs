//! The native batch body (`POST /api/v1/events`) through the pipeline.
#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "../../tests/fuzz_support/mod.rs"]
mod checks;

fuzz_target!(|data: &[u8]| {
    checks::check_batch(data, &errorflow_collector::pipeline::Limits::default());
});
