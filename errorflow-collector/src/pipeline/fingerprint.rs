//! Fingerprinting: which incident an event belongs to, plus the derived
//! fields (title, culprit, error type, …) of a [`NormalizedEvent`].
//!
//! Grouping tries, in this order:
//!
//! 1. the client's fingerprint, where `{{ default }}` stands for the
//!    server's own components;
//! 2. the in-app frames: for each exception of the chain (outermost
//!    first), its type, its innermost in-app frames as `module::function`
//!    (without line numbers, addresses, hashes or generic parameters, so
//!    that a deploy which only moves code does not split incidents) and
//!    the source line that raised it when the SDK sent one (Python, Node);
//!    then a logging call's `%s` template when present, and the service.
//!    A message event without exception but with a stack (Sentry's
//!    `threads`, an SDK with `attach_stacktrace`) groups the same way, on
//!    the frames and the line that logged it;
//! 3. without in-app frames: the exception type (or the level of a plain
//!    message), the parameterised value or message template, and the service.
//!
//! The components are hashed with SHA-256. Any change to what goes into the
//! components must bump [`FINGERPRINT_VERSION`]: the version is stored with
//! each group so that a new algorithm does not silently split incidents.

use std::borrow::Cow;
use std::sync::LazyLock;

use errorflow_sdk::protocol::{Event, Exception, Frame, Level};
use regex::Regex;
use sha2::{Digest, Sha256};

use super::parameterize::parameterize;
use super::stack_text::is_library_path;
use crate::model::NormalizedEvent;

/// Version of the grouping algorithm below.
///
/// - 1: frames and exception types only; message events by message.
/// - 2: the raising source line, the logging template and the service join
///   the frames; message events with a stack group on their frames; SDK and
///   C-runtime frames are matched by exact crate or symbol names; CommonJS
///   module code is an entry point.
/// - 3: the raise site decides a stack: the innermost in-app frame (and its
///   line) per exception, not its callers; a message template takes part
///   only when it has placeholders; prefixed identifiers (`inv_3fa2b1c0d9e8`)
///   and durations glued to words are parameterised.
/// - 4: text is in Unicode NFC before it is fingerprinted (normalisation), so
///   composed and decomposed forms of the same words group together. Text
///   already in NFC (all ASCII, and what nearly every platform sends) gives
///   the same components as in version 3, so its incidents keep matching;
///   only decomposed text gets new fingerprints, those of its composed form.
pub const FINGERPRINT_VERSION: i32 = 4;

/// In-app frames per exception that take part in grouping. Deeper frames
/// (the framework's dispatch, `main`) add nothing but sensitivity to
/// refactors far from the error.
pub const MAX_GROUPING_FRAMES: usize = 10;

/// Characters of a title.
pub const MAX_TITLE_CHARS: usize = 200;

/// Hex characters of a fingerprint (128 bits of the SHA-256 digest).
const FINGERPRINT_HEX_CHARS: usize = 32;

/// Builds the stored form of a normalised event: fingerprint, title,
/// culprit and the other derived fields.
pub fn build(event: Event, ctx: &super::Context) -> NormalizedEvent {
    let grouping = Grouping::of(&event);
    let fingerprint = hash(&components_of(&event, &grouping));
    let error_type = error_type(&event);
    let service = event
        .service
        .clone()
        .unwrap_or_else(|| super::normalize::DEFAULT_SERVICE.to_owned());
    let environment = event
        .environment
        .clone()
        .unwrap_or_else(|| super::normalize::DEFAULT_ENVIRONMENT.to_owned());
    let path = event
        .request
        .as_ref()
        .and_then(|r| r.url.as_deref())
        .map(url_path)
        .unwrap_or_default()
        .to_owned();
    let trace_id = event
        .trace_id
        .clone()
        .unwrap_or_else(|| event.event_id.simple().to_string());
    let message = match event.exception.first() {
        Some(e) if e.value.is_empty() => e.ty.clone(),
        Some(e) => format!("{}: {}", e.ty, e.value),
        None => event.message.clone().unwrap_or_default(),
    };

    // The event's own fields win over client tags of the same name, so the
    // incident's tag breakdown always agrees with the stored columns.
    let mut tags = event.tags.clone();
    tags.insert("environment".to_owned(), environment.clone());
    tags.insert("service".to_owned(), service.clone());
    tags.insert("level".to_owned(), event.level.as_str().to_owned());
    if let Some(release) = &event.release {
        tags.insert("release".to_owned(), release.clone());
    }
    if let Some(host) = &event.host {
        tags.insert("host".to_owned(), host.clone());
    }
    // The route, not the path: a tag value per order id would give every
    // incident as many tag rows as events, and a useless breakdown.
    let route = event.request.as_ref().and_then(|r| r.route.as_deref());
    match route {
        Some(route) if !route.is_empty() => {
            tags.insert("path".to_owned(), route.to_owned());
        }
        _ if !path.is_empty() => {
            tags.insert("path".to_owned(), super::parameterize::path_template(&path));
        }
        _ => {}
    }

    NormalizedEvent {
        project_id: ctx.project_id,
        event_id: event.event_id,
        timestamp: event.timestamp.unwrap_or(ctx.received_at),
        received_at: ctx.received_at,
        level: event.level,
        cluster_key: format!("{service}:{error_type}"),
        title: title(&event),
        culprit: culprit(&event, &grouping),
        fingerprint,
        fingerprint_version: FINGERPRINT_VERSION,
        service,
        error_type,
        message,
        environment,
        path,
        trace_id,
        release: event.release.clone(),
        host: event.host.clone(),
        tags,
        event,
        event_json: Default::default(),
    }
}

/// The grouping components of `event`, before hashing. Public for
/// debugging and snapshot tests: two events group together exactly when
/// their components are equal.
pub fn components(event: &Event) -> Vec<String> {
    components_of(event, &Grouping::of(event))
}

/// Hashes components into a fingerprint. Each component is prefixed with
/// its length so that `["ab", "c"]` and `["a", "bc"]` differ.
pub fn hash(components: &[String]) -> String {
    let mut hasher = Sha256::new();
    for c in components {
        hasher.update((c.len() as u64).to_le_bytes());
        hasher.update(c.as_bytes());
    }
    let mut hex = hex::encode(hasher.finalize());
    hex.truncate(FINGERPRINT_HEX_CHARS);
    hex
}

/// The error type of an event: the outermost exception's type; for plain
/// messages, `Error` at level error or fatal, `Message` below.
pub fn error_type(event: &Event) -> String {
    match event.exception.first() {
        Some(e) => e.ty.clone(),
        None if event.level >= Level::Error => "Error".to_owned(),
        None => "Message".to_owned(),
    }
}

/// The grouping frames of each exception, computed once and shared by the
/// fingerprint and the culprit.
struct Grouping {
    /// Per exception (outermost first): its grouping frames, innermost last.
    frames: Vec<Vec<GroupingFrame>>,
}

struct GroupingFrame {
    /// `module::function` without the volatile parts.
    key: String,
    /// The frame's source line (`context_line`), trimmed, when the SDK sent
    /// one of a reasonable length.
    line: Option<String>,
    /// How the culprit shows this frame when not as its key: `function
    /// (file)` for JavaScript, whose files are its modules.
    display: Option<String>,
}

