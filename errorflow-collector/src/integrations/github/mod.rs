//! GitHub: a project's repository, an issue per incident, a webhook that
//! keeps incidents and issues in step, and a root-cause analysis that reads
//! the code around the incident's frames and the commits that last changed
//! them.
//!
//! - [`client`]: the REST and GraphQL calls (no redirects, timeouts).
//! - [`issue`]: the issue's title and body, and the escaping of untrusted
//!   text in anything posted to GitHub.
//! - [`webhook`]: signature verification and the events acted upon.
//! - [`rca`]: frames → files, releases → commits, suspect commits, the
//!   analysis and its Markdown.
//!
//! **Security**: text from events and comments is data. It reaches a model
//! only fenced as data, and what is posted back is one comment on the
//! issue the webhook named, with mentions, links and HTML neutralised. No
//! text can choose the repository, the issue or the action.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::Mutex;
use std::time::Duration;

use chrono::Utc;

use crate::model::{GithubIssue, GithubLink, IssueClaim};
use crate::store::{Store, StoreError};

pub mod client;
pub mod issue;
pub mod rca;
pub mod webhook;

pub use client::GithubClient;

/// The REST API root used when a link names none.
pub const DEFAULT_API_URL: &str = "https://api.github.com";

/// Errors of the GitHub integration, each saying what to do about it.
#[derive(Debug, thiserror::Error)]
pub enum GithubError {
    /// The project has no repository.
    #[error("{0}")]
    NotLinked(String),
    /// 401: the token is wrong, expired or revoked.
    #[error("{0}")]
    TokenRejected(String),
    /// 404: no such repository (or the token cannot see it).
    #[error("{0}")]
    NotFound(String),
    /// 403: the token lacks a permission.
    #[error("{0}")]
    Forbidden(String),
    /// GitHub could not be reached, timed out, or failed (5xx, 429).
    #[error("{0}")]
    Unavailable(String),
    /// Any other refusal.
    #[error("{message}")]
    Status { status: u16, message: String },
    /// Another request is creating the incident's issue right now.
    #[error(
        "the incident's GitHub issue is being created by another request; try again in a moment"
    )]
    Busy,
    #[error("invalid GitHub settings: {0}")]
    Config(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Checks a repository's full name, `owner/name`, as GitHub allows them.
pub fn validate_repo(repo: &str) -> Result<&str, String> {
    let repo = repo.trim();
    let Some((owner, name)) = repo.split_once('/') else {
        return Err(format!("repo {repo:?} is not owner/name"));
    };
    let owner_ok = !owner.is_empty()
        && owner.len() <= 39
        && owner.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        && !owner.starts_with('-');
    let name_ok = !name.is_empty()
        && name.len() <= 100
        && name != "."
        && name != ".."
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if !owner_ok || !name_ok {
        return Err(format!(
            "repo {repo:?} is not owner/name (letters, digits, '-', and '_' or '.' in the name)"
        ));
    }
    Ok(repo)
}

/// Checks the API root: an absolute `http`/`https` URL with a host, no
/// credentials, query or fragment. Returns it without a trailing `/`.
pub fn validate_api_url(url: &str) -> Result<String, String> {
    let url = url.trim();
    if url.is_empty() {
        return Err("api_url is empty".into());
    }
    if url.len() > 2048 {
        return Err("api_url is longer than 2048 bytes".into());
    }
    let parsed =
        reqwest::Url::parse(url).map_err(|e| format!("api_url {url:?} is not a URL: {e}"))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(format!(
            "api_url must be an http or https URL, not {}:",
            parsed.scheme()
        ));
    }
    if parsed.host_str().is_none_or(str::is_empty) {
        return Err("api_url has no host".into());
    }
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return Err("api_url must not hold credentials: the token goes in `token`".into());
    }
    if parsed.query().is_some() || parsed.fragment().is_some() {
        return Err("api_url must not have a query or fragment".into());
    }
    Ok(url.trim_end_matches('/').to_string())
}

/// Checks a token or secret: 1–1024 printable ASCII characters without spaces.
pub fn validate_secret(what: &str, value: &str) -> Result<(), String> {
    if value.is_empty() {
        return Err(format!("{what} is empty"));
    }
    if value.len() > 1024 {
        return Err(format!("{what} is longer than 1024 bytes"));
    }
    if !value.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(format!(
            "{what} holds spaces or characters that are not printable ASCII"
        ));
    }
    Ok(())
}

