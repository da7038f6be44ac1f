//! Public keys for signed installs (§4): a provider port, an in-memory provider for tests, a bounded
//! cache that also bounds what reaches the key servers (remembered misses, a fetch budget, one fetch
//! per kid at a time), and (feature `http-keys`) the HTTP provider that fetches from Atlassian's key
//! servers.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll, Waker};

use async_trait::async_trait;
use jsonwebtoken::DecodingKey;

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
/// - Keys found are kept, at most `capacity` of them (oldest out first). Atlassian rotates install
///   keys by issuing a new kid, so a key cached under a kid never changes.
/// - Kids the key server does not know ([`KeyError::NotFound`]) are remembered for a while
///   ([`Self::DEFAULT_MISS_TTL_SECONDS`]), at most [`Self::DEFAULT_MISS_CAPACITY`] of them: the
///   same forged kid is asked about once.
/// - Lookups that must reach the inner provider (kid in neither cache) are limited to
///   [`Self::DEFAULT_MAX_FETCHES`] per [`Self::DEFAULT_FETCH_WINDOW_SECONDS`] seconds. Past that the
///   answer is [`KeyError::Unavailable`] (503, `Retry-After`) without asking: not `NotFound`, which
///   would refuse a genuine install as forged (401) on the say-so of a flood rather than of the key
///   server. Kids already cached are still answered.
/// - Concurrent lookups of one kid share one fetch.
/// - Other failures are not remembered: a key server that is down is asked again next time (within
///   the budget).
///
/// The bounds are per value, so per process (per warm Lambda instance).
pub struct CachingKeyProvider<P, C = SystemClock> {
    inner: P,
    clock: C,
    limits: Limits,
    state: Mutex<CacheState>,
}

#[derive(Debug, Clone, Copy)]
struct Limits {
    capacity: usize,
    miss_capacity: usize,
    miss_ttl_seconds: i64,
    max_fetches: usize,
    fetch_window_seconds: i64,
}

#[derive(Default)]
struct CacheState {
    keys: HashMap<Kid, DecodingKey>,
    order: VecDeque<Kid>,
    /// Kids the key server does not know, and until when (exclusive) that is believed.
    misses: HashMap<Kid, i64>,
    /// The same, oldest first; an entry whose time no longer matches `misses` is stale.
    miss_order: VecDeque<(Kid, i64)>,
    /// When each fetch within the current window began.
    fetches: VecDeque<i64>,
    /// True once a lookup was refused for the budget, until the next fetch (logs once per episode).
    throttling: bool,
    /// Fetches under way, by kid, for concurrent lookups of the same kid to wait on.
    flights: HashMap<Kid, Arc<Flight>>,
}

impl CacheState {
    fn remember_key(&mut self, kid: &Kid, key: &DecodingKey, capacity: usize) {
        if self.keys.contains_key(kid) {
            return;
        }
        while self.keys.len() >= capacity {
            match self.order.pop_front() {
                Some(oldest) => self.keys.remove(&oldest),
                None => break,
            };
        }
        self.order.push_back(kid.clone());
        self.keys.insert(kid.clone(), key.clone());
    }

    fn is_known_miss(&self, kid: &Kid, now: i64) -> bool {
        self.misses.get(kid).is_some_and(|until| *until > now)
    }

    fn forget_miss(&mut self, kid: &Kid, until: i64) {
        if self.misses.get(kid) == Some(&until) {
            self.misses.remove(kid);
        }
    }

    fn remember_miss(&mut self, kid: &Kid, now: i64, limits: &Limits) {
        // Every miss lives equally long, so the queue is in expiry order.
        while self
            .miss_order
            .front()
            .is_some_and(|(_, until)| *until <= now)
        {
            if let Some((old, until)) = self.miss_order.pop_front() {
                self.forget_miss(&old, until);
            }
        }
        while self.misses.len() >= limits.miss_capacity {
            match self.miss_order.pop_front() {
                Some((old, until)) => self.forget_miss(&old, until),
                None => break,
            }
        }
        let until = now.saturating_add(limits.miss_ttl_seconds);
        self.misses.insert(kid.clone(), until);
        self.miss_order.push_back((kid.clone(), until));
    }

