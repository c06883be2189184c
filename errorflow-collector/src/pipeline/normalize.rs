//! Normalisation: bounds every string and collection of an event, fills the
//! defaults and clamps the timestamp, so that the later stages and the store
//! never see unbounded or surprising input.
//!
//! Normalisation is idempotent: normalising a normalised event changes
//! nothing. Stored events can therefore be re-run through the pipeline (for a
//! new grouping version, say) without drifting.

use std::collections::BTreeMap;

use chrono::Duration;
use errorflow_sdk::protocol::{Breadcrumb, Event, Exception, Frame, Request, Stacktrace, User};

use super::{Context, Limits, Rejected};

/// Client clocks drift; a timestamp further than this in the future is
/// replaced by the time of receipt so that it does not sort above every
/// other event for days.
pub const MAX_CLOCK_SKEW: Duration = Duration::minutes(5);

/// The environment of events that do not name one, as in the seed.
pub const DEFAULT_ENVIRONMENT: &str = "prod";

/// The service of events that do not name one.
pub const DEFAULT_SERVICE: &str = "unknown";

/// Lines of source context kept around a frame's line.
const MAX_CONTEXT_LINES: usize = 5;

/// Components of a client fingerprint; more would not make groups any
/// more precise, only bigger.
const MAX_FINGERPRINT_COMPONENTS: usize = 32;

/// Threads kept of an event (Sentry's `threads`): the first ones, which
/// SDKs list from the crashed or current thread on.
const MAX_THREADS: usize = 50;

/// Bounds, cleans and completes `event`. Rejects events that carry nothing
/// to group on: neither a message nor an exception.
pub fn normalize(event: Event, ctx: &Context, limits: &Limits) -> Result<Event, Rejected> {
    normalize_with(event, ctx, limits, Content::Required)
}

/// Whether an event must carry a message or an exception.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Content {
    /// errorflow's own protocol and the seed's: an event says what happened.
    Required,
    /// Sentry's: an event without either is still stored, as Sentry stores
    /// it (`<unlabeled event>`, titled from what it has).
    Optional,
}

/// [`normalize`], with the content rule of the event's protocol.
pub fn normalize_with(
    mut event: Event,
    ctx: &Context,
    limits: &Limits,
    content: Content,
) -> Result<Event, Rejected> {
    let l = limits;

    event.message = non_empty(event.message.map(|m| value(m, l.max_message_chars)));
    event.message_template = non_empty(
        event
            .message_template
            .map(|m| value(m, l.max_message_chars)),
    );
    // Cap before checking, so that a normalised event is never rejected when
    // normalised again.
    event.exception.truncate(l.max_exceptions);
    if content == Content::Required && event.message.is_none() && event.exception.is_empty() {
        return Err(Rejected(
            "event has neither message nor exception".to_owned(),
        ));
    }

    event.timestamp = Some(match event.timestamp {
        Some(t) if t <= ctx.received_at + MAX_CLOCK_SKEW => t,
        _ => ctx.received_at,
    });

    event.platform = non_empty(event.platform.map(|p| name(p, l).to_lowercase()));
    event.logger = non_empty(event.logger.map(|s| name(s, l)));
    event.service = Some(
        non_empty(event.service.map(|s| name(s, l)))
            .unwrap_or_else(|| truncate(DEFAULT_SERVICE.to_owned(), l.max_name_chars)),
    );
    // Lowercase before bounding: lowercasing may change the number of
    // characters, and bounding last keeps the result within the limit.
    event.environment = Some(
        non_empty(event.environment.map(|e| {
            truncate(
                strip_controls(&nfc(e)).trim().to_lowercase(),
                l.max_name_chars,
            )
        }))
        .unwrap_or_else(|| truncate(DEFAULT_ENVIRONMENT.to_owned(), l.max_name_chars)),
    );
    event.release = non_empty(event.release.map(|s| name(s, l)));
    event.host = non_empty(event.host.map(|s| name(s, l)));
    event.transaction = non_empty(event.transaction.map(|s| value(s, l.max_value_chars)));
    event.trace_id = non_empty(event.trace_id.map(|s| name(s, l)));
    event.sdk = non_empty(event.sdk.map(|s| name(s, l)));

    for exception in &mut event.exception {
        normalize_exception(exception, l);
    }
    event.stacktrace = event
        .stacktrace
        .map(|s| normalize_stacktrace(s, l))
        .filter(|s| !s.frames.is_empty());
    event.threads.truncate(MAX_THREADS);
    for thread in &mut event.threads {
        thread.id = non_empty(thread.id.take().map(|s| name(s, l)));
        thread.name = non_empty(thread.name.take().map(|s| name(s, l)));
        thread.stacktrace = thread
            .stacktrace
            .take()
            .map(|s| normalize_stacktrace(s, l))
            .filter(|s| !s.frames.is_empty());
    }
    if let Some(meta) = &mut event.meta {
        strip_nul_json(meta);
    }
    event.meta = event
        .meta
        .filter(|m| m.as_object().is_some_and(|m| !m.is_empty()));

    event.tags = normalize_map(std::mem::take(&mut event.tags), l.max_tags, l);
    event.extra = std::mem::take(&mut event.extra)
        .into_iter()
        .map(|(k, mut v)| {
            strip_nul_json(&mut v);
            (strip_nul(k), v)
        })
        .collect();
    event.request = event.request.map(|r| normalize_request(r, l));
    event.user = event.user.map(|u| normalize_user(u, l));

    // Breadcrumbs are oldest first; the newest ones explain the error best.
    let excess = event.breadcrumbs.len().saturating_sub(l.max_breadcrumbs);
    event.breadcrumbs.drain(..excess);
    for crumb in &mut event.breadcrumbs {
        normalize_breadcrumb(crumb, ctx, l);
    }

    event.fingerprint = event
        .fingerprint
        .map(|components| {
            components
                .into_iter()
                .take(MAX_FINGERPRINT_COMPONENTS)
                .map(|c| value(c, l.max_value_chars))
                .collect::<Vec<_>>()
        })
        .filter(|components| !components.is_empty());

    Ok(event)
}

