//! The store ports. Each is narrow so a function depends only on what it uses; one adapter type
//! implements them all.
//!
//! Conventions shared by every adapter (checked by the contract suite in `understudy-store`):
//! - `now` is unix seconds. A record whose TTL (`expires_at`) is `<= now` is treated as absent even
//!   if the database has not deleted it yet (DynamoDB deletes expired items lazily, within days).
//! - Reads that return secrets are strongly consistent.
//! - Errors are [`StoreError`]; a database that is down is [`StoreError::Unavailable`].

use async_trait::async_trait;

use crate::accounts::{AccountsPage, ClosedAccountKey, ScheduledPage};
use crate::audit::AuditRecord;
use crate::cursor::{AuditCursor, AuditPage};
use crate::error::StoreError;
use crate::forge::{ForgeInstallation, InstallationId};
use crate::ids::{AccountId, ClientKey, IdempotencyKey, PageId};
use crate::parked::{ParkedJob, ParkedPage};
use crate::ratelimit::RateDecision;
use crate::settings::TenantSettings;
use crate::tenant::{InstallOutcome, Tenant, TenantState};
use crate::token::{CachedToken, TokenCacheKey};

/// Tenants and their shared secrets.
#[async_trait]
pub trait TenantStore: Send + Sync {
    /// The tenant with this clientKey (strongly consistent read), or `None` if unknown or its
    /// post-uninstall retention has run out. An uninstalled tenant within retention is returned with
    /// state [`TenantState::Uninstalled`].
    async fn get_tenant(
        &self,
        client_key: &ClientKey,
        now: i64,
    ) -> Result<Option<Tenant>, StoreError>;

    /// Saves a verified install. A conditional write decides the outcome, so of two concurrent first
    /// installs exactly one sees [`InstallOutcome::New`]. On [`InstallOutcome::Updated`] the stored
    /// `created_at` is kept and everything else (secret, URLs, payload, `updated_at`) is replaced;
    /// a pending retention TTL is cleared. `sharedSecret` is removed from the payload.
    ///
    /// `tenant.state` applies only to a new tenant and to a re-install after `uninstalled`. A
    /// re-install of a live tenant (Atlassian sends `installed` again on upgrades and secret
    /// rotations) keeps the stored state, so a disabled app stays disabled: only `enabled`
    /// ([`TenantStore::set_state`]) enables. The state is checked and written atomically, so a
    /// `disabled` that lands during the install is not undone either.
    async fn save_install(&self, tenant: &Tenant, now: i64) -> Result<InstallOutcome, StoreError>;

    /// Sets the state of a live (not uninstalled) tenant. Returns `false` when there is no such
    /// tenant. `TenantState::Uninstalled` behaves as [`TenantStore::mark_uninstalled`].
    async fn set_state(
        &self,
        client_key: &ClientKey,
        state: TenantState,
        now: i64,
    ) -> Result<bool, StoreError>;

    /// Marks the tenant uninstalled, keeps its record and settings for
    /// [`crate::UNINSTALLED_RETENTION_SECONDS`] (counted from the first uninstall; a repeated call
    /// does not extend it), and drops its cached tokens. Returns `false` for an unknown tenant.
    async fn mark_uninstalled(&self, client_key: &ClientKey, now: i64) -> Result<bool, StoreError>;
}

/// Cached impersonation access tokens.
#[async_trait]
pub trait TokenCache: Send + Sync {
    /// The cached token, unless absent or `expires_at <= now` (strongly consistent read).
    async fn get_token(
        &self,
        client_key: &ClientKey,
        key: &TokenCacheKey,
        now: i64,
    ) -> Result<Option<CachedToken>, StoreError>;

    /// Stores or replaces a token; its `expires_at` is also the record's TTL.
    async fn put_token(
        &self,
        client_key: &ClientKey,
        key: &TokenCacheKey,
        token: &CachedToken,
    ) -> Result<(), StoreError>;

    /// Drops every token cached for the tenant (secret rotation, uninstall).
    async fn drop_tokens_for_tenant(&self, client_key: &ClientKey) -> Result<(), StoreError>;

    /// Drops one cached token (its user's account was closed). Dropping an absent one is not an
    /// error.
    async fn drop_token(
        &self,
        client_key: &ClientKey,
        key: &TokenCacheKey,
    ) -> Result<(), StoreError>;
}

/// What [`IdempotencyMarks::mark_once`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Marked {
    /// This call set the mark: the first delivery.
    First,
    /// The mark was there already, set at `marked_at` (unix seconds) by an earlier delivery.
    Already {
        /// When the mark was set (`i64::MIN` when a store cannot tell: taken as long ago).
        marked_at: i64,
    },
}

impl Marked {
    /// Whether this call set the mark.
    pub fn is_first(self) -> bool {
        self == Self::First
    }
}

