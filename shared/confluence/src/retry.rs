//! Waiting between attempts: what Confluence told us (`Retry-After`, `X-RateLimit-Reset`), otherwise
//! exponential backoff with full jitter, capped, all inside one total deadline (docs/protocol.md §9).
//!
//! [`Retrier`] is the one executor that does this, for Confluence requests and token exchanges
//! alike: the caller's attempt sends and judges ([`Attempt`]), the executor counts, times out and
//! waits. Time is behind [`Pause`] so tests can wait without sleeping.

use std::fmt;
use std::future::Future;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use rand::Rng;
use reqwest::header::HeaderMap;
use time::OffsetDateTime;
use time::format_description::well_known::{Rfc2822, Rfc3339};

use crate::error::network_reason;

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

/// What one attempt came to, as the caller judges the answer.
#[derive(Debug)]
pub enum Attempt<T, E> {
    /// Finished: a success, or a failure that another attempt would not mend.
    Done(Result<T, E>),
    /// A failure a later attempt may mend (429, 5xx, the network): wait as `told`, else back off,
    /// and try again, unless the attempts are spent or the wait would overrun the deadline; then
    /// `error` is the outcome.
    Retry {
        /// The outcome when no attempt is left.
        error: E,
        /// The wait the server told ([`told_wait`]), if the caller honours it for this answer.
        told: Option<Duration>,
    },
    /// Try again at once, with something the caller changed for it (a user token refused with 401
    /// is exchanged again). Granted even past [`RetryPolicy::max_attempts`], so the caller bounds how
    /// often it asks (once); never past the deadline, where `error` is the outcome.
    Again {
        /// The outcome when the deadline has passed.
        error: E,
    },
}

/// The limits of one attempt, handed to it by [`Retrier::run`].
#[derive(Debug, Clone, Copy)]
pub struct AttemptLimits<'a> {
    number: u32,
    attempt_timeout: Duration,
    deadline: Instant,
    pause: &'a dyn Pause,
}

impl AttemptLimits<'_> {
    /// Which attempt this is, the first being 1.
    pub fn number(&self) -> u32 {
        self.number
    }

    /// The timeout for this attempt's request: the policy's per-attempt timeout, cut to what is left
    /// of the deadline now (at least 1 ms). Asked when the request is built, after any work the
    /// attempt did first (such as exchanging a user token).
    pub fn timeout(&self) -> Duration {
        let remaining = self.deadline.saturating_duration_since(self.pause.now());
        self.attempt_timeout
            .min(remaining)
            .max(Duration::from_millis(1))
    }

    /// Sends `request` with this attempt's [`timeout`](Self::timeout). No answer at all (connect,
    /// timeout, transport) is an attempt to retry with backoff, its error made by `network` from
    /// the failure's reason; an answer, whatever its status, is the caller's to judge.
    pub async fn send<T, E>(
        &self,
        request: reqwest::RequestBuilder,
        network: impl FnOnce(String) -> E,
    ) -> Result<reqwest::Response, Attempt<T, E>> {
        request
            .timeout(self.timeout())
            .send()
            .await
            .map_err(|e| Attempt::Retry {
                error: network(network_reason(&e)),
                told: None,
            })
    }
}

/// Names a retried request in the log line each retry writes (no query, no credential).
#[derive(Debug, Clone, Copy)]
pub struct Retried<'a> {
    /// The tenant's clientKey.
    pub client_key: &'a str,
    /// The HTTP method.
    pub method: &'a str,
    /// The URL's path.
    pub path: &'a str,
}

tokio::task_local! {
    /// The deadline of the whole job the current task runs, when it has one: every request's
    /// own deadline is cut to it ([`within_job_deadline`]).
    static JOB_DEADLINE: Instant;
}

/// Runs `work` (e.g. one edit, with its token exchange, reads and writes) under one deadline:
/// every request it makes through the [`Retrier`] ends by `deadline`, whatever its own retry
/// deadline, so the whole job answers in time and its outcome (a timeout is a passing failure)
/// is still audited by the engine. Without it each request has its own deadline only.
pub async fn within_job_deadline<F: Future>(deadline: Instant, work: F) -> F::Output {
    JOB_DEADLINE.scope(deadline, work).await
}

/// The one retry executor, for Confluence requests and token exchanges alike: runs attempts of one
/// logical request under a [`RetryPolicy`] and a [`Pause`]. The caller's attempt sends the request
/// and judges the answer ([`Attempt`]); the executor keeps the count, the total deadline, the
/// per-attempt timeout, and the waits (told, else jittered backoff), and returns the last outcome.
#[derive(Debug, Clone, Copy)]
pub struct Retrier<'a> {
    policy: RetryPolicy,
    pause: &'a dyn Pause,
}

impl<'a> Retrier<'a> {
    /// An executor for `policy`, telling time and waiting with `pause`.
    pub fn new(policy: RetryPolicy, pause: &'a dyn Pause) -> Self {
        Self { policy, pause }
    }

