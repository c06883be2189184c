//! The dashboard through the real router (`oneshot`, no socket) on both
//! backends, by name: `sqlite::…` and `postgres::…`. Events are ingested
//! through the real ingest endpoint, so pages show what the pipeline and
//! store really produce.

mod common;

use std::ops::{Deref, DerefMut};

use axum::body::Body;
use axum::http::{header, Request, StatusCode};
use errorflow_collector::credentials;
use errorflow_collector::http::dashboard::auth;
use errorflow_collector::model::GroupStatus;
use serde_json::{json, Value};

use common::TestApp;

const PASSWORD: &str = "correct horse battery";

/// The common app (project `shop`) with a dashboard user, and its browser session.
struct Dash {
    t: TestApp,
    /// `ef_session=…` once signed in.
    session: Option<String>,
    csrf: String,
}

impl Deref for Dash {
    type Target = TestApp;
    fn deref(&self) -> &TestApp {
        &self.t
    }
}

impl DerefMut for Dash {
    fn deref_mut(&mut self) -> &mut TestApp {
        &mut self.t
    }
}

struct Page {
    status: StatusCode,
    headers: axum::http::HeaderMap,
    body: String,
}

impl Page {
    fn location(&self) -> &str {
        self.headers
            .get(header::LOCATION)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
    }

    fn cookie(&self, name: &str) -> Option<String> {
        self.headers
            .get_all(header::SET_COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .find(|c| c.starts_with(&format!("{name}=")))
            .map(str::to_string)
    }
}

fn field(html: &str, name: &str) -> String {
    let marker = format!("name=\"{name}\" value=\"");
    let start = html
        .find(&marker)
        .unwrap_or_else(|| panic!("no field {name}"))
        + marker.len();
    html[start..start + html[start..].find('"').unwrap()].to_string()
}

async fn dash(db: common::TestDb) -> Dash {
    let t = TestApp::new(db, "shop").await;
    let hash = auth::hash_password(PASSWORD).unwrap();
    t.state
        .store
        .create_user("admin", &hash)
        .await
        .unwrap()
        .unwrap();
    Dash {
        t,
        session: None,
        csrf: String::new(),
    }
}

impl Dash {
    async fn send(&self, req: Request<Body>) -> Page {
        let (status, headers, bytes) = self.t.send_raw(req).await;
        Page {
            status,
            headers,
            body: String::from_utf8_lossy(&bytes).into_owned(),
        }
    }

    async fn get(&self, uri: &str) -> Page {
        let mut req = Request::get(uri);
        if let Some(c) = &self.session {
            req = req.header(header::COOKIE, c);
        }
        self.send(req.body(Body::empty()).unwrap()).await
    }

    async fn post_form(&self, uri: &str, pairs: &[(&str, &str)]) -> Page {
        let body: String = form_urlencoded::Serializer::new(String::new())
            .extend_pairs(pairs)
            .finish();
        let mut req =
            Request::post(uri).header(header::CONTENT_TYPE, "application/x-www-form-urlencoded");
        if let Some(c) = &self.session {
            req = req.header(header::COOKIE, c);
        }
        self.send(req.body(Body::from(body)).unwrap()).await
    }

    /// A POST with this session's CSRF token.
    async fn post(&self, uri: &str, pairs: &[(&str, &str)]) -> Page {
        let mut all = vec![("csrf", self.csrf.as_str())];
        all.extend_from_slice(pairs);
        self.post_form(uri, &all).await
    }

    async fn try_sign_in(&self, user: &str, password: &str) -> Page {
        let form = self
            .send(Request::get("/login").body(Body::empty()).unwrap())
            .await;
        assert_eq!(form.status, StatusCode::OK);
        let cookie = form
            .cookie(auth::LOGIN_CSRF_COOKIE)
            .expect("login csrf cookie");
        let cookie = cookie.split(';').next().unwrap().to_string();
        let token = field(&form.body, "csrf");
        let body: String = form_urlencoded::Serializer::new(String::new())
            .extend_pairs([
                ("csrf", token.as_str()),
                ("username", user),
                ("password", password),
                ("next", "/"),
            ])
            .finish();
        self.send(
            Request::post("/login")
                .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
                .header(header::COOKIE, cookie)
                .body(Body::from(body))
                .unwrap(),
        )
        .await
    }

    async fn sign_in(&mut self) {
        let res = self.try_sign_in("admin", PASSWORD).await;
        assert_eq!(res.status, StatusCode::SEE_OTHER, "{}", res.body);
        let cookie = res.cookie(auth::SESSION_COOKIE).expect("session cookie");
        assert!(
            cookie.contains("HttpOnly") && cookie.contains("SameSite=Lax"),
            "{cookie}"
        );
        self.session = Some(cookie.split(';').next().unwrap().to_string());
        let page = self.get("/").await;
        assert_eq!(page.status, StatusCode::OK, "{}", page.body);
        self.csrf = field(&page.body, "csrf");
    }

    /// Sends one event through the seed's ingest endpoint; returns its incident.
    async fn ingest(&self, service: &str, error_type: &str, message: &str) -> i64 {
        let res = self
            .send(
                Request::post("/errors/custom")
                    .header(header::CONTENT_TYPE, "application/json")
                    .header("x-errorflow-key", &self.key)
                    .body(Body::from(
                        json!({"service": service, "error_type": error_type, "message": message, "path": "/x", "env": "prod"})
                            .to_string(),
                    ))
                    .unwrap(),
            )
            .await;
        assert_eq!(res.status, StatusCode::CREATED, "{}", res.body);
        let v: Value = serde_json::from_str(&res.body).unwrap();
        v["group_id"].as_i64().unwrap()
    }

