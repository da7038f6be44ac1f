//! The local queue's intake journal: accepted jobs made durable with one small write and one
//! `fdatasync` per batch, before they are applied to the queue's redb file.
//!
//! A redb commit that waits for the disk costs a few hundred microseconds (page writes, checksums,
//! the allocator's state, then the fsync). The webhook's answer only needs the job to be durable
//! somewhere, so the writer appends it here first, answers, and applies it to redb right after,
//! with redb's own fsync every [`crate::local`] checkpoint interval instead of every batch.
//!
//! The file grows to a fixed size in steps of [`GROWTH_STEP`] zeros, written ahead of the records,
//! so that most appends change no metadata (`fdatasync` then flushes data pages only) and a new
//! file costs nothing at start.
//!
//! The file is two halves used in turn. Records are appended to one half; when it is full, the
//! writer moves to the other, once every record in that one is applied (usually long since: the
//! applier is a few milliseconds behind). A single area would have to wait, each time it filled,
//! for the applier to apply everything in it, the records of the last few milliseconds included,
//! which stalled every answer for a commit's time several times a second under load. When
//! everything written is applied, writing starts over at the beginning of the first half
//! ([`Journal::restart`]). Each half holds, in order: its cycle's records, then what is left of its
//! earlier cycles. Recovery reads records while each is whole (its length and checksum hold) and its
//! sequence number is higher than the one before: earlier cycles' records have lower numbers, and a
//! record torn by a crash fails its checksum. Only records never acknowledged can be torn: the
//! writer answers after the `fdatasync`.
//!
//! Opening reads each half's records one after the other and stops at the first that is not whole
//! (or not numbered above the one before), so it reads what the last run left, not the whole
//! file; after a clean stop ([`Journal::clear`]) that is nothing.
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

/// How far ahead of the records the file is filled with zeros at a time.
pub(crate) const GROWTH_STEP: u64 = 1024 * 1024;

/// How much of the file opening reads at a time.
const READ_CHUNK: usize = 64 * 1024;

fn checksum(len: &[u8; 4], body: &[u8]) -> [u8; 8] {
    let digest = Sha256::new()
        .chain_update(len)
        .chain_update(body)
        .finalize();
    let mut out = [0; 8];
    out.copy_from_slice(digest.get(..8).unwrap_or(&[0; 8]));
    out
}

/// Records encoded one after the other: what an append writes, and what the queue file keeps as one
/// segment ([`crate::tables::SEGMENTS`]) until the worker unpacks it.
#[derive(Debug, Clone, Default)]
pub(crate) struct Encoded {
    pub(crate) bytes: Vec<u8>,
    /// The first record's sequence number (`None`: no records).
    pub(crate) first_seq: Option<u64>,
    /// The last record's.
    pub(crate) last_seq: Option<u64>,
}

impl Encoded {
    pub(crate) fn new(records: &[Record]) -> Self {
        let mut bytes = Vec::with_capacity(records.iter().map(|r| HEADER + 33 + r.job.len()).sum());
        for record in records {
            record.encode_into(&mut bytes);
        }
        Self {
            bytes,
            first_seq: records.first().map(|r| r.seq),
            last_seq: records.last().map(|r| r.seq),
        }
    }

    /// Appends `more` (records numbered after these).
    pub(crate) fn extend(&mut self, more: Self) {
        if more.last_seq.is_some() {
            self.bytes.extend_from_slice(&more.bytes);
            self.first_seq = self.first_seq.or(more.first_seq);
            self.last_seq = more.last_seq;
        }
    }
}

/// The records of `bytes`, encoded one after the other; `None` if any is not whole (its length or
/// checksum does not hold).
pub(crate) fn decode_all(mut bytes: &[u8]) -> Option<Vec<Record>> {
    let mut records = Vec::new();
    while !bytes.is_empty() {
        let (record, size) = Record::decode(bytes)?;
        records.push(record);
        bytes = bytes.get(size..)?;
    }
    Some(records)
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
    /// How much of the file exists (zeros past the records, up to `capacity`).
    len: u64,
    /// Where the next record goes.
    offset: u64,
    /// The half being written (0 or 1).
    half: usize,
    /// The last sequence number written in each half since it was last started.
    last_in: [Option<u64>; 2],
}

