//! Load benchmark of the collector over real HTTP, against a no-op axum
//! handler measured in the same run.
//!
//! Run with:
//!   cargo bench -p errorflow-collector --bench load            # full (15 s per scenario)
//!   LOAD_SECONDS=3 cargo bench -p errorflow-collector --bench load   # quick
//!
//! It builds nothing itself: `cargo bench` compiles the collector in release
//! mode, and this program starts it as a child process (the binary next to
//! this one in target/release), once on SQLite and once on Postgres
//! (`ERRORFLOW_TEST_PG_URL`, default postgres://postgres@127.0.0.1:5432/postgres;
//! a throwaway database is created and dropped). The baseline is a no-op axum
//! handler in a child process of this same program, so both sides pay the
//! same HTTP and process costs. Reported per scenario: requests/s, events/s
//! accepted, events/s stored (counted in the database afterwards, with the
//! incidents' counts summed to check grouping), server CPU per event
//! (from /proc) and peak RSS.

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
    name: &'static str,
    path: &'static str,
    events_per_request: usize,
    concurrency: usize,
}

const BATCH: Scenario = Scenario {
    name: "POST /api/v1/events (100 events/request)",
    path: "/api/v1/events",
    events_per_request: 100,
    concurrency: 16,
};
const CUSTOM: Scenario = Scenario {
    name: "POST /errors/custom (1 event/request)",
    path: "/errors/custom",
    events_per_request: 1,
    concurrency: 64,
};

#[derive(Debug, Default, Clone, Copy)]
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

    // Baseline: a no-op axum handler answering the same requests.
    let noop_port = free_port();
    let mut noop = Command::new(std::env::current_exe().unwrap())
        .env(NOOP_ENV, noop_port.to_string())
        .stdout(Stdio::null())
        .spawn()
        .expect("start no-op server");
    wait_port(noop_port).await;
    let noop_base = format!("http://127.0.0.1:{noop_port}");
    let noop_batch = drive(&noop_base, "none", &BATCH, duration, noop.id()).await;
    let noop_custom = drive(&noop_base, "none", &CUSTOM, duration, noop.id()).await;
    let _ = noop.kill();
    println!(
        "baseline no-op axum: {:.0} req/s with 100-event bodies, {:.0} req/s with 1-event bodies",
        noop_batch.requests_per_s, noop_custom.requests_per_s
    );

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
    println!("| backend | scenario | req/s | events/s accepted | events/s stored | stored/accepted | vs no-op (req/s) | server CPU ms/event | peak RSS MiB | errors |");
    println!("|---|---|---|---|---|---|---|---|---|---|");
    for (backend, url) in [
        ("sqlite", sqlite_url.as_str()),
        ("postgres", pg_url.as_str()),
    ] {
        for (scenario, baseline) in [(&BATCH, noop_batch), (&CUSTOM, noop_custom)] {
            let port = free_port();
            let mut child = start_collector(&bin, url, port);
            wait_port(port).await;
            let key = create_key(&bin, url);
            let base = format!("http://127.0.0.1:{port}");
            let before = stored_events(url).await;
            let m = drive(&base, &key, scenario, duration, child.id()).await;
            let after = stored_events(url).await;
            let _ = child.kill();
            let _ = child.wait();
            let stored = (after.0 - before.0) as f64 / duration.as_secs_f64();
            let grouped_ok = after.0 == after.1;
            println!(
                "| {backend} | {} | {:.0} | {:.0} | {:.0} | {:.3}{} | {:.2}× | {:.4} | {:.0} | {} |",
                scenario.name,
                m.requests_per_s,
                m.events_per_s,
                stored,
                stored / m.events_per_s.max(1.0),
                if grouped_ok { "" } else { " (incident counts disagree!)" },
                m.requests_per_s / baseline.requests_per_s.max(1.0),
                m.cpu_ms_per_event,
                m.peak_rss_mib,
                m.errors
            );
            std::io::stdout().flush().ok();
        }
    }
    drop(
        sqlx::query(&format!("DROP DATABASE {pg_db} WITH (FORCE)"))
            .execute(&mut admin)
            .await,
    );
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

fn start_collector(bin: &std::path::Path, url: &str, port: u16) -> Child {
    Command::new(bin)
        .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
        .env("DATABASE_URL", url)
        .env("ERRORFLOW_LOG", "warn")
        .stdout(Stdio::null())
        .spawn()
        .expect("start collector")
}

fn create_key(bin: &std::path::Path, url: &str) -> String {
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
    v["key"].as_str().unwrap().to_string()
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

/// A realistic event: one of 50 raising sites, with a varying id in the message.
fn event_json(site: usize, n: u64) -> serde_json::Value {
    serde_json::json!({
        "event_id": uuid::Uuid::new_v4(),
        "level": "error",
        "platform": "rust",
        "service": format!("svc-{}", site % 5),
        "environment": "prod",
        "release": "1.4.2",
        "host": "web-1",
        "message": format!("order {n} failed at step {site}"),
        "exception": [{
            "type": format!("app::errors::Error{site}"),
            "value": format!("order {n} could not be charged: card 4242 declined after {}ms", n % 900),
            "stacktrace": {"frames": [
                {"function": "tokio::runtime::task::harness::poll", "in_app": false},
                {"function": "app::http::handlers::checkout", "module": "app::http::handlers", "filename": "src/http/handlers.rs", "lineno": 120, "in_app": true},
                {"function": format!("app::billing::charge_{site}"), "module": "app::billing", "filename": "src/billing.rs", "lineno": 42, "in_app": true}
            ]}
        }],
        "tags": {"region": "eu-west-1", "customer_tier": "pro"},
        "request": {"method": "POST", "url": format!("/orders/{n}/checkout"), "headers": {"user-agent": "curl/8"}},
        "breadcrumbs": [{"category": "log", "level": "info", "message": "starting checkout"}]
    })
}

fn custom_json(site: usize, n: u64) -> serde_json::Value {
    serde_json::json!({
        "service": format!("svc-{}", site % 5),
        "error_type": format!("Error{site}"),
        "message": format!("order {n} failed at step {site}"),
        "path": format!("/orders/{n}"),
        "env": "prod"
    })
}

async fn drive(base: &str, key: &str, s: &Scenario, duration: Duration, pid: u32) -> Measured {
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(s.concurrency)
        .build()
        .unwrap();
    let url = format!("{base}{}", s.path);
    let requests = Arc::new(AtomicU64::new(0));
    let events = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let cpu_before = process_cpu_seconds(pid);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for worker in 0..s.concurrency {
        let (client, url, key) = (client.clone(), url.clone(), key.to_string());
        let (requests, events, errors, stop) = (
            requests.clone(),
            events.clone(),
            errors.clone(),
            stop.clone(),
        );
        let per = s.events_per_request;
        tasks.push(tokio::spawn(async move {
            let mut n = worker as u64 * 1_000_000;
            while !stop.load(Ordering::Relaxed) {
                n += 1;
                let body = if per == 1 {
                    custom_json((n % 50) as usize, n).to_string()
                } else {
                    let evs: Vec<_> = (0..per as u64)
                        .map(|i| event_json(((n + i) % 50) as usize, n * 1000 + i))
                        .collect();
                    serde_json::json!({ "events": evs }).to_string()
                };
                let res = client
                    .post(&url)
                    .header("content-type", "application/json")
                    .header("x-errorflow-key", &key)
                    .body(body)
                    .send()
                    .await;
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