impl Grouping {
    fn of(event: &Event) -> Grouping {
        let platform = event.platform.as_deref().unwrap_or("");
        let event_platform = platform;
        let stacks = stacks(event);
        // When the SDK flagged frames, trust it; otherwise guess from names.
        let flagged = stacks
            .iter()
            .flat_map(|s| s.iter())
            .any(|f| f.in_app == Some(true));
        let frames = stacks
            .iter()
            .map(|stack| {
                let mut selected: Vec<GroupingFrame> = stack
                    .iter()
                    .enumerate()
                    .rev()
                    .filter_map(|(i, f)| {
                        if flagged && f.in_app != Some(true) {
                            return None;
                        }
                        let platform = frame_platform(f, platform);
                        if platform == Platform::JavaScript
                            && is_js_module_code(f, i.checked_sub(1).map(|c| &stack[c]))
                        {
                            return None;
                        }
                        let key = frame_key(f, platform)?;
                        if is_machinery(&key, f) || (!flagged && is_library(&key, f)) {
                            return None;
                        }
                        if !flagged && f.in_app == Some(false) {
                            return None;
                        }
                        let display = match platform {
                            Platform::JavaScript => js_display(f),
                            // Native code: the symbol alone, as Sentry shows it.
                            _ if super::frames::is_native_platform(event_platform) => {
                                f.function.clone()
                            }
                            _ => None,
                        };
                        let line = source_line(f);
                        Some(GroupingFrame { key, line, display })
                    })
                    .take(MAX_GROUPING_FRAMES)
                    .collect();
                selected.reverse();
                selected
            })
            .collect();
        Grouping { frames }
    }

    fn has_frames(&self) -> bool {
        self.frames.iter().any(|f| !f.is_empty())
    }
}

/// Source lines longer than this are minified or generated code, which
/// changes with every build: they do not identify a place in the code.
const MAX_SOURCE_LINE_CHARS: usize = 200;

/// The frame's line of source code, with its indentation and trailing
/// blanks removed (a re-indented block is the same code).
fn source_line(f: &Frame) -> Option<String> {
    let line = f.context_line.as_deref()?.trim();
    (!line.is_empty() && line.chars().count() <= MAX_SOURCE_LINE_CHARS)
        .then(|| line.split_whitespace().collect::<Vec<_>>().join(" "))
}

/// The stacks that take part in grouping: one per exception (outermost
/// first), or, for an event without exception, the event's own stack (the
/// thread's stack that SDKs attach to messages).
fn stacks(event: &Event) -> Vec<&[Frame]> {
    if event.exception.is_empty() {
        vec![event.stacktrace.as_ref().map_or(&[][..], |s| &s.frames[..])]
    } else {
        event.exception.iter().map(all_frames).collect()
    }
}

fn all_frames(e: &Exception) -> &[Frame] {
    e.stacktrace.as_ref().map_or(&[][..], |s| &s.frames[..])
}

fn components_of(event: &Event, grouping: &Grouping) -> Vec<String> {
    match &event.fingerprint {
        Some(client) if !client.is_empty() => {
            let mut out = vec!["client".to_owned()];
            for c in client {
                if DEFAULT_PLACEHOLDER.is_match(c) {
                    out.extend(default_components(event, grouping));
                } else {
                    out.push(c.clone());
                }
            }
            out
        }
        _ => default_components(event, grouping),
    }
}

static DEFAULT_PLACEHOLDER: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"^\s*\{\{\s*default\s*\}\}\s*$").expect("valid regex"));

fn default_components(event: &Event, grouping: &Grouping) -> Vec<String> {
    if grouping.has_frames() {
        return stack_components(event, grouping);
    }
    let template = message_template(event);
    let (kind, text) = match event.exception.first() {
        Some(e) if !e.value.is_empty() => (e.ty.clone(), e.value.as_str()),
        Some(e) => (e.ty.clone(), template.unwrap_or("")),
        None => (event.level.as_str().to_owned(), template.unwrap_or("")),
    };
    let mut out = vec![
        "message".to_owned(),
        kind,
        parameterize(text),
        service_component(event),
    ];
    // An event with nothing but its context (Sentry's `<unlabeled
    // event>`): its request's route, when it has one, tells such events apart.
    if event.exception.is_empty() && template.is_none() {
        if let Some(route) = unlabeled_route(event) {
            out.push(format!("route:{route}"));
        }
    }
    out
}

/// The route or path template of an unlabeled event's request.
fn unlabeled_route(event: &Event) -> Option<String> {
    let request = event.request.as_ref()?;
    let route = match request.route.as_deref().filter(|r| !r.is_empty()) {
        Some(route) => route.to_owned(),
        None => super::parameterize::path_template(url_path(request.url.as_deref()?)),
    };
    let method = request.method.as_deref().unwrap_or("");
    Some(format!("{method} {route}").trim().to_owned()).filter(|r| !r.is_empty())
}

/// Grouping by the place in the code: for each exception of the chain, its
/// type, its in-app frames and the source line that raised it (the
/// innermost in-app frame's `context_line`, when the SDK read the source);
/// for a message with a stack, its frames and the line that logged it.
///
/// The exception's value and a formatted message take no part here. At one
/// site they vary in ways no parameterisation can know (`declined:
/// do_not_honor`, a JSON parser's `Unexpected token` or `Unexpected end of
/// input`, an enum's `Debug`, an embedded `{err}`), and the frames plus the
/// raising line already tell two raises of one function apart. A logging
/// template takes part: it is constant at its call site. (Native frames
/// carry no source line: there, two raises in one function share an
/// incident.)
fn stack_components(event: &Event, grouping: &Grouping) -> Vec<String> {
    let mut out = vec!["stack".to_owned()];
    // The raise site decides: the innermost in-app frame and its line. The
    // callers above it are context: one bug reached through two callers is
    // one incident.
    let push_frames = |out: &mut Vec<String>, frames: &[GroupingFrame]| {
        if let Some(site) = frames.last() {
            out.push(format!("frame:{}", site.key));
            if let Some(line) = site.line.as_deref() {
                out.push(format!("line:{line}"));
            }
        }
    };
    if event.exception.is_empty() {
        push_frames(&mut out, &grouping.frames[0]);
    }
    for (exception, frames) in event.exception.iter().zip(&grouping.frames) {
        out.push(format!("type:{}", exception.ty));
        push_frames(&mut out, frames);
    }
    // A template with placeholders is constant at its call site; text
    // without any is a formatted message (an f-string, `format!`) whose
    // words vary, and the frames already name the call site.
    if let Some(template) = event
        .message_template
        .as_deref()
        .filter(|t| has_placeholder(t))
    {
        out.push(format!("message:{}", parameterize(template)));
    }
    out.push(service_component(event));
    out
}

/// Whether a logging template has a placeholder: `%s`, `%d`, `%(name)s`,
/// `{}`, `{0}`, `{name}`.
fn has_placeholder(template: &str) -> bool {
    static PLACEHOLDER: LazyLock<Regex> = LazyLock::new(|| {
        Regex::new(
            r"%(?:\([A-Za-z_][A-Za-z0-9_]*\))?[-+ #0-9.]*[sdifrxXoeEgGc]|\{[A-Za-z0-9_:.!<>^]*\}",
        )
        .expect("valid regex")
    });
    PLACEHOLDER.is_match(template)
}

/// The message as written in the code: a logging call's template (`order
/// %s failed`) when the SDK sent one, else the formatted message.
fn message_template(event: &Event) -> Option<&str> {
    event
        .message_template
        .as_deref()
        .or(event.message.as_deref())
        .filter(|m| !m.trim().is_empty())
}

