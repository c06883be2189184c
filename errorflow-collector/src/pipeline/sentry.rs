//! Sentry's wire formats → errorflow's [`Event`]: envelope framing and the
//! mapping of Sentry's event schema, so that every official Sentry SDK can
//! report to the collector unchanged.
//!
//! Pure, like the rest of `pipeline/`: no IO, clock or randomness. The id to
//! use when an event carries none comes in through [`SentryContext`]; an
//! event without a timestamp keeps none, and normalisation gives it the time
//! of receipt.
//!
//! ```
//! use errorflow_collector::pipeline::sentry::{map_event, parse_envelope, SentryContext};
//!
//! let body = b"{\"event_id\":\"9ec79c33ec9942ab8353589fcb2e04dc\"}\n\
//!              {\"type\":\"event\"}\n\
//!              {\"message\":\"hello\",\"level\":\"warning\"}\n";
//! let envelope = parse_envelope(body, 1 << 20).unwrap();
//! assert_eq!(envelope.items[0].ty, "event");
//! // An event without an id of its own takes the envelope header's.
//! let ctx = SentryContext { fallback_event_id: envelope.header.event_id().unwrap() };
//! let event = map_event(envelope.items[0].payload, &ctx).unwrap();
//! assert_eq!(event.message.as_deref(), Some("hello"));
//! assert_eq!(event.event_id.simple().to_string(), "9ec79c33ec9942ab8353589fcb2e04dc");
//! ```
//!
//! **Exception order.** Sentry's `exception.values` lists a chain *oldest
//! first*: the root cause comes first and the exception that was finally
//! raised (`raise B from A` → `[A, B]`; JavaScript's `cause`; Rust's
//! `source()`) comes last. errorflow's [`Event::exception`] is *outermost
//! first*, each `source()` following its parent. The mapping therefore
//! reverses the list. Frames are innermost last in both, and are kept as they are.
//!
//! **Service.** errorflow groups by service; Sentry has no such field. The
//! mapping uses the tag `service` when the application set one, else the
//! package part of a `package@version` release (`shop@1.2.3` → `shop`), else
//! leaves it empty for normalisation to fill in (`unknown`). The SDK's own
//! name is not a service.

use std::collections::BTreeMap;

use chrono::{DateTime, NaiveDateTime, TimeZone, Utc};
use errorflow_sdk::protocol::{
    Breadcrumb, Event, Exception, Frame, Level, Request, Stacktrace, Thread, User,
};
use serde::Deserialize;
use serde_json::Value;
use uuid::Uuid;

mod wire;

use super::frames;
use wire::{
    RawBreadcrumb, RawDebugMeta, RawEvent, RawException, RawFrame, RawStacktrace, RawThread,
};

/// What the mapping needs besides the payload.
#[derive(Debug, Clone, Copy)]
pub struct SentryContext {
    /// Used when the event has no valid `event_id`: the envelope header's id,
    /// or one the caller generated.
    pub fallback_event_id: Uuid,
}

/// An envelope split into its header and items, borrowing the body.
#[derive(Debug, Clone, PartialEq)]
pub struct Envelope<'a> {
    pub header: EnvelopeHeader,
    pub items: Vec<Item<'a>>,
}

/// The envelope header members the collector uses; others are ignored.
#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
pub struct EnvelopeHeader {
    #[serde(default)]
    pub event_id: Option<String>,
    /// `http://KEY@HOST/PROJECT_ID`, sent by SDKs that tunnel envelopes.
    #[serde(default)]
    pub dsn: Option<String>,
}

impl EnvelopeHeader {
    /// The header's `event_id`, when valid.
    pub fn event_id(&self) -> Option<Uuid> {
        self.event_id.as_deref().and_then(parse_uuid)
    }
}

/// One item: its `type` and its payload bytes.
#[derive(Debug, Clone, PartialEq)]
pub struct Item<'a> {
    pub ty: String,
    pub payload: &'a [u8],
}

impl Item<'_> {
    /// Whether the collector stores this item; every other type (attachment,
    /// session, transaction, client_report, check_in, log, span, profile,
    /// replay_event, statsd, future types) is accepted and skipped.
    pub fn is_event(&self) -> bool {
        self.ty == "event"
    }
}

#[derive(Deserialize)]
struct ItemHeader {
    #[serde(rename = "type")]
    ty: String,
    #[serde(default)]
    length: Option<u64>,
}

/// Why an envelope or an event could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SentryError {
    #[error("empty envelope")]
    Empty,
    #[error("invalid envelope header: {0}")]
    Header(String),
    #[error("invalid header of item {index}: {message}")]
    ItemHeader { index: usize, message: String },
    #[error("item {index} is truncated: its header says {length} bytes, {available} remain")]
    Truncated {
        index: usize,
        length: u64,
        available: usize,
    },
    #[error("item {index} is longer than its header's length {length}")]
    LengthMismatch { index: usize, length: u64 },
    #[error("event item {index} has {length} bytes, more than the {max} allowed")]
    EventTooLarge {
        index: usize,
        length: usize,
        max: usize,
    },
    #[error("the envelope has more than {max} items")]
    TooManyItems { max: usize },
    #[error("invalid event JSON: {0}")]
    InvalidJson(String),
    #[error("an event must be a JSON object")]
    NotAnObject,
    #[error("invalid event_id {0:?}: expected 32 hex digits or a UUID")]
    InvalidEventId(String),
}

impl SentryError {
    /// Whether the error is about size (413) rather than shape (400).
    pub fn is_too_large(&self) -> bool {
        matches!(
            self,
            SentryError::EventTooLarge { .. } | SentryError::TooManyItems { .. }
        )
    }
}

/// Items one envelope may hold. SDKs send an event with a few attachments,
/// a session or a client report; a thousand leaves room for batching
/// clients while a body of tiny items cannot make the collector parse and
/// hold millions of them.
pub const MAX_ENVELOPE_ITEMS: usize = 1000;

/// Splits an envelope: a header line of JSON, then items, each a header line
/// (`type`, optional `length`) and a payload. With `length`, the payload is
/// exactly that many bytes, followed by a newline or the end; without, it
/// runs to the next newline. Event payloads longer than `max_event_bytes`
/// are refused; other items are bounded only by the body's size; more than
/// [`MAX_ENVELOPE_ITEMS`] items are refused.
pub fn parse_envelope(body: &[u8], max_event_bytes: usize) -> Result<Envelope<'_>, SentryError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(SentryError::Empty);
    }
    let (line, mut rest) = split_line(body);
    let header: EnvelopeHeader = match serde_json::from_slice::<Value>(line) {
        Ok(Value::Object(map)) => EnvelopeHeader::deserialize(Value::Object(map))
            .map_err(|e| SentryError::Header(e.to_string()))?,
        Ok(_) => return Err(SentryError::Header("not a JSON object".into())),
        Err(e) => return Err(SentryError::Header(e.to_string())),
    };
    let mut items = Vec::new();
    loop {
        // A trailing newline (or a few) after the last item is allowed.
        if rest.iter().all(u8::is_ascii_whitespace) {
            break;
        }
        let index = items.len();
        if index >= MAX_ENVELOPE_ITEMS {
            return Err(SentryError::TooManyItems {
                max: MAX_ENVELOPE_ITEMS,
            });
        }
        let (line, after) = split_line(rest);
        let item: ItemHeader =
            serde_json::from_slice(line).map_err(|e| SentryError::ItemHeader {
                index,
                message: e.to_string(),
            })?;
        let payload = match item.length {
            Some(length) => {
                // Refused on the declared length, before looking at the bytes.
                if item.ty == "event" && length > max_event_bytes as u64 {
                    return Err(SentryError::EventTooLarge {
                        index,
                        length: usize::try_from(length).unwrap_or(usize::MAX),
                        max: max_event_bytes,
                    });
                }
                if length > after.len() as u64 {
                    return Err(SentryError::Truncated {
                        index,
                        length,
                        available: after.len(),
                    });
                }
                let (payload, tail) = after.split_at(length as usize);
                rest = match tail.first() {
                    None => tail,
                    Some(b'\n') => &tail[1..],
                    Some(_) => return Err(SentryError::LengthMismatch { index, length }),
                };
                payload
            }
            None => {
                let (payload, tail) = split_line(after);
                rest = tail;
                payload
            }
        };
        if item.ty == "event" && payload.len() > max_event_bytes {
            return Err(SentryError::EventTooLarge {
                index,
                length: payload.len(),
                max: max_event_bytes,
            });
        }
        items.push(Item {
            ty: item.ty,
            payload,
        });
    }
    Ok(Envelope { header, items })
}

/// The bytes before the first `\n` (without a trailing `\r`), and those after it.
fn split_line(data: &[u8]) -> (&[u8], &[u8]) {
    let (line, rest) = match data.iter().position(|&b| b == b'\n') {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &data[data.len()..]),
    };
    (line.strip_suffix(b"\r").unwrap_or(line), rest)
}

/// The key in a DSN's user part (`http://KEY@host/1` → `KEY`), and its project id.
pub fn dsn_key(dsn: &str) -> Option<(&str, Option<i64>)> {
    let (_, rest) = dsn.split_once("://")?;
    let (user, host_path) = rest.split_once('@')?;
    let key = user.split(':').next().filter(|k| !k.is_empty())?;
    let project = host_path
        .rsplit('/')
        .find(|s| !s.is_empty())
        .and_then(|s| s.parse().ok());
    Some((key, project))
}

