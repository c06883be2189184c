//! Server time of the dashboard's pages on a large Postgres database,
//! through the real router (no socket), against a trivial endpoint in the
//! same run.
//!
//! Run with:
//!
//! ```sh
//! cargo bench -p errorflow-collector --bench dashboard
//! DASH_BENCH_GROUPS=10000 DASH_BENCH_EVENTS=1000000 cargo bench -p errorflow-collector --bench dashboard
//! ```
//!
//! It creates a throwaway database on the server of `ERRORFLOW_BENCH_PG_URL`
//! (or `ERRORFLOW_TEST_PG_URL`, default `postgres://postgres@127.0.0.1:5432/postgres`),
//! seeds `DASH_BENCH_GROUPS` incidents (default 10,000) and
//! `DASH_BENCH_EVENTS` events (default 200,000) with `generate_series`,
//! and drops it afterwards. The target is ≤ 50 ms per page.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{header, Request, StatusCode};
use clap::Parser;
use errorflow_collector::app::build_state;
use errorflow_collector::config::{Cli, Config};
use errorflow_collector::credentials;
use errorflow_collector::http::dashboard::auth;
use errorflow_collector::http::router;
use errorflow_collector::store::{self, Store};
use sqlx::Connection;
use tower::ServiceExt;

const TARGET: Duration = Duration::from_millis(50);

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.replace('_', "").parse().ok())
        .unwrap_or(default)
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(run());
}

async fn run() {
    let admin_url = std::env::var("ERRORFLOW_BENCH_PG_URL")
        .or_else(|_| std::env::var("ERRORFLOW_TEST_PG_URL"))
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_string());
    let groups = env_usize("DASH_BENCH_GROUPS", 10_000) as i64;
    let events = env_usize("DASH_BENCH_EVENTS", 200_000) as i64;
    let iterations = env_usize("DASH_BENCH_ITERATIONS", 30);

    let mut admin = sqlx::PgConnection::connect(&admin_url)
        .await
        .unwrap_or_else(|e| {
            panic!(
                "cannot reach Postgres at {}: {e}",
                store::redact_url(&admin_url)
            )
        });
    let name = format!("errorflow_bench_{}", uuid::Uuid::new_v4().simple());
    sqlx::query(&format!("CREATE DATABASE \"{name}\""))
        .execute(&mut admin)
        .await
        .unwrap();
    let url = match admin_url.rfind('/') {
        Some(i) if i > "postgres://".len() => format!("{}/{name}", &admin_url[..i]),
        _ => format!("{admin_url}/{name}"),
    };
    let result = bench(&url, groups, events, iterations).await;
    sqlx::query(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"))
        .execute(&mut admin)
        .await
        .unwrap();
    if let Err(e) = result {
        panic!("{e}");
    }
}

