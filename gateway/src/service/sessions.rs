//! Sign-in sessions of the administrator (the web console's cookie), one table for every
//! transport.
//!
//! - A session is named by a 256-bit random token, the cookie's value. The table keys it by
//!   the token's SHA-256, so neither a memory dump (nor a read of the database) nor a timing
//!   difference in the lookup gives a usable token away.
//! - A session ends after [`SessionPolicy::idle`] without a request, after
//!   [`SessionPolicy::absolute`] whatever happens, and when it is signed out (removed here,
//!   so a copied cookie stops working too).
//! - The table is bounded ([`SessionPolicy::capacity`]); when full, ended sessions go first,
//!   then the one idle longest. Only a correct password creates a session, so nobody can
//!   crowd the administrator out without it.
//! - Each session has a CSRF token, HMAC-SHA256 of a fixed label keyed by the session token
//!   (so every node knows it and nothing more is kept; the page that shows it gives the
//!   token away no more than a hash would), checked in constant time
//!   ([`Session::csrf_matches`]), and whether a new password waits to be acknowledged (the
//!   first login's).
//!
//! Where the table lives depends on the store:
//! - One node (redb): in memory only, so a restart signs everyone out (nothing to leak from
//!   disk). Times are tokio's monotonic clock: a wall-clock jump neither ends nor extends
//!   sessions, and tests run on paused time.
//! - A store other nodes share (PostgreSQL): in the database (`Coordination`'s sessions),
//!   so a cookie one node issued works on every node and signing out anywhere ends it
//!   everywhere. Times are the database's. A lookup writes the session's last use only when
//!   the recorded one is older than [`TOUCH_AFTER`] (at most one write per session every
//!   few seconds, whatever the console does; an idle end then comes up to that much early).
//!   Each call runs on the store's executor, never on an async worker.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::time::Instant;
use zeroize::Zeroizing;

use super::ServiceError;
use crate::exec::Executor;
use crate::store::coordination::run_on;
use crate::store::{Coordination, SessionKey, SessionLimits, StoreError};

/// How long sessions live and how many there may be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionPolicy {
    /// A session with no request for this long has ended.
    pub idle: Duration,
    /// A session ends this long after sign-in, however busy.
    pub absolute: Duration,
    /// Sessions the table holds at most.
    pub capacity: usize,
}

/// 30 minutes idle, 12 hours at most, 1000 sessions.
pub const DEFAULT_SESSION_POLICY: SessionPolicy = SessionPolicy {
    idle: Duration::from_secs(30 * 60),
    absolute: Duration::from_secs(12 * 60 * 60),
    capacity: 1000,
};

/// A shared session's last use is written again only once the recorded one is older than
/// this (or a tenth of the idle time, if shorter).
pub const TOUCH_AFTER: Duration = Duration::from_secs(5);

/// Random bytes in a session token.
const TOKEN_BYTES: usize = 32;

/// What the CSRF token is the HMAC of, keyed by the session token.
const CSRF_LABEL: &[u8] = b"gateway console CSRF token v1";

/// A session's token as the client holds it (base64url, 43 characters). Never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct SessionToken(Zeroizing<String>);

impl SessionToken {
    fn generate() -> Self {
        let mut bytes = Zeroizing::new([0u8; TOKEN_BYTES]);
        crate::random::fill_random(bytes.as_mut_slice());
        Self(Zeroizing::new(
            data_encoding::BASE64URL_NOPAD.encode(bytes.as_slice()),
        ))
    }

    /// The value for the cookie.
    pub fn reveal(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for SessionToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SessionToken(<redacted>)")
    }
}

/// The table's key: SHA-256 of the token.
fn key_of(token: &str) -> SessionKey {
    let digest = ring::digest::digest(&ring::digest::SHA256, token.as_bytes());
    let mut key = [0u8; 32];
    key.copy_from_slice(digest.as_ref());
    key
}

