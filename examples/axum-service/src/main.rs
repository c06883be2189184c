//! Run with
//!
//! ```not_rust
//! ERRORFLOW_DSN=http://KEY@127.0.0.1:8000/1 cargo run -p example-axum-service
//! ```
//!
//! then try `curl -i localhost:3000/ok`, `/error`, `/panic`, `/500` and `/chain`.
//! Without `ERRORFLOW_DSN` the service runs the same and reports nothing.
//! The routes are in `src/lib.rs`.

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
    axum::serve(listener, example_axum_service::app())
        .await
        .expect("server runs");
}
