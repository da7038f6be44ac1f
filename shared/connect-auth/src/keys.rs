//! Public keys for signed installs (docs/protocol.md §4): a provider port, an in-memory provider for tests, a bounded
//! cache that also bounds what reaches the key servers (remembered misses, a fetch budget, one fetch
//! per kid at a time), and (feature `http-keys`) the HTTP provider that fetches from Atlassian's key
//! servers.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use jsonwebtoken::DecodingKey;
use moka::future::Cache;
use moka::policy::EvictionPolicy;

use crate::clock::{Clock, SystemClock};
use crate::error::AuthError;

/// A validated key id: safe to append to a key server's URL.
///
/// `^[A-Za-z0-9._/-]{1,200}$`, no `..` segment and no leading `/`, so a kid can neither leave the
/// key server's path nor name another host (the Node framework built URLs from raw kids).
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Kid(String);

impl Kid {
    /// Longest kid accepted.
    pub const MAX_LEN: usize = 200;

    /// Validates a kid from a token header.
    pub fn parse(kid: &str) -> Result<Self, AuthError> {
        let allowed = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '/' | '-');
        let ok = !kid.is_empty()
            && kid.len() <= Self::MAX_LEN
            && kid.chars().all(allowed)
            && !kid.starts_with('/')
            && !kid
                .split('/')
                .any(|segment| segment == ".." || segment == ".");
        if ok {
            Ok(Self(kid.to_owned()))
        } else {
            Err(AuthError::BadKid)
        }
    }

    /// The kid as written.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Kid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Kid({})", self.0)
    }
}

impl fmt::Display for Kid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Why a key could not be had.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    /// Every key server answered that it has no such key.
    #[error("no key for this kid")]
    NotFound,
    /// A key server could not be reached or gave something other than a key: the caller answers 503.
    #[error("{0}")]
    Unavailable(String),
}

impl From<KeyError> for AuthError {
    fn from(err: KeyError) -> Self {
        match err {
            KeyError::NotFound => AuthError::UnknownKey,
            KeyError::Unavailable(reason) => AuthError::KeyUnavailable(reason),
        }
    }
}

/// Finds the RSA public key a signed install names.
#[async_trait]
pub trait KeyProvider: Send + Sync {
    /// The public key for `kid`.
    async fn public_key(&self, kid: &Kid) -> Result<DecodingKey, KeyError>;
}

#[async_trait]
impl<P: KeyProvider + ?Sized> KeyProvider for std::sync::Arc<P> {
    async fn public_key(&self, kid: &Kid) -> Result<DecodingKey, KeyError> {
        (**self).public_key(kid).await
    }
}

/// Parses a PEM public key (SPKI, as Atlassian serves it).
pub fn decoding_key_from_pem(pem: &[u8]) -> Result<DecodingKey, KeyError> {
    DecodingKey::from_rsa_pem(pem).map_err(|_| {
        KeyError::Unavailable("the key server's answer is not an RSA public key".into())
    })
}

/// Keys held in memory, by kid (tests, and the local simulator).
#[derive(Default)]
pub struct InMemoryKeys {
    keys: Mutex<HashMap<String, DecodingKey>>,
}

impl fmt::Debug for InMemoryKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("InMemoryKeys").finish_non_exhaustive()
    }
}

impl InMemoryKeys {
    /// An empty key set.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds (or replaces) the PEM public key for `kid`.
    pub fn insert_pem(&self, kid: &str, pem: &[u8]) -> Result<(), KeyError> {
        let key = decoding_key_from_pem(pem)?;
        self.keys
            .lock()
            .map_err(|_| poisoned())?
            .insert(kid.to_owned(), key);
        Ok(())
    }
}

fn poisoned() -> KeyError {
    KeyError::Unavailable("key cache lock poisoned".into())
}

#[async_trait]
impl KeyProvider for InMemoryKeys {
    async fn public_key(&self, kid: &Kid) -> Result<DecodingKey, KeyError> {
        self.keys
            .lock()
            .map_err(|_| poisoned())?
            .get(kid.as_str())
            .cloned()
            .ok_or(KeyError::NotFound)
    }
}

