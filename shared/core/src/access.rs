//! Who may see what the app knows about a page. The one rule every listing of audit records follows
//! (the page's audit trail today, the admin listings later): a record of a page is shown to a user
//! only when Confluence says that user may view the page.
//!
//! How Confluence is asked, in order of trust:
//! 1. when the app can act as users (Connect with `ACT_AS_USER`, Forge always), **as that user**: `GET` the page with the user's own token. Whatever keeps
//!    the user out (a view restriction, space permissions, an app access rule) keeps the records
//!    out too; Confluence's 404 or 403 means no.
//! 2. without it, Confluence's **permission check** for that user, asked as the app. If the app
//!    itself cannot see the page (a restriction blocks it), Confluence cannot answer: no.
//! 3. anything else that keeps Confluence from answering yes (the user may not be impersonated,
//!    the tenant's site refuses the app): no.
//!
//! Outages (5xx, timeouts, rate limits past the deadline) are errors, so the caller answers 503 and
//! the user may try again; they are never taken as a yes.

use understudy_domain::{AccountId, PageId};

use crate::confluence::{Actor, Confluence, Door, RestrictionOperation};
use crate::error::{ConfluenceError, TokenError};

/// Whether Confluence says `user` may view `page` on the tenant's site, asked through `door`.
#[tracing::instrument(skip_all, fields(client_key = %door.tenant_key(), page_id = %page))]
pub async fn user_may_view_page(
    confluence: &dyn Confluence,
    door: Door<'_>,
    user: &AccountId,
    page: &PageId,
) -> Result<bool, ConfluenceError> {
    if door.can_act_as_user() {
        match confluence
            .can_view_page(door, Actor::User(user), page)
            .await
        {
            Ok(answer) => return Ok(answer),
            // The site no longer lets the app act as users: fall back to the permission check.
            Err(ConfluenceError::Token(TokenError::NoActAsUser)) => {}
            // The app may not act as this user (deactivated, gone): nobody to ask as.
            Err(ConfluenceError::Token(
                TokenError::InvalidGrant | TokenError::ImpersonationRefused { .. },
            )) => return Ok(false),
            Err(other) => return Err(other),
        }
    }
    confluence
        .permission_check(door, Actor::App, page, user, RestrictionOperation::Read)
        .await
}
