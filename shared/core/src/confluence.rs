//! The Confluence port: what the use cases need from Confluence, in their own terms. The HTTP client
//! in `understudy-confluence` implements it; the engine's tests implement it in memory.
//!
//! Every call names the door to the tenant's site ([`Door`]: Connect or Forge, which decides the
//! credentials) and who acts: the app user, or a user the app acts as (user impersonation). Refusals come back as [`ConfluenceError::NotFound`] (the actor may not view the
//! page) and [`ConfluenceError::Forbidden`] (it may view but not do this), as Confluence answers them.

use async_trait::async_trait;
use connect_auth::SecretString;
use understudy_domain::{AccountId, ClientKey, ForgeInstallation, PageId, Tenant};

use crate::error::ConfluenceError;

/// How the app reaches a tenant's Confluence: the front door the work came through. It decides
/// the base URL and the credentials of every call (docs/protocol.md §17).
#[derive(Debug, Clone, Copy)]
pub enum Door<'a> {
    /// Connect: `<baseUrl>`, a JWT signed with the shared secret as the app, the JWT-bearer grant
    /// (`ACT_AS_USER`) as a user.
    Connect(&'a Tenant),
    /// Forge Remote: `<apiBaseUrl>/wiki`, the installation's system token as the app, offline user
    /// impersonation as a user, or the invoking user's own token when a user invoked the app.
    Forge(ForgeDoor<'a>),
}

/// The Forge door: an installation, and the user token of a UI invocation when there is one.
#[derive(Debug, Clone, Copy)]
pub struct ForgeDoor<'a> {
    /// The installation (its API base URL and latest system token).
    pub installation: &'a ForgeInstallation,
    /// `x-forge-oauth-user` of the invocation and whose it is (the FIT's `principal`): acting as
    /// that user uses it instead of an offline token.
    pub invoker: Option<Invoker<'a>>,
}

/// The user who invoked the app from Confluence's UI, with the token Forge gave for them.
#[derive(Clone, Copy)]
pub struct Invoker<'a> {
    /// The FIT's `principal`.
    pub account: &'a AccountId,
    /// `x-forge-oauth-user`: opaque, never parsed or shown.
    pub token: &'a SecretString,
}

impl std::fmt::Debug for Invoker<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Invoker")
            .field("account", self.account)
            .field("token", &"[REDACTED]")
            .finish()
    }
}

impl<'a> From<&'a Tenant> for Door<'a> {
    fn from(tenant: &'a Tenant) -> Self {
        Self::Connect(tenant)
    }
}

impl<'a> Door<'a> {
    /// The Forge door of an installation, as the app works on its own (events, queued jobs).
    pub fn forge(installation: &'a ForgeInstallation) -> Self {
        Self::Forge(ForgeDoor {
            installation,
            invoker: None,
        })
    }

    /// The key the tenant's settings, rules and audit live under.
    pub fn tenant_key(&self) -> &'a ClientKey {
        match self {
            Self::Connect(tenant) => &tenant.client_key,
            Self::Forge(forge) => &forge.installation.tenant_key,
        }
    }

    /// Whether the app can act as a user through this door at all: a Connect install needs an
    /// `oauthClientId` (the descriptor had `ACT_AS_USER`); Forge always offers offline user
    /// impersonation (Atlassian may still refuse it per user).
    pub fn can_act_as_user(&self) -> bool {
        match self {
            Self::Connect(tenant) => tenant
                .oauth_client_id
                .as_deref()
                .is_some_and(|id| !id.trim().is_empty()),
            Self::Forge(_) => true,
        }
    }

    /// `connect` or `forge`, for logs.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Connect(_) => "connect",
            Self::Forge(_) => "forge",
        }
    }
}

/// Who a call acts as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Actor<'a> {
    /// The app user (a JWT signed with the tenant's shared secret).
    App,
    /// A user, through user impersonation.
    User(&'a AccountId),
}

/// A page as read with its storage body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page {
    /// The page id.
    pub id: PageId,
    /// `current`, `draft`, `archived`, `trashed`, ...
    pub status: String,
    /// The title.
    pub title: String,
    /// The space, when given.
    pub space_id: Option<String>,
    /// The version number.
    pub version: u64,
    /// The storage-format body.
    pub body: String,
}

