//! Load benchmark of the collector over real HTTP, against a no-op axum
//! handler measured in the same run.
//!
//! Run with:
//!   cargo bench -p errorflow-collector --bench load            # full (15 s per scenario)
//!   LOAD_SECONDS=3 cargo bench -p errorflow-collector --bench load   # quick
//!   LOAD_BACKENDS=sqlite LOAD_SCENARIOS=batch,sentry …   # a subset
//!   LOAD_CONCURRENCY=32 …   # connections per scenario (default 16 for batches, 64 otherwise)
//!
//! It builds nothing itself: `cargo bench` compiles the collector in release
//! mode, and this program starts it as a child process (the binary next to
//! this one in target/release), once on SQLite and once on Postgres
//! (`ERRORFLOW_TEST_PG_URL`, default postgres://postgres@127.0.0.1:5432/postgres;
//! a throwaway database is created and dropped). The baseline is a no-op axum
//! handler in a child process of this same program, so both sides pay the
//! same HTTP and process costs, measured with the same scenario right
//! before each collector run. Reported per scenario: requests/s, events/s
//! accepted, events/s stored (counted in the database afterwards, with the
//! incidents' counts summed to check grouping), server CPU per event
//! (from /proc), peak RSS, and the collector's group commits (from its
//! /metrics: events per commit, and milliseconds per commit, which tell
//! whether the write path or the request side bounds a scenario).

mod support;

use std::io::Write;
use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use sqlx::Connection;

const NOOP_ENV: &str = "ERRORFLOW_LOADGEN_NOOP_PORT";

