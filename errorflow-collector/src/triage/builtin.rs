//! The built-in analyst: offline and deterministic. It reads the digest
//! through the signal table ([`super::rules`]): the class of the incident
//! and its evidence set most of the priority; environment, reach, novelty
//! and trend move it; raw volume moves it little. Every point is explained
//! by a [`Signal`]. The summary names what failed, where, since when, who is
//! affected, what changed and the likely cause, and carries no counts (they
//! go stale; pages and the API show them live beside it).

use std::sync::Arc;

use async_trait::async_trait;

use super::digest::{Digest, Trend};
use super::result::{Assessment, Severity, Signal, TriageResult};
use super::rules::{Class, RuleSet};
use super::{Analyst, TriageError};

pub const MODEL: &str = "builtin-rules";

/// How an environment counts: production first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum EnvTier {
    Dev,
    Staging,
    Unknown,
    Prod,
}

impl EnvTier {
    /// Reads an environment name (`production`, `prod-eu`, `staging`, `dev`…).
    pub fn of(name: &str) -> EnvTier {
        let n = name.trim().to_ascii_lowercase();
        let has = |needles: &[&str]| needles.iter().any(|x| n.contains(x));
        if n.is_empty() {
            EnvTier::Unknown
        } else if has(&[
            "preprod", "pre-prod", "staging", "stage", "stg", "uat", "qa",
        ]) {
            EnvTier::Staging
        } else if has(&["dev", "local", "test", "sandbox", "review", "preview", "ci"]) {
            EnvTier::Dev
        } else if has(&["prod", "prd", "live", "canary"]) || n == "main" || n == "master" {
            EnvTier::Prod
        } else {
            EnvTier::Unknown
        }
    }

    /// The share of the priority an environment keeps.
    fn factor(self) -> f64 {
        match self {
            EnvTier::Prod => 1.0,
            EnvTier::Unknown => 0.85,
            EnvTier::Staging => 0.55,
            EnvTier::Dev => 0.3,
        }
    }
}

/// The incident's environment: production when any of its events is.
fn environment(d: &Digest) -> (EnvTier, String) {
    let mut names: Vec<&str> = d
        .affected
        .environments
        .iter()
        .map(|t| t.value.as_str())
        .collect();
    if let Some(e) = d.environment.as_deref() {
        names.push(e);
    }
    names
        .into_iter()
        .map(|n| (EnvTier::of(n), n.to_string()))
        .max_by_key(|(t, _)| *t)
        .unwrap_or((EnvTier::Unknown, String::new()))
}

/// Severity from the final priority.
pub fn severity_for(priority: i32) -> Severity {
    match priority {
        70.. => Severity::Critical,
        50..=69 => Severity::High,
        30..=49 => Severity::Medium,
        _ => Severity::Low,
    }
}

/// The priority an expected (caller-caused) incident never exceeds, however
/// loud it is.
const EXPECTED_CAP: i32 = 28;
/// Priority points of an incident that matches no rule.
const UNCLASSIFIED_WEIGHT: i32 = 40;

fn plural(n: usize, one: &str, many: &str) -> String {
    if n == 1 {
        format!("1 {one}")
    } else {
        format!("{n} {many}")
    }
}

/// The offline analyst, with its signal table.
#[derive(Debug, Clone)]
pub struct BuiltinAnalyst {
    rules: Arc<RuleSet>,
}

impl Default for BuiltinAnalyst {
    fn default() -> Self {
        BuiltinAnalyst::new(RuleSet::builtin())
    }
}

impl BuiltinAnalyst {
    pub fn new(rules: Arc<RuleSet>) -> BuiltinAnalyst {
        BuiltinAnalyst { rules }
    }

    pub fn rules(&self) -> &RuleSet {
        &self.rules
    }

