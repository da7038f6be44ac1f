//! The edit worker: one queued job at a time, the same code on SQS and on the local queue.

use std::collections::HashSet;
use std::sync::Arc;

use aws_lambda_events::event::sqs::{BatchItemFailure, SqsBatchResponse, SqsEvent};
use connect_auth::Clock;
use understudy_core::{Door, EditEngine, EditJob, EditMode, EditResult, checked_tenant_key};
use understudy_domain::{
    AccountId, AccountRegistry, ActedAs, AuditLog, AuditRecord, ClosedAccountKey, EditOutcome,
    EditStrategy, ForgeInstallation, ForgeInstallations, InstallationId, ParkedJob, ParkedJobs,
    Tenant, TenantState, TenantStore,
};
use understudy_queue::EditJobMessage;

/// How many times a job is tried before it goes to the dead-letter queue (SQS's
/// `maxReceiveCount` in template.yaml must be the same).
pub const DEFAULT_MAX_RECEIVES: u32 = 5;

/// What the queue should do with a job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JobOutcome {
    /// Done (edited, unchanged, blocked or failed for good): delete it.
    Done,
    /// A passing failure: deliver it again later.
    RetryLater {
        /// Why, for the log.
        reason: String,
    },
    /// It kept failing: move it to the dead-letter queue (it has been audited).
    DeadLetter {
        /// Why.
        reason: String,
    },
}

/// Runs edit jobs.
pub struct EditWorker<S: ?Sized, C> {
    store: Arc<S>,
    engine: EditEngine,
    clock: C,
    max_receives: u32,
    audit_retention_seconds: i64,
}

impl<S: ?Sized, C: std::fmt::Debug> std::fmt::Debug for EditWorker<S, C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EditWorker")
            .field("max_receives", &self.max_receives)
            .finish_non_exhaustive()
    }
}

/// The tenant record a job edits through: the Connect tenant, or the Forge installation.
enum Site {
    Connect(Tenant),
    Forge(ForgeInstallation),
}

impl Site {
    fn door(&self) -> Door<'_> {
        match self {
            Self::Connect(tenant) => Door::Connect(tenant),
            Self::Forge(installation) => Door::forge(installation),
        }
    }
}

