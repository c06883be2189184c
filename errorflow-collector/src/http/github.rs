//! The GitHub integration's HTTP surface: a project's repository link
//! (`/api/v1/projects/{id}/github`), an incident's issue
//! (`/api/v1/groups/{id}/github-issue`) and GitHub's webhook
//! (`/integrations/github/webhook`). The work is in
//! [`crate::integrations::github`].

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::api::{ApiJson, ApiPath};
use super::{ApiError, AppState, Manager};
use crate::integrations::github::{self as gh, webhook, GithubError};
use crate::model::{GithubIssue, GithubLink};

/// The webhook's route, with its own body limit.
pub fn routes() -> Router<AppState> {
    Router::new().route(
        "/integrations/github/webhook",
        post(webhook_delivery).layer(DefaultBodyLimit::max(webhook::MAX_BODY)),
    )
}

/// A project's GitHub repository, as the API shows it: never the token or
/// the webhook secret, only whether they are set.
#[derive(Debug, Serialize, ToSchema)]
pub struct GithubLinkView {
    /// `owner/name`; `null` when the project has no repository.
    pub repo: Option<String>,
    pub api_url: Option<String>,
    pub token_set: bool,
    pub webhook_secret_set: bool,
}

impl GithubLinkView {
    pub fn of(link: Option<&GithubLink>) -> GithubLinkView {
        GithubLinkView {
            repo: link.map(|l| l.repo.clone()),
            api_url: link.map(|l| l.api_url.clone()),
            token_set: link.is_some(),
            webhook_secret_set: link.is_some_and(|l| l.webhook_secret.is_some()),
        }
    }
}

/// No `Debug`: it holds the token and the secret.
#[derive(Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SetGithubLink {
    /// The repository, `owner/name`.
    pub repo: String,
    /// A fine-grained personal access token for this repository with
    /// Issues: read and write, Contents: read, Metadata: read.
    pub token: String,
    /// The REST API root; default `https://api.github.com`, for GitHub
    /// Enterprise `https://HOST/api/v3`.
    pub api_url: Option<String>,
    /// The secret of the repository's webhook (`X-Hub-Signature-256`);
    /// without one, webhook deliveries for this project are refused.
    pub webhook_secret: Option<String>,
}

/// Checks a link as the API and the dashboard receive it.
pub fn validate_link(
    project_id: i64,
    repo: &str,
    token: &str,
    api_url: Option<&str>,
    webhook_secret: Option<&str>,
    policy: &crate::outbound::AddressPolicy,
) -> Result<GithubLink, String> {
    let repo = gh::validate_repo(repo)?.to_string();
    gh::validate_secret("token", token)?;
    let api_url = match api_url.map(str::trim).filter(|u| !u.is_empty()) {
        Some(u) => {
            let url = gh::validate_api_url(u)?;
            // Literal internal addresses are refused here; host names again
            // on each address they resolve to, when the client connects.
            let parsed = reqwest::Url::parse(&url).map_err(|e| format!("api_url: {e}"))?;
            crate::outbound::check_url(&parsed, policy).map_err(|e| format!("api_url: {e}"))?;
            url
        }
        None => gh::DEFAULT_API_URL.to_string(),
    };
    let webhook_secret = match webhook_secret.filter(|s| !s.is_empty()) {
        Some(s) => {
            gh::validate_secret("webhook_secret", s)?;
            Some(s.to_string())
        }
        None => None,
    };
    Ok(GithubLink {
        project_id,
        repo,
        api_url,
        token: token.to_string(),
        webhook_secret,
    })
}

async fn project_exists(state: &AppState, id: i64) -> Result<(), ApiError> {
    match state.store.get_project(id).await? {
        Some(_) => Ok(()),
        None => Err(ApiError::not_found(format!("no project with id {id}"))),
    }
}

/// The project's GitHub repository.
#[utoipa::path(get, path = "/api/v1/projects/{id}/github", tag = "github", security(("token" = [])),
    params(("id" = i64, Path, description = "project id")),
    responses((status = 200, body = GithubLinkView), (status = 404, body = super::error::ErrorBody)))]
