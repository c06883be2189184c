//! Group commit: events accepted by concurrent requests are written to the
//! store together, in one transaction per batch, by a few writer tasks.
//!
//! A request hands its events to [`Writer::submit`] and waits for the
//! outcome; it answers 2xx only after the transaction that holds its events
//! has committed, so an accepted event is durable. Under load, many requests'
//! events share one transaction: the cost of a commit (an fsync) is paid once
//! per batch, not once per event. When idle, a lone request is written at once.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot, Mutex};

use crate::model::{InsertOutcome, NormalizedEvent};
use crate::store::{Store, StoreError};
use crate::telemetry;

/// Tuning of the writer.
#[derive(Debug, Clone)]
pub struct WriterOptions {
    /// Concurrent transactions. SQLite has one writer, so 1; Postgres benefits from a few.
    pub writers: usize,
    /// At most this many events in one transaction.
    pub max_batch_events: usize,
    /// Requests waiting to be written before new ones wait for room.
    pub queue_capacity: usize,
    /// How long a request waits for room in a full queue before it is refused with 503.
    pub enqueue_timeout: Duration,
}

impl Default for WriterOptions {
    fn default() -> Self {
        WriterOptions {
            writers: 1,
            max_batch_events: 2000,
            queue_capacity: 1024,
            enqueue_timeout: Duration::from_secs(5),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    #[error("the collector is overloaded; retry later")]
    Overloaded,
    #[error("the collector is shutting down")]
    ShuttingDown,
    #[error(transparent)]
    /// The transaction holding the events failed; shared by every request in it.
    Store(Arc<StoreError>),
}

struct Job {
    events: Vec<NormalizedEvent>,
    reply: oneshot::Sender<Result<Vec<InsertOutcome>, Arc<StoreError>>>,
}

/// Handle to the writer tasks; cheap to clone.
#[derive(Clone)]
pub struct Writer {
    tx: mpsc::Sender<Job>,
    queued_events: Arc<AtomicUsize>,
    enqueue_timeout: Duration,
}

impl Writer {
    /// Starts the writer tasks on the current tokio runtime. They stop when
    /// every `Writer` handle has been dropped and the queue is drained.
    pub fn start(store: Arc<dyn Store>, options: WriterOptions) -> Writer {
        let (tx, rx) = mpsc::channel::<Job>(options.queue_capacity.max(1));
        let rx = Arc::new(Mutex::new(rx));
        let queued_events = Arc::new(AtomicUsize::new(0));
        for _ in 0..options.writers.max(1) {
            let store = store.clone();
            let rx = rx.clone();
            let queued = queued_events.clone();
            let max = options.max_batch_events.max(1);
            tokio::spawn(async move { run(store, rx, queued, max).await });
        }
        Writer {
            tx,
            queued_events,
            enqueue_timeout: options.enqueue_timeout,
        }
    }

    /// Stores `events` and returns their outcomes once committed.
    pub async fn submit(
        &self,
        events: Vec<NormalizedEvent>,
    ) -> Result<Vec<InsertOutcome>, WriteError> {
        if events.is_empty() {
            return Ok(Vec::new());
        }
        let n = events.len();
        // Encode here, in the caller's task, not on the single write path.
        for event in &events {
            event.event_json();
        }
        let (reply, wait) = oneshot::channel();
        let permit = match tokio::time::timeout(self.enqueue_timeout, self.tx.reserve()).await {
            Ok(Ok(permit)) => permit,
            Ok(Err(_)) => return Err(WriteError::ShuttingDown),
            Err(_) => return Err(WriteError::Overloaded),
        };
        let depth = self.queued_events.fetch_add(n, Ordering::Relaxed) + n;
        telemetry::queue_depth(depth);
        permit.send(Job { events, reply });
        match wait.await {
            Ok(Ok(outcomes)) => Ok(outcomes),
            Ok(Err(e)) => Err(WriteError::Store(e)),
            Err(_) => Err(WriteError::ShuttingDown),
        }
    }

    /// Events waiting to be written.
    pub fn queued_events(&self) -> usize {
        self.queued_events.load(Ordering::Relaxed)
    }
}

async fn run(
    store: Arc<dyn Store>,
    rx: Arc<Mutex<mpsc::Receiver<Job>>>,
    queued: Arc<AtomicUsize>,
    max_batch_events: usize,
) {
    loop {
        // Take whatever is waiting, up to the batch size, while holding the
        // receiver; release it before writing so another writer can collect
        // the next batch meanwhile.
        let jobs = {
            let mut rx = rx.lock().await;
            let Some(first) = rx.recv().await else { return };
            let mut total = first.events.len();
            let mut jobs = vec![first];
            while total < max_batch_events {
                match rx.try_recv() {
                    Ok(job) => {
                        total += job.events.len();
                        jobs.push(job);
                    }
                    Err(_) => break,
                }
            }
            jobs
        };
        let total: usize = jobs.iter().map(|j| j.events.len()).sum();
        write_jobs(store.as_ref(), jobs).await;
        let depth = queued
            .fetch_sub(total, Ordering::Relaxed)
            .saturating_sub(total);
        telemetry::queue_depth(depth);
    }
}

async fn write_jobs(store: &dyn Store, mut jobs: Vec<Job>) {
    let started = Instant::now();
    // Move the events out of the jobs (no copy); on failure they are split
    // back by length.
    let lens: Vec<usize> = jobs.iter().map(|j| j.events.len()).collect();
    let all: Vec<NormalizedEvent> = jobs
        .iter_mut()
        .flat_map(|j| std::mem::take(&mut j.events))
        .collect();
    match store.insert_events(&all).await {
        Ok(outcomes) => {
            let elapsed = started.elapsed();
            telemetry::batch_written(all.len(), elapsed);
            tracing::debug!(
                events = all.len(),
                requests = jobs.len(),
                elapsed_ms = elapsed.as_secs_f64() * 1000.0,
                "batch written"
            );
            let mut rest = outcomes.into_iter();
            for (job, len) in jobs.into_iter().zip(lens) {
                let mine: Vec<InsertOutcome> = rest.by_ref().take(len).collect();
                let _ = job.reply.send(Ok(mine));
            }
        }
        Err(e) if jobs.len() > 1 => {
            // One request's events must not fail another's: write them
            // separately so only the job that cannot be stored is refused.
            tracing::warn!(error = %e, jobs = jobs.len(), "batched write failed; retrying requests one by one");
            let mut all = all.into_iter();
            for (job, len) in jobs.into_iter().zip(lens) {
                let events: Vec<NormalizedEvent> = all.by_ref().take(len).collect();
                let result = store.insert_events(&events).await.map_err(Arc::new);
                if let Err(e) = &result {
                    tracing::error!(error = %e, events = events.len(), "write failed");
                }
                let _ = job.reply.send(result);
            }
        }
        Err(e) => {
            tracing::error!(error = %e, events = all.len(), "write failed");
            let e = Arc::new(e);
            for job in jobs {
                let _ = job.reply.send(Err(e.clone()));
            }
        }
    }
}
