//! A typed, lenient reading of a Sentry event payload: the parts the mapping
//! uses become Rust values straight from the JSON, everything else is skipped
//! without being built.
//!
//! Why by hand: decoding into a `serde_json::Value` first built a tree of
//! maps for the whole event, Python's local variables and module lists
//! included, then copied every string the mapping kept out of it; under load
//! that was about a fifth of the collector's CPU for a Sentry event. The
//! derived `Deserialize` of a plain struct is strict (a number where a string
//! was expected fails the whole event), while Sentry SDKs and older clients
//! send loosely typed data that the mapping has always accepted. The wrappers
//! here keep exactly the lenient rules the `Value` mapping had:
//!
//! - [`Text`]: a string, or a number or boolean written as one; anything else
//!   (null, an object, an array) is absent.
//! - [`Flag`]: a boolean; anything else is absent.
//! - [`Num`]: a non-negative integer that fits `u32`, or a string holding one.
//! - [`Lines`]: the [`Text`] items of an array; not an array: none.
//! - [`Obj`]: an object read as `T`; any other JSON value is absent.
//! - [`Array`]: the [`Obj`]s of an array; items that are not objects are skipped.
//! - [`List`]: the same, from an array or an object's `"values"` array
//!   (`{"values": [...]}`).
//!
//! Unknown fields are ignored. A field sent twice fails the event with a
//! clear message instead of silently keeping one of the values.

use std::fmt;
use std::marker::PhantomData;

