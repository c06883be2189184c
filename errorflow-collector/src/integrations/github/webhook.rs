//! GitHub's webhook: `issues` closed/reopened on an incident's issue
//! resolves/reopens the incident; an `issue_comment` starting with
//! `/errorflow rca` from a maintainer runs the analysis and posts it.
//!
//! Every delivery must carry `X-Hub-Signature-256`, the HMAC-SHA256 of the
//! body with the webhook secret of a project linked to the payload's
//! repository, compared in constant time. Without it nothing happens.

use std::sync::Arc;

use chrono::Utc;
use hmac::{Hmac, Mac};
use serde::Deserialize;
use sha2::Sha256;

use super::issue::RCA_COMMAND;
use super::{Github, GithubError};
use crate::model::{GithubLink, Transition};
use crate::store::Store;
use crate::triage::Triage;

/// Largest delivery accepted (GitHub caps payloads at 25 MB; the events
/// acted upon are far smaller).
pub const MAX_BODY: usize = 1024 * 1024;

/// Comment authors who may ask for an analysis.
pub const MAINTAINERS: [&str; 3] = ["OWNER", "MEMBER", "COLLABORATOR"];

/// Whether `header` (`sha256=HEX`) is the HMAC-SHA256 of `body` under
/// `secret`. The comparison is constant-time (`Mac::verify_slice`).
pub fn verify_signature(secret: &str, body: &[u8], header: &str) -> bool {
    let Some(hex_sig) = header.trim().strip_prefix("sha256=") else {
        return false;
    };
    let Ok(sig) = hex::decode(hex_sig) else {
        return false;
    };
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(secret.as_bytes()) else {
        return false;
    };
    mac.update(body);
    mac.verify_slice(&sig).is_ok()
}

/// `sha256=HEX` of `body` under `secret`, as GitHub signs deliveries.
pub fn sign(secret: &str, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes any key");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

#[derive(Deserialize)]
struct Repository {
    full_name: String,
}

#[derive(Deserialize)]
struct User {
    login: String,
    #[serde(rename = "type", default)]
    kind: String,
}

#[derive(Deserialize)]
struct Issue {
    number: i64,
}

#[derive(Deserialize)]
struct Comment {
    #[serde(default)]
    body: String,
    #[serde(default)]
    author_association: String,
    user: User,
}

#[derive(Deserialize)]
struct Payload {
    #[serde(default)]
    action: String,
    issue: Option<Issue>,
    comment: Option<Comment>,
    sender: Option<User>,
}

/// Only the repository, to find whose secret signs the delivery.
#[derive(Deserialize)]
struct RepoOnly {
    repository: Repository,
}

/// What a delivery did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Nothing to do (another event, action, issue or author).
    Ignored(&'static str),
    Resolved(i64),
    Reopened(i64),
    /// The analysis runs in the background and will be posted on the issue.
    AnalysisStarted(i64),
}

/// Why a delivery was refused.
#[derive(Debug, thiserror::Error)]
pub enum WebhookError {
    #[error("{0}")]
    Unauthorized(&'static str),
    #[error("{0}")]
    BadRequest(String),
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
}

/// Everything a delivery may use.
#[derive(Clone)]
pub struct Context {
    pub github: Arc<Github>,
    pub store: Arc<dyn Store>,
    pub triage: Arc<Triage>,
    pub public_url: Arc<str>,
}

/// Handles one delivery. Nothing is read beyond the repository's name
/// before the signature is checked, and nothing at all is done without it.
pub async fn handle(
    ctx: &Context,
    event: Option<&str>,
    signature: Option<&str>,
    body: &[u8],
) -> Result<Outcome, WebhookError> {
    let signature = signature.ok_or(WebhookError::Unauthorized(
        "missing X-Hub-Signature-256: set the webhook's secret on GitHub and on the project",
    ))?;
    let repo: RepoOnly = serde_json::from_slice(body)
        .map_err(|_| WebhookError::Unauthorized("signature does not match"))?;
    let links = ctx
        .store
        .github_links_for_repo(&repo.repository.full_name)
        .await?;
    let link: GithubLink = links
        .into_iter()
        .find(|l| {
            l.webhook_secret
                .as_deref()
                .is_some_and(|s| verify_signature(s, body, signature))
        })
        .ok_or(WebhookError::Unauthorized("signature does not match"))?;
    let payload: Payload = serde_json::from_slice(body)
        .map_err(|e| WebhookError::BadRequest(format!("payload not understood: {e}")))?;
    let Some(event) = event else {
        return Err(WebhookError::BadRequest("missing X-GitHub-Event".into()));
    };
    let Some(issue) = &payload.issue else {
        return Ok(Outcome::Ignored("not an issue event"));
    };
    let group = ctx
        .store
        .group_by_github_issue(link.project_id, &link.repo, issue.number)
        .await?;
    let Some(group_id) = group else {
        return Ok(Outcome::Ignored("not the issue of an incident"));
    };
    match (event, payload.action.as_str()) {
        ("issues", action @ ("closed" | "reopened")) => {
            let login = payload
                .sender
                .as_ref()
                .map_or("unknown", |s| s.login.as_str());
            let login: String = login
                .chars()
                .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '[' | ']'))
                .take(60)
                .collect();
            let (t, verb) = if action == "closed" {
                (
                    Transition::Resolve {
                        reason: Some(format!("closed on GitHub by @{login}")),
                        in_next_release: false,
                    },
                    Outcome::Resolved(group_id),
                )
            } else {
                (
                    Transition::Reopen {
                        reason: Some(format!("reopened on GitHub by @{login}")),
                    },
                    Outcome::Reopened(group_id),
                )
            };
            ctx.store
                .transition(group_id, &t, &format!("github:{login}"), Utc::now())
                .await?;
            Ok(verb)
        }
        ("issue_comment", "created") => {
            let Some(comment) = &payload.comment else {
                return Ok(Outcome::Ignored("no comment"));
            };
            if !comment.body.trim_start().starts_with(RCA_COMMAND) {
                return Ok(Outcome::Ignored("not a command"));
            }
            if comment.user.kind == "Bot" {
                return Ok(Outcome::Ignored("comment by a bot"));
            }
            if !MAINTAINERS.contains(&comment.author_association.as_str()) {
                tracing::info!(incident = group_id, association = %comment.author_association,
                    "GitHub: analysis asked by a non-maintainer; ignored");
                return Ok(Outcome::Ignored("not a maintainer"));
            }
            let ctx = ctx.clone();
            let number = issue.number;
            tokio::spawn(async move {
                if let Err(e) = post_analysis(&ctx, &link, group_id, number).await {
                    tracing::warn!(incident = group_id, error = %e, "GitHub: analysis not posted");
                }
            });
            Ok(Outcome::AnalysisStarted(group_id))
        }
        _ => Ok(Outcome::Ignored("event not acted upon")),
    }
}

