//! Backend-independent parts of the store: planning a batch insert,
//! opaque cursors and zero-filled statistics buckets. Both backends run the
//! same logic here so that they cannot drift apart; only the SQL differs.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use chrono::{DateTime, Duration, DurationRound, NaiveDate, TimeZone, Utc};
use uuid::Uuid;

use super::{release, Result, StoreError};
use crate::model::{
    Bucket, EventQuery, GroupQuery, GroupStatus, InsertOutcome, NormalizedEvent, TagCount,
};

/// Default and maximum page sizes of the list endpoints.
pub(crate) const DEFAULT_LIMIT: u32 = 50;
pub(crate) const MAX_LIMIT: u32 = 200;

/// Turns a requested page size into one the store will serve: zero means
/// "not given", anything above the maximum is capped.
pub(crate) fn clamp_limit(limit: u32) -> i64 {
    let limit = if limit == 0 { DEFAULT_LIMIT } else { limit };
    i64::from(limit.clamp(1, MAX_LIMIT))
}

/// Encodes a keyset position. Every sort key we page on is an integer
/// (microseconds, counts, priorities), so the cursor is `value|id` in hex:
/// opaque to clients, trivially validated here.
pub(crate) fn encode_cursor(value: i64, id: i64) -> String {
    hex::encode(format!("{value}|{id}"))
}

pub(crate) fn decode_cursor(cursor: &str) -> Result<(i64, i64)> {
    let bytes = hex::decode(cursor).map_err(|_| StoreError::InvalidCursor)?;
    let text = String::from_utf8(bytes).map_err(|_| StoreError::InvalidCursor)?;
    let (value, id) = text.split_once('|').ok_or(StoreError::InvalidCursor)?;
    let value = value.parse().map_err(|_| StoreError::InvalidCursor)?;
    let id = id.parse().map_err(|_| StoreError::InvalidCursor)?;
    Ok((value, id))
}

pub(crate) fn micros(t: DateTime<Utc>) -> i64 {
    t.timestamp_micros()
}

pub(crate) fn from_micros(us: i64) -> Result<DateTime<Utc>> {
    DateTime::from_timestamp_micros(us).ok_or(StoreError::InvalidCursor)
}

