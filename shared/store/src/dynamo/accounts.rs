//! [`AccountRegistry`] on DynamoDB, in the tenant's partition (`pk` = clientKey):
//!
//! - `sk` = `ACCOUNT#<accountId>`: an account the tenant's data holds, `retrieved_at` (N), once
//!   reported `next_report_at` (N, when it is due again), and once reported closed `closed_at` (N: the listing is flagged
//!   [`StoredAccount::closed`] while its data is erased). A listing is one strongly consistent
//!   Query, `begins_with(sk, "ACCOUNT#")`, in sort key order, which is accountId order; the next
//!   page starts after `ExclusiveStartKey` = the `after` account's key (a position: it need not
//!   exist).
//! - `sk` = `CLOSED#<hex key>`: an account reported closed, by its [`ClosedAccountKey`] only, and
//!   `closed_at` (N). Nothing of it names the accountId. It stays for good.
//!
//! No TTL on either. Noting an account is one TransactWriteItems of two parts: a ConditionCheck
//! that the account's `CLOSED#` item is absent, and an UpdateItem of its `ACCOUNT#` item that sets
//! `retrieved_at` on the condition that the item is new or holds a later time. A check first and a
//! write after (GetItem, then UpdateItem) would leave a window in which a close could come between
//! the two and the account be listed as open after it was closed; in one transaction the check and
//! the write are atomic, and serialised with the close (itself one TransactWriteItems of two
//! unconditional UpdateItems: the `CLOSED#` item's `closed_at` set if not there, and the `ACCOUNT#`
//! item's `closed_at` and `retrieved_at` set if not there, which creates a flagged listing when
//! there was none). Which condition refused a cancelled note is read from the cancellation
//! reasons: the check's (closed: `false`, nothing written) or the update's (listed already, with
//! the older time: `true`, nothing to write). A transaction cancelled by a concurrent one is tried
//! again, a few times. Once the caller has erased a closed account's data, a DeleteItem forgets its
//! listing ([`AccountRegistry::forget_account`]); only the `CLOSED#` item is left.
//!
//! A report mark is one UpdateItem conditioned on `attribute_exists(pk)`: an account that is not
//! listed (never noted, or forgotten meanwhile) is never written back.
//!
//! The report schedule is in partitions of its own, `pk` = `#REPORT#<slot>` (see
//! [`crate::keys`]), one item per tenant, `sk` = the tenant key, no other attribute and no TTL:
//! put (PutItem) once an install or a Forge record is written, listed per slot by a strongly
//! consistent Query (`ExclusiveStartKey` = the `after` tenant's entry). A purge of a tenant whose
//! retention is over ([`AccountRegistry::purge_tenant`]) is a strongly consistent Query of the
//! tenant's partition (keys only), BatchWriteItem deletes of what it found (at most the budget),
//! then a DeleteItem of the `TENANT` item and a DeleteItem of the schedule entry, in that order;
//! when the budget runs out just before the schedule entry, a GetItem tells whether it is left.

use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_dynamodb::error::SdkError;
use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;
use aws_sdk_dynamodb::operation::update_item::UpdateItemError;
use aws_sdk_dynamodb::types::{ConditionCheck, Put, TransactWriteItem, Update};
use understudy_domain::{
    AccountId, AccountRegistry, AccountsPage, ClientKey, ClosedAccountKey, ScheduledPage,
    StoreError, StoredAccount,
};

use super::{
    DynamoStore, Item, attr, build_error, conditional, key, n, opt_n, raw_key, req_n, req_s, s,
};
use crate::aws::unavailable;
use crate::keys::{
    ACCOUNT_PREFIX, TENANT_SK, account_of_sk, account_sk, closed_sk, schedule_pk, schedule_pk_of,
    tenant_of_schedule_sk,
};

const W: &str = "account";

/// Attribute names (besides the keys).
mod name {
    pub(super) const RETRIEVED_AT: &str = "retrieved_at";
    pub(super) const NEXT_REPORT_AT: &str = "next_report_at";
    /// On the closed item, and on a listing flagged closed.
    pub(super) const CLOSED_AT: &str = "closed_at";
}

/// How often a transaction cancelled by a concurrent one is sent again.
const TRANSACTION_ATTEMPTS: u32 = 4;

