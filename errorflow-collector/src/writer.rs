//! Group commit: events accepted by concurrent requests are written to the
//! store together, in one transaction per batch, by a few writer tasks.
//!
//! A request hands its events to [`Writer::submit`] and waits for the
//! outcome; it answers 2xx only after the transaction that holds its events
//! has committed, so an accepted event is durable. Under load, many requests'
//! events share one transaction: the cost of a commit (an fsync) is paid once
//! per batch, not once per event. When idle, a lone request is written at once.
//!
//! Each incident has one owner among the tasks, so that two tasks never
//! store events of one incident at the same time and wait for each other's
//! lock on it (`Writer::queue`).

use std::hash::{Hash, Hasher};
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
    /// Requests waiting to be written before new ones wait for room: split
    /// between the tasks' own queues, and as many again in the queue of
    /// requests spanning several tasks' incidents.
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
    /// Queue mode: the queue did not take the events.
    #[error("the event queue is unavailable; retry later")]
    Unavailable,
    /// The events' project was deleted (by another collector, whose change
    /// this one's key cache had not seen yet); nothing of them was stored.
    #[error("ingest key not recognised")]
    ProjectGone,
    #[error(transparent)]
    /// The transaction holding the events failed; shared by every request in it.
    Store(Arc<StoreError>),
}

struct Job {
    events: Vec<NormalizedEvent>,
    /// Every event's incident belongs to the writer task the job was sent
    /// to, so no other task of this writer stores events of them.
    exclusive: bool,
    reply: oneshot::Sender<Written>,
}

/// A job's answer: its outcomes, and after a successful write its events,
/// which the request then frees in its own task. Freeing a batch's events
/// on the single write path took about a tenth of the SQLite writer's time
/// with Sentry events (many small strings each).
struct Written {
    outcomes: Result<Vec<InsertOutcome>, Arc<StoreError>>,
    events: Vec<NormalizedEvent>,
}

/// Handle to the writer tasks; cheap to clone.
#[derive(Clone)]
pub struct Writer {
    /// One queue per writer task, for the requests whose incidents it owns.
    owned: Arc<[mpsc::Sender<Job>]>,
    /// One queue for the requests spanning several tasks' incidents, taken
    /// by whichever task is free.
    shared: mpsc::Sender<Job>,
    queued_events: Arc<AtomicUsize>,
    enqueue_timeout: Duration,
}

impl Writer {
    /// Starts the writer tasks on the current tokio runtime. They stop when
    /// every `Writer` handle has been dropped and the queues are drained.
    pub fn start(store: Arc<dyn Store>, options: WriterOptions) -> Writer {
        let tasks = options.writers.max(1);
        let capacity = options.queue_capacity.max(1);
        let queued_events = Arc::new(AtomicUsize::new(0));
        let (shared, shared_rx) = mpsc::channel::<Job>(capacity);
        let shared_rx = Arc::new(Mutex::new(shared_rx));
        let mut owned = Vec::with_capacity(tasks);
        for _ in 0..tasks {
            let (tx, rx) = mpsc::channel::<Job>(capacity.div_ceil(tasks));
            owned.push(tx);
            let queues = Queues {
                owned: Some(rx),
                shared: shared_rx.clone(),
            };
            let store = store.clone();
            let queued = queued_events.clone();
            let max = options.max_batch_events.max(1);
            tokio::spawn(async move { run(store, queues, queued, max).await });
        }
        Writer {
            owned: owned.into(),
            shared,
            queued_events,
            enqueue_timeout: options.enqueue_timeout,
        }
    }

    /// The writer task owning an event's incident.
    fn owner(&self, event: &NormalizedEvent) -> usize {
        let mut hasher = std::hash::DefaultHasher::new();
        (event.project_id, event.fingerprint.as_str()).hash(&mut hasher);
        // The remainder is below the task count, which is a usize.
        (hasher.finish() % self.owned.len() as u64) as usize
    }

