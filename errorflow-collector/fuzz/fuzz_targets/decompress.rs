//! Bounded decompression of every accepted `Content-Encoding`, and the
//! legacy base64-of-zlib body of Sentry's `/store/`. The first byte picks
//! the encoding, the next two the budget, the rest is the body.
#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "../../tests/fuzz_support/mod.rs"]
mod checks;

fuzz_target!(|data: &[u8]| {
    let [selector, lo, hi, body @ ..] = data else {
        return;
    };
    let budget = usize::from(u16::from_le_bytes([*lo, *hi]));
    match usize::from(*selector) % (checks::ENCODINGS.len() + 1) {
        i if i < checks::ENCODINGS.len() => {
            checks::check_decompress(checks::ENCODINGS[i], body, budget);
            checks::check_decompress_max(checks::ENCODINGS[i], body, budget);
        }
        _ => {
            checks::check_legacy_store(body, budget);
        }
    }
});
