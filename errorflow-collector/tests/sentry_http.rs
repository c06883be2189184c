//! The Sentry endpoints through the real HTTP stack on both backends:
//! authentication in its three forms, every encoding, every malformed
//! envelope, limits, rate limiting and CORS. Every test runs twice, by name:
//! `sqlite::…` and `postgres::…`.

mod common;

use std::io::Write;
use std::ops::Deref;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use errorflow_collector::credentials;
use errorflow_collector::http::rate_limit::KeyRate;
use serde_json::{json, Value};

use common::{assert_error, gzip, Reply, TestApp};

/// The common app (project `shop`) with a second project, `other`, and a
/// low per-key rate so that the rate limit can be reached.
struct SentryApp {
    t: TestApp,
    other_key: String,
    other_project_id: i64,
}

impl Deref for SentryApp {
    type Target = TestApp;
    fn deref(&self) -> &TestApp {
        &self.t
    }
}

async fn test_app(db: common::TestDb) -> SentryApp {
    let t = TestApp::new(db, "shop").await;
    let (other_key, other_project_id) = t.add_project("other").await;
    let state = t.state.clone().with_key_rate(KeyRate {
        per_second: 1,
        burst: 20,
    });
    SentryApp {
        t: t.with_state(state),
        other_key,
        other_project_id,
    }
}

impl SentryApp {
    fn auth(&self) -> String {
        format!(
            "Sentry sentry_key={}, sentry_version=7, sentry_client=test/1.0",
            self.key
        )
    }

    /// An authenticated envelope POST, optionally encoded.
    fn envelope(&self, body: impl Into<Body>, encoding: Option<&str>) -> Request<Body> {
        let mut req = Request::post(format!("/api/{}/envelope/", self.project_id))
            .header("content-type", "application/x-sentry-envelope")
            .header("x-sentry-auth", self.auth());
        if let Some(e) = encoding {
            req = req.header("content-encoding", e);
        }
        req.body(body.into()).unwrap()
    }

    async fn post_envelope(&self, body: Vec<u8>) -> Reply {
        self.send(self.envelope(body, None)).await
    }

    async fn events(&self) -> Vec<Value> {
        let r = self.get("/api/v1/events?limit=200").await;
        assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
        r.body["events"].as_array().unwrap().clone()
    }
}

fn event_id() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

/// An envelope with one event item (with `length` or without).
fn envelope(event: &Value, with_length: bool) -> Vec<u8> {
    let payload = event.to_string();
    let header = match event["event_id"].as_str() {
        Some(id) => json!({ "event_id": id }),
        None => json!({}),
    };
    let item = if with_length {
        json!({"type": "event", "length": payload.len()})
    } else {
        json!({"type": "event"})
    };
    format!("{header}\n{item}\n{payload}\n").into_bytes()
}

fn sentry_event(value: &str) -> Value {
    json!({
        "event_id": event_id(),
        "timestamp": 1_795_805_563.25,
        "platform": "python",
        "level": "error",
        "release": "shop@1.0.0",
        "exception": {"values": [
            {"type": "KeyError", "value": "'sku'"},
            {"type": "CheckoutError", "value": value, "mechanism": {"type": "generic", "handled": true},
             "stacktrace": {"frames": [
                {"function": "main", "module": "shop.app", "lineno": 3, "in_app": true},
                {"function": "checkout", "module": "shop.orders", "lineno": 17, "in_app": true},
             ]}},
        ]},
    })
}

fn encode(encoding: &str, data: &[u8]) -> Vec<u8> {
    match encoding {
        "gzip" => gzip(data),
        "deflate" => {
            let mut e = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
            e.write_all(data).unwrap();
            e.finish().unwrap()
        }
        "br" => {
            let mut out = Vec::new();
            {
                let mut w = brotli::CompressorWriter::new(&mut out, 4096, 5, 22);
                w.write_all(data).unwrap();
            }
            out
        }
        "zstd" => zstd::encode_all(data, 3).unwrap(),
        _ => data.to_vec(),
    }
}

common::backend_tests!(
    setup => super::test_app;
    envelope_event_is_stored_with_sentrys_answer,
    key_in_header_query_or_dsn,
    every_encoding_is_accepted,
    malformed_envelopes_are_refused_and_store_nothing,
    limits_of_sentry_are_enforced,
    other_item_types_are_accepted_and_skipped,
    store_endpoint_takes_a_bare_event,
    captured_sdk_envelopes_are_stored,
    legacy_store_bodies_are_decoded_within_limits,
    rate_limit_answers_429_with_sentry_headers,
    cors_preflight_and_headers,
);

