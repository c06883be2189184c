//! One Sentry event payload through the mapping and the pipeline.
#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "../../tests/fuzz_support/mod.rs"]
mod checks;

fuzz_target!(|data: &[u8]| {
    checks::check_sentry_event(data);
});
