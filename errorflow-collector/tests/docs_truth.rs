//! Comments say what is true now and why; the history of how it came to be
//! belongs in git. This test keeps the code's comments free of citations of
//! a run's date, a numbered session or a dated machine ("measured on
//! 2026-11-28", an ordinal before "session", "the 2026-11-28 machine"), which a
//! reader cannot check and which go stale with the next change.
//!
//! It reads the comments of every Rust file under `errorflow-*/src` (`//`,
//! `//!`, `///` and `/* … */`) and the `#` comments of the TOML files under
//! `.cargo/`. String literals are not comments: a date in a test's input data
//! is fine, and so is a date inside a comment's code span (`` `2024-05-01` ``),
//! which is an example value, not a citation. Benchmark figures with their
//! date and machine belong in BENCHMARKS.md.

use std::path::{Path, PathBuf};
use std::sync::LazyLock;

use regex::Regex;

/// One comment: the file, the line it starts on, and its text.
#[derive(Debug)]
struct Comment {
    line: usize,
    text: String,
}

/// The comments of a Rust source file. A small lexer, because a regex over
/// lines cannot tell `// …` inside a string (`"https://…"`) from a comment:
/// it skips string literals (with escapes), raw strings (`r#"…"#`, any number
/// of `#`), char literals (told apart from lifetimes) and nested block
/// comments.
fn rust_comments(src: &str) -> Vec<Comment> {
    let b = src.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    let mut line = 1;
    // Advances over b[i], counting lines.
    macro_rules! bump {
        () => {{
            if b[i] == b'\n' {
                line += 1;
            }
            i += 1;
        }};
    }
    while i < b.len() {
        let c = b[i];
        let next = b.get(i + 1).copied();
        if c == b'/' && next == Some(b'/') {
            let start = i;
            while i < b.len() && b[i] != b'\n' {
                i += 1;
            }
            out.push(Comment {
                line,
                text: src[start..i].to_string(),
            });
        } else if c == b'/' && next == Some(b'*') {
            let (start, start_line) = (i, line);
            let mut depth = 0usize;
            while i < b.len() {
                if b[i] == b'/' && b.get(i + 1) == Some(&b'*') {
                    depth += 1;
                    i += 2;
                } else if b[i] == b'*' && b.get(i + 1) == Some(&b'/') {
                    depth -= 1;
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    bump!();
                }
            }
            out.push(Comment {
                line: start_line,
                text: src[start..i].to_string(),
            });
        } else if c == b'"' {
            bump!();
            while i < b.len() && b[i] != b'"' {
                if b[i] == b'\\' {
                    bump!();
                }
                if i < b.len() {
                    bump!();
                }
            }
            i += 1;
        } else if let Some(hashes) = raw_string_start(b, i) {
            i += 1 + hashes + 1; // `r`, the hashes, the opening quote
            let closing = format!("\"{}", "#".repeat(hashes));
            let closing = closing.as_bytes();
            while i < b.len() && !b[i..].starts_with(closing) {
                bump!();
            }
            i += closing.len();
        } else if c == b'\'' {
            // A char literal ('x', '\n', '\u{1F600}', '"') or a lifetime ('a).
            if next == Some(b'\\') {
                // Past the quote, the backslash and the escaped character.
                i += 3;
                while i < b.len() && b[i] != b'\'' {
                    i += 1;
                }
                i += 1;
            } else if let Some(ch) = src[i + 1..].chars().next() {
                let after = i + 1 + ch.len_utf8();
                if b.get(after) == Some(&b'\'') {
                    i = after + 1;
                } else {
                    i += 1;
                }
            } else {
                i += 1;
            }
        } else {
            bump!();
        }
    }
    out
}

