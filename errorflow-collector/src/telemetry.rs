//! Logs and Prometheus metrics. Metric names are defined here only.

use std::sync::OnceLock;
use std::time::Duration;

use metrics::{counter, gauge, histogram};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

use crate::config::LogFormat;

/// Installs the process-wide metrics recorder once and returns its handle
/// (several apps in one test process share it).
pub fn metrics_handle() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new()
                .set_buckets(&[
                    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
                ])
                .expect("static buckets are valid")
                .build_recorder();
            let handle = recorder.handle();
            // Another recorder may already be installed by an embedding
            // program; metrics then go there and ours stays empty.
            let _ = metrics::set_global_recorder(recorder);
            describe();
            handle
        })
        .clone()
}

fn describe() {
    metrics::describe_counter!(
        "errorflow_events_accepted_total",
        "Events stored, by endpoint."
    );
    metrics::describe_counter!(
        "errorflow_events_rejected_total",
        "Events or requests refused, by reason."
    );
    metrics::describe_counter!(
        "errorflow_events_duplicate_total",
        "Events ignored because their event_id was already stored."
    );
    metrics::describe_counter!("errorflow_groups_created_total", "Incidents created.");
    metrics::describe_counter!(
        "errorflow_regressions_total",
        "Resolved incidents reopened by a new event."
    );
    metrics::describe_histogram!(
        "errorflow_ingest_duration_seconds",
        "Time to answer an ingest request, by endpoint."
    );
    metrics::describe_counter!(
        "errorflow_alerts_total",
        "Webhook alerts, by result: sent, failed, dropped (queue full), suppressed (over the per-minute cap)."
    );
    metrics::describe_counter!(
        "errorflow_kestra_triggers_total",
        "Attempts to start a Kestra flow, by result: started, retry (kept in the outbox), refused."
    );
    metrics::describe_counter!(
        "errorflow_kestra_runs_total",
        "Kestra runs the collector started that ended, by flow and state (SUCCESS, FAILED, ...)."
    );
    metrics::describe_counter!(
        "errorflow_retention_deleted_total",
        "Events and incidents deleted by retention, by kind."
    );
    metrics::describe_gauge!(
        "errorflow_ingest_queue_depth",
        "Events waiting for the group-commit writer."
    );
    metrics::describe_gauge!(
        "errorflow_queue_partitions_owned",
        "Queue mode: partitions of the stream this writer owns."
    );
    metrics::describe_histogram!(
        "errorflow_write_batch_events",
        "Events per group-commit transaction."
    );
    metrics::describe_histogram!(
        "errorflow_write_duration_seconds",
        "Time of one group-commit transaction."
    );
}

pub fn accepted(endpoint: &'static str, n: usize) {
    counter!("errorflow_events_accepted_total", "endpoint" => endpoint).increment(n as u64);
}

pub fn rejected(reason: &'static str, n: usize) {
    counter!("errorflow_events_rejected_total", "reason" => reason).increment(n as u64);
}

pub fn duplicates(n: usize) {
    counter!("errorflow_events_duplicate_total").increment(n as u64);
}

pub fn groups_created(n: usize) {
    counter!("errorflow_groups_created_total").increment(n as u64);
}

pub fn regressions(n: usize) {
    counter!("errorflow_regressions_total").increment(n as u64);
}

pub fn ingest_latency(endpoint: &'static str, elapsed: Duration) {
    histogram!("errorflow_ingest_duration_seconds", "endpoint" => endpoint)
        .record(elapsed.as_secs_f64());
}

pub fn queue_depth(depth: usize) {
    gauge!("errorflow_ingest_queue_depth").set(depth as f64);
}

/// Partitions of the queue this writer owns (queue mode).
pub fn owned_partitions(n: usize) {
    gauge!("errorflow_queue_partitions_owned").set(n as f64);
}

pub fn batch_written(events: usize, elapsed: Duration) {
    histogram!("errorflow_write_batch_events").record(events as f64);
    histogram!("errorflow_write_duration_seconds").record(elapsed.as_secs_f64());
}

/// A triage result stored, by analyst and trigger.
pub fn triaged(analyst: &'static str, trigger: &'static str) {
    counter!("errorflow_triage_total", "analyst" => analyst, "trigger" => trigger).increment(1);
}

/// The configured analyst failed and the built-in one answered.
pub fn triage_fallback(analyst: &'static str) {
    counter!("errorflow_triage_fallback_total", "analyst" => analyst).increment(1);
}

/// One webhook alert and what became of it.
pub fn alert(result: &'static str) {
    counter!("errorflow_alerts_total", "result" => result).increment(1);
}

/// Rows of `kind` (`events`, `incidents`) deleted by retention.
pub fn retention_deleted(kind: &'static str, n: u64) {
    counter!("errorflow_retention_deleted_total", "kind" => kind).increment(n);
}

/// A Kestra flow start: `started`, `retry` (Kestra unreachable or busy;
/// kept in the outbox) or `refused` (Kestra answered a client error).
pub fn kestra_trigger(result: &'static str) {
    counter!("errorflow_kestra_triggers_total", "result" => result).increment(1);
}

/// A Kestra run the collector started ended, by flow and final state
/// (SUCCESS, FAILED, …).
pub fn kestra_run_finished(flow: &str, state: &str) {
    counter!("errorflow_kestra_runs_total", "flow" => flow.to_string(), "state" => state.to_string())
        .increment(1);
}

/// An automatic triage trigger dropped because the channel was full.
pub fn triage_trigger_dropped() {
    counter!("errorflow_triage_triggers_dropped_total").increment(1);
}

/// Structured logs to stderr; colours only on a terminal and without
/// `NO_COLOR` (<https://no-color.org>), so that logs piped to a file,
/// journald or a container runtime carry no escape codes.
pub fn init_logging(format: LogFormat, filter: &str) {
    use std::io::IsTerminal;
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_new(filter).unwrap_or_else(|e| {
        eprintln!("invalid log filter {filter:?} ({e}); using `info`");
        EnvFilter::new("info")
    });
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none());
    let _ = match format {
        LogFormat::Json => builder.json().try_init(),
        LogFormat::Pretty => builder.compact().try_init(),
    };
}
