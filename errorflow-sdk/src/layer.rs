//! The `tracing` layer: `error!` becomes an event, `warn!`/`info!` breadcrumbs.
//!
//! Filtering is done with a per-layer filter (`with_filter`), never by
//! returning `false` from [`Layer::enabled`], which would disable the
//! callsite for every other layer of the subscriber too. [`layer`] comes with
//! the default filter (INFO and above, not the SDK's own targets); use
//! [`ErrorflowLayer::event_filter`] or `ErrorflowLayer::new().with_filter(…)`
//! for another one.

use std::cell::RefCell;
use std::fmt;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Record};
use tracing::{Event as TracingEvent, Id, Metadata, Subscriber};
use tracing_subscriber::filter::{FilterFn, Filtered, LevelFilter};
use tracing_subscriber::layer::{Context, Layer};
use tracing_subscriber::registry::LookupSpan;

use crate::client::{Capture, Client};
use crate::record::{EventFields, FieldsVisitor, LogRecord, SpanFieldMap};
use crate::scope::{self, RecordedCrumb};

/// The filter of [`layer`]: INFO and above, except the SDK's own targets.
pub type DefaultFilter = FilterFn<fn(&Metadata<'_>) -> bool>;

/// The layer; see the [module docs](self).
#[derive(Debug, Clone, Default)]
pub struct ErrorflowLayer {
    _private: (),
}

/// The layer with its default filter: `error!` → events, `warn!`/`info!` →
/// breadcrumbs, `debug!`/`trace!` ignored (and not even enabled on its behalf).
pub fn layer<S>() -> Filtered<ErrorflowLayer, DefaultFilter, S>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    ErrorflowLayer::new().with_filter(default_filter())
}

