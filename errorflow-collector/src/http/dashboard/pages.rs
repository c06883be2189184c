//! Dashboard handlers: each loads what its page needs from the store (in
//! parallel where it can), turns it into a view with `views`, and renders
//! a template.

use std::collections::HashMap;
use std::time::Instant;

use askama::Template;
use axum::extract::{Path, Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::Json;
use chrono::{DateTime, Utc};
use errorflow_sdk::protocol::{self, Event};
use serde::Deserialize;
use uuid::Uuid;

use super::auth;
use super::views::{self, Rel};
use super::{render, CsrfForm, CurrentUser, DashError, Layout, PlainForm};
use crate::credentials;
use crate::http::AppState;
use crate::model::{
    EventQuery, GroupCounts, GroupQuery, GroupSort, GroupStatus, InsertOutcome, Project,
    StoredEvent, Transition,
};
use crate::pipeline::{self, Context};

type Page = Result<Response, DashError>;

/// An option of a `<select>`.
pub struct Opt {
    pub value: String,
    pub label: String,
    pub selected: bool,
}

fn opts(items: &[(&str, &str)], current: &str) -> Vec<Opt> {
    items
        .iter()
        .map(|(v, l)| Opt {
            value: v.to_string(),
            label: l.to_string(),
            selected: *v == current,
        })
        .collect()
}

fn project_opts(projects: &[Project], current: Option<i64>) -> Vec<Opt> {
    projects
        .iter()
        .map(|p| Opt {
            value: p.id.to_string(),
            label: p.name.clone(),
            selected: Some(p.id) == current,
        })
        .collect()
}

// ---------------------------------------------------------------- list

/// Query parameters of the incident list (also of `/poll`). Unknown values
/// fall back to defaults instead of failing: this is a page for people.
#[derive(Debug, Default, Deserialize, Clone)]
pub struct ListParams {
    #[serde(default)]
    pub status: String,
    #[serde(default)]
    pub project: String,
    #[serde(default)]
    pub service: String,
    #[serde(default)]
    pub environment: String,
    #[serde(default)]
    pub release: String,
    #[serde(default)]
    pub severity: String,
    #[serde(default)]
    pub q: String,
    #[serde(default)]
    pub sort: String,
    #[serde(default)]
    pub cursor: String,
    #[serde(default)]
    pub notice: String,
}

const SEVERITIES: [(&str, &str); 5] = [
    ("critical", "Critical"),
    ("high", "High"),
    ("medium", "Medium"),
    ("low", "Low"),
    ("unknown", "Unknown"),
];
const SORTS: [(&str, &str); 4] = [
    ("last_seen", "Last seen"),
    ("first_seen", "First seen"),
    ("count", "Most events"),
    ("priority", "Priority"),
];
/// Incidents per page.
pub const PAGE_SIZE: u32 = 50;

impl ListParams {
    fn status(&self) -> Option<GroupStatus> {
        match self.status.as_str() {
            "all" => None,
            "" => Some(GroupStatus::Open),
            s => GroupStatus::parse(s).or(Some(GroupStatus::Open)),
        }
    }

    fn status_key(&self) -> &'static str {
        match self.status() {
            None => "all",
            Some(s) => views::status_label(s),
        }
    }

    fn project_id(&self) -> Option<i64> {
        self.project.parse().ok()
    }

    fn query(&self) -> GroupQuery {
        let text = |s: &str| Some(s.trim().to_string()).filter(|s| !s.is_empty());
        GroupQuery {
            project_id: self.project_id(),
            status: self.status(),
            service: text(&self.service),
            environment: text(&self.environment),
            release: text(&self.release),
            severity: text(&self.severity).filter(|s| SEVERITIES.iter().any(|(v, _)| v == s)),
            q: text(&self.q),
            sort: match self.sort.as_str() {
                "first_seen" => GroupSort::FirstSeen,
                "count" => GroupSort::Count,
                "priority" => GroupSort::Priority,
                _ => GroupSort::LastSeen,
            },
            limit: PAGE_SIZE,
            cursor: text(&self.cursor),
        }
    }

    /// The list's URL with these filters, another status and cursor.
    fn href(&self, status: &str, cursor: &str) -> String {
        let path = format!(
            "/{}",
            views::query_string(&[
                ("status", status),
                ("project", &self.project),
                ("service", &self.service),
                ("environment", &self.environment),
                ("release", &self.release),
                ("severity", &self.severity),
                ("q", &self.q),
                ("sort", &self.sort),
                ("cursor", cursor),
            ])
        );
        path
    }
}

pub struct Tab {
    pub key: &'static str,
    pub label: &'static str,
    pub count: i64,
    pub href: String,
    pub active: bool,
}

pub struct Row {
    pub id: i64,
    pub title: String,
    pub culprit: Option<String>,
    pub cluster_key: String,
    pub status: &'static str,
    pub severity: String,
    pub severity_class: &'static str,
    pub regressed: bool,
    pub count: i64,
    pub first_seen: Rel,
    pub last_seen: Rel,
    pub spark: String,
    pub ai_line: Option<String>,
    /// The incident's GitHub issue, when it has one.
    pub github_issue: Option<crate::model::GithubIssue>,
}

#[derive(Template)]
#[template(path = "dashboard/list.html")]
pub struct ListPage {
    pub l: Layout,
    pub f: ListParams,
    pub tabs: Vec<Tab>,
    pub counts: GroupCounts,
    pub projects: Vec<Opt>,
    pub severities: Vec<Opt>,
    pub sorts: Vec<Opt>,
    pub rows: Vec<Row>,
    pub next_href: Option<String>,
    pub first_href: String,
    pub self_href: String,
    pub poll_href: String,
    /// RFC 3339 last-seen time of the most recent incident in the view.
    pub newest: String,
}

pub async fn list(
    State(state): State<AppState>,
    user: CurrentUser,
    Query(p): Query<ListParams>,
) -> Page {
    let now = Utc::now();
    let query = p.query();
    let (page, counts, projects) = tokio::try_join!(
        state.store.list_groups(&query),
        state.store.count_groups(&query),
        state.store.list_projects(),
    )?;
    let ids: Vec<i64> = page.groups.iter().map(|g| g.id).collect();
    let (hourly, mut issues) = if ids.is_empty() {
        (HashMap::new(), HashMap::new())
    } else {
        tokio::try_join!(
            state.store.hourly_counts(&ids, now),
            state.store.github_issues(&ids)
        )?
    };
    let status = p.status_key();
    let rows = page
        .groups
        .iter()
        .map(|g| Row {
            id: g.id,
            title: g.title.clone(),
            culprit: g.culprit.clone().filter(|c| !c.is_empty()),
            cluster_key: g.cluster_key.clone(),
            status: views::status_label(g.status),
            severity: g.severity.clone(),
            severity_class: views::severity_class(&g.severity),
            regressed: g.regression_count > 0 && g.status == GroupStatus::Open,
            count: g.count,
            first_seen: views::rel(g.first_seen, now),
            last_seen: views::rel(g.last_seen, now),
            spark: views::sparkline(hourly.get(&g.id).map(Vec::as_slice).unwrap_or(&[0; 24])),
            ai_line: views::ai_summary(g.ai_summary.as_deref(), None)
                .map(|ai| views::first_line(&ai.summary, 160))
                .filter(|s| !s.is_empty()),
            github_issue: issues.remove(&g.id),
        })
        .collect();
    let tabs = [
        ("open", "Open", counts.open),
        ("quiet", "Quiet", counts.quiet),
        ("resolved", "Resolved", counts.resolved),
        ("all", "All", counts.all()),
    ]
    .into_iter()
    .map(|(key, label, count)| Tab {
        key,
        label,
        count,
        href: p.href(key, ""),
        active: key == status,
    })
    .collect();
    let newest = page
        .groups
        .iter()
        .map(|g| g.last_seen)
        .max()
        .map(|t| views::rel(t, now).iso)
        .unwrap_or_default();
    let mut l = user.layout("Incidents", "incidents");
    l.notice = super::notice(Some(&p.notice));
    let self_href = p.href(status, &p.cursor);
    let poll_href = format!("/poll{}", p.href(status, "").trim_start_matches('/'));
    let page_view = ListPage {
        l,
        tabs,
        counts,
        projects: project_opts(&projects, p.project_id()),
        severities: opts(&SEVERITIES, &p.severity),
        sorts: opts(
            &SORTS,
            if p.sort.is_empty() {
                "last_seen"
            } else {
                &p.sort
            },
        ),
        rows,
        next_href: page.next_cursor.as_deref().map(|c| p.href(status, c)),
        first_href: p.href(status, ""),
        self_href,
        poll_href,
        newest,
        f: ListParams {
            status: status.to_string(),
            ..p
        },
    };
    Ok(render(&page_view))
}

