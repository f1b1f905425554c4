//! The simulated disk under the gateway's redb store.
//!
//! It keeps two images: what reads see now, and what survives a power cut (the image as of
//! the last sync). Between syncs it remembers every write and length change; at a crash a
//! seeded choice decides which of them reached the platter, in any order, and the last one
//! taken may be torn at a 512-byte sector boundary. The disk outlives the gateway process, so
//! a restarted gateway reopens the same bytes.
//!
//! A crash also fences every backend the dead process opened: redb's `Drop` would otherwise
//! close the database cleanly (and sync) after the "power" is gone. Fenced backends fail every
//! call, so nothing the dead process does reaches the disk.

use std::ops::Bound;
use std::sync::{Arc, Mutex, MutexGuard};

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use redb::{BackendError, StorageBackend};

const SECTOR: usize = 512;

/// A deliberately wrong disk, to show that the simulator catches what it must.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DiskBug {
    /// `sync_data` returns at once without making anything durable: a write cache that lies.
    /// Every acknowledgement then rests on data a crash can take away.
    LyingSync,
}

#[derive(Debug, Clone)]
enum Op {
    Write { offset: u64, data: Vec<u8> },
    SetLen(u64),
}

#[derive(Debug)]
struct State {
    /// What reads see.
    current: Vec<u8>,
    /// What a power cut leaves (as of the last sync).
    durable: Vec<u8>,
    /// Changes since the last sync, in order.
    pending: Vec<Op>,
    /// Bumped at every crash; backends of an older generation are dead.
    generation: u64,
    next_backend: u64,
    /// The backend holding the whole-file lock, like the OS lock on the real file.
    lock_owner: Option<u64>,
    /// While full: what the file system holds in all, the store file and the gateway's
    /// space reserve together. Growth beyond it fails with ENOSPC, and so may a sync of more
    /// writes than there is room left (a file system that allocates blocks only when it
    /// writes back).
    capacity: Option<u64>,
    /// Bytes the gateway's space reserve holds (a file beside the store).
    reserve: u64,
    syncs: u64,
    /// The sync with this number cuts the power instead of completing.
    cut_at_sync: Option<u64>,
    /// What a planned cut did, until the driver (which then crashes the host) takes it.
    cut: Option<CrashReport>,
    /// False from a crash until the driver restarts the host: opens made by the dying
    /// process in between get dead handles.
    powered: bool,
    bug: Option<DiskBug>,
    rng: SmallRng,
}

/// What a crash did to the unsynced changes (for the trace).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CrashReport {
    pub pending: usize,
    pub kept: usize,
    pub torn: bool,
}

/// The disk; cheap to clone, all clones are the same disk.
#[derive(Debug, Clone)]
pub struct Disk {
    state: Arc<Mutex<State>>,
}