/// Escapes `%`, `_` and `\` so that a user's search text is matched
/// literally by `LIKE … ESCAPE '\'`, and wraps it for a substring match.
pub(crate) fn like_pattern(q: &str) -> String {
    let mut out = String::with_capacity(q.len() + 2);
    out.push('%');
    for c in q.to_lowercase().chars() {
        if matches!(c, '%' | '_' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('%');
    out
}

pub(crate) fn truncate_to_hour(t: DateTime<Utc>) -> DateTime<Utc> {
    t.duration_trunc(Duration::hours(1)).unwrap_or(t)
}

/// The first hour of the 14-day statistics window ending at `now`.
pub(crate) fn stats_window_start(now: DateTime<Utc>) -> DateTime<Utc> {
    let today = now.date_naive();
    let first_day = today - Duration::days(13);
    let hourly_start = truncate_to_hour(now) - Duration::hours(23);
    day_start(first_day).min(hourly_start)
}

fn day_start(day: NaiveDate) -> DateTime<Utc> {
    Utc.from_utc_datetime(&day.and_hms_opt(0, 0, 0).expect("midnight exists"))
}

/// Turns stored hourly counts into the 24 hourly and 14 daily zero-filled
/// buckets of [`crate::model::GroupStats`], oldest first.
pub(crate) fn fill_buckets(
    rows: &[(DateTime<Utc>, i64)],
    now: DateTime<Utc>,
) -> (Vec<Bucket>, Vec<Bucket>) {
    let this_hour = truncate_to_hour(now);
    let hourly = (0..24)
        .rev()
        .map(|back| {
            let start = this_hour - Duration::hours(back);
            let count = rows
                .iter()
                .filter(|(h, _)| *h == start)
                .map(|(_, c)| c)
                .sum();
            Bucket { start, count }
        })
        .collect();
    let today = now.date_naive();
    let daily = (0..14)
        .rev()
        .map(|back| {
            let day = today - Duration::days(back);
            let count = rows
                .iter()
                .filter(|(h, _)| h.date_naive() == day && *h <= now)
                .map(|(_, c)| c)
                .sum();
            Bucket {
                start: day_start(day),
                count,
            }
        })
        .collect();
    (hourly, daily)
}

/// Groups `(key, value, count)` rows, already limited and ordered by the query, by key.
pub(crate) fn collect_top_tags(
    rows: Vec<(String, String, i64)>,
) -> BTreeMap<String, Vec<TagCount>> {
    let mut out: BTreeMap<String, Vec<TagCount>> = BTreeMap::new();
    for (key, value, count) in rows {
        out.entry(key).or_default().push(TagCount { value, count });
    }
    out
}

/// The tags counted for an event's incident. The store adds `environment`
/// and `release` from the event's own fields when the pipeline did not put
/// them in the tags, because the incident list filters on exactly these two.
pub(crate) fn event_tags(ev: &NormalizedEvent) -> impl Iterator<Item = (&str, &str)> {
    let environment =
        (!ev.tags.contains_key("environment")).then_some(("environment", ev.environment.as_str()));
    let release = ev
        .release
        .as_deref()
        .filter(|_| !ev.tags.contains_key("release"))
        .map(|release| ("release", release));
    ev.tags
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .chain(environment)
        .chain(release)
}

/// The identity of an incident.
pub(crate) type GroupKey = (i64, String);

/// Splits `items` into chunks whose lengths are powers of two, largest
/// first, none longer than `max`. A multi-row `INSERT … VALUES` is a
/// different statement for every row count; with these lengths a batch of
/// any size uses at most a dozen distinct statements, which the driver's
/// prepared-statement cache keeps, instead of preparing a new one each time.
pub(crate) fn pow2_chunks<T>(items: &[T], max: usize) -> impl Iterator<Item = &[T]> {
    let cap = if max == 0 {
        1
    } else {
        1usize << (usize::BITS - 1 - max.leading_zeros())
    };
    let mut rest = items;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let len = if rest.len() >= cap {
            cap
        } else {
            1usize << (usize::BITS - 1 - rest.len().leading_zeros())
        };
        let (chunk, tail) = rest.split_at(len);
        rest = tail;
        Some(chunk)
    })
}

/// `(group_id, key, value)` of a tag counter.
pub(crate) type TagKey = (i64, String, String);

/// The first step of a batch insert: which events are candidates (the first
/// occurrence of each `(project_id, event_id)` in the batch) and which
/// incidents they belong to, sorted so that every transaction locks groups
/// in the same order and concurrent batches cannot deadlock.
pub(crate) struct BatchPlan {
    /// Indices into the input of the events to try to insert.
    pub candidates: Vec<usize>,
    /// Distinct group keys, sorted, each with the index of its first event.
    pub groups: Vec<(GroupKey, usize)>,
}

pub(crate) fn plan_batch(events: &[NormalizedEvent]) -> BatchPlan {
    let mut seen: HashSet<(i64, Uuid)> = HashSet::with_capacity(events.len());
    let mut candidates = Vec::with_capacity(events.len());
    // Keys borrowed from the events: one copy per group, not per event.
    let mut groups: BTreeMap<(i64, &str), usize> = BTreeMap::new();
    for (i, ev) in events.iter().enumerate() {
        if seen.insert((ev.project_id, ev.event_id)) {
            candidates.push(i);
            groups
                .entry((ev.project_id, ev.fingerprint.as_str()))
                .or_insert(i);
        }
    }
    BatchPlan {
        candidates,
        groups: groups
            .into_iter()
            .map(|((project_id, fingerprint), i)| ((project_id, fingerprint.to_owned()), i))
            .collect(),
    }
}

/// The batch's groups as the transaction found or created them, by
/// project and fingerprint. Keyed in two levels so that an event's group is
/// found with its fingerprint borrowed, without copying it.
#[derive(Debug, Default)]
pub(crate) struct LockedGroups(HashMap<i64, HashMap<String, LockedGroup>>);

impl LockedGroups {
    pub(crate) fn insert(&mut self, (project_id, fingerprint): GroupKey, group: LockedGroup) {
        self.0
            .entry(project_id)
            .or_default()
            .insert(fingerprint, group);
    }

