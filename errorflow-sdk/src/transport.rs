//! Where events go: the [`Transport`] trait and its [`Stats`]. The default
//! transport, batching over HTTP, is
//! [`HttpTransport`](crate::http_transport::HttpTransport).
//!
//! **Architecture Invariant:** [`Transport::send`] never blocks or awaits.

use std::time::Duration;

use crate::pending::PendingEvent;
use crate::protocol::Event;

/// Where prepared events go.
///
/// Implementations must return quickly from `send`: it runs on the thread
/// that logged the error.
pub trait Transport: Send + Sync + 'static {
    /// Queues one event for delivery.
    fn send(&self, event: Event);

    /// Queues a captured event that still has to be finished
    /// ([`PendingEvent::finish`]: derived fields, request context, defaults,
    /// `before_send`, scrubbing). The default finishes it here, on the
    /// calling thread, and calls [`Transport::send`]; the HTTP transport
    /// leaves that work to its worker thread.
    fn send_pending(&self, event: PendingEvent) {
        if let Some(event) = event.finish() {
            self.send(event);
        }
    }

    /// Waits up to `timeout` for queued events to be delivered (or given up
    /// on); `true` when nothing is left.
    fn flush(&self, timeout: Duration) -> bool {
        let _ = timeout;
        true
    }

    /// Flushes and stops background work.
    fn shutdown(&self, timeout: Duration) -> bool {
        self.flush(timeout)
    }

    /// Delivery counters.
    fn stats(&self) -> Stats {
        Stats::default()
    }
}

/// Delivery counters since the client started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Stats {
    /// Events accepted into the queue.
    pub queued: u64,
    /// Events the collector acknowledged (accepted or duplicate).
    pub sent: u64,
    /// Events dropped because the queue was full.
    pub dropped_queue_full: u64,
    /// Events given up on after retries, or too large to send.
    pub dropped_failed: u64,
    /// Retried requests.
    pub retried: u64,
    /// Events the collector refused (4xx other than 429, or per-event rejections).
    pub rejected: u64,
    /// Events that `before_send` dropped (or panicked on) on the worker thread.
    pub filtered: u64,
}

thread_local! {
    static IN_TRANSPORT: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Whether the current thread is the transport's worker. Events raised there
/// (a dependency logging an error while sending, a panic while serialising)
/// are not captured: reporting them would feed the transport its own failures.
pub(crate) fn in_transport_thread() -> bool {
    IN_TRANSPORT.with(|c| c.get())
}

/// Marks the current thread as a transport's worker (see [`in_transport_thread`]).
pub(crate) fn mark_transport_thread() {
    IN_TRANSPORT.with(|c| c.set(true));
}
