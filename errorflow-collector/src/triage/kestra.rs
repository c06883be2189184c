//! Triggers Kestra flows through Kestra's REST API, in the seed's wire
//! format: `POST {url}/api/v1/{tenant}/executions/{namespace}/{flowId}`,
//! HTTP Basic auth, `multipart/form-data` with one part per flow input (JSON
//! inputs as `application/json` parts, strings as text parts). Kestra
//! answers at once with the created execution.
//!
//! Every start is first written to the outbox (`kestra_outbox`) with a new
//! idempotency key, which the flow also receives as its `idempotency_key`
//! input; a background task sends what is due, and keeps a start that
//! failed for a network error, 429 or 5xx for a later attempt (exponential
//! backoff from `backon`, up to five minutes), so neither a Kestra outage
//! nor a restart of the collector loses one. A start Kestra answers once is
//! followed: another task polls `GET /api/v1/{tenant}/executions/{id}`
//! until the run ends and records its state, and for a failed run the task
//! that failed and Kestra's error log line for it
//! (`GET /api/v1/{tenant}/logs/{id}`). A Kestra outage never reaches an
//! ingest request.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use backon::{ExponentialBuilder, Retryable};
use reqwest::multipart::{Form, Part};
use serde::Deserialize;
use serde_json::Value;
use tokio::sync::Notify;

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
    /// How often started runs are polled until they end.
    pub poll_interval: Duration,
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
            poll_interval: Duration::from_secs(10),
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

/// The execution Kestra created, or its state later.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Execution {
    pub id: String,
    #[serde(default)]
    pub state: Option<ExecutionState>,
    #[serde(default, rename = "taskRunList")]
    pub task_runs: Option<Vec<TaskRunState>>,
}

/// One task run of an execution.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct TaskRunState {
    #[serde(rename = "taskId")]
    pub task_id: String,
    #[serde(default)]
    pub state: Option<ExecutionState>,
}

impl Execution {
    pub fn current(&self) -> Option<&str> {
        self.state.as_ref().and_then(|s| s.current.as_deref())
    }

    /// The first task run that failed.
    pub fn failed_task(&self) -> Option<&str> {
        self.task_runs.iter().flatten().find_map(|t| {
            (t.state.as_ref().and_then(|s| s.current.as_deref()) == Some("FAILED"))
                .then_some(t.task_id.as_str())
        })
    }
}

/// Kestra's terminated states (`State.Type.isTerminated`).
pub fn is_terminated(state: &str) -> bool {
    matches!(
        state,
        "SUCCESS" | "WARNING" | "FAILED" | "KILLED" | "CANCELLED" | "SKIPPED"
    )
}

#[derive(Debug, Deserialize)]
struct LogEntry {
    #[serde(default, rename = "taskId")]
    task_id: Option<String>,
    #[serde(default)]
    level: Option<String>,
    #[serde(default)]
    message: Option<String>,
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
        let req = self.authed(
            self.http
                .post(self.execution_url(&run.flow_id))
                .multipart(form),
        );
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

    fn authed(&self, req: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match &self.options.username {
            Some(user) => req.basic_auth(user, self.options.password.as_ref().map(Secret::expose)),
            None => req,
        }
    }

    async fn get_json<T: serde::de::DeserializeOwned>(
        &self,
        url: &str,
    ) -> Result<Option<T>, TriageError> {
        let res = self.authed(self.http.get(url)).send().await.map_err(|e| {
            if e.is_timeout() {
                TriageError::Timeout
            } else {
                TriageError::Http(e.without_url().to_string())
            }
        })?;
        let status = res.status();
        if status == reqwest::StatusCode::NOT_FOUND {
            return Ok(None);
        }
        if !status.is_success() {
            let body = res.text().await.unwrap_or_default();
            return Err(TriageError::Status {
                status: status.as_u16(),
                body: super::result::bound(&body, 300),
            });
        }
        res.json::<T>()
            .await
            .map(Some)
            .map_err(|e| TriageError::InvalidOutput(format!("unexpected Kestra answer: {e}")))
    }

    /// An execution's current state; `None` if Kestra does not know it.
    pub async fn execution(&self, id: &str) -> Result<Option<Execution>, TriageError> {
        let url = format!(
            "{}/api/v1/{}/executions/{}",
            self.options.url,
            self.options.tenant,
            urlencode(id)
        );
        self.get_json(&url).await
    }