/// The `sentry_key` of an `X-Sentry-Auth` (or `Authorization: Sentry …`)
/// header: `Sentry sentry_key=KEY, sentry_version=7, …`.
pub fn auth_header_key(value: &str) -> Option<&str> {
    let value = value.trim();
    let params = match value.split_once(char::is_whitespace) {
        Some((scheme, rest)) if scheme.eq_ignore_ascii_case("sentry") => rest,
        _ => value,
    };
    params.split(',').find_map(|pair| {
        let (name, value) = pair.split_once('=')?;
        (name.trim() == "sentry_key")
            .then(|| value.trim().trim_matches('"'))
            .filter(|v| !v.is_empty())
    })
}

/// The `sentry_key` of a query string.
pub fn query_key(query: &str) -> Option<&str> {
    query.split('&').find_map(|pair| {
        let (name, value) = pair.split_once('=')?;
        // Keys are hex, so percent-decoding is never needed.
        (name == "sentry_key")
            .then_some(value)
            .filter(|v| !v.is_empty())
    })
}

/// Maps one Sentry event payload (JSON) to an errorflow [`Event`].
pub fn map_event(payload: &[u8], ctx: &SentryContext) -> Result<Event, SentryError> {
    let raw = wire::read_event(payload)
        .map_err(SentryError::InvalidJson)?
        .ok_or(SentryError::NotAnObject)?;
    map_raw(raw, ctx)
}

/// Maps a decoded Sentry event, taking its strings and JSON values over.
fn map_raw(mut raw: RawEvent, ctx: &SentryContext) -> Result<Event, SentryError> {
    take_legacy_interfaces(&mut raw);
    let security = raw_security(&mut raw);
    let (message, template) = message(&raw);
    let event_id = match raw.event_id {
        None | Some(Value::Null) => ctx.fallback_event_id,
        Some(Value::String(s)) => parse_uuid(&s).ok_or(SentryError::InvalidEventId(s))?,
        Some(other) => return Err(SentryError::InvalidEventId(other.to_string())),
    };
    let sdk_name = raw
        .sdk
        .as_ref()
        .and_then(|s| s.get("name"))
        .and_then(Value::as_str);
    let platform = platform(raw.platform.0.as_deref(), sdk_name);
    let mut event = Event::with_id(event_id, Level::Error);
    event.timestamp = raw.timestamp.as_ref().and_then(timestamp);
    event.level = raw
        .level
        .0
        .and_then(|l| Level::parse(&l))
        .unwrap_or(Level::Error);
    event.logger = raw.logger.0;
    event.environment = raw.environment.0;
    event.release = raw.release.0;
    event.host = raw.server_name.0;
    event.transaction = raw.transaction.0;
    event.tags = tags(raw.tags.as_ref());
    event.service = event
        .tags
        .get("service")
        .filter(|s| !s.is_empty())
        .cloned()
        .or_else(|| service_from_release(event.release.as_deref()));

    event.message = message;
    event.message_template = template;

    let images = raw.debug_meta.0.take().map(images).unwrap_or_default();
    let frames = Frames {
        rules: FrameRules::for_platform(platform.as_deref()),
        images: &images,
    };
    let mut raw_exceptions = raw.exception.0;
    let mut top_stack = raw.stacktrace.0.take();
    // Raven's template error: its location is the one frame of the stack.
    if top_stack.is_none() {
        if let Some(template) = raw.template.0.take() {
            top_stack = Some(RawStacktrace {
                frames: wire::Seq(vec![template]),
            });
        }
    }
    // An old SDK's single exception with the stack beside it rather than in
    // it: the stack is the exception's, as Sentry moves it.
    if let [only] = raw_exceptions.as_mut_slice() {
        if only.stacktrace.0.is_none() && only.legacy_stacktrace.0.is_none() {
            only.stacktrace.0 = top_stack.take();
        }
    }
    let mut threads: Vec<Thread> = raw
        .threads
        .0
        .into_iter()
        .map(|t| thread(t, frames))
        .collect();
    let mut exceptions: Vec<Exception> = Vec::with_capacity(raw_exceptions.len());
    let mut thread_ids = Vec::with_capacity(raw_exceptions.len());
    for e in raw_exceptions {
        let thread_id = e.thread_id.0.clone();
        if let Some(e) = exception(e, frames) {
            exceptions.push(e);
            thread_ids.push(thread_id);
        }
    }
    // The exception raised last (Sentry lists it last) without a stack of
    // its own takes its thread's: the thread of its `thread_id`, else the
    // one that crashed or was current.
    if let (Some(outer), Some(thread_id)) = (exceptions.last_mut(), thread_ids.last()) {
        if outer.stacktrace.is_none() {
            let own = thread_id.as_deref().and_then(|id| {
                threads
                    .iter()
                    .position(|t| t.id.as_deref() == Some(id) && t.stacktrace.is_some())
            });
            outer.stacktrace = own
                .or_else(|| pick_thread(&threads))
                .and_then(|i| thread_stack(&mut threads, i));
        }
    }
    exceptions.reverse();
    event.stacktrace = top_stack.and_then(|s| stacktrace(s, frames));
    if event.stacktrace.is_none() && exceptions.is_empty() {
        event.stacktrace = pick_thread(&threads).and_then(|i| thread_stack(&mut threads, i));
    }
    event.exception = exceptions;
    event.threads = threads;

    if let Some(contexts) = raw.contexts.filter(Value::is_object) {
        event.trace_id = contexts
            .get("trace")
            .and_then(|t| t.get("trace_id"))
            .and_then(Value::as_str)
            .map(str::to_owned);
        event.extra.insert("contexts".into(), contexts);
    }
    security_report(security, &mut event);
    if let Some(Value::Object(extra)) = raw.extra {
        for (k, v) in extra {
            event.extra.entry(k).or_insert(v);
        }
    }
    event.user = raw.user.as_ref().and_then(user);
    event.request = raw.request.as_ref().and_then(request);
    event.breadcrumbs = raw.breadcrumbs.0.into_iter().map(breadcrumb).collect();
    event.fingerprint = raw.fingerprint.as_ref().and_then(|f| {
        let parts: Vec<String> = f
            .as_array()?
            .iter()
            .filter_map(|p| str_of(Some(p)))
            .collect();
        (!parts.is_empty()).then_some(parts)
    });
    event.sdk = raw.sdk.as_ref().and_then(|sdk| {
        let name = sdk.get("name")?.as_str()?;
        Some(match sdk.get("version").and_then(Value::as_str) {
            Some(v) => format!("{name}/{v}"),
            None => name.to_owned(),
        })
    });
    event.meta = raw
        .meta
        .filter(|m| m.as_object().is_some_and(|m| !m.is_empty()));
    event.platform = platform;
    Ok(event)
}

/// Moves each interface sent under its legacy name (`sentry.interfaces.Http`
/// for `request`, …, the list Relay accepts) to its canonical field, unless
/// the event also sent the canonical one, which wins as in Sentry.
fn take_legacy_interfaces(raw: &mut RawEvent) {
    fn take<T: Default>(canonical: &mut T, legacy: &mut T, absent: impl Fn(&T) -> bool) {
        if absent(canonical) {
            *canonical = std::mem::take(legacy);
        }
    }
    take(&mut raw.exception, &mut raw.legacy_exception, |e| {
        e.0.is_empty()
    });
    take(&mut raw.stacktrace, &mut raw.legacy_stacktrace, |s| {
        s.0.is_none()
    });
    take(&mut raw.template, &mut raw.legacy_template, |t| {
        t.0.is_none()
    });
    take(&mut raw.threads, &mut raw.legacy_threads, |t| {
        t.0.is_empty()
    });
    take(&mut raw.debug_meta, &mut raw.legacy_debug_meta, |d| {
        d.0.is_none()
    });
    take(&mut raw.breadcrumbs, &mut raw.legacy_breadcrumbs, |b| {
        b.0.is_empty()
    });
    take(&mut raw.contexts, &mut raw.legacy_contexts, Option::is_none);
    take(&mut raw.user, &mut raw.legacy_user, Option::is_none);
    take(&mut raw.request, &mut raw.legacy_request, Option::is_none);
    take(&mut raw.csp, &mut raw.legacy_csp, Option::is_none);
    take(&mut raw.hpkp, &mut raw.legacy_hpkp, Option::is_none);
    take(&mut raw.expectct, &mut raw.legacy_expectct, Option::is_none);
    take(
        &mut raw.expectstaple,
        &mut raw.legacy_expectstaple,
        Option::is_none,
    );
    take(&mut raw.nel, &mut raw.legacy_nel, Option::is_none);
    for e in &mut raw.exception.0 {
        take(&mut e.stacktrace, &mut e.legacy_stacktrace, |s| {
            s.0.is_none()
        });
    }
}

