//! Per-key rate limiting of ingest (every protocol): a token bucket per project key,
//! in memory, from the `governor` crate (GCRA, lock-free, one small state
//! per key).
//!
//! Buckets are keyed by project id rather than by the key's text: a project
//! has exactly one ingest key at a time, and only authenticated requests are
//! counted, so the map cannot be grown by strangers sending made-up keys.
//! Limits are per collector process.

use std::num::NonZeroU32;
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::state::keyed::DefaultKeyedStateStore;
use governor::{Quota, RateLimiter};

/// Events per second allowed per project key, with a burst.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyRate {
    /// Sustained events per second; 0 turns rate limiting off.
    pub per_second: u32,
    /// Events accepted at once before the sustained rate applies.
    pub burst: u32,
}

impl Default for KeyRate {
    /// Generous: meant to stop a runaway client, not normal traffic.
    fn default() -> Self {
        KeyRate {
            per_second: 1000,
            burst: 5000,
        }
    }
}

type Keyed = RateLimiter<i64, DefaultKeyedStateStore<i64>, DefaultClock>;

/// The buckets of every project key.
pub struct KeyRateLimiter {
    limiter: Option<Keyed>,
    /// The bucket's size: a request of more events takes all of it.
    burst: NonZeroU32,
    clock: DefaultClock,
}

impl KeyRateLimiter {
    pub fn new(rate: KeyRate) -> KeyRateLimiter {
        let burst = NonZeroU32::new(rate.burst.max(rate.per_second)).unwrap_or(NonZeroU32::MIN);
        let limiter = NonZeroU32::new(rate.per_second)
            .map(|per_second| RateLimiter::keyed(Quota::per_second(per_second).allow_burst(burst)));
        KeyRateLimiter {
            limiter,
            burst,
            clock: DefaultClock::default(),
        }
    }

    /// Takes `events` tokens from the project's bucket (all of them when
    /// `events` is more than the bucket holds, so that a batch larger than
    /// the burst passes once the bucket is full), or says how long to wait
    /// (whole seconds, at least 1) before the client may send again.
    pub fn check(&self, project_id: i64, events: u32) -> Result<(), u64> {
        let (Some(limiter), Some(n)) = (&self.limiter, NonZeroU32::new(events)) else {
            return Ok(());
        };
        let n = n.min(self.burst);
        match limiter.check_key_n(&project_id, n) {
            Ok(Ok(())) => Ok(()),
            Ok(Err(not_until)) => {
                let wait = not_until.wait_time_from(self.clock.now());
                Err(whole_seconds(wait))
            }
            // More than the burst: not possible after the clamp above.
            Err(_) => Err(1),
        }
    }
}

impl KeyRateLimiter {
    /// The rest of a request of `events` events, after [`Self::check`] took
    /// one token for it before decoding. A request of more events than the
    /// burst passes on a full bucket and empties it.
    pub fn check_rest(&self, project_id: i64, events: u32) -> Result<(), u64> {
        self.check(project_id, events.min(self.burst.get()).saturating_sub(1))
    }
}

/// The 429 for a key over its rate; `Retry-After` says when to send again.
pub fn rate_limited(secs: u64) -> super::ApiError {
    let mut err = super::ApiError::new(
        axum::http::StatusCode::TOO_MANY_REQUESTS,
        "rate_limited",
        format!("too many events for this key; retry in {secs} s"),
    );
    err.retry_after = Some(secs);
    err
}

fn whole_seconds(d: Duration) -> u64 {
    (d.as_secs() + u64::from(d.subsec_nanos() > 0)).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn burst_then_refusal_per_key() {
        let l = KeyRateLimiter::new(KeyRate {
            per_second: 1,
            burst: 3,
        });
        for _ in 0..3 {
            assert_eq!(l.check(1, 1), Ok(()));
        }
        let wait = l.check(1, 1).unwrap_err();
        assert!((1..=2).contains(&wait), "{wait}");
        assert_eq!(l.check(2, 1), Ok(()), "other keys have their own bucket");
        assert!(
            l.check(2, 10).is_err(),
            "the whole bucket, which is not full"
        );
        // A request of more events than the burst, on a full bucket: its
        // first token, then the rest, which empties the bucket.
        assert_eq!(l.check(3, 1), Ok(()));
        assert_eq!(l.check_rest(3, 10), Ok(()));
        assert!(l.check(3, 1).is_err());
    }

    #[test]
    fn zero_turns_it_off() {
        let l = KeyRateLimiter::new(KeyRate {
            per_second: 0,
            burst: 0,
        });
        for _ in 0..10_000 {
            assert_eq!(l.check(1, 1), Ok(()));
        }
    }
}