/// Incidents are per service: the same code deployed as two services (a
/// web process and a worker) fails in two places that are fixed and
/// released separately.
fn service_component(event: &Event) -> String {
    format!("service:{}", event.service.as_deref().unwrap_or(""))
}

/// `Type: parameterised first line of the value`, or the parameterised
/// first line of a plain message's template (the same for every event of
/// the incident, whatever the template's arguments were).
fn title(event: &Event) -> String {
    let title = match event.exception.first() {
        Some(e) => {
            let first = first_line(&e.value);
            if first.is_empty() {
                e.ty.clone()
            } else {
                format!("{}: {}", e.ty, parameterize(first))
            }
        }
        None => match message_template(event) {
            Some(template) => parameterize(first_line(template)),
            // Sentry's title for an event with neither message nor exception.
            None => UNLABELED_TITLE.to_owned(),
        },
    };
    super::normalize::truncate(title, MAX_TITLE_CHARS)
}

/// The title of an event with neither message nor exception, as in Sentry.
pub const UNLABELED_TITLE: &str = "<unlabeled event>";

fn first_line(s: &str) -> &str {
    s.lines().next().unwrap_or("").trim_end()
}

/// Where the error happened: the innermost grouping frame of the outermost
/// exception that has one; else, for native frames that have only
/// addresses, the binary of the innermost one that may be the
/// application's; else the transaction; else the logger; else, for an
/// event with neither message nor exception, the request's URL (Sentry's
/// culprit for an event with only a request).
fn culprit(event: &Event, grouping: &Grouping) -> Option<String> {
    grouping
        .frames
        .iter()
        .find_map(|frames| frames.last())
        .map(|f| f.display.clone().unwrap_or_else(|| f.key.clone()))
        .or_else(|| image_culprit(event))
        .or_else(|| event.transaction.clone())
        .or_else(|| event.logger.clone())
        .or_else(|| {
            if !event.exception.is_empty() || message_template(event).is_some() {
                return None;
            }
            let url = event.request.as_ref()?.url.as_deref()?;
            let end = url.find(['?', '#']).unwrap_or(url.len());
            Some(url[..end].to_owned()).filter(|u| !u.is_empty())
        })
}

/// The image name (`libgame.so`) of the innermost frame with a binary that
/// is not known to be someone else's, in the first stack that has one.
fn image_culprit(event: &Event) -> Option<String> {
    stacks(event).into_iter().find_map(|frames| {
        let with_package = || frames.iter().rev().filter(|f| f.package.is_some());
        with_package()
            .find(|f| f.in_app == Some(true))
            .or_else(|| with_package().find(|f| f.in_app.is_none()))
            .and_then(|f| f.package.as_deref())
            .map(|p| super::frames::image_name(p).to_owned())
            .filter(|name| !name.is_empty() && name != "???")
    })
}

/// The path part of a URL or path: no scheme, host, query or fragment.
fn url_path(url: &str) -> &str {
    let rest = match url.find("://") {
        Some(i) => {
            let after = &url[i + 3..];
            after.find('/').map_or("", |j| &after[j..])
        }
        None => url,
    };
    let end = rest.find(['?', '#']).unwrap_or(rest.len());
    &rest[..end]
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Platform {
    Rust,
    Python,
    JavaScript,
    Java,
    Other,
}

/// The frame's language: from its file extension when it has one (events
/// from mixed stacks exist), else from the event's platform.
fn frame_platform(f: &Frame, event_platform: &str) -> Platform {
    let file = f
        .filename
        .as_deref()
        .or(f.abs_path.as_deref())
        .unwrap_or("");
    let file = file.split(['?', '#']).next().unwrap_or("");
    let ext = file.rsplit_once('.').map_or("", |(_, ext)| ext);
    match ext {
        "rs" => return Platform::Rust,
        "py" => return Platform::Python,
        "js" | "mjs" | "cjs" | "jsx" | "ts" | "tsx" | "mts" | "cts" => return Platform::JavaScript,
        "java" | "kt" | "scala" => return Platform::Java,
        _ => {}
    }
    match event_platform {
        "rust" => Platform::Rust,
        "python" => Platform::Python,
        "javascript" | "node" | "typescript" => Platform::JavaScript,
        "java" | "kotlin" => Platform::Java,
        _ if f.function.as_deref().is_some_and(|s| s.contains("::")) => Platform::Rust,
        _ => Platform::Other,
    }
}

/// The frame's grouping key, or `None` when it has nothing stable to say.
fn frame_key(f: &Frame, platform: Platform) -> Option<String> {
    let function = f.function.as_deref().filter(|s| !s.is_empty());
    let module = f.module.as_deref().filter(|s| !s.is_empty());
    match platform {
        Platform::Rust => {
            let path = match (module, function) {
                (Some(m), Some(func)) if !func.contains("::") => format!("{m}::{func}"),
                (_, Some(func)) => func.to_owned(),
                (Some(m), None) => m.to_owned(),
                (None, None) => return None,
            };
            Some(rust_symbol(&path))
        }
        Platform::JavaScript => {
            let location = module
                .map(Cow::Borrowed)
                .or_else(|| js_file(f).map(Cow::Owned));
            let function = function.map(js_function).filter(|s| !s.is_empty());
            match (location, function) {
                (Some(l), Some(func)) => Some(format!("{l}::{func}")),
                (Some(l), None) => Some(l.into_owned()),
                (None, Some(func)) => Some(func),
                (None, None) => None,
            }
        }
        Platform::Java => {
            let function = function.map(java_method);
            match (module.map(java_method), function) {
                (Some(m), Some(func)) => Some(format!("{m}::{func}")),
                (Some(m), None) => Some(m),
                (None, Some(func)) => Some(func),
                (None, None) => None,
            }
        }
        Platform::Python | Platform::Other => {
            // Without a module, the file's stem stands in: directories
            // differ between deploys, the file name does not.
            let module = module.map(str::to_owned).or_else(|| {
                let file = f.filename.as_deref().or(f.abs_path.as_deref())?;
                let base = file.rsplit(['/', '\\']).next().unwrap_or(file);
                Some(
                    base.rsplit_once('.')
                        .map_or(base, |(stem, _)| stem)
                        .to_owned(),
                )
            });
            match (module, function) {
                (Some(m), Some(func)) => Some(format!("{m}::{func}")),
                (Some(m), None) => Some(m),
                (None, Some(func)) => Some(func.to_owned()),
                (None, None) => None,
            }
        }
    }
}

/// `{{closure}}#2`, `{closure#0}`, `{async_fn_env#1}`, `{{closure}}`.
static RUST_ANON: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"\{\{([a-z_]+)\}\}(?:#\d+)?|\{([a-z_]+)#\d+\}").expect("valid regex")
});

/// A Rust symbol without its hash, generic parameters, closure indices and
/// `<impl …>` / `<T as Trait>` qualification.
fn rust_symbol(symbol: &str) -> String {
    let symbol = strip_rust_hash(symbol);
    // The checks before each rewrite skip the work for the common symbol
    // that has no closures or generics: this runs for every frame.
    let symbol = if symbol.contains('{') {
        RUST_ANON.replace_all(symbol, |c: &regex::Captures<'_>| {
            let name = c.get(1).or_else(|| c.get(2)).map_or("", |m| m.as_str());
            format!("{{{{{name}}}}}")
        })
    } else {
        Cow::Borrowed(symbol)
    };
    let stripped = if symbol.contains('<') {
        Cow::Owned(strip_angle_brackets(&symbol))
    } else {
        symbol
    };
    // Dropping generics leaves empty segments (`iter::<T>::next`).
    let mut out = String::with_capacity(stripped.len());
    for segment in stripped.split("::").filter(|s| !s.trim().is_empty()) {
        if !out.is_empty() {
            out.push_str("::");
        }
        out.push_str(segment.trim());
    }
    out
}

