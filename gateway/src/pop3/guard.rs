//! Brute-force defence and the exclusive maildrop lock, for the POP3 shell.
//!
//! Guessing a 160-bit mailbox password is hopeless, so what the throttle really protects is
//! the gateway's CPU and memory: every attempt costs an Argon2id derivation. Failures are
//! therefore limited per client address (tight) and per mailbox (looser, because a lockout
//! there would also lock out the legitimate archiver).

use std::collections::{HashMap, HashSet, VecDeque};
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

use crate::mailbox::MailboxId;

/// Failed logins counted over this window.
pub const WINDOW: Duration = Duration::from_secs(15 * 60);
/// Failures from one address within the window before it is refused.
pub const MAX_FAILURES_PER_ADDRESS: usize = 10;
/// Failures against one mailbox within the window before it is refused.
pub const MAX_FAILURES_PER_MAILBOX: usize = 30;
/// Bound on tracked keys, so a flood from many addresses cannot grow memory without limit.
const MAX_TRACKED: usize = 100_000;

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Key {
    Address(IpAddr),
    Mailbox(MailboxId),
}

#[derive(Debug, Default)]
pub struct LoginThrottle {
    failures: Mutex<HashMap<Key, VecDeque<Instant>>>,
}

impl LoginThrottle {
    /// Whether a login from `ip` for `mailbox` may be attempted now.
    pub fn allows(&self, ip: IpAddr, mailbox: Option<&MailboxId>) -> bool {
        let now = Instant::now();
        let mut failures = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        let mut over = |key: Key, max: usize| {
            failures
                .get_mut(&key)
                .map(|times| {
                    prune(times, now);
                    times.len() >= max
                })
                .unwrap_or(false)
        };
        let address_blocked = over(Key::Address(ip.to_canonical()), MAX_FAILURES_PER_ADDRESS);
        let mailbox_blocked = mailbox
            .map(|m| over(Key::Mailbox(m.clone()), MAX_FAILURES_PER_MAILBOX))
            .unwrap_or(false);
        !(address_blocked || mailbox_blocked)
    }

    pub fn record_failure(&self, ip: IpAddr, mailbox: Option<&MailboxId>) {
        let now = Instant::now();
        let mut failures = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        if failures.len() >= MAX_TRACKED {
            failures.retain(|_, times| {
                prune(times, now);
                !times.is_empty()
            });
        }
        if failures.len() >= MAX_TRACKED {
            // Still full of recent failures: an attack from very many addresses. Forget the
            // oldest half rather than grow; the per-address delay still applies.
            let drop_count = failures.len() / 2;
            let keys: Vec<Key> = failures.keys().take(drop_count).cloned().collect();
            for key in keys {
                failures.remove(&key);
            }
        }
        let mut push = |key: Key| {
            let times = failures.entry(key).or_default();
            prune(times, now);
            times.push_back(now);
        };
        push(Key::Address(ip.to_canonical()));
        if let Some(mailbox) = mailbox {
            push(Key::Mailbox(mailbox.clone()));
        }
    }

    /// A correct password for the mailbox forgets its failures (not the address's).
    pub fn record_success(&self, mailbox: &MailboxId) {
        let mut failures = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        failures.remove(&Key::Mailbox(mailbox.clone()));
    }
}

fn prune(times: &mut VecDeque<Instant>, now: Instant) {
    while times
        .front()
        .is_some_and(|t| now.saturating_duration_since(*t) > WINDOW)
    {
        times.pop_front();
    }
}

/// RFC 1939 §8: one session at a time per maildrop.
#[derive(Debug, Default)]
pub struct MaildropLocks {
    held: Mutex<HashSet<MailboxId>>,
}

/// Held while a session owns the maildrop; releases it on drop, on every path.
#[derive(Debug)]
pub struct MaildropLock {
    locks: Arc<MaildropLocks>,
    mailbox: MailboxId,
}

impl MaildropLocks {
    pub fn try_lock(self: &Arc<Self>, mailbox: &MailboxId) -> Option<MaildropLock> {
        let mut held = self.held.lock().unwrap_or_else(|e| e.into_inner());
        held.insert(mailbox.clone()).then(|| MaildropLock {
            locks: self.clone(),
            mailbox: mailbox.clone(),
        })
    }
}

impl Drop for MaildropLock {
    fn drop(&mut self) {
        let mut held = self.locks.held.lock().unwrap_or_else(|e| e.into_inner());
        held.remove(&self.mailbox);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn addresses_are_limited_and_forgiven_after_the_window() {
        let throttle = LoginThrottle::default();
        let ip: IpAddr = "198.51.100.9".parse().unwrap();
        let mapped: IpAddr = "::ffff:198.51.100.9".parse().unwrap();
        for _ in 0..MAX_FAILURES_PER_ADDRESS {
            assert!(throttle.allows(ip, None));
            throttle.record_failure(mapped, None);
        }
        assert!(!throttle.allows(ip, None));
        assert!(throttle.allows("198.51.100.10".parse().unwrap(), None));
        tokio::time::advance(WINDOW + Duration::from_secs(1)).await;
        assert!(throttle.allows(ip, None));
    }

    #[tokio::test(start_paused = true)]
    async fn mailboxes_are_limited_across_addresses_and_reset_by_success() {
        let throttle = LoginThrottle::default();
        let mailbox = MailboxId::generate();
        for i in 0..MAX_FAILURES_PER_MAILBOX {
            let ip: IpAddr = format!("203.0.113.{}", i % 200).parse().unwrap();
            throttle.record_failure(ip, Some(&mailbox));
        }
        let fresh: IpAddr = "192.0.2.1".parse().unwrap();
        assert!(!throttle.allows(fresh, Some(&mailbox)));
        assert!(throttle.allows(fresh, Some(&MailboxId::generate())));
        throttle.record_success(&mailbox);
        assert!(throttle.allows(fresh, Some(&mailbox)));
    }

    #[test]
    fn maildrop_lock_is_exclusive_and_released_on_drop() {
        let locks = Arc::new(MaildropLocks::default());
        let mailbox = MailboxId::generate();
        let first = locks.try_lock(&mailbox).unwrap();
        assert!(locks.try_lock(&mailbox).is_none());
        assert!(locks.try_lock(&MailboxId::generate()).is_some());
        drop(first);
        assert!(locks.try_lock(&mailbox).is_some());
    }
}
