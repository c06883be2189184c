//! End-to-end delivery through the HTTP transport to a fake collector.

mod common;

use std::time::Duration;

use common::{closed_port, fast_retry, serial, FakeCollector, Reply};
use errorflow_sdk::protocol::Level;
use errorflow_sdk::{ClientOptions, RetryPolicy};
use tracing_subscriber::prelude::*;

#[derive(Debug)]
struct Declined;
impl std::fmt::Display for Declined {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("card declined")
    }
}
impl std::error::Error for Declined {}

#[derive(Debug)]
struct PaymentError {
    source: Declined,
}
impl std::fmt::Display for PaymentError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("payment failed")
    }
}
impl std::error::Error for PaymentError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.source)
    }
}

fn options(fake: &FakeCollector) -> ClientOptions {
    ClientOptions::new()
        .dsn(&fake.dsn())
        .service("checkout")
        .environment("test")
        .retry(fast_retry())
        .batch_interval(Duration::from_millis(50))
        .panic_hook(false)
}

#[test]
fn error_macro_is_delivered_with_fields_and_chain() {
    let _serial = serial();
    let fake = FakeCollector::start();
    let guard = errorflow_sdk::init(options(&fake));
    let subscriber = tracing_subscriber::registry().with(errorflow_sdk::layer());
    tracing::subscriber::with_default(subscriber, || {
        let err = PaymentError { source: Declined };
        tracing::error!(
            error = &err as &dyn std::error::Error,
            order_id = 7,
            "payment for order {} failed",
            7
        );
    });
    assert!(errorflow_sdk::flush(Duration::from_secs(5)));
    drop(guard);
    let events = fake.events();
    assert_eq!(events.len(), 1);
    let e = &events[0];
    assert_eq!(e.message.as_deref(), Some("payment for order 7 failed"));
    assert_eq!(
        e.message_template.as_deref(),
        Some("payment for order <int> failed")
    );
    assert_eq!(e.level, Level::Error);
    assert_eq!(e.logger.as_deref(), Some("delivery"));
    assert_eq!(e.service.as_deref(), Some("checkout"));
    assert_eq!(e.environment.as_deref(), Some("test"));
    assert_eq!(e.platform.as_deref(), Some("rust"));
    assert_eq!(e.tags["order_id"], "7");
    assert_eq!(e.extra["module_path"], "delivery");
    assert!(e.extra["line"].is_u64());
    let chain: Vec<_> = e
        .exception
        .iter()
        .map(|x| (x.ty.as_str(), x.value.as_str()))
        .collect();
    assert_eq!(
        chain,
        [
            ("PaymentError", "payment failed"),
            ("Declined", "card declined")
        ]
    );
    assert_eq!(
        e.fingerprint.as_deref().unwrap(),
        ["delivery", "delivery", "payment for order <int> failed"]
    );
}

#[test]
fn capture_error_and_message_are_delivered() {
    let _serial = serial();
    let fake = FakeCollector::start();
    let _guard = errorflow_sdk::init(options(&fake));
    let io = std::io::Error::new(std::io::ErrorKind::NotFound, "config.toml missing");
    assert!(errorflow_sdk::capture_error(&io).is_some());
    errorflow_sdk::capture_message("disk almost full", Level::Warning);
    assert!(errorflow_sdk::flush(Duration::from_secs(5)));
    let events = fake.events();
    assert_eq!(events.len(), 2);
    assert_eq!(events[0].exception[0].ty, "std::io::Error");
    assert_eq!(events[0].exception[0].value, "config.toml missing");
    assert_eq!(events[1].level, Level::Warning);
    let stats = errorflow_sdk::stats();
    assert_eq!((stats.queued, stats.sent), (2, 2));
}

// Retrying 5xx and 429 and not retrying 4xx are tested against the real
// collector (errorflow-collector/tests/sdk_e2e.rs: a full write queue
// answers 503, a key over its rate 429, a body over its limit 413), and so
// is a collector that comes up late. The exact wait a `Retry-After` asks
// for is checked here, where the test chooses when 429 is answered.

#[test]
fn honours_retry_after_on_429() {
    let _serial = serial();
    let fake = FakeCollector::start();
    fake.plan([Reply::TooManyRequests { retry_after: "1" }]);
    let _guard = errorflow_sdk::init(options(&fake));
    errorflow_sdk::capture_message("rate limited", Level::Error);
    assert!(errorflow_sdk::flush(Duration::from_secs(10)));
    let requests = fake.requests();
    assert_eq!(requests.iter().map(|r| r.1).collect::<Vec<_>>(), [429, 200]);
    let waited = requests[1].0 - requests[0].0;
    assert!(waited >= Duration::from_secs(1), "retried after {waited:?}");
    assert_eq!(fake.events().len(), 1);
}

