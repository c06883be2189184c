//! Parameterisation of messages: the variable parts of a message (ids,
//! numbers, addresses, quoted values, paths, …) are replaced with
//! placeholders so that `user 42 not found` and `user 7 not found` read the
//! same and group together.
//!
//! ```
//! use errorflow_collector::pipeline::parameterize::parameterize;
//!
//! assert_eq!(parameterize("user 42 not found"), "user <int> not found");
//! assert_eq!(
//!     parameterize("GET http://db.internal:5432/x took 150ms"),
//!     "GET <url> took <duration>",
//! );
//! ```

use std::borrow::Cow;
use std::net::Ipv6Addr;
use std::sync::LazyLock;

use regex_automata::meta;

/// Kinds of variable parts, in the order in which they are tried at one
/// position of the message. The order matters: a UUID also looks like hex
/// digits and dashes, a date like integers, an IPv4 address like floats, so
/// the more specific shapes come first.
const PATTERNS: &[(&str, &str)] = &[
    // Scheme, then anything up to whitespace or a quote.
    ("url", r#"[A-Za-z][A-Za-z0-9+.\-]*://[^\s'"<>`]+"#),
    (
        "email",
        r"[A-Za-z0-9._%+\-]+@[A-Za-z0-9\-]+(?:\.[A-Za-z0-9\-]+)+",
    ),
    (
        "uuid",
        r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}",
    ),
    (
        "datetime",
        r"[0-9]{4}-[0-9]{2}-[0-9]{2}[T ][0-9]{2}:[0-9]{2}(?::[0-9]{2}(?:[.,][0-9]+)?)?(?:Z|[+\-][0-9]{2}:?[0-9]{2})?",
    ),
    (
        "date",
        r"(?-u:\b)(?:[0-9]{4}-[0-9]{2}-[0-9]{2}|[0-9]{1,2}/[0-9]{1,2}/[0-9]{2,4}|[0-9]{1,2} (?:Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec)[a-z]* [0-9]{4})(?-u:\b)",
    ),
    (
        "time",
        r"(?-u:\b)[0-9]{1,2}:[0-9]{2}:[0-9]{2}(?:[.,][0-9]+)?(?:Z|[+\-][0-9]{2}:?[0-9]{2})?(?-u:\b)",
    ),
    (
        "ip",
        r"(?-u:\b)[0-9]{1,3}(?:\.[0-9]{1,3}){3}(?::[0-9]{1,5})?(?-u:\b)",
    ),
    // Candidates only: `placeholder_for` keeps those `Ipv6Addr` accepts and that
    // contain a digit, so that Rust paths such as `db::query` stay.
    (
        "ipv6",
        r"(?-u:\b)[0-9a-fA-F]{1,4}(?::[0-9a-fA-F]{0,4}){2,7}(?-u:\b)|::(?:[0-9a-fA-F]{1,4}(?::[0-9a-fA-F]{1,4}){0,6}(?-u:\b))?",
    ),
    // Identifiers with a short prefix, as f-strings and `format!` print
    // them: `inv_3fa2b1c0d9e8`, `cus_NffrFeUfNV2Hib`, `req-8f3a2b`,
    // `sess:a1b2c3d4`. Candidates only: `placeholder_for` keeps tokens that
    // look opaque (digits and letters, or long mixed-case letters); for the
    // others the token alone is parameterised again (`retry-123456` →
    // `retry-<int>`), so that words like `snake_case` stay.
    (
        "prefixed",
        r"(?-u:\b)[A-Za-z]{2,12}[_:\-][A-Za-z0-9]{6,}(?-u:\b)",
    ),
    // A duration glued to the end of a word (`in_12345ms`, `after1500ms`).
    ("glued_duration", r"[0-9]+(?:ns|us|ms)(?-u:\b)"),
    (
        "duration",
        r"(?-u:\b)[0-9]+(?:\.[0-9]+)?(?:ns|us|µs|ms|s|m|h|d|(?: ?(?:nanoseconds?|microseconds?|milliseconds?|seconds?|secs?|minutes?|mins?|hours?|days?)))(?-u:\b)",
    ),
    (
        "hex",
        r"(?-u:\b)(?:0[xX][0-9a-fA-F]+|[0-9a-fA-F]{8,})(?-u:\b)",
    ),
    (
        "float",
        r"(?-u:\b)[0-9]+\.[0-9]+(?:[eE][+\-]?[0-9]+)?(?-u:\b)",
    ),
    ("int", r"(?-u:\b)[0-9]+(?-u:\b)"),
    // Quoted strings. `\B` before the quote (a non-word character) asserts
    // that the quote does not follow a letter: an apostrophe inside a word
    // (`can't`, `user's`) does not open a string.
    ("str", r#"(?-u:\B)(?:'[^'\n]*'|"[^"\n]*"|`[^`\n]*`)"#),
    (
        "path",
        r#"(?-u:\B)(?:~|\.{1,2})?/[A-Za-z0-9_.@~+\-]+(?:/[A-Za-z0-9_.@~+\-]+)*/?|(?-u:\b)[A-Za-z]:\\[^\s'"<>`]*"#,
    ),
];

/// All patterns in one multi-pattern regex: one scan finds the leftmost
/// match of any kind, ties going to the earlier pattern, and the match
/// says which pattern it is without the cost of capture groups.
static PARAMETERS: LazyLock<meta::Regex> = LazyLock::new(|| {
    let patterns: Vec<&str> = PATTERNS.iter().map(|(_, pattern)| *pattern).collect();
    meta::Regex::new_many(&patterns).expect("parameter patterns compile")
});

/// A pass may uncover new matches in its own output (a replaced number no
/// longer glues a quote to a word, for example), so [`parameterize`] repeats
/// passes until nothing changes. In practice the second pass confirms the
/// first; the cap only guards against a pattern bug looping forever.
const MAX_PASSES: usize = 4;

/// Replaces the variable parts of the first two lines of `msg` with
/// placeholders (`<int>`, `<uuid>`, `<str>`, …). Later lines are dropped: they
/// are usually a stack trace or a dump that would split groups needlessly.
///
/// The result is idempotent: `parameterize(&parameterize(m)) == parameterize(m)`.
pub fn parameterize(msg: &str) -> String {
    let head = first_two_lines(msg);
    let mut current: Cow<'_, str> = Cow::Borrowed(head.as_ref());
    for _ in 0..MAX_PASSES {
        match pass(&current) {
            Cow::Borrowed(_) => break,
            Cow::Owned(next) => current = Cow::Owned(next),
        }
    }
    current.into_owned()
}

/// The first two lines, each without trailing whitespace (so that `\r\n`
/// endings and trailing blanks do not split groups).
fn first_two_lines(msg: &str) -> Cow<'_, str> {
    let mut lines = msg.split('\n');
    let first = lines.next().unwrap_or("").trim_end();
    match lines.next() {
        None => Cow::Borrowed(first),
        Some(second) => {
            let second = second.trim_end();
            if second.is_empty() {
                Cow::Borrowed(first)
            } else {
                Cow::Owned(format!("{first}\n{second}"))
            }
        }
    }
}

