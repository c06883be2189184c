//! The triage endpoints through the real HTTP stack on both backends (every
//! test runs twice, by name: `sqlite::…` and `postgres::…`), plus the
//! ingest → trigger → Kestra path against a local server that speaks
//! Kestra's execution API, and the LLM fallback against a local
//! OpenAI-compatible server.

mod common;

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use errorflow_collector::model::{InsertOutcome, Transition};
use errorflow_collector::triage::result::{NewTriage, Severity, TriageResult};
use errorflow_collector::triage::{self, kestra, Reason, Triage, TriageOptions, Triggers};
use serde_json::{json, Value};

use common::{test_app, TestApp};

impl TestApp {
    async fn group_id(&self, message: &str) -> i64 {
        let r = self.post_events(json!([prod_error(message)])).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.body);
        let groups = self
            .call("GET", "/api/v1/groups?limit=200", None)
            .await
            .body;
        groups["groups"]
            .as_array()
            .unwrap()
            .iter()
            .find(|g| g["title"].as_str().unwrap_or("").contains(message))
            .unwrap_or_else(|| panic!("no group titled {message}: {groups}"))["id"]
            .as_i64()
            .unwrap()
    }
}

fn prod_error(value: &str) -> Value {
    json!({
        "event_id": uuid::Uuid::new_v4(),
        "level": "error",
        "platform": "rust",
        "service": "checkout",
        "environment": "prod",
        "release": "1.0.0",
        "exception": [{
            "type": "DatabaseError",
            "value": value,
            "stacktrace": {"frames": [
                {"function": "app::main", "in_app": true, "lineno": 10},
                {"function": format!("app::db::{}", value.replace(' ', "_")), "in_app": true, "lineno": 42,
                 "context_line": "let conn = pool.get().await?;"},
            ]}
        }],
        "breadcrumbs": [{"category": "sql", "level": "info", "message": "SELECT 1"}],
        "user": {"id": "u1"}
    })
}

fn result(priority: i64, severity: &str) -> Value {
    json!({"summary": "The database refuses connections.", "severity": severity, "priority": priority,
           "probable_cause": "pool exhausted", "next_steps": ["check the pool"], "confidence": 0.7})
}

async fn summarize_stores_the_result_on_the_incident_and_in_history(t: TestApp) {
    let id = t.group_id("connection refused").await;
    let r = t
        .call("POST", &format!("/api/v1/groups/{id}/summarize"), None)
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.body["group_id"], id);
    assert_eq!(r.body["analyst"], "builtin");
    assert_eq!(r.body["model"], "builtin-rules");
    assert_eq!(r.body["trigger"], "manual");
    assert!(r.body["prompt_version"].as_str().is_some());
    let severity = r.body["severity"].as_str().unwrap().to_string();
    let priority = r.body["priority"].as_i64().unwrap();
    assert!(
        priority >= 40,
        "a prod database error ranks high: {}",
        r.body
    );
    let g = t
        .call("GET", &format!("/api/v1/groups/{id}"), None)
        .await
        .body;
    assert_eq!(g["severity"], severity.as_str());
    assert_eq!(g["priority"], priority);
    assert_eq!(g["ai_summary"], r.body["summary"]);
    let steps: Vec<String> = serde_json::from_str(g["ai_next_steps"].as_str().unwrap()).unwrap();
    assert_eq!(json!(steps), r.body["next_steps"]);

    t.call(
        "PUT",
        &format!("/api/v1/groups/{id}/triage"),
        Some(result(91, "critical")),
    )
    .await;
    let h = t
        .call("GET", &format!("/api/v1/groups/{id}/triage"), None)
        .await;
    assert_eq!(h.status, StatusCode::OK);
    let h = h.body.as_array().unwrap().clone();
    assert_eq!(h.len(), 2, "earlier results are kept");
    assert_eq!(h[0]["priority"], 91, "newest first");
    assert_eq!(h[1]["analyst"], "builtin");

    assert_eq!(
        t.call("POST", "/api/v1/groups/999999/summarize", None)
            .await
            .status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        t.call("GET", "/api/v1/groups/999999/triage", None)
            .await
            .status,
        StatusCode::NOT_FOUND
    );
    let anon = t
        .send(
            Request::post(format!("/api/v1/groups/{id}/summarize"))
                .body(Body::empty())
                .unwrap(),
        )
        .await;
    assert_eq!(anon.status, StatusCode::UNAUTHORIZED);
}

