//! The verified-tenant cache: each process (the local app, every warm Lambda instance) keeps the
//! tenants it has read, their decrypted shared secret included, and their settings for a short
//! while, so that a warm webhook costs no store read and no decryption.
//!
//! What keeps it correct when a tenant changes:
//!
//! - **Expiry.** An entry is used for [`TenantCache::DEFAULT_TTL_SECONDS`] from its read (on the
//!   injected clock; moka also drops it after the same time on the monotonic one). A tenant that is
//!   uninstalled or disabled by another process (another Lambda function) stops being served
//!   within that. The edit worker never relies on it: it reads the tenant again before it edits.
//! - **Writes in this process.** The lifecycle and admin handlers [`TenantCache::forget`] a tenant
//!   after they change it, so in the local app (one process, one cache) a change is seen at once.
//! - **A rotated secret.** Atlassian rotates a shared secret with a new `installed`; until the
//!   entry expires this process still holds the old one. A token that fails with the cached secret
//!   is checked once more against a fresh read ([`TenantCache::reload_tenant`]), so the new secret
//!   works at once.
//!
//! What bounds an attacker's reach into the store:
//!
//! - a forged token for a known tenant (a bad signature) forces at most one fresh read of that
//!   tenant per [`TenantCache::MIN_RELOAD_SECONDS`];
//! - a client key the store does not know is remembered as unknown for the same expiry, and reads
//!   of keys not in the cache are limited to [`TenantCache::DEFAULT_COLD_READS_PER_SECOND`]; past
//!   that the answer is 503 without a read (a cached tenant is still served);
//! - at most [`TenantCache::DEFAULT_CAPACITY`] tenants are held (moka's admission policy keeps a
//!   flood of one-off keys from pushing out tenants that are in use).
//!
//! Secrets: a tenant is held as `Arc<Tenant>`, its secret a `SecretString`, which zeroes its
//! memory when the last holder drops it (an evicted or replaced entry, once its requests end).

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use moka::future::Cache;
use sha2::{Digest, Sha256};
use understudy_domain::{
    ClientKey, SettingsStore, StoreError, Tenant, TenantSettings, TenantStore,
};

/// A value read from the store, and when (unix seconds, on the caller's clock).
#[derive(Clone)]
struct Read<T> {
    value: Option<T>,
    read_at: i64,
}

/// A tenant's settings as read, with the digest of their document (so that compiled rules can be
/// found by it without writing the document out again per event).
#[derive(Debug)]
pub struct CachedSettings {
    /// The settings.
    pub settings: TenantSettings,
    /// SHA-256 of the document's JSON text.
    pub digest: [u8; 32],
}

impl CachedSettings {
    fn new(settings: TenantSettings) -> Self {
        let digest = Sha256::digest(settings.document.to_string().as_bytes()).into();
        Self { settings, digest }
    }
}

/// Reads of keys not in the cache within the current second.
#[derive(Debug, Default)]
struct ColdReads {
    second: i64,
    used: u32,
    refusing: bool,
}

/// The verified-tenant cache (see the module's documentation). Cheap to share: hold it in an `Arc`.
pub struct TenantCache {
    tenants: Cache<ClientKey, Read<Arc<Tenant>>>,
    settings: Cache<ClientKey, Read<Arc<CachedSettings>>>,
    ttl_seconds: i64,
    cold_reads_per_second: u32,
    cold_reads: Mutex<ColdReads>,
}

impl std::fmt::Debug for TenantCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TenantCache")
            .field("tenants", &self.tenants.entry_count())
            .field("ttl_seconds", &self.ttl_seconds)
            .finish_non_exhaustive()
    }
}

impl Default for TenantCache {
    fn default() -> Self {
        Self::new(
            Self::DEFAULT_CAPACITY,
            Self::DEFAULT_TTL_SECONDS,
            Self::DEFAULT_COLD_READS_PER_SECOND,
        )
    }
}

impl TenantCache {
    /// How long a read is used: 30 seconds. An uninstall or a disable made by another process
    /// is seen within this; a Lambda instance reads each busy tenant twice a minute.
    pub const DEFAULT_TTL_SECONDS: i64 = 30;
    /// Tenants held at most (and as many settings).
    pub const DEFAULT_CAPACITY: u64 = 4_096;
    /// Store reads for keys not in the cache, at most, per second.
    pub const DEFAULT_COLD_READS_PER_SECOND: u32 = 100;
    /// A tenant is read again for a failed signature at most once per this many seconds.
    pub const MIN_RELOAD_SECONDS: i64 = 1;