/// One left-to-right replacement pass. Returns `Borrowed` when nothing was
/// replaced, so callers can stop without comparing strings.
fn pass(text: &str) -> Cow<'_, str> {
    let mut out: Option<String> = None;
    let mut last = 0;
    for m in PARAMETERS.find_iter(text) {
        let (kind, _) = PATTERNS[m.pattern().as_usize()];
        let Some(placeholder) = placeholder_for(kind, &text[m.range()]) else {
            if kind == "prefixed" {
                // Not an identifier: its token may still hold a number.
                let found = &text[m.range()];
                let cut = found.find(['_', ':', '-']).map_or(0, |i| i + 1);
                if let Cow::Owned(token) = pass(&found[cut..]) {
                    let buf = out.get_or_insert_with(|| String::with_capacity(text.len()));
                    buf.push_str(&text[last..m.start() + cut]);
                    buf.push_str(&token);
                    last = m.end();
                }
            }
            continue;
        };
        let buf = out.get_or_insert_with(|| String::with_capacity(text.len()));
        buf.push_str(&text[last..m.start()]);
        buf.push_str(placeholder);
        last = m.end();
    }
    match out {
        None => Cow::Borrowed(text),
        Some(mut buf) => {
            buf.push_str(&text[last..]);
            Cow::Owned(buf)
        }
    }
}

