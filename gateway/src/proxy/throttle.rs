//! Throttling proxy logins, so the gateway cannot be used to guess passwords at a provider
//! (which would then block the gateway, and every user behind it).
//!
//! Each login the upstream will see is counted when it starts, per client ([`ClientKey`])
//! and per remote account (user and server, without letter case): a few free attempts,
//! then waits that double. A login the upstream refused is answered only after
//! `[proxy] failed_login_delay_ms`. The same [`Throttle`] as POP3 pick-up's.
//!
//! Per account this is a wall, not only a delay: while someone sprays an account through
//! the gateway, its owner may be told to try later too, which the provider would do anyway.

use std::net::IpAddr;
use std::time::Duration;

use super::ProxyLogin;
use crate::throttle::{ClientKey, Policy, Throttle, Throttled};

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

/// An account at a provider, as the throttle counts it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Account {
    user: String,
    host: String,
}

/// The proxy login policy; one per gateway, shared by the SMTP and POP3 proxies.
#[derive(Debug)]
pub struct ProxyGuard {
    clients: Throttle<ClientKey>,
    accounts: Throttle<Account>,
    failure_delay: Duration,
}

/// A proxy login admitted by [`ProxyGuard::admit`]; report how it ended.
#[derive(Debug)]
#[must_use = "report the outcome"]
pub struct ProxyAttempt {
    client: ClientKey,
    account: Account,
    /// How long the login must wait before it goes to the upstream.
    pub wait: Duration,
}

impl ProxyGuard {
    pub fn new(failure_delay: Duration) -> Self {
        Self {
            clients: Throttle::new(CLIENT_POLICY),
            accounts: Throttle::new(ACCOUNT_POLICY),
            failure_delay,
        }
    }

    /// Counts a login from `ip` for `login`'s account as it starts, or refuses it while the
    /// client or the account waits out earlier failures.
    pub fn admit(&self, ip: IpAddr, login: &ProxyLogin) -> Result<ProxyAttempt, Throttled> {
        let client = ClientKey::from(ip);
        let account = Account {
            user: login.remote_user.to_lowercase(),
            host: login.host.to_ascii_lowercase(),
        };
        let client_wait = self.clients.begin(&client)?;
        let account_wait = match self.accounts.begin(&account) {
            Ok(wait) => wait,
            Err(throttled) => {
                self.clients.forgive(&client);
                return Err(throttled);
            }
        };
        Ok(ProxyAttempt {
            client,
            account,
            wait: client_wait.max(account_wait),
        })
    }

    /// The upstream accepted the credentials.
    pub fn succeeded(&self, attempt: ProxyAttempt) {
        self.clients.forgive(&attempt.client);
        self.accounts.clear(&attempt.account);
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
        self.failure_delay
    }

    /// The upstream refused the credentials: the attempt stays counted. Returns the pause
    /// before the answer.
    pub fn failed(&self, attempt: ProxyAttempt) -> Duration {
        let _ = attempt;
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
}
