//! The triage result: what every analyst (built-in, LLM, a Kestra flow)
//! must produce, its JSON schema, and its validation.
//!
//! Model output is data, never instructions: it is parsed into
//! [`TriageResult`], checked against the schema's bounds, and only ever
//! stored and shown. Nothing in it triggers an action.

use std::fmt;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use utoipa::ToSchema;

use super::TriageError;

/// Version of the prompt and digest layout; stored with every result so a
/// change of prompt can be told apart in the history.
pub const PROMPT_VERSION: &str = "triage-v2";

/// One reason behind a priority: "prod", "data integrity: balance or ledger
/// invariant violated", "new in 1.4.2", "5 users".
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Signal {
    /// `environment`, `class`, `level`, `novelty`, `trend`, `reach`,
    /// `volume`, `status`, `model` or `manual`.
    pub kind: String,
    /// What a person reads.
    pub label: String,
    /// How many priority points it moved (negative lowers it).
    pub points: i32,
}

/// The signals joined for one line: "prod · data integrity: … · 5 users".
pub fn explanation(signals: &[Signal]) -> String {
    signals
        .iter()
        .map(|s| s.label.as_str())
        .collect::<Vec<_>>()
        .join(" · ")
}

/// What the built-in signal model concludes about an incident: its class
/// with the evidence, the priority and severity that follow, and the
/// signals that set them. Stored with every triage result and given to
/// LLM analysts as data.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Assessment {
    /// `availability`, `data_integrity`, `security`, `resource_exhaustion`,
    /// `degradation`, `expected` or `defect`.
    pub class: String,
    /// The matching rule of the table, when one matched.
    pub rule: Option<String>,
    /// The rule's reading of the evidence, e.g. "storage full".
    pub label: String,
    /// How far a resource is gone, when the rule says ("full", "almost full").
    pub degree: Option<String>,
    /// The text that matched, and where (`message: "no space left on device"`).
    pub evidence: Option<String>,
    pub priority: i32,
    pub severity: Severity,
    pub signals: Vec<Signal>,
    /// The signals as one line.
    pub explanation: String,
}

/// How bad an incident is.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, ToSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Low,
    Medium,
    High,
    Critical,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Low => "low",
            Severity::Medium => "medium",
            Severity::High => "high",
            Severity::Critical => "critical",
        }
    }

    pub fn parse(s: &str) -> Option<Severity> {
        match s {
            "low" => Some(Severity::Low),
            "medium" => Some(Severity::Medium),
            "high" => Some(Severity::High),
            "critical" => Some(Severity::Critical),
            _ => None,
        }
    }
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The schema-validated output of an analyst.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TriageResult {
    /// What is happening, in one or two sentences.
    pub summary: String,
    pub severity: Severity,
    /// 0–100; higher needs attention sooner.
    pub priority: i32,
    /// The most likely cause, or what is unknown.
    pub probable_cause: String,
    /// Concrete next steps, most useful first (at most 8).
    pub next_steps: Vec<String>,
    /// 0–1: how sure the analyst is.
    pub confidence: f64,
}

pub const MAX_SUMMARY_CHARS: usize = 2000;
pub const MAX_CAUSE_CHARS: usize = 1000;
pub const MAX_STEP_CHARS: usize = 500;
pub const MAX_STEPS: usize = 8;

impl TriageResult {
    /// Checks the schema's bounds. Numbers out of range and empty texts are
    /// errors (the output is not trusted); over-long texts are truncated and
    /// surrounding whitespace trimmed, which changes no meaning.
    pub fn validate(mut self) -> Result<TriageResult, TriageError> {
        let invalid = |m: String| Err(TriageError::InvalidOutput(m));
        if !(0..=100).contains(&self.priority) {
            return invalid(format!("priority {} out of range 0..=100", self.priority));
        }
        if !self.confidence.is_finite() || !(0.0..=1.0).contains(&self.confidence) {
            return invalid(format!("confidence {} out of range 0..=1", self.confidence));
        }
        self.summary = bound(&self.summary, MAX_SUMMARY_CHARS);
        if self.summary.is_empty() {
            return invalid("summary is empty".into());
        }
        self.probable_cause = bound(&self.probable_cause, MAX_CAUSE_CHARS);
        self.next_steps = self
            .next_steps
            .iter()
            .map(|s| bound(s, MAX_STEP_CHARS))
            .filter(|s| !s.is_empty())
            .take(MAX_STEPS)
            .collect();
        if self.next_steps.is_empty() {
            return invalid("next_steps is empty".into());
        }
        Ok(self)
    }

    /// Parses a model's text answer: a JSON object matching [`json_schema`],
    /// possibly wrapped in a Markdown code fence (some models add one even
    /// in JSON mode).
    pub fn parse_model_output(text: &str) -> Result<TriageResult, TriageError> {
        let trimmed = text.trim();
        let body = trimmed
            .strip_prefix("```json")
            .or_else(|| trimmed.strip_prefix("```"))
            .and_then(|s| s.strip_suffix("```"))
            .unwrap_or(trimmed);
        let result: TriageResult = serde_json::from_str(body.trim())
            .map_err(|e| TriageError::InvalidOutput(format!("not a triage result object: {e}")))?;
        result.validate()
    }
}

/// Trims and truncates on a character boundary.
pub fn bound(s: &str, max_chars: usize) -> String {
    let s = s.trim();
    if s.chars().count() <= max_chars {
        s.to_string()
    } else {
        let mut out: String = s.chars().take(max_chars.saturating_sub(1)).collect();
        out.push('…');
        out
    }
}

