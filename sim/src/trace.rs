//! The event log of one run: what the clients saw and what the driver did, stamped with
//! simulated time. Only deterministic facts go in (reply codes, message labels chosen by the
//! scenario, fault decisions), never ids, dates or TLS details, so the same seed gives the
//! same log byte for byte and [`Trace::hash`] can compare runs.

use std::fmt::Write as _;
use std::time::Duration;

/// One line of the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub at: Duration,
    pub actor: String,
    pub what: String,
}

/// The log.
#[derive(Debug, Default, Clone)]
pub struct Trace {
    events: Vec<Event>,
}

impl Trace {
    pub fn push(&mut self, at: Duration, actor: &str, what: impl Into<String>) {
        self.events.push(Event {
            at,
            actor: actor.to_owned(),
            what: what.into(),
        });
    }

    pub fn events(&self) -> &[Event] {
        &self.events
    }

    /// FNV-1a over the readable form: stable across processes and Rust versions, unlike
    /// `std`'s hasher.
    pub fn hash(&self) -> u64 {
        let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
        for byte in self.render().bytes() {
            hash ^= u64::from(byte);
            hash = hash.wrapping_mul(0x0100_0000_01b3);
        }
        hash
    }

    /// One line per event: `   12.345s  sender-1  m3 attempt 2: 250`.
    pub fn render(&self) -> String {
        let mut out = String::new();
        for event in &self.events {
            let _ = writeln!(
                out,
                "{:>4}.{:03}s  {:<10} {}",
                event.at.as_secs(),
                event.at.subsec_millis(),
                event.actor,
                event.what
            );
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_hash_follows_every_field() {
        let mut a = Trace::default();
        a.push(Duration::from_millis(5), "x", "one");
        let mut b = a.clone();
        assert_eq!(a.hash(), b.hash());
        b.push(Duration::from_millis(6), "x", "two");
        assert_ne!(a.hash(), b.hash());
        let mut c = Trace::default();
        c.push(Duration::from_millis(6), "x", "one");
        assert_ne!(a.hash(), c.hash());
    }
}
