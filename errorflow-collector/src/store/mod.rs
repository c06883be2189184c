//! Persistence. **Architecture Invariant**: this folder is the only place
//! that knows SQL. Every statement is parameterised.
//!
//! One [`Store`] trait, one implementation per backend (`postgres.rs`,
//! `sqlite.rs`), migrations per backend under `sql/`; the backend is picked
//! from the URL scheme by [`connect`]. The conformance suite in
//! `tests/store_conformance.rs` runs the same checks against both.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::model::{
    Activity, ApiToken, EventNeighbors, EventPage, EventQuery, GithubIssue, GithubLink, Group,
    GroupCounts, GroupPage, GroupQuery, GroupStats, InsertOutcome, IssueClaim, KestraRun,
    KestraTrigger, NormalizedEvent, Project, Session, StoredEvent, Transition, User,
};
use crate::triage::result::{NewTriage, Severity, TriageRecord, TriageResult};

/// Runs `migrator` on `pool`, saying first which migrations are pending:
/// some rewrite the events table and take minutes on a large database, and
/// a silent start-up would look hung. Returns the migrations that were pending.
async fn run_migrations<DB>(
    migrator: &sqlx::migrate::Migrator,
    pool: &sqlx::Pool<DB>,
) -> Result<Vec<String>>
where
    DB: sqlx::Database,
    DB::Connection: sqlx::migrate::Migrate,
{
    use sqlx::migrate::Migrate as _;
    // Under the migrator's own lock (an advisory lock on Postgres), as
    // `run` does: collectors starting together on a new database would
    // otherwise race to create the migrations table.
    let applied: std::collections::HashSet<i64> = {
        let mut conn = pool.acquire().await?;
        conn.lock().await?;
        let listed = match conn.ensure_migrations_table().await {
            Ok(()) => conn.list_applied_migrations().await,
            Err(e) => Err(e),
        };
        conn.unlock().await?;
        listed?.into_iter().map(|m| m.version).collect()
    };
    let pending: Vec<String> = migrator
        .iter()
        .filter(|m| !m.migration_type.is_down_migration() && !applied.contains(&m.version))
        .map(|m| format!("{} {}", m.version, m.description))
        .collect();
    if pending.is_empty() {
        tracing::debug!("database schema is up to date");
        return Ok(pending);
    }
    tracing::info!(
        count = pending.len(),
        migrations = %pending.join(", "),
        "applying database migrations; one that rewrites the events table can take minutes on a large database"
    );
    let started = std::time::Instant::now();
    migrator.run(pool).await?;
    tracing::info!(
        elapsed_ms = started.elapsed().as_millis() as u64,
        "database migrations applied"
    );
    Ok(pending)
}

pub mod postgres;
mod release;
mod shared;
pub mod sqlite;

// The event listings' SQL, one shape for both backends, public so that the
// plan test (tests/migrations.rs) checks the very queries the stores run.
pub use shared::{push_event_listing, push_event_neighbor, Neighbor};

/// Errors of the storage layer.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    /// From the SQLite batch insert, which runs on rusqlite (see `store::sqlite::batch`).
    #[error("database error: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// `sqlite::memory:` lives in a temporary directory, which could not be made.
    #[error("cannot create the temporary database: {0}")]
    TempDatabase(std::io::Error),
    #[error("directory {} does not exist: the database file is created if missing, its directory is not", .0.display())]
    MissingDirectory(std::path::PathBuf),
    #[error("{0}")]
    Unsupported(&'static str),
    #[error("migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("unsupported database url scheme {0:?} (expected postgres:// or sqlite://)")]
    UnsupportedUrl(String),
    #[error("invalid cursor")]
    InvalidCursor,
    #[error("a project named {0:?} already exists")]
    ProjectExists(String),
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
    /// Another transaction changed what this one relied on (an incident it
    /// found was deleted, by retention or by hand, before it was locked);
    /// retry.
    #[error("concurrent change: {0}")]
    Conflict(String),
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// Deletes an incident and everything stored for it. Its events go first,
/// [`DELETE_CHUNK`] per transaction, so that deleting a large incident never
/// holds the write path for long (SQLite's one writer is ingest's too); the
/// incident goes last, with whatever events arrived meanwhile. An event with
/// its fingerprint that arrives later opens a new incident. Returns false
/// when there is no such incident.
pub async fn delete_group_in_chunks(store: &dyn Store, group_id: i64) -> Result<bool> {
    drain(DELETE_CHUNK, Duration::ZERO, |limit| {
        store.delete_group_events(group_id, limit)
    })
    .await?;
    store.delete_group(group_id).await
}

/// What deleting a project took with it.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct DeletedProject {
    pub events: u64,
    pub incidents: u64,
}