/// Caches another provider's keys by kid, and bounds what reaches it.
///
/// Anyone can send `POST /installed` with a fresh, well-formed `kid`, unsigned by anything, and
/// each such kid would otherwise cost one or two requests to Atlassian's key servers. So:
///
/// - Keys found are kept, at most `capacity` of them (least recently used out first), without
///   expiry: Atlassian rotates install keys by issuing a new kid, so a key cached under a kid never
///   changes.
/// - Kids the key server does not know ([`KeyError::NotFound`]) are remembered for a while
///   ([`Self::DEFAULT_MISS_TTL_SECONDS`]), at most [`Self::DEFAULT_MISS_CAPACITY`] of them (least
///   recently used out first): the same forged kid is asked about once. Each miss's expiry is
///   checked against the injected clock on every read; moka also drops it after the same time on
///   the monotonic clock.
/// - Lookups that must reach the inner provider (kid in neither cache) are limited to
///   [`Self::DEFAULT_MAX_FETCHES`] per [`Self::DEFAULT_FETCH_WINDOW_SECONDS`] seconds. Past that the
///   answer is [`KeyError::Unavailable`] (503, `Retry-After`) without asking: not `NotFound`, which
///   would refuse a genuine install as forged (401) on the say-so of a flood rather than of the key
///   server. Kids already cached are still answered.
/// - Concurrent lookups of one kid share one fetch (moka's single-flight loading); when the lookup
///   that fetches is dropped (a cancelled request), a waiting one fetches instead.
/// - Other failures are not remembered: a key server that is down is asked again next time (within
///   the budget).
///
/// The bounds are per value, so per process (per warm Lambda instance).
pub struct CachingKeyProvider<P, C = SystemClock> {
    inner: P,
    clock: C,
    limits: Limits,
    keys: Cache<Kid, DecodingKey>,
    /// Kids the key server does not know, and until when (exclusive, on `clock`) that is believed.
    misses: Cache<Kid, i64>,
    budget: Mutex<Budget>,
}

#[derive(Debug, Clone, Copy)]
struct Limits {
    capacity: usize,
    miss_capacity: usize,
    miss_ttl_seconds: i64,
    max_fetches: usize,
    fetch_window_seconds: i64,
}

/// The fetch budget's state.
#[derive(Debug, Default)]
struct Budget {
    /// When each fetch within the current window began.
    fetches: VecDeque<i64>,
    /// True once a lookup was refused for the budget, until the next fetch (logs once per episode).
    throttling: bool,
}

/// A cache of at most `capacity` entries, least recently used out first, expiring after `ttl` when
/// one is given.
fn lru<V: Clone + Send + Sync + 'static>(capacity: usize, ttl: Option<i64>) -> Cache<Kid, V> {
    let builder = Cache::builder()
        .max_capacity(u64::try_from(capacity).unwrap_or(u64::MAX))
        .eviction_policy(EvictionPolicy::lru());
    match ttl {
        Some(seconds) => builder
            .time_to_live(Duration::from_secs(seconds.unsigned_abs().max(1)))
            .build(),
        None => builder.build(),
    }
}

impl<P: fmt::Debug, C: fmt::Debug> fmt::Debug for CachingKeyProvider<P, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CachingKeyProvider")
            .field("inner", &self.inner)
            .field("clock", &self.clock)
            .field("limits", &self.limits)
            .finish_non_exhaustive()
    }
}

impl<P> CachingKeyProvider<P> {
    /// A default bound: a handful of live install keys exist at a time.
    pub const DEFAULT_CAPACITY: usize = 64;
    /// How long a kid the key server does not know is remembered as unknown: 5 minutes.
    pub const DEFAULT_MISS_TTL_SECONDS: i64 = 5 * 60;
    /// How many unknown kids are remembered at most.
    pub const DEFAULT_MISS_CAPACITY: usize = 1024;
    /// Lookups that reach the key server, at most, per [`Self::DEFAULT_FETCH_WINDOW_SECONDS`].
    pub const DEFAULT_MAX_FETCHES: usize = 10;
    /// The window of the fetch budget, in seconds.
    pub const DEFAULT_FETCH_WINDOW_SECONDS: i64 = 10;

    /// Caches `inner`'s keys, at most `capacity` of them (at least one), with the default miss
    /// memory and fetch budget, on the system clock.
    pub fn new(inner: P, capacity: usize) -> Self {
        Self::with_clock(inner, capacity, SystemClock)
    }
}

impl<P, C: Clock> CachingKeyProvider<P, C> {
    /// The same, reading time from `clock` (the miss memory and the fetch budget).
    pub fn with_clock(inner: P, capacity: usize, clock: C) -> Self {
        let limits = Limits {
            capacity: capacity.max(1),
            miss_capacity: CachingKeyProvider::<()>::DEFAULT_MISS_CAPACITY,
            miss_ttl_seconds: CachingKeyProvider::<()>::DEFAULT_MISS_TTL_SECONDS,
            max_fetches: CachingKeyProvider::<()>::DEFAULT_MAX_FETCHES,
            fetch_window_seconds: CachingKeyProvider::<()>::DEFAULT_FETCH_WINDOW_SECONDS,
        };
        Self {
            inner,
            clock,
            keys: lru(limits.capacity, None),
            misses: lru(limits.miss_capacity, Some(limits.miss_ttl_seconds)),
            limits,
            budget: Mutex::new(Budget::default()),
        }
    }

