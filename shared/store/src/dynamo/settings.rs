//! [`SettingsStore`] on DynamoDB: the settings item (`sk` = `SETTINGS`), whose retention follows
//! the tenant's after an uninstall.

use async_trait::async_trait;
use aws_sdk_dynamodb::operation::update_item::UpdateItemError;
use understudy_domain::{ClientKey, SettingsStore, StoreError, TenantSettings};

use super::{DynamoStore, attr, conditional, json_attr, key, n, to_json};
use crate::keys::SETTINGS_SK;

impl DynamoStore {
    /// Clears (`None`) or sets-if-absent the retention TTL of the settings item, if there is one.
    pub(super) async fn settings_retention(
        &self,
        client_key: &ClientKey,
        expires: Option<i64>,
    ) -> Result<(), StoreError> {
        let request = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(key(client_key, SETTINGS_SK)))
            .condition_expression("attribute_exists(pk)")
            .expression_attribute_names("#exp", attr::TTL);
        let request = match expires {
            None => request.update_expression("REMOVE #exp"),
            Some(at) => request
                .update_expression("SET #exp = if_not_exists(#exp, :exp)")
                .expression_attribute_values(":exp", n(at)),
        };
        // Refused: no settings were ever written, so there is nothing to keep or expire.
        conditional(
            request.send().await,
            UpdateItemError::is_conditional_check_failed_exception,
            "DynamoDB UpdateItem (settings)",
        )?;
        Ok(())
    }
}

#[async_trait]
impl SettingsStore for DynamoStore {
    async fn get_settings(
        &self,
        client_key: &ClientKey,
        now: i64,
    ) -> Result<Option<TenantSettings>, StoreError> {
        let Some(item) = self
            .get_live_item(
                key(client_key, SETTINGS_SK),
                "DynamoDB GetItem (settings)",
                "settings",
                now,
            )
            .await?
        else {
            return Ok(None);
        };
        Ok(Some(TenantSettings {
            document: json_attr(&item, "document", "settings")?,
        }))
    }

    async fn put_settings(
        &self,
        client_key: &ClientKey,
        settings: &TenantSettings,
        now: i64,
    ) -> Result<(), StoreError> {
        let document = to_json(&settings.document)?;
        // First try to keep a pending retention TTL (tenant uninstalled): update only the document.
        let kept = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(key(client_key, SETTINGS_SK)))
            .update_expression("SET #doc = :doc")
            .condition_expression("#exp > :now")
            .expression_attribute_names("#doc", "document")
            .expression_attribute_names("#exp", attr::TTL)
            .expression_attribute_values(":doc", document.clone())
            .expression_attribute_values(":now", n(now))
            .send()
            .await;
        let kept = conditional(
            kept,
            UpdateItemError::is_conditional_check_failed_exception,
            "DynamoDB UpdateItem (settings)",
        )?;
        if kept.is_some() {
            return Ok(());
        }
        let mut item = key(client_key, SETTINGS_SK);
        item.insert("document".into(), document);
        self.put(item, "DynamoDB PutItem (settings)").await
    }
}
