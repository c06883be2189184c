//! Fuzzing of every decoder of untrusted input, as property tests: bounded
//! decompression (gzip, deflate, brotli, zstd, the legacy store body), the
//! Sentry envelope framing and event mapping, the native batch and seed
//! bodies, stack traces sent as text, and the Sentry key parsers. Each is
//! fed arbitrary bytes and structure-aware inputs (valid-looking bodies with
//! mutated headers, lengths, items and bytes; events with a wrong type at
//! every field; deep nesting), and must hold what `fuzz_support` checks: no
//! panic, bounded output, a clear error for what it refuses.
//!
//! Quick by default (a few thousand cases in all). The long mode runs
//! `ERRORFLOW_FUZZ_CASES` cases per property:
//!
//! ```sh
//! ERRORFLOW_FUZZ_CASES=1000000 cargo test --release -p errorflow-collector --test fuzz_decoders
//! ```
//!
//! The coverage-guided targets in `fuzz/` run the same checks under libFuzzer.
//! The same bodies also go through the router on both backends
//! (`sqlite::…`, `postgres::…`): a refused body is a JSON 4xx and stores
//! nothing, an accepted one stores what its answer acknowledges
//! (`ERRORFLOW_FUZZ_HTTP_CASES` cases, 48 by default).

mod common;
mod fuzz_support;

use std::io::Write;

use errorflow_collector::http::body::Inflated;
use errorflow_collector::pipeline::sentry::{parse_envelope, MAX_ENVELOPE_ITEMS};
use errorflow_collector::pipeline::Limits;
use proptest::prelude::*;
use proptest::sample::Index;
use proptest::test_runner::FileFailurePersistence;
use serde_json::{json, Value};

use fuzz_support::*;

/// Cases per property: `quick` unless `ERRORFLOW_FUZZ_CASES` says otherwise.
fn config(quick: u32) -> ProptestConfig {
    let cases = std::env::var("ERRORFLOW_FUZZ_CASES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(quick);
    ProptestConfig {
        cases,
        failure_persistence: Some(Box::new(FileFailurePersistence::Off)),
        ..ProptestConfig::default()
    }
}

// ---------------------------------------------------------------------------
// Generators

/// Names of the fields the decoders read, so that random objects hit them.
const FIELDS: &[&str] = &[
    "event_id",
    "timestamp",
    "level",
    "platform",
    "logger",
    "environment",
    "release",
    "server_name",
    "transaction",
    "tags",
    "sdk",
    "message",
    "logentry",
    "formatted",
    "params",
    "exception",
    "values",
    "type",
    "value",
    "module",
    "mechanism",
    "handled",
    "stacktrace",
    "frames",
    "function",
    "symbol",
    "filename",
    "abs_path",
    "lineno",
    "colno",
    "in_app",
    "context_line",
    "pre_context",
    "post_context",
    "instruction_addr",
    "package",
    "threads",
    "id",
    "name",
    "crashed",
    "current",
    "debug_meta",
    "images",
    "code_file",
    "contexts",
    "extra",
    "user",
    "ip_address",
    "email",
    "username",
    "request",
    "url",
    "method",
    "headers",
    "query_string",
    "route",
    "breadcrumbs",
    "category",
    "data",
    "fingerprint",
    "_meta",
    "template",
    "csp",
    "sentry.interfaces.Exception",
    "sentry.interfaces.Message",
    "sentry.interfaces.Http",
    "sentry.interfaces.Stacktrace",
    "sentry.interfaces.User",
    "service",
    "host",
    "trace_id",
    "error_type",
    "path",
    "env",
    "events",
    "length",
    "dsn",
];

fn arb_text() -> impl Strategy<Value = String> {
    prop_oneof![
        "\\PC{0,24}",
        "[\\x00-\\x1f\"\\\\/<>{}\\[\\]:, a-z0-9é🦀]{0,24}",
        prop::sample::select(vec![
            "",
            "\u{0}",
            "error",
            "fatal",
            "python",
            "javascript",
            "native",
            "cocoa",
            "java",
            "9ec79c33ec9942ab8353589fcb2e04dc",
            "6f1c0b8e-3b1f-4bb1-9a57-0d7e2f7d1c11",
            "2026-11-27T12:00:00Z",
            "shop@1.2.3",
            "/orders/42/checkout",
            "0x1000",
            "http://key@localhost/1",
            "Traceback (most recent call last):",
        ])
        .prop_map(str::to_owned),
    ]
}

fn arb_json_leaf() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        prop::num::f64::NORMAL.prop_map(Value::from),
        prop::sample::select(vec![0.0, -0.0, 1e308, -1e308, 1.5, 4294967296.0])
            .prop_map(Value::from),
        arb_text().prop_map(Value::from),
    ]
}

fn arb_key() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => prop::sample::select(FIELDS).prop_map(str::to_owned),
        1 => arb_text(),
    ]
}

