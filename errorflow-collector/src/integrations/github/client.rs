//! A small client of GitHub's REST and GraphQL APIs: only the calls the
//! integration makes (issues, comments, contents, commits, blame).
//!
//! Requests carry the token, so the client never follows a redirect (a
//! redirect to another origin would hand the token over), and every request
//! has a timeout. Errors never contain the token or the request's URL.

use std::fmt;
use std::time::Duration;

use base64::Engine;
use reqwest::{StatusCode, Url};
use serde::Deserialize;
use serde_json::{json, Value};

use super::GithubError;

/// The API version the requests are written against.
pub const API_VERSION: &str = "2022-11-28";

/// The GitHub API of one repository, with one token.
#[derive(Clone)]
pub struct GithubClient {
    http: reqwest::Client,
    api_url: String,
    repo: String,
    token: String,
}

impl fmt::Debug for GithubClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GithubClient")
            .field("api_url", &self.api_url)
            .field("repo", &self.repo)
            .field("token", &"***")
            .finish()
    }
}

/// The HTTP client every GitHub call goes through: no redirects (a
/// redirect to another origin would hand the token over), no `Referer`,
/// timeouts, and the outgoing address policy at connect time.
pub fn http_client(
    timeout: Duration,
    policy: std::sync::Arc<crate::outbound::AddressPolicy>,
) -> reqwest::Client {
    crate::outbound::webhook_client(timeout, policy).unwrap_or_else(|_| reqwest::Client::new())
}

/// One line of a blame: the commit that last changed it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlameCommit {
    pub sha: String,
    pub author: String,
    /// RFC 3339, the commit's author date.
    pub date: String,
    /// The message's first line.
    pub message: String,
}

/// A run of lines last changed by one commit (1-based, inclusive).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlameRange {
    pub start: u32,
    pub end: u32,
    pub commit: BlameCommit,
}

#[derive(Deserialize)]
struct CreatedIssue {
    number: i64,
    html_url: String,
}

impl GithubClient {
    pub fn new(http: reqwest::Client, api_url: &str, repo: &str, token: &str) -> GithubClient {
        GithubClient {
            http,
            api_url: api_url.trim_end_matches('/').to_string(),
            repo: repo.to_string(),
            token: token.to_string(),
        }
    }

    pub fn repo(&self) -> &str {
        &self.repo
    }

    /// `{api}/repos/{owner}/{name}/{segments…}`, each segment percent-encoded.
    fn repo_url(&self, segments: &[&str]) -> Result<Url, GithubError> {
        let mut url = Url::parse(&self.api_url)
            .map_err(|e| GithubError::Config(format!("api_url is not a URL: {e}")))?;
        {
            let mut path = url
                .path_segments_mut()
                .map_err(|_| GithubError::Config("api_url cannot have a path".into()))?;
            path.pop_if_empty().push("repos");
            for part in self.repo.split('/') {
                path.push(part);
            }
            for s in segments {
                path.push(s);
            }
        }
        Ok(url)
    }

    /// GitHub's GraphQL endpoint next to this REST root: `api.github.com`
    /// serves it at `/graphql`, a GitHub Enterprise server at `/api/graphql`
    /// (its REST root being `/api/v3`).
    fn graphql_url(&self) -> String {
        match self.api_url.strip_suffix("/api/v3") {
            Some(host) => format!("{host}/api/graphql"),
            None => format!("{}/graphql", self.api_url),
        }
    }

    fn request(&self, method: reqwest::Method, url: Url) -> reqwest::RequestBuilder {
        self.http
            .request(method, url)
            .bearer_auth(&self.token)
            .header("accept", "application/vnd.github+json")
            .header("x-github-api-version", API_VERSION)
    }

