//! The embedded adapter for local runs: one redb file under a data directory, no AWS at all.
//!
//! It mirrors the DynamoDB layout: one table whose key is `<clientKey> NUL <sort key>` with the same
//! sort keys ([`crate::keys`]), values are JSON rows, and secrets are sealed by a [`SecretCipher`]
//! (base64 in the JSON). redb write transactions are serialised, which is what makes the conditional
//! operations (first install, idempotency marks, a Forge system token replaced only by a later one)
//! atomic here. The audit trail keeps a page-scoped copy of each record (`PAGE#...`), written in the
//! same transaction, in place of DynamoDB's index.
//!
//! A parked job is one row per page, `<clientKey> NUL PARKED#<pageId>`; in place of DynamoDB's
//! index, an empty row `<clientKey> NUL PARKEDAT#<ms>#<pageId>` (the item's `gsi1sk` there) gives
//! its place in time order, written and taken away in the same transaction as the job. A listing
//! is a reverse range scan of those index rows that reads each one's job and skips an index row
//! whose job is gone or parked at another time (one left behind when a corrupt job was replaced).
//!
//! A Forge installation is kept as DynamoDB keeps it: under its ARI in place of a clientKey,
//! `<ARI> NUL FORGE#INSTALLATION` (the installation, token sealed) and `<ARI> NUL FORGE#LINK` (the
//! Connect tenant it is linked to, `{"client_key", "linked_at"}`), read together from one snapshot.
//!
//! Accounts (personal data reporting) are rows `<clientKey> NUL ACCOUNT#<accountId>`
//! (`{"retrieved_at", "next_report_at", "closed_at"}`, the last only once closed), listed by a range
//! scan in key order, which is accountId order. An account reported closed gets a row
//! `<clientKey> NUL CLOSED#<hex key>` (`{"closed_at"}`, nothing of the account), written in the
//! transaction that flags its listing closed (`closed_at`; a listing is written flagged if there
//! was none); the listing goes when the caller has erased the account's data
//! ([`AccountRegistry::forget_account`]), and only the `CLOSED#` row stays. The check for that row
//! and a note's write are one transaction too, so a closed account is never listed as open again.
//! Erasing an account from the audit trail ([`AuditLog::erase_account`]) rewrites, in one
//! transaction, each of the tenant's audit rows (`AUDIT#...` and its `PAGE#...` copy) whose
//! `acted_as` names it, keys and expiry unchanged.
//! Erasure has a limit here that DynamoDB does not have: redb is copy-on-write and does not scrub
//! the pages it frees, so the bytes of a removed listing or a rewritten audit row may stay in the
//! file, unreachable, until redb reuses the page. No row names an erased account once it is
//! forgotten; the raw file may, for a while.
//!
//! The report schedule is rows `#REPORT#<slot> NUL <tenant key>` (`{}`; see [`crate::keys`]),
//! written in the transaction of the install ([`TenantStore::save_install`]) or the Forge record
//! ([`ForgeInstallations::record_installation`]) and listed by a range scan of the slot. A purge
//! ([`AccountRegistry::purge_tenant`]) is one transaction per call: at most `max_items` rows of the
//! range `<tenant key> NUL ...` (every row of the tenant, index rows included), the `TENANT` row
//! after all others, the schedule row last.
//!
//! Rate limits are the exception: they are counted in the process ([`RateCounters`]), not in the
//! file. A durable count would cost a commit, i.e. an fsync, per API call; the local app is one
//! process, so its counters are exact while it runs, and a restart only starts fresh windows.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use redb::{Database, ReadOnlyTable, ReadableTable, Table, TableDefinition};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use understudy_domain::{
    AccountId, AccountRegistry, AccountsPage, ActedAs, AuditCursor, AuditLog, AuditPage,
    AuditRecord, CachedToken, ClientKey, ClosedAccountKey, ForgeInstallation, ForgeInstallations,
    IdempotencyKey, IdempotencyMarks, InstallOutcome, InstallationId, Marked, PageId, ParkedJob,
    ParkedJobs, ParkedPage, RateCounters, RateDecision, RateLimits, ScheduledPage, SettingsStore,
    StoreError, StoredAccount, Tenant, TenantSettings, TenantState, TenantStore, TokenCache,
    TokenCacheKey, UNINSTALLED_RETENTION_SECONDS,
};

use crate::codec::{InstallationRow, ParkedRow, TenantRow, TokenRow, parked_page};
use crate::crypto::{LocalKeyCipher, SecretCipher};
use crate::keys::{
    ACCOUNT_PREFIX, AUDIT_PREFIX, FORGE_INSTALLATION_SK, FORGE_LINK_SK, PAGE_PREFIX,
    PARKED_AT_PREFIX, SETTINGS_SK, TENANT_SK, TOKEN_PREFIX, account_of_sk, account_sk,
    audit_expiry, audit_sk, closed_sk, cursor_of_sk, cursor_sk_suffix, live, mark_sk,
    page_of_parked_at_sk, page_prefix, page_sk, parked_at_sk, parked_sk, schedule_pk,
    schedule_pk_of, tenant_of_schedule_sk, token_sk,
};

const ITEMS: TableDefinition<'static, &str, &[u8]> = TableDefinition::new("items");

/// Every port, in a redb file. Cheap to clone (shares the open database).
#[derive(Clone)]
pub struct EmbeddedStore {
    db: Arc<Database>,
    cipher: Arc<dyn SecretCipher>,
    path: PathBuf,
    /// In the process, bounded (see the module docs).
    rates: Arc<Mutex<RateCounters>>,
}

impl std::fmt::Debug for EmbeddedStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmbeddedStore")
            .field("path", &self.path)
            .field("cipher", &self.cipher)
            .finish_non_exhaustive()
    }
}

#[derive(Serialize, Deserialize)]
struct MarkRow {
    marked_at: i64,
    expires_at: i64,
}

#[derive(Serialize, Deserialize)]
struct AuditRow {
    record: AuditRecord,
    expires_at: i64,
}

#[derive(Serialize, Deserialize)]
struct SettingsRow {
    document: Value,
    expires_at: Option<i64>,
}

/// The Connect tenant a Forge installation is linked to.
#[derive(Serialize, Deserialize)]
struct LinkRow {
    client_key: String,
    linked_at: i64,
}

impl LinkRow {
    fn client_key(&self) -> Result<ClientKey, StoreError> {
        ClientKey::parse(self.client_key.as_str())
            .map_err(|_| StoreError::corrupt("forge link (client_key)"))
    }
}

/// A parked job's place in time order: the key says it all.
#[derive(Serialize, Deserialize)]
struct ParkedIndexRow {}

const PARKED: &str = "parked job";

/// A parked job's row key and, if the row is readable, its index row's key. A corrupt row has
/// none: its index row, if any, is left behind (listings skip it).
fn parked_keys(
    table: &impl ReadableTable<&'static str, &'static [u8]>,
    client_key: &ClientKey,
    page_id: &PageId,
) -> Result<(String, Option<String>), StoreError> {
    let key = item_key(client_key, &parked_sk(page_id));
    let index = match get_row::<ParkedRow>(table, &key, PARKED) {
        Ok(row) => row.map(|r| item_key(client_key, &parked_at_sk(r.at_ms, page_id))),
        Err(StoreError::Corrupt { .. }) => {
            tracing::warn!("replacing a corrupt parked job row");
            None
        }
        Err(e) => return Err(e),
    };
    Ok((key, index))
}