/// Any JSON value, shallow or nested, its object keys mostly field names.
fn arb_json() -> impl Strategy<Value = Value> {
    arb_json_leaf().prop_recursive(6, 64, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map(arb_key(), inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// A rich Sentry event: every part the mapping reads.
fn sentry_template() -> Value {
    let frame = |function: &str, lineno: u32| {
        json!({
            "filename": "shop/billing.py", "abs_path": "/srv/shop/billing.py",
            "function": function, "module": "shop.billing", "lineno": lineno, "colno": 3,
            "in_app": true, "pre_context": ["def charge(order):"],
            "context_line": "    gateway.charge(card)", "post_context": ["", "def refund():"],
            "instruction_addr": "0x1000", "symbol": "charge", "package": "/usr/lib/libshop.so",
            "vars": {"order": "<Order 42>"},
        })
    };
    json!({
        "event_id": "9ec79c33ec9942ab8353589fcb2e04dc",
        "timestamp": 1_795_805_563.25,
        "platform": "python",
        "level": "error",
        "logger": "shop.billing",
        "server_name": "web-1",
        "release": "shop@1.4.2",
        "environment": "prod",
        "transaction": "/orders/{id}/checkout",
        "message": "order 42 failed",
        "logentry": {"message": "order %s failed", "params": [42], "formatted": "order 42 failed"},
        "exception": {"values": [
            {"type": "GatewayError", "value": "card declined", "module": "shop.gateway",
             "mechanism": {"type": "chained", "handled": true},
             "stacktrace": {"frames": [frame("charge", 40), frame("call_gateway", 88)]}},
            {"type": "PaymentError", "value": "order could not be charged", "thread_id": 1,
             "mechanism": {"type": "generic", "handled": false},
             "stacktrace": {"frames": [frame("checkout", 12)]}},
        ]},
        "stacktrace": {"frames": [frame("main", 1)]},
        "threads": {"values": [
            {"id": 1, "name": "main", "crashed": true, "current": true,
             "stacktrace": {"frames": [frame("run", 7)]}},
        ]},
        "debug_meta": {"images": [
            {"type": "elf", "code_file": "/usr/lib/libshop.so", "image_addr": "0x1000",
             "image_size": 4096, "debug_id": "abc"},
        ]},
        "tags": {"region": "eu-west-1", "service": "shop"},
        "breadcrumbs": {"values": [
            {"timestamp": 1_795_805_562.0, "category": "query", "type": "default",
             "message": "SELECT 1", "level": "info", "data": {"rows": 1}},
        ]},
        "request": {"method": "POST", "url": "https://shop.example.com/orders/42?x=1",
                    "query_string": "x=1", "headers": {"User-Agent": "curl"},
                    "env": {"REMOTE_ADDR": "10.0.0.1"}},
        "user": {"id": "u-1", "email": "a@b.c", "ip_address": "10.0.0.1", "username": "a"},
        "contexts": {"runtime": {"name": "CPython", "version": "3.12"}, "os": {"name": "Linux"}},
        "extra": {"order": 42, "nested": {"a": [1, 2, {"b": null}]}},
        "fingerprint": ["{{ default }}", "checkout"],
        "sdk": {"name": "sentry.python", "version": "2.46.0"},
        "template": {"filename": "a.html", "lineno": 3, "context_line": "{{ x }}"},
        "_meta": {"message": {"": {"rem": [["!limit", "s", 0, 10]]}}},
        "sentry.interfaces.Http": {"url": "/legacy"},
    })
}

/// A rich event of the native API.
fn native_template() -> Value {
    json!({
        "event_id": "6f1c0b8e-3b1f-4bb1-9a57-0d7e2f7d1c11",
        "timestamp": "2026-11-27T11:59:00Z",
        "level": "error", "platform": "rust", "service": "svc", "environment": "prod",
        "release": "1.4.2", "host": "web-1", "logger": "app::billing",
        "transaction": "checkout", "trace_id": "4bf92f3577b34da6a3ce929d0e0e4736",
        "message": "order 42 failed", "message_template": "order {id} failed",
        "exception": [{"type": "app::Error", "value": "declined", "module": "app",
                       "mechanism": "panic", "handled": false,
                       "stacktrace": {"frames": [
                           {"function": "app::charge", "module": "app", "filename": "src/a.rs",
                            "abs_path": "/src/a.rs", "lineno": 4, "colno": 2, "in_app": true,
                            "context_line": "x", "pre_context": ["a"], "post_context": ["b"]}]}}],
        "stacktrace": {"frames": [{"function": "main"}]},
        "tags": {"region": "eu"},
        "extra": {"k": [1, {"v": null}]},
        "request": {"method": "POST", "url": "/orders/42", "route": "/orders/{id}",
                    "query_string": "a=1", "headers": {"user-agent": "curl"}, "status": 500,
                    "latency_ms": 12.5, "client_ip": "10.0.0.1"},
        "user": {"id": "u", "email": "e", "username": "n", "ip_address": "1.2.3.4"},
        "breadcrumbs": [{"timestamp": "2026-11-27T11:58:00Z", "category": "log",
                         "level": "info", "message": "m", "data": {"a": 1}}],
        "fingerprint": ["a", "b"], "sdk": "errorflow-rust",
        "threads": [{"id": "1", "name": "main", "crashed": true, "current": true,
                     "stacktrace": {"frames": [{"function": "run"}]}}],
    })
}

fn custom_template() -> Value {
    json!({
        "service": "checkout", "error_type": "TypeError",
        "message": "TypeError: x is undefined\n    at charge (/app/src/billing.js:10:5)\n    at /app/src/server.js:3:1",
        "path": "/orders/42", "env": "prod", "trace_id": "t", "timestamp": "2026-11-27T11:59:00Z",
        "release": "1.0", "level": "warning",
    })
}

/// Every path to a value inside `v` (object members and array elements).
fn paths(v: &Value, prefix: &mut Vec<Seg>, out: &mut Vec<Vec<Seg>>) {
    match v {
        Value::Object(map) => {
            for (k, child) in map {
                prefix.push(Seg::Key(k.clone()));
                out.push(prefix.clone());
                paths(child, prefix, out);
                prefix.pop();
            }
        }
        Value::Array(items) => {
            for (i, child) in items.iter().enumerate() {
                prefix.push(Seg::At(i));
                out.push(prefix.clone());
                paths(child, prefix, out);
                prefix.pop();
            }
        }
        _ => {}
    }
}

#[derive(Debug, Clone)]
enum Seg {
    Key(String),
    At(usize),
}

fn all_paths(v: &Value) -> Vec<Vec<Seg>> {
    let mut out = Vec::new();
    paths(v, &mut Vec::new(), &mut out);
    out
}

fn at_path<'a>(v: &'a mut Value, path: &[Seg]) -> Option<&'a mut Value> {
    path.iter().try_fold(v, |v, seg| match seg {
        Seg::Key(k) => v.get_mut(k.as_str()),
        Seg::At(i) => v.get_mut(*i),
    })
}

/// Removes the value at `path`, from its object or array.
fn remove_path(v: &mut Value, path: &[Seg]) {
    let Some((last, parent)) = path.split_last() else {
        return;
    };
    match (at_path(v, parent), last) {
        (Some(Value::Object(map)), Seg::Key(k)) => {
            map.remove(k.as_str());
        }
        (Some(Value::Array(items)), Seg::At(i)) if *i < items.len() => {
            items.remove(*i);
        }
        _ => {}
    }
}

/// Values of every JSON type, and the awkward ones of each.
fn wrong_values() -> Vec<Value> {
    let mut deep = Value::Null;
    for _ in 0..100 {
        deep = json!([deep]);
    }
    vec![
        Value::Null,
        json!(true),
        json!(0),
        json!(-1),
        json!(1.5),
        json!(1e308),
        json!(u64::MAX),
        json!(i64::MIN),
        json!(""),
        json!("\u{0}"),
        json!("é\u{0}🦀\u{1b}[31m"),
        json!("x".repeat(20_000)),
        json!([]),
        json!([null, 1, "a"]),
        json!({}),
        json!({"": null, "\u{0}": "\u{0}"}),
        deep,
    ]
}

#[derive(Debug, Clone)]
enum Mutation {
    Replace(Index, Value),
    Remove(Index),
    Insert(Index, String, Value),
}

fn arb_mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        3 => (any::<Index>(), arb_json()).prop_map(|(i, v)| Mutation::Replace(i, v)),
        1 => any::<Index>().prop_map(Mutation::Remove),
        1 => (any::<Index>(), arb_key(), arb_json()).prop_map(|(i, k, v)| Mutation::Insert(i, k, v)),
    ]
}

