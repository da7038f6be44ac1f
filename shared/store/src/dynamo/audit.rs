//! [`AuditLog`] on DynamoDB: audit items in the tenant's partition, `sk` = `AUDIT#<ms>#<id>`,
//! `gsi1pk` = the clientKey and `gsi1sk` = `PAGE#<pageId>#<ms>#<id>` (listed per page through the
//! sparse index `gsi1`), `record` (S, the [`AuditRecord`] as JSON) and `expires_at` (N, the TTL).
//! The accountId an edit was made as is in `record` only (`acted_as`), nowhere else in the item.
//!
//! Erasing an account ([`AuditLog::erase_account`]) reads the tenant's own audit items (a strongly
//! consistent Query, `pk = <clientKey> AND begins_with(sk, "AUDIT#")`, paginated, filtered to
//! records whose text contains the accountId; never a Scan) and rewrites the `record` of each whose
//! `acted_as` names the account with one UpdateItem conditioned on the item still existing (one the
//! TTL took meanwhile stays gone). Keys, index keys and TTL are left as they were.

use async_trait::async_trait;
use aws_sdk_dynamodb::operation::update_item::UpdateItemError;
use understudy_domain::{
    AccountId, ActedAs, AuditCursor, AuditLog, AuditPage, AuditRecord, ClientKey, PageId,
    StoreError,
};

use super::{DynamoStore, Item, attr, conditional, json_attr, key, n, req_s, s, to_json};
use crate::aws::unavailable;
use crate::keys::{
    AUDIT_PREFIX, audit_expiry, audit_sk, cursor_of_sk, cursor_sk_suffix, page_prefix, page_sk,
};

/// The attribute that holds the record, as JSON.
const RECORD: &str = "record";

impl DynamoStore {
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
                entries.push((cursor_of_sk(&sk)?, json_attr(item, RECORD, "audit")?));
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
impl AuditLog for DynamoStore {
    async fn append(&self, record: &AuditRecord, retention_seconds: i64) -> Result<(), StoreError> {
        let id = uuid::Uuid::new_v4().simple().to_string();
        let mut item = key(&record.client_key, audit_sk(record.at_ms, &id));
        item.insert(attr::GSI1_PK.into(), s(record.client_key.as_str()));
        item.insert(
            attr::GSI1_SK.into(),
            s(page_sk(&record.page_id, record.at_ms, &id)),
        );
        item.insert(RECORD.into(), to_json(record)?);
        item.insert(attr::TTL.into(), n(audit_expiry(record, retention_seconds)));
        self.put(item, "DynamoDB PutItem (audit)").await
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

    async fn erase_account(
        &self,
        client_key: &ClientKey,
        account: &AccountId,
    ) -> Result<usize, StoreError> {
        let named = ActedAs::User(account.clone());
        let mut erased = 0usize;
        let mut start: Option<Item> = None;
        loop {
            // Expired items too: the TTL deletes them lazily, and until then they are data.
            let output = self
                .client
                .query()
                .table_name(&self.table)
                .key_condition_expression("#pk = :pk AND begins_with(#sk, :prefix)")
                // The accountId's characters ([A-Za-z0-9:_-]) stand as they are in JSON text: a
                // record naming it contains it. The record itself decides below.
                .filter_expression("contains(#rec, :account)")
                .projection_expression("#pk, #sk, #rec")
                .expression_attribute_names("#pk", attr::PK)
                .expression_attribute_names("#sk", attr::SK)
                .expression_attribute_names("#rec", RECORD)
                .expression_attribute_values(":pk", s(client_key.as_str()))
                .expression_attribute_values(":prefix", s(AUDIT_PREFIX))
                .expression_attribute_values(":account", s(account.as_str()))
                .consistent_read(true)
                .set_exclusive_start_key(start.take())
                .send()
                .await
                .map_err(|e| unavailable("DynamoDB Query (audit erasure)", &e))?;
            for item in output.items() {
                let mut record: AuditRecord = json_attr(item, RECORD, "audit")?;
                if record.acted_as != named {
                    continue;
                }
                record.acted_as = ActedAs::User(AccountId::erased());
                let sk = req_s(item, attr::SK, "audit")?;
                let updated = self
                    .client
                    .update_item()
                    .table_name(&self.table)
                    .set_key(Some(key(client_key, sk)))
                    .update_expression("SET #rec = :rec")
                    // Only an item still there: one the TTL deleted meanwhile stays deleted.
                    .condition_expression("attribute_exists(#pk)")
                    .expression_attribute_names("#pk", attr::PK)
                    .expression_attribute_names("#rec", RECORD)
                    .expression_attribute_values(":rec", to_json(&record)?)
                    .send()
                    .await;
                let updated = conditional(
                    updated,
                    UpdateItemError::is_conditional_check_failed_exception,
                    "DynamoDB UpdateItem (audit erasure)",
                )?;
                if updated.is_some() {
                    erased = erased.saturating_add(1);
                }
            }
            match output.last_evaluated_key {
                Some(next) if !next.is_empty() => start = Some(next),
                _ => break,
            }
        }
        Ok(erased)
    }
}
