//! The errorflow SDK: report `tracing::error!`, panics and errors to an
//! errorflow collector.
//!
//! # Quickstart
//!
//! ```
//! use tracing_subscriber::prelude::*;
//!
//! // Reads ERRORFLOW_DSN (`http://KEY@HOST:PORT/PROJECT_ID`), ERRORFLOW_SERVICE,
//! // ERRORFLOW_ENVIRONMENT and ERRORFLOW_RELEASE. Without a DSN nothing is sent.
//! let _guard = errorflow_sdk::init(errorflow_sdk::ClientOptions::from_env());
//! tracing_subscriber::registry().with(errorflow_sdk::layer()).init();
//!
//! let err = std::io::Error::new(std::io::ErrorKind::Other, "card declined");
//! tracing::info!("charging card"); // a breadcrumb
//! tracing::error!(error = &err as &dyn std::error::Error, order_id = 42, "payment for order {} failed", 42);
//! // Panics are reported by the hook that `init` installed; the guard
//! // flushes queued events when `main` returns.
//! ```
//!
//! # Crate map
//!
//! - [`protocol`]: the wire types, and [`scrub`], the names of sensitive
//!   fields: the only modules built with `default-features = false` (the
//!   collector's view of the SDK; its server-side scrubbing shares the list).
//! - [`ClientOptions`], [`init`], [`ClientGuard`], [`Client`]: configuration,
//!   lifecycle and capture. The client knows no integration: the tracing
//!   layer and the panic hook reach it through [`Client::current`], and
//!   `init` sets up the [`Integration`]s the options list.
//! - [`layer()`]: the `tracing` layer.
//! - [`panic`](mod@panic): the panic hook, an integration `init` adds by default.
//! - [`scope`]: context (tags, user, request, breadcrumbs) and how it follows async tasks.
//! - [`transport`]: the [`Transport`] trait; [`http_transport`]: the bounded
//!   queue and batching HTTP worker.
//!
//! **Architecture Invariant:** capturing never blocks, panics or recurses.
//! The calling thread only takes what it borrows (message, fields, error
//! chain, span fields, scope) into a [`PendingEvent`] and `try_send`s it;
//! the rest ([`PendingEvent::finish`]: fingerprint, request context,
//! defaults, `before_send`, scrubbing) runs on the transport's thread.
//! Events whose target starts with `errorflow_sdk`, or that are logged on
//! the transport's thread, are ignored by the layer; the SDK's own
//! diagnostics go to stderr when [`ClientOptions::debug`] is on.

#![forbid(unsafe_code)]

pub mod protocol;

#[cfg(feature = "client")]
mod client;
#[cfg(feature = "client")]
mod dsn;
#[cfg(feature = "client")]
mod error;
#[cfg(feature = "client")]
mod exception;
#[cfg(feature = "client")]
pub mod http_transport;
#[cfg(feature = "client")]
pub mod layer;
#[cfg(feature = "client")]
mod options;
#[cfg(feature = "client")]
pub mod panic;
#[cfg(feature = "client")]
mod pending;
#[cfg(feature = "client")]
mod record;
#[cfg(feature = "client")]
pub mod scope;
pub mod scrub;
#[cfg(feature = "client")]
pub mod template;
#[cfg(feature = "test")]
#[path = "test_transport.rs"]
pub mod test;
#[cfg(feature = "client")]
pub mod transport;

#[cfg(feature = "client")]
pub use client::{
    capture_error, capture_event, capture_message, flush, is_active, stats, Client, ClientGuard,
};
#[cfg(feature = "client")]
pub use dsn::Dsn;
#[cfg(feature = "client")]
pub use error::Error;
#[cfg(feature = "client")]
pub use exception::{error_type_name, exception_chain};
#[cfg(feature = "client")]
pub use http_transport::HttpTransport;
#[cfg(feature = "client")]
pub use layer::{layer, ErrorflowLayer};
#[cfg(feature = "client")]
pub use options::{ClientOptions, Integration, RetryPolicy};
#[cfg(feature = "client")]
pub use pending::{BeforeSend, PendingEvent, SDK_NAME};
#[cfg(feature = "client")]
pub use scope::{configure_scope, EventProcessor, Scope};
#[cfg(feature = "client")]
pub use transport::{Stats, Transport};

/// Builds a client from `options`, binds it for the whole process, sets up
/// its integrations (the panic hook first, unless
/// [`ClientOptions::panic_hook`] is off) and returns the guard that flushes
/// on drop.
///
/// Without a DSN (and without a custom transport) the SDK is a no-op and the
/// application runs as usual.
#[cfg(feature = "client")]
pub fn init(mut options: ClientOptions) -> ClientGuard {
    if options.panic_hook {
        let panic: std::sync::Arc<dyn Integration> = std::sync::Arc::new(panic::PanicIntegration);
        options.integrations.insert(0, panic);
    }
    client::init(options)
}