/// An account the tenant's data holds (`ACCOUNT#<accountId>`; the accountId is in the key).
#[derive(Serialize, Deserialize)]
struct AccountRow {
    retrieved_at: i64,
    #[serde(default)]
    next_report_at: Option<i64>,
    /// When it was reported closed (its erasure under way), if it was.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    closed_at: Option<i64>,
}

/// An account reported closed (`CLOSED#<hex key>`): when, and nothing of the account.
#[derive(Serialize, Deserialize)]
struct ClosedRow {
    closed_at: i64,
}

const ACCOUNT: &str = "account";
const CLOSED: &str = "closed account";

/// A tenant's entry in the report schedule: the key says it all.
#[derive(Serialize, Deserialize)]
struct ScheduleRow {}

/// `#REPORT#<slot> NUL <tenant key>`: the tenant's entry in its report slot.
fn schedule_key(tenant: &ClientKey) -> String {
    raw_key(&schedule_pk_of(tenant), tenant.as_str())
}

/// Enters the tenant in its report slot (idempotent).
fn schedule(
    table: &mut Table<'_, &'static str, &'static [u8]>,
    tenant: &ClientKey,
) -> Result<(), StoreError> {
    put_row(table, &schedule_key(tenant), &ScheduleRow {})
}

const INSTALLATION: &str = "forge installation";
const LINK: &str = "forge link";

/// The installation's and its link's item keys: under the installation's ARI.
fn forge_keys(id: &InstallationId) -> (String, String) {
    let own = id.own_tenant_key();
    (
        item_key(&own, FORGE_INSTALLATION_SK),
        item_key(&own, FORGE_LINK_SK),
    )
}

/// `<clientKey> NUL <sort key>`: a clientKey has no control characters, so the NUL cannot be part of
/// it and a prefix scan of one tenant never reaches another.
fn item_key(client_key: &ClientKey, sk: &str) -> String {
    raw_key(client_key.as_str(), sk)
}

/// `<pk> NUL <sk>` for any partition: a tenant's, or one of the app's own (the schedule's).
fn raw_key(pk: &str, sk: &str) -> String {
    format!("{pk}\u{0}{sk}")
}

/// Exclusive end of the whole partition `<pk> NUL ...`: SOH is the byte after NUL.
fn partition_end(pk: &str) -> String {
    format!("{pk}\u{1}")
}

/// Exclusive end of a prefix scan: the prefixes end in `#` and `$` is the next byte.
fn prefix_end(prefix: &str) -> String {
    format!("{}$", prefix.strip_suffix('#').unwrap_or(prefix))
}

fn db_error(err: impl Into<redb::Error>) -> StoreError {
    let err: redb::Error = err.into();
    tracing::warn!(error = %err, "embedded store failed");
    StoreError::unavailable(format!("embedded store: {err}"))
}

fn get_row<R: DeserializeOwned>(
    table: &impl ReadableTable<&'static str, &'static [u8]>,
    key: &str,
    what: &'static str,
) -> Result<Option<R>, StoreError> {
    match table.get(key).map_err(db_error)? {
        None => Ok(None),
        Some(value) => serde_json::from_slice(value.value())
            .map(Some)
            .map_err(|_| StoreError::corrupt(what)),
    }
}

fn put_row<R: Serialize>(
    table: &mut Table<'_, &'static str, &'static [u8]>,
    key: &str,
    row: &R,
) -> Result<(), StoreError> {
    let bytes = serde_json::to_vec(row).map_err(|_| StoreError::corrupt("row to write"))?;
    table.insert(key, bytes.as_slice()).map_err(db_error)?;
    Ok(())
}

fn keys_in(
    table: &impl ReadableTable<&'static str, &'static [u8]>,
    prefix: &str,
) -> Result<Vec<String>, StoreError> {
    let end = prefix_end(prefix);
    let mut keys = Vec::new();
    for entry in table
        .range::<&str>(prefix..end.as_str())
        .map_err(db_error)?
    {
        let (key, _) = entry.map_err(db_error)?;
        keys.push(key.value().to_owned());
    }
    Ok(keys)
}

impl EmbeddedStore {
    /// Name of the database file inside the data directory.
    pub const FILE_NAME: &'static str = "understudy.redb";
    /// Name of the key file [`EmbeddedStore::open_with_local_key`] uses inside the data directory.
    pub const KEY_FILE_NAME: &'static str = "keyring.json";

    /// The page cache of the store file (redb's default is 1 GiB).
    pub const CACHE_BYTES: usize = 32 * 1024 * 1024;

    /// Opens (or creates) `<data_dir>/understudy.redb`, creating the directory owner-only if needed.
    /// Only one process may have the file open at a time (redb locks it).
    pub fn open(
        data_dir: impl AsRef<Path>,
        cipher: Arc<dyn SecretCipher>,
    ) -> Result<Self, StoreError> {
        let dir = data_dir.as_ref();
        let mut builder = std::fs::DirBuilder::new();
        builder.recursive(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::DirBuilderExt;
            builder.mode(0o700);
        }
        builder
            .create(dir)
            .map_err(|e| StoreError::unavailable(format!("data directory: {}", e.kind())))?;
        let path = dir.join(Self::FILE_NAME);
        // redb's page cache defaults to 1 GiB; the local app's data is small, and memory is bounded.
        let db = redb::Builder::new()
            .set_cache_size(Self::CACHE_BYTES)
            .create(&path)
            .map_err(db_error)?;
        // Create the table up front so readers never meet a missing table.
        let txn = db.begin_write().map_err(db_error)?;
        txn.open_table(ITEMS).map_err(db_error)?;
        txn.commit().map_err(db_error)?;
        Ok(Self {
            db: Arc::new(db),
            cipher,
            path,
            rates: Arc::new(Mutex::new(RateCounters::default())),
        })
    }

