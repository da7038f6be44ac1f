//! Executing an edit on a page for a tenant: as the app first, then, when a restriction blocks the
//! app, as the tenant's restricted-page policy says (impersonate, grant, skip); or only as the user
//! who asked. Every execution leaves one audit record.

use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use understudy_domain::{
    AccountId, AccountRegistry, ActedAs, AuditLog, AuditRecord, EditOutcome, EditStrategy, PageId,
};

use connect_auth::Clock;

use crate::confluence::{Actor, Confluence, Door, PageUpdate, RestrictionOperation};
use crate::edit::{Edit, EditTooLarge};
use crate::error::{ConfluenceError, TokenError};

/// What to do when a page restriction blocks the app user.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RestrictedPagePolicy {
    /// Make the edit as the user who triggered or asked for it.
    #[default]
    Impersonate,
    /// As that user, add the app user to each existing restriction that blocks it, then edit as
    /// the app.
    Grant,
    /// Leave restricted pages alone.
    Skip,
}

/// Who may act.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EditMode {
    /// As the app; on a restriction, follow `policy` with `user` (the user who triggered the event or
    /// asked for the edit; `None` when there is nobody to act as).
    AppFirst {
        /// The tenant's restricted-page policy.
        policy: RestrictedPagePolicy,
        /// The user to impersonate or to grant through.
        user: Option<AccountId>,
    },
    /// Only as this user, never as the app (the edit API: a user asks for an edit).
    AsUserOnly(AccountId),
}

/// One edit to execute.
#[derive(Debug, Clone, Copy)]
pub struct EditJob<'a> {
    /// The tenant, through the door the work came in by.
    pub door: Door<'a>,
    /// The page.
    pub page_id: &'a PageId,
    /// The operations.
    pub edit: &'a Edit,
    /// Who may act.
    pub mode: &'a EditMode,
    /// The job's id / idempotency key, copied into the audit record.
    pub job_id: &'a str,
}

/// Why an edit was not made, and what an admin can do about it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum BlockedCause {
    /// The app is blocked and the tenant's policy is `skip`.
    SkippedByPolicy,
    /// The app is blocked and there is no user to act as.
    NoUserToActAs,
    /// The app is blocked and cannot act as a user: installed without `ACT_AS_USER`.
    NoActAsUser,
    /// The authorization server would not let the app act as the user (`invalid_grant`).
    InvalidGrant,
    /// The user cannot view the page either (404 as the user).
    UserCannotView,
    /// The user can view but not edit the page (403 as the user).
    UserCannotEdit,
    /// Grant found no restriction on the page that leaves the app out, yet the app is blocked:
    /// an inherited restriction, space permissions, or an app access rule.
    NotARestriction,
    /// Grant added the app user to the page's restrictions, and the app is still blocked.
    StillBlockedAfterGrant,
    /// The page is not current (draft, archived, trashed): saving it would publish or restore it.
    PageNotCurrent,
    /// Forge: Atlassian would not issue an offline token for the user (the report's detail says
    /// what Atlassian answered).
    ImpersonationRefused,
}

