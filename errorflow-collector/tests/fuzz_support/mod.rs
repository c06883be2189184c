//! What every decoder of untrusted input must hold, whatever the bytes:
//! no panic, bounded output, and a clear error for input it refuses.
//!
//! Shared by the property tests (`tests/fuzz_decoders.rs`) and the
//! coverage-guided targets (`fuzz/fuzz_targets/`), which include this file
//! by path, so both drivers check the same things. Each `check_*` runs one
//! decoder on its input, asserts the decoder's contract, and carries what it
//! decoded through the stages after it (an envelope's events through the
//! Sentry mapping, every event through normalisation and fingerprinting).

#![allow(dead_code)]

use axum::body::Bytes;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use chrono::{TimeZone, Utc};
use errorflow_collector::http::body::{self, Inflated};
use errorflow_collector::http::ApiError;
use errorflow_collector::model::NormalizedEvent;
use errorflow_collector::pipeline::fingerprint::MAX_TITLE_CHARS;
use errorflow_collector::pipeline::normalize::Content;
use errorflow_collector::pipeline::sentry::{self, SentryContext, MAX_ENVELOPE_ITEMS};
use errorflow_collector::pipeline::{self, stack_text, Context, Limits};
use errorflow_sdk::protocol::Event;
use uuid::Uuid;

/// The encodings the collector accepts, as clients spell them.
pub const ENCODINGS: [&str; 6] = ["identity", "gzip", "x-gzip", "deflate", "br", "zstd"];

pub fn ctx() -> Context {
    Context {
        project_id: 7,
        received_at: Utc.with_ymd_and_hms(2026, 11, 27, 12, 0, 0).unwrap(),
    }
}

pub const FALLBACK_ID: Uuid = Uuid::from_u128(0x0123_4567_89ab_4def_8123_4567_89ab_cdef);

/// A refusal of a body decoder: 400, 413 or 415, with a code and a message
/// that says what was wrong.
fn check_refusal(e: &ApiError, allowed: &[StatusCode]) {
    assert!(
        allowed.contains(&e.status),
        "unexpected status {} ({}: {})",
        e.status,
        e.code,
        e.message
    );
    assert!(!e.code.is_empty(), "an error without a code");
    assert!(!e.message.is_empty(), "an error without a message");
}

/// [`body::decompress_within`] with `Content-Encoding: encoding`. Returns
/// what it inflated, after checking the bound: at most `budget` bytes, and
/// exactly `budget` when the body inflates to more.
pub fn check_decompress(encoding: &str, data: &[u8], budget: usize) -> Option<Inflated> {
    let mut headers = HeaderMap::new();
    let known = match HeaderValue::from_str(encoding) {
        Ok(value) => {
            let known = ENCODINGS.contains(&encoding.trim().to_ascii_lowercase().as_str())
                || encoding.trim().is_empty();
            headers.insert(header::CONTENT_ENCODING, value);
            known
        }
        // Not a header value: the request would never get this far.
        Err(_) => true,
    };
    let body = Bytes::copy_from_slice(data);
    match body::decompress_within(&headers, &body, budget) {
        Ok(Inflated::Whole(out)) => {
            assert!(known, "unknown encoding {encoding:?} was decoded");
            assert!(out.len() <= budget, "{} bytes > budget {budget}", out.len());
            Some(Inflated::Whole(out))
        }
        Ok(Inflated::Prefix(out)) => {
            assert!(known, "unknown encoding {encoding:?} was decoded");
            assert_eq!(out.len(), budget, "a prefix is exactly the budget");
            Some(Inflated::Prefix(out))
        }
        Err(e) => {
            if known {
                check_refusal(&e, &[StatusCode::BAD_REQUEST]);
            } else {
                check_refusal(&e, &[StatusCode::UNSUPPORTED_MEDIA_TYPE]);
            }
            None
        }
    }
}

/// [`body::decompress`]: the whole body within `max`, or 413, 400, 415.
pub fn check_decompress_max(encoding: &str, data: &[u8], max: usize) -> Option<Bytes> {
    let mut headers = HeaderMap::new();
    if let Ok(value) = HeaderValue::from_str(encoding) {
        headers.insert(header::CONTENT_ENCODING, value);
    }
    match body::decompress(&headers, &Bytes::copy_from_slice(data), max) {
        Ok(out) => {
            assert!(out.len() <= max, "{} bytes > max {max}", out.len());
            Some(out)
        }
        Err(e) => {
            check_refusal(
                &e,
                &[
                    StatusCode::BAD_REQUEST,
                    StatusCode::PAYLOAD_TOO_LARGE,
                    StatusCode::UNSUPPORTED_MEDIA_TYPE,
                ],
            );
            None
        }
    }
}

