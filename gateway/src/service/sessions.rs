//! Sign-in sessions of the administrator (the web console's cookie), one table for every
//! transport.
//!
//! - A session is named by a 256-bit random token, the cookie's value. The table keys it by
//!   the token's SHA-256, so neither a memory dump nor a timing difference in the lookup
//!   gives a usable token away.
//! - A session ends after [`SessionPolicy::idle`] without a request, after
//!   [`SessionPolicy::absolute`] whatever happens, and when it is signed out (removed here,
//!   so a copied cookie stops working too). Times are tokio's monotonic clock: a wall-clock
//!   jump neither ends nor extends sessions, and tests run on paused time.
//! - Sessions live in memory only: a restart signs everyone out (nothing to leak from disk).
//! - The table is bounded ([`SessionPolicy::capacity`]); when full, ended sessions go first,
//!   then the one idle longest. Only a correct password creates a session, so nobody can
//!   crowd the administrator out without it.
//! - Each session holds its CSRF token, checked in constant time ([`Session::csrf_matches`]),
//!   and whether a new password waits to be acknowledged (the first login's).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;
use zeroize::Zeroizing;

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

/// Random bytes in a session token and in a CSRF token.
const TOKEN_BYTES: usize = 32;

/// A session's token as the client holds it (base64url, 43 characters). Never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct SessionToken(Zeroizing<String>);

impl SessionToken {
    fn generate() -> Self {
        Self(Zeroizing::new(random_token()))
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

fn random_token() -> String {
    let mut bytes = Zeroizing::new([0u8; TOKEN_BYTES]);
    crate::random::fill_random(bytes.as_mut_slice());
    data_encoding::BASE64URL_NOPAD.encode(bytes.as_slice())
}

/// The table's key: SHA-256 of the token.
type Key = [u8; 32];

fn key_of(token: &str) -> Key {
    let digest = ring::digest::digest(&ring::digest::SHA256, token.as_bytes());
    let mut key = [0u8; 32];
    key.copy_from_slice(digest.as_ref());
    key
}

/// What a request learns about its session.
#[derive(Clone)]
pub struct Session {
    csrf: String,
    /// A new password was shown and not yet acknowledged: nothing else may be done.
    pub acknowledgement_pending: bool,
}

impl Session {
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
    session: Session,
    created: Instant,
    last_seen: Instant,
}

impl Entry {
    fn ended(&self, now: Instant, policy: &SessionPolicy) -> bool {
        now.saturating_duration_since(self.last_seen) >= policy.idle
            || now.saturating_duration_since(self.created) >= policy.absolute
    }
}

/// The table of sessions. Cheap operations under a short lock.
pub struct Sessions {
    policy: SessionPolicy,
    table: Mutex<HashMap<Key, Entry>>,
}

impl std::fmt::Debug for Sessions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sessions")
            .field("policy", &self.policy)
            .finish_non_exhaustive()
    }
}

impl Default for Sessions {
    fn default() -> Self {
        Self::new(DEFAULT_SESSION_POLICY)
    }
}

impl Sessions {
    pub fn new(policy: SessionPolicy) -> Self {
        Self {
            policy,
            table: Mutex::new(HashMap::new()),
        }
    }

    pub fn policy(&self) -> SessionPolicy {
        self.policy
    }

    fn table(&self) -> std::sync::MutexGuard<'_, HashMap<Key, Entry>> {
        // The table holds no invariant a panicking holder could break halfway.
        self.table.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Starts a session after a successful sign-in: always a fresh token, so a token planted
    /// before sign-in (session fixation) is never promoted. `replaces`, the token the client
    /// presented, if any, is ended.
    pub fn create(
        &self,
        replaces: Option<&str>,
        acknowledgement_pending: bool,
    ) -> (SessionToken, Session) {
        let token = SessionToken::generate();
        let session = Session {
            csrf: random_token(),
            acknowledgement_pending,
        };
        let now = Instant::now();
        let mut table = self.table();
        if let Some(old) = replaces {
            table.remove(&key_of(old));
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
            key_of(token.reveal()),
            Entry {
                session: session.clone(),
                created: now,
                last_seen: now,
            },
        );
        (token, session)
    }

    /// The live session named by `token`, marked as used now; `None` when there is none or
    /// it has ended (it is then removed).
    pub fn get(&self, token: &str) -> Option<Session> {
        let key = key_of(token);
        let now = Instant::now();
        let mut table = self.table();
        let entry = table.get_mut(&key)?;
        if entry.ended(now, &self.policy) {
            table.remove(&key);
            return None;
        }
        entry.last_seen = now;
        Some(entry.session.clone())
    }

    /// Records that the new password was acknowledged; false when the session is gone.
    pub fn acknowledge(&self, token: &str) -> bool {
        self.set_pending(token, false)
    }

    /// A new password was shown: nothing else may be done until it is acknowledged.
    pub fn await_acknowledgement(&self, token: &str) -> bool {
        self.set_pending(token, true)
    }

    fn set_pending(&self, token: &str, pending: bool) -> bool {
        let mut table = self.table();
        match table.get_mut(&key_of(token)) {
            Some(entry) => {
                entry.session.acknowledgement_pending = pending;
                true
            }
            None => false,
        }
    }

