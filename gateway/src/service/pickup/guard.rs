//! Brute-force defence and the exclusive maildrop lock of pick-up logins.
//!
//! Guessing a 160-bit mailbox password is hopeless, so what the throttle really protects is
//! the gateway's CPU and memory (every attempt costs an Argon2id derivation) and, above all,
//! the archiver's access: nothing another client does may make its correct password fail.
//! So the wall is per client ([`ClientKey`]: an IPv4 address or an IPv6 /64), with waits
//! that double, attempts counted when they start; failures against one mailbox only add a
//! bounded wait before *their* answer; and clients in `[pop3] trusted_networks` (the
//! archiver) are not throttled at all.

use std::collections::HashSet;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::config::IpNetwork;
use crate::mailbox::MailboxId;
use crate::store::Coordination;
use crate::throttle::{ClientKey, Policy, SharedThrottle, Throttled};

/// Per client: 5 attempts free, then 1 s doubling to 15 minutes; an attempt that would wait
/// more than 10 s is refused; quiet for 15 minutes, a client starts afresh.
pub const CLIENT_POLICY: Policy = Policy {
    free_attempts: 5,
    base: Duration::from_secs(1),
    max: Duration::from_secs(15 * 60),
    max_queue: Duration::from_secs(10),
    forget_after: Duration::from_secs(15 * 60),
};

/// Per mailbox, across clients: after 10 failures, each further failure's answer waits
/// 250 ms more, doubling, never more than [`MAX_MAILBOX_DELAY`]. Never a refusal.
pub const MAILBOX_POLICY: Policy = Policy {
    free_attempts: 10,
    base: Duration::from_millis(250),
    max: MAX_MAILBOX_DELAY,
    max_queue: Duration::ZERO,
    forget_after: Duration::from_secs(15 * 60),
};

/// The most a mailbox under attack adds to the answer of a failed login.
pub const MAX_MAILBOX_DELAY: Duration = Duration::from_secs(10);

/// The POP3 login policy: per-client throttle, per-mailbox delay, trusted networks.
#[derive(Debug)]
pub struct LoginGuard {
    clients: SharedThrottle<ClientKey>,
    mailboxes: SharedThrottle<MailboxId>,
    trusted: Vec<IpNetwork>,
}

/// A login attempt admitted by [`LoginGuard::admit`]; report how it ended.
#[derive(Debug)]
#[must_use = "report the outcome with succeeded or failed"]
pub struct Attempt {
    /// `None` for a trusted client, which is not counted.
    client: Option<ClientKey>,
    /// How long the attempt must wait before it runs (its place in the client's queue).
    pub wait: Duration,
}

impl Attempt {
    /// From `[pop3] trusted_networks`.
    pub fn is_trusted(&self) -> bool {
        self.client.is_none()
    }
}

impl LoginGuard {
    /// Failures count on every node that shares `coordination` (see [`SharedThrottle`]).
    pub fn new(trusted: Vec<IpNetwork>, coordination: Arc<dyn Coordination>) -> Self {
        Self {
            clients: SharedThrottle::new(CLIENT_POLICY, "pop3-client", coordination.clone()),
            mailboxes: SharedThrottle::new(MAILBOX_POLICY, "pop3-mailbox", coordination),
            trusted,
        }
    }

    pub fn is_trusted(&self, ip: IpAddr) -> bool {
        self.trusted.iter().any(|n| n.contains(ip))
    }

    /// Counts a login attempt from `ip` as it starts, or refuses it while the client waits
    /// out its earlier failures. Never refuses a trusted client.
    pub fn admit(&self, ip: IpAddr) -> Result<Attempt, Throttled> {
        if self.is_trusted(ip) {
            return Ok(Attempt {
                client: None,
                wait: Duration::ZERO,
            });
        }
        let client = ClientKey::from(ip);
        let wait = self.clients.begin(&client)?;
        Ok(Attempt {
            client: Some(client),
            wait,
        })
    }

    /// The password was right: the attempt is given back and the mailbox's failures are
    /// forgotten.
    pub fn succeeded(&self, attempt: Attempt, mailbox: &MailboxId) {
        if let Some(client) = attempt.client {
            self.clients.forgive(&client);
        }
        self.mailboxes.clear(mailbox);
    }

