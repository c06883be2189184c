//! The management REST API under `/api/v1`. Every route needs a management
//! token (`Authorization: Bearer TOKEN`, see `errorflow-collector token create`).

use axum::extract::{FromRequest, FromRequestParts, Path, Query, Request, State};
use axum::http::StatusCode;
use axum::routing::{get, post, put};
use axum::{Json, Router};
use chrono::Utc;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use super::{ApiError, AppState, Manager};
use crate::credentials;
use crate::model::{
    Activity, ApiToken, EventPage, EventQuery, Group, GroupPage, GroupQuery, GroupSort, GroupStats,
    GroupStatus, Project, StoredEvent, Transition,
};
use crate::triage::result::TriageRecord;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/openapi.json", get(super::openapi::document))
        .route("/groups", get(list_groups))
        .route("/groups/{id}", get(get_group).delete(delete_group))
        .route("/groups/{id}/events", get(group_events))
        .route("/groups/{id}/activity", get(group_activity))
        .route("/groups/{id}/resolve", post(resolve))
        .route("/groups/{id}/quiet", post(quiet))
        .route("/groups/{id}/reopen", post(reopen))
        .route("/events", get(list_events))
        .route("/events/{event_id}", get(get_event))
        .route("/projects", get(list_projects).post(create_project))
        .route("/projects/{id}", axum::routing::delete(delete_project))
        .route("/projects/{id}/rotate-key", post(rotate_key))
        .route("/tokens", get(list_tokens))
        .route("/tokens/{id}", axum::routing::delete(revoke_token))
        .route(
            "/projects/{id}/alert-webhook",
            get(get_alert_webhook)
                .put(set_alert_webhook)
                .delete(remove_alert_webhook),
        )
        .route(
            "/projects/{id}/scrub-fields",
            get(get_scrub_fields).put(set_scrub_fields),
        )
        .route(
            "/projects/{id}/github",
            get(super::github::get_link)
                .put(super::github::set_link)
                .delete(super::github::remove_link),
        )
        .route(
            "/groups/{id}/github-issue",
            post(super::github::create_issue),
        )
        .route("/groups/{id}/summarize", post(super::triage::summarize))
        .route("/groups/{id}/digest", get(super::triage::digest))
        .route(
            "/groups/{id}/triage",
            get(super::triage::history).put(super::triage::put_triage),
        )
        .route("/groups/{id}/kestra-runs", get(super::triage::kestra_runs))
        .route("/groups/{id}/priority", put(super::triage::set_priority))
        .route("/triage/stale", get(super::triage::stale))
        .route("/triage/digest", get(super::triage::digest_lookup))
        .route("/maintenance/quiet", post(super::triage::quiet))
}

/// `Path`, `Query` and `Json` whose rejections are JSON [`ApiError`]s.
pub struct ApiPath<T>(pub T);
pub struct ApiQuery<T>(pub T);
pub struct ApiJson<T>(pub T);

impl<T, S> FromRequestParts<S> for ApiPath<T>
where
    T: serde::de::DeserializeOwned + Send,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &S,
    ) -> Result<Self, ApiError> {
        Ok(ApiPath(
            Path::<T>::from_request_parts(parts, state).await?.0,
        ))
    }
}

impl<T, S> FromRequestParts<S> for ApiQuery<T>
where
    T: serde::de::DeserializeOwned + Send,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &S,
    ) -> Result<Self, ApiError> {
        Ok(ApiQuery(
            Query::<T>::from_request_parts(parts, state).await?.0,
        ))
    }
}

impl<T, S> FromRequest<S> for ApiJson<T>
where
    T: serde::de::DeserializeOwned + Default,
    S: Send + Sync,
{
    type Rejection = ApiError;

    /// An empty body means "no options" (the seed's clients POST nothing).
    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let empty = req
            .headers()
            .get(axum::http::header::CONTENT_LENGTH)
            .is_some_and(|v| v == "0")
            || (req
                .headers()
                .get(axum::http::header::CONTENT_TYPE)
                .is_none()
                && req
                    .headers()
                    .get(axum::http::header::TRANSFER_ENCODING)
                    .is_none());
        if empty {
            let bytes = axum::body::to_bytes(req.into_body(), 0)
                .await
                .map_err(|_| {
                    ApiError::unsupported_media("expected content-type: application/json")
                })?;
            debug_assert!(bytes.is_empty());
            return Ok(ApiJson(T::default()));
        }
        Ok(ApiJson(CheckedJson::<T>::from_request(req, state).await?.0))
    }
}

