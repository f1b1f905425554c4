//! The one login throttle, shared by POP3 pick-up and both proxies.
//!
//! A [`Throttle`] keeps, per key (a client, a mailbox, a remote account), how many attempts
//! were made recently and when the next one may start. Attempts are counted when they
//! *start* ([`Throttle::begin`]), so a client opening many connections at once gets its
//! attempts queued one after the other instead of all running before the first failure is
//! known; a success gives the attempt back ([`Throttle::forgive`]) or clears the key
//! ([`Throttle::clear`]). A few attempts are free, then each waits twice as long as the one
//! before, up to a cap; a key left alone long enough is forgotten.
//!
//! Clients are keyed by [`ClientKey`]: an IPv4 address, or the /64 network of an IPv6
//! address (one subscriber usually holds a whole /64, so counting single IPv6 addresses
//! would give an attacker 2^64 fresh starts).
//!
//! Memory stays bounded: a table holds at most its capacity of keys; when it is full,
//! forgotten keys go first, then the least restricted half (an attacker with that many
//! addresses can reset some of its own waits that way, but no more: the per-mailbox and
//! per-account keys and the bounded number of password checks still apply).

use std::collections::HashMap;
use std::hash::Hash;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

use crate::mailbox::MailboxId;
use crate::store::{Coordination, SharedFailures};

/// Keys a table holds before it evicts; about 100 bytes each.
pub const DEFAULT_CAPACITY: usize = 100_000;

/// Who is attempting: an IPv4 address or an IPv6 /64 (IPv4-mapped IPv6 counts as IPv4).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ClientKey {
    V4(u32),
    V6Net(u64),
}

impl From<IpAddr> for ClientKey {
    fn from(ip: IpAddr) -> Self {
        match ip.to_canonical() {
            IpAddr::V4(v4) => ClientKey::V4(u32::from(v4)),
            IpAddr::V6(v6) => ClientKey::V6Net((u128::from(v6) >> 64) as u64),
        }
    }
}

/// How attempts for one kind of key are paced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    /// Attempts that need no wait (typing mistakes, a client retrying once).
    pub free_attempts: u32,
    /// The wait after the first attempt beyond the free ones; doubles with each attempt.
    pub base: Duration,
    /// The longest wait between two attempts.
    pub max: Duration,
    /// An attempt that would have to wait longer than this is refused rather than held
    /// (holding costs a connection slot). Zero refuses every attempt that would wait.
    pub max_queue: Duration,
    /// A key with no attempt due for this long starts afresh.
    pub forget_after: Duration,
}

impl Policy {
    /// The wait that follows the `attempts`-th attempt.
    pub fn wait_after(&self, attempts: u32) -> Duration {
        if attempts < self.free_attempts {
            return Duration::ZERO;
        }
        let doublings = (attempts - self.free_attempts).min(31);
        self.base
            .checked_mul(1u32 << doublings)
            .unwrap_or(self.max)
            .min(self.max)
    }
}

/// An attempt that may not start now; the client should come back after `retry_after`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("too many attempts; retry in {retry_after:?}")]
pub struct Throttled {
    pub retry_after: Duration,
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    attempts: u32,
    /// The earliest start of the next attempt.
    next: Instant,
}

/// Attempt counts and schedules per key, bounded in size. Uses tokio's clock, so tests and
/// the simulation run it on virtual time.
#[derive(Debug)]
pub struct Throttle<K> {
    policy: Policy,
    capacity: usize,
    entries: Mutex<HashMap<K, Entry>>,
}

impl<K: Clone + Eq + Hash> Throttle<K> {
    pub fn new(policy: Policy) -> Self {
        Self::with_capacity(policy, DEFAULT_CAPACITY)
    }

    pub fn with_capacity(policy: Policy, capacity: usize) -> Self {
        Self {
            policy,
            capacity: capacity.max(2),
            entries: Mutex::new(HashMap::new()),
        }
    }

    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    /// Counts an attempt now and says how long it must wait before it runs, or refuses it
    /// (without counting it) when that wait would exceed the policy's `max_queue`.
    pub fn begin(&self, key: &K) -> Result<Duration, Throttled> {
        self.begin_with(key, None)
    }

