//! [`ForgeInstallations`] on DynamoDB: under `pk` = the installation's ARI, the installation
//! (`sk` = `FORGE#INSTALLATION`, its system token sealed, TTL the retention) and the Connect tenant
//! it is linked to (`sk` = `FORGE#LINK`, no TTL). A read is one strongly consistent Query for the
//! `FORGE#` sort keys, which returns both.
//!
//! A record never reads and then writes in the process: which token stays is decided by the
//! database, in the condition of one UpdateItem (`token_issued_at < :iat`), so of concurrent or
//! out-of-order records the one with the latest token wins whatever their order.
//!
//! Once a record is written, a PutItem enters the installation's own tenant key (its ARI) in the
//! report schedule (`pk` = `#REPORT#<slot>`, `sk` = the ARI; see [`crate::keys`]).

use async_trait::async_trait;
use aws_sdk_dynamodb::operation::put_item::PutItemError;
use aws_sdk_dynamodb::operation::update_item::UpdateItemError;
use aws_sdk_dynamodb::operation::update_item::builders::UpdateItemFluentBuilder;
use aws_sdk_dynamodb::primitives::Blob;
use aws_sdk_dynamodb::types::{AttributeValue, ReturnValue, ReturnValuesOnConditionCheckFailure};
use understudy_domain::{
    ClientKey, ForgeInstallation, ForgeInstallations, InstallationId, StoreError,
};

use super::{DynamoStore, Item, attr, conditional, corrupt, key, n, req_b, req_n, req_s, s};
use crate::aws::unavailable;
use crate::codec::InstallationRow;
use crate::keys::{FORGE_INSTALLATION_SK, FORGE_LINK_SK, FORGE_PREFIX};

const W: &str = "forge installation";
const LINK: &str = "forge link";

/// Attribute names of the installation item (besides the key and the TTL).
mod name {
    pub(super) const APP_ID: &str = "app_id";
    pub(super) const CLOUD_ID: &str = "cloud_id";
    pub(super) const API_BASE_URL: &str = "api_base_url";
    pub(super) const TOKEN: &str = "system_token";
    pub(super) const TOKEN_ISSUED_AT: &str = "token_issued_at";
    pub(super) const TOKEN_EXPIRES_AT: &str = "token_expires_at";
    pub(super) const CREATED_AT: &str = "created_at";
    pub(super) const UPDATED_AT: &str = "updated_at";
    /// On the link item.
    pub(super) const CLIENT_KEY: &str = "client_key";
    pub(super) const LINKED_AT: &str = "linked_at";
}

/// The condition under which an installation item is updated in place: live, and sound where an
/// update relies on it (a number to compare the token's `issued_at` with, a `created_at` to keep).
/// Anything else (absent, expired, corrupt there) is replaced by a fresh item. The types are
/// checked before the TTL is compared: DynamoDB compares only values of one type (a mismatch is
/// false), and this way no emulator is asked to compare a string with a number either.
const LIVE_AND_SOUND: &str = "attribute_type(#exp, :number) AND attribute_type(#iat, :number) \
     AND attribute_type(#created, :number) AND #exp > :now";

fn to_item(id: &InstallationId, row: &InstallationRow) -> Item {
    let mut item = key(&id.own_tenant_key(), FORGE_INSTALLATION_SK);
    item.insert(name::APP_ID.into(), s(&row.app_id));
    item.insert(name::CLOUD_ID.into(), s(&row.cloud_id));
    item.insert(name::API_BASE_URL.into(), s(&row.api_base_url));
    item.insert(
        name::TOKEN.into(),
        AttributeValue::B(Blob::new(row.system_token.clone())),
    );
    item.insert(name::TOKEN_ISSUED_AT.into(), n(row.token_issued_at));
    item.insert(name::TOKEN_EXPIRES_AT.into(), n(row.token_expires_at));
    item.insert(name::CREATED_AT.into(), n(row.created_at));
    item.insert(name::UPDATED_AT.into(), n(row.updated_at));
    item.insert(attr::TTL.into(), n(row.expires_at));
    item
}

/// The installation row an item holds; a missing or mistyped attribute is [`StoreError::Corrupt`].
fn from_item(item: &Item) -> Result<InstallationRow, StoreError> {
    Ok(InstallationRow {
        app_id: req_s(item, name::APP_ID, W)?,
        cloud_id: req_s(item, name::CLOUD_ID, W)?,
        api_base_url: req_s(item, name::API_BASE_URL, W)?,
        system_token: req_b(item, name::TOKEN, W)?.to_vec(),
        token_issued_at: req_n(item, name::TOKEN_ISSUED_AT, W)?,
        token_expires_at: req_n(item, name::TOKEN_EXPIRES_AT, W)?,
        created_at: req_n(item, name::CREATED_AT, W)?,
        updated_at: req_n(item, name::UPDATED_AT, W)?,
        expires_at: req_n(item, attr::TTL, W)?,
    })
}