impl BlockedCause {
    /// A short statement of the cause.
    pub fn cause(self) -> &'static str {
        match self {
            Self::SkippedByPolicy => {
                "a restriction blocks the app and the restricted-page policy is skip"
            }
            Self::NoUserToActAs => "a restriction blocks the app and there is no user to act as",
            Self::NoActAsUser => {
                "a restriction blocks the app and the app was installed without ACT_AS_USER"
            }
            Self::InvalidGrant => {
                "the app may not act as this user (invalid_grant: the user may be deactivated or gone)"
            }
            Self::UserCannotView => {
                "the page does not exist, or the user cannot view it either (or an app access rule \
                 blocks the app in this space even when acting as a user)"
            }
            Self::UserCannotEdit => {
                "the user cannot edit the page either (or an app access rule blocks the app in this \
                 space even when acting as a user)"
            }
            Self::NotARestriction => {
                "the app is blocked, but not by a restriction on this page that it could be added to \
                 (an inherited restriction, space permissions, or an app access rule)"
            }
            Self::StillBlockedAfterGrant => {
                "the app user was added to the page's restrictions and is still blocked (an inherited \
                 restriction, space permissions, or an app access rule)"
            }
            Self::PageNotCurrent => "the page is not current (draft, archived or trashed)",
            Self::ImpersonationRefused => {
                "Atlassian refused to let the app act as the user (offline user impersonation)"
            }
        }
    }

    /// What an admin can do.
    pub fn admin_hint(self) -> &'static str {
        match self {
            Self::SkippedByPolicy => {
                "set the restricted-page policy to impersonate or grant, or add the app user to the page's restrictions"
            }
            Self::NoUserToActAs => "add the app user to the page's restrictions",
            Self::NoActAsUser => {
                "update the app so its descriptor has the ACT_AS_USER scope and re-install it, or add the app user to the page's restrictions"
            }
            Self::InvalidGrant => {
                "check that the user is active and that the app may act on their behalf, or add the app user to the page's restrictions"
            }
            Self::UserCannotView | Self::UserCannotEdit => {
                "give the user edit access to the page, or add the app user to its restrictions; check the space's app access rules"
            }
            Self::NotARestriction | Self::StillBlockedAfterGrant => {
                "check restrictions on parent pages, the app user's space permissions and the space's app access rules"
            }
            Self::PageNotCurrent => "publish or restore the page first",
            Self::ImpersonationRefused => {
                "check that the user is active and may use the app, or add the Forge app's account to the page's restrictions"
            }
        }
    }
}

impl fmt::Display for BlockedCause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}; an admin can: {}", self.cause(), self.admin_hint())
    }
}

/// What came of an execution.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EditResult {
    /// A new version was saved.
    Edited,
    /// The page already had the edit: no PUT was made.
    Unchanged,
    /// Policy or permissions stopped it; retrying will not help until someone acts.
    Blocked(BlockedCause),
    /// It was tried and failed.
    Failed(ConfluenceError),
    /// The edit would exceed a bound (a page larger than Confluence accepts): refused before
    /// anything was sent. Running it again gives the same answer.
    Refused(EditTooLarge),
}

impl EditResult {
    /// What the audit record says of it.
    pub fn outcome(&self) -> EditOutcome {
        match self {
            Self::Edited => EditOutcome::Edited,
            Self::Unchanged => EditOutcome::Unchanged,
            Self::Blocked(_) => EditOutcome::Blocked,
            Self::Failed(_) => EditOutcome::Failed,
            Self::Refused(_) => EditOutcome::Refused,
        }
    }
}

/// The report of one execution (also what the audit record says).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EditReport {
    /// The result.
    pub result: EditResult,
    /// Who acted last.
    pub acted_as: ActedAs,
    /// How.
    pub strategy: EditStrategy,
    /// Version read before the edit, when one was read.
    pub version_before: Option<u64>,
    /// Version saved, when one was.
    pub version_after: Option<u64>,
    /// Whether the audit record was written.
    pub audited: bool,
    /// What Atlassian said when it refused something, for the record (no secret in it).
    pub detail: Option<String>,
}

impl EditReport {
    /// True when running the job again later may succeed without anyone changing anything: the
    /// queue worker retries these (429 past the deadline, 5xx, network, a 409 storm).
    pub fn is_transient(&self) -> bool {
        matches!(&self.result, EditResult::Failed(e) if e.is_transient())
    }

    /// How long Confluence (or the authorization server) asked to wait before the next try, when
    /// a rate limit failed the edit and the answer said.
    pub fn retry_after(&self) -> Option<std::time::Duration> {
        match &self.result {
            EditResult::Failed(e) => e.retry_after(),
            _ => None,
        }
    }

