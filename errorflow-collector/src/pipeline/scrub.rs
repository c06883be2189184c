//! Server-side scrubbing: secrets in an event are replaced with
//! `[Filtered]` before it is grouped, stored or shown to a model, whatever
//! SDK sent it and whether or not that SDK scrubbed.
//!
//! Two kinds of rule, as Sentry's defaults:
//! - **Names.** A tag, header, query parameter, `extra`/`contexts`/breadcrumb
//!   data key, or `key=value` / `"key": value` pair in text whose name
//!   contains a sensitive word ([`errorflow_sdk::scrub::is_sensitive`]'s
//!   list, shared with the SDK, plus a project's own names) has its whole
//!   value replaced.
//! - **Values.** In every scrubbed text (messages, exception values, tag and
//!   header values, strings anywhere in `extra` and breadcrumbs, the user's
//!   email and name, the request's URL and query): card numbers (13–19
//!   digits, Luhn-checked, starting with 2–6 as every card network's do),
//!   IBANs (check digits validated), the credentials after `Bearer`, an
//!   `Authorization:`/`Cookie:` line, a URL's password
//!   (`https://user:PASSWORD@host`) and PEM private keys. With
//!   [`Rules::ip`], IPv4 and IPv6 addresses too, and the user's and
//!   request's address and forwarding headers are removed.
//!
//! Kept on purpose: the user's id (what "users affected" counts), frames
//! (code, not data: the SDK's frame variables are not stored at all),
//! fingerprints, and numbers that only look like cards (a 16-digit order
//! number failing the Luhn check). Scrubbing runs after normalisation
//! (bounded text, so its cost per event is bounded) and before
//! fingerprinting, so titles never show a secret and events whose grouped
//! text differed only by a secret group together.
//!
//! The scan is one pass per string over its bytes, dispatching on the few
//! bytes a rule can start at; no regular expression, and no allocation for
//! a string with nothing to replace.

use std::net::{Ipv4Addr, Ipv6Addr};
use std::sync::Arc;

use errorflow_sdk::protocol::{Breadcrumb, Event, Request, User};
use errorflow_sdk::scrub::{contains_sensitive, FILTERED};
use serde_json::Value;

/// What to scrub. [`Rules::default`] is Sentry's default: on, IP addresses
/// kept, no project names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rules {
    /// Off (`--scrub off`): events are stored as sent.
    pub enabled: bool,
    /// `--scrub-ip`: remove IP addresses as well.
    pub ip: bool,
    /// A project's own sensitive names, normalised as [`normalise_name`] does.
    fields: Arc<[String]>,
}

impl Default for Rules {
    fn default() -> Self {
        Rules {
            enabled: true,
            ip: false,
            fields: Arc::from(Vec::new()),
        }
    }
}

/// Headers that carry the client's address, removed with [`Rules::ip`]
/// (normalised: lowercase, underscores).
const IP_HEADERS: &[&str] = &[
    "x_forwarded_for",
    "x_real_ip",
    "forwarded",
    "true_client_ip",
    "cf_connecting_ip",
    "x_client_ip",
    "x_cluster_client_ip",
    "fastly_client_ip",
];

/// Header names whose whole line is a credential in text (`Authorization:
/// Basic …` in a logged request).
const CREDENTIAL_LINES: &[&str] = &[
    "authorization",
    "proxy_authorization",
    "cookie",
    "set_cookie",
];

/// The longest name the scanner looks back for before `=` or `:`.
const MAX_NAME: usize = 64;

/// A project's additional names: at most this many…
pub const MAX_FIELDS: usize = 50;
/// …of at most this many characters each.
pub const MAX_FIELD_CHARS: usize = 64;

impl Rules {
    /// The collector's rules (`--scrub`, `--scrub-ip`), without project names.
    pub fn new(enabled: bool, ip: bool) -> Rules {
        Rules {
            enabled,
            ip,
            ..Rules::default()
        }
    }

    /// The project's own names these rules add to the defaults.
    pub fn fields(&self) -> &[String] {
        &self.fields
    }