    /// The queue for a request's events, and whether one writer task owns
    /// all of their incidents. Every incident has one owner, so concurrent
    /// transactions do not wait for each other's lock on it (on Postgres
    /// every batch updates its incidents' rows, and holds them until its
    /// commit). A request spanning several owners' incidents goes to the
    /// shared queue: the store then locks its incidents late, in id order.
    fn queue(&self, events: &[NormalizedEvent]) -> (&mpsc::Sender<Job>, bool) {
        if self.owned.len() == 1 {
            return (&self.owned[0], true);
        }
        let owner = self.owner(&events[0]);
        if events[1..].iter().all(|e| self.owner(e) == owner) {
            (&self.owned[owner], true)
        } else {
            (&self.shared, false)
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
        let (queue, exclusive) = self.queue(&events);
        let permit = match tokio::time::timeout(self.enqueue_timeout, queue.reserve()).await {
            Ok(Ok(permit)) => permit,
            Ok(Err(_)) => return Err(WriteError::ShuttingDown),
            Err(_) => return Err(WriteError::Overloaded),
        };
        let depth = self.queued_events.fetch_add(n, Ordering::Relaxed) + n;
        telemetry::queue_depth(depth);
        permit.send(Job {
            events,
            exclusive,
            reply,
        });
        match wait.await {
            Ok(Written { outcomes, events }) => {
                drop(events);
                outcomes.map_err(WriteError::Store)
            }
            Err(_) => Err(WriteError::ShuttingDown),
        }
    }

    /// Events waiting to be written.
    pub fn queued_events(&self) -> usize {
        self.queued_events.load(Ordering::Relaxed)
    }
}

/// A writer task's queues: its own, until every sender is gone, and the
/// shared one.
struct Queues {
    owned: Option<mpsc::Receiver<Job>>,
    shared: Arc<Mutex<mpsc::Receiver<Job>>>,
}

impl Queues {
    /// The next job from either queue; `None` once both are closed and empty.
    async fn next(&mut self) -> Option<Job> {
        loop {
            let Some(owned) = self.owned.as_mut() else {
                return self.shared.lock().await.recv().await;
            };
            // Unbiased: neither queue can starve the other.
            tokio::select! {
                job = owned.recv() => match job {
                    Some(job) => return Some(job),
                    None => self.owned = None,
                },
                // Waiting for the shared queue holds its lock, so one task
                // waits there at a time; the others wait for the lock.
                job = async { self.shared.lock().await.recv().await } => {
                    if let Some(job) = job {
                        return Some(job);
                    }
                    // The shared queue closed: every sender is gone, so the
                    // own queue only has what is already in it.
                    return owned.recv().await;
                }
            }
        }
    }