fn normalize_exception(exception: &mut Exception, l: &Limits) {
    exception.ty = name(std::mem::take(&mut exception.ty), l);
    if exception.ty.is_empty() {
        exception.ty = truncate("Error".to_owned(), l.max_name_chars);
    }
    exception.value = value(std::mem::take(&mut exception.value), l.max_message_chars);
    exception.module = non_empty(exception.module.take().map(|s| value(s, l.max_value_chars)));
    exception.mechanism = non_empty(exception.mechanism.take().map(|s| name(s, l)));
    exception.stacktrace = exception
        .stacktrace
        .take()
        .map(|s| normalize_stacktrace(s, l))
        .filter(|s| !s.frames.is_empty());
}

fn normalize_stacktrace(mut stacktrace: Stacktrace, l: &Limits) -> Stacktrace {
    // Frames are innermost last, and the innermost frames say where the
    // error was raised: drop the outermost ones.
    let excess = stacktrace.frames.len().saturating_sub(l.max_frames);
    stacktrace.frames.drain(..excess);
    for frame in &mut stacktrace.frames {
        normalize_frame(frame, l);
    }
    stacktrace
}

fn normalize_frame(frame: &mut Frame, l: &Limits) {
    let v = |s: Option<String>| non_empty(s.map(|s| value(s, l.max_value_chars)));
    frame.function = v(frame.function.take());
    frame.module = v(frame.module.take());
    frame.filename = v(frame.filename.take());
    frame.abs_path = v(frame.abs_path.take());
    frame.context_line = v(frame.context_line.take());
    frame.instruction_addr = non_empty(frame.instruction_addr.take().map(|s| name(s, l)));
    frame.symbol_addr = non_empty(frame.symbol_addr.take().map(|s| name(s, l)));
    frame.image_addr = non_empty(frame.image_addr.take().map(|s| name(s, l)));
    frame.package = v(frame.package.take());
    // Lines closest to the frame's line are the useful ones: the last of
    // the lines before it and the first of the lines after it.
    let excess = frame.pre_context.len().saturating_sub(MAX_CONTEXT_LINES);
    frame.pre_context.drain(..excess);
    frame.post_context.truncate(MAX_CONTEXT_LINES);
    for line in frame
        .pre_context
        .iter_mut()
        .chain(frame.post_context.iter_mut())
    {
        *line = value(std::mem::take(line), l.max_value_chars);
    }
}

fn normalize_request(mut r: Request, l: &Limits) -> Request {
    let v = |s: Option<String>| non_empty(s.map(|s| value(s, l.max_value_chars)));
    r.method = non_empty(r.method.map(|m| name(m, l).to_uppercase()));
    r.url = v(r.url);
    r.route = v(r.route);
    r.query_string = v(r.query_string);
    r.client_ip = non_empty(r.client_ip.map(|s| name(s, l)));
    r.headers = normalize_map(r.headers, l.max_tags, l);
    r
}

