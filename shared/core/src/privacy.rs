//! Reporting the accounts a tenant's data holds to Atlassian's personal data reporting API
//! (docs/protocol.md §19): the port the HTTP client implements, and one tenant's run.
//!
//! A run lists the tenant's accounts from the registry, reports those due (never reported, or a
//! whole cycle ago) in batches of at most [`MAX_ACCOUNTS_PER_REPORT`], and applies each answer
//! before the next batch, so an interrupted run resumes where it stopped: what was reported is
//! marked, what was not is still due. A 429, an outage or a timeout ends the run for this tenant;
//! the rest waits for the next run.

use async_trait::async_trait;
use std::time::Duration;
use understudy_domain::{AccountId, AccountRegistry, StoreError};

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

/// What one tenant's run did.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ReportRun {
    /// Accounts reported.
    pub reported: usize,
    /// Reports sent.
    pub batches: usize,
    /// Accounts Atlassian named closed (their listing is gone; erase their data).
    pub closed: Vec<AccountId>,
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
    /// The registry could not be read or written.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Reports the tenant's due accounts, at most `max_accounts` of them in this run.
pub async fn report_tenant<R: AccountRegistry + ?Sized>(
    registry: &R,
    reporting: &dyn AccountReporting,
    door: Door<'_>,
    now: i64,
    cycle_seconds: i64,
    max_accounts: usize,
) -> Result<ReportRun, RunError> {
    let tenant = door.tenant_key();
    let mut run = ReportRun::default();
    let mut after: Option<AccountId> = None;
    let mut due: Vec<AccountReport> = Vec::new();
    let mut collected = 0usize;
    loop {
        let page = registry
            .list_accounts(tenant, after.as_ref(), MAX_ACCOUNTS_PER_REPORT)
            .await?;
        for stored in page.accounts {
            if collected < max_accounts && stored.due(now, cycle_seconds) {
                collected = collected.saturating_add(1);
                due.push(AccountReport {
                    account: stored.account,
                    updated_at: stored.retrieved_at,
                });
            }
        }
        while due.len() >= MAX_ACCOUNTS_PER_REPORT {
            let batch: Vec<AccountReport> = due.drain(..MAX_ACCOUNTS_PER_REPORT).collect();
            if let Err(error) = send(registry, reporting, door, &batch, now, &mut run).await? {
                run.stopped = Some(error);
                return Ok(run);
            }
        }
        match page.next {
            Some(next) if collected < max_accounts => after = Some(next),
            _ => break,
        }
    }
    if !due.is_empty()
        && let Err(error) = send(registry, reporting, door, &due, now, &mut run).await?
    {
        run.stopped = Some(error);
    }
    Ok(run)
}

/// One batch: reported, and its answer applied to the registry before the next.
async fn send<R: AccountRegistry + ?Sized>(
    registry: &R,
    reporting: &dyn AccountReporting,
    door: Door<'_>,
    batch: &[AccountReport],
    now: i64,
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
    for report in batch {
        let status = answer
            .statuses
            .iter()
            .find(|(account, _)| account == &report.account)
            .map(|(_, status)| *status);
        match status {
            Some(AccountStatus::Closed) => {
                registry.close_account(tenant, &report.account, now).await?;
                run.closed.push(report.account.clone());
            }
            Some(AccountStatus::Updated) => {
                registry
                    .mark_reported(tenant, &report.account, now, true)
                    .await?;
                run.updated = run.updated.saturating_add(1);
            }
            None => {
                registry
                    .mark_reported(tenant, &report.account, now, false)
                    .await?;
            }
        }
    }
    Ok(Ok(()))
}
