//! The default transport: a bounded queue drained by a worker thread that
//! finishes pending events, batches, gzips and POSTs them, with retries.
//!
//! **Architecture Invariant:** sending never blocks or awaits. Events go to
//! a bounded queue with `try_send`; a full queue drops the event and counts
//! it. All network work happens on one background thread running its own
//! current-thread tokio runtime, so the SDK works the same in synchronous
//! programs and inside any host runtime.

use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use backon::{ExponentialBuilder, Retryable};
use tokio::sync::mpsc;

use crate::dsn::Dsn;
use crate::error::Error;
use crate::options::{ClientOptions, RetryPolicy};
use crate::pending::PendingEvent;
use crate::protocol::{BatchResponse, Event};
use crate::transport::{mark_transport_thread, Stats, Transport};

#[derive(Debug, Default)]
struct Counters {
    queued: AtomicU64,
    sent: AtomicU64,
    dropped_queue_full: AtomicU64,
    dropped_failed: AtomicU64,
    retried: AtomicU64,
    rejected: AtomicU64,
    filtered: AtomicU64,
}

impl Counters {
    fn snapshot(&self) -> Stats {
        Stats {
            queued: self.queued.load(Ordering::Relaxed),
            sent: self.sent.load(Ordering::Relaxed),
            dropped_queue_full: self.dropped_queue_full.load(Ordering::Relaxed),
            dropped_failed: self.dropped_failed.load(Ordering::Relaxed),
            retried: self.retried.load(Ordering::Relaxed),
            rejected: self.rejected.load(Ordering::Relaxed),
            filtered: self.filtered.load(Ordering::Relaxed),
        }
    }
}

enum Control {
    Flush(std::sync::mpsc::SyncSender<()>),
    Shutdown(std::sync::mpsc::SyncSender<()>),
}

/// The default transport: a bounded queue drained by a background thread
/// that batches, gzips and POSTs to `{base}/api/v1/events`.
pub struct HttpTransport {
    events: mpsc::Sender<PendingEvent>,
    control: mpsc::UnboundedSender<Control>,
    counters: Arc<Counters>,
    worker: Mutex<Option<std::thread::JoinHandle<()>>>,
    debug: bool,
}

struct Settings {
    url: String,
    key: String,
    max_batch_events: usize,
    max_batch_bytes: usize,
    batch_interval: Duration,
    retry: RetryPolicy,
    debug: bool,
}

impl HttpTransport {
    /// Starts the worker thread for `dsn`.
    pub fn new(dsn: &Dsn, options: &ClientOptions) -> Result<HttpTransport, Error> {
        let client = reqwest::Client::builder()
            .timeout(options.request_timeout)
            .user_agent(concat!("errorflow-sdk/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(Error::HttpClient)?;
        let (events, events_rx) = mpsc::channel(options.queue_size);
        let (control, control_rx) = mpsc::unbounded_channel();
        let counters = Arc::new(Counters::default());
        let settings = Settings {
            url: dsn.events_url(),
            key: dsn.key().to_string(),
            max_batch_events: options.max_batch_events,
            max_batch_bytes: options.max_batch_bytes,
            batch_interval: options.batch_interval,
            retry: options.retry,
            debug: options.debug,
        };
        let worker_counters = counters.clone();
        let worker = std::thread::Builder::new()
            .name("errorflow-transport".into())
            .spawn(move || {
                mark_transport_thread();
                let runtime = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt,
                    Err(err) => {
                        eprintln!("[errorflow] cannot start the transport runtime: {err}");
                        return;
                    }
                };
                runtime.block_on(worker(
                    client,
                    settings,
                    events_rx,
                    control_rx,
                    worker_counters,
                ));
            })
            .map_err(Error::SpawnWorker)?;
        Ok(HttpTransport {
            events,
            control,
            counters,
            worker: Mutex::new(Some(worker)),
            debug: options.debug,
        })
    }

    fn wait(
        &self,
        make: impl FnOnce(std::sync::mpsc::SyncSender<()>) -> Control,
        timeout: Duration,
    ) -> bool {
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        if self.control.send(make(tx)).is_err() {
            return true;
        }
        rx.recv_timeout(timeout).is_ok()
    }
}

impl HttpTransport {
    fn enqueue(&self, event: PendingEvent) {
        match self.events.try_send(event) {
            Ok(()) => {
                self.counters.queued.fetch_add(1, Ordering::Relaxed);
            }
            Err(_) => {
                self.counters
                    .dropped_queue_full
                    .fetch_add(1, Ordering::Relaxed);
                if self.debug {
                    eprintln!("[errorflow] queue full, event dropped");
                }
            }
        }
    }
}

impl Transport for HttpTransport {
    fn send(&self, event: Event) {
        self.enqueue(PendingEvent::finished(event));
    }

    /// Only moves the event to the queue: the worker finishes it.
    fn send_pending(&self, event: PendingEvent) {
        self.enqueue(event);
    }

    fn flush(&self, timeout: Duration) -> bool {
        self.wait(Control::Flush, timeout)
    }

