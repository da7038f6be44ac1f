//! Forge's signing keys: a JWKS source port, the bounded cache by kid that shields the JWKS from
//! forged kids, and (feature `http`) the HTTP source.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use connect_auth::Clock;
use futures::lock::Mutex;
use jsonwebtoken::DecodingKey;
use jsonwebtoken::jwk::{AlgorithmParameters, Jwk, JwkSet, KeyAlgorithm, PublicKeyUse};
use moka::future::Cache;
use moka::policy::EvictionPolicy;

/// Forge's production JWKS, used when `FORGE_JWKS_URL` is unset.
pub const FORGE_JWKS_URL: &str = "https://forge.cdn.prod.atlassian-dev.net/.well-known/jwks.json";

/// The environment variable that overrides [`FORGE_JWKS_URL`].
pub const FORGE_JWKS_URL_VAR: &str = "FORGE_JWKS_URL";

/// The JWKS could not be had (unreachable, an error status, too large, not a JWKS). The reason is
/// for logs; it never reaches a caller.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("JWKS unavailable: {0}")]
pub struct JwksUnavailable(pub String);

/// Where the JWKS comes from: fetches the whole set.
#[async_trait]
pub trait JwksSource: Send + Sync {
    /// The current key set.
    async fn fetch(&self) -> Result<JwkSet, JwksUnavailable>;
}

#[async_trait]
impl<S: JwksSource + ?Sized> JwksSource for Arc<S> {
    async fn fetch(&self) -> Result<JwkSet, JwksUnavailable> {
        (**self).fetch().await
    }
}

/// Reads a JWKS document, keeping the keys this crate can read and skipping the others (a key of an
/// unknown type or algorithm must not hide the rest of the set).
pub fn parse_jwks(body: &[u8]) -> Result<JwkSet, JwksUnavailable> {
    #[derive(serde::Deserialize)]
    struct Raw {
        keys: Vec<serde_json::Value>,
    }
    let raw: Raw = serde_json::from_slice(body)
        .map_err(|_| JwksUnavailable("the answer is not a JWKS document".into()))?;
    let keys = raw
        .keys
        .into_iter()
        .filter_map(|key| serde_json::from_value::<Jwk>(key).ok())
        .collect();
    Ok(JwkSet { keys })
}

/// The RS256 verification key a JWK describes, with its kid, or `None` for any other key (no kid,
/// not RSA, another algorithm, an encryption key).
fn rs256_key(jwk: &Jwk) -> Option<(String, DecodingKey)> {
    let kid = jwk.common.key_id.as_ref()?;
    if !matches!(jwk.algorithm, AlgorithmParameters::RSA(_)) {
        return None;
    }
    if !matches!(jwk.common.key_algorithm, None | Some(KeyAlgorithm::RS256)) {
        return None;
    }
    if !matches!(
        jwk.common.public_key_use,
        None | Some(PublicKeyUse::Signature)
    ) {
        return None;
    }
    let key = DecodingKey::from_jwk(jwk).ok()?;
    Some((kid.clone(), key))
}

/// Why a key could not be had.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum KeyLookup {
    Unknown,
    Unavailable,
}

/// When the JWKS was last asked, and whether that failed.
#[derive(Debug, Default)]
struct Refresh {
    last_attempt: Option<i64>,
    last_failed: bool,
}

/// Forge's keys by kid, bounded, refreshed from the source on an unknown kid at most once per
/// interval.
///
/// - At most `capacity` keys are kept (least recently used out first).
/// - A kid not cached triggers a fetch of the whole set only when the last fetch began at least
///   `refresh_interval_seconds` ago (on the injected clock); otherwise it is refused as unknown
///   (or as unavailable, when that last fetch failed) without a fetch. So forged kids cost Forge's
///   JWKS at most one request per interval, per cache.
/// - Concurrent lookups of kids not cached wait for one another: one fetch serves them all.
/// - A successful fetch replaces the cached set (a key Forge withdrew stops being trusted); a
///   failed one keeps it, so kids already cached are still served while the JWKS is down.
pub struct KeyCache<S, C> {
    source: S,
    clock: C,
    refresh_interval_seconds: i64,
    keys: Cache<String, DecodingKey>,
    refresh: Mutex<Refresh>,
}

impl<S: fmt::Debug, C: fmt::Debug> fmt::Debug for KeyCache<S, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyCache")
            .field("source", &self.source)
            .field("clock", &self.clock)
            .field("refresh_interval_seconds", &self.refresh_interval_seconds)
            .finish_non_exhaustive()
    }
}

impl<S: JwksSource, C: Clock> KeyCache<S, C> {
    /// Keys kept at most, by default: Forge publishes a handful at a time.
    pub const DEFAULT_CAPACITY: usize = 64;
    /// Fetches on unknown kids at most once per this many seconds, by default.
    pub const DEFAULT_REFRESH_INTERVAL_SECONDS: i64 = 60;

    pub(crate) fn new(source: S, clock: C, capacity: usize, refresh_interval_seconds: i64) -> Self {
        let keys = Cache::builder()
            .max_capacity(u64::try_from(capacity.max(1)).unwrap_or(u64::MAX))
            .eviction_policy(EvictionPolicy::lru())
            // A cached key is dropped after a day without use, refreshed if it comes back.
            .time_to_idle(Duration::from_secs(24 * 60 * 60))
            .build();
        Self {
            source,
            clock,
            refresh_interval_seconds: refresh_interval_seconds.max(0),
            keys,
            refresh: Mutex::new(Refresh::default()),
        }
    }