/// The symbol without the legacy mangling's hash suffix (`::h0123456789abcdef`).
fn strip_rust_hash(symbol: &str) -> &str {
    const SUFFIX_LEN: usize = "::h0123456789abcdef".len();
    if symbol.len() > SUFFIX_LEN && symbol.is_char_boundary(symbol.len() - SUFFIX_LEN) {
        let (head, tail) = symbol.split_at(symbol.len() - SUFFIX_LEN);
        // The prefix first: only then is byte 3 a character boundary.
        if let Some(hex) = tail.strip_prefix("::h") {
            if hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
                return head;
            }
        }
    }
    symbol
}

/// Replaces `<impl Trait for Type>` with `Type`, `<impl Type>` with `Type`
/// and `<Type as Trait>` with `Type`, and drops generic arguments
/// (`Vec<T>` → `Vec`).
fn strip_angle_brackets(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(open) = rest.find('<') {
        out.push_str(&rest[..open]);
        let Some(close) = matching_close(rest, open) else {
            // Unbalanced: keep the text rather than guess.
            out.push_str(&rest[open..]);
            return out;
        };
        let inner = &rest[open + 1..close];
        // A bracket opening the symbol (`<app::Users>::find`) or holding an
        // impl or a qualified path names the self type; any other bracket
        // (`Vec<T>`, the turbofish in `f::<u8>`) holds generic arguments.
        let starts_path = out.is_empty() || inner.starts_with("impl ") || inner.contains(" as ");
        if starts_path {
            let self_type = if let Some(impl_of) = inner.strip_prefix("impl ") {
                impl_of.rsplit_once(" for ").map_or(impl_of, |(_, ty)| ty)
            } else {
                inner.split_once(" as ").map_or(inner, |(ty, _)| ty)
            };
            let self_type = self_type
                .trim()
                .trim_start_matches('&')
                .trim_start_matches("mut ")
                .trim_start_matches("dyn ");
            // A qualified self type (`<impl app::users::Users>` after
            // `app::users::`) already names its module: do not repeat it.
            if self_type.contains("::") {
                out.clear();
            }
            out.push_str(&strip_angle_brackets(self_type));
        }
        rest = &rest[close + 1..];
    }
    out.push_str(rest);
    out
}

fn matching_close(s: &str, open: usize) -> Option<usize> {
    let mut depth = 0usize;
    for (i, b) in s.bytes().enumerate().skip(open) {
        match b {
            b'<' => depth += 1,
            // `->` in `fn() -> T` is not a closing bracket.
            b'>' if i > 0 && s.as_bytes()[i - 1] == b'-' => {}
            b'>' => {
                depth -= 1;
                if depth == 0 {
                    return Some(i);
                }
            }
            _ => {}
        }
    }
    None
}

static WEBPACK_HASH: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"[.\-][0-9a-f]{8,}(\.[a-z]+)$").expect("valid regex"));

/// The file of a JavaScript frame as it identifies code across deploys:
/// no scheme, host, query or hash; dependencies from their package
/// directory on; application files by their last two path components
/// (deploy roots differ); bundle hashes (`main.3f2a1b9c.js`) removed.
fn js_file(f: &Frame) -> Option<String> {
    let file = f
        .filename
        .as_deref()
        .or(f.abs_path.as_deref())
        .filter(|file| !is_builtin_file(file))?;
    let file = file.split(['?', '#']).next().unwrap_or(file);
    let file = match file.find("://") {
        Some(i) => {
            let after = &file[i + 3..];
            // `webpack:///./src/a.js` has an empty host; URLs have one.
            if file.starts_with("webpack") {
                after
            } else {
                after.find('/').map_or(after, |j| &after[j..])
            }
        }
        None => file,
    };
    let file = match file.rfind("node_modules/") {
        Some(i) => &file[i + "node_modules/".len()..],
        None => {
            let mut parts = file.rsplitn(3, '/');
            let last = parts.next().unwrap_or("");
            match parts.next() {
                Some(dir) if !dir.is_empty() && dir != "." => {
                    let start = file.len() - last.len() - dir.len() - 1;
                    &file[start..]
                }
                _ => last,
            }
        }
    };
    Some(WEBPACK_HASH.replace(file, "$1").into_owned())
}

/// `function (file)`, for a JavaScript frame that has a function name.
fn js_display(f: &Frame) -> Option<String> {
    let func = js_function(f.function.as_deref()?);
    if func.is_empty() {
        return None;
    }
    Some(match js_file(f) {
        Some(file) => format!("{func} ({file})"),
        None => func,
    })
}

/// V8's stand-ins for "no file": built-ins and `eval`ed code.
fn is_builtin_file(file: &str) -> bool {
    matches!(file, "<anonymous>" | "native" | "[native code]")
}

/// A JavaScript function name without `async `/`new ` and with anonymous
/// names (which V8 spells in several ways) removed.
fn js_function(name: &str) -> String {
    let name = name.trim();
    let name = name.strip_prefix("async ").unwrap_or(name);
    let name = name.strip_prefix("new ").unwrap_or(name);
    // `Layer.handle [as handle_request]`: the alias depends on the caller.
    let name = name.split(" [as ").next().unwrap_or(name);
    match name {
        "<anonymous>" | "Object.<anonymous>" | "Object.?" | "anonymous" | "?" | "eval" => {
            String::new()
        }
        _ => name
            .trim_end_matches(".<anonymous>")
            .trim_end_matches(".?")
            .to_owned(),
    }
}

/// A CommonJS module's top-level code: an anonymous function that V8 runs
/// on `module.exports` (`Object.<anonymous>`; Sentry's Node SDK writes
/// `Object.?`), called by Node's module loader or at the bottom of the
/// stack. Like `main`, it is only the entry point, and only synchronous
/// stacks have it: the same call made again after an `await` starts from a
/// microtask instead, so keeping it would split an incident between its
/// first occurrence and the next ones. (An anonymous handler that a
/// framework calls on an object has the same name, and is kept.)
fn is_js_module_code(f: &Frame, caller: Option<&Frame>) -> bool {
    let name = f.function.as_deref().unwrap_or("").trim();
    let name = name.strip_prefix("async ").unwrap_or(name);
    if !matches!(name, "Object.<anonymous>" | "Object.?") {
        return false;
    }
    caller.is_none_or(|c| {
        [c.filename.as_deref(), c.abs_path.as_deref()]
            .into_iter()
            .flatten()
            .any(|p| p.starts_with("node:internal/modules/") || p.starts_with("internal/modules/"))
    })
}

static JAVA_SYNTHETIC: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"\$\$Lambda\$[^.]*|lambda\$(\w+?)\$\d+|\$\d+").expect("valid regex")
});

/// A Java class or method without the compiler's numbered names for
/// lambdas and anonymous classes, which change when unrelated code does.
fn java_method(name: &str) -> String {
    if !name.contains('$') {
        return name.to_owned();
    }
    JAVA_SYNTHETIC
        .replace_all(name, |c: &regex::Captures<'_>| match c.get(1) {
            Some(m) => format!("lambda${}", m.as_str()),
            None if c[0].starts_with("$$Lambda") => "$$Lambda".to_owned(),
            None => "$".to_owned(),
        })
        .into_owned()
}

