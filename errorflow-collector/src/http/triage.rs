//! Triage endpoints: run a triage now, read an incident's digest and triage
//! history, store a result made elsewhere (the Kestra flow), list incidents
//! whose triage is stale, and run the quiet check on demand (Kestra's
//! `group-quiet-check`). All need a management token.

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use chrono::Utc;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::api::{ApiPath, ApiQuery};
use super::{ApiError, AppState, Manager};
use crate::model::Group;
use crate::store::StoreError;
use crate::triage::digest::Digest;
use crate::triage::result::{Severity, TriageRecord, TriageResult};
use crate::triage::{Reason, TriageError};

impl From<TriageError> for ApiError {
    fn from(e: TriageError) -> ApiError {
        match e {
            TriageError::Store(e) => ApiError::from(e),
            TriageError::InvalidOutput(m) => ApiError::unprocessable("invalid_field", m),
            other => ApiError::internal("triage failed", &other),
        }
    }
}

fn no_incident(id: impl std::fmt::Display) -> ApiError {
    ApiError::not_found(format!("no incident with id {id}"))
}

/// Triage an incident now with the configured analyst (falling back to the
/// built-in one) and store the result. With Kestra configured, its
/// `group-summary-agent` flow is started too; its result arrives later
/// through `PUT /api/v1/groups/{id}/triage`.
#[utoipa::path(post, path = "/api/v1/groups/{id}/summarize", tag = "triage", security(("token" = [])),
    params(("id" = i64, Path, description = "incident id")),
    responses((status = 200, body = TriageRecord), (status = 404, body = super::error::ErrorBody)))]
pub async fn summarize(
    State(state): State<AppState>,
    _: Manager,
    ApiPath(id): ApiPath<i64>,
) -> Result<Json<TriageRecord>, ApiError> {
    let record = state
        .triage
        .run(id, Reason::Manual)
        .await?
        .ok_or_else(|| no_incident(id))?;
    if let Some(group) = state.store.get_group(id).await? {
        state
            .triage
            .request_summary_flow(id, &group.cluster_key)
            .await;
    }
    Ok(Json(record))
}

/// The seed's summarize path, by `service:error_type`: triages the most
/// recently seen incident with that key.
#[utoipa::path(post, path = "/groups/{cluster_key}/summarize", tag = "triage", security(("token" = [])),
    params(("cluster_key" = String, Path, description = "`service:error_type`")),
    responses((status = 200, body = TriageRecord), (status = 404, body = super::error::ErrorBody)))]
pub async fn summarize_cluster(
    State(state): State<AppState>,
    manager: Manager,
    ApiPath(cluster_key): ApiPath<String>,
) -> Result<Json<TriageRecord>, ApiError> {
    let group = state
        .store
        .group_by_cluster_key(&cluster_key)
        .await?
        .ok_or_else(|| {
            ApiError::not_found(format!("no incident with cluster key {cluster_key:?}"))
        })?;
    summarize(State(state), manager, ApiPath(group.id)).await
}

/// What an analyst is told about an incident (bounded; untrusted text inside).
#[utoipa::path(get, path = "/api/v1/groups/{id}/digest", tag = "triage", security(("token" = [])),
    params(("id" = i64, Path, description = "incident id")),
    responses((status = 200, body = Digest), (status = 404, body = super::error::ErrorBody)))]
pub async fn digest(
    State(state): State<AppState>,
    _: Manager,
    ApiPath(id): ApiPath<i64>,
) -> Result<Json<Digest>, ApiError> {
    state
        .triage
        .digest(id, Utc::now())
        .await?
        .map(Json)
        .ok_or_else(|| no_incident(id))
}

#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct DigestLookup {
    /// Incident id; wins over `cluster_key`.
    pub id: Option<String>,
    /// The seed's `service:error_type`: the most recently seen incident with this key.
    pub cluster_key: Option<String>,
}

/// The digest of an incident named by id or by `service:error_type` (what
/// the Kestra agent flow reads; its inputs may carry either).
#[utoipa::path(get, path = "/api/v1/triage/digest", tag = "triage", security(("token" = [])),
    params(DigestLookup),
    responses((status = 200, body = Digest), (status = 400, body = super::error::ErrorBody), (status = 404, body = super::error::ErrorBody)))]