async fn envelope_event_is_stored_with_sentrys_answer(t: SentryApp) {
    let event = sentry_event("order 17 failed");
    let id = event["event_id"].as_str().unwrap().to_owned();
    for with_length in [true, false] {
        let r = t.post_envelope(envelope(&event, with_length)).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.body);
        assert_eq!(r.body, json!({ "id": id }));
    }
    let events = t.events().await;
    assert_eq!(events.len(), 1, "the retry is a duplicate");
    let stored = &events[0];
    assert_eq!(stored["error_type"], "CheckoutError");
    assert_eq!(stored["service"], "shop");
    assert_eq!(stored["release"], "shop@1.0.0");
    assert_eq!(stored["project_id"], t.project_id);
    assert_eq!(stored["data"]["exception"][0]["type"], "CheckoutError");
    assert_eq!(stored["data"]["exception"][1]["type"], "KeyError");

    // Without trailing slash, a second event of the same site joins its incident.
    let req = Request::post(format!("/api/{}/envelope", t.project_id))
        .header("x-sentry-auth", t.auth())
        .body(Body::from(envelope(&sentry_event("order 18 failed"), true)))
        .unwrap();
    assert_eq!(t.send(req).await.status, StatusCode::OK);
    let groups = t.get("/api/v1/groups").await.body["groups"].clone();
    assert_eq!(groups.as_array().unwrap().len(), 1, "{groups}");
    assert_eq!(groups[0]["count"], 2);
}

async fn key_in_header_query_or_dsn(t: SentryApp) {
    let path = format!("/api/{}/envelope/", t.project_id);
    let body = || Body::from(envelope(&sentry_event("x"), true));

    let r = t
        .send(
            Request::post(format!("{path}?sentry_version=7&sentry_key={}", t.key))
                .body(body())
                .unwrap(),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "query: {}", r.body);

    let r = t
        .send(
            Request::post(&path)
                .header("authorization", t.auth())
                .body(body())
                .unwrap(),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "authorization: {}", r.body);

    let dsn = credentials::dsn("http://127.0.0.1:8000", &t.key, t.project_id);
    let payload = sentry_event("x").to_string();
    let tunnelled = format!(
        "{}\n{{\"type\":\"event\"}}\n{payload}\n",
        json!({ "dsn": dsn })
    );
    let r = t
        .send(Request::post(&path).body(Body::from(tunnelled)).unwrap())
        .await;
    assert_eq!(r.status, StatusCode::OK, "dsn: {}", r.body);
    assert_eq!(t.events().await.len(), 3);

    // No key, a wrong key, another project's key.
    let r = t.send(Request::post(&path).body(body()).unwrap()).await;
    assert_error(&r, StatusCode::UNAUTHORIZED, "unauthorized");
    let r = t
        .send(
            Request::post(&path)
                .header(
                    "x-sentry-auth",
                    "Sentry sentry_key=00000000000000000000000000000000",
                )
                .body(body())
                .unwrap(),
        )
        .await;
    assert_error(&r, StatusCode::FORBIDDEN, "forbidden");
    let r = t
        .send(
            Request::post(&path)
                .header(
                    "x-sentry-auth",
                    format!("Sentry sentry_key={}", t.other_key),
                )
                .body(body())
                .unwrap(),
        )
        .await;
    assert_error(&r, StatusCode::FORBIDDEN, "forbidden");
    let r = t
        .send(
            Request::post(format!("/api/{}/envelope/", t.other_project_id))
                .header("x-sentry-auth", t.auth())
                .body(body())
                .unwrap(),
        )
        .await;
    assert_error(&r, StatusCode::FORBIDDEN, "forbidden");
    let r = t
        .send(
            Request::post("/api/abc/envelope/")
                .header("x-sentry-auth", t.auth())
                .body(body())
                .unwrap(),
        )
        .await;
    assert_error(&r, StatusCode::BAD_REQUEST, "invalid_id");
    assert_eq!(t.events().await.len(), 3);
}

async fn every_encoding_is_accepted(t: SentryApp) {
    for encoding in ["identity", "gzip", "deflate", "br", "zstd"] {
        let body = encode(encoding, &envelope(&sentry_event(encoding), true));
        let r = t.send(t.envelope(body, Some(encoding))).await;
        assert_eq!(r.status, StatusCode::OK, "{encoding}: {}", r.body);
    }
    assert_eq!(t.events().await.len(), 5);
    let r = t.send(t.envelope(b"x".to_vec(), Some("compress"))).await;
    assert_error(
        &r,
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "unsupported_media_type",
    );
}

