//! Client configuration.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use crate::dsn::Dsn;
use crate::pending::BeforeSend;
use crate::protocol::Event;
use crate::transport::Transport;

/// Something that plugs into the SDK when [`init`](crate::init) binds a
/// client: the panic hook is one (added by `init` unless
/// [`ClientOptions::panic_hook`] is off), and an application may add its
/// own with [`ClientOptions::integration`]. The client itself knows none of
/// them; an integration reaches it through [`Client::current`](crate::Client::current).
pub trait Integration: Send + Sync + 'static {
    /// A short name, shown in the options' `Debug` output.
    fn name(&self) -> &'static str;

    /// Runs once each time `init` binds a client built from these options,
    /// after it is bound; not when the SDK is a no-op (no DSN, no transport).
    fn setup(&self, options: &ClientOptions);
}

/// How failed deliveries are retried.
///
/// Network errors, 5xx and 429 are retried with exponential backoff and
/// jitter between `min_delay` and `max_delay` (a `Retry-After` header can ask
/// for longer), until `max_elapsed` has passed since the first attempt; the
/// batch is then dropped and counted in [`Stats::dropped_failed`](crate::Stats).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// The total time spent on one batch, attempts and waits included.
    pub max_elapsed: Duration,
    /// The first wait.
    pub min_delay: Duration,
    /// The longest wait between two attempts (unless `Retry-After` asks for more).
    pub max_delay: Duration,
}

impl Default for RetryPolicy {
    fn default() -> RetryPolicy {
        RetryPolicy {
            max_elapsed: Duration::from_secs(60),
            min_delay: Duration::from_millis(200),
            max_delay: Duration::from_secs(10),
        }
    }
}

/// Everything [`init`](crate::init) needs. Build it with [`ClientOptions::from_env`]
/// or [`ClientOptions::new`] and the builder methods.
///
/// ```
/// use std::time::Duration;
/// use errorflow_sdk::ClientOptions;
///
/// let options = ClientOptions::new()
///     .dsn("http://key@127.0.0.1:8000/1")
///     .service("billing")
///     .environment("staging")
///     .sample_rate(0.5)
///     .batch_interval(Duration::from_millis(500));
/// assert_eq!(options.dsn_ref().unwrap().key(), "key");
/// ```
#[derive(Clone)]
pub struct ClientOptions {
    pub(crate) dsn: Option<Dsn>,
    pub(crate) service: Option<String>,
    pub(crate) environment: Option<String>,
    pub(crate) release: Option<String>,
    pub(crate) sample_rate: f32,
    pub(crate) queue_size: usize,
    pub(crate) max_batch_events: usize,
    pub(crate) max_batch_bytes: usize,
    pub(crate) batch_interval: Duration,
    pub(crate) request_timeout: Duration,
    pub(crate) retry: RetryPolicy,
    pub(crate) shutdown_timeout: Duration,
    pub(crate) before_send: Option<BeforeSend>,
    pub(crate) in_app_include: Vec<String>,
    pub(crate) max_breadcrumbs: usize,
    pub(crate) panic_hook: bool,
    pub(crate) debug: bool,
    pub(crate) scrub: bool,
    pub(crate) transport: Option<Arc<dyn Transport>>,
    pub(crate) integrations: Vec<Arc<dyn Integration>>,
}

impl Default for ClientOptions {
    fn default() -> ClientOptions {
        ClientOptions::new()
    }
}

impl ClientOptions {
    /// Defaults without a DSN: a client built from these alone is a no-op.
    ///
    /// The service defaults to the executable's file name, which is the
    /// closest thing to a service name that is always available.
    pub fn new() -> ClientOptions {
        let service = default_service();
        let in_app = service
            .as_deref()
            .map(|s| vec![s.replace('-', "_")])
            .unwrap_or_default();
        ClientOptions {
            dsn: None,
            service,
            environment: None,
            release: None,
            sample_rate: 1.0,
            queue_size: 1000,
            max_batch_events: 100,
            max_batch_bytes: 1024 * 1024,
            batch_interval: Duration::from_secs(1),
            request_timeout: Duration::from_secs(10),
            retry: RetryPolicy::default(),
            shutdown_timeout: Duration::from_secs(2),
            before_send: None,
            in_app_include: in_app,
            max_breadcrumbs: 100,
            panic_hook: true,
            debug: false,
            scrub: true,
            transport: None,
            integrations: Vec::new(),
        }
    }