pub async fn get_link(
    State(state): State<AppState>,
    _: Manager,
    ApiPath(id): ApiPath<i64>,
) -> Result<Json<GithubLinkView>, ApiError> {
    project_exists(&state, id).await?;
    let link = state.store.github_link(id).await?;
    Ok(Json(GithubLinkView::of(link.as_ref())))
}

/// Link the project to a GitHub repository (replacing any link).
#[utoipa::path(put, path = "/api/v1/projects/{id}/github", tag = "github", security(("token" = [])),
    params(("id" = i64, Path, description = "project id")),
    request_body = SetGithubLink,
    responses((status = 200, body = GithubLinkView), (status = 404, body = super::error::ErrorBody), (status = 422, body = super::error::ErrorBody)))]
pub async fn set_link(
    State(state): State<AppState>,
    Manager(actor): Manager,
    ApiPath(id): ApiPath<i64>,
    ApiJson(body): ApiJson<SetGithubLink>,
) -> Result<Json<GithubLinkView>, ApiError> {
    let link = validate_link(
        id,
        &body.repo,
        &body.token,
        body.api_url.as_deref(),
        body.webhook_secret.as_deref(),
        &state.webhook_policy,
    )
    .map_err(|m| ApiError::unprocessable("invalid_field", m))?;
    if !state.store.set_github_link(id, Some(&link)).await? {
        return Err(ApiError::not_found(format!("no project with id {id}")));
    }
    tracing::info!(project = id, repo = %link.repo, actor, "project linked to GitHub");
    Ok(Json(GithubLinkView::of(Some(&link))))
}

/// Unlink the project from its repository (issues already created stay on GitHub).
#[utoipa::path(delete, path = "/api/v1/projects/{id}/github", tag = "github", security(("token" = [])),
    params(("id" = i64, Path, description = "project id")),
    responses((status = 200, body = GithubLinkView), (status = 404, body = super::error::ErrorBody)))]
pub async fn remove_link(
    State(state): State<AppState>,
    Manager(actor): Manager,
    ApiPath(id): ApiPath<i64>,
) -> Result<Json<GithubLinkView>, ApiError> {
    if !state.store.set_github_link(id, None).await? {
        return Err(ApiError::not_found(format!("no project with id {id}")));
    }
    tracing::info!(project = id, actor, "project unlinked from GitHub");
    Ok(Json(GithubLinkView::of(None)))
}

impl From<GithubError> for ApiError {
    fn from(e: GithubError) -> ApiError {
        let m = e.to_string();
        match e {
            GithubError::NotLinked(_) => ApiError::unprocessable("github_not_linked", m),
            GithubError::TokenRejected(_) => ApiError::unprocessable("github_token_rejected", m),
            GithubError::NotFound(_) => ApiError::unprocessable("github_repo_not_found", m),
            GithubError::Forbidden(_) => ApiError::unprocessable("github_forbidden", m),
            GithubError::Status { .. } => {
                ApiError::new(StatusCode::BAD_GATEWAY, "github_refused", m)
            }
            GithubError::Unavailable(_) => {
                ApiError::new(StatusCode::BAD_GATEWAY, "github_unavailable", m)
            }
            GithubError::Busy => ApiError::new(StatusCode::CONFLICT, "github_issue_pending", m),
            GithubError::Config(_) => ApiError::unprocessable("github_config", m),
            GithubError::Store(s) => s.into(),
        }
    }
}

/// Open a GitHub issue for the incident in its project's repository: `201`
/// with the new issue, or `200` with the issue opened before (never a second).
#[utoipa::path(post, path = "/api/v1/groups/{id}/github-issue", tag = "github", security(("token" = [])),
    params(("id" = i64, Path, description = "incident id")),
    responses((status = 201, body = GithubIssue), (status = 200, body = GithubIssue),
        (status = 404, body = super::error::ErrorBody), (status = 409, body = super::error::ErrorBody),
        (status = 422, body = super::error::ErrorBody), (status = 502, body = super::error::ErrorBody)))]
