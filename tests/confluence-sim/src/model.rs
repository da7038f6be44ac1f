//! What the simulated site knows: users, groups, spaces, pages with versions and restrictions, and
//! who may view or edit what. Pure data and rules; no I/O.
//!
//! The permission rules follow Confluence Cloud (docs/protocol.md §1, §7):
//! - a space permission decides view / edit for everyone a page restriction does not narrow down;
//! - the app user is a user like any other: it has space access unless an "app access rule" (data
//!   security policy) excludes apps from the space;
//! - a read restriction lists who may view the page (set on the page or on any ancestor: view
//!   restrictions are inherited); an update restriction lists who may edit it (not inherited);
//! - cannot view → 404, can view but not edit → 403.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

/// What kind of account a user is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum AccountType {
    /// A person (`accountType: customer` in webhooks, `atlassian` in the REST API).
    Customer,
    /// An app user (`accountType: app`), one per installed Connect app.
    App,
}

impl AccountType {
    /// The value in webhook payloads.
    pub fn webhook_value(self) -> &'static str {
        match self {
            Self::Customer => "customer",
            Self::App => "app",
        }
    }

    /// The value in REST user objects (`GET /rest/api/user/current`).
    pub fn rest_value(self) -> &'static str {
        match self {
            Self::Customer => "atlassian",
            Self::App => "app",
        }
    }
}

/// A user of the site.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct User {
    /// The accountId.
    pub account_id: String,
    /// The display name.
    pub display_name: String,
    /// Person or app.
    pub account_type: AccountType,
    /// Deactivated users can do nothing and cannot be impersonated.
    pub active: bool,
}

/// A space permission, in increasing order of power.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SpaceAccess {
    /// Cannot see the space.
    None,
    /// May view pages.
    View,
    /// May view and edit pages (and their restrictions, where they may edit).
    Edit,
}

/// A data security policy ("app access rule") on a space (docs/protocol.md §7).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AppAccessRule {
    /// Apps may access the space (as far as their users' permissions go).
    Allowed,
    /// The app users are excluded; a user's own token (impersonation) still works.
    BlockAppUser,
    /// Apps are excluded whichever way they call: as the app user or as an impersonated user.
    BlockAllApps,
}

/// A space and who may do what in it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Space {
    /// The numeric id (as in webhooks' `spaceId`).
    pub id: u64,
    /// The key (`ENG`).
    pub key: String,
    /// The name.
    pub name: String,
    /// What every active person not listed in `users` may do.
    pub everyone: SpaceAccess,
    /// Per-user permissions (override `everyone`; for an app user, override its default `Edit`).
    pub users: BTreeMap<String, SpaceAccess>,
    /// Whether apps are excluded from the space.
    pub app_access: AppAccessRule,
}

/// Builds a space for [`crate::Simulator::add_space`].
#[derive(Debug, Clone)]
pub struct SpaceSpec {
    pub(crate) key: String,
    pub(crate) name: String,
    pub(crate) everyone: SpaceAccess,
    pub(crate) users: BTreeMap<String, SpaceAccess>,
    pub(crate) app_access: AppAccessRule,
}

impl SpaceSpec {
    /// A space everyone may edit and apps may access.
    pub fn new(key: &str) -> Self {
        Self {
            key: key.to_owned(),
            name: key.to_owned(),
            everyone: SpaceAccess::Edit,
            users: BTreeMap::new(),
            app_access: AppAccessRule::Allowed,
        }
    }

    /// The space's name.
    pub fn name(mut self, name: &str) -> Self {
        self.name = name.to_owned();
        self
    }

    /// What everyone not listed may do.
    pub fn everyone(mut self, access: SpaceAccess) -> Self {
        self.everyone = access;
        self
    }

    /// A user's own permission.
    pub fn user(mut self, account_id: &str, access: SpaceAccess) -> Self {
        self.users.insert(account_id.to_owned(), access);
        self
    }

