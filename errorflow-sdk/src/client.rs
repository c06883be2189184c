//! The client: prepares events on the calling thread and hands them to a transport.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use crate::protocol::{Event, Exception, Level};
use crate::scope::{EventProcessor, Scope, ScopeHandle};
use crate::transport::{HttpTransport, Stats, Transport};
use crate::{scope, scrub, ClientOptions};

/// The SDK's identity, sent with every event.
pub const SDK_NAME: &str = concat!("errorflow-sdk/", env!("CARGO_PKG_VERSION"));

/// A configured client. Obtain the bound one with [`Client::current`].
pub struct Client {
    shared: Arc<Shared>,
    transport: Arc<dyn Transport>,
}

/// What finishing an event needs from its client; shared with the events
/// in flight so that they can be finished on the transport's thread.
struct Shared {
    options: ClientOptions,
    host: Option<String>,
}

/// An event captured on the application's thread, with the work that does
/// not need that thread still to do: the tracing layer's derived fields
/// (logger, fingerprint, template, fields as tags), the scope's
/// [`EventProcessor`] (request context), the client's defaults,
/// `before_send` and scrubbing. [`PendingEvent::finish`] does it; the HTTP
/// transport calls it on its worker thread, so that capturing stays cheap
/// and hands few allocations to another thread.
pub struct PendingEvent {
    event_id: uuid::Uuid,
    /// Boxed from the start: an `Event` is large, and a pending event is
    /// moved from the capture through the queue to the worker. `None` for a
    /// `tracing` event whose scopes had nothing to merge into it: `finish`
    /// makes it, so that the calling thread allocates nothing for it.
    event: Option<Box<Event>>,
    /// `None` for an event that was finished before it was queued.
    shared: Option<Arc<Shared>>,
    processor: Option<Arc<dyn EventProcessor>>,
    tracing: Option<crate::layer::TracingParts>,
    /// The current scope's breadcrumbs, when the event had none of its own.
    breadcrumbs: Option<scope::BreadcrumbSnapshot>,
}

impl std::fmt::Debug for PendingEvent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PendingEvent")
            .field("event_id", &self.event_id)
            .finish_non_exhaustive()
    }
}

impl PendingEvent {
    /// An event that needs no more work (sent through [`Transport::send`]).
    pub(crate) fn finished(event: Event) -> PendingEvent {
        PendingEvent {
            event_id: event.event_id,
            event: Some(Box::new(event)),
            shared: None,
            processor: None,
            tracing: None,
            breadcrumbs: None,
        }
    }

    /// The id the event will be sent with.
    pub fn event_id(&self) -> uuid::Uuid {
        self.event_id
    }

    /// Completes the event; `None` when `before_send` dropped it.
    pub fn finish(self) -> Option<Event> {
        let PendingEvent {
            event_id,
            event,
            shared,
            processor,
            tracing,
            breadcrumbs,
        } = self;
        let mut event = event.unwrap_or_else(|| {
            let level = tracing.as_ref().map_or(Level::Error, |t| t.level());
            Box::new(Event::with_id(event_id, level))
        });
        if let Some(breadcrumbs) = breadcrumbs {
            event.breadcrumbs = breadcrumbs.into_breadcrumbs();
        }
        if let Some(tracing) = tracing {
            crate::layer::finish_event(&mut event, tracing);
        }
        if let Some(processor) = processor {
            processor.process(&mut event);
        }
        let mut event = *event;
        let Some(shared) = shared else {
            return Some(event);
        };
        shared.fill_defaults(&mut event);
        let mut event = match &shared.options.before_send {
            Some(hook) => hook(event)?,
            None => event,
        };
        if shared.options.scrub {
            scrub::scrub_event(&mut event);
        }
        Some(event)
    }
}

static CURRENT: RwLock<Option<Arc<Client>>> = RwLock::new(None);
/// Mirrors `CURRENT.is_some()` so that the tracing layer's hot path can skip
/// all work with one atomic load when no client is bound.
static ACTIVE: AtomicBool = AtomicBool::new(false);
/// The bound client's `max_breadcrumbs`, read by the layer for every breadcrumb.
static MAX_BREADCRUMBS: AtomicUsize = AtomicUsize::new(0);