/// The clientKey a link item names.
fn link_of(item: &Item) -> Result<ClientKey, StoreError> {
    ClientKey::parse(req_s(item, name::CLIENT_KEY, LINK)?)
        .map_err(|_| corrupt(LINK, name::CLIENT_KEY))
}

/// Whether an item that refused an update meets [`LIVE_AND_SOUND`], as DynamoDB judged it: then
/// the refusal was the token's (not issued later), else the item is to be replaced. A TTL that is
/// a number but no unix time is [`StoreError::Corrupt`] (DynamoDB would compare it, this cannot).
fn live_and_sound(old: Option<&Item>, now: i64) -> Result<bool, StoreError> {
    let Some(old) = old else {
        return Ok(false);
    };
    let number = |name: &str| matches!(old.get(name), Some(AttributeValue::N(_)));
    let live = match old.get(attr::TTL) {
        Some(AttributeValue::N(v)) => v.parse::<i64>().map_err(|_| corrupt(W, attr::TTL))? > now,
        _ => false,
    };
    Ok(live && number(name::TOKEN_ISSUED_AT) && number(name::CREATED_AT))
}

impl DynamoStore {
    /// An UpdateItem of the installation item that sets what a record replaces (app id, cloudId,
    /// API base URL, `updated_at`, retention) on [`LIVE_AND_SOUND`], returning the new item.
    fn update_installation(
        &self,
        id: &InstallationId,
        row: &InstallationRow,
        now: i64,
    ) -> UpdateItemFluentBuilder {
        self.client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(key(&id.own_tenant_key(), FORGE_INSTALLATION_SK)))
            .expression_attribute_names("#app", name::APP_ID)
            .expression_attribute_names("#cloud", name::CLOUD_ID)
            .expression_attribute_names("#api", name::API_BASE_URL)
            .expression_attribute_names("#updated", name::UPDATED_AT)
            .expression_attribute_names("#exp", attr::TTL)
            .expression_attribute_names("#iat", name::TOKEN_ISSUED_AT)
            .expression_attribute_names("#created", name::CREATED_AT)
            .expression_attribute_values(":app", s(&row.app_id))
            .expression_attribute_values(":cloud", s(&row.cloud_id))
            .expression_attribute_values(":api", s(&row.api_base_url))
            .expression_attribute_values(":updated", n(row.updated_at))
            .expression_attribute_values(":ttl", n(row.expires_at))
            .expression_attribute_values(":now", n(now))
            .expression_attribute_values(":number", s("N"))
            .return_values(ReturnValue::AllNew)
    }

    /// Records `row` on a live installation item if its token was issued later than the stored
    /// one: `Ok(Ok(stored item))`, or `Ok(Err(the item as it was))` when refused (`None`: no item).
    async fn record_with_newer_token(
        &self,
        id: &InstallationId,
        row: &InstallationRow,
        now: i64,
    ) -> Result<Result<Item, Option<Item>>, StoreError> {
        let updated = self
            .update_installation(id, row, now)
            .update_expression(
                "SET #app = :app, #cloud = :cloud, #api = :api, #updated = :updated, \
                 #exp = :ttl, #tok = :tok, #iat = :iat, #tokexp = :tokexp",
            )
            .condition_expression(format!("{LIVE_AND_SOUND} AND #iat < :iat"))
            .expression_attribute_names("#tok", name::TOKEN)
            .expression_attribute_names("#tokexp", name::TOKEN_EXPIRES_AT)
            .expression_attribute_values(
                ":tok",
                AttributeValue::B(Blob::new(row.system_token.clone())),
            )
            .expression_attribute_values(":iat", n(row.token_issued_at))
            .expression_attribute_values(":tokexp", n(row.token_expires_at))
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
            .send()
            .await;
        match updated {
            Ok(output) => Ok(Ok(output.attributes.unwrap_or_default())),
            Err(e) => match e.as_service_error() {
                Some(UpdateItemError::ConditionalCheckFailedException(c)) => {
                    Ok(Err(c.item.clone()))
                }
                _ => Err(unavailable("DynamoDB UpdateItem (forge installation)", &e)),
            },
        }
    }

    /// Records `row` on a live installation item, keeping its token: `None` when refused (the
    /// item expired or went away meanwhile).
    async fn record_keeping_token(
        &self,
        id: &InstallationId,
        row: &InstallationRow,
        now: i64,
    ) -> Result<Option<Item>, StoreError> {
        let updated = self
            .update_installation(id, row, now)
            .update_expression(
                "SET #app = :app, #cloud = :cloud, #api = :api, #updated = :updated, #exp = :ttl",
            )
            .condition_expression(LIVE_AND_SOUND)
            .send()
            .await;
        let updated = conditional(
            updated,
            UpdateItemError::is_conditional_check_failed_exception,
            "DynamoDB UpdateItem (forge installation)",
        )?;
        Ok(updated.map(|output| output.attributes.unwrap_or_default()))
    }

    /// Writes `row` as a fresh installation item unless a live, sound one is there (then `false`):
    /// a first record, one after the retention ran out, or one over a corrupt item.
    async fn record_fresh(
        &self,
        id: &InstallationId,
        row: &InstallationRow,
        now: i64,
    ) -> Result<bool, StoreError> {
        let put = self
            .put_request(to_item(id, row))
            .condition_expression(format!(
                "attribute_not_exists(pk) OR NOT ({LIVE_AND_SOUND})"
            ))
            .expression_attribute_names("#exp", attr::TTL)
            .expression_attribute_names("#iat", name::TOKEN_ISSUED_AT)
            .expression_attribute_names("#created", name::CREATED_AT)
            .expression_attribute_values(":now", n(now))
            .expression_attribute_values(":number", s("N"))
            .send()
            .await;
        let put = conditional(
            put,
            PutItemError::is_conditional_check_failed_exception,
            "DynamoDB PutItem (forge installation)",
        )?;
        Ok(put.is_some())
    }

    /// The Connect tenant the installation is linked to (strongly consistent).
    async fn installation_link(
        &self,
        id: &InstallationId,
    ) -> Result<Option<ClientKey>, StoreError> {
        self.get_item(
            key(&id.own_tenant_key(), FORGE_LINK_SK),
            "DynamoDB GetItem (forge link)",
        )
        .await?
        .as_ref()
        .map(link_of)
        .transpose()
    }
}

