//! Timing and baseline helpers shared by the SDK's and the tower layer's
//! benches (`errorflow-tower/benches/tower.rs` includes this file by path):
//! plain timing loops whose runs are interleaved, and a `sentry` client with
//! a no-op transport as the baseline.

use std::hint::black_box;
use std::sync::Arc;
use std::time::Instant;

/// Nanoseconds per call of one run of `n` calls, after a warm-up.
pub fn ns_per_call(n: u32, mut f: impl FnMut()) -> f64 {
    for _ in 0..n / 10 {
        f();
    }
    let start = Instant::now();
    for _ in 0..n {
        f();
    }
    start.elapsed().as_nanos() as f64 / n as f64
}

/// The best nanoseconds per call of each variant over `ROUNDS` rounds. The
/// variants' runs are interleaved (A, B, C, A, B, C, …), each with its own
/// set-up, so that a change in the machine's load hits all of them alike.
pub fn interleaved(variants: &mut [&mut dyn FnMut() -> f64]) -> Vec<f64> {
    const ROUNDS: usize = 7;
    let mut best = vec![f64::INFINITY; variants.len()];
    for _ in 0..ROUNDS {
        for (variant, best) in variants.iter_mut().zip(&mut best) {
            *best = best.min(variant());
        }
    }
    best
}

/// `(variant, count)` when the environment asks for one variant alone
/// (`<prefix>_ONLY=<variant> <prefix>_N=<count>`), to count its
/// instructions under callgrind; `None` for a normal run.
pub fn single_variant(prefix: &str) -> Option<(String, u32)> {
    let variant = std::env::var(format!("{prefix}_ONLY")).ok()?;
    let n = std::env::var(format!("{prefix}_N"))
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{prefix}_ONLY needs {prefix}_N, a number of calls"));
    Some((variant, n))
}

/// Drops every envelope: sentry's cost of capturing, without sending.
struct NoopSentryTransport;

impl sentry::Transport for NoopSentryTransport {
    fn send_envelope(&self, envelope: sentry::Envelope) {
        drop(black_box(envelope));
    }
}

/// A sentry client whose transport drops everything.
pub fn sentry_init() -> sentry::ClientInitGuard {
    sentry::init(sentry::ClientOptions {
        dsn: Some("https://public@example.invalid/1".parse().unwrap()),
        transport: Some(Arc::new(|_: &sentry::ClientOptions| {
            Arc::new(NoopSentryTransport) as Arc<dyn sentry::Transport>
        })),
        ..Default::default()
    })
}
