//! The DynamoDB adapter: one table for everything (see the crate docs for the key schema).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use aws_config::SdkConfig;
use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::operation::put_item::PutItemError;
use aws_sdk_dynamodb::primitives::Blob;
use aws_sdk_dynamodb::types::{
    AttributeDefinition, AttributeValue, BillingMode, DeleteRequest, GlobalSecondaryIndex,
    KeySchemaElement, KeyType, Projection, ProjectionType, ReturnValue,
    ReturnValuesOnConditionCheckFailure, ScalarAttributeType, TableStatus, TimeToLiveSpecification,
    WriteRequest,
};
use understudy_domain::{
    AuditCursor, AuditLog, AuditPage, AuditRecord, CachedToken, ClientKey, IdempotencyKey,
    IdempotencyMarks, InstallOutcome, PageId, RateDecision, RateLimits, RateWindow, SettingsStore,
    StoreError, Tenant, TenantSettings, TenantState, TenantStore, TokenCache, TokenCacheKey,
    UNINSTALLED_RETENTION_SECONDS, redact_install_payload,
};

use crate::aws::{retry_config, timeout_config, unavailable};
use crate::crypto::{SecretCipher, secret_context};
use crate::keys::{
    AUDIT_PREFIX, SETTINGS_SK, TENANT_SK, TOKEN_PREFIX, audit_expiry, audit_sk, cursor_of_sk,
    cursor_sk_suffix, live, mark_sk, page_prefix, page_sk, rate_sk, token_sk,
};

/// Attribute and index names of the table (documented in the crate docs for template.yaml).
pub(crate) mod attr {
    pub(crate) const PK: &str = "pk";
    pub(crate) const SK: &str = "sk";
    pub(crate) const TTL: &str = "expires_at";
    pub(crate) const GSI1: &str = "gsi1";
    pub(crate) const GSI1_PK: &str = "gsi1pk";
    pub(crate) const GSI1_SK: &str = "gsi1sk";
}

/// Where the table is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DynamoConfig {
    /// The table name (from template.yaml in AWS, random per test).
    pub table_name: String,
    /// Endpoint override (a local DynamoDB-compatible server); `None` for AWS.
    pub endpoint_url: Option<String>,
    /// Region override; `None` uses the SDK's default chain (`AWS_REGION` on Lambda).
    pub region: Option<String>,
}

/// Every port on one DynamoDB table. Cheap to clone.
#[derive(Clone)]
pub struct DynamoStore {
    client: Client,
    table: String,
    cipher: Arc<dyn SecretCipher>,
}

impl std::fmt::Debug for DynamoStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DynamoStore")
            .field("table", &self.table)
            .field("cipher", &self.cipher)
            .finish_non_exhaustive()
    }
}

type Item = HashMap<String, AttributeValue>;

fn s(value: impl Into<String>) -> AttributeValue {
    AttributeValue::S(value.into())
}

fn n(value: i64) -> AttributeValue {
    AttributeValue::N(value.to_string())
}

fn key(client_key: &ClientKey, sk: impl Into<String>) -> Item {
    HashMap::from([
        (attr::PK.to_owned(), s(client_key.as_str())),
        (attr::SK.to_owned(), s(sk)),
    ])
}

fn corrupt(what: &str, name: &str) -> StoreError {
    StoreError::corrupt(format!("{what} ({name})"))
}

fn opt_s(item: &Item, name: &str, what: &str) -> Result<Option<String>, StoreError> {
    match item.get(name) {
        None | Some(AttributeValue::Null(_)) => Ok(None),
        Some(AttributeValue::S(v)) => Ok(Some(v.clone())),
        Some(_) => Err(corrupt(what, name)),
    }
}

fn req_s(item: &Item, name: &str, what: &str) -> Result<String, StoreError> {
    opt_s(item, name, what)?.ok_or_else(|| corrupt(what, name))
}

