//! The collector through its real HTTP stack (router, extractors, pipeline,
//! group-commit writer) on both real backends. Every test runs twice, by
//! name: `sqlite::…` and `postgres::…`.

mod common;

use std::io::Write;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use clap::Parser;
use errorflow_collector::app::build_state;
use errorflow_collector::config::{Cli, Config};
use errorflow_collector::http::router;
use serde_json::{json, Value};
use tower::ServiceExt;

use common::{assert_error, gzip, message_event as event, test_app, TestApp};

impl TestApp {
    /// Events stored in the database, counted through the API.
    async fn stored_count(&self) -> usize {
        let r = self.get("/api/v1/events?limit=200").await;
        assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
        r.body["events"].as_array().unwrap().len()
    }

    async fn groups(&self, query: &str) -> Vec<Value> {
        let r = self.get(&format!("/api/v1/groups?{query}")).await;
        assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
        r.body["groups"].as_array().unwrap().clone()
    }
}

fn rust_error(ty: &str, value: &str, function: &str, line: u32) -> Value {
    json!({
        "event_id": uuid::Uuid::new_v4(),
        "level": "error",
        "platform": "rust",
        "service": "checkout",
        "exception": [{
            "type": ty,
            "value": value,
            "stacktrace": {"frames": [
                {"function": "app::main", "in_app": true, "lineno": 10},
                {"function": function, "in_app": true, "lineno": line},
            ]}
        }]
    })
}

common::backend_tests!(
    setup => super::test_app;
    composed_and_decomposed_text_is_one_incident,
    batch_is_stored_grouped_and_idempotent,
    one_bad_event_does_not_reject_its_neighbours,
    gzip_batches_are_accepted,
    custom_endpoint_takes_the_seed_body,
    seed_node_middleware_payload_is_grouped_by_stack,
    grouping_splits_sites_and_templates_that_the_seed_merged,
    long_cluster_keys_are_stored_not_lost,
    bad_input_gets_the_right_status_and_stores_nothing,
    compression_bombs_are_refused_without_inflating,
    oversized_bodies_are_refused,
    management_api_requires_a_token,
    group_detail_has_counts_tags_and_history,
    lifecycle_resolve_regress_quiet_reopen,
    incidents_are_deleted_with_their_events,
    projects_are_deleted_and_their_key_refused_at_once,
    list_filters_sorts_and_pages,
    events_are_found_by_id_with_or_without_dashes,
    projects_are_created_and_keys_rotated,
    project_alert_webhooks_are_set_shown_redacted_and_removed,
    openapi_and_operations_endpoints,
    every_ingest_route_has_the_keys_rate_limit,
);

/// `/api/v1/events` and `/errors/custom` take tokens from the key's bucket
/// like Sentry's endpoints: over it, 429 with `Retry-After` and nothing
/// stored; a batch larger than the whole burst still passes on a full
/// bucket (it takes all of it).
async fn every_ingest_route_has_the_keys_rate_limit(t: TestApp) {
    let (other_key, _) = t.add_project("other").await;
    let state = t
        .state
        .clone()
        .with_key_rate(errorflow_collector::http::rate_limit::KeyRate {
            per_second: 1,
            burst: 3,
        });
    let t = t.with_state(state);
    let r = t
        .post_events(json!([event("one"), event("two"), event("three")]))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let before = t.stored_count().await;
    assert_eq!(before, 3);
    // The bucket is empty: one more event waits at least a second.
    let r = t.post_events(json!([event("four")])).await;
    assert_error(&r, StatusCode::TOO_MANY_REQUESTS, "rate_limited");
    let retry: u64 = r.headers["retry-after"].to_str().unwrap().parse().unwrap();
    assert!(retry >= 1);
    let r = t
        .post_custom(json!({"service": "api", "error_type": "Boom", "message": "five"}))
        .await;
    assert_error(&r, StatusCode::TOO_MANY_REQUESTS, "rate_limited");
    assert!(r.headers.contains_key("retry-after"));
    assert_eq!(t.stored_count().await, before, "nothing of a 429 is stored");
    // Another key has its own, full bucket: a batch of ten is more than
    // its burst of three and passes once.
    let batch: Vec<Value> = (0..10).map(|i| event(&format!("other {i}"))).collect();
    let r = t
        .send(
            Request::post("/api/v1/events")
                .header("content-type", "application/json")
                .header("x-errorflow-key", &other_key)
                .body(Body::from(json!({ "events": batch }).to_string()))
                .unwrap(),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.body["accepted"], 10);
}

async fn batch_is_stored_grouped_and_idempotent(t: TestApp) {
    let events = json!([
        rust_error("NotFound", "user 42 not found", "app::users::load", 10),
        rust_error("NotFound", "user 43 not found", "app::users::load", 10),
        rust_error("NotFound", "user 44 not found", "app::users::load", 11),
    ]);
    let r = t.post_events(events.clone()).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(
        r.body,
        json!({"accepted": 3, "duplicates": 0, "rejected": []})
    );

    // The SDK retries a batch whose answer it did not see: nothing double-counts.
    let r = t.post_events(events).await;
    assert_eq!(
        r.body,
        json!({"accepted": 0, "duplicates": 3, "rejected": []})
    );

    let groups = t.groups("").await;
    assert_eq!(
        groups.len(),
        1,
        "one raising site is one incident: {groups:?}"
    );
    assert_eq!(groups[0]["count"], 3);
    assert_eq!(groups[0]["status"], "open");
    assert_eq!(groups[0]["title"], "NotFound: user <int> not found");
    assert_eq!(groups[0]["cluster_key"], "checkout:NotFound");
    assert_eq!(t.stored_count().await, 3);
}

async fn one_bad_event_does_not_reject_its_neighbours(t: TestApp) {
    let r = t
        .post_events(json!([
            event("first"),
            {"event_id": "not-a-uuid", "message": "x"},
            event("third"),
            {"event_id": uuid::Uuid::new_v4(), "level": "error"},
            {"event_id": uuid::Uuid::new_v4(), "message": 5},
            "a string",
        ]))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.body["accepted"], 2);
    let rejected: Vec<u64> = r.body["rejected"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x["index"].as_u64().unwrap())
        .collect();
    assert_eq!(rejected, vec![1, 3, 4, 5]);
    for x in r.body["rejected"].as_array().unwrap() {
        assert!(!x["error"].as_str().unwrap().is_empty());
    }
    assert_eq!(t.stored_count().await, 2);

    // A batch where every event is bad is refused as a whole, saying why.
    let r = t.post_events(json!([{"event_id": "nope"}])).await;
    assert_error(&r, StatusCode::UNPROCESSABLE_ENTITY, "invalid_events");
    assert_eq!(r.body["error"]["rejected"][0]["index"], 0);
    assert_eq!(t.stored_count().await, 2);
}