    /// Signs out: the session ends on the server, whoever holds a copy of its token.
    pub fn remove(&self, token: &str) {
        self.table().remove(&key_of(token));
    }

    /// Ends every session but `keep` (after a password change, other sign-ins made with
    /// the old password end).
    pub fn remove_others(&self, keep: &str) {
        let keep = key_of(keep);
        self.table().retain(|key, _| *key == keep);
    }

    /// Sessions in the table (ended ones not yet swept included).
    pub fn len(&self) -> usize {
        self.table().len()
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
        let (token, session) = sessions.create(None, false);
        assert_eq!(token.reveal().len(), 43, "256 bits in base64url");
        let found = sessions.get(token.reveal()).expect("live session");
        assert!(found.csrf_matches(session.csrf()));
        assert!(sessions.get("").is_none());
        assert!(sessions.get(&token.reveal()[1..]).is_none());
        assert!(!format!("{token:?}{found:?}").contains(token.reveal()));
        assert!(!format!("{found:?}").contains(session.csrf()));
    }

    #[tokio::test(start_paused = true)]
    async fn every_sign_in_gets_a_fresh_token_and_the_presented_one_ends() {
        let sessions = Sessions::default();
        let (first, _) = sessions.create(None, false);
        let (second, _) = sessions.create(Some(first.reveal()), false);
        assert_ne!(first, second);
        assert!(sessions.get(first.reveal()).is_none());
        assert!(sessions.get(second.reveal()).is_some());
        // A token the client made up is never adopted.
        let (third, _) = sessions.create(Some("planted-by-someone-else"), false);
        assert_ne!(third.reveal(), "planted-by-someone-else");
    }

    #[tokio::test(start_paused = true)]
    async fn a_session_ends_after_30_idle_minutes_and_requests_keep_it_alive() {
        let sessions = Sessions::default();
        let (token, _) = sessions.create(None, false);
        for _ in 0..5 {
            tokio::time::advance(Duration::from_secs(29 * 60)).await;
            assert!(sessions.get(token.reveal()).is_some());
        }
        tokio::time::advance(Duration::from_secs(30 * 60)).await;
        assert!(sessions.get(token.reveal()).is_none());
        assert!(sessions.is_empty(), "an ended session is removed");
    }

    #[tokio::test(start_paused = true)]
    async fn a_busy_session_still_ends_after_12_hours() {
        let sessions = Sessions::default();
        let (token, _) = sessions.create(None, false);
        let mut elapsed = Duration::ZERO;
        while elapsed < Duration::from_secs(12 * 60 * 60 - 600) {
            tokio::time::advance(Duration::from_secs(600)).await;
            elapsed += Duration::from_secs(600);
            assert!(sessions.get(token.reveal()).is_some(), "{elapsed:?}");
        }
        tokio::time::advance(Duration::from_secs(600)).await;
        assert!(sessions.get(token.reveal()).is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn sign_out_ends_the_session_on_the_server() {
        let sessions = Sessions::default();
        let (token, _) = sessions.create(None, false);
        let (other, _) = sessions.create(None, false);
        sessions.remove(token.reveal());
        assert!(sessions.get(token.reveal()).is_none());
        assert!(sessions.get(other.reveal()).is_some());
        sessions.remove_others(other.reveal());
        assert!(sessions.get(other.reveal()).is_some());
        assert_eq!(sessions.len(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn the_table_is_bounded_and_evicts_the_session_idle_longest() {
        let sessions = small(3);
        let tokens: Vec<SessionToken> = (0..3)
            .map(|_| {
                let (token, _) = sessions.create(None, false);
                token
            })
            .collect();
        tokio::time::advance(Duration::from_secs(1)).await;
        // The first two are used; the third is idle longest.
        sessions.get(tokens[0].reveal()).unwrap();
        sessions.get(tokens[1].reveal()).unwrap();
        let (newest, _) = sessions.create(None, false);
        assert_eq!(sessions.len(), 3);
        assert!(sessions.get(tokens[2].reveal()).is_none());
        for token in [&tokens[0], &tokens[1], &newest] {
            assert!(sessions.get(token.reveal()).is_some());
        }
    }

    #[tokio::test(start_paused = true)]
    async fn csrf_tokens_differ_per_session_and_must_match_exactly() {
        let sessions = Sessions::default();
        let (_, a) = sessions.create(None, false);
        let (_, b) = sessions.create(None, false);
        assert_ne!(a.csrf(), b.csrf());
        assert!(a.csrf_matches(a.csrf()));
        for wrong in ["", b.csrf(), &a.csrf()[1..], &format!("{}x", a.csrf())] {
            assert!(!a.csrf_matches(wrong), "{wrong:?}");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn an_acknowledged_password_clears_the_pending_flag() {
        let sessions = Sessions::default();
        let (token, session) = sessions.create(None, true);
        assert!(session.acknowledgement_pending);
        assert!(
            sessions
                .get(token.reveal())
                .unwrap()
                .acknowledgement_pending
        );
        assert!(sessions.acknowledge(token.reveal()));
        assert!(
            !sessions
                .get(token.reveal())
                .unwrap()
                .acknowledgement_pending
        );
        sessions.remove(token.reveal());
        assert!(!sessions.acknowledge(token.reveal()));
    }
}
