//! What several gateway nodes on one database must agree on besides the data: who holds a
//! POP3 maildrop (a lease), how many logins failed recently (shared throttle counts), the
//! settings every node follows (the email domain, the certificate), which node runs a job
//! only one may run at a time (ordering the certificate), and the administrator's console
//! sessions (signed in through one node, valid on every node, signed out on all at once).
//!
//! The service calls it through [`Coordination`], whatever the backend. With the embedded
//! store ([`Local`]) one node is the whole truth: the in-process maildrop lock decides and
//! the in-memory throttles count, so leases are always granted and nothing is shared. With
//! PostgreSQL (`postgres::PgCoordination`) each call is one autocommit statement on a read
//! connection, timed by the database's clock, never a node's.

use std::sync::Arc;
use std::time::Duration;

use crate::exec::Executor;
use crate::mailbox::MailboxId;

use super::StoreError;

/// One session's claim on a maildrop: the node that took it and a token that is new at
/// every grant, so a later session (of any node) is told apart from this one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    pub mailbox: MailboxId,
    /// This node: random per start, with the host name for people reading the table.
    pub node: Arc<str>,
    pub token: i64,
}

/// Recent failures of a throttle key across every node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SharedFailures {
    pub attempts: u32,
    /// Since the last of them.
    pub since_last: Duration,
}

/// A console session's key in the shared table: SHA-256 of its token, never the token.
pub type SessionKey = [u8; 32];

/// How long shared console sessions live (the service's `SessionPolicy`, in the store's
/// terms).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionLimits {
    /// A session not seen for this long has ended.
    pub idle: Duration,
    /// A session ends this long after it was created, however busy.
    pub absolute: Duration,
    /// Sessions kept at most: creating one prunes ended ones and then the idlest.
    pub capacity: usize,
    /// A lookup records the session as seen only when it was last recorded longer ago than
    /// this, so a busy console does not write a row at every request.
    pub touch_after: Duration,
}

/// Leases, shared failure counts, settings and sessions (see the module docs).
pub trait Coordination: Send + Sync {
    /// Whether other nodes may share this store (else every method is a no-op).
    fn is_shared(&self) -> bool;

    /// Takes the maildrop for `ttl` if no lease holds it, its lease expired, or it is this
    /// node's own (left over: the node's in-process lock already decided it is free).
    /// False: another node holds it.
    fn take_lease(&self, lease: &Lease, ttl: Duration) -> Result<bool, StoreError>;

    /// Extends a lease to `ttl` from now; false when it is no longer this lease (another
    /// session took it after it expired).
    fn renew_lease(&self, lease: &Lease, ttl: Duration) -> Result<bool, StoreError>;

    /// Gives a lease up (if it is still this one).
    fn release_lease(&self, lease: &Lease) -> Result<(), StoreError>;

    /// The failures counted for `key` in `scope` since it was last quiet for `forget_after`;
    /// `None` when there are none.
    fn failures(
        &self,
        scope: &str,
        key: &str,
        forget_after: Duration,
    ) -> Result<Option<SharedFailures>, StoreError>;

    /// Counts one more failure for `key` in `scope` (starting afresh after `forget_after`
    /// of quiet); the count now.
    fn record_failure(
        &self,
        scope: &str,
        key: &str,
        forget_after: Duration,
    ) -> Result<u32, StoreError>;

    /// Forgets the failures of `key` in `scope` (its owner proved the secret).
    fn clear_failures(&self, scope: &str, key: &str) -> Result<(), StoreError>;

    /// A setting every node follows, as last published; `None` when none was (always for
    /// one node, whose configuration file is the whole truth).
    fn shared_setting(&self, name: &str) -> Result<Option<String>, StoreError>;

    /// Publishes a setting for every node (they pick it up within
    /// [`SETTINGS_FOLLOW_EVERY`]).
    fn publish_setting(&self, name: &str, value: &str) -> Result<(), StoreError>;

    /// Withdraws a published setting (an ACME challenge answer once its order ended).
    fn withdraw_setting(&self, name: &str) -> Result<(), StoreError>;

    /// Takes `task` (a job one node at a time may run, such as ordering the shared
    /// certificate) for `ttl`, unless another node holds it and its time has not run out.
    /// True: `node` holds it now (again, if it held it already).
    fn take_task(&self, task: &str, node: &str, ttl: Duration) -> Result<bool, StoreError>;

    /// Gives `task` up (if `node` still holds it).
    fn release_task(&self, task: &str, node: &str) -> Result<(), StoreError>;