async fn gzip_batches_are_accepted(t: TestApp) {
    let body = json!({"events": [event("zipped 1"), event("zipped 2")]}).to_string();
    let req = Request::post("/api/v1/events")
        .header("content-type", "application/json")
        .header("content-encoding", "gzip")
        .header("authorization", format!("Bearer {}", t.key))
        .body(Body::from(gzip(body.as_bytes())))
        .unwrap();
    let r = t.send(req).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.body["accepted"], 2);
}

async fn custom_endpoint_takes_the_seed_body(t: TestApp) {
    let r = t
        .post_custom(json!({
            "service": "user-api",
            "error_type": "NullPointer",
            "message": "Cannot read property 'x' of null at UserController.java:42",
            "path": "/v1/users/123",
            "env": "prod",
            "unknown_extra_key": true
        }))
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    let event_id = r.body["event_id"].as_str().unwrap().to_string();
    let group_id = r.body["group_id"].as_i64().unwrap();
    assert_eq!(r.body["cluster_key"], "user-api:NullPointer");

    let ev = t.get(&format!("/api/v1/events/{event_id}")).await;
    assert_eq!(ev.status, StatusCode::OK, "{}", ev.body);
    assert_eq!(ev.body["group_id"], group_id);
    assert_eq!(ev.body["service"], "user-api");
    assert_eq!(ev.body["error_type"], "NullPointer");
    assert_eq!(ev.body["env"], "prod");
    assert_eq!(ev.body["path"], "/v1/users/123");
    assert!(!ev.body["trace_id"].as_str().unwrap().is_empty());

    // Optional fields of the extended body are kept.
    let r = t
        .post_custom(json!({
            "service": "user-api", "error_type": "Timeout", "message": "upstream timed out",
            "release": "2.0.1", "level": "warning", "tags": {"region": "eu"},
            "trace_id": "abc123", "timestamp": "2026-01-02T03:04:05Z"
        }))
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    assert_eq!(r.body["trace_id"], "abc123");
    let ev = t
        .get(&format!(
            "/api/v1/events/{}",
            r.body["event_id"].as_str().unwrap()
        ))
        .await;
    assert_eq!(ev.body["release"], "2.0.1");
    assert_eq!(ev.body["level"], "warning");
    assert!(ev.body["timestamp"]
        .as_str()
        .unwrap()
        .starts_with("2026-01-02T03:04:05"));
}

async fn seed_node_middleware_payload_is_grouped_by_stack(t: TestApp) {
    // Exactly what the seed's Express middleware sends, plus the key header.
    let stack = |line: u32, prop: &str| {
        format!(
            "TypeError: Cannot read properties of undefined (reading '{prop}')\n    at getUser (/app/src/users.js:{line}:15)\n    at Layer.handle [as handle_request] (/app/node_modules/express/lib/router/layer.js:95:5)\n    at next (/app/node_modules/express/lib/router/route.js:149:13)"
        )
    };
    for (line, prop) in [(10, "id"), (12, "name")] {
        let r = t
            .post_custom(json!({
                "service": "user-api",
                "error_type": "TypeError",
                "message": stack(line, prop),
                "path": "/v1/users/7",
                "env": "local"
            }))
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    }
    let groups = t.groups("").await;
    assert_eq!(
        groups.len(),
        1,
        "same function, shifted line: one incident: {groups:?}"
    );
    assert_eq!(groups[0]["count"], 2);
    assert!(
        groups[0]["culprit"].as_str().unwrap().contains("getUser"),
        "{}",
        groups[0]
    );
}

async fn grouping_splits_sites_and_templates_that_the_seed_merged(t: TestApp) {
    let r = t
        .post_events(json!([
            rust_error("DbError", "connection reset", "app::orders::save", 5),
            rust_error("DbError", "connection reset", "app::payments::charge", 5),
            event("payment for order 1 failed"),
            event("payment for order 2 failed"),
            event("shipping for order 3 failed"),
        ]))
        .await;
    assert_eq!(r.body["accepted"], 5, "{}", r.body);
    let groups = t.groups("").await;
    assert_eq!(groups.len(), 4, "{groups:#?}");
    // The seed's key stays as a facet shared by the two DbError sites.
    let db: Vec<_> = groups
        .iter()
        .filter(|g| g["cluster_key"] == "checkout:DbError")
        .collect();
    assert_eq!(db.len(), 2);
}

async fn long_cluster_keys_are_stored_not_lost(t: TestApp) {
    // The seed answered 500 and lost the event when service:error_type exceeded 100 characters.
    let service = "s".repeat(150);
    let r = t
        .post_custom(json!({"service": service, "error_type": "E".repeat(150), "message": "m"}))
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    assert_eq!(t.stored_count().await, 1);
}

