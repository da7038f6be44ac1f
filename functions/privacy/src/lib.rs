//! The personal data run (docs/protocol.md §19): every hour, the tenants of that hour's report
//! slot are visited, so each tenant is visited once a day at an hour of its own
//! ([`understudy_domain::report_slot`]) and the reporting API sees the app's tenants spread over
//! the day rather than all at once. A visit does one of three things:
//!
//! - an installed Connect tenant, or a Forge installation with a fresh system token: its due
//!   accounts are reported and closed accounts' data erased ([`understudy_core::report_tenant`]);
//! - a tenant whose retention after uninstall is over (neither the tenant nor the installation
//!   is readable any more): everything kept under its key is deleted, its schedule entry last;
//! - anything else (uninstalled but still retained, a Forge installation waiting for the next
//!   invocation's system token, a Forge installation linked to a Connect tenant, whose data the
//!   Connect tenant's visit covers): nothing this time.
//!
//! On Lambda the run is the `privacy` function on an EventBridge schedule (template.yaml); in
//! the local app, a timer, and `understudy privacy-report --once` by hand.

use std::sync::Arc;
use std::time::{Duration, Instant};

use connect_auth::Clock;
use understudy_core::{
    AccountReporting, Door, PersonalDataStore, ReportRun, ReportSettings, RunError, report_tenant,
};
use understudy_domain::{
    ClientKey, ForgeInstallations, InstallationId, REPORT_SLOTS, StoreError, TenantState,
    TenantStore,
};
use understudy_web::deployed::DeployedConfig;
use understudy_web::env::{Env, FromEnv};

/// How many records one purge step deletes before the deadline is looked at again.
const PURGE_STEP: usize = 500;

/// One tenant's share of a run when `PRIVACY_MAX_ACCOUNTS_PER_TENANT` is not set: ten reports.
pub const DEFAULT_MAX_ACCOUNTS_PER_TENANT: usize = 10 * understudy_core::MAX_ACCOUNTS_PER_REPORT;

/// How many scheduled tenants are read per page.
const TENANT_PAGE: usize = 100;

/// The privacy function's settings on Lambda, read once at its cold start.
#[derive(Debug, Clone)]
pub struct PrivacyConfig {
    /// The shared settings and the store's.
    pub deployed: DeployedConfig,
    /// The HTTP client's (`ATLASSIAN_REPORT_ACCOUNTS_URL`, the user scopes tokens are cached
    /// under, retries).
    pub client: understudy_confluence::ClientConfig,
    /// `PRIVACY_MAX_ACCOUNTS_PER_TENANT` (default [`DEFAULT_MAX_ACCOUNTS_PER_TENANT`]): one tenant's share of a
    /// run; the rest of its accounts wait for its next visit.
    pub max_accounts_per_tenant: usize,
}

impl FromEnv for PrivacyConfig {
    fn read(env: &Env<'_>) -> Option<Self> {
        let deployed = DeployedConfig::read(env);
        let client = env.check(understudy_confluence::ClientConfig::from_lookup(
            env.lookup(),
        ));
        let max_accounts_per_tenant = env.or(
            "PRIVACY_MAX_ACCOUNTS_PER_TENANT",
            DEFAULT_MAX_ACCOUNTS_PER_TENANT,
            |v| match v.parse::<usize>() {
                Ok(n) if n > 0 => Ok(n),
                _ => Err("must be a whole number above 0".into()),
            },
        );
        Some(Self {
            deployed: deployed?,
            client: client?,
            max_accounts_per_tenant,
        })
    }
}

/// The report settings a client configuration implies: user tokens are cached under its user
/// scopes, or under no scope (`""`) when it sends none.
pub fn report_settings(
    client: &understudy_confluence::ClientConfig,
    max_accounts: usize,
) -> ReportSettings {
    let mut token_scopes = vec![String::new()];
    if let Some(scopes) = &client.user_scopes {
        token_scopes.push(scopes.as_str().to_owned());
    }
    ReportSettings {
        max_accounts,
        token_scopes,
        ..ReportSettings::default()
    }
}

/// What a visit did with one tenant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Visit {
    /// Its accounts were reported (and closed ones erased).
    Reported(ReportRun),
    /// Its data was deleted; `done` is false when the deadline came first (the next visit goes
    /// on).
    Purged {
        /// Nothing is left.
        done: bool,
    },
    /// Nothing to do this time, and why.
    Skipped(&'static str),
}

/// What a run did. Counts only (no accountId, no clientKey): it is logged whole.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PrivacyRun {
    /// Tenants visited.
    pub visited: usize,
    /// Tenants whose accounts were reported.
    pub reported_tenants: usize,
    /// Accounts reported.
    pub accounts_reported: usize,
    /// Closed accounts whose data was erased.
    pub accounts_erased: usize,
    /// Tenants whose data was deleted whole.
    pub purged_tenants: usize,
    /// Tenants skipped.
    pub skipped: usize,
    /// Tenants whose visit failed or stopped early (left for their next visit).
    pub unfinished: usize,
    /// The deadline came before every tenant of the slot was visited.
    pub out_of_time: bool,
}

/// The run: the store, the reporting API, and the clock.
pub struct PrivacyRunner<S: ?Sized> {
    store: Arc<S>,
    reporting: Arc<dyn AccountReporting>,
    settings: ReportSettings,
    clock: Arc<dyn Clock>,
}