    /// Opens the store with a [`LocalKeyCipher`] whose key file is `<data_dir>/keyring.json`
    /// (created on first run, mode 0600): the whole local setup in one call.
    pub fn open_with_local_key(data_dir: impl AsRef<Path>) -> Result<Self, StoreError> {
        let dir = data_dir.as_ref();
        let cipher = LocalKeyCipher::open_or_create(dir.join(Self::KEY_FILE_NAME))?;
        Self::open(dir, Arc::new(cipher))
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Runs `f` on a read snapshot, on the calling task.
    ///
    /// Reads are point lookups or bounded ranges on a snapshot (redb readers never wait for the
    /// writer) of a small, hot file: microseconds, like the rest of a request's work, and far less
    /// than handing them to the blocking pool and back, which cost the webhook path two thread
    /// hand-offs per request. Writes do go to the blocking pool: a commit waits for the disk.
    async fn read<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        F: FnOnce(&ReadOnlyTable<&'static str, &'static [u8]>) -> Result<T, StoreError>,
    {
        let txn = self.db.begin_read().map_err(db_error)?;
        let table = txn.open_table(ITEMS).map_err(db_error)?;
        f(&table)
    }

    /// Runs `f` in one write transaction, committed durably only if `f` succeeds.
    async fn write<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Table<'_, &'static str, &'static [u8]>) -> Result<T, StoreError>
            + Send
            + 'static,
    {
        let db = Arc::clone(&self.db);
        tokio::task::spawn_blocking(move || {
            let txn = db.begin_write().map_err(db_error)?;
            let result = {
                let mut table = txn.open_table(ITEMS).map_err(db_error)?;
                f(&mut table)?
            };
            txn.commit().map_err(db_error)?;
            Ok(result)
        })
        .await
        .map_err(|_| StoreError::unavailable("embedded store task failed"))?
    }

    /// Audit rows under `prefix` (a tenant's or a page's), newest first: a reverse range scan that
    /// ends, exclusively, at the cursor's key.
    async fn list(
        &self,
        prefix: String,
        before: Option<&AuditCursor>,
        limit: usize,
        now: i64,
    ) -> Result<AuditPage, StoreError> {
        if limit == 0 {
            return Ok(AuditPage::from_listing(Vec::new(), 0));
        }
        let end = match before {
            Some(cursor) => format!("{prefix}{}", cursor_sk_suffix(cursor)),
            None => prefix_end(&prefix),
        };
        self.read(move |table| {
            let mut entries = Vec::new();
            for entry in table
                .range::<&str>(prefix.as_str()..end.as_str())
                .map_err(db_error)?
                .rev()
            {
                if entries.len() > limit {
                    break;
                }
                let (key, value) = entry.map_err(db_error)?;
                let row: AuditRow = serde_json::from_slice(value.value())
                    .map_err(|_| StoreError::corrupt("audit"))?;
                if row.expires_at > now {
                    let sk = key.value().split_once('\u{0}').map_or("", |(_, sk)| sk);
                    entries.push((cursor_of_sk(sk)?, row.record));
                }
            }
            Ok(AuditPage::from_listing(entries, limit))
        })
        .await
    }
}

#[async_trait]
impl TenantStore for EmbeddedStore {
    async fn get_tenant(
        &self,
        client_key: &ClientKey,
        now: i64,
    ) -> Result<Option<Tenant>, StoreError> {
        let key = item_key(client_key, TENANT_SK);
        let row: Option<TenantRow> = self.read(move |t| get_row(t, &key, "tenant")).await?;
        let Some(row) = row.filter(|r| live(r.expires_at, now)) else {
            return Ok(None);
        };
        row.open(client_key, &*self.cipher).await.map(Some)
    }

    async fn save_install(&self, tenant: &Tenant, now: i64) -> Result<InstallOutcome, StoreError> {
        let mut row = TenantRow::seal(tenant, &*self.cipher).await?;
        let key = item_key(&tenant.client_key, TENANT_SK);
        let settings_key = item_key(&tenant.client_key, SETTINGS_SK);
        let client_key = tenant.client_key.clone();
        self.write(move |table| {
            // A corrupt old row must not block the re-install that repairs it: the new row carries
            // everything but the original creation time.
            let old = match get_row::<TenantRow>(table, &key, "tenant") {
                Ok(old) => old,
                Err(StoreError::Corrupt { .. }) => {
                    tracing::warn!("replacing a corrupt tenant row on install");
                    None
                }
                Err(e) => return Err(e),
            };
            let old = old.filter(|o| live(o.expires_at, now));
            row.state = TenantState::after_install(old.as_ref().map(|o| o.state), row.state);
            let outcome = match old {
                Some(old) => {
                    row.created_at = old.created_at;
                    if old.expires_at.is_some() {
                        // Re-installed within retention: the settings must not expire after all.
                        if let Some(mut settings) =
                            get_row::<SettingsRow>(table, &settings_key, "settings")?
                        {
                            settings.expires_at = None;
                            put_row(table, &settings_key, &settings)?;
                        }
                    }
                    InstallOutcome::Updated
                }
                None => InstallOutcome::New,
            };
            put_row(table, &key, &row)?;
            schedule(table, &client_key)?;
            Ok(outcome)
        })
        .await
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
        let key = item_key(client_key, TENANT_SK);
        self.write(move |table| {
            let Some(mut row) = get_row::<TenantRow>(table, &key, "tenant")? else {
                return Ok(false);
            };
            if row.state == TenantState::Uninstalled || !live(row.expires_at, now) {
                return Ok(false);
            }
            row.state = state;
            row.updated_at = now;
            put_row(table, &key, &row)?;
            Ok(true)
        })
        .await
    }

    async fn mark_uninstalled(&self, client_key: &ClientKey, now: i64) -> Result<bool, StoreError> {
        let key = item_key(client_key, TENANT_SK);
        let settings_key = item_key(client_key, SETTINGS_SK);
        let tokens_prefix = item_key(client_key, TOKEN_PREFIX);
        self.write(move |table| {
            let Some(mut row) = get_row::<TenantRow>(table, &key, "tenant")? else {
                return Ok(false);
            };
            if !live(row.expires_at, now) {
                return Ok(false);
            }
            row.state = TenantState::Uninstalled;
            row.updated_at = now;
            let expires = *row
                .expires_at
                .get_or_insert(now.saturating_add(UNINSTALLED_RETENTION_SECONDS));
            put_row(table, &key, &row)?;
            if let Some(mut settings) = get_row::<SettingsRow>(table, &settings_key, "settings")? {
                settings.expires_at.get_or_insert(expires);
                put_row(table, &settings_key, &settings)?;
            }
            for token in keys_in(table, &tokens_prefix)? {
                table.remove(token.as_str()).map_err(db_error)?;
            }
            Ok(true)
        })
        .await
    }
}

#[async_trait]
impl TokenCache for EmbeddedStore {
    async fn get_token(
        &self,
        client_key: &ClientKey,
        key: &TokenCacheKey,
        now: i64,
    ) -> Result<Option<CachedToken>, StoreError> {
        let item = item_key(client_key, &token_sk(key));
        let row: Option<TokenRow> = self.read(move |t| get_row(t, &item, "token")).await?;
        let Some(row) = row.filter(|r| r.expires_at > now) else {
            return Ok(None);
        };
        row.open(client_key, key, &*self.cipher).await.map(Some)
    }

    async fn put_token(
        &self,
        client_key: &ClientKey,
        key: &TokenCacheKey,
        token: &CachedToken,
    ) -> Result<(), StoreError> {
        let row = TokenRow::seal(client_key, key, token, &*self.cipher).await?;
        let item = item_key(client_key, &token_sk(key));
        self.write(move |t| put_row(t, &item, &row)).await
    }

    async fn drop_tokens_for_tenant(&self, client_key: &ClientKey) -> Result<(), StoreError> {
        let prefix = item_key(client_key, TOKEN_PREFIX);
        self.write(move |table| {
            for token in keys_in(table, &prefix)? {
                table.remove(token.as_str()).map_err(db_error)?;
            }
            Ok(())
        })
        .await
    }