    /// Classifies the incident and scores it, each point explained.
    pub fn assess(&self, d: &Digest) -> Assessment {
        let matched = self.rules.classify(d);
        let (class, weight, label) = match &matched {
            Some(m) => (m.rule.class, m.rule.weight, m.rule.label.clone()),
            None => (
                Class::Defect,
                UNCLASSIFIED_WEIGHT,
                "unclassified error".to_string(),
            ),
        };
        let (tier, env_name) = environment(d);
        let mut class_label = format!("{}: {label}", class.label());
        if let Some(degree) = matched.as_ref().and_then(|m| m.rule.degree.as_deref()) {
            if !label.contains(degree) {
                class_label.push_str(&format!(" ({degree})"));
            }
        }
        let mut signals = vec![Signal {
            kind: "class".into(),
            label: class_label,
            points: weight,
        }];
        let mut add = |kind: &str, label: String, points: i32| {
            signals.push(Signal {
                kind: kind.into(),
                label,
                points,
            })
        };

        // Novelty: a regression or a new incident is news.
        let release = d.release.as_deref().filter(|r| !r.is_empty());
        if d.regressed_recently {
            let label = match release {
                Some(r) => format!("regressed in {r}"),
                None => "regressed after being resolved".into(),
            };
            add("novelty", label, 12);
        } else if d.trend == Trend::New {
            let label = match release {
                Some(r) => format!("new in {r}"),
                None => "new today".into(),
            };
            add("novelty", label, 5);
        }
        match d.trend {
            Trend::Spiking => add(
                "trend",
                format!(
                    "spiking ({:.0}× its usual rate)",
                    d.counts.ratio_to_baseline
                ),
                8,
            ),
            Trend::Fading => add("trend", "fading".into(), -8),
            _ => {}
        }
        // Reach: who and what is affected.
        let users = d.affected.user_count;
        if users > 0 {
            let points = match users {
                1 => 1,
                2..=4 => 3,
                5..=19 => 6,
                _ => 9,
            };
            add("reach", plural(users, "user", "users"), points);
        }
        let hosts = d.affected.hosts.len();
        if hosts >= 2 {
            add("reach", plural(hosts, "host", "hosts"), 2);
        }
        let services = d.affected.services.len();
        if services >= 2 {
            add("reach", plural(services, "service", "services"), 3);
        }
        let routes = d.affected.paths.len();
        if routes >= 3 {
            add("reach", plural(routes, "route", "routes"), 2);
        }
        match d.level.as_str() {
            "fatal" => add("level", "fatal".into(), 6),
            // Warnings are the normal level of degradations and early
            // alarms, whose class already says how bad they are.
            "warning" if class == Class::Defect => add("level", "warning level".into(), -10),
            "warning" => add("level", "warning level".into(), -4),
            "info" | "debug" | "log" => add("level", format!("{} level", d.level), -18),
            _ => {}
        }
        if class != Class::Expected && d.exceptions.first().and_then(|e| e.handled) == Some(false) {
            add("level", "unhandled".into(), 3);
        }
        // Volume: logarithmic and small, so loud is not the same as urgent.
        let volume = ((1.0 + d.counts.last_24h as f64).log10() * 1.5)
            .round()
            .min(4.0) as i32;
        if volume >= 3 {
            add("volume", "high volume".into(), volume);
        }
        if d.status != "open" {
            add("status", format!("{} incident", d.status), -15);
        }

        let raw: i32 = if class == Class::Expected {
            // Reach and spikes of expected errors are mostly bots and retries.
            let base = signals[0].points;
            let rest: i32 = signals[1..]
                .iter()
                .map(|s| if s.points > 0 { s.points / 2 } else { s.points })
                .sum();
            (base + rest).min(EXPECTED_CAP)
        } else {
            signals.iter().map(|s| s.points).sum()
        };
        let raw = raw.clamp(0, 100);
        let priority = ((raw as f64) * tier.factor()).round() as i32;
        let env_label = match (tier, env_name.is_empty()) {
            (EnvTier::Unknown, true) => "environment unknown".to_string(),
            _ => env_name.clone(),
        };
        signals.insert(
            0,
            Signal {
                kind: "environment".into(),
                label: env_label,
                points: priority - raw,
            },
        );
        let priority = priority.clamp(0, 100);
        Assessment {
            class: class.as_str().to_string(),
            rule: matched.as_ref().map(|m| m.rule.id.clone()),
            label,
            degree: matched.as_ref().and_then(|m| m.rule.degree.clone()),
            evidence: matched
                .as_ref()
                .map(|m| format!("{}: {:?}", m.field, m.evidence)),
            priority,
            severity: severity_for(priority),
            explanation: super::result::explanation(&signals),
            signals,
        }
    }