/// Deletes a project and everything stored for it: its events, then its
/// incidents, [`DELETE_CHUNK`] per transaction (ingest shares the write
/// path meanwhile), then the project and its key. Events that arrive
/// meanwhile are refused once the key is gone (in other collectors after
/// their key cache expires). `None` when there is no such project.
pub async fn delete_project_in_chunks(
    store: &dyn Store,
    project_id: i64,
) -> Result<Option<DeletedProject>> {
    let deleted = DeletedProject {
        events: drain(DELETE_CHUNK, Duration::ZERO, |limit| {
            store.delete_project_events(project_id, limit)
        })
        .await?,
        incidents: drain(DELETE_CHUNK, Duration::ZERO, |limit| {
            store.delete_project_groups(project_id, limit)
        })
        .await?,
    };
    Ok(store.delete_project(project_id).await?.then_some(deleted))
}

/// Runs one chunk of a deletion after another (`chunk(limit)`, each its own
/// short transaction) until one deletes fewer than `limit` rows, pausing
/// `pause` in between (or just yielding) so that ingest gets the write path
/// meanwhile. Returns how many rows went.
pub async fn drain<F, Fut>(limit: u32, pause: Duration, mut chunk: F) -> Result<u64>
where
    F: FnMut(u32) -> Fut,
    Fut: std::future::Future<Output = Result<u64>>,
{
    let mut total = 0;
    loop {
        let n = chunk(limit).await?;
        total += n;
        if n < u64::from(limit) {
            return Ok(total);
        }
        if pause.is_zero() {
            tokio::task::yield_now().await;
        } else {
            tokio::time::sleep(pause).await;
        }
    }
}

/// Rows deleted per transaction when deleting in chunks.
pub const DELETE_CHUNK: u32 = 1000;

/// Which backend a store uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Postgres,
    Sqlite,
}