    /// Gives the source back (to rebuild the cache with other bounds).
    pub(crate) fn into_source(self) -> S {
        self.source
    }

    /// How many keys are cached now.
    pub(crate) fn cached(&self) -> usize {
        usize::try_from(self.keys.entry_count()).unwrap_or(usize::MAX)
    }

    /// The key for `kid`.
    pub(crate) async fn key(&self, kid: &str) -> Result<DecodingKey, KeyLookup> {
        if let Some(key) = self.keys.get(kid).await {
            return Ok(key);
        }
        // One refresh at a time: lookups that arrive during a fetch wait here, then find its keys.
        let mut refresh = self.refresh.lock().await;
        if let Some(key) = self.keys.get(kid).await {
            return Ok(key);
        }
        let now = self.clock.now_unix();
        if refresh
            .last_attempt
            .is_some_and(|last| now < last.saturating_add(self.refresh_interval_seconds))
        {
            return Err(if refresh.last_failed {
                KeyLookup::Unavailable
            } else {
                KeyLookup::Unknown
            });
        }
        refresh.last_attempt = Some(now);
        match self.source.fetch().await {
            Ok(set) => {
                refresh.last_failed = false;
                self.replace(&set).await;
                self.keys.get(kid).await.ok_or(KeyLookup::Unknown)
            }
            Err(err) => {
                refresh.last_failed = true;
                tracing::warn!(reason = %err, "Forge JWKS fetch failed");
                Err(KeyLookup::Unavailable)
            }
        }
    }

    async fn replace(&self, set: &JwkSet) {
        let fresh: Vec<(String, DecodingKey)> = set.keys.iter().filter_map(rs256_key).collect();
        self.keys.invalidate_all();
        for (kid, key) in fresh {
            self.keys.insert(kid, key).await;
        }
        // Applies the bound and the invalidation now rather than at moka's next maintenance.
        self.keys.run_pending_tasks().await;
    }
}

#[cfg(feature = "http")]
pub use http::HttpJwksSource;

#[cfg(feature = "http")]
mod http {
    use std::time::Duration;

    use async_trait::async_trait;
    use jsonwebtoken::jwk::JwkSet;

    use super::{FORGE_JWKS_URL, FORGE_JWKS_URL_VAR, JwksSource, JwksUnavailable, parse_jwks};

    /// Fetches the JWKS over HTTP(S): HTTP 200 only, no redirects, a bounded body, bounded time.
    #[derive(Debug, Clone)]
    pub struct HttpJwksSource {
        client: reqwest::Client,
        url: String,
    }

    impl HttpJwksSource {
        /// The most a JWKS may weigh: 256 KiB (Forge's is a few KiB).
        pub const MAX_BODY_BYTES: usize = 256 * 1024;
        /// Connect timeout.
        pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
        /// Whole-request timeout.
        pub const TOTAL_TIMEOUT: Duration = Duration::from_secs(5);

        /// Fetches from `url` with the default client.
        pub fn new(url: impl Into<String>) -> Result<Self, JwksUnavailable> {
            Ok(Self::with_client(Self::default_client()?, url))
        }

        /// Fetches from `FORGE_JWKS_URL`, or [`FORGE_JWKS_URL`] when it is unset or empty.
        pub fn from_env() -> Result<Self, JwksUnavailable> {
            let url = std::env::var(FORGE_JWKS_URL_VAR)
                .ok()
                .filter(|u| !u.trim().is_empty())
                .unwrap_or_else(|| FORGE_JWKS_URL.to_owned());
            Self::new(url)
        }

        /// Fetches from `url` with `client` (which should not follow redirects).
        pub fn with_client(client: reqwest::Client, url: impl Into<String>) -> Self {
            Self {
                client,
                url: url.into(),
            }
        }

        /// A client with the bounds a JWKS fetch should have inside a request: 3 s to connect, 5 s
        /// in all, redirects not followed.
        pub fn default_client() -> Result<reqwest::Client, JwksUnavailable> {
            reqwest::Client::builder()
                .connect_timeout(Self::CONNECT_TIMEOUT)
                .timeout(Self::TOTAL_TIMEOUT)
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .map_err(|e| JwksUnavailable(format!("HTTP client: {e}")))
        }

        /// The URL fetched.
        pub fn url(&self) -> &str {
            &self.url
        }
    }

    #[async_trait]
    impl JwksSource for HttpJwksSource {
        async fn fetch(&self) -> Result<JwkSet, JwksUnavailable> {
            let mut response = self
                .client
                .get(&self.url)
                .send()
                .await
                .map_err(|e| JwksUnavailable(e.without_url().to_string()))?;
            let status = response.status().as_u16();
            if status != 200 {
                return Err(JwksUnavailable(format!("JWKS answered HTTP {status}")));
            }
            if response
                .content_length()
                .is_some_and(|len| len > Self::MAX_BODY_BYTES as u64)
            {
                return Err(JwksUnavailable("JWKS larger than allowed".into()));
            }
            let mut body = Vec::new();
            while let Some(chunk) = response
                .chunk()
                .await
                .map_err(|e| JwksUnavailable(e.without_url().to_string()))?
            {
                if body.len().saturating_add(chunk.len()) > Self::MAX_BODY_BYTES {
                    return Err(JwksUnavailable("JWKS larger than allowed".into()));
                }
                body.extend_from_slice(&chunk);
            }
            parse_jwks(&body)
        }
    }
}