    /// [`Throttle::begin`] counting at least the failures other nodes saw (`shared`): the
    /// key's count is raised to theirs, and its next attempt waits as long after their last
    /// failure as the policy says.
    pub fn begin_with(
        &self,
        key: &K,
        shared: Option<SharedFailures>,
    ) -> Result<Duration, Throttled> {
        let now = Instant::now();
        let mut entries = self.lock();
        let entry = self.entry(&mut entries, key, now);
        if let Some(shared) = shared.filter(|s| s.attempts > entry.attempts) {
            entry.attempts = shared.attempts;
            let due = self
                .policy
                .wait_after(shared.attempts)
                .saturating_sub(shared.since_last);
            entry.next = entry.next.max(now + due);
        }
        let start = entry.next.max(now);
        let wait = start - now;
        if wait > self.policy.max_queue {
            return Err(Throttled { retry_after: wait });
        }
        entry.attempts = entry.attempts.saturating_add(1);
        entry.next = start + self.policy.wait_after(entry.attempts);
        Ok(wait)
    }

    /// Counts a failure that waits for nothing, and returns the wait its answer should get
    /// (for keys where a wall would let others lock the owner out: a delay instead).
    pub fn fail(&self, key: &K) -> Duration {
        self.fail_with(key, None)
    }

    /// [`Throttle::fail`] counting at least `shared` failures (every node's, this one
    /// included).
    pub fn fail_with(&self, key: &K, shared: Option<u32>) -> Duration {
        let now = Instant::now();
        let mut entries = self.lock();
        let entry = self.entry(&mut entries, key, now);
        entry.attempts = entry.attempts.saturating_add(1).max(shared.unwrap_or(0));
        entry.next = now.max(entry.next);
        self.policy.wait_after(entry.attempts)
    }

    /// A successful attempt is given back: it does not count against the key, but earlier
    /// failures still do.
    pub fn forgive(&self, key: &K) {
        let now = Instant::now();
        let mut entries = self.lock();
        if let Some(entry) = entries.get_mut(key) {
            entry.attempts = entry.attempts.saturating_sub(1);
            entry.next = entry.next.min(now + self.policy.wait_after(entry.attempts));
            if entry.attempts == 0 {
                entries.remove(key);
            }
        }
    }

    /// Forgets the key (its owner proved it knows the secret).
    pub fn clear(&self, key: &K) {
        self.lock().remove(key);
    }

    /// Recent attempts counted for the key.
    pub fn attempts(&self, key: &K) -> u32 {
        let now = Instant::now();
        self.lock()
            .get(key)
            .filter(|e| !self.expired(e, now))
            .map_or(0, |e| e.attempts)
    }

    /// Keys held now (for tests and, later, metrics).
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<K, Entry>> {
        // A panic elsewhere while holding the lock leaves counts that are still valid.
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn expired(&self, entry: &Entry, now: Instant) -> bool {
        now >= entry.next + self.policy.forget_after
    }

    /// The key's live entry, created (making room first) if needed.
    fn entry<'a>(
        &self,
        entries: &'a mut HashMap<K, Entry>,
        key: &K,
        now: Instant,
    ) -> &'a mut Entry {
        if !entries.contains_key(key) && entries.len() >= self.capacity {
            self.make_room(entries, now);
        }
        let fresh = Entry {
            attempts: 0,
            next: now,
        };
        let entry = entries.entry(key.clone()).or_insert(fresh);
        if self.expired(entry, now) {
            *entry = fresh;
        }
        entry
    }

    fn make_room(&self, entries: &mut HashMap<K, Entry>, now: Instant) {
        entries.retain(|_, e| !self.expired(e, now));
        if entries.len() < self.capacity {
            return;
        }
        // Still full of live keys: drop the half that is least restricted.
        let mut by_next: Vec<(Instant, K)> =
            entries.iter().map(|(k, e)| (e.next, k.clone())).collect();
        let half = by_next.len() / 2;
        by_next.select_nth_unstable_by_key(half, |(next, _)| *next);
        for (_, key) in &by_next[..half] {
            entries.remove(key);
        }
    }
}

