//! Hostile input at the HTTP layer: no expensive work before
//! authentication, bounded envelopes, the rate limit before decoding.
//! Every test runs on both backends, by name: `sqlite::…` and `postgres::…`.

mod common;

use std::io::Write;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{Request, StatusCode};
use errorflow_collector::credentials;
use errorflow_collector::http::rate_limit::KeyRate;
use errorflow_collector::outbound::{self, AddressPolicy};
use errorflow_collector::pipeline::sentry::MAX_ENVELOPE_ITEMS;
use serde_json::json;

use common::{assert_error, TestApp};

fn brotli(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    {
        let mut w = brotli::CompressorWriter::new(&mut out, 4096, 9, 22);
        w.write_all(data).unwrap();
    }
    out
}

/// An envelope whose header line is `header`, then one attachment of
/// `size` bytes of `a`: brotli makes a few hundred bytes of it.
fn bomb(header: &serde_json::Value, size: usize) -> Vec<u8> {
    let mut data = format!("{header}\n{{\"type\":\"attachment\"}}\n").into_bytes();
    data.resize(data.len() + size, b'a');
    data.push(b'\n');
    let body = brotli(&data);
    assert!(body.len() < 64 * 1024, "{} bytes", body.len());
    body
}

fn post(path: &str, body: Vec<u8>, encoding: &str) -> Request<Body> {
    Request::post(path)
        .header("content-type", "application/x-sentry-envelope")
        .header("content-encoding", encoding)
        .body(Body::from(body))
        .unwrap()
}

common::backend_tests!(
    setup => crate::common::test_app;
    no_key_is_refused_before_the_body_is_inflated,
    envelopes_hold_a_bounded_number_of_items,
    the_rate_limit_comes_before_decoding,
    large_inflated_bodies_are_decoded_off_the_async_workers,
    webhooks_to_internal_addresses_are_refused_up_front,
    parallel_wrong_passwords_are_locked_out,
    a_burst_of_sign_ins_waits_for_few_verifications,
    sign_in_redirects_only_to_local_paths,
    a_key_of_another_project_is_refused_without_naming_it,
    a_revoked_token_is_refused_here_at_once_and_elsewhere_after_the_cache,
    a_token_may_revoke_itself,
    revoking_an_unknown_token_is_a_json_404,
    a_cached_key_of_a_project_deleted_elsewhere_is_a_403_storing_nothing,
);

