//! Throttling proxy logins, so the gateway cannot be used to guess passwords at a provider
//! (which would then block the gateway, and every user behind it).
//!
//! Each login the upstream will see is counted when it starts, per client ([`ClientKey`])
//! and per remote account (user and server, without letter case): a few free attempts,
//! then waits that double. A login the upstream refused is answered only after
//! `[proxy] failed_login_delay_ms`. The same [`SharedThrottle`] as POP3 pick-up's: on a
//! store several nodes share, failures count on every node.
//!
//! An account is counted under its [`AccountNames`] name, an HMAC of the user and server:
//! the failure table the nodes share holds no user names, and a copy of the database alone
//! cannot confirm a guessed one.
//!
//! Per account this is a wall, not only a delay: while someone sprays an account through
//! the gateway, its owner may be told to try later too, which the provider would do anyway.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ring::hmac;
use tokio::sync::watch;

use super::ProxyLogin;
use crate::store::Coordination;
use crate::throttle::{ClientKey, Policy, SharedKey, SharedThrottle, Throttled};

/// Per client: 10 failed logins free (an office behind one address), then 1 s doubling to
/// 15 minutes; waits over 10 s are refused.
pub const CLIENT_POLICY: Policy = Policy {
    free_attempts: 10,
    base: Duration::from_secs(1),
    max: Duration::from_secs(15 * 60),
    max_queue: Duration::from_secs(10),
    forget_after: Duration::from_secs(15 * 60),
};

/// Per remote account: 3 failed logins free, then 5 s doubling to 30 minutes.
pub const ACCOUNT_POLICY: Policy = Policy {
    free_attempts: 3,
    base: Duration::from_secs(5),
    max: Duration::from_secs(30 * 60),
    max_queue: Duration::from_secs(10),
    forget_after: Duration::from_secs(30 * 60),
};

/// An account at a provider, as the throttle counts it: its [`AccountNames`] name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct Account([u8; 16]);

impl SharedKey for Account {
    fn shared_key(&self) -> String {
        data_encoding::HEXLOWER.encode(&self.0)
    }
}

/// Names remote accounts (user and server, without letter case) for the throttle: an
/// HMAC-SHA256 under a key every node of a store has, so nodes count an account alike while
/// the shared table holds no user names. Never printed.
#[derive(Clone)]
pub struct AccountNames(hmac::Key);

impl std::fmt::Debug for AccountNames {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AccountNames(<redacted>)")
    }
}

/// Domain separation from anything else keyed alike.
const ACCOUNT_LABEL: &[u8] = b"gateway/proxy-throttle-account/v1\0";

impl AccountNames {
    pub fn new(key: &[u8; 32]) -> Self {
        Self(hmac::Key::new(hmac::HMAC_SHA256, key))
    }

    /// A key of this process alone (its names never leave it).
    pub fn random() -> Self {
        let mut key = zeroize::Zeroizing::new([0u8; 32]);
        crate::random::fill_random(key.as_mut());
        Self::new(&key)
    }

    fn account(&self, login: &ProxyLogin) -> Account {
        let mut context = hmac::Context::with_key(&self.0);
        context.update(ACCOUNT_LABEL);
        // Length first, so no (user, server) pair reads as another.
        let user = login.remote_user.to_lowercase();
        context.update(&(user.len() as u64).to_be_bytes());
        context.update(user.as_bytes());
        context.update(login.host.to_ascii_lowercase().as_bytes());
        let mut name = [0u8; 16];
        name.copy_from_slice(&context.sign().as_ref()[..16]);
        Account(name)
    }
}

/// The proxy login policy; one per gateway, shared by the SMTP and POP3 proxies.
#[derive(Debug)]
pub struct ProxyGuard {
    clients: SharedThrottle<ClientKey>,
    accounts: SharedThrottle<Account>,
    names: AccountNames,
    failure_delay: Duration,
    /// Accounts with logins waiting: told when one of the account's logins succeeds.
    /// Logins count while in flight (so a spray cannot outrun its own failures), which
    /// makes a mail client's fourth parallel connection wait; a success proves the
    /// credentials, so the waiting ones go ahead then, as any login after it would.
    waiting: Mutex<HashMap<Account, Arc<watch::Sender<()>>>>,
}

/// A proxy login admitted by [`ProxyGuard::admit`]; report how it ended.
#[derive(Debug)]
#[must_use = "report the outcome"]
pub struct ProxyAttempt {
    client: ClientKey,
    account: Account,
    /// How long the login must wait before it goes to the upstream (at most: see
    /// [`ProxyGuard::wait`]).
    pub wait: Duration,
    /// Fires when another login of the account succeeds; only when there is a wait.
    released: Option<watch::Receiver<()>>,
}

impl ProxyGuard {
    /// Counting on this node alone.
    pub fn new(failure_delay: Duration) -> Self {
        Self::shared(
            failure_delay,
            Arc::new(crate::store::coordination::Local),
            AccountNames::random(),
        )
    }

