//! The HTTP client as the core's Confluence port: each call is a [`Session`] for the tenant and the
//! actor, so the engine gets exactly the client's behaviour (retries, told waits, token exchange).

use async_trait::async_trait;
use understudy_core::{
    Actor, Confluence, ConfluenceError, Door, Page, PageUpdate, RestrictionOperation, Restrictions,
};
use understudy_domain::{AccountId, PageId};

use crate::client::{ConfluenceClient, Session};

impl ConfluenceClient {
    fn session<'a>(&'a self, door: Door<'a>, actor: Actor<'a>) -> Session<'a> {
        match actor {
            Actor::App => self.as_app(door),
            Actor::User(account) => self.as_user(door, account),
        }
    }
}

#[async_trait]
impl Confluence for ConfluenceClient {
    async fn get_page(
        &self,
        door: Door<'_>,
        actor: Actor<'_>,
        page: &PageId,
    ) -> Result<Page, ConfluenceError> {
        self.session(door, actor).get_page(page).await
    }

    async fn update_page(
        &self,
        door: Door<'_>,
        actor: Actor<'_>,
        update: &PageUpdate<'_>,
    ) -> Result<u64, ConfluenceError> {
        self.session(door, actor).update_page(update).await
    }

    async fn get_restrictions(
        &self,
        door: Door<'_>,
        actor: Actor<'_>,
        page: &PageId,
    ) -> Result<Restrictions, ConfluenceError> {
        self.session(door, actor).get_restrictions(page).await
    }

    async fn add_restriction_user(
        &self,
        door: Door<'_>,
        actor: Actor<'_>,
        page: &PageId,
        operation: RestrictionOperation,
        account: &AccountId,
    ) -> Result<(), ConfluenceError> {
        self.session(door, actor)
            .add_restriction_user(page, operation, account)
            .await
    }

    async fn can_view_page(
        &self,
        door: Door<'_>,
        actor: Actor<'_>,
        page: &PageId,
    ) -> Result<bool, ConfluenceError> {
        self.session(door, actor).can_view_page(page).await
    }

    async fn permission_check(
        &self,
        door: Door<'_>,
        actor: Actor<'_>,
        page: &PageId,
        account: &AccountId,
        operation: RestrictionOperation,
    ) -> Result<bool, ConfluenceError> {
        self.session(door, actor)
            .permission_check(page, account, operation)
            .await
    }

    async fn is_site_admin(
        &self,
        door: Door<'_>,
        account: &AccountId,
    ) -> Result<bool, ConfluenceError> {
        self.as_app(door).is_site_admin(account).await
    }

    async fn app_account_id(&self, door: Door<'_>) -> Result<AccountId, ConfluenceError> {
        ConfluenceClient::app_account_id(self, door).await
    }
}
