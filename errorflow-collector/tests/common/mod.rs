//! Helpers shared by integration tests: throwaway databases for both
//! backends, a builder for [`NormalizedEvent`] values that does not
//! depend on the pipeline, and (`app.rs`) the router on such a database with
//! request helpers, for the HTTP-level tests.
#![allow(dead_code)]

mod app;
pub mod binary;
pub mod venv;

#[allow(unused_imports)]
pub(crate) use app::backend_tests;
#[allow(unused_imports)]
pub use app::{assert_error, gzip, message_event, test_app, Reply, TestApp};

use std::collections::BTreeMap;
use std::ops::Deref;
use std::sync::Arc;

use chrono::{DateTime, TimeZone, Utc};
use errorflow_collector::model::NormalizedEvent;
use errorflow_collector::store::{self, Store};
use errorflow_sdk::protocol::{Event, Exception, Level};
use sqlx::Connection;
use uuid::Uuid;

const DEFAULT_PG_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";

/// A migrated store on a database that exists only for one test. Dropping
/// it drops the database (Postgres) or deletes the directory (SQLite).
pub struct TestDb {
    pub store: Arc<dyn Store>,
    /// The URL of the test database itself, for tests that poke at it directly.
    pub url: String,
    cleanup: Cleanup,
}

enum Cleanup {
    Postgres { admin_url: String, name: String },
    Sqlite(#[allow(dead_code)] tempfile::TempDir),
}

impl Deref for TestDb {
    type Target = Arc<dyn Store>;
    fn deref(&self) -> &Arc<dyn Store> {
        &self.store
    }
}

impl TestDb {
    /// Runs one parameterised statement against the test database, for
    /// setting columns that only other components (triage) write.
    pub async fn set_triage(&self, group_id: i64, priority: Option<i32>, severity: &str) {
        match &self.cleanup {
            Cleanup::Postgres { .. } => {
                let mut conn = sqlx::PgConnection::connect(&self.url).await.unwrap();
                sqlx::query("UPDATE error_groups SET priority = $1, severity = $2 WHERE id = $3")
                    .bind(priority)
                    .bind(severity)
                    .bind(group_id)
                    .execute(&mut conn)
                    .await
                    .unwrap();
            }
            Cleanup::Sqlite(_) => {
                let mut conn = sqlx::SqliteConnection::connect(&self.url).await.unwrap();
                sqlx::query("PRAGMA busy_timeout = 10000")
                    .execute(&mut conn)
                    .await
                    .unwrap();
                sqlx::query("UPDATE error_groups SET priority = ?, severity = ? WHERE id = ?")
                    .bind(priority)
                    .bind(severity)
                    .bind(group_id)
                    .execute(&mut conn)
                    .await
                    .unwrap();
            }
        }
    }
}

impl TestDb {
    /// Runs one statement (no parameters) on the test database, either backend.
    pub async fn execute(&self, sql: &str) {
        match &self.cleanup {
            Cleanup::Postgres { .. } => {
                let mut conn = sqlx::PgConnection::connect(&self.url).await.unwrap();
                sqlx::query(sql).execute(&mut conn).await.unwrap();
            }
            Cleanup::Sqlite(_) => {
                let mut conn = sqlx::SqliteConnection::connect(&self.url).await.unwrap();
                sqlx::query("PRAGMA busy_timeout = 10000")
                    .execute(&mut conn)
                    .await
                    .unwrap();
                sqlx::query(sql).execute(&mut conn).await.unwrap();
            }
        }
    }

