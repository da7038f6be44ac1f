//! The edit worker: one queued job at a time, the same code on SQS and on the local queue.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use aws_lambda_events::event::sqs::{BatchItemFailure, SqsBatchResponse, SqsEvent};
use connect_auth::Clock;
use understudy_core::{Door, EditEngine, EditJob, EditMode, EditResult, checked_tenant_key};
use understudy_domain::{
    AccountId, AccountRegistry, ActedAs, AuditLog, AuditRecord, ClosedAccountKey, EditOutcome,
    EditStrategy, ForgeInstallation, ForgeInstallations, InstallationId, ParkedJob, ParkedJobs,
    RateDecision, RateLimits, Tenant, TenantState, TenantStore,
};
use understudy_queue::EditJobMessage;

/// How many times a job is tried before it is audited as failed and goes to the dead-letter
/// queue. Counted by the worker (a wait for the tenant's share is no try); SQS's
/// `maxReceiveCount` in template.yaml is a higher backstop.
pub const DEFAULT_MAX_RECEIVES: u32 = 5;

/// Jobs one tenant may start a minute when `EDIT_TENANT_JOBS_PER_MINUTE` is not set: a fifth of
/// what the default 20 workers get through (an edit takes 1-3 s), so that a site's bulk import
/// leaves most workers to the other sites.
pub const DEFAULT_TENANT_JOBS_PER_MINUTE: u32 = 120;

/// What the queue should do with a job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JobOutcome {
    /// Done (edited, unchanged, blocked or failed for good): delete it.
    Done,
    /// Deliver it again later: a passing failure, or the tenant is over its share.
    RetryLater {
        /// Why, for the log.
        reason: String,
        /// Not before this (SQS: the message's visibility is set to it); `None`: the queue's
        /// own delay.
        after: Option<Duration>,
    },
    /// It kept failing: move it to the dead-letter queue (it has been audited).
    DeadLetter {
        /// Why.
        reason: String,
    },
}

/// How long a job's failures are counted: longer than any job waits in the queue (14 days).
const FAILURE_WINDOW_SECONDS: i64 = 28 * 24 * 60 * 60;

/// The first wait after a passing failure that names none; doubled per failure, up to
/// [`MAX_FAILURE_BACKOFF`].
const FAILURE_BACKOFF: Duration = Duration::from_secs(30);
/// The longest wait after a passing failure (SQS's visibility timeout may be at most 12 hours).
const MAX_FAILURE_BACKOFF: Duration = Duration::from_secs(15 * 60);

/// Runs edit jobs.
pub struct EditWorker<S: ?Sized, C> {
    store: Arc<S>,
    engine: EditEngine,
    clock: C,
    max_receives: u32,
    /// Jobs one tenant may start per minute; `None`: no limit.
    tenant_share: Option<u32>,
    /// The first wait after a passing failure that names none, and the longest.
    failure_backoff: (Duration, Duration),
    audit_retention_seconds: i64,
}

impl<S: ?Sized, C: std::fmt::Debug> std::fmt::Debug for EditWorker<S, C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EditWorker")
            .field("max_receives", &self.max_receives)
            .field("tenant_share", &self.tenant_share)
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

/// Every port the worker uses.
pub trait WorkerStore:
    TenantStore + ForgeInstallations + AuditLog + ParkedJobs + AccountRegistry + RateLimits
{
}
impl<T> WorkerStore for T where
    T: TenantStore
        + ForgeInstallations
        + AuditLog
        + ParkedJobs
        + AccountRegistry
        + RateLimits
        + ?Sized
{
}