    /// An app access rule on the space.
    pub fn app_access(mut self, rule: AppAccessRule) -> Self {
        self.app_access = rule;
        self
    }
}

/// Who one operation (view or edit) is restricted to. Both empty: not restricted.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct OpRestriction {
    /// accountIds listed.
    pub users: Vec<String>,
    /// Group names listed.
    pub groups: Vec<String>,
}

impl OpRestriction {
    /// True when the operation is restricted.
    pub fn exists(&self) -> bool {
        !self.users.is_empty() || !self.groups.is_empty()
    }
}

/// A page's own restrictions (inherited view restrictions live on the ancestors).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct PageRestrictions {
    /// Who may view.
    pub read: OpRestriction,
    /// Who may edit.
    pub update: OpRestriction,
}

/// How an edit reached the page.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum EditVia {
    /// Seeded by the test (no webhook).
    Seed,
    /// A person in the editor (a simulator acting method).
    Editor,
    /// The app as its own app user (Connect JWT).
    AppUser {
        /// The app's key.
        app_key: String,
    },
    /// The app acting as a user (bearer token from the OAuth server).
    Impersonation {
        /// The app's key.
        app_key: String,
    },
}

/// One version of a page.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Revision {
    /// The version number.
    pub number: u64,
    /// The title at this version.
    pub title: String,
    /// The storage body at this version.
    pub body: String,
    /// Who made it (accountId).
    pub by: String,
    /// How.
    pub via: EditVia,
    /// The version message.
    pub message: String,
    /// When, in milliseconds since the epoch.
    pub at_ms: i64,
}

/// A page.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Page {
    /// The id.
    pub id: u64,
    /// The space key.
    pub space_key: String,
    /// The space id.
    pub space_id: u64,
    /// The parent page, if any.
    pub parent_id: Option<u64>,
    /// `current` (the only status simulated).
    pub status: String,
    /// The title.
    pub title: String,
    /// The storage-format body.
    pub body: String,
    /// The version number.
    pub version: u64,
    /// The creator's accountId.
    pub creator: String,
    /// Created at, ms since the epoch.
    pub created_ms: i64,
    /// The last modifier's accountId.
    pub last_modifier: String,
    /// Last modified at, ms since the epoch.
    pub modified_ms: i64,
    /// The page's own restrictions.
    pub restrictions: PageRestrictions,
    /// Every version, oldest first.
    pub history: Vec<Revision>,
}

impl Page {
    /// The page id as Confluence writes it in JSON strings.
    pub fn id_string(&self) -> String {
        self.id.to_string()
    }

    /// The message of the current version.
    pub fn message(&self) -> &str {
        self.history.last().map_or("", |r| r.message.as_str())
    }
}

/// The caller a permission is judged for: a user, and the app the call came through (if any).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Subject<'a> {
    pub account_id: &'a str,
    /// The app whose credentials carried the call (app JWT or impersonation token).
    pub via_app: Option<&'a str>,
}

impl<'a> Subject<'a> {
    /// A person acting directly (the simulator's acting methods).
    pub fn person(account_id: &'a str) -> Self {
        Self {
            account_id,
            via_app: None,
        }
    }
}

/// Users, groups, spaces and pages.
#[derive(Debug, Default)]
pub(crate) struct Content {
    pub users: BTreeMap<String, User>,
    pub groups: BTreeMap<String, BTreeSet<String>>,
    pub spaces: BTreeMap<String, Space>,
    pub pages: BTreeMap<u64, Page>,
    pub next_space_id: u64,
    pub next_page_id: u64,
    /// Site admins (Confluence administrators): `administer` on `application` in their REST
    /// user's `operations`.
    pub site_admins: BTreeSet<String>,
}

impl Content {
    pub fn new() -> Self {
        Self {
            next_space_id: 1_149_861_892,
            next_page_id: 1_188_560_897,
            ..Self::default()
        }
    }