pub(crate) fn max_breadcrumbs() -> usize {
    MAX_BREADCRUMBS.load(Ordering::Relaxed)
}

impl Client {
    /// Builds a client; `None` when the options have neither a DSN nor a
    /// custom transport (the SDK is then a no-op).
    pub fn new(options: ClientOptions) -> Option<Client> {
        let transport: Arc<dyn Transport> = match (&options.transport, &options.dsn) {
            (Some(transport), _) => transport.clone(),
            (None, Some(dsn)) => match HttpTransport::new(dsn, &options) {
                Ok(t) => Arc::new(t),
                Err(err) => {
                    eprintln!("[errorflow] {err}; events will not be sent");
                    return None;
                }
            },
            (None, None) => return None,
        };
        Some(Client {
            shared: Arc::new(Shared {
                host: hostname(),
                options,
            }),
            transport,
        })
    }

    /// The client bound by [`init`], if any.
    pub fn current() -> Option<Arc<Client>> {
        if !ACTIVE.load(Ordering::Relaxed) {
            return None;
        }
        CURRENT.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// The options the client was built with.
    pub fn options(&self) -> &ClientOptions {
        &self.shared.options
    }

    /// Delivery counters.
    pub fn stats(&self) -> Stats {
        self.transport.stats()
    }

    /// Waits up to `timeout` for queued events to be sent.
    pub fn flush(&self, timeout: Duration) -> bool {
        self.transport.flush(timeout)
    }

    /// Samples, fills in the current scope and queues the event; the
    /// client's defaults, `before_send` and scrubbing follow (see
    /// [`PendingEvent`]), on the transport's thread with the HTTP transport.
    /// Returns the event id when the event was queued (`before_send` may
    /// still drop it).
    pub fn capture_event(&self, event: Event) -> Option<uuid::Uuid> {
        self.capture_event_in(event, None)
    }

    /// Like [`Client::capture_event`], with an explicit scope instead of the current one.
    pub fn capture_event_in(
        &self,
        event: Event,
        scope: Option<&ScopeHandle>,
    ) -> Option<uuid::Uuid> {
        self.capture_pending(Capture::Event(Box::new(event)), scope)
    }

    pub(crate) fn capture_pending(
        &self,
        capture: Capture,
        scope: Option<&ScopeHandle>,
    ) -> Option<uuid::Uuid> {
        let sample_rate = self.shared.options.sample_rate;
        if sample_rate < 1.0 && random_fraction() >= sample_rate {
            return None;
        }
        let (event_id, level, mut event, tracing) = match capture {
            Capture::Event(event) => (event.event_id, event.level, Some(event), None),
            Capture::Tracing(id, parts) => (id, parts.level(), None, Some(parts)),
        };
        let is_error = level >= Level::Error;
        // The event is made here only when a scope has something to merge.
        let apply = |scope: &Scope, event: &mut Option<Box<Event>>| {
            if scope.has_data() {
                let event = event.get_or_insert_with(|| Box::new(Event::with_id(event_id, level)));
                scope.apply(event);
            }
        };
        // A scope whose lock this thread holds (the event is logged from
        // inside `configure_scope`) is left out: locking it again would
        // deadlock.
        let merge = |handle: &ScopeHandle, event: &mut Option<Box<Event>>| {
            let (processor, breadcrumbs) = match handle.lock_unless_held_here() {
                None => (None, None),
                Some(mut s) => {
                    apply(&s, event);
                    if is_error {
                        s.count_error();
                    }
                    let breadcrumbs = if event.as_ref().is_none_or(|e| e.breadcrumbs.is_empty()) {
                        s.breadcrumb_snapshot()
                    } else {
                        None
                    };
                    (s.processor(), breadcrumbs)
                }
            };
            let root = scope::root_ref();
            if handle.ptr_eq(root) {
                return (processor, breadcrumbs);
            }
            let Some(root) = root.lock_unless_held_here() else {
                return (processor, breadcrumbs);
            };
            apply(&root, event);
            // The current scope's processor is the more specific one.
            (processor.or_else(|| root.processor()), breadcrumbs)
        };
        let (processor, breadcrumbs) = match scope {
            Some(handle) => merge(handle, &mut event),
            None => scope::with_current(|handle| merge(handle, &mut event)),
        };
        self.transport.send_pending(PendingEvent {
            event_id,
            event,
            shared: Some(self.shared.clone()),
            processor,
            tracing,
            breadcrumbs,
        });
        Some(event_id)
    }
}

/// What [`Client::capture_pending`] captures.
// The tracing variant is large and is moved into the pending event: boxing
// it would bring back the allocation that keeping it inline avoids.
#[allow(clippy::large_enum_variant)]
pub(crate) enum Capture {
    /// An event built by the caller.
    Event(Box<Event>),
    /// A `tracing` event, with its id.
    Tracing(uuid::Uuid, crate::layer::TracingParts),
}

impl Shared {
    fn fill_defaults(&self, event: &mut Event) {
        let o = &self.options;
        if event.service.is_none() {
            event.service.clone_from(&o.service);
        }
        if event.environment.is_none() {
            event.environment.clone_from(&o.environment);
        }
        if event.release.is_none() {
            event.release.clone_from(&o.release);
        }
        if event.host.is_none() {
            event.host.clone_from(&self.host);
        }
        if event.platform.is_none() {
            event.platform = Some("rust".into());
        }
        if event.sdk.is_none() {
            event.sdk = Some(SDK_NAME.into());
        }
    }
}

impl Client {
    pub(crate) fn is_in_app(&self, function: &str) -> bool {
        crate::panic::is_in_app(function, &self.shared.options.in_app_include)
    }
}

fn hostname() -> Option<String> {
    std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/proc/sys/kernel/hostname").ok())
        .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
}

/// Flushes on drop (up to the `shutdown_timeout`, 2 s by default) and unbinds the client.
///
/// Keep it alive for the life of the program: `let _guard = init(…);`
/// (not `let _ = …`, which drops it at once).
#[must_use = "dropping the guard flushes and disables the client; bind it with `let _guard = …`"]
pub struct ClientGuard {
    client: Option<Arc<Client>>,
}

impl ClientGuard {
    /// Whether events will be sent (a DSN or a transport was configured).
    pub fn is_enabled(&self) -> bool {
        self.client.is_some()
    }

