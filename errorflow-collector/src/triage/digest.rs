//! The digest: what an analyst sees of an incident. Pure, deterministic and
//! bounded: built from the stored group, its stats, a few recent events and
//! its activity, with every list capped and every string truncated, so a
//! prompt never grows with the incident.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Duration, Utc};
use errorflow_sdk::protocol::{Event, Frame};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::result::bound;
use crate::model::{Activity, Group, GroupStats, StoredEvent, TagCount};

/// At most this many of an incident's newest events are read.
pub const MAX_EVENTS: usize = 20;
const MAX_EXCEPTIONS: usize = 5;
const MAX_FRAMES: usize = 8;
const MAX_CONTEXT_LINES: usize = 3;
const MAX_BREADCRUMBS: usize = 15;
const MAX_MESSAGES: usize = 10;
const MAX_TAG_VALUES: usize = 5;
const MAX_ACTIVITY: usize = 10;
const TEXT: usize = 300;
const LONG_TEXT: usize = 1000;

/// How an incident's rate moves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Trend {
    /// First seen in the last 24 hours.
    New,
    /// The last hour is well above the incident's own hourly baseline.
    Spiking,
    Steady,
    /// The last hours are well below the baseline, or silent.
    Fading,
}

impl Trend {
    pub fn as_str(self) -> &'static str {
        match self {
            Trend::New => "new",
            Trend::Spiking => "spiking",
            Trend::Steady => "steady",
            Trend::Fading => "fading",
        }
    }
}

/// Everything an analyst is told about one incident.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Digest {
    pub group_id: i64,
    pub project_id: i64,
    pub cluster_key: String,
    pub title: String,
    pub culprit: Option<String>,
    pub service: String,
    pub error_type: String,
    pub level: String,
    pub status: String,
    pub generated_at: DateTime<Utc>,
    pub first_seen: DateTime<Utc>,
    pub last_seen: DateTime<Utc>,
    pub counts: Counts,
    pub trend: Trend,
    pub regression_count: i64,
    pub regressed_at: Option<DateTime<Utc>>,
    /// Regressed in the last 24 hours.
    pub regressed_recently: bool,
    /// The environment of the last event, or the most frequent one.
    pub environment: Option<String>,
    /// The release of the last event.
    pub release: Option<String>,
    pub affected: Affected,
    /// The latest event's exception chain, outermost first.
    pub exceptions: Vec<DigestException>,
    /// Distinct messages of the recent events with variable parts replaced
    /// by placeholders, most frequent first.
    pub messages: Vec<MessageCount>,
    /// The latest event's breadcrumbs, oldest first (the last few).
    pub breadcrumbs: Vec<DigestBreadcrumb>,
    pub request: Option<DigestRequest>,
    /// The incident's latest lifecycle changes, oldest first.
    pub activity: Vec<DigestActivity>,
    /// How many recent events the digest was built from.
    pub sampled_events: usize,
    /// The built-in signal model's reading (class, evidence, priority and
    /// the signals behind it), attached by the triage service so that every
    /// analyst starts from the same signals.
    pub assessment: Option<super::result::Assessment>,
    /// The commits that last changed the innermost in-app frames' lines,
    /// newest first, none made after the incident was first seen. Filled
    /// only by the root-cause analysis, which reads the repository.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub suspect_commits: Vec<DigestCommit>,
}

/// A suspect commit as an analyst sees it. Its message is the
/// repository's text, data like every other field of the digest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct DigestCommit {
    pub sha: String,
    pub author: String,
    pub date: String,
    pub message: String,
    pub path: String,
    pub line: u32,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Counts {
    pub total: i64,
    /// Events in the current hour.
    pub last_hour: i64,
    pub last_24h: i64,
    /// Mean events per hour over the 23 hours before the current one.
    pub hourly_baseline: f64,
    /// `last_hour / max(hourly_baseline, 1)`.
    pub ratio_to_baseline: f64,
    /// Events in the 14 days ending today.
    pub last_14d: i64,
}

