//! Every shape of Sentry event that SDKs old and new send, through the real
//! HTTP stack on both backends: each event is posted to `/api/{id}/store/`
//! and, with a fresh id, as an envelope; both must be stored, titled and
//! culprited as Sentry does, and land in one incident. The events are
//! written here for these tests: legacy (Raven) interface names, a single
//! exception object, a top-level stack, events with neither message nor
//! exception, Apple and native frames without `in_app`, address-only
//! frames, console build-id prefixes, Android threads and `_meta`.

mod common;

use axum::body::Body;
use axum::http::{header, Request, StatusCode};
use errorflow_collector::http::dashboard::auth;
use serde_json::{json, Value};

use common::{TestApp, TestDb};

const PASSWORD: &str = "correct horse battery staple";

common::backend_tests!(
    setup => super::app;
    every_legacy_interface_name_is_read,
    legacy_template_and_security_reports,
    a_single_exception_object_and_a_top_level_stack,
    events_with_neither_message_nor_exception_are_stored_unlabeled,
    apple_frames_are_the_apps_by_their_binary,
    address_only_frames_are_culprited_by_their_image,
    console_build_ids_are_not_names,
    android_threads_without_a_crashed_one,
    scrubbing_annotations_are_kept_and_shown,
);

async fn app(db: TestDb) -> TestApp {
    let t = TestApp::new(db, "shop").await;
    let hash = auth::hash_password(PASSWORD).unwrap();
    t.state
        .store
        .create_user("admin", &hash)
        .await
        .unwrap()
        .unwrap();
    t
}

fn new_id() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

fn auth_header(t: &TestApp) -> String {
    format!(
        "Sentry sentry_key={}, sentry_version=7, sentry_client=raven-python/6.10.0",
        t.key
    )
}

/// What one event became: the stored event and its incident.
struct Landed {
    event: Value,
    group: Value,
}

/// Posts `event` to `/store/` and, with another id, as an envelope; both
/// are accepted, stored and land in one incident, which is returned with
/// the envelope's stored event.
async fn send_both(t: &TestApp, event: &Value) -> Landed {
    let mut first = event.clone();
    first["event_id"] = json!(new_id());
    let r = t
        .send(
            Request::post(format!("/api/{}/store/", t.project_id))
                .header("x-sentry-auth", auth_header(t))
                .header(header::CONTENT_TYPE, "application/json")
                .body(Body::from(first.to_string()))
                .unwrap(),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "store: {}", r.body);
    assert_eq!(r.body["id"], first["event_id"]);

    let mut second = event.clone();
    let id = new_id();
    second["event_id"] = json!(id);
    let payload = second.to_string();
    let body = format!(
        "{{\"event_id\":\"{id}\"}}\n{{\"type\":\"event\",\"length\":{}}}\n{payload}\n",
        payload.len()
    );
    let r = t
        .send(
            Request::post(format!("/api/{}/envelope/", t.project_id))
                .header("x-sentry-auth", auth_header(t))
                .body(Body::from(body))
                .unwrap(),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "envelope: {}", r.body);

    let a = stored(t, first["event_id"].as_str().unwrap()).await;
    let b = stored(t, &id).await;
    assert_eq!(
        a["group_id"], b["group_id"],
        "a re-sent event joins its incident: {a}\n{b}"
    );
    let group = t.get(&format!("/api/v1/groups/{}", b["group_id"])).await;
    assert_eq!(group.status, StatusCode::OK, "{}", group.body);
    Landed {
        event: b,
        group: group.body,
    }
}

async fn stored(t: &TestApp, id: &str) -> Value {
    let r = t.get(&format!("/api/v1/events/{id}")).await;
    assert_eq!(r.status, StatusCode::OK, "event {id}: {}", r.body);
    r.body
}