/// The legacy body of Sentry's `/store/` (base64 of zlib).
pub fn check_legacy_store(data: &[u8], budget: usize) -> Option<Inflated> {
    let _ = body::is_legacy_store_body(data);
    match body::decode_legacy_store_body_within(data, budget) {
        Ok(Inflated::Whole(out)) => {
            assert!(out.len() <= budget);
            Some(Inflated::Whole(out))
        }
        Ok(Inflated::Prefix(out)) => {
            assert_eq!(out.len(), budget);
            Some(Inflated::Prefix(out))
        }
        Err(e) => {
            check_refusal(&e, &[StatusCode::BAD_REQUEST]);
            None
        }
    }
}

/// [`sentry::parse_envelope`], then every event item through the mapping
/// and the pipeline. Returns the number of items, or `None` when refused.
pub fn check_envelope(data: &[u8], max_event_bytes: usize) -> Option<usize> {
    match sentry::parse_envelope(data, max_event_bytes) {
        Ok(envelope) => {
            assert!(envelope.items.len() <= MAX_ENVELOPE_ITEMS);
            let range = data.as_ptr_range();
            for item in &envelope.items {
                // Items borrow the body: no copy, and nothing past its end.
                let p = item.payload.as_ptr_range();
                assert!(
                    item.payload.is_empty() || (range.start <= p.start && p.end <= range.end),
                    "an item's payload lies outside the body"
                );
                if item.is_event() {
                    assert!(item.payload.len() <= max_event_bytes);
                    let id = envelope.header.event_id().unwrap_or(FALLBACK_ID);
                    check_sentry_event_with(item.payload, id);
                }
            }
            let _ = envelope.header.dsn.as_deref().map(check_key_parsers);
            Some(envelope.items.len())
        }
        Err(e) => {
            assert!(!e.to_string().is_empty());
            None
        }
    }
}

/// One Sentry event payload through [`sentry::map_event`] and the pipeline.
/// Returns whether it was mapped.
pub fn check_sentry_event(payload: &[u8]) -> bool {
    check_sentry_event_with(payload, FALLBACK_ID)
}

fn check_sentry_event_with(payload: &[u8], fallback_event_id: Uuid) -> bool {
    let ctx = SentryContext { fallback_event_id };
    match sentry::map_event(payload, &ctx) {
        Ok(event) => {
            check_pipeline(event, Content::Optional, payload.len());
            true
        }
        Err(e) => {
            assert!(!e.to_string().is_empty());
            assert!(!e.is_too_large(), "the mapping refuses on shape only");
            false
        }
    }
}

/// The native batch body (`POST /api/v1/events`). Returns how many events
/// it held, or `None` when the whole body was refused.
pub fn check_batch(data: &[u8], limits: &Limits) -> Option<usize> {
    match pipeline::decode_batch(data, limits) {
        Ok(events) => {
            assert!(events.len() <= limits.max_events_per_batch);
            for event in &events {
                match event {
                    Ok(event) => check_pipeline(event.clone(), Content::Required, data.len()),
                    Err(reason) => assert!(!reason.is_empty(), "a refusal without a reason"),
                }
            }
            Some(events.len())
        }
        Err(e) => {
            assert!(!e.to_string().is_empty());
            None
        }
    }
}

/// The seed's body (`POST /errors/custom`).
pub fn check_custom(data: &[u8]) -> bool {
    match pipeline::decode_custom(data, FALLBACK_ID) {
        Ok(event) => {
            check_pipeline(event, Content::Required, data.len());
            true
        }
        Err(e) => {
            assert!(!e.to_string().is_empty());
            false
        }
    }
}

/// [`stack_text::parse`] on any text: at most one frame per line, and the
/// error line is the text's first line.
pub fn check_stack_text(text: &str) -> Option<usize> {
    let parsed = stack_text::parse(text)?;
    let lines = text.lines().count();
    assert!(
        parsed.frames.len() <= lines,
        "{} frames from {lines} lines",
        parsed.frames.len()
    );
    assert!(!parsed.message.contains('\n'));
    assert!(["javascript", "python", "java"].contains(&parsed.platform));
    Some(parsed.frames.len())
}

/// The key parsers of the Sentry endpoints: a key is a part of its input.
pub fn check_key_parsers(text: &str) {
    let within = |part: &str| {
        let (outer, inner) = (
            text.as_bytes().as_ptr_range(),
            part.as_bytes().as_ptr_range(),
        );
        assert!(outer.start <= inner.start && inner.end <= outer.end);
        assert!(!part.is_empty());
    };
    if let Some((key, _project)) = sentry::dsn_key(text) {
        within(key);
    }
    if let Some(key) = sentry::auth_header_key(text) {
        within(key);
    }
    if let Some(key) = sentry::query_key(text) {
        within(key);
    }
}

