//! Ingest endpoints: `POST /api/v1/events` (the SDK's batch protocol) and
//! `POST /errors/custom` (the seed's single-event body).
//!
//! Order of checks, each answered with its own status: key (401/403) →
//! content type and encoding (415) → body size (413) → the key's rate, one
//! event (429) → bounded decompression in [`super::body`] (400/413) → body
//! decoding (400/422/413) → per-event pipeline (rejections listed,
//! neighbours kept) → the key's rate, the batch's other events (429) →
//! group-committed write.

use std::time::Instant;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::Utc;
use errorflow_sdk::protocol::{BatchResponse, Rejection};
use serde::Serialize;
use utoipa::ToSchema;
use uuid::Uuid;

use super::{body, ApiError, AppState, IngestProject};
use crate::model::{InsertOutcome, NormalizedEvent};
use crate::pipeline::normalize::Content;
use crate::pipeline::{self, Context, DecodeError, Limits};
use crate::telemetry;

/// Answer of `POST /errors/custom`.
#[derive(Debug, Serialize, ToSchema)]
pub struct CustomResponse {
    pub event_id: Uuid,
    /// Null when the event was a duplicate of one already stored, or (202)
    /// is queued for a writer.
    pub group_id: Option<i64>,
    pub trace_id: String,
    pub cluster_key: String,
    pub duplicate: bool,
}

/// Store a batch of events (the SDK protocol).
#[utoipa::path(
    post, path = "/api/v1/events", tag = "ingest",
    request_body(content = inline(Object), description = "`{\"events\": [Event, ...]}`, optionally gzip-encoded"),
    params(("X-Errorflow-Key" = Option<String>, Header, description = "ingest key (or `Authorization: Bearer KEY`)")),
    responses(
        (status = 200, description = "stored; rejected events are listed by index", body = inline(Object)),
        (status = 400, body = super::error::ErrorBody), (status = 401, body = super::error::ErrorBody),
        (status = 403, body = super::error::ErrorBody), (status = 413, body = super::error::ErrorBody),
        (status = 415, body = super::error::ErrorBody), (status = 422, body = super::error::ErrorBody),
        (status = 429, description = "the key is over its rate; `Retry-After` says when to send again", body = super::error::ErrorBody),
        (status = 503, body = super::error::ErrorBody),
    )
)]
pub async fn batch(
    State(state): State<AppState>,
    IngestProject(project): IngestProject,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<BatchResponse>, ApiError> {
    let started = Instant::now();
    let body = read_body(&headers, body, &state.limits).await?;
    check_rate(&state, project.id, 1)?;
    let limits = state.limits.clone();
    let ctx = Context {
        project_id: project.id,
        received_at: Utc::now(),
    };
    let rules = state.scrub_rules(project.id).await?;
    // Decompression and decoding of a batch can take milliseconds: keep them
    // off the async workers.
    let (events, mut rejected) = tokio::task::spawn_blocking(move || {
        let json = decompress(&headers, &body, &limits)?;
        let decoded = pipeline::decode_batch(&json, &limits).map_err(decode_error)?;
        let mut events = Vec::with_capacity(decoded.len());
        let mut rejected = Vec::new();
        for (index, item) in decoded.into_iter().enumerate() {
            match item.map_err(|e| e.to_string()).and_then(|event| {
                pipeline::process_with(event, &ctx, &limits, Content::Required, &rules)
                    .map_err(|e| e.to_string())
            }) {
                Ok(event) => {
                    event.event_json();
                    events.push(event)
                }
                Err(error) => rejected.push(Rejection { index, error }),
            }
        }
        Ok::<_, ApiError>((events, rejected))
    })
    .await
    .map_err(|e| ApiError::internal("ingest task failed", &e))??;

    if !rejected.is_empty() {
        telemetry::rejected("invalid_event", rejected.len());
    }
    if events.is_empty() && !rejected.is_empty() {
        rejected.sort_by_key(|r| r.index);
        return Err(ApiError::unprocessable(
            "invalid_events",
            format!("all {} events were rejected", rejected.len()),
        )
        .with_details(serde_json::json!({ "rejected": rejected })));
    }
    let n = u32::try_from(events.len() + rejected.len()).unwrap_or(u32::MAX);
    if let Err(secs) = state.key_rate.check_rest(project.id, n) {
        telemetry::rejected("rate_limited", n as usize);
        return Err(super::rate_limit::rate_limited(secs));
    }
    let outcomes = state.store_events(events).await?;
    let (accepted, duplicates) = count_outcomes(&outcomes);
    telemetry::accepted("batch", accepted);
    telemetry::ingest_latency("batch", started.elapsed());
    Ok(Json(BatchResponse {
        accepted: accepted as u64,
        duplicates: duplicates as u64,
        rejected,
    }))
}

/// Store one event in the seed's format `{service, error_type, message, path?, env?}`.
#[utoipa::path(
    post, path = "/errors/custom", tag = "ingest",
    request_body(content = inline(Object), description = "`{service, error_type, message, path?, env?, trace_id?, timestamp?, release?, level?, tags?, event_id?}`"),
    params(("X-Errorflow-Key" = Option<String>, Header, description = "ingest key (or `Authorization: Bearer KEY`)")),
    responses(
        (status = 201, description = "stored", body = CustomResponse),
        (status = 200, description = "an event with this event_id was already stored", body = CustomResponse),
        (status = 202, description = "queue mode: durable in the queue, stored by a writer soon (`group_id` null)", body = CustomResponse),
        (status = 400, body = super::error::ErrorBody), (status = 401, body = super::error::ErrorBody),
        (status = 403, body = super::error::ErrorBody), (status = 413, body = super::error::ErrorBody),
        (status = 415, body = super::error::ErrorBody), (status = 422, body = super::error::ErrorBody),
        (status = 429, description = "the key is over its rate; `Retry-After` says when to send again", body = super::error::ErrorBody),
        (status = 503, body = super::error::ErrorBody),
    )
)]
pub async fn custom(
    State(state): State<AppState>,
    IngestProject(project): IngestProject,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let started = Instant::now();
    let body = read_body(&headers, body, &state.limits).await?;
    check_rate(&state, project.id, 1)?;
    let ctx = Context {
        project_id: project.id,
        received_at: Utc::now(),
    };
    let rules = state.scrub_rules(project.id).await?;
    let decode = move |json: &[u8], limits: &Limits| {
        let event = pipeline::decode_custom(json, Uuid::now_v7()).map_err(decode_error)?;
        pipeline::process_with(event, &ctx, limits, Content::Required, &rules).map_err(|e| {
            telemetry::rejected("invalid_event", 1);
            ApiError::unprocessable("invalid_event", e.to_string())
        })
    };
    // A body that inflates to a few kilobytes is decoded on the async
    // worker; any other one is inflated and decoded off the workers, so that
    // a small compressed body that inflates to megabytes never stalls them.
    let event = match body::decompress_within(&headers, &body, INLINE_DECODE_BYTES)? {
        body::Inflated::Whole(json) => decode(&json, &state.limits)?,
        body::Inflated::Prefix(_) => {
            let limits = state.limits.clone();
            tokio::task::spawn_blocking(move || {
                let json = decompress(&headers, &body, &limits)?;
                decode(&json, &limits)
            })
            .await
            .map_err(|e| ApiError::internal("ingest task failed", &e))??
        }
    };
    let answer = |event: &NormalizedEvent, group_id, duplicate| CustomResponse {
        event_id: event.event_id,
        group_id,
        trace_id: event.trace_id.clone(),
        cluster_key: event.cluster_key.clone(),
        duplicate,
    };
    let outcomes = state.store_events(vec![event.clone()]).await?;
    count_outcomes(&outcomes);
    telemetry::ingest_latency("custom", started.elapsed());
    Ok(match outcomes.first() {
        Some(InsertOutcome::Stored { group_id, .. }) => {
            telemetry::accepted("custom", 1);
            (
                StatusCode::CREATED,
                Json(answer(&event, Some(*group_id), false)),
            )
                .into_response()
        }
        Some(InsertOutcome::Queued) => {
            telemetry::accepted("custom", 1);
            // Durable in the queue; its incident is known once a writer
            // stored it.
            (StatusCode::ACCEPTED, Json(answer(&event, None, false))).into_response()
        }
        _ => (StatusCode::OK, Json(answer(&event, None, true))).into_response(),
    })
}

