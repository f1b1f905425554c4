//! Pick-up: the only way to a maildrop.
//!
//! [`Pickup::open_maildrop`] is where an archiver's login is decided: the brute-force
//! defence ([`guard`]), a bounded number of concurrent Argon2id unseals (run where the
//! gateway's [`Executor`](crate::exec::Executor) puts blocking work), the exclusive maildrop
//! lock (RFC 1939 §8) and the listing. What it returns, a [`Maildrop`], holds the unsealed key
//! and the lock, so everything that reads or deletes messages for an archiver takes one:
//! [`Pickup::open_message`] and [`Gateway::delete_messages`]. A protocol shell cannot reach a
//! message without the right password, or delete one without holding the lock.
//!
//! ## A lock held by a connection that cannot be answered
//!
//! The lock lives as long as the [`Maildrop`]. A client that vanished without a FIN or RST
//! (a partition, a crashed host) would keep it, and every later login would get `[IN-USE]`
//! until the autologout timer. RFC 1939 §3 sets that timer to at least 10 minutes. Besides
//! TCP keepalive (the shell's), takeover releases the lock sooner without breaking that
//! rule: with `[pop3] lock_takeover_secs` (60 s), a login that proves the mailbox password
//! while the lock's session has waited that long for a command, with nothing of one
//! received, ends that session (its [`Holder`] is revoked) and takes the lock. This is not
//! an autologout: the session is ended because the mailbox's owner logged in again, which is
//! what an archiver reconnecting after a partition does. A session that is streaming,
//! committing or has input waiting is never taken over, and input that arrives after the
//! takeover is not run. Either way the old session ends without UPDATE, so nothing it marked
//! is deleted (RFC 1939 §6: only QUIT in TRANSACTION deletes).
//!
//! ## Several nodes
//!
//! On a store that other gateway nodes share, the lock is also a lease in the database
//! ([`lease`]): a login on another node gets `[IN-USE]`, a node that dies frees its
//! maildrops when their leases expire, and a session whose lease was lost can neither go on
//! nor delete. Failed logins count on every node (the throttles are
//! [`SharedThrottle`](crate::throttle::SharedThrottle)s). Takeover stays within one node.

mod guard;
mod holders;
mod lease;

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Semaphore;

pub use guard::{CLIENT_POLICY, MAILBOX_POLICY, MAX_MAILBOX_DELAY};
pub use holders::Holder;
pub(super) use lease::node_name;
pub use lease::LeasePolicy;

use super::{Gateway, MessageReader, MessageSummary, ServiceError};
use crate::config::IpNetwork;
use crate::crypto::{MailboxPassword, UnsealedKey};
use crate::mailbox::MailboxId;
use crate::metrics::LoginKind;
use crate::store::Durable;
use guard::{LoginGuard, MaildropLock, MaildropLocks};
use holders::{HolderEntry, Holders, TAKEOVER_WAIT};
use lease::MaildropLease;

/// How long a login may wait for an unseal slot before it is told to come back later.
const UNSEAL_QUEUE_TIMEOUT: Duration = Duration::from_secs(30);

/// The pick-up settings (`[pop3]`).
#[derive(Debug, Clone)]
pub struct PickupPolicy {
    /// Argon2id derivations allowed at once (each takes ~19 MiB and a core for ~15 ms).
    pub max_concurrent_unseals: usize,
    /// Pause before answering a failed login.
    pub failed_login_delay: Duration,
    /// The archiver's networks (`[pop3] trusted_networks`): never throttled.
    pub trusted_networks: Vec<IpNetwork>,
    /// A login with the right password takes the maildrop over from a session that has
    /// waited this long for a command (see the module documentation); `None`: never.
    pub lock_takeover: Option<Duration>,
}

/// Why a pick-up login was refused. Every refusal that could be a guess has already been
/// delayed when it is returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum LoginRefused {
    #[error("wrong password")]
    WrongPassword,
    /// Answered like a wrong password; kept apart for the count of failed logins.
    #[error("no such mailbox")]
    UnknownMailbox,
    #[error("the maildrop is in use by another session")]
    Locked,
    #[error("too many failed logins from this client")]
    Throttled,
    /// The store or an unseal slot was not available; not counted as a guess.
    #[error("the login could not be checked now")]
    Unavailable,
}

