//! Wire types shared by the SDK and the collector.
//!
//! Everything here derives `Serialize`/`Deserialize` and is a contract: the
//! collector accepts what the SDK sends, and older SDKs must keep working.
//! Fields are optional unless an event cannot be understood without them, and
//! unknown fields are ignored so that newer SDKs can add fields.
//!
//! This module has no runtime dependencies: build the crate with
//! `default-features = false` to get only these types.
//!
//! ```
//! use errorflow_sdk::protocol::{Batch, Event, Exception, Level};
//!
//! let mut event = Event::new(Level::Error);
//! event.message = Some("payment for order 42 failed".into());
//! event.exception.push(Exception::new("PaymentError", "card declined"));
//! let batch = Batch { events: vec![event] };
//! let json = serde_json::to_string(&batch).unwrap();
//! let back: Batch = serde_json::from_str(&json).unwrap();
//! assert_eq!(back, batch);
//! ```

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// The body of `POST /api/v1/events`: a batch of events from one client.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct Batch {
    pub events: Vec<Event>,
}

/// The collector's answer to a batch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct BatchResponse {
    /// Events stored by this request.
    pub accepted: u64,
    /// Events whose `event_id` the collector already had (a retried batch).
    pub duplicates: u64,
    /// Events refused, by their index in the batch; their neighbours are kept.
    pub rejected: Vec<Rejection>,
}

/// One refused event of a batch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rejection {
    pub index: usize,
    pub error: String,
}

/// Severity of an event, as in `tracing` and Sentry.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, Default,
)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    Debug,
    Info,
    #[serde(alias = "warn")]
    Warning,
    #[default]
    Error,
    #[serde(alias = "critical")]
    Fatal,
}

impl Level {
    /// The lowercase name used on the wire and in storage.
    pub fn as_str(self) -> &'static str {
        match self {
            Level::Debug => "debug",
            Level::Info => "info",
            Level::Warning => "warning",
            Level::Error => "error",
            Level::Fatal => "fatal",
        }
    }

    /// Parses the wire name (and the common aliases `warn`, `critical`).
    pub fn parse(s: &str) -> Option<Level> {
        match s.to_ascii_lowercase().as_str() {
            "debug" | "trace" => Some(Level::Debug),
            "info" => Some(Level::Info),
            "warning" | "warn" => Some(Level::Warning),
            "error" => Some(Level::Error),
            "fatal" | "critical" => Some(Level::Fatal),
            _ => None,
        }
    }
}

/// A UUIDv7 for the instant `at`: 48 bits of Unix milliseconds, then random
/// bits. Ids made this way sort by time, so the collector's unique index on
/// event ids grows at its end instead of touching a random page per event
/// (on SQLite that halves the write cost of an event; see BENCHMARKS.md).
///
/// The random bits come from the generator of `rand`'s `thread_rng` when the
/// SDK's client is built (cheap, and it reseeds after `fork`, so a forked
/// worker does not repeat its parent's ids, which the collector would drop as
/// retries), else from the operating system through `uuid`.
pub fn time_ordered_id(at: DateTime<Utc>) -> Uuid {
    let millis = u64::try_from(at.timestamp_millis()).unwrap_or(0);
    uuid::Builder::from_unix_timestamp_millis(millis, &random_bits()).into_uuid()
}

#[cfg(feature = "client")]
fn random_bits() -> [u8; 10] {
    let mut bits = [0u8; 10];
    fill_random(&mut bits);
    bits
}

/// Fills `bytes` from this thread's [`EVENT_RNG`].
#[cfg(feature = "client")]
pub(crate) fn fill_random(bytes: &mut [u8]) {
    use rand::{RngCore, SeedableRng};
    EVENT_RNG.with(|rng| {
        // Never borrowed twice: nothing here calls back into the SDK.
        rng.borrow_mut()
            .get_or_insert_with(|| {
                let core = rand_chacha::ChaCha12Core::from_rng(rand::rngs::OsRng)
                    .expect("the operating system's random source works");
                EventRng::new(core, EVENT_RNG_RESEED_BYTES, rand::rngs::OsRng)
            })
            .fill_bytes(bytes);
    });
}