async fn the_seed_summarize_path_finds_the_incident_by_cluster_key(t: TestApp) {
    let r = t
        .post_custom(json!({"service": "payment-api", "error_type": "Timeout", "message": "upstream timed out", "env": "prod"}))
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    let id = r.body["group_id"].as_i64().unwrap();
    let s = t
        .call("POST", "/groups/payment-api:Timeout/summarize", None)
        .await;
    assert_eq!(s.status, StatusCode::OK, "{}", s.body);
    assert_eq!(s.body["group_id"], id);
    assert!(
        s.body["probable_cause"]
            .as_str()
            .unwrap()
            .contains("deadline"),
        "{}",
        s.body
    );
    assert_eq!(
        t.call("POST", "/groups/nope:Nope/summarize", None)
            .await
            .status,
        StatusCode::NOT_FOUND
    );
    let anon = t
        .send(
            Request::post("/groups/payment-api:Timeout/summarize")
                .body(Body::empty())
                .unwrap(),
        )
        .await;
    assert_eq!(
        anon.status,
        StatusCode::UNAUTHORIZED,
        "the seed path needs a token too"
    );
}

async fn the_digest_is_served_by_id_and_by_cluster_key(t: TestApp) {
    let id = t.group_id("deadlock detected").await;
    let d = t
        .call("GET", &format!("/api/v1/groups/{id}/digest"), None)
        .await;
    assert_eq!(d.status, StatusCode::OK, "{}", d.body);
    assert_eq!(d.body["group_id"], id);
    assert_eq!(d.body["counts"]["total"], 1);
    assert_eq!(d.body["trend"], "new");
    assert_eq!(
        d.body["exceptions"][0]["frames"][0]["context"][0],
        "let conn = pool.get().await?;"
    );
    assert_eq!(d.body["breadcrumbs"][0]["message"], "SELECT 1");
    assert_eq!(d.body["affected"]["user_count"], 1);
    let key = d.body["cluster_key"].as_str().unwrap().to_string();
    let by_key = t
        .call(
            "GET",
            &format!("/api/v1/triage/digest?cluster_key={key}&id="),
            None,
        )
        .await;
    assert_eq!(by_key.status, StatusCode::OK, "{}", by_key.body);
    assert_eq!(by_key.body["group_id"], id);
    let by_id = t
        .call(
            "GET",
            &format!("/api/v1/triage/digest?id={id}&cluster_key="),
            None,
        )
        .await;
    assert_eq!(by_id.body["group_id"], id);
    assert_eq!(
        t.call("GET", "/api/v1/triage/digest?id=abc", None)
            .await
            .status,
        StatusCode::BAD_REQUEST
    );
    assert_eq!(
        t.call("GET", "/api/v1/triage/digest", None).await.status,
        StatusCode::BAD_REQUEST
    );
    assert_eq!(
        t.call("GET", "/api/v1/groups/999999/digest", None)
            .await
            .status,
        StatusCode::NOT_FOUND
    );
}

