//! The built-in analyst: offline and deterministic. Severity and priority
//! come from a score over the digest (level, environment, rate and trend,
//! reach, regression, error class); the summary and next steps from the
//! digest and a table of common error classes.

use async_trait::async_trait;

use super::digest::{Digest, Trend};
use super::result::{Severity, TriageResult};
use super::{Analyst, TriageError};

pub const MODEL: &str = "builtin-rules";

/// A class of errors with what usually causes it and what to do.
pub struct Rule {
    pub id: &'static str,
    /// Lower-case needles searched in the error type, title, messages and
    /// exception chain; any one matches.
    pub needles: &'static [&'static str],
    /// How much the class weighs in the priority (0–25): outages and
    /// crashes above bad input.
    pub weight: i32,
    pub cause: &'static str,
    pub steps: &'static [&'static str],
}

/// First match wins, so the more specific rules come first.
pub const RULES: &[Rule] = &[
    Rule {
        id: "out_of_memory",
        needles: &["out of memory", "outofmemory", "memoryerror", "oomkilled", "memory allocation of", "heap out of memory"],
        weight: 25,
        cause: "The process ran out of memory: a leak, an unbounded collection or cache, or a request that loads too much at once.",
        steps: &["Check the memory graph of the affected hosts around the first occurrence.", "Look for unbounded buffers, caches or result sets on the code path in the stack trace.", "Raise the memory limit only as a stop-gap while the growth is found."],
    },
    Rule {
        id: "database",
        needles: &["dberror", "databaseerror", "database", "sqlx", "postgres", "sqlstate", "deadlock", "too many connections", "pool timed out", "operationalerror", "sqlexception"],
        weight: 24,
        cause: "The database is failing or unreachable, or its connection pool is exhausted.",
        steps: &["Check the database's health, connections and slow-query log.", "Check the connection pool size against the number of concurrent requests.", "Look for long transactions or locks held on the tables in the failing queries."],
    },
    Rule {
        id: "connection_refused",
        needles: &["connection refused", "econnrefused", "connection reset", "econnreset", "no route to host", "broken pipe", "dns error", "name or service not known"],
        weight: 22,
        cause: "A dependency is down or unreachable from this service (refused or reset connections).",
        steps: &["Check that the dependency named in the message is up and listening on the expected address.", "Check recent deploys or network/DNS changes between the two services.", "Make sure callers retry with backoff and fail fast while it is down."],
    },
    Rule {
        id: "timeout",
        needles: &["timeout", "timed out", "deadline exceeded", "etimedout", "504"],
        weight: 20,
        cause: "A call took longer than its deadline: a slow dependency, a saturated pool, or a timeout set too low.",
        steps: &["Find which dependency the timed-out call goes to and check its latency.", "Compare the timeout with the dependency's normal latency percentiles.", "Check for saturation (connection pools, thread pools, queues) at the time of the spike."],
    },
    Rule {
        id: "upstream",
        needles: &["upstreamerror", "bad gateway", "502", "503", "service unavailable"],
        weight: 18,
        cause: "An upstream service answers errors; this incident is probably a symptom of its failure.",
        steps: &["Check the upstream service's own incidents and health.", "Make sure the error is handled (retry, circuit breaker, degraded answer) instead of propagated."],
    },
    Rule {
        id: "panic",
        needles: &["panicked at", "panic", "segmentation fault", "sigsegv", "fatal error"],
        weight: 20,
        cause: "The process panicked or crashed: an invariant the code relies on did not hold.",
        steps: &["Read the panic message and the innermost in-app frame.", "Reproduce with the request or input in the breadcrumbs.", "Replace the failing assumption with error handling."],
    },
    Rule {
        id: "unwrap_none",
        needles: &["called `option::unwrap()` on a `none` value", "unwrap()` on a `none`", "called `result::unwrap()` on an `err` value"],
        weight: 18,
        cause: "Rust code called `unwrap()` on a `None`/`Err`: a value the code assumed present was missing.",
        steps: &["Open the innermost in-app frame and find the `unwrap()`/`expect()`.", "Handle the missing value (return an error or a default) instead of panicking.", "Add a test with the input that produced `None`."],
    },
    Rule {
        id: "index_out_of_bounds",
        needles: &["index out of bounds", "indexerror", "index out of range", "arrayindexoutofbounds", "out of range"],
        weight: 16,
        cause: "Code indexed past the end of a collection, usually on empty or shorter-than-expected input.",
        steps: &["Find the indexing in the innermost in-app frame.", "Use checked access (`get`) and handle empty input.", "Add a test with an empty or short collection."],
    },
    Rule {
        id: "null_access",
        needles: &["nullpointer", "null pointer", "cannot read propert", "undefined is not", "is not a function", "nonetype", "null reference", "nullreferenceexception", "of undefined", "of null"],
        weight: 16,
        cause: "Code used a value that was null/undefined/None: missing data or an unchecked optional field.",
        steps: &["Find the variable that was null in the innermost in-app frame.", "Trace where it should have been set (request data, database row, configuration).", "Check for null and answer a clear error, and add a test for the missing value."],
    },
    Rule {
        id: "auth",
        needles: &["unauthorized", "forbidden", "authentication", "invalid token", "token expired", "jwt", "permission denied", "401", "403", "invalid credentials"],
        weight: 12,
        cause: "Authentication or authorisation fails: expired or rotated credentials, a misconfigured secret, or clients without access.",
        steps: &["Check whether credentials or signing keys were rotated recently.", "Tell apart one client failing (its credentials) from all clients (the service's configuration).", "Check the clock skew if tokens are time-bound."],
    },
    Rule {
        id: "key_error",
        needles: &["keyerror", "key not found", "missing key", "no such key", "nosuchkey"],
        weight: 12,
        cause: "A lookup used a key that is not there: a renamed field, a missing configuration entry, or unexpected input.",
        steps: &["Find the missing key in the message and where the mapping comes from.", "Use a lookup with a default or validate the input before use."],
    },
    Rule {
        id: "rate_limit",
        needles: &["ratelimit", "rate limit", "too many requests", "429", "throttl"],
        weight: 10,
        cause: "A rate limit is hit: traffic above the quota, or retries without backoff amplifying load.",
        steps: &["Check the request rate against the limit and who sends the traffic.", "Make sure clients back off and honour Retry-After."],
    },
    Rule {
        id: "parse",
        needles: &["parse", "parsing", "deserializ", "unexpected token", "invalid digit", "jsondecodeerror", "syntaxerror", "malformed", "invalid json", "expected value"],
        weight: 10,
        cause: "Input could not be parsed: a client sends a different format, or a producer changed its output.",
        steps: &["Capture one failing payload (see the request and breadcrumbs).", "Check recent changes in the producer of that data.", "Answer a 4xx with a clear message instead of failing."],
    },
    Rule {
        id: "validation",
        needles: &["validationerror", "validation", "invalid input", "invalid argument", "valueerror", "422", "bad request"],
        weight: 3,
        cause: "Requests fail validation: usually clients sending bad input, which is expected and often not a bug.",
        steps: &["Check whether one client or many send the invalid input.", "If it is expected, report it as a 4xx without an error event, or lower its level."],
    },
];