    /// No scrubbing at all.
    pub fn off() -> Rules {
        Rules {
            enabled: false,
            ..Rules::default()
        }
    }

    /// These rules with a project's own sensitive names added (matched as
    /// the default names are: case-insensitive, as parts of a name).
    pub fn with_fields(mut self, names: &[String]) -> Rules {
        self.fields = names
            .iter()
            .map(|n| normalise_name(n))
            .filter(|n| !n.is_empty())
            .collect();
        self
    }

    /// Whether a key names a secret.
    pub fn sensitive_name(&self, name: &str) -> bool {
        with_normalised(name, |n| {
            contains_sensitive(n)
                || self
                    .fields
                    .iter()
                    .any(|f| n.windows(f.len()).any(|w| w == f.as_bytes()))
        })
    }

    fn ip_header(&self, name: &str) -> bool {
        self.ip && with_normalised(name, |n| IP_HEADERS.iter().any(|h| n == h.as_bytes()))
    }
}

/// A name as the rules compare it: ASCII lowercase, dashes as underscores.
pub fn normalise_name(name: &str) -> String {
    name.trim().to_ascii_lowercase().replace('-', "_")
}

/// Calls `f` with `name` normalised, in a stack buffer when it fits.
fn with_normalised<T>(name: &str, f: impl FnOnce(&[u8]) -> T) -> T {
    let bytes = name.as_bytes();
    let mut buf = [0u8; 128];
    if bytes.len() > buf.len() {
        return f(normalise_name(name).as_bytes());
    }
    for (dst, &b) in buf.iter_mut().zip(bytes) {
        *dst = if b == b'-' {
            b'_'
        } else {
            b.to_ascii_lowercase()
        };
    }
    f(&buf[..bytes.len()])
}

/// Scrubs `event` in place by `rules` (nothing when they are off).
pub fn scrub(event: &mut Event, rules: &Rules) {
    if !rules.enabled {
        return;
    }
    let s = Scanner { rules };
    s.opt_text(&mut event.message);
    s.opt_text(&mut event.message_template);
    for e in &mut event.exception {
        s.text(&mut e.value);
    }
    for (k, v) in event.tags.iter_mut() {
        if rules.sensitive_name(k) {
            filter(v);
        } else {
            s.text(v);
        }
    }
    for (k, v) in event.extra.iter_mut() {
        s.entry(k, v);
    }
    if let Some(request) = &mut event.request {
        s.request(request);
    }
    if let Some(user) = &mut event.user {
        s.user(user);
    }
    for crumb in &mut event.breadcrumbs {
        s.breadcrumb(crumb);
    }
}

fn filter(v: &mut String) {
    if v != FILTERED {
        FILTERED.clone_into(v);
    }
}

struct Scanner<'a> {
    rules: &'a Rules,
}