    /// A job waiting in either queue, without waiting for one: the shared
    /// queue's first, which every task serves, then the task's own.
    fn ready(&mut self) -> Option<Job> {
        if let Some(job) = self
            .shared
            .try_lock()
            .ok()
            .and_then(|mut rx| rx.try_recv().ok())
        {
            return Some(job);
        }
        self.owned.as_mut()?.try_recv().ok()
    }
}

async fn run(
    store: Arc<dyn Store>,
    mut queues: Queues,
    queued: Arc<AtomicUsize>,
    max_batch_events: usize,
) {
    // Take whatever is waiting, up to the batch size.
    while let Some(first) = queues.next().await {
        let mut total = first.events.len();
        let mut jobs = vec![first];
        while total < max_batch_events {
            let Some(job) = queues.ready() else { break };
            total += job.events.len();
            jobs.push(job);
        }
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
    let exclusive = jobs.iter().all(|j| j.exclusive);
    match insert(store, &all, exclusive).await {
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
            let mut all = all.into_iter();
            for (job, len) in jobs.into_iter().zip(lens) {
                let mine: Vec<InsertOutcome> = rest.by_ref().take(len).collect();
                let events = all.by_ref().take(len).collect();
                let _ = job.reply.send(Written {
                    outcomes: Ok(mine),
                    events,
                });
            }
        }
        Err(e) if jobs.len() > 1 => {
            // One request's events must not fail another's: write them
            // separately so only the job that cannot be stored is refused.
            tracing::warn!(error = %e, jobs = jobs.len(), "batched write failed; retrying requests one by one");
            let mut all = all.into_iter();
            for (job, len) in jobs.into_iter().zip(lens) {
                let events: Vec<NormalizedEvent> = all.by_ref().take(len).collect();
                let result = insert(store, &events, job.exclusive)
                    .await
                    .map_err(Arc::new);
                if let Err(e) = &result {
                    tracing::error!(error = %e, events = events.len(), "write failed");
                }
                let _ = job.reply.send(Written {
                    outcomes: result,
                    events,
                });
            }
        }
        Err(e) => {
            tracing::error!(error = %e, events = all.len(), "write failed");
            let e = Arc::new(e);
            for job in jobs {
                let _ = job.reply.send(Written {
                    outcomes: Err(e.clone()),
                    events: Vec::new(),
                });
            }
        }
    }
}

/// `events` stored through the store's exclusive insert when one task owns
/// all of their incidents, else through the shared one.
async fn insert(
    store: &dyn Store,
    events: &[NormalizedEvent],
    exclusive: bool,
) -> Result<Vec<InsertOutcome>, StoreError> {
    if exclusive {
        store.insert_exclusive_events(events).await
    } else {
        store.insert_events(events).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::{self, Context, Limits};
    use errorflow_sdk::protocol::{Event, Exception, Level};

    /// A normalised event whose incident is `Boom{kind}`.
    fn event(kind: usize) -> NormalizedEvent {
        let ctx = Context {
            project_id: 1,
            received_at: chrono::Utc::now(),
        };
        let mut event = Event::new(Level::Error);
        event.exception = vec![Exception::new(format!("Boom{kind}"), "failed")];
        pipeline::process(event, &ctx, &Limits::default()).unwrap()
    }

    /// A writer handle with `tasks` owned queues and no tasks behind them.
    fn queues(tasks: usize) -> Writer {
        let owned: Vec<mpsc::Sender<Job>> = (0..tasks).map(|_| mpsc::channel(1).0).collect();
        Writer {
            owned: owned.into(),
            shared: mpsc::channel(1).0,
            queued_events: Arc::default(),
            enqueue_timeout: Duration::from_secs(1),
        }
    }

    fn index(writer: &Writer, queue: &mpsc::Sender<Job>) -> Option<usize> {
        writer.owned.iter().position(|q| q.same_channel(queue))
    }

    #[test]
    fn each_incident_has_one_owner_and_requests_spanning_owners_are_shared() {
        let writer = queues(2);
        let mut owners = [0, 0];
        for kind in 0..40 {
            let (queue, exclusive) = writer.queue(&[event(kind)]);
            let owner = index(&writer, queue).expect("one incident goes to its owner");
            assert!(exclusive);
            owners[owner] += 1;
            // The same incident, again and several times in one request.
            let (again, exclusive) = writer.queue(&[event(kind), event(kind)]);
            assert_eq!(index(&writer, again), Some(owner));
            assert!(exclusive);
        }
        assert!(
            owners.iter().all(|&n| n >= 8),
            "40 incidents split between two tasks as {owners:?}"
        );
        // A request whose incidents belong to both tasks.
        let owner_of = |kind| index(&writer, writer.queue(&[event(kind)]).0).unwrap();
        let other = (1..40).find(|&k| owner_of(k) != owner_of(0)).unwrap();
        let (queue, exclusive) = writer.queue(&[event(0), event(other)]);
        assert!(queue.same_channel(&writer.shared));
        assert!(!exclusive);
        // One task owns everything.
        let single = queues(1);
        let (queue, exclusive) = single.queue(&[event(0), event(other)]);
        assert_eq!(index(&single, queue), Some(0));
        assert!(exclusive);
    }
}
