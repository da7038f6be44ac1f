//! [`TenantStore`] on DynamoDB: the tenant item (`sk` = `TENANT`) and its one codec. Once an
//! install is written, a PutItem enters the tenant in the report schedule (`pk` =
//! `#REPORT#<slot>`, `sk` = the clientKey; see [`crate::keys`]): every install does, so a tenant
//! installed before the schedule existed is entered by its next install.

use async_trait::async_trait;
use aws_sdk_dynamodb::operation::put_item::PutItemError;
use aws_sdk_dynamodb::operation::update_item::UpdateItemError;
use aws_sdk_dynamodb::primitives::Blob;
use aws_sdk_dynamodb::types::{AttributeValue, ReturnValue, ReturnValuesOnConditionCheckFailure};
use understudy_domain::{
    ClientKey, InstallOutcome, StoreError, Tenant, TenantState, TenantStore, TokenCache,
    UNINSTALLED_RETENTION_SECONDS,
};

use super::{
    DynamoStore, Item, attr, conditional, corrupt, json_attr, key, n, opt_n, opt_s, req_b, req_n,
    req_s, s, to_json,
};
use crate::aws::unavailable;
use crate::codec::TenantRow;
use crate::keys::TENANT_SK;

/// The tenant row as the item's attributes: the DynamoDB family's tenant codec.
fn to_item(client_key: &ClientKey, row: &TenantRow) -> Result<Item, StoreError> {
    let mut item = key(client_key, TENANT_SK);
    item.insert("app_key".into(), s(&row.app_key));
    item.insert("base_url".into(), s(&row.base_url));
    item.insert("display_url".into(), s(&row.display_url));
    item.insert("product_type".into(), s(&row.product_type));
    for (name, value) in [
        ("oauth_client_id", &row.oauth_client_id),
        ("cloud_id", &row.cloud_id),
        ("installation_id", &row.installation_id),
    ] {
        if let Some(value) = value {
            item.insert(name.into(), s(value));
        }
    }
    item.insert("install_payload".into(), to_json(&row.install_payload)?);
    item.insert("state".into(), s(row.state.as_str()));
    item.insert("created_at".into(), n(row.created_at));
    item.insert("updated_at".into(), n(row.updated_at));
    item.insert(
        "shared_secret".into(),
        AttributeValue::B(Blob::new(row.shared_secret.clone())),
    );
    if let Some(expires_at) = row.expires_at {
        item.insert(attr::TTL.into(), n(expires_at));
    }
    Ok(item)
}

/// The tenant row an item holds; a missing or mistyped attribute is [`StoreError::Corrupt`].
fn from_item(item: &Item) -> Result<TenantRow, StoreError> {
    const W: &str = "tenant";
    Ok(TenantRow {
        app_key: req_s(item, "app_key", W)?,
        base_url: req_s(item, "base_url", W)?,
        display_url: req_s(item, "display_url", W)?,
        product_type: req_s(item, "product_type", W)?,
        oauth_client_id: opt_s(item, "oauth_client_id", W)?,
        cloud_id: opt_s(item, "cloud_id", W)?,
        installation_id: opt_s(item, "installation_id", W)?,
        install_payload: json_attr(item, "install_payload", W)?,
        state: req_s(item, "state", W)?
            .parse()
            .map_err(|_| corrupt(W, "state"))?,
        created_at: req_n(item, "created_at", W)?,
        updated_at: req_n(item, "updated_at", W)?,
        shared_secret: req_b(item, "shared_secret", W)?.to_vec(),
        expires_at: opt_n(item, attr::TTL, W)?,
    })
}

#[async_trait]
impl TenantStore for DynamoStore {
    async fn get_tenant(
        &self,
        client_key: &ClientKey,
        now: i64,
    ) -> Result<Option<Tenant>, StoreError> {
        let Some(item) = self
            .get_live_item(
                key(client_key, TENANT_SK),
                "DynamoDB GetItem (tenant)",
                "tenant",
                now,
            )
            .await?
        else {
            return Ok(None);
        };
        from_item(&item)?
            .open(client_key, &*self.cipher)
            .await
            .map(Some)
    }

