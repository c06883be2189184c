//! Sentry's ingest endpoints, so that the official Sentry SDKs report to
//! errorflow with the DSN the CLI prints (`http://KEY@HOST:PORT/ID`):
//! `POST /api/{project_id}/envelope/` and `POST /api/{project_id}/store/`
//! (with or without the trailing slash), with CORS for browser SDKs.
//!
//! Order of checks: key from `X-Sentry-Auth`, `Authorization: Sentry …` or
//! `?sentry_key=` (401/403, and 403 when the key belongs to another project)
//! → body size as sent (413) → at most 32 KiB inflated on the async worker
//! (400/415) → when no key came beside the body, the key in the envelope
//! header's `dsn`, read from that first line alone (401/403) → per-key rate
//! limit, one token for the request (429 with `Retry-After` and
//! `X-Sentry-Rate-Limits`) → the whole body inflated and decoded, off the
//! async workers unless it inflated to 32 KiB or less (400/413; for
//! `/store/` also the legacy base64-of-zlib body of old SDKs; 413 for an
//! event item over `max_event_bytes` or more than
//! [`MAX_ENVELOPE_ITEMS`](crate::pipeline::sentry::MAX_ENVELOPE_ITEMS)
//! items) → the rate limit for the envelope's other events (429) → pipeline
//! (422) → group-committed write. Nothing but the envelope header is
//! inflated or parsed before the key is known. Every event of an envelope
//! passes every check before any is written, so a bad item never leaves
//! half an envelope stored.
//!
//! The answer is Sentry's: `200 {"id": "<event id, 32 hex>"}` (`{}` for an
//! envelope without event). Items other than `event` are accepted and skipped.

use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::extract::{Path, RawQuery, State};
use axum::http::{header, HeaderMap, HeaderName, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use chrono::Utc;
use serde_json::json;
use tower_http::cors::{Any, CorsLayer};
use uuid::Uuid;

use super::{body, project_for_key, ApiError, AppState};
use crate::model::{NormalizedEvent, Project};
use crate::pipeline::scrub::Rules;
use crate::pipeline::sentry::{self as mapping, SentryContext, SentryError};
use crate::pipeline::{self, Context, Limits};
use crate::telemetry;

const X_SENTRY_AUTH: HeaderName = HeaderName::from_static("x-sentry-auth");
const X_SENTRY_RATE_LIMITS: HeaderName = HeaderName::from_static("x-sentry-rate-limits");

use super::ingest::INLINE_DECODE_BYTES;

/// The Sentry routes, with CORS (any origin, POST, Sentry's headers) on them only.
pub fn routes() -> Router<AppState> {
    let cors = CorsLayer::new()
        .allow_origin(Any)
        .allow_methods([Method::POST])
        .allow_headers([
            X_SENTRY_AUTH,
            header::CONTENT_TYPE,
            header::CONTENT_ENCODING,
        ])
        .expose_headers([X_SENTRY_RATE_LIMITS, header::RETRY_AFTER])
        .max_age(Duration::from_secs(3600));
    // The OPTIONS routes exist so that preflights reach the CORS layer
    // (which answers them) instead of the router's 405.
    let preflight = || async { StatusCode::NO_CONTENT };
    Router::new()
        .route(
            "/api/{project_id}/envelope/",
            post(envelope).options(preflight),
        )
        .route(
            "/api/{project_id}/envelope",
            post(envelope).options(preflight),
        )
        .route("/api/{project_id}/store/", post(store).options(preflight))
        .route("/api/{project_id}/store", post(store).options(preflight))
        .layer(cors)
}

/// The answer to an accepted Sentry request: the (first) event's id, 32
/// hex digits, or `{}` for an envelope without event.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct SentryAccepted {
    #[schema(example = "9ec79c33ec9942ab8353589fcb2e04dc")]
    pub id: Option<String>,
}

