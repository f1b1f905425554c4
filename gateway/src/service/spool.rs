//! Where sealed chunks of a message in progress wait for their commit.
//!
//! Chunks stay in memory up to a limit per message and one for all messages together (the
//! memory a chunk's buffer holds is what counts); beyond either they go to an unlinked
//! temporary file in the data directory's spool folder, and a later chunk of the same
//! message may be in memory again once others gave theirs back. Chunks in memory save the
//! store's writer reading them back: at 100 SMTP sessions of 1 MiB, keeping whole messages
//! (within the shared limit) rather than their first 256 KiB, the gateway took 6–9 % more
//! messages a second. The file holds ciphertext only, disappears by itself if the gateway
//! dies, and is never synced: the redb commit is the durability point.
//!
//! A spool file that served its message well is kept open for the next one
//! ([`IDLE_FILES`] at most, each cut to [`IDLE_FILE_BYTES`]): creating and deleting an inode
//! per message was a sixth of the gateway's CPU in the 1 MiB proxy bench (ext4's inode
//! allocator), and a reused file overwrites pages already in place.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// Idle spool files kept for reuse.
pub const IDLE_FILES: usize = 16;
/// An idle spool file is cut to this length, so idle files hold at most
/// `IDLE_FILES × IDLE_FILE_BYTES` (32 MiB) of disk.
pub const IDLE_FILE_BYTES: u64 = 2 * 1024 * 1024;

/// The bytes all spool files together may hold (`[limits] spool_max_mib`), shared by every
/// draft: without it the spool could grow to connections × max_message_size. Likewise the
/// bytes all drafts keep in memory (`[limits] spool_memory_total_mib`). It also keeps the
/// idle spool files.
#[derive(Debug)]
pub struct SpoolBudget {
    disk: Allowance,
    memory: Allowance,
    idle: Mutex<Vec<File>>,
}

impl SpoolBudget {
    pub fn new(disk_limit: u64, memory_limit: u64) -> Arc<Self> {
        Arc::new(Self {
            disk: Allowance::new(disk_limit),
            memory: Allowance::new(memory_limit),
            idle: Mutex::new(Vec::new()),
        })
    }

    /// Sealed bytes drafts hold in memory now.
    #[cfg(test)]
    fn memory_used(&self) -> u64 {
        self.memory.used()
    }

    /// Spool files open and waiting for a message.
    #[cfg(test)]
    fn idle_files(&self) -> usize {
        self.idle.lock().map(|idle| idle.len()).unwrap_or(0)
    }

    fn take_file(&self, dir: &Path) -> std::io::Result<File> {
        if let Some(file) = self.idle.lock().ok().and_then(|mut idle| idle.pop()) {
            return Ok(file);
        }
        std::fs::create_dir_all(dir)?;
        tempfile::tempfile_in(dir)
    }

    /// Keeps `file` (holding `len` bytes) for the next message when there is room for it.
    fn give_back(&self, file: File, len: u64) {
        let Ok(mut idle) = self.idle.lock() else {
            return;
        };
        if idle.len() >= IDLE_FILES {
            return;
        }
        if len > IDLE_FILE_BYTES && file.set_len(IDLE_FILE_BYTES).is_err() {
            return;
        }
        idle.push(file);
    }

    /// Bytes in spool files now.
    pub fn used(&self) -> u64 {
        self.disk.used()
    }

    /// Less room left than one sealed chunk: a new message could not spill anything.
    pub fn is_exhausted(&self) -> bool {
        let chunk = (crate::crypto::CHUNK_SIZE + crate::crypto::TAG_SIZE) as u64;
        self.disk.limit.saturating_sub(self.used()) < chunk
    }
}

/// Bytes taken from a shared limit and given back.
#[derive(Debug)]
struct Allowance {
    limit: u64,
    used: AtomicU64,
}

impl Allowance {
    fn new(limit: u64) -> Self {
        Self {
            limit,
            used: AtomicU64::new(0),
        }
    }

