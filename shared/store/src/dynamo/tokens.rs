//! [`TokenCache`] on DynamoDB: cached access tokens (`sk` = `TOKEN#<hash>`), sealed, expiring
//! with the token. One is dropped with a DeleteItem; all of a tenant's with a Query of its
//! `TOKEN#` keys and BatchWriteItem deletes.

use async_trait::async_trait;
use aws_sdk_dynamodb::primitives::Blob;
use aws_sdk_dynamodb::types::AttributeValue;
use understudy_domain::{CachedToken, ClientKey, StoreError, TokenCache, TokenCacheKey};

use super::{DynamoStore, Item, attr, key, n, req_b, req_n, s};
use crate::aws::unavailable;
use crate::codec::TokenRow;
use crate::keys::{TOKEN_PREFIX, token_sk};

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
        let row = TokenRow {
            access_token: req_b(&item, "access_token", "token")?.to_vec(),
            expires_at,
        };
        row.open(client_key, key_hash, &*self.cipher)
            .await
            .map(Some)
    }

    async fn put_token(
        &self,
        client_key: &ClientKey,
        key_hash: &TokenCacheKey,
        token: &CachedToken,
    ) -> Result<(), StoreError> {
        let row = TokenRow::seal(client_key, key_hash, token, &*self.cipher).await?;
        let mut item = key(client_key, token_sk(key_hash));
        item.insert(
            "access_token".into(),
            AttributeValue::B(Blob::new(row.access_token)),
        );
        item.insert(attr::TTL.into(), n(row.expires_at));
        self.put(item, "DynamoDB PutItem (token)").await
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
        self.batch_delete(keys, "DynamoDB BatchWriteItem (tokens)")
            .await
    }

    async fn drop_token(
        &self,
        client_key: &ClientKey,
        key_hash: &TokenCacheKey,
    ) -> Result<(), StoreError> {
        self.delete(
            key(client_key, token_sk(key_hash)),
            "DynamoDB DeleteItem (token)",
        )
        .await
    }
}
