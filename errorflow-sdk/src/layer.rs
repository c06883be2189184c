//! The `tracing` layer: `error!` becomes an event, `warn!`/`info!` breadcrumbs.
//!
//! Filtering is done with a per-layer filter (`with_filter`), never by
//! returning `false` from [`Layer::enabled`], which would disable the
//! callsite for every other layer of the subscriber too. [`layer`] comes with
//! the default filter (INFO and above, not the SDK's own targets); use
//! [`ErrorflowLayer::event_filter`] or `ErrorflowLayer::new().with_filter(…)`
//! for another one.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::fmt;

use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Record};
use tracing::{Event as TracingEvent, Id, Metadata, Subscriber};
use tracing_subscriber::filter::{FilterFn, Filtered, LevelFilter};
use tracing_subscriber::layer::{Context, Layer};
use tracing_subscriber::registry::LookupSpan;

use crate::client::{exception_chain, Client};
use crate::protocol::{Event, Level};
use crate::scope::{self, RecordedCrumb};
use crate::template::parameterize;

/// Tags longer than this go to `extra` instead: tags are for searching, not prose.
const MAX_TAG_LEN: usize = 200;

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

/// Fields recorded on a span, kept in its extensions.
#[derive(Debug, Default)]
struct SpanFields(BTreeMap<&'static str, serde_json::Value>);

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
            .insert(SpanFields(visitor.fields.into_iter().collect()));
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(id) else { return };
        let mut extensions = span.extensions_mut();
        if let Some(fields) = extensions.get_mut::<SpanFields>() {
            let mut visitor = FieldVisitor::default();
            values.record(&mut visitor);
            fields.0.extend(visitor.fields);
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
            let (event, parts) = build_event(event, &ctx);
            client.capture_pending(event, None, Some(parts));
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
    SCRATCH.with(|cell| {
        // Busy: this breadcrumb is being logged while another is formatted.
        let Ok(mut scratch) = cell.try_borrow_mut() else {
            return;
        };
        scratch.message.clear();
        scratch.has_message = false;
        scratch.fields.clear();
        scratch.metadata = Some(event.metadata());
        // Breadcrumbs need the time to the millisecond at best; the coarse
        // clock is much cheaper to read than the precise one.
        scratch.timestamp = Some(
            std::time::UNIX_EPOCH + std::time::Duration::from(coarsetime::Clock::now_since_epoch()),
        );
        event.record(&mut CrumbVisitor(&mut scratch));
        scope::with_current(|handle| handle.lock().push_recorded(&mut scratch, max));
    });
}

struct CrumbVisitor<'a>(&'a mut RecordedCrumb);

impl Visit for CrumbVisitor<'_> {
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.0.fields.push((field.name(), value.into()));
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.0.fields.push((field.name(), value.into()));
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.0.fields.push((field.name(), value.into()));
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.0.fields.push((field.name(), value.into()));
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.0.message.push_str(value);
            self.0.has_message = true;
        } else {
            self.0.fields.push((field.name(), value.into()));
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        if field.name() == "message" {
            use std::fmt::Write;
            let _ = write!(self.0.message, "{value:?}");
            self.0.has_message = true;
        } else {
            self.0
                .fields
                .push((field.name(), format!("{value:?}").into()));
        }
    }
}

/// What [`finish_event`] derives from a `tracing` event, off the calling thread.
pub(crate) struct TracingParts {
    metadata: &'static Metadata<'static>,
    has_message: bool,
    fields: Vec<(&'static str, serde_json::Value)>,
}

fn convert_level(level: tracing::Level) -> Level {
    match level {
        tracing::Level::ERROR => Level::Error,
        tracing::Level::WARN => Level::Warning,
        tracing::Level::INFO => Level::Info,
        _ => Level::Debug,
    }
}

/// The part of an `error!` event that must be taken on the calling thread:
/// the formatted message, the fields, the error chain and the span fields
/// (all borrowed from the caller). The rest is [`finish_event`]'s.
fn build_event<S>(event: &TracingEvent<'_>, ctx: &Context<'_, S>) -> (Box<Event>, TracingParts)
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    let metadata = event.metadata();
    let mut visitor = FieldVisitor::default();
    event.record(&mut visitor);