/// The generator behind `rand`'s `thread_rng`: ChaCha12, reseeded from the
/// operating system every 64 KiB of output and after `fork` (a forked worker
/// must not repeat its parent's ids, which the collector would drop as
/// retries).
#[cfg(feature = "client")]
type EventRng = rand::rngs::adapter::ReseedingRng<rand_chacha::ChaCha12Core, rand::rngs::OsRng>;

#[cfg(feature = "client")]
const EVENT_RNG_RESEED_BYTES: u64 = 64 * 1024;

#[cfg(feature = "client")]
thread_local! {
    /// This thread's [`EventRng`]. Unlike `thread_rng`'s, this thread-local
    /// has no destructor, so it still works while the thread's other
    /// thread-locals are being destroyed: `thread_rng` panics then, a panic
    /// there aborts the process, and code does log from destructors (a pool
    /// closing, say).
    static EVENT_RNG: std::cell::RefCell<Option<EventRng>> = const { std::cell::RefCell::new(None) };
}

// The property `EVENT_RNG` relies on: nothing to drop, so no destructor.
#[cfg(feature = "client")]
const _: () = assert!(!std::mem::needs_drop::<Option<EventRng>>());

#[cfg(not(feature = "client"))]
fn random_bits() -> [u8; 10] {
    // A v4 UUID's last ten bytes: random but for its version and variant
    // bits, which are where the v7 builder writes its own.
    let v4 = Uuid::new_v4();
    let mut bits = [0u8; 10];
    bits.copy_from_slice(&v4.as_bytes()[6..]);
    bits
}

/// One error event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// Unique per project; a retried event with the same id is stored once.
    /// [`Event::new`] makes a time-ordered UUIDv7 (see [`time_ordered_id`]);
    /// any UUID is accepted.
    pub event_id: Uuid,
    /// When the error happened, in UTC. The collector uses its own clock when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timestamp: Option<DateTime<Utc>>,
    #[serde(default)]
    pub level: Level,
    /// `rust`, `python`, `javascript`, … ; guides grouping of stack frames.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<String>,
    /// The formatted message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// The message before formatting (`payment for order {} failed`), when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message_template: Option<String>,
    /// The logger or `tracing` target.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub logger: Option<String>,
    /// The service that raised the error (`user-api`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<String>,
    /// `prod`, `staging`, …
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub environment: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub release: Option<String>,
    /// The host name (Sentry's `server_name`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// The route or operation being served (`GET /users/{id}`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transaction: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trace_id: Option<String>,
    /// The exception chain, outermost first; each `source()` follows its parent.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub exception: Vec<Exception>,
    /// Stack of the thread that logged the event when there is no exception.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stacktrace: Option<Stacktrace>,
    /// Searchable key/value pairs.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub tags: BTreeMap<String, String>,
    /// Free-form structured context (span fields, event fields, runtime).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub extra: BTreeMap<String, serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request: Option<Request>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<User>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub breadcrumbs: Vec<Breadcrumb>,
    /// Client-chosen grouping; `{{ default }}` stands for the server's own fingerprint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fingerprint: Option<Vec<String>>,
    /// The SDK that sent the event (`errorflow-sdk/0.1.0`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sdk: Option<String>,
    /// The threads running when the event happened (Sentry's `threads`),
    /// each with its stack when the SDK sent one.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub threads: Vec<Thread>,
    /// Annotations of the event's values by the SDK or a relay, as Sentry's
    /// `_meta`: a tree shaped like the event whose `""` entries say what was
    /// done to the value at that place (`rem`: removed or replaced, and by
    /// which rule).
    #[serde(default, rename = "_meta", skip_serializing_if = "Option::is_none")]
    pub meta: Option<serde_json::Value>,
}

