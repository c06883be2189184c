//! Server-side scrubbing through the real HTTP stack, on both backends
//! (`sqlite::…` and `postgres::…`): an event carrying each kind of secret,
//! sent by every protocol (errorflow's batch, the seed's `/errors/custom`,
//! Sentry's `/store/` and envelope), is stored without any of them, as the
//! database's own rows show, and the prompt a model is sent holds none of
//! them either; the data that only looks secret is kept.

mod common;

use std::sync::{Arc, Mutex};

use axum::body::{Body, Bytes};
use axum::http::{Request, StatusCode};
use axum::Router;
use errorflow_collector::pipeline::scrub::Rules;
use errorflow_collector::triage::{self, Triage, TriageOptions};
use serde_json::{json, Value};

use common::{assert_error, test_app, TestApp};

/// Each secret an event carries, by what it is. The values are unique
/// strings, so that finding one anywhere means it leaked.
const SECRETS: &[(&str, &str)] = &[
    ("card number in the message", "4012 8888 8888 1881"),
    ("bearer token in an exception", "sk_live_BEARER0SECRET1"),
    ("password in extra", "EXTRA-PASSWORD-SECRET"),
    ("PEM private key in extra", "PEMBODYSECRET"),
    ("api_key in the URL's query", "QUERY-SECRET-77"),
    ("URL password", "URLPASSSECRET"),
    ("Authorization header", "HEADER-AUTH-SECRET"),
    ("Cookie header", "COOKIE-SECRET-99"),
    ("session tag", "TAG-SESSION-SECRET"),
    ("IBAN in a breadcrumb", "DE89 3704 0044 0532 0130 00"),
    ("auth in breadcrumb data", "CRUMB-AUTH-SECRET"),
    ("csrf token in contexts", "CSRF-CONTEXT-SECRET"),
    ("credentials in extra", "CREDENTIALS-SECRET"),
];

/// What only looks secret, and must be kept.
const KEPT: &[(&str, &str)] = &[
    ("order number failing Luhn", "4012888888881882"),
    ("tokenizer name", "bert-base-cased"),
    ("user id", "user-7"),
    ("IP address without --scrub-ip", "203.0.113.9"),
];

const PEM: &str = "-----BEGIN PRIVATE KEY-----\nPEMBODYSECRET\n-----END PRIVATE KEY-----";

/// The SDK protocol's event (`POST /api/v1/events`).
fn native_event(marker: &str) -> Value {
    json!({
        "event_id": uuid::Uuid::new_v4(),
        "level": "error",
        "service": "shop",
        "message": format!("{marker}: charge 4012 8888 8888 1881 failed for order 4012888888881882"),
        "exception": [{"type": "GatewayError", "value": "upstream refused Bearer sk_live_BEARER0SECRET1"}],
        "tags": {"session_id": "TAG-SESSION-SECRET", "order": "4012888888881882"},
        "extra": {
            "db": {"password": "EXTRA-PASSWORD-SECRET", "port": 5432},
            "key_file": PEM,
            "model": {"tokenizer_name": "bert-base-cased"},
            "contexts": {"app": {"csrf_token": "CSRF-CONTEXT-SECRET"}},
            "credentials": ["CREDENTIALS-SECRET"],
        },
        "request": {
            "method": "POST",
            "url": "https://app:URLPASSSECRET@shop.test/pay?api_key=QUERY-SECRET-77&page=2",
            "headers": {"Authorization": "Basic HEADER-AUTH-SECRET", "Cookie": "sid=COOKIE-SECRET-99",
                        "X-Forwarded-For": "203.0.113.9"},
        },
        "user": {"id": "user-7", "ip_address": "203.0.113.9"},
        "breadcrumbs": [{"message": "refund to DE89 3704 0044 0532 0130 00",
                         "data": {"auth": "CRUMB-AUTH-SECRET"}}],
    })
}