/// `Json` whose rejections are JSON [`ApiError`]s and which refuses a NUL
/// in any string of the body with 422, naming the field (see [`super::nul`]).
pub struct CheckedJson<T>(pub T);

impl<T, S> FromRequest<S> for CheckedJson<T>
where
    T: serde::de::DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let (parts, body) = req.into_parts();
        let bytes =
            axum::body::Bytes::from_request(Request::from_parts(parts.clone(), body), state)
                .await
                .map_err(|e| ApiError::too_large(e.body_text()))?;
        let req = Request::from_parts(parts, axum::body::Body::from(bytes.clone()));
        let Json(value) = Json::<T>::from_request(req, state).await?;
        if let Some(field) = super::nul::nul_in_json(&bytes) {
            return Err(super::nul::json_nul_error(&field));
        }
        Ok(CheckedJson(value))
    }
}

/// Query parameters of the incident list.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct GroupListParams {
    /// `open`, `quiet` or `resolved`.
    pub status: Option<String>,
    pub service: Option<String>,
    pub environment: Option<String>,
    pub release: Option<String>,
    /// `low`, `medium`, `high`, `critical` or `unknown`.
    pub severity: Option<String>,
    /// Text searched in title, culprit and `service:error_type`.
    pub q: Option<String>,
    /// `last_seen` (default), `first_seen`, `count` or `priority`.
    pub sort: Option<String>,
    /// 1–200, default 50.
    pub limit: Option<u32>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
    /// Project id.
    pub project: Option<i64>,
    /// `attention`: OPEN incidents with priority ≥ 70, or regressed or
    /// spiking in the last 24 h, highest priority first (one page; other
    /// filters and `sort` do not apply).
    pub view: Option<String>,
}

/// Priority from which an open incident needs attention.
pub const ATTENTION_PRIORITY: i32 = 70;

#[derive(Serialize, ToSchema)]
pub struct GroupList {
    pub groups: Vec<GroupListItem>,
    pub next_cursor: Option<String>,
}

/// An incident of a list, with its GitHub issue when one was created.
#[derive(Serialize, ToSchema)]
pub struct GroupListItem {
    #[serde(flatten)]
    pub group: Group,
    pub github_issue: Option<crate::model::GithubIssue>,
}

impl GroupList {
    /// The page's incidents with their GitHub issues (one query for the page).
    async fn of(
        state: &AppState,
        groups: Vec<Group>,
        next_cursor: Option<String>,
    ) -> Result<GroupList, ApiError> {
        let ids: Vec<i64> = groups.iter().map(|g| g.id).collect();
        let mut issues = state.store.github_issues(&ids).await?;
        let groups = groups
            .into_iter()
            .map(|group| GroupListItem {
                github_issue: issues.remove(&group.id),
                group,
            })
            .collect();
        Ok(GroupList {
            groups,
            next_cursor,
        })
    }
}

const SEVERITIES: [&str; 5] = ["low", "medium", "high", "critical", "unknown"];

/// List incidents.
#[utoipa::path(get, path = "/api/v1/groups", tag = "incidents", params(GroupListParams),
    security(("token" = [])),
    responses((status = 200, body = GroupList), (status = 400, body = super::error::ErrorBody), (status = 401, body = super::error::ErrorBody)))]
