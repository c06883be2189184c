//! AI triage: digests of incidents, analysts that turn them into a
//! severity, priority, summary and next steps, and the jobs that run them.
//!
//! **Architecture Invariant**: this folder is the only place that talks to a
//! model or to Kestra, and it is never on the ingest path. Ingest only
//! offers triggers with a non-blocking `try_send` on a bounded channel
//! ([`Triggers::offer`]); a full channel drops the trigger, and a triage
//! failure is logged, never returned to an ingest request.
//!
//! Flow: [`digest::build`] (pure) → [`Analyst::analyse`] (built-in, or an
//! LLM with the built-in analyst as fallback) → [`crate::store::Store::save_triage`].
//!
//! ```
//! use errorflow_collector::triage::result::{TriageResult, Severity};
//! let r = TriageResult::parse_model_output(r#"{"summary":"db down","severity":"high","priority":80,
//!     "probable_cause":"pool exhausted","next_steps":["check the pool"],"confidence":0.7}"#).unwrap();
//! assert_eq!(r.severity, Severity::High);
//! ```

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use tokio::sync::mpsc;

use crate::model::{EventQuery, GroupQuery, GroupSort, GroupStatus, InsertOutcome};
use crate::store::{Store, StoreError};

pub mod builtin;
pub mod digest;
pub mod kestra;
pub mod llm;
pub mod result;
pub mod rules;
#[cfg(test)]
pub(crate) mod testing;

use builtin::BuiltinAnalyst;
use digest::{Digest, Trend};
use kestra::{FlowRun, Input, KestraHandle};
use result::{Assessment, NewTriage, Signal, TriageRecord, TriageResult, PROMPT_VERSION};

/// Errors of triage. None of them ever reaches an ingest request.
#[derive(Debug, thiserror::Error)]
pub enum TriageError {
    #[error("request failed: {0}")]
    Http(String),
    #[error("request timed out")]
    Timeout,
    #[error("server answered {status}: {body}")]
    Status { status: u16, body: String },
    #[error("invalid model output: {0}")]
    InvalidOutput(String),
    #[error("request budget for this minute is spent")]
    Budget,
    #[error("invalid triage configuration: {0}")]
    Config(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl TriageError {
    /// Worth retrying: network errors, timeouts, 429 and 5xx.
    pub fn is_transient(&self) -> bool {
        match self {
            TriageError::Http(_) | TriageError::Timeout => true,
            TriageError::Status { status, .. } => *status == 429 || *status >= 500,
            _ => false,
        }
    }
}

/// A secret (API key, password) whose `Debug` and `Display` never show it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Secret {
        Secret(s.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// Turns a digest into a triage result.
#[async_trait]
pub trait Analyst: Send + Sync + 'static {
    /// `builtin`, `openai`, `gemini`.
    fn name(&self) -> &'static str;
    fn model(&self) -> &str;
    async fn analyse(&self, digest: &Digest) -> Result<TriageResult, TriageError>;
}

/// Which analyst to use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Provider {
    #[default]
    Builtin,
    Openai,
    Gemini,
}

/// Triage settings, resolved from the configuration.
#[derive(Debug, Clone)]
pub struct TriageOptions {
    pub provider: Provider,
    pub llm_base_url: Option<String>,
    pub llm_model: Option<String>,
    pub llm_api_key: Option<Secret>,
    pub llm_timeout: Duration,
    pub llm_requests_per_minute: u32,
    /// Triage new incidents, regressions and spikes automatically.
    pub auto: bool,
    /// An open incident's triage is stale after this long if it has new events.
    pub stale_after: Duration,
    /// At most one automatic triage per incident in this period.
    pub debounce: Duration,
    pub kestra: Option<kestra::KestraOptions>,
    /// The built-in analyst's signal table (the default one, or with a user's file applied).
    pub rules: Arc<rules::RuleSet>,
}

impl Default for TriageOptions {
    fn default() -> Self {
        TriageOptions {
            provider: Provider::Builtin,
            llm_base_url: None,
            llm_model: None,
            llm_api_key: None,
            llm_timeout: Duration::from_secs(30),
            llm_requests_per_minute: 30,
            auto: true,
            stale_after: Duration::from_secs(3600),
            debounce: Duration::from_secs(600),
            kestra: None,
            rules: rules::RuleSet::builtin(),
        }
    }
}

impl TriageOptions {
    /// The built-in analyst with these options' signal table.
    pub fn builtin(&self) -> BuiltinAnalyst {
        BuiltinAnalyst::new(self.rules.clone())
    }

