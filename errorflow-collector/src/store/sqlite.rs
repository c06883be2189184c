//! SQLite backend: one file, WAL mode, a connection that writes the event
//! batches (`batch`), one for the other writes, and a small pool of readers
//! so that dashboard queries never wait behind ingest.
//!
//! Timestamps are stored as TEXT in the fixed format of `fmt_ts`, whose
//! text order is time order, so comparisons and `MIN`/`MAX` work on the text.

use std::collections::HashMap;
use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, NaiveDateTime, Utc};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteRow};
use sqlx::types::Json;
use sqlx::{QueryBuilder, Row, Sqlite, SqlitePool};
use uuid::Uuid;

use super::shared::{self, Neighbor};
use super::{triage_record, Backend, Result, Store, StoreError};
use crate::model::*;
use crate::triage::result::{NewTriage, Severity, TriageRecord};

mod batch;

/// SQLite's default limit on bound parameters per statement.
const MAX_BINDS: usize = 32766;

const TS_FORMAT: &str = "%Y-%m-%dT%H:%M:%S%.6fZ";

/// Formats a timestamp with fixed microsecond precision so that stored text
/// sorts in time order.
fn fmt_ts(t: DateTime<Utc>) -> String {
    // The same text as TS_FORMAT, several times faster than `format`.
    t.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
}

fn parse_ts(s: &str) -> Result<DateTime<Utc>> {
    NaiveDateTime::parse_from_str(s, TS_FORMAT)
        .map(|n| n.and_utc())
        .or_else(|_| DateTime::parse_from_rfc3339(s).map(|t| t.with_timezone(&Utc)))
        .map_err(|e| StoreError::Corrupt(format!("bad timestamp {s:?}: {e}")))
}

fn parse_opt_ts(s: Option<String>) -> Result<Option<DateTime<Utc>>> {
    s.as_deref().map(parse_ts).transpose()
}

const GROUP_COLUMNS: &str = "id, project_id, cluster_key, fingerprint, fingerprint_version, \
    service, error_type, title, culprit, level, status, count, first_seen, last_seen, severity, \
    priority, summary, ai_summary, ai_next_steps, resolution_reason, resolved_at, \
    resolved_in_release, regression_count, regressed_at, last_release, last_environment, \
    priority_override, severity_override";

fn group_from_row(row: &SqliteRow) -> Result<Group> {
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
        first_seen: parse_ts(row.try_get("first_seen")?)?,
        last_seen: parse_ts(row.try_get("last_seen")?)?,
        severity: row.try_get("severity")?,
        priority: row.try_get("priority")?,
        summary: row.try_get("summary")?,
        ai_summary: row.try_get("ai_summary")?,
        ai_next_steps: row.try_get("ai_next_steps")?,
        resolution_reason: row.try_get("resolution_reason")?,
        resolved_at: parse_opt_ts(row.try_get("resolved_at")?)?,
        resolved_in_release: row.try_get("resolved_in_release")?,
        regression_count: row.try_get("regression_count")?,
        regressed_at: parse_opt_ts(row.try_get("regressed_at")?)?,
        last_release: row.try_get("last_release")?,
        last_environment: row.try_get("last_environment")?,
        priority_override: row.try_get("priority_override")?,
        severity_override: row.try_get("severity_override")?,
    })
}

const EVENT_COLUMNS_SQL: &str = "id, project_id, group_id, event_id, timestamp, received_at, \
    level, service, error_type, message, env, path, trace_id, release, host, data";

fn event_from_row(row: &SqliteRow) -> Result<StoredEvent> {
    let event_id: &str = row.try_get("event_id")?;
    let data: Json<serde_json::Value> = row.try_get("data")?;
    Ok(StoredEvent {
        id: row.try_get("id")?,
        project_id: row.try_get("project_id")?,
        group_id: row.try_get("group_id")?,
        event_id: Uuid::parse_str(event_id)
            .map_err(|e| StoreError::Corrupt(format!("bad event id {event_id:?}: {e}")))?,
        timestamp: parse_ts(row.try_get("timestamp")?)?,
        received_at: parse_ts(row.try_get("received_at")?)?,
        level: row.try_get("level")?,
        service: row.try_get("service")?,
        error_type: row.try_get("error_type")?,
        message: row.try_get("message")?,
        env: row.try_get("env")?,
        path: row.try_get("path")?,
        trace_id: row.try_get("trace_id")?,
        release: row.try_get("release")?,
        host: row.try_get("host")?,
        data: data.0,
    })
}

const TOKEN_COLUMNS: &str = "id, name, created_at, last_used_at";

fn token_from_row(row: &SqliteRow) -> Result<ApiToken> {
    Ok(ApiToken {
        id: row.try_get("id")?,
        name: row.try_get("name")?,
        created_at: parse_ts(row.try_get("created_at")?)?,
        last_used_at: parse_opt_ts(row.try_get("last_used_at")?)?,
    })
}

fn project_from_row(row: &SqliteRow) -> Result<Project> {
    Ok(Project {
        id: row.try_get("id")?,
        name: row.try_get("name")?,
        key_prefix: row.try_get("key_prefix")?,
        created_at: parse_ts(row.try_get("created_at")?)?,
    })
}

fn activity_from_row(row: &SqliteRow) -> Result<Activity> {
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
        at: parse_ts(row.try_get("at")?)?,
    })
}

/// Runs the blocking `f` without stalling the runtime's other tasks: on a
/// multi-thread runtime the worker first hands its queue to another thread
/// ([`tokio::task::block_in_place`]); a current-thread runtime (tests) has no
/// other thread to hand it to, so `f` runs inline.
fn run_blocking<R>(f: impl FnOnce() -> R) -> R {
    use tokio::runtime::{Handle, RuntimeFlavor};
    match Handle::try_current().map(|h| h.runtime_flavor()) {
        Ok(RuntimeFlavor::MultiThread) => tokio::task::block_in_place(f),
        _ => f(),
    }
}

fn is_unique_violation(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(db) if db.is_unique_violation())
}

/// The chunked deletions of retention and of deleting incidents and
/// projects: each takes a key (a time, or an id) and a row limit. Public so
/// that `tests/migrations.rs` checks their plans: each must read an index.
pub mod deletions {
    /// An incident's events.
    pub const GROUP_EVENTS: &str =
        "DELETE FROM errors WHERE id IN (SELECT id FROM errors WHERE group_id = ? LIMIT ?)";
    /// A project's events, through its incidents: no index leads with the
    /// events' project_id, and errors_group_received finds each incident's
    /// events wherever they are in the table.
    pub const PROJECT_EVENTS: &str = "DELETE FROM errors WHERE id IN (SELECT e.id \
         FROM error_groups g JOIN errors e ON e.group_id = g.id WHERE g.project_id = ? LIMIT ?)";
    /// A project's incidents.
    pub const PROJECT_GROUPS: &str = "DELETE FROM error_groups WHERE id IN \
         (SELECT id FROM error_groups WHERE project_id = ? LIMIT ?)";
    /// Events received before a time, oldest first along errors_received.
    pub const EXPIRED_EVENTS: &str = "DELETE FROM errors WHERE id IN (SELECT id FROM errors \
         WHERE received_at < ? ORDER BY received_at, id LIMIT ?)";
    /// Incidents without events, last seen before a time.
    pub const EMPTY_IDLE_GROUPS: &str = "DELETE FROM error_groups WHERE id IN (SELECT g.id \
         FROM error_groups g WHERE g.last_seen < ? \
         AND NOT EXISTS (SELECT 1 FROM errors e WHERE e.group_id = g.id) \
         ORDER BY g.last_seen, g.id LIMIT ?)";
}