    async fn drop_token(
        &self,
        client_key: &ClientKey,
        key: &TokenCacheKey,
    ) -> Result<(), StoreError> {
        let item = item_key(client_key, &token_sk(key));
        self.write(move |table| {
            table.remove(item.as_str()).map_err(db_error)?;
            Ok(())
        })
        .await
    }
}

#[async_trait]
impl IdempotencyMarks for EmbeddedStore {
    async fn mark_once(
        &self,
        client_key: &ClientKey,
        key: &IdempotencyKey,
        ttl_seconds: i64,
        now: i64,
    ) -> Result<Marked, StoreError> {
        let item = item_key(client_key, &mark_sk(key));
        self.write(move |table| {
            if let Some(old) = get_row::<MarkRow>(table, &item, "mark")?
                && old.expires_at > now
            {
                return Ok(Marked::Already {
                    marked_at: old.marked_at,
                });
            }
            let row = MarkRow {
                marked_at: now,
                expires_at: now.saturating_add(ttl_seconds),
            };
            put_row(table, &item, &row)?;
            Ok(Marked::First)
        })
        .await
    }

    async fn clear_mark(
        &self,
        client_key: &ClientKey,
        key: &IdempotencyKey,
    ) -> Result<(), StoreError> {
        let item = item_key(client_key, &mark_sk(key));
        self.write(move |table| {
            table.remove(item.as_str()).map_err(db_error)?;
            Ok(())
        })
        .await
    }
}

#[async_trait]
impl AuditLog for EmbeddedStore {
    async fn append(&self, record: &AuditRecord, retention_seconds: i64) -> Result<(), StoreError> {
        let id = uuid::Uuid::new_v4().simple().to_string();
        let row = AuditRow {
            record: record.clone(),
            expires_at: audit_expiry(record, retention_seconds),
        };
        let main = item_key(&record.client_key, &audit_sk(record.at_ms, &id));
        let by_page = item_key(
            &record.client_key,
            &page_sk(&record.page_id, record.at_ms, &id),
        );
        self.write(move |table| {
            put_row(table, &main, &row)?;
            put_row(table, &by_page, &row)
        })
        .await
    }

    async fn list_for_tenant(
        &self,
        client_key: &ClientKey,
        before: Option<&AuditCursor>,
        limit: usize,
        now: i64,
    ) -> Result<AuditPage, StoreError> {
        self.list(item_key(client_key, AUDIT_PREFIX), before, limit, now)
            .await
    }

    async fn list_for_page(
        &self,
        client_key: &ClientKey,
        page_id: &PageId,
        before: Option<&AuditCursor>,
        limit: usize,
        now: i64,
    ) -> Result<AuditPage, StoreError> {
        self.list(
            item_key(client_key, &page_prefix(page_id)),
            before,
            limit,
            now,
        )
        .await
    }

    async fn erase_account(
        &self,
        client_key: &ClientKey,
        account: &AccountId,
    ) -> Result<usize, StoreError> {
        let named = ActedAs::User(account.clone());
        let prefixes = [
            item_key(client_key, AUDIT_PREFIX),
            item_key(client_key, PAGE_PREFIX),
        ];
        // One transaction: each record and its page copy are rewritten together, expired ones
        // too (their bytes are still in the file until it is compacted).
        self.write(move |table| {
            let mut erased = 0usize;
            for (i, prefix) in prefixes.iter().enumerate() {
                let end = prefix_end(prefix);
                let mut rewrites = Vec::new();
                for entry in table
                    .range::<&str>(prefix.as_str()..end.as_str())
                    .map_err(db_error)?
                {
                    let (key, value) = entry.map_err(db_error)?;
                    let mut row: AuditRow = serde_json::from_slice(value.value())
                        .map_err(|_| StoreError::corrupt("audit"))?;
                    if row.record.acted_as == named {
                        row.record.acted_as = ActedAs::User(AccountId::erased());
                        rewrites.push((key.value().to_owned(), row));
                    }
                }
                // The `AUDIT#` rows are the records; the `PAGE#` rows their copies.
                if i == 0 {
                    erased = rewrites.len();
                }
                for (key, row) in rewrites {
                    put_row(table, &key, &row)?;
                }
            }
            Ok(erased)
        })
        .await
    }
}

#[async_trait]
impl RateLimits for EmbeddedStore {
    async fn take(
        &self,
        client_key: &ClientKey,
        subject: &str,
        limit: u32,
        window_seconds: i64,
        now: i64,
    ) -> Result<RateDecision, StoreError> {
        // Plain data behind the lock: a panic elsewhere while holding it leaves nothing half-done.
        let mut rates = self
            .rates
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        Ok(rates.take(client_key, subject, limit, window_seconds, now))
    }
}

#[async_trait]
impl SettingsStore for EmbeddedStore {
    async fn get_settings(
        &self,
        client_key: &ClientKey,
        now: i64,
    ) -> Result<Option<TenantSettings>, StoreError> {
        let key = item_key(client_key, SETTINGS_SK);
        let row: Option<SettingsRow> = self.read(move |t| get_row(t, &key, "settings")).await?;
        Ok(row
            .filter(|r| live(r.expires_at, now))
            .map(|r| TenantSettings {
                document: r.document,
            }))
    }

    async fn put_settings(
        &self,
        client_key: &ClientKey,
        settings: &TenantSettings,
        now: i64,
    ) -> Result<(), StoreError> {
        let key = item_key(client_key, SETTINGS_SK);
        let document = settings.document.clone();
        self.write(move |table| {
            // Keep a pending retention TTL; a corrupt old row is simply replaced.
            let keep = get_row::<SettingsRow>(table, &key, "settings")
                .ok()
                .flatten()
                .and_then(|r| r.expires_at)
                .filter(|e| *e > now);
            put_row(
                table,
                &key,
                &SettingsRow {
                    document,
                    expires_at: keep,
                },
            )
        })
        .await
    }
}

#[async_trait]
impl ForgeInstallations for EmbeddedStore {
    async fn get_installation(
        &self,
        id: &InstallationId,
        now: i64,
    ) -> Result<Option<ForgeInstallation>, StoreError> {
        let (key, link_key) = forge_keys(id);
        let (row, link) = self
            .read(move |t| {
                let row = get_row::<InstallationRow>(t, &key, INSTALLATION)?;
                let link = get_row::<LinkRow>(t, &link_key, LINK)?;
                Ok((row, link))
            })
            .await?;
        let Some(row) = row.filter(|r| r.is_live(now)) else {
            return Ok(None);
        };
        let link = link.map(|l| l.client_key()).transpose()?;
        row.open(id, link, &*self.cipher).await.map(Some)
    }

    async fn record_installation(
        &self,
        seen: &ForgeInstallation,
        now: i64,
    ) -> Result<ForgeInstallation, StoreError> {
        let row = InstallationRow::seal(seen, now, &*self.cipher).await?;
        let (key, link_key) = forge_keys(&seen.id);
        let own = seen.id.own_tenant_key();
        // One write transaction: the token comparison and the write are atomic.
        let (stored, link) = self
            .write(move |table| {
                // A corrupt old row must not block the record that repairs it: the new one starts
                // afresh.
                let old = match get_row::<InstallationRow>(table, &key, INSTALLATION) {
                    Ok(old) => old,
                    Err(StoreError::Corrupt { .. }) => {
                        tracing::warn!("replacing a corrupt forge installation row");
                        None
                    }
                    Err(e) => return Err(e),
                };
                let stored = row.over(old.filter(|o| o.is_live(now)));
                put_row(table, &key, &stored)?;
                schedule(table, &own)?;
                // A corrupt link fails the answer, not the write.
                let link = get_row::<LinkRow>(table, &link_key, LINK);
                Ok((stored, link))
            })
            .await?;
        let link = link?.map(|l| l.client_key()).transpose()?;
        stored.open(&seen.id, link, &*self.cipher).await
    }

