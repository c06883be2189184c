//! Alerts: a webhook told of every new incident and every regression,
//! without Kestra. A project's alerts go to its own webhook when it has one
//! (set through the API or the project's page), else to the collector's
//! (`--alert-webhook URL`), else nowhere.
//!
//! The body is JSON that chat tools show as it is: `text` (Slack,
//! Mattermost, Rocket.Chat, Teams' incoming webhooks) and `content`
//! (Discord) carry one line with a link to the incident; `event` and
//! `incident` carry the facts for any other receiver.
//!
//! Ingest never waits for an alert: it offers the news on a bounded channel
//! (`try_send`; when full, the alert is dropped and counted). One background
//! task routes them, at most [`PER_MINUTE`] a minute to each webhook: a
//! deploy that opens a hundred incidents sends that many, then one summary
//! of the rest. Each webhook has its own sender task, which sends its alerts
//! in order, retrying network errors, 5xx and 429 with backoff (`backon`),
//! so a webhook that hangs delays no other. The webhook's URL often holds a
//! secret (Slack's does): it is never logged.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use backon::{ExponentialBuilder, Retryable};
use serde::Serialize;
use tokio::sync::mpsc;

use crate::model::{Group, InsertOutcome};
use crate::outbound::{self, AddressPolicy};
use crate::store::Store;
use crate::triage::Secret;

/// Alerts sent per minute at most; the rest are summed up in one message.
pub const PER_MINUTE: usize = 20;
/// News waiting to be sent before new news is dropped.
const QUEUE: usize = 1024;

/// What happened to the incident.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Kind {
    #[serde(rename = "incident.new")]
    New,
    #[serde(rename = "incident.regressed")]
    Regressed,
}

/// Where and how alerts go.
#[derive(Debug, Clone)]
pub struct AlertOptions {
    /// The collector's webhook, for projects without one of their own.
    pub webhook: Option<Secret>,
    /// The collector's public URL, for links to incidents.
    pub public_url: String,
    pub timeout: Duration,
    /// Retries of one delivery after the first attempt.
    pub retries: usize,
    pub min_backoff: Duration,
    /// At most `max_per_window` alerts per `window`; the rest are summed up
    /// in one message when the window ends.
    pub max_per_window: usize,
    pub window: Duration,
    /// The internal destinations webhooks may reach (none by default).
    pub policy: Arc<AddressPolicy>,
}

impl AlertOptions {
    pub fn new(webhook: Option<Secret>, public_url: &str) -> AlertOptions {
        AlertOptions {
            webhook,
            public_url: public_url.trim_end_matches('/').to_string(),
            timeout: Duration::from_secs(10),
            retries: 4,
            min_backoff: Duration::from_millis(500),
            max_per_window: PER_MINUTE,
            window: Duration::from_secs(60),
            policy: Arc::default(),
        }
    }
}

/// The longest webhook URL a project may have.
pub const MAX_WEBHOOK_URL: usize = 2048;

/// Checks a webhook URL given for a project: absolute `http` or `https`
/// with a host, at most [`MAX_WEBHOOK_URL`] bytes, not an internal address
/// unless `policy` allows it ([`outbound::check_url`]). Returns it trimmed;
/// the error says what is wrong without repeating the URL (it may hold a
/// secret).
pub fn validate_webhook_url<'a>(url: &'a str, policy: &AddressPolicy) -> Result<&'a str, String> {
    let url = url.trim();
    if url.is_empty() {
        return Err("the webhook URL is empty".into());
    }
    if url.len() > MAX_WEBHOOK_URL {
        return Err(format!(
            "the webhook URL has {} bytes; at most {MAX_WEBHOOK_URL}",
            url.len()
        ));
    }
    let parsed =
        reqwest::Url::parse(url).map_err(|e| format!("the webhook URL is not a URL: {e}"))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(format!(
            "the webhook URL must be http or https, not {:?}",
            parsed.scheme()
        ));
    }
    if parsed.host_str().is_none_or(str::is_empty) {
        return Err("the webhook URL has no host".into());
    }
    outbound::check_url(&parsed, policy)?;
    Ok(url)
}

