//! Reporting the accounts a tenant's data holds to Atlassian's personal data reporting API
//! (docs/protocol.md §19): the port the HTTP client implements, and one tenant's run.
//!
//! A run lists the tenant's accounts from the registry, reports those due (never reported, or a
//! whole cycle ago) in batches of at most [`MAX_ACCOUNTS_PER_REPORT`], and applies each answer
//! before the next batch, so an interrupted run resumes where it stopped: what was reported is
//! marked, what was not is still due. A 429, an outage or a timeout ends the run for this tenant;
//! the rest waits for the next run.
//!
//! An account Atlassian names closed is erased at once: marked closed (for good, by a hash that
//! is not its accountId), its data erased ([`erase_account`]), and only then its listing taken
//! away, so a run that stops half-way leaves a closed listing the next run finishes erasing
//! without reporting it again.

use async_trait::async_trait;
use std::time::Duration;
use understudy_domain::{
    AccountId, AccountRegistry, AuditLog, ClientKey, DEFAULT_REPORT_CYCLE_SECONDS, PageId,
    ParkedJobs, StoreError, TokenCache, TokenCacheKey,
};

use crate::confluence::Door;

/// The most accounts one report may name (Atlassian's limit).
pub const MAX_ACCOUNTS_PER_REPORT: usize = 90;

/// One account as reported: the oldest time its data was retrieved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccountReport {
    /// The account.
    pub account: AccountId,
    /// Unix seconds (sent as RFC 3339).
    pub updated_at: i64,
}

/// What Atlassian says of an account it names in an answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AccountStatus {
    /// The account is closed: erase its data.
    Closed,
    /// The account's data changed: refresh it (its retrieval time starts again).
    Updated,
}

/// An answer: the accounts Atlassian named (the others need nothing), and the cycle it asks for.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ReportAnswer {
    /// Named accounts and their status.
    pub statuses: Vec<(AccountId, AccountStatus)>,
    /// `Cycle-Period`, seconds, when Atlassian sent one.
    pub cycle_period: Option<i64>,
}

/// Why a report was not answered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ReportError {
    /// 429: try again after the told wait.
    #[error("personal data reporting is rate limited{}", wait(*retry_after))]
    RateLimited {
        /// `Retry-After`, when sent.
        retry_after: Option<Duration>,
    },
    /// 5xx, a timeout or no connection: the next run tries again.
    #[error("personal data reporting is unavailable: {reason}")]
    Unavailable {
        /// What failed (no token, no body).
        reason: String,
    },
    /// Another refusal (400, 401, 403): a fault of the app or its credentials.
    #[error("personal data reporting refused the report ({status})")]
    Refused {
        /// HTTP status.
        status: u16,
    },
    /// The tenant's door cannot report (a Forge installation whose system token ran out).
    #[error("cannot report for this tenant now: {reason}")]
    NoCredentials {
        /// Why.
        reason: String,
    },
}

fn wait(d: Option<Duration>) -> String {
    d.map(|d| format!(", asked to wait {} s", d.as_secs()))
        .unwrap_or_default()
}

/// Atlassian's personal data reporting API, as the app of one tenant.
#[async_trait]
pub trait AccountReporting: Send + Sync {
    /// Reports `accounts` (at most [`MAX_ACCOUNTS_PER_REPORT`]) as the app, through `door`.
    async fn report_accounts(
        &self,
        door: Door<'_>,
        accounts: &[AccountReport],
    ) -> Result<ReportAnswer, ReportError>;
}

/// How a run reports and erases.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReportSettings {
    /// How often an account is reported when Atlassian's answer names no cycle (`Cycle-Period`);
    /// each answer's own cycle is kept with the accounts it answered.
    pub cycle_seconds: i64,
    /// The most accounts one tenant's run reports (its share of the run; the rest waits).
    pub max_accounts: usize,
    /// The scopes user tokens are cached under (as the token cache's key takes them: `""` when
    /// no `scope` is sent): a closed account's tokens are found by these.
    pub token_scopes: Vec<String>,
}