async fn external_results_are_validated(t: TestApp) {
    let id = t.group_id("too many connections").await;
    let path = format!("/api/v1/groups/{id}/triage?analyst=kestra&model=gemini-2.5-flash");
    let ok = t.call("PUT", &path, Some(result(88, "critical"))).await;
    assert_eq!(ok.status, StatusCode::OK, "{}", ok.body);
    assert_eq!(ok.body["analyst"], "kestra");
    assert_eq!(ok.body["model"], "gemini-2.5-flash");
    assert_eq!(ok.body["trigger"], "external");
    let g = t
        .call("GET", &format!("/api/v1/groups/{id}"), None)
        .await
        .body;
    assert_eq!(g["severity"], "critical");
    assert_eq!(g["priority"], 88);
    let mut bad = result(200, "critical");
    assert_eq!(
        t.call("PUT", &path, Some(bad.clone())).await.status,
        StatusCode::UNPROCESSABLE_ENTITY
    );
    bad = result(50, "catastrophic");
    assert_eq!(
        t.call("PUT", &path, Some(bad)).await.status,
        StatusCode::UNPROCESSABLE_ENTITY
    );
    let mut extra = result(50, "low");
    extra["action"] = json!("delete the incident");
    assert_eq!(
        t.call("PUT", &path, Some(extra)).await.status,
        StatusCode::UNPROCESSABLE_ENTITY
    );
    assert_eq!(
        t.call(
            "PUT",
            "/api/v1/groups/999999/triage",
            Some(result(50, "low"))
        )
        .await
        .status,
        StatusCode::NOT_FOUND
    );
    let g = t
        .call("GET", &format!("/api/v1/groups/{id}"), None)
        .await
        .body;
    assert_eq!(g["priority"], 88, "rejected results change nothing");
}

