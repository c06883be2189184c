//! "An accepted event is durable", on the real binary and both backends: the
//! collector answers 2xx only once the events are committed, so
//!
//! - killed with SIGKILL under load from several connections, then started
//!   again on the same database, it has every event it acknowledged, each
//!   once, and its incidents' counts match the events stored;
//! - stopped with SIGTERM under load, it finishes the requests in flight,
//!   exits with status 0 in bounded time, and has every event it acknowledged;
//! - when the writer's queue is full (`--write-queue`), a request waits
//!   `--write-queue-timeout` and is refused with 503 and `Retry-After`,
//!   while the requests it admitted are stored.
//!
//! Each runs in a few seconds. Postgres comes from `ERRORFLOW_TEST_PG_URL`
//! (default `postgres://postgres@127.0.0.1:5432/postgres`); each test
//! creates and drops its own database.

mod common;

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::binary::{Backend, Collector, WriteLock};
use serde_json::{json, Value};
use uuid::Uuid;

/// Concurrent senders, each on its own connection.
const SENDERS: usize = 4;
/// Events per request.
const BATCH: usize = 5;
/// Acknowledged events before the collector is stopped.
const ACKED_BEFORE_STOP: usize = 200;

fn batch(ids: &[Uuid]) -> Value {
    let events: Vec<Value> = ids
        .iter()
        .enumerate()
        .map(|(i, id)| {
            let message = ["disk full", "card declined", "cache cold"][i % 3];
            json!({
                "event_id": id,
                "level": "error",
                "service": "checkout",
                "environment": "prod",
                "message": message,
            })
        })
        .collect();
    json!({ "events": events })
}

/// What the senders saw.
#[derive(Default)]
struct Sent {
    /// Events in requests answered 2xx.
    acked: Vec<Uuid>,
    /// Requests answered 503 (a stopping collector may refuse new work).
    refused: usize,
}

/// Sends batches from [`SENDERS`] connections until the collector stops
/// answering, and tells `progress` how many events were acknowledged.
fn spawn_senders(
    rt: &tokio::runtime::Runtime,
    c: &Collector,
    sent: &Arc<Mutex<Sent>>,
    progress: &tokio::sync::watch::Sender<usize>,
) -> Vec<tokio::task::JoinHandle<()>> {
    (0..SENDERS)
        .map(|_| {
            // A client of its own: its own connection.
            let http = reqwest::Client::new();
            let url = format!("{}/api/v1/events", c.base);
            let key = c.key.clone();
            let sent = sent.clone();
            let progress = progress.clone();
            rt.spawn(async move {
                loop {
                    let ids: Vec<Uuid> = (0..BATCH).map(|_| Uuid::new_v4()).collect();
                    let answer = http
                        .post(&url)
                        .header("x-errorflow-key", &key)
                        .json(&batch(&ids))
                        .send()
                        .await;
                    let Ok(r) = answer else { return };
                    let status = r.status();
                    if status == 503 {
                        sent.lock().unwrap().refused += 1;
                        return;
                    }
                    let Ok(body) = r.json::<Value>().await else {
                        return;
                    };
                    assert!(status.is_success(), "{status}: {body}");
                    assert_eq!(body["rejected"], json!([]), "{body}");
                    let n = {
                        let mut sent = sent.lock().unwrap();
                        sent.acked.extend(ids);
                        sent.acked.len()
                    };
                    progress.send_replace(n);
                }
            })
        })
        .collect()
}

/// Every acknowledged event is stored, each once, and the incidents count
/// exactly the events stored (no event half-written).
fn assert_stored(c: &Collector, acked: &[Uuid]) {
    let stored = c.db.stored_event_ids();
    let unique: HashSet<&str> = stored.iter().map(String::as_str).collect();
    assert_eq!(unique.len(), stored.len(), "an event is stored twice");
    let missing: Vec<&Uuid> = acked
        .iter()
        .filter(|id| !unique.contains(id.to_string().as_str()))
        .collect();
    assert!(
        missing.is_empty(),
        "{} of {} acknowledged events are lost: {missing:?}",
        missing.len(),
        acked.len()
    );
    assert_eq!(
        c.db.incident_count_sum(),
        stored.len() as i64,
        "the incidents' counts do not match the events stored"
    );
}

/// Runs the senders until [`ACKED_BEFORE_STOP`] events are acknowledged,
/// then `stop`s the collector, waits for the senders and returns what they saw.
fn load_then(c: &mut Collector, stop: impl FnOnce(&mut Collector)) -> Sent {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let sent = Arc::new(Mutex::new(Sent::default()));
    let (progress, mut seen) = tokio::sync::watch::channel(0);
    let senders = spawn_senders(&rt, c, &sent, &progress);
    rt.block_on(seen.wait_for(|n| *n >= ACKED_BEFORE_STOP))
        .unwrap();
    stop(c);
    for sender in senders {
        rt.block_on(sender).unwrap();
    }
    Arc::into_inner(sent).unwrap().into_inner().unwrap()
}

