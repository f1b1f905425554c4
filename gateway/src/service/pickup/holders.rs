//! Sessions holding a maildrop lock, so a login with the right password can take the
//! maildrop over from one that has waited too long for a command (see the module
//! documentation of [`super`]).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;

use crate::mailbox::MailboxId;

/// How long a login that took a maildrop over waits for the old session to end.
pub(super) const TAKEOVER_WAIT: Duration = Duration::from_secs(5);

#[derive(Default)]
pub(super) struct Holders {
    by_mailbox: Mutex<HashMap<MailboxId, Arc<Holder>>>,
}

/// One lock-holding session as a login that finds the maildrop locked sees it. The session's
/// shell says when it waits for a command ([`Holder::mark_idle`]) and when input arrives
/// ([`Holder::mark_busy`]), and ends when [`Holder::revoked`] fires.
#[derive(Default)]
pub struct Holder {
    state: Mutex<HolderState>,
    /// The session must end (a takeover).
    revoked: Notify,
    /// The session ended and its lock is free.
    released: Notify,
}

#[derive(Default)]
enum HolderState {
    #[default]
    Busy,
    /// Waiting for a command since then.
    Idle(Instant),
    Revoked,
}

impl Holders {
    fn lock(&self) -> MutexGuard<'_, HashMap<MailboxId, Arc<Holder>>> {
        self.by_mailbox.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(super) fn register(self: &Arc<Self>, mailbox: &MailboxId) -> HolderEntry {
        let holder = Arc::new(Holder::default());
        self.lock().insert(mailbox.clone(), holder.clone());
        HolderEntry {
            holders: self.clone(),
            mailbox: mailbox.clone(),
            holder,
        }
    }

    pub(super) fn get(&self, mailbox: &MailboxId) -> Option<Arc<Holder>> {
        self.lock().get(mailbox).cloned()
    }
}

impl Holder {
    fn state(&self) -> MutexGuard<'_, HolderState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The session waits for a command (keeps the earlier start if it already did).
    pub fn mark_idle(&self) {
        let mut state = self.state();
        if matches!(*state, HolderState::Busy) {
            *state = HolderState::Idle(Instant::now());
        }
    }

    /// Input arrived; false when the session was taken over first (the input must not run).
    pub fn mark_busy(&self) -> bool {
        let mut state = self.state();
        if matches!(*state, HolderState::Revoked) {
            return false;
        }
        *state = HolderState::Busy;
        true
    }

    /// Completes when a login has taken the maildrop over: the session must end now.
    pub async fn revoked(&self) {
        self.revoked.notified().await;
    }

    /// Revokes the session if it has waited for a command for `threshold`; how long it had.
    pub(super) fn revoke_if_idle(&self, threshold: Duration) -> Option<Duration> {
        let mut state = self.state();
        let HolderState::Idle(since) = *state else {
            return None;
        };
        let idle = since.elapsed();
        if idle < threshold {
            return None;
        }
        *state = HolderState::Revoked;
        self.revoked.notify_one();
        Some(idle)
    }

    /// Ends the session whatever it is doing (its maildrop's lease was lost): input not yet
    /// run is not run, and a session waiting for a command ends at once.
    pub(super) fn revoke(&self) {
        *self.state() = HolderState::Revoked;
        self.revoked.notify_one();
    }

    /// Completes when the session has ended and released its lock.
    pub(super) fn released(&self) -> tokio::sync::futures::Notified<'_> {
        self.released.notified()
    }
}

/// A session's registration as the maildrop's holder; removed when the session ends.
pub(super) struct HolderEntry {
    holders: Arc<Holders>,
    mailbox: MailboxId,
    pub(super) holder: Arc<Holder>,
}

impl Drop for HolderEntry {
    fn drop(&mut self) {
        let mut map = self.holders.lock();
        if map
            .get(&self.mailbox)
            .is_some_and(|current| Arc::ptr_eq(current, &self.holder))
        {
            map.remove(&self.mailbox);
        }
        drop(map);
        self.holder.released.notify_waiters();
    }
}
