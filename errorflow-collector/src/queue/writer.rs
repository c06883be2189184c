//! The writer role (`errorflow-collector writer --queue …`): consumes the
//! stream's partitions and writes their events to Postgres through the same
//! group-committed [`Writer`] as the single process, acknowledging messages
//! only after the transaction holding them committed.
//!
//! **Ownership.** Each partition has one writer at a time, so one incident
//! is only ever written by one process and writers never wait on each
//! other's row locks. A writer owns a partition while it holds a Postgres
//! advisory lock on it, on a connection of its own: when the process dies,
//! Postgres ends its session and the locks go with it, and the others take
//! the partitions within [`REBALANCE_EVERY`]. Every writer also holds a
//! shared "member" lock, so each can count the writers alive and take its
//! fair share (partitions ÷ writers, rounded up), giving back what is over
//! it after finishing the batch in hand. Each partition has one durable
//! JetStream pull consumer, which keeps its position across owners.
//!
//! **Redelivery.** A message whose batch failed to commit is not
//! acknowledged and comes again (the batch is retried first, with the
//! messages kept in progress meanwhile). An event delivered twice, or
//! published twice past the stream's duplicate window, is stored once:
//! the store keeps one event per project and event id, and a second copy
//! changes no counter.
//!
//! **What runs once.** Triage triggers and alerts follow the write that
//! stored an event, so each runs in the writer that owns its partition.
//! The periodic jobs (quiet check, retention, the triage batch and changed
//! check, the Kestra outbox sender) run in the one writer holding the
//! leader lock.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::{self, consumer, AckKind};
use futures_util::StreamExt;
use sqlx::{Connection, PgConnection};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::QueueOptions;
use crate::model::InsertOutcome;
use crate::store::Store;
use crate::telemetry;
use crate::writer::Writer;

/// How often a writer counts the writers alive and takes or gives back
/// partitions; also how soon a dead writer's partitions are taken over.
pub const REBALANCE_EVERY: Duration = Duration::from_secs(2);

/// At most this many messages are taken from a partition at once.
const FETCH_MAX: usize = 1000;

/// How long a delivered, unacknowledged message stays with its consumer.
const ACK_WAIT: Duration = Duration::from_secs(30);

/// The advisory lock keys below any partition number's range (partitions
/// are at most [`MAX_PARTITIONS`]).
const MEMBER_KEY: i32 = 1_000_000;
const LEADER_KEY: i32 = 1_000_001;
pub const MAX_PARTITIONS: u32 = 4096;

/// What a stored batch is offered to: the triage worker and the alerts.
#[derive(Clone, Default)]
pub struct Hooks {
    pub triggers: Option<crate::triage::Triggers>,
    pub alerts: Option<crate::alerts::Alerts>,
}

impl Hooks {
    fn offer(&self, projects: &[i64], outcomes: &[InsertOutcome]) {
        if let Some(t) = &self.triggers {
            t.offer(outcomes);
        }
        if let Some(a) = &self.alerts {
            // Alerts are per project: offer each project's outcomes apart.
            let mut by_project: BTreeMap<i64, Vec<InsertOutcome>> = BTreeMap::new();
            for (p, o) in projects.iter().zip(outcomes) {
                by_project.entry(*p).or_default().push(*o);
            }
            for (p, o) in by_project {
                a.offer(p, &o);
            }
        }
    }
}

/// The advisory lock class of a stream: its name hashed to a positive i32,
/// so that two deployments on one database with different streams do not
/// share locks.
fn lock_class(stream: &str) -> i32 {
    // The remainder is below 2^31.
    (super::partition(0, stream, i32::MAX as u32)) as i32
}