    /// Kestra's first ERROR log line of a task of an execution (bounded).
    pub async fn error_message(
        &self,
        id: &str,
        task_id: &str,
    ) -> Result<Option<String>, TriageError> {
        let url = format!(
            "{}/api/v1/{}/logs/{}?minLevel=ERROR",
            self.options.url,
            self.options.tenant,
            urlencode(id)
        );
        let logs: Vec<LogEntry> = self.get_json(&url).await?.unwrap_or_default();
        Ok(logs
            .into_iter()
            .find(|l| l.task_id.as_deref() == Some(task_id) && l.level.as_deref() == Some("ERROR"))
            .and_then(|l| l.message)
            .map(|m| super::result::bound(&m, 500)))
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

fn urlencode(s: &str) -> String {
    form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

/// The flow inputs as stored in the outbox: `[{"name", "json"|"text"}]`.
fn encode_inputs(inputs: &[Input]) -> String {
    Value::Array(
        inputs
            .iter()
            .map(|i| match i {
                Input::Json(name, v) => serde_json::json!({"name": name, "json": v}),
                Input::Text(name, t) => serde_json::json!({"name": name, "text": t}),
            })
            .collect(),
    )
    .to_string()
}

fn decode_inputs(s: &str) -> Option<Vec<Input>> {
    let parts: Vec<Value> = serde_json::from_str(s).ok()?;
    parts
        .into_iter()
        .map(|p| {
            let name = p["name"].as_str()?.to_string();
            match (p.get("json"), p["text"].as_str()) {
                (Some(v), _) => Some(Input::Json(name, v.clone())),
                (None, Some(t)) => Some(Input::Text(name, t.to_string())),
                _ => None,
            }
        })
        .collect()
}

/// Writes flow starts to the outbox and wakes the sender. Cheap to clone.
#[derive(Clone)]
pub struct KestraHandle {
    store: Arc<dyn Store>,
    wake: Arc<Notify>,
}

impl fmt::Debug for KestraHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("KestraHandle")
    }
}

impl KestraHandle {
    /// Owes Kestra this start: it is stored (with a new idempotency key,
    /// added to the inputs) before this returns, and sent in the background.
    pub async fn enqueue(&self, mut run: FlowRun) -> Result<String, TriageError> {
        let key = uuid::Uuid::now_v7().to_string();
        run.inputs
            .push(Input::Text("idempotency_key".into(), key.clone()));
        self.store
            .enqueue_kestra_trigger(
                &run.flow_id,
                run.group_id,
                &encode_inputs(&run.inputs),
                &key,
                chrono::Utc::now(),
            )
            .await?;
        self.wake.notify_one();
        Ok(key)
    }
}

/// Starts the outbox sender and the poller of started runs.
pub fn spawn(client: KestraClient, store: Arc<dyn Store>) -> KestraHandle {
    let handle = KestraHandle::outbox_only(store);
    // They run as long as the process.
    drop(handle.spawn_workers(client));
    handle
}

impl KestraHandle {
    /// A handle that only writes flow starts to the outbox: in queue mode
    /// the one writer that leads sends them (it polls the outbox every
    /// second), so that each start is sent by one process.
    pub fn outbox_only(store: Arc<dyn Store>) -> KestraHandle {
        KestraHandle {
            store,
            wake: Arc::new(Notify::new()),
        }
    }

    /// Starts this process's outbox sender and the poller of started runs;
    /// aborting their tasks stops them (a start being sent stays in the
    /// outbox and is sent again, with its idempotency key).
    pub fn spawn_workers(&self, client: KestraClient) -> Vec<tokio::task::JoinHandle<()>> {
        vec![
            tokio::spawn(send_due(
                client.clone(),
                self.store.clone(),
                self.wake.clone(),
            )),
            tokio::spawn(follow_runs(client, self.store.clone())),
        ]
    }
}

/// Sends the outbox's due starts, then waits to be woken (or a second).
async fn send_due(client: KestraClient, store: Arc<dyn Store>, wake: Arc<Notify>) {
    const BATCH: u32 = 32;
    let backoff = ExponentialBuilder::default()
        .with_min_delay(client.options.min_backoff)
        .with_max_delay(Duration::from_secs(300))
        .without_max_times()
        .with_jitter();
    loop {
        let due = match store.due_kestra_triggers(chrono::Utc::now(), BATCH).await {
            Ok(due) => due,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the Kestra outbox; will retry");
                Vec::new()
            }
        };
        for trigger in &due {
            send_one(&client, store.as_ref(), trigger, backoff).await;
        }
        if due.len() < BATCH as usize {
            let _ = tokio::time::timeout(Duration::from_secs(1), wake.notified()).await;
        }
    }
}