    /// Remembers unknown kids for `seconds` (0: not at all), at most `capacity` of them (at least
    /// one).
    pub fn miss_memory(mut self, seconds: i64, capacity: usize) -> Self {
        self.limits.miss_ttl_seconds = seconds.max(0);
        self.limits.miss_capacity = capacity.max(1);
        self.misses = lru(
            self.limits.miss_capacity,
            Some(self.limits.miss_ttl_seconds),
        );
        self
    }

    /// Lets at most `fetches` lookups (at least one) reach the inner provider per `seconds` (at
    /// least one).
    pub fn fetch_budget(mut self, fetches: usize, seconds: i64) -> Self {
        self.limits.max_fetches = fetches.max(1);
        self.limits.fetch_window_seconds = seconds.max(1);
        self
    }

    /// How many keys are cached now.
    pub fn cached(&self) -> usize {
        usize::try_from(self.keys.entry_count()).unwrap_or(usize::MAX)
    }

    /// How many unknown kids are remembered now (those whose time is up are not counted).
    pub fn remembered_misses(&self) -> usize {
        let now = self.clock.now_unix();
        self.misses.iter().filter(|(_, until)| *until > now).count()
    }

    async fn is_known_miss(&self, kid: &Kid) -> bool {
        let now = self.clock.now_unix();
        self.misses.get(kid).await.is_some_and(|until| until > now)
    }

    async fn remember_miss(&self, kid: &Kid) {
        let until = self
            .clock
            .now_unix()
            .saturating_add(self.limits.miss_ttl_seconds);
        self.misses.insert(kid.clone(), until).await;
        // Evicts past the bound now rather than at moka's next maintenance (misses are budgeted).
        self.misses.run_pending_tasks().await;
    }

    /// Takes one fetch from the budget, or says there is none left in this window.
    fn take_fetch(&self) -> Result<(), KeyError> {
        let now = self.clock.now_unix();
        let mut budget = self.budget.lock().unwrap_or_else(PoisonError::into_inner);
        let window = self.limits.fetch_window_seconds;
        while budget
            .fetches
            .front()
            .is_some_and(|began| began.saturating_add(window) <= now)
        {
            budget.fetches.pop_front();
        }
        if budget.fetches.len() >= self.limits.max_fetches {
            if !budget.throttling {
                budget.throttling = true;
                tracing::warn!(
                    max_fetches = self.limits.max_fetches,
                    window_seconds = window,
                    "install key lookups over budget: answering unavailable without fetching"
                );
            }
            return Err(KeyError::Unavailable(
                "too many install key lookups, try again shortly".into(),
            ));
        }
        budget.throttling = false;
        budget.fetches.push_back(now);
        Ok(())
    }
}

impl<P: KeyProvider, C: Clock> CachingKeyProvider<P, C> {
    /// The one fetch of a kid that concurrent lookups share.
    async fn fetch(&self, kid: &Kid) -> Result<DecodingKey, KeyError> {
        // A lookup of this kid that just finished may have learned that it is unknown.
        if self.is_known_miss(kid).await {
            return Err(KeyError::NotFound);
        }
        self.take_fetch()?;
        let result = self.inner.public_key(kid).await;
        if matches!(result, Err(KeyError::NotFound)) && self.limits.miss_ttl_seconds > 0 {
            self.remember_miss(kid).await;
        }
        result
    }
}

#[async_trait]
impl<P: KeyProvider, C: Clock> KeyProvider for CachingKeyProvider<P, C> {
    async fn public_key(&self, kid: &Kid) -> Result<DecodingKey, KeyError> {
        if let Some(key) = self.keys.get(kid).await {
            return Ok(key);
        }
        if self.is_known_miss(kid).await {
            return Err(KeyError::NotFound);
        }
        let result = self
            .keys
            .try_get_with_by_ref(kid, self.fetch(kid))
            .await
            .map_err(|error| (*error).clone());
        if result.is_ok() {
            // Evicts past the bound now rather than at moka's next maintenance.
            self.keys.run_pending_tasks().await;
        }
        result
    }
}

#[cfg(feature = "http-keys")]
pub use http::HttpKeyProvider;

#[cfg(feature = "http-keys")]
mod http {
    use std::time::Duration;

    use super::{KeyError, KeyProvider, Kid, decoding_key_from_pem};
    use async_trait::async_trait;
    use jsonwebtoken::DecodingKey;

    /// The most a key server may send: a PEM public key is under 1 KiB.
    const MAX_KEY_BYTES: usize = 16 * 1024;

    /// How long one key fetch may take in all, inside an install callback.
    const KEY_FETCH_TIMEOUT: Duration = Duration::from_secs(5);

