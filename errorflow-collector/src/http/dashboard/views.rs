//! Pure helpers that turn store values into what the templates show:
//! relative times, inline SVG charts, badges, the AI summary's parts.
//!
//! The SVG is built here from numbers and fixed formats only, never from
//! user-supplied text, which is why templates may insert it unescaped.

use std::fmt::Write as _;

use chrono::{DateTime, Utc};

use crate::model::{Bucket, GroupStatus};

/// A moment shown as "5 min ago", with the exact time for `<time datetime>` and a tooltip.
#[derive(Debug, Clone, PartialEq)]
pub struct Rel {
    pub iso: String,
    pub text: String,
    pub full: String,
}

pub fn rel(t: DateTime<Utc>, now: DateTime<Utc>) -> Rel {
    Rel {
        iso: t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        text: relative(t, now),
        full: t.format("%Y-%m-%d %H:%M:%S UTC").to_string(),
    }
}

/// "just now", "42 s ago", "5 min ago", "3 h ago", "2 d ago", or a date for older times.
pub fn relative(t: DateTime<Utc>, now: DateTime<Utc>) -> String {
    let secs = (now - t).num_seconds();
    if secs < 0 {
        return "in the future".to_string();
    }
    match secs {
        0..=4 => "just now".to_string(),
        5..=59 => format!("{secs} s ago"),
        60..=3599 => format!("{} min ago", secs / 60),
        3600..=86_399 => format!("{} h ago", secs / 3600),
        86_400..=2_591_999 => format!("{} d ago", secs / 86_400),
        _ => t.format("%Y-%m-%d").to_string(),
    }
}

pub fn status_label(s: GroupStatus) -> &'static str {
    match s {
        GroupStatus::Open => "open",
        GroupStatus::Quiet => "quiet",
        GroupStatus::Resolved => "resolved",
    }
}

/// CSS class of a severity badge; unknown values get the neutral one.
pub fn severity_class(severity: &str) -> &'static str {
    match severity {
        "critical" => "sev-critical",
        "high" => "sev-high",
        "medium" => "sev-medium",
        "low" => "sev-low",
        _ => "sev-unknown",
    }
}

/// A compact bar sparkline of hourly counts (24 bars), for the list.
pub fn sparkline(counts: &[i64]) -> String {
    let (w, h, gap) = (4.0_f64, 24.0_f64, 1.0_f64);
    let max = counts.iter().copied().max().unwrap_or(0).max(1) as f64;
    let width = counts.len() as f64 * (w + gap);
    let total: i64 = counts.iter().sum();
    let mut svg = format!(
        "<svg class=\"spark\" viewBox=\"0 0 {width} {h}\" width=\"{width}\" height=\"{h}\" role=\"img\" aria-label=\"{total} events in the last 24 hours\">"
    );
    for (i, &c) in counts.iter().enumerate() {
        let bh = if c > 0 {
            (c as f64 / max * (h - 2.0)).max(2.0)
        } else {
            1.0
        };
        let class = if c > 0 { "bar" } else { "bar zero" };
        let _ = write!(
            svg,
            "<rect class=\"{class}\" x=\"{:.0}\" y=\"{:.1}\" width=\"{w}\" height=\"{bh:.1}\"/>",
            i as f64 * (w + gap),
            h - bh
        );
    }
    svg.push_str("</svg>");
    svg
}

/// A bar chart of buckets with a tooltip per bar and first/last labels.
pub fn bar_chart(buckets: &[Bucket], label_format: &str, caption: &str) -> String {
    let (width, height, top, bottom) = (720.0_f64, 150.0_f64, 16.0_f64, 20.0_f64);
    let n = buckets.len().max(1) as f64;
    let slot = width / n;
    let bar = (slot * 0.8).max(1.0);
    let max = buckets.iter().map(|b| b.count).max().unwrap_or(0).max(1) as f64;
    let plot = height - top - bottom;
    let mut svg = format!(
        "<svg class=\"chart\" viewBox=\"0 0 {width} {height}\" role=\"img\" aria-label=\"{caption}\">"
    );
    let _ = write!(
        svg,
        "<line class=\"axis\" x1=\"0\" y1=\"{y}\" x2=\"{width}\" y2=\"{y}\"/>",
        y = height - bottom
    );
    for (i, b) in buckets.iter().enumerate() {
        let bh = if b.count > 0 {
            (b.count as f64 / max * plot).max(2.0)
        } else {
            0.0
        };
        let x = i as f64 * slot + (slot - bar) / 2.0;
        let _ = write!(
            svg,
            "<g><title>{}: {} event{}</title><rect class=\"hit\" x=\"{:.1}\" y=\"{top}\" width=\"{slot:.1}\" height=\"{plot}\"/>\
             <rect class=\"bar\" x=\"{x:.1}\" y=\"{:.1}\" width=\"{bar:.1}\" height=\"{bh:.1}\"/></g>",
            b.start.format(label_format),
            b.count,
            if b.count == 1 { "" } else { "s" },
            i as f64 * slot,
            height - bottom - bh,
        );
    }
    if let (Some(first), Some(last)) = (buckets.first(), buckets.last()) {
        let _ = write!(
            svg,
            "<text x=\"0\" y=\"{y}\">{}</text><text x=\"{width}\" y=\"{y}\" text-anchor=\"end\">{}</text>",
            first.start.format(label_format),
            last.start.format(label_format),
            y = height - 5.0
        );
    }
    let _ = write!(
        svg,
        "<text x=\"0\" y=\"{}\" class=\"max\">max {}</text></svg>",
        top + 4.0,
        max as i64
    );
    svg
}