/// The browser security reports of an event, by their canonical names.
fn raw_security(raw: &mut RawEvent) -> [(&'static str, Option<Value>); 5] {
    [
        ("csp", raw.csp.take()),
        ("hpkp", raw.hpkp.take()),
        ("expectct", raw.expectct.take()),
        ("expectstaple", raw.expectstaple.take()),
        ("nel", raw.nel.take()),
    ]
}

/// Keeps a browser's security report (CSP, HPKP, Expect-CT, Expect-Staple,
/// NEL) in `extra` under its interface name and, when the event has no
/// message of its own, says what it reports in Sentry's words, without
/// their quotes (`Blocked script from evil.example`): titles and grouping
/// take quoted values for variable parts, and the directive and host are
/// what tells one report from another.
fn security_report(reports: [(&'static str, Option<Value>); 5], event: &mut Event) {
    for (name, report) in reports {
        let Some(report) = report.filter(Value::is_object) else {
            continue;
        };
        if event.message.is_none() {
            event.message = security_message(name, &report);
        }
        event.extra.insert(name.to_owned(), report);
    }
}

fn security_message(name: &str, report: &Value) -> Option<String> {
    let text = |key: &str| str_of(report.get(key)).filter(|s| !s.is_empty());
    match name {
        "csp" => {
            let directive = text("effective_directive").or_else(|| {
                text("violated_directive")
                    .and_then(|d| d.split_whitespace().next().map(str::to_owned))
            })?;
            let kind = match directive.as_str() {
                "child-src" => "child",
                "connect-src" => "connect",
                "font-src" => "font",
                "form-action" => "form",
                "img-src" => "image",
                "manifest-src" => "manifest",
                "media-src" => "media",
                "object-src" => "object",
                "script-src" | "script-src-elem" | "script-src-attr" => "script",
                "style-src" | "style-src-elem" | "style-src-attr" => "style",
                "frame-src" => "frame",
                "worker-src" => "worker",
                other => other,
            };
            let blocked = text("blocked_uri").unwrap_or_default();
            Some(match blocked.as_str() {
                "" | "self" => format!("Blocked {kind} from self"),
                "inline" | "eval" => format!("Blocked unsafe {blocked} {kind}"),
                uri => format!("Blocked {kind} from {}", uri_host(uri)),
            })
        }
        "hpkp" => Some(format!(
            "Public key pinning validation failed for {}",
            text("hostname")?
        )),
        "expectct" => Some(format!("Expect-CT failed for {}", text("hostname")?)),
        "expectstaple" => Some(format!("Expect-Staple failed for {}", text("hostname")?)),
        "nel" => Some(format!(
            "Network error: {}",
            text("type").or_else(|| report.get("body").and_then(|b| str_of(b.get("type"))))?
        )),
        _ => None,
    }
}

/// The host of a URI (`https://cdn.example/x.js` → `cdn.example`), or the
/// URI itself when it has none (`data:`, `blob:`).
fn uri_host(uri: &str) -> &str {
    match uri.split_once("://") {
        Some((_, rest)) => rest.split(['/', '?', '#']).next().unwrap_or(rest),
        None => uri,
    }
}

/// `9ec79c33ec9942ab8353589fcb2e04dc` or `9ec79c33-ec99-42ab-8353-589fcb2e04dc`.
fn parse_uuid(s: &str) -> Option<Uuid> {
    let s = s.trim();
    (s.len() == 32 || s.len() == 36)
        .then(|| Uuid::parse_str(s).ok())
        .flatten()
}

/// The platform errorflow's grouping knows: Sentry's `node` is JavaScript,
/// and the Rust SDK says `native` (its frames are Rust's).
fn platform(platform: Option<&str>, sdk_name: Option<&str>) -> Option<String> {
    if sdk_name.is_some_and(|n| n.starts_with("sentry.rust")) {
        return Some("rust".into());
    }
    let p = platform?.to_ascii_lowercase();
    Some(match p.as_str() {
        "node" | "javascript" | "js" => "javascript".into(),
        _ => p,
    })
}

fn service_from_release(release: Option<&str>) -> Option<String> {
    let (package, _) = release?.split_once('@')?;
    let package = package.trim();
    (!package.is_empty()).then(|| package.to_owned())
}

/// A string, or a number or boolean written as one; `None` for null, objects and arrays.
fn str_of(v: Option<&Value>) -> Option<String> {
    match v? {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// RFC 3339 (with or without offset, then UTC) or seconds since the epoch.
fn timestamp(v: &Value) -> Option<DateTime<Utc>> {
    match v {
        Value::Number(n) => from_epoch(n.as_f64()?),
        Value::String(s) => {
            let s = s.trim();
            if let Ok(t) = DateTime::parse_from_rfc3339(s) {
                return Some(t.with_timezone(&Utc));
            }
            if let Ok(t) = NaiveDateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%S%.f") {
                return Some(Utc.from_utc_datetime(&t));
            }
            s.parse::<f64>().ok().and_then(from_epoch)
        }
        _ => None,
    }
}

fn from_epoch(secs: f64) -> Option<DateTime<Utc>> {
    if !secs.is_finite() || !(0.0..=1e11).contains(&secs) {
        return None;
    }
    let whole = secs.floor();
    let nanos = ((secs - whole) * 1e9).round().min(999_999_999.0) as u32;
    DateTime::from_timestamp(whole as i64, nanos)
}

/// Tags as an object or as `[[key, value], ...]` pairs.
fn tags(v: Option<&Value>) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    match v {
        Some(Value::Object(o)) => {
            for (k, v) in o {
                if let Some(v) = str_of(Some(v)) {
                    out.insert(k.clone(), v);
                }
            }
        }
        Some(Value::Array(pairs)) => {
            for pair in pairs {
                if let Some([k, v]) = pair.as_array().map(Vec::as_slice) {
                    if let (Some(k), Some(v)) = (str_of(Some(k)), str_of(Some(v))) {
                        out.insert(k, v);
                    }
                }
            }
        }
        _ => {}
    }
    out
}

/// The formatted message and its template, from `logentry` (or the legacy
/// `sentry.interfaces.Message`) or `message` (a string or a logentry object).
fn message(raw: &RawEvent) -> (Option<String>, Option<String>) {
    let entry = raw
        .logentry
        .as_ref()
        .or(raw.legacy_message.as_ref())
        .filter(|e| e.is_object())
        .or_else(|| raw.message.as_ref().filter(|m| m.is_object()));
    let Some(entry) = entry else {
        return (str_of(raw.message.as_ref()).filter(|m| !m.is_empty()), None);
    };
    let template = str_of(entry.get("message")).filter(|m| !m.is_empty());
    // Without `formatted`, Sentry formats `message` with `params` itself.
    let formatted = str_of(entry.get("formatted"))
        .filter(|m| !m.is_empty())
        .or_else(|| {
            let params = entry.get("params")?;
            format_params(template.as_deref()?, params)
        });
    match (formatted, template) {
        (Some(f), Some(t)) if f != t => (Some(f), Some(t)),
        (Some(f), _) => (Some(f), None),
        (None, Some(t)) => (Some(t), None),
        (None, None) => (None, None),
    }
}

/// A logging template formatted with its parameters as Python's `%`
/// operator does: `%s`, `%d`, `%r`, … in order from an array of `params`,
/// `%(name)s` from an object, `%%` a percent sign. `None` when the
/// parameters do not fit the template.
fn format_params(template: &str, params: &Value) -> Option<String> {
    let text = |v: &Value| match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    let mut out = String::with_capacity(template.len() + 16);
    let mut positional = params.as_array().map(|a| a.iter());
    let mut rest = template;
    while let Some(i) = rest.find('%') {
        out.push_str(&rest[..i]);
        rest = &rest[i + 1..];
        if let Some(after) = rest.strip_prefix('%') {
            out.push('%');
            rest = after;
            continue;
        }
        let value = if let Some(named) = rest.strip_prefix('(') {
            let (name, after) = named.split_once(')')?;
            rest = after;
            params.get(name)?
        } else {
            positional.as_mut()?.next()?
        };
        // The conversion: flags, width and precision, then its letter.
        let end = rest.find(|c: char| c.is_ascii_alphabetic())?;
        rest = &rest[end + 1..];
        out.push_str(&text(value));
    }
    out.push_str(rest);
    Some(out)
}

fn exception(e: RawException, frames: Frames<'_>) -> Option<Exception> {
    let ty = e.ty.0.filter(|t| !t.is_empty());
    let value = e.value.0;
    let stack = e.stacktrace.0.and_then(|s| stacktrace(s, frames));
    if ty.is_none() && value.is_none() && stack.is_none() {
        return None;
    }
    let (mechanism, handled) = match e.mechanism.0 {
        Some(m) => (m.ty.0, m.handled.0),
        None => (None, None),
    };
    Some(Exception {
        ty: ty.unwrap_or_else(|| "Error".into()),
        value: value.unwrap_or_default(),
        module: e.module.0,
        mechanism,
        handled,
        stacktrace: stack,
    })
}

fn thread(t: RawThread, frames: Frames<'_>) -> Thread {
    let current = t.current.0 == Some(true) || t.errored.0 == Some(true);
    Thread {
        id: t.id.0,
        name: t.name.0,
        crashed: t.crashed.0,
        current: current.then_some(true).or(t.current.0),
        stacktrace: t.stacktrace.0.and_then(|s| stacktrace(s, frames)),
    }
}

/// The index of the thread whose stack stands for the event: the one that
/// crashed, else the one that captured the event (`current`, or the Java
/// SDK's `errored`), else the first; only threads with a stack count.
fn pick_thread(threads: &[Thread]) -> Option<usize> {
    let with_stack = || {
        threads
            .iter()
            .enumerate()
            .filter(|(_, t)| t.stacktrace.is_some())
    };
    with_stack()
        .find(|(_, t)| t.crashed == Some(true))
        .or_else(|| with_stack().find(|(_, t)| t.current == Some(true)))
        .or_else(|| with_stack().next())
        .map(|(i, _)| i)
}

/// The stack of thread `i`, to stand for the event. A lone thread (what
/// SDKs attach to a message with `attach_stacktrace`) says nothing besides
/// that stack: it is taken out rather than stored twice.
fn thread_stack(threads: &mut Vec<Thread>, i: usize) -> Option<Stacktrace> {
    if threads.len() == 1 {
        return threads.pop().and_then(|t| t.stacktrace);
    }
    threads.get(i).and_then(|t| t.stacktrace.clone())
}

fn stacktrace(s: RawStacktrace, frames: Frames<'_>) -> Option<Stacktrace> {
    let frames: Vec<Frame> = s.frames.0.into_iter().map(|f| frame(f, frames)).collect();
    (!frames.is_empty()).then_some(Stacktrace { frames })
}

fn frame(f: RawFrame, frames: Frames<'_>) -> Frame {
    let mut frame = Frame {
        function: f.function.0.or(f.symbol.0),
        module: f.module.0,
        filename: f.filename.0,
        abs_path: f.abs_path.0,
        lineno: f.lineno.0,
        colno: f.colno.0,
        in_app: f.in_app.0,
        context_line: f.context_line.0,
        pre_context: f.pre_context.0,
        post_context: f.post_context.0,
        instruction_addr: f.instruction_addr.0,
        package: f.package.0,
        symbol_addr: f.symbol_addr.0,
        image_addr: f.image_addr.0,
    };
    if frame.package.is_none() && !frames.images.is_empty() {
        frame.package = frame
            .instruction_addr
            .as_deref()
            .and_then(parse_addr)
            .and_then(|addr| {
                frames
                    .images
                    .iter()
                    .find(|i| i.start <= addr && addr < i.end)
            })
            .map(|i| i.code_file.clone());
    }
    frames.rules.apply(&mut frame);
    frame
}

/// What mapping a frame needs besides the frame: the platform's rules and
/// the event's loaded images.
#[derive(Debug, Clone, Copy)]
struct Frames<'a> {
    rules: FrameRules,
    images: &'a [Image],
}

/// A loaded binary of a native event (`debug_meta.images`): its address
/// range and path.
#[derive(Debug)]
struct Image {
    start: u64,
    end: u64,
    code_file: String,
}

fn images(meta: RawDebugMeta) -> Vec<Image> {
    meta.images
        .0
        .into_iter()
        .filter_map(|i| {
            let start = parse_addr(i.image_addr.0.as_deref()?)?;
            let size = match i.image_size? {
                Value::Number(n) => n.as_u64()?,
                Value::String(s) => parse_addr(&s).or_else(|| s.parse().ok())?,
                _ => return None,
            };
            Some(Image {
                start,
                end: start.checked_add(size)?,
                code_file: i.code_file.0.filter(|f| !f.is_empty())?,
            })
        })
        .collect()
}

/// An address as Sentry writes them: `0x…` hex, or decimal.
fn parse_addr(s: &str) -> Option<u64> {
    let s = s.trim();
    match s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        Some(hex) => u64::from_str_radix(hex, 16).ok(),
        None => s.parse().ok(),
    }
}

/// Per-platform clean-up of frames, so that grouping sees stable names and
/// knows which frames are the application's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FrameRules {
    /// Python, Java, … : the SDK's module, function and in_app are good as they are.
    AsSent,
    JavaScript,
    Native,
}