    /// The audit record of this execution of `job`, at `at_ms` (unix milliseconds).
    pub fn audit_record(&self, job: &EditJob<'_>, at_ms: i64) -> AuditRecord {
        AuditRecord {
            client_key: job.door.tenant_key().clone(),
            page_id: job.page_id.clone(),
            at_ms,
            version_before: self.version_before,
            version_after: self.version_after,
            acted_as: self.acted_as.clone(),
            strategy: self.strategy,
            outcome: self.result.outcome(),
            reason: self.reason(),
            job_id: job.job_id.to_owned(),
        }
    }

    /// One line for the audit record and logs (no secret, no page content).
    pub fn reason(&self) -> String {
        let by = match &self.acted_as {
            ActedAs::App => "the app",
            ActedAs::User(_) => "the user",
        };
        match &self.result {
            EditResult::Edited => match self.strategy {
                EditStrategy::AsApp => "edited as the app".to_owned(),
                EditStrategy::Impersonate => {
                    "edited as the user (restricted page, impersonation)".to_owned()
                }
                EditStrategy::Grant => {
                    "edited as the app after adding it to the page's restrictions".to_owned()
                }
                EditStrategy::Skip => "edited".to_owned(),
            },
            EditResult::Unchanged => format!("nothing to change (read by {by})"),
            EditResult::Blocked(cause) => match &self.detail {
                Some(detail) => format!("{cause} (Atlassian said: {detail})"),
                None => cause.to_string(),
            },
            EditResult::Failed(error) => format!("failed acting as {by}: {error}"),
            EditResult::Refused(too_large) => format!("refused, nothing sent: {too_large}"),
        }
    }
}

/// Settings of the engine.
#[derive(Debug, Clone)]
pub struct EngineSettings {
    /// The version message of every page the app saves (names the app).
    pub version_message: String,
    /// How many times a 409 is answered by re-reading and re-applying before giving up.
    pub max_conflict_retries: u32,
    /// How long audit records are kept.
    pub audit_retention_seconds: i64,
}

impl Default for EngineSettings {
    fn default() -> Self {
        Self {
            version_message: "Edited by Understudy (Confluence app)".to_owned(),
            max_conflict_retries: 5,
            audit_retention_seconds: 90 * 24 * 60 * 60,
        }
    }
}

/// Executes edits.
pub struct EditEngine {
    confluence: Arc<dyn Confluence>,
    audit: Arc<dyn AuditLog>,
    clock: Arc<dyn Clock>,
    settings: EngineSettings,
    /// Where the accounts named in audit records are listed, for personal data reporting.
    accounts: Option<Arc<dyn AccountRegistry>>,
}

impl fmt::Debug for EditEngine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EditEngine")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

/// The result of editing as one actor.
struct Attempt {
    /// `Ok(None)`: unchanged; `Ok(Some(v))`: saved as v.
    outcome: Result<Option<u64>, ConfluenceError>,
    version_before: Option<u64>,
    not_current: bool,
    /// The edit would exceed a bound on this page: nothing was sent.
    refused: Option<EditTooLarge>,
}

impl EditEngine {
    /// An engine over Confluence, an audit log and a clock (the audit records' time).
    pub fn new(
        confluence: Arc<dyn Confluence>,
        audit: Arc<dyn AuditLog>,
        clock: Arc<dyn Clock>,
        settings: EngineSettings,
    ) -> Self {
        Self {
            confluence,
            audit,
            clock,
            settings,
            accounts: None,
        }
    }

    /// Lists every account an audit record names in `accounts` (before the record is written),
    /// so that personal data reporting knows it (docs/protocol.md §19).
    pub fn noting_accounts(mut self, accounts: Arc<dyn AccountRegistry>) -> Self {
        self.accounts = Some(accounts);
        self
    }

    /// Confluence, as the engine talks to it (for callers that also need plain reads).
    pub fn confluence(&self) -> &dyn Confluence {
        &*self.confluence
    }

