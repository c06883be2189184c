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
pub mod nul;
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
    /// Queue mode: events go to the stream instead of the writer.
    pub queue: Option<crate::queue::Publisher>,
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
            queue: None,
            scrub: Arc::default(),
        }
    }

    /// Queue mode: events are published to the stream (answered once
    /// JetStream acknowledged them) and written by the writers.
    pub fn with_queue(mut self, publisher: crate::queue::Publisher) -> AppState {
        self.queue = Some(publisher);
        self
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
        if let Some(rules) = self.keys.get(&self.keys.scrub, &key) {
            return Ok(rules);
        }
        let fields = match self.store.project_scrub_fields(project_id).await {
            Ok(fields) => fields.unwrap_or_default(),
            // The database is unreachable: the rules last read still hold
            // (queue mode keeps taking events through an outage); without
            // them the event is refused rather than scrubbed by less.
            Err(e) => match KeyCache::get_stale(&self.keys.scrub, &key) {
                Some(rules) => return Ok(rules),
                None => return Err(e),
            },
        };
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
        if let Some(queue) = &self.queue {
            return match queue.publish(&events).await {
                Ok(()) => Ok(vec![crate::model::InsertOutcome::Queued; events.len()]),
                Err(e) => {
                    tracing::warn!(error = %e, "cannot queue events");
                    Err(crate::writer::WriteError::Unavailable)
                }
            };
        }
        let n = events.len();
        let outcomes = match self.writer.submit(events).await {
            Ok(outcomes) => outcomes,
            Err(crate::writer::WriteError::Store(e)) => {
                // A project deleted by another collector while this one
                // still trusted its cached key: the write failed on the
                // missing project (foreign keys; its transaction stored
                // nothing), and the key is refused as any unknown key is.
                if let Ok(None) = self.store.get_project(project_id).await {
                    self.forget_cached_keys();
                    crate::telemetry::rejected("forbidden", n);
                    return Err(crate::writer::WriteError::ProjectGone);
                }
                return Err(crate::writer::WriteError::Store(e));
            }
            Err(e) => return Err(e),
        };
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

    /// Trusts a looked-up key or token for `ttl` instead of
    /// [`KEY_CACHE_TTL`] (starts with an empty cache).
    pub fn with_key_cache_ttl(mut self, ttl: Duration) -> AppState {
        self.keys = Arc::new(KeyCache::with_ttl(ttl));
        self
    }

    /// Revokes (deletes) a management token for `actor` and forgets cached
    /// tokens, so that this collector refuses it at once (other collectors
    /// once their cache entry expires). The log names the token by name and
    /// id, never by its value. `None` when there is no such token.
    pub async fn revoke_token(
        &self,
        id: i64,
        actor: &str,
    ) -> Result<Option<crate::model::ApiToken>, StoreError> {
        let revoked = self.store.delete_token(id).await?;
        if let Some(t) = &revoked {
            self.forget_cached_keys();
            tracing::info!(
                token_id = t.id,
                token_name = %t.name,
                actor,
                "management token revoked"
            );
        }
        Ok(revoked)
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
        .layer(axum::middleware::from_fn(nul::refuse_nul_in_uri))
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

/// A queue writer's own endpoints: `/healthz`, `/metrics`, and `/readyz`,
/// which needs both the database and the queue (`nats`).
pub fn operations_router(state: AppState, nats: Option<async_nats::Client>) -> Router {
    let ready = move |State(state): State<AppState>| {
        let nats = nats.clone();
        async move {
            let database = state.store.ping().await.is_ok();
            let queue = nats.as_ref().is_none_or(|c| {
                matches!(
                    c.connection_state(),
                    async_nats::connection::State::Connected
                )
            });
            let up = |b: bool| if b { "up" } else { "down" };
            let body = serde_json::json!({
                "status": if database && queue { "ready" } else { "unavailable" },
                "queue": up(queue), "database": up(database)
            });
            let status = if database && queue {
                StatusCode::OK
            } else {
                StatusCode::SERVICE_UNAVAILABLE
            };
            (status, axum::Json(body))
        }
    };
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(ready))
        .route("/metrics", get(metrics))
        .fallback(not_found)
        .with_state(state)
}

/// Readiness: the database answers; in queue mode, the queue is reachable.
#[utoipa::path(get, path = "/readyz", tag = "operations",
    responses((status = 200, description = "`{\"status\": \"ready\"}`; in queue mode also `\"queue\"` and `\"database\"`, each `up` or `down`", body = serde_json::Value),
        (status = 503, description = "the database (the queue, in queue mode) is unreachable", body = error::ErrorBody)))]