async fn stale_lists_untriaged_incidents_only(t: TestApp) {
    let a = t.group_id("stale a").await;
    let b = t.group_id("stale b").await;
    t.call("POST", &format!("/api/v1/groups/{a}/summarize"), None)
        .await;
    let r = t.call("GET", "/api/v1/triage/stale?limit=50", None).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let ids: Vec<i64> = r.body["groups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g["id"].as_i64().unwrap())
        .collect();
    assert!(ids.contains(&b), "{ids:?}");
    assert!(!ids.contains(&a), "just triaged: {ids:?}");
    assert!(r.body["groups"][0]["cluster_key"].as_str().is_some());
    assert_eq!(
        t.call("GET", "/api/v1/triage/stale?limit=0", None)
            .await
            .status,
        StatusCode::BAD_REQUEST
    );
}

async fn the_attention_view_lists_high_priority_open_incidents(t: TestApp) {
    let hot = t.group_id("attention hot").await;
    let cold = t.group_id("attention cold").await;
    let resolved = t.group_id("attention resolved").await;
    for (id, p) in [(hot, 90), (cold, 10), (resolved, 95)] {
        let r = t
            .call(
                "PUT",
                &format!("/api/v1/groups/{id}/triage"),
                Some(result(p, "high")),
            )
            .await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    }
    t.call("POST", &format!("/api/v1/groups/{resolved}/resolve"), None)
        .await;
    let r = t.call("GET", "/api/v1/groups?view=attention", None).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let ids: Vec<i64> = r.body["groups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g["id"].as_i64().unwrap())
        .collect();
    assert_eq!(ids, vec![hot], "{}", r.body);
    assert_eq!(
        t.call("GET", "/api/v1/groups?view=hot", None).await.status,
        StatusCode::BAD_REQUEST
    );
}

async fn maintenance_quiet_runs_the_quiet_check(t: TestApp) {
    t.group_id("quiet me").await;
    let r = t.call("POST", "/api/v1/maintenance/quiet", None).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.body["quieted"], 0, "not idle for 30 minutes yet");
    let state = t.state.clone().with_quiet_after(Duration::ZERO);
    let t = t.with_state(state);
    // Idle for zero time means seen strictly before now: wait for the clock
    // to pass the incident's last event, not for a fixed time.
    let last_seen: chrono::DateTime<chrono::Utc> = serde_json::from_value(
        t.call("GET", "/api/v1/groups", None).await.body["groups"][0]["last_seen"].clone(),
    )
    .unwrap();
    while chrono::Utc::now() <= last_seen {
        tokio::task::yield_now().await;
    }
    let r = t.call("POST", "/api/v1/maintenance/quiet", None).await;
    assert_eq!(r.body["quieted"], 1, "{}", r.body);
    let g = &t.call("GET", "/api/v1/groups", None).await.body["groups"][0];
    assert_eq!(g["status"], "quiet");
}

async fn ingest_offers_triggers_without_waiting(t: TestApp) {
    let (triggers, mut rx) = Triggers::channel(1);
    let t = {
        let state = t.state.clone().with_triggers(triggers);
        t.with_state(state)
    };
    let r = t.post_events(json!([prod_error("trigger one")])).await;
    assert_eq!(r.status, StatusCode::OK);
    let (id, reason) = rx.try_recv().expect("a new incident is offered");
    assert_eq!(reason, Reason::New);
    // The channel is now full (nobody reads it, ever): ingest still
    // succeeds. Were it to wait for room, it would wait forever.
    t.post_events(json!([prod_error("trigger two")])).await;
    let r = tokio::time::timeout(
        Duration::from_secs(60),
        t.post_events(json!([prod_error("trigger three")])),
    )
    .await
    .expect("ingest waited for the full trigger channel");
    assert_eq!(r.status, StatusCode::OK);
    assert!(id > 0);
}

fn new_triage(group_id: i64, priority: i32, at: chrono::DateTime<chrono::Utc>) -> NewTriage {
    NewTriage {
        group_id,
        result: TriageResult {
            summary: "s".into(),
            severity: Severity::Low,
            priority,
            probable_cause: "c".into(),
            next_steps: vec!["n".into()],
            confidence: 0.5,
        },
        analyst: "builtin".into(),
        model: "builtin-rules".into(),
        prompt_version: "triage-v1".into(),
        signals: Vec::new(),
        fallback_reason: None,
        trigger: "manual".into(),
        trend: Some("steady".into()),
        created_at: at,
    }
}

/// The storage semantics behind the batch and the attention view, at fixed times.
async fn stale_and_attention_follow_events_and_regressions(t: TestApp) {
    use common::{at, event};
    let store = t.state.store.clone();
    let project = store.list_projects().await.unwrap()[0].id;
    let outcomes = store
        .insert_events(&[
            event(project, "a", at(10, 0)),
            event(project, "b", at(10, 0)),
        ])
        .await
        .unwrap();
    let ids: Vec<i64> = outcomes
        .iter()
        .map(|o| match o {
            InsertOutcome::Stored { group_id, .. } => *group_id,
            other => unreachable!("{other:?}"),
        })
        .collect();
    let (a, b) = (ids[0], ids[1]);
    assert_eq!(
        store.stale_triage(at(9, 0), 10).await.unwrap(),
        vec![a, b],
        "never triaged"
    );
    for id in [a, b] {
        let saved = store
            .save_triage(&new_triage(id, 10, at(11, 0)))
            .await
            .unwrap();
        assert_eq!(saved.unwrap().group_id, id);
    }
    assert!(store
        .save_triage(&new_triage(999_999, 10, at(11, 0)))
        .await
        .unwrap()
        .is_none());
    // Only `a` sees an event after its triage.
    store
        .insert_events(&[event(project, "a", at(12, 0))])
        .await
        .unwrap();
    assert_eq!(store.stale_triage(at(13, 0), 10).await.unwrap(), vec![a]);
    assert!(
        store.stale_triage(at(10, 30), 10).await.unwrap().is_empty(),
        "triaged recently"
    );

    // A regression puts a low-priority incident on the attention list.
    assert!(store
        .attention_groups(None, 70, at(0, 0), 10)
        .await
        .unwrap()
        .is_empty());
    store
        .transition(
            b,
            &Transition::Resolve {
                reason: None,
                in_next_release: false,
            },
            "test",
            at(12, 30),
        )
        .await
        .unwrap();
    let out = store
        .insert_events(&[event(project, "b", at(13, 0))])
        .await
        .unwrap();
    assert!(matches!(
        out[0],
        InsertOutcome::Stored {
            regression: true,
            ..
        }
    ));
    let attention: Vec<i64> = store
        .attention_groups(Some(project), 70, at(0, 0), 10)
        .await
        .unwrap()
        .iter()
        .map(|g| g.id)
        .collect();
    assert_eq!(attention, vec![b]);
    assert!(store
        .attention_groups(Some(project + 1), 70, at(0, 0), 10)
        .await
        .unwrap()
        .is_empty());

    store
        .record_kestra_execution(
            "error-intake",
            Some(a),
            "exec-1",
            Some("CREATED"),
            at(13, 0),
        )
        .await
        .unwrap();
    store
        .record_kestra_execution("group-ai-batch", None, "exec-2", None, at(13, 0))
        .await
        .unwrap();
    let history = store.triage_history(a, 10).await.unwrap();
    assert_eq!(history.len(), 1);
    assert_eq!(history[0].created_at, at(11, 0));
    assert_eq!(history[0].result.next_steps, vec!["n".to_string()]);
}

/// The periodic batch finds incidents whose last hour is far above their own baseline.
async fn spiking_incidents_are_found_for_the_batch(t: TestApp) {
    use chrono::{Duration as ChronoDuration, Utc};
    let store = t.state.store.clone();
    let project = store.list_projects().await.unwrap()[0].id;
    let now = Utc::now();
    let mut events = vec![common::event(
        project,
        "old-then-hot",
        now - ChronoDuration::hours(30),
    )];
    events.extend((0..12).map(|_| common::event(project, "old-then-hot", now)));
    events.push(common::event(
        project,
        "old-and-calm",
        now - ChronoDuration::hours(30),
    ));
    events.push(common::event(project, "old-and-calm", now));
    events.push(common::event(project, "brand-new", now));
    let outcomes = store.insert_events(&events).await.unwrap();
    let hot = match outcomes[0] {
        InsertOutcome::Stored { group_id, .. } => group_id,
        other => unreachable!("{other:?}"),
    };
    // Asked at the moment the events were stored: the check does not
    // depend on whether a clock hour ends meanwhile.
    let spiking = t.state.triage.spiking_at(50, now).await.unwrap();
    assert_eq!(spiking, vec![hot]);
    // The batch's list of stale incidents holds every untriaged open one.
    assert_eq!(t.state.triage.stale(50).await.unwrap().len(), 3);
}

common::backend_tests!(
    setup => super::test_app;
    summarize_stores_the_result_on_the_incident_and_in_history,
    the_seed_summarize_path_finds_the_incident_by_cluster_key,
    the_digest_is_served_by_id_and_by_cluster_key,
    external_results_are_validated,
    stale_lists_untriaged_incidents_only,
    the_attention_view_lists_high_priority_open_incidents,
    maintenance_quiet_runs_the_quiet_check,
    ingest_offers_triggers_without_waiting,
    stale_and_attention_follow_events_and_regressions,
    malformed_model_output_falls_back_to_the_builtin_analyst,
    automatic_triage_is_debounced_except_for_regressions,
    spiking_incidents_are_found_for_the_batch,
    results_carry_their_signals_and_summaries_no_counts,
    hand_set_priority_survives_retriage_and_is_in_the_activity,
    a_changed_picture_asks_for_a_new_triage,
);

/// The explanation is stored with the result and served; the summary
/// written at the first event makes no claim about counts that the 20th
/// event would make false, and the live count is beside it.
async fn results_carry_their_signals_and_summaries_no_counts(t: TestApp) {
    let id = t.group_id("balance mismatch for account").await;
    let r = t
        .call("POST", &format!("/api/v1/groups/{id}/summarize"), None)
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let explanation = r.body["explanation"].as_str().unwrap().to_string();
    assert!(
        explanation.starts_with("prod · data integrity: "),
        "{explanation}"
    );
    assert!(explanation.contains("new in 1.0.0"), "{explanation}");
    let signals = r.body["signals"].as_array().unwrap();
    let sum: i64 = signals.iter().map(|s| s["points"].as_i64().unwrap()).sum();
    assert_eq!(sum, r.body["priority"].as_i64().unwrap(), "{signals:?}");
    assert_eq!(r.body["severity"], "critical", "{}", r.body);
    for _ in 0..19 {
        let e = t
            .post_events(json!([prod_error("balance mismatch for account")]))
            .await;
        assert_eq!(e.status, StatusCode::OK, "{}", e.body);
    }
    let detail = t.call("GET", &format!("/api/v1/groups/{id}"), None).await;
    assert_eq!(detail.body["count"], 20, "{}", detail.body);
    let summary = detail.body["triage"]["summary"].as_str().unwrap();
    assert!(!summary.contains("1 event"), "{summary}");
    assert!(!summary.contains(" events"), "{summary}");
    assert!(summary.contains("checkout (prod)"), "{summary}");
    assert_eq!(detail.body["triage"]["explanation"], explanation.as_str());
    let history = t
        .call("GET", &format!("/api/v1/groups/{id}/triage"), None)
        .await;
    assert_eq!(history.body[0]["explanation"], explanation.as_str());
    assert_eq!(
        history.body[0]["signals"].as_array().unwrap().len(),
        signals.len()
    );
    // The digest carries the same assessment for every analyst.
    let digest = t
        .call("GET", &format!("/api/v1/groups/{id}/digest"), None)
        .await;
    assert_eq!(
        digest.body["assessment"]["class"], "data_integrity",
        "{}",
        digest.body
    );
    assert!(digest.body["assessment"]["evidence"]
        .as_str()
        .unwrap()
        .contains("balance mismatch"));
}

async fn hand_set_priority_survives_retriage_and_is_in_the_activity(t: TestApp) {
    let id = t.group_id("connection refused").await;
    let path = format!("/api/v1/groups/{id}/priority");
    let put = |body: Value| {
        let t = &t;
        let path = path.clone();
        async move {
            t.send(
                Request::put(path.as_str())
                    .header("authorization", format!("Bearer {}", t.token))
                    .header("content-type", "application/json")
                    .body(Body::from(body.to_string()))
                    .unwrap(),
            )
            .await
        }
    };
    let r = put(json!({"priority": 7, "severity": "low"})).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.body["priority"], 7);
    assert_eq!(r.body["severity"], "low");
    assert_eq!(r.body["priority_override"], 7);
    // Re-triage keeps the hand-set values; the result itself is still stored.
    let s = t
        .call("POST", &format!("/api/v1/groups/{id}/summarize"), None)
        .await;
    assert_eq!(s.status, StatusCode::OK, "{}", s.body);
    assert!(s.body["priority"].as_i64().unwrap() > 7);
    let g = t.call("GET", &format!("/api/v1/groups/{id}"), None).await;
    assert_eq!(g.body["priority"], 7, "{}", g.body);
    assert_eq!(g.body["severity"], "low");
    let activity = g.body["activity"].as_array().unwrap();
    let set = activity
        .iter()
        .find(|a| a["kind"] == "priority_set")
        .unwrap_or_else(|| panic!("{activity:?}"));
    assert!(
        set["reason"].as_str().unwrap().contains("priority 7"),
        "{set}"
    );
    assert!(!set["actor"].as_str().unwrap().is_empty());
    // Bad input is refused with a JSON error and changes nothing.
    let bad = put(json!({"priority": 101})).await;
    common::assert_error(&bad, StatusCode::UNPROCESSABLE_ENTITY, "invalid_field");
    let bad = put(json!({"severity": "apocalyptic"})).await;
    assert!(bad.status.is_client_error(), "{}", bad.body);
    assert!(bad.body["error"]["message"].is_string(), "{}", bad.body);
    let missing = put(json!({"priority": 5})).await;
    assert_eq!(missing.status, StatusCode::OK);
    let none = t
        .send(
            Request::put("/api/v1/groups/999999/priority")
                .header("authorization", format!("Bearer {}", t.token))
                .header("content-type", "application/json")
                .body(Body::from(json!({"priority": 5}).to_string()))
                .unwrap(),
        )
        .await;
    common::assert_error(&none, StatusCode::NOT_FOUND, "not_found");
    let anon = t
        .send(
            Request::put(path.as_str())
                .header("content-type", "application/json")
                .body(Body::from(json!({"priority": 5}).to_string()))
                .unwrap(),
        )
        .await;
    assert_eq!(anon.status, StatusCode::UNAUTHORIZED);
    // Clearing gives both back to the latest triage.
    let r = put(json!({"priority": null, "severity": null})).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.body["priority"], s.body["priority"]);
    assert_eq!(r.body["severity"], s.body["severity"]);
    assert!(r.body["priority_override"].is_null());
}

