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
use std::fmt::{self, Write as _};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use smallvec::SmallVec;

use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Record};
use tracing::{Event as TracingEvent, Id, Metadata, Subscriber};
use tracing_subscriber::filter::{FilterFn, Filtered, LevelFilter};
use tracing_subscriber::layer::{Context, Layer};
use tracing_subscriber::registry::LookupSpan;

use crate::client::{exception_chain, Capture, Client};
use crate::protocol::{Event, Exception, Level};
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

/// Fields recorded on a span, kept in its extensions. Shared, so that an
/// event captured inside the span takes them with a reference count instead
/// of a copy; `record` copies them only while an event still holds them.
#[derive(Debug, Default)]
struct SpanFields(Arc<SpanFieldMap>);

type SpanFieldMap = BTreeMap<&'static str, serde_json::Value>;

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
            let (id, parts) = build_event(event, &ctx);
            client.capture_pending(Capture::Tracing(id, parts), None);
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

/// An event's message and fields as the calling thread takes them: the
/// text (the message and every text value) is written into one buffer and
/// the fields refer to it. They become JSON only when an event or
/// breadcrumb is built from them. `TEXT` bytes of text and `VALUES` fields
/// are kept inline: an `error!` event's are, so that the calling thread
/// allocates nothing for them (memory that another thread frees is what
/// costs most in a hand-off); a breadcrumb's are not, since its buffers
/// live in the scope's ring and are reused.
#[derive(Debug, Clone, Default)]
pub(crate) struct Fields<const TEXT: usize, const VALUES: usize> {
    /// UTF-8: only `str`s are written to it.
    text: SmallVec<[u8; TEXT]>,
    /// Where the message is in `text`, when the event has one.
    message: Option<(u32, u32)>,
    values: SmallVec<[(&'static str, FieldValue); VALUES]>,
}

/// The fields of a breadcrumb in the scope's ring.
pub(crate) type CrumbFields = Fields<0, 0>;

/// The fields of an `error!` event on its way to the transport's thread.
type EventFields = Fields<112, 4>;

/// A field's value; text lives in [`Fields::text`].
#[derive(Debug, Clone, Copy)]
enum FieldValue {
    I64(i64),
    U64(u64),
    F64(f64),
    Bool(bool),
    Text(u32, u32),
}

impl<const TEXT: usize, const VALUES: usize> Fields<TEXT, VALUES> {
    pub(crate) fn clear(&mut self) {
        self.text.clear();
        self.message = None;
        self.values.clear();
    }

    /// The text at `range` (the message's, or one from [`Fields::append`]).
    pub(crate) fn text_at(&self, (start, end): (u32, u32)) -> &str {
        // Only whole `str`s are written to the buffer.
        std::str::from_utf8(&self.text[start as usize..end as usize]).unwrap_or_default()
    }

    pub(crate) fn message(&self) -> Option<&str> {
        self.message.map(|range| self.text_at(range))
    }

    fn json(&self, value: FieldValue) -> serde_json::Value {
        match value {
            FieldValue::I64(v) => v.into(),
            FieldValue::U64(v) => v.into(),
            FieldValue::F64(v) => v.into(),
            FieldValue::Bool(v) => v.into(),
            FieldValue::Text(start, end) => self.text_at((start, end)).into(),
        }
    }

    /// The fields as JSON values, in the order they were recorded.
    pub(crate) fn values(&self) -> impl Iterator<Item = (&'static str, serde_json::Value)> + '_ {
        self.values_at((0, offset(self.values.len())))
    }

    /// Appends `other`'s text and fields to this buffer, the offsets moved
    /// accordingly; returns where its message and its fields are here.
    pub(crate) fn append<const T: usize, const V: usize>(
        &mut self,
        other: &Fields<T, V>,
    ) -> (Option<(u32, u32)>, (u32, u32)) {
        let base = offset(self.text.len());
        let shift = |(start, end): (u32, u32)| (start + base, end + base);
        self.text.extend_from_slice(&other.text);
        let first = offset(self.values.len());
        self.values
            .extend(other.values.iter().map(|&(name, value)| match value {
                FieldValue::Text(start, end) => {
                    let (start, end) = shift((start, end));
                    (name, FieldValue::Text(start, end))
                }
                other => (name, other),
            }));
        (other.message.map(shift), (first, offset(self.values.len())))
    }

    /// How much text and how many fields the buffer holds.
    pub(crate) fn sizes(&self) -> (usize, usize) {
        (self.text.len(), self.values.len())
    }

    /// Makes room for `text` more bytes and `values` more fields.
    pub(crate) fn reserve(&mut self, text: usize, values: usize) {
        self.text.reserve(text);
        self.values.reserve(values);
    }

    /// The fields at `range` (from [`Fields::append`]) as JSON values.
    pub(crate) fn values_at(
        &self,
        (first, end): (u32, u32),
    ) -> impl Iterator<Item = (&'static str, serde_json::Value)> + '_ {
        self.values[first as usize..end as usize]
            .iter()
            .map(|&(name, value)| (name, self.json(value)))
    }

    fn push(&mut self, name: &'static str, value: FieldValue) {
        self.values.push((name, value));
    }

    /// Writes a text value (or the message) with `write`.
    fn push_text(&mut self, name: &'static str, write: impl FnOnce(&mut TextWriter<'_, TEXT>)) {
        let start = offset(self.text.len());
        write(&mut TextWriter(&mut self.text));
        let end = offset(self.text.len());
        if name == "message" {
            self.message = Some((start, end));
        } else {
            self.push(name, FieldValue::Text(start, end));
        }
    }
}

/// Offsets are `u32` to keep fields small; text beyond 4 GiB is not a field.
fn offset(len: usize) -> u32 {
    u32::try_from(len).unwrap_or(u32::MAX)
}

/// `fmt::Write` into a text buffer.
struct TextWriter<'a, const N: usize>(&'a mut SmallVec<[u8; N]>);

impl<const N: usize> fmt::Write for TextWriter<'_, N> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        self.0.extend_from_slice(s.as_bytes());
        Ok(())
    }
}

