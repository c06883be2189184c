//! The example program's body, in a library so that the collector's
//! end-to-end tests (`errorflow-collector/tests/sdk_e2e.rs`) can run this very
//! code in a child process against a real collector. `src/main.rs` only
//! calls [`run`].

use tracing_subscriber::prelude::*;

/// A plain synchronous program (no async runtime): it reports an error with
/// `capture_error`, then panics. The panic hook sends the panic before the
/// process exits; the guard flushes whatever is left.
pub fn run() {
    let _guard = errorflow_sdk::init(
        errorflow_sdk::ClientOptions::from_env()
            .default_release(errorflow_sdk::release!())
            // The code lives in this library crate, whatever the executable
            // is called, so say which frames are the application's.
            .in_app_include([env!("CARGO_CRATE_NAME")]),
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
