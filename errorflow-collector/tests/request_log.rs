//! The request log at debug level, in a test binary of its own: `tracing`
//! caches whether a span is wanted per call site, process-wide, so a test
//! that installs a subscriber on its thread must not share its process
//! with tests that run without one.

mod common;

use std::sync::{Arc, Mutex};

use axum::body::Body;
use axum::http::Request;

fn post(path: &str, body: Vec<u8>) -> Request<Body> {
    Request::post(path)
        .header("content-type", "application/x-sentry-envelope")
        .body(Body::from(body))
        .unwrap()
}

/// The request log names the path, never the query: `?sentry_key=` stays
/// out of it even at debug level.
#[test]
fn the_request_log_never_shows_a_query_key() {
    use tracing_subscriber::layer::SubscriberExt as _;
    use tracing_subscriber::Layer as _;
    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);
    impl std::io::Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::registry().with(
        tracing_subscriber::fmt::layer()
            .with_writer(move || writer.clone())
            .with_ansi(false)
            .with_filter(tracing_subscriber::filter::LevelFilter::DEBUG),
    );
    let _guard = tracing::subscriber::set_default(subscriber);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let t = common::test_app(common::sqlite_store().await).await;
        let path = format!(
            "/api/{}/envelope/?sentry_key=0123456789abcdef0123456789abcdef",
            t.project_id
        );
        t.send(post(&path, b"{}\n".to_vec())).await;
    });
    let log = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    assert!(
        log.contains("/envelope/"),
        "the request was not logged: {log}"
    );
    assert!(!log.contains("0123456789abcdef"), "{log}");
}