/// `template` with `mutations` applied at paths chosen among its own.
fn mutate(mut v: Value, mutations: &[Mutation]) -> Value {
    for m in mutations {
        let paths = all_paths(&v);
        if paths.is_empty() {
            break;
        }
        match m {
            Mutation::Replace(i, new) => {
                if let Some(slot) = at_path(&mut v, &paths[i.index(paths.len())]) {
                    *slot = new.clone();
                }
            }
            Mutation::Remove(i) => remove_path(&mut v, &paths[i.index(paths.len())]),
            Mutation::Insert(i, key, new) => {
                let path = &paths[i.index(paths.len())];
                if let Some(Value::Object(map)) = at_path(&mut v, &path[..path.len() - 1]) {
                    map.insert(key.clone(), new.clone());
                }
            }
        }
    }
    v
}

/// A mutation of raw bytes: what a broken client or an attacker sends.
#[derive(Debug, Clone)]
enum ByteMutation {
    Flip(Index, u8),
    Truncate(Index),
    Insert(Index, Vec<u8>),
    Remove(Index, usize),
}

fn arb_byte_mutation() -> impl Strategy<Value = ByteMutation> {
    prop_oneof![
        (any::<Index>(), 0u8..8).prop_map(|(i, bit)| ByteMutation::Flip(i, bit)),
        any::<Index>().prop_map(ByteMutation::Truncate),
        (
            any::<Index>(),
            prop_oneof![
                prop::collection::vec(any::<u8>(), 1..16),
                prop::sample::select(vec![
                    b"\n".to_vec(),
                    b"\r\n".to_vec(),
                    b"\0".to_vec(),
                    b"{".to_vec(),
                    b"}".to_vec(),
                    b"\"".to_vec(),
                    b"\xff".to_vec(),
                    b"\xc3".to_vec(),
                    b"99999999999999999999".to_vec(),
                    b"-1".to_vec(),
                ]),
            ]
        )
            .prop_map(|(i, b)| ByteMutation::Insert(i, b)),
        (any::<Index>(), 1usize..16).prop_map(|(i, n)| ByteMutation::Remove(i, n)),
    ]
}

