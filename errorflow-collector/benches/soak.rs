//! Soak test of the collector: a release build under a steady mix of
//! valid, invalid and hostile traffic for a long time, then a verdict.
//!
//! Run with:
//!   cargo bench -p errorflow-collector --bench soak                        # 30 minutes
//!   cargo bench -p errorflow-collector --bench soak -- --duration 2m       # short
//!   cargo bench -p errorflow-collector --bench soak -- --backend postgres  # on Postgres
//!   … -- --rate 300      # valid requests per second (default 150)
//!   … -- --bin PATH      # another collector binary (a debug build, say)
//!
//! It starts the collector binary next to this program (target/release) on
//! a throwaway database (SQLite in a temporary directory, or a Postgres
//! database made and dropped on `ERRORFLOW_TEST_PG_URL`), listening on
//! 127.0.0.1:0, and sends to it, and to nothing else:
//! - valid events: batches, the seed's endpoint, gzip Sentry envelopes,
//!   some with NUL bytes and control characters in their text;
//! - invalid requests: unknown and missing keys, malformed JSON and
//!   envelopes, raw NUL bytes, unsupported encodings, bad project ids;
//! - hostile ones: compression bombs (gzip, brotli, zstd), bodies over the
//!   size limit, slow-loris connections that trickle their headers, bursts
//!   of wrong sign-ins, alert webhooks aimed at loopback addresses (SSRF).
//!
//! It checks, and prints with a verdict:
//! - RSS flat after the warm-up (the first fifth of the run, at least 30 s):
//!   the median of the last tenth within 10 % (or 16 MiB) of the median of
//!   the tenth right after the warm-up;
//! - `/healthz` p99 under 50 ms in every minute of the run;
//! - no 5xx but 503 `unavailable` (a full write queue, documented), and
//!   every other answer the one its request calls for;
//! - the events acknowledged (2xx) equal the events stored, counted in the
//!   database at the end, and the incidents' counts add up to them;
//! - the collector still running at the end.
//!
//! Every loop is bounded by the duration; the program stops the collector
//! and removes its database itself.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{json, Value};
use sqlx::Connection;

struct Options {
    duration: Duration,
    rate: u32,
    backend: String,
    bin: Option<PathBuf>,
}

fn options() -> Options {
    let mut o = Options {
        duration: Duration::from_secs(30 * 60),
        rate: 150,
        backend: "sqlite".into(),
        bin: None,
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = || args.next().unwrap_or_else(|| panic!("{arg} needs a value"));
        match arg.as_str() {
            "--duration" => {
                o.duration = humantime::parse_duration(&value()).expect("--duration: 30m, 2m, 90s")
            }
            "--rate" => o.rate = value().parse().expect("--rate: requests per second"),
            "--backend" => o.backend = value(),
            "--bin" => o.bin = Some(value().into()),
            // What `cargo bench` passes.
            "--bench" => {}
            other => panic!("unknown argument {other:?}; see the header of benches/soak.rs"),
        }
    }
    assert!(
        ["sqlite", "postgres"].contains(&o.backend.as_str()),
        "--backend sqlite|postgres"
    );
    o
}

fn main() {
    // `cargo test --benches` runs benches as tests: nothing to do then.
    if std::env::args().any(|a| a == "--list" || a == "--test") {
        return;
    }
    let o = options();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let passed = rt.block_on(run(o));
    std::process::exit(if passed { 0 } else { 1 });
}

// ---------------------------------------------------------------------------
// The collector under test

struct Collector {
    child: Child,
    base: String,
    key: String,
    token: String,
    project_id: i64,
    url: String,
    log: PathBuf,
}

fn collector_binary(o: &Options) -> PathBuf {
    if let Some(bin) = &o.bin {
        return bin.clone();
    }
    // target/release/deps/soak-xxxx → target/release/errorflow-collector
    let exe = std::env::current_exe().unwrap();
    let bin = exe
        .parent()
        .unwrap()
        .parent()
        .unwrap()
        .join("errorflow-collector");
    assert!(
        bin.exists(),
        "{} not found: run through `cargo bench -p errorflow-collector --bench soak`, or pass --bin",
        bin.display()
    );
    bin
}

fn cli(bin: &Path, url: &str, args: &[&str]) -> Value {
    let out = Command::new(bin)
        .args(args)
        .env("DATABASE_URL", url)
        .env("ERRORFLOW_LOG", "warn")
        .output()
        .expect("run the collector's CLI");
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("the CLI printed JSON")
}