    pub(crate) fn get(&self, project_id: i64, fingerprint: &str) -> Option<&LockedGroup> {
        self.0.get(&project_id)?.get(fingerprint)
    }

    /// The group of an event of the batch, which the transaction found or
    /// created before anything else: missing, the batch is corrupt.
    pub(crate) fn of(&self, ev: &NormalizedEvent) -> Result<&LockedGroup> {
        self.get(ev.project_id, &ev.fingerprint).ok_or_else(|| {
            StoreError::Corrupt(format!(
                "group ({}, {}) was not locked",
                ev.project_id, ev.fingerprint
            ))
        })
    }

    pub(crate) fn contains(&self, (project_id, fingerprint): &GroupKey) -> bool {
        self.get(*project_id, fingerprint).is_some()
    }

    pub(crate) fn len(&self) -> usize {
        self.0.values().map(HashMap::len).sum()
    }

    pub(crate) fn values(&self) -> impl Iterator<Item = &LockedGroup> {
        self.0.values().flat_map(HashMap::values)
    }

    pub(crate) fn values_mut(&mut self) -> impl Iterator<Item = &mut LockedGroup> {
        self.0.values_mut().flat_map(HashMap::values_mut)
    }
}

/// What the database said about a group once it is locked by the transaction.
#[derive(Debug, Clone)]
pub(crate) struct LockedGroup {
    pub id: i64,
    pub status: GroupStatus,
    pub resolved_in_release: Option<String>,
    /// Whether this transaction inserted it.
    pub created: bool,
}

/// An activity row to write.
#[derive(Debug, Clone)]
pub(crate) struct NewActivity {
    pub group_id: i64,
    pub kind: &'static str,
    pub from_status: Option<GroupStatus>,
    pub to_status: GroupStatus,
    pub reason: Option<String>,
    pub at: DateTime<Utc>,
}

/// The change to apply to one group after its new events are known.
#[derive(Debug, Clone)]
pub(crate) struct GroupUpdate {
    pub id: i64,
    pub added: i64,
    pub first_seen: DateTime<Utc>,
    pub last_seen: DateTime<Utc>,
    /// Release and environment of the newest new event.
    pub last_release: Option<String>,
    pub last_environment: String,
    pub status: GroupStatus,
    /// Set when the batch regressed a RESOLVED group: when it happened.
    pub regressed_at: Option<DateTime<Utc>>,
}

/// Everything the second half of a batch insert writes, computed from the
/// events, the locked groups and the set of events that were really new.
pub(crate) struct BatchResult {
    pub outcomes: Vec<InsertOutcome>,
    pub updates: Vec<GroupUpdate>,
    /// Groups created by this transaction that got no new event (all their
    /// events were already stored elsewhere); they must be deleted again.
    pub empty_created: Vec<i64>,
    pub activities: Vec<NewActivity>,
    /// `(group_id, hour) -> count`, sorted.
    pub hourly: Vec<((i64, DateTime<Utc>), i64)>,
    /// `(group_id, key, value) -> (count, last_seen)`, sorted.
    pub tags: Vec<(TagKey, (i64, DateTime<Utc>))>,
}

/// `(project_id, release)` of a release, and when the project first saw it.
pub(crate) type ReleaseKey = (i64, String);

/// The earliest receipt time of each `(project_id, release)` in a batch,
/// sorted: what the store records in `releases` (the first sighting wins).
pub(crate) fn batch_releases(events: &[NormalizedEvent]) -> Vec<(ReleaseKey, DateTime<Utc>)> {
    let mut out: BTreeMap<ReleaseKey, DateTime<Utc>> = BTreeMap::new();
    for ev in events {
        if let Some(release) = &ev.release {
            let at = out
                .entry((ev.project_id, release.clone()))
                .or_insert(ev.received_at);
            *at = (*at).min(ev.received_at);
        }
    }
    out.into_iter().collect()
}