fn acknowledged_events_survive_sigkill(backend: Backend) {
    let mut c = Collector::start(backend);
    let sent = load_then(&mut c, Collector::kill);
    assert!(sent.acked.len() >= ACKED_BEFORE_STOP);
    assert_eq!(sent.refused, 0, "a running collector refused a request");
    // Started again on the same database (SQLite recovers its WAL here).
    c.serve();
    assert_stored(&c, &sent.acked);
    // And it takes events again.
    let status = tokio::runtime::Runtime::new().unwrap().block_on(async {
        reqwest::Client::new()
            .post(format!("{}/api/v1/events", c.base))
            .header("x-errorflow-key", &c.key)
            .json(&batch(&[Uuid::new_v4()]))
            .send()
            .await
            .unwrap()
            .status()
    });
    assert_eq!(status, 200);
}

#[test]
fn acknowledged_events_survive_sigkill_sqlite() {
    acknowledged_events_survive_sigkill(Backend::Sqlite);
}

#[test]
fn acknowledged_events_survive_sigkill_postgres() {
    acknowledged_events_survive_sigkill(Backend::Postgres);
}

fn sigterm_finishes_requests_in_flight_and_exits_0(backend: Backend) {
    let mut c = Collector::start(backend);
    let mut status = None;
    let sent = load_then(&mut c, |c| {
        status = Some(c.terminate(Duration::from_secs(30)));
    });
    let status = status.unwrap();
    assert!(status.success(), "exit status after SIGTERM: {status}");
    assert!(sent.acked.len() >= ACKED_BEFORE_STOP);
    c.serve();
    assert_stored(&c, &sent.acked);
}

#[test]
fn sigterm_finishes_requests_in_flight_and_exits_0_sqlite() {
    sigterm_finishes_requests_in_flight_and_exits_0(Backend::Sqlite);
}

#[test]
fn sigterm_finishes_requests_in_flight_and_exits_0_postgres() {
    sigterm_finishes_requests_in_flight_and_exits_0(Backend::Postgres);
}

fn a_full_write_queue_answers_503(backend: Backend) {
    const REQUESTS: usize = 8;
    let mut c = Collector::prepare(backend);
    c.serve_args = ["--write-queue", "1", "--write-queue-timeout", "200ms"]
        .map(String::from)
        .to_vec();
    c.serve();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let lock = WriteLock::take(backend, &c.db.url).await;
        let (answers, mut answered) = tokio::sync::mpsc::unbounded_channel();
        for _ in 0..REQUESTS {
            let http = reqwest::Client::new();
            let url = format!("{}/api/v1/events", c.base);
            let key = c.key.clone();
            let answers = answers.clone();
            tokio::spawn(async move {
                let id = Uuid::new_v4();
                let r = http
                    .post(&url)
                    .header("x-errorflow-key", &key)
                    // One incident: one writer task owns it on either backend.
                    .json(&json!({"events": [{"event_id": id, "level": "error",
                        "service": "checkout", "message": "disk full"}]}))
                    .send()
                    .await
                    .unwrap();
                let status = r.status().as_u16();
                let retry_after = r
                    .headers()
                    .get("retry-after")
                    .map(|v| v.to_str().unwrap().to_string());
                let body: Value = r.json().await.unwrap();
                answers.send((id, status, retry_after, body)).unwrap();
            });
        }
        drop(answers);
        // With the table locked the writer holds one request and its queue
        // one more: every other request is refused, before any is stored.
        for _ in 0..REQUESTS - 2 {
            let (_, status, retry_after, body) = answered.recv().await.unwrap();
            assert_eq!(status, 503, "{body}");
            assert_eq!(body["error"]["code"], "unavailable", "{body}");
            assert!(body["error"]["message"].is_string(), "{body}");
            assert_eq!(retry_after.as_deref(), Some("1"));
        }
        lock.release().await;
        let mut admitted = Vec::new();
        while let Some((id, status, _, body)) = answered.recv().await {
            assert_eq!(status, 200, "{body}");
            admitted.push(id);
        }
        assert_eq!(admitted.len(), 2);
        let stored = c.db.stored_event_ids();
        let mut expected: Vec<String> = admitted.iter().map(Uuid::to_string).collect();
        let mut stored = stored;
        expected.sort();
        stored.sort();
        assert_eq!(stored, expected, "only the admitted requests are stored");
    });
}

#[test]
fn a_full_write_queue_answers_503_sqlite() {
    a_full_write_queue_answers_503(Backend::Sqlite);
}

#[test]
fn a_full_write_queue_answers_503_postgres() {
    a_full_write_queue_answers_503(Backend::Postgres);
}
