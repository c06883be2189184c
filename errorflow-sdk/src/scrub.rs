//! Replacing sensitive values with `[Filtered]` before events leave the process.

use crate::protocol::Event;

/// What sensitive values are replaced with.
pub const FILTERED: &str = "[Filtered]";

/// The first letters of [`SENSITIVE`]'s words (checked by a test).
const NEEDLE_STARTS: &[u8] = b"acmpst";

/// Sentry's default sensitive field names (its server-side scrubber's list),
/// matched as parts of a name: `db_password`, `x_auth_token`, `sessionid`.
const SENSITIVE: &[&str] = &[
    "password",
    "passwd",
    "mysql_pwd",
    "secret",
    "token",
    "authorization",
    "auth",
    "cookie",
    "api_key",
    "apikey",
    "session",
    "credential",
    "csrf",
    "private_key",
    "privatekey",
];

/// Words that contain a sensitive word without naming a secret: a match of
/// the first at the start of the second does not count. `author_id` and
/// `tokenizer_name` are kept; `authorization` is a word of its own above,
/// and `author_token` still matches `token`.
const BENIGN: &[(&str, &str)] = &[("auth", "author"), ("token", "tokeniz")];

/// Whether a field, tag, header or query parameter name suggests a secret.
///
/// The match is a case-insensitive substring match, with dashes read as
/// underscores, so `X-Api-Key`, `x_api_key` and `session_id` all match;
/// the few words of `BENIGN` (`author`, `tokenizer`) do not.
pub fn is_sensitive(name: &str) -> bool {
    // This runs for every key of every event on the calling thread, so the
    // name is normalised into a stack buffer instead of a new `String`.
    let mut buf = [0u8; 128];
    let bytes = name.as_bytes();
    if bytes.len() > buf.len() {
        let lower = name.to_ascii_lowercase().replace('-', "_");
        return contains_sensitive(lower.as_bytes());
    }
    for (dst, &b) in buf.iter_mut().zip(bytes) {
        *dst = if b == b'-' {
            b'_'
        } else {
            b.to_ascii_lowercase()
        };
    }
    contains_sensitive(&buf[..bytes.len()])
}

/// Whether a lowercase name, dashes as underscores, contains a word of
/// `SENSITIVE` that does not start a word of `BENIGN`.
pub fn contains_sensitive(normalised: &[u8]) -> bool {
    // Every needle starts with one of these letters: positions where none
    // is found are skipped without comparing the needles.
    normalised.iter().enumerate().any(|(i, b)| {
        NEEDLE_STARTS.contains(b)
            && SENSITIVE.iter().any(|needle| {
                let rest = &normalised[i..];
                rest.starts_with(needle.as_bytes())
                    && !BENIGN
                        .iter()
                        .any(|(word, benign)| word == needle && rest.starts_with(benign.as_bytes()))
            })
    })
}

/// Scrubs a query string (`a=1&token=x` → `a=1&token=[Filtered]`).
pub fn scrub_query(query: &str) -> String {
    query
        .split('&')
        .map(|pair| match pair.split_once('=') {
            Some((k, _)) if is_sensitive(k) => format!("{k}={FILTERED}"),
            _ => pair.to_string(),
        })
        .collect::<Vec<_>>()
        .join("&")
}

fn scrub_json(value: &mut serde_json::Value) {
    match value {
        serde_json::Value::Object(map) => {
            for (k, v) in map.iter_mut() {
                if is_sensitive(k) {
                    *v = serde_json::Value::String(FILTERED.into());
                } else {
                    scrub_json(v);
                }
            }
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(scrub_json),
        _ => {}
    }
}

/// Scrubs tags, extra (recursively), breadcrumb data, request headers and query.
pub fn scrub_event(event: &mut Event) {
    for (k, v) in event.tags.iter_mut() {
        if is_sensitive(k) {
            *v = FILTERED.into();
        }
    }
    for (k, v) in event.extra.iter_mut() {
        if is_sensitive(k) {
            *v = serde_json::Value::String(FILTERED.into());
        } else {
            scrub_json(v);
        }
    }
    for crumb in &mut event.breadcrumbs {
        for (k, v) in crumb.data.iter_mut() {
            if is_sensitive(k) {
                *v = serde_json::Value::String(FILTERED.into());
            }
        }
    }
    if let Some(request) = &mut event.request {
        for (k, v) in request.headers.iter_mut() {
            if is_sensitive(k) {
                *v = FILTERED.into();
            }
        }
        if let Some(q) = &request.query_string {
            request.query_string = Some(scrub_query(q));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn needle_starts_cover_every_sensitive_word() {
        for word in SENSITIVE {
            assert!(NEEDLE_STARTS.contains(&word.as_bytes()[0]), "{word}");
        }
    }

    #[test]
    fn names() {
        for n in [
            "password",
            "DB_PASSWD",
            "client_secret",
            "X-Auth-Token",
            "Cookie",
            "api_key",
            "apikey",
            "session_id",
            "credentials",
            "Authorization",
            "X-CSRF-Token",
            "csrftoken",
            "private_key",
            "MYSQL_PWD",
            "author_token",
            "oauth_state",
        ] {
            assert!(is_sensitive(n), "{n}");
        }
        for n in ["user_id", "order", "path", "author", "tokenizer_name"] {
            assert!(!is_sensitive(n), "{n}");
        }
    }

    #[test]
    fn query() {
        assert_eq!(scrub_query("a=1&token=xyz&b"), "a=1&token=[Filtered]&b");
    }
}