/// Without a key beside the body, only the envelope header is inflated
/// before the key is checked: a compression bomb with no key, or with the
/// key of another project, is a 401 or 403, not a 413 found by inflating it.
async fn no_key_is_refused_before_the_body_is_inflated(t: TestApp) {
    let path = format!("/api/{}/envelope/", t.project_id);
    // 30 MiB inflated: more than the 20 MiB limit, so inflating it all
    // would answer 413.
    let size = 30 << 20;
    let r = t.send(post(&path, bomb(&json!({}), size), "br")).await;
    assert_error(&r, StatusCode::UNAUTHORIZED, "unauthorized");

    let (other_key, _) = t.add_project("other").await;
    let dsn = credentials::dsn("http://127.0.0.1:8000", &other_key, t.project_id);
    let r = t
        .send(post(&path, bomb(&json!({ "dsn": dsn }), size), "br"))
        .await;
    assert_error(&r, StatusCode::FORBIDDEN, "forbidden");

    // With the right key in the header, the bomb meets the limit.
    let dsn = credentials::dsn("http://127.0.0.1:8000", &t.key, t.project_id);
    let r = t
        .send(post(&path, bomb(&json!({ "dsn": dsn }), size), "br"))
        .await;
    assert_error(&r, StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large");

    // A header line longer than what is inflated before the key: 400.
    let long = json!({ "x": "y".repeat(64 * 1024) });
    let r = t.send(post(&path, bomb(&long, 10), "br")).await;
    assert_error(&r, StatusCode::BAD_REQUEST, "invalid_envelope");
}

/// An envelope of more than MAX_ENVELOPE_ITEMS items is refused (413)
/// without storing any of its events.
async fn envelopes_hold_a_bounded_number_of_items(t: TestApp) {
    let path = format!("/api/{}/envelope/?sentry_key={}", t.project_id, t.key);
    let envelope = |items: usize| {
        let mut body = String::from("{}\n{\"type\":\"event\"}\n{\"message\":\"first\"}\n");
        for _ in 1..items {
            body.push_str("{\"type\":\"client_report\"}\n{}\n");
        }
        body.into_bytes()
    };
    let r = t
        .send(post(&path, envelope(MAX_ENVELOPE_ITEMS + 1), "identity"))
        .await;
    assert_error(&r, StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large");
    assert!(
        r.body["error"]["message"]
            .as_str()
            .unwrap()
            .contains(&MAX_ENVELOPE_ITEMS.to_string()),
        "{}",
        r.body
    );
    let events = t.get("/api/v1/events").await;
    assert_eq!(events.body["events"].as_array().unwrap().len(), 0);
    // At the limit exactly is fine, compressed too.
    let r = t
        .send(post(&path, brotli(&envelope(MAX_ENVELOPE_ITEMS)), "br"))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
}

/// A key over its rate gets 429 before its body is decoded: a malformed
/// body is not even looked at.
async fn the_rate_limit_comes_before_decoding(t: TestApp) {
    let state = t.state.clone().with_key_rate(KeyRate {
        per_second: 1,
        burst: 1,
    });
    let t = t.with_state(state);
    let path = format!("/api/{}/envelope/?sentry_key={}", t.project_id, t.key);
    // Built first: the bucket refills within a second.
    let bomb = bomb(&json!({}), 30 << 20);
    let ok = b"{}\n{\"type\":\"event\"}\n{\"message\":\"x\"}\n".to_vec();
    let r = t.send(post(&path, ok, "identity")).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let r = t
        .send(post(&path, b"not an envelope".to_vec(), "identity"))
        .await;
    assert_error(&r, StatusCode::TOO_MANY_REQUESTS, "rate_limited");
    let r = t.send(post(&path, bomb, "br")).await;
    assert_error(&r, StatusCode::TOO_MANY_REQUESTS, "rate_limited");
}

/// A small compressed body that inflates to megabytes is inflated off the
/// async workers, whatever its compressed size: on a runtime with one
/// worker, a task that ticks every millisecond keeps ticking while the
/// request inflates it.
async fn large_inflated_bodies_are_decoded_off_the_async_workers(t: TestApp) {
    let mut json = br#"{"service":"a","error_type":"b","message":""#.to_vec();
    json.resize(json.len() + (19 << 20), b'a');
    json.extend_from_slice(b"\"}");
    let body = brotli(&json);
    assert!(body.len() < 32 * 1024, "{} bytes", body.len());
    let app = t.app.clone();
    let key = t.key.clone();
    // The handler runs on a runtime of its own with a single thread, so
    // that an inline inflate would stall the ticker beside it.
    let (gap, took, status) = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            use tower::ServiceExt;
            let req = Request::post("/errors/custom")
                .header("content-type", "application/json")
                .header("content-encoding", "br")
                .header("x-errorflow-key", key)
                .body(Body::from(body))
                .unwrap();
            let started = Instant::now();
            let request = tokio::spawn(app.oneshot(req));
            let mut last = Instant::now();
            let mut gap = Duration::ZERO;
            while !request.is_finished() {
                tokio::time::sleep(Duration::from_millis(1)).await;
                gap = gap.max(last.elapsed());
                last = Instant::now();
            }
            let status = request.await.unwrap().unwrap().status();
            (gap, started.elapsed(), status)
        })
    })
    .join()
    .unwrap();
    // The message is over the pipeline's limits, or stored truncated.
    assert!(status.is_success() || status.is_client_error(), "{status}");
    assert!(
        gap < took / 3,
        "the runtime stalled {gap:?} of the request's {took:?}"
    );
}