impl Disk {
    /// An empty disk whose crash choices follow `seed`.
    pub fn new(seed: u64, bug: Option<DiskBug>) -> Self {
        Self {
            state: Arc::new(Mutex::new(State {
                current: Vec::new(),
                durable: Vec::new(),
                pending: Vec::new(),
                generation: 0,
                next_backend: 0,
                lock_owner: None,
                capacity: None,
                reserve: 0,
                syncs: 0,
                cut_at_sync: None,
                cut: None,
                powered: true,
                bug,
                rng: SmallRng::seed_from_u64(seed),
            })),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock is already a failed run; keep the state readable.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A backend for one `Database` of the current process generation.
    pub fn backend(&self) -> DiskBackend {
        let mut state = self.lock();
        let id = state.next_backend;
        state.next_backend += 1;
        DiskBackend {
            disk: self.clone(),
            id,
            generation: if state.powered {
                state.generation
            } else {
                u64::MAX
            },
        }
    }

    /// Power back on before the host restarts.
    pub fn power_on(&self) {
        self.lock().powered = true;
    }

    /// Power loss: a seeded subset of the unsynced changes survives, in any order, the last
    /// one possibly torn; every open backend dies.
    pub fn crash(&self) -> CrashReport {
        let mut state = self.lock();
        crash_locked(&mut state)
    }

    /// A full disk from now on: something else takes all but `slack` of the free space.
    pub fn fill(&self, slack: u64) {
        let mut state = self.lock();
        let used = state.current.len() as u64 + state.reserve;
        state.capacity = Some(used + slack);
    }

    /// Bytes the gateway's space reserve holds now.
    pub fn reserve(&self) -> u64 {
        self.lock().reserve
    }

    /// Space freed again.
    pub fn free(&self) {
        self.lock().capacity = None;
    }

    /// The `n`-th sync from now cuts the power instead of completing.
    pub fn cut_power_at_sync(&self, n: u64) {
        let mut state = self.lock();
        state.cut_at_sync = Some(state.syncs + n.max(1));
    }

    /// Cancels a planned cut that has not happened.
    pub fn disarm_cut(&self) {
        self.lock().cut_at_sync = None;
    }

    /// Makes the disk lie about syncs from now on (see [`DiskBug`]).
    pub fn set_bug(&self, bug: Option<DiskBug>) {
        self.lock().bug = bug;
    }

    /// What a planned cut did, once, if one happened since the last call.
    pub fn take_cut(&self) -> Option<CrashReport> {
        self.lock().cut.take()
    }

    /// Syncs so far (a coarse progress measure for the trace).
    pub fn syncs(&self) -> u64 {
        self.lock().syncs
    }

    /// Length of the file as reads see it.
    pub fn len(&self) -> u64 {
        self.lock().current.len() as u64
    }

    /// True when nothing was ever written.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl State {
    /// Free bytes while the disk is full; `None` when space is plentiful.
    fn free(&self) -> Option<u64> {
        let used = self.current.len() as u64 + self.reserve;
        self.capacity.map(|cap| cap.saturating_sub(used))
    }

    fn pending_bytes(&self) -> u64 {
        self.pending
            .iter()
            .map(|op| match op {
                Op::Write { data, .. } => data.len() as u64,
                Op::SetLen(_) => 0,
            })
            .sum()
    }
}

/// The gateway's view of the disk for its space rules: free space and the reserve (which
/// lives beside the store, outside the simulated crash model: its length is metadata).
impl gateway::store::Volume for Disk {
    fn available(&self) -> std::io::Result<u64> {
        // Plenty when not full: more than any run writes.
        Ok(self.lock().free().unwrap_or(1 << 40))
    }

    fn reserve_len(&self) -> std::io::Result<u64> {
        Ok(self.lock().reserve)
    }

    fn set_reserve_len(&self, len: u64) -> std::io::Result<()> {
        let mut state = self.lock();
        if len > state.reserve && state.free().is_some_and(|free| len - state.reserve > free) {
            return Err(enospc());
        }
        state.reserve = len;
        Ok(())
    }
}

fn crash_locked(state: &mut State) -> CrashReport {
    let pending = std::mem::take(&mut state.pending);
    let mut image = state.durable.clone();
    let mut kept = 0;
    let mut torn = false;
    // The lying cache kept nothing: everything since the last honest sync is gone.
    if state.bug != Some(DiskBug::LyingSync) {
        for op in &pending {
            if !state.rng.random_bool(0.5) {
                continue;
            }
            kept += 1;
            match op {
                Op::SetLen(len) => image.resize(*len as usize, 0),
                Op::Write { offset, data } => {
                    let mut data = &data[..];
                    if data.len() > SECTOR && state.rng.random_bool(0.2) {
                        let sectors = data.len() / SECTOR;
                        let keep = state.rng.random_range(0..sectors) * SECTOR;
                        data = &data[..keep];
                        torn = true;
                    }
                    let start = *offset as usize;
                    if image.len() < start + data.len() {
                        image.resize(start + data.len(), 0);
                    }
                    image[start..start + data.len()].copy_from_slice(data);
                }
            }
        }
    }
    state.current = image.clone();
    state.durable = image;
    state.generation += 1;
    state.lock_owner = None;
    state.powered = false;
    CrashReport {
        pending: pending.len(),
        kept,
        torn,
    }
}

/// One open of the disk, as redb's `StorageBackend`.
#[derive(Debug)]
pub struct DiskBackend {
    disk: Disk,
    id: u64,
    generation: u64,
}

fn dead() -> std::io::Error {
    std::io::Error::other("simulated process crashed; its file handle is gone")
}

fn enospc() -> std::io::Error {
    std::io::Error::from_raw_os_error(28)
}

fn out_of_range() -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "read past the end")
}

