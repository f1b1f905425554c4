//! The open database, replaceable after a storage failure.
//!
//! redb refuses every operation after an I/O error until the database is closed and opened
//! again ("previous I/O error"). A disk that was full for a moment must not wedge the gateway
//! until someone restarts it, so after a failed commit the writer reopens the database; redb's
//! recovery then rolls back to the last durable commit, which is exactly what was acknowledged.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use redb::Database;

use super::StoreError;

pub type Opener = Box<dyn Fn() -> Result<Database, StoreError> + Send + Sync>;

pub struct DbHandle {
    current: RwLock<Option<Arc<Database>>>,
    opener: Opener,
    /// A deliberately wrong store for the simulation's self-test: commits skip the sync.
    #[cfg(feature = "test-support")]
    pub(super) skip_sync: std::sync::atomic::AtomicBool,
}

/// How long a reopen waits for readers to let go of the old database's file lock.
const REOPEN_ATTEMPTS: u32 = 50;
const REOPEN_PAUSE: Duration = Duration::from_millis(10);

impl DbHandle {
    pub fn open(opener: Opener) -> Result<(Self, Arc<Database>), StoreError> {
        let db = Arc::new(opener()?);
        let handle = Self {
            current: RwLock::new(Some(db.clone())),
            opener,
            #[cfg(feature = "test-support")]
            skip_sync: std::sync::atomic::AtomicBool::new(false),
        };
        Ok((handle, db))
    }

    /// The database, reopening it first if an earlier failure closed it. Callers hold the
    /// returned `Arc` only briefly (one transaction's start, one batch), so a reopen can
    /// close the old one.
    pub fn get(&self) -> Result<Arc<Database>, StoreError> {
        if let Some(db) = self
            .current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
        {
            return Ok(db.clone());
        }
        self.reopen()?;
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
            .ok_or(StoreError::Closed)
    }

    /// Closes the database and opens it again.
    pub fn reopen(&self) -> Result<(), StoreError> {
        let mut current = self.current.write().unwrap_or_else(|e| e.into_inner());
        // Dropping our reference closes the database once no batch or reader start holds it.
        current.take();
        let mut attempt = 0;
        loop {
            match (self.opener)() {
                Ok(db) => {
                    *current = Some(Arc::new(db));
                    tracing::warn!("store reopened after a storage error");
                    return Ok(());
                }
                Err(StoreError::Locked) if attempt < REOPEN_ATTEMPTS => {
                    attempt += 1;
                    std::thread::sleep(REOPEN_PAUSE);
                }
                Err(e) => {
                    tracing::error!(error = %e, "store could not be reopened; will retry on the next write");
                    return Err(e);
                }
            }
        }
    }

    /// Runs `work` with the database to itself: no batch or reader start holds it, and none
    /// can begin until `work` returns (they wait on the lock). `None` if someone holds it now.
    /// A storage error closes the database, so the next use reopens it.
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
            }
            _ => *current = Some(Arc::new(db)),
        }
        Some(result)
    }
}