    /// The analyst these options name.
    pub fn analyst(&self) -> Result<Arc<dyn Analyst>, TriageError> {
        let (protocol, default_base, default_model) = match self.provider {
            Provider::Builtin => return Ok(Arc::new(self.builtin())),
            Provider::Openai => (
                llm::Protocol::OpenAi,
                "https://api.openai.com/v1",
                "gpt-4o-mini",
            ),
            Provider::Gemini => (
                llm::Protocol::Gemini,
                "https://generativelanguage.googleapis.com",
                "gemini-2.5-flash",
            ),
        };
        let mut o = llm::LlmOptions::new(
            protocol,
            self.llm_base_url.as_deref().unwrap_or(default_base),
            self.llm_model.as_deref().unwrap_or(default_model),
            self.llm_api_key.clone(),
        );
        o.timeout = self.llm_timeout;
        o.requests_per_minute = self.llm_requests_per_minute;
        Ok(Arc::new(llm::LlmAnalyst::new(o)?))
    }
}

/// What asked for a triage.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Reason {
    Manual,
    New,
    Regression,
    Spike,
    Stale,
    /// The picture changed since the last triage: ten times the events, a
    /// new release or a new environment.
    Changed,
}

impl Reason {
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Manual => "manual",
            Reason::New => "new",
            Reason::Regression => "regression",
            Reason::Spike => "spike",
            Reason::Stale => "stale",
            Reason::Changed => "changed",
        }
    }
}

/// What an analysis produced and who produced it.
#[derive(Debug, Clone, PartialEq)]
pub struct Analysis {
    pub result: TriageResult,
    /// `builtin` when the fallback answered.
    pub analyst: &'static str,
    pub model: String,
    /// Why the configured analyst's answer was not used.
    pub fallback_reason: Option<String>,
}

/// Runs `analyst`, falling back to `builtin` on any failure or invalid
/// output (recorded in `fallback_reason`).
pub async fn analyse_with_fallback(
    analyst: &dyn Analyst,
    builtin: &BuiltinAnalyst,
    digest: &Digest,
) -> Analysis {
    match analyst.analyse(digest).await {
        Ok(result) => Analysis {
            result,
            analyst: analyst.name(),
            model: analyst.model().to_string(),
            fallback_reason: None,
        },
        Err(e) => {
            tracing::warn!(analyst = analyst.name(), group = digest.group_id, error = %e,
                "analyst failed; using the built-in analyst");
            crate::telemetry::triage_fallback(analyst.name());
            Analysis {
                result: builtin.triage(digest),
                analyst: "builtin",
                model: builtin::MODEL.to_string(),
                fallback_reason: Some(e.to_string()),
            }
        }
    }
}

/// The signals stored with a result: the signal model's, plus a note when
/// another analyst set a different priority.
pub fn signals_for(
    assessment: Option<&Assessment>,
    result: &TriageResult,
    analyst: &str,
    model: &str,
) -> Vec<Signal> {
    let Some(a) = assessment else {
        return Vec::new();
    };
    let mut signals = a.signals.clone();
    if analyst != "builtin" && result.priority != a.priority {
        signals.push(Signal {
            kind: "model".into(),
            label: format!(
                "{model} set priority {} (signals gave {})",
                result.priority, a.priority
            ),
            points: result.priority - a.priority,
        });
    }
    signals
}

/// The triage service: builds digests, runs the analyst with fallback, stores results.
pub struct Triage {
    store: Arc<dyn Store>,
    analyst: Arc<dyn Analyst>,
    builtin: BuiltinAnalyst,
    kestra: Option<KestraHandle>,
    options: TriageOptions,
}

impl fmt::Debug for Triage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Triage")
            .field("analyst", &self.analyst.name())
            .field("options", &self.options)
            .finish()
    }
}

impl Triage {
    pub fn new(store: Arc<dyn Store>, analyst: Arc<dyn Analyst>, options: TriageOptions) -> Triage {
        Triage {
            store,
            analyst,
            builtin: options.builtin(),
            kestra: None,
            options,
        }
    }

    /// The built-in analyst and no Kestra: what tests and a bare start use.
    pub fn builtin(store: Arc<dyn Store>) -> Triage {
        let options = TriageOptions::default();
        Triage::new(store, Arc::new(options.builtin()), options)
    }

    pub fn with_kestra(mut self, handle: KestraHandle) -> Triage {
        self.kestra = Some(handle);
        self
    }

    /// The configured analyst (the GitHub analysis asks it too).
    pub fn analyst(&self) -> Arc<dyn Analyst> {
        self.analyst.clone()
    }