pub async fn create_issue(
    State(state): State<AppState>,
    Manager(actor): Manager,
    ApiPath(id): ApiPath<i64>,
) -> Result<(StatusCode, Json<GithubIssue>), ApiError> {
    let (issue, created) = state
        .github
        .open_issue(state.store.as_ref(), &state.triage, &state.public_url, id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no incident with id {id}")))?;
    if created {
        tracing::info!(
            incident = id,
            actor,
            number = issue.number,
            "GitHub issue opened"
        );
    }
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(issue)))
}

/// The answer to a delivery GitHub made.
#[derive(Debug, Serialize, ToSchema)]
pub struct WebhookAnswer {
    /// `ignored`, `resolved`, `reopened` or `analysis_started`.
    pub outcome: &'static str,
    pub incident: Option<i64>,
    /// Why it was ignored.
    pub reason: Option<&'static str>,
}

/// GitHub's webhook (events `issues` and `issue_comment`), signed with the
/// project's webhook secret (`X-Hub-Signature-256`).
#[utoipa::path(post, path = "/integrations/github/webhook", tag = "github",
    request_body(content = Object, content_type = "application/json", description = "a GitHub webhook delivery"),
    responses((status = 200, body = WebhookAnswer), (status = 202, body = WebhookAnswer),
        (status = 400, body = super::error::ErrorBody), (status = 401, body = super::error::ErrorBody),
        (status = 413, body = super::error::ErrorBody)))]
pub async fn webhook_delivery(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<(StatusCode, Json<WebhookAnswer>), ApiError> {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let ctx = webhook::Context {
        github: state.github.clone(),
        store: state.store.clone(),
        triage: state.triage.clone(),
        public_url: state.public_url.clone(),
    };
    let outcome = webhook::handle(
        &ctx,
        header("x-github-event"),
        header("x-hub-signature-256"),
        &body,
    )
    .await
    .inspect_err(|e| {
        let result = match e {
            webhook::WebhookError::Unauthorized(_) => "unauthorized",
            webhook::WebhookError::BadRequest(_) => "invalid",
            webhook::WebhookError::Store(_) => "error",
        };
        metrics::counter!("errorflow_github_webhooks_total", "outcome" => result).increment(1);
    })
    .map_err(|e| match e {
        webhook::WebhookError::Unauthorized(m) => ApiError::unauthorized(m),
        webhook::WebhookError::BadRequest(m) => ApiError::bad_request("invalid_payload", m),
        webhook::WebhookError::Store(s) => s.into(),
    })?;
    use webhook::Outcome;
    let name = match &outcome {
        Outcome::Ignored(_) => "ignored",
        Outcome::Resolved(_) => "resolved",
        Outcome::Reopened(_) => "reopened",
        Outcome::AnalysisStarted(_) => "analysis_started",
    };
    metrics::counter!("errorflow_github_webhooks_total", "outcome" => name).increment(1);
    Ok(match outcome {
        Outcome::Ignored(why) => (
            StatusCode::OK,
            Json(WebhookAnswer {
                outcome: "ignored",
                incident: None,
                reason: Some(why),
            }),
        ),
        Outcome::Resolved(g) => (
            StatusCode::OK,
            Json(WebhookAnswer {
                outcome: "resolved",
                incident: Some(g),
                reason: None,
            }),
        ),
        Outcome::Reopened(g) => (
            StatusCode::OK,
            Json(WebhookAnswer {
                outcome: "reopened",
                incident: Some(g),
                reason: None,
            }),
        ),
        Outcome::AnalysisStarted(g) => (
            StatusCode::ACCEPTED,
            Json(WebhookAnswer {
                outcome: "analysis_started",
                incident: Some(g),
                reason: None,
            }),
        ),
    })
}
