//! The SQLite batch insert: one transaction that creates the incidents,
//! inserts the events and updates the counters, run synchronously through
//! rusqlite on a connection of its own.
//!
//! Why not sqlx here, as everywhere else in this backend: sqlx runs every
//! statement on the connection's worker thread and wakes the calling task
//! with the result, so a batch of ten statements was ten hand-offs between
//! threads, each waiting behind the request tasks for a core. Under load
//! those waits were most of a batch's time (a 32-event batch took 5 ms, of
//! which about 2 ms was SQLite's own work), and the single write path is
//! what bounds ingest on SQLite. Borrowing sqlx's connection for the batch
//! still cost two such hand-offs per batch (taking the connection from the
//! pool, then locking its handle), 0.1–5 ms each under load; this
//! connection belongs to the writer task alone, so a batch starts at once.
//! Both crates link the same libsqlite3.

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, Utc};
use rusqlite::{params, OptionalExtension, TransactionBehavior};
use uuid::Uuid;

use super::{fmt_ts, parse_ts};
use crate::model::{GroupStatus, InsertOutcome, NormalizedEvent};
use crate::store::shared::{self, BatchPlan, LockedGroup, LockedGroups};
use crate::store::{Result, StoreError};

/// Opens the batch writer's connection to the database at `path`, which
/// the sqlx pool has already created and switched to WAL mode, with the
/// same settings as the pool's connections (`pragmas`, `busy_timeout`).
pub(super) fn open_writer(
    path: &std::path::Path,
    busy_timeout: std::time::Duration,
    pragmas: &[(&str, &str)],
) -> rusqlite::Result<rusqlite::Connection> {
    use rusqlite::OpenFlags;
    let db = rusqlite::Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    db.busy_timeout(busy_timeout)?;
    let mode: String = db.query_row("PRAGMA journal_mode = WAL", [], |row| row.get(0))?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(rusqlite::Error::SqliteFailure(
            rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_ERROR),
            Some(format!(
                "the database stays in journal mode {mode:?}; errorflow needs WAL"
            )),
        ));
    }
    for (name, value) in pragmas {
        // Constant names and values, not input: written into the statement
        // as sqlx does, since PRAGMA takes no bound parameters.
        db.execute_batch(&format!("PRAGMA {name} = {value};"))?;
    }
    Ok(db)
}