/// Runs the writer role until `shutdown` resolves: takes partitions,
/// consumes them, and each time it takes the leader lock calls `on_leader`
/// to start the periodic jobs, whose tasks it aborts when it loses the lock
/// (its database session ended), so that only one leader runs them.
#[allow(clippy::too_many_arguments)]
pub async fn run(
    js: jetstream::Context,
    database_url: &str,
    options: QueueOptions,
    store: Arc<dyn Store>,
    writer: Writer,
    hooks: Hooks,
    mut on_leader: impl FnMut() -> Vec<JoinHandle<()>> + Send,
    shutdown: impl std::future::Future<Output = ()>,
) -> anyhow::Result<()> {
    let class = lock_class(&options.stream);
    let mut leader_tasks: Vec<JoinHandle<()>> = Vec::new();
    let mut owned: BTreeMap<u32, (watch::Sender<bool>, JoinHandle<()>)> = BTreeMap::new();
    let mut leader = false;
    let mut conn: Option<PgConnection> = None;
    // Start at a different partition in each process, so that writers
    // starting together do not all try the same ones first.
    let offset = std::process::id() % options.partitions.max(1);
    tokio::pin!(shutdown);
    let mut tick = tokio::time::interval(REBALANCE_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            _ = tick.tick() => {}
        }
        // The lock connection: while it is up, this process owns what it
        // locked; when it fails, the locks are gone, so every consumer
        // stops before anything is taken again.
        let healthy = match conn.as_mut() {
            Some(c) => sqlx::query("SELECT 1").execute(&mut *c).await.is_ok(),
            None => false,
        };
        if !healthy {
            if conn.take().is_some() || !owned.is_empty() {
                tracing::warn!("lost the partition locks' database connection; stopping consumers");
            }
            stop_all(&mut owned).await;
            if leader {
                tracing::warn!("lost the leader lock; stopping the periodic jobs");
                for t in leader_tasks.drain(..) {
                    t.abort();
                }
            }
            leader = false;
            match PgConnection::connect(database_url).await {
                Ok(mut c) => {
                    if let Err(e) = sqlx::query("SELECT pg_advisory_lock_shared($1, $2)")
                        .bind(class)
                        .bind(MEMBER_KEY)
                        .execute(&mut c)
                        .await
                    {
                        tracing::warn!(error = %e, "cannot join the writers; will retry");
                        continue;
                    }
                    conn = Some(c);
                }
                Err(e) => {
                    tracing::warn!(error = %e, "cannot reach the database; will retry");
                    continue;
                }
            }
        }
        let Some(c) = conn.as_mut() else { continue };
        // Partitions whose consumer ended (it failed) are given back.
        let ended: Vec<u32> = owned
            .iter()
            .filter(|(_, (_, task))| task.is_finished())
            .map(|(p, _)| *p)
            .collect();
        for p in ended {
            owned.remove(&p);
            let _ = unlock(c, class, p).await;
        }
        if !leader {
            leader = try_lock(c, class, LEADER_KEY).await.unwrap_or(false);
            if leader {
                tracing::info!("this writer leads: it runs the periodic jobs");
                leader_tasks = on_leader();
            }
        }
        let members = count_members(c, class).await.unwrap_or(1).max(1);
        let share = options.partitions.div_ceil(members) as usize;
        while owned.len() > share {
            let Some((p, (stop, task))) = owned.pop_last() else {
                break;
            };
            let _ = stop.send(true);
            let _ = task.await;
            let _ = unlock(c, class, p).await;
            tracing::info!(partition = p, "gave the partition back");
        }
        for i in 0..options.partitions {
            if owned.len() >= share {
                break;
            }
            let p = (i + offset) % options.partitions;
            if owned.contains_key(&p) {
                continue;
            }
            if try_lock(c, class, p as i32).await.unwrap_or(false) {
                let (stop, stopped) = watch::channel(false);
                let task = tokio::spawn(consume(
                    js.clone(),
                    options.clone(),
                    p,
                    store.clone(),
                    writer.clone(),
                    hooks.clone(),
                    stopped,
                ));
                owned.insert(p, (stop, task));
                tracing::info!(partition = p, "took the partition");
            }
        }
        telemetry::owned_partitions(owned.len());
    }
    stop_all(&mut owned).await;
    for t in leader_tasks {
        t.abort();
    }
    Ok(())
}

async fn stop_all(owned: &mut BTreeMap<u32, (watch::Sender<bool>, JoinHandle<()>)>) {
    for (_, (stop, _)) in owned.iter() {
        let _ = stop.send(true);
    }
    while let Some((_, (_, task))) = owned.pop_first() {
        let _ = task.await;
    }
}

async fn try_lock(c: &mut PgConnection, class: i32, key: i32) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar("SELECT pg_try_advisory_lock($1, $2)")
        .bind(class)
        .bind(key)
        .fetch_one(c)
        .await
}

async fn unlock(c: &mut PgConnection, class: i32, key: u32) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar("SELECT pg_advisory_unlock($1, $2)")
        .bind(class)
        .bind(key as i32)
        .fetch_one(c)
        .await
}

/// Writers alive: sessions holding the member lock of this stream.
async fn count_members(c: &mut PgConnection, class: i32) -> Result<u32, sqlx::Error> {
    let n: i64 = sqlx::query_scalar(
        "SELECT count(DISTINCT pid) FROM pg_locks \
         WHERE locktype = 'advisory' AND granted \
           AND classid = $1::bigint::oid AND objid = $2::bigint::oid AND objsubid = 2",
    )
    .bind(i64::from(class))
    .bind(i64::from(MEMBER_KEY))
    .fetch_one(c)
    .await?;
    Ok(u32::try_from(n).unwrap_or(1))
}