/// The collector's storage. Implementations must be safe to share between
/// tasks and, for Postgres, between several collector processes on one database.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    fn backend(&self) -> Backend;

    /// Applies pending migrations from `sql/<backend>/` and returns those
    /// that were pending when it looked (`"4 event json once"`): none for an
    /// up-to-date database. A collector migrating the same database at the
    /// same moment may be the one that applied them.
    async fn migrate(&self) -> Result<Vec<String>>;

    /// Cheap round trip for `/readyz`.
    async fn ping(&self) -> Result<()>;

    // ---- projects and credentials ----

    /// Creates a project whose ingest key hashes to `key_hash`.
    async fn create_project(&self, name: &str, key_hash: &str, key_prefix: &str)
        -> Result<Project>;
    async fn list_projects(&self) -> Result<Vec<Project>>;
    async fn get_project(&self, id: i64) -> Result<Option<Project>>;
    async fn project_by_key_hash(&self, key_hash: &str) -> Result<Option<Project>>;
    /// Replaces the project's ingest key; the old key stops working at once. False if no such project.
    async fn rotate_project_key(&self, id: i64, key_hash: &str, key_prefix: &str) -> Result<bool>;
    /// The webhook the project's alerts go to, when it has one of its own.
    /// `Ok(None)` also for a project that does not exist.
    async fn project_alert_webhook(&self, id: i64) -> Result<Option<String>>;
    /// Sets (`Some`) or removes (`None`) the project's own alert webhook.
    /// False if no such project.
    async fn set_project_alert_webhook(&self, id: i64, url: Option<&str>) -> Result<bool>;
    /// The project's own sensitive field names, scrubbed from its events
    /// besides the default ones; `None` if no such project.
    async fn project_scrub_fields(&self, id: i64) -> Result<Option<Vec<String>>>;
    /// Replaces the project's own sensitive field names. False if no such project.
    async fn set_project_scrub_fields(&self, id: i64, fields: &[String]) -> Result<bool>;

    // ---- GitHub ----

    /// The project's GitHub repository link, with its credentials.
    async fn github_link(&self, project_id: i64) -> Result<Option<GithubLink>>;
    /// Sets (`Some`, replacing any) or removes (`None`) the project's link.
    /// False if no such project.
    async fn set_github_link(&self, project_id: i64, link: Option<&GithubLink>) -> Result<bool>;
    /// The links of every project to this repository (`owner/name`,
    /// compared without case, as GitHub does).
    async fn github_links_for_repo(&self, repo: &str) -> Result<Vec<GithubLink>>;
    /// Claims the creation of the incident's GitHub issue, atomically: of
    /// two callers at the same moment one gets [`IssueClaim::Claimed`], the
    /// other [`IssueClaim::Pending`]. A claim older than `stale_before`
    /// that never became an issue (its creator died) may be taken over.
    /// The incident must exist.
    async fn claim_github_issue(
        &self,
        group_id: i64,
        repo: &str,
        now: DateTime<Utc>,
        stale_before: DateTime<Utc>,
    ) -> Result<IssueClaim>;
    /// Records the issue created under the caller's claim.
    async fn finish_github_issue(&self, group_id: i64, number: i64, url: &str) -> Result<()>;
    /// Gives up a claim that did not become an issue.
    async fn release_github_issue(&self, group_id: i64) -> Result<()>;
    /// The GitHub issues of these incidents (those that have one).
    async fn github_issues(
        &self,
        group_ids: &[i64],
    ) -> Result<std::collections::HashMap<i64, GithubIssue>>;
    /// The incident whose GitHub issue this is, among the project's.
    async fn group_by_github_issue(
        &self,
        project_id: i64,
        repo: &str,
        number: i64,
    ) -> Result<Option<i64>>;

    async fn create_token(&self, name: &str, token_hash: &str) -> Result<ApiToken>;
    async fn token_by_hash(&self, token_hash: &str) -> Result<Option<ApiToken>>;
    /// Every management token, oldest first.
    async fn list_tokens(&self) -> Result<Vec<ApiToken>>;
    /// Deletes (revokes) the token with this id and returns what it was;
    /// `None` when there is none. Token ids are never reused, so a stale
    /// id cannot revoke a newer token.
    async fn delete_token(&self, id: i64) -> Result<Option<ApiToken>>;
    /// Sets the token's `last_used_at` to `now` unless it is already later
    /// than `unless_since`, so that a busy client writes at most once per
    /// interval even across processes. True if it wrote.
    async fn mark_token_used(
        &self,
        token_hash: &str,
        now: DateTime<Utc>,
        unless_since: DateTime<Utc>,
    ) -> Result<bool>;

    // ---- ingest ----

    /// Stores a batch of events in **one transaction** (group commit) and
    /// returns one outcome per input event, in order.
    ///
    /// Contract:
    /// - idempotent by `(project_id, event_id)`: an event already stored, or
    ///   repeated within the batch, is `Duplicate` and changes no count;
    /// - events with the same `(project_id, fingerprint)` land in one group,
    ///   created on first sight even when other processes race to create it;
    /// - a new event reopens a QUIET group (activity `unquieted`) and regresses a
    ///   RESOLVED one (activity `regressed`, `regression_count` + 1,
    ///   `regressed_at`), except a group resolved in the next release seeing
    ///   an event of the release it was resolved in;
    /// - the group's count, first/last seen, last release/environment,
    ///   hourly counts and tag counts are updated;
    /// - when it returns `Ok`, everything is committed and durable.
    async fn insert_events(&self, events: &[NormalizedEvent]) -> Result<Vec<InsertOutcome>>;

    /// [`Store::insert_events`], with the same contract, for a caller that
    /// knows no other writer of this collector stores events of these
    /// incidents meanwhile (the writer hands each incident to one of its
    /// tasks). A backend may then lock the incidents for the whole
    /// transaction, which costs no waiting and saves a round trip.
    async fn insert_exclusive_events(
        &self,
        events: &[NormalizedEvent],
    ) -> Result<Vec<InsertOutcome>> {
        self.insert_events(events).await
    }

    // ---- incidents ----

    async fn list_groups(&self, query: &GroupQuery) -> Result<GroupPage>;
    async fn get_group(&self, id: i64) -> Result<Option<Group>>;
    /// Finds the most recently seen group with the seed's `service:error_type` key.
    async fn group_by_cluster_key(&self, cluster_key: &str) -> Result<Option<Group>>;
    /// Hourly counts for the 24 hours and daily counts for the 14 days ending at `now`, top tag values.
    async fn group_stats(&self, id: i64, now: DateTime<Utc>) -> Result<GroupStats>;
    /// Applies a state change and records it in the activity history.
    /// Returns the updated group, or `None` when there is no such group.
    async fn transition(
        &self,
        id: i64,
        transition: &Transition,
        actor: &str,
        now: DateTime<Utc>,
    ) -> Result<Option<Group>>;
    /// OPEN groups last seen before `idle_since` become QUIET (activity by `system`). Returns how many.
    async fn quiet_idle(&self, idle_since: DateTime<Utc>, now: DateTime<Utc>) -> Result<u64>;
    /// The activity history, oldest first.
    async fn activity(&self, group_id: i64) -> Result<Vec<Activity>>;

    /// Writes a consistent copy of the database to `dest` (a new file),
    /// while others keep reading and writing. SQLite only.
    async fn backup_to(&self, dest: &std::path::Path) -> Result<()>;

    // ---- deletion and retention ----

    /// Deletes up to `limit` of the project's events, in one short
    /// transaction. Returns how many; fewer than `limit` means none is left.
    async fn delete_project_events(&self, project_id: i64, limit: u32) -> Result<u64>;
    /// Deletes up to `limit` of the project's incidents with their counters,
    /// activity, triage and remaining events. Returns how many.
    async fn delete_project_groups(&self, project_id: i64, limit: u32) -> Result<u64>;
    /// Deletes the project with whatever is left of it; its key stops
    /// working. Returns false when there is no such project.
    async fn delete_project(&self, project_id: i64) -> Result<bool>;

    /// Deletes up to `limit` of the incident's events, in one short
    /// transaction. Returns how many; fewer than `limit` means none is left.
    async fn delete_group_events(&self, group_id: i64, limit: u32) -> Result<u64>;
    /// Deletes the incident with its remaining events, counters, activity and
    /// triage. Returns false when there is no such incident.
    async fn delete_group(&self, group_id: i64) -> Result<bool>;

    /// Deletes up to `limit` of the events received before `before`, oldest
    /// first, in one short transaction. Returns how many it deleted; fewer
    /// than `limit` means none older is left.
    async fn delete_events_before(&self, before: DateTime<Utc>, limit: u32) -> Result<u64>;
    /// Deletes up to `limit` incidents that have no event left and were last
    /// seen before `before`, with their counters, activity and triage, in one
    /// short transaction. Returns how many.
    async fn delete_groups_without_events(&self, before: DateTime<Utc>, limit: u32) -> Result<u64>;

    // ---- events ----

    /// Newest first.
    async fn list_events(&self, query: &EventQuery) -> Result<EventPage>;
    /// The newest event with this id in any project.
    async fn get_event(&self, event_id: Uuid) -> Result<Option<StoredEvent>>;

    // ---- triage ----

    /// Stores a triage result (with its signals) in the incident's history
    /// and copies it onto the incident (severity, priority, ai_summary,
    /// ai_next_steps as a JSON array, triaged_at, triage_trend), in one
    /// transaction. A hand-set priority or severity is kept. The incident's
    /// count and number of environments and releases are remembered for
    /// [`Store::changed_since_triage`]. `None` when there is no such incident.
    async fn save_triage(&self, triage: &NewTriage) -> Result<Option<TriageRecord>>;
    /// Stores a result once per idempotency key (the Kestra flows' input):
    /// a second call with the same key stores nothing and returns the
    /// result stored first, with `false`. `None` if there is no such
    /// incident. The key is claimed in the result's own transaction.
    async fn save_triage_once(
        &self,
        triage: &NewTriage,
        idempotency_key: &str,
    ) -> Result<Option<(TriageRecord, bool)>>;
    /// Sets the hand-set priority and severity (each `None` clears it; a
    /// cleared value goes back to the latest triage's) and records it in the
    /// activity history as `priority_set` by `actor`. `None` when there is
    /// no such incident.
    async fn set_priority_override(
        &self,
        group_id: i64,
        priority: Option<i32>,
        severity: Option<Severity>,
        actor: &str,
        now: DateTime<Utc>,
    ) -> Result<Option<Group>>;
    /// OPEN incidents whose picture changed since their last triage: ten
    /// times the events, or an environment or release not seen then; most
    /// recently seen first.
    async fn changed_since_triage(&self, limit: u32) -> Result<Vec<i64>>;
    /// The incident's triage results, newest first.
    async fn triage_history(&self, group_id: i64, limit: u32) -> Result<Vec<TriageRecord>>;
    /// OPEN incidents never triaged, or triaged before `triaged_before` and
    /// seen since their last triage; never or least recently triaged first.
    async fn stale_triage(&self, triaged_before: DateTime<Utc>, limit: u32) -> Result<Vec<i64>>;
    /// "Needs attention": OPEN incidents with priority ≥ `min_priority`, or
    /// regressed since `since`, or triaged as spiking since `since`; highest
    /// priority first.
    async fn attention_groups(
        &self,
        project_id: Option<i64>,
        min_priority: i32,
        since: DateTime<Utc>,
        limit: u32,
    ) -> Result<Vec<Group>>;
    /// Records a Kestra execution the collector started.
    async fn record_kestra_execution(
        &self,
        flow_id: &str,
        group_id: Option<i64>,
        execution_id: &str,
        state: Option<&str>,
        at: DateTime<Utc>,
    ) -> Result<()>;
    /// Writes a flow start the collector owes Kestra; a key already queued
    /// is not queued again.
    async fn enqueue_kestra_trigger(
        &self,
        flow_id: &str,
        group_id: Option<i64>,
        inputs: &str,
        idempotency_key: &str,
        at: DateTime<Utc>,
    ) -> Result<()>;
    /// Queued flow starts due at `now`, oldest first.
    async fn due_kestra_triggers(
        &self,
        now: DateTime<Utc>,
        limit: u32,
    ) -> Result<Vec<KestraTrigger>>;
    /// A failed attempt: try again at `next_attempt_at`.
    async fn retry_kestra_trigger(
        &self,
        id: i64,
        attempts: i32,
        next_attempt_at: DateTime<Utc>,
        error: &str,
    ) -> Result<()>;
    /// Removes a queued start that will not be sent (Kestra refused it).
    async fn drop_kestra_trigger(&self, id: i64) -> Result<()>;
    /// Kestra created the execution: the queued start becomes a followed
    /// run, in one transaction.
    async fn kestra_trigger_started(
        &self,
        trigger: &KestraTrigger,
        execution_id: &str,
        state: Option<&str>,
        at: DateTime<Utc>,
    ) -> Result<()>;
    /// Started runs whose end is not known yet, oldest first.
    async fn unfinished_kestra_runs(&self, limit: u32) -> Result<Vec<KestraRun>>;
    /// Records how a run ended.
    async fn finish_kestra_run(
        &self,
        id: i64,
        state: &str,
        failed_task: Option<&str>,
        error: Option<&str>,
        at: DateTime<Utc>,
    ) -> Result<()>;
    /// An incident's Kestra runs, newest first.
    async fn kestra_runs(&self, group_id: i64, limit: u32) -> Result<Vec<KestraRun>>;

    // ---- dashboard ----

    /// Incidents per status matching the query's filters (its status, sort,
    /// limit and cursor are ignored): the list's tabs.
    async fn count_groups(&self, query: &GroupQuery) -> Result<GroupCounts>;
    /// Hourly event counts of many incidents in one round trip: for each id,
    /// 24 buckets oldest first, ending with the hour of `now`. Ids without
    /// events in the window are absent.
    async fn hourly_counts(
        &self,
        group_ids: &[i64],
        now: DateTime<Utc>,
    ) -> Result<std::collections::HashMap<i64, Vec<i64>>>;
    /// The event ids just older and just newer than the stored event `id`
    /// (received at `received_at`) in its incident, in the order of
    /// [`Store::list_events`] (newest received first).
    async fn event_neighbors(
        &self,
        group_id: i64,
        received_at: DateTime<Utc>,
        id: i64,
    ) -> Result<EventNeighbors>;

    /// Creates a dashboard user; `None` when the name is taken.
    async fn create_user(&self, name: &str, password_hash: &str) -> Result<Option<User>>;
    async fn user_by_name(&self, name: &str) -> Result<Option<User>>;
    /// Replaces a user's password hash and ends their sessions. False if no such user.
    async fn set_user_password(&self, name: &str, password_hash: &str) -> Result<bool>;
    async fn count_users(&self) -> Result<i64>;
    /// Stores a session under the hash of its cookie value (and drops expired ones).
    async fn create_session(
        &self,
        token_hash: &str,
        user_id: i64,
        now: DateTime<Utc>,
        expires_at: DateTime<Utc>,
    ) -> Result<()>;
    /// The unexpired session with this token hash.
    async fn session_by_hash(
        &self,
        token_hash: &str,
        now: DateTime<Utc>,
    ) -> Result<Option<Session>>;
    async fn delete_session(&self, token_hash: &str) -> Result<()>;
}

