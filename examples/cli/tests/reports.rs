//! Runs the example binary against a real collector (its router and
//! writer on a throwaway SQLite database, served on a port the OS chose):
//! both the captured error and the panic must be stored before the
//! process has exited.

use errorflow_collector::config::{Cli, Config};
use errorflow_collector::{app, credentials, http, store};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_reports_error_and_panic_before_exit() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("errorflow.db").display());
    let store = store::connect(&url).await.unwrap();
    store.migrate().await.unwrap();
    let key = credentials::new_ingest_key();
    let project = store
        .create_project(
            "example",
            &credentials::hash_secret(&key),
            &credentials::prefix(&key),
        )
        .await
        .unwrap();
    let config =
        Config::resolve(&Cli::try_parse_args(["errorflow-collector"]).unwrap(), None).unwrap();
    let state = app::build_state(store.clone(), &config);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let dsn = format!(
        "http://{key}@{}/{}",
        listener.local_addr().unwrap(),
        project.id
    );
    tokio::spawn(async move { axum::serve(listener, http::router(state)).await });

    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_example-cli"))
        .env("ERRORFLOW_DSN", &dsn)
        .env("RUST_BACKTRACE", "0")
        .output()
        .await
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        !output.status.success() && stderr.contains("every cell is a number"),
        "the example panics: {stderr}"
    );
    // The process has exited: what is stored was delivered before exit.
    let events = store
        .list_events(&errorflow_collector::model::EventQuery {
            limit: 10,
            ..Default::default()
        })
        .await
        .unwrap()
        .events;
    assert_eq!(events.len(), 2, "{stderr}");
    for e in &events {
        assert_eq!(e.service, "example-cli");
        assert_eq!(e.release.as_deref(), Some("example-cli@0.1.0"));
        assert_eq!(e.data["tags"]["command"], "import");
        assert_eq!(e.data["breadcrumbs"][0]["message"], "reading settings");
    }
    let error = events.iter().find(|e| e.level == "error").unwrap();
    assert_eq!(error.error_type, "std::io::Error");
    let panic = events.iter().find(|e| e.level == "fatal").unwrap();
    assert!(panic.message.contains("every cell is a number"));
    let frames = panic.data["exception"][0]["stacktrace"]["frames"]
        .as_array()
        .unwrap();
    let innermost_app = frames.iter().rev().find(|f| f["in_app"] == true).unwrap();
    assert!(
        innermost_app["function"]
            .as_str()
            .unwrap()
            .starts_with("example_cli::"),
        "{frames:#?}"
    );
}
