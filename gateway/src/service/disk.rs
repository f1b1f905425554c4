//! The disk-space rules: when new mail is refused, and how pick-up keeps freeing space on a
//! full disk.
//!
//! - New mail is refused (SMTP `452 4.3.1`) while the data directory's file system has less
//!   than `[limits] min_free_disk_mib` free outside the reserve, so the disk does not fill to
//!   the last byte with mail; and a commit must fit outside the reserve.
//! - Deleting never is: a deletion that meets a full disk gives the reserve back and runs
//!   again in its room (see `store::space`).
//! - While space is short, deletions are followed by a compaction, so what the archiver took
//!   goes back to the file system (redb alone only reuses freed pages inside its file, which
//!   neither the spool nor anything else on the disk can use).
//! - The reserve is taken again, and mail accepted again, as soon as the file system has
//!   room: checks look at the disk afresh, no restart needed. Only while a reading of the
//!   last [`REUSE_READING_MS`] showed [`REUSE_MARGIN`] more room than a check needs is that
//!   reading reused: a statvfs and a stat per message cost more than the rest of its check.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use super::{Gateway, ServiceError};
use crate::store::{SpaceStatus, StoreError};

/// How long (service clock, ms) a reading of the disk may answer later checks.
pub const REUSE_READING_MS: u64 = 250;
/// How much more room than a check needs a reading must have shown to answer it: far more
/// than the gateway can write in [`REUSE_READING_MS`].
pub const REUSE_MARGIN: u64 = 1 << 30;

/// What the service remembers between checks: whether it refuses (to log changes only) and
/// the last reading of the disk.
#[derive(Debug, Default)]
pub(super) struct IntakeState {
    refusing: AtomicBool,
    /// When (ms) the room outside the reserve was last read, and how much there was.
    last_reading: Mutex<Option<(u64, u64)>>,
}

impl IntakeState {
    /// Whether a recent reading showed room for `needed` with [`REUSE_MARGIN`] to spare.
    fn recently_roomy(&self, now: u64, needed: u64) -> bool {
        let reading = *self.last_reading.lock().unwrap_or_else(|e| e.into_inner());
        reading.is_some_and(|(at, room)| {
            now >= at && now - at < REUSE_READING_MS && room >= needed.saturating_add(REUSE_MARGIN)
        })
    }

    fn remember(&self, now: u64, room: u64) {
        *self.last_reading.lock().unwrap_or_else(|e| e.into_inner()) = Some((now, room));
    }
}

impl Gateway {
    /// Whether new mail of about `size` bytes may be accepted now. Refuses with a
    /// storage-full error (SMTP `452 4.3.1`) below the free-space minimum. Takes the reserve
    /// back first if it was given away and there is room for it again.
    pub fn check_intake(&self, size: u64) -> Result<(), ServiceError> {
        self.check_room(self.options.min_free_disk.saturating_add(size))
    }

    /// Refuses a commit of `size` bytes that would not fit outside the reserve.
    pub(super) fn check_room_for(&self, size: u64) -> Result<(), ServiceError> {
        self.check_room(size)
    }

    /// Refuses unless `needed` bytes are free outside the reserve.
    fn check_room(&self, needed: u64) -> Result<(), ServiceError> {
        let now = self.now();
        if self.intake.recently_roomy(now, needed) {
            return Ok(());
        }
        let Some(status) = self.space_status() else {
            return Ok(());
        };
        let room = status.room();
        self.intake.remember(now, room);
        let refusing = room < needed;
        let was = self.intake.refusing.swap(refusing, Ordering::Relaxed);
        if refusing && !was {
            tracing::warn!(
                free_bytes = status.available,
                reserve_missing = status.reserve_missing,
                min_free_bytes = self.options.min_free_disk,
                "disk space low: refusing new mail until space is freed"
            );
        } else if was && !refusing {
            tracing::info!(
                free_bytes = status.available,
                "disk space available again: accepting mail"
            );
        }
        if refusing {
            return Err(ServiceError::Store(StoreError::Full(format!(
                "{room} bytes free on the data directory's file system, {needed} needed"
            ))));
        }
        Ok(())
    }

