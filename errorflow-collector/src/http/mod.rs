//! HTTP: routes, authentication, ingest endpoints, REST API and operations
//! endpoints. Handlers are small: extractors in, `Result<_, ApiError>` out.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use axum::extract::{FromRequestParts, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use metrics_exporter_prometheus::PrometheusHandle;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::trace::TraceLayer;

use crate::credentials::hash_secret;
use crate::model::Project;
use crate::pipeline::Limits;
use crate::store::{DeletedProject, Store, StoreError};
use crate::triage::{Triage, Triggers};
use crate::writer::Writer;

pub mod api;
pub mod body;
pub mod dashboard;
pub mod error;
pub mod github;
pub mod ingest;
pub mod openapi;
pub mod rate_limit;
pub mod sentry;
pub mod server;
pub mod triage;

pub use error::ApiError;

/// Shared state of every handler.
#[derive(Clone)]
pub struct AppState {
    pub store: Arc<dyn Store>,
    pub writer: Writer,
    pub limits: Arc<Limits>,
    /// The URL in DSNs and links (`http://127.0.0.1:8000`).
    pub public_url: Arc<str>,
    pub metrics: PrometheusHandle,
    /// AI triage (built-in analyst unless configured otherwise).
    pub triage: Arc<Triage>,
    /// Automatic triage triggers; `None` when no triage worker runs.
    pub triggers: Option<Triggers>,
    /// Webhook alerts of new incidents and regressions; `None` without a webhook.
    pub alerts: Option<crate::alerts::Alerts>,
    /// How long an OPEN incident may be idle before `POST /api/v1/maintenance/quiet` quiets it.
    pub quiet_after: Duration,
    /// Sign-in throttling and cookie settings of the dashboard.
    pub dashboard: Arc<dashboard::DashState>,
    keys: Arc<KeyCache>,
    /// Per-key token buckets of the Sentry endpoints.
    pub key_rate: Arc<rate_limit::KeyRateLimiter>,
    /// The GitHub integration's client and blame cache.
    pub github: Arc<crate::integrations::github::Github>,
    /// The internal destinations alert webhooks may reach (none by default).
    pub webhook_policy: Arc<crate::outbound::AddressPolicy>,
    /// The collector's scrubbing rules (`--scrub`, `--scrub-ip`); each
    /// project adds its own names ([`AppState::scrub_rules`]).
    pub scrub: Arc<crate::pipeline::scrub::Rules>,
}

impl AppState {
    pub fn new(
        store: Arc<dyn Store>,
        writer: Writer,
        limits: Limits,
        public_url: &str,
        metrics: PrometheusHandle,
    ) -> AppState {
        AppState {
            triage: Arc::new(Triage::builtin(store.clone())),
            store,
            writer,
            limits: Arc::new(limits),
            public_url: public_url.trim_end_matches('/').into(),
            metrics,
            triggers: None,
            alerts: None,
            quiet_after: Duration::from_secs(30 * 60),
            dashboard: Arc::new(dashboard::DashState::new(public_url)),
            keys: Arc::new(KeyCache::default()),
            key_rate: Arc::new(rate_limit::KeyRateLimiter::new(
                rate_limit::KeyRate::default(),
            )),
            github: Arc::new(crate::integrations::github::Github::default()),
            webhook_policy: Arc::default(),
            scrub: Arc::default(),
        }
    }

    /// Scrubs events by these rules (`--scrub`, `--scrub-ip`) instead of
    /// the default ones.
    pub fn with_scrub(mut self, rules: crate::pipeline::scrub::Rules) -> AppState {
        self.scrub = Arc::new(rules);
        self
    }

    /// The rules a project's events are scrubbed by: the collector's, with
    /// the project's own names (cached like keys, for [`KEY_CACHE_TTL`]).
    pub async fn scrub_rules(
        &self,
        project_id: i64,
    ) -> Result<Arc<crate::pipeline::scrub::Rules>, StoreError> {
        if !self.scrub.enabled {
            return Ok(self.scrub.clone());
        }
        let key = project_id.to_string();
        if let Some(rules) = KeyCache::get(&self.keys.scrub, &key) {
            return Ok(rules);
        }
        let fields = self
            .store
            .project_scrub_fields(project_id)
            .await?
            .unwrap_or_default();
        let rules = if fields.is_empty() {
            self.scrub.clone()
        } else {
            Arc::new(self.scrub.as_ref().clone().with_fields(&fields))
        };
        KeyCache::put(&self.keys.scrub, key, rules.clone());
        Ok(rules)
    }