async fn bad_input_gets_the_right_status_and_stores_nothing(t: TestApp) {
    let raw = |path: &str, ct: &str, body: Vec<u8>| {
        Request::post(path)
            .header("content-type", ct)
            .header("x-errorflow-key", &t.key)
            .body(Body::from(body))
            .unwrap()
    };
    let json_ct = "application/json";
    let cases: Vec<(&str, Request<Body>, StatusCode, &str)> = vec![
        (
            "malformed JSON",
            raw("/api/v1/events", json_ct, b"{\"events\": [".to_vec()),
            StatusCode::BAD_REQUEST,
            "invalid_json",
        ),
        (
            "invalid UTF-8",
            raw(
                "/api/v1/events",
                json_ct,
                b"{\"events\": [\"\xff\xfe\"]}".to_vec(),
            ),
            StatusCode::BAD_REQUEST,
            "invalid_json",
        ),
        (
            "events not an array",
            raw("/api/v1/events", json_ct, br#"{"events": 5}"#.to_vec()),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_body",
        ),
        (
            "missing events",
            raw("/api/v1/events", json_ct, br#"{"evnts": []}"#.to_vec()),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_body",
        ),
        (
            "body not an object",
            raw("/api/v1/events", json_ct, b"[1,2]".to_vec()),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_body",
        ),
        (
            "deeply nested JSON",
            raw(
                "/api/v1/events",
                json_ct,
                format!("{{\"events\": [{}{}]}}", "[".repeat(5000), "]".repeat(5000)).into_bytes(),
            ),
            StatusCode::BAD_REQUEST,
            "invalid_json",
        ),
        (
            "wrong content type",
            raw(
                "/api/v1/events",
                "text/plain",
                br#"{"events": []}"#.to_vec(),
            ),
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
        ),
        (
            "custom: missing field",
            raw(
                "/errors/custom",
                json_ct,
                br#"{"service": "a", "message": "m"}"#.to_vec(),
            ),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_body",
        ),
        (
            "custom: wrong type",
            raw(
                "/errors/custom",
                json_ct,
                br#"{"service": 1, "error_type": "E", "message": "m"}"#.to_vec(),
            ),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_body",
        ),
        (
            "custom: malformed",
            raw("/errors/custom", json_ct, b"service=a".to_vec()),
            StatusCode::BAD_REQUEST,
            "invalid_json",
        ),
    ];
    for (what, req, status, code) in cases {
        let r = t.send(req).await;
        assert_eq!(r.status, status, "{what}: {}", r.body);
        assert_eq!(r.body["error"]["code"], code, "{what}: {}", r.body);
    }

    let with_key = |key: Option<&str>| {
        let mut b = Request::post("/api/v1/events").header("content-type", json_ct);
        if let Some(k) = key {
            b = b.header("x-errorflow-key", k);
        }
        b.body(Body::from(json!({"events": [event("x")]}).to_string()))
            .unwrap()
    };
    assert_error(
        &t.send(with_key(None)).await,
        StatusCode::UNAUTHORIZED,
        "unauthorized",
    );
    assert_error(
        &t.send(with_key(Some("0123456789abcdef0123456789abcdef")))
            .await,
        StatusCode::FORBIDDEN,
        "forbidden",
    );

    let unsupported = Request::post("/api/v1/events")
        .header("content-type", json_ct)
        .header("content-encoding", "compress")
        .header("x-errorflow-key", &t.key)
        .body(Body::from("x"))
        .unwrap();
    assert_error(
        &t.send(unsupported).await,
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "unsupported_media_type",
    );
    let bad_gzip = Request::post("/api/v1/events")
        .header("content-type", json_ct)
        .header("content-encoding", "gzip")
        .header("x-errorflow-key", &t.key)
        .body(Body::from("definitely not gzip"))
        .unwrap();
    assert_error(
        &t.send(bad_gzip).await,
        StatusCode::BAD_REQUEST,
        "invalid_gzip",
    );

    // Invalid and unknown ids on the API.
    assert_error(
        &t.get("/api/v1/groups/abc").await,
        StatusCode::BAD_REQUEST,
        "invalid_id",
    );
    assert_error(
        &t.get("/api/v1/groups/999999").await,
        StatusCode::NOT_FOUND,
        "not_found",
    );
    assert_error(
        &t.get("/api/v1/events/not-a-uuid").await,
        StatusCode::BAD_REQUEST,
        "invalid_id",
    );
    assert_error(
        &t.get(&format!("/api/v1/events/{}", uuid::Uuid::new_v4()))
            .await,
        StatusCode::NOT_FOUND,
        "not_found",
    );
    assert_error(
        &t.get("/api/v1/groups?status=bogus").await,
        StatusCode::BAD_REQUEST,
        "invalid_query",
    );
    assert_error(
        &t.get("/api/v1/groups?limit=0").await,
        StatusCode::BAD_REQUEST,
        "invalid_query",
    );
    assert_error(
        &t.get("/api/v1/groups?cursor=%%%").await,
        StatusCode::BAD_REQUEST,
        "invalid_cursor",
    );
    assert_error(&t.get("/nowhere").await, StatusCode::NOT_FOUND, "not_found");
    assert_error(
        &t.post_api("/api/v1/groups/1/resolve", json!({"reason": 5}))
            .await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_field",
    );

    assert_eq!(
        t.stored_count().await,
        0,
        "a refused request stores nothing"
    );
    assert!(t.groups("").await.is_empty());
}

async fn compression_bombs_are_refused_without_inflating(t: TestApp) {
    // 64 MiB of zeros compress to about 64 KiB: past the 20 MiB decompressed limit.
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    let zeros = vec![b' '; 1024 * 1024];
    enc.write_all(b"{\"events\": [").unwrap();
    for _ in 0..64 {
        enc.write_all(&zeros).unwrap();
    }
    enc.write_all(b"]}").unwrap();
    let bomb = enc.finish().unwrap();
    assert!(bomb.len() < 1024 * 1024);
    let req = Request::post("/api/v1/events")
        .header("content-type", "application/json")
        .header("content-encoding", "gzip")
        .header("x-errorflow-key", &t.key)
        .body(Body::from(bomb))
        .unwrap();
    assert_error(
        &t.send(req).await,
        StatusCode::PAYLOAD_TOO_LARGE,
        "payload_too_large",
    );
    assert_eq!(t.stored_count().await, 0);
}

async fn oversized_bodies_are_refused(t: TestApp) {
    let limits = t.state.limits.clone();
    let big = "x".repeat(limits.max_body_bytes + 1);
    let r = t.send(t.ingest_request("/api/v1/events", big)).await;
    assert_error(&r, StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large");

    let too_many: Vec<Value> = (0..limits.max_events_per_batch + 1)
        .map(|_| json!({}))
        .collect();
    let r = t.post_events(Value::Array(too_many)).await;
    assert_error(&r, StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large");

    // One event over the per-event limit is rejected alone.
    let huge = event(&"y".repeat(limits.max_event_bytes + 10));
    let r = t.post_events(json!([huge, event("fine")])).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.body["accepted"], 1);
    assert_eq!(r.body["rejected"][0]["index"], 0);
    assert_eq!(t.stored_count().await, 1);
}

/// Every management route, as the README lists them: each answers 401
/// without a token, with a wrong one and with an ingest key, before doing
/// anything (the incident and project below are still there afterwards).
const MANAGEMENT_ROUTES: &[(&str, &str)] = &[
    ("GET", "/api/v1/groups"),
    ("GET", "/api/v1/groups/{id}"),
    ("DELETE", "/api/v1/groups/{id}"),
    ("GET", "/api/v1/groups/{id}/events"),
    ("GET", "/api/v1/groups/{id}/activity"),
    ("POST", "/api/v1/groups/{id}/resolve"),
    ("POST", "/api/v1/groups/{id}/quiet"),
    ("POST", "/api/v1/groups/{id}/reopen"),
    ("GET", "/api/v1/events"),
    ("GET", "/api/v1/events/{event_id}"),
    ("GET", "/api/v1/projects"),
    ("POST", "/api/v1/projects"),
    ("DELETE", "/api/v1/projects/{id}"),
    ("POST", "/api/v1/projects/{id}/rotate-key"),
    ("GET", "/api/v1/tokens"),
    ("DELETE", "/api/v1/tokens/{id}"),
    ("GET", "/api/v1/projects/{id}/github"),
    ("PUT", "/api/v1/projects/{id}/github"),
    ("DELETE", "/api/v1/projects/{id}/github"),
    ("POST", "/api/v1/groups/{id}/github-issue"),
    ("GET", "/api/v1/groups/{id}/kestra-runs"),
    ("PUT", "/api/v1/groups/{id}/priority"),
    ("GET", "/api/v1/projects/{id}/alert-webhook"),
    ("PUT", "/api/v1/projects/{id}/alert-webhook"),
    ("DELETE", "/api/v1/projects/{id}/alert-webhook"),
    ("GET", "/api/v1/projects/{id}/scrub-fields"),
    ("PUT", "/api/v1/projects/{id}/scrub-fields"),
    ("POST", "/api/v1/groups/{id}/summarize"),
    ("GET", "/api/v1/groups/{id}/digest"),
    ("GET", "/api/v1/groups/{id}/triage"),
    ("PUT", "/api/v1/groups/{id}/triage"),
    ("GET", "/api/v1/triage/stale"),
    ("GET", "/api/v1/triage/digest"),
    ("POST", "/api/v1/maintenance/quiet"),
    ("POST", "/groups/{id}/resolve"),
    ("POST", "/groups/{id}/summarize"),
];

/// Routes that take no management token: ingest (its own key), probes, the API document.
const OPEN_ROUTES: &[(&str, &str)] = &[
    ("POST", "/api/v1/events"),
    ("POST", "/errors/custom"),
    ("POST", "/api/{project_id}/envelope/"),
    ("POST", "/api/{project_id}/store/"),
    ("GET", "/healthz"),
    ("GET", "/readyz"),
    ("GET", "/metrics"),
    ("GET", "/api/v1/openapi.json"),
    // Authenticated by the delivery's HMAC signature (tests/github.rs).
    ("POST", "/integrations/github/webhook"),
];

async fn management_api_requires_a_token(t: TestApp) {
    t.post_events(json!([event("still here")])).await;
    let group = t.groups("").await[0]["id"].as_i64().unwrap();
    let event_id = t.get("/api/v1/events").await.body["events"][0]["event_id"]
        .as_str()
        .unwrap()
        .to_string();
    let wrong = [
        None,
        Some("Bearer eft_wrong".to_string()),
        // An ingest key is not a management token.
        Some(format!("Bearer {}", t.key)),
    ];
    for (method, path) in MANAGEMENT_ROUTES {
        let uri = path
            .replace("{id}", &group.to_string())
            .replace("{event_id}", &event_id)
            .replace("{project_id}", &t.project_id.to_string());
        for auth in &wrong {
            let mut req = Request::builder()
                .method(*method)
                .uri(&uri)
                .header("content-type", "application/json");
            if let Some(auth) = auth {
                req = req.header("authorization", auth);
            }
            let body =
                Body::from(json!({"name": "x", "url": "https://h.example.com/x"}).to_string());
            let r = t.send(req.body(body).unwrap()).await;
            assert_eq!(
                r.status,
                StatusCode::UNAUTHORIZED,
                "{method} {uri} with {auth:?}: {}",
                r.body
            );
            assert_error(&r, StatusCode::UNAUTHORIZED, "unauthorized");
        }
    }
    // Nothing was done.
    let groups = t.groups("").await;
    assert_eq!(groups.len(), 1);
    assert_eq!(groups[0]["status"], "open");
    let projects = t.get("/api/v1/projects").await.body;
    assert_eq!(projects.as_array().map_or(0, Vec::len), 1, "{projects}");

    // The table is complete: every operation of the API document is in it
    // or among the open routes.
    let doc = t
        .send(
            Request::get("/api/v1/openapi.json")
                .body(Body::empty())
                .unwrap(),
        )
        .await
        .body;
    for (path, item) in doc["paths"].as_object().unwrap() {
        for method in item.as_object().unwrap().keys() {
            let method = method.to_ascii_uppercase();
            let known = |table: &[(&str, &str)]| {
                table
                    .iter()
                    .any(|(m, p)| *m == method && same_route(p, path))
            };
            assert!(
                known(MANAGEMENT_ROUTES) || known(OPEN_ROUTES),
                "{method} {path} is in neither MANAGEMENT_ROUTES nor OPEN_ROUTES"
            );
        }
    }
}

/// Whether two route templates match, whatever their parameters are named.
fn same_route(a: &str, b: &str) -> bool {
    let shape = |p: &str| -> Vec<String> {
        p.split('/')
            .map(|s| {
                if s.starts_with('{') {
                    "{}".to_string()
                } else {
                    s.to_string()
                }
            })
            .collect()
    };
    shape(a) == shape(b)
}

async fn group_detail_has_counts_tags_and_history(t: TestApp) {
    let mut a = event("disk full on /dev/sda1");
    a["host"] = json!("web-1");
    let mut b = event("disk full on /dev/sdb1");
    b["host"] = json!("web-2");
    let mut c = event("disk full on /dev/sdc1");
    c["host"] = json!("web-1");
    // The path breakdown counts routes, not one value per id.
    a["request"] = json!({"url": "https://api.test/volumes/17/snapshots?all=1"});
    c["request"] = json!({"url": "/volumes/4242/snapshots"});
    t.post_events(json!([a, b, c])).await;
    let groups = t.groups("").await;
    assert_eq!(groups.len(), 1, "{groups:?}");
    let id = groups[0]["id"].as_i64().unwrap();
    let d = t.get(&format!("/api/v1/groups/{id}")).await;
    assert_eq!(d.status, StatusCode::OK, "{}", d.body);
    assert_eq!(d.body["status"], "open");
    assert_eq!(d.body["count"], 3);
    assert_eq!(d.body["hourly"].as_array().unwrap().len(), 24);
    assert_eq!(d.body["daily"].as_array().unwrap().len(), 14);
    let hourly_total: i64 = d.body["hourly"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["count"].as_i64().unwrap())
        .sum();
    assert_eq!(hourly_total, 3);
    assert_eq!(
        d.body["top_tags"]["host"][0],
        json!({"value": "web-1", "count": 2})
    );
    assert_eq!(d.body["top_tags"]["environment"][0]["value"], "prod");
    assert_eq!(
        d.body["top_tags"]["path"],
        json!([{"value": "/volumes/<int>/snapshots", "count": 2}])
    );
    assert_eq!(d.body["regression_count"], 0);
    assert_eq!(d.body["activity"][0]["kind"], "created");
    for field in [
        "title",
        "first_seen",
        "last_seen",
        "service",
        "error_type",
        "severity",
    ] {
        assert!(!d.body[field].is_null(), "{field} missing: {}", d.body);
    }

    let evs = t.get(&format!("/api/v1/groups/{id}/events?limit=2")).await;
    assert_eq!(evs.body["events"].as_array().unwrap().len(), 2);
    let cursor = evs.body["next_cursor"].as_str().unwrap();
    let rest = t
        .get(&format!(
            "/api/v1/groups/{id}/events?limit=2&cursor={cursor}"
        ))
        .await;
    assert_eq!(rest.body["events"].as_array().unwrap().len(), 1);
}

async fn lifecycle_resolve_regress_quiet_reopen(t: TestApp) {
    t.post_events(json!([event("cache miss storm")])).await;
    let id = t.groups("").await[0]["id"].as_i64().unwrap();

    let r = t
        .post_api(
            &format!("/api/v1/groups/{id}/resolve"),
            json!({"reason": "fixed in #12"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.body["status"], "resolved");
    assert_eq!(r.body["resolution_reason"], "fixed in #12");
    assert!(!r.body["resolved_at"].is_null());
    assert_eq!(t.groups("status=resolved").await.len(), 1);
    assert!(t.groups("status=open").await.is_empty());

    // A new event of a resolved incident is a regression.
    t.post_events(json!([event("cache miss storm")])).await;
    let g = t.get(&format!("/api/v1/groups/{id}")).await.body;
    assert_eq!(g["status"], "open");
    assert_eq!(g["regression_count"], 1);
    assert!(!g["regressed_at"].is_null());

    let r = t
        .post_api(&format!("/api/v1/groups/{id}/quiet"), json!({}))
        .await;
    assert_eq!(r.body["status"], "quiet");
    // The seed's clients POST with no body at all.
    let r = t
        .send(
            Request::post(format!("/api/v1/groups/{id}/reopen"))
                .header("authorization", format!("Bearer {}", t.token))
                .body(Body::empty())
                .unwrap(),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.body["status"], "open");
    // The seed's resolve path works too (with a token now).
    let r = t
        .send(
            Request::post(format!("/groups/{id}/resolve"))
                .header("authorization", format!("Bearer {}", t.token))
                .body(Body::empty())
                .unwrap(),
        )
        .await;
    assert_eq!(r.body["status"], "resolved");
    assert_eq!(r.body["resolution_reason"], "manual");

    let history = t.get(&format!("/api/v1/groups/{id}/activity")).await.body;
    let kinds: Vec<&str> = history
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["kind"].as_str().unwrap())
        .collect();
    assert_eq!(
        kinds,
        [
            "created",
            "resolved",
            "regressed",
            "quieted",
            "reopened",
            "resolved"
        ]
    );
    let resolved = &history[1];
    assert_eq!(resolved["actor"], "token:tester");
    assert_eq!(resolved["from_status"], "open");
    assert_eq!(resolved["to_status"], "resolved");
    assert_eq!(resolved["reason"], "fixed in #12");

    // Unknown incidents are 404, not a silent success as in the seed.
    let r = t.post_api("/api/v1/groups/987654/resolve", json!({})).await;
    assert_error(&r, StatusCode::NOT_FOUND, "not_found");
}

async fn incidents_are_deleted_with_their_events(t: TestApp) {
    let first = event("disk full");
    let event_id = first["event_id"].as_str().unwrap().to_string();
    t.post_events(json!([first, event("disk full"), event("cache cold")]))
        .await;
    let groups = t.groups("").await;
    let id_of = |title: &str| {
        groups
            .iter()
            .find(|g| g["title"].as_str().unwrap().contains(title))
            .unwrap()["id"]
            .as_i64()
            .unwrap()
    };
    let (full, cold) = (id_of("disk full"), id_of("cache cold"));

    // Without a token: 401, and nothing is deleted.
    let r = t
        .send(
            Request::delete(format!("/api/v1/groups/{full}"))
                .body(Body::empty())
                .unwrap(),
        )
        .await;
    assert_error(&r, StatusCode::UNAUTHORIZED, "unauthorized");
    assert_eq!(
        t.get(&format!("/api/v1/groups/{full}")).await.status,
        StatusCode::OK
    );

    let r = t
        .call("DELETE", &format!("/api/v1/groups/{full}"), None)
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.body);
    let r = t.get(&format!("/api/v1/groups/{full}")).await;
    assert_error(&r, StatusCode::NOT_FOUND, "not_found");
    let r = t.get(&format!("/api/v1/events/{event_id}")).await;
    assert_error(&r, StatusCode::NOT_FOUND, "not_found");
    // The other incident is untouched.
    assert_eq!(
        t.get(&format!("/api/v1/groups/{cold}")).await.body["count"],
        1
    );
    // Twice, or an unknown id: 404; a malformed id: 400.
    let r = t
        .call("DELETE", &format!("/api/v1/groups/{full}"), None)
        .await;
    assert_error(&r, StatusCode::NOT_FOUND, "not_found");
    let r = t.call("DELETE", "/api/v1/groups/abc", None).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.body);

    // The same error again opens a new incident.
    t.post_events(json!([event("disk full")])).await;
    let again = t.groups("").await;
    assert_eq!(again.len(), 2);
    assert!(again.iter().all(|g| g["id"].as_i64() != Some(full)));
}

async fn projects_are_deleted_and_their_key_refused_at_once(t: TestApp) {
    let (key, id) = t.add_project("old").await;
    let ingest = |key: String| {
        t.send(
            Request::post("/api/v1/events")
                .header("x-errorflow-key", key)
                .header("content-type", "application/json")
                .body(Body::from(
                    json!({"events": [event("gone soon")]}).to_string(),
                ))
                .unwrap(),
        )
    };
    assert_eq!(ingest(key.clone()).await.status, StatusCode::OK);
    let r = t
        .call("DELETE", &format!("/api/v1/projects/{id}"), None)
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.body, json!({"events": 1, "incidents": 1}));
    // This collector forgets the cached key at once.
    let r = ingest(key).await;
    assert_error(&r, StatusCode::FORBIDDEN, "forbidden");
    let r = t
        .call("DELETE", &format!("/api/v1/projects/{id}"), None)
        .await;
    assert_error(&r, StatusCode::NOT_FOUND, "not_found");
    // The test app's own project is untouched.
    let r = t.post_events(json!([event("still here")])).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
}

async fn list_filters_sorts_and_pages(t: TestApp) {
    let mut evs = Vec::new();
    for i in 0..7 {
        let mut e = rust_error("E", "boom", &format!("app::site{i}::run"), 1);
        e["service"] = json!(if i % 2 == 0 { "api" } else { "worker" });
        e["environment"] = json!(if i < 3 { "staging" } else { "prod" });
        evs.push(e.clone());
        // Site i gets i+1 events.
        for _ in 0..i {
            let mut again = e.clone();
            again["event_id"] = json!(uuid::Uuid::new_v4());
            evs.push(again);
        }
    }
    let r = t.post_events(Value::Array(evs)).await;
    assert_eq!(r.body["accepted"], 28, "{}", r.body);

    assert_eq!(t.groups("service=api").await.len(), 4);
    assert_eq!(t.groups("environment=staging").await.len(), 3);
    assert_eq!(t.groups("q=site3").await.len(), 1);
    let by_count = t.groups("sort=count").await;
    let counts: Vec<i64> = by_count
        .iter()
        .map(|g| g["count"].as_i64().unwrap())
        .collect();
    assert_eq!(counts, vec![7, 6, 5, 4, 3, 2, 1]);

    // Pages of 3 visit every incident exactly once.
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            Some(c) => format!("/api/v1/groups?sort=count&limit=3&cursor={c}"),
            None => "/api/v1/groups?sort=count&limit=3".to_string(),
        };
        let page = t.get(&path).await.body;
        for g in page["groups"].as_array().unwrap() {
            seen.push(g["id"].as_i64().unwrap());
        }
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => break,
        }
    }
    let mut unique = seen.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(seen.len(), 7);
    assert_eq!(unique.len(), 7);
}