/// Which placeholder replaces this match, or `None` to keep the text.
fn placeholder_for(kind: &str, s: &str) -> Option<&'static str> {
    match kind {
        "url" => Some("<url>"),
        "email" => Some("<email>"),
        "uuid" => Some("<uuid>"),
        "datetime" => Some("<datetime>"),
        "date" => Some("<date>"),
        "time" => Some("<time>"),
        "ip" => Some("<ip>"),
        "ipv6" => {
            let valid = s.bytes().any(|b| b.is_ascii_digit()) && s.parse::<Ipv6Addr>().is_ok();
            valid.then_some("<ip>")
        }
        "duration" | "glued_duration" => Some("<duration>"),
        "prefixed" => {
            let token = s.split(['_', ':', '-']).nth(1).unwrap_or("");
            let digits = token.bytes().filter(u8::is_ascii_digit).count();
            let letters = token.len() - digits;
            let mixed_case = token.bytes().any(|b| b.is_ascii_uppercase())
                && token.bytes().any(|b| b.is_ascii_lowercase());
            let opaque = letters > 0
                && ((digits >= 1 && token.len() >= 8)
                    || (digits >= 2 && token.len() >= 6)
                    || (mixed_case && token.len() >= 12));
            opaque.then_some("<id>")
        }
        "hex" => {
            if s.starts_with("0x") || s.starts_with("0X") {
                Some("<hex>")
            } else if s.bytes().all(|b| b.is_ascii_digit()) {
                Some("<int>")
            } else if s.bytes().any(|b| b.is_ascii_digit()) {
                Some("<hex>")
            } else {
                // Only letters a-f (`deadbeef`, `defaced`): more likely a word.
                None
            }
        }
        "float" => Some("<float>"),
        "int" => Some("<int>"),
        "str" => Some("<str>"),
        // The pattern's `\B` already refuses a slash inside a word (`and/or`).
        "path" => Some("<path>"),
        _ => None,
    }
}

