//! Runs the example binary against a fake collector: both the captured
//! error and the panic must arrive before the process exits.

#[path = "../../../errorflow-sdk/tests/common/mod.rs"]
mod common;

use errorflow_sdk::protocol::Level;

#[test]
fn cli_reports_error_and_panic_before_exit() {
    let fake = common::FakeCollector::start();
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_example-cli"))
        .env("ERRORFLOW_DSN", fake.dsn())
        .env("RUST_BACKTRACE", "0")
        .output()
        .unwrap();
    assert!(!output.status.success(), "the example panics");
    let events = fake.events();
    assert_eq!(
        events.len(),
        2,
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let error = events.iter().find(|e| e.level == Level::Error).unwrap();
    assert_eq!(error.exception[0].ty, "std::io::Error");
    assert_eq!(error.tags["command"], "import");
    assert_eq!(error.service.as_deref(), Some("example-cli"));
    assert_eq!(error.release.as_deref(), Some("example-cli@0.1.0"));
    let panic = events.iter().find(|e| e.level == Level::Fatal).unwrap();
    assert!(panic
        .message
        .as_deref()
        .unwrap()
        .contains("every cell is a number"));
    let frames = &panic.exception[0].stacktrace.as_ref().unwrap().frames;
    let innermost_app = frames
        .iter()
        .rev()
        .find(|f| f.in_app == Some(true))
        .unwrap();
    assert!(
        innermost_app
            .function
            .as_deref()
            .unwrap()
            .starts_with("example_cli::"),
        "{frames:#?}"
    );
    assert_eq!(
        panic.breadcrumbs[0].message.as_deref(),
        Some("reading settings")
    );
}