fn whole_file(start: Bound<u64>, end: Bound<u64>) -> bool {
    matches!(start, Bound::Unbounded | Bound::Included(0)) && matches!(end, Bound::Unbounded)
}

impl DiskBackend {
    fn live(&self) -> Result<MutexGuard<'_, State>, std::io::Error> {
        let state = self.disk.lock();
        if state.generation != self.generation {
            return Err(dead());
        }
        Ok(state)
    }
}

impl StorageBackend for DiskBackend {
    fn len(&self) -> Result<u64, std::io::Error> {
        Ok(self.live()?.current.len() as u64)
    }

    fn read(&self, offset: u64, out: &mut [u8]) -> Result<(), std::io::Error> {
        let state = self.live()?;
        let start = usize::try_from(offset).map_err(|_| out_of_range())?;
        let source = state
            .current
            .get(start..start + out.len())
            .ok_or_else(out_of_range)?;
        out.copy_from_slice(source);
        Ok(())
    }

    fn set_len(&self, len: u64) -> Result<(), std::io::Error> {
        let mut state = self.live()?;
        let current = state.current.len() as u64;
        if len > current && state.free().is_some_and(|free| len - current > free) {
            return Err(enospc());
        }
        let size = usize::try_from(len).map_err(|_| enospc())?;
        state.current.resize(size, 0);
        state.pending.push(Op::SetLen(len));
        Ok(())
    }

    fn sync_data(&self) -> Result<(), std::io::Error> {
        let mut state = self.live()?;
        state.syncs += 1;
        if state.cut_at_sync == Some(state.syncs) {
            state.cut_at_sync = None;
            let report = crash_locked(&mut state);
            state.cut = Some(report);
            return Err(dead());
        }
        let short = state
            .free()
            .is_some_and(|free| free < state.pending_bytes());
        if short && !state.pending.is_empty() && state.rng.random_bool(0.2) {
            // Like Linux after a failed fsync: the data stays readable in the cache, durable
            // or not is unknown, and the next successful sync writes it.
            return Err(enospc());
        }
        if state.bug == Some(DiskBug::LyingSync) {
            return Ok(());
        }
        state.durable = state.current.clone();
        state.pending.clear();
        Ok(())
    }

    fn write(&self, offset: u64, data: &[u8]) -> Result<(), std::io::Error> {
        let mut state = self.live()?;
        let start = usize::try_from(offset).map_err(|_| out_of_range())?;
        let target = state
            .current
            .get_mut(start..start + data.len())
            .ok_or_else(out_of_range)?;
        target.copy_from_slice(data);
        state.pending.push(Op::Write {
            offset,
            data: data.to_vec(),
        });
        Ok(())
    }

    fn close(&self) -> Result<(), std::io::Error> {
        let mut state = self.disk.lock();
        if state.lock_owner == Some(self.id) {
            state.lock_owner = None;
        }
        Ok(())
    }

    // Whole-file locks only (redb's second level of lock support), enough for its exclusive
    // single-writer mode and for the store's "reopen waits for the old handle" logic.
    fn try_lock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<bool, BackendError> {
        if !whole_file(start, end) {
            return Err(BackendError::Unsupported);
        }
        let mut state = self.live()?;
        match state.lock_owner {
            Some(owner) if owner != self.id => Ok(false),
            _ => {
                state.lock_owner = Some(self.id);
                Ok(true)
            }
        }
    }

    fn try_lock_shared_range(
        &self,
        start: Bound<u64>,
        end: Bound<u64>,
    ) -> Result<bool, BackendError> {
        self.try_lock_range(start, end)
    }

    fn lock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<(), BackendError> {
        // One thread runs the whole simulation: waiting could never end.
        if self.try_lock_range(start, end)? {
            Ok(())
        } else {
            Err(BackendError::Io(std::io::Error::new(
                std::io::ErrorKind::WouldBlock,
                "simulated file is locked by another handle",
            )))
        }
    }

    fn lock_shared_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<(), BackendError> {
        self.lock_range(start, end)
    }

    fn unlock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<(), BackendError> {
        if !whole_file(start, end) {
            return Err(BackendError::Unsupported);
        }
        let mut state = self.disk.lock();
        if state.lock_owner == Some(self.id) {
            state.lock_owner = None;
        }
        Ok(())
    }