async fn readyz(State(state): State<AppState>) -> Response {
    if let Some(queue) = &state.queue {
        // An ingest node needs the queue to accept events; the database
        // only for keys it has not cached and for the API, so with the
        // database down it still takes events and stays ready.
        let database = state.store.ping().await.is_ok();
        let up = |b: bool| if b { "up" } else { "down" };
        if !queue.connected() {
            tracing::warn!("readiness check failed: the queue is unreachable");
            let mut err = ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                "queue unreachable",
            );
            err.retry_after = Some(1);
            return err.into_response();
        }
        return axum::Json(serde_json::json!({
            "status": "ready", "queue": up(true), "database": up(database)
        }))
        .into_response();
    }
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

/// Caches key and token look-ups briefly: ingest checks a key per request,
/// the REST API a token. Only successful look-ups are cached, so a new key
/// works at once; a rotated key, a deleted project's key and a revoked token
/// stop working in the process that changed them at once, and in other
/// processes once their entry is older than the cache's TTL
/// ([`KEY_CACHE_TTL`] unless [`AppState::with_key_cache_ttl`] says otherwise).
struct KeyCache {
    projects: RwLock<HashMap<String, (Project, Instant)>>,
    tokens: RwLock<HashMap<String, (String, Instant)>>,
    /// When this process last recorded each token's use in the store.
    token_uses: RwLock<HashMap<String, Instant>>,
    /// When a key look-up last failed because the store did: for a few
    /// seconds after, a key seen lately is taken from the cache without
    /// asking (a look-up during an outage can wait for the pool's timeout).
    store_failed_at: RwLock<Option<Instant>>,
    /// Each project's scrubbing rules, by project id.
    scrub: RwLock<HashMap<String, (Arc<crate::pipeline::scrub::Rules>, Instant)>>,
    ttl: Duration,
}

impl Default for KeyCache {
    fn default() -> Self {
        KeyCache::with_ttl(KEY_CACHE_TTL)
    }
}

/// How often a token's `last_used_at` is written at most, per process (here)
/// and across processes (in the UPDATE's condition).
pub const TOKEN_USE_INTERVAL: Duration = Duration::from_secs(60);

/// How long a collector keeps trusting a key or token it has looked up: the
/// longest a change made by another collector (a rotated key, a deleted
/// project, a revoked token) takes to reach this one.
pub const KEY_CACHE_TTL: Duration = Duration::from_secs(10);
/// After a failed key look-up, keys seen lately are taken from the cache
/// for this long before the store is asked again.
const STORE_RETRY_AFTER: Duration = Duration::from_secs(5);
/// How long a key last confirmed by the store is accepted while the store
/// cannot be reached.
pub const KEY_CACHE_STALE_MAX: Duration = Duration::from_secs(24 * 3600);
const KEY_CACHE_MAX: usize = 10_000;

impl KeyCache {
    fn with_ttl(ttl: Duration) -> KeyCache {
        KeyCache {
            projects: RwLock::default(),
            tokens: RwLock::default(),
            token_uses: RwLock::default(),
            store_failed_at: RwLock::default(),
            scrub: RwLock::default(),
            ttl,
        }
    }

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

    fn get<T: Clone>(&self, map: &RwLock<HashMap<String, (T, Instant)>>, hash: &str) -> Option<T> {
        let map = map.read().unwrap_or_else(|e| e.into_inner());
        map.get(hash)
            .filter(|(_, at)| at.elapsed() < self.ttl)
            .map(|(v, _)| v.clone())
    }

    /// An entry however old, up to [`KEY_CACHE_STALE_MAX`]: for when the
    /// store cannot be asked.
    fn get_stale<T: Clone>(map: &RwLock<HashMap<String, (T, Instant)>>, hash: &str) -> Option<T> {
        let map = map.read().unwrap_or_else(|e| e.into_inner());
        map.get(hash)
            .filter(|(_, at)| at.elapsed() < KEY_CACHE_STALE_MAX)
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
    if let Some(p) = state.keys.get(&state.keys.projects, &hash) {
        return Ok(p);
    }
    // The database is unreachable: a key seen lately is still good (queue
    // mode keeps taking events through a database outage).
    let failed_lately = state
        .keys
        .store_failed_at
        .read()
        .unwrap_or_else(|e| e.into_inner())
        .is_some_and(|at| at.elapsed() < STORE_RETRY_AFTER);
    if failed_lately {
        if let Some(p) = KeyCache::get_stale(&state.keys.projects, &hash) {
            return Ok(p);
        }
    }
    let found = match state.store.project_by_key_hash(&hash).await {
        Ok(found) => found,
        Err(e) => {
            *state
                .keys
                .store_failed_at
                .write()
                .unwrap_or_else(|e| e.into_inner()) = Some(Instant::now());
            match KeyCache::get_stale(&state.keys.projects, &hash) {
                Some(p) => {
                    tracing::warn!(error = %e, "key checked against the cache only: the database failed");
                    return Ok(p);
                }
                None => return Err(e.into()),
            }
        }
    };
    match found {
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
        if let Some(actor) = state.keys.get(&state.keys.tokens, &hash) {
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