    async fn status_of(&self, id: i64) -> GroupStatus {
        self.state
            .store
            .get_group(id)
            .await
            .unwrap()
            .unwrap()
            .status
    }
}

common::backend_tests!(
    project_page_sets_the_scrubbed_fields,
    pages_need_a_session,
    sign_in_sets_a_safe_cookie_and_sign_out_ends_it,
    wrong_passwords_are_refused_and_throttled,
    sign_in_form_needs_its_csrf_token,
    pages_carry_security_headers_and_assets_are_embedded,
    list_shows_incidents_counts_filters_and_escapes,
    poll_reports_counts_for_live_updates,
    detail_shows_the_event_and_actions_change_status,
    forged_posts_are_refused,
    incidents_are_deleted_after_confirmation,
    projects_are_deleted_after_confirmation,
    bulk_resolve_and_quiet,
    events_page_lists_and_filters,
    project_page_rotates_the_key_and_sends_a_test_error,
    project_page_sets_and_removes_the_alert_webhook,
    ai_summary_is_requested_from_triage,
    summary_counts_are_live_and_priority_is_set_by_hand,
    sessions_last_7_days_and_only_a_hash_is_stored,
    set_password_ends_the_users_sessions,
    the_test_error_tries_the_webhook,
);

/// A summary written at the first event shows the live count beside it at
/// the twentieth, and never "1 event"; the hand-set priority form needs its
/// CSRF token, survives a re-triage and appears in the activity.
async fn summary_counts_are_live_and_priority_is_set_by_hand(db: common::TestDb) {
    let mut d = dash(db).await;
    d.sign_in().await;
    let id = d
        .ingest(
            "ledger",
            "LedgerError",
            "ledger imbalance: debits != credits",
        )
        .await;
    let res = d.post(&format!("/incidents/{id}/summarize"), &[]).await;
    assert_eq!(res.status, StatusCode::SEE_OTHER, "{}", res.body);
    for _ in 0..19 {
        assert_eq!(
            d.ingest(
                "ledger",
                "LedgerError",
                "ledger imbalance: debits != credits"
            )
            .await,
            id
        );
    }
    let page = d.get(&format!("/incidents/{id}")).await.body;
    let summary_at = page.find("id=\"ai-summary\"").expect("summary shown");
    let summary = &page[summary_at..summary_at + page[summary_at..].find("</p>").unwrap()];
    assert!(!summary.contains("1 event"), "{summary}");
    assert!(
        page.contains("Now: 20 events in total"),
        "live count beside it"
    );
    assert!(page.contains("Why this priority:</strong> prod · data integrity"));

    let form = format!("/incidents/{id}/priority");
    assert!(page.contains(&format!("action=\"{form}\"")));
    let forged = d
        .post_form(&form, &[("priority", "3"), ("severity", "low")])
        .await;
    assert_eq!(forged.status, StatusCode::FORBIDDEN);
    let bad = d
        .post(&form, &[("priority", "500"), ("severity", "")])
        .await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
    let res = d
        .post(&form, &[("priority", "3"), ("severity", "low")])
        .await;
    assert_eq!(res.status, StatusCode::SEE_OTHER, "{}", res.body);
    d.post(&format!("/incidents/{id}/summarize"), &[]).await;
    let g = d.state.store.get_group(id).await.unwrap().unwrap();
    assert_eq!((g.priority, g.severity.as_str()), (Some(3), "low"));
    let page = d.get(&format!("/incidents/{id}")).await.body;
    assert!(page.contains("set by hand"));
    assert!(
        page.contains("priority 3 and severity low set by hand"),
        "in the activity"
    );
    assert!(page.contains("<option value=\"low\" selected>"));
}

async fn pages_need_a_session(db: common::TestDb) {
    let d = dash(db).await;
    for uri in [
        "/",
        "/incidents/1",
        "/events?service=x",
        "/projects",
        "/projects/1",
        "/poll",
    ] {
        let res = d.get(uri).await;
        assert_eq!(res.status, StatusCode::SEE_OTHER, "{uri}");
        assert!(
            res.location().starts_with("/login"),
            "{uri} → {}",
            res.location()
        );
    }
    assert_eq!(
        d.get("/events?service=x").await.location(),
        "/login?next=%2Fevents%3Fservice%3Dx"
    );
    // A session cookie that is not a session is no session.
    let mut forged = d;
    forged.session = Some(format!("{}=deadbeef", auth::SESSION_COOKIE));
    assert_eq!(forged.get("/").await.status, StatusCode::SEE_OTHER);
}

async fn sign_in_sets_a_safe_cookie_and_sign_out_ends_it(db: common::TestDb) {
    let mut d = dash(db).await;
    d.sign_in().await;
    let page = d.get("/").await;
    assert!(page.body.contains("admin"));
    // Signed in, the sign-in page sends you on.
    assert_eq!(d.get("/login").await.status, StatusCode::SEE_OTHER);
    let out = d.post("/logout", &[]).await;
    assert_eq!(out.status, StatusCode::SEE_OTHER);
    assert_eq!(out.location(), "/login");
    assert!(out
        .cookie(auth::SESSION_COOKIE)
        .unwrap()
        .contains("Max-Age=0"));
    // The old cookie no longer opens anything: the session is gone server-side.
    assert_eq!(d.get("/").await.status, StatusCode::SEE_OTHER);
}

async fn wrong_passwords_are_refused_and_throttled(db: common::TestDb) {
    let d = dash(db).await;
    let res = d.try_sign_in("admin", "wrong password").await;
    assert_eq!(res.status, StatusCode::UNAUTHORIZED);
    assert!(res.body.contains("Wrong user name or password."));
    assert!(res.cookie(auth::SESSION_COOKIE).is_none());
    // Unknown users get the same answer.
    let res = d.try_sign_in("nobody", "wrong password").await;
    assert_eq!(res.status, StatusCode::UNAUTHORIZED);
    for _ in 0..4 {
        d.try_sign_in("admin", "wrong password").await;
    }
    // Locked now: even the right password is refused for a while.
    let res = d.try_sign_in("admin", PASSWORD).await;
    assert_eq!(res.status, StatusCode::TOO_MANY_REQUESTS, "{}", res.body);
    assert!(res.body.contains("Too many failed sign-ins"));
    assert!(res.headers.contains_key(header::RETRY_AFTER));
}

async fn sign_in_form_needs_its_csrf_token(db: common::TestDb) {
    let d = dash(db).await;
    let res = d
        .post_form(
            "/login",
            &[("username", "admin"), ("password", PASSWORD), ("csrf", "x")],
        )
        .await;
    assert_eq!(res.status, StatusCode::FORBIDDEN);
    assert!(res.cookie(auth::SESSION_COOKIE).is_none());
}

async fn pages_carry_security_headers_and_assets_are_embedded(db: common::TestDb) {
    let mut d = dash(db).await;
    d.sign_in().await;
    for uri in ["/", "/login", "/events", "/projects"] {
        let res = d.get(uri).await;
        let csp = res.headers[header::CONTENT_SECURITY_POLICY]
            .to_str()
            .unwrap();
        assert!(
            csp.contains("script-src 'self'") && !csp.contains("unsafe-inline"),
            "{uri}: {csp}"
        );
        assert_eq!(res.headers[header::X_FRAME_OPTIONS], "DENY");
        assert_eq!(res.headers[header::REFERRER_POLICY], "same-origin");
        assert_eq!(res.headers[header::X_CONTENT_TYPE_OPTIONS], "nosniff");
        assert!(
            !res.body.contains("<script>") && !res.body.contains("style="),
            "{uri}: inline script or style"
        );
    }
    let css = d.get("/assets/app.css").await;
    assert_eq!(css.status, StatusCode::OK);
    assert!(css.headers[header::CONTENT_TYPE]
        .to_str()
        .unwrap()
        .starts_with("text/css"));
    let js = d.get("/assets/app.js").await;
    assert!(js.headers[header::CONTENT_TYPE]
        .to_str()
        .unwrap()
        .starts_with("text/javascript"));
    assert!(js.body.contains("/poll") || js.body.contains("dataset.poll"));
    assert_eq!(d.get("/assets/favicon.svg").await.status, StatusCode::OK);
}

async fn list_shows_incidents_counts_filters_and_escapes(db: common::TestDb) {
    let mut d = dash(db).await;
    d.sign_in().await;
    let a = d
        .ingest("user-api", "NullPointer", "<script>alert(1)</script>")
        .await;
    d.ingest("user-api", "NullPointer", "<script>alert(1)</script>")
        .await;
    let b = d
        .ingest("payment-api", "Timeout", "upstream timed out after 30s")
        .await;
    d.state
        .store
        .transition(
            b,
            &errorflow_collector::model::Transition::Quiet { reason: None },
            "test",
            chrono::Utc::now(),
        )
        .await
        .unwrap();
    let page = d.get("/").await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(
        page.body.contains(&format!("href=\"/incidents/{a}\"")),
        "{}",
        page.body
    );
    assert!(
        !page.body.contains(&format!("href=\"/incidents/{b}\"")),
        "quiet incident not in the open tab"
    );
    assert!(!page.body.contains("<script>alert(1)"), "unescaped message");
    assert!(page.body.contains("user-api:NullPointer"));
    assert!(page.body.contains("<svg class=\"spark\""));
    assert!(page.body.contains("data-count=\"open\">1<"), "open count");
    assert!(page.body.contains("data-count=\"quiet\">1<"), "quiet count");
    assert!(page.body.contains("data-count=\"all\">2<"), "all count");
    assert!(page.body.contains("<time datetime=\""));
    let all = d.get("/?status=all&sort=count").await.body;
    let (pa, pb) = (
        all.find(&format!("/incidents/{a}\"")).unwrap(),
        all.find(&format!("/incidents/{b}\"")).unwrap(),
    );
    assert!(pa < pb, "sorted by events");
    let quiet = d.get("/?status=quiet").await.body;
    assert!(quiet.contains(&format!("/incidents/{b}\"")));
    let search = d.get("/?status=all&q=payment").await.body;
    assert!(
        search.contains(&format!("/incidents/{b}\""))
            && !search.contains(&format!("/incidents/{a}\""))
    );
    let by_service = d.get("/?status=all&service=user-api").await.body;
    assert!(
        by_service.contains(&format!("/incidents/{a}\""))
            && !by_service.contains(&format!("/incidents/{b}\""))
    );
    let other_project = d
        .get(&format!("/?status=all&project={}", d.project_id + 100))
        .await
        .body;
    assert!(other_project.contains("No incidents match"));
    for sort in ["first_seen", "last_seen", "priority", "bogus"] {
        assert_eq!(
            d.get(&format!("/?status=all&sort={sort}")).await.status,
            StatusCode::OK
        );
    }
    assert_eq!(
        d.get("/?cursor=not-a-cursor").await.status,
        StatusCode::BAD_REQUEST
    );
}

async fn poll_reports_counts_for_live_updates(db: common::TestDb) {
    let mut d = dash(db).await;
    d.sign_in().await;
    let before: Value = serde_json::from_str(&d.get("/poll?status=open").await.body).unwrap();
    assert_eq!(before["open"], 0);
    d.ingest("user-api", "NullPointer", "boom").await;
    let res = d.get("/poll?status=open").await;
    assert_eq!(res.status, StatusCode::OK);
    let after: Value = serde_json::from_str(&res.body).unwrap();
    assert_eq!(after["open"], 1);
    assert_eq!(after["all"], 1);
    assert!(after["newest"].as_str().unwrap().ends_with('Z'));
}

async fn detail_shows_the_event_and_actions_change_status(db: common::TestDb) {
    let mut d = dash(db).await;
    d.sign_in().await;
    let id = d
        .ingest("user-api", "NullPointer", "order 1 failed <b>one</b>")
        .await;
    assert_eq!(
        d.ingest("user-api", "NullPointer", "order 2 failed <b>one</b>")
            .await,
        id,
        "one incident"
    );
    let page = d.get(&format!("/incidents/{id}")).await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    assert!(
        page.body.contains("order 2 failed &#60;b&#62;one")
            || page.body.contains("order 2 failed &lt;b&gt;one"),
        "newest event shown, escaped"
    );
    assert!(page.body.contains("Older →"));
    assert!(page.body.contains("Raw JSON"));
    assert!(page.body.contains("class=\"chart\""));
    assert!(page.body.contains("Tags"));
    // Navigate to the older event.
    let older = page.body.split("rel=\"next\"").next().unwrap();
    let href_start = older.rfind("href=\"").unwrap() + 6;
    let href = older[href_start..]
        .split('"')
        .next()
        .unwrap()
        .replace("&#38;", "&")
        .replace("&amp;", "&");
    let older_page = d.get(&href).await;
    assert!(
        older_page.body.contains("order 1 failed &#60;b&#62;one")
            || older_page.body.contains("order 1 failed &lt;b&gt;one"),
        "{href}"
    );
    assert!(older_page.body.contains("← Newer</a>"));

    let res = d
        .post(
            &format!("/incidents/{id}/resolve"),
            &[("reason", "fixed in 1.2 <i>"), ("in_next_release", "1")],
        )
        .await;
    assert_eq!(res.status, StatusCode::SEE_OTHER);
    assert_eq!(res.location(), format!("/incidents/{id}?notice=resolved"));
    assert_eq!(d.status_of(id).await, GroupStatus::Resolved);
    let page = d.get(res.location()).await.body;
    assert!(page.contains("Incident resolved."));
    assert!(page.contains("user:admin"), "activity names the person");
    assert!(page.contains("fixed in 1.2 &#60;i&#62;") || page.contains("fixed in 1.2 &lt;i&gt;"));
    d.post(&format!("/incidents/{id}/reopen"), &[]).await;
    assert_eq!(d.status_of(id).await, GroupStatus::Open);
    d.post(&format!("/incidents/{id}/quiet"), &[]).await;
    assert_eq!(d.status_of(id).await, GroupStatus::Quiet);
    assert_eq!(
        d.get("/incidents/999999").await.status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(d.get("/incidents/abc").await.status, StatusCode::NOT_FOUND);
    assert_eq!(
        d.post("/incidents/999999/resolve", &[]).await.status,
        StatusCode::NOT_FOUND
    );
}

async fn forged_posts_are_refused(db: common::TestDb) {
    let mut d = dash(db).await;
    d.sign_in().await;
    let id = d.ingest("user-api", "NullPointer", "boom").await;
    let uri = format!("/incidents/{id}/resolve");
    // No token.
    let res = d.post_form(&uri, &[("reason", "x")]).await;
    assert_eq!(res.status, StatusCode::FORBIDDEN);
    assert!(res.body.contains("Forbidden"));
    // A wrong token.
    assert_eq!(
        d.post_form(&uri, &[("csrf", "0000")]).await.status,
        StatusCode::FORBIDDEN
    );
    // Another session's token.
    let other = auth::csrf_token(&auth::random_token());
    assert_eq!(
        d.post_form(&uri, &[("csrf", &other)]).await.status,
        StatusCode::FORBIDDEN
    );
    for path in [
        "/incidents/bulk",
        "/logout",
        &format!("/projects/{}/rotate-key", d.project_id),
        &format!("/projects/{}/test-event", d.project_id),
        &format!("/incidents/{id}/delete"),
        &format!("/projects/{}/delete", d.project_id),
    ] {
        assert_eq!(
            d.post_form(path, &[("action", "resolve"), ("ids", &id.to_string())])
                .await
                .status,
            StatusCode::FORBIDDEN,
            "{path}"
        );
    }
    // No session at all (a cross-site form carrying a token): sign in first.
    let csrf = d.csrf.clone();
    d.session = None;
    let res = d.post_form(&uri, &[("csrf", &csrf)]).await;
    assert_eq!(res.status, StatusCode::SEE_OTHER);
    assert!(res.location().starts_with("/login"));
    assert_eq!(d.status_of(id).await, GroupStatus::Open, "nothing changed");
}

async fn incidents_are_deleted_after_confirmation(db: common::TestDb) {
    let mut d = dash(db).await;
    d.sign_in().await;
    let doomed = d.ingest("user-api", "NullPointer", "boom").await;
    let kept = d.ingest("billing", "Timeout", "slow").await;
    let page = d.get(&format!("/incidents/{doomed}")).await;
    // The button asks first (app.js honours data-confirm on the form).
    assert!(
        page.body
            .contains(&format!("action=\"/incidents/{doomed}/delete\""))
            && page.body.contains("data-confirm=\"Delete this incident"),
        "{}",
        page.body
    );
    let res = d.post(&format!("/incidents/{doomed}/delete"), &[]).await;
    assert_eq!(res.status, StatusCode::SEE_OTHER);
    assert_eq!(res.location(), "/?notice=deleted");
    let list = d.get("/?notice=deleted").await;
    assert!(list.body.contains("Incident deleted with its events."));
    assert_eq!(
        d.get(&format!("/incidents/{doomed}")).await.status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        d.get(&format!("/incidents/{kept}")).await.status,
        StatusCode::OK
    );
    let res = d.post(&format!("/incidents/{doomed}/delete"), &[]).await;
    assert_eq!(res.status, StatusCode::NOT_FOUND);
}

async fn projects_are_deleted_after_confirmation(db: common::TestDb) {
    let mut d = dash(db).await;
    d.sign_in().await;
    let id = d.ingest("user-api", "NullPointer", "boom").await;
    let uri = format!("/projects/{}", d.project_id);
    let page = d.get(&uri).await;
    assert!(
        page.body.contains(&format!("action=\"{uri}/delete\""))
            && page.body.contains("data-confirm=\"Delete project"),
        "{}",
        page.body
    );
    let res = d.post(&format!("{uri}/delete"), &[]).await;
    assert_eq!(res.status, StatusCode::SEE_OTHER);
    assert_eq!(res.location(), "/projects?notice=project-deleted");
    let list = d.get("/projects?notice=project-deleted").await;
    assert!(list.body.contains("Project deleted"), "{}", list.body);
    assert!(
        !list.body.contains(&format!("href=\"{uri}\"")),
        "{}",
        list.body
    );
    assert_eq!(d.get(&uri).await.status, StatusCode::NOT_FOUND);
    assert_eq!(
        d.get(&format!("/incidents/{id}")).await.status,
        StatusCode::NOT_FOUND
    );
}

async fn bulk_resolve_and_quiet(db: common::TestDb) {
    let mut d = dash(db).await;
    d.sign_in().await;
    let a = d.ingest("a", "E1", "one").await;
    let b = d.ingest("b", "E2", "two").await;
    let c = d.ingest("c", "E3", "three").await;
    let (a_s, b_s, c_s) = (a.to_string(), b.to_string(), c.to_string());
    let res = d
        .post(
            "/incidents/bulk",
            &[
                ("action", "resolve"),
                ("ids", &a_s),
                ("ids", &b_s),
                ("return", "/?status=open"),
            ],
        )
        .await;
    assert_eq!(res.status, StatusCode::SEE_OTHER);
    assert_eq!(res.location(), "/?status=open&notice=bulk");
    assert_eq!(d.status_of(a).await, GroupStatus::Resolved);
    assert_eq!(d.status_of(b).await, GroupStatus::Resolved);
    assert_eq!(d.status_of(c).await, GroupStatus::Open);
    let res = d
        .post(
            "/incidents/bulk",
            &[
                ("action", "quiet"),
                ("ids", &c_s),
                ("return", "https://evil.example/"),
            ],
        )
        .await;
    assert_eq!(res.location(), "/?notice=bulk", "never redirects off-site");
    assert_eq!(d.status_of(c).await, GroupStatus::Quiet);
    assert_eq!(
        d.post("/incidents/bulk", &[("action", "delete")])
            .await
            .status,
        StatusCode::BAD_REQUEST
    );
}

async fn events_page_lists_and_filters(db: common::TestDb) {
    let mut d = dash(db).await;
    d.sign_in().await;
    let a = d
        .ingest("user-api", "NullPointer", "<img src=x onerror=alert(1)>")
        .await;
    d.ingest("payment-api", "Timeout", "slow upstream").await;
    let page = d.get("/events").await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(page.body.contains("slow upstream"));
    assert!(!page.body.contains("<img src=x"), "escaped");
    assert!(page.body.contains(&format!("/incidents/{a}?event=")));
    let filtered = d.get("/events?service=payment-api").await.body;
    assert!(filtered.contains("slow upstream") && !filtered.contains("onerror"));
    let by_level = d.get("/events?level=info").await.body;
    assert!(by_level.contains("No events match"));
}

async fn project_page_rotates_the_key_and_sends_a_test_error(db: common::TestDb) {
    let mut d = dash(db).await;
    d.sign_in().await;
    let list = d.get("/projects").await.body;
    assert!(list.contains("shop") && list.contains(&credentials::prefix(&d.key)));
    let pid = d.project_id;
    let page = d.get(&format!("/projects/{pid}")).await.body;
    assert!(
        page.contains(&format!("{}…", credentials::prefix(&d.key))),
        "key prefix in the DSN"
    );
    assert!(!page.contains(&d.key), "the full key is never shown again");
    assert!(page.contains("errorflow_sdk::init(errorflow_sdk::ClientOptions::from_env())"));
    assert!(page.contains("sentry_sdk.init(dsn="));
    assert!(page.contains("X-Errorflow-Key"));
    assert_eq!(d.get("/projects/9999").await.status, StatusCode::NOT_FOUND);

    let res = d.post(&format!("/projects/{pid}/rotate-key"), &[]).await;
    assert_eq!(res.status, StatusCode::OK);
    assert!(res.headers[header::CACHE_CONTROL]
        .to_str()
        .unwrap()
        .contains("no-store"));
    let new_dsn = field(
        &res.body
            .replace("class=\"copy\" data-copy=", "name=\"dsn\" value="),
        "dsn",
    );
    let new_key = new_dsn
        .split("//")
        .nth(1)
        .unwrap()
        .split('@')
        .next()
        .unwrap()
        .to_string();
    assert_eq!(new_key.len(), 32, "{new_dsn}");
    assert!(res.body.contains("shown only once"));
    // The old key stops working, the new one works.
    let old = std::mem::replace(&mut d.key, new_key);
    d.ingest("user-api", "NullPointer", "with the new key")
        .await;
    let refused = d
        .send(
            Request::post("/errors/custom")
                .header(header::CONTENT_TYPE, "application/json")
                .header("x-errorflow-key", old)
                .body(Body::from(
                    json!({"service": "s", "error_type": "E", "message": "m"}).to_string(),
                ))
                .unwrap(),
        )
        .await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN);

    let res = d.post(&format!("/projects/{pid}/test-event"), &[]).await;
    assert_eq!(res.status, StatusCode::SEE_OTHER, "{}", res.body);
    assert!(
        res.location().starts_with("/incidents/"),
        "{}",
        res.location()
    );
    let page = d.get(res.location()).await.body;
    assert!(page.contains("Test error sent"));
    assert!(page.contains("charge_card"), "stack frames shown");
    assert!(page.contains("frame in-app"), "in-app frames highlighted");
    assert!(
        page.contains("return Err(PaymentError::Declined"),
        "source context shown"
    );
    assert!(page.contains("SELECT order 1042"), "breadcrumbs shown");
    assert!(page.contains("/orders/1042/pay"), "request shown");
    assert!(page.contains("ada"), "user shown");
}

async fn project_page_sets_and_removes_the_alert_webhook(db: common::TestDb) {
    let mut d = dash(db).await;
    d.sign_in().await;
    let pid = d.project_id;
    let page_path = format!("/projects/{pid}");
    let action = format!("/projects/{pid}/alert-webhook");
    let stored = |d: &Dash| {
        let store = d.state.store.clone();
        async move { store.project_alert_webhook(pid).await.unwrap() }
    };
    let page = d.get(&page_path).await.body;
    assert!(
        page.contains(
            "No webhook: new incidents and regressions of this project are not posted anywhere."
        ),
        "{page}"
    );
    assert!(!page.contains("id=\"remove-webhook\""));

    // Without the form's token: refused, nothing stored.
    let secret_url = "https://hooks.slack.com/services/T000/B000/very-secret";
    let res = d
        .post_form(&action, &[("action", "save"), ("url", secret_url)])
        .await;
    assert_eq!(res.status, StatusCode::FORBIDDEN);
    assert_eq!(stored(&d).await, None);

    // Not a webhook URL: the page again with the reason, escaped; nothing stored.
    let res = d
        .post(
            &action,
            &[("action", "save"), ("url", "javascript:<b>x</b>")],
        )
        .await;
    assert_eq!(res.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", res.body);
    assert!(res.body.contains("must be http or https"), "{}", res.body);
    assert!(!res.body.contains("<b>x</b>"));
    assert_eq!(stored(&d).await, None);
    let res = d.post(&action, &[("action", "launch")]).await;
    assert_eq!(res.status, StatusCode::BAD_REQUEST);

    // Saved: the page names the host only, never the secret part.
    let res = d
        .post(&action, &[("action", "save"), ("url", secret_url)])
        .await;
    assert_eq!(res.status, StatusCode::SEE_OTHER, "{}", res.body);
    assert_eq!(
        res.location(),
        format!("/projects/{pid}?notice=webhook-saved")
    );
    assert_eq!(stored(&d).await.as_deref(), Some(secret_url));
    let page = d.get(res.location()).await.body;
    assert!(page.contains("Alert webhook saved"), "{page}");
    assert!(
        page.contains("posted to its webhook, <code>https://hooks.slack.com/…</code>"),
        "{page}"
    );
    assert!(!page.contains("very-secret"));

    // Removed.
    let res = d.post(&action, &[("action", "remove")]).await;
    assert_eq!(res.status, StatusCode::SEE_OTHER, "{}", res.body);
    assert_eq!(stored(&d).await, None);
    let page = d.get(res.location()).await.body;
    assert!(page.contains("Alert webhook removed."), "{page}");
    assert!(page.contains("No webhook:"), "{page}");
    let missing = d
        .post("/projects/9999/alert-webhook", &[("action", "remove")])
        .await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
}

async fn project_page_sets_the_scrubbed_fields(db: common::TestDb) {
    let mut d = dash(db).await;
    d.sign_in().await;
    let pid = d.project_id;
    let action = format!("/projects/{pid}/scrub-fields");
    let stored = |d: &Dash| {
        let store = d.state.store.clone();
        async move { store.project_scrub_fields(pid).await.unwrap().unwrap() }
    };
    let page = d.get(&format!("/projects/{pid}")).await.body;
    assert!(
        page.contains("replaced with <code>[Filtered]</code>"),
        "{page}"
    );

    // Without the form's token: refused, nothing stored.
    let res = d.post_form(&action, &[("fields", "order_no")]).await;
    assert_eq!(res.status, StatusCode::FORBIDDEN);
    assert!(stored(&d).await.is_empty());

    // A bad name: the page again with the reason, escaped; nothing stored.
    let res = d.post(&action, &[("fields", "ok <b>x</b>")]).await;
    assert_eq!(res.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", res.body);
    assert!(res.body.contains("id=\"scrub-error\""), "{}", res.body);
    assert!(!res.body.contains("<b>x</b>"));
    assert!(stored(&d).await.is_empty());

    let res = d
        .post(&action, &[("fields", "order_no, Customer-Ref\nx.y")])
        .await;
    assert_eq!(res.status, StatusCode::SEE_OTHER, "{}", res.body);
    assert_eq!(
        res.location(),
        format!("/projects/{pid}?notice=scrub-saved")
    );
    assert_eq!(stored(&d).await, ["order_no", "customer-ref", "x.y"]);
    let page = d.get(res.location()).await.body;
    assert!(page.contains("Scrubbed fields saved"), "{page}");
    assert!(
        page.contains("value=\"order_no, customer-ref, x.y\""),
        "{page}"
    );
    let missing = d
        .post("/projects/9999/scrub-fields", &[("fields", "")])
        .await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
}

async fn ai_summary_is_requested_from_triage(db: common::TestDb) {
    let mut d = dash(db).await;
    d.sign_in().await;
    let id = d
        .ingest("payment-api", "Timeout", "upstream timed out after 30s")
        .await;
    let page = d.get(&format!("/incidents/{id}")).await.body;
    assert!(
        page.contains(&format!("action=\"/incidents/{id}/summarize\"")),
        "the button is there"
    );
    assert_eq!(
        d.post_form(&format!("/incidents/{id}/summarize"), &[])
            .await
            .status,
        StatusCode::FORBIDDEN
    );
    let res = d.post(&format!("/incidents/{id}/summarize"), &[]).await;
    assert_eq!(res.status, StatusCode::SEE_OTHER, "{}", res.body);
    let page = d.get(res.location()).await.body;
    assert!(page.contains("Triage requested"));
    assert!(
        page.contains("title=\"who wrote this summary\">rules</span>"),
        "the built-in analyst is labelled as rules, not AI"
    );
    let group = d.state.store.get_group(id).await.unwrap().unwrap();
    assert!(group.ai_summary.is_some(), "triage stored a summary");
    assert!(page.contains("class=\"card ai\""), "the summary is shown");
}

/// The first start creates `admin` once, with the given password or a generated one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn first_start_creates_the_admin_once() {
    use errorflow_collector::app::first_user;
    let db = common::sqlite_store().await;
    let text = first_user(db.store.as_ref(), Some(PASSWORD))
        .await
        .unwrap()
        .unwrap();
    assert!(
        text.contains("ERRORFLOW_ADMIN_PASSWORD") && !text.contains(PASSWORD),
        "{text}"
    );
    let admin = db.store.user_by_name("admin").await.unwrap().unwrap();
    assert!(auth::verify_password(PASSWORD, &admin.password_hash));
    assert!(
        admin.password_hash.starts_with("$argon2id$"),
        "stored hashed"
    );
    assert_eq!(
        first_user(db.store.as_ref(), None).await.unwrap(),
        None,
        "only once"
    );

    let db = common::sqlite_store().await;
    let text = first_user(db.store.as_ref(), None).await.unwrap().unwrap();
    let generated = text.rsplit(": ").next().unwrap().trim();
    assert_eq!(generated.len(), 20, "{text}");
    let admin = db.store.user_by_name("admin").await.unwrap().unwrap();
    assert!(auth::verify_password(generated, &admin.password_hash));
    assert!(
        first_user(common::sqlite_store().await.store.as_ref(), Some("short"))
            .await
            .is_err()
    );
}

/// `user create` and `user set-password`, as a person runs them.
#[test]
fn user_commands() {
    use std::io::Write;
    use std::process::Stdio;
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}", dir.path().join("users.db").display());
    let run = |args: &[&str], stdin: Option<&str>| {
        let mut child = common::binary::command(&db)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut input = child.stdin.take().unwrap();
        if let Some(s) = stdin {
            input.write_all(s.as_bytes()).unwrap();
        }
        drop(input);
        let out = child.wait_with_output().unwrap();
        (
            out.status.success(),
            String::from_utf8(out.stdout).unwrap(),
            String::from_utf8(out.stderr).unwrap(),
        )
    };
    let (ok, out, err) = run(
        &["user", "create", "alice", "--password-stdin"],
        Some("a long passphrase\n"),
    );
    assert!(ok, "{err}");
    assert!(
        out.contains("alice") && !out.contains("a long passphrase"),
        "{out}"
    );
    let (ok, _, err) = run(
        &["user", "create", "alice", "--password-stdin"],
        Some("another passphrase\n"),
    );
    assert!(!ok && err.contains("already exists"), "{err}");
    let (ok, _, err) = run(
        &["user", "create", "bob", "--password-stdin"],
        Some("short\n"),
    );
    assert!(!ok && err.contains("too short"), "{err}");
    let (ok, out, err) = run(&["user", "create", "carol"], None);
    assert!(ok, "{err}");
    assert!(out.contains("password (shown once): "), "{out}");
    let (ok, out, err) = run(&["user", "set-password", "alice"], None);
    assert!(ok, "{err}");
    assert!(out.contains("password (shown once): "), "{out}");
    let (ok, _, err) = run(
        &["user", "set-password", "nobody", "--password-stdin"],
        Some("a long passphrase\n"),
    );
    assert!(!ok && err.contains("no dashboard user"), "{err}");
}

/// The README: sessions live server-side for 7 days, and only a hash of the
/// cookie is stored; an expired session is refused.
async fn sessions_last_7_days_and_only_a_hash_is_stored(db: common::TestDb) {
    let mut d = dash(db).await;
    let res = d.try_sign_in("admin", PASSWORD).await;
    let cookie = res.cookie(auth::SESSION_COOKIE).expect("session cookie");
    assert!(cookie.contains("Max-Age=604800"), "7 days: {cookie}");
    let value = cookie
        .split(';')
        .next()
        .and_then(|c| c.split_once('='))
        .map(|(_, v)| v.to_string())
        .unwrap();
    d.session = Some(format!("{}={value}", auth::SESSION_COOKIE));
    assert_eq!(d.get("/").await.status, StatusCode::OK);
    let stored =
        d.db.texts("SELECT CAST(token_hash AS TEXT) FROM sessions")
            .await;
    assert_eq!(stored, [auth::session_hash(&value)]);
    assert!(!stored[0].contains(&value));
    let all = d
        .db
        .texts("SELECT CAST(expires_at AS TEXT) || ' ' || CAST(created_at AS TEXT) FROM sessions")
        .await;
    assert!(!all[0].contains(&value));
    let expires =
        d.db.texts("SELECT CAST(expires_at AS TEXT) FROM sessions")
            .await;
    let expires = parse_db_time(&expires[0]);
    let left = expires - chrono::Utc::now();
    assert!(
        left <= chrono::Duration::days(7)
            && left > chrono::Duration::days(7) - chrono::Duration::minutes(5),
        "the session ends in {left}"
    );
    // Past its end, the cookie no longer works.
    d.db.execute("UPDATE sessions SET expires_at = '2000-01-01T00:00:00.000Z'")
        .await;
    let res = d.get("/").await;
    assert_eq!(res.status, StatusCode::SEE_OTHER);
    assert!(res.location().starts_with("/login"), "{}", res.location());
}

/// A timestamp as either backend prints it.
fn parse_db_time(text: &str) -> chrono::DateTime<chrono::Utc> {
    chrono::DateTime::parse_from_rfc3339(text)
        .or_else(|_| chrono::DateTime::parse_from_str(text, "%Y-%m-%d %H:%M:%S%.f%#z"))
        .unwrap_or_else(|e| panic!("{text}: {e}"))
        .with_timezone(&chrono::Utc)
}

/// `user set-password`, the binary as the README shows it, ends the user's
/// sessions; the new password signs in, the old one no longer does.
async fn set_password_ends_the_users_sessions(db: common::TestDb) {
    use std::io::Write as _;
    let mut d = dash(db).await;
    d.sign_in().await;
    assert_eq!(d.get("/").await.status, StatusCode::OK);
    let new_password = "a new and long passphrase";
    let mut child = common::binary::command(&d.db.url)
        .args(["user", "set-password", "admin", "--password-stdin"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    writeln!(child.stdin.take().unwrap(), "{new_password}").unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let res = d.get("/").await;
    assert_eq!(res.status, StatusCode::SEE_OTHER, "the session ended");
    assert!(res.location().starts_with("/login"));
    assert_eq!(
        d.try_sign_in("admin", PASSWORD).await.status,
        StatusCode::UNAUTHORIZED,
        "the old password is refused"
    );
    assert_eq!(
        d.try_sign_in("admin", new_password).await.status,
        StatusCode::SEE_OTHER
    );
}

/// The README: the project page's **Send test error** opens an incident, and
/// so tries the alert webhook.
async fn the_test_error_tries_the_webhook(db: common::TestDb) {
    use errorflow_collector::alerts::{self, AlertOptions};
    let Dash { t, .. } = dash(db).await;
    let (url, bodies) = common::webhook_receiver().await;
    // The receiver is on the loopback address, which the operator must allow.
    let policy = std::sync::Arc::new(
        errorflow_collector::outbound::AddressPolicy::parse(&["127.0.0.1"]).unwrap(),
    );
    let mut options = AlertOptions::new(
        Some(errorflow_collector::triage::Secret::new(url)),
        "https://errors.example.com/",
    );
    options.policy = policy.clone();
    let alerts = alerts::spawn(t.state.store.clone(), options).unwrap();
    let state = t
        .state
        .clone()
        .with_alerts(alerts)
        .with_webhook_policy(policy);
    let mut d = Dash {
        t: t.with_state(state),
        session: None,
        csrf: String::new(),
    };
    d.sign_in().await;
    let res = d
        .post(&format!("/projects/{}/test-event", d.project_id), &[])
        .await;
    assert_eq!(res.status, StatusCode::SEE_OTHER, "{}", res.body);
    let body = common::wait_for_body(&bodies, "payment for order").await;
    assert_eq!(body["event"], "incident.new");
    let incident = res.location().trim_start_matches("/incidents/");
    let incident = incident.split('?').next().unwrap();
    assert_eq!(body["incident"]["id"].to_string(), incident);
}
