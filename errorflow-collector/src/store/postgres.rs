//! Postgres backend: a connection pool shared by tasks, safe for several
//! collector processes on one database. Incident rows are the unit of
//! locking: every writer locks the groups it touches, in one global order.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::postgres::{PgPoolOptions, PgRow};
use sqlx::types::Json;
use sqlx::{PgPool, Postgres, QueryBuilder, Row};
use uuid::Uuid;

use super::shared::{self, GroupKey, LockedGroup, LockedGroups, Neighbor};
use super::{triage_record, Backend, Result, Store, StoreError};
use crate::model::*;
use crate::triage::result::{NewTriage, Severity, TriageRecord};

/// Postgres's limit on bound parameters per statement.
const MAX_BINDS: usize = 65535;

/// How often a batch is retried after Postgres broke a deadlock by aborting it.
const DEADLOCK_RETRIES: usize = 5;

const GROUP_COLUMNS: &str = "id, project_id, cluster_key, fingerprint, fingerprint_version, \
    service, error_type, title, culprit, level, status, count, first_seen, last_seen, severity, \
    priority, summary, ai_summary, ai_next_steps, resolution_reason, resolved_at, \
    resolved_in_release, regression_count, regressed_at, last_release, last_environment, \
    priority_override, severity_override";

fn group_from_row(row: &PgRow) -> Result<Group> {
    Ok(Group {
        id: row.try_get("id")?,
        project_id: row.try_get("project_id")?,
        cluster_key: row.try_get("cluster_key")?,
        fingerprint: row.try_get("fingerprint")?,
        fingerprint_version: row.try_get("fingerprint_version")?,
        service: row.try_get("service")?,
        error_type: row.try_get("error_type")?,
        title: row.try_get("title")?,
        culprit: row.try_get("culprit")?,
        level: row.try_get("level")?,
        status: GroupStatus::from_db(row.try_get::<&str, _>("status")?),
        count: row.try_get("count")?,
        first_seen: row.try_get("first_seen")?,
        last_seen: row.try_get("last_seen")?,
        severity: row.try_get("severity")?,
        priority: row.try_get("priority")?,
        summary: row.try_get("summary")?,
        ai_summary: row.try_get("ai_summary")?,
        ai_next_steps: row.try_get("ai_next_steps")?,
        resolution_reason: row.try_get("resolution_reason")?,
        resolved_at: row.try_get("resolved_at")?,
        resolved_in_release: row.try_get("resolved_in_release")?,
        regression_count: row.try_get("regression_count")?,
        regressed_at: row.try_get("regressed_at")?,
        last_release: row.try_get("last_release")?,
        last_environment: row.try_get("last_environment")?,
        priority_override: row.try_get("priority_override")?,
        severity_override: row.try_get("severity_override")?,
    })
}

const EVENT_COLUMNS_SQL: &str = "id, project_id, group_id, event_id, timestamp, received_at, \
    level, service, error_type, message, env, path, trace_id, release, host, data";

fn event_from_row(row: &PgRow) -> Result<StoredEvent> {
    let data: &str = row.try_get("data")?;
    let data: serde_json::Value = serde_json::from_str(data)
        .map_err(|e| StoreError::Corrupt(format!("an event's stored document is not JSON: {e}")))?;
    Ok(StoredEvent {
        id: row.try_get("id")?,
        project_id: row.try_get("project_id")?,
        group_id: row.try_get("group_id")?,
        event_id: row.try_get("event_id")?,
        timestamp: row.try_get("timestamp")?,
        received_at: row.try_get("received_at")?,
        level: row.try_get("level")?,
        service: row.try_get("service")?,
        error_type: row.try_get("error_type")?,
        message: row.try_get("message")?,
        env: row.try_get("env")?,
        path: row.try_get("path")?,
        trace_id: row.try_get("trace_id")?,
        release: row.try_get("release")?,
        host: row.try_get("host")?,
        data,
    })
}

const TOKEN_COLUMNS: &str = "id, name, created_at, last_used_at";

fn token_from_row(row: &PgRow) -> Result<ApiToken> {
    Ok(ApiToken {
        id: row.try_get("id")?,
        name: row.try_get("name")?,
        created_at: row.try_get("created_at")?,
        last_used_at: row.try_get("last_used_at")?,
    })
}

fn project_from_row(row: &PgRow) -> Result<Project> {
    Ok(Project {
        id: row.try_get("id")?,
        name: row.try_get("name")?,
        key_prefix: row.try_get("key_prefix")?,
        created_at: row.try_get("created_at")?,
    })
}

fn activity_from_row(row: &PgRow) -> Result<Activity> {
    let from: Option<&str> = row.try_get("from_status")?;
    let to: Option<&str> = row.try_get("to_status")?;
    Ok(Activity {
        id: row.try_get("id")?,
        group_id: row.try_get("group_id")?,
        kind: row.try_get("kind")?,
        actor: row.try_get("actor")?,
        from_status: from.map(GroupStatus::from_db),
        to_status: to.map(GroupStatus::from_db),
        reason: row.try_get("reason")?,
        at: row.try_get("at")?,
    })
}

/// Whether `e` violated the named unique constraint.
fn violates(e: &sqlx::Error, constraint: &str) -> bool {
    matches!(e, sqlx::Error::Database(db) if db.is_unique_violation() && db.constraint() == Some(constraint))
}

/// Whether the whole transaction can simply be retried: Postgres aborted it
/// to break a deadlock or a serialisation conflict, or an incident it found
/// unlocked was deleted before it locked it; the retry creates it.
fn is_retryable(e: &StoreError) -> bool {
    match e {
        StoreError::Conflict(_) => true,
        StoreError::Database(sqlx::Error::Database(db)) => {
            matches!(
                db.code().as_deref(),
                Some("40P01") | Some("40001") | Some("23503")
            )
        }
        _ => false,
    }
}

/// The chunked deletions of retention and of deleting incidents and
/// projects: each takes a key (a time, or an id) and a row limit. Public so
/// that `tests/migrations.rs` checks their plans: each must read an index.
/// Incidents are taken `FOR UPDATE SKIP LOCKED`: one a writer has locked is
/// getting an event; one a writer has found but not locked yet may go, and
/// the writer then retries its batch and creates it anew (`lock_groups`).
/// A writer that locks its incidents as it finds them (an exclusive batch)
/// simply does not find one deleted first, and creates it anew.
pub mod deletions {
    /// An incident's events.
    pub const GROUP_EVENTS: &str =
        "DELETE FROM errors WHERE id IN (SELECT id FROM errors WHERE group_id = $1 LIMIT $2)";
    /// A project's events, through its incidents (errors_group_received).
    pub const PROJECT_EVENTS: &str = "DELETE FROM errors WHERE id IN (SELECT e.id \
         FROM error_groups g JOIN errors e ON e.group_id = g.id WHERE g.project_id = $1 LIMIT $2)";
    /// A project's incidents.
    pub const PROJECT_GROUPS: &str = "DELETE FROM error_groups WHERE id IN (SELECT id \
         FROM error_groups WHERE project_id = $1 LIMIT $2 FOR UPDATE SKIP LOCKED)";
    /// Events received before a time, oldest first along errors_received.
    pub const EXPIRED_EVENTS: &str = "DELETE FROM errors WHERE id IN (SELECT id FROM errors \
         WHERE received_at < $1 ORDER BY received_at, id LIMIT $2)";
    /// Incidents without events, last seen before a time.
    pub const EMPTY_IDLE_GROUPS: &str = "DELETE FROM error_groups WHERE id IN (SELECT g.id \
         FROM error_groups g WHERE g.last_seen < $1 \
         AND NOT EXISTS (SELECT 1 FROM errors e WHERE e.group_id = g.id) \
         ORDER BY g.last_seen, g.id LIMIT $2 FOR UPDATE SKIP LOCKED)";
}

pub struct PgStore {
    pub pool: PgPool,
}

impl PgStore {
    /// The result stored first under an idempotency key (what
    /// `save_triage_once` answers to a repeated key).
    async fn first_keyed_result(
        &self,
        group_id: i64,
        triage_id: Option<i64>,
    ) -> Result<Option<(TriageRecord, bool)>> {
        let found = match triage_id {
            Some(id) => self
                .triage_history(group_id, 100)
                .await?
                .into_iter()
                .find(|r| r.id == id),
            None => None,
        };
        found.map(|r| Some((r, false))).ok_or_else(|| {
            StoreError::Conflict("the idempotency key was used for another result".into())
        })
    }

    pub async fn connect(url: &str) -> Result<Self> {
        // A pool reports a server it cannot reach only as a timeout, after
        // `acquire_timeout`; one direct connection first says at once why
        // (refused, unknown host, no such database, authentication).
        sqlx::Connection::close(<sqlx::PgConnection as sqlx::Connection>::connect(url).await?)
            .await?;
        let pool = PgPoolOptions::new()
            .max_connections(16)
            .acquire_timeout(Duration::from_secs(10))
            .connect(url)
            .await?;
        Ok(PgStore { pool })
    }