/// The template of a URL path: each segment is parameterised like a
/// message ([`parameterize`]), so that `/orders/17/checkout` and
/// `/orders/18/checkout` read the same, and a segment that still holds a
/// digit and is 16 or more characters long (an opaque token or a slug
/// with an id) becomes `<id>`. Segments without a digit (`users`, `me`)
/// are kept as they are, and so are short names such as `v2` or `2fa`.
///
/// ```
/// use errorflow_collector::pipeline::parameterize::path_template;
///
/// assert_eq!(path_template("/orders/17/checkout"), "/orders/<int>/checkout");
/// assert_eq!(path_template("/v2/users/me"), "/v2/users/me");
/// ```
///
/// Idempotent, like [`parameterize`].
pub fn path_template(path: &str) -> String {
    let mut out = String::with_capacity(path.len());
    for (i, segment) in path.split('/').enumerate() {
        if i > 0 {
            out.push('/');
        }
        if !segment.bytes().any(|b| b.is_ascii_digit()) {
            out.push_str(segment);
            continue;
        }
        let template = parameterize(segment);
        if template.bytes().any(|b| b.is_ascii_digit()) && template.chars().count() >= 16 {
            out.push_str("<id>");
        } else {
            out.push_str(&template);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[track_caller]
    fn check(input: &str, expected: &str) {
        assert_eq!(parameterize(input), expected, "input: {input:?}");
    }

    #[test]
    fn numbers() {
        check("user 42 not found", "user <int> not found");
        check("ratio 0.75 too high", "ratio <float> too high");
        check("got -3 items", "got -<int> items");
        check("user42 stays", "user42 stays");
        check("version 1.2.3", "version <float>.<int>");
    }

    #[test]
    fn identifiers() {
        check(
            "Key (id)=(7f3a9c2e-1b4d-4e8f-9a0b-123456789abc) already exists",
            "Key (id)=(<uuid>) already exists",
        );
        check("commit 3f2a1b9c8d7e6f5a failed", "commit <hex> failed");
        check("bad pointer 0x7ffd5a3c", "bad pointer <hex>");
        check("order 12345678 missing", "order <int> missing");
        check("deadbeef is a word here", "deadbeef is a word here");
        // Prefixed identifiers, as f-strings and format! write them.
        check("invoice inv_3fa2b1c0d9e8 not paid", "invoice <id> not paid");
        check(
            "payout for acct_1Nf3aB2cD4eF failed",
            "payout for <id> failed",
        );
        check(
            "customer cus_NffrFeUfNV2Hib has no card",
            "customer <id> has no card",
        );
        check("request req-8f3a2b timed out", "request <id> timed out");
        check("session sess:a1b2c3d4 expired", "session <id> expired");
        check(
            "snake_case and kebab-case stay",
            "snake_case and kebab-case stay",
        );
        check("db::query_builder failed", "db::query_builder failed");
        check("retry-123456 failed", "retry-<int> failed");
        check("customer cus_NffrFeUfNVHibQ paid", "customer <id> paid");
        check(
            "see user_profile and order_items",
            "see user_profile and order_items",
        );
    }

    #[test]
    fn glued_durations() {
        check("gave up after 12345ms", "gave up after <duration>");
        check("gave up after12345ms", "gave up after<duration>");
        check(
            "timeout_in_1500ms exceeded",
            "timeout_in_<duration> exceeded",
        );
        check("took 3s", "took <duration>");
    }

    #[test]
    fn addresses() {
        check("mail to bob@example.com bounced", "mail to <email> bounced");
        check(
            "connect to 10.0.0.12:5432 refused",
            "connect to <ip> refused",
        );
        check("peer 2001:db8::1 reset", "peer <ip> reset");
        check("peer ::1 reset", "peer <ip> reset");
        check(
            "GET https://api.example.com/v1/users?id=3 failed",
            "GET <url> failed",
        );
        check("db::query failed", "db::query failed");
        check("std::io::Error", "std::io::Error");
    }

    #[test]
    fn times() {
        check(
            "at 2026-11-27T18:40:12.123Z expired",
            "at <datetime> expired",
        );
        check(
            "at 2026-11-27 18:40:12+01:00 expired",
            "at <datetime> expired",
        );
        check("due 2026-11-27", "due <date>");
        check("due 27/11/2026", "due <date>");
        check("due 5 November 2026", "due <date>");
        check("at 18:40:12 expired", "at <time> expired");
        check("took 150ms", "took <duration>");
        check("took 2.5s", "took <duration>");
        check("retry in 30 seconds", "retry in <duration>");
    }

    #[test]
    fn strings_and_paths() {
        check("KeyError: 'user_id'", "KeyError: <str>");
        check(r#"column "email" is null"#, "column <str> is null");
        check("can't find user's file", "can't find user's file");
        check(
            "Cannot read properties of undefined (reading 'x')",
            "Cannot read properties of undefined (reading <str>)",
        );
        check("open /var/lib/app/data.db: denied", "open <path>: denied");
        check(r"open C:\Users\bob\a.txt denied", "open <path> denied");
        check("read and/or write", "read and/or write");
    }

    #[test]
    fn only_two_lines_count() {
        check("first 1\nsecond 2\nthird 3", "first <int>\nsecond <int>");
        check("first 1\r\nsecond 2\r\n", "first <int>\nsecond <int>");
    }

    #[test]
    fn placeholders_are_stable() {
        let once = parameterize("id 5 at 10.0.0.1 in 'x'");
        assert_eq!(once, "id <int> at <ip> in <str>");
        assert_eq!(parameterize(&once), once);
    }

    #[test]
    fn path_templates() {
        let cases = [
            ("/orders/17/checkout", "/orders/<int>/checkout"),
            ("/orders/17/checkout/", "/orders/<int>/checkout/"),
            ("/v2/users/me", "/v2/users/me"),
            ("/2fa/setup", "/2fa/setup"),
            ("/reports/2026-11-29", "/reports/<date>"),
            ("/orders/order-12345-eu", "/orders/order-<int>-eu"),
            (
                "/items/7c9e6679-7425-40de-944b-e07fc1f90ae7",
                "/items/<uuid>",
            ),
            ("/blobs/deadbeef42", "/blobs/<hex>"),
            ("/blobs/deadbeef", "/blobs/deadbeef"),
            ("/share/aZ81kQ0pLm7xYt3R", "/share/<id>"),
            ("/posts/how-to-cook-rice", "/posts/how-to-cook-rice"),
            ("", ""),
            ("/", "/"),
            ("/users/{id}", "/users/{id}"),
        ];
        for (path, expected) in cases {
            assert_eq!(path_template(path), expected, "path: {path:?}");
        }
    }

    proptest! {
        #[test]
        fn idempotent(msg in "\\PC{0,80}") {
            let once = parameterize(&msg);
            prop_assert_eq!(parameterize(&once), once);
        }

        #[test]
        fn idempotent_on_message_like_text(
            msg in "([a-z]{1,6}|[0-9]{1,9}|[0-9a-f]{8,12}|[ '\"/:.@=()\\-]|\\n|0x[0-9a-f]{2,6}|[0-9]{1,3}\\.[0-9]{1,3}){0,20}"
        ) {
            let once = parameterize(&msg);
            prop_assert_eq!(parameterize(&once), once);
        }

        #[test]
        fn path_template_idempotent(path in "(/([a-z]{1,8}|[0-9]{1,6}|[0-9a-f]{8,20}|[A-Za-z0-9]{16,20}|[0-9.\\-]{1,10}))*/?") {
            let once = path_template(&path);
            prop_assert_eq!(path_template(&once), once.clone());
            prop_assert_eq!(once.matches('/').count(), path.matches('/').count());
        }
    }
}
