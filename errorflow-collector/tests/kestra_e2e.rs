//! The Kestra flows of `infra/kestra/` run end to end: the collector binary
//! (on SQLite and on Postgres) starts them through its production Kestra
//! client, the executor of `kestra_sim` runs the flow files as Kestra would
//! (see its module doc for the sources of each behaviour), their AI agent
//! talks to a local stub of the Gemini (or OpenAI) API, and their results
//! come back through the collector's REST API.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::HeaderMap;
use axum::routing::post;
use axum::{Json, Router};
use common::binary::{Backend, Collector};
use kestra_sim::{load_flows, parse_flow, Kestra, Options};
use serde_json::{json, Value};

mod common;
mod kestra_sim;

const KESTRA_USER: &str = "kestra@example.com";
const KESTRA_PASSWORD: &str = "kestra-pass:@#";
const GEMINI_KEY: &str = "gemini-test-key";
const WITHIN: Duration = Duration::from_secs(30);
const ADMIN_PASSWORD: &str = "admin-password-1";
const KESTRA_TOKEN: &str = "kestra-token-7f3a9c1e5b2d4f6a8c0e1b3d5f7a9c2e";

fn flows_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../infra/kestra")
}

fn flow_text(id: &str) -> String {
    std::fs::read_to_string(flows_dir().join(format!("{id}.yml"))).unwrap()
}

// ---- a stub of the model APIs ----

#[derive(Clone, Default)]
struct Stub {
    base: String,
    requests: Arc<Mutex<Vec<(String, HeaderMap, Value)>>>,
}

/// The triage a model would answer; an incident whose digest mentions
/// "poison" gets a priority outside the schema, which the collector refuses.
fn answer_for(prompt: &str) -> Value {
    let priority = if prompt.contains("poison") { 900 } else { 72 };
    json!({
        "summary": "stub summary: checkout requests time out",
        "severity": "high",
        "priority": priority,
        "probable_cause": "the payment provider is slow",
        "next_steps": ["check the provider's status", "raise the timeout"],
        "confidence": 0.8
    })
}