impl Scanner<'_> {
    fn request(&self, r: &mut Request) {
        self.opt_text(&mut r.url);
        self.opt_text(&mut r.query_string);
        for (k, v) in r.headers.iter_mut() {
            if self.rules.sensitive_name(k) || self.rules.ip_header(k) {
                filter(v);
            } else {
                self.text(v);
            }
        }
        if self.rules.ip {
            r.client_ip = None;
        }
    }

    fn user(&self, u: &mut User) {
        // The id is kept: it is what counts the users an incident affects.
        self.opt_text(&mut u.email);
        self.opt_text(&mut u.username);
        if self.rules.ip {
            u.ip_address = None;
        }
    }

    fn breadcrumb(&self, b: &mut Breadcrumb) {
        self.opt_text(&mut b.message);
        for (k, v) in b.data.iter_mut() {
            self.entry(k, v);
        }
    }

    /// One key and its value of a JSON object.
    fn entry(&self, key: &str, v: &mut Value) {
        if !v.is_null() && (self.rules.sensitive_name(key) || self.rules.ip_header(key)) {
            *v = Value::String(FILTERED.to_owned());
        } else {
            self.json(v);
        }
    }

    fn json(&self, v: &mut Value) {
        match v {
            Value::Object(map) => {
                for (k, v) in map.iter_mut() {
                    self.entry(k, v);
                }
            }
            Value::Array(items) => items.iter_mut().for_each(|v| self.json(v)),
            Value::String(s) => self.text(s),
            // A card number sent as a JSON number.
            Value::Number(n) => {
                if let Some(n) = n.as_u64().filter(|&n| n >= 1_000_000_000_000) {
                    let digits = n.to_string();
                    if card_digits_ok(digits.as_bytes()) {
                        *v = Value::String(FILTERED.to_owned());
                    }
                }
            }
            Value::Null | Value::Bool(_) => {}
        }
    }

    fn opt_text(&self, s: &mut Option<String>) {
        if let Some(s) = s {
            self.text(s);
        }
    }

    /// Replaces every secret found in `s`.
    fn text(&self, s: &mut String) {
        let ranges = self.find(s.as_bytes());
        if ranges.is_empty() {
            return;
        }
        let mut out = String::with_capacity(s.len());
        let mut at = 0;
        for (start, end) in ranges {
            out.push_str(&s[at..start]);
            out.push_str(FILTERED);
            at = end;
        }
        out.push_str(&s[at..]);
        *s = out;
    }

    /// The byte ranges of `b` to replace, in order, not overlapping, each
    /// on character boundaries (every rule starts and ends at ASCII bytes
    /// or at the string's ends).
    fn find(&self, b: &[u8]) -> Vec<(usize, usize)> {
        let mut ranges: Vec<(usize, usize)> = Vec::new();
        let mut i = 0;
        while i < b.len() {
            let c = b[i];
            let ip = self.rules.ip;
            let found = match c {
                b'0'..=b'9' if word_start(b, i) => card(b, i)
                    .or_else(|| ip.then(|| ipv4(b, i)).flatten())
                    .or_else(|| ip.then(|| ipv6(b, i)).flatten()),
                b'A'..=b'Z' if word_start(b, i) => iban(b, i)
                    .or_else(|| (c == b'B').then(|| bearer(b, i)).flatten())
                    .or_else(|| (ip && c <= b'F').then(|| ipv6(b, i)).flatten()),
                b'a'..=b'z' if word_start(b, i) => (c == b'b')
                    .then(|| bearer(b, i))
                    .flatten()
                    .or_else(|| (ip && c <= b'f').then(|| ipv6(b, i)).flatten()),
                b'-' => pem(b, i),
                b'=' => self.key_value(b, i),
                b':' => url_password(b, i)
                    .or_else(|| self.colon_value(b, i))
                    .or_else(|| (ip && word_start(b, i)).then(|| ipv6(b, i)).flatten()),
                _ => None,
            };
            match found {
                Some((start, end)) if end > start => {
                    // A rule may look back (a value after its name): keep
                    // the ranges ordered and apart.
                    match ranges.last_mut() {
                        Some(last) if start < last.1 => last.1 = last.1.max(end),
                        _ => ranges.push((start, end)),
                    }
                    i = end.max(i + 1);
                }
                _ => i += 1,
            }
        }
        ranges
    }

    /// `name=value` with a sensitive name: the value.
    fn key_value(&self, b: &[u8], eq: usize) -> Option<(usize, usize)> {
        let name = name_before(b, eq)?;
        if !self.rules.sensitive_name(name) {
            return None;
        }
        value_after(b, eq + 1)
    }

    /// `"name": value` (JSON in text) with a sensitive name: the value;
    /// `Authorization: …` and `Cookie: …` lines: the rest of the line.
    fn colon_value(&self, b: &[u8], colon: usize) -> Option<(usize, usize)> {
        let mut end = colon;
        while end > 0 && b[end - 1] == b' ' {
            end -= 1;
        }
        if end > 0 && b[end - 1] == b'"' {
            let close = end - 1;
            let open = b[..close].iter().rposition(|&c| c == b'"')?;
            if close - open > MAX_NAME + 1 {
                return None;
            }
            let name = std::str::from_utf8(&b[open + 1..close]).ok()?;
            if !self.rules.sensitive_name(name) {
                return None;
            }
            return value_after(b, colon + 1);
        }
        let name = name_before(b, colon)?;
        let credential_line =
            with_normalised(name, |n| CREDENTIAL_LINES.iter().any(|h| n == h.as_bytes()));
        if !credential_line || b.get(colon + 1) != Some(&b' ') {
            return None;
        }
        let start = skip_spaces(b, colon + 1);
        let end = b[start..]
            .iter()
            .position(|&c| c == b'\n' || c == b'\r')
            .map_or(b.len(), |p| start + p);
        (end > start && &b[start..end] != FILTERED.as_bytes()).then_some((start, end))
    }
}