pub async fn list_groups(
    State(state): State<AppState>,
    _: Manager,
    ApiQuery(p): ApiQuery<GroupListParams>,
) -> Result<Json<GroupList>, ApiError> {
    match p.view.as_deref() {
        None | Some("" | "all") => {}
        Some("attention") => {
            let limit = p.limit.unwrap_or(50);
            if !(1..=200).contains(&limit) {
                return Err(ApiError::bad_request(
                    "invalid_query",
                    format!("limit {limit} out of range 1..=200"),
                ));
            }
            let since = Utc::now() - chrono::Duration::hours(24);
            let groups = state
                .store
                .attention_groups(p.project, ATTENTION_PRIORITY, since, limit)
                .await?;
            return Ok(Json(GroupList::of(&state, groups, None).await?));
        }
        Some(other) => {
            return Err(ApiError::bad_request(
                "invalid_query",
                format!("unknown view {other:?} (expected all or attention)"),
            ))
        }
    }
    let status = p
        .status
        .as_deref()
        .filter(|s| !s.is_empty() && *s != "all")
        .map(|s| {
            GroupStatus::parse(s).ok_or_else(|| {
                ApiError::bad_request(
                    "invalid_query",
                    format!("unknown status {s:?} (expected open, quiet, resolved or all)"),
                )
            })
        })
        .transpose()?;
    let sort = match p.sort.as_deref().unwrap_or("last_seen") {
        "last_seen" => GroupSort::LastSeen,
        "first_seen" => GroupSort::FirstSeen,
        "count" => GroupSort::Count,
        "priority" => GroupSort::Priority,
        other => {
            return Err(ApiError::bad_request(
                "invalid_query",
                format!(
                    "unknown sort {other:?} (expected last_seen, first_seen, count or priority)"
                ),
            ))
        }
    };
    if let Some(sev) = p.severity.as_deref() {
        if !SEVERITIES.contains(&sev) {
            return Err(ApiError::bad_request(
                "invalid_query",
                format!(
                    "unknown severity {sev:?} (expected one of {})",
                    SEVERITIES.join(", ")
                ),
            ));
        }
    }
    let limit = p.limit.unwrap_or(50);
    if !(1..=200).contains(&limit) {
        return Err(ApiError::bad_request(
            "invalid_query",
            format!("limit {limit} out of range 1..=200"),
        ));
    }
    let query = GroupQuery {
        project_id: p.project,
        status,
        service: p.service.filter(|s| !s.is_empty()),
        environment: p.environment.filter(|s| !s.is_empty()),
        release: p.release.filter(|s| !s.is_empty()),
        severity: p.severity,
        q: p.q.filter(|s| !s.trim().is_empty()),
        sort,
        limit,
        cursor: p.cursor.filter(|s| !s.is_empty()),
    };
    let page: GroupPage = state.store.list_groups(&query).await?;
    Ok(Json(
        GroupList::of(&state, page.groups, page.next_cursor).await?,
    ))
}

/// An incident with its counts over time, top tag values and activity.
#[derive(Serialize, ToSchema)]
pub struct GroupDetail {
    #[serde(flatten)]
    pub group: Group,
    #[serde(flatten)]
    pub stats: GroupStats,
    pub activity: Vec<Activity>,
    /// The latest triage result with its analyst, model, prompt version and time.
    pub triage: Option<TriageRecord>,
    /// The incident's GitHub issue, once created.
    pub github_issue: Option<crate::model::GithubIssue>,
}

async fn load_group(state: &AppState, id: i64) -> Result<Group, ApiError> {
    state
        .store
        .get_group(id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no incident with id {id}")))
}

/// One incident.
#[utoipa::path(get, path = "/api/v1/groups/{id}", tag = "incidents", security(("token" = [])),
    params(("id" = i64, Path, description = "incident id")),
    responses((status = 200, body = GroupDetail), (status = 400, body = super::error::ErrorBody), (status = 404, body = super::error::ErrorBody)))]
pub async fn get_group(
    State(state): State<AppState>,
    _: Manager,
    ApiPath(id): ApiPath<i64>,
) -> Result<Json<GroupDetail>, ApiError> {
    let group = load_group(&state, id).await?;
    let stats = state.store.group_stats(id, Utc::now()).await?;
    let activity = state.store.activity(id).await?;
    let triage = state.store.triage_history(id, 1).await?.into_iter().next();
    let github_issue = state.store.github_issues(&[id]).await?.remove(&id);
    Ok(Json(GroupDetail {
        group,
        stats,
        activity,
        triage,
        github_issue,
    }))
}

/// Delete an incident with its events, counters, activity and triage.
/// Events with its fingerprint that arrive later open a new incident.
#[utoipa::path(delete, path = "/api/v1/groups/{id}", tag = "incidents", security(("token" = [])),
    params(("id" = i64, Path, description = "incident id")),
    responses((status = 204, description = "deleted"), (status = 400, body = super::error::ErrorBody), (status = 404, body = super::error::ErrorBody)))]
