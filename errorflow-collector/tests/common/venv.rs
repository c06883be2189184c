//! The Python tools the tests run (the Sentry SDK, the OpenAPI validator)
//! come from the virtual environment that `./scripts/test.sh` makes from
//! `scripts/test-requirements.txt` and exports as `ERRORFLOW_TEST_VENV`:
//! never from the system Python's site-packages, so every machine runs the
//! pinned versions. Without it a test fails and says how to get it.

use std::path::PathBuf;

/// `$ERRORFLOW_TEST_VENV/bin/<tool>`, or a panic naming the command that
/// installs it.
pub fn tool(tool: &str) -> PathBuf {
    let venv = std::env::var_os("ERRORFLOW_TEST_VENV").unwrap_or_else(|| {
        panic!(
            "ERRORFLOW_TEST_VENV is not set: run the tests with `./scripts/test.sh`, which \
             installs scripts/test-requirements.txt into target/test-venv and exports it \
             (or `./scripts/test.sh --setup-only` once, then \
             `export ERRORFLOW_TEST_VENV=$PWD/target/test-venv`)"
        )
    });
    let path = PathBuf::from(venv).join("bin").join(tool);
    assert!(
        path.is_file(),
        "{} is missing: `./scripts/test.sh --setup-only` installs scripts/test-requirements.txt \
         into ERRORFLOW_TEST_VENV",
        path.display()
    );
    path
}

/// The venv's Python interpreter.
pub fn python() -> PathBuf {
    tool("python3")
}
