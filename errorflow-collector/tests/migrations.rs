//! Upgrading a database that already holds data, on both backends: the
//! schema of migrations 0001–0003 (the first release) is filled with
//! incidents and events written the way that release wrote them, then the
//! collector's own migrator brings it to the current schema. Events, their
//! JSON and their deduplication must survive the rebuild of `errors`
//! (0004), and the releases seen so far must be recorded (0005).

mod common;

use std::borrow::Cow;
use std::path::Path;

use chrono::{TimeZone, Utc};
use common::{event, pg_store_unmigrated, sqlite_store_unmigrated, TestDb};
use errorflow_collector::model::{EventQuery, InsertOutcome};
use sqlx::migrate::Migrator;
use uuid::Uuid;

/// The last migration of the first release.
const FIRST_RELEASE_SCHEMA: i64 = 3;

const EVENT_A: &str = "6f1c0b8e-3b1f-4bb1-9a57-0d7e2f7d1c11";
const EVENT_B: &str = "0b3a6e55-93a4-4f4e-8d0c-2f61a1d4f0aa";

/// Every SQLite migration, as `migrate` names them, in order. Written out:
/// a migration that goes missing, is renumbered or renamed fails here.
const SQLITE_MIGRATIONS: &[&str] = &[
    "1 init",
    "2 triage",
    "3 dashboard users",
    "4 event json once",
    "5 releases",
    "6 event time indexes ascending",
    "7 ids never reused",
    "8 project alert webhook",
    "9 triage signals and overrides",
    "10 kestra outbox",
    "11 github",
    "12 token ids never reused",
    "13 project scrub fields",
];

/// Every Postgres migration, as `migrate` names them, in order.
const POSTGRES_MIGRATIONS: &[&str] = &[
    "1 init",
    "2 triage",
    "3 dashboard users",
    "4 event json once",
    "5 releases",
    "6 event data json",
    "7 event data lz4",
    "8 event references by trigger",
    "9 event time indexes ascending",
    "10 event data text",
    "11 project alert webhook",
    "12 triage signals and overrides",
    "13 kestra outbox",
    "14 github",
    "15 project scrub fields",
];

/// `migrate` names what it applied, and on a first-release database that
/// is every later migration, in order.
fn assert_upgraded_past_first_release(applied: &[String], all: &[&str]) {
    assert_eq!(applied, &all[FIRST_RELEASE_SCHEMA as usize..]);
}

/// Applies the migrations up to [`FIRST_RELEASE_SCHEMA`] from `sql/<backend>`.
async fn first_release_migrator(backend: &str) -> Migrator {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../sql")
        .join(backend);
    let mut migrator = Migrator::new(dir).await.expect("read migrations");
    let old: Vec<_> = migrator
        .migrations
        .iter()
        .filter(|m| m.version <= FIRST_RELEASE_SCHEMA)
        .cloned()
        .collect();
    assert_eq!(old.len(), FIRST_RELEASE_SCHEMA as usize);
    migrator.migrations = Cow::Owned(old);
    migrator
}