#[async_trait]
impl ForgeInstallations for DynamoStore {
    async fn get_installation(
        &self,
        id: &InstallationId,
        now: i64,
    ) -> Result<Option<ForgeInstallation>, StoreError> {
        // One request for both items; the `FORGE#` prefix leaves out what an unlinked
        // installation keeps under the same key (settings, audit, ...).
        let output = self
            .client
            .query()
            .table_name(&self.table)
            .key_condition_expression("#pk = :pk AND begins_with(#sk, :prefix)")
            .expression_attribute_names("#pk", attr::PK)
            .expression_attribute_names("#sk", attr::SK)
            .expression_attribute_values(":pk", s(id.as_str()))
            .expression_attribute_values(":prefix", s(FORGE_PREFIX))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| unavailable("DynamoDB Query (forge installation)", &e))?;
        let (mut installation, mut link) = (None, None);
        for item in output.items() {
            match req_s(item, attr::SK, W)?.as_str() {
                FORGE_INSTALLATION_SK => installation = Some(item),
                FORGE_LINK_SK => link = Some(link_of(item)?),
                _ => {}
            }
        }
        let Some(item) = installation else {
            return Ok(None);
        };
        let row = from_item(item)?;
        if !row.is_live(now) {
            return Ok(None);
        }
        row.open(id, link, &*self.cipher).await.map(Some)
    }

    async fn record_installation(
        &self,
        seen: &ForgeInstallation,
        now: i64,
    ) -> Result<ForgeInstallation, StoreError> {
        let id = &seen.id;
        let row = InstallationRow::seal(seen, now, &*self.cipher).await?;
        // Usually one request: the update that carries a later token. Refused, the item it
        // returns tells which of the other two writes applies. Each is conditional, so when the
        // item changes between them (created, expired) the loop starts over.
        let mut stored = None;
        for _ in 0..3 {
            let old = match self.record_with_newer_token(id, &row, now).await? {
                Ok(item) => {
                    stored = Some(from_item(&item)?);
                    break;
                }
                Err(old) => old,
            };
            if live_and_sound(old.as_ref(), now)? {
                if let Some(item) = self.record_keeping_token(id, &row, now).await? {
                    stored = Some(from_item(&item)?);
                    break;
                }
            } else if self.record_fresh(id, &row, now).await? {
                stored = Some(row.clone());
                break;
            }
        }
        let Some(stored) = stored else {
            return Err(StoreError::unavailable(
                "forge installation kept changing during a record",
            ));
        };
        // The installation's own tenant key in the report schedule (every record: one recorded
        // before the schedule existed is entered by its next invocation).
        self.schedule(&id.own_tenant_key()).await?;
        let link = self.installation_link(id).await?;
        stored.open(id, link, &*self.cipher).await
    }

    async fn link_installation(
        &self,
        id: &InstallationId,
        client_key: &ClientKey,
        now: i64,
    ) -> Result<(), StoreError> {
        let mut item = key(&id.own_tenant_key(), FORGE_LINK_SK);
        item.insert(name::CLIENT_KEY.into(), s(client_key.as_str()));
        item.insert(name::LINKED_AT.into(), n(now));
        self.put(item, "DynamoDB PutItem (forge link)").await
    }
}
