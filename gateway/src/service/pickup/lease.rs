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
//! Taking a maildrop over from an idle session (`[pop3] lock_takeover_secs`) works across
//! nodes too: a login that finds another node's lease asks for the maildrop through a
//! shared setting ([`ask_for_takeover`]); the holding session's renewal task reads the
//! request at its next turn and, if the session has waited for a command at least as long
//! as its node's threshold, ends it (without UPDATE, as a takeover within one node does) and
//! says so; otherwise it refuses, and the login answers `[IN-USE]`. The login waits at most
//! one renewal period plus the old session's end.

use std::sync::Arc;
use std::time::Duration;

use tokio::task::AbortHandle;

use super::holders::TAKEOVER_WAIT;
use super::Holder;
use crate::exec::Executor;
use crate::mailbox::MailboxId;
use crate::store::coordination::run_on;
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
pub(in crate::service) fn node_name() -> Arc<str> {
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
        let claim = lease.clone();
        let taken = run_on(coordination, executor, "maildrop lease", move |shared| {
            shared.take_lease(&claim, policy.ttl)
        })
        .await?;
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
    /// Answers another node's request for the maildrop at each turn: granted (the session
    /// ends) when the session has waited for a command at least `takeover` (`[pop3]
    /// lock_takeover_secs`), refused otherwise (and always without `takeover`, so the login
    /// asking does not wait out its time).
    pub(super) fn keep(
        &mut self,
        executor: Executor,
        holder: Arc<Holder>,
        policy: LeasePolicy,
        takeover: Option<Duration>,
    ) {
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
                    Ok(Ok(true)) => {
                        if answer_takeover(
                            &coordination,
                            &executor,
                            &lease.mailbox,
                            &holder,
                            takeover,
                        )
                        .await
                        {
                            return;
                        }
                    }
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

/// The shared setting through which a login on another node asks for `mailbox`, and the
/// holding session answers.
fn takeover_setting(mailbox: &MailboxId) -> String {
    format!("pop3.takeover.{mailbox}")
}

const ASKED: &str = "asked";
const GRANTED: &str = "granted";
const REFUSED: &str = "refused";

/// How often a login waiting for another node's answer looks again.
const TAKEOVER_POLL: Duration = Duration::from_millis(250);

/// The holder's side: answers a pending request for `mailbox`; true when it granted it (the
/// session is ending). Without a `threshold` (takeover off on this node) it refuses.
async fn answer_takeover(
    coordination: &Arc<dyn Coordination>,
    executor: &Executor,
    mailbox: &MailboxId,
    holder: &Holder,
    threshold: Option<Duration>,
) -> bool {
    let name = takeover_setting(mailbox);
    let read = name.clone();
    let asked = run_on(coordination, executor, "takeover request", move |shared| {
        shared.shared_setting(&read)
    })
    .await;
    if !matches!(&asked, Ok(Some(value)) if value == ASKED) {
        return false;
    }
    let granted = match threshold.and_then(|threshold| holder.revoke_if_idle(threshold)) {
        Some(idle) => {
            tracing::info!(%mailbox, idle_secs = idle.as_secs(), "a POP3 login on another node takes the maildrop over from this idle session");
            true
        }
        None => false,
    };
    let answer = if granted { GRANTED } else { REFUSED };
    // Unanswered, the login waits out its time and answers `[IN-USE]`.
    let _ = run_on(coordination, executor, "takeover answer", move |shared| {
        shared.publish_setting(&name, answer)
    })
    .await;
    granted
}

/// The login's side, after another node's lease refused it: asks the holding session to
/// give the maildrop up and waits for its answer (at most one renewal period plus the old
/// session's end). `Ok(None)`: refused or no answer in time (`[IN-USE]`).
pub(super) async fn ask_for_takeover(
    coordination: &Arc<dyn Coordination>,
    executor: &Executor,
    node: &Arc<str>,
    mailbox: &MailboxId,
    policy: LeasePolicy,
) -> Result<Option<MaildropLease>, StoreError> {
    let name = takeover_setting(mailbox);
    let ask = name.clone();
    run_on(coordination, executor, "takeover request", move |shared| {
        shared.publish_setting(&ask, ASKED)
    })
    .await?;
    let deadline = tokio::time::Instant::now() + policy.renew_every + TAKEOVER_WAIT;
    let taken = loop {
        tokio::time::sleep(TAKEOVER_POLL).await;
        if let Some(lease) =
            MaildropLease::take(coordination, executor, node, mailbox, policy).await?
        {
            break Some(lease);
        }
        let read = name.clone();
        let answer = run_on(coordination, executor, "takeover answer", move |shared| {
            shared.shared_setting(&read)
        })
        .await?;
        if answer.as_deref() == Some(REFUSED) || tokio::time::Instant::now() >= deadline {
            break None;
        }
    };
    // Left behind, a request is answered once more, then replaced by the next one.
    let _ = run_on(
        coordination,
        executor,
        "takeover withdrawal",
        move |shared| shared.withdraw_setting(&name),
    )
    .await;
    Ok(taken)
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