/// The parts of an AI summary, which triage stores either as JSON
/// `{summary, severity, next_steps}` or as plain text.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct AiSummary {
    pub summary: String,
    pub severity: Option<String>,
    pub next_steps: Vec<String>,
}

/// The label of a triage result's author: "rules" for the built-in
/// analyst (it is not a model), the model's name otherwise.
pub fn analyst_label(analyst: &str, model: &str) -> String {
    if analyst == "builtin" || model.is_empty() {
        "rules".to_string()
    } else {
        model.to_string()
    }
}

pub fn ai_summary(ai_summary: Option<&str>, ai_next_steps: Option<&str>) -> Option<AiSummary> {
    let text = ai_summary.map(str::trim).filter(|s| !s.is_empty())?;
    let mut out = AiSummary::default();
    match serde_json::from_str::<serde_json::Value>(text) {
        Ok(serde_json::Value::Object(obj)) => {
            out.summary = obj
                .get("summary")
                .and_then(|v| v.as_str())
                .unwrap_or_default()
                .to_string();
            out.severity = obj
                .get("severity")
                .and_then(|v| v.as_str())
                .map(str::to_string);
            out.next_steps = steps(obj.get("next_steps"));
        }
        _ => out.summary = text.to_string(),
    }
    if out.next_steps.is_empty() {
        if let Some(ns) = ai_next_steps.map(str::trim).filter(|s| !s.is_empty()) {
            out.next_steps = match serde_json::from_str::<serde_json::Value>(ns) {
                Ok(v @ serde_json::Value::Array(_)) => steps(Some(&v)),
                _ => ns
                    .lines()
                    .map(|l| l.trim().trim_start_matches(['-', '*', '•']).trim())
                    .filter(|l| !l.is_empty())
                    .map(str::to_string)
                    .collect(),
            };
        }
    }
    if out.summary.is_empty() && out.next_steps.is_empty() {
        return None;
    }
    Some(out)
}

fn steps(v: Option<&serde_json::Value>) -> Vec<String> {
    match v {
        Some(serde_json::Value::Array(items)) => items
            .iter()
            .filter_map(|i| match i {
                serde_json::Value::String(s) => Some(s.clone()),
                other => other.as_object().map(|_| other.to_string()),
            })
            .collect(),
        Some(serde_json::Value::String(s)) => s
            .lines()
            .map(|l| l.trim().trim_start_matches(['-', '*', '•']).trim())
            .filter(|l| !l.is_empty())
            .map(str::to_string)
            .collect(),
        _ => Vec::new(),
    }
}

/// The first line of a text, shortened to `max` characters.
pub fn first_line(text: &str, max: usize) -> String {
    let line = text
        .lines()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("")
        .trim();
    if line.chars().count() > max {
        let mut s: String = line.chars().take(max).collect();
        s.push('…');
        s
    } else {
        line.to_string()
    }
}

/// Builds a query string from pairs, skipping empty values.
pub fn query_string(pairs: &[(&str, &str)]) -> String {
    let mut out = String::new();
    for (k, v) in pairs {
        if v.is_empty() {
            continue;
        }
        out.push(if out.is_empty() { '?' } else { '&' });
        out.push_str(k);
        out.push('=');
        out.push_str(&urlencode(v));
    }
    out
}

pub fn urlencode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(b as char)
            }
            _ => {
                let _ = write!(out, "%{b:02X}");
            }
        }
    }
    out
}

/// A local redirect target: a path on this site, never another origin.
/// Only visible ASCII is accepted: browsers drop tabs and newlines from a
/// `Location` (`/<TAB>/evil.example` becomes `//evil.example`, another
/// origin) and treat `\\` as `/`; the same holds for the percent-decoded
/// form, which some browsers and proxies decode. Whatever is accepted is
/// a valid header value, so building the redirect never fails.
pub fn safe_return(target: Option<&str>, fallback: &str) -> String {
    let local = |t: &str| t.starts_with('/') && !t.starts_with("//") && !t.contains('\\');
    let decoded_local = |t: &str| local(t) && !t.chars().any(char::is_control);
    match target {
        Some(t)
            if local(t)
                && t.bytes().all(|b| b.is_ascii_graphic())
                && decoded_local(&percent_decoded(t)) =>
        {
            t.to_string()
        }
        _ => fallback.to_string(),
    }
}