    /// Executes one edit and writes its audit record.
    #[tracing::instrument(skip_all, fields(client_key = %job.door.tenant_key(), door = job.door.name(), page_id = %job.page_id, job_id = job.job_id))]
    pub async fn execute(&self, job: EditJob<'_>) -> EditReport {
        let mut report = match job.mode {
            EditMode::AsUserOnly(user) => self.as_user_only(&job, user).await,
            EditMode::AppFirst { policy, user } => {
                self.app_first(&job, *policy, user.as_ref()).await
            }
        };
        if refused_to_the_user(job.mode, &report.result) {
            // A user asked for an edit of a page Confluence will not let them view or edit. It does
            // not enter the page's audit trail: anyone could otherwise bury a page's real history
            // under their own refusals. It is logged (and counted from the log) instead.
            tracing::warn!(
                refused_user_request = true,
                reason = %report.reason(),
                "an edit asked for by a user who may not edit the page was refused; not audited"
            );
            return report;
        }
        report.audited = self.write_audit(&job, &report).await;
        tracing::info!(
            acted_as = ?report.acted_as,
            strategy = ?report.strategy,
            version_before = report.version_before,
            version_after = report.version_after,
            reason = %report.reason(),
            "edit executed"
        );
        report
    }

    async fn as_user_only(&self, job: &EditJob<'_>, user: &AccountId) -> EditReport {
        let attempt = self.attempt(Actor::User(user), job).await;
        blocked_or(
            attempt,
            ActedAs::User(user.clone()),
            EditStrategy::Impersonate,
        )
    }

    async fn app_first(
        &self,
        job: &EditJob<'_>,
        policy: RestrictedPagePolicy,
        user: Option<&AccountId>,
    ) -> EditReport {
        let first = self.attempt(Actor::App, job).await;
        match &first.outcome {
            Err(e) if e.is_access_denied() => {}
            _ => return report(first, ActedAs::App, EditStrategy::AsApp),
        }
        tracing::info!(policy = ?policy, "the app is blocked on this page; following the restricted-page policy");
        let version_before = first.version_before;
        let blocked = |cause, strategy| EditReport {
            result: EditResult::Blocked(cause),
            acted_as: ActedAs::App,
            strategy,
            version_before,
            version_after: None,
            audited: false,
            detail: None,
        };
        let strategy = match policy {
            RestrictedPagePolicy::Skip => {
                return blocked(BlockedCause::SkippedByPolicy, EditStrategy::Skip);
            }
            RestrictedPagePolicy::Impersonate => EditStrategy::Impersonate,
            RestrictedPagePolicy::Grant => EditStrategy::Grant,
        };
        let Some(user) = user else {
            return blocked(BlockedCause::NoUserToActAs, strategy);
        };
        if !job.door.can_act_as_user() {
            return blocked(BlockedCause::NoActAsUser, strategy);
        }
        match policy {
            RestrictedPagePolicy::Grant => self.grant_then_edit(job, user).await,
            _ => {
                let attempt = self.attempt(Actor::User(user), job).await;
                blocked_or(
                    attempt,
                    ActedAs::User(user.clone()),
                    EditStrategy::Impersonate,
                )
            }
        }
    }

