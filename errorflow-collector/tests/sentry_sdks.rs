//! The official Sentry SDKs against the real collector binary: Python
//! (`sentry-sdk`), Node (`@sentry/node`) and Rust (the `sentry` crate, in
//! `examples/sentry-rust-client`), each configured with nothing but the DSN
//! that `project create` prints. Fields and grouping are checked through the
//! REST API.
//!
//! The Python SDK runs in the virtual environment of `ERRORFLOW_TEST_VENV`,
//! never on the system Python's packages. Nothing is skipped: without that
//! venv's `sentry_sdk` or the npm packages in `tests/sentry_clients/node_modules`,
//! these tests fail and say that `./scripts/test.sh` installs them.

use std::path::{Path, PathBuf};
use std::process::Command;

use common::binary::{Backend, Collector};
use serde_json::Value;

mod common;

fn clients_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/sentry_clients")
}

/// A collector with a fresh database on `backend`, one project and a token.
fn start_collector(backend: Backend) -> Collector {
    Collector::start(backend)
}

/// Runs a client program with `SENTRY_DSN`, failing with its output.
fn run_client(mut cmd: Command, dsn: &str) {
    let out = cmd
        .env("SENTRY_DSN", dsn)
        .current_dir(clients_dir())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn find<'a>(events: &'a [Value], what: &str, pred: impl Fn(&Value) -> bool) -> &'a Value {
    events.iter().find(|e| pred(e)).unwrap_or_else(|| {
        let summary: Vec<_> = events
            .iter()
            .map(|e| format!("{} {}", e["error_type"], e["message"]))
            .collect();
        panic!("no event for {what}; stored: {summary:#?}")
    })
}

fn group_of<'a>(groups: &'a [Value], event: &Value) -> &'a Value {
    groups
        .iter()
        .find(|g| g["id"] == event["group_id"])
        .expect("the event's incident is listed")
}

fn python_sentry_sdk_reports_to_errorflow(backend: Backend) {
    let python = common::venv::python();
    // -s: the user's site-packages stay out too; the venv has the pinned SDK.
    let probe = Command::new(&python)
        .args(["-s", "-c", "import sentry_sdk; print(sentry_sdk.VERSION)"])
        .output();
    assert!(
        probe.as_ref().is_ok_and(|o| o.status.success()),
        "{} has no sentry_sdk ({probe:?}); `./scripts/test.sh` installs \
         scripts/test-requirements.txt into that venv",
        python.display()
    );
    let c = start_collector(backend);
    let mut cmd = Command::new(&python);
    cmd.args(["-s", "python_client.py"]);
    run_client(cmd, &c.dsn);

    let events = c.events();
    assert_eq!(events.len(), 6, "{events:#?}");
    let groups = c.groups();
    for e in &events {
        assert_eq!(e["service"], "py-shop");
        assert_eq!(e["env"], "e2e");
        assert_eq!(e["release"], "py-shop@1.2.3");
        assert_eq!(e["host"], "py-host");
        assert_eq!(e["data"]["platform"], "python");
    }

    let zero = find(&events, "ZeroDivisionError", |e| {
        e["error_type"] == "ZeroDivisionError"
    });
    let frames = &zero["data"]["exception"][0]["stacktrace"]["frames"];
    let last = frames.as_array().unwrap().last().unwrap();
    assert_eq!(last["function"], "divide");
    assert_eq!(last["in_app"], true);
    assert_eq!(zero["data"]["user"]["id"], "u-42");

    // `raise PaymentError from KeyError`: outermost first; orders 17 and 18 are one incident.
    let chained = find(&events, "chained", |e| e["error_type"] == "PaymentError");
    assert_eq!(chained["data"]["exception"][0]["type"], "PaymentError");
    assert_eq!(group_of(&groups, chained)["culprit"], "__main__::checkout");
    assert_eq!(chained["data"]["exception"][1]["type"], "KeyError");
    assert_eq!(group_of(&groups, chained)["count"], 2);

    let logged = find(&events, "logging.error", |e| {
        e["message"]
            .as_str()
            .is_some_and(|m| m.contains("inventory for sku A-100"))
    });
    assert_eq!(
        logged["data"]["message_template"],
        "inventory for sku %s is negative"
    );
    assert_eq!(logged["data"]["logger"], "shop.checkout");

    let exc_info = find(&events, "logging.error(exc_info)", |e| {
        e["data"]["exception"][0]["mechanism"] == "logging"
    });
    assert_eq!(exc_info["error_type"], "KeyError");

    let message = find(&events, "capture_message", |e| {
        e["message"]
            .as_str()
            .is_some_and(|m| m.contains("nightly export"))
    });
    assert_eq!(message["level"], "warning");
}