    /// Takes one fetch from the budget, or says there is none left in this window.
    fn take_fetch(&mut self, now: i64, limits: &Limits) -> bool {
        while self
            .fetches
            .front()
            .is_some_and(|began| began.saturating_add(limits.fetch_window_seconds) <= now)
        {
            self.fetches.pop_front();
        }
        if self.fetches.len() >= limits.max_fetches {
            return false;
        }
        self.fetches.push_back(now);
        true
    }
}

/// One fetch under way, shared by every concurrent lookup of its kid.
#[derive(Default)]
struct Flight {
    state: Mutex<FlightState>,
}

#[derive(Default)]
struct FlightState {
    outcome: Option<Outcome>,
    wakers: Vec<Waker>,
}

#[derive(Clone)]
enum Outcome {
    /// The fetch's result.
    Done(Result<DecodingKey, KeyError>),
    /// The lookup that was fetching was dropped before it finished: look again.
    Abandoned,
}

impl Flight {
    fn finish(&self, outcome: Outcome) {
        let wakers = {
            let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
            state.outcome = Some(outcome);
            std::mem::take(&mut state.wakers)
        };
        for waker in wakers {
            waker.wake();
        }
    }
}

/// Waits for a flight's outcome.
struct Landing<'a> {
    flight: &'a Flight,
}

impl Future for Landing<'_> {
    type Output = Outcome;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Outcome> {
        let mut state = self
            .flight
            .state
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(outcome) = &state.outcome {
            return Poll::Ready(outcome.clone());
        }
        if !state.wakers.iter().any(|w| w.will_wake(cx.waker())) {
            state.wakers.push(cx.waker().clone());
        }
        Poll::Pending
    }
}

/// Held by the lookup that fetches: if it is dropped mid-fetch (a cancelled request), the waiting
/// lookups are told to look again rather than wait forever.
struct Pilot<'a> {
    state: &'a Mutex<CacheState>,
    kid: &'a Kid,
    flight: Arc<Flight>,
    landed: bool,
}

impl Pilot<'_> {
    fn ground(&self) {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        if state
            .flights
            .get(self.kid)
            .is_some_and(|f| Arc::ptr_eq(f, &self.flight))
        {
            state.flights.remove(self.kid);
        }
    }
}

impl Drop for Pilot<'_> {
    fn drop(&mut self) {
        if !self.landed {
            self.ground();
            self.flight.finish(Outcome::Abandoned);
        }
    }
}