    /// The built-in analyst, with the operator's rules: the fallback of
    /// every other analyst.
    pub fn builtin_analyst(&self) -> &BuiltinAnalyst {
        &self.builtin
    }

    pub fn options(&self) -> &TriageOptions {
        &self.options
    }

    pub fn kestra(&self) -> Option<&KestraHandle> {
        self.kestra.as_ref()
    }

    /// The digest of an incident, or `None` if there is no such incident.
    pub async fn digest(
        &self,
        group_id: i64,
        now: DateTime<Utc>,
    ) -> Result<Option<Digest>, TriageError> {
        let Some(group) = self.store.get_group(group_id).await? else {
            return Ok(None);
        };
        let stats = self.store.group_stats(group_id, now).await?;
        let events = self
            .store
            .list_events(&EventQuery {
                group_id: Some(group_id),
                limit: digest::MAX_EVENTS as u32,
                ..EventQuery::default()
            })
            .await?;
        let activity = self.store.activity(group_id).await?;
        let mut digest = digest::build(&group, &stats, &events.events, &activity, now);
        digest.assessment = Some(self.builtin.assess(&digest));
        Ok(Some(digest))
    }

    /// Runs the configured analyst, falling back to the built-in one on any
    /// failure or invalid output. Returns the result, the analyst and model
    /// that produced it, and why the fallback was used.
    pub async fn analyse(&self, digest: &Digest) -> Analysis {
        analyse_with_fallback(self.analyst.as_ref(), &self.builtin, digest).await
    }

    /// Triages one incident now and stores the result; `None` if there is no such incident.
    pub async fn run(
        &self,
        group_id: i64,
        reason: Reason,
    ) -> Result<Option<TriageRecord>, TriageError> {
        let now = Utc::now();
        let Some(digest) = self.digest(group_id, now).await? else {
            return Ok(None);
        };
        let Analysis {
            result,
            analyst,
            model,
            fallback_reason,
        } = self.analyse(&digest).await;
        crate::telemetry::triaged(analyst, reason.as_str());
        let signals = signals_for(digest.assessment.as_ref(), &result, analyst, &model);
        let record = self
            .store
            .save_triage(&NewTriage {
                group_id,
                result,
                analyst: analyst.to_string(),
                model,
                prompt_version: PROMPT_VERSION.to_string(),
                fallback_reason,
                trigger: reason.as_str().to_string(),
                trend: Some(digest.trend.as_str().to_string()),
                signals,
                created_at: now,
            })
            .await?;
        Ok(record)
    }

    /// Stores a result made elsewhere (the Kestra flow's agent). With an
    /// idempotency key, a result already stored under it is returned and
    /// nothing new is stored (a flow started twice for one trigger).
    pub async fn record_external(
        &self,
        group_id: i64,
        result: TriageResult,
        analyst: &str,
        model: &str,
        idempotency_key: Option<&str>,
    ) -> Result<Option<TriageRecord>, TriageError> {
        let result = result.validate()?;
        let now = Utc::now();
        // The trend is recomputed so the "needs attention" view sees spikes
        // whichever analyst answered.
        let digest = self.digest(group_id, now).await?;
        let trend = digest.as_ref().map(|d| d.trend.as_str().to_string());
        let signals = signals_for(
            digest.as_ref().and_then(|d| d.assessment.as_ref()),
            &result,
            analyst,
            model,
        );
        let triage = NewTriage {
            group_id,
            result,
            analyst: analyst.to_string(),
            model: model.to_string(),
            prompt_version: PROMPT_VERSION.to_string(),
            fallback_reason: None,
            trigger: "external".into(),
            trend,
            signals,
            created_at: now,
        };
        match idempotency_key {
            Some(key) => {
                let saved = self.store.save_triage_once(&triage, key).await?;
                if let Some((record, false)) = &saved {
                    tracing::info!(
                        group = group_id,
                        triage = record.id,
                        "a result with this idempotency key is already stored; not stored again"
                    );
                }
                Ok(saved.map(|(record, _)| record))
            }
            None => Ok(self.store.save_triage(&triage).await?),
        }
    }

    /// Asks Kestra to run `group-summary-agent` for an incident, when Kestra
    /// is configured: the start is in the outbox when this returns true.
    pub async fn request_summary_flow(&self, group_id: i64, cluster_key: &str) -> bool {
        let Some(k) = &self.kestra else { return false };
        let run = FlowRun {
            flow_id: kestra::GROUP_SUMMARY_AGENT.into(),
            group_id: Some(group_id),
            inputs: vec![
                Input::Text("cluster_key".into(), cluster_key.to_string()),
                Input::Text("group_id".into(), group_id.to_string()),
            ],
        };
        match k.enqueue(run).await {
            Ok(_) => true,
            Err(e) => {
                tracing::warn!(group = group_id, error = %e, "cannot queue the Kestra summary flow");
                false
            }
        }
    }

