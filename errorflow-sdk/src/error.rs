//! The SDK's error type.

/// Why the SDK could not do what it was asked.
///
/// The SDK never returns these from the hot path (capturing an event cannot
/// fail from the caller's point of view); they surface from configuration
/// parsing and are otherwise only printed to stderr when `debug` is on.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The DSN is not of the form `http(s)://KEY@HOST[:PORT]/PROJECT_ID`.
    #[error("invalid DSN {dsn:?}: {reason}")]
    InvalidDsn {
        /// The DSN with its key hidden, so that the message is safe to log.
        dsn: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The HTTP client could not be built (for example, no TLS backend).
    #[error("cannot build the HTTP client")]
    HttpClient(#[source] reqwest::Error),
    /// The background worker thread could not be spawned.
    #[error("cannot spawn the errorflow transport thread")]
    SpawnWorker(#[source] std::io::Error),
}
