//! The local queue's intake journal: accepted jobs made durable with one small write and one
//! `fdatasync` per batch, before they are applied to the queue's redb file.
//!
//! A redb commit that waits for the disk costs a few hundred microseconds (page writes, checksums,
//! the allocator's state, then the fsync). The webhook's answer only needs the job to be durable
//! somewhere, so the writer appends it here first, answers, and applies it to redb right after,
//! with redb's own fsync every [`crate::local`] checkpoint interval instead of every batch.
//!
//! The file has a fixed size, written once with zeros so that later writes change no metadata
//! (`fdatasync` then flushes data pages only). Records are written from offset 0 after every
//! checkpoint, so the file holds, in order: this cycle's records, then what is left of earlier
//! cycles. Recovery reads records while each is whole (its length and checksum hold) and its
//! sequence number is higher than the one before: earlier cycles' records have lower numbers, and a
//! record torn by a crash fails its checksum. Only records never acknowledged can be torn: the
//! writer answers after the `fdatasync`.
//!
//! Record: `len: u32 LE | checksum: 8 bytes | body (len bytes)`; body: `seq: u64 LE | flags: u8 |
//! [mark id: 16 bytes | mark expiry: i64 LE] if flags & 1 | job bytes`. The checksum is the first
//! 8 bytes of SHA-256 over `len` and body.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;

use sha2::{Digest, Sha256};

/// A mark's identity (see [`crate::tables::mark_id`]).
pub(crate) type MarkId = [u8; 16];

/// One accepted job, as journaled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Record {
    /// The job's position in the queue.
    pub seq: u64,
    /// Its idempotency mark and the mark's expiry, when it has one.
    pub mark: Option<(MarkId, i64)>,
    /// The stored job, as the jobs table keeps it.
    pub job: Vec<u8>,
}

const HEADER: usize = 4 + 8;
const FLAG_MARK: u8 = 1;

fn checksum(len: &[u8; 4], body: &[u8]) -> [u8; 8] {
    let digest = Sha256::new()
        .chain_update(len)
        .chain_update(body)
        .finalize();
    let mut out = [0; 8];
    out.copy_from_slice(digest.get(..8).unwrap_or(&[0; 8]));
    out
}

impl Record {
    fn encode_into(&self, out: &mut Vec<u8>) {
        let mut body = Vec::with_capacity(8 + 1 + 24 + self.job.len());
        body.extend_from_slice(&self.seq.to_le_bytes());
        match &self.mark {
            Some((id, expires_at)) => {
                body.push(FLAG_MARK);
                body.extend_from_slice(id);
                body.extend_from_slice(&expires_at.to_le_bytes());
            }
            None => body.push(0),
        }
        body.extend_from_slice(&self.job);
        let len = u32::try_from(body.len()).unwrap_or(u32::MAX).to_le_bytes();
        out.extend_from_slice(&len);
        out.extend_from_slice(&checksum(&len, &body));
        out.extend_from_slice(&body);
    }

    /// The record at the start of `bytes` and its encoded length, if one is whole there.
    fn decode(bytes: &[u8]) -> Option<(Self, usize)> {
        let len: [u8; 4] = bytes.get(..4)?.try_into().ok()?;
        let body_len = usize::try_from(u32::from_le_bytes(len)).ok()?;
        let stored: [u8; 8] = bytes.get(4..HEADER)?.try_into().ok()?;
        let body = bytes.get(HEADER..HEADER.checked_add(body_len)?)?;
        if body_len < 9 || checksum(&len, body) != stored {
            return None;
        }
        let seq = u64::from_le_bytes(body.get(..8)?.try_into().ok()?);
        let (mark, job) = match *body.get(8)? {
            FLAG_MARK => {
                let id: MarkId = body.get(9..25)?.try_into().ok()?;
                let expires_at = i64::from_le_bytes(body.get(25..33)?.try_into().ok()?);
                (Some((id, expires_at)), body.get(33..)?)
            }
            0 => (None, body.get(9..)?),
            _ => return None,
        };
        let record = Self {
            seq,
            mark,
            job: job.to_vec(),
        };
        Some((record, HEADER + body_len))
    }
}

/// The journal file, open for appending.
#[derive(Debug)]
pub(crate) struct Journal {
    file: File,
    capacity: u64,
    /// Where the next record goes.
    offset: u64,
}

