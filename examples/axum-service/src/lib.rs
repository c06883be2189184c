//! The example service's router, shared by its binary (`src/main.rs`) and
//! by the collector's end-to-end tests (`errorflow-collector/tests/sdk_e2e.rs`),
//! which serve this very router with the real SDK reporting to a real collector.
//!
//! Routes: `/ok` answers 200; `/error` logs an `error!` with a source chain
//! and answers 200; `/panic` panics (index out of bounds); `/500` answers
//! 500 without logging; `/chain` fails with an `ApiError` whose
//! `IntoResponse` logs the chain and answers a generic 500.

use std::fmt;

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

/// The service's routes behind the errorflow middleware.
pub fn app() -> Router {
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