/// Opens the store named by `url` (`postgres://…`, `postgresql://…` or
/// `sqlite://…`; a SQLite file is created if missing). Does not migrate.
pub async fn connect(url: &str) -> Result<Arc<dyn Store>> {
    match backend_of(url)? {
        Backend::Postgres => Ok(Arc::new(postgres::PgStore::connect(url).await?)),
        Backend::Sqlite => Ok(Arc::new(sqlite::SqliteStore::connect(url).await?)),
    }
}

/// The backend a database URL names, without connecting.
pub fn backend_of(url: &str) -> Result<Backend> {
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        Ok(Backend::Postgres)
    } else if url.starts_with("sqlite:") {
        Ok(Backend::Sqlite)
    } else {
        let scheme = url.split(':').next().unwrap_or_default().to_string();
        Err(StoreError::UnsupportedUrl(scheme))
    }
}

/// The activity note of a hand-set priority and severity.
pub(crate) fn override_note(priority: Option<i32>, severity: Option<Severity>) -> String {
    match (priority, severity) {
        (None, None) => "priority and severity back to triage".to_string(),
        (Some(p), None) => format!("priority {p} set by hand; severity from triage"),
        (None, Some(s)) => format!("severity {s} set by hand; priority from triage"),
        (Some(p), Some(s)) => format!("priority {p} and severity {s} set by hand"),
    }
}

