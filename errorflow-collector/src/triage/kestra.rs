//! Triggers Kestra flows through Kestra's REST API, in the seed's wire
//! format: `POST {url}/api/v1/{tenant}/executions/{namespace}/{flowId}`,
//! HTTP Basic auth, `multipart/form-data` with one part per flow input (JSON
//! inputs as `application/json` parts, strings as text parts). Kestra
//! answers at once with the created execution.
//!
//! Triggers are queued and sent by a background task that retries failures
//! with backoff; a Kestra outage never reaches an ingest request.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use backon::{ExponentialBuilder, Retryable};
use reqwest::multipart::{Form, Part};
use serde::Deserialize;
use serde_json::Value;
use tokio::sync::mpsc;

use super::{Secret, TriageError};
use crate::store::Store;

pub const ERROR_INTAKE: &str = "error-intake";
pub const GROUP_SUMMARY_AGENT: &str = "group-summary-agent";

/// Where Kestra is and how to log in.
#[derive(Clone)]
pub struct KestraOptions {
    pub url: String,
    pub username: Option<String>,
    pub password: Option<Secret>,
    pub tenant: String,
    pub namespace: String,
    pub timeout: Duration,
    pub max_retries: usize,
    pub min_backoff: Duration,
}

impl fmt::Debug for KestraOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KestraOptions")
            .field("url", &self.url)
            .field("username", &self.username)
            .field("password", &self.password)
            .field("tenant", &self.tenant)
            .field("namespace", &self.namespace)
            .finish()
    }
}

impl KestraOptions {
    pub fn new(url: &str) -> KestraOptions {
        KestraOptions {
            url: url.trim_end_matches('/').to_string(),
            username: None,
            password: None,
            tenant: "main".into(),
            namespace: "main".into(),
            timeout: Duration::from_secs(10),
            max_retries: 5,
            min_backoff: Duration::from_secs(1),
        }
    }
}

/// One flow input.
#[derive(Debug, Clone, PartialEq)]
pub enum Input {
    /// A JSON input: sent as an `application/json` part.
    Json(String, Value),
    /// A STRING input: sent as a text part.
    Text(String, String),
}

/// The execution Kestra created.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Execution {
    pub id: String,
    #[serde(default)]
    pub state: Option<ExecutionState>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct ExecutionState {
    pub current: Option<String>,
}

/// A flow to start, with what it is about.
#[derive(Debug, Clone, PartialEq)]
pub struct FlowRun {
    pub flow_id: String,
    pub group_id: Option<i64>,
    pub inputs: Vec<Input>,
}

/// Calls Kestra's API.
#[derive(Clone)]
pub struct KestraClient {
    http: reqwest::Client,
    options: KestraOptions,
}

impl fmt::Debug for KestraClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KestraClient")
            .field("options", &self.options)
            .finish()
    }
}

impl KestraClient {
    pub fn new(options: KestraOptions) -> Result<KestraClient, TriageError> {
        let http = crate::outbound::service_client()
            .timeout(options.timeout)
            .build()
            .map_err(|e| TriageError::Config(format!("cannot build HTTP client: {e}")))?;
        Ok(KestraClient { http, options })
    }

    pub fn options(&self) -> &KestraOptions {
        &self.options
    }

    pub fn execution_url(&self, flow_id: &str) -> String {
        format!(
            "{}/api/v1/{}/executions/{}/{}",
            self.options.url, self.options.tenant, self.options.namespace, flow_id
        )
    }

    /// Starts one execution (one attempt).
    pub async fn trigger_once(&self, run: &FlowRun) -> Result<Execution, TriageError> {
        let mut form = Form::new();
        for input in &run.inputs {
            form = match input {
                Input::Json(name, value) => form.part(
                    name.clone(),
                    Part::text(value.to_string())
                        .mime_str("application/json")
                        .expect("static mime type parses"),
                ),
                Input::Text(name, text) => form.text(name.clone(), text.clone()),
            };
        }
        let mut req = self
            .http
            .post(self.execution_url(&run.flow_id))
            .multipart(form);
        if let Some(user) = &self.options.username {
            req = req.basic_auth(user, self.options.password.as_ref().map(Secret::expose));
        }
        let res = req.send().await.map_err(|e| {
            if e.is_timeout() {
                TriageError::Timeout
            } else {
                TriageError::Http(e.to_string())
            }
        })?;
        let status = res.status();
        if !status.is_success() {
            let body = res.text().await.unwrap_or_default();
            return Err(TriageError::Status {
                status: status.as_u16(),
                body: super::result::bound(&body, 300),
            });
        }
        res.json::<Execution>()
            .await
            .map_err(|e| TriageError::InvalidOutput(format!("unexpected Kestra answer: {e}")))
    }

    /// Starts one execution, retrying network errors, 429 and 5xx with backoff.
    pub async fn trigger(&self, run: &FlowRun) -> Result<Execution, TriageError> {
        let policy = ExponentialBuilder::default()
            .with_min_delay(self.options.min_backoff)
            .with_max_delay(Duration::from_secs(60))
            .with_max_times(self.options.max_retries)
            .with_jitter();
        (|| async { self.trigger_once(run).await })
            .retry(policy)
            .sleep(tokio::time::sleep)
            .when(TriageError::is_transient)
            .notify(|e, wait| {
                tracing::debug!(error = %e, ?wait, flow = %run.flow_id, "kestra trigger failed; retrying");
            })
            .await
    }
}

/// Queue of flow runs, sent by a background task.
#[derive(Clone)]
pub struct KestraHandle {
    tx: mpsc::Sender<FlowRun>,
}