    /// Forgets the cached scrubbing rules, after a project's names changed
    /// (other collectors see the change within [`KEY_CACHE_TTL`]).
    pub fn forget_scrub_rules(&self) {
        self.keys
            .scrub
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
    }

    /// Lets webhooks reach these internal destinations (`--allow-webhook-hosts`).
    /// The internal destinations outgoing requests may reach: alert
    /// webhooks and projects' GitHub API URLs.
    pub fn with_webhook_policy(mut self, policy: Arc<crate::outbound::AddressPolicy>) -> AppState {
        self.github = Arc::new(crate::integrations::github::Github::new(
            crate::integrations::github::DEFAULT_TIMEOUT,
            policy.clone(),
        ));
        self.webhook_policy = policy;
        self
    }

    /// Uses this triage service instead of the built-in default.
    pub fn with_triage(mut self, triage: Arc<Triage>) -> AppState {
        self.triage = triage;
        self
    }

    /// Sends automatic triage triggers from ingest to this channel.
    pub fn with_triggers(mut self, triggers: Triggers) -> AppState {
        self.triggers = Some(triggers);
        self
    }

    /// Tells the alert webhooks of new incidents and regressions.
    pub fn with_alerts(mut self, alerts: crate::alerts::Alerts) -> AppState {
        self.alerts = Some(alerts);
        self
    }

    /// Where a project's alerts go, as the API and the dashboard show it:
    /// its own webhook, scheme and host only (`https://hooks.slack.com/…`),
    /// and whether the collector has a webhook for projects without one.
    pub async fn alert_destination(
        &self,
        project_id: i64,
    ) -> Result<(Option<String>, bool), crate::store::StoreError> {
        let own = self.store.project_alert_webhook(project_id).await?;
        let collector = self
            .alerts
            .as_ref()
            .is_some_and(crate::alerts::Alerts::has_default_webhook);
        Ok((
            own.as_deref().map(crate::alerts::redact_webhook_url),
            collector,
        ))
    }

    pub fn with_quiet_after(mut self, quiet_after: Duration) -> AppState {
        self.quiet_after = quiet_after;
        self
    }

    /// Stores one request's events through the writer (answering once they
    /// are durable), then offers the outcomes to the triage worker and the
    /// alerts without waiting for either. Every ingest path goes through
    /// here, so that no kind of event escapes triage or alerting. A
    /// request's events all belong to its key's project.
    pub async fn store_events(
        &self,
        events: Vec<crate::model::NormalizedEvent>,
    ) -> Result<Vec<crate::model::InsertOutcome>, crate::writer::WriteError> {
        let Some(project_id) = events.first().map(|e| e.project_id) else {
            return Ok(Vec::new());
        };
        debug_assert!(events.iter().all(|e| e.project_id == project_id));
        let outcomes = self.writer.submit(events).await?;
        if let Some(t) = &self.triggers {
            t.offer(&outcomes);
        }
        if let Some(a) = &self.alerts {
            a.offer(project_id, &outcomes);
        }
        Ok(outcomes)
    }

    /// Replaces the default per-key rate limit of the Sentry endpoints.
    pub fn with_key_rate(mut self, rate: rate_limit::KeyRate) -> AppState {
        self.key_rate = Arc::new(rate_limit::KeyRateLimiter::new(rate));
        self
    }

    /// Deletes an incident with everything stored for it (see
    /// [`crate::store::delete_group_in_chunks`]) for `actor`, whom the log
    /// keeps, since the incident's own history goes with it. False when
    /// there is no such incident.
    pub async fn delete_incident(&self, id: i64, actor: &str) -> Result<bool, StoreError> {
        let deleted = crate::store::delete_group_in_chunks(self.store.as_ref(), id).await?;
        if deleted {
            tracing::info!(incident = id, actor, "incident deleted");
        }
        Ok(deleted)
    }

    /// Deletes a project with everything stored for it (see
    /// [`crate::store::delete_project_in_chunks`]) and forgets its cached
    /// key, so that this collector refuses it at once. `None` when there is
    /// no such project.
    pub async fn delete_project(
        &self,
        id: i64,
        actor: &str,
    ) -> Result<Option<DeletedProject>, StoreError> {
        let deleted = crate::store::delete_project_in_chunks(self.store.as_ref(), id).await?;
        if let Some(d) = deleted {
            self.forget_cached_keys();
            tracing::info!(
                project = id,
                actor,
                events = d.events,
                incidents = d.incidents,
                "project deleted"
            );
        }
        Ok(deleted)
    }