/// The incident page, signed in to the dashboard.
async fn incident_page(t: &TestApp, group_id: &Value) -> String {
    let (_, headers, body) = t
        .send_raw(Request::get("/login").body(Body::empty()).unwrap())
        .await;
    let login_cookie = cookie(&headers, auth::LOGIN_CSRF_COOKIE);
    let token = field(&String::from_utf8_lossy(&body), "csrf");
    let form: String = form_urlencoded::Serializer::new(String::new())
        .extend_pairs([
            ("csrf", token.as_str()),
            ("username", "admin"),
            ("password", PASSWORD),
            ("next", "/"),
        ])
        .finish();
    let (status, headers, _) = t
        .send_raw(
            Request::post("/login")
                .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
                .header(header::COOKIE, login_cookie)
                .body(Body::from(form))
                .unwrap(),
        )
        .await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    let session = cookie(&headers, auth::SESSION_COOKIE);
    let (status, _, body) = t
        .send_raw(
            Request::get(format!("/incidents/{group_id}"))
                .header(header::COOKIE, session)
                .body(Body::empty())
                .unwrap(),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    String::from_utf8_lossy(&body).into_owned()
}

fn cookie(headers: &axum::http::HeaderMap, name: &str) -> String {
    headers
        .get_all(header::SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|c| c.starts_with(&format!("{name}=")))
        .unwrap_or_else(|| panic!("no {name} cookie"))
        .split(';')
        .next()
        .unwrap()
        .to_owned()
}

fn field(html: &str, name: &str) -> String {
    let marker = format!("name=\"{name}\" value=\"");
    let start = html.find(&marker).expect("field") + marker.len();
    html[start..][..html[start..].find('"').unwrap()].to_owned()
}

async fn every_legacy_interface_name_is_read(t: TestApp) {
    // A Raven (legacy Python client) event: every interface under its
    // `sentry.interfaces.*` name, the exception's stack too.
    let raven = json!({
        "platform": "python",
        "level": "error",
        "release": "shop@2.0.0",
        "culprit": "ignored: clients no longer set it",
        "sentry.interfaces.Message": {"message": "charge of %s for order %d failed", "params": ["EUR 12", 17]},
        "sentry.interfaces.Exception": {"values": [{
            "type": "ZeroDivisionError", "value": "division by zero", "module": "builtins",
            "sentry.interfaces.Stacktrace": {"frames": [
                {"module": "shop.app", "function": "dispatch", "filename": "shop/app.py", "lineno": 10, "in_app": true},
                {"module": "shop.billing", "function": "split_total", "filename": "shop/billing.py", "lineno": 42, "in_app": true,
                 "context_line": "    share = total / parts"},
            ]},
        }]},
        "sentry.interfaces.Http": {"url": "https://shop.test/orders/17/pay", "method": "POST",
                                   "headers": {"User-Agent": "curl/8"}, "query_string": "step=2"},
        "sentry.interfaces.User": {"id": "u-17", "email": "buyer@shop.test"},
        "sentry.interfaces.Breadcrumbs": {"values": [{"category": "db", "message": "SELECT 1"}]},
        "sentry.interfaces.Contexts": {"runtime": {"name": "CPython", "version": "2.7.18"}},
        "sentry.interfaces.DebugMeta": {"images": []},
    });
    let l = send_both(&t, &raven).await;
    let data = &l.event["data"];
    assert_eq!(l.event["error_type"], "ZeroDivisionError");
    assert_eq!(l.group["title"], "ZeroDivisionError: division by zero");
    assert_eq!(l.group["culprit"], "shop.billing::split_total");
    assert_eq!(
        data["message"], "charge of EUR 12 for order 17 failed",
        "params formatted into the message"
    );
    assert_eq!(data["message_template"], "charge of %s for order %d failed");
    let frames = &data["exception"][0]["stacktrace"]["frames"];
    assert_eq!(frames.as_array().unwrap().len(), 2);
    assert_eq!(data["request"]["url"], "https://shop.test/orders/17/pay");
    assert_eq!(data["request"]["method"], "POST");
    assert_eq!(data["request"]["query_string"], "step=2");
    assert_eq!(data["user"]["id"], "u-17");
    assert_eq!(data["breadcrumbs"][0]["message"], "SELECT 1");
    assert_eq!(data["extra"]["contexts"]["runtime"]["name"], "CPython");
    assert_eq!(l.event["path"], "/orders/17/pay");

    // A canonical name wins over its legacy one, as in Sentry.
    let both = json!({
        "platform": "python",
        "exception": {"values": [{"type": "KeyError", "value": "'sku'"}]},
        "sentry.interfaces.Exception": {"values": [{"type": "IgnoredError", "value": "x"}]},
        "request": {"url": "https://shop.test/a"},
        "sentry.interfaces.Http": {"url": "https://shop.test/ignored"},
    });
    let l = send_both(&t, &both).await;
    assert_eq!(l.event["error_type"], "KeyError");
    assert_eq!(l.event["data"]["request"]["url"], "https://shop.test/a");

    // Threads and debug images under their legacy names (a native crash
    // whose exception has no stack of its own: its thread's is used).
    let native = json!({
        "platform": "native",
        "sentry.interfaces.Exception": [{"type": "SIGSEGV", "value": "Segfault", "thread_id": 7}],
        "sentry.interfaces.Threads": {"values": [
            {"id": 1, "name": "io", "stacktrace": {"frames": [{"function": "poll_io", "package": "/lib/libc.so.6"}]}},
            {"id": 7, "name": "render", "stacktrace": {"frames": [
                {"function": "render_loop", "instruction_addr": "0x5000"},
                {"function": "draw_sprite(Sprite const&)", "instruction_addr": "0x5100"},
            ]}},
        ]},
        "sentry.interfaces.DebugMeta": {"images": [
            {"type": "elf", "code_file": "/opt/game/bin/game", "image_addr": "0x4000", "image_size": 8192},
        ]},
    });
    let l = send_both(&t, &native).await;
    let data = &l.event["data"];
    assert_eq!(l.group["title"], "SIGSEGV: Segfault");
    assert_eq!(
        l.group["culprit"], "draw_sprite",
        "the thread's innermost app frame"
    );
    let frames = &data["exception"][0]["stacktrace"]["frames"];
    assert_eq!(
        frames[1]["package"], "/opt/game/bin/game",
        "from the loaded images"
    );
    assert_eq!(frames[1]["in_app"], true);
    assert_eq!(data["threads"].as_array().unwrap().len(), 2);
    assert_eq!(
        data["threads"][0]["stacktrace"]["frames"][0]["in_app"],
        false
    );
}

async fn legacy_template_and_security_reports(t: TestApp) {
    // Raven's template error: the template's location is the stack.
    let template = json!({
        "platform": "python",
        "sentry.interfaces.Message": {"message": "TemplateSyntaxError"},
        "sentry.interfaces.Template": {"filename": "orders/list.html", "abs_path": "/srv/shop/templates/orders/list.html",
            "lineno": 12, "context_line": "{% for order in orders %}", "pre_context": ["<ul>"], "post_context": ["</ul>"]},
    });
    let l = send_both(&t, &template).await;
    assert_eq!(l.group["title"], "TemplateSyntaxError");
    let frame = &l.event["data"]["stacktrace"]["frames"][0];
    assert_eq!(frame["filename"], "orders/list.html");
    assert_eq!(frame["context_line"], "{% for order in orders %}");

    // A browser's CSP report, as Sentry's security endpoint stores it.
    let csp = json!({
        "platform": "javascript",
        "sentry.interfaces.Csp": {"document_uri": "https://shop.test/cart", "effective_directive": "script-src",
                                  "blocked_uri": "https://evil.test/x.js", "violated_directive": "script-src 'self'"},
    });
    let l = send_both(&t, &csp).await;
    assert_eq!(l.group["title"], "Blocked script from evil.test");
    assert_eq!(
        l.event["data"]["extra"]["csp"]["blocked_uri"],
        "https://evil.test/x.js"
    );
}

async fn a_single_exception_object_and_a_top_level_stack(t: TestApp) {
    // Old clients send one exception as the object itself, and its stack
    // beside it at the top level.
    let event = json!({
        "platform": "java",
        "message": "Authentication failed, token expired!",
        "exception": {"type": "ApiException", "value": "Authentication failed, token expired!", "module": "io.shop.api"},
        "stacktrace": {"frames": [
            {"module": "io.shop.Main", "function": "main", "lineno": 5, "in_app": true},
            {"module": "io.shop.api.ApiRequest", "function": "perform", "lineno": 41, "in_app": true},
        ]},
    });
    let l = send_both(&t, &event).await;
    assert_eq!(l.event["error_type"], "ApiException");
    assert_eq!(
        l.group["title"],
        "ApiException: Authentication failed, token expired!"
    );
    assert_eq!(l.group["culprit"], "io.shop.api.ApiRequest::perform");
    let data = &l.event["data"];
    assert_eq!(
        data["exception"][0]["stacktrace"]["frames"][1]["function"], "perform",
        "the top-level stack is the exception's"
    );
    assert!(data.get("stacktrace").is_none(), "{data}");

    // A bare list of exceptions, and a top-level stack alone.
    let l = send_both(
        &t,
        &json!({"exception": [{"type": "TypeError", "value": "x is undefined"}]}),
    )
    .await;
    assert_eq!(l.group["title"], "TypeError: x is undefined");
    let l = send_both(
        &t,
        &json!({"platform": "python", "message": "slow checkout",
            "stacktrace": {"frames": [{"module": "shop.checkout", "function": "finish", "in_app": true}]}}),
    )
    .await;
    assert_eq!(l.group["title"], "slow checkout");
    assert_eq!(l.group["culprit"], "shop.checkout::finish");
}

async fn events_with_neither_message_nor_exception_are_stored_unlabeled(t: TestApp) {
    // Only a request (a form post captured without message).
    let request_only = json!({
        "platform": "python",
        "request": {"url": "https://shop.test/orders/17/pay?x=1", "method": "POST",
                    "data": {"card": "[Filtered]"}, "headers": {"Content-Type": "application/x-www-form-urlencoded"}},
    });
    let a = send_both(&t, &request_only).await;
    assert_eq!(a.group["title"], "<unlabeled event>");
    assert_eq!(a.group["culprit"], "https://shop.test/orders/17/pay");
    assert_eq!(a.event["error_type"], "Error");
    // Another order on the same route joins it; another route does not.
    let mut other_order = request_only.clone();
    other_order["request"]["url"] = json!("https://shop.test/orders/18/pay");
    let b = send_both(&t, &other_order).await;
    assert_eq!(b.group["id"], a.group["id"]);
    let mut other_route = request_only.clone();
    other_route["request"]["url"] = json!("https://shop.test/cart");
    let c = send_both(&t, &other_route).await;
    assert_ne!(c.group["id"], a.group["id"]);

    // Empty exception and empty stack: nothing but the event.
    let empty =
        json!({"platform": "other", "exception": {"values": []}, "stacktrace": {"frames": []}});
    let l = send_both(&t, &empty).await;
    assert_eq!(l.group["title"], "<unlabeled event>");
    // A stack and nothing else: titled unlabeled, culprited by its frame.
    let stack_only = json!({"platform": "python",
        "stacktrace": {"frames": [{"module": "shop.jobs", "function": "nightly", "in_app": true}]}});
    let l = send_both(&t, &stack_only).await;
    assert_eq!(l.group["title"], "<unlabeled event>");
    assert_eq!(l.group["culprit"], "shop.jobs::nightly");

    // errorflow's own protocol and the seed's endpoint keep requiring content.
    let r = t
        .post_events(json!([{"event_id": uuid::Uuid::new_v4(), "service": "shop"}]))
        .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.body);
    assert!(r.body["error"]["rejected"][0]["error"]
        .as_str()
        .unwrap()
        .contains("neither message nor exception"));
    let r = t
        .post_custom(json!({"service": "shop", "error_type": "E"}))
        .await;
    assert!(r.status.is_client_error(), "{}", r.body);
}