/// The CSRF token of the session named by `token` (base64url, 43 characters).
fn csrf_of(token: &str) -> String {
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, token.as_bytes());
    data_encoding::BASE64URL_NOPAD.encode(ring::hmac::sign(&key, CSRF_LABEL).as_ref())
}

/// What a request learns about its session.
#[derive(Clone)]
pub struct Session {
    csrf: String,
    /// A new password was shown and not yet acknowledged: nothing else may be done.
    pub acknowledgement_pending: bool,
}

impl Session {
    fn of(token: &str, acknowledgement_pending: bool) -> Self {
        Self {
            csrf: csrf_of(token),
            acknowledgement_pending,
        }
    }

    /// The CSRF token, for the hidden `csrf` field of every form.
    pub fn csrf(&self) -> &str {
        &self.csrf
    }

    /// Whether `presented` is this session's CSRF token, in constant time.
    pub fn csrf_matches(&self, presented: &str) -> bool {
        use subtle::ConstantTimeEq as _;
        let (a, b) = (self.csrf.as_bytes(), presented.as_bytes());
        a.len() == b.len() && bool::from(a.ct_eq(b))
    }
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("acknowledgement_pending", &self.acknowledgement_pending)
            .finish_non_exhaustive()
    }
}

struct Entry {
    acknowledgement_pending: bool,
    created: Instant,
    last_seen: Instant,
}

impl Entry {
    fn ended(&self, now: Instant, policy: &SessionPolicy) -> bool {
        now.saturating_duration_since(self.last_seen) >= policy.idle
            || now.saturating_duration_since(self.created) >= policy.absolute
    }
}

/// Where the sessions are (see the module docs).
enum Table {
    /// One node: cheap operations under a short lock.
    Memory(Mutex<HashMap<SessionKey, Entry>>),
    /// Nodes sharing a store: the database, called on the store's executor.
    Shared {
        coordination: Arc<dyn Coordination>,
        executor: Executor,
    },
}

/// The shared table's way in.
type Shared<'a> = (&'a Arc<dyn Coordination>, &'a Executor);

/// Locks a table in memory.
fn lock(table: &Mutex<HashMap<SessionKey, Entry>>) -> MutexGuard<'_, HashMap<SessionKey, Entry>> {
    // The table holds no invariant a panicking holder could break halfway.
    table.lock().unwrap_or_else(|e| e.into_inner())
}

/// The administrator's sessions.
pub struct Sessions {
    policy: SessionPolicy,
    table: Table,
}

impl std::fmt::Debug for Sessions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sessions")
            .field("policy", &self.policy)
            .field("shared", &matches!(self.table, Table::Shared { .. }))
            .finish_non_exhaustive()
    }
}

impl Default for Sessions {
    fn default() -> Self {
        Self::new(DEFAULT_SESSION_POLICY)
    }
}

impl Sessions {
    /// Sessions in this node's memory.
    pub fn new(policy: SessionPolicy) -> Self {
        Self {
            policy,
            table: Table::Memory(Mutex::new(HashMap::new())),
        }
    }

    /// Sessions in memory, or in the database when `coordination` is shared with other
    /// nodes (its calls then run on `executor`).
    pub fn for_store(
        policy: SessionPolicy,
        coordination: &Arc<dyn Coordination>,
        executor: &Executor,
    ) -> Self {
        if !coordination.is_shared() {
            return Self::new(policy);
        }
        Self {
            policy,
            table: Table::Shared {
                coordination: coordination.clone(),
                executor: executor.clone(),
            },
        }
    }

    pub fn policy(&self) -> SessionPolicy {
        self.policy
    }

    fn limits(&self) -> SessionLimits {
        SessionLimits {
            idle: self.policy.idle,
            absolute: self.policy.absolute,
            capacity: self.policy.capacity,
            touch_after: TOUCH_AFTER.min(self.policy.idle / 10),
        }
    }

