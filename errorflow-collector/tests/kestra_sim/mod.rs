//! A small executor of the part of Kestra that `infra/kestra/*.yml` use, so
//! that the tests run those very files end to end against the collector.
//! Kestra itself (a JVM server with its own database) cannot be installed
//! in the test environment; this module follows its source instead. It is a
//! module of the test suite rather than a crate of the workspace because
//! only the integration tests use it and it needs nothing but their
//! dev-dependencies.
//!
//! What it does, and where each behaviour was read (kestra-io/kestra,
//! kestra-io/plugin-ai):
//!
//! - **Flows**: a flow file's `id`, `namespace`, `inputs` (`STRING`, `JSON`;
//!   a missing required input is refused with 422), `tasks` run one after
//!   the other, the first failing task fails the execution and the rest do
//!   not run; `triggers` of type `io.kestra.plugin.core.trigger.Schedule`
//!   fire only when the test calls [`Kestra::fire_schedule`]
//!   (`core/.../plugin/core/trigger/Schedule.java` gives the trigger no other
//!   effect on the tasks). Execution states CREATED → RUNNING → SUCCESS or
//!   FAILED (`core/.../models/flows/State.java`).
//! - **Expressions**: every string property of a task is rendered when the
//!   task runs, with minijinja in strict mode (Kestra's Pebble engine runs
//!   with `strictVariables`: an undefined variable fails the task,
//!   `core/.../runners/VariableRenderer.java`). Maps and lists print as JSON
//!   (`core/.../runners/pebble/JsonWriter.java`). `a ?? b` is Pebble's null
//!   coalescing (`pebble/expression/NullCoalescingExpression.java`: `b` when
//!   `a` is null or undefined), rewritten before rendering. Functions
//!   `fromJson` (`pebble/functions/FromJsonFunction.java`), `secret`
//!   (OSS: the base64 value of the `SECRET_<NAME>` environment variable,
//!   `core/.../secret/SecretService.java`), filters `toJson`
//!   (`pebble/filters/ToJsonFilter.java`), `replace` with a map of pairs
//!   (`pebble/filters/ReplaceFilter.java`), `urlencode` (Pebble's
//!   `UrlEncoderFilter`, `java.net.URLEncoder` in UTF-8: form encoding).
//!   Variables: `inputs`, `outputs.<taskId>`, `execution.id`, `flow.id`,
//!   `flow.namespace`, `envs` (the `ENV_<NAME>` environment variables,
//!   lower-cased without the prefix, `core/.../runners/RunVariables.java`),
//!   `item.value`/`item.index` inside a `Loop`, `trigger.date` for a
//!   scheduled execution.
//! - **`io.kestra.plugin.core.log.Log`**: renders `message` into the
//!   execution's logs (`plugin/core/log/Log.java`).
//! - **`io.kestra.plugin.core.http.Request`**: `method` (default GET), `uri`,
//!   `headers`, `contentType`, `body`; outputs `uri`, `code`, `headers`,
//!   `body` (the body as a string); a status ≥ 400 fails the task, as the
//!   default `allowFailed: false` does (`plugin/core/http/Request.java`,
//!   `core/.../http/client/HttpClient.java`).
//! - **`io.kestra.plugin.core.flow.Subflow`**: `namespace`, `flowId`,
//!   `inputs` (rendered), `wait` (default true), `transmitFailed` (default
//!   true): the child is an execution of its own; with `wait` and
//!   `transmitFailed` its failure fails the task. Outputs `executionId` and
//!   `state` (`plugin/core/flow/Subflow.java`).
//! - **`io.kestra.plugin.core.flow.Loop`** (the replacement of `ForEach`
//!   in Kestra 2.0): `values` rendered and read as a JSON array (or a YAML
//!   list), each item given to the iteration as `item.value`, objects as
//!   their JSON string; `concurrencyLimit` (0 = no limit); each iteration
//!   runs its tasks in an isolated context; `transmitFailed` (default true)
//!   fails the loop when an iteration failed (`plugin/core/flow/Loop.java`).
//! - **`io.kestra.plugin.ai.agent.AIAgent`** (plugin-ai): `provider` of type
//!   `io.kestra.plugin.ai.provider.GoogleGemini` (`modelName`, `apiKey`,
//!   `baseUrl`, default `https://generativelanguage.googleapis.com/v1beta`;
//!   `POST {baseUrl}/models/{model}:generateContent` with `x-goog-api-key`,
//!   `systemInstruction`, `contents`, `generationConfig` with
//!   `responseMimeType: application/json` and `responseSchema` in JSON
//!   mode, as langchain4j's `GoogleAiGeminiChatModel` sends it) or
//!   `io.kestra.plugin.ai.provider.OpenAI` (`baseUrl`, `POST
//!   {baseUrl}/chat/completions` with a bearer key and `response_format`
//!   `json_schema` in JSON mode). `configuration.temperature` and
//!   `configuration.responseFormat` (`type` TEXT or JSON, `jsonSchema`,
//!   `jsonSchemaDescription`): each property's `title` becomes its
//!   description, `description` is not read
//!   (`tool/internal/JsonObjectSchemaTranslator.java`,
//!   `domain/ChatConfiguration.java`). Outputs as `domain/AIOutput.java`
//!   builds them: `textOutput` only with TEXT, `jsonOutput` (the parsed
//!   object) only with JSON, `tokenUsage`, `finishReason`,
//!   `toolExecutions`, `intermediateResponses`, `sources`,
//!   `guardrailViolated`, `requestDuration`; fields that are null are
//!   absent, as Kestra serialises outputs without nulls.
//! - **HTTP API** (what the collector calls): `POST
//!   /api/v1/{tenant}/executions/{namespace}/{flowId}` with
//!   `multipart/form-data` inputs and HTTP Basic auth (wrong or missing
//!   credentials: 401), answering the created execution at once; `GET
//!   /api/v1/{tenant}/executions/{id}` (`state.current`, `taskRunList`);
//!   `GET /api/v1/{tenant}/logs/{executionId}` (the execution's log lines,
//!   an ERROR line with the failure's message for a failed task)
//!   (`webserver/.../controllers/api/ExecutionController.java`,
//!   `LogController.java`).

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{Multipart, Path as UrlPath, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::Engine;
use minijinja::value::{Kwargs, Value as JValue, ValueKind};
use minijinja::{Environment, Error as JError, ErrorKind, UndefinedBehavior};
use serde_json::{json, Map, Value};

/// A task's failure: which task, and Kestra's message.
#[derive(Debug, Clone, PartialEq)]
pub struct TaskFailure {
    pub task_id: String,
    pub message: String,
}

/// One log line of an execution.
#[derive(Debug, Clone)]
pub struct LogLine {
    pub task_id: String,
    pub level: &'static str,
    pub message: String,
}

/// A task run as the execution API shows it.
#[derive(Debug, Clone)]
pub struct TaskRun {
    pub task_id: String,
    pub value: Option<String>,
    pub state: &'static str,
    pub outputs: Value,
}

/// An execution, kept for the API and the tests.
#[derive(Debug, Clone)]
pub struct Execution {
    pub id: String,
    pub namespace: String,
    pub flow_id: String,
    pub inputs: Value,
    pub state: &'static str,
    pub task_runs: Vec<TaskRun>,
    pub logs: Vec<LogLine>,
    pub failure: Option<TaskFailure>,
    pub parent_id: Option<String>,
}

impl Execution {
    pub fn api_json(&self) -> Value {
        json!({
            "id": self.id,
            "namespace": self.namespace,
            "flowId": self.flow_id,
            "inputs": self.inputs,
            "state": {"current": self.state, "histories": []},
            "taskRunList": self.task_runs.iter().map(|t| {
                let mut v = json!({
                    "executionId": self.id,
                    "taskId": t.task_id,
                    "state": {"current": t.state},
                    "outputs": t.outputs,
                });
                if let Some(value) = &t.value {
                    v["value"] = json!(value);
                }
                v
            }).collect::<Vec<_>>(),
        })
    }

    pub fn outputs(&self, task_id: &str) -> Option<&Value> {
        self.task_runs
            .iter()
            .find(|t| t.task_id == task_id)
            .map(|t| &t.outputs)
    }
}

/// What the executor runs with: its login and the container environment
/// (`SECRET_*` base64 values, `ENV_*` values).
#[derive(Debug, Clone, Default)]
pub struct Options {
    pub username: String,
    pub password: String,
    pub environment: BTreeMap<String, String>,
}

impl Options {
    pub fn secret(mut self, name: &str, value: &str) -> Options {
        self.environment.insert(
            format!("SECRET_{name}"),
            base64::engine::general_purpose::STANDARD.encode(value),
        );
        self
    }

    pub fn env(mut self, name: &str, value: &str) -> Options {
        self.environment
            .insert(format!("ENV_{}", name.to_ascii_uppercase()), value.into());
        self
    }
}

struct Inner {
    flows: BTreeMap<String, Value>,
    options: Options,
    executions: Mutex<BTreeMap<String, Execution>>,
    changed: tokio::sync::Notify,
    http: reqwest::Client,
    next_id: AtomicU64,
    env: Environment<'static>,
    /// Every POST to the execution API, accepted or not: (flow, status).
    api_calls: Mutex<Vec<(String, u16)>>,
    /// The variables of each execution not yet started.
    vars: Mutex<BTreeMap<String, Value>>,
}

/// The executor, serving Kestra's API on 127.0.0.1.
#[derive(Clone)]
pub struct Kestra {
    pub base: String,
    inner: Arc<Inner>,
}

/// Loads every `*.yml` flow in `dir`.
pub fn load_flows(dir: &Path) -> BTreeMap<String, Value> {
    let mut flows = BTreeMap::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().and_then(|e| e.to_str()) != Some("yml") {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        let flow = parse_flow(&text);
        flows.insert(flow["id"].as_str().unwrap().to_string(), flow);
    }
    flows
}

pub fn parse_flow(text: &str) -> Value {
    let yaml: serde_yaml::Value = serde_yaml::from_str(text).unwrap();
    serde_json::to_value(yaml).unwrap()
}

impl Kestra {
    /// Serves on a port the OS hands out.
    pub async fn start(flows: BTreeMap<String, Value>, options: Options) -> Kestra {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        Kestra::serve(listener, flows, options)
    }

    /// Serves on `listener` (bound earlier, so a collector can be told the
    /// address before Kestra comes up).
    pub fn serve(
        listener: tokio::net::TcpListener,
        flows: BTreeMap<String, Value>,
        options: Options,
    ) -> Kestra {
        let base = format!("http://{}", listener.local_addr().unwrap());
        let env = environment(&options.environment);
        let inner = Arc::new(Inner {
            flows,
            options,
            executions: Mutex::new(BTreeMap::new()),
            changed: tokio::sync::Notify::new(),
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(30))
                .build()
                .unwrap(),
            next_id: AtomicU64::new(1),
            env,
            api_calls: Mutex::new(Vec::new()),
            vars: Mutex::new(BTreeMap::new()),
        });
        let kestra = Kestra { base, inner };
        let app = Router::new()
            .route(
                "/api/v1/{tenant}/executions/{namespace}/{flow_id}",
                post(api_create),
            )
            .route("/api/v1/{tenant}/executions/{id}", get(api_get))
            .route("/api/v1/{tenant}/logs/{id}", get(api_logs))
            .with_state(kestra.clone());
        tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        kestra
    }

    pub fn executions(&self, flow_id: &str) -> Vec<Execution> {
        self.inner
            .executions
            .lock()
            .unwrap()
            .values()
            .filter(|e| e.flow_id == flow_id)
            .cloned()
            .collect()
    }

    pub fn execution(&self, id: &str) -> Option<Execution> {
        self.inner.executions.lock().unwrap().get(id).cloned()
    }

    pub fn api_calls(&self) -> Vec<(String, u16)> {
        self.inner.api_calls.lock().unwrap().clone()
    }

    /// Waits until `n` executions of `flow_id` have ended, and returns them.
    pub async fn wait_for_ended(
        &self,
        flow_id: &str,
        n: usize,
        within: Duration,
    ) -> Vec<Execution> {
        let deadline = Instant::now() + within;
        loop {
            let notified = self.inner.changed.notified();
            let ended: Vec<Execution> = self
                .executions(flow_id)
                .into_iter()
                .filter(|e| matches!(e.state, "SUCCESS" | "FAILED"))
                .collect();
            if ended.len() >= n {
                return ended;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(
                !left.is_zero(),
                "{} of {n} executions of {flow_id} ended: {:#?}",
                ended.len(),
                self.executions(flow_id)
            );
            let _ = tokio::time::timeout(left, notified).await;
        }
    }

    /// Runs a flow now, as an execution started through the API would run,
    /// and returns the ended execution.
    pub async fn run(&self, flow_id: &str, inputs: Value) -> Execution {
        let id = self.create(flow_id, inputs, None, None).unwrap();
        self.execute(&id).await;
        self.execution(&id).unwrap()
    }

    /// Fires a flow's `Schedule` trigger once.
    pub async fn fire_schedule(&self, flow_id: &str) -> Execution {
        let flow = &self.inner.flows[flow_id];
        let trigger = flow["triggers"]
            .as_array()
            .and_then(|ts| {
                ts.iter()
                    .find(|t| t["type"] == "io.kestra.plugin.core.trigger.Schedule")
            })
            .unwrap_or_else(|| panic!("{flow_id} has no Schedule trigger"));
        assert!(trigger["cron"].is_string(), "a Schedule needs a cron");
        let date = chrono::Utc::now().to_rfc3339();
        let id = self
            .create(flow_id, json!({}), None, Some(json!({"date": date})))
            .unwrap();
        self.execute(&id).await;
        self.execution(&id).unwrap()
    }

    /// Creates an execution in state CREATED after checking its inputs.
    fn create(
        &self,
        flow_id: &str,
        given: Value,
        parent_id: Option<String>,
        trigger: Option<Value>,
    ) -> Result<String, String> {
        let flow = self
            .inner
            .flows
            .get(flow_id)
            .ok_or_else(|| format!("flow main.{flow_id} not found"))?;
        let mut inputs = Map::new();
        for input in flow["inputs"].as_array().into_iter().flatten() {
            let name = input["id"].as_str().unwrap();
            let required = input["required"].as_bool().unwrap_or(true);
            match given.get(name) {
                Some(v) if !v.is_null() => {
                    let v = match (input["type"].as_str(), v) {
                        (Some("JSON"), Value::String(s)) => serde_json::from_str(s)
                            .map_err(|e| format!("Invalid input '{name}': invalid JSON ({e})"))?,
                        (Some("STRING"), Value::String(_)) | (Some("JSON"), _) => v.clone(),
                        (Some("STRING"), other) => Value::String(other.to_string()),
                        (t, _) => return Err(format!("input type {t:?} is not supported")),
                    };
                    inputs.insert(name.into(), v);
                }
                _ if required => {
                    return Err(format!(
                        "Invalid input for `{name}`, missing required input"
                    ))
                }
                // An optional input given no value is null.
                _ => {
                    inputs.insert(name.into(), Value::Null);
                }
            }
        }
        let id = format!(
            "exec{:04}{}",
            self.inner.next_id.fetch_add(1, Ordering::Relaxed),
            &uuid::Uuid::new_v4().simple().to_string()[..8]
        );
        let mut vars = json!({
            "flow": {"id": flow_id, "namespace": flow["namespace"]},
            "execution": {"id": id},
            "inputs": Value::Object(inputs.clone()),
            "outputs": {},
            "envs": envs(&self.inner.options.environment),
        });
        if let Some(t) = trigger {
            vars["trigger"] = t;
        }
        let exec = Execution {
            id: id.clone(),
            namespace: flow["namespace"].as_str().unwrap_or("main").into(),
            flow_id: flow_id.into(),
            inputs: Value::Object(inputs),
            state: "CREATED",
            task_runs: Vec::new(),
            logs: Vec::new(),
            failure: None,
            parent_id,
        };
        self.inner
            .executions
            .lock()
            .unwrap()
            .insert(id.clone(), exec);
        self.inner.vars.lock().unwrap().insert(id.clone(), vars);
        Ok(id)
    }
}

/// What a running execution accumulates.
struct Run {
    vars: Value,
    task_runs: Vec<TaskRun>,
    logs: Vec<LogLine>,
}

type BoxFuture<'a, T> = std::pin::Pin<Box<dyn std::future::Future<Output = T> + Send + 'a>>;

impl Kestra {
    /// Runs a created execution to its end.
    async fn execute(&self, id: &str) {
        let vars = self.inner.vars.lock().unwrap().remove(id).unwrap();
        let flow_id = self.update(id, |e| e.state = "RUNNING").flow_id;
        let flow = self.inner.flows[&flow_id].clone();
        let mut run = Run {
            vars,
            task_runs: Vec::new(),
            logs: Vec::new(),
        };
        let tasks = flow["tasks"].as_array().cloned().unwrap_or_default();
        let result = self.run_tasks(&mut run, &tasks, None).await;
        self.update(id, |e| {
            e.task_runs = run.task_runs;
            e.logs = run.logs;
            match result {
                Ok(()) => e.state = "SUCCESS",
                Err(f) => {
                    e.state = "FAILED";
                    e.failure = Some(f);
                }
            }
        });
    }

    fn update(&self, id: &str, f: impl FnOnce(&mut Execution)) -> Execution {
        let e = {
            let mut map = self.inner.executions.lock().unwrap();
            let e = map.get_mut(id).unwrap();
            f(e);
            e.clone()
        };
        self.inner.changed.notify_waiters();
        e
    }

    /// Runs tasks in order; the first failure stops the list.
    fn run_tasks<'a>(
        &'a self,
        run: &'a mut Run,
        tasks: &'a [Value],
        value: Option<String>,
    ) -> BoxFuture<'a, Result<(), TaskFailure>> {
        Box::pin(async move {
            for task in tasks {
                let task_id = task["id"].as_str().unwrap_or("?").to_string();
                let result = self.run_task(run, task).await;
                match result {
                    Ok(outputs) => {
                        run.vars["outputs"][&task_id] = outputs.clone();
                        run.task_runs.push(TaskRun {
                            task_id,
                            value: value.clone(),
                            state: "SUCCESS",
                            outputs,
                        });
                    }
                    Err(message) => {
                        run.logs.push(LogLine {
                            task_id: task_id.clone(),
                            level: "ERROR",
                            message: message.clone(),
                        });
                        run.task_runs.push(TaskRun {
                            task_id: task_id.clone(),
                            value: value.clone(),
                            state: "FAILED",
                            outputs: json!({}),
                        });
                        return Err(TaskFailure { task_id, message });
                    }
                }
            }
            Ok(())
        })
    }

    /// Runs one task: Ok(outputs) or Err(Kestra's message).
    async fn run_task(&self, run: &mut Run, task: &Value) -> Result<Value, String> {
        let ty = task["type"].as_str().unwrap_or_default();
        match ty {
            "io.kestra.plugin.core.log.Log" => {
                let message = self.render_str(&task["message"], &run.vars)?;
                run.logs.push(LogLine {
                    task_id: task["id"].as_str().unwrap().into(),
                    level: "INFO",
                    message,
                });
                Ok(json!({}))
            }
            "io.kestra.plugin.core.http.Request" => {
                let t = self.render_props(task, &run.vars)?;
                self.http_request(&t).await
            }
            "io.kestra.plugin.core.flow.Subflow" => {
                let t = self.render_props(task, &run.vars)?;
                self.subflow(&t, &run.vars).await
            }
            "io.kestra.plugin.core.flow.Loop" => self.run_loop(run, task).await,
            "io.kestra.plugin.ai.agent.AIAgent" => {
                let t = self.render_props(task, &run.vars)?;
                self.ai_agent(&t).await
            }
            other => Err(format!(
                "task type {other} is not supported by this executor"
            )),
        }
    }

    /// Renders every string of a task's properties, as Kestra renders its
    /// dynamic properties when the task runs (nested `tasks` are rendered
    /// when they run).
    fn render_props(&self, task: &Value, vars: &Value) -> Result<Value, String> {
        fn walk(k: &Kestra, v: &Value, vars: &Value, top: bool) -> Result<Value, String> {
            Ok(match v {
                Value::String(s) => Value::String(k.render(s, vars)?),
                Value::Array(a) => Value::Array(
                    a.iter()
                        .map(|x| walk(k, x, vars, false))
                        .collect::<Result<_, _>>()?,
                ),
                Value::Object(m) => {
                    let mut out = Map::new();
                    for (key, x) in m {
                        let keep = top && matches!(key.as_str(), "id" | "type" | "tasks");
                        out.insert(
                            key.clone(),
                            if keep {
                                x.clone()
                            } else {
                                walk(k, x, vars, false)?
                            },
                        );
                    }
                    Value::Object(out)
                }
                other => other.clone(),
            })
        }
        walk(self, task, vars, true)
    }

    fn render_str(&self, v: &Value, vars: &Value) -> Result<String, String> {
        match v {
            Value::String(s) => self.render(s, vars),
            Value::Null => Ok(String::new()),
            other => Ok(other.to_string()),
        }
    }

    /// Renders one Pebble template (strict variables).
    pub fn render(&self, template: &str, vars: &Value) -> Result<String, String> {
        if !template.contains("{{") && !template.contains("{%") {
            return Ok(template.to_string());
        }
        let source = rewrite_null_coalescing(template);
        self.inner
            .env
            .render_str(&source, JValue::from_serialize(vars))
            .map_err(|e| {
                let mut msg = format!("Unable to render `{template}`: {}", e.kind());
                if let Some(detail) = e.detail() {
                    msg.push_str(": ");
                    msg.push_str(detail);
                }
                msg
            })
    }

    async fn http_request(&self, t: &Value) -> Result<Value, String> {
        let method = t["method"].as_str().unwrap_or("GET");
        let uri = t["uri"].as_str().ok_or("uri is required")?;
        let method = reqwest::Method::from_bytes(method.as_bytes()).map_err(|e| e.to_string())?;
        let mut req = self.inner.http.request(method, uri);
        for (name, value) in t["headers"].as_object().into_iter().flatten() {
            req = req.header(name, value.as_str().unwrap_or_default());
        }
        if let Some(ct) = t["contentType"].as_str() {
            req = req.header("content-type", ct);
        }
        if let Some(body) = t["body"].as_str() {
            req = req.body(body.to_string());
        }
        let res = req.send().await.map_err(|e| format!("{e}"))?;
        let code = res.status().as_u16();
        let mut headers = Map::new();
        for (name, value) in res.headers() {
            headers.insert(
                name.to_string(),
                json!([value.to_str().unwrap_or_default()]),
            );
        }
        let body = res.text().await.map_err(|e| e.to_string())?;
        if code >= 400 {
            return Err(format!(
                "Failed http request with response code '{code}' and body '{body}'"
            ));
        }
        Ok(json!({"uri": uri, "code": code, "headers": headers, "body": body}))
    }

    async fn subflow(&self, t: &Value, _vars: &Value) -> Result<Value, String> {
        let flow_id = t["flowId"].as_str().ok_or("flowId is required")?;
        let wait = t["wait"].as_bool().unwrap_or(true);
        let transmit = t["transmitFailed"].as_bool().unwrap_or(true);
        let inputs = t.get("inputs").cloned().unwrap_or(json!({}));
        let id = self.create(flow_id, inputs, None, None)?;
        if !wait {
            let k = self.clone();
            let child = id.clone();
            tokio::spawn(async move { k.execute(&child).await });
            return Ok(json!({"executionId": id}));
        }
        self.execute(&id).await;
        let child = self.execution(&id).unwrap();
        if child.state == "FAILED" && transmit {
            let cause = child
                .failure
                .as_ref()
                .map(|f| format!(" (task {}: {})", f.task_id, f.message))
                .unwrap_or_default();
            return Err(format!(
                "Subflow execution {id} of {flow_id} ended in state FAILED{cause}"
            ));
        }
        Ok(json!({"executionId": id, "state": child.state}))
    }

    async fn run_loop(&self, run: &mut Run, task: &Value) -> Result<Value, String> {
        let values = match &task["values"] {
            Value::String(s) => {
                let rendered = self.render(s, &run.vars)?;
                serde_json::from_str::<Vec<Value>>(&rendered)
                    .map_err(|e| format!("values is not a JSON array ({e}): {rendered}"))?
            }
            Value::Array(a) => a.clone(),
            other => return Err(format!("invalid values {other}")),
        };
        let limit = task["concurrencyLimit"].as_u64().unwrap_or(0) as usize;
        let transmit = task["transmitFailed"].as_bool().unwrap_or(true);
        let children = task["tasks"].as_array().cloned().unwrap_or_default();
        let permits = Arc::new(tokio::sync::Semaphore::new(if limit == 0 {
            values.len().max(1)
        } else {
            limit
        }));
        let mut set = tokio::task::JoinSet::new();
        for (index, value) in values.into_iter().enumerate() {
            // Objects reach the iteration as their JSON string.
            let value = match value {
                Value::String(s) => s,
                other => other.to_string(),
            };
            let mut vars = run.vars.clone();
            vars["item"] = json!({"value": value, "index": index});
            let k = self.clone();
            let children = children.clone();
            let permits = permits.clone();
            set.spawn(async move {
                let _permit = permits.acquire_owned().await.unwrap();
                let mut iteration = Run {
                    vars,
                    task_runs: Vec::new(),
                    logs: Vec::new(),
                };
                let result = k.run_tasks(&mut iteration, &children, Some(value)).await;
                (index, iteration, result)
            });
        }
        let mut results = Vec::new();
        while let Some(r) = set.join_next().await {
            results.push(r.unwrap());
        }
        results.sort_by_key(|(i, _, _)| *i);
        let mut failed = Vec::new();
        for (index, iteration, result) in results {
            run.task_runs.extend(iteration.task_runs);
            run.logs.extend(iteration.logs);
            if let Err(f) = result {
                failed.push(format!(
                    "iteration {index} failed at task {}: {}",
                    f.task_id, f.message
                ));
            }
        }
        if transmit && !failed.is_empty() {
            return Err(failed.join("; "));
        }
        Ok(json!({"iterationCount": run.task_runs.len()}))
    }

    async fn ai_agent(&self, t: &Value) -> Result<Value, String> {
        let provider = &t["provider"];
        let model = provider["modelName"]
            .as_str()
            .ok_or("modelName is required")?;
        let api_key = provider["apiKey"].as_str().unwrap_or_default();
        let config = &t["configuration"];
        let format = &config["responseFormat"];
        let json_mode = match format["type"].as_str().unwrap_or("TEXT") {
            "JSON" => true,
            "TEXT" => {
                if !format["jsonSchema"].is_null() {
                    return Err(
                        "`jsonSchema` property is only allowed when `type` is `JSON`".into(),
                    );
                }
                false
            }
            other => return Err(format!("unknown response format {other}")),
        };
        let schema = (json_mode && !format["jsonSchema"].is_null()).then(|| {
            translate_schema(
                &format["jsonSchema"],
                format["jsonSchemaDescription"].as_str(),
            )
        });
        let system = t["systemMessage"].as_str();
        let prompt = t["prompt"].as_str().ok_or("prompt is required")?;
        let temperature = config["temperature"].as_f64();
        let started = Instant::now();
        let (text, finish, usage, response_id) = match provider["type"].as_str() {
            Some("io.kestra.plugin.ai.provider.GoogleGemini") => {
                let base = provider["baseUrl"]
                    .as_str()
                    .unwrap_or("https://generativelanguage.googleapis.com/v1beta");
                let mut generation = json!({});
                if let Some(t) = temperature {
                    generation["temperature"] = json!(t);
                }
                if json_mode {
                    generation["responseMimeType"] = json!("application/json");
                    if let Some(s) = &schema {
                        generation["responseSchema"] = gemini_schema(s);
                    }
                }
                let mut body = json!({
                    "contents": [{"role": "user", "parts": [{"text": prompt}]}],
                    "generationConfig": generation,
                });
                if let Some(s) = system {
                    body["systemInstruction"] = json!({"parts": [{"text": s}]});
                }
                let res = self
                    .post_json(
                        &format!("{base}/models/{model}:generateContent"),
                        &[("x-goog-api-key", api_key.to_string())],
                        &body,
                    )
                    .await?;
                let cand = &res["candidates"][0];
                let text: String = cand["content"]["parts"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|p| p["text"].as_str())
                    .collect();
                let u = &res["usageMetadata"];
                (
                    text,
                    cand["finishReason"].as_str().unwrap_or("STOP").to_string(),
                    json!({"inputTokenCount": u["promptTokenCount"], "outputTokenCount": u["candidatesTokenCount"], "totalTokenCount": u["totalTokenCount"]}),
                    res["responseId"].as_str().map(str::to_string),
                )
            }
            Some("io.kestra.plugin.ai.provider.OpenAI") => {
                let base = provider["baseUrl"]
                    .as_str()
                    .unwrap_or("https://api.openai.com/v1");
                let mut messages = Vec::new();
                if let Some(s) = system {
                    messages.push(json!({"role": "system", "content": s}));
                }
                messages.push(json!({"role": "user", "content": prompt}));
                let mut body = json!({"model": model, "messages": messages});
                if let Some(t) = temperature {
                    body["temperature"] = json!(t);
                }
                if json_mode {
                    body["response_format"] = match &schema {
                        Some(s) => {
                            json!({"type": "json_schema", "json_schema": {"name": "output", "strict": false, "schema": s}})
                        }
                        None => json!({"type": "json_object"}),
                    };
                }
                let res = self
                    .post_json(
                        &format!("{base}/chat/completions"),
                        &[("authorization", format!("Bearer {api_key}"))],
                        &body,
                    )
                    .await?;
                let choice = &res["choices"][0];
                let u = &res["usage"];
                (
                    choice["message"]["content"]
                        .as_str()
                        .unwrap_or_default()
                        .to_string(),
                    match choice["finish_reason"].as_str() {
                        Some("length") => "LENGTH".into(),
                        _ => "STOP".into(),
                    },
                    json!({"inputTokenCount": u["prompt_tokens"], "outputTokenCount": u["completion_tokens"], "totalTokenCount": u["total_tokens"]}),
                    res["id"].as_str().map(str::to_string),
                )
            }
            other => {
                return Err(format!(
                    "provider {other:?} is not supported by this executor"
                ))
            }
        };
        let mut out = Map::new();
        if json_mode {
            // JacksonMapper.toMap: the answer must be a JSON object.
            let parsed: Map<String, Value> = serde_json::from_str(&text)
                .map_err(|e| format!("cannot parse the model's JSON answer: {e}"))?;
            out.insert("jsonOutput".into(), Value::Object(parsed));
        } else {
            out.insert("textOutput".into(), json!(text));
        }
        out.insert("tokenUsage".into(), strip_nulls(usage));
        out.insert("finishReason".into(), json!(finish));
        out.insert("toolExecutions".into(), json!([]));
        out.insert("intermediateResponses".into(), json!([]));
        out.insert("sources".into(), json!([]));
        out.insert("guardrailViolated".into(), json!(false));
        if response_id.is_some() {
            out.insert(
                "requestDuration".into(),
                json!(started.elapsed().as_millis() as u64),
            );
        }
        Ok(Value::Object(out))
    }

    async fn post_json(
        &self,
        url: &str,
        headers: &[(&str, String)],
        body: &Value,
    ) -> Result<Value, String> {
        let mut req = self.inner.http.post(url).json(body);
        for (name, value) in headers {
            req = req.header(*name, value);
        }
        let res = req.send().await.map_err(|e| e.to_string())?;
        let status = res.status();
        let text = res.text().await.map_err(|e| e.to_string())?;
        if !status.is_success() {
            return Err(format!("the model provider answered {status}: {text}"));
        }
        serde_json::from_str(&text).map_err(|e| format!("invalid provider answer: {e}"))
    }
}