/// What a lookup does after looking at the caches.
enum Step {
    Answer(Result<DecodingKey, KeyError>),
    Wait(Arc<Flight>),
    Fetch(Arc<Flight>),
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
        Self {
            inner,
            clock,
            limits: Limits {
                capacity: capacity.max(1),
                miss_capacity: CachingKeyProvider::<()>::DEFAULT_MISS_CAPACITY,
                miss_ttl_seconds: CachingKeyProvider::<()>::DEFAULT_MISS_TTL_SECONDS,
                max_fetches: CachingKeyProvider::<()>::DEFAULT_MAX_FETCHES,
                fetch_window_seconds: CachingKeyProvider::<()>::DEFAULT_FETCH_WINDOW_SECONDS,
            },
            state: Mutex::new(CacheState::default()),
        }
    }

    /// Remembers unknown kids for `seconds` (0: not at all), at most `capacity` of them (at least
    /// one).
    pub fn miss_memory(mut self, seconds: i64, capacity: usize) -> Self {
        self.limits.miss_ttl_seconds = seconds.max(0);
        self.limits.miss_capacity = capacity.max(1);
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
        self.state.lock().map(|c| c.keys.len()).unwrap_or(0)
    }

    /// How many unknown kids are remembered now (expired ones included until they are swept).
    pub fn remembered_misses(&self) -> usize {
        self.state.lock().map(|c| c.misses.len()).unwrap_or(0)
    }

    fn step(&self, kid: &Kid) -> Result<Step, KeyError> {
        let now = self.clock.now_unix();
        let mut state = self.state.lock().map_err(|_| poisoned())?;
        if let Some(key) = state.keys.get(kid) {
            return Ok(Step::Answer(Ok(key.clone())));
        }
        if state.is_known_miss(kid, now) {
            return Ok(Step::Answer(Err(KeyError::NotFound)));
        }
        if let Some(flight) = state.flights.get(kid) {
            return Ok(Step::Wait(Arc::clone(flight)));
        }
        if !state.take_fetch(now, &self.limits) {
            if !state.throttling {
                state.throttling = true;
                tracing::warn!(
                    max_fetches = self.limits.max_fetches,
                    window_seconds = self.limits.fetch_window_seconds,
                    "install key lookups over budget: answering unavailable without fetching"
                );
            }
            return Ok(Step::Answer(Err(KeyError::Unavailable(
                "too many install key lookups, try again shortly".into(),
            ))));
        }
        state.throttling = false;
        let flight = Arc::new(Flight::default());
        state.flights.insert(kid.clone(), Arc::clone(&flight));
        Ok(Step::Fetch(flight))
    }
}

impl<P: KeyProvider, C: Clock> CachingKeyProvider<P, C> {
    async fn fetch(&self, kid: &Kid, flight: Arc<Flight>) -> Result<DecodingKey, KeyError> {
        let mut pilot = Pilot {
            state: &self.state,
            kid,
            flight,
            landed: false,
        };
        let result = self.inner.public_key(kid).await;
        let now = self.clock.now_unix();
        {
            let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
            match &result {
                Ok(key) => state.remember_key(kid, key, self.limits.capacity),
                Err(KeyError::NotFound) if self.limits.miss_ttl_seconds > 0 => {
                    state.remember_miss(kid, now, &self.limits);
                }
                Err(_) => {}
            }
        }
        pilot.ground();
        pilot.flight.finish(Outcome::Done(result.clone()));
        pilot.landed = true;
        result
    }
}

#[async_trait]
impl<P: KeyProvider, C: Clock> KeyProvider for CachingKeyProvider<P, C> {
    async fn public_key(&self, kid: &Kid) -> Result<DecodingKey, KeyError> {
        loop {
            let flight = match self.step(kid)? {
                Step::Answer(answer) => return answer,
                Step::Fetch(flight) => return self.fetch(kid, flight).await,
                Step::Wait(flight) => flight,
            };
            match (Landing { flight: &flight }).await {
                Outcome::Done(result) => return result,
                Outcome::Abandoned => {}
            }
        }
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

    /// Fetches install keys over HTTPS from `<base>/<kid>`, trying each base in turn.
    #[derive(Debug, Clone)]
    pub struct HttpKeyProvider {
        client: reqwest::Client,
        bases: Vec<String>,
    }

    impl HttpKeyProvider {
        /// Atlassian's install key server (§4).
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

        /// A client with the timeouts a key fetch should have inside an install callback.
        pub fn default_client() -> Result<reqwest::Client, KeyError> {
            reqwest::Client::builder()
                .connect_timeout(Duration::from_secs(3))
                .timeout(Duration::from_secs(5))
                .build()
                .map_err(|e| KeyError::Unavailable(format!("HTTP client: {e}")))
        }

        async fn fetch(&self, base: &str, kid: &Kid) -> Result<DecodingKey, KeyError> {
            let url = format!("{base}/{kid}");
            let mut response = self
                .client
                .get(&url)
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