pub async fn delete_group(
    State(state): State<AppState>,
    Manager(actor): Manager,
    ApiPath(id): ApiPath<i64>,
) -> Result<StatusCode, ApiError> {
    if !state.delete_incident(id, &actor).await? {
        return Err(ApiError::not_found(format!("no incident with id {id}")));
    }
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PageParams {
    /// 1–200, default 50.
    pub limit: Option<u32>,
    pub cursor: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct EventList {
    pub events: Vec<StoredEvent>,
    pub next_cursor: Option<String>,
}

impl From<EventPage> for EventList {
    fn from(p: EventPage) -> Self {
        EventList {
            events: p.events,
            next_cursor: p.next_cursor,
        }
    }
}

fn page_limit(limit: Option<u32>) -> Result<u32, ApiError> {
    let limit = limit.unwrap_or(50);
    if (1..=200).contains(&limit) {
        Ok(limit)
    } else {
        Err(ApiError::bad_request(
            "invalid_query",
            format!("limit {limit} out of range 1..=200"),
        ))
    }
}

/// The events of an incident, newest first.
#[utoipa::path(get, path = "/api/v1/groups/{id}/events", tag = "incidents", security(("token" = [])),
    params(("id" = i64, Path, description = "incident id"), PageParams),
    responses((status = 200, body = EventList), (status = 404, body = super::error::ErrorBody)))]
pub async fn group_events(
    State(state): State<AppState>,
    _: Manager,
    ApiPath(id): ApiPath<i64>,
    ApiQuery(p): ApiQuery<PageParams>,
) -> Result<Json<EventList>, ApiError> {
    load_group(&state, id).await?;
    let query = EventQuery {
        group_id: Some(id),
        limit: page_limit(p.limit)?,
        cursor: p.cursor,
        ..EventQuery::default()
    };
    Ok(Json(state.store.list_events(&query).await?.into()))
}

/// The activity history of an incident, oldest first.
#[utoipa::path(get, path = "/api/v1/groups/{id}/activity", tag = "incidents", security(("token" = [])),
    params(("id" = i64, Path, description = "incident id")),
    responses((status = 200, body = Vec<Activity>), (status = 404, body = super::error::ErrorBody)))]
pub async fn group_activity(
    State(state): State<AppState>,
    _: Manager,
    ApiPath(id): ApiPath<i64>,
) -> Result<Json<Vec<Activity>>, ApiError> {
    load_group(&state, id).await?;
    Ok(Json(state.store.activity(id).await?))
}

/// Body of the state-change endpoints; may be empty.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TransitionBody {
    /// Why (shown in the activity history).
    pub reason: Option<String>,
    /// Resolve only: later events of the release last seen do not reopen it.
    #[serde(default)]
    pub in_next_release: bool,
}

const MAX_REASON_CHARS: usize = 1000;

async fn apply(
    state: &AppState,
    actor: &str,
    id: i64,
    transition: Transition,
) -> Result<Json<Group>, ApiError> {
    state
        .store
        .transition(id, &transition, actor, Utc::now())
        .await?
        .map(Json)
        .ok_or_else(|| ApiError::not_found(format!("no incident with id {id}")))
}

fn reason(body: &TransitionBody) -> Result<Option<String>, ApiError> {
    match &body.reason {
        Some(r) if r.chars().count() > MAX_REASON_CHARS => Err(ApiError::unprocessable(
            "invalid_field",
            format!("reason longer than {MAX_REASON_CHARS} characters"),
        )),
        Some(r) if r.trim().is_empty() => Ok(None),
        other => Ok(other.clone()),
    }
}

/// Resolve an incident. A later event reopens it as a regression.
#[utoipa::path(post, path = "/api/v1/groups/{id}/resolve", tag = "incidents", security(("token" = [])),
    params(("id" = i64, Path, description = "incident id")), request_body(content = TransitionBody, description = "optional"),
    responses((status = 200, body = Group), (status = 404, body = super::error::ErrorBody), (status = 422, body = super::error::ErrorBody)))]
pub async fn resolve(
    State(state): State<AppState>,
    Manager(actor): Manager,
    ApiPath(id): ApiPath<i64>,
    ApiJson(body): ApiJson<TransitionBody>,
) -> Result<Json<Group>, ApiError> {
    let transition = Transition::Resolve {
        reason: reason(&body)?,
        in_next_release: body.in_next_release,
    };
    apply(&state, &actor, id, transition).await
}

