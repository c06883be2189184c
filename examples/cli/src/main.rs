//! Run with
//!
//! ```not_rust
//! ERRORFLOW_DSN=http://KEY@127.0.0.1:8000/1 cargo run -p example-cli
//! ```
//!
//! A plain synchronous program (no async runtime): it reports an error with
//! `capture_error`, then panics. The panic hook sends the panic before the
//! process exits; the guard flushes whatever is left.

use tracing_subscriber::prelude::*;

fn main() {
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

    errorflow_sdk::configure_scope(|scope| scope.set_tag("command", "import"));
    tracing::info!("reading settings");
    if let Err(err) = std::fs::read_to_string("/nonexistent/settings.toml") {
        errorflow_sdk::capture_error(&err);
        eprintln!("cannot read settings: {err}");
    }

    let rows = parse_rows("1,2,three");
    println!("{rows:?}");
}

fn parse_rows(input: &str) -> Vec<u32> {
    input
        .split(',')
        .map(|cell| cell.parse().expect("every cell is a number"))
        .collect()
}
