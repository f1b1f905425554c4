//! What readiness asks of the service: can a commit go through, and is there room for mail.

use super::{Gateway, ServiceError};

impl Gateway {
    /// An empty write through the group commit, waited for until durable: it shows that the
    /// writer runs, the database is open (not stuck reopening after a storage error) and
    /// the file system takes a commit and its sync.
    pub async fn probe_store(&self) -> Result<(), ServiceError> {
        self.store.write(|_txn| Ok(())).await?;
        Ok(())
    }

    /// Whether new mail is accepted as far as disk space goes: the free space outside the
    /// reserve is at least `[limits] min_free_disk_mib` (the reserve taken back first if it
    /// fits again), the same rule SMTP applies before it says 250.
    pub fn disk_ready(&self) -> Result<(), ServiceError> {
        self.check_intake(0)
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::{faulty_gateway, gateway_on};
    use crate::store::faults::Fault;
    use crate::store::space::testing::FakeVolume;

    const MIB: u64 = 1024 * 1024;

    #[tokio::test]
    async fn the_store_probe_fails_while_the_disk_fails_and_passes_again_after() {
        let (_dir, gw, switch) = faulty_gateway();
        gw.probe_store().await.unwrap();
        switch.set(Fault::Broken);
        assert!(gw.probe_store().await.is_err());
        switch.set(Fault::Healthy);
        // The writer reopens the database on its own; the probe's write waits for it.
        gw.probe_store().await.unwrap();
    }

    #[tokio::test]
    async fn disk_readiness_follows_the_free_space_minimum() {
        let volume = FakeVolume::with_free(100 * MIB);
        let (_dir, gw) = gateway_on(volume.clone(), 10 * MIB, 30 * MIB);
        gw.disk_ready().unwrap();
        volume
            .free
            .store(25 * MIB, std::sync::atomic::Ordering::SeqCst);
        assert!(gw.disk_ready().unwrap_err().is_storage_full());
    }
}