    /// The triage result and the assessment behind it.
    pub fn triage_with(&self, d: &Digest) -> (TriageResult, Assessment) {
        let a = d.assessment.clone().unwrap_or_else(|| self.assess(d));
        let matched = self.rules.classify(d);
        let rule = matched.as_ref().map(|m| m.rule);
        let class = Class::parse(&a.class).unwrap_or(Class::Defect);
        let summary = summary(d, &a, class, rule.and_then(|r| r.cause.as_deref()));
        let mut next_steps: Vec<String> = Vec::new();
        if let Some(frame) = innermost_in_app(d) {
            next_steps.push(format!("Start at {frame}, the innermost in-app frame."));
        }
        if d.regressed_recently {
            next_steps
                .push("Compare the release that regressed with the one it was resolved in.".into());
        }
        match rule.filter(|r| !r.steps.is_empty()) {
            Some(r) => next_steps.extend(r.steps.iter().cloned()),
            None => next_steps
                .push("Read the latest event's exception and breadcrumbs to reproduce it.".into()),
        }
        if let Some(release) = d.release.as_deref() {
            if d.trend == Trend::New || d.trend == Trend::Spiking {
                next_steps.push(format!("Check what changed in release {release}."));
            }
        }
        let result = TriageResult {
            summary,
            severity: a.severity,
            priority: a.priority,
            probable_cause: rule.and_then(|r| r.cause.clone()).unwrap_or_else(|| {
                "Not a known error class; the exception chain and breadcrumbs are the best lead."
                    .to_string()
            }),
            next_steps,
            confidence: if rule.is_some() { 0.6 } else { 0.3 },
        };
        (result, a)
    }

    pub fn triage(&self, d: &Digest) -> TriageResult {
        self.triage_with(d).0
    }
}

/// `function (file:line)` of the innermost in-app frame.
fn innermost_in_app(d: &Digest) -> Option<String> {
    let frame = d
        .exceptions
        .iter()
        .flat_map(|e| e.frames.first())
        .find(|f| f.in_app)?;
    let at = match (&frame.location, frame.lineno) {
        (Some(l), Some(n)) => format!(" ({l}:{n})"),
        (Some(l), None) => format!(" ({l})"),
        _ => String::new(),
    };
    Some(format!(
        "{}{at}",
        frame.function.as_deref().unwrap_or("the top frame")
    ))
}

/// What failed, where, since when, who is affected, what changed and the
/// likely cause. No counts: they would be stale by the next event.
fn summary(d: &Digest, a: &Assessment, class: Class, cause: Option<&str>) -> String {
    let (tier, env) = environment(d);
    let mut s = format!("{}, in {}", d.title, d.service);
    if !env.is_empty() {
        s.push_str(&format!(" ({env})"));
    } else if tier == EnvTier::Unknown {
        s.push_str(" (environment unknown)");
    }
    if let Some(r) = &d.request {
        if let Some(route) = &r.route {
            let method = r
                .method
                .as_deref()
                .map(|m| format!("{m} "))
                .unwrap_or_default();
            s.push_str(&format!(" on {method}{route}"));
            if let Some(status) = r.status {
                s.push_str(&format!(" (answered {status})"));
            }
        }
    } else if let Some(c) = d.culprit.as_deref().filter(|c| !c.is_empty()) {
        s.push_str(&format!(" in {c}"));
    }
    if let Some(frame) = innermost_in_app(d) {
        s.push_str(&format!(", at {frame}"));
    }
    s.push_str(". ");
    s.push_str(&format!(
        "First seen {}",
        d.first_seen.format("%Y-%m-%d %H:%M UTC")
    ));
    if let Some(release) = d.release.as_deref() {
        if d.trend == Trend::New {
            s.push_str(&format!(", new in release {release}"));
        } else {
            s.push_str(&format!("; latest release {release}"));
        }
    }
    if d.regressed_recently {
        match d.regressed_at {
            Some(at) => s.push_str(&format!(
                "; it regressed at {} after being resolved",
                at.format("%Y-%m-%d %H:%M UTC")
            )),
            None => s.push_str("; it regressed after being resolved"),
        }
    }
    if d.trend == Trend::Spiking {
        s.push_str("; spiking now");
    }
    s.push_str(". ");
    let mut who: Vec<String> = Vec::new();
    if !d.affected.users.is_empty() {
        let more = if d.affected.user_count > d.affected.users.len() {
            " and others"
        } else {
            ""
        };
        who.push(format!("users {}{more}", d.affected.users.join(", ")));
    }
    if d.affected.hosts.len() >= 2 {
        let hosts: Vec<&str> = d.affected.hosts.iter().map(|t| t.value.as_str()).collect();
        who.push(format!("hosts {}", hosts.join(", ")));
    }
    if d.affected.services.len() >= 2 {
        let services: Vec<&str> = d
            .affected
            .services
            .iter()
            .map(|t| t.value.as_str())
            .collect();
        who.push(format!("services {}", services.join(", ")));
    }
    if who.is_empty() {
        s.push_str("No user is named in the events. ");
    } else {
        s.push_str(&format!("Affects {}. ", who.join("; ")));
    }
    let cause_text = match class {
        Class::Defect if a.rule.is_none() => {
            "Likely cause: not a known error class; start from the stack trace.".to_string()
        }
        _ => format!(
            "Likely cause ({}: {}): {}",
            class.label(),
            a.label,
            cause.unwrap_or("see the evidence in the events.")
        ),
    };
    s.push_str(&cause_text);
    super::result::bound(&s, super::result::MAX_SUMMARY_CHARS)
}

