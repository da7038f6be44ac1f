//! An in-memory implementation of every port, for other crates' unit tests and for the contract
//! suite's reference run. Secrets stay in memory as [`secrecy::SecretString`]; nothing is persisted.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::{Mutex, MutexGuard};

use async_trait::async_trait;

use crate::accounts::{AccountsPage, ClosedAccountKey, ScheduledPage, StoredAccount, report_slot};
use crate::audit::{ActedAs, AuditRecord};
use crate::cursor::{AuditCursor, AuditPage};
use crate::error::StoreError;
use crate::forge::{FORGE_INSTALLATION_RETENTION_SECONDS, ForgeInstallation, InstallationId};
use crate::ids::{AccountId, ClientKey, IdempotencyKey, PageId};
use crate::parked::{PARKED_JOB_RETENTION_SECONDS, ParkedJob, ParkedPage};
use crate::ports::{
    AccountRegistry, AuditLog, ForgeInstallations, IdempotencyMarks, Marked, ParkedJobs,
    RateLimits, SettingsStore, TenantStore, TokenCache,
};
use crate::ratelimit::{RateCounters, RateDecision};
use crate::settings::TenantSettings;
use crate::tenant::{
    InstallOutcome, Tenant, TenantState, UNINSTALLED_RETENTION_SECONDS, redact_install_payload,
};
use crate::token::{CachedToken, TokenCacheKey};

/// Every port in memory, behind one mutex (no lock is held across an `.await`).
///
/// `Debug` shows only counts; the records' own `Debug` would redact secrets anyway.
#[derive(Default)]
pub struct MemoryStore {
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    /// Tenant and its retention TTL (set once uninstalled).
    tenants: HashMap<ClientKey, (Tenant, Option<i64>)>,
    tokens: HashMap<(ClientKey, TokenCacheKey), CachedToken>,
    /// Each mark's (set at, expires at), unix seconds.
    marks: HashMap<(ClientKey, IdempotencyKey), (i64, i64)>,
    /// Records with their expiry and their cursor, in append order.
    audit: HashMap<ClientKey, Vec<(AuditRecord, i64, AuditCursor)>>,
    /// Ids of audit records: a counter, so records of one millisecond list newest first.
    audit_seq: u128,
    settings: HashMap<ClientKey, (TenantSettings, Option<i64>)>,
    rates: RateCounters,
    /// Forge installations and their retention TTL.
    forge: HashMap<InstallationId, (ForgeInstallation, i64)>,
    /// Forge installations linked to a Connect tenant.
    forge_links: HashMap<InstallationId, ClientKey>,
    /// Each page's parked job.
    parked: HashMap<(ClientKey, PageId), ParkedJob>,
    /// Each tenant's listed accounts, in accountId order.
    accounts: HashMap<ClientKey, BTreeMap<AccountId, StoredAccount>>,
    /// Accounts reported closed, by tenant: only their keys.
    closed: HashSet<(ClientKey, ClosedAccountKey)>,
    /// The report schedule: (slot, tenant key).
    scheduled: BTreeSet<(u32, ClientKey)>,
}

impl Inner {
    /// Enters a tenant in its report slot.
    fn schedule(&mut self, tenant: &ClientKey) {
        self.scheduled.insert((report_slot(tenant), tenant.clone()));
    }

    fn resolved(&self, mut installation: ForgeInstallation) -> ForgeInstallation {
        installation.tenant_key = self
            .forge_links
            .get(&installation.id)
            .cloned()
            .unwrap_or_else(|| installation.id.own_tenant_key());
        installation
    }
}

fn live(expires_at: Option<i64>, now: i64) -> bool {
    expires_at.is_none_or(|t| t > now)
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock (only possible in a test) leaves plain data behind: keep going.
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl std::fmt::Debug for MemoryStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let inner = self.lock();
        f.debug_struct("MemoryStore")
            .field("tenants", &inner.tenants.len())
            .field("tokens", &inner.tokens.len())
            .field("marks", &inner.marks.len())
            .finish_non_exhaustive()
    }
}

#[async_trait]
impl TenantStore for MemoryStore {
    async fn get_tenant(
        &self,
        client_key: &ClientKey,
        now: i64,
    ) -> Result<Option<Tenant>, StoreError> {
        Ok(self
            .lock()
            .tenants
            .get(client_key)
            .filter(|(_, exp)| live(*exp, now))
            .map(|(t, _)| t.clone()))
    }

