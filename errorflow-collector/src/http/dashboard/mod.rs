//! The web dashboard, served at `/`: server-rendered askama templates
//! (`errorflow-collector/templates/dashboard/`, compiled into the binary and
//! HTML-escaped by default) and embedded assets (`errorflow-collector/assets/`).
//!
//! - `auth.rs` — passwords, sessions, CSRF, sign-in throttling (pure parts).
//! - `views.rs` — relative times, SVG charts, badges (pure).
//! - `pages.rs` — the handlers.
//!
//! **Architecture Invariant**: every page but `/login` needs a session;
//! every POST carries the session's CSRF token in a `csrf` field and is
//! refused with 403 without it. Pages are sent with a Content-Security-Policy
//! that forbids inline script and style, so an injected `<script>` could not
//! run even if escaping failed.

use std::net::{IpAddr, SocketAddr};

use askama::Template;
use axum::extract::{ConnectInfo, FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::Router;
use chrono::Utc;

use super::AppState;
use crate::store::StoreError;

pub mod auth;
pub mod github;
pub mod pages;
pub mod views;

/// Password verifications (argon2, about 19 MiB of memory each) running
/// at once, at most.
pub const VERIFICATIONS: usize = 4;
/// How long a sign-in waits for a verification slot before it gets 429.
pub const VERIFY_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

/// Dashboard state shared by the handlers.
pub struct DashState {
    pub throttle: auth::Throttle,
    /// Cookies get `Secure` when the public URL is https.
    pub secure_cookies: bool,
    /// Slots for password verifications: a burst of sign-ins queues here
    /// (for at most `verify_wait`) instead of taking memory without bound.
    pub verifications: tokio::sync::Semaphore,
    pub verify_wait: std::time::Duration,
}

impl DashState {
    pub fn new(public_url: &str) -> DashState {
        DashState {
            throttle: auth::Throttle::default(),
            secure_cookies: public_url.starts_with("https://"),
            verifications: tokio::sync::Semaphore::new(VERIFICATIONS),
            verify_wait: VERIFY_WAIT,
        }
    }
}

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/", get(pages::list))
        .route("/poll", get(pages::poll))
        .route("/login", get(pages::login_form).post(pages::login))
        .route("/logout", post(pages::logout))
        .route("/incidents/bulk", post(pages::bulk))
        .route("/incidents/{id}", get(pages::detail))
        .route("/incidents/{id}/resolve", post(pages::resolve))
        .route("/incidents/{id}/quiet", post(pages::quiet))
        .route("/incidents/{id}/reopen", post(pages::reopen))
        .route("/incidents/{id}/summarize", post(pages::summarize))
        .route("/incidents/{id}/priority", post(pages::set_priority))
        .route("/incidents/{id}/delete", post(pages::delete))
        .route("/incidents/{id}/github-issue", post(github::create_issue))
        .route("/events", get(pages::events))
        .route("/projects", get(pages::projects))
        .route("/projects/{id}", get(pages::project))
        .route("/projects/{id}/rotate-key", post(pages::rotate_key))
        .route("/projects/{id}/alert-webhook", post(pages::alert_webhook))
        .route("/projects/{id}/scrub-fields", post(pages::scrub_fields))
        .route("/projects/{id}/github", post(github::link))
        .route("/projects/{id}/delete", post(pages::delete_project))
        .route("/projects/{id}/test-event", post(pages::test_event))
        .layer(axum::middleware::map_response(security_headers))
        .route("/assets/app.css", get(css))
        .route("/assets/app.js", get(js))
        .route("/assets/favicon.svg", get(favicon))
}

/// The Content-Security-Policy of every page: scripts and styles only from
/// this origin's files, no framing, forms only to this origin.
pub const CSP: &str =
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

async fn security_headers(mut res: Response) -> Response {
    let h = res.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    // Pages show private data and one-time secrets: never cache them.
    h.entry(header::CACHE_CONTROL)
        .or_insert(HeaderValue::from_static("no-store"));
    res
}

const APP_CSS: &str = include_str!("../../../assets/app.css");
const APP_JS: &str = include_str!("../../../assets/app.js");
const FAVICON: &str = include_str!("../../../assets/favicon.svg");

fn asset(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "public, max-age=3600"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
        body,
    )
        .into_response()
}

async fn css() -> Response {
    asset("text/css; charset=utf-8", APP_CSS)
}

async fn js() -> Response {
    asset("text/javascript; charset=utf-8", APP_JS)
}

async fn favicon() -> Response {
    asset("image/svg+xml", FAVICON)
}