/// Store the events of a Sentry envelope.
#[utoipa::path(
    post, path = "/api/{project_id}/envelope/", tag = "sentry",
    description = "Sentry's envelope endpoint, for the official Sentry SDKs (DSN `http://KEY@HOST:PORT/PROJECT_ID`). \
        Also answers without the trailing slash, and CORS preflights. Items other than `event` are accepted and skipped. \
        The body may be compressed (`Content-Encoding`: gzip, deflate, br, zstd).",
    request_body(
        description = "A Sentry envelope: a JSON header line, then items (a JSON item header line and its payload).",
        content(
            (String = "application/x-sentry-envelope"),
            (String = "text/plain"),
        ),
    ),
    params(
        ("project_id" = i64, Path, description = "the project id of the DSN"),
        ("X-Sentry-Auth" = Option<String>, Header, description = "`Sentry sentry_key=KEY, sentry_version=7, …` (or `Authorization: Sentry …`)"),
        ("sentry_key" = Option<String>, Query, description = "the key, for clients that cannot send headers"),
        ("Content-Encoding" = Option<String>, Header, description = "gzip, deflate, br, zstd or none"),
    ),
    security((), ("sentry_auth" = []), ("sentry_key" = [])),
    responses(
        (status = 200, description = "stored (or no event in the envelope)", body = SentryAccepted),
        (status = 400, description = "malformed envelope, event JSON or encoding", body = super::error::ErrorBody),
        (status = 401, description = "no key in the header, the query or the envelope's `dsn`", body = super::error::ErrorBody),
        (status = 403, description = "unknown key, or a key of another project", body = super::error::ErrorBody),
        (status = 413, description = "body, decompressed body or event too large, or more than 1000 items", body = super::error::ErrorBody),
        (status = 415, description = "unsupported Content-Encoding", body = super::error::ErrorBody),
        (status = 429, description = "rate limited; see `Retry-After` and `X-Sentry-Rate-Limits`", body = super::error::ErrorBody),
    )
)]
pub async fn envelope(
    State(state): State<AppState>,
    Path(project_id): Path<String>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Body,
) -> Response {
    ingest(state, project_id, query, headers, body, Kind::Envelope)
        .await
        .unwrap_or_else(IntoResponse::into_response)
}

/// Store one event in Sentry's legacy format (the event JSON as the body).
#[utoipa::path(
    post, path = "/api/{project_id}/store/", tag = "sentry",
    description = "Sentry's legacy store endpoint: one event as JSON, optionally compressed (`Content-Encoding`), \
        or base64 of zlib-deflated JSON as old SDKs send it (no `Content-Encoding`). Also answers without the trailing slash.",
    request_body(
        description = "A Sentry event.",
        content(
            (Object = "application/json"),
            (String = "application/octet-stream"),
        ),
    ),
    params(
        ("project_id" = i64, Path, description = "the project id of the DSN"),
        ("X-Sentry-Auth" = Option<String>, Header, description = "`Sentry sentry_key=KEY, sentry_version=7, …` (or `Authorization: Sentry …`)"),
        ("sentry_key" = Option<String>, Query, description = "the key, for clients that cannot send headers"),
        ("Content-Encoding" = Option<String>, Header, description = "gzip, deflate, br, zstd or none"),
    ),
    security(("sentry_auth" = []), ("sentry_key" = [])),
    responses(
        (status = 200, description = "stored", body = SentryAccepted),
        (status = 400, description = "malformed event JSON or encoding", body = super::error::ErrorBody),
        (status = 401, description = "no key in the header or the query", body = super::error::ErrorBody),
        (status = 403, description = "unknown key, or a key of another project", body = super::error::ErrorBody),
        (status = 413, description = "body, decompressed body or event too large", body = super::error::ErrorBody),
        (status = 415, description = "unsupported Content-Encoding", body = super::error::ErrorBody),
        (status = 429, description = "rate limited; see `Retry-After` and `X-Sentry-Rate-Limits`", body = super::error::ErrorBody),
    )
)]
pub async fn store(
    State(state): State<AppState>,
    Path(project_id): Path<String>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Body,
) -> Response {
    ingest(state, project_id, query, headers, body, Kind::Store)
        .await
        .unwrap_or_else(IntoResponse::into_response)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Envelope,
    Store,
}

/// What decoding a body produced: the processed events and the envelope
/// header's event id.
struct Decoded {
    events: Vec<NormalizedEvent>,
    header_event_id: Option<Uuid>,
}

