//! The labelled triage benchmark: incidents written from public postmortems
//! and on-call practice (`triage_bench/`), replayed through the real ingest
//! path (Sentry store and envelope, the seed's `/errors/custom`, errorflow's
//! batch) into a collector app on SQLite, triaged with the built-in analyst
//! through `POST /api/v1/groups/{id}/summarize`, and scored:
//!
//! - pairwise ordering accuracy: over every pair of incidents of different
//!   urgency tiers, how often the more urgent one has the higher priority
//!   (a tie counts half);
//! - severity exact and within one step (tier 1 critical … tier 4 low);
//! - beside it, three baselines: everything "high", order by event count,
//!   and the two-line rule "prod and level ≥ error first".
//!
//! Quick mode (in the test suite) caps each incident at a few events and
//! fails below the thresholds; full mode replays every event and prints the
//! table: `cargo test -p errorflow-collector --test triage_benchmark -- --ignored --nocapture`.

mod common;
mod triage_bench;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use chrono::Utc;
use errorflow_collector::model::GroupQuery;
use serde_json::json;

use common::TestApp;
use triage_bench::{scenarios, Scenario, Sdk};

/// What the benchmark learned about one incident.
#[derive(Debug)]
struct Outcome {
    name: &'static str,
    tier: u8,
    reason: &'static str,
    events: i64,
    priority: i32,
    severity: String,
    prod_error: bool,
    explanation: String,
}

fn expected_severity(tier: u8) -> &'static str {
    match tier {
        1 => "critical",
        2 => "high",
        3 => "medium",
        _ => "low",
    }
}

fn severity_rank(s: &str) -> i32 {
    match s {
        "critical" => 4,
        "high" => 3,
        "medium" => 2,
        _ => 1,
    }
}

async fn send(t: &TestApp, s: &Scenario, key: &str, project_id: i64, ev: &triage_bench::Ev) {
    let (path, content_type, body) = s.request_for(ev, project_id);
    let mut req = Request::post(path.as_str()).header("content-type", content_type);
    req = match s.sdk {
        Sdk::PythonStore | Sdk::NodeEnvelope | Sdk::JavaEnvelope => req.header(
            "x-sentry-auth",
            format!("Sentry sentry_key={key}, sentry_version=7, sentry_client=bench/1.0"),
        ),
        Sdk::Custom | Sdk::Rust => req.header("x-errorflow-key", key),
    };
    let reply = t.send(req.body(Body::from(body)).unwrap()).await;
    assert!(
        reply.status.is_success(),
        "{}: {} {}",
        s.name,
        reply.status,
        reply.body
    );
}

/// Replays every incident (at most about `cap` events each) and triages it.
async fn replay(cap: Option<usize>) -> Vec<Outcome> {
    let t = TestApp::new(common::sqlite_store().await, "bench").await;
    let now = Utc::now();
    let mut out = Vec::new();
    for (i, s) in scenarios().iter().enumerate() {
        let (key, project_id) = t.add_project(&format!("bench-{i}")).await;
        let shape = cap.map_or(s.shape, |c| s.shape.capped(c));
        let (before, after) = s.events(i as u64, now, shape);
        let groups = |t: &TestApp| {
            let store = t.state.store.clone();
            async move {
                store
                    .list_groups(&GroupQuery {
                        project_id: Some(project_id),
                        limit: 100,
                        ..GroupQuery::default()
                    })
                    .await
                    .unwrap()
                    .groups
            }
        };
        for ev in &before {
            send(&t, s, &key, project_id, ev).await;
        }
        if !before.is_empty() {
            for g in groups(&t).await {
                let r = t
                    .post_api(&format!("/api/v1/groups/{}/resolve", g.id), json!({}))
                    .await;
                assert_eq!(r.status, StatusCode::OK, "{}", r.body);
            }
        }
        for ev in &after {
            send(&t, s, &key, project_id, ev).await;
        }
        // The incident is the project's most urgent group (a scenario that
        // splits is judged by its top group).
        let mut best: Option<Outcome> = None;
        let gs = groups(&t).await;
        assert!(!gs.is_empty(), "{}: no incident", s.name);
        let events: i64 = gs.iter().map(|g| g.count).sum();
        for g in gs {
            let r = t
                .call("POST", &format!("/api/v1/groups/{}/summarize", g.id), None)
                .await;
            assert_eq!(r.status, StatusCode::OK, "{}", r.body);
            let priority = r.body["priority"].as_i64().unwrap() as i32;
            if best.as_ref().is_none_or(|b| priority > b.priority) {
                let level_error = matches!(s.level, "error" | "fatal");
                best = Some(Outcome {
                    name: s.name,
                    tier: s.tier,
                    reason: s.reason,
                    events,
                    priority,
                    severity: r.body["severity"].as_str().unwrap().to_string(),
                    prod_error: level_error && s.env.starts_with("prod"),
                    explanation: r.body["explanation"].as_str().unwrap_or("").to_string(),
                });
            }
        }
        out.extend(best);
    }
    out
}

