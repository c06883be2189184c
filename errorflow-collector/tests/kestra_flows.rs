//! The Kestra flows in `infra/kestra/` are valid YAML with the seed's ids,
//! and every collector URL they call (method, path and query parameters) is
//! in the OpenAPI document, so a renamed endpoint cannot silently break them.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use errorflow_collector::http::openapi::ApiDoc;
use errorflow_collector::triage::result::json_schema;
use serde_json::Value;
use utoipa::OpenApi;

const FLOWS: [&str; 4] = [
    "error-intake",
    "group-summary-agent",
    "group-ai-batch",
    "group-quiet-check",
];

fn flow(id: &str) -> Value {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../infra/kestra")
        .join(format!("{id}.yml"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let yaml: serde_yaml::Value =
        serde_yaml::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::to_value(yaml).unwrap()
}

/// Every task of a type, nested ones included.
fn tasks_of(v: &Value, ty: &str, out: &mut Vec<Value>) {
    match v {
        Value::Object(m) => {
            if m.get("type").and_then(Value::as_str) == Some(ty) {
                out.push(v.clone());
            }
            m.values().for_each(|c| tasks_of(c, ty, out));
        }
        Value::Array(a) => a.iter().for_each(|c| tasks_of(c, ty, out)),
        _ => {}
    }
}

/// `{{ envs.errorflow_url }}/api/v1/groups/{{ x }}/triage?a=1` → (`/api/v1/groups/{}/triage`, [`a`]).
fn collector_path(uri: &str) -> Option<(String, Vec<String>)> {
    let rest = uri.strip_prefix("{{ envs.errorflow_url }}")?;
    let (path, query) = rest.split_once('?').unwrap_or((rest, ""));
    let mut normalised = String::new();
    let mut s = path;
    while let Some(start) = s.find("{{") {
        normalised.push_str(&s[..start]);
        normalised.push_str("{}");
        let end = s[start..].find("}}").expect("closed template") + start + 2;
        s = &s[end..];
    }
    normalised.push_str(s);
    let params = query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| p.split('=').next().unwrap().to_string())
        .collect();
    Some((normalised, params))
}

fn openapi_operation(doc: &Value, path: &str, method: &str) -> Option<Value> {
    let paths = doc["paths"].as_object().unwrap();
    paths
        .iter()
        .find_map(|(p, item)| {
            let mut norm = String::new();
            let mut in_param = false;
            for c in p.chars() {
                match c {
                    '{' => {
                        in_param = true;
                        norm.push_str("{}");
                    }
                    '}' => in_param = false,
                    _ if in_param => {}
                    _ => norm.push(c),
                }
            }
            (norm == path).then(|| item[method.to_ascii_lowercase()].clone())
        })
        .filter(|op| !op.is_null())
}

#[test]
fn flows_parse_and_keep_the_seed_ids() {
    for id in FLOWS {
        let f = flow(id);
        assert_eq!(f["id"], id);
        assert_eq!(f["namespace"], "main");
        assert!(
            f["tasks"].as_array().is_some_and(|t| !t.is_empty()),
            "{id} has tasks"
        );
    }
    let intake = flow("error-intake");
    assert_eq!(intake["inputs"][0]["id"], "error_event");
    assert_eq!(intake["inputs"][0]["type"], "JSON");
    let agent = flow("group-summary-agent");
    let inputs: Vec<(&str, &str)> = agent["inputs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| (i["id"].as_str().unwrap(), i["type"].as_str().unwrap()))
        .collect();
    assert!(inputs.contains(&("cluster_key", "STRING")), "{inputs:?}");
    for (id, cron) in [
        ("group-ai-batch", "*/10 * * * *"),
        ("group-quiet-check", "*/5 * * * *"),
    ] {
        assert_eq!(flow(id)["triggers"][0]["cron"], cron);
    }
}

#[test]
fn the_agent_answers_in_the_collectors_schema_without_sql() {
    let agent = flow("group-summary-agent");
    let mut found = Vec::new();
    tasks_of(&agent, "io.kestra.plugin.ai.agent.AIAgent", &mut found);
    assert_eq!(found.len(), 1);
    let schema = &found[0]["configuration"]["responseFormat"]["jsonSchema"];
    let required = |v: &Value| -> BTreeSet<String> {
        v["required"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s.as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(required(schema), required(&json_schema()));
    assert_eq!(
        found[0]["provider"]["apiKey"],
        "{{ secret('GEMINI_API_KEY') }}"
    );
    // The digest is fenced as data.
    let prompt = found[0]["prompt"].as_str().unwrap();
    assert!(
        prompt.contains("BEGIN ERRORFLOW_INCIDENT_DATA")
            && prompt.contains("END ERRORFLOW_INCIDENT_DATA")
    );
    for id in FLOWS {
        let text = serde_json::to_string(&flow(id)).unwrap().to_lowercase();
        for forbidden in ["jdbc", "plugin.jdbc", "select ", "update error_groups"] {
            assert!(!text.contains(forbidden), "{id} talks SQL ({forbidden})");
        }
    }
}

/// The summary flow's agent answers in JSON mode, so plugin-ai fills
/// `jsonOutput` and leaves `textOutput` null (`AIOutput.builderFrom`); the
/// schema's hints are `title`s, the only key plugin-ai's schema translation
/// passes on to the model (`JsonObjectSchemaTranslator`).
#[test]
fn the_agent_result_is_stored_from_json_output_with_titled_hints() {
    let agent = flow("group-summary-agent");
    let tasks = agent["tasks"].as_array().unwrap();
    let ai = tasks.iter().find(|t| t["id"] == "agent").unwrap();
    assert_eq!(ai["configuration"]["responseFormat"]["type"], "JSON");
    let store = tasks.iter().find(|t| t["id"] == "store").unwrap();
    assert_eq!(store["body"], "{{ outputs.agent.jsonOutput | toJson }}");
    assert_eq!(store["contentType"], "application/json");
    let props = ai["configuration"]["responseFormat"]["jsonSchema"]["properties"]
        .as_object()
        .unwrap();
    for (name, p) in props {
        assert!(p["title"].is_string(), "{name} has a title");
        assert!(
            p.get("description").is_none(),
            "{name}: plugin-ai ignores description"
        );
    }
    assert!(store["uri"]
        .as_str()
        .unwrap()
        .contains("idempotency_key={{ (inputs.idempotency_key ?? '') | urlencode }}"));
}

/// The batch loops with `Loop` (ForEach is removed in Kestra 2.0) and a
/// failed child fails it.
#[test]
fn the_batch_uses_loop_and_transmits_failures() {
    let batch = flow("group-ai-batch");
    let text = serde_json::to_string(&batch).unwrap();
    for removed in ["core.flow.ForEach\"", "core.flow.ForEachItem"] {
        assert!(
            !text.contains(removed),
            "{removed} is removed in Kestra 2.0"
        );
    }
    let mut loops = Vec::new();
    tasks_of(&batch, "io.kestra.plugin.core.flow.Loop", &mut loops);
    assert_eq!(loops.len(), 1);
    assert_eq!(loops[0]["transmitFailed"], true);
    let mut subflows = Vec::new();
    tasks_of(&batch, "io.kestra.plugin.core.flow.Subflow", &mut subflows);
    assert_eq!(subflows.len(), 1);
    assert_eq!(subflows[0]["transmitFailed"], true);
    assert_eq!(subflows[0]["wait"], true);
    assert!(subflows[0]["inputs"]["idempotency_key"].is_string());
}

#[test]
fn every_collector_url_the_flows_call_is_in_the_openapi_document() {
    let doc = serde_json::to_value(ApiDoc::openapi()).unwrap();
    let mut calls = 0;
    for id in FLOWS {
        let mut requests = Vec::new();
        tasks_of(
            &flow(id),
            "io.kestra.plugin.core.http.Request",
            &mut requests,
        );
        for r in requests {
            let uri = r["uri"].as_str().unwrap();
            let (path, params) = collector_path(uri)
                .unwrap_or_else(|| panic!("{id}: {uri} does not call the collector"));
            let method = r["method"].as_str().unwrap_or("GET");
            let op = openapi_operation(&doc, &path, method)
                .unwrap_or_else(|| panic!("{id}: {method} {path} is not in the OpenAPI document"));
            let documented: BTreeSet<String> = op["parameters"]
                .as_array()
                .map(|ps| {
                    ps.iter()
                        .map(|p| p["name"].as_str().unwrap().to_string())
                        .collect()
                })
                .unwrap_or_default();
            for p in params {
                assert!(
                    documented.contains(&p),
                    "{id}: {method} {path}: query parameter {p} undocumented ({documented:?})"
                );
            }
            assert_eq!(
                r["headers"]["Authorization"], "Bearer {{ secret('ERRORFLOW_TOKEN') }}",
                "{id}: the token comes from a Kestra secret"
            );
            calls += 1;
        }
    }
    assert_eq!(calls, 4);
}

#[test]
fn the_triage_endpoints_are_documented() {
    let doc = serde_json::to_value(ApiDoc::openapi()).unwrap();
    for (method, path) in [
        ("post", "/api/v1/groups/{id}/summarize"),
        ("post", "/groups/{cluster_key}/summarize"),
        ("get", "/api/v1/groups/{id}/digest"),
        ("get", "/api/v1/triage/digest"),
        ("put", "/api/v1/groups/{id}/triage"),
        ("get", "/api/v1/groups/{id}/triage"),
        ("get", "/api/v1/triage/stale"),
        ("post", "/api/v1/maintenance/quiet"),
    ] {
        assert!(!doc["paths"][path][method].is_null(), "{method} {path}");
    }
    let list = &doc["paths"]["/api/v1/groups"]["get"]["parameters"];
    assert!(list.as_array().unwrap().iter().any(|p| p["name"] == "view"));
}

fn compose() -> serde_yaml::Value {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../infra/docker-compose.yml");
    let text = std::fs::read_to_string(&path).unwrap();
    serde_yaml::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn env_of(service: &serde_yaml::Value) -> BTreeMap<String, String> {
    service["environment"]
        .as_mapping()
        .unwrap()
        .iter()
        .map(|(k, v)| {
            (
                k.as_str().unwrap().to_string(),
                v.as_str().map(str::to_string).unwrap_or_default(),
            )
        })
        .collect()
}

/// `docker compose config` needs the compose plugin, which Debian does not
/// package for this release (its `docker-compose` 1.29 does not know the
/// `name` key); this checks the structure the deployment relies on.
#[test]
fn the_compose_file_pins_kestra_has_healthchecks_and_keeps_passwords_out_of_urls() {
    let c = compose();
    let services = c["services"].as_mapping().unwrap();
    assert_eq!(services.len(), 3);
    for (name, service) in services {
        let name = name.as_str().unwrap();
        let test = &service["healthcheck"]["test"];
        assert!(
            test.as_sequence().is_some_and(|t| !t.is_empty()),
            "{name} has a healthcheck"
        );
        if let Some(image) = service["image"].as_str() {
            let (_, tag) = image
                .split_once(':')
                .unwrap_or_else(|| panic!("{name}: {image} has a tag"));
            assert!(!tag.contains("latest"), "{name}: {image} is pinned");
        }
    }
    // Kestra: a 1.x release line, pinned to a patch release.
    let kestra = &c["services"]["kestra"];
    let image = kestra["image"].as_str().unwrap();
    let version = image
        .strip_prefix("kestra/kestra:v1.")
        .unwrap_or_else(|| panic!("{image}"));
    assert_eq!(
        version.split('.').count(),
        2,
        "{image} names a patch release"
    );
    // No password in a URL or pasted into Kestra's YAML configuration.
    let collector = env_of(&c["services"]["collector"]);
    assert!(
        !collector["DATABASE_URL"].contains("PASSWORD"),
        "{}",
        collector["DATABASE_URL"]
    );
    assert!(!collector["DATABASE_URL"].contains('@'));
    assert_eq!(collector["PGPASSWORD"], "${POSTGRES_PASSWORD}");
    let kestra_env = env_of(kestra);
    let config = &kestra_env["KESTRA_CONFIGURATION"];
    assert!(!config.contains("${POSTGRES_PASSWORD}") && !config.contains("${KESTRA_PASSWORD}"));
    assert!(
        config.contains("password: \"$${KESTRA_DB_PASSWORD}\""),
        "{config}"
    );
    // One token, given to both: the collector registers it, Kestra's secret is made from it.
    assert!(collector["ERRORFLOW_KESTRA_TOKEN"].starts_with("${ERRORFLOW_KESTRA_TOKEN:?"));
    assert_eq!(
        kestra_env["ERRORFLOW_KESTRA_TOKEN"],
        collector["ERRORFLOW_KESTRA_TOKEN"]
    );
    let command = kestra["command"][0].as_str().unwrap();
    assert!(
        command.contains("export SECRET_ERRORFLOW_TOKEN="),
        "{command}"
    );
    // The build context leaves target/ out.
    let ignore =
        std::fs::read_to_string(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../.dockerignore"))
            .expect("a .dockerignore at the build context's root");
    assert!(ignore.lines().any(|l| l.trim() == "target/"), "{ignore}");
    assert_eq!(c["services"]["collector"]["build"]["context"], "..");
}
