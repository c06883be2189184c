//! Sends errorflow's end-to-end scenarios with the official `sentry` crate:
//! an `anyhow` error with a context chain, a `tracing::error!` through
//! `sentry-tracing`, and a panic through `sentry-panic`.
//!
//! Run with:
//!   SENTRY_DSN=http://KEY@127.0.0.1:8000/1 cargo run -p sentry-rust-client
//!
//! (The binary is `rust-shop`: its symbols must not start with `sentry_`.)
//!
//! The DSN is exactly the one `errorflow-collector project create` prints.

use anyhow::Context as _;
use tracing_subscriber::filter::LevelFilter;
use tracing_subscriber::prelude::*;

#[derive(Debug)]
struct InventoryError {
    sku: String,
}

impl std::fmt::Display for InventoryError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "no stock left for sku {}", self.sku)
    }
}

impl std::error::Error for InventoryError {}

fn reserve(sku: &str) -> Result<(), InventoryError> {
    Err(InventoryError { sku: sku.into() })
}

fn place_order(order: u32) -> anyhow::Result<()> {
    reserve("A-100").with_context(|| format!("cannot place order {order}"))
}

fn parse_quantity(raw: &str) -> u32 {
    raw.parse().expect("quantity must be a number")
}

fn main() {
    let dsn = std::env::var("SENTRY_DSN").expect("set SENTRY_DSN");
    // `ClientOptions` is non-exhaustive: start from the defaults.
    let mut options = sentry::ClientOptions::default();
    options.release = Some("rust-shop@3.1.0".into());
    options.environment = Some("e2e".into());
    options.server_name = Some("rust-host".into());
    options.attach_stacktrace = true;
    let guard = sentry::init((dsn, options));
    tracing_subscriber::registry()
        .with(sentry::integrations::tracing::ErrorLayer::new().with_filter(LevelFilter::ERROR))
        .init();
    sentry::configure_scope(|scope| scope.set_tag("service", "rust-shop"));

    // 1. An anyhow error whose context wraps a typed error.
    for order in [1, 2] {
        if let Err(e) = place_order(order) {
            sentry::integrations::anyhow::capture_anyhow(&e);
        }
    }

    // 2. `tracing::error!` becomes an event (with a stack, as attach_stacktrace is on).
    tracing::error!(sku = "A-100", "inventory sync failed");

    // 3. A panic, reported by the panic hook; the thread dies, the program goes on.
    let worker = std::thread::spawn(|| parse_quantity("many"));
    assert!(worker.join().is_err());

    // Dropping the guard flushes the queue.
    drop(guard);
}
