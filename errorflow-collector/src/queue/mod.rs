//! Queue mode: scaling out on NATS JetStream.
//!
//! One process does everything by default. With `--queue nats://…`, `serve`
//! runs an *ingest node*: it authenticates, rate-limits, decodes, normalises
//! and fingerprints as always, then publishes each event to the stream
//! instead of writing it, and answers 2xx only after JetStream acknowledged
//! the publish (the event is then durable in the stream). The `writer`
//! subcommand consumes the stream and writes to Postgres with the same
//! group-committed write path as the single process ([`writer`]).
//!
//! The stream's subjects are `<stream>.events.<partition>`; an event's
//! partition is a hash of its project and fingerprint, so that one incident
//! is only ever in one partition, and each partition has one writer at a
//! time. Every message carries `Nats-Msg-Id: <project>:<event id>`, so a
//! client's retry within the stream's duplicate window is stored in the
//! stream once; past it, the event id's uniqueness in the store still counts
//! it once.
//!
//! The stream is created at start-up when missing (file storage, work-queue
//! retention: a message is removed once a writer acknowledged it), with the
//! configured replicas and a two-minute duplicate window. Operators who
//! create it themselves must keep those settings and the subjects.

pub mod writer;

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::{self, stream};
use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::model::NormalizedEvent;

/// Where the queue is and how it is laid out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueOptions {
    /// `nats://host:4222` (several, comma-separated, for a cluster).
    pub url: String,
    /// The stream's name, and the first token of its subjects.
    pub stream: String,
    /// Partitions of the stream; fixed for a stream's life.
    pub partitions: u32,
    /// Copies of each message in a NATS cluster (1 for a single server).
    pub replicas: usize,
}

impl QueueOptions {
    pub const DEFAULT_STREAM: &'static str = "errorflow";
    pub const DEFAULT_PARTITIONS: u32 = 16;

    pub fn new(url: &str) -> QueueOptions {
        QueueOptions {
            url: url.to_string(),
            stream: Self::DEFAULT_STREAM.to_string(),
            partitions: Self::DEFAULT_PARTITIONS,
            replicas: 1,
        }
    }

    /// The subject of one partition.
    pub fn subject(&self, partition: u32) -> String {
        format!("{}.events.{partition}", self.stream)
    }
}

/// How long JetStream remembers a message id to drop a second publish.
pub const DUPLICATE_WINDOW: Duration = Duration::from_secs(120);

#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    #[error("cannot connect to NATS at {url}: {reason}")]
    Connect { url: String, reason: String },
    #[error("cannot set up the JetStream stream {stream:?}: {reason}")]
    Stream { stream: String, reason: String },
    #[error("the queue did not acknowledge the events: {0}")]
    Publish(String),
}

/// The partition of an incident: FNV-1a over the project id and the
/// fingerprint, so that every process, whatever its build, computes the
/// same partition (the standard library's hasher is not stable across
/// releases, and a crate for eight lines of arithmetic is not worth it).
pub fn partition(project_id: i64, fingerprint: &str, partitions: u32) -> u32 {
    const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0100_0000_01b3;
    let mut h = OFFSET;
    for b in project_id
        .to_le_bytes()
        .iter()
        .chain(fingerprint.as_bytes())
    {
        h ^= u64::from(*b);
        h = h.wrapping_mul(PRIME);
    }
    // The remainder is below `partitions`, a u32.
    (h % u64::from(partitions.max(1))) as u32
}

/// An event on the wire: the normalised event's fields, and its stored JSON
/// as it was encoded at ingest (the writer stores those very bytes).
#[derive(Serialize, Deserialize)]
struct Wire<'a> {
    /// The wire format's version; a writer refuses one it does not know.
    v: u8,
    project_id: i64,
    event_id: uuid::Uuid,
    timestamp: chrono::DateTime<chrono::Utc>,
    received_at: chrono::DateTime<chrono::Utc>,
    level: errorflow_sdk::protocol::Level,
    #[serde(borrow)]
    service: std::borrow::Cow<'a, str>,
    #[serde(borrow)]
    error_type: std::borrow::Cow<'a, str>,
    #[serde(borrow)]
    message: std::borrow::Cow<'a, str>,
    #[serde(borrow)]
    environment: std::borrow::Cow<'a, str>,
    #[serde(borrow)]
    path: std::borrow::Cow<'a, str>,
    #[serde(borrow)]
    trace_id: std::borrow::Cow<'a, str>,
    release: Option<String>,
    host: Option<String>,
    #[serde(borrow)]
    title: std::borrow::Cow<'a, str>,
    culprit: Option<String>,
    #[serde(borrow)]
    fingerprint: std::borrow::Cow<'a, str>,
    fingerprint_version: i32,
    #[serde(borrow)]
    cluster_key: std::borrow::Cow<'a, str>,
    tags: std::collections::BTreeMap<String, String>,
    #[serde(borrow)]
    event: &'a serde_json::value::RawValue,
}

