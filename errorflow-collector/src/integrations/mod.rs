//! Integrations with services people already use around their errors.
//!
//! **Architecture Invariant**: nothing here runs on the ingest path; each
//! integration is called from the REST API, the dashboard or a webhook.

pub mod github;