    async fn link_installation(
        &self,
        id: &InstallationId,
        client_key: &ClientKey,
        now: i64,
    ) -> Result<(), StoreError> {
        let (_, link_key) = forge_keys(id);
        let row = LinkRow {
            client_key: client_key.as_str().to_owned(),
            linked_at: now,
        };
        self.write(move |t| put_row(t, &link_key, &row)).await
    }
}

#[async_trait]
impl ParkedJobs for EmbeddedStore {
    async fn park(&self, job: &ParkedJob) -> Result<(), StoreError> {
        let row = ParkedRow::of(job);
        let client_key = job.client_key.clone();
        let page_id = job.page_id.clone();
        let index = item_key(&client_key, &parked_at_sk(job.at_ms, &page_id));
        // One transaction: the page's earlier job and its index row go as the new ones come.
        self.write(move |table| {
            let (key, old_index) = parked_keys(table, &client_key, &page_id)?;
            if let Some(old_index) = old_index {
                table.remove(old_index.as_str()).map_err(db_error)?;
            }
            put_row(table, &key, &row)?;
            put_row(table, &index, &ParkedIndexRow {})
        })
        .await
    }

    async fn unpark(&self, client_key: &ClientKey, page_id: &PageId) -> Result<(), StoreError> {
        let client_key = client_key.clone();
        let page_id = page_id.clone();
        self.write(move |table| {
            let (key, index) = parked_keys(table, &client_key, &page_id)?;
            if let Some(index) = index {
                table.remove(index.as_str()).map_err(db_error)?;
            }
            table.remove(key.as_str()).map_err(db_error)?;
            Ok(())
        })
        .await
    }

    async fn parked(
        &self,
        client_key: &ClientKey,
        page_id: &PageId,
        now: i64,
    ) -> Result<Option<ParkedJob>, StoreError> {
        let key = item_key(client_key, &parked_sk(page_id));
        let row: Option<ParkedRow> = self.read(move |t| get_row(t, &key, PARKED)).await?;
        Ok(row
            .filter(|r| r.is_live(now))
            .map(|r| r.into_job(client_key.clone(), page_id.clone())))
    }

    async fn list_parked(
        &self,
        client_key: &ClientKey,
        after: Option<&(i64, PageId)>,
        limit: usize,
        now: i64,
    ) -> Result<ParkedPage, StoreError> {
        if limit == 0 {
            return Ok(ParkedPage::default());
        }
        let prefix = item_key(client_key, PARKED_AT_PREFIX);
        // Exclusive: the position `after` names is not listed again.
        let end = match after {
            Some((at_ms, page_id)) => item_key(client_key, &parked_at_sk(*at_ms, page_id)),
            None => prefix_end(&prefix),
        };
        let client_key = client_key.clone();
        self.read(move |table| {
            // One more than the page, to know whether there is a next one.
            let wanted = limit.saturating_add(1);
            let mut jobs = Vec::new();
            for entry in table
                .range::<&str>(prefix.as_str()..end.as_str())
                .map_err(db_error)?
                .rev()
            {
                if jobs.len() >= wanted {
                    break;
                }
                let (key, _) = entry.map_err(db_error)?;
                let sk = key.value().split_once('\u{0}').map_or("", |(_, sk)| sk);
                let page_id = page_of_parked_at_sk(sk)?;
                let job_key = item_key(&client_key, &parked_sk(&page_id));
                let Some(row) = get_row::<ParkedRow>(table, &job_key, PARKED)? else {
                    continue;
                };
                // An index row left behind by a job parked again at another time.
                if parked_at_sk(row.at_ms, &page_id) != sk || !row.is_live(now) {
                    continue;
                }
                jobs.push(row.into_job(client_key.clone(), page_id));
            }
            Ok(parked_page(jobs, limit))
        })
        .await
    }
}

#[async_trait]
impl AccountRegistry for EmbeddedStore {
    async fn note_account(
        &self,
        client_key: &ClientKey,
        account: &AccountId,
        retrieved_at: i64,
    ) -> Result<bool, StoreError> {
        let key = item_key(client_key, &account_sk(account));
        let closed = item_key(client_key, &closed_sk(&ClosedAccountKey::new(account)));
        let tenant = client_key.clone();
        // One write transaction: the closed check, the older time kept, and the write are atomic.
        self.write(move |table| {
            if table.get(closed.as_str()).map_err(db_error)?.is_some() {
                return Ok(false);
            }
            let row = match get_row::<AccountRow>(table, &key, ACCOUNT)? {
                Some(old) if old.retrieved_at <= retrieved_at => return Ok(true),
                Some(old) => AccountRow {
                    retrieved_at,
                    ..old
                },
                None => AccountRow {
                    retrieved_at,
                    next_report_at: None,
                    closed_at: None,
                },
            };
            put_row(table, &key, &row)?;
            // Also a tenant that installed before the schedule existed.
            schedule(table, &tenant)?;
            Ok(true)
        })
        .await
    }

    async fn list_accounts(
        &self,
        client_key: &ClientKey,
        after: Option<&AccountId>,
        limit: usize,
    ) -> Result<AccountsPage, StoreError> {
        use std::ops::Bound;
        if limit == 0 {
            return Ok(AccountsPage::default());
        }
        let prefix = item_key(client_key, ACCOUNT_PREFIX);
        let end = prefix_end(&prefix);
        // Exclusive: the account `after` names is not listed again.
        let start = after.map(|a| item_key(client_key, &account_sk(a)));
        self.read(move |table| {
            let from = match &start {
                Some(start) => Bound::Excluded(start.as_str()),
                None => Bound::Included(prefix.as_str()),
            };
            // One more than the page, to know whether there is a next one.
            let wanted = limit.saturating_add(1);
            let mut accounts = Vec::new();
            for entry in table
                .range::<&str>((from, Bound::Excluded(end.as_str())))
                .map_err(db_error)?
            {
                if accounts.len() >= wanted {
                    break;
                }
                let (key, value) = entry.map_err(db_error)?;
                let sk = key.value().split_once('\u{0}').map_or("", |(_, sk)| sk);
                let row: AccountRow = serde_json::from_slice(value.value())
                    .map_err(|_| StoreError::corrupt(ACCOUNT))?;
                accounts.push(StoredAccount {
                    account: account_of_sk(sk)?,
                    retrieved_at: row.retrieved_at,
                    next_report_at: row.next_report_at,
                    closed: row.closed_at.is_some(),
                });
            }
            let more = accounts.len() > limit;
            accounts.truncate(limit);
            let next = more
                .then(|| accounts.last().map(|a| a.account.clone()))
                .flatten();
            Ok(AccountsPage { accounts, next })
        })
        .await
    }