pub struct SqliteStore {
    /// The connection for every write but the event batches. SQLite allows
    /// one writer at a time anyway; queueing writers in the pool is cheaper
    /// than SQLITE_BUSY retries. Its write transactions are IMMEDIATE, so
    /// they wait for the batch writer through `busy_timeout`.
    pub pool: SqlitePool,
    /// Readers; in WAL mode they see the last commit without blocking the writer.
    pub readers: SqlitePool,
    /// The connection that writes event batches (see [`batch`]), used from
    /// the writer task without any hand-off to another thread.
    batch_writer: std::sync::Mutex<rusqlite::Connection>,
    /// Copies committed pages from the WAL into the database file in the
    /// background (see [`checkpoint_loop`]); stopped when the store is dropped.
    checkpointer: tokio::task::JoinHandle<()>,
    /// Where an in-memory database (`sqlite::memory:`) really lives: a
    /// private temporary file, removed when the store is dropped.
    _scratch: Option<tempfile::TempDir>,
}

impl Drop for SqliteStore {
    fn drop(&mut self) {
        self.checkpointer.abort();
    }
}

/// How long a write waits for another connection's write transaction.
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

/// The settings of every connection, sqlx's and the batch writer's alike
/// (besides WAL mode and [`BUSY_TIMEOUT`]).
const PRAGMAS: &[(&str, &str)] = &[
    // FULL: an event acknowledged to a client must survive a power cut.
    ("synchronous", "FULL"),
    ("foreign_keys", "ON"),
    // 16 MiB of page cache per connection (the default is 2 MiB). A
    // group-committed batch of a thousand events dirties more pages than the
    // default holds; spilling them mid-transaction wrote each page to the
    // WAL several times. With 8 MiB the batch writer still re-read index
    // pages from the OS on every batch (`pread` was 6 % of its time); 16 MiB
    // took SQLite batches from 20,500 to 27,500 events/s and Sentry
    // envelopes from 6,600 to 7,300 in the load benchmark. 32 MiB was no
    // faster and pushed RSS past the 150 MiB budget.
    ("cache_size", "-16384"),
    ("temp_store", "MEMORY"),
    // The background checkpointer keeps the WAL short; a writer checkpoints
    // itself only past 64 MiB of WAL, as a safety net.
    ("wal_autocheckpoint", "16384"),
];

/// How often the background checkpointer runs.
const CHECKPOINT_INTERVAL: Duration = Duration::from_millis(100);

/// Checkpoints the WAL from its own connection. With the writer's automatic
/// checkpoints, every few commits one of them also copied a few thousand
/// pages into the database file and fsynced it, on the single write path.
/// A PASSIVE checkpoint never blocks the writer or the readers; it copies
/// what it can, and once it has caught up the writer starts the WAL over.
async fn checkpoint_loop(mut conn: sqlx::SqliteConnection) {
    use sqlx::Connection as _;
    let mut tick = tokio::time::interval(CHECKPOINT_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if let Err(e) = sqlx::query("PRAGMA wal_checkpoint(PASSIVE)")
            .execute(&mut conn)
            .await
        {
            tracing::warn!(error = %e, "WAL checkpoint failed; the writer's own checkpoints take over");
            if conn.ping().await.is_err() {
                return;
            }
        }
    }
}

impl SqliteStore {
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
        // Several connections share the database (the batch writer, the
        // other writes, the readers, the checkpointer), which an in-memory
        // database cannot do: each connection would get its own. So an
        // in-memory database is a file in a private temporary directory.
        let in_memory = url.contains(":memory:") || url.contains("mode=memory");
        let (url, scratch) = if in_memory {
            let dir = tempfile::Builder::new()
                .prefix("errorflow-")
                .tempdir()
                .map_err(StoreError::TempDatabase)?;
            let url = format!("sqlite://{}", dir.path().join("memory.db").display());
            (url, Some(dir))
        } else {
            (url.to_owned(), None)
        };
        let options = PRAGMAS.iter().fold(
            SqliteConnectOptions::from_str(&url)?
                .create_if_missing(true)
                .journal_mode(SqliteJournalMode::Wal)
                .busy_timeout(BUSY_TIMEOUT),
            |options, (name, value)| options.pragma(*name, *value),
        );
        // SQLite creates a missing file but not its directory, and then
        // says only "unable to open database file".
        let dir = options.get_filename().parent();
        if let Some(dir) = dir.filter(|d| !d.as_os_str().is_empty() && !d.is_dir()) {
            return Err(StoreError::MissingDirectory(dir.to_owned()));
        }
        let pool = SqlitePoolOptions::new()
            .max_connections(1)
            .connect_with(options.clone())
            .await?;
        let readers = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(options.clone().read_only(true))
            .await?;
        let conn = sqlx::ConnectOptions::connect(&options).await?;
        let checkpointer = tokio::spawn(checkpoint_loop(conn));
        // The pool's connection has created the file and switched it to WAL.
        let path = options.get_filename().to_owned();
        let batch_writer = run_blocking(|| batch::open_writer(&path, BUSY_TIMEOUT, PRAGMAS))?;
        Ok(SqliteStore {
            pool,
            readers,
            batch_writer: std::sync::Mutex::new(batch_writer),
            checkpointer,
            _scratch: scratch,
        })
    }

    /// One chunk of a deletion (a statement of [`deletions`] with its key
    /// and row limit) in its own short write transaction: the batch writer
    /// waits at most for one chunk. Incidents' counters, activity and
    /// triage go by ON DELETE CASCADE; migration 0007's triggers keep their
    /// ids from being reused.
    async fn delete_chunk<K>(&self, sql: &'static str, key: K, limit: u32) -> Result<u64>
    where
        K: for<'q> sqlx::Encode<'q, Sqlite> + sqlx::Type<Sqlite> + Send + 'static,
    {
        let mut tx = self.begin_write().await?;
        let done = sqlx::query(sql)
            .bind(key)
            .bind(i64::from(limit))
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(done.rows_affected())
    }

    async fn begin_write(&self) -> Result<sqlx::Transaction<'static, Sqlite>> {
        // IMMEDIATE takes the write lock up front: a deferred transaction that
        // reads first and writes later can fail with SQLITE_BUSY when another
        // process wrote in between, and busy_timeout cannot help with that.
        Ok(self.pool.begin_with("BEGIN IMMEDIATE").await?)
    }

    async fn fetch_group(
        &self,
        conn: &mut sqlx::SqliteConnection,
        id: i64,
    ) -> Result<Option<Group>> {
        let sql = format!("SELECT {GROUP_COLUMNS} FROM error_groups WHERE id = ?");
        let row = sqlx::query(&sql).bind(id).fetch_optional(conn).await?;
        row.as_ref().map(group_from_row).transpose()
    }
}

fn github_link_from_row(row: &SqliteRow) -> Result<GithubLink> {
    Ok(GithubLink {
        project_id: row.try_get("project_id")?,
        repo: row.try_get("repo")?,
        api_url: row.try_get("api_url")?,
        token: row.try_get("token")?,
        webhook_secret: row.try_get("webhook_secret")?,
    })
}

#[async_trait]
impl Store for SqliteStore {
    fn backend(&self) -> Backend {
        Backend::Sqlite
    }