impl FrameRules {
    fn for_platform(platform: Option<&str>) -> FrameRules {
        match platform {
            Some("javascript") => FrameRules::JavaScript,
            Some(p) if p == "rust" || frames::is_native_platform(p) => FrameRules::Native,
            _ => FrameRules::AsSent,
        }
    }

    fn apply(self, frame: &mut Frame) {
        match self {
            FrameRules::AsSent => {}
            FrameRules::JavaScript => js_frame(frame),
            FrameRules::Native => native_frame(frame),
        }
    }
}

/// JavaScript: file names without query or hash (cache busters) and without
/// bundler prefixes; dependencies and the runtime are not the application.
fn js_frame(frame: &mut Frame) {
    for path in [&mut frame.filename, &mut frame.abs_path]
        .into_iter()
        .flatten()
    {
        *path = clean_js_path(path);
    }
    let location = frame
        .abs_path
        .as_deref()
        .or(frame.filename.as_deref())
        .unwrap_or("");
    if location.contains("/node_modules/")
        || location.starts_with("node:")
        || location.starts_with("internal/")
        || location == "<anonymous>"
        || location == "native"
    {
        frame.in_app = Some(false);
    }
}

fn clean_js_path(path: &str) -> String {
    let mut p = path;
    if let Some(i) = p.find(['?', '#']) {
        p = &p[..i];
    }
    for prefix in ["webpack-internal:///", "webpack:///", "app:///"] {
        if let Some(rest) = p.strip_prefix(prefix) {
            p = rest;
            // `webpack:///./src/a.js` and `webpack:///(app-pages-browser)/./src/a.js`.
            if p.starts_with('(') {
                if let Some(i) = p.find(")/") {
                    p = &p[i + 2..];
                }
            }
            p = p.strip_prefix("./").unwrap_or(p);
            break;
        }
    }
    p.to_owned()
}

/// Symbols of the runtime and common libraries: never the application's
/// code. The panic, backtrace and SDK crates are grouping's own list,
/// [`super::fingerprint::MACHINERY_CRATES`].
const NATIVE_NOT_APP: &[&str] = &[
    "std::",
    "core::",
    "alloc::",
    "tokio::",
    "futures::",
    "futures_util::",
    "futures_core::",
    "tracing::",
    "tracing_core::",
    "tracing_subscriber::",
    // Names with two leading underscores are the compiler's and the C
    // library's (`__rust_begin_short_backtrace`, `__libc_start_main_impl`).
    "__rust_",
    "__libc_start",
];

/// Process and thread entry points of the C runtime, matched whole.
const NATIVE_NOT_APP_EXACT: &[&str] = &[
    "_start",
    "rust_begin_unwind",
    "rust_panic",
    "start_thread",
    "clone",
    "clone3",
    "__clone",
    "main",
    "<unknown>",
];

/// Native/Rust: function names without the `::h0123456789abcdef` symbol
/// hash, a console SDK's build-id prefix, generic arguments and a C++ or
/// Swift parameter list; a module that is only a build id is dropped.
/// Runtime and SDK frames are not in-app; without the SDK's word, the
/// frame's binary (`package`) decides (see [`frames::package_in_app`]).
fn native_frame(frame: &mut Frame) {
    if frame.module.as_deref().is_some_and(frames::is_build_id) {
        frame.module = None;
    }
    if let Some(package) = frame.package.as_deref() {
        if frames::is_sdk_package(package) {
            frame.in_app = Some(false);
        } else if frame.in_app.is_none() {
            frame.in_app = frames::package_in_app(package);
        }
    }
    let Some(function) = frame.function.as_deref() else {
        return;
    };
    let name = strip_generics(frames::strip_build_id(strip_symbol_hash(function)));
    let name = match frames::trim_parameters(&name) {
        trimmed if trimmed.len() < name.len() => trimmed.to_owned(),
        _ => name,
    };
    if is_native_runtime(&name) {
        frame.in_app = Some(false);
    }
    frame.function = Some(name);
}

/// Whether a (cleaned) function belongs to the runtime, the panic machinery
/// or the SDK. For `<Type as Trait>::method` the type decides, unless it is a
/// bare generic parameter (`<E as anyhow::StdError>::ext_context`): then the trait does.
fn is_native_runtime(name: &str) -> bool {
    let matches = |path: &str| {
        NATIVE_NOT_APP.iter().any(|p| path.starts_with(p))
            || NATIVE_NOT_APP_EXACT.contains(&path)
            || super::fingerprint::MACHINERY_CRATES
                .iter()
                .any(|c| super::fingerprint::in_crate(path, c))
    };
    // sentry-backtrace turns the location lines of a std backtrace
    // (`at /rustc/<hash>/library/std/src/panic.rs:359:14`) into frames of their own.
    if (name.starts_with("at ") && name.contains("/rustc/")) || matches(name) {
        return true;
    }
    if let Some(inner) = name.strip_prefix('<') {
        let inner = inner.split(">::").next().unwrap_or(inner);
        if let Some((ty, tr)) = inner.split_once(" as ") {
            let generic_param = !ty.contains("::") && ty.len() <= 2;
            return matches(ty) || (generic_param && matches(tr));
        }
        return matches(inner);
    }
    matches(name)
}

fn strip_symbol_hash(f: &str) -> &str {
    match f.rfind("::h") {
        Some(i) if f.len() - i == 19 && f[i + 3..].bytes().all(|b| b.is_ascii_hexdigit()) => {
            &f[..i]
        }
        _ => f,
    }
}