async fn events_are_found_by_id_with_or_without_dashes(t: TestApp) {
    let e = event("look me up");
    let id = e["event_id"].as_str().unwrap().to_string();
    t.post_events(json!([e])).await;
    let with = t.get(&format!("/api/v1/events/{id}")).await;
    assert_eq!(with.status, StatusCode::OK, "{}", with.body);
    let without = t
        .get(&format!("/api/v1/events/{}", id.replace('-', "")))
        .await;
    assert_eq!(without.status, StatusCode::OK);
    assert_eq!(with.body, without.body);
    assert!(with.body["group_id"].as_i64().is_some());
    assert_eq!(with.body["data"]["message"], "look me up");
    assert_eq!(with.body["project_id"], t.project_id);
}

async fn projects_are_created_and_keys_rotated(t: TestApp) {
    let r = t
        .post_api("/api/v1/projects", json!({"name": "billing"}))
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    let key = r.body["key"].as_str().unwrap().to_string();
    let id = r.body["id"].as_i64().unwrap();
    assert_eq!(
        r.body["dsn"],
        format!("http://{key}@127.0.0.1:8000/{id}"),
        "DSN format http://KEY@HOST:PORT/ID"
    );
    let r = t
        .post_api("/api/v1/projects", json!({"name": "billing"}))
        .await;
    assert_error(&r, StatusCode::CONFLICT, "conflict");
    let r = t
        .post_api("/api/v1/projects", json!({"name": "<script>"}))
        .await;
    assert_error(&r, StatusCode::UNPROCESSABLE_ENTITY, "invalid_field");

    let send_with = |key: String| {
        Request::post("/api/v1/events")
            .header("content-type", "application/json")
            .header("x-errorflow-key", key)
            .body(Body::from(
                json!({"events": [event("billing broke")]}).to_string(),
            ))
            .unwrap()
    };
    assert_eq!(t.send(send_with(key.clone())).await.status, StatusCode::OK);

    let r = t
        .post_api(&format!("/api/v1/projects/{id}/rotate-key"), json!({}))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let new_key = r.body["key"].as_str().unwrap().to_string();
    assert_ne!(new_key, key);
    assert_error(
        &t.send(send_with(key)).await,
        StatusCode::FORBIDDEN,
        "forbidden",
    );
    assert_eq!(t.send(send_with(new_key)).await.status, StatusCode::OK);

    let list = t.get("/api/v1/projects").await.body;
    assert_eq!(list.as_array().unwrap().len(), 2);
    assert!(
        list.to_string().find(&t.key).is_none(),
        "keys are never listed"
    );
}

