//! Decoding request bodies into events.
//!
//! A batch body is split into its events first, and each event is decoded on
//! its own: a malformed event is reported by its index while its neighbours
//! are kept. Only problems with the body as a whole (not UTF-8, not JSON, not
//! `{"events": [...]}`, too deep, too many events) refuse the whole batch.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use errorflow_sdk::protocol::{Event, Exception, Level, Request};
use serde::Deserialize;
use serde_json::value::RawValue;
use uuid::Uuid;

use super::stack_text;
use super::Limits;

/// How deeply arrays and objects may nest in a body. This is serde_json's own
/// recursion limit; checking it up front turns it into a body-level error
/// instead of a confusing per-event one.
pub const MAX_DEPTH: usize = 128;

/// Why a whole body was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("body is not valid utf-8 (invalid byte at offset {valid_up_to})")]
    InvalidUtf8 { valid_up_to: usize },
    /// Not JSON at all; the message names the line and column.
    #[error("body is not valid json: {message}")]
    Malformed { message: String },
    #[error(
        "body nests arrays and objects deeper than {max} levels (at line {line} column {column})"
    )]
    TooDeep {
        max: usize,
        line: usize,
        column: usize,
    },
    /// JSON, but not the expected shape.
    #[error("unexpected body shape: {message}")]
    WrongShape { message: String },
    #[error("batch has {count} events, more than the limit of {max}")]
    TooManyEvents { count: usize, max: usize },
}

impl DecodeError {
    fn from_json(e: serde_json::Error) -> DecodeError {
        match e.classify() {
            serde_json::error::Category::Data => DecodeError::WrongShape {
                message: e.to_string(),
            },
            _ => DecodeError::Malformed {
                message: e.to_string(),
            },
        }
    }
}

#[derive(Deserialize)]
struct RawBatch<'a> {
    #[serde(borrow)]
    events: Vec<&'a RawValue>,
}

/// Decodes `{"events": [...]}` (already decompressed). The outer `Result`
/// refuses the whole body; each inner `Err` is the reason one event was
/// refused (without its index, which the caller adds).
pub fn decode_batch(
    body: &[u8],
    limits: &Limits,
) -> Result<Vec<Result<Event, String>>, DecodeError> {
    let text = std::str::from_utf8(body).map_err(|e| DecodeError::InvalidUtf8 {
        valid_up_to: e.valid_up_to(),
    })?;
    check_depth(text)?;
    let batch: RawBatch<'_> = match serde_json::from_str(text) {
        Ok(batch) => batch,
        Err(e) if e.classify() == serde_json::error::Category::Data => {
            return Err(DecodeError::WrongShape {
                message: format!("expected an object with an `events` array: {e}"),
            })
        }
        Err(e) => return Err(DecodeError::from_json(e)),
    };
    if batch.events.len() > limits.max_events_per_batch {
        return Err(DecodeError::TooManyEvents {
            count: batch.events.len(),
            max: limits.max_events_per_batch,
        });
    }
    Ok(batch
        .events
        .into_iter()
        .map(|raw| decode_event(raw.get(), limits))
        .collect())
}

/// Decodes one element of the `events` array.
fn decode_event(json: &str, limits: &Limits) -> Result<Event, String> {
    if json.len() > limits.max_event_bytes {
        return Err(format!(
            "event is {} bytes, more than the limit of {}",
            json.len(),
            limits.max_event_bytes
        ));
    }
    if !json.starts_with('{') {
        return Err(format!(
            "event must be a json object, got {}",
            json_kind(json)
        ));
    }
    serde_json::from_str(json)
        .map_err(|e| format!("invalid event: {}", with_field::<Event>(json, e)))
}

/// `e`, a failure to decode `text` as `T`, prefixed with the path of the
/// field it is about (`tags.env: invalid type: …`) when there is one.
/// The path is found by decoding again with it tracked, which happens only
/// for a refused body: the accepted ones pay nothing for it.
fn with_field<'de, T: Deserialize<'de>>(text: &'de str, e: serde_json::Error) -> String {
    if e.classify() != serde_json::error::Category::Data {
        return e.to_string();
    }
    let mut de = serde_json::Deserializer::from_str(text);
    match serde_path_to_error::deserialize::<_, T>(&mut de) {
        Err(tracked) if tracked.path().iter().next().is_some() => {
            format!("{}: {}", tracked.path(), tracked.inner())
        }
        _ => e.to_string(),
    }
}