impl Journal {
    /// Opens `path` (creating it empty) and returns the records of the current cycle, in order.
    /// Appends go after them until [`Journal::restart`]. The file grows up to `capacity` bytes
    /// (or keeps the size it has, if larger).
    pub(crate) fn open(path: &Path, capacity: u64) -> io::Result<(Self, Vec<Record>)> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)?;
        let len = file.metadata()?.len();
        let capacity = capacity.max(len);
        let (mut records, offset) = read_cycle(&file, 0, len)?;
        let (second, _) = read_cycle(&file, capacity / 2, len)?;
        // (A file written before the halves may hold one cycle across the middle: read twice.)
        records.extend(second);
        records.sort_by_key(|record| record.seq);
        records.dedup_by_key(|record| record.seq);
        let journal = Self {
            file,
            capacity,
            len,
            offset,
            half: 0,
            last_in: [None, None],
        };
        Ok((journal, records))
    }

    /// Where half `half` begins and ends.
    fn bounds(&self, half: usize) -> (u64, u64) {
        let middle = self.capacity / 2;
        if half == 0 {
            (0, middle)
        } else {
            (middle, self.capacity)
        }
    }

    /// Appends `records` and waits until they are on disk. `Ok(false)`: they do not fit in what is
    /// left of the half being written (nothing was written): [`Journal::switch`] once the other
    /// half's records are applied ([`Journal::other_half_last`]), or [`Journal::restart`].
    pub(crate) fn append(&mut self, records: &Encoded) -> io::Result<bool> {
        let Some(last) = records.last_seq else {
            return Ok(true);
        };
        let bytes = &records.bytes;
        let end = self.offset.saturating_add(bytes.len() as u64);
        if end > self.bounds(self.half).1 {
            return Ok(false);
        }
        if end > self.len {
            self.grow(end)?;
        }
        self.file.write_all_at(bytes, self.offset)?;
        self.file.sync_data()?;
        self.offset = end;
        if let Some(slot) = self.last_in.get_mut(self.half) {
            *slot = Some(last);
        }
        Ok(true)
    }

    /// The last sequence number written in the half not being written, if any since it was last
    /// started: every record up to it must be applied before [`Journal::switch`].
    pub(crate) fn other_half_last(&self) -> Option<u64> {
        self.last_in.get(1 - self.half).copied().flatten()
    }

    /// Moves to the start of the other half. Call only once its records are durable elsewhere.
    pub(crate) fn switch(&mut self) {
        self.half = 1 - self.half;
        self.offset = self.bounds(self.half).0;
        if let Some(slot) = self.last_in.get_mut(self.half) {
            *slot = None;
        }
    }

    /// Writes zeros from the file's end to past `end` (a [`GROWTH_STEP`] ahead, within the
    /// capacity). The append's own `fdatasync` makes them and the new size durable.
    fn grow(&mut self, end: u64) -> io::Result<()> {
        let target = end.saturating_add(GROWTH_STEP).min(self.capacity).max(end);
        let zeros = vec![0; usize::try_from(GROWTH_STEP).unwrap_or(1024 * 1024)];
        while self.len < target {
            let n = (target - self.len).min(zeros.len() as u64);
            let chunk = zeros
                .get(..usize::try_from(n).unwrap_or(0))
                .unwrap_or_default();
            self.file.write_all_at(chunk, self.len)?;
            self.len += n;
        }
        Ok(())
    }

    /// The file's size in bytes, when full grown.
    pub(crate) fn capacity(&self) -> u64 {
        self.capacity
    }

    /// Starts over at the beginning of the first half: call only once every record so far is
    /// durable elsewhere.
    pub(crate) fn restart(&mut self) {
        self.half = 0;
        self.offset = 0;
        self.last_in = [None, None];
    }

    /// Empties the journal for the next open (which then reads nothing): each half's first record
    /// header is zeroed, durably. Call only once every record is durable elsewhere (a clean stop).
    pub(crate) fn clear(&mut self) -> io::Result<()> {
        for half in [0, 1] {
            let start = self.bounds(half).0;
            if self.len >= start.saturating_add(HEADER as u64) {
                self.file.write_all_at(&[0; HEADER], start)?;
            }
        }
        self.file.sync_data()?;
        self.restart();
        Ok(())
    }
}