impl<S: ?Sized> std::fmt::Debug for PrivacyRunner<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PrivacyRunner")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl<S> PrivacyRunner<S>
where
    S: PersonalDataStore + TenantStore + ForgeInstallations + ?Sized,
{
    /// A runner.
    pub fn new(
        store: Arc<S>,
        reporting: Arc<dyn AccountReporting>,
        settings: ReportSettings,
        clock: Arc<dyn Clock>,
    ) -> Self {
        Self {
            store,
            reporting,
            settings,
            clock,
        }
    }

    /// The hourly run: the tenants of the slot of the hour it is now.
    pub async fn run_this_hour(&self, deadline: Instant) -> PrivacyRun {
        let slot = understudy_domain::report_slot_at(self.clock.now_unix());
        self.run_slot(slot, deadline).await
    }

    /// Every slot, one after the other (`understudy privacy-report --once`): each tenant's due
    /// accounts, whatever its hour.
    pub async fn run_every_slot(&self, deadline: Instant) -> PrivacyRun {
        let mut total = PrivacyRun::default();
        for slot in 0..REPORT_SLOTS {
            let run = self.run_slot(slot, deadline).await;
            total.visited += run.visited;
            total.reported_tenants += run.reported_tenants;
            total.accounts_reported += run.accounts_reported;
            total.accounts_erased += run.accounts_erased;
            total.purged_tenants += run.purged_tenants;
            total.skipped += run.skipped;
            total.unfinished += run.unfinished;
            if run.out_of_time {
                total.out_of_time = true;
                break;
            }
        }
        total
    }

    /// Visits the tenants of `slot`, one at a time, until all are visited or `deadline` is near.
    #[tracing::instrument(skip(self, deadline))]
    pub async fn run_slot(&self, slot: u32, deadline: Instant) -> PrivacyRun {
        let mut run = PrivacyRun::default();
        let mut after: Option<ClientKey> = None;
        loop {
            let page = match self
                .store
                .scheduled_tenants(slot, after.as_ref(), TENANT_PAGE)
                .await
            {
                Ok(page) => page,
                Err(error) => {
                    tracing::error!(%error, "the report schedule could not be read");
                    run.unfinished += 1;
                    return run;
                }
            };
            for tenant in &page.tenants {
                if Instant::now() >= deadline {
                    run.out_of_time = true;
                    tracing::warn!(?run, "out of time: the slot's other tenants wait a day");
                    return run;
                }
                run.visited += 1;
                match self.visit(tenant, deadline).await {
                    Ok(Visit::Reported(report)) => {
                        run.reported_tenants += 1;
                        run.accounts_reported += report.reported;
                        run.accounts_erased += report.erased;
                        if let Some(stopped) = &report.stopped {
                            run.unfinished += 1;
                            tracing::warn!(client_key = %tenant.as_str(), error = %stopped,
                                "reporting stopped early: the rest waits for the next visit");
                        }
                        tracing::info!(client_key = %tenant.as_str(), reported = report.reported,
                            batches = report.batches, closed = report.closed, erased = report.erased,
                            updated = report.updated, "accounts reported");
                    }
                    Ok(Visit::Purged { done }) => {
                        if done {
                            run.purged_tenants += 1;
                        } else {
                            run.unfinished += 1;
                        }
                        tracing::info!(client_key = %tenant.as_str(), done,
                            "retention over: the tenant's data deleted");
                    }
                    Ok(Visit::Skipped(why)) => {
                        run.skipped += 1;
                        tracing::debug!(client_key = %tenant.as_str(), why, "tenant skipped");
                    }
                    Err(error) => {
                        run.unfinished += 1;
                        tracing::error!(client_key = %tenant.as_str(), %error,
                            "the tenant's visit failed: it is visited again tomorrow");
                    }
                }
            }
            match page.next {
                Some(next) => after = Some(next),
                None => return run,
            }
        }
    }

    /// One tenant's visit.
    pub async fn visit(
        &self,
        tenant_key: &ClientKey,
        deadline: Instant,
    ) -> Result<Visit, RunError> {
        let now = self.clock.now_unix();
        if let Some(tenant) = self.store.get_tenant(tenant_key, now).await? {
            if tenant.state == TenantState::Uninstalled {
                return Ok(Visit::Skipped(
                    "uninstalled: its data goes when the retention is over",
                ));
            }
            let run = report_tenant(
                &*self.store,
                &*self.reporting,
                Door::Connect(&tenant),
                now,
                &self.settings,
            )
            .await?;
            return Ok(Visit::Reported(run));
        }
        if let Ok(id) = InstallationId::parse(tenant_key.as_str())
            && let Some(installation) = self.store.get_installation(&id, now).await?
        {
            if &installation.tenant_key != tenant_key {
                return Ok(Visit::Skipped(
                    "a Forge installation linked to a Connect tenant: that tenant's visit covers it",
                ));
            }
            if !installation.system_token.is_fresh(now) {
                return Ok(Visit::Skipped(
                    "no fresh Forge system token: the next invocation brings one",
                ));
            }
            let run = report_tenant(
                &*self.store,
                &*self.reporting,
                Door::forge(&installation),
                now,
                &self.settings,
            )
            .await?;
            return Ok(Visit::Reported(run));
        }
        Ok(Visit::Purged {
            done: self.purge(tenant_key, deadline).await?,
        })
    }

    /// Deletes the tenant's data in steps until it is gone or the deadline is near.
    async fn purge(&self, tenant_key: &ClientKey, deadline: Instant) -> Result<bool, StoreError> {
        loop {
            if self.store.purge_tenant(tenant_key, PURGE_STEP).await? {
                return Ok(true);
            }
            if Instant::now() >= deadline {
                return Ok(false);
            }
        }
    }
}

/// The deadline of a run that may take `budget`, less a margin for the last tenant's visit.
pub fn deadline_in(budget: Duration) -> Instant {
    let margin = Duration::from_secs(30).min(budget / 4);
    Instant::now() + budget.saturating_sub(margin)
}
