//! Run with
//!
//! ```not_rust
//! ERRORFLOW_DSN=http://KEY@127.0.0.1:8000/1 cargo run -p example-axum-service
//! ```
//!
//! then try `curl -i localhost:3000/ok`, `/error`, `/panic`, `/500` and `/chain`.
//! Without `ERRORFLOW_DSN` the service runs the same and reports nothing.

use std::fmt;

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use tracing_subscriber::prelude::*;

#[tokio::main]
async fn main() {
    let _guard = errorflow_sdk::init(
        errorflow_sdk::ClientOptions::from_env().default_release(errorflow_sdk::release!()),
    );
    tracing_subscriber::registry()
        .with(
            tracing_subscriber::fmt::layer()
                .with_filter(tracing_subscriber::EnvFilter::new("info")),
        )
        .with(errorflow_sdk::layer())
        .init();

    let listener = tokio::net::TcpListener::bind("127.0.0.1:3000")
        .await
        .expect("port 3000 is free");
    tracing::info!("listening on http://127.0.0.1:3000");
    axum::serve(listener, app()).await.expect("server runs");
}

fn app() -> Router {
    Router::new()
        .route("/ok", get(|| async { "ok" }))
        .route("/error", get(logged_error))
        .route("/panic", get(panics))
        .route("/500", get(|| async { StatusCode::INTERNAL_SERVER_ERROR }))
        .route("/chain", get(chain))
        // `Router::layer` runs the middleware after routing, so that the
        // matched route (`axum` feature) is known.
        .layer(errorflow_tower::ErrorflowLayer::new())
}

/// Logs an error with a source chain and still answers 200: the `error!`
/// event carries the request context because it runs inside the request scope.
async fn logged_error() -> &'static str {
    let err = ApiError::Payment(PaymentError { order_id: 42 });
    tracing::error!(
        error = &err as &dyn std::error::Error,
        order_id = 42,
        "payment for order {} failed",
        42
    );
    "logged an error"
}

async fn panics() -> String {
    let orders: Vec<u32> = Vec::new();
    // An index out of bounds: a bug, reported by the panic hook with a backtrace.
    format!("first order: {}", orders[0])
}

/// Fails with an error whose chain becomes a 500 answer; `ApiError`'s
/// `IntoResponse` logs the details, the client sees a generic body.
async fn chain() -> Result<&'static str, ApiError> {
    Err(ApiError::Payment(PaymentError { order_id: 7 }))
}

#[derive(Debug, thiserror::Error)]
#[error("card declined by the issuer")]
struct Declined;

#[derive(Debug)]
struct PaymentError {
    order_id: u32,
}

impl fmt::Display for PaymentError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "payment for order {} failed", self.order_id)
    }
}

impl std::error::Error for PaymentError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&Declined)
    }
}

/// The only error type that becomes a response.
#[derive(Debug, thiserror::Error)]
enum ApiError {
    #[error("cannot complete checkout")]
    Payment(#[source] PaymentError),
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        tracing::error!(error = &self as &dyn std::error::Error, "request failed");
        (StatusCode::INTERNAL_SERVER_ERROR, "internal error").into_response()
    }
}