fn opt_n(item: &Item, name: &str, what: &str) -> Result<Option<i64>, StoreError> {
    match item.get(name) {
        None | Some(AttributeValue::Null(_)) => Ok(None),
        Some(AttributeValue::N(v)) => v.parse().map(Some).map_err(|_| corrupt(what, name)),
        Some(_) => Err(corrupt(what, name)),
    }
}

fn req_n(item: &Item, name: &str, what: &str) -> Result<i64, StoreError> {
    opt_n(item, name, what)?.ok_or_else(|| corrupt(what, name))
}

fn req_b<'a>(item: &'a Item, name: &str, what: &str) -> Result<&'a [u8], StoreError> {
    match item.get(name) {
        Some(AttributeValue::B(v)) => Ok(v.as_ref()),
        _ => Err(corrupt(what, name)),
    }
}

fn json_attr<T: serde::de::DeserializeOwned>(
    item: &Item,
    name: &str,
    what: &str,
) -> Result<T, StoreError> {
    serde_json::from_str(&req_s(item, name, what)?).map_err(|_| corrupt(what, name))
}

fn to_json(value: &impl serde::Serialize) -> Result<AttributeValue, StoreError> {
    serde_json::to_string(value)
        .map(s)
        .map_err(|_| StoreError::corrupt("record to write"))
}

fn is_live(item: &Item, now: i64, what: &str) -> Result<bool, StoreError> {
    Ok(live(opt_n(item, attr::TTL, what)?, now))
}

fn build_error(_: aws_sdk_dynamodb::error::BuildError) -> StoreError {
    StoreError::unavailable("DynamoDB request could not be built")
}

impl DynamoStore {
    /// A store on `table` with this client (its retry and endpoint settings are the caller's).
    pub fn new(client: Client, table: impl Into<String>, cipher: Arc<dyn SecretCipher>) -> Self {
        Self {
            client,
            table: table.into(),
            cipher,
        }
    }

    /// Builds the client from the shared SDK config with this crate's retry (standard mode) and
    /// timeout settings and the optional endpoint and region overrides.
    pub fn from_config(
        sdk: &SdkConfig,
        config: &DynamoConfig,
        cipher: Arc<dyn SecretCipher>,
    ) -> Self {
        let mut builder = aws_sdk_dynamodb::config::Builder::from(sdk)
            .retry_config(retry_config())
            .timeout_config(timeout_config());
        if let Some(endpoint) = &config.endpoint_url {
            builder = builder.endpoint_url(endpoint);
        }
        if let Some(region) = &config.region {
            builder = builder.region(aws_sdk_dynamodb::config::Region::new(region.clone()));
        }
        Self::new(
            Client::from_conf(builder.build()),
            config.table_name.clone(),
            cipher,
        )
    }

    /// The table name.
    pub fn table_name(&self) -> &str {
        &self.table
    }