    /// Runs a query whose one column reads as text, either backend.
    pub async fn texts(&self, sql: &str) -> Vec<String> {
        match &self.cleanup {
            Cleanup::Postgres { .. } => {
                let mut conn = sqlx::PgConnection::connect(&self.url).await.unwrap();
                sqlx::query_scalar(sql).fetch_all(&mut conn).await.unwrap()
            }
            Cleanup::Sqlite(_) => {
                let mut conn = sqlx::SqliteConnection::connect(&self.url).await.unwrap();
                sqlx::query_scalar(sql).fetch_all(&mut conn).await.unwrap()
            }
        }
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        if let Cleanup::Postgres { admin_url, name } = &self.cleanup {
            // Drop runs inside the test's runtime, which cannot be blocked
            // on; a short-lived thread with its own runtime does the work.
            let admin_url = admin_url.clone();
            let sql = format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)");
            let done = std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap();
                rt.block_on(async move {
                    if let Ok(mut conn) = sqlx::PgConnection::connect(&admin_url).await {
                        if let Err(e) = sqlx::query(&sql).execute(&mut conn).await {
                            eprintln!("could not drop test database: {e}");
                        }
                    }
                });
            });
            let _ = done.join();
        }
    }
}

/// A fresh, migrated Postgres database. Fails loudly when Postgres is not
/// reachable: a conformance suite that silently skips a backend proves nothing.
pub async fn pg_store() -> TestDb {
    let db = pg_store_unmigrated().await;
    db.store.migrate().await.expect("migrate postgres");
    db
}

/// A fresh, empty Postgres database (no migration applied), dropped with the
/// returned value; fails loudly when Postgres is not reachable.
pub async fn pg_store_unmigrated() -> TestDb {
    let admin_url =
        std::env::var("ERRORFLOW_TEST_PG_URL").unwrap_or_else(|_| DEFAULT_PG_URL.to_string());
    let mut admin = match sqlx::PgConnection::connect(&admin_url).await {
        Ok(conn) => conn,
        Err(e) => panic!(
            "cannot reach Postgres at {} ({e}); start one, e.g. \
             `docker run -d -p 5432:5432 -e POSTGRES_HOST_AUTH_METHOD=trust postgres:15`, \
             or point ERRORFLOW_TEST_PG_URL at a server where this user may CREATE DATABASE",
            store::redact_url(&admin_url)
        ),
    };
    // The name is generated here, never taken from input, and identifiers
    // cannot be bound as parameters, hence the format!.
    let name = format!("errorflow_test_{}", Uuid::new_v4().simple());
    sqlx::query(&format!("CREATE DATABASE \"{name}\""))
        .execute(&mut admin)
        .await
        .expect("create test database");
    let url = match admin_url.rfind('/') {
        Some(slash) if slash > "postgres://".len() => format!("{}/{name}", &admin_url[..slash]),
        _ => format!("{admin_url}/{name}"),
    };
    TestDb {
        store: store::connect(&url)
            .await
            .expect("connect to test database"),
        url,
        cleanup: Cleanup::Postgres { admin_url, name },
    }
}

/// A fresh, migrated SQLite database in a temporary directory.
pub async fn sqlite_store() -> TestDb {
    let db = sqlite_store_unmigrated().await;
    db.store.migrate().await.expect("migrate sqlite");
    db
}

/// A fresh, empty SQLite database (no migration applied) in a temporary directory.
pub async fn sqlite_store_unmigrated() -> TestDb {
    let dir = tempfile::tempdir().expect("temp dir");
    let url = format!("sqlite://{}", dir.path().join("errorflow.db").display());
    TestDb {
        store: store::connect(&url).await.expect("open sqlite"),
        url,
        cleanup: Cleanup::Sqlite(dir),
    }
}

/// A TCP port the OS handed out, bound and not listening, for as long as the
/// returned socket lives: connecting to it is refused. Unlike a fixed port
/// (1, 9), nothing else can be listening there.
pub fn closed_port() -> tokio::net::TcpSocket {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    socket
}

/// A point in time with whole seconds, which both backends store exactly.
pub fn at(h: u32, m: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 3, 14, h, m, 0).unwrap()
}

