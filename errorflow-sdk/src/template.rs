//! Turning a formatted message back into a template for grouping.
//!
//! `tracing` hands layers the `message` field as an opaque `&dyn Debug`
//! (a `fmt::Arguments` underneath), so a layer cannot see the format string
//! of `error!("payment for order {} failed", id)`. Instead the formatted
//! message is parameterised: numbers, hex ids and UUIDs become placeholders,
//! which gives `payment for order <int> failed` for every order id. The
//! function is idempotent (placeholders are left alone), so a message without
//! arguments is its own template.

/// Replaces variable-looking tokens with `<int>`, `<hex>` and `<uuid>`.
pub fn parameterize(message: &str) -> String {
    // Placeholders are usually longer than what they replace.
    let mut out = String::with_capacity(message.len() + 16);
    let bytes = message.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let c = bytes[i];
        if c.is_ascii_hexdigit() && (i == 0 || !is_word(bytes[i - 1])) {
            // Take the whole token made of hex digits and dashes, then decide what it is.
            let mut j = i;
            while j < bytes.len() && (bytes[j].is_ascii_hexdigit() || bytes[j] == b'-') {
                j += 1;
            }
            // A token glued to letters (`v2beta`, `abc`) is a word, not an id.
            let glued = j < bytes.len() && is_word(bytes[j]);
            let token = message[i..j].trim_end_matches('-');
            let end = i + token.len();
            // Plain numbers are left to the number branch below, which knows decimals.
            let numeric = token.bytes().all(|b| b.is_ascii_digit());
            if !numeric && (!glued || end < j) {
                if let Some(placeholder) = classify(token) {
                    out.push_str(placeholder);
                    i = end;
                    continue;
                }
            }
        }
        if c.is_ascii_digit() && (i == 0 || !bytes[i - 1].is_ascii_alphabetic()) {
            let mut j = i;
            while j < bytes.len() && (bytes[j].is_ascii_digit() || bytes[j] == b'.') {
                j += 1;
            }
            let number = message[i..j].trim_end_matches('.');
            out.push_str("<int>");
            i += number.len();
            continue;
        }
        // Neither branch applies here, nor to the bytes that follow up to
        // the next hex digit that does not follow a letter (only those can
        // start a placeholder): copy them as they are. The run ends on an
        // ASCII byte, so on a character boundary.
        let run = (i + 1..bytes.len())
            .find(|&j| bytes[j].is_ascii_hexdigit() && !bytes[j - 1].is_ascii_alphabetic())
            .unwrap_or(bytes.len());
        out.push_str(&message[i..run]);
        i = run;
    }
    out
}

fn is_word(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_'
}

fn classify(token: &str) -> Option<&'static str> {
    let t = token.as_bytes();
    let is_uuid = t.len() == 36
        && [8, 13, 18, 23].iter().all(|&p| t[p] == b'-')
        && t.iter()
            .enumerate()
            .all(|(p, b)| [8, 13, 18, 23].contains(&p) || b.is_ascii_hexdigit());
    if is_uuid {
        return Some("<uuid>");
    }
    if token.contains('-') {
        return None;
    }
    if t.iter().all(u8::is_ascii_digit) {
        return Some("<int>");
    }
    // A hex id: long enough and containing a digit, so that words like
    // `deadbeef` or `cafe` stay words only when short.
    if t.len() >= 8 && t.iter().any(u8::is_ascii_digit) {
        return Some("<hex>");
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_and_ids() {
        assert_eq!(
            parameterize("payment for order 1 failed"),
            "payment for order <int> failed"
        );
        assert_eq!(
            parameterize("payment for order 12345 failed"),
            "payment for order <int> failed"
        );
        assert_eq!(parameterize("took 1.5s"), "took <int>s");
        assert_eq!(
            parameterize("user 6f1c0b8e-3b1f-4bb1-9a57-0d7e2f7d1c11 gone"),
            "user <uuid> gone"
        );
        assert_eq!(
            parameterize("commit 3f9a2c7d1e missing"),
            "commit <hex> missing"
        );
        assert_eq!(
            parameterize("utf8 ok: été, v2beta, abc"),
            "utf8 ok: été, v2beta, abc"
        );
        assert_eq!(parameterize("ab-cd 10-20"), "ab-cd <int>-<int>");
    }

    #[test]
    fn idempotent() {
        for s in [
            "order 5 failed",
            "id 6f1c0b8e-3b1f-4bb1-9a57-0d7e2f7d1c11",
            "x 0xdeadbeef12",
            "plain",
        ] {
            let once = parameterize(s);
            assert_eq!(parameterize(&once), once);
        }
    }
}