/// Normalises, scrubs (every rule, IP addresses too) and fingerprints a
/// decoded event and checks what would be stored.
fn check_pipeline(event: Event, content: Content, input_len: usize) {
    let limits = Limits::default();
    let rules = pipeline::scrub::Rules::new(true, true);
    match pipeline::process_with(event, &ctx(), &limits, content, &rules) {
        Ok(normalized) => check_normalized(&normalized, &limits, input_len),
        Err(rejected) => assert!(!rejected.0.is_empty()),
    }
}

/// What the store relies on in a processed event: every text column free of
/// NUL (Postgres refuses it in `text`), each within its limit, and the event
/// document valid JSON no larger than a fixed multiple of the input.
pub fn check_normalized(n: &NormalizedEvent, l: &Limits, input_len: usize) {
    let chars = |s: &str| s.chars().count();
    let columns: [(&str, &str); 10] = [
        ("service", &n.service),
        ("error_type", &n.error_type),
        ("message", &n.message),
        ("environment", &n.environment),
        ("path", &n.path),
        ("trace_id", &n.trace_id),
        ("title", &n.title),
        ("fingerprint", &n.fingerprint),
        ("cluster_key", &n.cluster_key),
        ("culprit", n.culprit.as_deref().unwrap_or("")),
    ];
    for (name, value) in columns {
        assert!(!value.contains('\0'), "NUL in {name}: {value:?}");
    }
    for (name, value) in [("release", &n.release), ("host", &n.host)] {
        if let Some(value) = value {
            assert!(!value.contains('\0'), "NUL in {name}");
            assert!(chars(value) <= l.max_name_chars, "{name} too long");
        }
    }
    assert!(!n.service.is_empty() && chars(&n.service) <= l.max_name_chars);
    assert!(!n.environment.is_empty() && chars(&n.environment) <= l.max_name_chars);
    assert!(
        chars(&n.error_type) <= l.max_name_chars,
        "error_type too long"
    );
    assert!(
        chars(&n.message) <= l.max_name_chars + 2 + l.max_message_chars,
        "message too long"
    );
    assert!(chars(&n.title) <= MAX_TITLE_CHARS + 1, "title too long");
    assert!(chars(&n.path) <= l.max_value_chars, "path too long");
    assert!(
        chars(&n.trace_id) <= l.max_name_chars.max(32),
        "trace id too long"
    );
    assert!(
        n.culprit.as_deref().map_or(0, chars) <= l.max_value_chars * 2 + 8,
        "culprit too long"
    );
    assert_eq!(n.fingerprint.len(), 32);
    assert!(n.fingerprint.bytes().all(|b| b.is_ascii_hexdigit()));
    // The event's own fields (environment, service, level, release, host,
    // path) come on top of the client's tags.
    assert!(n.tags.len() <= l.max_tags + 6, "{} tags", n.tags.len());
    for (k, v) in &n.tags {
        assert!(!k.contains('\0') && !v.contains('\0'), "NUL in tag {k:?}");
        assert!(chars(k) <= l.max_name_chars, "tag key too long");
        // A path's template may be longer than the path (`1` → `<int>`).
        assert!(chars(v) <= l.max_value_chars * 5, "tag {k:?} too long");
    }
    let event = &n.event;
    assert!(event.exception.len() <= l.max_exceptions);
    assert!(event.breadcrumbs.len() <= l.max_breadcrumbs);
    let frames = event
        .exception
        .iter()
        .filter_map(|e| e.stacktrace.as_ref())
        .chain(event.stacktrace.as_ref())
        .chain(event.threads.iter().filter_map(|t| t.stacktrace.as_ref()));
    for stacktrace in frames {
        assert!(stacktrace.frames.len() <= l.max_frames);
    }
    let json = n.event_json();
    assert!(!json.as_bytes().contains(&0), "NUL byte in the stored JSON");
    let reparsed: Result<Event, _> = serde_json::from_str(json);
    assert!(
        reparsed.is_ok(),
        "stored JSON does not read back: {reparsed:?}"
    );
    // Escaping may make a character six bytes (`\u0001`); defaults, tags
    // and the frames the mapping derives add a bounded amount.
    let bound = 6 * input_len + 64 * 1024;
    assert!(
        json.len() <= bound,
        "{} bytes of JSON from {input_len} bytes of input",
        json.len()
    );
}