    fn shutdown(&self, timeout: Duration) -> bool {
        let done = self.wait(Control::Shutdown, timeout);
        if done {
            if let Some(worker) = self.worker.lock().unwrap_or_else(|e| e.into_inner()).take() {
                let _ = worker.join();
            }
        }
        done
    }

    fn stats(&self) -> Stats {
        self.counters.snapshot()
    }
}

/// How often a lingering worker checks whether a full batch is waiting.
const LINGER_TICK: Duration = Duration::from_millis(25);

async fn worker(
    client: reqwest::Client,
    settings: Settings,
    mut events: mpsc::Receiver<PendingEvent>,
    mut control: mpsc::UnboundedReceiver<Control>,
    counters: Arc<Counters>,
) {
    let mut pending: Vec<Event> = Vec::new();
    loop {
        // Wait for the first event of a batch (or a command).
        tokio::select! {
            biased;
            cmd = control.recv() => {
                if !handle_control(cmd, &client, &settings, &counters, &mut events, &mut pending).await {
                    return;
                }
                continue;
            }
            event = events.recv() => match event {
                Some(event) => finish(event, &settings, &counters, &mut pending),
                None => {
                    send_all(&client, &settings, &counters, &mut pending).await;
                    return;
                }
            },
        }
        // Then linger until the batch interval ends or a batch is full,
        // taking events with `try_recv` on a coarse tick. While the worker
        // is not parked in `recv`, `try_send` on the application's threads
        // wakes nobody, so capturing stays a few atomic operations even at
        // high event rates (a wake-up per event is a syscall).
        let deadline = tokio::time::Instant::now() + settings.batch_interval;
        loop {
            while pending.len() < settings.max_batch_events {
                match events.try_recv() {
                    Ok(event) => finish(event, &settings, &counters, &mut pending),
                    Err(_) => break,
                }
            }
            let now = tokio::time::Instant::now();
            if pending.len() >= settings.max_batch_events || now >= deadline {
                break;
            }
            tokio::select! {
                biased;
                cmd = control.recv() => {
                    if !handle_control(cmd, &client, &settings, &counters, &mut events, &mut pending).await {
                        return;
                    }
                    break;
                }
                () = tokio::time::sleep_until(deadline.min(now + LINGER_TICK)) => {}
            }
        }
        send_all(&client, &settings, &counters, &mut pending).await;
    }
}

/// Finishes a captured event on the worker thread. `before_send` is the
/// application's code: a panic in it costs that event, not the worker.
fn finish(event: PendingEvent, settings: &Settings, counters: &Counters, pending: &mut Vec<Event>) {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| event.finish())) {
        Ok(Some(event)) => pending.push(event),
        Ok(None) => {
            counters.filtered.fetch_add(1, Ordering::Relaxed);
        }
        Err(_) => {
            diag(
                settings,
                format_args!("finishing an event panicked; event dropped"),
            );
            counters.filtered.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Runs a flush or shutdown command; `false` when the worker must stop.
async fn handle_control(
    cmd: Option<Control>,
    client: &reqwest::Client,
    settings: &Settings,
    counters: &Counters,
    events: &mut mpsc::Receiver<PendingEvent>,
    pending: &mut Vec<Event>,
) -> bool {
    // Everything queued before the command is part of what it waits for.
    while let Ok(event) = events.try_recv() {
        finish(event, settings, counters, pending);
    }
    send_all(client, settings, counters, pending).await;
    match cmd {
        Some(Control::Flush(ack)) => {
            let _ = ack.try_send(());
            true
        }
        Some(Control::Shutdown(ack)) => {
            let _ = ack.try_send(());
            false
        }
        None => false,
    }
}

/// Serialises pending events into batches of at most `max_batch_events`
/// events and `max_batch_bytes` bytes, and sends each.
async fn send_all(
    client: &reqwest::Client,
    settings: &Settings,
    counters: &Counters,
    pending: &mut Vec<Event>,
) {
    let mut body = Vec::new();
    let mut count = 0usize;
    for event in pending.drain(..) {
        let json = match serde_json::to_vec(&event) {
            Ok(json) => json,
            Err(err) => {
                diag(settings, format_args!("cannot serialise event: {err}"));
                counters.dropped_failed.fetch_add(1, Ordering::Relaxed);
                continue;
            }
        };
        // `{"events":[` + `]}` + separators.
        if json.len() + 16 > settings.max_batch_bytes {
            diag(
                settings,
                format_args!(
                    "event of {} bytes is over max_batch_bytes, dropped",
                    json.len()
                ),
            );
            counters.dropped_failed.fetch_add(1, Ordering::Relaxed);
            continue;
        }
        if count > 0
            && (count >= settings.max_batch_events
                || body.len() + json.len() + 16 > settings.max_batch_bytes)
        {
            send_batch(client, settings, counters, std::mem::take(&mut body), count).await;
            count = 0;
        }
        body.push(if count == 0 { b'[' } else { b',' });
        body.extend_from_slice(&json);
        count += 1;
    }
    if count > 0 {
        send_batch(client, settings, counters, body, count).await;
    }
}

#[derive(Debug)]
enum SendError {
    /// Worth retrying; `retry_after` is the collector's requested wait.
    Retryable {
        reason: String,
        retry_after: Option<Duration>,
    },
    /// The collector refused the batch (4xx other than 429).
    Refused(u16),
}

impl std::fmt::Display for SendError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SendError::Retryable { reason, .. } => f.write_str(reason),
            SendError::Refused(status) => write!(f, "HTTP {status}"),
        }
    }
}