/// A key as the shared failure table stores it: an address, a network, a mailbox id or an
/// account name; never anything secret.
pub trait SharedKey {
    fn shared_key(&self) -> String;
}

impl SharedKey for ClientKey {
    fn shared_key(&self) -> String {
        match *self {
            ClientKey::V4(address) => Ipv4Addr::from(address).to_string(),
            ClientKey::V6Net(net) => format!("{}/64", Ipv6Addr::from(u128::from(net) << 64)),
        }
    }
}

impl SharedKey for MailboxId {
    fn shared_key(&self) -> String {
        self.as_str().to_owned()
    }
}

impl SharedKey for &'static str {
    fn shared_key(&self) -> String {
        (*self).to_owned()
    }
}

/// A [`Throttle`] whose failures also count on every other node sharing the store
/// ([`Coordination`], one table keyed by `scope` and [`SharedKey`]). The local table stays
/// the fast path and the whole truth on a store of one node. A database that cannot be
/// reached never lets an attempt through that the local count would refuse: the local
/// count is used alone then.
///
/// The shared calls are single statements on the store's read connections, made on the
/// calling thread like the store's reads.
pub struct SharedThrottle<K> {
    local: Throttle<K>,
    scope: &'static str,
    coordination: Arc<dyn Coordination>,
}

impl<K> std::fmt::Debug for SharedThrottle<K> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedThrottle")
            .field("scope", &self.scope)
            .field("shared", &self.coordination.is_shared())
            .finish_non_exhaustive()
    }
}

impl<K: Clone + Eq + Hash + SharedKey> SharedThrottle<K> {
    pub fn new(policy: Policy, scope: &'static str, coordination: Arc<dyn Coordination>) -> Self {
        Self {
            local: Throttle::new(policy),
            scope,
            coordination,
        }
    }

    /// This node alone.
    pub fn local(policy: Policy) -> Self {
        Self::new(policy, "local", Arc::new(crate::store::coordination::Local))
    }

    /// [`Throttle::begin`], counting the failures every node saw.
    pub fn begin(&self, key: &K) -> Result<Duration, Throttled> {
        let shared = self
            .shared(|c, scope, policy| c.failures(scope, &key.shared_key(), policy.forget_after));
        self.local.begin_with(key, shared.flatten())
    }

    /// An attempt counted by [`SharedThrottle::begin`] failed: other nodes count it too (this
    /// one counted it when it began).
    pub fn failed(&self, key: &K) {
        let _ = self.record(key);
    }

    /// [`Throttle::fail`], counted on every node.
    pub fn fail(&self, key: &K) -> Duration {
        let shared = self.record(key);
        self.local.fail_with(key, shared)
    }

    pub fn forgive(&self, key: &K) {
        self.local.forgive(key);
    }

    /// Forgets the key here and on every node.
    pub fn clear(&self, key: &K) {
        self.local.clear(key);
        let _ = self.shared(|c, scope, _| c.clear_failures(scope, &key.shared_key()));
    }

    /// The attempts counted here.
    pub fn attempts(&self, key: &K) -> u32 {
        self.local.attempts(key)
    }

    fn record(&self, key: &K) -> Option<u32> {
        self.shared(|c, scope, policy| {
            c.record_failure(scope, &key.shared_key(), policy.forget_after)
        })
    }