impl LoginRefused {
    fn of(error: &ServiceError) -> Self {
        match error {
            ServiceError::WrongPassword(_) => Self::WrongPassword,
            ServiceError::MailboxNotFound(_) => Self::UnknownMailbox,
            _ => Self::Unavailable,
        }
    }
}

/// Pick-up logins of one gateway: their throttles, unseal slots, locks and holders. Built
/// once ([`Gateway::pickup`]) and shared by every POP3 listener.
pub struct Pickup {
    gateway: Gateway,
    policy: PickupPolicy,
    guard: LoginGuard,
    unseals: Semaphore,
    /// One more password check slot that only trusted clients may take, so a flood of
    /// guesses filling `unseals` cannot make the archiver's login time out.
    trusted_unseals: Semaphore,
    locks: Arc<MaildropLocks>,
    holders: Arc<Holders>,
    /// This node in its maildrop leases (with a shared store): `locks` is its truth.
    node: Arc<str>,
}

/// An open maildrop: the mailbox's unsealed key, its exclusive lock and its messages as
/// listed at login. Only [`Pickup::open_maildrop`] makes one; dropping it (on every path a
/// session ends) zeroizes the key and releases the lock.
pub struct Maildrop {
    mailbox: MailboxId,
    key: Arc<UnsealedKey>,
    messages: Vec<MessageSummary>,
    /// The lease other nodes see (with a shared store); released before the lock.
    lease: Option<MaildropLease>,
    /// Declared before `holder`: fields drop in order, so the lock is free when a login
    /// waiting to take over hears of the release.
    _lock: MaildropLock,
    holder: HolderEntry,
}

impl Maildrop {
    pub fn mailbox(&self) -> &MailboxId {
        &self.mailbox
    }

    /// The messages as listed at login, in arrival order.
    pub fn messages(&self) -> &[MessageSummary] {
        &self.messages
    }

    /// This session as a login that wants to take the maildrop over sees it.
    pub fn holder(&self) -> &Arc<Holder> {
        &self.holder.holder
    }

    fn listed(&self, seq: u64) -> bool {
        self.messages.iter().any(|m| m.seq == seq)
    }
}

impl std::fmt::Debug for Maildrop {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Maildrop")
            .field("mailbox", &self.mailbox)
            .field("messages", &self.messages.len())
            .finish_non_exhaustive()
    }
}

impl Gateway {
    /// The pick-up logins of this gateway under `policy`.
    pub fn pickup(&self, policy: PickupPolicy) -> Pickup {
        Pickup {
            gateway: self.clone(),
            unseals: Semaphore::new(policy.max_concurrent_unseals.max(1)),
            trusted_unseals: Semaphore::new(1),
            guard: LoginGuard::new(
                policy.trusted_networks.clone(),
                self.store().coordination().clone(),
            ),
            policy,
            locks: Arc::default(),
            holders: Arc::default(),
            node: lease::node_name(),
        }
    }

    /// Deletes messages of an open maildrop (POP3's UPDATE) in one durable commit. Only
    /// messages listed in it: anything else is a bug in the caller and deletes nothing.
    pub async fn delete_messages(
        &self,
        maildrop: &Maildrop,
        seqs: &[u64],
    ) -> Result<Durable, ServiceError> {
        if let Some(&seq) = seqs.iter().find(|&&seq| !maildrop.listed(seq)) {
            return Err(ServiceError::MessageNotFound(maildrop.mailbox.clone(), seq));
        }
        let fence = maildrop.lease.as_ref().map(|lease| lease.lease().clone());
        self.remove_messages_fenced(&maildrop.mailbox, seqs, fence)
            .await
    }
}