    /// Reads `ERRORFLOW_DSN`, `ERRORFLOW_SERVICE`, `ERRORFLOW_ENVIRONMENT`,
    /// `ERRORFLOW_RELEASE` and `ERRORFLOW_DEBUG` on top of [`ClientOptions::new`].
    ///
    /// A missing DSN gives a no-op client; an invalid one does too, with a
    /// warning on stderr, because a typo in monitoring configuration must
    /// not stop the application.
    pub fn from_env() -> ClientOptions {
        let mut options = ClientOptions::new();
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
        if let Some(dsn) = var("ERRORFLOW_DSN") {
            options = options.dsn(&dsn);
        }
        if let Some(service) = var("ERRORFLOW_SERVICE") {
            options = options.service(service);
        }
        if let Some(env) = var("ERRORFLOW_ENVIRONMENT") {
            options = options.environment(env);
        }
        if let Some(release) = var("ERRORFLOW_RELEASE") {
            options = options.release(release);
        }
        if let Some(debug) = var("ERRORFLOW_DEBUG") {
            options.debug = matches!(debug.as_str(), "1" | "true" | "yes");
        }
        options
    }

    /// Sets the DSN. An invalid DSN is reported on stderr and leaves the client a no-op.
    pub fn dsn(mut self, dsn: &str) -> ClientOptions {
        match dsn.parse::<Dsn>() {
            Ok(dsn) => self.dsn = Some(dsn),
            Err(err) => {
                eprintln!("[errorflow] {err}; events will not be sent");
                self.dsn = None;
            }
        }
        self
    }

    /// The parsed DSN, if any.
    pub fn dsn_ref(&self) -> Option<&Dsn> {
        self.dsn.as_ref()
    }

    /// The service name sent with every event.
    pub fn service(mut self, service: impl Into<String>) -> ClientOptions {
        self.service = Some(service.into());
        self
    }

    /// The environment (`prod`, `staging`, …).
    pub fn environment(mut self, environment: impl Into<String>) -> ClientOptions {
        self.environment = Some(environment.into());
        self
    }

    /// The release; see [`release!`](crate::release) to use the crate version.
    pub fn release(mut self, release: impl Into<String>) -> ClientOptions {
        self.release = Some(release.into());
        self
    }

    /// Sets the release unless one is set already (for example from `ERRORFLOW_RELEASE`).
    pub fn default_release(mut self, release: impl Into<String>) -> ClientOptions {
        if self.release.is_none() {
            self.release = Some(release.into());
        }
        self
    }

    /// The share of events kept, from 0.0 (none) to 1.0 (all, the default).
    pub fn sample_rate(mut self, rate: f32) -> ClientOptions {
        self.sample_rate = rate.clamp(0.0, 1.0);
        self
    }

    /// How many events may wait for the worker; more are dropped and counted.
    pub fn queue_size(mut self, size: usize) -> ClientOptions {
        self.queue_size = size.max(1);
        self
    }

    /// The most events in one request.
    pub fn max_batch_events(mut self, n: usize) -> ClientOptions {
        self.max_batch_events = n.max(1);
        self
    }

    /// The largest uncompressed request body; a single larger event is dropped.
    pub fn max_batch_bytes(mut self, n: usize) -> ClientOptions {
        self.max_batch_bytes = n.max(1024);
        self
    }

    /// How long the worker waits for more events before sending a partial batch.
    pub fn batch_interval(mut self, interval: Duration) -> ClientOptions {
        self.batch_interval = interval;
        self
    }

    /// The timeout of one HTTP request.
    pub fn request_timeout(mut self, timeout: Duration) -> ClientOptions {
        self.request_timeout = timeout;
        self
    }

    /// How failed requests are retried.
    pub fn retry(mut self, retry: RetryPolicy) -> ClientOptions {
        self.retry = retry;
        self
    }

