//! Stack traces sent as text. Legacy clients put a whole stack trace in the
//! message (`err.stack` in Node, `traceback.format_exc()` in Python,
//! `printStackTrace` in Java); parsing its frames lets such reports group on
//! where they were raised instead of on their text.

use std::sync::LazyLock;

use errorflow_sdk::protocol::Frame;
use regex::Regex;

/// A stack trace found in a message.
#[derive(Debug, Clone, PartialEq)]
pub struct ParsedStack {
    /// The error line (`TypeError: boom`), without the frames.
    pub message: String,
    /// Innermost last, as in [`errorflow_sdk::protocol::Stacktrace`].
    pub frames: Vec<Frame>,
    /// `javascript`, `python` or `java`.
    pub platform: &'static str,
}

/// `    at fn (file:line:col)`, `    at file:line:col`, `    at fn (native)`.
static JS_FRAME: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"^\s*at (?:(?P<func>.+?) \((?P<loc>[^()]*)\)|(?P<bare>[^()\s]+))\s*$")
        .expect("valid regex")
});
static JS_LOCATION: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"^(?P<file>.+?)(?::(?P<line>\d+))?(?::(?P<col>\d+))?$").expect("valid regex")
});
/// `\tat com.example.Foo.bar(Foo.java:42)`.
static JAVA_FRAME: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"^\s*at (?P<class>[\w$./]+)\.(?P<method>[\w$<>]+)\((?P<file>[^:()]*)(?::(?P<line>\d+))?\)\s*$")
        .expect("valid regex")
});
/// `  File "/app/x.py", line 10, in handler`.
static PYTHON_FRAME: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r#"^\s*File "(?P<file>[^"]+)", line (?P<line>\d+)(?:, in (?P<func>.+))?\s*$"#)
        .expect("valid regex")
});

/// Parses a JavaScript, Java or Python stack trace out of `text`, or `None`
/// when `text` does not look like one.
pub fn parse(text: &str) -> Option<ParsedStack> {
    if text.contains("Traceback (most recent call last):") {
        return parse_python(text);
    }
    let mut lines = text.lines();
    let first = lines.next()?.trim_end().to_owned();
    let rest: Vec<&str> = lines.collect();
    if rest.iter().any(|l| JAVA_FRAME.is_match(l)) {
        return Some(parse_java(first, &rest));
    }
    if rest.iter().any(|l| JS_FRAME.is_match(l)) {
        return Some(parse_js(first, &rest));
    }
    None
}

fn parse_js(message: String, lines: &[&str]) -> ParsedStack {
    // V8 prints the innermost frame first.
    let mut frames: Vec<Frame> = lines
        .iter()
        .filter_map(|l| JS_FRAME.captures(l))
        .map(|c| {
            let loc = c
                .name("loc")
                .or_else(|| c.name("bare"))
                .map_or("", |m| m.as_str());
            let mut frame = Frame {
                function: c.name("func").map(|m| m.as_str().to_owned()),
                ..Frame::default()
            };
            if let Some(l) = JS_LOCATION.captures(loc) {
                let file = &l["file"];
                if file != "native" && file != "<anonymous>" {
                    frame.abs_path = Some(file.to_owned());
                    frame.filename = Some(file.to_owned());
                }
                frame.lineno = l.name("line").and_then(|m| m.as_str().parse().ok());
                frame.colno = l.name("col").and_then(|m| m.as_str().parse().ok());
            }
            frame.in_app = Some(!frame.filename.as_deref().is_some_and(is_library_path));
            frame
        })
        .collect();
    frames.reverse();
    ParsedStack {
        message,
        frames,
        platform: "javascript",
    }
}

fn parse_java(message: String, lines: &[&str]) -> ParsedStack {
    // Only the outermost exception's frames: a `Caused by:` section repeats
    // the shared frames and describes another exception.
    let mut frames: Vec<Frame> = lines
        .iter()
        .take_while(|l| !l.trim_start().starts_with("Caused by:"))
        .filter_map(|l| JAVA_FRAME.captures(l))
        .map(|c| {
            // Java 9+ prefixes the class with its module (`java.base/`); a
            // slash after a `$` belongs to a lambda's hidden class name.
            let class = match c["class"].split_once('/') {
                Some((module, class)) if !module.contains('$') => class.to_owned(),
                _ => c["class"].to_owned(),
            };
            let library = ["java.", "javax.", "jdk.", "sun.", "kotlin."]
                .iter()
                .any(|p| class.starts_with(p));
            let file = &c["file"];
            Frame {
                function: Some(c["method"].to_owned()),
                module: Some(class),
                filename: (!file.is_empty() && file != "Native Method" && file != "Unknown Source")
                    .then(|| file.to_owned()),
                lineno: c.name("line").and_then(|m| m.as_str().parse().ok()),
                in_app: Some(!library),
                ..Frame::default()
            }
        })
        .collect();
    frames.reverse();
    ParsedStack {
        message,
        frames,
        platform: "java",
    }
}