/// Runs the analysis of the incident through GitHub's API and posts it as
/// one comment on its issue. The repository and issue are those of the
/// stored link; nothing from the event or comment chooses them.
pub async fn post_analysis(
    ctx: &Context,
    link: &GithubLink,
    group_id: i64,
    number: i64,
) -> Result<(), GithubError> {
    let Some(group) = ctx.store.get_group(group_id).await? else {
        return Ok(());
    };
    let digest = ctx
        .triage
        .digest(group_id, Utc::now())
        .await
        .map_err(|e| GithubError::Config(e.to_string()))?
        .ok_or_else(|| GithubError::Config("the incident disappeared".into()))?;
    let client = ctx.github.client(link);
    let source = super::rca::GithubSource::new(&ctx.github, &client, &link.api_url);
    let ev = super::rca::gather(&source, &digest, group.last_release.as_deref()).await;
    let rca = super::rca::analyse(
        ctx.triage.analyst().as_ref(),
        ctx.triage.builtin_analyst(),
        &digest,
        &ev,
    )
    .await;
    let url = format!(
        "{}/incidents/{group_id}",
        ctx.public_url.trim_end_matches('/')
    );
    client
        .comment(number, &super::rca::markdown(&rca, Some(&url)))
        .await?;
    tracing::info!(incident = group_id, number, "GitHub: analysis posted");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_verify_only_with_the_right_secret_and_body() {
        let body = br#"{"zen":"hi"}"#;
        let sig = sign("s3cret", body);
        assert!(verify_signature("s3cret", body, &sig));
        assert!(!verify_signature("other", body, &sig));
        assert!(!verify_signature("s3cret", b"{}", &sig));
        assert!(!verify_signature(
            "s3cret",
            body,
            sig.trim_start_matches("sha256=")
        ));
        assert!(!verify_signature("s3cret", body, "sha256=zz"));
        assert!(!verify_signature("s3cret", body, ""));
    }
}
