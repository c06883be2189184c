//! Stack traces sent as text, and the Sentry key parsers (DSN, auth
//! header, query string).
#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "../../tests/fuzz_support/mod.rs"]
mod checks;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    checks::check_stack_text(&text);
    checks::check_key_parsers(&text);
});