impl<S, C> EditWorker<S, C>
where
    S: TenantStore + ForgeInstallations + AuditLog + ParkedJobs + AccountRegistry + ?Sized,
    C: Clock,
{
    /// A worker that dead-letters a job on its `max_receives`-th failed delivery.
    pub fn new(store: Arc<S>, engine: EditEngine, clock: C, max_receives: u32) -> Self {
        Self {
            store,
            engine,
            clock,
            max_receives: max_receives.max(1),
            audit_retention_seconds: understudy_core::EngineSettings::default()
                .audit_retention_seconds,
        }
    }

    /// Runs one job, delivered for the `receives`-th time.
    #[tracing::instrument(skip_all, fields(client_key = %job.client_key, page_id = %job.page_id, job_id = %job.job_id, receives))]
    pub async fn run(&self, job: &EditJobMessage, receives: u32) -> JobOutcome {
        let now = self.clock.now_unix();
        let site = match &job.forge_installation {
            None => self.connect_site(job, now).await,
            Some(id) => self.forge_site(job, id, now).await,
        };
        let site = match site {
            Ok(Some(site)) => site,
            Ok(None) => return JobOutcome::Done,
            Err(reason) => return self.retry_or_dead_letter(job, receives, reason).await,
        };
        match self.for_closed_account(job).await {
            Ok(false) => {}
            Ok(true) => return JobOutcome::Done,
            Err(reason) => return self.retry_or_dead_letter(job, receives, reason).await,
        }
        let mode = EditMode::AppFirst {
            policy: job.policy,
            user: job.user.clone(),
        };
        let report = self
            .engine
            .execute(EditJob {
                door: site.door(),
                page_id: &job.page_id,
                edit: &job.edit,
                mode: &mode,
                job_id: &job.job_id,
            })
            .await;
        if report.is_transient() {
            return self
                .retry_or_dead_letter(job, receives, report.reason())
                .await;
        }
        if let EditResult::Failed(err) = &report.result {
            tracing::warn!(client_key = job.client_key.as_str(), job_id = %job.job_id, error = %err, "edit failed for good");
        }
        match report.result.outcome() {
            EditOutcome::Blocked | EditOutcome::Failed => {
                self.park(job, report.result.outcome(), report.reason(), false)
                    .await;
            }
            EditOutcome::Edited | EditOutcome::Unchanged => self.unpark(job).await,
            // A bound the page would exceed: running it again gives the same answer. (The engine
            // never skips: a closed account's job is skipped before it.)
            EditOutcome::Refused | EditOutcome::Skipped => {}
        }
        JobOutcome::Done
    }

    /// Whether the job is for a user whose account Atlassian reported closed: then nothing is done
    /// in that person's name (not even as the app on their behalf), and the job is audited as
    /// skipped without naming them. `Err` when the store cannot tell.
    async fn for_closed_account(&self, job: &EditJobMessage) -> Result<bool, String> {
        let Some(user) = &job.user else {
            return Ok(false);
        };
        let closed = self
            .store
            .is_closed(&job.client_key, &ClosedAccountKey::new(user))
            .await
            .map_err(|err| format!("store unavailable: {err}"))?;
        if !closed {
            return Ok(false);
        }
        self.audit_untried(
            job,
            ActedAs::User(AccountId::erased()),
            EditStrategy::Skip,
            EditOutcome::Skipped,
            "skipped: the user's Atlassian account is closed, so nothing is done in their name \
             and their data was erased"
                .into(),
        )
        .await;
        tracing::info!(job_id = %job.job_id, "job of a closed account skipped");
        Ok(true)
    }

    /// Audits a job that ends without an edit attempt of the engine's (dead-lettered, or skipped).
    /// A store that is down loses the record, not the job's outcome: logged, not retried, as
    /// running the job again would only try the same write.
    async fn audit_untried(
        &self,
        job: &EditJobMessage,
        acted_as: ActedAs,
        strategy: EditStrategy,
        outcome: EditOutcome,
        reason: String,
    ) {
        let record = AuditRecord {
            client_key: job.client_key.clone(),
            page_id: job.page_id.clone(),
            at_ms: self.clock.now_unix().saturating_mul(1000),
            version_before: None,
            version_after: None,
            acted_as,
            strategy,
            outcome,
            reason,
            job_id: job.job_id.clone(),
        };
        if let Err(err) = self
            .store
            .append(&record, self.audit_retention_seconds)
            .await
        {
            tracing::error!(error = %err, job_id = %job.job_id, "audit record not written");
        }
    }

    /// The Connect tenant of a job; `None` when the job is dropped (tenant gone, uninstalled or
    /// disabled); `Err` for a passing failure.
    async fn connect_site(&self, job: &EditJobMessage, now: i64) -> Result<Option<Site>, String> {
        let client_key = job.client_key.as_str();
        let tenant = match self.store.get_tenant(&job.client_key, now).await {
            Ok(Some(tenant)) => tenant,
            Ok(None) => {
                tracing::info!(client_key, job_id = %job.job_id, "tenant is gone: job dropped");
                return Ok(None);
            }
            Err(err) => return Err(format!("store unavailable: {err}")),
        };
        match tenant.state {
            TenantState::Uninstalled | TenantState::Disabled => {
                tracing::info!(client_key, job_id = %job.job_id, state = tenant.state.as_str(),
                    "tenant uninstalled or disabled the app: job dropped");
                Ok(None)
            }
            TenantState::Installed | TenantState::Enabled => Ok(Some(Site::Connect(tenant))),
        }
    }

    /// The Forge installation of a job, read afresh so the latest system token is used; `None`
    /// when it is gone (or now belongs to another tenant); `Err` for a passing failure, including
    /// a system token past its lifetime: the job waits for the next invocation's fresh one and is
    /// dead-lettered with that reason if none comes.
    async fn forge_site(
        &self,
        job: &EditJobMessage,
        id: &InstallationId,
        now: i64,
    ) -> Result<Option<Site>, String> {
        let mut installation = match self.store.get_installation(id, now).await {
            Ok(Some(installation)) => installation,
            Ok(None) => {
                tracing::info!(installation_id = %id, job_id = %job.job_id,
                    "Forge installation is gone: job dropped");
                return Ok(None);
            }
            Err(err) => return Err(format!("store unavailable: {err}")),
        };
        installation.tenant_key = match checked_tenant_key(&*self.store, &installation, now).await {
            Ok(key) => key,
            Err(err) => return Err(format!("store unavailable: {err}")),
        };
        if installation.tenant_key != job.client_key {
            tracing::warn!(installation_id = %id, job_id = %job.job_id,
                "the Forge installation belongs to another tenant now: job dropped");
            return Ok(None);
        }
        if !installation.system_token.is_fresh(now) {
            return Err(understudy_core::TokenError::SystemTokenExpired.to_string());
        }
        Ok(Some(Site::Forge(installation)))
    }

    /// Keeps the job as its page's last blocked or failed one, for the admin page's "retry now".
    /// A store that is down costs the admin that button, never the job: logged, not failed.
    async fn park(&self, job: &EditJobMessage, outcome: EditOutcome, reason: String, dead: bool) {
        let text = match job.to_json() {
            Ok(text) => text,
            Err(err) => {
                tracing::warn!(job_id = %job.job_id, error = %err, "job not parked");
                return;
            }
        };
        // A parked job names the user who triggered it: listed for personal data reporting.
        if let Some(user) = &job.user
            && let Err(err) = self
                .store
                .note_account(&job.client_key, user, self.clock.now_unix())
                .await
        {
            tracing::warn!(job_id = %job.job_id, error = %err, "the job's account could not be listed");
        }
        let parked = ParkedJob {
            client_key: job.client_key.clone(),
            page_id: job.page_id.clone(),
            at_ms: self.clock.now_unix().saturating_mul(1000),
            outcome,
            reason,
            dead_lettered: dead,
            job: text,
        };
        if let Err(err) = self.store.park(&parked).await {
            tracing::warn!(job_id = %job.job_id, error = %err, "job not parked");
        }
    }

    /// The page was edited (or needed nothing): its parked job, if any, is done with.
    async fn unpark(&self, job: &EditJobMessage) {
        if let Err(err) = self.store.unpark(&job.client_key, &job.page_id).await {
            tracing::warn!(job_id = %job.job_id, error = %err, "parked job not taken away");
        }
    }

    async fn retry_or_dead_letter(
        &self,
        job: &EditJobMessage,
        receives: u32,
        reason: String,
    ) -> JobOutcome {
        if receives < self.max_receives {
            tracing::warn!(client_key = job.client_key.as_str(), job_id = %job.job_id, receives,
                reason = %reason, "passing failure: the job will be delivered again");
            return JobOutcome::RetryLater { reason };
        }
        let reason =
            format!("gave up after {receives} attempts, moved to the dead-letter queue: {reason}");
        self.audit_untried(
            job,
            ActedAs::App,
            EditStrategy::AsApp,
            EditOutcome::Failed,
            reason.clone(),
        )
        .await;
        tracing::error!(client_key = job.client_key.as_str(), job_id = %job.job_id, reason = %reason, "job dead-lettered");
        self.park(job, EditOutcome::Failed, reason.clone(), true)
            .await;
        JobOutcome::DeadLetter { reason }
    }
}

