//! The domain layer of understudy: typed records for everything the functions remember, and the ports
//! (async traits) that store them.
//!
//! Nothing here imports an AWS, Lambda or HTTP crate. The adapters live in `understudy-store`
//! (DynamoDB and an embedded file); [`MemoryStore`] implements every port in memory for unit tests.
//!
//! Time is always passed in as `now` (unix seconds) so TTL behaviour is deterministic in tests;
//! handlers read it from `connect_auth::Clock`, the one clock of the workspace.

mod accounts;
mod audit;
mod cursor;
mod error;
mod forge;
mod ids;
mod memory;
mod parked;
mod ports;
mod ratelimit;
mod settings;
mod tenant;
mod token;

pub use accounts::{
    AccountsPage, ClosedAccountKey, DEFAULT_REPORT_CYCLE_SECONDS, REPORT_SLOTS, ScheduledPage,
    StoredAccount, report_slot, report_slot_at,
};
pub use audit::{ActedAs, AuditRecord, EditOutcome, EditStrategy};
pub use cursor::{AuditCursor, AuditPage};
pub use error::{ParseError, StoreError};
pub use forge::{
    FORGE_INSTALLATION_RETENTION_SECONDS, ForgeInstallation, InstallationId,
    SYSTEM_TOKEN_TRUSTED_SECONDS, SystemToken,
};
pub use ids::{AccountId, ClientKey, IdempotencyKey, PageId};
pub use memory::MemoryStore;
pub use parked::{PARKED_JOB_RETENTION_SECONDS, ParkedJob, ParkedPage};
pub use ports::{
    AccountRegistry, AuditLog, ForgeInstallations, IdempotencyMarks, Marked, ParkedJobs,
    RateLimits, SettingsStore, TenantStore, TokenCache,
};
pub use ratelimit::{RateCounters, RateDecision, RateWindow};
pub use settings::TenantSettings;
pub use tenant::{
    InstallOutcome, InvalidInstall, Tenant, TenantState, UNINSTALLED_RETENTION_SECONDS,
    redact_install_payload,
};
pub use token::{CachedToken, TokenCacheKey};