/// `GET /poll`: the list's counts and newest last-seen time, for the
/// page's script to tell that something changed without reloading.
pub async fn poll(
    State(state): State<AppState>,
    _user: CurrentUser,
    Query(p): Query<ListParams>,
) -> Result<Response, DashError> {
    let mut query = p.query();
    query.limit = 1;
    query.cursor = None;
    query.sort = GroupSort::LastSeen;
    let (counts, newest) = tokio::try_join!(
        state.store.count_groups(&query),
        state.store.list_groups(&query)
    )?;
    let newest = newest
        .groups
        .first()
        .map(|g| views::rel(g.last_seen, Utc::now()).iso)
        .unwrap_or_default();
    Ok(Json(serde_json::json!({
        "open": counts.open,
        "quiet": counts.quiet,
        "resolved": counts.resolved,
        "all": counts.all(),
        "newest": newest,
    }))
    .into_response())
}

// ---------------------------------------------------------------- detail

#[derive(Debug, Default, Deserialize)]
pub struct DetailParams {
    #[serde(default)]
    pub event: String,
    #[serde(default)]
    pub notice: String,
    /// Why opening the GitHub issue failed (a code; the page shows a fixed text).
    #[serde(default)]
    pub github_error: String,
}

pub struct CtxLine {
    pub no: String,
    pub text: String,
    pub current: bool,
}

pub struct FrameView {
    pub function: String,
    pub location: String,
    pub in_app: bool,
    pub context: Vec<CtxLine>,
    /// Native code: the binary's file name and the addresses, when sent
    /// (`libgame.so · 0x1dc3c0faec`); the full path is `package_path`.
    pub native: String,
    pub package_path: String,
}

/// One thread of the event (Sentry's `threads`).
pub struct ThreadView {
    pub name: String,
    pub crashed: bool,
    pub current: bool,
    /// Innermost first.
    pub frames: Vec<FrameView>,
}

/// A value shown on the page, with what the SDK or a relay did to it
/// (`_meta`), when anything.
pub struct Field {
    pub key: String,
    pub value: String,
    pub note: String,
}

pub struct ExceptionView {
    pub ty: String,
    pub value: String,
    pub mechanism: String,
    pub unhandled: bool,
    /// Innermost (the frame that raised) first.
    pub frames: Vec<FrameView>,
}

pub struct CrumbView {
    pub time: String,
    pub category: String,
    pub level: String,
    pub message: String,
}

pub struct EventView {
    pub event_id: String,
    pub time: Rel,
    pub message: String,
    pub service: String,
    pub env: String,
    pub release: Option<String>,
    pub host: Option<String>,
    pub path: String,
    pub trace_id: String,
    pub exceptions: Vec<ExceptionView>,
    pub breadcrumbs: Vec<CrumbView>,
    pub request: Vec<Field>,
    pub user: Vec<Field>,
    pub tags: Vec<Field>,
    pub threads: Vec<ThreadView>,
    /// What `_meta` says of the message, when anything.
    pub message_note: String,
    /// Every annotation of `_meta`: the value's path and what was done.
    pub scrubbed: Vec<(String, String)>,
    pub raw: String,
}

pub struct EventRow {
    pub href: String,
    pub time: Rel,
    pub message: String,
    pub env: String,
    pub release: String,
    pub current: bool,
}

pub struct TagValueView {
    pub value: String,
    pub count: i64,
}

pub struct TagView {
    pub key: String,
    pub total: i64,
    pub values: Vec<TagValueView>,
}

pub struct ActivityView {
    pub kind: String,
    pub actor: String,
    pub at: Rel,
    pub change: String,
    pub reason: Option<String>,
}

#[derive(Template)]
#[template(path = "dashboard/detail.html")]
pub struct DetailPage {
    pub l: Layout,
    pub g: crate::model::Group,
    pub status: &'static str,
    pub severity_class: &'static str,
    pub first_seen: Rel,
    pub last_seen: Rel,
    pub link: String,
    pub summarize: bool,
    pub ai: Option<views::AiSummary>,
    pub ai_severity_class: &'static str,
    /// Who wrote the summary: "rules" for the built-in analyst, else the model's name.
    pub ai_label: String,
    /// The signals behind the latest triage's priority, as one line.
    pub explanation: String,
    /// Live counts shown beside the summary (never frozen into its text).
    pub live_last_24h: i64,
    pub priority_value: String,
    pub severity_choice: &'static str,
    pub overridden: bool,
    pub hourly_svg: String,
    pub daily_svg: String,
    pub event: Option<EventView>,
    pub newer_href: Option<String>,
    pub older_href: Option<String>,
    pub events: Vec<EventRow>,
    pub tags: Vec<TagView>,
    pub activity: Vec<ActivityView>,
    /// "Kestra run failed at task store: …" when the incident's latest
    /// Kestra run failed.
    pub kestra_failure: Option<String>,
    pub gh: super::github::GithubPanel,
}

pub async fn detail(
    State(state): State<AppState>,
    user: CurrentUser,
    Path(id): Path<String>,
    Query(p): Query<DetailParams>,
) -> Page {
    let id: i64 = id
        .parse()
        .map_err(|_| DashError::NotFound("There is no such incident.".into()))?;
    let now = Utc::now();
    let group = state
        .store
        .get_group(id)
        .await?
        .ok_or_else(|| DashError::NotFound(format!("There is no incident #{id}.")))?;
    let recent_query = EventQuery {
        group_id: Some(id),
        limit: 20,
        ..EventQuery::default()
    };
    let (stats, activity, recent, kestra_runs, latest) = tokio::try_join!(
        state.store.group_stats(id, now),
        state.store.activity(id),
        state.store.list_events(&recent_query),
        state.store.kestra_runs(id, 1),
        state.store.triage_history(id, 1),
    )?;
    let kestra_failure = kestra_runs
        .first()
        .filter(|r| r.failed())
        .map(views::kestra_failure);
    let latest = latest.into_iter().next();
    let wanted = Uuid::parse_str(p.event.trim()).ok();
    let current: Option<StoredEvent> = match wanted {
        Some(eid) => match recent.events.iter().find(|e| e.event_id == eid) {
            Some(e) => Some(e.clone()),
            // An id of another incident (or none stored) shows the newest event instead.
            None => state
                .store
                .get_event(eid)
                .await?
                .filter(|e| e.group_id == id)
                .or_else(|| recent.events.first().cloned()),
        },
        None => recent.events.first().cloned(),
    };
    let href = |eid: Uuid| format!("/incidents/{id}?event={}", eid.simple());
    let (newer_href, older_href) = match &current {
        Some(e) => {
            let n = state.store.event_neighbors(id, e.received_at, e.id).await?;
            (n.newer.map(href), n.older.map(href))
        }
        None => (None, None),
    };
    let events = recent
        .events
        .iter()
        .map(|e| EventRow {
            href: href(e.event_id),
            time: views::rel(e.timestamp, now),
            message: views::first_line(&e.message, 200),
            env: e.env.clone(),
            release: e.release.clone().unwrap_or_default(),
            current: current.as_ref().is_some_and(|c| c.id == e.id),
        })
        .collect();
    let tags = stats
        .top_tags
        .iter()
        .map(|(key, values)| TagView {
            key: key.clone(),
            total: values.iter().map(|v| v.count).sum::<i64>().max(1),
            values: values
                .iter()
                .map(|v| TagValueView {
                    value: v.value.clone(),
                    count: v.count,
                })
                .collect(),
        })
        .collect();
    let activity = activity
        .iter()
        .rev()
        .map(|a| ActivityView {
            kind: a.kind.clone(),
            actor: a.actor.clone(),
            at: views::rel(a.at, now),
            change: match (a.from_status, a.to_status) {
                (Some(f), Some(t)) if f != t => format!("{f} → {t}"),
                (None, Some(t)) => format!("→ {t}"),
                _ => String::new(),
            },
            reason: a.reason.clone().filter(|r| !r.is_empty()),
        })
        .collect();
    let ai = views::ai_summary(group.ai_summary.as_deref(), group.ai_next_steps.as_deref());
    let gh = super::github::GithubPanel::of(&state, &group, &p.github_error).await?;
    let mut l = user.layout(group.title.clone(), "incidents");
    l.notice = super::notice(Some(&p.notice));
    let page = DetailPage {
        l,
        status: views::status_label(group.status),
        severity_class: views::severity_class(&group.severity),
        first_seen: views::rel(group.first_seen, now),
        last_seen: views::rel(group.last_seen, now),
        link: format!("{}/incidents/{id}", state.public_url),
        summarize: true,
        ai_severity_class: views::severity_class(
            ai.as_ref()
                .and_then(|a| a.severity.as_deref())
                .unwrap_or_default(),
        ),
        ai,
        ai_label: latest
            .as_ref()
            .map(|t| views::analyst_label(&t.analyst, &t.model))
            .unwrap_or_else(|| "rules".into()),
        explanation: latest
            .as_ref()
            .map(|t| t.explanation.clone())
            .unwrap_or_default(),
        live_last_24h: stats.hourly.iter().map(|b| b.count).sum(),
        priority_value: group
            .priority_override
            .map(|p| p.to_string())
            .unwrap_or_default(),
        severity_choice: match group.severity_override.as_deref() {
            Some("low") => "low",
            Some("medium") => "medium",
            Some("high") => "high",
            Some("critical") => "critical",
            _ => "",
        },
        overridden: group.priority_override.is_some() || group.severity_override.is_some(),
        hourly_svg: views::bar_chart(&stats.hourly, "%H:00", "events per hour, last 24 hours"),
        daily_svg: views::bar_chart(&stats.daily, "%b %d", "events per day, last 14 days"),
        event: current.as_ref().map(|e| event_view(e, now)),
        newer_href,
        older_href,
        events,
        tags,
        activity,
        kestra_failure,
        gh,
        g: group,
    };
    Ok(render(&page))
}