/// Who and what is affected, from the incident's top tag values.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema, Default)]
pub struct Affected {
    pub services: Vec<TagCount>,
    pub environments: Vec<TagCount>,
    pub releases: Vec<TagCount>,
    pub paths: Vec<TagCount>,
    pub hosts: Vec<TagCount>,
    /// Distinct users among the sampled events (ids or names, not emails).
    pub users: Vec<String>,
    /// How many distinct users the sampled events name.
    pub user_count: usize,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct DigestException {
    #[serde(rename = "type")]
    pub ty: String,
    pub value: String,
    pub module: Option<String>,
    pub mechanism: Option<String>,
    pub handled: Option<bool>,
    /// Top in-app frames, innermost first (all frames when none is marked in-app).
    pub frames: Vec<DigestFrame>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct DigestFrame {
    pub function: Option<String>,
    pub location: Option<String>,
    pub lineno: Option<u32>,
    pub in_app: bool,
    /// The source line and a little context, when the SDK sent it.
    pub context: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct MessageCount {
    pub message: String,
    pub count: usize,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct DigestBreadcrumb {
    pub timestamp: Option<DateTime<Utc>>,
    pub category: Option<String>,
    pub level: String,
    pub message: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct DigestRequest {
    pub method: Option<String>,
    /// The route template when known, else the URL without its query string.
    pub route: Option<String>,
    pub status: Option<u16>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct DigestActivity {
    pub kind: String,
    pub at: DateTime<Utc>,
}

/// Builds the digest. `events` are the incident's newest events, newest
/// first (only the first [`MAX_EVENTS`] are read); `activity` is oldest first.
pub fn build(
    group: &Group,
    stats: &GroupStats,
    events: &[StoredEvent],
    activity: &[Activity],
    now: DateTime<Utc>,
) -> Digest {
    let events = &events[..events.len().min(MAX_EVENTS)];
    let parsed: Vec<Event> = events
        .iter()
        .filter_map(|e| serde_json::from_value(e.data.clone()).ok())
        .collect();
    let latest = parsed.first();

    let counts = counts(group, stats);
    let trend = trend(group, stats, &counts, now);
    let regressed_recently = group
        .regressed_at
        .is_some_and(|at| now - at <= Duration::hours(24));

    let tag = |key: &str| -> Vec<TagCount> {
        stats
            .top_tags
            .get(key)
            .map(|v| {
                v.iter()
                    .take(MAX_TAG_VALUES)
                    .map(|t| TagCount {
                        value: bound(&t.value, TEXT),
                        count: t.count,
                    })
                    .collect()
            })
            .unwrap_or_default()
    };
    let mut affected = Affected {
        services: tag("service"),
        environments: tag("environment"),
        releases: tag("release"),
        paths: tag("path"),
        hosts: tag("host"),
        ..Affected::default()
    };
    if affected.services.is_empty() {
        affected.services = vec![TagCount {
            value: bound(&group.service, TEXT),
            count: group.count,
        }];
    }
    // Users named by the sampled events, and by a `user` tag when clients set one.
    let mut users: BTreeSet<String> = parsed
        .iter()
        .filter_map(|e| e.user.as_ref())
        .filter_map(|u| u.id.clone().or_else(|| u.username.clone()))
        .map(|u| bound(&u, 100))
        .collect();
    if let Some(tagged) = stats.top_tags.get("user") {
        users.extend(tagged.iter().map(|t| bound(&t.value, 100)));
    }
    affected.user_count = users.len();
    affected.users = users.into_iter().take(MAX_TAG_VALUES).collect();

    let environment = group
        .last_environment
        .clone()
        .or_else(|| affected.environments.first().map(|t| t.value.clone()));

    Digest {
        group_id: group.id,
        project_id: group.project_id,
        cluster_key: bound(&group.cluster_key, TEXT),
        title: bound(&group.title, TEXT),
        culprit: group.culprit.as_deref().map(|c| bound(c, TEXT)),
        service: bound(&group.service, TEXT),
        error_type: bound(&group.error_type, TEXT),
        level: group.level.clone(),
        status: group.status.to_string(),
        generated_at: now,
        first_seen: group.first_seen,
        last_seen: group.last_seen,
        counts,
        trend,
        regression_count: group.regression_count,
        regressed_at: group.regressed_at,
        regressed_recently,
        environment,
        release: group.last_release.as_deref().map(|r| bound(r, 100)),
        affected,
        exceptions: latest.map(exceptions).unwrap_or_default(),
        messages: messages(events),
        breadcrumbs: latest.map(breadcrumbs).unwrap_or_default(),
        request: latest
            .and_then(|e| e.request.as_ref())
            .map(|r| DigestRequest {
                method: r.method.clone(),
                route: r
                    .route
                    .clone()
                    .or_else(|| {
                        r.url
                            .as_deref()
                            .map(|u| u.split('?').next().unwrap_or(u).to_string())
                    })
                    .map(|s| bound(&s, TEXT)),
                // SDKs that do not fill the request's status often tag it.
                status: r.status.or_else(|| latest.and_then(status_tag)),
            }),
        activity: activity
            .iter()
            .rev()
            .take(MAX_ACTIVITY)
            .rev()
            .map(|a| DigestActivity {
                kind: a.kind.clone(),
                at: a.at,
            })
            .collect(),
        sampled_events: events.len(),
        assessment: None,
        suspect_commits: Vec::new(),
    }
}

/// The answer's status from the usual tags (`http.status_code`, `status_code`, `status`).
fn status_tag(event: &Event) -> Option<u16> {
    ["http.status_code", "status_code", "status"]
        .iter()
        .find_map(|k| event.tags.get(*k))
        .and_then(|v| v.trim().parse().ok())
        .filter(|s| (100..=599).contains(s))
}

fn counts(group: &Group, stats: &GroupStats) -> Counts {
    let hourly: Vec<i64> = stats.hourly.iter().map(|b| b.count).collect();
    let last_hour = hourly.last().copied().unwrap_or(0);
    let last_24h: i64 = hourly.iter().sum();
    let before = &hourly[..hourly.len().saturating_sub(1)];
    let hourly_baseline = if before.is_empty() {
        0.0
    } else {
        before.iter().sum::<i64>() as f64 / before.len() as f64
    };
    Counts {
        total: group.count,
        last_hour,
        last_24h,
        hourly_baseline: round2(hourly_baseline),
        ratio_to_baseline: round2(last_hour as f64 / hourly_baseline.max(1.0)),
        last_14d: stats.daily.iter().map(|b| b.count).sum(),
    }
}

fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

/// The trend rule, in one place:
/// new (first seen < 24 h ago) → spiking (≥ 5 events this hour and ≥ 3× the
/// baseline) → fading (nothing in the last 3 hours, or their mean below half
/// the baseline) → steady.
pub fn trend(group: &Group, stats: &GroupStats, counts: &Counts, now: DateTime<Utc>) -> Trend {
    if now - group.first_seen < Duration::hours(24) {
        return Trend::New;
    }
    if counts.last_hour >= 5 && counts.last_hour as f64 >= 3.0 * counts.hourly_baseline.max(1.0) {
        return Trend::Spiking;
    }
    let recent: Vec<i64> = stats.hourly.iter().rev().take(3).map(|b| b.count).collect();
    let recent_sum: i64 = recent.iter().sum();
    let recent_mean = recent_sum as f64 / recent.len().max(1) as f64;
    if recent_sum == 0
        || (counts.hourly_baseline > 0.0 && recent_mean < 0.5 * counts.hourly_baseline)
    {
        return Trend::Fading;
    }
    Trend::Steady
}

fn exceptions(event: &Event) -> Vec<DigestException> {
    let mut chain: Vec<DigestException> = event
        .exception
        .iter()
        .take(MAX_EXCEPTIONS)
        .map(|e| DigestException {
            ty: bound(&e.ty, TEXT),
            value: bound(&e.value, LONG_TEXT),
            module: e.module.as_deref().map(|m| bound(m, TEXT)),
            mechanism: e.mechanism.clone(),
            handled: e.handled,
            frames: e
                .stacktrace
                .as_ref()
                .or(event.stacktrace.as_ref())
                .map(|s| top_frames(&s.frames))
                .unwrap_or_default(),
        })
        .collect();
    if chain.is_empty() {
        if let Some(st) = &event.stacktrace {
            chain.push(DigestException {
                ty: "Message".into(),
                value: bound(event.message.as_deref().unwrap_or(""), LONG_TEXT),
                module: None,
                mechanism: None,
                handled: None,
                frames: top_frames(&st.frames),
            });
        }
    }
    chain
}

/// Frames are stored innermost last (as Sentry); the digest lists the
/// innermost in-app frames first, since that is where to look.
fn top_frames(frames: &[Frame]) -> Vec<DigestFrame> {
    let any_in_app = frames.iter().any(|f| f.in_app == Some(true));
    frames
        .iter()
        .rev()
        .filter(|f| !any_in_app || f.in_app == Some(true))
        .take(MAX_FRAMES)
        .map(|f| {
            let mut context: Vec<String> = Vec::new();
            if let Some(line) = &f.context_line {
                let pre = f.pre_context.iter().rev().take(1).rev();
                let post = f.post_context.iter().take(1);
                context.extend(pre.map(|l| bound(l, TEXT)));
                context.push(bound(line, TEXT));
                context.extend(post.map(|l| bound(l, TEXT)));
                context.truncate(MAX_CONTEXT_LINES);
            }
            DigestFrame {
                function: f.function.as_deref().map(|s| bound(s, TEXT)),
                location: f
                    .filename
                    .as_deref()
                    .or(f.abs_path.as_deref())
                    .or(f.module.as_deref())
                    .map(|s| bound(s, TEXT)),
                lineno: f.lineno,
                in_app: f.in_app == Some(true),
                context,
            }
        })
        .collect()
}

fn messages(events: &[StoredEvent]) -> Vec<MessageCount> {
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    for e in events {
        *counts
            .entry(bound(&crate::pipeline::parameterize(&e.message), LONG_TEXT))
            .or_default() += 1;
    }
    let mut v: Vec<MessageCount> = counts
        .into_iter()
        .map(|(message, count)| MessageCount { message, count })
        .collect();
    // Most frequent first; ties by text, so the order is deterministic.
    v.sort_by(|a, b| {
        b.count
            .cmp(&a.count)
            .then_with(|| a.message.cmp(&b.message))
    });
    v.truncate(MAX_MESSAGES);
    v
}

fn breadcrumbs(event: &Event) -> Vec<DigestBreadcrumb> {
    let n = event.breadcrumbs.len();
    event.breadcrumbs[n.saturating_sub(MAX_BREADCRUMBS)..]
        .iter()
        .map(|b| DigestBreadcrumb {
            timestamp: b.timestamp,
            category: b.category.as_deref().map(|s| bound(s, 100)),
            level: b.level.as_str().to_string(),
            message: b.message.as_deref().map(|s| bound(s, TEXT)),
        })
        .collect()
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::model::{Bucket, GroupStatus};
    use chrono::TimeZone;
    use serde_json::json;

    pub fn now() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, 27, 12, 30, 0).unwrap()
    }

    pub fn group() -> Group {
        Group {
            id: 7,
            project_id: 1,
            cluster_key: "checkout:DatabaseError".into(),
            fingerprint: "f".into(),
            fingerprint_version: 1,
            service: "checkout".into(),
            error_type: "DatabaseError".into(),
            title: "DatabaseError: connection refused".into(),
            culprit: Some("checkout::db::pool".into()),
            level: "error".into(),
            status: GroupStatus::Open,
            count: 100,
            first_seen: now() - Duration::days(3),
            last_seen: now(),
            severity: "unknown".into(),
            priority: None,
            summary: None,
            ai_summary: None,
            ai_next_steps: None,
            resolution_reason: None,
            resolved_at: None,
            resolved_in_release: None,
            regression_count: 0,
            regressed_at: None,
            last_release: Some("1.2.3".into()),
            last_environment: Some("prod".into()),
            priority_override: None,
            severity_override: None,
        }
    }

    /// Stats with `hourly` counts (oldest first, padded to 24 with `fill`).
    pub fn stats(fill: i64, last: &[i64], tags: &[(&str, &[(&str, i64)])]) -> GroupStats {
        let mut counts = vec![fill; 24 - last.len()];
        counts.extend_from_slice(last);
        let start = now() - Duration::hours(23);
        GroupStats {
            hourly: counts
                .iter()
                .enumerate()
                .map(|(i, c)| Bucket {
                    start: start + Duration::hours(i as i64),
                    count: *c,
                })
                .collect(),
            daily: vec![Bucket {
                start: now(),
                count: counts.iter().sum(),
            }],
            top_tags: tags
                .iter()
                .map(|(k, vs)| {
                    (
                        k.to_string(),
                        vs.iter()
                            .map(|(v, c)| TagCount {
                                value: v.to_string(),
                                count: *c,
                            })
                            .collect(),
                    )
                })
                .collect(),
        }
    }

    pub fn event(id: i64, message: &str, data: serde_json::Value) -> StoredEvent {
        StoredEvent {
            id,
            project_id: 1,
            group_id: 7,
            event_id: uuid::Uuid::from_u128(id as u128),
            timestamp: now(),
            received_at: now(),
            level: "error".into(),
            service: "checkout".into(),
            error_type: "DatabaseError".into(),
            message: message.into(),
            env: "prod".into(),
            path: "/pay".into(),
            trace_id: "t".into(),
            release: None,
            host: None,
            data,
        }
    }

    fn rich_event() -> serde_json::Value {
        json!({
            "event_id": "00000000-0000-0000-0000-000000000001",
            "level": "error",
            "message": "DatabaseError: connection refused",
            "exception": [{
                "type": "DatabaseError", "value": "connection refused (os error 111)",
                "mechanism": "tracing", "handled": true,
                "stacktrace": {"frames": [
                    {"function": "tokio::runtime::run", "in_app": false},
                    {"function": "checkout::pay", "filename": "src/pay.rs", "lineno": 40, "in_app": true},
                    {"function": "checkout::db::pool", "filename": "src/db.rs", "lineno": 12, "in_app": true,
                     "pre_context": ["let url = cfg.url;"], "context_line": "let conn = pool.get().await?;", "post_context": ["Ok(conn)"]}
                ]}
            }],
            "breadcrumbs": (0..30).map(|i| json!({"category": "http", "level": "info", "message": format!("GET /item/{i}")})).collect::<Vec<_>>(),
            "request": {"method": "POST", "url": "https://shop/pay?card=secret", "status": 500},
            "user": {"id": "u1", "email": "a@b.c"}
        })
    }

    #[test]
    fn digest_has_chain_frames_context_and_bounded_breadcrumbs() {
        let events = vec![
            event(3, "connection refused to 10.0.0.1:5432", rich_event()),
            event(
                2,
                "connection refused to 10.0.0.2:5432",
                json!({"event_id": "00000000-0000-0000-0000-000000000002", "user": {"id": "u2"}}),
            ),
            event(1, "pool timed out after 30s", json!({})),
        ];
        let d = build(
            &group(),
            &stats(
                1,
                &[1, 1, 2],
                &[("environment", &[("prod", 90), ("staging", 10)])],
            ),
            &events,
            &[],
            now(),
        );
        assert_eq!(d.exceptions.len(), 1);
        let frames = &d.exceptions[0].frames;
        assert_eq!(frames.len(), 2, "only in-app frames");
        assert_eq!(frames[0].function.as_deref(), Some("checkout::db::pool"));
        assert_eq!(frames[0].context.len(), 3);
        assert_eq!(d.breadcrumbs.len(), MAX_BREADCRUMBS);
        assert_eq!(
            d.breadcrumbs.last().unwrap().message.as_deref(),
            Some("GET /item/29")
        );
        assert_eq!(
            d.request.as_ref().unwrap().route.as_deref(),
            Some("https://shop/pay")
        );
        // The two addresses differ only in numbers: one parameterised message.
        assert_eq!(d.messages.len(), 2);
        assert_eq!(d.messages[0].count, 2);
        assert!(
            !d.messages[0].message.contains("10.0.0"),
            "{:?}",
            d.messages
        );
        assert_eq!(d.affected.user_count, 2);
        assert_eq!(d.affected.environments[0].value, "prod");
        assert_eq!(d.environment.as_deref(), Some("prod"));
        assert_eq!(d.sampled_events, 3);
        // Emails are not copied into the digest.
        assert!(!serde_json::to_string(&d).unwrap().contains("a@b.c"));
    }

    #[test]
    fn digest_is_deterministic_and_bounded() {
        let huge = "x".repeat(100_000);
        let events: Vec<StoredEvent> = (0..100)
            .map(|i| event(i, &format!("{huge} {i}"), json!({})))
            .collect();
        let s = stats(0, &[], &[]);
        let a = build(&group(), &s, &events, &[], now());
        let b = build(&group(), &s, &events, &[], now());
        assert_eq!(a, b);
        assert_eq!(a.sampled_events, MAX_EVENTS);
        assert!(serde_json::to_string(&a).unwrap().len() < 20_000);
    }

    #[test]
    fn trends() {
        let g = group();
        let t = |s: GroupStats| build(&g, &s, &[], &[], now()).trend;
        assert_eq!(t(stats(2, &[2, 2, 30], &[])), Trend::Spiking);
        assert_eq!(t(stats(2, &[2, 3, 2], &[])), Trend::Steady);
        assert_eq!(t(stats(10, &[0, 0, 0], &[])), Trend::Fading);
        assert_eq!(t(stats(10, &[2, 1, 2], &[])), Trend::Fading);
        let mut young = group();
        young.first_seen = now() - Duration::hours(2);
        assert_eq!(
            build(&young, &stats(0, &[50], &[]), &[], &[], now()).trend,
            Trend::New
        );
    }
}