/// What may be shown of a webhook URL: its scheme and host, since the rest
/// often is the secret (`https://hooks.slack.com/…`).
pub fn redact_webhook_url(url: &str) -> String {
    match reqwest::Url::parse(url) {
        Ok(u) => match (u.host_str(), u.port()) {
            (Some(host), Some(port)) => format!("{}://{host}:{port}/…", u.scheme()),
            (Some(host), None) => format!("{}://{host}/…", u.scheme()),
            (None, _) => "…".to_owned(),
        },
        Err(_) => "…".to_owned(),
    }
}

/// The ingest side: offers news without waiting.
#[derive(Clone)]
pub struct Alerts {
    /// (project id, incident id, what happened).
    tx: mpsc::Sender<(i64, i64, Kind)>,
    has_default: bool,
}

impl Alerts {
    /// Whether the collector has a webhook of its own (`--alert-webhook`)
    /// for projects without one.
    pub fn has_default_webhook(&self) -> bool {
        self.has_default
    }

    /// Offers the new incidents and regressions among `outcomes`, the
    /// outcomes of events of project `project_id`.
    pub fn offer(&self, project_id: i64, outcomes: &[InsertOutcome]) {
        for outcome in outcomes {
            let InsertOutcome::Stored {
                group_id,
                new_group,
                regression,
            } = *outcome
            else {
                continue;
            };
            let kind = match (new_group, regression) {
                (true, _) => Kind::New,
                (false, true) => Kind::Regressed,
                (false, false) => continue,
            };
            if self.tx.try_send((project_id, group_id, kind)).is_err() {
                crate::telemetry::alert("dropped");
            }
        }
    }
}

/// The JSON posted to the webhook.
#[derive(Debug, Serialize)]
pub struct Payload {
    pub text: String,
    pub content: String,
    pub event: Option<Kind>,
    pub incident: Option<IncidentFacts>,
}

#[derive(Debug, Serialize)]
pub struct IncidentFacts {
    pub id: i64,
    pub title: String,
    pub service: String,
    pub error_type: String,
    pub level: String,
    pub environment: Option<String>,
    pub release: Option<String>,
    pub culprit: Option<String>,
    pub count: i64,
    pub regression_count: i64,
    pub url: String,
}

impl Payload {
    fn incident(kind: Kind, g: &Group, public_url: &str) -> Payload {
        let url = format!("{public_url}/incidents/{}", g.id);
        let what = match kind {
            Kind::New => "New incident",
            Kind::Regressed => "Regression",
        };
        let env = g
            .last_environment
            .as_deref()
            .map(|e| format!(", {e}"))
            .unwrap_or_default();
        let text = format!("{what} in {}{env}: {} <{url}>", g.service, g.title);
        Payload {
            content: text.clone(),
            text,
            event: Some(kind),
            incident: Some(IncidentFacts {
                id: g.id,
                title: g.title.clone(),
                service: g.service.clone(),
                error_type: g.error_type.clone(),
                level: g.level.clone(),
                environment: g.last_environment.clone(),
                release: g.last_release.clone(),
                culprit: g.culprit.clone(),
                count: g.count,
                regression_count: g.regression_count,
                url,
            }),
        }
    }

    fn summary(suppressed: usize, options: &AlertOptions) -> Payload {
        let text = format!(
            "{suppressed} more new incidents or regressions were not alerted one by one \
             (at most {} per {}) <{}/>",
            options.max_per_window,
            humantime::format_duration(options.window),
            options.public_url
        );
        Payload {
            content: text.clone(),
            text,
            event: None,
            incident: None,
        }
    }
}

/// One webhook: its alerts in the current window, and the queue of its
/// sender task.
struct Route {
    window_start: Instant,
    sent: usize,
    suppressed: usize,
    queue: mpsc::Sender<Payload>,
}