/// Pairwise ordering accuracy of `score` across tiers (ties count half).
fn pairwise(outcomes: &[Outcome], score: impl Fn(&Outcome) -> f64) -> f64 {
    let (mut good, mut pairs) = (0.0, 0.0);
    for a in outcomes {
        for b in outcomes {
            if a.tier < b.tier {
                pairs += 1.0;
                let (sa, sb) = (score(a), score(b));
                if sa > sb {
                    good += 1.0;
                } else if sa == sb {
                    good += 0.5;
                }
            }
        }
    }
    good / pairs
}

/// Severity exact and within one step, for `severity` of each outcome.
fn severity_scores(outcomes: &[Outcome], severity: impl Fn(&Outcome) -> String) -> (f64, f64) {
    let n = outcomes.len() as f64;
    let exact = outcomes
        .iter()
        .filter(|o| severity(o) == expected_severity(o.tier))
        .count() as f64;
    let near = outcomes
        .iter()
        .filter(|o| {
            (severity_rank(&severity(o)) - severity_rank(expected_severity(o.tier))).abs() <= 1
        })
        .count() as f64;
    (exact / n, near / n)
}

struct Scores {
    pairwise: f64,
    exact: f64,
    within_one: f64,
}

fn report(outcomes: &[Outcome], verbose: bool) -> Scores {
    let builtin = pairwise(outcomes, |o| o.priority as f64);
    let (exact, near) = severity_scores(outcomes, |o| o.severity.clone());
    let all_high = pairwise(outcomes, |_| 1.0);
    let (ah_exact, ah_near) = severity_scores(outcomes, |_| "high".into());
    let by_count = pairwise(outcomes, |o| o.events as f64);
    let rule = pairwise(outcomes, |o| if o.prod_error { 1.0 } else { 0.0 });
    let (rule_exact, rule_near) = severity_scores(outcomes, |o| {
        if o.prod_error { "high" } else { "low" }.to_string()
    });
    let tiers: Vec<usize> = (1..=4)
        .map(|t| outcomes.iter().filter(|o| o.tier == t).count())
        .collect();
    let events: i64 = outcomes.iter().map(|o| o.events).sum();
    println!(
        "triage benchmark: {} incidents (tiers 1-4: {:?}), {events} events",
        outcomes.len(),
        tiers
    );
    println!(
        "{:<34} {:>9} {:>15} {:>15}",
        "analyst", "pairwise", "severity exact", "within one"
    );
    println!(
        "{:<34} {:>9.3} {:>15.3} {:>15.3}",
        "built-in (rules)", builtin, exact, near
    );
    println!(
        "{:<34} {:>9.3} {:>15.3} {:>15.3}",
        "baseline: everything high", all_high, ah_exact, ah_near
    );
    println!(
        "{:<34} {:>9.3} {:>15} {:>15}",
        "baseline: order by event count", by_count, "-", "-"
    );
    println!(
        "{:<34} {:>9.3} {:>15.3} {:>15.3}",
        "baseline: prod and level >= error", rule, rule_exact, rule_near
    );
    if verbose {
        let mut sorted: Vec<&Outcome> = outcomes.iter().collect();
        sorted.sort_by_key(|o| -o.priority);
        for o in sorted {
            let mark = if o.severity == expected_severity(o.tier) {
                " "
            } else {
                "*"
            };
            println!(
                "{:>3} {:<9}{mark} tier {} {:>5} ev  {:<40} {}",
                o.priority, o.severity, o.tier, o.events, o.name, o.explanation
            );
            if mark == "*" {
                println!("{:>22} labelled: {}", "", o.reason);
            }
        }
    }
    Scores {
        pairwise: builtin,
        exact,
        within_one: near,
    }
}

/// Quick mode: every incident, at most about 12 events each. A regression
/// below these thresholds fails the suite.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn triage_benchmark_quick() {
    let outcomes = replay(Some(12)).await;
    assert!(outcomes.len() >= 60, "at least 60 incidents");
    let s = report(&outcomes, true);
    assert!(s.pairwise >= 0.88, "pairwise {:.3}", s.pairwise);
    assert!(s.exact >= 0.65, "severity exact {:.3}", s.exact);
    assert!(
        s.within_one >= 0.90,
        "severity within one {:.3}",
        s.within_one
    );
}

/// Full mode: every event of every incident; prints the table.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "full benchmark; run with --ignored --nocapture"]
async fn triage_benchmark_full() {
    let outcomes = replay(None).await;
    let s = report(&outcomes, true);
    assert!(s.pairwise >= 0.90, "pairwise {:.3}", s.pairwise);
    assert!(s.exact >= 0.70, "severity exact {:.3}", s.exact);
}