/// The default filter on its own, to combine with others.
pub fn default_filter() -> DefaultFilter {
    FilterFn::new(default_enabled as fn(&Metadata<'_>) -> bool)
        .with_max_level_hint(LevelFilter::INFO)
}

fn default_enabled(metadata: &Metadata<'_>) -> bool {
    *metadata.level() <= tracing::Level::INFO && !is_own_target(metadata.target())
}

fn is_own_target(target: &str) -> bool {
    target.starts_with("errorflow_sdk")
}

impl ErrorflowLayer {
    /// The unfiltered layer; add a filter with `with_filter`.
    pub fn new() -> ErrorflowLayer {
        ErrorflowLayer::default()
    }

    /// The layer behind a closure filter, for example to report only some targets:
    ///
    /// ```
    /// use tracing_subscriber::prelude::*;
    ///
    /// let layer = errorflow_sdk::ErrorflowLayer::new()
    ///     .event_filter(|md| md.target().starts_with("my_app") && *md.level() <= tracing::Level::WARN);
    /// let _subscriber = tracing_subscriber::registry().with(layer);
    /// ```
    pub fn event_filter<S, F>(self, f: F) -> Filtered<ErrorflowLayer, FilterFn<F>, S>
    where
        S: Subscriber + for<'a> LookupSpan<'a>,
        F: Fn(&Metadata<'_>) -> bool,
    {
        self.with_filter(FilterFn::new(f))
    }
}

/// Fields recorded on a span, kept in its extensions. Shared, so that an
/// event captured inside the span takes them with a reference count instead
/// of a copy; `record` copies them only while an event still holds them.
#[derive(Debug, Default)]
struct SpanFields(Arc<SpanFieldMap>);

impl<S> Layer<S> for ErrorflowLayer
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        if Client::current().is_none() {
            return;
        }
        let Some(span) = ctx.span(id) else { return };
        let mut visitor = FieldVisitor::default();
        attrs.record(&mut visitor);
        span.extensions_mut()
            .insert(SpanFields(Arc::new(visitor.fields.into_iter().collect())));
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(id) else { return };
        let mut extensions = span.extensions_mut();
        if let Some(fields) = extensions.get_mut::<SpanFields>() {
            let mut visitor = FieldVisitor::default();
            values.record(&mut visitor);
            Arc::make_mut(&mut fields.0).extend(visitor.fields);
        }
    }

    fn on_event(&self, event: &TracingEvent<'_>, ctx: Context<'_, S>) {
        let metadata = event.metadata();
        // The SDK's own diagnostics go to stderr, but a dependency of the
        // transport might log through `tracing`; reporting that would recurse.
        if is_own_target(metadata.target()) || crate::transport::in_transport_thread() {
            return;
        }
        let level = *metadata.level();
        if level == tracing::Level::ERROR {
            let Some(client) = Client::current() else {
                return;
            };
            let (id, record) = build_event(event, &ctx);
            client.capture_pending(Capture::Log(id, record), None);
        } else if level <= tracing::Level::INFO {
            let max = crate::client::max_breadcrumbs();
            if max > 0 {
                record_breadcrumb(event, max);
            }
        }
    }
}

thread_local! {
    /// The breadcrumb being recorded on this thread; its buffers are swapped
    /// with the oldest breadcrumb of a full ring, so they are reused.
    static SCRATCH: RefCell<RecordedCrumb> = RefCell::new(RecordedCrumb::default());
}

/// Records a breadcrumb: formatted into this thread's scratch buffers (not
/// under the scope's lock, since formatting runs user code that may log),
/// then swapped into the current scope's ring.
fn record_breadcrumb(event: &TracingEvent<'_>, max: usize) {
    // `try_with`: code that logs while this thread's thread-locals are being
    // destroyed (a pool's destructor, say) must not make the SDK panic
    // there, which aborts the process; its breadcrumbs are not kept.
    let _ = SCRATCH.try_with(|cell| {
        // Busy: this breadcrumb is being logged while another is formatted.
        let Ok(mut scratch) = cell.try_borrow_mut() else {
            return;
        };
        scratch.fields.clear();
        scratch.metadata = Some(event.metadata());
        scratch.timestamp = Some(coarse_now());
        event.record(&mut FieldsVisitor {
            fields: &mut scratch.fields,
            exceptions: None,
        });
        scope::with_current(|handle| {
            // Logged from inside `configure_scope` on this very scope, the
            // breadcrumb is not kept.
            if let Some(mut scope) = handle.lock_unless_held_here() {
                scope.push_recorded(&mut scratch, max);
            }
        });
    });
}

/// The wall clock to a few milliseconds, which is all a breadcrumb needs.
/// On Linux the kernel's coarse clock is a read of a value it keeps up to
/// date, where the precise clock reads the CPU's time counter (dear in a
/// virtual machine); elsewhere, the precise clock.
#[cfg(any(target_os = "linux", target_os = "android"))]
fn coarse_now() -> SystemTime {
    let now = rustix::time::clock_gettime(rustix::time::ClockId::RealtimeCoarse);
    match (u64::try_from(now.tv_sec), u32::try_from(now.tv_nsec)) {
        (Ok(secs), Ok(nanos)) => UNIX_EPOCH + std::time::Duration::new(secs, nanos),
        // Before 1970: no coarse reading to trust.
        _ => SystemTime::now(),
    }
}

#[cfg(not(any(target_os = "linux", target_os = "android")))]
fn coarse_now() -> SystemTime {
    SystemTime::now()
}

/// The part of an `error!` event that must be taken on the calling thread:
/// the message and fields (formatted into one inline buffer), the error chain, the
/// span fields (a reference count each), the time and the id. The rest,
/// the `Event` itself and JSON values included, is [`LogRecord::finish`]'s.
fn build_event<S>(event: &TracingEvent<'_>, ctx: &Context<'_, S>) -> (uuid::Uuid, LogRecord)
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    let metadata = event.metadata();
    let time = SystemTime::now();
    let mut exceptions = Vec::new();
    let mut fields = EventFields::default();
    event.record(&mut FieldsVisitor {
        fields: &mut fields,
        exceptions: Some(&mut exceptions),
    });

    let spans = match ctx.event_scope(event) {
        Some(scope) => scope
            .from_root()
            .map(|span| {
                let fields = span.extensions().get::<SpanFields>().map(|f| f.0.clone());
                (span.name(), fields)
            })
            .collect(),
        None => Vec::new(),
    };
    let record = LogRecord {
        metadata,
        time,
        fields,
        exceptions,
        spans,
    };
    (crate::protocol::time_ordered_id(time.into()), record)
}

/// Collects a span's fields as JSON values (a span's message, if it has
/// one, is not kept).
#[derive(Default)]
struct FieldVisitor {
    fields: Vec<(&'static str, serde_json::Value)>,
}

impl Visit for FieldVisitor {
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.fields.push((field.name(), value.into()));
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.fields.push((field.name(), value.into()));
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.fields.push((field.name(), value.into()));
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.fields.push((field.name(), value.into()));
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() != "message" {
            self.fields.push((field.name(), value.into()));
        }
    }

    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.fields.push((field.name(), value.to_string().into()));
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        if field.name() != "message" {
            self.fields
                .push((field.name(), format!("{value:?}").into()));
        }
    }
}