    async fn grant_then_edit(&self, job: &EditJob<'_>, user: &AccountId) -> EditReport {
        let as_user = Actor::User(user);
        let acted = ActedAs::User(user.clone());
        let fail = |error: ConfluenceError, acted_as: ActedAs| {
            let attempt = Attempt {
                outcome: Err(error),
                version_before: None,
                not_current: false,
                refused: None,
            };
            blocked_or(attempt, acted_as, EditStrategy::Grant)
        };
        let app_account = match self.confluence.app_account_id(job.door).await {
            Ok(id) => id,
            Err(e) => {
                let attempt = Attempt {
                    outcome: Err(e),
                    version_before: None,
                    not_current: false,
                    refused: None,
                };
                return report(attempt, ActedAs::App, EditStrategy::Grant);
            }
        };
        let restrictions = match self
            .confluence
            .get_restrictions(job.door, as_user, job.page_id)
            .await
        {
            Ok(r) => r,
            Err(e) => return fail(e, acted),
        };
        let mut granted = Vec::new();
        for operation in [RestrictionOperation::Read, RestrictionOperation::Update] {
            let restriction = restrictions.get(operation);
            // Only extend a restriction that exists: creating one would lock everyone else out.
            if restriction.exists() && !restriction.lists_user(&app_account) {
                if let Err(e) = self
                    .confluence
                    .add_restriction_user(job.door, as_user, job.page_id, operation, &app_account)
                    .await
                {
                    return fail(e, acted);
                }
                tracing::info!(
                    operation = operation.as_str(),
                    "added the app user to the page restriction"
                );
                granted.push(operation);
            }
        }
        if granted.is_empty() {
            return EditReport {
                result: EditResult::Blocked(BlockedCause::NotARestriction),
                acted_as: acted,
                strategy: EditStrategy::Grant,
                version_before: None,
                version_after: None,
                audited: false,
                detail: None,
            };
        }
        let attempt = self.attempt(Actor::App, job).await;
        match &attempt.outcome {
            Err(e) if e.is_access_denied() => EditReport {
                result: EditResult::Blocked(BlockedCause::StillBlockedAfterGrant),
                acted_as: ActedAs::App,
                strategy: EditStrategy::Grant,
                version_before: attempt.version_before,
                version_after: None,
                audited: false,
                detail: None,
            },
            _ => report(attempt, ActedAs::App, EditStrategy::Grant),
        }
    }

    /// Read, apply, save if changed; on 409 re-read and re-apply, at most `max_conflict_retries`
    /// more times.
    async fn attempt(&self, actor: Actor<'_>, job: &EditJob<'_>) -> Attempt {
        let mut version_before = None;
        let mut conflicts: u32 = 0;
        loop {
            let page = match self.confluence.get_page(job.door, actor, job.page_id).await {
                Ok(page) => page,
                Err(e) => {
                    return Attempt {
                        outcome: Err(e),
                        version_before,
                        not_current: false,
                        refused: None,
                    };
                }
            };
            version_before.get_or_insert(page.version);
            if page.status != "current" {
                return Attempt {
                    outcome: Ok(None),
                    version_before,
                    not_current: true,
                    refused: None,
                };
            }
            let applied = match job.edit.apply(&page.title, &page.body) {
                Ok(applied) => applied,
                Err(too_large) => {
                    return Attempt {
                        outcome: Ok(None),
                        version_before,
                        not_current: false,
                        refused: Some(too_large),
                    };
                }
            };
            if !applied.changes(&page.title, &page.body) {
                return Attempt {
                    outcome: Ok(None),
                    version_before,
                    not_current: false,
                    refused: None,
                };
            }
            let update = PageUpdate {
                id: job.page_id,
                title: &applied.title,
                body: &applied.body,
                version: page.version.saturating_add(1),
                message: &self.settings.version_message,
            };
            match self.confluence.update_page(job.door, actor, &update).await {
                Ok(version) => {
                    return Attempt {
                        outcome: Ok(Some(version)),
                        version_before,
                        not_current: false,
                        refused: None,
                    };
                }
                Err(ConfluenceError::Conflict)
                    if conflicts < self.settings.max_conflict_retries =>
                {
                    conflicts = conflicts.saturating_add(1);
                    tracing::warn!(
                        attempt = conflicts,
                        read_version = page.version,
                        reason = "409 version conflict",
                        "re-reading the page and re-applying the edit"
                    );
                }
                Err(e) => {
                    return Attempt {
                        outcome: Err(e),
                        version_before,
                        not_current: false,
                        refused: None,
                    };
                }
            }
        }
    }

    async fn write_audit(&self, job: &EditJob<'_>, report: &EditReport) -> bool {
        let record = report.audit_record(job, self.clock.now_unix().saturating_mul(1000));
        if let (Some(accounts), ActedAs::User(user)) = (&self.accounts, &record.acted_as)
            && let Err(error) = accounts
                .note_account(&record.client_key, user, self.clock.now_unix())
                .await
        {
            // The record still matters more than its listing; the next one lists the account.
            tracing::warn!(error = %error, "the account an audit record names could not be listed");
        }
        match self
            .audit
            .append(&record, self.settings.audit_retention_seconds)
            .await
        {
            Ok(()) => true,
            Err(error) => {
                tracing::error!(error = %error, "the audit record could not be written");
                false
            }
        }
    }
}

