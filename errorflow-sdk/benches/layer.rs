//! Cost of the tracing layer on the calling thread.
//!
//! Run with `cargo bench -p errorflow-sdk --bench layer`. Besides criterion's
//! report, each comparison prints a ratio measured with a plain timing loop
//! (best of several runs) so that the numbers can be read at a glance.
//!
//! The breadcrumb comparison in instructions, which a noisy machine does
//! not move: build with `--no-run`, then run one variant alone under
//! callgrind, twice with different call counts, and divide the difference
//! of the totals by the difference of the counts:
//!
//! ```sh
//! LAYER_ONLY=with LAYER_N=20000 valgrind --tool=callgrind target/release/deps/layer-<hash> --bench
//! ```

use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion};
use errorflow_sdk::protocol::Event;
use errorflow_sdk::{PendingEvent, Transport};
use tracing_subscriber::filter::LevelFilter;
use tracing_subscriber::prelude::*;

mod support;
use support::{interleaved, ns_per_call, sentry_init, single_variant};

/// Hands events to a draining thread through the HTTP transport's kind of
/// queue (tokio's bounded mpsc, `try_send`, events by value; a boxed event
/// freed by the other thread would cost more than the rest of the hand-off):
/// the thread finishes each event
/// (`PendingEvent::finish`, as the HTTP worker does before serialising) and
/// throws it away. Like the HTTP worker it drains on a tick rather than
/// parking in `recv`, so that senders do not pay for a wake-up per event.
struct DrainingSink(tokio::sync::mpsc::Sender<PendingEvent>);

impl DrainingSink {
    /// The sink and its thread, which ends once every event is drained and
    /// the sink is dropped.
    fn new() -> (DrainingSink, std::thread::JoinHandle<()>) {
        let (tx, mut rx) = tokio::sync::mpsc::channel::<PendingEvent>(65_536);
        let thread = std::thread::spawn(move || loop {
            std::thread::sleep(Duration::from_millis(5));
            loop {
                match rx.try_recv() {
                    Ok(event) => drop(black_box(event.finish())),
                    Err(tokio::sync::mpsc::error::TryRecvError::Empty) => break,
                    Err(tokio::sync::mpsc::error::TryRecvError::Disconnected) => return,
                }
            }
        });
        (DrainingSink(tx), thread)
    }
}

impl Transport for DrainingSink {
    /// Unused: the layer hands over pending events.
    fn send(&self, event: Event) {
        drop(black_box(event));
    }

    fn send_pending(&self, event: PendingEvent) {
        let _ = self.0.try_send(event);
    }
}

/// Finishes and drops events on the calling thread (the default
/// `send_pending`), like the no-op sentry transport: the whole cost of
/// building the event, on the caller.
struct DropSink;

impl Transport for DropSink {
    fn send(&self, event: Event) {
        drop(black_box(event));
    }
}

/// A client with a [`DrainingSink`]. Waiting for its thread (outside any
/// timing) keeps the drain of one run from taking the CPU from the next.
struct Draining {
    guard: errorflow_sdk::ClientGuard,
    thread: std::thread::JoinHandle<()>,
}

impl Draining {
    fn finish(self) {
        drop(self.guard);
        self.thread.join().unwrap();
    }
}

fn errorflow_init() -> Draining {
    let (sink, thread) = DrainingSink::new();
    Draining {
        guard: errorflow_init_with(Arc::new(sink)),
        thread,
    }
}

fn errorflow_init_with(transport: Arc<dyn Transport>) -> errorflow_sdk::ClientGuard {
    errorflow_sdk::init(
        errorflow_sdk::ClientOptions::new()
            .transport(transport)
            .panic_hook(false),
    )
}

fn log_error() {
    tracing::error!(
        order_id = 42u64,
        user = "bob",
        "payment for order {} failed",
        42
    );
}

fn log_info() {
    tracing::info!(step = 3u64, "charging card");
}

fn log_debug() {
    tracing::debug!(step = 3u64, "cache miss");
}

/// The application's own subscriber: fmt to a sink at INFO.
fn app_fmt<S>() -> impl tracing_subscriber::Layer<S>
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
{
    tracing_subscriber::fmt::layer()
        .with_writer(std::io::sink)
        .with_filter(LevelFilter::INFO)
}

