//! The queue file's database handle, opened again after redb gives up on it.
//!
//! After an I/O error during a commit (a full disk, a failing device) redb refuses every later
//! transaction of that `Database` ("previous I/O error"): the file itself is still as its last
//! commit left it, but only opening it again (which checks and repairs it) clears the state. The
//! applier does that when a commit fails, so that once the fault clears the queue goes on in the
//! same process: the jobs it holds are committed then, and the journal keeps them meanwhile.

use std::sync::{Arc, RwLock};

use redb::Database;

use crate::QueueError;

/// Opens the queue file (again).
pub(crate) type Opener = Box<dyn Fn() -> Result<Database, QueueError> + Send + Sync>;

/// The current handle of the queue file, and how to open it again.
pub(crate) struct QueueFile {
    current: RwLock<Option<Arc<Database>>>,
    open: Opener,
}

impl QueueFile {
    /// The file, opened already as `db`; `open` opens it again.
    pub(crate) fn new(db: Database, open: Opener) -> Self {
        Self {
            current: RwLock::new(Some(Arc::new(db))),
            open,
        }
    }

    /// The handle to use now; `Unavailable` while it is being opened again.
    pub(crate) fn get(&self) -> Result<Arc<Database>, QueueError> {
        self.current
            .read()
            .ok()
            .and_then(|current| current.clone())
            .ok_or_else(|| QueueError::Unavailable("the local queue file is being reopened".into()))
    }

    /// Opens the file again after a failed commit. Nothing is done while another thread still
    /// uses the old handle (it is tried again after the next failure); an open that fails (the
    /// fault is still there) leaves no handle, and the next call tries again.
    pub(crate) fn reopen(&self) -> Result<(), QueueError> {
        let mut current = self.current.write().map_err(|_| {
            QueueError::Unavailable("the local queue file's lock is poisoned".into())
        })?;
        if let Some(db) = current.take() {
            match Arc::try_unwrap(db) {
                // The only handle: closed here, so that the file may be opened again.
                Ok(db) => drop(db),
                Err(shared) => {
                    *current = Some(shared);
                    return Err(QueueError::Unavailable(
                        "the local queue file is in use; reopened later".into(),
                    ));
                }
            }
        }
        let db = (self.open)()?;
        tracing::warn!("local queue: the queue file was opened again after a failed commit");
        *current = Some(Arc::new(db));
        Ok(())
    }
}