/// The same secrets in Sentry's event schema, with frame variables and
/// request body and cookies, which the collector does not keep at all.
fn sentry_event(marker: &str) -> Value {
    json!({
        "event_id": uuid::Uuid::new_v4().simple().to_string(),
        "platform": "python",
        "level": "error",
        "release": "shop@1.0.0",
        "message": format!("{marker}: charge 4012 8888 8888 1881 failed for order 4012888888881882"),
        "exception": {"values": [{"type": "GatewayError", "value": "upstream refused Bearer sk_live_BEARER0SECRET1",
            "stacktrace": {"frames": [{"filename": "shop/pay.py", "function": "pay", "lineno": 3, "in_app": true,
                "vars": {"password": "EXTRA-PASSWORD-SECRET"}}]}}]},
        "tags": {"session_id": "TAG-SESSION-SECRET", "order": "4012888888881882"},
        "extra": {
            "db": {"password": "EXTRA-PASSWORD-SECRET", "port": 5432},
            "key_file": PEM,
            "model": {"tokenizer_name": "bert-base-cased"},
            "credentials": ["CREDENTIALS-SECRET"],
        },
        "contexts": {"app": {"csrf_token": "CSRF-CONTEXT-SECRET"}},
        "request": {
            "method": "POST",
            "url": "https://app:URLPASSSECRET@shop.test/pay",
            "query_string": "api_key=QUERY-SECRET-77&page=2",
            "headers": {"Authorization": "Basic HEADER-AUTH-SECRET", "Cookie": "sid=COOKIE-SECRET-99",
                        "X-Forwarded-For": "203.0.113.9"},
            "cookies": {"sid": "COOKIE-SECRET-99"},
            "data": {"password": "EXTRA-PASSWORD-SECRET"},
        },
        "user": {"id": "user-7", "ip_address": "203.0.113.9"},
        "breadcrumbs": {"values": [{"message": "refund to DE89 3704 0044 0532 0130 00",
                                    "data": {"auth": "CRUMB-AUTH-SECRET"}}]},
    })
}

fn sentry_auth(t: &TestApp) -> String {
    format!("Sentry sentry_key={}, sentry_version=7", t.key)
}

/// Sends an event carrying every secret by `protocol`.
async fn send(t: &TestApp, protocol: &str, marker: &str) {
    let status = match protocol {
        "batch" => t.post_events(json!([native_event(marker)])).await.status,
        "custom" => {
            t.post_custom(json!({
                "service": "shop",
                "error_type": "GatewayError",
                "message": format!("{marker}: card 4012 8888 8888 1881 refused, order 4012888888881882, \
                                    Bearer sk_live_BEARER0SECRET1, refund to DE89 3704 0044 0532 0130 00"),
                "path": "/pay?api_key=QUERY-SECRET-77",
                "tags": {"session_id": "TAG-SESSION-SECRET"},
            }))
            .await
            .status
        }
        "store" => {
            let req = Request::post(format!("/api/{}/store/", t.project_id))
                .header("content-type", "application/json")
                .header("x-sentry-auth", sentry_auth(t))
                .body(Body::from(sentry_event(marker).to_string()))
                .unwrap();
            t.send(req).await.status
        }
        "envelope" => {
            let event = sentry_event(marker);
            let body = format!(
                "{}\n{}\n{event}\n",
                json!({"event_id": event["event_id"]}),
                json!({"type": "event"})
            );
            let req = Request::post(format!("/api/{}/envelope/", t.project_id))
                .header("content-type", "application/x-sentry-envelope")
                .header("x-sentry-auth", sentry_auth(t))
                .body(Body::from(body))
                .unwrap();
            t.send(req).await.status
        }
        other => unreachable!("{other}"),
    };
    assert!(status.is_success(), "{protocol}: {status}");
}

/// Everything the database holds of events and incidents, as text: the
/// stored documents, their message columns, incident titles and culprits,
/// and the counted tag values.
async fn stored_text(t: &TestApp) -> String {
    let mut all = Vec::new();
    for sql in [
        "SELECT data FROM errors",
        "SELECT message FROM errors",
        "SELECT title FROM error_groups",
        "SELECT COALESCE(culprit, '') FROM error_groups",
        "SELECT value FROM group_tag_counts",
    ] {
        all.extend(t.db.texts(sql).await);
    }
    all.join("\n")
}

fn assert_no_secret(text: &str, what: &str) {
    for (kind, secret) in SECRETS {
        assert!(
            !text.contains(secret),
            "{what}: {kind} ({secret}) leaked:\n{text}"
        );
    }
}