fn strip_nulls(v: Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.into_iter()
                .filter(|(_, v)| !v.is_null())
                .map(|(k, v)| (k, strip_nulls(v)))
                .collect(),
        ),
        other => other,
    }
}

/// plugin-ai's `JsonObjectSchemaTranslator.fromOpenAPISchema`: the root's
/// description is `jsonSchemaDescription`; each property's description is
/// its `title`; `enum` wins over `type`; unknown types become strings.
pub fn translate_schema(schema: &Value, description: Option<&str>) -> Value {
    fn element(s: &Value) -> Value {
        let title = s["title"].as_str();
        let mut out = if let Some(e) = s["enum"].as_array() {
            json!({"type": "string", "enum": e})
        } else {
            match s["type"].as_str() {
                Some("number") => json!({"type": "number"}),
                Some("integer") => json!({"type": "integer"}),
                Some("boolean") => json!({"type": "boolean"}),
                Some("object") => object(s),
                Some("array") => json!({"type": "array", "items": element(&s["items"])}),
                _ => json!({"type": "string"}),
            }
        };
        if let Some(t) = title {
            out["description"] = json!(t);
        }
        out
    }
    fn object(s: &Value) -> Value {
        let mut props = Map::new();
        for (k, v) in s["properties"].as_object().into_iter().flatten() {
            props.insert(k.clone(), element(v));
        }
        let mut out = json!({"type": "object", "properties": props});
        if let Some(r) = s.get("required") {
            out["required"] = r.clone();
        }
        out
    }
    let mut root = object(schema);
    if let Some(d) = description {
        root["description"] = json!(d);
    }
    root
}