    fn used(&self) -> u64 {
        self.used.load(Ordering::Relaxed)
    }

    /// Adds `bytes` if the total stays within the limit.
    fn take(&self, bytes: u64) -> bool {
        self.used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                used.checked_add(bytes).filter(|total| *total <= self.limit)
            })
            .is_ok()
    }

    fn give(&self, bytes: u64) {
        let _ = self
            .used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                Some(used.saturating_sub(bytes))
            });
    }
}

/// Read as a full disk by the error mappings (SMTP `452 4.3.1`).
pub fn spool_full() -> std::io::Error {
    std::io::Error::new(
        std::io::ErrorKind::StorageFull,
        "the spool limit ([limits] spool_max_mib) is reached",
    )
}

enum Location {
    Memory(Vec<u8>),
    File { offset: u64, len: u32 },
}

pub struct Spool {
    chunks: Vec<Location>,
    memory_bytes: usize,
    memory_limit: usize,
    dir: PathBuf,
    file: Option<File>,
    file_len: u64,
    /// Every read and write of the file succeeded, so the next message may use it.
    file_sound: AtomicBool,
    budget: Arc<SpoolBudget>,
}

impl Spool {
    pub fn new(dir: &Path, memory_limit: usize, budget: Arc<SpoolBudget>) -> Self {
        Self {
            chunks: Vec::new(),
            memory_bytes: 0,
            memory_limit,
            dir: dir.to_owned(),
            file: None,
            file_len: 0,
            file_sound: AtomicBool::new(true),
            budget,
        }
    }

    pub fn push(&mut self, chunk: Vec<u8>) -> std::io::Result<()> {
        // What the buffer holds, not its length: a message's short last chunk keeps a whole
        // chunk's allocation.
        let held = chunk.capacity();
        if self.memory_bytes + held <= self.memory_limit && self.budget.memory.take(held as u64) {
            // Counted from here on, so Drop gives back exactly what was taken.
            self.memory_bytes += held;
            self.chunks.push(Location::Memory(chunk));
            return Ok(());
        }
        let len = u32::try_from(chunk.len()).map_err(std::io::Error::other)?;
        if !self.budget.disk.take(u64::from(len)) {
            return Err(spool_full());
        }
        // Counted from here on, so Drop releases exactly what was reserved.
        self.file_len += u64::from(len);
        let offset = self.file_len - u64::from(len);
        let file = match &mut self.file {
            Some(file) => file,
            None => self.file.insert(self.budget.take_file(&self.dir)?),
        };
        // At its offset: a reused file may be longer than this message.
        if let Err(e) = file.write_all_at(&chunk, offset) {
            self.file_sound.store(false, Ordering::Relaxed);
            return Err(e);
        }
        self.chunks.push(Location::File { offset, len });
        Ok(())
    }

    pub fn len(&self) -> usize {
        self.chunks.len()
    }

    /// Calls `f` with each chunk in order, reading spilled ones back one at a time. Takes
    /// `&self` (reads position explicitly) so a commit that runs again replays the same bytes.
    pub fn for_each<E>(
        &self,
        mut f: impl FnMut(u32, &[u8]) -> Result<(), E>,
    ) -> Result<(), Replay<E>> {
        let mut buffer = Vec::new();
        for (index, location) in self.chunks.iter().enumerate() {
            let index = index as u32;
            match location {
                Location::Memory(bytes) => f(index, bytes).map_err(Replay::Failed)?,
                Location::File { offset, len } => {
                    self.read_at(*offset, *len, &mut buffer)
                        .map_err(Replay::Unreadable)?;
                    f(index, &buffer).map_err(Replay::Failed)?;
                }
            }
        }
        Ok(())
    }

    fn read_at(&self, offset: u64, len: u32, buffer: &mut Vec<u8>) -> std::io::Result<()> {
        let file = self
            .file
            .as_ref()
            .ok_or_else(|| std::io::Error::other("spool file missing"))?;
        buffer.resize(len as usize, 0);
        let read = file.read_exact_at(buffer, offset);
        if read.is_err() {
            self.file_sound.store(false, Ordering::Relaxed);
        }
        read
    }