    /// Creates the table as template.yaml declares it (on-demand billing, `pk`/`sk`, index `gsi1`,
    /// TTL on `expires_at`) and waits until it is active. For tests and local runs; an existing table
    /// is left as it is.
    pub async fn create_table(&self) -> Result<(), StoreError> {
        let string_attr = |name: &str| {
            AttributeDefinition::builder()
                .attribute_name(name)
                .attribute_type(ScalarAttributeType::S)
                .build()
                .map_err(build_error)
        };
        let key_elem = |name: &str, kind: KeyType| {
            KeySchemaElement::builder()
                .attribute_name(name)
                .key_type(kind)
                .build()
                .map_err(build_error)
        };
        let gsi = GlobalSecondaryIndex::builder()
            .index_name(attr::GSI1)
            .key_schema(key_elem(attr::GSI1_PK, KeyType::Hash)?)
            .key_schema(key_elem(attr::GSI1_SK, KeyType::Range)?)
            .projection(
                Projection::builder()
                    .projection_type(ProjectionType::All)
                    .build(),
            )
            .build()
            .map_err(build_error)?;
        let created = self
            .client
            .create_table()
            .table_name(&self.table)
            .billing_mode(BillingMode::PayPerRequest)
            .attribute_definitions(string_attr(attr::PK)?)
            .attribute_definitions(string_attr(attr::SK)?)
            .attribute_definitions(string_attr(attr::GSI1_PK)?)
            .attribute_definitions(string_attr(attr::GSI1_SK)?)
            .key_schema(key_elem(attr::PK, KeyType::Hash)?)
            .key_schema(key_elem(attr::SK, KeyType::Range)?)
            .global_secondary_indexes(gsi)
            .send()
            .await;
        match created {
            Ok(_) => {}
            Err(e)
                if e.as_service_error()
                    .is_some_and(|s| s.is_resource_in_use_exception()) =>
            {
                return Ok(());
            }
            Err(e) => return Err(unavailable("DynamoDB CreateTable", &e)),
        }
        for _ in 0..120 {
            let described = self
                .client
                .describe_table()
                .table_name(&self.table)
                .send()
                .await
                .map_err(|e| unavailable("DynamoDB DescribeTable", &e))?;
            if described.table().and_then(|t| t.table_status()) == Some(&TableStatus::Active) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        let ttl = TimeToLiveSpecification::builder()
            .enabled(true)
            .attribute_name(attr::TTL)
            .build()
            .map_err(build_error)?;
        self.client
            .update_time_to_live()
            .table_name(&self.table)
            .time_to_live_specification(ttl)
            .send()
            .await
            .map_err(|e| unavailable("DynamoDB UpdateTimeToLive", &e))?;
        Ok(())
    }

    /// As [`Self::get_item`], treating an item whose TTL has passed as absent (DynamoDB deletes
    /// expired items lazily, within days).
    async fn get_live_item(
        &self,
        item_key: Item,
        operation: &'static str,
        what: &str,
        now: i64,
    ) -> Result<Option<Item>, StoreError> {
        match self.get_item(item_key, operation).await? {
            Some(item) if is_live(&item, now, what)? => Ok(Some(item)),
            _ => Ok(None),
        }
    }

    async fn get_item(
        &self,
        item_key: Item,
        what: &'static str,
    ) -> Result<Option<Item>, StoreError> {
        let output = self
            .client
            .get_item()
            .table_name(&self.table)
            .set_key(Some(item_key))
            // Strongly consistent: a just-rotated secret must be the one used to verify.
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| unavailable(what, &e))?;
        Ok(output.item)
    }

    fn tenant_item(
        &self,
        tenant: &Tenant,
        sealed_secret: Vec<u8>,
        created_at: i64,
    ) -> Result<Item, StoreError> {
        let mut payload = tenant.install_payload.clone();
        redact_install_payload(&mut payload);
        let mut item = key(&tenant.client_key, TENANT_SK);
        item.insert("app_key".into(), s(&tenant.app_key));
        item.insert("base_url".into(), s(&tenant.base_url));
        item.insert("display_url".into(), s(&tenant.display_url));
        item.insert("product_type".into(), s(&tenant.product_type));
        for (name, value) in [
            ("oauth_client_id", &tenant.oauth_client_id),
            ("cloud_id", &tenant.cloud_id),
            ("installation_id", &tenant.installation_id),
        ] {
            if let Some(value) = value {
                item.insert(name.into(), s(value));
            }
        }
        item.insert("install_payload".into(), to_json(&payload)?);
        item.insert("state".into(), s(tenant.state.as_str()));
        item.insert("created_at".into(), n(created_at));
        item.insert("updated_at".into(), n(tenant.updated_at));
        item.insert(
            "shared_secret".into(),
            AttributeValue::B(Blob::new(sealed_secret)),
        );
        Ok(item)
    }