    /// Failures count on every node that shares `coordination` (see [`SharedThrottle`]);
    /// `names` must be the same on all of them.
    pub fn shared(
        failure_delay: Duration,
        coordination: Arc<dyn Coordination>,
        names: AccountNames,
    ) -> Self {
        Self {
            clients: SharedThrottle::new(CLIENT_POLICY, "proxy-client", coordination.clone()),
            accounts: SharedThrottle::new(ACCOUNT_POLICY, "proxy-account", coordination),
            names,
            failure_delay,
            waiting: Mutex::new(HashMap::new()),
        }
    }

    /// Counts a login from `ip` for `login`'s account as it starts, or refuses it while the
    /// client or the account waits out earlier failures.
    pub fn admit(&self, ip: IpAddr, login: &ProxyLogin) -> Result<ProxyAttempt, Throttled> {
        let client = ClientKey::from(ip);
        let account = self.names.account(login);
        let client_wait = self.clients.begin(&client)?;
        let account_wait = match self.accounts.begin(&account) {
            Ok(wait) => wait,
            Err(throttled) => {
                self.clients.forgive(&client);
                return Err(throttled);
            }
        };
        let wait = client_wait.max(account_wait);
        // Only the account's own delay is cut short by a success; a client's is not.
        let released = (!account_wait.is_zero() && client_wait.is_zero()).then(|| {
            let mut waiting = self.waiting.lock().unwrap_or_else(|e| e.into_inner());
            waiting
                .entry(account)
                .or_insert_with(|| Arc::new(watch::channel(()).0))
                .subscribe()
        });
        Ok(ProxyAttempt {
            client,
            account,
            wait,
            released,
        })
    }

    /// Waits out the attempt's delay before it goes to the upstream, or less if another
    /// login of the same account succeeds meanwhile.
    pub async fn wait(&self, attempt: &mut ProxyAttempt) {
        if attempt.wait.is_zero() {
            return;
        }
        match &mut attempt.released {
            Some(released) => {
                tokio::select! {
                    () = tokio::time::sleep(attempt.wait) => {}
                    _ = released.changed() => {}
                }
            }
            None => tokio::time::sleep(attempt.wait).await,
        }
        if attempt.released.take().is_some() {
            self.forget_idle(&attempt.account);
        }
    }

    /// Drops the account's signal once no login waits on it.
    fn forget_idle(&self, account: &Account) {
        let mut waiting = self.waiting.lock().unwrap_or_else(|e| e.into_inner());
        if waiting
            .get(account)
            .is_some_and(|sender| sender.receiver_count() == 0)
        {
            waiting.remove(account);
        }
    }

    /// The upstream accepted the credentials: logins of the account still waiting go now.
    pub fn succeeded(&self, attempt: ProxyAttempt) {
        self.clients.forgive(&attempt.client);
        self.accounts.clear(&attempt.account);
        let waiting = self.waiting.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(sender) = waiting.get(&attempt.account) {
            sender.send_replace(());
        }
    }

    /// The login never reached the upstream's password check (unreachable, no TLS, a
    /// suspended mailbox): not a guess.
    pub fn not_a_guess(&self, attempt: ProxyAttempt) {
        self.clients.forgive(&attempt.client);
        self.accounts.forgive(&attempt.account);
    }

    /// The mailbox id is unknown: a guess at this gateway, not at the account. Returns the
    /// pause before the answer.
    pub fn unknown_mailbox(&self, attempt: ProxyAttempt) -> Duration {
        self.accounts.forgive(&attempt.account);
        self.clients.failed(&attempt.client);
        self.failure_delay
    }