/// Removes generic arguments (`Vec<T>::push` → `Vec::push`) but keeps
/// qualified paths (`<Foo as Bar>::baz` stays, minus generics inside).
fn strip_generics(f: &str) -> String {
    let mut out = String::with_capacity(f.len());
    let mut depth = 0usize;
    let chars: Vec<char> = f.chars().collect();
    let mut kept_opens = Vec::new();
    for (i, &c) in chars.iter().enumerate() {
        match c {
            '<' => {
                let prev = out.chars().last();
                let generic = prev.is_some_and(|p| p.is_alphanumeric() || p == '_' || p == ':')
                    && !(i > 0 && chars[i - 1] == '-');
                if generic || depth > 0 {
                    depth += 1;
                    kept_opens.push(false);
                } else {
                    kept_opens.push(true);
                    out.push(c);
                }
            }
            '>' if !(kept_opens.is_empty() || i > 0 && chars[i - 1] == '-') => {
                if kept_opens.pop() == Some(true) {
                    out.push(c);
                } else {
                    depth = depth.saturating_sub(1);
                }
            }
            _ if depth > 0 => {}
            _ => out.push(c),
        }
    }
    // `Vec::<T>::new` leaves `Vec::::new`.
    out.replace("::::", "::")
}

fn user(v: &Value) -> Option<User> {
    let user = User {
        id: str_of(v.get("id")),
        email: str_of(v.get("email")),
        username: str_of(v.get("username")),
        ip_address: str_of(v.get("ip_address")).filter(|ip| ip != "{{auto}}"),
    };
    (user != User::default()).then_some(user)
}

fn request(v: &Value) -> Option<Request> {
    if !v.is_object() {
        return None;
    }
    let query_string = match v.get("query_string") {
        Some(Value::String(s)) => Some(s.clone()).filter(|s| !s.is_empty()),
        Some(q @ (Value::Object(_) | Value::Array(_))) => {
            let pairs = tags(Some(q));
            (!pairs.is_empty()).then(|| {
                pairs
                    .iter()
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect::<Vec<_>>()
                    .join("&")
            })
        }
        _ => None,
    };
    let request = Request {
        method: str_of(v.get("method")),
        url: str_of(v.get("url")),
        route: None,
        query_string,
        headers: tags(v.get("headers")),
        status: None,
        latency_ms: None,
        client_ip: v
            .get("env")
            .and_then(|e| e.get("REMOTE_ADDR"))
            .and_then(|a| str_of(Some(a))),
    };
    (request != Request::default()).then_some(request)
}