use serde::de::{self, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;
use serde_json::Value;

/// The top level of a Sentry event. Small or open-ended parts stay
/// `serde_json::Value`; the bulk of an event (exceptions, frames with their
/// context lines, breadcrumbs) is typed.
///
/// Older clients (Raven) name the interfaces by their legacy names
/// (`sentry.interfaces.Exception`, …): each gets a field of its own, and the
/// mapping takes the canonical one when an event sends both, as Sentry does.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(super) struct RawEvent {
    pub event_id: Option<Value>,
    pub timestamp: Option<Value>,
    pub platform: Text,
    pub level: Text,
    pub logger: Text,
    pub environment: Text,
    pub release: Text,
    pub server_name: Text,
    pub transaction: Text,
    pub tags: Option<Value>,
    pub sdk: Option<Value>,
    pub message: Option<Value>,
    pub logentry: Option<Value>,
    #[serde(rename = "sentry.interfaces.Message")]
    pub legacy_message: Option<Value>,
    pub exception: Exceptions,
    #[serde(rename = "sentry.interfaces.Exception")]
    pub legacy_exception: Exceptions,
    pub stacktrace: Obj<RawStacktrace>,
    #[serde(rename = "sentry.interfaces.Stacktrace")]
    pub legacy_stacktrace: Obj<RawStacktrace>,
    /// Raven's location of a template error: one frame's fields.
    pub template: Obj<RawFrame>,
    #[serde(rename = "sentry.interfaces.Template")]
    pub legacy_template: Obj<RawFrame>,
    pub threads: List<RawThread>,
    #[serde(rename = "sentry.interfaces.Threads")]
    pub legacy_threads: List<RawThread>,
    pub debug_meta: Obj<RawDebugMeta>,
    #[serde(rename = "sentry.interfaces.DebugMeta")]
    pub legacy_debug_meta: Obj<RawDebugMeta>,
    pub contexts: Option<Value>,
    #[serde(rename = "sentry.interfaces.Contexts")]
    pub legacy_contexts: Option<Value>,
    pub extra: Option<Value>,
    pub user: Option<Value>,
    #[serde(rename = "sentry.interfaces.User")]
    pub legacy_user: Option<Value>,
    pub request: Option<Value>,
    #[serde(rename = "sentry.interfaces.Http")]
    pub legacy_request: Option<Value>,
    pub breadcrumbs: List<RawBreadcrumb>,
    #[serde(rename = "sentry.interfaces.Breadcrumbs")]
    pub legacy_breadcrumbs: List<RawBreadcrumb>,
    pub fingerprint: Option<Value>,
    // Browsers' security reports, which Sentry stores as events.
    pub csp: Option<Value>,
    #[serde(rename = "sentry.interfaces.Csp")]
    pub legacy_csp: Option<Value>,
    pub hpkp: Option<Value>,
    #[serde(rename = "sentry.interfaces.Hpkp")]
    pub legacy_hpkp: Option<Value>,
    pub expectct: Option<Value>,
    #[serde(rename = "sentry.interfaces.ExpectCT")]
    pub legacy_expectct: Option<Value>,
    pub expectstaple: Option<Value>,
    #[serde(rename = "sentry.interfaces.ExpectStaple")]
    pub legacy_expectstaple: Option<Value>,
    pub nel: Option<Value>,
    #[serde(rename = "sentry.interfaces.Nel")]
    pub legacy_nel: Option<Value>,
    /// What the SDK or a relay did to the event's values (scrubbing, trimming).
    #[serde(rename = "_meta")]
    pub meta: Option<Value>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(super) struct RawException {
    #[serde(rename = "type")]
    pub ty: Text,
    pub value: Text,
    pub module: Text,
    pub mechanism: Obj<RawMechanism>,
    pub stacktrace: Obj<RawStacktrace>,
    #[serde(rename = "sentry.interfaces.Stacktrace")]
    pub legacy_stacktrace: Obj<RawStacktrace>,
    pub thread_id: Text,
}

/// An exception object that may instead hold the list: `{"values": [...]}`
/// or a single exception's own fields (old SDKs send `exception` both ways).
/// The fields are [`RawException`]'s, spelled out: `#[serde(flatten)]`
/// would first buffer the whole `values` array of every event.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct RawExceptionOrValues {
    values: Option<Seq<RawException, false>>,
    #[serde(rename = "type")]
    ty: Text,
    value: Text,
    module: Text,
    mechanism: Obj<RawMechanism>,
    stacktrace: Obj<RawStacktrace>,
    #[serde(rename = "sentry.interfaces.Stacktrace")]
    legacy_stacktrace: Obj<RawStacktrace>,
    thread_id: Text,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(super) struct RawMechanism {
    #[serde(rename = "type")]
    pub ty: Text,
    pub handled: Flag,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(super) struct RawThread {
    pub id: Text,
    pub name: Text,
    pub crashed: Flag,
    pub current: Flag,
    /// The Java SDK's mark of the thread that captured the event.
    pub errored: Flag,
    pub stacktrace: Obj<RawStacktrace>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(super) struct RawStacktrace {
    /// An array of frames (items that are not objects skipped); the
    /// `{"values": …}` form is not used for frames.
    pub frames: Array<RawFrame>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(super) struct RawFrame {
    pub function: Text,
    /// The symbol's name, for native frames that have no `function`.
    pub symbol: Text,
    pub module: Text,
    pub filename: Text,
    pub abs_path: Text,
    pub lineno: Num,
    pub colno: Num,
    pub in_app: Flag,
    pub context_line: Text,
    pub pre_context: Lines,
    pub post_context: Lines,
    pub instruction_addr: Text,
    pub symbol_addr: Text,
    pub image_addr: Text,
    pub package: Text,
}

/// The loaded images of a native event, which name the binary of a frame
/// that has only an address.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(super) struct RawDebugMeta {
    pub images: Array<RawImage>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(super) struct RawImage {
    pub code_file: Text,
    pub image_addr: Text,
    pub image_size: Option<Value>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(super) struct RawBreadcrumb {
    pub timestamp: Option<Value>,
    pub category: Text,
    #[serde(rename = "type")]
    pub ty: Text,
    pub level: Text,
    pub message: Text,
    pub data: Option<Value>,
}

/// The visits of a visitor for the JSON scalars it does not want: each
/// gives `$absent`.
macro_rules! scalars_are_absent {
    ($out:ty, $absent:expr) => {
        fn visit_str<E: de::Error>(self, _: &str) -> Result<$out, E> {
            Ok($absent)
        }
        fn visit_bool<E: de::Error>(self, _: bool) -> Result<$out, E> {
            Ok($absent)
        }
        fn visit_i64<E: de::Error>(self, _: i64) -> Result<$out, E> {
            Ok($absent)
        }
        fn visit_u64<E: de::Error>(self, _: u64) -> Result<$out, E> {
            Ok($absent)
        }
        fn visit_f64<E: de::Error>(self, _: f64) -> Result<$out, E> {
            Ok($absent)
        }
        fn visit_unit<E: de::Error>(self) -> Result<$out, E> {
            Ok($absent)
        }
    };
}

/// A string, or a number or boolean written as one (`42` → `"42"`, as
/// `serde_json` prints it); null, objects and arrays are absent.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(super) struct Text(pub Option<String>);

impl<'de> Deserialize<'de> for Text {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Text;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Text, E> {
                Ok(Text(Some(v.to_owned())))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<Text, E> {
                Ok(Text(Some(v)))
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<Text, E> {
                Ok(Text(Some(v.to_string())))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Text, E> {
                Ok(Text(Some(v.to_string())))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Text, E> {
                Ok(Text(Some(v.to_string())))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Text, E> {
                Ok(Text(serde_json::Number::from_f64(v).map(|n| n.to_string())))
            }
            fn visit_unit<E: de::Error>(self) -> Result<Text, E> {
                Ok(Text(None))
            }
            fn visit_none<E: de::Error>(self) -> Result<Text, E> {
                Ok(Text(None))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Text, A::Error> {
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                Ok(Text(None))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Text, A::Error> {
                while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                Ok(Text(None))
            }
        }
        d.deserialize_any(V)
    }
}

/// A boolean; any other JSON value is absent.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(super) struct Flag(pub Option<bool>);

impl<'de> Deserialize<'de> for Flag {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match Value::deserialize(d)? {
            Value::Bool(b) => Ok(Flag(Some(b))),
            _ => Ok(Flag(None)),
        }
    }
}

/// A line or column number: a non-negative integer that fits `u32`, or a
/// string holding one; anything else is absent.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(super) struct Num(pub Option<u32>);

impl<'de> Deserialize<'de> for Num {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        // Numbers and short strings: a `Value` costs no more than a visitor here.
        Ok(Num(match Value::deserialize(d)? {
            Value::Number(n) => n.as_u64().and_then(|n| u32::try_from(n).ok()),
            Value::String(s) => s.trim().parse().ok(),
            _ => None,
        }))
    }
}

/// The lines of context Sentry's SDKs send before and after a frame's line.
const CONTEXT_LINES: usize = 5;

/// The [`Text`] items of an array (other items dropped); not an array: none.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(super) struct Lines(pub Vec<String>);

impl<'de> Deserialize<'de> for Lines {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Lines;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Lines, A::Error> {
                // JSON gives no length; SDKs send 5 lines of context on each side.
                let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(CONTEXT_LINES).min(64));
                while let Some(Text(line)) = seq.next_element::<Text>()? {
                    out.extend(line);
                }
                Ok(Lines(out))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Lines, A::Error> {
                while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                Ok(Lines::default())
            }
            scalars_are_absent!(Lines, Lines::default());
        }
        d.deserialize_any(V)
    }
}

/// An object read as `T`; any other JSON value is absent.
#[derive(Debug)]
pub(super) struct Obj<T>(pub Option<T>);

impl<T> Default for Obj<T> {
    fn default() -> Self {
        Obj(None)
    }
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Obj<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(ObjVisitor(PhantomData))
    }
}

struct ObjVisitor<T>(PhantomData<T>);

impl<'de, T: Deserialize<'de>> Visitor<'de> for ObjVisitor<T> {
    type Value = Obj<T>;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Obj<T>, A::Error> {
        T::deserialize(de::value::MapAccessDeserializer::new(map)).map(|t| Obj(Some(t)))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Obj<T>, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(Obj(None))
    }
    scalars_are_absent!(Obj<T>, Obj(None));
}

/// The objects of an array, read as `T`; items that are not objects are
/// skipped, and a value that is not an array gives none. With `WRAPPED`, the
/// array may also come as an object's `"values"` (Sentry writes `exception`,
/// `threads` and `breadcrumbs` both ways: `[...]` or `{"values": [...]}`).
#[derive(Debug)]
pub(super) struct Seq<T, const WRAPPED: bool>(pub Vec<T>);

/// A plain array of objects (stack frames).
pub(super) type Array<T> = Seq<T, false>;
/// An array of objects, bare or as `{"values": [...]}`.
pub(super) type List<T> = Seq<T, true>;

impl<T, const WRAPPED: bool> Default for Seq<T, WRAPPED> {
    fn default() -> Self {
        Seq(Vec::new())
    }
}

impl<'de, T: Deserialize<'de>, const WRAPPED: bool> Deserialize<'de> for Seq<T, WRAPPED> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<T, const WRAPPED: bool>(PhantomData<T>);
        impl<'de, T: Deserialize<'de>, const WRAPPED: bool> Visitor<'de> for V<T, WRAPPED> {
            type Value = Seq<T, WRAPPED>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(256));
                while let Some(Obj(item)) = seq.next_element::<Obj<T>>()? {
                    out.extend(item);
                }
                Ok(Seq(out))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut values = None;
                while let Some(key) = map.next_key::<std::borrow::Cow<'de, str>>()? {
                    if WRAPPED && key == "values" {
                        if values.is_some() {
                            return Err(de::Error::duplicate_field("values"));
                        }
                        values = Some(map.next_value::<Seq<T, false>>()?.0);
                    } else {
                        map.next_value::<IgnoredAny>()?;
                    }
                }
                Ok(Seq(values.unwrap_or_default()))
            }
            scalars_are_absent!(Seq<T, WRAPPED>, Seq::default());
        }
        d.deserialize_any(V(PhantomData))
    }
}