async fn project_alert_webhooks_are_set_shown_redacted_and_removed(t: TestApp) {
    let path = format!("/api/v1/projects/{}/alert-webhook", t.project_id);
    let secret_url = "https://hooks.slack.com/services/T000/B000/very-secret";
    // No token, a wrong one, or an ingest key: 401, and nothing is set.
    for auth in [
        None,
        Some("Bearer eft_wrong".to_owned()),
        Some(format!("Bearer {}", t.key)),
    ] {
        let mut req = Request::put(&path).header("content-type", "application/json");
        if let Some(auth) = auth {
            req = req.header("authorization", auth);
        }
        let body = Body::from(json!({ "url": secret_url }).to_string());
        let r = t.send(req.body(body).unwrap()).await;
        assert_error(&r, StatusCode::UNAUTHORIZED, "unauthorized");
    }
    let r = t.get(&path).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.body, json!({"webhook": null, "collector_webhook": false}));

    // What is not an http(s) URL with a host: 422, and nothing is stored.
    for (url, why) in [
        ("", "empty"),
        ("not a url", "not a URL"),
        ("ftp://files.example.com/hook", "http or https"),
        ("javascript:alert(1)", "http or https"),
        ("file:///etc/passwd", "http or https"),
    ] {
        let r = t.call("PUT", &path, Some(json!({ "url": url }))).await;
        assert_error(&r, StatusCode::UNPROCESSABLE_ENTITY, "invalid_field");
        let message = r.body["error"]["message"].as_str().unwrap();
        assert!(message.contains(why), "{url:?}: {message}");
    }
    let long = format!("https://hooks.example.com/{}", "a".repeat(2048));
    let r = t.call("PUT", &path, Some(json!({ "url": long }))).await;
    assert_error(&r, StatusCode::UNPROCESSABLE_ENTITY, "invalid_field");
    // Wrongly typed or unknown fields, and no body at all.
    let r = t.call("PUT", &path, Some(json!({ "url": 42 }))).await;
    assert!(r.status.is_client_error(), "{}", r.status);
    let r = t
        .call("PUT", &path, Some(json!({ "url": secret_url, "extra": 1 })))
        .await;
    assert!(r.status.is_client_error(), "{}", r.status);
    let r = t.call("PUT", &path, None).await;
    assert_error(&r, StatusCode::UNPROCESSABLE_ENTITY, "invalid_field");
    assert_eq!(t.get(&path).await.body["webhook"], Value::Null);

    // Set: shown as its scheme and host only, here and in the listing.
    let r = t
        .call("PUT", &path, Some(json!({ "url": secret_url })))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.body["webhook"], "https://hooks.slack.com/…");
    let shown = t.get(&path).await.body;
    assert_eq!(shown["webhook"], "https://hooks.slack.com/…");
    for body in [shown, t.get("/api/v1/projects").await.body] {
        assert!(!body.to_string().contains("very-secret"), "{body}");
    }
    assert_eq!(
        t.state
            .store
            .project_alert_webhook(t.project_id)
            .await
            .unwrap()
            .as_deref(),
        Some(secret_url)
    );
    // Another project is untouched.
    let (_, other) = t.add_project("billing").await;
    let r = t
        .get(&format!("/api/v1/projects/{other}/alert-webhook"))
        .await;
    assert_eq!(r.body["webhook"], Value::Null);

    // Removed.
    let r = t.call("DELETE", &path, None).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.body["webhook"], Value::Null);
    assert_eq!(
        t.state
            .store
            .project_alert_webhook(t.project_id)
            .await
            .unwrap(),
        None
    );

    // No such project: 404 for every method.
    let missing = "/api/v1/projects/9999/alert-webhook";
    assert_error(&t.get(missing).await, StatusCode::NOT_FOUND, "not_found");
    let r = t
        .call("PUT", missing, Some(json!({ "url": secret_url })))
        .await;
    assert_error(&r, StatusCode::NOT_FOUND, "not_found");
    assert_error(
        &t.call("DELETE", missing, None).await,
        StatusCode::NOT_FOUND,
        "not_found",
    );
}