/// The records of the cycle at `from` in `file` (`len` bytes), and where they end: records in
/// order while each is whole and numbered above the one before.
fn read_cycle(file: &File, from: u64, len: u64) -> io::Result<(Vec<Record>, u64)> {
    let mut records: Vec<Record> = Vec::new();
    // `buffer` holds the file from `start`; `at` is where the next record begins within it.
    let mut buffer = Vec::new();
    let (mut start, mut at) = (from, 0usize);
    loop {
        if let Some((record, size)) = buffer.get(at..).and_then(Record::decode) {
            if records.last().is_some_and(|last| record.seq <= last.seq) {
                break; // what is left of an earlier cycle
            }
            records.push(record);
            at += size;
            continue;
        }
        // Not whole in the buffer: read on, unless the file ends or no record could be this long.
        let wanted = buffer
            .get(at..at.saturating_add(4))
            .and_then(|l| l.try_into().ok())
            .map_or(HEADER, |l: [u8; 4]| {
                HEADER.saturating_add(usize::try_from(u32::from_le_bytes(l)).unwrap_or(usize::MAX))
            });
        let have = buffer.len() - at;
        let next = start + buffer.len() as u64;
        if have >= wanted || next >= len {
            break;
        }
        // Keep only the unread part, then read at least what the record needs.
        buffer.drain(..at);
        start += at as u64;
        at = 0;
        let more = (wanted - have).max(READ_CHUNK) as u64;
        let n = usize::try_from(more.min(len - next)).unwrap_or(0);
        let old = buffer.len();
        buffer.resize(old + n, 0);
        file.read_exact_at(buffer.get_mut(old..).unwrap_or_default(), next)?;
    }
    Ok((records, start + at as u64))
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
        assert!(journal.append(&Encoded::new(&written[..2])).unwrap());
        assert!(journal.append(&Encoded::new(&written[2..])).unwrap());
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
            .append(&Encoded::new(&[
                record(1, true),
                record(2, true),
                record(3, true),
            ]))
            .unwrap();
        journal.restart();
        journal.append(&Encoded::new(&[record(4, false)])).unwrap();
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
            .append(&Encoded::new(&[
                record(1, true),
                record(2, true),
                record(3, true),
            ]))
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

    /// Opening a new journal writes nothing; appends grow the file a step ahead of them, up to
    /// its capacity.
    #[test]
    fn a_new_journal_costs_nothing_to_open_and_grows_ahead_of_its_records() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("j");
        let capacity = 4 * GROWTH_STEP;
        let len = || std::fs::metadata(&path).unwrap().len();
        let big = |seq| Record {
            seq,
            mark: None,
            job: vec![b'x'; usize::try_from(GROWTH_STEP).unwrap() + 10],
        };
        let (mut journal, found) = Journal::open(&path, capacity).unwrap();
        assert!(found.is_empty());
        assert_eq!(len(), 0);
        journal.append(&Encoded::new(&[record(1, true)])).unwrap();
        assert!(len() > GROWTH_STEP && len() < 2 * GROWTH_STEP, "{}", len());
        // A record bigger than the step still fits; the file never passes its capacity.
        assert!(journal.append(&Encoded::new(&[big(2)])).unwrap());
        assert!(len() > 2 * GROWTH_STEP && len() < capacity, "{}", len());
        journal.switch();
        assert!(
            journal
                .append(&Encoded::new(&[record(3, false), big(4)]))
                .unwrap()
        );
        assert_eq!(len(), capacity);
        drop(journal);
        let (_, found) = Journal::open(&path, capacity).unwrap();
        assert_eq!(
            found,
            vec![record(1, true), big(2), record(3, false), big(4)]
        );
    }

    /// The halves in turn: a half that is full refuses a batch, the other takes it, and opening
    /// returns the records of both in order (the older half's too, which recovery filters).
    #[test]
    fn the_halves_are_written_in_turn_and_both_are_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("j");
        // Each record is 55 bytes: a half of 120 holds two.
        let (mut journal, _) = Journal::open(&path, 240).unwrap();
        assert!(
            journal
                .append(&Encoded::new(&[record(1, true), record(2, true)]))
                .unwrap()
        );
        assert!(!journal.append(&Encoded::new(&[record(3, true)])).unwrap());
        assert_eq!(journal.other_half_last(), None);
        journal.switch();
        assert!(
            journal
                .append(&Encoded::new(&[record(3, true), record(4, true)]))
                .unwrap()
        );
        assert!(!journal.append(&Encoded::new(&[record(5, true)])).unwrap());
        assert_eq!(journal.other_half_last(), Some(2));
        journal.switch();
        assert_eq!(journal.other_half_last(), Some(4));
        assert!(journal.append(&Encoded::new(&[record(5, true)])).unwrap());
        drop(journal);
        // The first half: 5, then what is left of 2 (lower: not read); the second: 3 and 4.
        let (_, found) = Journal::open(&path, 240).unwrap();
        let seqs: Vec<u64> = found.iter().map(|r| r.seq).collect();
        assert_eq!(seqs, [3, 4, 5]);
    }

    /// After a clean stop the next open reads nothing, whatever the file held.
    #[test]
    fn a_cleared_journal_opens_empty() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("j");
        let (mut journal, _) = Journal::open(&path, 64 * 1024).unwrap();
        journal
            .append(&Encoded::new(&[record(1, true), record(2, false)]))
            .unwrap();
        journal.clear().unwrap();
        drop(journal);
        let (mut journal, found) = Journal::open(&path, 64 * 1024).unwrap();
        assert!(found.is_empty());
        assert_eq!(journal.offset, 0);
        journal.append(&Encoded::new(&[record(3, false)])).unwrap();
        drop(journal);
        let (_, found) = Journal::open(&path, 64 * 1024).unwrap();
        assert_eq!(found, vec![record(3, false)]);
    }

    /// What a segment keeps decodes to the same records; a damaged one does not decode.
    #[test]
    fn encoded_records_decode_whole_or_not_at_all() {
        let records = vec![record(7, true), record(8, false), record(9, true)];
        let mut encoded = Encoded::new(&records[..1]);
        encoded.extend(Encoded::new(&records[1..]));
        encoded.extend(Encoded::default());
        assert_eq!((encoded.first_seq, encoded.last_seq), (Some(7), Some(9)));
        assert_eq!(decode_all(&encoded.bytes), Some(records));
        let mut damaged = encoded.bytes.clone();
        let last = damaged.len() - 1;
        damaged[last] ^= 1;
        assert_eq!(decode_all(&damaged), None);
        assert_eq!(decode_all(&encoded.bytes[..encoded.bytes.len() - 1]), None);
    }

    #[test]
    fn a_batch_that_does_not_fit_is_not_written() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("j");
        let (mut journal, _) = Journal::open(&path, 200).unwrap();
        assert!(journal.append(&Encoded::new(&[record(1, true)])).unwrap());
        assert!(!journal.append(&Encoded::new(&[record(2, true)])).unwrap());
        journal.restart();
        assert!(journal.append(&Encoded::new(&[record(2, true)])).unwrap());
    }
}
