//! Public keys for signed installs (§4): a provider port, an in-memory provider for tests, a bounded
//! cache, and (feature `http-keys`) the HTTP provider that fetches from Atlassian's key servers.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::sync::Mutex;

use async_trait::async_trait;
use jsonwebtoken::DecodingKey;

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

/// Caches another provider's keys by kid, holding at most `capacity` (oldest out first).
///
/// Atlassian rotates install keys by issuing a new kid, so a key cached under a kid never changes.
/// Failures are not cached: a key server that is down is asked again next time.
pub struct CachingKeyProvider<P> {
    inner: P,
    capacity: usize,
    cache: Mutex<KeyCache>,
}

#[derive(Default)]
struct KeyCache {
    keys: HashMap<Kid, DecodingKey>,
    order: VecDeque<Kid>,
}

impl<P: fmt::Debug> fmt::Debug for CachingKeyProvider<P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CachingKeyProvider")
            .field("inner", &self.inner)
            .field("capacity", &self.capacity)
            .finish_non_exhaustive()
    }
}

impl<P> CachingKeyProvider<P> {
    /// A default bound: a handful of live install keys exist at a time.
    pub const DEFAULT_CAPACITY: usize = 64;

    /// Caches `inner`'s keys, at most `capacity` of them (at least one).
    pub fn new(inner: P, capacity: usize) -> Self {
        Self {
            inner,
            capacity: capacity.max(1),
            cache: Mutex::new(KeyCache::default()),
        }
    }

    /// How many keys are cached now.
    pub fn cached(&self) -> usize {
        self.cache.lock().map(|c| c.keys.len()).unwrap_or(0)
    }
}

#[async_trait]
impl<P: KeyProvider> KeyProvider for CachingKeyProvider<P> {
    async fn public_key(&self, kid: &Kid) -> Result<DecodingKey, KeyError> {
        if let Some(key) = self.cache.lock().map_err(|_| poisoned())?.keys.get(kid) {
            return Ok(key.clone());
        }
        let key = self.inner.public_key(kid).await?;
        let mut cache = self.cache.lock().map_err(|_| poisoned())?;
        if !cache.keys.contains_key(kid) {
            while cache.keys.len() >= self.capacity {
                match cache.order.pop_front() {
                    Some(oldest) => cache.keys.remove(&oldest),
                    None => break,
                };
            }
            cache.order.push_back(kid.clone());
            cache.keys.insert(kid.clone(), key.clone());
        }
        Ok(key)
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