    /// One chunk of a deletion: a statement of [`deletions`] with its key
    /// and row limit.
    async fn delete_chunk<K>(&self, sql: &'static str, key: K, limit: u32) -> Result<u64>
    where
        K: for<'q> sqlx::Encode<'q, Postgres> + sqlx::Type<Postgres> + Send + 'static,
    {
        let done = sqlx::query(sql)
            .bind(key)
            .bind(i64::from(limit))
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected())
    }

    async fn fetch_group(
        conn: &mut sqlx::PgConnection,
        id: i64,
        for_update: bool,
    ) -> Result<Option<Group>> {
        // NO KEY UPDATE: the incident's id does not change, so the
        // key-share locks that inserts into its counter and activity tables
        // take (their foreign keys) need not be waited for.
        let lock = if for_update { " FOR NO KEY UPDATE" } else { "" };
        let sql = format!("SELECT {GROUP_COLUMNS} FROM error_groups WHERE id = $1{lock}");
        let row = sqlx::query(&sql).bind(id).fetch_optional(conn).await?;
        row.as_ref().map(group_from_row).transpose()
    }

    /// Creates missing groups and returns all groups of the batch. With
    /// `lock`, they are locked as they are found (FOR NO KEY UPDATE, in id
    /// order; the groups this inserts are locked by the insert) and stay so
    /// until the commit; without, [`PgStore::lock_groups`] locks them later.
    async fn ensure_groups(
        tx: &mut sqlx::PgConnection,
        events: &[NormalizedEvent],
        plan: &shared::BatchPlan,
        lock: bool,
    ) -> Result<LockedGroups> {
        let mut groups = LockedGroups::default();
        let group_from = |row: &PgRow, created: bool| -> Result<(GroupKey, LockedGroup)> {
            Ok((
                (row.try_get("project_id")?, row.try_get("fingerprint")?),
                LockedGroup {
                    id: row.try_get("id")?,
                    status: GroupStatus::from_db(row.try_get::<&str, _>("status")?),
                    resolved_in_release: row.try_get("resolved_in_release")?,
                    created,
                },
            ))
        };
        // Look the groups up first: under load almost every batch finds all
        // of them, and then this is its only statement. Those missing are
        // inserted; an insert that meets a concurrent insert of the same
        // key waits for it (DO NOTHING), and the next round finds the
        // group if that transaction committed it. A committed group is
        // deleted only by retention (no event left, idle for the retention
        // period) or by hand; lock_groups notices and the batch is retried.
        // When locking here, a group deleted while the lookup waited for its
        // lock is not returned, and the next statement creates it anew.
        for _ in 0..3 {
            let missing: Vec<&(GroupKey, usize)> = plan
                .groups
                .iter()
                .filter(|(k, _)| !groups.contains(k))
                .collect();
            if missing.is_empty() {
                break;
            }
            let project_ids: Vec<i64> = missing.iter().map(|((p, _), _)| *p).collect();
            let fingerprints: Vec<&str> = missing.iter().map(|((_, f), _)| f.as_str()).collect();
            macro_rules! find {
                () => {
                    "SELECT id, project_id, fingerprint, status, resolved_in_release \
                     FROM error_groups \
                     WHERE (project_id, fingerprint) IN (SELECT * FROM UNNEST($1::bigint[], $2::text[]))"
                };
            }
            let sql = if lock {
                concat!(find!(), " ORDER BY id FOR NO KEY UPDATE")
            } else {
                find!()
            };
            let rows = sqlx::query(sql)
                .bind(&project_ids)
                .bind(&fingerprints)
                .fetch_all(&mut *tx)
                .await?;
            for row in &rows {
                let (key, group) = group_from(row, false)?;
                groups.insert(key, group);
            }
            let missing: Vec<&&(GroupKey, usize)> = missing
                .iter()
                .filter(|(k, _)| !groups.contains(k))
                .collect();
            for chunk in shared::pow2_chunks(&missing, MAX_BINDS / 11) {
                let mut qb: QueryBuilder<Postgres> = QueryBuilder::new(
                    "INSERT INTO error_groups (project_id, fingerprint, fingerprint_version, \
                     cluster_key, service, error_type, title, culprit, level, first_seen, last_seen) ",
                );
                qb.push_values(chunk, |mut b, (_, i)| {
                    let ev = &events[*i];
                    b.push_bind(ev.project_id)
                        .push_bind(&ev.fingerprint)
                        .push_bind(ev.fingerprint_version)
                        .push_bind(&ev.cluster_key)
                        .push_bind(&ev.service)
                        .push_bind(&ev.error_type)
                        .push_bind(&ev.title)
                        .push_bind(&ev.culprit)
                        .push_bind(ev.level.as_str())
                        .push_bind(ev.timestamp)
                        .push_bind(ev.timestamp);
                });
                qb.push(
                    " ON CONFLICT (project_id, fingerprint) DO NOTHING \
                     RETURNING id, project_id, fingerprint, status, resolved_in_release",
                );
                for row in qb.build().fetch_all(&mut *tx).await? {
                    let (key, group) = group_from(&row, true)?;
                    groups.insert(key, group);
                }
            }
        }
        if groups.len() != plan.groups.len() {
            return Err(StoreError::Corrupt(
                "groups kept vanishing while the batch was being stored".to_string(),
            ));
        }
        Ok(groups)
    }

    /// Locks the batch's groups, in id order so that concurrent batches
    /// cannot deadlock, and refreshes what was read before the lock (status,
    /// release) from the locked rows.
    ///
    /// The event inserts take no lock on the incidents (`errors` has no
    /// foreign keys since migration 0008), so shared batches insert their
    /// events in parallel and wait for each other only here, for the short
    /// update of the incidents and their counters.
    async fn lock_groups(tx: &mut sqlx::PgConnection, groups: &mut LockedGroups) -> Result<()> {
        let mut ids: Vec<i64> = groups.values().map(|g| g.id).collect();
        ids.sort_unstable();
        let rows = sqlx::query(
            "SELECT id, status, resolved_in_release FROM error_groups \
             WHERE id = ANY($1) ORDER BY id FOR NO KEY UPDATE",
        )
        .bind(&ids)
        .fetch_all(&mut *tx)
        .await?;
        let mut fresh: HashMap<i64, (GroupStatus, Option<String>)> = HashMap::new();
        for row in rows {
            fresh.insert(
                row.try_get("id")?,
                (
                    GroupStatus::from_db(row.try_get::<&str, _>("status")?),
                    row.try_get("resolved_in_release")?,
                ),
            );
        }
        for group in groups.values_mut() {
            // Found unlocked, it may have been deleted since (by retention,
            // or by hand with its project); the retry creates it anew.
            let (status, release) = fresh.remove(&group.id).ok_or_else(|| {
                StoreError::Conflict(format!("incident {} was deleted during ingest", group.id))
            })?;
            group.status = status;
            group.resolved_in_release = release;
        }
        Ok(())
    }

    /// [`PgStore::insert_batch`], retried when Postgres aborted it to break
    /// a deadlock or the like.
    async fn insert_with_retries(
        &self,
        events: &[NormalizedEvent],
        exclusive: bool,
    ) -> Result<Vec<InsertOutcome>> {
        if events.is_empty() {
            return Ok(Vec::new());
        }
        let mut attempt = 0;
        loop {
            match self.insert_batch(events, exclusive).await {
                Err(e) if is_retryable(&e) && attempt < DEADLOCK_RETRIES => {
                    attempt += 1;
                    tracing::debug!(attempt, error = %e, "retrying event batch");
                }
                other => return other,
            }
        }
    }