async fn ingest(
    state: AppState,
    project_id: String,
    query: Option<String>,
    headers: HeaderMap,
    body: Body,
    kind: Kind,
) -> Result<Response, ApiError> {
    let started = Instant::now();
    let project_id: i64 = project_id.parse().map_err(|_| {
        ApiError::bad_request(
            "invalid_id",
            format!("invalid project id {project_id:?}: expected a number"),
        )
    })?;
    // A key sent beside the body is checked before the body is read.
    let project = match request_key(&headers, query.as_deref()) {
        Some(key) => Some(authenticate(&state, &key, project_id).await?),
        None if kind == Kind::Store => return Err(missing_key()),
        None => None,
    };
    let body = body::read_limited(&headers, body, state.limits.max_body_bytes).await?;
    // At most INLINE_DECODE_BYTES are inflated here, on the async worker:
    // a body that fits is decoded here too, a larger one off the workers.
    let inline = inflate_inline(&headers, &body, kind)?;
    let project = match project {
        Some(p) => p,
        // Only the envelope header is read before the key in it is checked.
        None => {
            let key = envelope_header_key(&inline)?.ok_or_else(missing_key)?;
            authenticate(&state, &key, project_id).await?
        }
    };
    // The request costs a token of the key's bucket before it is decoded,
    // so that a client over its limit costs no decoding; its other events
    // are counted once decoded.
    if let Err(secs) = state.key_rate.check(project.id, 1) {
        telemetry::rejected("rate_limited", 1);
        return Ok(rate_limited(secs));
    }
    let ctx = Context {
        project_id,
        received_at: Utc::now(),
    };
    let rules = state.scrub_rules(project_id).await?;
    let decoded = match inline {
        body::Inflated::Whole(data) => decode(data, &ctx, &state.limits, &rules, kind)?,
        body::Inflated::Prefix(_) => {
            let limits = state.limits.clone();
            tokio::task::spawn_blocking(move || {
                let data = inflate_all(&headers, &body, kind, limits.max_decompressed_bytes)?;
                decode(data, &ctx, &limits, &rules, kind)
            })
            .await
            .map_err(|e| ApiError::internal("ingest task failed", &e))??
        }
    };
    let events = decoded.events;
    let n = u32::try_from(events.len()).unwrap_or(u32::MAX);
    if let Err(secs) = state.key_rate.check_rest(project.id, n) {
        telemetry::rejected("rate_limited", events.len());
        return Ok(rate_limited(secs));
    }
    let id = events
        .first()
        .map(|e| e.event_id)
        .or(decoded.header_event_id);
    if !events.is_empty() {
        let n = events.len();
        let outcomes = state.store_events(events).await?;
        super::ingest::count_outcomes(&outcomes);
        telemetry::accepted("sentry", n);
    }
    telemetry::ingest_latency("sentry", started.elapsed());
    Ok(Json(match id {
        Some(id) => json!({ "id": id.simple().to_string() }),
        None => json!({}),
    })
    .into_response())
}

/// Inflates at most [`INLINE_DECODE_BYTES`] of the body (the legacy store
/// format included): all of a small body, the start of a larger one.
fn inflate_inline(
    headers: &HeaderMap,
    body: &Bytes,
    kind: Kind,
) -> Result<body::Inflated, ApiError> {
    let outer = body::decompress_within(headers, body, INLINE_DECODE_BYTES)?;
    match outer {
        body::Inflated::Whole(data) if is_legacy(headers, &data, kind) => {
            body::decode_legacy_store_body_within(&data, INLINE_DECODE_BYTES)
        }
        other => Ok(other),
    }
}

/// Inflates the whole body (the legacy store format included), never more
/// than `max` bytes (413).
fn inflate_all(
    headers: &HeaderMap,
    body: &Bytes,
    kind: Kind,
    max: usize,
) -> Result<Bytes, ApiError> {
    let data = body::decompress(headers, body, max)?;
    if is_legacy(headers, &data, kind) {
        return body::decode_legacy_store_body(&data, max);
    }
    Ok(data)
}

fn is_legacy(headers: &HeaderMap, data: &[u8], kind: Kind) -> bool {
    kind == Kind::Store
        && !headers.contains_key(header::CONTENT_ENCODING)
        && body::is_legacy_store_body(data)
}

/// The key of the DSN in the envelope header, the first line of the
/// inflated body (or of its start): nothing else of the envelope is read.
fn envelope_header_key(inline: &body::Inflated) -> Result<Option<String>, ApiError> {
    let line = match inline {
        body::Inflated::Whole(data) => data.split(|&b| b == b'\n').next().unwrap_or_default(),
        body::Inflated::Prefix(data) => match data.iter().position(|&b| b == b'\n') {
            Some(end) => &data[..end],
            None => {
                telemetry::rejected("malformed", 1);
                return Err(ApiError::bad_request(
                    "invalid_envelope",
                    format!("the envelope header line is longer than {INLINE_DECODE_BYTES} bytes"),
                ));
            }
        },
    };
    // The header line alone is an envelope without items.
    let header = mapping::parse_envelope(line, 0)
        .map_err(sentry_error)?
        .header;
    Ok(header
        .dsn
        .as_deref()
        .and_then(mapping::dsn_key)
        .map(|(key, _)| key.to_owned()))
}