async fn a_changed_picture_asks_for_a_new_triage(t: TestApp) {
    let id = t.group_id("connection refused").await;
    let triage = Triage::builtin(t.state.store.clone());
    triage.run(id, Reason::Manual).await.unwrap().unwrap();
    assert!(triage.changed(50).await.unwrap().is_empty());
    // A few more events of the same picture: no new triage.
    for _ in 0..3 {
        t.post_events(json!([prod_error("connection refused")]))
            .await;
    }
    assert!(triage.changed(50).await.unwrap().is_empty());
    // A new release is a new picture.
    let mut e = prod_error("connection refused");
    e["release"] = json!("1.0.1");
    t.post_events(json!([e])).await;
    assert_eq!(triage.changed(50).await.unwrap(), vec![id]);
    triage.run(id, Reason::Changed).await.unwrap().unwrap();
    assert!(triage.changed(50).await.unwrap().is_empty());
    // A new environment too.
    let mut e = prod_error("connection refused");
    e["environment"] = json!("staging");
    t.post_events(json!([e])).await;
    assert_eq!(triage.changed(50).await.unwrap(), vec![id]);
    triage.run(id, Reason::Changed).await.unwrap().unwrap();
    // Ten times the events since the last triage.
    let count = t.state.store.get_group(id).await.unwrap().unwrap().count;
    let batch: Vec<Value> = (0..(9 * count))
        .map(|_| prod_error("connection refused"))
        .collect();
    t.post_events(json!(batch)).await;
    assert_eq!(triage.changed(50).await.unwrap(), vec![id]);
}

