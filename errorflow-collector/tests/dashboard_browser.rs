//! The dashboard in a real headless Chromium, driven over WebDriver
//! (chromedriver + fantoccini), against a real collector on a socket with a
//! SQLite database: sign in, see an ingested incident, open it, resolve it,
//! send a test error, check that a `<script>` message is shown as text, and
//! that new events are announced without a reload. Screenshots go to
//! `target/screenshots/`.
//!
//! Needs `chromium` and `chromedriver` (Debian: `apt-get install chromium
//! chromium-driver`; `.ci/run` installs them). Without them the test fails.

mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use clap::Parser;
use errorflow_collector::app::build_state;
use errorflow_collector::config::{Cli, Config};
use errorflow_collector::credentials;
use errorflow_collector::http::dashboard::auth;
use errorflow_collector::http::router;
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::json;

const PASSWORD: &str = "browser-test-password";
const XSS: &str = "<script>alert(1)</script>";

fn find_binary(names: &[&str], extra: &[&str]) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    for name in names {
        for dir in std::env::split_paths(&path) {
            let p = dir.join(name);
            if p.is_file() {
                return Some(p);
            }
        }
    }
    extra.iter().map(PathBuf::from).find(|p| p.is_file())
}

/// chromedriver, killed when dropped.
struct Driver(Child);

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