    /// The file system now, the reserve taken again first if it fits beside the minimum.
    /// `None` without a reserve configuration or when the file system cannot be asked (then
    /// the store's own `ENOSPC` is the only limit).
    fn space_status(&self) -> Option<SpaceStatus> {
        let space = self.store.space()?;
        let status = match space.status() {
            Ok(status) => status,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the free space of the data directory");
                return None;
            }
        };
        if status.reserve_missing > 0 && space.restore(self.options.min_free_disk) {
            return space.status().ok();
        }
        Some(status)
    }

    /// Whether space is short enough that freed store pages should go back to the file
    /// system: the reserve is missing or less than twice the minimum is free.
    pub(super) fn space_is_short(&self) -> bool {
        self.space_status().is_some_and(|status| {
            status.reserve_missing > 0
                || status.room() < self.options.min_free_disk.saturating_mul(2)
        })
    }

    /// Gives the reserve back after a commit failed for want of space; true if the failed
    /// work is worth one more try in its room. (The reserve may already be gone: the
    /// store's reopen after the failed commit gives it back when recovery needs it.)
    pub(super) fn release_reserve_after(&self, error: &ServiceError) -> bool {
        let Some(space) = self.store.space() else {
            return false;
        };
        if !error.is_storage_full() {
            return false;
        }
        space.release();
        true
    }

    /// After deletions while space is short: compact the store so the space goes back to
    /// the file system. Failures are logged; the deletions stand either way.
    pub(super) async fn give_back_space(&self) {
        if !self.space_is_short() {
            return;
        }
        // Chunks of messages retired while there was room go first, so their pages are free
        // for the compaction to give back.
        if let Err(e) = self.store.purge_retired().await {
            tracing::warn!(error = %e, "removing the chunks of deleted messages failed");
        }
        match self.store.compact().await {
            Ok(true) => {
                let free = self.space_status().map(|status| status.available);
                tracing::info!(free_bytes = ?free, "store compacted to give freed space back");
            }
            Ok(false) => tracing::info!("store busy; compaction left for later"),
            Err(e) => tracing::warn!(error = %e, "store compaction failed"),
        }
    }

    /// At start: take the reserve if it fits, and compact the store if space is short (a
    /// gateway stopped on a full disk gets back what its last pick-ups freed).
    pub fn prepare_disk(&self) {
        if self.space_is_short() {
            match self.store.compact_blocking() {
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "store compaction at start failed"),
            }
        }
        if let Some(status) = self.space_status() {
            tracing::info!(
                free_bytes = status.available,
                reserve_missing = status.reserve_missing,
                "data directory space"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::Arc;

    use super::super::test_support::{faulty_gateway_with, gateway_on};
    use crate::crypto::Envelope;
    use crate::store::faults::{Fault, FaultSwitch};
    use crate::store::space::testing::FakeVolume;
    use crate::store::{Space, Volume};

    const MIB: u64 = 1024 * 1024;

    #[tokio::test]
    async fn mail_is_refused_below_the_minimum_and_accepted_when_space_returns() {
        let volume = FakeVolume::with_free(100 * MIB);
        let (_dir, gw) = gateway_on(volume.clone(), 20 * MIB, 30 * MIB);
        // 100 free: the reserve (20) is taken, 80 stay for mail.
        gw.check_intake(0).unwrap();
        assert_eq!(volume.reserve.load(Ordering::SeqCst), 20 * MIB);
        gw.check_intake(50 * MIB).unwrap();
        let err = gw.check_intake(51 * MIB).unwrap_err();
        assert!(err.is_storage_full() && err.is_temporary(), "{err}");

        // Something else fills the disk: below the minimum.
        volume.free.store(29 * MIB, Ordering::SeqCst);
        assert!(gw.check_intake(0).unwrap_err().is_storage_full());
        // The reserve is given back; its room is not for mail.
        assert!(gw.store().space().unwrap().release());
        assert_eq!(volume.free.load(Ordering::SeqCst), 49 * MIB);
        assert!(gw.check_intake(0).unwrap_err().is_storage_full());

        // Space returns: the reserve comes back first, then mail is accepted again.
        volume.free.store(60 * MIB, Ordering::SeqCst);
        gw.check_intake(0).unwrap();
        assert_eq!(volume.reserve.load(Ordering::SeqCst), 20 * MIB);
        assert_eq!(volume.free.load(Ordering::SeqCst), 40 * MIB);
    }

    /// A disk that is full until the reserve is given back.
    struct FullUntilReleased {
        switch: FaultSwitch,
        held: AtomicU64,
    }

    impl Volume for FullUntilReleased {
        fn available(&self) -> std::io::Result<u64> {
            Ok(100 * MIB)
        }

        fn reserve_len(&self) -> std::io::Result<u64> {
            Ok(self.held.load(Ordering::SeqCst))
        }

        fn set_reserve_len(&self, len: u64) -> std::io::Result<()> {
            if len == 0 {
                self.switch.set(Fault::Healthy);
            }
            self.held.store(len, Ordering::SeqCst);
            Ok(())
        }
    }

    fn full_until_released(switch: &FaultSwitch) -> Arc<Space> {
        let volume = Arc::new(FullUntilReleased {
            switch: switch.clone(),
            held: AtomicU64::new(10 * MIB),
        });
        Arc::new(Space::new(volume, 10 * MIB))
    }

    #[tokio::test]
    async fn a_deletion_on_a_full_disk_commits_in_the_reserve() {
        let switch = FaultSwitch::default();
        let space = full_until_released(&switch);
        let (_dir, gw, switch) = faulty_gateway_with(switch, Some(space.clone()));
        let id = gw.create_mailbox("m", "").await.unwrap().info.id;
        let mut draft = gw
            .begin_message(std::slice::from_ref(&id), &Envelope::default())
            .unwrap();
        draft.write(&[b'x'; 200_000]).unwrap();
        let _ = gw.commit(draft).await.unwrap();
        let seqs: Vec<u64> = gw
            .list_messages(&id)
            .unwrap()
            .iter()
            .map(|m| m.seq)
            .collect();

        switch.set(Fault::Full);
        let _durable = gw.remove_messages(&id, &seqs).await.unwrap();
        assert_eq!(gw.mailbox(&id).unwrap().message_count, 0);
        assert!(gw.list_messages(&id).unwrap().is_empty());
    }

    #[test]
    fn the_store_opens_on_a_full_disk_in_the_reserve() {
        let switch = FaultSwitch::default();
        switch.set(Fault::Full);
        let space = full_until_released(&switch);
        let (_dir, gw, _switch) = faulty_gateway_with(switch, Some(space.clone()));
        assert!(gw.list_mailboxes().unwrap().is_empty());
        assert_eq!(space.status().unwrap().reserve_missing, 10 * MIB);
    }

    #[tokio::test]
    async fn the_reserve_waits_until_it_fits_beside_the_minimum() {
        let volume = FakeVolume::with_free(40 * MIB);
        let (_dir, gw) = gateway_on(volume.clone(), 20 * MIB, 30 * MIB);
        assert!(gw.check_intake(0).is_err());
        assert_eq!(
            volume.reserve.load(Ordering::SeqCst),
            0,
            "taking the reserve would leave less than the minimum"
        );
        let _ = Arc::clone(&volume);
    }

    /// A volume that counts its readings.
    struct CountingVolume {
        inner: Arc<FakeVolume>,
        readings: AtomicU64,
    }

    impl Volume for CountingVolume {
        fn available(&self) -> std::io::Result<u64> {
            self.readings.fetch_add(1, Ordering::SeqCst);
            self.inner.available()
        }
        fn reserve_len(&self) -> std::io::Result<u64> {
            self.inner.reserve_len()
        }
        fn set_reserve_len(&self, len: u64) -> std::io::Result<()> {
            self.inner.set_reserve_len(len)
        }
    }

    #[tokio::test]
    async fn a_recent_roomy_reading_answers_checks_and_a_tight_one_never_does() {
        const GIB: u64 = 1024 * MIB;
        let volume = Arc::new(CountingVolume {
            inner: FakeVolume::with_free(10 * GIB),
            readings: AtomicU64::new(0),
        });
        let (_dir, mut gw) = gateway_on(volume.clone(), 20 * MIB, 30 * MIB);
        let options = Arc::get_mut(&mut gw.options).expect("not shared yet");
        let clock = Arc::new(AtomicU64::new(1_000_000));
        let time = clock.clone();
        options.clock = Arc::new(move || time.load(Ordering::SeqCst));
        let readings = || volume.readings.load(Ordering::SeqCst);

        gw.check_intake(MIB).unwrap();
        let first = readings();
        assert!(first > 0);
        gw.check_intake(MIB).unwrap();
        gw.check_room_for(MIB).unwrap();
        assert_eq!(readings(), first, "answered by the reading just taken");

        // Older than the reuse window: read again.
        clock.fetch_add(super::REUSE_READING_MS, Ordering::SeqCst);
        gw.check_intake(MIB).unwrap();
        let second = readings();
        assert!(second > first);

        // The disk fills: the next reading shows it, and with little room every check reads.
        volume.inner.free.store(GIB / 2, Ordering::SeqCst);
        clock.fetch_add(super::REUSE_READING_MS, Ordering::SeqCst);
        gw.check_intake(MIB).unwrap();
        let third = readings();
        gw.check_intake(MIB).unwrap();
        assert!(
            readings() > third,
            "less than the margin to spare: no reuse"
        );
        volume.inner.free.store(29 * MIB, Ordering::SeqCst);
        assert!(gw.check_intake(0).unwrap_err().is_storage_full());
    }
}
