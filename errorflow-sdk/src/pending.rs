//! An event between its capture and its delivery: [`PendingEvent`] and
//! what finishing it needs from the client ([`Finisher`]).

use std::sync::Arc;

use crate::protocol::{Event, Level};
use crate::record::LogRecord;
use crate::scope::{BreadcrumbSnapshot, EventProcessor};
use crate::scrub;

/// The SDK's identity, sent with every event.
pub const SDK_NAME: &str = concat!("errorflow-sdk/", env!("CARGO_PKG_VERSION"));

/// A hook that may change or drop (by returning `None`) each event before it is queued.
pub type BeforeSend = Arc<dyn Fn(Event) -> Option<Event> + Send + Sync>;

/// An event captured on the application's thread, with the work that does
/// not need that thread still to do: the log record's derived fields
/// (logger, fingerprint, template, fields as tags), the scope's
/// [`EventProcessor`] (request context), the client's defaults,
/// `before_send` and scrubbing. [`PendingEvent::finish`] does it; the HTTP
/// transport calls it on its worker thread, so that capturing stays cheap
/// and hands few allocations to another thread.
pub struct PendingEvent {
    pub(crate) event_id: uuid::Uuid,
    /// Boxed from the start: an `Event` is large, and a pending event is
    /// moved from the capture through the queue to the worker. `None` for a
    /// log record whose scopes had nothing to merge into it: `finish` makes
    /// it, so that the calling thread allocates nothing for it.
    pub(crate) event: Option<Box<Event>>,
    /// `None` for an event that was finished before it was queued.
    pub(crate) finisher: Option<Arc<Finisher>>,
    pub(crate) processor: Option<Arc<dyn EventProcessor>>,
    pub(crate) record: Option<LogRecord>,
    /// The current scope's breadcrumbs, when the event had none of its own.
    pub(crate) breadcrumbs: Option<BreadcrumbSnapshot>,
}

/// What finishing an event needs from its client, shared (by reference
/// count) with the events in flight so that they can be finished on the
/// transport's thread: the defaults, `before_send` and whether to scrub.
pub(crate) struct Finisher {
    pub(crate) service: Option<String>,
    pub(crate) environment: Option<String>,
    pub(crate) release: Option<String>,
    pub(crate) host: Option<String>,
    pub(crate) before_send: Option<BeforeSend>,
    pub(crate) scrub: bool,
}

impl std::fmt::Debug for PendingEvent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PendingEvent")
            .field("event_id", &self.event_id)
            .finish_non_exhaustive()
    }
}

impl PendingEvent {
    /// An event that needs no more work (sent through `Transport::send`).
    pub(crate) fn finished(event: Event) -> PendingEvent {
        PendingEvent {
            event_id: event.event_id,
            event: Some(Box::new(event)),
            finisher: None,
            processor: None,
            record: None,
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
            finisher,
            processor,
            record,
            breadcrumbs,
        } = self;
        let mut event = event.unwrap_or_else(|| {
            let level = record.as_ref().map_or(Level::Error, |r| r.level());
            Box::new(Event::with_id(event_id, level))
        });
        if let Some(breadcrumbs) = breadcrumbs {
            event.breadcrumbs = breadcrumbs.into_breadcrumbs();
        }
        if let Some(record) = record {
            record.finish(&mut event);
        }
        if let Some(processor) = processor {
            processor.process(&mut event);
        }
        let mut event = *event;
        let Some(finisher) = finisher else {
            return Some(event);
        };
        finisher.fill_defaults(&mut event);
        let mut event = match &finisher.before_send {
            Some(hook) => hook(event)?,
            None => event,
        };
        if finisher.scrub {
            scrub::scrub_event(&mut event);
        }
        Some(event)
    }
}

impl Finisher {
    fn fill_defaults(&self, event: &mut Event) {
        if event.service.is_none() {
            event.service.clone_from(&self.service);
        }
        if event.environment.is_none() {
            event.environment.clone_from(&self.environment);
        }
        if event.release.is_none() {
            event.release.clone_from(&self.release);
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