    async fn migrate(&self) -> Result<Vec<String>> {
        super::run_migrations(&sqlx::migrate!("../sql/sqlite"), &self.pool).await
    }

    async fn ping(&self) -> Result<()> {
        sqlx::query("SELECT 1").execute(&self.readers).await?;
        Ok(())
    }

    async fn create_project(
        &self,
        name: &str,
        key_hash: &str,
        key_prefix: &str,
    ) -> Result<Project> {
        let row = sqlx::query(
            // The id: above every project id ever deleted (migration 0007).
            "INSERT INTO projects (id, name, key_hash, key_prefix, created_at) VALUES \
             (MAX(COALESCE((SELECT MAX(id) FROM projects), 0), \
                  COALESCE((SELECT floor FROM id_floors WHERE name = 'projects'), 0)) + 1, \
              ?, ?, ?, ?) \
             RETURNING id, name, key_prefix, created_at",
        )
        .bind(name)
        .bind(key_hash)
        .bind(key_prefix)
        .bind(fmt_ts(Utc::now()))
        .fetch_one(&self.pool)
        .await;
        match row {
            Ok(row) => project_from_row(&row),
            Err(e) if is_unique_violation(&e) && e.to_string().contains("projects.name") => {
                Err(StoreError::ProjectExists(name.to_string()))
            }
            Err(e) => Err(e.into()),
        }
    }

    async fn list_projects(&self) -> Result<Vec<Project>> {
        let rows = sqlx::query("SELECT id, name, key_prefix, created_at FROM projects ORDER BY id")
            .fetch_all(&self.readers)
            .await?;
        rows.iter().map(project_from_row).collect()
    }

    async fn get_project(&self, id: i64) -> Result<Option<Project>> {
        let row = sqlx::query("SELECT id, name, key_prefix, created_at FROM projects WHERE id = ?")
            .bind(id)
            .fetch_optional(&self.readers)
            .await?;
        row.as_ref().map(project_from_row).transpose()
    }

    async fn project_by_key_hash(&self, key_hash: &str) -> Result<Option<Project>> {
        let row =
            sqlx::query("SELECT id, name, key_prefix, created_at FROM projects WHERE key_hash = ?")
                .bind(key_hash)
                .fetch_optional(&self.readers)
                .await?;
        row.as_ref().map(project_from_row).transpose()
    }