/// Whether `b[i]` starts a word (nothing alphanumeric just before it).
fn word_start(b: &[u8], i: usize) -> bool {
    i == 0 || !(b[i - 1].is_ascii_alphanumeric() || b[i - 1] == b'_')
}

fn word_end(b: &[u8], i: usize) -> bool {
    b.get(i)
        .is_none_or(|c| !(c.is_ascii_alphanumeric() || *c == b'_'))
}

fn skip_spaces(b: &[u8], mut i: usize) -> usize {
    while b.get(i).is_some_and(|&c| c == b' ' || c == b'\t') {
        i += 1;
    }
    i
}

fn is_name_byte(c: u8) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, b'_' | b'-' | b'.')
}

/// The name just before `b[at]` (letters, digits, `_`, `-`, `.`).
fn name_before(b: &[u8], at: usize) -> Option<&str> {
    let start = b[..at]
        .iter()
        .rposition(|&c| !is_name_byte(c))
        .map_or(0, |p| p + 1);
    if start == at || at - start > MAX_NAME {
        return None;
    }
    std::str::from_utf8(&b[start..at]).ok()
}

/// The value starting at `b[start]` (after optional spaces): a quoted
/// string's contents, or everything up to a delimiter.
fn value_after(b: &[u8], start: usize) -> Option<(usize, usize)> {
    let start = skip_spaces(b, start);
    if b[start..].starts_with(FILTERED.as_bytes()) {
        return None;
    }
    let quote = *b.get(start)?;
    let (start, end) = if quote == b'"' || quote == b'\'' {
        let mut i = start + 1;
        while i < b.len() && b[i] != quote {
            i += if b[i] == b'\\' { 2 } else { 1 };
        }
        (start + 1, i.min(b.len()))
    } else {
        let end = b[start..]
            .iter()
            .position(|&c| {
                c.is_ascii_whitespace()
                    || matches!(
                        c,
                        b'&' | b',' | b';' | b')' | b']' | b'}' | b'"' | b'\'' | b'<' | b'>'
                    )
            })
            .map_or(b.len(), |p| start + p);
        (start, end)
    };
    (end > start && &b[start..end] != FILTERED.as_bytes()).then_some((start, end))
}

/// `Bearer TOKEN` (either case): the token, if it looks like one (8 or more
/// characters of a token's alphabet, not all letters).
fn bearer(b: &[u8], i: usize) -> Option<(usize, usize)> {
    let word = b.get(i..i + 6)?;
    if !word.eq_ignore_ascii_case(b"bearer") || !matches!(b.get(i + 6), Some(b' ' | b'\t')) {
        return None;
    }
    let start = skip_spaces(b, i + 6);
    let len = b[start..]
        .iter()
        .position(|&c| !(c.is_ascii_alphanumeric() || b"-._~+/=".contains(&c)))
        .unwrap_or(b.len() - start);
    let token = &b[start..start + len];
    (len >= 8 && token != FILTERED.as_bytes() && !token.iter().all(u8::is_ascii_alphabetic))
        .then_some((start, start + len))
}