async fn malformed_envelopes_are_refused_and_store_nothing(t: SentryApp) {
    let good = sentry_event("fine").to_string();
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("empty body", vec![], "invalid_envelope"),
        (
            "bad header JSON",
            b"{nope\n{\"type\":\"event\"}\n{}\n".to_vec(),
            "invalid_envelope",
        ),
        (
            "bad item header",
            format!("{{}}\nnope\n{good}\n").into_bytes(),
            "invalid_envelope",
        ),
        (
            "item header without type",
            format!("{{}}\n{{\"length\":{}}}\n{good}\n", good.len()).into_bytes(),
            "invalid_envelope",
        ),
        (
            "length too long: truncated",
            format!(
                "{{}}\n{{\"type\":\"event\",\"length\":{}}}\n{good}",
                good.len() + 50
            )
            .into_bytes(),
            "invalid_envelope",
        ),
        (
            "length too short",
            format!(
                "{{}}\n{{\"type\":\"event\",\"length\":{}}}\n{good}\n",
                good.len() - 3
            )
            .into_bytes(),
            "invalid_envelope",
        ),
        (
            "negative length",
            format!("{{}}\n{{\"type\":\"event\",\"length\":-1}}\n{good}\n").into_bytes(),
            "invalid_envelope",
        ),
        (
            "invalid item JSON",
            b"{}\n{\"type\":\"event\"}\n{\"a\":\n".to_vec(),
            "invalid_json",
        ),
        (
            "event not an object",
            b"{}\n{\"type\":\"event\"}\n[1,2]\n".to_vec(),
            "invalid_json",
        ),
        (
            "invalid event id",
            b"{}\n{\"type\":\"event\"}\n{\"event_id\":\"xyz\"}\n".to_vec(),
            "invalid_event_id",
        ),
        (
            // The second event is bad: the first must not be stored either.
            "good event then a bad one",
            format!("{{}}\n{{\"type\":\"event\"}}\n{good}\n{{\"type\":\"event\"}}\n{{oops\n")
                .into_bytes(),
            "invalid_json",
        ),
    ];
    for (what, body, code) in cases {
        let r = t.post_envelope(body).await;
        assert_error(&r, StatusCode::BAD_REQUEST, code);
        assert!(
            r.body["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty()),
            "{what}"
        );
    }
    let r = t
        .send(t.envelope(b"\x1f\x8b garbage".to_vec(), Some("gzip")))
        .await;
    assert_eq!(
        r.status,
        StatusCode::BAD_REQUEST,
        "corrupt gzip: {}",
        r.body
    );
    let r = t.send(t.envelope(b"garbage".to_vec(), Some("zstd"))).await;
    assert_eq!(
        r.status,
        StatusCode::BAD_REQUEST,
        "corrupt zstd: {}",
        r.body
    );
    assert!(t.events().await.is_empty(), "nothing stored");
}