    async fn mark_reported(
        &self,
        client_key: &ClientKey,
        account: &AccountId,
        next_report_at: i64,
        refreshed_at: Option<i64>,
    ) -> Result<(), StoreError> {
        let key = item_key(client_key, &account_sk(account));
        self.write(move |table| {
            // Not listed (never noted, or forgotten meanwhile): nothing is written.
            let Some(mut row) = get_row::<AccountRow>(table, &key, ACCOUNT)? else {
                return Ok(());
            };
            row.next_report_at = Some(next_report_at);
            if let Some(at) = refreshed_at {
                row.retrieved_at = at;
            }
            put_row(table, &key, &row)
        })
        .await
    }

    async fn close_account(
        &self,
        client_key: &ClientKey,
        account: &AccountId,
        now: i64,
    ) -> Result<(), StoreError> {
        let key = item_key(client_key, &account_sk(account));
        let closed = item_key(client_key, &closed_sk(&ClosedAccountKey::new(account)));
        // One transaction: the listing is flagged closed as the closed key comes (the first
        // closing time kept on both). No listing (or a corrupt one): a flagged one is written, for
        // the erasure to find until it is forgotten.
        self.write(move |table| {
            let listing = match get_row::<AccountRow>(table, &key, ACCOUNT) {
                Ok(Some(mut row)) => {
                    row.closed_at.get_or_insert(now);
                    row
                }
                Ok(None) | Err(StoreError::Corrupt { .. }) => AccountRow {
                    retrieved_at: now,
                    next_report_at: None,
                    closed_at: Some(now),
                },
                Err(e) => return Err(e),
            };
            put_row(table, &key, &listing)?;
            let closed_at = match get_row::<ClosedRow>(table, &closed, CLOSED) {
                Ok(Some(old)) => old.closed_at,
                Ok(None) | Err(StoreError::Corrupt { .. }) => now,
                Err(e) => return Err(e),
            };
            put_row(table, &closed, &ClosedRow { closed_at })
        })
        .await
    }

    async fn forget_account(
        &self,
        client_key: &ClientKey,
        account: &AccountId,
    ) -> Result<(), StoreError> {
        let key = item_key(client_key, &account_sk(account));
        self.write(move |table| {
            table.remove(key.as_str()).map_err(db_error)?;
            Ok(())
        })
        .await
    }

    async fn is_closed(
        &self,
        client_key: &ClientKey,
        key: &ClosedAccountKey,
    ) -> Result<bool, StoreError> {
        let closed = item_key(client_key, &closed_sk(key));
        self.read(move |table| Ok(table.get(closed.as_str()).map_err(db_error)?.is_some()))
            .await
    }

    async fn scheduled_tenants(
        &self,
        slot: u32,
        after: Option<&ClientKey>,
        limit: usize,
    ) -> Result<ScheduledPage, StoreError> {
        use std::ops::Bound;
        if limit == 0 {
            return Ok(ScheduledPage::default());
        }
        let pk = schedule_pk(slot);
        let first = raw_key(&pk, "");
        let end = partition_end(&pk);
        // Exclusive: the tenant `after` names is not listed again.
        let start = after.map(|a| raw_key(&pk, a.as_str()));
        self.read(move |table| {
            let from = match &start {
                Some(start) => Bound::Excluded(start.as_str()),
                None => Bound::Included(first.as_str()),
            };
            // One more than the page, to know whether there is a next one.
            let wanted = limit.saturating_add(1);
            let mut tenants = Vec::new();
            for entry in table
                .range::<&str>((from, Bound::Excluded(end.as_str())))
                .map_err(db_error)?
            {
                if tenants.len() >= wanted {
                    break;
                }
                let (key, _) = entry.map_err(db_error)?;
                let sk = key.value().split_once('\u{0}').map_or("", |(_, sk)| sk);
                tenants.push(tenant_of_schedule_sk(sk)?);
            }
            let more = tenants.len() > limit;
            tenants.truncate(limit);
            let next = more.then(|| tenants.last().cloned()).flatten();
            Ok(ScheduledPage { tenants, next })
        })
        .await
    }

