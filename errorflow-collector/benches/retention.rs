//! How long one retention chunk holds the write path: expired events in 50
//! incidents (with as many kept), deleted by the background pass's own
//! chunks, on SQLite and on Postgres. Prints the time per chunk; README's
//! retention section cites it (BENCHMARKS.md, "Retention chunk cost").
//!
//! ```sh
//! cargo bench -p errorflow-collector --bench retention            # 100,000 expired events
//! cargo bench -p errorflow-collector --bench retention -- --quick # 5,000, a few seconds
//! ```
//!
//! Postgres comes from `ERRORFLOW_TEST_PG_URL` (default
//! `postgres://postgres@127.0.0.1:5432/postgres`); the bench creates and
//! drops its own database. Without Postgres it fails.

#[path = "../tests/common/mod.rs"]
#[allow(unused_imports)]
mod common;

use std::time::{Duration, Instant};

use errorflow_collector::retention;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    // `cargo test --benches` runs this file without `--bench`: build only.
    if !args.iter().any(|a| a == "--bench") {
        return;
    }
    let expired = if args.iter().any(|a| a == "--quick") {
        5_000
    } else {
        100_000
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        chunk_cost(&common::sqlite_store().await, expired).await;
        chunk_cost(&common::pg_store().await, expired).await;
    });
}

async fn chunk_cost(db: &common::TestDb, expired: usize) {
    let project = db
        .create_project("bench", "hash", "efk_bench")
        .await
        .unwrap()
        .id;
    let old = common::at(8, 0);
    let events: Vec<_> = (0..2 * expired)
        .map(|i| {
            let mut ev = common::event(project, &format!("fp{}", i % 50), old);
            // Every other event is kept.
            ev.received_at = if i % 2 == 0 { old } else { common::at(12, 0) };
            ev
        })
        .collect();
    for batch in events.chunks(1000) {
        db.insert_events(batch).await.unwrap();
    }
    let options = retention::PurgeOptions {
        chunk: retention::CHUNK,
        pause: Duration::ZERO,
    };
    let started = Instant::now();
    let purged = retention::purge(db.as_ref(), common::at(10, 0), options)
        .await
        .unwrap();
    let secs = started.elapsed().as_secs_f64();
    assert_eq!(purged.events, expired as u64);
    let chunks = expired as f64 / f64::from(retention::CHUNK);
    println!(
        "{:?}: {expired} expired of {} events deleted in {secs:.2}s: {:.1} ms per chunk of {}",
        db.backend(),
        2 * expired,
        secs * 1000.0 / chunks,
        retention::CHUNK
    );
}