    /// Tells Kestra's `error-intake` about a new or regressed incident.
    async fn notify_intake(&self, group_id: i64) -> Result<(), TriageError> {
        let Some(k) = &self.kestra else { return Ok(()) };
        let Some(group) = self.store.get_group(group_id).await? else {
            return Ok(());
        };
        let events = self
            .store
            .list_events(&EventQuery {
                group_id: Some(group_id),
                limit: 1,
                ..EventQuery::default()
            })
            .await?;
        if let Some(event) = events.events.first() {
            k.enqueue(FlowRun {
                flow_id: kestra::ERROR_INTAKE.into(),
                group_id: Some(group_id),
                inputs: vec![Input::Json(
                    "error_event".into(),
                    kestra::error_event(event, &group.cluster_key),
                )],
            })
            .await?;
        }
        Ok(())
    }

    /// Open incidents whose last triage is older than `stale_after` and
    /// that have had events since (or were never triaged).
    pub async fn stale(&self, limit: u32) -> Result<Vec<i64>, TriageError> {
        let before = Utc::now()
            - chrono::Duration::from_std(self.options.stale_after)
                .unwrap_or(chrono::Duration::hours(1));
        Ok(self.store.stale_triage(before, limit).await?)
    }

    /// Open incidents whose picture changed since their last triage.
    pub async fn changed(&self, limit: u32) -> Result<Vec<i64>, TriageError> {
        Ok(self.store.changed_since_triage(limit).await?)
    }

    /// Open incidents seen recently that are spiking now.
    pub async fn spiking(&self, limit: u32) -> Result<Vec<i64>, TriageError> {
        self.spiking_at(limit, Utc::now()).await
    }

    /// Open incidents seen in the hour before `now` that are spiking at
    /// `now` (hourly counts are bucketed by clock hour, so the caller that
    /// stored the events knows which hour they fell in).
    pub async fn spiking_at(
        &self,
        limit: u32,
        now: chrono::DateTime<Utc>,
    ) -> Result<Vec<i64>, TriageError> {
        let page = self
            .store
            .list_groups(&GroupQuery {
                status: Some(GroupStatus::Open),
                sort: GroupSort::LastSeen,
                limit,
                ..GroupQuery::default()
            })
            .await?;
        let mut out = Vec::new();
        for g in page
            .groups
            .iter()
            .filter(|g| now - g.last_seen < chrono::Duration::hours(1))
        {
            let stats = self.store.group_stats(g.id, now).await?;
            if digest::build(g, &stats, &[], &[], now).trend == Trend::Spiking {
                out.push(g.id);
            }
        }
        Ok(out)
    }
}

/// The ingest side of the trigger channel. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Triggers {
    tx: mpsc::Sender<(i64, Reason)>,
}

impl Triggers {
    /// Offers triggers for the incidents that the outcomes created or
    /// regressed. Never blocks: a full channel drops the trigger.
    pub fn offer(&self, outcomes: &[InsertOutcome]) {
        for outcome in outcomes {
            if let InsertOutcome::Stored {
                group_id,
                new_group,
                regression,
            } = outcome
            {
                let reason = if *regression {
                    Reason::Regression
                } else if *new_group {
                    Reason::New
                } else {
                    continue;
                };
                if self.tx.try_send((*group_id, reason)).is_err() {
                    crate::telemetry::triage_trigger_dropped();
                }
            }
        }
    }

    /// A channel without a worker, for tests: returns the receiving end.
    pub fn channel(capacity: usize) -> (Triggers, mpsc::Receiver<(i64, Reason)>) {
        let (tx, rx) = mpsc::channel(capacity.max(1));
        (Triggers { tx }, rx)
    }
}

/// How often the worker looks for incidents whose picture changed.
pub const CHANGE_CHECK_EVERY: Duration = Duration::from_secs(60);

/// Starts the triage worker (automatic triggers, debounced) and, unless
/// Kestra's `group-ai-batch` flow does it, the periodic batch for stale and
/// spiking incidents. Returns the ingest side of the trigger channel.
pub fn spawn(triage: Arc<Triage>, capacity: usize, batch_every: Option<Duration>) -> Triggers {
    let triggers = spawn_worker(triage.clone(), capacity);
    // They run as long as the process.
    drop(spawn_periodic(triage, &triggers, batch_every));
    triggers
}

