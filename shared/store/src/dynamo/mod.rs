//! The DynamoDB adapter: one table for everything (see the crate docs for the key schema).
//!
//! This module holds what every port shares: the client and table, the item codec (attribute
//! readers and writers) and conditional writes. Each port is in a file of its own.

mod accounts;
mod audit;
mod forge;
mod marks;
mod parked;
mod rate_limits;
mod settings;
mod tenants;
mod tokens;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use aws_config::SdkConfig;
use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_dynamodb::operation::put_item::builders::PutItemFluentBuilder;
use aws_sdk_dynamodb::types::{
    AttributeDefinition, AttributeValue, BillingMode, DeleteRequest, GlobalSecondaryIndex,
    KeySchemaElement, KeyType, Projection, ProjectionType, ScalarAttributeType, TableStatus,
    TimeToLiveSpecification, WriteRequest,
};
use understudy_domain::{ClientKey, StoreError};

use crate::aws::{retry_config, timeout_config, unavailable};
use crate::crypto::SecretCipher;
use crate::keys::live;

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
    raw_key(client_key.as_str(), sk)
}

/// The key of an item in any partition: a tenant's, or one of the app's own (the schedule's).
fn raw_key(pk: impl Into<String>, sk: impl Into<String>) -> Item {
    HashMap::from([(attr::PK.to_owned(), s(pk)), (attr::SK.to_owned(), s(sk))])
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

fn req_bool(item: &Item, name: &str, what: &str) -> Result<bool, StoreError> {
    match item.get(name) {
        Some(AttributeValue::Bool(v)) => Ok(*v),
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

/// A conditional write's result: `Some(output)` when it was written, `None` when DynamoDB refused
/// its condition (`refused`, the operation's own check), [`StoreError::Unavailable`] when the call
/// failed.
fn conditional<O, E, R>(
    result: Result<O, SdkError<E, R>>,
    refused: fn(&E) -> bool,
    operation: &'static str,
) -> Result<Option<O>, StoreError>
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug,
{
    match result {
        Ok(output) => Ok(Some(output)),
        Err(e) if e.as_service_error().is_some_and(refused) => Ok(None),
        Err(e) => Err(unavailable(operation, &e)),
    }
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

    /// Items of partition `pk` (with sort keys starting with `prefix`, when given) in sort key
    /// order, strictly after `start`, at most `wanted`: strongly consistent Queries of up to
    /// 1,000 items each, until that many are read or the partition ends.
    pub(crate) async fn query_partition(
        &self,
        pk: &str,
        prefix: Option<&str>,
        mut start: Option<Item>,
        wanted: usize,
        operation: &'static str,
    ) -> Result<Vec<Item>, StoreError> {
        let page_size = i32::try_from(wanted.clamp(1, 1000)).unwrap_or(1000);
        let mut items = Vec::new();
        while items.len() < wanted {
            let mut query = self
                .client
                .query()
                .table_name(&self.table)
                .expression_attribute_names("#pk", attr::PK)
                .expression_attribute_values(":pk", s(pk))
                .consistent_read(true)
                .limit(page_size)
                .set_exclusive_start_key(start.take());
            query = match prefix {
                Some(prefix) => query
                    .key_condition_expression("#pk = :pk AND begins_with(#sk, :prefix)")
                    .expression_attribute_names("#sk", attr::SK)
                    .expression_attribute_values(":prefix", s(prefix)),
                None => query.key_condition_expression("#pk = :pk"),
            };
            let output = query.send().await.map_err(|e| unavailable(operation, &e))?;
            let room = wanted.saturating_sub(items.len());
            items.extend(output.items().iter().take(room).cloned());
            match output.last_evaluated_key {
                Some(next) if !next.is_empty() => start = Some(next),
                _ => break,
            }
        }
        Ok(items)
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

    /// A PutItem of `item`, to be completed and sent.
    fn put_request(&self, item: Item) -> PutItemFluentBuilder {
        self.client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(item))
    }

    /// Writes `item`, replacing whatever its key held.
    async fn put(&self, item: Item, operation: &'static str) -> Result<(), StoreError> {
        self.put_request(item)
            .send()
            .await
            .map_err(|e| unavailable(operation, &e))?;
        Ok(())
    }

    /// A PutItem of `item` on the condition that no live item has its key: none, or one whose TTL
    /// has passed (it counts as absent before DynamoDB deletes it).
    fn put_if_absent(&self, item: Item, now: i64) -> PutItemFluentBuilder {
        self.put_request(item)
            .condition_expression("attribute_not_exists(pk) OR #exp <= :now")
            .expression_attribute_names("#exp", attr::TTL)
            .expression_attribute_values(":now", n(now))
    }

    /// Deletes the items of these keys (absent ones are no error): BatchWriteItem in chunks of 25,
    /// what DynamoDB leaves unprocessed (throttling) sent again with backoff, a bounded number of
    /// times.
    async fn batch_delete(
        &self,
        keys: Vec<Item>,
        operation: &'static str,
    ) -> Result<(), StoreError> {
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
            for attempt in 0..5u32 {
                let output = self
                    .client
                    .batch_write_item()
                    .request_items(&self.table, requests)
                    .send()
                    .await
                    .map_err(|e| unavailable(operation, &e))?;
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
                return Err(StoreError::unavailable(format!(
                    "{operation}: items left unprocessed"
                )));
            }
        }
        Ok(())
    }

    /// Deletes one item (an absent one is no error).
    async fn delete(&self, item_key: Item, operation: &'static str) -> Result<(), StoreError> {
        self.client
            .delete_item()
            .table_name(&self.table)
            .set_key(Some(item_key))
            .send()
            .await
            .map_err(|e| unavailable(operation, &e))?;
        Ok(())
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
}