    /// One batch in one transaction. `exclusive`: no other writer of this
    /// collector stores events of these incidents meanwhile, so they are
    /// locked at once, for the whole transaction, without waiting for
    /// anyone but a user's transition or a deletion. Otherwise they are
    /// locked only for the update (after the event inserts, which concurrent
    /// batches then make in parallel): a request of a hundred events spans
    /// many incidents, which another writer's batches may share.
    async fn insert_batch(
        &self,
        events: &[NormalizedEvent],
        exclusive: bool,
    ) -> Result<Vec<InsertOutcome>> {
        let plan = shared::plan_batch(events);
        let mut tx = self.pool.begin().await?;

        // (1) Make sure every group of the batch exists.
        let mut groups = Self::ensure_groups(&mut tx, events, &plan, exclusive).await?;

        // (2) Insert the events; those that come back are new. Sorting by
        // event id keeps concurrent re-sends of one batch from deadlocking.
        let mut candidates = plan.candidates.clone();
        candidates.sort_by_key(|&i| (events[i].project_id, events[i].event_id));
        // One statement with one array per column, whatever the batch size:
        // Postgres parses and plans it once per connection, where a
        // multi-row VALUES list would be a new statement for every size.
        let rows = candidates.len();
        let mut project_ids = Vec::with_capacity(rows);
        let mut group_ids = Vec::with_capacity(rows);
        let mut event_ids = Vec::with_capacity(rows);
        let mut services = Vec::with_capacity(rows);
        let mut error_types = Vec::with_capacity(rows);
        let mut messages = Vec::with_capacity(rows);
        let mut timestamps = Vec::with_capacity(rows);
        let mut received = Vec::with_capacity(rows);
        let mut envs = Vec::with_capacity(rows);
        let mut paths = Vec::with_capacity(rows);
        let mut trace_ids = Vec::with_capacity(rows);
        let mut levels = Vec::with_capacity(rows);
        let mut releases = Vec::with_capacity(rows);
        let mut hosts = Vec::with_capacity(rows);
        let mut fingerprints = Vec::with_capacity(rows);
        let mut data = Vec::with_capacity(rows);
        for &i in &candidates {
            let ev = &events[i];
            // ensure_groups found or created every group of the batch.
            let group = groups.of(ev)?;
            project_ids.push(ev.project_id);
            group_ids.push(group.id);
            event_ids.push(ev.event_id);
            services.push(ev.service.as_str());
            error_types.push(ev.error_type.as_str());
            messages.push(ev.message.as_str());
            timestamps.push(ev.timestamp);
            received.push(ev.received_at);
            envs.push(ev.environment.as_str());
            paths.push(ev.path.as_str());
            trace_ids.push(ev.trace_id.as_str());
            levels.push(ev.level.as_str());
            releases.push(ev.release.as_deref());
            hosts.push(ev.host.as_deref());
            fingerprints.push(ev.fingerprint.as_str());
            data.push(ev.event_json());
        }
        // The batch's releases are recorded by the same statement; step 3
        // reads them. A shared batch records them before it takes its
        // incident locks, so that waiting on another batch's new release
        // cannot deadlock. An exclusive batch holds its locks already; it
        // and a shared batch may then deadlock over a new release and an
        // incident, rarely, and Postgres aborts one of them, which is
        // retried.
        let seen = shared::batch_releases(events);
        let release_projects: Vec<i64> = seen.iter().map(|((p, _), _)| *p).collect();
        let release_versions: Vec<&str> = seen.iter().map(|((_, v), _)| v.as_str()).collect();
        let release_first: Vec<DateTime<Utc>> = seen.iter().map(|(_, at)| *at).collect();
        let rows = sqlx::query(
            "WITH new_releases AS ( \
               INSERT INTO releases (project_id, version, first_seen) \
               SELECT * FROM UNNEST($17::bigint[], $18::text[], $19::timestamptz[]) \
               ON CONFLICT (project_id, version) DO NOTHING \
             ) \
             INSERT INTO errors (project_id, group_id, event_id, service, error_type, message, \
             timestamp, received_at, env, path, trace_id, level, release, host, fingerprint, data) \
             SELECT * FROM UNNEST($1::bigint[], $2::bigint[], $3::uuid[], $4::text[], $5::text[], \
               $6::text[], $7::timestamptz[], $8::timestamptz[], $9::text[], $10::text[], $11::text[], \
               $12::text[], $13::text[], $14::text[], $15::text[], $16::text[]) \
             ON CONFLICT (event_id, project_id) DO NOTHING RETURNING project_id, event_id",
        )
        .bind(&project_ids)
        .bind(&group_ids)
        .bind(&event_ids)
        .bind(&services)
        .bind(&error_types)
        .bind(&messages)
        .bind(&timestamps)
        .bind(&received)
        .bind(&envs)
        .bind(&paths)
        .bind(&trace_ids)
        .bind(&levels)
        .bind(&releases)
        .bind(&hosts)
        .bind(&fingerprints)
        .bind(&data)
        .bind(&release_projects)
        .bind(&release_versions)
        .bind(&release_first)
        .fetch_all(&mut *tx)
        .await?;
        let mut inserted: HashSet<(i64, Uuid)> = HashSet::with_capacity(rows.len());
        for row in rows {
            inserted.insert((row.try_get("project_id")?, row.try_get("event_id")?));
        }

        // (3) Lock the groups, then update them from what was really new.
        if !exclusive {
            Self::lock_groups(&mut tx, &mut groups).await?;
        }
        let releases = release_first_seen(&mut tx, events, &plan, &groups).await?;
        let result = shared::finish_batch(events, &plan, &groups, &inserted, &releases)?;
        // (4) The incidents, their hourly counts and their tag counts, in
        // one statement: each round trip here is made while holding the
        // incidents' locks, which every batch of a busy incident waits for
        // (as three statements, they were 2.2 of the 3 ms that a 20-event
        // batch of Sentry envelopes held them). Each part reads one array
        // per column, so Postgres plans the statement once per connection
        // whatever the number of rows; a part with no rows does nothing. The
        // counter rows belong to incidents this transaction has locked, so
        // no other writer touches them, and they come sorted, so concurrent
        // batches update shared counters in one order. Postgres runs every
        // data-modifying part of a WITH exactly once, read or not.
        // All three come from the batch's new events: none, and all are empty.
        if !result.updates.is_empty() {
            let u = &result.updates;
            let ids: Vec<i64> = u.iter().map(|u| u.id).collect();
            let added: Vec<i64> = u.iter().map(|u| u.added).collect();
            let first: Vec<DateTime<Utc>> = u.iter().map(|u| u.first_seen).collect();
            let last: Vec<DateTime<Utc>> = u.iter().map(|u| u.last_seen).collect();
            let release: Vec<Option<&str>> = u.iter().map(|u| u.last_release.as_deref()).collect();
            let env: Vec<&str> = u.iter().map(|u| u.last_environment.as_str()).collect();
            let status: Vec<&str> = u.iter().map(|u| u.status.as_db()).collect();
            let regressed: Vec<Option<DateTime<Utc>>> = u.iter().map(|u| u.regressed_at).collect();
            let h = &result.hourly;
            let hour_groups: Vec<i64> = h.iter().map(|((g, _), _)| *g).collect();
            let hours: Vec<DateTime<Utc>> = h.iter().map(|((_, at), _)| *at).collect();
            let hour_counts: Vec<i64> = h.iter().map(|(_, n)| *n).collect();
            let t = &result.tags;
            let tag_groups: Vec<i64> = t.iter().map(|((g, _, _), _)| *g).collect();
            let keys: Vec<&str> = t.iter().map(|((_, k, _), _)| k.as_str()).collect();
            let values: Vec<&str> = t.iter().map(|((_, _, v), _)| v.as_str()).collect();
            let tag_counts: Vec<i64> = t.iter().map(|(_, (n, _))| *n).collect();
            let tag_last: Vec<DateTime<Utc>> = t.iter().map(|(_, (_, l))| *l).collect();
            // A group created by this transaction still has count 0 and
            // placeholder times, which are replaced rather than merged.
            sqlx::query(
                "WITH incidents AS ( \
                   UPDATE error_groups g SET \
                     first_seen = CASE WHEN g.count = 0 THEN u.first_seen ELSE LEAST(g.first_seen, u.first_seen) END, \
                     last_release = CASE WHEN g.count = 0 OR u.last_seen >= g.last_seen THEN u.last_release ELSE g.last_release END, \
                     last_environment = CASE WHEN g.count = 0 OR u.last_seen >= g.last_seen THEN u.last_environment ELSE g.last_environment END, \
                     last_seen = CASE WHEN g.count = 0 THEN u.last_seen ELSE GREATEST(g.last_seen, u.last_seen) END, \
                     count = g.count + u.added, \
                     status = u.status, \
                     regression_count = g.regression_count + CASE WHEN u.regressed_at IS NULL THEN 0 ELSE 1 END, \
                     regressed_at = COALESCE(u.regressed_at, g.regressed_at) \
                   FROM UNNEST($1::bigint[], $2::bigint[], $3::timestamptz[], $4::timestamptz[], \
                               $5::text[], $6::text[], $7::text[], $8::timestamptz[]) \
                     AS u(id, added, first_seen, last_seen, last_release, last_environment, status, regressed_at) \
                   WHERE g.id = u.id \
                 ), hourly AS ( \
                   INSERT INTO group_hourly_counts (group_id, hour, count) \
                   SELECT * FROM UNNEST($9::bigint[], $10::timestamptz[], $11::bigint[]) \
                   ON CONFLICT (group_id, hour) DO UPDATE SET count = group_hourly_counts.count + excluded.count \
                 ), tags AS ( \
                   INSERT INTO group_tag_counts (group_id, key, value, count, last_seen) \
                   SELECT * FROM UNNEST($12::bigint[], $13::text[], $14::text[], $15::bigint[], $16::timestamptz[]) \
                   ON CONFLICT (group_id, key, value) DO UPDATE SET \
                     count = group_tag_counts.count + excluded.count, \
                     last_seen = GREATEST(group_tag_counts.last_seen, excluded.last_seen) \
                 ) SELECT 1",
            )
            .bind(&ids)
            .bind(&added)
            .bind(&first)
            .bind(&last)
            .bind(&release)
            .bind(&env)
            .bind(&status)
            .bind(&regressed)
            .bind(&hour_groups)
            .bind(&hours)
            .bind(&hour_counts)
            .bind(&tag_groups)
            .bind(&keys)
            .bind(&values)
            .bind(&tag_counts)
            .bind(&tag_last)
            .execute(&mut *tx)
            .await?;
        }
        if !result.empty_created.is_empty() {
            sqlx::query("DELETE FROM error_groups WHERE id = ANY($1)")
                .bind(&result.empty_created)
                .execute(&mut *tx)
                .await?;
        }
        for chunk in shared::pow2_chunks(&result.activities, MAX_BINDS / 7) {
            let mut qb: QueryBuilder<Postgres> = QueryBuilder::new(
                "INSERT INTO group_activity (group_id, kind, actor, from_status, to_status, reason, at) ",
            );
            qb.push_values(chunk, |mut b, a| {
                b.push_bind(a.group_id)
                    .push_bind(a.kind)
                    .push_bind("system")
                    .push_bind(a.from_status.map(GroupStatus::as_db))
                    .push_bind(a.to_status.as_db())
                    .push_bind(&a.reason)
                    .push_bind(a.at);
            });
            qb.build().execute(&mut *tx).await?;
        }

        tx.commit().await?;
        Ok(result.outcomes)
    }
}