fn event_view(e: &StoredEvent, now: DateTime<Utc>) -> EventView {
    let raw_event: Option<Event> = serde_json::from_value(e.data.clone()).ok();
    let mut exceptions = Vec::new();
    let mut breadcrumbs = Vec::new();
    let mut request = Vec::new();
    let mut user = Vec::new();
    let mut tags = Vec::new();
    let mut threads = Vec::new();
    let mut scrubbed = Vec::new();
    let mut message_note = String::new();
    if let Some(ev) = &raw_event {
        if let Some(meta) = &ev.meta {
            meta_notes(meta, &mut String::new(), &mut scrubbed);
        }
        let note = |path: &str| {
            scrubbed
                .iter()
                .find(|(p, _)| p == path)
                .map(|(_, n)| n.clone())
                .unwrap_or_default()
        };
        message_note = ["logentry.formatted", "logentry.message", "message"]
            .iter()
            .map(|p| note(p))
            .find(|n| !n.is_empty())
            .unwrap_or_default();
        let field = |section: &str, key: &str, value: String| Field {
            note: note(&format!("{section}.{key}")),
            key: key.to_string(),
            value,
        };
        let mut chain: Vec<&protocol::Exception> = ev.exception.iter().collect();
        if chain.is_empty() {
            if let Some(st) = &ev.stacktrace {
                exceptions.push(ExceptionView {
                    ty: "Stack".into(),
                    value: String::new(),
                    mechanism: String::new(),
                    unhandled: false,
                    frames: frames(st),
                });
            }
        }
        for x in chain.drain(..) {
            exceptions.push(ExceptionView {
                ty: x.ty.clone(),
                value: x.value.clone(),
                mechanism: x.mechanism.clone().unwrap_or_default(),
                unhandled: x.handled == Some(false),
                frames: x.stacktrace.as_ref().map(frames).unwrap_or_default(),
            });
        }
        breadcrumbs = ev
            .breadcrumbs
            .iter()
            .map(|b| CrumbView {
                time: b
                    .timestamp
                    .map(|t| t.format("%H:%M:%S").to_string())
                    .unwrap_or_default(),
                category: b.category.clone().unwrap_or_default(),
                level: b.level.as_str().to_string(),
                message: b.message.clone().unwrap_or_default(),
            })
            .collect();
        if let Some(r) = &ev.request {
            let mut push = |k: &str, meta_key: &str, v: Option<String>| {
                if let Some(v) = v.filter(|v| !v.is_empty()) {
                    let mut f = field("request", meta_key, v);
                    f.key = k.to_string();
                    request.push(f);
                }
            };
            push("method", "method", r.method.clone());
            push("url", "url", r.url.clone());
            push("route", "route", r.route.clone());
            push("query", "query_string", r.query_string.clone());
            push("status", "status", r.status.map(|s| s.to_string()));
            push(
                "latency",
                "latency",
                r.latency_ms.map(|l| format!("{l} ms")),
            );
            push("client ip", "env.REMOTE_ADDR", r.client_ip.clone());
            for (k, v) in &r.headers {
                request.push(field("request.headers", k, v.clone()));
            }
        }
        if let Some(u) = &ev.user {
            for (k, meta_key, v) in [
                ("id", "id", &u.id),
                ("email", "email", &u.email),
                ("username", "username", &u.username),
                ("ip address", "ip_address", &u.ip_address),
            ] {
                if let Some(v) = v {
                    let mut f = field("user", meta_key, v.clone());
                    f.key = k.to_string();
                    user.push(f);
                }
            }
        }
        tags = ev
            .tags
            .iter()
            .map(|(k, v)| field("tags", k, v.clone()))
            .collect();
        threads = ev
            .threads
            .iter()
            .enumerate()
            .map(|(i, t)| ThreadView {
                name: match (&t.name, &t.id) {
                    (Some(name), Some(id)) => format!("{name} ({id})"),
                    (Some(name), None) => name.clone(),
                    (None, Some(id)) => format!("thread {id}"),
                    (None, None) => format!("thread #{}", i + 1),
                },
                crashed: t.crashed == Some(true),
                current: t.current == Some(true),
                frames: t.stacktrace.as_ref().map(frames).unwrap_or_default(),
            })
            .collect();
    }
    EventView {
        event_id: e.event_id.simple().to_string(),
        time: views::rel(e.timestamp, now),
        message: e.message.clone(),
        service: e.service.clone(),
        env: e.env.clone(),
        release: e.release.clone(),
        host: e.host.clone(),
        path: e.path.clone(),
        trace_id: e.trace_id.clone(),
        exceptions,
        breadcrumbs,
        request,
        user,
        tags,
        threads,
        message_note,
        scrubbed,
        raw: serde_json::to_string_pretty(&e.data).unwrap_or_default(),
    }
}

/// The annotations of a `_meta` tree, by the dotted path of the value they
/// describe (`request.headers.Authorization`): Sentry writes them under the
/// key `""` of the value's place, `rem` listing the rules that removed or
/// replaced (part of) it, `len` the original length, `err` processing errors.
fn meta_notes(meta: &serde_json::Value, path: &mut String, out: &mut Vec<(String, String)>) {
    /// Annotations shown; a `_meta` tree is bounded by the event's size, but
    /// a page need not list thousands.
    const MAX_NOTES: usize = 100;
    let Some(map) = meta.as_object() else {
        return;
    };
    for (key, value) in map {
        if out.len() >= MAX_NOTES {
            return;
        }
        if key.is_empty() {
            if let Some(note) = meta_note(value) {
                out.push((path.clone(), note));
            }
            continue;
        }
        let len = path.len();
        if !path.is_empty() {
            path.push('.');
        }
        path.push_str(key);
        meta_notes(value, path, out);
        path.truncate(len);
    }
}

