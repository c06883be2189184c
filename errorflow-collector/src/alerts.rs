//! Alerts: a webhook told of every new incident and every regression
//! (`--alert-webhook URL`), without Kestra.
//!
//! The body is JSON that chat tools show as it is: `text` (Slack,
//! Mattermost, Rocket.Chat, Teams' incoming webhooks) and `content`
//! (Discord) carry one line with a link to the incident; `event` and
//! `incident` carry the facts for any other receiver.
//!
//! Ingest never waits for an alert: it offers the news on a bounded channel
//! (`try_send`; when full, the alert is dropped and counted). One background
//! task sends them in order, retrying network errors, 5xx and 429 with
//! backoff (`backon`), and sends at most [`PER_MINUTE`] a minute: a deploy
//! that opens a hundred incidents sends that many, then one summary of the
//! rest. The webhook's URL often holds a secret (Slack's does): it is never
//! logged.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use backon::{ExponentialBuilder, Retryable};
use serde::Serialize;
use tokio::sync::mpsc;

use crate::model::{Group, InsertOutcome};
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
    pub webhook: Secret,
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
}

impl AlertOptions {
    pub fn new(webhook: Secret, public_url: &str) -> AlertOptions {
        AlertOptions {
            webhook,
            public_url: public_url.trim_end_matches('/').to_string(),
            timeout: Duration::from_secs(10),
            retries: 4,
            min_backoff: Duration::from_millis(500),
            max_per_window: PER_MINUTE,
            window: Duration::from_secs(60),
        }
    }
}

/// The ingest side: offers news without waiting.
#[derive(Clone)]
pub struct Alerts {
    tx: mpsc::Sender<(i64, Kind)>,
}

impl Alerts {
    /// Offers the new incidents and regressions among `outcomes`.
    pub fn offer(&self, outcomes: &[InsertOutcome]) {
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
            if self.tx.try_send((group_id, kind)).is_err() {
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

/// Starts the sending task; returns the handle ingest offers news to.
pub fn spawn(store: Arc<dyn Store>, options: AlertOptions) -> Result<Alerts, reqwest::Error> {
    let http = reqwest::Client::builder()
        .timeout(options.timeout)
        .user_agent(concat!("errorflow-collector/", env!("CARGO_PKG_VERSION")))
        .build()?;
    let (tx, mut rx) = mpsc::channel::<(i64, Kind)>(QUEUE);
    tokio::spawn(async move {
        let mut window_start = Instant::now();
        let mut sent = 0;
        let mut suppressed = 0;
        loop {
            // With alerts held back, the window's end sends their summary
            // even when nothing else comes.
            let next = if suppressed > 0 {
                let end = window_start + options.window;
                tokio::time::timeout_at(end, rx.recv()).await.ok()
            } else {
                Some(rx.recv().await)
            };
            if window_start.elapsed() >= options.window {
                if suppressed > 0 {
                    let summary = Payload::summary(suppressed, &options);
                    deliver(&http, &options, &summary).await;
                }
                window_start = Instant::now();
                sent = 0;
                suppressed = 0;
            }
            let Some(news) = next else { continue };
            let Some((group_id, kind)) = news else { return };
            if sent >= options.max_per_window {
                suppressed += 1;
                crate::telemetry::alert("suppressed");
                continue;
            }
            let group = match store.get_group(group_id).await {
                Ok(Some(g)) => g,
                // Deleted meanwhile: nothing to tell.
                Ok(None) => continue,
                Err(e) => {
                    tracing::warn!(group = group_id, error = %e, "cannot load the incident to alert");
                    continue;
                }
            };
            sent += 1;
            let payload = Payload::incident(kind, &group, &options.public_url);
            deliver(&http, &options, &payload).await;
        }
    });
    Ok(Alerts { tx })
}

/// Why one attempt failed; only the retryable ones are tried again.
#[derive(Debug)]
enum Failure {
    Retryable(String),
    Fatal(String),
}

/// Posts `payload`, retrying what may pass later; logs and counts the outcome.
async fn deliver(http: &reqwest::Client, options: &AlertOptions, payload: &Payload) {
    let policy = ExponentialBuilder::default()
        .with_min_delay(options.min_backoff)
        .with_max_delay(Duration::from_secs(30))
        .with_max_times(options.retries)
        .with_jitter();
    let attempt = || async {
        let response = http
            .post(options.webhook.expose())
            .json(payload)
            .send()
            .await
            // Without the URL: it may hold the webhook's secret.
            .map_err(|e| Failure::Retryable(e.without_url().to_string()))?;
        let status = response.status();
        if status.is_success() {
            Ok(())
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