impl Default for ReportSettings {
    fn default() -> Self {
        Self {
            cycle_seconds: DEFAULT_REPORT_CYCLE_SECONDS,
            max_accounts: 10 * MAX_ACCOUNTS_PER_REPORT,
            token_scopes: vec![String::new()],
        }
    }
}

/// What one tenant's run did. Counts only: no accountId, so it can be logged.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ReportRun {
    /// Accounts reported.
    pub reported: usize,
    /// Reports sent.
    pub batches: usize,
    /// Accounts Atlassian named closed in this run.
    pub closed: usize,
    /// Closed accounts whose data this run erased (the newly closed, and any an interrupted run
    /// left half-way).
    pub erased: usize,
    /// Audit records rewritten to name [`AccountId::erased`].
    pub audit_records_erased: usize,
    /// Parked jobs taken away because they named a closed account.
    pub parked_jobs_erased: usize,
    /// Accounts Atlassian named updated.
    pub updated: usize,
    /// The cycle Atlassian asked for, when it did.
    pub cycle_period: Option<i64>,
    /// Why the run stopped early, when it did (the rest is left for the next run).
    pub stopped: Option<ReportError>,
}

/// Why a run could not go on at all.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The store could not be read or written.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Everything a run reads and writes: the account registry, and the places a closed account's
/// data is erased from.
pub trait PersonalDataStore: AccountRegistry + AuditLog + ParkedJobs + TokenCache {}
impl<T: AccountRegistry + AuditLog + ParkedJobs + TokenCache + ?Sized> PersonalDataStore for T {}

/// What erasing one account took away.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Erased {
    /// Audit records that now name [`AccountId::erased`].
    pub audit_records: usize,
    /// Parked jobs taken away.
    pub parked_jobs: usize,
}

/// Erases a closed account's data from the tenant, everywhere the app keeps it: its cached user
/// tokens go (found by `token_scopes`), audit records keep the fact of each edit with
/// [`AccountId::erased`] in its place, and parked jobs that name it go. Jobs still queued for
/// it are skipped by the worker, which checks [`AccountRegistry::is_closed`] first. Doing it
/// again finds nothing more to do.
pub async fn erase_account<S: PersonalDataStore + ?Sized>(
    store: &S,
    tenant: &ClientKey,
    account: &AccountId,
    token_scopes: &[String],
    now: i64,
) -> Result<Erased, StoreError> {
    for scopes in token_scopes {
        store
            .drop_token(tenant, &TokenCacheKey::new(account, scopes))
            .await?;
    }
    let audit_records = store.erase_account(tenant, account).await?;
    let mut parked_jobs = 0usize;
    let mut after: Option<(i64, PageId)> = None;
    loop {
        let page = store.list_parked(tenant, after.as_ref(), 100, now).await?;
        for job in &page.jobs {
            if job.names(account) {
                store.unpark(tenant, &job.page_id).await?;
                parked_jobs = parked_jobs.saturating_add(1);
            }
        }
        match page.next {
            Some(next) => after = Some(next),
            None => break,
        }
    }
    Ok(Erased {
        audit_records,
        parked_jobs,
    })
}

