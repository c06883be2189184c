//! A log call as the calling thread takes it, and the event it becomes.
//!
//! The `tracing` layer records an event's message and fields into
//! [`Fields`] (one text buffer, the values as numbers or ranges into it):
//! a breadcrumb's go to the scope's ring ([`CrumbFields`]), an `error!`'s
//! into a [`LogRecord`] that the client queues and [`LogRecord::finish`]
//! turns into an [`Event`] on the transport's thread. This module is the
//! record format shared by the layer, the scope and the pending event; it
//! knows the `tracing` data types (callsite metadata, the `Visit` of field
//! values), not the layer.

use std::collections::BTreeMap;
use std::fmt::{self, Write as _};
use std::sync::Arc;
use std::time::SystemTime;

use smallvec::SmallVec;
use tracing::field::{Field, Visit};
use tracing::Metadata;

use crate::exception::exception_chain;
use crate::protocol::{Event, Exception, Level};
use crate::template::parameterize;

/// Tags longer than this go to `extra` instead: tags are for searching, not prose.
const MAX_TAG_LEN: usize = 200;

/// The fields recorded on a span, by name.
pub(crate) type SpanFieldMap = BTreeMap<&'static str, serde_json::Value>;

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
pub(crate) type EventFields = Fields<112, 4>;

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
pub(crate) struct FieldsVisitor<'a, const TEXT: usize, const VALUES: usize> {
    pub(crate) fields: &'a mut Fields<TEXT, VALUES>,
    pub(crate) exceptions: Option<&'a mut Vec<Exception>>,
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

/// An `error!` event as the calling thread took it: the callsite's static
/// metadata, the clock, the message and fields in one inline buffer, the
/// error chain and the enclosing spans' fields (a reference count each).
/// [`LogRecord::finish`] makes the rest of the event from it, off that thread.
pub(crate) struct LogRecord {
    pub(crate) metadata: &'static Metadata<'static>,
    /// The clock as read when the event was logged; the event's timestamp.
    pub(crate) time: SystemTime,
    pub(crate) fields: EventFields,
    /// The chain of the first error-valued field.
    pub(crate) exceptions: Vec<Exception>,
    /// The spans the event was logged in, outermost first, with their fields.
    pub(crate) spans: Vec<(&'static str, Option<Arc<SpanFieldMap>>)>,
}

impl LogRecord {
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

impl LogRecord {
    /// Completes `out` from the record: timestamp, exceptions, message,
    /// logger, callsite, fingerprint, message template, and the span and
    /// event fields as tags or extra.
    pub(crate) fn finish(self, out: &mut Event) {
        let LogRecord {
            metadata,
            time,
            fields,
            exceptions,
            spans,
        } = self;
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