/// Quiet an incident; a new event reopens it.
#[utoipa::path(post, path = "/api/v1/groups/{id}/quiet", tag = "incidents", security(("token" = [])),
    params(("id" = i64, Path, description = "incident id")), request_body(content = TransitionBody, description = "optional"),
    responses((status = 200, body = Group), (status = 404, body = super::error::ErrorBody)))]
pub async fn quiet(
    State(state): State<AppState>,
    Manager(actor): Manager,
    ApiPath(id): ApiPath<i64>,
    ApiJson(body): ApiJson<TransitionBody>,
) -> Result<Json<Group>, ApiError> {
    let transition = Transition::Quiet {
        reason: reason(&body)?,
    };
    apply(&state, &actor, id, transition).await
}

/// Reopen an incident.
#[utoipa::path(post, path = "/api/v1/groups/{id}/reopen", tag = "incidents", security(("token" = [])),
    params(("id" = i64, Path, description = "incident id")), request_body(content = TransitionBody, description = "optional"),
    responses((status = 200, body = Group), (status = 404, body = super::error::ErrorBody)))]
pub async fn reopen(
    State(state): State<AppState>,
    Manager(actor): Manager,
    ApiPath(id): ApiPath<i64>,
    ApiJson(body): ApiJson<TransitionBody>,
) -> Result<Json<Group>, ApiError> {
    let transition = Transition::Reopen {
        reason: reason(&body)?,
    };
    apply(&state, &actor, id, transition).await
}

#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct EventListParams {
    pub project: Option<i64>,
    pub service: Option<String>,
    pub environment: Option<String>,
    pub level: Option<String>,
    pub limit: Option<u32>,
    pub cursor: Option<String>,
}

/// The newest raw events across projects.
#[utoipa::path(get, path = "/api/v1/events", tag = "events", security(("token" = [])), params(EventListParams),
    responses((status = 200, body = EventList), (status = 400, body = super::error::ErrorBody)))]
pub async fn list_events(
    State(state): State<AppState>,
    _: Manager,
    ApiQuery(p): ApiQuery<EventListParams>,
) -> Result<Json<EventList>, ApiError> {
    let query = EventQuery {
        project_id: p.project,
        group_id: None,
        service: p.service.filter(|s| !s.is_empty()),
        environment: p.environment.filter(|s| !s.is_empty()),
        level: p.level.filter(|s| !s.is_empty()),
        limit: page_limit(p.limit)?,
        cursor: p.cursor.filter(|s| !s.is_empty()),
    };
    Ok(Json(state.store.list_events(&query).await?.into()))
}

/// One event, by its event id (with or without dashes).
#[utoipa::path(get, path = "/api/v1/events/{event_id}", tag = "events", security(("token" = [])),
    params(("event_id" = String, Path, description = "UUID, with or without dashes")),
    responses((status = 200, body = StoredEvent), (status = 400, body = super::error::ErrorBody), (status = 404, body = super::error::ErrorBody)))]
pub async fn get_event(
    State(state): State<AppState>,
    _: Manager,
    ApiPath(raw): ApiPath<String>,
) -> Result<Json<StoredEvent>, ApiError> {
    // `Uuid::parse_str` takes both the hyphenated and the simple (32 hex) forms.
    let event_id = Uuid::parse_str(raw.trim()).map_err(|_| {
        ApiError::bad_request(
            "invalid_id",
            format!("invalid event id {raw:?}: expected a UUID, with or without dashes"),
        )
    })?;
    state
        .store
        .get_event(event_id)
        .await?
        .map(Json)
        .ok_or_else(|| ApiError::not_found(format!("no event with id {event_id}")))
}

/// What deleting a project took with it.
#[derive(Debug, Serialize, ToSchema)]
pub struct ProjectDeleted {
    pub events: u64,
    pub incidents: u64,
}

/// Delete a project with its incidents and events; its key stops working.
#[utoipa::path(delete, path = "/api/v1/projects/{id}", tag = "projects", security(("token" = [])),
    params(("id" = i64, Path, description = "project id")),
    responses((status = 200, body = ProjectDeleted), (status = 400, body = super::error::ErrorBody), (status = 404, body = super::error::ErrorBody)))]