    /// Runs a shared call if other nodes share the store; `None` if none do, or it failed.
    fn shared<T>(
        &self,
        call: impl FnOnce(&dyn Coordination, &str, &Policy) -> Result<T, crate::store::StoreError>,
    ) -> Option<T> {
        if !self.coordination.is_shared() {
            return None;
        }
        match call(&*self.coordination, self.scope, self.local.policy()) {
            Ok(value) => Some(value),
            Err(e) => {
                tracing::debug!(scope = self.scope, error = %e, "shared login failure count unavailable; counting on this node alone");
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> Policy {
        Policy {
            free_attempts: 3,
            base: Duration::from_secs(1),
            max: Duration::from_secs(60),
            max_queue: Duration::from_secs(5),
            forget_after: Duration::from_secs(600),
        }
    }

    #[test]
    fn waits_double_after_the_free_attempts_up_to_the_cap() {
        let p = policy();
        let waits: Vec<u64> = (1..=10).map(|n| p.wait_after(n).as_secs()).collect();
        assert_eq!(waits, [0, 0, 1, 2, 4, 8, 16, 32, 60, 60]);
        assert_eq!(p.wait_after(u32::MAX), p.max);
    }

    #[test]
    fn ipv6_clients_are_counted_per_64_and_mapped_ipv4_as_ipv4() {
        let key = |s: &str| ClientKey::from(s.parse::<IpAddr>().unwrap());
        assert_eq!(key("2001:db8:1:2::1"), key("2001:db8:1:2:ffff::9"));
        assert_ne!(key("2001:db8:1:2::1"), key("2001:db8:1:3::1"));
        assert_eq!(key("::ffff:192.0.2.7"), key("192.0.2.7"));
        assert_ne!(key("192.0.2.7"), key("192.0.2.8"));
    }

    #[tokio::test(start_paused = true)]
    async fn attempts_are_counted_when_they_start() {
        let throttle = Throttle::new(policy());
        let key = ClientKey::V4(1);
        // Five attempts at the same instant, none finished: the first three run now, the
        // later ones are queued behind the waits the earlier ones earned.
        let waits: Vec<_> = (0..5).map(|_| throttle.begin(&key)).collect();
        assert_eq!(
            waits,
            [
                Ok(Duration::ZERO),
                Ok(Duration::ZERO),
                Ok(Duration::ZERO),
                Ok(Duration::from_secs(1)),
                Ok(Duration::from_secs(3)),
            ]
        );
        // The next would wait 7 s, more than the queue allows: refused and not counted.
        assert_eq!(
            throttle.begin(&key),
            Err(Throttled {
                retry_after: Duration::from_secs(7)
            })
        );
        assert_eq!(throttle.attempts(&key), 5);
        tokio::time::advance(Duration::from_secs(7)).await;
        assert_eq!(throttle.begin(&key), Ok(Duration::ZERO));
    }

    #[tokio::test(start_paused = true)]
    async fn success_gives_its_attempt_back_and_quiet_keys_are_forgotten() {
        let throttle = Throttle::new(policy());
        let key = ClientKey::V4(1);
        for _ in 0..10 {
            assert_eq!(throttle.begin(&key), Ok(Duration::ZERO));
            throttle.forgive(&key);
        }
        assert!(throttle.is_empty());
        for _ in 0..4 {
            let _ = throttle.begin(&key);
        }
        assert!(throttle.begin(&key).is_ok());
        assert!(throttle.begin(&key).is_err());
        tokio::time::advance(Duration::from_secs(700)).await;
        assert_eq!(throttle.attempts(&key), 0);
        assert_eq!(throttle.begin(&key), Ok(Duration::ZERO));
    }

    #[tokio::test(start_paused = true)]
    async fn failures_become_a_bounded_delay_and_clear_resets() {
        let throttle = Throttle::new(policy());
        let delays: Vec<u64> = (0..12).map(|_| throttle.fail(&"m").as_secs()).collect();
        assert_eq!(delays, [0, 0, 1, 2, 4, 8, 16, 32, 60, 60, 60, 60]);
        throttle.clear(&"m");
        assert_eq!(throttle.fail(&"m"), Duration::ZERO);
    }

    #[tokio::test(start_paused = true)]
    async fn a_flood_of_clients_keeps_the_table_bounded() {
        let throttle = Throttle::with_capacity(policy(), 1000);
        let persistent = ClientKey::V6Net(u64::MAX);
        for _ in 0..5 {
            let _ = throttle.begin(&persistent);
        }
        for n in 0..20_000u64 {
            let _ = throttle.begin(&ClientKey::V6Net(n));
            assert!(throttle.len() <= 1000);
        }
        // The most restricted key survived the evictions.
        assert_eq!(throttle.attempts(&persistent), 5);
    }
}