    /// Swaps the spool file for one that cannot be read, as a failing disk would, for tests
    /// of what a spool that cannot be read back does.
    #[cfg(test)]
    pub fn break_for_tests(&mut self) {
        let path = self.dir.join("unreadable");
        let file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)
            .unwrap();
        std::fs::remove_file(&path).unwrap();
        self.file = Some(file);
        self.file_sound.store(false, Ordering::Relaxed);
    }
}

/// Why [`Spool::for_each`] stopped.
#[derive(Debug)]
pub enum Replay<E> {
    /// A spilled chunk could not be read back.
    Unreadable(std::io::Error),
    /// The callback failed.
    Failed(E),
}

impl Drop for Spool {
    fn drop(&mut self) {
        self.budget.memory.give(self.memory_bytes as u64);
        self.budget.disk.give(self.file_len);
        if let Some(file) = self.file.take() {
            if self.file_sound.load(Ordering::Relaxed) {
                self.budget.give_back(file, self.file_len);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every chunk of `spool` with its index, as a commit reads them.
    fn replayed(spool: &Spool) -> Vec<(u32, Vec<u8>)> {
        let mut seen = Vec::new();
        spool
            .for_each(|i, bytes| {
                seen.push((i, bytes.to_vec()));
                Ok::<_, ()>(())
            })
            .unwrap();
        seen
    }

    #[test]
    fn chunks_come_back_in_order_from_memory_and_file() {
        let dir = tempfile::tempdir().unwrap();
        let mut spool = Spool::new(dir.path(), 10, SpoolBudget::new(u64::MAX, u64::MAX));
        let chunks: Vec<Vec<u8>> = (0..5u8).map(|i| vec![i; 4 + i as usize]).collect();
        for c in &chunks {
            spool.push(c.clone()).unwrap();
        }
        assert!(
            spool.file.is_some(),
            "beyond the limit chunks spill to the file"
        );
        let seen = replayed(&spool);
        let expected: Vec<(u32, Vec<u8>)> = chunks
            .into_iter()
            .enumerate()
            .map(|(i, c)| (i as u32, c))
            .collect();
        assert_eq!(seen, expected);
        // The spool file is unlinked: nothing is left in the folder.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    #[test]
    fn memory_is_shared_by_every_draft_and_given_back() {
        let dir = tempfile::tempdir().unwrap();
        let budget = SpoolBudget::new(u64::MAX, 100);
        let mut first = Spool::new(dir.path(), 1000, budget.clone());
        let mut second = Spool::new(dir.path(), 1000, budget.clone());
        first.push(vec![1; 60]).unwrap();
        // Within its own limit but beyond what all drafts may hold: to the file.
        second.push(vec![2; 60]).unwrap();
        second.push(vec![3; 40]).unwrap();
        assert_eq!(budget.memory_used(), 100);
        assert!(first.file.is_none());
        assert_eq!(
            second.file_len, 60,
            "only the chunk that did not fit spilled"
        );
        let seen = replayed(&second);
        assert_eq!(seen, vec![(0, vec![2; 60]), (1, vec![3; 40])]);
        drop(first);
        assert_eq!(budget.memory_used(), 40);
        drop(second);
        assert_eq!(budget.memory_used(), 0);
        assert_eq!(budget.used(), 0);
    }

    #[test]
    fn a_short_chunk_counts_its_whole_buffer() {
        let dir = tempfile::tempdir().unwrap();
        let budget = SpoolBudget::new(u64::MAX, 150);
        let mut spool = Spool::new(dir.path(), 1000, budget.clone());
        let mut short = Vec::with_capacity(100);
        short.extend_from_slice(&[4; 10]);
        spool.push(short).unwrap();
        assert_eq!(budget.memory_used(), 100);
        let mut another = Vec::with_capacity(100);
        another.extend_from_slice(&[5; 10]);
        spool.push(another).unwrap();
        assert_eq!(budget.memory_used(), 100, "the second did not fit: spilled");
        assert_eq!(replayed(&spool), vec![(0, vec![4; 10]), (1, vec![5; 10])]);
        drop(spool);
        assert_eq!(budget.memory_used(), 0);
    }

    #[test]
    fn a_spool_that_cannot_be_read_back_says_so() {
        let dir = tempfile::tempdir().unwrap();
        let mut spool = Spool::new(dir.path(), 0, SpoolBudget::new(1 << 20, u64::MAX));
        spool.push(vec![7; 100]).unwrap();
        spool.break_for_tests();
        assert!(matches!(
            spool.for_each(|_, _| Ok::<_, ()>(())),
            Err(Replay::Unreadable(_))
        ));
    }

    #[test]
    fn spool_files_together_stay_within_the_budget() {
        let dir = tempfile::tempdir().unwrap();
        let budget = SpoolBudget::new(100, u64::MAX);
        let mut first = Spool::new(dir.path(), 0, budget.clone());
        let mut second = Spool::new(dir.path(), 0, budget.clone());
        first.push(vec![1; 60]).unwrap();
        let refused = second.push(vec![2; 60]).unwrap_err();
        assert_eq!(refused.kind(), std::io::ErrorKind::StorageFull);
        assert_eq!(budget.used(), 60);
        // A chunk that still fits is taken.
        second.push(vec![3; 40]).unwrap();
        assert!(budget.is_exhausted());
        assert!(!SpoolBudget::new(1 << 20, u64::MAX).is_exhausted());
        drop(first);
        assert_eq!(budget.used(), 40);
        drop(second);
        assert_eq!(budget.used(), 0);
    }

    #[test]
    fn a_spool_file_serves_the_next_message_with_only_that_messages_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let budget = SpoolBudget::new(1 << 20, u64::MAX);
        let mut first = Spool::new(dir.path(), 0, budget.clone());
        for i in 0..4u8 {
            first.push(vec![i; 1000]).unwrap();
        }
        drop(first);
        assert_eq!(budget.idle_files(), 1);
        assert_eq!(budget.used(), 0, "an idle file holds no budget");

        let mut second = Spool::new(dir.path(), 0, budget.clone());
        second.push(vec![9; 10]).unwrap();
        second.push(vec![8; 20]).unwrap();
        assert_eq!(budget.idle_files(), 0, "the idle file was taken");
        let seen = replayed(&second);
        assert_eq!(seen, vec![(0, vec![9; 10]), (1, vec![8; 20])]);
        drop(second);
        assert_eq!(budget.idle_files(), 1);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    #[test]
    fn a_spool_file_that_failed_is_not_kept() {
        let dir = tempfile::tempdir().unwrap();
        let budget = SpoolBudget::new(1 << 20, u64::MAX);
        let mut spool = Spool::new(dir.path(), 0, budget.clone());
        spool.push(vec![7; 100]).unwrap();
        spool.break_for_tests();
        assert!(spool.for_each(|_, _| Ok::<_, ()>(())).is_err());
        drop(spool);
        assert_eq!(budget.idle_files(), 0);
    }

    #[test]
    fn idle_spool_files_are_few_and_short() {
        let dir = tempfile::tempdir().unwrap();
        let budget = SpoolBudget::new(u64::MAX, u64::MAX);
        let mut spools: Vec<Spool> = (0..IDLE_FILES + 3)
            .map(|_| Spool::new(dir.path(), 0, budget.clone()))
            .collect();
        for spool in &mut spools {
            spool.push(vec![1; 64]).unwrap();
        }
        // One of them far longer than an idle file may stay.
        let long = IDLE_FILE_BYTES as usize + 4096;
        spools[0].push(vec![2; long]).unwrap();
        drop(spools);
        assert_eq!(budget.idle_files(), IDLE_FILES);
        let idle = budget.idle.lock().unwrap();
        assert!(idle
            .iter()
            .all(|file| file.metadata().unwrap().len() <= IDLE_FILE_BYTES));
    }
}