impl Route {
    /// Starts the webhook's sender task: one per webhook, so that a webhook
    /// that hangs or keeps failing (a minute of retries per alert) delays
    /// only its own alerts, not every project's.
    fn start(http: &reqwest::Client, options: &Arc<AlertOptions>, url: Secret) -> Route {
        let (queue, mut pending) = mpsc::channel::<Payload>(PER_WEBHOOK_QUEUE);
        let (http, options) = (http.clone(), options.clone());
        tokio::spawn(async move {
            while let Some(payload) = pending.recv().await {
                deliver(&http, &options, url.expose(), &payload).await;
            }
        });
        Route {
            window_start: Instant::now(),
            sent: 0,
            suppressed: 0,
            queue,
        }
    }

    /// Queues `payload` for the webhook; dropped and counted when the
    /// webhook is that far behind.
    fn send(&self, payload: Payload) {
        if self.queue.try_send(payload).is_err() {
            crate::telemetry::alert("dropped");
        }
    }

    /// Still needed: alerts counted in this window, or still queued.
    fn busy(&self) -> bool {
        self.sent > 0 || self.queue.capacity() < self.queue.max_capacity()
    }
}

/// Alerts waiting for one webhook before more are dropped: a minute's worth
/// and its summary, twice over.
const PER_WEBHOOK_QUEUE: usize = 2 * (PER_MINUTE + 1);

/// Where a project's alerts go: its own webhook, else the collector's.
async fn destination(store: &dyn Store, project_id: i64, options: &AlertOptions) -> Option<Secret> {
    match store.project_alert_webhook(project_id).await {
        Ok(Some(url)) => Some(Secret::new(url)),
        Ok(None) => options.webhook.clone(),
        Err(e) => {
            // Better the collector's webhook than no alert at all.
            tracing::warn!(project = project_id, error = %e, "cannot read the project's alert webhook; using the collector's");
            options.webhook.clone()
        }
    }
}

/// Starts the sending task; returns the handle ingest offers news to.
pub fn spawn(store: Arc<dyn Store>, options: AlertOptions) -> Result<Alerts, reqwest::Error> {
    let http = outbound::webhook_client(options.timeout, options.policy.clone())?;
    let (tx, mut rx) = mpsc::channel::<(i64, i64, Kind)>(QUEUE);
    let has_default = options.webhook.is_some();
    let options = Arc::new(options);
    tokio::spawn(async move {
        // Per webhook, keyed by its URL (kept only in memory): each one gets
        // at most `max_per_window` alerts a window, then a summary.
        let mut routes: HashMap<String, Route> = HashMap::new();
        loop {
            // With alerts held back, the window's end sends their summary
            // even when nothing else comes.
            let summary_due = routes
                .values()
                .filter(|r| r.suppressed > 0)
                .map(|r| r.window_start + options.window)
                .min();
            let next = match summary_due {
                Some(end) => tokio::time::timeout_at(end, rx.recv()).await.ok(),
                None => Some(rx.recv().await),
            };
            for route in routes.values_mut() {
                if route.window_start.elapsed() >= options.window {
                    if route.suppressed > 0 {
                        route.send(Payload::summary(route.suppressed, &options));
                    }
                    route.window_start = Instant::now();
                    route.sent = 0;
                    route.suppressed = 0;
                }
            }
            routes.retain(|_, r| r.busy());
            let Some(news) = next else { continue };
            let Some((project_id, group_id, kind)) = news else {
                return;
            };
            // The destination first: without one, the incident is not even read.
            let Some(webhook) = destination(store.as_ref(), project_id, &options).await else {
                continue;
            };
            let group = match store.get_group(group_id).await {
                Ok(Some(g)) => g,
                // Deleted meanwhile: nothing to tell.
                Ok(None) => continue,
                Err(e) => {
                    tracing::warn!(group = group_id, error = %e, "cannot load the incident to alert");
                    continue;
                }
            };
            let route = routes
                .entry(webhook.expose().to_owned())
                .or_insert_with(|| Route::start(&http, &options, webhook));
            if route.sent >= options.max_per_window {
                route.suppressed += 1;
                crate::telemetry::alert("suppressed");
                continue;
            }
            route.sent += 1;
            route.send(Payload::incident(kind, &group, &options.public_url));
        }
    });
    Ok(Alerts { tx, has_default })
}

/// Why one attempt failed; only the retryable ones are tried again.
#[derive(Debug)]
enum Failure {
    Retryable(String),
    Fatal(String),
}

