//! The errorflow collector: receives error events, groups them into
//! incidents, stores them in Postgres or SQLite and serves the REST API.
//!
//! The folders are the pipeline, in order: [`http`] (routes, ingest, API) →
//! [`pipeline`] (decode → normalise → fingerprint; pure) → [`writer`] (group
//! commit) → [`store`] (the only place that knows SQL).
//!
//! ```no_run
//! # async fn run() -> anyhow::Result<()> {
//! let cli = errorflow_collector::config::Cli::try_parse_args(["errorflow-collector", "serve"])?;
//! errorflow_collector::app::run(cli).await
//! # }
//! ```

pub mod alerts;
pub mod app;
pub mod config;
pub mod credentials;
pub mod http;
pub mod integrations;
pub mod model;
pub mod outbound;
pub mod pipeline;
pub mod queue;
pub mod retention;
pub mod store;
pub mod telemetry;
pub mod triage;
pub mod writer;