/// The key of `X-Sentry-Auth`, `Authorization: Sentry …` or `?sentry_key=`.
fn request_key(headers: &HeaderMap, query: Option<&str>) -> Option<String> {
    let header = |name: HeaderName| headers.get(name).and_then(|v| v.to_str().ok());
    header(X_SENTRY_AUTH)
        .and_then(mapping::auth_header_key)
        .or_else(|| {
            header(header::AUTHORIZATION)
                .filter(|v| {
                    v.trim_start()
                        .get(..7)
                        .is_some_and(|s| s.eq_ignore_ascii_case("sentry "))
                })
                .and_then(mapping::auth_header_key)
        })
        .or_else(|| query.and_then(mapping::query_key))
        .map(str::to_owned)
}

fn missing_key() -> ApiError {
    telemetry::rejected("unauthenticated", 1);
    ApiError::unauthorized(
        "missing sentry key: send `X-Sentry-Auth: Sentry sentry_key=KEY, sentry_version=7`, \
         `?sentry_key=KEY`, or the DSN in the envelope header",
    )
}

/// The key's project, which must be the one in the URL.
async fn authenticate(state: &AppState, key: &str, project_id: i64) -> Result<Project, ApiError> {
    let project = project_for_key(state, key).await?;
    if project.id != project_id {
        telemetry::rejected("forbidden", 1);
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            // Not which project it belongs to: that is not the caller's business.
            format!("this key does not belong to project {project_id}"),
        ));
    }
    Ok(project)
}

/// The 429 with Sentry's `X-Sentry-Rate-Limits` header besides `Retry-After`.
fn rate_limited(secs: u64) -> Response {
    let mut response = super::rate_limit::rate_limited(secs).into_response();
    if let Ok(v) = HeaderValue::from_str(&format!("{secs}::key")) {
        response.headers_mut().insert(X_SENTRY_RATE_LIMITS, v);
    }
    response
}

/// Decodes the inflated body and runs every event through the pipeline;
/// any failure refuses the whole request.
fn decode(
    data: Bytes,
    ctx: &Context,
    limits: &Limits,
    rules: &Rules,
    kind: Kind,
) -> Result<Decoded, ApiError> {
    let mut out = Decoded {
        events: Vec::new(),
        header_event_id: None,
    };
    match kind {
        Kind::Store => {
            if data.len() > limits.max_event_bytes {
                return Err(sentry_error(SentryError::EventTooLarge {
                    index: 0,
                    length: data.len(),
                    max: limits.max_event_bytes,
                }));
            }
            let sctx = SentryContext {
                fallback_event_id: Uuid::now_v7(),
            };
            let event = mapping::map_event(&data, &sctx).map_err(sentry_error)?;
            out.events.push(process(event, ctx, limits, rules)?);
        }
        Kind::Envelope => {
            let envelope =
                mapping::parse_envelope(&data, limits.max_event_bytes).map_err(sentry_error)?;
            out.header_event_id = envelope.header.event_id();
            for (n, item) in envelope.items.iter().filter(|i| i.is_event()).enumerate() {
                if n >= limits.max_events_per_batch {
                    return Err(ApiError::too_large(format!(
                        "more than {} events in one envelope",
                        limits.max_events_per_batch
                    )));
                }
                let fallback_event_id = match (n, out.header_event_id) {
                    (0, Some(id)) => id,
                    _ => Uuid::now_v7(),
                };
                let event = mapping::map_event(item.payload, &SentryContext { fallback_event_id })
                    .map_err(sentry_error)?;
                out.events.push(process(event, ctx, limits, rules)?);
            }
        }
    }
    Ok(out)
}

fn process(
    event: errorflow_sdk::protocol::Event,
    ctx: &Context,
    limits: &Limits,
    rules: &Rules,
) -> Result<NormalizedEvent, ApiError> {
    // Sentry stores an event that has neither message nor exception (as
    // `<unlabeled event>`); so does the collector for Sentry's SDKs.
    let content = pipeline::normalize::Content::Optional;
    pipeline::process_with(event, ctx, limits, content, rules).map_err(|e| {
        telemetry::rejected("invalid_event", 1);
        ApiError::unprocessable("invalid_event", e.to_string())
    })
}

fn sentry_error(e: SentryError) -> ApiError {
    telemetry::rejected("malformed", 1);
    let message = e.to_string();
    match e {
        SentryError::EventTooLarge { .. } | SentryError::TooManyItems { .. } => {
            ApiError::too_large(message)
        }
        SentryError::InvalidJson(_) | SentryError::NotAnObject => {
            ApiError::bad_request("invalid_json", message)
        }
        SentryError::InvalidEventId(_) => ApiError::bad_request("invalid_event_id", message),
        _ => ApiError::bad_request("invalid_envelope", message),
    }
}
