//! Per-user request limits: fixed windows counted per tenant, subject and window.

use std::collections::{BTreeSet, HashMap};

use sha2::{Digest, Sha256};

use crate::ids::ClientKey;

/// What [`crate::RateLimits::take`] decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RateDecision {
    /// The request may go ahead; `remaining` more fit in this window.
    Allowed {
        /// Requests left in the window after this one.
        remaining: u32,
    },
    /// The window is used up; the next one starts in `retry_after_seconds` (at least 1, at most
    /// the window), which is what a `Retry-After` header says.
    Limited {
        /// Seconds until the next window.
        retry_after_seconds: i64,
    },
}

impl RateDecision {
    /// Whether the request may go ahead.
    pub fn is_allowed(&self) -> bool {
        matches!(self, Self::Allowed { .. })
    }
}

/// The window a request falls in, for one subject: what every adapter keys its counter by.
///
/// The subject (an accountId) is kept only as `hex(SHA-256(subject))`, so no store key or row holds
/// it in clear. Windows are aligned to multiples of their length in unix time; the length is part of
/// the key, so two limits with different windows on one subject never share a counter.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct RateWindow {
    subject_hash: String,
    seconds: i64,
    start: i64,
}

impl RateWindow {
    /// The window of `subject` that contains `now`; `window_seconds` below 1 counts as 1.
    pub fn new(subject: &str, window_seconds: i64, now: i64) -> Self {
        let seconds = window_seconds.max(1);
        Self {
            subject_hash: hex::encode(Sha256::digest(subject.as_bytes())),
            seconds,
            start: now.div_euclid(seconds).saturating_mul(seconds),
        }
    }

    /// `hex(SHA-256(subject))`, 64 lower-case hex digits.
    pub fn subject_hash(&self) -> &str {
        &self.subject_hash
    }

    /// The window's length in seconds (at least 1).
    pub fn seconds(&self) -> i64 {
        self.seconds
    }

    /// First second of the window (unix seconds).
    pub fn start(&self) -> i64 {
        self.start
    }

    /// First second after the window.
    pub fn end(&self) -> i64 {
        self.start.saturating_add(self.seconds)
    }

    /// The decision once this request made the window's count `count` (this request included).
    pub fn decide(&self, count: u64, limit: u32, now: i64) -> RateDecision {
        if count <= u64::from(limit) {
            let remaining = u64::from(limit).saturating_sub(count);
            RateDecision::Allowed {
                remaining: u32::try_from(remaining).unwrap_or(u32::MAX),
            }
        } else {
            RateDecision::Limited {
                retry_after_seconds: self.end().saturating_sub(now).clamp(1, self.seconds),
            }
        }
    }
}

impl std::fmt::Debug for RateWindow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RateWindow")
            .field("subject_hash", &self.subject_hash)
            .field("seconds", &self.seconds)
            .field("start", &self.start)
            .finish()
    }
}

type CounterKey = (ClientKey, RateWindow);

/// Fixed-window counters in memory, bounded: the rate limits of [`crate::MemoryStore`] and of the
/// embedded store's one process.
///
/// Each take first drops the windows that have ended. If `capacity` live windows are counted
/// already, the one that ends soonest is dropped to make room: a flood of distinct subjects can
/// only reset the oldest counters early, never lock anyone out or grow memory without bound.
#[derive(Debug)]
pub struct RateCounters {
    counts: HashMap<CounterKey, u64>,
    /// The same keys by window end, for sweeping and eviction.
    by_end: BTreeSet<(i64, ClientKey, String, i64, i64)>,
    capacity: usize,
}

impl Default for RateCounters {
    fn default() -> Self {
        Self::with_capacity(Self::DEFAULT_CAPACITY)
    }
}

impl RateCounters {
    /// Live windows kept by default (a few MiB at most).
    pub const DEFAULT_CAPACITY: usize = 100_000;