    /// Runs `call` against the shared table on `executor`, off the async workers (a
    /// PostgreSQL call parks its thread until the server answers).
    async fn shared<T: Send + 'static>(
        &self,
        (coordination, executor): Shared<'_>,
        what: &'static str,
        call: impl FnOnce(&dyn Coordination, &SessionLimits) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, ServiceError> {
        let limits = self.limits();
        let result = run_on(coordination, executor, what, move |table| {
            call(table, &limits)
        })
        .await
        .map_err(ServiceError::Store);
        if let Err(e) = &result {
            // The error names the statement's failure, never a token or its key.
            tracing::warn!(error = %e, operation = what, "console sessions in the database unavailable");
        }
        result
    }

    /// The table when it is in memory; else the shared one's coordination and executor.
    fn table(&self) -> Result<&Mutex<HashMap<SessionKey, Entry>>, Shared<'_>> {
        match &self.table {
            Table::Memory(table) => Ok(table),
            Table::Shared {
                coordination,
                executor,
            } => Err((coordination, executor)),
        }
    }

    /// Starts a session after a successful sign-in: always a fresh token, so a token planted
    /// before sign-in (session fixation) is never promoted. `replaces`, the token the client
    /// presented, if any, is ended.
    pub async fn create(
        &self,
        replaces: Option<&str>,
        acknowledgement_pending: bool,
    ) -> Result<(SessionToken, Session), ServiceError> {
        let token = SessionToken::generate();
        let session = Session::of(token.reveal(), acknowledgement_pending);
        let key = key_of(token.reveal());
        let replaces = replaces.map(key_of);
        let mut table = match self.table() {
            Ok(table) => lock(table),
            Err(shared) => {
                self.shared(shared, "console-session-create", move |table, limits| {
                    table.create_session(&key, replaces.as_ref(), acknowledgement_pending, limits)
                })
                .await?;
                return Ok((token, session));
            }
        };
        let now = Instant::now();
        if let Some(old) = replaces {
            table.remove(&old);
        }
        if table.len() >= self.policy.capacity {
            table.retain(|_, entry| !entry.ended(now, &self.policy));
        }
        while table.len() >= self.policy.capacity.max(1) {
            let Some(idlest) = table
                .iter()
                .min_by_key(|(_, entry)| entry.last_seen)
                .map(|(key, _)| *key)
            else {
                break;
            };
            table.remove(&idlest);
        }
        table.insert(
            key,
            Entry {
                acknowledgement_pending,
                created: now,
                last_seen: now,
            },
        );
        Ok((token, session))
    }

    /// The live session named by `token`, marked as used now; `None` when there is none or
    /// it has ended (it is then removed). An error: the shared table could not be asked,
    /// so the caller must not let the request in.
    pub async fn get(&self, token: &str) -> Result<Option<Session>, ServiceError> {
        let key = key_of(token);
        let mut table = match self.table() {
            Ok(table) => lock(table),
            Err(shared) => {
                let found = self
                    .shared(shared, "console-session-get", move |table, limits| {
                        table.session(&key, limits)
                    })
                    .await?;
                return Ok(found.map(|pending| Session::of(token, pending)));
            }
        };
        let now = Instant::now();
        let Some(entry) = table.get_mut(&key) else {
            return Ok(None);
        };
        if entry.ended(now, &self.policy) {
            table.remove(&key);
            return Ok(None);
        }
        entry.last_seen = now;
        Ok(Some(Session::of(token, entry.acknowledgement_pending)))
    }

    /// Records that the new password was acknowledged; false when the session is gone.
    pub async fn acknowledge(&self, token: &str) -> Result<bool, ServiceError> {
        self.set_pending(token, false).await
    }

    /// A new password was shown: nothing else may be done until it is acknowledged.
    pub async fn await_acknowledgement(&self, token: &str) -> Result<bool, ServiceError> {
        self.set_pending(token, true).await
    }

    async fn set_pending(&self, token: &str, pending: bool) -> Result<bool, ServiceError> {
        let key = key_of(token);
        let mut table = match self.table() {
            Ok(table) => lock(table),
            Err(shared) => {
                return self
                    .shared(shared, "console-session-pending", move |table, _| {
                        table.set_session_pending(&key, pending)
                    })
                    .await
            }
        };
        Ok(match table.get_mut(&key) {
            Some(entry) => {
                entry.acknowledgement_pending = pending;
                true
            }
            None => false,
        })
    }

    /// Signs out: the session ends on the server, whoever holds a copy of its token.
    pub async fn remove(&self, token: &str) -> Result<(), ServiceError> {
        let key = key_of(token);
        match self.table() {
            Ok(table) => {
                lock(table).remove(&key);
                Ok(())
            }
            Err(shared) => {
                self.shared(shared, "console-session-remove", move |table, _| {
                    table.remove_session(&key)
                })
                .await
            }
        }
    }

    /// Ends every session but `keep` (after a password change, other sign-ins made with
    /// the old password end).
    pub async fn remove_others(&self, keep: &str) -> Result<(), ServiceError> {
        let keep = key_of(keep);
        match self.table() {
            Ok(table) => {
                lock(table).retain(|key, _| *key == keep);
                Ok(())
            }
            Err(shared) => {
                self.shared(shared, "console-session-remove-others", move |table, _| {
                    table.remove_other_sessions(&keep)
                })
                .await
            }
        }
    }

    /// Sessions in this node's memory (ended ones not yet swept included); 0 for a shared
    /// table, which the database counts.
    pub fn len(&self) -> usize {
        self.table().map_or(0, |table| lock(table).len())
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn small(capacity: usize) -> Sessions {
        Sessions::new(SessionPolicy {
            capacity,
            ..DEFAULT_SESSION_POLICY
        })
    }

    #[tokio::test(start_paused = true)]
    async fn a_session_is_found_by_its_token_only() {
        let sessions = Sessions::default();
        let (token, session) = sessions.create(None, false).await.unwrap();
        assert_eq!(token.reveal().len(), 43, "256 bits in base64url");
        let found = sessions
            .get(token.reveal())
            .await
            .unwrap()
            .expect("live session");
        assert!(found.csrf_matches(session.csrf()));
        assert!(sessions.get("").await.unwrap().is_none());
        assert!(sessions.get(&token.reveal()[1..]).await.unwrap().is_none());
        assert!(!format!("{token:?}{found:?}").contains(token.reveal()));
        assert!(!format!("{found:?}").contains(session.csrf()));
        // Any node derives the same CSRF token from the cookie, and it is not the cookie.
        assert_eq!(found.csrf(), session.csrf());
        assert_ne!(found.csrf(), token.reveal());
    }

    #[tokio::test(start_paused = true)]
    async fn every_sign_in_gets_a_fresh_token_and_the_presented_one_ends() {
        let sessions = Sessions::default();
        let (first, _) = sessions.create(None, false).await.unwrap();
        let (second, _) = sessions.create(Some(first.reveal()), false).await.unwrap();
        assert_ne!(first, second);
        assert!(sessions.get(first.reveal()).await.unwrap().is_none());
        assert!(sessions.get(second.reveal()).await.unwrap().is_some());
        // A token the client made up is never adopted.
        let (third, _) = sessions
            .create(Some("planted-by-someone-else"), false)
            .await
            .unwrap();
        assert_ne!(third.reveal(), "planted-by-someone-else");
    }

    #[tokio::test(start_paused = true)]
    async fn a_session_ends_after_30_idle_minutes_and_requests_keep_it_alive() {
        let sessions = Sessions::default();
        let (token, _) = sessions.create(None, false).await.unwrap();
        for _ in 0..5 {
            tokio::time::advance(Duration::from_secs(29 * 60)).await;
            assert!(sessions.get(token.reveal()).await.unwrap().is_some());
        }
        tokio::time::advance(Duration::from_secs(30 * 60)).await;
        assert!(sessions.get(token.reveal()).await.unwrap().is_none());
        assert!(sessions.is_empty(), "an ended session is removed");
    }

    #[tokio::test(start_paused = true)]
    async fn a_busy_session_still_ends_after_12_hours() {
        let sessions = Sessions::default();
        let (token, _) = sessions.create(None, false).await.unwrap();
        let mut elapsed = Duration::ZERO;
        while elapsed < Duration::from_secs(12 * 60 * 60 - 600) {
            tokio::time::advance(Duration::from_secs(600)).await;
            elapsed += Duration::from_secs(600);
            assert!(
                sessions.get(token.reveal()).await.unwrap().is_some(),
                "{elapsed:?}"
            );
        }
        tokio::time::advance(Duration::from_secs(600)).await;
        assert!(sessions.get(token.reveal()).await.unwrap().is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn sign_out_ends_the_session_on_the_server() {
        let sessions = Sessions::default();
        let (token, _) = sessions.create(None, false).await.unwrap();
        let (other, _) = sessions.create(None, false).await.unwrap();
        sessions.remove(token.reveal()).await.unwrap();
        assert!(sessions.get(token.reveal()).await.unwrap().is_none());
        assert!(sessions.get(other.reveal()).await.unwrap().is_some());
        sessions.remove_others(other.reveal()).await.unwrap();
        assert!(sessions.get(other.reveal()).await.unwrap().is_some());
        assert_eq!(sessions.len(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn the_table_is_bounded_and_evicts_the_session_idle_longest() {
        let sessions = small(3);
        let mut tokens = Vec::new();
        for _ in 0..3 {
            tokens.push(sessions.create(None, false).await.unwrap().0);
        }
        tokio::time::advance(Duration::from_secs(1)).await;
        // The first two are used; the third is idle longest.
        sessions.get(tokens[0].reveal()).await.unwrap().unwrap();
        sessions.get(tokens[1].reveal()).await.unwrap().unwrap();
        let (newest, _) = sessions.create(None, false).await.unwrap();
        assert_eq!(sessions.len(), 3);
        assert!(sessions.get(tokens[2].reveal()).await.unwrap().is_none());
        for token in [&tokens[0], &tokens[1], &newest] {
            assert!(sessions.get(token.reveal()).await.unwrap().is_some());
        }
    }

    #[tokio::test(start_paused = true)]
    async fn csrf_tokens_differ_per_session_and_must_match_exactly() {
        let sessions = Sessions::default();
        let (_, a) = sessions.create(None, false).await.unwrap();
        let (_, b) = sessions.create(None, false).await.unwrap();
        assert_ne!(a.csrf(), b.csrf());
        assert_eq!(a.csrf().len(), 43, "256 bits in base64url");
        assert!(a.csrf_matches(a.csrf()));
        for wrong in ["", b.csrf(), &a.csrf()[1..], &format!("{}x", a.csrf())] {
            assert!(!a.csrf_matches(wrong), "{wrong:?}");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn an_acknowledged_password_clears_the_pending_flag() {
        let sessions = Sessions::default();
        let (token, session) = sessions.create(None, true).await.unwrap();
        assert!(session.acknowledgement_pending);
        assert!(
            sessions
                .get(token.reveal())
                .await
                .unwrap()
                .unwrap()
                .acknowledgement_pending
        );
        assert!(sessions.acknowledge(token.reveal()).await.unwrap());
        assert!(
            !sessions
                .get(token.reveal())
                .await
                .unwrap()
                .unwrap()
                .acknowledgement_pending
        );
        sessions.remove(token.reveal()).await.unwrap();
        assert!(!sessions.acknowledge(token.reveal()).await.unwrap());
    }
}