pub async fn delete_project(
    State(state): State<AppState>,
    Manager(actor): Manager,
    ApiPath(id): ApiPath<i64>,
) -> Result<Json<ProjectDeleted>, ApiError> {
    let deleted = state
        .delete_project(id, &actor)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no project with id {id}")))?;
    Ok(Json(ProjectDeleted {
        events: deleted.events,
        incidents: deleted.incidents,
    }))
}

/// A project with its DSN (only when the key was just created or rotated).
#[derive(Serialize, ToSchema)]
pub struct ProjectWithKey {
    #[serde(flatten)]
    pub project: Project,
    /// The ingest key; shown only in this answer.
    pub key: String,
    pub dsn: String,
}

/// Projects.
#[utoipa::path(get, path = "/api/v1/projects", tag = "projects", security(("token" = [])),
    responses((status = 200, body = Vec<Project>)))]
pub async fn list_projects(
    State(state): State<AppState>,
    _: Manager,
) -> Result<Json<Vec<Project>>, ApiError> {
    Ok(Json(state.store.list_projects().await?))
}

#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateProject {
    pub name: String,
}

/// Create a project; the answer holds its ingest key and DSN, shown only once.
#[utoipa::path(post, path = "/api/v1/projects", tag = "projects", security(("token" = [])),
    request_body = CreateProject,
    responses((status = 201, body = ProjectWithKey), (status = 409, body = super::error::ErrorBody), (status = 422, body = super::error::ErrorBody)))]
pub async fn create_project(
    State(state): State<AppState>,
    _: Manager,
    ApiJson(body): ApiJson<CreateProject>,
) -> Result<(StatusCode, Json<ProjectWithKey>), ApiError> {
    let name = validate_project_name(&body.name)
        .map_err(|m| ApiError::unprocessable("invalid_field", m))?;
    let key = credentials::new_ingest_key();
    let project = state
        .store
        .create_project(
            name,
            &credentials::hash_secret(&key),
            &credentials::prefix(&key),
        )
        .await?;
    let dsn = credentials::dsn(&state.public_url, &key, project.id);
    Ok((
        StatusCode::CREATED,
        Json(ProjectWithKey { project, key, dsn }),
    ))
}

/// Checks a project name: 1–100 characters, letters, digits, `-`, `_`, `.`, space.
pub fn validate_project_name(name: &str) -> Result<&str, String> {
    let name = name.trim();
    if name.is_empty() || name.chars().count() > 100 {
        return Err("project name must have 1 to 100 characters".into());
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_alphanumeric() || matches!(c, '-' | '_' | '.' | ' ')))
    {
        return Err(format!("project name may not contain {c:?}"));
    }
    Ok(name)
}

/// Replace a project's ingest key; the old one stops working.
#[utoipa::path(post, path = "/api/v1/projects/{id}/rotate-key", tag = "projects", security(("token" = [])),
    params(("id" = i64, Path, description = "project id")),
    responses((status = 200, body = ProjectWithKey), (status = 404, body = super::error::ErrorBody)))]
pub async fn rotate_key(
    State(state): State<AppState>,
    _: Manager,
    ApiPath(id): ApiPath<i64>,
) -> Result<Json<ProjectWithKey>, ApiError> {
    let key = credentials::new_ingest_key();
    let rotated = state
        .store
        .rotate_project_key(
            id,
            &credentials::hash_secret(&key),
            &credentials::prefix(&key),
        )
        .await?;
    if !rotated {
        return Err(ApiError::not_found(format!("no project with id {id}")));
    }
    state.forget_cached_keys();
    let project = state
        .store
        .get_project(id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no project with id {id}")))?;
    let dsn = credentials::dsn(&state.public_url, &key, id);
    Ok(Json(ProjectWithKey { project, key, dsn }))
}

/// Management tokens: id, name, when created and last used; never the
/// token or its hash.
#[utoipa::path(get, path = "/api/v1/tokens", tag = "tokens", security(("token" = [])),
    responses((status = 200, body = Vec<ApiToken>)))]
pub async fn list_tokens(
    State(state): State<AppState>,
    _: Manager,
) -> Result<Json<Vec<ApiToken>>, ApiError> {
    Ok(Json(state.store.list_tokens().await?))
}