    /// Runs `attempt` until it is done, or the attempts or the deadline are spent. The deadline
    /// starts now, and ends no later than the job's ([`within_job_deadline`]). A wait that would
    /// end at or past the deadline is not started: the attempt's error (e.g. rate limited, with
    /// the told wait) goes back to the caller, which can requeue.
    pub async fn run<T, E, F>(
        &self,
        retried: Retried<'_>,
        mut attempt: impl FnMut(AttemptLimits<'a>) -> F,
    ) -> Result<T, E>
    where
        E: fmt::Display,
        F: Future<Output = Attempt<T, E>>,
    {
        let own = self.pause.now() + self.policy.total_deadline;
        let deadline = JOB_DEADLINE.try_with(|job| own.min(*job)).unwrap_or(own);
        let mut number: u32 = 0;
        loop {
            number = number.saturating_add(1);
            let limits = AttemptLimits {
                number,
                attempt_timeout: self.policy.attempt_timeout,
                deadline,
                pause: self.pause,
            };
            let (error, wait) = match attempt(limits).await {
                Attempt::Done(result) => return result,
                Attempt::Again { error } if self.pause.now() >= deadline => return Err(error),
                Attempt::Again { .. } => continue,
                Attempt::Retry { error, told } => {
                    (error, told.unwrap_or_else(|| self.policy.backoff(number)))
                }
            };
            if number >= self.policy.max_attempts || self.pause.now() + wait >= deadline {
                return Err(error);
            }
            tracing::warn!(
                client_key = retried.client_key,
                method = retried.method,
                path = retried.path,
                attempt = number,
                wait_ms = u64::try_from(wait.as_millis()).unwrap_or(u64::MAX),
                reason = %error,
                "retrying a request"
            );
            self.pause.sleep(wait).await;
        }
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

    const RETRIED: Retried<'static> = Retried {
        client_key: "tenant",
        method: "GET",
        path: "/x",
    };

    fn policy() -> RetryPolicy {
        RetryPolicy {
            max_attempts: 3,
            base_delay: Duration::from_millis(100),
            max_delay: Duration::from_millis(400),
            total_deadline: Duration::from_secs(10),
            attempt_timeout: Duration::from_secs(4),
        }
    }

    #[tokio::test]
    async fn the_executor_waits_as_told_else_backs_off_and_returns_the_last_error() {
        let pause = VirtualPause::new();
        let retrier = Retrier::new(policy(), &pause);
        let mut numbers = Vec::new();
        let result: Result<(), String> = retrier
            .run(RETRIED, |limits| {
                numbers.push(limits.number());
                assert_eq!(limits.timeout(), Duration::from_secs(4));
                std::future::ready(Attempt::Retry {
                    error: format!("fault {}", limits.number()),
                    told: (limits.number() == 1).then_some(Duration::from_secs(2)),
                })
            })
            .await;
        assert_eq!(result, Err("fault 3".to_owned()));
        assert_eq!(numbers, [1, 2, 3]);
        let waits = pause.waits();
        assert_eq!(waits.len(), 2);
        assert_eq!(waits[0], Duration::from_secs(2));
        assert!(waits[1] <= Duration::from_millis(200), "{waits:?}");
    }

    #[tokio::test]
    async fn the_executor_stops_at_once_on_done_and_never_waits_past_the_deadline() {
        let pause = VirtualPause::new();
        let retrier = Retrier::new(policy(), &pause);
        let done: Result<u8, String> = retrier
            .run(RETRIED, |_| async { Attempt::Done(Ok(7)) })
            .await;
        assert_eq!(done, Ok(7));
        // A told wait that would end at the deadline is returned, not slept.
        let told: Result<u8, String> = retrier
            .run(RETRIED, |_| async {
                Attempt::Retry {
                    error: "rate limited".to_owned(),
                    told: Some(Duration::from_secs(10)),
                }
            })
            .await;
        assert_eq!(told, Err("rate limited".to_owned()));
        assert!(pause.waits().is_empty());
        // The per-attempt timeout is cut to what is left of the deadline.
        let mut timeouts = Vec::new();
        let _: Result<u8, String> = retrier
            .run(RETRIED, |limits| {
                timeouts.push(limits.timeout());
                std::future::ready(Attempt::Retry {
                    error: "slow".to_owned(),
                    told: Some(Duration::from_secs(7)),
                })
            })
            .await;
        // (The virtual clock runs on from the real now, so a little less than 3 s is left.)
        assert_eq!(timeouts.len(), 2);
        assert_eq!(timeouts[0], Duration::from_secs(4));
        assert!(
            timeouts[1] <= Duration::from_secs(3) && timeouts[1] > Duration::from_millis(2900),
            "{timeouts:?}"
        );
    }

    #[tokio::test]
    async fn again_repeats_at_once_even_past_the_attempts_but_not_past_the_deadline() {
        let pause = VirtualPause::new();
        let retrier = Retrier::new(policy(), &pause);
        let mut calls = 0;
        let result: Result<u8, String> = retrier
            .run(RETRIED, |limits| {
                calls += 1;
                std::future::ready(match limits.number() {
                    1 | 2 => Attempt::Retry {
                        error: "busy".to_owned(),
                        told: Some(Duration::from_secs(1)),
                    },
                    3 => Attempt::Again {
                        error: "refused".to_owned(),
                    },
                    _ => Attempt::Done(Ok(1)),
                })
            })
            .await;
        assert_eq!((result, calls), (Ok(1), 4));
        assert_eq!(pause.waits().len(), 2, "no wait before the repeat");

        let late = VirtualPause::new();
        let retrier = Retrier::new(policy(), &late);
        let result: Result<u8, String> = retrier
            .run(RETRIED, |_| async {
                late.sleep(Duration::from_secs(11)).await;
                Attempt::Again {
                    error: "refused".to_owned(),
                }
            })
            .await;
        assert_eq!(result, Err("refused".to_owned()));
    }
}