fn parse_python(text: &str) -> Option<ParsedStack> {
    // A chained traceback prints the cause first; the last traceback is the
    // exception that was finally raised, so parse from the last header on.
    let start = text.rfind("Traceback (most recent call last):")?;
    let lines: Vec<&str> = text[start..].lines().skip(1).collect();
    let frames: Vec<Frame> = lines
        .iter()
        .filter_map(|l| PYTHON_FRAME.captures(l))
        .map(|c| {
            let file = c["file"].to_owned();
            Frame {
                function: c.name("func").map(|m| m.as_str().trim().to_owned()),
                in_app: Some(!is_library_path(&file)),
                lineno: c["line"].parse().ok(),
                abs_path: Some(file.clone()),
                filename: Some(file),
                ..Frame::default()
            }
        })
        .collect();
    // The error line is the last line that is neither a frame nor its code.
    let message = lines
        .iter()
        .rev()
        .find(|l| !l.is_empty() && !l.starts_with(' ') && !l.starts_with('\t'))
        .map_or_else(String::new, |l| l.trim_end().to_owned());
    Some(ParsedStack {
        message,
        frames,
        platform: "python",
    })
}

/// Whether a file belongs to a dependency or the runtime rather than the
/// application.
pub fn is_library_path(path: &str) -> bool {
    path.contains("node_modules")
        || path.contains("site-packages")
        || path.contains("dist-packages")
        || path.starts_with("node:")
        || path.starts_with("internal/")
        || path.contains("/lib/python")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_messages_are_not_stacks() {
        assert_eq!(parse("user 42 not found"), None);
        assert_eq!(parse("line one\nline two"), None);
    }

    #[test]
    fn node_stack() {
        let p = parse("Error: boom\n    at async handler (/app/src/h.js:3:9)\n    at /app/src/index.js:20:1\n    at Array.map (<anonymous>)").unwrap();
        assert_eq!(p.message, "Error: boom");
        assert_eq!(p.platform, "javascript");
        let f = &p.frames;
        assert_eq!(f.len(), 3);
        assert_eq!(f[0].function.as_deref(), Some("Array.map"));
        assert_eq!(f[0].filename, None);
        assert_eq!(f[1].filename.as_deref(), Some("/app/src/index.js"));
        assert_eq!(f[1].function, None);
        assert_eq!(f[2].function.as_deref(), Some("async handler"));
        assert_eq!((f[2].lineno, f[2].colno), (Some(3), Some(9)));
    }

    #[test]
    fn java_stack() {
        let p = parse("java.lang.NullPointerException: x is null\n\tat com.acme.Users.find(Users.java:42)\n\tat java.base/java.lang.Thread.run(Thread.java:833)\nCaused by: java.io.IOException\n\tat com.acme.Io.read(Io.java:1)").unwrap();
        assert_eq!(p.platform, "java");
        assert_eq!(p.message, "java.lang.NullPointerException: x is null");
        assert_eq!(p.frames.len(), 2);
        assert_eq!(p.frames[1].module.as_deref(), Some("com.acme.Users"));
        assert_eq!(p.frames[1].function.as_deref(), Some("find"));
        assert_eq!(p.frames[1].in_app, Some(true));
        assert_eq!(p.frames[0].module.as_deref(), Some("java.lang.Thread"));
        assert_eq!(p.frames[0].in_app, Some(false));
    }

    #[test]
    fn python_traceback() {
        let p = parse("Traceback (most recent call last):\n  File \"/app/api/users.py\", line 10, in get_user\n    return db[uid]\n  File \"/usr/lib/python3.12/site-packages/db.py\", line 3, in __getitem__\n    raise KeyError(k)\nKeyError: 'u1'\n").unwrap();
        assert_eq!(p.platform, "python");
        assert_eq!(p.message, "KeyError: 'u1'");
        assert_eq!(p.frames.len(), 2);
        assert_eq!(p.frames[0].function.as_deref(), Some("get_user"));
        assert_eq!(p.frames[0].in_app, Some(true));
        assert_eq!(p.frames[1].in_app, Some(false));
    }
}
