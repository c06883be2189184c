//! The middleware through a real axum router, without a socket.

use std::convert::Infallible;
use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use axum::routing::get;
use axum::Router;
use errorflow_sdk::protocol::{Event, Level};
use errorflow_sdk::test::TestTransport;
use errorflow_sdk::ClientOptions;
use errorflow_tower::ErrorflowLayer;
use tower::{ServiceBuilder, ServiceExt};
use tracing_subscriber::prelude::*;

/// Tests share the process-wide client, so they run one at a time.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn app() -> Router {
    Router::new()
        .route("/ok", get(|| async { "ok" }))
        .route(
            "/users/{id}",
            get(|| async { StatusCode::INTERNAL_SERVER_ERROR }),
        )
        .route("/missing", get(|| async { StatusCode::NOT_FOUND }))
        .route(
            "/log",
            get(|| async {
                tracing::info!("loading user");
                tracing::error!(user_id = 5, "user {} could not be loaded", 5);
                "logged"
            }),
        )
        .route(
            "/panic",
            get(|| async {
                if true {
                    panic!("handler exploded");
                }
                "unreachable"
            }),
        )
        .layer(ErrorflowLayer::new())
}

async fn run(request: Request<Body>) -> (axum::response::Response, Vec<Event>) {
    let transport = Arc::new(TestTransport::new());
    let guard = errorflow_sdk::init(ClientOptions::new().transport(transport.clone()));
    let subscriber = tracing_subscriber::registry().with(errorflow_sdk::layer());
    let _default = tracing::subscriber::set_default(subscriber);
    let response = app().oneshot(request).await.unwrap();
    drop(guard);
    (response, transport.take())
}

fn get_req(uri: &str) -> axum::http::request::Builder {
    Request::builder()
        .uri(uri)
        .header("user-agent", "test-agent/1.0")
}

fn route_if_known(event: &Event) -> Option<&str> {
    event.request.as_ref().unwrap().route.as_deref()
}

#[tokio::test]
async fn server_errors_are_reported_with_request_context() {
    let _serial = SERIAL.lock().await;
    let request = get_req("/users/42?page=2&token=secret")
        .header("authorization", "Bearer secret")
        .header("cookie", "sid=secret")
        .header("x-forwarded-for", "203.0.113.9, 10.0.0.1")
        .body(Body::empty())
        .unwrap();
    let (response, events) = run(request).await;
    assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
    let request_id = response.headers()["x-request-id"]
        .to_str()
        .unwrap()
        .to_string();
    assert_eq!(events.len(), 1);
    let e = &events[0];
    assert_eq!(e.level, Level::Error);
    assert_eq!(e.trace_id.as_deref(), Some(request_id.as_str()));
    let r = e.request.as_ref().unwrap();
    assert_eq!(r.method.as_deref(), Some("GET"));
    assert_eq!(r.url.as_deref(), Some("/users/42"));
    assert_eq!(r.query_string.as_deref(), Some("page=2&token=[Filtered]"));
    assert_eq!(r.status, Some(500));
    assert!(r.latency_ms.is_some());
    assert_eq!(r.client_ip.as_deref(), Some("203.0.113.9"));
    assert_eq!(r.headers["user-agent"], "test-agent/1.0");
    assert!(!r.headers.contains_key("authorization"));
    assert!(!r.headers.contains_key("cookie"));
    // The `axum` feature (on for these tests: see Cargo.toml) adds the matched route.
    assert_eq!(route_if_known(e), Some("/users/{id}"));
    assert_eq!(e.transaction.as_deref(), Some("GET /users/{id}"));
}

#[tokio::test]
async fn success_and_client_errors_are_not_reported() {
    let _serial = SERIAL.lock().await;
    let (response, events) = run(get_req("/ok").body(Body::empty()).unwrap()).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert!(response.headers().contains_key("x-request-id"));
    assert!(events.is_empty());
    let (response, events) = run(get_req("/missing").body(Body::empty()).unwrap()).await;
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    assert!(events.is_empty());
}

#[tokio::test]
async fn handler_events_carry_the_request_context() {
    let _serial = SERIAL.lock().await;
    let request = get_req("/log")
        .header(
            "traceparent",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        )
        .header("x-request-id", "req-123")
        .body(Body::empty())
        .unwrap();
    let (response, events) = run(request).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["x-request-id"], "req-123");
    assert_eq!(events.len(), 1);
    let e = &events[0];
    assert_eq!(e.message.as_deref(), Some("user 5 could not be loaded"));
    assert_eq!(
        e.trace_id.as_deref(),
        Some("4bf92f3577b34da6a3ce929d0e0e4736")
    );
    let r = e.request.as_ref().unwrap();
    assert_eq!(r.method.as_deref(), Some("GET"));
    assert_eq!(r.url.as_deref(), Some("/log"));
    assert_eq!(e.breadcrumbs.len(), 1, "the request's own breadcrumbs only");
    assert_eq!(route_if_known(e), Some("/log"));
}