#[async_trait]
impl Analyst for BuiltinAnalyst {
    fn name(&self) -> &'static str {
        "builtin"
    }

    fn model(&self) -> &str {
        MODEL
    }

    async fn analyse(&self, digest: &Digest) -> Result<TriageResult, TriageError> {
        self.triage(digest).validate()
    }
}

#[cfg(test)]
mod tests {
    use chrono::Duration;
    use serde_json::json;

    use super::*;
    use crate::model::{GroupStats, StoredEvent};
    use crate::triage::digest::tests::{event, group, now, stats};
    use crate::triage::digest::{self};

    struct Case {
        label: &'static str,
        service: &'static str,
        error_type: &'static str,
        message: &'static str,
        level: &'static str,
        env: &'static str,
        stats: GroupStats,
        first_seen_hours_ago: i64,
        regressed_hours_ago: Option<i64>,
        users: usize,
    }

    fn digest_for(c: &Case) -> digest::Digest {
        let mut g = group();
        g.service = c.service.into();
        g.error_type = c.error_type.into();
        g.title = format!("{}: {}", c.error_type, c.message);
        g.culprit = None;
        g.level = c.level.into();
        g.last_environment = Some(c.env.into());
        g.first_seen = now() - Duration::hours(c.first_seen_hours_ago);
        g.regressed_at = c.regressed_hours_ago.map(|h| now() - Duration::hours(h));
        g.regression_count = i64::from(c.regressed_hours_ago.is_some());
        let events: Vec<StoredEvent> = (0..c.users.max(1))
            .map(|i| {
                let user = if i < c.users {
                    json!({"id": format!("u{i}")})
                } else {
                    json!(null)
                };
                event(
                    i as i64,
                    c.message,
                    json!({
                        "event_id": uuid::Uuid::from_u128(i as u128),
                        "exception": [{"type": c.error_type, "value": c.message}],
                        "user": user,
                    }),
                )
            })
            .collect();
        digest::build(&g, &c.stats, &events, &[], now())
    }

    fn case(
        label: &'static str,
        error_type: &'static str,
        message: &'static str,
        env: &'static str,
        stats: GroupStats,
    ) -> Case {
        Case {
            label,
            service: "api",
            error_type,
            message,
            level: "error",
            env,
            stats,
            first_seen_hours_ago: 72,
            regressed_hours_ago: None,
            users: 0,
        }
    }

    /// A labelled set of incidents, most urgent first.
    fn fixtures() -> Vec<Case> {
        vec![
            Case {
                level: "fatal",
                users: 12,
                ..case(
                    "prod OOM crash-looping, spiking",
                    "MemoryError",
                    "out of memory allocating 1073741824 bytes",
                    "prod",
                    stats(
                        2,
                        &[3, 4, 60],
                        &[("path", &[("/a", 1), ("/b", 1), ("/c", 1)])],
                    ),
                )
            },
            Case {
                regressed_hours_ago: Some(2),
                users: 3,
                ..case(
                    "prod connection refused, regressed and spiking",
                    "ConnectError",
                    "connection refused (os error 111)",
                    "production",
                    stats(1, &[1, 2, 6], &[]),
                )
            },
            Case {
                users: 8,
                ..case(
                    "prod database outage, spiking",
                    "DatabaseError",
                    "too many connections for role app",
                    "prod",
                    stats(1, &[2, 5, 40], &[]),
                )
            },
            case(
                "prod auth failures, steady",
                "AuthError",
                "invalid token: signature mismatch",
                "prod",
                stats(1, &[1, 1, 1], &[]),
            ),
            Case {
                first_seen_hours_ago: 3,
                users: 4,
                ..case(
                    "prod panic unwrap on None, new",
                    "panic",
                    "called `Option::unwrap()` on a `None` value",
                    "prod",
                    stats(0, &[3, 5, 6], &[]),
                )
            },
            case(
                "prod null access, steady",
                "TypeError",
                "Cannot read properties of undefined (reading 'id')",
                "prod",
                stats(3, &[3, 3, 3], &[]),
            ),
            Case {
                users: 2,
                ..case(
                    "prod upstream timeouts, steady",
                    "Timeout",
                    "upstream request timed out after 30s",
                    "prod",
                    stats(5, &[5, 6, 5], &[]),
                )
            },
            case(
                "prod KeyError, fading",
                "KeyError",
                "'user_id'",
                "prod",
                stats(4, &[0, 0, 1], &[]),
            ),
            Case {
                level: "warning",
                ..case(
                    "prod fading warning",
                    "SlowQuery",
                    "query took 2s",
                    "prod",
                    stats(5, &[0, 0, 0], &[]),
                )
            },
            case(
                "staging database error, steady",
                "DatabaseError",
                "deadlock detected",
                "staging",
                stats(2, &[2, 2, 2], &[]),
            ),
            case(
                "staging validation error, steady",
                "ValidationError",
                "email is invalid",
                "staging",
                stats(2, &[2, 2, 2], &[]),
            ),
            Case {
                level: "warning",
                ..case(
                    "dev parse warning, fading",
                    "ParseError",
                    "invalid digit found in string",
                    "dev",
                    stats(1, &[0, 0, 0], &[]),
                )
            },
        ]
    }