    async fn tenant_from_item(
        &self,
        client_key: &ClientKey,
        item: &Item,
    ) -> Result<Tenant, StoreError> {
        const W: &str = "tenant";
        let state = req_s(item, "state", W)?
            .parse()
            .map_err(|_| corrupt(W, "state"))?;
        let sealed = req_b(item, "shared_secret", W)?;
        let shared_secret = self
            .cipher
            .open(sealed, &secret_context(client_key, TENANT_SK))
            .await?;
        Ok(Tenant {
            client_key: client_key.clone(),
            app_key: req_s(item, "app_key", W)?,
            shared_secret,
            base_url: req_s(item, "base_url", W)?,
            display_url: req_s(item, "display_url", W)?,
            product_type: req_s(item, "product_type", W)?,
            oauth_client_id: opt_s(item, "oauth_client_id", W)?,
            cloud_id: opt_s(item, "cloud_id", W)?,
            installation_id: opt_s(item, "installation_id", W)?,
            install_payload: json_attr(item, "install_payload", W)?,
            state,
            created_at: req_n(item, "created_at", W)?,
            updated_at: req_n(item, "updated_at", W)?,
        })
    }

    /// Clears (`None`) or sets-if-absent the retention TTL of the settings item, if there is one.
    async fn settings_retention(
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
        match request.send().await {
            Ok(_) => Ok(()),
            // No settings were ever written: nothing to keep or expire.
            Err(e)
                if e.as_service_error()
                    .is_some_and(|s| s.is_conditional_check_failed_exception()) =>
            {
                Ok(())
            }
            Err(e) => Err(unavailable("DynamoDB UpdateItem (settings)", &e)),
        }
    }