/// Crates whose every frame is reporting machinery: the SDKs (ours and
/// Sentry's, one crate per integration) and the error-capturing crates.
pub(crate) const MACHINERY_CRATES: &[&str] = &[
    // The standard library's own namespace for exported symbols
    // (`__rustc::rust_begin_unwind`, Rust 1.88 and later).
    "__rustc",
    "errorflow_sdk",
    "errorflow_tower",
    "sentry",
    "sentry_core",
    "sentry_backtrace",
    "sentry_panic",
    "sentry_tracing",
    "sentry_anyhow",
    "sentry_contexts",
    "sentry_types",
    "sentry_debug_images",
    "sentry_log",
    "sentry_slog",
    "sentry_tower",
    "sentry_actix",
    "sentry_eyre",
    "backtrace",
    "anyhow",
    "eyre",
    "color_eyre",
];

/// Whether `path` is inside crate `name`: the whole name, then `::` or nothing.
pub(crate) fn in_crate(path: &str, name: &str) -> bool {
    path.strip_prefix(name)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with("::"))
}

/// Frames of the panic, backtrace and reporting machinery: they are
/// present in every event and say nothing about where the error is.
///
/// Crates are matched by their whole name followed by `::` (so that an
/// application crate `sentry_bridge` or a module `backtrace_utils` is not
/// taken for the SDK's), C-runtime and unwinder symbols by their whole name
/// (so that `_start_worker` is not `_start`).
fn is_machinery(key: &str, f: &Frame) -> bool {
    /// Paths inside the standard library that only unwind, capture or start.
    const STD_PATHS: &[&str] = &[
        "std::panicking::",
        "core::panicking::",
        "std::panic::",
        "core::panic::",
        "std::backtrace::",
        "std::backtrace_rs::",
        "std::sys::backtrace::",
        "std::sys_common::backtrace::",
        "std::rt::",
    ];
    /// Python's and JavaScript's SDK packages, for SDKs that do not flag
    /// their own frames.
    const PACKAGES: &[&str] = &["sentry_sdk.", "sentry_sdk::", "@sentry/"];
    /// Whole symbols of the C runtime, the unwinder and the panic entry points.
    const SYMBOLS: &[&str] = &[
        "_start",
        "__libc_start_main",
        "__libc_start_main_impl",
        "__libc_start_call_main",
        "start_thread",
        "clone",
        "clone3",
        "__clone",
        "__clone3",
        "rust_begin_unwind",
        "rust_panic",
    ];
    STD_PATHS.iter().any(|p| key.starts_with(p))
        || MACHINERY_CRATES.iter().any(|c| in_crate(key, c))
        || PACKAGES.iter().any(|p| key.starts_with(p))
        || SYMBOLS.contains(&key)
        // `__rust_begin_short_backtrace`, `__rust_start_panic`, …: names with
        // two leading underscores are the compiler's, never an application's.
        || key.starts_with("__rust_")
        || key.starts_with("tokio::runtime::")
        || f.function.as_deref() == Some("__webpack_require__")
}