/// What every page's layout needs.
#[derive(Debug, Clone, Default)]
pub struct Layout {
    pub title: String,
    /// Empty on pages shown without a session (no navigation then).
    pub user: String,
    pub csrf: String,
    pub nav: &'static str,
    pub notice: Option<&'static str>,
}

/// A failure of a dashboard request, answered with an HTML page (or a
/// redirect to the sign-in page).
#[derive(Debug)]
pub enum DashError {
    /// No valid session: sign in, then come back to `next`.
    SignIn {
        next: String,
    },
    Forbidden(String),
    NotFound(String),
    BadRequest(String),
    Internal,
}

#[derive(Template)]
#[template(path = "dashboard/error.html")]
struct ErrorPage {
    l: Layout,
    heading: String,
    message: String,
}

impl IntoResponse for DashError {
    fn into_response(self) -> Response {
        let (status, heading, message) = match self {
            DashError::SignIn { next } => {
                let target = format!("/login{}", views::query_string(&[("next", &next)]));
                return Redirect::to(&target).into_response();
            }
            DashError::Forbidden(m) => (StatusCode::FORBIDDEN, "Forbidden", m),
            DashError::NotFound(m) => (StatusCode::NOT_FOUND, "Not found", m),
            DashError::BadRequest(m) => (StatusCode::BAD_REQUEST, "Bad request", m),
            DashError::Internal => (
                StatusCode::INTERNAL_SERVER_ERROR,
                "Something went wrong",
                "The collector could not complete this request; its log has the details."
                    .to_string(),
            ),
        };
        let page = ErrorPage {
            l: Layout {
                title: heading.to_string(),
                ..Layout::default()
            },
            heading: heading.to_string(),
            message,
        };
        let mut res = render(&page);
        *res.status_mut() = status;
        res
    }
}

impl From<StoreError> for DashError {
    fn from(e: StoreError) -> DashError {
        match e {
            StoreError::InvalidCursor => DashError::BadRequest("invalid page cursor".into()),
            other => {
                tracing::error!(error = %other, "dashboard: storage failed");
                DashError::Internal
            }
        }
    }
}

/// Renders a template, or a generic 500 when rendering fails.
pub fn render<T: Template>(t: &T) -> Response {
    match t.render() {
        Ok(html) => Html(html).into_response(),
        Err(e) => {
            tracing::error!(error = %e, "dashboard: template failed");
            (StatusCode::INTERNAL_SERVER_ERROR, "internal error").into_response()
        }
    }
}

/// The signed-in person of a request.
#[derive(Debug, Clone)]
pub struct CurrentUser {
    pub user_id: i64,
    pub name: String,
    /// The session's CSRF token, for the forms of the page.
    pub csrf: String,
    /// Hash of the session cookie (to end the session).
    pub session_hash: String,
}

impl CurrentUser {
    pub fn actor(&self) -> String {
        format!("user:{}", self.name)
    }

    pub fn layout(&self, title: impl Into<String>, nav: &'static str) -> Layout {
        Layout {
            title: title.into(),
            user: self.name.clone(),
            csrf: self.csrf.clone(),
            nav,
            notice: None,
        }
    }
}

fn requested_path(parts: &Parts) -> String {
    if parts.method == Method::GET {
        parts
            .uri
            .path_and_query()
            .map(|p| p.as_str().to_string())
            .unwrap_or_else(|| "/".into())
    } else {
        "/".into()
    }
}

impl FromRequestParts<AppState> for CurrentUser {
    type Rejection = DashError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, DashError> {
        let sign_in = || DashError::SignIn {
            next: requested_path(parts),
        };
        let Some(token) = auth::cookie(&parts.headers, auth::SESSION_COOKIE) else {
            return Err(sign_in());
        };
        let hash = auth::session_hash(token);
        match state.store.session_by_hash(&hash, Utc::now()).await? {
            Some(s) => Ok(CurrentUser {
                user_id: s.user_id,
                name: s.user_name,
                csrf: auth::csrf_token(token),
                session_hash: hash,
            }),
            None => Err(sign_in()),
        }
    }
}

/// The client's address, when the server was started with connection info.
pub fn client_ip(parts: &Parts) -> Option<IpAddr> {
    parts
        .extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip())
}

/// Largest form body accepted.
const MAX_FORM_BYTES: usize = 64 * 1024;

/// A url-encoded form body as name/value pairs (repeated names kept).
#[derive(Debug, Default)]
pub struct FormFields(pub Vec<(String, String)>);

