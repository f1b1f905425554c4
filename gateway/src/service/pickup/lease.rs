//! The maildrop lock across nodes: with other gateway nodes on the same database, a session
//! that holds a maildrop's in-process lock also holds its lease row ([`Coordination`]), so a
//! login on another node gets `[IN-USE]` too.
//!
//! The lease lasts [`LeasePolicy::ttl`] from its last renewal, by the database's clock. A
//! task renews it every [`LeasePolicy::renew_every`] while the session lasts; the session's
//! end deletes it. A node that dies renews nothing and deletes nothing: its leases expire
//! and the maildrops are free again after at most `ttl`. A session whose lease was lost
//! (it could not renew in time and another node took the maildrop) is ended by its renewal
//! task, and its UPDATE cannot delete anything: the deletion's write checks the lease
//! ([`crate::store::Writes::holds_lease`]) in its own transaction.
//!
//! Taking a maildrop over from an idle session (`[pop3] lock_takeover_secs`) works within
//! one node only; a session on another node keeps its lease until it ends or its node dies.

use std::sync::Arc;
use std::time::Duration;

use tokio::task::AbortHandle;

use super::Holder;
use crate::exec::Executor;
use crate::mailbox::MailboxId;
use crate::store::{Coordination, Lease, StoreError};

/// How long a maildrop lease lasts and how often its holder renews it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeasePolicy {
    /// A node that dies holds its maildrops at most this long.
    pub ttl: Duration,
    /// Shorter than `ttl`, so that a renewal or two may fail (a slow database) without the
    /// lease being lost.
    pub renew_every: Duration,
}

impl Default for LeasePolicy {
    fn default() -> Self {
        Self {
            ttl: Duration::from_secs(30),
            renew_every: Duration::from_secs(10),
        }
    }
}

/// This node as its leases name it: the host name (for people reading the table) and a
/// random part new at every start, so a restarted node does not mistake its predecessor's
/// leases for its own.
pub(super) fn node_name() -> Arc<str> {
    let mut random = [0u8; 8];
    crate::random::fill_random(&mut random);
    let host = crate::config::detect_host_name();
    format!("{host}/{}", data_encoding::HEXLOWER.encode(&random)).into()
}

/// A session's lease on its maildrop (only with a shared store); renewed while it lives,
/// released when it drops.
pub(super) struct MaildropLease {
    coordination: Arc<dyn Coordination>,
    lease: Lease,
    renewal: Option<AbortHandle>,
}

impl MaildropLease {
    /// Takes the lease for `mailbox` for this node; `Ok(None)` when another node holds it.
    /// Only called while this node's in-process lock on the maildrop is held.
    pub(super) async fn take(
        coordination: &Arc<dyn Coordination>,
        executor: &Executor,
        node: &Arc<str>,
        mailbox: &MailboxId,
        policy: LeasePolicy,
    ) -> Result<Option<Self>, StoreError> {
        let mut token = [0u8; 8];
        crate::random::fill_random(&mut token);
        let lease = Lease {
            mailbox: mailbox.clone(),
            node: node.clone(),
            token: i64::from_le_bytes(token),
        };
        let (shared, claim) = (coordination.clone(), lease.clone());
        let taken = executor
            .run("take maildrop lease", move || {
                shared.take_lease(&claim, policy.ttl)
            })
            .await
            .map_err(|_| StoreError::Io("the lease task was lost".into()))??;
        Ok(taken.then(|| Self {
            coordination: coordination.clone(),
            lease,
            renewal: None,
        }))
    }

    pub(super) fn lease(&self) -> &Lease {
        &self.lease
    }

    /// Renews the lease until the session ends; if it is lost, ends the session (`holder`).
    pub(super) fn keep(&mut self, executor: Executor, holder: Arc<Holder>, policy: LeasePolicy) {
        let (coordination, lease) = (self.coordination.clone(), self.lease.clone());
        let task = tokio::spawn(async move {
            loop {
                tokio::time::sleep(policy.renew_every).await;
                let (shared, claim) = (coordination.clone(), lease.clone());
                let renewed = executor
                    .run("renew maildrop lease", move || {
                        shared.renew_lease(&claim, policy.ttl)
                    })
                    .await;
                match renewed {
                    Ok(Ok(true)) => {}
                    Ok(Ok(false)) => {
                        tracing::warn!(mailbox = %lease.mailbox, "the maildrop's lease was lost to another session; ending this one");
                        holder.revoke();
                        return;
                    }
                    // Tried again at the next turn; until the lease is lost, it holds.
                    Ok(Err(e)) => {
                        tracing::warn!(mailbox = %lease.mailbox, error = %e, "could not renew the maildrop's lease")
                    }
                    Err(_) => return,
                }
            }
        });
        self.renewal = Some(task.abort_handle());
    }
}

impl Drop for MaildropLease {
    /// Best effort, on the calling thread (one short statement, as reads do): a lease that
    /// cannot be deleted now expires by itself.
    fn drop(&mut self) {
        if let Some(renewal) = self.renewal.take() {
            renewal.abort();
        }
        if let Err(e) = self.coordination.release_lease(&self.lease) {
            tracing::debug!(mailbox = %self.lease.mailbox, error = %e, "could not release the maildrop's lease; it expires by itself");
        }
    }
}
