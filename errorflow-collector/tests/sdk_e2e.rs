//! The Rust SDK end to end, on both backends: the real example service
//! (`examples/axum-service`, served in this process with the real SDK and
//! its HTTP transport) and the real example CLI (`examples/cli`, run in a
//! child process that panics) report to the real collector binary, and every
//! failure is checked as an incident through the REST API.
//!
//! Postgres comes from `ERRORFLOW_TEST_PG_URL` (default
//! `postgres://postgres@127.0.0.1:5432/postgres`); each test creates and
//! drops its own database. Nothing is skipped: without Postgres the
//! Postgres tests fail.

use std::collections::HashSet;
use std::process::Command;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use common::binary::{dsn, Backend, Collector, Front, WriteLock, DEADLINE};
use errorflow_sdk::{ClientOptions, RetryPolicy};
use serde_json::Value;

mod common;

const USER_AGENT: &str = "errorflow-e2e/1.0";
/// Set in the child process that runs the example CLI.
const CHILD_ENV: &str = "ERRORFLOW_E2E_CHILD";

/// The SDK's client is process-wide, so tests that bind one take turns.
fn serial() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

/// The application's subscriber, as in the example's `main`: set once for
/// the process, inert while no client is bound.
fn init_tracing() {
    use tracing_subscriber::prelude::*;
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        tracing_subscriber::registry()
            .with(errorflow_sdk::layer())
            .init();
    });
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

fn client_options(dsn: &str) -> ClientOptions {
    ClientOptions::new()
        .dsn(dsn)
        .service("shop-api")
        .environment("e2e")
        .release("shop-api@1.2.3")
        .batch_interval(Duration::from_millis(20))
        .retry(RetryPolicy {
            max_elapsed: Duration::from_secs(30),
            min_delay: Duration::from_millis(50),
            max_delay: Duration::from_millis(300),
        })
}

fn one<'a>(events: &'a [Value], what: &str, pred: impl Fn(&Value) -> bool) -> &'a Value {
    let found: Vec<&Value> = events.iter().filter(|e| pred(e)).collect();
    assert_eq!(found.len(), 1, "events for {what}: {events:#?}");
    found[0]
}

fn group_of<'a>(groups: &'a [Value], event: &Value) -> &'a Value {
    groups
        .iter()
        .find(|g| g["id"] == event["group_id"])
        .expect("the event's incident is listed")
}