/// What a cancelled transaction's reasons say of its part `index`.
fn refused(reasons: &[aws_sdk_dynamodb::types::CancellationReason], index: usize) -> bool {
    reasons
        .get(index)
        .and_then(|r| r.code())
        .is_some_and(|code| code == "ConditionalCheckFailed")
}

/// Whether a cancelled transaction met a concurrent one (worth sending again).
fn conflicted(reasons: &[aws_sdk_dynamodb::types::CancellationReason]) -> bool {
    reasons
        .iter()
        .any(|r| r.code().is_some_and(|code| code == "TransactionConflict"))
}

/// The reasons of a cancelled transaction; any other failure is [`StoreError::Unavailable`].
fn cancellation<R: std::fmt::Debug>(
    err: SdkError<TransactWriteItemsError, R>,
    operation: &'static str,
) -> Result<Vec<aws_sdk_dynamodb::types::CancellationReason>, StoreError> {
    match err.as_service_error() {
        Some(TransactWriteItemsError::TransactionCanceledException(e)) => {
            Ok(e.cancellation_reasons().to_vec())
        }
        _ => Err(unavailable(operation, &err)),
    }
}

/// A short pause before a transaction is sent again, longer each attempt.
async fn back_off(attempt: u32) {
    tokio::time::sleep(Duration::from_millis(20 * u64::from(attempt + 1))).await;
}

fn listed(item: &Item) -> Result<StoredAccount, StoreError> {
    Ok(StoredAccount {
        account: account_of_sk(&req_s(item, attr::SK, W)?)?,
        retrieved_at: req_n(item, name::RETRIEVED_AT, W)?,
        next_report_at: opt_n(item, name::NEXT_REPORT_AT, W)?,
        closed: opt_n(item, name::CLOSED_AT, W)?.is_some(),
    })
}

/// The tenant's entry in its report slot: `pk` = `#REPORT#<slot>`, `sk` = the tenant key.
fn schedule_key(tenant: &ClientKey) -> Item {
    raw_key(schedule_pk_of(tenant), tenant.as_str())
}

impl DynamoStore {
    /// Enters the tenant (a clientKey, or a Forge installation's own tenant key) in its report
    /// slot: one PutItem, idempotent.
    pub(super) async fn schedule(&self, tenant: &ClientKey) -> Result<(), StoreError> {
        self.put(schedule_key(tenant), "DynamoDB PutItem (report schedule)")
            .await
    }
}

#[async_trait]
impl AccountRegistry for DynamoStore {
    async fn note_account(
        &self,
        client_key: &ClientKey,
        account: &AccountId,
        retrieved_at: i64,
    ) -> Result<bool, StoreError> {
        const OP: &str = "DynamoDB TransactWriteItems (note account)";
        let not_closed = ConditionCheck::builder()
            .table_name(&self.table)
            .set_key(Some(key(
                client_key,
                closed_sk(&ClosedAccountKey::new(account)),
            )))
            .condition_expression("attribute_not_exists(#pk)")
            .expression_attribute_names("#pk", attr::PK)
            .build()
            .map_err(build_error)?;
        // New, or holding a later time (or none readable: a corrupt one is repaired).
        let listing = Update::builder()
            .table_name(&self.table)
            .set_key(Some(key(client_key, account_sk(account))))
            .update_expression("SET #ret = :at")
            .condition_expression(
                "attribute_not_exists(#pk) OR NOT attribute_type(#ret, :number) OR #ret > :at",
            )
            .expression_attribute_names("#pk", attr::PK)
            .expression_attribute_names("#ret", name::RETRIEVED_AT)
            .expression_attribute_values(":at", n(retrieved_at))
            .expression_attribute_values(":number", s("N"))
            .build()
            .map_err(build_error)?;
        // A tenant whose data now holds an account is in the report schedule, also one that
        // installed before the schedule existed.
        let scheduled = Put::builder()
            .table_name(&self.table)
            .set_item(Some(schedule_key(client_key)))
            .build()
            .map_err(build_error)?;
        let items = [
            TransactWriteItem::builder()
                .condition_check(not_closed)
                .build(),
            TransactWriteItem::builder().update(listing).build(),
            TransactWriteItem::builder().put(scheduled).build(),
        ];
        for attempt in 0..TRANSACTION_ATTEMPTS {
            let sent = self
                .client
                .transact_write_items()
                .set_transact_items(Some(items.to_vec()))
                .send()
                .await;
            let reasons = match sent {
                Ok(_) => return Ok(true),
                Err(e) => cancellation(e, OP)?,
            };
            if refused(&reasons, 0) {
                return Ok(false);
            }
            if refused(&reasons, 1) {
                // Listed already, with an older (or the same) time: that one stays.
                return Ok(true);
            }
            if !conflicted(&reasons) {
                break;
            }
            back_off(attempt).await;
        }
        Err(StoreError::unavailable(format!("{OP}: cancelled")))
    }

