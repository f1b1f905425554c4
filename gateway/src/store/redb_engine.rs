//! The group-commit writer's engine on redb: write transactions on the database the handle
//! holds, committed with redb's default durability (the fsync), and the handle's reopen
//! after a storage failure.

use std::sync::Arc;

use redb::{Database, WriteTransaction};

use super::durable::Synced;
use super::handle::DbHandle;
use super::writer::WriteEngine;
use super::StoreError;

pub(super) struct RedbEngine {
    handle: Arc<DbHandle>,
    /// The database a batch runs on, held from `prepare` to `release` so a reopen cannot
    /// close it under the batch.
    db: Option<Arc<Database>>,
}

impl RedbEngine {
    pub(super) fn new(handle: Arc<DbHandle>) -> Self {
        Self { handle, db: None }
    }

    /// Whether a test-support build was told to commit without syncing (the wrong variant
    /// the simulation must catch, `Store::skip_sync_for_tests`).
    fn skip_sync(&self) -> bool {
        #[cfg(feature = "test-support")]
        return self
            .handle
            .skip_sync
            .load(std::sync::atomic::Ordering::Relaxed);
        #[cfg(not(feature = "test-support"))]
        false
    }
}

impl WriteEngine for RedbEngine {
    type Txn<'a> = WriteTransaction;

    fn is_open(&self) -> bool {
        self.handle.current().is_some()
    }

    fn prepare(&mut self) -> Result<(), StoreError> {
        self.db = Some(self.handle.get_or_reopen()?);
        Ok(())
    }

    fn begin(&mut self) -> Result<WriteTransaction, StoreError> {
        let db = self.db.as_ref().ok_or(StoreError::Reopening)?;
        let mut txn = db.begin_write()?;
        if self.skip_sync() {
            txn.set_durability(redb::Durability::None)
                .map_err(|e| StoreError::Io(e.to_string()))?;
        }
        Ok(txn)
    }

    fn commit(txn: WriteTransaction) -> Result<Synced, StoreError> {
        Ok(Synced::commit(txn)?)
    }

    fn discard(txn: WriteTransaction) {
        let _ = txn.abort();
    }

    fn release(&mut self) {
        self.db = None;
    }

    fn close(&mut self) {
        self.db = None;
        self.handle.close();
    }

    fn try_reopen(&mut self) -> Result<(), StoreError> {
        self.handle.try_reopen()
    }

    #[cfg(test)]
    fn crash_requested(&self) -> bool {
        self.handle
            .crash_writer
            .swap(false, std::sync::atomic::Ordering::SeqCst)
    }
}