/// The rule matching the digest, if any.
pub fn classify(d: &Digest) -> Option<&'static Rule> {
    let mut hay = format!(
        "{} {} {}",
        d.error_type,
        d.title,
        d.culprit.as_deref().unwrap_or("")
    );
    for e in &d.exceptions {
        hay.push(' ');
        hay.push_str(&e.ty);
        hay.push(' ');
        hay.push_str(&e.value);
        if let Some(m) = &e.mechanism {
            hay.push(' ');
            hay.push_str(m);
        }
    }
    for m in &d.messages {
        hay.push(' ');
        hay.push_str(&m.message);
    }
    let hay = hay.to_lowercase();
    RULES
        .iter()
        .find(|r| r.needles.iter().any(|n| hay.contains(n)))
}

/// How much an environment weighs: production first.
fn environment_weight(env: Option<&str>) -> i32 {
    match env.map(str::to_ascii_lowercase).as_deref() {
        Some("prod" | "production" | "live" | "prd") => 20,
        Some(e) if e.starts_with("prod") => 20,
        Some("staging" | "stage" | "stg" | "preprod" | "uat") => 8,
        Some("dev" | "development" | "local" | "test" | "testing" | "ci") => 0,
        Some(_) => 10,
        None => 10,
    }
}

fn level_weight(level: &str) -> i32 {
    match level {
        "fatal" => 25,
        "error" => 15,
        "warning" => 5,
        _ => 0,
    }
}