#[test]
fn full_queue_drops_and_counts_without_blocking() {
    let _serial = serial();
    let (_closed, port) = closed_port();
    let dsn = format!("http://testkey@127.0.0.1:{port}/1");
    let guard = errorflow_sdk::init(
        ClientOptions::new()
            .dsn(&dsn)
            .queue_size(10)
            .max_batch_events(1)
            .retry(RetryPolicy {
                max_elapsed: Duration::from_secs(30),
                min_delay: Duration::from_secs(5),
                max_delay: Duration::from_secs(5),
            })
            .shutdown_timeout(Duration::from_millis(100))
            .panic_hook(false),
    );
    // Capturing never waits for room: with the worker stuck retrying, all
    // but the queue's few are dropped (had it waited, none would be).
    for i in 0..1000 {
        errorflow_sdk::capture_message(&format!("flood {i}"), Level::Error);
    }
    let stats = errorflow_sdk::stats();
    assert!(stats.dropped_queue_full >= 980, "{stats:?}");
    assert_eq!(stats.queued + stats.dropped_queue_full, 1000);
    // The worker is stuck retrying for 30 s: the guard's flush gives up
    // after its 100 ms timeout. A guard that waited for the retries would
    // still be waiting when this gives up.
    let (done, dropped) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        drop(guard);
        let _ = done.send(());
    });
    dropped
        .recv_timeout(Duration::from_secs(20))
        .expect("dropping the guard waited for the retries");
}

#[test]
fn no_dsn_is_a_no_op() {
    let _serial = serial();
    let guard = errorflow_sdk::init(ClientOptions::new());
    assert!(!guard.is_enabled());
    let subscriber = tracing_subscriber::registry().with(errorflow_sdk::layer());
    tracing::subscriber::with_default(subscriber, || {
        tracing::error!("nobody listens");
    });
    assert!(errorflow_sdk::capture_message("x", Level::Error).is_none());
    assert!(errorflow_sdk::flush(Duration::from_millis(10)));
    assert_eq!(errorflow_sdk::stats(), errorflow_sdk::Stats::default());
    let invalid = ClientOptions::new().dsn("not a dsn");
    assert!(invalid.dsn_ref().is_none());
}

/// Runs this test binary again as a child whose test panics; the panic hook
/// must deliver the event before the child exits, even though the guard is
/// leaked (so only the hook's own flush can have sent it).
#[test]
fn panic_in_child_process_is_delivered_before_exit() {
    if let Ok(dsn) = std::env::var("ERRORFLOW_TEST_CHILD_DSN") {
        let guard = errorflow_sdk::init(
            ClientOptions::new()
                .dsn(&dsn)
                .batch_interval(Duration::from_secs(30)),
        );
        std::mem::forget(guard);
        panic!("child exploded with code {}", 42);
    }
    let _serial = serial();
    let fake = FakeCollector::start();
    let output = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "panic_in_child_process_is_delivered_before_exit",
            "--test-threads=1",
        ])
        .env("ERRORFLOW_TEST_CHILD_DSN", fake.dsn())
        .env("RUST_BACKTRACE", "0")
        .output()
        .unwrap();
    assert!(!output.status.success());
    let events = fake.events();
    assert_eq!(
        events.len(),
        1,
        "{}",
        String::from_utf8_lossy(&output.stdout)
    );
    let e = &events[0];
    assert_eq!(e.level, Level::Fatal);
    assert_eq!(e.message.as_deref(), Some("child exploded with code 42"));
    let ex = &e.exception[0];
    assert_eq!(ex.ty, "panic");
    assert_eq!(ex.mechanism.as_deref(), Some("panic"));
    assert_eq!(ex.handled, Some(false));
    let frames = &ex.stacktrace.as_ref().expect("a backtrace").frames;
    let last = frames.last().unwrap();
    assert!(
        last.function
            .as_deref()
            .unwrap()
            .contains("panic_in_child_process_is_delivered_before_exit"),
        "{frames:#?}"
    );
    assert_eq!(last.in_app, Some(true), "{last:?}");
    assert!(frames.iter().any(|f| f.in_app == Some(false)));
    assert_eq!(e.service.as_deref(), Some("delivery"));
    assert!(e.extra["panic.location"]
        .as_str()
        .unwrap()
        .contains("delivery.rs"));
}

#[test]
fn before_send_runs_on_the_worker_and_its_panic_costs_one_event() {
    let _serial = serial();
    let fake = FakeCollector::start();
    let caller = std::thread::current().id();
    let _guard = errorflow_sdk::init(options(&fake).before_send(move |mut e| {
        // The HTTP transport finishes events on its worker thread.
        assert_ne!(std::thread::current().id(), caller);
        match e.message.as_deref() {
            Some("explode") => panic!("before_send bug"),
            Some("drop") => None,
            _ => {
                e.tags.insert("finished".into(), "worker".into());
                Some(e)
            }
        }
    }));
    for message in ["keep 1", "explode", "drop", "keep 2"] {
        assert!(errorflow_sdk::capture_message(message, Level::Error).is_some());
    }
    assert!(errorflow_sdk::flush(Duration::from_secs(5)));
    let events = fake.events();
    let kept: Vec<_> = events.iter().map(|e| e.message.clone().unwrap()).collect();
    assert_eq!(kept, ["keep 1", "keep 2"]);
    assert!(events.iter().all(|e| e.tags["finished"] == "worker"));
    let stats = errorflow_sdk::stats();
    assert_eq!((stats.queued, stats.sent, stats.filtered), (4, 2, 2));
}