    /// Counters that keep at most `capacity` (at least 1) live windows.
    pub fn with_capacity(capacity: usize) -> Self {
        Self {
            counts: HashMap::new(),
            by_end: BTreeSet::new(),
            capacity: capacity.max(1),
        }
    }

    /// Windows counted now (ended ones may still be in until the next take).
    pub fn len(&self) -> usize {
        self.counts.len()
    }

    /// Whether nothing is counted.
    pub fn is_empty(&self) -> bool {
        self.counts.is_empty()
    }

    /// Counts one request of `subject` and decides it.
    pub fn take(
        &mut self,
        client_key: &ClientKey,
        subject: &str,
        limit: u32,
        window_seconds: i64,
        now: i64,
    ) -> RateDecision {
        let window = RateWindow::new(subject, window_seconds, now);
        self.sweep(now);
        let key = (client_key.clone(), window.clone());
        if !self.counts.contains_key(&key) {
            while self.counts.len() >= self.capacity {
                let Some(oldest) = self.by_end.pop_first() else {
                    break;
                };
                self.counts.remove(&unindex(oldest));
            }
            self.by_end.insert(index(&key));
        }
        let count = self.counts.entry(key).or_insert(0);
        *count = count.saturating_add(1);
        window.decide(*count, limit, now)
    }

    fn sweep(&mut self, now: i64) {
        while self.by_end.first().is_some_and(|first| first.0 <= now) {
            if let Some(ended) = self.by_end.pop_first() {
                self.counts.remove(&unindex(ended));
            }
        }
    }
}

fn index((client_key, window): &CounterKey) -> (i64, ClientKey, String, i64, i64) {
    (
        window.end(),
        client_key.clone(),
        window.subject_hash.clone(),
        window.seconds,
        window.start,
    )
}

fn unindex(
    (_, client_key, subject_hash, seconds, start): (i64, ClientKey, String, i64, i64),
) -> CounterKey {
    (
        client_key,
        RateWindow {
            subject_hash,
            seconds,
            start,
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ck(s: &str) -> ClientKey {
        ClientKey::parse(s).unwrap()
    }

    #[test]
    fn a_window_is_aligned_and_keeps_only_a_hash_of_its_subject() {
        let w = RateWindow::new("557058:user", 60, 1_000_030);
        assert_eq!(
            (w.start(), w.end(), w.seconds()),
            (1_000_020, 1_000_080, 60)
        );
        assert_eq!(w.subject_hash().len(), 64);
        assert!(!format!("{w:?}").contains("557058"));
        // sha256("abc")
        assert_eq!(
            RateWindow::new("abc", 1, 0).subject_hash(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(RateWindow::new("a", 0, 7).seconds(), 1);
        assert_eq!(RateWindow::new("a", 10, -1).start(), -10);
    }

    #[test]
    fn decisions_count_down_then_say_when_to_retry() {
        let w = RateWindow::new("u", 60, 120);
        assert_eq!(w.decide(1, 2, 120), RateDecision::Allowed { remaining: 1 });
        assert_eq!(w.decide(2, 2, 120), RateDecision::Allowed { remaining: 0 });
        assert_eq!(
            w.decide(3, 2, 150),
            RateDecision::Limited {
                retry_after_seconds: 30
            }
        );
        assert_eq!(
            w.decide(1, 0, 179),
            RateDecision::Limited {
                retry_after_seconds: 1
            }
        );
    }

    #[test]
    fn counters_stay_bounded_and_drop_ended_windows() {
        let mut c = RateCounters::with_capacity(3);
        for i in 0..10 {
            assert!(c.take(&ck("a"), &format!("s{i}"), 1, 60, 0).is_allowed());
            assert!(c.len() <= 3);
        }
        // The newest subject is still counted; others made room for it.
        assert!(!c.take(&ck("a"), "s9", 1, 60, 0).is_allowed());
        c.take(&ck("a"), "late", 1, 60, 60);
        assert_eq!(c.len(), 1, "the windows that ended at 60 are gone");
    }
}