/// The score behind severity and priority, each part explained.
pub fn score(d: &Digest, rule: Option<&Rule>) -> i32 {
    let mut s = level_weight(&d.level);
    s += environment_weight(d.environment.as_deref());
    s += rule.map_or(8, |r| r.weight);
    // Rate: logarithmic, so 1000/h is not 100× 10/h.
    s += ((1.0 + d.counts.last_hour as f64).ln() * 3.0)
        .round()
        .min(12.0) as i32;
    s += match d.trend {
        Trend::Spiking => 12,
        Trend::New => 6,
        Trend::Steady => 2,
        Trend::Fading => -12,
    };
    if d.regressed_recently {
        s += 15;
    }
    s += (d.affected.user_count as i32 * 2).min(10);
    s += (d.affected.paths.len() as i32).min(4);
    if d.status != "open" {
        s -= 15;
    }
    s.clamp(0, 100)
}

pub fn severity_for(priority: i32) -> Severity {
    match priority {
        75.. => Severity::Critical,
        55..=74 => Severity::High,
        30..=54 => Severity::Medium,
        _ => Severity::Low,
    }
}

fn events(n: i64) -> String {
    match n {
        1 => "1 event".to_string(),
        n => format!("{n} events"),
    }
}

/// The offline analyst.
#[derive(Debug, Clone, Copy, Default)]
pub struct BuiltinAnalyst;