    /// Forgets cached credentials, e.g. after a key rotation in this process.
    pub fn forget_cached_keys(&self) {
        self.keys.clear();
    }
}

/// The whole application.
pub fn router(state: AppState) -> Router {
    Router::new()
        .merge(dashboard::routes())
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/api/v1/events", post(ingest::batch))
        .route("/errors/custom", post(ingest::custom))
        .merge(sentry::routes())
        .merge(github::routes())
        .nest("/api/v1", api::routes())
        // The seed's management paths, kept for its dashboard and scripts.
        .route("/groups/{id}/resolve", post(api::resolve))
        // The path segment is a `service:error_type` key; the name `{id}` is shared
        // with the route above because the router wants one name per position.
        .route("/groups/{id}/summarize", post(triage::summarize_cluster))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(CatchPanicLayer::custom(panic_response))
        // The span names the path only: a query may carry a key (`?sentry_key=`).
        .layer(
            TraceLayer::new_for_http().make_span_with(|req: &axum::http::Request<_>| {
                tracing::debug_span!(
                    "request",
                    method = %req.method(),
                    path = %req.uri().path(),
                    version = ?req.version(),
                )
            }),
        )
        .with_state(state)
}

async fn not_found() -> ApiError {
    ApiError::not_found("no such endpoint")
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "method not allowed on this endpoint",
    )
}

fn panic_response(_: Box<dyn std::any::Any + Send + 'static>) -> Response {
    // The panic message is already logged by the panic hook; keep the body generic.
    ApiError::new(
        StatusCode::INTERNAL_SERVER_ERROR,
        "internal",
        "internal error; see the collector's log",
    )
    .into_response()
}

/// Liveness: the process answers.
#[utoipa::path(get, path = "/healthz", tag = "operations",
    responses((status = 200, description = "`{\"status\": \"ok\"}`", body = serde_json::Value)))]
async fn healthz() -> impl IntoResponse {
    axum::Json(serde_json::json!({"status": "ok"}))
}

/// Readiness: the database answers.
#[utoipa::path(get, path = "/readyz", tag = "operations",
    responses((status = 200, description = "`{\"status\": \"ready\"}`", body = serde_json::Value),
        (status = 503, description = "the database is unreachable", body = error::ErrorBody)))]
async fn readyz(State(state): State<AppState>) -> Response {
    match state.store.ping().await {
        Ok(()) => axum::Json(serde_json::json!({"status": "ready"})).into_response(),
        Err(e) => {
            tracing::warn!(error = %e, "readiness check failed");
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                "database unreachable",
            )
            .into_response()
        }
    }
}

/// Prometheus metrics, in its text format.
#[utoipa::path(get, path = "/metrics", tag = "operations",
    responses((status = 200, description = "Prometheus text exposition format", body = String,
        content_type = "text/plain; version=0.0.4")))]
async fn metrics(State(state): State<AppState>) -> Response {
    crate::telemetry::queue_depth(state.writer.queued_events());
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        state.metrics.render(),
    )
        .into_response()
}

/// Caches key and token look-ups briefly: ingest checks a key per request.
/// Only successful look-ups are cached, so a new key works at once; a
/// rotated key stops working in this process at once and in other processes
/// after at most [`KEY_CACHE_TTL`].
#[derive(Default)]
struct KeyCache {
    projects: RwLock<HashMap<String, (Project, Instant)>>,
    tokens: RwLock<HashMap<String, (String, Instant)>>,
    /// When this process last recorded each token's use in the store.
    token_uses: RwLock<HashMap<String, Instant>>,
    /// Each project's scrubbing rules, by project id.
    scrub: RwLock<HashMap<String, (Arc<crate::pipeline::scrub::Rules>, Instant)>>,
}

/// How often a token's `last_used_at` is written at most, per process (here)
/// and across processes (in the UPDATE's condition).
pub const TOKEN_USE_INTERVAL: Duration = Duration::from_secs(60);

pub const KEY_CACHE_TTL: Duration = Duration::from_secs(10);
const KEY_CACHE_MAX: usize = 10_000;

impl KeyCache {
    fn clear(&self) {
        self.projects
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
        self.tokens
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
        self.scrub
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
    }