/// A PEM private key block from `-----BEGIN … PRIVATE KEY-----` to its
/// `-----END …-----` line (or the end of the text, when cut short).
fn pem(b: &[u8], i: usize) -> Option<(usize, usize)> {
    const BEGIN: &[u8] = b"-----BEGIN ";
    if !b[i..].starts_with(BEGIN) {
        return None;
    }
    let label_end = find(&b[i + BEGIN.len()..], b"-----")? + i + BEGIN.len();
    if !b[i + BEGIN.len()..label_end].ends_with(b"PRIVATE KEY") {
        return None;
    }
    let body = label_end + 5;
    let end = match find(&b[body..], b"-----END ") {
        Some(p) => {
            let after = body + p + 9;
            find(&b[after..], b"-----").map_or(b.len(), |q| after + q + 5)
        }
        None => b.len(),
    };
    Some((i, end))
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// `https://user:PASSWORD@host`: the password.
fn url_password(b: &[u8], colon: usize) -> Option<(usize, usize)> {
    if !b[colon..].starts_with(b"://") {
        return None;
    }
    let start = colon + 3;
    let len = b[start..]
        .iter()
        .position(|&c| matches!(c, b'/' | b'?' | b'#' | b'@') || c.is_ascii_whitespace())?;
    let at = start + len;
    if b[at] != b'@' {
        return None;
    }
    let sep = b[start..at].iter().position(|&c| c == b':')? + start;
    (at > sep + 1 && &b[sep + 1..at] != FILTERED.as_bytes()).then_some((sep + 1, at))
}

/// A card number at `b[i]`: 13–19 digits, in groups separated by single
/// spaces or dashes, with a valid Luhn check digit and a first digit of
/// 2–6 (the card networks' ranges).
fn card(b: &[u8], i: usize) -> Option<(usize, usize)> {
    if !(b'2'..=b'6').contains(&b[i]) {
        return None;
    }
    let mut digits = [0u8; 19];
    let mut count = 0;
    // Where each group of digits ends: (byte position after it, digits so far).
    let mut ends: [(usize, usize); 19] = [(0, 0); 19];
    let mut groups = 0;
    let mut j = i;
    'groups: loop {
        while j < b.len() && b[j].is_ascii_digit() {
            if count == digits.len() {
                // Too long for a card: only the groups before this one may be.
                break 'groups;
            }
            digits[count] = b[j];
            count += 1;
            j += 1;
        }
        ends[groups] = (j, count);
        groups += 1;
        let separated =
            matches!(b.get(j), Some(b' ' | b'-')) && b.get(j + 1).is_some_and(u8::is_ascii_digit);
        if !separated || groups == ends.len() {
            break;
        }
        j += 1;
    }
    // The longest run of whole groups that is a card number: a card
    // followed by a year (`… 1111 2027`) is still found.
    ends[..groups].iter().rev().find_map(|&(end, n)| {
        ((13..=19).contains(&n) && word_end(b, end) && luhn(&digits[..n])).then_some((i, end))
    })
}

fn card_digits_ok(digits: &[u8]) -> bool {
    (13..=19).contains(&digits.len()) && (b'2'..=b'6').contains(&digits[0]) && luhn(digits)
}

fn luhn(digits: &[u8]) -> bool {
    let sum: u32 = digits
        .iter()
        .rev()
        .enumerate()
        .map(|(k, d)| {
            let d = u32::from(d - b'0');
            if k % 2 == 1 {
                let twice = d * 2;
                if twice > 9 {
                    twice - 9
                } else {
                    twice
                }
            } else {
                d
            }
        })
        .sum();
    sum % 10 == 0
}

/// An IBAN at `b[i]`: a country code, two check digits and 11–30 letters or
/// digits, optionally in groups separated by single spaces, whose check
/// digits are right (ISO 13616's mod-97 check).
fn iban(b: &[u8], i: usize) -> Option<(usize, usize)> {
    let head = b.get(i..i + 4)?;
    if !(head[0].is_ascii_uppercase()
        && head[1].is_ascii_uppercase()
        && head[2].is_ascii_digit()
        && head[3].is_ascii_digit())
    {
        return None;
    }
    let mut chars = [0u8; 34];
    let mut count = 0;
    let mut ends: [(usize, usize); 34] = [(0, 0); 34];
    let mut groups = 0;
    let mut j = i;
    let alnum = |c: &u8| c.is_ascii_uppercase() || c.is_ascii_digit();
    loop {
        while j < b.len() && alnum(&b[j]) {
            if count == chars.len() {
                break;
            }
            chars[count] = b[j];
            count += 1;
            j += 1;
        }
        ends[groups] = (j, count);
        groups += 1;
        let separated = b.get(j) == Some(&b' ') && b.get(j + 1).is_some_and(alnum);
        if !separated || count == chars.len() || groups == ends.len() {
            break;
        }
        j += 1;
    }
    ends[..groups].iter().rev().find_map(|&(end, n)| {
        ((15..=34).contains(&n) && word_end(b, end) && mod97(&chars[..n]) == 1).then_some((i, end))
    })
}