async fn start_driver() -> (Driver, Client, tempfile::TempDir) {
    let chromium = find_binary(
        &["chromium", "chromium-browser", "google-chrome"],
        &["/usr/bin/chromium", "/usr/lib/chromium/chromium"],
    )
    .unwrap_or_else(|| {
        panic!("chromium not found: install it with `apt-get install -y chromium chromium-driver` (.ci/run does this)")
    });
    let chromedriver = find_binary(&["chromedriver"], &["/usr/bin/chromedriver", "/usr/lib/chromium/chromedriver"])
        .unwrap_or_else(|| {
            panic!("chromedriver not found: install it with `apt-get install -y chromium chromium-driver` (.ci/run does this)")
        });
    // Port 0: chromedriver takes a port the OS hands out and says which.
    let mut child = Command::new(&chromedriver)
        .arg("--port=0")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {}: {e}", chromedriver.display()));
    let port = {
        use std::io::BufRead as _;
        let mut lines = std::io::BufReader::new(child.stdout.take().unwrap()).lines();
        let port = loop {
            let line = lines
                .next()
                .expect("chromedriver exited before saying its port")
                .unwrap();
            if let Some(rest) = line.split("started successfully on port ").nth(1) {
                break rest.trim_end_matches('.').parse::<u16>().unwrap();
            }
        };
        std::thread::spawn(move || for _ in lines.by_ref() {});
        port
    };
    let driver = Driver(child);
    let profile = tempfile::tempdir().unwrap();
    let caps: serde_json::Map<String, serde_json::Value> = serde_json::from_value(json!({
        "browserName": "chrome",
        "goog:chromeOptions": {
            "binary": chromium.to_string_lossy(),
            "args": [
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                format!("--user-data-dir={}", profile.path().display()),
                "--window-size=1280,900",
            ]
        }
    }))
    .unwrap();
    let url = format!("http://127.0.0.1:{port}");
    let deadline = Instant::now() + Duration::from_secs(20);
    let client = loop {
        let connector = hyper_util::client::legacy::connect::HttpConnector::new();
        match ClientBuilder::new(connector)
            .capabilities(caps.clone())
            .connect(&url)
            .await
        {
            Ok(c) => break c,
            Err(e) if Instant::now() < deadline => {
                let _ = e;
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => panic!("cannot start a Chromium session through chromedriver: {e}"),
        }
    };
    (driver, client, profile)
}

fn screenshot_dir() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/screenshots");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

async fn shot(c: &Client, name: &str) {
    let png = c.screenshot().await.unwrap();
    std::fs::write(screenshot_dir().join(name), png).unwrap();
}

async fn text_of(c: &Client, css: &str) -> String {
    c.find(Locator::Css(css))
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

/// Clicks the element, which must be there.
async fn click(c: &Client, locator: Locator<'_>) {
    c.find(locator).await.unwrap().click().await.unwrap();
}

/// The text of the dialog the page opened (`window.confirm`), once it is open.
async fn alert_text(c: &Client) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match c.get_alert_text().await {
            Ok(text) => return text,
            Err(e) if Instant::now() > deadline => panic!("no dialog opened: {e}"),
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}

async fn wait_for(c: &Client, css: &str) -> fantoccini::elements::Element {
    c.wait()
        .at_most(Duration::from_secs(20))
        .for_element(Locator::Css(css))
        .await
        .unwrap_or_else(|e| panic!("element {css} did not appear: {e}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_in_a_real_browser_sqlite() {
    dashboard_in_a_real_browser(common::sqlite_store().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_in_a_real_browser_postgres() {
    dashboard_in_a_real_browser(common::pg_store().await).await;
}

/// The collector on a real socket, on `db`.
async fn dashboard_in_a_real_browser(db: common::TestDb) {
    let store = db.store.clone();
    let key = credentials::new_ingest_key();
    let project = store
        .create_project(
            "shop",
            &credentials::hash_secret(&key),
            &credentials::prefix(&key),
        )
        .await
        .unwrap();
    store
        .create_user("admin", &auth::hash_password(PASSWORD).unwrap())
        .await
        .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let base = format!("http://{addr}");
    let config = Config::resolve(
        &Cli::parse_from(["errorflow-collector", "serve", "--public-url", &base]),
        None,
    )
    .unwrap();
    let state = build_state(store.clone(), &config);
    let app = router(state).into_make_service_with_connect_info::<SocketAddr>();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

    let http = reqwest::Client::new();
    let ingest = |service: &'static str, error_type: &'static str, message: &'static str| {
        let http = http.clone();
        let key = key.clone();
        let base = base.clone();
        async move {
            let res = http
                .post(format!("{base}/errors/custom"))
                .header("x-errorflow-key", key)
                .json(&json!({"service": service, "error_type": error_type, "message": message, "path": "/checkout", "env": "prod"}))
                .send()
                .await
                .unwrap();
            assert_eq!(res.status(), 201);
            res.json::<serde_json::Value>().await.unwrap()["group_id"]
                .as_i64()
                .unwrap()
        }
    };
    let xss_group = ingest("user-api", "NullPointer", XSS).await;

    let (_driver, c, _profile) = start_driver().await;

    // Signing in.
    c.goto(&format!("{base}/")).await.unwrap();
    assert!(c.current_url().await.unwrap().path().starts_with("/login"));
    shot(&c, "login.png").await;
    c.find(Locator::Id("username"))
        .await
        .unwrap()
        .send_keys("admin")
        .await
        .unwrap();
    c.find(Locator::Id("password"))
        .await
        .unwrap()
        .send_keys(PASSWORD)
        .await
        .unwrap();
    click(&c, Locator::Css("button[type=submit]")).await;
    wait_for(&c, "ul.incidents").await;
    assert_eq!(c.current_url().await.unwrap().path(), "/");

    // The incident is listed; its message shows as text, nothing ran.
    let link = wait_for(&c, &format!("a[href='/incidents/{xss_group}']")).await;
    let title = link.text().await.unwrap();
    assert!(
        title.contains("<script>"),
        "the title is shown as text: {title}"
    );
    assert!(
        c.get_alert_text().await.is_err(),
        "no alert: the script did not run"
    );
    let ran: serde_json::Value = c
        .execute(
            "return document.querySelectorAll('main script').length",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(ran, json!(0), "no script element was injected");
    shot(&c, "incidents.png").await;

    // A new event is announced without a reload (polling every 10 s).
    ingest("payment-api", "Timeout", "upstream timed out after 30s").await;
    c.wait()
        .at_most(Duration::from_secs(25))
        .for_element(Locator::Css("#live:not([hidden])"))
        .await
        .expect("the live banner appears");
    assert!(text_of(&c, "#live").await.contains("new"));

    // Open it, resolve it, reload: resolved.
    click(
        &c,
        Locator::Css(&format!("a[href='/incidents/{xss_group}']")),
    )
    .await;
    wait_for(&c, "#event-message").await;
    let message = text_of(&c, "#event-message").await;
    assert!(
        message.ends_with(XSS),
        "the message is shown as text: {message}"
    );
    assert!(c.get_alert_text().await.is_err());
    shot(&c, "incident.png").await;
    c.find(Locator::Id("reason"))
        .await
        .unwrap()
        .send_keys("fixed in 1.4.3")
        .await
        .unwrap();
    click(&c, Locator::Id("resolve")).await;
    wait_for(&c, "p.notice").await;
    assert_eq!(text_of(&c, "p.notice").await, "Incident resolved.");
    c.refresh().await.unwrap();
    wait_for(&c, ".detail-head .badge").await;
    assert_eq!(text_of(&c, ".detail-head .badge").await, "resolved");
    assert!(c.find(Locator::Id("reopen")).await.is_ok());

    // Send a test error from the project page; it opens as an incident.
    c.goto(&format!("{base}/projects/{}", project.id))
        .await
        .unwrap();
    shot(&c, "project.png").await;
    // Give the project a webhook of its own; the page shows its host only.
    c.find(Locator::Id("webhook-url"))
        .await
        .unwrap()
        .send_keys("https://hooks.slack.com/services/T0/B0/browser-secret")
        .await
        .unwrap();
    click(&c, Locator::Id("save-webhook")).await;
    wait_for(&c, "#remove-webhook").await;
    let destination = text_of(&c, "#alert-destination").await;
    assert!(
        destination.contains("https://hooks.slack.com/…")
            && !destination.contains("browser-secret"),
        "{destination}"
    );
    assert_eq!(
        store
            .project_alert_webhook(project.id)
            .await
            .unwrap()
            .as_deref(),
        Some("https://hooks.slack.com/services/T0/B0/browser-secret")
    );
    click(&c, Locator::Id("send-test")).await;
    wait_for(&c, "#event-message").await;
    assert!(text_of(&c, "#event-message")
        .await
        .contains("payment for order 1042 failed"));
    assert!(
        c.find(Locator::Css(".frame.in-app")).await.is_ok(),
        "in-app frames highlighted"
    );
    c.goto(&format!("{base}/?status=all")).await.unwrap();
    wait_for(&c, "ul.incidents").await;
    let body = text_of(&c, "ul.incidents").await;
    assert!(
        body.contains("PaymentError"),
        "the test error is listed: {body}"
    );

    // Usable at 375 px: nothing wider than the screen.
    c.set_window_size(375, 800).await.unwrap();
    c.goto(&format!("{base}/?status=all")).await.unwrap();
    wait_for(&c, "ul.incidents").await;
    let overflow: serde_json::Value = c
        .execute(
            "const d = document.documentElement; return d.scrollWidth - d.clientWidth",
            vec![],
        )
        .await
        .unwrap();
    if overflow.as_i64().unwrap() > 0 {
        let wide = c
            .execute(
                "const w = document.documentElement.clientWidth; return [...document.querySelectorAll('body *')]\
                 .filter(e => e.getBoundingClientRect().right > w + 0.5)\
                 .map(e => e.tagName + '.' + e.className + ' ' + Math.round(e.getBoundingClientRect().right)).slice(0, 10)",
                vec![],
            )
            .await
            .unwrap();
        panic!("horizontal overflow at 375 px: {overflow} px; too wide: {wide}");
    }
    shot(&c, "incidents-375.png").await;
    c.goto(&format!("{base}/incidents/{xss_group}"))
        .await
        .unwrap();
    wait_for(&c, "#event-message").await;
    shot(&c, "incident-375.png").await;

    // Keyboard: the first Tab, pressed on a freshly loaded page, reaches
    // the skip link.
    c.goto(&format!("{base}/")).await.unwrap();
    wait_for(&c, "ul.incidents").await;
    let before: serde_json::Value = c
        .execute("return document.activeElement === document.body", vec![])
        .await
        .unwrap();
    assert_eq!(before, json!(true), "nothing has the focus yet");
    use fantoccini::actions::InputSource as _;
    let tab = fantoccini::actions::KeyActions::new("keyboard".to_string())
        .then(fantoccini::actions::KeyAction::Down {
            value: fantoccini::key::Key::Tab.into(),
        })
        .then(fantoccini::actions::KeyAction::Up {
            value: fantoccini::key::Key::Tab.into(),
        });
    c.perform_actions(tab).await.unwrap();
    let focused: serde_json::Value = c
        .execute(
            "const a = document.activeElement; return [a.tagName, a.className, a.getAttribute('href')]",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(focused, json!(["A", "skip", "#main"]));

    // Delete asks first: dismissed, nothing happens; accepted, the
    // incident is gone and the list says so.
    c.goto(&format!("{base}/incidents/{xss_group}"))
        .await
        .unwrap();
    wait_for(&c, "#event-message").await;
    click(&c, Locator::Id("delete")).await;
    let question = alert_text(&c).await;
    assert!(question.starts_with("Delete this incident"), "{question}");
    c.dismiss_alert().await.unwrap();
    assert_eq!(
        c.current_url().await.unwrap().path(),
        format!("/incidents/{xss_group}")
    );
    click(&c, Locator::Id("delete")).await;
    alert_text(&c).await;
    c.accept_alert().await.unwrap();
    wait_for(&c, "p.notice").await;
    assert_eq!(
        text_of(&c, "p.notice").await,
        "Incident deleted with its events."
    );
    assert_eq!(c.current_url().await.unwrap().path(), "/");
    assert!(c
        .find(Locator::Css(&format!("a[href='/incidents/{xss_group}']")))
        .await
        .is_err());

    c.close().await.unwrap();
}
