//! A storage backend that can be told to fail, so tests (and the simulation) can show what a
//! full or failing disk does: a clear temporary error, never an acknowledgement, never a
//! damaged store.

use std::ops::Bound;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;

use redb::{BackendError, StorageBackend};

/// What the disk does to the next writes and syncs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Fault {
    Healthy = 0,
    /// Writes, growth and syncs fail with ENOSPC.
    Full = 1,
    /// Writes, growth and syncs fail with EIO.
    Broken = 2,
}

/// The switch a test holds to change the disk's behaviour while the store runs.
#[derive(Debug, Clone, Default)]
pub struct FaultSwitch(Arc<AtomicU8>);

impl FaultSwitch {
    pub fn set(&self, fault: Fault) {
        self.0.store(fault as u8, Ordering::SeqCst);
    }

    fn error(&self) -> Option<std::io::Error> {
        match self.0.load(Ordering::SeqCst) {
            1 => Some(std::io::Error::from_raw_os_error(28)), // ENOSPC
            2 => Some(std::io::Error::from_raw_os_error(5)),  // EIO
            _ => None,
        }
    }
}

/// Wraps another backend; reads always pass, writes fail while the switch says so.
#[derive(Debug)]
pub struct FaultyBackend<B> {
    inner: B,
    switch: FaultSwitch,
}

impl<B: StorageBackend> FaultyBackend<B> {
    /// A backend obeying `switch`; several backends (one per reopen) may share a switch.
    pub fn new(inner: B, switch: FaultSwitch) -> Self {
        Self { inner, switch }
    }

    fn check(&self) -> Result<(), std::io::Error> {
        match self.switch.error() {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
}

impl<B: StorageBackend> StorageBackend for FaultyBackend<B> {
    fn len(&self) -> Result<u64, std::io::Error> {
        self.inner.len()
    }

    fn read(&self, offset: u64, out: &mut [u8]) -> Result<(), std::io::Error> {
        self.inner.read(offset, out)
    }

    fn set_len(&self, len: u64) -> Result<(), std::io::Error> {
        self.check()?;
        self.inner.set_len(len)
    }

    fn sync_data(&self) -> Result<(), std::io::Error> {
        self.check()?;
        self.inner.sync_data()
    }

    fn write(&self, offset: u64, data: &[u8]) -> Result<(), std::io::Error> {
        self.check()?;
        self.inner.write(offset, data)
    }

    fn close(&self) -> Result<(), std::io::Error> {
        self.inner.close()
    }

    fn try_lock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<bool, BackendError> {
        self.inner.try_lock_range(start, end)
    }

    fn try_lock_shared_range(
        &self,
        start: Bound<u64>,
        end: Bound<u64>,
    ) -> Result<bool, BackendError> {
        self.inner.try_lock_shared_range(start, end)
    }

    fn lock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<(), BackendError> {
        self.inner.lock_range(start, end)
    }

    fn lock_shared_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<(), BackendError> {
        self.inner.lock_shared_range(start, end)
    }

    fn unlock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<(), BackendError> {
        self.inner.unlock_range(start, end)
    }

    fn query_lock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<bool, BackendError> {
        self.inner.query_lock_range(start, end)
    }
}