const WIRE_VERSION: u8 = 1;

/// The message body of an event.
pub fn encode(e: &NormalizedEvent) -> Result<Vec<u8>, serde_json::Error> {
    let raw = serde_json::value::RawValue::from_string(e.event_json().to_string())?;
    serde_json::to_vec(&Wire {
        v: WIRE_VERSION,
        project_id: e.project_id,
        event_id: e.event_id,
        timestamp: e.timestamp,
        received_at: e.received_at,
        level: e.level,
        service: (&e.service).into(),
        error_type: (&e.error_type).into(),
        message: (&e.message).into(),
        environment: (&e.environment).into(),
        path: (&e.path).into(),
        trace_id: (&e.trace_id).into(),
        release: e.release.clone(),
        host: e.host.clone(),
        title: (&e.title).into(),
        culprit: e.culprit.clone(),
        fingerprint: (&e.fingerprint).into(),
        fingerprint_version: e.fingerprint_version,
        cluster_key: (&e.cluster_key).into(),
        tags: e.tags.clone(),
        event: &raw,
    })
}

/// The event a message carries.
pub fn decode(body: &[u8]) -> Result<NormalizedEvent, String> {
    #[derive(Deserialize)]
    struct Head {
        v: u8,
    }
    let w: Wire<'_> = match serde_json::from_slice(body) {
        Ok(w) => w,
        // A message of another version may lack this one's fields: say so.
        Err(e) => match serde_json::from_slice::<Head>(body) {
            Ok(h) if h.v != WIRE_VERSION => {
                return Err(format!("wire format version {} is not {WIRE_VERSION}", h.v))
            }
            _ => return Err(e.to_string()),
        },
    };
    if w.v != WIRE_VERSION {
        return Err(format!("wire format version {} is not {WIRE_VERSION}", w.v));
    }
    let event = serde_json::from_str(w.event.get()).map_err(|e| e.to_string())?;
    let json = std::sync::OnceLock::new();
    let _ = json.set(w.event.get().to_string());
    Ok(NormalizedEvent {
        project_id: w.project_id,
        event_id: w.event_id,
        timestamp: w.timestamp,
        received_at: w.received_at,
        level: w.level,
        service: w.service.into_owned(),
        error_type: w.error_type.into_owned(),
        message: w.message.into_owned(),
        environment: w.environment.into_owned(),
        path: w.path.into_owned(),
        trace_id: w.trace_id.into_owned(),
        release: w.release,
        host: w.host,
        title: w.title.into_owned(),
        culprit: w.culprit,
        fingerprint: w.fingerprint.into_owned(),
        fingerprint_version: w.fingerprint_version,
        cluster_key: w.cluster_key.into_owned(),
        tags: w.tags,
        event,
        event_json: json,
    })
}

/// Connects to NATS and makes sure the stream exists (idempotent).
pub async fn connect(options: &QueueOptions) -> Result<jetstream::Context, QueueError> {
    let client = async_nats::ConnectOptions::new()
        .name("errorflow-collector")
        .retry_on_initial_connect()
        .connection_timeout(Duration::from_secs(5))
        .connect(options.url.as_str())
        .await
        .map_err(|e| QueueError::Connect {
            url: options.url.clone(),
            reason: e.to_string(),
        })?;
    let js = jetstream::new(client);
    ensure_stream(&js, options).await?;
    Ok(js)
}

