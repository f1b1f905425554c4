//! Disk space under the store: a reserve that keeps deletions and redb's recovery possible
//! on a full file system, and compaction that gives freed store pages back to it.
//!
//! redb writes copy-on-write: even a commit that only deletes needs fresh pages, and
//! reopening after a failed commit (or after a crash) runs a recovery that writes too. On a
//! file system with no byte left, both fail, so pick-up could not free anything and the
//! gateway could not even start. The reserve is a preallocated file in the data directory,
//! given back the moment the store meets `ENOSPC` (so the failed work can run again in its
//! space) and taken again once the file system has room.
//!
//! Which mail may still be accepted is the service's rule (`service::disk`); this module is
//! the mechanism.

use std::fmt;
use std::fs::OpenOptions;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use redb::Database;

use super::StoreError;

/// File name of the reserve inside the data directory.
pub const RESERVE_FILE: &str = "disk-reserve";

/// The file system the store lives on, as far as space goes. Production uses
/// [`DataDirVolume`]; the simulation models one; unit tests inject free space.
pub trait Volume: Send + Sync + 'static {
    /// Bytes an unprivileged writer may still allocate.
    fn available(&self) -> std::io::Result<u64>;
    /// Bytes the reserve holds now.
    fn reserve_len(&self) -> std::io::Result<u64>;
    /// Makes the reserve hold exactly `len` bytes, allocated (not a sparse file), so that
    /// giving it back later really frees that much.
    fn set_reserve_len(&self, len: u64) -> std::io::Result<()>;
    /// The file system's size in bytes, for display; `None` where the volume cannot tell.
    fn total(&self) -> std::io::Result<Option<u64>> {
        Ok(None)
    }
}

/// The data directory's file system (statvfs) with the reserve as a file in it.
#[derive(Debug)]
pub struct DataDirVolume {
    dir: PathBuf,
    reserve: PathBuf,
}

impl DataDirVolume {
    pub fn new(data_dir: &Path) -> Self {
        Self {
            dir: data_dir.to_owned(),
            reserve: data_dir.join(RESERVE_FILE),
        }
    }
}

impl Volume for DataDirVolume {
    fn available(&self) -> std::io::Result<u64> {
        let stat = rustix::fs::statvfs(&self.dir)?;
        Ok(stat.f_bavail.saturating_mul(stat.f_frsize))
    }

    fn total(&self) -> std::io::Result<Option<u64>> {
        let stat = rustix::fs::statvfs(&self.dir)?;
        Ok(Some(stat.f_blocks.saturating_mul(stat.f_frsize)))
    }

    fn reserve_len(&self) -> std::io::Result<u64> {
        match std::fs::metadata(&self.reserve) {
            // Blocks actually allocated, so a sparse or half-allocated file counts as what
            // it really holds.
            Ok(meta) => Ok(std::os::unix::fs::MetadataExt::blocks(&meta).saturating_mul(512)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(0),
            Err(e) => Err(e),
        }
    }

    fn set_reserve_len(&self, len: u64) -> std::io::Result<()> {
        if len == 0 {
            // Truncating needs no space, where creating or unlinking might need a journal
            // block on some file systems.
            return match OpenOptions::new().write(true).open(&self.reserve) {
                Ok(file) => file.set_len(0),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
                Err(e) => Err(e),
            };
        }
        let file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .open(&self.reserve)?;
        let result = match rustix::fs::fallocate(&file, rustix::fs::FallocateFlags::empty(), 0, len)
        {
            Ok(()) => Ok(()),
            // File systems without fallocate: write the bytes.
            Err(rustix::io::Errno::OPNOTSUPP) => write_filler(&file, len),
            Err(e) => Err(e.into()),
        };
        if let Err(e) = result {
            // A half-allocated reserve would hold space nobody counts on; give it back.
            let _ = file.set_len(0);
            return Err(e);
        }
        file.set_len(len)?;
        file.sync_all()
    }
}

/// Random bytes rather than zeros: a compressing file system would store zeros in nothing.
fn write_filler(file: &std::fs::File, len: u64) -> std::io::Result<()> {
    use std::io::Write;
    let mut block = vec![0u8; 1024 * 1024];
    getrandom::fill(&mut block).map_err(|e| std::io::Error::other(e.to_string()))?;
    let mut writer = std::io::BufWriter::new(file);
    let mut left = len;
    while left > 0 {
        let n = left.min(block.len() as u64) as usize;
        writer.write_all(&block[..n])?;
        left -= n as u64;
    }
    writer.flush()
}

/// What the volume looks like now, with the reserve accounted for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SpaceStatus {
    /// Free bytes on the file system.
    pub available: u64,
    /// Bytes the reserve should hold but does not (it was given back).
    pub reserve_missing: u64,
}