async fn limits_of_sentry_are_enforced(t: SentryApp) {
    let limits = t.state.limits.clone();
    // An event item over 1 MiB.
    let mut big = sentry_event("big");
    big["extra"] = json!({ "blob": "x".repeat(limits.max_event_bytes) });
    let r = t.post_envelope(envelope(&big, true)).await;
    assert_error(&r, StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large");
    let r = t.post_envelope(envelope(&big, false)).await;
    assert_error(&r, StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large");

    // A body over 5 MiB as sent.
    let r = t.post_envelope(vec![b' '; limits.max_body_bytes + 1]).await;
    assert_error(&r, StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large");

    // Compression bombs, in each encoding: > 20 MiB once inflated.
    let mut bomb = b"{}\n{\"type\":\"attachment\"}\n".to_vec();
    bomb.resize(limits.max_decompressed_bytes + 1024, b'a');
    for encoding in ["gzip", "deflate", "br", "zstd"] {
        let body = encode(encoding, &bomb);
        assert!(body.len() < limits.max_body_bytes, "{encoding}");
        let r = t.send(t.envelope(body, Some(encoding))).await;
        assert_error(&r, StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large");
    }
    assert!(t.events().await.is_empty());
}

async fn other_item_types_are_accepted_and_skipped(t: SentryApp) {
    let event = sentry_event("with friends");
    let payload = event.to_string();
    let body = format!(
        "{{\"event_id\":\"{id}\",\"sent_at\":\"2026-11-27T18:52:10Z\"}}\n\
         {{\"type\":\"attachment\",\"length\":5,\"filename\":\"a.txt\"}}\nhello\n\
         {{\"type\":\"session\"}}\n{{\"sid\":\"x\",\"status\":\"ok\"}}\n\
         {{\"type\":\"sessions\"}}\n{{\"aggregates\":[]}}\n\
         {{\"type\":\"transaction\"}}\n{{\"type\":\"transaction\",\"spans\":[]}}\n\
         {{\"type\":\"client_report\"}}\n{{\"discarded_events\":[]}}\n\
         {{\"type\":\"check_in\"}}\n{{\"status\":\"ok\"}}\n\
         {{\"type\":\"log\"}}\n{{\"items\":[]}}\n\
         {{\"type\":\"span\"}}\n{{}}\n\
         {{\"type\":\"profile\"}}\n{{}}\n\
         {{\"type\":\"replay_event\"}}\n{{}}\n\
         {{\"type\":\"statsd\",\"length\":8}}\nfoo:1|c\n\n\
         {{\"type\":\"something_new\"}}\nnot even json\n\
         {{\"type\":\"event\"}}\n{payload}\n",
        id = event["event_id"].as_str().unwrap()
    );
    let r = t.post_envelope(body.into_bytes()).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.body["id"], event["event_id"]);
    assert_eq!(t.events().await.len(), 1);

    // An envelope without event: accepted, nothing stored, `{}`.
    let r = t
        .post_envelope(b"{}\n{\"type\":\"client_report\"}\n{\"discarded_events\":[]}\n".to_vec())
        .await;
    assert_eq!((r.status, r.body.clone()), (StatusCode::OK, json!({})));
    assert_eq!(t.events().await.len(), 1);
}

async fn store_endpoint_takes_a_bare_event(t: SentryApp) {
    let event = sentry_event("legacy");
    for path in ["/api/{}/store/", "/api/{}/store"] {
        let path = path.replace("{}", &t.project_id.to_string());
        let r = t
            .send(
                Request::post(path)
                    .header("content-type", "application/json")
                    .header("content-encoding", "gzip")
                    .header("x-sentry-auth", t.auth())
                    .body(Body::from(encode("gzip", event.to_string().as_bytes())))
                    .unwrap(),
            )
            .await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.body);
        assert_eq!(r.body["id"], event["event_id"]);
    }
    assert_eq!(t.events().await.len(), 1);
    // No DSN in a bare event: a key must come with the request.
    let r = t
        .send(
            Request::post(format!("/api/{}/store/", t.project_id))
                .body(Body::from(event.to_string()))
                .unwrap(),
        )
        .await;
    assert_error(&r, StatusCode::UNAUTHORIZED, "unauthorized");
    let r = t
        .send(
            Request::post(format!("/api/{}/store/", t.project_id))
                .header("x-sentry-auth", t.auth())
                .body(Body::from("{nope"))
                .unwrap(),
        )
        .await;
    assert_error(&r, StatusCode::BAD_REQUEST, "invalid_json");
}

/// Old SDKs send `/store/` bodies as base64 of zlib-deflated JSON, with no
/// `Content-Encoding` (the body starts with `eJ`).
async fn legacy_store_bodies_are_decoded_within_limits(t: SentryApp) {
    use base64::Engine as _;
    let b64 = |data: &[u8]| base64::engine::general_purpose::STANDARD.encode(data);
    let store = |body: String| {
        Request::post(format!("/api/{}/store/", t.project_id))
            .header("content-type", "application/octet-stream")
            .header("x-sentry-auth", t.auth())
            .body(Body::from(body))
            .unwrap()
    };
    let event = sentry_event("legacy base64 body");
    let body = b64(&encode("deflate", event.to_string().as_bytes()));
    assert!(body.starts_with("eJ"));
    let r = t.send(store(body)).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.body["id"], event["event_id"]);
    let events = t.events().await;
    assert_eq!(events.len(), 1);
    assert_eq!(events[0]["message"], "CheckoutError: legacy base64 body");

    let r = t.send(store("eJ*** not base64 ***".into())).await;
    assert_error(&r, StatusCode::BAD_REQUEST, "invalid_encoding");
    let r = t.send(store(b64(b"neither zlib nor JSON"))).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.body);
    assert!(r.body["error"]["message"].is_string(), "{}", r.body);

    // A bomb: 21 MiB of JSON-ish bytes in a few dozen kilobytes.
    let max = t.state.limits.max_decompressed_bytes;
    let bomb = b64(&encode("deflate", &vec![b' '; max + (1 << 20)]));
    assert!(bomb.len() < 100 << 10);
    let r = t.send(store(bomb)).await;
    assert_error(&r, StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large");
    assert_eq!(t.events().await.len(), 1, "nothing else was stored");
}

async fn captured_sdk_envelopes_are_stored(t: SentryApp) {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/sentry");
    let mut sent = 0;
    let mut names: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    names.sort();
    for path in names {
        if path.extension().is_none_or(|e| e != "envelope") {
            continue;
        }
        let body = std::fs::read(&path).unwrap();
        let r = t
            .send(t.envelope(encode("gzip", &body), Some("gzip")))
            .await;
        assert_eq!(r.status, StatusCode::OK, "{}: {}", path.display(), r.body);
        sent += 1;
    }
    assert!(sent >= 12);
    let events = t.events().await;
    assert_eq!(
        events.len(),
        11,
        "every fixture but the session holds one event"
    );
    let mut services: Vec<_> = events
        .iter()
        .filter(|e| e["error_type"] == "PaymentError")
        .map(|e| e["service"].as_str().unwrap())
        .collect();
    services.sort();
    assert_eq!(services, ["node-shop", "py-shop"]);
}

async fn rate_limit_answers_429_with_sentry_headers(t: SentryApp) {
    // The test app allows a burst of 20 and then 1 event/s: by the time the
    // bucket runs out, at most one more event per second elapsed got in.
    let started = std::time::Instant::now();
    let mut limited = None;
    for i in 0..40 {
        let r = t
            .post_envelope(envelope(&sentry_event(&format!("n{i}")), true))
            .await;
        if r.status == StatusCode::TOO_MANY_REQUESTS {
            limited = Some((i, r));
            break;
        }
        assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    }
    let (i, r) = limited.expect("the bucket ran out");
    let refilled = started.elapsed().as_secs() as usize + 1;
    assert!(
        (20..=20 + refilled).contains(&i),
        "limited after {i} events in {:?}",
        started.elapsed()
    );
    assert_error(&r, StatusCode::TOO_MANY_REQUESTS, "rate_limited");
    let retry: u64 = r.headers["retry-after"].to_str().unwrap().parse().unwrap();
    assert!(retry >= 1);
    assert_eq!(
        r.headers["x-sentry-rate-limits"],
        format!("{retry}::key").as_str()
    );
    // Another key has its own bucket.
    let r = t
        .send(
            Request::post(format!("/api/{}/envelope/", t.other_project_id))
                .header(
                    "x-sentry-auth",
                    format!("Sentry sentry_key={}", t.other_key),
                )
                .body(Body::from(envelope(&sentry_event("other"), true)))
                .unwrap(),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
}

async fn cors_preflight_and_headers(t: SentryApp) {
    let r = t
        .send(
            Request::options(format!("/api/{}/envelope/", t.project_id))
                .header("origin", "https://shop.example.com")
                .header("access-control-request-method", "POST")
                .header(
                    "access-control-request-headers",
                    "x-sentry-auth, content-type, content-encoding",
                )
                .body(Body::empty())
                .unwrap(),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.headers["access-control-allow-origin"], "*");
    let allowed = r.headers["access-control-allow-headers"]
        .to_str()
        .unwrap()
        .to_ascii_lowercase();
    for h in ["x-sentry-auth", "content-type", "content-encoding"] {
        assert!(allowed.contains(h), "{allowed}");
    }
    assert!(r.headers["access-control-allow-methods"]
        .to_str()
        .unwrap()
        .contains("POST"));

    let mut req = t.envelope(envelope(&sentry_event("browser"), true), None);
    req.headers_mut()
        .insert("origin", "https://shop.example.com".parse().unwrap());
    let r = t.send(req).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.headers["access-control-allow-origin"], "*");

    // Only the Sentry routes speak CORS.
    let r = t
        .send(
            Request::get("/api/v1/groups")
                .header("origin", "https://shop.example.com")
                .header("authorization", format!("Bearer {}", t.token))
                .body(Body::empty())
                .unwrap(),
        )
        .await;
    assert!(!r.headers.contains_key("access-control-allow-origin"));
}