    async fn send(&self, req: reqwest::RequestBuilder) -> Result<Value, GithubError> {
        let res = req.send().await.map_err(|e| {
            if e.is_timeout() {
                GithubError::Unavailable("GitHub did not answer in time".into())
            } else {
                GithubError::Unavailable(format!("cannot reach GitHub: {}", e.without_url()))
            }
        })?;
        let status = res.status();
        let text = res.text().await.unwrap_or_default();
        if !status.is_success() {
            let message = serde_json::from_str::<Value>(&text)
                .ok()
                .and_then(|v| v["message"].as_str().map(str::to_string))
                .unwrap_or_default();
            return Err(GithubError::from_status(status, &self.repo, &message));
        }
        if text.is_empty() {
            return Ok(Value::Null);
        }
        serde_json::from_str(&text).map_err(|e| {
            GithubError::Unavailable(format!("GitHub answered something that is not JSON: {e}"))
        })
    }

    /// Opens an issue; its number and page.
    pub async fn create_issue(
        &self,
        title: &str,
        body: &str,
    ) -> Result<(i64, String), GithubError> {
        let url = self.repo_url(&["issues"])?;
        let v = self
            .send(
                self.request(reqwest::Method::POST, url)
                    .json(&json!({"title": title, "body": body})),
            )
            .await?;
        let issue: CreatedIssue = serde_json::from_value(v).map_err(|e| {
            GithubError::Unavailable(format!("unexpected answer to issue creation: {e}"))
        })?;
        Ok((issue.number, issue.html_url))
    }

    /// Adds a comment to an issue; the comment's page.
    pub async fn comment(&self, number: i64, body: &str) -> Result<String, GithubError> {
        let n = number.to_string();
        let url = self.repo_url(&["issues", &n, "comments"])?;
        let v = self
            .send(
                self.request(reqwest::Method::POST, url)
                    .json(&json!({"body": body})),
            )
            .await?;
        Ok(v["html_url"].as_str().unwrap_or_default().to_string())
    }

    /// A file's text at `git_ref`; `None` when there is no such file (or it
    /// is not a file, or not UTF-8).
    pub async fn file(&self, path: &str, git_ref: &str) -> Result<Option<String>, GithubError> {
        let mut segments = vec!["contents"];
        segments.extend(path.split('/').filter(|s| !s.is_empty()));
        let mut url = self.repo_url(&segments)?;
        url.query_pairs_mut().append_pair("ref", git_ref);
        let v = match self.send(self.request(reqwest::Method::GET, url)).await {
            Ok(v) => v,
            Err(GithubError::NotFound(_)) => return Ok(None),
            Err(e) => return Err(e),
        };
        if v["type"] != "file" || v["encoding"] != "base64" {
            return Ok(None);
        }
        let b64: String = v["content"]
            .as_str()
            .unwrap_or_default()
            .chars()
            .filter(|c| !c.is_whitespace())
            .collect();
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(b64)
            .map_err(|e| GithubError::Unavailable(format!("file content is not base64: {e}")))?;
        Ok(String::from_utf8(bytes).ok())
    }

    /// Every file path at a commit (the recursive tree); `None` when GitHub
    /// truncated the listing (a very large repository).
    pub async fn tree(&self, commit: &str) -> Result<Option<Vec<String>>, GithubError> {
        let mut url = self.repo_url(&["git", "trees", commit])?;
        url.query_pairs_mut().append_pair("recursive", "1");
        let v = self.send(self.request(reqwest::Method::GET, url)).await?;
        if v["truncated"].as_bool() == Some(true) {
            return Ok(None);
        }
        Ok(v["tree"].as_array().map(|t| {
            t.iter()
                .filter(|e| e["type"] == "blob")
                .filter_map(|e| e["path"].as_str().map(str::to_string))
                .collect()
        }))
    }

    /// The repository's default branch.
    pub async fn default_branch(&self) -> Result<Option<String>, GithubError> {
        let url = self.repo_url(&[])?;
        let v = self.send(self.request(reqwest::Method::GET, url)).await?;
        Ok(v["default_branch"].as_str().map(str::to_string))
    }

