//! The writer's tasks on both backends: requests owned by one task and
//! requests spanning several, sent together, are each stored once and
//! counted exactly, and every request is answered.

mod common;

use std::collections::HashMap;
use std::sync::Arc;

use errorflow_collector::model::InsertOutcome;
use errorflow_collector::writer::{Writer, WriterOptions};

use common::{at, event, TestDb};

common::backend_tests!(owned_and_shared_requests_are_stored_once_and_counted_exactly);

async fn owned_and_shared_requests_are_stored_once_and_counted_exactly(db: TestDb) {
    let project = db
        .create_project("shop", "hash", "efk_shop")
        .await
        .unwrap()
        .id;
    let writer = Writer::start(
        Arc::clone(&db.store),
        WriterOptions {
            writers: 2,
            max_batch_events: 64,
            ..WriterOptions::default()
        },
    );
    let mut expected: HashMap<String, i64> = HashMap::new();
    let mut requests = Vec::new();
    for i in 0..300u32 {
        // Mostly one event per request, as Sentry SDKs send; every tenth
        // request carries five events of five incidents.
        let kinds: Vec<u32> = if i % 10 == 0 {
            (0..5).map(|k| (i + k * 3) % 20).collect()
        } else {
            vec![i % 20]
        };
        let events: Vec<_> = kinds
            .iter()
            .map(|k| {
                let fingerprint = format!("incident-{k}");
                *expected.entry(fingerprint.clone()).or_default() += 1;
                event(project, &fingerprint, at(10, i % 60))
            })
            .collect();
        let writer = writer.clone();
        requests.push(tokio::spawn(async move {
            (events.len(), writer.submit(events).await)
        }));
    }
    // Every handle but the requests' own clones is gone: the tasks serve
    // both queues until the last request is answered.
    drop(writer);
    for request in requests {
        // A queue nobody serves would leave its requests waiting for good.
        let (sent, outcome) = tokio::time::timeout(std::time::Duration::from_secs(60), request)
            .await
            .expect("every request is answered")
            .unwrap();
        let outcome = outcome.expect("every request is stored");
        assert_eq!(outcome.len(), sent);
        assert!(outcome
            .iter()
            .all(|o| matches!(o, InsertOutcome::Stored { .. })));
    }
    let groups = db
        .list_groups(&errorflow_collector::model::GroupQuery {
            limit: 100,
            ..Default::default()
        })
        .await
        .unwrap()
        .groups;
    let counted: HashMap<String, i64> = groups
        .into_iter()
        .map(|g| (g.fingerprint, g.count))
        .collect();
    assert_eq!(counted, expected);
}