    /// Fetches install keys over HTTPS from `<base>/<kid>`, trying each base in turn.
    #[derive(Debug, Clone)]
    pub struct HttpKeyProvider {
        client: reqwest::Client,
        bases: Vec<String>,
    }

    impl HttpKeyProvider {
        /// Atlassian's install key server (docs/protocol.md §4).
        pub const ATLASSIAN: &'static str = "https://connect-install-keys.atlassian.com";
        /// Atlassian's regional mirror, asked when the first server fails.
        pub const ATLASSIAN_FALLBACK: &'static str =
            "https://asap-distribution.us-west-2.prod.atl-asap.net";

        /// Atlassian's servers: the main one, then the mirror (with the kid too, unlike the Node
        /// framework's fallback).
        pub fn atlassian(client: reqwest::Client) -> Self {
            Self::with_bases(client, [Self::ATLASSIAN, Self::ATLASSIAN_FALLBACK])
        }

        /// A configured key server, used alone: tests and staging must never fall back to a real host.
        pub fn configured(client: reqwest::Client, base_url: &str) -> Self {
            Self::with_bases(client, [base_url])
        }

        fn with_bases<'a>(
            client: reqwest::Client,
            bases: impl IntoIterator<Item = &'a str>,
        ) -> Self {
            Self {
                client,
                bases: bases
                    .into_iter()
                    .map(|b| b.trim_end_matches('/').to_owned())
                    .collect(),
            }
        }

        /// A client with the timeouts a key fetch should have inside an install callback (each
        /// fetch is also bounded by [`KEY_FETCH_TIMEOUT`] on its own, whatever client it uses).
        /// Redirects are not followed: a key is trusted because it came over TLS from the key
        /// server named, not from wherever that server points.
        pub fn default_client() -> Result<reqwest::Client, KeyError> {
            reqwest::Client::builder()
                .connect_timeout(Duration::from_secs(3))
                .timeout(KEY_FETCH_TIMEOUT)
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .map_err(|e| KeyError::Unavailable(format!("HTTP client: {e}")))
        }

        async fn fetch(&self, base: &str, kid: &Kid) -> Result<DecodingKey, KeyError> {
            let url = format!("{base}/{kid}");
            let mut response = self
                .client
                .get(&url)
                // Per request, so that a client shared with other work bounds it too.
                .timeout(KEY_FETCH_TIMEOUT)
                .send()
                .await
                .map_err(|e| KeyError::Unavailable(format!("{base}: {}", e.without_url())))?;
            match response.status().as_u16() {
                200 => {}
                404 => return Err(KeyError::NotFound),
                status => {
                    return Err(KeyError::Unavailable(format!(
                        "{base} answered HTTP {status}"
                    )));
                }
            }
            let mut body = Vec::new();
            while let Some(chunk) = response
                .chunk()
                .await
                .map_err(|e| KeyError::Unavailable(format!("{base}: {}", e.without_url())))?
            {
                if body.len() + chunk.len() > MAX_KEY_BYTES {
                    return Err(KeyError::Unavailable(format!(
                        "{base}: key larger than expected"
                    )));
                }
                body.extend_from_slice(&chunk);
            }
            decoding_key_from_pem(&body)
        }
    }

    #[async_trait]
    impl KeyProvider for HttpKeyProvider {
        async fn public_key(&self, kid: &Kid) -> Result<DecodingKey, KeyError> {
            let mut last = KeyError::NotFound;
            let mut all_not_found = true;
            for base in &self.bases {
                match self.fetch(base, kid).await {
                    Ok(key) => return Ok(key),
                    Err(err) => {
                        tracing::warn!(key_server = %base, kid = %kid, reason = %err, "install key fetch failed");
                        all_not_found &= err == KeyError::NotFound;
                        last = err;
                    }
                }
            }
            // Unknown only when every server says so; otherwise a server is down and the install
            // must be answered 503, not refused as forged.
            if all_not_found {
                Err(KeyError::NotFound)
            } else {
                Err(last)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kids_that_could_leave_the_key_path_are_refused() {
        for bad in [
            "",
            "../x",
            "a/../b",
            "a/./b",
            "/abs",
            "https://evil.example/k",
            "a b",
            "a?b",
            "a%2e",
        ] {
            assert_eq!(Kid::parse(bad), Err(AuthError::BadKid), "{bad}");
        }
        assert_eq!(Kid::parse(&"k".repeat(201)), Err(AuthError::BadKid));
        for good in ["0e50fccb-239d-4991-a5db-dc850ba3f236", "prod/key.1", "a..b"] {
            assert!(Kid::parse(good).is_ok(), "{good}");
        }
    }
}