#[tokio::test]
async fn panics_become_500_and_one_fatal_event() {
    let _serial = SERIAL.lock().await;
    let (response, events) = run(get_req("/panic").body(Body::empty()).unwrap()).await;
    assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
    assert!(response.headers().contains_key("x-request-id"));
    assert_eq!(events.len(), 1, "{events:#?}");
    let e = &events[0];
    assert_eq!(e.level, Level::Fatal);
    assert_eq!(e.exception[0].ty, "panic");
    assert_eq!(e.exception[0].handled, Some(false));
    assert_eq!(e.message.as_deref(), Some("handler exploded"));
    assert_eq!(e.request.as_ref().unwrap().url.as_deref(), Some("/panic"));
    assert!(
        e.exception[0].stacktrace.is_some(),
        "the panic hook's backtrace"
    );
    assert_eq!(e.request.as_ref().unwrap().status, Some(500));
}

/// Sends one request through the layer around a plain tower service whose
/// `call` panics, with or without the SDK's panic hook.
async fn panic_in_call(panic_hook: bool) -> (axum::response::Response, Vec<Event>) {
    let transport = Arc::new(TestTransport::new());
    let guard = errorflow_sdk::init(
        ClientOptions::new()
            .transport(transport.clone())
            .panic_hook(panic_hook),
    );
    let service = ServiceBuilder::new()
        .layer(ErrorflowLayer::new())
        .service(tower::service_fn(
        |_req: Request<Body>| -> std::future::Ready<Result<axum::response::Response, Infallible>> {
            panic!("call exploded")
        },
    ));
    let response = service
        .oneshot(get_req("/x").body(Body::empty()).unwrap())
        .await
        .unwrap();
    drop(guard);
    (response, transport.take())
}

#[tokio::test]
async fn panic_in_call_of_a_plain_tower_service() {
    let _serial = SERIAL.lock().await;
    // Without the hook the middleware reports the panic itself.
    let (response, events) = panic_in_call(false).await;
    assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].level, Level::Fatal);
    assert_eq!(events[0].exception[0].mechanism.as_deref(), Some("panic"));
    assert_eq!(events[0].request.as_ref().unwrap().status, Some(500));
}

#[tokio::test]
async fn a_panic_in_call_caught_by_the_hook_is_reported_once() {
    let _serial = SERIAL.lock().await;
    // The hook reports the panic (with a backtrace) from inside `call`; the
    // layer must see that in the request's scope and not report it again.
    let (response, events) = panic_in_call(true).await;
    assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(events.len(), 1, "{events:#?}");
    assert!(
        events[0].exception[0].stacktrace.is_some(),
        "the hook's event"
    );
    assert_eq!(
        events[0].request.as_ref().unwrap().url.as_deref(),
        Some("/x")
    );
}

#[tokio::test]
async fn status_predicate_is_configurable() {
    let _serial = SERIAL.lock().await;
    let transport = Arc::new(TestTransport::new());
    let guard = errorflow_sdk::init(
        ClientOptions::new()
            .transport(transport.clone())
            .panic_hook(false),
    );
    let app = Router::new()
        .route("/missing", get(|| async { StatusCode::NOT_FOUND }))
        .layer(ErrorflowLayer::new().report_status(|s| s.as_u16() >= 400));
    let response = app
        .oneshot(get_req("/missing").body(Body::empty()).unwrap())
        .await
        .unwrap();
    drop(guard);
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    let events = transport.take();
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].level, Level::Warning);
}

#[tokio::test]
async fn panics_become_500_without_a_client_too() {
    let _serial = SERIAL.lock().await;
    let response = app()
        .oneshot(get_req("/panic").body(Body::empty()).unwrap())
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
}

#[tokio::test]
async fn a_logged_error_is_not_reported_twice() {
    let _serial = SERIAL.lock().await;
    let transport = Arc::new(TestTransport::new());
    let guard = errorflow_sdk::init(
        ClientOptions::new()
            .transport(transport.clone())
            .panic_hook(false),
    );
    let subscriber = tracing_subscriber::registry().with(errorflow_sdk::layer());
    let _default = tracing::subscriber::set_default(subscriber);
    let app = Router::new()
        .route(
            "/fail",
            get(|| async {
                tracing::error!("database unavailable");
                StatusCode::SERVICE_UNAVAILABLE
            }),
        )
        .layer(ErrorflowLayer::new());
    let response = app
        .oneshot(get_req("/fail").body(Body::empty()).unwrap())
        .await
        .unwrap();
    drop(guard);
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    let events = transport.take();
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].message.as_deref(), Some("database unavailable"));
}

#[tokio::test]
async fn credentials_are_never_copied_even_when_listed() {
    let _serial = SERIAL.lock().await;
    let transport = Arc::new(TestTransport::new());
    let guard = errorflow_sdk::init(
        ClientOptions::new()
            .transport(transport.clone())
            .panic_hook(false),
    );
    let layer = ErrorflowLayer::new().headers([
        axum::http::header::AUTHORIZATION,
        axum::http::header::USER_AGENT,
    ]);
    let app = Router::new()
        .route("/boom", get(|| async { StatusCode::BAD_GATEWAY }))
        .layer(layer);
    let request = get_req("/boom")
        .header("authorization", "Bearer secret")
        .body(Body::empty())
        .unwrap();
    let response = app.oneshot(request).await.unwrap();
    drop(guard);
    assert_eq!(response.status(), StatusCode::BAD_GATEWAY);
    let events = transport.take();
    let headers = &events[0].request.as_ref().unwrap().headers;
    assert_eq!(headers.len(), 1);
    assert_eq!(headers["user-agent"], "test-agent/1.0");
}