    async fn rotate_project_key(&self, id: i64, key_hash: &str, key_prefix: &str) -> Result<bool> {
        let done = sqlx::query("UPDATE projects SET key_hash = ?, key_prefix = ? WHERE id = ?")
            .bind(key_hash)
            .bind(key_prefix)
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() > 0)
    }

    async fn project_alert_webhook(&self, id: i64) -> Result<Option<String>> {
        let url: Option<Option<String>> =
            sqlx::query_scalar("SELECT alert_webhook FROM projects WHERE id = ?")
                .bind(id)
                .fetch_optional(&self.readers)
                .await?;
        Ok(url.flatten())
    }

    async fn set_project_alert_webhook(&self, id: i64, url: Option<&str>) -> Result<bool> {
        let done = sqlx::query("UPDATE projects SET alert_webhook = ? WHERE id = ?")
            .bind(url)
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() > 0)
    }

    async fn project_scrub_fields(&self, id: i64) -> Result<Option<Vec<String>>> {
        let fields: Option<String> =
            sqlx::query_scalar("SELECT scrub_fields FROM projects WHERE id = ?")
                .bind(id)
                .fetch_optional(&self.readers)
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
        let done = sqlx::query("UPDATE projects SET scrub_fields = ? WHERE id = ?")
            .bind(json)
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() > 0)
    }

    async fn github_link(&self, project_id: i64) -> Result<Option<GithubLink>> {
        let row = sqlx::query(
            "SELECT project_id, repo, api_url, token, webhook_secret FROM github_links \
             WHERE project_id = ?",
        )
        .bind(project_id)
        .fetch_optional(&self.readers)
        .await?;
        row.as_ref().map(github_link_from_row).transpose()
    }

    async fn set_github_link(&self, project_id: i64, link: Option<&GithubLink>) -> Result<bool> {
        let exists: Option<i64> = sqlx::query_scalar("SELECT id FROM projects WHERE id = ?")
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
                     VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (project_id) DO UPDATE SET \
                     repo = EXCLUDED.repo, api_url = EXCLUDED.api_url, token = EXCLUDED.token, \
                     webhook_secret = EXCLUDED.webhook_secret, updated_at = EXCLUDED.updated_at",
                )
                .bind(project_id)
                .bind(&l.repo)
                .bind(&l.api_url)
                .bind(&l.token)
                .bind(&l.webhook_secret)
                .bind(fmt_ts(Utc::now()))
                .execute(&self.pool)
                .await?;
            }
            None => {
                sqlx::query("DELETE FROM github_links WHERE project_id = ?")
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
             WHERE lower(repo) = lower(?) ORDER BY project_id",
        )
        .bind(repo)
        .fetch_all(&self.readers)
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
            "INSERT INTO github_issues (group_id, repo, created_at) VALUES (?, ?, ?) \
             ON CONFLICT (group_id) DO UPDATE SET repo = EXCLUDED.repo, created_at = EXCLUDED.created_at \
             WHERE github_issues.number IS NULL AND github_issues.created_at < ? \
             RETURNING group_id",
        )
        .bind(group_id)
        .bind(repo)
        .bind(fmt_ts(now))
        .bind(fmt_ts(stale_before))
        .fetch_optional(&self.pool)
        .await?;
        if claimed.is_some() {
            return Ok(IssueClaim::Claimed);
        }
        let row = sqlx::query("SELECT repo, number, url FROM github_issues WHERE group_id = ?")
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
        sqlx::query("UPDATE github_issues SET number = ?, url = ? WHERE group_id = ?")
            .bind(number)
            .bind(url)
            .bind(group_id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn release_github_issue(&self, group_id: i64) -> Result<()> {
        sqlx::query("DELETE FROM github_issues WHERE group_id = ? AND number IS NULL")
            .bind(group_id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn github_issues(&self, group_ids: &[i64]) -> Result<HashMap<i64, GithubIssue>> {
        if group_ids.is_empty() {
            return Ok(HashMap::new());
        }
        let mut q = QueryBuilder::<Sqlite>::new(
            "SELECT group_id, repo, number, url FROM github_issues \
             WHERE number IS NOT NULL AND url IS NOT NULL AND group_id IN (",
        );
        let mut ids = q.separated(", ");
        for id in group_ids {
            ids.push_bind(*id);
        }
        q.push(")");
        let rows = q.build().fetch_all(&self.readers).await?;
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
             WHERE g.project_id = ? AND lower(i.repo) = lower(?) AND i.number = ?",
        )
        .bind(project_id)
        .bind(repo)
        .bind(number)
        .fetch_optional(&self.readers)
        .await?)
    }

    async fn create_token(&self, name: &str, token_hash: &str) -> Result<ApiToken> {
        // The id: above every token id ever deleted (migration 0012), so a
        // revoked token's id never names a newer token.
        let sql = format!(
            "INSERT INTO api_tokens (id, name, token_hash, created_at) VALUES \
             (MAX(COALESCE((SELECT MAX(id) FROM api_tokens), 0), \
                  COALESCE((SELECT floor FROM id_floors WHERE name = 'api_tokens'), 0)) + 1, \
              ?, ?, ?) \
             RETURNING {TOKEN_COLUMNS}"
        );
        let row = sqlx::query(&sql)
            .bind(name)
            .bind(token_hash)
            .bind(fmt_ts(Utc::now()))
            .fetch_one(&self.pool)
            .await?;
        token_from_row(&row)
    }

    async fn token_by_hash(&self, token_hash: &str) -> Result<Option<ApiToken>> {
        let sql = format!("SELECT {TOKEN_COLUMNS} FROM api_tokens WHERE token_hash = ?");
        let row = sqlx::query(&sql)
            .bind(token_hash)
            .fetch_optional(&self.readers)
            .await?;
        row.as_ref().map(token_from_row).transpose()
    }

    async fn list_tokens(&self) -> Result<Vec<ApiToken>> {
        let sql = format!("SELECT {TOKEN_COLUMNS} FROM api_tokens ORDER BY id");
        let rows = sqlx::query(&sql).fetch_all(&self.readers).await?;
        rows.iter().map(token_from_row).collect()
    }

    async fn delete_token(&self, id: i64) -> Result<Option<ApiToken>> {
        let sql = format!("DELETE FROM api_tokens WHERE id = ? RETURNING {TOKEN_COLUMNS}");
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
            "UPDATE api_tokens SET last_used_at = ? \
             WHERE token_hash = ? AND (last_used_at IS NULL OR last_used_at <= ?)",
        )
        .bind(fmt_ts(now))
        .bind(token_hash)
        .bind(fmt_ts(unless_since))
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() > 0)
    }

    async fn insert_events(&self, events: &[NormalizedEvent]) -> Result<Vec<InsertOutcome>> {
        if events.is_empty() {
            return Ok(Vec::new());
        }
        let plan = shared::plan_batch(events);
        run_blocking(|| {
            // A panic while the lock was held can only have happened inside
            // `write_batch`, whose transaction then rolled back on unwind.
            let mut db = self
                .batch_writer
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            batch::write_batch(&mut db, events, &plan)
        })
    }

    async fn list_groups(&self, query: &GroupQuery) -> Result<GroupPage> {
        let limit = shared::clamp_limit(query.limit);
        let cursor = query
            .cursor
            .as_deref()
            .map(shared::decode_cursor)
            .transpose()?;
        // The sort expression, and how a cursor value binds against it.
        let (expr, is_time) = match query.sort {
            GroupSort::LastSeen => ("last_seen", true),
            GroupSort::FirstSeen => ("first_seen", true),
            GroupSort::Count => ("count", false),
            GroupSort::Priority => ("COALESCE(priority, -1)", false),
        };
        let mut qb: QueryBuilder<Sqlite> = QueryBuilder::new(format!(
            "SELECT {GROUP_COLUMNS}, {expr} AS sort_value FROM error_groups g WHERE 1 = 1"
        ));
        shared::push_group_filters(&mut qb, query, true);
        if let Some((value, id)) = cursor {
            qb.push(format!(" AND ({expr}, id) < ("));
            if is_time {
                qb.push_bind(fmt_ts(shared::from_micros(value)?));
            } else {
                qb.push_bind(value);
            }
            qb.push(", ").push_bind(id).push(")");
        }
        qb.push(format!(" ORDER BY {expr} DESC, id DESC LIMIT "))
            .push_bind(limit + 1);
        let rows = qb.build().fetch_all(&self.readers).await?;
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
        let mut conn = self.readers.acquire().await?;
        self.fetch_group(&mut conn, id).await
    }

    async fn group_by_cluster_key(&self, cluster_key: &str) -> Result<Option<Group>> {
        let sql = format!(
            "SELECT {GROUP_COLUMNS} FROM error_groups WHERE cluster_key = ? \
             ORDER BY last_seen DESC, id DESC LIMIT 1"
        );
        let row = sqlx::query(&sql)
            .bind(cluster_key)
            .fetch_optional(&self.readers)
            .await?;
        row.as_ref().map(group_from_row).transpose()
    }

    async fn group_stats(&self, id: i64, now: DateTime<Utc>) -> Result<GroupStats> {
        let rows = sqlx::query(
            "SELECT hour, count FROM group_hourly_counts WHERE group_id = ? AND hour >= ? AND hour <= ?",
        )
        .bind(id)
        .bind(fmt_ts(shared::stats_window_start(now)))
        .bind(fmt_ts(now))
        .fetch_all(&self.readers)
        .await?;
        let hours = rows
            .iter()
            .map(|r| Ok((parse_ts(r.try_get("hour")?)?, r.try_get("count")?)))
            .collect::<Result<Vec<_>>>()?;
        let (hourly, daily) = shared::fill_buckets(&hours, now);
        let rows = sqlx::query(
            "SELECT key, value, count FROM ( \
               SELECT key, value, count, \
                 row_number() OVER (PARTITION BY key ORDER BY count DESC, value) AS rn \
               FROM group_tag_counts WHERE group_id = ?) \
             WHERE rn <= 10 ORDER BY key, count DESC, value",
        )
        .bind(id)
        .fetch_all(&self.readers)
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
        let mut tx = self.begin_write().await?;
        let Some(group) = self.fetch_group(&mut tx, id).await? else {
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
                "UPDATE error_groups SET status = 'RESOLVED', resolution_reason = ?, \
                 resolved_at = ?, resolved_in_release = ? WHERE id = ?",
            )
            .bind(&reason)
            .bind(fmt_ts(now))
            .bind(release)
            .bind(id)
            .execute(&mut *tx)
            .await?;
        } else {
            // Leaving RESOLVED forgets how and when it was resolved.
            sqlx::query(
                "UPDATE error_groups SET status = ?, resolution_reason = NULL, resolved_at = NULL, \
                 resolved_in_release = NULL WHERE id = ?",
            )
            .bind(to.as_db())
            .bind(id)
            .execute(&mut *tx)
            .await?;
        }
        sqlx::query(
            "INSERT INTO group_activity (group_id, kind, actor, from_status, to_status, reason, at) \
             VALUES (?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(id)
        .bind(kind)
        .bind(actor)
        .bind(group.status.as_db())
        .bind(to.as_db())
        .bind(&reason)
        .bind(fmt_ts(now))
        .execute(&mut *tx)
        .await?;
        let group = self.fetch_group(&mut tx, id).await?;
        tx.commit().await?;
        Ok(group)
    }

    async fn quiet_idle(&self, idle_since: DateTime<Utc>, now: DateTime<Utc>) -> Result<u64> {
        let mut tx = self.begin_write().await?;
        let ids: Vec<i64> = sqlx::query_scalar(
            "UPDATE error_groups SET status = 'QUIET' WHERE status = 'OPEN' AND last_seen < ? RETURNING id",
        )
        .bind(fmt_ts(idle_since))
        .fetch_all(&mut *tx)
        .await?;
        for chunk in ids.chunks(MAX_BINDS / 2) {
            let mut qb: QueryBuilder<Sqlite> = QueryBuilder::new(
                "INSERT INTO group_activity (group_id, kind, actor, from_status, to_status, reason, at) ",
            );
            qb.push_values(chunk, |mut b, id| {
                b.push_bind(*id)
                    .push_bind("quieted")
                    .push_bind("system")
                    .push_bind("OPEN")
                    .push_bind("QUIET")
                    .push_bind("no events for the quiet period")
                    .push_bind(fmt_ts(now));
            });
            qb.build().execute(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(ids.len() as u64)
    }

    async fn backup_to(&self, dest: &std::path::Path) -> Result<()> {
        vacuum_into(&self.readers, dest).await
    }

    async fn delete_group_events(&self, group_id: i64, limit: u32) -> Result<u64> {
        self.delete_chunk(deletions::GROUP_EVENTS, group_id, limit)
            .await
    }

    async fn delete_group(&self, group_id: i64) -> Result<bool> {
        // Events, counters, activity and triage go by ON DELETE CASCADE.
        let mut tx = self.begin_write().await?;
        let done = sqlx::query("DELETE FROM error_groups WHERE id = ?")
            .bind(group_id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
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
        // Whatever is left of it goes by ON DELETE CASCADE.
        let mut tx = self.begin_write().await?;
        let done = sqlx::query("DELETE FROM projects WHERE id = ?")
            .bind(project_id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(done.rows_affected() == 1)
    }

    async fn delete_events_before(&self, before: DateTime<Utc>, limit: u32) -> Result<u64> {
        self.delete_chunk(deletions::EXPIRED_EVENTS, fmt_ts(before), limit)
            .await
    }

    async fn delete_groups_without_events(&self, before: DateTime<Utc>, limit: u32) -> Result<u64> {
        // The batch writer holds the write lock for its whole transaction,
        // so no event can be joining one of these incidents meanwhile.
        self.delete_chunk(deletions::EMPTY_IDLE_GROUPS, fmt_ts(before), limit)
            .await
    }

    async fn activity(&self, group_id: i64) -> Result<Vec<Activity>> {
        let rows = sqlx::query(
            "SELECT id, group_id, kind, actor, from_status, to_status, reason, at \
             FROM group_activity WHERE group_id = ? ORDER BY id",
        )
        .bind(group_id)
        .fetch_all(&self.readers)
        .await?;
        rows.iter().map(activity_from_row).collect()
    }

    async fn list_events(&self, query: &EventQuery) -> Result<EventPage> {
        let limit = shared::clamp_limit(query.limit);
        let after = shared::event_cursor(query)?.map(|(at, id)| (fmt_ts(at), id));
        let mut qb = QueryBuilder::<Sqlite>::new("");
        shared::push_event_listing(&mut qb, EVENT_COLUMNS_SQL, query, after, limit);
        let rows = qb.build().fetch_all(&self.readers).await?;
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
            "SELECT {EVENT_COLUMNS_SQL} FROM errors WHERE event_id = ? \
             ORDER BY received_at DESC, id DESC LIMIT 1"
        );
        let row = sqlx::query(&sql)
            .bind(event_id.to_string())
            .fetch_optional(&self.readers)
            .await?;
        row.as_ref().map(event_from_row).transpose()
    }

    async fn save_triage(&self, t: &NewTriage) -> Result<Option<TriageRecord>> {
        let mut tx = self.begin_write().await?;
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
        let mut tx = self.begin_write().await?;
        let claimed = sqlx::query(
            "INSERT INTO triage_idempotency_keys (idempotency_key, created_at) VALUES (?, ?) \
             ON CONFLICT (idempotency_key) DO NOTHING",
        )
        .bind(key)
        .bind(fmt_ts(t.created_at))
        .execute(&mut *tx)
        .await?
        .rows_affected()
            == 1;
        if !claimed {
            let first: Option<i64> = sqlx::query_scalar(
                "SELECT triage_id FROM triage_idempotency_keys WHERE idempotency_key = ?",
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
        sqlx::query("UPDATE triage_idempotency_keys SET triage_id = ? WHERE idempotency_key = ?")
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
             created_at, signals FROM triage_results WHERE group_id = ? ORDER BY id DESC LIMIT ?",
        )
        .bind(group_id)
        .bind(i64::from(limit))
        .fetch_all(&self.readers)
        .await?;
        rows.iter()
            .map(|row| {
                let steps: String = row.try_get("next_steps")?;
                let next_steps: Vec<String> = serde_json::from_str(&steps)
                    .map_err(|e| StoreError::Corrupt(format!("next steps: {e}")))?;
                let signals: String = row.try_get("signals")?;
                let signals = serde_json::from_str(&signals)
                    .map_err(|e| StoreError::Corrupt(format!("signals: {e}")))?;
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
                    parse_ts(row.try_get("created_at")?)?,
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
        let mut tx = self.begin_write().await?;
        let updated: Option<i64> = sqlx::query_scalar(
            "UPDATE error_groups SET priority_override = ?1, severity_override = ?2, \
             priority = CASE WHEN ?1 IS NOT NULL THEN ?1 ELSE (SELECT priority FROM triage_results \
                 WHERE group_id = ?3 ORDER BY id DESC LIMIT 1) END, \
             severity = COALESCE(?2, (SELECT severity FROM triage_results \
                 WHERE group_id = ?3 ORDER BY id DESC LIMIT 1), 'unknown') \
             WHERE id = ?3 RETURNING id",
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
            "INSERT INTO group_activity (group_id, kind, actor, reason, at) VALUES (?, ?, ?, ?, ?)",
        )
        .bind(group_id)
        .bind("priority_set")
        .bind(actor)
        .bind(super::override_note(priority, severity))
        .bind(fmt_ts(now))
        .execute(&mut *tx)
        .await?;
        let group = self.fetch_group(&mut tx, group_id).await?;
        tx.commit().await?;
        Ok(group)
    }

    async fn changed_since_triage(&self, limit: u32) -> Result<Vec<i64>> {
        Ok(sqlx::query_scalar(
            "SELECT g.id FROM error_groups g WHERE g.status = 'OPEN' \
             AND g.triaged_at IS NOT NULL AND g.last_seen > g.triaged_at \
             AND (g.count >= 10 * g.triaged_count \
                  OR (SELECT COUNT(*) FROM group_tag_counts t WHERE t.group_id = g.id \
                      AND t.key IN ('environment', 'release')) > g.triaged_tag_values) \
             ORDER BY g.last_seen DESC, g.id LIMIT ?",
        )
        .bind(i64::from(limit))
        .fetch_all(&self.readers)
        .await?)
    }

    async fn stale_triage(&self, triaged_before: DateTime<Utc>, limit: u32) -> Result<Vec<i64>> {
        // NULLs sort first in SQLite's ascending order: never-triaged incidents lead.
        Ok(sqlx::query_scalar(
            "SELECT id FROM error_groups WHERE status = 'OPEN' \
             AND (triaged_at IS NULL OR (triaged_at < ? AND last_seen > triaged_at)) \
             ORDER BY triaged_at ASC, id LIMIT ?",
        )
        .bind(fmt_ts(triaged_before))
        .bind(i64::from(limit))
        .fetch_all(&self.readers)
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
             AND (?1 IS NULL OR project_id = ?1) \
             AND (COALESCE(priority, -1) >= ?2 OR regressed_at >= ?3 \
                  OR (triage_trend = 'spiking' AND triaged_at >= ?3)) \
             ORDER BY COALESCE(priority, -1) DESC, last_seen DESC, id DESC LIMIT ?4"
        );
        let rows = sqlx::query(&sql)
            .bind(project_id)
            .bind(min_priority)
            .bind(fmt_ts(since))
            .bind(i64::from(limit))
            .fetch_all(&self.readers)
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
        let mut tx = self.begin_write().await?;
        sqlx::query(
            "INSERT INTO kestra_executions (flow_id, group_id, execution_id, state, created_at) \
             VALUES (?, ?, ?, ?, ?)",
        )
        .bind(flow_id)
        .bind(group_id)
        .bind(execution_id)
        .bind(state)
        .bind(fmt_ts(at))
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
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
        let mut tx = self.begin_write().await?;
        sqlx::query(
            "INSERT INTO kestra_outbox (flow_id, group_id, inputs, idempotency_key, \
             next_attempt_at, created_at) VALUES (?, ?, ?, ?, ?, ?) \
             ON CONFLICT (idempotency_key) DO NOTHING",
        )
        .bind(flow_id)
        .bind(group_id)
        .bind(inputs)
        .bind(idempotency_key)
        .bind(fmt_ts(at))
        .bind(fmt_ts(at))
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn due_kestra_triggers(
        &self,
        now: DateTime<Utc>,
        limit: u32,
    ) -> Result<Vec<KestraTrigger>> {
        let rows = sqlx::query(
            "SELECT id, flow_id, group_id, inputs, idempotency_key, attempts FROM kestra_outbox \
             WHERE next_attempt_at <= ? ORDER BY next_attempt_at, id LIMIT ?",
        )
        .bind(fmt_ts(now))
        .bind(i64::from(limit))
        .fetch_all(&self.readers)
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
        let mut tx = self.begin_write().await?;
        sqlx::query(
            "UPDATE kestra_outbox SET attempts = ?, next_attempt_at = ?, last_error = ? WHERE id = ?",
        )
        .bind(attempts)
        .bind(fmt_ts(next_attempt_at))
        .bind(error)
        .bind(id)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn drop_kestra_trigger(&self, id: i64) -> Result<()> {
        let mut tx = self.begin_write().await?;
        sqlx::query("DELETE FROM kestra_outbox WHERE id = ?")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn kestra_trigger_started(
        &self,
        trigger: &KestraTrigger,
        execution_id: &str,
        state: Option<&str>,
        at: DateTime<Utc>,
    ) -> Result<()> {
        let mut tx = self.begin_write().await?;
        sqlx::query("DELETE FROM kestra_outbox WHERE id = ?")
            .bind(trigger.id)
            .execute(&mut *tx)
            .await?;
        // The incident may have been deleted meanwhile: then the run is kept without it.
        sqlx::query(
            "INSERT INTO kestra_executions (flow_id, group_id, execution_id, state, \
             idempotency_key, created_at) \
             VALUES (?, (SELECT id FROM error_groups WHERE id = ?), ?, ?, ?, ?)",
        )
        .bind(&trigger.flow_id)
        .bind(trigger.group_id)
        .bind(execution_id)
        .bind(state)
        .bind(&trigger.idempotency_key)
        .bind(fmt_ts(at))
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn unfinished_kestra_runs(&self, limit: u32) -> Result<Vec<KestraRun>> {
        let rows = sqlx::query(&format!(
            "SELECT {KESTRA_RUN_COLUMNS} FROM kestra_executions WHERE finished_at IS NULL \
             ORDER BY id LIMIT ?"
        ))
        .bind(i64::from(limit))
        .fetch_all(&self.readers)
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
        let mut tx = self.begin_write().await?;
        sqlx::query(
            "UPDATE kestra_executions SET state = ?, failed_task = ?, error = ?, finished_at = ? \
             WHERE id = ?",
        )
        .bind(state)
        .bind(failed_task)
        .bind(error)
        .bind(fmt_ts(at))
        .bind(id)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn kestra_runs(&self, group_id: i64, limit: u32) -> Result<Vec<KestraRun>> {
        let rows = sqlx::query(&format!(
            "SELECT {KESTRA_RUN_COLUMNS} FROM kestra_executions WHERE group_id = ? \
             ORDER BY id DESC LIMIT ?"
        ))
        .bind(group_id)
        .bind(i64::from(limit))
        .fetch_all(&self.readers)
        .await?;
        rows.iter().map(kestra_run_from_row).collect()
    }

    // ---- dashboard ----

    async fn count_groups(&self, query: &GroupQuery) -> Result<GroupCounts> {
        let mut qb: QueryBuilder<Sqlite> =
            QueryBuilder::new("SELECT status, count(*) AS n FROM error_groups g WHERE 1 = 1");
        shared::push_group_filters(&mut qb, query, false);
        qb.push(" GROUP BY status");
        let rows = qb.build().fetch_all(&self.readers).await?;
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
        let mut out: HashMap<i64, Vec<i64>> = HashMap::new();
        if group_ids.is_empty() {
            return Ok(out);
        }
        let first_hour = shared::truncate_to_hour(now) - chrono::Duration::hours(23);
        let mut qb: QueryBuilder<Sqlite> = QueryBuilder::new(
            "SELECT group_id, hour, count FROM group_hourly_counts WHERE hour >= ",
        );
        qb.push_bind(fmt_ts(first_hour))
            .push(" AND hour <= ")
            .push_bind(fmt_ts(now))
            .push(" AND group_id IN (");
        let mut ids = qb.separated(", ");
        for id in group_ids {
            ids.push_bind(*id);
        }
        qb.push(")");
        let rows = qb.build().fetch_all(&self.readers).await?;
        for row in &rows {
            let hour = parse_ts(row.try_get("hour")?)?;
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
        let at = fmt_ts(received_at);
        let neighbor = |which| {
            let mut qb = QueryBuilder::<Sqlite>::new("");
            shared::push_event_neighbor(&mut qb, which, group_id, at.as_str(), id);
            qb
        };
        let older = neighbor(Neighbor::Older)
            .build_query_scalar::<String>()
            .fetch_optional(&self.readers)
            .await?;
        let newer = neighbor(Neighbor::Newer)
            .build_query_scalar::<String>()
            .fetch_optional(&self.readers)
            .await?;
        let parse = |s: Option<String>| {
            s.map(|s| {
                Uuid::parse_str(&s)
                    .map_err(|e| StoreError::Corrupt(format!("bad event id {s:?}: {e}")))
            })
            .transpose()
        };
        Ok(EventNeighbors {
            older: parse(older)?,
            newer: parse(newer)?,
        })
    }

    async fn create_user(&self, name: &str, password_hash: &str) -> Result<Option<User>> {
        let row = sqlx::query(
            "INSERT INTO users (name, password_hash, created_at) VALUES (?, ?, ?) \
             ON CONFLICT (name) DO NOTHING RETURNING id, name, password_hash",
        )
        .bind(name)
        .bind(password_hash)
        .bind(fmt_ts(Utc::now()))
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(user_from_row).transpose()
    }

    async fn user_by_name(&self, name: &str) -> Result<Option<User>> {
        let row = sqlx::query("SELECT id, name, password_hash FROM users WHERE name = ?")
            .bind(name)
            .fetch_optional(&self.readers)
            .await?;
        row.as_ref().map(user_from_row).transpose()
    }

    async fn set_user_password(&self, name: &str, password_hash: &str) -> Result<bool> {
        let mut tx = self.begin_write().await?;
        let id: Option<i64> =
            sqlx::query_scalar("UPDATE users SET password_hash = ? WHERE name = ? RETURNING id")
                .bind(password_hash)
                .bind(name)
                .fetch_optional(&mut *tx)
                .await?;
        if let Some(id) = id {
            sqlx::query("DELETE FROM sessions WHERE user_id = ?")
                .bind(id)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(id.is_some())
    }

    async fn count_users(&self) -> Result<i64> {
        Ok(sqlx::query_scalar("SELECT count(*) FROM users")
            .fetch_one(&self.readers)
            .await?)
    }

    async fn create_session(
        &self,
        token_hash: &str,
        user_id: i64,
        now: DateTime<Utc>,
        expires_at: DateTime<Utc>,
    ) -> Result<()> {
        let mut tx = self.begin_write().await?;
        sqlx::query("DELETE FROM sessions WHERE expires_at <= ?")
            .bind(fmt_ts(now))
            .execute(&mut *tx)
            .await?;
        sqlx::query(
            "INSERT INTO sessions (token_hash, user_id, created_at, expires_at) VALUES (?, ?, ?, ?)",
        )
        .bind(token_hash)
        .bind(user_id)
        .bind(fmt_ts(now))
        .bind(fmt_ts(expires_at))
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn session_by_hash(
        &self,
        token_hash: &str,
        now: DateTime<Utc>,
    ) -> Result<Option<Session>> {
        let row = sqlx::query(
            "SELECT s.user_id, u.name, s.expires_at FROM sessions s JOIN users u ON u.id = s.user_id \
             WHERE s.token_hash = ? AND s.expires_at > ?",
        )
        .bind(token_hash)
        .bind(fmt_ts(now))
        .fetch_optional(&self.readers)
        .await?;
        row.map(|r| {
            Ok(Session {
                user_id: r.try_get("user_id")?,
                user_name: r.try_get("name")?,
                expires_at: parse_ts(r.try_get("expires_at")?)?,
            })
        })
        .transpose()
    }

    async fn delete_session(&self, token_hash: &str) -> Result<()> {
        sqlx::query("DELETE FROM sessions WHERE token_hash = ?")
            .bind(token_hash)
            .execute(&self.pool)
            .await?;
        Ok(())
    }
}

fn user_from_row(row: &SqliteRow) -> Result<User> {
    Ok(User {
        id: row.try_get("id")?,
        name: row.try_get("name")?,
        password_hash: row.try_get("password_hash")?,
    })
}

/// The file a `sqlite:` URL names (`:memory:` for an in-memory database).
pub fn file_of(url: &str) -> Result<std::path::PathBuf> {
    Ok(SqliteConnectOptions::from_str(url)?
        .get_filename()
        .to_owned())
}

/// Writes a copy of the SQLite database at `url` to `dest` through one
/// read-only connection, without opening a store: the database is left as it
/// is (no migration, no change of journal mode), and a missing one is an
/// error rather than a new empty database.
pub async fn backup_file(url: &str, dest: &std::path::Path) -> Result<()> {
    let options = SqliteConnectOptions::from_str(url)?
        .create_if_missing(false)
        .read_only(true)
        .busy_timeout(BUSY_TIMEOUT);
    let mut conn = sqlx::ConnectOptions::connect(&options).await?;
    vacuum_into(&mut conn, dest).await?;
    sqlx::Connection::close(conn).await?;
    Ok(())
}

/// VACUUM INTO reads one snapshot (WAL mode lets ingest go on meanwhile)
/// and writes a compact, self-contained file: no -wal to copy along, unlike
/// a copy of the database file.
async fn vacuum_into<'e>(
    executor: impl sqlx::SqliteExecutor<'e>,
    dest: &std::path::Path,
) -> Result<()> {
    let dest = dest.to_str().ok_or(StoreError::Unsupported(
        "the backup's path must be valid UTF-8",
    ))?;
    sqlx::query("VACUUM INTO ?")
        .bind(dest)
        .execute(executor)
        .await?;
    Ok(())
}

const KESTRA_RUN_COLUMNS: &str = "id, flow_id, group_id, execution_id, idempotency_key, state, \
     created_at, finished_at, failed_task, error";

fn kestra_run_from_row(r: &SqliteRow) -> Result<KestraRun> {
    let finished: Option<String> = r.try_get("finished_at")?;
    Ok(KestraRun {
        id: r.try_get("id")?,
        flow_id: r.try_get("flow_id")?,
        group_id: r.try_get("group_id")?,
        execution_id: r.try_get("execution_id")?,
        idempotency_key: r.try_get("idempotency_key")?,
        state: r.try_get("state")?,
        created_at: parse_ts(r.try_get("created_at")?)?,
        finished_at: finished.as_deref().map(parse_ts).transpose()?,
        failed_task: r.try_get("failed_task")?,
        error: r.try_get("error")?,
    })
}

/// The incident update and the history row of one triage result, in the
/// caller's transaction; `None` if there is no such incident.
async fn insert_triage(
    tx: &mut sqlx::Transaction<'static, Sqlite>,
    t: &NewTriage,
) -> Result<Option<i64>> {
    let r = &t.result;
    let steps = serde_json::to_string(&r.next_steps)
        .map_err(|e| StoreError::Corrupt(format!("next steps: {e}")))?;
    let signals = serde_json::to_string(&t.signals)
        .map_err(|e| StoreError::Corrupt(format!("signals: {e}")))?;
    let updated: Option<i64> = sqlx::query_scalar(
        "UPDATE error_groups SET severity = COALESCE(severity_override, ?), \
         priority = COALESCE(priority_override, ?), ai_summary = ?, ai_next_steps = ?, \
         triaged_at = ?, triage_trend = ?, triaged_count = count, \
         triaged_tag_values = (SELECT COUNT(*) FROM group_tag_counts t \
             WHERE t.group_id = error_groups.id AND t.key IN ('environment', 'release')) \
         WHERE id = ? RETURNING id",
    )
    .bind(r.severity.as_str())
    .bind(r.priority)
    .bind(&r.summary)
    .bind(&steps)
    .bind(fmt_ts(t.created_at))
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
         trend, created_at, signals) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) \
         RETURNING id",
    )
    .bind(t.group_id)
    .bind(&r.summary)
    .bind(r.severity.as_str())
    .bind(r.priority)
    .bind(&r.probable_cause)
    .bind(&steps)
    .bind(r.confidence)
    .bind(&t.analyst)
    .bind(&t.model)
    .bind(&t.prompt_version)
    .bind(&t.fallback_reason)
    .bind(&t.trigger)
    .bind(&t.trend)
    .bind(fmt_ts(t.created_at))
    .bind(&signals)
    .fetch_one(&mut **tx)
    .await?;
    Ok(Some(id))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::{self, Context, Limits};
    use errorflow_sdk::protocol::{Event, Exception, Level};

    /// The writer checkpoints itself only past 64 MiB of WAL; the
    /// background connection must copy committed pages into the database
    /// file long before that.
    #[tokio::test]
    async fn background_checkpoints_copy_the_wal_into_the_database() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("checkpoint.db");
        let store = SqliteStore::connect(&format!("sqlite://{}", path.display()))
            .await
            .unwrap();
        store.migrate().await.unwrap();
        let project = store.create_project("p", "hash", "efk_p").await.unwrap();
        // Let the checkpointer catch up with the migrations, then measure.
        tokio::time::sleep(CHECKPOINT_INTERVAL * 3).await;
        let before = std::fs::metadata(&path).unwrap().len();

        let ctx = Context {
            project_id: project.id,
            received_at: Utc::now(),
        };
        let events: Vec<NormalizedEvent> = (0..400)
            .map(|i| {
                let mut event = Event::new(Level::Error);
                event.service = Some("shop".into());
                event.exception = vec![Exception::new("Boom", format!("failure {i}"))];
                event.extra.insert("blob".into(), "x".repeat(3000).into());
                pipeline::process(event, &ctx, &Limits::default()).unwrap()
            })
            .collect();
        store.insert_events(&events).await.unwrap();

        // About 1.2 MB of events: far below the writer's own threshold.
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        loop {
            let now = std::fs::metadata(&path).unwrap().len();
            if now >= before + 1_000_000 {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the database file grew from {before} to only {now} bytes: no checkpoint"
            );
            tokio::time::sleep(CHECKPOINT_INTERVAL).await;
        }
    }

    /// A normalised `Boom: message` event for `project_id`.
    fn event(project_id: i64, message: &str) -> NormalizedEvent {
        let ctx = Context {
            project_id,
            received_at: Utc::now(),
        };
        let mut event = Event::new(Level::Error);
        event.exception = vec![Exception::new("Boom", message)];
        pipeline::process(event, &ctx, &Limits::default()).unwrap()
    }

    /// A tag counter keeps the latest time its tag was seen, whatever order
    /// the events come in, within a batch and across batches. (The batch
    /// formats a run of equal times once, and the store's API does not show
    /// this time, hence a look at the table.)
    #[tokio::test]
    async fn tag_counters_keep_their_latest_sighting() {
        use chrono::TimeZone;
        let store = SqliteStore::connect("sqlite::memory:").await.unwrap();
        store.migrate().await.unwrap();
        let project = store.create_project("p", "hash", "efk_p").await.unwrap();
        let at = |hour| Utc.with_ymd_and_hms(2026, 3, 14, hour, 0, 0).unwrap();
        let seen_at = |message, hour| {
            let mut e = event(project.id, message);
            e.timestamp = at(hour);
            e
        };
        let group = |outcome| match outcome {
            InsertOutcome::Stored { group_id, .. } => group_id,
            other => panic!("a new event was {other:?}"),
        };
        let first = store
            .insert_events(&[seen_at("a", 10), seen_at("b", 12), seen_at("a", 11)])
            .await
            .unwrap();
        let (a, b) = (group(first[0]), group(first[1]));
        // Only an older event of incident a.
        store.insert_events(&[seen_at("a", 9)]).await.unwrap();

        let last_seen = |id: i64| {
            sqlx::query_scalar::<_, String>(
                "SELECT DISTINCT last_seen FROM group_tag_counts WHERE group_id = ?",
            )
            .bind(id)
            .fetch_all(&store.readers)
        };
        assert_eq!(last_seen(a).await.unwrap(), [fmt_ts(at(11))]);
        assert_eq!(last_seen(b).await.unwrap(), [fmt_ts(at(12))]);
    }

    /// The batch insert writes on a connection of its own, beside sqlx's
    /// writer. A batch that fails half-way must leave nothing behind, its
    /// connection must be left outside any transaction (or every later
    /// batch and sqlx's writes would fail or wait), on both kinds of tokio
    /// runtime (the multi-thread one hands the worker's queue away first).
    async fn failed_batch_rolls_back_and_leaves_the_connection_usable() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("rollback.db").display());
        let store = SqliteStore::connect(&url).await.unwrap();
        store.migrate().await.unwrap();
        let project = store.create_project("p", "hash", "efk_p").await.unwrap();
        // The second event's project does not exist: its incident violates
        // the foreign key after the first event's incident was created.
        let err = store
            .insert_events(&[
                event(project.id, "first"),
                event(project.id + 1000, "second"),
            ])
            .await
            .unwrap_err();
        assert!(err.to_string().contains("FOREIGN KEY"), "{err}");
        let (groups, events): (i64, i64) = sqlx::query_as(
            "SELECT (SELECT COUNT(*) FROM error_groups), (SELECT COUNT(*) FROM errors)",
        )
        .fetch_one(&store.pool)
        .await
        .unwrap();
        assert_eq!((groups, events), (0, 0), "a failed batch left rows behind");

        // sqlx's writer and the batch writer's connection both work afterwards.
        store.create_project("q", "hash-q", "efk_q").await.unwrap();
        let outcomes = store
            .insert_events(&[event(project.id, "third")])
            .await
            .unwrap();
        assert!(matches!(
            outcomes[..],
            [InsertOutcome::Stored {
                new_group: true,
                ..
            }]
        ));
        let groups: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM error_groups")
            .fetch_one(&store.readers)
            .await
            .unwrap();
        assert_eq!(groups, 1);
    }

    /// The batch writer and sqlx's connections run with the same settings:
    /// above all, every commit that acknowledges events is synced (FULL,
    /// also SQLite's built-in default, so this checks the outcome rather
    /// than which line sets it; a missing cache size fails it).
    #[tokio::test]
    async fn every_connection_has_the_settings() {
        let store = SqliteStore::connect("sqlite::memory:").await.unwrap();
        let query = "SELECT (SELECT synchronous FROM pragma_synchronous), \
                     (SELECT foreign_keys FROM pragma_foreign_keys), \
                     (SELECT cache_size FROM pragma_cache_size), \
                     (SELECT journal_mode FROM pragma_journal_mode)";
        let cache_size: i64 = PRAGMAS
            .iter()
            .find(|(name, _)| *name == "cache_size")
            .expect("a cache size is set")
            .1
            .parse()
            .unwrap();
        assert!(cache_size < -2000, "more than SQLite's default 2 MiB");
        let expected = (2, 1, cache_size, "wal".to_owned());
        let pool: (i64, i64, i64, String) =
            sqlx::query_as(query).fetch_one(&store.pool).await.unwrap();
        assert_eq!(pool, expected, "sqlx writer");
        let readers: (i64, i64, i64, String) = sqlx::query_as(query)
            .fetch_one(&store.readers)
            .await
            .unwrap();
        assert_eq!(readers, expected, "readers");
        let db = store.batch_writer.lock().unwrap();
        let batch = db
            .query_row(query, [], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
            })
            .unwrap();
        assert_eq!(batch, expected, "batch writer");
    }

    /// `sqlite::memory:` gives a working, private database (events written
    /// by the batch writer are read back through the other connections)
    /// that leaves nothing behind.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn memory_database_is_private_and_removed_with_the_store() {
        let store = SqliteStore::connect("sqlite::memory:").await.unwrap();
        let other = SqliteStore::connect("sqlite::memory:").await.unwrap();
        store.migrate().await.unwrap();
        other.migrate().await.unwrap();
        let project = store.create_project("p", "hash", "efk_p").await.unwrap();
        let outcomes = store
            .insert_events(&[event(project.id, "in memory")])
            .await
            .unwrap();
        assert!(matches!(outcomes[..], [InsertOutcome::Stored { .. }]));
        let page = store.list_groups(&GroupQuery::default()).await.unwrap();
        assert_eq!(page.groups.len(), 1);
        assert_eq!(page.groups[0].count, 1);
        let theirs = other.list_groups(&GroupQuery::default()).await.unwrap();
        assert!(theirs.groups.is_empty(), "two memory databases share data");

        let dir = store._scratch.as_ref().unwrap().path().to_owned();
        assert!(dir.join("memory.db").exists());
        drop(store);
        assert!(!dir.exists(), "{} is left behind", dir.display());
    }

    #[tokio::test]
    async fn failed_batch_rolls_back_on_a_current_thread_runtime() {
        failed_batch_rolls_back_and_leaves_the_connection_usable().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn failed_batch_rolls_back_on_a_multi_thread_runtime() {
        failed_batch_rolls_back_and_leaves_the_connection_usable().await;
    }
}