    /// The upstream refused the credentials: the attempt stays counted (on every node).
    /// Returns the pause before the answer.
    pub fn failed(&self, attempt: ProxyAttempt) -> Duration {
        self.clients.failed(&attempt.client);
        self.accounts.failed(&attempt.account);
        self.failure_delay
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "mbx-0123456789abcdef0123456789abcdef";

    fn login(user: &str, host: &str) -> ProxyLogin {
        ProxyLogin::parse(&format!("{user}%{host}%{ID}")).unwrap()
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    /// Fails logins until one is refused; returns how many were let through.
    fn spray(
        guard: &ProxyGuard,
        from: impl Fn(u32) -> IpAddr,
        to: impl Fn(u32) -> ProxyLogin,
    ) -> u32 {
        for n in 0..1000 {
            match guard.admit(from(n), &to(n)) {
                Ok(attempt) => {
                    let _ = guard.failed(attempt);
                }
                Err(_) => return n,
            }
        }
        1000
    }

    #[test]
    fn accounts_are_named_alike_by_equal_keys_only() {
        let names = AccountNames::new(&[1; 32]);
        let name = |names: &AccountNames, user, host| names.account(&login(user, host));
        let alice = name(&names, "alice@example.com", "mail.example.com");
        assert_eq!(
            alice,
            name(&names, "ALICE@example.com", "Mail.Example.com"),
            "without letter case"
        );
        assert_ne!(alice, name(&names, "alice@example.com", "mail.example.net"));
        assert_ne!(
            alice,
            name(
                &AccountNames::new(&[2; 32]),
                "alice@example.com",
                "mail.example.com"
            )
        );
        // Where the user ends and the server begins is part of the name.
        assert_ne!(
            name(&names, "ab", "c.example"),
            name(&names, "a", "bc.example")
        );
        assert_eq!(alice.shared_key().len(), 32);
        assert!(!format!("{names:?}").contains('1'));
    }

    #[tokio::test(start_paused = true)]
    async fn one_account_from_many_clients_is_limited() {
        let guard = ProxyGuard::new(Duration::from_secs(2));
        let through = spray(
            &guard,
            |n| ip(&format!("198.51.{}.{}", n / 200, n % 200)),
            |_| login("ceo@example.com", "mail.example.com"),
        );
        assert!(through < 10, "{through} guesses went through");
        // Letter case does not make another account.
        assert!(guard
            .admit(
                ip("192.0.2.1"),
                &login("CEO@Example.com", "MAIL.example.com")
            )
            .is_err());
        // Other accounts are not affected.
        let other = guard.admit(
            ip("192.0.2.1"),
            &login("cfo@example.com", "mail.example.com"),
        );
        assert_eq!(other.unwrap().wait, Duration::ZERO);
    }

    #[tokio::test(start_paused = true)]
    async fn many_accounts_from_one_client_are_limited() {
        let guard = ProxyGuard::new(Duration::from_secs(2));
        let through = spray(
            &guard,
            |_| ip("2001:db8:7:7::1"),
            |n| login(&format!("user{n}@example.com"), "mail.example.com"),
        );
        assert!(through < 20, "{through} guesses went through");
        // The same /64 is the same client; another client is not affected.
        assert!(guard
            .admit(
                ip("2001:db8:7:7::2"),
                &login("x@example.com", "mail.example.com")
            )
            .is_err());
        assert!(guard
            .admit(
                ip("2001:db8:7:8::1"),
                &login("x@example.com", "mail.example.com")
            )
            .is_ok());
    }

    #[tokio::test(start_paused = true)]
    async fn successes_and_unreachable_upstreams_do_not_count() {
        let guard = ProxyGuard::new(Duration::from_secs(2));
        let alice = login("alice@example.com", "mail.example.com");
        for _ in 0..100 {
            let attempt = guard.admit(ip("192.0.2.1"), &alice).unwrap();
            assert_eq!(attempt.wait, Duration::ZERO);
            guard.succeeded(attempt);
            let attempt = guard.admit(ip("192.0.2.1"), &alice).unwrap();
            guard.not_a_guess(attempt);
        }
    }

    /// A mail client opening several connections for one account at once: the fourth
    /// login waits for the account's delay only until one of the others succeeds.
    #[tokio::test(start_paused = true)]
    async fn a_success_releases_the_accounts_waiting_logins() {
        let guard = Arc::new(ProxyGuard::new(Duration::from_secs(2)));
        let alice = login("alice@example.com", "mail.example.com");
        let first: Vec<ProxyAttempt> = (0..ACCOUNT_POLICY.free_attempts)
            .map(|_| guard.admit(ip("192.0.2.1"), &alice).unwrap())
            .collect();
        let mut fourth = guard.admit(ip("192.0.2.1"), &alice).unwrap();
        assert_eq!(fourth.wait, ACCOUNT_POLICY.base);
        let started = tokio::time::Instant::now();
        let waiter = {
            let guard = guard.clone();
            tokio::spawn(async move {
                guard.wait(&mut fourth).await;
                fourth
            })
        };
        tokio::task::yield_now().await;
        let mut first = first.into_iter();
        guard.succeeded(first.next().unwrap());
        let fourth = waiter.await.unwrap();
        assert_eq!(started.elapsed(), Duration::ZERO, "released, not timed out");
        guard.succeeded(fourth);
        for attempt in first {
            guard.succeeded(attempt);
        }
        assert!(guard.waiting.lock().unwrap().is_empty(), "nothing kept");

        // Without a success the delay is waited out in full.
        let bob = login("bob@example.com", "mail.example.com");
        let held: Vec<ProxyAttempt> = (0..ACCOUNT_POLICY.free_attempts)
            .map(|_| guard.admit(ip("192.0.2.2"), &bob).unwrap())
            .collect();
        let mut next = guard.admit(ip("192.0.2.2"), &bob).unwrap();
        let started = tokio::time::Instant::now();
        guard.wait(&mut next).await;
        assert_eq!(started.elapsed(), ACCOUNT_POLICY.base);
        let _ = guard.failed(next);
        for attempt in held {
            let _ = guard.failed(attempt);
        }
    }
}