/// The Gemini API's schema: OpenAPI types in upper case.
fn gemini_schema(s: &Value) -> Value {
    match s {
        Value::Object(m) => Value::Object(
            m.iter()
                .map(|(k, v)| {
                    let v = match (k.as_str(), v) {
                        ("type", Value::String(t)) => json!(t.to_ascii_uppercase()),
                        ("properties", Value::Object(p)) => Value::Object(
                            p.iter()
                                .map(|(k, v)| (k.clone(), gemini_schema(v)))
                                .collect(),
                        ),
                        ("items", v) => gemini_schema(v),
                        (_, v) => v.clone(),
                    };
                    (k.clone(), v)
                })
                .collect(),
        ),
        other => other.clone(),
    }
}

/// `ENV_FOO_BAR=x` → `envs.foo_bar`.
fn envs(environment: &BTreeMap<String, String>) -> Value {
    Value::Object(
        environment
            .iter()
            .filter_map(|(k, v)| {
                k.strip_prefix("ENV_")
                    .map(|name| (name.to_ascii_lowercase(), json!(v)))
            })
            .collect(),
    )
}

/// `a ?? b` (Pebble) → `(a if a is defined and a is not none else b)`,
/// for the operands the flows use: a variable path, and a literal or path.
pub fn rewrite_null_coalescing(template: &str) -> String {
    let re = regex::Regex::new(
        r#"([A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*)\s*\?\?\s*('(?:[^'\\]|\\.)*'|"(?:[^"\\]|\\.)*"|[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*|\d+)"#,
    )
    .unwrap();
    re.replace_all(template, "($1 if $1 is defined and $1 is not none else $2)")
        .into_owned()
}