    /// Audit items under `prefix` (the tenant's on the table, or a page's on the index), newest
    /// first, strictly after `before` in that order.
    async fn query_audit(
        &self,
        index: Option<&str>,
        client_key: &ClientKey,
        prefix: String,
        before: Option<&AuditCursor>,
        limit: usize,
        now: i64,
    ) -> Result<AuditPage, StoreError> {
        if limit == 0 {
            return Ok(AuditPage::from_listing(Vec::new(), 0));
        }
        let (pk_name, sk_name) = match index {
            Some(_) => (attr::GSI1_PK, attr::GSI1_SK),
            None => (attr::PK, attr::SK),
        };
        // With a cursor: `prefix <= sk <= prefix + cursor`, the cursor's own item skipped below.
        // (A lone `sk < cursor` would reach other kinds and other pages, e.g. page 1 below page 12.)
        let upper = before.map(|c| format!("{prefix}{}", cursor_sk_suffix(c)));
        let condition = match upper {
            Some(_) => "#pk = :pk AND #sk BETWEEN :prefix AND :upper",
            None => "#pk = :pk AND begins_with(#sk, :prefix)",
        };
        // One more than the page, to know whether there is a next one.
        let wanted = limit.saturating_add(1);
        let mut entries = Vec::new();
        let mut start: Option<Item> = None;
        // Limit counts items read before the filter drops expired ones: page until enough are kept.
        let page_size = i32::try_from(wanted.clamp(1, 500)).unwrap_or(500);
        while entries.len() < wanted {
            let mut request = self
                .client
                .query()
                .table_name(&self.table)
                .set_index_name(index.map(str::to_owned))
                .key_condition_expression(condition)
                .filter_expression("#exp > :now")
                .expression_attribute_names("#pk", pk_name)
                .expression_attribute_names("#sk", sk_name)
                .expression_attribute_names("#exp", attr::TTL)
                .expression_attribute_values(":pk", s(client_key.as_str()))
                .expression_attribute_values(":prefix", s(&prefix))
                .expression_attribute_values(":now", n(now))
                .scan_index_forward(false)
                .limit(page_size)
                .set_exclusive_start_key(start.take());
            if let Some(upper) = &upper {
                request = request.expression_attribute_values(":upper", s(upper));
            }
            let output = request
                .send()
                .await
                .map_err(|e| unavailable("DynamoDB Query (audit)", &e))?;
            for item in output.items() {
                if entries.len() >= wanted {
                    break;
                }
                let sk = req_s(item, sk_name, "audit")?;
                if upper.as_deref() == Some(sk.as_str()) {
                    continue;
                }
                entries.push((cursor_of_sk(&sk)?, json_attr(item, "record", "audit")?));
            }
            match output.last_evaluated_key {
                Some(next) if !next.is_empty() => start = Some(next),
                _ => break,
            }
        }
        Ok(AuditPage::from_listing(entries, limit))
    }
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
        self.tenant_from_item(client_key, &item).await.map(Some)
    }

    async fn save_install(&self, tenant: &Tenant, now: i64) -> Result<InstallOutcome, StoreError> {
        let sealed = self
            .cipher
            .seal(
                &tenant.shared_secret,
                &secret_context(&tenant.client_key, TENANT_SK),
            )
            .await?;
        // Two conditional puts: "create if absent (or expired)", else "replace if present" keeping
        // created_at. Each is atomic, so of two racing first installs exactly one gets New. If the
        // record changes between the two (it expired, or was deleted by TTL) the loop starts over.
        for _ in 0..3 {
            let item = self.tenant_item(tenant, sealed.clone(), tenant.created_at)?;
            let created = self
                .client
                .put_item()
                .table_name(&self.table)
                .set_item(Some(item))
                .condition_expression("attribute_not_exists(pk) OR #exp <= :now")
                .expression_attribute_names("#exp", attr::TTL)
                .expression_attribute_values(":now", n(now))
                .return_values_on_condition_check_failure(
                    ReturnValuesOnConditionCheckFailure::AllOld,
                )
                .send()
                .await;
            let old = match created {
                Ok(_) => return Ok(InstallOutcome::New),
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
            let was_uninstalled = opt_n(&old, attr::TTL, "tenant").ok().flatten().is_some();
            // A live tenant keeps its state (a disabled app stays disabled). The put is conditional
            // on the state read, so a `disabled` landing in between sends us round again rather
            // than being overwritten. A corrupt state is repaired with the given one.
            let old_state = old.get("state");
            let stored = match old_state {
                Some(AttributeValue::S(v)) => v.parse::<TenantState>().ok(),
                _ => None,
            };
            let mut kept = tenant.clone();
            kept.state = TenantState::after_install(stored, tenant.state);
            let item = self.tenant_item(&kept, sealed.clone(), created_at)?;
            let live = "attribute_exists(pk) AND (attribute_not_exists(#exp) OR #exp > :now)";
            let mut request = self
                .client
                .put_item()
                .table_name(&self.table)
                .set_item(Some(item))
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
            let replaced = request.send().await;
            match replaced {
                Ok(_) => {
                    if was_uninstalled {
                        self.settings_retention(&tenant.client_key, None).await?;
                    }
                    return Ok(InstallOutcome::Updated);
                }
                Err(e)
                    if e.as_service_error()
                        .is_some_and(|s| s.is_conditional_check_failed_exception()) => {}
                Err(e) => return Err(unavailable("DynamoDB PutItem (tenant)", &e)),
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
        match updated {
            Ok(_) => Ok(true),
            Err(e)
                if e.as_service_error()
                    .is_some_and(|s| s.is_conditional_check_failed_exception()) =>
            {
                Ok(false)
            }
            Err(e) => Err(unavailable("DynamoDB UpdateItem (tenant state)", &e)),
        }
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
        let attributes = match updated {
            Ok(output) => output.attributes.unwrap_or_default(),
            Err(e)
                if e.as_service_error()
                    .is_some_and(|s| s.is_conditional_check_failed_exception()) =>
            {
                return Ok(false);
            }
            Err(e) => return Err(unavailable("DynamoDB UpdateItem (uninstall)", &e)),
        };
        let expires = req_n(&attributes, attr::TTL, "tenant")?;
        self.settings_retention(client_key, Some(expires)).await?;
        self.drop_tokens_for_tenant(client_key).await?;
        Ok(true)
    }
}

#[async_trait]
impl TokenCache for DynamoStore {
    async fn get_token(
        &self,
        client_key: &ClientKey,
        key_hash: &TokenCacheKey,
        now: i64,
    ) -> Result<Option<CachedToken>, StoreError> {
        let sk = token_sk(key_hash);
        let Some(item) = self
            .get_item(key(client_key, &sk), "DynamoDB GetItem (token)")
            .await?
        else {
            return Ok(None);
        };
        let expires_at = req_n(&item, attr::TTL, "token")?;
        if expires_at <= now {
            return Ok(None);
        }
        let sealed = req_b(&item, "access_token", "token")?;
        let access_token = self
            .cipher
            .open(sealed, &secret_context(client_key, &sk))
            .await?;
        Ok(Some(CachedToken {
            access_token,
            expires_at,
        }))
    }

    async fn put_token(
        &self,
        client_key: &ClientKey,
        key_hash: &TokenCacheKey,
        token: &CachedToken,
    ) -> Result<(), StoreError> {
        let sk = token_sk(key_hash);
        let sealed = self
            .cipher
            .seal(&token.access_token, &secret_context(client_key, &sk))
            .await?;
        let mut item = key(client_key, sk);
        item.insert("access_token".into(), AttributeValue::B(Blob::new(sealed)));
        item.insert(attr::TTL.into(), n(token.expires_at));
        self.client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(item))
            .send()
            .await
            .map_err(|e| unavailable("DynamoDB PutItem (token)", &e))?;
        Ok(())
    }

    async fn drop_tokens_for_tenant(&self, client_key: &ClientKey) -> Result<(), StoreError> {
        // A Query on the tenant's own partition (never a Scan), then batched deletes.
        let mut keys = Vec::new();
        let mut start: Option<Item> = None;
        loop {
            let output = self
                .client
                .query()
                .table_name(&self.table)
                .key_condition_expression("pk = :pk AND begins_with(sk, :prefix)")
                .expression_attribute_values(":pk", s(client_key.as_str()))
                .expression_attribute_values(":prefix", s(TOKEN_PREFIX))
                .projection_expression("pk, sk")
                .consistent_read(true)
                .set_exclusive_start_key(start.take())
                .send()
                .await
                .map_err(|e| unavailable("DynamoDB Query (tokens)", &e))?;
            keys.extend(output.items.unwrap_or_default());
            match output.last_evaluated_key {
                Some(next) if !next.is_empty() => start = Some(next),
                _ => break,
            }
        }
        for chunk in keys.chunks(25) {
            let mut requests = chunk
                .iter()
                .map(|k| {
                    DeleteRequest::builder()
                        .set_key(Some(k.clone()))
                        .build()
                        .map(|d| WriteRequest::builder().delete_request(d).build())
                        .map_err(build_error)
                })
                .collect::<Result<Vec<_>, _>>()?;
            // BatchWriteItem may leave items unprocessed under throttling; retry those with backoff.
            for attempt in 0..5u32 {
                let output = self
                    .client
                    .batch_write_item()
                    .request_items(&self.table, requests)
                    .send()
                    .await
                    .map_err(|e| unavailable("DynamoDB BatchWriteItem (tokens)", &e))?;
                requests = output
                    .unprocessed_items
                    .and_then(|mut m| m.remove(&self.table))
                    .unwrap_or_default();
                if requests.is_empty() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(50 << attempt)).await;
            }
            if !requests.is_empty() {
                return Err(StoreError::unavailable("DynamoDB kept tokens unprocessed"));
            }
        }
        Ok(())
    }
}

