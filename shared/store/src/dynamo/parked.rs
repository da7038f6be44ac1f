//! [`ParkedJobs`] on DynamoDB: one item per page (`sk` = `PARKED#<pageId>`), so a park that
//! replaces the page's last job is one PutItem, an unpark one DeleteItem and a read one strongly
//! consistent GetItem. The item also carries `gsi1pk` = clientKey and `gsi1sk` =
//! `PARKEDAT#<ms>#<pageId>`: a listing is a Query of the tenant's partition of the index `gsi1`,
//! newest first, never a Scan. The index holds one entry per item, so a replaced job is never
//! listed twice; being an index, it is eventually consistent (a job parked a moment ago may be
//! missing from a listing, never from [`ParkedJobs::parked`]).
//!
//! Attributes: `at_ms` (N), `outcome` (S, `blocked`/`failed`), `reason` (S), `dead_lettered`
//! (BOOL), `job` (S, the queue's JSON, in plain text like an audit record: no secret), and the TTL
//! `expires_at` (N).

use async_trait::async_trait;
use aws_sdk_dynamodb::types::AttributeValue;
use serde_json::Value;
use understudy_domain::{
    ClientKey, EditOutcome, PageId, ParkedJob, ParkedJobs, ParkedPage, StoreError,
};

use super::{DynamoStore, Item, attr, corrupt, key, n, req_bool, req_n, req_s, s};
use crate::aws::unavailable;
use crate::codec::{ParkedRow, parked_page};
use crate::keys::{PARKED_AT_PREFIX, page_of_parked_sk, parked_at_sk, parked_sk};

const W: &str = "parked job";

/// Attribute names of a parked item (besides the keys and the TTL).
mod name {
    pub(super) const AT_MS: &str = "at_ms";
    pub(super) const OUTCOME: &str = "outcome";
    pub(super) const REASON: &str = "reason";
    pub(super) const DEAD_LETTERED: &str = "dead_lettered";
    pub(super) const JOB: &str = "job";
}

/// `blocked`, `failed`, ...: the outcome's serde name.
fn outcome_attr(outcome: EditOutcome) -> Result<AttributeValue, StoreError> {
    match serde_json::to_value(outcome) {
        Ok(Value::String(text)) => Ok(s(text)),
        _ => Err(StoreError::corrupt("parked job to write (outcome)")),
    }
}

fn to_item(job: &ParkedJob) -> Result<Item, StoreError> {
    let row = ParkedRow::of(job);
    let mut item = key(&job.client_key, parked_sk(&job.page_id));
    item.insert(attr::GSI1_PK.into(), s(job.client_key.as_str()));
    item.insert(
        attr::GSI1_SK.into(),
        s(parked_at_sk(row.at_ms, &job.page_id)),
    );
    item.insert(name::AT_MS.into(), n(row.at_ms));
    item.insert(name::OUTCOME.into(), outcome_attr(row.outcome)?);
    item.insert(name::REASON.into(), s(row.reason));
    item.insert(
        name::DEAD_LETTERED.into(),
        AttributeValue::Bool(row.dead_lettered),
    );
    item.insert(name::JOB.into(), s(row.job));
    item.insert(attr::TTL.into(), n(row.expires_at));
    Ok(item)
}

/// The row an item holds; a missing or mistyped attribute is [`StoreError::Corrupt`].
fn from_item(item: &Item) -> Result<ParkedRow, StoreError> {
    let outcome = serde_json::from_value(Value::String(req_s(item, name::OUTCOME, W)?))
        .map_err(|_| corrupt(W, name::OUTCOME))?;
    Ok(ParkedRow {
        at_ms: req_n(item, name::AT_MS, W)?,
        outcome,
        reason: req_s(item, name::REASON, W)?,
        dead_lettered: req_bool(item, name::DEAD_LETTERED, W)?,
        job: req_s(item, name::JOB, W)?,
        expires_at: req_n(item, attr::TTL, W)?,
    })
}

/// The job a listed item holds, `None` when expired: its page from `sk`, and its place in the
/// index (`gsi1sk`) agreeing with its `at_ms`, or the listing's order and cursor would not be the
/// job's.
fn listed_job(
    item: &Item,
    client_key: &ClientKey,
    gsi1sk: &str,
    now: i64,
) -> Result<Option<ParkedJob>, StoreError> {
    let page_id = page_of_parked_sk(&req_s(item, attr::SK, W)?)?;
    let row = from_item(item)?;
    if parked_at_sk(row.at_ms, &page_id) != gsi1sk {
        return Err(corrupt(W, attr::GSI1_SK));
    }
    Ok(row
        .is_live(now)
        .then(|| row.into_job(client_key.clone(), page_id)))
}