/// Statements that write one project, one incident and two events in the
/// first release's schema (split JSON columns, `UNIQUE (project_id, event_id)`).
fn old_rows(ts: &dyn Fn(u32) -> String) -> Vec<String> {
    let event = |id: &str, release: &str, minute: u32| {
        format!(
            "INSERT INTO errors (project_id, group_id, event_id, service, error_type, message, \
             timestamp, received_at, env, path, trace_id, level, release, host, fingerprint, \
             exception, tags, request, user_data, breadcrumbs, data) VALUES \
             (1, 1, '{id}', 'shop', 'NotFound', 'NotFound: user 42 not found', {t}, {t}, 'prod', \
              '/users/42', 'abc', 'error', '{release}', 'web-1', 'fp1', \
              '[{{\"type\":\"NotFound\",\"value\":\"user 42 not found\"}}]', '{{\"region\":\"eu\"}}', \
              NULL, NULL, '[]', \
              '{{\"event_id\":\"{id}\",\"level\":\"error\",\"service\":\"shop\",\"release\":\"{release}\",\
\"exception\":[{{\"type\":\"NotFound\",\"value\":\"user 42 not found\"}}],\"tags\":{{\"region\":\"eu\"}}}}')",
            t = ts(minute)
        )
    };
    vec![
        "INSERT INTO projects (name, key_hash, key_prefix, created_at) \
         VALUES ('shop', 'hash', 'efk_abc', CURRENT_TIMESTAMP)"
            .to_string(),
        format!(
            "INSERT INTO error_groups (project_id, fingerprint, fingerprint_version, cluster_key, \
             service, error_type, title, level, first_seen, last_seen, count) VALUES \
             (1, 'fp1', 1, 'shop:NotFound', 'shop', 'NotFound', 'NotFound: user <int> not found', \
              'error', {}, {}, 2)",
            ts(0),
            ts(5)
        ),
        event(EVENT_A, "1.0.0", 0),
        event(EVENT_B, "1.1.0", 5),
    ]
}

async fn check_upgrade(db: &TestDb) {
    // The rows are there, with their JSON.
    let a = Uuid::parse_str(EVENT_A).unwrap();
    let stored = db
        .get_event(a)
        .await
        .unwrap()
        .expect("event kept by the upgrade");
    assert_eq!(stored.group_id, 1);
    assert_eq!(stored.release.as_deref(), Some("1.0.0"));
    assert_eq!(stored.data["exception"][0]["value"], "user 42 not found");
    let page = db
        .list_events(&EventQuery {
            group_id: Some(1),
            ..EventQuery::default()
        })
        .await
        .unwrap();
    assert_eq!(page.events.len(), 2);

    // Deduplication still holds on the rebuilt table: re-sending event A
    // stores nothing, a new event is stored in the same project.
    let mut again = event(
        1,
        "fp1",
        Utc.with_ymd_and_hms(2026, 11, 27, 12, 0, 0).unwrap(),
    );
    again.event_id = a;
    again.event.event_id = a;
    let fresh = event(
        1,
        "fp1",
        Utc.with_ymd_and_hms(2026, 11, 27, 12, 1, 0).unwrap(),
    );
    let outcomes = db.insert_events(&[again, fresh]).await.unwrap();
    assert_eq!(outcomes[0], InsertOutcome::Duplicate);
    assert!(matches!(outcomes[1], InsertOutcome::Stored { .. }));
}