/// New incidents start `error-intake` and summarize starts
/// `group-summary-agent`, in Kestra's multipart wire format.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_kestra_flows_are_started_for_new_incidents_and_summaries() {
    let (base, seen) =
        common::recording_server(json!({"id": "exec-1", "state": {"current": "CREATED"}})).await;
    let t = test_app(common::sqlite_store().await).await;
    let store = t.state.store.clone();
    let mut k = kestra::KestraOptions::new(&base);
    k.username = Some("kestra".into());
    k.password = Some(triage::Secret::new("pw"));
    let handle = kestra::spawn(kestra::KestraClient::new(k).unwrap(), store.clone());
    let service = Arc::new(Triage::builtin(store).with_kestra(handle));
    let triggers = triage::spawn(service.clone(), 16, None);
    let state = t.state.clone().with_triage(service).with_triggers(triggers);
    let t = t.with_state(state);

    let id = t.group_id("kestra please").await;
    let r = t
        .call("POST", &format!("/api/v1/groups/{id}/summarize"), None)
        .await;
    assert_eq!(r.status, StatusCode::OK);
    let mut paths = Vec::new();
    for _ in 0..100 {
        paths = seen
            .lock()
            .unwrap()
            .iter()
            .map(|(p, _, _)| p.clone())
            .collect::<Vec<_>>();
        if paths.len() >= 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        paths.contains(&"/api/v1/main/executions/main/error-intake".to_string()),
        "{paths:?}"
    );
    assert!(
        paths.contains(&"/api/v1/main/executions/main/group-summary-agent".to_string()),
        "{paths:?}"
    );
    let requests = seen.lock().unwrap().clone();
    let (_, headers, body) = requests
        .iter()
        .find(|(p, _, _)| p.ends_with("error-intake"))
        .unwrap();
    assert!(headers["content-type"]
        .to_str()
        .unwrap()
        .starts_with("multipart/form-data"));
    let body = String::from_utf8_lossy(body);
    assert!(body.contains("name=\"error_event\""), "{body}");
    assert!(body.contains("\"error_type\":\"DatabaseError\""), "{body}");
    // The automatic triage of the new incident ran too.
    let mut triaged = 0;
    for _ in 0..100 {
        triaged = t
            .call("GET", &format!("/api/v1/groups/{id}/triage"), None)
            .await
            .body
            .as_array()
            .map_or(0, Vec::len);
        if triaged >= 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(triaged, 2, "the automatic and the manual triage");
    // The execution ids Kestra answered are recorded.
    use sqlx::Connection;
    let mut conn = sqlx::SqliteConnection::connect(&t.db.url).await.unwrap();
    let mut recorded = 0i64;
    for _ in 0..100 {
        recorded = sqlx::query_scalar(
            "SELECT COUNT(*) FROM kestra_executions WHERE execution_id = 'exec-1' AND group_id = ?",
        )
        .bind(id)
        .fetch_one(&mut conn)
        .await
        .unwrap();
        if recorded >= 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(recorded, 2, "error-intake and group-summary-agent");
}

/// An LLM answering outside the schema: the built-in analyst answers and
/// the stored result says why.
async fn malformed_model_output_falls_back_to_the_builtin_analyst(t: TestApp) {
    let (base, seen) = common::recording_server(
        json!({"choices": [{"index": 0, "message": {"role": "assistant",
        "content": "{\"summary\": \"ignore the schema\", \"severity\": \"apocalyptic\"}"}}]}),
    )
    .await;
    let options = TriageOptions {
        provider: triage::Provider::Openai,
        llm_base_url: Some(base),
        llm_model: Some("local-model".into()),
        llm_api_key: Some(triage::Secret::new("sk-test")),
        ..TriageOptions::default()
    };
    let analyst = options.analyst().unwrap();
    let service = Arc::new(Triage::new(t.state.store.clone(), analyst, options));
    let t = {
        let state = t.state.clone().with_triage(service);
        t.with_state(state)
    };
    let id = t.group_id("model says nonsense").await;
    let r = t
        .call("POST", &format!("/api/v1/groups/{id}/summarize"), None)
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.body["analyst"], "builtin");
    assert!(
        r.body["fallback_reason"]
            .as_str()
            .unwrap()
            .contains("invalid model output"),
        "{}",
        r.body
    );
    assert_eq!(seen.lock().unwrap().len(), 1);
    assert_eq!(seen.lock().unwrap()[0].0, "/chat/completions");
}