fn normalize_user(mut u: User, l: &Limits) -> User {
    let v = |s: Option<String>| non_empty(s.map(|s| value(s, l.max_value_chars)));
    u.id = v(u.id);
    u.email = v(u.email);
    u.username = v(u.username);
    u.ip_address = non_empty(u.ip_address.map(|s| name(s, l)));
    u
}

fn normalize_breadcrumb(crumb: &mut Breadcrumb, ctx: &Context, l: &Limits) {
    crumb.category = non_empty(crumb.category.take().map(|s| name(s, l)));
    crumb.message = non_empty(crumb.message.take().map(|s| value(s, l.max_value_chars)));
    if crumb
        .timestamp
        .is_some_and(|t| t > ctx.received_at + MAX_CLOCK_SKEW)
    {
        crumb.timestamp = Some(ctx.received_at);
    }
    crumb.data = std::mem::take(&mut crumb.data)
        .into_iter()
        .map(|(k, mut v)| {
            strip_nul_json(&mut v);
            (strip_nul(k), v)
        })
        .collect();
}

/// Bounds keys as names and values as values, drops empty keys, and keeps
/// the first `max` entries in key order (deterministic, unlike arrival order
/// once the client's map has been through a `BTreeMap`).
fn normalize_map(
    map: BTreeMap<String, String>,
    max: usize,
    l: &Limits,
) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for (k, v) in map {
        let k = name(k, l);
        if !k.is_empty() {
            out.insert(k, value(v, l.max_value_chars));
        }
    }
    // Bounding keys may merge two of them, so cap after bounding.
    while out.len() > max {
        out.pop_last();
    }
    out
}

/// A short identifier: control characters other than `\n` and `\t` removed,
/// surrounding whitespace trimmed, at most `max_name_chars` characters.
fn name(s: String, l: &Limits) -> String {
    let s = nfc(s);
    let cleaned = strip_controls(&s);
    let trimmed = cleaned.trim();
    if trimmed.len() == s.len() {
        truncate(s, l.max_name_chars)
    } else {
        truncate(trimmed.to_owned(), l.max_name_chars)
    }
}

/// Free text: in NFC, NUL characters removed (PostgreSQL refuses them in
/// `text` and `jsonb`), at most `max` characters.
fn value(s: String, max: usize) -> String {
    truncate(strip_nul(nfc(s)), max)
}

/// Text in Unicode's composed form (NFC), so that the same words sent
/// composed (`café` with `é`) or decomposed (`e` and a combining accent,
/// as macOS file names and some keyboards give them) are one text, and
/// group as one incident. ASCII and text already in NFC, nearly all of it,
/// come back as they came, without a copy; the quick check answers most
/// of the rest without composing.
fn nfc(s: String) -> String {
    use unicode_normalization::{is_nfc_quick, IsNormalized, UnicodeNormalization};
    if s.is_ascii() || is_nfc_quick(s.chars()) == IsNormalized::Yes {
        return s;
    }
    s.nfc().collect()
}

/// Truncates `s` to at most `max` characters, on a character boundary, with
/// `…` as the last character when something was cut. A truncated string is
/// exactly `max` characters long, so truncating it again changes nothing.
pub fn truncate(mut s: String, max: usize) -> String {
    // Byte length bounds character count: most strings are short and skip
    // the character walk.
    if s.len() <= max {
        return s;
    }
    if max == 0 {
        return String::new();
    }
    match s.char_indices().nth(max) {
        None => s,
        Some(_) => {
            let (cut, _) = s
                .char_indices()
                .nth(max - 1)
                .expect("string has more than max chars");
            s.truncate(cut);
            s.push('…');
            s
        }
    }
}

fn strip_controls(s: &str) -> std::borrow::Cow<'_, str> {
    if s.chars().any(|c| c.is_control() && c != '\n' && c != '\t') {
        s.chars()
            .filter(|c| !c.is_control() || *c == '\n' || *c == '\t')
            .collect::<String>()
            .into()
    } else {
        s.into()
    }
}

fn strip_nul(s: String) -> String {
    if s.contains('\0') {
        s.replace('\0', "")
    } else {
        s
    }
}