fn chain(event: &Value) -> Vec<(String, String)> {
    event["data"]["exception"]
        .as_array()
        .unwrap_or_else(|| panic!("no exception chain: {event:#}"))
        .iter()
        .map(|e| {
            (
                e["type"].as_str().unwrap().to_owned(),
                e["value"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

/// Checks the request context the middleware attached.
fn assert_request(event: &Value, route: &str, status: Option<u64>) {
    let request = &event["data"]["request"];
    assert_eq!(request["method"], "GET", "{event:#}");
    assert_eq!(request["route"], route, "{event:#}");
    assert_eq!(request["url"], route, "{event:#}");
    assert_eq!(request["headers"]["user-agent"], USER_AGENT, "{event:#}");
    assert_eq!(event["path"], route);
    assert_eq!(event["data"]["transaction"], format!("GET {route}"));
    match status {
        Some(status) => assert_eq!(request["status"], status, "{event:#}"),
        None => assert!(request["status"].is_null(), "{event:#}"),
    }
    assert_eq!(event["service"], "shop-api");
    assert_eq!(event["env"], "e2e");
    assert_eq!(event["release"], "shop-api@1.2.3");
    assert_eq!(event["data"]["platform"], "rust");
    assert!(event["data"]["sdk"]
        .as_str()
        .unwrap()
        .starts_with("errorflow-sdk/"));
}

struct Answer {
    status: u16,
    request_id: String,
}

fn axum_service_reports_every_failure_kind(backend: Backend) {
    let _serial = serial();
    init_tracing();
    let collector = Collector::start(backend);
    let guard = errorflow_sdk::init(
        client_options(&collector.dsn).in_app_include(["example_axum_service"]),
    );
    assert!(guard.is_enabled());

    let rt = runtime();
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let service = format!("http://{}", listener.local_addr().unwrap());
    rt.spawn(async move { axum::serve(listener, example_axum_service::app()).await });
    let http = reqwest::Client::new();
    let call = |path: &str, headers: &[(&str, &str)]| -> Answer {
        rt.block_on(async {
            let mut request = http
                .get(format!("{service}{path}"))
                .header("user-agent", USER_AGENT);
            for (k, v) in headers {
                request = request.header(*k, *v);
            }
            let response = request.send().await.unwrap();
            Answer {
                status: response.status().as_u16(),
                request_id: response.headers()["x-request-id"]
                    .to_str()
                    .unwrap()
                    .to_owned(),
            }
        })
    };

    let ok = call("/ok", &[]);
    let error_1 = call("/error", &[]);
    let error_2 = call("/error", &[]);
    let trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let status_500 = call(
        "/500",
        &[("traceparent", &format!("00-{trace}-00f067aa0ba902b7-01"))],
    );
    let panic = call("/panic", &[("x-request-id", "e2e-panic-1")]);
    let chained = call("/chain", &[]);
    assert_eq!(
        [
            ok.status,
            error_1.status,
            status_500.status,
            panic.status,
            chained.status
        ],
        [200, 200, 500, 500, 500]
    );
    assert_eq!(status_500.request_id, trace);
    assert_eq!(panic.request_id, "e2e-panic-1");
    assert!(errorflow_sdk::flush(Duration::from_secs(10)));

    // Five events: two `error!`s, a 500, a panic (reported once, by the
    // hook, not again by the middleware) and a logged error chain (whose
    // 500 answer is not reported a second time).
    let events = collector.stored_events(5);
    let groups = collector.groups();
    assert_eq!(groups.len(), 4, "{groups:#?}");
    let ids: HashSet<&str> = events
        .iter()
        .map(|e| e["trace_id"].as_str().unwrap())
        .collect();
    assert!(!ids.contains(ok.request_id.as_str()), "/ok reported");

    // `error!` with a source chain, twice: one incident, counted twice.
    let logged = one(&events, "/error #1", |e| {
        e["trace_id"] == error_1.request_id.as_str()
    });
    one(&events, "/error #2", |e| {
        e["trace_id"] == error_2.request_id.as_str()
    });
    assert_ne!(error_1.request_id, error_2.request_id);
    assert_eq!(error_1.request_id.len(), 32, "a generated trace id");
    assert_request(logged, "/error", None);
    assert_eq!(logged["level"], "error");
    assert_eq!(logged["error_type"], "Payment");
    assert_eq!(
        chain(logged),
        [
            ("Payment".into(), "cannot complete checkout".into()),
            ("PaymentError".into(), "payment for order 42 failed".into()),
            ("Declined".into(), "card declined by the issuer".into()),
        ]
    );
    assert_eq!(logged["data"]["message"], "payment for order 42 failed");
    assert_eq!(
        logged["data"]["message_template"],
        "payment for order <int> failed"
    );
    assert_eq!(logged["data"]["tags"]["order_id"], "42");
    assert_eq!(logged["data"]["logger"], "example_axum_service");
    let group = group_of(&groups, logged);
    assert_eq!(group["count"], 2);
    assert_eq!(group["title"], "Payment: cannot complete checkout");
    assert_eq!(group["culprit"], "GET /error");
    assert_eq!(group["level"], "error");
    assert_eq!(group["service"], "shop-api");
    let in_group = collector.group_events(&group["id"]);
    let in_group: HashSet<&str> = in_group
        .iter()
        .map(|e| e["trace_id"].as_str().unwrap())
        .collect();
    assert_eq!(
        in_group,
        HashSet::from([error_1.request_id.as_str(), error_2.request_id.as_str()])
    );

    // A handler answering 500 without logging: reported by the middleware.
    let answered = one(&events, "/500", |e| e["trace_id"] == trace);
    assert_request(answered, "/500", Some(500));
    assert_eq!(answered["level"], "error");
    assert_eq!(answered["error_type"], "Error");
    assert_eq!(
        answered["message"],
        "GET /500 responded 500 Internal Server Error"
    );
    assert_eq!(answered["data"]["tags"]["http.status_code"], "500");
    assert!(answered["data"]["request"]["latency_ms"].as_f64().unwrap() >= 0.0);
    let group = group_of(&groups, answered);
    assert_eq!(group["count"], 1);
    assert_eq!(
        group["title"],
        "GET <path> responded <int> Internal Server Error"
    );

    // A panic: a fatal event with the backtrace, and the 500 it became.
    let panicked = one(&events, "/panic", |e| e["trace_id"] == "e2e-panic-1");
    assert_request(panicked, "/panic", Some(500));
    assert_eq!(panicked["level"], "fatal");
    assert_eq!(panicked["error_type"], "panic");
    let exception = &panicked["data"]["exception"][0];
    assert_eq!(
        exception["value"],
        "index out of bounds: the len is 0 but the index is 0"
    );
    assert_eq!(exception["mechanism"], "panic");
    assert_eq!(exception["handled"], false);
    let frames = exception["stacktrace"]["frames"].as_array().unwrap();
    let innermost_app = frames
        .iter()
        .rev()
        .find(|f| f["in_app"] == true)
        .unwrap_or_else(|| panic!("no in-app frame: {frames:#?}"));
    assert!(
        innermost_app["function"]
            .as_str()
            .unwrap()
            .starts_with("example_axum_service::panics"),
        "{innermost_app:#}"
    );
    let group = group_of(&groups, panicked);
    assert_eq!(group["count"], 1);
    assert_eq!(
        group["title"],
        "panic: index out of bounds: the len is <int> but the index is <int>"
    );
    assert!(
        group["culprit"]
            .as_str()
            .unwrap()
            .starts_with("example_axum_service::panics"),
        "{group:#}"
    );

    // An error chain turned into a 500 by `ApiError`, which logs it.
    let failed = one(&events, "/chain", |e| {
        e["trace_id"] == chained.request_id.as_str()
    });
    assert_request(failed, "/chain", None);
    assert_eq!(failed["data"]["message"], "request failed");
    assert_eq!(
        chain(failed),
        [
            ("Payment".into(), "cannot complete checkout".into()),
            ("PaymentError".into(), "payment for order 7 failed".into()),
            ("Declined".into(), "card declined by the issuer".into()),
        ]
    );
    let group = group_of(&groups, failed);
    assert_eq!(group["count"], 1);
    assert_ne!(group["id"], group_of(&groups, logged)["id"]);
    assert_eq!(group["culprit"], "GET /chain");

    // The single-event endpoint returns the same stored event.
    let fetched = collector.event(&failed["event_id"]);
    assert_eq!(fetched["data"], failed["data"]);
    assert_eq!(fetched["group_id"], failed["group_id"]);

    let stats = errorflow_sdk::stats();
    assert_eq!(
        (stats.sent, stats.dropped_failed, stats.rejected),
        (5, 0, 0)
    );
    drop(guard);
}

#[test]
fn axum_service_reports_every_failure_kind_sqlite() {
    axum_service_reports_every_failure_kind(Backend::Sqlite);
}

#[test]
fn axum_service_reports_every_failure_kind_postgres() {
    axum_service_reports_every_failure_kind(Backend::Postgres);
}

/// The example CLI, run in a child process (this test binary, re-executed
/// with [`CHILD_ENV`] set, running `cli_child_process` only): a captured
/// `io::Error`, then a panic that ends the process. Both must be stored.
fn cli_reports_error_and_panic(backend: Backend) {
    let collector = Collector::start(backend);
    let out = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "cli_child_process",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_ENV, "cli")
        .env("ERRORFLOW_DSN", &collector.dsn)
        .env("ERRORFLOW_SERVICE", "example-cli")
        .env("RUST_BACKTRACE", "0")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        !out.status.success() && stderr.contains("every cell is a number"),
        "the child must panic in the example:\n{stdout}\n{stderr}"
    );
    // The process has exited: whatever is stored was delivered before exit.
    let events = collector.stored_events(2);
    let groups = collector.groups();
    assert_eq!(groups.len(), 2, "{groups:#?}");
    for e in &events {
        assert_eq!(e["service"], "example-cli");
        assert_eq!(e["release"], "example-cli@0.1.0");
        assert_eq!(e["data"]["tags"]["command"], "import");
        assert_eq!(e["data"]["breadcrumbs"][0]["message"], "reading settings");
    }

    let error = one(&events, "capture_error", |e| e["level"] == "error");
    assert_eq!(error["error_type"], "std::io::Error");
    assert_eq!(
        chain(error),
        [(
            "std::io::Error".into(),
            "No such file or directory (os error 2)".into()
        )]
    );
    assert_eq!(error["data"]["exception"][0]["mechanism"], "capture_error");
    assert_eq!(
        group_of(&groups, error)["title"],
        "std::io::Error: No such file or directory (os error <int>)"
    );

    let panic = one(&events, "panic", |e| e["level"] == "fatal");
    assert_eq!(panic["error_type"], "panic");
    assert!(panic["message"]
        .as_str()
        .unwrap()
        .contains("every cell is a number"));
    let frames = panic["data"]["exception"][0]["stacktrace"]["frames"]
        .as_array()
        .unwrap();
    let innermost_app = frames.iter().rev().find(|f| f["in_app"] == true).unwrap();
    assert!(
        innermost_app["function"]
            .as_str()
            .unwrap()
            .starts_with("example_cli::"),
        "{frames:#?}"
    );
    let group = group_of(&groups, panic);
    assert!(
        group["culprit"]
            .as_str()
            .unwrap()
            .starts_with("example_cli::"),
        "{group:#}"
    );
    assert_eq!(group["level"], "fatal");
}

#[test]
fn cli_reports_error_and_panic_sqlite() {
    cli_reports_error_and_panic(Backend::Sqlite);
}

#[test]
fn cli_reports_error_and_panic_postgres() {
    cli_reports_error_and_panic(Backend::Postgres);
}

/// Not a test of its own: the body of the child process of
/// `cli_reports_error_and_panic_*`, which runs the example CLI (and panics).
/// Ignored in a normal run, which runs it through those tests; run on its
/// own, without [`CHILD_ENV`], it fails.
#[test]
#[ignore = "the child process of cli_reports_error_and_panic_*, which runs it"]
fn cli_child_process() {
    assert!(
        std::env::var_os(CHILD_ENV).is_some(),
        "cli_child_process runs only as the child of cli_reports_error_and_panic_*"
    );
    example_cli::run();
}

/// The collector is down when the events are captured and comes up later:
/// the transport keeps retrying and each event is stored exactly once.
fn collector_down_then_up_delivers_each_event_once(backend: Backend) {
    let _serial = serial();
    init_tracing();
    let mut collector = Collector::prepare(backend);
    // The SDK sends to a front on a port held for the whole test, which
    // drops connections until the collector is up.
    let front = Front::start();
    let guard = errorflow_sdk::init(client_options(&dsn(
        &front.base(),
        &collector.key,
        collector.project_id,
    )));
    for i in 0..5 {
        tracing::error!(attempt = i, "inventory sync {} failed", i);
    }
    // Wait until delivery has failed at least twice, then start the collector.
    let deadline = Instant::now() + DEADLINE;
    while errorflow_sdk::stats().retried < 2 {
        assert!(Instant::now() < deadline, "{:?}", errorflow_sdk::stats());
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(errorflow_sdk::stats().sent, 0);
    collector.serve();
    front.forward_to(collector.port);
    assert!(errorflow_sdk::flush(Duration::from_secs(20)));
    let stats = errorflow_sdk::stats();
    assert_eq!(
        (stats.queued, stats.sent, stats.dropped_failed),
        (5, 5, 0),
        "{stats:?}"
    );
    let events = collector.stored_events(5);
    let ids: HashSet<&str> = events
        .iter()
        .map(|e| e["event_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids.len(), 5);
    let attempts: HashSet<&str> = events
        .iter()
        .map(|e| e["data"]["tags"]["attempt"].as_str().unwrap())
        .collect();
    assert_eq!(attempts, HashSet::from(["0", "1", "2", "3", "4"]));
    let groups = collector.groups();
    assert_eq!(groups.len(), 1, "{groups:#?}");
    assert_eq!(groups[0]["count"], 5);
    assert_eq!(groups[0]["title"], "inventory sync <int> failed");
    drop(guard);
}

#[test]
fn collector_down_then_up_delivers_each_event_once_sqlite() {
    collector_down_then_up_delivers_each_event_once(Backend::Sqlite);
}

#[test]
fn collector_down_then_up_delivers_each_event_once_postgres() {
    collector_down_then_up_delivers_each_event_once(Backend::Postgres);
}

/// One event of service `service` through `POST /api/v1/events` from the
/// test itself; returns the status.
async fn post_one(base: String, key: String, service: String) -> u16 {
    reqwest::Client::new()
        .post(format!("{base}/api/v1/events"))
        .header("x-errorflow-key", key)
        .json(
            &serde_json::json!({"events": [{"event_id": uuid::Uuid::new_v4(),
            "level": "error", "service": service, "environment": "prod",
            "message": "disk full"}]}),
        )
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

/// The collector's `errorflow_ingest_queue_depth`: events admitted to the
/// writer and not yet written.
async fn queue_depth(base: &str) -> f64 {
    let text = reqwest::get(format!("{base}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .find_map(|l| {
            l.strip_prefix("errorflow_ingest_queue_depth ")?
                .trim()
                .parse()
                .ok()
        })
        .unwrap_or(0.0)
}

/// The collector answers 503 when its write queue is full; the SDK retries,
/// and once the collector writes again its event is stored once.
///
/// On Postgres, whose lock waits have no timeout: with the events' tables
/// locked nothing is written, and with `--write-queue 1` each of the two
/// writer tasks holds one request and queues one more. Fillers for distinct
/// incidents are sent until the writer holds those four (its queue depth
/// says so); then every request, the SDK's included, is refused.
#[test]
fn sdk_retries_a_503_and_delivers_once() {
    let _serial = serial();
    let backend = Backend::Postgres;
    let mut c = Collector::prepare(backend);
    c.serve_args = ["--write-queue", "1", "--write-queue-timeout", "100ms"]
        .map(String::from)
        .to_vec();
    c.serve();
    let rt = runtime();
    let lock = rt.block_on(WriteLock::take(backend, &c.db.url));
    let mut fillers = Vec::new();
    let services = [
        "alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel", "india",
        "juliet", "kilo", "lima", "mike", "november", "oscar", "papa",
    ];
    for service in services {
        // Read before the filler is sent: read after, an admission that was
        // already counted would never show as a rise.
        let depth = rt.block_on(queue_depth(&c.base));
        if depth >= 4.0 {
            break;
        }
        let filler = rt.spawn(post_one(
            c.base.clone(),
            c.key.clone(),
            format!("filler-{service}"),
        ));
        // Answered 503 at once, or admitted: wait until one or the other shows.
        let deadline = Instant::now() + DEADLINE;
        while !filler.is_finished() && rt.block_on(queue_depth(&c.base)) <= depth {
            assert!(
                Instant::now() < deadline,
                "the filler was neither refused nor admitted"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        fillers.push(filler);
    }
    assert_eq!(
        rt.block_on(queue_depth(&c.base)),
        4.0,
        "two writer tasks, each with a queue of one"
    );
    let guard = errorflow_sdk::init(client_options(&c.dsn));
    errorflow_sdk::capture_message("payment failed", errorflow_sdk::protocol::Level::Error);
    let deadline = Instant::now() + DEADLINE;
    while errorflow_sdk::stats().retried < 1 {
        assert!(Instant::now() < deadline, "{:?}", errorflow_sdk::stats());
        std::thread::sleep(Duration::from_millis(20));
    }
    rt.block_on(lock.release());
    let mut admitted = 0;
    for filler in fillers {
        match rt.block_on(filler).unwrap() {
            200 => admitted += 1,
            503 => {}
            other => panic!("a filler got {other}"),
        }
    }
    assert_eq!(admitted, 4);
    assert!(errorflow_sdk::flush(Duration::from_secs(20)));
    let stats = errorflow_sdk::stats();
    assert_eq!((stats.sent, stats.dropped_failed), (1, 0), "{stats:?}");
    assert!(stats.retried >= 1, "{stats:?}");
    let events = c.stored_events(5);
    let mine: Vec<&Value> = events
        .iter()
        .filter(|e| e["service"] == "shop-api")
        .collect();
    assert_eq!(mine.len(), 1, "{events:#?}");
    assert_eq!(mine[0]["message"], "payment failed");
    drop(guard);
}

/// The collector answers 429 with `Retry-After` when the key is over its
/// rate; the SDK waits and sends again, and each event is stored once.
///
/// With a rate of one event a second and a burst of one, a drainer sending
/// back to back keeps the key's bucket empty; the SDK captures a message
/// every 200 ms until one of its requests has been refused (a request that
/// came just after a refill is accepted, as it should be).
#[test]
fn sdk_waits_out_a_429_and_delivers_once() {
    use std::sync::atomic::{AtomicBool, Ordering};
    let _serial = serial();
    let mut c = Collector::prepare(Backend::Sqlite);
    c.serve_args = ["--key-events-per-second", "1", "--key-events-burst", "1"]
        .map(String::from)
        .to_vec();
    c.serve();
    let rt = runtime();
    let stop = std::sync::Arc::new(AtomicBool::new(false));
    let drainer = {
        let (base, key, stop) = (c.base.clone(), c.key.clone(), stop.clone());
        rt.spawn(async move {
            let (mut admitted, mut limited) = (0, 0);
            while !stop.load(Ordering::SeqCst) {
                match post_one(base.clone(), key.clone(), "drainer".into()).await {
                    200 => admitted += 1,
                    429 => limited += 1,
                    other => panic!("the drainer got {other}"),
                }
            }
            (admitted, limited)
        })
    };
    let guard = errorflow_sdk::init(client_options(&c.dsn));
    let deadline = Instant::now() + DEADLINE;
    let mut captured = 0;
    while errorflow_sdk::stats().retried < 1 {
        assert!(Instant::now() < deadline, "{:?}", errorflow_sdk::stats());
        errorflow_sdk::capture_message(
            &format!("payment {captured} failed"),
            errorflow_sdk::protocol::Level::Error,
        );
        captured += 1;
        std::thread::sleep(Duration::from_millis(200));
    }
    stop.store(true, Ordering::SeqCst);
    let (admitted, limited) = rt.block_on(drainer).unwrap();
    assert!(limited >= 1, "the drainer kept the bucket empty");
    assert!(errorflow_sdk::flush(Duration::from_secs(30)));
    let stats = errorflow_sdk::stats();
    assert_eq!(
        (stats.sent, stats.dropped_failed, stats.rejected),
        (captured, 0, 0),
        "{stats:?}"
    );
    let events = c.stored_events(admitted + captured as usize);
    let mut mine: Vec<&str> = events
        .iter()
        .filter(|e| e["service"] == "shop-api")
        .map(|e| e["message"].as_str().unwrap())
        .collect();
    mine.sort();
    let mut expected: Vec<String> = (0..captured)
        .map(|i| format!("payment {i} failed"))
        .collect();
    expected.sort();
    assert_eq!(mine, expected);
    drop(guard);
}

/// A request the collector refuses as the client's fault (413: larger than
/// `--max-body-bytes`) is not retried: the SDK counts its events rejected.
fn sdk_does_not_retry_a_4xx(backend: Backend) {
    let _serial = serial();
    let mut c = Collector::prepare(backend);
    c.serve_args = ["--max-body-bytes", "300"].map(String::from).to_vec();
    c.serve();
    let guard = errorflow_sdk::init(client_options(&c.dsn));
    // Random text, so that even gzipped the body is over 300 bytes.
    let long: Vec<String> = (0..20)
        .map(|_| uuid::Uuid::new_v4().simple().to_string())
        .collect();
    errorflow_sdk::capture_message(&long.join(" "), errorflow_sdk::protocol::Level::Error);
    assert!(errorflow_sdk::flush(Duration::from_secs(20)));
    let stats = errorflow_sdk::stats();
    assert_eq!(
        (stats.rejected, stats.retried, stats.sent),
        (1, 0, 0),
        "{stats:?}"
    );
    c.stored_events(0);
    drop(guard);
}

#[test]
fn sdk_does_not_retry_a_4xx_sqlite() {
    sdk_does_not_retry_a_4xx(Backend::Sqlite);
}

#[test]
fn sdk_does_not_retry_a_4xx_postgres() {
    sdk_does_not_retry_a_4xx(Backend::Postgres);
}