/// `scrubbed by @password (substituted); original length 12`.
fn meta_note(annotation: &serde_json::Value) -> Option<String> {
    let mut parts = Vec::new();
    for rem in annotation
        .get("rem")
        .and_then(|r| r.as_array())
        .into_iter()
        .flatten()
    {
        let rule = rem.get(0).and_then(|r| r.as_str()).unwrap_or("a rule");
        let how = match rem.get(1).and_then(|t| t.as_str()) {
            Some("s") => " (substituted)",
            Some("x") => " (removed)",
            Some("m") => " (masked)",
            Some("p") => " (pseudonymized)",
            Some("e") => " (encrypted)",
            _ => "",
        };
        parts.push(format!("scrubbed by {rule}{how}"));
    }
    for err in annotation
        .get("err")
        .and_then(|e| e.as_array())
        .into_iter()
        .flatten()
    {
        let kind = err
            .as_str()
            .or_else(|| err.get(0).and_then(|k| k.as_str()))
            .unwrap_or("error");
        parts.push(format!("error: {kind}"));
    }
    if let Some(len) = annotation.get("len").and_then(|l| l.as_u64()) {
        parts.push(format!("original length {len}"));
    }
    (!parts.is_empty()).then(|| parts.join("; "))
}

fn frames(st: &protocol::Stacktrace) -> Vec<FrameView> {
    // Stored innermost last; shown innermost first, like a traceback read top-down.
    st.frames
        .iter()
        .rev()
        .map(|f| {
            let function = f
                .function
                .clone()
                .or_else(|| f.module.clone())
                .unwrap_or_else(|| "<unknown>".into());
            let file = f.filename.clone().or_else(|| f.abs_path.clone());
            let location = match (file, f.lineno) {
                (Some(file), Some(line)) => match f.colno {
                    Some(col) => format!("{file}:{line}:{col}"),
                    None => format!("{file}:{line}"),
                },
                (Some(file), None) => file,
                (None, _) => f.module.clone().unwrap_or_default(),
            };
            let mut context = Vec::new();
            if let Some(cur) = &f.context_line {
                let line = f.lineno.unwrap_or(0) as i64;
                let pre = f.pre_context.len() as i64;
                for (i, text) in f.pre_context.iter().enumerate() {
                    context.push(CtxLine {
                        no: number(line - pre + i as i64),
                        text: text.clone(),
                        current: false,
                    });
                }
                context.push(CtxLine {
                    no: number(line),
                    text: cur.clone(),
                    current: true,
                });
                for (i, text) in f.post_context.iter().enumerate() {
                    context.push(CtxLine {
                        no: number(line + 1 + i as i64),
                        text: text.clone(),
                        current: false,
                    });
                }
            }
            let native = [
                f.package
                    .as_deref()
                    .map(|p| crate::pipeline::frames::image_name(p).to_string()),
                f.instruction_addr.clone(),
                f.symbol_addr.clone().map(|a| format!("symbol {a}")),
                f.image_addr.clone().map(|a| format!("image {a}")),
            ]
            .into_iter()
            .flatten()
            .collect::<Vec<_>>()
            .join(" · ");
            FrameView {
                function,
                location,
                in_app: f.in_app == Some(true),
                context,
                native,
                package_path: f.package.clone().unwrap_or_default(),
            }
        })
        .collect()
}

fn number(n: i64) -> String {
    if n > 0 {
        n.to_string()
    } else {
        String::new()
    }
}

// ---------------------------------------------------------------- actions

fn parse_id(id: &str) -> Result<i64, DashError> {
    id.parse()
        .map_err(|_| DashError::NotFound("There is no such incident.".into()))
}

fn reason(form: &CsrfForm) -> Option<String> {
    form.fields
        .get("reason")
        .map(str::trim)
        .filter(|r| !r.is_empty())
        .map(|r| r.chars().take(1000).collect())
}

async fn transition(
    state: &AppState,
    form: &CsrfForm,
    id: i64,
    t: Transition,
    notice: &str,
) -> Page {
    state
        .store
        .transition(id, &t, &form.user.actor(), Utc::now())
        .await?
        .ok_or_else(|| DashError::NotFound(format!("There is no incident #{id}.")))?;
    Ok(Redirect::to(&format!("/incidents/{id}?notice={notice}")).into_response())
}

pub async fn resolve(
    State(state): State<AppState>,
    Path(id): Path<String>,
    form: CsrfForm,
) -> Page {
    let t = Transition::Resolve {
        reason: reason(&form),
        in_next_release: form.fields.get("in_next_release").is_some(),
    };
    transition(&state, &form, parse_id(&id)?, t, "resolved").await
}

pub async fn quiet(State(state): State<AppState>, Path(id): Path<String>, form: CsrfForm) -> Page {
    let t = Transition::Quiet {
        reason: reason(&form),
    };
    transition(&state, &form, parse_id(&id)?, t, "quieted").await
}

pub async fn reopen(State(state): State<AppState>, Path(id): Path<String>, form: CsrfForm) -> Page {
    let t = Transition::Reopen {
        reason: reason(&form),
    };
    transition(&state, &form, parse_id(&id)?, t, "reopened").await
}

/// Deletes the incident and everything stored for it, then shows the list.
pub async fn delete(State(state): State<AppState>, Path(id): Path<String>, form: CsrfForm) -> Page {
    let id = parse_id(&id)?;
    if !state.delete_incident(id, &form.user.actor()).await? {
        return Err(DashError::NotFound(format!("There is no incident #{id}.")));
    }
    Ok(Redirect::to("/?notice=deleted").into_response())
}

/// Asks triage for a summary now (the same as `POST /api/v1/groups/{id}/summarize`).
pub async fn summarize(
    State(state): State<AppState>,
    Path(id): Path<String>,
    form: CsrfForm,
) -> Page {
    let id = parse_id(&id)?;
    let group = state
        .store
        .get_group(id)
        .await?
        .ok_or_else(|| DashError::NotFound(format!("There is no incident #{id}.")))?;
    match state.triage.run(id, crate::triage::Reason::Manual).await {
        // With Kestra configured, its summary flow runs too; its result arrives later.
        Ok(_) => {
            let _ = state
                .triage
                .request_summary_flow(id, &group.cluster_key)
                .await;
        }
        Err(e) => {
            tracing::error!(error = %e, incident = id, "dashboard: triage failed");
            return Err(DashError::Internal);
        }
    }
    tracing::info!(incident = id, user = %form.user.name, "AI summary requested from the dashboard");
    Ok(Redirect::to(&format!("/incidents/{id}?notice=summarize")).into_response())
}

/// Sets (or, with empty fields, clears) the hand-set priority and severity.
pub async fn set_priority(
    State(state): State<AppState>,
    Path(id): Path<String>,
    form: CsrfForm,
) -> Page {
    let id = parse_id(&id)?;
    let priority = match form.fields.get("priority").map(str::trim) {
        None | Some("") => None,
        Some(p) => Some(
            p.parse::<i32>()
                .ok()
                .filter(|p| (0..=100).contains(p))
                .ok_or_else(|| {
                    DashError::BadRequest("Priority must be a whole number from 0 to 100.".into())
                })?,
        ),
    };
    let severity = match form.fields.get("severity").map(str::trim) {
        None | Some("") => None,
        Some(s) => Some(
            crate::triage::result::Severity::parse(s)
                .ok_or_else(|| DashError::BadRequest("Unknown severity.".into()))?,
        ),
    };
    state
        .store
        .set_priority_override(id, priority, severity, &form.user.actor(), Utc::now())
        .await?
        .ok_or_else(|| DashError::NotFound(format!("There is no incident #{id}.")))?;
    Ok(Redirect::to(&format!("/incidents/{id}?notice=priority")).into_response())
}

/// Resolve or quiet the incidents ticked in the list.
pub async fn bulk(State(state): State<AppState>, form: CsrfForm) -> Page {
    let t = match form.fields.get("action") {
        Some("resolve") => Transition::Resolve {
            reason: None,
            in_next_release: false,
        },
        Some("quiet") => Transition::Quiet { reason: None },
        _ => return Err(DashError::BadRequest("Unknown bulk action.".into())),
    };
    let ids: Vec<i64> = form
        .fields
        .all("ids")
        .filter_map(|v| v.parse().ok())
        .take(500)
        .collect();
    let actor = form.user.actor();
    let now = Utc::now();
    for id in &ids {
        state.store.transition(*id, &t, &actor, now).await?;
    }
    let back = views::safe_return(form.fields.get("return"), "/");
    let sep = if back.contains('?') { '&' } else { '?' };
    Ok(Redirect::to(&format!("{back}{sep}notice=bulk")).into_response())
}