    let mut out = Box::new(Event::new(convert_level(*metadata.level())));
    let has_message = visitor.message.is_some();
    out.message = visitor
        .message
        .take()
        .or_else(|| visitor.exceptions.first().map(|e| e.value.clone()));
    out.exception = visitor.exceptions;

    if let Some(scope) = ctx.event_scope(event) {
        let mut spans = Vec::new();
        for span in scope.from_root() {
            let extensions = span.extensions();
            let fields = extensions.get::<SpanFields>();
            if let Some(fields) = fields {
                for (name, value) in &fields.0 {
                    if let Some(tag) = as_tag(value) {
                        out.tags.entry((*name).to_string()).or_insert(tag);
                    }
                }
            }
            let fields: serde_json::Map<String, serde_json::Value> = fields
                .map(|f| {
                    f.0.iter()
                        .map(|(k, v)| ((*k).to_string(), v.clone()))
                        .collect()
                })
                .unwrap_or_default();
            spans.push(serde_json::json!({ "name": span.name(), "fields": fields }));
        }
        if !spans.is_empty() {
            out.extra
                .insert("spans".into(), serde_json::Value::Array(spans));
        }
    }
    let parts = TracingParts {
        metadata,
        has_message,
        fields: visitor.fields,
    };
    (out, parts)
}

/// Completes an event built by the layer: logger, callsite, fingerprint,
/// message template and the event's fields as tags or extra.
pub(crate) fn finish_event(out: &mut Event, parts: TracingParts) {
    let metadata = parts.metadata;
    out.logger = Some(metadata.target().to_string());
    let module = metadata.module_path().unwrap_or_default();
    if let Some(module) = metadata.module_path() {
        out.extra.insert("module_path".into(), module.into());
    }
    if let Some(file) = metadata.file() {
        out.extra.insert("file".into(), file.into());
    }
    if let Some(line) = metadata.line() {
        out.extra.insert("line".into(), line.into());
    }

    // The grouping key of a log call is its callsite, minus the line number
    // (which moves with every unrelated edit): target, module and the
    // message template, or the field names for a message-less event.
    let template = match (&out.message, parts.has_message) {
        (Some(message), true) => parameterize(message),
        _ => {
            let mut names: Vec<&str> = metadata.fields().iter().map(|f| f.name()).collect();
            names.sort_unstable();
            names.join(",")
        }
    };
    out.fingerprint = Some(vec![
        metadata.target().to_string(),
        module.to_string(),
        template.clone(),
    ]);
    if parts.has_message {
        out.message_template = Some(template);
    }
    for (name, value) in parts.fields {
        insert_field(out, name, value);
    }
}

fn as_tag(value: &serde_json::Value) -> Option<String> {
    match value {
        serde_json::Value::String(s) if s.len() <= MAX_TAG_LEN => Some(s.clone()),
        serde_json::Value::Bool(b) => Some(b.to_string()),
        serde_json::Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

fn insert_field(event: &mut Event, name: &'static str, value: serde_json::Value) {
    // The value is moved, not cloned: this runs for every field of every event.
    match value {
        serde_json::Value::String(s) if s.len() <= MAX_TAG_LEN => {
            event.tags.insert(name.to_string(), s);
        }
        serde_json::Value::Bool(_) | serde_json::Value::Number(_) => {
            event.tags.insert(name.to_string(), value.to_string());
        }
        other => {
            event.extra.insert(name.to_string(), other);
        }
    }
}

/// Collects an event's or span's fields as JSON values.
#[derive(Default)]
struct FieldVisitor {
    message: Option<String>,
    fields: Vec<(&'static str, serde_json::Value)>,
    exceptions: Vec<crate::protocol::Exception>,
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
        if field.name() == "message" {
            self.message = Some(value.to_string());
        } else {
            self.fields.push((field.name(), value.into()));
        }
    }

    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        // Every error-valued field becomes part of the exception chain; its
        // text is also kept as a field so that it shows next to the others.
        if self.exceptions.is_empty() {
            self.exceptions = exception_chain(value, "tracing");
        }
        self.fields.push((field.name(), value.to_string().into()));
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        if field.name() == "message" {
            self.message = Some(format!("{value:?}"));
        } else {
            self.fields
                .push((field.name(), format!("{value:?}").into()));
        }
    }
}