/// Every protocol's event is stored with none of its secrets, and with
/// the data that only looks secret.
async fn every_protocol_is_scrubbed_before_storing(t: TestApp) {
    for protocol in ["batch", "custom", "store", "envelope"] {
        send(&t, protocol, protocol).await;
    }
    let stored = stored_text(&t).await;
    assert_no_secret(&stored, "stored rows");
    assert_eq!(t.db.texts("SELECT data FROM errors").await.len(), 4);
    assert!(stored.contains("[Filtered]"));
    for (kind, kept) in KEPT {
        assert!(
            stored.contains(kept),
            "{kind} ({kept}) was removed:\n{stored}"
        );
    }
    // Each protocol's own event kept its non-secret parts.
    let docs = t.db.texts("SELECT data FROM errors").await;
    for doc in &docs {
        let doc: Value = serde_json::from_str(doc).unwrap();
        // The seed's body has no user, extra or headers.
        if doc["sdk"] == "legacy-custom-error" {
            continue;
        }
        assert_eq!(doc["user"]["id"], "user-7", "{doc}");
        assert_eq!(doc["extra"]["db"]["port"], 5432, "{doc}");
        assert_eq!(
            doc["extra"]["model"]["tokenizer_name"], "bert-base-cased",
            "{doc}"
        );
        assert_eq!(doc["tags"]["order"], "4012888888881882", "{doc}");
        assert_eq!(
            doc["request"]["headers"]["Authorization"], "[Filtered]",
            "{doc}"
        );
    }
}

/// `--scrub-ip` removes the addresses too, the user's id stays.
async fn scrub_ip_removes_addresses(t: TestApp) {
    let state = t.state.clone().with_scrub(Rules::new(true, true));
    let t = t.with_state(state);
    for protocol in ["batch", "envelope"] {
        send(&t, protocol, protocol).await;
    }
    let stored = stored_text(&t).await;
    assert_no_secret(&stored, "stored rows");
    assert!(!stored.contains("203.0.113.9"), "{stored}");
    assert!(stored.contains("user-7"), "{stored}");
}

/// `--scrub off` stores events as sent.
async fn scrub_off_stores_events_as_sent(t: TestApp) {
    let state = t.state.clone().with_scrub(Rules::off());
    let t = t.with_state(state);
    send(&t, "batch", "batch").await;
    let stored = stored_text(&t).await;
    assert!(stored.contains("EXTRA-PASSWORD-SECRET"), "{stored}");
    assert!(!stored.contains("[Filtered]"), "{stored}");
}

/// A project's own names are scrubbed from its events from the moment
/// they are set, and only from its events.
async fn project_fields_are_scrubbed_from_then_on(t: TestApp) {
    let path = format!("/api/v1/projects/{}/scrub-fields", t.project_id);
    let r = t.get(&path).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(
        r.body,
        json!({"fields": [], "scrubbing": true, "scrub_ip": false})
    );

    let event = |marker: &str| {
        let mut e = common::message_event(marker);
        e["extra"] = json!({"customer_ref": "CUST-4711", "plain": "kept"});
        e
    };
    // Read once, so that the rules without the name are cached.
    t.post_events(json!([event("before")])).await;
    let r = t
        .call(
            "PUT",
            &path,
            Some(json!({"fields": ["Customer-Ref", " customer-ref ", "x.y"]})),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.body["fields"], json!(["customer-ref", "x.y"]));
    assert_eq!(
        t.get(&path).await.body["fields"],
        json!(["customer-ref", "x.y"])
    );

    t.post_events(json!([event("after")])).await;
    let docs = t.db.texts("SELECT data FROM errors").await;
    let doc = |m: &str| -> Value {
        docs.iter()
            .map(|d| serde_json::from_str::<Value>(d).unwrap())
            .find(|d| d["message"] == m)
            .unwrap()
    };
    assert_eq!(doc("before")["extra"]["customer_ref"], "CUST-4711");
    assert_eq!(doc("after")["extra"]["customer_ref"], "[Filtered]");
    assert_eq!(doc("after")["extra"]["plain"], "kept");

    // Another project's events keep the field.
    let (other_key, _) = t.add_project("other").await;
    let req = Request::post("/api/v1/events")
        .header("content-type", "application/json")
        .header("x-errorflow-key", &other_key)
        .body(Body::from(json!({"events": [event("other")]}).to_string()))
        .unwrap();
    assert_eq!(t.send(req).await.status, StatusCode::OK);
    let docs = t.db.texts("SELECT data FROM errors").await;
    assert!(docs
        .iter()
        .any(|d| d.contains("CUST-4711") && d.contains("\"other\"")));

    // Cleared: the defaults only.
    let r = t.call("PUT", &path, Some(json!({"fields": []}))).await;
    assert_eq!(r.body["fields"], json!([]));
}