fn error_event(c: &mut Criterion) {
    if single_variant("LAYER").is_some() {
        return; // added_cost runs it
    }
    let mut group = c.benchmark_group("error_event");
    let ours = |bench: Option<&mut criterion::BenchmarkGroup<'_, _>>| {
        let client = errorflow_init();
        let subscriber = tracing_subscriber::registry().with(errorflow_sdk::layer());
        let ns = tracing::subscriber::with_default(subscriber, || match bench {
            Some(group) => {
                group.bench_function("errorflow", |b| b.iter(log_error));
                0.0
            }
            None => ns_per_call(50_000, log_error),
        });
        client.finish();
        ns
    };
    // Same as sentry's no-op transport: the event is finished and freed on
    // the calling thread, which measures the whole cost of building it
    // there, without the hand-off to another thread.
    let ours_same_thread = |bench: Option<&mut criterion::BenchmarkGroup<'_, _>>| {
        let _guard = errorflow_init_with(Arc::new(DropSink));
        let subscriber = tracing_subscriber::registry().with(errorflow_sdk::layer());
        tracing::subscriber::with_default(subscriber, || match bench {
            Some(group) => {
                group.bench_function("errorflow-same-thread-sink", |b| b.iter(log_error));
                0.0
            }
            None => ns_per_call(50_000, log_error),
        })
    };
    let theirs = |bench: Option<&mut criterion::BenchmarkGroup<'_, _>>| {
        let _guard = sentry_init();
        let subscriber = tracing_subscriber::registry().with(sentry_tracing::layer());
        tracing::subscriber::with_default(subscriber, || match bench {
            Some(group) => {
                group.bench_function("sentry-tracing", |b| b.iter(log_error));
                0.0
            }
            None => ns_per_call(50_000, log_error),
        })
    };
    ours(Some(&mut group));
    ours_same_thread(Some(&mut group));
    theirs(Some(&mut group));
    group.finish();
    let best = interleaved(&mut [
        &mut || ours(None),
        &mut || ours_same_thread(None),
        &mut || theirs(None),
    ]);
    let (ours, ours_same_thread, theirs) = (best[0], best[1], best[2]);
    println!(
        "RATIO error! errorflow/sentry-tracing = {:.2} ({ours:.0} ns vs {theirs:.0} ns; target <= 0.5)",
        ours / theirs
    );
    println!(
        "RATIO error! errorflow(same-thread no-op sink)/sentry-tracing = {:.2} ({ours_same_thread:.0} ns vs {theirs:.0} ns)",
        ours_same_thread / theirs
    );
}

fn added_cost(c: &mut Criterion) {
    let client = errorflow_init();
    if let Some((variant, n)) = single_variant("LAYER") {
        let run = || (0..n).for_each(|_| log_info());
        match variant.as_str() {
            "with" => tracing::subscriber::with_default(
                tracing_subscriber::registry()
                    .with(app_fmt())
                    .with(errorflow_sdk::layer()),
                run,
            ),
            "without" => tracing::subscriber::with_default(
                tracing_subscriber::registry().with(app_fmt()),
                run,
            ),
            other => panic!("LAYER_ONLY={other}: expected with or without"),
        }
        std::process::exit(0);
    }
    for (name, f) in [
        ("info_breadcrumb", log_info as fn()),
        ("debug_filtered", log_debug as fn()),
    ] {
        let mut group = c.benchmark_group(name);
        tracing::subscriber::with_default(tracing_subscriber::registry().with(app_fmt()), || {
            group.bench_function("without_layer", |b| b.iter(f));
        });
        let with_layer = || {
            tracing_subscriber::registry()
                .with(app_fmt())
                .with(errorflow_sdk::layer())
        };
        tracing::subscriber::with_default(with_layer(), || {
            group.bench_function("with_layer", |b| b.iter(f));
        });
        group.finish();
        let best = interleaved(&mut [
            &mut || {
                tracing::subscriber::with_default(
                    tracing_subscriber::registry().with(app_fmt()),
                    || ns_per_call(200_000, f),
                )
            },
            &mut || tracing::subscriber::with_default(with_layer(), || ns_per_call(200_000, f)),
        ]);
        let (without, with) = (best[0], best[1]);
        println!(
            "RATIO {name} with/without errorflow layer = {:.2} ({with:.1} ns vs {without:.1} ns; target <= 1.1)",
            with / without
        );
        // Keep the breadcrumb ring from being the thing measured next.
        errorflow_sdk::configure_scope(|s| *s = errorflow_sdk::Scope::new());
    }
    client.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().measurement_time(Duration::from_secs(2)).warm_up_time(Duration::from_millis(500)).sample_size(30);
    targets = error_event, added_cost
}
criterion_main!(benches);