pub async fn digest_lookup(
    State(state): State<AppState>,
    manager: Manager,
    ApiQuery(p): ApiQuery<DigestLookup>,
) -> Result<Json<Digest>, ApiError> {
    // Kestra renders a missing optional input as an empty string.
    let id = p.id.as_deref().map(str::trim).filter(|s| !s.is_empty());
    let key = p
        .cluster_key
        .as_deref()
        .map(str::trim)
        .filter(|s| !s.is_empty());
    let id = match (id, key) {
        (Some(id), _) => id.parse::<i64>().map_err(|_| {
            ApiError::bad_request("invalid_query", format!("invalid incident id {id:?}"))
        })?,
        (None, Some(key)) => {
            state
                .store
                .group_by_cluster_key(key)
                .await?
                .ok_or_else(|| {
                    ApiError::not_found(format!("no incident with cluster key {key:?}"))
                })?
                .id
        }
        (None, None) => {
            return Err(ApiError::bad_request(
                "invalid_query",
                "give `id` or `cluster_key`",
            ))
        }
    };
    digest(State(state), manager, ApiPath(id)).await
}

#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ExternalParams {
    /// The model that produced the result (e.g. `gemini-2.5-flash`). Default `external`.
    pub model: Option<String>,
    /// Who produced it. Default `kestra`.
    pub analyst: Option<String>,
    /// Set by the Kestra flows from the trigger's key: a second result with
    /// the same key stores nothing and is answered with the first one.
    /// Empty means none. At most 200 characters.
    pub idempotency_key: Option<String>,
}

/// Store a triage result produced elsewhere (the Kestra agent flow). The
/// body is validated against the result schema; it is stored and shown, never acted on.
#[utoipa::path(put, path = "/api/v1/groups/{id}/triage", tag = "triage", security(("token" = [])),
    params(("id" = i64, Path, description = "incident id"), ExternalParams),
    request_body = TriageResult,
    responses((status = 200, body = TriageRecord), (status = 404, body = super::error::ErrorBody), (status = 422, body = super::error::ErrorBody)))]
pub async fn put_triage(
    State(state): State<AppState>,
    _: Manager,
    ApiPath(id): ApiPath<i64>,
    ApiQuery(p): ApiQuery<ExternalParams>,
    body: Result<super::api::CheckedJson<TriageResult>, ApiError>,
) -> Result<Json<TriageRecord>, ApiError> {
    let key = p.idempotency_key.as_deref().filter(|k| !k.is_empty());
    if key.is_some_and(|k| k.len() > 200) {
        return Err(ApiError::bad_request(
            "invalid_query",
            "idempotency_key is longer than 200 characters",
        ));
    }
    let super::api::CheckedJson(result) = body?;
    let label = |s: Option<String>, default: &str| {
        crate::triage::result::bound(s.as_deref().unwrap_or(default), 100)
    };
    state
        .triage
        .record_external(
            id,
            result,
            &label(p.analyst, "kestra"),
            &label(p.model, "external"),
            key,
        )
        .await
        .map_err(|e| match e {
            TriageError::Store(StoreError::Conflict(m)) => {
                ApiError::new(StatusCode::CONFLICT, "conflict", m)
            }
            other => other.into(),
        })?
        .map(Json)
        .ok_or_else(|| no_incident(id))
}

#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct HistoryParams {
    /// 1–100, default 20.
    pub limit: Option<u32>,
}

/// An incident's triage results, newest first.
#[utoipa::path(get, path = "/api/v1/groups/{id}/triage", tag = "triage", security(("token" = [])),
    params(("id" = i64, Path, description = "incident id"), HistoryParams),
    responses((status = 200, body = Vec<TriageRecord>), (status = 404, body = super::error::ErrorBody)))]
pub async fn history(
    State(state): State<AppState>,
    _: Manager,
    ApiPath(id): ApiPath<i64>,
    ApiQuery(p): ApiQuery<HistoryParams>,
) -> Result<Json<Vec<TriageRecord>>, ApiError> {
    let limit = p.limit.unwrap_or(20);
    if !(1..=100).contains(&limit) {
        return Err(ApiError::bad_request(
            "invalid_query",
            format!("limit {limit} out of range 1..=100"),
        ));
    }
    state
        .store
        .get_group(id)
        .await?
        .ok_or_else(|| no_incident(id))?;
    Ok(Json(state.store.triage_history(id, limit).await?))
}

/// A hand-set priority and severity.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PriorityBody {
    /// 0–100; `null` (or absent) gives the priority back to triage.
    #[serde(default)]
    pub priority: Option<i32>,
    /// `low`, `medium`, `high` or `critical`; `null` (or absent) gives it back to triage.
    #[serde(default)]
    pub severity: Option<Severity>,
}