    fn triage_all() -> Vec<(&'static str, TriageResult)> {
        fixtures()
            .iter()
            .map(|c| (c.label, BuiltinAnalyst::default().triage(&digest_for(c))))
            .collect()
    }

    #[test]
    fn fixtures_are_ordered_by_priority() {
        let results = triage_all();
        for pair in results.windows(2) {
            let ((a, ra), (b, rb)) = (&pair[0], &pair[1]);
            assert!(
                ra.priority >= rb.priority,
                "{a} ({}) should not rank below {b} ({})\n{results:#?}",
                ra.priority,
                rb.priority
            );
            assert!(ra.severity >= rb.severity, "{a} vs {b} severity");
        }
    }

    #[test]
    fn named_orderings_hold() {
        let r: std::collections::HashMap<_, _> = triage_all().into_iter().collect();
        let p = |l: &str| r[l].priority;
        assert!(p("prod database outage, spiking") > p("staging validation error, steady"));
        assert!(p("prod connection refused, regressed and spiking") > p("prod fading warning"));
        assert!(p("staging database error, steady") > p("staging validation error, steady"));
        assert!(p("prod upstream timeouts, steady") > p("prod KeyError, fading"));
        assert_eq!(
            r["prod OOM crash-looping, spiking"].severity,
            Severity::Critical
        );
        assert_eq!(
            r["prod database outage, spiking"].severity,
            Severity::Critical
        );
        assert_eq!(r["dev parse warning, fading"].severity, Severity::Low);
        assert!(r["staging validation error, steady"].severity <= Severity::Medium);
    }

    #[test]
    fn rules_classify_common_errors() {
        let cases = [
            (
                "panic",
                "called `Option::unwrap()` on a `None` value",
                "defect.panic_unwrap",
            ),
            (
                "panic",
                "index out of bounds: the len is 3 but the index is 7",
                "defect.index",
            ),
            ("Timeout", "deadline exceeded", "degradation.timeout"),
            (
                "ConnectError",
                "Connection refused",
                "availability.dependency_down",
            ),
            (
                "AuthError",
                "invalid api key sk_live_…",
                "expected.caller_auth",
            ),
            (
                "TypeError",
                "Cannot read properties of null",
                "defect.null_access",
            ),
            ("KeyError", "'id'", "defect.key"),
            ("JSONDecodeError", "Expecting value", "defect.parse"),
            ("ValidationError", "bad email", "expected.validation"),
            (
                "OSError",
                "[Errno 28] No space left on device",
                "resource.storage_full",
            ),
            (
                "DiskWarning",
                "disk usage at 93% on /var/lib/postgresql",
                "resource.almost_full",
            ),
            (
                "CertWarning",
                "client certificate for payments expires in 3 days",
                "security.cert_expiring_soon",
            ),
            (
                "CertWarning",
                "client certificate for payments expires in 21 days",
                "security.cert_expiring_later",
            ),
            (
                "SSLError",
                "certificate verify failed: certificate has expired",
                "security.cert_expired",
            ),
            (
                "LedgerError",
                "ledger imbalance: debits != credits for account 42",
                "data_integrity.ledger",
            ),
            (
                "ShipmentError",
                "order 991 already shipped; second shipment created",
                "data_integrity.duplicate_effect",
            ),
            (
                "CardError",
                "Your card was declined.",
                "expected.card_declined",
            ),
            (
                "ClientDisconnected",
                "client disconnected before the response",
                "expected.client_abort",
            ),
            (
                "Error",
                "QueuePool limit of size 5 overflow 10 reached, connection timed out",
                "availability.pool_exhausted",
            ),
        ];
        let analyst = BuiltinAnalyst::default();
        for (ty, msg, want) in cases {
            let c = case("x", ty, msg, "prod", stats(1, &[], &[]));
            let a = analyst.assess(&digest_for(&c));
            assert_eq!(a.rule.as_deref(), Some(want), "{ty}: {msg}");
            assert!(a.evidence.is_some());
        }
    }