impl Pickup {
    /// Checks the password and opens the maildrop. Every attempt is counted against its
    /// client as it starts (trusted clients excepted); every failure that could be a guess is
    /// answered after the failure delay, plus the mailbox's delay when it is under attack.
    pub async fn open_maildrop(
        &self,
        client: IpAddr,
        mailbox: MailboxId,
        password: MailboxPassword,
    ) -> Result<Maildrop, LoginRefused> {
        let attempt = self.admit(client).await?;
        let key = match self.unseal(&mailbox, password, attempt.is_trusted()).await {
            Ok(key) => key,
            Err(e) => {
                let refused = LoginRefused::of(&e);
                if refused == LoginRefused::Unavailable {
                    self.guard.not_checked(attempt);
                    tracing::error!(%client, error = %e, "POP3 login could not be checked");
                    return Err(refused);
                }
                tracing::info!(%client, "POP3 login failed");
                // Only existing mailboxes are counted, so made-up ids add no keys.
                let existing = refused == LoginRefused::WrongPassword;
                let mailbox = existing.then_some(&mailbox);
                return Err(self.guess_failed(attempt, mailbox, refused).await);
            }
        };
        self.guard.succeeded(attempt, &mailbox);
        let lock = match self.locks.try_lock(&mailbox) {
            Some(lock) => lock,
            None => self
                .take_over(&mailbox, client)
                .await
                .ok_or(LoginRefused::Locked)?,
        };
        let mut lease = self.take_lease(&mailbox, client).await?;
        let holder = self.holders.register(&mailbox);
        if let Some(lease) = &mut lease {
            let executor = self.gateway.executor().clone();
            lease.keep(
                executor,
                holder.holder.clone(),
                self.gateway.options.lease,
                self.policy.lock_takeover,
            );
        }
        let messages = self.gateway.list_messages(&mailbox).map_err(|e| {
            tracing::error!(error = %e, "listing the maildrop failed");
            LoginRefused::of(&e)
        })?;
        tracing::info!(%client, %mailbox, messages = messages.len(), "POP3 login");
        Ok(Maildrop {
            mailbox,
            key: Arc::new(key),
            messages,
            lease,
            _lock: lock,
            holder,
        })
    }

    /// A login that cannot succeed (no such mailbox name, a mismatched SASL identity): the
    /// same count and delay as a wrong password.
    pub async fn refuse(&self, client: IpAddr) -> LoginRefused {
        match self.admit(client).await {
            Ok(attempt) => {
                self.guess_failed(attempt, None, LoginRefused::WrongPassword)
                    .await
            }
            Err(refused) => refused,
        }
    }

    /// Opens message `seq` of the maildrop for streaming decryption. On the caller's task
    /// when that is only a store read and a little AES (a message of an epoch the key opened
    /// already); a key agreement (an X25519: the first message of an epoch, every message of
    /// format 1) runs where blocking work runs.
    ///
    /// Opening the next message ahead of its RETR on a blocking thread, as this did before
    /// epochs, cost more in thread wake-ups than the open itself once most opens needed no
    /// key agreement: a sixth of the gateway's CPU per 10 KiB message.
    pub async fn open_message(
        &self,
        maildrop: &Maildrop,
        seq: u64,
    ) -> Result<MessageReader, ServiceError> {
        let stored = self.gateway.stored_message(&maildrop.key, seq)?;
        if stored.opens_without_key_agreement(&maildrop.key) {
            return stored.open(&maildrop.key);
        }
        let key = maildrop.key.clone();
        self.gateway
            .executor()
            .run("key-agreement", move || stored.open(&key))
            .await
            .map_err(|_| ServiceError::Unavailable("opening the message"))?
    }