/// The web address of a repository, from its API root: `api.github.com` →
/// `https://github.com/owner/name`; a GitHub Enterprise server's
/// `https://HOST/api/v3` → `https://HOST/owner/name`; any other root is
/// taken as the web root too.
pub fn web_url(api_url: &str, repo: &str) -> String {
    let api = api_url.trim_end_matches('/');
    let web = if let Some(host) = api.strip_suffix("/api/v3") {
        host.to_string()
    } else if let Some(rest) = api.strip_prefix("https://api.") {
        format!("https://{rest}")
    } else {
        api.to_string()
    };
    format!("{web}/{repo}")
}

/// The GitHub side of the collector: one HTTP client for every call, and
/// blame results cached per commit.
pub struct Github {
    http: reqwest::Client,
    /// (api_url, repo, commit, path) → blame ranges. Blame at a commit never changes.
    blame_cache: Mutex<HashMap<BlameKey, Vec<client::BlameRange>>>,
    /// (project, repo, incident, release) → suspect commits, with when they were read.
    suspects_cache: Mutex<HashMap<SuspectsKey, (std::time::Instant, Vec<rca::SuspectCommit>)>>,
}

/// (api_url, repo, commit, path).
type BlameKey = (String, String, String, String);
/// (project, repo, incident, release).
type SuspectsKey = (i64, String, i64, String);

/// How long an incident page's suspect commits are kept before GitHub is
/// asked again (new events may bring a new release, a tag may appear).
pub const SUSPECTS_TTL: Duration = Duration::from_secs(600);

impl std::fmt::Debug for Github {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Github").finish_non_exhaustive()
    }
}

/// Blame results kept at most (entries are one file at one commit each).
const BLAME_CACHE_MAX: usize = 512;

/// A creation claim older than this may be taken over (its creator died):
/// longer than any GitHub call of a creation, timeouts included.
const CLAIM_STALE_AFTER: chrono::Duration = chrono::Duration::minutes(2);

/// How long one GitHub call may take.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(20);

impl Default for Github {
    fn default() -> Self {
        Github::new(DEFAULT_TIMEOUT, Arc::default())
    }
}

impl Github {
    /// A project's `api_url` is the operator's or a management user's
    /// choice, so GitHub calls follow the same address policy as alert
    /// webhooks: no internal address unless `--allow-webhook-hosts` lists
    /// it, checked on the resolved address when connecting.
    pub fn new(timeout: Duration, policy: Arc<crate::outbound::AddressPolicy>) -> Github {
        Github {
            http: client::http_client(timeout, policy),
            blame_cache: Mutex::new(HashMap::new()),
            suspects_cache: Mutex::new(HashMap::new()),
        }
    }

    pub fn client(&self, link: &GithubLink) -> GithubClient {
        GithubClient::new(self.http.clone(), &link.api_url, &link.repo, &link.token)
    }