// ---------------------------------------------------------------- events

#[derive(Debug, Default, Deserialize)]
pub struct EventParams {
    #[serde(default)]
    pub project: String,
    #[serde(default)]
    pub service: String,
    #[serde(default)]
    pub environment: String,
    #[serde(default)]
    pub level: String,
    #[serde(default)]
    pub cursor: String,
}

pub struct EventListRow {
    pub href: String,
    pub time: Rel,
    pub level: String,
    pub service: String,
    pub message: String,
    pub env: String,
    pub group_id: i64,
}

#[derive(Template)]
#[template(path = "dashboard/events.html")]
pub struct EventsPage {
    pub l: Layout,
    pub f: EventParams,
    pub projects: Vec<Opt>,
    pub levels: Vec<Opt>,
    pub rows: Vec<EventListRow>,
    pub next_href: Option<String>,
}

const LEVELS: [(&str, &str); 5] = [
    ("fatal", "Fatal"),
    ("error", "Error"),
    ("warning", "Warning"),
    ("info", "Info"),
    ("debug", "Debug"),
];

pub async fn events(
    State(state): State<AppState>,
    user: CurrentUser,
    Query(p): Query<EventParams>,
) -> Page {
    let now = Utc::now();
    let text = |s: &str| Some(s.trim().to_string()).filter(|s| !s.is_empty());
    let query = EventQuery {
        project_id: p.project.parse().ok(),
        group_id: None,
        service: text(&p.service),
        environment: text(&p.environment),
        level: text(&p.level).filter(|l| LEVELS.iter().any(|(v, _)| v == l)),
        limit: 50,
        cursor: text(&p.cursor),
    };
    let (page, projects) =
        tokio::try_join!(state.store.list_events(&query), state.store.list_projects())?;
    let rows = page
        .events
        .iter()
        .map(|e| EventListRow {
            href: format!("/incidents/{}?event={}", e.group_id, e.event_id.simple()),
            time: views::rel(e.timestamp, now),
            level: e.level.clone(),
            service: e.service.clone(),
            message: views::first_line(&e.message, 200),
            env: e.env.clone(),
            group_id: e.group_id,
        })
        .collect();
    let next_href = page.next_cursor.as_deref().map(|c| {
        format!(
            "/events{}",
            views::query_string(&[
                ("project", &p.project),
                ("service", &p.service),
                ("environment", &p.environment),
                ("level", &p.level),
                ("cursor", c),
            ])
        )
    });
    let page = EventsPage {
        l: user.layout("Events", "events"),
        projects: project_opts(&projects, query.project_id),
        levels: opts(&LEVELS, &p.level),
        rows,
        next_href,
        f: p,
    };
    Ok(render(&page))
}

// ---------------------------------------------------------------- projects