fn apply_bytes(mut data: Vec<u8>, mutations: &[ByteMutation]) -> Vec<u8> {
    for m in mutations {
        let len = data.len();
        match m {
            ByteMutation::Flip(i, bit) if len > 0 => data[i.index(len)] ^= 1 << bit,
            ByteMutation::Truncate(i) => data.truncate(i.index(len + 1)),
            ByteMutation::Insert(i, bytes) => {
                let at = i.index(len + 1);
                data.splice(at..at, bytes.iter().copied());
            }
            ByteMutation::Remove(i, n) if len > 0 => {
                let at = i.index(len);
                data.drain(at..(at + n).min(len));
            }
            _ => {}
        }
    }
    data
}

// --- envelopes

#[derive(Debug, Clone)]
enum Length {
    Exact,
    Absent,
    Off(i64),
    Text(Value),
}

#[derive(Debug, Clone)]
struct ItemSpec {
    ty: Value,
    payload: Vec<u8>,
    length: Length,
}

fn arb_item() -> impl Strategy<Value = ItemSpec> {
    let ty = prop_oneof![
        6 => prop::sample::select(vec![
            "event", "attachment", "session", "transaction", "client_report", "check_in",
        ])
        .prop_map(Value::from),
        1 => arb_json_leaf(),
    ];
    let payload = prop_oneof![
        3 => (prop::collection::vec(arb_mutation(), 0..3))
            .prop_map(|m| mutate(sentry_template(), &m).to_string().into_bytes()),
        1 => arb_json().prop_map(|v| v.to_string().into_bytes()),
        1 => prop::collection::vec(any::<u8>(), 0..64),
    ];
    let length = prop_oneof![
        4 => Just(Length::Exact),
        2 => Just(Length::Absent),
        1 => (-3i64..3).prop_map(Length::Off),
        1 => arb_json_leaf().prop_map(Length::Text),
    ];
    (ty, payload, length).prop_map(|(ty, payload, length)| ItemSpec {
        ty,
        payload,
        length,
    })
}

fn arb_envelope_header() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        4 => Just(br#"{"event_id":"9ec79c33ec9942ab8353589fcb2e04dc","sent_at":"2026-11-27T18:52:10Z"}"#.to_vec()),
        1 => Just(br#"{"dsn":"http://abc@localhost:1/7"}"#.to_vec()),
        1 => Just(b"{}".to_vec()),
        1 => arb_json().prop_map(|v| v.to_string().into_bytes()),
        1 => prop::collection::vec(any::<u8>(), 0..32),
    ]
}

/// An envelope as an SDK would frame it (`\r\n` after header lines when
/// `crlf`): well-formed when every item's length is `Exact`, or `Absent`
/// on a payload without a newline.
fn frame_envelope(header: &[u8], items: &[ItemSpec], crlf: bool) -> Vec<u8> {
    let eol: &[u8] = if crlf { b"\r\n" } else { b"\n" };
    let mut out = header.to_vec();
    out.extend_from_slice(eol);
    for item in items {
        let mut h = serde_json::Map::new();
        h.insert("type".into(), item.ty.clone());
        match &item.length {
            Length::Exact => {
                h.insert("length".into(), item.payload.len().into());
            }
            Length::Absent => {}
            Length::Off(d) => {
                h.insert("length".into(), (item.payload.len() as i64 + d).into());
            }
            Length::Text(v) => {
                h.insert("length".into(), v.clone());
            }
        }
        out.extend_from_slice(Value::Object(h).to_string().as_bytes());
        out.extend_from_slice(eol);
        out.extend_from_slice(&item.payload);
        out.push(b'\n');
    }
    out
}

// --- compression

fn compress(encoding: &str, data: &[u8]) -> Vec<u8> {
    match encoding {
        "gzip" | "x-gzip" => {
            let mut w = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            w.write_all(data).unwrap();
            w.finish().unwrap()
        }
        "deflate" => {
            let mut w = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::fast());
            w.write_all(data).unwrap();
            w.finish().unwrap()
        }
        "raw-deflate" => {
            let mut w = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::fast());
            w.write_all(data).unwrap();
            w.finish().unwrap()
        }
        "br" => {
            let mut out = Vec::new();
            {
                let mut w = brotli::CompressorWriter::new(&mut out, 4096, 1, 22);
                w.write_all(data).unwrap();
            }
            out
        }
        "zstd" => zstd::encode_all(data, 1).unwrap(),
        "legacy" => {
            use base64::Engine as _;
            let zlib = compress("deflate", data);
            base64::engine::general_purpose::STANDARD
                .encode(zlib)
                .into_bytes()
        }
        _ => data.to_vec(),
    }
}

/// The header value a client sends for `encoding`.
fn header_of(encoding: &str) -> &str {
    match encoding {
        "raw-deflate" => "deflate",
        other => other,
    }
}

fn arb_plain() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        2 => prop::collection::vec(any::<u8>(), 0..4096),
        1 => (any::<u8>(), 0usize..200_000).prop_map(|(b, n)| vec![b; n]),
        1 => (prop::collection::vec(arb_item(), 0..4))
            .prop_map(|items| frame_envelope(b"{}", &items, false)),
    ]
}