/// Revoke a management token: this collector refuses it from the next
/// request, other collectors within their key cache's TTL (10 s). The
/// token authenticating this request may revoke itself. Answers the
/// revoked token (never its value).
#[utoipa::path(delete, path = "/api/v1/tokens/{id}", tag = "tokens", security(("token" = [])),
    params(("id" = i64, Path, description = "token id")),
    responses((status = 200, body = ApiToken), (status = 400, body = super::error::ErrorBody), (status = 404, body = super::error::ErrorBody)))]
pub async fn revoke_token(
    State(state): State<AppState>,
    Manager(actor): Manager,
    ApiPath(id): ApiPath<i64>,
) -> Result<Json<ApiToken>, ApiError> {
    state
        .revoke_token(id, &actor)
        .await?
        .map(Json)
        .ok_or_else(|| ApiError::not_found(format!("no token with id {id}")))
}

/// Where a project's alerts go.
#[derive(Debug, Serialize, ToSchema)]
pub struct AlertWebhook {
    /// The project's own webhook, shown as its scheme and host only
    /// (`https://hooks.slack.com/…`): the rest of such a URL is its secret.
    /// `null` when the project has none.
    pub webhook: Option<String>,
    /// Whether the collector has a webhook (`--alert-webhook`) that takes
    /// the alerts of projects without one of their own.
    pub collector_webhook: bool,
}

/// No `Debug`: the URL is usually a secret.
#[derive(Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SetAlertWebhook {
    /// Absolute `http` or `https` URL, at most 2,048 bytes; it receives a
    /// JSON POST for each new incident and regression of the project.
    pub url: String,
}

/// What the API says of a project's webhook; 404 when there is no such project.
async fn alert_webhook_of(state: &AppState, id: i64) -> Result<AlertWebhook, ApiError> {
    if state.store.get_project(id).await?.is_none() {
        return Err(ApiError::not_found(format!("no project with id {id}")));
    }
    let (webhook, collector_webhook) = state.alert_destination(id).await?;
    Ok(AlertWebhook {
        webhook,
        collector_webhook,
    })
}

/// Where the project's alerts go.
#[utoipa::path(get, path = "/api/v1/projects/{id}/alert-webhook", tag = "projects", security(("token" = [])),
    params(("id" = i64, Path, description = "project id")),
    responses((status = 200, body = AlertWebhook), (status = 404, body = super::error::ErrorBody)))]
pub async fn get_alert_webhook(
    State(state): State<AppState>,
    _: Manager,
    ApiPath(id): ApiPath<i64>,
) -> Result<Json<AlertWebhook>, ApiError> {
    Ok(Json(alert_webhook_of(&state, id).await?))
}

/// Send the project's alerts (new incidents, regressions) to this webhook
/// instead of the collector's.
#[utoipa::path(put, path = "/api/v1/projects/{id}/alert-webhook", tag = "projects", security(("token" = [])),
    params(("id" = i64, Path, description = "project id")),
    request_body = SetAlertWebhook,
    responses((status = 200, body = AlertWebhook), (status = 404, body = super::error::ErrorBody), (status = 422, body = super::error::ErrorBody)))]
pub async fn set_alert_webhook(
    State(state): State<AppState>,
    _: Manager,
    ApiPath(id): ApiPath<i64>,
    ApiJson(body): ApiJson<SetAlertWebhook>,
) -> Result<Json<AlertWebhook>, ApiError> {
    let url = crate::alerts::validate_webhook_url(&body.url, &state.webhook_policy)
        .map_err(|m| ApiError::unprocessable("invalid_field", m))?;
    if !state.store.set_project_alert_webhook(id, Some(url)).await? {
        return Err(ApiError::not_found(format!("no project with id {id}")));
    }
    Ok(Json(alert_webhook_of(&state, id).await?))
}

/// Remove the project's own webhook: its alerts go to the collector's again, if any.
#[utoipa::path(delete, path = "/api/v1/projects/{id}/alert-webhook", tag = "projects", security(("token" = [])),
    params(("id" = i64, Path, description = "project id")),
    responses((status = 200, body = AlertWebhook), (status = 404, body = super::error::ErrorBody)))]
pub async fn remove_alert_webhook(
    State(state): State<AppState>,
    _: Manager,
    ApiPath(id): ApiPath<i64>,
) -> Result<Json<AlertWebhook>, ApiError> {
    if !state.store.set_project_alert_webhook(id, None).await? {
        return Err(ApiError::not_found(format!("no project with id {id}")));
    }
    Ok(Json(alert_webhook_of(&state, id).await?))
}