async fn openapi_and_operations_endpoints(t: TestApp) {
    let doc = t
        .send(
            Request::get("/api/v1/openapi.json")
                .body(Body::empty())
                .unwrap(),
        )
        .await;
    assert_eq!(doc.status, StatusCode::OK);
    assert!(doc.body["openapi"].as_str().unwrap().starts_with("3."));
    for path in [
        "/api/v1/events",
        "/errors/custom",
        "/api/v1/groups",
        "/api/v1/groups/{id}",
        "/api/v1/groups/{id}/events",
        "/api/v1/groups/{id}/resolve",
        "/api/v1/groups/{id}/quiet",
        "/api/v1/groups/{id}/reopen",
        "/api/v1/events/{event_id}",
        "/api/v1/projects",
        "/api/v1/projects/{id}/alert-webhook",
        "/api/{project_id}/envelope/",
        "/api/{project_id}/store/",
    ] {
        assert!(doc.body["paths"][path].is_object(), "openapi lacks {path}");
    }
    // The Sentry routes: their body types, auth forms and every answer.
    let schemes = &doc.body["components"]["securitySchemes"];
    assert_eq!(schemes["sentry_auth"]["in"], "header");
    assert_eq!(schemes["sentry_auth"]["name"], "X-Sentry-Auth");
    assert_eq!(schemes["sentry_key"]["in"], "query");
    assert_eq!(schemes["sentry_key"]["name"], "sentry_key");
    for (path, content_type) in [
        (
            "/api/{project_id}/envelope/",
            "application/x-sentry-envelope",
        ),
        ("/api/{project_id}/store/", "application/json"),
    ] {
        let op = &doc.body["paths"][path]["post"];
        assert!(
            op["requestBody"]["content"][content_type].is_object(),
            "{path} lacks {content_type}"
        );
        let security = op["security"].to_string();
        assert!(
            security.contains("sentry_auth") && security.contains("sentry_key"),
            "{path}: {security}"
        );
        for status in ["200", "400", "401", "403", "413", "415", "429"] {
            assert!(op["responses"][status].is_object(), "{path} lacks {status}");
        }
        let error =
            op["responses"]["429"]["content"]["application/json"]["schema"]["$ref"].as_str();
        assert_eq!(error, Some("#/components/schemas/ErrorBody"), "{path}");
    }

    let r = t
        .send(Request::get("/healthz").body(Body::empty()).unwrap())
        .await;
    assert_eq!(r.status, StatusCode::OK);
    let r = t
        .send(Request::get("/readyz").body(Body::empty()).unwrap())
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.body, json!({"status": "ready"}));

    t.post_events(json!([event("count me")])).await;
    let m = t
        .send(Request::get("/metrics").body(Body::empty()).unwrap())
        .await;
    assert_eq!(m.status, StatusCode::OK);
    let text = m.body.as_str().unwrap().to_string();
    for name in [
        "errorflow_events_accepted_total",
        "errorflow_groups_created_total",
        "errorflow_ingest_duration_seconds",
        "errorflow_ingest_queue_depth",
    ] {
        assert!(text.contains(name), "/metrics lacks {name}");
    }
    assert!(!r.headers.is_empty());
}