/// Writes `events` in one IMMEDIATE transaction (the write lock is taken up
/// front, so nobody creates or changes a group meanwhile) and returns what
/// happened to each event, in input order. On any error the transaction is
/// rolled back and nothing of the batch is stored.
pub(super) fn write_batch(
    db: &mut rusqlite::Connection,
    events: &[NormalizedEvent],
    plan: &BatchPlan,
) -> Result<Vec<InsertOutcome>> {
    let tx = db.transaction_with_behavior(TransactionBehavior::Immediate)?;

    // (1) Make sure every group exists, and read its state. Most groups
    // exist, so each is looked up first and created only when missing: the
    // insert is the dearer statement, since checking the row's constraint on
    // `status` (an IN list) builds a temporary b-tree every time.
    let mut locked = LockedGroups::default();
    // Each group's count and first sighting (stored text) as read here, for
    // step (4).
    let mut sightings: HashMap<i64, (i64, String)> = HashMap::with_capacity(plan.groups.len());
    {
        let mut find = tx.prepare_cached(
            "SELECT id, status, resolved_in_release, count, first_seen FROM error_groups \
             WHERE project_id = ?1 AND fingerprint = ?2",
        )?;
        let mut create = tx.prepare_cached(
            // The id: above every incident id ever deleted (migration 0007).
            "INSERT INTO error_groups (id, project_id, fingerprint, fingerprint_version, \
             cluster_key, service, error_type, title, culprit, level, first_seen, last_seen) \
             VALUES (MAX(COALESCE((SELECT MAX(id) FROM error_groups), 0), \
                         COALESCE((SELECT floor FROM id_floors WHERE name = 'error_groups'), 0)) + 1, \
                     ?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?10)",
        )?;
        for ((project_id, fingerprint), first) in &plan.groups {
            let found = |created| {
                move |row: &rusqlite::Row<'_>| {
                    let group = LockedGroup {
                        id: row.get(0)?,
                        status: GroupStatus::from_db(&row.get::<_, String>(1)?),
                        resolved_in_release: row.get(2)?,
                        created,
                    };
                    Ok((group, (row.get(3)?, row.get(4)?)))
                }
            };
            let existing = find
                .query_row(params![project_id, fingerprint], found(false))
                .optional()?;
            // The transaction holds the write lock: nobody creates the group
            // between the lookup and the insert.
            let (group, sighting) = match existing {
                Some(found) => found,
                None => {
                    let ev = &events[*first];
                    create.execute(params![
                        project_id,
                        fingerprint,
                        ev.fingerprint_version,
                        ev.cluster_key,
                        ev.service,
                        ev.error_type,
                        ev.title,
                        ev.culprit,
                        ev.level.as_str(),
                        fmt_ts(ev.timestamp),
                    ])?;
                    find.query_row(params![project_id, fingerprint], found(true))?
                }
            };
            sightings.insert(group.id, sighting);
            locked.insert((*project_id, fingerprint.clone()), group);
        }
    }

    // (2) Insert the events; a conflict on (event_id, project_id) means the
    // event was stored before (a retried request).
    let mut inserted: HashSet<(i64, Uuid)> = HashSet::with_capacity(plan.candidates.len());
    {
        let mut insert = tx.prepare_cached(
            "INSERT INTO errors (project_id, group_id, event_id, service, error_type, message, \
             timestamp, received_at, env, path, trace_id, level, release, host, fingerprint, data) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16) \
             ON CONFLICT (event_id, project_id) DO NOTHING",
        )?;
        let mut id_text = Uuid::encode_buffer();
        for &i in &plan.candidates {
            let ev = &events[i];
            // Every candidate's group was created or found in step (1).
            let group_id = locked.of(ev)?.id;
            let added = insert.execute(params![
                ev.project_id,
                group_id,
                &*ev.event_id.hyphenated().encode_lower(&mut id_text),
                ev.service,
                ev.error_type,
                ev.message,
                fmt_ts(ev.timestamp),
                fmt_ts(ev.received_at),
                ev.environment,
                ev.path,
                ev.trace_id,
                ev.level.as_str(),
                ev.release,
                ev.host,
                ev.fingerprint,
                ev.event_json(),
            ])?;
            if added == 1 {
                inserted.insert((ev.project_id, ev.event_id));
            }
        }
    }

    // (3) Releases: record the new ones, then read when the project first
    // saw those that decide whether a resolved incident regressed.
    let mut release_first_seen = HashMap::new();
    {
        let mut add = tx.prepare_cached(
            "INSERT INTO releases (project_id, version, first_seen) VALUES (?1, ?2, ?3) \
             ON CONFLICT (project_id, version) DO NOTHING",
        )?;
        for ((project_id, version), at) in shared::batch_releases(events) {
            add.execute(params![project_id, version, fmt_ts(at)])?;
        }
        let mut find = tx.prepare_cached(
            "SELECT first_seen FROM releases WHERE project_id = ?1 AND version = ?2",
        )?;
        for key in shared::releases_to_look_up(events, plan, &locked) {
            let first_seen: Option<String> = find
                .query_row(params![key.0, key.1], |row| row.get(0))
                .optional()?;
            if let Some(first_seen) = first_seen {
                release_first_seen.insert(key, parse_ts(&first_seen)?);
            }
        }
    }

    // (4) Update the groups from what was really new. A group created by
    // this transaction still has count 0 and placeholder times, which are
    // replaced rather than merged. Every right-hand side reads the row as it
    // was before this statement.
    let result = shared::finish_batch(events, plan, &locked, &inserted, &release_first_seen)?;
    {
        // Up to three statements per group. SQLite rewrites the index entries
        // of every column an UPDATE sets, whether or not its value changes,
        // and checks the constraint on `status` (an IN list, for which it
        // builds a temporary b-tree) whenever `status` is set; so `status` is
        // set only when it changes (reopened or regressed), and `first_seen`
        // only when the group is new (count 0) or an event is older than its
        // first sighting, both as read in step (1). Most batches bring no
        // older event, and skipping the statement spares it a run.
        let mut first_seen =
            tx.prepare_cached("UPDATE error_groups SET first_seen = ?2 WHERE id = ?1")?;
        let mut seen = tx.prepare_cached(
            "UPDATE error_groups SET \
               last_release = CASE WHEN count = 0 OR ?2 >= last_seen THEN ?3 ELSE last_release END, \
               last_environment = CASE WHEN count = 0 OR ?2 >= last_seen THEN ?4 ELSE last_environment END, \
               last_seen = CASE WHEN count = 0 THEN ?2 ELSE MAX(last_seen, ?2) END, \
               count = count + ?5 \
             WHERE id = ?1",
        )?;
        let mut status = tx.prepare_cached(
            "UPDATE error_groups SET status = ?2, \
               regression_count = regression_count + CASE WHEN ?3 IS NULL THEN 0 ELSE 1 END, \
               regressed_at = COALESCE(?3, regressed_at) \
             WHERE id = ?1",
        )?;
        let status_before: HashMap<i64, GroupStatus> =
            locked.values().map(|g| (g.id, g.status)).collect();
        for u in &result.updates {
            // Stored times are text whose order is time order, as in SQL.
            let first = fmt_ts(u.first_seen);
            let (count, stored) = sightings.get(&u.id).ok_or_else(|| {
                StoreError::Corrupt(format!("group {} was not read in step (1)", u.id))
            })?;
            if *count == 0 || stored.as_str() > first.as_str() {
                first_seen.execute(params![u.id, first])?;
            }
            seen.execute(params![
                u.id,
                fmt_ts(u.last_seen),
                u.last_release,
                u.last_environment,
                u.added,
            ])?;
            if status_before.get(&u.id) != Some(&u.status) || u.regressed_at.is_some() {
                status.execute(params![u.id, u.status.as_db(), u.regressed_at.map(fmt_ts)])?;
            }
        }
        let mut delete = tx.prepare_cached("DELETE FROM error_groups WHERE id = ?1")?;
        for id in &result.empty_created {
            delete.execute([id])?;
        }
        let mut activity = tx.prepare_cached(
            "INSERT INTO group_activity (group_id, kind, actor, from_status, to_status, reason, at) \
             VALUES (?1, ?2, 'system', ?3, ?4, ?5, ?6)",
        )?;
        for a in &result.activities {
            activity.execute(params![
                a.group_id,
                a.kind,
                a.from_status.map(GroupStatus::as_db),
                a.to_status.as_db(),
                a.reason,
                fmt_ts(a.at),
            ])?;
        }
    }

    // (5) Counters for the statistics and the tag breakdown, one row per
    // statement. Sixteen rows per statement took 7 % fewer instructions but
    // raised the collector's peak memory by about 40 MiB under batches of a
    // hundred events, probably the statement journal, kept in memory, that
    // SQLite needs for any statement writing several rows.
    {
        let mut hourly = tx.prepare_cached(
            "INSERT INTO group_hourly_counts (group_id, hour, count) VALUES (?1, ?2, ?3) \
             ON CONFLICT (group_id, hour) DO UPDATE SET count = group_hourly_counts.count + excluded.count",
        )?;
        for ((group_id, hour), n) in &result.hourly {
            hourly.execute(params![group_id, fmt_ts(*hour), n])?;
        }
        // CASE rather than MAX(): a function call per row cost more.
        let mut tags = tx.prepare_cached(
            "INSERT INTO group_tag_counts (group_id, key, value, count, last_seen) \
             VALUES (?1, ?2, ?3, ?4, ?5) \
             ON CONFLICT (group_id, key, value) DO UPDATE SET \
               count = group_tag_counts.count + excluded.count, \
               last_seen = CASE WHEN excluded.last_seen > group_tag_counts.last_seen \
                 THEN excluded.last_seen ELSE group_tag_counts.last_seen END",
        )?;
        // An event's tags share its time, and they come one after another
        // (sorted by incident): each run of equal times is formatted once.
        let mut last: Option<(DateTime<Utc>, String)> = None;
        for ((group_id, key, value), (n, at)) in &result.tags {
            let text = match &last {
                Some((prev, text)) if prev == at => text,
                _ => &last.insert((*at, fmt_ts(*at))).1,
            };
            tags.execute(params![group_id, key, value, n, text])?;
        }
    }

    tx.commit()?;
    Ok(result.outcomes)
}
