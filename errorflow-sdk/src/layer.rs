//! The `tracing` layer: `error!` becomes an event, `warn!`/`info!` breadcrumbs.
//!
//! Filtering is done with a per-layer filter (`with_filter`), never by
//! returning `false` from [`Layer::enabled`], which would disable the
//! callsite for every other layer of the subscriber too. [`layer`] comes with
//! the default filter (INFO and above, not the SDK's own targets); use
//! [`ErrorflowLayer::event_filter`] or `ErrorflowLayer::new().with_filter(…)`
//! for another one.

use std::collections::BTreeMap;
use std::fmt;

use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Record};
use tracing::{Event as TracingEvent, Id, Metadata, Subscriber};
use tracing_subscriber::filter::{FilterFn, Filtered, LevelFilter};
use tracing_subscriber::layer::{Context, Layer};
use tracing_subscriber::registry::LookupSpan;

use crate::client::{exception_chain, Client};
use crate::protocol::{Breadcrumb, Event, Level};
use crate::scope;
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
        span.extensions_mut().insert(SpanFields(visitor.fields));
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
        let Some(client) = Client::current() else {
            return;
        };
        let level = *metadata.level();
        if level == tracing::Level::ERROR {
            let event = build_event(event, &ctx);
            client.capture_event(event);
        } else if level <= tracing::Level::INFO {
            let mut visitor = FieldVisitor::default();
            event.record(&mut visitor);
            let breadcrumb = Breadcrumb {
                timestamp: Some(chrono::Utc::now()),
                category: Some(metadata.target().to_string()),
                level: convert_level(level),
                message: visitor.message,
                data: visitor
                    .fields
                    .into_iter()
                    .map(|(k, v)| (k.to_string(), v))
                    .collect(),
            };
            let max = client.options().max_breadcrumbs;
            scope::current_handle()
                .lock()
                .add_breadcrumb(breadcrumb, max);
        }
    }
}

fn convert_level(level: tracing::Level) -> Level {
    match level {
        tracing::Level::ERROR => Level::Error,
        tracing::Level::WARN => Level::Warning,
        tracing::Level::INFO => Level::Info,
        _ => Level::Debug,
    }
}

fn build_event<S>(event: &TracingEvent<'_>, ctx: &Context<'_, S>) -> Event
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    let metadata = event.metadata();
    let mut visitor = FieldVisitor::default();
    event.record(&mut visitor);

    let mut out = Event::new(convert_level(*metadata.level()));
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
    let template = match &visitor.message {
        Some(message) => parameterize(message),
        None => {
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
    if visitor.message.is_some() {
        out.message_template = Some(template);
    }
    out.message = visitor
        .message
        .take()
        .or_else(|| visitor.exceptions.first().map(|e| e.value.clone()));
    out.exception = visitor.exceptions;

    for (name, value) in visitor.fields {
        insert_field(&mut out, name, value);
    }

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
    out
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
    fields: BTreeMap<&'static str, serde_json::Value>,
    exceptions: Vec<crate::protocol::Exception>,
}

impl Visit for FieldVisitor {
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.fields.insert(field.name(), value.into());
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.fields.insert(field.name(), value.into());
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.fields.insert(field.name(), value.into());
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.fields.insert(field.name(), value.into());
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.message = Some(value.to_string());
        } else {
            self.fields.insert(field.name(), value.into());
        }
    }

    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        // Every error-valued field becomes part of the exception chain; its
        // text is also kept as a field so that it shows next to the others.
        if self.exceptions.is_empty() {
            self.exceptions = exception_chain(value, "tracing");
        }
        self.fields.insert(field.name(), value.to_string().into());
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        if field.name() == "message" {
            self.message = Some(format!("{value:?}"));
        } else {
            self.fields
                .insert(field.name(), format!("{value:?}").into());
        }
    }
}