    /// How long dropping the [`ClientGuard`](crate::ClientGuard) waits for queued events.
    pub fn shutdown_timeout(mut self, timeout: Duration) -> ClientOptions {
        self.shutdown_timeout = timeout;
        self
    }

    /// A hook run for every event; `None` drops the event. With the HTTP
    /// transport it runs on the transport's worker thread (events are
    /// finished there, see [`PendingEvent`](crate::PendingEvent)); events it
    /// logs are not reported, and a panic in it costs that one event.
    pub fn before_send(
        mut self,
        f: impl Fn(Event) -> Option<Event> + Send + Sync + 'static,
    ) -> ClientOptions {
        self.before_send = Some(Arc::new(f));
        self
    }

    /// Crate prefixes (`my_app`, `my_lib`) whose stack frames are the application's own.
    pub fn in_app_include<I, S>(mut self, prefixes: I) -> ClientOptions
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.in_app_include = prefixes.into_iter().map(Into::into).collect();
        self
    }

    /// The size of each scope's breadcrumb ring (default 100).
    pub fn max_breadcrumbs(mut self, n: usize) -> ClientOptions {
        self.max_breadcrumbs = n;
        self
    }

    /// Whether [`init`](crate::init) installs the panic hook (default true).
    pub fn panic_hook(mut self, install: bool) -> ClientOptions {
        self.panic_hook = install;
        self
    }

    /// Prints the SDK's own diagnostics (delivery failures, drops) to stderr.
    pub fn debug(mut self, debug: bool) -> ClientOptions {
        self.debug = debug;
        self
    }

    /// Whether sensitive values are replaced by `[Filtered]` (default true).
    pub fn scrub(mut self, scrub: bool) -> ClientOptions {
        self.scrub = scrub;
        self
    }

    /// Replaces the HTTP transport, for tests and custom sinks. A client with
    /// a custom transport is active even without a DSN.
    pub fn transport(mut self, transport: Arc<dyn Transport>) -> ClientOptions {
        self.transport = Some(transport);
        self
    }

    /// Adds an [`Integration`], set up by [`init`](crate::init) after the
    /// default ones.
    pub fn integration(mut self, integration: impl Integration) -> ClientOptions {
        self.integrations.push(Arc::new(integration));
        self
    }
}

impl fmt::Debug for ClientOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientOptions")
            .field("dsn", &self.dsn)
            .field("service", &self.service)
            .field("environment", &self.environment)
            .field("release", &self.release)
            .field("sample_rate", &self.sample_rate)
            .field("queue_size", &self.queue_size)
            .field("max_batch_events", &self.max_batch_events)
            .field("max_batch_bytes", &self.max_batch_bytes)
            .field("batch_interval", &self.batch_interval)
            .field("retry", &self.retry)
            .field("before_send", &self.before_send.is_some())
            .field("in_app_include", &self.in_app_include)
            .field("debug", &self.debug)
            .field(
                "integrations",
                &self
                    .integrations
                    .iter()
                    .map(|i| i.name())
                    .collect::<Vec<_>>(),
            )
            .finish_non_exhaustive()
    }
}

fn default_service() -> Option<String> {
    let exe = std::env::current_exe().ok()?;
    let stem = exe.file_stem()?.to_string_lossy().into_owned();
    // Cargo names test and bench binaries `name-<16 hex digits>`; the hash
    // is noise in a service name and would hide the crate from `in_app`.
    match stem.rsplit_once('-') {
        Some((name, hash)) if hash.len() == 16 && hash.bytes().all(|b| b.is_ascii_hexdigit()) => {
            Some(name.to_string())
        }
        _ => Some(stem),
    }
}

/// The calling crate's `CARGO_PKG_VERSION`, for [`ClientOptions::default_release`].
///
/// It is a macro so that it expands in the application's crate, not the SDK's.
///
/// ```
/// let options = errorflow_sdk::ClientOptions::new().default_release(errorflow_sdk::release!());
/// ```
#[macro_export]
macro_rules! release {
    () => {
        concat!(env!("CARGO_PKG_NAME"), "@", env!("CARGO_PKG_VERSION"))
    };
}