fn environment(vars: &BTreeMap<String, String>) -> Environment<'static> {
    let mut env = Environment::new();
    env.set_undefined_behavior(UndefinedBehavior::Strict);
    // JsonWriter: maps and lists print as JSON, strings as they are.
    env.set_formatter(|out, _state, value| {
        if value.is_undefined() {
            return Err(JError::new(ErrorKind::UndefinedError, "undefined variable"));
        }
        let text = if matches!(value.kind(), ValueKind::Map | ValueKind::Seq) {
            serde_json::to_string(value)
                .map_err(|e| JError::new(ErrorKind::BadSerialization, e.to_string()))?
        } else if value.is_none() {
            String::new()
        } else {
            value.to_string()
        };
        out.write_str(&text)
            .map_err(|e| JError::new(ErrorKind::WriteFailure, e.to_string()))
    });
    env.add_function("fromJson", |s: Option<String>| -> Result<JValue, JError> {
        let Some(s) = s else {
            return Ok(JValue::from(()));
        };
        let v: Value = serde_json::from_str(&s)
            .map_err(|e| JError::new(ErrorKind::InvalidOperation, format!("fromJson: {e}")))?;
        Ok(JValue::from_serialize(v))
    });
    env.add_filter("toJson", |v: JValue| -> Result<String, JError> {
        if v.is_undefined() {
            return Err(JError::new(
                ErrorKind::UndefinedError,
                "toJson of an undefined value",
            ));
        }
        serde_json::to_string(&v)
            .map_err(|e| JError::new(ErrorKind::BadSerialization, e.to_string()))
    });
    env.add_filter("urlencode", |v: JValue| -> Result<String, JError> {
        let s = if v.is_none() {
            String::new()
        } else {
            v.to_string()
        };
        Ok(form_urlencoded::byte_serialize(s.as_bytes()).collect())
    });
    env.add_filter(
        "replace",
        |v: JValue, pairs: JValue, _kwargs: Kwargs| -> Result<JValue, JError> {
            if v.is_none() {
                return Ok(v);
            }
            let mut s = v.to_string();
            let Some(obj) = pairs.as_object() else {
                return Err(JError::new(
                    ErrorKind::InvalidOperation,
                    "The argument 'replace_pairs' is required.",
                ));
            };
            for key in obj.try_iter().into_iter().flatten() {
                let to = pairs.get_item(&key)?;
                s = s.replace(&key.to_string(), &to.to_string());
            }
            Ok(JValue::from(s))
        },
    );
    let secrets = vars.clone();
    env.add_function("secret", move |name: String| -> Result<String, JError> {
        let b64 = secrets
            .get(&format!("SECRET_{}", name.to_ascii_uppercase()))
            .ok_or_else(|| {
                JError::new(
                    ErrorKind::InvalidOperation,
                    format!("Cannot find secret for key '{name}'."),
                )
            })?;
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(b64.trim())
            .map_err(|e| JError::new(ErrorKind::InvalidOperation, format!("secret {name}: {e}")))?;
        String::from_utf8(bytes)
            .map_err(|e| JError::new(ErrorKind::InvalidOperation, e.to_string()))
    });
    env
}