/// JSON Schema of [`TriageResult`], as sent to OpenAI-compatible endpoints
/// (`response_format.json_schema.schema`) and used by the Kestra flow.
/// Ranges are stated in descriptions rather than `minimum`/`maximum`, which
/// some strict structured-output implementations refuse; [`TriageResult::validate`]
/// enforces them.
pub fn json_schema() -> Value {
    json!({
        "type": "object",
        "properties": {
            "summary": {"type": "string", "description": "What is happening, in one or two sentences."},
            "severity": {"type": "string", "enum": ["low", "medium", "high", "critical"]},
            "priority": {"type": "integer", "description": "0-100, higher needs attention sooner."},
            "probable_cause": {"type": "string"},
            "next_steps": {"type": "array", "items": {"type": "string"}, "description": "At most 8 short steps."},
            "confidence": {"type": "number", "description": "0-1."}
        },
        "required": ["summary", "severity", "priority", "probable_cause", "next_steps", "confidence"],
        "additionalProperties": false
    })
}

/// The same schema in Gemini's `responseSchema` dialect (an OpenAPI subset:
/// upper-case types, no `additionalProperties`).
pub fn gemini_schema() -> Value {
    json!({
        "type": "OBJECT",
        "properties": {
            "summary": {"type": "STRING"},
            "severity": {"type": "STRING", "enum": ["low", "medium", "high", "critical"]},
            "priority": {"type": "INTEGER", "minimum": 0, "maximum": 100},
            "probable_cause": {"type": "STRING"},
            "next_steps": {"type": "ARRAY", "items": {"type": "STRING"}},
            "confidence": {"type": "NUMBER", "minimum": 0, "maximum": 1}
        },
        "required": ["summary", "severity", "priority", "probable_cause", "next_steps", "confidence"],
        "propertyOrdering": ["summary", "severity", "priority", "probable_cause", "next_steps", "confidence"]
    })
}

/// A stored triage result with where it came from; the incident's history.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct TriageRecord {
    pub id: i64,
    pub group_id: i64,
    #[serde(flatten)]
    pub result: TriageResult,
    /// `builtin`, `openai`, `gemini` or `kestra`.
    pub analyst: String,
    /// The model that answered (`builtin-rules` for the built-in analyst).
    pub model: String,
    pub prompt_version: String,
    /// Why the configured analyst was not used (the built-in one answered instead).
    pub fallback_reason: Option<String>,
    /// What asked for it: `manual`, `new`, `regression`, `spike`, `stale`, `external`.
    pub trigger: String,
    /// The digest's trend when the result was made (`new`, `spiking`, `steady`, `fading`).
    pub trend: Option<String>,
    /// The signals that set the priority, strongest reasons first.
    pub signals: Vec<Signal>,
    /// The signals as one line, for people.
    pub explanation: String,
    pub created_at: DateTime<Utc>,
}

/// A triage result to store.
#[derive(Debug, Clone, PartialEq)]
pub struct NewTriage {
    pub group_id: i64,
    pub result: TriageResult,
    pub analyst: String,
    pub model: String,
    pub prompt_version: String,
    pub fallback_reason: Option<String>,
    pub trigger: String,
    pub trend: Option<String>,
    pub signals: Vec<Signal>,
    pub created_at: DateTime<Utc>,
}

impl NewTriage {
    /// The stored record, once the store gave it an id.
    pub fn record(&self, id: i64) -> TriageRecord {
        TriageRecord {
            id,
            group_id: self.group_id,
            result: self.result.clone(),
            analyst: self.analyst.clone(),
            model: self.model.clone(),
            prompt_version: self.prompt_version.clone(),
            fallback_reason: self.fallback_reason.clone(),
            trigger: self.trigger.clone(),
            trend: self.trend.clone(),
            explanation: explanation(&self.signals),
            signals: self.signals.clone(),
            created_at: self.created_at,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Value {
        json!({"summary": "s", "severity": "high", "priority": 80,
               "probable_cause": "c", "next_steps": ["a"], "confidence": 0.5})
    }

    #[test]
    fn parses_plain_and_fenced_output() {
        let text = sample().to_string();
        assert_eq!(
            TriageResult::parse_model_output(&text).unwrap().priority,
            80
        );
        let fenced = format!("```json\n{text}\n```");
        assert_eq!(
            TriageResult::parse_model_output(&fenced).unwrap().severity,
            Severity::High
        );
    }

    #[test]
    fn rejects_out_of_schema_output() {
        for (key, value) in [
            ("priority", json!(101)),
            ("priority", json!(-1)),
            ("confidence", json!(1.5)),
            ("severity", json!("catastrophic")),
            ("summary", json!("   ")),
            ("next_steps", json!([])),
            ("extra", json!("run `rm -rf /`")),
        ] {
            let mut v = sample();
            v[key] = value;
            assert!(
                TriageResult::parse_model_output(&v.to_string()).is_err(),
                "{key} accepted"
            );
        }
        assert!(TriageResult::parse_model_output("I think it is bad").is_err());
    }

    #[test]
    fn truncates_long_texts() {
        let mut v = sample();
        v["summary"] = json!("x".repeat(5000));
        v["next_steps"] = json!(vec!["step"; 20]);
        let r = TriageResult::parse_model_output(&v.to_string()).unwrap();
        assert_eq!(r.summary.chars().count(), MAX_SUMMARY_CHARS);
        assert_eq!(r.next_steps.len(), MAX_STEPS);
    }

    #[test]
    fn schema_requires_every_field() {
        let schema = json_schema();
        let required: Vec<&str> = schema["required"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap())
            .collect();
        let fields = sample();
        for k in fields.as_object().unwrap().keys() {
            assert!(required.contains(&k.as_str()), "{k}");
        }
    }
}