    async fn save_install(&self, tenant: &Tenant, now: i64) -> Result<InstallOutcome, StoreError> {
        let mut inner = self.lock();
        let mut record = tenant.clone();
        redact_install_payload(&mut record.install_payload);
        let previous = inner
            .tenants
            .get(&tenant.client_key)
            .filter(|(_, exp)| live(*exp, now));
        record.state = TenantState::after_install(previous.map(|(old, _)| old.state), tenant.state);
        let outcome = match previous {
            Some((old, _)) => {
                record.created_at = old.created_at;
                InstallOutcome::Updated
            }
            None => InstallOutcome::New,
        };
        inner
            .tenants
            .insert(tenant.client_key.clone(), (record, None));
        inner.schedule(&tenant.client_key);
        if outcome == InstallOutcome::Updated
            && let Some((_, exp)) = inner.settings.get_mut(&tenant.client_key)
        {
            *exp = None;
        }
        Ok(outcome)
    }

    async fn set_state(
        &self,
        client_key: &ClientKey,
        state: TenantState,
        now: i64,
    ) -> Result<bool, StoreError> {
        if state == TenantState::Uninstalled {
            return self.mark_uninstalled(client_key, now).await;
        }
        let mut inner = self.lock();
        match inner.tenants.get_mut(client_key) {
            Some((t, None)) if t.state != TenantState::Uninstalled => {
                t.state = state;
                t.updated_at = now;
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    async fn mark_uninstalled(&self, client_key: &ClientKey, now: i64) -> Result<bool, StoreError> {
        let mut inner = self.lock();
        let expires = now.saturating_add(UNINSTALLED_RETENTION_SECONDS);
        let Some((tenant, exp)) = inner
            .tenants
            .get_mut(client_key)
            .filter(|(_, e)| live(*e, now))
        else {
            return Ok(false);
        };
        tenant.state = TenantState::Uninstalled;
        tenant.updated_at = now;
        let expires = *exp.get_or_insert(expires);
        if let Some((_, exp)) = inner.settings.get_mut(client_key) {
            exp.get_or_insert(expires);
        }
        inner.tokens.retain(|(ck, _), _| ck != client_key);
        Ok(true)
    }
}

#[async_trait]
impl TokenCache for MemoryStore {
    async fn get_token(
        &self,
        client_key: &ClientKey,
        key: &TokenCacheKey,
        now: i64,
    ) -> Result<Option<CachedToken>, StoreError> {
        Ok(self
            .lock()
            .tokens
            .get(&(client_key.clone(), key.clone()))
            .filter(|t| t.expires_at > now)
            .cloned())
    }

    async fn put_token(
        &self,
        client_key: &ClientKey,
        key: &TokenCacheKey,
        token: &CachedToken,
    ) -> Result<(), StoreError> {
        self.lock()
            .tokens
            .insert((client_key.clone(), key.clone()), token.clone());
        Ok(())
    }

    async fn drop_tokens_for_tenant(&self, client_key: &ClientKey) -> Result<(), StoreError> {
        self.lock().tokens.retain(|(ck, _), _| ck != client_key);
        Ok(())
    }

    async fn drop_token(
        &self,
        client_key: &ClientKey,
        key: &TokenCacheKey,
    ) -> Result<(), StoreError> {
        self.lock()
            .tokens
            .remove(&(client_key.clone(), key.clone()));
        Ok(())
    }
}

#[async_trait]
impl IdempotencyMarks for MemoryStore {
    async fn mark_once(
        &self,
        client_key: &ClientKey,
        key: &IdempotencyKey,
        ttl_seconds: i64,
        now: i64,
    ) -> Result<Marked, StoreError> {
        let mut inner = self.lock();
        let slot = inner
            .marks
            .entry((client_key.clone(), key.clone()))
            .or_insert((i64::MIN, i64::MIN));
        let (marked_at, expires_at) = *slot;
        if expires_at > now {
            return Ok(Marked::Already { marked_at });
        }
        *slot = (now, now.saturating_add(ttl_seconds));
        Ok(Marked::First)
    }

    async fn clear_mark(
        &self,
        client_key: &ClientKey,
        key: &IdempotencyKey,
    ) -> Result<(), StoreError> {
        self.lock().marks.remove(&(client_key.clone(), key.clone()));
        Ok(())
    }
}

#[async_trait]
impl AuditLog for MemoryStore {
    async fn append(&self, record: &AuditRecord, retention_seconds: i64) -> Result<(), StoreError> {
        let expires = record
            .at_ms
            .div_euclid(1000)
            .saturating_add(retention_seconds);
        let mut inner = self.lock();
        inner.audit_seq = inner.audit_seq.wrapping_add(1);
        let cursor = AuditCursor::new(record.at_ms, &format!("{:032x}", inner.audit_seq))
            .map_err(|_| StoreError::corrupt("audit (id)"))?;
        inner
            .audit
            .entry(record.client_key.clone())
            .or_default()
            .push((record.clone(), expires, cursor));
        Ok(())
    }

    async fn list_for_tenant(
        &self,
        client_key: &ClientKey,
        before: Option<&AuditCursor>,
        limit: usize,
        now: i64,
    ) -> Result<AuditPage, StoreError> {
        Ok(self.list(client_key, None, before, limit, now))
    }

    async fn list_for_page(
        &self,
        client_key: &ClientKey,
        page_id: &PageId,
        before: Option<&AuditCursor>,
        limit: usize,
        now: i64,
    ) -> Result<AuditPage, StoreError> {
        Ok(self.list(client_key, Some(page_id), before, limit, now))
    }

    async fn erase_account(
        &self,
        client_key: &ClientKey,
        account: &AccountId,
    ) -> Result<usize, StoreError> {
        let mut inner = self.lock();
        let mut erased = 0usize;
        for (record, _, _) in inner.audit.get_mut(client_key).into_iter().flatten() {
            if record.acted_as == ActedAs::User(account.clone()) {
                record.acted_as = ActedAs::User(AccountId::erased());
                erased = erased.saturating_add(1);
            }
        }
        Ok(erased)
    }
}

impl MemoryStore {
    fn list(
        &self,
        client_key: &ClientKey,
        page_id: Option<&PageId>,
        before: Option<&AuditCursor>,
        limit: usize,
        now: i64,
    ) -> AuditPage {
        let inner = self.lock();
        let mut entries: Vec<(AuditCursor, AuditRecord)> = inner
            .audit
            .get(client_key)
            .into_iter()
            .flatten()
            .filter(|(r, exp, cursor)| {
                *exp > now
                    && page_id.is_none_or(|p| &r.page_id == p)
                    && before.is_none_or(|b| cursor < b)
            })
            .map(|(r, _, cursor)| (cursor.clone(), r.clone()))
            .collect();
        // Cursor order is time, then id: newest first.
        entries.sort_by(|a, b| b.0.cmp(&a.0));
        entries.truncate(limit.saturating_add(1));
        AuditPage::from_listing(entries, limit)
    }
}

#[async_trait]
impl RateLimits for MemoryStore {
    async fn take(
        &self,
        client_key: &ClientKey,
        subject: &str,
        limit: u32,
        window_seconds: i64,
        now: i64,
    ) -> Result<RateDecision, StoreError> {
        Ok(self
            .lock()
            .rates
            .take(client_key, subject, limit, window_seconds, now))
    }
}

#[async_trait]
impl SettingsStore for MemoryStore {
    async fn get_settings(
        &self,
        client_key: &ClientKey,
        now: i64,
    ) -> Result<Option<TenantSettings>, StoreError> {
        Ok(self
            .lock()
            .settings
            .get(client_key)
            .filter(|(_, exp)| live(*exp, now))
            .map(|(s, _)| s.clone()))
    }

    async fn put_settings(
        &self,
        client_key: &ClientKey,
        settings: &TenantSettings,
        now: i64,
    ) -> Result<(), StoreError> {
        let mut inner = self.lock();
        let keep = inner
            .settings
            .get(client_key)
            .and_then(|(_, e)| *e)
            .filter(|e| *e > now);
        inner
            .settings
            .insert(client_key.clone(), (settings.clone(), keep));
        Ok(())
    }
}

#[async_trait]
impl ForgeInstallations for MemoryStore {
    async fn get_installation(
        &self,
        id: &InstallationId,
        now: i64,
    ) -> Result<Option<ForgeInstallation>, StoreError> {
        let inner = self.lock();
        Ok(inner
            .forge
            .get(id)
            .filter(|(_, exp)| *exp > now)
            .map(|(installation, _)| inner.resolved(installation.clone())))
    }

    async fn record_installation(
        &self,
        seen: &ForgeInstallation,
        now: i64,
    ) -> Result<ForgeInstallation, StoreError> {
        let mut inner = self.lock();
        let mut record = seen.clone();
        if let Some((old, exp)) = inner.forge.get(&seen.id)
            && *exp > now
        {
            record.created_at = old.created_at;
            if old.system_token.issued_at >= seen.system_token.issued_at {
                record.system_token = old.system_token.clone();
            }
        }
        let expires_at = now.saturating_add(FORGE_INSTALLATION_RETENTION_SECONDS);
        inner
            .forge
            .insert(seen.id.clone(), (record.clone(), expires_at));
        inner.schedule(&seen.id.own_tenant_key());
        Ok(inner.resolved(record))
    }

    async fn link_installation(
        &self,
        id: &InstallationId,
        client_key: &ClientKey,
        _now: i64,
    ) -> Result<(), StoreError> {
        self.lock()
            .forge_links
            .insert(id.clone(), client_key.clone());
        Ok(())
    }
}

fn parked_live(job: &ParkedJob, now: i64) -> bool {
    job.at_ms / 1000 + PARKED_JOB_RETENTION_SECONDS > now
}

#[async_trait]
impl ParkedJobs for MemoryStore {
    async fn park(&self, job: &ParkedJob) -> Result<(), StoreError> {
        self.lock()
            .parked
            .insert((job.client_key.clone(), job.page_id.clone()), job.clone());
        Ok(())
    }

    async fn unpark(&self, client_key: &ClientKey, page_id: &PageId) -> Result<(), StoreError> {
        self.lock()
            .parked
            .remove(&(client_key.clone(), page_id.clone()));
        Ok(())
    }

    async fn parked(
        &self,
        client_key: &ClientKey,
        page_id: &PageId,
        now: i64,
    ) -> Result<Option<ParkedJob>, StoreError> {
        Ok(self
            .lock()
            .parked
            .get(&(client_key.clone(), page_id.clone()))
            .filter(|job| parked_live(job, now))
            .cloned())
    }

    async fn list_parked(
        &self,
        client_key: &ClientKey,
        after: Option<&(i64, PageId)>,
        limit: usize,
        now: i64,
    ) -> Result<ParkedPage, StoreError> {
        let inner = self.lock();
        let mut jobs: Vec<ParkedJob> = inner
            .parked
            .values()
            .filter(|job| &job.client_key == client_key && parked_live(job, now))
            .filter(|job| after.is_none_or(|(at, page)| (job.at_ms, &job.page_id) < (*at, page)))
            .cloned()
            .collect();
        // Newest first; one millisecond's jobs by page id, descending, so positions are total.
        jobs.sort_by(|a, b| (b.at_ms, &b.page_id).cmp(&(a.at_ms, &a.page_id)));
        let more = jobs.len() > limit;
        jobs.truncate(limit);
        let next = if more && limit > 0 {
            jobs.last().map(|j| (j.at_ms, j.page_id.clone()))
        } else {
            None
        };
        Ok(ParkedPage { jobs, next })
    }
}

#[async_trait]
impl AccountRegistry for MemoryStore {
    async fn note_account(
        &self,
        client_key: &ClientKey,
        account: &AccountId,
        retrieved_at: i64,
    ) -> Result<bool, StoreError> {
        let mut inner = self.lock();
        if inner
            .closed
            .contains(&(client_key.clone(), ClosedAccountKey::new(account)))
        {
            return Ok(false);
        }
        inner.schedule(client_key);
        inner
            .accounts
            .entry(client_key.clone())
            .or_default()
            .entry(account.clone())
            .and_modify(|a| a.retrieved_at = a.retrieved_at.min(retrieved_at))
            .or_insert_with(|| StoredAccount {
                account: account.clone(),
                retrieved_at,
                next_report_at: None,
                closed: false,
            });
        Ok(true)
    }

    async fn list_accounts(
        &self,
        client_key: &ClientKey,
        after: Option<&AccountId>,
        limit: usize,
    ) -> Result<AccountsPage, StoreError> {
        if limit == 0 {
            return Ok(AccountsPage::default());
        }
        let inner = self.lock();
        let Some(listed) = inner.accounts.get(client_key) else {
            return Ok(AccountsPage::default());
        };
        let from = match after {
            Some(after) => std::ops::Bound::Excluded(after),
            None => std::ops::Bound::Unbounded,
        };
        let mut accounts: Vec<StoredAccount> = listed
            .range::<AccountId, _>((from, std::ops::Bound::Unbounded))
            .take(limit.saturating_add(1))
            .map(|(_, a)| a.clone())
            .collect();
        let more = accounts.len() > limit;
        accounts.truncate(limit);
        let next = if more {
            accounts.last().map(|a| a.account.clone())
        } else {
            None
        };
        Ok(AccountsPage { accounts, next })
    }

    async fn mark_reported(
        &self,
        client_key: &ClientKey,
        account: &AccountId,
        next_report_at: i64,
        refreshed_at: Option<i64>,
    ) -> Result<(), StoreError> {
        let mut inner = self.lock();
        if let Some(a) = inner
            .accounts
            .get_mut(client_key)
            .and_then(|listed| listed.get_mut(account))
        {
            a.next_report_at = Some(next_report_at);
            if let Some(at) = refreshed_at {
                a.retrieved_at = at;
            }
        }
        Ok(())
    }

    async fn close_account(
        &self,
        client_key: &ClientKey,
        account: &AccountId,
        now: i64,
    ) -> Result<(), StoreError> {
        let mut inner = self.lock();
        inner
            .accounts
            .entry(client_key.clone())
            .or_default()
            .entry(account.clone())
            .or_insert_with(|| StoredAccount {
                account: account.clone(),
                retrieved_at: now,
                next_report_at: None,
                closed: true,
            })
            .closed = true;
        inner
            .closed
            .insert((client_key.clone(), ClosedAccountKey::new(account)));
        Ok(())
    }

    async fn forget_account(
        &self,
        client_key: &ClientKey,
        account: &AccountId,
    ) -> Result<(), StoreError> {
        let mut inner = self.lock();
        if let Some(listed) = inner.accounts.get_mut(client_key) {
            listed.remove(account);
            if listed.is_empty() {
                inner.accounts.remove(client_key);
            }
        }
        Ok(())
    }

    async fn is_closed(
        &self,
        client_key: &ClientKey,
        key: &ClosedAccountKey,
    ) -> Result<bool, StoreError> {
        Ok(self
            .lock()
            .closed
            .contains(&(client_key.clone(), key.clone())))
    }

    async fn scheduled_tenants(
        &self,
        slot: u32,
        after: Option<&ClientKey>,
        limit: usize,
    ) -> Result<ScheduledPage, StoreError> {
        if limit == 0 {
            return Ok(ScheduledPage::default());
        }
        let inner = self.lock();
        let mut tenants: Vec<ClientKey> = inner
            .scheduled
            .iter()
            .filter(|(s, key)| *s == slot && after.is_none_or(|a| key.as_str() > a.as_str()))
            .map(|(_, key)| key.clone())
            .take(limit.saturating_add(1))
            .collect();
        let more = tenants.len() > limit;
        tenants.truncate(limit);
        let next = if more { tenants.last().cloned() } else { None };
        Ok(ScheduledPage { tenants, next })
    }

    async fn purge_tenant(
        &self,
        client_key: &ClientKey,
        _max_items: usize,
    ) -> Result<bool, StoreError> {
        let mut inner = self.lock();
        inner.tokens.retain(|(ck, _), _| ck != client_key);
        inner.marks.retain(|(ck, _), _| ck != client_key);
        inner.audit.remove(client_key);
        inner.settings.remove(client_key);
        inner.parked.retain(|(ck, _), _| ck != client_key);
        inner.accounts.remove(client_key);
        inner.closed.retain(|(ck, _)| ck != client_key);
        inner
            .forge
            .retain(|id, _| &id.own_tenant_key() != client_key);
        inner
            .forge_links
            .retain(|id, _| &id.own_tenant_key() != client_key);
        inner.tenants.remove(client_key);
        inner
            .scheduled
            .remove(&(report_slot(client_key), client_key.clone()));
        Ok(true)
    }
}
