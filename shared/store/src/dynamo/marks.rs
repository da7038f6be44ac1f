//! [`IdempotencyMarks`] on DynamoDB: de-duplication marks (`sk` = `MARK#<key>`), set by a
//! conditional put.

use async_trait::async_trait;
use aws_sdk_dynamodb::operation::put_item::PutItemError;
use understudy_domain::{ClientKey, IdempotencyKey, IdempotencyMarks, StoreError};

use super::{DynamoStore, attr, conditional, key, n};
use crate::aws::unavailable;
use crate::keys::mark_sk;

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
        // An expired mark counts as absent even before DynamoDB deletes it.
        let put = self.put_if_absent(item, now).send().await;
        let put = conditional(
            put,
            PutItemError::is_conditional_check_failed_exception,
            "DynamoDB PutItem (mark)",
        )?;
        Ok(put.is_some())
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