fn arb_encoding() -> impl Strategy<Value = &'static str> {
    prop::sample::select(vec![
        "identity",
        "gzip",
        "x-gzip",
        "deflate",
        "raw-deflate",
        "br",
        "zstd",
    ])
}

/// A valid gzip body, decoded right after each case on the same thread:
/// the thread's gzip decoder is reused, so a body that broke it must not
/// spoil the next one.
fn check_gzip_after(plain: &[u8]) {
    let body = compress("gzip", plain);
    match check_decompress("gzip", &body, plain.len()) {
        Some(Inflated::Whole(out)) => assert_eq!(&out[..], plain),
        other => panic!("a valid gzip body after a broken one: {other:?}"),
    }
}

// ---------------------------------------------------------------------------
// Properties

proptest! {
    #![proptest_config(config(200))]

    /// Valid compressed bodies inflate to what was compressed, up to the
    /// budget, and no further.
    #[test]
    fn valid_compressed_bodies_round_trip_within_the_budget(
        encoding in arb_encoding(),
        plain in arb_plain(),
        budget in prop_oneof![0usize..64, 0usize..300_000],
    ) {
        let body = compress(encoding, &plain);
        match check_decompress(header_of(encoding), &body, budget) {
            Some(Inflated::Whole(out)) => prop_assert_eq!(&out[..], &plain[..]),
            Some(Inflated::Prefix(out)) => {
                prop_assert!(plain.len() > budget);
                prop_assert_eq!(&out[..], &plain[..budget]);
            }
            None => prop_assert!(false, "a valid {} body was refused", encoding),
        }
        let max = check_decompress_max(header_of(encoding), &body, budget);
        prop_assert_eq!(max.is_some(), plain.len() <= budget);
    }

    /// Compressed bodies with flipped, cut, inserted or removed bytes.
    #[test]
    fn mutated_compressed_bodies_are_bounded_or_refused(
        encoding in arb_encoding(),
        plain in arb_plain(),
        mutations in prop::collection::vec(arb_byte_mutation(), 1..4),
        budget in 0usize..300_000,
    ) {
        let body = apply_bytes(compress(encoding, &plain), &mutations);
        check_decompress(header_of(encoding), &body, budget);
        check_decompress_max(header_of(encoding), &body, budget);
        check_gzip_after(b"after");
    }

    /// Arbitrary bytes under every encoding, and arbitrary encodings.
    #[test]
    fn arbitrary_bodies_under_any_encoding(
        encoding in prop_oneof![
            4 => prop::sample::select(ENCODINGS.to_vec()).prop_map(str::to_owned),
            1 => "[ -~]{0,12}",
            1 => prop::sample::select(vec![" GZIP ", "Br", "gzip, br", "compress", ""]).prop_map(str::to_owned),
        ],
        body in prop::collection::vec(any::<u8>(), 0..2048),
        budget in 0usize..8192,
    ) {
        check_decompress(&encoding, &body, budget);
        check_gzip_after(b"after");
    }

    /// Gzip bodies of several members, some broken: RFC 1952 allows a body
    /// of members one after the other.
    #[test]
    fn multi_member_gzip(
        parts in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..512), 1..5),
        mutations in prop::collection::vec(arb_byte_mutation(), 0..2),
        budget in 0usize..4096,
    ) {
        let mut body = Vec::new();
        for part in &parts {
            body.extend(compress("gzip", part));
        }
        let whole: Vec<u8> = parts.concat();
        let body = apply_bytes(body, &mutations);
        let out = check_decompress("gzip", &body, budget);
        if mutations.is_empty() {
            match out {
                Some(Inflated::Whole(out)) => prop_assert_eq!(&out[..], &whole[..]),
                Some(Inflated::Prefix(out)) => prop_assert_eq!(&out[..], &whole[..budget]),
                None => prop_assert!(false, "valid multi-member gzip refused"),
            }
        }
        check_gzip_after(b"after");
    }

    /// The legacy store body: base64 of zlib, valid or mutated, or anything.
    #[test]
    fn legacy_store_bodies(
        plain in arb_plain(),
        mutations in prop::collection::vec(arb_byte_mutation(), 0..3),
        raw in prop::collection::vec(any::<u8>(), 0..512),
        budget in 0usize..300_000,
    ) {
        let body = apply_bytes(compress("legacy", &plain), &mutations);
        let out = check_legacy_store(&body, budget);
        if mutations.is_empty() {
            prop_assert!(errorflow_collector::http::body::is_legacy_store_body(&body));
            match out {
                Some(Inflated::Whole(out)) => prop_assert_eq!(&out[..], &plain[..]),
                Some(Inflated::Prefix(out)) => prop_assert_eq!(&out[..], &plain[..budget]),
                None => prop_assert!(false, "valid legacy body refused"),
            }
        }
        check_legacy_store(&raw, budget);
    }

    /// Envelopes framed as SDKs frame them parse back to their items.
    #[test]
    fn well_formed_envelopes_parse_to_their_items(
        items in prop::collection::vec(arb_item(), 0..6),
        crlf in any::<bool>(),
    ) {
        let items: Vec<ItemSpec> = items
            .into_iter()
            .map(|mut item| {
                if !item.ty.is_string() {
                    item.ty = json!("attachment");
                }
                match item.length {
                    Length::Absent if item.payload.contains(&b'\n') || item.payload.ends_with(b"\r") => {
                        item.length = Length::Exact;
                    }
                    Length::Absent | Length::Exact => {}
                    _ => item.length = Length::Exact,
                }
                item
            })
            .collect();
        let body = frame_envelope(br#"{"event_id":"9ec79c33ec9942ab8353589fcb2e04dc"}"#, &items, crlf);
        let envelope = parse_envelope(&body, 1 << 20).map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(envelope.items.len(), items.len());
        for (got, want) in envelope.items.iter().zip(&items) {
            prop_assert_eq!(Some(got.ty.as_str()), want.ty.as_str());
            prop_assert_eq!(got.payload, &want.payload[..]);
        }
        check_envelope(&body, 1 << 20);
    }

    /// Envelopes with wrong lengths, odd headers and item types, and
    /// mutated bytes.
    #[test]
    fn mutated_envelopes_are_bounded_or_refused(
        header in arb_envelope_header(),
        items in prop::collection::vec(arb_item(), 0..6),
        crlf in any::<bool>(),
        mutations in prop::collection::vec(arb_byte_mutation(), 0..3),
        max_event_bytes in prop_oneof![Just(1usize << 20), 0usize..2048],
    ) {
        let body = apply_bytes(frame_envelope(&header, &items, crlf), &mutations);
        check_envelope(&body, max_event_bytes);
    }

    #[test]
    fn arbitrary_bytes_as_an_envelope(body in prop::collection::vec(any::<u8>(), 0..1024)) {
        check_envelope(&body, 1 << 20);
    }

    /// Sentry events with random parts replaced, removed or added.
    #[test]
    fn mutated_sentry_events(mutations in prop::collection::vec(arb_mutation(), 1..5)) {
        let payload = mutate(sentry_template(), &mutations).to_string();
        check_sentry_event(payload.as_bytes());
    }

    #[test]
    fn arbitrary_json_as_a_sentry_event(v in arb_json()) {
        check_sentry_event(v.to_string().as_bytes());
    }

    #[test]
    fn arbitrary_bytes_as_a_sentry_event(
        body in prop::collection::vec(any::<u8>(), 0..512),
        mutations in prop::collection::vec(arb_byte_mutation(), 1..4),
    ) {
        check_sentry_event(&body);
        check_sentry_event(&apply_bytes(sentry_template().to_string().into_bytes(), &mutations));
    }

    /// Batches of mutated native events, with arbitrary neighbours.
    #[test]
    fn mutated_batches(
        events in prop::collection::vec(
            prop_oneof![
                4 => prop::collection::vec(arb_mutation(), 0..4).prop_map(|m| mutate(native_template(), &m)),
                1 => arb_json(),
            ],
            0..5,
        ),
        wrapper in prop::collection::vec(arb_mutation(), 0..2),
        max_events_per_batch in prop_oneof![Just(1000usize), 0usize..4],
    ) {
        let body = mutate(json!({"events": events}), &wrapper).to_string();
        let limits = Limits { max_events_per_batch, ..Limits::default() };
        check_batch(body.as_bytes(), &limits);
    }

    #[test]
    fn arbitrary_bytes_as_a_batch(
        body in prop::collection::vec(any::<u8>(), 0..512),
        mutations in prop::collection::vec(arb_byte_mutation(), 1..4),
    ) {
        check_batch(&body, &Limits::default());
        let valid = json!({"events": [native_template()]}).to_string().into_bytes();
        check_batch(&apply_bytes(valid, &mutations), &Limits::default());
    }

    /// The seed's bodies, mutated, and anything else.
    #[test]
    fn mutated_custom_bodies(
        mutations in prop::collection::vec(arb_mutation(), 0..4),
        v in arb_json(),
        bytes in prop::collection::vec(arb_byte_mutation(), 1..4),
    ) {
        check_custom(mutate(custom_template(), &mutations).to_string().as_bytes());
        check_custom(v.to_string().as_bytes());
        check_custom(&apply_bytes(custom_template().to_string().into_bytes(), &bytes));
    }

    /// Stack traces as text: lines of each language's frames, mixed and
    /// broken, and any text.
    #[test]
    fn stack_text(
        first in "\\PC{0,40}",
        lines in prop::collection::vec(
            prop_oneof![
                "    at [a-zA-Z_.<> ]{0,20} \\([a-z/:.0-9()]{0,30}\\)",
                "    at [a-z/:.0-9 ]{0,30}",
                "\tat [a-zA-Z$./<>]{0,20}\\.[a-z$<>]{0,8}\\([A-Za-z.:0-9]{0,20}\\)",
                "  File \"[^\"]{0,20}\", line [0-9]{0,12}(, in [a-z_<> ]{0,10})?",
                "\\PC{0,40}",
                "[\\x00-\\x1f ]{0,8}",
            ],
            0..30,
        ),
        python in any::<bool>(),
        eol in prop::sample::select(vec!["\n", "\r\n", "\r"]),
    ) {
        let mut text = String::new();
        if python {
            text.push_str("Traceback (most recent call last):");
            text.push_str(eol);
        }
        text.push_str(&first);
        for line in &lines {
            text.push_str(eol);
            text.push_str(line);
        }
        check_stack_text(&text);
        // As the seed's message, through decoding and grouping.
        check_custom(json!({"service": "s", "error_type": "E", "message": text}).to_string().as_bytes());
    }

    #[test]
    fn key_parsers(text in prop_oneof![
        "\\PC{0,60}",
        "(Sentry )?(sentry_key=[a-z0-9\" ]{0,8}, ?|sentry_version=7, ?|[a-z=, ]{0,6}){0,4}",
        "(sentry_key=[a-z0-9]{0,8}&?|[a-z=&]{0,6}){0,4}",
        "[a-z]{0,5}://[a-z0-9:@]{0,12}@[a-z0-9./:]{0,20}",
    ]) {
        check_key_parsers(&text);
    }
}

