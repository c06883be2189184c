//! The collector's own cost per Sentry event, in process, without HTTP or
//! the machine's noise in the way: decoding (decompress → envelope → mapping
//! → normalise and group → the stored JSON) and the SQLite batch write.
//!
//! ```sh
//! cargo bench -p errorflow-collector --bench ingest_cost            # times
//! # Instructions, repeatable whatever the machine is doing:
//! B=$(ls -t target/release/deps/ingest_cost-* | grep -v '\.d$' | head -1)
//! valgrind --tool=callgrind --toggle-collect='ingest_cost::decode_one' $B --bench decode
//! valgrind --tool=callgrind --toggle-collect='errorflow_collector::store::sqlite::batch::write_batch*' $B --bench write
//! ```
//!
//! The baseline for decoding is the least any collector does with the same
//! body: inflate it and read its JSON once (`serde_json::IgnoredAny`). It
//! prints `RATIO` lines like the other benches; the load benchmark
//! (`benches/load.rs`) measures the whole collector over HTTP.

mod support;

use std::hint::black_box;
use std::io::{Read, Write};
use std::time::Instant;

use axum::body::Bytes;
use axum::http::{header, HeaderMap, HeaderValue};
use errorflow_collector::model::NormalizedEvent;
use errorflow_collector::pipeline::normalize::Content;
use errorflow_collector::pipeline::scrub::Rules;
use errorflow_collector::pipeline::{self, sentry as mapping, Context, Limits};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Events per measurement, and per SQLite batch (what the load benchmark's
/// 64 connections fill on a 2-core machine).
const EVENTS: usize = 4800;
const BATCH: usize = 24;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    // `cargo test --benches` runs this file with `--test`: build only.
    if !args.iter().any(|a| a == "--bench") {
        return;
    }
    let only = args.iter().skip(1).find(|a| !a.starts_with("--")).cloned();
    let bodies = envelopes();
    if only.as_deref().is_none_or(|m| m == "decode") {
        decode(&bodies);
    }
    if only.as_deref().is_none_or(|m| m == "write") {
        write(&bodies);
    }
}

/// 50 raising sites of a Python service, as sentry-sdk sends them: one
/// event of about 4 KB (a chained exception, frames with context lines,
/// breadcrumbs, contexts) per envelope, gzip-compressed.
fn envelopes() -> Vec<Bytes> {
    (0..50usize)
        .map(|site| {
            let mut event = support::python_event(site);
            let fields = event.as_object_mut().expect("an object");
            let head = serde_json::json!({
                "event_id": uuid::Uuid::new_v4().simple().to_string(),
                "timestamp": 1_795_805_563.25,
                "user": {"id": format!("u-{site}"), "ip_address": "10.0.0.1"},
                "request": {"method": "POST", "url": format!("https://shop.example.com/orders/{site}/checkout"),
                            "headers": {"User-Agent": "Mozilla/5.0", "Accept": "application/json"}},
                "extra": {"order": site},
            });
            if let serde_json::Value::Object(head) = head {
                fields.extend(head);
            }
            let event = event.to_string();
            let envelope = format!(
                "{{\"event_id\":\"{}\"}}\n{{\"type\":\"event\",\"length\":{}}}\n{event}\n",
                uuid::Uuid::new_v4().simple(),
                event.len()
            );
            let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
            gz.write_all(envelope.as_bytes()).unwrap();
            Bytes::from(gz.finish().unwrap())
        })
        .collect()
}

fn gzip_headers() -> HeaderMap {
    let mut headers = HeaderMap::new();
    headers.insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
    headers
}

/// What ingest does with one envelope before the write: every step of
/// `http::sentry::decode`, and the stored JSON that `Writer::submit` encodes.
#[inline(never)]
fn decode_one(
    headers: &HeaderMap,
    body: &Bytes,
    ctx: &Context,
    limits: &Limits,
    rules: &Rules,
    encode: bool,
) -> Vec<NormalizedEvent> {
    let data =
        errorflow_collector::http::body::decompress(headers, body, limits.max_decompressed_bytes)
            .expect("valid gzip");
    let envelope = mapping::parse_envelope(&data, limits.max_event_bytes).expect("valid envelope");
    let mut out = Vec::with_capacity(1);
    for item in envelope.items.iter().filter(|i| i.is_event()) {
        let fallback_event_id = uuid::Uuid::now_v7();
        let event = mapping::map_event(item.payload, &mapping::SentryContext { fallback_event_id })
            .expect("valid event");
        let event = pipeline::process_with(event, ctx, limits, Content::Optional, rules)
            .expect("valid event");
        if encode {
            event.event_json();
        }
        out.push(event);
    }
    out
}