#[derive(Template)]
#[template(path = "dashboard/projects.html")]
pub struct ProjectsPage {
    pub l: Layout,
    pub projects: Vec<Project>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct NoticeParams {
    pub notice: String,
}

pub async fn projects(
    State(state): State<AppState>,
    user: CurrentUser,
    Query(q): Query<NoticeParams>,
) -> Page {
    let projects = state.store.list_projects().await?;
    let mut l = user.layout("Projects", "projects");
    l.notice = super::notice(Some(&q.notice));
    Ok(render(&ProjectsPage { l, projects }))
}

/// Deletes the project with its incidents and events; its key stops working.
pub async fn delete_project(
    State(state): State<AppState>,
    Path(id): Path<String>,
    form: CsrfForm,
) -> Page {
    let p = load_project(&state, &id).await?;
    state
        .delete_project(p.id, &form.user.actor())
        .await?
        .ok_or_else(|| DashError::NotFound("There is no such project.".into()))?;
    Ok(Redirect::to("/projects?notice=project-deleted").into_response())
}

pub struct Snippet {
    pub title: &'static str,
    pub code: String,
}

#[derive(Template)]
#[template(path = "dashboard/project.html")]
pub struct ProjectPage {
    pub l: Layout,
    pub p: Project,
    pub dsn: String,
    /// Set only in the answer to a rotation: the one time the key is shown.
    pub new_key: Option<String>,
    pub snippets: Vec<Snippet>,
    pub alerts: AlertsView,
    pub github: super::github::GithubForm,
    pub scrub: ScrubView,
}

/// The project's scrubbing, as the project page shows it.
#[derive(Debug)]
pub struct ScrubView {
    /// The project's own names, comma separated.
    pub fields: String,
    /// `--scrub` and `--scrub-ip`.
    pub enabled: bool,
    pub ip: bool,
    /// Why the names just sent were refused.
    pub error: Option<String>,
}

/// Where the project's alerts go, as the project page shows it.
#[derive(Debug)]
pub struct AlertsView {
    /// The project's own webhook, scheme and host only.
    pub own: Option<String>,
    /// The collector has a webhook of its own (`--alert-webhook`).
    pub collector: bool,
    /// Why the URL just sent was refused.
    pub error: Option<String>,
}

impl AlertsView {
    async fn of(state: &AppState, project_id: i64) -> Result<AlertsView, DashError> {
        let (own, collector) = state.alert_destination(project_id).await?;
        Ok(AlertsView {
            own,
            collector,
            error: None,
        })
    }
}

/// Set-up snippets for a project; `key` is the real key right after a
/// rotation, a placeholder otherwise.
pub fn snippets(public_url: &str, dsn: &str, key: &str) -> Vec<Snippet> {
    vec![
        Snippet {
            title: "Rust (errorflow-sdk)",
            code: format!(
                "# Cargo.toml: errorflow-sdk = \"0.1\", tracing-subscriber = \"0.3\"\n\
                 # environment: ERRORFLOW_DSN={dsn} ERRORFLOW_SERVICE=my-service\n\n\
                 use tracing_subscriber::prelude::*;\n\n\
                 fn main() {{\n    \
                     let _guard = errorflow_sdk::init(errorflow_sdk::ClientOptions::from_env());\n    \
                     tracing_subscriber::registry()\n        \
                         .with(tracing_subscriber::fmt::layer())\n        \
                         .with(errorflow_sdk::layer())\n        \
                         .init();\n    \
                     tracing::error!(\"something failed\");\n\
                 }}"
            ),
        },
        Snippet {
            title: "curl (the seed's endpoint)",
            code: format!(
                "curl -X POST {public_url}/errors/custom \\\n  \
                 -H 'Content-Type: application/json' -H 'X-Errorflow-Key: {key}' \\\n  \
                 -d '{{\"service\": \"user-api\", \"error_type\": \"NullPointer\", \"message\": \"user 42 not found\", \"path\": \"/v1/users/42\", \"env\": \"prod\"}}'"
            ),
        },
        Snippet {
            title: "Node / Express middleware",
            code: format!(
                "app.use((err, req, res, next) => {{\n  \
                   fetch('{public_url}/errors/custom', {{\n    \
                     method: 'POST',\n    \
                     headers: {{ 'Content-Type': 'application/json', 'X-Errorflow-Key': process.env.ERRORFLOW_KEY /* {key} */ }},\n    \
                     body: JSON.stringify({{\n      \
                       service: 'user-api',\n      \
                       error_type: err.name || 'Error',\n      \
                       message: err.stack || String(err),\n      \
                       path: req.path,\n      \
                       env: process.env.NODE_ENV || 'local',\n    \
                     }}),\n  \
                   }}).catch(() => {{}});\n  \
                   res.status(500).send('Internal server error');\n\
                 }});"
            ),
        },
        Snippet {
            title: "Python (Sentry SDK)",
            code: format!(
                "import sentry_sdk\n\nsentry_sdk.init(dsn=\"{dsn}\", environment=\"prod\")"
            ),
        },
    ]
}

async fn load_project(state: &AppState, id: &str) -> Result<Project, DashError> {
    let missing = || DashError::NotFound("There is no such project.".into());
    let id: i64 = id.parse().map_err(|_| missing())?;
    state.store.get_project(id).await?.ok_or_else(missing)
}

#[allow(clippy::too_many_arguments)] // each part of the page, loaded by its caller
async fn project_page(
    state: &AppState,
    user: &CurrentUser,
    p: Project,
    key: Option<String>,
    alerts: AlertsView,
    github: super::github::GithubForm,
    notice: Option<&'static str>,
    scrub_error: Option<String>,
) -> Result<Response, DashError> {
    let scrub = ScrubView {
        fields: state
            .store
            .project_scrub_fields(p.id)
            .await?
            .unwrap_or_default()
            .join(", "),
        enabled: state.scrub.enabled,
        ip: state.scrub.ip,
        error: scrub_error,
    };
    let shown_key = key.clone().unwrap_or_else(|| format!("{}…", p.key_prefix));
    let dsn = credentials::dsn(&state.public_url, &shown_key, p.id);
    let snippet_key = key.clone().unwrap_or_else(|| "YOUR_KEY".to_string());
    let snippet_dsn = credentials::dsn(&state.public_url, &snippet_key, p.id);
    let mut l = user.layout(p.name.clone(), "projects");
    l.notice = notice;
    let page = ProjectPage {
        l,
        snippets: snippets(&state.public_url, &snippet_dsn, &snippet_key),
        dsn,
        new_key: key,
        p,
        alerts,
        github,
        scrub,
    };
    Ok(render(&page))
}

/// The project page with this GitHub form (e.g. with the reason its
/// settings were refused).
pub async fn project_page_with(
    state: &AppState,
    user: &CurrentUser,
    p: Project,
    github: super::github::GithubForm,
) -> Result<Response, DashError> {
    let alerts = AlertsView::of(state, p.id).await?;
    project_page(state, user, p, None, alerts, github, None, None).await
}

pub async fn project(
    State(state): State<AppState>,
    user: CurrentUser,
    Path(id): Path<String>,
    Query(q): Query<NoticeParams>,
) -> Page {
    let p = load_project(&state, &id).await?;
    let alerts = AlertsView::of(&state, p.id).await?;
    let notice = super::notice(Some(&q.notice));
    let github = super::github::GithubForm::of(&state, p.id).await?;
    project_page(&state, &user, p, None, alerts, github, notice, None).await
}

/// Sets (`action=save`, with `url`) or removes (`action=remove`) the
/// project's own alert webhook. A URL that is not one shows the page again
/// with the reason (422), and the URL is not kept.
pub async fn alert_webhook(
    State(state): State<AppState>,
    Path(id): Path<String>,
    form: CsrfForm,
) -> Page {
    let p = load_project(&state, &id).await?;
    let url = match form.fields.get("action") {
        Some("remove") => None,
        Some("save") => {
            let url = form.fields.get("url").unwrap_or_default();
            match crate::alerts::validate_webhook_url(url, &state.webhook_policy) {
                Ok(url) => Some(url),
                Err(why) => {
                    let mut alerts = AlertsView::of(&state, p.id).await?;
                    alerts.error = Some(why);
                    let github = super::github::GithubForm::of(&state, p.id).await?;
                    let page =
                        project_page(&state, &form.user, p, None, alerts, github, None, None)
                            .await?;
                    return Ok((StatusCode::UNPROCESSABLE_ENTITY, page).into_response());
                }
            }
        }
        _ => return Err(DashError::BadRequest("Unknown action.".into())),
    };
    if !state.store.set_project_alert_webhook(p.id, url).await? {
        return Err(DashError::NotFound("There is no such project.".into()));
    }
    // Never the URL itself: it may hold the webhook's secret.
    tracing::info!(project = p.id, user = %form.user.name, set = url.is_some(), "project alert webhook changed from the dashboard");
    let notice = if url.is_some() {
        "webhook-saved"
    } else {
        "webhook-removed"
    };
    Ok(Redirect::to(&format!("/projects/{}?notice={notice}", p.id)).into_response())
}

/// Replaces the project's key and shows the new one, once, in this answer.
pub async fn rotate_key(
    State(state): State<AppState>,
    Path(id): Path<String>,
    form: CsrfForm,
) -> Page {
    let p = load_project(&state, &id).await?;
    let key = credentials::new_ingest_key();
    let rotated = state
        .store
        .rotate_project_key(
            p.id,
            &credentials::hash_secret(&key),
            &credentials::prefix(&key),
        )
        .await?;
    if !rotated {
        return Err(DashError::NotFound("There is no such project.".into()));
    }
    state.forget_cached_keys();
    tracing::info!(project = p.id, user = %form.user.name, "ingest key rotated from the dashboard");
    let p = state.store.get_project(p.id).await?.unwrap_or(p);
    let alerts = AlertsView::of(&state, p.id).await?;
    let github = super::github::GithubForm::of(&state, p.id).await?;
    project_page(&state, &form.user, p, Some(key), alerts, github, None, None).await
}

/// Replaces the project's own scrubbed field names (`fields`: names
/// separated by commas, spaces or lines). Bad names show the page again
/// with the reason (422), and nothing is kept.
pub async fn scrub_fields(
    State(state): State<AppState>,
    Path(id): Path<String>,
    form: CsrfForm,
) -> Page {
    let p = load_project(&state, &id).await?;
    let names: Vec<String> = form
        .fields
        .get("fields")
        .unwrap_or_default()
        .split(|c: char| c == ',' || c.is_whitespace())
        .filter(|n| !n.is_empty())
        .map(str::to_owned)
        .collect();
    let fields = match crate::http::api::validate_scrub_fields(&names) {
        Ok(fields) => fields,
        Err(why) => {
            let alerts = AlertsView::of(&state, p.id).await?;
            let github = super::github::GithubForm::of(&state, p.id).await?;
            let page =
                project_page(&state, &form.user, p, None, alerts, github, None, Some(why)).await?;
            return Ok((StatusCode::UNPROCESSABLE_ENTITY, page).into_response());
        }
    };
    if !state.store.set_project_scrub_fields(p.id, &fields).await? {
        return Err(DashError::NotFound("There is no such project.".into()));
    }
    state.forget_scrub_rules();
    tracing::info!(project = p.id, user = %form.user.name, fields = fields.len(), "project scrub fields changed from the dashboard");
    Ok(Redirect::to(&format!("/projects/{}?notice=scrub-saved", p.id)).into_response())
}

/// A realistic sample error, as the Rust SDK would send it.
pub fn sample_event(now: DateTime<Utc>) -> Event {
    let mut ev = Event::new(protocol::Level::Error);
    ev.timestamp = Some(now);
    ev.platform = Some("rust".into());
    ev.service = Some("checkout".into());
    ev.environment = Some("test".into());
    ev.release = Some("checkout@1.4.2".into());
    ev.host = Some("web-1".into());
    ev.transaction = Some("POST /orders/{id}/pay".into());
    ev.logger = Some("checkout::payments".into());
    ev.message = Some("payment for order 1042 failed: card declined".into());
    ev.message_template = Some("payment for order {} failed: {}".into());
    ev.sdk = Some("errorflow-dashboard/test-event".into());
    let frame = |function: &str, file: &str, line: u32, in_app: bool| protocol::Frame {
        function: Some(function.into()),
        module: function.rsplit_once("::").map(|(m, _)| m.to_string()),
        filename: Some(file.into()),
        lineno: Some(line),
        in_app: Some(in_app),
        ..protocol::Frame::default()
    };
    let mut pay = frame(
        "checkout::payments::charge_card",
        "src/payments.rs",
        88,
        true,
    );
    pay.pre_context = vec![
        "    let response = gateway.charge(&card, amount).await?;".into(),
        "    if response.declined {".into(),
    ];
    pay.context_line = Some("        return Err(PaymentError::Declined { order_id });".into());
    pay.post_context = vec!["    }".into(), "    Ok(response.receipt)".into()];
    let mut outer = protocol::Exception::new(
        "checkout::payments::PaymentError",
        "payment for order 1042 failed: card declined",
    );
    outer.mechanism = Some("tracing".into());
    outer.handled = Some(true);
    outer.stacktrace = Some(protocol::Stacktrace {
        frames: vec![
            frame(
                "tokio::runtime::task::harness::poll",
                "tokio/src/runtime/task/harness.rs",
                473,
                false,
            ),
            frame(
                "axum::routing::route::Route::call",
                "axum/src/routing/route.rs",
                131,
                false,
            ),
            frame("checkout::handlers::pay_order", "src/handlers.rs", 57, true),
            pay,
        ],
    });
    let cause = protocol::Exception::new(
        "reqwest::Error",
        "HTTP status client error (402 Payment Required) for url (https://payments.example/charge)",
    );
    ev.exception = vec![outer, cause];
    ev.tags
        .insert("payment_provider".into(), "example-pay".into());
    ev.tags.insert("source".into(), "dashboard-test".into());
    ev.request = Some(protocol::Request {
        method: Some("POST".into()),
        url: Some("/orders/1042/pay".into()),
        route: Some("/orders/{id}/pay".into()),
        status: Some(500),
        latency_ms: Some(182.5),
        ..protocol::Request::default()
    });
    ev.user = Some(protocol::User {
        id: Some("user-7".into()),
        username: Some("ada".into()),
        ..protocol::User::default()
    });
    let crumb = |category: &str, message: &str, secs: i64| protocol::Breadcrumb {
        timestamp: Some(now - chrono::Duration::seconds(secs)),
        category: Some(category.into()),
        level: protocol::Level::Info,
        message: Some(message.into()),
        data: Default::default(),
    };
    ev.breadcrumbs = vec![
        crumb("http", "GET /cart 200", 9),
        crumb("db", "SELECT order 1042", 2),
        crumb("http", "POST https://payments.example/charge 402", 1),
    ];
    ev
}

/// Sends [`sample_event`] through the real ingest path (pipeline, then the
/// group-commit writer) and opens its incident.
pub async fn test_event(
    State(state): State<AppState>,
    Path(id): Path<String>,
    form: CsrfForm,
) -> Page {
    let p = load_project(&state, &id).await?;
    let now = Utc::now();
    let ctx = Context {
        project_id: p.id,
        received_at: now,
    };
    let rules = state.scrub_rules(p.id).await?;
    let content = pipeline::normalize::Content::Required;
    let event = pipeline::process_with(sample_event(now), &ctx, &state.limits, content, &rules)
        .map_err(|e| {
            tracing::error!(error = %e, "dashboard: the sample event was rejected");
            DashError::Internal
        })?;
    let outcomes = state.store_events(vec![event]).await.map_err(|e| {
        tracing::error!(error = %e, "dashboard: the sample event was not stored");
        DashError::Internal
    })?;
    tracing::info!(project = p.id, user = %form.user.name, "test error sent from the dashboard");
    match outcomes.first() {
        Some(InsertOutcome::Stored { group_id, .. }) => {
            Ok(Redirect::to(&format!("/incidents/{group_id}?notice=test")).into_response())
        }
        _ => Ok(Redirect::to("/?notice=test").into_response()),
    }
}

// ---------------------------------------------------------------- sign-in

#[derive(Template)]
#[template(path = "dashboard/login.html")]
pub struct LoginPage {
    pub l: Layout,
    pub csrf: String,
    pub next: String,
    pub username: String,
    pub error: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
pub struct LoginParams {
    #[serde(default)]
    pub next: String,
}

fn login_page(
    state: &AppState,
    status: StatusCode,
    next: &str,
    username: &str,
    error: Option<String>,
) -> Response {
    // A fresh double-submit token for each form shown.
    let csrf = auth::random_token();
    let page = LoginPage {
        l: Layout {
            title: "Sign in".into(),
            ..Layout::default()
        },
        csrf: csrf.clone(),
        next: views::safe_return(Some(next), "/"),
        username: username.to_string(),
        error,
    };
    let mut res = render(&page);
    *res.status_mut() = status;
    if let Ok(v) = auth::set_cookie(
        auth::LOGIN_CSRF_COOKIE,
        &csrf,
        Some(3600),
        state.dashboard.secure_cookies,
    )
    .parse()
    {
        res.headers_mut().append(header::SET_COOKIE, v);
    }
    res
}

pub async fn login_form(
    State(state): State<AppState>,
    headers: axum::http::HeaderMap,
    Query(p): Query<LoginParams>,
) -> Page {
    // Already signed in: go where they wanted.
    if let Some(token) = auth::cookie(&headers, auth::SESSION_COOKIE) {
        if state
            .store
            .session_by_hash(&auth::session_hash(token), Utc::now())
            .await?
            .is_some()
        {
            return Ok(Redirect::to(&views::safe_return(Some(&p.next), "/")).into_response());
        }
    }
    Ok(login_page(&state, StatusCode::OK, &p.next, "", None))
}

pub async fn login(State(state): State<AppState>, form: PlainForm) -> Page {
    let f = &form.fields;
    let username = f.get("username").unwrap_or_default().trim().to_string();
    let password = f.get("password").unwrap_or_default().to_string();
    let next = f.get("next").unwrap_or("/").to_string();
    let expected = auth::cookie(&form.parts.headers, auth::LOGIN_CSRF_COOKIE).unwrap_or_default();
    let sent = f.get("csrf").unwrap_or_default();
    if expected.is_empty() || !auth::constant_time_eq(sent, expected) {
        return Err(DashError::Forbidden(
            "This sign-in form has expired or did not come from this site. Reload the sign-in page and try again."
                .into(),
        ));
    }
    let ip = super::client_ip(&form.parts);
    let throttle = &state.dashboard.throttle;
    let too_many = |wait: std::time::Duration, message: String| {
        let secs = wait.as_secs().max(1);
        let mut res = login_page(
            &state,
            StatusCode::TOO_MANY_REQUESTS,
            &next,
            &username,
            Some(message.replace("{secs}", &secs.to_string())),
        );
        res.headers_mut().insert(header::RETRY_AFTER, secs.into());
        res
    };
    // Checked and counted in one step, before the password is verified.
    if let Err(wait) = throttle.begin(&username, ip, Instant::now()) {
        tracing::warn!(user = %username, ip = ?ip, "dashboard: sign-in refused while locked");
        return Ok(too_many(
            wait,
            "Too many failed sign-ins. Try again in {secs} s.".into(),
        ));
    }
    let user = state.store.user_by_name(&username).await?;
    let hash = user
        .as_ref()
        .map(|u| u.password_hash.clone())
        .unwrap_or_else(|| auth::dummy_hash().to_string());
    // A few verifications at a time: each takes ~19 MiB for argon2.
    let dash = &state.dashboard;
    let permit = match tokio::time::timeout(dash.verify_wait, dash.verifications.acquire()).await {
        Ok(Ok(permit)) => permit,
        _ => {
            throttle.undo(&username, ip);
            tracing::warn!(ip = ?ip, "dashboard: sign-in refused, too many at once");
            return Ok(too_many(
                std::time::Duration::from_secs(1),
                "Too many sign-ins at once. Try again in {secs} s.".into(),
            ));
        }
    };
    // argon2 is deliberately slow: keep it off the async workers.
    let ok = tokio::task::spawn_blocking(move || auth::verify_password(&password, &hash))
        .await
        .unwrap_or(false);
    drop(permit);
    let Some(user) = user.filter(|_| ok) else {
        tracing::warn!(user = %username, ip = ?ip, "dashboard: failed sign-in");
        return Ok(login_page(
            &state,
            StatusCode::UNAUTHORIZED,
            &next,
            &username,
            Some("Wrong user name or password.".into()),
        ));
    };
    throttle.success(&username, ip);
    let token = auth::random_token();
    let now = Utc::now();
    state
        .store
        .create_session(
            &auth::session_hash(&token),
            user.id,
            now,
            now + auth::SESSION_TTL,
        )
        .await?;
    tracing::info!(user = %user.name, "dashboard: signed in");
    let secure = state.dashboard.secure_cookies;
    let mut res = Redirect::to(&views::safe_return(Some(&next), "/")).into_response();
    let cookies = [
        auth::set_cookie(
            auth::SESSION_COOKIE,
            &token,
            Some(auth::SESSION_TTL.num_seconds()),
            secure,
        ),
        auth::set_cookie(auth::LOGIN_CSRF_COOKIE, "", Some(0), secure),
    ];
    for c in cookies {
        if let Ok(v) = c.parse() {
            res.headers_mut().append(header::SET_COOKIE, v);
        }
    }
    Ok(res)
}

pub async fn logout(State(state): State<AppState>, form: CsrfForm) -> Page {
    state.store.delete_session(&form.user.session_hash).await?;
    let mut res = Redirect::to("/login").into_response();
    if let Ok(v) = auth::set_cookie(
        auth::SESSION_COOKIE,
        "",
        Some(0),
        state.dashboard.secure_cookies,
    )
    .parse()
    {
        res.headers_mut().append(header::SET_COOKIE, v);
    }
    Ok(res)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Bucket, Group, GroupStats, TagCount};