    fn query_lock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<bool, BackendError> {
        if !whole_file(start, end) {
            return Err(BackendError::Unsupported);
        }
        let state = self.live()?;
        Ok(state.lock_owner.is_some_and(|owner| owner != self.id))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn synced_writes_survive_a_crash_and_unsynced_ones_may_not() {
        let disk = Disk::new(7, None);
        let b = disk.backend();
        b.set_len(4096).unwrap();
        b.write(0, &[1; 4096]).unwrap();
        b.sync_data().unwrap();
        b.write(0, &[2; 4096]).unwrap();
        disk.crash();
        disk.power_on();
        let after = disk.backend();
        let mut out = [0u8; 4096];
        after.read(0, &mut out).unwrap();
        // Either old, new, or torn at a sector boundary: never anything else.
        let first_old = out.iter().position(|&x| x == 1).unwrap_or(4096);
        assert!(out[..first_old].iter().all(|&x| x == 2));
        assert!(out[first_old..].iter().all(|&x| x == 1));
        assert_eq!(first_old % SECTOR, 0);
        assert!(
            b.write(0, &[3; 10]).is_err(),
            "the dead process's handle is fenced"
        );
    }

    #[test]
    fn lying_sync_loses_everything_since_the_last_honest_one() {
        let disk = Disk::new(1, Some(DiskBug::LyingSync));
        let b = disk.backend();
        b.set_len(512).unwrap();
        b.write(0, &[9; 512]).unwrap();
        b.sync_data().unwrap();
        disk.crash();
        assert_eq!(disk.len(), 0);
    }

    #[test]
    fn a_full_disk_refuses_growth_and_some_syncs() {
        let disk = Disk::new(1, None);
        let b = disk.backend();
        b.set_len(1024).unwrap();
        disk.fill(0);
        assert_eq!(b.set_len(2048).unwrap_err().raw_os_error(), Some(28));
        b.write(0, &[1; 1024]).unwrap();
        let syncs: Vec<bool> = (0..40)
            .map(|_| {
                b.write(0, &[2; 512]).unwrap();
                b.sync_data().is_ok()
            })
            .collect();
        assert!(syncs.contains(&false), "a sync of pending writes may fail");
        assert!(syncs.contains(&true), "and may succeed");
        disk.free();
        b.set_len(2048).unwrap();
    }

    #[test]
    fn the_reserve_gives_its_room_back_on_a_full_disk() {
        use gateway::store::Volume;
        let disk = Disk::new(1, None);
        let b = disk.backend();
        b.set_len(4096).unwrap();
        disk.set_reserve_len(8192).unwrap();
        disk.fill(0);
        assert_eq!(disk.available().unwrap(), 0);
        assert_eq!(b.set_len(8192).unwrap_err().raw_os_error(), Some(28));
        assert!(
            disk.set_reserve_len(16384).is_err(),
            "no room to grow the reserve"
        );
        disk.set_reserve_len(0).unwrap();
        assert_eq!(disk.available().unwrap(), 8192);
        b.set_len(8192).unwrap();
        b.write(4096, &[1; 4096]).unwrap();
        // Writes that fit in the room left never fail their sync for want of space.
        for _ in 0..40 {
            b.write(0, &[2; 512]).unwrap();
            b.sync_data().unwrap();
        }
    }

    #[test]
    fn the_file_lock_is_exclusive_until_closed_or_crashed() {
        let disk = Disk::new(1, None);
        let (a, b) = (disk.backend(), disk.backend());
        assert!(a
            .try_lock_range(Bound::Unbounded, Bound::Unbounded)
            .unwrap());
        assert!(!b
            .try_lock_range(Bound::Unbounded, Bound::Unbounded)
            .unwrap());
        a.close().unwrap();
        assert!(b
            .try_lock_range(Bound::Unbounded, Bound::Unbounded)
            .unwrap());
        disk.crash();
        assert!(disk.backend().len().is_err(), "no power until the restart");
        disk.power_on();
        let c = disk.backend();
        assert!(c
            .try_lock_range(Bound::Unbounded, Bound::Unbounded)
            .unwrap());
    }
}