fn main() {
    if let Ok(port) = std::env::var(NOOP_ENV) {
        return noop_server(port.parse().expect("port"));
    }
    // `cargo bench` passes `--bench`; `cargo test --benches` would pass nothing we need.
    if std::env::args().any(|a| a == "--list" || a == "--test") {
        return;
    }
    let seconds: u64 = std::env::var("LOAD_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(15);
    let duration = Duration::from_secs(seconds);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(run(duration));
}

struct Scenario {
    /// Short name for `LOAD_SCENARIOS`.
    key: &'static str,
    name: &'static str,
    /// `{id}` is replaced by the project id.
    path: &'static str,
    events_per_request: usize,
    concurrency: usize,
    body: BodyKind,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum BodyKind {
    Batch,
    Custom,
    /// A Sentry envelope with one ~4 KB event, gzip-encoded, `X-Sentry-Auth`.
    SentryEnvelope,
}

const BATCH: Scenario = Scenario {
    key: "batch",
    name: "POST /api/v1/events (100 events/request)",
    path: "/api/v1/events",
    events_per_request: 100,
    concurrency: 16,
    body: BodyKind::Batch,
};
const CUSTOM: Scenario = Scenario {
    key: "custom",
    name: "POST /errors/custom (1 event/request)",
    path: "/errors/custom",
    events_per_request: 1,
    concurrency: 64,
    body: BodyKind::Custom,
};
const SENTRY: Scenario = Scenario {
    key: "sentry",
    name: "POST /api/{id}/envelope/ (Sentry SDK, 1 event of ~4 KB, gzip)",
    path: "/api/{id}/envelope/",
    events_per_request: 1,
    concurrency: 64,
    body: BodyKind::SentryEnvelope,
};

#[derive(Debug, Clone, Copy)]
struct Measured {
    requests_per_s: f64,
    events_per_s: f64,
    errors: u64,
    cpu_ms_per_event: f64,
    peak_rss_mib: f64,
}

async fn run(duration: Duration) {
    let date = chrono::Utc::now().format("%Y-%m-%d");
    println!(
        "errorflow load benchmark, {date}, {}s per scenario, load generator on the same machine",
        duration.as_secs()
    );
    let bin = collector_binary();

    // Baseline: a no-op axum handler answering the same requests, measured
    // right before each collector run. Shared machines are noisy (the no-op's
    // rate drifts by 10-30 % within minutes), so each ratio compares two
    // measurements taken seconds apart, not one taken minutes earlier.
    let noop_port = free_port();
    let mut noop = Command::new(std::env::current_exe().unwrap())
        .env(NOOP_ENV, noop_port.to_string())
        .stdout(Stdio::null())
        .spawn()
        .expect("start no-op server");
    wait_port(noop_port).await;
    let noop_base = format!("http://127.0.0.1:{noop_port}");

    let dir = tempfile::tempdir().unwrap();
    let sqlite_url = format!("sqlite://{}", dir.path().join("bench.db").display());
    let pg_admin = std::env::var("ERRORFLOW_TEST_PG_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into());
    let pg_db = format!("errorflow_bench_{}", std::process::id());
    let mut admin = sqlx::PgConnection::connect(&pg_admin).await.expect(
        "Postgres is needed for the Postgres half of the benchmark (ERRORFLOW_TEST_PG_URL)",
    );
    sqlx::query(&format!("CREATE DATABASE {pg_db}"))
        .execute(&mut admin)
        .await
        .unwrap();
    let pg_url = replace_db(&pg_admin, &pg_db);

    println!();
    println!("| backend | scenario | req/s | events/s accepted | events/s stored | stored/accepted | no-op req/s just before | vs no-op (req/s) | server CPU ms/event | peak RSS MiB | errors | events/commit | ms/commit |");
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|---|");
    for (backend, url) in [
        ("sqlite", sqlite_url.as_str()),
        ("postgres", pg_url.as_str()),
    ] {
        if !selected("LOAD_BACKENDS", backend) {
            continue;
        }
        for scenario in [&BATCH, &CUSTOM, &SENTRY] {
            if !selected("LOAD_SCENARIOS", scenario.key) {
                continue;
            }
            let baseline = drive(&noop_base, ("none", 1), scenario, duration, noop.id()).await;
            let port = free_port();
            let mut child = start_collector(&bin, url, port, dir.path());
            wait_port(port).await;
            let (key, project_id) = create_key(&bin, url);
            let base = format!("http://127.0.0.1:{port}");
            let before = stored_events(url).await;
            let m = drive(&base, (&key, project_id), scenario, duration, child.id()).await;
            let commits = commit_stats(&base).await;
            let after = stored_events(url).await;
            let _ = child.kill();
            let _ = child.wait();
            let stored = (after.0 - before.0) as f64 / duration.as_secs_f64();
            let grouped_ok = after.0 == after.1;
            println!(
                "| {backend} | {} | {:.0} | {:.0} | {:.0} | {:.3}{} | {:.0} | {:.2}× | {:.4} | {:.0} | {} | {:.1} | {:.2} |",
                scenario.name,
                m.requests_per_s,
                m.events_per_s,
                stored,
                stored / m.events_per_s.max(1.0),
                if grouped_ok { "" } else { " (incident counts disagree!)" },
                baseline.requests_per_s,
                m.requests_per_s / baseline.requests_per_s.max(1.0),
                m.cpu_ms_per_event,
                m.peak_rss_mib,
                m.errors,
                commits.events / commits.count.max(1.0),
                commits.seconds * 1000.0 / commits.count.max(1.0),
            );
            std::io::stdout().flush().ok();
        }
    }
    let _ = noop.kill();
    let _ = noop.wait();
    drop(
        sqlx::query(&format!("DROP DATABASE {pg_db} WITH (FORCE)"))
            .execute(&mut admin)
            .await,
    );
}

/// The collector's group commits since it started, from its /metrics.
#[derive(Debug)]
struct Commits {
    count: f64,
    events: f64,
    seconds: f64,
}

async fn commit_stats(base: &str) -> Commits {
    let text = reqwest::get(format!("{base}/metrics"))
        .await
        .and_then(|r| r.error_for_status())
        .expect("the collector's /metrics answers")
        .text()
        .await
        .expect("the collector's /metrics is text");
    let value = |name: &str| -> f64 {
        text.lines()
            .find_map(|line| {
                line.strip_prefix(name)?
                    .strip_prefix(' ')?
                    .trim()
                    .parse()
                    .ok()
            })
            .unwrap_or_else(|| panic!("{name} missing from /metrics"))
    };
    Commits {
        count: value("errorflow_write_batch_events_count"),
        events: value("errorflow_write_batch_events_sum"),
        seconds: value("errorflow_write_duration_seconds_sum"),
    }
}

/// Whether `name` is in the comma-separated list in `var` (all when unset).
fn selected(var: &str, name: &str) -> bool {
    match std::env::var(var) {
        Ok(list) => list.split(',').any(|s| s.trim() == name),
        Err(_) => true,
    }
}

fn replace_db(url: &str, db: &str) -> String {
    let (base, _) = url.rsplit_once('/').expect("database url has a path");
    format!("{base}/{db}")
}

/// (events stored, sum of incident counts).
async fn stored_events(url: &str) -> (i64, i64) {
    let q =
        "SELECT (SELECT COUNT(*) FROM errors), (SELECT COALESCE(SUM(count), 0) FROM error_groups)";
    if url.starts_with("postgres") {
        let mut c = sqlx::PgConnection::connect(url).await.unwrap();
        let (a, b): (i64, i64) = sqlx::query_as(&q.replace("SUM(count)", "SUM(count)::BIGINT"))
            .fetch_one(&mut c)
            .await
            .unwrap();
        (a, b)
    } else {
        let mut c = sqlx::SqliteConnection::connect(url).await.unwrap();
        sqlx::query_as(q).fetch_one(&mut c).await.unwrap()
    }
}

fn collector_binary() -> std::path::PathBuf {
    // target/release/deps/load-xxxx → target/release/errorflow-collector
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().unwrap().parent().unwrap();
    let bin = dir.join("errorflow-collector");
    assert!(
        bin.exists(),
        "{} not found: run through `cargo bench -p errorflow-collector --bench load`",
        bin.display()
    );
    bin
}

fn start_collector(bin: &std::path::Path, url: &str, port: u16, dir: &std::path::Path) -> Child {
    // The Sentry endpoints' per-key rate limit (1000/s by default) would
    // measure the limiter, not the collector: turn it off.
    let config = dir.join("bench.toml");
    std::fs::write(&config, "[limits]\nkey_events_per_second = 0\n").unwrap();
    Command::new(bin)
        .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
        .arg("--config")
        .arg(&config)
        .env("DATABASE_URL", url)
        // LOAD_COLLECTOR_LOG=errorflow_collector::writer=debug shows the group commits.
        .env(
            "ERRORFLOW_LOG",
            std::env::var("LOAD_COLLECTOR_LOG").unwrap_or_else(|_| "warn".into()),
        )
        .stdout(Stdio::null())
        .spawn()
        .expect("start collector")
}

/// A new project's (ingest key, id).
fn create_key(bin: &std::path::Path, url: &str) -> (String, i64) {
    let name = format!("bench{}", rand_suffix());
    let out = Command::new(bin)
        .args(["project", "create", &name, "--json"])
        .env("DATABASE_URL", url)
        .env("ERRORFLOW_LOG", "warn")
        .output()
        .expect("project create");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    (
        v["key"].as_str().unwrap().to_string(),
        v["id"].as_i64().unwrap(),
    )
}

fn rand_suffix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
        % 1_000_000_007
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

async fn wait_port(port: u16) {
    for _ in 0..300 {
        if tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("server on port {port} did not start");
}

/// Appends a realistic event to `out`: one of 50 raising sites, with a
/// varying id in the message and a time-ordered event id, as
/// `errorflow_sdk::protocol::Event::new` makes it. Written with `write!` from static pieces rather
/// than built as a `serde_json::Value`: building 100 values per request made
/// the load generator, not the collector, the bottleneck.
fn push_event_json(out: &mut String, site: usize, n: u64) {
    use std::fmt::Write as _;
    let id = errorflow_sdk::protocol::time_ordered_id(chrono::Utc::now());
    write!(
        out,
        r#"{{"event_id":"{id}","level":"error","platform":"rust","service":"svc-{svc}","environment":"prod","release":"1.4.2","host":"web-1","message":"order {n} failed at step {site}","exception":[{{"type":"app::errors::Error{site}","value":"order {n} could not be charged: card 4242 declined after {ms}ms","stacktrace":{{"frames":[{{"function":"tokio::runtime::task::harness::poll","in_app":false}},{{"function":"app::http::handlers::checkout","module":"app::http::handlers","filename":"src/http/handlers.rs","lineno":120,"in_app":true}},{{"function":"app::billing::charge_{site}","module":"app::billing","filename":"src/billing.rs","lineno":42,"in_app":true}}]}}}}],"tags":{{"region":"eu-west-1","customer_tier":"pro"}},"request":{{"method":"POST","url":"/orders/{n}/checkout","headers":{{"user-agent":"curl/8"}}}},"breadcrumbs":[{{"category":"log","level":"info","message":"starting checkout"}}]}}"#,
        svc = site % 5,
        ms = n % 900,
    )
    .unwrap();
}

/// The static part of each site's Sentry event (everything but the fields
/// that vary per request), gzip-compressed once: (gzip member, raw length).
/// Compressing 4 KB per request would make the load generator, not the
/// collector, the bottleneck on a small machine.
fn sentry_tails() -> Arc<Vec<(Vec<u8>, usize)>> {
    let tails = (0..50)
        .map(|site| {
            let rest = support::python_event(site).to_string();
            // `"platform": …}` — the object without its opening brace.
            let tail = &rest[1..];
            let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
            gz.write_all(tail.as_bytes()).unwrap();
            gz.write_all(b"\n").unwrap();
            (gz.finish().unwrap(), tail.len())
        })
        .collect();
    Arc::new(tails)
}

/// A Sentry envelope as the Python SDK sends it (a random UUIDv4 event id):
/// one event of about 4 KB
/// (chained exception, frames with context lines, breadcrumbs, contexts),
/// gzip-encoded. The body is two gzip members (valid gzip, as RFC 1952
/// allows): the per-request head (ids, time, user, URL) compressed now, then
/// the site's precompressed static tail.
fn sentry_envelope(tails: &[(Vec<u8>, usize)], site: usize, n: u64) -> Vec<u8> {
    let id = uuid::Uuid::new_v4().simple().to_string();
    let event_head = format!(
        "{{\"event_id\":\"{id}\",\"timestamp\":{ts},\"user\":{{\"id\":\"u-{user}\",\"ip_address\":\"10.0.0.1\"}},\
         \"request\":{{\"method\":\"POST\",\"url\":\"https://shop.example.com/orders/{n}/checkout\",\
         \"headers\":{{\"User-Agent\":\"Mozilla/5.0\",\"Accept\":\"application/json\"}}}},\
         \"extra\":{{\"order\":{n},\"trace\":\"{id}\"}},",
        ts = 1_795_805_563.25 + (n % 100_000) as f64 / 1000.0,
        user = n % 1000,
    );
    let (tail, tail_len) = &tails[site % tails.len()];
    let head = format!(
        "{{\"event_id\":\"{id}\",\"sent_at\":\"2026-11-27T18:52:10.647356Z\"}}\n\
         {{\"type\":\"event\",\"content_type\":\"application/json\",\"length\":{}}}\n{event_head}",
        event_head.len() + tail_len
    );
    let mut body = gzip_stored(head.as_bytes());
    body.extend_from_slice(tail);
    body
}

/// A gzip member holding `data` in one stored (uncompressed) deflate block.
/// Valid gzip that any decoder inflates, built without a compressor: setting
/// up a deflate stream per request made the load generator, not the
/// collector, the bottleneck.
fn gzip_stored(data: &[u8]) -> Vec<u8> {
    let len = u16::try_from(data.len()).expect("per-request head fits one stored block");
    let mut crc = flate2::Crc::new();
    crc.update(data);
    let mut out = Vec::with_capacity(data.len() + 32);
    out.extend_from_slice(&[0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff]);
    out.push(0x01); // final block, stored
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&(!len).to_le_bytes());
    out.extend_from_slice(data);
    out.extend_from_slice(&crc.sum().to_le_bytes());
    out.extend_from_slice(&(data.len() as u32).to_le_bytes());
    out
}

fn custom_json(site: usize, n: u64) -> String {
    format!(
        r#"{{"service":"svc-{svc}","error_type":"Error{site}","message":"order {n} failed at step {site}","path":"/orders/{n}","env":"prod"}}"#,
        svc = site % 5
    )
}

async fn drive(
    base: &str,
    (key, project_id): (&str, i64),
    s: &Scenario,
    duration: Duration,
    pid: u32,
) -> Measured {
    let concurrency = std::env::var("LOAD_CONCURRENCY")
        .ok()
        .and_then(|c| c.parse().ok())
        .unwrap_or(s.concurrency);
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(concurrency)
        .build()
        .unwrap();
    let url = format!("{base}{}", s.path.replace("{id}", &project_id.to_string()));
    let requests = Arc::new(AtomicU64::new(0));
    let events = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let cpu_before = process_cpu_seconds(pid);
    let tails = sentry_tails();
    let started = Instant::now();
    let mut tasks = Vec::new();
    for worker in 0..concurrency {
        let (client, url, key) = (client.clone(), url.clone(), key.to_string());
        let (requests, events, errors, stop) = (
            requests.clone(),
            events.clone(),
            errors.clone(),
            stop.clone(),
        );
        let per = s.events_per_request;
        let kind = s.body;
        let tails = tails.clone();
        tasks.push(tokio::spawn(async move {
            let mut n = worker as u64 * 1_000_000;
            while !stop.load(Ordering::Relaxed) {
                n += 1;
                let site = (n % 50) as usize;
                let request = match kind {
                    BodyKind::Custom => client
                        .post(&url)
                        .header("content-type", "application/json")
                        .header("x-errorflow-key", &key)
                        .body(custom_json(site, n)),
                    BodyKind::Batch => {
                        let mut body = String::with_capacity(per * 900 + 16);
                        body.push_str(r#"{"events":["#);
                        for i in 0..per as u64 {
                            if i > 0 {
                                body.push(',');
                            }
                            push_event_json(&mut body, ((n + i) % 50) as usize, n * 1000 + i);
                        }
                        body.push_str("]}");
                        client
                            .post(&url)
                            .header("content-type", "application/json")
                            .header("x-errorflow-key", &key)
                            .body(body)
                    }
                    BodyKind::SentryEnvelope => client
                        .post(&url)
                        .header("content-type", "application/x-sentry-envelope")
                        .header("content-encoding", "gzip")
                        .header(
                            "x-sentry-auth",
                            format!("Sentry sentry_key={key}, sentry_version=7, sentry_client=sentry.python/2.46.0"),
                        )
                        .body(sentry_envelope(&tails, site, n)),
                };
                let res = request.send().await;
                match res {
                    Ok(r) if r.status().is_success() => {
                        let _ = r.bytes().await;
                        requests.fetch_add(1, Ordering::Relaxed);
                        events.fetch_add(per as u64, Ordering::Relaxed);
                    }
                    _ => {
                        errors.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        }));
    }
    let mut peak_rss = 0.0f64;
    while started.elapsed() < duration {
        tokio::time::sleep(Duration::from_millis(200)).await;
        peak_rss = peak_rss.max(process_rss_mib(pid));
    }
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        let _ = t.await;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let cpu = process_cpu_seconds(pid) - cpu_before;
    let ev = events.load(Ordering::Relaxed);
    Measured {
        requests_per_s: requests.load(Ordering::Relaxed) as f64 / elapsed,
        events_per_s: ev as f64 / elapsed,
        errors: errors.load(Ordering::Relaxed),
        cpu_ms_per_event: if ev > 0 {
            cpu * 1000.0 / ev as f64
        } else {
            f64::NAN
        },
        peak_rss_mib: peak_rss,
    }
}

/// User + system CPU seconds of a process, from /proc/PID/stat.
fn process_cpu_seconds(pid: u32) -> f64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0.0;
    };
    // Fields after the parenthesised command name; utime and stime are 14th and 15th overall.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = fields
        .get(11)
        .and_then(|v| v.parse::<f64>().ok())
        .unwrap_or(0.0)
        + fields
            .get(12)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0);
    ticks / 100.0 // CLK_TCK is 100 on Linux x86_64
}

fn process_rss_mib(pid: u32) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map(|kb| kb / 1024.0)
        .unwrap_or(0.0)
}

/// The baseline: accepts any POST, reads the body, answers a fixed JSON.
fn noop_server(port: u16) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let app = axum::Router::new().fallback(|_body: axum::body::Bytes| async {
            axum::Json(serde_json::json!({"accepted": 0, "duplicates": 0, "rejected": []}))
        });
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
            .await
            .unwrap();
        axum::serve(listener, app).await.unwrap();
    });
}