impl Journal {
    /// Opens `path` (creating it, `capacity` bytes of zeros, made durable) and returns the records
    /// of the current cycle, in order. Appends go after them until [`Journal::restart`].
    pub(crate) fn open(path: &Path, capacity: u64) -> io::Result<(Self, Vec<Record>)> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)?;
        let size = file.metadata()?.len();
        if size < capacity {
            // Written, not just sized: writes into the file later change no metadata.
            let zeros = vec![0; 1024 * 1024];
            let mut at = size;
            while at < capacity {
                let n = usize::try_from((capacity - at).min(zeros.len() as u64)).unwrap_or(0);
                file.write_all_at(zeros.get(..n).unwrap_or_default(), at)?;
                at += n as u64;
            }
            file.sync_all()?;
        }
        let capacity = capacity.max(size);
        let mut bytes = vec![0; usize::try_from(capacity).unwrap_or(usize::MAX)];
        file.read_exact_at(&mut bytes, 0)?;
        let mut records: Vec<Record> = Vec::new();
        let mut offset = 0;
        while let Some((record, len)) = bytes.get(offset..).and_then(Record::decode) {
            if records.last().is_some_and(|last| record.seq <= last.seq) {
                break; // what is left of an earlier cycle
            }
            records.push(record);
            offset += len;
        }
        let journal = Self {
            file,
            capacity,
            offset: offset as u64,
        };
        Ok((journal, records))
    }

    /// Appends `records` and waits until they are on disk. `Ok(false)`: they do not fit in what is
    /// left of the file (nothing was written): [`Journal::restart`] after a checkpoint first.
    pub(crate) fn append(&mut self, records: &[Record]) -> io::Result<bool> {
        let mut bytes = Vec::new();
        for record in records {
            record.encode_into(&mut bytes);
        }
        if self.offset.saturating_add(bytes.len() as u64) > self.capacity {
            return Ok(false);
        }
        self.file.write_all_at(&bytes, self.offset)?;
        self.file.sync_data()?;
        self.offset += bytes.len() as u64;
        Ok(true)
    }

    /// The file's size in bytes.
    pub(crate) fn capacity(&self) -> u64 {
        self.capacity
    }

    /// Starts a new cycle: call only once every record so far is durable elsewhere.
    pub(crate) fn restart(&mut self) {
        self.offset = 0;
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]

    use super::*;

    fn record(seq: u64, marked: bool) -> Record {
        Record {
            seq,
            mark: marked.then_some(([seq as u8; 16], 1_000 + seq as i64)),
            job: format!("{{\"job\": {seq}}}").into_bytes(),
        }
    }

    #[test]
    fn records_come_back_in_order_after_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("j");
        let (mut journal, found) = Journal::open(&path, 64 * 1024).unwrap();
        assert!(found.is_empty());
        assert_eq!(journal.offset, 0);
        let written = vec![record(1, true), record(2, false), record(3, true)];
        assert!(journal.append(&written[..2]).unwrap());
        assert!(journal.append(&written[2..]).unwrap());
        drop(journal);
        let (journal, found) = Journal::open(&path, 64 * 1024).unwrap();
        assert_eq!(found, written);
        assert!(journal.offset > 0);
    }

    #[test]
    fn a_new_cycle_hides_what_is_left_of_the_last() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("j");
        let (mut journal, _) = Journal::open(&path, 64 * 1024).unwrap();
        journal
            .append(&[record(1, true), record(2, true), record(3, true)])
            .unwrap();
        journal.restart();
        journal.append(&[record(4, false)]).unwrap();
        drop(journal);
        let (_, found) = Journal::open(&path, 64 * 1024).unwrap();
        assert_eq!(found, vec![record(4, false)]);
    }

    #[test]
    fn a_torn_or_corrupt_record_ends_the_journal_there() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("j");
        let (mut journal, _) = Journal::open(&path, 64 * 1024).unwrap();
        journal
            .append(&[record(1, true), record(2, true), record(3, true)])
            .unwrap();
        drop(journal);
        // Flip one byte inside the second record's body.
        let mut first = Vec::new();
        record(1, true).encode_into(&mut first);
        let file = OpenOptions::new().write(true).open(&path).unwrap();
        file.write_all_at(b"X", (first.len() + HEADER + 3) as u64)
            .unwrap();
        let (journal, found) = Journal::open(&path, 64 * 1024).unwrap();
        assert_eq!(found, vec![record(1, true)]);
        // Appends go after the last whole record.
        assert_eq!(journal.offset, first.len() as u64);
    }

    #[test]
    fn a_batch_that_does_not_fit_is_not_written() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("j");
        let (mut journal, _) = Journal::open(&path, 100).unwrap();
        assert!(journal.append(&[record(1, true)]).unwrap());
        assert!(!journal.append(&[record(2, true)]).unwrap());
        journal.restart();
        assert!(journal.append(&[record(2, true)]).unwrap());
    }
}