/// The releases whose first sighting [`finish_batch`] needs: those of the
/// resolved-in release of a group resolved "in the next release" and of its
/// new events, where semantic versions cannot order the two. Usually none,
/// so the store reads nothing.
pub(crate) fn releases_to_look_up(
    events: &[NormalizedEvent],
    plan: &BatchPlan,
    locked: &LockedGroups,
) -> Vec<ReleaseKey> {
    let mut out: BTreeSet<ReleaseKey> = BTreeSet::new();
    if !locked
        .values()
        .any(|g| g.status == GroupStatus::Resolved && g.resolved_in_release.is_some())
    {
        return Vec::new();
    }
    for &i in &plan.candidates {
        let ev = &events[i];
        let Some(group) = locked.get(ev.project_id, &ev.fingerprint) else {
            continue;
        };
        if let (GroupStatus::Resolved, Some(resolved_in), Some(release)) =
            (group.status, &group.resolved_in_release, &ev.release)
        {
            if resolved_in != release && release::semver_order(release, resolved_in).is_none() {
                out.insert((ev.project_id, resolved_in.clone()));
                out.insert((ev.project_id, release.clone()));
            }
        }
    }
    out.into_iter().collect()
}

pub(crate) fn finish_batch(
    events: &[NormalizedEvent],
    plan: &BatchPlan,
    locked: &LockedGroups,
    inserted: &HashSet<(i64, Uuid)>,
    release_first_seen: &HashMap<ReleaseKey, DateTime<Utc>>,
) -> Result<BatchResult> {
    let mut outcomes = vec![InsertOutcome::Duplicate; events.len()];
    // Each update with the index of its newest event, whose release and
    // environment it takes once the loop is done. The maps below borrow
    // their strings from the events: a batch copies each distinct key once,
    // not once per event.
    let mut updates: BTreeMap<i64, (GroupUpdate, usize)> = BTreeMap::new();
    let mut activities = Vec::new();
    let mut hourly: BTreeMap<(i64, DateTime<Utc>), i64> = BTreeMap::new();
    let mut tags: BTreeMap<(i64, &str, &str), (i64, DateTime<Utc>)> = BTreeMap::new();

    for &i in &plan.candidates {
        let ev = &events[i];
        if !inserted.contains(&(ev.project_id, ev.event_id)) {
            continue;
        }
        let group = locked.of(ev)?;
        let mut new_group = false;
        let mut regression = false;
        let (update, newest) = updates.entry(group.id).or_insert_with(|| {
            // The first new event of the group in input order decides whether
            // it is the one that created the incident.
            if group.created {
                new_group = true;
                activities.push(NewActivity {
                    group_id: group.id,
                    kind: "created",
                    from_status: None,
                    to_status: GroupStatus::Open,
                    reason: None,
                    at: ev.received_at,
                });
            }
            let update = GroupUpdate {
                id: group.id,
                added: 0,
                first_seen: ev.timestamp,
                last_seen: ev.timestamp,
                last_release: None,
                last_environment: String::new(),
                status: group.status,
                regressed_at: None,
            };
            (update, i)
        });
        update.added += 1;
        update.first_seen = update.first_seen.min(ev.timestamp);
        if ev.timestamp >= update.last_seen {
            update.last_seen = ev.timestamp;
            *newest = i;
        }
        match update.status {
            GroupStatus::Quiet => {
                update.status = GroupStatus::Open;
                activities.push(NewActivity {
                    group_id: group.id,
                    kind: "unquieted",
                    from_status: Some(GroupStatus::Quiet),
                    to_status: GroupStatus::Open,
                    reason: Some("new event".to_string()),
                    at: ev.received_at,
                });
            }
            GroupStatus::Resolved => {
                // A group resolved "in the next release" expects more events
                // from the release it was resolved in and from older ones;
                // only a newer release regresses it.
                let regresses = release::regresses(
                    group.resolved_in_release.as_deref(),
                    ev.release.as_deref(),
                    |r| {
                        release_first_seen
                            .get(&(ev.project_id, r.to_string()))
                            .copied()
                    },
                );
                if regresses {
                    update.status = GroupStatus::Open;
                    update.regressed_at = Some(ev.received_at);
                    regression = true;
                    let reason = match &ev.release {
                        Some(r) => format!("new event in release {r}"),
                        None => "new event".to_string(),
                    };
                    activities.push(NewActivity {
                        group_id: group.id,
                        kind: "regressed",
                        from_status: Some(GroupStatus::Resolved),
                        to_status: GroupStatus::Open,
                        reason: Some(reason),
                        at: ev.received_at,
                    });
                }
            }
            GroupStatus::Open => {}
        }
        outcomes[i] = InsertOutcome::Stored {
            group_id: group.id,
            new_group,
            regression,
        };
        *hourly
            .entry((group.id, truncate_to_hour(ev.timestamp)))
            .or_default() += 1;
        for (k, v) in event_tags(ev) {
            let entry = tags.entry((group.id, k, v)).or_insert((0, ev.timestamp));
            entry.0 += 1;
            entry.1 = entry.1.max(ev.timestamp);
        }
    }

    let empty_created = locked
        .values()
        .filter(|g| g.created && !updates.contains_key(&g.id))
        .map(|g| g.id)
        .collect();

    let updates = updates
        .into_values()
        .map(|(mut update, newest)| {
            update.last_release = events[newest].release.clone();
            update.last_environment = events[newest].environment.clone();
            update
        })
        .collect();
    Ok(BatchResult {
        outcomes,
        updates,
        empty_created,
        activities,
        hourly: hourly.into_iter().collect(),
        tags: tags
            .into_iter()
            .map(|((group_id, key, value), counts)| {
                ((group_id, key.to_owned(), value.to_owned()), counts)
            })
            .collect(),
    })
}

