use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::config::IpNetwork;

/// How long one write to a client may make no progress before the connection is dropped:
/// a client that stops reading must not hold its slot (and the maildrop lock) forever.
pub const DEFAULT_WRITE_TIMEOUT: Duration = Duration::from_secs(60);

/// Pick-up client addresses remembered for the reserved slots; the oldest is forgotten first.
const REMEMBERED_PICKUP_CLIENTS: usize = 1024;

/// How a protocol's listeners share their connections.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectionPolicy {
    /// Most connections at once.
    pub max_total: u32,
    /// Most connections at once from one address.
    pub max_per_ip: u32,
    /// Of `max_total`, the slots only pick-up clients may take: addresses that logged in to
    /// a maildrop before (see [`ConnectionLimits::remember_pickup`]). Unauthenticated and
    /// proxy clients from anywhere else never get them, so a flood cannot keep the
    /// archiver out.
    pub reserved_pickup: u32,
    /// See [`DEFAULT_WRITE_TIMEOUT`].
    pub write_timeout: Duration,
    /// The archiver's networks (`[pop3] trusted_networks`): they may take a reserved slot
    /// from the start, before any login since start has taught us their addresses.
    pub trusted: Vec<IpNetwork>,
}

impl ConnectionPolicy {
    pub fn new(max_total: u32, max_per_ip: u32) -> Self {
        Self {
            max_total,
            max_per_ip,
            reserved_pickup: 0,
            write_timeout: DEFAULT_WRITE_TIMEOUT,
            trusted: Vec::new(),
        }
    }
}

/// Caps on concurrent connections, overall and per client address, shared by a protocol's
/// listeners. Beyond them a client gets the protocol's "too busy" reply and is closed.
#[derive(Debug, Clone)]
pub struct ConnectionLimits {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    policy: ConnectionPolicy,
    counts: Mutex<Counts>,
}

#[derive(Debug, Default)]
struct Counts {
    total: u32,
    /// Connections in the unreserved slots.
    general: u32,
    per_ip: HashMap<IpAddr, u32>,
    /// Pick-up client addresses (IPv6 by /64) and when they last logged in (a counter).
    pickup: HashMap<IpAddr, u64>,
    pickup_clock: u64,
}

/// Which limit refused a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LimitExceeded {
    Total,
    PerAddress,
}

/// Held for the life of a connection; releases its slot on drop.
#[derive(Debug)]
pub struct ConnectionPermit {
    limits: Arc<Inner>,
    ip: IpAddr,
    /// In one of the slots reserved for pick-up.
    reserved: bool,
}

impl ConnectionLimits {
    pub fn new(max_total: u32, max_per_ip: u32) -> Self {
        Self::with_policy(ConnectionPolicy::new(max_total, max_per_ip))
    }

    pub fn with_policy(policy: ConnectionPolicy) -> Self {
        Self {
            inner: Arc::new(Inner {
                policy,
                counts: Mutex::new(Counts::default()),
            }),
        }
    }

    pub fn write_timeout(&self) -> Duration {
        self.inner.policy.write_timeout
    }

    pub fn try_acquire(&self, ip: IpAddr) -> Result<ConnectionPermit, LimitExceeded> {
        // Dual-stack sockets report IPv4 clients as `::ffff:a.b.c.d`: count them as IPv4.
        let ip = ip.to_canonical();
        let policy = &self.inner.policy;
        let mut counts = self.inner.lock();
        if counts.total >= policy.max_total {
            return Err(LimitExceeded::Total);
        }
        if counts.per_ip.get(&ip).copied().unwrap_or(0) >= policy.max_per_ip {
            return Err(LimitExceeded::PerAddress);
        }
        let general_slots = policy.max_total.saturating_sub(policy.reserved_pickup);
        let reserved = if counts.general < general_slots {
            false
        } else if counts.pickup.contains_key(&pickup_key(ip))
            || policy.trusted.iter().any(|network| network.contains(ip))
        {
            true
        } else {
            return Err(LimitExceeded::Total);
        };
        *counts.per_ip.entry(ip).or_insert(0) += 1;
        counts.total += 1;
        if !reserved {
            counts.general += 1;
        }
        Ok(ConnectionPermit {
            limits: self.inner.clone(),
            ip,
            reserved,
        })
    }

    /// Records that `ip` logged in to a maildrop: from now on it may take a reserved slot.
    pub fn remember_pickup(&self, ip: IpAddr) {
        if self.inner.policy.reserved_pickup == 0 {
            return;
        }
        let mut counts = self.inner.lock();
        counts.pickup_clock += 1;
        let now = counts.pickup_clock;
        counts.pickup.insert(pickup_key(ip.to_canonical()), now);
        if counts.pickup.len() > REMEMBERED_PICKUP_CLIENTS {
            let oldest = counts
                .pickup
                .iter()
                .min_by_key(|(_, seen)| **seen)
                .map(|(ip, _)| *ip);
            if let Some(oldest) = oldest {
                counts.pickup.remove(&oldest);
            }
        }
    }