/// Posts `payload`, retrying what may pass later; logs and counts the outcome.
async fn deliver(http: &reqwest::Client, options: &AlertOptions, url: &str, payload: &Payload) {
    let policy = ExponentialBuilder::default()
        .with_min_delay(options.min_backoff)
        .with_max_delay(Duration::from_secs(30))
        .with_max_times(options.retries)
        .with_jitter();
    // Literal addresses never meet the client's resolver: checked here,
    // before each delivery, against the policy of this collector.
    let checked = reqwest::Url::parse(url)
        .map_err(|e| e.to_string())
        .and_then(|u| outbound::check_url(&u, &options.policy));
    if let Err(why) = checked {
        crate::telemetry::alert("failed");
        tracing::warn!(event = ?payload.event, error = %why, "alert not delivered");
        return;
    }
    let attempt = || async {
        let response = http
            .post(url)
            .json(payload)
            .send()
            .await
            // Without the URL: it may hold the webhook's secret.
            .map_err(|e| Failure::Retryable(e.without_url().to_string()))?;
        let status = response.status();
        if status.is_success() {
            Ok(())
        } else if status.is_redirection() {
            Err(Failure::Fatal(format!(
                "the webhook answered {status}; webhooks are never redirected"
            )))
        } else if status.is_server_error() || status.as_u16() == 429 {
            Err(Failure::Retryable(format!("the webhook answered {status}")))
        } else {
            Err(Failure::Fatal(format!("the webhook answered {status}")))
        }
    };
    let result = attempt
        .retry(policy)
        .sleep(tokio::time::sleep)
        .when(|f| matches!(f, Failure::Retryable(_)))
        .notify(|f, wait| tracing::debug!(failure = ?f, ?wait, "alert not delivered; retrying"))
        .await;
    match result {
        Ok(()) => crate::telemetry::alert("sent"),
        Err(Failure::Retryable(why) | Failure::Fatal(why)) => {
            crate::telemetry::alert("failed");
            tracing::warn!(event = ?payload.event, error = %why, "alert not delivered");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn webhook_urls_are_shown_as_scheme_and_host_only() {
        for (url, shown) in [
            (
                "https://hooks.slack.com/services/T0/B0/secret",
                "https://hooks.slack.com/…",
            ),
            (
                "http://user:password@chat.internal:8065/hooks/secret?token=x",
                "http://chat.internal:8065/…",
            ),
            ("https://[::1]:9000/hook", "https://[::1]:9000/…"),
            ("not a url", "…"),
        ] {
            assert_eq!(redact_webhook_url(url), shown, "{url}");
        }
    }

    #[test]
    fn only_http_and_https_urls_with_a_host_are_webhooks() {
        assert_eq!(
            validate_webhook_url(
                "  https://hooks.slack.com/services/T0/B0/x \n",
                &AddressPolicy::default()
            ),
            Ok("https://hooks.slack.com/services/T0/B0/x")
        );
        assert!(
            validate_webhook_url("http://10.0.0.5:8080/hook", &AddressPolicy::default()).is_err()
        );
        let internal = AddressPolicy::parse(&["10.0.0.0/8"]).unwrap();
        assert!(validate_webhook_url("http://10.0.0.5:8080/hook", &internal).is_ok());
        for url in [
            "",
            "   ",
            "hooks.slack.com/services/x",
            "ftp://example.com/hook",
            "mailto:ops@example.com",
            "http://",
        ] {
            let err = validate_webhook_url(url, &AddressPolicy::default()).unwrap_err();
            assert!(!err.is_empty(), "{url:?}");
        }
        let long = format!("https://example.com/{}", "x".repeat(MAX_WEBHOOK_URL));
        assert!(validate_webhook_url(&long, &AddressPolicy::default())
            .unwrap_err()
            .contains("at most 2048"));
        // The reason never repeats the URL: it may hold a secret.
        let err = validate_webhook_url("gopher://host/secret-token", &AddressPolicy::default())
            .unwrap_err();
        assert!(!err.contains("secret-token"), "{err}");
    }
}