    const XSS: &str = "<script>alert(1)</script>";

    fn layout() -> Layout {
        Layout {
            title: XSS.into(),
            user: "admin".into(),
            csrf: "tok\"en".into(),
            nav: "incidents",
            notice: None,
        }
    }

    fn group() -> Group {
        let now = Utc::now();
        Group {
            id: 7,
            project_id: 1,
            cluster_key: format!("svc:{XSS}"),
            fingerprint: "f".into(),
            fingerprint_version: 1,
            service: "svc".into(),
            error_type: "E".into(),
            title: XSS.into(),
            culprit: Some(XSS.into()),
            level: "error".into(),
            status: GroupStatus::Open,
            count: 3,
            first_seen: now,
            last_seen: now,
            severity: "high".into(),
            priority: Some(80),
            summary: None,
            ai_summary: Some(format!(
                "{{\"summary\":\"{}\",\"next_steps\":[\"a\"]}}",
                "<b>bold</b>"
            )),
            ai_next_steps: None,
            resolution_reason: None,
            resolved_at: None,
            resolved_in_release: None,
            regression_count: 1,
            regressed_at: None,
            last_release: None,
            last_environment: None,
            priority_override: None,
            severity_override: None,
        }
    }

    fn assert_escaped(html: &str) {
        assert!(!html.contains(XSS), "raw script in page");
        assert!(!html.contains("<b>bold"), "raw markup in page");
        assert!(html.contains("&#60;script&#62;") || html.contains("&lt;script&gt;"));
    }