/// Bodies that inflate to at most this many bytes are decoded on the async
/// worker: a thread hop costs more than decoding a few kilobytes. Larger
/// ones, however small their compressed form, are decoded off the workers.
pub(crate) const INLINE_DECODE_BYTES: usize = 32 * 1024;

/// Takes `events` tokens from the key's bucket before they cost work: a
/// client over its rate gets 429 with `Retry-After`, and its request is
/// not stored (the SDK sends it again then).
fn check_rate(state: &AppState, project_id: i64, events: u32) -> Result<(), ApiError> {
    state.key_rate.check(project_id, events).map_err(|secs| {
        telemetry::rejected("rate_limited", events as usize);
        super::rate_limit::rate_limited(secs)
    })
}

/// Counts stored and duplicate events and records the incident metrics.
pub(crate) fn count_outcomes(outcomes: &[InsertOutcome]) -> (usize, usize) {
    let (mut stored, mut duplicates, mut created, mut regressed) = (0, 0, 0, 0);
    for outcome in outcomes {
        match outcome {
            InsertOutcome::Stored {
                new_group,
                regression,
                ..
            } => {
                stored += 1;
                created += usize::from(*new_group);
                regressed += usize::from(*regression);
            }
            InsertOutcome::Duplicate => duplicates += 1,
            InsertOutcome::Queued => stored += 1,
        }
    }
    telemetry::duplicates(duplicates);
    telemetry::groups_created(created);
    telemetry::regressions(regressed);
    (stored, duplicates)
}

/// Checks the content type and reads the body up to `max_body_bytes`.
async fn read_body(headers: &HeaderMap, body: Body, limits: &Limits) -> Result<Bytes, ApiError> {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let essence = content_type.split(';').next().unwrap_or("").trim();
    if !essence.eq_ignore_ascii_case("application/json") {
        telemetry::rejected("unsupported_media_type", 1);
        return Err(ApiError::unsupported_media(format!(
            "expected content-type application/json, got {:?}",
            content_type
        )));
    }
    body::read_limited(headers, body, limits.max_body_bytes).await
}

/// Undoes the content encoding within `max_decompressed_bytes` (see [`body::decompress`]).
fn decompress(headers: &HeaderMap, body: &Bytes, limits: &Limits) -> Result<Bytes, ApiError> {
    body::decompress(headers, body, limits.max_decompressed_bytes)
}

fn decode_error(e: DecodeError) -> ApiError {
    telemetry::rejected("malformed", 1);
    let message = e.to_string();
    match e {
        DecodeError::TooManyEvents { .. } => ApiError::too_large(message),
        DecodeError::InvalidUtf8 { .. }
        | DecodeError::Malformed { .. }
        | DecodeError::TooDeep { .. } => ApiError::bad_request("invalid_json", message),
        DecodeError::WrongShape { .. } => ApiError::unprocessable("invalid_body", message),
    }
}