fn node_sentry_sdk_reports_to_errorflow(backend: Backend) {
    assert!(
        clients_dir().join("node_modules/@sentry/node").is_dir(),
        "@sentry/node is required for this test; `./scripts/test.sh` installs it \
         (npm ci in errorflow-collector/tests/sentry_clients)"
    );
    let c = start_collector(backend);
    let mut cmd = Command::new("node");
    cmd.arg("node_client.js");
    run_client(cmd, &c.dsn);

    let events = c.events();
    assert_eq!(events.len(), 4, "{events:#?}");
    let groups = c.groups();
    for e in &events {
        assert_eq!(e["service"], "node-shop");
        assert_eq!(e["env"], "e2e");
        assert_eq!(e["data"]["platform"], "javascript");
    }
    let thrown = find(&events, "thrown error", |e| {
        e["data"]["exception"][0]["value"]
            .as_str()
            .is_some_and(|v| v.contains("reading 'checkout'"))
    });
    assert_eq!(thrown["error_type"], "TypeError");
    assert_eq!(thrown["data"]["exception"][0]["handled"], true);

    let rejected = find(&events, "rejected promise", |e| {
        e["data"]["exception"][0]["value"]
            .as_str()
            .is_some_and(|v| v.contains("price of A-100"))
    });
    assert_eq!(rejected["data"]["exception"][0]["handled"], false);
    let frames = rejected["data"]["exception"][0]["stacktrace"]["frames"]
        .as_array()
        .unwrap();
    assert_eq!(frames.last().unwrap()["function"], "fetchPrice");
    assert!(frames
        .iter()
        .filter(|f| f["filename"]
            .as_str()
            .is_some_and(|p| p.starts_with("node:")))
        .all(|f| f["in_app"] == false));

    let caused = find(&events, "error with cause", |e| {
        e["error_type"] == "PaymentError"
    });
    assert!(
        group_of(&groups, caused)["culprit"]
            .as_str()
            .is_some_and(|c| c.starts_with("loadOrder")),
        "{}",
        group_of(&groups, caused)
    );
    assert_eq!(caused["data"]["exception"][1]["type"], "SyntaxError");
    assert_eq!(
        group_of(&groups, caused)["count"],
        2,
        "orders 7 and 8 are one incident"
    );
}

fn rust_sentry_crate_reports_to_errorflow(backend: Backend) {
    // The example is a workspace member; build it with the cargo running this test.
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = Command::new(&cargo)
        .args(["build", "--quiet", "-p", "sentry-rust-client"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .status()
        .unwrap();
    assert!(status.success(), "cannot build examples/sentry-rust-client");
    // target/debug/deps/this-test → target/debug/rust-shop
    let exe = std::env::current_exe().unwrap();
    let bin = exe.parent().unwrap().parent().unwrap().join("rust-shop");
    assert!(bin.exists(), "{} not built", bin.display());

    let c = start_collector(backend);
    run_client(Command::new(&bin), &c.dsn);

    let events = c.events();
    assert_eq!(events.len(), 4, "{events:#?}");
    let groups = c.groups();
    for e in &events {
        assert_eq!(e["service"], "rust-shop");
        assert_eq!(e["env"], "e2e");
        assert_eq!(e["host"], "rust-host");
        assert_eq!(e["data"]["platform"], "rust");
    }

    // anyhow: the context is the outermost error, the typed error its source.
    let anyhow = find(&events, "anyhow error", |e| {
        e["data"]["exception"][0]["value"]
            .as_str()
            .is_some_and(|v| v.contains("cannot place order"))
    });
    assert_eq!(
        anyhow["data"]["exception"][1]["value"],
        "no stock left for sku A-100"
    );
    let anyhow_group = group_of(&groups, anyhow);
    assert_eq!(anyhow_group["count"], 2, "orders 1 and 2 are one incident");
    // The stack groups it (the context's message would too, by luck).
    assert_eq!(anyhow_group["culprit"], "rust_shop::place_order");

    let traced = find(&events, "tracing::error!", |e| {
        e["message"]
            .as_str()
            .is_some_and(|m| m.contains("inventory sync failed"))
    });
    assert_eq!(traced["level"], "error");

    let panic = find(&events, "panic", |e| {
        e["data"]["exception"][0]["mechanism"] == "panic"
    });
    assert_eq!(panic["data"]["exception"][0]["handled"], false);
    assert!(panic["message"]
        .as_str()
        .is_some_and(|m| m.contains("quantity must be a number")));
    let frames = panic["data"]["exception"][0]["stacktrace"]["frames"]
        .as_array()
        .unwrap();
    assert_eq!(
        group_of(&groups, panic)["culprit"],
        "rust_shop::parse_quantity"
    );
    let functions: Vec<&str> = frames
        .iter()
        .filter_map(|f| f["function"].as_str())
        .collect();
    assert!(
        functions.iter().any(|f| f.ends_with("parse_quantity")),
        "{functions:?}"
    );
    for f in frames {
        let name = f["function"].as_str().unwrap_or("");
        assert!(
            !name.contains("::h")
                || !name
                    .rsplit("::h")
                    .next()
                    .unwrap()
                    .chars()
                    .all(|c| c.is_ascii_hexdigit()),
            "hash left in {name}"
        );
        if [
            "std::",
            "core::",
            "sentry_core::",
            "sentry_panic::",
            "sentry_backtrace::",
        ]
        .iter()
        .any(|p| name.starts_with(p))
        {
            assert_eq!(f["in_app"], false, "{name}");
        }
    }
}

#[test]
fn python_sentry_sdk_reports_to_errorflow_sqlite() {
    python_sentry_sdk_reports_to_errorflow(Backend::Sqlite);
}

#[test]
fn python_sentry_sdk_reports_to_errorflow_postgres() {
    python_sentry_sdk_reports_to_errorflow(Backend::Postgres);
}

#[test]
fn node_sentry_sdk_reports_to_errorflow_sqlite() {
    node_sentry_sdk_reports_to_errorflow(Backend::Sqlite);
}

#[test]
fn node_sentry_sdk_reports_to_errorflow_postgres() {
    node_sentry_sdk_reports_to_errorflow(Backend::Postgres);
}

#[test]
fn rust_sentry_crate_reports_to_errorflow_sqlite() {
    rust_sentry_crate_reports_to_errorflow(Backend::Sqlite);
}

#[test]
fn rust_sentry_crate_reports_to_errorflow_postgres() {
    rust_sentry_crate_reports_to_errorflow(Backend::Postgres);
}
