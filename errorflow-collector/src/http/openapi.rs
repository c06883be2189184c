//! The OpenAPI document, generated from the handlers' annotations so it
//! cannot drift from the code.

use axum::Json;
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use super::{api, error, github, ingest, sentry, triage};
use crate::model;

#[derive(OpenApi)]
#[openapi(
    info(title = "errorflow collector", description = "Ingest error events, browse and triage incidents."),
    paths(
        ingest::batch, ingest::custom,
        sentry::envelope, sentry::store,
        api::list_groups, api::get_group, api::delete_group, api::group_events, api::group_activity,
        api::resolve, api::quiet, api::reopen,
        api::list_events, api::get_event,
        api::list_projects, api::create_project, api::rotate_key, api::delete_project,
        api::list_tokens, api::revoke_token,
        api::get_alert_webhook, api::set_alert_webhook, api::remove_alert_webhook,
        api::get_scrub_fields, api::set_scrub_fields,
        github::get_link, github::set_link, github::remove_link, github::create_issue, github::webhook_delivery,
        triage::summarize, triage::summarize_cluster, triage::digest, triage::digest_lookup, triage::put_triage,
        triage::history, triage::stale, triage::quiet, triage::kestra_runs, triage::set_priority,
        super::healthz, super::readyz, super::metrics,
    ),
    components(schemas(
        error::ErrorBody, error::ErrorDetail, ingest::CustomResponse, sentry::SentryAccepted,
        api::GroupList, api::GroupListItem, api::GroupDetail, api::EventList, api::TransitionBody,
        api::ProjectWithKey, api::CreateProject, api::ProjectDeleted,
        api::AlertWebhook, api::SetAlertWebhook, api::ScrubFields, api::SetScrubFields,
        github::GithubLinkView, github::SetGithubLink, github::WebhookAnswer, model::GithubIssue,
        model::Group, model::GroupStatus, model::GroupStats, model::Bucket, model::TagCount,
        model::Activity, model::Project, model::StoredEvent, model::ApiToken,
        triage::StaleList, triage::StaleIncident, triage::QuietOutcome, crate::model::KestraRun, triage::PriorityBody,
        crate::triage::result::Signal, crate::triage::result::Assessment,
        crate::triage::result::TriageResult, crate::triage::result::TriageRecord, crate::triage::result::Severity,
        crate::triage::digest::Digest, crate::triage::digest::Trend, crate::triage::digest::Counts,
        crate::triage::digest::Affected, crate::triage::digest::DigestException, crate::triage::digest::DigestFrame,
        crate::triage::digest::MessageCount, crate::triage::digest::DigestBreadcrumb,
        crate::triage::digest::DigestRequest, crate::triage::digest::DigestActivity,
    )),
    modifiers(&TokenAuth, &SeedPaths),
    tags(
        (name = "ingest", description = "Send events (ingest key)"),
        (name = "sentry", description = "Sentry SDK endpoints (ingest key as the DSN's public key)"),
        (name = "incidents", description = "Incidents and their lifecycle (management token)"),
        (name = "events", description = "Raw events (management token)"),
        (name = "projects", description = "Projects and ingest keys (management token)"),
        (name = "tokens", description = "Management tokens (management token)"),
        (name = "triage", description = "AI triage, digests and maintenance jobs (management token)"),
        (name = "operations", description = "Health, readiness and metrics (no authentication)"),
    )
)]
pub struct ApiDoc;

struct TokenAuth;

impl Modify for TokenAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "token",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
        // Sentry's SDKs send the ingest key as `sentry_key` in a header…
        components.add_security_scheme(
            "sentry_auth",
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::with_description(
                "X-Sentry-Auth",
                "`Sentry sentry_key=KEY, sentry_version=7, sentry_client=…`",
            ))),
        );
        // …or, from browsers, in the query string.
        components.add_security_scheme(
            "sentry_key",
            SecurityScheme::ApiKey(ApiKey::Query(ApiKeyValue::with_description(
                "sentry_key",
                "the ingest key (the DSN's public key)",
            ))),
        );
    }
}

/// The seed's `POST /groups/{id}/resolve` is the same operation as
/// `POST /api/v1/groups/{id}/resolve`: its entry is a copy under its own
/// operation id (operation ids are unique in a valid document).
struct SeedPaths;

impl Modify for SeedPaths {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let paths = &mut openapi.paths.paths;
        if let Some(mut item) = paths.get("/api/v1/groups/{id}/resolve").cloned() {
            if let Some(op) = item.post.as_mut() {
                op.operation_id = Some("resolve_seed_path".into());
                op.description = Some(
                    "The seed's path for resolving an incident; the same as \
                     `POST /api/v1/groups/{id}/resolve`."
                        .into(),
                );
            }
            paths.insert("/groups/{id}/resolve".into(), item);
        }
    }
}

/// `GET /api/v1/openapi.json` (public: it describes, it does not reveal).
pub async fn document() -> Json<utoipa::openapi::OpenApi> {
    Json(ApiDoc::openapi())
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    /// Client generators refuse a document in which two operations share an
    /// id; utoipa takes the handler's name unless told otherwise, so two
    /// handlers of one name in different modules collide.
    #[test]
    fn operation_ids_are_unique() {
        let doc = serde_json::to_value(ApiDoc::openapi()).unwrap();
        let mut seen: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for (path, item) in doc["paths"].as_object().unwrap() {
            for (method, op) in item.as_object().unwrap() {
                let id = op["operationId"]
                    .as_str()
                    .unwrap_or_else(|| panic!("{method} {path} has no operationId"));
                seen.entry(id.to_owned())
                    .or_default()
                    .push(format!("{method} {path}"));
            }
        }
        let shared: Vec<_> = seen.iter().filter(|(_, ops)| ops.len() > 1).collect();
        assert!(
            shared.is_empty(),
            "operation ids used more than once: {shared:?}"
        );
        assert!(seen.len() > 20, "{seen:?}");
    }
}