impl SpaceStatus {
    /// Free bytes that are not the reserve's: what new mail may use.
    pub fn room(&self) -> u64 {
        self.available.saturating_sub(self.reserve_missing)
    }
}

/// The reserve on a volume.
pub struct Space {
    volume: Arc<dyn Volume>,
    reserve: u64,
    /// Serialises release and restore, which read the length and then change it.
    lock: Mutex<()>,
}

impl fmt::Debug for Space {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Space")
            .field("reserve", &self.reserve)
            .finish_non_exhaustive()
    }
}

impl Space {
    /// A reserve of `reserve` bytes on `volume` (0: no reserve).
    pub fn new(volume: Arc<dyn Volume>, reserve: u64) -> Self {
        Self {
            volume,
            reserve,
            lock: Mutex::new(()),
        }
    }

    /// The configured size of the reserve.
    pub fn reserve_size(&self) -> u64 {
        self.reserve
    }

    /// The file system's size, when the volume can tell.
    pub fn total(&self) -> std::io::Result<Option<u64>> {
        self.volume.total()
    }

    pub fn status(&self) -> std::io::Result<SpaceStatus> {
        let held = self.volume.reserve_len()?;
        Ok(SpaceStatus {
            available: self.volume.available()?,
            reserve_missing: self.reserve.saturating_sub(held),
        })
    }

    /// Gives the reserve back to the file system; true if it held anything.
    pub fn release(&self) -> bool {
        let _guard = self.lock.lock().unwrap_or_else(|e| e.into_inner());
        match self.volume.reserve_len() {
            Ok(0) => false,
            Ok(held) => match self.volume.set_reserve_len(0) {
                Ok(()) => {
                    tracing::warn!(
                        bytes = held,
                        "disk full: released the space reserve so deletions and recovery can commit"
                    );
                    true
                }
                Err(e) => {
                    tracing::error!(error = %e, "could not release the space reserve");
                    false
                }
            },
            Err(e) => {
                tracing::error!(error = %e, "could not read the space reserve");
                false
            }
        }
    }

    /// Takes the reserve again if the file system can give it and still keep `margin`
    /// bytes free; true if the reserve is complete afterwards.
    pub fn restore(&self, margin: u64) -> bool {
        let _guard = self.lock.lock().unwrap_or_else(|e| e.into_inner());
        let status = match (self.volume.reserve_len(), self.volume.available()) {
            (Ok(held), Ok(available)) => SpaceStatus {
                available,
                reserve_missing: self.reserve.saturating_sub(held),
            },
            (Err(e), _) | (_, Err(e)) => {
                tracing::error!(error = %e, "cannot check the space reserve");
                return false;
            }
        };
        if status.reserve_missing == 0 {
            return true;
        }
        if status.room() < margin {
            return false;
        }
        match self.volume.set_reserve_len(self.reserve) {
            Ok(()) => {
                tracing::info!(bytes = self.reserve, "space reserve in place");
                true
            }
            Err(e) => {
                tracing::warn!(error = %e, "could not take the space reserve");
                false
            }
        }
    }
}

/// Runs `open` (redb's open with its recovery, or the first commit); if it fails for want
/// of space, gives back the reserve and tries once more in its room.
pub(super) fn with_reserve<T>(
    space: Option<&Space>,
    mut open: impl FnMut() -> Result<T, StoreError>,
) -> Result<T, StoreError> {
    match open() {
        Err(StoreError::Full(why)) => match space {
            Some(space) if space.release() => open(),
            _ => Err(StoreError::Full(why)),
        },
        other => other,
    }
}