    /// The attempt could not be checked (storage, no unseal slot): not a guess.
    pub fn not_checked(&self, attempt: Attempt) {
        if let Some(client) = attempt.client {
            self.clients.forgive(&client);
        }
    }

    /// A wrong password (or no such mailbox): the attempt stays counted against the client,
    /// and for an existing mailbox the returned extra wait goes before the answer.
    pub fn failed(&self, attempt: Attempt, mailbox: Option<&MailboxId>) -> Duration {
        let Some(client) = attempt.client else {
            return Duration::ZERO;
        };
        self.clients.failed(&client);
        mailbox.map_or(Duration::ZERO, |mailbox| self.mailboxes.fail(mailbox))
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
    use crate::store::coordination::Local;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[tokio::test(start_paused = true)]
    async fn clients_back_off_and_ipv6_counts_per_64() {
        let guard = LoginGuard::new(Vec::new(), Arc::new(Local));
        let attacker = "2001:db8:1:2::1";
        for n in 0..CLIENT_POLICY.free_attempts {
            let attempt = guard.admit(ip(&format!("2001:db8:1:2::{n:x}"))).unwrap();
            assert_eq!(attempt.wait, Duration::ZERO);
            let _ = guard.failed(attempt, None);
        }
        // Another address in the same /64 is the same client: it now has to wait.
        let attempt = guard.admit(ip("2001:db8:1:2:aaaa::7")).unwrap();
        assert_eq!(attempt.wait, CLIENT_POLICY.base);
        let _ = guard.failed(attempt, None);
        // Soon the wait is longer than the queue: refused.
        let mut refused = false;
        for _ in 0..10 {
            match guard.admit(ip(attacker)) {
                Ok(attempt) => {
                    let _ = guard.failed(attempt, None);
                }
                Err(_) => refused = true,
            }
        }
        assert!(refused);
        // The next /64 and IPv4 clients are untouched.
        assert_eq!(
            guard.admit(ip("2001:db8:1:3::1")).unwrap().wait,
            Duration::ZERO
        );
        assert_eq!(guard.admit(ip("192.0.2.1")).unwrap().wait, Duration::ZERO);
    }

    #[tokio::test(start_paused = true)]
    async fn parallel_attempts_are_counted_when_they_start() {
        let guard = LoginGuard::new(Vec::new(), Arc::new(Local));
        // 50 connections start a guess at the same moment, before any of them failed.
        let admitted: Vec<Attempt> = (0..50)
            .filter_map(|_| guard.admit(ip("198.51.100.9")).ok())
            .collect();
        let immediate = admitted.iter().filter(|a| a.wait.is_zero()).count();
        assert_eq!(immediate, CLIENT_POLICY.free_attempts as usize);
        assert!(
            admitted.len() < 50,
            "some of the parallel attempts are refused"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn mailbox_failures_delay_failed_answers_but_never_refuse() {
        let guard = LoginGuard::new(Vec::new(), Arc::new(Local));
        let mailbox = MailboxId::generate();
        let mut last = Duration::ZERO;
        for i in 0..1000u32 {
            let client = ip(&format!("203.0.{}.{}", i / 250, i % 250));
            let attempt = guard.admit(client).expect("fresh clients are admitted");
            last = guard.failed(attempt, Some(&mailbox));
            assert!(last <= MAX_MAILBOX_DELAY);
        }
        assert_eq!(last, MAX_MAILBOX_DELAY);
        // The archiver, from a fresh address, is admitted at once.
        let archiver = guard.admit(ip("192.0.2.1")).unwrap();
        assert_eq!(archiver.wait, Duration::ZERO);
        guard.succeeded(archiver, &mailbox);
        let attempt = guard.admit(ip("203.0.113.200")).unwrap();
        assert_eq!(guard.failed(attempt, Some(&mailbox)), Duration::ZERO);
    }

    #[tokio::test(start_paused = true)]
    async fn trusted_networks_are_never_throttled() {
        let guard = LoginGuard::new(vec!["192.0.2.0/24".parse().unwrap()], Arc::new(Local));
        let mailbox = MailboxId::generate();
        for _ in 0..100 {
            let attempt = guard.admit(ip("::ffff:192.0.2.10")).unwrap();
            assert_eq!(attempt.wait, Duration::ZERO);
            assert_eq!(guard.failed(attempt, Some(&mailbox)), Duration::ZERO);
        }
        assert!(guard.admit(ip("192.0.2.10")).is_ok());
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