/// Consumes one partition until told to stop (after the batch in hand) or
/// the consumer cannot be set up.
async fn consume(
    js: jetstream::Context,
    options: QueueOptions,
    partition: u32,
    store: Arc<dyn Store>,
    writer: Writer,
    hooks: Hooks,
    mut stop: watch::Receiver<bool>,
) {
    let name = format!("{}-p{partition}", options.stream);
    let consumer = async {
        let stream = js.get_stream(&options.stream).await?;
        let c: consumer::PullConsumer = stream
            .get_or_create_consumer(
                &name,
                consumer::pull::Config {
                    durable_name: Some(name.clone()),
                    filter_subject: options.subject(partition),
                    ack_policy: consumer::AckPolicy::Explicit,
                    ack_wait: ACK_WAIT,
                    max_ack_pending: 20_000,
                    ..Default::default()
                },
            )
            .await?;
        Ok::<_, async_nats::Error>(c)
    }
    .await;
    let consumer = match consumer {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!(partition, error = %e, "cannot set up the partition's consumer");
            return;
        }
    };
    while !*stop.borrow() {
        let fetched = consumer
            .fetch()
            .max_messages(FETCH_MAX)
            .expires(Duration::from_millis(500))
            .messages()
            .await;
        let mut batch = match fetched {
            Ok(b) => b,
            Err(e) => {
                tracing::warn!(partition, error = %e, "cannot fetch from the queue; will retry");
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                    _ = stop.changed() => {}
                }
                continue;
            }
        };
        let mut messages = Vec::new();
        while let Some(m) = batch.next().await {
            match m {
                Ok(m) => messages.push(m),
                Err(e) => tracing::debug!(partition, error = %e, "fetch ended early"),
            }
        }
        if messages.is_empty() {
            continue;
        }
        write_batch(
            partition,
            messages,
            store.as_ref(),
            &writer,
            &hooks,
            &mut stop,
        )
        .await;
    }
}

/// Writes one fetched batch, retrying until it commits, then acknowledges
/// it. A message that does not decode is terminated (it would block the
/// partition forever) and counted. Told to stop while the batch cannot be
/// written, it leaves the batch unacknowledged: it comes again, to this
/// partition's next owner, after [`ACK_WAIT`]. Events of a project deleted
/// since they were queued are dropped (they can never be stored, and would
/// hold up the partition).
async fn write_batch(
    partition: u32,
    messages: Vec<jetstream::Message>,
    store: &dyn Store,
    writer: &Writer,
    hooks: &Hooks,
    stop: &mut watch::Receiver<bool>,
) {
    let mut events = Vec::with_capacity(messages.len());
    // Each message kept, with its event's project.
    let mut kept: Vec<(jetstream::Message, i64)> = Vec::with_capacity(messages.len());
    for m in messages {
        match super::decode(&m.payload) {
            Ok(e) => {
                kept.push((m, e.project_id));
                events.push(e);
            }
            Err(why) => {
                tracing::error!(partition, error = %why, "a queued message is not an event; dropped");
                telemetry::rejected("undecodable_queue_message", 1);
                let _ = m.ack_with(AckKind::Term).await;
            }
        }
    }
    if events.is_empty() {
        return;
    }
    let mut delay = Duration::from_millis(200);
    let outcomes = loop {
        match writer.submit(events).await {
            Ok(outcomes) => break outcomes,
            Err(e) => {
                if !drop_deleted_projects(partition, store, &mut kept).await {
                    tracing::warn!(partition, events = kept.len(), error = %e, "cannot write a queued batch; will retry");
                    // Still being worked on: not redelivered meanwhile.
                    for (m, _) in &kept {
                        let _ = m.ack_with(AckKind::Progress).await;
                    }
                    tokio::select! {
                        _ = tokio::time::sleep(delay) => {}
                        _ = stop.changed() => {}
                    }
                    if *stop.borrow() {
                        return;
                    }
                    delay = (delay * 2).min(Duration::from_secs(5));
                }
                if kept.is_empty() {
                    return;
                }
                // They decoded a moment ago.
                events = kept
                    .iter()
                    .filter_map(|(m, _)| super::decode(&m.payload).ok())
                    .collect();
            }
        }
    };
    let projects: Vec<i64> = kept.iter().map(|(_, p)| *p).collect();
    hooks.offer(&projects, &outcomes);
    let (stored, _) = crate::http::ingest::count_outcomes(&outcomes);
    telemetry::accepted("queue", stored);
    for (m, _) in &kept {
        if let Err(e) = m.ack().await {
            // The message comes again and is stored as a duplicate.
            tracing::debug!(partition, error = %e, "acknowledgement lost");
        }
    }
}

/// Removes (and terminates) the messages of projects that no longer exist;
/// true when there were any. A store that cannot say leaves them.
async fn drop_deleted_projects(
    partition: u32,
    store: &dyn Store,
    kept: &mut Vec<(jetstream::Message, i64)>,
) -> bool {
    let mut projects: Vec<i64> = kept.iter().map(|(_, p)| *p).collect();
    projects.sort_unstable();
    projects.dedup();
    let mut gone = Vec::new();
    for p in projects {
        if let Ok(None) = store.get_project(p).await {
            gone.push(p);
        }
    }
    if gone.is_empty() {
        return false;
    }
    let mut dropped = 0;
    let mut remaining = Vec::with_capacity(kept.len());
    for (m, p) in kept.drain(..) {
        if gone.contains(&p) {
            let _ = m.ack_with(AckKind::Term).await;
            dropped += 1;
        } else {
            remaining.push((m, p));
        }
    }
    *kept = remaining;
    tracing::warn!(partition, events = dropped, projects = ?gone, "dropped queued events of deleted projects");
    telemetry::rejected("project_deleted", dropped);
    true
}