fn start(bin: &Path, url: &str, dir: &Path) -> Collector {
    let project = cli(bin, url, &["project", "create", "soak", "--json"]);
    let token = cli(bin, url, &["token", "create", "--name", "soak", "--json"]);
    let log = dir.join("collector.log");
    let mut child = Command::new(bin)
        .args(["serve", "--listen", "127.0.0.1:0"])
        // The valid traffic alone is over the default per-key rate (1000
        // events/s), which would answer part of it 429 by design: the soak
        // measures health under load, so the limit is off, as in the load
        // benchmarks.
        .args(["--key-events-per-second", "0"])
        .env("DATABASE_URL", url)
        .env("ERRORFLOW_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .expect("start the collector");
    // `serve` prints `dashboard: URL/` once it listens.
    let mut stdout = std::io::BufReader::new(child.stdout.take().unwrap());
    let base = loop {
        let mut line = String::new();
        use std::io::BufRead as _;
        if stdout.read_line(&mut line).unwrap() == 0 {
            panic!(
                "the collector exited before listening: {}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
        }
        if let Some(url) = line.trim().strip_prefix("dashboard: ") {
            break url.trim_end_matches('/').to_owned();
        }
    };
    std::thread::spawn(move || std::io::copy(&mut stdout, &mut std::io::sink()));
    Collector {
        child,
        base,
        key: project["key"].as_str().unwrap().to_owned(),
        token: token["token"].as_str().unwrap().to_owned(),
        project_id: project["id"].as_i64().unwrap(),
        url: url.to_owned(),
        log,
    }
}

/// (events stored, sum of the incidents' counts).
async fn stored_events(url: &str) -> (i64, i64) {
    let q = "SELECT (SELECT COUNT(*) FROM errors), \
             (SELECT CAST(COALESCE(SUM(count), 0) AS BIGINT) FROM error_groups)";
    if url.starts_with("postgres") {
        let mut c = sqlx::PgConnection::connect(url).await.unwrap();
        sqlx::query_as(q).fetch_one(&mut c).await.unwrap()
    } else {
        let mut c = sqlx::SqliteConnection::connect(url).await.unwrap();
        sqlx::query_as(q).fetch_one(&mut c).await.unwrap()
    }
}

fn rss_mib(pid: u32) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb / 1024.0)
}

// ---------------------------------------------------------------------------
// What was sent and answered

#[derive(Default)]
struct Tally {
    /// (traffic kind, status) → answers.
    answers: Mutex<BTreeMap<(&'static str, u16), u64>>,
    /// Answers that were not what their request calls for, with an example.
    wrong: Mutex<BTreeMap<&'static str, (u64, String)>>,
    /// 5xx other than 503 `unavailable`.
    server_errors: AtomicU64,
    /// 503 `unavailable`: a full write queue.
    overloaded: AtomicU64,
    /// Events the collector acknowledged with 2xx.
    acknowledged: AtomicU64,
    /// Event-carrying requests whose answer never came (transport errors):
    /// the events they held may or may not be stored.
    unknown_events: AtomicU64,
    /// Requests without an answer, by kind: how many, and the first error.
    transport_errors: Mutex<BTreeMap<&'static str, (u64, String)>>,
    /// Slow-loris connections the server closed, and the longest one.
    loris_closed: AtomicU64,
    loris_longest_ms: AtomicU64,
}

impl Tally {
    fn answer(&self, kind: &'static str, status: StatusCode, body: &[u8], expected: &[u16]) {
        *self
            .answers
            .lock()
            .unwrap()
            .entry((kind, status.as_u16()))
            .or_default() += 1;
        if status.is_server_error() {
            let code = serde_json::from_slice::<Value>(body)
                .ok()
                .and_then(|v| v["error"]["code"].as_str().map(str::to_owned));
            if status == StatusCode::SERVICE_UNAVAILABLE && code.as_deref() == Some("unavailable") {
                self.overloaded.fetch_add(1, Ordering::Relaxed);
                return;
            }
            self.server_errors.fetch_add(1, Ordering::Relaxed);
        }
        let json_error = status.is_client_error()
            && serde_json::from_slice::<Value>(body).ok().is_some_and(|v| {
                v["error"]["code"].is_string() && v["error"]["message"].is_string()
            });
        // The dashboard's sign-in answers with its HTML page.
        let needs_json = status.is_client_error() && kind != "sign-in";
        if !expected.contains(&status.as_u16()) || (needs_json && !json_error) {
            let mut wrong = self.wrong.lock().unwrap();
            let entry = wrong.entry(kind).or_insert((0, String::new()));
            entry.0 += 1;
            if entry.1.is_empty() {
                entry.1 = format!(
                    "{status}: {}",
                    String::from_utf8_lossy(&body[..body.len().min(300)])
                );
            }
        }
    }

    fn transport_error(&self, kind: &'static str, events: u64, error: &dyn std::fmt::Display) {
        let mut errors = self.transport_errors.lock().unwrap();
        let entry = errors.entry(kind).or_insert((0, String::new()));
        entry.0 += 1;
        if entry.1.is_empty() {
            // reqwest's own message is short; its cause says what happened.
            entry.1 = error.to_string();
        }
        self.unknown_events.fetch_add(events, Ordering::Relaxed);
    }
}

/// Sends `req`; tallies its answer against `expected`; returns the status
/// and body when there was one.
async fn send(
    tally: &Tally,
    kind: &'static str,
    req: reqwest::RequestBuilder,
    expected: &[u16],
    events: u64,
) -> Option<(StatusCode, Vec<u8>)> {
    match req.send().await {
        Ok(res) => {
            let status = res.status();
            match res.bytes().await {
                Ok(body) => {
                    tally.answer(kind, status, &body, expected);
                    Some((status, body.to_vec()))
                }
                Err(e) => {
                    tally.transport_error(kind, events, &error_chain(&e));
                    None
                }
            }
        }
        Err(e) => {
            tally.transport_error(kind, events, &error_chain(&e));
            None
        }
    }
}

/// An error and its causes, `: `-separated.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

// ---------------------------------------------------------------------------
// Bodies

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut w = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    w.write_all(data).unwrap();
    w.finish().unwrap()
}