#[async_trait]
impl IdempotencyMarks for DynamoStore {
    async fn mark_once(
        &self,
        client_key: &ClientKey,
        mark: &IdempotencyKey,
        ttl_seconds: i64,
        now: i64,
    ) -> Result<bool, StoreError> {
        let mut item = key(client_key, mark_sk(mark));
        item.insert("marked_at".into(), n(now));
        item.insert(attr::TTL.into(), n(now.saturating_add(ttl_seconds)));
        let put = self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(item))
            // An expired mark counts as absent even before DynamoDB deletes it.
            .condition_expression("attribute_not_exists(pk) OR #exp <= :now")
            .expression_attribute_names("#exp", attr::TTL)
            .expression_attribute_values(":now", n(now))
            .send()
            .await;
        match put {
            Ok(_) => Ok(true),
            Err(e)
                if e.as_service_error()
                    .is_some_and(|s| s.is_conditional_check_failed_exception()) =>
            {
                Ok(false)
            }
            Err(e) => Err(unavailable("DynamoDB PutItem (mark)", &e)),
        }
    }

    async fn clear_mark(
        &self,
        client_key: &ClientKey,
        mark: &IdempotencyKey,
    ) -> Result<(), StoreError> {
        self.client
            .delete_item()
            .table_name(&self.table)
            .set_key(Some(key(client_key, mark_sk(mark))))
            .send()
            .await
            .map_err(|e| unavailable("DynamoDB DeleteItem (mark)", &e))?;
        Ok(())
    }
}

