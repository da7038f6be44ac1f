//! The use cases of understudy, below every adapter. Both front doors (Connect today) and every
//! function use them; none of them knows HTTP, AWS or a database:
//!
//! - [`Edit`]: operations on a page's title and storage body, pure, idempotent and bounded
//!   ([`MAX_OPERATIONS`], [`MAX_BODY_BYTES`]).
//! - [`EditEngine`]: runs an edit as the app, then per the tenant's [`RestrictedPagePolicy`], or only
//!   as the user who asked; audits each run. It talks to Confluence through the [`Confluence`] port.
//! - [`user_may_view_page`]: the one rule for who may see a page's audit records.
//! - [`Rules`]: which page events lead to which edit ([`WebhookEvent`]).
//! - [`TenantHosts`]: which Confluence sites may install the app, and so which hosts it ever calls;
//!   [`forge_api_hosts`] and [`confluence_site_ari`] for the Forge front door.
//!
//! Dependencies point one way: functions → adapters (store, queue, Confluence client, web) → core →
//! domain → connect-auth (for its clock).

mod access;
pub mod confluence;
mod edit;
mod engine;
mod error;
mod forge;
mod hosts;
mod privacy;
mod rules;

pub use access::user_may_view_page;
pub use confluence::{
    Actor, Confluence, Door, ForgeDoor, Invoker, OperationRestriction, Page, PageUpdate,
    RestrictionOperation, Restrictions,
};
pub use edit::{
    Applied, Edit, EditOp, EditParseError, EditTooLarge, MAX_BODY_BYTES, MAX_OPERATIONS,
    MAX_TITLE_CHARS, Replace, json_len,
};
pub use engine::{
    BlockedCause, EditEngine, EditJob, EditMode, EditReport, EditResult, EngineSettings,
    RestrictedPagePolicy,
};
pub use error::{ConfluenceError, TokenError};
pub use forge::{
    DEFAULT_FORGE_API_HOSTS, checked_tenant_key, confluence_site_ari, forge_api_hosts,
};
pub use hosts::TenantHosts;
pub use privacy::{
    AccountReport, AccountReporting, AccountStatus, Erased, MAX_ACCOUNTS_PER_REPORT,
    PersonalDataStore, ReportAnswer, ReportError, ReportRun, ReportSettings, RunError,
    erase_account, report_tenant,
};
pub use rules::{Decision, Rules, RulesError, Subject, WebhookEvent};