/// Compacts the database: live pages move down into freed ones and the file is cut to the
/// end of the last live page, giving the freed space back to the file system. `Ok(false)`
/// if it could not run now because a read is in progress.
pub(super) fn compact(db: &mut Database) -> Result<bool, StoreError> {
    match db.compact() {
        Ok(_) => Ok(true),
        Err(
            redb::CompactionError::TransactionInProgress
            | redb::CompactionError::EphemeralSavepointExists,
        ) => Ok(false),
        Err(e) => Err(StoreError::from(redb::Error::from(e))),
    }
}

#[cfg(test)]
pub(crate) mod testing {
    use super::*;
    use std::sync::atomic::{AtomicU64, Ordering};

    /// A volume whose free space the test sets; the reserve comes out of it.
    #[derive(Debug, Default)]
    pub struct FakeVolume {
        pub free: AtomicU64,
        pub reserve: AtomicU64,
    }

    impl FakeVolume {
        pub fn with_free(free: u64) -> Arc<Self> {
            Arc::new(Self {
                free: AtomicU64::new(free),
                reserve: AtomicU64::new(0),
            })
        }
    }

    impl Volume for FakeVolume {
        fn available(&self) -> std::io::Result<u64> {
            Ok(self.free.load(Ordering::SeqCst))
        }

        fn reserve_len(&self) -> std::io::Result<u64> {
            Ok(self.reserve.load(Ordering::SeqCst))
        }

        fn set_reserve_len(&self, len: u64) -> std::io::Result<()> {
            let held = self.reserve.load(Ordering::SeqCst);
            let free = self.free.load(Ordering::SeqCst);
            if len > held && len - held > free {
                return Err(std::io::Error::from_raw_os_error(28));
            }
            self.free.store(free + held - len, Ordering::SeqCst);
            self.reserve.store(len, Ordering::SeqCst);
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::testing::FakeVolume;
    use super::*;

    #[test]
    fn the_reserve_is_released_and_restored_with_its_margin() {
        let volume = FakeVolume::with_free(100);
        let space = Space::new(volume.clone(), 30);
        assert_eq!(space.status().unwrap().reserve_missing, 30);
        assert!(!space.restore(80), "30 + 80 does not fit in 100");
        assert!(space.restore(50));
        assert_eq!(
            space.status().unwrap(),
            SpaceStatus {
                available: 70,
                reserve_missing: 0
            }
        );
        assert!(space.release());
        assert!(!space.release(), "nothing left to release");
        let status = space.status().unwrap();
        assert_eq!((status.available, status.room()), (100, 70));
    }

    #[test]
    fn an_open_that_fails_for_space_runs_again_in_the_reserve() {
        let volume = FakeVolume::with_free(100);
        let space = Space::new(volume.clone(), 30);
        assert!(space.restore(0));
        let mut attempts = 0;
        let result = with_reserve(Some(&space), || {
            attempts += 1;
            if volume.reserve_len().unwrap() > 0 {
                Err(StoreError::Full("no space".into()))
            } else {
                Ok(())
            }
        });
        assert_eq!((result, attempts), (Ok(()), 2));
        // Without a reserve to give back the failure stands.
        let result = with_reserve(Some(&space), || Err::<(), _>(StoreError::Full("x".into())));
        assert!(matches!(result, Err(StoreError::Full(_))));
    }

    #[test]
    fn the_reserve_file_holds_real_blocks_and_gives_them_back() {
        let dir = tempfile::tempdir().unwrap();
        let volume = DataDirVolume::new(dir.path());
        assert_eq!(volume.reserve_len().unwrap(), 0);
        volume.set_reserve_len(4 * 1024 * 1024).unwrap();
        assert!(volume.reserve_len().unwrap() >= 4 * 1024 * 1024);
        assert!(volume.available().unwrap() > 0);
        volume.set_reserve_len(0).unwrap();
        assert_eq!(volume.reserve_len().unwrap(), 0);
    }
}