/// Names the kind of a JSON value from its first character.
fn json_kind(json: &str) -> &'static str {
    match json.as_bytes().first() {
        Some(b'[') => "an array",
        Some(b'"') => "a string",
        Some(b't' | b'f') => "a boolean",
        Some(b'n') => "null",
        _ => "a number",
    }
}

/// Refuses bodies nested deeper than [`MAX_DEPTH`], in one pass over the
/// bytes. serde_json skips the contents of a `RawValue` without a depth
/// limit, so without this check deep nesting would only be noticed (and
/// reported as a per-event error) when each event is decoded.
fn check_depth(text: &str) -> Result<(), DecodeError> {
    let bytes = text.as_bytes();
    let mut depth = 0usize;
    let mut in_string = false;
    let mut escaped = false;
    for (i, &b) in bytes.iter().enumerate() {
        if in_string {
            if escaped {
                escaped = false;
            } else if b == b'\\' {
                escaped = true;
            } else if b == b'"' {
                in_string = false;
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                if depth > MAX_DEPTH {
                    let (line, column) = line_column(text, i);
                    return Err(DecodeError::TooDeep {
                        max: MAX_DEPTH,
                        line,
                        column,
                    });
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    Ok(())
}

/// One-based line and column of a byte offset, as serde_json reports them.
fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let before = &text.as_bytes()[..offset];
    let line = before.iter().filter(|&&b| b == b'\n').count() + 1;
    let column = offset
        - before
            .iter()
            .rposition(|&b| b == b'\n')
            .map_or(0, |p| p + 1)
        + 1;
    (line, column)
}

/// The body of the legacy seed endpoint, `POST /api/errors`, kept so that
/// existing clients (the seed's Node middleware) keep working.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct CustomError {
    pub service: String,
    pub error_type: String,
    /// Often a whole stack trace (`err.stack` in Node).
    pub message: String,
    #[serde(default)]
    pub path: Option<String>,
    #[serde(default)]
    pub env: Option<String>,
    #[serde(default)]
    pub trace_id: Option<String>,
    #[serde(default)]
    pub timestamp: Option<DateTime<Utc>>,
    #[serde(default)]
    pub release: Option<String>,
    /// A level name; unknown names count as `error`, as the seed stored
    /// every report as an error.
    #[serde(default)]
    pub level: Option<String>,
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
    #[serde(default)]
    pub event_id: Option<Uuid>,
}

impl CustomError {
    /// Converts the report into an event. `fallback_event_id` is used when
    /// the client sent none: the pipeline has no randomness of its own.
    pub fn into_event(self, fallback_event_id: Uuid) -> Event {
        let mut exception = Exception::new(self.error_type, "");
        exception.mechanism = Some("custom".to_owned());
        let mut platform = None;
        match stack_text::parse(&self.message) {
            Some(parsed) => {
                // `err.stack` starts with `TypeError: message`; the type is
                // already in `error_type`, so keep only the message part.
                let prefix = format!("{}: ", exception.ty);
                exception.value = parsed
                    .message
                    .strip_prefix(&prefix)
                    .unwrap_or(&parsed.message)
                    .to_owned();
                if !parsed.frames.is_empty() {
                    exception.stacktrace = Some(errorflow_sdk::protocol::Stacktrace {
                        frames: parsed.frames,
                    });
                }
                platform = Some(parsed.platform.to_owned());
            }
            None => exception.value = self.message,
        }

        Event {
            event_id: self.event_id.unwrap_or(fallback_event_id),
            timestamp: self.timestamp,
            level: self
                .level
                .as_deref()
                .and_then(Level::parse)
                .unwrap_or(Level::Error),
            platform,
            message: None,
            message_template: None,
            logger: None,
            service: Some(self.service),
            environment: Some(self.env.unwrap_or_else(|| "prod".to_owned())),
            release: self.release,
            host: None,
            transaction: None,
            trace_id: self.trace_id,
            exception: vec![exception],
            stacktrace: None,
            tags: self.tags,
            extra: BTreeMap::new(),
            request: self.path.map(|path| Request {
                url: Some(path),
                ..Request::default()
            }),
            user: None,
            breadcrumbs: Vec::new(),
            fingerprint: None,
            sdk: Some("legacy-custom-error".to_owned()),
            threads: Vec::new(),
            meta: None,
        }
    }
}

/// Decodes a legacy `{service, error_type, message, path?, env?}` report.
/// `fallback_event_id` becomes the event's id when the body has none.
pub fn decode_custom(body: &[u8], fallback_event_id: Uuid) -> Result<Event, DecodeError> {
    let text = std::str::from_utf8(body).map_err(|e| DecodeError::InvalidUtf8 {
        valid_up_to: e.valid_up_to(),
    })?;
    check_depth(text)?;
    let report: CustomError = serde_json::from_str(text).map_err(|e| match e.classify() {
        serde_json::error::Category::Data => DecodeError::WrongShape {
            message: with_field::<CustomError>(text, e),
        },
        _ => DecodeError::Malformed {
            message: e.to_string(),
        },
    })?;
    Ok(report.into_event(fallback_event_id))
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "6f1c0b8e-3b1f-4bb1-9a57-0d7e2f7d1c11";

    fn batch(events: &str) -> Vec<u8> {
        format!(r#"{{"events": [{events}]}}"#).into_bytes()
    }

    #[test]
    fn decodes_events_independently() {
        let body = batch(&format!(
            r#"{{"event_id":"{ID}","message":"a"}}, 3, {{"message":"no id"}}, {{"event_id":"nope"}}, {{"event_id":"{ID}","level":7}}"#
        ));
        let out = decode_batch(&body, &Limits::default()).unwrap();
        assert_eq!(out.len(), 5);
        assert_eq!(out[0].as_ref().unwrap().message.as_deref(), Some("a"));
        assert_eq!(
            out[1].as_ref().unwrap_err(),
            "event must be a json object, got a number"
        );
        assert!(
            out[2]
                .as_ref()
                .unwrap_err()
                .contains("missing field `event_id`"),
            "{:?}",
            out[2]
        );
        assert!(
            out[3].as_ref().unwrap_err().contains("UUID"),
            "{:?}",
            out[3]
        );
        // serde_json says "expected value" for a number where an enum belongs.
        assert!(
            out[4].as_ref().unwrap_err().starts_with("invalid event: "),
            "{:?}",
            out[4]
        );
    }

    #[test]
    fn empty_batch_is_fine() {
        assert!(decode_batch(b"{\"events\": []}", &Limits::default())
            .unwrap()
            .is_empty());
    }

    #[test]
    fn body_level_errors() {
        let l = Limits::default();
        assert_eq!(
            decode_batch(b"{\"events\": [\xff]}", &l).unwrap_err(),
            DecodeError::InvalidUtf8 { valid_up_to: 12 }
        );
        let e = decode_batch(b"{\"events\": [\n  {,]}", &l).unwrap_err();
        assert!(matches!(e, DecodeError::Malformed { .. }), "{e:?}");
        assert!(e.to_string().contains("line 2 column 4"), "{e}");
        for body in [
            &b"[]"[..],
            b"{}",
            b"{\"events\": {}}",
            b"{\"events\": null}",
            b"42",
        ] {
            let e = decode_batch(body, &l).unwrap_err();
            assert!(matches!(e, DecodeError::WrongShape { .. }), "{e:?}");
        }
        let deep = format!("{{\"events\": [{}{}]}}", "[".repeat(200), "]".repeat(200));
        let e = decode_batch(deep.as_bytes(), &l).unwrap_err();
        assert_eq!(
            e,
            DecodeError::TooDeep {
                max: 128,
                line: 1,
                column: 139
            }
        );
        // Brackets inside strings do not count.
        let strings = format!(
            r#"{{"events": [{{"event_id":"{ID}","message":"{}"}}]}}"#,
            "[".repeat(300)
        );
        assert!(decode_batch(strings.as_bytes(), &l).unwrap()[0].is_ok());
    }

    #[test]
    fn too_many_and_too_big() {
        let limits = Limits {
            max_events_per_batch: 2,
            max_event_bytes: 60,
            ..Limits::default()
        };
        let body = batch("{}, {}, {}");
        assert_eq!(
            decode_batch(&body, &limits).unwrap_err(),
            DecodeError::TooManyEvents { count: 3, max: 2 }
        );
        let body = batch(&format!(
            r#"{{"event_id":"{ID}","message":"{}"}}"#,
            "x".repeat(100)
        ));
        let out = decode_batch(&body, &limits).unwrap();
        assert!(
            out[0]
                .as_ref()
                .unwrap_err()
                .starts_with("event is 164 bytes"),
            "{:?}",
            out[0]
        );
    }

    #[test]
    fn custom_minimal() {
        let body = br#"{"service":"shop","error_type":"NotFound","message":"user 42 not found","path":"/users/42","extra":1}"#;
        let e = decode_custom(body, Uuid::nil()).unwrap();
        assert_eq!(e.event_id, Uuid::nil());
        assert_eq!(e.service.as_deref(), Some("shop"));
        assert_eq!(e.environment.as_deref(), Some("prod"));
        assert_eq!(e.exception[0].ty, "NotFound");
        assert_eq!(e.exception[0].value, "user 42 not found");
        assert_eq!(e.request.unwrap().url.as_deref(), Some("/users/42"));
        assert_eq!(e.level, Level::Error);
    }

    #[test]
    fn custom_optional_fields() {
        let body = format!(
            r#"{{"service":"s","error_type":"E","message":"m","env":"staging","event_id":"{ID}","level":"warn","timestamp":"2026-11-27T10:00:00Z","tags":{{"a":"b"}},"trace_id":"abc","release":"1.2"}}"#
        );
        let e = decode_custom(body.as_bytes(), Uuid::nil()).unwrap();
        assert_eq!(e.event_id.to_string(), ID);
        assert_eq!(e.level, Level::Warning);
        assert_eq!(e.environment.as_deref(), Some("staging"));
        assert_eq!(e.tags["a"], "b");
        assert_eq!(e.trace_id.as_deref(), Some("abc"));
        assert_eq!(e.release.as_deref(), Some("1.2"));
        assert!(e.timestamp.is_some());
    }

    #[test]
    fn custom_requires_its_fields() {
        let e = decode_custom(br#"{"service":"s","message":"m"}"#, Uuid::nil()).unwrap_err();
        assert!(e.to_string().contains("missing field `error_type`"), "{e}");
        let e = decode_custom(
            br#"{"service":"s","error_type":1,"message":"m"}"#,
            Uuid::nil(),
        )
        .unwrap_err();
        assert!(matches!(e, DecodeError::WrongShape { .. }), "{e:?}");
    }

    #[test]
    fn custom_parses_node_stack() {
        let body = serde_json::json!({
            "service": "shop",
            "error_type": "TypeError",
            "message": "TypeError: Cannot read properties of undefined (reading 'x')\n    at getUser (/app/src/users.js:10:5)\n    at Layer.handle [as handle_request] (/app/node_modules/express/lib/router/layer.js:95:5)\n    at process.processTicksAndRejections (node:internal/process/task_queues:95:5)",
        });
        let e = decode_custom(body.to_string().as_bytes(), Uuid::nil()).unwrap();
        let ex = &e.exception[0];
        assert_eq!(
            ex.value,
            "Cannot read properties of undefined (reading 'x')"
        );
        let frames = &ex.stacktrace.as_ref().unwrap().frames;
        assert_eq!(frames.len(), 3);
        // Innermost last.
        assert_eq!(frames[2].function.as_deref(), Some("getUser"));
        assert_eq!(frames[2].in_app, Some(true));
        assert_eq!(frames[1].in_app, Some(false));
        assert_eq!(frames[0].in_app, Some(false));
        assert_eq!(e.platform.as_deref(), Some("javascript"));
    }

    #[test]
    fn refusals_name_the_field_they_are_about() {
        let body = br#"{"service":"s","error_type":"E","message":"m","timestamp":"yesterday"}"#;
        let e = decode_custom(body, Uuid::nil()).unwrap_err().to_string();
        assert!(e.starts_with("unexpected body shape: timestamp: "), "{e}");
        let body = br#"{"service":"s","error_type":"E","message":"m","tags":{"env":1}}"#;
        let e = decode_custom(body, Uuid::nil()).unwrap_err().to_string();
        assert!(e.contains("tags.env: invalid type: integer `1`"), "{e}");

        let body = batch(&format!(
            r#"{{"event_id":"{ID}","message":"a","tags":{{"k":[1]}}}}, {{"event_id":"{ID}","exception":[{{"type":"E","value":"v","stacktrace":{{"frames":[{{"lineno":"x"}}]}}}}]}}"#
        ));
        let out = decode_batch(&body, &Limits::default()).unwrap();
        let errors: Vec<String> = out.into_iter().map(|r| r.unwrap_err()).collect();
        assert!(
            errors[0].starts_with("invalid event: tags.k: "),
            "{}",
            errors[0]
        );
        assert!(
            errors[1].starts_with("invalid event: exception[0].stacktrace.frames[0].lineno: "),
            "{}",
            errors[1]
        );
        // A body that is not JSON at all still says where it breaks.
        let e = decode_custom(b"{\"service\": ", Uuid::nil()).unwrap_err();
        assert!(matches!(e, DecodeError::Malformed { .. }), "{e}");
    }
}