    #[test]
    fn degrees_order_within_a_class() {
        let analyst = BuiltinAnalyst::default();
        let p = |ty: &'static str, msg: &'static str| {
            analyst
                .assess(&digest_for(&case(
                    "x",
                    ty,
                    msg,
                    "prod",
                    stats(1, &[1, 1, 1], &[]),
                )))
                .priority
        };
        let full = p("OSError", "No space left on device");
        let almost = p("DiskWarning", "disk usage at 93% on /data");
        assert!(full > almost, "{full} {almost}");
        let expired = p(
            "SSLError",
            "x509: certificate has expired or is not yet valid",
        );
        let days = p("CertWarning", "TLS certificate expires in 3 days");
        let weeks = p("CertWarning", "TLS certificate expires in 3 weeks");
        assert!(expired > days && days > weeks, "{expired} {days} {weeks}");
    }

    #[test]
    fn environment_outweighs_volume_and_expected_errors_stay_low() {
        let analyst = BuiltinAnalyst::default();
        let loud_expected = Case {
            users: 15,
            ..case(
                "x",
                "ClientDisconnected",
                "client disconnected",
                "prod",
                stats(200, &[300, 400, 2000], &[]),
            )
        };
        let quiet_integrity = case(
            "x",
            "InvariantViolation",
            "balance mismatch for account",
            "prod",
            stats(0, &[0, 0, 1], &[]),
        );
        let dev_integrity = case(
            "x",
            "InvariantViolation",
            "balance mismatch for account",
            "dev",
            stats(0, &[0, 0, 1], &[]),
        );
        let loud = analyst.assess(&digest_for(&loud_expected));
        let quiet = analyst.assess(&digest_for(&quiet_integrity));
        let dev = analyst.assess(&digest_for(&dev_integrity));
        assert!(loud.priority <= EXPECTED_CAP, "{loud:?}");
        assert_eq!(loud.severity, Severity::Low);
        assert!(quiet.priority > 70, "{quiet:?}");
        assert!(dev.priority < quiet.priority / 2, "{dev:?}");
        // Every point is explained: the signals add up to the priority.
        for a in [&quiet, &dev] {
            let sum: i32 = a.signals.iter().map(|s| s.points).sum();
            assert_eq!(sum, a.priority, "{a:?}");
        }
        assert_eq!(quiet.signals[0].label, "prod");
        assert!(quiet.signals[1].label.starts_with("data integrity: "));
    }

    #[test]
    fn summary_has_no_counts_and_names_where_and_why() {
        let c = Case {
            users: 2,
            first_seen_hours_ago: 3,
            ..case(
                "x",
                "DatabaseError",
                "too many connections for role app",
                "prod",
                stats(0, &[3, 5, 6], &[]),
            )
        };
        let r = BuiltinAnalyst::default().triage(&digest_for(&c));
        assert!(!r.summary.contains(" event"), "{}", r.summary);
        assert!(r.summary.contains("api (prod)"), "{}", r.summary);
        assert!(r.summary.contains("new in release 1.2.3"), "{}", r.summary);
        assert!(r.summary.contains("users u0, u1"), "{}", r.summary);
        assert!(
            r.summary
                .contains("availability: connection pool exhausted"),
            "{}",
            r.summary
        );
    }

    #[test]
    fn result_is_valid_and_deterministic() {
        for c in fixtures() {
            let d = digest_for(&c);
            let a = BuiltinAnalyst::default().triage(&d);
            assert_eq!(a, BuiltinAnalyst::default().triage(&d));
            assert!(a.clone().validate().is_ok(), "{}: {a:?}", c.label);
            assert!(a.summary.contains(&d.service));
        }
    }
}