/// The baseline: inflate the body and read its JSON, keeping nothing.
#[inline(never)]
fn baseline_one(body: &Bytes) -> usize {
    let mut data = Vec::new();
    flate2::read::MultiGzDecoder::new(&body[..])
        .read_to_end(&mut data)
        .unwrap();
    let mut read = 0;
    for line in data.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
        serde_json::from_slice::<serde::de::IgnoredAny>(line).unwrap();
        read += line.len();
    }
    read
}

/// Passes over [`EVENTS`] events, ours and the baseline's taken in turn so
/// that both see the same machine; the best of each, in ns per event.
fn best_pair(mut ours: impl FnMut(), mut baseline: impl FnMut()) -> (f64, f64) {
    let time = |pass: &mut dyn FnMut()| {
        let started = Instant::now();
        pass();
        started.elapsed().as_nanos() as f64 / EVENTS as f64
    };
    let (mut best_ours, mut best_base) = (f64::INFINITY, f64::INFINITY);
    for _ in 0..8 {
        best_ours = best_ours.min(time(&mut ours));
        best_base = best_base.min(time(&mut baseline));
    }
    (best_ours, best_base)
}

fn decode(bodies: &[Bytes]) {
    let headers = gzip_headers();
    let limits = Limits::default();
    let ctx = Context {
        project_id: 1,
        received_at: chrono::Utc::now(),
    };
    let pass = |rules: &Rules| {
        for i in 0..EVENTS {
            black_box(decode_one(
                &headers,
                &bodies[i % bodies.len()],
                &ctx,
                &limits,
                rules,
                true,
            ));
        }
    };
    let baseline = || {
        for i in 0..EVENTS {
            black_box(baseline_one(&bodies[i % bodies.len()]));
        }
    };
    let (ours, base) = best_pair(|| pass(&Rules::default()), baseline);
    println!("decode: {ours:.0} ns/event; baseline (inflate + read the JSON): {base:.0} ns/event");
    println!("RATIO ingest_cost decode/baseline = {:.2}", ours / base);
    // Scrubbing's share: the same decoding with scrubbing off, in turn with
    // the default rules and with `--scrub-ip` (its widest setting).
    for (name, rules) in [
        ("default", Rules::default()),
        ("--scrub-ip", Rules::new(true, true)),
    ] {
        let (scrubbed, unscrubbed) = best_pair(|| pass(&rules), || pass(&Rules::off()));
        println!(
            "decode scrubbed ({name}): {scrubbed:.0} ns/event; with --scrub off: {unscrubbed:.0} ns/event"
        );
        println!(
            "RATIO ingest_cost decode scrubbed ({name})/unscrubbed = {:.3}",
            scrubbed / unscrubbed
        );
    }
    // The scan alone, on events decoded without it (steadier than the
    // difference above on a busy machine): after the first pass there is
    // nothing left to replace, so this is what an event without secrets costs.
    let mut events: Vec<NormalizedEvent> = bodies
        .iter()
        .flat_map(|b| decode_one(&headers, b, &ctx, &limits, &Rules::off(), false))
        .collect();
    for (name, rules) in [
        ("default", Rules::default()),
        ("--scrub-ip", Rules::new(true, true)),
    ] {
        let mut best = f64::INFINITY;
        for _ in 0..8 {
            let started = Instant::now();
            for _ in 0..EVENTS / events.len() {
                for e in &mut events {
                    pipeline::scrub::scrub(black_box(&mut e.event), &rules);
                }
            }
            best = best.min(started.elapsed().as_nanos() as f64 / EVENTS as f64);
        }
        println!("scrub scan alone ({name}): {best:.0} ns/event");
    }
}

fn write(bodies: &[Bytes]) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}/bench.db?mode=rwc", dir.path().display());
        let store = errorflow_collector::app::open_store(&url).await.unwrap();
        let project = store.create_project("bench", "hash", "prefix").await.unwrap();
        let headers = gzip_headers();
        let limits = Limits::default();
        let ctx = Context { project_id: project.id, received_at: chrono::Utc::now() };
        // Decoded up front: only the writes are timed.
        let batches: Vec<Vec<NormalizedEvent>> = (0..EVENTS / BATCH)
            .map(|b| {
                (0..BATCH)
                    .flat_map(|j| decode_one(&headers, &bodies[(b * BATCH + j) % bodies.len()], &ctx, &limits, &Rules::default(), false))
                    .map(|mut event| {
                        // Every event new, as from the SDK: a random UUIDv4.
                        event.event_id = uuid::Uuid::new_v4();
                        event.event.event_id = event.event_id;
                        event
                    })
                    .collect()
            })
            .collect();
        for event in batches.iter().flatten() {
            event.event_json();
        }
        let started = Instant::now();
        let mut stored = 0;
        for batch in &batches {
            stored += store.insert_exclusive_events(batch).await.unwrap().len();
        }
        let ns = started.elapsed().as_nanos() as f64 / stored as f64;
        println!("write: {ns:.0} ns/event in SQLite batches of {BATCH} ({stored} events, fsync per commit)");
    });
}