impl fmt::Debug for KestraHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("KestraHandle")
    }
}

impl KestraHandle {
    /// Queues a run without waiting; false (and a warning) when the queue is full.
    pub fn offer(&self, run: FlowRun) -> bool {
        match self.tx.try_send(run) {
            Ok(()) => true,
            Err(e) => {
                tracing::warn!(error = %e, "kestra trigger queue full; trigger dropped");
                false
            }
        }
    }
}

/// Starts the task that sends queued runs and records their execution ids.
pub fn spawn(client: KestraClient, store: Arc<dyn Store>, capacity: usize) -> KestraHandle {
    let (tx, mut rx) = mpsc::channel::<FlowRun>(capacity.max(1));
    tokio::spawn(async move {
        while let Some(run) = rx.recv().await {
            let client = client.clone();
            let store = store.clone();
            // Each run retries on its own, so one slow trigger does not hold the queue.
            tokio::spawn(async move {
                match client.trigger(&run).await {
                    Ok(exec) => {
                        tracing::info!(flow = %run.flow_id, execution = %exec.id, "kestra flow started");
                        let state = exec.state.and_then(|s| s.current);
                        if let Err(e) = store
                            .record_kestra_execution(
                                &run.flow_id,
                                run.group_id,
                                &exec.id,
                                state.as_deref(),
                                chrono::Utc::now(),
                            )
                            .await
                        {
                            tracing::warn!(error = %e, "cannot record kestra execution");
                        }
                    }
                    Err(e) => {
                        tracing::warn!(flow = %run.flow_id, error = %e, "kestra flow could not be started")
                    }
                }
            });
        }
    });
    KestraHandle { tx }
}

/// The seed's `error_event` input: `{service, error_type, message, path, env}`
/// plus what identifies the incident here.
pub fn error_event(event: &crate::model::StoredEvent, cluster_key: &str) -> Value {
    serde_json::json!({
        "service": event.service,
        "error_type": event.error_type,
        "message": event.message,
        "path": event.path,
        "env": event.env,
        "timestamp": event.timestamp,
        "trace_id": event.trace_id,
        "event_id": event.event_id,
        "group_id": event.group_id,
        "cluster_key": cluster_key,
    })
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::triage::testing::{serve, Reply};

    fn client(base: &str) -> KestraClient {
        let mut o = KestraOptions::new(base);
        o.username = Some("user".into());
        o.password = Some(Secret::new("pass"));
        o.min_backoff = Duration::from_millis(10);
        o.max_retries = 3;
        KestraClient::new(o).unwrap()
    }

    fn created(id: &str) -> Reply {
        Reply::json(
            200,
            json!({"id": id, "namespace": "main", "flowId": "error-intake",
                                "state": {"current": "CREATED", "histories": []}}),
        )
    }

    #[tokio::test]
    async fn error_intake_is_a_multipart_json_part_with_basic_auth() {
        let server = serve(vec![created("4Xa1")]).await;
        let run = FlowRun {
            flow_id: ERROR_INTAKE.into(),
            group_id: Some(3),
            inputs: vec![Input::Json(
                "error_event".into(),
                json!({"service": "api", "error_type": "Timeout"}),
            )],
        };
        let exec = client(&server.base).trigger(&run).await.unwrap();
        assert_eq!(exec.id, "4Xa1");
        assert_eq!(exec.state.unwrap().current.as_deref(), Some("CREATED"));
        let req = &server.requests()[0];
        assert_eq!(req.path, "/api/v1/main/executions/main/error-intake");
        // base64("user:pass")
        assert_eq!(req.header("authorization"), Some("Basic dXNlcjpwYXNz"));
        assert!(req
            .header("content-type")
            .unwrap()
            .starts_with("multipart/form-data; boundary="));
        let body = String::from_utf8_lossy(&req.body);
        assert!(body.contains("name=\"error_event\""), "{body}");
        assert!(
            body.contains("Content-Type: application/json")
                || body.contains("content-type: application/json"),
            "{body}"
        );
        assert!(
            body.contains(r#"{"error_type":"Timeout","service":"api"}"#),
            "{body}"
        );
    }

    #[tokio::test]
    async fn summary_agent_gets_a_text_part_and_failures_are_retried() {
        let server = serve(vec![Reply::json(503, json!({})), created("exec-2")]).await;
        let run = FlowRun {
            flow_id: GROUP_SUMMARY_AGENT.into(),
            group_id: Some(3),
            inputs: vec![Input::Text(
                "cluster_key".into(),
                "payment-api:Timeout".into(),
            )],
        };
        let exec = client(&server.base).trigger(&run).await.unwrap();
        assert_eq!(exec.id, "exec-2");
        let reqs = server.requests();
        assert_eq!(reqs.len(), 2);
        assert_eq!(
            reqs[1].path,
            "/api/v1/main/executions/main/group-summary-agent"
        );
        let body = String::from_utf8_lossy(&reqs[1].body);
        assert!(
            body.contains("name=\"cluster_key\"\r\n\r\npayment-api:Timeout"),
            "{body}"
        );
    }

    #[tokio::test]
    async fn client_errors_are_not_retried() {
        let server = serve(vec![Reply::json(404, json!({"message": "flow not found"}))]).await;
        let run = FlowRun {
            flow_id: "nope".into(),
            group_id: None,
            inputs: vec![],
        };
        let err = client(&server.base).trigger(&run).await.unwrap_err();
        assert!(
            matches!(err, TriageError::Status { status: 404, .. }),
            "{err}"
        );
        assert_eq!(server.requests().len(), 1);
    }
}