/// De-duplication marks for webhook events and edit jobs.
#[async_trait]
pub trait IdempotencyMarks: Send + Sync {
    /// Sets the mark with a conditional write. Only the first writer gets [`Marked::First`]: of
    /// two concurrent deliveries of one event exactly one does; the others learn when the mark was
    /// set. An expired mark (older than its `ttl_seconds`) counts as absent.
    async fn mark_once(
        &self,
        client_key: &ClientKey,
        key: &IdempotencyKey,
        ttl_seconds: i64,
        now: i64,
    ) -> Result<Marked, StoreError>;
    /// Removes the mark, so that a job whose hand-off failed after marking can be accepted again.
    /// Removing an absent mark is not an error.
    async fn clear_mark(
        &self,
        client_key: &ClientKey,
        key: &IdempotencyKey,
    ) -> Result<(), StoreError>;
}

/// The edit audit trail.
#[async_trait]
pub trait AuditLog: Send + Sync {
    /// Appends a record that expires `retention_seconds` after `record.at_ms`.
    async fn append(&self, record: &AuditRecord, retention_seconds: i64) -> Result<(), StoreError>;

    /// The tenant's records, newest first, at most `limit`, expired ones left out; with `before`,
    /// only those listed after that cursor (older). `next` is present when more records exist:
    /// following it lists every record exactly once, also when several share a millisecond. A
    /// `limit` of 0 gives an empty page without `next`.
    async fn list_for_tenant(
        &self,
        client_key: &ClientKey,
        before: Option<&AuditCursor>,
        limit: usize,
        now: i64,
    ) -> Result<AuditPage, StoreError>;

    /// One page's records, as [`AuditLog::list_for_tenant`] lists the tenant's. On DynamoDB this
    /// reads a secondary index, so a record appended a moment ago may be missing (eventual
    /// consistency). A cursor only positions the listing in time: it cannot widen it to another
    /// page or tenant.
    async fn list_for_page(
        &self,
        client_key: &ClientKey,
        page_id: &PageId,
        before: Option<&AuditCursor>,
        limit: usize,
        now: i64,
    ) -> Result<AuditPage, StoreError>;

    /// Erases `account` from the tenant's records (its account was closed): each record that
    /// names it as the user acted as keeps the fact of the edit, with [`AccountId::erased`] in
    /// its place. Reads the tenant's own records (never a scan); returns how many were rewritten.
    async fn erase_account(
        &self,
        client_key: &ClientKey,
        account: &AccountId,
    ) -> Result<usize, StoreError>;
}

/// Per-user request limits: a fixed-window counter per tenant, subject and window.
///
/// A port of its own rather than a method on another: only the edit API needs it, and each adapter
/// may keep it where it is cheapest (DynamoDB: one atomic update per request; the local app and
/// the memory store: in the process).
#[async_trait]
pub trait RateLimits: Send + Sync {
    /// Counts one request of `subject` (an accountId) within the tenant and decides it: the first
    /// `limit` of a window of `window_seconds` (aligned to unix time; below 1 counts as 1) are
    /// allowed, the rest limited until the next window. Atomic: of concurrent takes at most
    /// `limit` are allowed. The subject is stored only as its SHA-256 ([`crate::RateWindow`]),
    /// never in clear. Limited takes count too; counters expire by themselves.
    async fn take(
        &self,
        client_key: &ClientKey,
        subject: &str,
        limit: u32,
        window_seconds: i64,
        now: i64,
    ) -> Result<RateDecision, StoreError>;
}

/// Per-tenant settings.
#[async_trait]
pub trait SettingsStore: Send + Sync {
    /// The tenant's settings, or `None` if never written (or expired with an uninstalled tenant).
    async fn get_settings(
        &self,
        client_key: &ClientKey,
        now: i64,
    ) -> Result<Option<TenantSettings>, StoreError>;

    /// Stores or replaces the settings. A pending retention TTL (tenant uninstalled) is kept, so
    /// settings never outlive their tenant.
    async fn put_settings(
        &self,
        client_key: &ClientKey,
        settings: &TenantSettings,
        now: i64,
    ) -> Result<(), StoreError>;
}

/// Forge installations: the Forge front door's tenants (docs/protocol.md §17).
#[async_trait]
pub trait ForgeInstallations: Send + Sync {
    /// The installation (strongly consistent read), its `tenant_key` resolved through a Connect
    /// link when one exists; `None` when never seen or silent for longer than
    /// [`crate::FORGE_INSTALLATION_RETENTION_SECONDS`].
    async fn get_installation(
        &self,
        id: &InstallationId,
        now: i64,
    ) -> Result<Option<ForgeInstallation>, StoreError>;

    /// Records a verified invocation: creates the installation, or replaces its app id, cloudId,
    /// API base URL and `updated_at` (keeping `created_at`), and renews its retention. The system
    /// token is replaced only by one issued later than the stored one, decided atomically, so a
    /// delivery that was delayed never puts back an older token. `seen.tenant_key` is ignored.
    /// Returns the installation as stored afterwards.
    async fn record_installation(
        &self,
        seen: &ForgeInstallation,
        now: i64,
    ) -> Result<ForgeInstallation, StoreError>;