impl<S, C> EditWorker<S, C>
where
    S: WorkerStore + ?Sized,
    C: Clock,
{
    /// A worker that dead-letters a job on its `max_receives`-th failed attempt.
    pub fn new(store: Arc<S>, engine: EditEngine, clock: C, max_receives: u32) -> Self {
        Self {
            store,
            engine,
            clock,
            max_receives: max_receives.max(1),
            tenant_share: None,
            failure_backoff: (FAILURE_BACKOFF, MAX_FAILURE_BACKOFF),
            audit_retention_seconds: understudy_core::EngineSettings::default()
                .audit_retention_seconds,
        }
    }

    /// Lets each tenant start at most `jobs_per_minute` jobs a minute; a job over its tenant's
    /// share waits for the next minute ([`JobOutcome::RetryLater`] with the wait) instead of
    /// holding a worker, so one site's bulk import cannot take every worker from the others.
    #[must_use]
    pub fn with_tenant_share(mut self, jobs_per_minute: Option<u32>) -> Self {
        self.tenant_share = jobs_per_minute.filter(|n| *n > 0);
        self
    }

    /// Waits `first` after a passing failure that names no wait, doubling per failure up to
    /// `longest` (the local app's `LOCAL_RETRY_BASE_MS`; on SQS 30 s up to 15 min).
    #[must_use]
    pub fn with_failure_backoff(mut self, first: Duration, longest: Duration) -> Self {
        self.failure_backoff = (first, longest.max(first));
        self
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
            Err(reason) => return self.retry_or_dead_letter(job, receives, reason, None).await,
        };
        match self.for_closed_account(job).await {
            Ok(false) => {}
            Ok(true) => return JobOutcome::Done,
            Err(reason) => return self.retry_or_dead_letter(job, receives, reason, None).await,
        }
        if let Some(wait) = self.over_share(job, now).await {
            return wait;
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
                .retry_or_dead_letter(job, receives, report.reason(), report.retry_after())
                .await;
        }
        if !report.audited {
            // Done on the page, but not on record: the job is not done with. Delivered again, it
            // finds nothing to change (an edit applied twice changes nothing) and is audited then.
            return self
                .retry_or_dead_letter(
                    job,
                    receives,
                    "the audit record could not be written".into(),
                    None,
                )
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

    /// When the tenant has started its share of jobs this minute: the job waits for the next
    /// minute (spread over it, so that the waiting jobs do not all come back at once). The wait is
    /// not a failure: it does not count towards the job's attempts. A store that cannot count
    /// lets the job run (the edit itself needs the store, and fails on its own if it is down).
    async fn over_share(&self, job: &EditJobMessage, now: i64) -> Option<JobOutcome> {
        let per_minute = self.tenant_share?;
        match self
            .store
            .take(&job.client_key, "edit-worker-share", per_minute, 60, now)
            .await
        {
            Ok(RateDecision::Limited {
                retry_after_seconds,
            }) => {
                let spread = spread_seconds(&job.job_id, 60);
                let wait = u64::try_from(retry_after_seconds.max(1)).unwrap_or(60) + spread;
                tracing::info!(client_key = job.client_key.as_str(), job_id = %job.job_id,
                    wait_seconds = wait, "the site is over its share of the workers: the job waits");
                Some(JobOutcome::RetryLater {
                    reason: format!(
                        "the site started its {per_minute} jobs of this minute; waiting {wait} s"
                    ),
                    after: Some(Duration::from_secs(wait)),
                })
            }
            Ok(RateDecision::Allowed { .. }) => None,
            Err(err) => {
                tracing::warn!(job_id = %job.job_id, error = %err, "the site's share could not be counted");
                None
            }
        }
    }

    /// Counts one more failed attempt of the job; returns how many it has had. Counted in the
    /// store rather than by the queue's receive count, because a job that waited for its tenant's
    /// share was received without being tried. A store that cannot count falls back on the
    /// receive count.
    async fn failed_attempts(&self, job: &EditJobMessage, receives: u32) -> u32 {
        let subject = format!("job-failures:{}", job.job_id);
        match self
            .store
            .take(
                &job.client_key,
                &subject,
                self.max_receives,
                FAILURE_WINDOW_SECONDS,
                self.clock.now_unix(),
            )
            .await
        {
            Ok(RateDecision::Allowed { remaining }) => self.max_receives.saturating_sub(remaining),
            Ok(RateDecision::Limited { .. }) => self.max_receives,
            Err(_) => receives,
        }
    }

    async fn retry_or_dead_letter(
        &self,
        job: &EditJobMessage,
        receives: u32,
        reason: String,
        asked_wait: Option<Duration>,
    ) -> JobOutcome {
        let attempts = self.failed_attempts(job, receives).await;
        if attempts < self.max_receives {
            // As long as Confluence asked for, else the first wait doubled per failure.
            let (first, longest) = self.failure_backoff;
            let backoff = first
                .saturating_mul(1 << attempts.saturating_sub(1).min(6))
                .min(longest);
            let after = asked_wait.unwrap_or(backoff).min(MAX_FAILURE_BACKOFF);
            tracing::warn!(client_key = job.client_key.as_str(), job_id = %job.job_id, receives,
                attempts, wait_seconds = after.as_secs(), reason = %reason,
                "passing failure: the job will be delivered again");
            return JobOutcome::RetryLater {
                reason,
                after: Some(after),
            };
        }
        let reason =
            format!("gave up after {attempts} attempts, moved to the dead-letter queue: {reason}");
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

/// What becomes of a received message besides success: delivered again later (SQS:
/// `ChangeMessageVisibility`), or moved to the dead-letter queue at once.
#[async_trait::async_trait]
pub trait Redelivery: Send + Sync {
    /// The message received with `receipt_handle` is delivered again after `after`.
    async fn redeliver_after(&self, receipt_handle: &str, after: Duration) -> Result<(), String>;

    /// Puts a copy of the message (its `body`, in message group `group`, de-duplicated by
    /// `deduplication_id`) on the dead-letter queue; the caller then deletes the original.
    async fn dead_letter(
        &self,
        body: &str,
        group: &str,
        deduplication_id: &str,
    ) -> Result<(), String>;
}

/// The edit queue and its dead-letter queue on SQS, as the Lambda worker sets what becomes of a
/// message.
#[cfg(feature = "lambda")]
#[derive(Debug, Clone)]
pub struct SqsRedelivery {
    /// The edit queue (`EDIT_QUEUE_URL`).
    pub edits: understudy_queue::SqsQueue,
    /// Its dead-letter queue (`EDIT_DEAD_LETTER_QUEUE_URL`).
    pub dead_letters: understudy_queue::SqsQueue,
}

#[cfg(feature = "lambda")]
#[async_trait::async_trait]
impl Redelivery for SqsRedelivery {
    async fn redeliver_after(&self, receipt_handle: &str, after: Duration) -> Result<(), String> {
        self.edits
            .change_visibility(receipt_handle, after.as_secs())
            .await
            .map_err(|e| e.to_string())
    }

    async fn dead_letter(
        &self,
        body: &str,
        group: &str,
        deduplication_id: &str,
    ) -> Result<(), String> {
        self.dead_letters
            .send_body(body, group, deduplication_id)
            .await
            .map_err(|e| e.to_string())
    }
}

/// A number in `0..range` that is the same for a job every time: spreads waiting jobs over a
/// window without a random source.
fn spread_seconds(job_id: &str, range: u64) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    job_id.hash(&mut hasher);
    hasher.finish() % range.max(1)
}

/// Runs an SQS FIFO batch and reports the records to deliver again.
///
/// Records are handled in order. Once a record of a page fails, the later records of that page in
/// the batch are returned unprocessed too, so that SQS redelivers them after it: edits of one page
/// never overtake each other.
///
/// A job to deliver again after a given wait (a Confluence 429's `Retry-After`, a tenant over its
/// share) has its message's visibility set to that wait through `redelivery`, so it comes back
/// then rather than after the queue's visibility timeout. A job the worker gave up on, and a
/// message that is not a job at all, are moved to the dead-letter queue through `redelivery` at
/// once; where that move fails (or there is no `redelivery`) the record is returned as failed, and
/// the queue's redrive policy parks it there after its last receive.
pub async fn handle_sqs_batch<S, C>(
    worker: &EditWorker<S, C>,
    event: SqsEvent,
    redelivery: Option<&dyn Redelivery>,
) -> SqsBatchResponse
where
    S: WorkerStore + ?Sized,
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
                after: None,
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
        let outcome = match (&outcome, redelivery) {
            (
                JobOutcome::RetryLater {
                    after: Some(after), ..
                },
                Some(redelivery),
            ) => {
                if let Some(handle) = record.receipt_handle.as_deref()
                    && let Err(err) = redelivery.redeliver_after(handle, *after).await
                {
                    // The queue's visibility timeout brings it back instead: later, never lost.
                    tracing::warn!(message_id = %id, error = %err, "the message's next delivery could not be set");
                }
                outcome
            }
            // Moved now, by the worker that gave up on it (and audited it), rather than after
            // SQS's backstop of receives: deleted from the queue once the copy is on the
            // dead-letter queue; if that fails, SQS's redrive moves it later.
            (JobOutcome::DeadLetter { .. }, Some(redelivery)) => {
                let body = record.body.as_deref().unwrap_or_default();
                match redelivery.dead_letter(body, &group, &id).await {
                    Ok(()) => JobOutcome::Done,
                    Err(err) => {
                        tracing::error!(message_id = %id, error = %err,
                            "could not move a message to the dead-letter queue: SQS's redrive will");
                        outcome
                    }
                }
            }
            _ => outcome,
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
