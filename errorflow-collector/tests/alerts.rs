//! Webhook alerts through the real ingest path on both backends, against a
//! local server that records what a chat tool's incoming webhook would
//! receive (and can fail as one does).

mod common;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::http::StatusCode;
use axum::Router;
use errorflow_collector::alerts::{self, AlertOptions};
use errorflow_collector::outbound::AddressPolicy;
use errorflow_collector::triage::Secret;
use serde_json::{json, Value};

use common::{message_event as event, test_app, TestApp};

common::backend_tests!(
    setup => super::test_app;
    new_incidents_and_regressions_are_alerted_once,
    failed_deliveries_are_retried,
    alerts_over_the_cap_are_summed_up,
    a_projects_own_webhook_takes_its_alerts,
    without_a_collector_webhook_only_projects_with_one_alert,
    a_hanging_webhook_delays_no_other_projects_alerts,
    sentry_sdk_events_are_alerted_too,
);

/// What the webhook received, and how it answers: the first `failures`
/// requests get 500.
#[derive(Default)]
struct Hook {
    bodies: Vec<Value>,
    paths: Vec<String>,
    requests: usize,
    failures: usize,
}

async fn webhook(failures: usize) -> (String, Arc<Mutex<Hook>>) {
    let hook = Arc::new(Mutex::new(Hook {
        failures,
        ..Hook::default()
    }));
    let rec = hook.clone();
    let app = Router::new().fallback(move |uri: axum::http::Uri, body: axum::body::Bytes| {
        let rec = rec.clone();
        async move {
            let mut h = rec.lock().unwrap();
            h.requests += 1;
            if h.requests <= h.failures {
                return StatusCode::INTERNAL_SERVER_ERROR;
            }
            h.paths.push(uri.path().to_string());
            h.bodies.push(serde_json::from_slice(&body).unwrap());
            StatusCode::OK
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (format!("http://{addr}/hooks/T000/secret-token"), hook)
}

fn with_alerts(t: TestApp, url: &str, tune: impl FnOnce(&mut AlertOptions)) -> TestApp {
    with_collector_webhook(t, Some(url), tune)
}

fn with_collector_webhook(
    t: TestApp,
    url: Option<&str>,
    tune: impl FnOnce(&mut AlertOptions),
) -> TestApp {
    // The test's webhooks listen on 127.0.0.1, which webhooks may reach
    // only when the operator allows it.
    let policy = Arc::new(AddressPolicy::parse(&["127.0.0.1"]).unwrap());
    let mut options = AlertOptions::new(url.map(Secret::new), "https://errors.example.com/");
    options.min_backoff = Duration::from_millis(10);
    options.policy = policy.clone();
    tune(&mut options);
    let alerts = alerts::spawn(t.state.store.clone(), options).unwrap();
    let state = t
        .state
        .clone()
        .with_alerts(alerts)
        .with_webhook_policy(policy);
    t.with_state(state)
}

/// Waits until the webhook has `n` bodies and returns them.
async fn received(hook: &Mutex<Hook>, n: usize) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(15);
    while hook.lock().unwrap().bodies.len() < n {
        assert!(
            Instant::now() < deadline,
            "the webhook got {} of {n} alerts",
            hook.lock().unwrap().bodies.len()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    hook.lock().unwrap().bodies.clone()
}

/// Checks that the webhook gets nothing after its `n` bodies: a new
/// incident is sent through `key`'s project, and its alert must come next.
/// Each webhook's alerts are sent in order, so anything else (a duplicate)
/// would have come before it. Returns the `n` bodies.
async fn nothing_more(t: &TestApp, key: &str, hook: &Mutex<Hook>, n: usize) -> Vec<Value> {
    // A new incident each time (digits and hex would be parameterised away).
    let words = ["zero", "one", "two", "three", "four", "five", "six"];
    let sentinel = format!("sentinel after {}", words[n]);
    post_events_with(t, key, json!([event(&sentinel)])).await;
    let mut bodies = received(hook, n + 1).await;
    assert_eq!(bodies.len(), n + 1, "{bodies:#?}");
    let last = bodies.pop().unwrap();
    assert!(
        last["text"]
            .as_str()
            .unwrap_or_default()
            .contains(&sentinel),
        "expected the sentinel's alert after {n}, got {last:#}"
    );
    bodies
}

async fn new_incidents_and_regressions_are_alerted_once(t: TestApp) {
    let (url, hook) = webhook(0).await;
    let t = with_alerts(t, &url, |_| {});
    t.post_events(json!([event("disk full"), event("disk full")]))
        .await;
    // The same incident again: no news.
    t.post_events(json!([event("disk full")])).await;
    t.post_events(json!([event("cache cold")])).await;
    received(&hook, 2).await;
    let bodies = nothing_more(&t, &t.key, &hook, 2).await;
    assert_eq!(bodies.len(), 2, "{bodies:?}");
    let id = bodies[0]["incident"]["id"].as_i64().unwrap();
    let link = format!("https://errors.example.com/incidents/{id}");
    assert_eq!(bodies[0]["event"], "incident.new");
    assert_eq!(bodies[0]["incident"]["url"], link);
    assert_eq!(bodies[0]["incident"]["service"], "checkout");
    assert_eq!(bodies[0]["incident"]["environment"], "prod");
    let text = bodies[0]["text"].as_str().unwrap();
    assert!(
        text.starts_with("New incident in checkout, prod: ") && text.contains("disk full"),
        "{text}"
    );
    assert!(text.ends_with(&format!("<{link}>")), "{text}");
    assert_eq!(
        bodies[0]["content"], bodies[0]["text"],
        "Discord reads `content`"
    );
    assert_eq!(bodies[1]["event"], "incident.new");
    assert!(bodies[1]["text"].as_str().unwrap().contains("cache cold"));
    assert_eq!(hook.lock().unwrap().paths[0], "/hooks/T000/secret-token");

    // Resolved, then seen again: a regression.
    let r = t
        .post_api(&format!("/api/v1/groups/{id}/resolve"), json!({}))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    t.post_events(json!([event("disk full")])).await;
    received(&hook, 4).await;
    let bodies = nothing_more(&t, &t.key, &hook, 4).await;
    assert_eq!(bodies[3]["event"], "incident.regressed");
    assert_eq!(bodies[3]["incident"]["id"], id);
    assert_eq!(bodies[3]["incident"]["regression_count"], 1);
    assert!(bodies[3]["text"]
        .as_str()
        .unwrap()
        .starts_with("Regression in checkout"));
}

async fn failed_deliveries_are_retried(t: TestApp) {
    let (url, hook) = webhook(2).await;
    let t = with_alerts(t, &url, |_| {});
    t.post_events(json!([event("flaky webhook")])).await;
    received(&hook, 1).await;
    assert_eq!(hook.lock().unwrap().requests, 3, "two 500s, then delivered");
    let bodies = nothing_more(&t, &t.key, &hook, 1).await;
    assert!(bodies[0]["text"]
        .as_str()
        .unwrap()
        .contains("flaky webhook"));
}

async fn alerts_over_the_cap_are_summed_up(t: TestApp) {
    let (url, hook) = webhook(0).await;
    let t = with_alerts(t, &url, |o| {
        o.max_per_window = 2;
        o.window = Duration::from_millis(800);
    });
    // Five incidents: one per service (the same message in each).
    let burst: Vec<Value> = ["cart", "billing", "search", "auth", "mail"]
        .iter()
        .map(|service| {
            let mut e = event("deploy broke this");
            e["service"] = json!(service);
            e
        })
        .collect();
    t.post_events(Value::Array(burst)).await;
    // Two alerts at once, then one summary of the other three when the
    // window ends, though nothing else arrives.
    received(&hook, 3).await;
    // The window ended with the summary: the next alert goes at once.
    let bodies = nothing_more(&t, &t.key, &hook, 3).await;
    assert_eq!(bodies[0]["event"], "incident.new");
    assert_eq!(bodies[1]["event"], "incident.new");
    assert!(bodies[2]["event"].is_null());
    let summary = bodies[2]["text"].as_str().unwrap();
    assert!(
        summary.starts_with("3 more new incidents or regressions"),
        "{summary}"
    );
}

/// `POST /api/v1/events` with these events and another project's key.
async fn post_events_with(t: &TestApp, key: &str, events: Value) -> StatusCode {
    let req = axum::http::Request::post("/api/v1/events")
        .header("content-type", "application/json")
        .header("x-errorflow-key", key)
        .body(axum::body::Body::from(
            json!({ "events": events }).to_string(),
        ))
        .unwrap();
    let r = t.send(req).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    r.status
}

fn titles(bodies: &[Value]) -> Vec<String> {
    bodies
        .iter()
        .map(|b| {
            b["incident"]["title"]
                .as_str()
                .unwrap_or_default()
                .to_owned()
        })
        .collect()
}

async fn a_projects_own_webhook_takes_its_alerts(t: TestApp) {
    let (collector_url, collector_hook) = webhook(0).await;
    let (own_url, own_hook) = webhook(0).await;
    // Two alerts per window and webhook: each webhook has a window of its
    // own, so the two projects' three alerts are all sent at once (one
    // window for both would hold the third back, to a summary).
    let t = with_alerts(t, &collector_url, |o| {
        o.max_per_window = 2;
        o.window = Duration::from_secs(3600);
    });
    let (key2, project2) = t.add_project("billing").await;
    let r = t
        .call(
            "PUT",
            &format!("/api/v1/projects/{project2}/alert-webhook"),
            Some(json!({ "url": own_url })),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.body["collector_webhook"], true);
    let shown = r.body["webhook"].as_str().unwrap();
    assert!(
        shown.starts_with("http://127.0.0.1:") && shown.ends_with("/…"),
        "{shown}"
    );

    t.post_events(json!([event("disk full")])).await;
    post_events_with(&t, &key2, json!([event("card declined")])).await;
    let own = received(&own_hook, 1).await;
    let collector = received(&collector_hook, 1).await;
    assert_eq!(titles(&own), ["card declined"], "{own:?}");
    assert_eq!(titles(&collector), ["disk full"], "{collector:?}");

    // Removed: the project's alerts go to the collector's webhook again.
    let r = t
        .call(
            "DELETE",
            &format!("/api/v1/projects/{project2}/alert-webhook"),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    post_events_with(&t, &key2, json!([event("refund failed")])).await;
    let collector = received(&collector_hook, 2).await;
    assert_eq!(titles(&collector), ["disk full", "refund failed"]);
    assert_eq!(own_hook.lock().unwrap().bodies.len(), 1);
}

async fn without_a_collector_webhook_only_projects_with_one_alert(t: TestApp) {
    let (own_url, own_hook) = webhook(0).await;
    let t = with_collector_webhook(t, None, |_| {});
    let (key2, project2) = t.add_project("billing").await;
    let r = t
        .get(&format!("/api/v1/projects/{project2}/alert-webhook"))
        .await;
    assert_eq!(r.body, json!({"webhook": null, "collector_webhook": false}));
    t.state
        .store
        .set_project_alert_webhook(project2, Some(&own_url))
        .await
        .unwrap();
    // The first project has no webhook, and nor has the collector.
    t.post_events(json!([event("disk full")])).await;
    post_events_with(&t, &key2, json!([event("card declined")])).await;
    received(&own_hook, 1).await;
    let own = nothing_more(&t, &key2, &own_hook, 1).await;
    assert_eq!(titles(&own), ["card declined"], "{own:?}");
    assert_eq!(
        own_hook.lock().unwrap().paths[0],
        "/hooks/T000/secret-token"
    );
}

/// A webhook that takes every request and never answers.
async fn hanging_webhook() -> String {
    let app = Router::new().fallback(|| async {
        tokio::time::sleep(Duration::from_secs(3600)).await;
        StatusCode::OK
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    format!("http://{addr}/hooks/hangs")
}

async fn a_hanging_webhook_delays_no_other_projects_alerts(t: TestApp) {
    let (collector_url, collector_hook) = webhook(0).await;
    let t = with_alerts(t, &collector_url, |o| {
        // Each alert to the hanging webhook holds its sender for a minute.
        o.timeout = Duration::from_secs(60);
        o.retries = 0;
    });
    let (key2, project2) = t.add_project("billing").await;
    t.state
        .store
        .set_project_alert_webhook(project2, Some(&hanging_webhook().await))
        .await
        .unwrap();
    post_events_with(&t, &key2, json!([event("card declined")])).await;
    post_events_with(&t, &key2, json!([event("refund failed")])).await;
    t.post_events(json!([event("disk full")])).await;
    // `received` gives up after 15 s, far less than the hanging sender's minute.
    received(&collector_hook, 1).await;
    let bodies = nothing_more(&t, &t.key, &collector_hook, 1).await;
    assert_eq!(titles(&bodies), ["disk full"]);
}

/// Events from Sentry SDKs go through the same ingest as ours, alerts included.
async fn sentry_sdk_events_are_alerted_too(t: TestApp) {
    let (url, hook) = webhook(0).await;
    let t = with_alerts(t, &url, |_| {});
    let req = axum::http::Request::post(format!("/api/{}/store/", t.project_id))
        .header("content-type", "application/json")
        .header(
            "x-sentry-auth",
            format!("Sentry sentry_version=7, sentry_key={}", t.key),
        )
        .body(axum::body::Body::from(
            json!({"message": "queue stalled", "level": "error", "platform": "python"}).to_string(),
        ))
        .unwrap();
    let r = t.send(req).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    received(&hook, 1).await;
    let bodies = nothing_more(&t, &t.key, &hook, 1).await;
    assert_eq!(bodies[0]["event"], "incident.new");
    assert!(
        bodies[0]["text"]
            .as_str()
            .unwrap()
            .contains("queue stalled"),
        "{bodies:?}"
    );
}

/// The value of a Prometheus series on `/metrics` (0 when absent).
async fn metric(t: &TestApp, series: &str) -> f64 {
    let r = t
        .send(
            axum::http::Request::get("/metrics")
                .body(axum::body::Body::empty())
                .unwrap(),
        )
        .await;
    let text = r.body.as_str().unwrap_or_default().to_string();
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
        .unwrap_or(0.0)
}

/// The README: alerts are queued (1,024), beyond that dropped and counted in
/// `errorflow_alerts_total{result="dropped"}`, and ingest never waits. On a
/// single-threaded runtime the sending task cannot take any of the news
/// while one `offer` runs, so exactly the news beyond 1,024 is dropped.
#[tokio::test(flavor = "current_thread")]
async fn a_full_alert_queue_drops_and_counts() {
    let t = test_app(common::sqlite_store().await).await;
    let alerts = alerts::spawn(
        t.state.store.clone(),
        AlertOptions::new(None, "https://errors.example.com/"),
    )
    .unwrap();
    let series = "errorflow_alerts_total{result=\"dropped\"}";
    let before = metric(&t, series).await;
    let news: Vec<errorflow_collector::model::InsertOutcome> = (1..=1100)
        .map(|id| errorflow_collector::model::InsertOutcome::Stored {
            group_id: id,
            new_group: true,
            regression: false,
        })
        .collect();
    alerts.offer(t.project_id, &news);
    assert_eq!(metric(&t, series).await - before, 76.0);
}

/// Delivered alerts are counted in `errorflow_alerts_total{result="sent"}`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sent_alerts_are_counted() {
    let t = test_app(common::sqlite_store().await).await;
    let (url, hook) = webhook(0).await;
    let t = with_alerts(t, &url, |_| {});
    let series = "errorflow_alerts_total{result=\"sent\"}";
    let before = metric(&t, series).await;
    t.post_events(json!([event("count this alert")])).await;
    received(&hook, 1).await;
    // The count follows the delivery: wait for it, not for a time.
    let deadline = Instant::now() + Duration::from_secs(15);
    while metric(&t, series).await < before + 1.0 {
        assert!(Instant::now() < deadline, "the sent alert was not counted");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