impl Event {
    /// A new event with a fresh time-ordered id and the current time.
    pub fn new(level: Level) -> Event {
        let now = Utc::now();
        Event {
            timestamp: Some(now),
            ..Event::with_id(time_ordered_id(now), level)
        }
    }

    /// An empty event with the given id and no timestamp; reads neither the
    /// clock nor a random source (the collector's pure pipeline builds
    /// events this way).
    pub fn with_id(event_id: Uuid, level: Level) -> Event {
        Event {
            event_id,
            timestamp: None,
            level,
            platform: None,
            message: None,
            message_template: None,
            logger: None,
            service: None,
            environment: None,
            release: None,
            host: None,
            transaction: None,
            trace_id: None,
            exception: Vec::new(),
            stacktrace: None,
            tags: BTreeMap::new(),
            extra: BTreeMap::new(),
            request: None,
            user: None,
            breadcrumbs: Vec::new(),
            fingerprint: None,
            sdk: None,
            threads: Vec::new(),
            meta: None,
        }
    }
}

/// One error of an exception chain.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Exception {
    /// The error's type (`std::io::Error`, `KeyError`, `TypeError`).
    #[serde(rename = "type")]
    pub ty: String,
    /// The error's message.
    #[serde(default)]
    pub value: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub module: Option<String>,
    /// How it was caught: `panic`, `tracing`, `middleware`, …
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mechanism: Option<String>,
    /// Whether the application handled it; `false` for panics and uncaught errors.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub handled: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stacktrace: Option<Stacktrace>,
}

impl Exception {
    pub fn new(ty: impl Into<String>, value: impl Into<String>) -> Exception {
        Exception {
            ty: ty.into(),
            value: value.into(),
            module: None,
            mechanism: None,
            handled: None,
            stacktrace: None,
        }
    }
}

/// One thread of the process, as Sentry reports them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct Thread {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The thread that crashed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub crashed: Option<bool>,
    /// The thread that captured the event (Sentry's `current`, or the Java
    /// SDK's `errored`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stacktrace: Option<Stacktrace>,
}

/// Stack frames, **innermost last** (the frame that raised is the last one), as in Sentry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct Stacktrace {
    pub frames: Vec<Frame>,
}

/// One stack frame.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct Frame {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub function: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub module: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filename: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub abs_path: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lineno: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub colno: Option<u32>,
    /// Whether the frame is the application's own code (not a dependency or the runtime).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub in_app: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub context_line: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pre_context: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub post_context: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instruction_addr: Option<String>,
    /// Native code: the binary or library the frame is in (Sentry's
    /// `package`: `/usr/lib/system/libdyld.dylib`, an app bundle's executable).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub package: Option<String>,
    /// Native code: the start address of the frame's function, as sent (`0x…`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub symbol_addr: Option<String>,
    /// Native code: the load address of the frame's image, as sent (`0x…`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_addr: Option<String>,
}

/// The HTTP request being served when the error happened.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct Request {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
    /// The URL or path.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// The matched route template (`/users/{id}`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub route: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub query_string: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency_ms: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_ip: Option<String>,
}

/// The user affected.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct User {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip_address: Option<String>,
}