async fn seed(url: &str, project_id: i64, groups: i64, events: i64) -> anyhow::Result<i64> {
    let mut conn = sqlx::PgConnection::connect(url).await?;
    let started = Instant::now();
    sqlx::query(
        "INSERT INTO error_groups (project_id, fingerprint, fingerprint_version, cluster_key, service, error_type,
             title, culprit, level, status, count, first_seen, last_seen, severity, priority, ai_summary)
         SELECT $1, 'fp' || g, 1, 'svc' || (g % 20) || ':Err' || (g % 50), 'svc' || (g % 20), 'Err' || (g % 50),
             'Err' || (g % 50) || ': order ' || g || ' failed', 'shop::handlers::h' || (g % 300), 'error',
             CASE WHEN g % 10 = 0 THEN 'RESOLVED' WHEN g % 7 = 0 THEN 'QUIET' ELSE 'OPEN' END,
             0, now() - interval '13 days' + (g % 1000) * interval '1 minute', now() - (g % 86400) * interval '1 second',
             (ARRAY['low','medium','high','unknown'])[1 + g % 4], CASE WHEN g % 3 = 0 THEN g % 100 END,
             CASE WHEN g % 5 = 0 THEN '{\"summary\": \"The payment gateway times out under load.\", \"severity\": \"high\", \"next_steps\": [\"raise the timeout\"]}' END
         FROM generate_series(1, $2) AS g",
    )
    .bind(project_id)
    .bind(groups)
    .execute(&mut conn)
    .await?;
    let (min_id,): (i64,) = sqlx::query_as("SELECT min(id) FROM error_groups")
        .fetch_one(&mut conn)
        .await?;
    // Events in chunks, skewed: a tenth of the incidents get most events.
    let chunk = 100_000i64;
    let mut done = 0i64;
    while done < events {
        let n = chunk.min(events - done);
        sqlx::query(
            "INSERT INTO errors (project_id, group_id, event_id, service, error_type, message, timestamp, received_at,
                 env, path, trace_id, level, release, host, fingerprint, exception, tags, data)
             SELECT $1, g.gid, gen_random_uuid(), 'svc' || (g.k % 20), 'Err' || (g.k % 50),
                 'Err' || (g.k % 50) || ': order ' || e || ' failed', t.ts, t.ts, 'prod', '/orders/' || e,
                 md5(e::text), 'error', '1.' || (e % 5), 'web-' || (e % 4), 'fp' || g.k,
                 '[{\"type\": \"Err\", \"value\": \"order failed\"}]',
                 jsonb_build_object('environment', 'prod', 'host', 'web-' || (e % 4)),
                 jsonb_build_object('event_id', gen_random_uuid(), 'level', 'error', 'message', 'order ' || e || ' failed',
                     'exception', jsonb_build_array(jsonb_build_object('type', 'Err', 'value', 'order failed',
                         'stacktrace', jsonb_build_object('frames', jsonb_build_array(
                             jsonb_build_object('function', 'shop::handlers::pay', 'filename', 'src/handlers.rs', 'lineno', 42, 'in_app', true))))))
             FROM generate_series($2::bigint, $3::bigint) AS e,
                  LATERAL (SELECT CASE WHEN e % 2 = 0 THEN (e / 2) % ($4 / 10) ELSE e % $4 END + 1 AS k) AS k0,
                  LATERAL (SELECT k0.k AS k, $5 + k0.k - 1 AS gid) AS g,
                  LATERAL (SELECT now() - (e % 1209600) * interval '1 second' AS ts) AS t",
        )
        .bind(project_id)
        .bind(done + 1)
        .bind(done + n)
        .bind(groups.max(10))
        .bind(min_id)
        .execute(&mut conn)
        .await?;
        done += n;
        eprintln!(
            "  seeded {done}/{events} events ({:.0?})",
            started.elapsed()
        );
    }
    sqlx::query(
        "UPDATE error_groups g SET count = c.n, last_seen = c.last, first_seen = LEAST(g.first_seen, c.first)
         FROM (SELECT group_id, count(*) AS n, max(timestamp) AS last, min(timestamp) AS first FROM errors GROUP BY group_id) c
         WHERE g.id = c.group_id",
    )
    .execute(&mut conn)
    .await?;
    sqlx::query(
        "INSERT INTO group_hourly_counts (group_id, hour, count)
         SELECT group_id, date_trunc('hour', timestamp), count(*) FROM errors GROUP BY 1, 2",
    )
    .execute(&mut conn)
    .await?;
    sqlx::query(
        "INSERT INTO group_tag_counts (group_id, key, value, count, last_seen)
         SELECT group_id, 'host', host, count(*), max(timestamp) FROM errors GROUP BY group_id, host
         UNION ALL
         SELECT group_id, 'environment', env, count(*), max(timestamp) FROM errors GROUP BY group_id, env",
    )
    .execute(&mut conn)
    .await?;
    sqlx::query("ANALYZE").execute(&mut conn).await?;
    let (stored,): (i64,) = sqlx::query_as("SELECT count(*) FROM errors")
        .fetch_one(&mut conn)
        .await?;
    anyhow::ensure!(
        stored == events,
        "seeded {stored} events instead of {events}"
    );
    let (busiest,): (i64,) =
        sqlx::query_as("SELECT id FROM error_groups ORDER BY count DESC LIMIT 1")
            .fetch_one(&mut conn)
            .await?;
    eprintln!("  seeding done in {:.1?}", started.elapsed());
    Ok(busiest)
}