fn strip_nul_json(v: &mut serde_json::Value) {
    match v {
        serde_json::Value::String(s) if s.contains('\0') => *s = s.replace('\0', ""),
        serde_json::Value::Array(items) => items.iter_mut().for_each(strip_nul_json),
        serde_json::Value::Object(map) => {
            if map.keys().any(|k| k.contains('\0')) {
                *map = std::mem::take(map)
                    .into_iter()
                    .map(|(k, v)| (k.replace('\0', ""), v))
                    .collect();
            }
            map.values_mut().for_each(strip_nul_json);
        }
        _ => {}
    }
}

fn non_empty(s: Option<String>) -> Option<String> {
    s.filter(|s| !s.trim().is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{TimeZone, Utc};
    use errorflow_sdk::protocol::Level;
    use proptest::prelude::*;
    use uuid::Uuid;

    fn ctx() -> Context {
        Context {
            project_id: 1,
            received_at: Utc.with_ymd_and_hms(2026, 11, 27, 12, 0, 0).unwrap(),
        }
    }

    fn event() -> Event {
        let mut e = Event::new(Level::Error);
        e.event_id = Uuid::nil();
        e.timestamp = None;
        e.message = Some("boom".into());
        e
    }

    #[test]
    fn text_is_composed_and_ascii_is_not_copied() {
        assert_eq!(nfc("cafe\u{301}".to_owned()), "caf\u{e9}");
        assert_eq!(nfc("caf\u{e9}".to_owned()), "caf\u{e9}");
        let ascii = "plain".to_owned();
        let at = ascii.as_ptr();
        let same = nfc(ascii);
        assert_eq!(same.as_ptr(), at);
        let mut e = event();
        e.exception = vec![Exception::new("Cafe\u{301}Error", "cafe\u{301}")];
        let n = normalize(e, &ctx(), &Limits::default()).unwrap();
        assert_eq!(n.exception[0].ty, "Caf\u{e9}Error");
        assert_eq!(n.exception[0].value, "caf\u{e9}");
    }

    #[test]
    fn truncates_on_char_boundary_with_ellipsis() {
        assert_eq!(truncate("héllo wörld".into(), 5), "héll…");
        assert_eq!(truncate("héllo".into(), 5), "héllo");
        assert_eq!(truncate("abc".into(), 0), "");
        let once = truncate("ééééééé".into(), 4);
        assert_eq!(once.chars().count(), 4);
        assert_eq!(truncate(once.clone(), 4), once);
    }

    #[test]
    fn rejects_events_without_message_or_exception() {
        let mut e = event();
        e.message = Some("   ".into());
        let err = normalize(e, &ctx(), &Limits::default()).unwrap_err();
        assert_eq!(err.0, "event has neither message nor exception");
    }

    #[test]
    fn fills_defaults() {
        let e = normalize(event(), &ctx(), &Limits::default()).unwrap();
        assert_eq!(e.timestamp, Some(ctx().received_at));
        assert_eq!(e.environment.as_deref(), Some("prod"));
        assert_eq!(e.service.as_deref(), Some("unknown"));
    }

    #[test]
    fn cleans_names() {
        let mut e = event();
        e.environment = Some("  Staging\u{7}  ".into());
        e.service = Some("user\u{0}-api".into());
        e.host = Some("".into());
        let e = normalize(e, &ctx(), &Limits::default()).unwrap();
        assert_eq!(e.environment.as_deref(), Some("staging"));
        assert_eq!(e.service.as_deref(), Some("user-api"));
        assert_eq!(e.host, None);
    }

    #[test]
    fn clamps_future_timestamps_only_beyond_skew() {
        let now = ctx().received_at;
        let mut e = event();
        e.timestamp = Some(now + Duration::minutes(4));
        let kept = normalize(e.clone(), &ctx(), &Limits::default()).unwrap();
        assert_eq!(kept.timestamp, Some(now + Duration::minutes(4)));
        e.timestamp = Some(now + Duration::hours(2));
        let clamped = normalize(e.clone(), &ctx(), &Limits::default()).unwrap();
        assert_eq!(clamped.timestamp, Some(now));
        e.timestamp = Some(now - Duration::days(3));
        let past = normalize(e, &ctx(), &Limits::default()).unwrap();
        assert_eq!(past.timestamp, Some(now - Duration::days(3)));
    }

    #[test]
    fn caps_collections_keeping_the_useful_end() {
        let limits = Limits {
            max_frames: 2,
            max_breadcrumbs: 2,
            max_tags: 2,
            max_exceptions: 1,
            ..Limits::default()
        };
        let mut e = event();
        let frames = (0..5)
            .map(|i| Frame {
                function: Some(format!("f{i}")),
                ..Frame::default()
            })
            .collect();
        e.exception.push(Exception {
            stacktrace: Some(Stacktrace { frames }),
            ..Exception::new("Outer", "x")
        });
        e.exception.push(Exception::new("Cause", "y"));
        for i in 0..4 {
            e.breadcrumbs.push(Breadcrumb {
                timestamp: None,
                category: None,
                level: Level::Info,
                message: Some(format!("b{i}")),
                data: BTreeMap::new(),
            });
            e.tags.insert(format!("k{i}"), "v".into());
        }
        let e = normalize(e, &ctx(), &limits).unwrap();
        assert_eq!(e.exception.len(), 1);
        let fns: Vec<_> = e.exception[0]
            .stacktrace
            .as_ref()
            .unwrap()
            .frames
            .iter()
            .map(|f| f.function.clone().unwrap())
            .collect();
        assert_eq!(fns, ["f3", "f4"]);
        let crumbs: Vec<_> = e
            .breadcrumbs
            .iter()
            .map(|b| b.message.clone().unwrap())
            .collect();
        assert_eq!(crumbs, ["b2", "b3"]);
        assert_eq!(e.tags.keys().collect::<Vec<_>>(), ["k0", "k1"]);
    }

    #[test]
    fn bounds_strings() {
        let limits = Limits {
            max_message_chars: 10,
            max_name_chars: 4,
            max_value_chars: 6,
            ..Limits::default()
        };
        let mut e = event();
        e.message = Some("a very long message".into());
        e.service = Some("service-name".into());
        e.tags.insert("long-key".into(), "long value".into());
        let e = normalize(e, &ctx(), &limits).unwrap();
        assert_eq!(e.message.as_deref(), Some("a very lo…"));
        assert_eq!(e.service.as_deref(), Some("ser…"));
        assert_eq!(e.tags.get("lon…").map(String::as_str), Some("long …"));
    }

    fn arb_opt_string() -> impl Strategy<Value = Option<String>> {
        proptest::option::of("[ \\PC\\x00-\\x1f]{0,12}")
    }

    prop_compose! {
        fn arb_event()(
            message in arb_opt_string(),
            ty in "[ \\PC\\x00\\x07]{0,12}",
            has_exception in any::<bool>(),
            service in arb_opt_string(),
            environment in arb_opt_string(),
            release in arb_opt_string(),
            tags in proptest::collection::btree_map("[ a-zA-Z\\x00\\x01é]{0,10}", "\\PC{0,10}", 0..8),
            frames in proptest::collection::vec(arb_opt_string(), 0..8),
            crumbs in proptest::collection::vec(arb_opt_string(), 0..8),
            offset_s in -100_000i64..100_000,
            has_ts in any::<bool>(),
            fingerprint in proptest::option::of(proptest::collection::vec("\\PC{0,10}", 0..4)),
        ) -> Event {
            let mut e = event();
            e.message = message;
            if has_exception {
                e.exception.push(Exception {
                    stacktrace: Some(Stacktrace {
                        frames: frames.into_iter().map(|f| Frame { function: f, ..Frame::default() }).collect(),
                    }),
                    ..Exception::new(ty, "value")
                });
            }
            e.service = service;
            e.environment = environment;
            e.release = release;
            e.tags = tags;
            e.breadcrumbs = crumbs.into_iter().map(|m| Breadcrumb {
                timestamp: None, category: None, level: Level::Info, message: m, data: BTreeMap::new(),
            }).collect();
            e.timestamp = has_ts.then(|| ctx().received_at + Duration::seconds(offset_s));
            e.fingerprint = fingerprint;
            e
        }
    }

    proptest! {
        #[test]
        fn idempotent(e in arb_event(), small in any::<bool>()) {
            let limits = if small {
                Limits { max_message_chars: 5, max_name_chars: 3, max_value_chars: 4, max_tags: 3,
                         max_breadcrumbs: 2, max_frames: 3, ..Limits::default() }
            } else {
                Limits::default()
            };
            if let Ok(once) = normalize(e, &ctx(), &limits) {
                let twice = normalize(once.clone(), &ctx(), &limits).unwrap();
                prop_assert_eq!(twice, once);
            }
        }
    }
}