/// `PUT …/alert-webhook` refuses every spelling of an internal address
/// with 422, and stores nothing; the operator's allow-list lets one through.
async fn webhooks_to_internal_addresses_are_refused_up_front(t: TestApp) {
    let path = format!("/api/v1/projects/{}/alert-webhook", t.project_id);
    for url in [
        "http://169.254.169.254/latest/meta-data/",
        "http://127.0.0.1:5432/",
        "http://[::1]:22/",
        "http://0.0.0.0/",
        "http://2130706433/",
        "http://0x7f.1/",
        "http://localhost/hook",
        "http://[::ffff:127.0.0.1]/",
        "http://10.1.2.3/",
        "http://[fd00:ec2::254]/",
    ] {
        let r = t.call("PUT", &path, Some(json!({ "url": url }))).await;
        assert_error(&r, StatusCode::UNPROCESSABLE_ENTITY, "invalid_field");
        let message = r.body["error"]["message"].as_str().unwrap();
        assert!(
            message.contains("--allow-webhook-hosts"),
            "{url}: {message}"
        );
    }
    assert_eq!(t.get(&path).await.body["webhook"], serde_json::Value::Null);
    let policy = Arc::new(AddressPolicy::parse(&["127.0.0.0/8"]).unwrap());
    let t = {
        let state = t.state.clone().with_webhook_policy(policy);
        t.with_state(state)
    };
    let r = t
        .call(
            "PUT",
            &path,
            Some(json!({ "url": "http://2130706433:9/x" })),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
}

/// A local HTTP server that counts its requests, answering the first with
/// `answer` and the others with 410.
struct Receiver {
    base: String,
    hits: Arc<AtomicUsize>,
}

async fn receiver(answer: axum::response::Response<Body>) -> Receiver {
    let hits = Arc::new(AtomicUsize::new(0));
    let h = hits.clone();
    let answer = Arc::new(Mutex::new(Some(answer)));
    let app =
        axum::Router::new().fallback(move || {
            let (h, answer) = (h.clone(), answer.clone());
            async move {
                h.fetch_add(1, Ordering::SeqCst);
                answer.lock().unwrap().take().unwrap_or_else(|| {
                    axum::response::IntoResponse::into_response(StatusCode::GONE)
                })
            }
        });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Receiver {
        base: format!("http://{addr}"),
        hits,
    }
}

fn redirect_to(location: &str) -> axum::response::Response<Body> {
    axum::response::Response::builder()
        .status(StatusCode::TEMPORARY_REDIRECT)
        .header("location", location)
        .body(Body::empty())
        .unwrap()
}

/// The webhook client follows no redirect (a 307 would re-send the POST
/// elsewhere), and checks the address a name resolves to when it connects:
/// `localhost` resolves to loopback, which the default policy refuses.
#[tokio::test]
async fn the_webhook_client_is_never_redirected_nor_reaches_internal_names() {
    let target = receiver(StatusCode::OK.into_response_body()).await;
    let hook = receiver(redirect_to(&format!("{}/elsewhere", target.base))).await;
    let allowed = Arc::new(AddressPolicy::parse(&["127.0.0.1"]).unwrap());
    let client = outbound::webhook_client(Duration::from_secs(5), allowed).unwrap();
    let r = client
        .post(format!("{}/hooks/T0/secret", hook.base))
        .json(&json!({"text": "x"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::TEMPORARY_REDIRECT);
    assert_eq!(hook.hits.load(Ordering::SeqCst), 1);
    assert_eq!(
        target.hits.load(Ordering::SeqCst),
        0,
        "the redirect was followed"
    );

    // DNS gives loopback for `localhost`: refused when connecting, even
    // though the URL names no address.
    let strict = outbound::webhook_client(Duration::from_secs(5), Arc::default()).unwrap();
    let port = target.base.rsplit(':').next().unwrap();
    let err = strict
        .post(format!("http://localhost:{port}/hook"))
        .send()
        .await
        .unwrap_err();
    assert!(err.is_connect() || err.is_request(), "{err:?}");
    assert_eq!(target.hits.load(Ordering::SeqCst), 0);
}

trait IntoBody {
    fn into_response_body(self) -> axum::response::Response<Body>;
}

impl IntoBody for StatusCode {
    fn into_response_body(self) -> axum::response::Response<Body> {
        axum::response::IntoResponse::into_response(self)
    }
}

const PASSWORD: &str = "correct horse battery";

async fn with_admin(t: &TestApp) {
    let hash = errorflow_collector::http::dashboard::auth::hash_password(PASSWORD).unwrap();
    t.state
        .store
        .create_user("admin", &hash)
        .await
        .unwrap()
        .unwrap();
}

/// A sign-in from `from` (the connection's address): status and body.
async fn sign_in(
    app: axum::Router,
    user: &str,
    password: &str,
    from: &str,
    next: &str,
) -> (StatusCode, axum::http::HeaderMap, String) {
    use tower::ServiceExt;
    let addr: std::net::SocketAddr = format!("{from}:40000").parse().unwrap();
    let mut form = Request::get("/login").body(Body::empty()).unwrap();
    form.extensions_mut()
        .insert(axum::extract::ConnectInfo(addr));
    let res = app.clone().oneshot(form).await.unwrap();
    let cookie = res
        .headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|c| c.starts_with("ef_login_csrf="))
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_string();
    let html = axum::body::to_bytes(res.into_body(), usize::MAX)
        .await
        .unwrap();
    let html = String::from_utf8_lossy(&html);
    let marker = "name=\"csrf\" value=\"";
    let start = html.find(marker).unwrap() + marker.len();
    let csrf = &html[start..start + html[start..].find('"').unwrap()];
    let body: String = form_urlencoded::Serializer::new(String::new())
        .extend_pairs([
            ("csrf", csrf),
            ("username", user),
            ("password", password),
            ("next", next),
        ])
        .finish();
    let mut req = Request::post("/login")
        .header("content-type", "application/x-www-form-urlencoded")
        .header("cookie", cookie)
        .body(Body::from(body))
        .unwrap();
    req.extensions_mut()
        .insert(axum::extract::ConnectInfo(addr));
    let res = app.oneshot(req).await.unwrap();
    let status = res.status();
    let headers = res.headers().clone();
    let body = axum::body::to_bytes(res.into_body(), usize::MAX)
        .await
        .unwrap();
    (status, headers, String::from_utf8_lossy(&body).into_owned())
}

/// 30 wrong passwords at once for one name from one address: the lock is
/// checked and counted before each verification, so at most five are
/// verified (401) and the rest refused (429). The real user, signing in
/// from another address, is not locked out.
async fn parallel_wrong_passwords_are_locked_out(t: TestApp) {
    with_admin(&t).await;
    let attempts = (0..30).map(|i| {
        let app = t.app.clone();
        tokio::spawn(
            async move { sign_in(app, "admin", &format!("wrong {i}"), "10.0.0.66", "/").await },
        )
    });
    let mut statuses = Vec::new();
    for a in attempts.collect::<Vec<_>>() {
        statuses.push(a.await.unwrap().0);
    }
    let refused = statuses
        .iter()
        .filter(|s| **s == StatusCode::TOO_MANY_REQUESTS)
        .count();
    let verified = statuses
        .iter()
        .filter(|s| **s == StatusCode::UNAUTHORIZED)
        .count();
    assert_eq!(refused + verified, 30, "{statuses:?}");
    assert!(verified <= 5, "{verified} verified: {statuses:?}");
    // The attacker's address stays locked, even with the right password…
    let (status, headers, _) = sign_in(t.app.clone(), "admin", PASSWORD, "10.0.0.66", "/").await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    assert!(headers.contains_key("retry-after"));
    // …while the admin from their own address signs in.
    let (status, _, body) = sign_in(t.app.clone(), "admin", PASSWORD, "10.0.0.7", "/").await;
    assert_eq!(status, StatusCode::SEE_OTHER, "{body}");
}

/// With one verification slot and no waiting, parallel sign-ins of
/// different names from different addresses (which no lock stops) are
/// answered 429 rather than verified all at once.
async fn a_burst_of_sign_ins_waits_for_few_verifications(t: TestApp) {
    use errorflow_collector::http::dashboard::DashState;
    let mut state = t.state.clone();
    let mut dash = DashState::new("http://127.0.0.1:8000");
    dash.verifications = tokio::sync::Semaphore::new(1);
    dash.verify_wait = Duration::ZERO;
    state.dashboard = Arc::new(dash);
    let t = t.with_state(state);
    let attempts = (0..30).map(|i| {
        let app = t.app.clone();
        tokio::spawn(async move {
            sign_in(
                app,
                &format!("user{i}"),
                "wrong",
                &format!("10.1.0.{i}"),
                "/",
            )
            .await
        })
    });
    let mut busy = 0;
    for a in attempts.collect::<Vec<_>>() {
        let (status, headers, body) = a.await.unwrap();
        match status {
            StatusCode::UNAUTHORIZED => {}
            StatusCode::TOO_MANY_REQUESTS => {
                assert!(body.contains("Too many sign-ins at once"), "{body}");
                assert_eq!(headers["retry-after"], "1");
                busy += 1;
            }
            other => panic!("{other}: {body}"),
        }
    }
    assert!(busy > 0, "every verification ran at once");
}

/// After signing in, `next` takes the browser only to a path of this site:
/// a tab, a control character or an encoded slash falls back to `/`, and
/// never a 500 once the session exists.
async fn sign_in_redirects_only_to_local_paths(t: TestApp) {
    with_admin(&t).await;
    for (next, to) in [
        ("/incidents/1?status=open", "/incidents/1?status=open"),
        ("/\t/evil.example", "/"),
        ("/%09/evil.example", "/"),
        ("//evil.example", "/"),
        ("/\\evil.example", "/"),
        ("/\u{1}x", "/"),
        ("/x\r\nSet-Cookie: a=b", "/"),
        ("https://evil.example/", "/"),
    ] {
        let (status, headers, body) =
            sign_in(t.app.clone(), "admin", PASSWORD, "10.2.0.1", next).await;
        assert_eq!(status, StatusCode::SEE_OTHER, "{next:?}: {body}");
        assert_eq!(headers["location"], to, "{next:?}");
    }
}

/// Serves `t`'s app on a real socket with one-second read timeouts.
async fn served(t: &TestApp) -> std::net::SocketAddr {
    use errorflow_collector::http::server::{serve, Timeouts};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let timeouts = Timeouts {
        header_read: Duration::from_secs(1),
        body_read: Duration::from_secs(1),
    };
    let app = t.app.clone();
    tokio::spawn(serve(listener, app, timeouts, std::future::pending()));
    addr
}

/// Writes `head`, then `drip` every 200 ms (for at most 10 s) until the
/// server answers or closes; returns what it answered and when.
async fn trickle(
    addr: std::net::SocketAddr,
    head: String,
    drip: &'static [u8],
) -> (String, Duration) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let started = Instant::now();
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut read, mut write) = stream.into_split();
    let reader = tokio::spawn(async move {
        let mut answer = Vec::new();
        let _ = read.read_to_end(&mut answer).await;
        (
            String::from_utf8_lossy(&answer).into_owned(),
            started.elapsed(),
        )
    });
    write.write_all(head.as_bytes()).await.unwrap();
    while !reader.is_finished() && started.elapsed() < Duration::from_secs(10) {
        tokio::time::sleep(Duration::from_millis(200)).await;
        if write.write_all(drip).await.is_err() {
            break;
        }
    }
    let _ = write.shutdown().await;
    reader.await.unwrap()
}