/// The number of `#` of the raw string (`r"…"`, `r#"…"#`, `br"…"`) that
/// starts at `b[i]`, if one does (not a raw identifier such as `r#type`, nor
/// the end of an identifier such as `for"`).
fn raw_string_start(b: &[u8], i: usize) -> Option<usize> {
    let ident = |c: u8| c.is_ascii_alphanumeric() || c == b'_';
    if b[i] != b'r' || (i > 0 && ident(b[i - 1]) && !matches!(b[i - 1], b'b' | b'c')) {
        return None;
    }
    let hashes = b[i + 1..].iter().take_while(|&&c| c == b'#').count();
    (b.get(i + 1 + hashes) == Some(&b'"')).then_some(hashes)
}

/// The `#` comments of a TOML file, skipping `#` inside basic ("…", with
/// escapes), literal ('…') and multi-line ("""…""", '''…''') strings.
fn toml_comments(src: &str) -> Vec<Comment> {
    let b = src.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    let mut line = 1;
    while i < b.len() {
        let c = b[i];
        if c == b'#' {
            let start = i;
            while i < b.len() && b[i] != b'\n' {
                i += 1;
            }
            out.push(Comment {
                line,
                text: src[start..i].to_string(),
            });
        } else if c == b'"' || c == b'\'' {
            let triple = [c, c, c];
            let multi = b[i..].starts_with(&triple);
            i += if multi { 3 } else { 1 };
            while i < b.len() {
                if c == b'"' && b[i] == b'\\' {
                    if b.get(i + 1) == Some(&b'\n') {
                        line += 1;
                    }
                    i += 2;
                    continue;
                }
                if multi && b[i..].starts_with(&triple) {
                    i += 3;
                    break;
                }
                if !multi && (b[i] == c || b[i] == b'\n') {
                    i += 1;
                    break;
                }
                if b[i] == b'\n' {
                    line += 1;
                }
                i += 1;
            }
        } else {
            if c == b'\n' {
                line += 1;
            }
            i += 1;
        }
    }
    out
}

/// What a comment must not say, each with the reason shown on failure.
fn citations() -> Vec<(Regex, &'static str)> {
    const MONTHS: &str = "January|February|March|April|May|June|July|August|September|October|November|December|Jan|Feb|Mar|Apr|Jun|Jul|Aug|Sep|Sept|Oct|Nov|Dec";
    const ORDINALS: &str = "first|second|third|fourth|fifth|sixth|seventh|eighth|ninth|tenth|eleventh|twelfth|thirteenth|fourteenth|fifteenth|sixteenth|seventeenth|eighteenth|nineteenth|twentieth|previous|earlier|\\d+(?:st|nd|rd|th)";
    vec![
        (
            Regex::new(r"\b20\d\d-[01]\d-[0-3]\d\b").unwrap(),
            "a date (a run's date belongs in BENCHMARKS.md; an example value goes in `code`)",
        ),
        (
            Regex::new(&format!(
                r"(?i)\b(?:\d{{1,2}} (?:{MONTHS}),? 20\d\d|(?:{MONTHS}) \d{{1,2}},? 20\d\d)\b"
            ))
            .unwrap(),
            "a date written out",
        ),
        (
            Regex::new(&format!(r"(?i)\b(?:{ORDINALS}) session\b")).unwrap(),
            "a numbered session",
        ),
        (
            Regex::new(r"(?i)\bsession(?:s)? ?#?\d+\b").unwrap(),
            "a numbered session",
        ),
        (
            Regex::new(r"(?i)\b(?:session|run)'s machine\b").unwrap(),
            "a session's or a run's machine",
        ),
    ]
}

/// The findings in one comment: `(reason, matched text)`. Code spans
/// (`` `…` ``) are blanked first: what they hold is an example value.
fn findings(comment: &str, rules: &[(Regex, &'static str)]) -> Vec<(&'static str, String)> {
    static CODE_SPAN: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"`[^`]*`").unwrap());
    let prose = CODE_SPAN.replace_all(comment, "``");
    rules
        .iter()
        .filter_map(|(re, why)| re.find(&prose).map(|m| (*why, m.as_str().to_string())))
        .collect()
}