async fn send_one(
    client: &KestraClient,
    store: &dyn Store,
    trigger: &crate::model::KestraTrigger,
    backoff: ExponentialBuilder,
) {
    use backon::BackoffBuilder;
    let flow = &trigger.flow_id;
    let Some(inputs) = decode_inputs(&trigger.inputs) else {
        tracing::error!(%flow, "unreadable inputs in the Kestra outbox; start dropped");
        let _ = store.drop_kestra_trigger(trigger.id).await;
        return;
    };
    let run = FlowRun {
        flow_id: flow.clone(),
        group_id: trigger.group_id,
        inputs,
    };
    let now = chrono::Utc::now();
    let outcome = match client.trigger_once(&run).await {
        Ok(exec) => {
            tracing::info!(%flow, execution = %exec.id, "kestra flow started");
            crate::telemetry::kestra_trigger("started");
            store
                .kestra_trigger_started(trigger, &exec.id, exec.current(), now)
                .await
        }
        Err(e) if e.is_transient() => {
            let attempts = trigger.attempts.saturating_add(1);
            let wait = backoff
                .build()
                .nth(usize::try_from(attempts - 1).unwrap_or(0))
                .unwrap_or(Duration::from_secs(300));
            tracing::warn!(%flow, error = %e, attempts, ?wait, "kestra flow not started yet; will retry");
            crate::telemetry::kestra_trigger("retry");
            let next =
                now + chrono::Duration::from_std(wait).unwrap_or(chrono::Duration::minutes(5));
            store
                .retry_kestra_trigger(trigger.id, attempts, next, &e.to_string())
                .await
        }
        Err(e) => {
            tracing::warn!(%flow, error = %e, "kestra refused to start the flow; start dropped");
            crate::telemetry::kestra_trigger("refused");
            store.drop_kestra_trigger(trigger.id).await
        }
    };
    if let Err(e) = outcome {
        tracing::warn!(%flow, error = %e, "cannot update the Kestra outbox");
    }
}

/// Polls the runs whose end is not known yet, and records how they ended.
async fn follow_runs(client: KestraClient, store: Arc<dyn Store>) {
    let mut tick = tokio::time::interval(client.options.poll_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let runs = match store.unfinished_kestra_runs(100).await {
            Ok(runs) => runs,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the started Kestra runs; will retry");
                continue;
            }
        };
        for run in runs {
            let exec = match client.execution(&run.execution_id).await {
                Ok(exec) => exec,
                Err(e) => {
                    tracing::debug!(execution = %run.execution_id, error = %e, "cannot poll a kestra run");
                    continue;
                }
            };
            let state = match &exec {
                Some(exec) => match exec.current() {
                    Some(state) if is_terminated(state) => state.to_string(),
                    _ => continue,
                },
                None => "NOT_FOUND".to_string(),
            };
            let failed_task = exec
                .as_ref()
                .and_then(|e| e.failed_task())
                .map(str::to_string);
            let error = match &failed_task {
                Some(task) => client
                    .error_message(&run.execution_id, task)
                    .await
                    .unwrap_or_default(),
                None => None,
            };
            if matches!(state.as_str(), "FAILED" | "KILLED") {
                tracing::warn!(flow = %run.flow_id, execution = %run.execution_id, group = ?run.group_id,
                    task = failed_task.as_deref().unwrap_or("?"), error = error.as_deref().unwrap_or(""),
                    "kestra run failed");
            }
            crate::telemetry::kestra_run_finished(&run.flow_id, &state);
            if let Err(e) = store
                .finish_kestra_run(
                    run.id,
                    &state,
                    failed_task.as_deref(),
                    error.as_deref(),
                    chrono::Utc::now(),
                )
                .await
            {
                tracing::warn!(error = %e, "cannot record how a kestra run ended");
            }
        }
    }
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