// ---- the HTTP API ----

fn basic_ok(headers: &HeaderMap, o: &Options) -> bool {
    let expected = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{}:{}", o.username, o.password))
    );
    headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v == expected)
}

fn unauthorized() -> Response {
    (
        StatusCode::UNAUTHORIZED,
        [("www-authenticate", "Basic realm=\"Kestra\"")],
        Json(json!({"message": "Unauthorized"})),
    )
        .into_response()
}

async fn api_create(
    State(k): State<Kestra>,
    UrlPath((tenant, namespace, flow_id)): UrlPath<(String, String, String)>,
    headers: HeaderMap,
    multipart: Result<Multipart, axum::extract::multipart::MultipartRejection>,
) -> Response {
    let response = create_response(&k, &tenant, &namespace, &flow_id, &headers, multipart).await;
    k.inner
        .api_calls
        .lock()
        .unwrap()
        .push((flow_id, response.status().as_u16()));
    response
}

async fn create_response(
    k: &Kestra,
    tenant: &str,
    namespace: &str,
    flow_id: &str,
    headers: &HeaderMap,
    multipart: Result<Multipart, axum::extract::multipart::MultipartRejection>,
) -> Response {
    if !basic_ok(headers, &k.inner.options) {
        return unauthorized();
    }
    let known = k
        .inner
        .flows
        .get(flow_id)
        .is_some_and(|f| f["namespace"] == namespace);
    if tenant != "main" || !known {
        return (
            StatusCode::NOT_FOUND,
            Json(json!({"message": format!("Flow '{namespace}.{flow_id}' not found")})),
        )
            .into_response();
    }
    let mut multipart = match multipart {
        Ok(m) => m,
        Err(e) => {
            return (
                StatusCode::BAD_REQUEST,
                Json(json!({"message": e.to_string()})),
            )
                .into_response()
        }
    };
    let mut given = Map::new();
    while let Ok(Some(field)) = multipart.next_field().await {
        let name = field.name().unwrap_or_default().to_string();
        let text = field.text().await.unwrap_or_default();
        given.insert(name, Value::String(text));
    }
    match k.create(flow_id, Value::Object(given), None, None) {
        Ok(id) => {
            let exec = k.execution(&id).unwrap();
            let runner = k.clone();
            let child = id.clone();
            tokio::spawn(async move { runner.execute(&child).await });
            Json(exec.api_json()).into_response()
        }
        Err(message) => (
            StatusCode::UNPROCESSABLE_ENTITY,
            Json(json!({"message": message})),
        )
            .into_response(),
    }
}

async fn api_get(
    State(k): State<Kestra>,
    UrlPath((_tenant, id)): UrlPath<(String, String)>,
    headers: HeaderMap,
) -> Response {
    if !basic_ok(&headers, &k.inner.options) {
        return unauthorized();
    }
    match k.execution(&id) {
        Some(e) => Json(e.api_json()).into_response(),
        None => (
            StatusCode::NOT_FOUND,
            Json(json!({"message": "execution not found"})),
        )
            .into_response(),
    }
}

async fn api_logs(
    State(k): State<Kestra>,
    UrlPath((_tenant, id)): UrlPath<(String, String)>,
    headers: HeaderMap,
) -> Response {
    if !basic_ok(&headers, &k.inner.options) {
        return unauthorized();
    }
    match k.execution(&id) {
        Some(e) => Json(
            e.logs
                .iter()
                .map(|l| json!({"executionId": id, "taskId": l.task_id, "level": l.level, "message": l.message}))
                .collect::<Vec<_>>(),
        )
        .into_response(),
        None => (StatusCode::NOT_FOUND, Json(json!({"message": "execution not found"}))).into_response(),
    }
}