/// Builds a stored triage record from its columns (both backends).
/// `labels` are analyst, model, prompt version and trigger.
#[allow(clippy::too_many_arguments)]
pub(crate) fn triage_record(
    id: i64,
    group_id: i64,
    summary: String,
    severity: String,
    priority: i32,
    probable_cause: String,
    next_steps: Vec<String>,
    confidence: f64,
    labels: [String; 4],
    fallback_reason: Option<String>,
    trend: Option<String>,
    signals: Vec<crate::triage::result::Signal>,
    created_at: DateTime<Utc>,
) -> Result<TriageRecord> {
    let severity = Severity::parse(&severity)
        .ok_or_else(|| StoreError::Corrupt(format!("unknown severity {severity:?}")))?;
    let [analyst, model, prompt_version, trigger] = labels;
    Ok(TriageRecord {
        id,
        group_id,
        result: TriageResult {
            summary,
            severity,
            priority,
            probable_cause,
            next_steps,
            confidence,
        },
        analyst,
        model,
        prompt_version,
        fallback_reason,
        trigger,
        trend,
        explanation: crate::triage::result::explanation(&signals),
        signals,
        created_at,
    })
}

/// Hides the password of a database URL, for logs and `Debug`.
pub fn redact_url(url: &str) -> String {
    match url.find("://") {
        Some(start) => {
            let rest = &url[start + 3..];
            let authority_end = rest.find('/').unwrap_or(rest.len());
            let authority = &rest[..authority_end];
            match authority.rfind('@') {
                Some(at) => {
                    let userinfo = &authority[..at];
                    let user = userinfo.split(':').next().unwrap_or_default();
                    let masked = if userinfo.contains(':') {
                        format!("{user}:***")
                    } else {
                        user.to_string()
                    };
                    format!("{}://{}{}", &url[..start], masked, &rest[at..])
                }
                None => url.to_string(),
            }
        }
        None => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::redact_url;

    #[test]
    fn redacts_passwords_only() {
        assert_eq!(
            redact_url("postgres://u:secret@db:5432/x"),
            "postgres://u:***@db:5432/x"
        );
        assert_eq!(redact_url("postgres://u@db/x"), "postgres://u@db/x");
        assert_eq!(redact_url("sqlite://errorflow.db"), "sqlite://errorflow.db");
    }
}