async fn gemini(
    State(s): State<Stub>,
    axum::extract::Path(model_action): axum::extract::Path<String>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Json<Value> {
    s.requests.lock().unwrap().push((
        format!("/v1beta/models/{model_action}"),
        headers,
        body.clone(),
    ));
    let prompt = body["contents"][0]["parts"][0]["text"]
        .as_str()
        .unwrap_or_default();
    Json(json!({
        "candidates": [{
            "content": {"role": "model", "parts": [{"text": answer_for(prompt).to_string()}]},
            "finishReason": "STOP"
        }],
        "usageMetadata": {"promptTokenCount": 500, "candidatesTokenCount": 80, "totalTokenCount": 580},
        "responseId": "resp-1"
    }))
}

async fn openai(State(s): State<Stub>, headers: HeaderMap, Json(body): Json<Value>) -> Json<Value> {
    s.requests
        .lock()
        .unwrap()
        .push(("/v1/chat/completions".into(), headers, body.clone()));
    let prompt = body["messages"][1]["content"].as_str().unwrap_or_default();
    Json(json!({
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "choices": [{"index": 0, "finish_reason": "stop",
                     "message": {"role": "assistant", "content": answer_for(prompt).to_string()}}],
        "usage": {"prompt_tokens": 500, "completion_tokens": 80, "total_tokens": 580}
    }))
}

impl Stub {
    async fn start() -> Stub {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let stub = Stub {
            base: format!("http://{}", listener.local_addr().unwrap()),
            requests: Arc::default(),
        };
        let app = Router::new()
            .route("/v1beta/models/{model_action}", post(gemini))
            .route("/v1/chat/completions", post(openai))
            .with_state(stub.clone());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        stub
    }

    fn requests(&self) -> Vec<(String, HeaderMap, Value)> {
        self.requests.lock().unwrap().clone()
    }
}

// ---- the collector's REST API, from inside the test's runtime ----

struct Api {
    base: String,
    token: String,
    key: String,
    http: reqwest::Client,
}

impl Api {
    fn new(c: &Collector) -> Api {
        Api {
            base: c.base.clone(),
            token: c.token.clone(),
            key: c.ingest_key(),
            http: reqwest::Client::new(),
        }
    }

    async fn get(&self, path: &str) -> Value {
        let r = self
            .http
            .get(format!("{}{path}", self.base))
            .bearer_auth(&self.token)
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success(), "GET {path}: {}", r.status());
        r.json().await.unwrap()
    }

    async fn post(&self, path: &str) -> Value {
        let r = self
            .http
            .post(format!("{}{path}", self.base))
            .bearer_auth(&self.token)
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success(), "POST {path}: {}", r.status());
        r.json().await.unwrap()
    }

    /// Reports an error through the seed's endpoint; returns its incident id.
    async fn report(&self, service: &str, error_type: &str, message: &str) -> i64 {
        let r = self
            .http
            .post(format!("{}/errors/custom", self.base))
            .header("x-errorflow-key", &self.key)
            .json(&json!({"service": service, "error_type": error_type, "message": message, "path": "/checkout"}))
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success(), "report: {}", r.status());
        self.group_id(&format!("{service}:{error_type}")).await
    }

    async fn group_id(&self, cluster_key: &str) -> i64 {
        let groups = self.get("/api/v1/groups?status=all&limit=200").await;
        groups["groups"]
            .as_array()
            .unwrap()
            .iter()
            .find(|g| g["cluster_key"] == cluster_key)
            .unwrap_or_else(|| panic!("no incident {cluster_key}: {groups}"))["id"]
            .as_i64()
            .unwrap()
    }

    async fn triage(&self, id: i64) -> Vec<Value> {
        self.get(&format!("/api/v1/groups/{id}/triage"))
            .await
            .as_array()
            .unwrap()
            .clone()
    }

    async fn text(&self, path: &str) -> String {
        self.http
            .get(format!("{}{path}", self.base))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    /// The incident's Kestra runs of `flow`, once the newest has ended.
    async fn wait_for_run_end(&self, id: i64, flow: &str) -> Vec<Value> {
        let deadline = Instant::now() + WITHIN;
        loop {
            let runs = self.get(&format!("/api/v1/groups/{id}/kestra-runs")).await;
            let runs: Vec<Value> = runs
                .as_array()
                .unwrap()
                .iter()
                .filter(|r| r["flow_id"] == flow)
                .cloned()
                .collect();
            if runs.first().is_some_and(|r| !r["finished_at"].is_null()) {
                return runs;
            }
            assert!(
                Instant::now() < deadline,
                "no run of incident {id} ended: {runs:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// A dashboard page, signed in as the admin the collector created.
    async fn dashboard_page(&self, path: &str) -> String {
        let cookie = |r: &reqwest::Response, name: &str| {
            r.headers()
                .get_all("set-cookie")
                .iter()
                .filter_map(|v| v.to_str().ok())
                .find(|v| v.starts_with(&format!("{name}=")))
                .map(|v| v.split(';').next().unwrap().to_string())
                .unwrap_or_else(|| panic!("no {name} cookie"))
        };
        let no_redirect = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap();
        let form = no_redirect
            .get(format!("{}/login", self.base))
            .send()
            .await
            .unwrap();
        let csrf_cookie = cookie(&form, "ef_login_csrf");
        let body = form.text().await.unwrap();
        let start = body.find("name=\"csrf\" value=\"").unwrap() + "name=\"csrf\" value=\"".len();
        let token = &body[start..start + body[start..].find('"').unwrap()];
        let signed = no_redirect
            .post(format!("{}/login", self.base))
            .header("cookie", csrf_cookie)
            .form(&[
                ("csrf", token),
                ("username", "admin"),
                ("password", ADMIN_PASSWORD),
                ("next", "/"),
            ])
            .send()
            .await
            .unwrap();
        assert_eq!(signed.status(), 303);
        let session = cookie(&signed, "ef_session");
        let page = no_redirect
            .get(format!("{}{path}", self.base))
            .header("cookie", session)
            .send()
            .await
            .unwrap();
        assert_eq!(page.status(), 200);
        page.text().await.unwrap()
    }

    async fn kestra_results(&self, id: i64) -> Vec<Value> {
        self.triage(id)
            .await
            .into_iter()
            .filter(|r| r["analyst"] == "kestra")
            .collect()
    }
}

fn options(c: &Collector, stub: &Stub) -> Options {
    Options {
        username: KESTRA_USER.into(),
        password: KESTRA_PASSWORD.into(),
        environment: BTreeMap::new(),
    }
    .secret("ERRORFLOW_TOKEN", &c.token)
    .secret("GEMINI_API_KEY", GEMINI_KEY)
    .env("errorflow_url", &c.base)
    .env("gemini_base_url", &format!("{}/v1beta", stub.base))
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

fn kestra_env(kestra: &Kestra) -> Vec<(&'static str, String)> {
    vec![
        ("KESTRA_URL", kestra.base.clone()),
        ("KESTRA_USERNAME", KESTRA_USER.into()),
        ("KESTRA_PASSWORD", KESTRA_PASSWORD.into()),
        // Incidents stay untriaged until a flow triages them (so they are stale).
        ("ERRORFLOW_TRIAGE_AUTO", "false".into()),
        ("ERRORFLOW_KESTRA_POLL_INTERVAL", "100ms".into()),
        ("ERRORFLOW_ADMIN_PASSWORD", ADMIN_PASSWORD.into()),
    ]
}

fn serve(c: &mut Collector, env: &[(&'static str, String)]) {
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    c.serve_with(&env);
}

/// All four flows against one collector.
fn the_four_flows_run_end_to_end(backend: Backend) {
    let rt = runtime();
    let mut collector = Collector::fronted(backend);
    let stub = rt.block_on(Stub::start());
    // The flows authenticate with ERRORFLOW_KESTRA_TOKEN, which the
    // collector registers at start-up (no token made by hand).
    let kestra = rt.block_on(Kestra::start(
        load_flows(&flows_dir()),
        options(&collector, &stub).secret("ERRORFLOW_TOKEN", KESTRA_TOKEN),
    ));
    let mut env = kestra_env(&kestra);
    env.push(("ERRORFLOW_KESTRA_TOKEN", KESTRA_TOKEN.into()));
    serve(&mut collector, &env);
    let api = Api::new(&collector);

    rt.block_on(async {
        // error-intake: a new incident starts it, with the event as a JSON input.
        let payment = api
            .report("payment-api", "Timeout", "upstream timed out after 30s")
            .await;
        let intake = kestra.wait_for_ended("error-intake", 1, WITHIN).await;
        assert_eq!(intake[0].state, "SUCCESS", "{:#?}", intake[0]);
        let event = &intake[0].inputs["error_event"];
        assert_eq!(event["cluster_key"], "payment-api:Timeout");
        assert_eq!(event["group_id"], payment);
        assert!(
            event["message"]
                .as_str()
                .unwrap()
                .contains("upstream timed out after 30s"),
            "{event}"
        );
        assert!(
            intake[0].logs[0]
                .message
                .contains("errorflow incident payment-api:Timeout"),
            "{:?}",
            intake[0].logs
        );

        // group-summary-agent: started by the collector's summarize endpoint,
        // it reads the digest, asks the model and stores its answer.
        api.post(&format!("/api/v1/groups/{payment}/summarize"))
            .await;
        let runs = kestra
            .wait_for_ended("group-summary-agent", 1, WITHIN)
            .await;
        assert_eq!(runs[0].state, "SUCCESS", "{:#?}", runs[0]);
        let stored = api.kestra_results(payment).await;
        assert_eq!(stored.len(), 1, "{stored:#?}");
        assert_eq!(stored[0]["model"], "gemini-2.5-flash");
        assert_eq!(
            stored[0]["summary"],
            "stub summary: checkout requests time out"
        );
        assert_eq!(stored[0]["priority"], 72);
        assert_eq!(stored[0]["trigger"], "external");
        // The agent's outputs are plugin-ai's for JSON mode.
        let agent = runs[0].outputs("agent").unwrap();
        assert!(agent.get("textOutput").is_none(), "{agent}");
        assert_eq!(agent["jsonOutput"]["priority"], 72);
        assert_eq!(agent["tokenUsage"]["totalTokenCount"], 580);
        // The request Gemini got.
        let requests = stub.requests();
        assert_eq!(requests.len(), 1);
        let (path, headers, body) = &requests[0];
        assert_eq!(path, "/v1beta/models/gemini-2.5-flash:generateContent");
        assert_eq!(headers["x-goog-api-key"], GEMINI_KEY);
        let generation = &body["generationConfig"];
        assert_eq!(generation["responseMimeType"], "application/json");
        assert_eq!(generation["temperature"], 0.2);
        let schema = &generation["responseSchema"];
        assert_eq!(schema["type"], "OBJECT");
        assert_eq!(
            schema["properties"]["priority"]["description"], "0-100, higher needs attention sooner",
            "the schema's titles reach the model"
        );
        assert_eq!(
            schema["properties"]["severity"]["enum"],
            json!(["low", "medium", "high", "critical"])
        );
        assert!(body["systemInstruction"]["parts"][0]["text"]
            .as_str()
            .unwrap()
            .contains("untrusted data"));
        let prompt = body["contents"][0]["parts"][0]["text"].as_str().unwrap();
        assert!(prompt.contains("payment-api:Timeout"), "{prompt}");
        assert_eq!(
            prompt.matches("ERRORFLOW_INCIDENT_DATA").count(),
            2,
            "{prompt}"
        );

        // group-ai-batch: the stale incidents only, each through the agent flow.
        let orders = api
            .report("order-api", "DBError", "deadlock detected")
            .await;
        let batch = kestra.fire_schedule("group-ai-batch").await;
        assert_eq!(batch.state, "SUCCESS", "{batch:#?}");
        assert_eq!(api.kestra_results(orders).await.len(), 1);
        assert_eq!(
            api.kestra_results(payment).await.len(),
            1,
            "not stale: left alone"
        );
        let summarize: Vec<_> = batch
            .task_runs
            .iter()
            .filter(|t| t.task_id == "summarize")
            .collect();
        assert_eq!(summarize.len(), 1, "{batch:#?}");
        let child = kestra
            .execution(summarize[0].outputs["executionId"].as_str().unwrap())
            .unwrap();
        assert_eq!(child.inputs["group_id"], orders.to_string());
        assert_eq!(child.inputs["cluster_key"], "order-api:DBError");
        let key = child.inputs["idempotency_key"].as_str().unwrap();
        assert_eq!(key, format!("batch-{}-{orders}", batch.id));
        // The same child started again (a repeated start) stores nothing new.
        let again = kestra
            .run("group-summary-agent", child.inputs.clone())
            .await;
        assert_eq!(again.state, "SUCCESS", "{again:#?}");
        let results = api.kestra_results(orders).await;
        assert_eq!(results.len(), 1, "{results:#?}");
        let answered: Value =
            serde_json::from_str(again.outputs("store").unwrap()["body"].as_str().unwrap())
                .unwrap();
        assert_eq!(
            answered["id"], results[0]["id"],
            "the first result is answered"
        );

        // One child failing fails the batch; the other child's result is stored.
        let users = api.report("user-api", "NullPointer", "user is null").await;
        let poisoned = api.report("poison-svc", "Boom", "poison").await;
        let batch = kestra.fire_schedule("group-ai-batch").await;
        assert_eq!(batch.state, "FAILED", "{batch:#?}");
        let failure = batch.failure.as_ref().unwrap();
        assert_eq!(failure.task_id, "each");
        assert!(failure.message.contains("task store"), "{failure:?}");
        assert!(failure.message.contains("422"), "{failure:?}");
        assert_eq!(api.kestra_results(users).await.len(), 1);
        assert_eq!(api.kestra_results(poisoned).await.len(), 0);

        // A run the collector started that fails: followed until it ends,
        // then shown on the incident page, in the API and in /metrics.
        api.post(&format!("/api/v1/groups/{poisoned}/summarize")).await;
        let runs = api.wait_for_run_end(poisoned, "group-summary-agent").await;
        let run = &runs[0];
        assert_eq!(run["flow_id"], "group-summary-agent");
        assert_eq!(run["state"], "FAILED", "{run}");
        assert_eq!(run["failed_task"], "store", "{run}");
        let error = run["error"].as_str().unwrap();
        assert!(error.contains("response code '422'"), "{error}");
        let executed = kestra.execution(run["execution_id"].as_str().unwrap()).unwrap();
        assert_eq!(executed.state, "FAILED");
        assert_eq!(executed.inputs["idempotency_key"], run["idempotency_key"]);
        let metrics = api.text("/metrics").await;
        assert!(
            metrics.contains(r#"errorflow_kestra_runs_total{flow="group-summary-agent",state="FAILED"} 1"#),
            "{metrics}"
        );
        assert!(
            metrics.contains(r#"errorflow_kestra_runs_total{flow="group-summary-agent",state="SUCCESS"} 1"#),
            "{metrics}"
        );
        let page = api.dashboard_page(&format!("/incidents/{poisoned}")).await;
        assert!(page.contains("Kestra run failed at task store: Failed http request with response code &#x27;422&#x27;")
            || page.contains("Kestra run failed at task store: Failed http request with response code &#39;422&#39;"),
            "{page}");
        // The successful summary of `payment` ended SUCCESS and shows no failure.
        let ok = api.wait_for_run_end(payment, "group-summary-agent").await;
        assert_eq!(ok[0]["state"], "SUCCESS", "{ok:?}");
        assert!(!api
            .dashboard_page(&format!("/incidents/{payment}"))
            .await
            .contains("Kestra run failed"));

        // group-quiet-check: an incident idle for two hours becomes quiet.
        let old = (chrono::Utc::now() - chrono::Duration::hours(2)).to_rfc3339();
        let r = api
            .http
            .post(format!("{}/api/v1/events", api.base))
            .header("x-errorflow-key", &api.key)
            .json(
                &json!({"events": [{"event_id": uuid::Uuid::new_v4(), "timestamp": old,
                "level": "error", "service": "cron", "message": "nightly job failed",
                "exception": [{"type": "JobFailed", "value": "nightly job failed"}]}]}),
            )
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success(), "{}", r.text().await.unwrap());
        let groups = api.get("/api/v1/groups?status=all&limit=200").await;
        let idle = groups["groups"]
            .as_array()
            .unwrap()
            .iter()
            .find(|g| g["service"] == "cron")
            .unwrap_or_else(|| panic!("{groups}"))
            .clone();
        assert_eq!(idle["status"], "open");
        let quiet = kestra.fire_schedule("group-quiet-check").await;
        assert_eq!(quiet.state, "SUCCESS", "{quiet:#?}");
        let body: Value =
            serde_json::from_str(quiet.outputs("quiet").unwrap()["body"].as_str().unwrap())
                .unwrap();
        assert_eq!(body["quieted"], 1, "{body}");
        let after = api.get(&format!("/api/v1/groups/{}", idle["id"])).await;
        assert_eq!(after["status"], "quiet", "{after}");
    });
}

#[test]
fn the_four_flows_run_end_to_end_sqlite() {
    the_four_flows_run_end_to_end(Backend::Sqlite);
}

#[test]
fn the_four_flows_run_end_to_end_postgres() {
    the_four_flows_run_end_to_end(Backend::Postgres);
}

/// The `store` step before the fix sent `outputs.agent.textOutput`, which
/// plugin-ai leaves null in JSON mode: under strict variables the task
/// fails and nothing reaches the collector. Fixed, the same run stores.
fn the_old_store_step_fails(backend: Backend) {
    let rt = runtime();
    let mut collector = Collector::fronted(backend);
    let stub = rt.block_on(Stub::start());
    let fixed = flow_text("group-summary-agent");
    let new_body = "body: \"{{ outputs.agent.jsonOutput | toJson }}\"";
    assert!(fixed.contains(new_body));
    let old = fixed.replace(new_body, "body: \"{{ outputs.agent.textOutput }}\"");
    let mut flows = BTreeMap::new();
    flows.insert("group-summary-agent".to_string(), parse_flow(&old));
    let kestra = rt.block_on(Kestra::start(flows, options(&collector, &stub)));
    collector.serve_with(&[("ERRORFLOW_TRIAGE_AUTO", "false")]);
    let api = Api::new(&collector);
    rt.block_on(async {
        let id = api
            .report("payment-api", "Timeout", "upstream timed out")
            .await;
        let run = kestra
            .run("group-summary-agent", json!({"group_id": id.to_string()}))
            .await;
        assert_eq!(run.state, "FAILED", "{run:#?}");
        let failure = run.failure.unwrap();
        assert_eq!(failure.task_id, "store");
        assert!(failure.message.contains("undefined"), "{failure:?}");
        assert!(api.kestra_results(id).await.is_empty());

        // The same run with the fixed flow stores its result.
        let mut flows = BTreeMap::new();
        flows.insert("group-summary-agent".to_string(), parse_flow(&fixed));
        let kestra = Kestra::start(flows, options_for(&api, &stub)).await;
        let run = kestra
            .run("group-summary-agent", json!({"group_id": id.to_string()}))
            .await;
        assert_eq!(run.state, "SUCCESS", "{run:#?}");
        assert_eq!(api.kestra_results(id).await.len(), 1);
    });
}

fn options_for(api: &Api, stub: &Stub) -> Options {
    Options {
        username: KESTRA_USER.into(),
        password: KESTRA_PASSWORD.into(),
        environment: BTreeMap::new(),
    }
    .secret("ERRORFLOW_TOKEN", &api.token)
    .secret("GEMINI_API_KEY", GEMINI_KEY)
    .env("errorflow_url", &api.base)
    .env("gemini_base_url", &format!("{}/v1beta", stub.base))
}

#[test]
fn the_old_store_step_fails_sqlite() {
    the_old_store_step_fails(Backend::Sqlite);
}

#[test]
fn the_old_store_step_fails_postgres() {
    the_old_store_step_fails(Backend::Postgres);
}

/// The agent flow with the OpenAI-compatible provider instead of Gemini.
#[test]
fn the_agent_flow_works_with_an_openai_compatible_provider() {
    let rt = runtime();
    let mut collector = Collector::fronted(Backend::Sqlite);
    let stub = rt.block_on(Stub::start());
    let text = flow_text("group-summary-agent");
    let mut flow = parse_flow(&text);
    let agent = flow["tasks"]
        .as_array_mut()
        .unwrap()
        .iter_mut()
        .find(|t| t["id"] == "agent")
        .unwrap();
    agent["provider"] = json!({
        "type": "io.kestra.plugin.ai.provider.OpenAI",
        "modelName": "gpt-4o-mini",
        "apiKey": "{{ secret('GEMINI_API_KEY') }}",
        "baseUrl": format!("{}/v1", stub.base),
    });
    let mut flows = BTreeMap::new();
    flows.insert("group-summary-agent".to_string(), flow);
    let kestra = rt.block_on(Kestra::start(flows, options(&collector, &stub)));
    collector.serve_with(&[("ERRORFLOW_TRIAGE_AUTO", "false")]);
    let api = Api::new(&collector);
    rt.block_on(async {
        let id = api
            .report("payment-api", "Timeout", "upstream timed out")
            .await;
        let run = kestra
            .run(
                "group-summary-agent",
                json!({"cluster_key": "payment-api:Timeout"}),
            )
            .await;
        assert_eq!(run.state, "SUCCESS", "{run:#?}");
        assert_eq!(api.kestra_results(id).await.len(), 1);
        let (path, headers, body) = &stub.requests()[0];
        assert_eq!(path, "/v1/chat/completions");
        assert_eq!(headers["authorization"], format!("Bearer {GEMINI_KEY}"));
        assert_eq!(body["model"], "gpt-4o-mini");
        assert_eq!(body["messages"][0]["role"], "system");
        assert_eq!(body["response_format"]["type"], "json_schema");
        assert_eq!(
            body["response_format"]["json_schema"]["schema"]["properties"]["confidence"]
                ["description"],
            "0-1"
        );
        let agent = run.outputs("agent").unwrap();
        assert!(agent.get("textOutput").is_none());
        assert_eq!(agent["jsonOutput"]["severity"], "high");
    });
}

// ---- the executor's own contract ----

#[test]
fn the_executor_renders_like_pebble_in_strict_mode() {
    let rt = runtime();
    rt.block_on(async {
        let kestra = Kestra::start(
            BTreeMap::new(),
            Options::default().secret("TOKEN", "s3cr3t").env("errorflow_url", "http://c:8000"),
        )
        .await;
        let vars = json!({
            "inputs": {"group_id": null, "cluster_key": "pay api:Timeout", "event": {"a": 1}},
            "outputs": {"digest": {"body": "{\"group_id\": 7, \"x\": \"ERRORFLOW_INCIDENT_DATA\"}"}},
            "envs": {"errorflow_url": "http://c:8000"},
        });
        let r = |t: &str| kestra.render(t, &vars);
        assert_eq!(r("{{ inputs.group_id ?? '' }}|").unwrap(), "|");
        assert_eq!(r("{{ inputs.missing ?? 'd' }}").unwrap(), "d");
        assert_eq!(r("{{ inputs.cluster_key ?? '' }}").unwrap(), "pay api:Timeout");
        assert_eq!(
            r("{{ (inputs.cluster_key ?? '') | urlencode }}").unwrap(),
            "pay+api%3ATimeout"
        );
        assert_eq!(r("{{ fromJson(outputs.digest.body).group_id }}").unwrap(), "7");
        assert_eq!(
            r("{{ outputs.digest.body | replace({'ERRORFLOW_INCIDENT_DATA': ''}) }}").unwrap(),
            "{\"group_id\": 7, \"x\": \"\"}"
        );
        assert_eq!(r("{{ inputs.event | toJson }}").unwrap(), "{\"a\":1}");
        assert_eq!(r("{{ inputs.event }}").unwrap(), "{\"a\":1}", "maps print as JSON");
        assert_eq!(r("{{ secret('TOKEN') }}").unwrap(), "s3cr3t");
        assert!(r("{{ secret('NOPE') }}").is_err());
        assert!(r("{{ inputs.missing }}").is_err(), "strict variables");
        assert!(r("{{ outputs.agent.textOutput }}").is_err());
    });
}

#[test]
fn the_executors_api_checks_basic_auth() {
    let rt = runtime();
    rt.block_on(async {
        let mut flows = BTreeMap::new();
        flows.insert(
            "error-intake".to_string(),
            parse_flow(&flow_text("error-intake")),
        );
        let kestra = Kestra::start(
            flows,
            Options {
                username: "u".into(),
                password: "p".into(),
                environment: BTreeMap::new(),
            },
        )
        .await;
        let http = reqwest::Client::new();
        let url = format!("{}/api/v1/main/executions/main/error-intake", kestra.base);
        let form = || {
            reqwest::multipart::Form::new().part(
                "error_event",
                reqwest::multipart::Part::text("{\"cluster_key\":\"a:b\"}")
                    .mime_str("application/json")
                    .unwrap(),
            )
        };
        for auth in [None, Some(("u", "wrong"))] {
            let mut req = http.post(&url).multipart(form());
            if let Some((u, p)) = auth {
                req = req.basic_auth(u, Some(p));
            }
            assert_eq!(req.send().await.unwrap().status(), 401);
        }
        let created: Value = http
            .post(&url)
            .basic_auth("u", Some("p"))
            .multipart(form())
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(created["state"]["current"], "CREATED");
        let id = created["id"].as_str().unwrap();
        let ended = kestra.wait_for_ended("error-intake", 1, WITHIN).await;
        assert_eq!(ended[0].id, id);
        let got: Value = http
            .get(format!("{}/api/v1/main/executions/{id}", kestra.base))
            .basic_auth("u", Some("p"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(got["state"]["current"], "SUCCESS");
        assert_eq!(got["taskRunList"][0]["taskId"], "log");
        // A required input missing: 422, no execution.
        let r = http
            .post(&url)
            .basic_auth("u", Some("p"))
            .multipart(reqwest::multipart::Form::new())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 422);
        let _ = Instant::now();
    });
}

/// A flow start owed while Kestra is down survives a restart of the
/// collector: it waits in the outbox, and the restarted collector sends it
/// once Kestra is up, exactly once.
fn owed_flow_starts_survive_a_restart(backend: Backend) {
    let rt = runtime();
    let mut collector = Collector::fronted(backend);
    let stub = rt.block_on(Stub::start());
    // Kestra's address is known, but nothing listens there yet.
    // A front holds its port and closes every connection until Kestra is up.
    let kestra_front = common::binary::Front::start();
    let kestra_url = kestra_front.base();
    let env = vec![
        ("KESTRA_URL", kestra_url.clone()),
        ("KESTRA_USERNAME", KESTRA_USER.to_string()),
        ("KESTRA_PASSWORD", KESTRA_PASSWORD.to_string()),
        ("ERRORFLOW_TRIAGE_AUTO", "false".to_string()),
        ("ERRORFLOW_KESTRA_POLL_INTERVAL", "100ms".to_string()),
    ];
    serve(&mut collector, &env);
    let api = Api::new(&collector);
    let id = rt.block_on(async {
        let id = api
            .report("payment-api", "Timeout", "upstream timed out")
            .await;
        // Synchronise on the failed attempt (the start is in the outbox).
        let deadline = Instant::now() + WITHIN;
        while !api
            .text("/metrics")
            .await
            .contains(r#"errorflow_kestra_triggers_total{result="retry"}"#)
        {
            assert!(
                Instant::now() < deadline,
                "no failed attempt to reach Kestra"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        id
    });
    collector.stop();
    let kestra = rt.block_on(Kestra::start(
        load_flows(&flows_dir()),
        options(&collector, &stub),
    ));
    let kestra_port = kestra.base.rsplit(':').next().unwrap().parse().unwrap();
    kestra_front.forward_to(kestra_port);
    serve(&mut collector, &env);
    rt.block_on(async {
        let ended = kestra.wait_for_ended("error-intake", 1, WITHIN).await;
        assert_eq!(ended[0].state, "SUCCESS", "{:#?}", ended[0]);
        assert_eq!(ended[0].inputs["error_event"]["group_id"], id);
        let key = ended[0].inputs["idempotency_key"]
            .as_str()
            .unwrap()
            .to_string();
        assert!(!key.is_empty());
        // Followed to its end, and not sent again.
        let runs = api.wait_for_run_end(id, "error-intake").await;
        assert_eq!(runs.len(), 1, "{runs:?}");
        assert_eq!(runs[0]["state"], "SUCCESS");
        assert_eq!(runs[0]["idempotency_key"], key);
        tokio::time::sleep(Duration::from_millis(300)).await;
        let accepted: Vec<_> = kestra
            .api_calls()
            .into_iter()
            .filter(|(_, s)| *s == 200)
            .collect();
        assert_eq!(accepted.len(), 1, "{accepted:?}");
    });
}

#[test]
fn owed_flow_starts_survive_a_restart_sqlite() {
    owed_flow_starts_survive_a_restart(Backend::Sqlite);
}

#[test]
fn owed_flow_starts_survive_a_restart_postgres() {
    owed_flow_starts_survive_a_restart(Backend::Postgres);
}