/// A client that sends its headers a line at a time, slower than the
/// header timeout allows, is disconnected; one that trickles its body gets
/// 408. Neither holds its connection for long.
#[tokio::test]
async fn trickling_clients_are_cut_off() {
    let t = common::test_app(common::sqlite_store().await).await;
    let addr = served(&t).await;
    let (answer, took) = trickle(addr, "GET /healthz HTTP/1.1\r\n".into(), b"X-Slow: 1\r\n").await;
    assert!(took < Duration::from_secs(4), "held for {took:?}: {answer}");
    assert!(!answer.contains("200 OK"), "{answer}");

    let head = format!(
        "POST /errors/custom HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n\
         x-errorflow-key: {}\r\ncontent-length: 1000\r\n\r\n{{",
        t.key
    );
    let (answer, took) = trickle(addr, head, b" ").await;
    assert!(took < Duration::from_secs(4), "held for {took:?}: {answer}");
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("request_timeout"), "{answer}");

    // A request sent at once is served as usual.
    let (answer, _) = trickle(
        addr,
        "GET /healthz HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n".into(),
        b"",
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
}

/// The 403 for a key of another project does not say which project owns it.
async fn a_key_of_another_project_is_refused_without_naming_it(t: TestApp) {
    let (other_key, other_id) = t.add_project("secret-project").await;
    let path = format!("/api/{}/envelope/?sentry_key={other_key}", t.project_id);
    let ok = b"{}\n{\"type\":\"event\"}\n{\"message\":\"x\"}\n".to_vec();
    let r = t.send(post(&path, ok, "identity")).await;
    assert_error(&r, StatusCode::FORBIDDEN, "forbidden");
    let message = r.body["error"]["message"].as_str().unwrap();
    assert!(!message.contains(&other_id.to_string()), "{message}");
}

