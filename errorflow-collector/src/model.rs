//! Types that cross the collector's internal boundaries: what the pipeline
//! produces and the store persists, and what the store returns to the API.
//!
//! **API Boundary**: `pipeline/` produces [`NormalizedEvent`]; `store/` only
//! consumes it. Neither depends on `http/`.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::OnceLock;

use chrono::{DateTime, Utc};
use errorflow_sdk::protocol::{Event, Level};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

/// An event that passed validation, was normalised (strings bounded, defaults
/// filled) and fingerprinted. Produced by `pipeline::process`, consumed by the
/// store. Everything here is derived deterministically from the raw event,
/// the project and the time of receipt.
#[derive(Debug, Clone, PartialEq)]
pub struct NormalizedEvent {
    pub project_id: i64,
    pub event_id: Uuid,
    /// When the error happened (client time, clamped to receipt time when in the future).
    pub timestamp: DateTime<Utc>,
    pub received_at: DateTime<Utc>,
    pub level: Level,
    /// Never empty: `unknown` when the client did not say.
    pub service: String,
    /// Type of the outermost exception, or `Error`/`Message` for plain messages.
    pub error_type: String,
    /// Formatted message (bounded); for exceptions, `type: value` of the outermost one.
    pub message: String,
    /// Never empty: `prod` by default, as in the seed.
    pub environment: String,
    /// Request path, or empty.
    pub path: String,
    /// Client's trace id, or a generated one (derived from the event id).
    pub trace_id: String,
    pub release: Option<String>,
    pub host: Option<String>,
    /// Human-readable incident title (`NotFound: user <int> not found`).
    pub title: String,
    /// Where it happened: the top in-app frame, or the transaction/logger.
    pub culprit: Option<String>,
    /// Hex digest identifying the incident within the project.
    pub fingerprint: String,
    /// Version of the grouping algorithm that produced `fingerprint`.
    pub fingerprint_version: i32,
    /// The seed's grouping key, `service:error_type`, kept as a facet.
    pub cluster_key: String,
    /// Tags indexed for the incident's tag breakdown (includes environment,
    /// release, host, path, service when present).
    pub tags: BTreeMap<String, String>,
    /// The normalised event as stored (exception chain, frames, request, user,
    /// breadcrumbs, extra). Its `event_id`, `level` and strings match the fields above.
    pub event: Event,
    /// `event` encoded as JSON, filled on the first call of
    /// [`NormalizedEvent::event_json`]. Build it empty (`OnceLock::new()`).
    pub event_json: OnceLock<String>,
}

/// The first capacity of an event's stored JSON.
const EVENT_JSON_CAPACITY: usize = 2048;

impl NormalizedEvent {
    /// `event` as the JSON that is stored, encoded on the first call and
    /// kept. Call it only once the event is final (the pipeline's output
    /// is). Ingest calls it in each request's own task, so the encoding runs
    /// in parallel there instead of on the single write path.
    pub fn event_json(&self) -> &str {
        self.event_json.get_or_init(|| {
            // Most documents take a few KiB: starting there spares the
            // buffer four or five doublings (and copies) from serde_json's 128 bytes.
            let mut out = Vec::with_capacity(EVENT_JSON_CAPACITY);
            // Only maps with non-string keys fail to serialise, and `Event` has none.
            serde_json::to_writer(&mut out, &self.event)
                .expect("an Event always serialises to JSON");
            String::from_utf8(out).expect("serde_json writes UTF-8")
        })
    }
}

/// What happened to one event handed to [`crate::store::Store::insert_events`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InsertOutcome {
    /// Newly stored in `group_id`.
    Stored {
        group_id: i64,
        /// The event created the incident.
        new_group: bool,
        /// The event reopened a RESOLVED incident.
        regression: bool,
    },
    /// The project already had an event with this id; nothing changed.
    Duplicate,
    /// Queue mode: durable in the queue; a writer stores it (or finds it a
    /// duplicate) and runs its triage and alerts.
    Queued,
}

/// Lifecycle state of an incident. Stored uppercase, as in the seed; the
/// REST API speaks lowercase.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum GroupStatus {
    Open,
    Quiet,
    Resolved,
}

impl GroupStatus {
    pub fn as_db(self) -> &'static str {
        match self {
            GroupStatus::Open => "OPEN",
            GroupStatus::Quiet => "QUIET",
            GroupStatus::Resolved => "RESOLVED",
        }
    }

    pub fn from_db(s: &str) -> GroupStatus {
        match s {
            "QUIET" => GroupStatus::Quiet,
            "RESOLVED" => GroupStatus::Resolved,
            _ => GroupStatus::Open,
        }
    }

    pub fn parse(s: &str) -> Option<GroupStatus> {
        match s.to_ascii_lowercase().as_str() {
            "open" => Some(GroupStatus::Open),
            "quiet" => Some(GroupStatus::Quiet),
            "resolved" => Some(GroupStatus::Resolved),
            _ => None,
        }
    }
}