/// Set an incident's priority and severity by hand. They are kept across
/// every later triage until set to `null`, and recorded in the activity
/// history (`priority_set`).
#[utoipa::path(put, path = "/api/v1/groups/{id}/priority", tag = "triage", security(("token" = [])),
    params(("id" = i64, Path, description = "incident id")),
    request_body = PriorityBody,
    responses((status = 200, body = Group), (status = 400, body = super::error::ErrorBody),
        (status = 404, body = super::error::ErrorBody), (status = 422, body = super::error::ErrorBody)))]
pub async fn set_priority(
    State(state): State<AppState>,
    Manager(actor): Manager,
    ApiPath(id): ApiPath<i64>,
    body: Result<super::api::CheckedJson<PriorityBody>, ApiError>,
) -> Result<Json<Group>, ApiError> {
    let super::api::CheckedJson(body) = body?;
    if let Some(p) = body.priority.filter(|p| !(0..=100).contains(p)) {
        return Err(ApiError::unprocessable(
            "invalid_field",
            format!("priority {p} out of range 0..=100"),
        ));
    }
    state
        .store
        .set_priority_override(id, body.priority, body.severity, &actor, Utc::now())
        .await?
        .map(Json)
        .ok_or_else(|| no_incident(id))
}

#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct StaleParams {
    /// 1–200, default 50.
    pub limit: Option<u32>,
}

/// An incident whose triage is due.
#[derive(Debug, Serialize, ToSchema)]
pub struct StaleIncident {
    pub id: i64,
    pub cluster_key: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct StaleList {
    pub groups: Vec<StaleIncident>,
}

/// Open incidents whose triage is stale: never triaged, or triaged longer
/// ago than the configured period with events since. For Kestra's `group-ai-batch`.
#[utoipa::path(get, path = "/api/v1/triage/stale", tag = "triage", security(("token" = [])),
    params(StaleParams),
    responses((status = 200, body = StaleList), (status = 400, body = super::error::ErrorBody)))]
pub async fn stale(
    State(state): State<AppState>,
    _: Manager,
    ApiQuery(p): ApiQuery<StaleParams>,
) -> Result<Json<StaleList>, ApiError> {
    let limit = p.limit.unwrap_or(50);
    if !(1..=200).contains(&limit) {
        return Err(ApiError::bad_request(
            "invalid_query",
            format!("limit {limit} out of range 1..=200"),
        ));
    }
    let mut groups = Vec::new();
    for id in state.triage.stale(limit).await? {
        if let Some(g) = state.store.get_group(id).await? {
            groups.push(StaleIncident {
                id,
                cluster_key: g.cluster_key,
            });
        }
    }
    Ok(Json(StaleList { groups }))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct QuietOutcome {
    /// How many OPEN incidents became QUIET.
    pub quieted: u64,
}

/// Quiet OPEN incidents idle for longer than the configured period (what
/// the collector's own quiet job does; for Kestra's `group-quiet-check`).
#[utoipa::path(post, path = "/api/v1/maintenance/quiet", operation_id = "quiet_idle_incidents", tag = "triage", security(("token" = [])),
    responses((status = 200, body = QuietOutcome)))]
pub async fn quiet(
    State(state): State<AppState>,
    _: Manager,
) -> Result<(StatusCode, Json<QuietOutcome>), ApiError> {
    let now = Utc::now();
    let idle = chrono::Duration::from_std(state.quiet_after)
        .map_err(|e| ApiError::internal("invalid quiet period", &e))?;
    let quieted = state.store.quiet_idle(now - idle, now).await?;
    Ok((StatusCode::OK, Json(QuietOutcome { quieted })))
}

/// The Kestra runs the collector started for an incident, newest first,
/// with how each ended (state, the task that failed and Kestra's message).
#[utoipa::path(get, path = "/api/v1/groups/{id}/kestra-runs", tag = "triage", security(("token" = [])),
    params(("id" = i64, Path, description = "incident id"), HistoryParams),
    responses((status = 200, body = Vec<crate::model::KestraRun>), (status = 404, body = super::error::ErrorBody)))]
pub async fn kestra_runs(
    State(state): State<AppState>,
    _: Manager,
    ApiPath(id): ApiPath<i64>,
    ApiQuery(p): ApiQuery<HistoryParams>,
) -> Result<Json<Vec<crate::model::KestraRun>>, ApiError> {
    let limit = p.limit.unwrap_or(20);
    if !(1..=100).contains(&limit) {
        return Err(ApiError::bad_request(
            "invalid_query",
            format!("limit {limit} out of range 1..=100"),
        ));
    }
    state
        .store
        .get_group(id)
        .await?
        .ok_or_else(|| no_incident(id))?;
    Ok(Json(state.store.kestra_runs(id, limit).await?))
}
