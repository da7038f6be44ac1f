//! The local queue's file, `queue.redb`: its tables and how their keys and values are encoded.
//! The queue ([`crate::local`]) and its writer ([`crate::writer`]) both read and write them; neither
//! owns them.
//!
//! | table | key | value |
//! |---|---|---|
//! | [`SEGMENTS`] | the first sequence number in it | accepted jobs with their marks, as the journal writes them, LZ4-compressed ([`segment_value`]) |
//! | [`JOBS`] | sequence number | a [`Stored`] job, JSON |
//! | [`DEAD`] | sequence number | a [`Stored`] job with its reason, JSON |
//! | [`MARKS_BY_ID`] | [`mark_id`] | expiry in unix seconds |
//! | [`MARKS_BY_EXPIRY`] | (expiry in unix seconds, [`mark_id`]) | nothing |
//! | [`META`] | a name ([`APPLIED_THROUGH`], [`MARKS_BY_ID_BUILT`]) | a number |
//!
//! Accepted jobs reach the file in two steps. The applier keeps each of its commits' jobs as one
//! segment: a single value, the journal's bytes compressed, which costs one write however many
//! jobs it holds.
//! The worker unpacks the oldest segment when it leases and has nothing else to lease
//! ([`unpack_oldest_segment`]): its jobs go to [`JOBS`] one by one, their marks to the two marks
//! tables. Inserting each job and each mark (random 16-byte keys) where the webhooks' answers
//! are made cost a B-tree page or more per event and held the answers back (tests/load/RESULTS.md,
//! issue 19); the worker does it at the pace it runs jobs. Sequence numbers run without gaps
//! across segments, in order, and every segment's numbers are above every unpacked job's.

use redb::{ReadableTable, TableDefinition, WriteTransaction};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::journal::{Encoded, MarkId, Record, decode_all};
use crate::{EditJobMessage, QueueError};

/// Accepted jobs not unpacked yet, by the first sequence number of each segment: the records of
/// one applier commit, encoded as the journal encodes them ([`crate::journal::Encoded`]) and
/// compressed ([`segment_value`]).
pub(crate) const SEGMENTS: TableDefinition<'static, u64, &[u8]> = TableDefinition::new("segments");

/// Jobs waiting or leased, by sequence number (queue order), once unpacked from their segment.
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

/// Most bytes a segment's records may take uncompressed: what [`segment_records`] agrees to
/// allocate. A segment holds at most what the journal held (8 MiB by default; the applier is
/// never a whole journal behind the writer), so a larger size is damage.
const SEGMENT_MAX_BYTES: usize = 256 * 1024 * 1024;

/// A segment's value: `records`' bytes, LZ4-compressed (block format), after their length (u32
/// little-endian). Job JSON repeats itself: at 55 000 events a second a 50-ms segment went from
/// 780 KB to 110 KB, and with it the write the journal's `fdatasync` may have to wait behind
/// (tests/load/RESULTS.md, issue 19).
pub(crate) fn segment_value(records: &Encoded) -> Vec<u8> {
    lz4_flex::block::compress_prepend_size(&records.bytes)
}

/// The records of a segment's value ([`segment_value`]). Each record's checksum is checked
/// again after decompression.
pub(crate) fn segment_records(value: &[u8]) -> Result<Vec<Record>, QueueError> {
    let damaged = |why: &str| {
        QueueError::Malformed(format!(
            "a segment of the local queue file does not decode: {why}"
        ))
    };
    let (size, compressed) = value
        .split_first_chunk::<4>()
        .ok_or_else(|| damaged("too short"))?;
    let size = usize::try_from(u32::from_le_bytes(*size)).unwrap_or(usize::MAX);
    if size > SEGMENT_MAX_BYTES {
        return Err(damaged("its size is out of bounds"));
    }
    let bytes =
        lz4_flex::block::decompress(compressed, size).map_err(|e| damaged(&e.to_string()))?;
    decode_all(&bytes).ok_or_else(|| damaged("a record is not whole"))
}

/// Moves the oldest segment's jobs into [`JOBS`] and their marks into [`MARKS_BY_ID`] and
/// [`MARKS_BY_EXPIRY`], in `txn`. Returns the last sequence number it held (`None`: no segment):
/// once `txn` is committed, every mark of a job up to it is in the marks tables (or expired and
/// swept since).
pub(crate) fn unpack_oldest_segment(txn: &WriteTransaction) -> Result<Option<u64>, QueueError> {
    let Some(bytes) = txn
        .open_table(SEGMENTS)
        .map_err(unavailable)?
        .pop_first()
        .map_err(unavailable)?
        .map(|(_, bytes)| bytes.value().to_vec())
    else {
        return Ok(None);
    };
    let records = segment_records(&bytes)?;
    let mut jobs = txn.open_table(JOBS).map_err(unavailable)?;
    let mut by_id = txn.open_table(MARKS_BY_ID).map_err(unavailable)?;
    let mut by_expiry = txn.open_table(MARKS_BY_EXPIRY).map_err(unavailable)?;
    for record in &records {
        jobs.insert(record.seq, record.job.as_slice())
            .map_err(unavailable)?;
        // In sequence order: a mark taken again after it expired replaces the older by id.
        if let Some((id, expires_at)) = record.mark {
            by_id.insert(id, expires_at).map_err(unavailable)?;
            by_expiry
                .insert((expires_at, id), ())
                .map_err(unavailable)?;
        }
    }
    Ok(records.last().map(|r| r.seq))
}

/// The sequence number through which every accepted job is unpacked (its mark indexed): just
/// below the oldest segment, or `applied_through` when there is none.
pub(crate) fn unpacked_through(
    segments: &impl ReadableTable<u64, &'static [u8]>,
    applied_through: u64,
) -> Result<u64, QueueError> {
    Ok(segments
        .first()
        .map_err(unavailable)?
        .map_or(applied_through, |(first, _)| {
            first.value().saturating_sub(1)
        }))
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]

    use super::*;

    fn records() -> Vec<Record> {
        (1..=50)
            .map(|seq| Record {
                seq,
                mark: (seq % 2 == 0).then_some(([seq as u8; 16], 1_000)),
                job: format!(r#"{{"message": {{"job_id": "page_updated:{seq}:v1"}}}}"#)
                    .into_bytes(),
            })
            .collect()
    }

    /// A segment compresses its records and gives them back whole; a damaged one is refused with
    /// a reason, and a size out of bounds is refused before anything is allocated for it.
    #[test]
    fn a_segment_gives_back_its_records_or_says_it_is_damaged() {
        let encoded = Encoded::new(&records());
        let value = segment_value(&encoded);
        assert!(
            value.len() < encoded.bytes.len() / 2,
            "{} bytes",
            value.len()
        );
        assert_eq!(segment_records(&value).unwrap(), records());

        let refused = |value: &[u8]| segment_records(value).unwrap_err().to_string();
        assert!(refused(&value[..3]).contains("too short"));
        assert!(refused(&value[..value.len() - 5]).contains("does not decode"));
        let mut huge = value.clone();
        huge[..4].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(refused(&huge).contains("out of bounds"));
        // A wrong size that is in bounds fails the decompression or a record's checksum.
        let mut short = value.clone();
        short[..4].copy_from_slice(&100u32.to_le_bytes());
        assert!(refused(&short).contains("does not decode"));
    }
}
