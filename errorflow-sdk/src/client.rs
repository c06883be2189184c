//! The client: prepares events on the calling thread and hands them to a transport.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use crate::exception::exception_chain;
use crate::http_transport::HttpTransport;
use crate::options::ClientOptions;
use crate::pending::{Finisher, PendingEvent};
use crate::protocol::{Event, Level};
use crate::record::LogRecord;
use crate::scope::{self, Scope, ScopeHandle};
use crate::transport::{Stats, Transport};

/// A configured client. Obtain the bound one with [`Client::current`].
pub struct Client {
    options: ClientOptions,
    finisher: Arc<Finisher>,
    transport: Arc<dyn Transport>,
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
        let finisher = Arc::new(Finisher {
            service: options.service.clone(),
            environment: options.environment.clone(),
            release: options.release.clone(),
            host: hostname(),
            before_send: options.before_send.clone(),
            scrub: options.scrub,
        });
        Some(Client {
            options,
            finisher,
            transport,
        })
    }

    /// The client bound by [`init`](crate::init), if any.
    pub fn current() -> Option<Arc<Client>> {
        if !ACTIVE.load(Ordering::Relaxed) {
            return None;
        }
        CURRENT.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// The options the client was built with.
    pub fn options(&self) -> &ClientOptions {
        &self.options
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
        let sample_rate = self.options.sample_rate;
        if sample_rate < 1.0 && random_fraction() >= sample_rate {
            return None;
        }
        let (event_id, level, mut event, record) = match capture {
            Capture::Event(event) => (event.event_id, event.level, Some(event), None),
            Capture::Log(id, record) => (id, record.level(), None, Some(record)),
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
            finisher: Some(self.finisher.clone()),
            processor,
            record,
            breadcrumbs,
        });
        Some(event_id)
    }
}

/// What [`Client::capture_pending`] captures.
// The log variant is large and is moved into the pending event: boxing it
// would bring back the allocation that keeping it inline avoids.
#[allow(clippy::large_enum_variant)]
pub(crate) enum Capture {
    /// An event built by the caller.
    Event(Box<Event>),
    /// A log call's record (the `tracing` layer's `error!`), with its id.
    Log(uuid::Uuid, LogRecord),
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

/// Builds a client from `options`, binds it for the whole process, sets up
/// the options' integrations and returns the guard that flushes on drop.
/// [`crate::init`] adds the default integrations first.
pub(crate) fn init(options: ClientOptions) -> ClientGuard {
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
    if let Some(client) = &client {
        for integration in &client.options().integrations {
            integration.setup(client.options());
        }
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

/// A uniform random number in [0, 1), safe to draw while the thread's
/// thread-locals are destroyed (see `protocol::fill_random`).
fn random_fraction() -> f32 {
    let mut bytes = [0u8; 4];
    crate::protocol::fill_random(&mut bytes);
    // 24 random bits: what an f32's mantissa holds exactly.
    (u32::from_le_bytes(bytes) >> 8) as f32 / (1u32 << 24) as f32
}
