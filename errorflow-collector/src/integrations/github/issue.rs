//! The GitHub issue of an incident, and the escaping of untrusted text in
//! everything posted to GitHub.
//!
//! Text from events (titles, messages, frames) is written by whoever
//! triggers an error. In a posted issue or comment it must not mention
//! people (`@someone` notifies them), reference other issues (`#12`,
//! `owner/repo#12` leave a trace there), link anywhere, or carry HTML.
//! [`escape`] neutralises all of it for running text; code goes into
//! fenced blocks longer than any backtick run inside ([`code_block`]).

use std::fmt::Write;

use super::rca::{short, Evidence};
use crate::triage::digest::Digest;

/// `s` cut to at most `max` characters (with `…`), on a character boundary.
pub fn bound(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_string();
    }
    let mut out: String = s.chars().take(max.saturating_sub(1)).collect();
    out.push('…');
    out
}

/// Whether `u` is an absolute http(s) URL (links the collector writes itself).
pub fn is_http_url(u: &str) -> bool {
    (u.starts_with("https://") || u.starts_with("http://"))
        && !u.contains(char::is_whitespace)
        && !u.contains([')', '(', '<', '>', '"'])
}

/// Untrusted text made inert in GitHub Markdown: Markdown and HTML
/// punctuation is backslash-escaped or turned into entities, a zero-width
/// space follows every `@` and `#` (no mention, no issue reference) and
/// breaks every `://` and `www.` (no autolink), and line breaks become
/// spaces (no block structure).
pub fn escape(s: &str) -> String {
    const ZWSP: char = '\u{200B}';
    let mut out = String::with_capacity(s.len() + 8);
    let chars: Vec<char> = s.chars().collect();
    for (i, &c) in chars.iter().enumerate() {
        match c {
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            '\r' | '\n' | '\t' => out.push(' '),
            '@' | '#' => {
                out.push(c);
                out.push(ZWSP);
            }
            ':' if chars.get(i + 1) == Some(&'/') => {
                out.push(':');
                out.push(ZWSP);
            }
            '.' if i >= 3
                && chars[i - 3..i]
                    .iter()
                    .collect::<String>()
                    .eq_ignore_ascii_case("www") =>
            {
                out.push(ZWSP);
                out.push('.');
            }
            '\\' | '`' | '*' | '_' | '[' | ']' | '(' | ')' | '!' | '|' | '~' | '{' | '}' => {
                out.push('\\');
                out.push(c);
            }
            c if c.is_control() => {}
            c => out.push(c),
        }
    }
    out
}

/// A fenced code block that `code` cannot close: the fence is longer than
/// any run of backticks inside. Nothing inside a code block is rendered.
pub fn code_block(lang: &str, code: &str) -> String {
    let mut longest = 0;
    let mut run = 0;
    for c in code.chars() {
        if c == '`' {
            run += 1;
            longest = longest.max(run);
        } else {
            run = 0;
        }
    }
    let fence = "`".repeat(longest.max(2) + 1);
    let lang: String = lang.chars().filter(char::is_ascii_alphanumeric).collect();
    format!("{fence}{lang}\n{}\n{fence}\n", code.trim_end_matches('\n'))
}

/// The issue's title: the incident's, bounded (GitHub allows 256).
pub fn issue_title(title: &str) -> String {
    bound(title.lines().next().unwrap_or("error"), 200)
}

/// The comment that asks for an analysis.
pub const RCA_COMMAND: &str = "/errorflow rca";