#[tokio::test]
async fn sqlite_upgrade_keeps_events_and_records_releases() {
    let db = sqlite_store_unmigrated().await;
    let pool = sqlx::SqlitePool::connect(&db.url).await.unwrap();
    first_release_migrator("sqlite")
        .await
        .run(&pool)
        .await
        .expect("first release schema");
    let ts = |minute: u32| format!("'2026-11-27T10:{minute:02}:00.000000Z'");
    for sql in old_rows(&ts) {
        sqlx::query(&sql).execute(&pool).await.expect(&sql);
    }
    let applied = db.migrate().await.expect("upgrade to the current schema");
    assert_upgraded_past_first_release(&applied, SQLITE_MIGRATIONS);

    check_upgrade(&db).await;
    let releases: Vec<(String, String)> =
        sqlx::query_as("SELECT version, first_seen FROM releases ORDER BY version")
            .fetch_all(&pool)
            .await
            .unwrap();
    assert_eq!(
        releases,
        vec![
            (
                "1.0.0".to_string(),
                "2026-11-27T10:00:00.000000Z".to_string()
            ),
            (
                "1.1.0".to_string(),
                "2026-11-27T10:05:00.000000Z".to_string()
            ),
        ]
    );
    // The parts of the JSON are still columns, in the view.
    let (exception, tags): (String, String) =
        sqlx::query_as("SELECT exception, tags FROM error_events WHERE event_id = ?")
            .bind(EVENT_A)
            .fetch_one(&pool)
            .await
            .unwrap();
    assert!(exception.contains("user 42 not found"), "{exception}");
    assert_eq!(tags, r#"{"region":"eu"}"#);
    pool.close().await;
}

#[tokio::test]
async fn postgres_upgrade_keeps_events_and_records_releases() {
    let db = pg_store_unmigrated().await;
    let pool = sqlx::PgPool::connect(&db.url).await.unwrap();
    first_release_migrator("postgres")
        .await
        .run(&pool)
        .await
        .expect("first release schema");
    let ts = |minute: u32| format!("'2026-11-27T10:{minute:02}:00Z'::timestamptz");
    for sql in old_rows(&ts) {
        sqlx::query(&sql).execute(&pool).await.expect(&sql);
    }
    let applied = db.migrate().await.expect("upgrade to the current schema");
    assert_upgraded_past_first_release(&applied, POSTGRES_MIGRATIONS);

    check_upgrade(&db).await;
    let releases: Vec<(String, chrono::DateTime<Utc>)> =
        sqlx::query_as("SELECT version, first_seen FROM releases ORDER BY version")
            .fetch_all(&pool)
            .await
            .unwrap();
    assert_eq!(
        releases,
        vec![
            (
                "1.0.0".to_string(),
                Utc.with_ymd_and_hms(2026, 11, 27, 10, 0, 0).unwrap()
            ),
            (
                "1.1.0".to_string(),
                Utc.with_ymd_and_hms(2026, 11, 27, 10, 5, 0).unwrap()
            ),
        ]
    );
    let (exception, tags): (serde_json::Value, serde_json::Value) =
        sqlx::query_as("SELECT exception, tags FROM error_events WHERE event_id = $1")
            .bind(Uuid::parse_str(EVENT_A).unwrap())
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(exception[0]["value"], "user 42 not found");
    assert_eq!(tags["region"], "eu");
    pool.close().await;
}

/// Event documents are compressed with lz4 (0007) on a server built with
/// it, as Debian's Postgres is: checked on the column and on a stored
/// Sentry-size document, which Postgres compresses once it is over about
/// 2 KB. A server built without lz4 keeps its default compression, and the
/// migration still succeeds: the test checks whichever the server is.
#[tokio::test]
async fn postgres_event_documents_are_compressed_with_lz4_where_the_server_has_it() {
    let db = common::pg_store().await;
    let pool = sqlx::PgPool::connect(&db.url).await.unwrap();
    let (server_has_lz4,): (bool,) = sqlx::query_as(
        "SELECT 'lz4' = ANY(enumvals) FROM pg_settings WHERE name = 'default_toast_compression'",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    let (column,): (String,) = sqlx::query_as(
        "SELECT attcompression::text FROM pg_attribute \
         WHERE attrelid = 'errors'::regclass AND attname = 'data'",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    // `l`: lz4; empty: the server's default.
    let expected_column = if server_has_lz4 { "l" } else { "" };
    assert_eq!(
        column, expected_column,
        "lz4 on this server: {server_has_lz4}"
    );

    let project = db.create_project("shop", "h1", "efk_aaaa").await.unwrap();
    let mut e = event(project.id, "fp", Utc::now());
    e.event.extra.insert(
        "context".into(),
        serde_json::json!(vec!["    amount = order.total()  # a line of context"; 200]),
    );
    let outcomes = db.insert_events(&[e]).await.unwrap();
    assert!(
        matches!(outcomes[0], InsertOutcome::Stored { .. }),
        "{outcomes:?}"
    );
    let (method,): (Option<String>,) =
        sqlx::query_as("SELECT pg_column_compression(data) FROM errors")
            .fetch_one(&pool)
            .await
            .unwrap();
    let expected_method = if server_has_lz4 { "lz4" } else { "pglz" };
    assert_eq!(method.as_deref(), Some(expected_method));
    pool.close().await;
}

/// Events carry no foreign keys on Postgres (0008: checking them was a
/// third of an insert's cost), yet deleting incidents by hand, or a project
/// with its incidents, still deletes their events, through a trigger.
#[tokio::test]
async fn postgres_deleting_incidents_deletes_their_events() {
    let db = common::pg_store().await;
    let pool = sqlx::PgPool::connect(&db.url).await.unwrap();
    let (foreign_keys,): (i64,) = sqlx::query_as(
        "SELECT count(*) FROM pg_constraint WHERE conrelid = 'errors'::regclass AND contype = 'f'",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(foreign_keys, 0);

    let shop = db.create_project("shop", "h1", "efk_aaaa").await.unwrap();
    let blog = db.create_project("blog", "h2", "efk_bbbb").await.unwrap();
    let now = Utc::now();
    let events = vec![
        event(shop.id, "a", now),
        event(shop.id, "a", now),
        event(shop.id, "b", now),
        event(blog.id, "a", now),
    ];
    let outcomes = db.insert_events(&events).await.unwrap();
    assert!(
        outcomes
            .iter()
            .all(|o| matches!(o, InsertOutcome::Stored { .. })),
        "{outcomes:?}"
    );
    let remaining = |pool: sqlx::PgPool| async move {
        let rows: Vec<(i64, String)> = sqlx::query_as(
            "SELECT project_id, fingerprint FROM errors ORDER BY project_id, fingerprint",
        )
        .fetch_all(&pool)
        .await
        .unwrap();
        rows
    };

    sqlx::query("DELETE FROM error_groups WHERE project_id = $1 AND fingerprint = 'a'")
        .bind(shop.id)
        .execute(&pool)
        .await
        .unwrap();
    assert_eq!(
        remaining(pool.clone()).await,
        [(shop.id, "b".to_string()), (blog.id, "a".to_string())]
    );

    sqlx::query("DELETE FROM projects WHERE id = $1")
        .bind(shop.id)
        .execute(&pool)
        .await
        .unwrap();
    assert_eq!(remaining(pool.clone()).await, [(blog.id, "a".to_string())]);
    pool.close().await;
}

/// The steps of SQLite's plan for `query` (`EXPLAIN QUERY PLAN …`); its
/// rows are (id, parent, notused, detail).
async fn sqlite_plan<'q>(
    pool: &sqlx::SqlitePool,
    query: sqlx::query::Query<'q, sqlx::Sqlite, sqlx::sqlite::SqliteArguments<'q>>,
    name: &str,
) -> Vec<String> {
    query
        .fetch_all(pool)
        .await
        .unwrap_or_else(|e| panic!("{name}: {e}"))
        .iter()
        .map(|row| sqlx::Row::get::<String, _>(row, "detail"))
        .collect()
}

/// A connection to `url` on which the planner may neither scan a table
/// nor sort: on the tests' empty tables both cost nothing, so only this
/// shows whether an index can serve a statement.
async fn pg_planner_without_scans_or_sorts(url: &str) -> sqlx::PgConnection {
    let mut conn = <sqlx::PgConnection as sqlx::Connection>::connect(url)
        .await
        .unwrap();
    for setting in ["SET enable_seqscan = off", "SET enable_sort = off"] {
        sqlx::query(setting).execute(&mut conn).await.unwrap();
    }
    conn
}

/// The event listings (an incident's events and all events, newest first,
/// from the start or from a cursor, and the events just older and newer than
/// one) read the time indexes, in either direction, instead of sorting the
/// events: on both backends. The statements are built by the very functions
/// the stores' `list_events` and `event_neighbors` call.
#[tokio::test]
async fn event_listings_read_an_index_not_a_sort() {
    use errorflow_collector::store::{push_event_listing, push_event_neighbor, Neighbor};
    use sqlx::{Database, QueryBuilder};

    /// Each listing's name and its statement after `prefix`, with `at` as
    /// the cursor's or the event's time.
    fn listings<'a, DB, At>(prefix: &str, at: At) -> Vec<(String, QueryBuilder<'a, DB>)>
    where
        DB: Database,
        i64: sqlx::Encode<'a, DB> + sqlx::Type<DB>,
        String: sqlx::Encode<'a, DB> + sqlx::Type<DB>,
        At: sqlx::Encode<'a, DB> + sqlx::Type<DB> + Clone + 'a,
    {
        let mut out = Vec::new();
        for group_id in [Some(1), None] {
            for after in [None, Some((at.clone(), 5))] {
                let query = EventQuery {
                    group_id,
                    ..EventQuery::default()
                };
                let mut qb = QueryBuilder::new(format!("{prefix} "));
                let name = format!(
                    "list_events(group {group_id:?}, cursor {})",
                    after.is_some()
                );
                push_event_listing(&mut qb, "*", &query, after, 50);
                out.push((name, qb));
            }
        }
        for which in [Neighbor::Older, Neighbor::Newer] {
            let mut qb = QueryBuilder::new(format!("{prefix} "));
            push_event_neighbor(&mut qb, which, 1, at.clone(), 5);
            out.push((format!("event_neighbors({which:?})"), qb));
        }
        out
    }

    let db = common::sqlite_store().await;
    let pool = sqlx::SqlitePool::connect(&db.url).await.unwrap();
    // The SQLite store binds times as text in this format.
    let at = "2026-11-28T10:00:00.000000Z".to_string();
    for (name, mut qb) in listings::<sqlx::Sqlite, _>("EXPLAIN QUERY PLAN", at) {
        let plan = sqlite_plan(&pool, qb.build(), &name).await;
        assert!(
            plan.iter().any(|step| step.contains("INDEX errors_")),
            "{name}: {plan:?}"
        );
        assert!(
            !plan.iter().any(|step| step.contains("TEMP B-TREE")),
            "{name} sorts: {plan:?}"
        );
    }
    pool.close().await;

    let db = common::pg_store().await;
    let mut conn = pg_planner_without_scans_or_sorts(&db.url).await;
    let at = Utc.with_ymd_and_hms(2026, 11, 28, 10, 0, 0).unwrap();
    for (name, mut qb) in listings::<sqlx::Postgres, _>("EXPLAIN", at) {
        let plan: Vec<String> = qb
            .build_query_scalar()
            .fetch_all(&mut conn)
            .await
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(
            plan.iter()
                .any(|step| step.contains("Scan") && step.contains(" using errors_")),
            "{name}: {plan:?}"
        );
        assert!(
            !plan.iter().any(|step| step.contains("Sort")),
            "{name} sorts: {plan:?}"
        );
    }
    sqlx::Connection::close(conn).await.unwrap();
}

/// Retention and the deletion of incidents and projects run chunk after
/// chunk while ingest goes on, on tables that grow large: each statement
/// must find its rows through an index, never scan a whole table (which
/// would make every chunk cost as much as the table).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deletions_read_an_index_not_a_scan() {
    use errorflow_collector::store::{postgres, sqlite};
    /// The statements with what their first parameter is: a time or an id.
    fn statements(d: [&'static str; 5]) -> Vec<(&'static str, &'static str, bool)> {
        let names = [
            "group events",
            "project events",
            "project groups",
            "expired events",
            "empty idle groups",
        ];
        let is_time = [false, false, false, true, true];
        (0..5).map(|i| (names[i], d[i], is_time[i])).collect()
    }

    let db = common::sqlite_store().await;
    let pool = sqlx::SqlitePool::connect(&db.url).await.unwrap();
    let d = [
        sqlite::deletions::GROUP_EVENTS,
        sqlite::deletions::PROJECT_EVENTS,
        sqlite::deletions::PROJECT_GROUPS,
        sqlite::deletions::EXPIRED_EVENTS,
        sqlite::deletions::EMPTY_IDLE_GROUPS,
    ];
    for (name, sql, is_time) in statements(d) {
        let explain = format!("EXPLAIN QUERY PLAN {sql}");
        let query = sqlx::query(&explain);
        let query = if is_time {
            query.bind("2026-11-28T10:00:00.000000Z")
        } else {
            query.bind(1_i64)
        };
        let plan = sqlite_plan(&pool, query.bind(1000_i64), name).await;
        // A step "SCAN t" reads all of t; "SEARCH t USING … INDEX" does not.
        assert!(
            !plan.iter().any(|step| step.starts_with("SCAN ")),
            "{name} scans a table: {plan:?}"
        );
        assert!(
            !plan.iter().any(|step| step.contains("TEMP B-TREE")),
            "{name} sorts: {plan:?}"
        );
    }
    pool.close().await;

    let db = common::pg_store().await;
    let mut conn = pg_planner_without_scans_or_sorts(&db.url).await;
    let d = [
        postgres::deletions::GROUP_EVENTS,
        postgres::deletions::PROJECT_EVENTS,
        postgres::deletions::PROJECT_GROUPS,
        postgres::deletions::EXPIRED_EVENTS,
        postgres::deletions::EMPTY_IDLE_GROUPS,
    ];
    for (name, sql, is_time) in statements(d) {
        let explain = format!("EXPLAIN {sql}");
        let query = sqlx::query_scalar::<_, String>(&explain);
        let query = if is_time {
            query.bind(Utc.with_ymd_and_hms(2026, 11, 28, 10, 0, 0).unwrap())
        } else {
            query.bind(1_i64)
        };
        let plan: Vec<String> = query
            .bind(1000_i64)
            .fetch_all(&mut conn)
            .await
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(
            !plan.iter().any(|step| step.contains("Seq Scan")),
            "{name} scans a table: {plan:?}"
        );
        assert!(
            !plan.iter().any(|step| step.contains("Sort")),
            "{name} sorts: {plan:?}"
        );
    }
    sqlx::Connection::close(conn).await.unwrap();
}

/// Several collectors may start together on one new Postgres database: each
/// first lists the pending migrations, then runs them, both under the
/// migrator's advisory lock. All must come up, and each migration must be
/// applied once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn collectors_starting_together_on_a_new_postgres_database() {
    let db = pg_store_unmigrated().await;
    let mut starting = tokio::task::JoinSet::new();
    starting.spawn({
        let store = db.store.clone();
        async move { store.migrate().await }
    });
    for _ in 0..3 {
        let store = errorflow_collector::store::connect(&db.url).await.unwrap();
        starting.spawn(async move { store.migrate().await });
    }
    let mut reported = Vec::new();
    while let Some(result) = starting.join_next().await {
        reported.push(result.unwrap().expect("every collector migrates"));
    }
    // Each reports what was pending when it looked: everything, or nothing
    // if another had already applied it.
    for pending in &reported {
        assert!(
            pending.is_empty() || pending == POSTGRES_MIGRATIONS,
            "{pending:?}"
        );
    }
    assert!(reported.iter().any(|p| !p.is_empty()));
    let pool = sqlx::PgPool::connect(&db.url).await.unwrap();
    let versions: Vec<i64> =
        sqlx::query_scalar("SELECT version FROM _sqlx_migrations WHERE success ORDER BY version")
            .fetch_all(&pool)
            .await
            .unwrap();
    // The versions listed, which need not be contiguous.
    let expected: Vec<i64> = POSTGRES_MIGRATIONS
        .iter()
        .map(|m| m.split(' ').next().unwrap().parse().unwrap())
        .collect();
    assert_eq!(versions, expected);
    pool.close().await;
}