    /// A cache of at most `capacity` tenants, each used for `ttl_seconds`, reading at most
    /// `cold_reads_per_second` keys it does not hold per second.
    pub fn new(capacity: u64, ttl_seconds: i64, cold_reads_per_second: u32) -> Self {
        let ttl_seconds = ttl_seconds.max(0);
        let ttl = Duration::from_secs(ttl_seconds.unsigned_abs().max(1));
        Self {
            tenants: Cache::builder()
                .max_capacity(capacity)
                .time_to_live(ttl)
                .build(),
            settings: Cache::builder()
                .max_capacity(capacity)
                .time_to_live(ttl)
                .build(),
            ttl_seconds,
            cold_reads_per_second: cold_reads_per_second.max(1),
            cold_reads: Mutex::new(ColdReads::default()),
        }
    }

    fn fresh<T: Clone>(&self, read: Option<Read<T>>, now: i64) -> Option<Read<T>> {
        read.filter(|read| now < read.read_at.saturating_add(self.ttl_seconds))
    }

    /// The tenant with this key as the store has it (any state), read from the store only when
    /// this process holds no read of it younger than the expiry. Concurrent requests for a key not
    /// held share one read.
    pub async fn tenant<S: TenantStore + ?Sized>(
        &self,
        store: &S,
        key: &ClientKey,
        now: i64,
    ) -> Result<Option<Arc<Tenant>>, StoreError> {
        if let Some(read) = self.fresh(self.tenants.get(key).await, now) {
            return Ok(read.value);
        }
        self.tenants.invalidate(key).await;
        let load = async {
            self.take_cold_read(now)?;
            Ok::<_, StoreError>(Read {
                value: store.get_tenant(key, now).await?.map(Arc::new),
                read_at: now,
            })
        };
        self.tenants
            .try_get_with(key.clone(), load)
            .await
            .map(|read| read.value)
            .map_err(|err| (*err).clone())
    }

    /// The tenant read from the store again, for a token its cached secret did not verify (the
    /// secret may have been rotated): `None` when the held read is younger than
    /// [`Self::MIN_RELOAD_SECONDS`] (nothing fresher to try; this is what bounds forged tokens).
    pub async fn reload_tenant<S: TenantStore + ?Sized>(
        &self,
        store: &S,
        key: &ClientKey,
        now: i64,
    ) -> Result<Option<Arc<Tenant>>, StoreError> {
        if self
            .tenants
            .get(key)
            .await
            .is_some_and(|read| now < read.read_at.saturating_add(Self::MIN_RELOAD_SECONDS))
        {
            return Ok(None);
        }
        let value = store.get_tenant(key, now).await?.map(Arc::new);
        self.tenants
            .insert(
                key.clone(),
                Read {
                    value: value.clone(),
                    read_at: now,
                },
            )
            .await;
        Ok(value)
    }

    /// The tenant's settings, read from the store only when this process holds no read of them
    /// younger than the expiry. Only ever asked for a verified tenant.
    pub async fn settings<S: SettingsStore + ?Sized>(
        &self,
        store: &S,
        key: &ClientKey,
        now: i64,
    ) -> Result<Option<Arc<CachedSettings>>, StoreError> {
        if let Some(read) = self.fresh(self.settings.get(key).await, now) {
            return Ok(read.value);
        }
        self.settings.invalidate(key).await;
        let load = async {
            Ok::<_, StoreError>(Read {
                value: store
                    .get_settings(key, now)
                    .await?
                    .map(|settings| Arc::new(CachedSettings::new(settings))),
                read_at: now,
            })
        };
        self.settings
            .try_get_with(key.clone(), load)
            .await
            .map(|read| read.value)
            .map_err(|err| (*err).clone())
    }

    /// Drops what is held for this tenant: call after changing it (install, state, uninstall,
    /// settings), so that this process reads it again at its next request.
    pub async fn forget(&self, key: &ClientKey) {
        self.tenants.invalidate(key).await;
        self.settings.invalidate(key).await;
    }

    /// How many tenants are held now (after pending evictions).
    pub async fn held(&self) -> u64 {
        self.tenants.run_pending_tasks().await;
        self.tenants.entry_count()
    }

    fn take_cold_read(&self, now: i64) -> Result<(), StoreError> {
        let mut reads = self
            .cold_reads
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if reads.second != now {
            reads.second = now;
            reads.used = 0;
        }
        if reads.used >= self.cold_reads_per_second {
            if !reads.refusing {
                reads.refusing = true;
                tracing::warn!(
                    limit = self.cold_reads_per_second,
                    "reads of tenants not in the cache over budget: answering 503 without a read"
                );
            }
            return Err(StoreError::unavailable(
                "too many lookups of unknown tenants; try again shortly",
            ));
        }
        reads.refusing = false;
        reads.used += 1;
        Ok(())
    }
}