async fn apple_frames_are_the_apps_by_their_binary(t: TestApp) {
    let app = "/var/containers/Bundle/Application/0C1D6E2A-1111-4222-8333-944455556666/Shop.app";
    let frame = |function: &str, package: String, addr: &str| {
        json!({"function": function, "package": package, "instruction_addr": addr,
               "symbol_addr": "0x0000000100008000", "image_addr": "0x0000000100000000"})
    };
    let event = json!({
        "platform": "cocoa",
        "level": "fatal",
        "exception": {"values": [{
            "type": "EXC_BAD_ACCESS",
            "value": "Attempted to dereference null pointer.",
            "mechanism": {"type": "mach", "handled": false},
            "stacktrace": {"frames": [
                frame("start", "/usr/lib/system/libdyld.dylib".into(), "0x0000000190609598"),
                frame("UIApplicationMain", "/System/Library/Frameworks/UIKit.framework/UIKit".into(), "0x00000001978b5c9c"),
                frame("-[UIApplication sendAction:to:from:forEvent:]", "/System/Library/Frameworks/UIKit.framework/UIKit".into(), "0x00000001978b5000"),
                frame("CheckoutViewController.payTapped(Any) -> ()", format!("{app}/Shop"), "0x000000010008c5ac"),
                frame("-[SentryClient crash]", format!("{app}/Frameworks/Sentry.framework/Sentry"), "0x00000001000b0bfc"),
            ]},
        }]},
    });
    let l = send_both(&t, &event).await;
    assert_eq!(
        l.group["title"],
        "EXC_BAD_ACCESS: Attempted to dereference null pointer."
    );
    assert_eq!(
        l.group["culprit"], "CheckoutViewController.payTapped",
        "the app's frame, not the SDK's"
    );
    let frames = &l.event["data"]["exception"][0]["stacktrace"]["frames"];
    let in_app: Vec<_> = frames
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["in_app"].as_bool())
        .collect();
    assert_eq!(
        in_app,
        [
            Some(false),
            Some(false),
            Some(false),
            Some(true),
            Some(false)
        ]
    );
    let own = &frames[3];
    assert_eq!(own["package"], format!("{app}/Shop"));
    assert_eq!(own["instruction_addr"], "0x000000010008c5ac");
    assert_eq!(own["symbol_addr"], "0x0000000100008000");
    assert_eq!(own["image_addr"], "0x0000000100000000");

    let page = incident_page(&t, &l.group["id"]).await;
    assert!(page.contains("CheckoutViewController.payTapped"), "{page}");
    assert!(
        page.contains("Shop · 0x000000010008c5ac"),
        "the binary and address beside the frame"
    );
}