// ---------------------------------------------------------------------------
// Exhaustive wrong types: every field of each template, each kind of value.

fn each_wrong_value(template: &Value, check: impl Fn(&[u8])) {
    let values = wrong_values();
    for path in all_paths(template) {
        for wrong in &values {
            let mut v = template.clone();
            *at_path(&mut v, &path).unwrap() = wrong.clone();
            check(v.to_string().as_bytes());
        }
        let mut v = template.clone();
        remove_path(&mut v, &path);
        check(v.to_string().as_bytes());
    }
}

#[test]
fn sentry_events_with_a_wrong_type_at_every_field() {
    each_wrong_value(&sentry_template(), |payload| {
        check_sentry_event(payload);
    });
}

#[test]
fn native_events_with_a_wrong_type_at_every_field() {
    each_wrong_value(&json!({"events": [native_template()]}), |body| {
        check_batch(body, &Limits::default());
    });
}

#[test]
fn seed_bodies_with_a_wrong_type_at_every_field() {
    each_wrong_value(&custom_template(), |body| {
        check_custom(body);
    });
}

// ---------------------------------------------------------------------------
// Nesting and size: refused with an error, never a stack overflow.

fn nested(depth: usize, open: &str, close: &str, inner: &str) -> String {
    let mut s = open.repeat(depth);
    s.push_str(inner);
    s.push_str(&close.repeat(depth));
    s
}