    /// With a shared store, the maildrop's lease for this node (this node's lock on it is
    /// held). Another node's session holding it is `[IN-USE]`; a database that cannot say
    /// is a temporary failure, never a grant.
    async fn take_lease(
        &self,
        mailbox: &MailboxId,
        client: IpAddr,
    ) -> Result<Option<MaildropLease>, LoginRefused> {
        let coordination = self.gateway.store().coordination();
        if !coordination.is_shared() {
            return Ok(None);
        }
        let policy = self.gateway.options.lease;
        let executor = self.gateway.executor();
        let taken = match MaildropLease::take(coordination, executor, &self.node, mailbox, policy)
            .await
        {
            Ok(None) if self.policy.lock_takeover.is_some() => {
                lease::ask_for_takeover(coordination, executor, &self.node, mailbox, policy).await
            }
            other => other,
        };
        match taken {
            Ok(Some(lease)) => Ok(Some(lease)),
            Ok(None) => {
                tracing::info!(%client, %mailbox, "POP3 login refused: another node holds the maildrop");
                Err(LoginRefused::Locked)
            }
            Err(e) => {
                tracing::error!(%client, %mailbox, error = %e, "the maildrop's lease could not be taken");
                Err(LoginRefused::Unavailable)
            }
        }
    }

    /// Counts an attempt from `client` as it starts and waits out its place in the client's
    /// queue, or refuses it.
    async fn admit(&self, client: IpAddr) -> Result<guard::Attempt, LoginRefused> {
        let attempt = self.guard.admit(client).map_err(|throttled| {
            tracing::warn!(%client, retry_after = ?throttled.retry_after, "POP3 login refused: too many failed logins from this client");
            self.gateway.metrics().login_throttled(LoginKind::Pop3);
            LoginRefused::Throttled
        })?;
        if !attempt.wait.is_zero() {
            tokio::time::sleep(attempt.wait).await;
        }
        Ok(attempt)
    }

    /// The maildrop is locked: if its session has waited for a command for at least
    /// `lock_takeover`, end it and take its lock. Only reached with the right password.
    async fn take_over(&self, mailbox: &MailboxId, client: IpAddr) -> Option<MaildropLock> {
        let threshold = self.policy.lock_takeover?;
        let holder = self.holders.get(mailbox)?;
        let released = holder.released();
        tokio::pin!(released);
        released.as_mut().enable();
        let idle = holder.revoke_if_idle(threshold)?;
        tracing::info!(%client, %mailbox, idle_secs = idle.as_secs(), "POP3 login takes the maildrop over from an idle session");
        // The old session ends at its next turn and releases the lock as it goes.
        if tokio::time::timeout(TAKEOVER_WAIT, released).await.is_err() {
            tracing::warn!(%mailbox, "the session taken over did not end in time");
        }
        self.locks.try_lock(mailbox)
    }

    /// A failure that could be a guess: counted against the client (and `mailbox`, if it
    /// exists), then answered after the failure delay plus the mailbox's own.
    async fn guess_failed(
        &self,
        attempt: guard::Attempt,
        mailbox: Option<&MailboxId>,
        refused: LoginRefused,
    ) -> LoginRefused {
        self.gateway.metrics().login_failed(LoginKind::Pop3);
        let extra = self.guard.failed(attempt, mailbox);
        tokio::time::sleep(self.policy.failed_login_delay + extra).await;
        refused
    }

    /// Argon2id where blocking work goes, at most `max_concurrent_unseals` at once.
    async fn unseal(
        &self,
        mailbox: &MailboxId,
        password: MailboxPassword,
        trusted: bool,
    ) -> Result<UnsealedKey, ServiceError> {
        let acquire = async {
            tokio::select! {
                permit = self.unseals.acquire() => permit,
                permit = self.trusted_unseals.acquire(), if trusted => permit,
            }
        };
        let _permit = tokio::time::timeout(UNSEAL_QUEUE_TIMEOUT, acquire)
            .await
            .map_err(|_| ServiceError::Unavailable("too many logins in progress"))?
            .map_err(|_| ServiceError::Unavailable("shutting down"))?;
        let gateway = self.gateway.clone();
        let mailbox = mailbox.clone();
        self.gateway
            .executor()
            .run("unseal", move || gateway.unseal(&mailbox, &password))
            .await
            .map_err(|_| ServiceError::Unavailable("login task failed"))?
    }
}

#[cfg(test)]
mod tests;