    /// Whether this use of the token should be written to the store: the
    /// first use in this process, then once per [`TOKEN_USE_INTERVAL`].
    fn token_use_due(&self, hash: &str) -> bool {
        let due = |map: &HashMap<String, Instant>| {
            map.get(hash)
                .is_none_or(|at| at.elapsed() >= TOKEN_USE_INTERVAL)
        };
        if !due(&self.token_uses.read().unwrap_or_else(|e| e.into_inner())) {
            return false;
        }
        let mut map = self.token_uses.write().unwrap_or_else(|e| e.into_inner());
        if !due(&map) {
            return false;
        }
        if map.len() >= KEY_CACHE_MAX {
            map.clear();
        }
        map.insert(hash.to_string(), Instant::now());
        true
    }

    fn get<T: Clone>(map: &RwLock<HashMap<String, (T, Instant)>>, hash: &str) -> Option<T> {
        let map = map.read().unwrap_or_else(|e| e.into_inner());
        map.get(hash)
            .filter(|(_, at)| at.elapsed() < KEY_CACHE_TTL)
            .map(|(v, _)| v.clone())
    }

    fn put<T>(map: &RwLock<HashMap<String, (T, Instant)>>, hash: String, value: T) {
        let mut map = map.write().unwrap_or_else(|e| e.into_inner());
        if map.len() >= KEY_CACHE_MAX {
            map.clear();
        }
        map.insert(hash, (value, Instant::now()));
    }
}

/// The project whose ingest key the request carries, in
/// `X-Errorflow-Key: KEY` or `Authorization: Bearer KEY`.
pub struct IngestProject(pub Project);

impl FromRequestParts<AppState> for IngestProject {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let key = header_value(&parts.headers, "x-errorflow-key")
            .or_else(|| bearer(&parts.headers))
            .ok_or_else(|| {
                crate::telemetry::rejected("unauthenticated", 1);
                ApiError::unauthorized(
                    "missing ingest key: send `X-Errorflow-Key: KEY` or `Authorization: Bearer KEY`",
                )
            })?;
        project_for_key(state, key).await.map(IngestProject)
    }
}

/// The project whose ingest key this is (cached, see [`KeyCache`]); 403 when
/// no project has it. Shared by every ingest endpoint, ours and Sentry's.
pub(crate) async fn project_for_key(state: &AppState, key: &str) -> Result<Project, ApiError> {
    let hash = hash_secret(key);
    if let Some(p) = KeyCache::get(&state.keys.projects, &hash) {
        return Ok(p);
    }
    match state.store.project_by_key_hash(&hash).await? {
        Some(p) => {
            KeyCache::put(&state.keys.projects, hash, p.clone());
            Ok(p)
        }
        None => {
            crate::telemetry::rejected("forbidden", 1);
            Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "forbidden",
                "ingest key not recognised",
            ))
        }
    }
}

/// A caller holding a management token; the value names them for the activity history.
pub struct Manager(pub String);

impl FromRequestParts<AppState> for Manager {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let token = bearer(&parts.headers).ok_or_else(|| {
            ApiError::unauthorized("missing management token: send `Authorization: Bearer TOKEN`")
        })?;
        let hash = hash_secret(token);
        if let Some(actor) = KeyCache::get(&state.keys.tokens, &hash) {
            note_token_use(state, &hash);
            return Ok(Manager(actor));
        }
        match state.store.token_by_hash(&hash).await? {
            Some(t) => {
                let actor = format!("token:{}", t.name);
                note_token_use(state, &hash);
                KeyCache::put(&state.keys.tokens, hash, actor.clone());
                Ok(Manager(actor))
            }
            None => Err(ApiError::unauthorized("management token not recognised")),
        }
    }
}

/// Records that a management token authenticated a request, at most once
/// per [`TOKEN_USE_INTERVAL`], in a task of its own: the request neither
/// waits for the write nor fails with it.
fn note_token_use(state: &AppState, hash: &str) {
    if !state.keys.token_use_due(hash) {
        return;
    }
    let store = state.store.clone();
    let hash = hash.to_string();
    tokio::spawn(async move {
        let now = chrono::Utc::now();
        let interval = chrono::Duration::from_std(TOKEN_USE_INTERVAL).unwrap_or_default();
        if let Err(e) = store.mark_token_used(&hash, now, now - interval).await {
            tracing::warn!(error = %e, "could not record when a management token was used");
        }
    });
}

fn header_value<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|v| !v.is_empty())
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = header_value(headers, "authorization")?;
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}