struct Timing {
    label: &'static str,
    median: Duration,
    p95: Duration,
}

async fn time(
    app: &axum::Router,
    cookie: &str,
    label: &'static str,
    uri: &str,
    iterations: usize,
) -> Timing {
    let once = || async {
        let req = Request::get(uri)
            .header(header::COOKIE, cookie)
            .body(Body::empty())
            .unwrap();
        let started = Instant::now();
        let res = app.clone().oneshot(req).await.unwrap();
        let status = res.status();
        let body = axum::body::to_bytes(res.into_body(), usize::MAX)
            .await
            .unwrap();
        let took = started.elapsed();
        assert_eq!(
            status,
            StatusCode::OK,
            "{uri}: {}",
            String::from_utf8_lossy(&body)
        );
        took
    };
    for _ in 0..3 {
        once().await;
    }
    let mut samples = Vec::with_capacity(iterations);
    for _ in 0..iterations {
        samples.push(once().await);
    }
    samples.sort();
    Timing {
        label,
        median: samples[samples.len() / 2],
        p95: samples[(samples.len() * 95 / 100).min(samples.len() - 1)],
    }
}

async fn bench(url: &str, groups: i64, events: i64, iterations: usize) -> anyhow::Result<()> {
    let store: Arc<dyn Store> = store::connect(url).await?;
    store.migrate().await?;
    let key = credentials::new_ingest_key();
    let project = store
        .create_project(
            "bench",
            &credentials::hash_secret(&key),
            &credentials::prefix(&key),
        )
        .await?;
    let user = store
        .create_user("admin", &auth::hash_password("bench-password")?)
        .await?
        .expect("new user");
    let token = auth::random_token();
    let now = chrono::Utc::now();
    store
        .create_session(
            &auth::session_hash(&token),
            user.id,
            now,
            now + auth::SESSION_TTL,
        )
        .await?;
    eprintln!("seeding {groups} incidents and {events} events…");
    let busiest = seed(url, project.id, groups, events).await?;
    let config = Config::resolve(&Cli::parse_from(["errorflow-collector"]), None)?;
    let app = router(build_state(store.clone(), &config));
    let cookie = format!("{}={token}", auth::SESSION_COOKIE);

    let pages: [(&'static str, String); 7] = [
        ("baseline GET /healthz", "/healthz".to_string()),
        ("list: open, last seen", "/".to_string()),
        (
            "list: all, most events",
            "/?status=all&sort=count".to_string(),
        ),
        (
            "list: priority, severity high",
            "/?status=all&sort=priority&severity=high".to_string(),
        ),
        ("list: search", "/?status=all&q=order%204242".to_string()),
        ("detail: busiest incident", format!("/incidents/{busiest}")),
        ("events page", "/events".to_string()),
    ];
    let mut results = Vec::new();
    for (label, uri) in &pages {
        results.push(time(&app, &cookie, label, uri, iterations).await);
    }
    let baseline = results[0].median.max(Duration::from_micros(1));
    println!("\ndashboard server time, {groups} incidents, {events} events, {iterations} requests each (Postgres):");
    println!(
        "{:<32} {:>10} {:>10} {:>12}",
        "page", "median", "p95", "× baseline"
    );
    let mut over = Vec::new();
    for r in &results {
        println!(
            "{:<32} {:>8.2}ms {:>8.2}ms {:>12.1}",
            r.label,
            r.median.as_secs_f64() * 1e3,
            r.p95.as_secs_f64() * 1e3,
            r.median.as_secs_f64() / baseline.as_secs_f64()
        );
        if r.median > TARGET {
            over.push(r.label);
        }
    }
    if over.is_empty() {
        println!("all pages within {} ms (median)", TARGET.as_millis());
    } else {
        println!(
            "OVER the {} ms target: {}",
            TARGET.as_millis(),
            over.join(", ")
        );
    }
    Ok(())
}
