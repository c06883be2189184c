//! Retention: events are kept for a set time (`--retention`, 90 days by
//! default, as Sentry's and GlitchTip's), then deleted, and so are the
//! incidents they leave without events once those have been idle as long.
//!
//! Deleting runs in the background, every [`PERIOD`] and once at start-up,
//! in chunks of [`CHUNK`] rows, each its own short transaction with a pause
//! after it: on SQLite, whose one write path ingest shares, the batch writer
//! waits at most for one chunk. Catching up on a large backlog (retention
//! switched on for an old database) takes many chunks and logs its progress.
//!
//! An incident's `count` stays the number of events it has had, as Sentry's
//! "times seen": after retention it can exceed the events still stored. An
//! incident deleted this way is forgotten with its history: an event like
//! its own later opens a new incident, not a regression.

use std::fmt;
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::store::{drain, Store, StoreError};
use crate::telemetry;

/// How often the background job looks for expired events.
pub const PERIOD: Duration = Duration::from_secs(10 * 60);
/// Rows deleted per transaction.
pub const CHUNK: u32 = crate::store::DELETE_CHUNK;
/// Pause after each full chunk, leaving the write path to ingest.
pub const PAUSE: Duration = Duration::from_millis(20);
/// A progress line every this many deleted events.
const PROGRESS_EVERY: u64 = 100_000;

/// The default retention: 90 days.
pub const DEFAULT: Duration = Duration::from_secs(90 * 24 * 3600);
/// The shortest retention accepted: anything shorter is more likely a
/// mistake (`90s` for `90d`) than a wish.
pub const MINIMUM: Duration = Duration::from_secs(3600);

/// How long events are kept: a duration, or `off` to keep them forever.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention(pub Option<Duration>);

impl Default for Retention {
    fn default() -> Self {
        Retention(Some(DEFAULT))
    }
}

impl FromStr for Retention {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let s = s.trim();
        if s.eq_ignore_ascii_case("off") {
            return Ok(Retention(None));
        }
        let d = humantime::parse_duration(s)
            .map_err(|e| format!("{e} (expected a duration like `90d`, or `off`)"))?;
        if d < MINIMUM {
            return Err(format!(
                "{s} is shorter than the minimum retention of 1h (use `off` to keep events forever)"
            ));
        }
        Ok(Retention(Some(d)))
    }
}

impl fmt::Display for Retention {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Whole days or hours as written (humantime would turn 90 days
        // into "2months 29days 2h 52m 48s").
        match self.0 {
            None => f.write_str("off"),
            Some(d) if d.as_secs() % 86_400 == 0 => write!(f, "{}d", d.as_secs() / 86_400),
            Some(d) if d.as_secs() % 3600 == 0 => write!(f, "{}h", d.as_secs() / 3600),
            Some(d) => write!(f, "{}", humantime::format_duration(d)),
        }
    }
}

/// What one pass deleted.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Purged {
    pub events: u64,
    pub incidents: u64,
}

/// Chunk size and pause of [`purge`].
#[derive(Debug, Clone, Copy)]
pub struct PurgeOptions {
    pub chunk: u32,
    pub pause: Duration,
}

impl Default for PurgeOptions {
    fn default() -> Self {
        PurgeOptions {
            chunk: CHUNK,
            pause: PAUSE,
        }
    }
}

/// Deletes the events received before `before`, then the incidents left
/// without events that were last seen before it, chunk by chunk.
pub async fn purge(
    store: &dyn Store,
    before: DateTime<Utc>,
    options: PurgeOptions,
) -> Result<Purged, StoreError> {
    let chunk = options.chunk.max(1);
    let so_far = &AtomicU64::new(0);
    let events = drain(chunk, options.pause, |limit| async move {
        let n = store.delete_events_before(before, limit).await?;
        telemetry::retention_deleted("events", n);
        let before_chunk = so_far.fetch_add(n, Ordering::Relaxed);
        if (before_chunk + n) / PROGRESS_EVERY > before_chunk / PROGRESS_EVERY {
            tracing::info!(
                events = before_chunk + n,
                before = %before,
                "retention: deleting expired events"
            );
        }
        Ok(n)
    })
    .await?;
    let incidents = drain(chunk, options.pause, |limit| async move {
        let n = store.delete_groups_without_events(before, limit).await?;
        telemetry::retention_deleted("incidents", n);
        Ok(n)
    })
    .await?;
    Ok(Purged { events, incidents })
}

/// The background job: a pass at start-up, then every [`PERIOD`].
pub async fn job(store: Arc<dyn Store>, keep: Duration) {
    let Ok(keep) = chrono::Duration::from_std(keep) else {
        tracing::warn!("retention too long to compute with; events are kept forever");
        return;
    };
    let mut tick = tokio::time::interval(PERIOD);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let before = Utc::now() - keep;
        match purge(store.as_ref(), before, PurgeOptions::default()).await {
            Ok(Purged {
                events: 0,
                incidents: 0,
            }) => {}
            Ok(p) => tracing::info!(
                events = p.events,
                incidents = p.incidents,
                before = %before,
                "retention: deleted expired events and the incidents they left empty"
            ),
            Err(e) => tracing::warn!(error = %e, "retention pass failed; will retry"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retention_parses_durations_and_off() {
        assert_eq!("90d".parse(), Ok(Retention(Some(DEFAULT))));
        assert_eq!(
            " 2h ".parse(),
            Ok(Retention(Some(Duration::from_secs(7200))))
        );
        assert_eq!("OFF".parse(), Ok(Retention(None)));
        let err = "90s".parse::<Retention>().unwrap_err();
        assert!(err.contains("minimum retention of 1h"), "{err}");
        let err = "90".parse::<Retention>().unwrap_err();
        assert!(err.contains("`90d`, or `off`"), "{err}");
        assert_eq!(Retention::default().to_string(), "90d");
        assert_eq!("36h".parse::<Retention>().unwrap().to_string(), "36h");
        assert_eq!(
            "90m 30s".parse::<Retention>().unwrap().to_string(),
            "1h 30m 30s"
        );
        assert_eq!(Retention(None).to_string(), "off");
    }
}