/// The incident list's filters, shared by `list_groups` and `count_groups`
/// (which counts per status, so leaves the status out). The SQL is the
/// same on both backends; the builder writes each one's placeholders.
pub(crate) fn push_group_filters<'a, DB>(
    qb: &mut sqlx::QueryBuilder<'a, DB>,
    query: &GroupQuery,
    with_status: bool,
) where
    DB: sqlx::Database,
    i64: sqlx::Encode<'a, DB> + sqlx::Type<DB>,
    String: sqlx::Encode<'a, DB> + sqlx::Type<DB>,
    &'static str: sqlx::Encode<'a, DB> + sqlx::Type<DB>,
{
    if let Some(project_id) = query.project_id {
        qb.push(" AND project_id = ").push_bind(project_id);
    }
    if let Some(status) = query.status.filter(|_| with_status) {
        qb.push(" AND status = ").push_bind(status.as_db());
    }
    if let Some(service) = &query.service {
        qb.push(" AND service = ").push_bind(service.clone());
    }
    if let Some(severity) = &query.severity {
        qb.push(" AND severity = ").push_bind(severity.clone());
    }
    for (key, value) in [
        ("environment", &query.environment),
        ("release", &query.release),
    ] {
        if let Some(value) = value {
            qb.push(
                " AND EXISTS (SELECT 1 FROM group_tag_counts t WHERE t.group_id = g.id AND t.key = ",
            )
            .push_bind(key)
            .push(" AND t.value = ")
            .push_bind(value.clone())
            .push(")");
        }
    }
    if let Some(q) = query.q.as_deref().filter(|q| !q.is_empty()) {
        let pattern = like_pattern(q);
        qb.push(" AND (lower(title) LIKE ")
            .push_bind(pattern.clone())
            .push(" ESCAPE '\\' OR lower(COALESCE(culprit, '')) LIKE ")
            .push_bind(pattern.clone())
            .push(" ESCAPE '\\' OR lower(cluster_key) LIKE ")
            .push_bind(pattern)
            .push(" ESCAPE '\\')");
    }
}

/// An event listing's cursor: the time and row id of the last event of the
/// previous page.
pub(crate) fn event_cursor(query: &EventQuery) -> Result<Option<(DateTime<Utc>, i64)>> {
    let Some(cursor) = query.cursor.as_deref() else {
        return Ok(None);
    };
    let (micros, id) = decode_cursor(cursor)?;
    Ok(Some((from_micros(micros)?, id)))
}

