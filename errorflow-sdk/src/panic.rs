//! The panic hook and backtrace parsing: an [`Integration`] that
//! [`init`](crate::init) sets up unless [`ClientOptions::panic_hook`] is off.

use std::panic::PanicHookInfo;
use std::sync::Once;
use std::time::Duration;

use crate::client::Client;
use crate::options::{ClientOptions, Integration};
use crate::protocol::{Event, Exception, Frame, Level, Stacktrace};
use crate::scope::{self, ScopeHandle};
use crate::transport::in_transport_thread;

/// How long the hook waits for delivery of a panic event before letting the
/// panic go on (and possibly end the process).
const PANIC_FLUSH_TIMEOUT: Duration = Duration::from_secs(2);

/// The panic hook as an [`Integration`]: its setup is [`install`].
pub(crate) struct PanicIntegration;

impl Integration for PanicIntegration {
    fn name(&self) -> &'static str {
        "panic"
    }

    fn setup(&self, _options: &ClientOptions) {
        install();
    }
}

/// Installs the panic hook once per process; later calls do nothing.
///
/// The hook chains to the previously installed one (the default hook prints
/// the message), so installing it changes nothing visible to the user.
pub fn install() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            capture_panic(info);
            previous(info);
        }));
    });
}

fn capture_panic(info: &PanicHookInfo<'_>) {
    // A panic on the transport's own thread cannot be delivered by it (and
    // flushing would wait on the panicking thread itself).
    if in_transport_thread() {
        return;
    }
    // The hook is installed once per process, but a later client may have
    // been configured without it.
    let Some(client) = Client::current().filter(|c| c.options().panic_hook) else {
        return;
    };
    let message = payload_message(info);
    let mut event = Event::new(Level::Fatal);
    event.message = Some(message.clone());
    let mut exception = Exception::new("panic", message);
    exception.mechanism = Some("panic".into());
    exception.handled = Some(false);
    let backtrace = std::backtrace::Backtrace::force_capture();
    let mut frames = parse_backtrace(&backtrace.to_string());
    let include = &client.options().in_app_include;
    for frame in &mut frames {
        if let Some(function) = &frame.function {
            frame.in_app = Some(is_in_app(function, include));
        }
    }
    if !frames.is_empty() {
        exception.stacktrace = Some(Stacktrace { frames });
    }
    event.exception.push(exception);
    if let Some(location) = info.location() {
        event.extra.insert(
            "panic.location".into(),
            format!(
                "{}:{}:{}",
                location.file(),
                location.line(),
                location.column()
            )
            .into(),
        );
    }
    let thread = std::thread::current();
    event
        .extra
        .insert("thread".into(), thread.name().unwrap_or("<unnamed>").into());
    let scope = scope::current_handle();
    // A panic inside `configure_scope` (or while code holds a scope's lock
    // itself) happens while this thread holds the scope's lock; locking it
    // again would deadlock, so such a panic is reported without scope data.
    // Another thread holding it (recording a breadcrumb in the root scope,
    // say) lets go within microseconds, so that is waited for.
    let root = scope::root_handle();
    if !lockable(&scope) || !lockable(&root) {
        let _ = client.capture_event_in(event, Some(&ScopeHandle::default()));
        client.flush(PANIC_FLUSH_TIMEOUT);
        return;
    }
    {
        // Middleware that catches panics answers 500; say so in the event.
        let mut s = scope.lock();
        if s.catches_panics() {
            if let Some(mut request) = s.request().cloned() {
                request.status = Some(500);
                s.set_request(Some(request));
            }
        }
    }
    if let Some(id) = client.capture_event_in(event, Some(&scope)) {
        let catches = {
            let mut s = scope.lock();
            s.set_panic_event(id);
            s.catches_panics()
        };
        // When middleware will catch this unwind the process goes on, and
        // blocking an async worker thread on a flush would stall other
        // requests; otherwise the panic may end the process, so wait.
        if !catches {
            client.flush(PANIC_FLUSH_TIMEOUT);
        }
    }
}

/// How long the hook waits for another thread to release a scope's lock.
const LOCK_WAIT: Duration = Duration::from_millis(250);

/// Whether `handle`'s lock can be taken: not held by this thread in
/// `configure_scope`, and free within [`LOCK_WAIT`] (a lock still held then
/// is most likely this thread's own).
fn lockable(handle: &ScopeHandle) -> bool {
    if scope::held_here(handle) {
        return false;
    }
    let deadline = std::time::Instant::now() + LOCK_WAIT;
    while handle.is_locked() {
        if std::time::Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    true
}

fn payload_message(info: &PanicHookInfo<'_>) -> String {
    let payload = info.payload();
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "Box<dyn Any>".to_string()
    }
}

