//! The real start-up path of `serve`, on the binary and both backends: the
//! jobs and senders it starts from its flags, which the in-process tests
//! (built with `build_state` and `with_*`) do not go through.
//!
//! - `--alert-webhook URL`: a new incident is posted to a local receiver.
//! - `--retention 1h`: the job that runs at start-up deletes events received
//!   before the retention period, and keeps the others.

mod common;

use common::binary::{Backend, Collector};
use serde_json::json;

async fn post_event(c: &Collector, message: &str) {
    let r = reqwest::Client::new()
        .post(format!("{}/api/v1/events", c.base))
        .header("x-errorflow-key", &c.key)
        .json(&json!({"events": [{"event_id": uuid::Uuid::new_v4(),
            "level": "error", "service": "checkout",
            "environment": "prod", "message": message}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}

fn the_alert_webhook_flag_sends_new_incidents(backend: Backend) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (url, bodies) = rt.block_on(common::webhook_receiver());
    let mut c = Collector::prepare(backend);
    // The receiver is on the loopback address, which webhooks reach only
    // when the operator allows it.
    c.serve_args = vec![
        "--alert-webhook".into(),
        url,
        "--allow-webhook-hosts".into(),
        "127.0.0.1".into(),
    ];
    c.serve();
    rt.block_on(async {
        post_event(&c, "disk full").await;
        let body = common::wait_for_body(&bodies, "disk full").await;
        assert_eq!(body["event"], "incident.new");
        let link = body["incident"]["url"].as_str().unwrap();
        assert!(
            link.starts_with(&format!("{}/incidents/", c.base)),
            "{link}"
        );
    });
}

#[test]
fn the_alert_webhook_flag_sends_new_incidents_sqlite() {
    the_alert_webhook_flag_sends_new_incidents(Backend::Sqlite);
}

#[test]
fn the_alert_webhook_flag_sends_new_incidents_postgres() {
    the_alert_webhook_flag_sends_new_incidents(Backend::Postgres);
}

fn the_retention_flag_deletes_old_events(backend: Backend) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let mut c = Collector::start(backend);
    rt.block_on(async {
        post_event(&c, "disk full").await;
        post_event(&c, "cache cold").await;
    });
    let events = c.stored_events(2);
    let old = events.iter().find(|e| e["message"] == "disk full").unwrap()["event_id"]
        .as_str()
        .unwrap()
        .to_string();
    c.kill();
    // One event received long ago, as if the collector had run for years.
    let when = "'2000-01-01T00:00:00.000Z'";
    let simple = old.replace('-', "");
    let set = format!(
        "UPDATE errors SET received_at = {when} \
         WHERE replace(CAST(event_id AS TEXT), '-', '') = '{simple}'"
    );
    assert_eq!(c.db.execute(&set), 1);
    c.serve_args = vec!["--retention".into(), "1h".into()];
    c.serve();
    // The job runs once at start-up: wait for its effect.
    let deadline = std::time::Instant::now() + common::binary::DEADLINE;
    loop {
        let ids = c.db.stored_event_ids();
        if ids.len() == 1 {
            assert_ne!(
                ids[0].replace('-', ""),
                old.replace('-', ""),
                "the newer event is kept"
            );
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the old event was not deleted: {ids:?}"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

#[test]
fn the_retention_flag_deletes_old_events_sqlite() {
    the_retention_flag_deletes_old_events(Backend::Sqlite);
}

#[test]
fn the_retention_flag_deletes_old_events_postgres() {
    the_retention_flag_deletes_old_events(Backend::Postgres);
}