impl FormFields {
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.0
            .iter()
            .filter(move |(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn parse(body: &[u8]) -> FormFields {
        FormFields(
            form_urlencoded::parse(body)
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect(),
        )
    }

    async fn read(req: Request) -> Result<FormFields, DashError> {
        let bytes = axum::body::to_bytes(req.into_body(), MAX_FORM_BYTES)
            .await
            .map_err(|_| DashError::BadRequest("form too large".into()))?;
        let fields = FormFields::parse(&bytes);
        // See `http::nul`: Postgres cannot store a NUL in text.
        if let Some(name) = crate::http::nul::nul_in_form(&fields.0) {
            return Err(DashError::BadRequest(format!(
                "The form field {name:?} contains a NUL byte, which is not allowed."
            )));
        }
        Ok(fields)
    }
}

/// A state-changing form from a signed-in person whose `csrf` field matches
/// their session. Without a session: redirect to sign in; with a missing or
/// wrong token: 403.
pub struct CsrfForm {
    pub user: CurrentUser,
    pub fields: FormFields,
}

impl FromRequest<AppState> for CsrfForm {
    type Rejection = DashError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, DashError> {
        let (mut parts, body) = req.into_parts();
        let user = CurrentUser::from_request_parts(&mut parts, state).await?;
        let fields = FormFields::read(Request::from_parts(parts, body)).await?;
        let sent = fields.get("csrf").unwrap_or_default();
        if !auth::constant_time_eq(sent, &user.csrf) {
            tracing::warn!(user = %user.name, "dashboard: form refused: missing or wrong CSRF token");
            return Err(DashError::Forbidden(
                "This form has expired or did not come from this site. Go back, reload the page and try again."
                    .into(),
            ));
        }
        Ok(CsrfForm { user, fields })
    }
}

/// A form body without session checks (the sign-in form checks its own token).
pub struct PlainForm {
    pub parts: Parts,
    pub fields: FormFields,
}

impl FromRequest<AppState> for PlainForm {
    type Rejection = DashError;

    async fn from_request(req: Request, _state: &AppState) -> Result<Self, DashError> {
        let (parts, body) = req.into_parts();
        let fields = FormFields::read(Request::from_parts(parts.clone(), body)).await?;
        Ok(PlainForm { parts, fields })
    }
}

/// Notices shown after a redirect, chosen by a fixed key so that no text
/// from the URL is ever reflected.
pub fn notice(key: Option<&str>) -> Option<&'static str> {
    Some(match key? {
        "resolved" => "Incident resolved.",
        "quieted" => "Incident quieted.",
        "reopened" => "Incident reopened.",
        "deleted" => "Incident deleted with its events.",
        "project-deleted" => {
            "Project deleted with its incidents and events; its key no longer works."
        }
        "bulk" => "Selected incidents updated.",
        "test" => "Test error sent through the ingest pipeline.",
        "webhook-saved" => "Alert webhook saved: this project's alerts go there from now on.",
        "webhook-removed" => "Alert webhook removed.",
        "scrub-saved" => "Scrubbed fields saved: events received from now on are scrubbed of them.",
        "github-saved" => "GitHub repository saved.",
        "github-removed" => "GitHub repository unlinked; issues already created stay on GitHub.",
        "github-issue" => "The incident's GitHub issue is linked below.",
        "summarize" => "Triage requested; it appears here when ready.",
        "priority" => "Priority and severity saved; triage keeps them until you clear them.",
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_pages_escape_their_message() {
        let res = DashError::NotFound("<script>alert(1)</script>".into()).into_response();
        assert_eq!(res.status(), StatusCode::NOT_FOUND);
        let page = ErrorPage {
            l: Layout::default(),
            heading: "x".into(),
            message: "<script>alert(1)</script>".into(),
        }
        .render()
        .unwrap();
        assert!(!page.contains("<script>alert(1)"), "{page}");
        assert!(
            page.contains("&#60;script&#62;") || page.contains("&lt;script&gt;"),
            "{page}"
        );
    }

    #[test]
    fn sign_in_redirect_keeps_the_page() {
        let res = DashError::SignIn {
            next: "/incidents/3?event=a b".into(),
        }
        .into_response();
        assert_eq!(res.status(), StatusCode::SEE_OTHER);
        assert_eq!(
            res.headers()[header::LOCATION],
            "/login?next=%2Fincidents%2F3%3Fevent%3Da%20b"
        );
    }

    #[test]
    fn forms_keep_repeated_fields() {
        let f = FormFields::parse(b"ids=1&ids=2&action=resolve&csrf=x%2By");
        assert_eq!(f.all("ids").collect::<Vec<_>>(), vec!["1", "2"]);
        assert_eq!(f.get("csrf"), Some("x+y"));
        assert_eq!(notice(Some("resolved")), Some("Incident resolved."));
        assert_eq!(notice(Some("<b>")), None);
    }
}