/// Records an event's fields into [`Fields`]; with `exceptions`, the first
/// error-valued field's `source()` chain too.
struct FieldsVisitor<'a, const TEXT: usize, const VALUES: usize> {
    fields: &'a mut Fields<TEXT, VALUES>,
    exceptions: Option<&'a mut Vec<Exception>>,
}

impl<const TEXT: usize, const VALUES: usize> Visit for FieldsVisitor<'_, TEXT, VALUES> {
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.fields.push(field.name(), FieldValue::F64(value));
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.fields.push(field.name(), FieldValue::I64(value));
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.fields.push(field.name(), FieldValue::U64(value));
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.fields.push(field.name(), FieldValue::Bool(value));
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        self.fields.push_text(field.name(), |text| {
            let _ = text.write_str(value);
        });
    }

    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        // The first error-valued field gives the exception chain (through
        // `source()`); every one's text is also kept as a field, so that it
        // shows next to the others.
        if let Some(exceptions) = self.exceptions.as_deref_mut() {
            if exceptions.is_empty() {
                *exceptions = exception_chain(value, "tracing");
            }
        }
        self.fields.push_text(field.name(), |text| {
            let _ = write!(text, "{value}");
        });
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.fields.push_text(field.name(), |text| {
            let _ = write!(text, "{value:?}");
        });
    }
}

/// What [`finish_event`] derives from a `tracing` event, off the calling thread.
pub(crate) struct TracingParts {
    metadata: &'static Metadata<'static>,
    /// The clock as read when the event was logged; the event's timestamp.
    time: SystemTime,
    fields: EventFields,
    /// The chain of the first error-valued field.
    exceptions: Vec<Exception>,
    /// The spans the event was logged in, outermost first, with their fields.
    spans: Vec<(&'static str, Option<Arc<SpanFieldMap>>)>,
}

impl TracingParts {
    /// The event's level.
    pub(crate) fn level(&self) -> Level {
        convert_level(*self.metadata.level())
    }
}

pub(crate) fn convert_level(level: tracing::Level) -> Level {
    match level {
        tracing::Level::ERROR => Level::Error,
        tracing::Level::WARN => Level::Warning,
        tracing::Level::INFO => Level::Info,
        _ => Level::Debug,
    }
}

/// The part of an `error!` event that must be taken on the calling thread:
/// the message and fields (formatted into one inline buffer), the error chain, the
/// span fields (a reference count each), the time and the id. The rest,
/// the `Event` itself and JSON values included, is [`finish_event`]'s.
fn build_event<S>(event: &TracingEvent<'_>, ctx: &Context<'_, S>) -> (uuid::Uuid, TracingParts)
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
    let parts = TracingParts {
        metadata,
        time,
        fields,
        exceptions,
        spans,
    };
    (crate::protocol::time_ordered_id(time.into()), parts)
}

/// Completes an event built by the layer: logger, callsite, fingerprint,
/// message template and the event's fields as tags or extra.
pub(crate) fn finish_event(out: &mut Event, parts: TracingParts) {
    let TracingParts {
        metadata,
        time,
        fields,
        exceptions,
        spans,
    } = parts;
    out.timestamp = Some(time.into());
    if !exceptions.is_empty() {
        out.exception = exceptions;
    }
    let has_message = fields.message.is_some();
    out.message = fields
        .message()
        .map(str::to_owned)
        .or_else(|| out.exception.first().map(|e| e.value.clone()));
    if !spans.is_empty() {
        // Span fields are tags unless the event has its own: they win over
        // the scope's tags (already applied), and the outermost span wins
        // over inner ones, hence inserting innermost first.
        for fields in spans.iter().rev().filter_map(|(_, fields)| fields.as_ref()) {
            for (name, value) in fields.iter() {
                if let Some(tag) = as_tag(value) {
                    out.tags.insert((*name).to_string(), tag);
                }
            }
        }
        let spans = spans
            .iter()
            .map(|(name, fields)| {
                let fields: serde_json::Map<String, serde_json::Value> = fields
                    .iter()
                    .flat_map(|f| f.iter())
                    .map(|(k, v)| ((*k).to_string(), v.clone()))
                    .collect();
                serde_json::json!({ "name": name, "fields": fields })
            })
            .collect();
        out.extra
            .insert("spans".into(), serde_json::Value::Array(spans));
    }
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
    let template = match (&out.message, has_message) {
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
    if has_message {
        out.message_template = Some(template);
    }
    for (name, value) in fields.values() {
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
