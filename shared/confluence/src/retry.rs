//! Waiting between attempts: what Confluence told us (`Retry-After`, `X-RateLimit-Reset`), otherwise
//! exponential backoff with full jitter, capped, all inside one total deadline (connect-protocol.md §9).
//!
//! Time is behind [`Pause`] so tests can wait without sleeping.

use std::fmt;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use rand::Rng;
use reqwest::header::HeaderMap;
use time::OffsetDateTime;
use time::format_description::well_known::{Rfc2822, Rfc3339};

/// How hard to try.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts per request, the first included.
    pub max_attempts: u32,
    /// First backoff step (before jitter).
    pub base_delay: Duration,
    /// Largest backoff step (before jitter).
    pub max_delay: Duration,
    /// All attempts and waits of one request end within this; it must fit inside the function's
    /// timeout with room to answer. A wait that would overrun it is not started: the typed outcome
    /// (e.g. rate limited, with the wait) goes back to the caller, which can requeue.
    pub total_deadline: Duration,
    /// Timeout of a single attempt (also bounded by what is left of the deadline).
    pub attempt_timeout: Duration,
}

impl Default for RetryPolicy {
    /// 5 attempts, backoff 0.5 s doubling to 8 s, 20 s in all (the edit worker runs with a 60 s
    /// Lambda timeout and may make a few requests per edit), 10 s per attempt.
    fn default() -> Self {
        Self {
            max_attempts: 5,
            base_delay: Duration::from_millis(500),
            max_delay: Duration::from_secs(8),
            total_deadline: Duration::from_secs(20),
            attempt_timeout: Duration::from_secs(10),
        }
    }
}

impl RetryPolicy {
    /// The backoff before retry number `retry` (1 for the first retry): a uniformly random duration
    /// between zero and `min(max_delay, base_delay * 2^(retry-1))` ("full jitter").
    pub fn backoff(&self, retry: u32) -> Duration {
        let factor = 1u32
            .checked_shl(retry.saturating_sub(1).min(20))
            .unwrap_or(u32::MAX);
        let ceiling = self.base_delay.saturating_mul(factor).min(self.max_delay);
        let ceiling_ms = u64::try_from(ceiling.as_millis()).unwrap_or(u64::MAX);
        Duration::from_millis(rand::thread_rng().gen_range(0..=ceiling_ms))
    }
}

/// A source of monotonic time that can wait. Production uses [`TokioPause`]; tests use
/// [`VirtualPause`], which records waits and advances its clock without sleeping.
#[async_trait]
pub trait Pause: Send + Sync + fmt::Debug {
    /// Now, on a monotonic clock.
    fn now(&self) -> Instant;
    /// Waits for `duration`.
    async fn sleep(&self, duration: Duration);
}

/// Real time, real sleeping.
#[derive(Debug, Clone, Copy, Default)]
pub struct TokioPause;

#[async_trait]
impl Pause for TokioPause {
    fn now(&self) -> Instant {
        Instant::now()
    }

    async fn sleep(&self, duration: Duration) {
        tokio::time::sleep(duration).await;
    }
}

/// Test time: `sleep` returns at once and moves this clock forward; every wait is recorded.
#[derive(Debug, Default)]
pub struct VirtualPause {
    state: Mutex<(Duration, Vec<Duration>)>,
}

impl VirtualPause {
    /// A virtual clock that starts at the real now.
    pub fn new() -> Self {
        Self::default()
    }

    /// Every wait so far, in order.
    pub fn waits(&self) -> Vec<Duration> {
        self.lock().1.clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, (Duration, Vec<Duration>)> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[async_trait]
impl Pause for VirtualPause {
    fn now(&self) -> Instant {
        let offset = self.lock().0;
        Instant::now() + offset
    }

    async fn sleep(&self, duration: Duration) {
        let mut state = self.lock();
        state.0 = state.0.saturating_add(duration);
        state.1.push(duration);
    }
}

/// How long a 429 or 503 told us to wait: `Retry-After` (delta-seconds or an HTTP date), else
/// `X-RateLimit-Reset` (an ISO-8601 instant). `now_unix` is the wall clock, for the dated forms.
/// `None` when neither header is usable.
pub fn told_wait(headers: &HeaderMap, now_unix: i64) -> Option<Duration> {
    let text = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
    };
    if let Some(value) = text("retry-after") {
        if let Ok(seconds) = value.parse::<u64>() {
            return Some(Duration::from_secs(seconds));
        }
        if let Ok(at) = OffsetDateTime::parse(value, &Rfc2822) {
            return Some(until(at, now_unix));
        }
    }
    if let Some(value) = text("x-ratelimit-reset")
        && let Ok(at) = OffsetDateTime::parse(value, &Rfc3339)
    {
        return Some(until(at, now_unix));
    }
    None
}

fn until(at: OffsetDateTime, now_unix: i64) -> Duration {
    let seconds = at.unix_timestamp().saturating_sub(now_unix);
    Duration::from_secs(u64::try_from(seconds).unwrap_or(0))
}

#[cfg(test)]
mod tests {
    use reqwest::header::HeaderValue;

    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.insert(*name, HeaderValue::from_str(value).unwrap());
        }
        map
    }

    #[test]
    fn retry_after_seconds_win_over_the_reset_instant() {
        let h = headers(&[
            ("Retry-After", "7"),
            ("X-RateLimit-Reset", "2026-01-01T00:01:00Z"),
        ]);
        assert_eq!(told_wait(&h, 1_767_225_600), Some(Duration::from_secs(7)));
    }

    #[test]
    fn the_reset_instant_and_an_http_date_are_counted_from_now() {
        // 2026-01-01T00:00:00Z is 1_767_225_600.
        let h = headers(&[("X-RateLimit-Reset", "2026-01-01T00:01:00Z")]);
        assert_eq!(told_wait(&h, 1_767_225_600), Some(Duration::from_secs(60)));
        let h = headers(&[("Retry-After", "Thu, 01 Jan 2026 00:00:30 +0000")]);
        assert_eq!(told_wait(&h, 1_767_225_600), Some(Duration::from_secs(30)));
        // In the past: no wait.
        assert_eq!(told_wait(&h, 1_767_225_700), Some(Duration::ZERO));
    }

    #[test]
    fn no_usable_header_means_no_told_wait() {
        assert_eq!(told_wait(&headers(&[]), 0), None);
        assert_eq!(told_wait(&headers(&[("Retry-After", "soon")]), 0), None);
        assert_eq!(
            told_wait(&headers(&[("X-RateLimit-Reset", "tomorrow")]), 0),
            None
        );
    }

    #[test]
    fn backoff_is_jittered_below_a_doubling_capped_ceiling() {
        let policy = RetryPolicy {
            base_delay: Duration::from_millis(100),
            max_delay: Duration::from_millis(1000),
            ..RetryPolicy::default()
        };
        for _ in 0..200 {
            assert!(policy.backoff(1) <= Duration::from_millis(100));
            assert!(policy.backoff(3) <= Duration::from_millis(400));
            assert!(policy.backoff(30) <= Duration::from_millis(1000));
        }
        // Full jitter spreads the waits: 200 draws are not all equal.
        let draws: std::collections::HashSet<_> = (0..200).map(|_| policy.backoff(5)).collect();
        assert!(draws.len() > 10);
    }
}