    #[test]
    fn list_page_escapes_everything_user_supplied() {
        let now = Utc::now();
        let g = group();
        let page = ListPage {
            l: layout(),
            f: ListParams {
                q: XSS.into(),
                status: "open".into(),
                ..ListParams::default()
            },
            tabs: vec![],
            counts: GroupCounts::default(),
            projects: vec![Opt {
                value: "1".into(),
                label: XSS.into(),
                selected: true,
            }],
            severities: opts(&SEVERITIES, "high"),
            sorts: opts(&SORTS, "last_seen"),
            rows: vec![Row {
                id: g.id,
                title: g.title.clone(),
                culprit: g.culprit.clone(),
                cluster_key: g.cluster_key.clone(),
                status: "open",
                severity: g.severity.clone(),
                severity_class: "sev-high",
                regressed: true,
                count: 3,
                first_seen: views::rel(now, now),
                last_seen: views::rel(now, now),
                spark: views::sparkline(&[1; 24]),
                ai_line: Some("<b>bold</b>".into()),
                github_issue: None,
            }],
            next_href: Some("/?cursor=a&b".into()),
            first_href: "/".into(),
            self_href: "/?status=open".into(),
            poll_href: "/poll?status=open".into(),
            newest: String::new(),
        }
        .render()
        .unwrap();
        assert_escaped(&page);
        assert!(
            page.contains("<svg class=\"spark\""),
            "sparkline is inline SVG"
        );
        assert!(page.contains("href=\"/incidents/7\""));
        assert!(
            page.contains("name=\"csrf\" value=\"tok&#34;en\"") || page.contains("tok&quot;en")
        );
        assert!(!page.contains("style="), "no inline styles (CSP)");
        assert!(!page.contains("<script>"), "no inline script (CSP)");
    }

    #[test]
    fn detail_page_shows_the_event_with_frames_and_escapes_it() {
        let now = Utc::now();
        let mut sample = sample_event(now);
        sample.message = Some(XSS.into());
        sample.breadcrumbs[0].message = Some(XSS.into());
        let stored = StoredEvent {
            id: 1,
            project_id: 1,
            group_id: 7,
            event_id: sample.event_id,
            timestamp: now,
            received_at: now,
            level: "error".into(),
            service: "checkout".into(),
            error_type: "E".into(),
            message: XSS.into(),
            env: "test".into(),
            path: "/orders/1042/pay".into(),
            trace_id: "t".into(),
            release: None,
            host: None,
            data: serde_json::to_value(&sample).unwrap(),
        };
        let ev = event_view(&stored, now);
        assert_eq!(ev.exceptions.len(), 2);
        let frames = &ev.exceptions[0].frames;
        assert_eq!(
            frames[0].function, "checkout::payments::charge_card",
            "innermost first"
        );
        assert!(frames[0].in_app && !frames[3].in_app);
        assert_eq!(frames[0].context.iter().filter(|c| c.current).count(), 1);
        assert_eq!(frames[0].context[2].no, "88");
        let stats = GroupStats {
            hourly: (0..24)
                .map(|i| Bucket {
                    start: now - chrono::Duration::hours(23 - i),
                    count: i,
                })
                .collect(),
            daily: vec![],
            top_tags: [(
                "environment".to_string(),
                vec![TagCount {
                    value: XSS.into(),
                    count: 3,
                }],
            )]
            .into_iter()
            .collect(),
        };
        let page = DetailPage {
            l: layout(),
            status: "open",
            severity_class: "sev-high",
            first_seen: views::rel(now, now),
            last_seen: views::rel(now, now),
            link: "http://x/incidents/7".into(),
            summarize: false,
            ai: views::ai_summary(group().ai_summary.as_deref(), None),
            ai_severity_class: "sev-unknown",
            ai_label: "rules".into(),
            explanation: "prod · <b>x</b>".into(),
            live_last_24h: 3,
            priority_value: String::new(),
            severity_choice: "",
            overridden: false,
            hourly_svg: views::bar_chart(&stats.hourly, "%H:00", "per hour"),
            daily_svg: String::new(),
            event: Some(ev),
            newer_href: None,
            older_href: Some("/incidents/7?event=x".into()),
            events: vec![],
            tags: vec![TagView {
                key: "environment".into(),
                total: 3,
                values: vec![TagValueView {
                    value: XSS.into(),
                    count: 3,
                }],
            }],
            activity: vec![],
            kestra_failure: None,
            gh: Default::default(),
            g: group(),
        }
        .render()
        .unwrap();
        assert_escaped(&page);
        assert!(page.contains("frame in-app"));
        assert!(page.contains("Resolve"));
        assert!(page.contains("Raw JSON"));
        assert!(!page.contains("style="));
    }

    #[test]
    fn snippets_carry_the_dsn_and_key() {
        let s = snippets("http://h:1", "http://k@h:1/3", "k");
        assert_eq!(s.len(), 4);
        assert!(s[0]
            .code
            .contains("errorflow_sdk::init(errorflow_sdk::ClientOptions::from_env())"));
        assert!(s[1].code.contains("X-Errorflow-Key: k") && s[1].code.contains("/errors/custom"));
        assert!(s[2].code.contains("'X-Errorflow-Key'"));
        assert!(s[3].code.contains("sentry_sdk.init(dsn=\"http://k@h:1/3\""));
    }

    #[test]
    fn list_params_fall_back_to_defaults() {
        let p = ListParams {
            status: "bogus".into(),
            severity: "nope".into(),
            sort: "count".into(),
            ..ListParams::default()
        };
        let q = p.query();
        assert_eq!(q.status, Some(GroupStatus::Open));
        assert_eq!(q.severity, None);
        assert_eq!(q.sort, GroupSort::Count);
        let all = ListParams {
            status: "all".into(),
            q: "a b".into(),
            ..ListParams::default()
        };
        assert_eq!(all.query().status, None);
        assert_eq!(all.href("all", ""), "/?status=all&q=a%20b");
    }
}
