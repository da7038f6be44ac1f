//! [`RateLimits`] on DynamoDB: one counter item per tenant, subject and window
//! (`sk` = `RATE#...`), counted by an atomic `ADD`.

use async_trait::async_trait;
use aws_sdk_dynamodb::types::ReturnValue;
use understudy_domain::{ClientKey, RateDecision, RateLimits, RateWindow, StoreError};

use super::{DynamoStore, attr, corrupt, key, n, req_n};
use crate::aws::unavailable;
use crate::keys::rate_sk;

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