    /// The client this guard owns.
    pub fn client(&self) -> Option<&Arc<Client>> {
        self.client.as_ref()
    }
}

impl Drop for ClientGuard {
    fn drop(&mut self) {
        let Some(client) = self.client.take() else {
            return;
        };
        {
            let mut current = CURRENT.write().unwrap_or_else(|e| e.into_inner());
            if current.as_ref().is_some_and(|c| Arc::ptr_eq(c, &client)) {
                *current = None;
                ACTIVE.store(false, Ordering::Relaxed);
                MAX_BREADCRUMBS.store(0, Ordering::Relaxed);
            }
        }
        let options = client.options();
        if !client.transport.shutdown(options.shutdown_timeout) && options.debug {
            eprintln!("[errorflow] shutdown timed out; some events may be lost");
        }
    }
}

/// Builds a client from `options`, binds it for the whole process, installs
/// the panic hook and returns the guard that flushes on drop.
///
/// Without a DSN (and without a custom transport) the SDK is a no-op and the
/// application runs as usual.
pub fn init(options: ClientOptions) -> ClientGuard {
    let panic_hook = options.panic_hook;
    let client = Client::new(options).map(Arc::new);
    {
        let mut current = CURRENT.write().unwrap_or_else(|e| e.into_inner());
        current.clone_from(&client);
        MAX_BREADCRUMBS.store(
            client.as_ref().map_or(0, |c| c.options().max_breadcrumbs),
            Ordering::Relaxed,
        );
        ACTIVE.store(client.is_some(), Ordering::Relaxed);
    }
    if client.is_some() && panic_hook {
        crate::panic::install();
    }
    ClientGuard { client }
}

/// Whether a client is bound: one atomic load, for hot paths that skip
/// their work when the SDK is disabled.
pub fn is_active() -> bool {
    ACTIVE.load(Ordering::Relaxed)
}

/// Sends an error and its `source()` chain; returns the event id when queued.
pub fn capture_error(error: &(dyn std::error::Error + 'static)) -> Option<uuid::Uuid> {
    let client = Client::current()?;
    let mut event = Event::new(Level::Error);
    event.exception = exception_chain(error, "capture_error");
    event.message = Some(error.to_string());
    client.capture_event(event)
}

/// Sends a plain message.
pub fn capture_message(message: &str, level: Level) -> Option<uuid::Uuid> {
    let client = Client::current()?;
    let mut event = Event::new(level);
    event.message = Some(message.to_string());
    event.message_template = Some(crate::template::parameterize(message));
    client.capture_event(event)
}

/// Sends a prepared event through the bound client.
pub fn capture_event(event: Event) -> Option<uuid::Uuid> {
    Client::current()?.capture_event(event)
}

/// Waits up to `timeout` for queued events; `true` when none are left (or no client is bound).
pub fn flush(timeout: Duration) -> bool {
    Client::current().is_none_or(|c| c.flush(timeout))
}

/// Delivery counters of the bound client (zeros when none is bound).
pub fn stats() -> Stats {
    Client::current().map(|c| c.stats()).unwrap_or_default()
}

/// The exception chain of `error`, outermost first, following `source()`.
pub fn exception_chain(
    error: &(dyn std::error::Error + 'static),
    mechanism: &str,
) -> Vec<Exception> {
    let mut chain = Vec::new();
    let mut current = Some(error);
    // A cycle in `source()` would loop forever; real chains are short.
    while let Some(err) = current {
        if chain.len() >= 32 {
            break;
        }
        let mut exception = Exception::new(error_type_name(err), err.to_string());
        if chain.is_empty() {
            exception.mechanism = Some(mechanism.to_string());
            exception.handled = Some(true);
        }
        chain.push(exception);
        current = err.source();
    }
    chain
}

/// The best type name available for a `dyn Error`.
///
/// Rust has no runtime type names for trait objects, so well-known std
/// types are recognised by downcasting and the rest are named after the
/// leading identifier of their `Debug` output (`NotFound { path: … }` →
/// `NotFound`), which for derived `Debug` is the type or variant name.
pub fn error_type_name(error: &(dyn std::error::Error + 'static)) -> String {
    macro_rules! known {
        ($($ty:ty),*) => {
            $(if error.is::<$ty>() { return stringify!($ty).replace(' ', ""); })*
        };
    }
    known!(
        std::io::Error,
        std::num::ParseIntError,
        std::num::ParseFloatError,
        std::str::Utf8Error,
        std::string::FromUtf8Error,
        std::fmt::Error,
        serde_json::Error
    );
    let debug = format!("{error:?}");
    let name: String = debug
        .chars()
        .take_while(|c| c.is_alphanumeric() || *c == '_' || *c == ':')
        .collect();
    if name.is_empty() || name.chars().next().is_some_and(|c| c.is_ascii_digit()) {
        "Error".to_string()
    } else {
        name.trim_end_matches(':').to_string()
    }
}

/// A uniform random number in [0, 1), safe to draw while the thread's
/// thread-locals are destroyed (see `protocol::fill_random`).
fn random_fraction() -> f32 {
    let mut bytes = [0u8; 4];
    crate::protocol::fill_random(&mut bytes);
    // 24 random bits: what an f32's mantissa holds exactly.
    (u32::from_le_bytes(bytes) >> 8) as f32 / (1u32 << 24) as f32
}