    /// Blame of a file at a commit, from the cache or GitHub.
    pub async fn blame(
        &self,
        client: &GithubClient,
        api_url: &str,
        commit: &str,
        path: &str,
    ) -> Result<Vec<client::BlameRange>, GithubError> {
        let key = (
            api_url.to_string(),
            client.repo().to_string(),
            commit.to_string(),
            path.to_string(),
        );
        if let Some(hit) = self
            .blame_cache
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&key)
        {
            return Ok(hit.clone());
        }
        let ranges = client.blame(commit, path).await?;
        let mut cache = self.blame_cache.lock().unwrap_or_else(|e| e.into_inner());
        if cache.len() >= BLAME_CACHE_MAX {
            cache.clear();
        }
        cache.insert(key, ranges.clone());
        Ok(ranges)
    }

    /// The suspect commits of an incident, for its page: read through
    /// GitHub once per incident and release (the release names the code)
    /// and kept for [`SUSPECTS_TTL`].
    pub async fn suspects(
        &self,
        triage: &crate::triage::Triage,
        link: &GithubLink,
        group: &crate::model::Group,
    ) -> Result<Vec<rca::SuspectCommit>, GithubError> {
        let key = (
            link.project_id,
            link.repo.clone(),
            group.id,
            group.last_release.clone().unwrap_or_default(),
        );
        if let Some((at, hit)) = self
            .suspects_cache
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&key)
        {
            if at.elapsed() < SUSPECTS_TTL {
                return Ok(hit.clone());
            }
        }
        let digest = triage
            .digest(group.id, Utc::now())
            .await
            .map_err(|e| GithubError::Config(e.to_string()))?
            .ok_or_else(|| GithubError::Config("the incident disappeared".into()))?;
        let client = self.client(link);
        let source = rca::GithubSource::new(self, &client, &link.api_url);
        let ev = rca::gather(&source, &digest, group.last_release.as_deref()).await;
        let mut cache = self
            .suspects_cache
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if cache.len() >= BLAME_CACHE_MAX {
            cache.clear();
        }
        cache.insert(key, (std::time::Instant::now(), ev.suspects.clone()));
        Ok(ev.suspects)
    }

    /// The incident's GitHub issue, created on the first call: `(issue,
    /// true)` when this call created it. Of concurrent calls, only one
    /// creates it (the store's claim); a call that finds the creation under
    /// way gets [`GithubError::Busy`]. When GitHub refuses, nothing is kept.
    pub async fn open_issue(
        &self,
        store: &dyn Store,
        triage: &crate::triage::Triage,
        public_url: &str,
        group_id: i64,
    ) -> Result<Option<(GithubIssue, bool)>, GithubError> {
        let Some(group) = store.get_group(group_id).await? else {
            return Ok(None);
        };
        let link = store.github_link(group.project_id).await?.ok_or_else(|| {
            GithubError::NotLinked(format!(
                "project {} has no GitHub repository: link one with PUT /api/v1/projects/{}/github",
                group.project_id, group.project_id
            ))
        })?;
        let now = Utc::now();
        match store
            .claim_github_issue(group_id, &link.repo, now, now - CLAIM_STALE_AFTER)
            .await?
        {
            IssueClaim::Existing(issue) => return Ok(Some((issue, false))),
            IssueClaim::Pending => return Err(GithubError::Busy),
            IssueClaim::Claimed => {}
        }
        let created = self.create_issue(triage, public_url, &link, &group).await;
        match created {
            Ok((number, url)) => {
                if let Err(e) = store.finish_github_issue(group_id, number, &url).await {
                    // The issue exists on GitHub; the claim stays, so no
                    // second issue is opened before it goes stale.
                    tracing::error!(incident = group_id, number, error = %e, "GitHub issue created but not recorded");
                    return Err(e.into());
                }
                tracing::info!(incident = group_id, repo = %link.repo, number, "GitHub issue created");
                Ok(Some((
                    GithubIssue {
                        repo: link.repo.clone(),
                        number,
                        url,
                    },
                    true,
                )))
            }
            Err(e) => {
                if let Err(release) = store.release_github_issue(group_id).await {
                    tracing::error!(incident = group_id, error = %release, "cannot release a GitHub issue claim");
                }
                Err(e)
            }
        }
    }

    async fn create_issue(
        &self,
        triage: &crate::triage::Triage,
        public_url: &str,
        link: &GithubLink,
        group: &crate::model::Group,
    ) -> Result<(i64, String), GithubError> {
        let client = self.client(link);
        let digest = triage
            .digest(group.id, Utc::now())
            .await
            .map_err(|e| match e {
                crate::triage::TriageError::Store(s) => GithubError::Store(s),
                other => GithubError::Config(other.to_string()),
            })?
            .ok_or_else(|| GithubError::Config("the incident disappeared".into()))?;
        let source = rca::GithubSource::new(self, &client, &link.api_url);
        let evidence = rca::gather(&source, &digest, group.last_release.as_deref()).await;
        let body = issue::issue_body(
            &digest,
            group.last_release.as_deref(),
            &evidence,
            &web_url(&link.api_url, &link.repo),
            &format!(
                "{}/incidents/{}",
                public_url.trim_end_matches('/'),
                group.id
            ),
        );
        client
            .create_issue(&issue::issue_title(&group.title), &body)
            .await
    }
}