impl fmt::Display for GroupStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            GroupStatus::Open => "open",
            GroupStatus::Quiet => "quiet",
            GroupStatus::Resolved => "resolved",
        })
    }
}

/// A project: its events, incidents and ingest key belong together.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct Project {
    pub id: i64,
    pub name: String,
    /// First characters of the ingest key, to recognise it; the key itself is only stored hashed.
    pub key_prefix: String,
    pub created_at: DateTime<Utc>,
}

/// A management API token (the secret itself is only stored hashed).
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct ApiToken {
    pub id: i64,
    pub name: String,
    pub created_at: DateTime<Utc>,
    /// When it last authenticated a request, to within a minute
    /// (see `Store::mark_token_used`); `None` if never.
    pub last_used_at: Option<DateTime<Utc>>,
}

/// An incident: events that share a fingerprint within a project.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct Group {
    pub id: i64,
    pub project_id: i64,
    /// The seed's `service:error_type`.
    pub cluster_key: String,
    pub fingerprint: String,
    pub fingerprint_version: i32,
    pub service: String,
    pub error_type: String,
    pub title: String,
    pub culprit: Option<String>,
    pub level: String,
    pub status: GroupStatus,
    pub count: i64,
    pub first_seen: DateTime<Utc>,
    pub last_seen: DateTime<Utc>,
    /// `low | medium | high | critical | unknown`.
    pub severity: String,
    /// 0–100; higher needs attention sooner. Null until triaged.
    pub priority: Option<i32>,
    pub summary: Option<String>,
    pub ai_summary: Option<String>,
    pub ai_next_steps: Option<String>,
    pub resolution_reason: Option<String>,
    pub resolved_at: Option<DateTime<Utc>>,
    /// Resolved "in the next release": events from this release or older do not regress.
    pub resolved_in_release: Option<String>,
    pub regression_count: i64,
    pub regressed_at: Option<DateTime<Utc>>,
    pub last_release: Option<String>,
    pub last_environment: Option<String>,
    /// Priority set by hand; wins over every triage until cleared.
    pub priority_override: Option<i32>,
    /// Severity set by hand; wins over every triage until cleared.
    pub severity_override: Option<String>,
}

/// How to order the incident list.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum GroupSort {
    #[default]
    LastSeen,
    FirstSeen,
    Count,
    Priority,
}

/// Filters and paging for the incident list.
#[derive(Debug, Clone, Default)]
pub struct GroupQuery {
    pub project_id: Option<i64>,
    pub status: Option<GroupStatus>,
    pub service: Option<String>,
    pub environment: Option<String>,
    pub release: Option<String>,
    pub severity: Option<String>,
    /// Case-insensitive substring of title, culprit or cluster key.
    pub q: Option<String>,
    pub sort: GroupSort,
    pub limit: u32,
    /// Opaque cursor returned by the previous page.
    pub cursor: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct GroupPage {
    pub groups: Vec<Group>,
    pub next_cursor: Option<String>,
}

/// A stored raw event.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct StoredEvent {
    pub id: i64,
    pub project_id: i64,
    pub group_id: i64,
    pub event_id: Uuid,
    pub timestamp: DateTime<Utc>,
    pub received_at: DateTime<Utc>,
    pub level: String,
    pub service: String,
    pub error_type: String,
    pub message: String,
    pub env: String,
    pub path: String,
    pub trace_id: String,
    pub release: Option<String>,
    pub host: Option<String>,
    /// The full normalised event as received.
    #[schema(value_type = Object)]
    pub data: serde_json::Value,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EventPage {
    pub events: Vec<StoredEvent>,
    pub next_cursor: Option<String>,
}

/// Filters for the cross-project raw event list.
#[derive(Debug, Clone, Default)]
pub struct EventQuery {
    pub project_id: Option<i64>,
    pub group_id: Option<i64>,
    pub service: Option<String>,
    pub environment: Option<String>,
    pub level: Option<String>,
    pub limit: u32,
    pub cursor: Option<String>,
}

/// Counts over time and tag breakdown of an incident.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct GroupStats {
    /// 24 hourly buckets, oldest first, ending with the current hour.
    pub hourly: Vec<Bucket>,
    /// 14 daily buckets, oldest first, ending with today (UTC).
    pub daily: Vec<Bucket>,
    /// Most frequent values per tag key, most frequent first (at most 10 per key).
    pub top_tags: BTreeMap<String, Vec<TagCount>>,
}

