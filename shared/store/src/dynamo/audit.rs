//! [`AuditLog`] on DynamoDB: audit items (`sk` = `AUDIT#<ms>#<id>`), listed per page through the
//! sparse index `gsi1`.

use async_trait::async_trait;
use understudy_domain::{
    AuditCursor, AuditLog, AuditPage, AuditRecord, ClientKey, PageId, StoreError,
};

use super::{DynamoStore, Item, attr, json_attr, key, n, req_s, s, to_json};
use crate::aws::unavailable;
use crate::keys::{
    AUDIT_PREFIX, audit_expiry, audit_sk, cursor_of_sk, cursor_sk_suffix, page_prefix, page_sk,
};

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
}