/// Builds a [`NormalizedEvent`] the way the pipeline would, without the
/// pipeline: `fingerprint` decides the group, everything else is plausible.
pub fn event(project_id: i64, fingerprint: &str, timestamp: DateTime<Utc>) -> NormalizedEvent {
    let service = "user-api".to_string();
    let error_type = format!("NotFound{fingerprint}");
    let event_id = Uuid::new_v4();
    let mut raw = Event::new(Level::Error);
    raw.event_id = event_id;
    raw.timestamp = Some(timestamp);
    raw.service = Some(service.clone());
    raw.environment = Some("prod".to_string());
    raw.message = Some(format!("{error_type}: user 42 not found"));
    raw.exception = vec![Exception::new(error_type.clone(), "user 42 not found")];
    let mut tags = BTreeMap::new();
    tags.insert("environment".to_string(), "prod".to_string());
    tags.insert("service".to_string(), service.clone());
    NormalizedEvent {
        project_id,
        event_id,
        timestamp,
        received_at: timestamp,
        level: Level::Error,
        service: service.clone(),
        error_type: error_type.clone(),
        message: format!("{error_type}: user 42 not found"),
        environment: "prod".to_string(),
        path: "/users/42".to_string(),
        trace_id: event_id.simple().to_string(),
        release: None,
        host: Some("web-1".to_string()),
        title: format!("{error_type}: user <int> not found"),
        culprit: Some("users::handlers::get".to_string()),
        fingerprint: fingerprint.to_string(),
        fingerprint_version: 1,
        cluster_key: format!("{service}:{error_type}"),
        tags,
        event: raw,
        event_json: Default::default(),
    }
}

/// Sets the event's environment everywhere it appears.
pub fn with_env(mut ev: NormalizedEvent, env: &str) -> NormalizedEvent {
    ev.environment = env.to_string();
    ev.tags.insert("environment".to_string(), env.to_string());
    ev.event.environment = Some(env.to_string());
    ev
}

/// Sets the event's release everywhere it appears.
pub fn with_release(mut ev: NormalizedEvent, release: &str) -> NormalizedEvent {
    ev.release = Some(release.to_string());
    ev.tags.insert("release".to_string(), release.to_string());
    ev.event.release = Some(release.to_string());
    ev
}

/// A local HTTP receiver on a port the OS handed out, kept for the test:
/// records the JSON bodies POSTed to it and answers 200. Returns its URL.
pub async fn webhook_receiver() -> (String, Arc<std::sync::Mutex<Vec<serde_json::Value>>>) {
    let bodies = Arc::new(std::sync::Mutex::new(Vec::new()));
    let rec = bodies.clone();
    let app = axum::Router::new().fallback(move |body: axum::body::Bytes| {
        let rec = rec.clone();
        async move {
            rec.lock()
                .unwrap()
                .push(serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null));
            axum::http::StatusCode::OK
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (format!("http://{addr}/hooks/test"), bodies)
}

/// Waits (polling, up to 20 s) until `bodies` holds one whose `text`
/// contains `needle`, and returns it.
pub async fn wait_for_body(
    bodies: &std::sync::Mutex<Vec<serde_json::Value>>,
    needle: &str,
) -> serde_json::Value {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        if let Some(found) = bodies
            .lock()
            .unwrap()
            .iter()
            .find(|b| b["text"].as_str().is_some_and(|t| t.contains(needle)))
        {
            return found.clone();
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no alert with {needle:?}: {:?}",
            bodies.lock().unwrap()
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// The requests a [`recording_server`] saw.
pub type Recorded = Arc<std::sync::Mutex<Vec<(String, axum::http::HeaderMap, axum::body::Bytes)>>>;

/// A local server recording each request (path, headers, body) and
/// answering every one with `answer`: Kestra's answer to a flow start, or
/// an OpenAI-compatible chat completion.
pub async fn recording_server(answer: serde_json::Value) -> (String, Recorded) {
    let seen: Recorded = Arc::default();
    let rec = seen.clone();
    let app = axum::Router::new().fallback(
        move |uri: axum::http::Uri, headers: axum::http::HeaderMap, body: axum::body::Bytes| {
            let rec = rec.clone();
            let answer = answer.clone();
            async move {
                rec.lock()
                    .unwrap()
                    .push((uri.path().to_string(), headers, body));
                axum::Json(answer)
            }
        },
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (format!("http://{addr}"), seen)
}
