//! One conformance suite for every [`Store`] backend. Each check is written
//! once, generic over `Arc<dyn Store>`, and instantiated per backend by name
//! (`postgres::insert_is_idempotent`, `sqlite::insert_is_idempotent`) so that
//! CI output shows which backend failed and a backend cannot be skipped silently.
//!
//! Postgres tests need a server: `ERRORFLOW_TEST_PG_URL` (default
//! `postgres://postgres@127.0.0.1:5432/postgres`); each test creates and drops its own database.

mod common;

use std::collections::HashSet;
use std::sync::Arc;

use chrono::{Duration, Timelike, Utc};
use errorflow_collector::model::*;
use errorflow_collector::retention;
use errorflow_collector::store::{Store, StoreError};
use errorflow_collector::triage::result::{NewTriage, Severity, TriageResult};

use common::{at, event, with_env, with_release, TestDb};

/// Instantiates every listed check once per backend, in modules named after the backend.
macro_rules! conformance {
    ($($(#[$attr:meta])* $name:ident),* $(,)?) => {
        mod postgres {
            $(
                $(#[$attr])*
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let db = crate::common::pg_store().await;
                    super::$name(&db).await;
                }
            )*
        }
        mod sqlite {
            $(
                $(#[$attr])*
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let db = crate::common::sqlite_store().await;
                    super::$name(&db).await;
                }
            )*
        }
    };
}

conformance!(
    triage_saved_once_per_idempotency_key,
    kestra_outbox_lifecycle,
    migrations_are_idempotent,
    projects_create_list_lookup_rotate,
    duplicate_project_name_is_rejected,
    tokens_round_trip,
    token_use_is_recorded_at_most_once_per_interval,
    events_are_grouped_by_fingerprint,
    insert_is_idempotent,
    outcomes_follow_input_order,
    new_event_unquiets_quiet_group,
    new_event_regresses_resolved_group,
    new_event_regresses_resolved_group_exclusive,
    resolved_in_next_release_ignores_that_release,
    resolved_in_next_release_orders_versions,
    resolved_in_next_release_orders_other_releases_by_first_sighting,
    transitions_are_recorded_and_idempotent,
    list_groups_filters,
    list_groups_sorts,
    list_groups_pagination_visits_each_group_once,
    invalid_cursor_is_rejected,
    group_stats_buckets_and_top_tags,
    counters_of_many_incidents_in_one_batch_add_up,
    quiet_idle_quiets_only_idle_open_groups,
    retention_deletes_expired_events_then_empty_idle_incidents,
    retention_purges_in_chunks_until_done,
    retention_racing_ingest_loses_no_event,
    retention_racing_exclusive_ingest_loses_no_event,
    deleting_a_group_deletes_what_hangs_off_it,
    deleting_a_project_deletes_everything_of_it,
    list_and_get_events,
    large_batch_is_chunked,
    concurrent_first_events_create_one_group,
    concurrent_first_exclusive_events_create_one_group,
    concurrent_overlapping_batches_keep_exact_counts,
    concurrent_overlapping_exclusive_batches_keep_exact_counts,
);

/// The two ways the writer stores a batch: [`Store::insert_events`], and
/// [`Store::insert_exclusive_events`] when one writer task owns all of the
/// batch's incidents. Both keep the same contract, even when the caller's
/// promise does not hold (two collectors on one database each think they
/// own an incident), so the checks below that race batches run both.
#[derive(Clone, Copy)]
enum Insert {
    Shared,
    Exclusive,
}

impl Insert {
    async fn run(
        self,
        store: &dyn Store,
        events: &[NormalizedEvent],
    ) -> Result<Vec<InsertOutcome>, StoreError> {
        match self {
            Insert::Shared => store.insert_events(events).await,
            Insert::Exclusive => store.insert_exclusive_events(events).await,
        }
    }
}

async fn project(store: &Arc<dyn Store>, name: &str) -> i64 {
    store
        .create_project(name, &format!("hash-{name}"), "efk_1234")
        .await
        .unwrap()
        .id
}

fn group_id(outcome: InsertOutcome) -> i64 {
    match outcome {
        InsertOutcome::Stored { group_id, .. } => group_id,
        other => panic!("expected a stored event, not {other:?}"),
    }
}

async fn all_groups(store: &Arc<dyn Store>, query: GroupQuery) -> Vec<Group> {
    store.list_groups(&query).await.unwrap().groups
}

async fn migrations_are_idempotent(db: &TestDb) {
    // The test database was migrated when it was made: nothing is pending,
    // however often it is asked.
    assert_eq!(db.migrate().await.unwrap(), Vec::<String>::new());
    assert_eq!(db.migrate().await.unwrap(), Vec::<String>::new());
    db.ping().await.unwrap();
}

async fn projects_create_list_lookup_rotate(db: &TestDb) {
    let a = db.create_project("shop", "h1", "efk_aaaa").await.unwrap();
    let b = db.create_project("blog", "h2", "efk_bbbb").await.unwrap();
    assert_eq!(a.name, "shop");
    assert_eq!(a.key_prefix, "efk_aaaa");
    let all = db.list_projects().await.unwrap();
    assert_eq!(
        all.iter().map(|p| p.id).collect::<Vec<_>>(),
        vec![a.id, b.id]
    );
    assert_eq!(db.get_project(a.id).await.unwrap(), Some(a.clone()));
    assert_eq!(db.get_project(9999).await.unwrap(), None);
    assert_eq!(
        db.project_by_key_hash("h2").await.unwrap().unwrap().id,
        b.id
    );
    assert_eq!(db.project_by_key_hash("nope").await.unwrap(), None);

    assert!(db
        .rotate_project_key(a.id, "h1-new", "efk_cccc")
        .await
        .unwrap());
    assert_eq!(
        db.project_by_key_hash("h1").await.unwrap(),
        None,
        "old key must stop working"
    );
    let rotated = db.project_by_key_hash("h1-new").await.unwrap().unwrap();
    assert_eq!(rotated.id, a.id);
    assert_eq!(rotated.key_prefix, "efk_cccc");
    assert!(!db.rotate_project_key(9999, "x", "y").await.unwrap());
}

async fn duplicate_project_name_is_rejected(db: &TestDb) {
    db.create_project("shop", "h1", "p").await.unwrap();
    match db.create_project("shop", "h2", "p").await {
        Err(StoreError::ProjectExists(name)) => assert_eq!(name, "shop"),
        other => panic!("expected ProjectExists, got {other:?}"),
    }
}

async fn tokens_round_trip(db: &TestDb) {
    let t = db.create_token("ci", "tok-hash").await.unwrap();
    assert_eq!(t.name, "ci");
    assert_eq!(t.last_used_at, None);
    assert!((Utc::now() - t.created_at).num_seconds().abs() < 60);
    assert_eq!(db.token_by_hash("tok-hash").await.unwrap(), Some(t.clone()));
    assert_eq!(db.token_by_hash("other").await.unwrap(), None);
    let u = db.create_token("deploy", "tok-hash-2").await.unwrap();
    assert_eq!(db.list_tokens().await.unwrap(), vec![t, u]);
}

async fn token_use_is_recorded_at_most_once_per_interval(db: &TestDb) {
    let t = db.create_token("ci", "tok-hash").await.unwrap();
    let other = db.create_token("other", "tok-hash-2").await.unwrap();
    let used = |h, m| db.mark_token_used("tok-hash", at(h, m), at(h, m) - Duration::seconds(60));
    assert!(used(10, 0).await.unwrap(), "first use is written");
    // Within the interval nothing is written, however often it is used.
    let half_minute = at(10, 0) + Duration::seconds(30);
    assert!(!db
        .mark_token_used("tok-hash", half_minute, half_minute - Duration::seconds(60))
        .await
        .unwrap());
    let last = |tokens: Vec<ApiToken>, id| {
        tokens
            .into_iter()
            .find(|t| t.id == id)
            .unwrap()
            .last_used_at
    };
    assert_eq!(last(db.list_tokens().await.unwrap(), t.id), Some(at(10, 0)));
    // A minute later it is written again.
    assert!(used(10, 1).await.unwrap());
    assert_eq!(
        db.token_by_hash("tok-hash")
            .await
            .unwrap()
            .unwrap()
            .last_used_at,
        Some(at(10, 1))
    );
    assert_eq!(last(db.list_tokens().await.unwrap(), other.id), None);
    assert!(!db
        .mark_token_used("no-such-hash", at(11, 0), at(10, 59))
        .await
        .unwrap());
}

async fn events_are_grouped_by_fingerprint(db: &TestDb) {
    let p = project(db, "shop").await;
    let batch = vec![
        event(p, "a", at(10, 5)),
        event(p, "b", at(10, 6)),
        with_release(event(p, "a", at(10, 30)), "1.2.0"),
        event(p, "a", at(10, 1)),
    ];
    let out = db.insert_events(&batch).await.unwrap();
    let ga = group_id(out[0]);
    let gb = group_id(out[1]);
    assert_ne!(ga, gb);
    assert_eq!(group_id(out[2]), ga);
    assert_eq!(group_id(out[3]), ga);

    let a = db.get_group(ga).await.unwrap().unwrap();
    assert_eq!(a.count, 3);
    assert_eq!(a.first_seen, at(10, 1));
    assert_eq!(a.last_seen, at(10, 30));
    assert_eq!(a.status, GroupStatus::Open);
    assert_eq!(a.fingerprint, "a");
    assert_eq!(a.project_id, p);
    assert_eq!(a.cluster_key, "user-api:NotFounda");
    assert_eq!(a.severity, "unknown");
    assert_eq!(a.last_release.as_deref(), Some("1.2.0"));
    assert_eq!(a.last_environment.as_deref(), Some("prod"));
    assert_eq!(a.regression_count, 0);
    assert_eq!(db.get_group(gb).await.unwrap().unwrap().count, 1);

    // A later batch extends the same group.
    let out = db.insert_events(&[event(p, "a", at(11, 0))]).await.unwrap();
    assert_eq!(
        out[0],
        InsertOutcome::Stored {
            group_id: ga,
            new_group: false,
            regression: false
        }
    );
    let a = db.get_group(ga).await.unwrap().unwrap();
    assert_eq!(
        (a.count, a.first_seen, a.last_seen),
        (4, at(10, 1), at(11, 0))
    );
    // The newest event had no release; the last release follows it.
    assert_eq!(a.last_release, None);
    // A later batch with only an older event: the first sighting moves back,
    // while the last one, its release and its environment stay.
    let older = with_release(event(p, "a", at(9, 0)), "0.9.0");
    let out = db.insert_events(&[older]).await.unwrap();
    assert_eq!(group_id(out[0]), ga);
    let a = db.get_group(ga).await.unwrap().unwrap();
    assert_eq!(
        (a.count, a.first_seen, a.last_seen),
        (5, at(9, 0), at(11, 0))
    );
    assert_eq!(a.last_release, None);
    assert_eq!(a.last_environment.as_deref(), Some("prod"));

    // The same fingerprint in another project is another incident.
    let other = project(db, "blog").await;
    let out = db
        .insert_events(&[event(other, "a", at(11, 0))])
        .await
        .unwrap();
    assert_ne!(group_id(out[0]), ga);

    let by_key = db
        .group_by_cluster_key("user-api:NotFounda")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        by_key.id,
        group_id(out[0]),
        "the most recently seen group wins"
    );
    assert!(db.group_by_cluster_key("nope").await.unwrap().is_none());

    let activity = db.activity(ga).await.unwrap();
    assert_eq!(activity.len(), 1);
    assert_eq!(activity[0].kind, "created");
    assert_eq!(activity[0].actor, "system");
    assert_eq!(activity[0].to_status, Some(GroupStatus::Open));
}

async fn insert_is_idempotent(db: &TestDb) {
    let p = project(db, "shop").await;
    let e1 = event(p, "a", at(10, 0));
    let e2 = event(p, "a", at(10, 1));
    let out = db
        .insert_events(&[e1.clone(), e1.clone(), e2.clone()])
        .await
        .unwrap();
    assert!(matches!(
        out[0],
        InsertOutcome::Stored {
            new_group: true,
            ..
        }
    ));
    assert_eq!(
        out[1],
        InsertOutcome::Duplicate,
        "repeated within the batch"
    );
    assert!(matches!(
        out[2],
        InsertOutcome::Stored {
            new_group: false,
            ..
        }
    ));
    let g = group_id(out[0]);

    let again = db.insert_events(&[e2.clone(), e1.clone()]).await.unwrap();
    assert_eq!(
        again,
        vec![InsertOutcome::Duplicate, InsertOutcome::Duplicate]
    );
    let group = db.get_group(g).await.unwrap().unwrap();
    assert_eq!(group.count, 2);
    let stats = db.group_stats(g, at(12, 0)).await.unwrap();
    assert_eq!(stats.hourly.iter().map(|b| b.count).sum::<i64>(), 2);
    assert_eq!(stats.top_tags["environment"][0].count, 2);
    assert_eq!(db.activity(g).await.unwrap().len(), 1);

    // The same event id in another project is another event.
    let q = project(db, "blog").await;
    let mut copy = e1.clone();
    copy.project_id = q;
    let out = db.insert_events(&[copy]).await.unwrap();
    assert!(matches!(
        out[0],
        InsertOutcome::Stored {
            new_group: true,
            ..
        }
    ));

    // A batch of nothing but duplicates of a new fingerprint leaves no empty group behind.
    let mut moved = e1.clone();
    moved.fingerprint = "elsewhere".to_string();
    assert_eq!(
        db.insert_events(&[moved]).await.unwrap(),
        vec![InsertOutcome::Duplicate]
    );
    let groups = all_groups(
        db,
        GroupQuery {
            project_id: Some(p),
            ..Default::default()
        },
    )
    .await;
    assert_eq!(groups.len(), 1);
}

async fn outcomes_follow_input_order(db: &TestDb) {
    let p = project(db, "shop").await;
    let old = event(p, "z", at(9, 0));
    db.insert_events(std::slice::from_ref(&old)).await.unwrap();
    let batch = vec![
        event(p, "m", at(10, 0)),
        old.clone(),
        event(p, "a", at(10, 0)),
        event(p, "m", at(10, 1)),
        event(p, "z", at(10, 2)),
    ];
    let out = db.insert_events(&batch).await.unwrap();
    assert_eq!(out.len(), 5);
    let gm = group_id(out[0]);
    let ga = group_id(out[2]);
    let gz = group_id(out[4]);
    assert_eq!(
        out,
        vec![
            InsertOutcome::Stored {
                group_id: gm,
                new_group: true,
                regression: false
            },
            InsertOutcome::Duplicate,
            InsertOutcome::Stored {
                group_id: ga,
                new_group: true,
                regression: false
            },
            InsertOutcome::Stored {
                group_id: gm,
                new_group: false,
                regression: false
            },
            InsertOutcome::Stored {
                group_id: gz,
                new_group: false,
                regression: false
            },
        ]
    );
    assert_eq!(db.insert_events(&[]).await.unwrap(), vec![]);
}

async fn new_event_unquiets_quiet_group(db: &TestDb) {
    let p = project(db, "shop").await;
    let g = group_id(db.insert_events(&[event(p, "a", at(10, 0))]).await.unwrap()[0]);
    let quiet = db
        .transition(
            g,
            &Transition::Quiet { reason: None },
            "user:ann",
            at(11, 0),
        )
        .await
        .unwrap()
        .unwrap();
    assert_eq!(quiet.status, GroupStatus::Quiet);
    let out = db.insert_events(&[event(p, "a", at(12, 0))]).await.unwrap();
    assert_eq!(
        out[0],
        InsertOutcome::Stored {
            group_id: g,
            new_group: false,
            regression: false
        }
    );
    let group = db.get_group(g).await.unwrap().unwrap();
    assert_eq!(group.status, GroupStatus::Open);
    assert_eq!(group.regression_count, 0);
    let kinds: Vec<_> = db
        .activity(g)
        .await
        .unwrap()
        .into_iter()
        .map(|a| (a.kind, a.actor, a.from_status, a.to_status))
        .collect();
    assert_eq!(
        kinds,
        vec![
            (
                "created".into(),
                "system".into(),
                None,
                Some(GroupStatus::Open)
            ),
            (
                "quieted".into(),
                "user:ann".into(),
                Some(GroupStatus::Open),
                Some(GroupStatus::Quiet)
            ),
            (
                "unquieted".into(),
                "system".into(),
                Some(GroupStatus::Quiet),
                Some(GroupStatus::Open)
            ),
        ]
    );
}

async fn new_event_regresses_resolved_group(db: &TestDb) {
    regresses_resolved_group(db, Insert::Shared).await;
}

async fn new_event_regresses_resolved_group_exclusive(db: &TestDb) {
    regresses_resolved_group(db, Insert::Exclusive).await;
}

async fn regresses_resolved_group(db: &TestDb, insert: Insert) {
    let p = project(db, "shop").await;
    let g = group_id(
        insert
            .run(db.as_ref(), &[event(p, "a", at(10, 0))])
            .await
            .unwrap()[0],
    );
    let resolve = Transition::Resolve {
        reason: None,
        in_next_release: false,
    };
    let resolved = db
        .transition(g, &resolve, "user:ann", at(11, 0))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(resolved.status, GroupStatus::Resolved);
    assert_eq!(resolved.resolution_reason.as_deref(), Some("manual"));
    assert_eq!(resolved.resolved_at, Some(at(11, 0)));

    let mut late = event(p, "a", at(12, 0));
    late.received_at = at(12, 1);
    let out = insert
        .run(db.as_ref(), &[late, event(p, "a", at(12, 2))])
        .await
        .unwrap();
    assert_eq!(
        out,
        vec![
            InsertOutcome::Stored {
                group_id: g,
                new_group: false,
                regression: true
            },
            InsertOutcome::Stored {
                group_id: g,
                new_group: false,
                regression: false
            },
        ]
    );
    let group = db.get_group(g).await.unwrap().unwrap();
    assert_eq!(group.status, GroupStatus::Open);
    assert_eq!(group.regression_count, 1);
    assert_eq!(group.regressed_at, Some(at(12, 1)));
    assert_eq!(group.count, 3);
    let last = db.activity(g).await.unwrap().pop().unwrap();
    assert_eq!(last.kind, "regressed");
    assert_eq!(last.from_status, Some(GroupStatus::Resolved));
    assert_eq!(last.to_status, Some(GroupStatus::Open));
    assert_eq!(last.at, at(12, 1));

    // A second resolve and regression counts again.
    db.transition(g, &resolve, "user:ann", at(13, 0))
        .await
        .unwrap();
    insert
        .run(db.as_ref(), &[event(p, "a", at(14, 0))])
        .await
        .unwrap();
    let group = db.get_group(g).await.unwrap().unwrap();
    assert_eq!(group.regression_count, 2);
}

async fn resolved_in_next_release_ignores_that_release(db: &TestDb) {
    let p = project(db, "shop").await;
    let first = with_release(event(p, "a", at(10, 0)), "1.0.0");
    let g = group_id(db.insert_events(&[first]).await.unwrap()[0]);
    let resolve = Transition::Resolve {
        reason: Some("fixed in 1.0.1".to_string()),
        in_next_release: true,
    };
    let resolved = db
        .transition(g, &resolve, "user:ann", at(11, 0))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(resolved.resolved_in_release.as_deref(), Some("1.0.0"));
    assert_eq!(
        resolved.resolution_reason.as_deref(),
        Some("fixed in 1.0.1")
    );

    // Stragglers of the release it was resolved in count but do not regress.
    let out = db
        .insert_events(&[with_release(event(p, "a", at(12, 0)), "1.0.0")])
        .await
        .unwrap();
    assert!(matches!(
        out[0],
        InsertOutcome::Stored {
            regression: false,
            ..
        }
    ));
    let group = db.get_group(g).await.unwrap().unwrap();
    assert_eq!(group.status, GroupStatus::Resolved);
    assert_eq!(group.count, 2);

    // Another release does.
    let out = db
        .insert_events(&[with_release(event(p, "a", at(13, 0)), "1.0.1")])
        .await
        .unwrap();
    assert!(matches!(
        out[0],
        InsertOutcome::Stored {
            regression: true,
            ..
        }
    ));
    let group = db.get_group(g).await.unwrap().unwrap();
    assert_eq!(group.status, GroupStatus::Open);
    assert_eq!(group.regression_count, 1);
    assert_eq!(group.last_release.as_deref(), Some("1.0.1"));
}

async fn resolve_in_next_release(db: &TestDb, g: i64, when: chrono::DateTime<Utc>) -> Group {
    let resolve = Transition::Resolve {
        reason: None,
        in_next_release: true,
    };
    db.transition(g, &resolve, "user:ann", when)
        .await
        .unwrap()
        .unwrap()
}

/// Stores one event of incident `a` with `release` and says whether it regressed it.
async fn regresses(
    db: &TestDb,
    p: i64,
    release: Option<&str>,
    when: chrono::DateTime<Utc>,
) -> bool {
    let mut ev = event(p, "a", when);
    if let Some(release) = release {
        ev = with_release(ev, release);
    }
    match db.insert_events(&[ev]).await.unwrap()[0] {
        InsertOutcome::Stored { regression, .. } => regression,
        other => panic!("expected a stored event, not {other:?}"),
    }
}

async fn resolved_in_next_release_orders_versions(db: &TestDb) {
    let p = project(db, "shop").await;
    let g = group_id(
        db.insert_events(&[with_release(event(p, "a", at(10, 0)), "shop@1.4.0")])
            .await
            .unwrap()[0],
    );
    let resolved = resolve_in_next_release(db, g, at(10, 30)).await;
    assert_eq!(resolved.resolved_in_release.as_deref(), Some("shop@1.4.0"));

    // Older builds (a canary, a lagging host) and the same version in
    // another spelling do not regress it, although they are seen only now.
    assert!(!regresses(db, p, Some("shop@1.3.9"), at(11, 0)).await);
    assert!(!regresses(db, p, Some("shop@v1.4.0-rc.2"), at(11, 1)).await);
    assert!(!regresses(db, p, Some("shop@1.4"), at(11, 2)).await);
    assert!(!regresses(db, p, Some("shop@1.4.0"), at(11, 3)).await);
    let group = db.get_group(g).await.unwrap().unwrap();
    assert_eq!(group.status, GroupStatus::Resolved);
    assert_eq!(group.count, 5);
    assert_eq!(group.regression_count, 0);

    // A newer version does, and says so in the activity.
    assert!(regresses(db, p, Some("shop@1.10.0"), at(12, 0)).await);
    let group = db.get_group(g).await.unwrap().unwrap();
    assert_eq!(group.status, GroupStatus::Open);
    assert_eq!(group.regression_count, 1);
    assert_eq!(group.regressed_at, Some(at(12, 0)));
    let last = db.activity(g).await.unwrap().pop().unwrap();
    assert_eq!(last.kind, "regressed");
    assert_eq!(last.from_status, Some(GroupStatus::Resolved));
    assert_eq!(last.to_status, Some(GroupStatus::Open));
    assert_eq!(
        last.reason.as_deref(),
        Some("new event in release shop@1.10.0")
    );
    assert_eq!(last.at, at(12, 0));

    // An event without a release cannot be placed in the order: it regresses.
    let resolved = resolve_in_next_release(db, g, at(13, 0)).await;
    assert_eq!(resolved.resolved_in_release.as_deref(), Some("shop@1.10.0"));
    assert!(regresses(db, p, None, at(14, 0)).await);
    let group = db.get_group(g).await.unwrap().unwrap();
    assert_eq!(group.status, GroupStatus::Open);
    assert_eq!(group.regression_count, 2);
}

async fn resolved_in_next_release_orders_other_releases_by_first_sighting(db: &TestDb) {
    let p = project(db, "shop").await;
    let other = project(db, "blog").await;
    // The project first sees "canary-7" on another incident, then "abc123",
    // then "def456", with which incident `a` is resolved. "ghi789" was seen
    // early, but by another project.
    db.insert_events(&[
        with_release(event(p, "b", at(9, 0)), "canary-7"),
        with_release(event(other, "a", at(9, 30)), "ghi789"),
    ])
    .await
    .unwrap();
    let g = group_id(
        db.insert_events(&[with_release(event(p, "a", at(10, 0)), "abc123")])
            .await
            .unwrap()[0],
    );
    db.insert_events(&[with_release(event(p, "a", at(10, 30)), "def456")])
        .await
        .unwrap();
    let resolved = resolve_in_next_release(db, g, at(11, 0)).await;
    assert_eq!(resolved.resolved_in_release.as_deref(), Some("def456"));

    assert!(!regresses(db, p, Some("def456"), at(12, 0)).await);
    assert!(!regresses(db, p, Some("abc123"), at(12, 1)).await);
    assert!(!regresses(db, p, Some("canary-7"), at(12, 2)).await);
    // A version is not comparable with a commit hash: it is new to the project.
    assert!(regresses(db, p, Some("1.0.0"), at(12, 3)).await);
    let group = db.get_group(g).await.unwrap().unwrap();
    assert_eq!(
        group.status,
        GroupStatus::Open,
        "1.0.0 was first seen after def456"
    );
    assert_eq!(group.regression_count, 1);

    // After resolving in 1.0.0, "ghi789" is new to this project: it regresses.
    resolve_in_next_release(db, g, at(13, 0)).await;
    assert!(!regresses(db, p, Some("def456"), at(13, 30)).await);
    assert!(regresses(db, p, Some("ghi789"), at(14, 0)).await);
    let group = db.get_group(g).await.unwrap().unwrap();
    assert_eq!(group.status, GroupStatus::Open);
    assert_eq!(group.regression_count, 2);
    assert_eq!(group.count, 8);
}

async fn transitions_are_recorded_and_idempotent(db: &TestDb) {
    let p = project(db, "shop").await;
    let g = group_id(db.insert_events(&[event(p, "a", at(10, 0))]).await.unwrap()[0]);
    let resolve = Transition::Resolve {
        reason: None,
        in_next_release: false,
    };
    db.transition(g, &resolve, "user:ann", at(11, 0))
        .await
        .unwrap();
    // Resolving again changes nothing and records nothing.
    let again = db
        .transition(g, &resolve, "user:bob", at(11, 30))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(again.resolved_at, Some(at(11, 0)));
    let reopened = db
        .transition(
            g,
            &Transition::Reopen {
                reason: Some("still broken".to_string()),
            },
            "token:ci",
            at(12, 0),
        )
        .await
        .unwrap()
        .unwrap();
    assert_eq!(reopened.status, GroupStatus::Open);
    assert_eq!(reopened.resolved_at, None);
    assert_eq!(reopened.resolution_reason, None);
    db.transition(g, &Transition::Quiet { reason: None }, "system", at(13, 0))
        .await
        .unwrap();
    db.transition(g, &Transition::Quiet { reason: None }, "system", at(13, 5))
        .await
        .unwrap();

    let activity = db.activity(g).await.unwrap();
    let summary: Vec<_> = activity
        .iter()
        .map(|a| (a.kind.as_str(), a.actor.as_str(), a.reason.as_deref(), a.at))
        .collect();
    assert_eq!(
        summary,
        vec![
            ("created", "system", None, at(10, 0)),
            ("resolved", "user:ann", Some("manual"), at(11, 0)),
            ("reopened", "token:ci", Some("still broken"), at(12, 0)),
            ("quieted", "system", None, at(13, 0)),
        ]
    );
    assert!(activity.windows(2).all(|w| w[0].id < w[1].id));
    assert!(db
        .transition(9999, &resolve, "user:ann", at(14, 0))
        .await
        .unwrap()
        .is_none());
}

async fn list_groups_filters(db: &TestDb) {
    let p = project(db, "shop").await;
    let q = project(db, "blog").await;
    let mut checkout = event(p, "a", at(10, 0));
    checkout.service = "checkout".to_string();
    checkout.title = "Timeout: upstream 100%_done".to_string();
    checkout.culprit = Some("payments::charge".to_string());
    let out = db
        .insert_events(&[
            checkout,
            with_env(event(p, "b", at(10, 1)), "staging"),
            with_release(event(p, "c", at(10, 2)), "2.0.0"),
            event(q, "d", at(10, 3)),
        ])
        .await
        .unwrap();
    let [ga, gb, gc, gd] = [0, 1, 2, 3].map(|i| group_id(out[i]));
    db.transition(gb, &Transition::Quiet { reason: None }, "system", at(11, 0))
        .await
        .unwrap();
    db.set_triage(gc, Some(80), "high").await;

    let ids = |groups: Vec<Group>| groups.into_iter().map(|g| g.id).collect::<Vec<_>>();
    let base = GroupQuery::default;
    assert_eq!(ids(all_groups(db, base()).await), vec![gd, gc, gb, ga]);
    assert_eq!(
        ids(all_groups(
            db,
            GroupQuery {
                project_id: Some(q),
                ..base()
            }
        )
        .await),
        vec![gd]
    );
    assert_eq!(
        ids(all_groups(
            db,
            GroupQuery {
                status: Some(GroupStatus::Quiet),
                ..base()
            }
        )
        .await),
        vec![gb]
    );
    assert_eq!(
        ids(all_groups(
            db,
            GroupQuery {
                service: Some("checkout".into()),
                ..base()
            }
        )
        .await),
        vec![ga]
    );
    assert_eq!(
        ids(all_groups(
            db,
            GroupQuery {
                environment: Some("staging".into()),
                ..base()
            }
        )
        .await),
        vec![gb]
    );
    assert_eq!(
        ids(all_groups(
            db,
            GroupQuery {
                release: Some("2.0.0".into()),
                ..base()
            }
        )
        .await),
        vec![gc]
    );
    assert_eq!(
        ids(all_groups(
            db,
            GroupQuery {
                severity: Some("high".into()),
                ..base()
            }
        )
        .await),
        vec![gc]
    );
    // q is a case-insensitive substring of title, culprit or cluster key, with wildcards taken literally.
    for (text, expected) in [
        ("UPSTREAM", vec![ga]),
        ("100%_", vec![ga]),
        ("0%", vec![ga]),
        ("%", vec![ga]),
        ("_", vec![ga]),
        ("Payments::", vec![ga]),
        ("notfoundd", vec![gd]),
        ("nothing like this", vec![]),
    ] {
        assert_eq!(
            ids(all_groups(
                db,
                GroupQuery {
                    q: Some(text.into()),
                    ..base()
                }
            )
            .await),
            expected,
            "q = {text:?}"
        );
    }
    // Filters combine.
    assert_eq!(
        ids(all_groups(
            db,
            GroupQuery {
                project_id: Some(p),
                status: Some(GroupStatus::Open),
                environment: Some("prod".into()),
                ..base()
            }
        )
        .await),
        vec![gc, ga]
    );
}

async fn list_groups_sorts(db: &TestDb) {
    let p = project(db, "shop").await;
    // a: first seen earliest, seen most often; b: seen last; c: first seen last.
    let out = db
        .insert_events(&[
            event(p, "a", at(8, 0)),
            event(p, "a", at(9, 0)),
            event(p, "a", at(9, 30)),
            event(p, "b", at(9, 0)),
            event(p, "b", at(12, 0)),
            event(p, "c", at(11, 0)),
        ])
        .await
        .unwrap();
    let (ga, gb, gc) = (group_id(out[0]), group_id(out[3]), group_id(out[5]));
    db.set_triage(ga, Some(10), "low").await;
    db.set_triage(gc, Some(90), "high").await;
    let sorted = |sort| async move {
        all_groups(
            db,
            GroupQuery {
                sort,
                ..Default::default()
            },
        )
        .await
        .into_iter()
        .map(|g| g.id)
        .collect::<Vec<_>>()
    };
    assert_eq!(sorted(GroupSort::LastSeen).await, vec![gb, gc, ga]);
    assert_eq!(sorted(GroupSort::FirstSeen).await, vec![gc, gb, ga]);
    assert_eq!(sorted(GroupSort::Count).await, vec![ga, gb, gc]);
    assert_eq!(
        sorted(GroupSort::Priority).await,
        vec![gc, ga, gb],
        "untriaged last"
    );
}

async fn list_groups_pagination_visits_each_group_once(db: &TestDb) {
    let p = project(db, "shop").await;
    // Many ties on every sort key make keyset pagination earn its keep.
    let mut batch = Vec::new();
    for i in 0..23 {
        for _ in 0..(i % 3 + 1) {
            batch.push(event(p, &format!("g{i}"), at(10 + (i % 4), 0)));
        }
    }
    let out = db.insert_events(&batch).await.unwrap();
    let all: HashSet<i64> = out.iter().map(|o| group_id(*o)).collect();
    assert_eq!(all.len(), 23);
    for (n, id) in all.iter().enumerate() {
        if n % 2 == 0 {
            db.set_triage(*id, Some((n % 5) as i32 * 10), "low").await;
        }
    }
    for sort in [
        GroupSort::LastSeen,
        GroupSort::FirstSeen,
        GroupSort::Count,
        GroupSort::Priority,
    ] {
        let mut seen = Vec::new();
        let mut cursor = None;
        loop {
            let page = db
                .list_groups(&GroupQuery {
                    sort,
                    limit: 4,
                    cursor: cursor.clone(),
                    ..Default::default()
                })
                .await
                .unwrap();
            assert!(page.groups.len() <= 4);
            seen.extend(page.groups.iter().map(|g| g.id));
            match page.next_cursor {
                Some(next) => cursor = Some(next),
                None => break,
            }
        }
        let unique: HashSet<i64> = seen.iter().copied().collect();
        assert_eq!(seen.len(), 23, "{sort:?}: every group exactly once");
        assert_eq!(unique, all, "{sort:?}");
        let one_page = all_groups(
            db,
            GroupQuery {
                sort,
                limit: 200,
                ..Default::default()
            },
        )
        .await
        .into_iter()
        .map(|g| g.id)
        .collect::<Vec<_>>();
        assert_eq!(
            seen, one_page,
            "{sort:?}: pages concatenate to the full order"
        );
    }
    // Limits are clamped rather than refused.
    let page = db
        .list_groups(&GroupQuery {
            limit: 0,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(page.groups.len(), 23);
    assert!(page.next_cursor.is_none());
}

async fn invalid_cursor_is_rejected(db: &TestDb) {
    for cursor in ["garbage", "", "7c", "31327c"] {
        let err = db
            .list_groups(&GroupQuery {
                cursor: Some(cursor.to_string()),
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert!(
            matches!(err, StoreError::InvalidCursor),
            "{cursor:?}: {err:?}"
        );
        let err = db
            .list_events(&EventQuery {
                cursor: Some(cursor.to_string()),
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert!(
            matches!(err, StoreError::InvalidCursor),
            "{cursor:?}: {err:?}"
        );
    }
}

async fn group_stats_buckets_and_top_tags(db: &TestDb) {
    let p = project(db, "shop").await;
    let now = at(15, 20);
    let mut batch = vec![
        event(p, "a", at(15, 1)),
        event(p, "a", at(15, 2)),
        event(p, "a", at(13, 59)),
        // Yesterday, outside the hourly window but inside the daily one.
        event(p, "a", at(3, 0) - Duration::days(1)),
        // Too old for either window.
        event(p, "a", at(3, 0) - Duration::days(20)),
    ];
    for i in 0..12 {
        let mut e = event(p, "a", at(1, 0));
        e.tags.insert("host".into(), format!("web-{:02}", i % 12));
        batch.push(e);
    }
    batch[0].tags.insert("host".into(), "web-00".into());
    let g = group_id(db.insert_events(&batch).await.unwrap()[0]);
    let stats = db.group_stats(g, now).await.unwrap();

    assert_eq!(stats.hourly.len(), 24);
    assert_eq!(stats.hourly[23].start, at(15, 0));
    assert_eq!(stats.hourly[0].start, at(15, 0) - Duration::hours(23));
    assert!(stats.hourly.windows(2).all(|w| w[0].start < w[1].start));
    assert_eq!(stats.hourly[23].count, 2);
    assert_eq!(stats.hourly[21].count, 1);
    assert_eq!(stats.hourly[9].start, at(1, 0));
    assert_eq!(stats.hourly[9].count, 12, "01:00 today");
    assert_eq!(stats.hourly.iter().map(|b| b.count).sum::<i64>(), 15);

    assert_eq!(stats.daily.len(), 14);
    assert_eq!(stats.daily[13].start, at(0, 0));
    assert_eq!(stats.daily[0].start, at(0, 0) - Duration::days(13));
    assert_eq!(stats.daily[13].count, 15);
    assert_eq!(stats.daily[12].count, 1);
    assert_eq!(stats.daily.iter().map(|b| b.count).sum::<i64>(), 16);

    let hosts = &stats.top_tags["host"];
    assert_eq!(hosts.len(), 10, "at most ten values per key");
    assert_eq!(hosts[0].value, "web-00");
    assert_eq!(hosts[0].count, 2);
    assert!(hosts.windows(2).all(|w| w[0].count >= w[1].count));
    assert_eq!(stats.top_tags["environment"][0].count, 17);

    let empty = db.group_stats(9999, now).await.unwrap();
    assert_eq!(empty.hourly.len(), 24);
    assert!(empty.daily.iter().all(|b| b.count == 0));
    assert!(empty.top_tags.is_empty());
}

/// A batch whose hourly and tag counters run to many rows: three
/// incidents, each with events in twenty hours and twenty hosts, stored
/// twice, so that the second batch adds to every counter the first one
/// created.
async fn counters_of_many_incidents_in_one_batch_add_up(db: &TestDb) {
    let p = project(db, "shop").await;
    let batch = |extra: usize| {
        let mut batch = Vec::new();
        for fingerprint in ["a", "b", "c"] {
            for i in 0..20u32 {
                let mut e = event(p, fingerprint, at(i, 7));
                e.tags.insert("host".into(), format!("web-{i:02}"));
                batch.push(e);
            }
        }
        // A few more in incident "a", at 05:30 on host web-05.
        for _ in 0..extra {
            let mut e = event(p, "a", at(5, 30));
            e.tags.insert("host".into(), "web-05".into());
            batch.push(e);
        }
        batch
    };
    let first = db.insert_events(&batch(0)).await.unwrap();
    let second = db.insert_events(&batch(3)).await.unwrap();
    assert!(first
        .iter()
        .chain(&second)
        .all(|o| matches!(o, InsertOutcome::Stored { .. })));

    for (fingerprint, out) in [("a", 0), ("b", 20), ("c", 40)] {
        let g = group_id(first[out]);
        let extra = if fingerprint == "a" { 3 } else { 0 };
        let group = db.get_group(g).await.unwrap().unwrap();
        assert_eq!(group.count, 40 + extra, "incident {fingerprint}");

        let stats = db.group_stats(g, at(20, 0)).await.unwrap();
        let hours: Vec<(u32, i64)> = stats
            .hourly
            .iter()
            .filter(|b| b.count > 0)
            .map(|b| (b.start.hour(), b.count))
            .collect();
        let expected: Vec<(u32, i64)> = (0..20)
            .map(|h| (h, if h == 5 { 2 + extra } else { 2 }))
            .collect();
        assert_eq!(hours, expected, "incident {fingerprint}");

        let hosts = &stats.top_tags["host"];
        assert_eq!(hosts.len(), 10, "incident {fingerprint}");
        if extra > 0 {
            assert_eq!((hosts[0].value.as_str(), hosts[0].count), ("web-05", 5));
        }
        // The other hosts, each seen once per batch.
        let others = &hosts[usize::from(extra > 0)..];
        assert!(others.iter().all(|h| h.count == 2), "{hosts:?}");
        assert_eq!(stats.top_tags["environment"][0].count, 40 + extra);
    }
}

async fn events_of(db: &TestDb, project_id: i64, group_id: i64) -> Vec<StoredEvent> {
    db.list_events(&EventQuery {
        project_id: Some(project_id),
        group_id: Some(group_id),
        service: None,
        environment: None,
        level: None,
        limit: 100,
        cursor: None,
    })
    .await
    .unwrap()
    .events
}

/// Retention deletes events received before the cutoff, oldest first and
/// chunk by chunk, then the incidents they left without events that were
/// last seen before it, with their history; everything newer is kept, and
/// a kept incident's count stays the number of events it has had.
async fn retention_deletes_expired_events_then_empty_idle_incidents(db: &TestDb) {
    let p = project(db, "shop").await;
    let received = |mut ev: NormalizedEvent, h: u32| {
        ev.received_at = at(h, 0);
        ev
    };
    let out = db
        .insert_events(&[
            // "gone": two expired events and nothing since.
            received(event(p, "gone", at(8, 0)), 8),
            received(event(p, "gone", at(8, 30)), 8),
            // "mixed": one expired event, one kept.
            received(event(p, "mixed", at(8, 0)), 8),
            received(event(p, "mixed", at(12, 0)), 12),
            // "skewed": its one event was received long ago, but its
            // client's clock put it after the cutoff: not idle, so kept
            // without events.
            received(event(p, "skewed", at(12, 0)), 8),
        ])
        .await
        .unwrap();
    let (gone, mixed, skewed) = (group_id(out[0]), group_id(out[2]), group_id(out[4]));
    db.transition(
        gone,
        &Transition::Resolve {
            reason: None,
            in_next_release: false,
        },
        "user:ann",
        at(9, 0),
    )
    .await
    .unwrap();
    assert_eq!(events_of(db, p, mixed).await.len(), 2);

    let cutoff = at(10, 0);
    // Nothing is older than an early cutoff.
    assert_eq!(db.delete_events_before(at(7, 0), 2).await.unwrap(), 0);
    // Four expired events, two per call: a short call says none is left.
    assert_eq!(db.delete_events_before(cutoff, 2).await.unwrap(), 2);
    assert_eq!(db.delete_events_before(cutoff, 2).await.unwrap(), 2);
    assert_eq!(db.delete_events_before(cutoff, 2).await.unwrap(), 0);
    assert!(events_of(db, p, gone).await.is_empty());
    assert!(events_of(db, p, skewed).await.is_empty());
    let left = events_of(db, p, mixed).await;
    assert_eq!(left.len(), 1);
    assert_eq!(left[0].received_at, at(12, 0));

    // Only "gone" is both empty and idle since before the cutoff.
    assert_eq!(
        db.delete_groups_without_events(cutoff, 10).await.unwrap(),
        1
    );
    assert_eq!(
        db.delete_groups_without_events(cutoff, 10).await.unwrap(),
        0
    );
    assert_eq!(db.get_group(gone).await.unwrap(), None);
    assert!(db.activity(gone).await.unwrap().is_empty());
    let counts = db.hourly_counts(&[gone, mixed], at(12, 30)).await.unwrap();
    assert!(counts.get(&gone).is_none_or(|c| c.iter().all(|&n| n == 0)));
    assert_eq!(db.get_group(mixed).await.unwrap().unwrap().count, 2);
    assert_eq!(db.get_group(skewed).await.unwrap().unwrap().count, 1);

    // An event like the deleted incident's own opens a new incident.
    let again = db
        .insert_events(&[received(event(p, "gone", at(13, 0)), 13)])
        .await
        .unwrap();
    let reborn = db.get_group(group_id(again[0])).await.unwrap().unwrap();
    assert_ne!(reborn.id, gone);
    assert_eq!((reborn.count, reborn.status), (1, GroupStatus::Open));
}

/// The background pass deletes chunk after chunk until nothing expired is
/// left, events first, then the incidents they left empty.
async fn retention_purges_in_chunks_until_done(db: &TestDb) {
    let p = project(db, "shop").await;
    let mut batch = Vec::new();
    for (i, fingerprint) in ["a", "b", "c", "d", "e"].iter().enumerate() {
        let mut ev = event(p, fingerprint, at(8, i as u32));
        ev.received_at = at(8, i as u32);
        batch.push(ev);
    }
    let mut kept = event(p, "a", at(12, 0));
    kept.received_at = at(12, 0);
    batch.push(kept);
    let out = db.insert_events(&batch).await.unwrap();
    let newest = out.iter().map(|o| group_id(*o)).max().unwrap();
    let options = retention::PurgeOptions {
        chunk: 2,
        pause: std::time::Duration::ZERO,
    };
    let purged = retention::purge(db.as_ref(), at(10, 0), options)
        .await
        .unwrap();
    assert_eq!(
        purged,
        retention::Purged {
            events: 5,
            incidents: 4
        }
    );
    let left = all_groups(db, GroupQuery::default()).await;
    assert_eq!(left.len(), 1);
    assert_eq!(left[0].fingerprint, "a");
    let again = retention::purge(db.as_ref(), at(10, 0), options)
        .await
        .unwrap();
    assert_eq!(again, retention::Purged::default());
    // The newest incident was deleted: its id is not handed out again.
    let next = group_id(db.insert_events(&[event(p, "f", at(12, 0))]).await.unwrap()[0]);
    assert!(
        next > newest,
        "incident {next} reuses the id of a deleted one ({newest})"
    );
}

/// Retention deleting an empty, idle incident while an event for it is
/// being stored: the event is stored all the same, in that incident or in a
/// new one, and never lost or refused. (On Postgres a shared batch finds the
/// incident without a lock; when retention deletes it before the writer
/// locks it, the batch is retried and creates it anew. An exclusive batch
/// finds and locks it in one statement, which does not return an incident
/// deleted while it waited, so the batch creates it anew.)
async fn retention_racing_ingest_loses_no_event(db: &TestDb) {
    retention_racing_ingest(db, Insert::Shared).await;
}

async fn retention_racing_exclusive_ingest_loses_no_event(db: &TestDb) {
    retention_racing_ingest(db, Insert::Exclusive).await;
}

async fn retention_racing_ingest(db: &TestDb, insert: Insert) {
    let p = project(db, "shop").await;
    for round in 0..40 {
        let fingerprint = format!("race-{round}");
        let mut old = event(p, &fingerprint, at(8, 0));
        old.received_at = at(8, 0);
        db.insert_events(&[old]).await.unwrap();
        assert_eq!(db.delete_events_before(at(10, 0), 10).await.unwrap(), 1);
        let fresh = event(p, &fingerprint, at(12, 0));
        let event_id = fresh.event_id;
        let store: Arc<dyn Store> = Arc::clone(db);
        let ingest = tokio::spawn(async move { insert.run(store.as_ref(), &[fresh]).await });
        let store: Arc<dyn Store> = Arc::clone(db);
        let purge =
            tokio::spawn(async move { store.delete_groups_without_events(at(10, 0), 10).await });
        let outcome = ingest
            .await
            .unwrap()
            .expect("ingest is never refused by retention");
        purge.await.unwrap().unwrap();
        let group = group_id(outcome[0]);
        let stored = db
            .get_event(event_id)
            .await
            .unwrap()
            .expect("the event is stored");
        assert_eq!(stored.group_id, group);
        let incident = db
            .get_group(group)
            .await
            .unwrap()
            .expect("its incident exists");
        assert_eq!(incident.last_seen, at(12, 0));
    }
}

/// Deleting an incident in chunks removes its events (a chunk at a time),
/// counters and history, and nothing of another incident.
async fn deleting_a_group_deletes_what_hangs_off_it(db: &TestDb) {
    let p = project(db, "shop").await;
    let mut batch: Vec<NormalizedEvent> = (0..5).map(|i| event(p, "doomed", at(9, i))).collect();
    batch.push(event(p, "kept", at(9, 0)));
    let doomed_event = batch[0].event_id;
    let out = db.insert_events(&batch).await.unwrap();
    let (doomed, kept) = (group_id(out[0]), group_id(out[5]));
    db.transition(
        doomed,
        &Transition::Quiet { reason: None },
        "user:ann",
        at(9, 30),
    )
    .await
    .unwrap();

    assert_eq!(db.delete_group_events(doomed, 2).await.unwrap(), 2);
    assert_eq!(events_of(db, p, doomed).await.len(), 3);
    assert!(
        errorflow_collector::store::delete_group_in_chunks(db.as_ref(), doomed)
            .await
            .unwrap()
    );
    assert_eq!(db.get_group(doomed).await.unwrap(), None);
    assert_eq!(db.get_event(doomed_event).await.unwrap(), None);
    assert!(events_of(db, p, doomed).await.is_empty());
    assert!(db.activity(doomed).await.unwrap().is_empty());
    assert!(
        !errorflow_collector::store::delete_group_in_chunks(db.as_ref(), doomed)
            .await
            .unwrap()
    );
    assert!(!db.delete_group(doomed).await.unwrap());

    let kept_group = db.get_group(kept).await.unwrap().unwrap();
    assert_eq!(kept_group.count, 1);
    assert_eq!(events_of(db, p, kept).await.len(), 1);
    let stats = db.group_stats(kept, at(10, 0)).await.unwrap();
    assert_eq!(stats.hourly.iter().map(|b| b.count).sum::<i64>(), 1);

    // Ids are never used twice, not even the newest incident's.
    let newest = group_id(
        db.insert_events(&[event(p, "newest", at(9, 0))])
            .await
            .unwrap()[0],
    );
    assert!(
        errorflow_collector::store::delete_group_in_chunks(db.as_ref(), newest)
            .await
            .unwrap()
    );
    let next = group_id(
        db.insert_events(&[event(p, "next", at(9, 0))])
            .await
            .unwrap()[0],
    );
    assert!(
        next > newest,
        "incident {next} reuses the id of a deleted one ({newest})"
    );
}

async fn deleting_a_project_deletes_everything_of_it(db: &TestDb) {
    use errorflow_collector::store::{delete_project_in_chunks, DeletedProject};
    let doomed = project(db, "doomed").await;
    let kept = project(db, "kept").await;
    let mut batch: Vec<NormalizedEvent> = (0..4)
        .map(|i| with_release(event(doomed, &format!("f{}", i % 2), at(9, i)), "1.0"))
        .collect();
    batch.push(event(kept, "f0", at(9, 0)));
    let out = db.insert_events(&batch).await.unwrap();
    let (doomed_group, kept_group) = (group_id(out[0]), group_id(out[4]));

    let deleted = delete_project_in_chunks(db.as_ref(), doomed).await.unwrap();
    assert_eq!(
        deleted,
        Some(DeletedProject {
            events: 4,
            incidents: 2
        })
    );
    assert_eq!(db.get_project(doomed).await.unwrap(), None);
    assert_eq!(db.project_by_key_hash("hash-doomed").await.unwrap(), None);
    assert_eq!(db.get_group(doomed_group).await.unwrap(), None);
    assert_eq!(db.get_event(batch[0].event_id).await.unwrap(), None);
    assert_eq!(db.get_group(kept_group).await.unwrap().unwrap().count, 1);
    assert_eq!(events_of(db, kept, kept_group).await.len(), 1);
    assert_eq!(
        delete_project_in_chunks(db.as_ref(), doomed).await.unwrap(),
        None
    );

    // The next project does not get the deleted one's id (nor its DSN).
    let next = project(db, "next").await;
    assert!(next > kept, "project {next} reuses a deleted id");
    let newest = project(db, "newest").await;
    assert!(delete_project_in_chunks(db.as_ref(), newest)
        .await
        .unwrap()
        .is_some());
    let after = project(db, "after").await;
    assert!(
        after > newest,
        "project {after} reuses the id of a deleted one ({newest})"
    );
}

async fn quiet_idle_quiets_only_idle_open_groups(db: &TestDb) {
    let p = project(db, "shop").await;
    let out = db
        .insert_events(&[
            event(p, "idle", at(9, 0)),
            event(p, "busy", at(11, 0)),
            event(p, "resolved", at(9, 0)),
        ])
        .await
        .unwrap();
    let (idle, busy, resolved) = (group_id(out[0]), group_id(out[1]), group_id(out[2]));
    db.transition(
        resolved,
        &Transition::Resolve {
            reason: None,
            in_next_release: false,
        },
        "user:ann",
        at(9, 30),
    )
    .await
    .unwrap();
    assert_eq!(db.quiet_idle(at(10, 30), at(11, 0)).await.unwrap(), 1);
    assert_eq!(
        db.quiet_idle(at(10, 30), at(11, 0)).await.unwrap(),
        0,
        "already quiet"
    );
    assert_eq!(
        db.get_group(idle).await.unwrap().unwrap().status,
        GroupStatus::Quiet
    );
    assert_eq!(
        db.get_group(busy).await.unwrap().unwrap().status,
        GroupStatus::Open
    );
    assert_eq!(
        db.get_group(resolved).await.unwrap().unwrap().status,
        GroupStatus::Resolved
    );
    let last = db.activity(idle).await.unwrap().pop().unwrap();
    assert_eq!(last.kind, "quieted");
    assert_eq!(last.actor, "system");
    assert_eq!(
        last.reason.as_deref(),
        Some("no events for the quiet period")
    );
    assert_eq!(last.at, at(11, 0));
}

async fn list_and_get_events(db: &TestDb) {
    let p = project(db, "shop").await;
    let q = project(db, "blog").await;
    let mut batch = Vec::new();
    for i in 0..7u32 {
        let mut e = event(p, if i % 2 == 0 { "a" } else { "b" }, at(10, i));
        e.received_at = at(12, i / 2); // ties on received_at
        if i == 3 {
            e = with_env(e, "staging");
            e.level = errorflow_sdk::protocol::Level::Warning;
            e.service = "checkout".into();
        }
        batch.push(e);
    }
    batch.push(event(q, "a", at(10, 0)));
    let out = db.insert_events(&batch).await.unwrap();

    let page = db.list_events(&EventQuery::default()).await.unwrap();
    assert_eq!(page.events.len(), 8);
    assert!(page
        .events
        .windows(2)
        .all(|w| (w[0].received_at, w[0].id) > (w[1].received_at, w[1].id)));

    // Paging with ties visits every event once, newest first.
    let mut seen = Vec::new();
    let mut cursor = None;
    loop {
        let page = db
            .list_events(&EventQuery {
                project_id: Some(p),
                limit: 3,
                cursor,
                ..Default::default()
            })
            .await
            .unwrap();
        seen.extend(page.events.iter().map(|e| e.event_id));
        cursor = page.next_cursor;
        if cursor.is_none() {
            break;
        }
    }
    assert_eq!(seen.len(), 7);
    assert_eq!(seen.iter().collect::<HashSet<_>>().len(), 7);

    let count =
        |query: EventQuery| async move { db.list_events(&query).await.unwrap().events.len() };
    let ga = group_id(out[0]);
    assert_eq!(
        count(EventQuery {
            group_id: Some(ga),
            ..Default::default()
        })
        .await,
        4
    );
    assert_eq!(
        count(EventQuery {
            service: Some("checkout".into()),
            ..Default::default()
        })
        .await,
        1
    );
    assert_eq!(
        count(EventQuery {
            environment: Some("staging".into()),
            ..Default::default()
        })
        .await,
        1
    );
    assert_eq!(
        count(EventQuery {
            level: Some("warning".into()),
            ..Default::default()
        })
        .await,
        1
    );
    assert_eq!(
        count(EventQuery {
            project_id: Some(q),
            ..Default::default()
        })
        .await,
        1
    );

    let stored = db.get_event(batch[3].event_id).await.unwrap().unwrap();
    assert_eq!(stored.project_id, p);
    assert_eq!(stored.group_id, group_id(out[3]));
    assert_eq!(stored.timestamp, at(10, 3));
    assert_eq!(stored.received_at, at(12, 1));
    assert_eq!(stored.env, "staging");
    assert_eq!(stored.level, "warning");
    assert_eq!(stored.service, "checkout");
    assert_eq!(stored.message, batch[3].message);
    assert_eq!(stored.path, "/users/42");
    assert_eq!(stored.trace_id, batch[3].trace_id);
    assert_eq!(stored.host.as_deref(), Some("web-1"));
    assert_eq!(stored.data, serde_json::to_value(&batch[3].event).unwrap());
    assert!(db.get_event(uuid::Uuid::new_v4()).await.unwrap().is_none());

    // The newest copy wins when two projects share an event id.
    let mut copy = batch[0].clone();
    copy.project_id = q;
    copy.received_at = at(20, 0);
    db.insert_events(&[copy]).await.unwrap();
    let newest = db.get_event(batch[0].event_id).await.unwrap().unwrap();
    assert_eq!(newest.project_id, q);
}

async fn large_batch_is_chunked(db: &TestDb) {
    let p = project(db, "shop").await;
    // More rows than fit in one statement's bind parameters on either backend,
    // and more groups than fit in one group insert on SQLite.
    let batch: Vec<_> = (0..4000)
        .map(|i| event(p, &format!("fp{}", i % 3100), at(10, (i % 60) as u32)))
        .collect();
    let out = db.insert_events(&batch).await.unwrap();
    assert!(out
        .iter()
        .all(|o| matches!(o, InsertOutcome::Stored { .. })));
    let total: i64 = {
        let mut total = 0;
        let mut cursor = None;
        loop {
            let page = db
                .list_groups(&GroupQuery {
                    limit: 200,
                    cursor,
                    ..Default::default()
                })
                .await
                .unwrap();
            total += page.groups.iter().map(|g| g.count).sum::<i64>();
            cursor = page.next_cursor;
            if cursor.is_none() {
                break total;
            }
        }
    };
    assert_eq!(total, 4000);
    let again = db.insert_events(&batch).await.unwrap();
    assert!(again.iter().all(|o| *o == InsertOutcome::Duplicate));
}

async fn concurrent_first_events_create_one_group(db: &TestDb) {
    first_events_create_one_group(db, Insert::Shared).await;
}

async fn concurrent_first_exclusive_events_create_one_group(db: &TestDb) {
    first_events_create_one_group(db, Insert::Exclusive).await;
}

async fn first_events_create_one_group(db: &TestDb, insert: Insert) {
    let p = project(db, "shop").await;
    let events: Vec<_> = (0..64).map(|i| event(p, "racy", at(10, i % 60))).collect();
    let send_all = |events: Vec<NormalizedEvent>| {
        let handles: Vec<_> = events
            .into_iter()
            .map(|e| {
                let store = Arc::clone(&db.store);
                tokio::spawn(async move { insert.run(store.as_ref(), &[e]).await })
            })
            .collect();
        async move {
            let mut outcomes = Vec::new();
            for h in handles {
                outcomes.push(h.await.unwrap().expect("no insert may fail")[0]);
            }
            outcomes
        }
    };

    let outcomes = send_all(events.clone()).await;
    let groups: HashSet<i64> = outcomes.iter().map(|o| group_id(*o)).collect();
    assert_eq!(groups.len(), 1, "exactly one group");
    let g = *groups.iter().next().unwrap();
    let created = outcomes
        .iter()
        .filter(|o| {
            matches!(
                o,
                InsertOutcome::Stored {
                    new_group: true,
                    ..
                }
            )
        })
        .count();
    assert_eq!(created, 1, "exactly one event created the group");
    assert_eq!(db.get_group(g).await.unwrap().unwrap().count, 64);

    let outcomes = send_all(events).await;
    assert!(outcomes.iter().all(|o| *o == InsertOutcome::Duplicate));
    let group = db.get_group(g).await.unwrap().unwrap();
    assert_eq!(group.count, 64);
    let all = all_groups(db, GroupQuery::default()).await;
    assert_eq!(all.len(), 1);
    assert_eq!(db.activity(g).await.unwrap().len(), 1);
}

async fn concurrent_overlapping_batches_keep_exact_counts(db: &TestDb) {
    overlapping_batches_keep_exact_counts(db, Insert::Shared).await;
}

async fn concurrent_overlapping_exclusive_batches_keep_exact_counts(db: &TestDb) {
    overlapping_batches_keep_exact_counts(db, Insert::Exclusive).await;
}

async fn overlapping_batches_keep_exact_counts(db: &TestDb, insert: Insert) {
    let p = project(db, "shop").await;
    // Sixteen writers, each with a batch touching the same eight new groups
    // in a different order, plus re-sends of each other's events: lock
    // ordering must prevent deadlocks and the counts must come out exact.
    // The five releases are new too, so every writer also records them.
    let batches: Vec<Vec<NormalizedEvent>> = (0..16)
        .map(|w| {
            (0..40)
                .map(|i| {
                    let ev = event(
                        p,
                        &format!("fp{}", (i * 7 + w * 3) % 8),
                        at(10, (i % 60) as u32),
                    );
                    with_release(ev, &format!("r{}", (i + w) % 5))
                })
                .collect()
        })
        .collect();
    let mut handles = Vec::new();
    for (w, batch) in batches.iter().enumerate() {
        let mut mixed = batch.clone();
        mixed.extend(batches[(w + 1) % 16][..10].iter().cloned());
        let store = Arc::clone(&db.store);
        handles.push(tokio::spawn(async move {
            insert.run(store.as_ref(), &mixed).await
        }));
    }
    let mut stored = 0;
    for h in handles {
        let out = h.await.unwrap().expect("no batch may fail");
        stored += out
            .iter()
            .filter(|o| matches!(o, InsertOutcome::Stored { .. }))
            .count();
    }
    assert_eq!(stored, 16 * 40, "each event stored exactly once");
    let groups = all_groups(db, GroupQuery::default()).await;
    assert_eq!(groups.len(), 8);
    assert_eq!(groups.iter().map(|g| g.count).sum::<i64>(), 16 * 40);
    for g in &groups {
        let stats = db.group_stats(g.id, at(12, 0)).await.unwrap();
        assert_eq!(stats.hourly.iter().map(|b| b.count).sum::<i64>(), g.count);
        assert_eq!(db.activity(g.id).await.unwrap().len(), 1, "created once");
    }
}

fn kestra_triage(group_id: i64, summary: &str) -> NewTriage {
    NewTriage {
        group_id,
        result: TriageResult {
            summary: summary.into(),
            severity: Severity::High,
            priority: 70,
            probable_cause: "c".into(),
            next_steps: vec!["s".into()],
            confidence: 0.5,
        },
        analyst: "kestra".into(),
        model: "m".into(),
        prompt_version: "v".into(),
        fallback_reason: None,
        trigger: "external".into(),
        trend: None,
        signals: Vec::new(),
        created_at: Utc::now(),
    }
}

async fn triage_saved_once_per_idempotency_key(db: &TestDb) {
    let p = project(db, "shop").await;
    let out = db.insert_events(&[event(p, "a", at(10, 5))]).await.unwrap();
    let g = group_id(out[0]);
    let (first, fresh) = db
        .save_triage_once(&kestra_triage(g, "first"), "key-1")
        .await
        .unwrap()
        .unwrap();
    assert!(fresh);
    let (again, fresh) = db
        .save_triage_once(&kestra_triage(g, "second"), "key-1")
        .await
        .unwrap()
        .unwrap();
    assert!(!fresh);
    assert_eq!(again.id, first.id, "the first result is answered");
    assert_eq!(again.result.summary, "first");
    assert_eq!(db.triage_history(g, 10).await.unwrap().len(), 1);
    let (other, fresh) = db
        .save_triage_once(&kestra_triage(g, "third"), "key-2")
        .await
        .unwrap()
        .unwrap();
    assert!(fresh);
    assert_eq!(other.result.summary, "third");
    assert_eq!(db.triage_history(g, 10).await.unwrap().len(), 2);
    // No such incident: nothing stored, the key stays free.
    assert!(db
        .save_triage_once(&kestra_triage(g + 1000, "x"), "key-3")
        .await
        .unwrap()
        .is_none());
    assert!(
        db.save_triage_once(&kestra_triage(g, "x"), "key-3")
            .await
            .unwrap()
            .unwrap()
            .1
    );
}

async fn kestra_outbox_lifecycle(db: &TestDb) {
    let p = project(db, "shop").await;
    let out = db.insert_events(&[event(p, "a", at(10, 5))]).await.unwrap();
    let g = group_id(out[0]);
    let now = Utc::now();
    db.enqueue_kestra_trigger("error-intake", Some(g), "[]", "k1", now)
        .await
        .unwrap();
    // The same key is not queued twice.
    db.enqueue_kestra_trigger("error-intake", Some(g), "[]", "k1", now)
        .await
        .unwrap();
    db.enqueue_kestra_trigger("group-summary-agent", None, "[1]", "k2", now)
        .await
        .unwrap();
    let due = db.due_kestra_triggers(now, 10).await.unwrap();
    assert_eq!(due.len(), 2, "{due:?}");
    assert_eq!(due[0].idempotency_key, "k1");
    assert_eq!(due[0].group_id, Some(g));
    assert_eq!(due[1].inputs, "[1]");
    // A failed attempt waits until its next time.
    db.retry_kestra_trigger(due[1].id, 1, now + Duration::minutes(5), "refused")
        .await
        .unwrap();
    let due_now = db.due_kestra_triggers(now, 10).await.unwrap();
    assert_eq!(due_now.len(), 1);
    let later = db
        .due_kestra_triggers(now + Duration::minutes(6), 10)
        .await
        .unwrap();
    assert_eq!(later.len(), 2);
    assert_eq!(later[1].attempts, 1);
    db.drop_kestra_trigger(later[1].id).await.unwrap();
    // Started: leaves the outbox, becomes a followed run.
    db.kestra_trigger_started(&due_now[0], "exec-1", Some("CREATED"), now)
        .await
        .unwrap();
    assert!(db
        .due_kestra_triggers(now + Duration::hours(1), 10)
        .await
        .unwrap()
        .is_empty());
    let running = db.unfinished_kestra_runs(10).await.unwrap();
    assert_eq!(running.len(), 1);
    assert_eq!(running[0].execution_id, "exec-1");
    assert_eq!(running[0].idempotency_key.as_deref(), Some("k1"));
    db.finish_kestra_run(running[0].id, "FAILED", Some("store"), Some("boom"), now)
        .await
        .unwrap();
    assert!(db.unfinished_kestra_runs(10).await.unwrap().is_empty());
    let runs = db.kestra_runs(g, 10).await.unwrap();
    assert_eq!(runs.len(), 1);
    assert!(runs[0].failed());
    assert_eq!(runs[0].failed_task.as_deref(), Some("store"));
    assert_eq!(runs[0].error.as_deref(), Some("boom"));
    assert!(runs[0].finished_at.is_some());
}
