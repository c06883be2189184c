//! The collector's router on a throwaway database, driven without a socket
//! (`oneshot`), as the HTTP-level test files use it: a project with an
//! ingest key, a management token, request helpers and the JSON error check.

use std::io::Write;

use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, Request, StatusCode};
use axum::Router;
use clap::Parser;
use errorflow_collector::app::build_state;
use errorflow_collector::config::{Cli, Config};
use errorflow_collector::credentials;
use errorflow_collector::http::{router, AppState};
use serde_json::{json, Value};
use tower::ServiceExt;

use super::TestDb;

/// An app on a fresh database with one project and one management token
/// (named `tester`), built from the default configuration.
pub struct TestApp {
    pub app: Router,
    pub state: AppState,
    /// The ingest key of the first project.
    pub key: String,
    pub token: String,
    pub project_id: i64,
    pub db: TestDb,
}

/// An answer, its body parsed as JSON when it is JSON, kept as a string
/// when it is not, `Null` when empty.
pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Value,
}

/// [`TestApp::new`] with a project named `test`.
pub async fn test_app(db: TestDb) -> TestApp {
    TestApp::new(db, "test").await
}

impl TestApp {
    pub async fn new(db: TestDb, project: &str) -> TestApp {
        let config = Config::resolve(&Cli::parse_from(["errorflow-collector"]), None).unwrap();
        let state = build_state(db.store.clone(), &config);
        let mut app = TestApp {
            app: router(state.clone()),
            state,
            key: String::new(),
            token: credentials::new_api_token(),
            project_id: 0,
            db,
        };
        (app.key, app.project_id) = app.add_project(project).await;
        app.db
            .store
            .create_token("tester", &credentials::hash_secret(&app.token))
            .await
            .unwrap();
        app
    }

    /// Serves `state` from now on (a state derived from `self.state`).
    pub fn with_state(mut self, state: AppState) -> TestApp {
        self.app = router(state.clone());
        self.state = state;
        self
    }

    /// Creates another project; returns its ingest key and id.
    pub async fn add_project(&self, name: &str) -> (String, i64) {
        let key = credentials::new_ingest_key();
        let project = self
            .db
            .store
            .create_project(
                name,
                &credentials::hash_secret(&key),
                &credentials::prefix(&key),
            )
            .await
            .unwrap();
        (key, project.id)
    }

    /// Sends a request; the answer's status, headers and raw body.
    pub async fn send_raw(&self, req: Request<Body>) -> (StatusCode, HeaderMap, Bytes) {
        let res = self.app.clone().oneshot(req).await.unwrap();
        let status = res.status();
        let headers = res.headers().clone();
        let bytes = axum::body::to_bytes(res.into_body(), usize::MAX)
            .await
            .unwrap();
        (status, headers, bytes)
    }

    pub async fn send(&self, req: Request<Body>) -> Reply {
        let (status, headers, bytes) = self.send_raw(req).await;
        let body = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes)
                .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into()))
        };
        Reply {
            status,
            headers,
            body,
        }
    }

    /// A JSON POST to an ingest endpoint with the project's key.
    pub fn ingest_request(&self, path: &str, body: impl Into<Body>) -> Request<Body> {
        Request::post(path)
            .header("content-type", "application/json")
            .header("x-errorflow-key", &self.key)
            .body(body.into())
            .unwrap()
    }

    /// `POST /api/v1/events` with these events.
    pub async fn post_events(&self, events: Value) -> Reply {
        self.send(self.ingest_request("/api/v1/events", json!({ "events": events }).to_string()))
            .await
    }

    /// `POST /errors/custom`, the seed's endpoint.
    pub async fn post_custom(&self, body: Value) -> Reply {
        self.send(self.ingest_request("/errors/custom", body.to_string()))
            .await
    }

    /// A management API request with the token, and a JSON body if given.
    pub async fn call(&self, method: &str, path: &str, body: Option<Value>) -> Reply {
        let mut req = Request::builder()
            .method(method)
            .uri(path)
            .header("authorization", format!("Bearer {}", self.token));
        if body.is_some() {
            req = req.header("content-type", "application/json");
        }
        let body = body.map_or_else(Body::empty, |b| Body::from(b.to_string()));
        self.send(req.body(body).unwrap()).await
    }

    pub async fn get(&self, path: &str) -> Reply {
        self.call("GET", path, None).await
    }

    pub async fn post_api(&self, path: &str, body: Value) -> Reply {
        self.call("POST", path, Some(body)).await
    }
}

/// An error answer: this status, `{"error": {"code": code, "message": …}}`
/// with a message that says something.
pub fn assert_error(r: &Reply, status: StatusCode, code: &str) {
    assert_eq!(r.status, status, "body: {}", r.body);
    assert_eq!(r.body["error"]["code"], code, "body: {}", r.body);
    assert!(
        r.body["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()),
        "error without message: {}",
        r.body
    );
}

pub fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    enc.write_all(bytes).unwrap();
    enc.finish().unwrap()
}

/// Instantiates each listed check once per backend, in modules named after
/// the backend (`sqlite::name`, `postgres::name`), so that a failure names
/// its backend and neither can be skipped silently. With `setup => …`, each
/// check gets `setup(db).await` (e.g. [`test_app`]); without, the [`TestDb`].
#[allow(unused_macros)]
macro_rules! backend_tests {
    (setup => $setup:path; $($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name($setup(crate::common::sqlite_store().await).await).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name($setup(crate::common::pg_store().await).await).await;
                }
            )*
        }
    };
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(crate::common::sqlite_store().await).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(crate::common::pg_store().await).await;
                }
            )*
        }
    };
}
#[allow(unused_imports)]
pub(crate) use backend_tests;

/// One SDK-protocol event with only a message (its incident is the
/// message's template in service `checkout`, environment `prod`).
pub fn message_event(message: &str) -> Value {
    json!({
        "event_id": uuid::Uuid::new_v4(),
        "level": "error",
        "service": "checkout",
        "environment": "prod",
        "release": "1.0.0",
        "message": message,
    })
}