    /// The commit a ref (tag, branch or SHA) names; `None` when none does.
    pub async fn commit_sha(&self, git_ref: &str) -> Result<Option<String>, GithubError> {
        let url = self.repo_url(&["commits", git_ref])?;
        match self.send(self.request(reqwest::Method::GET, url)).await {
            Ok(v) => Ok(v["sha"].as_str().map(str::to_string)),
            // 422: not a ref at all ("No commit found for SHA").
            Err(GithubError::NotFound(_)) => Ok(None),
            Err(GithubError::Status { status: 422, .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// The blame of a file at a commit, through the GraphQL API (the REST
    /// API has no blame).
    pub async fn blame(&self, commit: &str, path: &str) -> Result<Vec<BlameRange>, GithubError> {
        const QUERY: &str =
            "query($owner: String!, $name: String!, $expression: String!, $path: String!) { \
            repository(owner: $owner, name: $name) { object(expression: $expression) { \
            ... on Commit { blame(path: $path) { ranges { startingLine endingLine \
            commit { oid authoredDate messageHeadline author { name user { login } } } } } } } } }";
        let (owner, name) = self.repo.split_once('/').unwrap_or((&self.repo, ""));
        let url = Url::parse(&self.graphql_url())
            .map_err(|e| GithubError::Config(format!("api_url is not a URL: {e}")))?;
        let body = json!({"query": QUERY, "variables": {
            "owner": owner, "name": name, "expression": commit, "path": path}});
        let v = self
            .send(self.request(reqwest::Method::POST, url).json(&body))
            .await?;
        if let Some(errors) = v.get("errors").and_then(Value::as_array) {
            if !errors.is_empty() && v.pointer("/data/repository/object/blame").is_none() {
                let m = errors[0]["message"].as_str().unwrap_or("unknown error");
                return Err(GithubError::Status {
                    status: 200,
                    message: format!("GitHub's blame failed: {m}"),
                });
            }
        }
        let ranges = v
            .pointer("/data/repository/object/blame/ranges")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        Ok(ranges
            .iter()
            .filter_map(|r| {
                let c = &r["commit"];
                let author = c
                    .pointer("/author/user/login")
                    .and_then(Value::as_str)
                    .map(|l| format!("@{l}"))
                    .or_else(|| {
                        c.pointer("/author/name")
                            .and_then(Value::as_str)
                            .map(str::to_string)
                    })
                    .unwrap_or_default();
                Some(BlameRange {
                    start: u32::try_from(r["startingLine"].as_u64()?).ok()?,
                    end: u32::try_from(r["endingLine"].as_u64()?).ok()?,
                    commit: BlameCommit {
                        sha: c["oid"].as_str()?.to_string(),
                        author,
                        date: c["authoredDate"].as_str().unwrap_or_default().to_string(),
                        message: c["messageHeadline"]
                            .as_str()
                            .unwrap_or_default()
                            .to_string(),
                    },
                })
            })
            .collect())
    }
}

impl GithubError {
    /// What a refusal of GitHub's means for the person who set the link up.
    pub fn from_status(status: StatusCode, repo: &str, message: &str) -> GithubError {
        let said = if message.is_empty() {
            String::new()
        } else {
            format!(" (GitHub said: {})", super::issue::bound(message, 200))
        };
        match status {
            StatusCode::UNAUTHORIZED => GithubError::TokenRejected(format!(
                "GitHub refused the project's token (401): it is wrong, expired or revoked; \
                 set a new one{said}"
            )),
            StatusCode::NOT_FOUND => GithubError::NotFound(format!(
                "GitHub has no repository {repo} that the project's token can see (404){said}"
            )),
            StatusCode::FORBIDDEN => GithubError::Forbidden(format!(
                "the project's token may not do this on {repo} (403): it needs Issues: read and write \
                 and Contents: read{said}"
            )),
            s if s.is_server_error() || s == StatusCode::TOO_MANY_REQUESTS => {
                GithubError::Unavailable(format!("GitHub answered {}{said}", s.as_u16()))
            }
            s => GithubError::Status {
                status: s.as_u16(),
                message: format!("GitHub answered {}{said}", s.as_u16()),
            },
        }
    }
}