fn brotli(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    {
        let mut w = brotli::CompressorWriter::new(&mut out, 4096, 5, 22);
        w.write_all(data).unwrap();
    }
    out
}

/// Text with a NUL, an escape sequence and other control characters, as
/// hostile or broken clients send it.
fn nul_text(n: u64) -> String {
    format!("order {n} failed\u{0} \u{1b}[31mred\u{7}")
}

fn native_event(site: u64, n: u64, hostile: bool) -> Value {
    let message = if hostile {
        nul_text(n)
    } else {
        format!("order {n} failed at step {site}")
    };
    json!({
        "event_id": uuid::Uuid::now_v7(),
        "level": "error",
        "service": format!("svc-{}", site % 5),
        "message": message,
        "exception": [{"type": format!("app::Error{site}"), "value": message,
                       "stacktrace": {"frames": [{"function": format!("app::charge_{site}"), "filename": "src/billing.rs", "lineno": 42, "in_app": true}]}}],
        "tags": {"region": if hostile { "eu\u{0}west" } else { "eu-west-1" }},
        "request": {"method": "POST", "url": format!("/orders/{n}/checkout")},
    })
}

fn sentry_envelope(site: u64, n: u64, hostile: bool) -> Vec<u8> {
    let id = uuid::Uuid::new_v4().simple().to_string();
    let value = if hostile {
        nul_text(n)
    } else {
        format!("card {n} declined")
    };
    let event = json!({
        "event_id": id,
        "platform": "python",
        "level": "error",
        "release": format!("shop-{}@1.4.2", site % 5),
        "exception": {"values": [{"type": format!("PaymentError{site}"), "value": value,
            "stacktrace": {"frames": [{"filename": "shop/billing.py", "function": format!("charge_{site}"), "lineno": 42, "in_app": true}]}}]},
        "tags": {"region": "eu-west-1"},
        "breadcrumbs": {"values": [{"category": "query", "message": "SELECT 1"}]},
    })
    .to_string();
    let body = format!(
        "{{\"event_id\":\"{id}\"}}\n{{\"type\":\"event\",\"length\":{}}}\n{event}\n",
        event.len()
    );
    gzip(body.as_bytes())
}

/// Precomputed hostile bodies: building a bomb per request would make the
/// generator, not the collector, the work.
struct Bombs {
    gzip_batch: Vec<u8>,
    brotli_envelope: Vec<u8>,
    zstd_envelope: Vec<u8>,
}

fn bombs() -> Bombs {
    // 64 MiB of zeros inflate past the 20 MiB decompressed limit.
    let zeros = vec![b' '; 64 << 20];
    let mut batch = b"{\"events\":[".to_vec();
    batch.extend_from_slice(&zeros);
    batch.extend_from_slice(b"]}");
    let mut envelope = b"{}\n{\"type\":\"attachment\"}\n".to_vec();
    envelope.extend_from_slice(&zeros);
    envelope.push(b'\n');
    Bombs {
        gzip_batch: gzip(&batch),
        brotli_envelope: brotli(&envelope),
        zstd_envelope: zstd::encode_all(&envelope[..], 3).unwrap(),
    }
}

const MALFORMED_ENVELOPES: &[&[u8]] = &[
    b"not json\n",
    b"{}\n{\"type\":\"event\",\"length\":999}\n{}\n",
    b"{}\n{\"type\":\"event\",\"length\":2}\n{}xx\n",
    b"{}\n{\"type\":\"event\"}\n{\"exception\":\n",
    b"{}\n{\"type\":\"event\"}\n[1,2,3]\n",
    b"{}\nnot a header\n",
    b"{}\n{\"type\":\"event\",\"length\":-1}\n\n",
    b"{}\n{\"type\":\"event\"}\n{\"event_id\":\"not-a-uuid\"}\n",
    b"\xff\xfe\n",
    b"{}\n{\"type\":\"event\"}\n{\"message\":\"a\xc3\"}\n",
];

/// Alert webhook URLs that point at the collector's own machine, each
/// spelt to slip past a naive check: all must be refused (422). Only
/// loopback forms: nothing here may reach another address even if one
/// were wrongly accepted.
const SSRF_URLS: &[&str] = &[
    "http://127.0.0.1:5432/",
    "http://[::1]:22/",
    "http://localhost/hook",
    "http://2130706433/",
    "http://0x7f.1/",
    "http://127.1/",
    "http://[::ffff:127.0.0.1]/",
    "http://0.0.0.0/",
    "http://017700000001/",
];

// ---------------------------------------------------------------------------
// The run