/// Something that happened before the error (a log line, an HTTP call).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Breadcrumb {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timestamp: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub category: Option<String>,
    #[serde(default)]
    pub level: Level,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub data: BTreeMap<String, serde_json::Value>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_events_get_distinct_ids_that_sort_by_time() {
        let a = Event::new(Level::Error);
        let b = Event::new(Level::Error);
        assert_ne!(a.event_id, b.event_id);
        assert_eq!(a.event_id.get_version_num(), 7);
        // The id carries the event's own timestamp, to the millisecond.
        let (secs, nanos) = a.event_id.get_timestamp().unwrap().to_unix();
        let ts = a.timestamp.unwrap();
        assert_eq!(secs as i64, ts.timestamp());
        assert_eq!(nanos / 1_000_000, ts.timestamp_subsec_millis());

        let t0: DateTime<Utc> = "2026-11-27T10:00:00.000Z".parse().unwrap();
        let earlier: Vec<Uuid> = (0..100).map(|_| time_ordered_id(t0)).collect();
        let later = time_ordered_id(t0 + chrono::Duration::milliseconds(1));
        assert!(earlier.iter().all(|id| *id < later));
        // Ids at one instant still differ (74 random bits).
        let distinct: std::collections::BTreeSet<_> = earlier.iter().collect();
        assert_eq!(distinct.len(), earlier.len());
    }

    #[test]
    fn minimal_event_parses_with_defaults() {
        let e: Event = serde_json::from_str(
            r#"{"event_id":"6f1c0b8e-3b1f-4bb1-9a57-0d7e2f7d1c11","message":"x"}"#,
        )
        .unwrap();
        assert_eq!(e.level, Level::Error);
        assert!(e.exception.is_empty());
        assert_eq!(e.timestamp, None);
    }

    #[test]
    fn level_aliases() {
        let l: Level = serde_json::from_str("\"warn\"").unwrap();
        assert_eq!(l, Level::Warning);
        assert_eq!(Level::parse("CRITICAL"), Some(Level::Fatal));
        assert_eq!(Level::parse("nope"), None);
    }

    #[test]
    fn exception_type_is_renamed_on_the_wire() {
        let json = serde_json::to_value(Exception::new("KeyError", "'a'")).unwrap();
        assert_eq!(json["type"], "KeyError");
        assert_eq!(json["value"], "'a'");
    }

    #[test]
    fn full_event_round_trips() {
        let mut e = Event::new(Level::Fatal);
        e.message = Some("boom".into());
        e.tags.insert("k".into(), "v".into());
        e.exception.push(Exception {
            stacktrace: Some(Stacktrace {
                frames: vec![Frame {
                    function: Some("app::main".into()),
                    lineno: Some(3),
                    in_app: Some(true),
                    ..Frame::default()
                }],
            }),
            ..Exception::new("Panic", "boom")
        });
        e.request = Some(Request {
            method: Some("GET".into()),
            ..Request::default()
        });
        e.breadcrumbs.push(Breadcrumb {
            timestamp: None,
            category: Some("log".into()),
            level: Level::Info,
            message: Some("started".into()),
            data: BTreeMap::new(),
        });
        let s = serde_json::to_string(&e).unwrap();
        assert_eq!(serde_json::from_str::<Event>(&s).unwrap(), e);
    }

    #[test]
    fn native_frames_threads_and_meta_are_optional_on_the_wire() {
        // Absent, they are not written: older readers see what they saw.
        let plain = serde_json::to_value(Event::with_id(Uuid::nil(), Level::Error)).unwrap();
        for key in ["threads", "_meta", "meta"] {
            assert!(plain.get(key).is_none(), "{key}: {plain}");
        }
        let frame = serde_json::to_value(Frame::default()).unwrap();
        assert_eq!(frame, serde_json::json!({}));

        let mut e = Event::with_id(Uuid::nil(), Level::Error);
        e.threads.push(Thread {
            id: Some("7".into()),
            crashed: Some(true),
            stacktrace: Some(Stacktrace {
                frames: vec![Frame {
                    package: Some("/usr/lib/libc.so.6".into()),
                    instruction_addr: Some("0x10".into()),
                    symbol_addr: Some("0x8".into()),
                    image_addr: Some("0x0".into()),
                    ..Frame::default()
                }],
            }),
            ..Thread::default()
        });
        e.meta = Some(serde_json::json!({"user": {"email": {"": {"rem": [["@email", "s"]]}}}}));
        let json = serde_json::to_value(&e).unwrap();
        assert_eq!(json["_meta"]["user"]["email"][""]["rem"][0][0], "@email");
        assert_eq!(
            json["threads"][0]["stacktrace"]["frames"][0]["package"],
            "/usr/lib/libc.so.6"
        );
        assert_eq!(serde_json::from_value::<Event>(json).unwrap(), e);
    }
}