fn github_link_from_row(row: &PgRow) -> Result<GithubLink> {
    Ok(GithubLink {
        project_id: row.try_get("project_id")?,
        repo: row.try_get("repo")?,
        api_url: row.try_get("api_url")?,
        token: row.try_get("token")?,
        webhook_secret: row.try_get("webhook_secret")?,
    })
}

#[async_trait]
impl Store for PgStore {
    fn backend(&self) -> Backend {
        Backend::Postgres
    }

    async fn migrate(&self) -> Result<Vec<String>> {
        // sqlx takes an advisory lock, so collectors starting together
        // apply each migration once.
        super::run_migrations(&sqlx::migrate!("../sql/postgres"), &self.pool).await
    }

    async fn ping(&self) -> Result<()> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    async fn create_project(
        &self,
        name: &str,
        key_hash: &str,
        key_prefix: &str,
    ) -> Result<Project> {
        let row = sqlx::query(
            "INSERT INTO projects (name, key_hash, key_prefix) VALUES ($1, $2, $3) \
             RETURNING id, name, key_prefix, created_at",
        )
        .bind(name)
        .bind(key_hash)
        .bind(key_prefix)
        .fetch_one(&self.pool)
        .await;
        match row {
            Ok(row) => project_from_row(&row),
            Err(e) if violates(&e, "projects_name_key") => {
                Err(StoreError::ProjectExists(name.to_string()))
            }
            Err(e) => Err(e.into()),
        }
    }

    async fn list_projects(&self) -> Result<Vec<Project>> {
        let rows = sqlx::query("SELECT id, name, key_prefix, created_at FROM projects ORDER BY id")
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(project_from_row).collect()
    }

    async fn get_project(&self, id: i64) -> Result<Option<Project>> {
        let row =
            sqlx::query("SELECT id, name, key_prefix, created_at FROM projects WHERE id = $1")
                .bind(id)
                .fetch_optional(&self.pool)
                .await?;
        row.as_ref().map(project_from_row).transpose()
    }

    async fn project_by_key_hash(&self, key_hash: &str) -> Result<Option<Project>> {
        let row = sqlx::query(
            "SELECT id, name, key_prefix, created_at FROM projects WHERE key_hash = $1",
        )
        .bind(key_hash)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(project_from_row).transpose()
    }