/// `method path` on `app` with `Authorization: Bearer token`: the status and
/// the JSON body (`Null` when empty).
async fn with_token(
    app: &axum::Router,
    token: &str,
    method: &str,
    path: &str,
) -> (StatusCode, serde_json::Value) {
    use tower::ServiceExt as _;
    let req = Request::builder()
        .method(method)
        .uri(path)
        .header("authorization", format!("Bearer {token}"))
        .body(Body::empty())
        .unwrap();
    let res = app.clone().oneshot(req).await.unwrap();
    let status = res.status();
    let bytes = axum::body::to_bytes(res.into_body(), usize::MAX)
        .await
        .unwrap();
    let body = serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null);
    (status, body)
}

/// A token revoked through the API is refused by the collector that revoked
/// it from the next request, and by another collector on the same database
/// once its cached look-up expires (that one trusts its cache for the TTL,
/// the documented window; it is waited for by polling, not by sleeping a
/// guessed time). The list never shows a token or its hash.
async fn a_revoked_token_is_refused_here_at_once_and_elsewhere_after_the_cache(t: TestApp) {
    let ci = credentials::new_api_token();
    let ci_hash = credentials::hash_secret(&ci);
    let ci_id = t.db.store.create_token("ci", &ci_hash).await.unwrap().id;
    // Two more collectors on the same database, each with its own cache: one
    // that trusts a look-up for an hour, one for 50 ms.
    let cached = errorflow_collector::http::router(
        t.state
            .clone()
            .with_key_cache_ttl(Duration::from_secs(3600)),
    );
    let brief = errorflow_collector::http::router(
        t.state
            .clone()
            .with_key_cache_ttl(Duration::from_millis(50)),
    );
    for app in [&t.app, &cached, &brief] {
        let (status, list) = with_token(app, &ci, "GET", "/api/v1/tokens").await;
        assert_eq!(status, StatusCode::OK, "{list}");
        let names: Vec<&str> = list
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["name"].as_str().unwrap())
            .collect();
        assert_eq!(names, ["tester", "ci"]);
        let mut fields: Vec<&str> = list[1]
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        fields.sort();
        assert_eq!(fields, ["created_at", "id", "last_used_at", "name"]);
        let text = list.to_string();
        assert!(!text.contains(&ci) && !text.contains(&ci_hash), "{text}");
    }

    let r = t
        .call("DELETE", &format!("/api/v1/tokens/{ci_id}"), None)
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.body["id"], ci_id);
    assert_eq!(r.body["name"], "ci");
    assert!(!r.body.to_string().contains(&ci_hash));

    // The collector that revoked it refuses it from the next request.
    let (status, body) = with_token(&t.app, &ci, "GET", "/api/v1/groups").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    assert_eq!(body["error"]["code"], "unauthorized");
    // A collector whose cache still holds it accepts it until the entry expires…
    let (status, body) = with_token(&cached, &ci, "GET", "/api/v1/groups").await;
    assert_eq!(status, StatusCode::OK, "inside the cache window: {body}");
    // …and refuses it once the entry has expired.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (status, body) = with_token(&brief, &ci, "GET", "/api/v1/groups").await;
        if status == StatusCode::UNAUTHORIZED {
            assert_eq!(body["error"]["code"], "unauthorized");
            break;
        }
        assert_eq!(status, StatusCode::OK, "{body}");
        assert!(
            Instant::now() < deadline,
            "still accepted after its cache entry expired"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The other token still works, and the list no longer holds the revoked one.
    let r = t.get("/api/v1/tokens").await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.body.as_array().unwrap().len(), 1, "{}", r.body);
    assert_eq!(r.body[0]["name"], "tester");
}