/// Bad names are refused with 422 naming the value, nothing is stored;
/// a missing project is 404.
async fn bad_scrub_fields_are_refused(t: TestApp) {
    let path = format!("/api/v1/projects/{}/scrub-fields", t.project_id);
    for (body, says) in [
        (json!({"fields": ["ok", "has space"]}), "has space"),
        (json!({"fields": [""]}), "1 to 64"),
        (json!({"fields": ["x".repeat(65)]}), "1 to 64"),
        (
            json!({"fields": (0..51).map(|i| format!("f{i}")).collect::<Vec<_>>()}),
            "at most 50",
        ),
    ] {
        let r = t.call("PUT", &path, Some(body)).await;
        assert_error(&r, StatusCode::UNPROCESSABLE_ENTITY, "invalid_field");
        assert!(
            r.body["error"]["message"].as_str().unwrap().contains(says),
            "{}",
            r.body
        );
    }
    let r = t.call("PUT", &path, Some(json!({"names": ["x"]}))).await;
    assert!(r.status.is_client_error(), "{}", r.body);
    let r = t.call("PUT", &path, None).await;
    assert_error(&r, StatusCode::UNPROCESSABLE_ENTITY, "invalid_field");
    assert_eq!(t.get(&path).await.body["fields"], json!([]));
    let r = t
        .call(
            "PUT",
            "/api/v1/projects/9999/scrub-fields",
            Some(json!({"fields": []})),
        )
        .await;
    assert_error(&r, StatusCode::NOT_FOUND, "not_found");
    assert_error(
        &t.get("/api/v1/projects/9999/scrub-fields").await,
        StatusCode::NOT_FOUND,
        "not_found",
    );
}

/// A local OpenAI-compatible server that records each request's body and
/// answers with a valid triage.
async fn model_server() -> (String, Arc<Mutex<Vec<Bytes>>>) {
    let seen: Arc<Mutex<Vec<Bytes>>> = Arc::default();
    let rec = seen.clone();
    let content = json!({"summary": "A gateway error.", "severity": "high", "priority": 70,
        "probable_cause": "The gateway refused.", "next_steps": ["check the gateway"],
        "confidence": 0.6})
    .to_string();
    let answer =
        json!({"choices": [{"index": 0, "message": {"role": "assistant", "content": content}}]});
    let app = Router::new().fallback(move |body: Bytes| {
        let rec = rec.clone();
        let answer = answer.clone();
        async move {
            rec.lock().unwrap().push(body);
            axum::Json(answer)
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (format!("http://{addr}"), seen)
}

/// What the model is sent about an incident of such events holds none of
/// their secrets.
async fn the_model_prompt_holds_no_secret(t: TestApp) {
    let (base, seen) = model_server().await;
    let options = TriageOptions {
        provider: triage::Provider::Openai,
        llm_base_url: Some(base),
        llm_model: Some("local-model".into()),
        llm_api_key: Some(triage::Secret::new("sk-test")),
        ..TriageOptions::default()
    };
    let analyst = options.analyst().unwrap();
    let service = Arc::new(Triage::new(t.state.store.clone(), analyst, options));
    let state = t.state.clone().with_triage(service);
    let t = t.with_state(state);
    for protocol in ["batch", "custom", "store", "envelope"] {
        send(&t, protocol, protocol).await;
    }
    let groups = t.get("/api/v1/groups?limit=50").await.body;
    let ids: Vec<i64> = groups["groups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g["id"].as_i64().unwrap())
        .collect();
    assert!(!ids.is_empty(), "{groups}");
    for id in &ids {
        let r = t
            .call("POST", &format!("/api/v1/groups/{id}/summarize"), None)
            .await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.body);
        assert_eq!(r.body["analyst"], "openai", "{}", r.body);
    }
    let prompts: Vec<String> = seen
        .lock()
        .unwrap()
        .iter()
        .map(|b| String::from_utf8_lossy(b).into_owned())
        .collect();
    assert_eq!(prompts.len(), ids.len());
    let all = prompts.join("\n");
    // The prompt does carry the events' text: the scrubbed message is in it.
    assert!(all.contains("[Filtered]"), "{all}");
    assert_no_secret(&all, "model prompt");
}

common::backend_tests!(
    setup => super::test_app;
    every_protocol_is_scrubbed_before_storing,
    scrub_ip_removes_addresses,
    scrub_off_stores_events_as_sent,
    project_fields_are_scrubbed_from_then_on,
    bad_scrub_fields_are_refused,
    the_model_prompt_holds_no_secret,
);
