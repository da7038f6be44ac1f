//! The HTTP client as the core's Confluence port: each call is a [`Session`] for the tenant and the
//! actor, so the engine gets exactly the client's behaviour (retries, told waits, token exchange).

use async_trait::async_trait;
use understudy_core::{
    Actor, Confluence, ConfluenceError, Page, PageUpdate, RestrictionOperation, Restrictions,
};
use understudy_domain::{AccountId, PageId, Tenant};

use crate::client::{ConfluenceClient, Session};

impl ConfluenceClient {
    fn session<'a>(&'a self, tenant: &'a Tenant, actor: Actor<'a>) -> Session<'a> {
        match actor {
            Actor::App => self.as_app(tenant),
            Actor::User(account) => self.as_user(tenant, account),
        }
    }
}

#[async_trait]
impl Confluence for ConfluenceClient {
    async fn get_page(
        &self,
        tenant: &Tenant,
        actor: Actor<'_>,
        page: &PageId,
    ) -> Result<Page, ConfluenceError> {
        self.session(tenant, actor).get_page(page).await
    }

    async fn update_page(
        &self,
        tenant: &Tenant,
        actor: Actor<'_>,
        update: &PageUpdate<'_>,
    ) -> Result<u64, ConfluenceError> {
        self.session(tenant, actor).update_page(update).await
    }

    async fn get_restrictions(
        &self,
        tenant: &Tenant,
        actor: Actor<'_>,
        page: &PageId,
    ) -> Result<Restrictions, ConfluenceError> {
        self.session(tenant, actor).get_restrictions(page).await
    }

    async fn add_restriction_user(
        &self,
        tenant: &Tenant,
        actor: Actor<'_>,
        page: &PageId,
        operation: RestrictionOperation,
        account: &AccountId,
    ) -> Result<(), ConfluenceError> {
        self.session(tenant, actor)
            .add_restriction_user(page, operation, account)
            .await
    }

    async fn can_view_page(
        &self,
        tenant: &Tenant,
        actor: Actor<'_>,
        page: &PageId,
    ) -> Result<bool, ConfluenceError> {
        self.session(tenant, actor).can_view_page(page).await
    }

    async fn permission_check(
        &self,
        tenant: &Tenant,
        actor: Actor<'_>,
        page: &PageId,
        account: &AccountId,
        operation: RestrictionOperation,
    ) -> Result<bool, ConfluenceError> {
        self.session(tenant, actor)
            .permission_check(page, account, operation)
            .await
    }

    async fn app_account_id(&self, tenant: &Tenant) -> Result<AccountId, ConfluenceError> {
        ConfluenceClient::app_account_id(self, tenant).await
    }
}