#[async_trait]
impl AuditLog for DynamoStore {
    async fn append(&self, record: &AuditRecord, retention_seconds: i64) -> Result<(), StoreError> {
        let id = uuid::Uuid::new_v4().simple().to_string();
        let mut item = key(&record.client_key, audit_sk(record.at_ms, &id));
        item.insert(attr::GSI1_PK.into(), s(record.client_key.as_str()));
        item.insert(
            attr::GSI1_SK.into(),
            s(page_sk(&record.page_id, record.at_ms, &id)),
        );
        item.insert("record".into(), to_json(record)?);
        item.insert(attr::TTL.into(), n(audit_expiry(record, retention_seconds)));
        self.client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(item))
            .send()
            .await
            .map_err(|e| unavailable("DynamoDB PutItem (audit)", &e))?;
        Ok(())
    }

    async fn list_for_tenant(
        &self,
        client_key: &ClientKey,
        before: Option<&AuditCursor>,
        limit: usize,
        now: i64,
    ) -> Result<AuditPage, StoreError> {
        self.query_audit(
            None,
            client_key,
            AUDIT_PREFIX.to_owned(),
            before,
            limit,
            now,
        )
        .await
    }

    async fn list_for_page(
        &self,
        client_key: &ClientKey,
        page_id: &PageId,
        before: Option<&AuditCursor>,
        limit: usize,
        now: i64,
    ) -> Result<AuditPage, StoreError> {
        self.query_audit(
            Some(attr::GSI1),
            client_key,
            page_prefix(page_id),
            before,
            limit,
            now,
        )
        .await
    }
}

#[async_trait]
impl RateLimits for DynamoStore {
    async fn take(
        &self,
        client_key: &ClientKey,
        subject: &str,
        limit: u32,
        window_seconds: i64,
        now: i64,
    ) -> Result<RateDecision, StoreError> {
        let window = RateWindow::new(subject, window_seconds, now);
        // One atomic UpdateItem, no read first: ADD creates the counter at 1 or increments it, so
        // concurrent takes each see a distinct count. The item outlives its window by one more
        // window, then TTL deletes it.
        let expires = window.end().saturating_add(window.seconds());
        let output = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(key(client_key, rate_sk(&window))))
            .update_expression("ADD #count :one SET #exp = :exp")
            .expression_attribute_names("#count", "count")
            .expression_attribute_names("#exp", attr::TTL)
            .expression_attribute_values(":one", n(1))
            .expression_attribute_values(":exp", n(expires))
            .return_values(ReturnValue::UpdatedNew)
            .send()
            .await
            .map_err(|e| unavailable("DynamoDB UpdateItem (rate limit)", &e))?;
        let count = req_n(
            &output.attributes.unwrap_or_default(),
            "count",
            "rate limit",
        )?;
        let count = u64::try_from(count).map_err(|_| corrupt("rate limit", "count"))?;
        Ok(window.decide(count, limit, now))
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
        match kept {
            Ok(_) => return Ok(()),
            Err(e)
                if e.as_service_error()
                    .is_some_and(|s| s.is_conditional_check_failed_exception()) => {}
            Err(e) => return Err(unavailable("DynamoDB UpdateItem (settings)", &e)),
        }
        let mut item = key(client_key, SETTINGS_SK);
        item.insert("document".into(), document);
        self.client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(item))
            .send()
            .await
            .map_err(|e| unavailable("DynamoDB PutItem (settings)", &e))?;
        Ok(())
    }
}