#[derive(Clone)]
struct Shared {
    base: String,
    key: String,
    token: String,
    project_id: i64,
    client: reqwest::Client,
    tally: Arc<Tally>,
    stop: Arc<AtomicBool>,
    bombs: Arc<Bombs>,
}

/// Runs `f(n)` every `period` until the stop flag is set.
async fn every<F, Fut>(s: &Shared, period: Duration, mut f: F)
where
    F: FnMut(u64) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut n = 0;
    while !s.stop.load(Ordering::Relaxed) {
        tick.tick().await;
        n += 1;
        f(n).await;
    }
}

async fn valid_traffic(s: Shared, worker: u64, period: Duration) {
    let t = &s.tally;
    every(&s, period, |n| {
        let s = s.clone();
        async move {
            let n = worker * 1_000_000_000 + n;
            let site = n % 40;
            let hostile = n % 10 == 0;
            match n % 3 {
                0 => {
                    let events: Vec<Value> = (0..20)
                        .map(|i| native_event(site, n * 100 + i, hostile))
                        .collect();
                    let req = s
                        .client
                        .post(format!("{}/api/v1/events", s.base))
                        .header("x-errorflow-key", &s.key)
                        .json(&json!({ "events": events }));
                    if let Some((status, body)) = send(t, "valid batch", req, &[200], 20).await {
                        if status.is_success() {
                            let v: Value = serde_json::from_slice(&body).unwrap_or_default();
                            let accepted = v["accepted"].as_u64().unwrap_or(0);
                            t.acknowledged.fetch_add(accepted, Ordering::Relaxed);
                        }
                    }
                }
                1 => {
                    let message = if hostile {
                        nul_text(n)
                    } else {
                        format!("order {n} failed")
                    };
                    let req = s
                        .client
                        .post(format!("{}/errors/custom", s.base))
                        .header("x-errorflow-key", &s.key)
                        .json(
                            &json!({"service": "legacy", "error_type": format!("E{site}"),
                                      "message": message, "path": format!("/orders/{n}")}),
                        );
                    if let Some((status, _)) = send(t, "valid custom", req, &[201], 1).await {
                        if status == StatusCode::CREATED {
                            t.acknowledged.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
                _ => {
                    let req = s
                        .client
                        .post(format!("{}/api/{}/envelope/", s.base, s.project_id))
                        .header("content-type", "application/x-sentry-envelope")
                        .header("content-encoding", "gzip")
                        .header(
                            "x-sentry-auth",
                            format!("Sentry sentry_key={}, sentry_version=7", s.key),
                        )
                        .body(sentry_envelope(site, n, hostile));
                    if let Some((status, _)) = send(t, "valid sentry", req, &[200], 1).await {
                        if status.is_success() {
                            t.acknowledged.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
            }
        }
    })
    .await;
}

async fn invalid_traffic(s: Shared) {
    let t = &s.tally;
    every(&s, Duration::from_millis(40), |n| {
        let s = s.clone();
        async move {
            let envelope_url = format!("{}/api/{}/envelope/", s.base, s.project_id);
            let auth = format!("Sentry sentry_key={}, sentry_version=7", s.key);
            let (kind, req, expected): (_, _, &[u16]) = match n % 9 {
                0 => (
                    "unknown key",
                    s.client
                        .post(format!("{}/api/v1/events", s.base))
                        .header("x-errorflow-key", format!("{:032x}", n))
                        .header("content-type", "application/json")
                        .body(r#"{"events":[]}"#),
                    &[401, 403],
                ),
                1 => ("no key", s.client.post(&envelope_url).body("{}\n"), &[401]),
                2 => (
                    "malformed envelope",
                    s.client
                        .post(&envelope_url)
                        .header("x-sentry-auth", &auth)
                        .body(MALFORMED_ENVELOPES[(n / 9) as usize % MALFORMED_ENVELOPES.len()]),
                    &[400],
                ),
                3 => (
                    "malformed json",
                    s.client
                        .post(format!("{}/api/v1/events", s.base))
                        .header("x-errorflow-key", &s.key)
                        .header("content-type", "application/json")
                        .body(r#"{"events":[{"message":"#),
                    &[400],
                ),
                4 => (
                    "raw NUL bytes",
                    s.client
                        .post(format!("{}/errors/custom", s.base))
                        .header("x-errorflow-key", &s.key)
                        .header("content-type", "application/json")
                        .body(&b"{\"service\":\"a\0\",\0\"message\":\"\0\"}"[..]),
                    &[400],
                ),
                5 => (
                    "unsupported encoding",
                    s.client
                        .post(&envelope_url)
                        .header("x-sentry-auth", &auth)
                        .header("content-encoding", "compress")
                        .body("x"),
                    &[415],
                ),
                6 => (
                    "bad project id",
                    s.client
                        .post(format!("{}/api/abc/envelope/", s.base))
                        .header("x-sentry-auth", &auth)
                        .body("{}\n"),
                    &[400],
                ),
                7 => (
                    "corrupt gzip",
                    s.client
                        .post(format!("{}/api/v1/events", s.base))
                        .header("x-errorflow-key", &s.key)
                        .header("content-type", "application/json")
                        .header("content-encoding", "gzip")
                        .body(&b"\x1f\x8b\x08\x00garbage"[..]),
                    &[400],
                ),
                _ => (
                    "wrong shape",
                    s.client
                        .post(format!("{}/errors/custom", s.base))
                        .header("x-errorflow-key", &s.key)
                        .json(&json!({"service": 1, "error_type": [], "message": {}})),
                    &[400, 422],
                ),
            };
            send(t, kind, req, expected, 0).await;
        }
    })
    .await;
}

async fn hostile_bodies(s: Shared) {
    let t = &s.tally;
    every(&s, Duration::from_millis(500), |n| {
        let s = s.clone();
        async move {
            let envelope_url = format!("{}/api/{}/envelope/", s.base, s.project_id);
            let auth = format!("Sentry sentry_key={}, sentry_version=7", s.key);
            let (kind, req) = match n % 4 {
                0 => (
                    "gzip bomb",
                    s.client
                        .post(format!("{}/api/v1/events", s.base))
                        .header("x-errorflow-key", &s.key)
                        .header("content-type", "application/json")
                        .header("content-encoding", "gzip")
                        .body(s.bombs.gzip_batch.clone()),
                ),
                1 => (
                    "brotli bomb",
                    s.client
                        .post(&envelope_url)
                        .header("x-sentry-auth", &auth)
                        .header("content-encoding", "br")
                        .body(s.bombs.brotli_envelope.clone()),
                ),
                2 => (
                    "zstd bomb",
                    s.client
                        .post(&envelope_url)
                        .header("x-sentry-auth", &auth)
                        .header("content-encoding", "zstd")
                        .body(s.bombs.zstd_envelope.clone()),
                ),
                _ => return oversized(&s, n).await,
            };
            send(t, kind, req, &[413], 0).await;
        }
    })
    .await;
}

/// A body over the 5 MiB limit on what is sent, over a raw connection: the
/// server answers 413 without reading all of it and closes, which an HTTP
/// client still sending the body reports as a broken connection. Declared
/// (`Content-Length`, refused before any byte is read) or chunked (refused
/// once the limit is passed).
async fn oversized(s: &Shared, n: u64) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let chunked = n % 8 == 7;
    let kind = if chunked {
        "oversized chunked"
    } else {
        "oversized declared"
    };
    let addr = s.base.trim_start_matches("http://");
    let Ok(mut conn) = tokio::net::TcpStream::connect(addr).await else {
        s.tally.transport_error(kind, 0, &"cannot connect");
        return;
    };
    let size = 6usize << 20;
    let head = format!(
        "POST /api/v1/events HTTP/1.1\r\nHost: {addr}\r\nX-Errorflow-Key: {}\r\n\
         Content-Type: application/json\r\n{}\r\n",
        s.key,
        if chunked {
            "Transfer-Encoding: chunked\r\n".to_owned()
        } else {
            format!("Content-Length: {size}\r\n")
        },
    );
    let _ = conn.write_all(head.as_bytes()).await;
    let (mut read, mut write) = conn.into_split();
    let writer = tokio::spawn(async move {
        let chunk = vec![b' '; 64 << 10];
        let mut framed = format!("{:x}\r\n", chunk.len()).into_bytes();
        framed.extend_from_slice(&chunk);
        framed.extend_from_slice(b"\r\n");
        for _ in 0..size / chunk.len() {
            let piece = if chunked { &framed } else { &chunk };
            if write.write_all(piece).await.is_err() {
                return;
            }
        }
        if chunked {
            let _ = write.write_all(b"0\r\n\r\n").await;
        }
    });
    let mut answer = Vec::new();
    let mut buf = [0u8; 4096];
    // The answer is small: read until the connection closes or the body is in.
    while let Ok(Ok(read)) =
        tokio::time::timeout(Duration::from_secs(30), read.read(&mut buf)).await
    {
        if read == 0 {
            break;
        }
        answer.extend_from_slice(&buf[..read]);
        if let Some(at) = answer.windows(4).position(|w| w == b"\r\n\r\n") {
            let text = String::from_utf8_lossy(&answer[..at]).to_lowercase();
            let length = text
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse::<usize>().ok())
                .unwrap_or(0);
            if answer.len() >= at + 4 + length {
                break;
            }
        }
    }
    writer.abort();
    let text = String::from_utf8_lossy(&answer);
    let status = text
        .lines()
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|c| c.parse::<u16>().ok())
        .and_then(|c| StatusCode::from_u16(c).ok());
    match status {
        Some(status) => {
            let body = answer
                .windows(4)
                .position(|w| w == b"\r\n\r\n")
                .map_or(&answer[..0], |at| &answer[at + 4..]);
            s.tally.answer(kind, status, body, &[413]);
        }
        None => s
            .tally
            .transport_error(kind, 0, &"no status line before the connection closed"),
    }
}

/// Connections that send a request line and then one header byte a second:
/// the server must close them (its header read timeout), and they must
/// not slow anyone else.
async fn slow_loris(s: Shared, connections: usize) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = s.base.trim_start_matches("http://").to_owned();
    let mut tasks = Vec::new();
    for _ in 0..connections {
        let (s, addr) = (s.clone(), addr.clone());
        tasks.push(tokio::spawn(async move {
            while !s.stop.load(Ordering::Relaxed) {
                let Ok(mut conn) = tokio::net::TcpStream::connect(&addr).await else {
                    s.tally
                        .transport_error("slow loris connect", 0, &"cannot connect");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                };
                let opened = Instant::now();
                let _ = conn
                    .write_all(b"POST /api/v1/events HTTP/1.1\r\nHost: x\r\nX-Slow: ")
                    .await;
                let mut buf = [0u8; 512];
                let closed = loop {
                    if s.stop.load(Ordering::Relaxed) {
                        break false;
                    }
                    if conn.write_all(b"a").await.is_err() {
                        break true;
                    }
                    // The server's close (or its 408) shows as a read.
                    match tokio::time::timeout(Duration::from_secs(1), conn.read(&mut buf)).await {
                        Ok(Ok(_)) | Ok(Err(_)) => break true,
                        Err(_) => {}
                    }
                };
                if closed {
                    s.tally.loris_closed.fetch_add(1, Ordering::Relaxed);
                    s.tally
                        .loris_longest_ms
                        .fetch_max(opened.elapsed().as_millis() as u64, Ordering::Relaxed);
                }
            }
        }));
    }
    for task in tasks {
        let _ = task.await;
    }
}

/// Every 10 s, ten wrong sign-ins at once, each with its own form and
/// CSRF cookie: 401 for a wrong password, 429 once locked or busy.
async fn sign_in_bursts(s: Shared) {
    every(&s, Duration::from_secs(10), |n| {
        let s = s.clone();
        async move {
            let mut burst = Vec::new();
            for i in 0..10 {
                let s = s.clone();
                burst.push(tokio::spawn(async move {
                    let Ok(form) = s.client.get(format!("{}/login", s.base)).send().await else {
                        s.tally.transport_error("sign-in form", 0, &"no answer");
                        return;
                    };
                    let cookie = form
                        .headers()
                        .get_all("set-cookie")
                        .iter()
                        .filter_map(|v| v.to_str().ok())
                        .find(|c| c.starts_with("ef_login_csrf="))
                        .and_then(|c| c.split(';').next())
                        .map(str::to_owned)
                        .unwrap_or_default();
                    let html = form.text().await.unwrap_or_default();
                    let marker = "name=\"csrf\" value=\"";
                    let csrf = html
                        .find(marker)
                        .map(|at| &html[at + marker.len()..])
                        .and_then(|rest| rest.split('"').next())
                        .unwrap_or_default()
                        .to_owned();
                    let user = if i % 2 == 0 {
                        "admin".to_owned()
                    } else {
                        format!("u{n}x{i}")
                    };
                    let body: String = form_urlencoded::Serializer::new(String::new())
                        .extend_pairs([
                            ("csrf", csrf.as_str()),
                            ("username", &user),
                            ("password", "wrong password"),
                            ("next", "/"),
                        ])
                        .finish();
                    let req = s
                        .client
                        .post(format!("{}/login", s.base))
                        .header("content-type", "application/x-www-form-urlencoded")
                        .header("cookie", cookie)
                        .body(body);
                    send(&s.tally, "sign-in", req, &[401, 429], 0).await;
                }));
            }
            for task in burst {
                let _ = task.await;
            }
        }
    })
    .await;
}

async fn ssrf_webhooks(s: Shared) {
    every(&s, Duration::from_secs(2), |n| {
        let s = s.clone();
        async move {
            let url = SSRF_URLS[n as usize % SSRF_URLS.len()];
            let req = s
                .client
                .put(format!(
                    "{}/api/v1/projects/{}/alert-webhook",
                    s.base, s.project_id
                ))
                .bearer_auth(&s.token)
                .json(&json!({ "url": url }));
            send(&s.tally, "ssrf webhook", req, &[422], 0).await;
        }
    })
    .await;
}

/// `/healthz` every 100 ms on a connection of its own: (seconds since the
/// start, latency in ms, or `None` when it failed).
async fn health_probe(s: Shared, started: Instant) -> Vec<(f64, Option<f64>)> {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    let mut samples = Vec::new();
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    while !s.stop.load(Ordering::Relaxed) {
        tick.tick().await;
        let sent = Instant::now();
        let ok = match client.get(format!("{}/healthz", s.base)).send().await {
            Ok(r) => r.status().is_success() && r.bytes().await.is_ok(),
            Err(_) => false,
        };
        let ms = sent.elapsed().as_secs_f64() * 1000.0;
        samples.push((started.elapsed().as_secs_f64(), ok.then_some(ms)));
    }
    samples
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

fn median(values: &[f64]) -> f64 {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    percentile(&v, 0.5)
}

async fn run(o: Options) -> bool {
    let bin = collector_binary(&o);
    let dir = tempfile::tempdir().unwrap();
    let (url, pg) = match o.backend.as_str() {
        "postgres" => {
            let admin_url = std::env::var("ERRORFLOW_TEST_PG_URL")
                .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into());
            let db = format!("errorflow_soak_{}", std::process::id());
            let mut admin = sqlx::PgConnection::connect(&admin_url)
                .await
                .expect("Postgres for --backend postgres (ERRORFLOW_TEST_PG_URL)");
            sqlx::query(&format!("CREATE DATABASE {db}"))
                .execute(&mut admin)
                .await
                .unwrap();
            let (base, _) = admin_url.rsplit_once('/').unwrap();
            (format!("{base}/{db}"), Some((admin, db)))
        }
        _ => (
            format!("sqlite://{}", dir.path().join("soak.db").display()),
            None,
        ),
    };
    let mut collector = start(&bin, &url, dir.path());
    let pid = collector.child.id();
    println!(
        "errorflow soak, {}, {} on {}, {:?}, {} valid requests/s, collector {} (pid {pid})",
        chrono::Utc::now().format("%Y-%m-%d %H:%M UTC"),
        bin.display(),
        o.backend,
        o.duration,
        o.rate,
        collector.base
    );

    let shared = Shared {
        base: collector.base.clone(),
        key: collector.key.clone(),
        token: collector.token.clone(),
        project_id: collector.project_id,
        // Idle connections are dropped before the collector's 10 s header
        // read timeout closes them: a request sent on a connection the
        // server is closing at that moment gets no answer, a race of
        // keep-alive that every HTTP client has, not the collector's fault.
        client: reqwest::Client::builder()
            .pool_max_idle_per_host(64)
            .pool_idle_timeout(Duration::from_secs(5))
            .build()
            .unwrap(),
        tally: Arc::new(Tally::default()),
        stop: Arc::new(AtomicBool::new(false)),
        bombs: Arc::new(bombs()),
    };
    let started = Instant::now();
    let mut tasks = Vec::new();
    // Valid traffic from eight workers, `rate` requests a second in all.
    let workers = 8u64;
    let period = Duration::from_secs_f64(workers as f64 / f64::from(o.rate.max(1)));
    for worker in 0..workers {
        tasks.push(tokio::spawn(valid_traffic(shared.clone(), worker, period)));
    }
    tasks.push(tokio::spawn(invalid_traffic(shared.clone())));
    tasks.push(tokio::spawn(hostile_bodies(shared.clone())));
    tasks.push(tokio::spawn(slow_loris(shared.clone(), 16)));
    tasks.push(tokio::spawn(sign_in_bursts(shared.clone())));
    tasks.push(tokio::spawn(ssrf_webhooks(shared.clone())));
    let health = tokio::spawn(health_probe(shared.clone(), started));

    // RSS once a second, progress once a minute.
    let mut rss = Vec::new();
    let mut alive = true;
    while started.elapsed() < o.duration {
        tokio::time::sleep(Duration::from_secs(1)).await;
        if collector.child.try_wait().ok().flatten().is_some() {
            alive = false;
            break;
        }
        rss.push((started.elapsed().as_secs_f64(), rss_mib(pid)));
        if rss.len() % 60 == 0 {
            println!(
                "  {:>4.0} s: RSS {:.1} MiB, {} events acknowledged",
                started.elapsed().as_secs_f64(),
                rss.last().unwrap().1,
                shared.tally.acknowledged.load(Ordering::Relaxed)
            );
        }
    }
    shared.stop.store(true, Ordering::Relaxed);
    for task in tasks {
        let _ = task.await;
    }
    let health = health.await.unwrap();
    alive &= collector.child.try_wait().ok().flatten().is_none();
    let elapsed = started.elapsed().as_secs_f64();

    // Every request has been answered: what was acknowledged is committed.
    let (stored, incident_sum) = stored_events(&collector.url).await;
    let _ = collector.child.kill();
    let _ = collector.child.wait();
    if let Some((mut admin, db)) = pg {
        let _ = sqlx::query(&format!("DROP DATABASE {db} WITH (FORCE)"))
            .execute(&mut admin)
            .await;
    }

    report(
        &o,
        &shared.tally,
        &rss,
        &health,
        elapsed,
        stored,
        incident_sum,
        alive,
        &collector.log,
    )
}

#[allow(clippy::too_many_arguments)]
fn report(
    o: &Options,
    t: &Tally,
    rss: &[(f64, f64)],
    health: &[(f64, Option<f64>)],
    elapsed: f64,
    stored: i64,
    incident_sum: i64,
    alive: bool,
    log: &Path,
) -> bool {
    let mut failures = Vec::new();
    println!();
    println!("answers (traffic, status: count):");
    for ((kind, status), count) in t.answers.lock().unwrap().iter() {
        println!("  {kind:<22} {status}: {count}");
    }
    for (kind, (count, error)) in t.transport_errors.lock().unwrap().iter() {
        println!("  {kind:<22} no answer: {count} (first: {error})");
    }
    let requests: u64 = t.answers.lock().unwrap().values().sum();
    println!(
        "  {requests} answers in {elapsed:.0} s ({:.0}/s)",
        requests as f64 / elapsed
    );
    println!(
        "  slow-loris connections closed by the server: {} (longest {:.1} s)",
        t.loris_closed.load(Ordering::Relaxed),
        t.loris_longest_ms.load(Ordering::Relaxed) as f64 / 1000.0
    );

    // RSS: the tenth right after the warm-up against the last tenth.
    let warm_up = (o.duration.as_secs_f64() / 5.0).max(30.0);
    let tenth = (o.duration.as_secs_f64() / 10.0).max(5.0);
    let window = |from: f64, to: f64| -> Vec<f64> {
        rss.iter()
            .filter(|(t, _)| *t >= from && *t < to)
            .map(|(_, v)| *v)
            .collect()
    };
    let start_rss = median(&window(warm_up, warm_up + tenth));
    let last = rss.last().map_or(0.0, |r| r.0);
    let end_rss = median(&window(last - tenth, last + 1.0));
    let peak_rss = rss.iter().map(|(_, v)| *v).fold(0.0, f64::max);
    let growth = end_rss - start_rss;
    let rss_ok = growth <= (start_rss * 0.10).max(16.0);
    println!(
        "RSS: {:.1} MiB at the start, {start_rss:.1} MiB after the {warm_up:.0} s warm-up, {end_rss:.1} MiB at the end ({growth:+.1} MiB), peak {peak_rss:.1} MiB",
        rss.first().map_or(0.0, |r| r.1)
    );
    if !rss_ok || start_rss.is_nan() {
        failures.push(format!("RSS grew by {growth:.1} MiB after the warm-up"));
    }

    // /healthz p99 per minute.
    let failed_probes = health.iter().filter(|(_, ms)| ms.is_none()).count();
    let mut all: Vec<f64> = health.iter().filter_map(|(_, ms)| *ms).collect();
    all.sort_by(f64::total_cmp);
    let minutes = (elapsed / 60.0).ceil().max(1.0) as usize;
    let mut worst_p99 = 0.0f64;
    for minute in 0..minutes {
        let mut v: Vec<f64> = health
            .iter()
            .filter(|(t, _)| (*t / 60.0) as usize == minute)
            .filter_map(|(_, ms)| *ms)
            .collect();
        v.sort_by(f64::total_cmp);
        if v.is_empty() {
            continue;
        }
        let p99 = percentile(&v, 0.99);
        worst_p99 = worst_p99.max(p99);
        if p99 >= 50.0 {
            failures.push(format!("/healthz p99 {p99:.1} ms in minute {}", minute + 1));
        }
    }
    println!(
        "/healthz: {} probes, p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms, worst minute's p99 {worst_p99:.2} ms, {failed_probes} failed",
        health.len(),
        percentile(&all, 0.5),
        percentile(&all, 0.99),
        all.last().copied().unwrap_or(f64::NAN),
    );
    if failed_probes > 0 {
        failures.push(format!("{failed_probes} /healthz probes failed"));
    }

    let server_errors = t.server_errors.load(Ordering::Relaxed);
    println!(
        "5xx: {server_errors} not documented, {} documented 503 (full write queue)",
        t.overloaded.load(Ordering::Relaxed)
    );
    if server_errors > 0 {
        failures.push(format!("{server_errors} undocumented 5xx answers"));
    }
    for (kind, (count, example)) in t.wrong.lock().unwrap().iter() {
        println!("unexpected answers to {kind}: {count}, e.g. {example}");
        failures.push(format!("{count} unexpected answers to {kind}"));
    }
    let transport: u64 = t
        .transport_errors
        .lock()
        .unwrap()
        .values()
        .map(|e| e.0)
        .sum();
    if transport > 0 {
        failures.push(format!("{transport} requests without an answer"));
    }

    let acknowledged = t.acknowledged.load(Ordering::Relaxed) as i64;
    let unknown = t.unknown_events.load(Ordering::Relaxed) as i64;
    println!(
        "events: {acknowledged} acknowledged, {stored} stored, incident counts sum to {incident_sum}{}",
        if unknown > 0 { format!(", {unknown} in requests without an answer") } else { String::new() }
    );
    if !(acknowledged <= stored && stored <= acknowledged + unknown) {
        failures.push(format!(
            "{acknowledged} events acknowledged but {stored} stored"
        ));
    }
    if incident_sum != stored {
        failures.push(format!(
            "incident counts sum to {incident_sum}, {stored} events stored"
        ));
    }
    if acknowledged == 0 {
        failures.push("no event was acknowledged".into());
    }
    if !alive {
        failures.push("the collector exited during the run".into());
    }

    println!();
    if failures.is_empty() {
        println!("VERDICT: PASS");
        true
    } else {
        println!("VERDICT: FAIL");
        for f in &failures {
            println!("  - {f}");
        }
        let mut text = String::new();
        if let Ok(mut f) = std::fs::File::open(log) {
            let _ = f.read_to_string(&mut text);
        }
        let tail: Vec<&str> = text.lines().rev().take(20).collect();
        println!("last lines of the collector's log:");
        for line in tail.iter().rev() {
            println!("  {line}");
        }
        false
    }
}
