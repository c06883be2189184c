//! The dashboard's GitHub parts: the project page's repository form, the
//! incident page's issue button, issue link and suspect commits.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};

use super::{CsrfForm, DashError};
use crate::http::github::{validate_link, GithubLinkView};
use crate::http::AppState;
use crate::integrations::github::rca::SuspectCommit;
use crate::integrations::github::GithubError;
use crate::model::GithubIssue;

/// What the incident page shows of GitHub.
#[derive(Debug, Default)]
pub struct GithubPanel {
    /// The incident's project has a repository.
    pub linked: bool,
    pub repo: String,
    pub issue: Option<GithubIssue>,
    /// Newest first, from GitHub's blame at the incident's release.
    pub suspects: Vec<SuspectCommit>,
    /// The web address of the repository, for commit links.
    pub repo_web: String,
    /// Why the last attempt to open the issue failed (a fixed text).
    pub error: Option<&'static str>,
}

impl GithubPanel {
    /// The panel of an incident; the suspect commits come from GitHub
    /// (cached per incident and release), and a GitHub failure only leaves
    /// them out.
    pub async fn of(
        state: &AppState,
        group: &crate::model::Group,
        error: &str,
    ) -> Result<GithubPanel, DashError> {
        let Some(link) = state.store.github_link(group.project_id).await? else {
            return Ok(GithubPanel::default());
        };
        let issue = state
            .store
            .github_issues(&[group.id])
            .await?
            .remove(&group.id);
        let suspects = state
            .github
            .suspects(&state.triage, &link, group)
            .await
            .unwrap_or_default();
        Ok(GithubPanel {
            linked: true,
            repo_web: crate::integrations::github::web_url(&link.api_url, &link.repo),
            repo: link.repo,
            issue,
            suspects,
            error: error_text(error),
        })
    }
}

/// The fixed message of an error code carried in the page's address.
fn error_text(code: &str) -> Option<&'static str> {
    Some(match code {
        "" => return None,
        "not_linked" => "This project has no GitHub repository: link one on the project's page.",
        "token_rejected" => "GitHub refused the project's token (401): it is wrong, expired or revoked. Set a new one on the project's page. No issue was created.",
        "repo_not_found" => "GitHub has no such repository that the project's token can see (404). Check the repository's name and the token's repository access on the project's page. No issue was created.",
        "forbidden" => "The project's token may not create issues (403): it needs Issues: read and write. No issue was created.",
        "pending" => "The issue is being created by another request; reload in a moment.",
        _ => "GitHub could not be reached or refused the request; no issue was created. Try again later.",
    })
}

/// `POST /incidents/{id}/github-issue`: opens (or finds) the incident's
/// issue, then shows the incident again, with the error when it failed.
pub async fn create_issue(
    State(state): State<AppState>,
    Path(id): Path<String>,
    form: CsrfForm,
) -> Result<Response, DashError> {
    let id: i64 = id
        .parse()
        .map_err(|_| DashError::NotFound("There is no such incident.".into()))?;
    let result = state
        .github
        .open_issue(state.store.as_ref(), &state.triage, &state.public_url, id)
        .await;
    let code = match result {
        Ok(Some((issue, created))) => {
            tracing::info!(incident = id, user = %form.user.name, number = issue.number, created, "GitHub issue from the dashboard");
            return Ok(
                Redirect::to(&format!("/incidents/{id}?notice=github-issue")).into_response(),
            );
        }
        Ok(None) => return Err(DashError::NotFound(format!("There is no incident #{id}."))),
        Err(GithubError::NotLinked(_)) => "not_linked",
        Err(GithubError::TokenRejected(_)) => "token_rejected",
        Err(GithubError::NotFound(_)) => "repo_not_found",
        Err(GithubError::Forbidden(_)) => "forbidden",
        Err(GithubError::Busy) => "pending",
        Err(GithubError::Store(e)) => return Err(e.into()),
        Err(e) => {
            tracing::warn!(incident = id, error = %e, "GitHub issue not created");
            "unavailable"
        }
    };
    Ok(Redirect::to(&format!("/incidents/{id}?github_error={code}")).into_response())
}

/// What the project page shows of GitHub.
#[derive(Debug)]
pub struct GithubForm {
    pub link: GithubLinkView,
    /// Why the settings just sent were refused.
    pub error: Option<String>,
}

impl GithubForm {
    pub async fn of(state: &AppState, project_id: i64) -> Result<GithubForm, DashError> {
        let link = state.store.github_link(project_id).await?;
        Ok(GithubForm {
            link: GithubLinkView::of(link.as_ref()),
            error: None,
        })
    }
}

/// `POST /projects/{id}/github`: links (`action=save`) or unlinks
/// (`action=remove`) the project. Refused settings show the page again with
/// the reason (422); nothing is kept of them.
pub async fn link(
    State(state): State<AppState>,
    Path(id): Path<String>,
    form: CsrfForm,
) -> Result<Response, DashError> {
    let missing = || DashError::NotFound("There is no such project.".into());
    let id: i64 = id.parse().map_err(|_| missing())?;
    let p = state.store.get_project(id).await?.ok_or_else(missing)?;
    let link = match form.fields.get("action") {
        Some("remove") => None,
        Some("save") => {
            let f = |k: &str| form.fields.get(k).unwrap_or_default();
            match validate_link(
                id,
                f("repo"),
                f("token"),
                Some(f("api_url")),
                Some(f("webhook_secret")),
                &state.webhook_policy,
            ) {
                Ok(l) => Some(l),
                Err(why) => {
                    let mut github = GithubForm::of(&state, id).await?;
                    github.error = Some(why);
                    let page =
                        super::pages::project_page_with(&state, &form.user, p, github).await?;
                    return Ok((StatusCode::UNPROCESSABLE_ENTITY, page).into_response());
                }
            }
        }
        _ => return Err(DashError::BadRequest("Unknown action.".into())),
    };
    if !state.store.set_github_link(id, link.as_ref()).await? {
        return Err(missing());
    }
    // Never the token or the secret.
    tracing::info!(project = id, user = %form.user.name, repo = link.as_ref().map(|l| l.repo.as_str()), "project's GitHub link changed from the dashboard");
    let notice = if link.is_some() {
        "github-saved"
    } else {
        "github-removed"
    };
    Ok(Redirect::to(&format!("/projects/{id}?notice={notice}")).into_response())
}
