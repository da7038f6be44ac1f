//! The local queue's file, `queue.redb`: its tables and how their keys and values are encoded.
//! The queue ([`crate::local`]) and its writer ([`crate::writer`]) both read and write them; neither
//! owns them.
//!
//! | table | key | value |
//! |---|---|---|
//! | [`JOBS`] | sequence number | a [`Stored`] job, JSON |
//! | [`DEAD`] | sequence number | a [`Stored`] job with its reason, JSON |
//! | [`MARKS_BY_ID`] | [`mark_id`] | expiry in unix seconds |
//! | [`MARKS_BY_EXPIRY`] | (expiry in unix seconds, [`mark_id`]) | nothing |
//! | [`META`] | a name ([`APPLIED_THROUGH`], [`MARKS_BY_ID_BUILT`]) | a number |

use redb::{ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::journal::MarkId;
use crate::{EditJobMessage, QueueError};

/// Jobs waiting or leased, by sequence number (queue order).
pub(crate) const JOBS: TableDefinition<'static, u64, &[u8]> = TableDefinition::new("jobs");

/// Dead-lettered jobs, by the sequence number they had.
pub(crate) const DEAD: TableDefinition<'static, u64, &[u8]> = TableDefinition::new("dead");

/// Idempotency marks by id, with their expiry in unix seconds: where the writer looks up a mark
/// the applier has committed (marks it has not committed yet are in the writer's memory).
pub(crate) const MARKS_BY_ID: TableDefinition<'static, MarkId, i64> =
    TableDefinition::new("marks_by_id");

/// The same marks as (expiry in unix seconds, [`MarkId`]), ordered by expiry so that expired ones
/// are swept from the front. A renewed mark has an entry per expiry until the older is swept;
/// [`MARKS_BY_ID`] holds the latest.
pub(crate) const MARKS_BY_EXPIRY: TableDefinition<'static, (i64, MarkId), ()> =
    TableDefinition::new("marks_by_expiry");

/// The queue's bookkeeping: [`APPLIED_THROUGH`].
pub(crate) const META: TableDefinition<'static, &str, u64> = TableDefinition::new("meta");

/// The highest job sequence number applied from the journal: every job up to it is in redb (or
/// was, and has finished).
pub(crate) const APPLIED_THROUGH: &str = "journal_applied_through";

/// Set once [`MARKS_BY_ID`] holds every mark of [`MARKS_BY_EXPIRY`]: queue files written before
/// the by-id table existed have it built once when they are opened.
pub(crate) const MARKS_BY_ID_BUILT: &str = "marks_by_id_built";

/// A job as the [`JOBS`] and [`DEAD`] tables keep it.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct Stored {
    pub(crate) message: EditJobMessage,
    /// How many times it was leased.
    pub(crate) receives: u32,
    /// Unix milliseconds from which it may be leased again.
    pub(crate) visible_at_ms: i64,
    /// Why it was dead-lettered (dead table only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) reason: Option<String>,
}

impl Stored {
    /// The value bytes.
    pub(crate) fn encode(&self) -> Result<Vec<u8>, QueueError> {
        serde_json::to_vec(self).map_err(|e| QueueError::Malformed(e.to_string()))
    }

    /// A stored job from its value bytes.
    pub(crate) fn decode(bytes: &[u8]) -> Result<Self, QueueError> {
        serde_json::from_slice(bytes).map_err(|e| QueueError::Malformed(e.to_string()))
    }
}

/// A mark's identity: the first 128 bits of SHA-256(clientKey NUL mark key). Fixed-size, so the
/// table and the index stay small; no client key is kept in the queue's files.
pub(crate) fn mark_id(client_key: &str, key: &str) -> MarkId {
    let digest = Sha256::new()
        .chain_update(client_key.as_bytes())
        .chain_update([0])
        .chain_update(key.as_bytes())
        .finalize();
    let mut id = [0; 16];
    id.copy_from_slice(digest.get(..16).unwrap_or(&[0; 16]));
    id
}

/// The [`APPLIED_THROUGH`] number in `meta` (0 before the first apply).
pub(crate) fn applied_through(
    meta: &impl ReadableTable<&'static str, u64>,
) -> Result<u64, QueueError> {
    Ok(meta
        .get(APPLIED_THROUGH)
        .map_err(unavailable)?
        .map_or(0, |v| v.value()))
}

/// What a failed operation on the queue's files is to callers.
pub(crate) fn unavailable(err: impl std::fmt::Display) -> QueueError {
    QueueError::Unavailable(format!("local queue: {err}"))
}