#[async_trait]
impl ParkedJobs for DynamoStore {
    async fn park(&self, job: &ParkedJob) -> Result<(), StoreError> {
        self.put(to_item(job)?, "DynamoDB PutItem (parked job)")
            .await
    }

    async fn unpark(&self, client_key: &ClientKey, page_id: &PageId) -> Result<(), StoreError> {
        self.client
            .delete_item()
            .table_name(&self.table)
            .set_key(Some(key(client_key, parked_sk(page_id))))
            .send()
            .await
            .map_err(|e| unavailable("DynamoDB DeleteItem (parked job)", &e))?;
        Ok(())
    }

    async fn parked(
        &self,
        client_key: &ClientKey,
        page_id: &PageId,
        now: i64,
    ) -> Result<Option<ParkedJob>, StoreError> {
        let Some(item) = self
            .get_item(
                key(client_key, parked_sk(page_id)),
                "DynamoDB GetItem (parked job)",
            )
            .await?
        else {
            return Ok(None);
        };
        let row = from_item(&item)?;
        if !row.is_live(now) {
            return Ok(None);
        }
        Ok(Some(row.into_job(client_key.clone(), page_id.clone())))
    }

    async fn list_parked(
        &self,
        client_key: &ClientKey,
        after: Option<&(i64, PageId)>,
        limit: usize,
        now: i64,
    ) -> Result<ParkedPage, StoreError> {
        if limit == 0 {
            return Ok(ParkedPage::default());
        }
        // With a cursor: `PARKEDAT# <= gsi1sk <= the cursor's key`, its own entry skipped below.
        // (A lone `gsi1sk < cursor` would reach the audit entries the index holds for the tenant.)
        let upper = after.map(|(at_ms, page_id)| parked_at_sk(*at_ms, page_id));
        let condition = match upper {
            Some(_) => "#pk = :pk AND #sk BETWEEN :prefix AND :upper",
            None => "#pk = :pk AND begins_with(#sk, :prefix)",
        };
        // One more than the page, to know whether there is a next one.
        let wanted = limit.saturating_add(1);
        // Limit counts items read before the filter drops expired ones: page until enough are kept.
        let page_size = i32::try_from(wanted.clamp(1, 500)).unwrap_or(500);
        let mut jobs = Vec::new();
        let mut start: Option<Item> = None;
        while jobs.len() < wanted {
            let mut request = self
                .client
                .query()
                .table_name(&self.table)
                .index_name(attr::GSI1)
                .key_condition_expression(condition)
                // Expired ones are left out; one whose TTL is no number is read, and fails.
                .filter_expression("NOT attribute_type(#exp, :number) OR #exp > :now")
                .expression_attribute_names("#pk", attr::GSI1_PK)
                .expression_attribute_names("#sk", attr::GSI1_SK)
                .expression_attribute_names("#exp", attr::TTL)
                .expression_attribute_values(":pk", s(client_key.as_str()))
                .expression_attribute_values(":prefix", s(PARKED_AT_PREFIX))
                .expression_attribute_values(":now", n(now))
                .expression_attribute_values(":number", s("N"))
                .scan_index_forward(false)
                .limit(page_size)
                .set_exclusive_start_key(start.take());
            if let Some(upper) = &upper {
                request = request.expression_attribute_values(":upper", s(upper));
            }
            let output = request
                .send()
                .await
                .map_err(|e| unavailable("DynamoDB Query (parked jobs)", &e))?;
            for item in output.items() {
                if jobs.len() >= wanted {
                    break;
                }
                let gsi1sk = req_s(item, attr::GSI1_SK, W)?;
                if upper.as_deref() == Some(gsi1sk.as_str()) {
                    continue;
                }
                jobs.extend(listed_job(item, client_key, &gsi1sk, now)?);
            }
            match output.last_evaluated_key {
                Some(next) if !next.is_empty() => start = Some(next),
                _ => break,
            }
        }
        Ok(parked_page(jobs, limit))
    }
}