async fn address_only_frames_are_culprited_by_their_image(t: TestApp) {
    // An unsymbolicated native crash: addresses and binaries only.
    let event = json!({
        "platform": "native",
        "exception": {"values": [{"type": "SIGABRT", "value": "Abort", "stacktrace": {"frames": [
            {"instruction_addr": "0x7f0000001000", "package": "/lib/x86_64-linux-gnu/libc.so.6"},
            {"instruction_addr": "0x55d000002000", "package": "/data/app/com.shop.game-1/lib/arm64/libgame.so"},
            {"instruction_addr": "0x7f0000003000", "package": "/lib/x86_64-linux-gnu/libc.so.6"},
        ]}}]},
    });
    let l = send_both(&t, &event).await;
    assert_eq!(l.group["title"], "SIGABRT: Abort");
    assert_eq!(l.group["culprit"], "libgame.so");
    let frames = &l.event["data"]["exception"][0]["stacktrace"]["frames"];
    assert_eq!(frames[1]["in_app"], true);
    assert_eq!(frames[1]["instruction_addr"], "0x55d000002000");
    let page = incident_page(&t, &l.group["id"]).await;
    assert!(page.contains("libgame.so · 0x55d000002000"), "{page}");
}

async fn console_build_ids_are_not_names(t: TestApp) {
    let event = json!({
        "platform": "nintendo-switch",
        "exception": {"values": [{"type": "Exception", "value": "Access Violation", "stacktrace": {"frames": [
            {"function": "792DEB574467EFAF89F8386B018D1357::nnMain", "module": "792DEB574467EFAF89F8386B018D1357",
             "package": "C:\\build\\Game.nss", "filename": "main.cpp", "lineno": 160, "in_app": true,
             "instruction_addr": "0x1dc3c0faec"},
        ]}}]},
    });
    let l = send_both(&t, &event).await;
    assert_eq!(l.group["culprit"], "nnMain");
    let frame = &l.event["data"]["exception"][0]["stacktrace"]["frames"][0];
    assert_eq!(frame["function"], "nnMain");
    assert!(
        frame.get("module").is_none(),
        "a build id is no module: {frame}"
    );
    // A new build (another id) is the same incident.
    let mut rebuilt = event.clone();
    rebuilt["exception"]["values"][0]["stacktrace"]["frames"][0]["function"] =
        json!("0D570D257E61E339E740A6DB116D5442::nnMain");
    rebuilt["exception"]["values"][0]["stacktrace"]["frames"][0]["module"] =
        json!("0D570D257E61E339E740A6DB116D5442");
    let again = send_both(&t, &rebuilt).await;
    assert_eq!(again.group["id"], l.group["id"]);
}