    /// Links the installation to a Connect tenant (its `installed` payload named the
    /// installation): from now on the installation's `tenant_key` is `client_key`, whether the
    /// installation was seen yet or not. A later link replaces an earlier one.
    async fn link_installation(
        &self,
        id: &InstallationId,
        client_key: &ClientKey,
        now: i64,
    ) -> Result<(), StoreError>;
}

/// Parked jobs: each page's last blocked or failed job, for the admin page's "retry now".
#[async_trait]
pub trait ParkedJobs: Send + Sync {
    /// Parks `job` as its page's last blocked or failed job, replacing the one parked before; it
    /// expires after [`crate::PARKED_JOB_RETENTION_SECONDS`] (from `job.at_ms`).
    async fn park(&self, job: &ParkedJob) -> Result<(), StoreError>;

    /// Takes away the page's parked job (a later attempt edited the page, or an admin queued it
    /// again). Taking away an absent one is not an error.
    async fn unpark(&self, client_key: &ClientKey, page_id: &PageId) -> Result<(), StoreError>;

    /// The page's parked job, unless absent or expired (strongly consistent read).
    async fn parked(
        &self,
        client_key: &ClientKey,
        page_id: &PageId,
        now: i64,
    ) -> Result<Option<ParkedJob>, StoreError>;

    /// The tenant's parked jobs, newest first, at most `limit`; with `after`, only those listed
    /// after that position (an earlier page's `next`). A query on the tenant's own records,
    /// never a scan; expired ones left out.
    async fn list_parked(
        &self,
        client_key: &ClientKey,
        after: Option<&(i64, PageId)>,
        limit: usize,
        now: i64,
    ) -> Result<ParkedPage, StoreError>;
}

/// The accounts each tenant's data holds, for Atlassian's personal data reporting
/// (docs/protocol.md §19). Listed per tenant (its own records, never a scan).
#[async_trait]
pub trait AccountRegistry: Send + Sync {
    /// Notes that the tenant's data holds `account`, retrieved at `retrieved_at`: a new account is
    /// listed (and its tenant entered in the report schedule, in the same write); a listed one
    /// keeps the older of its two times. An account reported closed is never listed again:
    /// `false`, and nothing is written.
    async fn note_account(
        &self,
        client_key: &ClientKey,
        account: &AccountId,
        retrieved_at: i64,
    ) -> Result<bool, StoreError>;

    /// The tenant's listed accounts in accountId order, at most `limit`, after `after` (a page's
    /// `next`). A `limit` of 0 gives an empty page without `next`.
    async fn list_accounts(
        &self,
        client_key: &ClientKey,
        after: Option<&AccountId>,
        limit: usize,
    ) -> Result<AccountsPage, StoreError>;

    /// Records that `account` was reported: it is next due at `next_report_at` (the report's
    /// time plus the cycle its answer asked for); with `refreshed_at` (Atlassian answered
    /// `updated`), its retrieval time becomes that. An account not listed is left alone.
    async fn mark_reported(
        &self,
        client_key: &ClientKey,
        account: &AccountId,
        next_report_at: i64,
        refreshed_at: Option<i64>,
    ) -> Result<(), StoreError>;

    /// Records that Atlassian reported `account` closed, in one atomic write: its
    /// [`ClosedAccountKey`] is kept for good (so it is never noted or reported again), and its
    /// listing stays, flagged [`crate::StoredAccount::closed`], until [`Self::forget_account`]:
    /// a run interrupted before the erasure is done finds it again and finishes the erasure.
    async fn close_account(
        &self,
        client_key: &ClientKey,
        account: &AccountId,
        now: i64,
    ) -> Result<(), StoreError>;

    /// Takes away a closed account's listing, once its data is erased: then only its
    /// [`ClosedAccountKey`] remains. Taking away an absent one is not an error.
    async fn forget_account(
        &self,
        client_key: &ClientKey,
        account: &AccountId,
    ) -> Result<(), StoreError>;

    /// Whether the account was reported closed on this tenant.
    async fn is_closed(
        &self,
        client_key: &ClientKey,
        key: &ClosedAccountKey,
    ) -> Result<bool, StoreError>;

    /// The tenants (Connect clientKeys and Forge installations' own tenant keys) scheduled in
    /// report `slot` ([`crate::report_slot`]), in key order, at most `limit`, after `after`. The
    /// schedule is kept by the store itself: [`TenantStore::save_install`],
    /// [`ForgeInstallations::record_installation`] and a newly listed account
    /// ([`Self::note_account`]) enter the tenant, [`Self::purge_tenant`] takes it out. One slot is a partition of its own (never a scan).
    async fn scheduled_tenants(
        &self,
        slot: u32,
        after: Option<&ClientKey>,
        limit: usize,
    ) -> Result<ScheduledPage, StoreError>;

    /// Deletes everything kept under the tenant's key (its retention after uninstall is over):
    /// at most `max_items` records this call, the tenant's own record and its schedule entry
    /// last. `true` when nothing is left; `false` when the next call must go on. The caller
    /// decides that the retention is over (the tenant and installation reads find nothing).
    async fn purge_tenant(
        &self,
        client_key: &ClientKey,
        max_items: usize,
    ) -> Result<bool, StoreError>;
}