    fn in_restriction(&self, restriction: &OpRestriction, account_id: &str) -> bool {
        !restriction.exists()
            || restriction.users.iter().any(|u| u == account_id)
            || restriction.groups.iter().any(|g| {
                self.groups
                    .get(g)
                    .is_some_and(|members| members.contains(account_id))
            })
    }

    /// The subject's permission in a space, after app access rules.
    pub fn space_access(&self, space: &Space, subject: Subject<'_>) -> SpaceAccess {
        let Some(user) = self.users.get(subject.account_id) else {
            return SpaceAccess::None;
        };
        if !user.active {
            return SpaceAccess::None;
        }
        match user.account_type {
            AccountType::App => {
                if space.app_access != AppAccessRule::Allowed {
                    return SpaceAccess::None;
                }
                space
                    .users
                    .get(subject.account_id)
                    .copied()
                    .unwrap_or(SpaceAccess::Edit)
            }
            AccountType::Customer => {
                if subject.via_app.is_some() && space.app_access == AppAccessRule::BlockAllApps {
                    return SpaceAccess::None;
                }
                space
                    .users
                    .get(subject.account_id)
                    .copied()
                    .unwrap_or(space.everyone)
            }
        }
    }

    /// The page and its ancestors, nearest first (bounded, in case of a cycle).
    fn lineage<'a>(&'a self, page: &'a Page) -> Vec<&'a Page> {
        let mut out = vec![page];
        let mut next = page.parent_id;
        while let Some(id) = next {
            match self.pages.get(&id) {
                Some(parent) if out.len() < 64 => {
                    out.push(parent);
                    next = parent.parent_id;
                }
                _ => break,
            }
        }
        out
    }

    /// May the subject view the page?
    pub fn can_view(&self, page: &Page, subject: Subject<'_>) -> bool {
        let Some(space) = self.spaces.get(&page.space_key) else {
            return false;
        };
        self.space_access(space, subject) >= SpaceAccess::View
            && self
                .lineage(page)
                .iter()
                .all(|p| self.in_restriction(&p.restrictions.read, subject.account_id))
    }

    /// May the subject edit the page (and change its restrictions)?
    pub fn can_edit(&self, page: &Page, subject: Subject<'_>) -> bool {
        let Some(space) = self.spaces.get(&page.space_key) else {
            return false;
        };
        self.can_view(page, subject)
            && self.space_access(space, subject) >= SpaceAccess::Edit
            && self.in_restriction(&page.restrictions.update, subject.account_id)
    }

    /// Another page of the space already has this title (Confluence titles are unique per space,
    /// compared without case).
    pub fn title_taken(&self, space_key: &str, title: &str, except: u64) -> bool {
        self.pages.values().any(|p| {
            p.id != except
                && p.space_key == space_key
                && p.title.to_lowercase() == title.to_lowercase()
        })
    }
}

/// One edit to apply to a page.
#[derive(Debug, Clone)]
pub(crate) struct EditSpec<'a> {
    pub title: Option<&'a str>,
    pub body: &'a str,
    pub by: &'a str,
    pub via: EditVia,
    pub message: &'a str,
    pub now_ms: i64,
}

impl Content {
    /// Applies an edit as the next version; returns it.
    pub fn apply_edit(&mut self, page_id: u64, edit: EditSpec<'_>) -> Option<u64> {
        let page = self.pages.get_mut(&page_id)?;
        page.version += 1;
        if let Some(title) = edit.title {
            page.title = title.to_owned();
        }
        page.body = edit.body.to_owned();
        page.last_modifier = edit.by.to_owned();
        page.modified_ms = edit.now_ms;
        page.history.push(Revision {
            number: page.version,
            title: page.title.clone(),
            body: page.body.clone(),
            by: edit.by.to_owned(),
            via: edit.via,
            message: edit.message.to_owned(),
            at_ms: edit.now_ms,
        });
        Some(page.version)
    }
}