    async fn rotate_project_key(&self, id: i64, key_hash: &str, key_prefix: &str) -> Result<bool> {
        let done = sqlx::query("UPDATE projects SET key_hash = $1, key_prefix = $2 WHERE id = $3")
            .bind(key_hash)
            .bind(key_prefix)
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() > 0)
    }

    async fn project_alert_webhook(&self, id: i64) -> Result<Option<String>> {
        let url: Option<Option<String>> =
            sqlx::query_scalar("SELECT alert_webhook FROM projects WHERE id = $1")
                .bind(id)
                .fetch_optional(&self.pool)
                .await?;
        Ok(url.flatten())
    }

    async fn set_project_alert_webhook(&self, id: i64, url: Option<&str>) -> Result<bool> {
        let done = sqlx::query("UPDATE projects SET alert_webhook = $1 WHERE id = $2")
            .bind(url)
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() > 0)
    }

    async fn project_scrub_fields(&self, id: i64) -> Result<Option<Vec<String>>> {
        let fields: Option<String> =
            sqlx::query_scalar("SELECT scrub_fields FROM projects WHERE id = $1")
                .bind(id)
                .fetch_optional(&self.pool)
                .await?;
        fields
            .map(|f| {
                serde_json::from_str(&f).map_err(|e| {
                    StoreError::Corrupt(format!("bad scrub_fields of project {id}: {e}"))
                })
            })
            .transpose()
    }

    async fn set_project_scrub_fields(&self, id: i64, fields: &[String]) -> Result<bool> {
        let json = serde_json::to_string(fields)
            .map_err(|e| StoreError::Corrupt(format!("scrub fields: {e}")))?;
        let done = sqlx::query("UPDATE projects SET scrub_fields = $1 WHERE id = $2")
            .bind(json)
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() > 0)
    }

    async fn github_link(&self, project_id: i64) -> Result<Option<GithubLink>> {
        let row = sqlx::query(
            "SELECT project_id, repo, api_url, token, webhook_secret FROM github_links \
             WHERE project_id = $1",
        )
        .bind(project_id)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(github_link_from_row).transpose()
    }

    async fn set_github_link(&self, project_id: i64, link: Option<&GithubLink>) -> Result<bool> {
        let exists: Option<i64> = sqlx::query_scalar("SELECT id FROM projects WHERE id = $1")
            .bind(project_id)
            .fetch_optional(&self.pool)
            .await?;
        if exists.is_none() {
            return Ok(false);
        }
        match link {
            Some(l) => {
                // The foreign key refuses a project deleted meanwhile.
                sqlx::query(
                    "INSERT INTO github_links (project_id, repo, api_url, token, webhook_secret, updated_at) \
                     VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (project_id) DO UPDATE SET \
                     repo = EXCLUDED.repo, api_url = EXCLUDED.api_url, token = EXCLUDED.token, \
                     webhook_secret = EXCLUDED.webhook_secret, updated_at = EXCLUDED.updated_at",
                )
                .bind(project_id)
                .bind(&l.repo)
                .bind(&l.api_url)
                .bind(&l.token)
                .bind(&l.webhook_secret)
                .bind(Utc::now())
                .execute(&self.pool)
                .await?;
            }
            None => {
                sqlx::query("DELETE FROM github_links WHERE project_id = $1")
                    .bind(project_id)
                    .execute(&self.pool)
                    .await?;
            }
        }
        Ok(true)
    }

    async fn github_links_for_repo(&self, repo: &str) -> Result<Vec<GithubLink>> {
        let rows = sqlx::query(
            "SELECT project_id, repo, api_url, token, webhook_secret FROM github_links \
             WHERE lower(repo) = lower($1) ORDER BY project_id",
        )
        .bind(repo)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(github_link_from_row).collect()
    }

    async fn claim_github_issue(
        &self,
        group_id: i64,
        repo: &str,
        now: DateTime<Utc>,
        stale_before: DateTime<Utc>,
    ) -> Result<IssueClaim> {
        let claimed: Option<i64> = sqlx::query_scalar(
            "INSERT INTO github_issues (group_id, repo, created_at) VALUES ($1, $2, $3) \
             ON CONFLICT (group_id) DO UPDATE SET repo = EXCLUDED.repo, created_at = EXCLUDED.created_at \
             WHERE github_issues.number IS NULL AND github_issues.created_at < $4 \
             RETURNING group_id",
        )
        .bind(group_id)
        .bind(repo)
        .bind(now)
        .bind(stale_before)
        .fetch_optional(&self.pool)
        .await?;
        if claimed.is_some() {
            return Ok(IssueClaim::Claimed);
        }
        let row = sqlx::query("SELECT repo, number, url FROM github_issues WHERE group_id = $1")
            .bind(group_id)
            .fetch_optional(&self.pool)
            .await?;
        Ok(match row {
            Some(r) => match (
                r.try_get::<Option<i64>, _>("number")?,
                r.try_get::<Option<String>, _>("url")?,
            ) {
                (Some(number), Some(url)) => IssueClaim::Existing(GithubIssue {
                    repo: r.try_get("repo")?,
                    number,
                    url,
                }),
                _ => IssueClaim::Pending,
            },
            // Released between the two statements: the caller may try again.
            None => IssueClaim::Pending,
        })
    }

    async fn finish_github_issue(&self, group_id: i64, number: i64, url: &str) -> Result<()> {
        sqlx::query("UPDATE github_issues SET number = $1, url = $2 WHERE group_id = $3")
            .bind(number)
            .bind(url)
            .bind(group_id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn release_github_issue(&self, group_id: i64) -> Result<()> {
        sqlx::query("DELETE FROM github_issues WHERE group_id = $1 AND number IS NULL")
            .bind(group_id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn github_issues(&self, group_ids: &[i64]) -> Result<HashMap<i64, GithubIssue>> {
        if group_ids.is_empty() {
            return Ok(HashMap::new());
        }
        let rows = sqlx::query(
            "SELECT group_id, repo, number, url FROM github_issues \
             WHERE group_id = ANY($1) AND number IS NOT NULL AND url IS NOT NULL",
        )
        .bind(group_ids)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok((
                    r.try_get("group_id")?,
                    GithubIssue {
                        repo: r.try_get("repo")?,
                        number: r.try_get("number")?,
                        url: r.try_get("url")?,
                    },
                ))
            })
            .collect()
    }

    async fn group_by_github_issue(
        &self,
        project_id: i64,
        repo: &str,
        number: i64,
    ) -> Result<Option<i64>> {
        Ok(sqlx::query_scalar(
            "SELECT i.group_id FROM github_issues i JOIN error_groups g ON g.id = i.group_id \
             WHERE g.project_id = $1 AND lower(i.repo) = lower($2) AND i.number = $3",
        )
        .bind(project_id)
        .bind(repo)
        .bind(number)
        .fetch_optional(&self.pool)
        .await?)
    }

    async fn create_token(&self, name: &str, token_hash: &str) -> Result<ApiToken> {
        let sql = format!(
            "INSERT INTO api_tokens (name, token_hash) VALUES ($1, $2) RETURNING {TOKEN_COLUMNS}"
        );
        let row = sqlx::query(&sql)
            .bind(name)
            .bind(token_hash)
            .fetch_one(&self.pool)
            .await?;
        token_from_row(&row)
    }

    async fn token_by_hash(&self, token_hash: &str) -> Result<Option<ApiToken>> {
        let sql = format!("SELECT {TOKEN_COLUMNS} FROM api_tokens WHERE token_hash = $1");
        let row = sqlx::query(&sql)
            .bind(token_hash)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(token_from_row).transpose()
    }

    async fn list_tokens(&self) -> Result<Vec<ApiToken>> {
        let sql = format!("SELECT {TOKEN_COLUMNS} FROM api_tokens ORDER BY id");
        let rows = sqlx::query(&sql).fetch_all(&self.pool).await?;
        rows.iter().map(token_from_row).collect()
    }

    async fn delete_token(&self, id: i64) -> Result<Option<ApiToken>> {
        let sql = format!("DELETE FROM api_tokens WHERE id = $1 RETURNING {TOKEN_COLUMNS}");
        let row = sqlx::query(&sql)
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(token_from_row).transpose()
    }

    async fn mark_token_used(
        &self,
        token_hash: &str,
        now: DateTime<Utc>,
        unless_since: DateTime<Utc>,
    ) -> Result<bool> {
        let done = sqlx::query(
            "UPDATE api_tokens SET last_used_at = $1 \
             WHERE token_hash = $2 AND (last_used_at IS NULL OR last_used_at <= $3)",
        )
        .bind(now)
        .bind(token_hash)
        .bind(unless_since)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() > 0)
    }

    async fn insert_events(&self, events: &[NormalizedEvent]) -> Result<Vec<InsertOutcome>> {
        self.insert_with_retries(events, false).await
    }

    async fn insert_exclusive_events(
        &self,
        events: &[NormalizedEvent],
    ) -> Result<Vec<InsertOutcome>> {
        self.insert_with_retries(events, true).await
    }

    async fn list_groups(&self, query: &GroupQuery) -> Result<GroupPage> {
        let limit = shared::clamp_limit(query.limit);
        let cursor = query
            .cursor
            .as_deref()
            .map(shared::decode_cursor)
            .transpose()?;
        let (expr, is_time) = match query.sort {
            GroupSort::LastSeen => ("last_seen", true),
            GroupSort::FirstSeen => ("first_seen", true),
            GroupSort::Count => ("count", false),
            GroupSort::Priority => ("COALESCE(priority, -1)", false),
        };
        let mut qb: QueryBuilder<Postgres> = QueryBuilder::new(format!(
            "SELECT {GROUP_COLUMNS} FROM error_groups g WHERE TRUE"
        ));
        shared::push_group_filters(&mut qb, query, true);
        if let Some((value, id)) = cursor {
            qb.push(format!(" AND ({expr}, id) < ("));
            if is_time {
                qb.push_bind(shared::from_micros(value)?);
            } else if query.sort == GroupSort::Priority {
                let value = i32::try_from(value).map_err(|_| StoreError::InvalidCursor)?;
                qb.push_bind(value);
            } else {
                qb.push_bind(value);
            }
            qb.push(", ").push_bind(id).push(")");
        }
        qb.push(format!(" ORDER BY {expr} DESC, id DESC LIMIT "))
            .push_bind(limit + 1);
        let rows = qb.build().fetch_all(&self.pool).await?;
        let mut groups = rows
            .iter()
            .map(group_from_row)
            .collect::<Result<Vec<_>>>()?;
        let next_cursor = if groups.len() as i64 > limit {
            groups.truncate(limit as usize);
            groups.last().map(|g| {
                let value = match query.sort {
                    GroupSort::LastSeen => shared::micros(g.last_seen),
                    GroupSort::FirstSeen => shared::micros(g.first_seen),
                    GroupSort::Count => g.count,
                    GroupSort::Priority => i64::from(g.priority.unwrap_or(-1)),
                };
                shared::encode_cursor(value, g.id)
            })
        } else {
            None
        };
        Ok(GroupPage {
            groups,
            next_cursor,
        })
    }

    async fn get_group(&self, id: i64) -> Result<Option<Group>> {
        let mut conn = self.pool.acquire().await?;
        Self::fetch_group(&mut conn, id, false).await
    }

    async fn group_by_cluster_key(&self, cluster_key: &str) -> Result<Option<Group>> {
        let sql = format!(
            "SELECT {GROUP_COLUMNS} FROM error_groups WHERE cluster_key = $1 \
             ORDER BY last_seen DESC, id DESC LIMIT 1"
        );
        let row = sqlx::query(&sql)
            .bind(cluster_key)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(group_from_row).transpose()
    }

    async fn group_stats(&self, id: i64, now: DateTime<Utc>) -> Result<GroupStats> {
        let rows = sqlx::query(
            "SELECT hour, count FROM group_hourly_counts \
             WHERE group_id = $1 AND hour >= $2 AND hour <= $3",
        )
        .bind(id)
        .bind(shared::stats_window_start(now))
        .bind(now)
        .fetch_all(&self.pool)
        .await?;
        let hours = rows
            .iter()
            .map(|r| Ok((r.try_get("hour")?, r.try_get("count")?)))
            .collect::<Result<Vec<_>>>()?;
        let (hourly, daily) = shared::fill_buckets(&hours, now);
        let rows = sqlx::query(
            "SELECT key, value, count FROM ( \
               SELECT key, value, count, \
                 row_number() OVER (PARTITION BY key ORDER BY count DESC, value) AS rn \
               FROM group_tag_counts WHERE group_id = $1) t \
             WHERE rn <= 10 ORDER BY key, count DESC, value",
        )
        .bind(id)
        .fetch_all(&self.pool)
        .await?;
        let tags = rows
            .iter()
            .map(|r| Ok((r.try_get("key")?, r.try_get("value")?, r.try_get("count")?)))
            .collect::<Result<Vec<_>>>()?;
        Ok(GroupStats {
            hourly,
            daily,
            top_tags: shared::collect_top_tags(tags),
        })
    }

    async fn transition(
        &self,
        id: i64,
        transition: &Transition,
        actor: &str,
        now: DateTime<Utc>,
    ) -> Result<Option<Group>> {
        let mut tx = self.pool.begin().await?;
        let Some(group) = Self::fetch_group(&mut tx, id, true).await? else {
            return Ok(None);
        };
        let (to, kind, reason) = match transition {
            Transition::Resolve { reason, .. } => (
                GroupStatus::Resolved,
                "resolved",
                Some(reason.clone().unwrap_or_else(|| "manual".to_string())),
            ),
            Transition::Quiet { reason } => (GroupStatus::Quiet, "quieted", reason.clone()),
            Transition::Reopen { reason } => (GroupStatus::Open, "reopened", reason.clone()),
        };
        if group.status == to {
            return Ok(Some(group));
        }
        if let Transition::Resolve {
            in_next_release, ..
        } = transition
        {
            let release = if *in_next_release {
                group.last_release.clone()
            } else {
                None
            };
            sqlx::query(
                "UPDATE error_groups SET status = 'RESOLVED', resolution_reason = $1, \
                 resolved_at = $2, resolved_in_release = $3 WHERE id = $4",
            )
            .bind(&reason)
            .bind(now)
            .bind(release)
            .bind(id)
            .execute(&mut *tx)
            .await?;
        } else {
            // Leaving RESOLVED forgets how and when it was resolved.
            sqlx::query(
                "UPDATE error_groups SET status = $1, resolution_reason = NULL, resolved_at = NULL, \
                 resolved_in_release = NULL WHERE id = $2",
            )
            .bind(to.as_db())
            .bind(id)
            .execute(&mut *tx)
            .await?;
        }
        sqlx::query(
            "INSERT INTO group_activity (group_id, kind, actor, from_status, to_status, reason, at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(id)
        .bind(kind)
        .bind(actor)
        .bind(group.status.as_db())
        .bind(to.as_db())
        .bind(&reason)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        let group = Self::fetch_group(&mut tx, id, false).await?;
        tx.commit().await?;
        Ok(group)
    }

    async fn quiet_idle(&self, idle_since: DateTime<Utc>, now: DateTime<Utc>) -> Result<u64> {
        let mut tx = self.pool.begin().await?;
        // Lock in the same order as ingest does, and skip groups that a batch
        // holds right now: they are receiving events, so they are not idle.
        let ids: Vec<i64> = sqlx::query_scalar(
            "WITH idle AS ( \
               SELECT id FROM error_groups WHERE status = 'OPEN' AND last_seen < $1 \
               ORDER BY project_id, fingerprint FOR UPDATE SKIP LOCKED) \
             UPDATE error_groups g SET status = 'QUIET' FROM idle WHERE g.id = idle.id RETURNING g.id",
        )
        .bind(idle_since)
        .fetch_all(&mut *tx)
        .await?;
        if !ids.is_empty() {
            sqlx::query(
                "INSERT INTO group_activity (group_id, kind, actor, from_status, to_status, reason, at) \
                 SELECT id, 'quieted', 'system', 'OPEN', 'QUIET', 'no events for the quiet period', $2 \
                 FROM UNNEST($1::bigint[]) AS id",
            )
            .bind(&ids)
            .bind(now)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(ids.len() as u64)
    }

    async fn backup_to(&self, _dest: &std::path::Path) -> Result<()> {
        Err(StoreError::Unsupported(
            "backup writes SQLite databases only; back Postgres up with pg_dump",
        ))
    }

    async fn delete_group_events(&self, group_id: i64, limit: u32) -> Result<u64> {
        self.delete_chunk(deletions::GROUP_EVENTS, group_id, limit)
            .await
    }

    async fn delete_group(&self, group_id: i64) -> Result<bool> {
        // The statement trigger of migration 0008 deletes its events; the
        // foreign keys of the other tables cascade. A batch holding the
        // incident's lock commits first; one that found it unlocked
        // notices in lock_groups and is retried.
        let done = sqlx::query("DELETE FROM error_groups WHERE id = $1")
            .bind(group_id)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn delete_project_events(&self, project_id: i64, limit: u32) -> Result<u64> {
        self.delete_chunk(deletions::PROJECT_EVENTS, project_id, limit)
            .await
    }

    async fn delete_project_groups(&self, project_id: i64, limit: u32) -> Result<u64> {
        self.delete_chunk(deletions::PROJECT_GROUPS, project_id, limit)
            .await
    }

    async fn delete_project(&self, project_id: i64) -> Result<bool> {
        // Incidents, releases and what hangs off them cascade; the events
        // of those incidents go by the statement trigger of migration 0008.
        let done = sqlx::query("DELETE FROM projects WHERE id = $1")
            .bind(project_id)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn delete_events_before(&self, before: DateTime<Utc>, limit: u32) -> Result<u64> {
        self.delete_chunk(deletions::EXPIRED_EVENTS, before, limit)
            .await
    }

    async fn delete_groups_without_events(&self, before: DateTime<Utc>, limit: u32) -> Result<u64> {
        self.delete_chunk(deletions::EMPTY_IDLE_GROUPS, before, limit)
            .await
    }

    async fn activity(&self, group_id: i64) -> Result<Vec<Activity>> {
        let rows = sqlx::query(
            "SELECT id, group_id, kind, actor, from_status, to_status, reason, at \
             FROM group_activity WHERE group_id = $1 ORDER BY id",
        )
        .bind(group_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(activity_from_row).collect()
    }

    async fn list_events(&self, query: &EventQuery) -> Result<EventPage> {
        let limit = shared::clamp_limit(query.limit);
        let after = shared::event_cursor(query)?;
        let mut qb = QueryBuilder::<Postgres>::new("");
        shared::push_event_listing(&mut qb, EVENT_COLUMNS_SQL, query, after, limit);
        let rows = qb.build().fetch_all(&self.pool).await?;
        let mut events = rows
            .iter()
            .map(event_from_row)
            .collect::<Result<Vec<_>>>()?;
        let next_cursor = if events.len() as i64 > limit {
            events.truncate(limit as usize);
            events
                .last()
                .map(|e| shared::encode_cursor(shared::micros(e.received_at), e.id))
        } else {
            None
        };
        Ok(EventPage {
            events,
            next_cursor,
        })
    }

    async fn get_event(&self, event_id: Uuid) -> Result<Option<StoredEvent>> {
        let sql = format!(
            "SELECT {EVENT_COLUMNS_SQL} FROM errors WHERE event_id = $1 \
             ORDER BY received_at DESC, id DESC LIMIT 1"
        );
        let row = sqlx::query(&sql)
            .bind(event_id)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(event_from_row).transpose()
    }

    async fn save_triage(&self, t: &NewTriage) -> Result<Option<TriageRecord>> {
        let mut tx = self.pool.begin().await?;
        let Some(id) = insert_triage(&mut tx, t).await? else {
            return Ok(None);
        };
        tx.commit().await?;
        Ok(Some(t.record(id)))
    }

    async fn save_triage_once(
        &self,
        t: &NewTriage,
        key: &str,
    ) -> Result<Option<(TriageRecord, bool)>> {
        let mut tx = self.pool.begin().await?;
        // A concurrent claim of the same key waits here until the first
        // transaction ends, then finds the key taken.
        let claimed = sqlx::query(
            "INSERT INTO triage_idempotency_keys (idempotency_key, created_at) VALUES ($1, $2) \
             ON CONFLICT (idempotency_key) DO NOTHING",
        )
        .bind(key)
        .bind(t.created_at)
        .execute(&mut *tx)
        .await?
        .rows_affected()
            == 1;
        if !claimed {
            let first: Option<i64> = sqlx::query_scalar(
                "SELECT triage_id FROM triage_idempotency_keys WHERE idempotency_key = $1",
            )
            .bind(key)
            .fetch_one(&mut *tx)
            .await?;
            tx.commit().await?;
            return self.first_keyed_result(t.group_id, first).await;
        }
        let Some(id) = insert_triage(&mut tx, t).await? else {
            return Ok(None);
        };
        sqlx::query("UPDATE triage_idempotency_keys SET triage_id = $1 WHERE idempotency_key = $2")
            .bind(id)
            .bind(key)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(Some((t.record(id), true)))
    }

    async fn triage_history(&self, group_id: i64, limit: u32) -> Result<Vec<TriageRecord>> {
        let rows = sqlx::query(
            "SELECT id, group_id, summary, severity, priority, probable_cause, next_steps, \
             confidence, analyst, model, prompt_version, fallback_reason, triggered_by, trend, \
             created_at, signals FROM triage_results WHERE group_id = $1 ORDER BY id DESC LIMIT $2",
        )
        .bind(group_id)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                let Json(next_steps): Json<Vec<String>> = row.try_get("next_steps")?;
                let Json(signals): Json<Vec<crate::triage::result::Signal>> =
                    row.try_get("signals")?;
                triage_record(
                    row.try_get("id")?,
                    row.try_get("group_id")?,
                    row.try_get("summary")?,
                    row.try_get("severity")?,
                    row.try_get("priority")?,
                    row.try_get("probable_cause")?,
                    next_steps,
                    row.try_get("confidence")?,
                    [
                        row.try_get("analyst")?,
                        row.try_get("model")?,
                        row.try_get("prompt_version")?,
                        row.try_get("triggered_by")?,
                    ],
                    row.try_get("fallback_reason")?,
                    row.try_get("trend")?,
                    signals,
                    row.try_get("created_at")?,
                )
            })
            .collect()
    }

    async fn set_priority_override(
        &self,
        group_id: i64,
        priority: Option<i32>,
        severity: Option<Severity>,
        actor: &str,
        now: DateTime<Utc>,
    ) -> Result<Option<Group>> {
        let mut tx = self.pool.begin().await?;
        let updated: Option<i64> = sqlx::query_scalar(
            "UPDATE error_groups SET priority_override = $1, severity_override = $2, \
             priority = CASE WHEN $1::INTEGER IS NOT NULL THEN $1 ELSE (SELECT priority \
                 FROM triage_results WHERE group_id = $3 ORDER BY id DESC LIMIT 1) END, \
             severity = COALESCE($2, (SELECT severity FROM triage_results \
                 WHERE group_id = $3 ORDER BY id DESC LIMIT 1), 'unknown') \
             WHERE id = $3 RETURNING id",
        )
        .bind(priority)
        .bind(severity.map(Severity::as_str))
        .bind(group_id)
        .fetch_optional(&mut *tx)
        .await?;
        if updated.is_none() {
            return Ok(None);
        }
        sqlx::query(
            "INSERT INTO group_activity (group_id, kind, actor, reason, at) VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(group_id)
        .bind("priority_set")
        .bind(actor)
        .bind(super::override_note(priority, severity))
        .bind(now)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        self.get_group(group_id).await
    }

    async fn changed_since_triage(&self, limit: u32) -> Result<Vec<i64>> {
        Ok(sqlx::query_scalar(
            "SELECT g.id FROM error_groups g WHERE g.status = 'OPEN' \
             AND g.triaged_at IS NOT NULL AND g.last_seen > g.triaged_at \
             AND (g.count >= 10 * g.triaged_count \
                  OR (SELECT COUNT(*) FROM group_tag_counts t WHERE t.group_id = g.id \
                      AND t.key IN ('environment', 'release')) > g.triaged_tag_values) \
             ORDER BY g.last_seen DESC, g.id LIMIT $1",
        )
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?)
    }

    async fn stale_triage(&self, triaged_before: DateTime<Utc>, limit: u32) -> Result<Vec<i64>> {
        Ok(sqlx::query_scalar(
            "SELECT id FROM error_groups WHERE status = 'OPEN' \
             AND (triaged_at IS NULL OR (triaged_at < $1 AND last_seen > triaged_at)) \
             ORDER BY triaged_at ASC NULLS FIRST, id LIMIT $2",
        )
        .bind(triaged_before)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?)
    }

    async fn attention_groups(
        &self,
        project_id: Option<i64>,
        min_priority: i32,
        since: DateTime<Utc>,
        limit: u32,
    ) -> Result<Vec<Group>> {
        let sql = format!(
            "SELECT {GROUP_COLUMNS} FROM error_groups WHERE status = 'OPEN' \
             AND ($1::BIGINT IS NULL OR project_id = $1) \
             AND (COALESCE(priority, -1) >= $2 OR regressed_at >= $3 \
                  OR (triage_trend = 'spiking' AND triaged_at >= $3)) \
             ORDER BY COALESCE(priority, -1) DESC, last_seen DESC, id DESC LIMIT $4"
        );
        let rows = sqlx::query(&sql)
            .bind(project_id)
            .bind(min_priority)
            .bind(since)
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(group_from_row).collect()
    }

    async fn record_kestra_execution(
        &self,
        flow_id: &str,
        group_id: Option<i64>,
        execution_id: &str,
        state: Option<&str>,
        at: DateTime<Utc>,
    ) -> Result<()> {
        sqlx::query(
            "INSERT INTO kestra_executions (flow_id, group_id, execution_id, state, created_at) \
             VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(flow_id)
        .bind(group_id)
        .bind(execution_id)
        .bind(state)
        .bind(at)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn enqueue_kestra_trigger(
        &self,
        flow_id: &str,
        group_id: Option<i64>,
        inputs: &str,
        idempotency_key: &str,
        at: DateTime<Utc>,
    ) -> Result<()> {
        sqlx::query(
            "INSERT INTO kestra_outbox (flow_id, group_id, inputs, idempotency_key, \
             next_attempt_at, created_at) VALUES ($1, $2, $3, $4, $5, $6) \
             ON CONFLICT (idempotency_key) DO NOTHING",
        )
        .bind(flow_id)
        .bind(group_id)
        .bind(inputs)
        .bind(idempotency_key)
        .bind(at)
        .bind(at)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn due_kestra_triggers(
        &self,
        now: DateTime<Utc>,
        limit: u32,
    ) -> Result<Vec<KestraTrigger>> {
        let rows = sqlx::query(
            "SELECT id, flow_id, group_id, inputs, idempotency_key, attempts FROM kestra_outbox \
             WHERE next_attempt_at <= $1 ORDER BY next_attempt_at, id LIMIT $2",
        )
        .bind(now)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(KestraTrigger {
                    id: r.try_get("id")?,
                    flow_id: r.try_get("flow_id")?,
                    group_id: r.try_get("group_id")?,
                    inputs: r.try_get("inputs")?,
                    idempotency_key: r.try_get("idempotency_key")?,
                    attempts: r.try_get("attempts")?,
                })
            })
            .collect()
    }

    async fn retry_kestra_trigger(
        &self,
        id: i64,
        attempts: i32,
        next_attempt_at: DateTime<Utc>,
        error: &str,
    ) -> Result<()> {
        sqlx::query(
            "UPDATE kestra_outbox SET attempts = $1, next_attempt_at = $2, last_error = $3 WHERE id = $4",
        )
        .bind(attempts)
        .bind(next_attempt_at)
        .bind(error)
        .bind(id)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn drop_kestra_trigger(&self, id: i64) -> Result<()> {
        sqlx::query("DELETE FROM kestra_outbox WHERE id = $1")
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn kestra_trigger_started(
        &self,
        trigger: &KestraTrigger,
        execution_id: &str,
        state: Option<&str>,
        at: DateTime<Utc>,
    ) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("DELETE FROM kestra_outbox WHERE id = $1")
            .bind(trigger.id)
            .execute(&mut *tx)
            .await?;
        // The incident may have been deleted meanwhile: then the run is kept without it.
        sqlx::query(
            "INSERT INTO kestra_executions (flow_id, group_id, execution_id, state, \
             idempotency_key, created_at) \
             VALUES ($1, (SELECT id FROM error_groups WHERE id = $2), $3, $4, $5, $6)",
        )
        .bind(&trigger.flow_id)
        .bind(trigger.group_id)
        .bind(execution_id)
        .bind(state)
        .bind(&trigger.idempotency_key)
        .bind(at)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn unfinished_kestra_runs(&self, limit: u32) -> Result<Vec<KestraRun>> {
        let rows = sqlx::query(&format!(
            "SELECT {KESTRA_RUN_COLUMNS} FROM kestra_executions WHERE finished_at IS NULL \
             ORDER BY id LIMIT $1"
        ))
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(kestra_run_from_row).collect()
    }

    async fn finish_kestra_run(
        &self,
        id: i64,
        state: &str,
        failed_task: Option<&str>,
        error: Option<&str>,
        at: DateTime<Utc>,
    ) -> Result<()> {
        sqlx::query(
            "UPDATE kestra_executions SET state = $1, failed_task = $2, error = $3, finished_at = $4 \
             WHERE id = $5",
        )
        .bind(state)
        .bind(failed_task)
        .bind(error)
        .bind(at)
        .bind(id)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn kestra_runs(&self, group_id: i64, limit: u32) -> Result<Vec<KestraRun>> {
        let rows = sqlx::query(&format!(
            "SELECT {KESTRA_RUN_COLUMNS} FROM kestra_executions WHERE group_id = $1 \
             ORDER BY id DESC LIMIT $2"
        ))
        .bind(group_id)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(kestra_run_from_row).collect()
    }

    // ---- dashboard ----

    async fn count_groups(&self, query: &GroupQuery) -> Result<GroupCounts> {
        let mut qb: QueryBuilder<Postgres> =
            QueryBuilder::new("SELECT status, count(*) AS n FROM error_groups g WHERE TRUE");
        shared::push_group_filters(&mut qb, query, false);
        qb.push(" GROUP BY status");
        let rows = qb.build().fetch_all(&self.pool).await?;
        let mut counts = GroupCounts::default();
        for row in &rows {
            let status: String = row.try_get("status")?;
            let n: i64 = row.try_get("n")?;
            match GroupStatus::from_db(&status) {
                GroupStatus::Open => counts.open += n,
                GroupStatus::Quiet => counts.quiet += n,
                GroupStatus::Resolved => counts.resolved += n,
            }
        }
        Ok(counts)
    }

    async fn hourly_counts(
        &self,
        group_ids: &[i64],
        now: DateTime<Utc>,
    ) -> Result<HashMap<i64, Vec<i64>>> {
        let first_hour = shared::truncate_to_hour(now) - chrono::Duration::hours(23);
        let rows = sqlx::query(
            "SELECT group_id, hour, count FROM group_hourly_counts \
             WHERE group_id = ANY($1) AND hour >= $2 AND hour <= $3",
        )
        .bind(group_ids)
        .bind(first_hour)
        .bind(now)
        .fetch_all(&self.pool)
        .await?;
        let mut out: HashMap<i64, Vec<i64>> = HashMap::new();
        for row in &rows {
            let hour: DateTime<Utc> = row.try_get("hour")?;
            let index = (hour - first_hour).num_hours();
            if (0..24).contains(&index) {
                out.entry(row.try_get("group_id")?)
                    .or_insert_with(|| vec![0; 24])[index as usize] +=
                    row.try_get::<i64, _>("count")?;
            }
        }
        Ok(out)
    }

    async fn event_neighbors(
        &self,
        group_id: i64,
        received_at: DateTime<Utc>,
        id: i64,
    ) -> Result<EventNeighbors> {
        let neighbor = |which| {
            let mut qb = QueryBuilder::<Postgres>::new("");
            shared::push_event_neighbor(&mut qb, which, group_id, received_at, id);
            qb
        };
        let older = neighbor(Neighbor::Older)
            .build_query_scalar::<Uuid>()
            .fetch_optional(&self.pool)
            .await?;
        let newer = neighbor(Neighbor::Newer)
            .build_query_scalar::<Uuid>()
            .fetch_optional(&self.pool)
            .await?;
        Ok(EventNeighbors { older, newer })
    }

    async fn create_user(&self, name: &str, password_hash: &str) -> Result<Option<User>> {
        let row = sqlx::query(
            "INSERT INTO users (name, password_hash) VALUES ($1, $2) \
             ON CONFLICT (name) DO NOTHING RETURNING id, name, password_hash",
        )
        .bind(name)
        .bind(password_hash)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(user_from_row).transpose()
    }

    async fn user_by_name(&self, name: &str) -> Result<Option<User>> {
        let row = sqlx::query("SELECT id, name, password_hash FROM users WHERE name = $1")
            .bind(name)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(user_from_row).transpose()
    }

    async fn set_user_password(&self, name: &str, password_hash: &str) -> Result<bool> {
        let mut tx = self.pool.begin().await?;
        let id: Option<i64> =
            sqlx::query_scalar("UPDATE users SET password_hash = $2 WHERE name = $1 RETURNING id")
                .bind(name)
                .bind(password_hash)
                .fetch_optional(&mut *tx)
                .await?;
        if let Some(id) = id {
            sqlx::query("DELETE FROM sessions WHERE user_id = $1")
                .bind(id)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(id.is_some())
    }

    async fn count_users(&self) -> Result<i64> {
        Ok(sqlx::query_scalar("SELECT count(*) FROM users")
            .fetch_one(&self.pool)
            .await?)
    }

    async fn create_session(
        &self,
        token_hash: &str,
        user_id: i64,
        now: DateTime<Utc>,
        expires_at: DateTime<Utc>,
    ) -> Result<()> {
        sqlx::query("DELETE FROM sessions WHERE expires_at <= $1")
            .bind(now)
            .execute(&self.pool)
            .await?;
        sqlx::query(
            "INSERT INTO sessions (token_hash, user_id, created_at, expires_at) VALUES ($1, $2, $3, $4)",
        )
        .bind(token_hash)
        .bind(user_id)
        .bind(now)
        .bind(expires_at)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn session_by_hash(
        &self,
        token_hash: &str,
        now: DateTime<Utc>,
    ) -> Result<Option<Session>> {
        let row = sqlx::query(
            "SELECT s.user_id, u.name, s.expires_at FROM sessions s JOIN users u ON u.id = s.user_id \
             WHERE s.token_hash = $1 AND s.expires_at > $2",
        )
        .bind(token_hash)
        .bind(now)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| {
            Ok(Session {
                user_id: r.try_get("user_id")?,
                user_name: r.try_get("name")?,
                expires_at: r.try_get("expires_at")?,
            })
        })
        .transpose()
    }

    async fn delete_session(&self, token_hash: &str) -> Result<()> {
        sqlx::query("DELETE FROM sessions WHERE token_hash = $1")
            .bind(token_hash)
            .execute(&self.pool)
            .await?;
        Ok(())
    }
}

fn user_from_row(row: &PgRow) -> Result<User> {
    Ok(User {
        id: row.try_get("id")?,
        name: row.try_get("name")?,
        password_hash: row.try_get("password_hash")?,
    })
}

/// The first sightings that [`shared::finish_batch`] needs to order releases
/// for incidents resolved "in the next release"; read once the incidents are
/// locked, since that is when their state is known.
async fn release_first_seen(
    tx: &mut sqlx::PgConnection,
    events: &[NormalizedEvent],
    plan: &shared::BatchPlan,
    locked: &LockedGroups,
) -> Result<HashMap<shared::ReleaseKey, DateTime<Utc>>> {
    let wanted = shared::releases_to_look_up(events, plan, locked);
    let mut out = HashMap::with_capacity(wanted.len());
    if !wanted.is_empty() {
        let project_ids: Vec<i64> = wanted.iter().map(|(p, _)| *p).collect();
        let versions: Vec<&str> = wanted.iter().map(|(_, v)| v.as_str()).collect();
        let rows = sqlx::query(
            "SELECT project_id, version, first_seen FROM releases \
             WHERE (project_id, version) IN (SELECT * FROM UNNEST($1::bigint[], $2::text[]))",
        )
        .bind(&project_ids)
        .bind(&versions)
        .fetch_all(&mut *tx)
        .await?;
        for row in rows {
            out.insert(
                (row.try_get("project_id")?, row.try_get("version")?),
                row.try_get("first_seen")?,
            );
        }
    }
    Ok(out)
}

const KESTRA_RUN_COLUMNS: &str = "id, flow_id, group_id, execution_id, idempotency_key, state, \
     created_at, finished_at, failed_task, error";

fn kestra_run_from_row(r: &PgRow) -> Result<KestraRun> {
    Ok(KestraRun {
        id: r.try_get("id")?,
        flow_id: r.try_get("flow_id")?,
        group_id: r.try_get("group_id")?,
        execution_id: r.try_get("execution_id")?,
        idempotency_key: r.try_get("idempotency_key")?,
        state: r.try_get("state")?,
        created_at: r.try_get("created_at")?,
        finished_at: r.try_get("finished_at")?,
        failed_task: r.try_get("failed_task")?,
        error: r.try_get("error")?,
    })
}

/// The incident update and the history row of one triage result, in the
/// caller's transaction; `None` if there is no such incident.
async fn insert_triage(
    tx: &mut sqlx::Transaction<'static, sqlx::Postgres>,
    t: &NewTriage,
) -> Result<Option<i64>> {
    let r = &t.result;
    let steps = serde_json::to_string(&r.next_steps)
        .map_err(|e| StoreError::Corrupt(format!("next steps: {e}")))?;
    let updated: Option<i64> = sqlx::query_scalar(
        "UPDATE error_groups SET severity = COALESCE(severity_override, $1), \
         priority = COALESCE(priority_override, $2), ai_summary = $3, ai_next_steps = $4, \
         triaged_at = $5, triage_trend = $6, triaged_count = count, \
         triaged_tag_values = (SELECT COUNT(*) FROM group_tag_counts t \
             WHERE t.group_id = error_groups.id AND t.key IN ('environment', 'release')) \
         WHERE id = $7 RETURNING id",
    )
    .bind(r.severity.as_str())
    .bind(r.priority)
    .bind(&r.summary)
    .bind(&steps)
    .bind(t.created_at)
    .bind(&t.trend)
    .bind(t.group_id)
    .fetch_optional(&mut **tx)
    .await?;
    if updated.is_none() {
        return Ok(None);
    }
    let id: i64 = sqlx::query_scalar(
        "INSERT INTO triage_results (group_id, summary, severity, priority, probable_cause, \
         next_steps, confidence, analyst, model, prompt_version, fallback_reason, triggered_by, \
         trend, created_at, signals) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15) RETURNING id",
    )
    .bind(t.group_id)
    .bind(&r.summary)
    .bind(r.severity.as_str())
    .bind(r.priority)
    .bind(&r.probable_cause)
    .bind(Json(&r.next_steps))
    .bind(r.confidence)
    .bind(&t.analyst)
    .bind(&t.model)
    .bind(&t.prompt_version)
    .bind(&t.fallback_reason)
    .bind(&t.trigger)
    .bind(&t.trend)
    .bind(t.created_at)
    .bind(Json(&t.signals))
    .fetch_one(&mut **tx)
    .await?;
    Ok(Some(id))
}