    async fn save_install(&self, tenant: &Tenant, now: i64) -> Result<InstallOutcome, StoreError> {
        let row = TenantRow::seal(tenant, &*self.cipher).await?;
        // Two conditional puts: "create if absent (or expired)", else "replace if present" keeping
        // created_at. Each is atomic, so of two racing first installs exactly one gets New. If the
        // record changes between the two (it expired, or was deleted by TTL) the loop starts over.
        for _ in 0..3 {
            let item = to_item(&tenant.client_key, &row)?;
            let created = self
                .put_if_absent(item, now)
                .return_values_on_condition_check_failure(
                    ReturnValuesOnConditionCheckFailure::AllOld,
                )
                .send()
                .await;
            let old = match created {
                Ok(_) => {
                    self.schedule(&tenant.client_key).await?;
                    return Ok(InstallOutcome::New);
                }
                Err(e) => match e.as_service_error() {
                    Some(PutItemError::ConditionalCheckFailedException(c)) => {
                        c.item.clone().unwrap_or_default()
                    }
                    _ => return Err(unavailable("DynamoDB PutItem (tenant)", &e)),
                },
            };
            // A corrupt created_at must not block the re-install that repairs the record.
            let created_at = opt_n(&old, "created_at", "tenant")
                .ok()
                .flatten()
                .unwrap_or(tenant.created_at);
            // A live tenant keeps its state (a disabled app stays disabled). The put is conditional
            // on the state read, so a `disabled` landing in between sends us round again rather
            // than being overwritten. A corrupt state is repaired with the given one.
            let old_state = old.get("state");
            let stored = match old_state {
                Some(AttributeValue::S(v)) => v.parse::<TenantState>().ok(),
                _ => None,
            };
            let kept = TenantRow {
                state: TenantState::after_install(stored, tenant.state),
                created_at,
                ..row.clone()
            };
            let item = to_item(&tenant.client_key, &kept)?;
            let live = "attribute_exists(pk) AND (attribute_not_exists(#exp) OR #exp > :now)";
            let mut request = self
                .put_request(item)
                .expression_attribute_names("#exp", attr::TTL)
                .expression_attribute_values(":now", n(now));
            request = match old_state {
                Some(value @ AttributeValue::S(_)) => request
                    .condition_expression(format!("{live} AND #state = :old_state"))
                    .expression_attribute_names("#state", "state")
                    .expression_attribute_values(":old_state", value.clone()),
                None => request
                    .condition_expression(format!("{live} AND attribute_not_exists(#state)"))
                    .expression_attribute_names("#state", "state"),
                Some(_) => request.condition_expression(live),
            };
            let replaced = conditional(
                request.send().await,
                PutItemError::is_conditional_check_failed_exception,
                "DynamoDB PutItem (tenant)",
            )?;
            if replaced.is_some() {
                // A live tenant's settings never expire: their retention is cleared on every
                // re-install, not only on one that finds the tenant uninstalled, since the retry of
                // such a re-install that failed here finds it installed already.
                self.settings_retention(&tenant.client_key, None).await?;
                self.schedule(&tenant.client_key).await?;
                return Ok(InstallOutcome::Updated);
            }
        }
        Err(StoreError::unavailable(
            "tenant record kept changing during install",
        ))
    }

    async fn set_state(
        &self,
        client_key: &ClientKey,
        state: TenantState,
        now: i64,
    ) -> Result<bool, StoreError> {
        if state == TenantState::Uninstalled {
            return self.mark_uninstalled(client_key, now).await;
        }
        let updated = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(key(client_key, TENANT_SK)))
            .update_expression("SET #state = :state, #updated = :now")
            .condition_expression("attribute_exists(pk) AND #state <> :uninstalled")
            .expression_attribute_names("#state", "state")
            .expression_attribute_names("#updated", "updated_at")
            .expression_attribute_values(":state", s(state.as_str()))
            .expression_attribute_values(":uninstalled", s(TenantState::Uninstalled.as_str()))
            .expression_attribute_values(":now", n(now))
            .send()
            .await;
        let updated = conditional(
            updated,
            UpdateItemError::is_conditional_check_failed_exception,
            "DynamoDB UpdateItem (tenant state)",
        )?;
        Ok(updated.is_some())
    }

    async fn mark_uninstalled(&self, client_key: &ClientKey, now: i64) -> Result<bool, StoreError> {
        let updated = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(key(client_key, TENANT_SK)))
            // if_not_exists keeps the first uninstall's TTL: a retried callback does not extend it.
            .update_expression(
                "SET #state = :state, #updated = :now, #exp = if_not_exists(#exp, :exp)",
            )
            .condition_expression(
                "attribute_exists(pk) AND (attribute_not_exists(#exp) OR #exp > :now)",
            )
            .expression_attribute_names("#state", "state")
            .expression_attribute_names("#updated", "updated_at")
            .expression_attribute_names("#exp", attr::TTL)
            .expression_attribute_values(":state", s(TenantState::Uninstalled.as_str()))
            .expression_attribute_values(":now", n(now))
            .expression_attribute_values(
                ":exp",
                n(now.saturating_add(UNINSTALLED_RETENTION_SECONDS)),
            )
            .return_values(ReturnValue::AllNew)
            .send()
            .await;
        let Some(output) = conditional(
            updated,
            UpdateItemError::is_conditional_check_failed_exception,
            "DynamoDB UpdateItem (uninstall)",
        )?
        else {
            return Ok(false);
        };
        let attributes = output.attributes.unwrap_or_default();
        let expires = req_n(&attributes, attr::TTL, "tenant")?;
        self.settings_retention(client_key, Some(expires)).await?;
        self.drop_tokens_for_tenant(client_key).await?;
        Ok(true)
    }
}