fn mod97(chars: &[u8]) -> u32 {
    let (head, rest) = chars.split_at(4);
    rest.iter().chain(head).fold(0u32, |r, &c| {
        if c.is_ascii_digit() {
            (r * 10 + u32::from(c - b'0')) % 97
        } else {
            (r * 100 + u32::from(c - b'A') + 10) % 97
        }
    })
}

/// A dotted IPv4 address at `b[i]`.
fn ipv4(b: &[u8], i: usize) -> Option<(usize, usize)> {
    let len = b[i..]
        .iter()
        .take(16)
        .position(|&c| !(c.is_ascii_digit() || c == b'.'))
        .unwrap_or((b.len() - i).min(16));
    let mut end = i + len;
    // A sentence's full stop after the address.
    if end > i && b[end - 1] == b'.' {
        end -= 1;
    }
    let text = std::str::from_utf8(&b[i..end]).ok()?;
    (word_end(b, end) && text.parse::<Ipv4Addr>().is_ok()).then_some((i, end))
}

/// An IPv6 address at `b[i]` (at least two colons and a digit, so that
/// `std::io` or `a::b` are not read as one).
fn ipv6(b: &[u8], i: usize) -> Option<(usize, usize)> {
    let len = b[i..]
        .iter()
        .take(46)
        .position(|&c| !(c.is_ascii_hexdigit() || c == b':' || c == b'.'))
        .unwrap_or((b.len() - i).min(46));
    let candidate = &b[i..i + len];
    if candidate.iter().filter(|&&c| c == b':').count() < 2
        || !candidate.iter().any(u8::is_ascii_digit)
    {
        return None;
    }
    let mut end = i + len;
    if b[end - 1] == b'.' {
        end -= 1;
    }
    let text = std::str::from_utf8(&b[i..end]).ok()?;
    (word_end(b, end) && text.parse::<Ipv6Addr>().is_ok()).then_some((i, end))
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use errorflow_sdk::protocol::{Exception, Level};
    use serde_json::json;
    use uuid::Uuid;

    use super::*;

    fn text(rules: &Rules, s: &str) -> String {
        let mut s = s.to_owned();
        Scanner { rules }.text(&mut s);
        s
    }

    fn default(s: &str) -> String {
        text(&Rules::default(), s)
    }

    #[test]
    fn card_numbers_are_luhn_checked() {
        assert_eq!(
            default("card 4111111111111111 declined"),
            "card [Filtered] declined"
        );
        assert_eq!(default("4111 1111 1111 1111"), "[Filtered]");
        assert_eq!(default("4111-1111-1111-1111, exp 12"), "[Filtered], exp 12");
        assert_eq!(default("amex 378282246310005."), "amex [Filtered].");
        assert_eq!(
            default("card 4111 1111 1111 1111 2027"),
            "card [Filtered] 2027"
        );
        // Fails Luhn: an order number, kept.
        assert_eq!(
            default("order 4111111111111112 failed"),
            "order 4111111111111112 failed"
        );
        // Luhn-valid, but no card starts with 1, 7, 8, 9 or 0: a timestamp.
        assert_eq!(default("at 1795805563250"), "at 1795805563250");
        // Part of a longer number or word.
        assert_eq!(default("41111111111111110000"), "41111111111111110000");
        assert_eq!(default("id_4111111111111111"), "id_4111111111111111");
    }

    #[test]
    fn ibans_are_check_digit_validated() {
        assert_eq!(
            default("to DE89370400440532013000 now"),
            "to [Filtered] now"
        );
        assert_eq!(default("GB82 WEST 1234 5698 7654 32"), "[Filtered]");
        assert_eq!(
            default("GB82 WEST 1234 5698 7654 32 FAILED"),
            "[Filtered] FAILED"
        );
        // A wrong check digit: kept.
        assert_eq!(default("DE88370400440532013000"), "DE88370400440532013000");
        assert_eq!(default("HTTP2 error AB12"), "HTTP2 error AB12");
    }

    #[test]
    fn bearer_tokens_and_credential_lines() {
        assert_eq!(
            default("got 401 for Bearer eyJhbGciOiJIUzI1NiJ9.e30.abc"),
            "got 401 for Bearer [Filtered]"
        );
        assert_eq!(default("bearer token missing"), "bearer token missing");
        assert_eq!(
            default("Authorization: Basic dXNlcjpwYXNz\nAccept: */*"),
            "Authorization: [Filtered]\nAccept: */*"
        );
        assert_eq!(default("Cookie: sid=abc; theme=dark"), "Cookie: [Filtered]");
        assert_eq!(
            default("auth: failed for user 42"),
            "auth: failed for user 42"
        );
    }

    #[test]
    fn names_in_text() {
        assert_eq!(
            default("GET /login?user=ann&password=hunter2&next=/"),
            "GET /login?user=ann&password=[Filtered]&next=/"
        );
        assert_eq!(
            default(r#"body {"user": "ann", "api_key": "sk-12\"34", "n": 1}"#),
            r#"body {"user": "ann", "api_key": "[Filtered]", "n": 1}"#
        );
        assert_eq!(
            default("db_password='s3cr3t' rejected"),
            "db_password='[Filtered]' rejected"
        );
        assert_eq!(default("tokenizer_name=bert"), "tokenizer_name=bert");
        assert_eq!(default("a == b"), "a == b");
    }

    #[test]
    fn url_passwords_and_pem_keys() {
        assert_eq!(
            default("cannot connect to postgres://app:pa55@db:5432/x"),
            "cannot connect to postgres://app:[Filtered]@db:5432/x"
        );
        assert_eq!(
            default("see https://example.com:8443/a@b"),
            "see https://example.com:8443/a@b"
        );
        let key = "-----BEGIN RSA PRIVATE KEY-----\nMIIEow\n-----END RSA PRIVATE KEY-----";
        assert_eq!(
            default(&format!("bad key {key} here")),
            "bad key [Filtered] here"
        );
        assert_eq!(default("-----BEGIN PRIVATE KEY-----\nMIIE"), "[Filtered]");
        let cert = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----";
        assert_eq!(default(cert), cert);
    }

    #[test]
    fn ip_addresses_only_when_asked() {
        let ip = Rules {
            ip: true,
            ..Rules::default()
        };
        let s = "from 10.1.2.3 and 2001:db8::1. at std::io::Error v1.2.3";
        assert_eq!(default(s), s);
        assert_eq!(
            text(&ip, s),
            "from [Filtered] and [Filtered]. at std::io::Error v1.2.3"
        );
        assert_eq!(text(&ip, "::1"), "[Filtered]");
        assert_eq!(text(&ip, "at 12:30:45"), "at 12:30:45");
    }

    #[test]
    fn non_ascii_text_is_left_whole() {
        assert_eq!(
            default("mot de passe é password=é1 ü"),
            "mot de passe é password=[Filtered] ü"
        );
    }

    fn event() -> Event {
        let mut e = Event::with_id(Uuid::nil(), Level::Error);
        e.message = Some("charge 4111111111111111 failed".into());
        e.exception = vec![Exception::new("Err", "token=abc123 rejected")];
        e.tags = BTreeMap::from([
            ("session_id".into(), "s1".into()),
            ("order".into(), "4111111111111112".into()),
        ]);
        e.extra = BTreeMap::from([
            (
                "config".into(),
                json!({"db": {"password": "x", "port": 5432}, "cards": [4111111111111111u64]}),
            ),
            ("tokenizer_name".into(), json!("bert")),
            ("client".into(), json!({"X-Forwarded-For": "10.0.0.1"})),
        ]);
        e.request = Some(Request {
            url: Some("https://u:pw@shop.test/a?token=t1&page=2".into()),
            headers: BTreeMap::from([
                ("Authorization".into(), "Basic abc".into()),
                ("X-Forwarded-For".into(), "10.0.0.1".into()),
                ("Accept".into(), "*/*".into()),
            ]),
            client_ip: Some("10.0.0.1".into()),
            ..Request::default()
        });
        e.user = Some(User {
            id: Some("u-1".into()),
            ip_address: Some("10.0.0.1".into()),
            ..User::default()
        });
        e.breadcrumbs = vec![Breadcrumb {
            timestamp: None,
            category: None,
            level: Level::Info,
            message: Some("Bearer abcdef123456".into()),
            data: BTreeMap::from([("Cookie".into(), json!("sid=1"))]),
        }];
        e
    }

    #[test]
    fn scrubs_every_part_of_an_event() {
        let mut e = event();
        scrub(&mut e, &Rules::default());
        assert_eq!(e.message.as_deref(), Some("charge [Filtered] failed"));
        assert_eq!(e.exception[0].value, "token=[Filtered] rejected");
        assert_eq!(e.tags["session_id"], FILTERED);
        assert_eq!(e.tags["order"], "4111111111111112");
        assert_eq!(
            e.extra["config"],
            json!({"db": {"password": FILTERED, "port": 5432}, "cards": [FILTERED]})
        );
        assert_eq!(e.extra["tokenizer_name"], "bert");
        let r = e.request.as_ref().unwrap();
        assert_eq!(
            r.url.as_deref(),
            Some("https://u:[Filtered]@shop.test/a?token=[Filtered]&page=2")
        );
        assert_eq!(r.headers["Authorization"], FILTERED);
        assert_eq!(r.headers["Accept"], "*/*");
        // IP addresses are kept by default.
        assert_eq!(r.headers["X-Forwarded-For"], "10.0.0.1");
        assert_eq!(r.client_ip.as_deref(), Some("10.0.0.1"));
        assert_eq!(
            e.user.as_ref().unwrap().ip_address.as_deref(),
            Some("10.0.0.1")
        );
        assert_eq!(
            e.breadcrumbs[0].message.as_deref(),
            Some("Bearer [Filtered]")
        );
        assert_eq!(e.breadcrumbs[0].data["Cookie"], FILTERED);

        // Idempotent: scrubbing a scrubbed event changes nothing.
        let once = e.clone();
        scrub(&mut e, &Rules::default());
        assert_eq!(e, once);
    }

    #[test]
    fn ip_rules_remove_addresses_and_keep_the_user_id() {
        let mut e = event();
        let rules = Rules {
            ip: true,
            ..Rules::default()
        };
        scrub(&mut e, &rules);
        let r = e.request.as_ref().unwrap();
        assert_eq!(r.headers["X-Forwarded-For"], FILTERED);
        assert_eq!(r.client_ip, None);
        let user = e.user.as_ref().unwrap();
        assert_eq!(
            (user.id.as_deref(), user.ip_address.as_deref()),
            (Some("u-1"), None)
        );
        assert_eq!(e.extra["client"]["X-Forwarded-For"], FILTERED);
    }

    #[test]
    fn project_fields_and_off() {
        let rules = Rules::default().with_fields(&["Order-No".into()]);
        let mut e = event();
        e.tags.insert("order_no".into(), "A-1".into());
        e.extra.insert("ORDER_NO_2".into(), json!({"x": 1}));
        scrub(&mut e, &rules);
        assert_eq!(e.tags["order_no"], FILTERED);
        assert_eq!(e.extra["ORDER_NO_2"], FILTERED);
        assert_eq!(text(&rules, "order_no=17"), "order_no=[Filtered]");

        let mut e = event();
        let sent = e.clone();
        scrub(&mut e, &Rules::off());
        assert_eq!(e, sent);
    }
}
