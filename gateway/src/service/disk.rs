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
//!   room: every check looks at the disk afresh, no restart needed.

use std::sync::atomic::{AtomicBool, Ordering};

use super::{Gateway, ServiceError};
use crate::store::{SpaceStatus, StoreError};

/// What the service remembers between checks (for logging changes only).
#[derive(Debug, Default)]
pub(super) struct IntakeState {
    refusing: AtomicBool,
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
        let Some(status) = self.space_status() else {
            return Ok(());
        };
        let room = status.room();
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
    fn space_is_short(&self) -> bool {
        self.space_status().is_some_and(|status| {
            status.reserve_missing > 0
                || status.room() < self.options.min_free_disk.saturating_mul(2)
        })
    }

    /// Gives the reserve back after a commit failed for want of space; true if that made
    /// room, so the failed work is worth trying again.
    pub(super) fn release_reserve_after(&self, error: &ServiceError) -> bool {
        error.is_storage_full() && self.store.space().is_some_and(|space| space.release())
    }

    /// After deletions while space is short: compact the store so the space goes back to
    /// the file system. Failures are logged; the deletions stand either way.
    pub(super) async fn give_back_space(&self) {
        if !self.space_is_short() {
            return;
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
    use std::sync::atomic::Ordering;
    use std::sync::Arc;

    use super::super::test_support::gateway_on;
    use crate::store::space::testing::FakeVolume;

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
}
