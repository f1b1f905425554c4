use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

/// Caps on concurrent connections, overall and per client address, shared by a protocol's
/// listeners. Beyond them a client gets the protocol's "too busy" reply and is closed.
#[derive(Debug, Clone)]
pub struct ConnectionLimits {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    max_total: u32,
    max_per_ip: u32,
    counts: Mutex<Counts>,
}

#[derive(Debug, Default)]
struct Counts {
    total: u32,
    per_ip: HashMap<IpAddr, u32>,
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
}

impl ConnectionLimits {
    pub fn new(max_total: u32, max_per_ip: u32) -> Self {
        Self {
            inner: Arc::new(Inner {
                max_total,
                max_per_ip,
                counts: Mutex::new(Counts::default()),
            }),
        }
    }

    pub fn try_acquire(&self, ip: IpAddr) -> Result<ConnectionPermit, LimitExceeded> {
        // Dual-stack sockets report IPv4 clients as `::ffff:a.b.c.d`: count them as IPv4.
        let ip = ip.to_canonical();
        let mut counts = self.inner.counts.lock().unwrap_or_else(|e| e.into_inner());
        if counts.total >= self.inner.max_total {
            return Err(LimitExceeded::Total);
        }
        let for_ip = counts.per_ip.entry(ip).or_insert(0);
        if *for_ip >= self.inner.max_per_ip {
            return Err(LimitExceeded::PerAddress);
        }
        *for_ip += 1;
        counts.total += 1;
        Ok(ConnectionPermit {
            limits: self.inner.clone(),
            ip,
        })
    }

    pub fn active(&self) -> u32 {
        self.inner
            .counts
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .total
    }
}

impl Drop for ConnectionPermit {
    fn drop(&mut self) {
        let mut counts = self.limits.counts.lock().unwrap_or_else(|e| e.into_inner());
        counts.total = counts.total.saturating_sub(1);
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

    #[test]
    fn per_address_and_total_limits_hold_and_release() {
        let limits = ConnectionLimits::new(3, 2);
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let a_mapped: IpAddr = "::ffff:192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
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
}