fn files_with_extension(dir: &Path, ext: &str, out: &mut Vec<PathBuf>) {
    let entries = std::fs::read_dir(dir).unwrap_or_else(|e| panic!("read {}: {e}", dir.display()));
    for entry in entries {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files_with_extension(&path, ext, out);
        } else if path.extension().is_some_and(|e| e == ext) {
            out.push(path);
        }
    }
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

#[test]
fn no_comment_cites_a_run_date_a_machine_or_a_session() {
    let root = workspace_root();
    let mut rust_files = Vec::new();
    for entry in std::fs::read_dir(&root).unwrap() {
        let path = entry.unwrap().path();
        let is_crate = path
            .file_name()
            .is_some_and(|n| n.to_string_lossy().starts_with("errorflow-"));
        if is_crate && path.join("src").is_dir() {
            files_with_extension(&path.join("src"), "rs", &mut rust_files);
        }
    }
    let mut toml_files = Vec::new();
    files_with_extension(&root.join(".cargo"), "toml", &mut toml_files);
    // A wrong root would find nothing and pass: refuse that loudly.
    assert!(
        rust_files.len() >= 30,
        "found only {} Rust files under {}/errorflow-*/src",
        rust_files.len(),
        root.display()
    );
    assert!(
        !toml_files.is_empty(),
        "no TOML file under {}/.cargo",
        root.display()
    );

    let rules = citations();
    let mut problems = Vec::new();
    let mut scan = |path: &Path, comments: Vec<Comment>| {
        for c in comments {
            for (why, found) in findings(&c.text, &rules) {
                problems.push(format!(
                    "{}:{}: {why}: {found:?} in {:?}",
                    path.strip_prefix(&root).unwrap_or(path).display(),
                    c.line,
                    c.text.trim()
                ));
            }
        }
    };
    for path in &rust_files {
        scan(path, rust_comments(&std::fs::read_to_string(path).unwrap()));
    }
    for path in &toml_files {
        scan(path, toml_comments(&std::fs::read_to_string(path).unwrap()));
    }
    assert!(
        problems.is_empty(),
        "comments cite a run's date, a machine or a session; say what is true now and why \
         (figures with their date go in BENCHMARKS.md, history in commit messages):\n{}",
        problems.join("\n")
    );
}

/// The fixtures' ordinals, spelled out only here so that no source line
/// of this repository reads as a citation itself.
fn with_ordinals(text: &str) -> String {
    text.replace("{TENTH}", "tenth")
        .replace("{TWELFTH}", "twelfth")
        .replace("{FOURTEENTH}", "fourteenth")
}

/// The scanner itself: it finds citations in each kind of comment, and
/// nowhere else.
#[test]
fn the_scanner_reads_comments_not_strings() {
    let rules = citations();
    let flagged = |comments: Vec<Comment>| -> Vec<usize> {
        comments
            .iter()
            .filter(|c| !findings(&c.text, &rules).is_empty())
            .map(|c| c.line)
            .collect()
    };
    let rust = &with_ordinals(
        r####"//! Measured on 2026-11-28.
/// Faster on the {TENTH} session's build box.
fn f<'a>(s: &'a str) -> char {
    let url = "https://example.com/2026-11-28 // not a comment";
    let raw = r#"a "quoted" // 2026-11-28 {FOURTEENTH} session"#;
    let c = '"'; // Group commit: one fsync per batch (see `2024-05-01`).
    let q = '\''; /* nested /* 2026-11-29 */ still
    a comment */
    let d = "\"2026-01-01\"";
    'x' // {TWELFTH} session
}
// A dashboard session lasts a week; session cookies are HttpOnly.
"####,
    );
    assert_eq!(flagged(rust_comments(rust)), vec![1, 2, 7, 10]);

    let toml = &with_ordinals(
        r##"# Faster since the {FOURTEENTH} session.
key = "a # 2026-11-29 inside a string"
lit = 'b # 2026-11-29'
multi = """
# 2026-11-29 still a string
"""
flags = "-DX=0" # 9 % fewer instructions (BENCHMARKS.md, 2026-11-29).
"##,
    );
    assert_eq!(flagged(toml_comments(toml)), vec![1, 7]);
}
