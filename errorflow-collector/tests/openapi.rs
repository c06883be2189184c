//! The OpenAPI document as a client generator gets it: fetched from a running
//! collector, checked by a real validator (`openapi-spec-validator` from the
//! tests' venv, see `common::venv`), and holding every route README.md's REST
//! API table lists.

use std::collections::BTreeSet;
use std::process::Command;

use common::binary::{Backend, Collector};
use serde_json::Value;

mod common;

/// The document `GET /api/v1/openapi.json` serves.
fn served_document() -> Value {
    let c = Collector::start(Backend::Sqlite);
    c.get("/api/v1/openapi.json")
}

#[test]
fn the_served_document_is_valid_openapi() {
    let validator = common::venv::tool("openapi-spec-validator");
    let doc = served_document();
    assert!(
        doc["openapi"].as_str().is_some_and(|v| v.starts_with("3.")),
        "{}",
        doc["openapi"]
    );
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("openapi.json");
    std::fs::write(&file, serde_json::to_vec_pretty(&doc).unwrap()).unwrap();
    let out = Command::new(&validator)
        .arg(&file)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", validator.display()));
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "the document is invalid:\n{said}");
    assert!(said.contains("OK"), "{said}");
}

/// The validator rejects what client generators reject: the same document
/// with two operations sharing an id fails (so the test above can fail).
#[test]
fn the_validator_rejects_a_shared_operation_id() {
    let validator = common::venv::tool("openapi-spec-validator");
    let mut doc = served_document();
    let id = doc["paths"]["/api/v1/groups/{id}/quiet"]["post"]["operationId"].clone();
    assert!(id.is_string(), "{id}");
    doc["paths"]["/api/v1/maintenance/quiet"]["post"]["operationId"] = id;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("openapi.json");
    std::fs::write(&file, serde_json::to_vec(&doc).unwrap()).unwrap();
    let out = Command::new(&validator).arg(&file).output().unwrap();
    assert!(!out.status.success(), "a shared operation id passed");
}

/// `(method, path)` for every route in README.md's REST API table, from cells
/// such as "`GET`/`POST /api/v1/projects`, `POST /api/v1/projects/{id}/rotate-key`"
/// or "`POST /api/v1/groups/{id}/quiet`, `…/reopen`"; query strings dropped.
/// A span the parser cannot read fails the test, so the table stays checked.
fn readme_routes() -> BTreeSet<(String, String)> {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md"))
        .expect("README.md");
    let section = readme
        .split("\n## REST API\n")
        .nth(1)
        .expect("README.md has a `## REST API` section");
    let section = section.split("\n## ").next().unwrap();
    let mut routes = BTreeSet::new();
    for row in section.lines().filter(|l| l.starts_with("| `")) {
        let cell = row.split(" | ").next().unwrap();
        let mut pending: Vec<String> = Vec::new();
        let mut last: Option<(Vec<String>, String)> = None;
        for span in cell.split('`').skip(1).step_by(2) {
            if span.starts_with('?') {
                // `?cluster_key=…`: another query string for the route before.
                continue;
            }
            let (methods, path) = match span.split_once(' ') {
                None if span.chars().all(|c| c.is_ascii_uppercase()) => {
                    pending.push(span.to_owned());
                    continue;
                }
                None => {
                    // `…/reopen`: the previous route's methods, its last segment replaced.
                    let rest = span
                        .strip_prefix("…/")
                        .unwrap_or_else(|| panic!("cannot read `{span}` in {row}"));
                    let (methods, path) = last.clone().expect("a route before `…/`");
                    let parent = path.rsplit_once('/').unwrap().0;
                    (methods, format!("{parent}/{rest}"))
                }
                Some((method, path)) => {
                    let mut methods = std::mem::take(&mut pending);
                    methods.push(method.to_owned());
                    (methods, path.to_owned())
                }
            };
            let path = path.split('?').next().unwrap().to_owned();
            for m in &methods {
                assert!(
                    ["GET", "POST", "PUT", "DELETE", "PATCH"].contains(&m.as_str()),
                    "cannot read method {m} in {row}"
                );
                routes.insert((m.clone(), path.clone()));
            }
            last = Some((methods, path));
        }
    }
    routes
}

#[test]
fn every_route_the_readme_lists_is_in_the_document() {
    let routes = readme_routes();
    // The parser read the table: the table's forms are all here.
    for expected in [
        ("GET", "/api/v1/projects"),
        ("POST", "/api/v1/projects"),
        ("POST", "/api/v1/groups/{id}/reopen"),
        ("PUT", "/api/v1/groups/{id}/triage"),
        ("DELETE", "/api/v1/projects/{id}/alert-webhook"),
        ("GET", "/metrics"),
    ] {
        assert!(
            routes.contains(&(expected.0.to_owned(), expected.1.to_owned())),
            "{expected:?} not read from README.md: {routes:#?}"
        );
    }
    let doc = served_document();
    let missing: Vec<_> = routes
        .iter()
        .filter(|(method, path)| !doc["paths"][path.as_str()][method.to_lowercase()].is_object())
        .collect();
    assert!(
        missing.is_empty(),
        "README.md lists routes the OpenAPI document lacks: {missing:?}"
    );
}
