//! The local queue's file failing under it (a full disk, an I/O error), injected behind redb's
//! storage port: jobs already answered are never lost (the journal holds them), and the queue
//! takes them up once the fault clears, in the same process or after a restart.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use redb::StorageBackend;
use redb::backends::FileBackend;
use test_support::queue::edit_job;
use understudy_queue::{EditQueue, LocalQueue};

/// The queue file, whose writes and syncs fail while `failing` is set.
#[derive(Debug)]
struct Faulty {
    file: FileBackend,
    failing: Arc<AtomicBool>,
}

impl Faulty {
    fn check(&self) -> std::io::Result<()> {
        if self.failing.load(Ordering::SeqCst) {
            return Err(std::io::Error::other("injected: no space left on device"));
        }
        Ok(())
    }
}

impl StorageBackend for Faulty {
    fn len(&self) -> std::io::Result<u64> {
        self.file.len()
    }
    fn read(&self, offset: u64, len: usize) -> std::io::Result<Vec<u8>> {
        self.file.read(offset, len)
    }
    fn set_len(&self, len: u64) -> std::io::Result<()> {
        self.check()?;
        self.file.set_len(len)
    }
    fn sync_data(&self, eventual: bool) -> std::io::Result<()> {
        self.check()?;
        self.file.sync_data(eventual)
    }
    fn write(&self, offset: u64, data: &[u8]) -> std::io::Result<()> {
        self.check()?;
        self.file.write(offset, data)
    }
}

fn open(dir: &std::path::Path, failing: &Arc<AtomicBool>) -> LocalQueue {
    let (path, failing) = (dir.join("queue.redb"), failing.clone());
    LocalQueue::open_on_storage(dir, move || {
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)?;
        Ok(Faulty {
            file: FileBackend::new(file).map_err(std::io::Error::other)?,
            failing: failing.clone(),
        })
    })
    .unwrap()
}

/// Leases every visible job, completing each; their ids.
async fn drain(q: &LocalQueue) -> Vec<String> {
    let mut ids = Vec::new();
    while let Some(lease) = q.lease(i64::MAX / 4, 60_000).await.unwrap() {
        ids.push(lease.message.job_id.clone());
        q.complete(lease.seq).await.unwrap();
    }
    ids
}

#[tokio::test]
async fn jobs_answered_while_the_queue_file_fails_are_applied_once_it_recovers() {
    let dir = tempfile::tempdir().unwrap();
    let failing = Arc::new(AtomicBool::new(false));
    let q = open(dir.path(), &failing);
    q.enqueue(&edit_job("t1", "1", "before")).await.unwrap();
    q.flush().await.unwrap();

    // The queue file refuses every write: enqueues are still answered (the journal is another
    // file), but the applier cannot commit them.
    failing.store(true, Ordering::SeqCst);
    for n in 0..5 {
        q.enqueue(&edit_job(
            "t1",
            &format!("{}", 10 + n),
            &format!("during-{n}"),
        ))
        .await
        .unwrap();
    }
    assert!(q.flush().await.is_err(), "the applier reports the failure");
    tokio::time::sleep(Duration::from_millis(300)).await;

    // The fault clears: the applier's retry (every second) applies what it holds.
    failing.store(false, Ordering::SeqCst);
    let mut applied = false;
    for _ in 0..50 {
        if q.flush().await.is_ok() {
            applied = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(applied, "the queue did not recover in the same process");
    let ids: BTreeSet<String> = drain(&q).await.into_iter().collect();
    let want: BTreeSet<String> = std::iter::once("before".to_owned())
        .chain((0..5).map(|n| format!("during-{n}")))
        .collect();
    assert_eq!(ids, want, "every answered job, once");
}

#[tokio::test]
async fn jobs_answered_while_the_queue_file_fails_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let failing = Arc::new(AtomicBool::new(false));
    {
        let q = open(dir.path(), &failing);
        failing.store(true, Ordering::SeqCst);
        for n in 0..3 {
            q.enqueue(&edit_job(
                "t1",
                &format!("{}", 20 + n),
                &format!("kept-{n}"),
            ))
            .await
            .unwrap();
        }
        assert!(q.flush().await.is_err());
        // The process stops with the fault still there.
    }
    failing.store(false, Ordering::SeqCst);
    let q = open(dir.path(), &failing);
    let ids: BTreeSet<String> = drain(&q).await.into_iter().collect();
    assert_eq!(
        ids,
        (0..3).map(|n| format!("kept-{n}")).collect::<BTreeSet<_>>(),
        "applied from the journal at the next start, once"
    );
}