/// Revoking the token that authenticates the request is allowed; the next
/// request with it is refused.
async fn a_token_may_revoke_itself(t: TestApp) {
    let me = t.get("/api/v1/tokens").await.body[0]["id"]
        .as_i64()
        .unwrap();
    let r = t
        .call("DELETE", &format!("/api/v1/tokens/{me}"), None)
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.body["name"], "tester");
    let r = t.get("/api/v1/groups").await;
    assert_error(&r, StatusCode::UNAUTHORIZED, "unauthorized");
}

/// An unknown or malformed id is a JSON error, and revokes nothing.
async fn revoking_an_unknown_token_is_a_json_404(t: TestApp) {
    let r = t.call("DELETE", "/api/v1/tokens/999999", None).await;
    assert_error(&r, StatusCode::NOT_FOUND, "not_found");
    let r = t.call("DELETE", "/api/v1/tokens/ci", None).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.body);
    assert!(r.body["error"]["message"].is_string(), "{}", r.body);
    assert_eq!(
        t.get("/api/v1/tokens").await.body.as_array().unwrap().len(),
        1
    );
}

/// Where a generated text goes in a request.
#[derive(Clone, Copy, Debug)]
enum Slot {
    /// A query parameter of `method path`.
    Query(&'static str, &'static str, &'static str),
    /// The path with `{text}` replaced.
    Path(&'static str, &'static str),
    /// A field of the JSON body `base` of `method path`.
    Json(&'static str, &'static str, &'static str),
    /// A field of the sign-in form.
    Login(&'static str),
    /// A query parameter of a dashboard page (signed in).
    Page(&'static str, &'static str),
    /// A field of a dashboard form (signed in, with its CSRF token).
    Form(&'static str, &'static str),
}

/// Every text parameter of every management route, of the sign-in form,
/// and of the dashboard's pages and forms that reach the store. `{id}` is an
/// incident, `{project}` a project.
const SLOTS: &[Slot] = &[
    Slot::Query("GET", "/api/v1/groups", "status"),
    Slot::Query("GET", "/api/v1/groups", "service"),
    Slot::Query("GET", "/api/v1/groups", "environment"),
    Slot::Query("GET", "/api/v1/groups", "release"),
    Slot::Query("GET", "/api/v1/groups", "severity"),
    Slot::Query("GET", "/api/v1/groups", "q"),
    Slot::Query("GET", "/api/v1/groups", "sort"),
    Slot::Query("GET", "/api/v1/groups", "limit"),
    Slot::Query("GET", "/api/v1/groups", "cursor"),
    Slot::Query("GET", "/api/v1/groups", "project"),
    Slot::Query("GET", "/api/v1/groups", "view"),
    Slot::Query("GET", "/api/v1/groups/{id}/events", "cursor"),
    Slot::Query("GET", "/api/v1/groups/{id}/events", "limit"),
    Slot::Query("GET", "/api/v1/events", "project"),
    Slot::Query("GET", "/api/v1/events", "service"),
    Slot::Query("GET", "/api/v1/events", "environment"),
    Slot::Query("GET", "/api/v1/events", "level"),
    Slot::Query("GET", "/api/v1/events", "cursor"),
    Slot::Query("GET", "/api/v1/triage/digest", "cluster_key"),
    Slot::Query("GET", "/api/v1/triage/digest", "id"),
    Slot::Query("GET", "/api/v1/triage/stale", "limit"),
    Slot::Query("GET", "/api/v1/groups/{id}/triage", "limit"),
    Slot::Query("GET", "/api/v1/groups/{id}/kestra-runs", "limit"),
    Slot::Query("PUT", "/api/v1/groups/{id}/triage", "analyst"),
    Slot::Query("PUT", "/api/v1/groups/{id}/triage", "model"),
    Slot::Query("PUT", "/api/v1/groups/{id}/triage", "idempotency_key"),
    Slot::Path("GET", "/api/v1/groups/{text}"),
    Slot::Path("GET", "/api/v1/events/{text}"),
    Slot::Path("POST", "/groups/{text}/summarize"),
    Slot::Path("GET", "/api/v1/groups/{id}/digest?x={text}"),
    Slot::Path("DELETE", "/api/v1/tokens/{text}"),
    Slot::Json("POST", "/api/v1/groups/{id}/resolve", "reason"),
    Slot::Json("POST", "/api/v1/groups/{id}/quiet", "reason"),
    Slot::Json("POST", "/api/v1/groups/{id}/reopen", "reason"),
    Slot::Json("POST", "/api/v1/projects", "name"),
    Slot::Json("PUT", "/api/v1/projects/{project}/alert-webhook", "url"),
    Slot::Json("PUT", "/api/v1/projects/{project}/github", "repo"),
    Slot::Json("PUT", "/api/v1/projects/{project}/github", "token"),
    Slot::Json("PUT", "/api/v1/projects/{project}/github", "api_url"),
    Slot::Json("PUT", "/api/v1/projects/{project}/github", "webhook_secret"),
    Slot::Json("PUT", "/api/v1/groups/{id}/priority", "severity"),
    Slot::Json("PUT", "/api/v1/groups/{id}/triage", "summary"),
    Slot::Json("PUT", "/api/v1/groups/{id}/triage", "probable_cause"),
    Slot::Json("PUT", "/api/v1/groups/{id}/triage", "next_steps"),
    Slot::Login("username"),
    Slot::Login("password"),
    Slot::Login("next"),
    Slot::Page("/", "q"),
    Slot::Page("/", "service"),
    Slot::Page("/", "environment"),
    Slot::Page("/", "release"),
    Slot::Page("/events", "service"),
    Slot::Page("/events", "cursor"),
    Slot::Form("/incidents/{id}/resolve", "reason"),
    Slot::Form("/projects/{project}/alert-webhook", "url"),
];

/// A valid body for the JSON routes, into which one field's text goes.
fn base_body(path: &str) -> serde_json::Value {
    if path.ends_with("/triage") {
        json!({"summary": "s", "severity": "low", "priority": 10, "probable_cause": "c",
               "next_steps": ["x"], "confidence": 0.5})
    } else if path.ends_with("/github") {
        json!({"repo": "acme/shop", "token": "ghp_x"})
    } else {
        json!({})
    }
}

fn encode(text: &str) -> String {
    form_urlencoded::byte_serialize(text.as_bytes()).collect()
}

/// The request a slot makes with `text`.
fn slot_request(t: &TestApp, group: i64, session: &str, slot: Slot, text: &str) -> Request<Body> {
    let fill = |p: &str| {
        p.replace("{id}", &group.to_string())
            .replace("{project}", &t.project_id.to_string())
    };
    let api = |method: &str, uri: String| {
        Request::builder()
            .method(method)
            .uri(uri)
            .header("authorization", format!("Bearer {}", t.token))
    };
    let form = |uri: String, pairs: Vec<(&str, &str)>, cookie: String| {
        let body: String = form_urlencoded::Serializer::new(String::new())
            .extend_pairs(pairs)
            .finish();
        Request::post(uri)
            .header("content-type", "application/x-www-form-urlencoded")
            .header("cookie", cookie)
            .body(Body::from(body))
            .unwrap()
    };
    let session_cookie = format!("ef_session={session}");
    match slot {
        Slot::Query(method, path, name) => {
            let body = if method == "PUT" {
                Body::from(base_body(path).to_string())
            } else {
                Body::empty()
            };
            api(method, format!("{}?{name}={}", fill(path), encode(text)))
                .header("content-type", "application/json")
                .body(body)
                .unwrap()
        }
        Slot::Path(method, path) => {
            // A number could name the token this test authenticates with.
            let text = if path.contains("tokens") && text.trim().parse::<i64>().is_ok() {
                format!("x{text}")
            } else {
                text.to_string()
            };
            api(method, fill(&path.replace("{text}", &encode(&text))))
                .body(Body::empty())
                .unwrap()
        }
        Slot::Json(method, path, field) => {
            let mut body = base_body(path);
            body[field] = if field == "next_steps" {
                json!([text])
            } else {
                json!(text)
            };
            api(method, fill(path))
                .header("content-type", "application/json")
                .body(Body::from(body.to_string()))
                .unwrap()
        }
        Slot::Login(field) => {
            let mut pairs = vec![
                ("csrf", "tok"),
                ("username", "admin"),
                ("password", "wrong"),
                ("next", "/"),
            ];
            for pair in &mut pairs {
                if pair.0 == field {
                    pair.1 = text;
                }
            }
            form("/login".into(), pairs, "ef_login_csrf=tok".into())
        }
        Slot::Page(path, name) => Request::get(format!("{path}?{name}={}", encode(text)))
            .header("cookie", session_cookie)
            .body(Body::empty())
            .unwrap(),
        Slot::Form(path, field) => {
            let csrf = errorflow_collector::http::dashboard::auth::csrf_token(session);
            form(
                fill(path),
                vec![("csrf", csrf.as_str()), (field, text)],
                session_cookie,
            )
        }
    }
}

/// Text of any characters, often with a NUL in it.
fn any_text() -> impl proptest::strategy::Strategy<Value = String> {
    use proptest::prelude::*;
    prop_oneof![
        "(?s).{0,12}",
        ("(?s).{0,6}", "(?s).{0,6}").prop_map(|(a, b)| format!("{a}\0{b}")),
    ]
}

/// Every text parameter of every management route and of the sign-in form,
/// with any text and often a NUL (which Postgres cannot store in text): never
/// a 5xx or a panic; a NUL is refused with a 4xx (JSON on the API).
fn management_text_never_fails(postgres: bool) {
    use proptest::strategy::Strategy;
    use proptest::test_runner::{Config, TestCaseError, TestRunner};
    use tower::ServiceExt as _;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let (t, group, session) = rt.block_on(async {
        let db = if postgres {
            common::pg_store().await
        } else {
            common::sqlite_store().await
        };
        let t = common::test_app(db).await;
        t.post_events(json!([common::message_event("boom")])).await;
        let group = t.get("/api/v1/groups").await.body["groups"][0]["id"]
            .as_i64()
            .unwrap();
        with_admin(&t).await;
        let user = t.state.store.user_by_name("admin").await.unwrap().unwrap();
        let session = errorflow_collector::http::dashboard::auth::random_token();
        let now = chrono::Utc::now();
        t.state
            .store
            .create_session(
                &errorflow_collector::http::dashboard::auth::session_hash(&session),
                user.id,
                now,
                now + chrono::Duration::hours(1),
            )
            .await
            .unwrap();
        (t, group, session)
    });
    let mut runner = TestRunner::new(Config {
        cases: 512,
        failure_persistence: None,
        ..Config::default()
    });
    let strategy = (0..SLOTS.len()).prop_flat_map(|i| (proptest::strategy::Just(i), any_text()));
    runner
        .run(&strategy, |(i, text)| {
            let slot = SLOTS[i];
            let req = slot_request(&t, group, &session, slot, &text);
            let (status, body) = rt.block_on(async {
                let res = t.app.clone().oneshot(req).await.unwrap();
                let status = res.status();
                let bytes = axum::body::to_bytes(res.into_body(), usize::MAX)
                    .await
                    .unwrap();
                (status, String::from_utf8_lossy(&bytes).into_owned())
            });
            if status.is_server_error() {
                return Err(TestCaseError::fail(format!(
                    "{slot:?} with {text:?}: {status} {body}"
                )));
            }
            if text.contains('\0') && !matches!(slot, Slot::Login(_) | Slot::Form(..)) {
                // Refused with a 4xx whose JSON says what was wrong (the NUL,
                // or a check that came first, such as an unknown severity).
                let v: serde_json::Value = serde_json::from_str(&body).map_err(|_| {
                    TestCaseError::fail(format!("{slot:?}: {status} not JSON: {body}"))
                })?;
                let message = v["error"]["message"].as_str().unwrap_or_default();
                if !status.is_client_error() || message.is_empty() {
                    return Err(TestCaseError::fail(format!(
                        "{slot:?} with {text:?}: {status} {body}"
                    )));
                }
            }
            Ok(())
        })
        .unwrap();
}

#[test]
fn sqlite_management_text_never_fails() {
    management_text_never_fails(false);
}

#[test]
fn postgres_management_text_never_fails() {
    management_text_never_fails(true);
}

/// A project deleted by another collector (here: through the store, behind
/// this collector's back) while this one still trusts its cached key: the
/// key's next events are refused with 403 as an unknown key's are, on every
/// ingest route, and nothing of them is stored. The cache is given an hour,
/// so that it is the cached key, not a fresh look-up, that is refused.
async fn a_cached_key_of_a_project_deleted_elsewhere_is_a_403_storing_nothing(t: TestApp) {
    use tower::ServiceExt as _;
    for (i, route) in ["ours", "custom", "sentry"].into_iter().enumerate() {
        let (key, id) = t.add_project(&format!("doomed-{i}")).await;
        let app = errorflow_collector::http::router(
            t.state
                .clone()
                .with_key_cache_ttl(Duration::from_secs(3600)),
        );
        let request = |message: &str| {
            let (path, body) = match route {
                "ours" => (
                    "/api/v1/events".to_string(),
                    json!({"events": [common::message_event(message)]}),
                ),
                "custom" => (
                    "/errors/custom".to_string(),
                    json!({"service": "s", "error_type": "E", "message": message}),
                ),
                _ => (
                    format!("/api/{id}/store/?sentry_key={key}"),
                    json!({"message": message, "level": "error"}),
                ),
            };
            Request::post(path)
                .header("content-type", "application/json")
                .header("x-errorflow-key", &key)
                .body(Body::from(body.to_string()))
                .unwrap()
        };
        let send = |req: Request<Body>| async {
            let res = app.clone().oneshot(req).await.unwrap();
            let status = res.status();
            let bytes = axum::body::to_bytes(res.into_body(), usize::MAX)
                .await
                .unwrap();
            let body: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
            (status, body)
        };
        let (status, body) = send(request("first")).await;
        assert!(status.is_success(), "{route}: {status} {body}");
        errorflow_collector::store::delete_project_in_chunks(t.db.store.as_ref(), id)
            .await
            .unwrap()
            .expect("the project existed");
        let (status, body) = send(request("late")).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{route}: {body}");
        assert_eq!(body["error"]["code"], "forbidden", "{route}: {body}");
        let incidents =
            t.db.texts(&format!(
                "SELECT CAST(COUNT(*) AS TEXT) FROM error_groups WHERE project_id = {id}"
            ))
            .await;
        assert_eq!(incidents, ["0"], "{route}");
        let events = t.get(&format!("/api/v1/events?project={id}")).await;
        assert_eq!(events.body["events"], json!([]), "{route}: {}", events.body);
    }
    // The first project's key still works.
    let r = t.post_events(json!([common::message_event("alive")])).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
}