/// Frames of well-known libraries and runtimes, used when the SDK did not
/// flag any frame as in-app.
fn is_library(key: &str, f: &Frame) -> bool {
    const PREFIXES: &[&str] = &[
        "std::",
        "core::",
        "alloc::",
        "tokio::",
        "futures::",
        "futures_util::",
        "futures_core::",
        "hyper::",
        "tower::",
        "axum::",
        "tracing::",
        "java.",
        "javax.",
        "jdk.",
        "sun.",
        "kotlin.",
    ];
    PREFIXES.iter().any(|p| key.starts_with(p))
        || [f.filename.as_deref(), f.abs_path.as_deref()]
            .into_iter()
            .flatten()
            .any(|p| {
                is_library_path(p)
                    || is_builtin_file(p)
                    || p.contains("/rustc/")
                    || p.contains("/.cargo/registry/")
            })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strip_rust_hash_keeps_symbols_without_a_hash_whatever_their_characters() {
        assert_eq!(strip_rust_hash("app::run::h0123456789abcdef"), "app::run");
        assert_eq!(
            strip_rust_hash("app::run::h0123456789abcdeg"),
            "app::run::h0123456789abcdeg"
        );
        // A character of several bytes where the hash's `::h` would be.
        let wide = "app::charge\\\u{1133c}abcdefghijklmn";
        assert_eq!(strip_rust_hash(wide), wide);
        assert_eq!(strip_rust_hash("é::h0123456789abcdef"), "é");
    }

    /// Checks which frames grouping selects (all of `expected`'s `frame:`
    /// entries, outermost first) and that the components keep only the
    /// innermost one: the raise site.
    fn assert_frames(e: &Event, expected: &[&str]) {
        let selected: Vec<String> = Grouping::of(e)
            .frames
            .iter()
            .flatten()
            .map(|f| format!("frame:{}", f.key))
            .collect();
        let frames: Vec<String> = expected
            .iter()
            .filter(|c| c.starts_with("frame:"))
            .map(|c| c.to_string())
            .collect();
        assert_eq!(selected, frames);
        let last = frames.last().cloned();
        let kept: Vec<String> = expected
            .iter()
            .map(|c| c.to_string())
            .filter(|c| !c.starts_with("frame:") || Some(c) == last.as_ref())
            .collect();
        assert_eq!(components(e), kept);
    }
    use chrono::{TimeZone, Utc};
    use errorflow_sdk::protocol::{Request, Stacktrace};
    use uuid::Uuid;

    fn ctx() -> super::super::Context {
        super::super::Context {
            project_id: 7,
            received_at: Utc.with_ymd_and_hms(2026, 11, 27, 12, 0, 0).unwrap(),
        }
    }

    fn frame(function: &str, file: &str, line: u32) -> Frame {
        Frame {
            function: Some(function.to_owned()),
            filename: Some(file.to_owned()),
            lineno: Some(line),
            ..Frame::default()
        }
    }

    fn rust_event(frames: Vec<Frame>, value: &str) -> Event {
        let mut e = Event::new(Level::Error);
        e.event_id = Uuid::nil();
        e.platform = Some("rust".into());
        e.service = Some("api".into());
        e.exception.push(Exception {
            stacktrace: Some(Stacktrace { frames }),
            ..Exception::new("NotFound", value)
        });
        e
    }

    #[test]
    fn rust_symbols_lose_volatile_parts() {
        let cases = [
            (
                "app::handlers::get_user::h0123456789abcdef",
                "app::handlers::get_user",
            ),
            ("app::run::{{closure}}#2", "app::run::{{closure}}"),
            ("app::run::{closure#0}", "app::run::{{closure}}"),
            ("app::run::{async_fn_env#0}", "app::run::{{async_fn_env}}"),
            ("<app::Users as app::Repo>::find", "app::Users::find"),
            ("app::Cache<K,V>::get", "app::Cache::get"),
            (
                "<impl core::fmt::Display for app::Error>::fmt",
                "app::Error::fmt",
            ),
            (
                "app::users::<impl app::users::Users>::load",
                "app::users::Users::load",
            ),
            (
                "core::iter::adapters::map::Map<I,F>::next",
                "core::iter::adapters::map::Map::next",
            ),
            ("<&T as core::fmt::Debug>::fmt", "T::fmt"),
            ("app::f::<u8>", "app::f"),
            ("app::apply<fn() -> u8>", "app::apply"),
        ];
        for (input, expected) in cases {
            assert_eq!(rust_symbol(input), expected, "input: {input}");
        }
    }

    #[test]
    fn js_files_and_functions() {
        let f = |file: &str| js_file(&frame("x", file, 1)).unwrap();
        assert_eq!(
            f("/app/node_modules/express/lib/router/layer.js"),
            "express/lib/router/layer.js"
        );
        assert_eq!(f("/srv/releases/41/src/users.js"), "src/users.js");
        assert_eq!(
            f("https://cdn.example.com/static/js/main.3f2a1b9c.js?v=2#x"),
            "js/main.js"
        );
        assert_eq!(f("webpack:///./src/app.tsx"), "src/app.tsx");
        assert_eq!(f("index.js"), "index.js");
        assert_eq!(js_function("async Object.<anonymous>"), "");
        assert_eq!(
            js_function("Layer.handle [as handle_request]"),
            "Layer.handle"
        );
        assert_eq!(js_function("new UserService"), "UserService");
        assert_eq!(js_function("Object.?"), "");
        assert_eq!(js_function("Router.?"), "Router");
    }

    #[test]
    fn js_module_code_is_an_entry_point() {
        let js = |function: &str| {
            let mut f = frame(function, "/srv/releases/7/main.js", 3);
            f.module = Some("main".into());
            f.in_app = Some(true);
            f
        };
        let event = |frames: Vec<Frame>| {
            let mut e = rust_event(frames, "x");
            e.platform = Some("javascript".into());
            e
        };
        let loader = Frame {
            function: Some("Module._compile".into()),
            filename: Some("node:internal/modules/cjs/loader".into()),
            in_app: Some(false),
            ..Frame::default()
        };
        // The first call is synchronous (its stack starts at the module's
        // code), the next ones run after an `await`.
        let sync = event(vec![loader.clone(), js("Object.?"), js("main"), js("run")]);
        let after_await = event(vec![js("main"), js("run")]);
        assert_eq!(components(&sync), components(&after_await));
        assert!(components(&sync).contains(&"frame:main::run".to_owned()));
        // An anonymous route handler that a framework calls stays.
        let express = Frame {
            function: Some("Layer.handle".into()),
            filename: Some("/srv/node_modules/express/lib/router/layer.js".into()),
            in_app: Some(false),
            ..Frame::default()
        };
        let handler = event(vec![express, js("async Object.<anonymous>"), js("run")]);
        let selected: Vec<String> = Grouping::of(&handler).frames[0]
            .iter()
            .map(|f| f.key.clone())
            .collect();
        assert!(selected.contains(&"main".to_owned()), "{selected:?}");
    }

    #[test]
    fn java_names() {
        assert_eq!(java_method("lambda$findAll$3"), "lambda$findAll");
        assert_eq!(
            java_method("com.acme.Api$$Lambda$123/0x0000000800c0b840"),
            "com.acme.Api$$Lambda"
        );
        assert_eq!(java_method("com.acme.Api$2"), "com.acme.Api$");
    }

    #[test]
    fn path_tag_is_the_route_or_the_path_template() {
        let with_request = |url: &str, route: Option<&str>| {
            let mut e = rust_event(vec![], "boom");
            e.request = Some(Request {
                url: Some(url.into()),
                route: route.map(Into::into),
                ..Request::default()
            });
            build(e, &ctx())
        };
        let a = with_request("https://shop.test/orders/17/checkout?step=2", None);
        let b = with_request("/orders/18/checkout", None);
        // The stored path stays as sent; the tag is its template.
        assert_eq!(a.path, "/orders/17/checkout");
        assert_eq!(a.tags["path"], "/orders/<int>/checkout");
        assert_eq!(b.tags["path"], a.tags["path"]);
        let routed = with_request("/users/42", Some("/users/{id}"));
        assert_eq!(routed.path, "/users/42");
        assert_eq!(routed.tags["path"], "/users/{id}");
        assert!(!build(rust_event(vec![], "boom"), &ctx())
            .tags
            .contains_key("path"));
    }

    #[test]
    fn url_paths() {
        assert_eq!(url_path("https://x.io/users/42?a=1#f"), "/users/42");
        assert_eq!(url_path("https://x.io"), "");
        assert_eq!(url_path("/users/42?x"), "/users/42");
    }

    #[test]
    fn same_site_different_values_group_together() {
        let frames = || {
            vec![
                frame("app::main", "src/main.rs", 3),
                frame("app::get_user", "src/users.rs", 10),
            ]
        };
        let a = build(rust_event(frames(), "user 42 not found"), &ctx());
        let b = build(rust_event(frames(), "user 7 not found"), &ctx());
        assert_eq!(a.fingerprint, b.fingerprint);
        assert_eq!(a.title, "NotFound: user <int> not found");
        assert_eq!(a.culprit.as_deref(), Some("app::get_user"));
    }

    #[test]
    fn deploys_that_move_lines_do_not_split() {
        let a = rust_event(
            vec![frame(
                "app::get_user::h0123456789abcdef",
                "src/users.rs",
                10,
            )],
            "x",
        );
        let mut moved = frame("app::get_user::hfedcba9876543210", "src/users.rs", 99);
        moved.colno = Some(7);
        moved.instruction_addr = Some("0x1234".into());
        let b = rust_event(vec![moved], "x");
        assert_eq!(build(a, &ctx()).fingerprint, build(b, &ctx()).fingerprint);
    }

    #[test]
    fn different_sites_split() {
        let a = rust_event(vec![frame("app::get_user", "src/users.rs", 10)], "x");
        let b = rust_event(vec![frame("app::get_order", "src/orders.rs", 10)], "x");
        assert_ne!(build(a, &ctx()).fingerprint, build(b, &ctx()).fingerprint);
    }

    #[test]
    fn messages_group_by_template() {
        let msg = |m: &str| {
            let mut e = Event::new(Level::Error);
            e.exception.push(Exception::new("DbError", m));
            e.service = Some("api".into());
            e
        };
        let a = build(msg("user 42 not found"), &ctx());
        let b = build(msg("user 43 not found"), &ctx());
        let c = build(msg("order 42 not found"), &ctx());
        assert_eq!(a.fingerprint, b.fingerprint);
        assert_ne!(a.fingerprint, c.fingerprint);
    }

    #[test]
    fn plain_messages_prefer_the_template() {
        let mut e = Event::new(Level::Warning);
        e.message = Some("payment 42 failed".into());
        e.message_template = Some("payment {} failed".into());
        assert_eq!(
            components(&e),
            ["message", "warning", "payment {} failed", "service:"]
        );
        assert_eq!(error_type(&e), "Message");
        e.level = Level::Fatal;
        assert_eq!(error_type(&e), "Error");
    }

    #[test]
    fn client_fingerprint_expands_default() {
        let mut e = rust_event(vec![frame("app::get_user", "src/users.rs", 10)], "x");
        e.fingerprint = Some(vec!["tenant-a".into(), "{{ default }}".into()]);
        assert_eq!(
            components(&e),
            [
                "client",
                "tenant-a",
                "stack",
                "type:NotFound",
                "frame:app::get_user",
                "service:api"
            ]
        );
        e.fingerprint = Some(vec!["only".into()]);
        assert_eq!(components(&e), ["client", "only"]);
    }

    #[test]
    fn machinery_and_library_frames_are_skipped() {
        let e = rust_event(
            vec![
                frame("std::rt::lang_start", "/rustc/abc/library/std/src/rt.rs", 1),
                frame("app::main", "src/main.rs", 3),
                frame(
                    "tokio::runtime::park",
                    "/home/u/.cargo/registry/src/tokio/park.rs",
                    1,
                ),
                frame("app::get_user", "src/users.rs", 10),
                frame(
                    "core::result::Result<T,E>::unwrap",
                    "/rustc/abc/core/result.rs",
                    1,
                ),
                frame(
                    "std::panicking::begin_panic",
                    "/rustc/abc/std/panicking.rs",
                    1,
                ),
                frame("errorflow_sdk::capture", "src/lib.rs", 1),
            ],
            "x",
        );
        assert_frames(
            &e,
            &[
                "stack",
                "type:NotFound",
                "frame:app::main",
                "frame:app::get_user",
                "service:api",
            ],
        );
    }

    #[test]
    fn application_names_that_look_like_machinery_are_kept() {
        let e = rust_event(
            vec![
                frame("_start", "", 0),
                frame("__libc_start_main", "libc-start.c", 1),
                frame("_start_worker", "worker.c", 1),
                frame("sentry_bridge::run", "src/bridge.rs", 3),
                frame("backtrace_utils::capture", "src/bt.rs", 3),
                frame("anyhow_ext::wrap", "src/ext.rs", 3),
                frame("app::report::{{closure}}", "src/report.rs", 3),
                frame("sentry_core::hub::Hub::capture_event", "hub.rs", 1),
                frame(
                    "<sentry_tracing::layer::error::ErrorLayer as tracing_subscriber::layer::Layer<S>>::on_event",
                    "error.rs",
                    1,
                ),
                frame("sentry::capture_error", "lib.rs", 1),
                frame("anyhow::error::<impl anyhow::Error>::msg", "error.rs", 1),
                frame("sentry_backtrace::current_stacktrace", "lib.rs", 1),
                frame("__rustc::rust_begin_unwind", "panicking.rs", 1),
            ],
            "x",
        );
        assert_frames(
            &e,
            &[
                "stack",
                "type:NotFound",
                "frame:_start_worker",
                "frame:sentry_bridge::run",
                "frame:backtrace_utils::capture",
                "frame:anyhow_ext::wrap",
                "frame:app::report::{{closure}}",
                "service:api",
            ],
        );
    }

    #[test]
    fn the_raise_site_decides_not_the_callers() {
        let via = |caller: &str| {
            rust_event(
                vec![
                    frame("app::main", "src/main.rs", 1),
                    frame(caller, "src/billing.rs", 20),
                    frame("app::billing::charge", "src/billing.rs", 7),
                ],
                "x",
            )
        };
        let checkout = via("app::billing::checkout");
        let renewal = via("app::billing::renewal");
        assert_eq!(components(&checkout), components(&renewal));
        // Another raise site stays another incident.
        let refund = rust_event(
            vec![
                frame("app::main", "src/main.rs", 1),
                frame("app::billing::refund", "src/billing.rs", 30),
            ],
            "x",
        );
        assert_ne!(components(&checkout), components(&refund));
    }

    #[test]
    fn formatted_messages_without_placeholders_do_not_split_a_stack() {
        // An f-string or `format!` sends its formatted text as the template.
        let a = message_with_stack(
            "transition",
            "order 1: invalid transition Paid -> Shipped",
            "x",
        );
        let b = message_with_stack(
            "transition",
            "order 2: invalid transition Cancelled -> Refunded",
            "y",
        );
        assert_eq!(components(&a), components(&b));
        // A real template still takes part.
        let c = message_with_stack("transition", "order %s: invalid transition %s -> %s", "z");
        assert_ne!(components(&a), components(&c));
        assert!(has_placeholder("{} -> {name}") && has_placeholder("%(order)s"));
        assert!(!has_placeholder("progress at 100%, { open"));
    }

    /// A message with a stack (an SDK's `attach_stacktrace`): its frames
    /// and its template decide, not its arguments.
    fn message_with_stack(function: &str, template: &str, formatted: &str) -> Event {
        let mut e = Event::new(Level::Error);
        e.event_id = Uuid::nil();
        e.platform = Some("python".into());
        e.service = Some("api".into());
        e.message = Some(formatted.into());
        e.message_template = Some(template.into());
        let mut caller = frame(function, "shop/orders.py", 10);
        caller.module = Some("shop.orders".into());
        caller.in_app = Some(true);
        let mut logging = frame("error", "/usr/lib/python3.12/logging/__init__.py", 1500);
        logging.module = Some("logging".into());
        logging.in_app = Some(false);
        e.stacktrace = Some(Stacktrace {
            frames: vec![caller, logging],
        });
        e
    }

    #[test]
    fn message_events_group_on_their_stack_and_template() {
        let a = message_with_stack("reserve", "sku %s is negative", "sku A-1 is negative");
        let b = message_with_stack("reserve", "sku %s is negative", "sku shoes is negative");
        let c = message_with_stack("restock", "sku %s is negative", "sku A-1 is negative");
        let d = message_with_stack("reserve", "sku %s is missing", "sku A-1 is missing");
        assert_eq!(
            components(&a),
            [
                "stack",
                "frame:shop.orders::reserve",
                "message:sku %s is negative",
                "service:api"
            ]
        );
        let fp = |e: Event| build(e, &ctx()).fingerprint;
        assert_eq!(fp(a.clone()), fp(b));
        assert_ne!(fp(a.clone()), fp(c), "same template from another function");
        assert_ne!(fp(a), fp(d), "another template at the same place");
    }

    #[test]
    fn message_titles_come_from_the_template() {
        let a = build(
            message_with_stack("reserve", "sku %s is negative", "sku A-1 is negative"),
            &ctx(),
        );
        let b = build(
            message_with_stack("reserve", "sku %s is negative", "sku shoes is negative"),
            &ctx(),
        );
        assert_eq!(a.title, "sku %s is negative");
        assert_eq!(a.title, b.title);
        // The stored message stays the formatted one.
        assert_eq!(a.message, "sku A-1 is negative");
        let mut plain = Event::new(Level::Warning);
        plain.message = Some("export took 1500ms".into());
        assert_eq!(build(plain, &ctx()).title, "export took <duration>");
    }

    #[test]
    fn exceptions_logged_with_a_template_keep_it() {
        let mut e = rust_event(vec![frame("app::get_user", "src/users.rs", 10)], "x");
        e.message = Some("lookup failed for 42".into());
        e.message_template = Some("lookup failed for %s".into());
        assert_eq!(
            components(&e),
            [
                "stack",
                "type:NotFound",
                "frame:app::get_user",
                "message:lookup failed for %s",
                "service:api"
            ]
        );
    }

    /// A raise site: an in-app frame whose source line the SDK read.
    fn raising(function: &str, context_line: &str, lineno: u32) -> Frame {
        let mut f = frame(function, "shop/orders.py", lineno);
        f.module = Some("shop.orders".into());
        f.in_app = Some(true);
        f.context_line = Some(context_line.into());
        f
    }

    fn python_event(frames: Vec<Frame>, ty: &str, value: &str) -> Event {
        let mut e = rust_event(frames, value);
        e.platform = Some("python".into());
        e.exception[0].ty = ty.into();
        e
    }

    #[test]
    fn raises_group_on_their_source_line_not_their_value() {
        let fp = |line: &str, lineno: u32, value: &str| {
            let frames = vec![raising("validate", line, lineno)];
            build(python_event(frames, "ValueError", value), &ctx()).fingerprint
        };
        let no_items = "raise ValueError(\"order has no items\")";
        let negative = "    raise ValueError(f\"order total {total} is negative\")";
        // Two raises of one function are two incidents…
        assert_ne!(
            fp(no_items, 10, "order has no items"),
            fp(negative, 12, "order total -5 is negative")
        );
        // …a deploy that moves or re-indents the line is not…
        assert_eq!(
            fp(negative, 12, "order total -5 is negative"),
            fp(
                &format!("  {}  ", negative.trim()),
                19,
                "order total -7.5 is negative"
            )
        );
        // …and neither is a value that no parameterisation can recognise.
        let decline = "raise CardDeclined(f\"card declined: {code}\")";
        assert_eq!(
            fp(decline, 3, "card declined: do_not_honor"),
            fp(decline, 3, "card declined: expired_card")
        );
        // Minified code is not a line that identifies a place.
        let minified = "x".repeat(MAX_SOURCE_LINE_CHARS + 1);
        let frames = vec![raising("validate", &minified, 1)];
        assert!(!components(&python_event(frames, "E", "v"))
            .iter()
            .any(|c| c.starts_with("line:")));
    }

    #[test]
    fn formatted_messages_with_a_stack_group_on_the_stack() {
        let mut a = message_with_stack("sync", "x", "x");
        a.message_template = None;
        let mut b = a.clone();
        a.message = Some("failed to sync sku hat: timed out".into());
        b.message = Some("failed to sync sku B-17: connection reset".into());
        assert_eq!(build(a, &ctx()).fingerprint, build(b, &ctx()).fingerprint);
    }

    #[test]
    fn chains_group_on_every_exception() {
        let chained = |inner_value: &str| {
            let mut e = rust_event(
                vec![frame("app::checkout", "src/c.rs", 1)],
                "payment failed",
            );
            e.exception.push(Exception {
                stacktrace: Some(Stacktrace {
                    frames: vec![frame("app::charge", "src/c.rs", 9)],
                }),
                ..Exception::new("KeyError", inner_value)
            });
            e
        };
        assert_eq!(
            components(&chained("'order 17'")),
            [
                "stack",
                "type:NotFound",
                "frame:app::checkout",
                "type:KeyError",
                "frame:app::charge",
                "service:api"
            ]
        );
    }

    #[test]
    fn in_app_flags_are_trusted_when_present() {
        let mut lib = frame("app::util::helper", "src/util.rs", 1);
        lib.in_app = Some(false);
        let mut own = frame("app::get_user", "src/users.rs", 1);
        own.in_app = Some(true);
        let e = rust_event(vec![own, lib, frame("app::other", "src/o.rs", 1)], "x");
        assert_eq!(
            components(&e),
            [
                "stack",
                "type:NotFound",
                "frame:app::get_user",
                "service:api"
            ]
        );
    }

    #[test]
    fn derived_fields() {
        let mut e = rust_event(
            vec![frame("app::get_user", "src/users.rs", 10)],
            "user 42\nmore",
        );
        e.request = Some(Request {
            url: Some("https://api.example.com/users/42?x=1".into()),
            ..Request::default()
        });
        e.environment = Some("staging".into());
        e.release = Some("1.0".into());
        let n = build(e, &ctx());
        assert_eq!(n.error_type, "NotFound");
        assert_eq!(n.cluster_key, "api:NotFound");
        assert_eq!(n.path, "/users/42");
        assert_eq!(n.trace_id, "00000000000000000000000000000000");
        assert_eq!(n.message, "NotFound: user 42\nmore");
        assert_eq!(n.fingerprint.len(), 32);
        assert_eq!(n.fingerprint_version, FINGERPRINT_VERSION);
        assert_eq!(n.project_id, 7);
        let tags: Vec<_> = n.tags.iter().map(|(k, v)| format!("{k}={v}")).collect();
        assert_eq!(
            tags,
            [
                "environment=staging",
                "level=error",
                "path=/users/<int>",
                "release=1.0",
                "service=api"
            ]
        );
    }

    #[test]
    fn titles_are_bounded() {
        let e = rust_event(vec![], &"word ".repeat(100));
        let title = build(e, &ctx()).title;
        assert_eq!(title.chars().count(), MAX_TITLE_CHARS);
        assert!(title.ends_with('…'));
    }

    #[test]
    fn hash_separates_components() {
        assert_ne!(
            hash(&["ab".into(), "c".into()]),
            hash(&["a".into(), "bc".into()])
        );
    }

    mod irrelevant_fields {
        use super::*;
        use crate::pipeline::{process, Limits};
        use errorflow_sdk::protocol::{Breadcrumb, User};
        use proptest::prelude::*;

        /// The three kinds of grouping: by frames, by exception message, by
        /// plain message.
        fn base(kind: u8) -> Event {
            let mut e = match kind {
                0 => rust_event(
                    vec![
                        frame("app::main", "src/main.rs", 3),
                        frame("app::get_user", "src/users.rs", 10),
                    ],
                    "user 42 not found",
                ),
                1 => rust_event(vec![], "user 42 not found"),
                _ => {
                    let mut e = Event::new(Level::Warning);
                    e.message = Some("cache miss for key 42".into());
                    e.service = Some("api".into());
                    e
                }
            };
            e.timestamp = None;
            e
        }

        prop_compose! {
            fn noisy()(
                kind in 0u8..3,
                event_id in any::<u128>(),
                ts_offset in -1_000_000i64..1_000_000,
                tags in proptest::collection::btree_map("[a-z]{1,8}", "\\PC{0,12}", 0..6),
                crumbs in proptest::collection::vec("\\PC{0,20}", 0..5),
                user in proptest::option::of(("\\PC{0,10}", "[a-z]{1,8}@[a-z]{1,8}\\.com")),
                headers in proptest::collection::btree_map("[A-Za-z-]{1,12}", "\\PC{0,20}", 0..5),
                host in proptest::option::of("[a-z0-9-]{1,20}"),
                release in proptest::option::of("[0-9.]{1,10}"),
            ) -> (u8, Event) {
                {
                    let mut e = base(kind);
                    e.event_id = Uuid::from_u128(event_id);
                    e.timestamp = Some(ctx().received_at + chrono::Duration::seconds(ts_offset));
                    e.tags = tags.clone();
                    e.breadcrumbs = crumbs.iter().map(|m| Breadcrumb {
                        timestamp: None, category: Some("log".into()), level: Level::Info,
                        message: Some(m.clone()), data: Default::default(),
                    }).collect();
                    e.user = user.clone().map(|(id, email)| User { id: Some(id), email: Some(email), ..User::default() });
                    e.request = Some(Request { headers: headers.clone(), ..Request::default() });
                    e.host = host.clone();
                    e.release = release.clone();
                    (kind, e)
                }
            }
        }

        proptest! {
            #[test]
            fn do_not_change_the_fingerprint((kind, noisy) in noisy()) {
                let limits = Limits::default();
                let plain = process(base(kind), &ctx(), &limits).unwrap();
                let noisy = process(noisy, &ctx(), &limits).unwrap();
                prop_assert_eq!(&plain.fingerprint, &noisy.fingerprint);
                prop_assert_eq!(&plain.title, &noisy.title);
            }
        }
    }
}