    async fn purge_tenant(
        &self,
        client_key: &ClientKey,
        max_items: usize,
    ) -> Result<bool, StoreError> {
        // Every row of the tenant's partition: `<key> NUL` up to (not including) `<key> SOH`.
        let first = item_key(client_key, "");
        let end = partition_end(client_key.as_str());
        let own = item_key(client_key, TENANT_SK);
        let scheduled = schedule_key(client_key);
        self.write(move |table| {
            let mut budget = max_items;
            // At most the budget, and whether any row (besides the tenant's own) is left after.
            let mut doomed = Vec::new();
            let mut more = false;
            for entry in table
                .range::<&str>(first.as_str()..end.as_str())
                .map_err(db_error)?
            {
                let (key, _) = entry.map_err(db_error)?;
                if key.value() == own {
                    continue;
                }
                if doomed.len() >= budget {
                    more = true;
                    break;
                }
                doomed.push(key.value().to_owned());
            }
            for key in &doomed {
                table.remove(key.as_str()).map_err(db_error)?;
            }
            if more {
                return Ok(false);
            }
            budget = budget.saturating_sub(doomed.len());
            // The tenant's own row after everything else, the schedule entry last.
            for last in [own, scheduled] {
                if table.get(last.as_str()).map_err(db_error)?.is_some() {
                    if budget == 0 {
                        return Ok(false);
                    }
                    table.remove(last.as_str()).map_err(db_error)?;
                    budget = budget.saturating_sub(1);
                }
            }
            Ok(true)
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use secrecy::ExposeSecret;

    use super::*;
    use crate::keys::PARKED_PREFIX;

    fn client_key() -> ClientKey {
        ClientKey::parse("ck").unwrap()
    }

    async fn write_raw(store: &EmbeddedStore, sk: &'static str, bytes: &'static [u8]) {
        let key = item_key(&client_key(), sk);
        store
            .write(move |t| {
                t.insert(key.as_str(), bytes).map_err(db_error)?;
                Ok(())
            })
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn a_corrupt_row_is_a_corrupt_error_not_a_panic() {
        let dir = tempfile::tempdir().unwrap();
        let store = EmbeddedStore::open_with_local_key(dir.path()).unwrap();
        write_raw(&store, TENANT_SK, b"{not json").await;
        write_raw(&store, SETTINGS_SK, b"\xff\xfe").await;
        write_raw(&store, "AUDIT#00000000000000000001#x", b"[]").await;
        let err = store.get_tenant(&client_key(), 0).await.unwrap_err();
        assert!(matches!(err, StoreError::Corrupt { .. }), "{err:?}");
        let err = store.get_settings(&client_key(), 0).await.unwrap_err();
        assert!(matches!(err, StoreError::Corrupt { .. }), "{err:?}");
        let err = store
            .list_for_tenant(&client_key(), None, 10, 0)
            .await
            .unwrap_err();
        assert!(matches!(err, StoreError::Corrupt { .. }), "{err:?}");
    }

    fn parked_job(page: &str, at_ms: i64) -> ParkedJob {
        ParkedJob {
            client_key: client_key(),
            page_id: PageId::parse(page).unwrap(),
            at_ms,
            outcome: understudy_domain::EditOutcome::Blocked,
            reason: "why".into(),
            dead_lettered: false,
            job: "{}".into(),
        }
    }

    #[tokio::test]
    async fn a_corrupt_parked_row_is_a_corrupt_error_and_a_park_or_unpark_repairs_it() {
        let dir = tempfile::tempdir().unwrap();
        let store = EmbeddedStore::open_with_local_key(dir.path()).unwrap();
        let seven = PageId::parse("7").unwrap();
        // A job whose row is corrupt, and its index row.
        write_raw(&store, "PARKED#7", b"{not json").await;
        write_raw(&store, "PARKEDAT#00000000000000001000#7", b"{}").await;
        let err = store.parked(&client_key(), &seven, 0).await.unwrap_err();
        assert!(matches!(err, StoreError::Corrupt { .. }), "{err:?}");
        let err = store
            .list_parked(&client_key(), None, 10, 0)
            .await
            .unwrap_err();
        assert!(matches!(err, StoreError::Corrupt { .. }), "{err:?}");

        // A park replaces it; the index row it leaves behind is never listed.
        let job = parked_job("7", 2_000);
        store.park(&job).await.unwrap();
        assert_eq!(
            store.parked(&client_key(), &seven, 0).await.unwrap(),
            Some(job.clone())
        );
        let listed = store.list_parked(&client_key(), None, 10, 0).await.unwrap();
        assert_eq!(listed.jobs, std::slice::from_ref(&job));
        let after = Some((3_000, PageId::parse("1").unwrap()));
        let listed = store
            .list_parked(&client_key(), after.as_ref(), 1, 0)
            .await
            .unwrap();
        assert_eq!((listed.jobs.len(), listed.next), (1, None));

        // So does an unpark.
        write_raw(&store, "PARKED#8", b"[]").await;
        write_raw(&store, "PARKEDAT#00000000000000000500#8", b"{}").await;
        let eight = PageId::parse("8").unwrap();
        let err = store.parked(&client_key(), &eight, 0).await.unwrap_err();
        assert!(matches!(err, StoreError::Corrupt { .. }), "{err:?}");
        store.unpark(&client_key(), &eight).await.unwrap();
        assert_eq!(store.parked(&client_key(), &eight, 0).await.unwrap(), None);
        let listed = store.list_parked(&client_key(), None, 10, 0).await.unwrap();
        assert_eq!(listed.jobs, [job]);

        // An index row that names no page is corrupt too.
        write_raw(&store, "PARKEDAT#00000000000000009000#x", b"{}").await;
        let err = store
            .list_parked(&client_key(), None, 10, 0)
            .await
            .unwrap_err();
        assert!(matches!(err, StoreError::Corrupt { .. }), "{err:?}");
    }

    #[tokio::test]
    async fn a_parked_job_keeps_one_index_row_however_often_it_is_parked() {
        let dir = tempfile::tempdir().unwrap();
        let store = EmbeddedStore::open_with_local_key(dir.path()).unwrap();
        for at in [5_000, 1_000, 9_000, 9_000] {
            store.park(&parked_job("7", at)).await.unwrap();
        }
        let prefix = item_key(&client_key(), PARKED_AT_PREFIX);
        let index = store.read(move |t| keys_in(t, &prefix)).await.unwrap();
        assert_eq!(
            index,
            [item_key(&client_key(), "PARKEDAT#00000000000000009000#7")]
        );
        store
            .unpark(&client_key(), &PageId::parse("7").unwrap())
            .await
            .unwrap();
        for prefix in [PARKED_PREFIX, PARKED_AT_PREFIX] {
            let prefix = item_key(&client_key(), prefix);
            let left = store.read(move |t| keys_in(t, &prefix)).await.unwrap();
            assert!(left.is_empty(), "{left:?}");
        }
    }

    #[tokio::test]
    async fn no_row_names_a_closed_account() {
        let dir = tempfile::tempdir().unwrap();
        let store = EmbeddedStore::open_with_local_key(dir.path()).unwrap();
        let gone = AccountId::parse("557058:closed-account-4e1f").unwrap();
        let kept = AccountId::parse("557058:kept-account-9a0c").unwrap();
        for account in [&gone, &kept] {
            assert!(
                store
                    .note_account(&client_key(), account, 10)
                    .await
                    .unwrap()
            );
        }
        store
            .mark_reported(&client_key(), &gone, 20, Some(20))
            .await
            .unwrap();
        for (account, page) in [(&gone, "1"), (&kept, "2"), (&gone, "3")] {
            let record = AuditRecord {
                client_key: client_key(),
                page_id: PageId::parse(page).unwrap(),
                at_ms: 25_000,
                version_before: Some(1),
                version_after: Some(2),
                acted_as: ActedAs::User(account.clone()),
                strategy: understudy_domain::EditStrategy::Impersonate,
                outcome: understudy_domain::EditOutcome::Edited,
                reason: "edited".into(),
                job_id: format!("job-{page}"),
            };
            store.append(&record, 1_000).await.unwrap();
        }
        // Closed: the listing stays, flagged, until the erasure is done.
        store.close_account(&client_key(), &gone, 30).await.unwrap();
        assert!(all_rows(&store).await.contains("closed-account-4e1f"));
        assert_eq!(store.erase_account(&client_key(), &gone).await.unwrap(), 2);
        store.forget_account(&client_key(), &gone).await.unwrap();
        let rows = all_rows(&store).await;
        assert!(!rows.contains("closed-account-4e1f"), "{rows}");
        assert!(rows.contains(ClosedAccountKey::new(&gone).as_str()));
        assert!(rows.contains(kept.as_str()));
        assert!(rows.contains(AccountId::ERASED));
    }

    /// Every live row, key and value, as an operator reading through redb would see it.
    async fn all_rows(store: &EmbeddedStore) -> String {
        store
            .read(|t| {
                let mut rows = String::new();
                for entry in t.iter().map_err(db_error)? {
                    let (key, value) = entry.map_err(db_error)?;
                    rows.push_str(key.value());
                    rows.push_str(&String::from_utf8_lossy(value.value()));
                    rows.push('\n');
                }
                Ok(rows)
            })
            .await
            .unwrap()
    }

    #[tokio::test]
    async fn a_purge_takes_every_row_of_the_tenant_and_its_schedule_entry_only() {
        let dir = tempfile::tempdir().unwrap();
        let store = EmbeddedStore::open_with_local_key(dir.path()).unwrap();
        let other = ClientKey::parse("ck-other").unwrap();
        for tenant in [client_key(), other.clone()] {
            let payload = serde_json::json!({
                "key": "app", "clientKey": tenant.as_str(), "sharedSecret": "s",
                "baseUrl": "https://a.example/wiki"
            });
            let t = Tenant::from_install_payload(payload, 1).unwrap();
            store.save_install(&t, 1).await.unwrap();
            store.park(&parked_job("7", 1_000)).await.unwrap();
            // Rows whose kinds no port reads back, too.
            let key = item_key(&tenant, "SOMETHING#ELSE");
            store
                .write(move |t| put_row(t, &key, &ScheduleRow {}))
                .await
                .unwrap();
        }
        let before = all_rows(&store).await;
        assert!(before.contains("#REPORT#"));
        let mut calls = 0;
        while !store.purge_tenant(&client_key(), 1).await.unwrap() {
            calls += 1;
            assert!(calls < 100);
        }
        // PARKED#, PARKEDAT#, SOMETHING#ELSE (the parked job is `ck`'s), TENANT and the schedule
        // entry, one a call: four calls that leave some, the fifth that takes the last.
        assert_eq!(calls, 4);
        let after = store
            .read(|t| {
                let mut keys = Vec::new();
                for entry in t.iter().map_err(db_error)? {
                    keys.push(entry.map_err(db_error)?.0.value().to_owned());
                }
                Ok(keys)
            })
            .await
            .unwrap();
        assert!(
            after
                .iter()
                .all(|k| !k.starts_with("ck\u{0}") && !k.ends_with("\u{0}ck")),
            "{after:?}"
        );
        assert!(after.contains(&item_key(&other, TENANT_SK)));
        assert!(after.contains(&item_key(&other, "SOMETHING#ELSE")));
        assert!(after.contains(&schedule_key(&other)));
        assert!(store.purge_tenant(&client_key(), 0).await.unwrap());
    }

    #[tokio::test]
    async fn a_corrupt_account_row_is_a_corrupt_error() {
        let dir = tempfile::tempdir().unwrap();
        let store = EmbeddedStore::open_with_local_key(dir.path()).unwrap();
        write_raw(&store, "ACCOUNT#557058:a", b"{not json").await;
        let err = store
            .list_accounts(&client_key(), None, 10)
            .await
            .unwrap_err();
        assert!(matches!(err, StoreError::Corrupt { .. }), "{err:?}");
        write_raw(
            &store,
            "ACCOUNT#a b",
            br#"{"retrieved_at":1,"next_report_at":null}"#,
        )
        .await;
        let after = AccountId::parse("557058:a").unwrap();
        let err = store
            .list_accounts(&client_key(), Some(&after), 10)
            .await
            .unwrap_err();
        assert!(matches!(err, StoreError::Corrupt { .. }), "{err:?}");
    }

    fn forge_id(n: u8) -> InstallationId {
        InstallationId::parse(format!(
            "{}{n:08}-0000-0000-0000-000000000000",
            InstallationId::PREFIX
        ))
        .unwrap()
    }

    fn forge(id: &InstallationId, token: &str, at: i64) -> ForgeInstallation {
        ForgeInstallation {
            id: id.clone(),
            tenant_key: id.own_tenant_key(),
            app_id: "ari:cloud:ecosystem::app/app".into(),
            cloud_id: "cloud".into(),
            api_base_url: "https://api.atlassian.com/ex/confluence/cloud".into(),
            system_token: understudy_domain::SystemToken::received(token.into(), at),
            created_at: at,
            updated_at: at,
        }
    }

    async fn write_forge_raw(store: &EmbeddedStore, id: &InstallationId, sk: &str, bytes: &[u8]) {
        let key = item_key(&id.own_tenant_key(), sk);
        let bytes = bytes.to_vec();
        store
            .write(move |t| {
                t.insert(key.as_str(), bytes.as_slice()).map_err(db_error)?;
                Ok(())
            })
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn a_corrupt_forge_row_is_a_corrupt_error_and_a_record_or_link_repairs_it() {
        let dir = tempfile::tempdir().unwrap();
        let store = EmbeddedStore::open_with_local_key(dir.path()).unwrap();
        let id = forge_id(1);
        write_forge_raw(&store, &id, FORGE_INSTALLATION_SK, b"{not json").await;
        let err = store.get_installation(&id, 0).await.unwrap_err();
        assert!(matches!(err, StoreError::Corrupt { .. }), "{err:?}");
        // The record starts afresh over it.
        let recorded = store
            .record_installation(&forge(&id, "repaired", 5), 5)
            .await
            .unwrap();
        assert_eq!(recorded.created_at, 5);
        let got = store.get_installation(&id, 5).await.unwrap().unwrap();
        assert_eq!(got.system_token.token.expose_secret(), "repaired");

        // A link that names no valid clientKey fails reads, and the answer of a record (whose
        // write still happens); linking again repairs it.
        write_forge_raw(
            &store,
            &id,
            FORGE_LINK_SK,
            br#"{"client_key":"","linked_at":1}"#,
        )
        .await;
        let err = store.get_installation(&id, 6).await.unwrap_err();
        assert!(matches!(err, StoreError::Corrupt { .. }), "{err:?}");
        let err = store
            .record_installation(&forge(&id, "newer", 7), 7)
            .await
            .unwrap_err();
        assert!(matches!(err, StoreError::Corrupt { .. }), "{err:?}");
        store
            .link_installation(&id, &client_key(), 8)
            .await
            .unwrap();
        let got = store.get_installation(&id, 8).await.unwrap().unwrap();
        assert_eq!(got.tenant_key, client_key());
        assert_eq!(got.system_token.token.expose_secret(), "newer");
    }

    #[tokio::test]
    async fn a_system_token_moved_to_another_installation_does_not_open() {
        let dir = tempfile::tempdir().unwrap();
        let store = EmbeddedStore::open_with_local_key(dir.path()).unwrap();
        let (a, b) = (forge_id(1), forge_id(2));
        store
            .record_installation(&forge(&a, "token-of-a", 1), 1)
            .await
            .unwrap();
        store
            .record_installation(&forge(&b, "token-of-b", 1), 1)
            .await
            .unwrap();
        let (from, _) = forge_keys(&a);
        let (to, _) = forge_keys(&b);
        store
            .write(move |t| {
                let a: InstallationRow = get_row(t, &from, INSTALLATION)?.unwrap();
                let mut b: InstallationRow = get_row(t, &to, INSTALLATION)?.unwrap();
                b.system_token = a.system_token;
                put_row(t, &to, &b)
            })
            .await
            .unwrap();
        let err = store.get_installation(&b, 2).await.unwrap_err();
        assert!(matches!(err, StoreError::Crypto { .. }), "{err:?}");
    }

    #[tokio::test]
    async fn a_secret_moved_to_another_tenant_does_not_open() {
        let dir = tempfile::tempdir().unwrap();
        let store = EmbeddedStore::open_with_local_key(dir.path()).unwrap();
        let payload = serde_json::json!({
            "key": "app", "clientKey": "ck", "sharedSecret": "secret-of-ck",
            "baseUrl": "https://a.example/wiki"
        });
        let tenant = Tenant::from_install_payload(payload, 1).unwrap();
        store.save_install(&tenant, 1).await.unwrap();
        let other = Tenant {
            client_key: ClientKey::parse("other").unwrap(),
            ..tenant
        };
        store.save_install(&other, 1).await.unwrap();
        // Copy ck's sealed secret into other's row, as someone with write access to the file might.
        let from = item_key(&client_key(), TENANT_SK);
        let to = item_key(&other.client_key, TENANT_SK);
        store
            .write(move |t| {
                let a: TenantRow = get_row(t, &from, "tenant")?.unwrap();
                let mut b: TenantRow = get_row(t, &to, "tenant")?.unwrap();
                b.shared_secret = a.shared_secret;
                put_row(t, &to, &b)
            })
            .await
            .unwrap();
        let err = store.get_tenant(&other.client_key, 2).await.unwrap_err();
        assert!(matches!(err, StoreError::Crypto { .. }), "{err:?}");
    }
}