/// Sentry's `exception`: an array of exceptions, `{"values": [...]}`, or a
/// single exception object (Raven clients). Anything else is none.
#[derive(Debug, Default)]
pub(super) struct Exceptions(pub Vec<RawException>);

impl<'de> Deserialize<'de> for Exceptions {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Exceptions;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Exceptions, A::Error> {
                let Seq(items) = Seq::<RawException, false>::deserialize(
                    de::value::SeqAccessDeserializer::new(seq),
                )?;
                Ok(Exceptions(items))
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Exceptions, A::Error> {
                let either =
                    RawExceptionOrValues::deserialize(de::value::MapAccessDeserializer::new(map))?;
                Ok(Exceptions(match either.values {
                    Some(Seq(values)) => values,
                    None => vec![RawException {
                        ty: either.ty,
                        value: either.value,
                        module: either.module,
                        mechanism: either.mechanism,
                        stacktrace: either.stacktrace,
                        legacy_stacktrace: either.legacy_stacktrace,
                        thread_id: either.thread_id,
                    }],
                }))
            }
            scalars_are_absent!(Exceptions, Exceptions::default());
        }
        d.deserialize_any(V)
    }
}

/// Reads a whole event; `None` when the payload is valid JSON but not an
/// object. The error says why the payload is not JSON.
pub(super) fn read_event(payload: &[u8]) -> Result<Option<RawEvent>, String> {
    // UTF-8 is checked once for the whole payload, then serde_json reads
    // the text as it is. Reading bytes, it checked each string on its own,
    // which cost about 5 % of the instructions of decoding a Sentry event.
    let text = std::str::from_utf8(payload)
        .map_err(|e| format!("not UTF-8 (invalid byte at offset {})", e.valid_up_to()))?;
    let first = text.bytes().find(|b| !b.is_ascii_whitespace());
    if first == Some(b'{') {
        return serde_json::from_str(text)
            .map(Some)
            .map_err(|e| e.to_string());
    }
    // Not an object: say whether it is JSON at all.
    serde_json::from_str::<IgnoredAny>(text)
        .map(|_| None)
        .map_err(|e| e.to_string())
}