    pub fn active(&self) -> u32 {
        self.inner.lock().total
    }
}

impl Inner {
    fn lock(&self) -> std::sync::MutexGuard<'_, Counts> {
        self.counts.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// An IPv4 address, or the /64 of an IPv6 one (one site's hosts usually share it).
fn pickup_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => {
            let prefix = u128::from(v6) & !((1u128 << 64) - 1);
            IpAddr::V6(prefix.into())
        }
    }
}

impl ConnectionPermit {
    /// Whether this connection sits in a slot reserved for pick-up.
    pub fn is_reserved(&self) -> bool {
        self.reserved
    }

    /// Moves a connection out of the reserve into an unreserved slot, for a session that
    /// turned out not to be a pick-up (a proxy login). False when none is free: the
    /// connection must then not go on.
    pub fn move_to_general(&mut self) -> bool {
        if !self.reserved {
            return true;
        }
        let policy = &self.limits.policy;
        let general_slots = policy.max_total.saturating_sub(policy.reserved_pickup);
        let mut counts = self.limits.lock();
        if counts.general >= general_slots {
            return false;
        }
        counts.general += 1;
        self.reserved = false;
        true
    }
}

impl Drop for ConnectionPermit {
    fn drop(&mut self) {
        let mut counts = self.limits.lock();
        counts.total = counts.total.saturating_sub(1);
        if !self.reserved {
            counts.general = counts.general.saturating_sub(1);
        }
        if let Some(n) = counts.per_ip.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                counts.per_ip.remove(&self.ip);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn per_address_and_total_limits_hold_and_release() {
        let limits = ConnectionLimits::new(3, 2);
        let a = ip("192.0.2.1");
        let a_mapped = ip("::ffff:192.0.2.1");
        let b = ip("192.0.2.2");
        let p1 = limits.try_acquire(a).unwrap();
        let _p2 = limits.try_acquire(a_mapped).unwrap();
        assert_eq!(
            limits.try_acquire(a).unwrap_err(),
            LimitExceeded::PerAddress
        );
        let _p3 = limits.try_acquire(b).unwrap();
        assert_eq!(limits.try_acquire(b).unwrap_err(), LimitExceeded::Total);
        drop(p1);
        assert_eq!(limits.active(), 2);
        let _p4 = limits.try_acquire(a).unwrap();
    }

    #[test]
    fn reserved_slots_are_only_for_known_pickup_clients() {
        let limits = ConnectionLimits::with_policy(ConnectionPolicy {
            reserved_pickup: 2,
            ..ConnectionPolicy::new(4, 4)
        });
        let archiver = ip("2001:db8:1:2::10");
        limits.remember_pickup(ip("2001:db8:1:2::99"));
        let attacker = ip("198.51.100.7");
        let flood: Vec<_> = (0..2)
            .map(|_| limits.try_acquire(attacker).unwrap())
            .collect();
        assert!(flood.iter().all(|p| !p.is_reserved()));
        // The unreserved slots are full: strangers are refused, the archiver's /64 is not.
        assert_eq!(
            limits.try_acquire(attacker).unwrap_err(),
            LimitExceeded::Total
        );
        let mut pickup = limits.try_acquire(archiver).unwrap();
        assert!(pickup.is_reserved());
        // A reserved slot cannot be turned into a proxy session while the others are full.
        assert!(!pickup.move_to_general());
        drop(flood);
        assert!(pickup.move_to_general());
        assert!(!pickup.is_reserved());
        assert_eq!(limits.active(), 1);
        drop(pickup);
        assert_eq!(limits.active(), 0);
    }

    #[test]
    fn trusted_networks_may_take_reserved_slots_before_any_login() {
        let limits = ConnectionLimits::with_policy(ConnectionPolicy {
            reserved_pickup: 1,
            trusted: vec!["192.0.2.0/28".parse().unwrap()],
            ..ConnectionPolicy::new(2, 2)
        });
        let _flood = limits.try_acquire(ip("198.51.100.7")).unwrap();
        assert_eq!(
            limits.try_acquire(ip("198.51.100.8")).unwrap_err(),
            LimitExceeded::Total
        );
        let archiver = limits.try_acquire(ip("192.0.2.3")).unwrap();
        assert!(archiver.is_reserved());
    }

    #[test]
    fn without_a_reserve_nothing_is_remembered() {
        let limits = ConnectionLimits::new(1, 1);
        limits.remember_pickup(ip("192.0.2.9"));
        let _held = limits.try_acquire(ip("192.0.2.1")).unwrap();
        assert_eq!(
            limits.try_acquire(ip("192.0.2.9")).unwrap_err(),
            LimitExceeded::Total
        );
    }
}