impl BuiltinAnalyst {
    pub fn triage(&self, d: &Digest) -> TriageResult {
        let rule = classify(d);
        let priority = score(d, rule);
        let severity = severity_for(priority);
        let env = d.environment.as_deref().unwrap_or("an unknown environment");
        let rate = match d.trend {
            Trend::New => format!("new in the last 24 h ({})", events(d.counts.last_24h)),
            Trend::Spiking => format!(
                "spiking: {} this hour, {:.1}× its hourly baseline",
                events(d.counts.last_hour),
                d.counts.ratio_to_baseline
            ),
            Trend::Steady => format!("steady at about {:.1} events/h", d.counts.hourly_baseline),
            Trend::Fading => format!("fading ({} in 24 h)", events(d.counts.last_24h)),
        };
        let mut summary = format!(
            "{} in {} ({}): {} in total, {}.",
            d.title,
            d.service,
            env,
            events(d.counts.total),
            rate
        );
        if d.regressed_recently {
            summary.push_str(" It regressed after being resolved.");
        }
        if d.affected.user_count > 0 {
            let users = match d.affected.user_count {
                1 => "1 user".to_string(),
                n => format!("{n} users"),
            };
            summary.push_str(&format!(" {users} affected in recent events."));
        }
        let mut next_steps: Vec<String> = Vec::new();
        if let Some(frame) = d
            .exceptions
            .first()
            .and_then(|e| e.frames.first())
            .filter(|f| f.in_app)
        {
            let at = match (&frame.location, frame.lineno) {
                (Some(l), Some(n)) => format!(" ({l}:{n})"),
                (Some(l), None) => format!(" ({l})"),
                _ => String::new(),
            };
            next_steps.push(format!(
                "Start at {}{at}, the innermost in-app frame.",
                frame.function.as_deref().unwrap_or("the top frame")
            ));
        }
        if d.regressed_recently {
            next_steps
                .push("Compare the release that regressed with the one it was resolved in.".into());
        }
        match rule {
            Some(r) => next_steps.extend(r.steps.iter().map(|s| s.to_string())),
            None => next_steps
                .push("Read the latest event's exception and breadcrumbs to reproduce it.".into()),
        }
        if let Some(release) = d.affected.releases.first() {
            if d.trend == Trend::New || d.trend == Trend::Spiking {
                next_steps.push(format!("Check what changed in release {}.", release.value));
            }
        }
        TriageResult {
            summary,
            severity,
            priority,
            probable_cause: rule.map_or_else(
                || "Not a known error class; the exception chain and breadcrumbs are the best lead.".to_string(),
                |r| r.cause.to_string(),
            ),
            next_steps,
            confidence: if rule.is_some() { 0.6 } else { 0.3 },
        }
    }
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
                "prod null access, steady",
                "TypeError",
                "Cannot read properties of undefined (reading 'id')",
                "prod",
                stats(3, &[3, 3, 3], &[]),
            ),
            case(
                "staging database error, steady",
                "DatabaseError",
                "deadlock detected",
                "staging",
                stats(2, &[2, 2, 2], &[]),
            ),
            case(
                "prod auth failures, steady",
                "AuthError",
                "invalid token: signature mismatch",
                "prod",
                stats(1, &[1, 1, 1], &[]),
            ),
            case(
                "prod KeyError, fading",
                "KeyError",
                "'user_id'",
                "prod",
                stats(4, &[0, 0, 1], &[]),
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
                    "prod fading warning",
                    "SlowQuery",
                    "query took 2s",
                    "prod",
                    stats(5, &[0, 0, 0], &[]),
                )
            },
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
            .map(|c| (c.label, BuiltinAnalyst.triage(&digest_for(c))))
            .collect()
    }

    #[test]
    fn fixtures_are_ordered_by_priority() {
        let results = triage_all();
        for pair in results.windows(2) {
            let ((a, ra), (b, rb)) = (&pair[0], &pair[1]);
            assert!(
                ra.priority > rb.priority,
                "{a} ({}) should outrank {b} ({})\n{results:#?}",
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
                "panic",
            ),
            (
                "panic",
                "index out of bounds: the len is 3 but the index is 7",
                "panic",
            ),
            ("Timeout", "deadline exceeded", "timeout"),
            ("ConnectError", "Connection refused", "connection_refused"),
            ("AuthError", "401 Unauthorized", "auth"),
            ("TypeError", "Cannot read properties of null", "null_access"),
            ("KeyError", "'id'", "key_error"),
            ("JSONDecodeError", "Expecting value", "parse"),
            ("ValidationError", "bad email", "validation"),
        ];
        for (ty, msg, want) in cases {
            let c = case("x", ty, msg, "prod", stats(1, &[], &[]));
            let got = classify(&digest_for(&c)).map(|r| r.id);
            assert_eq!(got, Some(want), "{ty}: {msg}");
        }
        // Without a panic mechanism, the unwrap rule names the cause precisely.
        let c = case(
            "x",
            "Error",
            "called `Option::unwrap()` on a `None` value",
            "prod",
            stats(1, &[], &[]),
        );
        assert_eq!(classify(&digest_for(&c)).map(|r| r.id), Some("unwrap_none"));
    }

    #[test]
    fn result_is_valid_and_deterministic() {
        for c in fixtures() {
            let d = digest_for(&c);
            let a = BuiltinAnalyst.triage(&d);
            assert_eq!(a, BuiltinAnalyst.triage(&d));
            assert!(a.clone().validate().is_ok(), "{}: {a:?}", c.label);
            assert!(a.summary.contains(&d.service));
        }
    }
}