#[test]
fn deep_nesting_is_refused_everywhere() {
    for depth in [127, 128, 129, 10_000, 200_000] {
        let arrays = nested(depth, "[", "]", "1");
        let objects = nested(depth, r#"{"a":"#, "}", "1");
        for deep in [&arrays, &objects] {
            check_sentry_event(format!(r#"{{"message":"m","extra":{{"x":{deep}}}}}"#).as_bytes());
            check_sentry_event(deep.as_bytes());
            check_batch(
                format!(r#"{{"events":[{{"message":"m","extra":{{"x":{deep}}}}}]}}"#).as_bytes(),
                &Limits::default(),
            );
            check_batch(deep.as_bytes(), &Limits::default());
            check_custom(
                format!(r#"{{"service":"s","error_type":"E","message":"m","x":{deep}}}"#)
                    .as_bytes(),
            );
            check_envelope(format!("{deep}\n").as_bytes(), 1 << 20);
            check_envelope(format!("{{}}\n{deep}\n").as_bytes(), 1 << 20);
            check_envelope(
                format!("{{}}\n{{\"type\":\"event\"}}\n{{\"extra\":{deep}}}\n").as_bytes(),
                1 << 20,
            );
        }
    }
}

#[test]
fn an_envelope_of_too_many_items_is_refused_without_parsing_them_all() {
    let mut body = b"{}\n".to_vec();
    for _ in 0..=MAX_ENVELOPE_ITEMS {
        body.extend_from_slice(b"{\"type\":\"session\",\"length\":0}\n\n");
    }
    assert_eq!(check_envelope(&body, 1 << 20), None);
}

#[test]
fn compression_bombs_inflate_only_the_budget() {
    let plain = vec![0u8; 8 << 20];
    for encoding in ["gzip", "deflate", "raw-deflate", "br", "zstd", "legacy"] {
        let body = compress(encoding, &plain);
        assert!(body.len() < 1 << 20, "{encoding}: {} bytes", body.len());
        let out = if encoding == "legacy" {
            check_legacy_store(&body, 4096)
        } else {
            check_decompress(header_of(encoding), &body, 4096)
        };
        match out {
            Some(Inflated::Prefix(out)) => assert_eq!(out.len(), 4096),
            other => panic!("{encoding}: {other:?}"),
        }
    }
}

// ---------------------------------------------------------------------------
// Through the router: the answer to each body, and what it stored.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Endpoint {
    Batch,
    Custom,
    Envelope,
    Store,
}

#[derive(Debug, Clone)]
struct HttpCase {
    endpoint: Endpoint,
    encoding: &'static str,
    content_type: Option<&'static str>,
    body: Vec<u8>,
}

fn arb_http_case() -> impl Strategy<Value = HttpCase> {
    let endpoint = prop::sample::select(vec![
        Endpoint::Batch,
        Endpoint::Custom,
        Endpoint::Envelope,
        Endpoint::Store,
    ]);
    (
        endpoint,
        prop::collection::vec(arb_mutation(), 0..3),
        prop::collection::vec(arb_item(), 0..4),
        prop::collection::vec(any::<u8>(), 0..256),
        0u8..8,
        arb_encoding(),
        prop::collection::vec(arb_byte_mutation(), 0..2),
        prop::sample::select(vec![
            Some("application/json"),
            Some("application/json"),
            Some("application/x-sentry-envelope"),
            Some("text/plain"),
            None,
        ]),
    )
        .prop_map(
            |(endpoint, mutations, items, raw, shape, encoding, bytes, content_type)| {
                let plain = if shape == 0 {
                    raw
                } else {
                    match endpoint {
                        Endpoint::Batch => {
                            // A fresh id: a fixed one would be a duplicate after the first case.
                            let mut event = native_template();
                            event["event_id"] = json!(uuid::Uuid::new_v4());
                            mutate(json!({"events": [event]}), &mutations)
                                .to_string()
                                .into_bytes()
                        }
                        Endpoint::Custom => mutate(custom_template(), &mutations)
                            .to_string()
                            .into_bytes(),
                        Endpoint::Store => {
                            let mut event = sentry_template();
                            event["event_id"] = json!(uuid::Uuid::new_v4().simple().to_string());
                            mutate(event, &mutations).to_string().into_bytes()
                        }
                        Endpoint::Envelope => frame_envelope(b"{}", &items, false),
                    }
                };
                let body = apply_bytes(compress(encoding, &plain), &bytes);
                HttpCase {
                    endpoint,
                    encoding,
                    content_type,
                    body,
                }
            },
        )
}

async fn stored_events(t: &common::TestApp) -> i64 {
    t.db.texts("SELECT CAST(COUNT(*) AS TEXT) FROM errors")
        .await[0]
        .parse()
        .unwrap()
}

async fn check_http(t: &common::TestApp, case: HttpCase) {
    use axum::body::Body;
    use axum::http::Request;
    let path = match case.endpoint {
        Endpoint::Batch => "/api/v1/events".to_owned(),
        Endpoint::Custom => "/errors/custom".to_owned(),
        Endpoint::Envelope => format!("/api/{}/envelope/", t.project_id),
        Endpoint::Store => format!("/api/{}/store/", t.project_id),
    };
    let mut req = Request::post(path)
        .header("x-errorflow-key", &t.key)
        .header(
            "x-sentry-auth",
            format!("Sentry sentry_key={}, sentry_version=7", t.key),
        )
        .header("content-encoding", header_of(case.encoding));
    if let Some(content_type) = case.content_type {
        req = req.header("content-type", content_type);
    }
    let before = stored_events(t).await;
    let reply = t.send(req.body(Body::from(case.body)).unwrap()).await;
    let stored = stored_events(t).await - before;
    let status = reply.status;
    assert!(
        status.is_success() || status.is_client_error(),
        "{status}: {}",
        reply.body
    );
    if status.is_client_error() {
        assert!(
            reply.body["error"]["code"]
                .as_str()
                .is_some_and(|c| !c.is_empty())
                && reply.body["error"]["message"]
                    .as_str()
                    .is_some_and(|m| !m.is_empty()),
            "a {status} without a JSON error: {}",
            reply.body
        );
        assert_eq!(stored, 0, "a refused body stored events: {}", reply.body);
        return;
    }
    let acknowledged = match case.endpoint {
        Endpoint::Batch => reply.body["accepted"].as_i64().unwrap(),
        Endpoint::Custom => i64::from(status == axum::http::StatusCode::CREATED),
        // An envelope may hold several events, and repeat an id.
        Endpoint::Envelope => stored.clamp(0, MAX_ENVELOPE_ITEMS as i64),
        Endpoint::Store => stored.clamp(0, 1),
    };
    assert_eq!(stored, acknowledged, "{status}: {}", reply.body);
}

common::backend_tests!(
    setup => crate::common::test_app;
    hostile_bodies_get_a_json_4xx_and_store_only_what_is_acknowledged,
);

async fn hostile_bodies_get_a_json_4xx_and_store_only_what_is_acknowledged(t: common::TestApp) {
    let cases = std::env::var("ERRORFLOW_FUZZ_HTTP_CASES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(48);
    let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig {
        cases,
        failure_persistence: Some(Box::new(FileFailurePersistence::Off)),
        ..ProptestConfig::default()
    });
    let handle = tokio::runtime::Handle::current();
    let result = tokio::task::block_in_place(|| {
        runner.run(&arb_http_case(), |case| {
            handle.block_on(check_http(&t, case));
            Ok(())
        })
    });
    if let Err(e) = result {
        panic!("{e}");
    }
}

// ---------------------------------------------------------------------------
// Regressions: each crash the fuzzing found, by name.

/// A Rust frame whose symbol has, where the legacy mangling's
/// `::h0123456789abcdef` suffix would start, a character boundary followed
/// by a character of several bytes: grouping sliced the suffix's hash three
/// bytes in, inside that character, and panicked (found by the long mode of
/// `mutated_batches`).
#[test]
fn a_rust_symbol_with_a_wide_character_where_its_hash_would_be() {
    // 1 + 4 + 14 bytes: the length of `::h0123456789abcdef`.
    let function = "app::charge\\\u{1133c}abcdefghijklmn";
    let mut event = native_template();
    event["exception"][0]["stacktrace"]["frames"][0]["function"] = json!(function);
    let body = json!({ "events": [event] }).to_string();
    assert_eq!(check_batch(body.as_bytes(), &Limits::default()), Some(1));
}