async fn send_batch(
    client: &reqwest::Client,
    settings: &Settings,
    counters: &Counters,
    array: Vec<u8>,
    count: usize,
) {
    let mut json = Vec::with_capacity(array.len() + 16);
    json.extend_from_slice(b"{\"events\":");
    json.extend_from_slice(&array);
    json.extend_from_slice(b"]}");
    let body = match gzip(&json) {
        Ok(body) => body,
        Err(err) => {
            diag(settings, format_args!("gzip failed: {err}"));
            counters
                .dropped_failed
                .fetch_add(count as u64, Ordering::Relaxed);
            return;
        }
    };
    let started = Instant::now();
    let max_elapsed = settings.retry.max_elapsed;
    let backoff = ExponentialBuilder::default()
        .with_min_delay(settings.retry.min_delay)
        .with_max_delay(settings.retry.max_delay)
        .with_jitter()
        .without_max_times();
    let attempt = || {
        let body = body.clone();
        async move {
            let response = client
                .post(&settings.url)
                .header("X-Errorflow-Key", &settings.key)
                .header("Content-Type", "application/json")
                .header("Content-Encoding", "gzip")
                .body(body)
                .send()
                .await
                .map_err(|err| SendError::Retryable {
                    reason: err.to_string(),
                    retry_after: None,
                })?;
            let status = response.status().as_u16();
            if response.status().is_success() {
                let body = response.bytes().await.unwrap_or_default();
                return Ok(serde_json::from_slice::<BatchResponse>(&body).ok());
            }
            if status == 429 || response.status().is_server_error() {
                let retry_after = response
                    .headers()
                    .get("retry-after")
                    .and_then(|v| v.to_str().ok())
                    .and_then(parse_retry_after);
                return Err(SendError::Retryable {
                    reason: format!("HTTP {status}"),
                    retry_after,
                });
            }
            Err(SendError::Refused(status))
        }
    };
    let result = attempt
        .retry(backoff)
        .sleep(tokio::time::sleep)
        .when(|err| matches!(err, SendError::Retryable { .. }))
        .adjust(|err, delay| {
            // A `Retry-After` longer than the backoff wins; the total time
            // bound applies to both, so a huge value ends the retries.
            let delay = delay?;
            let wanted = match err {
                SendError::Retryable {
                    retry_after: Some(after),
                    ..
                } => delay.max(*after),
                _ => delay,
            };
            if started.elapsed() + wanted > max_elapsed {
                None
            } else {
                Some(wanted)
            }
        })
        .notify(|err, delay| {
            counters.retried.fetch_add(1, Ordering::Relaxed);
            diag(
                settings,
                format_args!("delivery failed ({err}), retrying in {delay:?}"),
            );
        })
        .await;
    match result {
        Ok(Some(response)) => {
            let rejected = response.rejected.len() as u64;
            counters
                .sent
                .fetch_add(count as u64 - rejected.min(count as u64), Ordering::Relaxed);
            counters.rejected.fetch_add(rejected, Ordering::Relaxed);
            for r in &response.rejected {
                diag(
                    settings,
                    format_args!("event {} rejected: {}", r.index, r.error),
                );
            }
        }
        Ok(None) => {
            counters.sent.fetch_add(count as u64, Ordering::Relaxed);
        }
        Err(SendError::Refused(status)) => {
            diag(
                settings,
                format_args!("collector refused {count} events with HTTP {status}"),
            );
            counters.rejected.fetch_add(count as u64, Ordering::Relaxed);
        }
        Err(err) => {
            diag(settings, format_args!("giving up on {count} events: {err}"));
            counters
                .dropped_failed
                .fetch_add(count as u64, Ordering::Relaxed);
        }
    }
}

fn gzip(data: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut encoder = flate2::write::GzEncoder::new(
        Vec::with_capacity(data.len() / 4),
        flate2::Compression::fast(),
    );
    encoder.write_all(data)?;
    encoder.finish()
}

/// Parses `Retry-After` as seconds or as an HTTP date.
pub(crate) fn parse_retry_after(value: &str) -> Option<Duration> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<f64>() {
        return (secs.is_finite() && secs >= 0.0)
            .then(|| Duration::from_secs_f64(secs.min(86_400.0)));
    }
    let when = httpdate::parse_http_date(value).ok()?;
    Some(
        when.duration_since(std::time::SystemTime::now())
            .unwrap_or_default(),
    )
}

fn diag(settings: &Settings, args: std::fmt::Arguments<'_>) {
    if settings.debug {
        eprintln!("[errorflow] {args}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_forms() {
        assert_eq!(parse_retry_after("2"), Some(Duration::from_secs(2)));
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT"),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_retry_after("soon"), None);
    }
}