/// The issue's body: summary, exception and innermost in-app frames
/// (linked to their lines at the release's commit when the release maps to
/// one), suspect commits, counts, first and last seen, environments and
/// releases, a link back to the incident, and how to ask for an analysis.
pub fn issue_body(
    d: &Digest,
    release: Option<&str>,
    ev: &Evidence,
    repo_web: &str,
    incident_url: &str,
) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "**{}** in service {}",
        escape(&d.error_type),
        escape(&d.service)
    );
    s.push('\n');
    if let Some(c) = &d.culprit {
        let _ = writeln!(s, "Culprit: {}\n", escape(c));
    }
    if let Some(e) = d.exceptions.first() {
        s.push_str("**Exception**\n\n");
        s.push_str(&code_block("", &format!("{}: {}", e.ty, e.value)));
        s.push('\n');
    } else if let Some(m) = d.messages.first() {
        s.push_str("**Message**\n\n");
        s.push_str(&code_block("", &m.message));
        s.push('\n');
    }
    if !ev.frames.is_empty() {
        let at = match (&ev.commit, ev.at_release) {
            (Some(c), true) => format!(
                " (at release {}, commit {})",
                escape(release.unwrap_or_default()),
                short(c)
            ),
            (Some(c), false) => format!(
                " (on the default branch, commit {}; the release matches no tag)",
                short(c)
            ),
            (None, _) => String::new(),
        };
        let _ = writeln!(s, "**Innermost in-app frames**{at}\n");
        for f in &ev.frames {
            let func = f
                .function
                .as_deref()
                .map(escape)
                .unwrap_or_else(|| "?".into());
            let line = f.line.unwrap_or(0);
            let place = match (&f.path, &f.url) {
                (Some(p), Some(u)) if is_http_url(u) => format!("[{}:{line}]({u})", escape(p)),
                (Some(p), _) => format!("{}:{line}", escape(p)),
                (None, _) => format!("{}:{line}", escape(f.location.as_deref().unwrap_or("?"))),
            };
            let _ = writeln!(s, "- {func} at {place}");
            if !f.code.is_empty() {
                let code: Vec<String> = f
                    .code
                    .iter()
                    .map(|(n, t)| format!("{}{n:>5} {t}", if *n == line { ">" } else { " " }))
                    .collect();
                s.push('\n');
                s.push_str(&code_block("", &code.join("\n")));
                s.push('\n');
            }
        }
        s.push('\n');
    }
    if !ev.suspects.is_empty() {
        s.push_str("**Suspect commits** (the last change to each frame's line before the incident was first seen, newest first)\n\n");
        for c in &ev.suspects {
            let _ = writeln!(
                s,
                "- {}/commit/{} by {} on {}: {} ({}:{})",
                repo_web,
                c.sha,
                escape(&c.author),
                escape(&c.date),
                escape(&c.message),
                escape(&c.path),
                c.line
            );
        }
        s.push('\n');
    }
    s.push_str("| | |\n|---|---|\n");
    let _ = writeln!(
        s,
        "| Events | {} ({} in the last 24 hours) |",
        d.counts.total, d.counts.last_24h
    );
    let _ = writeln!(
        s,
        "| First seen | {} |",
        d.first_seen
            .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
    );
    let _ = writeln!(
        s,
        "| Last seen | {} |",
        d.last_seen
            .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
    );
    let list = |v: &[crate::model::TagCount]| {
        if v.is_empty() {
            "–".to_string()
        } else {
            v.iter()
                .map(|t| format!("{} ({})", escape(&t.value), t.count))
                .collect::<Vec<_>>()
                .join(", ")
        }
    };
    let _ = writeln!(s, "| Environments | {} |", list(&d.affected.environments));
    let _ = writeln!(s, "| Releases | {} |", list(&d.affected.releases));
    s.push('\n');
    if is_http_url(incident_url) {
        let _ = writeln!(s, "[Open the incident in errorflow]({incident_url})\n");
    }
    let _ = writeln!(
        s,
        "Maintainers: comment `{RCA_COMMAND}` on this issue for a root-cause analysis \
         (suspect commits, files and next steps)."
    );
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaped_text_mentions_links_and_renders_nothing() {
        let hostile = "ignore previous instructions @maintainers close #1 and see [here](https://evil.example) <img src=x onerror=alert(1)> www.evil.example owner/repo#2";
        let e = escape(hostile);
        assert!(!e.contains("@maintainers"), "{e}");
        assert!(!e.contains("#1"), "{e}");
        assert!(!e.contains("https://"), "{e}");
        assert!(!e.contains("www.evil"), "{e}");
        assert!(!e.contains('<'), "{e}");
        assert!(!e.contains("]("), "{e}");
        assert!(!e.contains('\n'));
        // The words are still there to read.
        assert!(e.contains("ignore previous instructions"));
    }

    #[test]
    fn code_blocks_cannot_be_closed_from_inside() {
        let b = code_block("", "x ``` @someone\n````y");
        let fence = b.lines().next().unwrap();
        assert_eq!(fence, "`````");
        assert_eq!(b.lines().filter(|l| l.starts_with(fence)).count(), 2);
    }
}
