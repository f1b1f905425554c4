//! The open database, replaceable after a storage failure.
//!
//! redb refuses every operation after an I/O error until the database is closed and opened
//! again ("previous I/O error"). A disk that was full for a moment must not wedge the gateway
//! until someone restarts it, so after a failed commit the writer reopens the database; redb's
//! recovery then rolls back to the last durable commit, which is exactly what was acknowledged.
//!
//! Only the writer reopens: a reopen waits for readers to let go of the old file, which must
//! never block an async worker.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use redb::Database;

use super::StoreError;

pub type Opener = Box<dyn Fn() -> Result<Database, StoreError> + Send + Sync>;

pub struct DbHandle {
    current: RwLock<Option<Arc<Database>>>,
    opener: Opener,
    /// Successful reopens since start, for tests and diagnostics.
    reopens: AtomicU64,
    /// Whether the last reopen failed: the writer retries every few seconds while a disk
    /// stays broken, and one error line says so, not one per attempt.
    reopen_failing: AtomicBool,
    /// A deliberately wrong store for the simulation's self-test: commits skip the sync.
    #[cfg(feature = "test-support")]
    pub(super) skip_sync: std::sync::atomic::AtomicBool,
    /// Makes the writer thread panic outside any request, to show that it restarts.
    #[cfg(test)]
    pub(super) crash_writer: std::sync::atomic::AtomicBool,
}

impl DbHandle {
    pub fn open(opener: Opener) -> Result<(Self, Arc<Database>), StoreError> {
        let db = Arc::new(opener()?);
        let handle = Self {
            current: RwLock::new(Some(db.clone())),
            opener,
            reopens: AtomicU64::new(0),
            reopen_failing: AtomicBool::new(false),
            #[cfg(feature = "test-support")]
            skip_sync: std::sync::atomic::AtomicBool::new(false),
            #[cfg(test)]
            crash_writer: std::sync::atomic::AtomicBool::new(false),
        };
        Ok((handle, db))
    }

    /// The open database, or `None` while it is closed after a storage error. Callers hold
    /// the returned `Arc` only briefly (one transaction's start, one batch), so a reopen can
    /// close the old one.
    pub fn current(&self) -> Option<Arc<Database>> {
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The database, reopening it first if an earlier failure closed it. Blocks on the file:
    /// only for the writer.
    pub fn get_or_reopen(&self) -> Result<Arc<Database>, StoreError> {
        if let Some(db) = self.current() {
            return Ok(db);
        }
        self.try_reopen()?;
        self.current().ok_or(StoreError::Reopening)
    }

    /// Closes the database after a storage error; readers see [`StoreError::Reopening`]
    /// until [`DbHandle::try_reopen`] succeeds.
    pub fn close(&self) {
        // Dropping our reference closes the database once no batch or reader holds it.
        self.current
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .take();
    }

    /// One attempt at opening the database again (after [`DbHandle::close`]). Fails while
    /// readers still hold the old database's file; the writer tries again later.
    pub fn try_reopen(&self) -> Result<(), StoreError> {
        let mut current = self.current.write().unwrap_or_else(|e| e.into_inner());
        if current.is_some() {
            return Ok(());
        }
        match (self.opener)() {
            Ok(db) => {
                *current = Some(Arc::new(db));
                self.reopens.fetch_add(1, Ordering::Relaxed);
                self.reopen_failing.store(false, Ordering::Relaxed);
                tracing::warn!("store reopened after a storage error");
                Ok(())
            }
            // Our own old database, still held by a reader: not another process.
            Err(StoreError::Locked) => Err(StoreError::Reopening),
            Err(e) => {
                if self.reopen_failing.swap(true, Ordering::Relaxed) {
                    tracing::debug!(error = %e, "store could not be reopened yet");
                } else {
                    tracing::error!(error = %e, "store could not be reopened; retrying until it can");
                }
                Err(e)
            }
        }
    }

    pub fn reopens(&self) -> u64 {
        self.reopens.load(Ordering::Relaxed)
    }

    /// Runs `work` with the database to itself: no batch or reader start holds it, and none
    /// can begin until `work` returns (they wait on the lock). `None` if someone holds it now.
    /// A storage error closes the database and opens it again at once (nothing else holds
    /// the file now); if that fails too, the writer keeps trying.
    pub fn exclusive<T>(
        &self,
        work: impl FnOnce(&mut Database) -> Result<T, StoreError>,
    ) -> Option<Result<T, StoreError>> {
        let mut current = self.current.write().unwrap_or_else(|e| e.into_inner());
        let shared = current.take()?;
        let mut db = match Arc::try_unwrap(shared) {
            Ok(db) => db,
            Err(shared) => {
                *current = Some(shared);
                return None;
            }
        };
        let result = work(&mut db);
        match &result {
            Err(StoreError::Full(_) | StoreError::Io(_) | StoreError::Corrupt(_)) => {
                drop(db);
                match (self.opener)() {
                    Ok(db) => {
                        *current = Some(Arc::new(db));
                        self.reopens.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(e) => {
                        self.reopen_failing.store(true, Ordering::Relaxed);
                        tracing::error!(error = %e, "store could not be reopened; retrying until it can");
                    }
                }
            }
            _ => *current = Some(Arc::new(db)),
        }
        Some(result)
    }
}