fn breadcrumb(b: RawBreadcrumb) -> Breadcrumb {
    let data = match b.data {
        Some(Value::Object(o)) => o.into_iter().collect(),
        _ => BTreeMap::new(),
    };
    Breadcrumb {
        timestamp: b.timestamp.as_ref().and_then(timestamp),
        category: b.category.0.or(b.ty.0),
        level: b
            .level
            .0
            .and_then(|l| Level::parse(&l))
            .unwrap_or(Level::Info),
        message: b.message.0,
        data,
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    const CTX: SentryContext = SentryContext {
        fallback_event_id: Uuid::nil(),
    };

    fn map(v: Value) -> Event {
        map_event(v.to_string().as_bytes(), &CTX).unwrap()
    }

    fn fixture(name: &str) -> Vec<u8> {
        let path = format!(
            "{}/tests/fixtures/sentry/{name}.envelope",
            env!("CARGO_MANIFEST_DIR")
        );
        std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
    }

    /// The one event of a captured envelope, mapped.
    fn fixture_event(name: &str) -> Event {
        let body = fixture(name);
        let envelope = parse_envelope(&body, 1 << 20).unwrap();
        let events: Vec<_> = envelope.items.iter().filter(|i| i.is_event()).collect();
        assert_eq!(events.len(), 1, "{name}");
        let ctx = SentryContext {
            fallback_event_id: envelope.header.event_id().unwrap_or(Uuid::nil()),
        };
        map_event(events[0].payload, &ctx).unwrap()
    }

    // Envelope framing.

    #[test]
    fn items_with_and_without_length() {
        let body =
            b"{\"event_id\":\"9ec79c33ec9942ab8353589fcb2e04dc\",\"dsn\":\"http://k@h/1\"}\n\
            {\"type\":\"attachment\",\"length\":10}\n\
            \xef\xbb\xbfHello\r\n\n\
            {\"type\":\"event\"}\n\
            {\"message\":\"x\"}\n\
            {\"type\":\"session\",\"length\":2}\n\
            {}";
        let e = parse_envelope(body, 1 << 20).unwrap();
        assert_eq!(e.header.dsn.as_deref(), Some("http://k@h/1"));
        assert!(e.header.event_id().is_some());
        let types: Vec<_> = e.items.iter().map(|i| i.ty.as_str()).collect();
        assert_eq!(types, ["attachment", "event", "session"]);
        assert_eq!(e.items[0].payload, b"\xef\xbb\xbfHello\r\n");
        assert_eq!(e.items[1].payload, b"{\"message\":\"x\"}");
        assert_eq!(e.items[2].payload, b"{}");
    }

    #[test]
    fn header_only_and_empty_payloads() {
        let e = parse_envelope(b"{}", 100).unwrap();
        assert!(e.items.is_empty());
        let e = parse_envelope(b"{}\n{\"type\":\"client_report\",\"length\":0}\n", 100).unwrap();
        assert_eq!(e.items[0].payload, b"");
        let e = parse_envelope(b"{}\n{\"type\":\"event\",\"length\":0}", 100).unwrap();
        assert_eq!(e.items[0].payload, b"");
    }

    #[test]
    fn malformed_envelopes_are_errors_not_panics() {
        let cases: &[(&[u8], &str)] = &[
            (b"", "empty"),
            (b"\n\n", "empty"),
            (b"not json\n", "header"),
            (b"[1,2]\n", "header"),
            (b"{}\nnot json\n{}", "item header"),
            (b"{}\n{\"length\":2}\n{}", "item header"),
            (b"{}\n{\"type\":\"event\",\"length\":-1}\n{}", "item header"),
            (b"{}\n{\"type\":\"event\",\"length\":100}\n{}", "truncated"),
            (
                b"{}\n{\"type\":\"event\",\"length\":1}\n{}",
                "length mismatch",
            ),
            (
                b"{}\n{\"type\":\"attachment\",\"length\":18446744073709551615}\n{}",
                "truncated",
            ),
        ];
        for (body, what) in cases {
            let err = parse_envelope(body, 1 << 20).unwrap_err();
            assert!(!err.is_too_large(), "{what}: {err}");
        }
    }

    #[test]
    fn event_items_are_bounded_other_items_are_not() {
        let big = "x".repeat(2000);
        let body = format!("{{}}\n{{\"type\":\"event\"}}\n{{\"m\":\"{big}\"}}\n");
        assert!(parse_envelope(body.as_bytes(), 1000)
            .unwrap_err()
            .is_too_large());
        let body = format!("{{}}\n{{\"type\":\"event\",\"length\":2008}}\n{{\"m\":\"{big}\"}}\n");
        assert!(parse_envelope(body.as_bytes(), 1000)
            .unwrap_err()
            .is_too_large());
        let body = "{}\n{\"type\":\"event\",\"length\":99999999}\n{}\n".to_owned();
        assert!(parse_envelope(body.as_bytes(), 1000)
            .unwrap_err()
            .is_too_large());
        let body = format!("{{}}\n{{\"type\":\"attachment\",\"length\":2000}}\n{big}\n");
        assert_eq!(
            parse_envelope(body.as_bytes(), 1000).unwrap().items.len(),
            1
        );
    }

    #[test]
    fn every_captured_envelope_parses() {
        let dir = format!("{}/tests/fixtures/sentry", env!("CARGO_MANIFEST_DIR"));
        let mut n = 0;
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "envelope") {
                let body = std::fs::read(&path).unwrap();
                let e = parse_envelope(&body, 1 << 20)
                    .unwrap_or_else(|err| panic!("{}: {err}", path.display()));
                for item in e.items.iter().filter(|i| i.is_event()) {
                    map_event(item.payload, &CTX)
                        .unwrap_or_else(|err| panic!("{}: {err}", path.display()));
                }
                n += 1;
            }
        }
        assert!(n >= 12);
    }

    // Authentication helpers.

    #[test]
    fn keys_from_auth_header_query_and_dsn() {
        assert_eq!(
            auth_header_key("Sentry sentry_key=abc, sentry_version=7, sentry_client=x/1"),
            Some("abc")
        );
        assert_eq!(
            auth_header_key("Sentry sentry_version=7,sentry_key=abc"),
            Some("abc")
        );
        assert_eq!(auth_header_key("Sentry sentry_version=7"), None);
        assert_eq!(
            query_key("sentry_version=7&sentry_key=abc&sentry_client=x"),
            Some("abc")
        );
        assert_eq!(query_key("sentry_key="), None);
        assert_eq!(
            dsn_key("http://abc@127.0.0.1:8000/3"),
            Some(("abc", Some(3)))
        );
        assert_eq!(
            dsn_key("https://abc:secret@host/sub/path/42"),
            Some(("abc", Some(42)))
        );
        assert_eq!(dsn_key("http://host/3"), None);
    }

    // Mapping of the schema.

    #[test]
    fn ids_and_timestamps_in_every_form() {
        let dashed = map(json!({"event_id": "9ec79c33-ec99-42ab-8353-589fcb2e04dc"}));
        let plain = map(json!({"event_id": "9EC79C33EC9942AB8353589FCB2E04DC"}));
        assert_eq!(dashed.event_id, plain.event_id);
        assert_eq!(map(json!({})).event_id, Uuid::nil());
        assert!(map_event(br#"{"event_id":"nope"}"#, &CTX).is_err());
        assert!(map_event(b"[1]", &CTX).is_err());
        assert!(map_event(b"{", &CTX).is_err());

        let expected = DateTime::parse_from_rfc3339("2026-11-27T18:52:10.5Z").unwrap();
        for ts in [
            json!("2026-11-27T18:52:10.5Z"),
            json!("2026-11-27T18:52:10.5"),
            json!("2026-11-27T19:52:10.5+01:00"),
            json!(expected.timestamp() as f64 + 0.5),
            json!(format!("{}.5", expected.timestamp())),
        ] {
            assert_eq!(
                map(json!({ "timestamp": ts })).timestamp,
                Some(expected.into()),
                "{ts}"
            );
        }
        assert_eq!(map(json!({"timestamp": "yesterday"})).timestamp, None);
        assert_eq!(map(json!({"timestamp": -5})).timestamp, None);
    }

    #[test]
    fn exception_chain_is_reversed_to_outermost_first() {
        let e = map(json!({
            "exception": {"values": [
                {"type": "KeyError", "value": "'a'", "mechanism": {"type": "chained", "handled": true}},
                {"type": "PaymentError", "value": "failed", "module": "shop",
                 "mechanism": {"type": "generic", "handled": false},
                 "stacktrace": {"frames": [{"function": "main", "lineno": 3}, {"function": "pay", "lineno": "9"}]}},
            ]}
        }));
        assert_eq!(e.exception[0].ty, "PaymentError");
        assert_eq!(e.exception[0].module.as_deref(), Some("shop"));
        assert_eq!(e.exception[0].mechanism.as_deref(), Some("generic"));
        assert_eq!(e.exception[0].handled, Some(false));
        let frames = &e.exception[0].stacktrace.as_ref().unwrap().frames;
        assert_eq!(
            frames[1].function.as_deref(),
            Some("pay"),
            "innermost stays last"
        );
        assert_eq!(frames[1].lineno, Some(9));
        assert_eq!(e.exception[1].ty, "KeyError");
        // The legacy form: a bare array; a value without type.
        let e = map(json!({"exception": [{"value": "boom"}]}));
        assert_eq!(e.exception[0].ty, "Error");
        assert_eq!(e.exception[0].value, "boom");
    }

    #[test]
    fn messages_and_templates() {
        let e =
            map(json!({"logentry": {"message": "sku %s", "formatted": "sku A", "params": ["A"]}}));
        assert_eq!(e.message.as_deref(), Some("sku A"));
        assert_eq!(e.message_template.as_deref(), Some("sku %s"));
        let e = map(json!({"logentry": {"message": "plain"}}));
        assert_eq!(
            (e.message.as_deref(), e.message_template),
            (Some("plain"), None)
        );
        let e = map(json!({"message": "legacy string"}));
        assert_eq!(e.message.as_deref(), Some("legacy string"));
        let e = map(json!({"message": {"formatted": "f", "message": "t {}"}}));
        assert_eq!(
            (e.message.as_deref(), e.message_template.as_deref()),
            (Some("f"), Some("t {}"))
        );
    }

    /// Sentry data is loosely typed; the typed reader (`wire`) keeps the
    /// rules the mapping always had: numbers and booleans read as text where
    /// text is expected, values of the wrong shape are absent, list items
    /// that are not objects are skipped, unknown fields are ignored. None of
    /// it fails the event.
    #[test]
    fn loosely_typed_fields_are_read_or_skipped() {
        let e = map(json!({
            "level": 40, "logger": true, "release": 1.5, "environment": {"x": 1},
            "modules": {"django": "5.0", "requests": "2.32"},
            "debug_meta": {"images": [{"type": "elf"}]},
            "exception": {"other": [1], "values": [
                5,
                {"type": "E", "value": 42, "mechanism": [1, 2], "module": null,
                 "stacktrace": {"frames": [
                    "junk",
                    {"function": 7, "lineno": "12", "colno": -1, "in_app": "yes",
                     "pre_context": ["a", 1, null, {"x": 1}], "post_context": "b",
                     "vars": {"card": "4242", "items": [1, 2, 3]}},
                 ]}},
                {"value": null, "type": ""},
            ]},
            "breadcrumbs": [{"type": "http", "level": 3, "data": [1]}, "junk"],
        }));
        assert_eq!(e.level, Level::Error, "an unknown level is an error");
        assert_eq!(e.logger.as_deref(), Some("true"));
        assert_eq!(e.release.as_deref(), Some("1.5"));
        assert_eq!(e.environment, None);
        assert_eq!(
            e.exception.len(),
            1,
            "items that are not exceptions are skipped"
        );
        let ex = &e.exception[0];
        assert_eq!((ex.ty.as_str(), ex.value.as_str()), ("E", "42"));
        assert_eq!(
            (ex.mechanism.as_deref(), ex.handled, ex.module.as_deref()),
            (None, None, None)
        );
        let frames = &ex.stacktrace.as_ref().unwrap().frames;
        assert_eq!(frames.len(), 1);
        assert_eq!(frames[0].function.as_deref(), Some("7"));
        assert_eq!(
            (frames[0].lineno, frames[0].colno, frames[0].in_app),
            (Some(12), None, None)
        );
        assert_eq!(frames[0].pre_context, ["a", "1"]);
        assert!(frames[0].post_context.is_empty());
        assert!(
            !e.extra.contains_key("modules"),
            "unknown fields are not kept"
        );
        assert_eq!(e.breadcrumbs.len(), 1);
        assert_eq!(e.breadcrumbs[0].category.as_deref(), Some("http"));
        assert_eq!(e.breadcrumbs[0].level, Level::Info);
        assert!(e.breadcrumbs[0].data.is_empty());

        // Without exception or stacktrace: the crashed thread's stack, else
        // the current thread's, else the first.
        let e = map(json!({"threads": {"values": [
            {"stacktrace": {"frames": [{"function": "first"}]}},
            {"current": true, "stacktrace": {"frames": [{"function": "current"}]}},
        ]}}));
        let frames = e.stacktrace.unwrap().frames;
        assert_eq!(frames[0].function.as_deref(), Some("current"));
        let e = map(json!({"stacktrace": {"frames": []}, "threads": [
            {"current": true, "stacktrace": {"frames": [{"function": "current"}]}},
            {"crashed": true, "stacktrace": {"frames": [{"function": "crashed"}]}},
        ]}));
        let frames = e.stacktrace.unwrap().frames;
        assert_eq!(frames[0].function.as_deref(), Some("crashed"));

        // A field sent twice is refused, with the reason.
        match map_event(br#"{"level":"error","level":"info"}"#, &CTX) {
            Err(SentryError::InvalidJson(why)) => assert!(why.contains("duplicate field"), "{why}"),
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            map_event(b" [1]", &CTX),
            Err(SentryError::NotAnObject)
        ));
        assert!(matches!(
            map_event(b"[1", &CTX),
            Err(SentryError::InvalidJson(_))
        ));
        // Bytes that are not UTF-8, in a string or around one: refused with
        // the offset of the first bad byte.
        let why = |payload: &[u8]| match map_event(payload, &CTX) {
            Err(SentryError::InvalidJson(why)) => why,
            other => panic!("{other:?}"),
        };
        assert_eq!(
            why(b"{\"message\":\"caf\xe9\"}"),
            "not UTF-8 (invalid byte at offset 15)"
        );
        assert_eq!(
            why(b"{\"message\":\"ok\"}\xff"),
            "not UTF-8 (invalid byte at offset 16)"
        );
        // Escaped non-ASCII is UTF-8 text like any other.
        let e = map_event("{\"message\":\"caf\\u00e9 \u{e9}\"}".as_bytes(), &CTX).unwrap();
        assert_eq!(e.message.as_deref(), Some("caf\u{e9} \u{e9}"));
    }

    #[test]
    fn tags_request_user_breadcrumbs_and_the_rest() {
        let e = map(json!({
            "level": "warning", "logger": "shop.api", "platform": "python",
            "release": "shop@1.2.3", "environment": "prod", "server_name": "web-1",
            "transaction": "/orders/{id}", "fingerprint": ["{{ default }}", "db"],
            "tags": [["region", "eu"], ["retries", 3]],
            "contexts": {"trace": {"trace_id": "abc"}, "os": {"name": "Linux"}},
            "extra": {"order": 42},
            "user": {"id": 7, "email": "a@b.c", "ip_address": "{{auto}}"},
            "request": {"url": "http://x/orders/1", "method": "POST",
                        "query_string": [["a", "1"], ["b", "2"]],
                        "headers": [["Accept", "json"]], "env": {"REMOTE_ADDR": "10.0.0.1"}},
            "breadcrumbs": {"values": [{"timestamp": 1795805563.5, "category": "http", "level": "warning", "message": "GET /", "data": {"status": 500}}, 3]},
            "sdk": {"name": "sentry.python", "version": "2.46.0"},
        }));
        assert_eq!(e.level, Level::Warning);
        assert_eq!(e.logger.as_deref(), Some("shop.api"));
        assert_eq!(e.platform.as_deref(), Some("python"));
        assert_eq!(
            e.service.as_deref(),
            Some("shop"),
            "from the release's package"
        );
        assert_eq!(e.host.as_deref(), Some("web-1"));
        assert_eq!(e.transaction.as_deref(), Some("/orders/{id}"));
        assert_eq!(
            e.fingerprint.as_deref(),
            Some(&["{{ default }}".to_owned(), "db".to_owned()][..])
        );
        assert_eq!(e.tags["retries"], "3");
        assert_eq!(e.trace_id.as_deref(), Some("abc"));
        assert_eq!(e.extra["contexts"]["os"]["name"], "Linux");
        assert_eq!(e.extra["order"], 42);
        let user = e.user.unwrap();
        assert_eq!((user.id.as_deref(), user.ip_address), (Some("7"), None));
        let req = e.request.unwrap();
        assert_eq!(req.query_string.as_deref(), Some("a=1&b=2"));
        assert_eq!(req.headers["Accept"], "json");
        assert_eq!(req.client_ip.as_deref(), Some("10.0.0.1"));
        assert_eq!(e.breadcrumbs.len(), 1);
        assert_eq!(e.breadcrumbs[0].level, Level::Warning);
        assert_eq!(e.breadcrumbs[0].data["status"], 500);
        assert_eq!(e.sdk.as_deref(), Some("sentry.python/2.46.0"));

        let e = map(json!({"tags": {"service": "billing"}, "release": "shop@1"}));
        assert_eq!(e.service.as_deref(), Some("billing"), "the tag wins");
        assert_eq!(map(json!({"release": "1.0.0"})).service, None);
        assert_eq!(map(json!({"level": "bogus"})).level, Level::Error);
    }

    #[test]
    fn javascript_frames_are_cleaned() {
        let e = map(
            json!({"platform": "node", "exception": {"values": [{"type": "TypeError", "value": "x",
            "stacktrace": {"frames": [
                {"filename": "node:internal/process/task_queues", "function": "processTicks"},
                {"abs_path": "/srv/app/node_modules/express/lib/router.js", "function": "handle", "in_app": true},
                {"abs_path": "webpack:///./src/pay.js?v=3#L1", "filename": "webpack:///./src/pay.js?v=3", "function": "pay", "in_app": true},
                {"abs_path": "https://cdn.example.com/app.min.js?1234", "function": "a"},
            ]}}]}}),
        );
        assert_eq!(e.platform.as_deref(), Some("javascript"));
        let f = &e.exception[0].stacktrace.as_ref().unwrap().frames;
        assert_eq!(f[0].in_app, Some(false));
        assert_eq!(f[1].in_app, Some(false), "node_modules");
        assert_eq!(f[2].abs_path.as_deref(), Some("src/pay.js"));
        assert_eq!(f[2].filename.as_deref(), Some("src/pay.js"));
        assert_eq!(f[2].in_app, Some(true));
        assert_eq!(
            f[3].abs_path.as_deref(),
            Some("https://cdn.example.com/app.min.js")
        );
    }

    #[test]
    fn rust_frames_lose_hashes_and_generics() {
        let e = map(json!({"platform": "native", "sdk": {"name": "sentry.rust"},
        "exception": {"values": [{"type": "panic", "value": "x", "stacktrace": {"frames": [
            {"function": "std::rt::lang_start::{{closure}}::h0123456789abcdef"},
            {"function": "<alloc::boxed::Box<F,A> as core::ops::function::FnOnce<Args>>::call_once::hfedcba9876543210"},
            {"function": "shop::orders::Repo<T>::load::h00112233445566ff", "in_app": true},
            {"function": "core::panicking::panic_fmt"},
            {"function": "sentry_panic::panic_handler"},
        ]}}]}}));
        assert_eq!(e.platform.as_deref(), Some("rust"));
        let f = &e.exception[0].stacktrace.as_ref().unwrap().frames;
        assert_eq!(
            f[0].function.as_deref(),
            Some("std::rt::lang_start::{{closure}}")
        );
        assert_eq!(f[0].in_app, Some(false));
        assert_eq!(
            f[1].function.as_deref(),
            Some("<alloc::boxed::Box as core::ops::function::FnOnce>::call_once")
        );
        assert_eq!(f[1].in_app, Some(false));
        assert_eq!(f[2].function.as_deref(), Some("shop::orders::Repo::load"));
        assert_eq!(f[2].in_app, Some(true));
        assert_eq!(f[3].in_app, Some(false));
        assert_eq!(f[4].in_app, Some(false));
        assert_eq!(strip_generics("Vec::<u8>::new"), "Vec::new");
        assert_eq!(strip_generics("a::b<impl Fn() -> u8>::c"), "a::b::c");
    }

    #[test]
    fn application_crates_named_like_the_runtime_stay_in_app() {
        for app in [
            "sentry_bridge::run",
            "rust_panicky::main",
            "rust_begin_unwinding::step",
            "_start_worker",
            "std_ext::io::read",
            "tracing_setup::init",
        ] {
            assert!(!is_native_runtime(app), "{app}");
        }
        for runtime in [
            "sentry::capture_error",
            "sentry_core::hub::Hub::capture_event",
            "rust_begin_unwind",
            "rust_panic",
            "_start",
            "__libc_start_main",
            "__libc_start_call_main",
            "__rust_begin_short_backtrace",
            "__rustc::rust_begin_unwind",
        ] {
            assert!(is_native_runtime(runtime), "{runtime}");
        }
    }

    #[test]
    fn legacy_interface_names_map_to_their_canonical_fields() {
        let e = map(json!({
            "sentry.interfaces.Message": {"message": "order %s of %(who)s", "params": ["17"]},
            "sentry.interfaces.Exception": {"type": "E", "value": "v",
                "sentry.interfaces.Stacktrace": {"frames": [{"function": "f"}]}},
            "sentry.interfaces.Http": {"url": "http://x/a", "method": "GET"},
            "sentry.interfaces.User": {"id": "u"},
            "sentry.interfaces.Breadcrumbs": [{"message": "b"}],
            "sentry.interfaces.Contexts": {"os": {"name": "iOS"}},
            "sentry.interfaces.Threads": [{"id": 1, "crashed": true, "stacktrace": {"frames": [{"function": "t"}]}}],
            "sentry.interfaces.Hpkp": {"hostname": "shop.test"},
        }));
        assert_eq!(e.exception[0].ty, "E");
        let frames = &e.exception[0].stacktrace.as_ref().unwrap().frames;
        assert_eq!(frames[0].function.as_deref(), Some("f"));
        assert_eq!(e.request.unwrap().url.as_deref(), Some("http://x/a"));
        assert_eq!(e.user.unwrap().id.as_deref(), Some("u"));
        assert_eq!(e.breadcrumbs[0].message.as_deref(), Some("b"));
        assert_eq!(e.extra["contexts"]["os"]["name"], "iOS");
        assert_eq!(e.threads[0].id.as_deref(), Some("1"));
        assert_eq!(e.extra["hpkp"]["hostname"], "shop.test");
        // Named parameters from an array do not fit: the template stands.
        assert_eq!(e.message.as_deref(), Some("order %s of %(who)s"));
        assert_eq!(e.message_template, None);

        let e = map(
            json!({"exception": {"values": []}, "sentry.interfaces.Exception": [{"type": "L"}]}),
        );
        assert_eq!(e.exception[0].ty, "L", "an empty canonical list is absent");
        let e = map(json!({"user": {"id": "new"}, "sentry.interfaces.User": {"id": "old"}}));
        assert_eq!(e.user.unwrap().id.as_deref(), Some("new"));
    }

    #[test]
    fn logentry_params_are_formatted_as_python_does() {
        let fmt = |t: &str, p: Value| format_params(t, &p);
        assert_eq!(
            fmt("%s paid %d%% of %.2f", json!(["ann", 50, 9.5])).as_deref(),
            Some("ann paid 50% of 9.5")
        );
        assert_eq!(
            fmt(
                "%(user)s in %(city)r",
                json!({"user": "ann", "city": "Oslo"})
            )
            .as_deref(),
            Some("ann in Oslo")
        );
        assert_eq!(fmt("%s and %s", json!(["one"])), None, "too few");
        let e = map(json!({"logentry": {"message": "sku %s", "params": ["A-1"]}}));
        assert_eq!(
            (e.message.as_deref(), e.message_template.as_deref()),
            (Some("sku A-1"), Some("sku %s"))
        );
    }

    #[test]
    fn thread_and_stack_selection() {
        let frames = |name: &str| json!({"frames": [{"function": name}]});
        let stack_of = |e: &Event| {
            e.stacktrace.as_ref().unwrap().frames[0]
                .function
                .clone()
                .unwrap()
        };
        // Crashed, then current or errored, then the first with frames.
        let e = map(json!({"threads": [
            {"id": 1}, {"id": 2, "stacktrace": frames("first")},
            {"id": 3, "errored": true, "stacktrace": frames("errored")},
        ]}));
        assert_eq!(stack_of(&e), "errored");
        assert_eq!(e.threads[2].current, Some(true));
        let e = map(json!({"threads": [
            {"id": 1, "crashed": true}, {"id": 2, "stacktrace": frames("first")},
        ]}));
        assert_eq!(
            stack_of(&e),
            "first",
            "a crashed thread without stack does not count"
        );
        // An exception's own stack wins; without one, its thread's.
        let e = map(json!({
            "exception": [{"type": "E", "thread_id": "b"}],
            "threads": [{"id": "a", "crashed": true, "stacktrace": frames("a")}, {"id": "b", "stacktrace": frames("b")}],
        }));
        let own = &e.exception[0].stacktrace.as_ref().unwrap().frames;
        assert_eq!(own[0].function.as_deref(), Some("b"));
        assert!(e.stacktrace.is_none());
        let e = map(json!({
            "exception": [{"type": "E", "stacktrace": frames("own")}],
            "threads": [{"id": "a", "crashed": true, "stacktrace": frames("a")}],
        }));
        let own = &e.exception[0].stacktrace.as_ref().unwrap().frames;
        assert_eq!(own[0].function.as_deref(), Some("own"));
        // Two exceptions and a top-level stack: it stays the event's.
        let e =
            map(json!({"exception": [{"type": "A"}, {"type": "B"}], "stacktrace": frames("top")}));
        assert_eq!(stack_of(&e), "top");
    }

    #[test]
    fn security_reports_are_titled_by_what_they_report() {
        let csp = |blocked: &str| {
            map(json!({"csp": {"effective_directive": "img-src", "blocked_uri": blocked}}))
                .message
                .unwrap()
        };
        assert_eq!(csp("https://cdn.test/a.png"), "Blocked image from cdn.test");
        assert_eq!(csp("inline"), "Blocked unsafe inline image");
        let e = map(json!({"expectct": {"hostname": "shop.test"}, "message": "own"}));
        assert_eq!(e.message.as_deref(), Some("own"), "an own message wins");
        assert_eq!(e.extra["expectct"]["hostname"], "shop.test");
    }

    #[test]
    fn native_frames_keep_their_binary_and_addresses() {
        let e = map(json!({"platform": "cocoa",
        "debug_meta": {"images": [{"code_file": "/usr/lib/libobjc.A.dylib", "image_addr": "0x1000", "image_size": "0x1000"}]},
        "exception": {"type": "E", "stacktrace": {"frames": [
            {"instruction_addr": "0x1800", "symbol": "objc_msgSend"},
            {"function": "x", "package": "/Users/me/Shop.app/Contents/MacOS/Shop", "in_app": false},
            {"function": "y", "package": "/Users/me/Shop.app/Contents/Frameworks/Sentry.framework/Sentry", "in_app": true},
        ]}}}));
        let f = &e.exception[0].stacktrace.as_ref().unwrap().frames;
        assert_eq!(f[0].package.as_deref(), Some("/usr/lib/libobjc.A.dylib"));
        assert_eq!(f[0].function.as_deref(), Some("objc_msgSend"));
        assert_eq!(f[0].in_app, Some(false));
        assert_eq!(f[1].in_app, Some(false), "the SDK's word stands");
        assert_eq!(
            f[2].in_app,
            Some(false),
            "but never for the SDK's own framework"
        );
    }

    // The captured SDK payloads.

    #[test]
    fn python_chained_exception() {
        let e = fixture_event("python_chained");
        assert_eq!(e.platform.as_deref(), Some("python"));
        assert_eq!(e.service.as_deref(), Some("py-shop"));
        assert_eq!(e.host.as_deref(), Some("py-host"));
        assert_eq!(e.release.as_deref(), Some("py-shop@1.2.3"));
        assert_eq!(e.environment.as_deref(), Some("e2e"));
        let types: Vec<_> = e.exception.iter().map(|x| x.ty.as_str()).collect();
        assert_eq!(types, ["PaymentError", "KeyError"]);
        assert_eq!(e.exception[0].value, "payment for order 17 failed");
        let frames = &e.exception[0].stacktrace.as_ref().unwrap().frames;
        let last = frames.last().unwrap();
        assert_eq!(last.function.as_deref(), Some("checkout"));
        assert_eq!(last.module.as_deref(), Some("__main__"));
        assert_eq!(last.in_app, Some(true));
        assert!(last.context_line.is_some() && !last.pre_context.is_empty());
        assert_eq!(e.user.as_ref().unwrap().id.as_deref(), Some("u-42"));
        assert!(e.timestamp.is_some());
        assert!(e.sdk.as_deref().unwrap().starts_with("sentry.python"));
    }

    #[test]
    fn python_logging_events() {
        let e = fixture_event("python_logging_message");
        assert!(e.exception.is_empty());
        assert_eq!(
            e.message.as_deref(),
            Some("inventory for sku A-100 is negative")
        );
        assert_eq!(
            e.message_template.as_deref(),
            Some("inventory for sku %s is negative")
        );
        assert_eq!(e.logger.as_deref(), Some("shop.checkout"));

        let e = fixture_event("python_logging_exc_info");
        assert_eq!(e.exception[0].ty, "KeyError");
        assert_eq!(e.exception[0].mechanism.as_deref(), Some("logging"));
        assert_eq!(e.message_template.as_deref(), Some("lookup failed for %s"));

        let e = fixture_event("python_capture_message");
        assert_eq!(e.level, Level::Warning);
        assert_eq!(
            e.message.as_deref(),
            Some("nightly export finished with warnings")
        );
    }

    #[test]
    fn node_error_with_cause() {
        let e = fixture_event("node_error_cause");
        assert_eq!(e.platform.as_deref(), Some("javascript"));
        assert_eq!(e.service.as_deref(), Some("node-shop"));
        let types: Vec<_> = e.exception.iter().map(|x| x.ty.as_str()).collect();
        assert_eq!(types, ["PaymentError", "SyntaxError"]);
        let inner = &e.exception[1].stacktrace.as_ref().unwrap().frames;
        assert_eq!(
            inner.last().unwrap().in_app,
            Some(false),
            "JSON.parse is the runtime's"
        );
        let outer = &e.exception[0].stacktrace.as_ref().unwrap().frames;
        assert_eq!(outer.last().unwrap().function.as_deref(), Some("loadOrder"));
        assert_eq!(outer.last().unwrap().in_app, Some(true));
        assert!(outer
            .iter()
            .filter(|f| f
                .filename
                .as_deref()
                .is_some_and(|p| p.starts_with("node:")))
            .all(|f| f.in_app == Some(false)));
    }

    #[test]
    fn node_unhandled_rejection_and_thrown() {
        let e = fixture_event("node_unhandled_rejection");
        assert_eq!(e.exception[0].ty, "TypeError");
        assert_eq!(e.exception[0].handled, Some(false));
        let e = fixture_event("node_thrown");
        assert_eq!(e.exception[0].ty, "TypeError");
        assert_eq!(e.exception[0].handled, Some(true));
    }

    #[test]
    fn rust_anyhow_tracing_and_panic() {
        let e = fixture_event("rust_anyhow");
        assert_eq!(e.platform.as_deref(), Some("rust"));
        assert_eq!(e.service.as_deref(), Some("rust-shop"));
        assert_eq!(e.exception[0].value, "cannot place order 1");
        assert_eq!(e.exception[1].ty, "InventoryError");
        let frames = &e.exception[0].stacktrace.as_ref().unwrap().frames;
        for f in frames {
            let name = f.function.as_deref().unwrap_or("");
            assert!(
                !name.contains("::h") || strip_symbol_hash(name) == name,
                "{name}"
            );
            if name.contains("anyhow") || name.starts_with("std::") || name.starts_with("<std::") {
                assert_eq!(f.in_app, Some(false), "{name}");
            }
        }
        assert!(
            frames.iter().any(|f| f.in_app == Some(true)
                && f.function
                    .as_deref()
                    .is_some_and(|n| n.ends_with("place_order"))),
            "{frames:#?}"
        );

        let e = fixture_event("rust_tracing_error");
        assert_eq!(e.message.as_deref(), Some("inventory sync failed"));
        assert_eq!(e.logger.as_deref(), Some("sentry_rust_client"));
        let stack = e.stacktrace.expect("attach_stacktrace's thread stack");
        assert!(stack
            .frames
            .iter()
            .filter(|f| f
                .function
                .as_deref()
                .is_some_and(|n| n.starts_with("sentry_core::")))
            .all(|f| f.in_app == Some(false)));

        let e = fixture_event("rust_panic");
        assert_eq!(e.level, Level::Fatal);
        assert_eq!(e.exception[0].mechanism.as_deref(), Some("panic"));
        assert_eq!(e.exception[0].handled, Some(false));
        let frames = &e.exception[0].stacktrace.as_ref().unwrap().frames;
        let app: Vec<_> = frames
            .iter()
            .filter(|f| f.in_app == Some(true))
            .filter_map(|f| f.function.as_deref())
            .collect();
        assert!(
            app.iter().all(|f| f.starts_with("sentry_rust_client::")),
            "{app:?}"
        );
        assert!(app.iter().any(|f| f.ends_with("parse_quantity")), "{app:?}");
    }

    #[test]
    fn node_session_envelope_has_no_event() {
        let body = fixture("node_session");
        let e = parse_envelope(&body, 1 << 20).unwrap();
        assert_eq!(e.items.len(), 1);
        assert!(!e.items[0].is_event());
    }
}