    /// Creates a console session (`key`, its acknowledgement flag), ending `replaces` and
    /// making room within `limits.capacity` (ended sessions first, then the idlest).
    fn create_session(
        &self,
        key: &SessionKey,
        replaces: Option<&SessionKey>,
        acknowledgement_pending: bool,
        limits: &SessionLimits,
    ) -> Result<(), StoreError>;

    /// The live session `key`'s acknowledgement flag, recording it as seen (see
    /// [`SessionLimits::touch_after`]); `None` when there is none or it has ended.
    fn session(&self, key: &SessionKey, limits: &SessionLimits)
        -> Result<Option<bool>, StoreError>;

    /// Sets session `key`'s acknowledgement flag; false when there is no such session.
    fn set_session_pending(&self, key: &SessionKey, pending: bool) -> Result<bool, StoreError>;

    /// Ends session `key` (signed out).
    fn remove_session(&self, key: &SessionKey) -> Result<(), StoreError>;

    /// Ends every session but `keep`.
    fn remove_other_sessions(&self, keep: &SessionKey) -> Result<(), StoreError>;
}

/// Runs one call of `coordination` on `executor`, off the async workers (a PostgreSQL call
/// parks its thread until the server answers). An executor that is gone (shutting down) is
/// an `Io` error named by `label`.
pub async fn run_on<T: Send + 'static>(
    coordination: &Arc<dyn Coordination>,
    executor: &Executor,
    label: &'static str,
    call: impl FnOnce(&dyn Coordination) -> Result<T, StoreError> + Send + 'static,
) -> Result<T, StoreError> {
    let shared = coordination.clone();
    executor
        .run(label, move || call(shared.as_ref()))
        .await
        .map_err(|_| StoreError::Io(format!("the {label} task was lost")))?
}

/// How often a node of a shared store looks for settings another node published.
pub const SETTINGS_FOLLOW_EVERY: Duration = Duration::from_secs(2);

/// The shared setting holding the email domain.
pub const EMAIL_DOMAIN_SETTING: &str = "email_domain";

/// The shared setting holding the fingerprint of the nodes' proxy retrieval key.
pub const RETRIEVAL_KEY_SETTING: &str = "retrieval_key_fingerprint";

/// One node alone: the in-process lock, throttles and session table are the whole truth
/// (the service never asks it for sessions; it holds none).
#[derive(Debug, Default)]
pub struct Local;

impl Coordination for Local {
    fn is_shared(&self) -> bool {
        false
    }

    fn take_lease(&self, _: &Lease, _: Duration) -> Result<bool, StoreError> {
        Ok(true)
    }

    fn renew_lease(&self, _: &Lease, _: Duration) -> Result<bool, StoreError> {
        Ok(true)
    }

    fn release_lease(&self, _: &Lease) -> Result<(), StoreError> {
        Ok(())
    }

    fn failures(
        &self,
        _: &str,
        _: &str,
        _: Duration,
    ) -> Result<Option<SharedFailures>, StoreError> {
        Ok(None)
    }

    fn record_failure(&self, _: &str, _: &str, _: Duration) -> Result<u32, StoreError> {
        Ok(0)
    }

    fn clear_failures(&self, _: &str, _: &str) -> Result<(), StoreError> {
        Ok(())
    }

    fn shared_setting(&self, _: &str) -> Result<Option<String>, StoreError> {
        Ok(None)
    }

    fn publish_setting(&self, _: &str, _: &str) -> Result<(), StoreError> {
        Ok(())
    }

    fn withdraw_setting(&self, _: &str) -> Result<(), StoreError> {
        Ok(())
    }

    fn take_task(&self, _: &str, _: &str, _: Duration) -> Result<bool, StoreError> {
        Ok(true)
    }

    fn release_task(&self, _: &str, _: &str) -> Result<(), StoreError> {
        Ok(())
    }

    fn create_session(
        &self,
        _: &SessionKey,
        _: Option<&SessionKey>,
        _: bool,
        _: &SessionLimits,
    ) -> Result<(), StoreError> {
        Ok(())
    }

    fn session(&self, _: &SessionKey, _: &SessionLimits) -> Result<Option<bool>, StoreError> {
        Ok(None)
    }

    fn set_session_pending(&self, _: &SessionKey, _: bool) -> Result<bool, StoreError> {
        Ok(false)
    }

    fn remove_session(&self, _: &SessionKey) -> Result<(), StoreError> {
        Ok(())
    }

    fn remove_other_sessions(&self, _: &SessionKey) -> Result<(), StoreError> {
        Ok(())
    }
}