/// What the incident page says about a failed Kestra run:
/// "Kestra run failed at task store: …" (the flow and execution follow).
pub fn kestra_failure(run: &crate::model::KestraRun) -> String {
    let mut s = format!(
        "Kestra run failed at task {}",
        run.failed_task.as_deref().unwrap_or("(unknown)")
    );
    if let Some(e) = &run.error {
        s.push_str(": ");
        s.push_str(e);
    }
    s.push_str(&format!(
        " (flow {}, execution {})",
        run.flow_id, run.execution_id
    ));
    s
}

/// `%XX` sequences decoded, the bytes read as Latin-1 (only ASCII matters
/// to [`safe_return`]'s check).
fn percent_decoded(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = String::with_capacity(s.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            if let (Some(h), Some(l)) = (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                out.push(char::from((h * 16 + l) as u8));
                i += 3;
                continue;
            }
        }
        out.push(char::from(bytes[i]));
        i += 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn relative_times_read_naturally() {
        let now = Utc.with_ymd_and_hms(2026, 3, 14, 12, 0, 0).unwrap();
        let ago = |s: i64| relative(now - chrono::Duration::seconds(s), now);
        assert_eq!(ago(0), "just now");
        assert_eq!(ago(42), "42 s ago");
        assert_eq!(ago(300), "5 min ago");
        assert_eq!(ago(3 * 3600), "3 h ago");
        assert_eq!(ago(2 * 86_400), "2 d ago");
        assert_eq!(ago(90 * 86_400), "2025-12-14");
        assert_eq!(rel(now, now).iso, "2026-03-14T12:00:00Z");
    }

    #[test]
    fn sparkline_has_one_bar_per_hour_scaled_to_the_max() {
        let mut counts = vec![0; 24];
        counts[23] = 10;
        counts[0] = 5;
        let svg = sparkline(&counts);
        assert_eq!(svg.matches("<rect").count(), 24);
        assert!(svg.contains("15 events in the last 24 hours"));
        assert!(svg.contains("height=\"22.0\""), "{svg}");
    }

    #[test]
    fn bar_chart_labels_buckets() {
        let start = Utc.with_ymd_and_hms(2026, 3, 14, 0, 0, 0).unwrap();
        let buckets: Vec<Bucket> = (0..24)
            .map(|i| Bucket {
                start: start + chrono::Duration::hours(i),
                count: i,
            })
            .collect();
        let svg = bar_chart(&buckets, "%H:00", "events per hour");
        assert!(svg.contains("<title>23:00: 23 events</title>"));
        assert!(svg.contains("max 23"));
    }

    #[test]
    fn ai_summary_reads_json_or_text() {
        let json = r#"{"summary":"DB pool exhausted","severity":"high","next_steps":["raise pool","add timeout"]}"#;
        let ai = ai_summary(Some(json), None).unwrap();
        assert_eq!(ai.summary, "DB pool exhausted");
        assert_eq!(ai.severity.as_deref(), Some("high"));
        assert_eq!(ai.next_steps, vec!["raise pool", "add timeout"]);
        let ai = ai_summary(Some("plain words\nsecond"), Some("- one\n- two")).unwrap();
        assert_eq!(ai.summary, "plain words\nsecond");
        assert_eq!(ai.next_steps, vec!["one", "two"]);
        assert_eq!(ai_summary(None, Some("x")), None);
        assert_eq!(first_line("\n  hello world \nmore", 5), "hello…");
    }

    #[test]
    fn only_local_paths_are_redirect_targets() {
        assert_eq!(safe_return(Some("/?status=open"), "/"), "/?status=open");
        assert_eq!(safe_return(Some("//evil.example"), "/"), "/");
        assert_eq!(safe_return(Some("https://evil.example"), "/"), "/");
        assert_eq!(safe_return(Some("/\\evil"), "/"), "/");
        for evil in [
            "/\t/evil.example",
            "/%09/evil.example",
            "/%2F/evil.example",
            "/%5Cevil.example",
            "/\r\nSet-Cookie: x=1",
            "/\u{1}x",
            "/\u{7f}",
            "/caf\u{e9}",
            " /x",
        ] {
            assert_eq!(safe_return(Some(evil), "/"), "/", "{evil:?}");
        }
        assert_eq!(
            safe_return(Some("/incidents/3?q=a%20b"), "/"),
            "/incidents/3?q=a%20b"
        );
        assert_eq!(query_string(&[("q", "a b&c"), ("x", "")]), "?q=a%20b%26c");
    }
}