/// Parses `std::backtrace::Backtrace`'s `Display` output into frames,
/// **innermost last** as the protocol wants, without the panic machinery's
/// own frames (the hook, `std::panicking`, `core::panicking`).
///
/// The format is not a stable API, so anything unrecognised is skipped
/// rather than guessed.
pub fn parse_backtrace(text: &str) -> Vec<Frame> {
    let mut frames: Vec<Frame> = Vec::new();
    for line in text.lines() {
        let trimmed = line.trim();
        if let Some(location) = trimmed.strip_prefix("at ") {
            if let Some(frame) = frames.last_mut() {
                let (path, lineno) = split_location(location);
                frame.filename = path.rsplit('/').next().map(str::to_string);
                frame.abs_path = Some(path.to_string());
                frame.lineno = lineno;
            }
            continue;
        }
        let Some((index, function)) = trimmed.split_once(": ") else {
            continue;
        };
        if index.parse::<u32>().is_err() {
            continue;
        }
        let function = strip_hash(function);
        frames.push(Frame {
            module: module_of(&function),
            function: Some(function),
            ..Frame::default()
        });
    }
    // Frames come innermost first: the hook, then the panic machinery, then
    // the code that panicked. Drop the leading run of runtime frames up to
    // its last panic-machinery frame, so that the first kept frame is the
    // one that panicked. (Outer `std::panicking::try` frames of a
    // `catch_unwind` further out must not count, hence the leading run only.)
    let mut cut = None;
    for (i, frame) in frames.iter().enumerate() {
        let name = frame.function.as_deref().unwrap_or_default();
        if !is_runtime(name) {
            break;
        }
        if name.contains("panicking") || name.contains("rust_begin_unwind") {
            cut = Some(i);
        }
    }
    if let Some(i) = cut {
        frames.drain(..=i);
    }
    frames.reverse();
    frames
}

fn is_runtime(function: &str) -> bool {
    let f = function.trim_start_matches('<');
    [
        "std::",
        "core::",
        "alloc::",
        "errorflow_sdk::",
        "__rustc::",
        "__rust",
        "rust_begin_unwind",
    ]
    .iter()
    .any(|p| f.starts_with(p))
}

fn split_location(location: &str) -> (&str, Option<u32>) {
    // `path:line:col`; paths may contain colons on Windows, so split from the right.
    let mut parts = location.rsplitn(3, ':');
    let col = parts.next();
    let line = parts.next();
    match (parts.next(), line, col) {
        (Some(path), Some(line), Some(_)) if line.parse::<u32>().is_ok() => {
            (path, line.parse().ok())
        }
        _ => (location, None),
    }
}

fn strip_hash(function: &str) -> String {
    if let Some((head, hash)) = function.rsplit_once("::h") {
        if hash.len() == 16 && hash.bytes().all(|b| b.is_ascii_hexdigit()) {
            return head.to_string();
        }
    }
    function.to_string()
}

fn module_of(function: &str) -> Option<String> {
    let f = function.trim_start_matches('<');
    let end = f.find(['<', ' ']).unwrap_or(f.len());
    let path = &f[..end];
    path.rsplit_once("::").map(|(m, _)| m.to_string())
}

/// Whether a frame's function belongs to the application: it starts with
/// one of the `in_app_include` crate prefixes and is not runtime code.
pub fn is_in_app(function: &str, include: &[String]) -> bool {
    const NEVER: &[&str] = &[
        "std::",
        "core::",
        "alloc::",
        "tokio::",
        "errorflow_sdk::",
        "backtrace::",
    ];
    let f = function.trim_start_matches('<');
    if NEVER.iter().any(|p| f.starts_with(p)) {
        return false;
    }
    include.iter().any(|prefix| {
        f.strip_prefix(prefix.as_str())
            .is_some_and(|rest| rest.is_empty() || rest.starts_with("::"))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = "   0: errorflow_sdk::panic::capture_panic
             at ./src/panic.rs:40:21
   1: std::panicking::rust_panic_with_hook
             at /rustc/abc/library/std/src/panicking.rs:800:13
   2: std::panicking::begin_panic_handler::{{closure}}
   3: core::panicking::panic_fmt::h0123456789abcdef
             at /rustc/abc/library/core/src/panicking.rs:75:14
   4: my_app::pay::charge::h0123456789abcdef
             at ./src/pay.rs:12:5
   5: <my_app::Svc as tower::Service>::call
             at ./src/main.rs:30:9
   6: std::panicking::try
   7: std::rt::lang_start
";

    #[test]
    fn parses_and_orders_innermost_last() {
        let frames = parse_backtrace(SAMPLE);
        let names: Vec<_> = frames.iter().map(|f| f.function.clone().unwrap()).collect();
        assert_eq!(
            names,
            [
                "std::rt::lang_start",
                "std::panicking::try",
                "<my_app::Svc as tower::Service>::call",
                "my_app::pay::charge"
            ]
        );
        let last = frames.last().unwrap();
        assert_eq!(last.lineno, Some(12));
        assert_eq!(last.filename.as_deref(), Some("pay.rs"));
        assert_eq!(last.module.as_deref(), Some("my_app::pay"));
    }

    #[test]
    fn in_app_rules() {
        let include = vec!["my_app".to_string()];
        assert!(is_in_app("my_app::pay::charge", &include));
        assert!(is_in_app("<my_app::Svc as tower::Service>::call", &include));
        assert!(!is_in_app("my_apple::x", &include));
        assert!(!is_in_app("std::rt::lang_start", &include));
    }
}