#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct Bucket {
    pub start: DateTime<Utc>,
    pub count: i64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct TagCount {
    pub value: String,
    pub count: i64,
}

/// A state change asked for by a person or a job.
#[derive(Debug, Clone, PartialEq)]
pub enum Transition {
    Resolve {
        reason: Option<String>,
        /// Resolve "in the next release": later events of the current release do not regress it.
        in_next_release: bool,
    },
    Quiet {
        reason: Option<String>,
    },
    Reopen {
        reason: Option<String>,
    },
}

/// One entry of an incident's activity history.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct Activity {
    pub id: i64,
    pub group_id: i64,
    /// `created`, `resolved`, `quieted`, `reopened`, `regressed`, `unquieted`.
    pub kind: String,
    /// Who: `user:<name>`, `token:<name>`, `system`.
    pub actor: String,
    pub from_status: Option<GroupStatus>,
    pub to_status: Option<GroupStatus>,
    pub reason: Option<String>,
    pub at: DateTime<Utc>,
}

/// A person who signs in to the dashboard.
#[derive(Debug, Clone, PartialEq)]
pub struct User {
    pub id: i64,
    pub name: String,
    /// PHC string of an argon2 hash; never the password.
    pub password_hash: String,
}

/// A dashboard session, found by the hash of its cookie value.
#[derive(Debug, Clone, PartialEq)]
pub struct Session {
    pub user_id: i64,
    pub user_name: String,
    pub expires_at: DateTime<Utc>,
}

/// Number of incidents per status matching a [`GroupQuery`]'s filters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
pub struct GroupCounts {
    pub open: i64,
    pub quiet: i64,
    pub resolved: i64,
}

impl GroupCounts {
    pub fn all(&self) -> i64 {
        self.open + self.quiet + self.resolved
    }
}

/// The events just older and just newer than one event of an incident.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct EventNeighbors {
    pub older: Option<Uuid>,
    pub newer: Option<Uuid>,
}

/// A flow start the collector owes Kestra (the outbox, `kestra_outbox`).
#[derive(Debug, Clone, PartialEq)]
pub struct KestraTrigger {
    pub id: i64,
    pub flow_id: String,
    pub group_id: Option<i64>,
    /// The flow's inputs as a JSON array of `{"name", "json"}` / `{"name", "text"}`.
    pub inputs: String,
    pub idempotency_key: String,
    /// Failed attempts so far.
    pub attempts: i32,
}

/// A Kestra execution the collector started, and how it ended.
#[derive(Debug, Clone, PartialEq, serde::Serialize, utoipa::ToSchema)]
pub struct KestraRun {
    pub id: i64,
    pub flow_id: String,
    pub group_id: Option<i64>,
    pub execution_id: String,
    pub idempotency_key: Option<String>,
    /// Kestra's state: CREATED and RUNNING until it ends (SUCCESS, WARNING,
    /// FAILED, KILLED, CANCELLED), or NOT_FOUND when Kestra forgot it.
    pub state: Option<String>,
    pub created_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
    /// The task that failed, for a failed run.
    pub failed_task: Option<String>,
    /// Kestra's error message for that task (bounded).
    pub error: Option<String>,
}

impl KestraRun {
    pub fn failed(&self) -> bool {
        matches!(self.state.as_deref(), Some("FAILED" | "KILLED"))
    }
}

/// A project's GitHub repository and the credentials to reach it. No
/// `Debug` derive: the token and the webhook secret must never reach a log.
#[derive(Clone, PartialEq)]
pub struct GithubLink {
    pub project_id: i64,
    /// `owner/name`.
    pub repo: String,
    /// The REST API root: `https://api.github.com`, or a GitHub Enterprise
    /// server's `https://HOST/api/v3`.
    pub api_url: String,
    pub token: String,
    pub webhook_secret: Option<String>,
}

impl fmt::Debug for GithubLink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GithubLink")
            .field("project_id", &self.project_id)
            .field("repo", &self.repo)
            .field("api_url", &self.api_url)
            .field("token", &"***")
            .field(
                "webhook_secret",
                &self.webhook_secret.as_ref().map(|_| "***"),
            )
            .finish()
    }
}

/// The GitHub issue opened for an incident.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct GithubIssue {
    /// `owner/name`.
    pub repo: String,
    pub number: i64,
    /// The issue's page on GitHub.
    pub url: String,
}

/// What [`crate::store::Store::claim_github_issue`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IssueClaim {
    /// The caller holds the claim: it creates the issue, then records it
    /// ([`crate::store::Store::finish_github_issue`]) or gives the claim up.
    Claimed,
    /// The incident already has its issue.
    Existing(GithubIssue),
    /// Another request is creating the incident's issue right now.
    Pending,
}