/// True for a user's own request (the edit API) that Confluence refused because that user may not
/// view or edit the page.
fn refused_to_the_user(mode: &EditMode, result: &EditResult) -> bool {
    matches!(mode, EditMode::AsUserOnly(_))
        && matches!(
            result,
            EditResult::Blocked(BlockedCause::UserCannotView | BlockedCause::UserCannotEdit)
        )
}

fn report(attempt: Attempt, acted_as: ActedAs, strategy: EditStrategy) -> EditReport {
    let (result, version_after) = match (attempt.refused, attempt.outcome) {
        (Some(too_large), _) => (EditResult::Refused(too_large), None),
        _ if attempt.not_current => (EditResult::Blocked(BlockedCause::PageNotCurrent), None),
        (None, Ok(Some(v))) => (EditResult::Edited, Some(v)),
        (None, Ok(None)) => (EditResult::Unchanged, None),
        (None, Err(e)) => (EditResult::Failed(e), None),
    };
    EditReport {
        result,
        acted_as,
        strategy,
        version_before: attempt.version_before,
        version_after,
        audited: false,
        detail: None,
    }
}

/// As [`report`], with the refusals of acting as a user turned into their causes.
fn blocked_or(attempt: Attempt, acted_as: ActedAs, strategy: EditStrategy) -> EditReport {
    let cause = match &attempt.outcome {
        Err(ConfluenceError::NotFound) => Some(BlockedCause::UserCannotView),
        Err(ConfluenceError::Forbidden) => Some(BlockedCause::UserCannotEdit),
        Err(ConfluenceError::Token(TokenError::NoActAsUser)) => Some(BlockedCause::NoActAsUser),
        Err(ConfluenceError::Token(TokenError::InvalidGrant)) => Some(BlockedCause::InvalidGrant),
        Err(ConfluenceError::Token(TokenError::ImpersonationRefused { .. })) => {
            Some(BlockedCause::ImpersonationRefused)
        }
        _ => None,
    };
    let detail = match &attempt.outcome {
        Err(ConfluenceError::Token(TokenError::ImpersonationRefused { reason })) => {
            Some(reason.clone())
        }
        _ => None,
    };
    match cause {
        Some(cause) => EditReport {
            result: EditResult::Blocked(cause),
            acted_as,
            strategy,
            version_before: attempt.version_before,
            version_after: None,
            audited: false,
            detail,
        },
        None => report(attempt, acted_as, strategy),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refused_impersonation_is_blocked_with_what_atlassian_said() {
        let attempt = Attempt {
            outcome: Err(ConfluenceError::Token(TokenError::ImpersonationRefused {
                reason: "User is deactivated".into(),
            })),
            version_before: Some(3),
            not_current: false,
            refused: None,
        };
        let report = blocked_or(attempt, ActedAs::App, EditStrategy::Impersonate);
        assert_eq!(
            report.result,
            EditResult::Blocked(BlockedCause::ImpersonationRefused)
        );
        assert!(!report.is_transient());
        let reason = report.reason();
        assert!(
            reason.starts_with("Atlassian refused to let the app act as the user"),
            "{reason}"
        );
        assert!(
            reason.ends_with("(Atlassian said: User is deactivated)"),
            "{reason}"
        );
    }

    #[test]
    fn a_stale_system_token_is_a_passing_failure() {
        let attempt = Attempt {
            outcome: Err(ConfluenceError::Token(TokenError::SystemTokenExpired)),
            version_before: None,
            not_current: false,
            refused: None,
        };
        let report = report(attempt, ActedAs::App, EditStrategy::AsApp);
        assert!(report.is_transient());
        assert!(report.reason().contains("system token has expired"));
    }
}