/// Runs an SQS FIFO batch and reports the records to deliver again.
///
/// Records are handled in order. Once a record of a page fails, the later records of that page in
/// the batch are returned unprocessed too, so that SQS redelivers them after it: edits of one page
/// never overtake each other. A message that is not a job is returned as failed every time, so
/// that the redrive policy parks it in the dead-letter queue.
pub async fn handle_sqs_batch<S, C>(worker: &EditWorker<S, C>, event: SqsEvent) -> SqsBatchResponse
where
    S: TenantStore + ForgeInstallations + AuditLog + ParkedJobs + AccountRegistry + ?Sized,
    C: Clock,
{
    let mut failed_groups = HashSet::new();
    let mut response = SqsBatchResponse::default();
    for record in event.records {
        let id = record.message_id.clone().unwrap_or_default();
        let group = record
            .attributes
            .get("MessageGroupId")
            .cloned()
            .unwrap_or_default();
        let outcome = if failed_groups.contains(&group) {
            JobOutcome::RetryLater {
                reason: "an earlier edit of this page is pending".into(),
            }
        } else {
            let receives = record
                .attributes
                .get("ApproximateReceiveCount")
                .and_then(|n| n.parse().ok())
                .unwrap_or(1);
            match EditJobMessage::from_json(record.body.as_deref().unwrap_or_default()) {
                Ok(job) => worker.run(&job, receives).await,
                Err(err) => {
                    tracing::error!(message_id = %id, error = %err, "unreadable message");
                    JobOutcome::DeadLetter {
                        reason: err.to_string(),
                    }
                }
            }
        };
        if outcome != JobOutcome::Done {
            failed_groups.insert(group);
            let mut failure = BatchItemFailure::default();
            failure.item_identifier = id;
            response.batch_item_failures.push(failure);
        }
    }
    response
}
