//! The ingest pipeline: decode → normalise → scrub → fingerprint.
//!
//! **Architecture Invariant**: everything in this folder is pure. No IO, no
//! clock, no randomness: the time of receipt and the project come in through
//! [`Context`], so the same input always gives the same output, and grouping
//! can be snapshot-tested. The order of the stages is written once, in
//! [`process`].
//!
//! Decoding happens before [`process`] because a body holds many events:
//! [`decode_batch`] splits it and reports each bad event by its index, and
//! [`decode_custom`] reads the legacy seed endpoint's body. Neither invents
//! ids: the caller passes a generated id to [`decode_custom`] for reports
//! that come without one.
//!
//! ```
//! use chrono::{TimeZone, Utc};
//! use errorflow_collector::pipeline::{decode_batch, process, Context, Limits};
//!
//! let body = br#"{"events": [{"event_id": "6f1c0b8e-3b1f-4bb1-9a57-0d7e2f7d1c11",
//!     "service": "user-api", "exception": [{"type": "NotFound", "value": "user 42 not found"}]}]}"#;
//! let limits = Limits::default();
//! let ctx = Context { project_id: 1, received_at: Utc.with_ymd_and_hms(2026, 11, 27, 12, 0, 0).unwrap() };
//! let event = decode_batch(body, &limits).unwrap().remove(0).unwrap();
//! let normalized = process(event, &ctx, &limits).unwrap();
//! assert_eq!(normalized.title, "NotFound: user <int> not found");
//! assert_eq!(normalized.cluster_key, "user-api:NotFound");
//! ```

use chrono::{DateTime, Utc};
use errorflow_sdk::protocol::Event;

use crate::model::NormalizedEvent;

pub mod decode;
pub mod fingerprint;
pub mod frames;
pub mod normalize;
pub mod parameterize;
pub mod scrub;
pub mod sentry;
pub mod stack_text;

pub use decode::{decode_batch, decode_custom, CustomError, DecodeError};
pub use fingerprint::FINGERPRINT_VERSION;
pub use parameterize::parameterize;

/// Documented ingest limits. Strings longer than their limit are truncated
/// (on a character boundary, with `…`), collections are capped; an event whose
/// JSON is larger than `max_event_bytes` is rejected.
#[derive(Debug, Clone, PartialEq)]
pub struct Limits {
    /// Request body as sent (possibly compressed).
    pub max_body_bytes: usize,
    /// Request body after decompression.
    pub max_decompressed_bytes: usize,
    pub max_events_per_batch: usize,
    /// One event's JSON.
    pub max_event_bytes: usize,
    /// `message`, exception values.
    pub max_message_chars: usize,
    /// Short identifiers: service, environment, release, host, error type, tag keys, logger…
    pub max_name_chars: usize,
    /// Tag values, paths, URLs, frame fields.
    pub max_value_chars: usize,
    pub max_tags: usize,
    pub max_breadcrumbs: usize,
    pub max_exceptions: usize,
    pub max_frames: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_body_bytes: 5 * 1024 * 1024,
            max_decompressed_bytes: 20 * 1024 * 1024,
            max_events_per_batch: 1000,
            max_event_bytes: 1024 * 1024,
            max_message_chars: 8 * 1024,
            max_name_chars: 200,
            max_value_chars: 1024,
            max_tags: 50,
            max_breadcrumbs: 100,
            max_exceptions: 10,
            max_frames: 250,
        }
    }
}

/// What the pipeline knows besides the event itself.
#[derive(Debug, Clone, Copy)]
pub struct Context {
    pub project_id: i64,
    pub received_at: DateTime<Utc>,
}

/// Why one event was refused (the batch's other events are unaffected).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Rejected(pub String);

/// Runs the pipeline stages on one decoded event, in their one fixed order,
/// with the default scrubbing ([`scrub::Rules::default`]: Sentry's rules).
pub fn process(event: Event, ctx: &Context, limits: &Limits) -> Result<NormalizedEvent, Rejected> {
    static DEFAULT: std::sync::LazyLock<scrub::Rules> = std::sync::LazyLock::new(Default::default);
    process_with(event, ctx, limits, normalize::Content::Required, &DEFAULT)
}

/// [`process`] with a protocol's content rule (Sentry's events may carry
/// neither message nor exception: see [`normalize::Content`]) and the
/// project's scrubbing rules.
///
/// Every protocol's events pass through here, so scrubbing happens once,
/// after the bounds of normalisation and before grouping: no title,
/// stored document or model prompt holds what the rules remove.
pub fn process_with(
    event: Event,
    ctx: &Context,
    limits: &Limits,
    content: normalize::Content,
    rules: &scrub::Rules,
) -> Result<NormalizedEvent, Rejected> {
    let mut event = normalize::normalize_with(event, ctx, limits, content)?;
    scrub::scrub(&mut event, rules);
    Ok(fingerprint::build(event, ctx))
}