/// 64 concurrent first events of one new fingerprint, each in its own
/// request, through two collector instances on one database (as two
/// processes would be): exactly one incident, counting 64.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_concurrent_first_events_make_one_incident() {
    let db = common::pg_store().await;
    let first = test_app(db).await;
    // A second instance with its own connection pool and writers.
    let second_store = errorflow_collector::store::connect(&first.db.url)
        .await
        .unwrap();
    let config = Config::resolve(&Cli::parse_from(["errorflow-collector"]), None).unwrap();
    let second = router(build_state(second_store, &config));
    let mut tasks = Vec::new();
    for i in 0..64 {
        let app = if i % 2 == 0 {
            first.app.clone()
        } else {
            second.clone()
        };
        let req = first.ingest_request(
            "/api/v1/events",
            json!({"events": [rust_error("Race", &format!("first {i}"), "app::race::go", 1)]})
                .to_string(),
        );
        tasks.push(tokio::spawn(async move {
            app.oneshot(req).await.unwrap().status()
        }));
    }
    for task in tasks {
        assert_eq!(task.await.unwrap(), StatusCode::OK);
    }
    let groups = first.groups("").await;
    assert_eq!(groups.len(), 1, "{groups:?}");
    assert_eq!(groups[0]["count"], 64);
    assert_eq!(first.stored_count().await, 64);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_quiet_job_quiets_idle_incidents() {
    quiet_job_quiets_idle_incidents(test_app(common::sqlite_store().await).await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_quiet_job_quiets_idle_incidents() {
    quiet_job_quiets_idle_incidents(test_app(common::pg_store().await).await).await;
}

/// The background job quiets idle incidents; a new event reopens them.
async fn quiet_job_quiets_idle_incidents(t: TestApp) {
    t.post_events(json!([event("idle soon")])).await;
    let job = tokio::spawn(errorflow_collector::app::quiet_job(
        t.state.store.clone(),
        std::time::Duration::from_secs(1),
    ));
    let mut status = String::new();
    for _ in 0..50 {
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        status = t.groups("").await[0]["status"]
            .as_str()
            .unwrap()
            .to_string();
        if status == "quiet" {
            break;
        }
    }
    job.abort();
    assert_eq!(status, "quiet");
    t.post_events(json!([event("idle soon")])).await;
    let g = &t.groups("").await[0];
    assert_eq!(g["status"], "open");
    let history = t
        .get(&format!("/api/v1/groups/{}/activity", g["id"]))
        .await
        .body;
    let last = history.as_array().unwrap().last().unwrap().clone();
    assert_eq!(last["kind"], "unquieted");
    assert_eq!(history[1]["actor"], "system");
}

/// `/readyz` says whether the database answers: with the Postgres database
/// refusing connections (its open ones ended), 503 and a JSON error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_readyz_is_503_when_the_database_does_not_answer() {
    use sqlx::Connection;
    let t = test_app(common::pg_store().await).await;
    let ready = t
        .send(Request::get("/readyz").body(Body::empty()).unwrap())
        .await;
    assert_eq!(ready.status, StatusCode::OK);
    let name = t.db.url.rsplit('/').next().unwrap().to_string();
    let admin = std::env::var("ERRORFLOW_TEST_PG_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_string());
    let mut conn = sqlx::PgConnection::connect(&admin).await.unwrap();
    // The name was generated by the test helpers; identifiers cannot be bound.
    sqlx::query(&format!(
        "ALTER DATABASE \"{name}\" ALLOW_CONNECTIONS false"
    ))
    .execute(&mut conn)
    .await
    .unwrap();
    sqlx::query("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1")
        .bind(&name)
        .execute(&mut conn)
        .await
        .unwrap();
    let r = t
        .send(Request::get("/readyz").body(Body::empty()).unwrap())
        .await;
    assert_error(&r, StatusCode::SERVICE_UNAVAILABLE, "unavailable");
    sqlx::query(&format!("ALTER DATABASE \"{name}\" ALLOW_CONNECTIONS true"))
        .execute(&mut conn)
        .await
        .unwrap();
    let r = t
        .send(Request::get("/readyz").body(Body::empty()).unwrap())
        .await;
    assert_eq!(r.status, StatusCode::OK, "ready again: {}", r.body);
}

/// "café" sent composed (`é`, NFC) and decomposed (`e` and U+0301, NFD)
/// is one text: on each protocol, the two events land in one incident.
async fn composed_and_decomposed_text_is_one_incident(t: TestApp) {
    let nfc = "payment failed for caf\u{e9} 42";
    let nfd = "payment failed for cafe\u{301} 42";
    assert_ne!(nfc, nfd);
    let sentry = format!("/api/{}/store/?sentry_key={}", t.project_id, t.key);
    let send = |protocol: &'static str, text: &'static str| {
        let (path, body) = match protocol {
            "ours" => (
                "/api/v1/events".to_string(),
                json!({"events": [{"event_id": uuid::Uuid::new_v4(), "level": "error", "service": "shop",
                    "exception": [{"type": "CheckoutError", "value": text}]}]}),
            ),
            "custom" => (
                "/errors/custom".to_string(),
                json!({"service": "shop-custom", "error_type": "CheckoutError", "message": text}),
            ),
            _ => (
                sentry.clone(),
                json!({"level": "error", "server_name": "web-1", "tags": {"service": "shop-sentry"},
                    "exception": {"values": [{"type": "CheckoutError", "value": text}]}}),
            ),
        };
        t.ingest_request(&path, body.to_string())
    };
    for protocol in ["ours", "custom", "sentry"] {
        let mut groups = Vec::new();
        for text in [nfc, nfd] {
            let r = t.send(send(protocol, text)).await;
            assert!(r.status.is_success(), "{protocol}: {} {}", r.status, r.body);
            let events = t.get("/api/v1/events?limit=1").await.body;
            groups.push(events["events"][0]["group_id"].clone());
        }
        assert_eq!(groups[0], groups[1], "{protocol}: NFC and NFD split");
    }
    let all = t.get("/api/v1/groups?status=all").await.body;
    assert_eq!(all["groups"].as_array().unwrap().len(), 3, "{all}");
    // The stored text is the composed form.
    let events = t.get("/api/v1/events?limit=1").await.body;
    assert!(
        events["events"][0].to_string().contains("caf\u{e9}"),
        "{}",
        events["events"][0]
    );
}