async fn android_threads_without_a_crashed_one(t: TestApp) {
    // A message captured with every thread attached; no thread crashed,
    // the one that captured it is marked `errored` (the Java SDK) and is
    // not the first.
    let event = json!({
        "platform": "java",
        "logentry": {"formatted": "sync failed for account 42", "message": "sync failed for account %s"},
        "threads": {"values": [
            {"id": 5273, "name": "FileObserver", "stacktrace": {"frames": [
                {"module": "android.os.FileObserver$ObserverThread", "function": "run", "in_app": false},
                {"module": "android.os.FileObserver$ObserverThread", "function": "observe", "in_app": false},
            ]}},
            {"id": 1, "name": "main", "errored": true, "stacktrace": {"frames": [
                {"module": "android.os.Looper", "function": "loop", "in_app": false},
                {"module": "io.shop.sync.SyncWorker", "function": "doWork", "in_app": true},
                {"module": "io.sentry.Sentry", "function": "captureMessage", "in_app": false},
            ]}},
            {"id": 9, "name": "no-stack"},
        ]},
    });
    let l = send_both(&t, &event).await;
    assert_eq!(l.group["title"], "sync failed for account %s");
    assert_eq!(l.group["culprit"], "io.shop.sync.SyncWorker::doWork");
    let data = &l.event["data"];
    assert_eq!(data["stacktrace"]["frames"][1]["function"], "doWork");
    assert_eq!(data["threads"].as_array().unwrap().len(), 3);
    assert_eq!(data["threads"][1]["current"], true);
    let page = incident_page(&t, &l.group["id"]).await;
    assert!(page.contains("Threads"), "{page}");
    assert!(page.contains("main (1)") && page.contains("FileObserver (5273)"));
    assert!(page.contains("io.shop.sync.SyncWorker") || page.contains("doWork"));
}

async fn scrubbing_annotations_are_kept_and_shown(t: TestApp) {
    let event = json!({
        "platform": "python",
        "exception": {"values": [{"type": "PermissionError", "value": "denied"}]},
        "request": {"url": "https://shop.test/admin", "headers": {"Authorization": "[Filtered]"}},
        "user": {"id": "u-1", "email": "[email]"},
        "_meta": {
            "request": {"headers": {"Authorization": {"": {"rem": [["@password:filter", "s", 0, 10]], "len": 41}}}},
            "user": {"email": {"": {"rem": [["@email", "s"]]}}},
        },
    });
    let l = send_both(&t, &event).await;
    let meta = &l.event["data"]["_meta"];
    assert_eq!(
        meta["request"]["headers"]["Authorization"][""]["rem"][0][0],
        "@password:filter"
    );
    let page = incident_page(&t, &l.group["id"]).await;
    assert!(
        page.contains("scrubbed by @password:filter (substituted); original length 41"),
        "{page}"
    );
    assert!(page.contains("scrubbed by @email (substituted)"));
    assert!(page.contains("request.headers.Authorization"));
}