/// Reports the tenant's due accounts (at most `settings.max_accounts` of them), and erases the
/// data of those Atlassian names closed. An account closed by an earlier, interrupted run is
/// erased without being reported again.
pub async fn report_tenant<S: PersonalDataStore + ?Sized>(
    store: &S,
    reporting: &dyn AccountReporting,
    door: Door<'_>,
    now: i64,
    settings: &ReportSettings,
) -> Result<ReportRun, RunError> {
    let tenant = door.tenant_key();
    let mut run = ReportRun::default();
    let mut after: Option<AccountId> = None;
    let mut due: Vec<AccountReport> = Vec::new();
    let mut collected = 0usize;
    loop {
        let page = store
            .list_accounts(tenant, after.as_ref(), MAX_ACCOUNTS_PER_REPORT)
            .await?;
        for stored in page.accounts {
            if stored.closed {
                finish_erasure(store, tenant, &stored.account, settings, now, &mut run).await?;
            } else if collected < settings.max_accounts && stored.due(now) {
                collected = collected.saturating_add(1);
                due.push(AccountReport {
                    account: stored.account,
                    updated_at: stored.retrieved_at,
                });
            }
        }
        while due.len() >= MAX_ACCOUNTS_PER_REPORT {
            let batch: Vec<AccountReport> = due.drain(..MAX_ACCOUNTS_PER_REPORT).collect();
            if let Err(error) =
                send(store, reporting, door, &batch, now, settings, &mut run).await?
            {
                run.stopped = Some(error);
                return Ok(run);
            }
        }
        match page.next {
            Some(next) => after = Some(next),
            None => break,
        }
    }
    if !due.is_empty()
        && let Err(error) = send(store, reporting, door, &due, now, settings, &mut run).await?
    {
        run.stopped = Some(error);
    }
    Ok(run)
}

/// A closed account: its data erased, then its listing taken away (in that order, so that a run
/// that stops in between finds it again and finishes).
async fn finish_erasure<S: PersonalDataStore + ?Sized>(
    store: &S,
    tenant: &ClientKey,
    account: &AccountId,
    settings: &ReportSettings,
    now: i64,
    run: &mut ReportRun,
) -> Result<(), StoreError> {
    let erased = erase_account(store, tenant, account, &settings.token_scopes, now).await?;
    store.forget_account(tenant, account).await?;
    run.erased = run.erased.saturating_add(1);
    run.audit_records_erased = run
        .audit_records_erased
        .saturating_add(erased.audit_records);
    run.parked_jobs_erased = run.parked_jobs_erased.saturating_add(erased.parked_jobs);
    Ok(())
}

/// One batch: reported, and its answer applied to the store before the next.
async fn send<S: PersonalDataStore + ?Sized>(
    store: &S,
    reporting: &dyn AccountReporting,
    door: Door<'_>,
    batch: &[AccountReport],
    now: i64,
    settings: &ReportSettings,
    run: &mut ReportRun,
) -> Result<Result<(), ReportError>, StoreError> {
    let tenant = door.tenant_key();
    let answer = match reporting.report_accounts(door, batch).await {
        Ok(answer) => answer,
        Err(error) => return Ok(Err(error)),
    };
    run.batches = run.batches.saturating_add(1);
    run.reported = run.reported.saturating_add(batch.len());
    if answer.cycle_period.is_some() {
        run.cycle_period = answer.cycle_period;
    }
    // Next due a whole cycle from now: the one this answer asks for, else the default. (A
    // cycle below an hour is taken as an hour: the run comes round daily anyway.)
    let cycle = answer
        .cycle_period
        .unwrap_or(settings.cycle_seconds)
        .max(3600);
    let next_report_at = now.saturating_add(cycle);
    for report in batch {
        let status = answer
            .statuses
            .iter()
            .find(|(account, _)| account == &report.account)
            .map(|(_, status)| *status);
        match status {
            Some(AccountStatus::Closed) => {
                // Closed first: from here the worker skips its jobs and nothing lists it again.
                store.close_account(tenant, &report.account, now).await?;
                run.closed = run.closed.saturating_add(1);
                finish_erasure(store, tenant, &report.account, settings, now, run).await?;
            }
            Some(AccountStatus::Updated) => {
                store
                    .mark_reported(tenant, &report.account, next_report_at, Some(now))
                    .await?;
                run.updated = run.updated.saturating_add(1);
            }
            None => {
                store
                    .mark_reported(tenant, &report.account, next_report_at, None)
                    .await?;
            }
        }
    }
    Ok(Ok(()))
}