/// A full replacement of a page's title and body (docs/protocol.md §7, §12).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PageUpdate<'a> {
    /// The page.
    pub id: &'a PageId,
    /// The new title.
    pub title: &'a str,
    /// The new storage-format body.
    pub body: &'a str,
    /// The version this update creates: the version read plus one. Confluence answers 409 if the
    /// page moved on, which also makes retrying the PUT safe.
    pub version: u64,
    /// The version message (names the app).
    pub message: &'a str,
}

/// A restricted operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RestrictionOperation {
    /// Who may view.
    Read,
    /// Who may edit.
    Update,
}

impl RestrictionOperation {
    /// The path segment: `read` or `update`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Read => "read",
            Self::Update => "update",
        }
    }
}

/// Users and groups one operation is restricted to. Empty lists: no restriction.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OperationRestriction {
    /// Users listed.
    pub users: Vec<AccountId>,
    /// Groups listed (names or ids).
    pub groups: Vec<String>,
}

impl OperationRestriction {
    /// True when a restriction exists on this operation.
    pub fn exists(&self) -> bool {
        !self.users.is_empty() || !self.groups.is_empty()
    }

    /// True when the restriction names `account` directly.
    pub fn lists_user(&self, account: &AccountId) -> bool {
        self.users.contains(account)
    }
}

/// The restrictions set directly on a page (inherited ones from ancestors are not listed).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Restrictions {
    /// View restriction.
    pub read: OperationRestriction,
    /// Edit restriction.
    pub update: OperationRestriction,
}

impl Restrictions {
    /// The restriction of one operation.
    pub fn get(&self, operation: RestrictionOperation) -> &OperationRestriction {
        match operation {
            RestrictionOperation::Read => &self.read,
            RestrictionOperation::Update => &self.update,
        }
    }
}

/// What the use cases ask of Confluence.
#[async_trait]
pub trait Confluence: Send + Sync {
    /// A page with its storage body.
    async fn get_page(
        &self,
        door: Door<'_>,
        actor: Actor<'_>,
        page: &PageId,
    ) -> Result<Page, ConfluenceError>;

    /// Replaces a page's title and body; the new version number.
    async fn update_page(
        &self,
        door: Door<'_>,
        actor: Actor<'_>,
        update: &PageUpdate<'_>,
    ) -> Result<u64, ConfluenceError>;

    /// The restrictions set directly on a page.
    async fn get_restrictions(
        &self,
        door: Door<'_>,
        actor: Actor<'_>,
        page: &PageId,
    ) -> Result<Restrictions, ConfluenceError>;

    /// Adds `account` to the restriction of `operation` on a page (which creates the restriction if
    /// there was none: callers check first).
    async fn add_restriction_user(
        &self,
        door: Door<'_>,
        actor: Actor<'_>,
        page: &PageId,
        operation: RestrictionOperation,
        account: &AccountId,
    ) -> Result<(), ConfluenceError>;

    /// Whether the actor may view the page: `false` on Confluence's refusals.
    async fn can_view_page(
        &self,
        door: Door<'_>,
        actor: Actor<'_>,
        page: &PageId,
    ) -> Result<bool, ConfluenceError>;

    /// Confluence's own judgement of whether `account` may do `operation` on the page, asked by the
    /// actor; `false` when the actor itself cannot see the page.
    async fn permission_check(
        &self,
        door: Door<'_>,
        actor: Actor<'_>,
        page: &PageId,
        account: &AccountId,
        operation: RestrictionOperation,
    ) -> Result<bool, ConfluenceError>;

    /// Whether `account` is a site admin (a Confluence administrator: `administer` on
    /// `application` among the user's operations), asked as the app. Unknown or deactivated
    /// users are not (docs/protocol.md §18).
    async fn is_site_admin(
        &self,
        door: Door<'_>,
        account: &AccountId,
    ) -> Result<bool, ConfluenceError>;

    /// The app user's own accountId on this tenant's site (the Forge app's account differs from
    /// the Connect app user's).
    async fn app_account_id(&self, door: Door<'_>) -> Result<AccountId, ConfluenceError>;
}