/// A project's scrubbing: its own sensitive names and the collector's settings.
#[derive(Debug, Serialize, ToSchema)]
pub struct ScrubFields {
    /// The project's own names, scrubbed besides the defaults (password,
    /// secret, token, auth, cookie, session, csrf, api_key, credential,
    /// private_key, …): a key containing one, case-insensitively and with
    /// dashes read as underscores, has its value replaced with `[Filtered]`.
    pub fields: Vec<String>,
    /// Whether the collector scrubs at all (`--scrub`, default on).
    pub scrubbing: bool,
    /// Whether IP addresses are removed too (`--scrub-ip`).
    pub scrub_ip: bool,
}

#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SetScrubFields {
    /// At most 50 names of 1 to 64 letters, digits, `_`, `-` or `.`;
    /// `[]` leaves the defaults only. Required.
    pub fields: Option<Vec<String>>,
}

/// Checks and normalises a project's scrub field names (trimmed, lowercase,
/// duplicates dropped, in the order given); the error names the bad value.
pub fn validate_scrub_fields(fields: &[String]) -> Result<Vec<String>, String> {
    use crate::pipeline::scrub::{MAX_FIELDS, MAX_FIELD_CHARS};
    let mut out: Vec<String> = Vec::new();
    for f in fields {
        let name = f.trim().to_ascii_lowercase();
        if name.is_empty() || name.chars().count() > MAX_FIELD_CHARS {
            return Err(format!(
                "field name {f:?} must have 1 to {MAX_FIELD_CHARS} characters"
            ));
        }
        if !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
        {
            return Err(format!(
                "field name {f:?} may contain only letters, digits, `_`, `-` and `.`"
            ));
        }
        if !out.contains(&name) {
            out.push(name);
        }
    }
    if out.len() > MAX_FIELDS {
        return Err(format!(
            "at most {MAX_FIELDS} field names, got {}",
            out.len()
        ));
    }
    Ok(out)
}

async fn scrub_fields_of(state: &AppState, id: i64) -> Result<ScrubFields, ApiError> {
    let fields = state
        .store
        .project_scrub_fields(id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no project with id {id}")))?;
    Ok(ScrubFields {
        fields,
        scrubbing: state.scrub.enabled,
        scrub_ip: state.scrub.ip,
    })
}

/// The project's own sensitive field names.
#[utoipa::path(get, path = "/api/v1/projects/{id}/scrub-fields", tag = "projects", security(("token" = [])),
    params(("id" = i64, Path, description = "project id")),
    responses((status = 200, body = ScrubFields), (status = 404, body = super::error::ErrorBody)))]
pub async fn get_scrub_fields(
    State(state): State<AppState>,
    _: Manager,
    ApiPath(id): ApiPath<i64>,
) -> Result<Json<ScrubFields>, ApiError> {
    Ok(Json(scrub_fields_of(&state, id).await?))
}

/// Replace the project's own sensitive field names; events received from
/// then on are scrubbed of them (by other collectors within 10 s).
#[utoipa::path(put, path = "/api/v1/projects/{id}/scrub-fields", tag = "projects", security(("token" = [])),
    params(("id" = i64, Path, description = "project id")),
    request_body = SetScrubFields,
    responses((status = 200, body = ScrubFields), (status = 404, body = super::error::ErrorBody), (status = 422, body = super::error::ErrorBody)))]
pub async fn set_scrub_fields(
    State(state): State<AppState>,
    actor: Manager,
    ApiPath(id): ApiPath<i64>,
    ApiJson(body): ApiJson<SetScrubFields>,
) -> Result<Json<ScrubFields>, ApiError> {
    let fields = body
        .fields
        .ok_or_else(|| "`fields` is required: a list of names, `[]` for none".to_owned())
        .and_then(|f| validate_scrub_fields(&f))
        .map_err(|m| ApiError::unprocessable("invalid_field", m))?;
    if !state.store.set_project_scrub_fields(id, &fields).await? {
        return Err(ApiError::not_found(format!("no project with id {id}")));
    }
    state.forget_scrub_rules();
    tracing::info!(project = id, actor = %actor.0, fields = fields.len(), "project scrub fields changed");
    Ok(Json(scrub_fields_of(&state, id).await?))
}