    async fn list_accounts(
        &self,
        client_key: &ClientKey,
        after: Option<&AccountId>,
        limit: usize,
    ) -> Result<AccountsPage, StoreError> {
        if limit == 0 {
            return Ok(AccountsPage::default());
        }
        // One more than the page, to know whether there is a next one.
        let items = self
            .query_partition(
                client_key.as_str(),
                Some(ACCOUNT_PREFIX),
                after.map(|a| key(client_key, account_sk(a))),
                limit.saturating_add(1),
                "DynamoDB Query (accounts)",
            )
            .await?;
        let mut accounts = items.iter().map(listed).collect::<Result<Vec<_>, _>>()?;
        let more = accounts.len() > limit;
        accounts.truncate(limit);
        let next = more
            .then(|| accounts.last().map(|a| a.account.clone()))
            .flatten();
        Ok(AccountsPage { accounts, next })
    }

    async fn mark_reported(
        &self,
        client_key: &ClientKey,
        account: &AccountId,
        next_report_at: i64,
        refreshed_at: Option<i64>,
    ) -> Result<(), StoreError> {
        let update = if refreshed_at.is_some() {
            "SET #next = :next, #ret = :ret"
        } else {
            "SET #next = :next"
        };
        let mut request = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(key(client_key, account_sk(account))))
            .update_expression(update)
            // Only a listed account: an update must never list one again.
            .condition_expression("attribute_exists(#pk)")
            .expression_attribute_names("#pk", attr::PK)
            .expression_attribute_names("#next", name::NEXT_REPORT_AT)
            .expression_attribute_values(":next", n(next_report_at));
        if let Some(at) = refreshed_at {
            request = request
                .expression_attribute_names("#ret", name::RETRIEVED_AT)
                .expression_attribute_values(":ret", n(at));
        }
        conditional(
            request.send().await,
            UpdateItemError::is_conditional_check_failed_exception,
            "DynamoDB UpdateItem (account reported)",
        )?;
        Ok(())
    }

    async fn close_account(
        &self,
        client_key: &ClientKey,
        account: &AccountId,
        now: i64,
    ) -> Result<(), StoreError> {
        const OP: &str = "DynamoDB TransactWriteItems (close account)";
        // The first closing time stays, on both items.
        let closed = Update::builder()
            .table_name(&self.table)
            .set_key(Some(key(
                client_key,
                closed_sk(&ClosedAccountKey::new(account)),
            )))
            .update_expression("SET #closed = if_not_exists(#closed, :now)")
            .expression_attribute_names("#closed", name::CLOSED_AT)
            .expression_attribute_values(":now", n(now))
            .build()
            .map_err(build_error)?;
        // No condition: an account that was not listed gets a flagged listing, which the caller
        // erases and forgets like any other.
        let flagged = Update::builder()
            .table_name(&self.table)
            .set_key(Some(key(client_key, account_sk(account))))
            .update_expression(
                "SET #closed = if_not_exists(#closed, :now), #ret = if_not_exists(#ret, :now)",
            )
            .expression_attribute_names("#closed", name::CLOSED_AT)
            .expression_attribute_names("#ret", name::RETRIEVED_AT)
            .expression_attribute_values(":now", n(now))
            .build()
            .map_err(build_error)?;
        let items = [
            TransactWriteItem::builder().update(closed).build(),
            TransactWriteItem::builder().update(flagged).build(),
        ];
        for attempt in 0..TRANSACTION_ATTEMPTS {
            let sent = self
                .client
                .transact_write_items()
                .set_transact_items(Some(items.to_vec()))
                .send()
                .await;
            let reasons = match sent {
                Ok(_) => return Ok(()),
                Err(e) => cancellation(e, OP)?,
            };
            if !conflicted(&reasons) {
                break;
            }
            back_off(attempt).await;
        }
        Err(StoreError::unavailable(format!("{OP}: cancelled")))
    }

    async fn forget_account(
        &self,
        client_key: &ClientKey,
        account: &AccountId,
    ) -> Result<(), StoreError> {
        self.delete(
            key(client_key, account_sk(account)),
            "DynamoDB DeleteItem (forget account)",
        )
        .await
    }

    async fn is_closed(
        &self,
        client_key: &ClientKey,
        key: &ClosedAccountKey,
    ) -> Result<bool, StoreError> {
        Ok(self
            .get_item(
                super::key(client_key, closed_sk(key)),
                "DynamoDB GetItem (closed account)",
            )
            .await?
            .is_some())
    }

    async fn scheduled_tenants(
        &self,
        slot: u32,
        after: Option<&ClientKey>,
        limit: usize,
    ) -> Result<ScheduledPage, StoreError> {
        if limit == 0 {
            return Ok(ScheduledPage::default());
        }
        let pk = schedule_pk(slot);
        // One more than the page, to know whether there is a next one.
        let items = self
            .query_partition(
                pk.as_str(),
                None,
                after.map(|a| raw_key(pk.as_str(), a.as_str())),
                limit.saturating_add(1),
                "DynamoDB Query (report schedule)",
            )
            .await?;
        let mut tenants = items
            .iter()
            .map(|item| tenant_of_schedule_sk(&req_s(item, attr::SK, "report schedule")?))
            .collect::<Result<Vec<_>, _>>()?;
        let more = tenants.len() > limit;
        tenants.truncate(limit);
        let next = more.then(|| tenants.last().cloned()).flatten();
        Ok(ScheduledPage { tenants, next })
    }

    async fn purge_tenant(
        &self,
        client_key: &ClientKey,
        max_items: usize,
    ) -> Result<bool, StoreError> {
        // The keys of the tenant's items (its own `TENANT` item aside), at most the budget, and
        // whether any is left beyond it.
        let page_size = i32::try_from(max_items.saturating_add(2).clamp(1, 1000)).unwrap_or(1000);
        let mut doomed: Vec<Item> = Vec::new();
        let (mut own, mut more) = (false, false);
        let mut start: Option<Item> = None;
        'pages: loop {
            let output = self
                .client
                .query()
                .table_name(&self.table)
                .key_condition_expression("#pk = :pk")
                .expression_attribute_names("#pk", attr::PK)
                .expression_attribute_names("#sk", attr::SK)
                .expression_attribute_values(":pk", s(client_key.as_str()))
                .projection_expression("#pk, #sk")
                .consistent_read(true)
                .limit(page_size)
                .set_exclusive_start_key(start.take())
                .send()
                .await
                .map_err(|e| unavailable("DynamoDB Query (purge)", &e))?;
            for item in output.items.unwrap_or_default() {
                if req_s(&item, attr::SK, "purge")? == TENANT_SK {
                    own = true;
                    continue;
                }
                if doomed.len() >= max_items {
                    more = true;
                    break 'pages;
                }
                doomed.push(item);
            }
            match output.last_evaluated_key {
                Some(next) if !next.is_empty() => start = Some(next),
                _ => break,
            }
        }
        let mut budget = max_items.saturating_sub(doomed.len());
        self.batch_delete(doomed, "DynamoDB BatchWriteItem (purge)")
            .await?;
        if more {
            return Ok(false);
        }
        // The tenant's own item after everything else.
        if own {
            if budget == 0 {
                return Ok(false);
            }
            self.delete(
                key(client_key, TENANT_SK),
                "DynamoDB DeleteItem (purge tenant)",
            )
            .await?;
            budget = budget.saturating_sub(1);
        }
        // The schedule entry last: while it is there, the purge is not done.
        if budget == 0 {
            let left = self
                .get_item(
                    schedule_key(client_key),
                    "DynamoDB GetItem (report schedule)",
                )
                .await?;
            return Ok(left.is_none());
        }
        self.delete(
            schedule_key(client_key),
            "DynamoDB DeleteItem (report schedule)",
        )
        .await?;
        Ok(true)
    }
}
