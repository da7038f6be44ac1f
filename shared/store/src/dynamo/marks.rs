//! [`IdempotencyMarks`] on DynamoDB: de-duplication marks (`sk` = `MARK#<key>`), set by a
//! conditional put.

use async_trait::async_trait;
use aws_sdk_dynamodb::operation::put_item::PutItemError;
use aws_sdk_dynamodb::types::ReturnValuesOnConditionCheckFailure;
use understudy_domain::{ClientKey, IdempotencyKey, IdempotencyMarks, Marked, StoreError};

use super::{DynamoStore, attr, key, n, s};
use crate::aws::unavailable;
use crate::keys::mark_sk;

/// The attribute holding the token of the call that wrote a mark.
const MARKED_BY: &str = "marked_by";

#[async_trait]
impl IdempotencyMarks for DynamoStore {
    async fn mark_once(
        &self,
        client_key: &ClientKey,
        mark: &IdempotencyKey,
        ttl_seconds: i64,
        now: i64,
    ) -> Result<Marked, StoreError> {
        let mut item = key(client_key, mark_sk(mark));
        item.insert("marked_at".into(), n(now));
        item.insert(attr::TTL.into(), n(now.saturating_add(ttl_seconds)));
        // This call's own token: the SDK sends the same request again when an answer is lost (a
        // timeout, a dropped connection) though the write landed, and that second try must not
        // take the first one's mark for another delivery's.
        let token = s(uuid::Uuid::new_v4().simple().to_string());
        item.insert(MARKED_BY.into(), token.clone());
        // An expired mark counts as absent even before DynamoDB deletes it.
        let put = self
            .put_if_absent(item, now)
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
            .send()
            .await;
        match put {
            Ok(_) => Ok(Marked::First),
            Err(e) => match e.as_service_error() {
                Some(PutItemError::ConditionalCheckFailedException(refused)) => {
                    let old = refused.item.as_ref();
                    if old.and_then(|old| old.get(MARKED_BY)) == Some(&token) {
                        return Ok(Marked::First);
                    }
                    let marked_at = old
                        .and_then(|old| old.get("marked_at"))
                        .and_then(|at| at.as_n().ok())
                        .and_then(|at| at.parse().ok())
                        .unwrap_or(i64::MIN);
                    Ok(Marked::Already { marked_at })
                }
                _ => Err(unavailable("DynamoDB PutItem (mark)", &e)),
            },
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