async fn ensure_stream(js: &jetstream::Context, options: &QueueOptions) -> Result<(), QueueError> {
    // The initial connection is retried in the background: wait for it
    // here (bounded), so that a wrong URL is an error at start-up.
    let mut attempt = 0;
    loop {
        let result = js
            .get_or_create_stream(stream::Config {
                name: options.stream.clone(),
                subjects: vec![format!("{}.events.*", options.stream)],
                storage: stream::StorageType::File,
                retention: stream::RetentionPolicy::WorkQueue,
                num_replicas: options.replicas.max(1),
                duplicate_window: DUPLICATE_WINDOW,
                ..Default::default()
            })
            .await;
        match result {
            Ok(_) => return Ok(()),
            Err(e) if attempt < 10 => {
                attempt += 1;
                tracing::warn!(error = %e, attempt, "JetStream not ready; retrying");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            Err(e) => {
                return Err(QueueError::Stream {
                    stream: options.stream.clone(),
                    reason: e.to_string(),
                })
            }
        }
    }
}

/// The ingest node's side: publishes events and waits for their
/// acknowledgements.
#[derive(Clone)]
pub struct Publisher {
    js: jetstream::Context,
    options: Arc<QueueOptions>,
}

/// How long an ingest request waits for JetStream's acknowledgement before
/// it is refused with 503 (the client sends again; the message id keeps a
/// second copy out of the stream).
pub const PUBLISH_TIMEOUT: Duration = Duration::from_secs(5);

impl Publisher {
    pub async fn connect(options: QueueOptions) -> Result<Publisher, QueueError> {
        let js = connect(&options).await?;
        Ok(Publisher {
            js,
            options: Arc::new(options),
        })
    }

    pub fn options(&self) -> &QueueOptions {
        &self.options
    }

    /// Publishes `events` and returns once JetStream has acknowledged every
    /// one (each is then durable in the stream), or fails. The publishes are
    /// pipelined: all are sent, then the acknowledgements awaited.
    pub async fn publish(&self, events: &[NormalizedEvent]) -> Result<(), QueueError> {
        let work = async {
            let mut acks = Vec::with_capacity(events.len());
            for e in events {
                let body = encode(e).map_err(|e| QueueError::Publish(e.to_string()))?;
                let subject = self.options.subject(partition(
                    e.project_id,
                    &e.fingerprint,
                    self.options.partitions,
                ));
                let msg = jetstream::message::PublishMessage::build()
                    .payload(Bytes::from(body))
                    .message_id(format!("{}:{}", e.project_id, e.event_id));
                let ack = self
                    .js
                    .send_publish(subject, msg)
                    .await
                    .map_err(|e| QueueError::Publish(e.to_string()))?;
                acks.push(ack);
            }
            for ack in acks {
                ack.await.map_err(|e| QueueError::Publish(e.to_string()))?;
            }
            Ok(())
        };
        match tokio::time::timeout(PUBLISH_TIMEOUT, work).await {
            Ok(result) => result,
            Err(_) => Err(QueueError::Publish(format!(
                "no acknowledgement within {PUBLISH_TIMEOUT:?}"
            ))),
        }
    }

    /// Whether the connection to NATS is up (for `/readyz`).
    pub fn connected(&self) -> bool {
        matches!(
            self.js.client().connection_state(),
            async_nats::connection::State::Connected
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_event_crosses_the_wire_unchanged() {
        use errorflow_sdk::protocol::{Event, Exception, Level};
        let mut raw = Event::new(Level::Error);
        raw.service = Some("shop".into());
        raw.exception = vec![Exception::new("KeyError", "'sku-42' — not found")];
        raw.tags.insert("region".into(), "eu".into());
        let ctx = crate::pipeline::Context {
            project_id: 7,
            received_at: chrono::Utc::now(),
        };
        let e = crate::pipeline::process(raw, &ctx, &crate::pipeline::Limits::default()).unwrap();
        let back = decode(&encode(&e).unwrap()).unwrap();
        // The stored JSON is the very text encoded at ingest.
        assert_eq!(back.event_json(), e.event_json());
        let clear = |mut e: NormalizedEvent| {
            e.event_json = std::sync::OnceLock::new();
            e
        };
        assert_eq!(clear(back), clear(e));
    }

    #[test]
    fn a_message_of_another_wire_version_is_refused() {
        assert!(decode(br#"{"v": 2}"#).unwrap_err().contains("version"));
        assert!(decode(b"not json").is_err());
    }

    #[test]
    fn partitions_are_stable_and_spread() {
        // Fixed values: every process of every build must agree.
        assert_eq!(partition(1, "abc", 16), 12);
        let mut seen = std::collections::HashSet::new();
        for i in 0..200 {
            let p = partition(7, &format!("{i:x}"), 16);
            assert!(p < 16);
            seen.insert(p);
        }
        assert_eq!(seen.len(), 16, "200 fingerprints reach every partition");
        assert_ne!(
            (0..50)
                .map(|i| partition(1, &format!("{i}"), 16))
                .collect::<Vec<_>>(),
            (0..50)
                .map(|i| partition(2, &format!("{i}"), 16))
                .collect::<Vec<_>>(),
            "the project is part of the key"
        );
    }
}