/// Starts the triage worker only: it triages what it is offered (in queue
/// mode, each writer's own incidents), debounced.
pub fn spawn_worker(triage: Arc<Triage>, capacity: usize) -> Triggers {
    let (triggers, mut rx) = Triggers::channel(capacity);
    let auto = triage.options.auto;
    let debounce = triage.options.debounce;
    let worker = triage.clone();
    tokio::spawn(async move {
        let mut last: HashMap<i64, Instant> = HashMap::new();
        while let Some((group_id, reason)) = rx.recv().await {
            if matches!(reason, Reason::New | Reason::Regression) {
                if let Err(e) = worker.notify_intake(group_id).await {
                    tracing::warn!(group = group_id, error = %e, "cannot notify kestra");
                }
            }
            if !auto {
                continue;
            }
            // A regression or a changed picture is news even right after a
            // triage; the rest is debounced.
            if !matches!(reason, Reason::Regression | Reason::Changed)
                && last.get(&group_id).is_some_and(|t| t.elapsed() < debounce)
            {
                continue;
            }
            last.insert(group_id, Instant::now());
            if last.len() > 10_000 {
                last.retain(|_, t| t.elapsed() < debounce);
            }
            if let Err(e) = worker.run(group_id, reason).await {
                tracing::warn!(group = group_id, reason = reason.as_str(), error = %e, "triage failed");
            }
        }
    });
    triggers
}

/// Starts the periodic checks that feed `triggers`: incidents whose picture
/// changed and, with `batch_every`, the batch of stale and spiking ones. In
/// queue mode only the leading writer runs them.
pub fn spawn_periodic(
    triage: Arc<Triage>,
    triggers: &Triggers,
    batch_every: Option<Duration>,
) -> Vec<tokio::task::JoinHandle<()>> {
    let mut tasks = Vec::new();
    let auto = triage.options.auto;
    if auto {
        // A changed picture is checked often: the query reads only
        // incidents seen since their last triage.
        let tx = triggers.tx.clone();
        let triage = triage.clone();
        tasks.push(tokio::spawn(async move {
            let mut tick = tokio::time::interval(CHANGE_CHECK_EVERY);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                match triage.changed(50).await {
                    Ok(ids) => {
                        for id in ids {
                            if tx.send((id, Reason::Changed)).await.is_err() {
                                return;
                            }
                        }
                    }
                    Err(e) => tracing::warn!(error = %e, "changed-incident check failed"),
                }
            }
        }));
    }
    if let (true, Some(every)) = (auto, batch_every) {
        let tx = triggers.tx.clone();
        tasks.push(tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            tick.tick().await;
            loop {
                tick.tick().await;
                let mut due: Vec<(i64, Reason)> = Vec::new();
                match triage.spiking(50).await {
                    Ok(ids) => due.extend(ids.into_iter().map(|id| (id, Reason::Spike))),
                    Err(e) => tracing::warn!(error = %e, "spike check failed"),
                }
                match triage.stale(50).await {
                    Ok(ids) => due.extend(ids.into_iter().map(|id| (id, Reason::Stale))),
                    Err(e) => tracing::warn!(error = %e, "stale triage check failed"),
                }
                for t in due {
                    // The worker debounces; waiting here is fine (not on ingest).
                    if tx.send(t).await.is_err() {
                        return;
                    }
                }
            }
        }));
    }
    tasks
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_redacted() {
        let s = Secret::new("sk-live-123");
        assert_eq!(format!("{s:?}"), "Secret(***)");
        let o = llm::LlmOptions::new(llm::Protocol::OpenAi, "http://x", "m", Some(s));
        assert!(!format!("{o:?}").contains("sk-live"));
        let mut k = kestra::KestraOptions::new("http://k");
        k.password = Some(Secret::new("hunter2"));
        assert!(!format!("{k:?}").contains("hunter2"));
    }

    #[tokio::test]
    async fn a_full_trigger_channel_drops_instead_of_blocking() {
        let (t, mut rx) = Triggers::channel(1);
        let stored = |id, new_group, regression| InsertOutcome::Stored {
            group_id: id,
            new_group,
            regression,
        };
        t.offer(&[
            stored(1, true, false),
            stored(2, false, true),
            stored(3, false, false),
            InsertOutcome::Duplicate,
        ]);
        assert_eq!(rx.recv().await, Some((1, Reason::New)));
        assert!(
            rx.try_recv().is_err(),
            "second trigger was dropped, not queued"
        );
    }
}