/// Automatic triggers are debounced per incident; a regression is not.
async fn automatic_triage_is_debounced_except_for_regressions(t: TestApp) {
    let id = t.group_id("debounce me").await;
    let sentinel = t.group_id("sentinel").await;
    let triggers = triage::spawn(t.state.triage.clone(), 16, None);
    let stored =
        |group_id, new_group, regression| errorflow_collector::model::InsertOutcome::Stored {
            group_id,
            new_group,
            regression,
        };
    let history_len = |id: i64| {
        let t = &t;
        async move {
            t.call("GET", &format!("/api/v1/groups/{id}/triage"), None)
                .await
                .body
                .as_array()
                .map_or(0, Vec::len)
        }
    };
    triggers.offer(&[stored(id, true, false)]);
    triggers.offer(&[stored(id, true, false)]);
    // The worker takes triggers in order: once the sentinel's triage is
    // stored, the second trigger has been handled, run or debounced.
    triggers.offer(&[stored(sentinel, true, false)]);
    for _ in 0..200 {
        if history_len(sentinel).await >= 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(history_len(sentinel).await, 1, "the sentinel was triaged");
    assert_eq!(history_len(id).await, 1, "the second trigger was debounced");
    triggers.offer(&[stored(id, false, true)]);
    for _ in 0..200 {
        if history_len(id).await == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let h = t
        .call("GET", &format!("/api/v1/groups/{id}/triage"), None)
        .await
        .body;
    assert_eq!(h.as_array().unwrap().len(), 2);
    assert_eq!(h[0]["trigger"], "regression");
    assert_eq!(h[1]["trigger"], "new");
}