/// The event list: `columns` of the events matching the filters, strictly
/// older than `after` (the cursor), newest first, one row more than `limit`
/// to tell whether a next page exists. The SQL is the same on both
/// backends; `At` is how each binds `received_at`. Its order reads
/// `errors_group_received` or `errors_received` backwards, never a sort
/// (tests/migrations.rs runs this function under the planners to check).
pub fn push_event_listing<'a, DB, At>(
    qb: &mut sqlx::QueryBuilder<'a, DB>,
    columns: &str,
    query: &EventQuery,
    after: Option<(At, i64)>,
    limit: i64,
) where
    DB: sqlx::Database,
    i64: sqlx::Encode<'a, DB> + sqlx::Type<DB>,
    String: sqlx::Encode<'a, DB> + sqlx::Type<DB>,
    At: sqlx::Encode<'a, DB> + sqlx::Type<DB> + 'a,
{
    qb.push(format_args!("SELECT {columns} FROM errors WHERE TRUE"));
    if let Some(project_id) = query.project_id {
        qb.push(" AND project_id = ").push_bind(project_id);
    }
    if let Some(group_id) = query.group_id {
        qb.push(" AND group_id = ").push_bind(group_id);
    }
    for (column, value) in [
        ("service", &query.service),
        ("env", &query.environment),
        ("level", &query.level),
    ] {
        if let Some(value) = value {
            qb.push(format_args!(" AND {column} = "))
                .push_bind(value.clone());
        }
    }
    if let Some((at, id)) = after {
        qb.push(" AND (received_at, id) < (")
            .push_bind(at)
            .push(", ")
            .push_bind(id)
            .push(")");
    }
    qb.push(" ORDER BY received_at DESC, id DESC LIMIT ")
        .push_bind(limit + 1);
}

/// Which neighbour of an event `push_event_neighbor` asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Neighbor {
    Older,
    Newer,
}

/// The event id of the event just older or just newer than the event
/// (`at`, `id`) in its incident. Both directions read
/// `errors_group_received`, the older one backwards (tests/migrations.rs
/// runs this function under the planners to check).
pub fn push_event_neighbor<'a, DB, At>(
    qb: &mut sqlx::QueryBuilder<'a, DB>,
    which: Neighbor,
    group_id: i64,
    at: At,
    id: i64,
) where
    DB: sqlx::Database,
    i64: sqlx::Encode<'a, DB> + sqlx::Type<DB>,
    At: sqlx::Encode<'a, DB> + sqlx::Type<DB> + 'a,
{
    let (compare, order) = match which {
        Neighbor::Older => ("<", "received_at DESC, id DESC"),
        Neighbor::Newer => (">", "received_at, id"),
    };
    qb.push("SELECT event_id FROM errors WHERE group_id = ")
        .push_bind(group_id)
        .push(format_args!(" AND (received_at, id) {compare} ("))
        .push_bind(at)
        .push(", ")
        .push_bind(id)
        .push(format_args!(") ORDER BY {order} LIMIT 1"));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursor_round_trips_and_rejects_garbage() {
        let c = encode_cursor(-5, 42);
        assert_eq!(decode_cursor(&c).unwrap(), (-5, 42));
        assert!(decode_cursor("zz").is_err());
        assert!(decode_cursor(&hex::encode("1-2")).is_err());
        assert!(decode_cursor(&hex::encode("a|2")).is_err());
    }

    #[test]
    fn like_pattern_escapes_wildcards() {
        assert_eq!(like_pattern("50%_a\\B"), "%50\\%\\_a\\\\b%");
    }

    #[test]
    fn pow2_chunks_cover_everything_in_power_of_two_pieces() {
        for n in [0usize, 1, 2, 3, 7, 64, 100, 129, 2000] {
            let items: Vec<usize> = (0..n).collect();
            let chunks: Vec<&[usize]> = pow2_chunks(&items, 100).collect();
            let joined: Vec<usize> = chunks.iter().flat_map(|c| c.iter().copied()).collect();
            assert_eq!(joined, items, "n = {n}");
            for c in &chunks {
                assert!(
                    c.len().is_power_of_two() && c.len() <= 64,
                    "n = {n}: {}",
                    c.len()
                );
            }
        }
        let items: Vec<u8> = vec![0; 2000];
        let sizes: std::collections::BTreeSet<usize> =
            pow2_chunks(&items, 100).map(<[u8]>::len).collect();
        assert_eq!(sizes.into_iter().collect::<Vec<_>>(), vec![16, 64]);
    }

    #[test]
    fn limits_are_clamped() {
        assert_eq!(clamp_limit(0), 50);
        assert_eq!(clamp_limit(1), 1);
        assert_eq!(clamp_limit(1000), 200);
    }
}
